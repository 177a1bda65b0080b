"""Batched generation: the frames of several utterances advance together, as one batch.

Each utterance (:class:`BatchItem`) has its own text, voice prompt, CFG scale, noise,
frame limit, caches and EOS, and follows generate_frames' schedule (5 text tokens, then 6
speech frames) from its own start. The text windows due at the same frame run through
the TTS LM as one batch (the text LM one utterance at a time); the speech frames of all
of them run as one batch of 2B TTS-LM rows (the CFG pair of each), through a batched
frame backend (engine.frame_backend.BatchFrameBackend), whose products
read every weight once for all the rows. Utterances join (:meth:`BatchGenerator.add`) and
leave (after their last frame, or when cancelled) between two frames: continuous
batching, with the caches of different lengths masked (engine.cache.BatchPairCaches).

Every utterance's frames are those it gets alone from generate_frames with
``early_first=False`` (its first frame is handed out once fed back): the same work on
more rows. Its frames' EOS is read a frame late and its latents are decoded in ramping
groups, each utterance with its own decoder state (engine.generate.FrameOutput); the
groups due in the same step are decoded in one call (the C decoder reads its weights once
for all of them).
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

from engine.config import TTS_SPEECH_WINDOW_SIZE, TTS_TEXT_WINDOW_SIZE
from engine.generate import (
    DecodeRequest,
    Frame,
    FrameHooks,
    FrameKernels,
    FrameOutput,
    HostRows,
    Launched,
    NoiseSource,
    check_steps,
    decode_requests,
    default_frame_limit,
    seeded_noise,
)
from engine.model import VibeVoiceRealtime
from engine.tokenizer import checked_token_ids

if TYPE_CHECKING:
    from engine.cache import KVCache
    from engine.voices import VoicePrompt

_R = TypeVar("_R")


@dataclass
class BatchItem:
    """One utterance of a batch: what generate_frames takes for one utterance."""

    key: Hashable
    """Names the utterance in the frames the batch yields."""
    voice: VoicePrompt
    text_ids: Sequence[int]
    cfg_scale: float = 1.5
    noise: NoiseSource | None = None
    """x_T per frame; defaults to ``seeded_noise(0, ...)``."""
    max_frames: int | None = None
    """Frame limit; defaults to :func:`engine.generate.default_frame_limit`."""
    stop_at_eos: bool = True
    cancel: threading.Event | None = None
    """Checked before every frame; when set the utterance leaves the batch, as
    generate_frames returns (no more frames)."""
    hooks: FrameHooks | None = None


@dataclass
class _Utterance:
    item: BatchItem
    ids: list[int]
    noise: NoiseSource
    limit: int
    hooks: FrameHooks
    out: FrameOutput
    text: list[KVCache]
    pos: mx.array
    neg: mx.array
    consumed: int = 0
    index: int = 0
    """Frames launched so far."""
    window: int = 0
    in_window: int = 0
    """Frames launched since window ``window`` (0: the window comes next)."""


def _drain(gen: Generator[Frame, None, _R]) -> tuple[list[Frame], _R]:
    """Everything ``gen`` yields, and what it returns."""
    out: list[Frame] = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value


class BatchGenerator:
    """The utterances of one model and step count generated together (continuous
    batching): :meth:`add` an utterance whenever, :meth:`step` makes one frame of each.

    Args:
        model: a loaded model.
        steps: diffusion solver steps per frame, the same for every utterance (utterances
            with other step counts go in another batch).
        kernels: the frame backends and decoder (built here when None or of other steps).
        decode_group: frames decoded together after the first ones (as generate_frames).
    """

    def __init__(
        self,
        model: VibeVoiceRealtime,
        steps: int = 5,
        kernels: FrameKernels | None = None,
        decode_group: int | None = None,
    ) -> None:
        check_steps(steps, model.config.diffusion.ddpm_num_steps)
        if kernels is None or kernels.steps != steps:
            kernels = FrameKernels(model, steps)
        self.model, self.kernels = model, kernels
        self.frames = kernels.batch
        self.caches = self.frames.new_batch()
        self.group = max(1, decode_group if decode_group is not None else 4)
        self._utterances: list[_Utterance] = []
        self._requests: list[DecodeRequest] = []
        self._dtype = model.model.tts_input_types.weight.dtype
        self._conditions: tuple[mx.array, mx.array] | None = None
        """Every utterance's next conditions (B, hidden) each, in order, while no join or
        leave has changed the rows since the last frame made them."""
        self._teacherless: tuple[mx.array, mx.array] | None = None

    def __len__(self) -> int:
        """Utterances in the batch now."""
        return len(self._utterances)

    @property
    def keys(self) -> list[Hashable]:
        return [u.item.key for u in self._utterances]

    def add(self, item: BatchItem) -> None:
        """Start ``item`` with the next frame. Raises RequestError (nothing added) for
        token ids outside the vocabulary or a prompt longer than the model's positions."""
        cfg = self.model.config
        ids = checked_token_ids(item.text_ids, cfg.decoder.vocab_size)
        item.voice.check_positions(cfg.decoder.max_position_embeddings)
        limit = item.max_frames if item.max_frames is not None else default_frame_limit(len(ids))
        hooks = item.hooks or FrameHooks()
        # Room for the text now; the frames' columns are made as they come (engine/cache.py).
        text, index = self.frames.join(item.voice, self.caches, len(ids) + 8, len(ids) + 8)
        if index != len(self._utterances):
            raise RuntimeError(f"batch caches out of step: {index} != {len(self._utterances)}")
        voice = item.voice
        self._conditions = None
        self._utterances.append(
            _Utterance(
                item=item,
                ids=ids,
                noise=item.noise or seeded_noise(0, cfg.acoustic_vae_dim),
                limit=limit,
                hooks=hooks,
                out=FrameOutput(
                    self.kernels.decoder,
                    self.group,
                    item.stop_at_eos,
                    hooks,
                    requests=self._requests,
                ),
                text=text,
                pos=voice.tts_hidden[:, -1].astype(self._dtype),
                neg=voice.neg_hidden[:, -1].astype(self._dtype),
            )
        )

    def _no_teacher(self, batch: int, latent_dim: int) -> tuple[mx.array, mx.array]:
        """No teacher for any of ``batch`` utterances (made once per batch size)."""
        if self._teacherless is None or self._teacherless[0].shape[0] != batch:
            self._teacherless = (
                mx.zeros((batch, latent_dim)),
                mx.zeros((batch, 1), dtype=mx.bool_),
            )
        return self._teacherless

    def _remove(self, ended: Iterable[int]) -> None:
        gone = sorted(set(ended))
        if gone:
            self._conditions = None
            self.caches.remove(gone)
            self._utterances = [u for i, u in enumerate(self._utterances) if i not in gone]

    def step(self) -> list[tuple[Hashable, Frame]]:
        """One frame of every utterance (after its text window, when one is due): the
        frames settled by it, (key, frame) in batch order; an utterance's last frame has
        ``is_last`` and it leaves the batch. The audio of every utterance's frames settled
        in the step is decoded together, at its end."""
        try:
            return self._step()
        finally:
            requests, self._requests[:] = list(self._requests), []
            decode_requests(self.kernels.decoder, requests)

    def _step(self) -> list[tuple[Hashable, Frame]]:
        max_positions = self.model.config.decoder.max_position_embeddings
        settled: list[tuple[Hashable, Frame]] = []
        ended: list[int] = []
        due: dict[int, list[tuple[int, _Utterance, list[int]]]] = {}
        for i, u in enumerate(self._utterances):
            if u.item.cancel is not None and u.item.cancel.is_set():
                ended.append(i)
                continue
            if u.in_window != 0:
                continue
            start = u.window * TTS_TEXT_WINDOW_SIZE
            tokens = u.ids[start : start + TTS_TEXT_WINDOW_SIZE]
            if not tokens:
                continue
            lm_end = u.item.voice.lm_length + u.consumed + len(tokens)
            if max(self.caches.offset(i) + len(tokens), lm_end) > max_positions:
                frames, _ = _drain(u.out.finish("context"))
                settled += [(u.item.key, f) for f in frames]
                ended.append(i)
                continue
            due.setdefault(len(tokens), []).append((i, u, tokens))
        # The windows due now, one batch per length (the last window of a text is shorter).
        for group in due.values():
            items = [i for i, _, _ in group]
            h_text, h_tts = self.frames.batch_windows(
                mx.array([tokens for _, _, tokens in group]),
                [u.text for _, u, _ in group],
                self.caches,
                items,
            )
            if self._conditions is not None:
                # The windowed utterances' positive conditions replaced in place.
                pos_all, neg_all = self._conditions
                at = mx.array(items, dtype=mx.int32)[:, None]
                self._conditions = (mx.put_along_axis(pos_all, at, h_tts[:, -1], axis=0), neg_all)
            for row, (_, u, tokens) in enumerate(group):
                u.hooks.window(u.window, h_text[row : row + 1], h_tts[row : row + 1])
                u.pos = h_tts[row : row + 1, -1]
                u.consumed += len(tokens)
        self._remove(ended)
        if not self._utterances:
            return settled

        utterances = self._utterances
        latent_dim = self.model.config.acoustic_vae_dim
        teachers: list[mx.array | None] = []
        for u in utterances:
            u.hooks.conditions(u.index, u.pos, u.neg)
            teachers.append(u.hooks.teacher(u.index))
        if any(t is not None for t in teachers):
            teacher = mx.concatenate(
                [mx.zeros((1, latent_dim)) if t is None else t.astype(mx.float32) for t in teachers]
            )
            use_teacher = mx.array([[t is not None] for t in teachers])
        else:
            teacher, use_teacher = self._no_teacher(len(utterances), latent_dim)
        # The noise built on the host and sent as one array; the conditions as the last
        # frame left them unless a window or a join or leave changed them since.
        noise = np.concatenate([np.asarray(u.noise(u.index), np.float32) for u in utterances])
        if self._conditions is not None:
            pos_in, neg_in = self._conditions
        else:
            pos_in = mx.concatenate([u.pos for u in utterances])
            neg_in = mx.concatenate([u.neg for u in utterances])
        latent, fed, pos, neg, eos = self.frames.batch_frame(
            mx.array(noise),
            pos_in,
            neg_in,
            mx.array([[u.item.cfg_scale] for u in utterances], dtype=mx.float32),
            self.caches,
            teacher,
            use_teacher,
        )
        # Launched now; each utterance's previous EOS is read while this frame runs.
        host = HostRows(latent, fed, eos)
        mx.async_eval(*host.arrays, pos, neg)
        self._conditions = (pos, neg)
        ended = []
        for i, u in enumerate(utterances):
            u.pos, u.neg = pos[i : i + 1], neg[i : i + 1]
            forced = None
            if u.index + 1 >= u.limit:
                forced = "frame_limit"
            elif self.caches.offset(i) + 1 > max_positions:
                forced = "context"
            launched = Launched(
                u.index,
                latent[i : i + 1],
                fed[i : i + 1],
                eos[i],
                u.consumed,
                forced,
                host=host,
                row=i,
            )
            frames, stop = _drain(u.out.launched(launched))
            settled += [(u.item.key, f) for f in frames]
            if stop is not None:
                ended.append(i)
            u.index += 1
            u.in_window = (u.in_window + 1) % TTS_SPEECH_WINDOW_SIZE
            if u.in_window == 0:
                u.window += 1
        self._remove(ended)
        return settled

    def run(self) -> Iterator[tuple[Hashable, Frame]]:
        """Step until every utterance has ended; (key, frame) as they are settled."""
        while self._utterances:
            yield from self.step()


def generate_batch(
    model: VibeVoiceRealtime,
    items: Sequence[BatchItem],
    *,
    steps: int = 5,
    kernels: FrameKernels | None = None,
    decode_group: int | None = None,
) -> Iterator[tuple[Hashable, Frame]]:
    """The frames of ``items`` generated as one batch, (key, frame) as they are settled:
    each utterance's frames in order, the utterances' interleaved."""
    batch = BatchGenerator(model, steps, kernels, decode_group)
    for item in items:
        batch.add(item)
    yield from batch.run()
