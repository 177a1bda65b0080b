"""mlx-audio conversions (the mlx-community layout): the tiny model converted by the real
``mlx_audio.convert`` (mlx-audio 0.6.2 from PyPI) loads, streams, and sounds like the
original within the precision of its weights; broken weight files get clear messages."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.api import SynthesisRequest
from engine.errors import WeightsError
from engine.generate import FrameKernels, generate_frames, seeded_noise
from engine.stream import MLXEngine
from engine.switches import Switches
from engine.voices import load_voice
from engine.weights import checkpoint_layout, load_model
from tests.conftest import CACHE, REPO

MLX_AUDIO = "mlx-audio==0.6.2"
PRECISIONS = {"fp": None, "8bit": 8, "4bit": 4}

# Runs mlx_audio.convert.convert() on a model folder. Two things keep it offline and
# small: mlx-audio's vibevoice module imports transformers (only for a tokenizer we never
# use here), and its model-type discovery imports every model family, one of which
# downloads a codec from the Hub at import time; we name the family instead.
DRIVER = """
import sys, types
sys.modules.setdefault("transformers", types.ModuleType("transformers"))
sys.modules["transformers"].AutoTokenizer = None
import mlx_audio.convert as c
empty = {"model_type_aliases": {}, "config_keys": {}, "architectures": {}, "path_patterns": {}}
for d in c.Domain:
    c._detection_hints_cache[d.value] = {k: dict(v) for k, v in empty.items()}
c._detection_hints_cache["tts"]["model_type_aliases"]["vibevoice"] = {"vibevoice_streaming"}
src, dst, bits = sys.argv[1], sys.argv[2], int(sys.argv[3])
c.convert(src, dst, quantize=bits > 0, q_bits=bits or None, model_domain="tts")
"""


@pytest.fixture(scope="session")
def mlx_audio_path() -> Path:
    """mlx-audio 0.6.2 installed (once, without dependencies) under .cache/: its converter
    needs only mlx, numpy and huggingface_hub, which the project already has."""
    target = CACHE / "mlx-audio-0.6.2"
    if not (target / "mlx_audio" / "convert.py").is_file():
        CACHE.mkdir(exist_ok=True)
        tmp = CACHE / f".mlx-audio-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        pip = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(tmp),
                MLX_AUDIO,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert pip.returncode == 0, f"pip install {MLX_AUDIO} failed:\n{pip.stderr[-2000:]}"
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def converted(tiny_model: Path, mlx_audio_path: Path, tmp_path_factory) -> dict[str, Path]:
    """The tiny model converted by mlx_audio.convert: plain (bf16), 8-bit and 4-bit."""
    root = tmp_path_factory.mktemp("mlx-community")
    env = {**os.environ, "PYTHONPATH": str(mlx_audio_path), "HF_HUB_OFFLINE": "1"}
    out = {}
    for name, bits in PRECISIONS.items():
        dst = root / f"tiny-{name}"
        run = subprocess.run(
            [sys.executable, "-c", DRIVER, str(tiny_model), str(dst), str(bits or 0)],
            capture_output=True,
            text=True,
            env=env,
            cwd=root,
            timeout=600,
        )
        assert run.returncode == 0, f"mlx_audio.convert failed:\n{run.stderr[-3000:]}"
        out[name] = dst
    return out


TEXT_IDS = [17, 203, 5, 88, 140, 9, 33, 250, 71, 12, 45, 190, 7, 64, 99, 3, 120, 220]


def _run(model, voice_file: Path, frames: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """The model's first frames, on MLX's frame functions for every model: a quantized
    model has no C frames (engine/native_frames.py), and comparing it with a dense twin
    within 1e-4 asks for the same functions on both (the C frames sum in another order,
    and this tiny random model amplifies a difference in the last digits of a text
    window to 1e-3 in the latents)."""
    voice = load_voice(voice_file)
    kernels = FrameKernels(model, 5, Switches(native_frames=False))
    out = list(
        generate_frames(
            model,
            voice,
            TEXT_IDS,
            steps=5,
            noise=seeded_noise(7, model.config.acoustic_vae_dim),
            max_frames=frames,
            stop_at_eos=False,
            kernels=kernels,
        )
    )
    return np.stack([f.latent for f in out]), np.concatenate([f.audio for f in out])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_the_converter_writes_the_layout_we_load(converted: dict[str, Path]) -> None:
    plain = mx.load(str(converted["fp"] / "model.safetensors"))
    assert checkpoint_layout(plain, "x") == "mlx-audio"
    assert not any(k.startswith("model.") for k in plain)
    assert "prediction_head.t_embedder.mlp.layers.0.weight" in plain
    assert "prediction_head.layers.0.adaLN_modulation.layers.1.weight" in plain
    # Conv weights already in MLX layout (out, k, in).
    assert plain["acoustic_tokenizer.decoder.head.conv.conv.weight"].shape == (1, 7, 4)
    for name, bits in [("8bit", 8), ("4bit", 4)]:
        cfg = json.loads((converted[name] / "config.json").read_text())
        assert cfg["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
        # mlx-audio 0.6.2 rewrites the model type; we recognise the realtime model anyway.
        assert cfg["model_type"] == "vibevoice"
        q = mx.load(str(converted[name] / "model.safetensors"))
        assert q["language_model.layers.0.mlp.gate_proj.weight"].dtype == mx.uint32
        assert "tts_input_types.scales" in q and "language_model.embed_tokens.scales" in q
    assert sorted(p.name for p in (converted["4bit"] / "voices").iterdir()) == [
        "en-Carter_man.safetensors",
        "en-Davis_man.safetensors",
        "en-Emma_woman.safetensors",
        "en-Grace_woman.safetensors",
    ]


def test_plain_conversion_gives_the_same_audio(tiny_model, converted) -> None:
    voice = tiny_model / "voices" / "en-Emma_woman.safetensors"
    ref_lat, ref_audio = _run(load_model(tiny_model), voice)
    lat, audio = _run(load_model(converted["fp"]), converted["fp"] / voice.relative_to(tiny_model))
    np.testing.assert_array_equal(lat, ref_lat)  # the same weights: identical latents
    # The decoder's convolution weights arrive in another memory layout (MLX's, already
    # transposed), so its sums may run in another order: float32 rounding only.
    np.testing.assert_allclose(audio, ref_audio, rtol=0, atol=1e-6)


def _dense_twin(original, quantized):
    """The original model with every weight replaced by what the quantized model actually
    uses (its dequantized weights): same numbers, dense kernels."""
    twin = dict(original.named_modules())
    count = 0
    for path, module in quantized.named_modules():
        if isinstance(module, nn.QuantizedLinear | nn.QuantizedEmbedding):
            dense = mx.dequantize(
                module.weight, module.scales, module.biases, module.group_size, module.bits
            )
            twin[path].weight = dense
            count += 1
    original.model.tts_input_types.weight = quantized.model.tts_input_types.weight
    mx.eval(original.parameters())
    return count


@pytest.mark.parametrize("name", ["8bit", "4bit"])
def test_quantized_conversion_is_the_original_within_its_precision(
    tiny_model, converted, name, capsys
) -> None:
    bits = PRECISIONS[name]
    original = load_model(tiny_model)
    raw = mx.load(str(tiny_model / "model.safetensors"))
    model = load_model(converted[name])
    modules = dict(model.named_modules())
    # 1. Weights: every quantized layer holds exactly mx.quantize of the original bf16
    # weight, so each weight is off by at most one quantization step of its group (MLX
    # keeps 0 exact by adjusting the step, so the far end may lose a whole step) plus the
    # bf16 rounding of the group's offset.
    checked = 0
    for path, module in modules.items():
        if not isinstance(module, nn.QuantizedLinear | nn.QuantizedEmbedding):
            continue
        assert (module.bits, module.group_size) == (bits, 64), path
        w0 = raw[path + ".weight"]
        packed, scales, biases = mx.quantize(w0, 64, bits)
        assert bool(mx.array_equal(module.weight, packed)), path
        assert bool(mx.array_equal(module.scales, scales.astype(mx.float32))), path
        assert bool(mx.array_equal(module.biases, biases.astype(mx.float32))), path
        got = mx.dequantize(module.weight, module.scales, module.biases, 64, bits)
        err = mx.abs(got - w0.astype(mx.float32)).reshape(w0.shape[0], -1, 64).max(axis=-1)
        bound = mx.abs(module.scales) + mx.abs(module.biases) * 2**-8 + 1e-6
        assert bool(mx.all(err <= bound)), path
        checked += 1
    assert checked >= 30
    voice = converted[name] / "voices" / "en-Emma_woman.safetensors"
    lat, audio = _run(model, voice)
    # 2. The loop: the same audio as a dense model holding the dequantized weights.
    ref_lat, ref_audio = _run(original, voice)
    assert _dense_twin(original, model) == checked
    twin_lat, twin_audio = _run(original, voice)
    assert _rel(lat, twin_lat) <= 1e-4 and _rel(audio, twin_audio) <= 1e-4
    # 3. Against full precision: the error that quantization costs (measured on this tiny
    # model, every linear layer quantized: 8-bit about 4e-2, 4-bit about 3e-1).
    lat_err, audio_err = _rel(lat, ref_lat), _rel(audio, ref_audio)
    with capsys.disabled():
        print(f"\n{name}: latent error {lat_err:.2e}, audio error {audio_err:.2e} (max-relative)")
    assert lat_err <= {8: 0.1, 4: 0.6}[bits] and audio_err <= {8: 0.1, 4: 0.6}[bits]
    assert lat_err > 1e-4  # the quantized weights are really used


def test_converted_models_stream_through_the_engine(converted) -> None:
    for name in ("fp", "4bit"):
        engine = MLXEngine(converted[name])
        try:
            engine.wait_ready(120)
            assert engine.voices()[:4] == [
                "en-Carter_man",
                "en-Davis_man",
                "en-Emma_woman",
                "en-Grace_woman",
            ]
            chunks = list(engine.synthesize(SynthesisRequest(text="Hello there.", max_frames=6)))
        finally:
            engine.close()
        assert 1 <= len(chunks) <= 6 and chunks[-1].is_last
        assert all(c.audio.shape == (3200,) and np.isfinite(c.audio).all() for c in chunks)


def test_runtime_quantization_of_the_lm(tiny_model) -> None:
    voice = tiny_model / "voices" / "en-Emma_woman.safetensors"
    ref_lat, _ = _run(load_model(tiny_model), voice)
    errors = {}
    for bits in (8, 4):
        model = load_model(tiny_model, quantize=bits)
        lm = model.model.language_model.layers[0].mlp.gate_proj
        assert isinstance(lm, nn.QuantizedLinear) and lm.bits == bits
        assert isinstance(model.model.language_model.embed_tokens, nn.QuantizedEmbedding)
        # Only the LM: the diffusion head and the decoder stay in full precision.
        assert type(model.model.prediction_head.cond_proj) is nn.Linear
        assert type(model.model.acoustic_tokenizer.decoder.stages[0][0].ffn.linear1) is nn.Linear
        errors[bits] = _rel(_run(model, voice)[0], ref_lat)
    assert 1e-5 < errors[8] < errors[4] < 0.2, errors


# ------------------------------------------------------------------ broken files


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _first_key_in_file_order(path: Path, cut: int) -> str:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    entries = sorted((v["data_offsets"], k) for k, v in header.items() if k != "__metadata__")
    payload = cut - 8 - n
    return next(k for (_, end), k in entries if end > payload)


def test_truncated_file_names_the_file_and_the_first_missing_tensor(converted, tmp_path) -> None:
    folder = _copy(converted["4bit"], tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    cut = len(data) * 2 // 3
    want = _first_key_in_file_order(weights, cut)
    weights.write_bytes(data[:cut])
    with pytest.raises(WeightsError) as err:
        load_model(folder)
    assert str(weights) in str(err.value) and f"truncated at key {want!r}" in str(err.value)
    weights.write_bytes(data[:5])
    with pytest.raises(WeightsError, match="empty or truncated"):
        load_model(folder)
    weights.write_bytes(struct.pack("<Q", 20) + b"{not json at all...}" + b"x" * 100)
    with pytest.raises(WeightsError, match="corrupt header"):
        load_model(folder)


def _rewrite(folder: Path, edit) -> Path:
    weights = folder / "model.safetensors"
    tensors = dict(mx.load(str(weights)))
    edit(tensors)
    mx.save_safetensors(str(weights), tensors)
    return weights


def test_missing_and_misshaped_keys_name_the_file_and_the_key(converted, tmp_path) -> None:
    cases = [
        (
            lambda t: t.pop("prediction_head.layers.0.norm.weight"),
            "missing key 'prediction_head.layers.0.norm.weight'",
        ),
        (
            lambda t: t.pop("prediction_head.cond_proj.scales"),
            "missing key 'prediction_head.cond_proj.scales'",
        ),
        (
            lambda t: t.update({"acoustic_connector.fc1.weight": mx.zeros((3, 3), mx.bfloat16)}),
            "'acoustic_connector.fc1.weight' has shape (3, 3), the config implies (64, 32)",
        ),
        (
            lambda t: t.update({"language_model.layers.0.mlp.extra.weight": mx.zeros((2,))}),
            "unexpected key 'language_model.layers.0.mlp.extra.weight'",
        ),
    ]
    for i, (edit, message) in enumerate(cases):
        folder = _copy(converted["4bit"], tmp_path / str(i))
        weights = _rewrite(folder, edit)
        with pytest.raises(WeightsError) as err:
            load_model(folder)
        assert message in str(err.value) and str(weights) in str(err.value), str(err.value)


def test_quantization_block_must_match_the_weights(converted, tmp_path) -> None:
    folder = _copy(converted["4bit"], tmp_path / "bits")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization"] = cfg["quantization_config"] = {"group_size": 64, "bits": 8}
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=r"the config implies .*\(8-bit, group size 64"):
        load_model(folder)
    del cfg["quantization"], cfg["quantization_config"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="config.json has no quantization block"):
        load_model(folder)


def test_sharded_index_naming_a_missing_shard(converted, tmp_path) -> None:
    folder = _copy(converted["fp"], tmp_path / "shards")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first = sorted(index["weight_map"])[0]
    index["weight_map"][first] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="model-00002-of-00002.safetensors: weight file not"):
        load_model(folder)


def test_cli_reports_a_broken_model_in_one_line(converted, tmp_path) -> None:
    folder = _copy(converted["8bit"], tmp_path / "m")
    _rewrite(folder, lambda t: t.pop("tts_eos_classifier.fc2.bias"))
    doc = tmp_path / "doc.md"
    doc.write_text("Hello there.\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vvreader",
            str(doc),
            "--export",
            str(tmp_path / "o.wav"),
            "--model",
            str(folder),
            "--quantize",
            "4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "missing key 'tts_eos_classifier.fc2.bias'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


@pytest.mark.parametrize("case", ["tiny-run", "mid-shapes"])
def test_quantization_cost_on_the_parity_cases(case: str, capsys) -> None:
    """--quantize 8|4 (the LM only) against the official float32 latents, teacher-forced so
    that each frame shows one frame's error. Measured: 8-bit 1.7e-2 (tiny-run) and 1.4e-2
    (mid-shapes), 4-bit 2.5e-1 and 2.2e-1; full-davis (not run here, 2 GB) 4.1e-2 and
    4.0e-1; float32 itself is within 1e-5."""
    from engine.parity import TeacherForcing, find_voice
    from tests.conftest import PARITY, parity_model_dir

    fixture = PARITY / case
    spec = json.loads((fixture / "case.json").read_text())
    voice = load_voice(find_voice(fixture, spec))
    noise = np.load(fixture / "noise.npy").astype(np.float32)
    expected = np.load(fixture / "expected" / "latents.npy").astype(np.float32)
    errors = {}
    for bits in (None, 8, 4):
        model = load_model(parity_model_dir(case), quantize=bits)
        frames = generate_frames(
            model,
            voice,
            spec["text_ids"],
            cfg_scale=spec["cfg_scale"],
            steps=spec["steps"],
            noise=lambda i: mx.array(noise[i][None]),
            max_frames=spec["max_frames"],
            hooks=TeacherForcing(expected),
        )
        errors[bits] = _rel(np.stack([f.latent for f in frames]), expected)
    with capsys.disabled():
        print(
            f"\n{case}: latent error vs official, fp32 {errors[None]:.1e}, "
            f"8-bit {errors[8]:.2e}, 4-bit {errors[4]:.2e}"
        )
    assert errors[None] < 1e-4
    assert 1e-3 < errors[8] < 5e-2 and errors[8] * 4 < errors[4] < 0.6
