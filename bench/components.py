"""Per-component timing of one speech frame of the full-size model (random weights).

    python bench/components.py

Prints milliseconds per call for the TTS LM (one position, and the CFG pair as one batch),
the 5-step CFG diffusion sampler (eager and compiled), and the acoustic decoder for one
and two frames (eager and compiled); medians of 7 calls after a warm-up. Then the C
decoder (engine/native_decoder.py) against the compiled MLX one for 1, 2 and 4 frames,
their calls alternating (medians of 9 each) so that a busy machine slows both alike.
Last, the CFG-pair step and the sampler with and without the bfloat16 weight copies
(engine/bf16_weights.py), alternating likewise (medians of 15).
Used to decide where engine time goes; bench/engine.py gives the end-to-end numbers.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The script's folder comes first on sys.path, and bench/engine.py would shadow the
# engine package: put the repository there instead, and bench/ last (for engine_paths).
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

# isort: off
import engine.backend  # noqa: E402,F401  (chooses MLX's BLAS before mlx.core is imported)
import mlx.core as mx  # noqa: E402
# isort: on

from engine.acoustic import AcousticDecoder  # noqa: E402
from engine.cache import make_caches, make_cfg_caches  # noqa: E402
from engine.dpm_solver import make_schedule  # noqa: E402
from engine.native_decoder import NativeDecoder, load_library, unavailable_reason  # noqa: E402
from engine.sampler import CompiledSampler, sample_latent  # noqa: E402
from engine.voices import load_voice  # noqa: E402
from engine.weights import load_model  # noqa: E402


def timed(fn, n: int = 7) -> float:
    fn()
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs)) * 1000


def alternating(fns: dict[str, Callable[[], object]], n: int = 9) -> dict[str, float]:
    """Median milliseconds of each function, their calls interleaved, after a warm-up."""
    for fn in fns.values():
        fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    return {name: float(np.median(r)) * 1000 for name, r in runs.items()}


def decoder_comparison(dec: AcousticDecoder) -> list[tuple[str, float]]:
    """The C decoder against the compiled MLX one, alternating, for 1, 2 and 4 frames."""
    if load_library() is None:
        return [(f"native decoder unavailable: {unavailable_reason()}", float("nan"))]
    native = NativeDecoder(dec, max_frames=4)
    compiled = mx.compile(dec.__call__)
    rows = []
    rng = np.random.default_rng(0)
    for frames in (1, 2, 4):
        x = rng.standard_normal((frames, dec.cfg.vae_dim), dtype=np.float32)
        xm = mx.array(x[None])
        state, nstate = dec.init_state(), native.init_state()
        mx.eval(xm, state)
        ms = alternating(
            {
                "mlx": lambda xm=xm, state=state: mx.eval(compiled(xm, state)),
                "native": lambda x=x, nstate=nstate: native(x, nstate),
            }
        )
        rows += [
            (f"decoder {frames} frames, MLX compiled", ms["mlx"]),
            (f"decoder {frames} frames, native (C)", ms["native"]),
            (f"  MLX / native ({frames} frames)", ms["mlx"] / ms["native"]),
        ]
    return rows


def bf16_comparison(model, voice) -> list[tuple[str, float]]:
    """The CFG-pair TTS-LM step and the compiled 5-step sampler (as the engine runs them:
    fused, the MLX frame backend's compiled functions) reading the bfloat16 copies of the weights
    (engine/bf16_weights.py) and the float32 weights, their calls alternating."""
    from engine import bf16_weights
    from engine.generate import FrameKernels
    from engine.mlx_frames import MLXFrames
    from engine.steps import run_pair_step

    kernels = FrameKernels(model, 5)
    frames = MLXFrames(model, 5)
    if not kernels.bf16_weights:
        return [("bf16 weights unavailable (switched off, or MLX not on the shim)", float("nan"))]
    pair = make_cfg_caches(
        voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, mx.float32, 1000
    )
    x = mx.random.normal((2, 896))
    noise = mx.random.normal((1, 64))
    pos, neg = voice.tts_hidden[:, -1], voice.neg_hidden[:, -1]

    def with_bf16(on: bool, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            bf16_weights.set_enabled(on)
            return fn()

        return run

    def step() -> None:
        mx.eval(run_pair_step(frames.pair_step, x, pair))

    def sample() -> None:
        mx.eval(frames.sample(noise, pos, neg, 1.5))

    rows = []
    try:
        for name, fn in (("TTS LM CFG pair step", step), ("sampler 5 steps", sample)):
            ms = alternating({"f32": with_bf16(False, fn), "bf16": with_bf16(True, fn)}, n=15)
            rows += [
                (f"{name}, float32 weights", ms["f32"]),
                (f"{name}, bf16 copies", ms["bf16"]),
                (f"  float32 / bf16 ({name})", ms["f32"] / ms["bf16"]),
            ]
    finally:
        bf16_weights.set_enabled(True)
    return rows


def main() -> None:
    from engine_paths import full_model_dir, reference_voice

    model = load_model(full_model_dir())
    m = model.model
    voice = load_voice(reference_voice())
    one = make_caches(voice.tts_keys, voice.tts_values, mx.float32, 1000)
    pair = make_cfg_caches(
        voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, mx.float32, 1000
    )
    e1, e2 = mx.random.normal((1, 1, 896)), mx.random.normal((2, 1, 896))
    cond = mx.random.normal((1, 896))
    noise = mx.random.normal((1, 64))
    schedule = make_schedule(5)
    sampler = CompiledSampler(m.prediction_head, schedule)
    dec = m.acoustic_tokenizer.decoder
    state = dec.init_state()
    compiled_dec = mx.compile(dec.__call__)
    rows = [
        ("TTS LM, one position", timed(lambda: mx.eval(m.tts_language_model(e1, one)))),
        ("TTS LM, CFG pair", timed(lambda: mx.eval(m.tts_language_model(e2, pair)))),
        (
            "sampler, eager",
            timed(
                lambda: mx.eval(sample_latent(m.prediction_head, schedule, noise, cond, cond, 1.5))
            ),
        ),
        ("sampler, compiled", timed(lambda: mx.eval(sampler(noise, cond, cond, 1.5)))),
        ("decoder 1 frame, eager", timed(lambda: mx.eval(dec(mx.ones((1, 1, 64)), state)))),
        (
            "decoder 1 frame, compiled",
            timed(lambda: mx.eval(compiled_dec(mx.ones((1, 1, 64)), state))),
        ),
        (
            "decoder 2 frames, compiled",
            timed(lambda: mx.eval(compiled_dec(mx.ones((1, 2, 64)), state))),
        ),
    ]
    print(f"device {mx.default_device()}")
    for name, ms in rows:
        print(f"{name:28s} {ms:8.2f} ms")
    for name, v in decoder_comparison(dec) + bf16_comparison(model, voice):
        unit = "x" if name.startswith("  ") else "ms"
        print(f"{name:36s} {v:8.2f} {unit}")


if __name__ == "__main__":
    main()
