"""Where the user stopped in each document, anchored on the text so edits do not lose it.

One JSON file, ``$XDG_STATE_HOME/vvreader/positions.json`` (``~/.local/state/...``), or
``$VVREADER_STATE_DIR/positions.json``. Each document is keyed by its absolute path, with a
fingerprint of its beginning as a second key (so a renamed or moved file is still found).
A position stores the source offset of the utterance, its source text and a little text
before it; :func:`locate` finds that text again in an edited file: at the same offset,
else the occurrence nearest the old offset (preferring one with the same text before it),
else the nearest occurrence of the sentence's beginning, else the same fraction of the file.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vvreader.config import atomic_write, set_aside
from vvreader.paths import state_dir

__all__ = ["Position", "PositionStore", "locate", "fingerprint"]

_CONTEXT = 48
_TEXT = 160
_KEEP = 500  # documents remembered


def fingerprint(text: str) -> str:
    """A short hash of the document's beginning."""
    return hashlib.sha1(text[:2048].encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True)
class Position:
    """A reading position in a document."""

    offset: int
    """Source offset where the utterance starts."""
    text: str
    """The utterance's source text (at most 160 characters)."""
    before: str
    """Up to 48 characters of the document before ``offset``."""
    length: int
    """Length of the document when saved."""
    index: int = 0
    """Utterance index when saved (a hint only)."""
    saved: float = 0.0
    """Unix time of the save."""
    fingerprint: str = ""

    @classmethod
    def at(cls, text: str, start: int, end: int, index: int) -> Position:
        """The position of the span ``[start, end)`` of ``text``."""
        return cls(
            offset=start,
            text=text[start : min(end, start + _TEXT)],
            before=text[max(0, start - _CONTEXT) : start],
            length=len(text),
            index=index,
            saved=time.time(),
            fingerprint=fingerprint(text),
        )


def _occurrences(text: str, needle: str, limit: int = 10000) -> list[int]:
    out, i = [], text.find(needle)
    while i >= 0 and len(out) < limit:
        out.append(i)
        i = text.find(needle, i + 1)
    return out


def locate(text: str, pos: Position) -> int:
    """The offset in ``text`` (maybe edited since) that best matches ``pos``."""
    if pos.text and text.startswith(pos.text, pos.offset):
        return pos.offset
    # Candidates: where the sentence (or its beginning) occurs, and where the text that
    # preceded it ends. Best: preceded by the same text, then the whole sentence, then near.
    full = set(_occurrences(text, pos.text)) if pos.text else set()
    prefix = pos.text[:40]
    hits = full | (set(_occurrences(text, prefix)) if len(prefix) >= 8 else set())
    if len(pos.before) >= 8:
        hits |= {i + len(pos.before) for i in _occurrences(text, pos.before)}
    if hits:

        def score(i: int) -> tuple[bool, bool, int]:
            same_before = bool(pos.before) and text[max(0, i - len(pos.before)) : i] == pos.before
            return (not same_before, i not in full, abs(i - pos.offset))

        return min(hits, key=score)
    if pos.length <= 0:
        return 0
    return min(len(text), round(pos.offset * len(text) / pos.length))


class PositionStore:
    """The positions file. Loading never raises: a corrupt file is set aside, with a
    warning in :attr:`warnings`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or state_dir() / "positions.json"
        self.warnings: list[str] = []
        self._docs: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as err:
            self.warnings.append(f"{self.path}: cannot read saved positions ({err})")
            return
        try:
            data = json.loads(raw)
            docs = data["documents"]
            if not isinstance(docs, dict):
                raise TypeError("documents is not an object")
            for entry in docs.values():
                Position(**entry)
        except (ValueError, KeyError, TypeError) as err:
            try:
                moved = set_aside(self.path).name
            except OSError:
                moved = "(could not move it)"
            self.warnings.append(
                f"{self.path}: saved positions are corrupt ({err}); moved to {moved}"
            )
            return
        self._docs = docs

    @staticmethod
    def key(path: str | Path) -> str:
        return str(Path(path).expanduser().resolve())

    def get(self, path: str | Path, text: str) -> Position | None:
        """The saved position of the document at ``path`` whose text is ``text``."""
        entry = self._docs.get(self.key(path))
        if entry is None:
            fp = fingerprint(text)
            same = [e for e in self._docs.values() if e.get("fingerprint") == fp]
            entry = max(same, key=lambda e: e.get("saved", 0), default=None)
        return Position(**entry) if entry is not None else None

    def put(self, path: str | Path, position: Position) -> None:
        self._docs[self.key(path)] = asdict(position)
        if len(self._docs) > _KEEP:
            oldest = sorted(self._docs, key=lambda k: self._docs[k].get("saved", 0))
            for k in oldest[: len(self._docs) - _KEEP]:
                del self._docs[k]

    def save(self) -> None:
        """Write the file atomically (raises OSError when the folder is not writable)."""
        atomic_write(self.path, json.dumps({"version": 1, "documents": self._docs}, indent=1))
