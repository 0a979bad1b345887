/* test_adamw.c - the AdamW baseline (RITE_ADAMW) against the SPEC.md formula
   written out per element:

       m <- b1 m + (1 - b1) g
       v <- b2 v + (1 - b2) g^2
       p <- p - lr * ( (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd * p )

   with t = 1 at the first step. The reference below is those three lines in
   double precision; the library runs in double and in single precision,
   with both storage layouts and with padded leading dimensions. */
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

#define PAD_VALUE 12345.0 /* written into padding; a step must leave it alone */

/* ---- the reference: SPEC.md's AdamW, one element at a time ------------- */

static void ref_adamw_step(double *p, double *mom1, double *mom2, const double *g, size_t count,
                           const rite_config *c, int t) {
    size_t i;
    double bc1 = 1.0 - pow(c->beta1, t); /* bias corrections */
    double bc2 = 1.0 - pow(c->beta2, t);
    for (i = 0; i < count; i++) {
        double mhat, vhat;
        mom1[i] = c->beta1 * mom1[i] + (1.0 - c->beta1) * g[i];
        mom2[i] = c->beta2 * mom2[i] + (1.0 - c->beta2) * g[i] * g[i];
        mhat = mom1[i] / bc1;
        vhat = mom2[i] / bc2;
        p[i] -= c->lr * (mhat / (sqrt(vhat) + c->eps) + c->weight_decay * p[i]);
    }
}

/* ---- storage helpers ---------------------------------------------------- */

static int packed_ld(rite_layout layout, int k, int r) { return layout == RITE_RANK_LAST ? r : k; }

/* A buffer for a k x r factor in the given storage, padding set to PAD_VALUE. */
typedef struct buf {
    rite_precision prec;
    rite_layout layout;
    int k, r, ld;
    size_t count;
    double *d;
    float *f;
} buf;

static buf buf_make(rite_precision prec, rite_layout layout, int k, int r, int ld) {
    buf b;
    size_t i;
    b.prec = prec;
    b.layout = layout;
    b.k = k;
    b.r = r;
    b.ld = ld ? ld : packed_ld(layout, k, r);
    b.count = tu_storage_count(layout, b.ld, k, r);
    b.d = NULL;
    b.f = NULL;
    if (prec == RITE_FLOAT64) {
        b.d = malloc(b.count * sizeof *b.d);
        assert_non_null(b.d);
        for (i = 0; i < b.count; i++) b.d[i] = PAD_VALUE;
    } else {
        b.f = malloc(b.count * sizeof *b.f);
        assert_non_null(b.f);
        for (i = 0; i < b.count; i++) b.f[i] = (float)PAD_VALUE;
    }
    return b;
}

static void buf_free(buf *b) {
    free(b->d);
    free(b->f);
}

static void buf_put(buf *b, const double *logical) {
    if (b->prec == RITE_FLOAT64) tu_to_layout_d(logical, b->k, b->r, b->layout, b->ld, b->d);
    else tu_to_layout_f(logical, b->k, b->r, b->layout, b->ld, b->f);
}

static void buf_get(const buf *b, double *logical) {
    if (b->prec == RITE_FLOAT64) tu_from_layout_d(b->d, b->k, b->r, b->layout, b->ld, logical);
    else tu_from_layout_f(b->f, b->k, b->r, b->layout, b->ld, logical);
}

/* Every storage element that is not a logical element still holds PAD_VALUE. */
static void assert_padding_intact(const buf *b) {
    size_t i;
    char *logical = calloc(b->count, 1);
    int p, q;
    assert_non_null(logical);
    for (p = 0; p < b->k; p++)
        for (q = 0; q < b->r; q++) logical[tu_index(b->layout, b->ld, p, q)] = 1;
    for (i = 0; i < b->count; i++) {
        if (logical[i]) continue;
        if (b->prec == RITE_FLOAT64) assert_true(b->d[i] == PAD_VALUE);
        else assert_true(b->f[i] == (float)PAD_VALUE);
    }
    free(logical);
}

/* Round a logical array to float, as storing it in a float buffer does. */
static void round_to_float(double *x, size_t count) {
    size_t i;
    for (i = 0; i < count; i++) x[i] = (double)(float)x[i];
}

static rite_status lib_step(rite_layer *layer, buf *L, buf *R, buf *gL, buf *gR) {
    if (L->prec == RITE_FLOAT64) return rite_step_f64(layer, L->d, R->d, gL->d, gR->d);
    return rite_step_f32(layer, L->f, R->f, gL->f, gR->f);
}

/* ---- one scenario: run the library and the reference side by side ------ */

typedef struct scenario {
    int m, n, r;
    rite_precision prec;
    rite_layout layout_L, layout_R;
    int ld_L, ld_R;   /* 0 = packed */
    int ld_gL, ld_gR; /* 0 = as the factor's */
    const rite_config *config; /* NULL = defaults */
    int steps;
    uint64_t seed;
} scenario;

/* the AdamW layer a scenario describes */
static rite_desc scenario_desc(const scenario *sc) {
    const rite_desc d = {.m = sc->m, .n = sc->n, .r = sc->r, .optimizer = RITE_ADAMW, .precision = sc->prec,
                         .layout_L = sc->layout_L, .layout_R = sc->layout_R, .ld_L = sc->ld_L, .ld_R = sc->ld_R,
                         .ld_gL = sc->ld_gL, .ld_gR = sc->ld_gR, .config = sc->config};
    return d;
}

/* Gradient element (i, j) of a step: mixed magnitudes and signs, one exact
   zero (then m = v = 0 and the update term is 0 / (0 + eps) = 0). */
static void make_gradient(tu_rng *g, double *x, int k, int r, int zero_at) {
    int i;
    for (i = 0; i < k * r; i++) {
        double mag = pow(10.0, -1.5 + 2.5 * tu_uniform(g)); /* 0.03 .. 10 */
        x[i] = (tu_uniform(g) < 0.5 ? -mag : mag);
    }
    if (zero_at >= 0 && zero_at < k * r) x[zero_at] = 0.0;
}

static void run_scenario(const scenario *sc) {
    const int m = sc->m, n = sc->n, r = sc->r;
    const size_t cl = (size_t)m * r, cr = (size_t)n * r;
    const int is_f64 = sc->prec == RITE_FLOAT64;
    const double tol = is_f64 ? 1e-13 : 1e-6;
    rite_config cfg = sc->config ? *sc->config : rite_config_default(RITE_ADAMW);
    const rite_desc desc = scenario_desc(sc);
    rite_layer *layer = NULL;
    tu_rng rng;
    buf L, R, gL, gR;
    double *pL = malloc(cl * sizeof *pL), *pR = malloc(cr * sizeof *pR);
    double *m1L = calloc(cl, sizeof *m1L), *m2L = calloc(cl, sizeof *m2L);
    double *m1R = calloc(cr, sizeof *m1R), *m2R = calloc(cr, sizeof *m2R);
    double *xL = malloc(cl * sizeof *xL), *xR = malloc(cr * sizeof *xR);
    double *oldL = malloc(cl * sizeof *oldL), *oldR = malloc(cr * sizeof *oldR);
    int t;
    size_t i;

    assert_non_null(pL); assert_non_null(pR); assert_non_null(m1L); assert_non_null(m2L);
    assert_non_null(m1R); assert_non_null(m2R); assert_non_null(xL); assert_non_null(xR);
    assert_non_null(oldL); assert_non_null(oldR);

    assert_int_equal(rite_init(&layer, &desc), RITE_OK);
    assert_non_null(layer);

    L = buf_make(sc->prec, sc->layout_L, m, r, sc->ld_L);
    R = buf_make(sc->prec, sc->layout_R, n, r, sc->ld_R);
    gL = buf_make(sc->prec, sc->layout_L, m, r, sc->ld_gL ? sc->ld_gL : sc->ld_L);
    gR = buf_make(sc->prec, sc->layout_R, n, r, sc->ld_gR ? sc->ld_gR : sc->ld_R);

    rng.s = sc->seed;
    tu_fill_normal(&rng, pL, cl, 1.0);
    tu_fill_normal(&rng, pR, cr, 1.0);
    if (!is_f64) { round_to_float(pL, cl); round_to_float(pR, cr); }
    buf_put(&L, pL);
    buf_put(&R, pR);

    for (t = 1; t <= sc->steps; t++) {
        double dmax = 0, dscale = 0;
        make_gradient(&rng, xL, m, r, t == 1 ? 0 : -1);
        make_gradient(&rng, xR, n, r, -1);
        if (!is_f64) { round_to_float(xL, cl); round_to_float(xR, cr); }
        buf_put(&gL, xL);
        buf_put(&gR, xR);
        memcpy(oldL, pL, cl * sizeof *oldL);
        memcpy(oldR, pR, cr * sizeof *oldR);

        ref_adamw_step(pL, m1L, m2L, xL, cl, &cfg, t);
        ref_adamw_step(pR, m1R, m2R, xR, cr, &cfg, t);
        assert_int_equal(lib_step(layer, &L, &R, &gL, &gR), RITE_OK);
        assert_int_equal(rite_step_count(layer), t);

        /* parameters agree with the reference */
        buf_get(&L, xL);
        buf_get(&R, xR);
        assert_true(tu_rel_diff(xL, pL, cl) < tol);
        assert_true(tu_rel_diff(xR, pR, cr) < tol);

        /* in double the displacement itself agrees, element by element */
        if (is_f64) {
            for (i = 0; i < cl; i++) {
                double dl = xL[i] - oldL[i], dr = pL[i] - oldL[i];
                if (fabs(dl - dr) > dmax) dmax = fabs(dl - dr);
                if (fabs(dr) > dscale) dscale = fabs(dr);
            }
            for (i = 0; i < cr; i++) {
                double dl = xR[i] - oldR[i], dr = pR[i] - oldR[i];
                if (fabs(dl - dr) > dmax) dmax = fabs(dl - dr);
                if (fabs(dr) > dscale) dscale = fabs(dr);
            }
            assert_true(dscale > 0);
            assert_true(dmax <= 1e-10 * dscale);
        }
        /* continue from the library's values (in float: what is stored) */
        memcpy(pL, xL, cl * sizeof *pL);
        memcpy(pR, xR, cr * sizeof *pR);

        assert_padding_intact(&L);
        assert_padding_intact(&R);
    }

    rite_free(layer);
    buf_free(&L); buf_free(&R); buf_free(&gL); buf_free(&gR);
    free(pL); free(pR); free(m1L); free(m2L); free(m1R); free(m2R);
    free(xL); free(xR); free(oldL); free(oldR);
}

/* A configuration far from the defaults, so that every term matters:
   eps comparable to small sqrt(v), strong weight decay, short memories. */
static rite_config custom_config(void) {
    rite_config c = rite_config_default(RITE_ADAMW);
    c.lr = 2e-2;
    c.beta1 = 0.8;
    c.beta2 = 0.95;
    c.eps = 1e-2;
    c.weight_decay = 0.3;
    return c;
}

/* ---- tests -------------------------------------------------------------- */

/* the AdamW defaults SPEC.md lists */
static void assert_spec_defaults(const rite_config *c) {
    assert_true(c->lr == 1e-3);
    assert_true(c->beta1 == 0.9);
    assert_true(c->beta2 == 0.999);
    assert_true(c->eps == 1e-8);
    assert_true(c->weight_decay == 0.0);
}

/* rite_config_default(RITE_ADAMW) holds the SPEC.md values, and a layer
   created with config == NULL uses them. */
static void test_defaults(void **state) {
    const rite_config c = rite_config_default(RITE_ADAMW);
    const rite_desc desc = tu_desc(3, 2, 1, RITE_ADAMW, RITE_FLOAT64);
    rite_config g;
    rite_layer *layer = NULL;
    (void)state;
    assert_spec_defaults(&c);
    assert_int_equal(rite_init(&layer, &desc), RITE_OK);
    g = rite_get_config(layer);
    assert_spec_defaults(&g);
    assert_int_equal(rite_get_desc(layer).optimizer, RITE_ADAMW);
    assert_int_equal(rite_step_count(layer), 0);
    rite_free(layer);
}

/* m = 3, n = 2, r = 1 with the defaults: one step, then three. */
static void test_one_step_defaults_tiny(void **state) {
    scenario sc;
    (void)state;
    memset(&sc, 0, sizeof sc);
    sc.m = 3; sc.n = 2; sc.r = 1;
    sc.prec = RITE_FLOAT64;
    sc.steps = 1;
    sc.seed = 11;
    run_scenario(&sc);
    sc.steps = 3;
    sc.seed = 12;
    run_scenario(&sc);
}

/* The first step with wd = 0: m_hat = g and v_hat = g^2, so each element
   moves by lr * g / (|g| + eps), i.e. by lr * sign(g) up to a relative
   eps / |g| (here <= 1e-8 / 0.1). Checked in both precisions. */
static void check_sign_step(rite_precision prec) {
    const int m = 4, n = 3, r = 2;
    const double lr = 1e-3;
    const rite_desc desc = tu_desc(m, n, r, RITE_ADAMW, prec);
    rite_layer *layer = NULL;
    tu_rng rng = {77};
    double L0[8], R0[6], gl[8], gr[6], L1[8], R1[6];
    float Lf[8], Rf[6], glf[8], grf[6];
    int i;
    /* float: p ~ 1 is stored with an error of ~6e-8, i.e. 6e-5 of lr */
    const double tol = prec == RITE_FLOAT64 ? 2e-7 : 2e-4;

    assert_int_equal(rite_init(&layer, &desc), RITE_OK);

    tu_fill_normal(&rng, L0, 8, 1.0);
    tu_fill_normal(&rng, R0, 6, 1.0);
    for (i = 0; i < 8; i++) gl[i] = (i % 3 == 0 ? -1 : 1) * (0.1 + 0.7 * i);
    for (i = 0; i < 6; i++) gr[i] = (i % 2 == 0 ? -1 : 1) * (5.0 - 0.8 * i);
    if (prec == RITE_FLOAT64) {
        memcpy(L1, L0, sizeof L0);
        memcpy(R1, R0, sizeof R0);
        assert_int_equal(rite_step_f64(layer, L1, R1, gl, gr), RITE_OK);
    } else {
        round_to_float(L0, 8);
        round_to_float(R0, 6);
        for (i = 0; i < 8; i++) { Lf[i] = (float)L0[i]; glf[i] = (float)gl[i]; }
        for (i = 0; i < 6; i++) { Rf[i] = (float)R0[i]; grf[i] = (float)gr[i]; }
        assert_int_equal(rite_step_f32(layer, Lf, Rf, glf, grf), RITE_OK);
        for (i = 0; i < 8; i++) L1[i] = Lf[i];
        for (i = 0; i < 6; i++) R1[i] = Rf[i];
    }
    for (i = 0; i < 8; i++) {
        double d = L1[i] - L0[i];
        assert_true(fabs(d + lr * (gl[i] > 0 ? 1 : -1)) <= tol * lr);
    }
    for (i = 0; i < 6; i++) {
        double d = R1[i] - R0[i];
        assert_true(fabs(d + lr * (gr[i] > 0 ? 1 : -1)) <= tol * lr);
    }
    rite_free(layer);
}

static void test_first_step_is_sign_f64(void **state) { (void)state; check_sign_step(RITE_FLOAT64); }
static void test_first_step_is_sign_f32(void **state) { (void)state; check_sign_step(RITE_FLOAT32); }

/* Decoupled weight decay alone: with g = 0 the moments stay 0 and the
   update term is 0 / (0 + eps) = 0, so p <- p - lr * wd * p = (1 - lr wd) p. */
static void test_weight_decay_alone(void **state) {
    rite_config c = rite_config_default(RITE_ADAMW);
    rite_desc desc;
    rite_layer *layer = NULL;
    double L[6] = {1, -2, 3, -4, 5, -6}, R[4] = {0.5, -0.25, 8, 1e-3};
    double L0[6], R0[4], gl[6] = {0}, gr[4] = {0};
    int i, t;
    (void)state;
    c.lr = 0.1;
    c.weight_decay = 0.5;
    memcpy(L0, L, sizeof L);
    memcpy(R0, R, sizeof R);
    desc = tu_desc(3, 2, 2, RITE_ADAMW, RITE_FLOAT64);
    desc.config = &c;
    assert_int_equal(rite_init(&layer, &desc), RITE_OK);
    for (t = 1; t <= 3; t++) {
        double f = pow(1.0 - 0.1 * 0.5, t);
        assert_int_equal(rite_step_f64(layer, L, R, gl, gr), RITE_OK);
        for (i = 0; i < 6; i++) assert_true(fabs(L[i] - f * L0[i]) <= 1e-14 * fabs(L0[i]));
        for (i = 0; i < 4; i++) assert_true(fabs(R[i] - f * R0[i]) <= 1e-14 * fabs(R0[i]));
    }
    rite_free(layer);
}

/* Several steps with every term active, all layout / precision combinations. */
static void run_grid(rite_precision prec) {
    static const rite_layout lays[2] = {RITE_RANK_LAST, RITE_RANK_FIRST};
    rite_config c = custom_config();
    scenario sc;
    int a, b, pad;
    for (a = 0; a < 2; a++)
        for (b = 0; b < 2; b++)
            for (pad = 0; pad < 2; pad++) {
                memset(&sc, 0, sizeof sc);
                sc.m = 4; sc.n = 3; sc.r = 2;
                sc.prec = prec;
                sc.layout_L = lays[a];
                sc.layout_R = lays[b];
                if (pad) {
                    /* padded factors, gradients padded differently again */
                    sc.ld_L = packed_ld(lays[a], sc.m, sc.r) + 2;
                    sc.ld_R = packed_ld(lays[b], sc.n, sc.r) + 1;
                    sc.ld_gL = sc.ld_L + 3;
                    sc.ld_gR = sc.ld_R + 1;
                }
                sc.config = &c;
                sc.steps = 3;
                sc.seed = 1000 + (uint64_t)(a * 4 + b * 2 + pad);
                run_scenario(&sc);
                /* the defaults as well, over more steps */
                sc.config = NULL;
                sc.steps = 5;
                sc.seed += 100;
                run_scenario(&sc);
            }
}

static void test_several_steps_f64(void **state) { (void)state; run_grid(RITE_FLOAT64); }
static void test_several_steps_f32(void **state) { (void)state; run_grid(RITE_FLOAT32); }

/* m = 3, n = 2, r = 1 in float with the custom configuration. */
static void test_tiny_f32(void **state) {
    rite_config c = custom_config();
    scenario sc;
    (void)state;
    memset(&sc, 0, sizeof sc);
    sc.m = 3; sc.n = 2; sc.r = 1;
    sc.prec = RITE_FLOAT32;
    sc.layout_L = RITE_RANK_FIRST;
    sc.config = &c;
    sc.steps = 3;
    sc.seed = 5;
    run_scenario(&sc);
}

/* rite_reset starts the bias correction again at t = 1: after a reset the
   first step is again lr * g / (|g| + eps) per element. */
static void test_reset_restarts_bias_correction(void **state) {
    rite_config c = rite_config_default(RITE_ADAMW);
    rite_desc desc;
    rite_layer *layer = NULL;
    double L[3] = {1, 2, 3}, R[2] = {-1, 1}, gl[3] = {0.5, -2, 4}, gr[2] = {-3, 0.25};
    double gl2[3] = {-0.7, 0.1, 9}, gr2[2] = {1, -1}, L0[3], R0[2];
    int i;
    (void)state;
    c.lr = 1e-2;
    desc = tu_desc(3, 2, 1, RITE_ADAMW, RITE_FLOAT64);
    desc.config = &c;
    assert_int_equal(rite_init(&layer, &desc), RITE_OK);
    assert_int_equal(rite_step_f64(layer, L, R, gl, gr), RITE_OK);
    assert_int_equal(rite_step_f64(layer, L, R, gl2, gr2), RITE_OK);
    assert_int_equal(rite_step_count(layer), 2);
    rite_reset(layer);
    assert_int_equal(rite_step_count(layer), 0);
    memcpy(L0, L, sizeof L);
    memcpy(R0, R, sizeof R);
    assert_int_equal(rite_step_f64(layer, L, R, gl, gr), RITE_OK);
    for (i = 0; i < 3; i++)
        assert_true(fabs((L[i] - L0[i]) + c.lr * gl[i] / (fabs(gl[i]) + c.eps)) <= 4e-15);
    for (i = 0; i < 2; i++)
        assert_true(fabs((R[i] - R0[i]) + c.lr * gr[i] / (fabs(gr[i]) + c.eps)) <= 4e-15);
    rite_free(layer);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_one_step_defaults_tiny),
        cmocka_unit_test(test_first_step_is_sign_f64),
        cmocka_unit_test(test_first_step_is_sign_f32),
        cmocka_unit_test(test_weight_decay_alone),
        cmocka_unit_test(test_several_steps_f64),
        cmocka_unit_test(test_several_steps_f32),
        cmocka_unit_test(test_tiny_f32),
        cmocka_unit_test(test_reset_restarts_bias_correction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
