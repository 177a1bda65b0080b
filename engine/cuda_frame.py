"""The frame backend on NVIDIA GPUs: a speech frame and a text window as one CUDA kernel
each (engine/cuda_kernels.cu).

On an NVIDIA GPU the MLX graph of a frame is ~1,000 small operations, and launching them
takes far longer than their arithmetic and their weights. :class:`CudaFrames` runs the
same math as :class:`engine.mlx_frames.MLXFrames` as single persistent kernels through
``mx.fast.cuda_kernel``: the CFG sampler,
the connector, both TTS-LM rows and the EOS head in one launch per frame, the text LM
and the positive TTS-LM row in one launch per text window. The weights are packed once
into one bfloat16 buffer (the checkpoint's values exactly: a matrix with any value that
is not a bfloat16 keeps the model on the MLX path) and one float32 buffer for norms and
biases. The caches of both LMs are each one array for all layers (:class:`StackedCaches`),
written by one ``slice_update`` per call.

Chosen by engine.frame_backend when MLX runs on a CUDA device; ``VVREADER_CUDA_KERNELS=0``
turns it off (engine/switches.py). A self-check against the MLX functions when it is
built decides whether it is used; the compiled kernels and the results of a self-check
that passed are kept for the next start (engine/kernel_cache.py). One utterance at a
time: batches of utterances (engine/batch.py) run on the MLX functions.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from engine import kernel_cache
from engine.config import TTS_TEXT_WINDOW_SIZE, VibeVoiceConfig
from engine.dpm_solver import DPMSolverSchedule

if TYPE_CHECKING:
    from engine.mlx_frames import MLXFrames
    from engine.voices import VoicePrompt

SOURCE = Path(__file__).with_name("cuda_kernels.cu")
# Threads per block (NT in the source) and rows of a text window the kernel takes.
THREADS = 256
LMAX = TTS_TEXT_WINDOW_SIZE
# Items of one layer in the offset table: qkv, o, gate/up, down (bfloat16), qkv bias,
# input norm, post-attention norm (float32). After the layers (text LM, then TTS LM)
# come these items, in this order (pack_model), then one item per head layer of each of
# PER_HEAD_LAYER_ITEMS.
LAYER_ITEMS = 7
SINGLE_ITEMS = [
    "TTS_NORM", "HEAD_COND", "HEAD_MOD", "HEAD_NOISY", "HEAD_FINAL",
    "CONN_FC1", "CONN_FC1_B", "CONN_NORM", "CONN_FC2", "CONN_FC2_B",
    "TYPE_SPEECH", "TYPE_TEXT", "EOS_FC1", "EOS_FC1_B", "EOS_FC2", "EOS_FC2_B",
]  # fmt: skip
PER_HEAD_LAYER_ITEMS = ["HEAD_GU", "HEAD_DOWN", "HEAD_NORM"]


def on_cuda_gpu() -> bool:
    """Whether MLX computes on a CUDA GPU (where these kernels can run)."""
    return mx.default_device().type == mx.DeviceType.gpu and mx.cuda.is_available()


def _grid_blocks() -> int:
    """One block per multiprocessor (every block must be resident: see grid_sync)."""
    info = mx.device_info()
    for key in ("num_sms", "multi_processor_count", "multiprocessor_count", "sm_count"):
        if isinstance(info.get(key), int) and info[key] > 0:
            return int(info[key])
    name = str(info.get("device_name", ""))
    return 132 if any(n in name for n in ("H100", "H200", "H800", "H20")) else 48


def item_indices(cfg: VibeVoiceConfig) -> dict[str, int]:
    """Where each named item (O_<name> in the source) is in the offset table; a
    per-head-layer item's first layer (the others follow)."""
    base = (cfg.lm_layers + cfg.tts_layers) * LAYER_ITEMS
    out = {name: base + i for i, name in enumerate(SINGLE_ITEMS)}
    base += len(SINGLE_ITEMS)
    for j, name in enumerate(PER_HEAD_LAYER_ITEMS):
        out[name] = base + j * cfg.diffusion.head_layers
    return out


# The most shared memory one block of an sm_90 multiprocessor may have (227 KB).
MAX_SHARED_BYTES = 227 * 1024


def row_floats(cfg: VibeVoiceConfig) -> tuple[int, int]:
    """Floats of one row the kernels stage in shared memory for a matrix product (ROW_LM,
    ROW_FRAME in the source): a Qwen2 layer's widest input (H, or I for down), and the
    frame kernel's, which also stages the diffusion head's hidden layer (HF) for its down
    projection."""
    dec = cfg.decoder
    lm = max(dec.hidden_size, dec.intermediate_size)
    return lm, max(lm, cfg.diffusion.ffn_dim)


def unsupported(cfg: VibeVoiceConfig) -> str | None:
    """Why the kernels cannot take a model of these shapes (one line), or None when they
    can. Each condition is an assumption of engine/cuda_kernels.cu's indexing."""
    dec, head = cfg.decoder, cfg.diffusion
    H, NH, KVH, HD = dec.hidden_size, dec.num_attention_heads, dec.kv_heads, dec.dim_per_head
    I, HF, LAT = dec.intermediate_size, head.ffn_dim, cfg.acoustic_vae_dim
    warps = THREADS // 32
    row_lm, _ = row_floats(cfg)
    checks = [
        # A warp holds a head as lanes d and d + 32 (attention, rope_pair).
        (HD == 64, f"head dim {HD}, not 64"),
        # The attention writes head h at h * HD of a row of H, which o_proj (H x H) reads.
        (NH * HD == H, f"{NH} heads of {HD} do not make the hidden size {H}"),
        # Query head h reads kv head h / (NH / KVH): whole query groups.
        (KVH >= 1 and NH % KVH == 0, f"{NH} query heads in {KVH} kv heads"),
        # A product reads its input rows 8 values (16 bytes of bfloat16 weights, two float4
        # of the staged row) at a time, each row starting 16-byte aligned.
        (
            all(n % 8 == 0 for n in (H, I, HF, LAT)),
            f"sizes {H}, {I}, {HF}, {LAT} not all multiples of 8",
        ),
        # The diffusion head runs at the LM's width (cond_proj H x H, rows of H), and its
        # latent is the connector's input (LAT).
        (head.hidden_size == H, f"diffusion head width {head.hidden_size}, not {H}"),
        (head.latent_size == LAT, f"diffusion latent {head.latent_size}, not {LAT}"),
        # The DPM-Solver step gives each latent value one thread of a block.
        (LAT <= THREADS, f"latent size {LAT} over {THREADS} threads"),
        # A text window's rows: a table of 8 in the kernel, one warp each for their norms.
        (LMAX <= warps, f"text window of {LMAX} rows over {warps}"),
        # The attention's per-warp partials (max, sum, HD outputs) reuse the staged rows.
        (2 * row_lm >= warps * (2 + HD), f"staged rows of {row_lm} too small for attention"),
        # Every block resident on its multiprocessor (grid_sync): its shared memory fits.
        (
            max(frame_shared_bytes(cfg), window_shared_bytes(cfg)) <= MAX_SHARED_BYTES,
            "shared memory of a block over 227 KB",
        ),
        (cfg.lm_layers >= 1 and cfg.tts_layers >= 1, "an LM without layers"),
    ]
    return next((reason for ok, reason in checks if not ok), None)


def supported(cfg: VibeVoiceConfig) -> bool:
    """Whether the kernels can take a model of these shapes (:func:`unsupported`)."""
    return unsupported(cfg) is None


def header(cfg: VibeVoiceConfig, unroll: int = 4) -> str:
    """The kernels' source with the model's dimensions and table indices as constants;
    ``unroll``: 16-byte weight loads a lane has in flight per row (UNROLL in the source)."""
    dec, head = cfg.decoder, cfg.diffusion
    consts = {
        "H": dec.hidden_size,
        "NH": dec.num_attention_heads,
        "KVH": dec.kv_heads,
        "HD": dec.dim_per_head,
        "I": dec.intermediate_size,
        "NLM": cfg.lm_layers,
        "NTTS": cfg.tts_layers,
        "LAT": cfg.acoustic_vae_dim,
        "HF": head.ffn_dim,
        "NHL": head.head_layers,
        "NMOD": 3 * head.head_layers + 2,
        "LMAX": LMAX,
        "ROW_LM": row_floats(cfg)[0],
        "ROW_FRAME": row_floats(cfg)[1],
        "O_LAYER": LAYER_ITEMS,
        "UNROLL": unroll,
    }
    consts.update({f"O_{name}": i for name, i in item_indices(cfg).items()})
    lines = ["#pragma nv_diag_suppress 177  // constants a kernel does not use"]
    lines += [f"constexpr int {k} = {v};" for k, v in consts.items()]
    lines.append(f"constexpr float RMS_EPS = {float(dec.rms_norm_eps)!r}f;")
    lines.append(f"constexpr float HEAD_EPS = {float(head.rms_norm_eps)!r}f;")
    lines.append(f"constexpr float LOG2_THETA = {float(np.log2(dec.rope_theta))!r}f;")
    return "\n".join(lines) + "\n" + SOURCE.read_text()


@dataclass
class KernelSpec:
    """What ``mx.fast.cuda_kernel`` gets for one kernel (also compiled by the tests)."""

    name: str
    inputs: list[str]
    outputs: list[str]
    body: str
    shared_bytes: int


def frame_shared_bytes(cfg: VibeVoiceConfig) -> int:
    """Shared memory of the frame kernel: 2 staged rows, 8 norms, the solver's x, its
    previous x0 and the latent fed back (frame_body in the source)."""
    return (2 * row_floats(cfg)[1] + 8 + 3 * cfg.acoustic_vae_dim) * 4


def window_shared_bytes(cfg: VibeVoiceConfig) -> int:
    """Shared memory of the window kernel: LMAX staged rows and their norms (qwen2_layer)."""
    return (LMAX * row_floats(cfg)[0] + 8) * 4


def frame_spec(cfg: VibeVoiceConfig, steps: int, sample: bool, feed: bool) -> KernelSpec:
    smem = frame_shared_bytes(cfg)
    flags = f"{steps}, {'true' if sample else 'false'}, {'true' if feed else 'false'}"
    body = (
        f"frame_body<{flags}>((const bf16_t*)wh, wf, offs, noise, pos, neg, temb, sched, cfg,"
        " fed, kv, valid, info, info[3], (unsigned int*)state, work, latent, pos_out,"
        " neg_out, eos, newkv);"
    )
    kind = "frame" if sample and feed else "sample" if sample else "feed"
    return KernelSpec(
        f"vv_{kind}_{steps}",
        ["wh", "wf", "offs", "noise", "pos", "neg", "temb", "sched", "cfg", "fed", "kv",
         "valid", "info", "state"],
        ["work", "latent", "pos_out", "neg_out", "eos", "newkv"],
        body,
        smem,
    )  # fmt: skip


def window_spec(cfg: VibeVoiceConfig) -> KernelSpec:
    smem = window_shared_bytes(cfg)
    body = (
        "window_body((const bf16_t*)wh, wf, offs, x, lmkv, info[4], kv, valid, info[5], info,"
        " (unsigned int*)state, work, htext, htts, newkv_lm, newkv);"
    )
    return KernelSpec(
        "vv_window",
        ["wh", "wf", "offs", "x", "lmkv", "kv", "valid", "info", "state"],
        ["work", "htext", "htts", "newkv_lm", "newkv"],
        body,
        smem,
    )


def frame_scratch(cfg: VibeVoiceConfig, steps: int) -> int:
    """Floats of the frame kernel's scratch (FrameScratch in the source)."""
    dec, head = cfg.decoder, cfg.diffusion
    H, I, HF, LAT = dec.hidden_size, dec.intermediate_size, head.ffn_dim, cfg.acoustic_vae_dim
    qkv = (dec.num_attention_heads + 2 * dec.kv_heads) * dec.dim_per_head
    nmod = 3 * head.head_layers + 2
    # x, qkv, att, act, c, mods, hh, hact, v, t1 + e1 (the offsets in the source).
    return 2 * (H + qkv + H + I + steps * H + steps * nmod * H + H + HF + LAT + H)


def window_scratch(cfg: VibeVoiceConfig) -> int:
    dec = cfg.decoder
    qkv = (dec.num_attention_heads + 2 * dec.kv_heads) * dec.dim_per_head
    return LMAX * (2 * dec.hidden_size + qkv + dec.intermediate_size)


def bf16_bits(w: mx.array) -> mx.array:
    """The bfloat16 bits (uint16, same shape) of ``w``, whose every value must be a
    bfloat16 (ValueError otherwise: a product with them would not be exact)."""
    bits = w.astype(mx.float32).view(mx.uint32)
    if mx.any(bits & 0xFFFF).item():
        raise ValueError("a weight that is not a bfloat16")
    return (bits >> 16).astype(mx.uint16)


class PackedWeights:
    """Every matrix the kernels multiply with as bfloat16 bits in one uint16 array, every
    norm weight, bias and type embedding as float32 in another, and the table of where
    each starts (8-value aligned: the kernels read 16 bytes at a time)."""

    def __init__(self) -> None:
        self._h: list[mx.array] = []
        self._f: list[mx.array] = []
        self._nh = self._nf = 0
        self.offsets: list[int] = []

    def matrix(self, w: mx.array) -> None:
        flat = bf16_bits(w).reshape(-1)
        self.offsets.append(self._nh)
        pad = -flat.size % 8
        self._h.append(flat if not pad else mx.concatenate([flat, mx.zeros((pad,), mx.uint16)]))
        self._nh += flat.size + pad

    def vector(self, v: mx.array) -> None:
        flat = v.astype(mx.float32).reshape(-1)
        self.offsets.append(self._nf)
        pad = -flat.size % 8
        self._f.append(flat if not pad else mx.concatenate([flat, mx.zeros((pad,))]))
        self._nf += flat.size + pad

    def arrays(self) -> tuple[mx.array, mx.array, mx.array]:
        wh, wf = mx.concatenate(self._h), mx.concatenate(self._f)
        offs = mx.array(np.array(self.offsets, dtype=np.int64))
        mx.eval(wh, wf, offs)
        self._h, self._f = [], []
        return wh, wf, offs


def _weight(layer: nn.Module) -> mx.array:
    if not isinstance(layer, nn.Linear):  # a subclass computes its product elsewhere
        raise TypeError(f"{type(layer).__name__} is not a plain Linear")
    return layer.weight


def pack_model(model) -> tuple[mx.array, mx.array, mx.array]:
    """(wh, wf, offs) for ``model`` (engine.model.VibeVoiceRealtime); TypeError or
    ValueError for a model the kernels cannot take (quantized, not bfloat16-valued)."""
    m = model.model
    p = PackedWeights()
    for stack in (m.language_model, m.tts_language_model):
        for layer in stack.layers:
            a = layer.self_attn
            p.matrix(mx.concatenate([_weight(a.q_proj), _weight(a.k_proj), _weight(a.v_proj)]))
            p.matrix(_weight(a.o_proj))
            p.matrix(mx.concatenate([_weight(layer.mlp.gate_proj), _weight(layer.mlp.up_proj)]))
            p.matrix(_weight(layer.mlp.down_proj))
            p.vector(mx.concatenate([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            p.vector(layer.input_layernorm.weight)
            p.vector(layer.post_attention_layernorm.weight)
    head, conn, eos = m.prediction_head, m.acoustic_connector, model.tts_eos_classifier
    blocks = [*head.layers, head.final_layer]
    p.vector(m.tts_language_model.norm.weight)  # TTS_NORM
    p.matrix(_weight(head.cond_proj))  # HEAD_COND
    p.matrix(mx.concatenate([_weight(b.adaLN_modulation[1]) for b in blocks]))  # HEAD_MOD
    p.matrix(_weight(head.noisy_images_proj))  # HEAD_NOISY
    p.matrix(_weight(head.final_layer.linear))  # HEAD_FINAL
    p.matrix(_weight(conn.fc1))
    p.vector(conn.fc1.bias)
    p.vector(conn.norm.weight)
    p.matrix(_weight(conn.fc2))
    p.vector(conn.fc2.bias)
    p.vector(m.tts_input_types.weight[0])  # TYPE_SPEECH
    p.vector(m.tts_input_types.weight[1])  # TYPE_TEXT
    p.matrix(_weight(eos.fc1))
    p.vector(eos.fc1.bias)
    p.matrix(_weight(eos.fc2))
    p.vector(eos.fc2.bias)
    for layer in head.layers:  # HEAD_GU
        p.matrix(mx.concatenate([_weight(layer.ffn.gate_proj), _weight(layer.ffn.up_proj)]))
    for layer in head.layers:  # HEAD_DOWN
        p.matrix(_weight(layer.ffn.down_proj))
    for layer in head.layers:  # HEAD_NORM
        p.vector(layer.norm.weight)
    return p.arrays()


def _round_up(n: int, step: int = 256) -> int:
    return -(-n // step) * step


class StackedCaches:
    """The caches of both LMs for the CUDA kernels: the text LM's (layers, 2 (k/v), 1,
    kv heads, capacity, head dim) and the TTS LM's CFG pair (layers, 2, 2 (rows),
    kv heads, capacity, head dim), with the pair's valid columns (2, capacity), as
    ``engine.cache.CFGKVCache`` keeps them per layer (keys after RoPE; the negative row
    never sees text, so its columns of a text window stay masked)."""

    def __init__(self, voice, lm_reserve: int, tts_reserve: int) -> None:
        def stack(arrays: list[mx.array], cap: int) -> mx.array:
            a = mx.stack([x[0].astype(mx.float32) for x in arrays])  # (layers, kv, L, D)
            pad = cap - a.shape[2]
            return mx.pad(a, [(0, 0), (0, 0), (0, pad), (0, 0)])

        self.lm_offset = voice.lm_length
        lm_cap = _round_up(self.lm_offset + max(lm_reserve, 1))
        self.lm_kv = mx.stack(
            [stack(voice.lm_keys, lm_cap)[:, None], stack(voice.lm_values, lm_cap)[:, None]], 1
        )
        lp, ln = voice.tts_length, voice.neg_length
        self.column = max(lp, ln)
        self.positions = [lp, ln]
        cap = _round_up(self.column + max(tts_reserve, 1))
        keys = mx.stack([stack(voice.tts_keys, cap), stack(voice.neg_keys, cap)], 1)
        values = mx.stack([stack(voice.tts_values, cap), stack(voice.neg_values, cap)], 1)
        self.kv = mx.stack([keys, values], 1)
        cols = np.arange(cap)
        self.valid = mx.array(np.stack([cols < lp, cols < ln]))
        mx.eval(self.lm_kv, self.kv, self.valid)

    @property
    def offset(self) -> int:
        """Position of the positive row's next token (the 8192-position cap counts it)."""
        return self.positions[0]

    def reserve(self, lm: int, tts: int) -> None:
        """Room for ``lm`` more text-LM columns and ``tts`` more pair columns."""
        if self.lm_offset + lm > self.lm_kv.shape[4]:
            extra = _round_up(self.lm_offset + lm) - self.lm_kv.shape[4]
            self.lm_kv = mx.pad(self.lm_kv, [(0, 0)] * 4 + [(0, extra), (0, 0)])
        if self.column + tts > self.kv.shape[4]:
            extra = _round_up(self.column + tts) - self.kv.shape[4]
            self.kv = mx.pad(self.kv, [(0, 0)] * 4 + [(0, extra), (0, 0)])
            self.valid = mx.pad(self.valid, [(0, 0), (0, extra)])


def _check_sizes(*named: tuple[str, mx.array, int]) -> None:
    """IndexError unless each array has the number of values a kernel reads from it."""
    for name, a, size in named:
        if a.size != size:
            raise IndexError(f"{name}: {a.size} values where the kernel reads {size}")


def _check_columns(column: int, count: int, capacity: int, valid: int) -> None:
    """IndexError unless columns ``column`` to ``column + count - 1`` (written, and all
    below them read) are inside a cache of ``capacity`` columns with as many flags in its
    valid mask. Holds by construction (``StackedCaches.reserve`` grows the cache first);
    checked on Python ints, so no launch ever reads past a cache."""
    if not (0 <= column and column + count <= capacity == valid):
        raise IndexError(
            f"cache columns {column} to {column + count - 1} of {capacity} (mask {valid})"
        )


def cuda_kernel(spec: KernelSpec, src: str):
    """``spec``'s kernel as ``mx.fast.cuda_kernel`` makes it, with ``src`` as its header."""
    return mx.fast.cuda_kernel(
        name=spec.name,
        input_names=spec.inputs,
        output_names=spec.outputs,
        source=spec.body,
        header=src,
        shared_memory=spec.shared_bytes,
    )


class CudaFrames:
    """The frame backend (engine.frame_backend.FrameBackend) of one model and step count
    as CUDA kernels: the compiled kernels, the packed weights and the caches they take."""

    name = "cuda"
    decode_group = 8
    """Frames decoded together: with these kernels the MLX decoder's launches are most of
    a frame's host time, and a group of eight shares one pass of them."""

    def __init__(
        self,
        model,
        schedule: DPMSolverSchedule,
        t_emb: mx.array,
        kernel_factory=None,
        unroll: int = 4,
    ) -> None:
        """``kernel_factory(spec, header)`` makes each kernel's callable (default:
        ``mx.fast.cuda_kernel``; the tests give an emulation); ``unroll``: see
        :func:`header`."""
        cfg: VibeVoiceConfig = model.config
        reason = unsupported(cfg)
        if reason is not None:
            raise ValueError(f"shapes the CUDA kernels are not written for: {reason}")
        self.cfg = cfg
        self.steps = len(schedule.steps)
        self.wh, self.wf, self.offs = pack_model(model)
        self._embed = model.model.language_model.embed_tokens
        src = header(cfg, unroll)
        self.source = src
        make = kernel_factory or cuda_kernel
        self.blocks = _grid_blocks()
        # The kernels are compiled for self.steps rows of both schedule tables.
        if t_emb.shape[0] != self.steps:
            raise ValueError(f"{t_emb.shape[0]} timestep embeddings for {self.steps} steps")
        self.temb = t_emb.astype(mx.float32)
        self.sched = mx.array(
            np.array(
                [[s.alpha_s, s.sigma_s, s.ratio, s.c0, s.c1] for s in schedule.steps],
                dtype=np.float32,
            )
        )
        # Barrier state (arrivals, generation, error flag): lives as long as the kernels.
        self.state = mx.array(np.zeros(4, np.uint32))
        self._scratch = frame_scratch(cfg, self.steps)
        self._wscratch = window_scratch(cfg)
        self._kernels = {}
        for spec in (
            frame_spec(cfg, self.steps, True, True),
            frame_spec(cfg, self.steps, True, False),
            frame_spec(cfg, self.steps, False, True),
            window_spec(cfg),
        ):
            self._kernels[spec.name] = (make(spec, src), spec)
        self._empty_fed = mx.zeros((cfg.acoustic_vae_dim + 1,))
        mx.eval(self.temb, self.sched, self.state, self._empty_fed)

    compiled: dict[str, str] = {}
    """What :meth:`keep_compiled` did for each kernel."""
    checked_by = ""
    """What the self-check compared the kernels with: "mlx" or "record"."""

    def keep_compiled(self) -> dict[str, str]:
        """Have each kernel compiled where MLX finds it in this and later runs
        (engine.kernel_cache.precompile): what was done per kernel ("cached",
        "compiled", or why neither)."""
        info = mx.device_info()
        ptx_dir = kernel_cache.mlx_ptx_dir(mx.__version__)
        arch = kernel_cache.gpu_arch(info)
        nvrtc = kernel_cache.Nvrtc.find()
        done = {}
        for _, spec in self._kernels.values():
            done[spec.name] = kernel_cache.precompile(
                spec.name, self.source, spec.body, _kernel_inputs(spec), spec.outputs,
                ptx_dir, arch, nvrtc,
            )  # fmt: skip
        return done

    def _launch(self, name: str, inputs: list[mx.array], shapes: list[tuple]) -> list[mx.array]:
        kernel, spec = self._kernels[name]
        out = kernel(
            inputs=inputs,
            output_shapes=shapes,
            output_dtypes=[mx.float32] * len(shapes),
            grid=(self.blocks * THREADS, 1, 1),
            threadgroup=(THREADS, 1, 1),
        )
        return out

    def _frame(
        self,
        kind: str,
        noise: mx.array,
        pos: mx.array,
        neg: mx.array,
        cfg_scale: float,
        fed: mx.array,
        caches: StackedCaches | None,
    ) -> list[mx.array]:
        c = self.cfg
        H, LAT = c.decoder.hidden_size, c.acoustic_vae_dim
        # The kernel reads LAT noise values, H of each condition, LAT + 1 fed values.
        _check_sizes(("noise", noise, LAT), ("positive", pos, H), ("negative", neg, H),
                     ("fed latent", fed, LAT + 1))  # fmt: skip
        if caches is not None:
            caches.reserve(0, 1)
            kv, valid = caches.kv, caches.valid
            info = [caches.column, *caches.positions, kv.shape[4]]
            # It reads columns below the write column and writes that column.
            _check_columns(caches.column, 1, kv.shape[4], valid.shape[1])
        else:
            kv, valid, info = self._dummy_kv(), mx.zeros((2, 1), mx.bool_), [0, 0, 0, 1]
        layers, kvh, hd = c.tts_layers, c.decoder.kv_heads, c.decoder.dim_per_head
        return self._launch(
            f"vv_{kind}_{self.steps}",
            [
                self.wh, self.wf, self.offs,
                noise.astype(mx.float32).reshape(-1),
                pos.astype(mx.float32).reshape(-1),
                neg.astype(mx.float32).reshape(-1),
                self.temb, self.sched, mx.array([cfg_scale], mx.float32), fed, kv, valid,
                mx.array(info, mx.int32), self.state,
            ],
            [(self._scratch,), (1, LAT), (1, H), (1, H), (1,), (layers, 2, 2, kvh, hd)],
        )  # fmt: skip

    def _dummy_kv(self) -> mx.array:
        c = self.cfg
        return mx.zeros((c.tts_layers, 2, 2, c.decoder.kv_heads, 1, c.decoder.dim_per_head))

    @staticmethod
    def _commit_frame(caches: StackedCaches, newkv: mx.array) -> None:
        col = mx.array([caches.column], mx.int32)
        caches.kv = mx.slice_update(caches.kv, newkv[..., None, :], col, axes=(4,))
        caches.valid = mx.slice_update(caches.valid, mx.ones((2, 1), mx.bool_), col, axes=(1,))
        caches.column += 1
        caches.positions = [caches.positions[0] + 1, caches.positions[1] + 1]

    def frame(
        self,
        noise: mx.array,
        pos: mx.array,
        neg: mx.array,
        cfg_scale: float,
        caches: StackedCaches,
        teacher: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array]:
        """Sample one frame and feed it back (``teacher`` instead, when given): (latent,
        fed latent, next positive and negative conditions, EOS logit), lazy; ``caches``
        move one column on."""
        if teacher is None:
            fed = self._empty_fed
        else:
            fed = mx.concatenate([teacher.astype(mx.float32).reshape(-1), mx.ones((1,))])
        _, latent, p, n, eos, newkv = self._frame("frame", noise, pos, neg, cfg_scale, fed,
                                                  caches)  # fmt: skip
        self._commit_frame(caches, newkv)
        out = latent if teacher is None else teacher.astype(mx.float32).reshape(latent.shape)
        return latent, out, p, n, eos[0]

    def sample(self, noise: mx.array, pos: mx.array, neg: mx.array, cfg_scale: float) -> mx.array:
        """The latent (1, latent dim) of one frame from its noise and conditions, lazy."""
        out = self._frame("sample", noise, pos, neg, cfg_scale, self._empty_fed, None)
        return out[1]

    def feed(self, fed: mx.array, caches: StackedCaches) -> tuple[mx.array, mx.array, mx.array]:
        """Feed ``fed`` (1, latent) back, as :meth:`frame` does after sampling: (next
        positive and negative conditions, EOS logit), lazy; ``caches`` move one on."""
        c = self.cfg
        zeros = mx.zeros((c.decoder.hidden_size,))
        lat = mx.zeros((c.acoustic_vae_dim,))
        fed1 = mx.concatenate([fed.astype(mx.float32).reshape(-1), mx.ones((1,))])
        _, _, p, n, eos, newkv = self._frame("feed", lat, zeros, zeros, 1.0, fed1, caches)
        self._commit_frame(caches, newkv)
        return p, n, eos[0]

    def new_caches(self, voice: VoicePrompt, lm_reserve: int, tts_reserve: int) -> StackedCaches:
        """Fresh caches of both LMs seeded from ``voice``, with room for ``lm_reserve``
        text tokens and ``tts_reserve`` more TTS-LM positions (they grow beyond)."""
        return StackedCaches(voice, lm_reserve, tts_reserve)

    def window(self, tokens: mx.array, caches: StackedCaches) -> tuple[mx.array, mx.array]:
        """One text window (1, L) through the text LM and the positive TTS-LM row:
        (text LM out, TTS LM out), (1, L, hidden) each; the caches move L on."""
        return self.window_rows(self._embed(tokens)[0], caches)

    def window_rows(self, x: mx.array, caches: StackedCaches) -> tuple[mx.array, mx.array]:
        """:meth:`window` of L <= LMAX embedded tokens ``x`` (L, hidden)."""
        c = self.cfg
        L, H = x.shape[0], c.decoder.hidden_size
        # The kernel's scratch and row tables hold LMAX rows of H.
        if x.ndim != 2 or not 1 <= L <= LMAX or x.shape[1] != H:
            raise ValueError(f"a text window is 1 to {LMAX} rows of {H}, not {x.shape}")
        caches.reserve(LMAX, LMAX)
        _check_columns(caches.lm_offset, L, caches.lm_kv.shape[4], caches.lm_kv.shape[4])
        _check_columns(caches.column, L, caches.kv.shape[4], caches.valid.shape[1])
        # The kernel takes float32 rows, LMAX of them (those past L are ignored).
        xin = mx.pad(x.astype(mx.float32), [(0, LMAX - L), (0, 0)])
        kvh, hd = c.decoder.kv_heads, c.decoder.dim_per_head
        info = [L, caches.lm_offset, caches.column, caches.positions[0],
                caches.lm_kv.shape[4], caches.kv.shape[4]]  # fmt: skip
        _, htext, htts, new_lm, new_tts = self._launch(
            "vv_window",
            [self.wh, self.wf, self.offs, xin, caches.lm_kv, caches.kv, caches.valid,
             mx.array(info, mx.int32), self.state],
            [(self._wscratch,), (LMAX, H), (LMAX, H), (c.lm_layers, 2, LMAX, kvh, hd),
             (c.tts_layers, 2, LMAX, kvh, hd)],
        )  # fmt: skip
        # (layers, 2, L, kv, D) -> (layers, 2, 1, kv, L, D) at batch row 0.
        lm_upd = new_lm[:, :, :L].transpose(0, 1, 3, 2, 4)[:, :, None]
        upd = new_tts[:, :, :L].transpose(0, 1, 3, 2, 4)[:, :, None]
        caches.lm_kv = mx.slice_update(
            caches.lm_kv, lm_upd, mx.array([caches.lm_offset], mx.int32), axes=(4,)
        )
        caches.kv = mx.slice_update(
            caches.kv, upd, mx.array([0, caches.column], mx.int32), axes=(2, 4)
        )
        caches.valid = mx.slice_update(
            caches.valid, mx.ones((1, L), mx.bool_), mx.array([0, caches.column], mx.int32),
            axes=(0, 1),
        )  # fmt: skip
        caches.lm_offset += L
        caches.column += L
        caches.positions = [caches.positions[0] + L, caches.positions[1]]
        return htext[None, :L], htts[None, :L]

    def failed(self) -> bool:
        """Whether a barrier ever gave up (the kernels' results are then not to be used)."""
        return bool(np.array(self.state)[2])


def build(
    model, mlx_frames: MLXFrames, unroll: int = 4, cache_dir: Path | None = None
) -> CudaFrames | None:
    """:class:`CudaFrames` for ``model`` when the kernels can take it and agree with
    ``mlx_frames`` (:func:`check_against_mlx`), else None: with a warning saying why, for
    anything but quantized or not bfloat16-valued weights. The compiled kernels and the
    self-check's results are kept in ``cache_dir`` (default: engine.kernel_cache's folder)
    for the next start."""
    reason = unsupported(model.config)
    if reason is not None:  # never launched: they would index past their buffers
        warnings.warn(f"CUDA frame kernels not written for this model ({reason}); using MLX's",
                      stacklevel=2)  # fmt: skip
        return None
    try:
        cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb, unroll=unroll)
    except (TypeError, ValueError):
        return None  # quantized or not bfloat16-valued: the MLX functions
    except RuntimeError as e:  # no CUDA headers, a compile error, ...
        warnings.warn(f"CUDA frame kernels unavailable ({e}); using MLX's", stacklevel=2)
        return None
    folder = cache_dir if cache_dir is not None else kernel_cache.engine_cache_dir()
    cuda.compiled = cuda.keep_compiled()
    try:
        ok = check_against_mlx(cuda, mlx_frames, record=self_check_record(cuda, folder))
    except RuntimeError as e:  # a kernel that does not compile or load
        warnings.warn(f"CUDA frame kernels unavailable ({e}); using MLX's", stacklevel=2)
        return None
    return cuda if ok else None


# Types of the kernels' inputs other than float32, as MLX names them (mlx.core.Dtype).
INPUT_DTYPES = {"wh": "uint16", "offs": "int64", "valid": "bool_", "info": "int32",
                "state": "uint32"}  # fmt: skip


def _kernel_inputs(spec: KernelSpec) -> list[tuple[str, str]]:
    return [(n, INPUT_DTYPES.get(n, "float32")) for n in spec.inputs]


def self_check_record(cuda: CudaFrames, folder: Path) -> kernel_cache.CheckRecord:
    """Where the results of ``cuda``'s self-check are kept: keyed by what decides them."""
    info = mx.device_info()
    parts = {
        "format": 1,
        "source": hashlib.sha256(cuda.source.encode()).hexdigest(),
        "kernels": [(s.name, s.body, s.shared_bytes) for _, s in cuda._kernels.values()],
        "grid": (cuda.blocks, THREADS),
        "device": (info.get("device_name"), info.get("architecture")),
        "mlx": mx.__version__,
        # The model's norms, biases and schedule (its matrices: the check's results).
        "vectors": hashlib.sha256(np.array(cuda.wf).tobytes()).hexdigest(),
        "schedule": hashlib.sha256(
            np.array(cuda.temb).tobytes() + np.array(cuda.sched).tobytes()
        ).hexdigest(),
        "sizes": (cuda.wh.size, cuda.wf.size, np.array(cuda.offs).tolist()),
    }
    return kernel_cache.CheckRecord(folder, kernel_cache.CheckRecord.key(parts))


def self_check_token_ids(vocab_size: int) -> list[int]:
    """The text window :func:`check_against_mlx` embeds: LMAX ids spread over the model's
    vocabulary, always the same for one vocabulary size (rows of its embedding table)."""
    return [int(i) for i in np.random.default_rng(7).integers(0, vocab_size, LMAX)]


def self_check_outputs(frames, cfg: VibeVoiceConfig) -> dict[str, np.ndarray]:
    """What frame backend ``frames`` gives on the self-check's synthetic prompt, in order:
    a text window, a sampled frame, a sample, a frame fed a given latent, then a second
    frame on the caches they left. Every input is the same for every backend."""
    dec = cfg.decoder
    kvh, hd, H, LAT = dec.kv_heads, dec.dim_per_head, dec.hidden_size, cfg.acoustic_vae_dim
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> mx.array:
        return mx.array(rng.standard_normal(shape, dtype=np.float32))

    class Prompt:  # the VoicePrompt fields the caches read
        lm_keys = [rand(1, kvh, 30, hd) for _ in range(cfg.lm_layers)]
        lm_values = [rand(1, kvh, 30, hd) for _ in range(cfg.lm_layers)]
        tts_keys = [rand(1, kvh, 40, hd) for _ in range(cfg.tts_layers)]
        tts_values = [rand(1, kvh, 40, hd) for _ in range(cfg.tts_layers)]
        neg_keys = [rand(1, kvh, 3, hd) for _ in range(cfg.tts_layers)]
        neg_values = [rand(1, kvh, 3, hd) for _ in range(cfg.tts_layers)]
        lm_length, tts_length, neg_length = 30, 40, 3

    caches = frames.new_caches(Prompt(), 16, 16)
    tokens = mx.array([self_check_token_ids(dec.vocab_size)])
    pos, neg, noise, fed = rand(1, H), rand(1, H), rand(1, LAT), rand(1, LAT)
    out: dict[str, mx.array] = {}
    out["window text LM"], out["window TTS LM"] = frames.window(tokens, caches)
    first = frames.frame(noise, pos, neg, 1.5, caches)
    for name, value in zip(("latent", "fed", "positive", "negative", "EOS"), first, strict=True):
        out[f"frame {name}"] = value
    out["sample"] = frames.sample(noise, pos, neg, 1.5)
    for name, value in zip(("positive", "negative", "EOS"), frames.feed(fed, caches),
                           strict=True):  # fmt: skip
        out[f"fed {name}"] = value
    second = frames.frame(noise, first[2], first[3], 2.0, caches)
    for name, i in (("latent", 0), ("positive", 2), ("EOS", 4)):
        out[f"second frame {name}"] = second[i]
    return {k: np.array(v.astype(mx.float32)) for k, v in out.items()}


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    if got.shape != want.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale
    return err if np.isfinite(err) else float("inf")


RECORD_TOLERANCE = 1e-6
"""How far the kernels may be from their recorded self-check (they compute in a fixed
order: on the same GPU and grid they give the same values)."""


def self_check_tolerance(dtype: mx.Dtype) -> float:
    """How far the kernels (float32 arithmetic on the bfloat16 weights) may be from MLX
    functions computing in ``dtype``, relative to a quantity's largest value: a float32
    reference agrees to ~1e-5; a bfloat16 one rounds every activation to 8 bits (~1e-2
    after a few layers). A wrong kernel is off by about the quantity itself."""
    return 2e-3 if dtype == mx.float32 else 5e-2


def check_against_mlx(
    cuda: CudaFrames,
    mlx_frames: MLXFrames,
    tolerance: float | None = None,
    record: kernel_cache.CheckRecord | None = None,
) -> bool:
    """Whether ``cuda`` gives what ``mlx_frames`` gives on a synthetic prompt
    (:func:`self_check_outputs`). A warning names the first quantity off by more than
    ``tolerance`` (relative to its largest value; default: :func:`self_check_tolerance`
    of the MLX functions' dtype); ``cuda.check_errors`` keeps every
    quantity's error. With a ``record`` of an earlier check that passed for the same
    kernels, GPU and model, the kernels' results are compared with it instead, and the
    MLX functions do not run (``cuda.checked_by`` says which: "mlx" or "record")."""
    got = self_check_outputs(cuda, cuda.cfg)
    if cuda.failed():
        if record is not None:
            record.forget()
        warnings.warn("CUDA frame kernels: a grid barrier timed out; using MLX's", stacklevel=3)
        return False
    recorded = record.load() if record is not None else None
    if recorded is not None and set(recorded) == {*got, *(f"error {k}" for k in got)}:
        if all(_relative_error(v, recorded[k]) <= RECORD_TOLERANCE for k, v in got.items()):
            cuda.check_errors = [(k, float(recorded[f"error {k}"])) for k in got]
            cuda.checked_by = "record"
            return True
    if tolerance is None:
        tolerance = self_check_tolerance(mlx_frames.dtype)
    want = self_check_outputs(mlx_frames, cuda.cfg)
    errors = [(k, _relative_error(got[k], want[k])) for k in want]
    cuda.check_errors = errors
    cuda.checked_by = "mlx"
    bad = [(n, e) for n, e in errors if not e <= tolerance]
    if bad:
        if record is not None:
            record.forget()
        warnings.warn(
            f"CUDA frame kernels disagree with MLX ({bad[0][0]}: {bad[0][1]:.2e}); using MLX's",
            stacklevel=3,
        )
        return False
    if record is not None:
        record.save({**got, **{f"error {k}": np.array(e) for k, e in errors}})
    return True
