"""The narrator: the controller between the reader's keys and the voice.

It keeps where reading stands (the utterance read, one jumped to and not heard yet,
whether to play once the model is ready, a note read out of turn and where to come back
to), turns the reader's moves into commands for its
thread (:mod:`.synthesis`) through one queue, and hands what happens (:mod:`.events`) to
the app's callback. The app's thread calls it; it is UI-free.

What is audible is a function of time and of the device's clock, so it is read, not told:
:meth:`Narrator.progress` says it, for the screen's tick."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from engine.api import SAMPLE_RATE, SpeechEngine
from vvreader.keep_awake import KeepAwake
from vvreader.media.controls import MediaCommand
from vvreader.narration.audio_cache import AudioCache
from vvreader.narration.commands import (
    Command,
    Jump,
    Pause,
    Play,
    SayAgain,
    SetPlan,
    SetSettings,
    VoiceSettings,
)
from vvreader.narration.events import Event, PlayWhenReady, SleepEnded
from vvreader.narration.lookahead import Pace
from vvreader.narration.sleep_timer import SleepTimer, end_of
from vvreader.narration.synthesis import Synthesis
from vvreader.narration.word_timing import spoken_fraction, word_at, words
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.player import AudioOutput, OutputFactory, Player
from vvreader.speed import SPEED_RANGE, clamp_speed
from vvreader.text.notes import cited_note
from vvreader.text.plan import SpeechPlan

__all__ = ["Narrator", "Progress", "State", "VoiceSettings"]

log = logging.getLogger("vvreader.narrator")


class State(str, Enum):
    STOPPED = "stopped"
    PLAYING = "playing"
    PAUSED = "paused"
    BUFFERING = "buffering"


@dataclass(frozen=True)
class Progress:
    """Where reading stands, for the screen."""

    position: int
    """The utterance being read: the one heard, or one jumped to and not heard yet."""
    status: str
    """A :class:`State` value, or "finished"."""
    ahead: float
    """Seconds of listening ready ahead of the voice (at the listening speed)."""
    speed: float | None
    """Synthesis speed, x real time (None until measured)."""
    left: float | None
    """Listening time from :attr:`position` to the end at the listening speed (None until
    measured)."""
    listening_speed: float = 1.0
    """How fast the voice is played."""
    sleep_left: float | None = None
    """Seconds until the sleep timer stops the reading (None: off, or not known yet)."""
    sleep_unit: str = ""
    """"chapter" or "section" when the sleep timer stops at an end; "" otherwise."""
    back_from_note: bool = False
    """Reading has just come back from a note it finished, to the sentence after the one
    citing it (:attr:`position`)."""


@dataclass(frozen=True)
class _NoteTrip:
    """A note read out of turn."""

    note: range
    """Its utterances."""
    back: int
    """The sentence citing it, where reading comes back to."""
    reached: bool = False
    """The voice has reached the note."""


class Narrator:
    """Reads ``plan`` aloud once :meth:`start` gives it an engine and an output.

    Args:
        plan: the speech plan.
        settings: voice, CFG scale and steps to start with.
        start: the utterance to start from.
        autoplay: read as soon as :meth:`start` is called.
        lookahead: seconds of listening kept ready ahead of the playhead.
        speed: listening speed (:mod:`vvreader.stretch`).
        now: the sleep timer's clock.
        keep_awake: held while reading (none by default).
        batch: the most utterances synthesised together when one stream is not
            comfortably ahead of the listener (1: always one at a time; an engine that
            cannot batch, or batches fewer, lowers it).
        model_id: part of the audio cache key.
        on_event: called with each :class:`~vvreader.narration.events.Event`, on the
            narrator's thread or the caller's; it must not block.
    """

    def __init__(
        self,
        plan: SpeechPlan,
        settings: VoiceSettings | None = None,
        start: int = 0,
        autoplay: bool = False,
        lookahead: float = 20.0,
        model_id: str = "",
        cache: AudioCache | None = None,
        on_event: Callable[[Event], None] | None = None,
        speed: float = 1.0,
        now: Callable[[], float] = time.monotonic,
        keep_awake: KeepAwake | None = None,
        batch: int = 4,
    ) -> None:
        self.plan = plan
        self.settings = settings or VoiceSettings()
        """The settings asked for (the thread reads with them from the next utterance)."""
        self.position = max(0, min(start, len(plan) - 1)) if len(plan) else 0
        """The utterance being read, or where reading will start."""
        self.lookahead, self.model_id = lookahead, model_id
        self.batch = batch
        self.cache = cache or AudioCache()
        self.listening_speed = clamp_speed(speed)
        """How fast the voice is played (1.0: as made); the pitch is kept."""
        self.ring = AudioRing(seconds=max(60.0, 3 * lookahead * SPEED_RANGE[1]))
        self.clock = PlaybackClock(self.ring)
        self.pace = Pace()
        self.keep_awake = keep_awake or KeepAwake(command=[])
        """Held while the voice plays, so that the machine does not go to sleep."""
        self.sleep = SleepTimer(now)
        """Stops the reading after some minutes or at the end of a chapter or section."""
        self._on_event = on_event or (lambda _event: None)
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self._want_play = autoplay
        self._pending: int | None = None  # jumped to, not yet audible
        self._logged: int | None = None
        self._note: _NoteTrip | None = None
        self._player: Player | None = None
        self.synthesis: Synthesis | None = None
        """The narrator's thread, once started."""

    def start(self, engine: SpeechEngine, make_output: OutputFactory) -> None:
        """The model is ready: open the output (may raise ``AudioDeviceError``, and then
        nothing started), start the thread, and read if asked to."""
        self._player = Player(self.ring, self.clock, make_output)
        self._player.set_speed(self.listening_speed)
        self.synthesis = Synthesis(
            self._commands,
            self.plan,
            self.settings,
            engine,
            self._player,
            self.pace,
            self.cache,
            self.lookahead,
            self.model_id,
            self._on_event,
            self.batch,
        )
        self.synthesis.start()
        if self._want_play and len(self.plan):
            self._pending = self.position
            self.play(self.position)

    def close(self) -> None:
        self.keep_awake.release()
        if self.synthesis is not None:
            self.synthesis.close()
        if self._player is not None:
            self._player.close()

    # ------------------------------------------------------------ the reader's moves
    def go(self, index: int | None, play: bool | None = None) -> bool:
        """Read from utterance ``index``, playing on if playing (``play`` forces it either
        way); a note read out of turn is left when ``index`` is outside it. False if there
        is nowhere to go."""
        if index is None or not len(self.plan):
            return False
        index = max(0, min(index, len(self.plan) - 1))
        if self._note is not None and index not in self._note.note:
            self._note = None
        self.position = index
        if self.synthesis is None:
            if play:
                self._want_play = True
            return True
        self._pending = index
        if play or (play is None and self.state in (State.PLAYING, State.BUFFERING)):
            self.play(index)
        else:
            self.jump(index)
        return True

    def step(self, move: str) -> bool:
        """Read from where the plan's move ``move`` (next_sentence, previous_paragraph,
        next_heading...) leads from the utterance being read: in the text a book's notes
        are passed over; in a note read out of turn the move stays in the note, and out of
        its end leads back to the text after the citing sentence. False if there is nowhere
        to go."""
        cited_at = self._note.back if self._note is not None else None
        return self.go(getattr(self.plan, move)(self.position, cited_at))

    def play_pause(self) -> bool:
        """Play, pause or resume; before the model is ready, whether to play once it is.
        True if reading went back to the start (it had finished)."""
        if self.synthesis is None:
            self._want_play = not self._want_play
            self._on_event(PlayWhenReady(self._want_play))
            return False
        if self.finished:
            return self.go(0, play=True)
        state = self.state
        if state is State.STOPPED:
            self._pending = self.position
            self.play(self.position)
        elif state in (State.PLAYING, State.BUFFERING):
            self.pause()
        else:
            self.play()
        return False

    def say_again(self) -> None:
        """Synthesise the utterance being read again (a new take) and read on from it."""
        if self.synthesis is None or not len(self.plan):
            return
        self._pending = self.position
        self._commands.put(SayAgain(self.position))
        if self.state is State.STOPPED:
            self.play()

    def read_note(self) -> str | None:
        """Read the note that the sentence being read cites, then come back to the text after
        that sentence; while a note is read, come back to the citing sentence now. What to
        tell the reader when the sentence cites no note (None: reading moved)."""
        if self.leave_note():
            return None
        note = cited_note(self.plan, self.position)
        if note is None:
            return "This sentence cites no note."
        self._note = _NoteTrip(note, self.position)
        self.go(note.start, play=True)
        return None

    def leave_note(self) -> bool:
        """Come back from a note read out of turn to the sentence citing it, reading on if
        reading. False when no note is being read."""
        if self._note is None:
            return False
        back, self._note = self._note.back, None
        self.go(back)
        return True

    @property
    def reading_note(self) -> bool:
        """A note is being read out of turn."""
        return self._note is not None

    def _follow_note(self) -> bool:
        """Note that the voice reached the note, and come back once it is over: to the
        sentence after the citing one. True when reading came back."""
        trip = self._note
        if trip is None:
            return False
        over = False  # a note at the plan's end is over once everything is played
        if self.position in trip.note:
            if not trip.reached:
                self._note = _NoteTrip(trip.note, trip.back, reached=True)
                return False
            over = self.finished
            if not over:
                return False
        elif not trip.reached:
            return False
        self._note = None
        after = self.plan.following(trip.back)
        if after < len(self.plan):
            # Reading on out of the note leads there already (the plan's one rule); a note
            # cited again elsewhere leads to its first citing sentence: moved back then.
            if over or self.position != after:
                self.go(after, play=True if over else None)
        else:  # nothing is read in turn after the citing sentence: wait there
            self.go(trip.back, play=False)
            self.pause()
        return True

    def media(self, command: MediaCommand) -> bool:
        """A media button, doing what the reader's own key does. True if reading moved (as
        :meth:`go` and :meth:`play_pause` say)."""
        playing = self.state in (State.PLAYING, State.BUFFERING)
        match command:
            case MediaCommand.PLAY_PAUSE:
                return self.play_pause()
            case MediaCommand.PLAY if not playing:
                return self.play_pause()
            case MediaCommand.PAUSE | MediaCommand.STOP if playing:
                return self.play_pause()
            case MediaCommand.NEXT:
                return self.step("next_sentence")
            case MediaCommand.PREVIOUS:
                return self.step("previous_sentence")
        return False

    def set_settings(self, settings: VoiceSettings) -> None:
        """Read with ``settings`` from the utterance after the one being heard."""
        self.settings = settings
        if self.synthesis is not None:
            self._commands.put(SetSettings(settings))

    def set_speed(self, speed: float) -> float:
        """Play at ``speed`` (clamped to the range) from the next audio block: the audio
        made ahead is stretched as it is played, so nothing is made again. Returns the
        speed set."""
        self.listening_speed = clamp_speed(speed)
        if self._player is not None:
            self._player.set_speed(self.listening_speed)
        return self.listening_speed

    def sleep_choose(self, choice: str) -> str:
        """Set the sleep timer as the sleep picker's ``choice`` says: "off", "chapter",
        "section", or a number of minutes. What to tell the reader."""
        if choice == "off":
            self.sleep_cancel()
            return "Sleep timer off."
        if choice in ("chapter", "section"):
            self.sleep_at_end_of(choice)
            return f"Reading stops at the end of this {choice}."
        self.sleep_after(float(choice))
        return f"Reading stops in {choice} minutes."

    def sleep_after(self, minutes: float) -> None:
        """Stop reading ``minutes`` from now, fading out."""
        self.sleep.after(minutes)

    def sleep_at_end_of(self, unit: str) -> None:
        """Stop reading where the current ``unit`` ("chapter" or "section") ends."""
        self.sleep.before(end_of(self.plan, self.position, unit), unit)

    def sleep_cancel(self) -> None:
        self.sleep.cancel()
        self._set_volume(1.0)

    def _set_volume(self, volume: float) -> None:
        if self._player is not None:
            self._player.set_volume(volume)

    def _sleep_tick(self, audible: int | None, state: State) -> float | None:
        """Fade out and stop as the sleep timer says; the seconds it has left."""
        if not self.sleep.active:
            return None
        listening_left = None
        stop = self.sleep.stop_before
        if stop is not None:
            start = self.clock.start_of(stop) if stop < len(self.plan) else None
            if stop >= len(self.plan) and self.synthesis is not None:
                start = self.ring.written if self.synthesis.next == len(self.plan) else None
            if start is not None:
                heard = max(0, self.clock.position)
                listening_left = (start - heard) / SAMPLE_RATE / self.listening_speed
        left = self.sleep.left(listening_left)
        if state is not State.PLAYING and state is not State.BUFFERING:
            return left
        outcome = self.sleep.tick(audible, listening_left)
        if outcome.stop:
            self.pause()
            self._set_volume(1.0)
            if stop is not None and stop < len(self.plan):
                self.go(stop, play=False)  # read on from the next chapter or section
            self._on_event(SleepEnded(self.position))
            return None
        self._set_volume(outcome.gain)
        return left

    def set_plan(self, plan: SpeechPlan) -> None:
        """A longer version of the plan (the same utterances first, more after): reading
        goes on into the new utterances."""
        self.plan = plan
        if self.synthesis is not None:
            self._commands.put(SetPlan(plan))

    # ------------------------------------------------------------ commands
    def play(self, index: int | None = None) -> None:
        """Start (from ``index``, or where it stands), or resume after a pause."""
        self._commands.put(Play(index))

    def pause(self) -> None:
        """Silence within one audio block, without waiting for the device; resume goes on
        from the sample last heard."""
        if self._player is not None:
            self._player.silence()
        self._commands.put(Pause())

    def jump(self, index: int) -> None:
        """Read from utterance ``index`` now (drops what was ready)."""
        self._commands.put(Jump(index))

    # ------------------------------------------------------------ reads
    @property
    def ready(self) -> bool:
        """The model is ready: :meth:`start` was called."""
        return self.synthesis is not None

    def progress(self) -> Progress | None:
        """Where reading stands now (None before the model is ready)."""
        if self.synthesis is None:
            return None
        audible = self.audible()
        state = self.state
        if self._pending is not None:
            if audible == self._pending and state is State.PLAYING:
                self._pending = None
            else:
                audible = self._pending
        if audible is not None:
            self.position = audible
            if audible != self._logged:
                self._logged = audible
                log.info("audible %d", audible)
        back_from_note = self._follow_note()
        status = "finished" if self.finished and self.synthesis.playing else state.value
        left = self.pace.seconds_left(self.plan, self.position)
        sleep_left = self._sleep_tick(audible, state)
        self.keep_awake.want(self.state in (State.PLAYING, State.BUFFERING))
        return Progress(
            self.position,
            status,
            self.buffered_seconds / self.listening_speed,
            self.pace.speed,
            None if left is None else left / self.listening_speed,
            self.listening_speed,
            sleep_left,
            self.sleep.unit if self.sleep.active else "",
            back_from_note,
        )

    def audible(self) -> int | None:
        """The utterance being heard now."""
        return self.clock.audible()

    def word(self) -> tuple[int, int] | None:
        """The word being heard now, approximately (:mod:`.word_timing`): its span in the
        document's text; None when nothing is heard or its audio is not known."""
        s = self.synthesis
        position = self.clock.position
        u = self.clock.utterance_at(position) if position >= 0 else None
        if s is None or u is None or not 0 <= u < len(self.plan):
            return None
        start, length = self.clock.start_of(u), s.lengths.get(u)
        if start is None or not length:
            return None
        utterance = self.plan[u]
        text = self.plan.document.text[utterance.start : utterance.end]
        fraction = spoken_fraction(position - start, length, s.marks.get(u, []))
        return word_at(words(text, utterance.start), fraction)

    @property
    def state(self) -> State:
        s = self.synthesis
        if s is None or self._player is None or not s.playing or s.finished:
            return State.STOPPED
        if self._player.paused:
            return State.PAUSED
        if self.ring.ready == 0:
            return State.BUFFERING
        return State.PLAYING

    @property
    def finished(self) -> bool:
        """Everything was synthesised and played."""
        return self.synthesis is not None and self.synthesis.finished

    @property
    def buffered_seconds(self) -> float:
        return self.ring.ready / SAMPLE_RATE

    @property
    def speed(self) -> float | None:
        """Measured synthesis speed, x real time (None before any)."""
        return self.pace.speed

    @property
    def output(self) -> AudioOutput | None:
        """The audio output in use (None before :meth:`start`)."""
        return None if self._player is None else self._player.output

    @property
    def alive(self) -> bool:
        """The narrator's thread runs."""
        return self.synthesis is not None and self.synthesis.thread.is_alive()
