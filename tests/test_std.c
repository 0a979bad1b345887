/* test_std.c - the implementation compiled as strict ISO C.

   Built twice, as test_c99 (-std=c99) and test_c11 (-std=c11), without
   compiler extensions and with -Wall -Wextra -Wpedantic, so the library
   stays portable C. It also runs one first step of each optimizer in each
   precision and checks it against properties derived by hand:

   Standard LoRA init, R = 0 and L full rank, least-squares gradients
   gL = E R = 0 and gR = E^T L with E = -A.
   - LoRA-RITE (SPEC steps 1-14, k = 0 so beta-hat = 0): T_R = 0 gives
     T_R+ = 0, so L does not move. For R, g = gR T_L^-1 = -c A^T U_L (c the
     clip factor), V = g^T g / n, S = g (V^1/2 + eps)^-1, R_new = -lr S T_L^-T.
     Hence Z_new = L R_new^T = -lr U_L S^T, and with lambda_i the
     eigenvalues of V,
       ||Z_new||_F^2 = lr^2 n sum_i lambda_i / (sqrt(lambda_i) + eps)^2,
       <Z_new, A>   = lr c tr(A^T U_L Q U_L^T A) > 0  (a descent direction).
     No QR is needed to get lambda: U_L^T A A^T U_L = T^-T (L^T A A^T L) T^-1
     is similar to X = (L^T L)^-1 (G^T G) with G = A^T L, so lambda_i =
     c^2 eig_i(X) / n, and the clip norm is gamma^2 = ||g||^2 = tr(X).
   - AdamW (t = 1): m-hat = g, v-hat = g^2, so each entry moves by
     -lr g / (|g| + eps) (eps = 1e-8); L (zero gradient) does not move. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

#define M 7
#define N 5
#define RANK 2

static int failures = 0;

#define CHECK(cond, what)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, what); \
            failures++;                                                       \
        }                                                                     \
    } while (0)

static double uniform(unsigned long *state) {
    *state = (*state * 1103515245ul + 12345ul) & 0x7ffffffful;
    return (double)*state / 1073741824.0 - 1.0;
}

/* The problem in double: L0 (M x RANK), A (M x N), gR = -A^T L0. */
static double L0[M * RANK], A[M * N], gR0[N * RANK];

static void make_problem(void) {
    unsigned long s = 2026;
    int i, j, p;
    for (i = 0; i < M * RANK; i++) L0[i] = uniform(&s);
    for (i = 0; i < M * N; i++) A[i] = 0.05 * uniform(&s);
    for (j = 0; j < N; j++)
        for (p = 0; p < RANK; p++) {
            double g = 0;
            for (i = 0; i < M; i++) g -= A[i * N + j] * L0[i * RANK + p];
            gR0[j * RANK + p] = g;
        }
}

/* ||Z_new||_F of the first LoRA-RITE step, from the 2 x 2 matrices above
   (SPEC defaults: clip = 1, skip = 1, eps = 1e-6, eps_root = 0). */
static double rite_first_step_norm(double lr) {
    double B[4] = {0, 0, 0, 0}, C[4] = {0, 0, 0, 0}, X[4], det, tr, disc, gamma, c, sum = 0;
    double eig[2];
    int i, j, p, q;
    for (p = 0; p < RANK; p++)
        for (q = 0; q < RANK; q++) {
            for (i = 0; i < M; i++) B[p * 2 + q] += L0[i * RANK + p] * L0[i * RANK + q];
            for (j = 0; j < N; j++) C[p * 2 + q] += gR0[j * RANK + p] * gR0[j * RANK + q];
        }
    /* X = B^-1 C */
    det = B[0] * B[3] - B[1] * B[2];
    X[0] = (B[3] * C[0] - B[1] * C[2]) / det;
    X[1] = (B[3] * C[1] - B[1] * C[3]) / det;
    X[2] = (-B[2] * C[0] + B[0] * C[2]) / det;
    X[3] = (-B[2] * C[1] + B[0] * C[3]) / det;
    tr = X[0] + X[3];
    disc = sqrt(fmax(tr * tr / 4 - (X[0] * X[3] - X[1] * X[2]), 0));
    eig[0] = tr / 2 + disc;
    eig[1] = tr / 2 - disc;
    gamma = sqrt(tr);
    CHECK(gamma / sqrt((double)(N * RANK)) < 1, "setup: rms of the unmagnified gradient < skip");
    c = gamma > 1 ? 1 / gamma : 1;
    for (i = 0; i < 2; i++) {
        double lambda = c * c * eig[i] / N;
        sum += lambda / ((sqrt(lambda) + 1e-6) * (sqrt(lambda) + 1e-6));
    }
    return lr * sqrt(N * sum);
}

/* Checks the result of one step from (L0, 0): L unchanged, and the RITE or
   AdamW property above for R. tol is relative. */
static void check_step(rite_optimizer opt, const double *L, const double *R, double lr,
                       double tol, const char *name) {
    double znorm2 = 0, inner = 0;
    int i, j, p, same_L = 1, adam_ok = 1;
    for (i = 0; i < M * RANK; i++)
        if (L[i] != L0[i]) same_L = 0;
    CHECK(same_L, name);
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double z = 0;
            for (p = 0; p < RANK; p++) z += L[i * RANK + p] * R[j * RANK + p];
            znorm2 += z * z;
            inner += z * A[i * N + j];
        }
    if (opt == RITE_LORA_RITE) {
        double expect = rite_first_step_norm(lr);
        if (fabs(sqrt(znorm2) - expect) > tol * expect) {
            fprintf(stderr, "%s: ||L R^T|| = %.12g, expected %.12g\n", name,
                    sqrt(znorm2), expect);
            failures++;
        }
        CHECK(inner > 0, name);
    } else {
        for (i = 0; i < N * RANK; i++) {
            double want = -lr * gR0[i] / (fabs(gR0[i]) + 1e-8);
            if (fabs(R[i] - want) > tol * lr) adam_ok = 0;
        }
        CHECK(adam_ok, name);
    }
}

static void run(rite_optimizer opt, rite_precision prec, const char *name) {
    float Lf[M * RANK], Rf[N * RANK], gLf[M * RANK], gRf[N * RANK];
    double Ld[M * RANK], Rd[N * RANK], gLd[M * RANK], gRd[N * RANK];
    double Lout[M * RANK], Rout[N * RANK];
    rite_config config = rite_config_default(opt);
    rite_desc desc = {0};
    rite_layer *layer = NULL;
    rite_status status;
    int i;

    config.lr = 0.1;
    desc.m = M;
    desc.n = N;
    desc.r = RANK;
    desc.optimizer = opt;
    desc.precision = prec;
    desc.config = &config;
    status = rite_init(&layer, &desc);
    CHECK(status == RITE_OK, name);
    if (status != RITE_OK) return;

    for (i = 0; i < M * RANK; i++) {
        Ld[i] = L0[i];
        gLd[i] = 0;
        Lf[i] = (float)L0[i];
        gLf[i] = 0;
    }
    for (i = 0; i < N * RANK; i++) {
        Rd[i] = 0;
        gRd[i] = gR0[i];
        Rf[i] = 0;
        gRf[i] = (float)gR0[i];
    }
    if (prec == RITE_FLOAT64) {
        status = rite_step_f64(layer, Ld, Rd, gLd, gRd);
        for (i = 0; i < M * RANK; i++) Lout[i] = Ld[i];
        for (i = 0; i < N * RANK; i++) Rout[i] = Rd[i];
    } else {
        /* compare against the float-rounded problem */
        /* (a volatile float: GCC 12 -O3 vectorises a double -> float -> double
           round trip without rounding the last elements) */
        for (i = 0; i < M * RANK; i++) {
            volatile float rounded = (float)L0[i];
            L0[i] = (double)rounded;
        }
        status = rite_step_f32(layer, Lf, Rf, gLf, gRf);
        for (i = 0; i < M * RANK; i++) Lout[i] = (double)Lf[i];
        for (i = 0; i < N * RANK; i++) Rout[i] = (double)Rf[i];
    }
    CHECK(status == RITE_OK, rite_status_string(status));
    CHECK(rite_step_count(layer) == 1, name);
    if (status == RITE_OK)
        check_step(opt, Lout, Rout, config.lr, prec == RITE_FLOAT64 ? 1e-9 : 1e-4, name);
    rite_free(layer);
    make_problem(); /* undo the float rounding of L0 */
}

#if __STDC_VERSION__ >= 201112L
/* C11: the type-generic rite_step / rite_prepare call the _f32 / _f64
   function of the buffer type: the same bits as calling it directly. */
static void check_generic(void) {
    float Lf[2][M * RANK], Rf[2][N * RANK], gLf[M * RANK], gRf[N * RANK];
    double Ld[2][M * RANK], Rd[2][N * RANK], gLd[M * RANK], gRd[N * RANK], sq = 0;
    rite_layer *lay[4];
    rite_desc desc = {0};
    int i, k;
    desc.m = M;
    desc.n = N;
    desc.r = RANK;
    for (k = 0; k < 4; k++) {
        desc.precision = k < 2 ? RITE_FLOAT32 : RITE_FLOAT64;
        CHECK(rite_init(&lay[k], &desc) == RITE_OK, "generic: init");
    }
    for (k = 0; k < 2; k++) {
        for (i = 0; i < M * RANK; i++) {
            Lf[k][i] = (float)L0[i];
            Ld[k][i] = L0[i];
            gLf[i] = (float)(0.01 * L0[i]);
            gLd[i] = 0.01 * L0[i];
        }
        for (i = 0; i < N * RANK; i++) {
            Rf[k][i] = (float)(0.1 * gR0[i]);
            Rd[k][i] = 0.1 * gR0[i];
            gRf[i] = (float)gR0[i];
            gRd[i] = gR0[i];
        }
    }
    CHECK(rite_step(lay[0], Lf[0], Rf[0], gLf, gRf) == RITE_OK, "generic rite_step, float");
    CHECK(rite_step_f32(lay[1], Lf[1], Rf[1], gLf, gRf) == RITE_OK, "rite_step_f32");
    CHECK(rite_step(lay[2], Ld[0], Rd[0], gLd, gRd) == RITE_OK, "generic rite_step, double");
    CHECK(rite_step_f64(lay[3], Ld[1], Rd[1], gLd, gRd) == RITE_OK, "rite_step_f64");
    CHECK(memcmp(Lf[0], Lf[1], sizeof Lf[0]) == 0 && memcmp(Rf[0], Rf[1], sizeof Rf[0]) == 0,
          "generic rite_step, float: same bits as rite_step_f32");
    CHECK(memcmp(Ld[0], Ld[1], sizeof Ld[0]) == 0 && memcmp(Rd[0], Rd[1], sizeof Rd[0]) == 0,
          "generic rite_step, double: same bits as rite_step_f64");
    CHECK(rite_prepare(lay[0], Lf[0], Rf[0], gLf, gRf, &sq) == RITE_OK && sq > 0, "generic rite_prepare, float");
    CHECK(rite_prepare(lay[2], Ld[0], Rd[0], gLd, gRd, &sq) == RITE_OK && sq > 0, "generic rite_prepare, double");
    CHECK(rite_prepare(lay[0], Ld[0], Rd[0], gLd, gRd, &sq) == RITE_ERR_PRECISION,
          "generic rite_prepare: double buffers on a float layer");
    for (k = 0; k < 4; k++) rite_free(lay[k]);
}
#endif

int main(void) {
    make_problem();
#if __STDC_VERSION__ >= 201112L
    check_generic();
#endif
    run(RITE_LORA_RITE, RITE_FLOAT64, "LoRA-RITE f64");
    run(RITE_LORA_RITE, RITE_FLOAT32, "LoRA-RITE f32");
    run(RITE_ADAMW, RITE_FLOAT64, "AdamW f64");
    run(RITE_ADAMW, RITE_FLOAT32, "AdamW f32");
    CHECK(rite_status_string(RITE_ERR_RANK) != NULL, "rite_status_string");
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("C%ld: all checks passed\n", (long)__STDC_VERSION__);
    return 0;
}
