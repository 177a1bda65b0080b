"""Hostile books: each ends with a plan or one clear line, never a traceback, in bounded
time and memory, and nothing is read from the disk or the network outside the book."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from tests.books import CONTAINER, make_epub, xhtml, zip_files
from vvreader.text import epub
from vvreader.text.files import DocumentError
from vvreader.text.plan import ProgressivePlan, build_plan
from vvreader.text.readers import load_document

ROOT = Path(__file__).resolve().parents[2]
SECRET = "TOP-SECRET-LINE"


#: What the command line may use on any of these books (they are small: the 10 MB chapter is
#: planned in-process below).
PEAK_BYTES = 512 * 1024 * 1024
SECONDS = 60


#: Runs the command after it and writes that command's peak resident memory (bytes) to the
#: file named first. The command is started from this small process, not from the test's: on
#: Linux a program started from a large process (vfork, then exec) keeps that process's
#: resident size in its own peak, and the suite's process holds full-size models.
_MEASURED = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kilobytes on Linux
open(sys.argv[1], "w").write(str(peak))
sys.exit(code)
"""


def plan_cli(path: Path) -> tuple[int, str, str]:
    """Run the real command line's ``--plan`` on ``path`` within bounded time and memory
    (its peak resident memory, measured); never a traceback. Returns (code, out, err)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        peak_file = Path(scratch) / "peak"
        proc = subprocess.Popen(
            [sys.executable, "-c", _MEASURED, str(peak_file),
             sys.executable, "-m", "vvreader", str(path), "--plan"],
            stdout=out, stderr=err, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise AssertionError(f"{path.name}: still running after {SECONDS} s") from None
        peak = int(peak_file.read_text())
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    assert "Traceback" not in stderr
    assert peak < PEAK_BYTES, f"{path.name}: {peak >> 20} MiB"
    return proc.returncode, stdout, stderr


def one_line_error(path: Path) -> str:
    """Run the real command line on ``path``; it must fail with exactly one line."""
    code, _, stderr = plan_cli(path)
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def read_with_warnings(path: Path) -> list[str]:
    """Run the real command line on ``path``; it must print a plan, and on stderr only
    warnings (returned)."""
    code, stdout, stderr = plan_cli(path)
    assert code == 0 and stdout.strip(), stderr
    lines = stderr.splitlines()
    assert all(line.startswith("vvreader: warning: ") for line in lines), stderr
    return lines


def spoken(path: Path) -> str:
    return " ".join(u.speak for u in build_plan(load_document(str(path))))


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    return secret


def test_external_entity_in_a_chapter_is_not_read(tmp_path: Path, secret_file: Path) -> None:
    page = (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE html [<!ENTITY xxe SYSTEM "file://{secret_file}">]>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>Before &xxe; after.</p></body></html>'
    )
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", page)], toc=[])
    assert spoken(book) == "Before after."
    assert read_with_warnings(book) == []


def test_external_entity_in_the_package_is_refused(tmp_path: Path, secret_file: Path) -> None:
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml("<p>x</p>"))], toc=[])
    with zipfile.ZipFile(book) as z:
        files = {n: z.read(n) for n in z.namelist() if n != "mimetype"}
    opf = files["OEBPS/content.opf"].decode()
    files["OEBPS/content.opf"] = opf.replace(
        "<package",
        f'<!DOCTYPE package [<!ENTITY xxe SYSTEM "file://{secret_file}">]><package',
        1,
    ).replace("A Test Book", "&xxe;")
    bad = zip_files(tmp_path / "xxe.epub", files)
    line = one_line_error(bad)
    assert "declares XML entities" in line and SECRET not in line


LAUGHS = (
    '<!DOCTYPE html [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)


def test_billion_laughs_in_a_chapter(tmp_path: Path) -> None:
    page = (
        f'<?xml version="1.0"?>\n{LAUGHS}\n<html xmlns="http://www.w3.org/1999/xhtml">'
        "<body><p>Hi &lol9; there.</p></body></html>"
    )
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", page)], toc=[])
    start = time.perf_counter()
    assert spoken(book) == "Hi there."
    assert time.perf_counter() - start < 5
    assert read_with_warnings(book) == []


def test_billion_laughs_in_the_package(tmp_path: Path) -> None:
    files = {
        "META-INF/container.xml": CONTAINER,
        "OEBPS/content.opf": (
            f'<?xml version="1.0"?>{LAUGHS}<package><metadata>&lol9;</metadata></package>'
        ),
    }
    line = one_line_error(zip_files(tmp_path / "b.epub", files))
    assert "declares XML entities" in line


def test_zip_bomb_entry(tmp_path: Path) -> None:
    bomb = b"<p>" + b" " * (epub.MAX_ENTRY_BYTES + 1024) + b"</p>"
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", bomb)], toc=[])  # type: ignore[list-item]
    assert book.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(DocumentError, match="unpacks to more than 32 MiB"):
            load_document(str(book))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # refused from the header, before unpacking
    assert "unpacks to more than" in one_line_error(book)


def test_zip_bomb_whole_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chapter = xhtml("<p>" + "word " * 200_000 + "</p>")
    book = make_epub(tmp_path / "b.epub", [(f"c{i}.xhtml", chapter) for i in range(8)], toc=[])
    monkeypatch.setattr(epub, "MAX_BOOK_BYTES", 4 * len(chapter))
    with pytest.raises(DocumentError, match="a zip bomb"):
        load_document(str(book))


def test_lying_entry_size_is_caught(tmp_path: Path) -> None:
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml("<p>" + "x" * 5000 + "</p>"))], toc=[])
    data = bytearray(book.read_bytes())
    with zipfile.ZipFile(book) as z:
        info = z.getinfo("OEBPS/a.xhtml")
    # Shrink the declared size in the central directory: the reader must not trust it.
    central = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06"))
    while central >= 0:
        name_len = int.from_bytes(data[central + 28 : central + 30], "little")
        if data[central + 46 : central + 46 + name_len] == b"OEBPS/a.xhtml":
            data[central + 24 : central + 28] = (10).to_bytes(4, "little")
            break
        central = data.rfind(b"PK\x01\x02", 0, central)
    assert info.file_size > 5000
    lying = tmp_path / "lying.epub"
    lying.write_bytes(bytes(data))
    assert "truncated or corrupt" in one_line_error(lying)


def test_path_traversal_names_are_never_paths(tmp_path: Path, secret_file: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rel = Path("../" * 12) / str(secret_file).lstrip("/")
    files = {
        "META-INF/container.xml": CONTAINER,
        "OEBPS/content.opf": (
            '<package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata/>'
            f'<manifest><item id="e" href="{rel}" media-type="application/xhtml+xml"/>'
            '<item id="z" href="../../../../evil.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="a" href="a.xhtml" media-type="application/xhtml+xml"/></manifest>'
            '<spine><itemref idref="e"/><itemref idref="z"/><itemref idref="a"/></spine></package>'
        ),
        "OEBPS/a.xhtml": xhtml("<p>Safe text.</p>"),
        "../../../../evil.xhtml": xhtml("<p>Evil text.</p>"),
    }
    book = zip_files(tmp_path / "b.epub", files)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    doc = load_document(str(book))
    assert spoken(book) == "Safe text."
    assert doc.book is not None and any("not in the manifest" in w for w in doc.book.warnings)
    assert len(read_with_warnings(book)) == len(doc.book.warnings)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_symlink_entry_is_ignored(tmp_path: Path, secret_file: Path) -> None:
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", xhtml("<p>Real text.</p>")), ("link.xhtml", "placeholder")],
        toc=[],
    )
    with zipfile.ZipFile(book) as z:
        files = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(book, "w") as z:
        for info, data in files:
            if info.filename == "OEBPS/link.xhtml":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                data = str(secret_file).encode()
            z.writestr(info, data)
    doc = load_document(str(book))
    assert spoken(book) == "Real text."
    assert SECRET not in doc.text and str(secret_file) not in doc.text
    assert doc.book is not None and any("link.xhtml is missing" in w for w in doc.book.warnings)
    assert any("link.xhtml is missing" in w for w in read_with_warnings(book))


@pytest.mark.parametrize(
    ("marker", "scheme"),
    [
        ("META-INF/rights.xml", "Adobe ADEPT"),
        ("META-INF/sinf.xml", "Apple FairPlay"),
        ("META-INF/license.lcpl", "Readium LCP"),
    ],
)
def test_drm_protected_book(tmp_path: Path, marker: str, scheme: str) -> None:
    encryption = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
        '<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
        '<enc:CipherData><enc:CipherReference URI="OEBPS/a.xhtml"/></enc:CipherData>'
        "</enc:EncryptedData></encryption>"
    )
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", b"\x8f\x12binary ciphertext")],  # type: ignore[list-item]
        toc=[],
        extra={"META-INF/encryption.xml": encryption, marker: "<rights/>"},
    )
    line = one_line_error(book)
    assert line == (
        f"vvreader: {book}: this book is DRM-protected ({scheme}) and cannot be read; "
        "open a DRM-free copy"
    )


def test_font_obfuscation_is_not_drm(tmp_path: Path) -> None:
    encryption = (
        '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
        '<enc:EncryptionMethod Algorithm="http://www.idpf.org/2008/embedding"/>'
        '<enc:CipherData><enc:CipherReference URI="OEBPS/font.otf"/></enc:CipherData>'
        "</enc:EncryptedData></encryption>"
    )
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", xhtml("<p>Readable.</p>"))],
        toc=[],
        extra={"META-INF/encryption.xml": encryption},
    )
    assert spoken(book) == "Readable."


def test_truncated_and_corrupt_archives(tmp_path: Path) -> None:
    book = make_epub(
        tmp_path / "b.epub", [("a.xhtml", xhtml("<p>" + "text " * 3000 + "</p>"))], toc=[]
    )
    data = book.read_bytes()
    cut = tmp_path / "cut.epub"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in one_line_error(cut)
    flipped = bytearray(data)
    with zipfile.ZipFile(book) as z:
        info = z.getinfo("OEBPS/a.xhtml")
    at = info.header_offset + 30 + len(info.filename) + 10
    flipped[at : at + 8] = b"\xff" * 8
    bad = tmp_path / "bad.epub"
    bad.write_bytes(bytes(flipped))
    assert "truncated or corrupt" in one_line_error(bad)
    empty = tmp_path / "empty.epub"
    empty.write_bytes(b"")
    assert "truncated or corrupt" in one_line_error(empty)


def test_tag_soup_chapter_reads_with_a_warning(tmp_path: Path) -> None:
    soup = (
        '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>One <b><i>two</b> three'
        "<p>Four & five <div>six</p></span></body>"
    )
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", soup)], toc=[])
    doc = load_document(str(book))
    assert doc.book is not None and any("tag soup" in w for w in doc.book.warnings)
    text = spoken(book)
    for word in ("One", "two", "three", "Four", "five", "six"):
        assert word in text
    assert any("read as tag soup" in w for w in read_with_warnings(book))


def test_missing_spine_item_is_skipped_with_a_warning(tmp_path: Path) -> None:
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", xhtml("<p>First.</p>")), ("b.xhtml", xhtml("<p>Second.</p>"))],
        toc=[],
    )
    with zipfile.ZipFile(book) as z:
        files = {n: z.read(n) for n in z.namelist() if n not in ("mimetype", "OEBPS/a.xhtml")}
    gone = zip_files(tmp_path / "gone.epub", files)
    doc = load_document(str(gone))
    assert spoken(gone) == "Second."
    assert doc.book is not None and doc.book.warnings == (
        "OEBPS/a.xhtml is missing from the book; skipped",
    )
    assert read_with_warnings(gone) == [
        "vvreader: warning: OEBPS/a.xhtml is missing from the book; skipped"
    ]


def test_remote_dtd_and_resources_are_never_fetched(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    hits: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            hits.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, name="vvreader-test-dtd-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        page = (
            '<?xml version="1.0"?>\n'
            f'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "{url}/x.dtd">\n'
            '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>Text&nbsp;here.'
            f'<img src="{url}/i.png" alt="pic"/></p>'
            f'<p><a href="{url}/page">Link</a> text.</p></body></html>'
        )
        book = make_epub(
            tmp_path / "b.epub", [("a.xhtml", page)], version=2, toc=[("a.xhtml", "A", 1)]
        )
        html_page = tmp_path / "p.html"
        html_page.write_text(page)
        start = time.perf_counter()
        assert spoken(book) == "A. Text here. Link text."
        assert "Link text." in spoken(html_page)
        assert time.perf_counter() - start < 5
        assert read_with_warnings(book) == read_with_warnings(html_page) == []
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert hits == []


def test_ten_megabyte_chapter(tmp_path: Path) -> None:
    para = "<p>It was a <em>dark</em> and stormy night; the rain fell in torrents.</p>\n"
    body = "<h1>Long</h1>" + para * (10_000_000 // len(para))
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])
    start = time.perf_counter()
    progress = ProgressivePlan.open(str(book))
    first = progress.advance(20)
    took = time.perf_counter() - start
    assert [u.speak for u in first][:2] == [
        "Long.",
        "It was a dark and stormy night; the rain fell in torrents.",
    ]
    # Only the chapter's first part is converted for the first page (the rest is left to
    # the background), so its time does not grow with the chapter.
    assert len(first.document.text) < 2 * epub.PART_CHARS and not first.complete
    assert took < 20  # bounded, with room for a loaded shared machine (about 0.5 s alone)
