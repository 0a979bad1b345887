/* ref_rite.h - a naive double-precision reference of SPEC.md for the tests.

   Written straight from SPEC.md, steps 1-16, with no attempt at speed: plain
   loops over logical factors (k x r, row-major, packed, double; element
   (i, j) at X[i * r + j]) and freshly allocated temporaries. LAPACKE is used
   only for the thin QR (dgeqrf + dorgqr), the SVD behind the pseudo-inverse
   (dgesvd) and the symmetric eigendecompositions (dsyev). It shares no code
   with lora_rite.h, so the tests can hold the library against it.

   Every option of SPEC.md is supported, and several layers can be stepped
   together so that clipping uses the global norm over all of them (step 5).
   The reference also counts how often skipping, clipping, capping and the
   escaped mass were active, so a test can check that it exercised them.

   Also here: a naive elementwise AdamW (SPEC.md, "AdamW baseline"). */
#ifndef LORA_RITE_REF_RITE_H
#define LORA_RITE_REF_RITE_H

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

/* Hyper-parameters, with the meaning SPEC.md gives them. */
typedef struct ref_config {
    double lr, beta1, beta2, eps, eps_root;
    double clip, skip, cap, weight_decay;
    int escape, relative_eps, balance;
    /* machine epsilon of the pseudo-inverse threshold (step 1):
       0 means DBL_EPSILON; FLT_EPSILON mimics a float32 run */
    double pinv_eps;
} ref_config;

/* The defaults listed at the end of SPEC.md's step list; every field not
   named is 0 (eps_root, cap, weight_decay, the switches, pinv_eps). */
static inline ref_config ref_config_default(void) {
    const ref_config c = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .clip = 1.0, .skip = 1.0};
    return c;
}

/* Every option on at once, at values where each one acts. */
static inline ref_config ref_config_all_options(void) {
    ref_config c = ref_config_default();
    c.lr = 0.02;
    c.clip = c.skip = 0.5;
    c.cap = 0.7;
    c.eps_root = c.weight_decay = 0.05;
    c.escape = c.relative_eps = c.balance = 1;
    return c;
}

/* One LoRA layer: its state (SPEC.md "Per-layer state"), the values carried
   from the first phase of a step to the second, and activity counters. */
typedef struct ref_layer {
    int m, n, r;
    ref_config cfg;
    /* state */
    double *ML, *MR;        /* m x r, n x r first moments */
    double *VL, *VR;        /* r x r second moments */
    double rhoL, rhoR;      /* escaped mass */
    double *UL_prev;        /* m x r basis of L at the previous step (zero at start) */
    double *UR_prev;        /* n x r basis of R at the previous step (zero at start) */
    long long k;            /* completed steps */
    /* carried from ref_prepare to ref_finish */
    double *UL, *UR;        /* bases of this step */
    double *TLp, *TRp;      /* pseudo-inverses of T_L, T_R */
    double *gbL, *gbR;      /* unmagnified gradients after skipping */
    double sumsq;           /* ||gbL||^2 + ||gbR||^2 */
    /* counters over the life of the layer */
    long n_skip;            /* factors whose gradient was skipped (step 3) */
    long n_clip;            /* steps where gamma > clip (step 5) */
    long n_cap;             /* factors whose update was capped (step 11) */
    long n_escape;          /* factors with escaped mass e > 0 (step 8) */
    double last_gamma;      /* gamma of the latest step */
    double max_gamma;       /* largest gamma seen */
} ref_layer;

/* ---------------------------------------------------------------- helpers */

static inline double *ref__zeros(size_t count) {
    double *p = (double *)calloc(count ? count : 1, sizeof(double));
    if (!p) abort();
    return p;
}

/* C (p x s) = op(A) (p x q) * op(B) (q x s), all row-major packed.
   op(A) = A (p x q) or, if ta, A^T with A stored q x p; likewise for B. */
static inline void ref__mm(const double *A, int ta, const double *B, int tb, int p, int q, int s, double *C) {
    int i, j, l;
    for (i = 0; i < p; i++)
        for (j = 0; j < s; j++) {
            double acc = 0;
            for (l = 0; l < q; l++) {
                double a = ta ? A[(size_t)l * p + i] : A[(size_t)i * q + l];
                double b = tb ? B[(size_t)j * q + l] : B[(size_t)l * s + j];
                acc += a * b;
            }
            C[(size_t)i * s + j] = acc;
        }
}

static inline double ref__sumsq(const double *x, size_t count) {
    double s = 0;
    size_t i;
    for (i = 0; i < count; i++) s += x[i] * x[i];
    return s;
}

static inline double ref__rms(const double *x, size_t count) { return sqrt(ref__sumsq(x, count) / (double)count); }

/* sym(X) = (X + X^T) / 2 in place, X r x r */
static inline void ref__sym(double *X, int r) {
    int i, j;
    for (i = 0; i < r; i++)
        for (j = i + 1; j < r; j++) {
            double a = 0.5 * (X[i * r + j] + X[j * r + i]);
            X[i * r + j] = a;
            X[j * r + i] = a;
        }
}

static inline void ref__nonfinite_to_zero(double *x, size_t count) {
    size_t i;
    for (i = 0; i < count; i++)
        if (!isfinite(x[i])) x[i] = 0;
}

/* Step 1: thin QR X = U T (X k x r). U is k x r, T is r x r upper triangular. */
static inline void ref__qr(const double *X, int k, int r, double *U, double *T) {
    double *tau = ref__zeros((size_t)r);
    int i, j;
    memcpy(U, X, sizeof(double) * (size_t)k * (size_t)r);
    if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, k, r, U, r, tau) != 0) abort();
    for (i = 0; i < r; i++)
        for (j = 0; j < r; j++) T[i * r + j] = j >= i ? U[i * r + j] : 0.0;
    if (LAPACKE_dorgqr(LAPACK_ROW_MAJOR, k, r, r, U, r, tau) != 0) abort();
    free(tau);
}

/* Step 1: Tp = T^+ via the SVD T = W S Z^T; singular values
   <= r * eps_mach * sigma_max count as zero. */
static inline void ref__pinv(const double *T, int r, double eps_mach, double *Tp) {
    double *a = ref__zeros((size_t)r * r), *s = ref__zeros((size_t)r);
    double *W = ref__zeros((size_t)r * r), *Zt = ref__zeros((size_t)r * r);
    double *superb = ref__zeros((size_t)r);
    double thresh;
    int i, j, p;
    memcpy(a, T, sizeof(double) * (size_t)r * r);
    if (LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'A', 'A', r, r, a, r, s, W, r, Zt, r, superb) != 0) abort();
    thresh = (double)r * eps_mach * s[0]; /* s is sorted descending */
    for (i = 0; i < r; i++)
        for (j = 0; j < r; j++) {
            double acc = 0;
            for (p = 0; p < r; p++)
                if (s[p] > thresh) acc += Zt[p * r + i] * (1.0 / s[p]) * W[j * r + p];
            Tp[i * r + j] = acc;
        }
    free(a); free(s); free(W); free(Zt); free(superb);
}

/* Eigenvalues ascending into lam; eigenvectors (columns) into W if W != NULL. */
static inline void ref__eig(const double *X, int r, double *lam, double *W) {
    double *a = ref__zeros((size_t)r * r);
    memcpy(a, X, sizeof(double) * (size_t)r * r);
    if (LAPACKE_dsyev(LAPACK_ROW_MAJOR, W ? 'V' : 'N', 'U', r, a, r, lam) != 0) abort();
    if (W) memcpy(W, a, sizeof(double) * (size_t)r * r);
    free(a);
}

/* beta_hat(k) = beta (1 - beta^k) / (1 - beta^(k+1)) (step 6) */
static inline double ref_beta_hat(double beta, long long k) {
    return beta * (1.0 - pow(beta, (double)k)) / (1.0 - pow(beta, (double)(k + 1)));
}

/* Steps 7-12 for one factor with `rows` rows. gb: unmagnified gradient
   (already skipped and clipped); P: basis transport; M, V, rho: this
   factor's state, updated; Tp_other: pseudo-inverse of the other factor's T.
   Writes D = U T_other^+T (r columns) into D. */
static inline void ref__factor(ref_layer *ly, int rows, const double *gb, const double *P,
                        double *M, double *V, double *rho, const double *Tp_other, double *D) {
    const ref_config *c = &ly->cfg;
    int r = ly->r, i, j;
    double b1 = ref_beta_hat(c->beta1, ly->k), b2 = ref_beta_hat(c->beta2, ly->k);
    double *tmp = ref__zeros((size_t)r * r), *Vt = ref__zeros((size_t)r * r);
    double *G = ref__zeros((size_t)r * r), *Vold = ref__zeros((size_t)r * r);
    double *lam = ref__zeros((size_t)r), *W = ref__zeros((size_t)r * r), *Q = ref__zeros((size_t)r * r);
    double *S = ref__zeros((size_t)rows * r), *MP = ref__zeros((size_t)rows * r);
    double *U = ref__zeros((size_t)rows * r);
    double eps_root, rmsM;

    memcpy(Vold, V, sizeof(double) * (size_t)r * r);

    /* step 7: V~ = sym(P V P^T), non-finite -> 0;
       V <- sym(b2 V~ + (1 - b2) gb^T gb / rows) */
    ref__mm(P, 0, V, 0, r, r, r, tmp);
    ref__mm(tmp, 0, P, 1, r, r, r, Vt);
    ref__sym(Vt, r);
    ref__nonfinite_to_zero(Vt, (size_t)r * r);
    ref__mm(gb, 1, gb, 0, r, rows, r, G);
    for (i = 0; i < r * r; i++) V[i] = b2 * Vt[i] + (1.0 - b2) * G[i] / (double)rows;
    ref__sym(V, r);

    /* step 8: escaped mass, eigenvalues of V_old and V~ sorted ascending */
    if (c->escape) {
        double *lo = ref__zeros((size_t)r), *lt = ref__zeros((size_t)r);
        double dmax = -INFINITY, tro = 0, trt = 0, e;
        ref__eig(Vold, r, lo, NULL);
        ref__eig(Vt, r, lt, NULL);
        for (i = 0; i < r; i++) {
            if (lo[i] - lt[i] > dmax) dmax = lo[i] - lt[i];
            tro += Vold[i * r + i];
            trt += Vt[i * r + i];
        }
        e = fmin(fmax(0.0, dmax), fmax(0.0, tro - trt));
        if (e > 0) ly->n_escape++;
        *rho = b2 * (*rho + e);
        free(lo); free(lt);
    } else {
        *rho = 0;
    }

    /* step 9: Q = sym(W diag(1 / (sqrt(max(lam, 0) + rho + eps_root') + eps)) W^T),
       S = gb Q, non-finite -> 0 */
    ref__eig(V, r, lam, W);
    eps_root = c->eps_root;
    if (c->relative_eps) eps_root *= fmax(lam[r - 1], 0.0);
    for (i = 0; i < r; i++)
        for (j = 0; j < r; j++) {
            double acc = 0;
            int p;
            for (p = 0; p < r; p++)
                acc += W[i * r + p] * W[j * r + p] / (sqrt(fmax(lam[p], 0.0) + *rho + eps_root) + c->eps);
            Q[i * r + j] = acc;
        }
    ref__sym(Q, r);
    ref__mm(gb, 0, Q, 0, rows, r, r, S);
    ref__nonfinite_to_zero(S, (size_t)rows * r);

    /* step 10: M <- b1 (M P^T) + (1 - b1) S */
    ref__mm(M, 0, P, 1, rows, r, r, MP);
    for (i = 0; i < rows * r; i++) M[i] = b1 * MP[i] + (1.0 - b1) * S[i];

    /* step 11: U = M / max(1, rms(M) / cap) if cap > 0 (M itself is kept) */
    memcpy(U, M, sizeof(double) * (size_t)rows * r);
    if (c->cap > 0) {
        rmsM = ref__rms(M, (size_t)rows * r);
        if (rmsM / c->cap > 1.0) {
            ly->n_cap++;
            for (i = 0; i < rows * r; i++) U[i] = M[i] / (rmsM / c->cap);
        }
    }

    /* step 12: D = U T_other^+T */
    ref__mm(U, 0, Tp_other, 1, rows, r, r, D);

    free(tmp); free(Vt); free(G); free(Vold); free(lam); free(W); free(Q);
    free(S); free(MP); free(U);
}

/* ------------------------------------------------------------- public API */

/* The layer's buffers and their sizes: the m x r and n x r ones in pairs
   (L, R), then the r x r ones. */
enum { REF__NBUF = 12 };
static inline void ref__buffers(ref_layer *ly, double **buf[REF__NBUF], size_t size[REF__NBUF]) {
    double **list[REF__NBUF] = {&ly->ML, &ly->MR, &ly->UL_prev, &ly->UR_prev, &ly->UL,  &ly->UR,
                                &ly->gbL, &ly->gbR, &ly->VL,     &ly->VR,      &ly->TLp, &ly->TRp};
    int i;
    for (i = 0; i < REF__NBUF; i++) {
        buf[i] = list[i];
        size[i] = i >= 8 ? (size_t)ly->r * ly->r : (size_t)(i % 2 ? ly->n : ly->m) * ly->r;
    }
}

static inline void ref_init(ref_layer *ly, int m, int n, int r, const ref_config *cfg) {
    double **buf[REF__NBUF];
    size_t size[REF__NBUF];
    int i;
    memset(ly, 0, sizeof *ly);
    ly->m = m;
    ly->n = n;
    ly->r = r;
    ly->cfg = *cfg;
    ref__buffers(ly, buf, size);
    for (i = 0; i < REF__NBUF; i++) *buf[i] = ref__zeros(size[i]);
}

static inline void ref_free(ref_layer *ly) {
    double **buf[REF__NBUF];
    size_t size[REF__NBUF];
    int i;
    ref__buffers(ly, buf, size);
    for (i = 0; i < REF__NBUF; i++) free(*buf[i]);
    memset(ly, 0, sizeof *ly);
}

/* Phase one (steps 1-3): bases, pseudo-inverses, unmagnified gradients after
   skipping. Returns this layer's ||gbL||^2 + ||gbR||^2. Changes no state. */
static inline double ref_prepare(ref_layer *ly, const double *L, const double *R, const double *gL, const double *gR) {
    int m = ly->m, n = ly->n, r = ly->r;
    double eps_mach = ly->cfg.pinv_eps > 0 ? ly->cfg.pinv_eps : DBL_EPSILON;
    double *TL = ref__zeros((size_t)r * r), *TR = ref__zeros((size_t)r * r);

    /* step 1: L = U_L T_L, R = U_R T_R, pseudo-inverses */
    ref__qr(L, m, r, ly->UL, TL);
    ref__qr(R, n, r, ly->UR, TR);
    ref__pinv(TL, r, eps_mach, ly->TLp);
    ref__pinv(TR, r, eps_mach, ly->TRp);

    /* step 2: gbL = gL T_R^+, gbR = gR T_L^+ (the other factor's T) */
    ref__mm(gL, 0, ly->TRp, 0, m, r, r, ly->gbL);
    ref__mm(gR, 0, ly->TLp, 0, n, r, r, ly->gbR);

    /* step 3: skipping, each factor on its own */
    if (ly->cfg.skip > 0) {
        if (ref__rms(ly->gbL, (size_t)m * r) > ly->cfg.skip) {
            memset(ly->gbL, 0, sizeof(double) * (size_t)m * r);
            ly->n_skip++;
        }
        if (ref__rms(ly->gbR, (size_t)n * r) > ly->cfg.skip) {
            memset(ly->gbR, 0, sizeof(double) * (size_t)n * r);
            ly->n_skip++;
        }
    }
    ly->sumsq = ref__sumsq(ly->gbL, (size_t)m * r) + ref__sumsq(ly->gbR, (size_t)n * r);
    free(TL); free(TR);
    return ly->sumsq;
}

/* Phase two (steps 4-16) with the global gamma = sqrt(total sum of squares). */
static inline void ref_finish(ref_layer *ly, double *L, double *R, double gamma) {
    const ref_config *c = &ly->cfg;
    int m = ly->m, n = ly->n, r = ly->r, i;
    double *PL = ref__zeros((size_t)r * r), *PR = ref__zeros((size_t)r * r);
    double *DL = ref__zeros((size_t)m * r), *DR = ref__zeros((size_t)n * r);

    /* step 4: P_L = U_R^T U_R,prev, P_R = U_L^T U_L,prev (zero at the first step) */
    ref__mm(ly->UR, 1, ly->UR_prev, 0, r, n, r, PL);
    ref__mm(ly->UL, 1, ly->UL_prev, 0, r, m, r, PR);

    /* step 5: clipping by the global norm */
    ly->last_gamma = gamma;
    if (gamma > ly->max_gamma) ly->max_gamma = gamma;
    if (c->clip > 0 && gamma > c->clip) {
        double s = c->clip / gamma;
        ly->n_clip++;
        for (i = 0; i < m * r; i++) ly->gbL[i] *= s;
        for (i = 0; i < n * r; i++) ly->gbR[i] *= s;
    }

    /* steps 6-12 for each factor (the other factor's T^+ maps back) */
    ref__factor(ly, m, ly->gbL, PL, ly->ML, ly->VL, &ly->rhoL, ly->TRp, DL);
    ref__factor(ly, n, ly->gbR, PR, ly->MR, ly->VR, &ly->rhoR, ly->TLp, DR);

    /* step 13: weight decay with the factors before the step */
    for (i = 0; i < m * r; i++) DL[i] += c->weight_decay * L[i];
    for (i = 0; i < n * r; i++) DR[i] += c->weight_decay * R[i];

    /* step 14: apply, both from pre-step values */
    for (i = 0; i < m * r; i++) L[i] -= c->lr * DL[i];
    for (i = 0; i < n * r; i++) R[i] -= c->lr * DR[i];

    /* step 15: balance */
    if (c->balance) {
        double a = sqrt(ref__sumsq(L, (size_t)m * r)) + 1e-6;
        double b = sqrt(ref__sumsq(R, (size_t)n * r)) + 1e-6;
        double s = sqrt(a * b);
        for (i = 0; i < m * r; i++) L[i] *= s / a;
        for (i = 0; i < n * r; i++) R[i] *= s / b;
    }

    /* step 16: keep the bases, count the step */
    memcpy(ly->UL_prev, ly->UL, sizeof(double) * (size_t)m * r);
    memcpy(ly->UR_prev, ly->UR, sizeof(double) * (size_t)n * r);
    ly->k++;
    free(PL); free(PR); free(DL); free(DR);
}

/* Step `count` layers together: gamma is taken over all of them (step 5).
   L[i], R[i] are updated in place. Returns gamma. */
static inline double ref_step_layers(ref_layer *const *layers, int count, double *const *L, double *const *R,
                              const double *const *gL, const double *const *gR) {
    double total = 0, gamma;
    int i;
    for (i = 0; i < count; i++) total += ref_prepare(layers[i], L[i], R[i], gL[i], gR[i]);
    gamma = sqrt(total);
    for (i = 0; i < count; i++) ref_finish(layers[i], L[i], R[i], gamma);
    return gamma;
}

/* Step one layer alone: clipped by its own norm. Returns gamma. */
static inline double ref_step(ref_layer *ly, double *L, double *R, const double *gL, const double *gR) {
    double *Ls[1], *Rs[1];
    const double *gLs[1], *gRs[1];
    ref_layer *ls[1];
    ls[0] = ly; Ls[0] = L; Rs[0] = R; gLs[0] = gL; gRs[0] = gR;
    return ref_step_layers(ls, 1, Ls, Rs, gLs, gRs);
}

/* ------------------------------------------------------------------ AdamW */

typedef struct ref_adamw {
    int m, n, r;
    double lr, beta1, beta2, eps, weight_decay;
    double *mL, *vL, *mR, *vR;
    long long t;            /* completed steps; the step being taken is t + 1 */
} ref_adamw;

static inline void ref_adamw_init(ref_adamw *a, int m, int n, int r, double lr, double beta1, double beta2,
                           double eps, double weight_decay) {
    memset(a, 0, sizeof *a);
    a->m = m; a->n = n; a->r = r;
    a->lr = lr; a->beta1 = beta1; a->beta2 = beta2; a->eps = eps; a->weight_decay = weight_decay;
    a->mL = ref__zeros(2 * ((size_t)m + (size_t)n) * (size_t)r); /* one block: mL, vL, mR, vR */
    a->vL = a->mL + (size_t)m * r;
    a->mR = a->vL + (size_t)m * r;
    a->vR = a->mR + (size_t)n * r;
}

static inline void ref_adamw_free(ref_adamw *a) {
    free(a->mL);
    memset(a, 0, sizeof *a);
}

/* m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2,
   p <- p - lr ((m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd p) */
static inline void ref__adamw_factor(const ref_adamw *a, size_t count, double t, double *p, const double *g,
                              double *mo, double *vo) {
    size_t i;
    double c1 = 1.0 - pow(a->beta1, t), c2 = 1.0 - pow(a->beta2, t);
    for (i = 0; i < count; i++) {
        mo[i] = a->beta1 * mo[i] + (1.0 - a->beta1) * g[i];
        vo[i] = a->beta2 * vo[i] + (1.0 - a->beta2) * g[i] * g[i];
        p[i] -= a->lr * ((mo[i] / c1) / (sqrt(vo[i] / c2) + a->eps) + a->weight_decay * p[i]);
    }
}

static inline void ref_adamw_step(ref_adamw *a, double *L, double *R, const double *gL, const double *gR) {
    double t = (double)(a->t + 1);
    ref__adamw_factor(a, (size_t)a->m * a->r, t, L, gL, a->mL, a->vL);
    ref__adamw_factor(a, (size_t)a->n * a->r, t, R, gR, a->mR, a->vR);
    a->t++;
}

#endif
