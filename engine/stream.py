"""The engine thread: owns MLX, the model and the voices; serves synthesis requests.

Every MLX call happens on this one thread, on a stream it creates; only numpy arrays
and plain Python values leave it. Jobs are served in arrival order: a request of
``synthesize`` alone, the requests of ``synthesize_many`` together as one batch
(engine/batch.py), which later ``synthesize_many`` jobs at the head of the queue join
while it runs (continuous batching, at most ``max_batch`` utterances at a time). A
cancelled request stops between two frames (at most one frame, 133 ms of audio, of work
later), and a request cancelled before it starts is skipped.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.backend import run_on_mlx_thread

from engine.api import SAMPLE_RATE, AudioChunk, SynthesisRequest
from engine.errors import EngineError, VoiceError
from engine.hub import ModelSource

_DONE = object()


class SynthesisHandle:
    """The consumer's side of one request (implements ``engine.api.SynthesisStream``)."""

    def __init__(self, request: SynthesisRequest) -> None:
        self.request = request
        self._chunks: queue.Queue[object] = queue.Queue()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[AudioChunk]:
        while True:
            if self._cancel.is_set():
                return
            try:
                item = self._chunks.get(timeout=0.05)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, AudioChunk)
            yield item


DEFAULT_BATCH = 8
"""Utterances generated together on a CPU (and on Metal, not measured): on two cores 16
made hardly more than 8 (2.62x against 2.55x real time, all together)."""
CUDA_BATCH = 64
"""The most on a CUDA GPU: an H100 exported a 256-sentence book 64 at a time at 113x real
time (one at a time: 22x); more streams gained little or lost in the benchmark."""
STREAM_BYTES = 256 * 2**20
"""GPU memory a stream of a batch takes, with room: 128 streams peaked at 28.5 GB with the
3.4 GB model (H200)."""
MODEL_BYTES = 6 * 2**30
"""GPU memory of the model with the kernels' bfloat16 copies, with room."""


def default_max_batch(cuda: bool, total_memory: int | None) -> int:
    """The utterances ``synthesize_many`` generates together when not told: DEFAULT_BATCH,
    or on a CUDA GPU as many streams as its memory holds beside the model, DEFAULT_BATCH
    to CUDA_BATCH."""
    if not cuda or not total_memory:
        return DEFAULT_BATCH
    fits = (int(total_memory) - MODEL_BYTES) // STREAM_BYTES
    return max(DEFAULT_BATCH, min(CUDA_BATCH, fits))


@dataclass
class _BatchJob:
    """The handles of one ``synthesize_many`` call."""

    handles: list[SynthesisHandle]


class MLXEngine:
    """VibeVoice-Realtime on an engine thread.

    Args:
        model_dir: a folder with config.json, model*.safetensors, tokenizer.json and
            optionally voices/*.safetensors, or an :class:`engine.hub.ModelSource`
            (from ``resolve_model``: a Hugging Face snapshot and a tokenizer elsewhere).
        dtype: compute dtype name ("float32", "bfloat16", "float16").
        quantize: 8 or 4 to quantize the LM stacks on load (None: as stored).
        on_ready: called (on the engine thread) once the model is loaded, with None or
            the error that made loading fail.
        frames_per_token, extra_frames: the runaway guard of requests without
            ``max_frames``: at most ``frames_per_token * tokens + extra_frames`` frames.
        max_batch: the most utterances of ``synthesize_many`` generated together (the
            others start as those end); None: :func:`default_max_batch` for the device,
            settled when the model has loaded (8 until then).
    """

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model_dir: str | Path | ModelSource,
        dtype: str = "float32",
        on_ready: Callable[[EngineError | None], None] | None = None,
        frames_per_token: float = 4.0,
        extra_frames: int = 24,
        quantize: int | None = None,
        max_batch: int | None = None,
    ) -> None:
        if isinstance(model_dir, ModelSource):
            self._source: ModelSource | None = model_dir
            self.model_dir = model_dir.folder
        else:
            self._source = None
            self.model_dir = Path(model_dir)
        self._quantize = quantize
        self._presets: set[str] = set()
        self._frame_limit = (frames_per_token, extra_frames)
        self._dtype_name = dtype
        self._on_ready = on_ready
        self.max_batch = max(1, max_batch) if max_batch is not None else DEFAULT_BATCH
        self._batch_given = max_batch is not None
        self._jobs: queue.Queue[SynthesisHandle | _BatchJob | None] = queue.Queue()
        self._ready = threading.Event()
        self._load_error: EngineError | None = None
        self._voice_paths: dict[str, Path] = {}
        self._stopped = threading.Event()
        run_on_mlx_thread(self._run, name="vvreader-engine")

    # ------------------------------------------------------------------ caller side
    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded; raise the load error if it failed."""
        if not self._ready.wait(timeout):
            raise TimeoutError("the model is still loading")
        if self._load_error is not None:
            raise self._load_error

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._load_error is None

    def voices(self) -> list[str]:
        """The model's own voices, then the preset voices that fit it (fetched on first
        use when not cached)."""
        self.wait_ready()
        return sorted(self._voice_paths) + sorted(self._presets - set(self._voice_paths))

    @property
    def identity(self) -> str:
        """The model folder, each of its weight and config files (name, size and
        modification time: a changed file is another model), the compute dtype and the
        quantization."""
        from engine.weights import find_weight_files

        folder = self.model_dir.resolve()
        try:
            files = [folder / "config.json", *find_weight_files(folder)]
            stats = [(f.name, f.stat()) for f in files]
        except (OSError, EngineError):
            stats = []
        parts = [f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats]
        return "|".join([str(folder), self._dtype_name, f"q{self._quantize or 0}", *parts])

    def synthesize(self, request: SynthesisRequest) -> SynthesisHandle:
        handle = SynthesisHandle(request)
        self._jobs.put(handle)
        return handle

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisHandle]:
        """Synthesise ``requests`` together, as one batch: each handle streams its own
        request's chunks, the same audio as ``synthesize`` gives it (within float32
        rounding), all of them sooner than one after the other (a frame of several
        utterances reads the model's weights once). Requests with other diffusion step
        counts go in batches of their own, one after the other."""
        handles = [SynthesisHandle(r) for r in requests]
        if handles:
            self._jobs.put(_BatchJob(handles))
        return handles

    def close(self, timeout: float = 10.0) -> None:
        """Stop serving (after the request in progress, if any) and free the model."""
        self._jobs.put(None)
        self._stopped.wait(timeout)

    @property
    def closed(self) -> bool:
        return self._stopped.is_set()

    # ------------------------------------------------------------------ engine thread
    def _run(self) -> None:
        try:
            self._serve_forever()
        finally:
            self._model = None
            self._voices = {}
            self._stopped.set()

    def _serve_forever(self) -> None:
        import mlx.core as mx

        stream = mx.new_stream(mx.default_device())
        with mx.stream(stream):
            try:
                self._load()
            except EngineError as e:
                self._load_error = e
            except Exception as e:  # a bug or an unexpected file: report, do not die
                self._load_error = EngineError(f"{self.model_dir}: could not load the model ({e})")
            self._ready.set()
            if self._on_ready is not None:
                self._on_ready(self._load_error)
            while True:
                handle = self._jobs.get()
                if handle is None:
                    return
                if isinstance(handle, _BatchJob):
                    self._serve_batches(handle.handles)
                    continue
                if handle.cancelled:
                    handle._chunks.put(_DONE)
                    continue
                try:
                    if self._load_error is not None:
                        raise self._load_error
                    self._serve(handle)
                except EngineError as e:
                    handle._chunks.put(e)
                except Exception as e:
                    handle._chunks.put(EngineError(f"synthesis failed: {e}"))
                finally:
                    handle._chunks.put(_DONE)

    def _load(self) -> None:
        import mlx.core as mx

        from engine.switches import Switches
        from engine.tokenizer import TextTokenizer
        from engine.weights import load_model

        dtype = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}[
            self._dtype_name
        ]
        self._model = load_model(self.model_dir, dtype=dtype, quantize=self._quantize)
        self._switches = Switches.from_environ()
        if not self._batch_given:
            from engine.cuda_frame import on_cuda_gpu

            memory = mx.device_info().get("total_memory")
            self.max_batch = default_max_batch(on_cuda_gpu(), memory)
        self._prepare_native_decoder()
        tokenizer = self._source.tokenizer if self._source else self.model_dir / "tokenizer.json"
        self._tokenizer = TextTokenizer(tokenizer)
        # Every id it produces is then a row of the embedding table.
        self._tokenizer.check_fits(self._model.config.decoder.vocab_size)
        self._voices: dict[Path, object] = {}
        self._kernels: dict[int, object] = {}
        for path in sorted((self.model_dir / "voices").glob("*.safetensors")):
            self._voice_paths[path.stem] = path
        self._presets, self._default_voice = self._preset_voices()

    def _preset_voices(self) -> tuple[set[str], str]:
        """The preset voices that fit the model, and the voice used when a request names
        none (the tiny test model gets no presets)."""
        from engine.voices import default_voice, fitting_catalogue

        try:
            catalogue = fitting_catalogue(self._model.config)
        except VoiceError:
            catalogue = None
        presets = {v.id for v in catalogue.voices} if catalogue is not None else set()
        return presets, default_voice(self._voice_paths, catalogue)

    def _voice(self, name: str) -> object:
        from engine.voices import load_voice

        path = self._voice_paths.get(name)
        if path is None and name in self._presets:
            from engine.voice_fetch import fetch_voice

            path = self._voice_paths[name] = fetch_voice(name)
        if path is None:
            path = Path(name).expanduser()
            if not path.is_file():
                known = ", ".join(sorted(self._voice_paths)) or "none"
                more = "; presets: see vvreader --list-voices" if self._presets else ""
                raise VoiceError(
                    f"unknown voice {name!r} (known: {known}{more}; or give a file path)"
                )
        if path not in self._voices:
            cfg = self._model.config
            voice = load_voice(path)
            voice.validate(
                cfg.lm_layers,
                cfg.tts_layers,
                cfg.decoder.kv_heads,
                cfg.decoder.dim_per_head,
                cfg.decoder.hidden_size,
            )
            voice.check_positions(cfg.decoder.max_position_embeddings)
            self._voices[path] = voice
        return self._voices[path]

    def _prepare_native_decoder(self) -> None:
        """Make the C decoder's copy of the weights while loading (seconds for the full
        model, most of it the first touch of new memory), not at the first synthesis."""
        from engine.decode import choose_latent_decoder

        choose_latent_decoder(self._model, self._switches)

    def _prepare(self, req: SynthesisRequest) -> tuple[list[int], object, object]:
        """A request's checked token ids, its voice and the kernels of its step count;
        raises EngineError (RequestError, VoiceError) for what the request got wrong."""
        from engine.generate import FrameKernels, check_steps
        from engine.tokenizer import checked_token_ids

        if req.token_ids is not None:
            ids = list(req.token_ids)
        else:
            ids = self._tokenizer.encode(req.text or "")
        # Checked before anything reads them (RequestError, which reaches the consumer).
        ids = checked_token_ids(ids, self._model.config.decoder.vocab_size)
        check_steps(req.steps, self._model.config.diffusion.ddpm_num_steps)
        voice = self._voice(req.voice or self._default_voice)
        kernels = self._kernels.get(req.steps)
        if kernels is None:
            kernels = FrameKernels(self._model, req.steps, self._switches)
            self._kernels[req.steps] = kernels
        return ids, voice, kernels

    def _serve(self, handle: SynthesisHandle) -> None:
        from engine.generate import default_frame_limit, generate_frames, seeded_noise

        req = handle.request
        ids, voice, kernels = self._prepare(req)
        frames = generate_frames(
            self._model,
            voice,
            ids,
            cfg_scale=req.cfg_scale,
            steps=req.steps,
            noise=seeded_noise(req.seed, self._model.config.acoustic_vae_dim),
            max_frames=req.max_frames or default_frame_limit(len(ids), *self._frame_limit),
            cancel=handle._cancel,
            kernels=kernels,
        )
        for f in frames:
            handle._chunks.put(
                AudioChunk(
                    audio=f.audio,
                    frame_index=f.index,
                    tokens_consumed=f.tokens_consumed,
                    total_tokens=len(ids),
                    is_last=f.is_last,
                    stop_reason=f.stop_reason,
                )
            )

    # ------------------------------------------------------------------ batches
    def _serve_batches(self, handles: list[SynthesisHandle]) -> None:
        """Serve ``handles`` in batches of one step count each, in the order of their
        first request; ``synthesize_many`` jobs at the head of the queue join."""
        waiting = deque(handles)
        while waiting:
            self._serve_batch(waiting[0].request.steps, waiting)

    def _next_batch_job(self) -> _BatchJob | None:
        """The job at the head of the queue when it is a ``synthesize_many`` job (taken
        off the queue), else None (the queue unchanged)."""
        with self._jobs.mutex:
            head = self._jobs.queue[0] if self._jobs.queue else None
        if isinstance(head, _BatchJob):
            # This thread is the queue's only consumer: the head is still this job.
            return self._jobs.get_nowait()  # type: ignore[return-value]
        return None

    def _serve_batch(self, steps: int, waiting: deque[SynthesisHandle]) -> None:
        """Generate the waiting requests of ``steps`` diffusion steps together, taking
        them from ``waiting`` as room frees up, until none of them is left."""
        from engine.api import AudioChunk
        from engine.batch import BatchGenerator, BatchItem
        from engine.generate import default_frame_limit, seeded_noise

        batch: BatchGenerator | None = None
        live: dict[int, tuple[SynthesisHandle, int]] = {}

        def end(handle: SynthesisHandle, error: EngineError | None = None) -> None:
            if error is not None:
                handle._chunks.put(error)
            handle._chunks.put(_DONE)

        def join(handle: SynthesisHandle) -> None:
            nonlocal batch
            req = handle.request
            if handle.cancelled:
                return end(handle)
            try:
                if self._load_error is not None:
                    raise self._load_error
                ids, voice, kernels = self._prepare(req)
                if batch is None:
                    batch = BatchGenerator(self._model, steps, kernels)
                batch.add(
                    BatchItem(
                        key=id(handle),
                        voice=voice,
                        text_ids=ids,
                        cfg_scale=req.cfg_scale,
                        noise=seeded_noise(req.seed, self._model.config.acoustic_vae_dim),
                        max_frames=req.max_frames
                        or default_frame_limit(len(ids), *self._frame_limit),
                        cancel=handle._cancel,
                    )
                )
            except EngineError as e:
                return end(handle, e)
            except Exception as e:  # a bug or an unexpected file: report, do not die
                return end(handle, EngineError(f"synthesis failed: {e}"))
            live[id(handle)] = (handle, len(ids))

        def fill() -> None:
            while (job := self._next_batch_job()) is not None:
                waiting.extend(job.handles)
            for handle in [h for h in waiting if h.request.steps == steps]:
                if len(live) >= self.max_batch:
                    break
                waiting.remove(handle)
                join(handle)

        fill()
        while live:
            assert batch is not None
            try:
                settled = batch.step()
            except Exception as e:
                error = e if isinstance(e, EngineError) else EngineError(f"synthesis failed: {e}")
                for handle, _ in live.values():
                    end(handle, error)
                return
            for key, f in settled:
                handle, total = live[key]
                handle._chunks.put(
                    AudioChunk(
                        audio=f.audio,
                        frame_index=f.index,
                        tokens_consumed=f.tokens_consumed,
                        total_tokens=total,
                        is_last=f.is_last,
                        stop_reason=f.stop_reason,
                    )
                )
            running = set(batch.keys)
            for key in [k for k in live if k not in running]:
                end(live.pop(key)[0])
            fill()
