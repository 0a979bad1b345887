/* main.c - one LoRA-RITE step from a program built against lora_rite.
   Exits 0 when the step succeeds and changes both factors (all entries
   finite). Every factor entry is nonzero and so is the least-squares
   gradient, so a step with lr > 0 must move L and R. */
#include <math.h>
#include <stdio.h>

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

#define M 6
#define N 5
#define RANK 2

int main(void) {
    double L[M * RANK], R[N * RANK], L0[M * RANK], R0[N * RANK];
    double gL[M * RANK] = {0}, gR[N * RANK] = {0}, A[M * N];
    rite_desc desc = {0};
    rite_layer *layer;
    rite_status status;
    int i, j, p, moved_L = 0, moved_R = 0, finite = 1;

    for (i = 0; i < M * RANK; i++) L0[i] = L[i] = 0.1 * (i % 5 + 1);
    for (i = 0; i < N * RANK; i++) R0[i] = R[i] = 0.1 * ((i * 3) % 7 + 1) - 0.35;
    for (i = 0; i < M * N; i++) A[i] = (i % 2 ? 0.05 : -0.05) * (i % 3 + 1);
    /* least squares: E = L R^T - A, gL = E R, gR = E^T L */
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            double e = -A[i * N + j];
            for (p = 0; p < RANK; p++) e += L[i * RANK + p] * R[j * RANK + p];
            for (p = 0; p < RANK; p++) {
                gL[i * RANK + p] += e * R[j * RANK + p];
                gR[j * RANK + p] += e * L[i * RANK + p];
            }
        }

    desc.m = M;
    desc.n = N;
    desc.r = RANK;
    desc.precision = RITE_FLOAT64;
    status = rite_init(&layer, &desc);
    if (status == RITE_OK) status = rite_step_f64(layer, L, R, gL, gR);
    rite_free(layer);
    if (status != RITE_OK) {
        fprintf(stderr, "consumer: %s\n", rite_status_string(status));
        return 1;
    }
    for (i = 0; i < M * RANK; i++) {
        moved_L |= L[i] != L0[i];
        finite &= isfinite(L[i]) != 0;
    }
    for (i = 0; i < N * RANK; i++) {
        moved_R |= R[i] != R0[i];
        finite &= isfinite(R[i]) != 0;
    }
    printf("consumer: lora_rite %d.%d.%d, one step: L %s, R %s\n", LORA_RITE_VERSION_MAJOR,
           LORA_RITE_VERSION_MINOR, LORA_RITE_VERSION_PATCH, moved_L ? "moved" : "UNCHANGED",
           moved_R ? "moved" : "UNCHANGED");
    return moved_L && moved_R && finite ? 0 : 1;
}
