"""EPUB 2 and 3 (and single HTML files, as books of one chapter) to Markdown text plus a
``BookInfo``.

An EPUB is a zip of XML from anywhere, so everything here treats it as hostile data:

- The archive is read with ``zipfile`` into memory only; entry names are looked up, never
  used as paths. Symbolic-link entries are ignored. Each entry may unpack to at most
  ``MAX_ENTRY_BYTES`` and the whole book to ``MAX_BOOK_BYTES`` (counted while reading, so
  a lying header does not help a zip bomb); at most ``MAX_ENTRIES`` entries.
- Package files (container, package document, NCX, ``encryption.xml``) are parsed with
  defusedxml: a declared entity or an external reference is refused, nothing is fetched.
  Chapters go through ``vvreader.text.html`` (entities never expanded, no network).
- References that leave the book (``../``, absolute paths, URLs) are ignored.
- A book whose ``encryption.xml`` covers more than fonts is DRM-protected: one line says so.

Reading order: ``container.xml`` -> package document -> spine (linear items; ``linear="no"``
items such as notes only serve the notes cited from the flow). The table of contents comes
from the EPUB 3 navigation document, else the EPUB 2 NCX; each entry's target becomes a
heading (one is written where the target is not a heading), so the contents screen and the
heading keys follow the book's own contents.

Text: each chapter's Markdown is followed by the notes it cites first (as footnote
definitions). A chapter longer than ``PART_CHARS`` is written in parts, each followed by the
notes it cites first; where the parts end depends only on the chapter, so the text is the
same whether the book is converted at once or a part at a time (``EpubReading``).
"""

from __future__ import annotations

import itertools
import posixpath
import stat
import threading
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urldefrag

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET
from lxml import etree

from vvreader.text.document import BookInfo, TocEntry
from vvreader.text.files import DocumentError, read_file_bytes
from vvreader.text.html import (
    Chapter,
    ChapterWriter,
    decode_markup,
    label_of,
    note_text,
    parse_markup,
)

__all__ = [
    "MAX_BOOK_BYTES",
    "MAX_ENTRIES",
    "MAX_ENTRY_BYTES",
    "BookError",
    "EpubReading",
    "HtmlReading",
    "read_epub",
    "read_html",
]

#: Largest unpacked size of one archive entry.
MAX_ENTRY_BYTES = 32 * 1024 * 1024
#: Largest unpacked size of everything read from one book.
MAX_BOOK_BYTES = 256 * 1024 * 1024
#: Most entries an archive may list.
MAX_ENTRIES = 20_000
#: Largest EPUB file.
MAX_FILE_BYTES = 1024 * 1024 * 1024
#: A chapter longer than this (in characters of its Markdown) is written in parts of about
#: this size, each followed by the notes it cites first, so that the first page of a book
#: made of one long chapter does not wait for all of it.
PART_CHARS = 256_000

_XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/x-dtbook+xml"})
_FONT_OBFUSCATION = frozenset({
    "http://www.idpf.org/2008/embedding",
    "http://ns.adobe.com/pdf/enc#RC",
})  # fmt: skip
_DRM_FILES = (
    ("META-INF/rights.xml", "Adobe ADEPT"),
    ("META-INF/sinf.xml", "Apple FairPlay"),
    ("META-INF/license.lcpl", "Readium LCP"),
)


class BookError(DocumentError):
    """A book cannot be read at all; the message is one line saying why."""


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


class _Archive:
    """The entries of a zip, read into memory within the size limits."""

    def __init__(self, path: str) -> None:
        self.name = path
        try:
            size = Path(path).stat().st_size
            if size > MAX_FILE_BYTES:
                raise BookError(f"{path}: {size / 1e6:.0f} MB is larger than any book we open")
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise BookError(f"{path}: no such file") from None
        except PermissionError:
            raise BookError(f"{path}: permission denied") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise BookError(
                f"{path}: not a readable EPUB (the archive is truncated or corrupt)"
            ) from None
        infos = self.zip.infolist()
        if len(infos) > MAX_ENTRIES:
            raise BookError(f"{path}: the archive lists {len(infos)} entries; not a book")
        self.entries: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK or "\x00" in info.filename or info.is_dir():
                continue
            self.entries.setdefault(info.filename, info)
        self.read_total = 0

    def close(self) -> None:
        self.zip.close()

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str) -> bytes:
        """The unpacked bytes of an entry.

        Raises:
            KeyError: no such entry.
            BookError: the entry or the book unpacks to more than the limits, or is corrupt.
        """
        info = self.entries[name]
        if info.file_size > MAX_ENTRY_BYTES:
            raise BookError(self._too_big(name))
        chunks = []
        got = 0
        try:
            with self.zip.open(info) as f:
                while chunk := f.read(1 << 20):
                    got += len(chunk)
                    self.read_total += len(chunk)
                    if got > MAX_ENTRY_BYTES:
                        raise BookError(self._too_big(name))
                    if self.read_total > MAX_BOOK_BYTES:
                        raise BookError(
                            f"{self.name}: unpacks to more than "
                            f"{MAX_BOOK_BYTES >> 20} MiB; not read (a zip bomb?)"
                        )
                    chunks.append(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as err:
            raise BookError(
                f"{self.name}: the archive is truncated or corrupt ({name}: {err})"
            ) from None
        except NotImplementedError:
            raise BookError(f"{self.name}: {name} uses an unsupported compression") from None
        return b"".join(chunks)

    def _too_big(self, name: str) -> str:
        return (
            f"{self.name}: {name} unpacks to more than {MAX_ENTRY_BYTES >> 20} MiB; "
            "not read (a zip bomb?)"
        )


def _xml(data: bytes, what: str, book: str) -> SafeET.Element:
    """Parse a package file with defusedxml (no entities, nothing external)."""
    try:
        return SafeET.fromstring(data)
    except DefusedXmlException:
        raise BookError(
            f"{book}: {what} declares XML entities or external references; not read"
        ) from None
    except SafeET.ParseError as err:
        raise BookError(f"{book}: {what} is not valid XML ({err})") from None


def _resolve(base: str, href: str) -> str | None:
    """A reference relative to the entry ``base``, as an entry name (None: leaves the book)."""
    href = href.strip()
    if not href or "://" in href or href.startswith(("/", "\\")) or ":" in href.split("/")[0]:
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(base), unquote(href)))
    if path.startswith("../") or path == ".." or path.startswith("/") or "\x00" in path:
        return None
    return path


@dataclass
class _Item:
    path: str
    media_type: str
    properties: frozenset[str]


def _check_drm(archive: _Archive) -> None:
    name = "META-INF/encryption.xml"
    if name not in archive:
        return
    root = _xml(archive.read(name), "encryption.xml", archive.name)
    covered = []
    for data in root.iter():
        if _local(data.tag) != "EncryptedData":
            continue
        algorithm = ""
        uri = ""
        for sub in data.iter():
            if _local(sub.tag) == "EncryptionMethod":
                algorithm = sub.get("Algorithm") or ""
            elif _local(sub.tag) == "CipherReference":
                uri = sub.get("URI") or ""
        if algorithm not in _FONT_OBFUSCATION:
            covered.append(uri)
    if not covered:
        return
    scheme = next((label for path, label in _DRM_FILES if path in archive), "")
    what = f" ({scheme})" if scheme else ""
    raise BookError(
        f"{archive.name}: this book is DRM-protected{what} and cannot be read; open a DRM-free copy"
    )


def _text(el: SafeET.Element | None) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


class _Book:
    """One EPUB (or HTML page) being read."""

    def __init__(self, name: str, archive: _Archive | None = None) -> None:
        self.name = name
        self.archive: _Archive | None = archive
        """The open archive (None once every spine item is in ``raw``)."""
        self.raw: dict[str, bytes] = {}
        """Unpacked bytes of the spine's content documents."""
        self.warnings: list[str] = []
        self.unlisted_warnings = 0
        self.items: dict[str, _Item] = {}
        self.trees: dict[str, etree._Element | None] = {}
        self.writers: dict[str, ChapterWriter] = {}
        self.ids: dict[str, dict[str, etree._Element]] = {}
        """Element of each id of a content document (built when a note is looked up there
        before the writer has come to it)."""
        self.labels: dict[tuple[str, str], str] = {}

    def warn(self, message: str) -> None:
        if len(self.warnings) < 50:
            self.warnings.append(message)
        else:
            self.unlisted_warnings += 1

    def package_path(self) -> str:
        name = "META-INF/container.xml"
        if name not in self.archive:
            raise BookError(f"{self.archive.name}: not an EPUB (no {name})")
        root = _xml(self.archive.read(name), "container.xml", self.archive.name)
        for el in root.iter():
            if _local(el.tag) == "rootfile" and el.get("full-path"):
                path = _resolve("", el.get("full-path") or "")
                if path and path in self.archive:
                    return path
        raise BookError(f"{self.archive.name}: container.xml names no package document")

    def tree(self, path: str) -> etree._Element | None:
        """A content document, parsed once (None when it is missing or unreadable)."""
        if path in self.trees:
            return self.trees[path]
        root = None
        data = self.raw.pop(path, None)
        if data is None and self.archive is not None and path in self.archive:
            data = self.archive.read(path)
        if data is None:
            self.warn(f"{path} is missing from the book; skipped")
        else:
            text, _ = decode_markup(data)
            root, warning = parse_markup(text, xml=True)
            if warning:
                self.warn(f"{path}: {warning}")
        self.trees[path] = root
        return root

    def note_label(self, base: str):  # noqa: ANN201 - a callable for ChapterWriter
        def label(href: str) -> str | None:
            url, frag = urldefrag(href)
            target = _resolve(base, url) if url else base
            if not frag or target is None:
                return None
            key = (target, frag)
            if key not in self.labels:
                self.labels[key] = label_of(str(len(self.labels) + 1))
            return self.labels[key]

        return label

    def note_element(self, path: str, ident: str) -> etree._Element | None:
        writer = self.writers.get(path)
        if writer is not None and ident in writer.notes:
            return writer.notes[ident]
        ids = self.ids.get(path)
        if ids is None:
            root = self.tree(path)
            ids = {}
            if root is not None:
                for el in root.iter():
                    ident_here = el.get("id")
                    if ident_here:
                        ids.setdefault(ident_here, el)
            self.ids[path] = ids
        return ids.get(ident)


def _nav_toc(book: _Book, path: str) -> list[tuple[str, str, int]]:
    """(target, label, depth) of the EPUB 3 navigation document's ``toc`` nav."""
    root = book.tree(path)
    if root is None:
        return []
    nav = None
    for el in root.iter():
        if _local(el.tag) == "nav":
            types = el.get("{http://www.idpf.org/2007/ops}type") or el.get("epub:type") or ""
            if "toc" in types.split() or el.get("role") == "doc-toc":
                nav = el
                break
    if nav is None:
        return []
    out: list[tuple[str, str, int]] = []

    def walk(ol: etree._Element, depth: int) -> None:
        for li in ol:
            if _local(li.tag) != "li":
                continue
            for child in li:
                tag = _local(child.tag)
                if tag in ("a", "span"):
                    label = " ".join("".join(child.itertext()).split())
                    url, frag = urldefrag(child.get("href") or "")
                    target = _resolve(path, url) if url else None
                    if label and target is not None:
                        out.append((target + ("#" + frag if frag else ""), label, depth))
                elif tag == "ol":
                    walk(child, depth + 1)

    for child in nav.iter():
        if _local(child.tag) == "ol":
            walk(child, 1)
            break
    return out


def _ncx_toc(book: _Book, path: str) -> list[tuple[str, str, int]]:
    """(target, label, depth) of the EPUB 2 NCX ``navMap``."""
    if path not in book.archive:
        return []
    root = _xml(book.archive.read(path), path, book.archive.name)
    out: list[tuple[str, str, int]] = []

    def walk(el: SafeET.Element, depth: int) -> None:
        for point in el:
            if _local(point.tag) != "navPoint":
                continue
            label = ""
            src = ""
            for child in point:
                if _local(child.tag) == "navLabel":
                    label = _text(child)
                elif _local(child.tag) == "content":
                    src = child.get("src") or ""
            url, frag = urldefrag(src)
            target = _resolve(path, url)
            if label and target is not None:
                out.append((target + ("#" + frag if frag else ""), label, depth))
            walk(point, depth + 1)

    for el in root.iter():
        if _local(el.tag) == "navMap":
            walk(el, 1)
            break
    return out


class _Assembler:
    """Joins converted chapters into one text, each part of a chapter (a whole chapter, or
    ``PART_CHARS`` or so of a longer one) followed by the notes it cites first; the text so
    far is always a prefix of the whole."""

    def __init__(self, book: _Book) -> None:
        self.book = book
        self.parts: list[str] = []
        self.anchors: dict[tuple[str, str], int] = {}
        self.offset = 0
        self.defined: set[str] = set()
        self._path = ""  # the chapter being added, and how much of it is
        self._starts: list[int] = []
        self._anchored = 0
        self._refs = 0

    def _add(self, block: str) -> int:
        if self.parts:
            self.parts.append("\n\n")
            self.offset += 2
        at = self.offset
        self.parts.append(block)
        self.offset += len(block)
        return at

    def add(self, path: str, chapter: Chapter, last: bool = True) -> None:
        """Add what ``chapter`` has grown by since the last call for ``path`` (``last``: the
        chapter is written to its end), then the notes that part cites first."""
        if path != self._path:
            self._path, self._starts, self._anchored, self._refs = path, [], 0, 0
        starts = self._starts
        starts.extend(self._add(block) for block in chapter.blocks[len(starts) :])
        # Anchors come in the order of the blocks they point at; those past the last block
        # written point at the chapter's end once it is written.
        for ident, k in itertools.islice(chapter.anchors.items(), self._anchored, None):
            if k >= len(starts) and not last:
                break
            self.anchors[(path, ident)] = starts[k] if k < len(starts) else self.offset
            self._anchored += 1
        refs, self._refs = chapter.refs[self._refs :], len(chapter.refs)
        for label, href in refs:
            if label in self.defined:
                continue
            self.defined.add(label)
            url, frag = urldefrag(href)
            target = _resolve(path, url) if url else path
            el = self.book.note_element(target, frag) if target else None
            lines = note_text(el, lambda h: None) if el is not None else []
            if not lines:
                self.book.warn(f"{path}: note {href} not found")
                lines = ["(note not found)"]
            self._add(f"[^{label}]: {lines[0]}")
            for more in lines[1:]:
                self._add("    " + more)

    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class _Package:
    """What the package document says, the spine's bytes read and checked."""

    title: str
    authors: list[str]
    language: str
    order: list[str]
    """Content documents of the linear spine, in reading order."""
    toc: list[tuple[str, str, int]]
    targets: dict[str, dict[str, tuple[int, str]]]
    cover: bytes | None
    cover_type: str


class EpubReading:
    """An EPUB being read: everything is unpacked and checked when it opens (limits, DRM,
    the package); the chapters are converted as they are asked for, so that the first
    page of a big book comes at once (``first``) and the rest on a worker (``whole``).

    Raises:
        BookError: the book cannot be read at all (one line saying why).
    """

    FORMAT = "epub"

    def __init__(self, path: str) -> None:
        archive = _Archive(path)
        try:
            _check_drm(archive)
            book = _Book(path, archive)
            package = _open_package(book)
        finally:
            archive.close()
        book.archive = None
        self._start(book, package)

    def _start(self, book: _Book, package: _Package) -> None:
        self.book = book
        self.package = package
        self.assembler = _Assembler(self.book)
        self.next = 0
        """Index in the reading order of the next chapter to convert."""
        self.writing: tuple[str, ChapterWriter, Iterator[None]] | None = None
        """The chapter being converted a part at a time: its path, writer and parts."""
        self.lock = threading.Lock()

    def _convert(self, stop_chars: int | None) -> None:
        book, package = self.book, self.package
        while stop_chars is None or self.assembler.offset < stop_chars:
            if self.writing is None:
                if self.next >= len(package.order):
                    return
                path = package.order[self.next]
                self.next += 1
                root = book.tree(path)
                if root is None:
                    continue
                writer = ChapterWriter(self._note_label(path), package.targets.get(path))
                book.writers[path] = writer
                self.writing = (path, writer, writer.parts(root, PART_CHARS))
            path, writer, parts = self.writing
            last = next(parts, True) is True
            self.assembler.add(path, writer.chapter, last)
            if last:
                self.writing = None

    @property
    def complete(self) -> bool:
        """Whether every chapter is converted."""
        return self.next >= len(self.package.order) and self.writing is None

    def first(self, chars: int = 64_000) -> tuple[str, BookInfo]:
        """The text of the first chapters (at least ``chars`` of it, when the book has)."""
        with self.lock:
            self._convert(chars)
            return self._result()

    def whole(self) -> tuple[str, BookInfo]:
        """The whole text (it starts with what ``first`` gave)."""
        with self.lock:
            self._convert(None)
            if not self.assembler.parts and self.FORMAT == "epub":
                raise BookError(f"{self.book.name}: no readable chapter in the spine")
            return self._result()

    def _note_label(self, path: str):  # noqa: ANN202 - a callable for ChapterWriter
        return self.book.note_label(path)

    def _title(self) -> str:
        return self.package.title

    def _result(self) -> tuple[str, BookInfo]:
        package, anchors = self.package, self.assembler.anchors
        entries = []
        for target, label, depth in package.toc:
            url, frag = urldefrag(target)
            at = anchors.get((url, frag)) if frag else anchors.get((url, ""))
            if at is None and frag:
                at = anchors.get((url, ""))
            if at is not None:
                entries.append(TocEntry(label, depth, at))
        info = BookInfo(
            title=self._title(),
            author=", ".join(a for a in package.authors if a),
            language=package.language,
            cover=package.cover,
            cover_type=package.cover_type,
            toc=tuple(entries),
            warnings=tuple(self.book.warnings),
            format=self.FORMAT,
            unlisted_warnings=self.book.unlisted_warnings,
        )
        return self.assembler.text(), info


def _open_package(book: _Book) -> _Package:
    archive = book.archive
    assert archive is not None
    opf = book.package_path()
    package = _xml(archive.read(opf), opf, archive.name)
    title, language, authors = "", "", []
    cover_id = ""
    for el in package.iter():
        tag = _local(el.tag)
        if tag == "title" and not title:
            title = _text(el)
        elif tag == "creator":
            authors.append(_text(el))
        elif tag == "language" and not language:
            language = _text(el)
        elif tag == "meta" and el.get("name") == "cover":
            cover_id = el.get("content") or ""
    spine: list[tuple[str, bool]] = []
    ncx_id = ""
    nav_path = ""
    cover_path = ""
    ids: dict[str, _Item] = {}
    for el in package.iter():
        tag = _local(el.tag)
        if tag == "item":
            href = _resolve(opf, el.get("href") or "")
            if href is None:
                continue
            props = frozenset((el.get("properties") or "").split())
            item = _Item(href, el.get("media-type") or "", props)
            ids[el.get("id") or ""] = item
            if "nav" in props:
                nav_path = href
            if "cover-image" in props or (cover_id and el.get("id") == cover_id):
                cover_path = href
        elif tag == "spine":
            ncx_id = el.get("toc") or ""
        elif tag == "itemref":
            spine.append((el.get("idref") or "", (el.get("linear") or "yes") != "no"))
    if not spine:
        raise BookError(f"{archive.name}: the package document has no spine; nothing to read")
    toc = _nav_toc(book, nav_path) if nav_path else []
    if not toc and ncx_id in ids:
        toc = _ncx_toc(book, ids[ncx_id].path)
    if not toc:
        ncx = next((i for i in ids.values() if i.media_type == "application/x-dtbncx+xml"), None)
        if ncx is not None:
            toc = _ncx_toc(book, ncx.path)
    targets: dict[str, dict[str, tuple[int, str]]] = {}
    for target, label, depth in toc:
        url, frag = urldefrag(target)
        targets.setdefault(url, {}).setdefault(frag, (depth, label))
    order: list[str] = []
    for idref, linear in spine:
        item = ids.get(idref)
        if item is None:
            book.warn(f"spine item {idref!r} is not in the manifest; skipped")
            continue
        if item.media_type and item.media_type not in _XHTML_TYPES:
            continue
        if item.path in book.raw:
            continue
        if item.path not in archive:
            book.warn(f"{item.path} is missing from the book; skipped")
            continue
        book.raw[item.path] = archive.read(item.path)  # limits checked now, all at once
        if linear:
            order.append(item.path)
    if not order:
        raise BookError(f"{archive.name}: no readable chapter in the spine")
    cover = None
    cover_type = ""
    if cover_path and cover_path in archive:
        try:
            cover = archive.read(cover_path)
            cover_type = next((i.media_type for i in ids.values() if i.path == cover_path), "")
        except BookError as err:
            book.warn(str(err))
    return _Package(title, authors, language, order, toc, targets, cover, cover_type)


def read_epub(path: str) -> tuple[str, BookInfo]:
    """Read a whole EPUB into Markdown text and its ``BookInfo``.

    Raises:
        BookError: the book cannot be read at all (one line saying why).
    """
    return EpubReading(path).whole()


class HtmlReading(EpubReading):
    """An HTML or XHTML page read as a book of one chapter, as an EPUB is (its notes are
    those it holds; a long page is converted a part at a time).

    Raises:
        DocumentError: the file cannot be read.
    """

    FORMAT = "html"

    def __init__(self, path: str, encoding: str | None = None) -> None:
        data = read_file_bytes(path)
        if encoding:
            try:
                text = data.decode(encoding, errors="replace")
            except LookupError:
                raise DocumentError(f"{path}: unknown encoding {encoding!r}") from None
        else:
            text, _ = decode_markup(data)
        xml = path.lower().endswith(".xhtml") or text.lstrip("\ufeff \r\n\t").startswith("<?xml")
        root, warning = parse_markup(text, xml=xml)
        if root is None:
            raise DocumentError(f"{path}: cannot be read as HTML ({warning})")
        book = _Book(path)
        book.trees[path] = root
        if warning:
            book.warn(f"{path}: {warning}")
        language = root.get("lang") or root.get("{http://www.w3.org/XML/1998/namespace}lang")
        self._start(book, _Package("", [], language or "", [path], [], {}, None, ""))

    def _note_label(self, path: str):  # noqa: ANN202 - a callable for ChapterWriter
        label = self.book.note_label(path)
        return lambda href: None if urldefrag(href)[0] else label(href)  # this page's only

    def _title(self) -> str:
        writer = self.book.writers.get(self.package.order[0])
        return writer.chapter.title if writer is not None else ""


def read_html(path: str, encoding: str | None = None) -> tuple[str, BookInfo]:
    """Read a whole HTML or XHTML file into Markdown text and its ``BookInfo``.

    Raises:
        DocumentError: the file cannot be read.
    """
    return HtmlReading(path, encoding).whole()
