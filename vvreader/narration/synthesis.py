"""The narrator's thread: takes commands from one queue and synthesises the plan ahead of
the playhead into the audio ring, through the :class:`~vvreader.player.Player`.

While one stream is comfortably ahead of the listener (:meth:`Pace.streams`) it makes one
utterance at a time; otherwise the next few together, as one batch of the engine (a
:class:`~engine.api.BatchSpeechEngine`'s ``synthesize_many``), taken in reading order.
The first utterance after a start or a move is made alone and played as soon as one
stream would play it: the reading starts speaking at once. After it, while nothing plays
(running dry, as at the end of that first utterance when the batch is slower to give its
first), a made utterance is held back until the ones after it will be made in time
(:func:`in_time`): the listener waits at most once, there, instead of between every
sentence after it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.api import (
    SAMPLE_RATE,
    BatchSpeechEngine,
    SpeechEngine,
    SynthesisRequest,
    SynthesisStream,
)
from vvreader.narration.audio_cache import AudioCache, CacheKey, cache_key
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
from vvreader.narration.lookahead import Pace, Pending, in_time
from vvreader.narration.word_timing import TokenMark
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.player import BLOCK, DeviceLost, DeviceUnavailable, Player
from vvreader.text.plan import SpeechPlan

log = logging.getLogger("vvreader.narrator")


class _Restart(Exception):
    """A command invalidated the utterance being synthesised."""


@dataclass(frozen=True)
class _Held:
    """An utterance made and held back (nothing plays: see the module's doc)."""

    index: int
    audio: np.ndarray


@dataclass
class _Batch:
    """Utterances asked for together, as far as they were taken."""

    t0: float
    """When they were asked for."""
    done: dict[int, np.ndarray] = field(default_factory=dict)
    """The audio of those made, by utterance."""
    made: float = 0.0
    """Seconds made of the one taken furthest (all of them advance together)."""
    speed: float = 0.0
    """The speed of each, x real time, as last measured."""

    def saw(self, made: float, speed: float) -> None:
        self.made = max(self.made, made)
        self.speed = speed


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
        batch: int = 4,
    ) -> None:
        self.plan, self.settings, self.engine, self.player = plan, settings, engine, player
        self.ring: AudioRing = player.ring
        self.clock: PlaybackClock = player.clock
        self.pace, self.cache = pace, cache
        self.lookahead, self.model_id = lookahead, model_id
        self.batch = max(1, batch)
        """The most utterances synthesised together (1: one at a time, as with an engine
        that cannot batch)."""
        self._batches: BatchSpeechEngine | None = None
        if isinstance(engine, BatchSpeechEngine):
            self._batches = engine
            self.batch = min(self.batch, max(1, engine.max_batch))
        else:
            self.batch = 1
        self._held: list[_Held] = []
        self._emit = emit
        self._commands = commands
        self.playing = False
        """Reading is wanted (play was asked for and nothing stopped it since)."""
        self.next: int | None = None
        """The next utterance to synthesise (None before the first play)."""
        self._in_turn = False  # ``next`` follows an utterance read in turn (not a note)
        self._opening = True  # nothing was committed since the start, a move or a lost device
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
            and not self._held
            and self.ring.ready == 0
            and getattr(self.plan, "complete", True)
        )

    # ------------------------------------------------------------ the loop
    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._drain_commands(block=not self._wants_work())
                if self._held and (self.next is None or self.next >= len(self.plan)):
                    self._release()  # nothing is left to wait for
                if self._wants_work():
                    self._read_ahead()
            except _Restart:
                continue
            except Exception as e:  # an engine that fails outright: say so, stay alive
                log.exception("narration stopped")
                self._emit(EngineFailed(str(e) or type(e).__name__))
                self.playing = False
                self._drop_held()

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
                self._drop_held()  # not heard yet: made again with the new settings
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
        self._drop_held()
        if lost.kept is not None:
            self.next = lost.kept
        elif self.next is None:
            self.next = 0
        self.playing = False
        self._opening = True
        log.warning("audio device lost (%s); kept utterance %d", lost.reason, self.next)

    # ------------------------------------------------------------ what comes next
    def _seek(self, index: int) -> None:
        index = max(0, min(index, len(self.plan) - 1))
        end = self.ring.truncate(self.ring.read, margin=BLOCK)
        self.clock.drop_after(end)
        self._held.clear()
        self.next = index
        self._in_turn = False
        self._opening = True

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
    def _upcoming(self) -> list[int]:
        """The next utterances to make, in reading order (at most :attr:`batch`)."""
        out: list[int] = []
        index = self.next
        while index is not None and index < len(self.plan) and len(out) < max(1, self.batch):
            out.append(index)
            index = self.plan.following(index)
        return out

    def _held_seconds(self) -> float:
        """Seconds of the utterances held back, with their pauses."""
        return sum(len(h.audio) / SAMPLE_RATE + self._pause(h.index) for h in self._held)

    def _pause(self, index: int) -> float:
        return self.plan[index].pause_after / 1000 if index < len(self.plan) - 1 else 0.0

    def _streams(self, indices: list[int], ahead: float) -> int:
        """How many of ``indices`` to synthesise together, with ``ahead`` seconds ready."""
        chars = [len(self.plan[i].speak) for i in indices]
        return self.pace.streams(self.batch, ahead, chars, self.player.speed, self._opening)

    def _read_ahead(self) -> None:
        indices = self._upcoming()
        ahead = self.ring.ready / SAMPLE_RATE + self._held_seconds()
        n = self._streams(indices, ahead)
        if n <= 1:
            self._speak(indices[0])
        else:
            self._speak_together(indices[:n])

    def _request(self, index: int, s: VoiceSettings) -> SynthesisRequest:
        return SynthesisRequest(
            text=self.plan[index].speak,
            voice=s.voice,
            cfg_scale=s.cfg_scale,
            steps=s.steps,
            seed=self._seeds.get(index, 0),
        )

    def _cached(self, index: int, s: VoiceSettings) -> tuple[CacheKey, np.ndarray | None]:
        key = cache_key(self.plan[index].speak, s, self._seeds.get(index, 0), self.model_id)
        audio = self.cache.get(key)
        log.info(
            "speak %d voice=%s cfg=%g steps=%d cached=%s",
            index,
            s.voice,
            s.cfg_scale,
            s.steps,
            audio is not None,
        )
        return key, audio

    def _speak(self, index: int) -> None:
        """Make utterance ``index`` alone."""
        self.speaking = index
        try:
            s = self.settings
            key, audio = self._cached(index, s)
            placed = False
            if audio is None:
                marks: list[TokenMark] = []
                t0 = time.monotonic()
                stream = self.engine.synthesize(self._request(index, s))
                audio, placed = self._take(index, stream, t0, marks, None)
                if len(audio):
                    self.pace.synthesised(len(audio) / SAMPLE_RATE, time.monotonic() - t0)
                self.marks[index] = marks
                self.cache.put(key, audio)
            self._made(index, audio)
            if not placed:
                self._place_or_hold(index, audio, None, 0.0)
        finally:
            self.speaking = None

    def _speak_together(self, indices: list[int]) -> None:
        """Make utterances ``indices`` (in reading order) as one batch, taking them in that
        order: the first streams as it is made when that cannot run dry, the others are
        kept until their turn. A command that makes them unwanted cancels them."""
        s = self.settings
        found = {i: self._cached(i, s) for i in indices}
        wanted = [i for i in indices if found[i][1] is None]
        assert self._batches is not None  # batch > 1 only for an engine that batches
        handles = self._batches.synthesize_many([self._request(i, s) for i in wanted])
        streams = dict(zip(wanted, handles, strict=True))
        batch = _Batch(time.monotonic(), {i: a for i, (_, a) in found.items() if a is not None})
        try:
            for k, index in enumerate(indices):
                if self.next != index or self.settings != s:
                    return  # moved on (a longer plan's notes) or new settings: the rest is stale
                self.speaking = index
                key, audio = found[index]
                placed = False
                if audio is None:
                    marks: list[TokenMark] = []
                    later = indices[k + 1 :]
                    audio, placed = self._take(
                        index, streams[index], batch.t0, marks, (batch, later)
                    )
                    self.marks[index] = marks
                    self.cache.put(key, audio)
                    batch.done[index] = audio
                self._made(index, audio)
                if not placed:
                    self._place_or_hold(
                        index, audio, self._pending(batch, indices[k + 1 :]), batch.speed
                    )
                self.speaking = None
        finally:
            self.speaking = None
            for handle in handles:
                handle.cancel()  # those not taken (made already: nothing happens)

    def _pending(self, batch: _Batch, indices: list[int]) -> list[Pending]:
        """Where the batch's utterances ``indices`` stand: each made as far as the furthest
        one taken (they advance together), to the length the voice's pace gives it."""
        out = []
        for i in indices:
            done = batch.done.get(i)
            if done is not None:
                out.append(Pending(len(done) / SAMPLE_RATE, 0.0, self._pause(i)))
                continue
            expected = self.pace.expected_seconds(len(self.plan[i].speak))
            if expected is None:
                out.append(Pending(0.0, float("inf"), self._pause(i)))
                continue
            made = min(batch.made, expected)
            out.append(Pending(made, expected - made, self._pause(i)))
        return out

    def _made(self, index: int, audio: np.ndarray) -> None:
        """Utterance ``index`` is made: read on after it."""
        u = self.plan[index]
        self.lengths[index] = len(audio)
        self.pace.said(len(u.speak), len(audio) / SAMPLE_RATE)
        self.next = self.plan.following(index)
        self._in_turn = self.plan.note_at(self.next) is None  # False only inside a note

    def _take(
        self,
        index: int,
        stream: SynthesisStream,
        t0: float,
        marks: list[TokenMark],
        batch: tuple[_Batch, list[int]] | None,
    ) -> tuple[np.ndarray, bool]:
        """Take utterance ``index``'s chunks from ``stream`` (asked for at ``t0``, alone or
        in ``batch`` with the utterances after it). Its chunks are committed as they come
        once that cannot run dry before its end (:meth:`Pace.may_stream`), so that a
        machine slower than real time waits between utterances (or at the start of one)
        instead of inside a word; the utterances held back before it are committed first,
        once in time. Returns its audio and whether it was committed."""
        text = self.plan[index].speak
        chunks: list[np.ndarray] = []
        committed = 0
        made_samples = 0
        try:
            for chunk in stream:
                chunks.append(chunk.audio)
                made_samples += len(chunk.audio)
                marks.append(TokenMark(made_samples, chunk.tokens_consumed, chunk.total_tokens))
                self._drain_commands(block=False)  # may raise _Restart
                made = made_samples / SAMPLE_RATE
                speed = made / max(time.monotonic() - t0, 1e-6)
                if committed:
                    for c in chunks[committed:]:
                        self._commit(c)
                    committed = len(chunks)
                    continue
                own_length, later = made, []
                if batch is not None:
                    together, after = batch
                    together.saw(made, speed)
                    expected = self.pace.expected_seconds(len(text)) or float("inf")
                    own = Pending(made, max(0.0, expected - made), self._pause(index))
                    own_length = own.made + own.rest + own.pause
                    later = self._pending(together, after)
                    if self._held and len(chunks) >= 2:
                        self._release_if_in_time([own, *later], speed)
                if self._held:
                    continue  # the ones held back go first
                # Streamed, this one plays from now on: those after it must be in time.
                ready = self.ring.ready / SAMPLE_RATE
                if self.pace.may_stream(len(chunks), made, speed, len(text), ready) and (
                    ready > 0 or in_time(own_length, later, speed, self.player.speed)
                ):
                    self._begin(index)
                    for c in chunks:
                        self._commit(c)
                    committed = len(chunks)
        except _Restart:
            stream.cancel()
            raise
        except Exception as e:  # engine errors end the reading here, with a message
            self._emit(EngineFailed(str(e)))
            self.playing = False
            self._drop_held()
            raise _Restart from None
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        if committed:
            for c in chunks[committed:]:
                self._commit(c)
            self._end(index)
        return audio, bool(committed)

    # ------------------------------------------------------------ into the ring
    def _place_or_hold(
        self, index: int, audio: np.ndarray, later: list[Pending] | None, speed: float
    ) -> None:
        """Commit the made utterance ``index``, or hold it back (with those held before it)
        while nothing plays and the utterances after it would come too late: a wait before
        the reading starts again, rather than one between its sentences. ``later``: the
        utterances after it in its batch (None: made alone, and what follows is not
        asked for yet: held when a batch will make it). The opening utterance (the first
        after a start or a move) is never held: it plays as soon as it is made."""
        if self.ring.ready == 0 and not self._opening:
            ahead = self._held_seconds() + len(audio) / SAMPLE_RATE + self._pause(index)
            if later is None:
                following = self._upcoming()
                hold = bool(following) and self._streams(following, ahead) > 1
            else:
                hold = not in_time(ahead, later, speed, self.player.speed)
            if hold:
                self._held.append(_Held(index, audio))
                return
        self._release()
        self._begin(index)
        self._commit(audio)
        self._end(index)

    def _release_if_in_time(self, pending: list[Pending], speed: float) -> None:
        """Commit the utterances held back if the ``pending`` ones after them are in time
        (or something plays already)."""
        if self.ring.ready > 0 or in_time(self._held_seconds(), pending, speed, self.player.speed):
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, []
        for h in held:
            self._begin(h.index)
            self._commit(h.audio)
            self._end(h.index)

    def _drop_held(self) -> None:
        """Forget the utterances held back: the next to make is the first of them."""
        if self._held:
            self.next = self._held[0].index
            self._held.clear()

    def _begin(self, index: int) -> None:
        self.clock.mark(self.ring.written, index)
        self._opening = False

    def _end(self, index: int) -> None:
        if index < len(self.plan) - 1:
            self._commit_silence(SAMPLE_RATE * self.plan[index].pause_after // 1000)

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
