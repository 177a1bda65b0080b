"""Playback timing, measured from a recording of real audio.

    python bench/playback.py [--runs N] [--full] [--full-runs N]

vvreader's Narrator plays a short document through SoundDevicePlayer into a private
PulseAudio null sink (tests/audio_server.py) whose monitor is recorded; the recording is
taken apart as in tests/e2e/test_audio_playback.py. Reported, per model:

- play to first sound: ``narrator.play()`` to the first sample of speech in the
  recording. The first run of each model is "cold" (the engine's frame kernels are
  compiled by its first request, as in the app right after loading); the others are warm.
  Of that, "first audio handed" is the time until the output took the first audio from
  the ring (synthesis of the first chunks, the stream's start); the rest is the device.
- gaps beyond the plan: the silence between consecutive utterances in the recording minus
  the plan's pause (median and worst over all boundaries of the warm runs), with the part
  the player padded because the narrator was buffering (waiting for synthesis). Runs
  that the machine disturbed (see tests/e2e/playthrough.py: late callbacks, silence that
  neither the plan nor the player produced) are counted, and left out of these figures
  when there are undisturbed ones.
- clock error: when ``narrator.audible()`` changed minus when that utterance started in
  the recording (median of |error| and worst, over the undisturbed runs).

``--blas-threads N`` sets OpenBLAS's thread count (the engine leaves OpenBLAS's default,
one per core, whose busy-waiting threads can starve the audio callback on a 2-core
machine: see "device_underflows" and "disturbed_runs"). The tiny random model runs faster
than real time; ``--full`` adds the full-size model with
random weights (bench/engine.py's; EOS disabled, so each utterance is held to 2.5 frames
per text token, a natural length), which on a CPU is slower than real time: the narrator
then waits at utterance boundaries, and the gaps show how long. The last line is one JSON
object.
"""

from __future__ import annotations

import os

# As in bench/engine.py: these settings halve OpenBLAS's speed on these machines; the
# benchmark unsets them for its own process.
_UNSET = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(k, None)]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# bench/engine.py would shadow the engine package: the repository first, bench/ last.
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

from engine.api import SpeechEngine, SynthesisRequest  # noqa: E402
from engine.stream import MLXEngine  # noqa: E402
from tests.audio_server import PulseServer, use_server  # noqa: E402
from tests.e2e.playthrough import (  # noqa: E402
    Analysis,
    analyse,
    blas_threads,
    play_and_record,
    table,
)
from vvreader.narration.commands import VoiceSettings  # noqa: E402
from vvreader.text.plan import SpeechPlan, build_plan  # noqa: E402
from vvreader.text.readers import load_document  # noqa: E402

TINY_DOC = (
    "# Morning\n\nThe sun is up. Birds sing in the trees.\n\n- bread\n- milk and tea\n\n"
    "That is all for today.\n"
)
FULL_DOC = "# Morning\n\nThe sun is up. Birds sing.\n\nThat is all.\n"


@dataclass
class Run:
    cold: bool
    analysis: Analysis
    speed: float | None
    latency_ms: float
    device_underflows: int


def plan_of(text: str, folder: Path) -> SpeechPlan:
    f = folder / "doc.md"
    f.write_text(text)
    return build_plan(load_document(str(f)))


def warm_up(engine: SpeechEngine, voice: str) -> None:
    for _ in engine.synthesize(SynthesisRequest(text="Warm up.", voice=voice)):
        pass


def measure(
    engine: SpeechEngine,
    plan: SpeechPlan,
    server: PulseServer,
    voice: str,
    runs: int,
    timeout: float,
    label: str,
) -> list[Run]:
    out = []
    for i in range(runs):
        if i == 1:
            warm_up(engine, voice)
        print(f"{label}: run {i + 1}/{runs}{' (cold)' if i == 0 else ''}...", flush=True)
        pt = play_and_record(plan, engine, server, VoiceSettings(voice=voice), timeout=timeout)
        a = analyse(pt, plan)
        err = a.event_error_ms
        print(
            f"  first sound {a.first_sound_ms:.0f} ms; extra gaps "
            f"{[round(g, 1) for g in a.extra_gap_ms]} ms; clock error "
            f"{min(err):+.1f}..{max(err):+.1f} ms (as polled, worst "
            f"{max(a.event_error_polled_ms, key=abs):+.1f})"
        )
        for reason in a.disturbances():
            print(f"  disturbed: {reason}")
        out.append(Run(i == 0, a, pt.speed, pt.latency_ms, pt.device_underflows))
    return out


def summary(runs: list[Run]) -> dict[str, object]:
    warm_all = [r for r in runs if not r.cold] or runs
    warm = [r for r in warm_all if not r.analysis.disturbances()] or warm_all
    extra = [g for r in warm for g in r.analysis.extra_gap_ms]
    padded = [p for r in warm for p in r.analysis.padded_ms]
    unexplained = [u for r in warm for u in r.analysis.unexplained_gap_ms]
    clean = [r for r in runs if not r.analysis.disturbances()] or runs
    errors = [e for r in clean for e in r.analysis.event_error_ms]
    polled = [e for r in clean for e in r.analysis.event_error_polled_ms]
    first_warm = [r.analysis.first_sound_ms for r in warm]
    return {
        "first_sound_cold_ms": round(runs[0].analysis.first_sound_ms, 1),
        "first_sound_warm_ms": round(statistics.median(first_warm), 1),
        "first_sound_warm_worst_ms": round(max(first_warm), 1),
        "first_audio_handed_warm_ms": round(
            statistics.median(r.analysis.first_handed_ms for r in warm), 1
        ),
        "extra_gap_median_ms": round(statistics.median(extra), 1),
        "extra_gap_worst_ms": round(max(extra), 1),
        "padded_median_ms": round(statistics.median(padded), 1),
        "padded_worst_ms": round(max(padded), 1),
        "unexplained_gap_worst_ms": round(max(abs(u) for u in unexplained), 1),
        "boundaries_with_wait": sum(p > 0 for p in padded),
        "boundaries": len(padded),
        "clock_error_median_ms": round(statistics.median(abs(e) for e in errors), 1),
        "clock_error_worst_ms": round(max(errors, key=abs), 1),
        "clock_error_polled_worst_ms": round(max(polled, key=abs), 1),
        "synthesis_x_real_time": round(statistics.median(r.speed or 0 for r in warm), 2),
        "device_latency_ms": round(statistics.median(r.latency_ms for r in runs), 1),
        "device_underflows": sum(r.device_underflows for r in runs),
        "disturbed_runs": sum(bool(r.analysis.disturbances()) for r in runs),
        "runs": len(runs),
        "utterances": len(runs[0].analysis.onsets),
    }


def full_model_folder(tiny: Path, folder: Path) -> Path:
    """The full-size random weights with the tiny model's tokenizer (its ids fit the full
    vocabulary)."""
    from engine_paths import full_model_dir

    model = full_model_dir()
    out = folder / "full"
    out.mkdir()
    for name in ("config.json", "model.safetensors"):
        (out / name).symlink_to(model / name)
    (out / "tokenizer.json").symlink_to(tiny / "tokenizer.json")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=4, help="tiny model runs (the first cold)")
    p.add_argument("--full", action="store_true", help="also the full-size random model")
    p.add_argument("--full-runs", type=int, default=2)
    p.add_argument(
        "--blas-threads",
        type=int,
        metavar="N",
        help="run OpenBLAS with N threads (default: the engine's, one per core)",
    )
    a = p.parse_args()

    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="vvreader-bench-") as tmp:
        folder = Path(tmp)
        tiny = folder / "tiny"
        subprocess.run(
            [sys.executable, "-m", "engine.tiny", str(tiny)],
            check=True,
            cwd=REPO,
            capture_output=True,
        )
        with PulseServer(folder / "pulse") as server, use_server(server):
            engine = MLXEngine(tiny)
            engine.wait_ready(120)
            threads = blas_threads(a.blas_threads)
            try:
                results["tiny"] = summary(
                    measure(
                        engine,
                        plan_of(TINY_DOC, folder),
                        server,
                        "en-Emma_woman",
                        a.runs,
                        120,
                        "tiny",
                    )
                )
            finally:
                engine.close()
            if a.full:
                from engine_paths import reference_voice

                engine = MLXEngine(
                    full_model_folder(tiny, folder), frames_per_token=2.5, extra_frames=2
                )
                engine.wait_ready(600)
                try:
                    results["full"] = summary(
                        measure(
                            engine,
                            plan_of(FULL_DOC, folder),
                            server,
                            str(reference_voice()),
                            a.full_runs,
                            900,
                            "full",
                        )
                    )
                finally:
                    engine.close()

    keys = list(next(iter(results.values())))
    rows = [("", *results)]
    rows += [(k, *(str(r[k]) for r in results.values())) for k in keys]
    print()
    print(table(rows))
    from engine.backend import blas_in_use

    print(f"BLAS: {blas_in_use()}, {threads} OpenBLAS threads")
    if _UNSET:
        print(f"(unset for this process: {', '.join(_UNSET)})")
    print(
        json.dumps({"bench": "playback", "blas": blas_in_use(), "blas_threads": threads, **results})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
