/* test_rite_hand.c - LoRA-RITE steps on factors small enough to work out by
   hand (double precision, rank-last packed storage).

   Two families of cases:

   r = 1. L = l (m x 1), R = q (n x 1). The thin QR of a column is
     U = l / ||l||, T = ||l|| (or both negated: every result below is
     invariant to that sign, because T and U enter each result in pairs).
     With a = ||q|| and b = ||l|| (T_R = a, T_L = b) SPEC.md reduces to
       g_L = gradL / a                                   (step 2)
       skipped if ||g_L|| / sqrt(m) > skip                (step 3)
       P_L = (q . q_prev) / (||q|| ||q_prev||), 0 at k = 0 (step 4)
       clipped by clip / gamma, gamma^2 = ||g_L||^2 + ||g_R||^2   (step 5)
       V_t = P_L^2 V_L,  V_L <- bh2 V_t + (1 - bh2) ||g_L||^2 / m (step 7)
       e = max(0, V_old - V_t) = (1 - P_L^2) V_old, rho <- bh2 (rho + e) (step 8)
       Q = 1 / (sqrt(V_L + rho + eps_root) + eps),  S = g_L Q    (step 9)
       M_L <- bh1 M_L P_L + (1 - bh1) S                  (step 10)
       U = M_L / max(1, rms(M_L) / cap)                  (step 11)
       D_L = U / a + wd * l,  l <- l - lr D_L            (steps 12-14)
     where bh(k) = beta (1 - beta^k) / (1 - beta^(k+1)): bh(0) = 0,
     bh(1) = beta / (1 + beta). hand1_step below is exactly this list.

   Orthonormal factors, r = 2. L = first two columns of I (m x 2), R likewise:
     U = L, T = I (up to column signs, which cancel as above), so at the
     first step g = grad, V = g^T g / m, Q = (V^(1/2) + eps I)^(-1), D = g Q.
     For a 2 x 2 SPD V, V^(1/2) = (V + s I) / t with s = sqrt(det V),
     t = sqrt(tr V + 2 s) (Cayley-Hamilton: V^2 = tr(V) V - det(V) I, so
     (V + s I)^2 = (tr V + 2 s) V). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora_rite.h"
#include "test_util.h"

#define MAXK 8

/* ---- helpers ------------------------------------------------------------ */

static rite_layer *make_layer(int m, int n, int r, const rite_config *cfg) {
    rite_desc desc;
    rite_layer *layer = NULL;
    desc = tu_desc(m, n, r, RITE_LORA_RITE, RITE_FLOAT64);
    desc.config = cfg;
    assert_int_equal(rite_init(&layer, &desc), RITE_OK);
    assert_non_null(layer);
    return layer;
}

static double dot(const double *x, const double *y, int k) {
    double s = 0;
    int i;
    for (i = 0; i < k; i++) s += x[i] * y[i];
    return s;
}

static double norm(const double *x, int k) { return sqrt(dot(x, x, k)); }

/* |x - y| <= tol * max(|y|) elementwise, with a message naming the element */
static void assert_close(const double *x, const double *y, int k, double tol, const char *what) {
    double scale = 0;
    int i;
    for (i = 0; i < k; i++)
        if (fabs(y[i]) > scale) scale = fabs(y[i]);
    for (i = 0; i < k; i++) {
        if (!(fabs(x[i] - y[i]) <= tol * scale)) {
            fail_msg("%s[%d]: got %.17g, expected %.17g", what, i, x[i], y[i]);
        }
    }
}

static double bias_corrected(double beta, long long k) {
    return beta * (1.0 - pow(beta, (double)k)) / (1.0 - pow(beta, (double)(k + 1)));
}

/* ---- the r = 1 hand model (see the top comment) ------------------------- */

typedef struct hand1 {
    int m, n;
    long long k;
    double VL, VR, rhoL, rhoR;
    double ML[MAXK], MR[MAXK];       /* first moments, with T = +norm */
    double Lprev[MAXK], Rprev[MAXK]; /* factors at the previous step */
} hand1;

static void hand1_init(hand1 *h, int m, int n) {
    memset(h, 0, sizeof *h);
    h->m = m;
    h->n = n;
}

/* One factor's steps 7-13 once g (unmagnified, skipped, clipped) and P are
   known. M, V, rho: this factor's state; other_norm: ||other factor||. */
static void hand1_factor(const rite_config *c, long long k, int rows, const double *x,
                         const double *g, double P, double other_norm, double *M, double *V,
                         double *rho, double *D) {
    double bh1 = bias_corrected(c->beta1, k), bh2 = bias_corrected(c->beta2, k);
    double Vold = *V, Vt = P * P * Vold, Vnew, eroot, Q, rmsM, capdiv;
    int i;
    Vnew = bh2 * Vt + (1.0 - bh2) * dot(g, g, rows) / rows;
    if (c->escape) {
        double e = Vold - Vt > 0 ? Vold - Vt : 0.0;
        *rho = bh2 * (*rho + e);
    } else {
        *rho = 0.0;
    }
    eroot = c->eps_root * (c->relative_eps ? (Vnew > 0 ? Vnew : 0.0) : 1.0);
    Q = 1.0 / (sqrt((Vnew > 0 ? Vnew : 0.0) + *rho + eroot) + c->eps);
    for (i = 0; i < rows; i++) M[i] = bh1 * M[i] * P + (1.0 - bh1) * g[i] * Q;
    rmsM = norm(M, rows) / sqrt((double)rows);
    capdiv = 1.0;
    if (c->cap > 0 && rmsM / c->cap > 1.0) capdiv = rmsM / c->cap;
    for (i = 0; i < rows; i++) D[i] = M[i] / capdiv / other_norm + c->weight_decay * x[i];
    *V = Vnew;
}

/* One LoRA-RITE step of an r = 1 layer, updating l (m) and q (n) in place. */
static void hand1_step(hand1 *h, const rite_config *c, double *l, double *q, const double *gradL,
                       const double *gradR) {
    const int m = h->m, n = h->n;
    double a = norm(q, n), b = norm(l, m); /* T_R, T_L */
    double gL[MAXK], gR[MAXK], DL[MAXK], DR[MAXK];
    double PL = 0, PR = 0, gamma;
    int i;
    /* step 2: unmagnified gradients */
    for (i = 0; i < m; i++) gL[i] = gradL[i] / a;
    for (i = 0; i < n; i++) gR[i] = gradR[i] / b;
    /* step 3: skipping, each factor on its own */
    if (c->skip > 0 && norm(gL, m) / sqrt((double)m) > c->skip)
        for (i = 0; i < m; i++) gL[i] = 0;
    if (c->skip > 0 && norm(gR, n) / sqrt((double)n) > c->skip)
        for (i = 0; i < n; i++) gR[i] = 0;
    /* step 4: basis transport, a cosine for r = 1 */
    if (h->k > 0) {
        PL = dot(q, h->Rprev, n) / (a * norm(h->Rprev, n));
        PR = dot(l, h->Lprev, m) / (b * norm(h->Lprev, m));
    }
    /* step 5: clipping */
    gamma = sqrt(dot(gL, gL, m) + dot(gR, gR, n));
    if (c->clip > 0 && gamma > c->clip) {
        for (i = 0; i < m; i++) gL[i] *= c->clip / gamma;
        for (i = 0; i < n; i++) gR[i] *= c->clip / gamma;
    }
    /* steps 6-13 */
    hand1_factor(c, h->k, m, l, gL, PL, a, h->ML, &h->VL, &h->rhoL, DL);
    hand1_factor(c, h->k, n, q, gR, PR, b, h->MR, &h->VR, &h->rhoR, DR);
    /* step 16 (stored before the factors change) */
    memcpy(h->Lprev, l, (size_t)m * sizeof *l);
    memcpy(h->Rprev, q, (size_t)n * sizeof *q);
    /* step 14 */
    for (i = 0; i < m; i++) l[i] -= c->lr * DL[i];
    for (i = 0; i < n; i++) q[i] -= c->lr * DR[i];
    /* step 15 */
    if (c->balance) {
        double sa = norm(l, m) + 1e-6, sb = norm(q, n) + 1e-6, s = sqrt(sa * sb);
        for (i = 0; i < m; i++) l[i] *= s / sa;
        for (i = 0; i < n; i++) q[i] *= s / sb;
    }
    h->k++;
}

/* The example used by most r = 1 tests: l = (1, 2, 2), ||l|| = 3;
   q = (3, 4), ||q|| = 5. */
static const double EX_L[3] = {1, 2, 2}, EX_Q[2] = {3, 4};
static const double EX_GL[3] = {0.3, -0.6, 0.9}, EX_GQ[2] = {0.8, -0.4};

/* the defaults with lr and eps */
static rite_config config_lr_eps(double lr, double eps) {
    rite_config c = rite_config_default(RITE_LORA_RITE);
    c.lr = lr;
    c.eps = eps;
    return c;
}

/* A step of `layer` from the example's factors with gradients gl, gq:
   l and q get the factors after it. */
static void example_step(rite_layer *layer, const double *gl, const double *gq, double l[3], double q[2]) {
    memcpy(l, EX_L, sizeof EX_L);
    memcpy(q, EX_Q, sizeof EX_Q);
    assert_int_equal(rite_step_f64(layer, l, q, gl, gq), RITE_OK);
}

/* a new layer's first step from the example (gradients EX_GL, EX_GQ): l
   and q get the factors after it */
static void first_example_step(const rite_config *c, double l[3], double q[2]) {
    rite_layer *layer = make_layer(3, 2, 1, c);
    example_step(layer, EX_GL, EX_GQ, l, q);
    rite_free(layer);
}

/* hand1's first step from the example's factors with gradients gl, gq:
   hl and hq get the factors after it, h the state. */
static void hand1_example_step(hand1 *h, const rite_config *c, const double *gl, const double *gq, double hl[3],
                               double hq[2]) {
    hand1_init(h, 3, 2);
    memcpy(hl, EX_L, sizeof EX_L);
    memcpy(hq, EX_Q, sizeof EX_Q);
    hand1_step(h, c, hl, hq, gl, gq);
}

/* ---- r = 1, first step, fully written out ------------------------------ */

/* g_L = (0.3, -0.6, 0.9) / 5 = (0.06, -0.12, 0.18), ||g_L||^2 = 0.0504
   g_R = (0.8, -0.4) / 3,                           ||g_R||^2 = 0.8 / 9
   gamma = sqrt(0.0504 + 0.0888...) = 0.373 < clip = 1: no clipping;
   rms(g_L) = 0.130, rms(g_R) = 0.211 < skip = 1: no skipping.
   k = 0: bh = 0, so V_L = 0.0504 / 3 = 0.0168, V_R = (0.8 / 9) / 2,
   M = S = g / (sqrt(V) + eps), D_L = M_L / 5 + wd l, D_R = M_R / 3 + wd q.
   A new layer's first step from the example is that; l gets its L. */
static void check_first_step_written_out(const rite_config *c, double l[3]) {
    const double VL = 0.0504 / 3.0, VR = (0.8 / 9.0) / 2.0;
    const double gL[3] = {0.06, -0.12, 0.18}, gR[2] = {0.8 / 3.0, -0.4 / 3.0};
    double q[2], el[3], eq[2];
    rite_layer *layer = make_layer(3, 2, 1, c);
    int i;
    for (i = 0; i < 3; i++)
        el[i] = EX_L[i] - c->lr * (gL[i] / (sqrt(VL) + c->eps) / 5.0 + c->weight_decay * EX_L[i]);
    for (i = 0; i < 2; i++)
        eq[i] = EX_Q[i] - c->lr * (gR[i] / (sqrt(VR) + c->eps) / 3.0 + c->weight_decay * EX_Q[i]);
    example_step(layer, EX_GL, EX_GQ, l, q);
    assert_close(l, el, 3, 1e-13, "L");
    assert_close(q, eq, 2, 1e-13, "R");
    assert_int_equal(rite_step_count(layer), 1);
    rite_free(layer);
}

/* the first step written out, without weight decay; its size */
static void test_r1_first_step(void **state) {
    rite_config c = config_lr_eps(0.1, 1e-3); /* eps large enough that its place (outside the root) matters */
    double l[3], d[3];
    int i;
    (void)state;
    check_first_step_written_out(&c, l);
    /* the direction is that of the gradient, the size ~ lr / ||other||:
       with eps -> 0, M = g / rms(g) has rms 1, so rms(D_L) = 1 / 5 */
    for (i = 0; i < 3; i++) d[i] = (EX_L[i] - l[i]) / c.lr;
    assert_true(fabs(norm(d, 3) / sqrt(3.0) - 0.2) < 0.2 * 2e-2);
}

/* The same step with the factors negated (l -> -l, q -> -q): the product
   and the gradients' relation are unchanged in magnitude and every result
   flips sign, whatever signs the QR picks. */
static void test_r1_sign_symmetry(void **state) {
    rite_config c = config_lr_eps(0.1, 1e-3);
    double l1[3], q1[2], l2[3], q2[2], g1[3], g2[2];
    rite_layer *b = make_layer(3, 2, 1, &c);
    int i;
    (void)state;
    first_example_step(&c, l1, q1);
    for (i = 0; i < 3; i++) { l2[i] = -EX_L[i]; g1[i] = -EX_GL[i]; }
    for (i = 0; i < 2; i++) { q2[i] = -EX_Q[i]; g2[i] = -EX_GQ[i]; }
    assert_int_equal(rite_step_f64(b, l2, q2, g1, g2), RITE_OK);
    for (i = 0; i < 3; i++) l2[i] = -l2[i];
    for (i = 0; i < 2; i++) q2[i] = -q2[i];
    assert_close(l2, l1, 3, 1e-14, "L");
    assert_close(q2, q1, 2, 1e-14, "R");
    rite_free(b);
}

/* ---- r = 1 through the hand model, several steps and options ----------- */

/* Runs R1_STEPS steps of the library and of hand1 from a small example
   (||l|| = 0.3, ||q|| = 0.5, so steps turn the factors noticeably and P is
   well away from 1); every step moves both factors. Returns the smallest
   |P| seen, to show it mattered. */
enum { R1_STEPS = 4 };
static double run_r1(const rite_config *c) {
    static const double gl[4][3] = {{0.03, -0.06, 0.09}, {-0.05, 0.02, 0.04},
                                    {0.01, 0.07, -0.03}, {0.06, 0.01, 0.02}};
    static const double gq[4][2] = {{0.08, -0.04}, {0.02, 0.06}, {-0.07, 0.03}, {0.05, 0.05}};
    double l[3] = {0.1, 0.2, 0.2}, q[2] = {0.3, 0.4};
    double hl[3], hq[2], minP = 1.0;
    hand1 h;
    rite_layer *layer = make_layer(3, 2, 1, c);
    int t;
    hand1_init(&h, 3, 2);
    memcpy(hl, l, sizeof l);
    memcpy(hq, q, sizeof q);
    for (t = 0; t < R1_STEPS; t++) {
        double l0[3], q0[2];
        memcpy(l0, l, sizeof l);
        memcpy(q0, q, sizeof q);
        assert_int_equal(rite_step_f64(layer, l, q, gl[t], gq[t]), RITE_OK);
        if (t > 0) {
            double PL = fabs(dot(hq, h.Rprev, 2)) / (norm(hq, 2) * norm(h.Rprev, 2));
            double PR = fabs(dot(hl, h.Lprev, 3)) / (norm(hl, 3) * norm(h.Lprev, 3));
            if (PL < minP) minP = PL;
            if (PR < minP) minP = PR;
        }
        hand1_step(&h, c, hl, hq, gl[t], gq[t]);
        assert_close(l, hl, 3, 1e-12, "L");
        assert_close(q, hq, 2, 1e-12, "R");
        assert_true(fabs(l[0] - l0[0]) + fabs(l[1] - l0[1]) > 1e-4);
        assert_true(fabs(q[0] - q0[0]) + fabs(q[1] - q0[1]) > 1e-4);
        assert_int_equal(rite_step_count(layer), t + 1);
    }
    rite_free(layer);
    return minP;
}

static rite_config base_config(void) { return config_lr_eps(0.05, 1e-3); }

/* Second and later steps: P (the cosine between successive bases), the
   bias-corrected decays bh(1) = beta / (1 + beta), bh(2), ... */
static void test_r1_later_steps(void **state) {
    rite_config c = base_config();
    (void)state;
    /* P really differs from 1: a step ignoring P would fail in run_r1 */
    assert_true(run_r1(&c) < 0.98);
}

/* ---- r = 1 through the hand model with one option changed -------------- */

/* A field of rite_config set to a value: a double or an int field (at
   `offset`), or none. */
enum { NO_FIELD, DOUBLE_FIELD, INT_FIELD };
typedef struct config_setting {
    int kind;
    size_t offset;
    double value;
} config_setting;
#define SET_DOUBLE(field, v) {DOUBLE_FIELD, offsetof(rite_config, field), v}
#define SET_INT(field, v) {INT_FIELD, offsetof(rite_config, field), v}

static void apply_setting(rite_config *c, const config_setting *s) {
    char *field = (char *)c + s->offset;
    if (s->kind == DOUBLE_FIELD) *(double *)(void *)field = s->value;
    if (s->kind == INT_FIELD) *(int *)(void *)field = (int)s->value;
}

/* One test: run_r1 with base_config() changed by `set`. */
typedef struct r1_case {
    const char *name;
    config_setting set[2];
} r1_case;

static const r1_case r1_cases[] = {
    /* beta1 = 0: no momentum, so M = S at every step */
    {"test_r1_without_momentum", {SET_DOUBLE(beta1, 0.0)}},
    /* beta2 close to 1 and beta1 small */
    {"test_r1_slow_second_moment", {SET_DOUBLE(beta1, 0.5), SET_DOUBLE(beta2, 0.99)}},
    /* escaped mass: at k = 1, rho = bh2(1) (1 - P^2) V_old enters under the root */
    {"test_r1_escape", {SET_INT(escape, 1)}},
    /* eps_root under the root, absolute and relative to the largest eigenvalue */
    {"test_r1_eps_root", {SET_DOUBLE(eps_root, 1e-2)}},
    {"test_r1_relative_eps_root", {SET_INT(relative_eps, 1), SET_DOUBLE(eps_root, 0.5)}},
    /* clipping sometimes active; clip = 0 turns it off */
    {"test_r1_clip_steps", {SET_DOUBLE(clip, 0.2)}},
    {"test_r1_clip_off", {SET_DOUBLE(clip, 0.0)}},
    {"test_r1_weight_decay_steps", {SET_DOUBLE(weight_decay, 0.3)}},
    /* balance: a = ||L_new|| + 1e-6, b = ||R_new|| + 1e-6, L *= sqrt(ab)/a, ... */
    {"test_r1_balance", {SET_INT(balance, 1)}},
    {"test_r1_cap_steps", {SET_DOUBLE(cap, 0.4)}},
};

static void run_r1_case(void **state) {
    const r1_case *rc = (const r1_case *)*state;
    rite_config c = base_config();
    apply_setting(&c, &rc->set[0]);
    apply_setting(&c, &rc->set[1]);
    run_r1(&c);
}

/* the cmocka entry of r1 case i */
#define R1_TEST(i) {r1_cases[i].name, run_r1_case, NULL, NULL, (void *)&r1_cases[i]}

/* Clip active: gamma = sqrt(||g_L||^2 + ||g_R||^2) > clip scales both g by
   clip / gamma. With eps = 0.05 comparable to sqrt(V), clipping changes
   the step (S = c g / (c sqrt(V0) + eps) depends on c). */
static void test_r1_clip(void **state) {
    rite_config c = config_lr_eps(0.1, 0.05), noclip;
    double l[3], q[2], hl[3], hq[2], nl[3], nq[2];
    hand1 h, hn;
    (void)state;
    c.clip = 0.1; /* gamma = 0.373 for the example */
    noclip = c;
    noclip.clip = 0.0;
    first_example_step(&c, l, q);
    hand1_example_step(&h, &c, EX_GL, EX_GQ, hl, hq);
    hand1_example_step(&hn, &noclip, EX_GL, EX_GQ, nl, nq);
    assert_close(l, hl, 3, 1e-13, "L");
    assert_close(q, hq, 2, 1e-13, "R");
    /* the clipped and unclipped answers are far apart */
    assert_true(tu_rel_diff(hl, nl, 3) > 1e-3);
}

/* Weight decay: D_L = M_L / ||q|| + wd * l_old; written out for k = 0. */
static void test_r1_weight_decay(void **state) {
    rite_config c = config_lr_eps(0.1, 1e-3);
    double l[3];
    (void)state;
    c.weight_decay = 0.25;
    check_first_step_written_out(&c, l);
}

/* ---- skipping ----------------------------------------------------------- */

/* gradL = (30, -60, 90): g_L = gradL / 5 has rms sqrt(504 / 3) = 13 > 1,
   so g_L = 0: V_L = 0, S_L = 0 * Q = 0, M_L = 0, D_L = 0 and L is left
   exactly as it was, while R moves. The skipped factor also leaves the
   clipping norm: gamma = ||g_R|| only, so with clip = 0.2 and
   ||g_R|| = sqrt(0.8) / 3 = 0.298 the scale is 0.2 / 0.298 (not
   0.2 / 22.4). prepare reports sumsq = ||g_R||^2 = 0.8 / 9. */
static void test_skip_one_factor(void **state) {
    rite_config c = config_lr_eps(0.1, 0.05), wrong;
    const double big[3] = {30, -60, 90};
    double l[3], q[2], hl[3], hq[2], wl[3], wq[2], sumsq = -1, eq[2], cs;
    hand1 h, hw;
    rite_layer *layer;
    int i;
    (void)state;
    c.clip = 0.2;
    layer = make_layer(3, 2, 1, &c);
    memcpy(l, EX_L, sizeof l);
    memcpy(q, EX_Q, sizeof q);
    assert_int_equal(rite_prepare_f64(layer, l, q, big, EX_GQ, &sumsq), RITE_OK);
    assert_true(fabs(sumsq - 0.8 / 9.0) <= 1e-15);
    assert_int_equal(rite_apply(layer, sumsq), RITE_OK);
    for (i = 0; i < 3; i++) assert_true(l[i] == EX_L[i]);
    /* R by hand: g_R = gradR / 3, scaled by cs = 0.2 / ||g_R||, V_R = ||cs g_R||^2 / 2 */
    cs = 0.2 / (sqrt(0.8) / 3.0);
    for (i = 0; i < 2; i++) {
        double g = cs * EX_GQ[i] / 3.0;
        eq[i] = EX_Q[i] - c.lr * g / (sqrt(cs * cs * (0.8 / 9.0) / 2.0) + c.eps) / 3.0;
    }
    assert_close(q, eq, 2, 1e-13, "R");
    hand1_example_step(&h, &c, big, EX_GQ, hl, hq);
    assert_close(q, hq, 2, 1e-13, "R (model)");
    /* had the skipped gradient stayed in gamma, R would differ */
    wrong = c;
    wrong.skip = 0.0;
    hand1_example_step(&hw, &wrong, big, EX_GQ, wl, wq);
    assert_true(tu_rel_diff(wq, eq, 2) > 1e-3);
    assert_int_equal(rite_step_count(layer), 1);
    rite_free(layer);
}

/* Both factors skipped: nothing moves, the step still counts, and the next
   step runs at k = 1 with V = 0, M = 0 carried: V = (1 - bh2(1)) ||g||^2 / m,
   M = (1 - bh1(1)) S. */
static void test_skip_both_then_continue(void **state) {
    rite_config c = base_config();
    const double bigL[3] = {30, -60, 90}, bigQ[2] = {-80, 40};
    double l[3], q[2], hl[3], hq[2], el[3];
    hand1 h;
    rite_layer *layer = make_layer(3, 2, 1, &c);
    int i;
    (void)state;
    example_step(layer, bigL, bigQ, l, q);
    hand1_example_step(&h, &c, bigL, bigQ, hl, hq);
    for (i = 0; i < 3; i++) assert_true(l[i] == EX_L[i]);
    for (i = 0; i < 2; i++) assert_true(q[i] == EX_Q[i]);
    assert_int_equal(rite_step_count(layer), 1);
    assert_int_equal(rite_step_f64(layer, l, q, EX_GL, EX_GQ), RITE_OK);
    hand1_step(&h, &c, hl, hq, EX_GL, EX_GQ);
    assert_int_equal(rite_step_count(layer), 2);
    assert_close(l, hl, 3, 1e-13, "L");
    assert_close(q, hq, 2, 1e-13, "R");
    /* written out for L: g = gradL / 5, V = (1 - bh2) 0.0504 / 3 */
    {
        double bh1 = c.beta1 / (1 + c.beta1), bh2 = c.beta2 / (1 + c.beta2);
        double V = (1 - bh2) * 0.0504 / 3.0;
        for (i = 0; i < 3; i++)
            el[i] = EX_L[i] - c.lr * (1 - bh1) * (EX_GL[i] / 5.0) / (sqrt(V) + c.eps) / 5.0;
        assert_close(l, el, 3, 1e-13, "L (written out)");
    }
    rite_free(layer);
}

/* ---- capping ------------------------------------------------------------ */

/* k = 0, r = 1: M_L = g_L / (sqrt(V_L) + eps) has rms sqrt(V_L) / (sqrt(V_L) + eps),
   just under 1; with cap = 0.5 the update is U = M_L * 0.5 / rms(M_L), so
   rms(D_L) = rms(U) / ||q|| = 0.5 / 5. A cap above rms(M) changes nothing. */
static void test_cap(void **state) {
    rite_config c = config_lr_eps(0.1, 1e-3), c2, c0;
    double l[3], q[2], d[3], dq[2], l2[3], q2[2], l0[3], q0[2];
    int i;
    (void)state;
    c.cap = 0.5;
    first_example_step(&c, l, q);
    for (i = 0; i < 3; i++) d[i] = (EX_L[i] - l[i]) / c.lr;
    for (i = 0; i < 2; i++) dq[i] = (EX_Q[i] - q[i]) / c.lr;
    assert_true(fabs(norm(d, 3) / sqrt(3.0) - 0.5 / 5.0) <= 1e-13);
    assert_true(fabs(norm(dq, 2) / sqrt(2.0) - 0.5 / 3.0) <= 1e-13);
    /* the direction is still the gradient's */
    for (i = 0; i < 3; i++)
        assert_true(fabs(d[i] / norm(d, 3) - EX_GL[i] / norm(EX_GL, 3)) <= 1e-13);

    /* cap = 2 > rms(M): inactive, same as cap = 0 */
    c2 = c0 = c;
    c2.cap = 2.0;
    c0.cap = 0.0;
    first_example_step(&c2, l2, q2);
    first_example_step(&c0, l0, q0);
    assert_close(l2, l0, 3, 1e-15, "L");
    assert_close(q2, q0, 2, 1e-15, "R");
}

/* Capping scales the update, not the stored M: step two layers once with
   lr = 0 (factors unchanged), one capped and one not, then step both with
   the same uncapped configuration: the results must be identical. */
static void test_cap_leaves_moment(void **state) {
    rite_config capped = base_config(), plain = base_config();
    double l1[3], q1[2], l2[3], q2[2];
    rite_layer *a, *b;
    int i;
    (void)state;
    capped.cap = 0.1;
    capped.lr = 0.0;
    plain.lr = 0.0;
    a = make_layer(3, 2, 1, &capped);
    b = make_layer(3, 2, 1, &plain);
    example_step(a, EX_GL, EX_GQ, l1, q1);
    example_step(b, EX_GL, EX_GQ, l2, q2);
    plain.lr = 0.1;
    assert_int_equal(rite_set_config(a, &plain), RITE_OK);
    assert_int_equal(rite_set_config(b, &plain), RITE_OK);
    assert_int_equal(rite_step_f64(a, l1, q1, EX_GL, EX_GQ), RITE_OK);
    assert_int_equal(rite_step_f64(b, l2, q2, EX_GL, EX_GQ), RITE_OK);
    for (i = 0; i < 3; i++) assert_true(fabs(l1[i] - l2[i]) <= 1e-15 * 3);
    for (i = 0; i < 2; i++) assert_true(fabs(q1[i] - q2[i]) <= 1e-15 * 5);
    assert_true(fabs(l1[0] - EX_L[0]) > 1e-4); /* and it did move */
    rite_free(a);
    rite_free(b);
}

/* ---- orthonormal factors, r = 2 ----------------------------------------- */

/* L = [e1 e2] (m x 2), R = [e1 e2] (n x 2). */
static void identity_columns(double *X, int k) {
    memset(X, 0, (size_t)k * 2 * sizeof *X);
    X[0 * 2 + 0] = 1;
    X[1 * 2 + 1] = 1;
}

/* Q = (V^(1/2) + eps I)^(-1) for V = g^T g / k (g: k x 2), in closed form. */
static void q_of_gradient(const double *g, int k, double eps, double Q[4]) {
    double a = 0, b = 0, c = 0, s, t, x11, x12, x22, det;
    int i;
    for (i = 0; i < k; i++) {
        a += g[i * 2] * g[i * 2];
        b += g[i * 2] * g[i * 2 + 1];
        c += g[i * 2 + 1] * g[i * 2 + 1];
    }
    a /= k; b /= k; c /= k;
    s = sqrt(a * c - b * b);
    t = sqrt(a + c + 2 * s);
    x11 = (a + s) / t + eps; /* X = V^(1/2) + eps I */
    x12 = b / t;
    x22 = (c + s) / t + eps;
    det = x11 * x22 - x12 * x12;
    Q[0] = x22 / det;
    Q[1] = -x12 / det;
    Q[2] = -x12 / det;
    Q[3] = x11 / det;
}

/* X - lr * g Q for a k x 2 factor. */
static void expected_orthonormal(const double *X, const double *g, const double Q[4], int k, double lr,
                                 double *out) {
    int i;
    for (i = 0; i < k; i++) {
        out[i * 2 + 0] = X[i * 2 + 0] - lr * (g[i * 2] * Q[0] + g[i * 2 + 1] * Q[2]);
        out[i * 2 + 1] = X[i * 2 + 1] - lr * (g[i * 2] * Q[1] + g[i * 2 + 1] * Q[3]);
    }
}

/* Gradients with orthogonal columns: V is diagonal and each column j is
   divided by sqrt(||g_j||^2 / k) + eps, by hand:
     gradL col 0 = 0.1 (1, 2, 0, 2): ||.||^2 = 0.09, V_00 = 0.0225, root 0.15
     gradL col 1 = 0.1 (2, -1, 1, 0): ||.||^2 = 0.06, V_11 = 0.015
     gradR col 0 = 0.2 (1, 1, 1):     ||.||^2 = 0.12, V_00 = 0.04, root 0.2
     gradR col 1 = 0.3 (1, -1, 0):    ||.||^2 = 0.18, V_11 = 0.06
   gamma^2 = 0.09 + 0.06 + 0.12 + 0.18 = 0.45 < 1: no clipping. */
static void test_orthonormal_diagonal(void **state) {
    rite_config c = config_lr_eps(0.1, 1e-3);
    double L[8], R[6], eL[8], eR[6];
    const double gL[8] = {0.1, 0.2, 0.2, -0.1, 0.0, 0.1, 0.2, 0.0};
    const double gR[6] = {0.2, 0.3, 0.2, -0.3, 0.2, 0.0};
    const double rootL[2] = {0.15, sqrt(0.015)}, rootR[2] = {0.2, sqrt(0.06)};
    rite_layer *layer;
    int i, j;
    (void)state;
    layer = make_layer(4, 3, 2, &c);
    identity_columns(L, 4);
    identity_columns(R, 3);
    for (i = 0; i < 4; i++)
        for (j = 0; j < 2; j++) eL[i * 2 + j] = L[i * 2 + j] - c.lr * gL[i * 2 + j] / (rootL[j] + c.eps);
    for (i = 0; i < 3; i++)
        for (j = 0; j < 2; j++) eR[i * 2 + j] = R[i * 2 + j] - c.lr * gR[i * 2 + j] / (rootR[j] + c.eps);
    assert_int_equal(rite_step_f64(layer, L, R, gL, gR), RITE_OK);
    assert_close(L, eL, 8, 1e-13, "L");
    assert_close(R, eR, 6, 1e-13, "R");
    rite_free(layer);
}

/* General gradients: V has off-diagonal terms, Q from the closed form. */
static void check_orthonormal_general(double scale, const rite_config *c) {
    double L[8], R[6], eL[8], eR[6], Q[4], gL[8], gR[6];
    const double gL0[8] = {0.3, -0.1, 0.2, 0.4, -0.5, 0.1, 0.05, 0.25};
    const double gR0[6] = {0.1, 0.3, -0.2, 0.1, 0.4, -0.35};
    rite_layer *layer = make_layer(4, 3, 2, c);
    int i;
    for (i = 0; i < 8; i++) gL[i] = scale * gL0[i];
    for (i = 0; i < 6; i++) gR[i] = scale * gR0[i];
    identity_columns(L, 4);
    identity_columns(R, 3);
    q_of_gradient(gL, 4, c->eps, Q);
    expected_orthonormal(L, gL, Q, 4, c->lr, eL);
    q_of_gradient(gR, 3, c->eps, Q);
    expected_orthonormal(R, gR, Q, 3, c->lr, eR);
    assert_int_equal(rite_step_f64(layer, L, R, gL, gR), RITE_OK);
    assert_close(L, eL, 8, 1e-12, "L");
    assert_close(R, eR, 6, 1e-12, "R");
    rite_free(layer);
}

static void test_orthonormal_general(void **state) {
    rite_config c = config_lr_eps(0.1, 1e-2);
    (void)state;
    c.clip = 0.0; /* gamma is about 1.03 here */
    check_orthonormal_general(1.0, &c);
    /* clip = 0 and skip = 0 disable both: gradients 1000 times larger
       (rms ~ 300, gamma ~ 1100) are used as they are; eps = 3 is then
       about 1% of sqrt(V). */
    c.skip = 0.0;
    c.eps = 3.0;
    check_orthonormal_general(1000.0, &c);
}

/* Capping with T = I: D = M / max(1, rms(M) / cap), so rms(D) = cap
   exactly when rms(M) > cap, and D is parallel to the uncapped g Q. */
static void test_orthonormal_cap(void **state) {
    rite_config c = config_lr_eps(0.1, 1e-2);
    double L[8], R[6], Q[4], eL[8], d[8], e[8];
    const double gL[8] = {0.3, -0.1, 0.2, 0.4, -0.5, 0.1, 0.05, 0.25};
    const double gR[6] = {0.1, 0.3, -0.2, 0.1, 0.4, -0.35};
    rite_layer *layer;
    double rmsM;
    int i;
    (void)state;
    c.clip = 0.0;
    c.cap = 0.3;
    layer = make_layer(4, 3, 2, &c);
    identity_columns(L, 4);
    identity_columns(R, 3);
    q_of_gradient(gL, 4, c.eps, Q);
    expected_orthonormal(L, gL, Q, 4, 1.0, eL); /* eL = L - g Q */
    assert_int_equal(rite_step_f64(layer, L, R, gL, gR), RITE_OK);
    identity_columns(e, 4);
    for (i = 0; i < 8; i++) {
        d[i] = (e[i] - L[i]) / c.lr; /* D */
        e[i] = e[i] - eL[i];         /* M = g Q */
    }
    rmsM = norm(e, 8) / sqrt(8.0);
    assert_true(rmsM > 0.9); /* so the cap of 0.3 is active */
    assert_true(fabs(norm(d, 8) / sqrt(8.0) - 0.3) <= 1e-13);
    for (i = 0; i < 8; i++) assert_true(fabs(d[i] - e[i] * 0.3 / rmsM) <= 1e-13);
    rite_free(layer);
}

/* ---- a second step with r = 2 that stays diagonal ------------------------ */

/* Step 1 from L = [e1 e2] (4 x 2), R = [e1 e2] (3 x 2), T = I, with
     gradL = [a e1, b e2], gradR = [c0 e1, c1 e3]  (clip and skip off)
   Each gradient has orthogonal columns, so V is diagonal,
     V_L = diag(a^2, b^2) / 4,  V_R = diag(c0^2, c1^2) / 3,
   and each column moves along itself or along e3:
     L1 = [(1 - lr a q_L0) e1, (1 - lr b q_L1) e2]
     R1 = [(1 - lr c0 q_R0) e1, e2 - lr c1 q_R1 e3],  q_j = 1 / (sqrt(V_jj) + eps).
   Step 2: T_L1 = diag(|L1 columns|), U_L1 = U_L0 up to signs, so P_R = I;
   T_R1 = diag(t0, t1) with t1 = sqrt(1 + (lr c1 q_R1)^2) and
   P_L = U_R1^T U_R0 = diag(1, 1 / t1): R's second basis vector turned.
   V~_L = diag(V_L00, V_L11 / t1^2). With V_L11 > V_L00 > V_L11 / t1^2 the
   sorted eigenvalues pair up crosswise, so SPEC step 8 gives
     e = min( max(V_L00 - V_L11 / t1^2, V_L11 - V_L00),  V_L11 (1 - 1 / t1^2) )
   where the two candidates differ. gradL2 has orthogonal columns again,
   so g_L2 = gradL2 diag(1 / t0, 1 / t1) keeps V_L diagonal, and
     V_L <- bh2 V~_L + (1 - bh2) diag(g^T g) / 4,  Q_jj = 1 / (sqrt(V_jj + rho) + eps)
     M_L <- bh1 M_L P_L^T + (1 - bh1) g Q,  D_L = M_L diag(1 / t0, 1 / t1).
   gradR2 = 0: V_R <- bh2 V_R, M_R <- bh1 M_R, D_R = M_R T_L1^-T. */
static void check_r2_diagonal_second_step(int escape) {
    const double a = -0.2, b = -0.4, c0 = -0.3, c1 = 0.3, eps = 1e-3, lr = 1.5, lr2 = 0.1;
    const double gL1[8] = {a, 0, 0, b, 0, 0, 0, 0};
    const double gR1[6] = {c0, 0, 0, 0, 0, c1};
    const double gL2[8] = {0.1, 0, 0, 0.3, 0.2, 0, 0, -0.1};
    const double gR2[6] = {0, 0, 0, 0, 0, 0};
    rite_config c = config_lr_eps(lr, eps);
    double L[8], R[6], L1[8], R1[6], L2[8], R2[6], ML0[8], MR0[6];
    double VL0[2], VR0[2], qL0[2], qR0[2], tR[2], tL[2], PL[2], Vt[2], rho = 0, eA, eB;
    double bh1, bh2, gb[8];
    rite_layer *layer;
    int i, j;

    c.clip = 0.0;
    c.skip = 0.0;
    c.escape = escape;
    layer = make_layer(4, 3, 2, &c);
    identity_columns(L, 4);
    identity_columns(R, 3);

    /* step 1 */
    VL0[0] = a * a / 4; VL0[1] = b * b / 4;
    VR0[0] = c0 * c0 / 3; VR0[1] = c1 * c1 / 3;
    for (j = 0; j < 2; j++) {
        qL0[j] = 1.0 / (sqrt(VL0[j]) + eps);
        qR0[j] = 1.0 / (sqrt(VR0[j]) + eps);
    }
    for (i = 0; i < 4; i++)
        for (j = 0; j < 2; j++) {
            ML0[i * 2 + j] = gL1[i * 2 + j] * qL0[j];
            L1[i * 2 + j] = L[i * 2 + j] - lr * ML0[i * 2 + j];
        }
    for (i = 0; i < 3; i++)
        for (j = 0; j < 2; j++) {
            MR0[i * 2 + j] = gR1[i * 2 + j] * qR0[j];
            R1[i * 2 + j] = R[i * 2 + j] - lr * MR0[i * 2 + j];
        }
    assert_int_equal(rite_step_f64(layer, L, R, gL1, gR1), RITE_OK);
    assert_close(L, L1, 8, 1e-13, "L1");
    assert_close(R, R1, 6, 1e-13, "R1");

    /* geometry of step 2 (positive T diagonals: every column's entry along
       its own axis is positive here) */
    assert_true(L1[0] > 0 && L1[3] > 0 && R1[0] > 0);
    tL[0] = L1[0]; tL[1] = L1[3];
    tR[0] = R1[0];
    tR[1] = sqrt(R1[3] * R1[3] + R1[5] * R1[5]);
    PL[0] = 1.0;
    PL[1] = R1[3] / tR[1]; /* e2 . (R1 column 1) / t1 */
    Vt[0] = VL0[0];
    Vt[1] = PL[1] * PL[1] * VL0[1];
    assert_true(VL0[1] > VL0[0] && VL0[0] > Vt[1]); /* the crosswise case */
    eA = VL0[0] - Vt[1] > VL0[1] - VL0[0] ? VL0[0] - Vt[1] : VL0[1] - VL0[0]; /* sorted pairs */
    eB = VL0[1] - Vt[1];                                                      /* traces */
    assert_true(eB > 1.1 * eA); /* min and max differ */
    bh1 = c.beta1 / (1 + c.beta1);
    bh2 = c.beta2 / (1 + c.beta2);
    if (escape) rho = bh2 * eA;

    /* step 2 for L */
    for (i = 0; i < 4; i++)
        for (j = 0; j < 2; j++) gb[i * 2 + j] = gL2[i * 2 + j] / tR[j];
    assert_true(fabs(gb[0] * gb[1] + gb[2] * gb[3] + gb[4] * gb[5] + gb[6] * gb[7]) == 0.0);
    for (j = 0; j < 2; j++) {
        double col2 = 0, V, Q;
        for (i = 0; i < 4; i++) col2 += gb[i * 2 + j] * gb[i * 2 + j];
        V = bh2 * Vt[j] + (1 - bh2) * col2 / 4;
        Q = 1.0 / (sqrt(V + rho) + eps);
        for (i = 0; i < 4; i++) {
            double M = bh1 * ML0[i * 2 + j] * PL[j] + (1 - bh1) * gb[i * 2 + j] * Q;
            L2[i * 2 + j] = L1[i * 2 + j] - lr2 * M / tR[j];
        }
    }
    /* step 2 for R: no new gradient, P_R = I */
    for (i = 0; i < 3; i++)
        for (j = 0; j < 2; j++) R2[i * 2 + j] = R1[i * 2 + j] - lr2 * bh1 * MR0[i * 2 + j] / tL[j];

    assert_int_equal(rite_set_lr(layer, lr2), RITE_OK);
    assert_int_equal(rite_step_f64(layer, L, R, gL2, gR2), RITE_OK);
    assert_close(L, L2, 8, 1e-12, "L2");
    assert_close(R, R2, 6, 1e-12, "R2");
    rite_free(layer);
}

static void test_r2_second_step(void **state) {
    (void)state;
    check_r2_diagonal_second_step(0);
    check_r2_diagonal_second_step(1); /* escape: the min of SPEC step 8 matters */
}

/* ---- step count ---------------------------------------------------------- */

static void test_step_count(void **state) {
    rite_config c = base_config();
    const double bigL[3] = {30, -60, 90}, bigQ[2] = {500, 500};
    double l[3], q[2], hl[3], hq[2];
    hand1 h;
    rite_layer *layer = make_layer(3, 2, 1, &c);
    (void)state;
    assert_int_equal(rite_step_count(layer), 0);
    example_step(layer, EX_GL, EX_GQ, l, q);
    assert_int_equal(rite_step_count(layer), 1);
    assert_int_equal(rite_step_f64(layer, l, q, bigL, EX_GQ), RITE_OK); /* L skipped */
    assert_int_equal(rite_step_count(layer), 2);
    assert_int_equal(rite_step_f64(layer, l, q, bigL, bigQ), RITE_OK); /* both skipped */
    assert_int_equal(rite_step_count(layer), 3);
    rite_reset(layer);
    assert_int_equal(rite_step_count(layer), 0);
    /* after a reset the first step is again the k = 0 step */
    example_step(layer, EX_GL, EX_GQ, l, q);
    hand1_example_step(&h, &c, EX_GL, EX_GQ, hl, hq);
    assert_close(l, hl, 3, 1e-13, "L after reset");
    assert_close(q, hq, 2, 1e-13, "R after reset");
    assert_int_equal(rite_step_count(layer), 1);
    rite_free(layer);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_r1_first_step),
        cmocka_unit_test(test_r1_sign_symmetry),
        cmocka_unit_test(test_r1_later_steps),
        R1_TEST(0),
        R1_TEST(1),
        R1_TEST(2),
        R1_TEST(3),
        R1_TEST(4),
        cmocka_unit_test(test_r1_clip),
        R1_TEST(5),
        R1_TEST(6),
        cmocka_unit_test(test_r1_weight_decay),
        R1_TEST(7),
        R1_TEST(8),
        cmocka_unit_test(test_skip_one_factor),
        cmocka_unit_test(test_skip_both_then_continue),
        cmocka_unit_test(test_cap),
        R1_TEST(9),
        cmocka_unit_test(test_cap_leaves_moment),
        cmocka_unit_test(test_orthonormal_diagonal),
        cmocka_unit_test(test_orthonormal_general),
        cmocka_unit_test(test_orthonormal_cap),
        cmocka_unit_test(test_r2_second_step),
        cmocka_unit_test(test_step_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
