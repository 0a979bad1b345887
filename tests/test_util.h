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

/* Z = L R^T (m x n row-major), with L (m x r) and R (n x r) logical. */
static inline void tu_product(const double *L, const double *R, int m, int n, int r, double *Z) {
    int i, j, p;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            double s = 0;
            for (p = 0; p < r; p++) s += L[(size_t)i * r + p] * R[(size_t)j * r + p];
            Z[(size_t)i * n + j] = s;
        }
}

/* Least-squares LoRA loss 0.5 * ||L R^T - A||_F^2 and its gradients
   gL = E R, gR = E^T L with E = L R^T - A. All logical, double.
   work must hold m * n doubles. Returns the loss. */
static inline double tu_lsq_loss_grad(const double *L, const double *R, const double *A,
                                      int m, int n, int r, double *gL, double *gR, double *work) {
    int i, j, p;
    double loss = 0;
    tu_product(L, R, m, n, r, work);
    for (i = 0; i < m * n; i++) {
        work[i] -= A[i];
        loss += 0.5 * work[i] * work[i];
    }
    if (gL)
        for (i = 0; i < m; i++)
            for (p = 0; p < r; p++) {
                double s = 0;
                for (j = 0; j < n; j++) s += work[(size_t)i * n + j] * R[(size_t)j * r + p];
                gL[(size_t)i * r + p] = s;
            }
    if (gR)
        for (j = 0; j < n; j++)
            for (p = 0; p < r; p++) {
                double s = 0;
                for (i = 0; i < m; i++) s += work[(size_t)i * n + j] * L[(size_t)i * r + p];
                gR[(size_t)j * r + p] = s;
            }
    return loss;
}

/* a desc of an m x r, n x r layer; zero elsewhere (the defaults) */
static inline rite_desc tu_desc(int m, int n, int r, rite_optimizer opt, rite_precision prec) {
    rite_desc d;
    memset(&d, 0, sizeof d);
    d.m = m;
    d.n = n;
    d.r = r;
    d.optimizer = opt;
    d.precision = prec;
    return d;
}

#ifdef LORA_RITE_REF_RITE_H
/* The library's config for the naive reference's (include ref_rite.h
   first): AdamW takes only the fields it has (the library refuses
   LoRA-RITE options on an AdamW layer). */
static inline rite_config tu_rite_config(const ref_config *c, rite_optimizer opt) {
    rite_config rc = rite_config_default(opt);
    rc.lr = c->lr;
    rc.beta1 = c->beta1;
    rc.beta2 = c->beta2;
    rc.eps = c->eps;
    rc.weight_decay = c->weight_decay;
    if (opt == RITE_ADAMW) return rc;
    rc.eps_root = c->eps_root;
    rc.clip = c->clip;
    rc.skip = c->skip;
    rc.cap = c->cap;
    rc.escape = c->escape;
    rc.relative_eps = c->relative_eps;
    rc.balance = c->balance;
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
