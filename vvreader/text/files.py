"""Reading a document file: size limit, encodings, binary files, clear errors.

``read_file`` gives the decoded text of a file or of stdin (``-``); what it holds (Markdown,
plain text) is the readers' business (``vvreader.text.readers``).
"""

from __future__ import annotations

import codecs
import re
import sys
from pathlib import Path

__all__ = ["MAX_BYTES", "DocumentError", "decode", "read_file", "read_file_bytes"]

#: Files above this size are refused.
MAX_BYTES = 32 * 1024 * 1024


class DocumentError(Exception):
    """A document cannot be read; the message says what is wrong and what to do."""


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def decode(data: bytes, name: str = "<text>", encoding: str | None = None) -> tuple[str, str]:
    """Decode file bytes to text.

    UTF-8 (with or without BOM) and BOM-marked UTF-16/32 are read directly. Other bytes are
    refused as binary when they hold NUL or many control bytes, else decoded with the
    encoding that charset-normalizer detects (when installed), else refused.

    Args:
        data: The raw bytes.
        name: Shown in error messages.
        encoding: Force this encoding instead of detecting one.

    Returns:
        ``(text, encoding)``.

    Raises:
        DocumentError: binary data, undecodable text or an unknown encoding.
    """
    if encoding:
        try:
            return data.decode(encoding), encoding
        except LookupError:
            raise DocumentError(f"{name}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as err:
            raise DocumentError(
                f"{name}: not valid {encoding} (byte {err.start}); try another --encoding"
            ) from None
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(enc), enc
            except UnicodeDecodeError as err:
                raise DocumentError(
                    f"{name}: starts with a {enc} byte-order mark but byte {err.start} is not "
                    f"valid {enc}; re-save the file as UTF-8"
                ) from None
    head = data[:65536]
    if b"\x00" in head or len(_CONTROL.findall(head)) > max(8, len(head) // 100):
        raise DocumentError(f"{name}: looks like a binary file, not text; open a .md or .txt file")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as err:
        bad = err.start
    guess = _detect(data)
    if guess is None:
        raise DocumentError(
            f"{name}: not valid UTF-8 (byte {bad}) and its encoding could not be detected; "
            "convert it to UTF-8 or pass --encoding"
        )
    return data.decode(guess, errors="replace"), guess


def _detect(data: bytes) -> str | None:
    """Guess a legacy encoding with charset-normalizer, if it is installed."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    matches = from_bytes(data[: 1 << 20])
    best = matches.best()
    if best is None or best.encoding in ("utf_8", "ascii"):
        return None
    # Short samples fit several single-byte code pages; prefer Western European then.
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.05:
            return "cp1252"
    return best.encoding


def read_file_bytes(path: str) -> bytes:
    """Read a file or stdin (``-``), with clear errors and a size limit.

    Raises:
        DocumentError: the file cannot be read or is too large.
    """
    if path == "-":
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
    else:
        p = Path(path)
        try:
            if p.is_dir():
                raise DocumentError(f"{path}: is a directory; give a .md or .txt file")
            size = p.stat().st_size
            if size > MAX_BYTES:
                raise DocumentError(
                    f"{path}: {size / 1e6:.1f} MB is larger than the "
                    f"{MAX_BYTES // (1024 * 1024)} MiB limit; split the document into parts"
                )
            data = p.read_bytes()
        except FileNotFoundError:
            raise DocumentError(f"{path}: no such file") from None
        except PermissionError:
            raise DocumentError(f"{path}: permission denied") from None
        except OSError as err:
            raise DocumentError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) > MAX_BYTES:
        raise DocumentError(
            f"{path}: input is larger than the {MAX_BYTES // (1024 * 1024)} MiB limit; "
            "split the document into parts"
        )
    return data


def read_file(path: str, encoding: str | None = None) -> tuple[str, str, str]:
    """Read and decode a file, or stdin (``-``).

    Args:
        path: The file.
        encoding: Force an encoding (default: detect).

    Returns:
        ``(text, name, encoding)``; ``name`` is ``<stdin>`` for ``-``.

    Raises:
        DocumentError: the file cannot be read, decoded or is not text.
    """
    name = "<stdin>" if path == "-" else path
    text, enc = decode(read_file_bytes(path), name, encoding)
    return text, name, enc
