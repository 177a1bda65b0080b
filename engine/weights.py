"""Checkpoint loading: the one mapping from checkpoint key names to module paths.

Two layouts load, told apart by their key names:

* ``official`` (``microsoft/VibeVoice-Realtime-0.5B/model.safetensors``): keys equal our
  module paths except for :data:`RENAMES`; conv weights are in PyTorch layout and change
  layout by the type of the module that receives them, never by guessing from shapes.
* ``mlx-audio`` (written by ``mlx_audio.convert``; the ``mlx-community/VibeVoice-Realtime-
  0.5B-*`` repositories): the same names without the ``model.`` prefix, with
  ``nn.Sequential``'s ``.layers.`` inserted (:data:`MLX_AUDIO_RENAMES`), conv weights
  already in MLX layout, and, in quantized conversions, linear layers and embeddings as
  ``uint32`` ``.weight`` + ``.scales`` + ``.biases`` (parameters in config.json's
  ``quantization`` block). Those layers become ``nn.QuantizedLinear`` /
  ``nn.QuantizedEmbedding``.

Every error names the weight file and the first bad key.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from engine.acoustic import CausalConv1d, CausalConvTranspose1d
from engine.config import QuantizationConfig, VibeVoiceConfig
from engine.errors import WeightsError
from engine.model import VibeVoiceRealtime

OFFICIAL = "official"
MLX_AUDIO = "mlx-audio"

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

# mlx-audio builds these two children with nn.Sequential, whose keys gain ".layers.".
MLX_AUDIO_RENAMES = (
    (".t_embedder.mlp.layers.", ".t_embedder.mlp."),
    (".adaLN_modulation.layers.", ".adaLN_modulation."),
)
# The one subtree the official checkpoint keeps outside ``model.``.
_TOP_LEVEL = "tts_eos_classifier."

# Modules whose weight table the loop reads directly (rows of tts_input_types): a quantized
# copy is expanded to a dense one on load.
DENSE_ONLY = ("model.tts_input_types",)
# Parameters a quantized layer adds to its (packed uint32) weight.
QUANT_LEAVES = ("scales", "biases")

# Stacks quantized by ``quantize=`` (the LM; the head and the decoder stay as loaded).
LM_STACKS = ("language_model", "tts_language_model")


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


def mlx_audio_to_official(key: str) -> str:
    """Official name of a key written by ``mlx_audio.convert``."""
    if not key.startswith(_TOP_LEVEL):
        key = f"model.{key}"
    for old, new in MLX_AUDIO_RENAMES:
        key = key.replace(old, new)
    return key


def official_to_mlx_audio(key: str) -> str:
    """Inverse of :func:`mlx_audio_to_official`."""
    for new, old in MLX_AUDIO_RENAMES:
        key = key.replace(old, new)
    return key.removeprefix("model.")


def checkpoint_layout(keys: Iterable[str], source: str) -> str:
    """:data:`OFFICIAL` or :data:`MLX_AUDIO`, from the key names."""
    keys = list(keys)
    official = [k for k in keys if k.startswith("model.")]
    if official and len(official) + sum(k.startswith(_TOP_LEVEL) for k in keys) == len(keys):
        return OFFICIAL
    if not official and any(k.startswith(("language_model.", "prediction_head.")) for k in keys):
        return MLX_AUDIO
    first = next((k for k in sorted(keys) if not k.startswith(("model.", _TOP_LEVEL))), None)
    raise WeightsError(
        f"{source}: unexpected key {first or (sorted(keys) or ['(none)'])[0]!r}; "
        "not a VibeVoice-Realtime checkpoint (official or mlx-audio layout)"
    )


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


def check_safetensors(path: Path) -> dict[str, object]:
    """Read and check the header of a safetensors file; returns its ``__metadata__``.

    Raises:
        WeightsError: the file is missing, empty, has a corrupt header, or is cut short
            (naming the first tensor, in file order, whose bytes are missing).
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: empty or truncated weight file; download it again")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise WeightsError(f"{path}: truncated weight file (header cut); download it again")
            raw = f.read(n)
    except FileNotFoundError:
        raise WeightsError(f"{path}: weight file not found") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read the weight file ({e.strerror})") from None
    try:
        header = json.loads(raw)
        entries = sorted(
            (int(v["data_offsets"][0]), int(v["data_offsets"][1]), k)
            for k, v in header.items()
            if k != "__metadata__"
        )
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError, IndexError):
        raise WeightsError(
            f"{path}: corrupt header; not a safetensors weight file, download it again"
        ) from None
    payload = size - 8 - n
    for _, end, key in entries:
        if end > payload:
            raise WeightsError(
                f"{path}: truncated at key {key!r} (its data ends at byte {end} of the payload, "
                f"the file holds {payload}); download it again"
            )
    meta = header.get("__metadata__")
    return dict(meta) if isinstance(meta, dict) else {}


def read_safetensors(path: Path) -> dict[str, mx.array]:
    """All tensors of a safetensors file, with a clear error for a broken file."""
    path = Path(path)
    check_safetensors(path)
    try:
        arrays = mx.load(str(path), format="safetensors")
    except Exception as e:  # mx.load raises plain RuntimeError/ValueError
        msg = " ".join(str(e).split())
        raise WeightsError(f"{path}: unreadable weight file ({msg}); download it again") from None
    if not isinstance(arrays, dict):
        raise WeightsError(f"{path}: not a safetensors weight file")
    return arrays


def _quantize_module(module: nn.Module, q: QuantizationConfig) -> nn.Module:
    """An empty quantized twin of ``module`` (filled by ``load_weights``)."""
    if isinstance(module, nn.Linear):
        out_dims, in_dims = module.weight.shape
        return nn.QuantizedLinear(
            in_dims, out_dims, "bias" in module, q.group_size, q.bits, mode=q.mode
        )
    num, dims = module.weight.shape
    return nn.QuantizedEmbedding(num, dims, q.group_size, q.bits, mode=q.mode)


def _prepare_quantized(
    model: VibeVoiceRealtime,
    quantized: dict[str, str],
    quantization: QuantizationConfig | None,
    origin: Mapping[str, str],
) -> set[str]:
    """Replace the modules that the file holds quantized; returns the DENSE_ONLY ones.

    ``quantized`` maps module path -> the file's key of its ``.scales``.
    """
    modules = dict(model.named_modules())
    replace, dense = [], set()
    for path in sorted(quantized):
        key = quantized[path]
        where = origin[key]
        if quantization is None:
            raise WeightsError(
                f"{where}: {key!r} is a quantized layer but config.json has no quantization "
                "block; use the config.json that came with these weights"
            )
        module = modules.get(path)
        if not isinstance(module, nn.Linear | nn.Embedding):
            raise WeightsError(
                f"{where}: unexpected key {key!r}; only linear layers and embeddings can be "
                "quantized"
            )
        params = quantization.for_layer(key.removesuffix(".scales"))
        if params is None:
            raise WeightsError(
                f"{where}: {key!r} is quantized but config.json's quantization block says "
                "this layer is not; use the config.json that came with these weights"
            )
        if path in DENSE_ONLY:
            dense.add(path)
        else:
            replace.append((path, _quantize_module(module, params)))
    if replace:
        model.update_modules(tree_unflatten(replace))
    return dense


def load_state(
    model: VibeVoiceRealtime,
    tensors: dict[str, mx.array],
    source: str,
    dtype: mx.Dtype,
    origin: Mapping[str, str | Path] | None = None,
) -> None:
    """Put ``tensors`` (official or mlx-audio layout) into ``model``.

    Strict: every parameter filled, every key used or explicitly dropped, every shape
    right. Floating-point tensors are cast to ``dtype``; packed quantized weights stay
    ``uint32``. ``origin`` maps keys to the file they came from (for messages; default
    ``source``).
    """
    where = {k: str(origin[k]) if origin and k in origin else source for k in tensors}
    layout = checkpoint_layout(tensors, source)
    to_official = mlx_audio_to_official if layout == MLX_AUDIO else (lambda k: k)
    to_file_name = official_to_mlx_audio if layout == MLX_AUDIO else (lambda k: k)

    paths: dict[str, str] = {}
    quantized: dict[str, str] = {}
    for key in sorted(tensors):
        path = official_to_module(to_official(key))
        if path is None:
            continue
        paths[key] = path
        owner, leaf = path.rsplit(".", 1)
        if leaf == "scales":
            quantized[owner] = key
    for key in paths:
        stem = key.removesuffix(".weight")
        if stem != key and tensors[key].dtype == mx.uint32 and f"{stem}.scales" not in tensors:
            raise WeightsError(
                f"{where[key]}: missing key {stem + '.scales'!r} of the quantized {key!r}; "
                "the file is incomplete"
            )
    dense = _prepare_quantized(model, quantized, model.config.quantization, where)

    types = _module_types(model)
    expected = dict(tree_flatten(model.parameters()))
    loaded: dict[str, mx.array] = {}
    for key, path in paths.items():
        owner, leaf = path.rsplit(".", 1)
        if owner in dense:
            if leaf in QUANT_LEAVES:
                continue
            w = _dequantize(tensors, key, model.config.quantization)
        elif path not in expected:
            raise WeightsError(
                f"{where[key]}: unexpected key {key!r}; is this a VibeVoice-Realtime model?"
            )
        else:
            w = tensors[key]
            if layout == OFFICIAL:
                w = _to_mlx_layout(path, w, types)
        want = tuple(expected[path].shape)
        if tuple(w.shape) != want:
            if layout == OFFICIAL:
                want = tuple(_from_mlx_layout(path, expected[path], types).shape)
            note = ""
            if owner in quantized and model.config.quantization is not None:
                q = model.config.quantization.for_layer(quantized[owner].removesuffix(".scales"))
                note = f" ({q.bits}-bit, group size {q.group_size}, per config.json)" if q else ""
            raise WeightsError(
                f"{where[key]}: {key!r} has shape {tuple(tensors[key].shape)}, the config "
                f"implies {want}{note}"
            )
        if mx.issubdtype(w.dtype, mx.floating):
            w = w.astype(dtype)
        elif w.dtype != expected[path].dtype:
            raise WeightsError(
                f"{where[key]}: {key!r} has dtype {w.dtype}, expected {expected[path].dtype}"
            )
        loaded[path] = w
    missing = [p for p in expected if p not in loaded]
    if missing:
        name = to_file_name(module_to_official(missing[0]))
        raise WeightsError(
            f"{source}: missing key {name!r} ({len(missing)} missing in all); the file is "
            "incomplete or belongs to another model"
        )
    model.load_weights(list(loaded.items()), strict=True)
    mx.eval(model.parameters())


def _dequantize(tensors: dict[str, mx.array], key: str, q: QuantizationConfig | None) -> mx.array:
    """The dense weight of a DENSE_ONLY layer stored quantized (key: its ``.weight``)."""
    assert q is not None
    stem = key.removesuffix(".weight")
    params = q.for_layer(stem)
    assert params is not None
    biases = tensors.get(f"{stem}.biases")
    return mx.dequantize(
        tensors[key],
        tensors[f"{stem}.scales"],
        biases,
        group_size=params.group_size,
        bits=params.bits,
        mode=params.mode,
    )


def quantize_lm(model: VibeVoiceRealtime, bits: int, group_size: int = 64) -> int:
    """Quantize the linear layers and the embedding of both Qwen2 stacks in place
    (``--quantize``); layers already quantized, and layers whose input size is not a
    multiple of ``group_size``, stay as they are. Returns the number of layers quantized.
    """
    if bits not in (4, 8):
        raise WeightsError(f"quantize: {bits} bits is not supported (use 8 or 4)")
    count = 0

    def wanted(_: str, module: nn.Module) -> bool:
        nonlocal count
        ok = (
            isinstance(module, nn.Linear | nn.Embedding)
            and module.weight.shape[-1] % group_size == 0
        )
        count += ok
        return ok

    for name in LM_STACKS:
        nn.quantize(getattr(model.model, name), group_size, bits, class_predicate=wanted)
    mx.eval(model.parameters())
    return count


def find_weight_files(folder: Path) -> list[Path]:
    """The model's weight files: the shards named by ``model.safetensors.index.json`` if
    there is one, else ``model*.safetensors``."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(
                set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise WeightsError(f"{index}: unreadable index ({e}); download it again") from None
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise WeightsError(
                f"{folder / missing[0]}: weight file not found (listed in "
                "model.safetensors.index.json); the download is incomplete"
            )
        return [folder / n for n in names]
    return sorted(folder.glob("model*.safetensors"))


def load_model(
    folder: str | Path,
    dtype: mx.Dtype = mx.float32,
    weight_files: Iterable[Path] | None = None,
    quantize: int | None = None,
) -> VibeVoiceRealtime:
    """Build the model from ``folder/config.json`` and its weight files.

    Args:
        folder: a model folder (official or mlx-audio layout).
        dtype: the dtype of every floating-point parameter.
        weight_files: use these files instead of the folder's.
        quantize: 8 or 4: quantize the LM stacks after loading (see :func:`quantize_lm`).

    Raises:
        ConfigError: config.json is missing or malformed.
        WeightsError: a weight file is missing, truncated, or has missing, unexpected or
            mis-shaped keys (the message names the file and the first bad key).
    """
    folder = Path(folder)
    cfg = VibeVoiceConfig.from_file(folder / "config.json")
    files = sorted(weight_files) if weight_files is not None else find_weight_files(folder)
    if not files:
        raise WeightsError(f"{folder}: no model*.safetensors weight file")
    tensors: dict[str, mx.array] = {}
    origin: dict[str, Path] = {}
    for f in files:
        part = read_safetensors(f)
        tensors.update(part)
        origin.update(dict.fromkeys(part, f))
    model = VibeVoiceRealtime(cfg)
    load_state(model, tensors, str(files[0] if len(files) == 1 else folder), dtype, origin)
    if quantize:
        quantize_lm(model, quantize)
    return model


def official_state(model: VibeVoiceRealtime) -> dict[str, mx.array]:
    """The model's parameters under official names and layouts (for writing checkpoints)."""
    types = _module_types(model)
    return {
        module_to_official(p): _from_mlx_layout(p, w, types)
        for p, w in tree_flatten(model.parameters())
    }
