"""Markdown to leaf blocks: markdown-it-py, a part of the text at a time, each block with its range.

``markdown_blocks`` gives exactly the blocks of one markdown-it parse of the whole text, but
it gets there in parts so that the first blocks of a large book are ready at once:

- **Parts.** The text is cut before a line that starts a top-level block after a blank line
  (an ATX heading or a line that starts with a letter). Nothing in CommonMark continues
  across such a line except an open fenced code block, a raw HTML block of kinds 1-5 or
  front matter; a part whose parse leaves one of those running into its end is joined with
  the next and parsed again. Each part is then parsed on its own (block rules only) and its
  line numbers are shifted, which gives the tokens of the whole parse.
- **Definitions.** Link reference and footnote definitions (``[x]: ...``) can sit after the
  text that uses them, and a footnote gives blocks only if it is cited somewhere. So once
  every part up to the last ``]:``, ``[^`` and ``^[`` of the document is block-parsed,
  footnotes are settled as the footnote plugin's ``footnote_tail`` would settle them (which
  definitions are cited, the first citation of each label), and only then is text with a
  ``[`` parsed inline; text without one never depends on definitions.
- **Inline.** Inline tokens are parsed when a block is read (``MarkdownParts.parse_inline``);
  text without markup characters takes a short path that builds the same tokens.

``MarkdownParts`` exposes the parts as they become final (the progressive speech plan in
``vvreader.text.plan`` drives it); ``markdown_blocks`` runs it to the end.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token

from vvreader.text.document import Block

__all__ = ["InlineMarkup", "MarkdownParts", "inline_markup", "markdown_blocks", "parser"]


def _configured() -> MarkdownIt:
    """CommonMark + GFM tables and strikethrough, footnotes, front matter.

    Linkify is off: bare URLs stay text and the speech rules shorten them (and a book
    parses faster without it).
    """
    from mdit_py_plugins.footnote import footnote_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    return md.use(front_matter_plugin).use(footnote_plugin)


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """The shared parser (``_configured``)."""
    return _configured()


@lru_cache(maxsize=1)
def _core_rules() -> tuple[tuple[Callable[[StateCore], None], ...], Callable[[Any], None]]:
    """The core rules that run before ``inline`` (normalize, block) and ``text_join``."""
    rules = parser().core.ruler.getRules("")
    names = [getattr(r, "__name__", "") for r in rules]
    cut = names.index("inline")
    if set(names[cut + 1 :]) != {"footnote_tail", "text_join"}:  # pragma: no cover
        raise RuntimeError(f"unexpected markdown-it core rules: {names}")
    return tuple(rules[:cut]), rules[names.index("text_join")]


_LEAF = {
    "heading_open": "heading",
    "paragraph_open": "paragraph",
    "fence": "code",
    "code_block": "code",
    "html_block": "html",
    "front_matter": "front_matter",
    "hr": "rule",
    "table_open": "table",
}
#: Blocks that may run on over blank lines and headings until their end marker.
_OPEN_ENDED = frozenset({"fence", "html_block", "front_matter"})
#: Where a part may end: after a blank line, before an ATX heading or a line that starts
#: with a letter (no list marker, quote, indent, fence or HTML starts that way).
_BOUNDARY = re.compile(r"(?>\r\n|\r|\n)[ \t]*+(?>\r\n|\r|\n)(?=#{1,6}(?:[ \t\r\n]|\Z)|[^\W\d_])")
#: Lines that might close front matter (a superset of what the plugin accepts).
_FRONT_MATTER_END = re.compile(r"(?<![^\r\n])[ \t]*(?:-{3,}|\.\.\.)[ \t]*(?=[\r\n]|\Z)")
#: Inline text with none of these parses to text and line breaks only (see ``_plain``).
_INLINE_MARKUP = re.compile(r"[\\`~*_\[<&]")


@dataclass(eq=False)
class _Part:
    """One block-parsed part of the text."""

    first: int
    """First line (of the whole text)."""
    tokens: list[Token]
    """Its block tokens in source order, line numbers shifted to the whole text."""
    main: list[Token] = field(default_factory=list)
    """The tokens outside footnote definitions (what ``footnote_tail`` keeps in place)."""
    notes: dict[str, list[Token]] = field(default_factory=dict)
    """Footnote label to the tokens of its last definition in the part."""
    items: int = 0
    """List items in ``main``."""


def _prepare(tokens: list[Token], lines: int) -> None:
    """Shift line numbers by ``lines``; mark inline tokens as not parsed (children None)."""
    for tok in tokens:
        if tok.map is not None and lines:
            tok.map = [tok.map[0] + lines, tok.map[1] + lines]
        if tok.type == "inline":
            tok.children = None


def _closing(tokens: list[Token], i: int) -> int:
    """Index of the token that closes the block opened at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _plain(content: str) -> list[Token]:
    """markdown-it's inline tokens for text without markup characters.

    Only the ``text`` and ``newline`` rules can fire on such text: one text token per line,
    trailing spaces before a line break dropped (two or more make a hard break) and the
    next line's leading spaces and tabs skipped.
    """
    if "\n" not in content:
        return [_text_token(content)] if content else []
    out: list[Token] = []
    lines = content.split("\n")
    last = len(lines) - 1
    for k, line in enumerate(lines):
        if k:
            line = line.lstrip(" \t")
        if k == last:
            if line:
                out.append(_text_token(line))
            break
        kind = "softbreak"
        if line.endswith("  "):
            line, kind = line.rstrip(" "), "hardbreak"
        elif line.endswith(" "):
            line = line[:-1]
        if line:
            out.append(_text_token(line))
        out.append(Token(kind, "br", 0))
    return out


def _text_token(content: str) -> Token:
    tok = Token("text", "", 0)
    tok.content = content
    return tok


class MarkdownParts:
    """Parse Markdown into leaf blocks a part at a time; ``blocks`` only ever grows.

    Call ``step`` until ``done``. ``blocks`` holds the final blocks so far (the same objects,
    indices, sections and list numbers that the whole document gets), ``parse_inline``
    fills in a block's inline tokens once that can be done exactly, and the footnote
    lookups (``footnote_refs``, ``footnote_labels``, ``footnote_blocks``) answer once
    ``footnotes_settled``.

    Args:
        text: The decoded document text.
        line_starts: Offsets of its line starts.
        first_chars: Size of the first part (later parts double up to ``part_chars``).
        part_chars: Largest part.
    """

    def __init__(
        self,
        text: str,
        line_starts: Sequence[int],
        first_chars: int = 32_000,
        part_chars: int = 256_000,
    ) -> None:
        self.text = text
        self.line_starts = line_starts
        self.blocks: list[Block] = []
        """Final blocks, in document order."""
        self.footnotes_settled = False
        """Whether all definitions are read and footnotes known (text with ``[`` can then be
        parsed inline: it may use a definition made further on)."""
        self.footnote_refs: dict[str, int] = {}
        """Footnote label to the offset of the block with its first reference (once settled)."""
        self.footnote_labels: frozenset[str] = frozenset()
        """Labels with a footnote paragraph in the document (once settled)."""
        self.link_labels: frozenset[str] = frozenset()
        """Normalised labels of the link reference definitions (once settled)."""
        self._md = parser()
        self._env: dict[str, Any] = {}
        self._parts: list[_Part] = []
        self._built = 0  # parts whose blocks are in self.blocks
        self._next_chars = max(1, first_chars)
        self._part_chars = max(1, part_chars)
        # Text with "[" is parsed inline, and footnotes settle, once every part up to the
        # last definition ("]:") and footnote mark ("[^", "^[") is block-parsed.
        self._settle_at = max(text.rfind("]:"), text.rfind("[^"), text.rfind("^[")) + 1
        self._parsed_to = 0
        self._starts: list[int] = []  # block starts, for section_at
        self._section = 0
        self._heading: int | None = None
        self._items = 0  # list items numbered so far outside footnotes
        self._main_items: int | None = None  # all of them, once every part is parsed
        self._notes: list[tuple[str, int]] = []  # emitted footnotes: (label, its part)
        self._labels: set[str] = set()
        self._note_items: dict[str, int] = {}  # label -> list items numbered before it
        self._note_blocks: dict[str, list[Block]] = {}
        if self._settle_at == 0:
            self.footnotes_settled = True

    # -- state ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether every block is final."""
        return self._parsed_to >= len(self.text) and self._built == len(self._parts)

    @property
    def parsed_to(self) -> int:
        """Offset up to which the text has been block-parsed."""
        return self._parsed_to

    # -- driving --------------------------------------------------------------------------

    def step(self) -> bool:
        """Do one unit of work (parse one more part, then build what is final).

        Returns:
            False when there was nothing left to do.
        """
        if self._parsed_to < len(self.text):
            self._parse_next()
            if not self.footnotes_settled and self._parsed_to >= self._settle_at:
                self._settle_footnotes()
            self._build()
            return True
        return self._build()  # False: everything is built

    def finish(self) -> None:
        """Parse everything (blocks and inline tokens)."""
        while self.step():
            pass
        for block in self.blocks:
            self.parse_inline(block)

    # -- parts ----------------------------------------------------------------------------

    def _boundary(self, offset: int) -> int:
        """The first part boundary at or after ``offset`` (the text's end if none)."""
        if offset >= len(self.text):
            return len(self.text)
        m = _BOUNDARY.search(self.text, offset)
        return m.end() if m else len(self.text)

    def _parse_next(self) -> None:
        text, starts = self.text, self.line_starts
        begin = self._parsed_to
        first = bisect_left(starts, begin)
        size = self._next_chars
        self._next_chars = min(self._part_chars, size * 2)
        retries = 0
        while True:
            end = self._boundary(begin + size)
            last = bisect_left(starts, end) if end < len(text) else len(starts)
            env: dict[str, Any] = {}
            state = StateCore(text[begin:end], self._md, env)
            for rule in _core_rules()[0]:
                rule(state)
            tokens = state.tokens
            if end >= len(text) or not self._runs_on(tokens, last - first, first, end):
                break
            # Most blocks that run on end soon after: try the next boundary first, then
            # double (trying every boundary of a long code block would be quadratic).
            size = end + 1 - begin if retries == 0 else max(size, end - begin) * 2
            retries += 1
        _prepare(tokens, first)
        self._merge_env(env)
        part = _Part(first, tokens)
        self._index_part(part)
        self._parts.append(part)
        self._parsed_to = end
        if end >= len(text):
            self._main_items = sum(p.items for p in self._parts)

    def _runs_on(self, tokens: list[Token], lines: int, first: int, end: int) -> bool:
        """Whether a block of the part may go on past its end in the whole document."""
        for tok in tokens:
            if tok.type in _OPEN_ENDED and tok.map is not None and tok.map[1] >= lines:
                return True
        if (
            first == 0
            and self.text.startswith("---")
            and not any(t.type == "front_matter" for t in tokens[:1])
        ):
            # Front matter that is not closed in the part may be closed further on.
            return _FRONT_MATTER_END.search(self.text, end) is not None
        return False

    def _merge_env(self, env: dict[str, Any]) -> None:
        """Add a part's definitions (the first definition of a link label wins)."""
        refs = env.get("references")
        if refs:
            known = self._env.setdefault("references", {})
            for label, ref in refs.items():
                known.setdefault(label, ref)
        notes = env.get("footnotes", {}).get("refs")
        if notes:
            data = self._env.setdefault("footnotes", {})
            data.setdefault("refs", {}).update(dict.fromkeys(notes, -1))
            data.setdefault("list", {})

    @staticmethod
    def _index_part(part: _Part) -> None:
        """Split out footnote definitions as ``footnote_tail`` does; count list items.

        ``footnote_tail`` walks the whole token stream with a little state that is idle
        between top-level blocks, so walking each part gives the same result.
        """
        inside = False
        current: list[Token] = []
        label = ""
        main, notes = part.main, part.notes
        for tok in part.tokens:
            t = tok.type
            if t == "footnote_reference_open":
                inside, current, label = True, [], tok.meta["label"]
            elif t == "footnote_reference_close":
                inside = False
                notes[label] = current
            elif inside:
                current.append(tok)
            else:
                main.append(tok)
                if t == "list_item_open":
                    part.items += 1

    # -- footnotes ------------------------------------------------------------------------

    def _settle_footnotes(self) -> None:
        """What markdown-it's inline rule and ``footnote_tail`` decide about footnotes.

        All parts up to the last footnote mark are parsed: parse the inline tokens that can
        hold a footnote reference in source order (as markdown-it numbers footnotes), then
        note which definitions are referenced (``footnote_tail`` keeps only those, after
        everything else and in footnote order) and the block of each label's first
        reference in that order.
        """
        for part in self._parts:
            for tok in part.tokens:
                if tok.type == "inline" and ("[^" in tok.content or "^[" in tok.content):
                    self._inline_token(tok)
        bodies: dict[str, tuple[int, list[Token]]] = {}
        for p, part in enumerate(self._parts):
            bodies.update((label, (p, body)) for label, body in part.notes.items())
        refs: dict[str, int] = {}
        for part in self._parts:
            self._first_refs(part.main, refs)
        items = self._main_items
        listed = self._env.get("footnotes", {}).get("list", {})
        for entry in listed.values():
            label = entry.get("label")
            if label is None:
                continue  # an inline footnote: its paragraph has no source lines
            p, body = bodies.get(label, (-1, []))
            self._notes.append((label, p))
            self._first_refs(body, refs)
            if p >= 0 and any(t.type == "paragraph_open" and t.map is not None for t in body):
                self._labels.add(label)
            n = sum(t.type == "list_item_open" for t in body)
            if n:
                self._note_items[label] = -1 if items is None else items
                items = None if items is None else items + n
        self.footnote_refs = refs
        self.footnote_labels = frozenset(self._labels)
        self.link_labels = frozenset(self._env.get("references", ()))
        self.footnotes_settled = True

    def _first_refs(self, tokens: list[Token], refs: dict[str, int]) -> None:
        """Record footnote references of the leaf blocks in ``tokens`` (first one wins)."""
        start = 0
        for tok in tokens:
            if tok.type in _LEAF and tok.map is not None:
                start = self._range(tok.map[0], tok.map[1])[0]
            elif tok.type == "inline" and tok.children:
                for child in tok.children:
                    if child.type == "footnote_ref":
                        refs.setdefault(str(child.meta.get("label", "")), start)

    def footnote_blocks(self, label: str) -> list[Block] | None:
        """The footnote paragraphs of ``label`` in order (None while not built yet)."""
        if label not in self.footnote_labels:
            return []
        return self._note_blocks.get(label)

    def section_at(self, offset: int) -> int | None:
        """Section of the built block that holds ``offset`` (as ``Document.block_at``)."""
        i = bisect_right(self._starts, offset) - 1
        if i >= 0:
            b = self.blocks[i]
            if b.start <= offset < b.end:
                return b.section
        return None

    # -- blocks ---------------------------------------------------------------------------

    def _build(self) -> bool:
        """Turn parsed parts into blocks as long as their blocks are final.

        Returns:
            Whether any part was built.
        """
        built = self._built
        while self._built < len(self._parts):
            part = self._parts[self._built]
            if part.notes and not self.footnotes_settled:
                break
            notes = [label for label, p in self._notes if p == self._built]
            if any(self._note_items.get(label) == -1 for label in notes):
                if self._main_items is None:
                    break  # list items in a footnote are numbered after all others
                self._renumber_notes()
            self._build_part(part, notes)
            self._built += 1
        return self._built > built

    def _renumber_notes(self) -> None:
        items = self._main_items or 0
        for label, p in self._notes:
            if label in self._note_items:
                self._note_items[label] = items
                body = self._parts[p].notes[label] if p >= 0 else []
                items += sum(t.type == "list_item_open" for t in body)

    def _build_part(self, part: _Part, notes: list[str]) -> None:
        leaves = self._leaves(part.main, None)
        for label in notes:
            leaves.extend(self._leaves(part.notes[label], label))
        leaves.sort(key=lambda leaf: leaf[1])  # stable: in place first, then footnote order
        blocks = self.blocks
        for leaf in leaves:
            if leaf[0] == "heading":
                self._section += 1
                self._heading = len(blocks)
            block = Block(len(blocks), leaf[0], *leaf[1:5], self._section, self._heading, *leaf[5:])
            blocks.append(block)
            self._starts.append(block.start)
            if block.kind == "footnote":
                self._note_blocks.setdefault(block.footnote or "", []).append(block)

    def _leaves(self, tokens: list[Token], note: str | None) -> list[tuple[Any, ...]]:
        """Leaf blocks of ``tokens`` as Block field tuples (without index and section)."""
        out: list[tuple[Any, ...]] = []
        list_depth = quote_depth = 0
        items: list[tuple[int, int | None]] = []  # open list items: (serial, number)
        ordered: list[int | None] = []  # open lists: next number or None for bullets
        serial = self._items if note is None else self._note_items.get(note, 0)
        i, stop = 0, len(tokens)
        while i < stop:
            tok = tokens[i]
            t = tok.type
            if t in ("bullet_list_open", "ordered_list_open"):
                list_depth += 1
                start = tok.attrGet("start")
                ordered.append((int(start) if start is not None else 1) if t[0] == "o" else None)
            elif t in ("bullet_list_close", "ordered_list_close"):
                list_depth -= 1
                ordered.pop()
            elif t == "list_item_open":
                serial += 1
                number = ordered[-1] if ordered else None
                if number is not None:
                    ordered[-1] = number + 1
                items.append((serial, number))
            elif t == "list_item_close":
                items.pop()
            elif t == "blockquote_open":
                quote_depth += 1
            elif t == "blockquote_close":
                quote_depth -= 1
            elif t in _LEAF and tok.map is not None:
                kind = _LEAF[t]
                close = _closing(tokens, i) if tok.nesting == 1 else i
                first, last = tok.map
                start, end = self._range(first, last)
                payload: tuple[Any, ...] = tuple(tokens[i + 1 : close]) if close > i else (tok,)
                item, number = items[-1] if items else (None, None)
                out.append(
                    (
                        "footnote" if note is not None and kind == "paragraph" else kind,
                        start,
                        end,
                        first,
                        last,
                        int(tok.tag[1]) if kind == "heading" else 0,
                        list_depth,
                        item,
                        number,
                        quote_depth,
                        note,
                        tok.info.strip() if t == "fence" else "",
                        payload,
                    )
                )
                i = close
            i += 1
        if note is None:
            self._items = serial
        return out

    def _range(self, first: int, last: int) -> tuple[int, int]:
        """Offsets of lines ``[first, last)`` without surrounding whitespace."""
        text, starts = self.text, self.line_starts
        n = len(starts)
        start = starts[first] if first < n else len(text)
        end = starts[last] if last < n else len(text)
        while end > start and text[end - 1] in " \t\r\n":
            end -= 1
        while start < end and text[start] in " \t":
            start += 1
        return start, end

    # -- inline ---------------------------------------------------------------------------

    def parse_inline(self, block: Block) -> bool:
        """Parse the block's inline tokens if not done yet.

        Returns:
            False when that has to wait for definitions further on (``step`` more).
        """
        for tok in block.tokens:
            if tok.type == "inline" and tok.children is None:
                if "[" in tok.content and not self.footnotes_settled:
                    return False
                self._inline_token(tok)
        return True

    def _inline_token(self, tok: Token) -> None:
        if tok.children is not None:
            return
        if _INLINE_MARKUP.search(tok.content) is None:
            tok.children = _plain(tok.content)
            return
        tok.children = []
        self._md.inline.parse(tok.content, self._md, self._env, tok.children)
        _core_rules()[1](SimpleNamespace(tokens=[tok]))  # text_join on this token


def markdown_blocks(
    text: str, line_starts: Sequence[int], *, part_chars: int = 1 << 20
) -> tuple[list[Block], dict[str, int]]:
    """Parse Markdown into leaf blocks.

    Args:
        text: The decoded document text.
        line_starts: Offsets of line starts in ``text``.
        part_chars: Size of the parts it is parsed in (the result does not depend on it).

    Returns:
        The blocks in source order (inline tokens parsed) and, for each footnote label, the
        offset of the block with its first reference.
    """
    parts = MarkdownParts(text, line_starts, first_chars=part_chars, part_chars=part_chars)
    parts.finish()
    return parts.blocks, parts.footnote_refs


# -- inline marks for display --------------------------------------------------------------

#: Characters that start inline markup the reading view hides (``!`` only before ``[``).
_DISPLAY_MARKUP = re.compile(r"[\\`*_\[<~]")
_MARK_NAMES = {"em": "em", "strong": "strong", "s": "strike"}
_RECORDER = "vvreader.inline_markup"
#: The inline rules whose matches hold markup that the view hides or styles, each with the
#: characters that a match of it starts with.
_MARKUP_RULES = {
    "escape": "\\",
    "backticks": "`",
    "strikethrough": "~",
    "emphasis": "*_",
    "link": "[",
    "image": "!",
    "autolink": "<",
    "footnote_inline": "^",
}


@dataclass
class InlineMarkup:
    """Where an inline text's Markdown markup is, as markdown-it parses it.

    ``hidden`` are the ranges that are markup only (emphasis and strikethrough delimiters,
    backticks, the brackets and destination of links and images, the backslash of an
    escape); ``marks`` are the ranges shown with a style: ``strong``, ``em``, ``code``,
    ``strike`` or ``link`` (link text, image alt text, autolinks). Entities, raw HTML and
    footnote references are text as written.
    """

    src: str
    hidden: list[tuple[int, int]] = field(default_factory=list)
    marks: list[tuple[int, int, str]] = field(default_factory=list)
    _delimiters: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    _nested: list[tuple[str, int]] = field(default_factory=list, repr=False)

    def base(self, src: str) -> int | None:
        """Offset in ``self.src`` of a text being parsed (None: a text not shown as is)."""
        if src is self.src:
            return 0
        if self._nested and self._nested[-1][0] == src:
            return self._nested[-1][1]
        return 0 if src == self.src else None

    def record(
        self,
        rule: str,
        state: StateInline,
        base: int,
        start: int,
        tokens: list[Token],
        label_end: int,
    ) -> None:
        """Note the markup of what ``rule`` matched at ``start`` (its ``tokens``)."""
        end = base + state.pos
        start += base
        if not tokens:
            return  # text after all (a run of backticks that no run closes)
        if rule == "escape":
            if tokens[0].type == "hardbreak" or tokens[0].content != tokens[0].markup:
                self.hidden.append((start, start + 1))  # not "\\a": that is text
        elif rule == "backticks":
            ticks = len(tokens[-1].markup)
            self.hidden += [(start, start + ticks), (end - ticks, end)]
            self.marks.append((start + ticks, end - ticks, "code"))
        elif rule in ("emphasis", "strikethrough"):
            at = start
            for tok in tokens:
                self._delimiters[id(tok)] = (at, at + len(tok.content))
                at += len(tok.content)
        elif rule == "autolink":
            self.hidden += [(start, start + 1), (end - 1, end)]
            self.marks.append((start + 1, end - 1, "link"))
        elif rule in ("link", "image"):
            text = start + (2 if rule == "image" else 1)
            label_end += base
            self.hidden += [(start, text), (label_end, end)]
            self.marks.append((text, label_end, "link"))

    def settle(self, state: StateInline) -> None:
        """After emphasis and strikethrough paired their delimiters (before the unused ones
        join the text around them): hide the used ones and mark what they enclose."""
        opened: dict[str, list[int]] = {}
        for tok in state.tokens:
            span = self._delimiters.pop(id(tok), None)
            if span is None:
                continue
            if tok.type == "text":
                if not tok.content:  # the outer half of a strong delimiter
                    self.hidden.append(span)
                continue
            self.hidden.append(span)
            name = _MARK_NAMES.get(tok.tag, tok.tag)
            if tok.nesting == 1:
                opened.setdefault(name, []).append(span[1])
            elif opened.get(name):
                self.marks.append((opened[name].pop(), span[0], name))


def _recording(name: str, rule: Callable[[StateInline, bool], bool]) -> Callable[..., bool]:
    """``rule`` that also reports what it matched to the ``InlineMarkup`` in the env."""

    first = _MARKUP_RULES[name]

    def recorded(state: StateInline, silent: bool) -> bool:
        if silent or state.src[state.pos] not in first:
            return rule(state, silent)
        markup = state.env.get(_RECORDER)
        if markup is None:
            return rule(state, silent)
        base = markup.base(state.src)
        if base is None:
            return rule(state, silent)
        if state.pending:
            state.pushPending()  # so that the tokens after ``count`` are the rule's own
        start, count, label_end = state.pos, len(state.tokens), -1
        bracket = start if name == "link" else start + 1  # "[", "![" or "^["
        nested = name in ("image", "footnote_inline")  # their text is parsed on its own
        if name in ("link", "image", "footnote_inline") and state.src.startswith("[", bracket):
            label_end = state.md.helpers.parseLinkLabel(state, bracket, name == "link")
        if nested and label_end >= 0:
            markup._nested.append((state.src[bracket + 1 : label_end], base + bracket + 1))
        try:
            matched = rule(state, silent)
        finally:
            if nested and label_end >= 0:
                markup._nested.pop()
        if matched:
            markup.record(name, state, base, start, state.tokens[count:], label_end)
        return matched

    return recorded


@lru_cache(maxsize=1)
def _display_parser() -> MarkdownIt:
    """The parser of ``parser()``, its markup rules reporting where their markup is."""
    md = _configured()
    for rule in list(md.inline.ruler.__rules__):
        if rule.name in _MARKUP_RULES:
            md.inline.ruler.at(rule.name, _recording(rule.name, rule.fn))
    join = next(r.fn for r in md.inline.ruler2.__rules__ if r.name == "fragments_join")

    def settle_then_join(state: StateInline) -> None:
        markup = state.env.get(_RECORDER)
        if markup is not None:
            markup.settle(state)
        join(state)

    md.inline.ruler2.at("fragments_join", settle_then_join)
    return md


def inline_markup(text: str, link_labels: frozenset[str] = frozenset()) -> InlineMarkup:
    """The Markdown markup of inline ``text`` (one paragraph's lines joined with ``\\n``).

    Args:
        text: The inline text, block markup (list markers, quote bars, ``#``) removed.
        link_labels: Normalised labels of the document's link reference definitions
            (``Document.link_labels``): ``[text][label]`` is a link only if one is defined.
    """
    markup = InlineMarkup(text)
    if _DISPLAY_MARKUP.search(text) is None:
        return markup
    md = _display_parser()
    env: dict[str, Any] = {_RECORDER: markup}
    if link_labels:
        env["references"] = {label: {"href": "", "title": ""} for label in link_labels}
    md.inline.parse(text, md, env, [])
    return markup
