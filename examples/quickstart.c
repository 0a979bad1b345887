/* quickstart.c - the smallest complete use of lora_rite.

   One LoRA layer Z = L R^T (L is 64 x 4, R is 48 x 4) is fitted to a random
   64 x 48 target A of rank 4 by minimising the least-squares loss
       0.5 * ||L R^T - A||_F^2
   with LoRA-RITE, from the standard LoRA initialisation (R = 0, L small and
   random). The target has the adapter's rank, so the loss can reach zero.
   The loss is printed every 10 steps.

   Run it with `./run demo`, or build it with CMake (target quickstart).
   The part between the snippet markers is the usage example of README.md. */
#include <stdio.h>

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

#define M 64    /* rows of L and of the target */
#define N 48    /* rows of R, columns of the target */
#define RANK 4  /* LoRA rank r */

/* Factors and gradients, row-major: L[i * RANK + p], R[j * RANK + p]. */
static float L[M * RANK], R[N * RANK], gL[M * RANK], gR[N * RANK];
static float A[M * N], E[M * N], P[M * RANK], Q[N * RANK];

/* Uniform in [-scale, scale), from a fixed seed: every run prints the same. */
static float uniform(float scale) {
    static unsigned long state = 12345;
    state = (state * 1103515245ul + 12345ul) & 0x7ffffffful;
    return scale * ((float)state / 1073741824.0f - 1.0f);
}

/* Loss 0.5 * ||E||^2 with E = L R^T - A, and its gradients gL = E R, gR = E^T L. */
static float loss_and_gradients(void) {
    float loss = 0;
    int i, j, p;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++) {
            float z = 0;
            for (p = 0; p < RANK; p++) z += L[i * RANK + p] * R[j * RANK + p];
            E[i * N + j] = z - A[i * N + j];
            loss += 0.5f * E[i * N + j] * E[i * N + j];
        }
    for (i = 0; i < M * RANK; i++) gL[i] = 0;
    for (j = 0; j < N * RANK; j++) gR[j] = 0;
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++)
            for (p = 0; p < RANK; p++) {
                gL[i * RANK + p] += E[i * N + j] * R[j * RANK + p];
                gR[j * RANK + p] += E[i * N + j] * L[i * RANK + p];
            }
    return loss;
}

int main(void) {
    int i, j, p;
    for (i = 0; i < M * RANK; i++) P[i] = uniform(0.3f);  /* the target A = P Q^T */
    for (j = 0; j < N * RANK; j++) Q[j] = uniform(0.3f);
    for (i = 0; i < M; i++)
        for (j = 0; j < N; j++)
            for (p = 0; p < RANK; p++) A[i * N + j] += P[i * RANK + p] * Q[j * RANK + p];
    for (i = 0; i < M * RANK; i++) L[i] = uniform(0.01f); /* LoRA init: L small, R = 0 */

    /* snippet:usage begin */
    rite_config config = rite_config_default(RITE_LORA_RITE);
    config.lr = 0.01;

    rite_desc desc = {0};                  /* zero fields mean defaults */
    desc.m = M; desc.n = N; desc.r = RANK; /* L: M x RANK, R: N x RANK, row-major */
    desc.config = &config;

    rite_layer *layer;
    rite_status status = rite_init(&layer, &desc);
    for (int step = 0; status == RITE_OK && step <= 100; step++) {
        float loss = loss_and_gradients();   /* your model: fills gL and gR */
        if (step % 10 == 0) printf("step %3d  loss %.3e\n", step, loss);
        status = rite_step_f32(layer, L, R, gL, gR);   /* updates L and R */
    }
    if (status != RITE_OK)   /* what went wrong, and the detail: which buffer, field or value */
        fprintf(stderr, "lora_rite: %s (%s)\n", rite_status_string(status), rite_last_error(layer));
    rite_free(layer);
    if (status != RITE_OK) return 1;
    /* snippet:usage end */
    return 0;
}
