"""Voice prompts: precomputed KV caches of the two Qwen2 stacks, loaded from disk.

Two formats load (chosen by content, then by suffix):

* ``.safetensors`` in the mlx-audio / mlx-community schema: ``lm_hidden``,
  ``tts_lm_hidden``, ``neg_tts_lm_hidden`` (optional ``neg_lm_hidden``), each (1, L, hidden),
  and per layer ``{lm,tts_lm,neg_tts_lm}_{key,value}_{i}`` (optional ``neg_lm_*``) in HF
  layout (1, kv_heads, L, head_dim), usually bf16, keys already rotated by RoPE;
* the official ``.pt`` files (``torch.save`` zips), read by :mod:`engine.torch_pickle`
  without torch and without running code from the file.

The catalogue of the official preset voices (``voices/catalogue.toml``) is read here, with
the two rules about it: whether it fits a model (:func:`fitting_catalogue`) and which voice
speaks when none is asked for (:func:`default_voice`); fetching the presets is
:func:`engine.voice_fetch.fetch_voice`.

CLI: ``python -m engine.voices convert IN.pt OUT.safetensors`` and
``python -m engine.voices info FILE``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.errors import VoiceError
from engine.torch_pickle import TorchTensor, load_torch_zip

if TYPE_CHECKING:
    from engine.config import VibeVoiceConfig

# Stacks of a prompt file: schema prefix; the first three are required.
_REQUIRED = ("lm", "tts_lm", "neg_tts_lm")
_OPTIONAL = ("neg_lm",)
_ZIP_MAGIC = b"PK\x03\x04"
_HINT = "use an official VibeVoice .pt voice or a converted .safetensors"


@dataclass(frozen=True, eq=False)
class VoicePrompt:
    """The cached prompt of one voice (mx arrays; K/V in HF layout (1, kv, L, D))."""

    lm_keys: list[mx.array]
    lm_values: list[mx.array]
    tts_keys: list[mx.array]
    tts_values: list[mx.array]
    neg_keys: list[mx.array]
    neg_values: list[mx.array]
    lm_hidden: mx.array
    tts_hidden: mx.array
    neg_hidden: mx.array

    @property
    def lm_length(self) -> int:
        return int(self.lm_hidden.shape[1])

    @property
    def tts_length(self) -> int:
        return int(self.tts_hidden.shape[1])

    @property
    def neg_length(self) -> int:
        return int(self.neg_hidden.shape[1])

    @property
    def num_lm_layers(self) -> int:
        return len(self.lm_keys)

    @property
    def num_tts_layers(self) -> int:
        return len(self.tts_keys)

    @property
    def dtype(self) -> mx.Dtype:
        return self.lm_hidden.dtype

    def _streams(self) -> tuple[tuple[str, mx.array, list[mx.array], list[mx.array]], ...]:
        return (
            ("lm", self.lm_hidden, self.lm_keys, self.lm_values),
            ("tts_lm", self.tts_hidden, self.tts_keys, self.tts_values),
            ("neg_tts_lm", self.neg_hidden, self.neg_keys, self.neg_values),
        )

    def arrays(self) -> dict[str, mx.array]:
        """The prompt in the safetensors key schema (without the unused ``neg_lm``)."""
        out: dict[str, mx.array] = {}
        for prefix, hidden, keys, values in self._streams():
            out[f"{prefix}_hidden"] = hidden
            for i, (k, v) in enumerate(zip(keys, values, strict=True)):
                out[f"{prefix}_key_{i}"] = k
                out[f"{prefix}_value_{i}"] = v
        return out

    def astype(self, dtype: mx.Dtype) -> VoicePrompt:
        """A copy with every array cast to ``dtype``."""
        kwargs: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            is_list = isinstance(value, list)
            kwargs[f.name] = [a.astype(dtype) for a in value] if is_list else value.astype(dtype)
        return VoicePrompt(**kwargs)

    def validate(
        self,
        num_lm_layers: int,
        num_tts_layers: int,
        num_kv_heads: int,
        head_dim: int,
        hidden_size: int,
    ) -> None:
        """Raise VoiceError (one line: key, shape, expectation) if the prompt does not fit."""
        fix = "the voice was made for a different model"
        n_layers = (num_lm_layers, num_tts_layers, num_tts_layers)
        for (prefix, hidden, keys, values), n in zip(self._streams(), n_layers, strict=True):
            if len(keys) != n or len(values) != n:
                raise VoiceError(
                    f"voice prompt has {len(keys)} {prefix} key and {len(values)} value layers, "
                    f"the model has {n}; {fix}"
                )
            length = int(hidden.shape[1]) if hidden.ndim == 3 else -1
            wants = [(f"{prefix}_hidden", hidden, (1, max(length, 1), hidden_size))]
            for kind, arrays in (("key", keys), ("value", values)):
                want = (1, num_kv_heads, length, head_dim)
                wants += [(f"{prefix}_{kind}_{i}", a, want) for i, a in enumerate(arrays)]
            for key, array, want in wants:
                if tuple(array.shape) != want:
                    raise VoiceError(
                        f"voice prompt key {key} has shape {tuple(array.shape)}, "
                        f"expected {want}; {fix}"
                    )

    def check_positions(self, max_positions: int) -> None:
        """Raise VoiceError unless every prompt leaves room for a position in a model of
        ``max_positions`` (an utterance's text and speech continue after it)."""
        longest = max(self.lm_length, self.tts_length, self.neg_length)
        if longest >= max_positions:
            raise VoiceError(
                f"the voice prompt is {longest} positions long, the model takes at most "
                f"{max_positions}; the voice was made for a different model"
            )


def _num_layers(arrays: Mapping[str, Any], prefix: str, source: str) -> int:
    """Number of ``{prefix}_key_i``/``{prefix}_value_i`` pairs; gaps raise VoiceError."""
    pattern = re.compile(rf"^{prefix}_(key|value)_(\d+)$")
    found = [m for m in map(pattern.match, arrays) if m]
    n = max((int(m.group(2)) for m in found), default=-1) + 1
    for i in range(n):
        for kind in ("key", "value"):
            if f"{prefix}_{kind}_{i}" not in arrays:
                raise VoiceError(
                    f"{source}: missing key {prefix}_{kind}_{i} ({n} {prefix} layers); {_HINT}"
                )
    return n


def _check_schema(arrays: Mapping[str, Any], source: str) -> None:
    """Required keys present, layer indices contiguous, shapes consistent within the file.

    Keys outside the schema are ignored.
    """
    prefixes = _REQUIRED + tuple(p for p in _OPTIONAL if f"{p}_hidden" in arrays)
    for prefix in prefixes:
        if f"{prefix}_hidden" not in arrays:
            raise VoiceError(f"{source}: missing key {prefix}_hidden (not a voice prompt); {_HINT}")
        if _num_layers(arrays, prefix, source) == 0:
            raise VoiceError(f"{source}: missing key {prefix}_key_0 (not a voice prompt); {_HINT}")
    ref_k = tuple(arrays["lm_key_0"].shape)
    hidden_size = tuple(arrays["lm_hidden"].shape)[-1:] or (-1,)
    kv_dims = (ref_k[1], ref_k[3]) if len(ref_k) == 4 else (-1, -1)
    for prefix in prefixes:
        hidden = tuple(arrays[f"{prefix}_hidden"].shape)
        length = hidden[1] if len(hidden) == 3 else -1
        wants = {f"{prefix}_hidden": (1, length, hidden_size[0])}
        for i in range(_num_layers(arrays, prefix, source)):
            for kind in ("key", "value"):
                wants[f"{prefix}_{kind}_{i}"] = (1, kv_dims[0], length, kv_dims[1])
        for name, want in wants.items():
            shape = tuple(arrays[name].shape)
            if shape != want or -1 in want:
                raise VoiceError(
                    f"{source}: key {name} has shape {shape}, expected {want}; {_HINT}"
                )


def _to_mx(tensor: Any, where: str) -> mx.array:
    if not isinstance(tensor, TorchTensor):
        raise VoiceError(f"{where} is not a tensor")
    array = mx.array(tensor.data)
    return array.view(mx.bfloat16) if tensor.dtype == "bfloat16" else array


def _arrays_from_torch(obj: Any, path: Path) -> dict[str, mx.array]:
    if not isinstance(obj, dict):
        raise VoiceError(f"{path}: holds a {type(obj).__name__}, not a voice prompt; {_HINT}")
    out: dict[str, mx.array] = {}
    for prefix in _REQUIRED + _OPTIONAL:
        if prefix not in obj:
            if prefix in _REQUIRED:
                raise VoiceError(f"{path}: missing entry '{prefix}' (not a voice prompt); {_HINT}")
            continue
        entry = obj[prefix]
        try:
            out[f"{prefix}_hidden"] = _to_mx(entry["last_hidden_state"], f"{prefix} hidden")
            cache = entry["past_key_values"]
            keys, values = cache.key_cache, cache.value_cache
            if len(keys) != len(values):
                raise VoiceError(f"{prefix} has {len(keys)} key and {len(values)} value layers")
            for i, (k, v) in enumerate(zip(keys, values, strict=True)):
                out[f"{prefix}_key_{i}"] = _to_mx(k, f"{prefix} key {i}")
                out[f"{prefix}_value_{i}"] = _to_mx(v, f"{prefix} value {i}")
        except VoiceError as exc:
            raise VoiceError(f"{path}: {exc}; {_HINT}") from None
        except (KeyError, TypeError, AttributeError) as exc:
            raise VoiceError(
                f"{path}: entry '{prefix}' is not a model output with a DynamicCache "
                f"({type(exc).__name__}: {exc}); {_HINT}"
            ) from None
    return out


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    return len(head) >= 9 and int.from_bytes(head[:8], "little") < size and head[8:9] == b"{"


def load_voice_arrays(path: str | Path) -> dict[str, mx.array]:
    """Arrays of a voice file (.pt or .safetensors) in the safetensors key schema."""
    path = Path(path)
    if not path.is_file():
        raise VoiceError(f"voice file not found: {path}; {_HINT}")
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
        size = path.stat().st_size
    except OSError as exc:
        raise VoiceError(f"{path}: cannot read voice file ({exc.strerror})") from None
    if head.startswith(_ZIP_MAGIC) or (
        path.suffix == ".pt" and not _looks_like_safetensors(head, size)
    ):
        arrays = _arrays_from_torch(load_torch_zip(path), path)
    elif path.suffix == ".safetensors" or _looks_like_safetensors(head, size):
        try:
            loaded = mx.load(str(path), format="safetensors")
        except Exception as exc:
            msg = " ".join(str(exc).split())
            raise VoiceError(f"{path}: unreadable safetensors file ({msg}); {_HINT}") from None
        arrays = dict(loaded)  # type: ignore[arg-type]
    else:
        raise VoiceError(f"{path}: not a voice file (neither a torch zip nor safetensors); {_HINT}")
    _check_schema(arrays, str(path))
    return arrays


def voice_from_arrays(arrays: Mapping[str, mx.array]) -> VoicePrompt:
    """Build a VoicePrompt from arrays in the safetensors schema (``neg_lm_*`` is ignored)."""
    _check_schema(arrays, "voice arrays")

    def layers(prefix: str, kind: str) -> list[mx.array]:
        return [arrays[f"{prefix}_{kind}_{i}"] for i in range(_num_layers(arrays, prefix, ""))]

    return VoicePrompt(
        lm_keys=layers("lm", "key"),
        lm_values=layers("lm", "value"),
        tts_keys=layers("tts_lm", "key"),
        tts_values=layers("tts_lm", "value"),
        neg_keys=layers("neg_tts_lm", "key"),
        neg_values=layers("neg_tts_lm", "value"),
        lm_hidden=arrays["lm_hidden"],
        tts_hidden=arrays["tts_lm_hidden"],
        neg_hidden=arrays["neg_tts_lm_hidden"],
    )


def load_voice(path: str | Path) -> VoicePrompt:
    """Load a voice file and evaluate its arrays (so the prompt can cross threads)."""
    prompt = voice_from_arrays(load_voice_arrays(path))
    mx.eval(prompt.arrays())
    return prompt


def save_voice(voice: VoicePrompt | Mapping[str, mx.array], path: str | Path) -> None:
    """Write a prompt (or schema arrays) as safetensors, dtypes kept; atomic replace."""
    arrays = voice.arrays() if isinstance(voice, VoicePrompt) else dict(voice)
    _check_schema(arrays, "voice to save")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.safetensors")
    try:
        mx.save_safetensors(str(tmp), arrays)
        os.replace(tmp, path)
    except (OSError, RuntimeError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise VoiceError(f"{path}: cannot write voice file ({exc})") from None


# Where the catalogue is: inside the package in an installed copy (pyproject.toml maps the
# checkout's voices/ to engine/voice_catalogue/), then the checkout's voices/.
CATALOGUE_PATHS = (
    Path(__file__).resolve().parent / "voice_catalogue" / "catalogue.toml",
    Path(__file__).resolve().parent.parent / "voices" / "catalogue.toml",
)


@dataclass(frozen=True)
class PresetVoice:
    """One official preset voice of the catalogue."""

    id: str
    """File stem upstream, e.g. ``en-Carter_man``."""
    language: str
    """BCP 47 code (``en``, ``en-IN``, ``de``, ``ja``, ...)."""
    language_name: str
    gender: str
    """``man`` or ``woman``, as in the upstream file name."""
    experimental: bool
    """Upstream calls the non-English voices experimental."""
    path: str
    """Path of the .pt file in the upstream repository."""
    git_blob: str
    """The file's git blob id (SHA-1 of ``b"blob <size>\\0" + content``)."""


@dataclass(frozen=True)
class VoiceCatalogue:
    """The preset voices, their upstream source and the model shape they fit."""

    voices: tuple[PresetVoice, ...]
    default: str
    repository: str
    commit: str
    url_template: str
    model_shape: tuple[tuple[str, int], ...]
    """hidden_size, lm_layers, tts_layers, kv_heads, head_dim of the model they fit."""

    def get(self, name: str) -> PresetVoice | None:
        return next((v for v in self.voices if v.id == name), None)

    def url(self, voice: PresetVoice) -> str:
        return self.url_template.format(
            repository=self.repository, commit=self.commit, path=voice.path
        )

    def fits(
        self, hidden_size: int, lm_layers: int, tts_layers: int, kv_heads: int, head_dim: int
    ) -> bool:
        """Whether the preset voices can drive a model of this shape."""
        have = dict(
            hidden_size=hidden_size,
            lm_layers=lm_layers,
            tts_layers=tts_layers,
            kv_heads=kv_heads,
            head_dim=head_dim,
        )
        return all(have.get(k) == v for k, v in self.model_shape)


def load_catalogue(path: str | Path | None = None) -> VoiceCatalogue:
    """Read ``voices/catalogue.toml`` (or ``path``).

    Raises:
        VoiceError: the file is missing or malformed.
    """
    candidates = [Path(path)] if path is not None else list(CATALOGUE_PATHS)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        looked = ", ".join(str(p) for p in candidates)
        raise VoiceError(f"voice catalogue not found (looked for {looked})")
    try:
        data = tomllib.loads(found.read_text(encoding="utf-8"))
        src = data["source"]
        voices = tuple(
            PresetVoice(**{f.name: v[f.name] for f in fields(PresetVoice)}) for v in data["voice"]
        )
        catalogue = VoiceCatalogue(
            voices=voices,
            default=str(data["default"]),
            repository=str(src["repository"]),
            commit=str(src["commit"]),
            url_template=str(src["url"]),
            model_shape=tuple((str(k), int(v)) for k, v in data.get("model", {}).items()),
        )
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise VoiceError(f"{found}: unreadable voice catalogue ({e})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise VoiceError(f"{found}: malformed voice catalogue (missing or bad {e})") from None
    if catalogue.get(catalogue.default) is None:
        raise VoiceError(f"{found}: the default voice {catalogue.default!r} is not listed")
    return catalogue


def fitting_catalogue(cfg: VibeVoiceConfig) -> VoiceCatalogue | None:
    """The preset catalogue if its voices fit a model of config ``cfg``; None for other
    shapes (the tiny test model gets no presets).

    Raises:
        VoiceError: the catalogue is missing or malformed.
    """
    catalogue = load_catalogue()
    dec = cfg.decoder
    shape = (dec.hidden_size, cfg.lm_layers, cfg.tts_layers, dec.kv_heads, dec.dim_per_head)
    return catalogue if catalogue.fits(*shape) else None


def default_voice(own: Iterable[str], catalogue: VoiceCatalogue | None) -> str:
    """The voice that speaks when none is asked for: the model's own first voice (by
    name), else the default of the preset catalogue that fits it, else "" (none)."""
    return min(own, default="") or (catalogue.default if catalogue is not None else "")


def _describe(arrays: Mapping[str, mx.array]) -> str:
    prompt = voice_from_arrays(arrays)
    _, kv, _, head_dim = prompt.lm_keys[0].shape
    return (
        f"lm {prompt.lm_length} positions x {prompt.num_lm_layers} layers, "
        f"tts_lm {prompt.tts_length} x {prompt.num_tts_layers}, neg {prompt.neg_length}, "
        f"kv_heads {kv}, head_dim {head_dim}, hidden {prompt.lm_hidden.shape[-1]}, "
        f"{str(prompt.dtype).removeprefix('mlx.core.')}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m engine.voices``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m engine.voices", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="convert an official .pt voice to safetensors")
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path)
    info = sub.add_parser("info", help="print lengths, layers and dtype of a voice file")
    info.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "convert":
            arrays = load_voice_arrays(args.src)
            save_voice(arrays, args.dst)
            print(f"converted {args.src} -> {args.dst}: {_describe(arrays)}")
        else:
            print(f"{args.file}: {_describe(load_voice_arrays(args.file))}")
    except Exception as exc:  # VoiceError or a bug: one line either way, never a traceback
        kind = "" if isinstance(exc, VoiceError) else f"{type(exc).__name__}: "
        print(f"error: {kind}{' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
