/* test_basis.c - factors changed outside the library between steps.

   A layer transports its moments from the previous step's factor bases to
   the current ones (SPEC step 4). By default it keeps only the r x r
   products it needs, formed from the factors it wrote; with keep_basis it
   keeps the k x r bases themselves. These tests change the factors between
   steps (a reparametrisation L S, R S^-T that keeps L R^T, a random
   perturbation, a rescaling of one factor) and check, against the naive
   reference of tests/ref_rite.h:
   - keep_basis: every step equals the reference, changes or not;
   - default, told with rite_factors_changed: the step after the change
     equals the reference with P = I for that step (the documented meaning);
   - default, not told: the result differs from the reference (which is why
     the call exists);
   - without changes both kinds agree with the reference and with each
     other, and the default keeps (m + n) r fewer numbers of state. */
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

enum { M = 19, N = 14, RK = 3, STEPS = 30 };

/* Changes a trainer might make to the factors between steps. */
enum { CHANGE_NONE, CHANGE_REPARAM, CHANGE_PERTURB, CHANGE_RESCALE_L };

/* How the library layer is told about a change. */
enum { MODE_KEEP_BASIS, MODE_TOLD, MODE_NOT_TOLD };

typedef struct problem {
    double A[M * N], L0[M * RK], R0[N * RK], S[RK * RK], Sinv_t[RK * RK];
} problem;

static void problem_make(problem *p) {
    double B[M * 4], C[N * 4];
    tu_rng g = {2024};
    int i, j;
    tu_fill_normal(&g, B, M * 4, 1.0);
    tu_fill_normal(&g, C, N * 4, 1.0);
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double s = 0;
            int q;
            for (q = 0; q < 4; q++) s += B[i * 4 + q] * C[j * 4 + q];
            p->A[i * N + j] = 0.1 * s + 0.01 * tu_normal(&g);
        }
    tu_fill_normal(&g, p->L0, M * RK, 0.3);
    tu_fill_normal(&g, p->R0, N * RK, 0.3);
    /* S upper triangular with a unit-ish diagonal: S^-T by back substitution */
    memset(p->S, 0, sizeof p->S);
    for (i = 0; i < RK; i++)
        for (j = i; j < RK; j++) p->S[i * RK + j] = i == j ? 1.5 + 0.5 * i : 0.7 * tu_normal(&g);
    {
        /* inverse of upper-triangular S (row-major), then transpose */
        double inv[RK * RK];
        int c;
        memset(inv, 0, sizeof inv);
        for (c = 0; c < RK; c++)
            for (i = RK - 1; i >= 0; i--) {
                double s = i == c ? 1.0 : 0.0;
                for (j = i + 1; j < RK; j++) s -= p->S[i * RK + j] * inv[j * RK + c];
                inv[i * RK + c] = s / p->S[i * RK + i];
            }
        for (i = 0; i < RK; i++)
            for (j = 0; j < RK; j++) p->Sinv_t[i * RK + j] = inv[j * RK + i];
    }
}

/* X <- X S (k x r times r x r) */
static void right_mul(double *X, int k, const double *S) {
    double row[RK];
    int i, j, q;
    for (i = 0; i < k; i++) {
        for (j = 0; j < RK; j++) {
            double s = 0;
            for (q = 0; q < RK; q++) s += X[i * RK + q] * S[q * RK + j];
            row[j] = s;
        }
        memcpy(X + i * RK, row, sizeof row);
    }
}

static void apply_change(const problem *p, int change, int round, double *L, double *R) {
    tu_rng g;
    int i;
    g.s = 77 + (uint64_t)round;
    switch (change) {
    case CHANGE_REPARAM:
        right_mul(L, M, p->S);
        right_mul(R, N, p->Sinv_t);
        break;
    case CHANGE_PERTURB:
        for (i = 0; i < M * RK; i++) L[i] += 0.05 * tu_normal(&g);
        for (i = 0; i < N * RK; i++) R[i] += 0.05 * tu_normal(&g);
        break;
    case CHANGE_RESCALE_L:
        for (i = 0; i < M * RK; i++) L[i] *= 3.0;
        break;
    default:
        break;
    }
}

/* Runs STEPS steps of library and reference side by side; the factors are
   changed at steps 10 and 20. Returns the largest relative difference of the
   factors after the first change (0 before it must hold to 1e-10). */
static double run(int change, int mode, rite_layout layL, rite_layout layR, int escape) {
    problem p;
    ref_config rc = ref_config_default();
    rite_config lc;
    rite_desc d;
    rite_layer *layer;
    ref_layer ref;
    double L[M * RK], R[N * RK], rL[M * RK], rR[N * RK], gL[M * RK], gR[N * RK], work[M * N];
    double sL[M * RK], sR[N * RK], back[M * RK > N * RK ? M * RK : N * RK];
    double worst = 0;
    int step;

    problem_make(&p);
    rc.lr = 0.02;
    rc.escape = escape;
    lc = tu_rite_config(&rc, RITE_LORA_RITE);
    d = tu_desc(M, N, RK, RITE_LORA_RITE, RITE_FLOAT64);
    d.layout_L = layL;
    d.layout_R = layR;
    d.config = &lc;
    d.keep_basis = mode == MODE_KEEP_BASIS;
    assert_int_equal(rite_init(&layer, &d), RITE_OK);
    ref_init(&ref, M, N, RK, &rc);
    memcpy(L, p.L0, sizeof L);
    memcpy(R, p.R0, sizeof R);
    memcpy(rL, p.L0, sizeof rL);
    memcpy(rR, p.R0, sizeof rR);
    tu_to_layout_d(L, M, RK, layL, layL == RITE_RANK_LAST ? RK : M, sL);
    tu_to_layout_d(R, N, RK, layR, layR == RITE_RANK_LAST ? RK : N, sR);

    for (step = 0; step < STEPS; step++) {
        int changed = change != CHANGE_NONE && (step == 10 || step == 20);
        double dl, dr;
        if (changed) {
            /* the trainer changes both copies the same way */
            tu_from_layout_d(sL, M, RK, layL, layL == RITE_RANK_LAST ? RK : M, L);
            tu_from_layout_d(sR, N, RK, layR, layR == RITE_RANK_LAST ? RK : N, R);
            apply_change(&p, change, step, L, R);
            apply_change(&p, change, step, rL, rR);
            tu_to_layout_d(L, M, RK, layL, layL == RITE_RANK_LAST ? RK : M, sL);
            tu_to_layout_d(R, N, RK, layR, layR == RITE_RANK_LAST ? RK : N, sR);
            if (mode == MODE_TOLD) rite_factors_changed(layer);
        }
        /* library step from its own factors */
        tu_from_layout_d(sL, M, RK, layL, layL == RITE_RANK_LAST ? RK : M, L);
        tu_from_layout_d(sR, N, RK, layR, layR == RITE_RANK_LAST ? RK : N, R);
        tu_lsq_loss_grad(L, R, p.A, M, N, RK, gL, gR, work);
        {
            double GL[M * RK], GR[N * RK];
            tu_to_layout_d(gL, M, RK, layL, layL == RITE_RANK_LAST ? RK : M, GL);
            tu_to_layout_d(gR, N, RK, layR, layR == RITE_RANK_LAST ? RK : N, GR);
            assert_int_equal(rite_step_f64(layer, sL, sR, GL, GR), RITE_OK);
        }
        /* reference step; told mode means P = I at this step */
        tu_lsq_loss_grad(rL, rR, p.A, M, N, RK, gL, gR, work);
        {
            double sumsq = ref_prepare(&ref, rL, rR, gL, gR);
            if (changed && mode == MODE_TOLD) {
                memcpy(ref.UL_prev, ref.UL, sizeof(double) * M * RK);
                memcpy(ref.UR_prev, ref.UR, sizeof(double) * N * RK);
            }
            ref_finish(&ref, rL, rR, sqrt(sumsq));
        }
        tu_from_layout_d(sL, M, RK, layL, layL == RITE_RANK_LAST ? RK : M, back);
        dl = tu_rel_diff(back, rL, M * RK);
        tu_from_layout_d(sR, N, RK, layR, layR == RITE_RANK_LAST ? RK : N, back);
        dr = tu_rel_diff(back, rR, N * RK);
        if (step < 10 || change == CHANGE_NONE) {
            if (!(dl <= 1e-10 && dr <= 1e-10))
                print_error("step %d before any change: differences %.3g %.3g\n", step, dl, dr);
            assert_true(dl <= 1e-10 && dr <= 1e-10);
        }
        if (dl > worst || dl != dl) worst = dl;
        if (dr > worst || dr != dr) worst = dr;
    }
    rite_free(layer);
    ref_free(&ref);
    return worst;
}

static const char *change_name[] = {"none", "L S, R S^-T", "perturbation", "L x 3"};

/* One way to run every change: how the layer is told, its storage, and
   what the result must be against the reference. */
typedef struct scenario {
    const char *name;
    int mode;
    rite_layout layL, layR;
    int escape;
    int first_change; /* the changes run: first_change .. CHANGE_RESCALE_L */
    int exact;        /* 1: within 1e-10 of the reference; 0: more than 1e-6 from it */
} scenario;

static void check_scenario(const scenario *sc) {
    int change;
    for (change = sc->first_change; change <= CHANGE_RESCALE_L; change++) {
        double w = run(change, sc->mode, sc->layL, sc->layR, sc->escape);
        printf("    %-22s layouts %d%d, change %-14s max rel diff %.3g\n", sc->name, sc->layL, sc->layR,
               change_name[change], w);
        if (sc->exact) assert_true(w <= 1e-10);
        else assert_true(w > 1e-6);
    }
}

/* keep_basis: every step equals the reference, in every storage */
static const scenario KEEP_BASIS[] = {
    {"keep_basis", MODE_KEEP_BASIS, RITE_RANK_LAST, RITE_RANK_LAST, 0, CHANGE_NONE, 1},
    {"keep_basis", MODE_KEEP_BASIS, RITE_RANK_FIRST, RITE_RANK_LAST, 0, CHANGE_NONE, 1},
    {"keep_basis", MODE_KEEP_BASIS, RITE_RANK_LAST, RITE_RANK_FIRST, 0, CHANGE_NONE, 1},
    {"keep_basis, escape", MODE_KEEP_BASIS, RITE_RANK_FIRST, RITE_RANK_FIRST, 1, CHANGE_NONE, 1},
};

/* default, told: the step after a change equals the reference with P = I */
static const scenario TOLD = {"default, told (P = I)", MODE_TOLD, RITE_RANK_FIRST, RITE_RANK_LAST, 1, CHANGE_REPARAM, 1};

/* default, not told: the result differs from the reference */
static const scenario NOT_TOLD = {"default, not told", MODE_NOT_TOLD, RITE_RANK_LAST, RITE_RANK_LAST, 0, CHANGE_REPARAM, 0};

static void test_keep_basis_exact(void **state) {
    size_t i;
    (void)state;
    for (i = 0; i < sizeof KEEP_BASIS / sizeof KEEP_BASIS[0]; i++) check_scenario(&KEEP_BASIS[i]);
}

static void test_told_means_identity(void **state) {
    (void)state;
    check_scenario(&TOLD);
}

static void test_not_told_differs(void **state) {
    (void)state;
    check_scenario(&NOT_TOLD);
}

static void test_no_change_and_memory(void **state) {
    rite_desc d;
    rite_memory a = {0, 0, 0}, b = {0, 0, 0};
    (void)state;
    /* no changes: both kinds equal the reference (asserted inside run) */
    assert_true(run(CHANGE_NONE, MODE_NOT_TOLD, RITE_RANK_LAST, RITE_RANK_FIRST, 1) <= 1e-10);
    assert_true(run(CHANGE_NONE, MODE_KEEP_BASIS, RITE_RANK_LAST, RITE_RANK_FIRST, 1) <= 1e-10);
    /* state: keep_basis holds the two bases instead of two r x r products
       and the flag rite_factors_changed sets (an int) */
    d = tu_desc(300, 200, 8, RITE_LORA_RITE, RITE_FLOAT32);
    assert_int_equal(rite_memory_query(&d, &a), RITE_OK);
    d.keep_basis = 1;
    assert_int_equal(rite_memory_query(&d, &b), RITE_OK);
    assert_int_equal(b.state_bytes - a.state_bytes,
                     (300 + 200) * 8 * sizeof(float) - 2 * 8 * 8 * sizeof(double) - sizeof(int));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_basis_exact),
        cmocka_unit_test(test_told_means_identity),
        cmocka_unit_test(test_not_told_differs),
        cmocka_unit_test(test_no_change_and_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
