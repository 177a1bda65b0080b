"""A complete tiny random VibeVoice-Realtime model folder, for tests, demos and benches.

``python -m engine.tiny OUT_DIR`` writes config.json, model.safetensors (official key
names and layouts, bf16, like the real checkpoint), tokenizer.json (a byte-level BPE
trained here, offline) and voices/*.safetensors made by running the tiny model itself.
The LM and the diffusion head are tiny; the acoustic decoder keeps the real upsampling
ratios, so one frame is 3200 samples at 24 kHz and an utterance lasts as long as a real
one. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

TINY_CONFIG: dict = {
    "model_type": "vibevoice_streaming",
    "architectures": ["VibeVoiceStreamingForConditionalGenerationInference"],
    "acoustic_vae_dim": 32,
    "tts_backbone_num_hidden_layers": 2,
    "torch_dtype": "bfloat16",
    "decoder_config": {
        "model_type": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 0,
        "max_position_embeddings": 8192,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    },
    "acoustic_tokenizer_config": {
        "model_type": "vibevoice_acoustic_tokenizer",
        "channels": 1,
        "causal": True,
        "vae_dim": 32,
        "conv_bias": True,
        "layernorm": "RMSNorm",
        "layernorm_eps": 1e-05,
        "mixer_layer": "depthwise_conv",
        "disable_last_norm": True,
        "pad_mode": "constant",
        "encoder_n_filters": 4,
        "encoder_ratios": [8, 5, 5, 4, 2, 2],
        "encoder_depths": "1-1-1-1-1-1-2",
        "decoder_n_filters": 4,
        "decoder_ratios": [8, 5, 5, 4, 2, 2],
        "decoder_depths": None,
    },
    "diffusion_head_config": {
        "model_type": "vibevoice_diffusion_head",
        "hidden_size": 64,
        "latent_size": 32,
        "speech_vae_dim": 32,
        "head_layers": 2,
        "head_ffn_ratio": 3.0,
        "rms_norm_eps": 1e-05,
        "prediction_type": "v_prediction",
        "diffusion_type": "ddpm",
        "ddpm_num_steps": 1000,
        "ddpm_num_inference_steps": 20,
        "ddpm_beta_schedule": "cosine",
    },
}

# Names of the official presets, so that the tiny folder offers the same voice names.
TINY_VOICES = ("en-Carter_man", "en-Davis_man", "en-Emma_woman", "en-Grace_woman")

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
]

_CORPUS = """\
It was a bright cold day in April, and the clocks were striking thirteen. The quick brown
fox jumps over the lazy dog. Call me Ishmael. Some years ago, never mind how long
precisely, having little or no money in my purse, I thought I would sail about a little
and see the watery part of the world. In a hole in the ground there lived a hobbit. It is
a truth universally acknowledged, that a single man in possession of a good fortune must
be in want of a wife. Chapter one. The reader opens the book and listens; every sentence
is spoken aloud, one after another, without gaps. Numbers like 1, 2, 3, 42 and 2026, and
punctuation: commas, semicolons; colons: dashes - and "quotes" or 'single quotes'! Why?
Because the voice should read anything: headings, lists, tables, and notes. Mr. Smith met
Dr. Jones at 10 a.m. on Monday, the 3rd of May. She said, "Hello, world." He whispered,
"Goodbye." The end.
"""


def train_tokenizer(vocab_size: int = 512):
    """A byte-level BPE like Qwen2's (same pre-tokenisation idea), trained on a small
    built-in corpus; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return tok


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _init(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Non-degenerate random values by role (the official init zeroes some layers)."""
    rng = _rng(seed, name)
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("speech_scaling_factor"):
        return np.array(0.23339844, dtype=np.float32)
    if name.endswith("speech_bias_factor"):
        return np.array(-0.0703125, dtype=np.float32)
    if leaf in ("gamma", "ffn_gamma"):
        return (rng.uniform(0.1, 0.3, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    if "embed_tokens" in name or "tts_input_types" in name:
        return rng.standard_normal(shape, dtype=np.float32)
    if leaf == "bias":
        return 0.02 * rng.standard_normal(shape, dtype=np.float32)
    if len(shape) == 1:  # norm weights
        return 1 + 0.05 * rng.standard_normal(shape, dtype=np.float32)
    if ".convtr." in name:  # (in, out, k), stride k / 2
        fan_in = shape[0] * 2
    elif len(shape) == 3:  # (out, in / groups, k)
        fan_in = shape[1] * shape[2]
    else:
        fan_in = shape[1]
    w = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(fan_in)
    if name.endswith("decoder.head.conv.conv.weight"):
        w *= 0.02  # keep the tiny model's random audio at a listenable level
    return w


def build_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """Official-layout random float32 tensors for ``config`` (bf16 is applied on write)."""
    from engine.config import VibeVoiceConfig
    from engine.model import VibeVoiceRealtime
    from engine.weights import official_state

    cfg = VibeVoiceConfig.from_dict(config)
    shapes = {k: tuple(v.shape) for k, v in official_state(VibeVoiceRealtime(cfg)).items()}
    d = config["decoder_config"]
    shapes["model.tts_language_model.embed_tokens.weight"] = (d["vocab_size"], d["hidden_size"])
    shapes["model.speech_scaling_factor"] = ()
    shapes["model.speech_bias_factor"] = ()
    return {name: _init(name, shapes[name], seed) for name in sorted(shapes)}


# Residual channels of the tiny LM reserved for the length control below.
_TEXT, _FRACTION, _ANCHOR = 0, 1, 2
_RESERVED = [_TEXT, _FRACTION, _ANCHOR]
# Text positions carry _TEXT = S; every TTS input carries _ANCHOR = K, so that RMSNorm
# divides by nearly the same number everywhere and the fraction survives normalisation.
_S = _K = 64.0
# EOS fires once the context holds fewer than this share of text positions, i.e. about
# 1/share - 1 = 1.6 frames per token once the text is read. While text is being read the
# share stays near 5/11 (5 tokens per 6 frames), safely above it.
_STOP_FRACTION = 1 / 2.6


def craft_length_control(w: dict[str, np.ndarray], cfg) -> None:
    """Make the random tiny model stop like a real one.

    A random EOS head fires at random. Here three residual channels are reserved: the
    TTS input marks text positions (_TEXT) and carries a constant (_ANCHOR); query head 0
    of TTS layer 0 is zeroed, so it attends uniformly and its value reads _TEXT: its output,
    written to _FRACTION, is the share of text positions in the context. It drops once the
    text is read and frames pile up; the EOS head fires when it falls below _STOP_FRACTION
    (its scale is calibrated by :func:`calibrate_eos`). Nothing else writes those channels.
    """
    hd = cfg.decoder.dim_per_head
    w["model.language_model.embed_tokens.weight"][:, _RESERVED] = 0
    for stack, n in (("language_model", cfg.lm_layers), ("tts_language_model", cfg.tts_layers)):
        for i in range(n):
            p = f"model.{stack}.layers.{i}"
            w[f"{p}.self_attn.o_proj.weight"][_RESERVED, :] = 0
            w[f"{p}.mlp.down_proj.weight"][_RESERVED, :] = 0
    types = w["model.tts_input_types.weight"]
    types[:, _RESERVED] = 0
    types[1, _TEXT] = _S
    types[:, _ANCHOR] = _K
    w["model.acoustic_connector.fc2.weight"][_RESERVED, :] = 0
    w["model.acoustic_connector.fc2.bias"][_RESERVED] = 0
    p = "model.tts_language_model.layers.0"
    w[f"{p}.self_attn.q_proj.weight"][:hd, :] = 0  # head 0: uniform attention
    w[f"{p}.self_attn.q_proj.bias"][:hd] = 0
    w[f"{p}.self_attn.v_proj.weight"][0, :] = 0  # kv head 0, value 0 reads _TEXT
    w[f"{p}.self_attn.v_proj.weight"][0, _TEXT] = 1
    w[f"{p}.self_attn.v_proj.bias"][0] = 0
    w[f"{p}.self_attn.o_proj.weight"][_FRACTION, 0] = 1
    w[f"{p}.input_layernorm.weight"][_RESERVED] = 1
    w["model.tts_language_model.norm.weight"][_RESERVED] = 1


def calibrate_eos(w: dict[str, np.ndarray], cfg, scale: float) -> None:
    """EOS logit = sharpness * (threshold - normed _FRACTION), with ``scale`` the normed
    _FRACTION value per unit of text share (measured by :func:`_fraction_scale`)."""
    fc1_w = w["tts_eos_classifier.fc1.weight"]
    fc1_b = w["tts_eos_classifier.fc1.bias"]
    fc2_w = w["tts_eos_classifier.fc2.weight"]
    fc1_w[:] = 0
    fc1_b[:] = 0
    fc2_w[:] = 0
    threshold = _STOP_FRACTION * scale
    sharpness = 40.0 / scale
    # relu(a) - relu(-a) = a, with a = threshold - x.
    fc1_w[0, _FRACTION], fc1_b[0] = -1.0, threshold
    fc1_w[1, _FRACTION], fc1_b[1] = 1.0, -threshold
    fc2_w[0, 0], fc2_w[0, 1] = sharpness, -sharpness
    w["tts_eos_classifier.fc2.bias"][:] = 0


def _fraction_scale(w: dict[str, np.ndarray], config: dict) -> float:
    """Normed _FRACTION at a speech position whose context is half text."""
    from engine.cache import KVCache
    from engine.config import VibeVoiceConfig
    from engine.model import VibeVoiceRealtime
    from engine.weights import load_state

    cfg = VibeVoiceConfig.from_dict(config)
    model = VibeVoiceRealtime(cfg)
    tensors = {k: mx.array(v).astype(mx.bfloat16) for k, v in w.items()}
    load_state(model, tensors, "tiny", mx.float32)
    m = model.model
    kv, hd = cfg.decoder.kv_heads, cfg.decoder.dim_per_head
    empty = mx.zeros((1, kv, 0, hd))
    caches = [KVCache(empty, empty) for _ in range(cfg.tts_layers)]
    lm_caches = [KVCache(empty, empty) for _ in range(cfg.lm_layers)]
    ids = mx.arange(10, 30)[None]
    h = m.language_model(m.language_model.embed_tokens(ids), lm_caches)
    m.tts_language_model(h + m.tts_input_types.weight[1], caches)
    rng = np.random.default_rng(1)
    lat = mx.array(rng.standard_normal((1, 20, cfg.acoustic_vae_dim), dtype=np.float32))
    out = m.tts_language_model(m.acoustic_connector(lat) + m.tts_input_types.weight[0], caches)
    values = np.array(out[0, :, _FRACTION])
    shares = 20 / np.arange(21, 41)
    return float(np.median(values / shares))


def make_voice(model, ids: list[int], pad_id: int, seed: int, speech_frames: int = 6) -> dict:
    """A voice prompt in the mlx-community schema, built by running ``model`` over
    ``ids`` (text positions) then ``speech_frames`` random latents (speech positions);
    the negative prompt is one ``<|image_pad|>`` position."""
    from engine.cache import KVCache

    cfg = model.config
    m = model.model
    kv, hd = cfg.decoder.kv_heads, cfg.decoder.dim_per_head

    def caches(n: int) -> list[KVCache]:
        empty = mx.zeros((1, kv, 0, hd))
        return [KVCache(empty, empty) for _ in range(n)]

    def run(tokens: list[int], frames: int) -> tuple[list, mx.array, list, mx.array]:
        lm_c, tts_c = caches(cfg.lm_layers), caches(cfg.tts_layers)
        h_lm = m.language_model(m.language_model.embed_tokens(mx.array([tokens])), lm_c)
        h_tts = m.tts_language_model(h_lm + m.tts_input_types.weight[1], tts_c)
        hs = [h_tts]
        rng = np.random.default_rng([seed, 7])
        for _ in range(frames):
            lat = mx.array(rng.standard_normal((1, 1, cfg.acoustic_vae_dim), dtype=np.float32))
            e = m.acoustic_connector(lat) + m.tts_input_types.weight[0]
            hs.append(m.tts_language_model(e, tts_c))
        return lm_c, h_lm, tts_c, mx.concatenate(hs, axis=1)

    lm_c, h_lm, tts_c, h_tts = run(ids, speech_frames)
    nlm_c, h_nlm, ntts_c, h_ntts = run([pad_id], 0)
    arrays = {
        "lm_hidden": h_lm,
        "tts_lm_hidden": h_tts,
        "neg_lm_hidden": h_nlm,
        "neg_tts_lm_hidden": h_ntts,
    }
    for prefix, cs in (("lm", lm_c), ("tts_lm", tts_c), ("neg_lm", nlm_c), ("neg_tts_lm", ntts_c)):
        for i, c in enumerate(cs):
            arrays[f"{prefix}_key_{i}"] = c.keys[:, :, : c.offset]
            arrays[f"{prefix}_value_{i}"] = c.values[:, :, : c.offset]
    return {k: v.astype(mx.bfloat16) for k, v in arrays.items()}


def write_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny model folder; returns its path."""
    from engine.config import VibeVoiceConfig
    from engine.weights import load_model

    out = Path(out_dir)
    (out / "voices").mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    config = json.loads(json.dumps(TINY_CONFIG))
    config["decoder_config"]["vocab_size"] = tok.get_vocab_size(with_added_tokens=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    cfg = VibeVoiceConfig.from_dict(config)
    weights = build_weights(config, seed)
    craft_length_control(weights, cfg)
    calibrate_eos(weights, cfg, _fraction_scale(weights, config))
    tensors = {k: mx.array(v).astype(mx.bfloat16) for k, v in weights.items()}
    mx.save_safetensors(str(out / "model.safetensors"), tensors, metadata={"format": "pt"})

    model = load_model(out)
    pad = tok.token_to_id("<|image_pad|>")
    for i, name in enumerate(TINY_VOICES):
        ids = tok.encode(f"Voice of {name.split('-')[1].split('_')[0]}.").ids
        # About as many frames as prompt tokens, so the prompt's text share stays above the
        # stop share of the length control while the first text window is read.
        arrays = make_voice(model, ids, pad, seed * 100 + i, speech_frames=len(ids) + i % 2)
        mx.save_safetensors(str(out / "voices" / f"{name}.safetensors"), arrays)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.tiny", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir", help="folder to write (created if missing)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        out = write_tiny_model(a.out_dir, a.seed)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote a tiny VibeVoice-Realtime model to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
