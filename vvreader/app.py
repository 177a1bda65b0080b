"""The Textual app: composes the reading screen around the narrator, loads the engine off
the UI thread, starts the narrator on it, turns the narrator's events into notifications,
and keeps settings and the reading position on disk.

The document is shown at once; the engine loads on a worker thread. The
:class:`~vvreader.loader.Loader` (the reader's is :class:`~vvreader.loader.EngineLoader`)
reports its stages and downloads to a :class:`~vvreader.loader.LoadProgress`, which the
reading screen's banner shows; quitting cancels it. Preset voices chosen later are
downloaded on a worker the same way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.worker import get_current_worker

from engine.api import SpeechEngine, Transfer
from vvreader.config import Config, save_config
from vvreader.humanize import describe_transfer
from vvreader.keep_awake import KeepAwake
from vvreader.loader import LoadCancelled, Loader
from vvreader.media.controls import (
    CommandHandler,
    MediaCommand,
    MediaControls,
    now_playing,
)
from vvreader.media.platform import platform_controls
from vvreader.narration.commands import VoiceSettings
from vvreader.narration.events import (
    DeviceLost,
    DeviceUnavailable,
    EngineFailed,
    Event,
    PlayWhenReady,
    SleepEnded,
)
from vvreader.narration.narrator import Narrator
from vvreader.player import AudioDeviceError, NullPlayer, OutputFactory, open_output
from vvreader.screens.reading import ReadingScreen
from vvreader.state import Position, PositionStore, locate
from vvreader.text.document import BookInfo
from vvreader.text.plan import ProgressivePlan, SpeechPlan
from vvreader.themes import DEFAULT_THEME, load_themes

__all__ = ["ReaderApp", "ReaderOptions"]

REPORTS_PER_SECOND = 10
"""At most this many download reports a second reach the UI (plus the last one)."""


@dataclass
class ReaderOptions:
    """What the command line and the config file decided."""

    config: Config = field(default_factory=Config)
    """Settings in effect (command line over config file)."""
    config_file: Path | None = None
    """Where changed settings are saved (None: not saved)."""
    document_path: str | None = None
    """The file read, for the saved position (None for stdin)."""
    model_id: str = ""
    """Part of the audio cache key."""
    warnings: list[str] = field(default_factory=list)
    """Shown as notifications at start-up."""


class ReaderApp(App[None]):
    """``vvreader FILE``."""

    TITLE = "vvreader"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
        Binding("q", "quit", "Quit", id="quit-q"),
    ]

    class PlanGrew(Message):
        """The background planner has planned more of the book."""

    class Loading(Message):
        """A loading thread moved on: a stage, or a download's progress."""

        def __init__(self, target: str, what: str, transfer: Transfer | None) -> None:
            self.target = target
            """"engine" or "voice"."""
            self.what = what
            self.transfer = transfer
            super().__init__()

    class VoiceFetched(Message):
        """A preset voice download ended (``error``: None when it worked)."""

        def __init__(self, name: str, error: str | None) -> None:
            self.name = name
            self.error = error
            super().__init__()

    class MediaKey(Message):
        """A media button was pressed (headset, keyboard, desktop widget)."""

        def __init__(self, command: MediaCommand) -> None:
            self.command = command
            super().__init__()

    class MediaRate(Message):
        """A desktop widget set the listening speed."""

        def __init__(self, speed: float) -> None:
            self.speed = speed
            super().__init__()

    class Narrated(Message):
        """The narrator said something (posted from its thread)."""

        def __init__(self, event: Event) -> None:
            self.event = event
            super().__init__()

    def __init__(
        self,
        plan: SpeechPlan,
        options: ReaderOptions,
        loader: Loader,
        positions: PositionStore | None = None,
        make_output: Callable[[str], OutputFactory] | None = None,
        progress: ProgressivePlan | None = None,
        media: Callable[[CommandHandler, Callable[[float], None]], MediaControls] | None = None,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.progress = progress
        """Plans the rest of a big book in the background (None: ``plan`` is whole)."""
        self._swapped_at = 0.0
        self._book_warnings_shown = 0
        """How many of the book's warnings the reader has been told (they come as the book
        is read in parts, each once)."""
        self.options = options
        self.config = options.config
        self.positions = positions
        self.loader = loader
        """Opens the engine and downloads preset voices (called on worker threads)."""
        self._quitting = threading.Event()
        self._make_output = make_output or _device_output
        self.engine: SpeechEngine | None = None
        self._saved_position: object = None
        c = options.config
        self._resume_offset = self._saved_offset()
        start = self._index_at(self._resume_offset)
        if start is not None or self._resume_offset is None:
            self._resume_offset = None
        self.narrator = Narrator(
            plan,
            VoiceSettings(c.voice, c.cfg_scale, c.steps),
            start=start or 0,
            autoplay=c.autoplay and self._resume_offset is None,
            lookahead=c.lookahead,
            model_id=options.model_id,
            on_event=self._narrated,
            speed=c.speed,
            keep_awake=KeepAwake(),
        )
        self.reading = ReadingScreen(self.narrator, word_follow=c.word_follow)
        self.media: MediaControls = (media or platform_controls)(
            self._media_command, self._media_rate
        )
        """The platform's media keys and widgets (MPRIS, Now Playing)."""

    # ------------------------------------------------------------------ start-up
    def _saved_offset(self) -> int | None:
        """Where the reader stopped last time in this document (a text offset)."""
        path = self.options.document_path
        if self.positions is None or path is None or not len(self.plan):
            return None
        text = self.plan.document.text
        pos = self.positions.get(path, text)
        return None if pos is None else locate(text, pos)

    def _index_at(self, offset: int | None) -> int | None:
        """The utterance at (or after) ``offset``; None when it is not planned yet."""
        if offset is None:
            return None
        u = self.plan.at_offset(offset)
        if u is None:
            u = next((x for x in self.plan if x.end > offset), None)
        if u is None:
            return len(self.plan) - 1 if self.plan.complete else None
        return u.index

    def get_default_screen(self) -> Screen:
        return self.reading

    def on_mount(self) -> None:
        themes, warnings = load_themes()
        for theme in themes:
            self.register_theme(theme)
        wanted = self.config.theme
        self.theme = wanted if wanted in self.available_themes else DEFAULT_THEME
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        if self.config.keymap:
            self.set_keymap(self.config.keymap)
        for w in [*self.options.warnings, *warnings]:
            self.notify(w, severity="warning", markup=False, timeout=8)
        if self.positions is not None:
            for w in self.positions.warnings:
                self.notify(w, severity="warning", markup=False, timeout=8)
        self._show_book_warnings(self.plan.document.book)
        if self.reading.position > 0:
            self.notify(
                f"Resuming at sentence {self.reading.position + 1} of {len(self.plan)}.", timeout=4
            )
        elif self._resume_offset is not None:
            self.notify("Finding where you stopped (planning the book)\u2026", timeout=4)
        if self.progress is not None and not self.progress.done:
            self.progress.start(lambda _progress: self.post_message(self.PlanGrew()))
        self.set_interval(10, self.save_position)
        self.run_worker(self._load_engine, thread=True, exclusive=True, name="load-engine")
        if self.config.media_keys:
            self.run_worker(self.media.start(), exit_on_error=False, name="media-keys")
            self.set_interval(0.25, self._show_media)

    # ------------------------------------------------------------------ media keys
    def _media_command(self, command: MediaCommand) -> None:
        """A media button (called in the app's loop by the media controls)."""
        self.post_message(self.MediaKey(command))

    def _media_rate(self, speed: float) -> None:
        self.post_message(self.MediaRate(speed))

    def on_reader_app_media_key(self, message: MediaKey) -> None:
        self.reading.media_key(message.command)

    def on_reader_app_media_rate(self, message: MediaRate) -> None:
        self.reading.set_speed(message.speed)

    def _show_media(self) -> None:
        n = self.narrator
        status = "finished" if n.finished else n.state.value if n.ready else "stopped"
        self.media.show(now_playing(self.plan, n.position, status, n.listening_speed))

    def _load_engine(self) -> None:
        """Worker thread: open the engine (download, load, warm-up) without blocking the UI."""
        worker = get_current_worker()
        try:
            engine = self.loader.open(_Reporter(self, "engine", lambda: worker.is_cancelled))
        except LoadCancelled:
            return
        except Exception as err:  # EngineUnavailable and anything the loader raises
            if not (worker.is_cancelled or self._quitting.is_set()):
                self.call_from_thread(self._engine_failed, str(err))
            return
        if worker.is_cancelled or self._quitting.is_set():
            engine.close()
            return
        self.call_from_thread(self._engine_ready, engine)

    def _engine_failed(self, message: str) -> None:
        self.reading.show_loading("no voice", "the model could not be loaded (see the message)")
        self.notify(
            message, title="Cannot load the model", severity="error", markup=False, timeout=30
        )

    def on_reader_app_loading(self, message: Loading) -> None:
        t = message.transfer
        detail, fraction = (describe_transfer(t), t.fraction) if t is not None else ("", None)
        if message.target == "voice":
            self.reading.set_download(message.what, detail, fraction)
        elif not self.narrator.ready:
            self.reading.show_loading(message.what, detail, fraction)

    # ------------------------------------------------------------------ preset voices
    def _missing_voices(self, voices: Iterable[str]) -> set[str]:
        """Those of ``voices`` that the loader downloads on first use."""
        return {v for v in voices if self.loader.voice_missing(v)}

    def on_reading_screen_voice_wanted(self, message: ReadingScreen.VoiceWanted) -> None:
        """Download preset voice ``message.voice`` on a worker, with progress in the
        banner; then tell the reading screen."""
        name = message.voice

        def work() -> None:
            worker = get_current_worker()
            progress = _Reporter(self, "voice", lambda: worker.is_cancelled)
            progress.stage(f"downloading voice {name}")
            try:
                self.loader.fetch_voice(name, progress)
            except LoadCancelled:
                return
            except Exception as err:  # EngineUnavailable says what to do
                self.post_message(self.VoiceFetched(name, str(err)))
                return
            self.post_message(self.VoiceFetched(name, None))

        self.run_worker(work, thread=True, name=f"fetch-voice {name}", group="voices")

    def on_reader_app_voice_fetched(self, message: VoiceFetched) -> None:
        self.reading.voice_fetched(message.name, message.error)

    def _engine_ready(self, engine: SpeechEngine) -> None:
        self.engine = engine
        try:
            voices = list(engine.voices())
        except Exception:
            voices = []
        self.reading.attach(voices, self._missing_voices(voices), self.loader.first_voice)
        try:
            self.narrator.start(engine, self._make_output(self.config.audio_device))
        except AudioDeviceError as err:
            self.notify(
                f"{err}. Reading on without sound.",
                title="No audio output",
                severity="error",
                markup=False,
                timeout=30,
            )
            self.narrator.start(engine, NullPlayer)

    def _narrated(self, event: Event) -> None:
        """The narrator's callback (any thread): on to the UI thread, never waiting."""
        try:
            self.post_message(self.Narrated(event))
        except RuntimeError:  # the app's loop is closed: it is quitting
            pass

    def on_reader_app_narrated(self, message: Narrated) -> None:
        """What the narrator says, as a notification saying what to do."""
        event = message.event
        match event:
            case SleepEnded():
                self.save_position()
                self.notify("Sleep timer: reading stopped; your place is saved.", timeout=5)
            case PlayWhenReady(play=play):
                self.notify(
                    "Reading will start when the model is ready."
                    if play
                    else "Will wait for space once the model is ready.",
                    timeout=3,
                )
            case EngineFailed(reason=reason):
                self.notify(
                    f"{reason} (press space to retry; --export writes a file instead)",
                    title="Speech engine",
                    severity="error",
                    markup=False,
                    timeout=10,
                )
            case DeviceLost(reason=reason):
                self.notify(
                    f"The audio device went away ({reason}). Your place is kept: "
                    "press space to read on once it is back, or quit and choose "
                    "another with --audio-device.",
                    title="Audio device",
                    severity="error",
                    markup=False,
                    timeout=12,
                )
            case DeviceUnavailable(reason=reason):
                self.notify(
                    f"Still no audio device ({reason}). Your place is kept: press "
                    "space to try again, or quit and choose another with "
                    "--audio-device (null reads without sound).",
                    title="Audio device",
                    severity="error",
                    markup=False,
                    timeout=12,
                )

    def _show_book_warnings(self, book: BookInfo | None) -> None:
        """Tell the reader what of the book could not be read as it should, once each: the
        warnings not told yet, in one notification."""
        if book is None:
            return
        said = book.describe_warnings(self._book_warnings_shown)
        self._book_warnings_shown = book.warning_count
        if said is not None:
            self.notify(
                said,
                title="Parts of this book could not be read as they should",
                severity="warning",
                markup=False,
                timeout=15,
            )

    def on_reader_app_plan_grew(self, _message: PlanGrew) -> None:
        """Show more of the book (at most twice a second, and at the end), and what the
        planner found wrong in the part it read."""
        progress = self.progress
        if progress is None:
            return
        self._show_book_warnings(progress.book)
        now = time.monotonic()
        if not progress.done and now - self._swapped_at < 0.5:
            return
        self._swapped_at = now
        plan = progress.plan
        if len(plan) == len(self.plan) and plan.complete == self.plan.complete:
            return
        self.plan = plan
        self.reading.set_plan(plan)
        if self._resume_offset is not None:
            index = self._index_at(self._resume_offset)
            if index is not None:
                self._resume_offset = None
                self.reading.resume_at(index, play=self.config.autoplay)
                self.notify(f"Resuming at sentence {index + 1}.", timeout=4)
        if not progress.done:
            self.set_timer(0.6, lambda: self.post_message(self.PlanGrew()))

    # ------------------------------------------------------------------ settings and state
    def on_reading_screen_remember(self, event: ReadingScreen.Remember) -> None:
        self.config = replace(self.config, **event.changes)
        self._save_config()

    def _theme_changed(self, theme: object) -> None:
        name = getattr(theme, "name", None)
        if name and name != self.config.theme:
            self.config = replace(self.config, theme=name)
            self._save_config()

    def _save_config(self) -> None:
        if self.options.config_file is None:
            return
        try:
            save_config(self.config, self.options.config_file)
        except OSError as err:
            self.notify(
                f"cannot save settings to {self.options.config_file} ({err.strerror})",
                severity="warning",
                markup=False,
            )

    def save_position(self) -> None:
        """Remember where the reader is (only when it moved)."""
        path = self.options.document_path
        if self.positions is None or path is None or self._resume_offset is not None:
            return  # (the saved place is not found yet: keep it)
        pos = self._current_position()
        if pos is None or (pos.offset, pos.text) == self._saved_position:
            return
        self.positions.put(path, pos)
        try:
            self.positions.save()
        except OSError as err:
            self.notify(
                f"cannot save the reading position ({err.strerror})",
                severity="warning",
                markup=False,
            )
            return
        self._saved_position = (pos.offset, pos.text)

    def _current_position(self) -> Position | None:
        if not len(self.plan):
            return None
        u = self.plan[self.narrator.position]
        return Position.at(self.plan.document.text, u.start, u.end, u.index)

    async def action_quit(self) -> None:
        self._quitting.set()  # a download in progress stops at its next chunk
        self.save_position()
        await self.media.stop()
        self.exit()

    def shutdown(self) -> None:
        """Stop the narration and the engine (after the app has exited)."""
        if self.progress is not None:
            self.progress.cancel()
        self.narrator.close()
        if self.engine is not None:
            self.engine.close()

    # ------------------------------------------------------------------ command palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if screen is not self.reading:
            return
        for node in (self.reading, self.reading.view):
            for b in getattr(node, "BINDINGS", []):
                if isinstance(b, Binding) and b.id:
                    yield SystemCommand(
                        b.description,
                        b.tooltip or f"{b.description} ({b.key})",
                        partial(node.run_action, b.action),
                    )


class _Reporter:
    """The :class:`~vvreader.loader.LoadProgress` of a loading thread: posts to the app
    without waiting (download reports at most REPORTS_PER_SECOND times a second)."""

    def __init__(self, app: ReaderApp, target: str, cancelled: Callable[[], bool]) -> None:
        self.app = app
        self.target = target
        self._cancelled = cancelled
        self._last = 0.0

    @property
    def cancelled(self) -> bool:
        return self._cancelled() or self.app._quitting.is_set()

    def stage(self, what: str) -> None:
        self._post(what, None)

    def transfer(self, transfer: Transfer) -> None:
        now = time.monotonic()
        last = transfer.total is not None and transfer.done >= transfer.total
        if now - self._last < 1 / REPORTS_PER_SECOND and not last:
            return
        self._last = now
        self._post(f"downloading {transfer.name}", transfer)

    def _post(self, what: str, transfer: Transfer | None) -> None:
        try:
            self.app.post_message(ReaderApp.Loading(self.target, what, transfer))
        except RuntimeError:  # the app's loop is closed: it is quitting
            pass


def _device_output(device: str) -> OutputFactory:
    """The output factory for ``--audio-device`` (``""``: the default card)."""
    return lambda ring, clock: open_output(device or None, ring, clock)
