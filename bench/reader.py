"""Open a multi-MB book in the reader and scroll it: what a user waits for.

Usage: ``python bench/reader.py [FILE] [--mb 5] [--pages 200]`` (without FILE, the synthetic
book of bench/plan.py). The app runs headless (Textual's pilot) with a scripted engine, so
only the document, the plan and the view are measured. Prints a table and, last, one JSON
object: ``load_s`` (read and decode), ``plan_s`` (the first part of the plan, as the reader
does), ``first_screen_s`` (app start to the first rendered page), ``open_s`` (their sum: file
to first page), ``whole_plan_s`` (the rest planned in the background, while the app runs),
``settle_s`` (then until every block is wrapped, 15 ms slices every 50 ms), ``page_ms`` (median
time of a page-down as the pilot sees it: key, render and Textual's idle wait) and
``end_ms`` (jump to the end of the book).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes import FakeEngine, FakeLoader  # noqa: E402
from vvreader.app import ReaderApp, ReaderOptions  # noqa: E402
from vvreader.config import Config  # noqa: E402
from vvreader.player import NullPlayer  # noqa: E402
from vvreader.text.plan import ProgressivePlan  # noqa: E402
from vvreader.widgets.reading_view import ReadingView  # noqa: E402


def synthetic_book(mb: float) -> str:
    """The synthetic book of bench/plan.py (that module's name shadows nothing here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_plan", Path(__file__).with_name("plan.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_book(mb)


async def run(path: Path, pages: int) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    progress = ProgressivePlan.open(str(path))  # what `vvreader FILE` does
    out["load_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    plan = progress.advance(1)
    out["plan_s"] = time.perf_counter() - t
    out["first_utterances"] = len(plan)
    engine = FakeEngine(0.001)
    app = ReaderApp(
        plan,
        ReaderOptions(config=Config(autoplay=False)),
        FakeLoader(lambda _progress: engine),
        make_output=lambda device: NullPlayer,
        progress=progress,
    )
    app.animation_level = "none"  # time the rendering, not the smooth-scroll animation
    t = time.perf_counter()
    async with app.run_test(size=(100, 40)) as pilot:
        view = app.query_one(ReadingView)
        while view.model is None:
            await pilot.pause(0.001)
        await pilot.pause(0)
        out["first_screen_s"] = time.perf_counter() - t
        out["open_s"] = out["load_s"] + out["plan_s"] + out["first_screen_s"]
        t = time.perf_counter()
        while not app.plan.complete:  # planned in the background
            await pilot.pause(0.05)
        out["whole_plan_s"] = time.perf_counter() - t
        out["utterances"] = len(app.plan)
        t = time.perf_counter()
        while not view.model.complete:  # the whole book wrapped, a slice a tick
            await pilot.pause(0.05)
        out["settle_s"] = time.perf_counter() - t
        times = []
        for _ in range(pages):
            t = time.perf_counter()
            await pilot.press("pagedown")
            times.append(time.perf_counter() - t)
        out["page_ms"] = 1000 * statistics.median(times)
        out["page_worst_ms"] = 1000 * max(times)
        t = time.perf_counter()
        await pilot.press("end")
        out["end_ms"] = 1000 * (time.perf_counter() - t)
        out["display_lines"] = len(view.model)
        await pilot.press("q")
    app.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?")
    ap.add_argument("--mb", type=float, default=5.0)
    ap.add_argument("--pages", type=int, default=200)
    args = ap.parse_args()
    if args.file:
        path = Path(args.file)
    else:
        path = Path(tempfile.mkdtemp()) / "book.md"
        path.write_text(synthetic_book(args.mb))
    result = {"bytes": path.stat().st_size, **asyncio.run(run(path, args.pages))}
    for k, v in result.items():
        print(f"{k:>16}: {v:.3f}" if isinstance(v, float) else f"{k:>16}: {v}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
