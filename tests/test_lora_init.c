/* test_lora_init.c - LoRA-RITE from the standard LoRA initialisation
   (lora_B = R = 0, lora_A = L small random) and from rank-deficient factors.

   Why L does not move at the first step: the QR of R = 0 has T_R = 0, whose
   pseudo-inverse is T_R^+ = 0 (SPEC step 1). So g_L = gradL T_R^+ = 0 for
   any gradL (and the least-squares gradL = E R is 0 anyway), hence at
   k = 0: V_L = 0, S_L = 0 Q = 0, M_L = 0, D_L = M_L T_R^+T = 0 and
   L <- L - lr 0 = L exactly. R does move: T_L is invertible, so
   g_R = gradR T_L^-1 with gradR = E^T L = -A^T L != 0.

   How far R moves, by a property: at k = 0, M_R = S_R = g_R Q_R with
   Q_R = (V_R^(1/2) + eps)^-1 and V_R = g_R^T g_R / n, so for eps -> 0
   S_R^T S_R = Q (n V) Q = n I. The new product is
   Z = L R_new^T = U_L T_L (-lr T_L^-1 S_R^T) = -lr U_L S_R^T, and its
   singular values are lr sqrt(n) each (r of them), whatever A and L are.
   With eps they are lr sqrt(n) sqrt(l_i) / (sqrt(l_i) + eps), l_i the
   eigenvalues of V_R, a relative change of about eps / sqrt(l_i) ~ 1e-5. */
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

enum { M = 20, N = 16, RK = 4 };

/* ---- a run in PEFT storage: L = lora_A^T rank-first, R = lora_B rank-last */

typedef struct run {
    rite_layer *layer;
    rite_precision prec;
    double dL[M * RK], dR[N * RK], dgL[M * RK], dgR[N * RK];
    float fL[M * RK], fR[N * RK], fgL[M * RK], fgR[N * RK];
    double L[M * RK], R[N * RK]; /* logical copies */
} run;

static void run_init(run *u, rite_precision prec, const rite_config *cfg, const double *L0, const double *R0) {
    rite_desc desc;
    memset(u, 0, sizeof *u);
    u->prec = prec;
    desc = tu_desc(M, N, RK, RITE_LORA_RITE, prec);
    desc.layout_L = RITE_RANK_FIRST;
    desc.layout_R = RITE_RANK_LAST;
    desc.config = cfg;
    assert_int_equal(rite_init(&u->layer, &desc), RITE_OK);
    if (prec == RITE_FLOAT64) {
        tu_to_layout_d(L0, M, RK, RITE_RANK_FIRST, M, u->dL);
        tu_to_layout_d(R0, N, RK, RITE_RANK_LAST, RK, u->dR);
        tu_from_layout_d(u->dL, M, RK, RITE_RANK_FIRST, M, u->L);
        tu_from_layout_d(u->dR, N, RK, RITE_RANK_LAST, RK, u->R);
    } else {
        tu_to_layout_f(L0, M, RK, RITE_RANK_FIRST, M, u->fL);
        tu_to_layout_f(R0, N, RK, RITE_RANK_LAST, RK, u->fR);
        tu_from_layout_f(u->fL, M, RK, RITE_RANK_FIRST, M, u->L);
        tu_from_layout_f(u->fR, N, RK, RITE_RANK_LAST, RK, u->R);
    }
}

/* One step with the given logical gradients; factors read back. */
static void run_step_with(run *u, const double *gL, const double *gR) {
    rite_status s;
    if (u->prec == RITE_FLOAT64) {
        tu_to_layout_d(gL, M, RK, RITE_RANK_FIRST, M, u->dgL);
        tu_to_layout_d(gR, N, RK, RITE_RANK_LAST, RK, u->dgR);
        s = rite_step_f64(u->layer, u->dL, u->dR, u->dgL, u->dgR);
        tu_from_layout_d(u->dL, M, RK, RITE_RANK_FIRST, M, u->L);
        tu_from_layout_d(u->dR, N, RK, RITE_RANK_LAST, RK, u->R);
    } else {
        tu_to_layout_f(gL, M, RK, RITE_RANK_FIRST, M, u->fgL);
        tu_to_layout_f(gR, N, RK, RITE_RANK_LAST, RK, u->fgR);
        s = rite_step_f32(u->layer, u->fL, u->fR, u->fgL, u->fgR);
        tu_from_layout_f(u->fL, M, RK, RITE_RANK_FIRST, M, u->L);
        tu_from_layout_f(u->fR, N, RK, RITE_RANK_LAST, RK, u->R);
    }
    if (s != RITE_OK) print_error("step: %s\n", rite_status_string(s));
    assert_int_equal(s, RITE_OK);
}

/* One least-squares step; returns the loss before it. */
static double run_step(run *u, const double *A) {
    double gL[M * RK], gR[N * RK], work[M * N];
    double loss = tu_lsq_loss_grad(u->L, u->R, A, M, N, RK, gL, gR, work);
    run_step_with(u, gL, gR);
    return loss;
}

static double run_loss(const run *u, const double *A) {
    double work[M * N];
    return tu_lsq_loss_grad(u->L, u->R, A, M, N, RK, NULL, NULL, work);
}

static int all_finite(const double *x, size_t k) {
    size_t i;
    for (i = 0; i < k; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Target A = L* R*^T + noise with ||A|| = 3.5 (so rms of the unmagnified
   gradients stays well under the skip threshold) and L0 ~ N(0, 0.1^2). */
static void make_problem(uint64_t seed, double *A, double *L0) {
    double Ls[M * RK], Rs[N * RK], s = 0;
    tu_rng g;
    int i;
    g.s = seed;
    tu_fill_normal(&g, Ls, M * RK, 1.0);
    tu_fill_normal(&g, Rs, N * RK, 1.0);
    tu_product(Ls, Rs, M, N, RK, A);
    for (i = 0; i < M * N; i++) A[i] += 0.05 * tu_normal(&g);
    for (i = 0; i < M * N; i++) s += A[i] * A[i];
    for (i = 0; i < M * N; i++) A[i] *= 3.5 / sqrt(s);
    tu_fill_normal(&g, L0, M * RK, 0.1);
}

static rite_config defaults_lr(double lr) {
    rite_config c = rite_config_default(RITE_LORA_RITE);
    c.lr = lr;
    return c;
}

/* ---- first step from R = 0 ---------------------------------------------- */

static void check_first_step(rite_precision prec) {
    rite_config c = defaults_lr(1e-2);
    double A[M * N], L0[M * RK], R0[N * RK] = {0}, Lbefore[M * RK];
    double Z[M * N], sv[N], u1[1], vt1[1], superb[N]; /* min(M, N) = N */
    run u;
    int i;
    make_problem(1, A, L0);
    run_init(&u, prec, &c, L0, R0);
    memcpy(Lbefore, u.L, sizeof Lbefore);
    run_step(&u, A);

    /* L exactly unchanged, R non-zero and finite */
    for (i = 0; i < M * RK; i++) assert_true(u.L[i] == Lbefore[i]);
    assert_true(all_finite(u.R, N * RK));
    {
        double mx = 0;
        for (i = 0; i < N * RK; i++)
            if (fabs(u.R[i]) > mx) mx = fabs(u.R[i]);
        assert_true(mx > 0);
    }

    /* the r singular values of the new product are lr sqrt(n) */
    tu_product(u.L, u.R, M, N, RK, Z);
    assert_int_equal(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', M, N, Z, N, sv, u1, 1, vt1, 1, superb), 0);
    for (i = 0; i < RK; i++) {
        double expect = c.lr * sqrt((double)N);
        if (!(fabs(sv[i] - expect) <= 1e-3 * expect))
            print_error("singular value %d: %.9g, expected %.9g\n", i, sv[i], expect);
        assert_true(fabs(sv[i] - expect) <= 1e-3 * expect);
    }
    assert_true(sv[RK] <= 1e-5 * c.lr * sqrt((double)N)); /* and the product has rank r */
    assert_int_equal(rite_step_count(u.layer), 1);

    /* the second step moves L too (R != 0 now) */
    memcpy(Lbefore, u.L, sizeof Lbefore);
    run_step(&u, A);
    {
        double d = 0;
        for (i = 0; i < M * RK; i++) d += fabs(u.L[i] - Lbefore[i]);
        assert_true(d > 1e-4);
    }
    rite_free(u.layer);
}

static void test_first_step_f64(void **state) { (void)state; check_first_step(RITE_FLOAT64); }
static void test_first_step_f32(void **state) { (void)state; check_first_step(RITE_FLOAT32); }

/* T_R^+ = 0 also zeroes an arbitrary non-zero gradL: L stays put. */
static void check_nonzero_gradL_with_zero_R(rite_precision prec) {
    rite_config c = defaults_lr(1e-2);
    double L0[M * RK], R0[N * RK] = {0}, gL[M * RK], gR[N * RK];
    tu_rng g = {99};
    run u;
    int i;
    tu_fill_normal(&g, L0, M * RK, 0.1);
    tu_fill_normal(&g, gL, M * RK, 0.05);
    tu_fill_normal(&g, gR, N * RK, 0.05);
    run_init(&u, prec, &c, L0, R0);
    run_step_with(&u, gL, gR);
    for (i = 0; i < M * RK; i++) assert_true(u.L[i] == (prec == RITE_FLOAT64 ? L0[i] : (double)(float)L0[i]));
    assert_true(all_finite(u.R, N * RK));
    {
        double mx = 0;
        for (i = 0; i < N * RK; i++)
            if (fabs(u.R[i]) > mx) mx = fabs(u.R[i]);
        assert_true(mx > 0);
    }
    rite_free(u.layer);
}

static void test_zero_R_ignores_gradL(void **state) {
    (void)state;
    check_nonzero_gradL_with_zero_R(RITE_FLOAT64);
    check_nonzero_gradL_with_zero_R(RITE_FLOAT32);
}

/* ---- training ------------------------------------------------------------ */

/* 200 steps from a given start; loss must fall below `factor` of its start. */
static void train(rite_precision prec, const double *A, const double *L0, const double *R0, double factor,
                  const char *name) {
    rite_config c = defaults_lr(1e-2);
    run u;
    double loss0, loss;
    int step;
    run_init(&u, prec, &c, L0, R0);
    loss0 = run_loss(&u, A);
    for (step = 0; step < 200; step++) {
        run_step(&u, A);
        assert_true(all_finite(u.L, M * RK));
        assert_true(all_finite(u.R, N * RK));
    }
    loss = run_loss(&u, A);
    print_message("    %-36s loss %.5g -> %.5g\n", name, loss0, loss);
    assert_true(isfinite(loss));
    assert_true(loss < factor * loss0);
    assert_int_equal(rite_step_count(u.layer), 200);
    rite_free(u.layer);
}

static void check_training_from_lora_init(rite_precision prec) {
    double A[M * N], L0[M * RK], R0[N * RK] = {0};
    make_problem(2, A, L0);
    train(prec, A, L0, R0, 0.9, prec == RITE_FLOAT64 ? "LoRA init, double" : "LoRA init, float");
}

static void test_training_f64(void **state) { (void)state; check_training_from_lora_init(RITE_FLOAT64); }
static void test_training_f32(void **state) { (void)state; check_training_from_lora_init(RITE_FLOAT32); }

/* R non-zero but rank-deficient (columns 0 and 1 equal): T_R is singular,
   its pseudo-inverse drops the null direction; training goes on without
   NaN. The same with L rank-deficient too, and with L having a zero column. */
static void check_rank_deficient(rite_precision prec) {
    double A[M * N], L0[M * RK], R0[N * RK];
    tu_rng g = {3};
    int i;
    make_problem(3, A, L0);
    tu_fill_normal(&g, R0, N * RK, 0.1);
    for (i = 0; i < N; i++) R0[i * RK + 1] = R0[i * RK + 0];
    train(prec, A, L0, R0, 0.9, prec == RITE_FLOAT64 ? "R rank 3, double" : "R rank 3, float");
    for (i = 0; i < M; i++) L0[i * RK + 3] = L0[i * RK + 2];
    train(prec, A, L0, R0, 0.9, prec == RITE_FLOAT64 ? "L, R rank 3, double" : "L, R rank 3, float");
    for (i = 0; i < M; i++) L0[i * RK + 2] = 0;
    for (i = 0; i < M; i++) L0[i * RK + 3] = 0;
    train(prec, A, L0, R0, 0.9, prec == RITE_FLOAT64 ? "L rank 2, R rank 3, double" : "L rank 2, R rank 3, float");
}

static void test_rank_deficient_f64(void **state) { (void)state; check_rank_deficient(RITE_FLOAT64); }
static void test_rank_deficient_f32(void **state) { (void)state; check_rank_deficient(RITE_FLOAT32); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_step_f64),
        cmocka_unit_test(test_first_step_f32),
        cmocka_unit_test(test_zero_R_ignores_gradL),
        cmocka_unit_test(test_training_f64),
        cmocka_unit_test(test_training_f32),
        cmocka_unit_test(test_rank_deficient_f64),
        cmocka_unit_test(test_rank_deficient_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
