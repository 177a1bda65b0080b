"""Export speed: a book rendered by ``vvreader --export``'s pipeline, batched and not.

    python bench/export.py [--batch B] [--sentences N] [--single M] [--words W]
                           [--format m4b] [--runs R]

Renders the same generated book (``--sentences`` sentences of about ``--words`` words, in
two chapters) through ``vvreader.export.export`` with the full-size random model (the
full-davis parity case's weights: EOS disabled, so every sentence runs to the engine's
frame limit, 4 frames a token and 24 more) and the official en-Davis_man voice, once with
the engine generating up to ``--batch`` sentences together and once one at a time
(``max_batch`` 1; of the first ``--single`` sentences only, where one at a time would take
too long), alternating, ``--runs`` times each, after a short warm-up export. The
whole pipeline is timed: synthesis, time-stretch (none at 1x), the encoding thread and the
format's encoder (ffmpeg for m4b), the work folder, the final rename. Reports seconds of
audio per second of wall time (x real time) for each and their ratio, with the machine's
CPU model, core count and load average (a shared machine: compare the ratio, and only
within one run). The last line is one JSON object.

The model has no tokenizer of its own here; a byte-level BPE is trained on the book's text
(2000 tokens, Qwen2's pre-tokenisation), so that a sentence is about as many tokens as
Qwen2's tokenizer makes of English prose.
"""

from __future__ import annotations

import os

# As bench/engine.py: these machines' OpenBLAS settings halve its throughput; unset them for
# this process (before numpy or MLX load OpenBLAS) and say so.
_UNSET = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(k, None)]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# bench/engine.py would shadow the engine package: the repository first, bench/ last.
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

from engine.backend import cpu_level_in_use  # noqa: E402

from engine_paths import full_model_dir, reference_voice  # noqa: E402

from engine.stream import MLXEngine  # noqa: E402
from engine.tiny import SPECIAL_TOKENS  # noqa: E402
from vvreader.export import export  # noqa: E402
from vvreader.text.plan import build_plan  # noqa: E402
from vvreader.text.readers import load_document  # noqa: E402

WORDS = (
    "the river ran past the old mill where she had waited every morning for a letter that "
    "never came and in the evening light the stones of the bridge were warm under her hands "
    "while the town behind her grew quiet one window at a time until only the baker was awake "
    "kneading bread for people who would not think of him at all"
).split()


def book_text(sentences: int, words: int, seed: int = 1) -> str:
    """Two chapters of ``sentences`` sentences of ``words`` words (give or take two)."""
    rng = random.Random(seed)
    lines = []
    for n in range(sentences):
        if n in (0, sentences // 2):
            lines.append(f"\n# Chapter {1 if n == 0 else 2}\n")
        count = max(3, words + rng.randint(-2, 2))
        sentence = " ".join(rng.choice(WORDS) for _ in range(count))
        lines.append(sentence.capitalize() + ".")
    return "\n\n".join(lines) + "\n"


def model_folder(text: str, cache: Path) -> Path:
    """The full-size model's config and weights (linked) with a tokenizer trained on
    ``text``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    weights = full_model_dir()
    folder = cache / "model"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        # Linked afresh each time: a link left by another checkout may point nowhere.
        link = folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(weights / name)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def run_export(
    engine: MLXEngine, doc: Path, out: Path, voice: str, last: int | None = None
) -> tuple[float, float]:
    """(seconds of audio, seconds of wall time) of one export of ``doc`` (up to utterance
    ``last``) to ``out``."""
    plan = build_plan(load_document(str(doc)))
    t0 = time.perf_counter()
    result = export(plan, engine, out, voice=voice, last=last)
    return result.seconds, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4, help="sentences generated together")
    ap.add_argument("--sentences", type=int, default=8, help="sentences in the book")
    ap.add_argument(
        "--single", type=int, help="sentences exported one at a time (default: all of them)"
    )
    ap.add_argument("--words", type=int, default=8, help="words a sentence, about")
    ap.add_argument("--format", default="m4b", help="the export's extension (default m4b)")
    ap.add_argument("--runs", type=int, default=1, help="exports of each kind")
    a = ap.parse_args()

    import mlx.core as mx

    work = Path(tempfile.mkdtemp(prefix="vvreader-bench-export-"))
    try:
        text = book_text(a.sentences, a.words)
        doc = work / "book.md"
        doc.write_text(text)
        warm = work / "warm.md"
        warm.write_text("A short sentence to warm up.\n")
        model = model_folder(text, REPO / ".cache" / "bench-export")
        voice = str(reference_voice())
        engine = MLXEngine(model, max_batch=a.batch)
        engine.wait_ready(600)
        load = [os.getloadavg()[0]]
        try:
            run_export(engine, warm, work / f"warm.{a.format}", voice)
            rates: dict[int, list[float]] = {a.batch: [], 1: []}
            last = None  # one at a time: up to the --single'th sentence
            if a.single is not None:
                plan = build_plan(load_document(str(doc)))
                spoken = [u.index for u in plan if u.kind != "heading"]
                last = spoken[max(1, min(a.single, len(spoken))) - 1]
            audios: dict[int, float] = {}
            for r in range(a.runs):
                for batch in rates:
                    engine.max_batch = batch
                    out = work / f"b{batch}-r{r}.{a.format}"
                    audio, wall = run_export(engine, doc, out, voice, None if batch > 1 else last)
                    rates[batch].append(audio / wall)
                    audios[batch] = audio
                    load.append(os.getloadavg()[0])
                    print(
                        f"max_batch {batch:3d}: {audio:7.1f} s of audio in {wall:7.1f} s "
                        f"= {audio / wall:5.2f}x real time",
                        flush=True,
                    )
        finally:
            engine.close()
        best = {b: max(v) for b, v in rates.items()}
        result = {
            "batch": a.batch,
            "batch_x_realtime": round(best[a.batch], 3),
            "one_at_a_time_x_realtime": round(best[1], 3),
            "ratio": round(best[a.batch] / best[1], 2),
            "audio_seconds": {str(b): round(x, 1) for b, x in audios.items()},
            "sentences": a.sentences,
            "single_sentences": a.single or a.sentences,
            "format": a.format,
            "runs": a.runs,
            "device": str(mx.default_device()),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "cpu_level": cpu_level_in_use(),
            "load_average": [round(x, 2) for x in load],
            "unset_env": _UNSET,
        }
        print(
            f"{a.batch} at a time: {result['ratio']}x the speed of one at a time "
            f"({result['cpu']}, {result['cores']} cores, {result['device']}, load average "
            f"{' -> '.join(f'{x:.2f}' for x in load)})"
        )
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
