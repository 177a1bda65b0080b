"""Sentence segmentation with exact character offsets (English rules, linear time).

The splitter follows "when in doubt, don't split": a full stop ends a sentence only when the
next word starts with a capital letter (or an opening quote/bracket before one) and the word
before it is not an abbreviation, an initial or a title. Question and exclamation marks end a
sentence unless a lower-case word follows (``Yahoo! in``). The rules were tuned against the
English Golden Rules of pragmatic_segmenter (see ``tests/fixtures/golden_rules_en.json``):
47 of 48, the same as pySBD 0.3.4 (both fail rule 18, "a.m. Mr."), at about 14 times
pySBD's speed and with offsets by construction (``bench/plan.py``).

Every returned span ``(start, end)`` indexes the input string, is stripped of surrounding
whitespace and never overlaps another, so ``text[start:end]`` gives the sentence back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["split_sentences", "split_long", "sentences"]

#: Titles written before a name: a full stop after them never ends a sentence.
PREFIX_TITLES = frozenset(
    "mr mrs ms messrs mme mlle dr prof st mt ft rev fr gen col capt cpt lt sgt cmdr adm maj "
    "sen rep gov pres hon supt insp det".split()
)

#: Abbreviations that may also end a sentence: a capital letter after them splits.
ABBREVIATIONS = frozenset(
    "co corp inc ltd llc jr sr etc vs esp approx dept univ assn bros ave blvd rd hwy "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat "
    "sun p pp no nos nr vol vols ch chap sec fig figs eq eqs ed eds est ca cf al viz ibid op "
    "cit ff min max hr hrs mins secs approx govt misc tel ext dept intl natl".split()
)

#: Words that commonly start a sentence (used after acronyms such as ``U.S.``).
SENTENCE_STARTERS = frozenset(
    "A Being Did For He How However I In It Millions More She That The There They We What "
    "When Where Who Why This These Those Then But And So If Our My Your His Her Its".split()
)

_TERMINAL = re.compile(
    r"""
    (?P<punct>[.!?\u2026\u203d]+(?:\ \.)*)   # . ! ? … ‽ runs, and spaced ellipses ". . ."
    (?P<close>["'\u201d\u2019\u00bb)\]]*)     # closing quotes and brackets
    (?=\s|$)
    """,
    re.VERBOSE,
)
_ACRONYM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]\Z")
_WORD_CHARS = "_\u00b0$'\u2019@/:.-"  # with letters and digits: a word before a full stop
_OPENERS = "\"'\u201c\u2018\u00ab([{*_\u00bf\u00a1"
_NEXT_WORD = re.compile(r"\s*[" + re.escape(_OPENERS) + r"]*((?:[^\W_]|['\u2019])*)")
# An inline list marker ("1.", "b)", "• 2.)") at the start of the text or after a space;
# the second form starts with the space, which lets the regex engine skip ahead quickly.
_MARKER = r"(?P<bullet>[\u2022\u2043]\s?)?(?P<label>\d{1,3}|[a-z])(?P<punct>\.\)|\)|\.)(?=\s+[A-Z])"
_LIST_MARKER_FIRST = re.compile(_MARKER)
_LIST_MARKER = re.compile(r"\s" + _MARKER)
_SPACE = re.compile(r"\s")


def _next_word(text: str, pos: int) -> str:
    """The word after ``pos`` (skipping whitespace and opening punctuation)."""
    m = _NEXT_WORD.match(text, pos)
    word = m.group(1)
    if word:
        return word
    at = m.start(1)
    return text[at : at + 1]


def _word_before(text: str, end: int) -> str:
    """The run of word characters (letters, digits and ``_°$'’@/:.-``) ending at ``end``."""
    i = end
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in _WORD_CHARS):
        i -= 1
    return text[i:end]


def _previous_token(text: str, end: int) -> str:
    """The whitespace-separated token that ends before ``end`` (trailing spaces skipped)."""
    while end > 0 and text[end - 1].isspace():
        end -= 1
    i = end
    while i > 0 and not text[i - 1].isspace():
        i -= 1
    return text[i:end]


def _list_markers(text: str) -> dict[int, int]:
    """Enumerated inline list markers (``1.) x 2.) y``, ``a. x b. y``) as {start: punct end}.

    Only runs of at least two consecutive labels (1, 2, … or a, b, …) count, which keeps
    ``for 1. above`` or ``Jonas E. Smith`` out.
    """
    found = []
    pos = 0
    first = _LIST_MARKER_FIRST.match(text)
    if first:
        found.append((0, first.end(), first.group("label"), first.group("punct")))
        pos = first.end()
    found.extend(
        (m.start() + 1, m.end(), m.group("label"), m.group("punct"))
        for m in _LIST_MARKER.finditer(text, pos)
    )
    if len(found) < 2:
        return {}

    def ordinal(label: str) -> int:
        return int(label) if label.isdigit() else ord(label) - ord("a") + 1

    keep: dict[int, int] = {}
    for (s0, e0, l0, p0), (s1, e1, l1, p1) in zip(found, found[1:], strict=False):
        if p0 == p1 and l0.isdigit() == l1.isdigit() and ordinal(l1) == ordinal(l0) + 1:
            keep[s0] = e0
            keep[s1] = e1
    return keep


def _is_boundary(text: str, m: re.Match[str]) -> int | None:
    """Where a sentence ends for the terminal match ``m``, or None if it does not end there."""
    punct = m.group("punct")
    start, end = m.start(), m.end()
    nxt = _next_word(text, end)
    if not nxt:
        return end
    upper = nxt[0].isupper()
    first = punct[0]
    if first in "!?\u203d":
        return end if (upper or nxt[0].isdigit() or not nxt[0].isalpha()) else None
    if start > 0 and text[start - 1] in "[(" and m.group("close")[:1] in "])":
        return None  # an omission mark such as "[...]"
    dots = punct.count(".") + 3 * punct.count("\u2026")
    if " " in punct:
        if start > 0 and not text[start - 1].isspace():
            # "compounds. . . . The": the sentence ends at the first dot.
            return start + 1 if upper else None
        return end if (upper and dots >= 4) else None
    if not upper:
        return None
    if dots > 1:
        return end  # "that.... She", "so... Then"
    word = _word_before(text, start).lstrip("'\u2019(\"-")
    if not word:
        return end
    if _ACRONYM.match(word):  # U.S., e.g., a.m., J.C.
        return end if nxt in SENTENCE_STARTERS else None
    low = word.lower()
    if low in PREFIX_TITLES:
        return None
    if len(word) == 1 and word.isalpha():
        if word.isupper():
            # An initial follows a capitalised first name ("Jonas E. Smith");
            # "you and I. Did" is the pronoun.
            prev = _previous_token(text, start - 1)
            if prev[:1].isupper() and prev.isalpha():
                return None
            return end
        return end
    return end


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` into sentences.

    Args:
        text: The text; offsets refer to it.
        start: Where the region to split begins.
        end: Where it ends (default: the end of ``text``).

    Returns:
        ``(start, end)`` spans into ``text``, in order, stripped of surrounding whitespace.
        Whitespace-only regions give no span.
    """
    if end is None:
        end = len(text)
    region = text[start:end]
    markers = _list_markers(region)
    cuts = [s for s in markers if s > 0]
    marker_ends = set(markers.values())
    for m in _TERMINAL.finditer(region):
        if m.end() in marker_ends:
            continue
        cut = _is_boundary(region, m)
        if cut is not None and cut < len(region):
            cuts.append(cut)
    cuts.sort()
    spans: list[tuple[int, int]] = []
    prev = 0
    for cut in [*cuts, len(region)]:
        if cut <= prev:
            continue
        s, e = _strip(region, prev, cut)
        if s < e:
            spans.append((start + s, start + e))
        prev = cut
    return spans


def _strip(text: str, s: int, e: int) -> tuple[int, int]:
    """Shrink ``[s, e)`` so that it neither starts nor ends with whitespace."""
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    return s, e


_CLAUSE_BREAKS = (
    re.compile(r"[;:\u2014\u2013](?=\s)|\s[\u2014\u2013]\s|\u2014|--"),
    re.compile(r",(?=\s)"),
    re.compile(r"\s(?=(?:and|but|or|so|because|which|while|whereas|although|though)\s)"),
    _SPACE,
)


def split_long(
    text: str, start: int, end: int, limit: int, minimum: int | None = None
) -> list[tuple[int, int]]:
    """Split one sentence longer than ``limit`` characters at clause boundaries.

    Breaks are tried in order of strength: ``; : —``, then commas, then before a
    conjunction, then any space; a piece with no break at all is cut at ``limit``.

    Args:
        text: The text; offsets refer to it.
        start: Sentence start.
        end: Sentence end.
        limit: Longest piece wanted, in characters.
        minimum: Shortest piece worth making (default ``limit // 4``).

    Returns:
        Stripped ``(start, end)`` spans covering the sentence in order.
    """
    if limit <= 0 or end - start <= limit:
        return [(start, end)]
    minimum = max(1, limit // 4 if minimum is None else minimum)
    pieces: list[tuple[int, int]] = []
    pos = start
    while end - pos > limit:
        cut = None
        for pattern in _CLAUSE_BREAKS:
            best = None
            for m in pattern.finditer(text, pos + minimum, pos + limit):
                best = m.end() if m.group().strip() else m.start() + 1
            if best is not None:
                cut = best
                break
        if cut is None:
            cut = pos + limit
        s, e = _strip(text, pos, cut)
        if s < e:
            pieces.append((s, e))
        pos = cut
    s, e = _strip(text, pos, end)
    if s < e:
        pieces.append((s, e))
    return pieces


def sentences(text: str) -> Iterator[str]:
    """Yield the sentences of ``text`` as strings (a convenience for scoring and tests)."""
    for s, e in split_sentences(text):
        yield text[s:e]
