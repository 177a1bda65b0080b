"""HTML and XHTML to Markdown text: the blocks a book's chapters are read as.

A chapter becomes the Markdown the rest of the reader already understands (headings,
paragraphs, lists, block quotes, pipe tables, fenced preformatted text, hard line breaks
for poetry, emphasis), so that EPUB and HTML share the Markdown reader's blocks, speech
rules, view and positions. Every piece of text is escaped, so nothing in a book turns into
Markdown markup it did not mean.

What is never read: the head, scripts, styles, forms, embedded media, hidden elements
(``hidden``, ``display: none``), page-break markers and the note reference numbers in a
sentence (they become Markdown footnote references; the notes themselves become footnote
definitions, which the plan marks as notes read only when asked for). Images become
Markdown images with their alt text (spoken only when the plan settings ask). MathML reads
its ``alttext`` when it has one.

Parsing: XHTML is parsed as XML (lxml, entities kept unexpanded, no DTD, no network);
HTML, or XHTML that is not well-formed, goes through libxml2's tolerant HTML parser,
which reads as much of a broken file as it can (``parse_markup``).
"""

from __future__ import annotations

import html.entities
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lxml import etree
from lxml import html as lxml_html

__all__ = ["Chapter", "ChapterWriter", "decode_markup", "parse_markup"]

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9._:-]+)[\"']")
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_DOCTYPE_SUBSET = re.compile(r"<!DOCTYPE[^\[>]*\[.*?\]\s*>", re.DOTALL | re.IGNORECASE)


def decode_markup(data: bytes, default: str = "utf-8") -> tuple[str, str]:
    """Decode an (X)HTML file: BOM, then the XML declaration, then a ``<meta>`` charset.

    Returns:
        ``(text, encoding)``; undecodable bytes become U+FFFD.
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(enc, errors="replace"), enc
    head = data[:2048]
    m = _XML_DECL.match(head) or _META_CHARSET.search(head)
    enc = m.group(1).decode("ascii").lower() if m else default
    try:
        return data.decode(enc, errors="replace"), enc
    except LookupError:
        return data.decode(default, errors="replace"), default


def _numeric_entities(text: str) -> str:
    """HTML named entities as character references, so that XHTML parses without a DTD;
    references to entities nobody defines (a DTD never read) are dropped."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in _XML_ENTITIES:
            return m.group()
        chars = html.entities.html5.get(name + ";")
        return "".join(f"&#{ord(c)};" for c in chars) if chars else ""

    return _ENTITY.sub(sub, text) if "&" in text else text


def parse_markup(text: str, xml: bool) -> tuple[etree._Element | None, str | None]:
    """Parse a chapter's decoded text.

    A DOCTYPE's internal subset (where entities are declared) is dropped before parsing,
    so no entity a file declares is ever expanded or fetched.

    Args:
        text: The decoded markup.
        xml: Try a strict XML parse first (XHTML); fall back to the HTML parser.

    Returns:
        ``(root, warning)``: the root element (None when nothing could be read) and a
        warning when the file had to be read by the tolerant parser.
    """
    text = _DOCTYPE_SUBSET.sub("", text, count=1)
    text = text.lstrip("\ufeff")
    if text.startswith("<?xml"):
        text = text[text.find("?>") + 2 :]
    warning = None
    if xml:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        try:
            return etree.fromstring(_numeric_entities(text), parser), None
        except etree.XMLSyntaxError as err:
            warning = f"not well-formed XHTML ({err.msg}); read as tag soup"
    parser = lxml_html.HTMLParser(
        no_network=True, remove_comments=True, remove_pis=True, default_doctype=False
    )
    try:
        root = lxml_html.document_fromstring(text, parser=parser)
    except (etree.ParserError, ValueError) as err:
        return None, f"cannot be parsed ({err})"
    return root, warning


_LOCAL_NAMES: dict[str, str] = {}


def _local(tag: object) -> str:
    """Lower-case local name of an element tag ('' for comments and the like)."""
    if not isinstance(tag, str):
        return ""
    name = _LOCAL_NAMES.get(tag)
    if name is None:
        name = tag.rpartition("}")[2].lower()
        if len(_LOCAL_NAMES) < 4096:
            _LOCAL_NAMES[tag] = name
    return name


_EPUB_TYPE = "{http://www.idpf.org/2007/ops}type"
_XHTML = "http://www.w3.org/1999/xhtml"


def _types(el: etree._Element) -> set[str]:
    """The element's ``epub:type`` words and ``role`` values (without the doc- prefix)."""
    typed = el.get(_EPUB_TYPE) or el.get("epub:type")
    role = el.get("role")
    if not typed and not role:
        return _NO_TYPES
    words = (typed or "").split()
    words += [r.removeprefix("doc-") for r in (role or "").split()]
    return {w.rpartition(":")[2] for w in words}


_NO_TYPES: set[str] = set()


_SKIP = frozenset({
    "head", "script", "style", "template", "noscript", "iframe", "object", "embed", "audio",
    "video", "canvas", "svg", "button", "input", "select", "textarea", "form", "map", "rp",
    "title", "meta", "link", "base",
})  # fmt: skip
_BLOCK = frozenset({
    "p", "div", "section", "article", "aside", "header", "footer", "main", "nav", "body",
    "html", "blockquote", "ul", "ol", "li", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
    "h6", "pre", "table", "figure", "figcaption", "hr", "hgroup", "address", "details",
    "summary", "center", "caption", "fieldset", "legend", "menu",
})  # fmt: skip
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
#: Block elements written as containers of other blocks and text (where a part may end).
_FLOW = _BLOCK - {*_HEADINGS, "hr", "pre", "table", "blockquote", "ul", "ol", "menu", "dt"}
_NOTE_TYPES = frozenset({"footnote", "endnote", "rearnote", "note"})
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_WS = re.compile(r"[ \t\n\r\f]+")
_ESCAPE = re.compile(r"([\\`*_\[\]<>#|~]|&(?=[A-Za-z#]))")
_LINE_START = re.compile(r"^([-+=]|\d{1,9}(?=[.)]))")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_PUNCT = re.compile(r"[^\w\s]")


def _escape(text: str) -> str:
    """Backslash before every character that could start Markdown markup."""
    return _ESCAPE.sub(r"\\\1", text)


def _hidden(el: etree._Element, types: set[str]) -> bool:
    if el.get("hidden") is not None or "pagebreak" in types:
        return True
    style = el.get("style")
    return bool(style and _HIDDEN_STYLE.search(style))


def _flanks(before: str, after: str, opening: bool) -> bool:
    """Whether an emphasis marker between ``before`` and ``after`` flanks (CommonMark)."""
    inner, outer = (after, before) if opening else (before, after)
    if not inner or inner.isspace():
        return False
    if _PUNCT.match(inner):
        return not outer or outer.isspace() or bool(_PUNCT.match(outer))
    return True


class _Inline:
    """Inline Markdown of one block being written.

    Text is collected as it comes; emphasis markers, hard breaks and pieces of ready
    Markdown (note references, images) are kept as control-character placeholders, so that
    the whole block is collapsed and escaped in one pass (``render``).
    """

    __slots__ = ("parts", "raws")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.raws: list[str] = []

    def text(self, s: str) -> None:
        self.parts.append(s)

    def raw(self, s: str) -> None:
        self.parts.append(f"\x01{len(self.raws)}\x01")
        self.raws.append(s)

    def mark(self, opening: bool, marker: str) -> None:
        self.parts.append(_MARKS[opening, marker])

    def hard_break(self) -> None:
        self.parts.append("\x02")

    def empty(self) -> bool:
        if self.raws:
            return False
        return not _MARKER.sub("", "".join(self.parts)).strip(" \t\n\r\f\x02")

    def render(self, breaks: bool) -> list[str]:
        """The block's lines: whitespace collapsed, escaped, markers kept only where they
        flank (else dropped), one line per hard break (or one line)."""
        joined = "".join(self.parts)
        if _NEEDS_ESCAPE.search(joined):
            joined = _ESCAPE.sub(r"\\\1", joined)
        joined = _WS.sub(" ", joined)
        lines = joined.split("\x02") if breaks else [joined.replace("\x02", " ")]
        result: list[str] = []
        for line in lines:
            line = line.strip(" ")
            if "\x00" in line:
                line = _settle_markers(line).strip(" ")
            if "\x01" in line:
                line = _RAW.sub(lambda m: self.raws[int(m.group(1))], line)
            if line:
                if line[0] in "-+=0123456789":
                    line = _LINE_START.sub(r"\\\1", line)
                result.append(line)
        # A backslash at the end of a line is a Markdown hard break (a poem's line ends).
        return [line + "\\" for line in result[:-1]] + result[-1:]


_MARKS = {
    (True, "*"): "\x00o1",
    (False, "*"): "\x00c1",
    (True, "**"): "\x00o2",
    (False, "**"): "\x00c2",
}
_RAW = re.compile(r"\x01(\d+)\x01")
_MARKER = re.compile(r"\x00([oc])([12])")
_NEEDS_ESCAPE = re.compile(r"[\\`*_\[\]<>#|~&]")


def _settle_markers(line: str) -> str:
    """Keep the emphasis markers that pair and flank (CommonMark); drop the rest."""
    parts = _MARKER.split(line)
    texts = parts[0::3]  # texts[i] comes before marker i, texts[i + 1] after it
    marks = [(parts[i], parts[i + 1]) for i in range(1, len(parts), 3)]
    if not marks:
        return line
    pair: dict[int, int] = {}
    stack: list[int] = []
    for i, (kind, marker) in enumerate(marks):
        if kind == "o":
            stack.append(i)
        elif stack and marks[stack[-1]][1] == marker:
            j = stack.pop()
            pair[j], pair[i] = i, j
    for i in sorted(pair):
        if pair[i] > i:  # opening: spaces after it move before it
            body = texts[i + 1]
            texts[i] += body[: len(body) - len(body.lstrip(" "))]
            texts[i + 1] = body.lstrip(" ")
        else:  # closing: spaces before it move after it
            body = texts[i]
            texts[i + 1] = body[len(body.rstrip(" ")) :] + texts[i + 1]
            texts[i] = body.rstrip(" ")
    for i in sorted(pair):
        j = pair.get(i)
        if j is None or j < i:
            continue
        inside = "".join(texts[i + 1 : j + 1])
        before = texts[i][-1:] or ("*" if i and (i - 1) in pair else "")
        after = texts[j + 1][:1] or ("*" if (j + 1) in pair else "")
        if not (inside and _flanks(before, inside[0], True) and _flanks(inside[-1], after, False)):
            del pair[i], pair[j]
    out = [texts[0]]
    for i, (_, marker) in enumerate(marks):
        out.append("*" * int(marker) if i in pair else "")
        out.append(texts[i + 1])
    return "".join(out)


@dataclass
class Chapter:
    """The Markdown of one content document."""

    blocks: list[str] = field(default_factory=list)
    """Markdown blocks (joined with blank lines to make the text)."""
    anchors: dict[str, int] = field(default_factory=dict)
    """Element id to the index of the first block written at or after it."""
    refs: list[tuple[str, str]] = field(default_factory=list)
    """(label, href) of each note reference, in order."""
    title: str = ""
    """The document's ``<title>``."""


class ChapterWriter:
    """Writes one parsed content document as Markdown blocks.

    Args:
        note_label: Maps a note reference's ``href`` to a footnote label (None: not a note).
        headings: Element id (``""``: the document start) to (level, title) of a table of
            contents entry; where the entry's target is not a heading, one is written.
        flat: Write headings, tables and preformatted text as plain paragraphs.
    """

    def __init__(
        self,
        note_label: Callable[[str], str | None],
        headings: dict[str, tuple[int, str]] | None = None,
        flat: bool = False,
    ) -> None:
        self.note_label = note_label
        self.headings = dict(headings or {})
        self.flat = flat
        """Write headings, tables and preformatted text as plain paragraphs (a note's
        body, which is one footnote of paragraphs)."""
        self.chapter = Chapter()
        self.notes: dict[str, etree._Element] = {}
        """Id to element of each note in the document (not written in the flow)."""
        self._pending: list[str] = [""]
        self._prefix: list[tuple[str, str]] = []  # (first line, other lines) per container
        self._marker_used: list[bool] = []
        self._part_chars: int | None = None
        self._part_size = 0  # characters written since the last cut

    def write(self, root: etree._Element) -> Chapter:
        """Write the document; ``root`` is its ``html`` (or any) element."""
        for _ in self.parts(root):
            pass
        return self.chapter

    def parts(self, root: etree._Element, part_chars: int | None = None) -> Iterator[None]:
        """Write the document a part at a time: yields each time ``self.chapter`` has grown by
        at least ``part_chars`` characters since the last time (None: never), and ends with
        the whole chapter written.

        A part ends only between blocks outside any list or block quote, so that what is
        put between two parts (a book puts the notes they cite) leaves the Markdown of
        either unchanged; where the parts end depends only on the document and
        ``part_chars``.
        """
        self._part_chars = part_chars
        title = next(root.iter(f"{{{_XHTML}}}title", "title"), None)
        if title is not None:
            self.chapter.title = " ".join("".join(title.itertext()).split())
        body = next(root.iter(f"{{{_XHTML}}}body", "body"), root)
        yield from self._container(body)
        self._flush_anchors()

    # -- output ---------------------------------------------------------------------------

    def _emit(self, lines: list[str], heading: bool = False) -> None:
        """Append a block (its lines, container prefixes added)."""
        if not lines:
            return
        pending, self._pending = self._pending, []
        for anchor in pending:
            self.chapter.anchors.setdefault(anchor, len(self.chapter.blocks))
        for anchor in pending:
            if anchor in self.headings and not heading:
                level, title = self.headings.pop(anchor)
                self._emit_lines(["#" * min(6, level) + " " + _escape(title)])
            self.headings.pop(anchor, None)
        self._emit_lines(lines)

    def _emit_lines(self, lines: list[str]) -> None:
        first = "".join(
            (f if not used else o)
            for (f, o), used in zip(self._prefix, self._marker_used, strict=True)
        )
        other = "".join(o for _, o in self._prefix)
        for k in range(len(self._marker_used)):
            self._marker_used[k] = True
        block = "\n".join([first + lines[0], *(other + line for line in lines[1:])])
        self.chapter.blocks.append(block)
        self._part_size += len(block)

    def _flush_anchors(self) -> None:
        for anchor in self._pending:
            self.chapter.anchors.setdefault(anchor, len(self.chapter.blocks))
        self._pending.clear()

    # -- walking --------------------------------------------------------------------------

    def _enter(self, el: etree._Element) -> None:
        ident = el.get("id")
        if ident:
            self._pending.append(ident)
        name = el.get("name")
        if name and _local(el.tag) == "a":
            self._pending.append(name)

    def _container(self, el: etree._Element) -> Iterator[None]:
        """A block-level element whose children may mix blocks and inline content; yields
        where a part ends (see ``parts``)."""
        inline = _Inline()
        if el.text:
            inline.text(el.text)
        for child in el:
            tag = _local(child.tag)
            types = _types(child) if tag else set()
            if tag and (tag in _SKIP or _hidden(child, types)):
                pass
            elif tag and types & _NOTE_TYPES and child.get("id"):
                self.notes[child.get("id") or ""] = child
            elif tag in _FLOW:
                self._paragraph(inline)
                inline = _Inline()
                self._enter(child)
                yield from self._container(child)
            elif tag in _BLOCK:
                self._paragraph(inline)
                inline = _Inline()
                self._block(child, tag, types)
            elif tag:
                self._inline(child, tag, types, inline)
            if child.tail:
                inline.text(child.tail)
            if (
                self._part_chars is not None
                and self._part_size >= self._part_chars
                and not self._prefix
            ):
                self._part_size = 0
                yield
        self._paragraph(inline)

    def _whole(self, el: etree._Element) -> None:
        """``_container`` where no part may end (inside a list or a quote, or a note)."""
        part_chars, self._part_chars = self._part_chars, None
        try:
            for _ in self._container(el):
                pass
        finally:
            self._part_chars = part_chars

    def _paragraph(self, inline: _Inline) -> None:
        if not inline.empty():
            self._emit(inline.render(breaks=True))

    def _block(self, el: etree._Element, tag: str, types: set[str]) -> None:
        self._enter(el)
        if tag in _HEADINGS:
            inline = _Inline()
            self._inline_children(el, inline)
            text = " ".join(inline.render(breaks=False))
            if text and self.flat:
                self._emit([text])
            elif text:
                self._emit(["#" * _HEADINGS[tag] + " " + text], heading=True)
        elif tag == "hr":
            pass
        elif tag == "pre":
            self._pre(el)
        elif tag == "table":
            self._table(el)
        elif tag == "blockquote":
            self._nest(el, "> ", "> ")
        elif tag in ("ul", "ol", "menu"):
            self._list(el, tag == "ol")
        elif tag in ("dt",):
            inline = _Inline()
            self._inline_children(el, inline)
            lines = inline.render(breaks=True)
            if lines:
                lines[0] = "**" + lines[0] + "**" if "*" not in lines[0] else lines[0]
            self._emit(lines)
        else:
            self._whole(el)

    def _nest(self, el: etree._Element, first: str, other: str) -> None:
        self._prefix.append((first, other))
        self._marker_used.append(False)
        try:
            self._whole(el)
        finally:
            self._prefix.pop()
            self._marker_used.pop()

    def _list(self, el: etree._Element, ordered: bool) -> None:
        number = int(el.get("start") or 1) if ordered and (el.get("start") or "1").isdigit() else 1
        for child in el:
            tag = _local(child.tag)
            types = _types(child) if tag else set()
            if not tag or tag in _SKIP or _hidden(child, types):
                continue
            if types & _NOTE_TYPES and child.get("id"):
                self.notes[child.get("id") or ""] = child
                continue
            self._enter(child)
            marker = f"{number}. " if ordered else "- "
            number += 1
            if tag == "li":
                self._nest(child, marker, " " * len(marker))
            else:
                self._block(child, tag, types)

    def _pre(self, el: etree._Element) -> None:
        content = "".join(el.itertext()).strip("\n")
        if not content.strip():
            return
        if self.flat:
            inline = _Inline()
            for line in content.split("\n"):
                inline.text(line)
                inline.hard_break()
            self._emit(inline.render(breaks=True))
            return
        longest = max((len(m) for m in re.findall(r"`+", content)), default=0)
        fence = "`" * max(3, longest + 1)
        self._emit([fence, *content.split("\n"), fence])

    def _table(self, el: etree._Element) -> None:
        rows: list[list[str]] = []
        caption = None
        for sub in el.iter():
            tag = _local(sub.tag)
            if tag == "caption":
                caption = sub
            elif tag == "tr":
                cells = []
                for cell in sub:
                    if _local(cell.tag) in ("td", "th"):
                        inline = _Inline()
                        self._inline_children(cell, inline)
                        cells.append(" ".join(inline.render(breaks=False)))
                rows.append(cells)
        if caption is not None:
            inline = _Inline()
            self._inline_children(caption, inline)
            self._emit(inline.render(breaks=True))
        rows = [r for r in rows if any(c.strip() for c in r)]
        if self.flat:
            for row in rows:
                self._emit([", ".join(c for c in row if c.strip())])
            return
        if not rows:
            return
        width = max(len(r) for r in rows)
        lines = []
        for i, row in enumerate(rows):
            cells = row + [""] * (width - len(row))
            lines.append("| " + " | ".join(cells) + " |")
            if i == 0:
                lines.append("|" + " --- |" * width)
        self._emit(lines)

    def _inline_children(self, el: etree._Element, inline: _Inline) -> None:
        if el.text:
            inline.text(el.text)
        for child in el:
            tag = _local(child.tag)
            if tag:
                types = _types(child)
                if tag in _SKIP or _hidden(child, types):
                    pass
                elif types & _NOTE_TYPES and child.get("id"):
                    self.notes[child.get("id") or ""] = child
                else:
                    self._inline(child, tag, types, inline)
            if child.tail:
                inline.text(child.tail)

    def _inline(self, el: etree._Element, tag: str, types: set[str], inline: _Inline) -> None:
        ident = el.get("id")
        if ident:
            self._pending.append(ident)
        if tag == "br":
            inline.hard_break()
        elif tag == "img":
            alt = " ".join((el.get("alt") or "").split())
            if alt:
                inline.raw(f"![{_escape(alt)}]()")
        elif tag == "math":
            alt = el.get("alttext")
            inline.text(" " + (alt if alt else " ".join("".join(el.itertext()).split())) + " ")
        elif tag == "a" and _is_noteref(el, types):
            label = self.note_label(el.get("href") or "")
            if label is None:
                self._inline_children(el, inline)
            else:
                self.chapter.refs.append((label, el.get("href") or ""))
                inline.raw(f"[^{label}]")
        elif "backlink" in types:
            pass
        elif tag in ("em", "i", "cite", "dfn", "var"):
            self._wrapped(el, inline, "*")
        elif tag in ("strong", "b"):
            self._wrapped(el, inline, "**")
        elif tag in _BLOCK:  # a block inside inline content (tag soup): keep its text
            inline.text(" ")
            self._inline_children(el, inline)
            inline.text(" ")
        else:
            self._inline_children(el, inline)

    def _wrapped(self, el: etree._Element, inline: _Inline, marker: str) -> None:
        inline.mark(True, marker)
        self._inline_children(el, inline)
        inline.mark(False, marker)


_REF_TEXT = re.compile(r"\[?[0-9*\u2020\u2021\u00a7a-z]{1,4}\]?")


def _is_noteref(el: etree._Element, types: set[str]) -> bool:
    """An ``epub:type="noteref"`` link, or a short superscript link to a fragment."""
    if "noteref" in types:
        return True
    href = el.get("href") or ""
    if "#" not in href or "://" in href:
        return False
    text = "".join(el.itertext()).strip()
    parent = el.getparent()
    sup = _local(parent.tag) == "sup" if parent is not None else False
    sup = sup or any(_local(c.tag) == "sup" for c in el)
    return sup and bool(_REF_TEXT.fullmatch(text))


def note_text(el: etree._Element, note_label: Callable[[str], str | None]) -> list[str]:
    """A note's paragraphs as Markdown lines (no references, no back links)."""
    writer = ChapterWriter(lambda href: None, flat=True)
    writer._whole(el)
    out = []
    for block in writer.chapter.blocks:
        lines = block.split("\n")  # one line each: a line's hard break becomes a space
        out.append(" ".join([line.removesuffix("\\") for line in lines[:-1]] + lines[-1:]))
    return out


def label_of(text: str) -> str:
    """A footnote label made of safe characters."""
    return _LABEL_UNSAFE.sub("-", text).strip("-") or "note"
