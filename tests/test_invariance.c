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

typedef struct run {
    rite_layer *layer;
    rite_precision prec;
    rite_layout layL, layR;
    int ldL, ldR;
    void *sL, *sR, *sgL, *sgR; /* storage buffers (float or double) */
    double L[M * RK], R[N * RK]; /* logical copies of the factors */
} run;

static int pick_ld(rite_layout layout, int k, int r, int pad) {
    return (layout == RITE_RANK_LAST ? r : k) + pad;
}

static void run_init(run *u, rite_optimizer opt, rite_precision prec, rite_layout layL, rite_layout layR,
                     int pad, const rite_config *cfg, const double *L0, const double *R0) {
    rite_desc desc;
    size_t es = prec == RITE_FLOAT64 ? sizeof(double) : sizeof(float);
    size_t cl, cr;
    memset(u, 0, sizeof *u);
    u->prec = prec;
    u->layL = layL;
    u->layR = layR;
    u->ldL = pick_ld(layL, M, RK, pad);
    u->ldR = pick_ld(layR, N, RK, pad);
    desc = tu_desc(M, N, RK, opt, prec);
    desc.layout_L = layL;
    desc.layout_R = layR;
    desc.ld_L = u->ldL;
    desc.ld_R = u->ldR;
    desc.config = cfg;
    assert_int_equal(rite_init(&u->layer, &desc), RITE_OK);
    cl = tu_storage_count(layL, u->ldL, M, RK);
    cr = tu_storage_count(layR, u->ldR, N, RK);
    u->sL = calloc(cl, es);
    u->sR = calloc(cr, es);
    u->sgL = calloc(cl, es);
    u->sgR = calloc(cr, es);
    assert_true(u->sL && u->sR && u->sgL && u->sgR);
    if (prec == RITE_FLOAT64) {
        tu_to_layout_d(L0, M, RK, layL, u->ldL, u->sL);
        tu_to_layout_d(R0, N, RK, layR, u->ldR, u->sR);
        tu_from_layout_d(u->sL, M, RK, layL, u->ldL, u->L);
        tu_from_layout_d(u->sR, N, RK, layR, u->ldR, u->R);
    } else {
        tu_to_layout_f(L0, M, RK, layL, u->ldL, u->sL);
        tu_to_layout_f(R0, N, RK, layR, u->ldR, u->sR);
        tu_from_layout_f(u->sL, M, RK, layL, u->ldL, u->L);
        tu_from_layout_f(u->sR, N, RK, layR, u->ldR, u->R);
    }
}

static void run_free(run *u) {
    rite_free(u->layer);
    free(u->sL);
    free(u->sR);
    free(u->sgL);
    free(u->sgR);
}

/* Gradients of the least-squares loss at the run's own factors, one step,
   factors read back. Returns the loss before the step. */
static double run_step(run *u, const double *A) {
    double gL[M * RK], gR[N * RK], work[M * N], loss;
    rite_status s;
    loss = tu_lsq_loss_grad(u->L, u->R, A, M, N, RK, gL, gR, work);
    if (u->prec == RITE_FLOAT64) {
        tu_to_layout_d(gL, M, RK, u->layL, u->ldL, u->sgL);
        tu_to_layout_d(gR, N, RK, u->layR, u->ldR, u->sgR);
        s = rite_step_f64(u->layer, u->sL, u->sR, u->sgL, u->sgR);
        tu_from_layout_d(u->sL, M, RK, u->layL, u->ldL, u->L);
        tu_from_layout_d(u->sR, N, RK, u->layR, u->ldR, u->R);
    } else {
        tu_to_layout_f(gL, M, RK, u->layL, u->ldL, u->sgL);
        tu_to_layout_f(gR, N, RK, u->layR, u->ldR, u->sgR);
        s = rite_step_f32(u->layer, u->sL, u->sR, u->sgL, u->sgR);
        tu_from_layout_f(u->sL, M, RK, u->layL, u->ldL, u->L);
        tu_from_layout_f(u->sR, N, RK, u->layR, u->ldR, u->R);
    }
    if (s != RITE_OK) print_error("step: %s\n", rite_status_string(s));
    assert_int_equal(s, RITE_OK);
    return loss;
}

/* ---- the experiment ----------------------------------------------------- */

typedef struct experiment {
    rite_optimizer opt;
    rite_precision prec;
    const rite_config *cfg;
    transform t;
    rite_layout lay1L, lay1R, lay2L, lay2R; /* storage of run 1 and run 2 */
    int pad1, pad2;
    uint64_t seed;
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
   entries N(0, 0.25^2). Then ||E|| = ||L R^T - A|| stays below 6.4 =
   0.8 sqrt(min(m, n) r), and since rms(g_L) = ||E U_R|| / sqrt(m r) <=
   ||E|| / sqrt(m r), no factor ever comes near the skip threshold 1 (a
   decision that would otherwise hinge on rounding). The run checks it. */
static outcome run_experiment(const experiment *e) {
    double Ls[M * RK], Rs[N * RK], A[M * N], L0[M * RK], R0[N * RK], L2[M * RK], R2[N * RK];
    double Z0[M * N], Z1[M * N], Z2[M * N], work[M * N];
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

    matmul(L0, e->t.S, L2, M, RK, RK, 0);     /* L S */
    matmul(R0, e->t.SinvT, R2, N, RK, RK, 0); /* R S^-T */

    run_init(&a, e->opt, e->prec, e->lay1L, e->lay1R, e->pad1, e->cfg, L0, R0);
    run_init(&b, e->opt, e->prec, e->lay2L, e->lay2R, e->pad2, e->cfg, L2, R2);
    tu_product(a.L, a.R, M, N, RK, Z0);

    memset(&o, 0, sizeof o);
    for (step = 0; step < STEPS; step++) {
        double loss = run_step(&a, A), d;
        run_step(&b, A);
        if (step == 0) o.loss0 = loss;
        if (e->opt == RITE_LORA_RITE) assert_true(sqrt(2.0 * loss) < 0.8 * sqrt((double)(N * RK)));
        tu_product(a.L, a.R, M, N, RK, Z1);
        tu_product(b.L, b.R, M, N, RK, Z2);
        d = tu_rel_diff(Z2, Z1, M * N);
        if (!(d <= o.max_diff)) o.max_diff = d; /* NaN propagates */
        o.final_diff = d;
    }
    o.loss_end = tu_lsq_loss_grad(a.L, a.R, A, M, N, RK, NULL, NULL, work);
    for (i = 0; i < M * N; i++) work[i] = Z1[i] - Z0[i];
    o.moved = fro(work, M * N) / fro(Z0, M * N);
    run_free(&a);
    run_free(&b);
    return o;
}

static void report(const char *name, const outcome *o) {
    print_message("    %-38s rel diff max %.2e final %.2e  moved %.2f  loss %.4g -> %.4g\n", name, o->max_diff,
                  o->final_diff, o->moved, o->loss0, o->loss_end);
}

static rite_config rite_defaults_lr(double lr) {
    rite_config c = rite_config_default(RITE_LORA_RITE);
    c.lr = lr;
    return c;
}

/* Every option that keeps invariance, switched on at once. */
static rite_config rite_all_options(void) {
    rite_config c = rite_config_default(RITE_LORA_RITE);
    c.lr = 1e-2;
    c.eps = 1e-4;
    c.escape = 1;
    c.clip = 0.3;
    c.cap = 0.5;
    c.eps_root = 1e-3;
    c.relative_eps = 1;
    c.beta1 = 0.8;
    c.beta2 = 0.99;
    return c;
}

static experiment base_experiment(const rite_config *cfg, transform t, uint64_t seed) {
    experiment e;
    memset(&e, 0, sizeof e);
    e.opt = RITE_LORA_RITE;
    e.prec = RITE_FLOAT64;
    e.cfg = cfg;
    e.t = t;
    e.lay1L = e.lay1R = e.lay2L = e.lay2R = RITE_RANK_LAST;
    e.seed = seed;
    return e;
}

static void expect_invariant(const char *name, const experiment *e, double tol) {
    outcome o = run_experiment(e);
    report(name, &o);
    assert_true(o.max_diff < tol);
    /* the factors changed meaningfully, and the loss went down */
    assert_true(o.moved > 0.5);
    assert_true(o.loss_end < 0.5 * o.loss0);
}

/* ---- tests -------------------------------------------------------------- */

/* S = diag(10, 0.1, 3, 0.5), defaults (lr 1e-2); run 2 stored rank-first. */
static void test_diagonal_f64(void **state) {
    rite_config c = rite_defaults_lr(1e-2);
    experiment e = base_experiment(&c, diagonal_transform(), 1);
    (void)state;
    e.lay2L = RITE_RANK_FIRST;
    e.lay2R = RITE_RANK_FIRST;
    expect_invariant("diagonal S, defaults", &e, 1e-8);
}

/* S orthogonal (Gram-Schmidt of a Gaussian matrix); padded rank-first runs. */
static void test_orthogonal_f64(void **state) {
    rite_config c = rite_defaults_lr(1e-2);
    experiment e = base_experiment(&c, orthogonal_transform(42), 2);
    (void)state;
    e.lay1L = RITE_RANK_FIRST;
    e.lay2R = RITE_RANK_FIRST;
    e.pad1 = 3;
    e.pad2 = 1;
    expect_invariant("orthogonal S, defaults", &e, 1e-8);
}

/* General S with condition number 1e3, defaults and all options. */
static void test_general_f64(void **state) {
    rite_config c = rite_defaults_lr(1e-2), all = rite_all_options();
    experiment e = base_experiment(&c, general_transform(7, 1e3), 3);
    (void)state;
    expect_invariant("general S (cond 1e3), defaults", &e, 1e-8);
    /* the PEFT storage (L rank-first, R rank-last) for the second run */
    e.lay2L = RITE_RANK_FIRST;
    e.seed = 4;
    expect_invariant("general S, defaults, PEFT layout", &e, 1e-8);
    e.cfg = &all;
    e.seed = 5;
    e.lay1R = RITE_RANK_FIRST;
    expect_invariant("general S, escape+clip+cap+eps_root", &e, 1e-8);
    /* escape alone, and a clip that binds at every step */
    all = rite_defaults_lr(1e-2);
    all.escape = 1;
    e.seed = 6;
    expect_invariant("general S, escape", &e, 1e-8);
    all.escape = 0;
    all.clip = 0.05;
    e.seed = 7;
    expect_invariant("general S, clip 0.05", &e, 1e-8);
}

/* Single precision, general S with condition number 1e2: 1e-3. */
static void test_general_f32(void **state) {
    rite_config c = rite_defaults_lr(1e-2), all = rite_all_options();
    experiment e = base_experiment(&c, general_transform(8, 1e2), 9);
    (void)state;
    e.prec = RITE_FLOAT32;
    expect_invariant("float, general S (cond 1e2), defaults", &e, 1e-3);
    e.lay2L = RITE_RANK_FIRST;
    e.lay2R = RITE_RANK_FIRST;
    e.cfg = &all;
    e.seed = 10;
    expect_invariant("float, general S, all options", &e, 1e-3);
}

/* AdamW in the same experiment is not invariant: the products differ by
   more than 1e-2 (relative) after 100 steps. */
static void test_adamw_is_not_invariant(void **state) {
    rite_config c = rite_config_default(RITE_ADAMW);
    experiment e = base_experiment(&c, general_transform(7, 1e3), 3);
    outcome o;
    (void)state;
    c.lr = 1e-2;
    e.opt = RITE_ADAMW;
    o = run_experiment(&e);
    report("AdamW, general S (cond 1e3)", &o);
    assert_true(o.final_diff > 1e-2);
    e.t = diagonal_transform();
    o = run_experiment(&e);
    report("AdamW, diagonal S", &o);
    assert_true(o.final_diff > 1e-2);
    e.t = general_transform(8, 1e2);
    e.prec = RITE_FLOAT32;
    o = run_experiment(&e);
    report("AdamW, float, general S (cond 1e2)", &o);
    assert_true(o.final_diff > 1e-2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_diagonal_f64),
        cmocka_unit_test(test_orthogonal_f64),
        cmocka_unit_test(test_general_f64),
        cmocka_unit_test(test_general_f32),
        cmocka_unit_test(test_adamw_is_not_invariant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
