/* test_contract.c - rules of the API that a careful user relies on, one
   test each:
   - a step fails only when the SPEC's own result would not be finite in the
     layer's precision (tiny factors, unmagnified gradients too large to
     represent: skipped, as SPEC step 3 says);
   - AdamW checks each stored value, and a float layer takes only an lr that
     is finite in float;
   - storage rules: factors never share storage, AdamW's gradients never
     share storage with a factor, LoRA-RITE's may;
   - configs come from rite_config_default, for the layer's optimizer;
   - rite_set_lr keeps a pending prepare; dropped prepares are counted;
   - errors carry a detail naming the argument, buffer or field;
   - the status texts say what the codes cover. */
#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"
#include "test_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { M = 24, N = 20, RK = 4 };

static rite_layer *make_layer(rite_optimizer opt, rite_precision prec, const rite_config *cfg) {
    rite_desc d = tu_desc(M, N, RK, opt, prec);
    rite_layer *l = NULL;
    d.config = cfg;
    assert_int_equal(rite_init(&l, &d), RITE_OK);
    return l;
}

static void fill_f(float *x, size_t n, double scale, uint64_t seed) {
    tu_rng g = {seed};
    size_t i;
    for (i = 0; i < n; i++) x[i] = (float)(scale * tu_normal(&g));
}

static void fill_d(double *x, size_t n, double scale, uint64_t seed) {
    tu_rng g = {seed};
    tu_fill_normal(&g, x, n, scale);
}

/* a float problem from seeds seed .. seed + 3: factors L (M x RK) and R
   (N x RK) of about 1, gradients gL and gR (either may be NULL) of about gscale */
static void fill_problem_f(float *L, float *R, float *gL, float *gR, double gscale, uint64_t seed) {
    fill_f(L, M * RK, 1.0, seed);
    fill_f(R, N * RK, 1.0, seed + 1);
    if (gL) fill_f(gL, M * RK, gscale, seed + 2);
    if (gR) fill_f(gR, N * RK, gscale, seed + 3);
}

static int all_finite_f(const float *x, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* ---- 1. only SPEC's own overflow fails a step ---- */

/* R about 1e-40 (subnormal floats), zero gradients: T_R^+ is about 1e40,
   beyond float, but the SPEC's step is finite (and leaves the factors as
   they are); a double layer steps too. */
static void test_float_layer_with_subnormal_factor_steps(void **state) {
    float L[M * RK], R[N * RK], gL[M * RK] = {0}, gR[N * RK] = {0}, L0[M * RK], R0[N * RK];
    double Ld[M * RK], Rd[N * RK], gLd[M * RK] = {0}, gRd[N * RK] = {0};
    rite_layer *lf = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL), *ld = make_layer(RITE_LORA_RITE, RITE_FLOAT64, NULL);
    int s, i;
    (void)state;
    fill_f(L, M * RK, 1.0, 1);
    fill_f(R, N * RK, 1e-40, 2);
    for (i = 0; i < M * RK; i++) Ld[i] = L[i];
    for (i = 0; i < N * RK; i++) Rd[i] = R[i];
    memcpy(L0, L, sizeof L);
    memcpy(R0, R, sizeof R);
    for (s = 0; s < 3; s++) {
        assert_int_equal(rite_step_f32(lf, L, R, gL, gR), RITE_OK);
        assert_int_equal(rite_step_f64(ld, Ld, Rd, gLd, gRd), RITE_OK);
    }
    assert_memory_equal(L, L0, sizeof L);   /* zero gradients, no weight decay: nothing moves */
    assert_memory_equal(R, R0, sizeof R);
    assert_int_equal(rite_step_count(lf), 3);
    rite_free(lf);
    rite_free(ld);
}

/* R about 1e-20 and a gradient of L of ordinary floats (1e19): the
   unmagnified gradient G T_R^+ of L, about 1e39, cannot be represented in
   float, so SPEC step 3 skips L; R steps. R's columns are e0, e0 + e1,
   e1 + e2, e2 + e3 (times 1e-20), so that T_R^+ has entries of both signs
   in a column and G T_R^+ computed in float meets +Inf and -Inf in one sum. */
static void test_float_unmagnified_overflow_skips_the_factor(void **state) {
    float L[M * RK], R[N * RK] = {0}, gL[M * RK], gR[N * RK], L0[M * RK], R0[N * RK];
    rite_layer *l = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL);
    int i, j;
    (void)state;
    fill_f(L, M * RK, 1.0, 3);
    for (j = 0; j < RK; j++) {   /* rank-last: R[i * RK + j] */
        R[j * RK + j] = 1e-20f;
        if (j > 0) R[(j - 1) * RK + j] = 1e-20f;
    }
    for (i = 0; i < M * RK; i++) gL[i] = 1e19f;
    fill_f(gR, N * RK, 1e-3, 6);
    memcpy(L0, L, sizeof L);
    memcpy(R0, R, sizeof R);
    assert_int_equal(rite_step_f32(l, L, R, gL, gR), RITE_OK);
    assert_memory_equal(L, L0, sizeof L);   /* skipped: its moment is 0 after the first step */
    assert_true(memcmp(R, R0, sizeof R) != 0);
    assert_true(all_finite_f(R, N * RK));
    rite_free(l);
}

/* The same in double, past DBL_MAX: R about 1e-160, gradient about 1e150. */
static void test_double_unmagnified_overflow_skips_the_factor(void **state) {
    double L[M * RK], R[N * RK], gL[M * RK], gR[N * RK], L0[M * RK], R0[N * RK];
    rite_layer *l = make_layer(RITE_LORA_RITE, RITE_FLOAT64, NULL);
    int i;
    (void)state;
    fill_d(L, M * RK, 1.0, 7);
    fill_d(R, N * RK, 1e-160, 8);
    fill_d(gL, M * RK, 1e150, 9);
    fill_d(gR, N * RK, 1e-3, 10);
    memcpy(L0, L, sizeof L);
    memcpy(R0, R, sizeof R);
    assert_int_equal(rite_step_f64(l, L, R, gL, gR), RITE_OK);
    assert_memory_equal(L, L0, sizeof L);
    assert_true(memcmp(R, R0, sizeof R) != 0);
    for (i = 0; i < N * RK; i++) assert_true(isfinite(R[i]));
    rite_free(l);
}

/* ---- 2. AdamW's checks, and float ranges ---- */

/* A factor element of 2e38 with a second moment of 1.6e38: every stored
   value stays finite (their sum would not). */
static void test_adamw_checks_each_value_not_their_sum(void **state) {
    float L[M * RK], R[N * RK], gL[M * RK] = {0}, gR[N * RK] = {0};
    rite_layer *l = make_layer(RITE_ADAMW, RITE_FLOAT32, NULL);
    (void)state;
    fill_f(L, M * RK, 1.0, 11);
    fill_f(R, N * RK, 1.0, 12);
    gL[5] = 4e20f;   /* v = (1 - b2) g^2 = 1.6e38 after this step */
    assert_int_equal(rite_step_f32(l, L, R, gL, gR), RITE_OK);
    gL[5] = 0;
    L[5] = 2e38f;
    assert_int_equal(rite_step_f32(l, L, R, gL, gR), RITE_OK);
    assert_true(all_finite_f(L, M * RK));
    assert_true(L[5] > 1e38f);
    rite_free(l);
}

/* lr (and eps, weight_decay) must be finite in the layer's precision */
static void test_float_layer_refuses_lr_beyond_float(void **state) {
    rite_layer *lf = make_layer(RITE_ADAMW, RITE_FLOAT32, NULL), *ld = make_layer(RITE_ADAMW, RITE_FLOAT64, NULL);
    rite_layer *rf = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL);
    rite_config c = rite_config_default(RITE_ADAMW);
    (void)state;
    assert_int_equal(rite_set_lr(lf, 1e39), RITE_ERR_LR);
    assert_non_null(strstr(rite_last_error(lf), "float"));
    assert_true(rite_get_config(lf).lr == 1e-3);   /* unchanged */
    assert_int_equal(rite_set_lr(rf, 1e39), RITE_ERR_LR);
    assert_int_equal(rite_set_lr(ld, 1e39), RITE_OK);   /* finite in double */
    c.eps = 1e39;
    assert_int_equal(rite_set_config(lf, &c), RITE_ERR_EPS);
    c.eps = 1e-8;
    c.weight_decay = 1e39;
    assert_int_equal(rite_set_config(lf, &c), RITE_ERR_WEIGHT_DECAY);
    rite_free(lf);
    rite_free(ld);
    rite_free(rf);
}

/* ---- 3. shared storage ---- */

/* AdamW reads its gradients while writing the factors: a gradient that
   shares storage with a factor is refused, and nothing changes. */
static void test_adamw_refuses_gradient_sharing_a_factor(void **state) {
    float buf[(M + N) * RK], gL[M * RK], copy[(M + N) * RK];
    float *L = buf, *R = buf + M * RK;
    rite_layer *l = make_layer(RITE_ADAMW, RITE_FLOAT32, NULL);
    size_t n = rite_state_size(l);
    unsigned char *s0 = (unsigned char *)malloc(n), *s1 = (unsigned char *)malloc(n);
    (void)state;
    assert_true(s0 && s1);
    fill_f(buf, (M + N) * RK, 1.0, 13);
    fill_f(gL, M * RK, 0.1, 14);
    memcpy(copy, buf, sizeof buf);
    assert_int_equal(rite_state_copy(l, s0, n), RITE_OK);
    /* gR is the storage of L (as many floats: N < M) */
    assert_int_equal(rite_step_f32(l, L, R, gL, L), RITE_ERR_ALIASING);
    assert_non_null(strstr(rite_last_error(l), "gR"));
    assert_memory_equal(buf, copy, sizeof buf);
    assert_int_equal(rite_state_copy(l, s1, n), RITE_OK);
    assert_memory_equal(s0, s1, n);
    assert_int_equal(rite_step_count(l), 0);
    free(s0);
    free(s1);
    rite_free(l);
}

/* LoRA-RITE reads every gradient before it writes a factor: with gR in the
   storage of L the result is the unaliased call's, bit for bit. */
static void test_rite_gradient_may_share_a_factor(void **state) {
    float La[M * RK], Ra[N * RK], gLa[M * RK], Lb[M * RK], Rb[N * RK], gRb[N * RK];
    rite_layer *a = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL), *b = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL);
    int s;
    (void)state;
    fill_problem_f(La, Ra, gLa, NULL, 0.05, 15);
    memcpy(Lb, La, sizeof La);
    memcpy(Rb, Ra, sizeof Ra);
    for (s = 0; s < 3; s++) {
        memcpy(gRb, Lb, sizeof gRb);   /* the same values, in storage of its own */
        assert_int_equal(rite_step_f32(a, La, Ra, gLa, La), RITE_OK);
        assert_int_equal(rite_step_f32(b, Lb, Rb, gLa, gRb), RITE_OK);
        assert_memory_equal(La, Lb, sizeof La);
        assert_memory_equal(Ra, Rb, sizeof Ra);
    }
    rite_free(a);
    rite_free(b);
}

/* The factors never share storage; side by side in one array (interleaved
   rows with a common leading dimension) they do not, and are accepted. */
static void test_factors_must_not_overlap(void **state) {
    enum { K = 16 };
    float buf[K * 2 * RK], g[K * 2 * RK];
    double sq;
    rite_optimizer opt;
    (void)state;
    fill_f(buf, K * 2 * RK, 1.0, 18);
    fill_f(g, K * 2 * RK, 0.01, 19);
    for (opt = RITE_LORA_RITE; opt <= RITE_ADAMW; opt = (rite_optimizer)(opt + 1)) {
        rite_desc d = tu_desc(K, K, RK, opt, RITE_FLOAT32);
        rite_layer *l;
        d.ld_L = d.ld_R = 2 * RK;   /* row i: L's r numbers, then R's */
        assert_int_equal(rite_init(&l, &d), RITE_OK);
        assert_int_equal(rite_prepare_f32(l, buf, buf + RK, g, g + RK, &sq), RITE_OK);
        assert_int_equal(rite_prepare_f32(l, buf, buf + RK / 2, g, g + RK, &sq), RITE_ERR_ALIASING);
        assert_non_null(strstr(rite_last_error(l), "L and R"));
        assert_int_equal(rite_prepare_f32(l, buf, buf, g, g + RK, &sq), RITE_ERR_ALIASING);
        assert_int_equal(rite_apply(l, sq), RITE_OK);   /* the first prepare is still pending */
        rite_free(l);
    }
}

/* ---- 4, 5. configs ---- */

static void test_zero_config_is_refused(void **state) {
    rite_config c;
    rite_desc d;
    rite_layer *l = NULL, *good = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL);
    char detail[256];
    (void)state;
    memset(&c, 0, sizeof c);
    d = tu_desc(M, N, RK, RITE_LORA_RITE, RITE_FLOAT32);
    d.config = &c;
    assert_int_equal(rite_init(&l, &d), RITE_ERR_CONFIG);
    assert_null(l);
    assert_int_equal(rite_desc_check_detail(&d, detail, sizeof detail), RITE_ERR_CONFIG);
    assert_non_null(strstr(detail, "rite_config_default"));
    assert_int_equal(rite_set_config(good, &c), RITE_ERR_CONFIG);
    rite_free(good);
}

static void test_config_of_the_other_optimizer_is_refused(void **state) {
    rite_config rite = rite_config_default(RITE_LORA_RITE), adamw = rite_config_default(RITE_ADAMW);
    rite_desc d;
    rite_layer *l = NULL;
    char detail[256];
    (void)state;
    d = tu_desc(M, N, RK, RITE_ADAMW, RITE_FLOAT32);
    d.config = &rite;
    assert_int_equal(rite_init(&l, &d), RITE_ERR_CONFIG);
    assert_int_equal(rite_desc_check_detail(&d, detail, sizeof detail), RITE_ERR_CONFIG);
    assert_non_null(strstr(detail, "made for LoRA-RITE"));
    adamw.clip = 1.0;   /* AdamW does not clip: the option is refused, not ignored */
    d.config = &adamw;
    assert_int_equal(rite_desc_check_detail(&d, detail, sizeof detail), RITE_ERR_CONFIG);
    assert_non_null(strstr(detail, "clip"));
    adamw.clip = 0;
    assert_int_equal(rite_init(&l, &d), RITE_OK);
    d.optimizer = RITE_LORA_RITE;   /* and the other way round */
    assert_int_equal(rite_desc_check(&d), RITE_ERR_CONFIG);
    assert_int_equal(rite_set_config(l, &rite), RITE_ERR_CONFIG);
    rite_free(l);
}

/* ---- 6, 7. the two-phase protocol ---- */

/* An lr change between prepare and apply is harmless: the prepare stays,
   and the result equals setting the lr first. */
static void test_set_lr_keeps_pending_prepare(void **state) {
    float La[M * RK], Ra[N * RK], g1[M * RK], g2[N * RK], Lb[M * RK], Rb[N * RK];
    rite_layer *a = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL), *b = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL);
    double sa, sb;
    rite_config c;
    (void)state;
    fill_problem_f(La, Ra, g1, g2, 0.05, 20);
    memcpy(Lb, La, sizeof La);
    memcpy(Rb, Ra, sizeof Ra);
    assert_int_equal(rite_prepare_f32(a, La, Ra, g1, g2, &sa), RITE_OK);
    assert_int_equal(rite_set_lr(a, 0.05), RITE_OK);
    assert_int_equal(rite_is_prepared(a), 1);
    assert_int_equal(rite_apply(a, sa), RITE_OK);
    assert_int_equal(rite_set_lr(b, 0.05), RITE_OK);
    assert_int_equal(rite_prepare_f32(b, Lb, Rb, g1, g2, &sb), RITE_OK);
    assert_int_equal(rite_apply(b, sb), RITE_OK);
    assert_memory_equal(La, Lb, sizeof La);
    assert_memory_equal(Ra, Rb, sizeof Ra);
    /* skip is what prepare used: changing it cancels, and the detail says so */
    assert_int_equal(rite_prepare_f32(a, La, Ra, g1, g2, &sa), RITE_OK);
    c = rite_get_config(a);
    c.skip = 2.0;
    assert_int_equal(rite_set_config(a, &c), RITE_OK);
    assert_int_equal(rite_apply(a, sa), RITE_ERR_NOT_PREPARED);
    assert_non_null(strstr(rite_last_error(a), "skip"));
    rite_free(a);
    rite_free(b);
}

static void test_dropped_prepares_are_counted(void **state) {
    float L[M * RK], R[N * RK], g1[M * RK], g2[N * RK];
    rite_layer *l = make_layer(RITE_ADAMW, RITE_FLOAT32, NULL);
    double s;
    (void)state;
    fill_problem_f(L, R, g1, g2, 0.05, 24);
    assert_int_equal(rite_prepares_dropped(l), 0);
    assert_int_equal(rite_prepare_f32(l, L, R, g1, g2, &s), RITE_OK);
    assert_int_equal(rite_prepare_f32(l, L, R, g1, g2, &s), RITE_OK);   /* the first is never applied */
    assert_int_equal(rite_prepares_dropped(l), 1);
    assert_int_equal(rite_apply(l, s), RITE_OK);
    assert_int_equal(rite_prepares_dropped(l), 1);
    assert_int_equal(rite_apply(l, s), RITE_ERR_NOT_PREPARED);
    assert_non_null(strstr(rite_last_error(l), "applied already"));
    assert_int_equal(rite_prepare_f32(l, L, R, g1, g2, &s), RITE_OK);
    rite_reset(l);
    assert_int_equal(rite_prepares_dropped(l), 2);
    rite_free(l);
}

/* ---- 8. the detail of an error ---- */

static void test_error_detail_names_the_argument(void **state) {
    rite_desc d;
    rite_layer *a, *b;
    char detail[256];
    unsigned char *ck;
    size_t n;
    float L[M * RK], R[N * RK], g[M * RK];
    (void)state;
    d = tu_desc(M, N, RK, RITE_LORA_RITE, RITE_FLOAT32);
    d.ld_gR = 3;   /* below r = 4 (rank-last) */
    assert_int_equal(rite_desc_check_detail(&d, detail, sizeof detail), RITE_ERR_LEADING_DIM);
    assert_non_null(strstr(detail, "ld_gR = 3"));
    assert_non_null(strstr(detail, "minimum 4"));
    d.ld_gR = 0;
    d.layout_L = RITE_RANK_FIRST;
    d.ld_L = 10;   /* below m = 24 */
    assert_int_equal(rite_desc_check_detail(&d, detail, sizeof detail), RITE_ERR_LEADING_DIM);
    assert_non_null(strstr(detail, "ld_L = 10"));
    assert_non_null(strstr(detail, "minimum 24"));
    /* a checkpoint of another size: the field is named */
    a = make_layer(RITE_LORA_RITE, RITE_FLOAT32, NULL);
    d = tu_desc(M, N, RK - 1, RITE_LORA_RITE, RITE_FLOAT32);
    assert_int_equal(rite_init(&b, &d), RITE_OK);
    n = rite_checkpoint_size(a);
    ck = (unsigned char *)malloc(n);
    assert_non_null(ck);
    assert_int_equal(rite_checkpoint_save(a, ck, n), RITE_OK);
    assert_int_equal(rite_checkpoint_load(b, ck, n), RITE_ERR_CHECKPOINT_MISMATCH);
    assert_non_null(strstr(rite_last_error(b), "r differs: checkpoint 4, layer 3"));
    /* a buffer holding NaN */
    fill_problem_f(L, R, g, NULL, 0.1, 28);
    g[7] = NAN;
    assert_int_equal(rite_step_f32(a, L, R, g, g), RITE_ERR_NONFINITE_GRADIENT);
    assert_non_null(strstr(rite_last_error(a), "gL holds NaN or Inf"));
    g[7] = 0;
    assert_int_equal(rite_step_f32(a, L, R, g, g), RITE_OK);
    assert_string_equal(rite_last_error(a), "");   /* cleared by a call that succeeds */
    free(ck);
    rite_free(a);
    rite_free(b);
}

/* ---- 11. the texts ---- */

static void test_status_texts_cover_what_the_codes_mean(void **state) {
    int st;
    (void)state;
    assert_non_null(strstr(rite_status_string(RITE_ERR_CHECKPOINT_CORRUPT), "NaN"));
    assert_non_null(strstr(rite_status_string(RITE_ERR_CHECKPOINT_CORRUPT), "step count"));
    assert_null(strstr(rite_status_string(RITE_ERR_CHECKPOINT_MISMATCH), "options"));
    for (st = 0; st < RITE_STATUS_COUNT; st++) {
        const char *t = rite_status_string((rite_status)st);
        assert_true(t != NULL && t[0] != 0 && strcmp(t, "unknown status code") != 0);
    }
}

/* AdamW checks its update in prepare; an lr set between prepare and apply
   that makes it overflow is caught by apply, which changes nothing and
   keeps the prepare (the layer and the model) */
static void test_adamw_lr_set_after_prepare_is_checked(void **state) {
    rite_config c = rite_config_default(RITE_ADAMW);
    rite_desc d = tu_desc(6, 5, 2, RITE_ADAMW, RITE_FLOAT32);
    rite_layer *l;
    float L[12], R[10], gL[12], gR[10], L0[12], R0[10];
    double ss;
    int i;
    (void)state;
    d.config = &c;
    assert_int_equal(rite_init(&l, &d), RITE_OK);
    for (i = 0; i < 12; i++) {
        L[i] = -3e38f;
        gL[i] = 1.0f;
    }
    for (i = 0; i < 10; i++) {
        R[i] = 0.5f;
        gR[i] = 1.0f;
    }
    memcpy(L0, L, sizeof L);
    memcpy(R0, R, sizeof R);
    assert_int_equal(rite_prepare_f32(l, L, R, gL, gR, &ss), RITE_OK);
    assert_int_equal(rite_set_lr(l, 3e38), RITE_OK);
    assert_int_equal(rite_apply(l, ss), RITE_ERR_NONFINITE_UPDATE);
    assert_non_null(strstr(rite_last_error(l), "L"));
    assert_memory_equal(L, L0, sizeof L);
    assert_memory_equal(R, R0, sizeof R);
    assert_true(rite_step_count(l) == 0 && rite_is_prepared(l));
    assert_int_equal(rite_set_lr(l, 1e-3), RITE_OK);   /* back to a finite update: the prepare applies */
    assert_int_equal(rite_apply(l, ss), RITE_OK);
    assert_true(rite_step_count(l) == 1);
    assert_true(all_finite_f(L, 12) && all_finite_f(R, 10));
    rite_free(l);
}

static void test_model_adamw_lr_set_after_prepare_is_checked(void **state) {
    rite_lora mods[2];
    rite_model_desc md;
    rite_model *m;
    float a0[8], b0[6], a1[6], b1[8], g[8], copy[2][8];
    float *A[2], *B[2], *gA[2], *gB[2];
    char detail[256];
    double ss;
    int i;
    (void)state;
    mods[0] = rite_lora_peft(4, 3, 2);   /* A 2 x 4, B 3 x 2 */
    mods[1] = rite_lora_peft(3, 4, 2);   /* A 2 x 3, B 4 x 2 */
    memset(&md, 0, sizeof md);
    md.layers = mods;
    md.n_layers = 2;
    md.optimizer = RITE_ADAMW;
    assert_int_equal(rite_model_init(&m, &md, detail, sizeof detail), RITE_OK);
    for (i = 0; i < 8; i++) {
        a0[i] = 0.25f;
        b1[i] = -3e38f;   /* layer 1's lora_B overflows with a huge lr */
        g[i] = 1.0f;
    }
    for (i = 0; i < 6; i++) b0[i] = a1[i] = 0.5f;
    A[0] = a0; B[0] = b0; A[1] = a1; B[1] = b1;
    gA[0] = gA[1] = gB[0] = gB[1] = g;
    memcpy(copy[0], a0, sizeof a0);
    memcpy(copy[1], b1, sizeof b1);
    assert_int_equal(rite_model_prepare_f32(m, A, B, gA, gB, &ss), RITE_OK);
    assert_int_equal(rite_model_set_lr(m, 3e38), RITE_OK);
    assert_int_equal(rite_model_apply(m, ss), RITE_ERR_NONFINITE_UPDATE);
    assert_non_null(strstr(rite_model_last_error(m), "layer 1"));
    assert_memory_equal(a0, copy[0], sizeof a0);   /* layer 0, fine on its own, unchanged too */
    assert_memory_equal(b1, copy[1], sizeof b1);
    assert_true(rite_model_step_count(m) == 0);
    rite_model_free(m);
}

/* ---- a model whose layer's step would overflow, or might ---- */

/* two float layers in PEFT storage; layer 1's lr scaled by lr_scale1, its
   factors by f1 and its gradients by g1 */
typedef struct two_layers {
    rite_lora mods[2];
    float *buf[4][2];      /* A, B, gA, gB */
    size_t n[2][2];        /* elements of A and B of each layer */
} two_layers;

static void two_layers_make(two_layers *t, double lr_scale1, double f1, double g1) {
    int i, k;
    t->mods[0] = rite_lora_peft(24, 20, 4);
    t->mods[1] = rite_lora_peft(16, 12, 3);
    t->mods[1].lr_scale = lr_scale1;
    for (i = 0; i < 2; i++) {
        t->n[i][0] = (size_t)t->mods[i].in_features * (size_t)t->mods[i].r;
        t->n[i][1] = (size_t)t->mods[i].out_features * (size_t)t->mods[i].r;
        for (k = 0; k < 4; k++) {
            t->buf[k][i] = (float *)malloc(t->n[i][k & 1] * sizeof(float));
            assert_non_null(t->buf[k][i]);
            fill_f(t->buf[k][i], t->n[i][k & 1], i == 0 ? (k < 2 ? 1.0 : 0.1) : k < 2 ? f1 : g1,
                   100u + (uint64_t)(4 * i + k));
        }
    }
}

static void two_layers_free(two_layers *t) {
    int i, k;
    for (i = 0; i < 2; i++)
        for (k = 0; k < 4; k++) free(t->buf[k][i]);
}

static rite_model *two_layers_model(two_layers *t) {
    rite_model_desc md;
    rite_model *m = NULL;
    char detail[256];
    memset(&md, 0, sizeof md);
    md.layers = t->mods;
    md.n_layers = 2;
    assert_int_equal(rite_model_init(&m, &md, detail, sizeof detail), RITE_OK);
    return m;
}

static rite_status two_layers_step(rite_model *m, two_layers *t) {
    return rite_model_step_f32(m, t->buf[0], t->buf[1], t->buf[2], t->buf[3]);
}

/* layer 1's lr (3e38, finite in float) and small factors (their T^+
   large) make its new factors overflow: the model's step fails, names
   layer 1, and changes no layer */
static void test_model_overflowing_layer_changes_no_layer(void **state) {
    two_layers t;
    rite_model *m;
    float *copy[2][2];
    int i, k;
    (void)state;
    two_layers_make(&t, 3e41, 1e-2, 1e-3);
    m = two_layers_model(&t);
    for (i = 0; i < 2; i++)
        for (k = 0; k < 2; k++) {
            copy[i][k] = (float *)malloc(t.n[i][k] * sizeof(float));
            memcpy(copy[i][k], t.buf[k][i], t.n[i][k] * sizeof(float));
        }
    assert_int_equal(two_layers_step(m, &t), RITE_ERR_NONFINITE_UPDATE);
    assert_non_null(strstr(rite_model_last_error(m), "layer 1"));
    assert_int_equal(((const rite_layer *)rite_model_layer(m, 1))->safe, 0);   /* the dry run caught it */
    for (i = 0; i < 2; i++) {
        for (k = 0; k < 2; k++) assert_memory_equal(copy[i][k], t.buf[k][i], t.n[i][k] * sizeof(float));
        assert_true(rite_step_count(rite_model_layer(m, i)) == 0);
    }
    assert_true(rite_model_step_count(m) == 0);
    for (i = 0; i < 2; i++)
        for (k = 0; k < 2; k++) free(copy[i][k]);
    rite_model_free(m);
    two_layers_free(&t);
}

/* layer 1's lr is as large, but its gradient so small that the step is
   fine: the bound cannot show it, the dry run does, and the model's step
   equals the layers' own two-phase step */
static void test_model_layer_beyond_its_bound_still_steps(void **state) {
    two_layers t, u;
    rite_model *m;
    rite_layer *lay[2];
    double ss[2], total;
    int i, k, s;
    (void)state;
    two_layers_make(&t, 3e41, 1.0, 1e-30);
    two_layers_make(&u, 3e41, 1.0, 1e-30);
    m = two_layers_model(&t);
    for (i = 0; i < 2; i++) {
        rite_desc d = tu_desc(t.mods[i].in_features, t.mods[i].out_features, t.mods[i].r, RITE_LORA_RITE,
                              RITE_FLOAT32);
        rite_config c = rite_config_default(RITE_LORA_RITE);
        c.lr *= t.mods[i].lr_scale;
        d.layout_L = RITE_RANK_FIRST;
        d.config = &c;
        assert_int_equal(rite_init(&lay[i], &d), RITE_OK);
    }
    for (s = 0; s < 3; s++) {
        assert_int_equal(two_layers_step(m, &t), RITE_OK);
        if (s == 0) assert_int_equal(((const rite_layer *)rite_model_layer(m, 1))->safe, 0);
        for (i = 0; i < 2; i++)
            assert_int_equal(rite_prepare_f32(lay[i], u.buf[0][i], u.buf[1][i], u.buf[2][i], u.buf[3][i], &ss[i]),
                             RITE_OK);
        total = ss[0] + ss[1];
        for (i = 0; i < 2; i++) assert_int_equal(rite_apply(lay[i], total), RITE_OK);
        for (i = 0; i < 2; i++) {
            for (k = 0; k < 2; k++) assert_memory_equal(t.buf[k][i], u.buf[k][i], t.n[i][k] * sizeof(float));
            assert_true(all_finite_f(t.buf[1][i], t.n[i][1]));
        }
    }
    for (i = 0; i < 2; i++) rite_free(lay[i]);
    rite_model_free(m);
    two_layers_free(&t);
    two_layers_free(&u);
}

/* The bound that lets a model skip the dry run must hold whenever it says
   so: over random layers with magnitudes across the whole range of each
   precision, every apply it calls safe succeeds (a property of the bound,
   checked with the implementation's own phases). Under valgrind, whose
   emulation runs OpenBLAS's x87 dnrm2 without extended precision (it
   overflows there for entries above about 1e154), double layers stay
   below that. */
static void bound_case(rite_precision prec, tu_rng *g, long *safe, long *unsafe) {
    int r = 1 + (int)(tu_uniform(g) * 4), m = r + (int)(tu_uniform(g) * 16), n = r + (int)(tu_uniform(g) * 16);
    int vg = getenv("LORA_RITE_VALGRIND") != NULL;
    double emax = prec == RITE_FLOAT32 ? 36 : vg ? 40 : 300, lr_max = prec == RITE_FLOAT32 ? 3e38 : vg ? 1e40 : 1e307;
    rite_desc d = tu_desc(m, n, r, RITE_LORA_RITE, prec);
    rite_config c = rite_config_default(RITE_LORA_RITE);
    rite_layer *l;
    void *buf[4];
    size_t cnt[4], es = prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double), e;
    int k, step;
    double sumsq;
    c.lr = pow(10.0, -6 + tu_uniform(g) * (log10(lr_max) + 6));
    c.weight_decay = tu_uniform(g) < 0.3 ? tu_uniform(g) : 0;
    c.cap = tu_uniform(g) < 0.3 ? pow(10.0, -3 + 6 * tu_uniform(g)) : 0;
    c.balance = tu_uniform(g) < 0.3;
    c.skip = tu_uniform(g) < 0.5 ? 0 : 1.0;
    c.clip = tu_uniform(g) < 0.3 ? 0 : 1.0;
    d.config = &c;
    assert_int_equal(rite_init(&l, &d), RITE_OK);
    cnt[0] = cnt[2] = (size_t)m * (size_t)r;
    cnt[1] = cnt[3] = (size_t)n * (size_t)r;
    for (step = 0; step < 3; step++) {
        for (k = 0; k < 4; k++) {
            double sc = pow(10.0, (2 * tu_uniform(g) - 1) * emax);
            if (step == 0 || k >= 2) {
                if (step == 0) buf[k] = malloc(cnt[k] * es);
                for (e = 0; e < cnt[k]; e++) {
                    double v = sc * tu_normal(g);
                    if (prec == RITE_FLOAT32) ((float *)buf[k])[e] = (float)v;
                    else ((double *)buf[k])[e] = v;
                }
            }
        }
        if (rite__prepare(l, prec, buf[0], buf[1], buf[2], buf[3], &sumsq) != RITE_OK) continue;
        if (rite__apply_begin(l, sumsq) != RITE_OK) continue;
        if (l->safe) {
            rite_status st = rite__lorarite_run(l, 1);
            if (st != RITE_OK) {
                print_error("the bound said safe, the step failed (%s): m %d n %d r %d lr %g\n", rite_status_string(st),
                            m, n, r, c.lr);
                fail();
            }
            l->steps++;
            l->prepared = 0;
            ++*safe;
        } else {
            ++*unsafe;
            l->prepared = 0;
        }
    }
    for (k = 0; k < 4; k++) free(buf[k]);
    rite_free(l);
}

static void test_model_bound_holds_where_it_says_so(void **state) {
    tu_rng g = {99};
    long safe = 0, unsafe = 0;
    int i;
    (void)state;
    for (i = 0; i < 1500; i++) bound_case(i % 2 ? RITE_FLOAT64 : RITE_FLOAT32, &g, &safe, &unsafe);
    print_message("    %ld applies within the bound, %ld beyond it\n", safe, unsafe);
    assert_true(safe > 100 && unsafe > 100);   /* both sides were reached */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_float_layer_with_subnormal_factor_steps),
        cmocka_unit_test(test_float_unmagnified_overflow_skips_the_factor),
        cmocka_unit_test(test_double_unmagnified_overflow_skips_the_factor),
        cmocka_unit_test(test_adamw_checks_each_value_not_their_sum),
        cmocka_unit_test(test_float_layer_refuses_lr_beyond_float),
        cmocka_unit_test(test_adamw_refuses_gradient_sharing_a_factor),
        cmocka_unit_test(test_rite_gradient_may_share_a_factor),
        cmocka_unit_test(test_factors_must_not_overlap),
        cmocka_unit_test(test_zero_config_is_refused),
        cmocka_unit_test(test_config_of_the_other_optimizer_is_refused),
        cmocka_unit_test(test_set_lr_keeps_pending_prepare),
        cmocka_unit_test(test_dropped_prepares_are_counted),
        cmocka_unit_test(test_error_detail_names_the_argument),
        cmocka_unit_test(test_status_texts_cover_what_the_codes_mean),
        cmocka_unit_test(test_adamw_lr_set_after_prepare_is_checked),
        cmocka_unit_test(test_model_adamw_lr_set_after_prepare_is_checked),
        cmocka_unit_test(test_model_overflowing_layer_changes_no_layer),
        cmocka_unit_test(test_model_layer_beyond_its_bound_still_steps),
        cmocka_unit_test(test_model_bound_holds_where_it_says_so),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
