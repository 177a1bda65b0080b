"""The tensor-core product (engine/cuda_gemm.py) against MLX's float32 matmul on an NVIDIA
GPU, at the shapes a batch of utterances multiplies: error against float64 and time, all
in one process, alternating. One JSON line per shape, a summary line, then the decoder
(compiled, as the engine runs it) with its products on the tensor cores against MLX's.

    python bench/gemm.py [--repeat 20] [--rounds 3] [--decoder-frames 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from engine.cuda_frame import bf16_bits  # noqa: E402
from engine.cuda_gemm import TensorCoreProduct, check  # noqa: E402

# (what, rows, outputs, inputs): rows as a batch of 256 utterances makes them.
SHAPES = [
    ("LM qkv, 512 rows", 512, 1152, 896),
    ("LM gate/up, 512 rows", 512, 9728, 896),
    ("LM down, 512 rows", 512, 896, 4864),
    ("head gate/up, 512 rows", 512, 5376, 896),
    ("decoder stage 0 ffn1, 1024 frames", 1024, 8192, 2048),
    ("decoder stage 0 ffn2, 1024 frames", 1024, 2048, 8192),
    ("decoder stage 2 ffn1", 40960, 2048, 512),
    ("decoder stage 4 ffn1", 819200, 512, 128),
    ("decoder stage 6 ffn1", 3276800, 128, 32),
    ("decoder stage 6 ffn2", 3276800, 32, 128),
    ("one frame, decoder stage 0 ffn1", 8, 8192, 2048),
    ("one stream, LM gate/up", 2, 9728, 896),
]


def _time(f, repeat: int) -> float:
    mx.eval(f())
    mx.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        mx.eval(f())
    mx.synchronize()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decoder-frames", type=int, default=1024,
                    help="then the decoder on this many frames (0: not)")  # fmt: skip
    args = ap.parse_args()
    products = {"tensor cores": TensorCoreProduct(min_rows=0)}
    for name, product in products.items():
        product.keep_compiled()
        if (reason := check(product)) is not None:
            sys.exit(f"the tensor-core product ({name}) is not usable: {reason}")
    print(json.dumps({"device": str(mx.device_info().get("device_name")), "mlx": mx.__version__}))
    rng = np.random.default_rng(0)
    totals = dict.fromkeys(["mlx", *products], 0.0)
    for what, m, n, k in SHAPES:
        x = mx.array(rng.standard_normal((m, k), dtype=np.float32))
        w32 = rng.standard_normal((n, k), dtype=np.float32)
        w32 = (w32.view(np.uint32) & 0xFFFF0000).view(np.float32)
        w = mx.array(w32)
        bits = bf16_bits(w)
        b = mx.array(rng.standard_normal(n, dtype=np.float32))
        runs = {"mlx": lambda x=x, w=w, b=b: mx.addmm(b, x, w.T)}
        for name, product in products.items():
            runs[name] = lambda x=x, bits=bits, b=b, p=product: p(x, bits, b)
        rows = min(m, 256)
        want = np.array(x[:rows]).astype(np.float64) @ w32.astype(np.float64).T + np.array(b)
        scale = float(np.max(np.abs(want)))
        line = {"shape": what, "m": m, "n": n, "k": k}
        for name, f in runs.items():
            got = np.array(f()[:rows])
            line[f"error {name}"] = float(np.max(np.abs(got - want))) / scale
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, f in runs.items():
                times[name].append(_time(f, args.repeat))
        flop = 2.0 * m * n * k
        for name in runs:
            best = min(times[name])
            totals[name] += best
            line[f"ms {name}"] = round(best * 1e3, 4)
            line[f"tflops {name}"] = round(flop / best / 1e12, 1)
        print(json.dumps(line), flush=True)
    print(json.dumps({f"all shapes, speedup {name}": round(totals["mlx"] / totals[name], 2)
                      for name in products}))  # fmt: skip
    if args.decoder_frames:
        decoder(products["tensor cores"], args.decoder_frames, args.repeat // 4 or 1, args.rounds)


def decoder(product, frames: int, repeat: int, rounds: int) -> None:
    """The full-size decoder on ``frames`` latent frames (4 per stream, as a batch decodes
    them), MLX's products against the tensor cores', alternating: time and audio error."""
    from engine_paths import full_model_dir

    from engine.cuda_gemm import use_tensor_cores
    from engine.weights import load_model

    plain = load_model(full_model_dir()).model.acoustic_tokenizer.decoder
    cores = load_model(full_model_dir()).model.acoustic_tokenizer.decoder
    swapped = use_tensor_cores(cores, product)
    rng = np.random.default_rng(1)
    x = mx.array(rng.standard_normal((frames // 4, 4, plain.cfg.vae_dim), dtype=np.float32))
    state = plain.init_state(frames // 4)
    # Compiled, as engine.decode runs it: MLX fuses the element-wise work it can.
    run_plain = mx.compile(lambda x, state: plain(x, state)[0])
    run_cores = mx.compile(lambda x, state: cores(x, state)[0])
    want = np.array(run_plain(x, state))
    got = np.array(run_cores(x, state))
    err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    t_mlx, t_tc = [], []
    for _ in range(rounds):
        t_mlx.append(_time(lambda: run_plain(x, state), repeat))
        t_tc.append(_time(lambda: run_cores(x, state), repeat))
    print(json.dumps({
        "decoder_frames": frames, "products_on_tensor_cores": swapped,
        "ms_per_frame_mlx": round(min(t_mlx) / frames * 1e3, 4),
        "ms_per_frame_tensor_cores": round(min(t_tc) / frames * 1e3, 4),
        "speedup": round(min(t_mlx) / min(t_tc), 2), "audio_error_vs_mlx": err,
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
