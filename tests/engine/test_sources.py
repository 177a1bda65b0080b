"""Model and voice sources: local folders, a fake Hugging Face Hub on 127.0.0.1 (download,
cache, offline re-use, errors), the preset voice catalogue and its fetch-and-convert cache.
Nothing here touches the network."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.api import SynthesisRequest
from engine.config import VibeVoiceConfig
from engine.errors import DownloadError, EngineError, VoiceError
from engine.hub import DEFAULT_MODEL, TOKENIZER_REPO, resolve_model
from engine.stream import MLXEngine
from engine.voice_fetch import cached_voices, fetch_voice, git_blob_id
from engine.voices import load_catalogue, load_voice_arrays
from tests.conftest import PARITY, REPO, SHARED
from tests.hub import FakeHub

REFERENCE = SHARED / "reference-voices"
MLX_REPO = "mlx-community/VibeVoice-Realtime-0.5B-4bit"


@pytest.fixture(scope="module")
def hub(tiny_model: Path, tmp_path_factory) -> FakeHub:
    """The official layout (tiny weights, no tokenizer, no voices, a README and a figure
    that must not be downloaded), a Qwen tokenizer repository, and an mlx-community-like
    repository with its tokenizer and voices."""
    root = tmp_path_factory.mktemp("hub")
    official = root / "official"
    official.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model / name, official / name)
    (official / "preprocessor_config.json").write_text(
        json.dumps({"language_model_pretrained_name": TOKENIZER_REPO})
    )
    (official / "README.md").write_text("model card\n")
    (official / "figures").mkdir()
    (official / "figures" / "Fig1.png").write_bytes(b"\x89PNG" + b"\0" * 1000)
    qwen = root / "qwen"
    qwen.mkdir()
    shutil.copy(tiny_model / "tokenizer.json", qwen / "tokenizer.json")
    (qwen / "vocab.json").write_text("{}")
    community = root / "community"
    shutil.copytree(tiny_model, community)
    fake = FakeHub({DEFAULT_MODEL: official, TOKENIZER_REPO: qwen, MLX_REPO: community})
    yield fake
    fake.close()


def test_a_local_folder_is_used_as_it_is(tiny_model: Path) -> None:
    src = resolve_model(str(tiny_model), offline=True)
    assert src.folder == tiny_model and src.tokenizer == tiny_model / "tokenizer.json"
    assert src.repo_id is None and sorted(src.voices)[0] == "en-Carter_man"
    with pytest.raises(EngineError, match="no such model folder"):
        resolve_model(str(tiny_model / "nowhere"), offline=True)
    with pytest.raises(EngineError, match="no config.json"):
        resolve_model(str(tiny_model / "voices"), offline=True)


def test_download_caches_only_what_is_needed_and_runs_offline_after(
    hub, tiny_model, tmp_path
) -> None:
    cache = tmp_path / "hf"
    hub.requests.clear()
    src = resolve_model(None, cache_dir=cache, endpoint=hub.url)
    assert src.repo_id == DEFAULT_MODEL
    assert hub.downloaded() == {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
    }
    assert (src.folder / "model.safetensors").is_file() and not (src.folder / "README.md").exists()
    assert TOKENIZER_REPO.replace("/", "--") in str(src.tokenizer)
    assert str(src.folder).startswith(str(cache))
    # Offline (by argument, or by HF_HUB_OFFLINE read at call time): the cache, no request.
    hub.requests.clear()
    assert resolve_model(None, cache_dir=cache, endpoint=hub.url, offline=True) == src
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        assert resolve_model(None, cache_dir=cache, endpoint="http://127.0.0.1:9") == src
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    assert hub.requests == []
    # The downloaded model runs (the preset voices do not fit the tiny model: give a file).
    engine = MLXEngine(src)
    try:
        engine.wait_ready(120)
        assert engine.voices() == []
        voice = str(tiny_model / "voices" / "en-Emma_woman.safetensors")
        chunks = list(engine.synthesize(SynthesisRequest(text="Hi.", voice=voice, max_frames=2)))
    finally:
        engine.close()
    assert chunks and chunks[0].audio.shape == (3200,)


def test_a_conversion_brings_its_tokenizer_and_voices(hub, tmp_path) -> None:
    hub.requests.clear()
    src = resolve_model(MLX_REPO, cache_dir=tmp_path / "hf", endpoint=hub.url)
    assert src.tokenizer == src.folder / "tokenizer.json"
    assert sorted(src.voices) == [
        "en-Carter_man",
        "en-Davis_man",
        "en-Emma_woman",
        "en-Grace_woman",
    ]
    assert not any(TOKENIZER_REPO in p for _, p in hub.requests)
    engine = MLXEngine(src)
    try:
        engine.wait_ready(120)
        chunks = list(engine.synthesize(SynthesisRequest(text="Hello.", max_frames=3)))
    finally:
        engine.close()
    assert chunks and all(np.isfinite(c.audio).all() for c in chunks)


def _one_paragraph(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message


def test_offline_without_a_cache_says_what_is_missing_and_what_to_do(hub, tmp_path) -> None:
    with pytest.raises(DownloadError) as err:
        resolve_model(None, cache_dir=tmp_path / "empty", endpoint=hub.url, offline=True)
    msg = str(err.value)
    _one_paragraph(msg)
    for part in (
        f"config.json and the weights of {DEFAULT_MODEL} (about 2 GB)",
        f"tokenizer.json from {TOKENIZER_REPO}",
        "HF_HUB_OFFLINE",
        f"`hf download {DEFAULT_MODEL}",
        f"`hf download {TOKENIZER_REPO} tokenizer.json`",
        "--model /path/to/folder",
        str(tmp_path / "empty"),
    ):
        assert part in msg, (part, msg)
    # Only the tokenizer missing: the message is about the tokenizer alone.
    cache = tmp_path / "partial"
    resolve_model(None, cache_dir=cache, endpoint=hub.url)
    shutil.rmtree(cache / f"models--{TOKENIZER_REPO.replace('/', '--')}")
    with pytest.raises(DownloadError) as err:
        resolve_model(None, cache_dir=cache, endpoint=hub.url, offline=True)
    msg = str(err.value)
    _one_paragraph(msg)
    assert msg.startswith(f"cannot get tokenizer.json from {TOKENIZER_REPO} (for {DEFAULT_MODEL})")
    assert "config.json and the weights" not in msg


def test_unreachable_hub_and_unknown_repository(hub, tmp_path) -> None:
    with pytest.raises(DownloadError) as err:
        resolve_model(None, cache_dir=tmp_path / "a", endpoint="http://127.0.0.1:9")
    _one_paragraph(str(err.value))
    assert "the download failed (ConnectError" in str(err.value)
    assert "check the network connection" in str(err.value)
    with pytest.raises(DownloadError, match="no such model repository"):
        resolve_model("nobody/nothing-here", cache_dir=tmp_path / "b", endpoint=hub.url)
    with pytest.raises(DownloadError, match="not a VibeVoice-Realtime model repository"):
        resolve_model(TOKENIZER_REPO, cache_dir=tmp_path / "c", endpoint=hub.url)


def _vvreader(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vvreader", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_downloads_with_progress_then_works_offline(hub, tmp_path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("Hello there.\n")
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "HF_ENDPOINT": hub.url,
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(REPO),
    }
    env.pop("HF_HUB_OFFLINE", None)
    out = tmp_path / "o.wav"
    first = _vvreader(str(doc), "--export", str(out), "--model", MLX_REPO, env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Fetching" in first.stderr and out.stat().st_size > 44  # huggingface_hub's bar
    out.unlink()
    env["HF_HUB_OFFLINE"] = "1"
    again = _vvreader(
        str(doc),
        "--export",
        str(out),
        "--model",
        MLX_REPO,
        "--quantize",
        "8",
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 0 and out.stat().st_size > 44, again.stderr
    env["HF_HUB_CACHE"] = str(tmp_path / "empty")
    bad = _vvreader(str(doc), "--export", str(out), env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert f"cannot get config.json and the weights of {DEFAULT_MODEL}" in bad.stderr


# ---------------------------------------------------------------------------- voices


def test_the_catalogue_lists_the_official_presets() -> None:
    cat = load_catalogue()
    ids = [v.id for v in cat.voices]
    assert len(ids) == len(set(ids)) == 25 and cat.default == "en-Carter_man"
    main = {v.id for v in cat.voices if not v.experimental}
    assert main == {
        "en-Carter_man",
        "en-Davis_man",
        "en-Emma_woman",
        "en-Frank_man",
        "en-Grace_woman",
        "en-Mike_man",
        "in-Samuel_man",
    }
    experimental = {v.id.split("-")[0] for v in cat.voices if v.experimental}
    assert experimental == {"de", "fr", "it", "jp", "kr", "nl", "pl", "pt", "sp"}
    for v in cat.voices:
        assert v.gender == v.id.rsplit("_", 1)[1] and v.gender in ("man", "woman")
        assert v.path == f"demo/voices/streaming_model/{v.id}.pt"
        assert re.fullmatch(r"[0-9a-f]{40}", v.git_blob)
    assert {v.language for v in cat.voices} >= {"en", "en-IN", "de", "ja", "ko", "es"}
    assert cat.url(cat.get("en-Davis_man")).startswith(
        "https://raw.githubusercontent.com/microsoft/VibeVoice/e73d1e17"
    )
    # The pinned blob ids are those of the published files (five are in ../shared).
    for f in sorted(REFERENCE.glob("*.pt")):
        assert git_blob_id(f.read_bytes()) == cat.get(f.stem).git_blob, f.name
    full = VibeVoiceConfig.from_file(PARITY / "full-davis" / "model" / "config.json")
    tiny = VibeVoiceConfig.from_file(PARITY / "tiny-run" / "model" / "config.json")
    for cfg, fits in ((full, True), (tiny, False)):
        d = cfg.decoder
        assert (
            cat.fits(d.hidden_size, cfg.lm_layers, cfg.tts_layers, d.kv_heads, d.dim_per_head)
            is fits
        )


@pytest.fixture()
def voice_hub() -> FakeHub:
    files = {f.name: f.read_bytes() for f in REFERENCE.glob("*.pt")}
    fake = FakeHub({}, files)
    yield fake
    fake.close()


def test_a_preset_is_fetched_once_checked_and_converted(voice_hub, tmp_path) -> None:
    cache = tmp_path / "voices"
    url = f"{voice_hub.url}/files/en-Davis_man.pt"
    seen: list[tuple[int, int | None]] = []
    path = fetch_voice(
        "en-Davis_man", cache_dir=cache, url=url, progress=lambda d, t: seen.append((d, t))
    )
    assert path == cache / "en-Davis_man.safetensors" and list(cache.iterdir()) == [path]
    size = (REFERENCE / "en-Davis_man.pt").stat().st_size
    assert seen[-1] == (size, size)
    converted = mx.load(str(path))
    original = load_voice_arrays(REFERENCE / "en-Davis_man.pt")
    assert set(converted) == set(original) and converted["tts_lm_key_19"].shape == (1, 2, 183, 64)
    for k in original:
        assert bool(mx.array_equal(converted[k], original[k])), k
    # Second time: from the cache, even offline, without a request.
    voice_hub.requests.clear()
    assert fetch_voice("en-Davis_man", cache_dir=cache, url=url, offline=True) == path
    assert voice_hub.requests == [] and cached_voices(cache) == {"en-Davis_man": path}


def test_voice_fetch_errors(voice_hub, tmp_path) -> None:
    cache = tmp_path / "voices"
    # Not the published file (another voice under this name): refused, nothing cached.
    with pytest.raises(VoiceError, match="not the published en-Davis_man"):
        fetch_voice("en-Davis_man", cache_dir=cache, url=f"{voice_hub.url}/files/en-Mike_man.pt")
    assert not cache.exists() or list(cache.iterdir()) == []
    with pytest.raises(DownloadError) as err:
        fetch_voice("en-Emma_woman", cache_dir=cache, offline=True)
    _one_paragraph(str(err.value))
    assert "HF_HUB_OFFLINE" in str(err.value) and "--voice PATH" in str(err.value)
    with pytest.raises(DownloadError, match="cannot download voice en-Emma_woman"):
        fetch_voice("en-Emma_woman", cache_dir=cache, url=f"{voice_hub.url}/files/missing.pt")
    with pytest.raises(VoiceError, match="not a preset voice"):
        fetch_voice("en-Nobody_man", cache_dir=cache)
    # The published id with a corrupt payload cannot happen (the id covers the bytes), but a
    # corrupt file in the cache is reported by the loader like any voice file.
    cache.mkdir(exist_ok=True)
    (cache / "en-Grace_woman.safetensors").write_bytes(b"\0" * 20)
    with pytest.raises(VoiceError, match="en-Grace_woman.safetensors"):
        load_voice_arrays(fetch_voice("en-Grace_woman", cache_dir=cache, offline=True))


def test_cli_lists_local_and_fetchable_voices(voice_hub, tiny_model, tmp_path) -> None:
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(REPO),
    }
    fetch_voice(
        "en-Davis_man",
        cache_dir=tmp_path / "xdg" / "vvreader" / "voices",
        url=f"{voice_hub.url}/files/en-Davis_man.pt",
    )
    run = _vvreader("--list-voices", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"voices for {DEFAULT_MODEL}:"
    assert "not downloaded yet" in run.stdout
    rows = {ln.split()[1]: ln.split()[0] for ln in lines if ln.startswith(("  local", "  fetch"))}
    assert rows["en-Davis_man"] == "local" and rows["en-Carter_man"] == "fetch" and len(rows) == 25
    assert "(default)" in next(ln for ln in lines if "en-Carter_man" in ln)
    tiny = _vvreader("--list-voices", "--model", str(tiny_model), env=env, cwd=tmp_path)
    assert tiny.returncode == 0 and "en-Emma_woman" in tiny.stdout
    assert "do not fit this model" in tiny.stdout
    bad = _vvreader("--list-voices", "--model", str(tmp_path / "nowhere"), env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "no such model folder" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_reader_fetches_its_first_voice_before_starting(
    voice_hub, tiny_model, tmp_path, monkeypatch
) -> None:
    from vvreader.loader import EngineUnavailable, prepare_model

    folder = tmp_path / "full"  # the real shape (no weights needed to decide on voices)
    folder.mkdir()
    shutil.copy(PARITY / "full-davis" / "model" / "config.json", folder / "config.json")
    shutil.copy(tiny_model / "tokenizer.json", folder / "tokenizer.json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VVREADER_VOICE_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("VVREADER_VOICE_URL", voice_hub.url + "/files/{name}.pt")
    src = prepare_model(str(folder), voice="en-Davis_man")
    assert src.folder == folder
    assert (tmp_path / "xdg" / "vvreader" / "voices" / "en-Davis_man.safetensors").is_file()
    with pytest.raises(EngineUnavailable, match="cannot download voice en-Carter_man"):
        prepare_model(str(folder))  # the default preset, not on this fake server
    prepare_model(str(folder), voice=str(REFERENCE / "en-Mike_man.pt"))  # a file: no fetch
    assert sorted(cached_voices(tmp_path / "xdg" / "vvreader" / "voices")) == ["en-Davis_man"]


def test_the_reader_loader_reports_voice_downloads(tiny_model, tmp_path, monkeypatch) -> None:
    """EngineLoader (what the reader opens the engine with) fetches its first voice, and
    later presets, reporting Transfers (file, bytes, fraction, rate) as they arrive."""
    from vvreader.humanize import describe_transfer
    from vvreader.loader import EngineLoader, EngineUnavailable

    files = {f.name: f.read_bytes() for f in REFERENCE.glob("en-*.pt")}
    slow = FakeHub({}, files, bytes_per_second=4e6)
    try:
        folder = tmp_path / "full"  # the real shape, no weights: the voices fit, loading fails
        folder.mkdir()
        shutil.copy(PARITY / "full-davis" / "model" / "config.json", folder / "config.json")
        shutil.copy(tiny_model / "tokenizer.json", folder / "tokenizer.json")
        cache = tmp_path / "xdg" / "vvreader" / "voices"
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        monkeypatch.delenv("VVREADER_VOICE_CACHE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("VVREADER_VOICE_URL", slow.url + "/files/{name}.pt")

        class Recorder:
            cancelled = False

            def __init__(self) -> None:
                self.stages: list[str] = []
                self.transfers: list = []

            def stage(self, what: str) -> None:
                self.stages.append(what)

            def transfer(self, t) -> None:
                self.transfers.append(t)

        progress = Recorder()
        loader = EngineLoader(str(folder), "en-Davis_man", warm_up=False)
        with pytest.raises(EngineUnavailable):
            loader.open(progress)  # no weights here: it fails after the voice was fetched
        assert progress.stages[:2] == ["finding the model", "loading the weights"]
        size = len(files["en-Davis_man.pt"])
        davis = [t for t in progress.transfers if t.name == "voice en-Davis_man"]
        assert davis and davis[-1].done == size and davis[-1].fraction == 1.0
        assert all(t.file == "en-Davis_man.pt" and t.total == size for t in davis)
        assert [t.done for t in davis] == sorted(t.done for t in davis) and len(davis) > 10
        assert any(t.rate for t in davis) and "MB/s" in describe_transfer(davis[-1])
        assert sorted(cached_voices(cache)) == ["en-Davis_man"]
        assert not loader.voice_missing("en-Davis_man") and loader.voice_missing("en-Grace_woman")
        assert not loader.voice_missing("en-Nobody_man")  # not a preset: not downloadable
        loader.fetch_voice("en-Grace_woman", progress)
        assert not loader.voice_missing("en-Grace_woman")
        assert progress.transfers[-1].name == "voice en-Grace_woman"
        assert progress.transfers[-1].fraction == 1.0
    finally:
        slow.close()
