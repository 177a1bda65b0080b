"""The tiny model folder: complete, loaded like the real one, real audio format, fast."""

from __future__ import annotations

import json
import time

import numpy as np

from engine.config import VibeVoiceConfig
from engine.generate import generate_frames, seeded_noise
from engine.tokenizer import TextTokenizer, normalize_text
from engine.voices import load_voice
from engine.weights import load_model


def test_folder_has_everything_the_real_model_has(tiny_model) -> None:
    assert (tiny_model / "config.json").is_file()
    assert (tiny_model / "tokenizer.json").is_file()
    assert sorted(p.name for p in (tiny_model / "voices").iterdir()) == [
        "en-Carter_man.safetensors",
        "en-Davis_man.safetensors",
        "en-Emma_woman.safetensors",
        "en-Grace_woman.safetensors",
    ]
    header = (tiny_model / "model.safetensors").read_bytes()
    n = int.from_bytes(header[:8], "little")
    meta = json.loads(header[8 : 8 + n])
    keys = {k for k in meta if k != "__metadata__"}
    # Official key names, bf16 everywhere, 0-d scaling factors, the unused TTS embedding.
    assert "model.tts_language_model.embed_tokens.weight" in keys
    assert "model.acoustic_tokenizer.decoder.upsample_layers.1.0.convtr.convtr.weight" in keys
    assert "model.acoustic_tokenizer.decoder.stages.0.0.mixer.conv.conv.conv.weight" in keys
    assert {meta[k]["dtype"] for k in keys} == {"BF16"}
    assert meta["model.speech_scaling_factor"]["shape"] == []


def test_real_audio_format(tiny_model) -> None:
    cfg = VibeVoiceConfig.from_file(tiny_model / "config.json")
    assert cfg.acoustic.hop_length == 3200
    assert cfg.acoustic.ratios == (8, 5, 5, 4, 2, 2)


def test_tokenizer_round_trip_and_official_normalisation(tiny_model) -> None:
    tok = TextTokenizer(tiny_model / "tokenizer.json")
    ids = tok.encode("  \u201cHello,\u201d she said \u2019twice\u2019.  ")
    assert tok.decode(ids) == "\"Hello,\" she said 'twice'.\n"
    assert normalize_text("  x ") == "x\n"
    assert (
        max(ids)
        < tok.vocab_size
        == VibeVoiceConfig.from_file(tiny_model / "config.json").decoder.vocab_size
    )
    assert tok.token_id("<|image_pad|>") is not None


def test_voices_come_from_the_model_itself(tiny_model) -> None:
    cfg = VibeVoiceConfig.from_file(tiny_model / "config.json")
    voice = load_voice(tiny_model / "voices" / "en-Emma_woman.safetensors")
    voice.validate(
        cfg.lm_layers,
        cfg.tts_layers,
        cfg.decoder.kv_heads,
        cfg.decoder.dim_per_head,
        cfg.decoder.hidden_size,
    )
    assert voice.neg_length == 1 and voice.tts_length > voice.lm_length


def test_faster_than_real_time(tiny_model) -> None:
    model = load_model(tiny_model)
    voice = load_voice(tiny_model / "voices" / "en-Carter_man.safetensors")
    ids = TextTokenizer(tiny_model / "tokenizer.json").encode("The quick brown fox jumps.")

    def run(n: int) -> list:
        return list(generate_frames(model, voice, ids, noise=seeded_noise(0, 32), max_frames=n))

    run(3)  # warm-up
    t0 = time.perf_counter()
    frames = run(30)
    elapsed = time.perf_counter() - t0
    audio_seconds = len(frames) * 3200 / 24000
    assert audio_seconds / elapsed > 1.0, f"{audio_seconds / elapsed:.2f}x real time"
    assert np.isfinite(np.concatenate([f.audio for f in frames])).all()


def test_utterances_end_by_eos_at_a_speech_like_length(tiny_model) -> None:
    """The tiny model's length control: EOS (not the runaway guard) ends every utterance,
    at 1.2-3.5 frames per token, for every voice, and long texts are read to the end."""
    model = load_model(tiny_model)
    tok = TextTokenizer(tiny_model / "tokenizer.json")
    texts = ["Hi.", "The quick brown fox jumps over the lazy dog.", "word " * 60]
    for voice_file in sorted((tiny_model / "voices").iterdir()):
        voice = load_voice(voice_file)
        for text in texts:
            ids = tok.encode(text)
            frames = list(generate_frames(model, voice, ids, noise=seeded_noise(3, 32)))
            assert frames[-1].stop_reason == "eos", (voice_file.stem, text)
            assert frames[-1].tokens_consumed == len(ids)
            assert 1.2 <= len(frames) / len(ids) <= 3.5, (voice_file.stem, text, len(frames))
