"""Checkpoint loading: the one mapping from official key names to module paths.

Official keys (``microsoft/VibeVoice-Realtime-0.5B/model.safetensors``) equal our module
paths except for the rules below; conv weights change layout by the type of the module
that receives them, never by guessing from shapes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from engine.acoustic import CausalConv1d, CausalConvTranspose1d
from engine.config import VibeVoiceConfig
from engine.errors import WeightsError
from engine.model import VibeVoiceRealtime

# Keys of the official file that no module reads.
DROPPED_PREFIXES = (
    # Looked up, then overwritten by inputs_embeds upstream: dead weight (272 MB in bf16).
    "model.tts_language_model.embed_tokens.",
    # The realtime model never encodes audio; newer upstream code adds an encoder.
    "model.acoustic_tokenizer.encoder.",
)

# Upstream wraps each conv in two or three modules (SConv1d -> NormConv1d -> nn.Conv1d).
RENAMES = (
    (".mixer.conv.conv.conv.", ".mixer."),
    (".convtr.convtr.", "."),
    (".conv.conv.", "."),
)


def official_to_module(key: str) -> str | None:
    """Module path of an official checkpoint key, or None for a dropped key."""
    if key.startswith(DROPPED_PREFIXES):
        return None
    for old, new in RENAMES:
        if old in key:
            return key.replace(old, new)
    return key


def module_to_official(path: str) -> str:
    """Inverse of :func:`official_to_module` (used to write checkpoints)."""
    for old, new in (
        (".mixer.", ".mixer.conv.conv.conv."),
        ("upsample_layers.0.0.", "upsample_layers.0.0.conv.conv."),
        ("decoder.head.", "decoder.head.conv.conv."),
    ):
        if old in path and path.rsplit(".", 1)[-1] in ("weight", "bias"):
            return path.replace(old, new)
    if ".upsample_layers." in path and ".upsample_layers.0." not in path:
        head, leaf = path.rsplit(".", 1)
        return f"{head}.convtr.convtr.{leaf}"
    return path


def _module_types(model: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules()}


def _to_mlx_layout(path: str, w: mx.array, types: dict[str, type]) -> mx.array:
    owner, leaf = path.rsplit(".", 1)
    kind = types.get(owner)
    if leaf == "weight" and kind is CausalConv1d:
        return w.transpose(0, 2, 1)  # (out, in/g, k) -> (out, k, in/g)
    if leaf == "weight" and kind is CausalConvTranspose1d:
        return w.transpose(1, 2, 0)  # (in, out, k) -> (out, k, in)
    return w


def _from_mlx_layout(path: str, w: mx.array, types: dict[str, type]) -> mx.array:
    owner, leaf = path.rsplit(".", 1)
    kind = types.get(owner)
    if leaf == "weight" and kind is CausalConv1d:
        return w.transpose(0, 2, 1)
    if leaf == "weight" and kind is CausalConvTranspose1d:
        return w.transpose(2, 0, 1)  # (out, k, in) -> (in, out, k)
    return w


def read_safetensors(path: Path) -> dict[str, mx.array]:
    """All tensors of a safetensors file, with a clear error for a broken file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = path.stat().st_size
        if len(head) < 8:
            raise WeightsError(f"{path}: empty or truncated weight file; download it again")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise WeightsError(f"{path}: truncated weight file (header cut); download it again")
        arrays = mx.load(str(path))
    except WeightsError:
        raise
    except FileNotFoundError:
        raise WeightsError(f"{path}: weight file not found") from None
    except Exception as e:  # mx.load raises plain RuntimeError/ValueError
        raise WeightsError(f"{path}: unreadable weight file ({e}); download it again") from None
    if not isinstance(arrays, dict):
        raise WeightsError(f"{path}: not a safetensors weight file")
    return arrays


def load_state(
    model: VibeVoiceRealtime, tensors: dict[str, mx.array], source: str, dtype: mx.Dtype
) -> None:
    """Put official-layout ``tensors`` into ``model`` (strict: every parameter filled,
    every key used or explicitly dropped, every shape right)."""
    types = _module_types(model)
    expected = dict(tree_flatten(model.parameters()))
    loaded: dict[str, mx.array] = {}
    for key in sorted(tensors):
        path = official_to_module(key)
        if path is None:
            continue
        if path not in expected:
            raise WeightsError(
                f"{source}: unexpected key {key!r}; is this a VibeVoice-Realtime model?"
            )
        w = _to_mlx_layout(path, tensors[key], types)
        if tuple(w.shape) != tuple(expected[path].shape):
            raise WeightsError(
                f"{source}: {key!r} has shape {tuple(tensors[key].shape)}, the config "
                f"implies {tuple(_from_mlx_layout(path, expected[path], types).shape)}"
            )
        loaded[path] = w.astype(dtype)
    missing = [p for p in expected if p not in loaded]
    if missing:
        raise WeightsError(
            f"{source}: missing key {module_to_official(missing[0])!r} "
            f"({len(missing)} missing in all); the file is incomplete"
        )
    model.load_weights(list(loaded.items()), strict=True)
    mx.eval(model.parameters())


def load_model(
    folder: str | Path, dtype: mx.Dtype = mx.float32, weight_files: Iterable[Path] | None = None
) -> VibeVoiceRealtime:
    """Build the model from ``folder/config.json`` and its ``*.safetensors``."""
    folder = Path(folder)
    cfg = VibeVoiceConfig.from_file(folder / "config.json")
    files = (
        sorted(weight_files)
        if weight_files is not None
        else sorted(folder.glob("model*.safetensors"))
    )
    if not files:
        raise WeightsError(f"{folder}: no model*.safetensors weight file")
    tensors: dict[str, mx.array] = {}
    for f in files:
        tensors.update(read_safetensors(f))
    model = VibeVoiceRealtime(cfg)
    load_state(model, tensors, str(files[0] if len(files) == 1 else folder), dtype)
    return model


def official_state(model: VibeVoiceRealtime) -> dict[str, mx.array]:
    """The model's parameters under official names and layouts (for writing checkpoints)."""
    types = _module_types(model)
    return {
        module_to_official(p): _from_mlx_layout(p, w, types)
        for p, w in tree_flatten(model.parameters())
    }
