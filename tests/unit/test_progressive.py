"""ProgressivePlan: every partial plan is a prefix of the whole plan, and it ends equal to it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vvreader.text.files import DocumentError
from vvreader.text.plan import PlanSettings, ProgressivePlan, SpeechPlan, build_plan
from vvreader.text.readers import parse

SAMPLE = Path(__file__).parents[1] / "fixtures" / "sample.md"
CHAPTER = (
    "# Chapter\n\nIt was *late*. Mr. Smith left at 5 p.m. and said: \u201cBye!\u201d See "
    "[the notes](http://example.com/n).\nA wrapped line, e.g. this one.\n\n- one\n- two\n\n"
    "| H | I |\n|---|---|\n| a | b |\n\n```sh\necho hi\n\n# a comment\n```\n\n> Quoted text.\n\n"
)
NOTES = (
    "# One\n\nCites a[^a] and a [ref][r].\n\n## Two\n\nPlain.\n\n"
    + "# Filler\n\nWords and more words.\n\n" * 40
    + "# Three\n\nCites b[^b].\n\n[^a]: Note a, with a list:\n\n    - x\n    - y\n\n"
    "[^b]: Note b.\n\n[r]: http://r.org\n"
)
SETTINGS = [
    PlanSettings(),
    PlanSettings(
        footnotes="skip", tables="skip", code="read", normalize=False, max_utterance_chars=30
    ),
]


def _steps(progress: ProgressivePlan) -> list[SpeechPlan]:
    plans = [progress.plan]
    while progress.step():
        plans.append(progress.plan)
    plans.append(progress.plan)
    return plans


@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize(
    "text",
    [SAMPLE.read_text("utf-8"), CHAPTER * 30, NOTES, NOTES.replace("\n", "\r\n"), "", "Word."],
    ids=["sample", "chapters", "notes", "notes-crlf", "empty", "one-word"],
)
@pytest.mark.parametrize(("first", "part"), [(1, 1), (50, 400), (32_000, 256_000)])
def test_partial_plans_are_prefixes_of_the_whole_plan(text, settings, first, part):
    whole_doc = parse(text)
    whole = build_plan(whole_doc, settings)
    progress = ProgressivePlan(text, settings=settings, first_chars=first, part_chars=part)
    plans = _steps(progress)
    for plan in plans[:-1]:
        assert plan.utterances == whole.utterances[: len(plan)]
        assert plan.document.blocks == whole_doc.blocks[: len(plan.document.blocks)]
        assert plan.document.text == text and plan.document.line_starts == whole_doc.line_starts
    final = plans[-1]
    assert progress.done and final.complete
    assert final.utterances == whole.utterances
    assert final.document == whole_doc
    assert all(
        tok.children is not None
        for b in final.document.blocks
        for tok in b.tokens
        if tok.type == "inline"
    )


def test_first_part_of_a_big_book_comes_alone():
    text = CHAPTER * 3000  # about 0.7 MB
    progress = ProgressivePlan(text)
    plan = progress.advance()
    assert not plan.complete and not progress.done
    assert 0 < len(plan) and plan.document.blocks[-1].end < len(text) // 10
    assert plan.at_offset(0) is plan[0]


def test_text_that_may_use_a_later_definition_waits_for_it():
    progress = ProgressivePlan(NOTES, first_chars=10, part_chars=10)
    for _ in range(3):
        progress.step()
    # The heading is planned; the paragraph with "[" waits for the definitions at the end,
    # and the heading's utterance for the one after it (which decides its pause).
    assert len(progress.document.blocks) == 1 and len(progress.plan) == 0
    plan = progress.advance(2)
    assert [u.speak for u in plan][:2] == ["One.", "Cites a and a ref."]
    assert progress.result().utterances == build_plan(parse(NOTES)).utterances


def test_plain_text_and_open(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("First line\nwrapped.\n\nSecond paragraph. Two sentences.\n", "utf-8")
    progress = ProgressivePlan.open(str(path))
    assert progress.document.markdown is False
    whole = build_plan(parse(path.read_text("utf-8"), name=str(path), markdown=False))
    plan = progress.result()
    assert plan.utterances == whole.utterances and plan.document == whole.document
    with pytest.raises(DocumentError):
        ProgressivePlan.open(str(tmp_path / "missing.md"))


def test_background_thread_updates_and_result():
    text = CHAPTER * 400
    updates: list[int] = []
    seen_threads: set[str] = set()

    def on_update(progress: ProgressivePlan) -> None:
        updates.append(len(progress.plan))
        seen_threads.add(threading.current_thread().name)

    progress = ProgressivePlan(text, first_chars=2000, part_chars=8000)
    first = progress.advance()
    thread = progress.start(on_update)
    assert progress.start() is thread
    plan = progress.result(timeout=120)
    assert plan.complete and plan.utterances == build_plan(parse(text)).utterances
    assert plan.utterances[: len(first)] == first.utterances
    assert updates and updates == sorted(updates) and updates[-1] == len(plan)
    assert seen_threads == {"vvreader-plan"}


def test_cancel_stops_the_worker():
    progress = ProgressivePlan(CHAPTER * 2000, first_chars=1000, part_chars=1000)
    stop = threading.Event()

    def on_update(p: ProgressivePlan) -> None:
        p.cancel()
        stop.set()

    progress.start(on_update)
    assert stop.wait(60)
    with pytest.raises(RuntimeError, match="cancelled"):
        progress.result(timeout=60)
    assert not progress.done and not progress.plan.complete


def test_worker_errors_reach_result(monkeypatch):
    progress = ProgressivePlan(CHAPTER)

    def boom() -> bool:
        raise ValueError("bad part")

    monkeypatch.setattr(progress, "step", boom)
    progress.start()
    with pytest.raises(ValueError, match="bad part"):
        progress.result(timeout=60)
