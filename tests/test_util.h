/* test_util.h - small helpers shared by the tests: a seeded random number
   generator, layout conversion, and a least-squares LoRA loss.

   Factors are handled in the tests in "logical" form: k x r, row-major,
   packed, double (element (i, j) at X[i * r + j]). to_layout/from_layout
   convert to and from the storage a layer was configured with. */
#ifndef LORA_RITE_TEST_UTIL_H
#define LORA_RITE_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lora_rite.h"

/* splitmix64: deterministic, platform independent */
typedef struct tu_rng { uint64_t s; } tu_rng;

static inline uint64_t tu_next(tu_rng *g) {
    uint64_t z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) */
static inline double tu_uniform(tu_rng *g) { return (double)(tu_next(g) >> 11) * (1.0 / 9007199254740992.0); }

/* standard normal (Box-Muller) */
static inline double tu_normal(tu_rng *g) {
    double u1 = tu_uniform(g), u2 = tu_uniform(g);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static inline void tu_fill_normal(tu_rng *g, double *x, size_t count, double scale) {
    size_t i;
    for (i = 0; i < count; i++) x[i] = scale * tu_normal(g);
}

/* Storage index of logical element (i, j) of a k x r factor. */
static inline size_t tu_index(rite_layout layout, int ld, int i, int j) {
    return layout == RITE_RANK_LAST ? (size_t)i * (size_t)ld + (size_t)j
                                    : (size_t)j * (size_t)ld + (size_t)i;
}

/* Number of elements a buffer in this storage needs. */
static inline size_t tu_storage_count(rite_layout layout, int ld, int k, int r) {
    return layout == RITE_RANK_LAST ? (size_t)(k - 1) * (size_t)ld + (size_t)r
                                    : (size_t)(r - 1) * (size_t)ld + (size_t)k;
}

/* logical (k x r packed row-major) -> storage; padding is left untouched */
static inline void tu_to_layout_d(const double *logical, int k, int r, rite_layout layout, int ld, double *out) {
    int i, j;
    for (i = 0; i < k; i++)
        for (j = 0; j < r; j++) out[tu_index(layout, ld, i, j)] = logical[(size_t)i * r + j];
}
static inline void tu_from_layout_d(const double *stored, int k, int r, rite_layout layout, int ld, double *logical) {
    int i, j;
    for (i = 0; i < k; i++)
        for (j = 0; j < r; j++) logical[(size_t)i * r + j] = stored[tu_index(layout, ld, i, j)];
}
static inline void tu_to_layout_f(const double *logical, int k, int r, rite_layout layout, int ld, float *out) {
    int i, j;
    for (i = 0; i < k; i++)
        for (j = 0; j < r; j++) out[tu_index(layout, ld, i, j)] = (float)logical[(size_t)i * r + j];
}
static inline void tu_from_layout_f(const float *stored, int k, int r, rite_layout layout, int ld, double *logical) {
    int i, j;
    for (i = 0; i < k; i++)
        for (j = 0; j < r; j++) logical[(size_t)i * r + j] = (double)stored[tu_index(layout, ld, i, j)];
}

/* C = A B (rows x cols, row-major), naive, with the sums over p in order.
   A(i, p) = A[i * a_i + p * a_p] and B(p, j) = B[p * b_p + j * b_j]: the
   strides give transposes (row-major m x n X: X^T has strides 1, n). */
static inline void tu_matmul(const double *A, size_t a_i, size_t a_p, const double *B, size_t b_p, size_t b_j,
                             int rows, int inner, int cols, double *C) {
    int i, j, p;
    for (i = 0; i < rows; i++)
        for (j = 0; j < cols; j++) {
            double s = 0;
            for (p = 0; p < inner; p++)
                s += A[(size_t)i * a_i + (size_t)p * a_p] * B[(size_t)p * b_p + (size_t)j * b_j];
            C[(size_t)i * cols + j] = s;
        }
}

/* Z = L R^T (m x n row-major), with L (m x r) and R (n x r) logical. */
static inline void tu_product(const double *L, const double *R, int m, int n, int r, double *Z) {
    tu_matmul(L, (size_t)r, 1, R, 1, (size_t)r, m, r, n, Z);
}

/* Least-squares LoRA loss 0.5 * ||L R^T - A||_F^2 and its gradients
   gL = E R, gR = E^T L with E = L R^T - A. All logical, double.
   work must hold m * n doubles. Returns the loss. */
static inline double tu_lsq_loss_grad(const double *L, const double *R, const double *A,
                                      int m, int n, int r, double *gL, double *gR, double *work) {
    int i;
    double loss = 0;
    tu_product(L, R, m, n, r, work);
    for (i = 0; i < m * n; i++) {
        work[i] -= A[i];
        loss += 0.5 * work[i] * work[i];
    }
    if (gL) tu_matmul(work, (size_t)n, 1, R, (size_t)r, 1, m, n, r, gL);   /* E R */
    if (gR) tu_matmul(work, 1, (size_t)n, L, (size_t)r, 1, n, m, r, gR);   /* E^T L */
    return loss;
}

/* FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3): the
   checksum the checkpoints end with */
static inline uint64_t tu_fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 14695981039346656037ull;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Counting allocator hooks: every request, the live blocks and their bytes;
   refuses the fail_at-th request (1-based; 0 = never). */
enum { TU_MAX_LIVE = 256 };
typedef struct tu_count_alloc {
    long requests, allocs, frees, bad_frees, fail_at;
    size_t requested, bytes, live_bytes; /* asked for; allocated in all; live */
    void *live[TU_MAX_LIVE];
    size_t size[TU_MAX_LIVE];
    int nlive;
} tu_count_alloc;

static inline void *tu_count_malloc(size_t size, void *user) {
    tu_count_alloc *c = (tu_count_alloc *)user;
    void *p;
    c->requests++;
    if (c->fail_at && c->requests == c->fail_at) return NULL;
    c->requested += size;
    if (c->nlive == TU_MAX_LIVE || !(p = malloc(size))) return NULL;
    c->allocs++;
    c->bytes += size;
    c->live_bytes += size;
    c->live[c->nlive] = p;
    c->size[c->nlive++] = size;
    return p;
}

static inline void tu_count_free(void *ptr, void *user) {
    tu_count_alloc *c = (tu_count_alloc *)user;
    int i = 0;
    if (!ptr) return;
    while (i < c->nlive && c->live[i] != ptr) i++;
    if (i == c->nlive) { /* not ours, or freed twice: do not touch it */
        c->bad_frees++;
        return;
    }
    c->live_bytes -= c->size[i];
    c->nlive--;
    c->live[i] = c->live[c->nlive];
    c->size[i] = c->size[c->nlive];
    c->frees++;
    free(ptr);
}

static inline rite_allocator tu_count_hooks(tu_count_alloc *c) {
    rite_allocator a;
    a.alloc = tu_count_malloc;
    a.release = tu_count_free;
    a.user_data = c;
    return a;
}

/* tu_lsq_loss_grad's gradients, multiplied by `spike` (if > 0) at the steps
   s with s % 7 == 3: outlier batches, for skipping and clipping */
static inline void tu_lsq_grad_spiked(const double *L, const double *R, const double *A, int m, int n, int r, int s,
                                      double spike, double *gL, double *gR, double *work) {
    int i;
    tu_lsq_loss_grad(L, R, A, m, n, r, gL, gR, work);
    if (spike > 0 && s % 7 == 3) {
        for (i = 0; i < m * r; i++) gL[i] *= spike;
        for (i = 0; i < n * r; i++) gR[i] *= spike;
    }
}

/* a desc of an m x r, n x r layer; zero elsewhere (the defaults) */
static inline rite_desc tu_desc(int m, int n, int r, rite_optimizer opt, rite_precision prec) {
    const rite_desc d = {.m = m, .n = n, .r = r, .optimizer = opt, .precision = prec};
    return d;
}

/* The rite_config fields both optimizers have, and those only LoRA-RITE
   has (the library refuses them on an AdamW layer), as X-macro lists. */
#define TU_SHARED_FIELDS(X) X(lr) X(beta1) X(beta2) X(eps) X(weight_decay)
#define TU_RITE_FIELDS(X) X(eps_root) X(clip) X(skip) X(cap) X(escape) X(relative_eps) X(balance)

#ifdef LORA_RITE_REF_RITE_H
/* The library's config for the naive reference's (include ref_rite.h
   first): AdamW takes only the fields it has. */
static inline rite_config tu_rite_config(const ref_config *c, rite_optimizer opt) {
    rite_config rc = rite_config_default(opt);
#define TU_COPY_(field) rc.field = c->field;
    TU_SHARED_FIELDS(TU_COPY_)
    if (opt == RITE_LORA_RITE) {
        TU_RITE_FIELDS(TU_COPY_)
    }
#undef TU_COPY_
    return rc;
}
#endif

/* max_i |a_i - b_i| / max(max_i |b_i|, tiny): relative difference of two arrays */
static inline double tu_rel_diff(const double *a, const double *b, size_t count) {
    double num = 0, den = 0;
    size_t i;
    for (i = 0; i < count; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > num || d != d) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / (den > 1e-300 ? den : 1e-300);
}

#endif
