/* quickstart.c - the smallest complete use of lora_rite.

   A "network" of two LoRA modules, stored as PEFT stores them (lora_A is
   r x in, lora_B is out x r, row-major), is fitted to two random targets
   T_i (out x in) of rank 4 by minimising the least-squares loss
       0.5 * sum_i ||B_i A_i - T_i||_F^2
   with LoRA-RITE, from the standard LoRA initialisation (B = 0, A small and
   random). The targets have the adapters' rank, so the loss can reach zero.
   One rite_model steps both modules (their gradients are clipped together)
   with a warmup and cosine-decay learning rate (rite_schedule). Every 10
   steps it prints the loss, the gradient norm and the clip factor; at the
   end it writes the model's checkpoint (factors and optimizer state) to
   quickstart.ckpt in the working directory.

   Run it with CMake (target quickstart). The part between the snippet
   markers is the usage example of README.md. */
#include <stdio.h>

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

#define NL 2      /* LoRA modules */
#define RANK 4    /* LoRA rank r */
#define MAXK 64   /* the largest in or out */

static const int IN[NL] = {64, 40};    /* in_features of each module */
static const int OUT[NL] = {48, 32};   /* out_features */

/* Factors and gradients: lora_A[p * in + k] (r x in), lora_B[j * RANK + p] (out x r). */
static float fA[NL][RANK * MAXK], fB[NL][MAXK * RANK], fgA[NL][RANK * MAXK], fgB[NL][MAXK * RANK];
static float T[NL][MAXK * MAXK], E[MAXK * MAXK], P[MAXK * RANK], Q[MAXK * RANK];

/* The arrays of per-module buffers that rite_model_step_f32 takes. */
static float *A[NL] = {fA[0], fA[1]}, *B[NL] = {fB[0], fB[1]};
static float *gA[NL] = {fgA[0], fgA[1]}, *gB[NL] = {fgB[0], fgB[1]};

/* Uniform in [-scale, scale), from a fixed seed: every run prints the same. */
static float uniform(float scale) {
    static unsigned long state = 12345;
    state = (state * 1103515245ul + 12345ul) & 0x7ffffffful;
    return scale * ((float)state / 1073741824.0f - 1.0f);
}

/* Module i's loss 0.5 ||E||^2 with E = B A - T (out x in), and its gradients
   gA = B^T E (r x in), gB = E A^T (out x r). */
static float module_loss_and_gradients(int i) {
    int in = IN[i], out = OUT[i], j, k, p;
    float loss = 0;
    for (j = 0; j < out; j++)
        for (k = 0; k < in; k++) {
            float z = 0;
            for (p = 0; p < RANK; p++) z += fB[i][j * RANK + p] * fA[i][p * in + k];
            E[j * in + k] = z - T[i][j * in + k];
            loss += 0.5f * E[j * in + k] * E[j * in + k];
        }
    for (p = 0; p < RANK * in; p++) fgA[i][p] = 0;
    for (p = 0; p < out * RANK; p++) fgB[i][p] = 0;
    for (j = 0; j < out; j++)
        for (k = 0; k < in; k++)
            for (p = 0; p < RANK; p++) {
                fgA[i][p * in + k] += fB[i][j * RANK + p] * E[j * in + k];
                fgB[i][j * RANK + p] += E[j * in + k] * fA[i][p * in + k];
            }
    return loss;
}

/* The "network": the loss of every module, and every gradient. */
static float loss_and_gradients(void) {
    float loss = 0;
    int i;
    for (i = 0; i < NL; i++) loss += module_loss_and_gradients(i);
    return loss;
}

/* The targets T_i = P Q^T, and the LoRA initialisation: A small and random, B = 0. */
static void make_problem(void) {
    int i, j, k, p;
    for (i = 0; i < NL; i++) {
        for (p = 0; p < OUT[i] * RANK; p++) P[p] = uniform(0.3f);
        for (p = 0; p < IN[i] * RANK; p++) Q[p] = uniform(0.3f);
        for (j = 0; j < OUT[i]; j++)
            for (k = 0; k < IN[i]; k++)
                for (p = 0; p < RANK; p++) T[i][j * IN[i] + k] += P[j * RANK + p] * Q[k * RANK + p];
        for (p = 0; p < RANK * IN[i]; p++) fA[i][p] = uniform(0.01f);
    }
}

int main(void) {
    make_problem();

    /* snippet:usage begin */
    rite_lora layers[NL];                   /* one per LoRA module: sizes and storage */
    for (int i = 0; i < NL; i++) layers[i] = rite_lora_peft(IN[i], OUT[i], RANK);

    rite_model_desc desc = {0};             /* zero fields mean defaults: LoRA-RITE, */
    desc.layers = layers;                   /* float, SPEC.md's config, one thread */
    desc.n_layers = NL;

    rite_schedule schedule = {0};           /* lr: 10 steps of warmup, then a cosine decay */
    schedule.lr = 0.02; schedule.warmup_steps = 10; schedule.total_steps = 100;
    schedule.final_lr = 0.002; schedule.decay = RITE_DECAY_COSINE;

    rite_model *model;
    char detail[256];
    rite_status status = rite_model_init(&model, &desc, detail, sizeof detail);
    if (status != RITE_OK) {                /* the desc's problem: which layer, which field */
        fprintf(stderr, "lora_rite: %s (%s)\n", rite_status_string(status), detail);
        return 1;
    }
    for (int step = 0; status == RITE_OK && step <= 100; step++) {
        float loss = loss_and_gradients();  /* your model: fills gA and gB */
        status = rite_model_set_lr(model, rite_schedule_lr(&schedule, step));
        if (status == RITE_OK)              /* every module, clipped together; updates A and B */
            status = rite_model_step_f32(model, A, B, gA, gB);
        rite_diagnostics diag;
        if (status == RITE_OK && step % 10 == 0 && rite_model_diagnostics(model, &diag) == RITE_OK)
            printf("step %3d  loss %.3e  grad norm %.2e  clip %.2f\n", step, loss, diag.grad_norm, diag.clip_factor);
    }
    if (status == RITE_OK)                  /* every module's factors and optimizer state */
        status = rite_model_checkpoint_save_file(model, A, B, "quickstart.ckpt");
    if (status != RITE_OK)                  /* what went wrong: which layer, buffer or value */
        fprintf(stderr, "lora_rite: %s (%s)\n", rite_status_string(status), rite_model_last_error(model));
    rite_model_free(model);
    if (status != RITE_OK) return 1;
    /* snippet:usage end */
    return 0;
}
