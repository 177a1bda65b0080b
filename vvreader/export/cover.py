"""A book's cover image, checked before it goes into an audio file.

The bytes come from the book, which is untrusted: only a PNG or a JPEG whose header reads
whole is used (its type told by its first bytes, not by what the book claims), and its size
is read with every offset checked against the data's length.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# Start-of-frame markers (those that carry the size): SOF0..SOF15 but DHT, JPG and DAC.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class Cover:
    data: bytes
    mime: str
    """``image/png`` or ``image/jpeg``, from the data itself."""
    width: int
    height: int
    depth: int
    """Bits per pixel."""

    @property
    def suffix(self) -> str:
        return ".png" if self.mime == "image/png" else ".jpg"


def read_cover(data: bytes | None) -> Cover | None:
    """The cover if ``data`` is a PNG or a JPEG whose size can be read, else None."""
    if not data:
        return None
    if data.startswith(PNG_MAGIC):
        return _png(data)
    if data.startswith(JPEG_MAGIC):
        return _jpeg(data)
    return None


def _png(data: bytes) -> Cover | None:
    # The IHDR chunk comes first: length, type, width, height, bit depth, colour type.
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height, bits, colour = struct.unpack(">IIBB", data[16:26])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if not width or not height or channels is None:
        return None
    return Cover(data, "image/png", width, height, bits * channels)


def _jpeg(data: bytes) -> Cover | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2 or i + 2 + length > len(data):
            return None
        if marker in _JPEG_SOF:
            if length < 8:
                return None
            bits, height, width, components = struct.unpack(">BHHB", data[i + 4 : i + 10])
            if not width or not height:
                return None
            return Cover(data, "image/jpeg", width, height, bits * components)
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def flac_picture(cover: Cover) -> bytes:
    """The cover as a FLAC PICTURE block's body (front cover), the form that Vorbis comments
    carry base64-encoded as ``METADATA_BLOCK_PICTURE``."""
    mime = cover.mime.encode("ascii")
    return b"".join(
        [
            struct.pack(">II", 3, len(mime)),
            mime,
            struct.pack(">I", 0),  # no description
            struct.pack(">IIII", cover.width, cover.height, cover.depth, 0),
            struct.pack(">I", len(cover.data)),
            cover.data,
        ]
    )
