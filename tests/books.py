"""Builders of EPUB files for the book tests: small books written here, and the public
test books under tests/data zipped as they are."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

DATA = Path(__file__).parent / "data"

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>"""


def xhtml(body: str, title: str = "Chapter", head: str = "") -> str:
    """An XHTML content document around ``body``."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">'
        f"<head><title>{title}</title>{head}</head><body>{body}</body></html>"
    )


def zip_files(path: Path, files: dict[str, str | bytes], mimetype: bool = True) -> Path:
    """Write ``files`` (entry name to content) into a zip, ``mimetype`` first and stored."""
    with zipfile.ZipFile(path, "w") as z:
        if mimetype:
            z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, content in files.items():
            z.writestr(name, content, compress_type=zipfile.ZIP_DEFLATED)
    return path


def make_epub(
    path: Path,
    chapters: list[tuple[str, str]],
    *,
    version: int = 3,
    title: str = "A Test Book",
    author: str = "Ann Author",
    toc: list[tuple[str, str, int]] | None = None,
    nonlinear: tuple[str, ...] = (),
    extra: dict[str, str | bytes] | None = None,
    spine_extra: str = "",
) -> Path:
    """An EPUB 2 (NCX) or 3 (navigation document) book.

    Args:
        chapters: (file name, XHTML) in spine order, under OEBPS/.
        toc: (href, label, depth) entries; default one per chapter.
        nonlinear: file names whose itemref is ``linear="no"``.
        extra: more entries (archive name to content).
        spine_extra: raw itemrefs added to the spine.
    """
    if toc is None:
        toc = [(name, f"Chapter {i + 1}", 1) for i, (name, _) in enumerate(chapters)]
    items = "".join(
        f'<item id="c{i}" href="{name}" media-type="application/xhtml+xml"/>'
        for i, (name, _) in enumerate(chapters)
    )
    no = ' linear="no"'
    refs = "".join(
        f'<itemref idref="c{i}"{no if name in nonlinear else ""}/>'
        for i, (name, _) in enumerate(chapters)
    )
    files: dict[str, str | bytes] = {"META-INF/container.xml": CONTAINER}
    if version == 3:
        items += (
            '<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>'
        )
        files["OEBPS/nav.xhtml"] = xhtml(_nav_list(toc), "Contents")
        spine = f"<spine>{refs}{spine_extra}</spine>"
    else:
        items += '<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>'
        files["OEBPS/toc.ncx"] = _ncx(toc, title)
        spine = f'<spine toc="ncx">{refs}{spine_extra}</spine>'
    files["OEBPS/content.opf"] = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<package xmlns="http://www.idpf.org/2007/opf" '
        f'version="{version}.0" unique-identifier="id">'
        '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f'<dc:identifier id="id">test</dc:identifier><dc:title>{title}</dc:title>'
        f"<dc:creator>{author}</dc:creator><dc:language>en</dc:language></metadata>"
        f"<manifest>{items}</manifest>{spine}</package>"
    )
    for name, content in chapters:
        files[f"OEBPS/{name}"] = content
    files.update(extra or {})
    return zip_files(path, files)


def _nav_list(toc: list[tuple[str, str, int]]) -> str:
    out = ['<nav epub:type="toc"><h1>Contents</h1><ol>']
    depth = 1
    first = True
    for href, label, level in toc:
        if level > depth:
            out.append("<ol>" * (level - depth))
        elif level < depth:
            out.append("</li></ol>" * (depth - level) + "</li>")
        elif not first:
            out.append("</li>")
        depth = level
        first = False
        out.append(f'<li><a href="{href}">{label}</a>')
    out.append(("</li>" if toc else "") + "</ol></li>" * (depth - 1) + "</ol></nav>")
    return "".join(out)


def _ncx(toc: list[tuple[str, str, int]], title: str) -> str:
    out = []
    depth = 0
    for i, (href, label, level) in enumerate(toc):
        while depth >= level:
            out.append("</navPoint>")
            depth -= 1
        out.append(
            f'<navPoint id="p{i}" playOrder="{i + 1}"><navLabel><text>{label}</text></navLabel>'
            f'<content src="{href}"/>'
        )
        depth = level
    out.append("</navPoint>" * depth)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<!DOCTYPE ncx PUBLIC "-//NISO//DTD ncx 2005-1//EN" '
        '"http://www.daisy.org/z3986/2005/ncx-2005-1.dtd">\n'
        '<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">'
        f"<docTitle><text>{title}</text></docTitle><navMap>{''.join(out)}</navMap></ncx>"
    )


def zip_folder(folder: Path, path: Path) -> Path:
    """Zip an unpacked EPUB folder (``mimetype`` first and stored)."""
    with zipfile.ZipFile(path, "w") as z:
        z.write(folder / "mimetype", "mimetype", compress_type=zipfile.ZIP_STORED)
        for root, _, names in os.walk(folder):
            for name in sorted(names):
                full = Path(root) / name
                rel = full.relative_to(folder).as_posix()
                if rel != "mimetype":
                    z.write(full, rel, compress_type=zipfile.ZIP_DEFLATED)
    return path
