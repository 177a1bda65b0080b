"""The narrator: synthesises the plan ahead of the playhead into the audio ring and obeys
play, pause, seek and settings changes. UI-free; the app calls its methods and polls
:meth:`Narrator.audible` and :attr:`Narrator.state`."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from engine.api import SAMPLE_RATE, SpeechEngine, SynthesisRequest
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.player import BLOCK, AudioOutput
from vvreader.text.plan import SpeechPlan

log = logging.getLogger("vvreader.narrator")


SPEED_MARGIN = 1.15
"""The synthesis speed is taken as this much lower than measured when deciding to stream
(the machine's load varies)."""
LENGTH_MARGIN = 1.25
"""An utterance is taken as this much longer than its characters say at the voice's pace."""


class State(str, Enum):
    STOPPED = "stopped"
    PLAYING = "playing"
    PAUSED = "paused"
    BUFFERING = "buffering"


@dataclass(frozen=True)
class VoiceSettings:
    voice: str = ""
    """Voice name or file ("" for the engine's first voice)."""
    cfg_scale: float = 1.5
    steps: int = 5


class AudioCache:
    """Synthesised utterances by (text, voice, cfg, steps), least recently used first out,
    bounded in bytes, so going back is instant."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple) -> np.ndarray | None:
        audio = self._items.get(key)
        if audio is not None:
            self._items.move_to_end(key)
        return audio

    def put(self, key: tuple, audio: np.ndarray) -> None:
        if key in self._items:
            return
        self._items[key] = audio
        self._bytes += audio.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes


class _Restart(Exception):
    """A command invalidated the utterance being synthesised."""


class Narrator:
    """Reads ``plan`` aloud through ``engine`` into the output made by ``make_output``.

    Args:
        plan: the speech plan.
        engine: any :class:`engine.api.SpeechEngine`.
        make_output: builds the audio output on the ring and clock (may raise
            ``AudioDeviceError``).
        settings: voice, CFG scale and steps to start with.
        lookahead: seconds of audio kept ready ahead of the playhead.
        model_id: part of the audio cache key.
    """

    def __init__(
        self,
        plan: SpeechPlan,
        engine: SpeechEngine,
        make_output: Callable[[AudioRing, PlaybackClock], AudioOutput],
        settings: VoiceSettings | None = None,
        lookahead: float = 20.0,
        model_id: str = "",
        cache: AudioCache | None = None,
    ) -> None:
        self.plan, self.engine = plan, engine
        self.settings = settings or VoiceSettings()
        self.lookahead = lookahead
        self.model_id = model_id
        self.cache = cache or AudioCache()
        self.ring = AudioRing(seconds=max(60.0, 3 * lookahead))
        self.clock = PlaybackClock(self.ring)
        self._make_output = make_output
        self._device = threading.Lock()
        """Held while the output is paused, resumed, replaced or closed (by the narrator
        thread, and by close(); never by the audio callback)."""
        self.output = make_output(self.ring, self.clock)
        self._output_lost = False
        """The output's device went away; the next play makes a new output."""
        self.speed: float | None = None
        """Measured synthesis speed, seconds of audio per second (None before any)."""
        self.error: str | None = None
        """The last error, for the UI to show (the UI clears it)."""
        self.error_source = "engine"
        """What :attr:`error` is about: "engine" or "audio"."""
        self.spoken_chars = 0
        """Characters of speech text synthesised so far (with :attr:`spoken_seconds`, the
        pace of the voice)."""
        self.spoken_seconds = 0.0
        self._suffix: tuple[np.ndarray, np.ndarray] | None = None
        self._seeds: dict[int, int] = {}  # utterances said again get a new noise seed
        self._playing = False
        self._next: int | None = None  # next utterance to synthesise
        self._speaking: int | None = None  # utterance being synthesised
        self._cmds: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._run, name="vvreader-narrator", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ controls (any thread)
    def play(self, index: int | None = None) -> None:
        """Start (from ``index``, or where it stands), or resume after a pause."""
        self._cmds.put(("play", index))

    def pause(self) -> None:
        """Silence within one audio block; resume goes on from the sample last heard.

        Never blocks the caller: the output plays silence from its next block at once,
        and a short-lived thread stops the stream (dropping what the device still held),
        which a hung sound server could make wait."""
        self.output.paused = True
        threading.Thread(target=self._stop_stream, name="vvreader-pause", daemon=True).start()
        self._cmds.put(("pause",))

    def _stop_stream(self) -> None:
        with self._device:
            if self.output.paused:  # not resumed meanwhile
                self.output.pause()

    def toggle(self) -> None:
        if self.state in (State.PLAYING, State.BUFFERING):
            self.pause()
        else:
            self.play()

    def jump(self, index: int) -> None:
        """Read from utterance ``index`` now (drops what was ready)."""
        self._cmds.put(("jump", index))

    def resay(self, index: int) -> None:
        """Synthesise utterance ``index`` again with a new noise seed and read from it (for
        when the voice garbled it)."""
        self._cmds.put(("resay", index))

    def set_settings(self, **changes: object) -> None:
        """Change voice, cfg_scale or steps; applies from the next utterance."""
        self._cmds.put(("settings", changes))

    def set_plan(self, plan: SpeechPlan) -> None:
        """A longer version of the plan (the same utterances first, more after): reading
        goes on into the new utterances."""
        self.plan = plan
        self._suffix = None

    def close(self) -> None:
        self._closed.set()
        self._cmds.put(("close",))
        self._thread.join(5)
        with self._device:
            _close_quietly(self.output)

    # ------------------------------------------------------------ reads (any thread)
    def audible(self) -> int | None:
        """The utterance being heard now."""
        return self.clock.audible()

    def seconds_left(self, index: int) -> float | None:
        """Listening time from utterance ``index`` to the end at the voice's measured pace
        (None before anything was synthesised)."""
        if not self.spoken_chars:
            return None
        if self._suffix is None:  # characters and pause seconds from each utterance on
            chars = np.array([len(u.speak) for u in self.plan], dtype=np.float64)
            pauses = np.array([u.pause_after for u in self.plan], dtype=np.float64) / 1000
            self._suffix = (np.cumsum(chars[::-1])[::-1], np.cumsum(pauses[::-1])[::-1])
        if not 0 <= index < len(self.plan):
            return 0.0
        chars, pauses = self._suffix
        return float(chars[index] * self.spoken_seconds / self.spoken_chars + pauses[index])

    @property
    def buffered_seconds(self) -> float:
        return self.ring.ready / SAMPLE_RATE

    @property
    def finished(self) -> bool:
        """Everything was synthesised and played."""
        return (
            self._next is not None and self._next >= len(self.plan) and self._speaking is None
            and self.ring.ready == 0 and getattr(self.plan, "complete", True)
        )

    @property
    def state(self) -> State:
        if not self._playing or self.finished:
            return State.STOPPED
        if self.output.paused:
            return State.PAUSED
        if self.ring.ready == 0:
            return State.BUFFERING
        return State.PLAYING

    # ------------------------------------------------------------ narrator thread
    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                self._drain_commands(block=not self._wants_work())
                if self._wants_work():
                    self._speak(self._next)
            except _Restart:
                continue
            except Exception as e:  # an engine that fails outright: say so, stay alive
                log.exception("narration stopped")
                self._fail(str(e) or type(e).__name__)
                self._playing = False

    def _fail(self, message: str, source: str = "engine") -> None:
        self.error_source = source
        self.error = message

    def _wants_work(self) -> bool:
        return (
            self._playing
            and self._next is not None
            and self._next < len(self.plan)
            and self.ring.ready < self.lookahead * SAMPLE_RATE
        )

    def _drain_commands(self, block: bool) -> None:
        if self._playing and not self._output_lost:
            why = self.output.lost()
            if why is not None:
                self._device_lost(why)
        while True:
            try:
                cmd = self._cmds.get(timeout=0.05) if block else self._cmds.get_nowait()
            except queue.Empty:
                return
            block = False
            self._apply(cmd)

    def _apply(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "close":
            self._closed.set()
            raise _Restart
        if kind == "pause":
            with self._device:
                self.output.pause()
        elif kind == "play":
            index = cmd[1]
            if index is not None or self._next is None:
                self._seek(index or 0)
            if not self._start_output():
                if self._speaking is not None:
                    raise _Restart
                return
            self._playing = True
            if index is not None and self._speaking is not None:
                raise _Restart
        elif kind == "jump":
            self._seek(cmd[1])
            raise _Restart
        elif kind == "resay":
            self._seeds[cmd[1]] = self._seeds.get(cmd[1], 0) + 1
            self._seek(cmd[1])
            raise _Restart
        elif kind == "settings":
            self.settings = replace(self.settings, **cmd[1])
            current = self.clock.current()
            self._reset_after_current()
            # Only look-ahead work is redone; the utterance being heard finishes as it is.
            if self._speaking is not None and (current is None or self._speaking > current):
                raise _Restart

    def _start_output(self) -> bool:
        """Start or resume the output, making a new one first if the device was lost (and
        once more if starting fails: a device lost while paused may be back). False, with
        the error said, if there is no sound."""
        for _attempt in range(2):
            if self._output_lost and not self._reopen():
                return False
            try:
                with self._device:
                    if not self._started:
                        self._started = True
                        self.output.paused = False
                        self.output.start()
                    else:
                        self.output.resume()
                return True
            except Exception as e:  # AudioDeviceError, or a broken output
                self._lose_output(getattr(e, "reason", None) or f"it did not start: {e}",
                                  started=False)
        return False

    def _device_lost(self, why: str) -> None:
        """The output stopped by itself while playing: stop there and say so."""
        self._lose_output(why)
        if self._speaking is not None:
            raise _Restart

    def _lose_output(self, why: str, started: bool = True) -> None:
        """Keep the utterance that was being heard (resume says it again from its start),
        close the output, stop, and say so."""
        with self._device:
            output = self.output
            at = getattr(output, "lost_at", None) or time.monotonic()
            heard = self.clock.position_at(at) if started else self.ring.read - 1
            _close_quietly(output)
            # The callback is gone: the ring is ours. What was handed but not heard is
            # dropped, and everything after the utterance heard is made again on resume.
            self.ring.rewind(heard + 1)
            end = self.ring.truncate(self.ring.read)
            self.clock.drop_after(end)
            self.clock.restart()
            kept = self.clock.utterance_at(max(0, heard))
            if kept is None:
                kept = self._next if self._next is not None else 0
            self._next = kept
            self._output_lost = True
            self._playing = False
        log.warning("audio device lost (%s); kept utterance %d", why, kept)
        self._fail(f"The audio device went away ({why}). Your place is kept: press space to "
                   "read on once it is back, or quit and choose another with --audio-device.",
                   "audio")

    def _reopen(self) -> bool:
        """A new output after the device was lost; False (and the error said) if not."""
        try:
            output = self._make_output(self.ring, self.clock)
        except Exception as e:  # AudioDeviceError says what to do
            log.warning("audio device still unavailable: %s", e)
            reason = getattr(e, "reason", None) or str(e)
            self._fail(f"Still no audio device ({reason}). Your place is kept: press space to "
                       "try again, or quit and choose another with --audio-device (null reads "
                       "without sound).", "audio")
            return False
        with self._device:
            self.output = output
            self._started = False
            self._output_lost = False
        return True

    def _seek(self, index: int) -> None:
        index = max(0, min(index, len(self.plan) - 1))
        end = self.ring.truncate(self.ring.read, margin=BLOCK)
        self.clock.drop_after(end)
        self._next = index

    def _reset_after_current(self) -> None:
        """Drop ready audio of the utterances after the audible one (new settings)."""
        current = self.clock.current()
        if current is None or self._next is None:
            return
        following = self.clock.start_of(current + 1)
        if following is not None:
            end = self.ring.truncate(following, margin=BLOCK)
            self.clock.drop_after(end)
        if self._next > current + 1:
            self._next = current + 1

    def _speak(self, index: int) -> None:
        self._speaking = index
        try:
            self._speak_one(index)
        finally:
            self._speaking = None

    def _speak_one(self, index: int) -> None:
        u = self.plan[index]
        s = self.settings
        seed = self._seeds.get(index, 0)
        key = (u.speak, s.voice, s.cfg_scale, s.steps, seed, self.model_id)
        audio = self.cache.get(key)
        log.info("speak %d voice=%s cfg=%g steps=%d cached=%s", index, s.voice, s.cfg_scale,
                 s.steps, audio is not None)
        self.clock.mark(self.ring.written, index)
        if audio is None:
            audio = self._synthesise(u.speak, s, seed)
            self.cache.put(key, audio)
        else:
            self._commit(audio)
        self.spoken_chars += len(u.speak)
        self.spoken_seconds += len(audio) / SAMPLE_RATE
        if index < len(self.plan) - 1:
            self._commit_silence(SAMPLE_RATE * u.pause_after // 1000)
        self._next = index + 1

    def _may_stream(self, chunks: int, made: float, speed: float, chars: int) -> bool:
        """Whether the utterance being made can start playing now (its chunks committed as
        they come) without running dry before its end: the pre-roll adapts to the speed.

        With ``made`` seconds of it made at ``speed`` x real time and ``ready`` seconds of
        earlier audio still to play, a remainder of ``rest`` seconds made at speed ``s``
        is in time iff ``rest * (1 / s - 1) <= ready + made`` (its last sample is made
        ``rest / s`` from now and heard ``ready + made + rest`` from now). ``s`` is the
        measured speed less a margin, ``rest`` comes from the voice's measured seconds per
        character, with a margin. Faster than real time with the margin this holds at
        once; between real time and the margin it holds after a short pre-roll; slower than
        real time only whole utterances are committed (a length misjudged there would
        stutter)."""
        if chunks < 2:
            return False
        measured = min(speed, self.speed or speed)
        s = measured / SPEED_MARGIN
        if s >= 1.0:
            return True
        # Below real time the rest's length decides, and the voice's pace per character is
        # only an estimate: there (and before any pace is measured) whole utterances only.
        if measured < 1.0 or not self.spoken_chars:
            return False
        expected = chars * self.spoken_seconds / self.spoken_chars * LENGTH_MARGIN
        rest = max(0.0, expected - made)
        ready = self.ring.ready / SAMPLE_RATE
        return rest * (1.0 / max(s, 1e-3) - 1.0) <= ready + made

    def _synthesise(self, text: str, s: VoiceSettings, seed: int = 0) -> np.ndarray:
        """Stream one utterance; commit chunks as they come once that cannot run dry
        before its end (:meth:`_may_stream`), so that a machine slower than real time
        waits between utterances (or at the start of one) instead of inside a word."""
        stream = self.engine.synthesize(
            SynthesisRequest(text=text, voice=s.voice, cfg_scale=s.cfg_scale, steps=s.steps,
                             seed=seed)
        )
        chunks: list[np.ndarray] = []
        committed = 0
        t0 = time.monotonic()
        try:
            for chunk in stream:
                chunks.append(chunk.audio)
                self._drain_commands(block=False)  # may raise _Restart
                made = sum(len(c) for c in chunks) / SAMPLE_RATE
                speed = made / max(time.monotonic() - t0, 1e-6)
                if committed or self._may_stream(len(chunks), made, speed, len(text)):
                    for c in chunks[committed:]:
                        self._commit(c)
                    committed = len(chunks)
        except _Restart:
            stream.cancel()
            raise
        except Exception as e:  # engine errors end the reading here, with a message
            self._fail(str(e))
            self._playing = False
            raise _Restart from None
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        elapsed = time.monotonic() - t0
        if len(audio):
            measured = len(audio) / SAMPLE_RATE / max(elapsed, 1e-6)
            self.speed = measured if self.speed is None else 0.7 * self.speed + 0.3 * measured
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


def _close_quietly(output: AudioOutput, timeout: float = 1.0) -> None:
    """Close ``output`` without waiting more than ``timeout`` (a hung sound server can
    block PortAudio's abort) and without letting an error out."""

    def close() -> None:
        try:
            output.close()
        except Exception:
            log.exception("closing the audio output")

    t = threading.Thread(target=close, name="vvreader-output-close", daemon=True)
    t.start()
    t.join(timeout)
