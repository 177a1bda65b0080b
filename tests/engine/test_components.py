"""Component checks: config defaults, solver tables, weight mapping, streaming decode."""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.acoustic import AcousticDecoder
from engine.config import VibeVoiceConfig
from engine.dpm_solver import make_schedule
from engine.errors import ConfigError, WeightsError
from engine.model import VibeVoiceRealtime
from engine.weights import load_model, official_state, official_to_module
from tests.conftest import PARITY, parity_model_dir

FULL_CONFIG = json.loads((PARITY / "full-davis" / "model" / "config.json").read_text())


def test_real_config_derived_values() -> None:
    cfg = VibeVoiceConfig.from_dict(FULL_CONFIG)
    assert (cfg.lm_layers, cfg.tts_layers) == (4, 20)
    assert cfg.acoustic.hop_length == 3200
    assert cfg.acoustic.depths == (8, 3, 3, 3, 3, 3, 3)  # reversed encoder depths
    assert [cfg.acoustic.stage_channels(i) for i in range(7)] == [2048, 1024, 512, 256, 128, 64, 32]
    assert cfg.decoder.kv_heads == 2 and cfg.decoder.dim_per_head == 64
    assert cfg.diffusion.ffn_dim == 2688


def test_missing_keys_take_official_defaults() -> None:
    data = json.loads(json.dumps(FULL_CONFIG))
    for key in ("rope_theta", "rms_norm_eps", "max_position_embeddings", "num_key_value_heads"):
        data["decoder_config"].pop(key)
    for key in ("head_layers", "head_ffn_ratio", "rms_norm_eps", "ddpm_num_steps"):
        data["diffusion_head_config"].pop(key)
    cfg = VibeVoiceConfig.from_dict(data)
    assert cfg.decoder.rope_theta == 1e6 and cfg.decoder.max_position_embeddings == 8192
    assert cfg.decoder.kv_heads == cfg.decoder.num_attention_heads
    assert cfg.diffusion.head_layers == 4 and cfg.diffusion.ddpm_num_steps == 1000


def test_config_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no config.json"):
        VibeVoiceConfig.from_file(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        VibeVoiceConfig.from_file(tmp_path / "config.json")
    bad = json.loads(json.dumps(FULL_CONFIG))
    del bad["decoder_config"]["hidden_size"]
    with pytest.raises(ConfigError, match="hidden_size"):
        VibeVoiceConfig.from_dict(bad)


@pytest.mark.parametrize(
    "steps,timesteps",
    [
        (1, [999]),
        (2, [999, 500]),
        (5, [999, 799, 599, 400, 200]),
        (10, [999, 899, 799, 699, 599, 500, 400, 300, 200, 100]),
    ],
)
def test_solver_timesteps(steps: int, timesteps: list[int]) -> None:
    sched = make_schedule(steps)
    assert sched.timesteps == timesteps
    # The last step goes to sigma 0 and returns the data prediction itself.
    last = sched.steps[-1]
    assert (last.ratio, last.c0, last.c1) == (0.0, 1.0, 0.0)
    # First step is first order (no history).
    assert sched.steps[0].c1 == 0.0


def test_solver_noise_levels_match_the_reference() -> None:
    # alpha_t and sigma_t of the 5-step schedule (architecture notes, section 5.4).
    sched = make_schedule(5)
    np.testing.assert_allclose(
        [s.alpha_s for s in sched.steps],
        [4.9e-5, 0.306669, 0.583789, 0.803734, 0.947504],
        rtol=1e-5,
        atol=1e-6,  # the notes give 4.9e-5 to two digits
    )
    np.testing.assert_allclose(
        [s.sigma_s for s in sched.steps], [1.0, 0.951816, 0.811905, 0.594989, 0.319745], rtol=1e-5
    )
    with pytest.raises(ValueError):
        make_schedule(0)


def test_weight_mapping_round_trips_every_official_key() -> None:
    keys = json.loads((PARITY / "full-davis" / "weights.json").read_text())["keys"]
    model = VibeVoiceRealtime(VibeVoiceConfig.from_dict(FULL_CONFIG))
    state = official_state(model)
    used = {k for k in keys if official_to_module(k) is not None}
    assert used == set(state)
    assert {k for k in keys if official_to_module(k) is None} == {
        "model.tts_language_model.embed_tokens.weight"
    }
    for k in used:
        assert list(state[k].shape) == keys[k], k


def _decoder(case: str) -> AcousticDecoder:
    return load_model(parity_model_dir(case)).model.acoustic_tokenizer.decoder


@pytest.mark.parametrize("case", ["tiny-run", "mid-shapes"])
def test_streaming_decode_equals_offline(case: str) -> None:
    dec = _decoder(case)
    rng = np.random.default_rng(0)
    T = 9
    x = mx.array(rng.standard_normal((1, T, dec.cfg.vae_dim), dtype=np.float32))
    offline, _ = dec(x, dec.init_state())
    state = dec.init_state()
    pieces, start = [], 0
    for n in (1, 1, 3, 1, 2, 1):
        y, state = dec(x[:, start : start + n], state)
        pieces.append(y)
        start += n
    streamed = mx.concatenate(pieces, axis=1)
    assert streamed.shape == offline.shape == (1, T * dec.cfg.hop_length, 1)
    a, b = np.array(streamed), np.array(offline)
    assert np.max(np.abs(a - b)) <= 1e-5 * np.max(np.abs(b))


def test_truncated_and_misshaped_weights_name_the_problem(tmp_path) -> None:
    src = PARITY / "tiny-run" / "model"
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    data = (src / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_model(tmp_path)
    tensors = mx.load(str(src / "model.safetensors"))
    del tensors["model.prediction_head.cond_proj.weight"]
    mx.save_safetensors(str(tmp_path / "model.safetensors"), tensors)
    with pytest.raises(WeightsError, match="missing key 'model.prediction_head.cond_proj.weight'"):
        load_model(tmp_path)
    tensors = mx.load(str(src / "model.safetensors"))
    tensors["model.acoustic_connector.fc1.weight"] = mx.zeros((3, 3), dtype=mx.bfloat16)
    mx.save_safetensors(str(tmp_path / "model.safetensors"), tensors)
    with pytest.raises(WeightsError, match=r"acoustic_connector.fc1.weight.*\(3, 3\)"):
        load_model(tmp_path)


def test_gelu_matches_exact_erf_gelu() -> None:
    import math

    from engine.acoustic import gelu_erf

    xs = np.linspace(-12, 12, 200_001, dtype=np.float32)
    exact = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in xs.astype(np.float64)])
    got = np.array(gelu_erf(mx.array(xs)), dtype=np.float64)
    reference = np.array(nn.gelu(mx.array(xs)), dtype=np.float64)  # MLX's own (mx.erf)
    # Float32 rounding of values up to 12: about 1e-6 absolute; no worse than nn.gelu
    # (both lose relative accuracy where 1 + erf cancels, for x < -3).
    assert np.max(np.abs(got - exact)) < 2e-6
    assert np.max(np.abs(got - exact)) <= 3 * np.max(np.abs(reference - exact))
    pos = xs > 0.5
    assert np.max(np.abs(got - exact)[pos] / np.abs(exact[pos])) < 1e-6


def test_paired_cfg_cache_equals_two_separate_caches() -> None:
    """The CFG pair as one batch gives what the two branches give one at a time."""
    from engine.cache import make_caches, make_cfg_caches
    from engine.voices import load_voice

    model = load_model(PARITY / "tiny-run" / "model")
    stack = model.model.tts_language_model
    voice = load_voice(PARITY / "tiny-run" / "voice.safetensors")
    f32 = mx.float32
    pos = make_caches(voice.tts_keys, voice.tts_values, f32)
    neg = make_caches(voice.neg_keys, voice.neg_values, f32)
    pair = make_cfg_caches(voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, f32)
    rng = np.random.default_rng(0)
    for step in range(4):
        if step == 1:  # a text window reaches the positive branch only
            text = mx.array(rng.standard_normal((1, 3, 64), dtype=np.float32))
            a = stack(text, pos)
            b = stack(text, [c.positive() for c in pair])
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)
        e = mx.array(rng.standard_normal((1, 1, 64), dtype=np.float32))
        p, n = stack(e, pos), stack(e, neg)
        both = stack(mx.concatenate([e, e]), pair)
        np.testing.assert_allclose(np.array(both[0]), np.array(p[0]), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.array(both[1]), np.array(n[0]), rtol=1e-5, atol=1e-5)
    assert pair[0].positions == [pos[0].offset, neg[0].offset]
