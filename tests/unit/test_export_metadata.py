"""What an exported file says about itself: tag text, chapter times, FFmpeg's metadata file,
Vorbis chapter comments, language codes and the cover image, from untrusted book data."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from vvreader.export.cover import flac_picture, read_cover
from vvreader.export.languages import ISO_639_1_TO_2T, iso639_2
from vvreader.export.metadata import (
    TAG_MAX_CHARS,
    Chapter,
    ChapterMark,
    chapter_marks,
    ffmetadata,
    ffmetadata_escape,
    tag_text,
    vorbis_chapter_comments,
    vorbis_time,
)


def test_tag_text_is_one_clean_line() -> None:
    assert tag_text("  A\ttitle\r\nover\x00 lines\u2028 \x1b[2J ") == "A title over lines [2J"
    assert tag_text("\u202eright-to-left\u202c") == "\u202eright-to-left\u202c"  # bidi kept
    assert tag_text("\n\t ") == ""
    long = tag_text("word " * 1000)
    assert len(long) == TAG_MAX_CHARS and long.endswith("…")


def test_chapter_marks_tile_the_audio() -> None:
    chapters = [Chapter("One", 0.0, 61.5), Chapter("Two", 61.5, 120.0004)]
    assert chapter_marks(chapters, 120_000) == [
        ChapterMark("One", 0, 61_500),
        ChapterMark("Two", 61_500, 120_000),
    ]


def test_chapter_marks_from_odd_seconds_still_tile() -> None:
    chapters = [
        Chapter("late first", 0.7, 3),  # the first starts at 0 whatever it says
        Chapter("two", 3.0, 2),
        Chapter("backwards", 2.0, 5),  # never before the one it follows
        Chapter("\n", 5.0, 9),  # no title: its number
        Chapter("past the end", 500.0, 600),  # inside the audio
    ]
    marks = chapter_marks(chapters, 10_000)
    assert [(m.start_ms, m.end_ms) for m in marks] == [
        (0, 3_000),
        (3_000, 3_000),
        (3_000, 5_000),
        (5_000, 10_000),
        (10_000, 10_000),
    ]
    titles = ["late first", "two", "backwards", "Chapter 4", "past the end"]
    assert [m.title for m in marks] == titles
    assert chapter_marks([], 10_000) == []


def test_ffmetadata_escapes_what_would_change_its_meaning() -> None:
    assert ffmetadata_escape("a=b;c#d\\e\nf") == "a\\=b\\;c\\#d\\\\e\\\nf"
    # A final backslash would escape the line's end: a space follows it.
    assert ffmetadata_escape("ends in \\") == "ends in \\\\ "
    text = ffmetadata(
        {"title": "[CHAPTER]", "artist": "", "album": "x=y"},
        [ChapterMark("; comment?", 0, 1500), ChapterMark("#2", 1500, 3000)],
    )
    assert text.splitlines() == [
        ";FFMETADATA1",
        "title=[CHAPTER]",  # a key's value: only a line starting with it opens a section
        "album=x\\=y",
        "[CHAPTER]",
        "TIMEBASE=1/1000",
        "START=0",
        "END=1500",
        "title=\\; comment?",
        "[CHAPTER]",
        "TIMEBASE=1/1000",
        "START=1500",
        "END=3000",
        "title=\\#2",
    ]


def test_vorbis_chapter_comments() -> None:
    assert vorbis_time(3_723_004) == "01:02:03.004"
    marks = [ChapterMark("Start", 0, 90_500), ChapterMark("Ünïcode", 90_500, 100_000)]
    assert vorbis_chapter_comments(marks) == {
        "CHAPTER001": "00:00:00.000",
        "CHAPTER001NAME": "Start",
        "CHAPTER002": "00:01:30.500",
        "CHAPTER002NAME": "Ünïcode",
    }


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("en", "eng"),
        ("en-GB", "eng"),
        ("EN_us", "eng"),
        ("de", "deu"),
        ("ger", "deu"),  # bibliographic becomes terminology
        ("fr-CA", "fra"),
        ("zh-Hant-TW", "zho"),
        ("haw", "haw"),
        ("und", ""),
        ("", ""),
        ("x-private", ""),
        ("e1", ""),
        ("-rf", ""),
    ],
)
def test_language_codes(tag, code) -> None:
    assert iso639_2(tag) == code


def test_every_two_letter_code_has_three_letters() -> None:
    assert len(ISO_639_1_TO_2T) == 184
    assert all(len(k) == 2 and len(v) == 3 and v.isalpha() for k, v in ISO_639_1_TO_2T.items())


def png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00" * 3
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xda\x00\x02"


def test_a_png_and_a_jpeg_cover_are_read() -> None:
    cover = read_cover(png(30, 20))
    assert cover is not None
    assert (cover.mime, cover.width, cover.height, cover.depth) == ("image/png", 30, 20, 24)
    cover = read_cover(jpeg_header(640, 480))
    assert cover is not None
    assert (cover.mime, cover.width, cover.height, cover.depth) == ("image/jpeg", 640, 480, 24)


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"GIF89a....",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        png(30, 20)[:20],  # cut inside IHDR
        png(0, 20),
        jpeg_header(640, 480)[:30],  # cut inside the frame header
        b"\xff\xd8\xff\xe0\xff\xff",  # a segment longer than the data
        b"\xff\xd8\xff\xe0\x00\x01",  # a length smaller than itself
        b"\xff\xd8\xff\xda\x00\x02",  # image data before any frame header
        b"\xff\xd8" + b"\xff" * 1000,  # fill bytes to the end
        jpeg_header(0, 480),
    ],
)
def test_a_cover_that_does_not_read_whole_is_none(data) -> None:
    assert read_cover(data) is None


def test_the_flac_picture_block_reads_back() -> None:
    data = png(3, 2)
    cover = read_cover(data)
    assert cover is not None
    block = base64.b64decode(base64.b64encode(flac_picture(cover)))
    kind, mime_len = struct.unpack(">II", block[:8])
    assert kind == 3  # front cover
    mime = block[8 : 8 + mime_len]
    at = 8 + mime_len
    (desc_len,) = struct.unpack(">I", block[at : at + 4])
    at += 4 + desc_len
    width, height, depth, colours, size = struct.unpack(">IIIII", block[at : at + 20])
    assert (mime, desc_len, width, height, depth, colours) == (b"image/png", 0, 3, 2, 24, 0)
    assert block[at + 20 :] == data and size == len(data)
