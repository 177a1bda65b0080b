"""Products with the model's weights on an NVIDIA GPU's tensor cores, as accurate as
float32 (engine/cuda_gemm.cu).

MLX computes a float32 product on the GPU's float32 units (TF32 is off: engine.backend),
which bounds every batch of many utterances: the LM steps, the diffusion head and above
all the decoder are products of hundreds to millions of rows. The checkpoint's weights
are bfloat16 values, which the tensor cores multiply exactly; the activations are split
into three bfloat16 parts that carry all of a float32's bits, and the three products are
added in float32. :func:`use_tensor_cores` puts that product under every ``nn.Linear`` and
stacked projection (``engine.layers.Fused``) whose shapes the kernel takes, and under the
decoder's FFNs with their GELU and residual add done as the products are written (each
otherwise a pass over millions of values a batch).

Chosen by engine.generate.FrameKernels when MLX runs on a CUDA GPU;
``VVREADER_TENSOR_CORES=0`` keeps MLX's products (engine/switches.py).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_map_with_path

from engine import kernel_cache
from engine.acoustic import Block1D, FeedForward
from engine.cuda_frame import KernelSpec, bf16_bits, cuda_kernel, on_cuda_gpu
from engine.layers import Fused, fused_or_none
from engine.switches import Switches

SOURCE = Path(__file__).with_name("cuda_gemm.cu")
THREADS = 256
TILE_X, TILE_W, TILE_K = 128, 128, 32
# Shared memory: three parts of TILE_X staged rows of X, then TILE_W of W, 20 words each.
SHARED_BYTES = (3 * TILE_X + TILE_W) * 20 * 4
# Fewer rows than this keep MLX's product: a smaller product does not fill the GPU with
# tiles, and is bound by reading the weight, which MLX does as fast (measured on an H100).
MIN_ROWS = 1024
INPUTS = [("x", "float32"), ("w", "uint16"), ("bias", "float32"), ("r", "float32"),
          ("gamma", "float32"), ("dims", "int32")]  # fmt: skip
OUTPUTS = ["y"]
EPILOGUES = {"bias": "EPI_BIAS", "gelu": "EPI_GELU", "residual": "EPI_RESIDUAL"}
"""What the kernel does with a product before writing it (gemm_body in the source): add
the bias; add it and take the decoder's exact GELU; add it, scale by gamma and add R."""


def kernel_spec(epilogue: str) -> KernelSpec:
    body = (
        f"gemm_body<{EPILOGUES[epilogue]}>(x, (const unsigned short*)w, bias, r, gamma, dims, y);"
    )
    name = "vv_gemm" if epilogue == "bias" else f"vv_gemm_{epilogue}"
    return KernelSpec(name, [n for n, _ in INPUTS], OUTPUTS, body, SHARED_BYTES)


def takes(n: int, k: int) -> bool:
    """Whether the kernel takes a weight of ``n`` rows of ``k``: it reads K in steps of
    TILE_K, and writes pairs of outputs from 8-aligned columns."""
    return n >= 8 and n % 8 == 0 and k >= TILE_K and k % TILE_K == 0


class TensorCoreProduct:
    """``epilogue(x @ w.T + bias)`` of float32 rows ``x`` and a weight's bfloat16 bits
    ``w`` (EPILOGUES)."""

    def __init__(self, kernel_factory=None, min_rows: int = MIN_ROWS) -> None:
        """``kernel_factory(spec, header)`` makes each kernel's callable (default:
        ``mx.fast.cuda_kernel``, as engine.cuda_frame does; the tests give one that runs
        it on the CPU); products of fewer than ``min_rows`` rows keep MLX's."""
        self.source = SOURCE.read_text()
        make = kernel_factory or cuda_kernel
        self.specs = {e: kernel_spec(e) for e in EPILOGUES}
        self.kernels = {e: make(spec, self.source) for e, spec in self.specs.items()}
        self.min_rows = min_rows
        self._none = mx.zeros((1,), mx.float32)

    def worth(self, x: mx.array) -> bool:
        """Whether rows ``x`` (..., K) are enough for the kernel (``min_rows``)."""
        return x.size // x.shape[-1] >= self.min_rows

    def keep_compiled(self) -> dict[str, str]:
        """Have the kernels compiled where MLX finds them in this and later runs
        (engine.kernel_cache.precompile): per kernel "cached", "compiled", or why neither."""
        ptx = kernel_cache.mlx_ptx_dir(mx.__version__)
        arch = kernel_cache.gpu_arch(mx.device_info())
        return {
            spec.name: kernel_cache.precompile(
                spec.name, self.source, spec.body, INPUTS, OUTPUTS, ptx, arch
            )  # fmt: skip
            for spec in self.specs.values()
        }

    def __call__(
        self,
        x: mx.array,
        w: mx.array,
        bias: mx.array | None = None,
        epilogue: str = "bias",
        residual: mx.array | None = None,
        gamma: mx.array | None = None,
    ) -> mx.array:
        """(..., K) float32 rows times ``w`` (N, K) bfloat16 bits: (..., N) float32; with
        ``epilogue`` "residual", ``residual`` (..., N) + ``gamma`` (N) times that."""
        N, K = w.shape
        if x.shape[-1] != K or not takes(N, K):
            raise ValueError(f"rows of {x.shape[-1]} against a weight of {w.shape}")
        lead = x.shape[:-1]
        M = int(np.prod(lead)) if lead else 1
        bias = mx.zeros((N,), mx.float32) if bias is None else bias.astype(mx.float32)
        if bias.shape != (N,):
            raise ValueError(f"a bias of {bias.shape} for {N} outputs")
        if epilogue == "residual":
            if residual is None or gamma is None or residual.shape != (*lead, N):
                raise ValueError(f"a residual of {lead + (N,)} and a gamma of {N} needed")
            if gamma.shape != (N,):
                raise ValueError(f"a gamma of {gamma.shape} for {N} outputs")
            r, g = residual.astype(mx.float32).reshape(M, N), gamma.astype(mx.float32)
        else:
            r = g = self._none
        (y,) = self.kernels[epilogue](
            inputs=[x.astype(mx.float32).reshape(M, K), w, bias, r, g,
                    mx.array([M, N, K], mx.int32)],
            output_shapes=[(M, N)],
            output_dtypes=[mx.float32],
            grid=(-(-M // TILE_X) * THREADS, -(-N // TILE_W), 1),
            threadgroup=(THREADS, 1, 1),
        )  # fmt: skip
        return y.reshape(*lead, N)


class TensorCoreLinear(nn.Linear):
    """An ``nn.Linear`` (the same ``weight`` and ``bias``, for everything that reads them)
    whose product runs on the tensor cores."""

    def __init__(self, linear: nn.Linear, product: TensorCoreProduct) -> None:
        n, k = linear.weight.shape
        super().__init__(k, n, bias="bias" in linear)
        self.weight = linear.weight
        if "bias" in linear:
            self.bias = linear.bias
        # Private: not a parameter (never saved, never counted as the model's).
        self._bits = bf16_bits(self.weight)
        self._product = product

    def __call__(self, x: mx.array) -> mx.array:
        return _linear(self._product, x, self.weight, self._bits, self.get("bias"))


def _linear(
    product: TensorCoreProduct, x: mx.array, w: mx.array, bits: mx.array, bias: mx.array | None
) -> mx.array:
    """``x @ w.T + bias``: on the tensor cores from ``product.min_rows`` rows, else MLX's."""
    if product.worth(x):
        return product(x, bits, bias)
    return x @ w.T if bias is None else mx.addmm(bias, x, w.T)


class TensorCoreFeedForward(FeedForward):
    """The decoder's FFN (the same two Linear layers) with both products on the tensor
    cores, the GELU done by the first and the block's residual add by the second."""

    def __init__(self, ffn: FeedForward, product: TensorCoreProduct) -> None:
        nn.Module.__init__(self)
        self.linear1, self.linear2 = ffn.linear1, ffn.linear2
        self._bits1 = bf16_bits(self.linear1.weight)
        self._bits2 = bf16_bits(self.linear2.weight)
        self._product = product

    def _hidden(self, h: mx.array) -> mx.array:
        return self._product(h, self._bits1, self.linear1.get("bias"), "gelu")

    def __call__(self, h: mx.array) -> mx.array:
        if not self._product.worth(h):
            return super().__call__(h)
        return self._product(self._hidden(h), self._bits2, self.linear2.get("bias"))

    def add_to(self, x: mx.array, h: mx.array, gamma: mx.array) -> mx.array:
        if not self._product.worth(h):
            return super().add_to(x, h, gamma)
        u = self._hidden(h)
        return self._product(u, self._bits2, self.linear2.get("bias"), "residual", x, gamma)


def _fused_product(fused: Fused, product: TensorCoreProduct):
    bits = bf16_bits(fused.weight)

    def run(x: mx.array) -> mx.array:
        return _linear(product, x, fused.weight, bits, fused.bias)

    return run


def _wanted(w: mx.array) -> bool:
    return w.ndim == 2 and w.dtype == mx.float32 and takes(*w.shape)


def use_tensor_cores(model: nn.Module, product: TensorCoreProduct) -> int:
    """Run the products of ``model``'s stacked projections (``engine.layers.Fused``), the
    decoder's FFNs (with their GELU and residual add) and its other plain float32
    ``nn.Linear`` layers on the tensor cores, where the kernel takes their shapes and their
    weights are bfloat16 values; returns how many products were given the kernel.
    Quantized layers and the rest keep MLX's product. Idempotent."""
    count = 0
    taken: set[int] = set()  # Linear layers whose product runs elsewhere
    for _, module in model.named_modules():
        for value in vars(module).values():
            if isinstance(value, Fused) and (fused := fused_or_none(value)) is not None:
                taken.update(id(layer) for layer in fused.layers)
                if fused.product is None and _wanted(fused.weight):
                    try:
                        fused.product = _fused_product(fused, product)
                    except ValueError:
                        continue
                    count += 1
        ffn = module.get("ffn") if isinstance(module, Block1D) else None
        if type(ffn) is FeedForward:
            linears = (ffn.linear1, ffn.linear2)
            if all(type(m) is nn.Linear and _wanted(m.weight) for m in linears):
                try:
                    module.ffn = TensorCoreFeedForward(ffn, product)
                except ValueError:
                    continue
                taken.update(id(m) for m in linears)
                count += 2
        elif isinstance(ffn, TensorCoreFeedForward):
            taken.update(id(m) for m in (ffn.linear1, ffn.linear2))

    def swap(_path: str, m: nn.Module) -> nn.Module:
        nonlocal count
        # A stacked layer's own product no longer runs; a subclass is already swapped.
        if type(m) is not nn.Linear or id(m) in taken or not _wanted(m.weight):
            return m
        try:
            out = TensorCoreLinear(m, product)
        except ValueError:
            return m
        count += 1
        return out

    leaves = tree_map_with_path(swap, model.leaf_modules(), is_leaf=nn.Module.is_module)
    model.update_modules(leaves)
    return count


def check(product: TensorCoreProduct, tolerance: float = 1e-5) -> str | None:
    """Why ``product`` cannot be used (a compile or launch error, or any epilogue's
    results off by more than ``tolerance`` relative to float64's), or None when it agrees."""
    rng = np.random.default_rng(3)
    M, N, K = 150, 136, 96  # rows and columns past whole tiles, three steps of K
    x = rng.standard_normal((M, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    w = (w.view(np.uint32) & 0xFFFF0000).view(np.float32)  # bfloat16 values
    b, gamma = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    r = rng.standard_normal((M, N)).astype(np.float32)
    v = x.astype(np.float64) @ w.astype(np.float64).T + b
    wants = {
        "bias": v,
        "gelu": 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0))),
        "residual": r + gamma.astype(np.float64) * v,
    }
    bits = bf16_bits(mx.array(w))
    for epilogue, want in wants.items():
        try:
            got = np.array(product(mx.array(x), bits, mx.array(b), epilogue, mx.array(r),
                                   mx.array(gamma)))  # fmt: skip
        except (RuntimeError, ValueError) as e:
            return f"the kernel did not run ({e})"
        err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        if not err <= tolerance:
            return f"{epilogue}: off by {err:.1e} against float64"
    return None


def tensor_core_product(kernel_factory=None) -> TensorCoreProduct | None:
    """The tensor-core product when its kernel builds and agrees with float64 on a test
    product, else None with a warning saying why (MLX's products are then used)."""
    try:
        product = TensorCoreProduct(kernel_factory)
    except (OSError, RuntimeError) as e:  # the source missing from the install, ...
        warnings.warn(f"tensor-core products unavailable ({e}); using MLX's", stacklevel=2)
        return None
    if kernel_factory is None:
        product.keep_compiled()
    reason = check(product)
    if reason is not None:
        warnings.warn(f"tensor-core products: {reason}; using MLX's", stacklevel=2)
        return None
    return product


def tensor_cores_for(model: nn.Module, switches: Switches) -> int:
    """:func:`use_tensor_cores` on ``model`` where MLX runs on a CUDA GPU and the switch
    allows it, when the kernel builds and agrees; the number of products given it."""
    if not switches.tensor_cores or not on_cuda_gpu():
        return 0
    # Another step count's kernels already moved them (and checked the kernel).
    moved = (TensorCoreLinear, TensorCoreFeedForward)
    if any(isinstance(m, moved) for _, m in model.named_modules()):
        return 0
    product = tensor_core_product()
    return use_tensor_cores(model, product) if product is not None else 0
