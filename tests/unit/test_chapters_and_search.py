"""The part being read as the plan grows, and search from the cursor's sentence."""

from __future__ import annotations

from vvreader.screens.search import DocumentSearch
from vvreader.text.chapters import ChapterIndex
from vvreader.text.plan import build_plan
from vvreader.text.readers import parse

DOC = "# One\n\nA cat sat. A dog ran.\n\n# Two\n\nThe cat again.\n"


def test_chapter_index_follows_a_growing_plan() -> None:
    whole = build_plan(parse(DOC))
    first = build_plan(parse("# One\n\nA cat sat. A dog ran.\n"))
    speak = [u.speak for u in whole]
    index = ChapterIndex()
    assert index.at(first, speak.index("A dog ran.")) == "One"
    assert index.at(whole, speak.index("The cat again.")) == "Two"  # built again: grown
    assert index.at(whole, speak.index("A cat sat.")) == "One"


def test_search_from_the_cursor_and_again_past_it() -> None:
    plan = build_plan(parse(DOC))
    speak = [u.speak for u in plan]
    search = DocumentSearch()
    search.query = "CAT"
    first, again = speak.index("A cat sat."), speak.index("The cat again.")
    assert search.from_cursor(plan, first) == first  # a new query matches the cursor's own
    assert search.from_cursor(plan, first, again=True) == again
    assert search.from_cursor(plan, again, again=True) == first  # wraps around
    search.query = "horse"
    assert search.from_cursor(plan, first) is None
    empty = build_plan(parse(""))
    assert search.from_cursor(empty, 0) is None and search.from_cursor(empty, 0, again=True) is None
