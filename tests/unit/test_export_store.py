"""The export's work folder (one checked file per utterance) and its encoding thread."""

from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest

from engine.api import SynthesisRequest
from vvreader.export.encoding import QUEUE_LENGTH, EncodingThread
from vvreader.export.errors import ExportError
from vvreader.export.pcm import to_pcm16
from vvreader.export.store import UtteranceStore, utterance_key


def test_a_stored_utterance_comes_back_as_it_was(tmp_path) -> None:
    audio = 0.3 * np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    with UtteranceStore(tmp_path / "work") as store:
        assert store.get("k") is None and not store.has("k")
        stored = store.put("k", audio)
        assert store.has("k") and store.count() == 1
        # As 16-bit PCM: what every file is made of, and what the export goes on with.
        assert np.max(np.abs(stored - np.clip(audio, -1, 1))) <= 0.5 / 32767 + 1e-7
        assert to_pcm16(stored) == to_pcm16(audio)
        np.testing.assert_array_equal(store.get("k"), stored)
        store.put("empty", np.zeros(0, np.float32))
        assert store.get("empty").shape == (0,)
        assert (tmp_path / "work" / "k.audio").stat().st_size == 16 + 2 * 5000
    # Kept after the store closes; gone once removed.
    with UtteranceStore(tmp_path / "work") as store:
        np.testing.assert_array_equal(store.get("k"), stored)
        store.remove()
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # cut short
        lambda b: b[:10],  # inside the header
        lambda b: b[:-2],  # one sample short
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # a flipped bit
        lambda b: b"XXXX" + b[4:],  # not ours
        lambda b: b"",
    ],
)
def test_a_damaged_file_is_never_trusted(tmp_path, damage) -> None:
    with UtteranceStore(tmp_path / "work") as store:
        store.put("k", np.linspace(-1, 1, 999, dtype=np.float32))
        path = next((tmp_path / "work").glob("k.*"))
        path.write_bytes(damage(path.read_bytes()))
        assert store.has("k")
        assert store.get("k") is None
        assert not path.exists()


def test_opening_keeps_only_the_wanted_keys_and_no_half_written_file(tmp_path) -> None:
    with UtteranceStore(tmp_path / "work") as store:
        for key in "abc":
            store.put(key, np.ones(10, np.float32))
        (tmp_path / "work" / "a.audio.123.tmp").write_bytes(b"half")
        (tmp_path / "work" / "partial-book.wav").write_bytes(b"half")
        store.keep_only(["a", "c", "d"])
        assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [
            "a.audio",
            "c.audio",
            "lock",
        ]


def test_one_export_at_a_time_holds_a_work_folder(tmp_path) -> None:
    with UtteranceStore(tmp_path / "work"):
        with pytest.raises(ExportError, match="another vvreader is exporting"):
            UtteranceStore(tmp_path / "work").__enter__()
    with UtteranceStore(tmp_path / "work"):
        pass


def test_a_full_disk_is_one_clear_error_and_leaves_no_file(tmp_path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with UtteranceStore(tmp_path / "work") as store:
        store.put("kept", np.ones(4, np.float32))
        monkeypatch.setattr("vvreader.export.store.os.fsync", full)
        with pytest.raises(ExportError, match=r"work: cannot write \(the disk is full\)"):
            store.put("k", np.ones(4, np.float32))
        assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["kept.audio", "lock"]


def test_a_folder_that_cannot_be_made_is_one_clear_error(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="file/work: cannot write"):
        UtteranceStore(tmp_path / "file" / "work").__enter__()


def test_the_key_changes_with_everything_that_changes_the_audio(tmp_path) -> None:
    base = SynthesisRequest(text="Hello.", voice="v", cfg_scale=1.5, steps=5)
    key = utterance_key(base, "model-a")
    assert utterance_key(SynthesisRequest(text="Hello.", voice="v"), "model-a") == key
    others = [
        utterance_key(SynthesisRequest(text="Hello!", voice="v"), "model-a"),
        utterance_key(SynthesisRequest(text="Hello.", voice="w"), "model-a"),
        utterance_key(SynthesisRequest(text="Hello.", voice="v", cfg_scale=2.0), "model-a"),
        utterance_key(SynthesisRequest(text="Hello.", voice="v", steps=4), "model-a"),
        utterance_key(SynthesisRequest(text="Hello.", voice="v", seed=1), "model-a"),
        utterance_key(base, "model-b"),
    ]
    assert len({key, *others}) == 7
    # A voice file: its contents (size, time) count.
    voice = tmp_path / "v.safetensors"
    voice.write_bytes(b"1")
    first = utterance_key(SynthesisRequest(text="Hello.", voice=str(voice)), "m")
    voice.write_bytes(b"12")
    assert utterance_key(SynthesisRequest(text="Hello.", voice=str(voice)), "m") != first


def test_the_encoding_thread_runs_jobs_in_order_and_bounds_its_queue() -> None:
    done: list[int] = []
    gate = threading.Event()
    with EncodingThread() as thread:
        thread.submit(gate.wait)
        for i in range(QUEUE_LENGTH):
            thread.submit(lambda i=i: done.append(i))
        # The queue is full: the next submit waits until the thread takes a job.
        waiter = threading.Thread(target=thread.submit, args=(lambda: done.append(-1),))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and done == []
        gate.set()
        waiter.join(5)
        thread.close()
    assert done == [*range(QUEUE_LENGTH), -1]


def test_the_encoding_thread_stops_at_the_first_error_but_runs_the_clean_up() -> None:
    ran: list[str] = []
    thread = EncodingThread()

    def fail() -> None:
        raise OSError("broken pipe")

    thread.submit(fail)
    thread.submit(lambda: ran.append("skipped"))
    time.sleep(0.2)
    with pytest.raises(ExportError, match="encoding failed: broken pipe"):
        thread.submit(lambda: ran.append("refused"))
    thread.submit(lambda: ran.append("clean-up"), always=True)
    with pytest.raises(ExportError, match="broken pipe"):
        thread.close()
    assert ran == ["clean-up"]
