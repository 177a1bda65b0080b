"""engine/cuda_kernels.cu itself, run on the CPU: its source compiled with g++ under
AddressSanitizer and UndefinedBehaviorSanitizer, every CUDA thread a fiber of one process.
Unlike tests/engine/cuda_emulator.py (the kernels' contract in numpy), this runs their
indexing: each input, output and block's shared memory is its own allocation of exactly
the size the host gives, so any read or write past one, and any misaligned 16-byte
vector load, stops the kernel with the sanitizer's report.

What stands in for the GPU (prepended to the kernels' source; the three definitions of
the source that need a GPU are replaced):
- threads: ``ucontext`` fibers, one per thread of every block, run in turn until each
  reaches a barrier; ``__syncthreads`` waits for the block, ``grid_sync`` for the grid;
  a barrier that not every thread reaches is reported as a deadlock;
- ``warp_sum``: the lanes' values through a per-warp slot and a warp barrier, summed in
  the butterfly order of ``__shfl_xor_sync`` (every lane gets its own rounding, as there);
- ``extern __shared__``: a block's buffer of the kernel spec's shared bytes, filled with
  NaN, as are the outputs (uninitialised memory read shows in the results).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

from engine.cuda_frame import THREADS, KernelSpec

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "cuda-on-cpu"
# Element types of the kernels' inputs (as mx.fast.cuda_kernel declares them).
INPUT_TYPES = {"wh": "uint16_t", "offs": "int64_t", "valid": "bool", "info": "int32_t",
               "state": "uint32_t", "w": "uint16_t", "dims": "int32_t"}  # fmt: skip

# Both sanitizers stop at their first report; alignment covers the 16-byte vector loads.
FLAGS = ["-std=c++17", "-O1", "-g", "-fno-strict-aliasing", "-Wno-unknown-pragmas",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer"]  # fmt: skip

PRELUDE = r"""
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <ucontext.h>

#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__ __restrict

struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }

struct Dim { unsigned int x, y, z; };
struct Barrier { unsigned count = 0, expected = 0, gen = 0; };
struct Fiber {
  ucontext_t ctx;
  Dim tid;
  unsigned block, parity = 0;
  int state = 0;  // 0 runnable, 1 waiting, 2 done
  Barrier* waiting_on = nullptr;
  unsigned wait_gen = 0;
  std::vector<char> stack;
};
// A fiber's stack: ASan clears its shadow at each switch, so small is fast; a launch
// fails when a thread used more than half of it (no guard page below it).
static const size_t VV_STACK = 32 * 1024;
static ucontext_t vv_sched;
static Fiber* vv_cur;
static Dim vv_grid;
static std::vector<Barrier> vv_block_bar, vv_warp_bar;
static Barrier vv_grid_bar;
static std::vector<float*> vv_smem_of;
static std::vector<float> vv_slots;  // [block][warp][parity][lane]
struct MmaSlot { unsigned int a[32][4], b[32][2]; };
static std::vector<MmaSlot> vv_mma_slots;  // [block][warp][parity]
static std::function<void()> vv_body;

#define threadIdx (vv_cur->tid)
#define blockIdx (Dim{vv_cur->block % vv_grid.x, vv_cur->block / vv_grid.x, 0})
#define gridDim vv_grid

static void vv_arrive(Barrier& b) {
  if (++b.count == b.expected) {
    b.count = 0;
    b.gen++;
    return;
  }
  Fiber* f = vv_cur;
  f->waiting_on = &b;
  f->wait_gen = b.gen;
  f->state = 1;
  swapcontext(&f->ctx, &vv_sched);
}
inline void __syncthreads() { vv_arrive(vv_block_bar[vv_cur->block]); }
static float* vv_smem() { return vv_smem_of[vv_cur->block]; }

static float vv_warp_sum(float v) {
  Fiber* f = vv_cur;
  const unsigned w = f->tid.x >> 5, lane = f->tid.x & 31;
  const size_t warps = NT / 32;
  float* slot = &vv_slots[((f->block * warps + w) * 2 + f->parity) * 32];
  f->parity ^= 1;
  slot[lane] = v;
  vv_arrive(vv_warp_bar[f->block * warps + w]);
  float t[32], n[32];
  memcpy(t, slot, sizeof t);
  for (int o = 16; o > 0; o >>= 1) {
    for (int i = 0; i < 32; i++) n[i] = t[i] + t[i ^ o];
    memcpy(t, n, sizeof t);
  }
  return t[lane];
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 of one warp: each lane gives its
// fragments of A (16 x 16) and B (16 x 8) in the PTX ISA's layout (a register holds two
// bfloat16 of consecutive k, the lower k in the low half; g = lane / 4, t = lane % 4:
// A's registers hold rows g, g + 8, g, g + 8 at k 2t, 2t, 2t + 8, 2t + 8; B's k 2t and
// 2t + 8 of column g) and gets D's rows g and g + 8 at columns 2t, 2t + 1.
static float vv_bf16(unsigned int pair, int high) {
  return __uint_as_float(high ? pair & 0xffff0000u : pair << 16);
}
static void vv_mma_bf16(float* d, const unsigned int* a, const unsigned int* b) {
  Fiber* f = vv_cur;
  const unsigned w = f->tid.x >> 5, lane = f->tid.x & 31;
  const size_t warps = NT / 32;
  MmaSlot& slot = vv_mma_slots[(f->block * warps + w) * 2 + f->parity];
  f->parity ^= 1;
  memcpy(slot.a[lane], a, sizeof slot.a[lane]);
  memcpy(slot.b[lane], b, sizeof slot.b[lane]);
  vv_arrive(vv_warp_bar[f->block * warps + w]);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; l++) {
    const int g = l >> 2, t = l & 3;
    for (int h = 0; h < 2; h++) {
      A[g][2 * t + h] = vv_bf16(slot.a[l][0], h);
      A[g + 8][2 * t + h] = vv_bf16(slot.a[l][1], h);
      A[g][2 * t + 8 + h] = vv_bf16(slot.a[l][2], h);
      A[g + 8][2 * t + 8 + h] = vv_bf16(slot.a[l][3], h);
      B[2 * t + h][g] = vv_bf16(slot.b[l][0], h);
      B[2 * t + 8 + h][g] = vv_bf16(slot.b[l][1], h);
    }
  }
  const int g = lane >> 2, t = lane & 3;
  for (int e = 0; e < 4; e++) {
    const int row = g + (e >> 1) * 8, col = 2 * t + (e & 1);
    float sum = d[e];
    for (int k = 0; k < 16; k++) sum += A[row][k] * B[k][col];
    d[e] = sum;
  }
}

static void vv_trampoline() {
  vv_body();
  vv_cur->state = 2;
  swapcontext(&vv_cur->ctx, &vv_sched);
}

static int vv_launch(unsigned gx, unsigned gy, size_t shared_bytes, std::function<void()> body) {
  const unsigned nt = NT, warps = NT / 32, blocks = gx * gy;
  vv_grid = {gx, gy, 1};
  vv_body = body;
  vv_block_bar.assign(blocks, Barrier{0, nt, 0});
  vv_warp_bar.assign(blocks * warps, Barrier{0, 32, 0});
  vv_grid_bar = Barrier{0, blocks * nt, 0};
  vv_slots.assign((size_t)blocks * warps * 2 * 32, 0.f);
  vv_mma_slots.assign((size_t)blocks * warps * 2, MmaSlot{});
  vv_smem_of.assign(blocks, nullptr);
  for (unsigned b = 0; b < blocks; b++) {
    vv_smem_of[b] = (float*)malloc(shared_bytes ? shared_bytes : 1);
    memset(vv_smem_of[b], 0xff, shared_bytes);
  }
  std::vector<Fiber> fibers(blocks * nt);
  for (unsigned i = 0; i < fibers.size(); i++) {
    Fiber& f = fibers[i];
    f.tid = {i % nt, 0, 0};
    f.block = i / nt;
    f.stack.assign(VV_STACK, (char)0xa5);  // painted: the deepest use is checked after
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, vv_trampoline, 0);
  }
  for (;;) {
    bool progress = false, left = false;
    for (Fiber& f : fibers) {
      if (f.state == 2) continue;
      left = true;
      if (f.state == 1 && f.waiting_on->gen == f.wait_gen) continue;
      f.state = 0;
      vv_cur = &f;
      swapcontext(&vv_sched, &f.ctx);
      progress = true;
    }
    if (!left) break;
    if (!progress) {
      fprintf(stderr, "DEADLOCK: a barrier that not every thread reaches\n");
      return 3;
    }
  }
  for (float* p : vv_smem_of) free(p);
  size_t deepest = 0;
  for (Fiber& f : fibers) {
    size_t untouched = 0;
    while (untouched < f.stack.size() && f.stack[untouched] == (char)0xa5) untouched++;
    deepest = deepest > f.stack.size() - untouched ? deepest : f.stack.size() - untouched;
  }
  if (deepest > VV_STACK / 2) {
    fprintf(stderr, "STACK: a thread used %zu of its %zu stack bytes\n", deepest, VV_STACK);
    return 4;
  }
  return 0;
}
"""

GRID_SYNC = """__device__ __forceinline__ bool grid_sync(unsigned int* state) {
  (void)state;
  __syncthreads();
  vv_arrive(vv_grid_bar);
  return true;
}
"""
WARP_SUM = """__device__ __forceinline__ float warp_sum(float v) { return vv_warp_sum(v); }
"""
MMA = """__device__ __forceinline__ void mma_bf16_16816(float* d, const unsigned int* a,
                                               const unsigned int* b) {
  vv_mma_bf16(d, a, b);
}
"""
# What each GPU-only function of a source becomes here (the ones it has).
REPLACEMENTS = {
    "__device__ __forceinline__ bool grid_sync(": GRID_SYNC,
    "__device__ __forceinline__ float warp_sum(": WARP_SUM,
    "__device__ __forceinline__ void mma_bf16_16816(": MMA,
}


def _replace_function(src: str, signature: str, replacement: str) -> str:
    """``src`` with the function starting at ``signature`` (up to its closing brace at
    the start of a line) replaced."""
    start = src.index(signature)
    end = src.index("\n}\n", start) + 3
    return src[:start] + replacement + src[end:]


def cpu_source(spec: KernelSpec, header: str) -> str:
    """The C++ program that runs ``spec``'s kernel: the prelude, the header adapted, the
    kernel as a function, and a main that reads inputs and writes outputs as files."""
    src = header
    for signature, replacement in REPLACEMENTS.items():
        if signature in src:
            src = _replace_function(src, signature, replacement)
    src, n = re.subn(r"extern __shared__ float (\w+)\[\];", r"float* \1 = vv_smem();", src)
    assert n >= 1, "the kernels' shared memory declaration moved"
    # The prelude needs the threads of a block (NT) first; a source without them (the
    # tensor-core product) runs blocks of the same size.
    if "#define NT " not in src:
        src = f"#define NT {THREADS}\n#define NW (NT / 32)\n" + src
    threads = re.search(r"#define NT (\d+)", src)
    assert threads and int(threads.group(1)) == THREADS
    params = [f"const {INPUT_TYPES.get(n, 'float')}* {n}" for n in spec.inputs]
    params += [f"float* {n}" for n in spec.outputs]
    args = [f"(const {INPUT_TYPES.get(n, 'float')}*)in[{i}]" for i, n in enumerate(spec.inputs)]
    args += [f"(float*)out[{i}]" for i in range(len(spec.outputs))]
    main = f"""
static void vv_kernel({", ".join(params)}) {{
{spec.body}
}}

static void* vv_read(const char* path, size_t* size) {{
  FILE* f = fopen(path, "rb");
  if (!f) {{ perror(path); exit(2); }}
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  void* p = malloc(*size ? *size : 1);
  if (*size && fread(p, 1, *size, f) != *size) exit(2);
  fclose(f);
  return p;
}}

int main(int argc, char** argv) {{
  // argv: folder (in<i>.bin, out<i>.size; out<i>.bin written), blocks in x, in y,
  // shared bytes
  const char* dir = argv[1];
  const unsigned gx = (unsigned)atoi(argv[2]), gy = (unsigned)atoi(argv[3]);
  const size_t shared = (size_t)atol(argv[4]);
  char path[4096];
  void* in[{len(spec.inputs)}];
  void* out[{len(spec.outputs)}];
  size_t out_size[{len(spec.outputs)}];
  for (int i = 0; i < {len(spec.inputs)}; i++) {{
    size_t n;
    snprintf(path, sizeof path, "%s/in%d.bin", dir, i);
    in[i] = vv_read(path, &n);
  }}
  for (int i = 0; i < {len(spec.outputs)}; i++) {{
    snprintf(path, sizeof path, "%s/out%d.size", dir, i);
    FILE* f = fopen(path, "r");
    if (!f || fscanf(f, "%zu", &out_size[i]) != 1) exit(2);
    fclose(f);
    out[i] = malloc(out_size[i] ? out_size[i] : 1);
    memset(out[i], 0xff, out_size[i]);
  }}
  const int rc = vv_launch(gx, gy, shared, [&] {{ vv_kernel({", ".join(args)}); }});
  if (rc) return rc;
  for (int i = 0; i < {len(spec.outputs)}; i++) {{
    snprintf(path, sizeof path, "%s/out%d.bin", dir, i);
    FILE* f = fopen(path, "wb");
    if (!f || fwrite(out[i], 1, out_size[i], f) != out_size[i]) exit(2);
    fclose(f);
    free(out[i]);
  }}
  for (void* p : in) free(p);
  return 0;
}}
"""
    # The prelude's NT-sized tables come after the source's #define NT.
    head, sep, rest = src.partition("#define NW (NT / 32)\n")
    assert sep, "the kernels' NT / NW definitions moved"
    return head + sep + PRELUDE + rest + main


def compile_cpu(spec: KernelSpec, header: str) -> Path:
    """The sanitized executable of ``spec`` (built once per source, kept in .cache)."""
    src = cpu_source(spec, header)
    digest = hashlib.sha256("\n".join([*FLAGS, src]).encode()).hexdigest()[:16]
    exe = CACHE / f"{spec.name}-{digest}"
    if exe.is_file():
        return exe
    CACHE.mkdir(parents=True, exist_ok=True)
    cpp = exe.with_suffix(".cpp")
    cpp.write_text(src)
    cmd = ["g++", *FLAGS, str(cpp), "-o", str(exe) + ".tmp"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"g++ failed on {spec.name}:\n{proc.stderr[-4000:]}")
    os.replace(str(exe) + ".tmp", exe)
    return exe


class KernelError(RuntimeError):
    """The kernel read or wrote out of range (the sanitizer's report), or deadlocked."""


class CpuKernel:
    """One kernel spec as a callable with ``mx.fast.cuda_kernel``'s call, run on the CPU;
    ``shared_bytes`` replaces the spec's (to show what a too-small size does)."""

    def __init__(self, spec: KernelSpec, header: str, shared_bytes: int | None = None) -> None:
        self.spec = spec
        self.shared_bytes = spec.shared_bytes if shared_bytes is None else shared_bytes
        self.exe = compile_cpu(spec, header)

    def __call__(self, *, inputs, output_shapes, output_dtypes, grid, threadgroup, **_):
        assert tuple(threadgroup) == (THREADS, 1, 1) and grid[0] % THREADS == 0
        assert grid[2] == 1
        assert all(d == mx.float32 for d in output_dtypes)
        with tempfile.TemporaryDirectory(prefix="vv-cuda-cpu-") as tmp:
            folder = Path(tmp)
            for i, a in enumerate(inputs):
                (folder / f"in{i}.bin").write_bytes(np.ascontiguousarray(np.array(a)).tobytes())
            for i, shape in enumerate(output_shapes):
                (folder / f"out{i}.size").write_text(str(4 * int(np.prod(shape))))
            env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:halt_on_error=1")
            proc = subprocess.run(
                [str(self.exe), str(folder), str(grid[0] // THREADS), str(grid[1]),
                 str(self.shared_bytes)],
                capture_output=True, text=True, env=env, timeout=600,
            )  # fmt: skip
            if proc.returncode != 0:
                raise KernelError(f"{self.spec.name}: exit {proc.returncode}\n{proc.stderr[:6000]}")
            return [
                mx.array(np.fromfile(folder / f"out{i}.bin", np.float32).reshape(shape))
                for i, shape in enumerate(output_shapes)
            ]


def cpu_factory(shared_bytes: dict[str, int] | None = None):
    """A ``kernel_factory`` for engine.cuda_frame.CudaFrames running the kernels here;
    ``shared_bytes``: kernel name -> shared memory to give it instead of its spec's."""

    def make(spec: KernelSpec, header: str) -> CpuKernel:
        return CpuKernel(spec, header, (shared_bytes or {}).get(spec.name))

    return make
