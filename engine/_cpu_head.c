/* The diffusion sampler of a speech frame, in C, for Linux CPUs (engine/native_head.py
 * drives it).
 *
 * A frame's latent is the diffusion head run `steps` times (5 by default) over the CFG
 * pair's two rows of every utterance, with the DPM-Solver update between runs
 * (engine/sampler.py). Its products are bound by reading the head's weights; what grows
 * with the rows is the element-wise work (the SiLU of every FFN and of the modulations'
 * input, the adaLN norms and their scale and shift), which MLX's CPU backend runs one value
 * at a time on one thread. Here it runs in vector loops (the level vl_cpu_level picks),
 * and the products go to the shim's cblas_sgemm with MLX's own weight buffers.
 *
 * Same math as engine/sampler.py's sample_latent over engine/diffusion.py's DiffusionHead:
 *   c = silu(cond_proj(cond) + t_emb[step]), the 2B rows' conditions (positive rows, then
 *       negative) for every step; m = c W_mod^T: per layer shift, scale, gate, then the
 *       final layer's shift and scale;
 *   per step: h = noisy_proj([x; x]); per layer h += gate * ffn(norm(h) * (1 + scale) +
 *       shift); v = linear(norm(h) * (1 + scale) + shift); v = v_u + cfg (v_c - v_u);
 *       x0 = alpha x - sigma v; x = ratio x + c0 x0 + c1 x0_prev.
 * Only the order of float32 sums in the norms and exp's last bits differ.
 */
#include <stdlib.h>

#include "_cpu_frame.h"

/* Sizes, weights (row-major as nn.Linear keeps them, (out, in)), the schedule and a
 * workspace. gate/up/down and norm are per layer; where up is NULL, gate holds the gate's
 * `ffn` rows and then the up's. mod is the stacked adaLN weight ((3 layers + 2) hidden,
 * hidden); t_emb the schedule's timestep embeddings (steps, hidden); coef five numbers per
 * step: alpha_s, sigma_s, ratio, c0, c1. */
typedef struct {
    int hidden, latent, ffn, layers, steps;
    float eps;
    const float *noisy_proj, *cond_proj, *mod, *final_linear, *t_emb;
    const float **norm, **gate, **up, **down;
    float *coef;
    float *ws;
    size_t ws_floats;
} Head;

/* c = silu(c + t) over n values. */
INLINE void add_silu(int n, float *restrict c, const float *restrict t) {
    for (int i = 0; i < n; i += 16) {
        const v16 v = load16(c + i) + load16(t + i);
        store16(c + i, v / (1.0f + exp16(-v)));
    }
}

/* y = norm(x) * (1 + scale) + shift over one row of n values (w: the norm's weight, or
 * NULL for none), as engine/diffusion.py's layers. */
INLINE void modulate(int n, float eps, const float *restrict x, const float *restrict w,
                     const float *restrict scale, const float *restrict shift,
                     float *restrict y) {
    const float r = rms_factor(n, eps, x);
    for (int i = 0; i < n; i += 16) {
        v16 v = load16(x + i) * r;
        if (w != NULL) v *= load16(w + i);
        store16(y + i, v * (1.0f + load16(scale + i)) + load16(shift + i));
    }
}

/* a = silu(g) * u over n values, g and u rows of gu (gate then up, ffn each). */
INLINE void swiglu_rows(int rows, int ffn, const float *restrict gu, float *restrict a) {
    for (int r = 0; r < rows; r++) {
        const float *g = gu + (size_t)r * 2 * ffn, *u = g + ffn;
        float *o = a + (size_t)r * ffn;
        for (int i = 0; i < ffn; i += 16) {
            const v16 v = load16(g + i);
            store16(o + i, v / (1.0f + exp16(-v)) * load16(u + i));
        }
    }
}

/* h += gate * f over one row of n values. */
INLINE void gated_add(int n, float *restrict h, const float *restrict gate,
                      const float *restrict f) {
    for (int i = 0; i < n; i += 16) store16(h + i, load16(h + i) + load16(gate + i) * load16(f + i));
}

#define LEVEL(suffix, attr)                                                                  \
    attr static void add_silu_##suffix(int n, float *c, const float *t) { add_silu(n, c, t); } \
    attr static void modulate_##suffix(int n, float eps, const float *x, const float *w,     \
                                       const float *scale, const float *shift, float *y) {  \
        modulate(n, eps, x, w, scale, shift, y);                                             \
    }                                                                                        \
    attr static void swiglu_##suffix(int rows, int ffn, const float *gu, float *a) {         \
        swiglu_rows(rows, ffn, gu, a);                                                       \
    }                                                                                        \
    attr static void gated_add_##suffix(int n, float *h, const float *gate, const float *f) { \
        gated_add(n, h, gate, f);                                                            \
    }
LEVEL(base, )
#if defined(__x86_64__)
LEVEL(v3, V3)
LEVEL(v4, V4)
#endif

static void (*add_silu_at)(int, float *, const float *) = add_silu_base;
static void (*modulate_at)(int, float, const float *, const float *, const float *,
                           const float *, float *) = modulate_base;
static void (*swiglu_at)(int, int, const float *, float *) = swiglu_base;
static void (*gated_add_at)(int, float *, const float *, const float *) = gated_add_base;

static int level_in_use = 1;

/* The highest level the CPU has, at most `most` (4: AVX-512, 3: AVX2 and FMA, 1: baseline),
 * for the sampler's loops; a `most` below 1 only asks. Returns the level in use. */
int vh_cpu_level(int most) {
    if (most < 1) return level_in_use;
    int level = cpu_level_at_most(most);
#if defined(__x86_64__)
    add_silu_at = level >= 4 ? add_silu_v4 : level == 3 ? add_silu_v3 : add_silu_base;
    modulate_at = level >= 4 ? modulate_v4 : level == 3 ? modulate_v3 : modulate_base;
    swiglu_at = level >= 4 ? swiglu_v4 : level == 3 ? swiglu_v3 : swiglu_base;
    gated_add_at = level >= 4 ? gated_add_v4 : level == 3 ? gated_add_v3 : gated_add_base;
#endif
    level_in_use = level;
    return level;
}

__attribute__((constructor)) static void choose_level(void) { vh_cpu_level(4); }

/* The shim's cblas_sgemm and vvreader_parallel (may be NULL: one thread); set before any
 * sampling. */
void vh_set_blas(sgemm_fn gemm, parallel_fn par) {
    frame_sgemm = gemm;
    frame_parallel = par;
}

static const float **copy_ptrs(const float *const *p, int n) {
    const float **out = malloc(sizeof *out * (size_t)n);
    if (out != NULL) memcpy(out, p, sizeof *out * (size_t)n);
    return out;
}

void vh_free(Head *head) {
    if (head == NULL) return;
    free(head->norm);
    free(head->gate);
    free(head->up);
    free(head->down);
    free(head->coef);
    free(head->ws);
    free(head);
}

/* A sampler over the given weights and schedule (the arrays of pointers and coef are
 * copied; the weights and t_emb stay the caller's and must outlive it). NULL when the
 * sizes are not ones the vector loops take (multiples of 16) or memory is short. */
Head *vh_new(int hidden, int latent, int ffn, int layers, int steps, float eps,
             const float *noisy_proj, const float *cond_proj, const float *mod,
             const float *final_linear, const float *t_emb, const float *const *norm,
             const float *const *gate, const float *const *up, const float *const *down,
             const float *coef) {
    if (hidden % 16 || ffn % 16 || latent < 1 || layers < 1 || steps < 1) return NULL;
    Head *head = calloc(1, sizeof *head);
    if (head == NULL) return NULL;
    *head = (Head){hidden, latent, ffn, layers, steps, eps, noisy_proj, cond_proj, mod,
                   final_linear, t_emb};
    head->norm = copy_ptrs(norm, layers);
    head->gate = copy_ptrs(gate, layers);
    head->up = copy_ptrs(up, layers);
    head->down = copy_ptrs(down, layers);
    head->coef = malloc(sizeof(float) * 5 * (size_t)steps);
    if (!head->norm || !head->gate || !head->up || !head->down || !head->coef) {
        vh_free(head);
        return NULL;
    }
    memcpy(head->coef, coef, sizeof(float) * 5 * (size_t)steps);
    return head;
}

/* The latents out (B, latent) of B frames from their noise (B, latent), conditions pos
 * and neg (B, hidden) and CFG scales cfg (B). Returns 0, or -2 when the workspace cannot
 * be allocated. */
int vh_sample(Head *head, int B, const float *noise, const float *pos, const float *neg,
              const float *cfg, float *out) {
    const int H = head->hidden, D = head->latent, F = head->ffn, S = head->steps;
    const int R = 2 * B, pieces = 3 * head->layers + 2;
    const size_t need = (size_t)S * R * H + (size_t)S * R * pieces * H + (size_t)R * H * 3 +
                        (size_t)R * F * 3 + (size_t)R * D * 2 + (size_t)B * D * 2;
    if (need > head->ws_floats) {
        float *ws = realloc(head->ws, need * sizeof(float));
        if (ws == NULL) return -2;
        head->ws = ws;
        head->ws_floats = need;
    }
    float *c = head->ws;                          /* (S, R, H) */
    float *m = c + (size_t)S * R * H;             /* (S, R, pieces H) */
    float *h = m + (size_t)S * R * pieces * H;    /* (R, H) */
    float *y = h + (size_t)R * H, *f = y + (size_t)R * H;
    float *gu = f + (size_t)R * H, *a = gu + (size_t)R * 2 * F; /* (R, 2F), (R, F) */
    float *xin = a + (size_t)R * F, *v = xin + (size_t)R * D;   /* (R, D) each */
    float *x0 = v + (size_t)R * D, *x0_prev = x0 + (size_t)B * D;

    /* The conditions' projection once, then every step's modulations in one product. */
    memcpy(c, pos, sizeof(float) * (size_t)B * H);
    memcpy(c + (size_t)B * H, neg, sizeof(float) * (size_t)B * H);
    product(R, H, H, c, head->cond_proj, 0.0f, y, H);
    for (int s = 0; s < S; s++)
        for (int r = 0; r < R; r++) {
            float *row = c + ((size_t)s * R + r) * H;
            memcpy(row, y + (size_t)r * H, sizeof(float) * H);
            add_silu_at(H, row, head->t_emb + (size_t)s * H);
        }
    product(S * R, pieces * H, H, c, head->mod, 0.0f, m, pieces * H);

    memcpy(out, noise, sizeof(float) * (size_t)B * D);
    for (int s = 0; s < S; s++) {
        const float *mods = m + (size_t)s * R * pieces * H;
        /* Row r's piece p of this step. */
#define PIECE(r, p) (mods + (size_t)(r) * pieces * H + (size_t)(p) * H)
        memcpy(xin, out, sizeof(float) * (size_t)B * D);
        memcpy(xin + (size_t)B * D, out, sizeof(float) * (size_t)B * D);
        product(R, H, D, xin, head->noisy_proj, 0.0f, h, H);
        for (int l = 0; l < head->layers; l++) {
            for (int r = 0; r < R; r++)
                modulate_at(H, head->eps, h + (size_t)r * H, head->norm[l], PIECE(r, 3 * l + 1),
                            PIECE(r, 3 * l), y + (size_t)r * H);
            if (head->up[l] == NULL) {
                product(R, 2 * F, H, y, head->gate[l], 0.0f, gu, 2 * F);
            } else {
                product(R, F, H, y, head->gate[l], 0.0f, gu, 2 * F);
                product(R, F, H, y, head->up[l], 0.0f, gu + F, 2 * F);
            }
            swiglu_at(R, F, gu, a);
            product(R, H, F, a, head->down[l], 0.0f, f, H);
            for (int r = 0; r < R; r++)
                gated_add_at(H, h + (size_t)r * H, PIECE(r, 3 * l + 2), f + (size_t)r * H);
        }
        const int fin = 3 * head->layers;
        for (int r = 0; r < R; r++)
            modulate_at(H, head->eps, h + (size_t)r * H, NULL, PIECE(r, fin + 1), PIECE(r, fin),
                        y + (size_t)r * H);
#undef PIECE
        product(R, D, H, y, head->final_linear, 0.0f, v, D);
        const float *k = head->coef + 5 * (size_t)s;
        const float alpha = k[0], sigma = k[1], ratio = k[2], c0 = k[3], c1 = k[4];
        for (int b = 0; b < B; b++)
            for (int d = 0; d < D; d++) {
                const size_t i = (size_t)b * D + d;
                const float vc = v[i], vu = v[(size_t)B * D + i];
                const float guided = vu + cfg[b] * (vc - vu);
                const float x = out[i];
                const float x0_now = alpha * x - sigma * guided;
                float next = ratio * x + c0 * x0_now;
                if (c1 != 0.0f && s > 0) next += c1 * x0_prev[i];
                x0[i] = x0_now;
                out[i] = next;
            }
        memcpy(x0_prev, x0, sizeof(float) * (size_t)B * D);
    }
    return 0;
}
