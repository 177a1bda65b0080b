"""ReadingScreen: the document, the highlight that follows the voice, and every control.

The screen owns the narrator once the app hands it one (:meth:`attach`); until then the
controls move the reading position and remember whether to play. It polls the narrator's
playback clock 20 times a second: the highlight follows what is audible, not what is being
synthesised. Settings changes go up to the app as :class:`ReadingScreen.SettingsChanged`.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.keys import format_key
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from vvreader.narrator import Narrator, State, VoiceSettings
from vvreader.screens.contents import TableOfContents
from vvreader.screens.help import HelpScreen, KeyHelp
from vvreader.screens.search import SearchBar, find
from vvreader.screens.voices import VoicePicker
from vvreader.state import Position
from vvreader.text.plan import SpeechPlan
from vvreader.widgets.loading_banner import LoadingBanner
from vvreader.widgets.reading_view import ReadingView
from vvreader.widgets.status_bar import StatusBar

__all__ = ["ReadingScreen", "CFG_RANGE", "STEPS_RANGE"]

log = logging.getLogger("vvreader.reader")

CFG_RANGE = (1.0, 5.0)
CFG_STEP = 0.1
STEPS_RANGE = (1, 50)


class ReadingScreen(Screen[None]):
    """The main screen."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "play_pause", "Play/pause", id="play-pause",
                tooltip="Start, pause or resume the narration."),
        Binding("l,right", "next_sentence", "Next sentence", id="next-sentence", show=False),
        Binding("h,left", "previous_sentence", "Previous sentence", id="previous-sentence",
                show=False),
        Binding("right_square_bracket", "next_paragraph", "Next paragraph",
                id="next-paragraph", show=False),
        Binding("left_square_bracket", "previous_paragraph", "Previous paragraph",
                id="previous-paragraph", show=False),
        Binding("right_curly_bracket", "next_heading", "Next heading", id="next-heading",
                show=False),
        Binding("left_curly_bracket", "previous_heading", "Previous heading",
                id="previous-heading", show=False),
        Binding("enter", "read_from_cursor", "Read from cursor", id="read-from-cursor",
                show=False),
        Binding("r", "resay", "Say it again", id="resay", show=False,
                tooltip="Synthesise the current sentence again (a new take) and read on."),
        Binding("v", "pick_voice", "Voice", id="pick-voice"),
        Binding("V", "next_voice", "Next voice", id="next-voice", show=False),
        Binding("plus,equals_sign", "cfg_up", "CFG up", id="cfg-up", show=False),
        Binding("minus", "cfg_down", "CFG down", id="cfg-down", show=False),
        Binding("s", "steps_up", "More diffusion steps", id="steps-up", show=False),
        Binding("S", "steps_down", "Fewer diffusion steps", id="steps-down", show=False),
        Binding("t", "contents", "Contents", id="contents"),
        Binding("slash", "search", "Search", id="search"),
        Binding("n", "search_next", "Next match", id="search-next", show=False),
        Binding("f", "toggle_follow", "Follow on/off", id="toggle-follow", show=False),
        Binding("b,escape", "back_to_narrator", "Back to the voice", id="back-to-narrator",
                show=False),
        Binding("question_mark,f1", "help", "Help", id="help"),
    ]

    class SettingsChanged(Message):
        """The user changed voice, CFG scale or steps."""

        def __init__(self, settings: VoiceSettings) -> None:
            self.settings = settings
            super().__init__()

    class VoiceWanted(Message):
        """The user chose a preset voice that is not downloaded yet; the app downloads it
        and answers with :meth:`ReadingScreen.voice_fetched`."""

        def __init__(self, voice: str) -> None:
            self.voice = voice
            super().__init__()

    def __init__(self, plan: SpeechPlan, settings: VoiceSettings, start: int = 0,
                 autoplay: bool = True) -> None:
        super().__init__()
        self.plan = plan
        self.settings = settings
        """The settings shown and asked of the narrator."""
        self.position = max(0, min(start, len(plan) - 1)) if len(plan) else 0
        """The utterance being read, or where reading will start."""
        self.narrator: Narrator | None = None
        self.voices: list[str] = []
        self.missing_voices: set[str] = set()
        """Preset voices of :attr:`voices` that are downloaded when first chosen."""
        self.loading_what = "loading the model"
        """What is being loaded ("" when ready). (Not ``loading``: that is Textual's
        reactive for a widget's loading indicator.)"""
        self._loading_detail: tuple[str, float | None] = ("", None)
        self._want_play = autoplay
        self._pending: int | None = None  # jumped to, not yet audible
        self._fetching: str | None = None  # a voice being downloaded
        self._query = ""
        self._lower_text: str | None = None
        self._preview_from: str | None = None
        self._logged: int | None = None

    # ------------------------------------------------------------------ composition
    def compose(self) -> ComposeResult:
        yield LoadingBanner(id="loading")
        yield ReadingView(self.plan, id="reading")
        yield StatusBar()
        yield Footer()

    @property
    def view(self) -> ReadingView:
        return self.query_one(ReadingView)

    @property
    def status(self) -> StatusBar:
        return self.query_one(StatusBar)

    @property
    def banner(self) -> LoadingBanner:
        return self.query_one(LoadingBanner)

    def on_mount(self) -> None:
        view = self.view
        view.cursor = self.position
        view.audible = self.position if len(self.plan) else None
        status = self.status
        status.total = len(self.plan)
        status.position = self.position
        self._show_settings()
        self.banner.show(self.loading_what, *self._loading_detail)
        self.set_interval(1 / 20, self._tick)
        view.focus()

    # ------------------------------------------------------------------ calls from the app
    def attach(self, narrator: Narrator, voices: list[str], first_voice: str = "",
               missing: set[str] | None = None) -> None:
        """The model is ready: take the narrator and start if asked to.

        Args:
            voices: the voices to offer.
            first_voice: the voice to read with when none is set (the loader's; "" leaves
                the choice to the engine).
            missing: those of ``voices`` that must be downloaded before use.
        """
        self.narrator = narrator
        self.voices = voices
        self.missing_voices = set(missing or ())
        self.loading_what = ""
        self.banner.show("")
        if not self.settings.voice and first_voice:
            self.settings = VoiceSettings(first_voice, self.settings.cfg_scale,
                                          self.settings.steps)
            narrator.set_settings(voice=first_voice)
        self._show_settings()
        if self._want_play and len(self.plan):
            self._pending = self.position
            narrator.play(self.position)

    def set_plan(self, plan: SpeechPlan) -> None:
        """A longer version of the plan (more of the book planned)."""
        self.plan = plan
        self.view.set_plan(plan)
        self.status.total = len(plan)
        if self.narrator is not None:
            self.narrator.set_plan(plan)

    def resume_at(self, index: int, play: bool) -> None:
        """Put the reader at utterance ``index`` (a saved place found late)."""
        self.view.cursor = index
        self._go(index, play=play or None)
        if play:
            self._want_play = True

    def show_loading(self, what: str, detail: str = "", fraction: float | None = None) -> None:
        """Show what is being loaded (before the narrator is attached)."""
        self.loading_what = what
        self._loading_detail = (detail, fraction)
        if self.is_mounted:
            self.banner.show(what, detail, fraction)

    def set_download(self, what: str, detail: str = "", fraction: float | None = None) -> None:
        """Show a download made while reading (a voice); ``""`` hides the line."""
        if self.narrator is not None and self.is_mounted:
            self.banner.show(what, detail, fraction)

    def voice_fetched(self, voice: str, error: str | None) -> None:
        """The download asked for by :class:`VoiceWanted` ended; read with the voice
        from the next sentence on, unless it failed."""
        if self._fetching == voice:
            self._fetching = None
        self.set_download("")
        if error is not None:
            self.app.notify(error, title=f"Cannot get voice {voice}", severity="error",
                            markup=False, timeout=20)
            return
        self.missing_voices.discard(voice)
        self._apply(voice=voice)

    def current_position(self) -> Position | None:
        """The position to save."""
        if not len(self.plan):
            return None
        u = self.plan[self.position]
        return Position.at(self.plan.document.text, u.start, u.end, u.index)

    # ------------------------------------------------------------------ the clock
    def _tick(self) -> None:
        status = self.status
        n = self.narrator
        if n is None:
            status.state = "loading"
            return
        if n.error:
            if n.error_source == "audio":  # the message says what to do
                self.app.notify(n.error, title="Audio device", severity="error",
                                markup=False, timeout=12)
            else:
                self.app.notify(n.error + " (press space to retry; --export writes a file "
                                "instead)", title="Speech engine", severity="error",
                                markup=False, timeout=10)
            n.error = None
        audible = n.audible()
        state = n.state
        if self._pending is not None:
            if audible == self._pending and state is State.PLAYING:
                self._pending = None
            else:
                audible = self._pending
        if audible is not None and audible != self.position:
            self.position = audible
        if audible is not None and audible != self._logged:
            self._logged = audible
            log.info("audible %d", audible)
        self.view.audible = self.position if len(self.plan) else None
        status.state = "finished" if n.finished and n._playing else state.value
        status.position = self.position
        status.ahead = n.buffered_seconds
        status.speed = n.speed
        status.left = n.seconds_left(self.position)

    def _show_settings(self) -> None:
        status = self.status
        status.voice = self.settings.voice
        status.cfg = self.settings.cfg_scale
        status.steps = self.settings.steps

    # ------------------------------------------------------------------ moving
    def _go(self, index: int | None, play: bool | None = None) -> None:
        """Read from utterance ``index`` (playing on if playing; ``play`` forces)."""
        if index is None or not len(self.plan):
            return
        index = max(0, min(index, len(self.plan) - 1))
        self.position = index
        self.view.audible = index
        self.view.follow = True
        n = self.narrator
        if n is None:
            if play:
                self._want_play = True
            return
        self._pending = index
        if play or (play is None and n.state in (State.PLAYING, State.BUFFERING)):
            n.play(index)
        else:
            n.jump(index)

    def action_play_pause(self) -> None:
        n = self.narrator
        if n is None:
            self._want_play = not self._want_play
            self.app.notify("Reading will start when the model is ready." if self._want_play
                            else "Will wait for space once the model is ready.", timeout=3)
            return
        if n.finished:
            self._go(0, play=True)
        elif n.state is State.STOPPED:
            self._pending = self.position
            n.play(self.position)
        else:
            n.toggle()

    def action_next_sentence(self) -> None:
        self._go(self.plan.next_sentence(self.position))

    def action_previous_sentence(self) -> None:
        self._go(self.plan.previous_sentence(self.position))

    def action_next_paragraph(self) -> None:
        self._go(self.plan.next_paragraph(self.position))

    def action_previous_paragraph(self) -> None:
        self._go(self.plan.previous_paragraph(self.position))

    def action_next_heading(self) -> None:
        self._go(self.plan.next_heading(self.position))

    def action_previous_heading(self) -> None:
        self._go(self.plan.previous_heading(self.position))

    def action_read_from_cursor(self) -> None:
        self._go(self.view.cursor, play=True)

    def on_reading_view_utterance_clicked(self, event: ReadingView.UtteranceClicked) -> None:
        self.view.cursor = event.index
        self._go(event.index, play=True)

    def action_resay(self) -> None:
        n = self.narrator
        if n is None or not len(self.plan):
            return
        self._pending = self.position
        n.resay(self.position)
        if n.state is State.STOPPED:
            n.play()

    def action_toggle_follow(self) -> None:
        self.view.follow = not self.view.follow
        self.app.notify("Following the voice." if self.view.follow else "Follow off.",
                        timeout=2)

    def action_back_to_narrator(self) -> None:
        self.view.cursor = self.position
        self.view.follow = True

    # ------------------------------------------------------------------ settings
    def _apply(self, **changes: object) -> None:
        current = self.settings
        self.settings = VoiceSettings(
            voice=str(changes.get("voice", current.voice)),
            cfg_scale=float(changes.get("cfg_scale", current.cfg_scale)),  # type: ignore[arg-type]
            steps=int(changes.get("steps", current.steps)),  # type: ignore[call-overload]
        )
        self._show_settings()
        if self.narrator is not None:
            self.narrator.set_settings(**changes)
        self.post_message(self.SettingsChanged(self.settings))

    def action_cfg_up(self) -> None:
        cfg = round(min(CFG_RANGE[1], self.settings.cfg_scale + CFG_STEP), 2)
        self._apply(cfg_scale=cfg)

    def action_cfg_down(self) -> None:
        cfg = round(max(CFG_RANGE[0], self.settings.cfg_scale - CFG_STEP), 2)
        self._apply(cfg_scale=cfg)

    def action_steps_up(self) -> None:
        self._apply(steps=min(STEPS_RANGE[1], self.settings.steps + 1))

    def action_steps_down(self) -> None:
        self._apply(steps=max(STEPS_RANGE[0], self.settings.steps - 1))

    def action_next_voice(self) -> None:
        if not self.voices:
            self.app.notify("The voices are known once the model is loaded.", timeout=3)
            return
        i = self.voices.index(self.settings.voice) if self.settings.voice in self.voices else -1
        self._choose_voice(self.voices[(i + 1) % len(self.voices)])

    def action_pick_voice(self) -> None:
        if self._covered():
            return
        if not self.voices:
            self.app.notify("The voices are known once the model is loaded.", timeout=3)
            return
        self._preview_from = self.settings.voice

        def preview(voice: str) -> None:
            if voice != self.settings.voice and voice not in self.missing_voices:
                self._apply(voice=voice)
                self._go(self.position, play=True)

        def chosen(voice: str | None) -> None:
            original, self._preview_from = self._preview_from, None
            if voice is None and original is not None and original != self.settings.voice:
                self._apply(voice=original)
            elif voice is not None and voice != self.settings.voice:
                self._choose_voice(voice)

        self.app.push_screen(VoicePicker(self.voices, self.settings.voice, preview,
                                         missing=self.missing_voices), chosen)

    def _choose_voice(self, voice: str) -> None:
        """Read with ``voice`` from the next sentence, downloading it first if needed
        (the current voice reads on meanwhile)."""
        if voice not in self.missing_voices:
            self._apply(voice=voice)
            return
        if self._fetching is not None:
            self.app.notify(f"Still downloading voice {self._fetching}.", timeout=3)
            return
        self._fetching = voice
        self.set_download(f"downloading voice {voice}")
        self.post_message(self.VoiceWanted(voice))

    # ------------------------------------------------------------------ finding
    def action_contents(self) -> None:
        if self._covered():
            return
        def chosen(index: int | None) -> None:
            if index is not None:
                self.view.cursor = index
                self._go(index)

        self.app.push_screen(TableOfContents(self.plan, self.position), chosen)

    def action_search(self) -> None:
        if self._covered():
            return
        def chosen(query: str | None) -> None:
            if query:
                self._query = query
                self._find(self.plan[self.view.cursor].start if len(self.plan) else 0)

        self.app.push_screen(SearchBar(self._query), chosen)

    def action_search_next(self) -> None:
        if not self._query:
            self.action_search()
            return
        if len(self.plan):
            self._find(self.plan[self.view.cursor].end)

    def _find(self, start: int) -> None:
        if self._lower_text is None:
            self._lower_text = self.plan.document.text.lower()
        hit = find(self._lower_text, self._query, start)
        u = self.plan.at_offset(hit) if hit is not None else None
        if u is None and hit is not None:
            u = next((x for x in self.plan if x.end > hit), None)
        if u is None:
            self.app.notify(f"Not found: {self._query}", severity="warning", markup=False,
                            timeout=3)
            return
        self.view.cursor = u.index

    # ------------------------------------------------------------------ help
    def key_help(self) -> list[KeyHelp]:
        """Each binding of this screen and its view with the keys it has now."""
        keys: dict[str, list[str]] = {}
        described: dict[str, str] = {}
        for key, active in self.active_bindings.items():
            b = active.binding
            if b.id and active.node in (self, self.view, self.app):
                keys.setdefault(b.id, []).append(format_key(key))
                described[b.id] = b.description
        order = [b.id for b in (*self._bindings_of(self), *self._bindings_of(self.view),
                                *self._bindings_of(self.app)) if b.id]
        seen: list[str] = []
        for i in order:
            if i in keys and i not in seen:
                seen.append(i)
        return [(", ".join(keys[i]), described[i], i) for i in seen]

    @staticmethod
    def _bindings_of(node: object) -> list[Binding]:
        return [b for b in getattr(node, "BINDINGS", []) if isinstance(b, Binding)]

    def action_help(self) -> None:
        if self._covered():
            return
        self.app.push_screen(HelpScreen(self.key_help()))

    def _covered(self) -> bool:
        """Another screen is on top (or being pushed): keys queued before it appeared
        must not open a second one."""
        return self.app.screen_stack[-1] is not self
