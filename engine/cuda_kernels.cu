// The speech frame and the text window as single CUDA kernels (engine/cuda_frame.py).
//
// On a GPU the model is bound by launching its ~1,000 small operations a frame, not by
// arithmetic or memory: a whole frame reads ~0.9 GB of bfloat16 weights, 0.3 ms at H100
// bandwidth. These kernels run a whole frame (the CFG sampler, the connector, both
// TTS-LM rows through every layer, the EOS head) or a whole text window (the text LM,
// then the positive TTS-LM row) as one launch: a persistent grid of one block per
// multiprocessor that walks through the stages, meeting at a grid-wide barrier wherever
// a stage needs all of the previous one's output (an RMS norm needs the whole row, an
// output projection every head). Each stage spreads its matrix rows over all the warps
// of the grid; weights are streamed once per stage as bfloat16 (the checkpoint's values,
// exactly) and multiplied in float32.
//
// This file is the header of the kernels (helpers, stages); engine/cuda_frame.py adds the
// model's dimensions and weight offsets as constants and hands each kernel body to
// mx.fast.cuda_kernel. Names of the math mirror engine/qwen2.py, engine/diffusion.py,
// engine/sampler.py and engine/model.py.

#define NT 256
#define NW (NT / 32)

// Shared memory (engine/cuda_frame.py sizes it, and gives ROW_LM and ROW_FRAME): the
// rows a stage multiplies (xs), M of them of up to ROW_LM floats in a Qwen2 layer (H for
// q/k/v, o and gate/up; I for down), 2 of up to ROW_FRAME in the frame kernel (also HF,
// the diffusion head's down projection); the attention's per-warp partials reuse them.
static_assert(ROW_LM >= H && ROW_LM >= I, "a Qwen2 layer stages rows of H and of I");
static_assert(ROW_FRAME >= ROW_LM && ROW_FRAME >= HF, "the frame stages rows of HF too");
static_assert(2 * ROW_LM >= NW * (2 + HD), "attention partials fit in a layer's rows");
static_assert(HD == 64 && LAT <= NT && LMAX <= NW, "a head in a warp; a latent in a block");

typedef unsigned short bf16_t;
#define F_INF __int_as_float(0x7f800000)
#define F_NAN __int_as_float(0x7fffffff)

// ---- grid barrier ----
//
// A central barrier with a generation word, in a buffer that persists across launches
// (state[0]: arrivals, state[1]: generation, state[2]: error flag): the last block to
// arrive resets the count and bumps the generation, the others wait for the bump. It
// needs every block resident at once, which one block per multiprocessor gives; should
// that ever fail, a wait gives up after about a second and raises the error flag, every
// later barrier returns at once, and the caller stops using these kernels.
__device__ __forceinline__ bool grid_sync(unsigned int* state) {
  __shared__ int ok;
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned int* vs = state;
    const unsigned int gen = vs[1];
    __threadfence();
    const unsigned int arrived = atomicAdd(state, 1u);
    if (arrived == gridDim.x - 1) {
      atomicExch(state, 0u);
      __threadfence();
      atomicAdd(state + 1, 1u);
    } else {
      const long long t0 = clock64();
      while (vs[1] == gen) {
        if (vs[2]) break;
        if (clock64() - t0 > 2000000000LL) {
          atomicExch(state + 2, 1u);
          break;
        }
      }
    }
    __threadfence();
    ok = vs[2] == 0;
  }
  __syncthreads();
  return ok;
}

// ---- helpers ----

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// Data written by other blocks during this launch is read past L1 (not coherent).
__device__ __forceinline__ float ld(const float* p) { return __ldcg(p); }

// xs[m * K + k] = f(m, k) for m < rows, k < K, by the whole block.
template <typename F>
__device__ __forceinline__ void stage_rows(float* xs, int rows, int K, F f) {
  for (int i = threadIdx.x; i < rows * K; i += NT) xs[i] = f(i / K, i % K);
  __syncthreads();
}

// inv[m] = 1 / sqrt(mean(src[m * stride + k]^2, k < K) + eps) for m < rows (rows <= NW).
__device__ __forceinline__ void row_rms(float* inv, const float* src, int stride, int rows, int K,
                                        float eps) {
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (w < rows) {
    float s = 0.f;
    for (int k = lane; k < K; k += 32) {
      const float v = ld(src + (size_t)w * stride + k);
      s += v * v;
    }
    s = warp_sum(s);
    if (lane == 0) inv[w] = rsqrtf(s / (float)K + eps);
  }
  __syncthreads();
}

// out[m][n] for the rows n of a bfloat16 weight W (N x K, row-major) against the M rows
// of xs (shared memory, M x K): each warp of the grid takes rows n = its index, + the
// number of warps, ... ; with R = 2 it takes rows n and n + off together (gate and up).
// epi(m, n, v) (R = 1) or epi(m, n, v0, v1) (R = 2) gets the sums on lane 0. A stage is
// short (a few rows per warp), so what bounds it is the memory latency: each lane issues
// UNROLL loads of 16 bytes (8 weights) per row before using any.
template <int M, int R, typename Epi>
__device__ __forceinline__ void matvec(const bf16_t* __restrict__ W, int N, int K, int off,
                                       const float* xs, Epi epi) {
  const int lane = threadIdx.x & 31;
  const int nw = gridDim.x * NW;
  const int chunks = K >> 3;  // 8 values a 16-byte load
  for (int n = blockIdx.x * NW + (threadIdx.x >> 5); n < N; n += nw) {
    float acc[R][M];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int m = 0; m < M; m++) acc[r][m] = 0.f;
    const uint4* w[R];
#pragma unroll
    for (int r = 0; r < R; r++) w[r] = reinterpret_cast<const uint4*>(W + (size_t)(n + r * off) * K);
    for (int c0 = lane; c0 < chunks; c0 += 32 * UNROLL) {
      uint4 u[UNROLL][R];
#pragma unroll
      for (int j = 0; j < UNROLL; j++)
#pragma unroll
        for (int r = 0; r < R; r++)
          u[j][r] = c0 + 32 * j < chunks ? __ldg(w[r] + c0 + 32 * j) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < UNROLL; j++) {
        const int c = c0 + 32 * j;
        if (c >= chunks) break;
#pragma unroll
        for (int m = 0; m < M; m++) {
          const float4 x0 = *reinterpret_cast<const float4*>(xs + m * K + c * 8);
          const float4 x1 = *reinterpret_cast<const float4*>(xs + m * K + c * 8 + 4);
          const float xv[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
          for (int r = 0; r < R; r++) {
            const unsigned int p[4] = {u[j][r].x, u[j][r].y, u[j][r].z, u[j][r].w};
#pragma unroll
            for (int q = 0; q < 4; q++) {
              // A bfloat16 pair in one word: the even value in the low half, the odd in
              // the high half; each widened by a shift or a mask.
              acc[r][m] = fmaf(xv[2 * q], __uint_as_float(p[q] << 16), acc[r][m]);
              acc[r][m] = fmaf(xv[2 * q + 1], __uint_as_float(p[q] & 0xffff0000u), acc[r][m]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int m = 0; m < M; m++) acc[r][m] = warp_sum(acc[r][m]);
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < M; m++) {
        if constexpr (R == 1)
          epi(m, n, acc[0][m]);
        else
          epi(m, n, acc[0][m], acc[1][m]);
      }
    }
  }
}

// ---- Qwen2 layers over M rows (engine/qwen2.py) ----
//
// Row m reads and writes batch row rb[m] of the cache at column rc[m] with RoPE position
// rp[m]. It attends to the cache's columns j < c0 (the first column this call writes)
// that are valid for its batch row, and to the rows of this call with the same batch row
// and a column up to its own. Keys are stored after RoPE.

struct Rows {
  int n;       // rows in use (<= M)
  int b[8];    // batch row of the cache
  int c[8];    // column written
  int p[8];    // RoPE position
  int c0;      // first column written by this call
};

struct LayerWeights {
  const bf16_t* qkv;     // (NH + 2 KVH) HD x H
  const bf16_t* o;       // H x NH HD
  const bf16_t* gu;      // 2 I x H: gate rows, then up rows
  const bf16_t* down;    // H x I
  const float* qkv_bias; // (NH + 2 KVH) HD
  const float* ln1;      // H
  const float* ln2;      // H
};

struct Scratch {
  float* x;    // M x H: the residual stream
  float* qkv;  // M x QKV
  float* att;  // M x H
  float* act;  // M x I
};

// Rotate-half RoPE of one head (64 values in, lanes hold d and d + 32), as mx.fast.rope
// on CUDA: inv_freq = 2^(-d / (HD / 2) * log2(theta)), angle = position * inv_freq.
__device__ __forceinline__ void rope_pair(float& a, float& b, int d, int pos) {
  const float inv_freq = exp2f(-((float)d / (float)(HD / 2)) * LOG2_THETA);
  const float th = (float)pos * inv_freq;
  const float cs = cosf(th), sn = sinf(th);
  const float ra = a * cs - b * sn, rb = a * sn + b * cs;
  a = ra;
  b = rb;
}

// One layer; kv is this layer's cache (2, B, KVH, CAP, HD), valid its (B, CAP) mask,
// newkv this layer's new keys and values (2, M, KVH, HD). Returns false on a failed barrier.
template <int M>
__device__ bool qwen2_layer(const LayerWeights& L, const Scratch& s, const Rows& rows,
                            const float* kv, int B, int cap, const bool* valid, float* newkv,
                            unsigned int* sync_state, float* smem) {
  float* xs = smem;                // M x ROW_LM at most
  float* inv = smem + M * ROW_LM;  // M
  constexpr int QKV = (NH + 2 * KVH) * HD;
  // 1. q, k, v from the normed residual.
  row_rms(inv, s.x, H, rows.n, H, RMS_EPS);
  stage_rows(xs, M, H, [&](int m, int k) {
    return m < rows.n ? ld(s.x + m * H + k) * inv[m] * L.ln1[k] : 0.f;
  });
  matvec<M, 1>(L.qkv, QKV, H, 0, xs, [&](int m, int n, float v) {
    if (m < rows.n) s.qkv[m * QKV + n] = v + L.qkv_bias[n];
  });
  if (!grid_sync(sync_state)) return false;
  // 2. Attention, one block per (row, query head); online softmax per warp, then merged.
  {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    float* sm_m = smem;            // NW
    float* sm_l = smem + NW;       // NW
    float* sm_o = smem + 2 * NW;   // NW x HD
    for (int unit = blockIdx.x; unit < rows.n * NH; unit += gridDim.x) {
      const int m = unit / NH, h = unit % NH, g = h / (NH / KVH);
      const int bm = rows.b[m];
      float qa = ld(s.qkv + m * QKV + h * HD + lane), qb = ld(s.qkv + m * QKV + h * HD + lane + 32);
      rope_pair(qa, qb, lane, rows.p[m]);
      float mx_ = -F_INF, l = 0.f, oa = 0.f, ob = 0.f;
      const float scale = rsqrtf((float)HD);
      const float* K = kv + (((size_t)0 * B + bm) * KVH + g) * cap * HD;
      const float* V = kv + (((size_t)1 * B + bm) * KVH + g) * cap * HD;
      for (int j = w; j < rows.c0; j += NW) {
        if (valid != nullptr && !valid[bm * cap + j]) continue;
        const float sc = warp_sum(qa * __ldg(K + (size_t)j * HD + lane) + qb * __ldg(K + (size_t)j * HD + lane + 32)) * scale;
        const float mn = fmaxf(mx_, sc);
        const float corr = expf(mx_ - mn), pj = expf(sc - mn);
        l = l * corr + pj;
        oa = oa * corr + pj * __ldg(V + (size_t)j * HD + lane);
        ob = ob * corr + pj * __ldg(V + (size_t)j * HD + lane + 32);
        mx_ = mn;
      }
      // This call's rows (new keys, computed here from q/k/v; RoPE at their positions).
      for (int r = w; r < rows.n; r += NW) {
        if (rows.b[r] != bm || rows.c[r] > rows.c[m]) continue;
        float ka = ld(s.qkv + r * QKV + (NH + g) * HD + lane);
        float kb = ld(s.qkv + r * QKV + (NH + g) * HD + lane + 32);
        rope_pair(ka, kb, lane, rows.p[r]);
        const float va = ld(s.qkv + r * QKV + (NH + KVH + g) * HD + lane);
        const float vb = ld(s.qkv + r * QKV + (NH + KVH + g) * HD + lane + 32);
        const float sc = warp_sum(qa * ka + qb * kb) * scale;
        const float mn = fmaxf(mx_, sc);
        const float corr = expf(mx_ - mn), pj = expf(sc - mn);
        l = l * corr + pj;
        oa = oa * corr + pj * va;
        ob = ob * corr + pj * vb;
        mx_ = mn;
      }
      if (lane == 0) {
        sm_m[w] = mx_;
        sm_l[w] = l;
      }
      sm_o[w * HD + lane] = oa;
      sm_o[w * HD + lane + 32] = ob;
      __syncthreads();
      if (w == 0) {
        float gm = -F_INF;
        for (int i = 0; i < NW; i++) gm = fmaxf(gm, sm_m[i]);
        float gl = 0.f, ga = 0.f, gb = 0.f;
        for (int i = 0; i < NW; i++) {
          const float f = sm_l[i] > 0.f ? expf(sm_m[i] - gm) : 0.f;
          gl += sm_l[i] * f;
          ga += sm_o[i * HD + lane] * f;
          gb += sm_o[i * HD + lane + 32] * f;
        }
        s.att[m * H + h * HD + lane] = ga / gl;
        s.att[m * H + h * HD + lane + 32] = gb / gl;
        if (h % (NH / KVH) == 0) {
          // This row's new key (rotated) and value for the cache.
          float ka = ld(s.qkv + m * QKV + (NH + g) * HD + lane);
          float kb = ld(s.qkv + m * QKV + (NH + g) * HD + lane + 32);
          rope_pair(ka, kb, lane, rows.p[m]);
          float* nk = newkv + ((size_t)(0 * M + m) * KVH + g) * HD;
          float* nv = newkv + ((size_t)(1 * M + m) * KVH + g) * HD;
          nk[lane] = ka;
          nk[lane + 32] = kb;
          nv[lane] = ld(s.qkv + m * QKV + (NH + KVH + g) * HD + lane);
          nv[lane + 32] = ld(s.qkv + m * QKV + (NH + KVH + g) * HD + lane + 32);
        }
      }
      __syncthreads();
    }
  }
  if (!grid_sync(sync_state)) return false;
  // 3. Output projection, added to the residual.
  stage_rows(xs, M, H, [&](int m, int k) { return m < rows.n ? ld(s.att + m * H + k) : 0.f; });
  matvec<M, 1>(L.o, H, H, 0, xs, [&](int m, int n, float v) {
    if (m < rows.n) s.x[m * H + n] = ld(s.x + m * H + n) + v;
  });
  if (!grid_sync(sync_state)) return false;
  // 4. SwiGLU: silu(gate) * up of the normed residual.
  row_rms(inv, s.x, H, rows.n, H, RMS_EPS);
  stage_rows(xs, M, H, [&](int m, int k) {
    return m < rows.n ? ld(s.x + m * H + k) * inv[m] * L.ln2[k] : 0.f;
  });
  matvec<M, 2>(L.gu, I, H, I, xs, [&](int m, int n, float g, float u) {
    if (m < rows.n) s.act[m * I + n] = silu(g) * u;
  });
  if (!grid_sync(sync_state)) return false;
  // 5. Down projection, added to the residual.
  stage_rows(xs, M, I, [&](int m, int k) { return m < rows.n ? ld(s.act + m * I + k) : 0.f; });
  matvec<M, 1>(L.down, H, I, 0, xs, [&](int m, int n, float v) {
    if (m < rows.n) s.x[m * H + n] = ld(s.x + m * H + n) + v;
  });
  return grid_sync(sync_state);
}

// ---- weights ----
//
// wh holds every bfloat16 matrix, wf every float32 vector; offs[i] is where item i starts
// (engine/cuda_frame.py packs them; O_* are its indices). Layers: the text LM's first,
// then the TTS LM's, O_LAYER items each.

__device__ __forceinline__ LayerWeights layer_weights(const bf16_t* wh, const float* wf,
                                                      const int64_t* offs, int l) {
  const int64_t* o = offs + (int64_t)l * O_LAYER;
  return LayerWeights{wh + o[0], wh + o[1], wh + o[2], wh + o[3], wf + o[4], wf + o[5], wf + o[6]};
}

#define WH(i) (wh + offs[(i)])
#define WF(i) (wf + offs[(i)])

// Marks a failed barrier where the caller looks (NaN) and leaves the kernel.
#define SYNC_OR_FAIL(state, fail)                                   \
  do {                                                              \
    if (!grid_sync(state)) {                                        \
      if (blockIdx.x == 0 && threadIdx.x == 0) *(fail) = F_NAN;       \
      return;                                                       \
    }                                                               \
  } while (0)

// Scratch of the frame kernel, in floats (see frame_body).
template <int S>
struct FrameScratch {
  static constexpr int QKV = (NH + 2 * KVH) * HD;
  static constexpr long long x = 0, qkv = x + 2 * H, att = qkv + 2 * QKV, act = att + 2 * H,
                             c = act + 2 * I, mods = c + S * 2 * H,
                             hh = mods + (long long)S * 2 * NMOD * H, hact = hh + 2 * H,
                             v = hact + 2 * HF, t1 = v + 2 * LAT, e1 = t1 + H,
                             size = e1 + H;
};

// One speech frame (cuda_frame.CudaFrames.frame): with SAMPLE, the CFG sampler's S
// DPM-Solver steps from noise and the two conditions (engine/sampler.py) give the latent;
// with FEED, that latent (or the one given, fed) goes through the connector and both
// TTS-LM rows (engine/model.py, engine/qwen2.py), giving the next conditions, the EOS
// logit and the new cache column of every layer.
template <int S, bool SAMPLE, bool FEED>
__device__ void frame_body(const bf16_t* wh, const float* wf, const int64_t* offs,
                           const float* noise, const float* pos_in, const float* neg_in,
                           const float* temb, const float* sched, const float* cfg,
                           const float* fed_in, const float* kv, const bool* valid,
                           const int* info, int cap, unsigned int* sync_state, float* work,
                           float* latent_out, float* pos_out, float* neg_out, float* eos_out,
                           float* newkv) {
  extern __shared__ float smem[];
  using FS = FrameScratch<S>;
  float* xs = smem;                 // 2 x ROW_FRAME
  float* inv = smem + 2 * ROW_FRAME;  // 8
  float* xst = inv + 8;             // LAT: the solver's x
  float* x0p = xst + LAT;           // LAT: its previous x0
  float* fedv = x0p + LAT;          // LAT: the latent fed back
  float* fail = FEED ? eos_out : latent_out;
  const int tid = threadIdx.x;
  if constexpr (SAMPLE) {
    float* c = work + FS::c;
    float* mods = work + FS::mods;
    float* hh = work + FS::hh;
    float* hact = work + FS::hact;
    float* v = work + FS::v;
    // Conditions: c[s, m] = silu(cond_proj(cond_m) + t_emb[s]) (DiffusionHead.modulations).
    stage_rows(xs, 2, H, [&](int m, int k) { return m == 0 ? pos_in[k] : neg_in[k]; });
    matvec<2, 1>(WH(O_HEAD_COND), H, H, 0, xs, [&](int m, int n, float val) {
      for (int s = 0; s < S; s++) c[(s * 2 + m) * H + n] = silu(val + temb[s * H + n]);
    });
    SYNC_OR_FAIL(sync_state, fail);
    // Every layer's adaLN shift/scale/gate for every step, one stacked product per step.
    for (int s = 0; s < S; s++) {
      __syncthreads();
      stage_rows(xs, 2, H, [&](int m, int k) { return ld(c + (s * 2 + m) * H + k); });
      matvec<2, 1>(WH(O_HEAD_MOD), NMOD * H, H, 0, xs, [&](int m, int n, float val) {
        mods[(long long)(s * 2 + m) * NMOD * H + n] = val;
      });
    }
    for (int i = tid; i < LAT; i += NT) xst[i] = noise[i];
    __syncthreads();
    SYNC_OR_FAIL(sync_state, fail);
    for (int step = 0; step < S; step++) {
      const float* md = mods + (long long)step * 2 * NMOD * H;  // row m: md + m * NMOD * H
      // h = noisy_images_proj(x), the same for both rows.
      stage_rows(xs, 1, LAT, [&](int, int k) { return xst[k]; });
      matvec<1, 1>(WH(O_HEAD_NOISY), H, LAT, 0, xs, [&](int, int n, float val) {
        hh[n] = val;
        hh[H + n] = val;
      });
      SYNC_OR_FAIL(sync_state, fail);
      for (int j = 0; j < NHL; j++) {
        // x + gate * ffn(norm(x) * (1 + scale) + shift)   (HeadLayer)
        const int sh = 3 * j * H, sc = (3 * j + 1) * H, ga = (3 * j + 2) * H;
        const float* nw = WF(O_HEAD_NORM + j);
        row_rms(inv, hh, H, 2, H, HEAD_EPS);
        stage_rows(xs, 2, H, [&](int m, int k) {
          const float* r = md + (long long)m * NMOD * H;
          return ld(hh + m * H + k) * inv[m] * nw[k] * (1.f + ld(r + sc + k)) + ld(r + sh + k);
        });
        matvec<2, 2>(WH(O_HEAD_GU + j), HF, H, HF, xs, [&](int m, int n, float g, float u) {
          hact[m * HF + n] = silu(g) * u;
        });
        SYNC_OR_FAIL(sync_state, fail);
        stage_rows(xs, 2, HF, [&](int m, int k) { return ld(hact + m * HF + k); });
        matvec<2, 1>(WH(O_HEAD_DOWN + j), H, HF, 0, xs, [&](int m, int n, float val) {
          const float* r = md + (long long)m * NMOD * H;
          hh[m * H + n] = ld(hh + m * H + n) + ld(r + ga + n) * val;
        });
        SYNC_OR_FAIL(sync_state, fail);
      }
      // linear(norm(x) * (1 + scale) + shift), a norm without weight   (FinalLayer)
      {
        const int sh = 3 * NHL * H, sc = (3 * NHL + 1) * H;
        row_rms(inv, hh, H, 2, H, HEAD_EPS);
        stage_rows(xs, 2, H, [&](int m, int k) {
          const float* r = md + (long long)m * NMOD * H;
          return ld(hh + m * H + k) * inv[m] * (1.f + ld(r + sc + k)) + ld(r + sh + k);
        });
        matvec<2, 1>(WH(O_HEAD_FINAL), LAT, H, 0, xs,
                     [&](int m, int n, float val) { v[m * LAT + n] = val; });
        SYNC_OR_FAIL(sync_state, fail);
      }
      // CFG, then the DPM-Solver++ step (engine/sampler.py), in every block alike.
      if (tid < LAT) {
        const float alpha = sched[step * 5], sigma = sched[step * 5 + 1],
                    ratio = sched[step * 5 + 2], c0 = sched[step * 5 + 3],
                    c1 = sched[step * 5 + 4];
        const float vc = ld(v + tid), vu = ld(v + LAT + tid);
        const float vv = vu + cfg[0] * (vc - vu);
        const float x = xst[tid];
        const float x0 = alpha * x - sigma * vv;
        float xn = ratio * x + c0 * x0;
        if (c1 != 0.f && step > 0) xn = xn + c1 * x0p[tid];
        x0p[tid] = x0;
        xst[tid] = xn;
      }
      __syncthreads();
    }
    if (blockIdx.x == 0)
      for (int i = tid; i < LAT; i += NT) latent_out[i] = xst[i];
    if constexpr (FEED) {
      // A teacher latent replaces the sampled one when fed_in[LAT] is set.
      for (int i = tid; i < LAT; i += NT) fedv[i] = fed_in[LAT] != 0.f ? fed_in[i] : xst[i];
      __syncthreads();
    }
  } else {
    for (int i = tid; i < LAT; i += NT) fedv[i] = fed_in[i];
    __syncthreads();
  }
  if constexpr (FEED) {
    float* x = work + FS::x;
    float* t1 = work + FS::t1;
    float* e1 = work + FS::e1;
    // Connector: fc2(norm(fc1(latent))) + the speech type embedding, as both rows.
    stage_rows(xs, 1, LAT, [&](int, int k) { return fedv[k]; });
    const float* b1 = WF(O_CONN_FC1_B);
    matvec<1, 1>(WH(O_CONN_FC1), H, LAT, 0, xs, [&](int, int n, float val) { t1[n] = val + b1[n]; });
    SYNC_OR_FAIL(sync_state, fail);
    row_rms(inv, t1, H, 1, H, RMS_EPS);
    const float* cn = WF(O_CONN_NORM);
    stage_rows(xs, 1, H, [&](int, int k) { return ld(t1 + k) * inv[0] * cn[k]; });
    const float* b2 = WF(O_CONN_FC2_B);
    const float* ts = WF(O_TYPE_SPEECH);
    matvec<1, 1>(WH(O_CONN_FC2), H, H, 0, xs, [&](int, int n, float val) {
      const float e = val + b2[n] + ts[n];
      x[n] = e;
      x[H + n] = e;
    });
    SYNC_OR_FAIL(sync_state, fail);
    // The TTS LM, positive and negative rows at the same column.
    Rows rows;
    rows.n = 2;
    rows.c0 = info[0];
    rows.b[0] = 0, rows.c[0] = info[0], rows.p[0] = info[1];
    rows.b[1] = 1, rows.c[1] = info[0], rows.p[1] = info[2];
    const Scratch s{x, work + FS::qkv, work + FS::att, work + FS::act};
    const long long per_layer = 2LL * 2 * KVH * cap * HD;
    for (int l = 0; l < NTTS; l++) {
      if (!qwen2_layer<2>(layer_weights(wh, wf, offs, NLM + l), s, rows, kv + l * per_layer, 2,
                          cap, valid, newkv + (long long)l * 2 * 2 * KVH * HD, sync_state,
                          smem)) {
        if (blockIdx.x == 0 && tid == 0) *fail = F_NAN;
        return;
      }
    }
    // Final norm: the next conditions; the EOS head on the positive one.
    row_rms(inv, x, H, 2, H, RMS_EPS);
    const float* fn = WF(O_TTS_NORM);
    stage_rows(xs, 2, H, [&](int m, int k) { return ld(x + m * H + k) * inv[m] * fn[k]; });
    if (blockIdx.x == 0)
      for (int k = tid; k < H; k += NT) {
        pos_out[k] = xs[k];
        neg_out[k] = xs[H + k];
      }
    const float* eb1 = WF(O_EOS_FC1_B);
    matvec<1, 1>(WH(O_EOS_FC1), H, H, 0, xs,
                 [&](int, int n, float val) { e1[n] = fmaxf(val + eb1[n], 0.f); });
    SYNC_OR_FAIL(sync_state, fail);
    if (blockIdx.x == 0 && tid < 32) {
      const bf16_t* w2 = WH(O_EOS_FC2);
      float acc = 0.f;
      for (int k = tid; k < H; k += 32)
        acc += ld(e1 + k) * __uint_as_float(((unsigned int)w2[k]) << 16);
      acc = warp_sum(acc);
      if (tid == 0) eos_out[0] = acc + WF(O_EOS_FC2_B)[0];
    }
  }
}

// Scratch of the window kernel, in floats.
struct WindowScratch {
  static constexpr int QKV = (NH + 2 * KVH) * HD;
  static constexpr long long x = 0, qkv = x + LMAX * H, att = qkv + LMAX * QKV,
                             act = att + LMAX * H, size = act + LMAX * I;
};

// One text window (steps.window_step): the text LM over the L <= LMAX embedded tokens
// (rows of x_in past L are ignored), then the positive TTS-LM row over its output plus
// the text type embedding. info: L, text-LM offset, TTS column, TTS position.
__device__ void window_body(const bf16_t* wh, const float* wf, const int64_t* offs,
                            const float* x_in, const float* lmkv, int lm_cap, const float* kv,
                            const bool* valid, int cap, const int* info,
                            unsigned int* sync_state, float* work, float* htext_out,
                            float* htts_out, float* newkv_lm, float* newkv) {
  extern __shared__ float smem[];
  using WS = WindowScratch;
  const int L = info[0], tid = threadIdx.x;
  float* x = work + WS::x;
  float* fail = htts_out;
  const int gt = blockIdx.x * NT + tid, gn = gridDim.x * NT;
  for (int i = gt; i < L * H; i += gn) x[i] = x_in[i];
  SYNC_OR_FAIL(sync_state, fail);
  const Scratch s{x, work + WS::qkv, work + WS::att, work + WS::act};
  Rows rows;
  rows.n = L;
  rows.c0 = info[1];
  for (int r = 0; r < 8; r++) rows.b[r] = 0, rows.c[r] = info[1] + r, rows.p[r] = info[1] + r;
  for (int l = 0; l < NLM; l++) {
    if (!qwen2_layer<LMAX>(layer_weights(wh, wf, offs, l), s, rows,
                           lmkv + (long long)l * 2 * 1 * KVH * lm_cap * HD, 1, lm_cap, nullptr,
                           newkv_lm + (long long)l * 2 * LMAX * KVH * HD, sync_state, smem)) {
      if (blockIdx.x == 0 && tid == 0) *fail = F_NAN;
      return;
    }
  }
  const float* tt = WF(O_TYPE_TEXT);
  for (int i = gt; i < L * H; i += gn) {
    const float h = ld(x + i);
    htext_out[i] = h;
    x[i] = h + tt[i % H];
  }
  SYNC_OR_FAIL(sync_state, fail);
  rows.c0 = info[2];
  for (int r = 0; r < 8; r++) rows.c[r] = info[2] + r, rows.p[r] = info[3] + r;
  for (int l = 0; l < NTTS; l++) {
    if (!qwen2_layer<LMAX>(layer_weights(wh, wf, offs, NLM + l), s, rows,
                           kv + (long long)l * 2 * 2 * KVH * cap * HD, 2, cap, valid,
                           newkv + (long long)l * 2 * LMAX * KVH * HD, sync_state, smem)) {
      if (blockIdx.x == 0 && tid == 0) *fail = F_NAN;
      return;
    }
  }
  float* inv = smem;
  row_rms(inv, x, H, L, H, RMS_EPS);
  const float* fn = WF(O_TTS_NORM);
  for (int i = gt; i < L * H; i += gn) htts_out[i] = ld(x + i) * inv[i / H] * fn[i % H];
}
