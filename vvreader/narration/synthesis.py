"""The narrator's thread: takes commands from one queue and synthesises the plan ahead of
the playhead into the audio ring, through the :class:`~vvreader.player.Player`."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from engine.api import SAMPLE_RATE, SpeechEngine, SynthesisRequest
from vvreader.narration.audio_cache import AudioCache, cache_key
from vvreader.narration.commands import (
    Close,
    Command,
    Jump,
    Pause,
    Play,
    SayAgain,
    SetPlan,
    SetSettings,
    VoiceSettings,
)
from vvreader.narration.events import EngineFailed, Event
from vvreader.narration.lookahead import Pace
from vvreader.narration.word_timing import TokenMark
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.player import BLOCK, DeviceLost, DeviceUnavailable, Player
from vvreader.text.plan import SpeechPlan

log = logging.getLogger("vvreader.narrator")


class _Restart(Exception):
    """A command invalidated the utterance being synthesised."""


class Synthesis:
    """Reads ``plan`` aloud through ``engine`` into ``ring``, keeping ``lookahead`` seconds
    ready ahead of the playhead while playing.

    Its state (:attr:`plan`, :attr:`playing`, :attr:`next`, :attr:`speaking`) is written
    only by its thread; other threads read it.
    """

    def __init__(
        self,
        commands: queue.SimpleQueue[Command],
        plan: SpeechPlan,
        settings: VoiceSettings,
        engine: SpeechEngine,
        player: Player,
        pace: Pace,
        cache: AudioCache,
        lookahead: float,
        model_id: str,
        emit: Callable[[Event], None],
    ) -> None:
        self.plan, self.settings, self.engine, self.player = plan, settings, engine, player
        self.ring: AudioRing = player.ring
        self.clock: PlaybackClock = player.clock
        self.pace, self.cache = pace, cache
        self.lookahead, self.model_id = lookahead, model_id
        self._emit = emit
        self._commands = commands
        self.playing = False
        """Reading is wanted (play was asked for and nothing stopped it since)."""
        self.next: int | None = None
        """The next utterance to synthesise (None before the first play)."""
        self._in_turn = False  # ``next`` follows an utterance read in turn (not a note)
        self.speaking: int | None = None
        """The utterance being synthesised."""
        self._seeds: dict[int, int] = {}  # utterances said again get a new noise seed
        self.lengths: dict[int, int] = {}
        """Samples of each utterance's audio, as last made (for word follow)."""
        self.marks: dict[int, list[TokenMark]] = {}
        """How far the engine had read at each chunk of an utterance (for word follow;
        absent for audio from the cache made in an earlier run)."""
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name="vvreader-narrator", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self._closed.set()
        self._commands.put(Close())
        self.thread.join(5)

    @property
    def finished(self) -> bool:
        """Everything was synthesised and played."""
        return (
            self.next is not None
            and self.next >= len(self.plan)
            and self.speaking is None
            and self.ring.ready == 0
            and getattr(self.plan, "complete", True)
        )

    # ------------------------------------------------------------ the loop
    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._drain_commands(block=not self._wants_work())
                if self._wants_work():
                    self._speak(self.next)
            except _Restart:
                continue
            except Exception as e:  # an engine that fails outright: say so, stay alive
                log.exception("narration stopped")
                self._emit(EngineFailed(str(e) or type(e).__name__))
                self.playing = False

    def _wants_work(self) -> bool:
        # The look-ahead is listening time: faster listening needs more audio ready.
        wanted = min(self.lookahead * SAMPLE_RATE * self.player.speed, self.ring.capacity // 2)
        return (
            self.playing
            and self.next is not None
            and self.next < len(self.plan)
            and self.ring.ready < wanted
        )

    def _drain_commands(self, block: bool) -> None:
        if self.playing:
            lost = self.player.check()
            if lost is not None:
                self._keep(lost)
                self._emit(lost)
                if self.speaking is not None:
                    raise _Restart
        while True:
            try:
                cmd = self._commands.get(timeout=0.05) if block else self._commands.get_nowait()
            except queue.Empty:
                return
            block = False
            self._apply(cmd)

    def _apply(self, cmd: Command) -> None:
        match cmd:
            case Close():
                self._closed.set()
                raise _Restart
            case Pause():
                self.player.pause()
            case Play(index):
                if index is not None or self.next is None:
                    self._seek(index or 0)
                if not self._start_output():
                    if self.speaking is not None:
                        raise _Restart
                    return
                self.playing = True
                if index is not None and self.speaking is not None:
                    raise _Restart
            case Jump(index):
                self._seek(index)
                raise _Restart
            case SayAgain(index):
                self._seeds[index] = self._seeds.get(index, 0) + 1
                self._seek(index)
                raise _Restart
            case SetSettings(settings):
                self.settings = settings
                current = self.clock.current()
                self._reset_after_current()
                # Only look-ahead work is redone; the utterance being heard finishes as it is.
                if self.speaking is not None and (current is None or self.speaking > current):
                    raise _Restart
            case SetPlan(plan):
                self.plan = plan
                if self._in_turn and self.next is not None:
                    self.next = plan.skip_notes(self.next)  # notes the longer plan adds

    # ------------------------------------------------------------ the device
    def _start_output(self) -> bool:
        """Start or resume the output (twice if starting fails: a device lost while paused
        may be back). False, with the reason said, if there is no sound."""
        outcome: DeviceLost | DeviceUnavailable | None = None
        for _attempt in range(2):
            outcome = self.player.start()
            if outcome is None:
                return True
            if isinstance(outcome, DeviceUnavailable):
                break
            self._keep(outcome)
        assert outcome is not None
        self._emit(outcome)
        return False

    def _keep(self, lost: DeviceLost) -> None:
        """The device went away: stop, and read on from the utterance that was heard."""
        if lost.kept is not None:
            self.next = lost.kept
        elif self.next is None:
            self.next = 0
        self.playing = False
        log.warning("audio device lost (%s); kept utterance %d", lost.reason, self.next)

    # ------------------------------------------------------------ what comes next
    def _seek(self, index: int) -> None:
        index = max(0, min(index, len(self.plan) - 1))
        end = self.ring.truncate(self.ring.read, margin=BLOCK)
        self.clock.drop_after(end)
        self.next = index
        self._in_turn = False

    def _reset_after_current(self) -> None:
        """Drop ready audio of the utterances after the audible one (new settings)."""
        current = self.clock.current()
        if current is None or self.next is None:
            return
        after = self.plan.following(current)
        following = self.clock.start_of(after)
        if following is not None:
            end = self.ring.truncate(following, margin=BLOCK)
            self.clock.drop_after(end)
        if self.next > after:
            self.next = after
            self._in_turn = not self.plan[current].note

    # ------------------------------------------------------------ making audio
    def _speak(self, index: int) -> None:
        self.speaking = index
        try:
            self._speak_one(index)
        finally:
            self.speaking = None

    def _speak_one(self, index: int) -> None:
        u = self.plan[index]
        s = self.settings
        seed = self._seeds.get(index, 0)
        key = cache_key(u.speak, s, seed, self.model_id)
        audio = self.cache.get(key)
        log.info(
            "speak %d voice=%s cfg=%g steps=%d cached=%s",
            index,
            s.voice,
            s.cfg_scale,
            s.steps,
            audio is not None,
        )
        self.clock.mark(self.ring.written, index)
        if audio is None:
            marks: list[TokenMark] = []
            audio = self._synthesise(u.speak, s, seed, marks)
            self.marks[index] = marks
            self.cache.put(key, audio)
        else:
            self._commit(audio)
        self.lengths[index] = len(audio)
        self.pace.said(len(u.speak), len(audio) / SAMPLE_RATE)
        if index < len(self.plan) - 1:
            self._commit_silence(SAMPLE_RATE * u.pause_after // 1000)
        self.next = self.plan.following(index)
        self._in_turn = not u.note

    def _synthesise(
        self, text: str, s: VoiceSettings, seed: int = 0, marks: list[TokenMark] | None = None
    ) -> np.ndarray:
        """Stream one utterance; commit chunks as they come once that cannot run dry
        before its end (:meth:`Pace.may_stream`), so that a machine slower than real time
        waits between utterances (or at the start of one) instead of inside a word."""
        stream = self.engine.synthesize(
            SynthesisRequest(
                text=text, voice=s.voice, cfg_scale=s.cfg_scale, steps=s.steps, seed=seed
            )
        )
        chunks: list[np.ndarray] = []
        committed = 0
        t0 = time.monotonic()
        try:
            made_samples = 0
            for chunk in stream:
                chunks.append(chunk.audio)
                made_samples += len(chunk.audio)
                if marks is not None:
                    marks.append(TokenMark(made_samples, chunk.tokens_consumed, chunk.total_tokens))
                self._drain_commands(block=False)  # may raise _Restart
                made = sum(len(c) for c in chunks) / SAMPLE_RATE
                speed = made / max(time.monotonic() - t0, 1e-6)
                ready = self.ring.ready / SAMPLE_RATE
                if committed or self.pace.may_stream(len(chunks), made, speed, len(text), ready):
                    for c in chunks[committed:]:
                        self._commit(c)
                    committed = len(chunks)
        except _Restart:
            stream.cancel()
            raise
        except Exception as e:  # engine errors end the reading here, with a message
            self._emit(EngineFailed(str(e)))
            self.playing = False
            raise _Restart from None
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if len(audio):
            self.pace.synthesised(len(audio) / SAMPLE_RATE, time.monotonic() - t0)
        for c in chunks[committed:]:
            self._commit(c)
        return audio

    def _wait_for_space(self, n: int) -> None:
        while self.ring.space < n and not self._closed.is_set():
            self._drain_commands(block=False)
            time.sleep(0.01)

    def _commit(self, audio: np.ndarray) -> None:
        while not self.ring.try_write(audio) and not self._closed.is_set():
            self._wait_for_space(len(audio))

    def _commit_silence(self, n: int) -> None:
        while not self.ring.try_write_silence(n) and not self._closed.is_set():
            self._wait_for_space(n)
