/* test_invariance.c - transformation invariance, the point of LoRA-RITE.

   For any invertible r x r matrix S, the pairs (L, R) and (L S, R S^-T) give
   the same product L R^T. Train both on the least-squares loss
   0.5 ||L R^T - A||^2, each run computing its gradients from its own
   factors (so gradL' = gradL S^-T and gradR' = gradR S). LoRA-RITE must
   produce the same products L R^T step after step: relative agreement
   1e-8 in double over 100 steps for diagonal, orthogonal and general S of
   condition number 1e3, with the default options and with every option
   that keeps invariance (escape, clip, cap, eps_root relative or not);
   1e-3 in float for a general S of condition number 1e2. The same
   experiment with AdamW gives products that differ by more than 1e-2,
   which shows the check has teeth. Layouts are mixed between the two
   runs: results must not depend on storage either. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lora_rite.h"
#include "test_util.h"

enum { M = 20, N = 16, RK = 4, STEPS = 100 };

/* ---- small dense helpers (logical, row-major, double) ------------------- */

/* C (p x q) = A (p x s) B (s x q), or with B transposed (B: q x s) */
static void matmul(const double *A, const double *B, double *C, int p, int s, int q, int b_transposed) {
    int i, j, k;
    for (i = 0; i < p; i++)
        for (j = 0; j < q; j++) {
            double acc = 0;
            for (k = 0; k < s; k++)
                acc += A[i * s + k] * (b_transposed ? B[j * s + k] : B[k * q + j]);
            C[i * q + j] = acc;
        }
}

/* A random k x k orthogonal matrix: modified Gram-Schmidt, done twice, on
   the columns of a Gaussian matrix. */
static void random_orthogonal(tu_rng *g, double *Qm, int k) {
    int i, j, c, pass;
    tu_fill_normal(g, Qm, (size_t)k * k, 1.0);
    for (j = 0; j < k; j++) {
        for (pass = 0; pass < 2; pass++)
            for (c = 0; c < j; c++) {
                double d = 0;
                for (i = 0; i < k; i++) d += Qm[i * k + c] * Qm[i * k + j];
                for (i = 0; i < k; i++) Qm[i * k + j] -= d * Qm[i * k + c];
            }
        {
            double nn = 0;
            for (i = 0; i < k; i++) nn += Qm[i * k + j] * Qm[i * k + j];
            nn = sqrt(nn);
            for (i = 0; i < k; i++) Qm[i * k + j] /= nn;
        }
    }
}

/* 2-norm condition number from LAPACK's SVD. */
static double condition_number(const double *S, int k) {
    double a[RK * RK], s[RK], u[1], vt[1], superb[RK];
    assert_true(k <= RK);
    memcpy(a, S, (size_t)k * k * sizeof *a);
    assert_int_equal(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', k, k, a, k, s, u, 1, vt, 1, superb), 0);
    return s[0] / s[k - 1];
}

/* An S and its S^-T, checked: S S^-1 = I where S^-1 = (S^-T)^T. */
typedef struct transform {
    double S[RK * RK], SinvT[RK * RK];
} transform;

static void check_transform(const transform *t) {
    double P[RK * RK];
    int i, j;
    matmul(t->S, t->SinvT, P, RK, RK, RK, 1); /* S (S^-T)^T = S S^-1 */
    for (i = 0; i < RK; i++)
        for (j = 0; j < RK; j++) assert_true(fabs(P[i * RK + j] - (i == j)) < 1e-12);
}

static transform diagonal_transform(void) {
    static const double d[RK] = {10.0, 0.1, 3.0, 0.5};
    transform t;
    int i;
    memset(&t, 0, sizeof t);
    for (i = 0; i < RK; i++) {
        t.S[i * RK + i] = d[i];
        t.SinvT[i * RK + i] = 1.0 / d[i];
    }
    check_transform(&t);
    return t;
}

static transform orthogonal_transform(uint64_t seed) {
    tu_rng g;
    transform t;
    g.s = seed;
    random_orthogonal(&g, t.S, RK);
    memcpy(t.SinvT, t.S, sizeof t.S); /* orthogonal: S^-T = S */
    check_transform(&t);
    assert_true(fabs(condition_number(t.S, RK) - 1.0) < 1e-12);
    return t;
}

/* S = U diag(sigma) V^T with sigma spread geometrically from 1 to cond,
   S^-T = U diag(1 / sigma) V^T. */
static transform general_transform(uint64_t seed, double cond) {
    tu_rng g;
    double U[RK * RK], V[RK * RK], tmp[RK * RK];
    transform t;
    int i, j;
    g.s = seed;
    random_orthogonal(&g, U, RK);
    random_orthogonal(&g, V, RK);
    for (j = 0; j < RK; j++) {
        double sigma = pow(cond, (double)j / (RK - 1));
        for (i = 0; i < RK; i++) tmp[i * RK + j] = U[i * RK + j] * sigma;
    }
    matmul(tmp, V, t.S, RK, RK, RK, 1);
    for (j = 0; j < RK; j++) {
        double sigma = pow(cond, (double)j / (RK - 1));
        for (i = 0; i < RK; i++) tmp[i * RK + j] = U[i * RK + j] / sigma;
    }
    matmul(tmp, V, t.SinvT, RK, RK, RK, 1);
    check_transform(&t);
    {
        double c = condition_number(t.S, RK);
        assert_true(fabs(c / cond - 1.0) < 1e-9);
        /* and S is far from diagonal or orthogonal */
        assert_true(fabs(t.S[1]) > 1e-3 * fabs(t.S[0]) || fabs(t.S[RK]) > 1e-3 * fabs(t.S[0]));
    }
    return t;
}

/* ---- one training run in a chosen storage ------------------------------- */

/* One factor of a run: its storage (float or double, as the layer's
   precision) and a logical copy. */
typedef struct factor {
    int k, ld;
    rite_layout layout;
    void *x, *g;            /* the factor and its gradient, in storage */
    double logical[M * RK]; /* the factor, logical (k x RK) */
} factor;

typedef struct run {
    rite_layer *layer;
    rite_precision prec;
    factor L, R;
} run;

/* logical values -> one of the factor's storage buffers */
static void factor_store(const factor *f, rite_precision prec, const double *logical, void *buf) {
    if (prec == RITE_FLOAT64) tu_to_layout_d(logical, f->k, RK, f->layout, f->ld, buf);
    else tu_to_layout_f(logical, f->k, RK, f->layout, f->ld, buf);
}

/* the factor's storage -> its logical copy */
static void factor_load(factor *f, rite_precision prec) {
    if (prec == RITE_FLOAT64) tu_from_layout_d(f->x, f->k, RK, f->layout, f->ld, f->logical);
    else tu_from_layout_f(f->x, f->k, RK, f->layout, f->ld, f->logical);
}

static void factor_init(factor *f, rite_precision prec, rite_layout layout, int k, int pad, const double *X0) {
    size_t es = prec == RITE_FLOAT64 ? sizeof(double) : sizeof(float), count;
    f->k = k;
    f->layout = layout;
    f->ld = (layout == RITE_RANK_LAST ? RK : k) + pad;
    count = tu_storage_count(layout, f->ld, k, RK);
    f->x = calloc(count, es);
    f->g = calloc(count, es);
    assert_true(f->x && f->g);
    factor_store(f, prec, X0, f->x);
    factor_load(f, prec);
}

static void factor_free(factor *f) {
    free(f->x);
    free(f->g);
}

/* Where a run keeps its factors. */
typedef struct storage {
    rite_layout L, R;
    int pad; /* added to both leading dimensions */
} storage;

static void run_init(run *u, rite_optimizer opt, rite_precision prec, const storage *st, const rite_config *cfg,
                     const double *L0, const double *R0) {
    rite_desc desc = tu_desc(M, N, RK, opt, prec);
    memset(u, 0, sizeof *u);
    u->prec = prec;
    factor_init(&u->L, prec, st->L, M, st->pad, L0);
    factor_init(&u->R, prec, st->R, N, st->pad, R0);
    desc.layout_L = st->L;
    desc.layout_R = st->R;
    desc.ld_L = u->L.ld;
    desc.ld_R = u->R.ld;
    desc.config = cfg;
    assert_int_equal(rite_init(&u->layer, &desc), RITE_OK);
}

static void run_free(run *u) {
    rite_free(u->layer);
    factor_free(&u->L);
    factor_free(&u->R);
}

/* Gradients of the least-squares loss at the run's own factors, one step,
   factors read back. Returns the loss before the step. */
static double run_step(run *u, const double *A) {
    double gL[M * RK], gR[N * RK], work[M * N], loss;
    rite_status s;
    loss = tu_lsq_loss_grad(u->L.logical, u->R.logical, A, M, N, RK, gL, gR, work);
    factor_store(&u->L, u->prec, gL, u->L.g);
    factor_store(&u->R, u->prec, gR, u->R.g);
    s = u->prec == RITE_FLOAT64 ? rite_step_f64(u->layer, u->L.x, u->R.x, u->L.g, u->R.g)
                                : rite_step_f32(u->layer, u->L.x, u->R.x, u->L.g, u->R.g);
    factor_load(&u->L, u->prec);
    factor_load(&u->R, u->prec);
    if (s != RITE_OK) print_error("step: %s\n", rite_status_string(s));
    assert_int_equal(s, RITE_OK);
    return loss;
}

/* ---- the experiment ----------------------------------------------------- */

/* The S of an experiment (see the transforms above). */
typedef enum transform_kind { S_DIAGONAL, S_ORTHOGONAL, S_GENERAL_COND_1E3, S_GENERAL_COND_1E2 } transform_kind;

static transform make_transform(transform_kind kind) {
    switch (kind) {
    case S_DIAGONAL: return diagonal_transform();
    case S_ORTHOGONAL: return orthogonal_transform(42);
    case S_GENERAL_COND_1E3: return general_transform(7, 1e3);
    default: return general_transform(8, 1e2);
    }
}

/* What the two runs of an experiment must show. */
typedef enum expectation {
    AGREE_TO, /* products that agree to the bound at every step, a run that trained (the
                 factors changed meaningfully, the loss went down) */
    DIFFER_BY /* products more than the bound apart after the last step */
} expectation;

/* Run 1 starts at (L0, R0), run 2 at (L0 S, R0 S^-T). */
typedef struct experiment {
    const char *name;
    rite_optimizer opt;
    rite_precision prec;
    transform_kind s;
    rite_config (*config)(void);
    uint64_t seed;
    storage run1, run2;
    expectation expect;
    double bound;
} experiment;

typedef struct outcome {
    double max_diff;   /* max over steps of rel. difference of the products */
    double final_diff; /* the same after the last step */
    double moved;      /* ||Z_end - Z_0|| / ||Z_0|| of run 1 */
    double loss0, loss_end;
} outcome;

static double fro(const double *x, size_t k) {
    double s = 0;
    size_t i;
    for (i = 0; i < k; i++) s += x[i] * x[i];
    return sqrt(s);
}

/* Target A = L* R*^T + noise, scaled to ||A|| = 3.5; start L0, R0 with
   entries N(0, 0.25^2); run 2 starts at (L0 S, R0 S^-T). Then ||E|| =
   ||L R^T - A|| stays below 6.4 = 0.8 sqrt(min(m, n) r), and since
   rms(g_L) = ||E U_R|| / sqrt(m r) <= ||E|| / sqrt(m r), no factor ever
   comes near the skip threshold 1 (a decision that would otherwise hinge on
   rounding). The run checks it. */
static outcome run_experiment(const experiment *e) {
    double Ls[M * RK], Rs[N * RK], A[M * N], L0[M * RK], R0[N * RK], L2[M * RK], R2[N * RK];
    double Z0[M * N], Z1[M * N], Z2[M * N], work[M * N];
    const rite_config cfg = e->config();
    const transform t = make_transform(e->s);
    tu_rng g;
    run a, b;
    outcome o;
    int i, step;
    double scale;

    g.s = e->seed;
    tu_fill_normal(&g, Ls, M * RK, 1.0);
    tu_fill_normal(&g, Rs, N * RK, 1.0);
    tu_product(Ls, Rs, M, N, RK, A);
    for (i = 0; i < M * N; i++) A[i] += 0.05 * tu_normal(&g);
    scale = 3.5 / fro(A, M * N);
    for (i = 0; i < M * N; i++) A[i] *= scale;
    tu_fill_normal(&g, L0, M * RK, 0.25);
    tu_fill_normal(&g, R0, N * RK, 0.25);

    matmul(L0, t.S, L2, M, RK, RK, 0);     /* L S */
    matmul(R0, t.SinvT, R2, N, RK, RK, 0); /* R S^-T */

    run_init(&a, e->opt, e->prec, &e->run1, &cfg, L0, R0);
    run_init(&b, e->opt, e->prec, &e->run2, &cfg, L2, R2);
    tu_product(a.L.logical, a.R.logical, M, N, RK, Z0);

    memset(&o, 0, sizeof o);
    for (step = 0; step < STEPS; step++) {
        double loss = run_step(&a, A), d;
        run_step(&b, A);
        if (step == 0) o.loss0 = loss;
        if (e->opt == RITE_LORA_RITE) assert_true(sqrt(2.0 * loss) < 0.8 * sqrt((double)(N * RK)));
        tu_product(a.L.logical, a.R.logical, M, N, RK, Z1);
        tu_product(b.L.logical, b.R.logical, M, N, RK, Z2);
        d = tu_rel_diff(Z2, Z1, M * N);
        if (!(d <= o.max_diff)) o.max_diff = d; /* NaN propagates */
        o.final_diff = d;
    }
    o.loss_end = tu_lsq_loss_grad(a.L.logical, a.R.logical, A, M, N, RK, NULL, NULL, work);
    for (i = 0; i < M * N; i++) work[i] = Z1[i] - Z0[i];
    o.moved = fro(work, M * N) / fro(Z0, M * N);
    run_free(&a);
    run_free(&b);
    return o;
}

/* ---- the configurations ------------------------------------------------- */

static rite_config rite_defaults(void) {
    rite_config c = rite_config_default(RITE_LORA_RITE);
    c.lr = 1e-2;
    return c;
}

/* Every option that keeps invariance, switched on at once. */
static rite_config rite_all_options(void) {
    rite_config c = rite_defaults();
    c.eps = 1e-4;
    c.eps_root = 1e-3;
    c.escape = c.relative_eps = 1;
    c.clip = 0.3;
    c.cap = 0.5;
    c.beta1 = 0.8;
    c.beta2 = 0.99;
    return c;
}

static rite_config rite_escape(void) {
    rite_config c = rite_defaults();
    c.escape = 1;
    return c;
}

/* a clip that binds at every step */
static rite_config rite_clip_binding(void) {
    rite_config c = rite_defaults();
    c.clip = 0.05;
    return c;
}

static rite_config adamw_defaults(void) {
    rite_config c = rite_config_default(RITE_ADAMW);
    c.lr = 1e-2;
    return c;
}

/* ---- the experiments --------------------------------------------------- */

/* In double: diagonal S = diag(10, 0.1, 3, 0.5), orthogonal S (Gram-Schmidt
   of a Gaussian matrix) and general S of condition number 1e3, under
   defaults (lr 1e-2), all options, escape alone and a clip that binds at
   every step; "PEFT layout": L rank-first, R rank-last. In float, general S
   of condition number 1e2. AdamW in the same experiment is not invariant:
   the products differ by more than 1e-2 (relative) after 100 steps. */
static const experiment EXPERIMENTS[] = {
    /* name, optimizer, precision, S, config, seed, storage of run 1 and of run 2 (L, R, pad), expectation */
    {"diagonal S, defaults", RITE_LORA_RITE, RITE_FLOAT64, S_DIAGONAL, rite_defaults, 1,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_FIRST, RITE_RANK_FIRST, 0}, AGREE_TO, 1e-8},
    {"orthogonal S, defaults", RITE_LORA_RITE, RITE_FLOAT64, S_ORTHOGONAL, rite_defaults, 2,
     {RITE_RANK_FIRST, RITE_RANK_LAST, 3}, {RITE_RANK_LAST, RITE_RANK_FIRST, 1}, AGREE_TO, 1e-8},
    {"general S (cond 1e3), defaults", RITE_LORA_RITE, RITE_FLOAT64, S_GENERAL_COND_1E3, rite_defaults, 3,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_LAST, RITE_RANK_LAST, 0}, AGREE_TO, 1e-8},
    {"general S, defaults, PEFT layout", RITE_LORA_RITE, RITE_FLOAT64, S_GENERAL_COND_1E3, rite_defaults, 4,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_FIRST, RITE_RANK_LAST, 0}, AGREE_TO, 1e-8},
    {"general S, escape+clip+cap+eps_root", RITE_LORA_RITE, RITE_FLOAT64, S_GENERAL_COND_1E3, rite_all_options, 5,
     {RITE_RANK_LAST, RITE_RANK_FIRST, 0}, {RITE_RANK_FIRST, RITE_RANK_LAST, 0}, AGREE_TO, 1e-8},
    {"general S, escape", RITE_LORA_RITE, RITE_FLOAT64, S_GENERAL_COND_1E3, rite_escape, 6,
     {RITE_RANK_LAST, RITE_RANK_FIRST, 0}, {RITE_RANK_FIRST, RITE_RANK_LAST, 0}, AGREE_TO, 1e-8},
    {"general S, clip 0.05", RITE_LORA_RITE, RITE_FLOAT64, S_GENERAL_COND_1E3, rite_clip_binding, 7,
     {RITE_RANK_LAST, RITE_RANK_FIRST, 0}, {RITE_RANK_FIRST, RITE_RANK_LAST, 0}, AGREE_TO, 1e-8},
    {"float, general S (cond 1e2), defaults", RITE_LORA_RITE, RITE_FLOAT32, S_GENERAL_COND_1E2, rite_defaults, 9,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_LAST, RITE_RANK_LAST, 0}, AGREE_TO, 1e-3},
    {"float, general S, all options", RITE_LORA_RITE, RITE_FLOAT32, S_GENERAL_COND_1E2, rite_all_options, 10,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_FIRST, RITE_RANK_FIRST, 0}, AGREE_TO, 1e-3},
    {"AdamW, general S (cond 1e3)", RITE_ADAMW, RITE_FLOAT64, S_GENERAL_COND_1E3, adamw_defaults, 3,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_LAST, RITE_RANK_LAST, 0}, DIFFER_BY, 1e-2},
    {"AdamW, diagonal S", RITE_ADAMW, RITE_FLOAT64, S_DIAGONAL, adamw_defaults, 3,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_LAST, RITE_RANK_LAST, 0}, DIFFER_BY, 1e-2},
    {"AdamW, float, general S (cond 1e2)", RITE_ADAMW, RITE_FLOAT32, S_GENERAL_COND_1E2, adamw_defaults, 3,
     {RITE_RANK_LAST, RITE_RANK_LAST, 0}, {RITE_RANK_LAST, RITE_RANK_LAST, 0}, DIFFER_BY, 1e-2},
};
enum { NEXPERIMENTS = sizeof EXPERIMENTS / sizeof EXPERIMENTS[0] };

/* One cmocka test per experiment; its state is the experiment. */
static void test_experiment(void **state) {
    const experiment *e = (const experiment *)*state;
    outcome o = run_experiment(e);
    print_message("    %-38s rel diff max %.2e final %.2e  moved %.2f  loss %.4g -> %.4g\n", e->name, o.max_diff,
                  o.final_diff, o.moved, o.loss0, o.loss_end);
    if (e->expect == DIFFER_BY) {
        assert_true(o.final_diff > e->bound);
        return;
    }
    assert_true(o.max_diff < e->bound);
    assert_true(o.moved > 0.5);
    assert_true(o.loss_end < 0.5 * o.loss0);
}

int main(void) {
    struct CMUnitTest tests[NEXPERIMENTS];
    int i;
    for (i = 0; i < NEXPERIMENTS; i++) {
        /* cmocka's state is not const; test_experiment only reads it */
        const struct CMUnitTest t = cmocka_unit_test_prestate(test_experiment, (void *)&EXPERIMENTS[i]);
        tests[i] = t;
        tests[i].name = EXPERIMENTS[i].name;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
