"""ReadingScreen: the document, the highlight that follows the voice, and every control.

The screen mediates: its bindings become calls on the :class:`Narrator` (which keeps where
reading stands and what to play), and 20 times a second the narrator's progress goes to the
view and the status bar: the highlight follows what is audible, not what is being
synthesised. Settings changes go up to the app as :class:`ReadingScreen.SettingsChanged`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from vvreader.media.controls import MediaCommand
from vvreader.narration.commands import VoiceSettings, step_cfg, step_steps
from vvreader.narration.narrator import Narrator, State
from vvreader.screens.contents import TableOfContents
from vvreader.screens.help import HelpScreen, key_help
from vvreader.screens.search import DocumentSearch, SearchBar
from vvreader.screens.sleep import SleepPicker
from vvreader.screens.voices import VoicePicker
from vvreader.speed import step_speed
from vvreader.text.chapters import ContentsEntry, chapter_at, contents
from vvreader.text.notes import cited_note
from vvreader.text.plan import SpeechPlan
from vvreader.voice_choice import VoiceChoice
from vvreader.widgets.loading_banner import LoadingBanner
from vvreader.widgets.reading_view import ReadingView
from vvreader.widgets.status_bar import StatusBar

__all__ = ["ReadingScreen"]

_PLAY_PAUSE = "Start, pause or resume the narration."
_RESAY = "Synthesise the current sentence again (a new take) and read on."
_SLEEP = "Stop reading after some minutes or at the end of this chapter or section."
_WORDS = "Underline the word being spoken (approximate: spread by syllables)."
_SPEED = "Listening speed, 0.5x to 3.0x in steps of 0.1; the voice's pitch is kept."


_NOTE = (
    "Read the note cited by this sentence (a footnote, or an EPUB book's note), then come "
    "back; again, or b, comes back at once."
)


def _hidden(keys: str, action: str, description: str, id: str, tooltip: str = "") -> Binding:
    """A binding left out of the footer (help and the command palette list it)."""
    return Binding(keys, action, description, id=id, show=False, tooltip=tooltip)


class ReadingScreen(Screen[None]):
    """The main screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "play_pause", "Play/pause", id="play-pause", tooltip=_PLAY_PAUSE),
        _hidden("l,right", "go('next_sentence')", "Next sentence", "next-sentence"),
        _hidden("h,left", "go('previous_sentence')", "Previous sentence", "previous-sentence"),
        _hidden("right_square_bracket", "go('next_paragraph')", "Next paragraph", "next-paragraph"),
        _hidden(
            "left_square_bracket",
            "go('previous_paragraph')",
            "Previous paragraph",
            "previous-paragraph",
        ),
        _hidden("right_curly_bracket", "go('next_heading')", "Next heading", "next-heading"),
        _hidden(
            "left_curly_bracket", "go('previous_heading')", "Previous heading", "previous-heading"
        ),
        _hidden("enter", "read_from_cursor", "Read from cursor", "read-from-cursor"),
        _hidden("r", "resay", "Say it again", "resay", tooltip=_RESAY),
        Binding("v", "pick_voice", "Voice", id="pick-voice"),
        _hidden("V", "next_voice", "Next voice", "next-voice"),
        _hidden("plus,equals_sign", "cfg(1)", "CFG up", "cfg-up"),
        _hidden("minus", "cfg(-1)", "CFG down", "cfg-down"),
        _hidden("s", "steps(1)", "More diffusion steps", "steps-up"),
        _hidden("S", "steps(-1)", "Fewer diffusion steps", "steps-down"),
        _hidden("greater_than_sign,full_stop", "speed(1)", "Faster", "speed-up", _SPEED),
        _hidden("less_than_sign,comma", "speed(-1)", "Slower", "speed-down", _SPEED),
        _hidden("z", "sleep_timer", "Sleep timer", "sleep-timer", _SLEEP),
        Binding("t", "contents", "Contents", id="contents"),
        _hidden("o", "read_note", "Read the note", "read-note", _NOTE),
        Binding("slash", "search", "Search", id="search"),
        _hidden("n", "search_next", "Next match", "search-next"),
        _hidden("f", "toggle_follow", "Follow on/off", "toggle-follow"),
        _hidden("w", "toggle_word_follow", "Word follow on/off", "word-follow", _WORDS),
        _hidden("b,escape", "back_to_narrator", "Back to the voice", "back-to-narrator"),
        Binding("question_mark,f1", "help", "Help", id="help"),
    ]

    class SettingsChanged(Message):
        """The user changed voice, CFG scale or steps."""

        def __init__(self, settings: VoiceSettings) -> None:
            self.settings = settings
            super().__init__()

    class WordFollowChanged(Message):
        """The user turned word follow on or off."""

        def __init__(self, on: bool) -> None:
            self.on = on
            super().__init__()

    class SpeedChanged(Message):
        """The user changed the listening speed."""

        def __init__(self, speed: float) -> None:
            self.speed = speed
            super().__init__()

    class VoiceWanted(Message):
        """The user chose a preset voice that is not downloaded yet; the app downloads it
        and answers with :meth:`ReadingScreen.voice_fetched`."""

        def __init__(self, voice: str) -> None:
            self.voice = voice
            super().__init__()

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
        self._contents: tuple[int, list[ContentsEntry]] = (-1, [])
        self._note: tuple[range, int, bool] | None = None
        """While a note is read out of turn: its utterances, where to come back to, and
        whether the voice has reached the note yet."""

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
        self.status.chapter = chapter_at(self._chapters(), progress.position)
        if self._note is not None:
            note, back, reached = self._note
            if progress.position in note:
                self._note = (note, back, True)
            elif reached:  # the note is over: on with the text after the citing sentence
                self._come_back(back + 1)

    def _chapters(self) -> list[ContentsEntry]:
        """The contents entries of the plan so far (built again when the plan grows)."""
        plan = self.plan
        if self._contents[0] != len(plan):
            self._contents = (len(plan), contents(plan))
        return self._contents[1]

    # ------------------------------------------------------------------ moving
    def _go(self, index: int | None, play: bool | None = None, cursor: bool = False) -> None:
        """Read from utterance ``index`` (playing on if playing; ``play`` forces), with the
        cursor there too if ``cursor``."""
        if cursor and index is not None:
            self.view.cursor = index
        if self.narrator.go(index, play):
            self.view.audible, self.view.follow = self.position, True

    def action_play_pause(self) -> None:
        if self.narrator.play_pause():  # back to the start
            self.view.audible, self.view.follow = self.position, True

    def action_go(self, move: str) -> None:
        """Read from the utterance that plan method ``move`` finds (next_sentence...)."""
        self._go(getattr(self.plan, move)(self.position))

    def action_read_from_cursor(self) -> None:
        self._go(self.view.cursor, play=True)

    def on_reading_view_utterance_clicked(self, event: ReadingView.UtteranceClicked) -> None:
        self._go(event.index, play=True, cursor=True)

    def action_resay(self) -> None:
        self.narrator.say_again()

    def action_toggle_word_follow(self) -> None:
        self.word_follow = not self.word_follow
        self.post_message(self.WordFollowChanged(self.word_follow))
        self.app.notify(
            "Word follow on (approximate)." if self.word_follow else "Word follow off.", timeout=2
        )

    def action_toggle_follow(self) -> None:
        self.view.follow = not self.view.follow
        self.app.notify("Following the voice." if self.view.follow else "Follow off.", timeout=2)

    def action_back_to_narrator(self) -> None:
        if self._note is not None:
            self._come_back(self._note[1])
            return
        self.view.cursor = self.position
        self.view.follow = True

    def action_read_note(self) -> None:
        if self._note is not None:
            self._come_back(self._note[1])
            return
        here = self.position
        note = cited_note(self.plan, here)
        if note is None:
            self.app.notify("This sentence cites no note.", timeout=2)
            return
        self._note = (note, here, False)
        self._go(note.start, play=True, cursor=True)

    def _come_back(self, index: int) -> None:
        """Leave the note for utterance ``index`` (reading on if reading)."""
        self._note = None
        self._go(index, cursor=True)

    # ------------------------------------------------------------------ settings
    def _apply(self, **changes: str | float | int) -> None:
        self.narrator.set_settings(replace(self.settings, **changes))
        self.status.show_settings(self.settings)
        self.post_message(self.SettingsChanged(self.settings))

    def action_cfg(self, direction: int) -> None:
        self._apply(cfg_scale=step_cfg(self.settings.cfg_scale, direction))

    def action_steps(self, direction: int) -> None:
        self._apply(steps=step_steps(self.settings.steps, direction))

    def action_speed(self, direction: int) -> None:
        self.set_speed(step_speed(self.narrator.listening_speed, direction))

    def set_speed(self, speed: float) -> None:
        """Listen at ``speed`` (clamped to the range) and remember it."""
        self.post_message(self.SpeedChanged(self.narrator.set_speed(speed)))

    # ------------------------------------------------------------------ media keys
    def media_key(self, command: MediaCommand) -> None:
        """A media button: the same as the reader's own keys."""
        playing = self.narrator.state in (State.PLAYING, State.BUFFERING)
        match command:
            case MediaCommand.PLAY_PAUSE:
                self.action_play_pause()
            case MediaCommand.PLAY if not playing:
                self.action_play_pause()
            case MediaCommand.PAUSE | MediaCommand.STOP if playing:
                self.action_play_pause()
            case MediaCommand.NEXT:
                self.action_go("next_sentence")
            case MediaCommand.PREVIOUS:
                self.action_go("previous_sentence")

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
        if choice is None:
            return
        if choice == "off":
            self.narrator.sleep_cancel()
            self.app.notify("Sleep timer off.", timeout=2)
        elif choice in ("chapter", "section"):
            self.narrator.sleep_at_end_of(choice)
            self.app.notify(f"Reading stops at the end of this {choice}.", timeout=3)
        else:
            self.narrator.sleep_after(float(choice))
            self.app.notify(f"Reading stops in {choice} minutes.", timeout=3)

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
            self._find(self.plan[self.view.cursor].start if len(self.plan) else 0)

    def action_search_next(self) -> None:
        if not self.search.query:
            self.action_search()
        elif len(self.plan):
            self._find(self.plan[self.view.cursor].end)

    def _find(self, start: int) -> None:
        index = self.search.next(self.plan, start)
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
