// Y = epilogue(X W^T + b) on the tensor cores, as accurate as a float32 product
// (engine/cuda_gemm.py).
//
// X is float32 (M x K), W bfloat16 (N x K, row-major: a Linear's weight, the checkpoint's
// values exactly), b and Y float32. The tensor cores multiply bfloat16 pairs exactly and
// add in float32; X is split into three bfloat16 parts, hi + mid + lo, which together
// carry its 24 bits, so Y = hi W^T + mid W^T + lo W^T is a float32 product of X and W
// (three tensor-core products, faster than one on the float32 units). The epilogue is
// the bias alone, or the decoder's exact GELU of it, or R + gamma * it (a residual add
// with a layer scale): what would otherwise be another pass over Y.
//
// W's rows are the m16n8k16 instruction's A operand (16 outputs a tile) and X's parts its
// B (8 rows a tile), so that the three parts multiply the smaller fragment. A block of 8
// warps computes TILE_X rows of X against TILE_W rows of W, BK columns of K at a time,
// staged in shared memory (X as its three parts); each warp 32 rows of X against 64 of
// W, 4 x 4 tiles. The next BK columns are read from global memory while these are
// multiplied.

#define GEMM_THREADS 256
#define TILE_X 128
#define TILE_W 128
#define BK 32
// 32-bit words of a staged row: BK / 2 bfloat16 pairs and 4 more, so that the 8 rows a
// warp's fragment load touches fall in 8 different groups of 4 banks.
#define SK 20
#define GEMM_SHARED_WORDS (3 * TILE_X * SK + TILE_W * SK)
#define EPI_BIAS 0
#define EPI_GELU 1
#define EPI_RESIDUAL 2

static_assert(GEMM_THREADS * 4 * 4 == TILE_X * BK, "each thread stages 4 x 4 values of X");
static_assert(GEMM_THREADS * 2 * 8 == TILE_W * BK, "each thread stages 2 x 8 weights of W");
static_assert(BK == 32, "a K step is two k16 products");

// D = A B + D for one m16n8k16 tile: A 16 x 16 (4 registers of bfloat16 pairs), B 16 x 8
// (2), D 16 x 8 float32 (4), in the fragment layouts of the PTX ISA.
__device__ __forceinline__ void mma_bf16_16816(float* d, const unsigned int* a,
                                               const unsigned int* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// x = hi + mid + lo, each a bfloat16 (the top 16 bits of a float32). Each part is x's
// remainder truncated to 8 significant bits; the remainders are exact in float32 (x and
// its truncation share an exponent), so the parts carry x to within 2^-24 of itself.
__device__ __forceinline__ void split3(float x, unsigned int* part) {
  const unsigned int hi = __float_as_uint(x) & 0xffff0000u;
  const float r1 = x - __uint_as_float(hi);
  const unsigned int mid = __float_as_uint(r1) & 0xffff0000u;
  const float r2 = r1 - __uint_as_float(mid);
  part[0] = hi >> 16;
  part[1] = mid >> 16;
  part[2] = __float_as_uint(r2) >> 16;
}

// dims: M, N, K. K a multiple of BK and N of 8 (engine/cuda_gemm.py checks); blockIdx.x
// walks X's tiles, blockIdx.y W's. R (M x N) and gamma (N) are read by EPI_RESIDUAL only.
template <int EPI>
__device__ void gemm_body(const float* __restrict__ X, const unsigned short* __restrict__ W,
                          const float* __restrict__ bias, const float* __restrict__ R,
                          const float* __restrict__ gamma, const int* dims, float* Y) {
  extern __shared__ float gemm_smem[];
  unsigned int* Xs = reinterpret_cast<unsigned int*>(gemm_smem);  // 3 x TILE_X x SK
  unsigned int* Ws = Xs + 3 * TILE_X * SK;                             // TILE_W x SK
  const int M = dims[0], N = dims[1], K = dims[2];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const long long m0 = (long long)blockIdx.x * TILE_X;
  const int n0 = blockIdx.y * TILE_W;
  const int ww = (warp & 1) * 64, wx = (warp >> 1) * 32;

  float4 xa[4];
  uint4 wb[2];
  auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int idx = tid + i * GEMM_THREADS;
      const long long row = m0 + (idx >> 3);
      xa[i] = row < M ? *reinterpret_cast<const float4*>(X + row * K + k0 + (idx & 7) * 4)
                      : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int idx = tid + i * GEMM_THREADS;
      const int n = n0 + (idx >> 2);
      wb[i] = n < N ? *reinterpret_cast<const uint4*>(W + (long long)n * K + k0 + (idx & 3) * 8)
                    : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  auto stage = [&]() {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int idx = tid + i * GEMM_THREADS;
      const float v[4] = {xa[i].x, xa[i].y, xa[i].z, xa[i].w};
      unsigned int p[4][3];
#pragma unroll
      for (int j = 0; j < 4; j++) split3(v[j], p[j]);
      const int at = (idx >> 3) * SK + (idx & 7) * 2;
#pragma unroll
      for (int q = 0; q < 3; q++) {
        Xs[q * TILE_X * SK + at] = p[0][q] | (p[1][q] << 16);
        Xs[q * TILE_X * SK + at + 1] = p[2][q] | (p[3][q] << 16);
      }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const int idx = tid + i * GEMM_THREADS;
      *reinterpret_cast<uint4*>(Ws + (idx >> 2) * SK + (idx & 3) * 4) = wb[i];
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

  load(0);
  for (int k0 = 0; k0 < K; k0 += BK) {
    stage();
    __syncthreads();
    if (k0 + BK < K) load(k0 + BK);
#pragma unroll
    for (int ks = 0; ks < 2; ks++) {
      unsigned int a[4][4], b[4][3][2];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const unsigned int* r = Ws + (ww + i * 16 + g) * SK + ks * 8 + t;
        a[i][0] = r[0];
        a[i][1] = r[8 * SK];
        a[i][2] = r[4];
        a[i][3] = r[8 * SK + 4];
      }
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int q = 0; q < 3; q++) {
          const unsigned int* r = Xs + q * TILE_X * SK + (wx + j * 8 + g) * SK + ks * 8 + t;
          b[j][q][0] = r[0];
          b[j][q][1] = r[4];
        }
      // Each tile's three products go to a fresh sum, added to the total in float32: the
      // tensor cores round their sums toward zero, which over all of K biases the result
      // (3e-5 at K = 8192, measured on an H100); over one k16 step it stays at float32's
      // rounding.
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
          float part[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int q = 2; q >= 0; q--) mma_bf16_16816(part, a[i], b[j][q]);
#pragma unroll
          for (int e = 0; e < 4; e++) acc[i][j][e] += part[e];
        }
    }
    __syncthreads();
  }

  // D's fragment: values 0, 1 at W's row g, X's rows 2t, 2t + 1; values 2, 3 at row g + 8.
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int n = n0 + ww + i * 16 + g + h * 8;
      if (n >= N) continue;
      const float bn = bias[n];
      const float gn = EPI == EPI_RESIDUAL ? gamma[n] : 0.f;
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
          const long long row = m0 + wx + j * 8 + 2 * t + e;
          if (row >= M) continue;
          const float v = acc[i][j][2 * h + e] + bn;
          if constexpr (EPI == EPI_GELU)
            Y[row * N + n] = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
          else if constexpr (EPI == EPI_RESIDUAL)
            Y[row * N + n] = R[row * N + n] + gn * v;
          else
            Y[row * N + n] = v;
        }
    }
}
