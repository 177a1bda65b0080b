"""Open a large EPUB: time to the first page, and to the whole plan.

Usage::

    python bench/book.py [BOOK.epub] [--mb 10] [--chapters 40 1]

Without BOOK, for each ``--chapters`` count an EPUB of about ``--mb`` megabytes of XHTML in
that many chapters is written (prose paragraphs with emphasis, a heading per chapter, a
note per chapter cited by every paragraph): by default a book of 40 chapters and a book of
one long chapter. Prints one JSON object per book, measured in a fresh process (imports
excluded):

- ``first_s``: ``ProgressivePlan.open(book).advance(1)``: unpack and check the archive,
  convert the first chapters, plan the first utterance (what the reader needs to show its
  first page); ``first_text_chars`` is how much text that was.
- ``whole_s``: then until the whole plan is built (the reader does this on a worker while
  the first page is shown); ``utterances``, ``text_chars``.
- ``chapters``, ``xhtml_bytes``, ``epub_bytes``; ``cpu``: the processor (``lscpu``'s model
  name).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.books import make_epub, xhtml  # noqa: E402

PARAGRAPH = (
    "<p>It was a <em>dark</em> and stormy night; the rain fell in torrents, except at "
    "occasional intervals, when it was checked by a violent gust of wind which swept up "
    'the streets<a epub:type="noteref" href="#n{c}">{c}</a>, rattling along the '
    "housetops, and fiercely agitating the scanty flame of the lamps.</p>\n"
)

MEASURE = """
import json, sys, time
from vvreader.text.plan import ProgressivePlan
t = time.perf_counter()
progress = ProgressivePlan.open(sys.argv[1])
first = progress.advance(1)
first_s = time.perf_counter() - t
whole = progress.result()
print(json.dumps({
    "first_s": round(first_s, 3),
    "first_text_chars": len(first.document.text),
    "whole_s": round(time.perf_counter() - t, 2),
    "utterances": len(whole),
    "text_chars": len(whole.document.text),
}))
"""


def write_book(path: Path, mb: float, chapters: int) -> int:
    per = int(mb * 1e6 / chapters / len(PARAGRAPH))
    parts = []
    for c in range(chapters):
        body = f"<h1>Chapter {c + 1}</h1>" + PARAGRAPH.format(c=c) * per
        body += f'<aside epub:type="footnote" id="n{c}"><p>Note {c + 1}.</p></aside>'
        parts.append((f"c{c}.xhtml", xhtml(body)))
    make_epub(path, parts, toc=[(f"c{c}.xhtml", f"Chapter {c + 1}", 1) for c in range(chapters)])
    return sum(len(x.encode()) for _, x in parts)


def cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln), "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("book", nargs="?")
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--chapters", type=int, nargs="+", default=[40, 1])
    args = ap.parse_args()
    for chapters in [None] if args.book else args.chapters:
        with tempfile.TemporaryDirectory() as tmp:
            xhtml_bytes = None
            book = Path(args.book) if args.book else Path(tmp) / "book.epub"
            if chapters is not None:
                xhtml_bytes = write_book(book, args.mb, chapters)
            run = subprocess.run(
                [sys.executable, "-c", MEASURE, str(book)],
                capture_output=True, text=True, check=True, cwd=ROOT,
                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            result = json.loads(run.stdout)
            result.update(
                chapters=chapters,
                xhtml_bytes=xhtml_bytes,
                epub_bytes=book.stat().st_size,
                cpu=cpu(),
            )
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
