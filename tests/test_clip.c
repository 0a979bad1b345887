/* test_clip.c - global clipping across layers (SPEC.md step 5).

   Three layers of different sizes train on their own least-squares losses
   0.5 * ||L R^T - A||^2. The library steps them in two phases
   (rite_prepare_f64 on every layer, add the sums, rite_apply on every layer
   with the total); the naive reference (tests/ref_rite.h) steps them
   together with gamma taken over all layers. Checked after every step:
     - each layer's sum of squares from prepare equals the reference's
       ||gbar_L||^2 + ||gbar_R||^2 for that layer (after skipping);
     - prepare changes neither the factors nor the optimizer state;
     - the factors agree to 1e-10 (relative);
   and over the run: clipping was active (gamma > clip) and clipping by the
   global norm ends elsewhere than clipping each layer by its own.
   Then each layer stepped alone with rite_step_f64 equals the reference
   clipping that layer by its own norm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "lora_rite.h"
#include "ref_rite.h"
#include "test_util.h"

enum { NL = 3, STEPS = 40, MAXK = 32, MAXR = 4 };

static const int SIZES[NL][3] = {{23, 17, 4}, {12, 30, 3}, {9, 14, 2}};
static const rite_layout LAYOUT_L[NL] = {RITE_RANK_LAST, RITE_RANK_FIRST, RITE_RANK_LAST};
static const rite_layout LAYOUT_R[NL] = {RITE_RANK_LAST, RITE_RANK_LAST, RITE_RANK_FIRST};

/* One layer's least-squares problem; factors logical (k x r row-major). */
typedef struct problem {
    int m, n, r;
    double A[MAXK * MAXK], L0[MAXK * MAXR], R0[MAXK * MAXR], work[MAXK * MAXK];
} problem;

/* A: rank r + 2 (scale 0.2) plus noise 0.01; L0, R0 normal, deviation 0.2. */
static void problem_make(problem *p, int layer) {
    int m = SIZES[layer][0], n = SIZES[layer][1], r = SIZES[layer][2], q = r + 2, i;
    double B[MAXK * (MAXR + 2)], C[MAXK * (MAXR + 2)];
    tu_rng g;
    g.s = 0xc11b0000ull + (uint64_t)layer;
    p->m = m; p->n = n; p->r = r;
    tu_fill_normal(&g, B, (size_t)m * q, 1.0);
    tu_fill_normal(&g, C, (size_t)n * q, 1.0);
    tu_product(B, C, m, n, q, p->A);
    for (i = 0; i < m * n; i++) p->A[i] = 0.2 * p->A[i] / sqrt((double)q) + 0.01 * tu_normal(&g);
    tu_fill_normal(&g, p->L0, (size_t)m * r, 0.2);
    tu_fill_normal(&g, p->R0, (size_t)n * r, 0.2);
}

/* Gradients at (L, R); multiplied by `spike` at steps s % 7 == 3 (outliers). */
static void problem_grad(problem *p, const double *L, const double *R, int s, double spike, double *gL, double *gR) {
    tu_lsq_grad_spiked(L, R, p->A, p->m, p->n, p->r, s, spike, gL, gR, p->work);
}

/* The library's view of one layer: its factors and gradients in storage. */
typedef struct lib_layer {
    rite_layer *layer;
    int m, n, r;
    double L[MAXK * MAXR], R[MAXK * MAXR], gL[MAXK * MAXR], gR[MAXK * MAXR];
} lib_layer;

static int ld_of(rite_layout layout, int k, int r) { return layout == RITE_RANK_LAST ? r : k; }

static void lib_make(lib_layer *ly, int layer, const problem *p, const ref_config *cfg) {
    rite_config rc = tu_rite_config(cfg, RITE_LORA_RITE);
    rite_desc d = tu_desc(p->m, p->n, p->r, RITE_LORA_RITE, RITE_FLOAT64);
    rite_status st;
    ly->m = p->m;
    ly->n = p->n;
    ly->r = p->r;
    d.layout_L = LAYOUT_L[layer];
    d.layout_R = LAYOUT_R[layer];
    d.config = &rc;
    st = rite_init(&ly->layer, &d);
    if (st != RITE_OK) print_error("rite_init: %s\n", rite_status_string(st));
    assert_int_equal(st, RITE_OK);
    tu_to_layout_d(p->L0, p->m, p->r, d.layout_L, ld_of(d.layout_L, p->m, p->r), ly->L);
    tu_to_layout_d(p->R0, p->n, p->r, d.layout_R, ld_of(d.layout_R, p->n, p->r), ly->R);
}

/* library factors -> logical */
static void lib_get(const lib_layer *ly, int layer, double *L, double *R) {
    tu_from_layout_d(ly->L, ly->m, ly->r, LAYOUT_L[layer], ld_of(LAYOUT_L[layer], ly->m, ly->r), L);
    tu_from_layout_d(ly->R, ly->n, ly->r, LAYOUT_R[layer], ld_of(LAYOUT_R[layer], ly->n, ly->r), R);
}

/* gradients at the library's current factors, into its storage */
static void lib_grad(lib_layer *ly, int layer, problem *p, int s, double spike) {
    double L[MAXK * MAXR], R[MAXK * MAXR], gL[MAXK * MAXR], gR[MAXK * MAXR];
    lib_get(ly, layer, L, R);
    problem_grad(p, L, R, s, spike, gL, gR);
    tu_to_layout_d(gL, ly->m, ly->r, LAYOUT_L[layer], ld_of(LAYOUT_L[layer], ly->m, ly->r), ly->gL);
    tu_to_layout_d(gR, ly->n, ly->r, LAYOUT_R[layer], ld_of(LAYOUT_R[layer], ly->n, ly->r), ly->gR);
}

/* max of the relative differences of both factors, library vs reference */
static double factor_diff(const lib_layer *ly, int layer, const double *Lref, const double *Rref) {
    double L[MAXK * MAXR], R[MAXK * MAXR], dL, dR;
    lib_get(ly, layer, L, R);
    dL = tu_rel_diff(L, Lref, (size_t)ly->m * ly->r);
    dR = tu_rel_diff(R, Rref, (size_t)ly->n * ly->r);
    return dL > dR || dL != dL ? dL : dR;
}

static ref_config config_defaults(void) {
    ref_config c = ref_config_default();
    c.lr = 0.02;
    return c;
}

/* Three layers in two phases against the reference's all-layers step. */
static void global_case(const char *name, const ref_config *cfg, double spike) {
    problem p[NL];
    lib_layer lib[NL];
    ref_layer ref[NL], alone[NL];
    ref_layer *refp[NL];
    double Lr[NL][MAXK * MAXR], Rr[NL][MAXK * MAXR], La[NL][MAXK * MAXR], Ra[NL][MAXK * MAXR];
    double *Lp[NL], *Rp[NL];
    const double *gLp[NL], *gRp[NL];
    double gL[NL][MAXK * MAXR], gR[NL][MAXK * MAXR];
    double max_diff = 0, max_sumsq_diff = 0, global_vs_alone = 0;
    long clipped = 0, skipped = 0;
    int i, s;

    memset(lib, 0, sizeof lib);   /* the comparisons read whole MAXK x MAXR arrays */
    memset(La, 0, sizeof La);
    memset(Ra, 0, sizeof Ra);
    memset(Lr, 0, sizeof Lr);
    memset(Rr, 0, sizeof Rr);
    for (i = 0; i < NL; i++) {
        problem_make(&p[i], i);
        lib_make(&lib[i], i, &p[i], cfg);
        ref_init(&ref[i], p[i].m, p[i].n, p[i].r, cfg);
        ref_init(&alone[i], p[i].m, p[i].n, p[i].r, cfg);
        memcpy(Lr[i], p[i].L0, sizeof Lr[i]);
        memcpy(Rr[i], p[i].R0, sizeof Rr[i]);
        memcpy(La[i], p[i].L0, sizeof La[i]);
        memcpy(Ra[i], p[i].R0, sizeof Ra[i]);
        refp[i] = &ref[i];
        Lp[i] = Lr[i];
        Rp[i] = Rr[i];
        gLp[i] = gL[i];
        gRp[i] = gR[i];
    }

    for (s = 0; s < STEPS; s++) {
        double sumsq[NL], total = 0, gamma;

        /* library, phase one on every layer */
        for (i = 0; i < NL; i++) {
            double Lb[MAXK * MAXR], Rb[MAXK * MAXR];
            unsigned char st0[1 << 14], st1[1 << 14];
            size_t ssz = rite_state_size(lib[i].layer);
            assert_true(ssz <= sizeof st0);
            assert_int_equal(rite_state_copy(lib[i].layer, st0, sizeof st0), RITE_OK);
            lib_grad(&lib[i], i, &p[i], s, spike);
            memcpy(Lb, lib[i].L, sizeof Lb);
            memcpy(Rb, lib[i].R, sizeof Rb);
            sumsq[i] = -1;
            assert_int_equal(rite_prepare_f64(lib[i].layer, lib[i].L, lib[i].R, lib[i].gL, lib[i].gR, &sumsq[i]),
                             RITE_OK);
            /* prepare changes neither the factors nor the state */
            assert_memory_equal(Lb, lib[i].L, sizeof Lb);
            assert_memory_equal(Rb, lib[i].R, sizeof Rb);
            assert_int_equal(rite_state_copy(lib[i].layer, st1, sizeof st1), RITE_OK);
            assert_memory_equal(st0, st1, ssz);
            assert_true(sumsq[i] >= 0);
            total += sumsq[i];
        }
        /* library, phase two with the global total */
        for (i = 0; i < NL; i++) assert_int_equal(rite_apply(lib[i].layer, total), RITE_OK);

        /* reference: all layers together */
        for (i = 0; i < NL; i++) problem_grad(&p[i], Lr[i], Rr[i], s, spike, gL[i], gR[i]);
        gamma = ref_step_layers(refp, NL, Lp, Rp, gLp, gRp);
        if (cfg->clip > 0 && gamma > cfg->clip) clipped++;

        /* reference: every layer clipped by its own norm (for contrast) */
        for (i = 0; i < NL; i++) {
            problem_grad(&p[i], La[i], Ra[i], s, spike, gL[i], gR[i]);
            ref_step(&alone[i], La[i], Ra[i], gL[i], gR[i]);
        }

        for (i = 0; i < NL; i++) {
            double ds = fabs(sumsq[i] - ref[i].sumsq) / (ref[i].sumsq > 1e-300 ? ref[i].sumsq : 1e-300);
            double df = factor_diff(&lib[i], i, Lr[i], Rr[i]);
            if (ref[i].sumsq == 0) ds = sumsq[i] == 0 ? 0 : 1;
            if (ds > max_sumsq_diff) max_sumsq_diff = ds;
            if (df > max_diff || df != df) max_diff = df;
            if (!(ds <= 1e-10 && df <= 1e-10)) {
                print_error("global, %s: step %d, layer %d: sumsq %.17g vs reference %.17g, factor difference %.3e\n",
                            name, s, i, sumsq[i], ref[i].sumsq, df);
                fail();
            }
        }
    }
    for (i = 0; i < NL; i++) {
        double d = tu_rel_diff(La[i], Lr[i], (size_t)p[i].m * p[i].r);
        if (d > global_vs_alone) global_vs_alone = d;
        skipped += ref[i].n_skip;
    }
    print_message("    global, %-14s max rel diff %.2e, max sumsq rel diff %.2e, clipped %ld of %d steps, "
                  "skipped %ld factors, global vs per-layer clipping %.2e\n",
                  name, max_diff, max_sumsq_diff, clipped, STEPS, skipped, global_vs_alone);
    assert_true(clipped > 0);
    assert_true(global_vs_alone > 1e-6);
    if (cfg->skip > 0 && spike > 0) assert_true(skipped > 0);

    for (i = 0; i < NL; i++) {
        rite_free(lib[i].layer);
        ref_free(&ref[i]);
        ref_free(&alone[i]);
    }
}

/* Each layer stepped alone with rite_step_f64 is clipped by its own norm. */
static void alone_case(const char *name, const ref_config *cfg, double spike) {
    int i, s;
    for (i = 0; i < NL; i++) {
        problem p;
        lib_layer lib;
        ref_layer ref;
        double Lr[MAXK * MAXR], Rr[MAXK * MAXR], gL[MAXK * MAXR], gR[MAXK * MAXR], max_diff = 0;
        problem_make(&p, i);
        lib_make(&lib, i, &p, cfg);
        ref_init(&ref, p.m, p.n, p.r, cfg);
        memcpy(Lr, p.L0, sizeof Lr);
        memcpy(Rr, p.R0, sizeof Rr);
        for (s = 0; s < STEPS; s++) {
            double d;
            lib_grad(&lib, i, &p, s, spike);
            assert_int_equal(rite_step_f64(lib.layer, lib.L, lib.R, lib.gL, lib.gR), RITE_OK);
            problem_grad(&p, Lr, Rr, s, spike, gL, gR);
            ref_step(&ref, Lr, Rr, gL, gR);
            d = factor_diff(&lib, i, Lr, Rr);
            if (d > max_diff || d != d) max_diff = d;
            if (!(d <= 1e-10)) {
                print_error("alone, %s: layer %d, step %d: relative difference %.3e\n", name, i, s, d);
                fail();
            }
        }
        print_message("    alone, %-15s layer %d (%dx%d, r=%d): max rel diff %.2e, clipped %ld of %d steps, "
                      "max gamma %.3g\n",
                      name, i, p.m, p.n, p.r, max_diff, ref.n_clip, STEPS, ref.max_gamma);
        assert_true(ref.n_clip > 0);
        rite_free(lib.layer);
        ref_free(&ref);
    }
}

/* The configurations every check runs with. */
typedef struct clip_config {
    const char *name;
    ref_config (*make)(void);
    double spike; /* gradients multiplied by this at steps s % 7 == 3 (0: never) */
} clip_config;

static const clip_config CONFIGS[] = {
    {"defaults", config_defaults, 0},
    /* with skipping active: a skipped factor adds nothing to the sum */
    {"all options", ref_config_all_options, 5.0},
};

static void for_each_config(void (*check)(const char *name, const ref_config *cfg, double spike)) {
    size_t i;
    for (i = 0; i < sizeof CONFIGS / sizeof CONFIGS[0]; i++) {
        ref_config cfg = CONFIGS[i].make();
        check(CONFIGS[i].name, &cfg, CONFIGS[i].spike);
    }
}

static void test_global_clipping_matches_reference(void **state) {
    (void)state;
    for_each_config(global_case);
}

static void test_layer_alone_clipped_by_own_norm(void **state) {
    (void)state;
    for_each_config(alone_case);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_global_clipping_matches_reference),
        cmocka_unit_test(test_layer_alone_clipped_by_own_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
