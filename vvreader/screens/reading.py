"""ReadingScreen: the document, the highlight that follows the voice, and every control.

The screen mediates: its bindings become calls on the :class:`Narrator` (which keeps where
reading stands and what to play), and 20 times a second the narrator's progress goes to the
view and the status bar: the highlight follows what is audible, not what is being
synthesised. Settings the user changes go up to the app as :class:`ReadingScreen.Remember`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from vvreader.media.controls import MediaCommand
from vvreader.narration.commands import VoiceSettings, step_cfg, step_steps
from vvreader.narration.narrator import Narrator
from vvreader.screens.contents import TableOfContents
from vvreader.screens.help import HelpScreen, key_help
from vvreader.screens.reading_keys import READING_BINDINGS
from vvreader.screens.search import DocumentSearch, SearchBar
from vvreader.screens.sleep import SleepPicker
from vvreader.screens.voices import VoicePicker
from vvreader.speed import step_speed
from vvreader.text.chapters import ChapterIndex
from vvreader.text.plan import SpeechPlan
from vvreader.voice_choice import VoiceChoice
from vvreader.widgets.loading_banner import LoadingBanner
from vvreader.widgets.reading_view import ReadingView
from vvreader.widgets.status_bar import StatusBar

__all__ = ["ReadingScreen"]


class ReadingScreen(Screen[None]):
    """The main screen."""

    BINDINGS: ClassVar[list[BindingType]] = READING_BINDINGS

    @dataclass
    class Remember(Message):
        """The user changed a setting that the app keeps in the config: ``changes`` maps
        config fields (voice, cfg_scale, steps, speed, word_follow) to their new values."""

        changes: dict[str, object]

    @dataclass
    class VoiceWanted(Message):
        """The user chose a preset voice that is not downloaded yet; the app downloads it
        and answers with :meth:`ReadingScreen.voice_fetched`."""

        voice: str

    def __init__(self, narrator: Narrator, word_follow: bool = False) -> None:
        super().__init__()
        self.narrator = narrator
        self.word_follow = word_follow
        """Underline the word being spoken."""
        self.banner = LoadingBanner(id="loading")
        self.banner.show("loading the model")
        self.view = ReadingView(narrator.plan, id="reading")
        self.status = StatusBar()
        self.voices = VoiceChoice(
            current=lambda: self.settings.voice,
            use=lambda voice: self._apply(voice=voice),
            read_here=lambda: self._go(self.position, play=True),
            fetch=self._fetch_voice,
            say=lambda text: self.app.notify(text, timeout=3),
        )
        self.search = DocumentSearch()
        self.chapters = ChapterIndex()

    @property
    def plan(self) -> SpeechPlan:
        return self.narrator.plan

    @property
    def position(self) -> int:
        """The utterance being read, or where reading will start."""
        return self.narrator.position

    @property
    def settings(self) -> VoiceSettings:
        return self.narrator.settings

    # ------------------------------------------------------------------ composition
    def compose(self) -> ComposeResult:
        yield from (self.banner, self.view, self.status, Footer())

    def on_mount(self) -> None:
        self.view.cursor = self.position
        self.view.audible = self.position if len(self.plan) else None
        self.status.total, self.status.position = len(self.plan), self.position
        self.status.show_settings(self.settings)
        self.set_interval(1 / 20, self._tick)
        self.view.focus()
        book = self.plan.document.book
        if book is not None and book.title:
            self.app.title = book.title
            self.app.sub_title = book.author

    # ------------------------------------------------------------------ calls from the app
    def attach(self, voices: list[str], missing: set[str], first_voice: str = "") -> None:
        """The model is ready with ``voices`` (``missing``: those downloaded when first
        chosen); read with ``first_voice`` when no voice is set (the loader's; "" leaves
        the choice to the engine)."""
        self.banner.show("")
        first = self.voices.offer(voices, missing, first_voice)
        if first is not None:
            self.narrator.set_settings(replace(self.settings, voice=first))
        self.status.show_settings(self.settings)

    def set_plan(self, plan: SpeechPlan) -> None:
        """A longer version of the plan (more of the book planned)."""
        self.narrator.set_plan(plan)
        self.view.set_plan(plan)
        self.status.total = len(plan)

    def resume_at(self, index: int, play: bool) -> None:
        """Put the reader at utterance ``index`` (a saved place found late)."""
        self._go(index, play=play or None, cursor=True)

    def show_loading(self, what: str, detail: str = "", fraction: float | None = None) -> None:
        """Show what is being loaded (before the model is ready)."""
        self.banner.show(what, detail, fraction)

    def set_download(self, what: str, detail: str = "", fraction: float | None = None) -> None:
        """Show a download made while reading (a voice); ``""`` hides the line."""
        if self.narrator.ready:
            self.banner.show(what, detail, fraction)

    def voice_fetched(self, voice: str, error: str | None) -> None:
        """The download asked for by :class:`VoiceWanted` ended (``error``: why not)."""
        self.set_download("")
        if error is not None:
            self.app.notify(
                error, title=f"Cannot get voice {voice}", severity="error", markup=False, timeout=20
            )
        self.voices.fetched(voice, ok=error is None)

    # ------------------------------------------------------------------ the clock
    def _tick(self) -> None:
        progress = self.narrator.progress()
        if progress is None:
            self.status.state = "loading"
            return
        self.view.audible = progress.position if len(self.plan) else None
        self.view.word = self.narrator.word() if self.word_follow else None
        self.status.show_progress(progress)
        self.status.chapter = self.chapters.at(self.plan, progress.position)
        if progress.back_from_note:
            self._follow_voice(cursor=True)

    # ------------------------------------------------------------------ moving
    def _go(self, index: int | None, play: bool | None = None, cursor: bool = False) -> None:
        """Read from utterance ``index`` (playing on if playing; ``play`` forces), with the
        cursor there too if ``cursor``."""
        if cursor and index is not None:
            self.view.cursor = index
        if self.narrator.go(index, play):
            self._follow_voice()

    def _follow_voice(self, cursor: bool = False) -> None:
        """Reading moved: the view shows where (with the cursor there too if ``cursor``)."""
        if cursor:
            self.view.cursor = self.position
        self.view.audible, self.view.follow = self.position, True

    def action_play_pause(self) -> None:
        if self.narrator.play_pause():  # back to the start
            self._follow_voice()

    def action_go(self, move: str) -> None:
        """Read from where the plan's move ``move`` (next_sentence...) leads
        (:meth:`Narrator.step`)."""
        if self.narrator.step(move):
            self._follow_voice()

    def action_read_from_cursor(self) -> None:
        self._go(self.view.cursor, play=True)

    def on_reading_view_utterance_clicked(self, event: ReadingView.UtteranceClicked) -> None:
        self._go(event.index, play=True, cursor=True)

    def action_resay(self) -> None:
        self.narrator.say_again()

    def action_toggle_word_follow(self) -> None:
        self.word_follow = not self.word_follow
        self.post_message(self.Remember({"word_follow": self.word_follow}))
        self.app.notify(
            "Word follow on (approximate)." if self.word_follow else "Word follow off.", timeout=2
        )

    def action_toggle_follow(self) -> None:
        self.view.follow = not self.view.follow
        self.app.notify("Following the voice." if self.view.follow else "Follow off.", timeout=2)

    def action_back_to_narrator(self) -> None:
        if self.narrator.leave_note():
            self.view.audible = self.position
        self.view.cursor, self.view.follow = self.position, True

    def action_read_note(self) -> None:
        unread = self.narrator.read_note()
        if unread is not None:
            self.app.notify(unread, timeout=2)
        else:
            self._follow_voice(cursor=True)

    # ------------------------------------------------------------------ settings
    def _apply(self, **changes: str | float | int) -> None:
        self.narrator.set_settings(replace(self.settings, **changes))
        self.status.show_settings(self.settings)
        self.post_message(self.Remember(asdict(self.settings)))  # the config's field names

    def action_cfg(self, direction: int) -> None:
        self._apply(cfg_scale=step_cfg(self.settings.cfg_scale, direction))

    def action_steps(self, direction: int) -> None:
        self._apply(steps=step_steps(self.settings.steps, direction))

    def action_speed(self, direction: int) -> None:
        self.set_speed(step_speed(self.narrator.listening_speed, direction))

    def set_speed(self, speed: float) -> None:
        """Listen at ``speed`` (clamped to the range) and remember it."""
        self.post_message(self.Remember({"speed": self.narrator.set_speed(speed)}))

    def media_key(self, command: MediaCommand) -> None:
        """A media button: the same as the reader's own keys."""
        if self.narrator.media(command):
            self._follow_voice()

    def action_next_voice(self) -> None:
        self.voices.next()

    def action_pick_voice(self) -> None:
        if not self._covered() and self.voices.known():
            self.voices.picking()
            picker = VoicePicker(
                self.voices.names, self.settings.voice, self.voices.preview, self.voices.missing
            )
            self.app.push_screen(picker, self.voices.picked)

    def _fetch_voice(self, voice: str) -> None:
        self.set_download(f"downloading voice {voice}")
        self.post_message(self.VoiceWanted(voice))

    # ------------------------------------------------------------------ sleep timer
    def action_sleep_timer(self) -> None:
        if not self._covered():
            self.app.push_screen(SleepPicker(self.narrator.sleep.active), self._sleep_chosen)

    def _sleep_chosen(self, choice: str | None) -> None:
        if choice is not None:
            self.app.notify(self.narrator.sleep_choose(choice), timeout=2 if choice == "off" else 3)

    # ------------------------------------------------------------------ finding and help
    def action_contents(self) -> None:
        if not self._covered():
            self.app.push_screen(TableOfContents(self.plan, self.position), self._heading_chosen)

    def _heading_chosen(self, index: int | None) -> None:
        self._go(index, cursor=True)

    def action_search(self) -> None:
        if not self._covered():
            self.app.push_screen(SearchBar(self.search.query), self._query_chosen)

    def _query_chosen(self, query: str | None) -> None:
        if query:
            self.search.query = query
            self._show_match(self.search.from_cursor(self.plan, self.view.cursor))

    def action_search_next(self) -> None:
        if not self.search.query:
            self.action_search()
        elif len(self.plan):
            self._show_match(self.search.from_cursor(self.plan, self.view.cursor, again=True))

    def _show_match(self, index: int | None) -> None:
        if index is None:
            query = self.search.query
            self.app.notify(f"Not found: {query}", severity="warning", markup=False, timeout=3)
        else:
            self.view.cursor = index

    def action_help(self) -> None:
        if not self._covered():
            self.app.push_screen(HelpScreen(key_help(self, (self, self.view, self.app))))

    def _covered(self) -> bool:
        """Another screen is on top (or being pushed): keys queued before it appeared
        must not open a second one."""
        return self.app.screen is not self
