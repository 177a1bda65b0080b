"""Batched generation (engine/batch.py): every utterance of a batch gets the frames it gets
alone, whatever joins and leaves around it."""

from __future__ import annotations

import threading

import mlx.core as mx
import numpy as np
import pytest

from engine.batch import BatchGenerator, BatchItem, generate_batch
from engine.cache import BatchPairCaches, make_cfg_caches
from engine.errors import RequestError
from engine.generate import FrameKernels, generate_frames, seeded_noise
from engine.tokenizer import TextTokenizer
from engine.voices import load_voice
from engine.weights import load_model

STEPS = 4


@pytest.fixture(scope="module")
def setup(tiny_model):
    model = load_model(tiny_model)
    voices = {p.stem: load_voice(p) for p in sorted((tiny_model / "voices").glob("*.safetensors"))}
    tokenizer = TextTokenizer(tiny_model / "tokenizer.json")
    return model, voices, tokenizer, FrameKernels(model, STEPS)


def _items(setup) -> list[BatchItem]:
    model, voices, tokenizer, _ = setup
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "Hello.",
        "A longer sentence, with a comma, and several more words to read aloud today.",
    ]
    names = sorted(voices)
    dim = model.config.acoustic_vae_dim
    return [
        BatchItem(
            key=k,
            voice=voices[names[k % len(names)]],
            text_ids=tokenizer.encode(text),
            cfg_scale=1.3 + 0.5 * k,
            noise=seeded_noise(20 + k, dim),
            max_frames=(17, 9, 31)[k],
            stop_at_eos=False,
        )
        for k, text in enumerate(texts)
    ]


def _alone(setup, item: BatchItem) -> list:
    model, _, _, kernels = setup
    return list(
        generate_frames(
            model, item.voice, item.text_ids, cfg_scale=item.cfg_scale, steps=STEPS,
            noise=item.noise, max_frames=item.max_frames, stop_at_eos=item.stop_at_eos,
            kernels=kernels, early_first=False,
        )
    )  # fmt: skip


def _close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> None:
    """Within the parity tolerance: max |got - want| <= rtol * max |want| (the products
    of a batch take more rows and its attention more columns, so the rounding differs)."""
    assert got.shape == want.shape
    err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
    assert err <= rtol, f"{err:.2e} > {rtol:.0e}"


def _assert_same_frames(got: list, want: list) -> None:
    assert [f.index for f in got] == [f.index for f in want]
    assert [f.is_last for f in got] == [f.is_last for f in want]
    assert got[-1].stop_reason == want[-1].stop_reason
    _close(np.stack([f.latent for f in got]), np.stack([f.latent for f in want]))
    _close(np.concatenate([f.audio for f in got]), np.concatenate([f.audio for f in want]))
    _close(np.array([f.eos_prob for f in got]), np.array([f.eos_prob for f in want]))


def test_the_voices_differ_in_length(setup) -> None:
    """The batch below mixes prompts of different lengths (so its caches need masks)."""
    _, voices, _, _ = setup
    assert (
        len({v.tts_length for v in voices.values()}) > 1
        or len({v.lm_length for v in voices.values()}) > 1
    )


def test_each_utterance_of_a_batch_is_what_it_is_alone(setup) -> None:
    model, _, _, kernels = setup
    items = _items(setup)
    batch = BatchGenerator(model, STEPS, kernels)
    got: dict[int, list] = {item.key: [] for item in items}
    sizes = []
    # Two start together; the third joins a running batch (mid text window); the second
    # leaves first (its frame limit), the first next.
    batch.add(items[0])
    batch.add(items[1])
    tick = 0
    while len(batch):
        if tick == 3:
            batch.add(items[2])
        sizes.append(len(batch))
        for key, frame in batch.step():
            got[key].append(frame)
        tick += 1
    assert max(sizes) == 3 and sizes[-1] == 1
    for item in items:
        _assert_same_frames(got[item.key], _alone(setup, item))
    assert len(batch.caches) == 0


def test_generate_batch_yields_each_utterances_frames_in_order(setup) -> None:
    model, _, _, kernels = setup
    items = _items(setup)
    got: dict[int, list] = {item.key: [] for item in items}
    for key, frame in generate_batch(model, items, steps=STEPS, kernels=kernels):
        got[key].append(frame)
    for item in items:
        assert [f.index for f in got[item.key]] == list(range(item.max_frames))
    _assert_same_frames(got[2], _alone(setup, items[2]))


def test_a_cancelled_utterance_leaves_and_the_others_are_unchanged(setup) -> None:
    model, _, _, kernels = setup
    items = _items(setup)
    cancel = threading.Event()
    items[0].cancel = cancel
    batch = BatchGenerator(model, STEPS, kernels)
    for item in items:
        batch.add(item)
    got: dict[int, list] = {item.key: [] for item in items}
    for tick in range(40):
        if tick == 5:
            cancel.set()
        for key, frame in batch.step():
            got[key].append(frame)
    assert len(batch) == 0
    # The frames before the cancel are the utterance's own; none is marked last.
    alone = _alone(setup, items[0])
    assert 0 < len(got[0]) <= 5 and not any(f.is_last for f in got[0])
    _close(np.stack([f.latent for f in got[0]]), np.stack([f.latent for f in alone[: len(got[0])]]))
    for k in (1, 2):
        _assert_same_frames(got[k], _alone(setup, items[k]))


def test_token_ids_outside_the_vocabulary_are_refused_before_joining(setup) -> None:
    model, voices, _, kernels = setup
    batch = BatchGenerator(model, STEPS, kernels)
    voice = next(iter(voices.values()))
    with pytest.raises(RequestError):
        batch.add(BatchItem("bad", voice, [1, model.config.decoder.vocab_size]))
    assert len(batch) == 0 and len(batch.caches) == 0


def test_batch_caches_keep_each_utterances_rows_and_shrink_when_it_leaves(setup) -> None:
    model, voices, _, kernels = setup
    short, long_ = sorted(voices.values(), key=lambda v: v.tts_length)[:: len(voices) - 1]
    caches = kernels.batch.new_batch()
    dtype = mx.float32

    def pair(voice, reserve: int):
        return make_cfg_caches(
            voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, dtype, reserve
        )

    assert caches.add(pair(short, 8)) == 0
    assert caches.add(pair(long_, 600)) == 1
    big = caches.capacity
    assert big >= long_.tts_length + 600
    assert caches.columns == [max(short.tts_length, short.neg_length),
                              max(long_.tts_length, long_.neg_length)]  # fmt: skip
    # Row 2 (the second utterance's positive row) holds its prompt, unchanged.
    n = long_.tts_length
    np.testing.assert_array_equal(
        np.array(caches.keys[0][2:3, :, :n]), np.array(long_.tts_keys[0].astype(dtype))
    )
    caches.remove([1])
    assert len(caches) == 1 and caches.capacity < big
    assert caches.positions == [short.tts_length, short.neg_length]
    with pytest.raises(IndexError):
        caches.remove([1])


def test_batch_caches_refuse_caches_of_another_depth(setup) -> None:
    _, voices, _, _ = setup
    voice = next(iter(voices.values()))
    caches = BatchPairCaches.empty(len(voice.tts_keys) + 1, 2, 8, mx.float32)
    pair = make_cfg_caches(
        voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, mx.float32
    )
    with pytest.raises(ValueError):
        caches.add(pair)


def test_utterances_joining_together_are_appended_as_they_are(setup) -> None:
    """Utterances added between two uses of the batch's arrays (the start of a batch, or
    several joining at once) are appended together: each one's rows are its own caches,
    padded to the batch's capacity with masked columns, and a later join still lands
    after them."""
    _, voices, _, _ = setup
    names = sorted(voices)
    first = voices[names[0]]
    layers = len(first.tts_keys)
    kv_heads, head_dim = first.tts_keys[0].shape[1], first.tts_keys[0].shape[3]
    caches = BatchPairCaches.empty(layers, kv_heads, head_dim, mx.float32)
    pairs = []
    for i, reserve in enumerate((8, 300, 40)):
        v = voices[names[i % len(names)]]
        pair = make_cfg_caches(
            v.tts_keys, v.tts_values, v.neg_keys, v.neg_values, mx.float32, reserve
        )
        pairs.append(pair)
        assert caches.add(pair) == i
    assert len(caches) == 3
    # The batch's capacity is the largest of theirs; nothing is copied until it is asked.
    capacity = max(p[0].keys.shape[2] for p in pairs)
    assert caches.capacity >= capacity

    def check(i: int, pair) -> None:
        for layer, c in enumerate(pair):
            cap = c.keys.shape[2]
            got = np.array(caches.keys[layer][2 * i : 2 * i + 2])
            np.testing.assert_array_equal(got[:, :, :cap], np.array(c.keys))
            assert not got[:, :, cap:].any()
            gotv = np.array(caches.values[layer][2 * i : 2 * i + 2])
            np.testing.assert_array_equal(gotv[:, :, :cap], np.array(c.values))
        valid = np.array(caches.valid[2 * i : 2 * i + 2])
        np.testing.assert_array_equal(valid[:, : c.keys.shape[2]], np.array(pair[0].valid))
        assert not valid[:, pair[0].keys.shape[2] :].any()

    for i, pair in enumerate(pairs):
        check(i, pair)
    v = voices[names[-1]]
    late = make_cfg_caches(v.tts_keys, v.tts_values, v.neg_keys, v.neg_values, mx.float32, 16)
    assert caches.add(late) == 3
    check(3, late)
    assert caches.keys[0].shape[0] == 8


def test_tts_caches_grow_with_the_frames_not_with_the_frame_limit(setup) -> None:
    """Every frame attends over the whole capacity of its TTS-LM cache, so neither path
    makes room for a sentence's frame limit at its start: the capacity stays within one
    growth step (64 columns) of the columns in use, and the frames run past it."""
    model, voices, tokenizer, kernels = setup
    voice = next(iter(voices.values()))
    ids = tokenizer.encode("Hello there.")
    limit, frames, step = 400, 80, 64
    # Batched: the batch's capacity after each frame.
    batch = BatchGenerator(model, STEPS, kernels)
    batch.add(BatchItem("a", voice, ids, max_frames=limit, stop_at_eos=False))
    spare = []
    for _ in range(frames):
        batch.step()
        spare.append(batch.caches.capacity - max(batch.caches.columns))
    assert max(spare) <= step and batch.caches.capacity < voice.tts_length + limit
    assert batch.caches.capacity >= voice.tts_length + frames
    # One stream: the caches its frame backend was asked for, after the last frame.
    made = []
    new_caches = kernels.frames.new_caches

    def spy(*args):
        caches = new_caches(*args)
        made.append((caches, caches.pair[0].keys.shape[2]))
        return caches

    kernels.frames.new_caches = spy
    try:
        out = list(
            generate_frames(model, voice, ids, steps=STEPS, max_frames=limit, stop_at_eos=False,
                            kernels=kernels, noise=seeded_noise(3, model.config.acoustic_vae_dim))
        )  # fmt: skip
    finally:
        del kernels.frames.new_caches
    assert len(out) == limit
    caches, first_capacity = made[0]
    assert first_capacity <= voice.tts_length + len(ids) + 8 + step
    pair = caches.pair[0]
    assert pair.column >= voice.tts_length + limit
    assert pair.keys.shape[2] - pair.column <= step
