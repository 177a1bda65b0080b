"""Baseline for bench/engine.py: mlx-audio's VibeVoice-Realtime on the same weights, voice
and token ids. Runs inside its own virtualenv (mlx-audio 0.6.2); prints one JSON line.

Not imported by the project. The tokenizer is bypassed (fixed token ids, as in our run),
so mlx-audio's transformers import is replaced by a stand-in module.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
import time
import types

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--voice", required=True, help="a .safetensors voice in the mlx-audio schema")
ap.add_argument("--ids", required=True, help="comma-separated token ids")
ap.add_argument("--frames", type=int, required=True)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--dtype", default="float32")
ap.add_argument("--blas", nargs="*", default=[], help="libraries to preload with RTLD_GLOBAL")
a = ap.parse_args()

for lib in a.blas:  # the same optimized BLAS as our run (must precede `import mlx.core`)
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)

fake = types.ModuleType("transformers")
fake.AutoTokenizer = None  # type: ignore[attr-defined]
sys.modules.setdefault("transformers", fake)

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from mlx_audio.tts.models.vibevoice import Model, ModelConfig  # noqa: E402

ids = [int(x) for x in a.ids.split(",")]


class FixedIds:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return ids


folder = tempfile.mkdtemp()
os.makedirs(os.path.join(folder, "voices"))
shutil.copy(a.voice, os.path.join(folder, "voices", "bench.safetensors"))
config = json.load(open(os.path.join(a.model, "config.json")))
config["model_path"] = folder
model = Model(ModelConfig.from_dict(config))
weights = mx.load(os.path.join(a.model, "model.safetensors"))
dtype = getattr(mx, a.dtype)
weights = {k: v.astype(dtype) for k, v in model.sanitize(weights).items()}
model.load_weights(list(weights.items()), strict=False)
mx.eval(model.parameters())
model.tokenizer = FixedIds()
model.load_voice("bench")

first, steady = [], []
for run in range(a.runs + 1):  # run 0 is the warm-up
    t0 = time.perf_counter()
    stamps = []
    gen = model.generate(
        "x", max_tokens=a.frames, cfg_scale=1.5, ddpm_steps=5, stream=True, streaming_interval=0
    )
    for result in gen:
        if result.samples:
            stamps.append(time.perf_counter())
    if run == 0:
        continue
    first.append((stamps[0] - t0) * 1000)
    steady.append((stamps[-1] - stamps[1]) / (len(stamps) - 2) * 1000)
print(
    json.dumps(
        {
            "first_audio_ms": float(np.median(first)),
            "ms_per_frame": float(np.median(steady)),
            "frames": len(stamps),
            "peak_mb": mx.get_peak_memory() / 2**20,
            "dtype": a.dtype,
        }
    )
)
