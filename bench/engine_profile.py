"""Where one speech frame's time goes: per-part timings and primitive counts.

    python bench/engine_profile.py [--dtype float32] [--frames 24]

Times each part of a frame on the default device (the compiled sampler, the connector
and EOS head, the CFG-pair TTS-LM step, the decoder for one and two frames (MLX, and the
C decoder where the engine uses it), the text
window of the first-audio path), the frame without and with its decoder, and a short
end-to-end run; each part is synchronised on its own (medians of 15 calls after a
warm-up). It also counts the primitives each part puts in the graph: on a GPU a frame is
bound by launching them, not by its arithmetic. The last line is one JSON object.
"""

from __future__ import annotations

import os

_UNSET = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(k, None)]

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

# isort: off
import engine.backend  # noqa: E402,F401  (chooses MLX's BLAS before mlx.core is imported)
import mlx.core as mx  # noqa: E402
# isort: on

from engine_paths import full_model_dir, reference_voice  # noqa: E402

from engine.cache import make_caches, make_cfg_caches  # noqa: E402
from engine.decode import MLXLatentDecoder  # noqa: E402
from engine.generate import FrameKernels, generate_frames, seeded_noise  # noqa: E402
from engine.steps import pair_step, run_pair_step  # noqa: E402
from engine.voices import load_voice  # noqa: E402
from engine.weights import load_model  # noqa: E402

TEXT_IDS = [9707, 11, 1879, 0, 1096, 374, 264, 1273, 13, 198] * 4


def timed(fn: Callable[[], object], n: int = 15) -> float:
    fn()
    runs = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs)) * 1000


def count_primitives(*outputs: mx.array) -> dict[str, int]:
    """Primitives in the lazy graph of ``outputs`` (compiled functions show their parts,
    with fused element-wise groups as ``Compiled``)."""
    with tempfile.NamedTemporaryFile("r", suffix=".dot") as f:
        mx.export_to_dot(f.name, *outputs)
        labels = re.findall(r'label ="([^"]+)", shape=rectangle', Path(f.name).read_text())
    counts = collections.Counter(labels)
    return {"total": sum(counts.values()), **dict(counts.most_common(8))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--frames", type=int, default=24)
    a = ap.parse_args()

    dtype = getattr(mx, a.dtype)
    model = load_model(full_model_dir(), dtype=dtype)
    m = model.model
    voice = load_voice(reference_voice())
    kernels = FrameKernels(model, 5)
    frames = kernels.frames
    # The MLX decoder, compiled (the C one, where the engine uses it, is timed below).
    decode = MLXLatentDecoder(model).compiled
    tts_pair = mx.compile(pair_step(m.tts_language_model))
    dec = m.acoustic_tokenizer.decoder
    hidden = model.config.decoder.hidden_size

    tts = make_cfg_caches(
        voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, dtype, 1024
    )
    lm = make_caches(voice.lm_keys, voice.lm_values, dtype, 1024)
    mx.eval([c.keys for c in tts], [c.values for c in tts], [c.keys for c in lm])
    pos = voice.tts_hidden[:, -1].astype(dtype)
    neg = voice.neg_hidden[:, -1].astype(dtype)
    noise = seeded_noise(0, 64)(0)
    type_speech = m.tts_input_types.weight[0]
    type_text = m.tts_input_types.weight[1]
    state = dec.init_state(1, mx.float32)
    mx.eval(pos, neg, noise, state)

    def sampler() -> mx.array:
        return frames.sample(noise, pos, neg, 1.5)

    def feedback(latent: mx.array) -> tuple[mx.array, mx.array]:
        emb = m.acoustic_connector(latent.astype(dtype)) + type_speech
        out = run_pair_step(tts_pair, mx.broadcast_to(emb, (2, hidden)), tts)
        return out, model.tts_eos_classifier(out[0:1])[0, 0]

    def text_window() -> mx.array:
        h = m.language_model(m.language_model.embed_tokens(mx.array([TEXT_IDS[:5]])), lm)
        h = m.tts_language_model(h + type_text, [c.positive() for c in tts])
        return h[:, -1]

    lat = sampler()
    mx.eval(lat)
    one, two = lat[None], mx.concatenate([lat, lat])[None]
    parts = {
        "eval round trip": lambda: mx.eval(mx.array(1.0) + 1),
        "sampler (5 steps, CFG pair)": lambda: mx.eval(sampler()),
        "connector + TTS-LM pair step + EOS": lambda: mx.eval(*feedback(lat)),
        "decoder, 1 frame": lambda: mx.eval(decode(one, state)),
        "decoder, 2 frames": lambda: mx.eval(decode(two, state)),
        "frame without decoder": lambda: mx.eval(*feedback(sampler())),
        "frame with decoder (1)": lambda: mx.eval(
            *feedback(lt := sampler()), decode(lt[None], state)
        ),
    }
    if kernels.decoder.name == "native":
        # The C decoder that generate_frames uses here.
        nstate = kernels.decoder.init_state()
        parts["decoder, 1 frame, native"] = lambda: kernels.decoder.decode(lat, nstate)
        parts["decoder, 2 frames, native"] = lambda: kernels.decoder.decode(two[0], nstate)
    rows = {name: timed(fn) for name, fn in parts.items()}

    def dispatch() -> float:
        # Building and launching a frame (sampler + feedback) without waiting for it: when
        # this is close to the whole frame, the host (graph building, encoding) is the bound.
        t0 = time.perf_counter()
        outs = feedback(sampler())
        mx.async_eval(*outs)
        t1 = time.perf_counter()
        mx.eval(*outs)
        return (t1 - t0) * 1000

    dispatch()
    rows["frame without decoder: launch only"] = float(np.median([dispatch() for _ in range(15)]))
    # Text windows grow the caches; time them last, a few calls only.
    rows["text window (lower LM + TTS LM, 5 tokens)"] = timed(lambda: mx.eval(text_window()), n=5)

    counts = {
        "sampler": count_primitives(sampler()),
        "pair step + EOS": count_primitives(*feedback(lat)),
        "decoder 1 frame": count_primitives(decode(one, state)[0]),
        "decoder 2 frames": count_primitives(decode(two, state)[0]),
    }

    def run(frames: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        stamps = []
        for _ in generate_frames(
            model,
            voice,
            TEXT_IDS,
            noise=seeded_noise(0, 64),
            max_frames=frames,
            stop_at_eos=False,
            kernels=kernels,
        ):
            stamps.append(time.perf_counter())
        # chunks 1 and 2 arrive together (decode groups 1, 2, 4): count from the third
        return (stamps[0] - t0) * 1000, (stamps[-1] - stamps[2]) / (len(stamps) - 3) * 1000

    run(8)
    e2e = [run(a.frames) for _ in range(3)]
    rows["end to end: first audio"] = float(np.median([e[0] for e in e2e]))
    rows["end to end: ms per frame"] = float(np.median([e[1] for e in e2e]))

    print(f"device {mx.default_device()}, {a.dtype}" + (f"; unset {_UNSET}" if _UNSET else ""))
    for name, ms in rows.items():
        print(f"{name:44s} {ms:8.2f} ms")
    for name, c in counts.items():
        print(f"{name:20s} {c}")
    env = {k: v for k, v in os.environ.items() if k.startswith("MLX_")}
    print(json.dumps({"device": str(mx.default_device()), "env": env, "ms": rows, "ops": counts}))


if __name__ == "__main__":
    main()
