/* test_reference.c - the library against the naive reference of SPEC.md.

   Each test trains one small LoRA layer (m = 23, n = 17, r = 4) on the
   least-squares loss 0.5 * ||L R^T - A||^2, where A is a random rank-(r+2)
   matrix plus noise, for 50 steps, twice: once with the library and once
   with the reference in tests/ref_rite.h. Each run computes its gradients
   from its own current factors, so any difference in a step propagates.
   After every step the factors must agree to 1e-10 (relative).

   Every option is switched on alone, then all together; each option test
   checks, with the reference's counters, that the option really acted
   (skipping skipped, clipping clipped, ...) and that the run differs from
   one without it. Then the four layout combinations, padded leading
   dimensions, single precision, a zero-initialised factor and AdamW. */
#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "lora_rite.h"
#include "ref_rite.h"
#include "test_util.h"

enum { M = 23, N = 17, RK = 4, STEPS = 50 };

/* ------------------------------------------------------------ the problem */

/* Least-squares target and starting factors, all logical (k x r row-major). */
typedef struct problem {
    int m, n, r;
    double *A;      /* m x n target */
    double *L0;     /* m x r */
    double *R0;     /* n x r */
    double *work;   /* m x n scratch for the loss */
} problem;

/* How the factors start. */
enum { INIT_RANDOM = 0, INIT_ZERO_R = 1, INIT_DEFICIENT = 2 };

/* A = a_scale * B C^T / sqrt(r + 2) + 0.01 * noise with B, C standard normal
   (rank r + 2 plus noise); L0, R0 normal with deviation 0.2. INIT_ZERO_R:
   R0 = 0 (standard LoRA init). INIT_DEFICIENT: both factors rank r - 1
   (R0's last column is 0, L0's column 2 is column 0 + column 1). */
static void problem_make(problem *p, int m, int n, int r, uint64_t seed, int init) {
    const double a_scale = 0.2, f_scale = 0.2;
    int q = r + 2, i;
    tu_rng g;
    double *B = malloc(sizeof(double) * (size_t)m * q), *C = malloc(sizeof(double) * (size_t)n * q);
    g.s = seed;
    p->m = m; p->n = n; p->r = r;
    p->A = malloc(sizeof(double) * (size_t)m * n);
    p->L0 = malloc(sizeof(double) * (size_t)m * r);
    p->R0 = malloc(sizeof(double) * (size_t)n * r);
    p->work = malloc(sizeof(double) * (size_t)m * n);
    assert_non_null(B); assert_non_null(C); assert_non_null(p->A);
    assert_non_null(p->L0); assert_non_null(p->R0); assert_non_null(p->work);
    tu_fill_normal(&g, B, (size_t)m * q, 1.0);
    tu_fill_normal(&g, C, (size_t)n * q, 1.0);
    tu_product(B, C, m, n, q, p->A);
    for (i = 0; i < m * n; i++) p->A[i] = a_scale * p->A[i] / sqrt((double)q) + 0.01 * tu_normal(&g);
    tu_fill_normal(&g, p->L0, (size_t)m * r, f_scale);
    tu_fill_normal(&g, p->R0, (size_t)n * r, f_scale);
    if (init == INIT_ZERO_R) memset(p->R0, 0, sizeof(double) * (size_t)n * r);
    if (init == INIT_DEFICIENT) {
        for (i = 0; i < n; i++) p->R0[(size_t)i * r + r - 1] = 0;
        for (i = 0; i < m; i++) p->L0[(size_t)i * r + 2] = p->L0[(size_t)i * r] + p->L0[(size_t)i * r + 1];
    }
    free(B);
    free(C);
}

static void problem_free(problem *p) {
    free(p->A); free(p->L0); free(p->R0); free(p->work);
}

/* Gradients of the loss at (L, R). At steps s with s % 7 == 3 they are
   multiplied by `spike` (if nonzero): an outlier batch, for skipping. */
static void problem_grad(problem *p, const double *L, const double *R, int s, double spike,
                         double *gL, double *gR) {
    tu_lsq_grad_spiked(L, R, p->A, p->m, p->n, p->r, s, spike, gL, gR, p->work);
}

/* ------------------------------------------------------------------ cases */

typedef struct case_spec {
    const char *name;
    ref_config cfg;
    rite_optimizer optimizer;
    rite_precision precision;
    rite_layout layout_L, layout_R;
    int ld_L, ld_R, ld_gL, ld_gR;   /* as in rite_desc: 0 = packed / as the factor's */
    int init;                       /* INIT_RANDOM, INIT_ZERO_R or INIT_DEFICIENT */
    double spike;                   /* gradient outliers, see problem_grad */
    double tol;                     /* allowed relative difference after every step */
} case_spec;

typedef struct case_result {
    ref_layer ref;          /* the reference layer after the run (counters, state) */
    double L[M * RK];       /* the library's final factors */
    double R[N * RK];
    double max_diff;        /* largest relative difference over all steps */
    double max_rho;         /* largest escaped mass the reference held */
} case_result;

static case_spec base_case(const char *name) {
    case_spec c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.cfg = ref_config_default();
    c.cfg.lr = 0.02;
    c.optimizer = RITE_LORA_RITE;
    c.precision = RITE_FLOAT64;
    c.layout_L = RITE_RANK_LAST;
    c.layout_R = RITE_RANK_LAST;
    c.tol = 1e-10;
    return c;
}

/* One factor's storage in the library's layout: the buffer, a mask of the
   logical entries, and a copy to check that padding is never written. */
typedef struct storage {
    rite_layout layout;
    int k, r, ld;
    size_t count;
    double *d;              /* double buffer (RITE_FLOAT64) */
    float *f;               /* float buffer (RITE_FLOAT32) */
    unsigned char *logical; /* 1 where a logical entry lives */
} storage;

#define PAD_VALUE 12345.0

static void storage_make(storage *s, rite_layout layout, int k, int r, int ld) {
    int i, j;
    s->layout = layout;
    s->k = k;
    s->r = r;
    s->ld = ld;
    s->count = tu_storage_count(layout, ld, k, r);
    s->d = malloc(sizeof(double) * s->count);
    s->f = malloc(sizeof(float) * s->count);
    s->logical = calloc(s->count, 1);
    assert_non_null(s->d); assert_non_null(s->f); assert_non_null(s->logical);
    for (i = 0; i < (int)s->count; i++) {
        s->d[i] = PAD_VALUE;
        s->f[i] = (float)PAD_VALUE;
    }
    for (i = 0; i < k; i++)
        for (j = 0; j < r; j++) s->logical[tu_index(layout, ld, i, j)] = 1;
}

static void storage_free(storage *s) {
    free(s->d); free(s->f); free(s->logical);
}

static void storage_put(storage *s, rite_precision prec, const double *logical) {
    if (prec == RITE_FLOAT64) tu_to_layout_d(logical, s->k, s->r, s->layout, s->ld, s->d);
    else tu_to_layout_f(logical, s->k, s->r, s->layout, s->ld, s->f);
}

static void storage_get(const storage *s, rite_precision prec, double *logical) {
    if (prec == RITE_FLOAT64) tu_from_layout_d(s->d, s->k, s->r, s->layout, s->ld, logical);
    else tu_from_layout_f(s->f, s->k, s->r, s->layout, s->ld, logical);
}

/* 1 if every padding entry still holds PAD_VALUE */
static int storage_padding_intact(const storage *s, rite_precision prec) {
    size_t i;
    for (i = 0; i < s->count; i++)
        if (!s->logical[i] && (prec == RITE_FLOAT64 ? s->d[i] != PAD_VALUE : s->f[i] != (float)PAD_VALUE))
            return 0;
    return 1;
}

static int effective_ld(rite_layout layout, int ld, int k, int r) {
    return ld ? ld : (layout == RITE_RANK_LAST ? r : k);
}

/* Run the library and the reference side by side for `steps` steps; fail
   if the factors differ by more than c->tol after any step. */
static void run_case(const case_spec *c, int steps, case_result *out) {
    problem p;
    rite_layer *layer = NULL;
    rite_desc desc;
    rite_config rc = tu_rite_config(&c->cfg, c->optimizer);
    ref_adamw adam;
    storage sL, sR, sgL, sgR;
    double Lr[M * RK], Rr[N * RK], Ll[M * RK], Rl[N * RK], gL[M * RK], gR[N * RK];
    int ldL = effective_ld(c->layout_L, c->ld_L, M, RK), ldR = effective_ld(c->layout_R, c->ld_R, N, RK);
    int ldgL = c->ld_gL ? c->ld_gL : ldL, ldgR = c->ld_gR ? c->ld_gR : ldR;
    int s;
    rite_status st;

    problem_make(&p, M, N, RK, 0x5eed0001ull, c->init);
    memset(out, 0, sizeof *out);
    ref_init(&out->ref, M, N, RK, &c->cfg);
    if (c->optimizer == RITE_ADAMW)
        ref_adamw_init(&adam, M, N, RK, c->cfg.lr, c->cfg.beta1, c->cfg.beta2, c->cfg.eps, c->cfg.weight_decay);

    desc = tu_desc(M, N, RK, c->optimizer, c->precision);
    desc.layout_L = c->layout_L;
    desc.layout_R = c->layout_R;
    desc.ld_L = c->ld_L;
    desc.ld_R = c->ld_R;
    desc.ld_gL = c->ld_gL;
    desc.ld_gR = c->ld_gR;
    desc.config = &rc;
    st = rite_init(&layer, &desc);
    if (st != RITE_OK) print_error("%s: rite_init: %s\n", c->name, rite_status_string(st));
    assert_int_equal(st, RITE_OK);

    storage_make(&sL, c->layout_L, M, RK, ldL);
    storage_make(&sR, c->layout_R, N, RK, ldR);
    storage_make(&sgL, c->layout_L, M, RK, ldgL);
    storage_make(&sgR, c->layout_R, N, RK, ldgR);
    storage_put(&sL, c->precision, p.L0);
    storage_put(&sR, c->precision, p.R0);
    /* both runs start from the same (stored) values */
    storage_get(&sL, c->precision, Lr);
    storage_get(&sR, c->precision, Rr);

    for (s = 0; s < steps; s++) {
        double dL, dR;

        /* library: gradients at its own factors */
        storage_get(&sL, c->precision, Ll);
        storage_get(&sR, c->precision, Rl);
        problem_grad(&p, Ll, Rl, s, c->spike, gL, gR);
        storage_put(&sgL, c->precision, gL);
        storage_put(&sgR, c->precision, gR);
        if (c->precision == RITE_FLOAT64) st = rite_step_f64(layer, sL.d, sR.d, sgL.d, sgR.d);
        else st = rite_step_f32(layer, sL.f, sR.f, sgL.f, sgR.f);
        if (st != RITE_OK) print_error("%s: step %d: %s\n", c->name, s, rite_status_string(st));
        assert_int_equal(st, RITE_OK);
        assert_int_equal(rite_step_count(layer), s + 1);
        storage_get(&sL, c->precision, Ll);
        storage_get(&sR, c->precision, Rl);
        assert_true(storage_padding_intact(&sL, c->precision));
        assert_true(storage_padding_intact(&sR, c->precision));
        assert_true(storage_padding_intact(&sgL, c->precision));
        assert_true(storage_padding_intact(&sgR, c->precision));

        /* reference: gradients at its own factors */
        problem_grad(&p, Lr, Rr, s, c->spike, gL, gR);
        if (c->optimizer == RITE_ADAMW) ref_adamw_step(&adam, Lr, Rr, gL, gR);
        else ref_step(&out->ref, Lr, Rr, gL, gR);
        if (out->ref.rhoL > out->max_rho) out->max_rho = out->ref.rhoL;
        if (out->ref.rhoR > out->max_rho) out->max_rho = out->ref.rhoR;

        dL = tu_rel_diff(Ll, Lr, (size_t)M * RK);
        dR = tu_rel_diff(Rl, Rr, (size_t)N * RK);
        if (dL > out->max_diff || dL != dL) out->max_diff = dL;
        if (dR > out->max_diff || dR != dR) out->max_diff = dR;
        if (!(dL <= c->tol && dR <= c->tol)) {
            print_error("%s: step %d: relative difference L %.3e, R %.3e > %.1e\n", c->name, s, dL, dR, c->tol);
            fail();
        }
    }
    memcpy(out->L, Ll, sizeof Ll);
    memcpy(out->R, Rl, sizeof Rl);

    if (c->optimizer == RITE_ADAMW) ref_adamw_free(&adam);
    storage_free(&sL); storage_free(&sR); storage_free(&sgL); storage_free(&sgR);
    rite_free(layer);
    problem_free(&p);
}

/* The reference alone: final factors of a run with configuration cfg. */
static void run_reference(const ref_config *cfg, int init, double spike, int steps, double *L, double *R) {
    problem p;
    ref_layer ly;
    double gL[M * RK], gR[N * RK];
    int s;
    problem_make(&p, M, N, RK, 0x5eed0001ull, init);
    ref_init(&ly, M, N, RK, cfg);
    memcpy(L, p.L0, sizeof gL);
    memcpy(R, p.R0, sizeof gR);
    for (s = 0; s < steps; s++) {
        problem_grad(&p, L, R, s, spike, gL, gR);
        ref_step(&ly, L, R, gL, gR);
    }
    ref_free(&ly);
    problem_free(&p);
}

/* The option under test changed the outcome: the reference with `other`
   (the same run without the option, or with it off) ends elsewhere. */
static void assert_option_matters(const case_spec *c, const case_result *res, const ref_config *other) {
    double L[M * RK], R[N * RK], d;
    run_reference(other, c->init, c->spike, STEPS, L, R);
    d = tu_rel_diff(res->L, L, (size_t)M * RK);
    if (tu_rel_diff(res->R, R, (size_t)N * RK) > d) d = tu_rel_diff(res->R, R, (size_t)N * RK);
    if (!(d > 1e-6)) {
        print_error("%s: the run without the option differs only by %.3e\n", c->name, d);
        fail();
    }
}

static void report(const case_spec *c, const case_result *r) {
    print_message("    %-26s max rel diff %.2e | skipped %ld, clipped %ld, capped %ld, escaped %ld, max gamma %.3g\n",
                  c->name, r->max_diff, r->ref.n_skip, r->ref.n_clip, r->ref.n_cap, r->ref.n_escape,
                  r->ref.max_gamma);
}

/* Run c for STEPS steps against the reference and report it. */
static void run_and_report(const case_spec *c, case_result *r) {
    run_case(c, STEPS, r);
    report(c, r);
}

/* The same, when only the agreement with the reference is checked. */
static void run_report_free(const case_spec *c) {
    case_result r;
    run_and_report(c, &r);
    ref_free(&r.ref);
}

/* ------------------------------------------------------------ option cases */

/* A field of ref_config that an option case sets; ALL_OPTIONS makes the
   whole config ref_config_all_options(), KEEP changes nothing. */
typedef enum option_field {
    KEEP, ESCAPE, CLIP, SKIP, CAP, WEIGHT_DECAY, BALANCE, EPS_ROOT, RELATIVE_EPS, ALL_OPTIONS
} option_field;

typedef struct option_setting {
    option_field field;
    double value;   /* 0 or 1 for the switches */
} option_setting;

static void apply_setting(ref_config *cfg, option_setting s) {
    switch (s.field) {
    case KEEP: break;
    case ESCAPE: cfg->escape = (int)s.value; break;
    case CLIP: cfg->clip = s.value; break;
    case SKIP: cfg->skip = s.value; break;
    case CAP: cfg->cap = s.value; break;
    case WEIGHT_DECAY: cfg->weight_decay = s.value; break;
    case BALANCE: cfg->balance = (int)s.value; break;
    case EPS_ROOT: cfg->eps_root = s.value; break;
    case RELATIVE_EPS: cfg->relative_eps = (int)s.value; break;
    case ALL_OPTIONS: *cfg = ref_config_all_options(); break;
    }
}

/* One configuration run against the reference: base_case's with `spike`
   and the settings `on` (the option(s) under test); the reference runs
   with base_case's config and each of the n_others settings of `others`
   (the same run without the option, or with it off) must end elsewhere;
   `check` (if any) asserts on the run's counters. `label` names the run
   in the report. */
typedef struct option_case {
    const char *name, *label;
    double spike;
    option_setting on[2];
    int n_others;
    option_setting others[2];
    void (*check)(const case_result *r);
} option_case;

static void run_option_case(void **state) {
    const option_case *oc = (const option_case *)*state;
    case_spec c = base_case(oc->label);
    case_result r;
    int i;
    c.spike = oc->spike;
    for (i = 0; i < 2; i++) apply_setting(&c.cfg, oc->on[i]);
    run_and_report(&c, &r);
    if (oc->check) oc->check(&r);
    for (i = 0; i < oc->n_others; i++) {
        ref_config other = base_case(oc->label).cfg;
        apply_setting(&other, oc->others[i]);
        assert_option_matters(&c, &r, &other);
    }
    ref_free(&r.ref);
}

/* SPEC defaults (only lr raised so that 50 steps travel). Clipping at 1.0 is
   active in the first steps; skipping at 1.0 never triggers. */
static void check_defaults(const case_result *r) {
    assert_true(r->ref.n_clip > 0);
    assert_int_equal(r->ref.n_skip, 0);
    assert_int_equal(r->ref.n_cap, 0);
}

static void check_escape(const case_result *r) {
    print_message("    escape: largest escaped mass %.3e\n", r->max_rho);
    assert_true(r->ref.n_escape > 0);
    assert_true(r->max_rho > 1e-8);
}

static void check_clip_active(const case_result *r) { assert_true(r->ref.n_clip > 0); }

static void check_clip_off(const case_result *r) {
    assert_int_equal(r->ref.n_clip, 0);
    assert_true(r->ref.max_gamma > 1.0); /* clipping at 1.0 would have acted */
}

/* outlier batches (gradients x5 every 7th step) exceed skip = 0.5 early on,
   ordinary batches never do */
static void check_skip_active(const case_result *r) {
    assert_true(r->ref.n_skip > 0);
    assert_true(r->ref.n_skip < STEPS); /* sometimes, not always */
}

static void check_skip_off(const case_result *r) { assert_int_equal(r->ref.n_skip, 0); }

static void check_cap(const case_result *r) {
    assert_true(r->ref.n_cap > 0);
    assert_true(r->ref.n_cap < 2 * STEPS);
}

static void check_all_options(const case_result *r) {
    assert_true(r->ref.n_skip > 0);
    assert_true(r->ref.n_clip > 0);
    assert_true(r->ref.n_cap > 0);
    assert_true(r->ref.n_escape > 0);
}

static const option_case option_cases[] = {
    /* name, label, spike, on, n_others, others, check */
    {"test_defaults", "defaults", 0, {{KEEP, 0}}, 0, {{KEEP, 0}}, check_defaults},
    {"test_escape", "escape", 0, {{ESCAPE, 1}}, 1, {{KEEP, 0}}, check_escape},
    {"test_clip_active", "clip 0.5", 0, {{CLIP, 0.5}}, 1, {{CLIP, 0}}, check_clip_active},
    /* the default clip = 1.0 is active in this problem */
    {"test_clip_off", "clip 0 (off)", 0, {{CLIP, 0}}, 1, {{KEEP, 0}}, check_clip_off},
    {"test_skip_active", "skip 0.5, outliers", 5.0, {{SKIP, 0.5}}, 1, {{SKIP, 0}}, check_skip_active},
    /* skip = 0.5 would skip here (see test_skip_active) */
    {"test_skip_off", "skip 0 (off), outliers", 5.0, {{SKIP, 0}}, 1, {{SKIP, 0.5}}, check_skip_off},
    {"test_cap", "cap 0.7", 0, {{CAP, 0.7}}, 1, {{KEEP, 0}}, check_cap},
    {"test_weight_decay", "weight_decay 0.1", 0, {{WEIGHT_DECAY, 0.1}}, 1, {{KEEP, 0}}, NULL},
    {"test_balance", "balance", 0, {{BALANCE, 1}}, 1, {{KEEP, 0}}, NULL},
    /* eps_root = 0.1 absolute ends elsewhere, and so does no eps_root at all */
    {"test_relative_eps", "relative_eps, eps_root 0.1", 0, {{EPS_ROOT, 0.1}, {RELATIVE_EPS, 1}}, 2,
     {{EPS_ROOT, 0.1}, {KEEP, 0}}, NULL},
    {"test_eps_root", "eps_root 1e-3", 0, {{EPS_ROOT, 1e-3}}, 1, {{KEEP, 0}}, NULL},
    {"test_all_options", "all options", 5.0, {{ALL_OPTIONS, 0}}, 0, {{KEEP, 0}}, check_all_options},
};

/* ------------------------------------------------------------------ tests */
static void test_layouts(void **state) {
    static const char *names[4] = {"layout L last, R last", "layout L last, R first",
                                   "layout L first, R last", "layout L first, R first"};
    int i;
    (void)state;
    for (i = 0; i < 4; i++) {
        case_spec c = base_case(names[i]);
        c.layout_L = (i & 2) ? RITE_RANK_FIRST : RITE_RANK_LAST;
        c.layout_R = (i & 1) ? RITE_RANK_FIRST : RITE_RANK_LAST;
        run_report_free(&c);
    }
}

/* Leading dimensions larger than packed, gradients with their own (or, with
   0, the factor's); padding must never be written. All options on. */
static void test_padded(void **state) {
    case_spec c = base_case("padded A, all options");
    (void)state;
    c.cfg = ref_config_all_options();
    c.spike = 5.0;
    c.layout_L = RITE_RANK_LAST;
    c.ld_L = RK + 3;
    c.ld_gL = RK + 1;
    c.layout_R = RITE_RANK_FIRST;
    c.ld_R = N + 5;
    c.ld_gR = N + 2;
    run_report_free(&c);

    c.name = "padded B, all options";
    c.layout_L = RITE_RANK_FIRST;
    c.ld_L = M + 2;
    c.ld_gL = M + 7;
    c.layout_R = RITE_RANK_LAST;
    c.ld_R = RK + 2;
    c.ld_gR = 0; /* as the factor's: RK + 2 */
    run_report_free(&c);
}

/* Single precision against the double reference (whose pseudo-inverse
   threshold uses FLT_EPSILON). Loose tolerance: float32 rounding grows
   over 50 steps. */
static void test_float32(void **state) {
    case_spec c = base_case("float32 defaults");
    (void)state;
    c.precision = RITE_FLOAT32;
    c.cfg.pinv_eps = FLT_EPSILON;
    c.tol = 1e-3;
    run_report_free(&c);

    c.name = "float32 all options, R first";
    c.cfg = ref_config_all_options();
    c.cfg.pinv_eps = FLT_EPSILON;
    c.spike = 5.0;
    c.layout_R = RITE_RANK_FIRST;
    run_report_free(&c);
}

/* Standard LoRA init: R = 0. Then T_R^+ = 0, the first step leaves L
   unchanged and moves R only. */
static void test_zero_init(void **state) {
    case_spec c = base_case("R = 0 at start");
    case_result r1;
    problem p;
    int i;
    (void)state;
    c.init = INIT_ZERO_R;
    run_case(&c, 1, &r1);
    problem_make(&p, M, N, RK, 0x5eed0001ull, INIT_ZERO_R);
    for (i = 0; i < M * RK; i++) assert_true(r1.L[i] == p.L0[i]);
    for (i = 0; i < N * RK; i++)
        if (r1.R[i] != 0) break;
    assert_true(i < N * RK); /* R moved */
    problem_free(&p);
    ref_free(&r1.ref);

    run_report_free(&c);
}

/* Both factors start with rank r - 1: the pseudo-inverses must drop the
   (exactly or nearly) zero singular value rather than invert it. The
   reference's T^+ of the first step has rank r - 1 for both factors.
   The direction dropped carries only rounding noise, which the second
   moment's 1/eps amplifies, so the runs agree to about 1e-12 here. */
static void test_rank_deficient(void **state) {
    case_spec c = base_case("rank-deficient start");
    problem p;
    ref_layer ly;
    double gL[M * RK], gR[N * RK], sL[RK], sR[RK], L[M * RK], R[N * RK];
    (void)state;
    c.init = INIT_DEFICIENT;
    c.cfg.escape = 1;
    run_report_free(&c);

    /* the reference itself: rank r - 1 pseudo-inverses at the first step */
    problem_make(&p, M, N, RK, 0x5eed0001ull, INIT_DEFICIENT);
    ref_init(&ly, M, N, RK, &c.cfg);
    memcpy(L, p.L0, sizeof L);
    memcpy(R, p.R0, sizeof R);
    problem_grad(&p, L, R, 0, 0, gL, gR);
    ref_prepare(&ly, L, R, gL, gR);
    {
        double a[RK * RK], u[RK * RK], vt[RK * RK], sup[RK];
        memcpy(a, ly.TLp, sizeof a);
        assert_int_equal(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', RK, RK, a, RK, sL, u, RK, vt, RK, sup), 0);
        memcpy(a, ly.TRp, sizeof a);
        assert_int_equal(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', RK, RK, a, RK, sR, u, RK, vt, RK, sup), 0);
    }
    assert_true(sL[RK - 2] > 1e-3 * sL[0] && sL[RK - 1] < 1e-12 * sL[0]);
    assert_true(sR[RK - 2] > 1e-3 * sR[0] && sR[RK - 1] < 1e-12 * sR[0]);
    ref_free(&ly);
    problem_free(&p);
}

/* The AdamW baseline against the naive elementwise AdamW. */
static void test_adamw(void **state) {
    case_spec c = base_case("adamw, wd 0.01");
    (void)state;
    c.optimizer = RITE_ADAMW;
    c.cfg.eps = 1e-8;
    c.cfg.weight_decay = 0.01;
    c.layout_L = RITE_RANK_FIRST;
    run_report_free(&c);
}

/* A check of the reference itself, independent of the library: its update
   of Z = L R^T is the same for (L, R) and (L S, R S^-T) (SPEC's
   transformation invariance), step after step, with every option that
   keeps invariance switched on. */
static void test_reference_invariance(void **state) {
    problem p;
    ref_layer a, b;
    ref_config cfg = ref_config_all_options();
    double S[RK * RK], Sit[RK * RK], La[M * RK], Ra[N * RK], Lb[M * RK], Rb[N * RK];
    double gL[M * RK], gR[N * RK], Za[M * N], Zb[M * N], worst = 0;
    tu_rng g;
    int s, i, j;
    (void)state;
    cfg.weight_decay = 0;
    cfg.balance = 0;
    problem_make(&p, M, N, RK, 0x5eed0001ull, INIT_RANDOM);
    /* S = I + 0.5 * noise, and S^-T = (S^-1)^T via the reference's pseudo-inverse */
    g.s = 99;
    for (i = 0; i < RK; i++)
        for (j = 0; j < RK; j++) S[i * RK + j] = (i == j) + 0.5 * tu_normal(&g);
    ref__pinv(S, RK, DBL_EPSILON, Sit);
    for (i = 0; i < RK; i++)
        for (j = i + 1; j < RK; j++) {
            double t = Sit[i * RK + j];
            Sit[i * RK + j] = Sit[j * RK + i];
            Sit[j * RK + i] = t;
        }
    memcpy(La, p.L0, sizeof La);
    memcpy(Ra, p.R0, sizeof Ra);
    ref__mm(p.L0, 0, S, 0, M, RK, RK, Lb);
    ref__mm(p.R0, 0, Sit, 0, N, RK, RK, Rb);
    ref_init(&a, M, N, RK, &cfg);
    ref_init(&b, M, N, RK, &cfg);
    for (s = 0; s < STEPS; s++) {
        double d;
        problem_grad(&p, La, Ra, s, 5.0, gL, gR);
        ref_step(&a, La, Ra, gL, gR);
        problem_grad(&p, Lb, Rb, s, 5.0, gL, gR);
        ref_step(&b, Lb, Rb, gL, gR);
        tu_product(La, Ra, M, N, RK, Za);
        tu_product(Lb, Rb, M, N, RK, Zb);
        d = tu_rel_diff(Zb, Za, (size_t)M * N);
        if (d > worst) worst = d;
    }
    print_message("    reference invariance: max rel diff of Z %.2e (skipped %ld, clipped %ld, capped %ld)\n",
                  worst, a.n_skip, a.n_clip, a.n_cap);
    assert_true(worst < 1e-9);
    assert_true(a.n_skip > 0 && a.n_clip > 0 && a.n_cap > 0);
    assert_int_equal(a.n_skip, b.n_skip);
    assert_int_equal(a.n_clip, b.n_clip);
    assert_int_equal(a.n_cap, b.n_cap);
    ref_free(&a);
    ref_free(&b);
    problem_free(&p);
}

/* the cmocka entry of option case i */
#define OPTION_TEST(i) {option_cases[i].name, run_option_case, NULL, NULL, (void *)&option_cases[i]}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_invariance),
        OPTION_TEST(0),
        OPTION_TEST(1),
        OPTION_TEST(2),
        OPTION_TEST(3),
        OPTION_TEST(4),
        OPTION_TEST(5),
        OPTION_TEST(6),
        OPTION_TEST(7),
        OPTION_TEST(8),
        OPTION_TEST(9),
        OPTION_TEST(10),
        OPTION_TEST(11),
        cmocka_unit_test(test_layouts),
        cmocka_unit_test(test_padded),
        cmocka_unit_test(test_float32),
        cmocka_unit_test(test_zero_init),
        cmocka_unit_test(test_rank_deficient),
        cmocka_unit_test(test_adamw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
