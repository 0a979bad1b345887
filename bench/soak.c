/* soak.c - a long run with extreme but legal settings, to show that the
   factors and the optimizer state stay finite and that training still gets
   somewhere.

   Six single-precision LoRA layers (five LoRA-RITE with different options,
   one AdamW) each fit a rank-limited target A with the loss
   0.5 ||L R^T - A||^2. They start from the standard LoRA initialisation
   (R = 0), from an L of condition number 1e6 with an R of repeated columns
   (rank one), from an L with zero columns, and from small random factors.
   The run is a number of cycles; in each, the learning rate rises from 1e-6
   to 1 and stays there for a while, then the gradients are multiplied by
   1e+15 and by 1e-30 (as a loss scale gone wrong would do), and the rate
   decays back to 1e-6 along a cosine. The last fifth of the run is a plain
   schedule from 1e-2 down to 1e-4. Every 997th step one layer's gradient
   holds a NaN or an Inf.

   The loop is what a trainer does: compute the loss and gradients, prepare
   every layer, skip the whole step when a gradient is not finite, otherwise
   apply every prepared layer with the global sum of squares (clipping over
   all layers); a layer whose own prepare or apply fails sits that step out.
   (The unguarded layer below is a model of its own: rite_step_f32, clipped
   by itself; with the others, its huge gradients would clip them to nothing.)
   Every 50 steps a layer whose loss has not grown keeps a checkpoint of
   its state and a copy of its factors. When its loss exceeds ten times the
   loss kept there plus a thousandth of its starting loss (a learning rate
   of 1 makes that happen; the added thousandth keeps rounding noise near a
   zero loss from counting), it goes back to them.

   Checked after every call (the program exits non-zero if any fails):
   - a call that fails changes neither the factors nor the state
     (rite_state_copy bytes) nor the step count;
   - after a successful apply every factor element is finite, the state is
     finite (a checkpoint of it loads into a twin layer, and the load
     checks every number), and the step count went up by one;
   - at the end the loss of every guarded layer is no higher than at the
     start. One LoRA-RITE layer (skip and clipping off) is never taken
     back: it spends much of the run with factors near the float range,
     where steps fail (RITE_ERR_NONFINITE_UPDATE, or _GRADIENT when the
     gradient itself overflows); it must stay finite and unchanged by those
     failures, but need not improve.
   Reported: the loss at start and end, the time, and how many calls ended
   with each status code.

   usage: soak [--steps N] [--short] [--seed S] [--progress]
          (default 100000 steps; --short: 8000, for the test suite) */
#include "lora_rite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

enum { INIT_LORA, INIT_ILL, INIT_ZERO_COLS, INIT_RANDOM };

#define KEEP_EVERY 50   /* steps between the checkpoints kept to go back to */

typedef struct soak_spec {
    const char *name;
    rite_optimizer opt;
    int m, n, r, r_true;
    rite_layout layout_L, layout_R;
    int pad;                       /* extra elements per row of storage */
    int keep_basis;
    int init;
    double skip, clip, cap, weight_decay, eps_root;   /* LoRA-RITE's options (AdamW: weight_decay only) */
    int escape, relative_eps, balance;
    int guarded;                   /* the trainer goes back to a checkpoint when the loss explodes */
} soak_spec;

static const soak_spec specs[] = {
    /* name             opt             m   n   r rt  layout_L         layout_R        pad kb init */
    {"rite-lora-init",  RITE_LORA_RITE, 48, 32, 4, 4, RITE_RANK_LAST,  RITE_RANK_LAST,  0, 0, INIT_LORA,
     1.0, 1.0, 0.0, 0.0, 0.0, 0, 0, 0, 1},
    {"rite-ill-cond",   RITE_LORA_RITE, 32, 40, 6, 6, RITE_RANK_FIRST, RITE_RANK_LAST,  3, 0, INIT_ILL,
     1.0, 1.0, 0.0, 0.0, 0.0, 1, 0, 0, 1},
    {"rite-keep-basis", RITE_LORA_RITE, 24, 24, 8, 3, RITE_RANK_LAST,  RITE_RANK_FIRST, 1, 1, INIT_ZERO_COLS,
     1.0, 1.0, 1.0, 1e-4, 1e-8, 1, 1, 0, 1},
    {"rite-no-skip",    RITE_LORA_RITE, 40, 16, 4, 2, RITE_RANK_LAST,  RITE_RANK_LAST,  0, 0, INIT_RANDOM,
     0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 1, 1},
    {"adamw",           RITE_ADAMW,     40, 24, 4, 4, RITE_RANK_FIRST, RITE_RANK_FIRST, 2, 0, INIT_LORA,
     0.0, 0.0, 0.0, 1e-4, 0.0, 0, 0, 0, 1},
    /* never taken back: it lives at the edge of the float range */
    {"rite-unguarded",  RITE_LORA_RITE, 40, 16, 4, 2, RITE_RANK_LAST,  RITE_RANK_FIRST, 0, 0, INIT_RANDOM,
     0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 1, 0},
};
#define NL ((int)(sizeof specs / sizeof specs[0]))

typedef struct soak_layer {
    const soak_spec *sp;
    rite_layer *l, *twin;          /* twin: where checkpoints are loaded to check them */
    int ld[2];
    size_t cnt[2];                 /* elements of each factor (and gradient) buffer */
    float *X[2], *G[2];
    double *A, *Ld, *Rd, *gL, *gR, *work;   /* logical, double */
    double loss0, loss_min;
    long long ok_steps;            /* what rite_step_count must say */
    long applied;                  /* successful applies, all told */
    unsigned char *state, *state2, *ckpt, *xsave[2];
    size_t state_n, ckpt_n;
    unsigned char *good_ckpt, *good_x[2];   /* the last good point, to go back to */
    double good_loss;
    long good_t, rollbacks;
} soak_layer;

static long status_count[RITE_STATUS_COUNT + 1];
static long violations;

#define SOAK_CHECK(cond, layer, step)                                                           \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            if (violations++ < 20)                                                              \
                fprintf(stderr, "soak: step %ld, layer %s: violated: %s (%s:%d)\n", (long)(step), \
                        (layer)->sp->name, #cond, __FILE__, __LINE__);                          \
        }                                                                                       \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "soak: out of memory\n");
        exit(2);
    }
    return p;
}

static void count_status(rite_status st)
{
    status_count[(unsigned)st < RITE_STATUS_COUNT ? (int)st : RITE_STATUS_COUNT]++;
}

/* columns of x (k x r logical) orthonormal, by modified Gram-Schmidt */
static void orthonormalize(double *x, int k, int r)
{
    int i, j, p;
    for (j = 0; j < r; j++) {
        double nrm = 0;
        for (p = 0; p < j; p++) {
            double d = 0;
            for (i = 0; i < k; i++) d += x[i * r + j] * x[i * r + p];
            for (i = 0; i < k; i++) x[i * r + j] -= d * x[i * r + p];
        }
        for (i = 0; i < k; i++) nrm += x[i * r + j] * x[i * r + j];
        nrm = sqrt(nrm);
        for (i = 0; i < k; i++) x[i * r + j] /= nrm;
    }
}

static void to_storage(soak_layer *s, int side)
{
    const soak_spec *sp = s->sp;
    int k = side ? sp->n : sp->m;
    tu_to_layout_f(side ? s->Rd : s->Ld, k, sp->r, side ? sp->layout_R : sp->layout_L, s->ld[side], s->X[side]);
}

static void from_storage(soak_layer *s)
{
    const soak_spec *sp = s->sp;
    tu_from_layout_f(s->X[0], sp->m, sp->r, sp->layout_L, s->ld[0], s->Ld);
    tu_from_layout_f(s->X[1], sp->n, sp->r, sp->layout_R, s->ld[1], s->Rd);
}

static int factors_finite(const soak_layer *s)
{
    int side;
    size_t i;
    for (side = 0; side < 2; side++)
        for (i = 0; i < s->cnt[side]; i++)
            if (!isfinite(s->X[side][i])) return 0;   /* the padding holds 0 */
    return 1;
}

static void make_layer(soak_layer *s, const soak_spec *sp, tu_rng *g)
{
    rite_desc d;
    rite_config c = rite_config_default(sp->opt);
    double *U = NULL, *V = NULL, nrm = 0;
    int side, i, j, p, m = sp->m, n = sp->n, r = sp->r;
    memset(s, 0, sizeof *s);
    s->sp = sp;
    c.weight_decay = sp->weight_decay;
    if (sp->opt == RITE_LORA_RITE) {
#define SOAK_OPTION_(field) c.field = sp->field;
        TU_RITE_FIELDS(SOAK_OPTION_)
#undef SOAK_OPTION_
    }
    d = tu_desc(m, n, r, sp->opt, RITE_FLOAT32);
    d.layout_L = sp->layout_L;
    d.layout_R = sp->layout_R;
    s->ld[0] = (sp->layout_L == RITE_RANK_LAST ? r : m) + sp->pad;
    s->ld[1] = (sp->layout_R == RITE_RANK_LAST ? r : n) + sp->pad;
    d.ld_L = s->ld[0];
    d.ld_R = s->ld[1];
    d.keep_basis = sp->keep_basis;
    d.config = &c;
    if (rite_init(&s->l, &d) != RITE_OK || rite_init(&s->twin, &d) != RITE_OK) {
        fprintf(stderr, "soak: rite_init failed for %s\n", sp->name);
        exit(2);
    }
    for (side = 0; side < 2; side++) {
        int k = side ? n : m;
        rite_layout lay = side ? sp->layout_R : sp->layout_L;
        s->cnt[side] = tu_storage_count(lay, s->ld[side], k, r);
        s->X[side] = (float *)xmalloc(s->cnt[side] * sizeof(float));
        s->G[side] = (float *)xmalloc(s->cnt[side] * sizeof(float));
        s->xsave[side] = (unsigned char *)xmalloc(s->cnt[side] * sizeof(float));
        s->good_x[side] = (unsigned char *)xmalloc(s->cnt[side] * sizeof(float));
        memset(s->X[side], 0, s->cnt[side] * sizeof(float));
        memset(s->G[side], 0, s->cnt[side] * sizeof(float));
    }
    s->A = (double *)xmalloc((size_t)m * n * sizeof(double));
    s->Ld = (double *)xmalloc((size_t)m * r * sizeof(double));
    s->Rd = (double *)xmalloc((size_t)n * r * sizeof(double));
    s->gL = (double *)xmalloc((size_t)m * r * sizeof(double));
    s->gR = (double *)xmalloc((size_t)n * r * sizeof(double));
    s->work = (double *)xmalloc((size_t)m * n * sizeof(double));
    s->state_n = rite_state_size(s->l);
    s->state = (unsigned char *)xmalloc(s->state_n);
    s->state2 = (unsigned char *)xmalloc(s->state_n);
    s->ckpt_n = rite_checkpoint_size(s->l);
    s->ckpt = (unsigned char *)xmalloc(s->ckpt_n);
    s->good_ckpt = (unsigned char *)xmalloc(s->ckpt_n);

    /* target: U diag(decaying) V^T of rank r_true, scaled to ||A||_F = 1 */
    U = (double *)xmalloc((size_t)m * sp->r_true * sizeof(double));
    V = (double *)xmalloc((size_t)n * sp->r_true * sizeof(double));
    tu_fill_normal(g, U, (size_t)m * sp->r_true, 1.0);
    tu_fill_normal(g, V, (size_t)n * sp->r_true, 1.0);
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            double v = 0;
            for (p = 0; p < sp->r_true; p++) v += U[i * sp->r_true + p] * V[j * sp->r_true + p] / (1.0 + p);
            s->A[i * n + j] = v;
            nrm += v * v;
        }
    for (i = 0; i < m * n; i++) s->A[i] /= sqrt(nrm);
    free(U);
    free(V);

    /* start */
    tu_fill_normal(g, s->Ld, (size_t)m * r, 1.0 / sqrt((double)m));
    tu_fill_normal(g, s->Rd, (size_t)n * r, 1.0 / sqrt((double)n));
    switch (sp->init) {
    case INIT_LORA:        /* R = 0, as PEFT initialises lora_B */
        memset(s->Rd, 0, (size_t)n * r * sizeof(double));
        break;
    case INIT_ILL:         /* L: condition number 1e6; R: every column the same (rank one) */
        orthonormalize(s->Ld, m, r);
        for (j = 0; j < r; j++)
            for (i = 0; i < m; i++) s->Ld[i * r + j] *= pow(10.0, -6.0 * j / (r - 1));
        for (i = 0; i < n; i++)
            for (j = 1; j < r; j++) s->Rd[i * r + j] = s->Rd[i * r];
        break;
    case INIT_ZERO_COLS:   /* L: half of the columns zero (rank r/2) */
        for (j = r / 2; j < r; j++)
            for (i = 0; i < m; i++) s->Ld[i * r + j] = 0;
        break;
    default:
        for (i = 0; i < m * r; i++) s->Ld[i] *= 0.1;
        for (i = 0; i < n * r; i++) s->Rd[i] *= 0.1;
        break;
    }
    to_storage(s, 0);
    to_storage(s, 1);
    from_storage(s);   /* the float values */
    s->loss0 = tu_lsq_loss_grad(s->Ld, s->Rd, s->A, m, n, r, NULL, NULL, s->work);
    s->loss_min = s->loss0;
}

static void free_layer(soak_layer *s)
{
    void *owned[] = {s->X[0], s->X[1], s->G[0], s->G[1], s->xsave[0], s->xsave[1], s->good_x[0], s->good_x[1],
                     s->A, s->Ld, s->Rd, s->gL, s->gR, s->work, s->state, s->state2, s->ckpt, s->good_ckpt};
    size_t i;
    rite_free(s->l);
    rite_free(s->twin);
    for (i = 0; i < sizeof owned / sizeof *owned; i++) free(owned[i]);
}

/* keep the state and the factors as the point to go back to */
static void keep_good(soak_layer *s, long t, double loss)
{
    int side;
    for (side = 0; side < 2; side++) memcpy(s->good_x[side], s->X[side], s->cnt[side] * sizeof(float));
    SOAK_CHECK(rite_checkpoint_save(s->l, s->good_ckpt, s->ckpt_n) == RITE_OK, s, t);
    s->good_loss = loss;
    s->good_t = t;
}

/* go back to the kept state and factors */
static void roll_back(soak_layer *s, long t)
{
    int side;
    long long k;
    SOAK_CHECK(rite_checkpoint_load(s->l, s->good_ckpt, s->ckpt_n) == RITE_OK, s, t);
    for (side = 0; side < 2; side++) memcpy(s->X[side], s->good_x[side], s->cnt[side] * sizeof(float));
    memcpy(&k, s->good_ckpt + 56, sizeof k);   /* the step count in the checkpoint header */
    SOAK_CHECK(rite_step_count(s->l) == k, s, t);
    s->ok_steps = rite_step_count(s->l);
    s->good_t = t;
    s->rollbacks++;
}

/* the schedule: learning rate and gradient scale at step t of T */
static void schedule(long t, long T, long cycle_len, double *lr, double *gscale)
{
    const double pi = 3.14159265358979323846;
    long tail = T / 5, c;
    double u;
    *gscale = 1.0;
    if (t >= T - tail) {   /* the last fifth: 1e-2 down to 1e-4 */
        u = (double)(t - (T - tail)) / (double)tail;
        *lr = 1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + cos(pi * u));
        return;
    }
    c = t % cycle_len;
    u = (double)c / (double)cycle_len;
    if (u < 0.15) {                   /* warm-up, 1e-6 to 1, log-linear */
        *lr = pow(10.0, -6.0 + 6.0 * u / 0.15);
    } else if (u < 0.20) {            /* the largest rate */
        *lr = 1.0;
    } else if (u < 0.30) {            /* huge gradients */
        *lr = 1e-2;
        *gscale = 1e15;
    } else if (u < 0.40) {            /* tiny gradients */
        *lr = 1e-2;
        *gscale = 1e-30;
    } else {                          /* cosine from 1e-2 down to 1e-6 */
        double v = (u - 0.40) / 0.60;
        *lr = 1e-6 + 0.5 * (1e-2 - 1e-6) * (1 + cos(pi * v));
    }
}

static void snapshot(soak_layer *s)
{
    int side;
    for (side = 0; side < 2; side++) memcpy(s->xsave[side], s->X[side], s->cnt[side] * sizeof(float));
    if (rite_state_copy(s->l, s->state, s->state_n) != RITE_OK) {
        fprintf(stderr, "soak: rite_state_copy failed\n");
        exit(2);
    }
}

static void check_unchanged(soak_layer *s, long t)
{
    int side;
    for (side = 0; side < 2; side++)
        SOAK_CHECK(!memcmp(s->xsave[side], s->X[side], s->cnt[side] * sizeof(float)), s, t);
    SOAK_CHECK(rite_state_copy(s->l, s->state2, s->state_n) == RITE_OK, s, t);
    SOAK_CHECK(!memcmp(s->state, s->state2, s->state_n), s, t);
    SOAK_CHECK(rite_step_count(s->l) == s->ok_steps, s, t);
}

/* after a successful apply: finite factors and state, one more step */
static void check_stepped(soak_layer *s, long t)
{
    rite_status st;
    s->ok_steps++;
    s->applied++;
    SOAK_CHECK(factors_finite(s), s, t);
    SOAK_CHECK(rite_step_count(s->l) == s->ok_steps, s, t);
    SOAK_CHECK(rite_checkpoint_save(s->l, s->ckpt, s->ckpt_n) == RITE_OK, s, t);
    st = rite_checkpoint_load(s->twin, s->ckpt, s->ckpt_n);   /* checks that every number is finite */
    SOAK_CHECK(st == RITE_OK, s, t);
    if (st != RITE_OK && violations < 20) fprintf(stderr, "soak:   load: %s\n", rite_status_string(st));
}

int main(int argc, char **argv)
{
    soak_layer lay[NL];
    long T = 100000, t, cycle_len, skipped_steps = 0, injected = 0;
    unsigned long long seed = 20250101;
    int i, progress = 0;
    double loss_start = 0, loss_end = 0, secs;
    clock_t t0;
    tu_rng g;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--short")) T = 8000;
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) T = atol(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--progress")) progress = 1;
        else {
            fprintf(stderr, "usage: %s [--steps N] [--short] [--seed S] [--progress]\n", argv[0]);
            return 2;
        }
    }
    if (T < 100) T = 100;
    cycle_len = (T - T / 5) / (T >= 50000 ? 8 : 4);
    g.s = seed;
    for (i = 0; i < NL; i++) {
        make_layer(&lay[i], &specs[i], &g);
        keep_good(&lay[i], 0, lay[i].loss0);
    }

    printf("soak: %ld steps, %d layers (single precision), %ld-step cycles, seed %llu\n", T, NL, cycle_len, seed);
    t0 = clock();
    for (t = 0; t < T; t++) {
        double lr, gs, total = 0, sumsq[NL];
        rite_status pst[NL];
        int bad_gradient = 0;
        schedule(t, T, cycle_len, &lr, &gs);

        /* loss, gradients, and the schedule */
        for (i = 0; i < NL; i++) {
            soak_layer *s = &lay[i];
            const soak_spec *sp = s->sp;
            int k;
            double loss;
            from_storage(s);
            loss = tu_lsq_loss_grad(s->Ld, s->Rd, s->A, sp->m, sp->n, sp->r, s->gL, s->gR, s->work);
            SOAK_CHECK(isfinite(loss), s, t);
            if (!sp->guarded) {
                /* nothing to keep */
            } else if (!(loss <= 10 * s->good_loss + 1e-3 * s->loss0)) {   /* diverged: go back */
                roll_back(s, t);
                from_storage(s);
                loss = tu_lsq_loss_grad(s->Ld, s->Rd, s->A, sp->m, sp->n, sp->r, s->gL, s->gR, s->work);
            } else if (t - s->good_t >= KEEP_EVERY && loss <= s->good_loss) {
                keep_good(s, t, loss);
            }
            if (loss < s->loss_min) s->loss_min = loss;
            if (progress && t % (T / 10) == 0) printf("  step %7ld  lr %8.2e  gscale %5.0e  %-16s loss %.4e\n",
                                                      t, lr, gs, sp->name, loss);
            for (k = 0; k < sp->m * sp->r; k++) s->gL[k] *= gs;
            for (k = 0; k < sp->n * sp->r; k++) s->gR[k] *= gs;
            tu_to_layout_f(s->gL, sp->m, sp->r, sp->layout_L, s->ld[0], s->G[0]);
            tu_to_layout_f(s->gR, sp->n, sp->r, sp->layout_R, s->ld[1], s->G[1]);
            SOAK_CHECK(rite_set_lr(s->l, lr) == RITE_OK, s, t);
        }
        if (t % 997 == 996) {   /* a batch gone bad */
            soak_layer *s = &lay[(t / 997) % (NL - 1)];   /* a guarded layer */
            s->G[t % 2][0] = (t / 997) % 3 ? NAN : INFINITY;
            injected++;
        }

        /* the unguarded layer is a model of its own: one-phase step, clipped alone */
        for (i = 0; i < NL; i++) {
            soak_layer *s = &lay[i];
            rite_status st;
            if (s->sp->guarded) continue;
            snapshot(s);
            st = rite_step_f32(s->l, s->X[0], s->X[1], s->G[0], s->G[1]);
            count_status(st);
            if (st == RITE_OK) {
                check_stepped(s, t);
            } else {
                SOAK_CHECK(st == RITE_ERR_NONFINITE_GRADIENT || st == RITE_ERR_NONFINITE_FACTOR ||
                           st == RITE_ERR_NONFINITE_UPDATE || st == RITE_ERR_LAPACK, s, t);
                check_unchanged(s, t);
            }
        }

        /* the guarded layers, phase one: prepare every layer */
        for (i = 0; i < NL; i++) {
            soak_layer *s = &lay[i];
            if (!s->sp->guarded) continue;
            snapshot(s);
            pst[i] = rite_prepare_f32(s->l, s->X[0], s->X[1], s->G[0], s->G[1], &sumsq[i]);
            count_status(pst[i]);
            if (pst[i] == RITE_OK) {
                SOAK_CHECK(sumsq[i] >= 0 && isfinite(sumsq[i]), s, t);
                total += sumsq[i];
            } else {
                /* a bad gradient stops the whole step (as mixed-precision trainers do) */
                if (pst[i] == RITE_ERR_NONFINITE_GRADIENT) bad_gradient = 1;
                SOAK_CHECK(pst[i] == RITE_ERR_NONFINITE_GRADIENT || pst[i] == RITE_ERR_NONFINITE_UPDATE ||
                           pst[i] == RITE_ERR_LAPACK, s, t);
            }
            check_unchanged(s, t);   /* prepare changes nothing */
        }
        if (bad_gradient) {          /* the trainer skips this step */
            skipped_steps++;
            continue;
        }
        /* phase two: apply with the sum of squares over all of them (global clipping) */
        for (i = 0; i < NL; i++) {
            soak_layer *s = &lay[i];
            rite_status st;
            if (!s->sp->guarded || pst[i] != RITE_OK) continue;
            st = rite_apply(s->l, total);
            count_status(st);
            if (st == RITE_OK) {
                check_stepped(s, t);
            } else {
                SOAK_CHECK(st == RITE_ERR_NONFINITE_UPDATE || st == RITE_ERR_LAPACK, s, t);
                check_unchanged(s, t);
            }
        }
    }
    secs = (double)(clock() - t0) / CLOCKS_PER_SEC;

    printf("\n%-16s %6s %12s %12s %12s %10s %9s %s\n", "layer", "kind", "loss start", "loss end", "loss min",
           "applied", "go-backs", "finite");
    for (i = 0; i < NL; i++) {
        soak_layer *s = &lay[i];
        const soak_spec *sp = s->sp;
        double loss;
        int fin = factors_finite(s);
        from_storage(s);
        loss = tu_lsq_loss_grad(s->Ld, s->Rd, s->A, sp->m, sp->n, sp->r, NULL, NULL, s->work);
        SOAK_CHECK(fin, s, T);
        if (sp->guarded) SOAK_CHECK(loss <= s->loss0, s, T);   /* training ends no worse than it started */
        printf("%-16s %6s %12.4e %12.4e %12.4e %10ld %9ld %s\n", sp->name,
               sp->opt == RITE_ADAMW ? "AdamW" : "RITE", s->loss0, loss, s->loss_min, s->applied,
               s->rollbacks, fin ? "yes" : "NO");
        if (sp->guarded) {
            loss_start += s->loss0;
            loss_end += loss;
        }
    }
    printf("%-16s %6s %12.4e %12.4e   (the guarded layers; rite-unguarded is not required to improve)\n",
           "total", "", loss_start, loss_end);
    printf("\nsteps skipped by the trainer (a gradient held NaN/Inf): %ld (NaN/Inf injected: %ld)\n",
           skipped_steps, injected);
    printf("status of every step, prepare and apply call:\n");
    for (i = 0; i <= RITE_STATUS_COUNT; i++)
        if (status_count[i])
            printf("  %-8ld %2d  %s\n", status_count[i], i,
                   i < RITE_STATUS_COUNT ? rite_status_string((rite_status)i) : "(out of range)");
    printf("\ntime: %.1f s CPU (%.1f us per layer step)\n", secs, 1e6 * secs / ((double)T * NL));
    for (i = 0; i < NL; i++) free_layer(&lay[i]);
    if (violations) {
        printf("soak: FAILED, %ld violations\n", violations);
        return 1;
    }
    printf("soak: passed (factors and state finite throughout, no failed call changed anything, "
           "every guarded layer's loss ended no higher than it started)\n");
    return 0;
}
