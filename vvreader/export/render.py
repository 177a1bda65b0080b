"""Render a speech plan to audio files: the export's pipeline.

The utterances of the outline (``outline``) are made by the engine in batches, in order
(``synthesis``), kept in the work folder as they are made (``store``), stretched to the
listening speed, followed by their pauses and handed to the encoding thread
(``encoding``), which writes them with the file format's encoder (``formats``) to a file
in the work folder. A complete file is renamed to its place, so the output path holds
either a whole file or none; the work folder is deleted once everything is written, and
kept when the export stops, so that the same command continues from it.

One file holds every chapter (their titles and start times as the format's chapters), or
with ``split_chapters`` each chapter is a file of its own, numbered, in a folder; the
files of a split export, put end to end, are the one file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.api import SAMPLE_RATE, BatchSpeechEngine, SynthesisRequest
from vvreader.export.encoding import EncodingThread
from vvreader.export.errors import ExportError, ExportStopped
from vvreader.export.formats import (
    AudioFormat,
    BookTags,
    Chapter,
    Encoder,
    check_ready,
    format_for,
    open_encoder,
)
from vvreader.export.naming import (
    chapter_file_name,
    chapters_folder,
    partial_path,
    work_folder,
)
from vvreader.export.outline import Outline, outline
from vvreader.export.store import UtteranceStore, utterance_key, write_failure
from vvreader.export.subtitles import Cue, vtt_text
from vvreader.export.synthesis import audio_in_order
from vvreader.stretch import stretch
from vvreader.text.plan import SpeechPlan

__all__ = ["SETTLED", "ExportResult", "Progress", "export"]

SETTLED = 10
"""Utterances made before their pace tells the time left."""


@dataclass(frozen=True)
class Progress:
    """Where an export stands, reported after each utterance (numbers only: the command
    line words them, ``vvreader.humanize.describe_export``)."""

    done: int
    """Utterances written."""
    total: int
    made: int
    """Of ``done``, those the engine made in this run (not read from the work folder)."""
    chars_done: int
    """Characters spoken in the utterances written (the measure of the work)."""
    chars_total: int
    chars_made: int
    """Of ``chars_done``, those the engine spoke in this run (not read from the work folder)."""
    audio_seconds: float
    """Seconds of audio written."""
    made_seconds: float
    """Of ``audio_seconds``, those made by the engine in this run."""
    elapsed: float
    """Seconds since the export started."""
    chapter: str
    """The title of the chapter being written."""
    chapter_number: int
    """Its number, from 1."""
    chapters: int

    @property
    def fraction(self) -> float:
        """Done, from 0 to 1."""
        return self.chars_done / self.chars_total if self.chars_total else 1.0

    @property
    def speed(self) -> float:
        """Seconds of audio made per second of wall time (0 before any is made)."""
        return self.made_seconds / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """At the pace of this run so far (None until :data:`SETTLED` utterances are made:
        the first batch comes out together, after the model's warm-up)."""
        if self.made < SETTLED or self.chars_made <= 0 or self.elapsed <= 0:
            return None
        return (self.chars_total - self.chars_done) * self.elapsed / self.chars_made


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    files: tuple[Path, ...]
    """The audio files, in order."""
    subtitles: tuple[Path, ...]
    """The VTT files written (one per audio file), or none."""
    seconds: float
    """The length of the audio, all files together."""
    chapters: tuple[Chapter, ...]
    """The chapters, their times counted from the start of the first file."""
    cues: tuple[Cue, ...]
    """Every utterance, its times counted from the start of the first file."""
    resumed: int
    """Utterances taken from the work folder of an earlier run."""


@dataclass(frozen=True)
class _Target:
    """One file of the export: its place, the chapters it holds and its tags."""

    path: Path
    parts: range
    tags: BookTags


def _targets(out: Path, fmt: AudioFormat, book: Outline, split: bool) -> list[_Target]:
    if not split:
        return [_Target(out, range(len(book.parts)), book.tags)]
    folder = chapters_folder(out)
    n = len(book.parts)
    return [
        _Target(
            folder / chapter_file_name(k + 1, n, part.title, fmt.suffix),
            range(k, k + 1),
            replace(book.tags, title=part.title, album=book.tags.title, track=k + 1, tracks=n),
        )
        for k, part in enumerate(book.parts)
    ]


def export(
    plan: SpeechPlan,
    engine: BatchSpeechEngine,
    out: Path,
    *,
    voice: str = "",
    cfg_scale: float = 1.5,
    steps: int = 5,
    first: int = 0,
    last: int | None = None,
    speed: float = 1.0,
    split_chapters: bool = False,
    subtitles: bool = False,
    name: str = "",
    on_progress: Callable[[Progress], None] | None = None,
) -> ExportResult:
    """Render utterances ``first..last`` (inclusive; a book's notes left out) of ``plan``
    to ``out``, whose extension names the format, each utterance followed by its planned
    pause. At a ``speed`` other than 1 each utterance is stretched with its pitch kept,
    and its pause scaled with it, as the reader plays it.

    Args:
        split_chapters: one file per chapter, numbered, in the folder ``out`` names
            without its extension.
        subtitles: write a ``.vtt`` beside each file (a WAV export always does).
        name: the document's file name (the title of a book that gives none).
        on_progress: called after each utterance, on the calling thread.

    Raises:
        ExportError: the output cannot be written, the format cannot be made here, or the
            engine failed (the message says what to do; the work made is kept).
        ExportStopped: interrupted (KeyboardInterrupt); the work made is kept.
    """
    out = Path(out)
    fmt = format_for(out)
    check_ready(fmt)
    book = outline(plan, first, last, name)
    if not book.utterances:
        raise ExportError("nothing to read in that range (see --plan for the indices)")
    requests = [
        SynthesisRequest(text=u.speak, voice=voice, cfg_scale=cfg_scale, steps=steps)
        for u in book.utterances
    ]
    identity = engine.identity
    keys = [utterance_key(r, identity) for r in requests]
    targets = _targets(out, fmt, book, split_chapters)
    if split_chapters:
        folder = chapters_folder(out)
        try:
            folder.mkdir(exist_ok=True)
        except OSError as err:
            raise ExportError(write_failure(folder, err)) from None
    with UtteranceStore(work_folder(out)) as store:
        store.keep_only(keys)
        try:
            result = _render(book, engine, requests, keys, store, targets, fmt, speed, on_progress)
        except KeyboardInterrupt:
            raise ExportStopped(store.folder, store.count()) from None
        except ExportError as err:
            kept = store.count()
            if kept:
                raise ExportError(
                    f"{err}; the {kept} utterances made are kept in {store.folder}: run the "
                    "same command again to continue"
                ) from None
            raise
        written_vtt: tuple[Path, ...] = ()
        if subtitles or fmt.name == "wav":
            written_vtt = _write_subtitles(result, targets, store.folder)
        store.remove()
    return replace(result, subtitles=written_vtt)


def _render(
    book: Outline,
    engine: BatchSpeechEngine,
    requests: list[SynthesisRequest],
    keys: list[str],
    store: UtteranceStore,
    targets: list[_Target],
    fmt: AudioFormat,
    speed: float,
    on_progress: Callable[[Progress], None] | None,
) -> ExportResult:
    target_of = {k: t for t, target in enumerate(targets) for k in target.parts}
    part_starts = {book.parts[k].first: k for k in range(len(book.parts))}
    count = len(book.utterances)
    chars_total = sum(len(u.speak) for u in book.utterances)
    written = 0  # samples, all files together
    file_start = 0  # samples before the current file
    chapter_starts: list[int] = []
    cues: list[Cue] = []
    current: list[Encoder] = []  # the encoder open on the encoding thread
    chars_done = chars_made = resumed = 0
    made = 0.0
    t0 = time.perf_counter()

    def opener(target: _Target) -> Callable[[], None]:
        def run() -> None:
            current.append(open_encoder(fmt, partial_path(store.folder, target.path.name)))

        return run

    def finisher(target: _Target, chapters: list[Chapter]) -> Callable[[], None]:
        def run() -> None:
            encoder = current.pop()
            encoder.finish(chapters, target.tags)
            partial = partial_path(store.folder, target.path.name)
            try:
                os.replace(partial, target.path)
            except OSError as err:
                raise ExportError(write_failure(target.path, err)) from None

        return run

    def aborter() -> None:
        while current:
            current.pop().abort()

    encoding = EncodingThread()
    try:
        for item in audio_in_order(engine, requests, keys, store):
            p = item.position
            u = book.utterances[p]
            part = book.part_of(p)
            if p in part_starts:
                chapter_starts.append(written)
                target = targets[target_of[part]]
                if part == target.parts.start:
                    file_start = written
                    encoding.submit(opener(target))
            audio = item.audio if speed == 1.0 else stretch(item.audio, speed).astype(np.float32)
            start = written
            encoding.submit(lambda a=audio: current[-1].write(a))
            written += len(audio)
            cues.append(Cue(u.index, start / SAMPLE_RATE, written / SAMPLE_RATE, u.speak))
            pause = 0
            if p + 1 < count:
                pause = int(round(SAMPLE_RATE * u.pause_after / 1000 / speed))
                encoding.submit(lambda n=pause: current[-1].write(np.zeros(n, np.float32)))
                written += pause
            chars_done += len(u.speak)
            resumed += not item.fresh
            if item.fresh:
                chars_made += len(u.speak)
                made += (len(audio) + pause) / SAMPLE_RATE
            if p + 1 == count or book.part_of(p + 1) != part:
                target = targets[target_of[part]]
                if part + 1 == target.parts.stop:
                    chapters = _chapters(book, chapter_starts, target, written, file_start)
                    encoding.submit(finisher(target, chapters))
            if on_progress is not None:
                on_progress(
                    Progress(
                        done=p + 1,
                        total=count,
                        made=p + 1 - resumed,
                        chars_done=chars_done,
                        chars_total=chars_total,
                        chars_made=chars_made,
                        audio_seconds=written / SAMPLE_RATE,
                        made_seconds=made,
                        elapsed=time.perf_counter() - t0,
                        chapter=book.parts[part].title,
                        chapter_number=part + 1,
                        chapters=len(book.parts),
                    )
                )
        encoding.close()
    except BaseException:
        encoding.drain()
        encoding.submit(aborter, always=True)
        encoding.stop()
        raise
    chapters = tuple(
        Chapter(
            book.parts[k].title,
            chapter_starts[k] / SAMPLE_RATE,
            (chapter_starts[k + 1] if k + 1 < len(chapter_starts) else written) / SAMPLE_RATE,
        )
        for k in range(len(chapter_starts))
    )
    return ExportResult(
        files=tuple(t.path for t in targets),
        subtitles=(),
        seconds=written / SAMPLE_RATE,
        chapters=chapters,
        cues=tuple(cues),
        resumed=resumed,
    )


def _chapters(
    book: Outline, starts: list[int], target: _Target, end: int, file_start: int
) -> list[Chapter]:
    """The chapters of ``target``, their times counted from the start of its file."""
    times = [*(starts[k] for k in target.parts), end]
    return [
        Chapter(
            book.parts[k].title,
            (times[i] - file_start) / SAMPLE_RATE,
            (times[i + 1] - file_start) / SAMPLE_RATE,
        )
        for i, k in enumerate(target.parts)
    ]


def _write_subtitles(result: ExportResult, targets: list[_Target], work: Path) -> tuple[Path, ...]:
    """A VTT beside each file (written in ``work`` and renamed), its times counted from
    the start of that file."""
    written = []
    for target in targets:
        start = result.chapters[target.parts.start].start
        end = result.chapters[target.parts.stop - 1].end
        cues = [
            replace(c, start=c.start - start, end=c.end - start)
            for c in result.cues
            if start <= c.start < end
        ]
        path = target.path.with_suffix(".vtt")
        temp = work / f"partial-{path.name}"
        try:
            temp.write_text(vtt_text(cues), encoding="utf-8")
            os.replace(temp, path)
        except OSError as err:
            raise ExportError(write_failure(path, err)) from None
        written.append(path)
    return tuple(written)
