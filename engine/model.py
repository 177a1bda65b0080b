"""VibeVoice-Realtime assembled from its components, named like the official checkpoint.

Mirrors ``VibeVoiceStreamingForConditionalGenerationInference``
(``vibevoice/modular/modeling_vibevoice_streaming*.py``): everything lives under
``model.`` except ``tts_eos_classifier``. No loop and no I/O here.
"""

from __future__ import annotations

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn

from engine.acoustic import AcousticTokenizer
from engine.config import VibeVoiceConfig
from engine.diffusion import DiffusionHead
from engine.layers import RMSNorm
from engine.qwen2 import Qwen2Stack


class SpeechConnector(nn.Module):
    """``fc2(RMSNorm(fc1(latent)))``: a generated latent back into the TTS LM's input space."""

    def __init__(self, latent: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(latent, hidden)
        self.norm = RMSNorm(hidden, eps)
        self.fc2 = nn.Linear(hidden, hidden)

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.norm(self.fc1(x)))


class BinaryClassifier(nn.Module):
    """End-of-speech logit: ``fc2(relu(fc1(h)))``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def __call__(self, h: mx.array) -> mx.array:
        return self.fc2(nn.relu(self.fc1(h)))


class VibeVoiceStreamingModel(nn.Module):
    """The ``model.`` subtree of the checkpoint."""

    def __init__(self, cfg: VibeVoiceConfig) -> None:
        super().__init__()
        dec = cfg.decoder
        # The text LM owns the only embedding that is used; the TTS LM gets inputs_embeds.
        self.language_model = Qwen2Stack(dec, cfg.lm_layers, final_norm=False, embed=True)
        self.tts_language_model = Qwen2Stack(dec, cfg.tts_layers, final_norm=True, embed=False)
        # Index 1 marks text positions, 0 speech positions.
        self.tts_input_types = nn.Embedding(2, dec.hidden_size)
        self.acoustic_connector = SpeechConnector(
            cfg.acoustic_vae_dim, dec.hidden_size, dec.rms_norm_eps
        )
        self.prediction_head = DiffusionHead(cfg.diffusion)
        self.acoustic_tokenizer = AcousticTokenizer(cfg.acoustic)
        self.speech_scaling_factor = mx.array(1.0)
        self.speech_bias_factor = mx.array(0.0)


class VibeVoiceRealtime(nn.Module):
    """The whole checkpoint: ``model.*`` plus ``tts_eos_classifier.*``."""

    def __init__(self, cfg: VibeVoiceConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = VibeVoiceStreamingModel(cfg)
        self.tts_eos_classifier = BinaryClassifier(cfg.decoder.hidden_size)

    @property
    def hop_length(self) -> int:
        return self.config.acoustic.hop_length

    def fuse(self) -> None:
        """Stack the projections that read the same input into one matmul each (q/k/v and
        gate/up in both LM stacks, gate/up and the adaLN modulations in the diffusion
        head): fewer, larger products, the same numbers. The checkpoint's parameters stay
        in place as views of the stacked arrays. Idempotent; quantized layers are left
        as they are.

        Gate/up stay two products on the CPU: with two rows (the CFG pair) the stacked
        matrix (35 MB per layer) makes the TTS-LM step slower there, while on a GPU every
        product saved is a launch saved."""
        gpu = mx.default_device().type == mx.DeviceType.gpu
        m = self.model
        m.language_model.fuse(mlp=gpu)
        m.tts_language_model.fuse(mlp=gpu)
        m.prediction_head.fuse(ffn=gpu)

    def latent_to_decoder_input(self, latent: mx.array) -> mx.array:
        """The LM works in a normalised latent space; the decoder wants
        ``latent / speech_scaling_factor - speech_bias_factor``."""
        m = self.model
        return latent / m.speech_scaling_factor - m.speech_bias_factor
