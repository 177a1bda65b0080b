/* CBLAS entry points for MLX on Linux CPUs, forwarding to scipy-openblas32.
 *
 * MLX's CPU backend calls cblas_sgemm for every float32 matmul, including the few-row
 * products that dominate token-by-token decoding (one row per CFG branch, a handful of
 * text tokens). OpenBLAS's sgemm packs the whole weight matrix first and is several
 * times slower there than a plain pass over the weights. This library exports
 * cblas_sgemm, cblas_dgemm and cblas_cgemm:
 *   - products of 2 to SMALL_M rows (the CFG pair, a text window, the decoder's second
 *     stage) against a weight stored row-major as (N, K) and used transposed (x @ W.T,
 *     what nn.Linear does) go to our own kernel: one pass over W for all rows at once,
 *     split between two threads (see `mode`);
 *   - products of at most SMALL_GEMV rows go to OpenBLAS's sgemv, row by row;
 *   - everything else to OpenBLAS's sgemm.
 * On two cores OpenBLAS runs on one thread and these products are cut into chunks that
 * the caller and the helper thread share (see "work shared with one helper thread").
 * It also exports vvreader_sgemm_bf16w, the same few-row kernel for a bfloat16 weight
 * (engine/_cpu_decoder.c: the acoustic decoder's weight-bound first stage), vvreader_sgemm
 * (OpenBLAS's products, shared out likewise, for the decoder's larger ones), and a registry
 * of float32 weights with bfloat16 copies: few-row products (1 to SMALL_M_BF16 rows)
 * against a registered weight read the copy instead (engine/bf16_weights.py).
 * engine/backend.py loads scipy-openblas32 and then this library with RTLD_GLOBAL before
 * MLX is imported, so MLX's references bind here. The scipy_cblas_* symbols are left
 * undefined and resolve at load time.
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "_amx.h"
#include "_bf16.h"
#include "_cpu_level.h"

enum Order { RowMajor = 101, ColMajor = 102 };
enum Trans { NoTrans = 111, Trans = 112, ConjTrans = 113 };

extern void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float *, int,
                              const float *, int, float, float *, int);
extern void scipy_cblas_sgemv(int, int, int, int, float, const float *, int, const float *,
                              int, float, float *, int);
extern void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double *, int,
                              const double *, int, double, double *, int);
extern void scipy_cblas_cgemm(int, int, int, int, int, int, const void *, const void *, int,
                              const void *, int, const void *, void *, int);

#define SMALL_GEMV 4
#define SMALL_M 16
/* Rows up to which a product against a registered bfloat16 copy takes our kernel: the
 * diffusion head's modulations of a batch of B frames are (steps * 2B) rows, and reading
 * the copy once for all of them beats OpenBLAS reading the float32 weight. */
#ifndef SMALL_M_BF16
#define SMALL_M_BF16 96
#endif
/* Below this many weight values one thread is faster than waking the other. */
#define PARALLEL_MIN (1 << 16)

/* ---- the few-row kernel: C[i, n] = alpha * A[i, :] . W[n, :] + beta * C[i, n] ---- */

typedef float v8 __attribute__((vector_size(32)));

typedef struct {
    int M, K;
    float alpha, beta;
    const float *A;
    int lda;
    const float *W;
    int ldw;
    float *C;
    int ldc;
    /* When set, W is this bfloat16 matrix instead (vvreader_sgemm_bf16w)... */
    const unsigned short *Wh;
    /* ...and A's even and odd columns, packed by few_rows: row i's column 2p is
     * Ae[i * packed_half + p], its column 2p + 1 Ao[i * packed_half + p]. */
    const float *Ae, *Ao;
    int packed_half;
    /* ...or, on AMX (engine/_amx.h), A packed in bfloat16 parts by amx_pack, part_size
     * values apart. */
    const unsigned short *Aparts;
    size_t part_size;
} Job;

#if defined(__x86_64__)
/* One clone per x86-64 level (v4: AVX-512, v3: AVX2 and FMA; a string with a comma would
 * make two clones, "avx2" without FMA and "fma" without AVX2). */
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define PAUSE() __builtin_ia32_pause()
#else
#define CLONES
#define PAUSE() ((void)0)
#endif
/* Software prefetch in the float32 few-row kernel (-DPREFETCH_F32=0 builds without it,
 * for comparisons: with it, 1.12-1.25x for 2 to 8 rows against weights of rows of 896
 * to 1024 values streamed from memory, on the development machine). */
#ifndef PREFETCH_F32
#define PREFETCH_F32 1
#endif

INLINE v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

INLINE float hsum(v8 v) {
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

INLINE void store(const Job *j, int i, int n, float dot) {
    float *c = j->C + (size_t)i * j->ldc + n;
    *c = j->beta == 0.0f ? j->alpha * dot : j->alpha * dot + j->beta * *c;
}

/* MR rows of A against 4 rows of W: 4 * MR vector accumulators (8 for two rows, so
 * that they and the 4 weight vectors stay in 16 registers); W is read once per call. */
#define MICRO(MR)                                                                         \
    INLINE void micro##MR(const Job *j, int i0, int n0) {                                 \
        const int K = j->K;                                                               \
        const float *a[MR], *w[4];                                                        \
        for (int r = 0; r < MR; r++) a[r] = j->A + (size_t)(i0 + r) * j->lda;            \
        for (int c = 0; c < 4; c++) w[c] = j->W + (size_t)(n0 + c) * j->ldw;             \
        v8 acc[MR][4];                                                                    \
        memset(acc, 0, sizeof acc);                                                       \
        /* The next 4 rows of W, fetched while these are used (as in MICRO_H): one line \
         * of each row every 16 values. Only for short rows: from about 4096 values on   \
         * the hardware prefetcher does as well (0.90-0.96x with it there). */           \
        const size_t ahead = (size_t)4 * j->ldw;                                          \
        const int prefetch = PREFETCH_F32 && K <= 2048;                                   \
        int k = 0;                                                                        \
        for (; k + 8 <= K; k += 8) {                                                      \
            v8 wv[4];                                                                     \
            if (prefetch && (k & 15) == 0)                                            \
                for (int c = 0; c < 4; c++) __builtin_prefetch(w[c] + k + ahead);         \
            for (int c = 0; c < 4; c++) wv[c] = load8(w[c] + k);                          \
            for (int r = 0; r < MR; r++) {                                                \
                v8 av = load8(a[r] + k);                                                  \
                for (int c = 0; c < 4; c++) acc[r][c] += av * wv[c];                      \
            }                                                                             \
        }                                                                                 \
        for (int r = 0; r < MR; r++)                                                      \
            for (int c = 0; c < 4; c++) {                                                 \
                float s = hsum(acc[r][c]);                                                \
                for (int kk = k; kk < K; kk++) s += a[r][kk] * w[c][kk];                  \
                store(j, i0 + r, n0 + c, s);                                              \
            }                                                                             \
    }
MICRO(1)
MICRO(2)

INLINE void single(const Job *j, int i, int n) {
    const float *a = j->A + (size_t)i * j->lda, *w = j->W + (size_t)n * j->ldw;
    float s = 0.0f;
    for (int k = 0; k < j->K; k++) s += a[k] * w[k];
    store(j, i, n, s);
}

/* bfloat16 is the top half of a float32 (exact). */
INLINE float bf16(unsigned short h) {
    unsigned int u = (unsigned int)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

INLINE void single_h(const Job *j, int i, int n) {
    const float *a = j->A + (size_t)i * j->lda;
    const unsigned short *w = j->Wh + (size_t)n * j->ldw;
    float s = 0.0f;
    for (int k = 0; k < j->K; k++) s += a[k] * bf16(w[k]);
    store(j, i, n, s);
}

/* The bfloat16-weight kernels (engine/_bf16_rows.h), one per instruction set, chosen
 * at load (vvreader_cpu_level below). */
#if defined(__x86_64__)
#define ROWS_SUFFIX v4
#define ROWS_TARGET __attribute__((target("arch=x86-64-v4")))
#define ROWS_W 16
#define ROWS_MR 6
#include "_bf16_rows.h"
#define ROWS_SUFFIX v3
#define ROWS_TARGET __attribute__((target("arch=x86-64-v3")))
#define ROWS_W 8
#define ROWS_MR 3
#include "_bf16_rows.h"
#endif
#define ROWS_SUFFIX plain
#define ROWS_TARGET
#define ROWS_W 4
#define ROWS_MR 3
#include "_bf16_rows.h"

/* Rows [n0, n1) of W against every row of A, W float32. */
INLINE void rows_f32(const Job *j, int n0, int n1) {
    int n = n0;
    for (; n + 4 <= n1; n += 4) {
        int i = 0;
        for (; i + 2 <= j->M; i += 2) micro2(j, i, n);
        for (; i < j->M; i++) micro1(j, i, n);
    }
    for (; n < n1; n++)
        for (int i = 0; i < j->M; i++) single(j, i, n);
}

static void run_rows_plain(const Job *j, int n0, int n1) { rows_f32(j, n0, n1); }
#if defined(__x86_64__)
__attribute__((target("arch=x86-64-v3"))) static void run_rows_v3(const Job *j, int n0, int n1) {
    rows_f32(j, n0, n1);
}
__attribute__((target("arch=x86-64-v4"))) static void run_rows_v4(const Job *j, int n0, int n1) {
    rows_f32(j, n0, n1);
}
#endif

int vvreader_amx(void);

typedef void (*rows_fn)(const Job *, int, int);
static rows_fn run_rows_f = run_rows_plain, run_rows_h = run_rows_h_plain;
static int level_in_use = 1;

/* The highest level the CPU has, at most `most`: 5: AVX-512 and AMX tiles with bfloat16
 * (products against bfloat16 weights on AMX, engine/_amx.h), 4: AVX-512, 3: AVX2 and FMA,
 * 1: baseline x86-64. The kernels run at it from now on (engine/switches.py: the lower
 * levels measured and tested on a machine that has the higher ones). A `most` below 1
 * only asks. Returns the level in use. */
int vvreader_cpu_level(int most) {
    if (most < 1) return level_in_use;
    int level = cpu_level_at_most(most < 4 ? most : 4);
    if (most >= 5 && level == 4 && vvreader_amx()) level = 5;
#if defined(__x86_64__)
    run_rows_f = level >= 4 ? run_rows_v4 : level == 3 ? run_rows_v3 : run_rows_plain;
    run_rows_h = level >= 4 ? run_rows_h_v4 : level == 3 ? run_rows_h_v3 : run_rows_h_plain;
#endif
    level_in_use = level;
    return level;
}

__attribute__((constructor)) static void choose_level(void) { vvreader_cpu_level(5); }

/* Rows [n0, n1) of W against every row of A. */
static void run_rows(const Job *j, int n0, int n1) {
#if VV_HAVE_AMX
    if (j->Aparts) {
        amx_rows(j->M, j->K, j->Aparts, j->part_size, j->Wh, j->ldw, j->alpha, j->beta, j->C,
                 j->ldc, n0, n1);
        return;
    }
#endif
    if (j->Wh)
        run_rows_h(j, n0, n1);
    else
        run_rows_f(j, n0, n1);
}

/* ---- work shared with one helper thread ----
 *
 * A product is cut into chunks (rows of W, or of A), which the caller and one helper
 * thread take in turn from a shared counter until none is left. On a busy 2-core machine
 * the helper may not get a core for a while: the caller then does every chunk itself and
 * withdraws the task the helper has not started (it waits only for a chunk the helper is
 * in the middle of), instead of spinning until the helper comes round, which is what
 * OpenBLAS's own threads do between the phases of a product. So OpenBLAS runs on one
 * thread (set at load, below) and this is the only place products are split. */

typedef void (*chunk_fn)(const void *arg, int lo, int hi, int worker);

typedef struct {
    chunk_fn fn;
    const void *arg;
    int total, chunk;
    atomic_int next;
} Task;

enum { TASK_IDLE, TASK_POSTED, TASK_RUNNING, TASK_DONE };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int have_helper;
static Task *task;
static atomic_int posted, state, sleeping;

static long futex(atomic_int *addr, int op, int val) {
    return syscall(SYS_futex, (int *)addr, op, val, NULL, NULL, 0);
}

/* Chunks of t until none is left; worker: 0 on the caller's thread, 1 on the helper's. */
static void work(Task *t, int worker) {
    for (;;) {
        const int lo = atomic_fetch_add_explicit(&t->next, t->chunk, memory_order_relaxed);
        if (lo >= t->total) return;
        const int hi = t->total - lo < t->chunk ? t->total : lo + t->chunk;
        t->fn(t->arg, lo, hi, worker);
    }
}

static void *helper(void *arg) {
    (void)arg;
    int seen = 0;
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&posted, memory_order_acquire) == seen) {
            if (++spins < 4000) {
                PAUSE();
                continue;
            }
            atomic_store(&sleeping, 1);
            if (atomic_load(&posted) == seen) futex(&posted, FUTEX_WAIT_PRIVATE, seen);
            atomic_store(&sleeping, 0);
            spins = 0;
        }
        seen = atomic_load_explicit(&posted, memory_order_acquire);
        /* The caller may have withdrawn the task (it did every chunk): then skip it. */
        int expected = TASK_POSTED;
        if (atomic_compare_exchange_strong(&state, &expected, TASK_RUNNING)) {
            work(task, 1);
            atomic_store_explicit(&state, TASK_DONE, memory_order_release);
        }
    }
    return NULL;
}

/* Which few-row products our kernel takes: 0: none (OpenBLAS only); 1: 5 to SMALL_M
 * rows; 2: 2 to SMALL_M rows (the default: the CFG pair's TTS-LM step took 73 ms against
 * 83 to 100 ms with OpenBLAS's sgemv row by row, on the 2-core development machine). VVREADER_BLAS_SMALL sets it at
 * load; vvreader_blas_small() changes it at run time and returns the previous mode. */
static int mode = 2;
/* Whether products may use the helper thread (VVREADER_BLAS_THREADS=1: no). */
static int two_threads = 1;

/* Online CPUs, and whether OpenBLAS's products are split here (on two cores: see the
 * helper thread below); on more cores OpenBLAS keeps its own threads for them. */
static int ncpu, split_products;

extern void scipy_openblas_set_num_threads(int);

__attribute__((constructor)) static void read_env(void) {
    ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu == 2) {
        split_products = 1;
        scipy_openblas_set_num_threads(1);
    }
    const char *env = getenv("VVREADER_BLAS_SMALL");
    if (env != NULL) mode = atoi(env);
    env = getenv("VVREADER_BLAS_THREADS");
    if (env != NULL) two_threads = atoi(env) != 1;
}

/* Products on two threads (1) or on the caller's alone (0); a negative argument
 * only asks. Returns the previous setting. */
int vvreader_blas_threads(int two) {
    int old = two_threads;
    if (two >= 0) two_threads = two != 0;
    return old;
}

int vvreader_blas_small(int m) {
    int old = mode;
    if (m >= 0) mode = m;
    return old;
}

static void start_helper(void) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    have_helper = pthread_create(&t, &attr, helper, NULL) == 0;
    pthread_attr_destroy(&attr);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* A's even and odd columns for the bfloat16 kernels, in a buffer of the calling thread
 * (grown as needed and kept for its next call); 0 when no memory could be had. */
/* Make *buf (a buffer of the calling thread, kept for its next call) hold at least
 * `bytes`, 64-byte aligned; 0 when no memory could be had (*buf is then unchanged). */
static int grow(void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return 1;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) return 0;
    free(*buf);
    *buf = p;
    *cap = bytes;
    return 1;
}

static __thread void *pack_buf;
static __thread size_t pack_cap;

static int pack_even_odd(Job *j) {
    const int half = j->K / 2;
    if (!grow(&pack_buf, &pack_cap, ((size_t)2 * j->M * half + 1) * sizeof(float))) return 0;
    float *e = pack_buf, *o = e + (size_t)j->M * half;
    for (int i = 0; i < j->M; i++) {
        const float *a = j->A + (size_t)i * j->lda;
        for (int q = 0; q < half; q++) {
            e[(size_t)i * half + q] = a[2 * q];
            o[(size_t)i * half + q] = a[2 * q + 1];
        }
    }
    j->Ae = e;
    j->Ao = o;
    j->packed_half = half;
    return 1;
}

/* Run t on the caller's thread and, when allowed and free, the helper's. */
static void run_task(Task *t) {
    atomic_init(&t->next, 0);
    if (!two_threads || t->total <= t->chunk || ncpu < 2 || pthread_mutex_trylock(&lock) != 0) {
        work(t, 0);
        return;
    }
    pthread_once(&once, start_helper);
    if (!have_helper) {
        pthread_mutex_unlock(&lock);
        work(t, 0);
        return;
    }
    task = t;
    atomic_store(&state, TASK_POSTED);
    atomic_fetch_add(&posted, 1); /* seq_cst: ordered before the load of sleeping */
    if (atomic_load(&sleeping)) futex(&posted, FUTEX_WAKE_PRIVATE, 1);
    work(t, 0);
    int expected = TASK_POSTED;
    if (!atomic_compare_exchange_strong(&state, &expected, TASK_IDLE)) {
        /* The helper took it: wait for its last chunk. Spin briefly, then yield: if the
         * helper lost its core, spinning would only keep it from getting one back. */
        for (int spins = 0; atomic_load_explicit(&state, memory_order_acquire) != TASK_DONE;)
            if (++spins < 2000)
                PAUSE();
            else
                sched_yield();
        atomic_store(&state, TASK_IDLE);
    }
    pthread_mutex_unlock(&lock);
}

/* Chunks of about total / 8, a multiple of `align` and at least `least` (so that each
 * stays a product worth waking a thread for). */
static int chunk_of(int total, int align, int least) {
    int c = (total / 8 + align - 1) / align * align;
    return c < least ? least : c;
}

static void rows_chunk(const void *arg, int lo, int hi, int worker) {
    (void)worker;
    run_rows((const Job *)arg, lo, hi);
}

/* A packed for the AMX kernel (engine/_amx.h), in a buffer of the calling thread like
 * pack_buf; 0 when the product is not one for it or no memory could be had. */
static __thread void *amx_buf;
static __thread size_t amx_cap;

/* Whether a product of M rows against a bfloat16 W of rows of K values goes to AMX. With
 * few rows the AVX-512 kernel is not bound by its arithmetic and reads W as fast, or
 * faster for long rows (16 rows of W read side by side, as the tiles do, stream more
 * slowly than 4): AMX from 8 rows, or from 5 for rows of at most 2048 values (measured
 * on a Xeon with AMX, with weights of the shapes of the language models and the
 * decoder's first stage). */
INLINE int amx_rows_pay(int M, int K) { return M >= 8 || (M >= 5 && K <= 2048); }

static int pack_amx(Job *j) {
#if VV_HAVE_AMX
    if (level_in_use < 5 || j->Wh == NULL || j->K % 32 != 0 || !amx_rows_pay(j->M, j->K))
        return 0;
    const size_t part = amx_packed_bytes(j->M, j->K) / 2;
    if (!grow(&amx_buf, &amx_cap, AMX_PARTS * part * sizeof(unsigned short))) return 0;
    amx_pack(j->M, j->K, j->A, j->lda, amx_buf, part);
    j->Aparts = amx_buf;
    j->part_size = part;
    return 1;
#else
    (void)j;
    return 0;
#endif
}

/* Products that ran on AMX tiles so far (for tests). */
static atomic_long amx_calls;

long vvreader_amx_calls(void) { return atomic_load_explicit(&amx_calls, memory_order_relaxed); }

static void few_rows(Job *j, int N) {
    if (pack_amx(j)) {
        atomic_fetch_add_explicit(&amx_calls, 1, memory_order_relaxed);
        /* Chunks of whole tiles of 16 rows of W. */
        const int least = (PARALLEL_MIN / j->K + 15) & ~15;
        Task t = {rows_chunk, j, N, chunk_of(N, 16, least > 16 ? least : 16)};
        run_task(&t);
        return;
    }
    if (j->Wh != NULL && !pack_even_odd(j)) {
        /* No memory for the packed copy: one value at a time. */
        for (int n = 0; n < N; n++)
            for (int i = 0; i < j->M; i++) single_h(j, i, n);
        return;
    }
    /* Chunks of whole groups of 4 rows of W, so that each output is the same sum however
     * the rows are shared out. */
    const int least = (PARALLEL_MIN / (j->K > 0 ? j->K : 1) + 7) & ~7;
    Task t = {rows_chunk, j, N, chunk_of(N, 8, least > 8 ? least : 8)};
    run_task(&t);
}

/* ---- OpenBLAS's products, split into chunks of one thread each ---- */

typedef struct {
    int ta, tb, M, N, K;
    float alpha;
    const float *A;
    int lda;
    const float *B;
    int ldb;
    float beta;
    float *C;
    int ldc;
    int gemv; /* M <= SMALL_GEMV: sgemv per row of A, chunks of W's rows */
    int along_m; /* otherwise: chunks of rows of op(A) (1) or of columns of op(B) (0) */
} Gemm;

static void gemm_chunk(const void *arg, int lo, int hi, int worker) {
    (void)worker;
    const Gemm *g = arg;
    /* Columns lo .. hi of op(B): where they start in B. */
    const float *b = g->tb == NoTrans ? g->B + lo : g->B + (size_t)lo * g->ldb;
    if (g->gemv) {
        for (int i = 0; i < g->M; i++) {
            /* Row i of op(A): contiguous if A is not transposed, else a column of A. */
            const float *x = g->ta == NoTrans ? g->A + (size_t)i * g->lda : g->A + i;
            const int incx = g->ta == NoTrans ? 1 : g->lda;
            float *y = g->C + (size_t)i * g->ldc + lo;
            /* y = op(B)^T x; op(B) is K x N: B stored K x N (NoTrans) -> Trans gemv. */
            if (g->tb == NoTrans)
                scipy_cblas_sgemv(RowMajor, Trans, g->K, hi - lo, g->alpha, b, g->ldb, x, incx,
                                  g->beta, y, 1);
            else
                scipy_cblas_sgemv(RowMajor, NoTrans, hi - lo, g->K, g->alpha, b, g->ldb, x,
                                  incx, g->beta, y, 1);
        }
    } else if (g->along_m) {
        const float *a = g->ta == NoTrans ? g->A + (size_t)lo * g->lda : g->A + lo;
        scipy_cblas_sgemm(RowMajor, g->ta, g->tb, hi - lo, g->N, g->K, g->alpha, a, g->lda,
                          g->B, g->ldb, g->beta, g->C + (size_t)lo * g->ldc, g->ldc);
    } else {
        scipy_cblas_sgemm(RowMajor, g->ta, g->tb, g->M, hi - lo, g->K, g->alpha, g->A, g->lda,
                          b, g->ldb, g->beta, g->C + lo, g->ldc);
    }
}

/* Below this many multiply-adds a product stays on one thread. */
#define SPLIT_MIN (1 << 18)

/* A row-major product through OpenBLAS, in chunks over both threads: sgemv row by row
 * for at most SMALL_GEMV rows, else sgemm along the longer of op(A)'s rows and op(B)'s
 * columns. */
static void split_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    Gemm g = {ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, M <= SMALL_GEMV && K > 0,
              M > N};
    const long macs = (long)M * N * (K > 0 ? K : 1);
    Task t = {gemm_chunk, &g, g.along_m && !g.gemv ? M : N, 0};
    if (!split_products || macs < SPLIT_MIN) {
        t.chunk = t.total;
    } else {
        /* Chunks of at least SPLIT_MIN / 4 multiply-adds and 16 rows or columns. */
        const long per_line = macs / t.total;
        const long least = (SPLIT_MIN / 4 / per_line + 15) & ~15L;
        t.chunk = chunk_of(t.total, 16, least > 16 ? (int)least : 16);
    }
    run_task(&t);
}

/* fn(arg, lo, hi, worker) over [0, total) in chunks of `chunk`, on the caller's thread
 * (worker 0) and, when it is free, the helper's (worker 1); returns when every chunk is
 * done (engine/_cpu_decoder.c: a decoder block's rows). Products inside a chunk, and a
 * call made while another runs, stay on their own thread. On two cores only: see
 * split_products. */
void vvreader_parallel(chunk_fn fn, const void *arg, int total, int chunk) {
    if (total <= 0) return;
    /* On more cores than two, OpenBLAS's own threads split the products inside a chunk:
     * the chunks then run one after the other, never two OpenBLAS calls at once. */
    Task t = {fn, arg, total, chunk > 0 && split_products ? chunk : total};
    run_task(&t);
}

/* C = A W^T (alpha 1, beta 0) through OpenBLAS on both threads, for engine/_cpu_decoder.c's
 * larger products (the few-row kernel of cblas_sgemm is slower from about 16 rows on). */
void vvreader_sgemm(int M, int N, int K, const float *A, int lda, const float *W, int ldw,
                    float *C, int ldc) {
    split_gemm(NoTrans, Trans, M, N, K, 1.0f, A, lda, W, ldw, 0.0f, C, ldc);
}

/* ---- registry of float32 weights that have a bfloat16 copy ----
 *
 * engine/bf16_weights.py registers every float32 weight matrix of the language models and
 * the diffusion head whose values are all bfloat16 (they come from a bfloat16
 * checkpoint): the address MLX passes to cblas_sgemm as B, its shape (rows N, cols K,
 * stored row-major and contiguous, used as x @ W.T), and a bfloat16 copy in the same
 * layout. A few-row product against a registered matrix then reads the copy: half the
 * bytes, the same values, so the same result up to the order of the float32 sums.
 *
 * Open addressing with linear probing on the address; at most half the slots are used,
 * so a miss ends after a short probe. A slot's key is published last (release) and read
 * first (acquire), so a lookup on MLX's thread never sees a half-written entry. Keys are
 * never removed: unregistering clears the copy (the slot then misses), and registering
 * the same address again reuses the slot. The caller keeps the float32 matrix alive while
 * it is registered, so its address cannot be reused by another array meanwhile. */

#define REG_SLOTS 4096 /* a power of two */

typedef struct {
    _Atomic(const float *) key;
    int rows, cols;
    _Atomic(const unsigned short *) wh;
} Entry;

static Entry reg[REG_SLOTS];
static atomic_int reg_used, bf16_on = 1;
static atomic_long bf16_calls;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned slot_of(const void *p) {
    /* Fibonacci hashing of the address (allocations are aligned: drop the low bits). */
    return (unsigned)((((unsigned long)p >> 4) * 0x9E3779B97F4A7C15ul) >> 52) & (REG_SLOTS - 1);
}

/* 1 when registered (or re-registered), 0 when the table is full or the shape invalid. */
int vvreader_register_bf16(const float *w, int rows, int cols, const unsigned short *wh) {
    if (w == NULL || wh == NULL || rows <= 0 || cols <= 0) return 0;
    int ok = 0;
    pthread_mutex_lock(&reg_lock);
    for (unsigned s = slot_of(w), n = 0; n < REG_SLOTS; s = (s + 1) & (REG_SLOTS - 1), n++) {
        const float *k = atomic_load_explicit(&reg[s].key, memory_order_relaxed);
        if (k == w) {
            /* Cleared first, so a concurrent lookup misses rather than pairs the new
             * shape with the old copy. */
            atomic_store_explicit(&reg[s].wh, NULL, memory_order_release);
            reg[s].rows = rows;
            reg[s].cols = cols;
            atomic_store_explicit(&reg[s].wh, wh, memory_order_release);
            ok = 1;
            break;
        }
        if (k == NULL) {
            if (atomic_load(&reg_used) >= REG_SLOTS / 2) break;
            reg[s].rows = rows;
            reg[s].cols = cols;
            atomic_store_explicit(&reg[s].wh, wh, memory_order_relaxed);
            atomic_store_explicit(&reg[s].key, w, memory_order_release);
            atomic_fetch_add(&reg_used, 1);
            ok = 1;
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return ok;
}

/* Forget w's copy (the caller may free it once no product against w is running). */
int vvreader_unregister_bf16(const float *w) {
    int found = 0;
    pthread_mutex_lock(&reg_lock);
    for (unsigned s = slot_of(w), n = 0; n < REG_SLOTS; s = (s + 1) & (REG_SLOTS - 1), n++) {
        const float *k = atomic_load_explicit(&reg[s].key, memory_order_relaxed);
        if (k == NULL) break;
        if (k == w) {
            found = atomic_load(&reg[s].wh) != NULL;
            atomic_store_explicit(&reg[s].wh, NULL, memory_order_release);
            break;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return found;
}

/* The bfloat16 copy of B when B is a registered (N, K) matrix used as x @ B.T. */
static const unsigned short *lookup(const float *B, int N, int K, int ldb) {
    for (unsigned s = slot_of(B);; s = (s + 1) & (REG_SLOTS - 1)) {
        const float *k = atomic_load_explicit(&reg[s].key, memory_order_acquire);
        if (k == NULL) return NULL;
        if (k == B) {
            const unsigned short *wh = atomic_load_explicit(&reg[s].wh, memory_order_acquire);
            return wh != NULL && reg[s].rows == N && reg[s].cols == K && ldb == K ? wh : NULL;
        }
    }
}

/* Use the registered copies (1, the default) or not (0); a negative argument only asks.
 * Returns the previous setting. */
int vvreader_bf16_weights(int on) {
    return on < 0 ? atomic_load(&bf16_on) : atomic_exchange(&bf16_on, on != 0);
}

/* Products that read a registered copy so far (for tests). */
long vvreader_bf16_calls(void) { return atomic_load_explicit(&bf16_calls, memory_order_relaxed); }

/* bf16_from_f32 (engine/_bf16.h), exported. */
CLONES int vvreader_to_bf16(long n, const unsigned int *restrict src,
                 unsigned short *restrict dst) {
    return bf16_from_f32(n, src, dst);
}

/* ---- CBLAS ---- */

void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                 int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (order == ColMajor) {
        /* C^T = op(B)^T op(A)^T: the same product in row-major with A and B swapped. */
        cblas_sgemm(RowMajor, tb, ta, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);
        return;
    }
    if (M <= SMALL_M_BF16 && K > 0 && ta == NoTrans && tb != NoTrans &&
        atomic_load_explicit(&reg_used, memory_order_relaxed) > 0 &&
        atomic_load_explicit(&bf16_on, memory_order_relaxed)) {
        const unsigned short *wh = lookup(B, N, K, ldb);
        if (wh != NULL) {
            Job j = {M, K, alpha, beta, A, lda, NULL, ldb, C, ldc, wh};
            atomic_fetch_add_explicit(&bf16_calls, 1, memory_order_relaxed);
            few_rows(&j, N);
            return;
        }
    }
    if (mode > 0 && M >= (mode == 1 ? SMALL_GEMV + 1 : 2) && M <= SMALL_M && K > 0 &&
        ta == NoTrans && tb != NoTrans) {
        Job j = {M, K, alpha, beta, A, lda, B, ldb, C, ldc, NULL};
        few_rows(&j, N);
        return;
    }
    if (M > 0 && N > 0) split_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* C = A W^T for a few rows of A (M, K) float32 against W (N, K) stored as bfloat16, rows
 * ldw apart (engine/_cpu_decoder.c: the decoder's weight-bound first stage, whose
 * checkpoint weights are bfloat16, so nothing is rounded). Our kernel, on two threads. */
void vvreader_sgemm_bf16w(int M, int N, int K, const float *A, int lda,
                          const unsigned short *W, int ldw, float *C, int ldc) {
    Job j = {M, K, 1.0f, 0.0f, A, lda, NULL, ldw, C, ldc, W};
    few_rows(&j, N);
}

/* ---- products on AMX with W laid out for the tiles (engine/_amx.h) ---- */

/* 1 when this CPU and Linux allow AMX tiles (asked once), else 0. */
int vvreader_amx(void) {
#if VV_HAVE_AMX
    static int usable = -1;
    if (usable < 0) usable = amx_usable();
    return usable;
#else
    return 0;
#endif
}

/* W (N, K) bfloat16 (rows ldw apart) laid out for vvreader_sgemm_tiles into out
 * (N * K values); 0 (nothing written) without AMX or unless N and K are multiples of 32. */
int vvreader_amx_layout(int N, int K, const unsigned short *W, int ldw, unsigned short *out) {
#if VV_HAVE_AMX
    if (!vvreader_amx() || N <= 0 || K <= 0 || N % 32 != 0 || K % 32 != 0) return 0;
    amx_layout(N, K, W, ldw, out);
    return 1;
#else
    (void)N, (void)K, (void)W, (void)ldw, (void)out;
    return 0;
#endif
}

typedef struct {
    int M, N, K;
    const float *A;
    int lda;
    const unsigned short *Wt;
    float *C;
    int ldc;
    unsigned short *split[2]; /* each worker's room for A's parts (tiles_chunk) */
} TilesJob;

/* Rows of A split into bfloat16 parts at a time in a chunk: 4 pairs of tiles' rows. */
#define TILES_ROWS 128

/* Room for A's parts, of the calling thread, one per worker of a product. */
static __thread void *split_buf[2];
static __thread size_t split_cap[2];

static void tiles_chunk(const void *arg, int lo, int hi, int worker) {
#if VV_HAVE_AMX
    const TilesJob *j = arg;
    unsigned short *split = j->split[worker];
    for (int m = lo; m < hi; m += TILES_ROWS) {
        const int M = hi - m < TILES_ROWS ? hi - m : TILES_ROWS;
        const int rows = (M + 31) & ~31;
        amx_split(M, rows, j->K, j->A + (size_t)m * j->lda, j->lda, split);
        amx_gemm_split(M, rows, j->N, j->K, split, j->Wt, j->C + (size_t)m * j->ldc, j->ldc);
    }
#else
    (void)arg, (void)lo, (void)hi, (void)worker;
#endif
}

/* C = A W^T (alpha 1, beta 0) on AMX, W laid out by vvreader_amx_layout (N and K multiples
 * of 32), in chunks of rows of A over both threads; only where vvreader_amx() is 1
 * (engine/_cpu_decoder.c's products with many rows). Returns 0, with nothing done, when no
 * memory could be had for the split rows of A (the caller then takes another product). */
int vvreader_sgemm_tiles(int M, int N, int K, const float *A, int lda, const unsigned short *Wt,
                         float *C, int ldc) {
    if (M <= 0) return 1;
    const size_t bytes = (size_t)AMX_PARTS * TILES_ROWS * K * sizeof(unsigned short);
    for (int w = 0; w < 2; w++)
        if (!grow(&split_buf[w], &split_cap[w], bytes)) return 0;
    atomic_fetch_add_explicit(&amx_calls, 1, memory_order_relaxed);
    TilesJob j = {M, N, K, A, lda, Wt, C, ldc, {split_buf[0], split_buf[1]}};
    const int half = ((M + 1) / 2 + 31) & ~31;
    Task t = {tiles_chunk, &j, M, half < 32 ? 32 : half};
    run_task(&t);
    return 1;
}

void cblas_dgemm(int order, int ta, int tb, int M, int N, int K, double alpha, const double *A,
                 int lda, const double *B, int ldb, double beta, double *C, int ldc) {
    scipy_cblas_dgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cblas_cgemm(int order, int ta, int tb, int M, int N, int K, const void *alpha,
                 const void *A, int lda, const void *B, int ldb, const void *beta, void *C,
                 int ldc) {
    scipy_cblas_cgemm(order, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
