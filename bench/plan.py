"""Plan a multi-MB book: load/parse/plan times, first-sentence latency, memory, segmenter speed.

Usage::

    python bench/plan.py [FILE] [--mb 5] [--book synthetic|novel] [--baseline REV]

Without FILE a Markdown book of about ``--mb`` megabytes is generated: ``synthetic`` repeats
one markup-heavy chapter (headings, emphasis, links, code spans, a list and a table);
``novel`` is prose with footnotes defined at the end and reference links (the case where
the first sentence has to wait for the definitions). Prints one JSON object:

- ``decode_s``, ``parse_s`` (``parse``: the whole ``Document``), ``plan_s`` (``build_plan``),
  ``total_s``; ``peak_rss_mib`` of that run.
- ``first_s``: ``ProgressivePlan(text).advance()``, i.e. the time until the first part of
  the plan (document and first utterances) is there; ``first_utterances``, ``first_blocks``;
  ``progressive_s``: until its whole plan is done. Measured in a fresh process (imports
  excluded) so that nothing is warm.
- ``segment``: our sentence splitter against a naive regex splitter and pySBD (when
  installed) on the same paragraphs.
- With ``--baseline REV`` the same measurements run on ``vvreader`` as of git revision REV
  (extracted with ``git archive`` into a temporary folder) in the same run, one after the
  other, and ``ratios`` gives baseline time / our time.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]

PARAGRAPH = (
    "It was the best of times, it was the worst of times. Mr. Smith said *hello* to the U.S. "
    "crowd at 5 p.m. and left, see [the notes](http://example.com/notes). Then, quietly, she "
    "went home! Was it 3.5 km or 12 miles?\nAnother wrapped line follows with more words, "
    "e.g. apples, pears etc. and a `code span`.\n\n"
)


def synthetic_book(mb: float) -> str:
    """A Markdown book of about ``mb`` megabytes: chapters, paragraphs, lists and a table."""
    chapter = (
        "# Chapter\n\n" + PARAGRAPH * 12 + "- an item\n- another item\n\n"
        "| Name | Age |\n|---|---|\n| Ann | 3 |\n\n" + PARAGRAPH * 8
    )
    return chapter * max(1, int(mb * 1_000_000 / len(chapter)))


_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there one all we their its when would so no been "
    "if more out up into two some what could time said only may about than other then these "
    "do now him my over know most very made first after also did many before must through "
    "back years much where your well down should because each just those people how too "
    "little state good long world still own see men work here between both life being under "
    "never day same another while last might us great old year off come since against go "
    "came right used take three"
).split()


def novel_book(mb: float, seed: int = 1) -> str:
    """Prose chapters, hard-wrapped, with footnotes (defined at the end) and reference links."""
    rng = random.Random(seed)

    def sentence() -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 25))]
        words[0] = words[0].capitalize()
        if rng.random() < 0.1:
            words[rng.randrange(len(words))] = f"_{rng.choice(_WORDS)}_"
        if rng.random() < 0.04:
            words[rng.randrange(len(words))] = f"[{rng.choice(_WORDS)}][r{rng.randrange(5)}]"
        ends = [".", ".", ".", "!", "?", "; \u201cso,\u201d she said."]
        return " ".join(words) + rng.choice(ends)

    out, size, notes, chapter = [], 0, 0, 0
    while size < mb * 1_000_000:
        chapter += 1
        out.append(f"# Chapter {chapter}\n\n")
        for _ in range(rng.randint(10, 30)):
            para = " ".join(sentence() for _ in range(rng.randint(1, 8)))
            if rng.random() < 0.08:
                notes += 1
                para += f"[^{notes}]"
            lines, line = [], ""
            for word in para.split(" "):
                if line and len(line) + len(word) > 72:
                    lines.append(line)
                    line = word
                else:
                    line = f"{line} {word}".strip()
            out.append("\n".join([*lines, line]) + "\n\n")
            size += len(para)
    out.append("# Notes\n\n")
    out.extend(f"[^{n}]: {sentence()}\n\n" for n in range(1, notes + 1))
    out.extend(f"[r{r}]: https://example.org/{r}\n" for r in range(5))
    return "".join(out)


def naive(text: str) -> list[tuple[int, int]]:
    """Baseline: split after . ! ? followed by whitespace."""
    spans, prev = [], 0
    for m in re.finditer(r"[.!?]+(?=\s)", text):
        spans.append((prev, m.end()))
        prev = m.end()
    return spans


def _vvreader() -> SimpleNamespace:
    """``decode``, ``parse``, ``build_plan``, ``ProgressivePlan`` (None if it has none) and
    ``split_sentences`` of the ``vvreader`` on ``sys.path`` (a ``--baseline`` revision may
    have them in the modules of its time)."""
    try:
        from vvreader.text.files import decode
        from vvreader.text.plan import ProgressivePlan, build_plan
        from vvreader.text.readers import parse
        from vvreader.text.segment import split_sentences
    except ImportError:
        from vvreader.document import decode, parse
        from vvreader.plan import build_plan
        from vvreader.segment import split_sentences

        try:
            from vvreader.plan import ProgressivePlan
        except ImportError:
            ProgressivePlan = None  # noqa: N806 - the class, or None
    return SimpleNamespace(
        decode=decode,
        parse=parse,
        build_plan=build_plan,
        ProgressivePlan=ProgressivePlan,
        split_sentences=split_sentences,
    )


def measure(data: bytes, markdown: bool) -> dict[str, object]:
    """Decode, parse and plan ``data`` with the ``vvreader`` on ``sys.path``."""
    api = _vvreader()
    decode, parse, build_plan = api.decode, api.parse, api.build_plan

    result: dict[str, object] = {"bytes": len(data)}
    t = time.perf_counter()
    text, _ = decode(data)
    result["decode_s"] = round(time.perf_counter() - t, 4)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    doc = parse(text, markdown=markdown)
    result["parse_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    plan = build_plan(doc)
    result["plan_s"] = round(time.perf_counter() - t, 3)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result["peak_rss_mib"] = round(rss1 / 1024, 1)
    result["rss_growth_mib"] = round((rss1 - rss0) / 1024, 1)
    result.update(blocks=len(doc.blocks), utterances=len(plan))
    result["total_s"] = round(result["decode_s"] + result["parse_s"] + result["plan_s"], 3)
    return result


def measure_first(data: bytes, markdown: bool) -> dict[str, object]:
    """Time to the first part of a progressive plan, and to its end (if the code has it)."""
    api = _vvreader()
    decode, ProgressivePlan = api.decode, api.ProgressivePlan  # noqa: N806 - a class
    if ProgressivePlan is None:
        return {}
    import markdown_it  # noqa: F401 - imported by the app at start, not timed

    t = time.perf_counter()
    text, _ = decode(data)
    progress = ProgressivePlan(text, markdown=markdown)
    first = progress.advance()
    result: dict[str, object] = {"first_s": round(time.perf_counter() - t, 3)}
    result.update(first_utterances=len(first), first_blocks=len(first.document.blocks))
    full = progress.result()
    result["progressive_s"] = round(time.perf_counter() - t, 3)
    result["progressive_utterances"] = len(full)
    return result


def segment_speed(data: bytes, markdown: bool, pysbd_sample: int) -> dict[str, object]:
    """Our segmenter against a naive regex and pySBD on the document's paragraphs."""
    api = _vvreader()
    decode, parse, split_sentences = api.decode, api.parse, api.split_sentences

    text, _ = decode(data)
    doc = parse(text, markdown=markdown)
    paragraphs = [text[b.start : b.end] for b in doc.blocks if b.kind == "paragraph"]
    t = time.perf_counter()
    n_ours = sum(len(split_sentences(p)) for p in paragraphs)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    n_naive = sum(len(naive(p)) for p in paragraphs)
    naive_s = time.perf_counter() - t
    result: dict[str, object] = {
        "paragraphs": len(paragraphs),
        "ours_s": round(ours_s, 3),
        "naive_regex_s": round(naive_s, 3),
        "ours_over_naive": round(ours_s / naive_s, 2) if naive_s else None,
        "sentences_ours": n_ours,
        "sentences_naive": n_naive,
    }
    try:
        import pysbd
    except ImportError:
        return result
    if paragraphs:
        seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
        sample = paragraphs[:pysbd_sample]
        t = time.perf_counter()
        for p in sample:
            seg.segment(p)
        per = (time.perf_counter() - t) / len(sample)
        t = time.perf_counter()
        for p in sample:
            split_sentences(p)
        ours_per = (time.perf_counter() - t) / len(sample)
        result["pysbd_s_extrapolated"] = round(per * len(paragraphs), 2)
        result["pysbd_over_ours"] = round(per / ours_per, 1)
    return result


def _worker(code: Path, what: str, path: Path, markdown: bool) -> dict[str, object]:
    """Run one measurement in a fresh interpreter with ``code`` first on ``sys.path``."""
    cmd = [sys.executable, __file__, "--worker", what, "--code", str(code), str(path)]
    if not markdown:
        cmd.append("--text")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?")
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--book", choices=("synthetic", "novel"), default="synthetic")
    ap.add_argument("--baseline", metavar="REV", help="also measure vvreader at this git revision")
    ap.add_argument("--pysbd-sample", type=int, default=300, help="paragraphs timed for pySBD")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--code", help=argparse.SUPPRESS)
    ap.add_argument("--text", action="store_true", help="read FILE as plain text")
    args = ap.parse_args()

    if args.worker:
        sys.path.insert(0, args.code)
        data = Path(args.file).read_bytes()
        md = not args.text
        if args.worker == "plan":
            print(json.dumps(measure(data, md)))
        elif args.worker == "first":
            print(json.dumps(measure_first(data, md)))
        else:
            print(json.dumps(segment_speed(data, md, args.pysbd_sample)))
        return

    markdown = not args.text and not (args.file or "").endswith(".txt")
    with tempfile.TemporaryDirectory() as tmp:
        if args.file:
            path = Path(args.file)
        else:
            book = synthetic_book if args.book == "synthetic" else novel_book
            path = Path(tmp) / "book.md"
            path.write_text(book(args.mb), encoding="utf-8")
        codes = {"ours": ROOT}
        if args.baseline:
            base = Path(tmp) / "baseline"
            base.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline, "vvreader"],
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            codes["baseline"] = base
        results: dict[str, dict[str, object]] = {}
        for name, code in codes.items():
            r = _worker(code, "plan", path, markdown)
            r.update(_worker(code, "first", path, markdown))
            results[name] = r
        results["ours"]["segment"] = _worker(ROOT, "segment", path, markdown)
    out: dict[str, object] = dict(results["ours"])
    if args.baseline:
        base_r, ours = results["baseline"], results["ours"]
        out["baseline"] = {"rev": args.baseline, **base_r}
        out["ratios"] = {
            key: round(float(base_r[key]) / float(ours[key]), 2)  # type: ignore[arg-type]
            for key in ("parse_s", "plan_s", "total_s", "peak_rss_mib")
            if key in base_r and ours.get(key)
        }
        if "first_s" in ours:
            out["ratios"]["baseline_total_over_our_first"] = round(
                float(base_r["total_s"]) / float(ours["first_s"]),
                1,  # type: ignore[arg-type]
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
