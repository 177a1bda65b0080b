/* Positions of a Qwen2 stack's cache rows, in C, for Linux CPUs (engine/native_lm.py drives
 * it): the steps of the TTS LM and the text LM.
 *
 * A speech frame runs the TTS LM (20 Qwen2 blocks) one position on for every row of the
 * batch: the CFG pair of each utterance; a text window runs L positions of one row of each
 * LM. The matrix products are bound by reading the weights, and a few rows more cost
 * little there; what grows with the rows is the element-wise work (the SiLU of the
 * 4864-wide MLP, the attention's softmax over the cache, RoPE, the norms), which MLX's CPU
 * backend runs one value at a time on one thread, its exp a scalar polynomial through
 * libm's fmaf. Four utterances (8 rows) spent about 65 ms of a 95 ms frame step there, one
 * utterance about 20 of 47. Here that work runs in vector loops (target("arch=x86-64-v4"/
 * "v3") clones, picked by vl_cpu_level) and is shared out over the BLAS shim's two
 * threads; the products go to the same cblas_sgemm MLX calls (the shim's, which reads the
 * weights' registered bfloat16 copies), with the same float32 weight pointers, so they are
 * the very products MLX would compute.
 *
 * Same math as engine/qwen2.py's DecoderLayer over engine/steps.py's cache slots: only the
 * order of float32 sums in the attention, the norms and exp's last bits differ. The caches
 * are read, never written: the new key and value of every query and layer are returned,
 * and the caller writes them into its caches (column `columns[q]` of the query's row),
 * which this step already attends to as written. */
#include <stdlib.h>

#include "_cpu_frame.h"
#include "_cpu_level.h"

/* The shim's cblas_sgemm and vvreader_parallel (may be NULL: one thread); set before any
 * step. */
void vl_set_blas(sgemm_fn gemm, parallel_fn par) {
    frame_sgemm = gemm;
    frame_parallel = par;
}

/* A step's sizes, weights and workspace. Weights are per layer, row-major as nn.Linear
 * keeps them (out, in): q, k and v stacked (qkv, with their biases), o, gate, up, down;
 * where up is NULL, gate holds the gate's `inter` rows and then the up's (stacked). */
typedef struct {
    int layers, hidden, heads, kv, hd, inter;
    float eps, theta;
    const float **in_norm, **post_norm, **qkv, **qkv_bias, **o, **gate, **up, **down;
    const float *final_norm;
    float *ws;
    size_t ws_floats;
    int *first; /* each query's row's first query (vl_step) */
    int first_size;
} LM;

/* What the chunk functions of one layer read. */
typedef struct {
    const LM *lm;
    int cap;
    const float *keys, *values; /* this layer's cache (rows, kv, cap, hd) */
    const unsigned char *valid; /* (rows, cap) */
    const int *rows_of;         /* each query's cache row (NULL: query q is row q) */
    const int *first;           /* each query's row's first query in this step */
    const int *columns;
    const float *qkv;    /* (queries, (heads + 2 kv) hd), after RoPE */
    float *attn;         /* (queries, heads hd) */
    float *scores;       /* (queries, heads, cap) */
    float *gate_up, *act; /* (queries, 2 inter), (queries, inter) */
} Layer;

/* Attention of the query heads of KV head g of query q (item = q * kv + g). Query q is at
 * column c = columns[q] of its cache row, and the queries of one row are consecutive with
 * consecutive columns from c0, that of the row's first query: q attends to the row's
 * valid columns before c0 and to columns c0..c, whose keys and values are this step's
 * (in qkv: a text window's earlier tokens and its own). softmax(q k^T / sqrt(hd)) v, as
 * engine/qwen2.py's attention over engine/steps.py's slots, with masked columns left out
 * rather than set to -inf. */
INLINE void attention(const Layer *L, int item) {
    const LM *lm = L->lm;
    const int hd = lm->hd, kv = lm->kv, group = lm->heads / kv, cap = L->cap;
    const int q = item / kv, g = item % kv, col = L->columns[q];
    const int row = L->rows_of ? L->rows_of[q] : q, f = L->first[q], c0 = L->columns[f];
    const int width = (lm->heads + 2 * kv) * hd, n = col + 1;
    const float *query = L->qkv + (size_t)q * width + (size_t)g * group * hd;
    /* Column j >= c0's key is query (f + j - c0)'s; its value kv heads further. */
    const float *new_k = L->qkv + (size_t)(lm->heads + g) * hd;
    const size_t slot = ((size_t)row * kv + g) * cap * hd;
    const float *keys = L->keys + slot, *values = L->values + slot;
    const unsigned char *valid = L->valid + (size_t)row * cap;
    float *scores = L->scores + ((size_t)q * lm->heads + (size_t)g * group) * cap;
    const float scale = 1.0f / sqrtf((float)hd);
#define SEEN(j) ((j) >= c0 || valid[j])
#define KEY(j) ((j) >= c0 ? new_k + (size_t)(f + (j) - c0) * width : keys + (size_t)(j) * hd)
    float most[16];
    for (int h = 0; h < group; h++) most[h] = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (!SEEN(j)) {
            for (int h = 0; h < group; h++) scores[(size_t)h * cap + j] = 0.0f;
            continue;
        }
        const float *k = KEY(j);
        for (int h = 0; h < group; h++) {
            const float *qh = query + (size_t)h * hd;
            v16 acc = {0};
            for (int d = 0; d < hd; d += 16) acc += load16(qh + d) * load16(k + d);
            const float s = hsum(acc) * scale;
            scores[(size_t)h * cap + j] = s;
            if (s > most[h]) most[h] = s;
        }
    }
    float total[16];
    for (int h = 0; h < group; h++) {
        float *s = scores + (size_t)h * cap;
        const v16 m = splat(most[h]);
        v16 acc = {0};
        int j = 0;
        for (; j + 16 <= n; j += 16) {
            v16 e = exp16(load16(s + j) - m);
            for (int t = 0; t < 16; t++)
                if (!SEEN(j + t)) e[t] = 0.0f;
            store16(s + j, e);
            acc += e;
        }
        float sum = hsum(acc);
        for (; j < n; j++) {
            s[j] = SEEN(j) ? exp1(s[j] - most[h]) : 0.0f;
            sum += s[j];
        }
        total[h] = sum;
    }
    float *out = L->attn + (size_t)q * lm->heads * hd + (size_t)g * group * hd;
    memset(out, 0, sizeof(float) * (size_t)group * hd);
    for (int j = 0; j < n; j++) {
        if (!SEEN(j)) continue;
        const float *v = j >= c0 ? KEY(j) + (size_t)kv * hd : values + (size_t)j * hd;
        for (int h = 0; h < group; h++) {
            const float p = scores[(size_t)h * cap + j];
            float *o = out + (size_t)h * hd;
            for (int d = 0; d < hd; d += 16) store16(o + d, load16(o + d) + p * load16(v + d));
        }
    }
#undef SEEN
#undef KEY
    for (int h = 0; h < group; h++) {
        const float inv = 1.0f / total[h];
        float *o = out + (size_t)h * hd;
        for (int d = 0; d < hd; d += 16) store16(o + d, load16(o + d) * inv);
    }
}

/* act = silu(gate) * up = gate / (1 + exp(-gate)) * up for values [lo, hi) of rows x inter
 * (chunks are multiples of 16 and inter is). */
INLINE void swiglu(const Layer *L, int lo, int hi) {
    const int inter = L->lm->inter;
    for (int i = lo; i < hi; i += 16) {
        const int r = i / inter, c = i % inter;
        const float *gu = L->gate_up + (size_t)r * 2 * inter;
        const v16 g = load16(gu + c);
        store16(L->act + i, g / (1.0f + exp16(-g)) * load16(gu + inter + c));
    }
}

#define LEVEL(suffix, attr)                                                                  \
    attr static void attention_##suffix(const void *arg, int lo, int hi, int worker) {       \
        (void)worker;                                                                        \
        for (int item = lo; item < hi; item++) attention(arg, item);                         \
    }                                                                                        \
    attr static void swiglu_##suffix(const void *arg, int lo, int hi, int worker) {          \
        (void)worker;                                                                        \
        swiglu(arg, lo, hi);                                                                 \
    }                                                                                        \
    attr static void norm_##suffix(int rows, int n, float eps, const float *x,               \
                                   const float *w, float *y) {                               \
        for (int r = 0; r < rows; r++)                                                       \
            rms_norm(n, eps, x + (size_t)r * n, w, y + (size_t)r * n);                       \
    }
LEVEL(base, )
#if defined(__x86_64__)
LEVEL(v3, V3)
LEVEL(v4, V4)
#endif

static chunk_fn attention_at = attention_base, swiglu_at = swiglu_base;
static void (*norm_at)(int, int, float, const float *, const float *, float *) = norm_base;
static int level_in_use = 1;

/* The highest level the CPU has, at most `most` (4: AVX-512, 3: AVX2 and FMA, 1: baseline),
 * for the step's loops; a `most` below 1 only asks. Returns the level in use. */
int vl_cpu_level(int most) {
    if (most < 1) return level_in_use;
    int level = cpu_level_at_most(most);
#if defined(__x86_64__)
    attention_at = level >= 4 ? attention_v4 : level == 3 ? attention_v3 : attention_base;
    swiglu_at = level >= 4 ? swiglu_v4 : level == 3 ? swiglu_v3 : swiglu_base;
    norm_at = level >= 4 ? norm_v4 : level == 3 ? norm_v3 : norm_base;
#endif
    level_in_use = level;
    return level;
}

__attribute__((constructor)) static void choose_level(void) { vl_cpu_level(4); }

static const float **copy_ptrs(const float *const *p, int n) {
    const float **out = malloc(sizeof *out * (size_t)n);
    if (out != NULL) memcpy(out, p, sizeof *out * (size_t)n);
    return out;
}

void vl_free(LM *lm);

/* A step over the given weights (pointer arrays of `layers` entries, copied; the weights
 * themselves stay the caller's and must outlive the step); final_norm may be NULL. NULL
 * when the sizes are not ones the vector loops take (multiples of 16) or memory is short. */
LM *vl_new(int layers, int hidden, int heads, int kv, int hd, int inter, float eps,
           float theta, const float *const *in_norm, const float *const *post_norm,
           const float *const *qkv, const float *const *qkv_bias, const float *const *o,
           const float *const *gate, const float *const *up, const float *const *down,
           const float *final_norm) {
    if (layers < 1 || hidden % 16 || hd % 16 || inter % 16 || kv < 1 || heads % kv ||
        heads / kv > 16 || hd / 2 > 256)
        return NULL;
    LM *lm = calloc(1, sizeof *lm);
    if (lm == NULL) return NULL;
    *lm = (LM){layers, hidden, heads, kv, hd, inter, eps, theta};
    lm->in_norm = copy_ptrs(in_norm, layers);
    lm->post_norm = copy_ptrs(post_norm, layers);
    lm->qkv = copy_ptrs(qkv, layers);
    lm->qkv_bias = copy_ptrs(qkv_bias, layers);
    lm->o = copy_ptrs(o, layers);
    lm->gate = copy_ptrs(gate, layers);
    lm->up = copy_ptrs(up, layers);
    lm->down = copy_ptrs(down, layers);
    lm->final_norm = final_norm;
    if (!lm->in_norm || !lm->post_norm || !lm->qkv || !lm->qkv_bias || !lm->o ||
        !lm->gate || !lm->up || !lm->down) {
        vl_free(lm);
        return NULL;
    }
    return lm;
}

void vl_free(LM *lm) {
    if (lm == NULL) return;
    free(lm->in_norm);
    free(lm->post_norm);
    free(lm->qkv);
    free(lm->qkv_bias);
    free(lm->o);
    free(lm->gate);
    free(lm->up);
    free(lm->down);
    free(lm->ws);
    free(lm->first);
    free(lm);
}

/* Rotate-half RoPE of one head (hd values) at the angles whose cos and sin are given. */
static void rope_head(int hd, float *x, const float *cos_t, const float *sin_t) {
    const int half = hd / 2;
    for (int i = 0; i < half; i++) {
        const float a = x[i], b = x[i + half];
        x[i] = a * cos_t[i] - b * sin_t[i];
        x[i + half] = a * sin_t[i] + b * cos_t[i];
    }
}

/* Every query one position on through every layer and the final norm. A query is a
 * position of a cache row: a speech frame has one per row (rows_of NULL), a text window L
 * consecutive ones in its row.
 *   x (queries, hidden): the queries' inputs; out (queries, hidden): their outputs.
 *   keys[l], values[l] (rows, kv, cap, hd): layer l's cache; valid (rows, cap): which
 *   columns hold a key.
 *   rows_of[q]: query q's cache row (NULL: row q); a row's queries are consecutive.
 *   columns[q]: the column its new key goes to (attended as if written: by it and the
 *   row's later queries), consecutive within a row; positions[q]: its RoPE position.
 *   new_k, new_v (layers, queries, kv, hd): the new keys (after RoPE) and values.
 * Returns 0; -1 when a row, column or position is out of range or a row's queries are
 * not consecutive in queries and columns (nothing is read then), -2 when the workspace
 * cannot be allocated. */
int vl_step(LM *lm, int queries, const float *x, float *out, const float *const *keys,
            const float *const *values, int rows, int cap, const unsigned char *valid,
            const int *rows_of, const int *columns, const int *positions, float *new_k,
            float *new_v) {
    if (queries < 1 || rows < 1 || cap < 1) return -1;
    if (queries > lm->first_size) {
        int *first = realloc(lm->first, sizeof(int) * (size_t)queries);
        if (first == NULL) return -2;
        lm->first = first;
        lm->first_size = queries;
    }
    for (int q = 0; q < queries; q++) {
        const int row = rows_of ? rows_of[q] : q;
        if (row < 0 || row >= rows || columns[q] < 0 || columns[q] >= cap || positions[q] < 0)
            return -1;
        const int same = q > 0 && (rows_of ? rows_of[q - 1] : q - 1) == row;
        if (same && columns[q] != columns[q - 1] + 1) return -1;
        for (int p = 0; !same && p < q; p++)
            if ((rows_of ? rows_of[p] : p) == row) return -1; /* the row came before */
        lm->first[q] = same ? lm->first[q - 1] : q;
    }
    const int H = lm->hidden, hd = lm->hd, kv = lm->kv, heads = lm->heads, I = lm->inter;
    const int width = (heads + 2 * kv) * hd, half = hd / 2;
    const size_t Q = (size_t)queries;
    const size_t need = Q * (3 * H + width + heads * hd + (size_t)heads * cap + 3 * I) + Q * hd;
    if (need > lm->ws_floats) {
        float *ws = realloc(lm->ws, need * sizeof(float));
        if (ws == NULL) return -2;
        lm->ws = ws;
        lm->ws_floats = need;
    }
    float *h = lm->ws, *xn = h + Q * H, *tmp = xn + Q * H;
    float *qkv = tmp + Q * H, *attn = qkv + Q * width;
    float *scores = attn + Q * heads * hd;
    float *gate_up = scores + Q * heads * cap, *act = gate_up + Q * 2 * I;
    float *rot = act + Q * I; /* cos then sin, half each per query */

    /* inv_freq_i = theta^(-i / half), angle = position * inv_freq_i, in float32 as
     * mx.fast.rope computes them. */
    const float log_theta = logf(lm->theta);
    for (int q = 0; q < queries; q++) {
        float *c = rot + (size_t)q * hd, *s = c + half;
        for (int i = 0; i < half; i++) {
            const float angle = (float)positions[q] * expf(-(float)i * log_theta / (float)half);
            c[i] = cosf(angle);
            s[i] = sinf(angle);
        }
    }

    memcpy(h, x, sizeof(float) * Q * H);
    for (int l = 0; l < lm->layers; l++) {
        norm_at(queries, H, lm->eps, h, lm->in_norm[l], xn);
        for (int q = 0; q < queries; q++)
            memcpy(qkv + (size_t)q * width, lm->qkv_bias[l], sizeof(float) * width);
        product(queries, width, H, xn, lm->qkv[l], 1.0f, qkv, width);
        for (int q = 0; q < queries; q++) {
            float *row = qkv + (size_t)q * width;
            const float *c = rot + (size_t)q * hd, *s = c + half;
            for (int n = 0; n < heads + kv; n++) rope_head(hd, row + (size_t)n * hd, c, s);
            const size_t at = (((size_t)l * queries + q) * kv) * hd;
            memcpy(new_k + at, row + (size_t)heads * hd, sizeof(float) * kv * hd);
            memcpy(new_v + at, row + (size_t)(heads + kv) * hd, sizeof(float) * kv * hd);
        }
        Layer L = {lm, cap, keys[l], values[l], valid, rows_of, lm->first, columns, qkv, attn,
                   scores, gate_up, act};
        run_parallel(attention_at, &L, queries * kv, 1);
        product(queries, H, heads * hd, attn, lm->o[l], 0.0f, tmp, H);
        for (size_t i = 0; i < Q * H; i++) h[i] += tmp[i];
        norm_at(queries, H, lm->eps, h, lm->post_norm[l], xn);
        if (lm->up[l] == NULL) {
            product(queries, 2 * I, H, xn, lm->gate[l], 0.0f, gate_up, 2 * I);
        } else {
            product(queries, I, H, xn, lm->gate[l], 0.0f, gate_up, 2 * I);
            product(queries, I, H, xn, lm->up[l], 0.0f, gate_up + I, 2 * I);
        }
        /* Chunks of a quarter of a row (at least 16 values). */
        run_parallel(swiglu_at, &L, queries * I, (I / 4 + 15) / 16 * 16);
        product(queries, H, I, act, lm->down[l], 0.0f, tmp, H);
        for (size_t i = 0; i < Q * H; i++) h[i] += tmp[i];
    }
    if (lm->final_norm != NULL)
        norm_at(queries, H, lm->eps, h, lm->final_norm, out);
    else
        memcpy(out, h, sizeof(float) * Q * H);
    return 0;
}
