"""Voice prompt loading: official .pt (restricted unpickler), safetensors, CLI, refusals."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import VoiceError
from engine.torch_pickle import RestrictedUnpickler, load_torch_zip
from engine.voices import (
    load_voice,
    load_voice_arrays,
    save_voice,
    voice_from_arrays,
)
from tests.conftest import SHARED  # VVREADER_SHARED, else ../shared

REPO = Path(__file__).resolve().parents[2]
REFERENCE = SHARED / "reference-voices"
PARITY = SHARED / "parity"
PARITY_PT_CASES = ("tiny-run", "tiny-eos", "mid-shapes")

# From the architecture notes, section 6.1: name -> (L_lm, L_tts).
REFERENCE_LENGTHS = {
    "en-Davis_man": (60, 183),
    "en-Emma_woman": (74, 251),
    "en-Frank_man": (72, 253),
    "en-Grace_woman": (57, 209),
    "en-Mike_man": (49, 148),
    "in-Samuel_man": (85, 284),
    "it-Spk0_woman": (57, 190),
    "it-Spk1_man": (70, 211),
    "kr-Spk0_woman": (120, 303),
    "nl-Spk0_man": (119, 266),
    "pl-Spk0_man": (106, 274),
    "pt-Spk0_woman": (52, 168),
    "pt-Spk1_man": (102, 259),
}
REFERENCE_FILES = sorted(REFERENCE.glob("*.pt"))


def bits(a: mx.array) -> np.ndarray:
    """The exact bit patterns of an array (bf16 viewed as uint16)."""
    return np.array(a.view(mx.uint16) if a.dtype == mx.bfloat16 else a)


def assert_same(a: dict[str, mx.array], b: dict[str, mx.array]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert np.array_equal(bits(a[key]), bits(b[key])), key


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.voices", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_shared_fixtures_present() -> None:
    assert len(REFERENCE_FILES) >= 1
    assert all(p.stem in REFERENCE_LENGTHS for p in REFERENCE_FILES)
    assert (REFERENCE / "en-Davis_man.pt").is_file()


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=lambda p: p.stem)
def test_reference_voice_loads(path: Path) -> None:
    prompt = load_voice(path)
    L_lm, L_tts = REFERENCE_LENGTHS[path.stem]
    assert (prompt.lm_length, prompt.tts_length, prompt.neg_length) == (L_lm, L_tts, 1)
    assert (prompt.num_lm_layers, prompt.num_tts_layers) == (4, 20)
    assert prompt.lm_keys[0].shape == (1, 2, L_lm, 64)
    assert prompt.tts_values[19].shape == (1, 2, L_tts, 64)
    assert prompt.neg_keys[0].shape == (1, 2, 1, 64)
    assert prompt.lm_hidden.shape == (1, L_lm, 896)
    assert prompt.tts_hidden.shape == (1, L_tts, 896)
    assert prompt.neg_hidden.shape == (1, 1, 896)
    assert prompt.lm_hidden.dtype == mx.bfloat16
    prompt.validate(4, 20, 2, 64, 896)
    arrays = load_voice_arrays(path)
    assert len(arrays) == 2 * 4 * 2 + 2 * 20 * 2 + 4  # neg_lm kept by the converter


def test_negative_prompt_shared_by_all_reference_voices() -> None:
    loaded = [load_voice_arrays(p) for p in REFERENCE_FILES]
    neg = [k for k in loaded[0] if k.startswith("neg_")]
    for other in loaded[1:]:
        assert_same({k: loaded[0][k] for k in neg}, {k: other[k] for k in neg})


@pytest.mark.parametrize("case", PARITY_PT_CASES)
def test_parity_pt_equals_safetensors(case: str) -> None:
    from_pt = load_voice_arrays(PARITY / case / "voice.pt")
    from_st = load_voice_arrays(PARITY / case / "voice.safetensors")
    assert_same(from_pt, from_st)
    prompt = voice_from_arrays(from_pt)
    assert prompt.neg_length == 1
    # The synthetic caches are stored non-contiguously (stride (.., 16, 32, 1)): the
    # as_strided path must give the same values as the safetensors file.
    raw = load_torch_zip(PARITY / case / "voice.pt")
    assert raw["lm"]["past_key_values"].key_cache[0].dtype == "bfloat16"


def test_full_davis_equals_converted_official_file() -> None:
    converted = load_voice_arrays(REFERENCE / "en-Davis_man.pt")
    assert_same(converted, load_voice_arrays(PARITY / "full-davis" / "voice.safetensors"))


def test_cli_convert_and_reload(tmp_path: Path) -> None:
    src = REFERENCE / "en-Davis_man.pt"
    out = tmp_path / "davis.safetensors"
    result = run_cli("convert", src, out)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    assert "60" in result.stdout and "183" in result.stdout
    assert_same(load_voice_arrays(out), load_voice_arrays(src))
    prompt = load_voice(out)
    assert (prompt.lm_length, prompt.tts_length, prompt.neg_length) == (60, 183, 1)
    assert (prompt.num_lm_layers, prompt.num_tts_layers) == (4, 20)
    info = run_cli("info", out)
    assert info.returncode == 0 and "bfloat16" in info.stdout and "183" in info.stdout


def test_save_voice_roundtrip_and_astype(tmp_path: Path) -> None:
    prompt = load_voice(PARITY / "tiny-run" / "voice.safetensors")
    out = tmp_path / "tiny.safetensors"
    save_voice(prompt, out)
    again = load_voice(out)
    assert_same(again.arrays(), prompt.arrays())
    f32 = prompt.astype(mx.float32)
    assert f32.lm_keys[0].dtype == mx.float32 and f32.neg_hidden.dtype == mx.float32
    assert np.array_equal(np.array(f32.tts_hidden), np.array(prompt.tts_hidden.astype(mx.float32)))
    f32.validate(1, 2, 2, 16, 64)


# --- crafted, malicious archives ---------------------------------------------------------


class _SetStateBomb:
    """Unpickled through NEWOBJ + BUILD: __setstate__ would create the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, str]) -> None:
        Path(state["marker"]).touch()


class _Reduce:
    def __init__(self, func: object, args: tuple[object, ...]) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def write_pt(path: Path, payload: bytes, root: str = "evil", data: bool = True) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if data:
            zf.writestr(f"{root}/data.pkl", payload)
        zf.writestr(f"{root}/byteorder", "little")
        zf.writestr(f"{root}/version", "3\n")
    return path


def evil_payloads(marker: Path) -> dict[str, bytes]:
    m = str(marker)
    touch_code = f"open({m!r}, 'w').close()"
    legit = zipfile.ZipFile(PARITY / "tiny-run" / "voice.pt").read("voice/data.pkl")
    system = pickle.dumps(_Reduce(os.system, (f"touch {m}",)), protocol=2)
    return {
        "os.system": system,
        "builtins.eval": pickle.dumps(_Reduce(eval, (touch_code,)), protocol=2),
        "builtins.exec-p4": pickle.dumps(_Reduce(exec, (touch_code,)), protocol=4),
        "subprocess.Popen": pickle.dumps(_Reduce(subprocess.Popen, (["touch", m],)), protocol=2),
        "reduce-in-voice-dict": pickle.dumps(
            {"lm": {"past_key_values": [_Reduce(os.system, (f"touch {m}",))]}}, protocol=4
        ),
        "setstate-class": pickle.dumps(_SetStateBomb(m), protocol=2),
        # A valid voice pickle first, then (after POP) the os.system payload.
        "after-valid-prompt": legit[:-1] + b"0" + system[2:],
    }


@pytest.mark.parametrize(
    "variant",
    [
        "os.system",
        "builtins.eval",
        "builtins.exec-p4",
        "subprocess.Popen",
        "reduce-in-voice-dict",
        "setstate-class",
        "after-valid-prompt",
    ],
)
def test_malicious_pt_refused(tmp_path: Path, variant: str) -> None:
    marker = tmp_path / "pwned"
    payload = evil_payloads(marker)[variant]
    evil = write_pt(tmp_path / "evil.pt", payload)
    with pytest.raises(VoiceError, match="refused pickle global") as info:
        load_voice_arrays(evil)
    assert str(evil) in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    out = tmp_path / "out.safetensors"
    result = run_cli("convert", evil, out)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and "refused pickle global" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not marker.exists()
    assert not out.exists()


def test_refusal_names_the_global(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = evil_payloads(marker)
    for variant, name in (("os.system", "system"), ("subprocess.Popen", "subprocess.Popen")):
        evil = write_pt(tmp_path / f"{variant}.pt", payloads[variant])
        with pytest.raises(VoiceError, match=name):
            load_torch_zip(evil)
    assert not marker.exists()


def test_stack_global_with_untracked_operands_refused(tmp_path: Path) -> None:
    # 'posix' and 'system' are pushed, then hidden behind NONE/POP before STACK_GLOBAL.
    payload = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94N0h\x00h\x01N0\x93."
    with pytest.raises(VoiceError, match="STACK_GLOBAL"):
        load_torch_zip(write_pt(tmp_path / "hidden.pt", payload))


def test_runtime_find_class_refuses_without_prescan(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for payload in evil_payloads(marker).values():
        unpickler = RestrictedUnpickler(
            io.BytesIO(payload), lambda k, n: bytes(n), big_endian=False
        )
        with pytest.raises(VoiceError, match="refused pickle global"):
            unpickler.load()
    assert not marker.exists()


# --- hand-made tensors ---------------------------------------------------------------------


def _int(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


def _str(v: str) -> bytes:
    return b"X" + struct.pack("<I", len(v)) + v.encode()


def tensor_pickle(numel: int, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """A protocol-2 pickle of one float32 tensor on storage key '0', written opcode by opcode."""
    storage = b"(" + _str("storage") + b"ctorch\nFloatStorage\n" + _str("0") + _str("cpu")
    storage += _int(numel) + b"tQ"
    args = storage + _int(offset) + b"(" + b"".join(map(_int, size)) + b"t"
    args += b"(" + b"".join(map(_int, stride)) + b"t" + b"\x89ccollections\nOrderedDict\n)R"
    return b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(" + args + b"tR."


def write_tensor_pt(path: Path, payload: bytes, values: np.ndarray) -> Path:
    write_pt(path, payload)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("evil/data/0", values.astype("<f4").tobytes())
    return path


def test_strided_tensor_with_offset(tmp_path: Path) -> None:
    values = np.arange(10, dtype=np.float32)
    path = write_tensor_pt(tmp_path / "t.pt", tensor_pickle(10, 2, (2, 3), (1, 2)), values)
    tensor = load_torch_zip(path)
    assert tensor.dtype == "float32" and tensor.shape == (2, 3)
    np.testing.assert_array_equal(tensor.data, [[2, 4, 6], [3, 5, 7]])


def test_tensor_overrunning_storage_refused(tmp_path: Path) -> None:
    values = np.arange(4, dtype=np.float32)
    path = write_tensor_pt(tmp_path / "over.pt", tensor_pickle(4, 0, (2, 3), (3, 1)), values)
    with pytest.raises(VoiceError, match="over.pt.*overruns its storage"):
        load_torch_zip(path)
    short = write_tensor_pt(tmp_path / "short.pt", tensor_pickle(8, 0, (2,), (1,)), values)
    with pytest.raises(VoiceError, match="short.pt.*evil/data/0 has 16 bytes, need 32"):
        load_torch_zip(short)


# --- broken files -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VoiceError, match="not found.*nope.pt"):
        load_voice(tmp_path / "nope.pt")


def test_truncated_pt(tmp_path: Path) -> None:
    data = (REFERENCE / "en-Davis_man.pt").read_bytes()
    broken = tmp_path / "cut.pt"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(VoiceError, match="cut.pt.*truncated"):
        load_voice_arrays(broken)
    result = run_cli("convert", broken, tmp_path / "out.safetensors")
    assert result.returncode != 0 and result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_not_a_zip(tmp_path: Path) -> None:
    bad = tmp_path / "text.pt"
    bad.write_text("hello, I am not a voice\n")
    with pytest.raises(VoiceError, match="text.pt.*not a torch.save zip"):
        load_voice_arrays(bad)
    other = tmp_path / "voice.bin"
    other.write_bytes(b"\x00" * 64)
    with pytest.raises(VoiceError, match="voice.bin: not a voice file"):
        load_voice_arrays(other)


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    bad = write_pt(tmp_path / "empty.pt", b"", data=False)
    with pytest.raises(VoiceError, match="empty.pt.*no data.pkl"):
        load_voice_arrays(bad)


def test_missing_storage_entry(tmp_path: Path) -> None:
    src = zipfile.ZipFile(PARITY / "tiny-run" / "voice.pt")
    bad = tmp_path / "nostorage.pt"
    with zipfile.ZipFile(bad, "w") as zf:
        for name in src.namelist():
            if name != "voice/data/3":
                zf.writestr(name, src.read(name))
    with pytest.raises(VoiceError, match="nostorage.pt.*missing archive entry voice/data/3"):
        load_voice_arrays(bad)


def test_truncated_safetensors(tmp_path: Path) -> None:
    data = (PARITY / "tiny-run" / "voice.safetensors").read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:-100])
    with pytest.raises(VoiceError, match="cut.safetensors"):
        load_voice_arrays(bad)


def test_safetensors_missing_key(tmp_path: Path) -> None:
    arrays = load_voice_arrays(PARITY / "tiny-run" / "voice.safetensors")
    for key in ("tts_lm_value_1", "neg_tts_lm_hidden", "lm_key_0"):
        partial = {k: v for k, v in arrays.items() if k != key}
        path = tmp_path / f"no-{key}.safetensors"
        mx.save_safetensors(str(path), partial)
        with pytest.raises(VoiceError, match=f"no-{key}.safetensors: missing key {key}"):
            load_voice_arrays(path)
    with pytest.raises(VoiceError, match="missing key tts_lm_value_1"):
        voice_from_arrays({k: v for k, v in arrays.items() if k != "tts_lm_value_1"})


def test_inconsistent_shape_in_file(tmp_path: Path) -> None:
    arrays = load_voice_arrays(PARITY / "tiny-run" / "voice.safetensors")
    arrays["tts_lm_key_1"] = arrays["tts_lm_key_1"][:, :, :5]
    path = tmp_path / "odd.safetensors"
    mx.save_safetensors(str(path), arrays)
    with pytest.raises(VoiceError, match=r"odd.safetensors: key tts_lm_key_1 has shape \(1, 2, 5"):
        load_voice_arrays(path)


def test_validate_wrong_model() -> None:
    prompt = load_voice(PARITY / "tiny-run" / "voice.safetensors")
    prompt.validate(1, 2, 2, 16, 64)
    with pytest.raises(VoiceError, match=r"lm_key_0 has shape \(1, 2, 7, 16\), expected"):
        prompt.validate(1, 2, 2, 64, 64)
    with pytest.raises(
        VoiceError, match=r"lm_hidden has shape \(1, 7, 64\), expected \(1, 7, 896\)"
    ):
        prompt.validate(1, 2, 2, 16, 896)
    with pytest.raises(VoiceError, match="tts_lm key .*the model has 20"):
        prompt.validate(1, 20, 2, 16, 64)
    bad = replace(prompt, neg_values=[v[:, :1] for v in prompt.neg_values])
    with pytest.raises(VoiceError, match=r"neg_tts_lm_value_0 has shape \(1, 1, 1, 16\)"):
        bad.validate(1, 2, 2, 16, 64)
