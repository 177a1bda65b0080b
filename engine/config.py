"""Model configuration: frozen dataclasses read from a Hugging Face ``config.json``.

Field names are the keys of the official ``config.json`` of
``microsoft/VibeVoice-Realtime-0.5B``; shape fields have no default so that a config
without them fails at once, optional knobs default to the official class defaults
(``vibevoice/modular/configuration_vibevoice*.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

# Upstream constants (vibevoice/modular/modeling_vibevoice_streaming_inference.py).
TTS_TEXT_WINDOW_SIZE = 5
TTS_SPEECH_WINDOW_SIZE = 6


def _pick(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class Qwen2Config:
    """``decoder_config``: the Qwen2 backbone shared by the text LM and the TTS LM."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 8192
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class AcousticDecoderConfig:
    """``acoustic_tokenizer_config``: the sigma-VAE decoder (the encoder is not used)."""

    vae_dim: int
    decoder_n_filters: int = 32
    decoder_ratios: tuple[int, ...] | None = None
    encoder_ratios: tuple[int, ...] = (8, 5, 5, 4, 2, 2)
    decoder_depths: tuple[int, ...] | str | None = None
    encoder_depths: tuple[int, ...] | str = "3-3-3-3-3-3-8"
    channels: int = 1
    conv_bias: bool = True
    layernorm_eps: float = 1e-5
    causal: bool = True
    mixer_layer: str = "depthwise_conv"
    disable_last_norm: bool = True

    @property
    def ratios(self) -> tuple[int, ...]:
        return tuple(self.decoder_ratios or self.encoder_ratios)

    @property
    def depths(self) -> tuple[int, ...]:
        """Blocks per decoder stage; upstream reverses the encoder depths when unset."""
        d = self.decoder_depths
        if d is None:
            return tuple(reversed(_parse_depths(self.encoder_depths)))
        return _parse_depths(d)

    @property
    def hop_length(self) -> int:
        """Audio samples per latent frame (3200 for the real model)."""
        return math.prod(self.ratios)

    def stage_channels(self, i: int) -> int:
        return self.decoder_n_filters * 2 ** (len(self.depths) - 1 - i)


def _parse_depths(d: tuple[int, ...] | list[int] | str) -> tuple[int, ...]:
    if isinstance(d, str):
        return tuple(int(x) for x in d.split("-"))
    return tuple(int(x) for x in d)


@dataclass(frozen=True)
class DiffusionHeadConfig:
    """``diffusion_head_config``: the v-prediction diffusion head and its noise schedule."""

    hidden_size: int
    latent_size: int
    head_layers: int = 4
    head_ffn_ratio: float = 3.0
    rms_norm_eps: float = 1e-5
    prediction_type: str = "v_prediction"
    ddpm_num_steps: int = 1000
    ddpm_num_inference_steps: int = 20
    ddpm_beta_schedule: str = "cosine"

    @property
    def ffn_dim(self) -> int:
        return int(self.hidden_size * self.head_ffn_ratio)


@dataclass(frozen=True)
class QuantizationConfig:
    """The ``quantization`` block that mlx-lm and mlx-audio converters write into config.json.

    ``{"group_size": 64, "bits": 4, "mode": "affine"}`` applies to every quantized layer;
    an entry keyed by a layer path (in the converter's naming, e.g.
    ``"language_model.layers.0.mlp.down_proj"``) overrides it for that layer with its own
    ``{"group_size", "bits"}`` or with ``false`` (left unquantized). Which layers are
    quantized is decided by the weight file (a layer has ``.scales``), not by this block.
    """

    group_size: int = 64
    bits: int = 4
    mode: str = "affine"
    per_layer: tuple[tuple[str, QuantizationConfig | None], ...] = ()
    """Overrides by converter layer path; None marks a layer left in full precision."""

    def for_layer(self, path: str) -> QuantizationConfig | None:
        """The parameters of the layer at converter path ``path`` (None: not quantized)."""
        for name, params in self.per_layer:
            if name == path:
                return params
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizationConfig:
        if "quant_method" in data:
            raise ConfigError(
                f"config.json: quantization method {data['quant_method']!r} is not supported; "
                "use an MLX conversion (mlx-community, mlx_audio.convert) or the full-precision "
                "model with --quantize"
            )
        try:
            base = cls(
                group_size=int(data.get("group_size", 64)),
                bits=int(data.get("bits", 4)),
                mode=str(data.get("mode", "affine")),
            )
            overrides: list[tuple[str, QuantizationConfig | None]] = []
            for key, value in data.items():
                if isinstance(value, dict):
                    overrides.append((key, cls.from_dict({**_scalars(base), **value})))
                elif isinstance(value, bool):
                    overrides.append((key, base if value else None))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config.json: malformed quantization block ({e})") from None
        if base.bits not in (2, 3, 4, 5, 6, 8) or base.group_size not in (16, 32, 64, 128):
            raise ConfigError(
                f"config.json: quantization bits {base.bits} / group_size {base.group_size} "
                "are not supported by MLX (bits 2-8, group size 16 to 128)"
            )
        return cls(base.group_size, base.bits, base.mode, tuple(overrides))


def _scalars(q: QuantizationConfig) -> dict[str, Any]:
    return {"group_size": q.group_size, "bits": q.bits, "mode": q.mode}


@dataclass(frozen=True)
class VibeVoiceConfig:
    """The whole ``config.json`` of a VibeVoice-Realtime checkpoint."""

    decoder: Qwen2Config
    acoustic: AcousticDecoderConfig
    diffusion: DiffusionHeadConfig
    acoustic_vae_dim: int
    tts_backbone_num_hidden_layers: int
    model_type: str = "vibevoice_streaming"
    quantization: QuantizationConfig | None = None
    """Present in quantized MLX conversions (mlx-community ``-4bit``, ``-8bit``, ...)."""

    @property
    def lm_layers(self) -> int:
        """Layers of the lower text LM (the rest of ``num_hidden_layers``)."""
        return self.decoder.num_hidden_layers - self.tts_backbone_num_hidden_layers

    @property
    def tts_layers(self) -> int:
        return self.tts_backbone_num_hidden_layers

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VibeVoiceConfig:
        # mlx-audio 0.6.2's converter rewrites model_type to "vibevoice" even for the
        # realtime model; the realtime model is recognised by its split backbone.
        if "tts_backbone_num_hidden_layers" not in data and data.get("model_type") == "vibevoice":
            raise ConfigError(
                "config.json describes the long-form VibeVoice model, not VibeVoice-Realtime "
                "(no tts_backbone_num_hidden_layers); use microsoft/VibeVoice-Realtime-0.5B "
                "or one of its conversions"
            )
        quant = data.get("quantization", data.get("quantization_config"))
        quantization = QuantizationConfig.from_dict(quant) if isinstance(quant, dict) else None
        try:
            dec = dict(data["decoder_config"])
            ac = dict(data["acoustic_tokenizer_config"])
            dh = dict(data["diffusion_head_config"])
            for key in ("decoder_ratios", "encoder_ratios"):
                if ac.get(key) is not None:
                    ac[key] = tuple(ac[key])
            decoder = Qwen2Config(**_pick(Qwen2Config, dec))
            acoustic = AcousticDecoderConfig(**_pick(AcousticDecoderConfig, ac))
            diffusion = DiffusionHeadConfig(**_pick(DiffusionHeadConfig, dh))
            cfg = cls(
                decoder=decoder,
                acoustic=acoustic,
                diffusion=diffusion,
                acoustic_vae_dim=int(data.get("acoustic_vae_dim", acoustic.vae_dim)),
                tts_backbone_num_hidden_layers=int(data["tts_backbone_num_hidden_layers"]),
                model_type=data.get("model_type", "vibevoice_streaming"),
                quantization=quantization,
            )
        except KeyError as e:
            raise ConfigError(f"config.json lacks the key {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config.json has a missing or malformed value: {e}") from None
        if cfg.lm_layers < 1 or cfg.tts_layers < 1:
            raise ConfigError(
                "config.json: tts_backbone_num_hidden_layers must be smaller than "
                "decoder_config.num_hidden_layers"
            )
        if len(cfg.acoustic.ratios) != len(cfg.acoustic.depths) - 1:
            raise ConfigError("config.json: the decoder needs one ratio fewer than stages")
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> VibeVoiceConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no config.json; is this a VibeVoice model folder?"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: unreadable config.json ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: config.json is not a JSON object")
        return cls.from_dict(data)
