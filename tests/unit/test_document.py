"""Loading, decoding and parsing documents into blocks."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from vvreader.text.files import MAX_BYTES, DocumentError, decode
from vvreader.text.readers import load_document, parse

SAMPLE = Path(__file__).parents[1] / "fixtures" / "sample.md"


def test_blocks_of_sample():
    doc = load_document(str(SAMPLE))
    kinds = [b.kind for b in doc.blocks]
    assert kinds[:3] == ["front_matter", "heading", "paragraph"]
    assert kinds.count("heading") == 3 and kinds.count("table") == 1
    assert kinds.count("code") == 2 and kinds.count("html") == 2 and kinds.count("rule") == 1
    assert kinds.count("footnote") == 2
    # Source order, and every range is inside the text.
    assert [b.start for b in doc.blocks] == sorted(b.start for b in doc.blocks)
    for b in doc.blocks:
        assert 0 <= b.start < b.end <= len(doc.text)
        assert doc.text[b.start : b.end].strip() == doc.text[b.start : b.end]
    setext = next(b for b in doc.blocks if b.kind == "heading" and b.level == 2)
    assert doc.text[setext.start : setext.end].startswith("Setext heading")
    nested = [b for b in doc.blocks if b.list_number is not None]
    assert [b.list_number for b in nested] == [1, 2] and all(b.list_depth == 2 for b in nested)
    quotes = [b for b in doc.blocks if b.quote_depth]
    assert [b.quote_depth for b in quotes] == [1, 2]
    fence = next(b for b in doc.blocks if b.kind == "code")
    assert fence.info == "python"


def test_sections_and_headings():
    doc = parse("intro\n\n# One\n\ntext\n\n## Two\n\nmore\n")
    assert [(b.kind, b.section, b.heading) for b in doc.blocks] == [
        ("paragraph", 0, None),
        ("heading", 1, 1),
        ("paragraph", 1, 1),
        ("heading", 2, 3),
        ("paragraph", 2, 3),
    ]
    assert doc.block_at(doc.text.index("text")).index == 2
    assert doc.block_at(doc.text.index("\n\n# One")) is None


def test_bom_and_utf16():
    text, enc = decode(codecs.BOM_UTF8 + "Héllo".encode())
    assert (text, enc) == ("Héllo", "utf-8")
    text, enc = decode(codecs.BOM_UTF16_LE + "Grüße".encode("utf-16-le"))
    assert (text, enc) == ("Grüße", "utf-16-le")


def test_crlf_offsets(tmp_path):
    path = tmp_path / "crlf.md"
    path.write_bytes(b"# Title\r\n\r\nFirst line\r\nsecond line.\r\n\r\n- item\r\n")
    doc = load_document(str(path))
    assert "\r\n" in doc.text
    assert [doc.text[b.start : b.end] for b in doc.blocks] == [
        "# Title",
        "First line\r\nsecond line.",
        "- item",
    ]
    assert doc.line_of(doc.text.index("second")) == 3


def test_plain_text_crlf_and_cr_lines_join(tmp_path):
    for nl in ("\r\n", "\r"):
        path = tmp_path / "book.txt"
        path.write_bytes(f"One wrapped{nl}line here.{nl}{nl}Two.{nl}".encode())
        doc = load_document(str(path))
        spans = [doc.text[b.start : b.end] for b in doc.blocks]
        assert spans == [f"One wrapped{nl}line here.", "Two."]


def test_plain_text_paragraphs(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("  One wrapped\nline here.\n\n\n\nTwo.\n   \nThree\n", "utf-8")
    doc = load_document(str(path))
    assert not doc.markdown
    assert [doc.text[b.start : b.end] for b in doc.blocks] == [
        "One wrapped\nline here.",
        "Two.",
        "Three",
    ]


def test_empty_file(tmp_path):
    path = tmp_path / "empty.md"
    path.write_bytes(b"")
    assert load_document(str(path)).blocks == ()


def test_binary_refused(tmp_path):
    path = tmp_path / "a.md"
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)) * 10)
    with pytest.raises(DocumentError, match="binary"):
        load_document(str(path))


def test_invalid_utf8_forced_is_refused():
    with pytest.raises(DocumentError, match=r"not valid utf-8 \(byte 3\)"):
        decode(b"caf\xe9 au lait", "x.md", encoding="utf-8")
    with pytest.raises(DocumentError, match="unknown encoding"):
        decode(b"abc", "x.md", encoding="no-such-codec")


def test_legacy_encoding_detected_or_refused():
    data = "Le café crème est brûlé. Très bien, merci à vous.".encode("cp1252")
    try:
        import charset_normalizer  # noqa: F401
    except ImportError:
        with pytest.raises(DocumentError, match="not valid UTF-8"):
            decode(data)
        return
    text, enc = decode(data)
    assert enc == "cp1252" and "café crème est brûlé" in text


def test_too_large_refused(tmp_path):
    path = tmp_path / "huge.md"
    with path.open("wb") as f:
        f.truncate(50 * 1024 * 1024)
    assert path.stat().st_size > MAX_BYTES
    with pytest.raises(DocumentError, match="larger than"):
        load_document(str(path))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DocumentError, match="no such file"):
        load_document(str(tmp_path / "nope.md"))
    with pytest.raises(DocumentError, match="directory"):
        load_document(str(tmp_path))
