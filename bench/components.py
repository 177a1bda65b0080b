"""Per-component timing of one speech frame of the full-size model (random weights).

    python bench/components.py

Prints milliseconds per call for the TTS LM (one position, and the CFG pair as one batch),
the 5-step CFG diffusion sampler (eager and compiled), and the acoustic decoder for one
and two frames (eager and compiled); medians of 7 calls after a warm-up. Used to decide
where engine time goes; bench/engine.py gives the end-to-end numbers.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The script's folder comes first on sys.path, and bench/engine.py would shadow the
# engine package: put the repository there instead, and bench/ last (for engine_paths).
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

# isort: off
import engine  # noqa: E402,F401  (chooses MLX's BLAS before mlx.core is imported)
import mlx.core as mx  # noqa: E402
# isort: on

from engine.cache import make_caches, make_cfg_caches  # noqa: E402
from engine.dpm_solver import make_schedule  # noqa: E402
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


if __name__ == "__main__":
    main()
