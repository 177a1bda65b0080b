"""SpeechPlan: the ordered utterances of a document, with lookups and navigation.

An utterance is a sentence, or a clause-sized piece of a sentence that is too long for good
prosody; sentences are never merged. ``start``/``end`` index ``Document.text`` (the span the
view highlights); ``speak`` is exactly what goes to the engine.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass, replace

from vvreader.document import Block, Document
from vvreader.normalize import PronunciationDictionary, normalize, strip_controls
from vvreader.policy import PlanSettings
from vvreader.segment import split_long, split_sentences
from vvreader.speech_text import Speech, block_speech

__all__ = ["PlanSettings", "SpeechPlan", "Utterance", "build_plan"]


@dataclass(frozen=True, slots=True)
class Utterance:
    """One unit of synthesis and highlighting."""

    index: int
    """Position in the plan."""
    sentence: int
    """Index of the sentence it belongs to (several utterances may share one)."""
    kind: str
    """heading, paragraph, list_item, quote, table, code or footnote."""
    start: int
    """Offset of the span in ``Document.text``."""
    end: int
    """Offset just past the span."""
    text: str
    """``Document.text[start:end]``: the source of the span, markup included."""
    speak: str
    """What is sent to the engine."""
    pause_after: int
    """Milliseconds of silence after it."""
    block: int
    """Index of its block in ``Document.blocks``."""
    paragraph: int
    """Serial number of its paragraph (any block that speaks counts as one)."""
    section: int
    """Its section (0 before the first heading)."""
    heading: int | None
    """Block index of the heading of its section."""
    part: int = 0
    """Which piece of its sentence (0-based)."""
    parts: int = 1
    """How many pieces its sentence was split into."""

    def as_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class SpeechPlan:
    """Utterances in reading order, with lookups by offset and index and navigation."""

    def __init__(self, document: Document, utterances: list[Utterance]) -> None:
        self.document = document
        """The planned document."""
        self.utterances = utterances
        """All utterances, in reading order."""
        self._by_start = sorted(range(len(utterances)), key=lambda i: utterances[i].start)
        self._starts = [utterances[i].start for i in self._by_start]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> Utterance:
        return self.utterances[index]

    def __iter__(self):  # noqa: ANN204 - an iterator of Utterance
        return iter(self.utterances)

    def at_offset(self, offset: int) -> Utterance | None:
        """The utterance whose span holds ``offset``, else the next one in the text."""
        k = bisect_right(self._starts, offset) - 1
        if k >= 0:
            u = self.utterances[self._by_start[k]]
            if u.start <= offset < u.end:
                return u
        if k + 1 < len(self._by_start):
            return self.utterances[self._by_start[k + 1]]
        return None

    def _scan(self, index: int, step: int, key: str) -> int | None:
        """First index from ``index`` in direction ``step`` that starts a new ``key`` group."""
        us = self.utterances
        if not us:
            return None
        index = max(0, min(index, len(us) - 1))
        here = getattr(us[index], key)
        i = index
        while 0 <= i + step < len(us):
            i += step
            if getattr(us[i], key) != here:
                if step > 0:
                    return i
                group = getattr(us[i], key)
                while i > 0 and getattr(us[i - 1], key) == group:
                    i -= 1
                return i
        return None

    def next_sentence(self, index: int) -> int | None:
        """Index of the first utterance of the next sentence."""
        return self._scan(index, 1, "sentence")

    def previous_sentence(self, index: int) -> int | None:
        """Index of the first utterance of the previous sentence."""
        return self._scan(index, -1, "sentence")

    def next_paragraph(self, index: int) -> int | None:
        """Index of the first utterance of the next paragraph."""
        return self._scan(index, 1, "paragraph")

    def previous_paragraph(self, index: int) -> int | None:
        """Index of the first utterance of the previous paragraph."""
        return self._scan(index, -1, "paragraph")

    def next_heading(self, index: int) -> int | None:
        """Index of the next heading utterance after ``index``."""
        for i in range(index + 1, len(self.utterances)):
            if self.utterances[i].kind == "heading":
                return i
        return None

    def previous_heading(self, index: int) -> int | None:
        """Index of the heading utterance before ``index`` (the current section's heading)."""
        for i in range(min(index, len(self.utterances)) - 1, -1, -1):
            if self.utterances[i].kind == "heading":
                return i
        return None


_BLOCK_PAUSE = {"heading": "pause_heading_ms", "list_item": "pause_list_item_ms"}


def _front_matter_dictionary(doc: Document) -> PronunciationDictionary | None:
    """The per-document pronunciation layer from front matter, if any."""
    for b in doc.blocks[:1]:
        if b.kind == "front_matter" and b.tokens:
            d = PronunciationDictionary.from_front_matter(b.tokens[0].content)
            return d if len(d) else None
    return None


def build_plan(
    doc: Document,
    settings: PlanSettings | None = None,
    dictionary: PronunciationDictionary | None = None,
) -> SpeechPlan:
    """Plan how ``doc`` is read aloud.

    Args:
        doc: The parsed document.
        settings: Plan policies (defaults if None).
        dictionary: Global pronunciation rules; the document's front-matter ``pronounce:``
            mapping is layered over them.

    Returns:
        The speech plan.
    """
    settings = settings or PlanSettings()
    local = _front_matter_dictionary(doc)
    if local is not None:
        dictionary = dictionary.layered(local) if dictionary else local
    out: list[Utterance] = []
    state = {"sentence": 0, "paragraph": 0}
    footnotes = {b.footnote: b for b in doc.blocks if b.kind == "footnote"}
    refs_by_section: dict[int, list[str]] = {}
    if settings.footnotes == "section_end":
        for label, offset in doc.footnote_refs.items():
            block = doc.block_at(offset)
            if block is not None and label in footnotes:
                refs_by_section.setdefault(block.section, []).append(label)
    section, heading = 0, None

    def flush_footnotes(sec: int, head: int | None) -> None:
        for label in refs_by_section.get(sec, ()):
            for b in doc.blocks:
                if b.footnote == label and b.kind == "footnote":
                    here = replace(b, section=sec, heading=head)
                    _emit(doc, here, settings, dictionary, out, state)

    for block in doc.blocks:
        if block.kind == "footnote":
            continue
        if block.section != section:
            flush_footnotes(section, heading)
            section, heading = block.section, block.heading
        _emit(doc, block, settings, dictionary, out, state)
    flush_footnotes(section, heading)
    return SpeechPlan(doc, _with_pauses(out, settings))


def _emit(
    doc: Document,
    block: Block,
    settings: PlanSettings,
    dictionary: PronunciationDictionary | None,
    out: list[Utterance],
    state: dict[str, int],
) -> None:
    """Append the utterances of one block."""
    units = block_speech(doc, block, settings)
    spoken_any = False
    for unit in units:
        spans = [(0, len(unit.text))] if unit.whole else split_sentences(unit.text)
        for s, e in spans:
            spoken_any |= _sentence(doc, block, unit, s, e, settings, dictionary, out, state)
    if spoken_any:
        state["paragraph"] += 1


def _sentence(
    doc: Document,
    block: Block,
    unit: Speech,
    s: int,
    e: int,
    settings: PlanSettings,
    dictionary: PronunciationDictionary | None,
    out: list[Utterance],
    state: dict[str, int],
) -> bool:
    """Append one sentence (split for length if needed); False if it had nothing to say."""
    text = unit.text
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if s >= e:
        return False
    pieces = split_long(text, s, e, settings.max_utterance_chars)
    made = []
    for ps, pe in pieces:
        raw = text[ps:pe]
        speak = normalize(raw, dictionary) if settings.normalize else strip_controls(raw).strip()
        if not any(ch.isalnum() for ch in speak):
            continue
        start, end = unit.source_span(ps, pe)
        made.append((start, end, speak))
    for part, (start, end, speak) in enumerate(made):
        out.append(
            Utterance(
                index=len(out),
                sentence=state["sentence"],
                kind=unit.kind,
                start=start,
                end=end,
                text=doc.text[start:end],
                speak=speak,
                pause_after=0,
                block=block.index,
                paragraph=state["paragraph"],
                section=block.section,
                heading=block.heading,
                part=part,
                parts=len(made),
            )
        )
    if made:
        state["sentence"] += 1
    return bool(made)


def _with_pauses(us: list[Utterance], settings: PlanSettings) -> list[Utterance]:
    """Set each utterance's pause from what follows it."""
    result = []
    for i, u in enumerate(us):
        nxt = us[i + 1] if i + 1 < len(us) else None
        if nxt is not None and nxt.sentence == u.sentence:
            pause = settings.pause_clause_ms
        elif nxt is None or nxt.section != u.section or nxt.kind == "heading":
            pause = settings.pause_section_ms if u.kind != "heading" else settings.pause_heading_ms
        elif nxt.paragraph == u.paragraph:
            pause = settings.pause_list_item_ms if u.kind == "table" else settings.pause_sentence_ms
        elif u.kind == "list_item" and nxt.kind != "list_item":
            pause = settings.pause_paragraph_ms
        else:
            pause = getattr(settings, _BLOCK_PAUSE.get(u.kind, "pause_paragraph_ms"))
        result.append(replace(u, pause_after=pause))
    return result
