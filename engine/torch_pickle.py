"""Read ``torch.save`` zip archives without torch and without running code from the file.

Only what the official VibeVoice voice prompts need is supported. The archive is a zip
holding ``<root>/data.pkl`` (a pickle), ``<root>/byteorder`` and one raw storage per
``<root>/data/<key>``. The pickle is read by :class:`RestrictedUnpickler`, which resolves only
these globals (everything else is refused with :class:`~engine.errors.VoiceError`):

* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` -> builds a :class:`TorchTensor`;
* ``torch.<Type>Storage`` for BFloat16, Half, Float, Double, Long, Int, Short, Char, Byte, Bool;
* ``collections.OrderedDict``;
* ``transformers.modeling_outputs.BaseModelOutputWithPast`` -> :class:`ModelOutput`
  (an ``OrderedDict`` of the fields);
* ``transformers.cache_utils.DynamicCache`` -> :class:`DynamicCache` (plain attributes).

Before unpickling, every opcode is scanned: a refused ``GLOBAL``/``INST`` or an extension
opcode stops the load before a single opcode is executed. ``find_class`` enforces the same
list again at run time (e.g. for ``STACK_GLOBAL``). Tensors become :class:`TorchTensor`:
a C-contiguous numpy array plus the torch dtype name; bfloat16 (which numpy lacks) is kept
as its raw ``uint16`` bit patterns with ``dtype == "bfloat16"``.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import VoiceError

# torch storage class name -> (numpy dtype code, torch dtype name)
_STORAGES: dict[str, tuple[str, str]] = {
    "BFloat16Storage": ("u2", "bfloat16"),
    "HalfStorage": ("f2", "float16"),
    "FloatStorage": ("f4", "float32"),
    "DoubleStorage": ("f8", "float64"),
    "LongStorage": ("i8", "int64"),
    "IntStorage": ("i4", "int32"),
    "ShortStorage": ("i2", "int16"),
    "CharStorage": ("i1", "int8"),
    "ByteStorage": ("u1", "uint8"),
    "BoolStorage": ("?", "bool"),
}
_REBUILDERS = ("_rebuild_tensor_v2", "_rebuild_tensor")
_OUTPUT_FIELDS = ("last_hidden_state", "past_key_values", "hidden_states", "attentions")
_EXT_OPCODES = {"EXT1", "EXT2", "EXT4"}
_STRING_OPS = set("STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE".split())
_STRING_OPS.add("BINUNICODE8")
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_NEUTRAL_OPS = {"PROTO", "FRAME", "STOP"}
_MAX_PICKLE = 64 << 20
_UNKNOWN = object()  # stack value the scanner does not track


@dataclass(frozen=True)
class TorchTensor:
    """A tensor from the archive: ``data`` (C-contiguous) and the torch dtype name.

    For ``dtype == "bfloat16"`` ``data`` holds the raw bit patterns as ``uint16``.
    """

    data: np.ndarray
    dtype: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


class ModelOutput(OrderedDict):
    """Stand-in for ``BaseModelOutputWithPast``: an ordered dict of its fields."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


class DynamicCache:
    """Stand-in for ``transformers.cache_utils.DynamicCache``: BUILD fills ``__dict__``."""

    key_cache: list[Any]
    value_cache: list[Any]


@dataclass(frozen=True)
class _StorageType:
    np_code: str
    dtype: str


@dataclass(frozen=True)
class _Storage:
    array: np.ndarray  # 1-D, native byte order
    dtype: str


def _py3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names of protocol-2 pickles mapped as pickle's ``fix_imports`` does."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _allowed(module: str, name: str) -> bool:
    module, name = _py3_name(module, name)
    return (
        (module == "torch._utils" and name in _REBUILDERS)
        or (module == "torch" and name in _STORAGES)
        or (module == "collections" and name == "OrderedDict")
        or (module == "transformers.modeling_outputs" and name == "BaseModelOutputWithPast")
        or (module == "transformers.cache_utils" and name == "DynamicCache")
    )


def _refuse(module: str, name: str) -> VoiceError:
    module, name = _py3_name(module, name)
    return VoiceError(
        f"refused pickle global '{module}.{name}' (only torch tensors and transformers "
        "cache outputs are allowed); this is not a VibeVoice voice prompt, do not load it"
    )


def scan_pickle(data: bytes) -> None:
    """Check every opcode of ``data`` without executing any; raise VoiceError if refused.

    ``STACK_GLOBAL`` operands are followed through string pushes and the memo; a
    ``STACK_GLOBAL`` whose operands cannot be followed is refused.
    """
    recent: list[Any] = []  # values pushed by the latest opcodes (_UNKNOWN if untracked)
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in pickletools.genops(data):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if not _allowed(module, attr):
                    raise _refuse(module, attr)
            elif name == "STACK_GLOBAL":
                module, attr = recent[-2:] if len(recent) >= 2 else [_UNKNOWN, _UNKNOWN]
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise VoiceError("refused STACK_GLOBAL with computed operands")
                if not _allowed(module, attr):
                    raise _refuse(module, attr)
            elif name in _EXT_OPCODES:
                raise VoiceError(f"refused pickle opcode {name} (extension registry)")
            if name in _STRING_OPS:
                recent.append(arg if isinstance(arg, str) else _UNKNOWN)
            elif name in _GET_OPS:
                recent.append(memo.get(arg, _UNKNOWN))
            elif name in _PUT_OPS:
                memo[len(memo) if arg is None else arg] = recent[-1] if recent else _UNKNOWN
            elif name not in _NEUTRAL_OPS:
                recent.append(_UNKNOWN)
            del recent[:-2]
    except VoiceError:
        raise
    except Exception as exc:  # pickletools raises ValueError on malformed streams
        raise VoiceError(f"corrupt pickle ({exc})") from None


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise VoiceError(f"bad tensor {what} {value!r}")
    return tuple(value)


def _rebuild(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> TorchTensor:
    """``torch._utils._rebuild_tensor_v2`` on a numpy storage, with bounds checks."""
    if not isinstance(storage, _Storage):
        raise VoiceError("tensor rebuilt from something that is not a storage")
    (offset,) = _int_tuple((offset,), "storage offset")
    size = _int_tuple(size, "size")
    stride = _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise VoiceError(f"tensor size {size} and stride {stride} differ in rank")
    base = storage.array
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= base.size:
            raise VoiceError(
                f"tensor of size {size} at offset {offset} overruns its storage ({base.size})"
            )
        view = np.lib.stride_tricks.as_strided(
            base[offset:],
            shape=size,
            strides=tuple(s * base.itemsize for s in stride),
            writeable=False,
        )
        data = np.ascontiguousarray(view)
    else:
        data = np.zeros(size, dtype=base.dtype)
    return TorchTensor(data=data, dtype=storage.dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``data.pkl`` that resolves only the allowed globals.

    ``read_storage(key, nbytes)`` returns the bytes of ``<root>/data/<key>``.
    """

    def __init__(self, file: Any, read_storage: Callable[[str, int], bytes], big_endian: bool):
        super().__init__(file)
        self._read_storage = read_storage
        self._order = ">" if big_endian else "<"
        self._storages: dict[str, _Storage] = {}
        # Fresh objects per load, so a BUILD on a global cannot change later loads.
        self._cache_cls = type("DynamicCache", (DynamicCache,), {})

        def rebuild(*args: Any) -> TorchTensor:
            return _rebuild(*args)

        def model_output(*args: Any, **kwargs: Any) -> ModelOutput:
            return ModelOutput(zip(_OUTPUT_FIELDS, args, strict=False), **kwargs)

        self._rebuild_fn = rebuild
        self._output_fn = model_output

    def find_class(self, module: str, name: str) -> Any:
        if not _allowed(module, name):
            raise _refuse(module, name)
        module, name = _py3_name(module, name)
        if module == "torch._utils":
            return self._rebuild_fn
        if module == "torch":
            code, dtype = _STORAGES[name]
            return _StorageType(code, dtype)
        if module == "collections":
            return OrderedDict
        if module == "transformers.modeling_outputs":
            return self._output_fn
        return self._cache_cls

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise VoiceError(f"unsupported persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise VoiceError(f"persistent id names no storage type: {stype!r:.80}")
        if not isinstance(key, str) or "/" in key or not isinstance(numel, int) or numel < 0:
            raise VoiceError(f"bad storage reference {pid!r:.80}")
        if key not in self._storages:
            dtype = np.dtype(self._order + stype.np_code)
            raw = self._read_storage(key, numel * dtype.itemsize)
            if len(raw) < numel * dtype.itemsize:
                raise VoiceError(f"storage {key} is shorter than its {numel} elements")
            array = np.frombuffer(raw, dtype=dtype, count=numel)
            self._storages[key] = _Storage(array.astype(dtype.newbyteorder("=")), stype.dtype)
        storage = self._storages[key]
        if storage.dtype != stype.dtype or storage.array.size != numel:
            raise VoiceError(f"storage {key} is referenced with two different types/sizes")
        return storage


def _find_root(names: list[str]) -> str:
    pkls = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
    if not pkls:
        raise VoiceError("no data.pkl in the archive (not a torch.save file)")
    return pkls[0][: -len("data.pkl")]


def load_torch_zip(path: str | Path) -> Any:
    """Unpickle the ``torch.save`` zip at ``path`` safely; tensors become :class:`TorchTensor`.

    Every failure (refused global, missing entry, truncated or corrupt archive) raises
    :class:`VoiceError` with a one-line message that names the file.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            root = _find_root(zf.namelist())
            if zf.getinfo(root + "data.pkl").file_size > _MAX_PICKLE:
                raise VoiceError("data.pkl is implausibly large for a voice prompt")
            data = zf.read(root + "data.pkl")
            scan_pickle(data)
            try:
                order = zf.read(root + "byteorder").decode("ascii", "replace").strip()
            except KeyError:
                order = "little"
            if order not in ("little", "big"):
                raise VoiceError(f"unknown byteorder {order!r}")

            def read_storage(key: str, nbytes: int) -> bytes:
                name = f"{root}data/{key}"
                try:
                    info = zf.getinfo(name)
                except KeyError:
                    raise VoiceError(f"missing archive entry {name}") from None
                if info.file_size < nbytes:
                    raise VoiceError(f"entry {name} has {info.file_size} bytes, need {nbytes}")
                return zf.read(info)[:nbytes]

            unpickler = RestrictedUnpickler(io.BytesIO(data), read_storage, order == "big")
            return unpickler.load()
    except VoiceError as exc:
        raise VoiceError(f"{path}: {exc}") from None
    except FileNotFoundError:
        raise VoiceError(f"{path}: file not found") from None
    except zipfile.BadZipFile as exc:
        raise VoiceError(
            f"{path}: not a torch.save zip archive or truncated/corrupt ({exc}); "
            "download the voice file again"
        ) from None
    except Exception as exc:  # malformed pickle or zip data: one line, never a traceback
        msg = " ".join(str(exc).split())[:200]
        raise VoiceError(
            f"{path}: corrupt voice archive ({type(exc).__name__}: {msg}); "
            "download the voice file again"
        ) from None
