"""Plan a multi-MB book: load/parse/plan times, memory, and segmenter speed vs baselines.

Usage: ``python bench/plan.py [FILE] [--mb 5]`` (without FILE a synthetic Markdown book of
about ``--mb`` megabytes is generated). Prints one JSON object. Ratios compare our segmenter
with a naive regex splitter and with pySBD (when installed) on the same paragraphs, in the
same run; pySBD is timed on a sample and extrapolated because it is too slow on a whole book.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vvreader.document import decode, parse  # noqa: E402
from vvreader.plan import build_plan  # noqa: E402
from vvreader.segment import split_sentences  # noqa: E402

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


def naive(text: str) -> list[tuple[int, int]]:
    """Baseline: split after . ! ? followed by whitespace."""
    spans, prev = [], 0
    for m in re.finditer(r"[.!?]+(?=\s)", text):
        spans.append((prev, m.end()))
        prev = m.end()
    return spans


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?")
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--pysbd-sample", type=int, default=300, help="paragraphs timed for pySBD")
    args = ap.parse_args()
    data = Path(args.file).read_bytes() if args.file else synthetic_book(args.mb).encode()
    result: dict[str, object] = {"bytes": len(data)}

    t = time.perf_counter()
    text, _ = decode(data)
    result["decode_s"] = round(time.perf_counter() - t, 4)

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    doc = parse(text, markdown=not (args.file or "").endswith(".txt"))
    result["parse_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    plan = build_plan(doc)
    result["plan_s"] = round(time.perf_counter() - t, 3)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    result["peak_rss_mib"] = round(rss1 / 1024, 1)
    result["rss_growth_mib"] = round((rss1 - rss0) / 1024, 1)
    result.update(blocks=len(doc.blocks), utterances=len(plan))
    result["total_s"] = round(result["decode_s"] + result["parse_s"] + result["plan_s"], 3)

    paragraphs = [text[b.start : b.end] for b in doc.blocks if b.kind == "paragraph"]
    t = time.perf_counter()
    n_ours = sum(len(split_sentences(p)) for p in paragraphs)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    n_naive = sum(len(naive(p)) for p in paragraphs)
    naive_s = time.perf_counter() - t
    result["segment"] = {
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
        pysbd = None
    if pysbd is not None and paragraphs:
        seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
        sample = paragraphs[: args.pysbd_sample]
        t = time.perf_counter()
        for p in sample:
            seg.segment(p)
        per = (time.perf_counter() - t) / len(sample)
        t = time.perf_counter()
        for p in sample:
            split_sentences(p)
        ours_per = (time.perf_counter() - t) / len(sample)
        result["segment"]["pysbd_s_extrapolated"] = round(per * len(paragraphs), 2)
        result["segment"]["pysbd_over_ours"] = round(per / ours_per, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
