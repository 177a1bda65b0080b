"""Choosing the voice, UI-free: the voices on offer, the next one, the picker's preview
(undone when the picker is cancelled), and preset voices downloaded when first chosen, one
at a time, while the current voice reads on."""

from __future__ import annotations

from collections.abc import Callable


class VoiceChoice:
    """The rules of choosing a voice; what they lead to goes out through the callbacks.

    Args:
        current: the voice read with now.
        use: read with this voice from the next utterance.
        read_here: read the current utterance again, now (a preview).
        fetch: download this preset voice (:meth:`fetched` is called when it ends).
        say: tell the reader something.
    """

    def __init__(
        self,
        current: Callable[[], str],
        use: Callable[[str], None],
        read_here: Callable[[], None],
        fetch: Callable[[str], None],
        say: Callable[[str], None],
    ) -> None:
        self._current, self._use, self._read_here = current, use, read_here
        self._fetch, self._say = fetch, say
        self.names: list[str] = []
        """The voices on offer (known once the model is loaded)."""
        self.missing: set[str] = set()
        """Preset voices of :attr:`names` that are downloaded when first chosen."""
        self.fetching: str | None = None
        """The voice being downloaded."""
        self._preview_from: str | None = None

    def offer(self, names: list[str], missing: set[str], preferred: str = "") -> str | None:
        """The model is ready with ``names``; ``preferred`` if it is the voice to read with
        now (none is set), else None."""
        self.names, self.missing = names, set(missing)
        if self._current() or not preferred:
            return None
        return preferred

    def known(self) -> bool:
        """Whether there are voices to choose from (if not, the reader is told why)."""
        if not self.names:
            self._say("The voices are known once the model is loaded.")
        return bool(self.names)

    def next(self) -> None:
        """Choose the voice after the current one."""
        if self.known():
            current = self._current()
            i = self.names.index(current) if current in self.names else -1
            self.choose(self.names[(i + 1) % len(self.names)])

    def choose(self, voice: str) -> None:
        """Read with ``voice`` from the next utterance, downloading it first if needed."""
        if voice not in self.missing:
            self._use(voice)
        elif self.fetching is not None:
            self._say(f"Still downloading voice {self.fetching}.")
        else:
            self.fetching = voice
            self._fetch(voice)

    def fetched(self, voice: str, ok: bool) -> None:
        """The download of ``voice`` ended; read with it if it worked."""
        if self.fetching == voice:
            self.fetching = None
        if ok:
            self.missing.discard(voice)
            self._use(voice)

    def picking(self) -> None:
        """The picker opens: its previews are undone if it is cancelled."""
        self._preview_from = self._current()

    def preview(self, voice: str) -> None:
        """The picker highlights ``voice``: hear the current utterance with it (a voice not
        downloaded yet is not previewed)."""
        if voice != self._current() and voice not in self.missing:
            self._use(voice)
            self._read_here()

    def picked(self, voice: str | None) -> None:
        """The picker closed with ``voice`` (None: cancelled, back to the voice before)."""
        original, self._preview_from = self._preview_from, None
        if voice is None and original is not None and original != self._current():
            self._use(original)
        elif voice is not None and voice != self._current():
            self.choose(voice)
