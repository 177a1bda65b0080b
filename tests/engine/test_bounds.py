"""Every index the engine gathers with is in range: an out-of-range token id, step count,
voice prompt, cache column or decoder state gives one clear error before anything reads
with it (MLX does not bounds-check a gather on the CPU; neither do C nor CUDA)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import mlx.core as mx
import numpy as np
import pytest

from engine import cuda_frame
from engine.api import SynthesisRequest
from engine.config import VibeVoiceConfig
from engine.cuda_frame import CudaFrames, StackedCaches, check_against_mlx, self_check_token_ids
from engine.dpm_solver import make_schedule
from engine.errors import RequestError, TokenizerError, VoiceError
from engine.generate import FrameKernels, generate_frames
from engine.mlx_frames import MLXFrames
from engine.native_decoder import load_library, shared_native_decoder
from engine.stream import MLXEngine
from engine.switches import Switches
from engine.tokenizer import TextTokenizer, checked_token_ids
from engine.voices import load_voice
from engine.weights import load_model
from tests.conftest import PARITY, REPO, parity_model_dir
from tests.engine.cuda_emulator import factory

STEPS = 2


@pytest.fixture(scope="module")
def tiny(tiny_model):
    model = load_model(tiny_model)
    voice = load_voice(tiny_model / "voices" / "en-Carter_man.safetensors")
    return model, voice


class Spy:
    """Stands in for a method; records that it was called."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def _spied_kernels(model) -> tuple[FrameKernels, list[Spy]]:
    """Kernels whose every reading entry point (window, frame, sample, feed, decoder) is
    spied on."""
    kernels = FrameKernels(model, STEPS, Switches(cuda_kernels=False))
    spies = []
    for part, name in [(kernels.frames, n) for n in ("window", "frame", "sample", "feed")] + [
        (kernels.decoder, "decode")
    ]:
        spy = Spy(getattr(part, name))
        setattr(part, name, spy)
        spies.append(spy)
    return kernels, spies


# ---------------------------------------------------------------------- token ids
@pytest.mark.parametrize("bad", [None, -1, 2**40, 1.5, "7"])
def test_token_ids_out_of_the_vocabulary_stop_before_any_gather(tiny, bad) -> None:
    model, voice = tiny
    vocab = model.config.decoder.vocab_size
    bad = vocab if bad is None else bad
    kernels, spies = _spied_kernels(model)
    frames = generate_frames(model, voice, [5, 6, bad, 7], steps=STEPS, max_frames=3,
                             kernels=kernels)  # fmt: skip
    with pytest.raises(RequestError) as err:
        next(frames)
    assert "token id" in str(err.value)
    if isinstance(bad, int):
        assert f"the model has {vocab} tokens" in str(err.value)
    assert [s.calls for s in spies] == [0] * len(spies)


def test_ids_at_the_edges_of_the_vocabulary_are_taken(tiny) -> None:
    model, voice = tiny
    vocab = model.config.decoder.vocab_size
    assert checked_token_ids((0, np.int64(vocab - 1)), vocab) == [0, vocab - 1]
    kernels, spies = _spied_kernels(model)
    frames = list(generate_frames(model, voice, [0, vocab - 1], steps=STEPS, max_frames=2,
                                  kernels=kernels))  # fmt: skip
    assert len(frames) == 2 and spies[0].calls == 1  # one text window


@pytest.fixture(scope="module")
def engine(tiny_model):
    e = MLXEngine(tiny_model)
    e.wait_ready(60)
    yield e
    e.close()


def test_a_request_with_foreign_token_ids_gets_a_plain_error(engine, tiny_model) -> None:
    vocab = VibeVoiceConfig.from_file(tiny_model / "config.json").decoder.vocab_size
    handle = engine.synthesize(SynthesisRequest(token_ids=(3, vocab + 2500, 4)))
    with pytest.raises(RequestError, match=f"token id {vocab + 2500} is out of range"):
        list(handle)
    # The engine goes on serving.
    assert len(list(engine.synthesize(SynthesisRequest(token_ids=(3, 4), max_frames=2)))) == 2


# ---------------------------------------------------------------------- diffusion steps
def test_steps_beyond_the_schedule_are_refused(engine, tiny_model) -> None:
    cfg = VibeVoiceConfig.from_file(tiny_model / "config.json")
    train = cfg.diffusion.ddpm_num_steps
    for steps in (0, train):
        with pytest.raises(RequestError, match=f"between 1 and {train - 1}, not {steps}"):
            list(engine.synthesize(SynthesisRequest(text="Hi.", steps=steps, max_frames=1)))
    with pytest.raises(ValueError, match="1 to 9 steps"):
        make_schedule(10, 10)
    # The most steps: every step's timestep a distinct row of the training schedule.
    timesteps = make_schedule(9, 10).timesteps
    assert timesteps == list(range(9, 0, -1))


# ---------------------------------------------------------------------- voice prompts
def _with_positions(tiny_model, folder, positions: int):
    """The tiny model, copied into ``folder`` with ``positions`` positions."""
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["decoder_config"]["max_position_embeddings"] = positions
    (folder / "config.json").write_text(json.dumps(config))
    return load_model(folder)


def test_a_voice_prompt_longer_than_the_positions_is_refused(tiny_model, tmp_path) -> None:
    voice = load_voice(tiny_model / "voices" / "en-Carter_man.safetensors")
    longest = max(voice.lm_length, voice.tts_length, voice.neg_length)
    model = _with_positions(tiny_model, tmp_path / "model", longest)
    kernels, spies = _spied_kernels(model)
    with pytest.raises(VoiceError, match=f"{longest} positions long, the model takes at most"):
        next(generate_frames(model, voice, [5, 6], steps=STEPS, kernels=kernels))
    assert [s.calls for s in spies] == [0] * len(spies)
    e = MLXEngine(tmp_path / "model")
    try:
        e.wait_ready(60)
        with pytest.raises(VoiceError, match="positions long"):
            list(e.synthesize(SynthesisRequest(text="Hi.", voice="en-Carter_man")))
    finally:
        e.close()


def test_a_long_utterance_stops_at_the_last_position(tiny, tiny_model, tmp_path) -> None:
    """Text past the model's positions is not read: the stream ends with "context"."""
    _, voice = tiny
    room = 12  # positions after the longer prompt
    limit = max(voice.tts_length, voice.lm_length) + room
    model = _with_positions(tiny_model, tmp_path / "model", limit)
    kernels, spies = _spied_kernels(model)
    frames = list(generate_frames(model, voice, list(range(10, 40)), steps=STEPS,
                                  max_frames=200, stop_at_eos=False, kernels=kernels))  # fmt: skip
    assert frames[-1].stop_reason == "context"
    assert frames[-1].tokens_consumed < 30 and spies[0].calls <= room // 5


# ---------------------------------------------------------------------- tokenizer vs model
def _foreign_tokenizer(tiny_model, folder, extra: int = 40) -> int:
    """Copy the tiny model into ``folder`` with a tokenizer of ``extra`` more tokens than
    its vocabulary; returns the tokenizer's size."""
    from tokenizers import Tokenizer

    shutil.copytree(tiny_model, folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_tokens([f"<extra_{i}>" for i in range(extra)])
    tok.save(str(folder / "tokenizer.json"))
    return TextTokenizer(folder / "tokenizer.json").vocab_size


def test_a_tokenizer_of_another_model_fails_the_load(tiny_model, tmp_path) -> None:
    vocab = VibeVoiceConfig.from_file(tiny_model / "config.json").decoder.vocab_size
    assert TextTokenizer(tiny_model / "tokenizer.json").vocab_size == vocab
    n = _foreign_tokenizer(tiny_model, tmp_path / "model")
    assert n == vocab + 40
    e = MLXEngine(tmp_path / "model")
    try:
        said = f"this tokenizer has {n} tokens, the model {vocab}"
        with pytest.raises(TokenizerError, match=said):
            e.wait_ready(60)
    finally:
        e.close()


def test_the_cli_says_the_tokenizer_does_not_fit_in_one_line(tiny_model, tmp_path) -> None:
    folder = tmp_path / "model"
    n = _foreign_tokenizer(tiny_model, folder)
    vocab = VibeVoiceConfig.from_file(tiny_model / "config.json").decoder.vocab_size
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nOne sentence to read.\n")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "vvreader", str(doc), "--model", str(folder),
         "--export", str(tmp_path / "out.wav")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert f"this tokenizer has {n} tokens, the model {vocab}" in lines[0]
    assert lines[0].startswith("vvreader: ") and "Traceback" not in run.stderr
    assert not (tmp_path / "out.wav").exists()


# ---------------------------------------------------------------------- CUDA frame kernels
@pytest.fixture(scope="module")
def mid():
    model = load_model(parity_model_dir("mid-shapes"))
    voice = load_voice(PARITY / "mid-shapes" / "voice.safetensors")
    return model, voice


def _cuda_frames(model) -> tuple[CudaFrames, MLXFrames]:
    """CUDA frames with emulated kernels, and the MLX frames they are checked against."""
    mlx_frames = MLXFrames(model, STEPS)
    cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                      kernel_factory=factory(model.config))  # fmt: skip
    return cuda, mlx_frames


def test_the_self_check_embeds_only_rows_of_the_vocabulary(mid) -> None:
    """The self-check's text window is made of ids the model has (it embedded id 3000 in
    a model of 1,000 tokens: rows of memory past the table, different on each run)."""
    model, _ = mid
    vocab = model.config.decoder.vocab_size
    assert vocab == 1000
    cuda, mlx_frames = _cuda_frames(model)
    embedded: list[np.ndarray] = []

    def spy(window):
        def spied(tokens: mx.array, *rest):
            embedded.append(np.array(tokens))
            return window(tokens, *rest)

        return spied

    cuda.window, mlx_frames.window = spy(cuda.window), spy(mlx_frames.window)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert check_against_mlx(cuda, mlx_frames)
    assert len(embedded) == 2
    for ids in embedded:
        assert 0 <= ids.min() and ids.max() < vocab
        assert ids.tolist() == [self_check_token_ids(vocab)]
    assert self_check_token_ids(vocab) == self_check_token_ids(vocab)
    assert len(set(self_check_token_ids(vocab))) > 1


def test_a_window_the_kernel_cannot_hold_is_not_launched(mid) -> None:
    model, voice = mid
    cuda, _ = _cuda_frames(model)
    launch = cuda._launch = Spy(cuda._launch)
    caches = StackedCaches(voice, 8, 8)
    H = model.config.decoder.hidden_size
    for rows in (0, cuda_frame.LMAX + 1):
        with pytest.raises(ValueError, match="a text window is 1 to"):
            cuda.window_rows(mx.zeros((rows, H)), caches)
    with pytest.raises(ValueError):
        cuda.window_rows(mx.zeros((2, H + 8)), caches)
    with pytest.raises(IndexError, match="the kernel reads"):
        cuda.frame(mx.zeros((1, 8)), mx.zeros((1, H)), mx.zeros((1, H)), 1.5, caches)
    # A cache whose write column is past its capacity (the kernel would read past it).
    caches.column = caches.kv.shape[4] + 3
    caches.reserve = lambda lm, tts: None
    with pytest.raises(IndexError, match="cache columns"):
        cuda.frame(mx.zeros((1, model.config.acoustic_vae_dim)), mx.zeros((1, H)),
                     mx.zeros((1, H)), 1.5, caches)  # fmt: skip
    assert launch.calls == 0


# ---------------------------------------------------------------------- the C decoder
def test_the_c_decoder_refuses_a_state_it_did_not_make(tiny) -> None:
    if load_library() is None:
        pytest.fail("the C decoder library is not built (python3 setup.py build_ext --inplace)")
    model, _ = tiny
    native = shared_native_decoder(model.model.acoustic_tokenizer.decoder)
    plan = native._plan = Spy(native._plan)
    x = np.zeros((1, model.config.acoustic_vae_dim), np.float32)
    state = native.init_state()
    bad = [
        state.arrays[:-1],
        [a[:-1] if i == 2 else a for i, a in enumerate(state.arrays)],
        [a.astype(np.float64) if i == 0 else a for i, a in enumerate(state.arrays)],
        [np.zeros((a.shape[0], 2 * a.shape[1]), np.float32)[:, ::2] if i == 1 else a
         for i, a in enumerate(state.arrays)],
    ]  # fmt: skip
    for arrays in bad:
        with pytest.raises(ValueError, match="decoder state"):
            native(x, type(state)(arrays))
    assert plan.calls == 0
    audio, _ = native(x, state)
    assert plan.calls == 1 and audio.shape[0] == native.hop
