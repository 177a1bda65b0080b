"""SpeechPlan: the ordered utterances of a document, with lookups and navigation.

An utterance is a sentence, or a clause-sized piece of a sentence that is too long for good
prosody; sentences are never merged. ``start``/``end`` index ``Document.text`` (the span the
view highlights); ``speak`` is exactly what goes to the engine.

``build_plan(doc)`` plans a parsed document at once. ``ProgressivePlan`` parses and plans a
text a part at a time, so that a large book can be shown and read at once while the rest
is planned::

    progress = ProgressivePlan.open("book.md")   # or ProgressivePlan(text, markdown=True)
    plan = progress.advance()       # the first part: a few milliseconds
    progress.start(on_update)       # the rest on a background thread
    ...
    plan = progress.plan            # the latest plan (``plan.complete`` once all is done)
    full = progress.result()        # wait for the whole plan

Every plan it gives is a prefix of the whole one: utterance ``i`` of a partial plan is equal,
field for field, to utterance ``i`` of ``build_plan(parse(text))``, and its document holds
the first blocks of ``parse(text)`` (same text and line starts, the same ``Block`` values).
The whole plan and document it ends with are equal to those of ``build_plan(parse(text))``.
An utterance is only given once the one after it is known (its pause depends on it), and
text that may use a link or footnote defined further on waits until that part is parsed
(see ``vvreader.text.markdown``). ``on_update(progress)`` is called on the worker thread
after each part; a Textual app hands it on with ``call_from_thread``.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from vvreader.text.document import Block, BookInfo, Document, gc_paused, line_starts_of
from vvreader.text.normalize import PronunciationDictionary, normalize, strip_controls
from vvreader.text.readers import BlockReader, open_reader, read_source
from vvreader.text.segment import split_long, split_sentences
from vvreader.text.settings import PlanSettings
from vvreader.text.speech import Speech, block_speech

__all__ = ["PlanSettings", "ProgressivePlan", "SpeechPlan", "Utterance", "build_plan"]


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
    note: bool = False
    """A book's note (EPUB or HTML): not read in turn, only when asked for from the
    sentence that cites it (see :meth:`SpeechPlan.following`). A Markdown footnote is read
    in turn and is not a note in this sense."""

    def as_dict(self) -> dict[str, object]:
        """The fields as a JSON-ready dict (``note`` only on a book's notes, so that a plan
        without notes reads as it always did)."""
        fields = asdict(self)
        if not self.note:
            del fields["note"]
        return fields


class SpeechPlan:
    """Utterances in reading order, with lookups by offset and index and navigation."""

    def __init__(
        self,
        document: Document,
        utterances: list[Utterance],
        complete: bool = True,
        footnotes: Mapping[int, str] | None = None,
    ) -> None:
        self.document = document
        """The planned document."""
        self.utterances = utterances
        """All utterances, in reading order."""
        self.complete = complete
        """False for the first part of a plan that ``ProgressivePlan`` is still building."""
        self._footnotes = footnotes if footnotes is not None else {}
        """Block index to footnote label of the footnote bodies planned (a partial plan's
        document may not hold those blocks yet)."""
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

    # -- a book's notes -------------------------------------------------------------------

    def footnote(self, index: int) -> str | None:
        """The label of the footnote whose body utterance ``index`` reads (None: not one)."""
        if not 0 <= index < len(self.utterances):
            return None
        block = self.utterances[index].block
        label = self._footnotes.get(block)
        if label is None and block < len(self.document.blocks):
            label = self.document.blocks[block].footnote
        return label

    def note_at(self, index: int) -> range | None:
        """The utterances of the book's note that utterance ``index`` is in (None when it
        is in the text)."""
        us = self.utterances
        if not 0 <= index < len(us) or not us[index].note:
            return None
        label = self.footnote(index)
        first, last = index, index
        while first > 0 and us[first - 1].note and self.footnote(first - 1) == label:
            first -= 1
        while last + 1 < len(us) and us[last + 1].note and self.footnote(last + 1) == label:
            last += 1
        return range(first, last + 1)

    # -- moving -----------------------------------------------------------------------------
    #
    # Every move keeps to what is being read: in the text a book's notes are passed over (they
    # are read only when asked for); in a note, the move stays in that note, and out of its
    # end leads back to the text after the sentence citing it (``cited_at``, when the note is
    # read from there; else the first sentence of the text citing it, for a note come to by
    # hand), as reading on does (:meth:`following`).

    def _scan(self, index: int, step: int, key: str, cited_at: int | None) -> int | None:
        """First index from ``index`` in direction ``step`` that starts a new ``key`` group
        of what is being read (see above)."""
        us = self.utterances
        if not us:
            return None
        index = max(0, min(index, len(us) - 1))
        note = self.note_at(index)
        lo, hi = (note.start, note.stop) if note is not None else (0, len(us))
        in_note = note is not None
        here = getattr(us[index], key)
        i = index
        while lo <= i + step < hi:
            i += step
            if us[i].note != in_note:
                continue  # a note, passed over in the text
            if getattr(us[i], key) != here:
                if step < 0:
                    group = getattr(us[i], key)
                    while i > lo and us[i - 1].note == in_note and getattr(us[i - 1], key) == group:
                        i -= 1
                return i
        if note is None:
            return None
        if step > 0:
            after = self._after_note(note, cited_at)
            return after if after < len(us) else None
        if cited_at is not None and 0 <= cited_at < len(us):
            return cited_at
        # A note come to by hand: out of its start into the text before it.
        i = note.start - 1
        while i >= 0 and us[i].note:
            i -= 1
        if i < 0:
            return None
        group = getattr(us[i], key)
        while i > 0 and not us[i - 1].note and getattr(us[i - 1], key) == group:
            i -= 1
        return i

    def next_sentence(self, index: int, cited_at: int | None = None) -> int | None:
        """Index of the first utterance of the next sentence (see *moving* above)."""
        return self._scan(index, 1, "sentence", cited_at)

    def previous_sentence(self, index: int, cited_at: int | None = None) -> int | None:
        """Index of the first utterance of the previous sentence (see *moving* above)."""
        return self._scan(index, -1, "sentence", cited_at)

    def next_paragraph(self, index: int, cited_at: int | None = None) -> int | None:
        """Index of the first utterance of the next paragraph (see *moving* above)."""
        return self._scan(index, 1, "paragraph", cited_at)

    def previous_paragraph(self, index: int, cited_at: int | None = None) -> int | None:
        """Index of the first utterance of the previous paragraph (see *moving* above)."""
        return self._scan(index, -1, "paragraph", cited_at)

    def skip_notes(self, index: int) -> int:
        """``index``, or the first utterance after it that is not a book's note
        (``len(self)`` when only notes follow)."""
        us = self.utterances
        while index < len(us) and us[index].note:
            index += 1
        return index

    def citing(self, index: int) -> int | None:
        """The utterance of the text whose sentence cites the book's note that utterance
        ``index`` is in: the first in the text holding its reference (None when ``index``
        is not in a note or nothing planned cites it)."""
        us = self.utterances
        if not 0 <= index < len(us) or not us[index].note:
            return None
        label = self.footnote(index)
        if label is None:
            return None
        text = self.document.text
        ref = f"[^{label}]"
        at = text.find(ref)
        while at >= 0:
            # The last utterance starting at or before the reference holds it (or ends just
            # before it, for a reference after the sentence's full stop); one in a note
            # (a note citing another) is not the text.
            found = None
            for u in us:
                if u.start > at:
                    break
                found = u
            if found is not None and not found.note:
                return found.index
            at = text.find(ref, at + len(ref))
        return None

    def _after_note(self, note: range, cited_at: int | None) -> int:
        """The utterance read after the end of the book's note ``note``: the text after the
        sentence citing it (``cited_at`` when it was read from there, else
        :meth:`citing`), or after the note itself when nothing cites it."""
        back = cited_at if cited_at is not None and 0 <= cited_at < len(self) else None
        if back is None:
            back = self.citing(note.start)
        if back is None:
            return self.skip_notes(note.stop)
        return self.following(back)

    def following(self, index: int, cited_at: int | None = None) -> int:
        """The utterance read after ``index`` in turn (``len(self)`` past the end): the next
        one, passing over a book's notes. In a note (read from the sentence ``cited_at``, or
        come to by hand), the note reads on to its end, then the text after the sentence
        citing it (see *moving* above), never the notes after it."""
        us = self.utterances
        if 0 <= index < len(us) and us[index].note:
            note = self.note_at(index)
            if note is not None and index + 1 < note.stop:
                return index + 1
            if note is not None:
                return self._after_note(note, cited_at)
        return self.skip_notes(index + 1)

    def next_heading(self, index: int, cited_at: int | None = None) -> int | None:
        """Index of the next heading utterance after ``index`` (a heading is never in a
        note, so ``cited_at`` changes nothing)."""
        for i in range(index + 1, len(self.utterances)):
            if self.utterances[i].kind == "heading":
                return i
        return None

    def previous_heading(self, index: int, cited_at: int | None = None) -> int | None:
        """Index of the heading utterance before ``index`` (the current section's heading;
        ``cited_at`` changes nothing)."""
        for i in range(min(index, len(self.utterances)) - 1, -1, -1):
            if self.utterances[i].kind == "heading":
                return i
        return None


_BLOCK_PAUSE = {"heading": "pause_heading_ms", "list_item": "pause_list_item_ms"}
_ALNUM = re.compile(r"[^\W_]")  # str.isalnum, as a search


def _front_matter_dictionary(blocks: Sequence[Block]) -> PronunciationDictionary | None:
    """The per-document pronunciation layer from front matter, if any."""
    for b in blocks[:1]:
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
    planner = _Planner(doc, settings or PlanSettings(), dictionary)
    with gc_paused():
        planner.run(_WholeDocument(doc))
        return SpeechPlan(doc, planner.utterances, footnotes=planner.footnotes)


class _WholeDocument:
    """A parsed document as a block reader: everything is final."""

    done = True
    footnotes_settled = True

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.blocks = doc.blocks
        self.footnote_refs = doc.footnote_refs
        self.link_labels = doc.link_labels
        self._notes: dict[str, list[Block]] = {}
        for b in doc.blocks:
            if b.kind == "footnote":
                self._notes.setdefault(b.footnote or "", []).append(b)
        self.footnote_labels = frozenset(self._notes)

    def parse_inline(self, block: Block) -> bool:
        return True

    def footnote_blocks(self, label: str) -> list[Block] | None:
        return self._notes.get(label, [])

    def section_at(self, offset: int) -> int | None:
        block = self.doc.block_at(offset)
        return None if block is None else block.section


# Fields of a planned utterance before its index and pause are known.
_Row = tuple[int, str, int, int, str, int, int, int, "int | None", int, int, bool]


class _Planner:
    """Turns blocks into utterances in reading order, as far as its source allows.

    Footnotes cited in a section are planned at the section's end (a book's notes there are
    marked ``note``: they are read only when asked for); an utterance is finished
    (given its index and pause) once the next one is known.
    """

    def __init__(
        self,
        doc: Document,
        settings: PlanSettings,
        dictionary: PronunciationDictionary | None,
    ) -> None:
        self.doc = doc  # for block_speech: text, markdown, line_starts
        self.settings = settings
        self.utterances: list[Utterance] = []
        self.pos = 0
        """Blocks consumed."""
        self.complete = False
        self._global = dictionary
        self._dictionary: PronunciationDictionary | None = None
        self._started = False
        self._rows: list[_Row] = []
        self._sentence = 0
        self._paragraph = 0
        self._section = 0
        self._heading: int | None = None
        self._notes_by_section: dict[int, list[tuple[int, str]]] = {}
        self._notes_apart = doc.book is not None  # a book's notes are read only when asked
        self.footnotes: dict[int, str] = {}
        """Block index to label of each footnote body planned."""
        self.more_follows = False
        """The document is the beginning of a longer one (a book read in parts): its end is
        not the end, so its last utterance and section are never finished here."""
        self._pending_refs: list[tuple[int, int, str]] | None = None  # (offset, order, label)

    def run(self, source: BlockReader, budget: int | None = None) -> bool:
        """Plan the blocks the source has made final (and finish if it is done).

        Args:
            source: Where the blocks come from.
            budget: Stop after blocks with about this many characters (None: no limit).

        Returns:
            Whether any block was planned or the plan was completed.
        """
        if self.complete:
            return False
        blocks = source.blocks
        if not self._started:
            if not blocks and not source.done:
                return False
            self._start(blocks)
        first = self.pos
        chars = 0
        while self.pos < len(blocks):
            if budget is not None and chars >= budget:
                break
            block = blocks[self.pos]
            if not source.parse_inline(block):
                break
            if block.kind != "footnote":
                if block.section != self._section:
                    if not self._flush(source):
                        break
                    self._section, self._heading = block.section, block.heading
                self._emit(block)
            chars += block.end - block.start
            self.pos += 1
        else:
            if source.done and not self.more_follows and self._flush(source):
                self._finish(last=True)
                self.complete = True
                return True
        self._finish(last=False)
        return self.pos > first

    def _start(self, blocks: Sequence[Block]) -> None:
        local = _front_matter_dictionary(blocks)
        dictionary = self._global
        if local is not None:
            dictionary = dictionary.layered(local) if dictionary else local
        self._dictionary = dictionary
        self._started = True

    # -- footnotes ------------------------------------------------------------------------

    def _flush(self, source: BlockReader) -> bool:
        """Read the footnotes first cited in the current section; False to wait for them."""
        if self.settings.footnotes != "section_end" or not source.footnotes_settled:
            return True  # unsettled: no block read so far can cite a footnote
        labels = self._section_notes(source, self._section)
        bodies = []
        for label in labels:
            found = source.footnote_blocks(label)
            if found is None:
                return False
            bodies.extend(found)
        for b in bodies:
            if not source.parse_inline(b):  # pragma: no cover - settled means parsed
                return False
        for b in bodies:
            self.footnotes[b.index] = b.footnote or ""
            self._emit(replace(b, section=self._section, heading=self._heading))
        self._notes_by_section.pop(self._section, None)
        return True

    def _section_notes(self, source: BlockReader, section: int) -> list[str]:
        """Labels whose first reference lies in ``section``, in reference order."""
        if self._pending_refs is None:
            self._pending_refs = sorted(
                (offset, order, label)
                for order, (label, offset) in enumerate(source.footnote_refs.items())
                if label in source.footnote_labels
            )
            self._pending_refs.reverse()
        pending = self._pending_refs
        blocks = source.blocks
        built_end = blocks[self.pos - 1].end if self.pos else 0
        while pending and pending[-1][0] < built_end:
            offset, order, label = pending.pop()
            sec = source.section_at(offset)
            if sec is not None:
                self._notes_by_section.setdefault(sec, []).append((order, label))
        return [label for _, label in sorted(self._notes_by_section.get(section, ()))]

    # -- utterances -----------------------------------------------------------------------

    def _emit(self, block: Block) -> None:
        """Plan the utterances of one block."""
        spoken_any = False
        for unit in block_speech(self.doc, block, self.settings):
            spans = [(0, len(unit.text))] if unit.whole else split_sentences(unit.text)
            for s, e in spans:
                spoken_any |= self._sentence_rows(block, unit, s, e)
        if spoken_any:
            self._paragraph += 1

    def _sentence_rows(self, block: Block, unit: Speech, s: int, e: int) -> bool:
        """Plan one sentence (split for length if needed); False if it says nothing."""
        text = unit.text
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s >= e:
            return False
        settings = self.settings
        made = []
        for ps, pe in split_long(text, s, e, settings.max_utterance_chars):
            raw = text[ps:pe]
            if settings.normalize:
                speak = normalize(raw, self._dictionary)
            else:
                speak = strip_controls(raw).strip()
            if _ALNUM.search(speak) is None:
                continue
            start, end = unit.source_span(ps, pe)
            made.append((start, end, speak))
        sentence, kind, n = self._sentence, unit.kind, len(made)
        note = self._notes_apart and block.kind == "footnote"
        for part, (start, end, speak) in enumerate(made):
            self._rows.append(
                (
                    sentence,
                    kind,
                    start,
                    end,
                    speak,
                    block.index,
                    self._paragraph,
                    block.section,
                    block.heading,
                    part,
                    n,
                    note,
                )
            )
        if made:
            self._sentence += 1
        return bool(made)

    def _finish(self, last: bool) -> None:
        """Give index and pause to every row whose successor is known (all if ``last``)."""
        rows = self._rows
        n = len(rows) if last else len(rows) - 1
        if n <= 0:
            return
        s = self.settings
        out = self.utterances
        text = self.doc.text
        for i in range(n):
            u = rows[i]
            nxt = rows[i + 1] if i + 1 < len(rows) else None
            kind = u[1]
            if nxt is not None and nxt[0] == u[0]:
                pause = s.pause_clause_ms
            elif nxt is None or nxt[7] != u[7] or nxt[1] == "heading" or nxt[11] > u[11]:
                # A book's notes come at the end of a section and are passed over in turn.
                pause = s.pause_section_ms if kind != "heading" else s.pause_heading_ms
            elif nxt[6] == u[6]:
                pause = s.pause_list_item_ms if kind == "table" else s.pause_sentence_ms
            elif kind == "list_item" and nxt[1] != "list_item":
                pause = s.pause_paragraph_ms
            else:
                pause = getattr(s, _BLOCK_PAUSE.get(kind, "pause_paragraph_ms"))
            out.append(
                Utterance(
                    len(out),
                    u[0],
                    kind,
                    u[2],
                    u[3],
                    text[u[2] : u[3]],
                    u[4],
                    pause,
                    u[5],
                    u[6],
                    u[7],
                    u[8],
                    u[9],
                    u[10],
                    u[11],
                )
            )
        del rows[:n]


class ProgressivePlan:
    """Parse and plan a document a part at a time (see the module docstring).

    Args:
        text: The decoded document text.
        name: Where it came from.
        encoding: The encoding it was decoded from.
        markdown: Parse it as Markdown (else as plain text).
        settings: Plan policies (defaults if None).
        dictionary: Global pronunciation rules (as for ``build_plan``).
        first_chars: Size of the first part parsed (later parts grow to ``part_chars``).
        part_chars: Largest part parsed in one step (a step plans a quarter of that).
        book: An EPUB's or HTML page's ``BookInfo`` (kept on the document).
    """

    def __init__(
        self,
        text: str,
        *,
        name: str = "<text>",
        encoding: str = "utf-8",
        markdown: bool = True,
        settings: PlanSettings | None = None,
        dictionary: PronunciationDictionary | None = None,
        first_chars: int = 32_000,
        part_chars: int = 256_000,
        book: BookInfo | None = None,
        rest: Callable[[], tuple[str, BookInfo]] | None = None,
    ) -> None:
        self._settings = settings or PlanSettings()
        self._dictionary = dictionary
        self._sizes = (first_chars, part_chars)
        self._doc, self._source, self._planner = self._open(text, name, encoding, markdown, book)
        self._planner.more_follows = rest is not None
        self._rest = rest
        self._budget = max(1, part_chars // 4)  # characters planned per step
        self._lock = threading.Lock()  # one step at a time
        self._published = (0, 0, False)  # blocks, utterances, complete
        self._cache: SpeechPlan | None = None
        self._thread: threading.Thread | None = None
        self._cancelled = threading.Event()
        self._finished = threading.Event()
        self._error: BaseException | None = None

    def _open(
        self, text: str, name: str, encoding: str, markdown: bool, book: BookInfo | None
    ) -> tuple[Document, BlockReader, _Planner]:
        starts = tuple(line_starts_of(text))
        doc = Document(text, (), name, encoding, markdown, {}, starts, book=book)
        source = open_reader(text, starts, markdown, *self._sizes)
        return doc, source, _Planner(doc, self._settings, self._dictionary)

    @classmethod
    def open(
        cls,
        path: str,
        encoding: str | None = None,
        markdown: bool | None = None,
        settings: PlanSettings | None = None,
        dictionary: PronunciationDictionary | None = None,
    ) -> ProgressivePlan:
        """Read and decode a file (or ``-`` for stdin, or a book) as ``load_document`` does.

        Raises:
            DocumentError: the file cannot be read, decoded or is not text.
        """
        src = read_source(path, encoding, markdown)
        return cls(
            src.text,
            name=src.name,
            encoding=src.encoding,
            markdown=src.markdown,
            settings=settings,
            dictionary=dictionary,
            book=src.book,
            rest=src.rest,
        )

    # -- work -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether the whole plan is built."""
        return self._published[2]

    def step(self) -> bool:
        """Parse and plan one more part.

        Returns:
            False once the whole plan is built.
        """
        with self._lock, gc_paused():
            planner, source = self._planner, self._source
            if not self._work(planner, source) and self._rest is not None:
                planner = self._grow()  # the beginning is planned as far as it can be
            complete = planner.complete
            self._published = (planner.pos, len(planner.utterances), complete)
            return not complete

    def _work(self, planner: _Planner, source: BlockReader) -> bool:
        """Plan on, parsing another part when the planner has caught up; False when
        nothing moved (the source is done and the planner can go no further)."""
        if planner.run(source, self._budget):
            return True
        if source.done:
            return False
        source.step()  # the planner has caught up (or waits): parse another part
        planner.run(source, self._budget)
        return True

    def _grow(self) -> _Planner:
        """Take the whole text of a book read in parts (it starts with the text so far),
        plan it as far as the plan so far, then go on with it."""
        rest, self._rest = self._rest, None
        assert rest is not None
        text, book = rest()
        base = self._doc
        doc, source, planner = self._open(text, base.name, base.encoding, base.markdown, book)
        blocks, utterances = self._planner.pos, len(self._planner.utterances)
        while not planner.complete and (
            planner.pos < blocks or len(planner.utterances) < utterances
        ):
            self._work(planner, source)
        self._doc, self._source, self._planner = doc, source, planner
        return planner

    def advance(self, utterances: int = 1) -> SpeechPlan:
        """Work until the plan has at least ``utterances`` utterances (or is complete).

        Returns:
            The plan so far (``plan``).
        """
        while self._published[1] < utterances and self.step():
            pass
        return self.plan

    def start(self, on_update: Callable[[ProgressivePlan], None] | None = None) -> threading.Thread:
        """Finish the plan on a daemon thread; ``on_update(self)`` runs there after each part.

        Returns:
            The thread (already started; calling ``start`` again returns it).
        """
        if self._thread is not None:
            return self._thread

        def work() -> None:
            try:
                last = self._published
                while not self._cancelled.is_set() and self.step():
                    if on_update is not None and self._published != last:
                        last = self._published
                        on_update(self)
                if on_update is not None and self._published != last:
                    on_update(self)
            except BaseException as err:  # handed to result()
                self._error = err
            finally:
                self._finished.set()

        self._thread = threading.Thread(target=work, name="vvreader-plan", daemon=True)
        self._thread.start()
        return self._thread

    def cancel(self) -> None:
        """Stop the background work after the current part."""
        self._cancelled.set()

    def result(self, timeout: float | None = None) -> SpeechPlan:
        """The whole plan: wait for the worker, or do the work here if none was started.

        Raises:
            TimeoutError: the worker did not finish within ``timeout`` seconds.
        """
        if self._thread is None:
            while self.step():
                pass
        elif not self._finished.wait(timeout):
            raise TimeoutError("the speech plan is not finished yet")
        if self._error is not None:
            raise self._error
        if not self.done:
            raise RuntimeError("the speech plan was cancelled")
        return self.plan

    # -- what is there so far -------------------------------------------------------------

    @property
    def plan(self) -> SpeechPlan:
        """The plan so far: the first utterances of the whole plan (``complete`` at the end)."""
        n_blocks, n_utterances, complete = self._published
        cached = self._cache
        if (
            cached is not None
            and len(cached) == n_utterances
            and len(cached.document.blocks) == n_blocks
            and cached.complete == complete
        ):
            return cached
        doc = self._document(n_blocks, complete)
        planner = self._planner
        plan = SpeechPlan(doc, planner.utterances[:n_utterances], complete, planner.footnotes)
        self._cache = plan
        return plan

    @property
    def document(self) -> Document:
        """The document so far: the first blocks of the whole document."""
        return self.plan.document

    @property
    def book(self) -> BookInfo | None:
        """What the book says about itself so far (its warnings grow as it is read)."""
        return self._doc.book

    def _document(self, n_blocks: int, complete: bool) -> Document:
        blocks = tuple(self._source.blocks[:n_blocks])
        source = self._source
        refs: dict[str, int] = {}
        labels: frozenset[str] = frozenset()
        if source.footnotes_settled:
            labels = source.link_labels
            if complete:
                refs = dict(source.footnote_refs)
            elif blocks:
                end = blocks[-1].end
                refs = {k: v for k, v in source.footnote_refs.items() if v < end}
        base = self._doc
        return Document(
            base.text,
            blocks,
            base.name,
            base.encoding,
            base.markdown,
            refs,
            base.line_starts,
            labels,
            base.book,
        )
