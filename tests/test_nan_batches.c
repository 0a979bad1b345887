/* test_nan_batches.c - a training run that meets non-finite batches.

   Three layers of different sizes and layouts train on noisy least-squares
   batches 0.5 * ||L R^T - (A + noise_b)||^2 for 30 batches. Some batches are
   poisoned: a NaN, +Inf or -Inf written into one gradient entry of one
   layer, or a factor entry overwritten with NaN or Inf after the gradients
   were computed (a corrupted weight), restored by the trainer afterwards.

   Every poisoned step must be rejected with RITE_ERR_NONFINITE_GRADIENT or
   RITE_ERR_NONFINITE_FACTOR, leaving factors, state and step count exactly
   as they were; the trainer skips the batch and continues. The run must end
   bit-identical (factors, rite_state_copy, step count) to the same run with
   the poisoned batches left out, which is computed independently: a trainer
   that never sees them.

   Two trainers, for both optimizers and both precisions:
     - two-phase (global clipping over the model): rite_prepare_* on every
       layer; if any layer rejects its inputs, the whole batch is skipped
       (no rite_apply, even for the layers already prepared); otherwise the
       sums of squares are added and every layer is applied. The reference
       leaves the batch out for every layer.
     - per-layer: rite_step_* on each layer; a rejection skips the batch for
       that layer only (each layer is clipped by its own norm, so the layers
       are independent). The reference leaves the batch out for that layer.
   Finally the skipped batches must matter: taking their clean versions
   instead ends elsewhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "lora_rite.h"
#include "test_util.h"

enum { NL = 3, NB = 30, MAXK = 24, MAXR = 4 };

static const int SIZES[NL][3] = {{20, 16, 3}, {12, 24, 2}, {9, 10, 4}};
static const rite_layout LAYOUT_L[NL] = {RITE_RANK_LAST, RITE_RANK_FIRST, RITE_RANK_LAST};
static const rite_layout LAYOUT_R[NL] = {RITE_RANK_FIRST, RITE_RANK_LAST, RITE_RANK_FIRST};

/* ---- the poisoned batches ---------------------------------------------------- */

typedef enum poison_kind { GRAD_NAN, GRAD_INF, GRAD_NEGINF, FACTOR_NAN, FACTOR_INF } poison_kind;

typedef struct poison {
    int batch;
    poison_kind kind;
    int layer;
    int side;      /* 0: L (or its gradient), 1: R */
    int entry;     /* which logical entry, modulo k * r */
} poison;

static const poison POISONS[] = {
    {0, GRAD_NAN, 1, 1, 0},        /* the very first step (k = 0) */
    {3, GRAD_INF, 0, 0, 17},
    {5, FACTOR_NAN, 1, 0, 5},
    {6, GRAD_NEGINF, 2, 1, 39},
    {7, GRAD_NAN, 2, 0, 1000},     /* two batches in a row */
    {11, FACTOR_INF, 2, 1, 3},
    {12, GRAD_NAN, 0, 1, 7},
    {12, GRAD_INF, 2, 0, 2},       /* two layers in the same batch */
    {19, FACTOR_NAN, 0, 1, 44},
    {23, GRAD_INF, 1, 0, 23},
    {29, GRAD_NAN, 0, 0, 59},      /* the last batch */
};
enum { NPOISON = sizeof POISONS / sizeof POISONS[0] };

/* ---- the layers and their data ----------------------------------------------- */

typedef struct problem {
    int m, n, r;
    double A[MAXK * MAXK], L0[MAXK * MAXR], R0[MAXK * MAXR];
} problem;

static problem g_prob[NL];

static void problems_make(void) {
    int l, i;
    for (l = 0; l < NL; l++) {
        problem *p = &g_prob[l];
        tu_rng g;
        g.s = 0x0a0b0c0d00ull + (uint64_t)l;
        p->m = SIZES[l][0]; p->n = SIZES[l][1]; p->r = SIZES[l][2];
        tu_fill_normal(&g, p->A, (size_t)p->m * p->n, 0.5);
        for (i = 0; i < p->m * p->n; i++) p->A[i] += 0.3 * sin(0.1 * i);
        tu_fill_normal(&g, p->L0, (size_t)p->m * p->r, 0.3);
        tu_fill_normal(&g, p->R0, (size_t)p->n * p->r, 0.3);
    }
}

/* Gradients of batch b at (L, R) (logical, double): target A + 0.2 noise_b. */
static void batch_grad(int l, int b, const double *L, const double *R, double *gL, double *gR) {
    const problem *p = &g_prob[l];
    double Ab[MAXK * MAXK], work[MAXK * MAXK];
    tu_rng g;
    int i;
    g.s = 0xba7c400000ull + (uint64_t)(b * NL + l);
    for (i = 0; i < p->m * p->n; i++) Ab[i] = p->A[i] + 0.2 * tu_normal(&g);
    tu_lsq_loss_grad(L, R, Ab, p->m, p->n, p->r, gL, gR, work);
}

/* One layer as the trainer holds it: factors and gradients in the layer's
   storage (packed), in the layer's precision. */
typedef struct tlayer {
    rite_layer *layer;
    int m, n, r;
    rite_precision prec;
    double Xd[2][MAXK * MAXR], Gd[2][MAXK * MAXR];
    float Xf[2][MAXK * MAXR], Gf[2][MAXK * MAXR];
    double sumsq;
} tlayer;

static int kdim(const tlayer *t, int side) { return side ? t->n : t->m; }
static rite_layout lay_of(int l, int side) { return side ? LAYOUT_R[l] : LAYOUT_L[l]; }
static int ld_of(int l, int side, int k, int r) { return lay_of(l, side) == RITE_RANK_LAST ? r : k; }

static void layer_make(tlayer *t, int l, rite_optimizer opt, rite_precision prec) {
    const problem *p = &g_prob[l];
    rite_desc d = tu_desc(p->m, p->n, p->r, opt, prec);
    rite_config c = rite_config_default(opt);
    rite_status st;
    int side;
    memset(t, 0, sizeof *t);
    t->m = p->m;
    t->n = p->n;
    t->r = p->r;
    t->prec = prec;
    c.lr = 2e-2;
    d.layout_L = lay_of(l, 0);
    d.layout_R = lay_of(l, 1);
    d.config = &c;
    st = rite_init(&t->layer, &d);
    if (st != RITE_OK) print_error("rite_init: %s\n", rite_status_string(st));
    assert_int_equal(st, RITE_OK);
    for (side = 0; side < 2; side++) {
        int k = kdim(t, side);
        const double *X0 = side ? p->R0 : p->L0;
        if (prec == RITE_FLOAT32) tu_to_layout_f(X0, k, t->r, lay_of(l, side), ld_of(l, side, k, t->r), t->Xf[side]);
        else tu_to_layout_d(X0, k, t->r, lay_of(l, side), ld_of(l, side, k, t->r), t->Xd[side]);
    }
}

/* The current factors, logical double. */
static void layer_get(const tlayer *t, int l, int side, double *X) {
    int k = kdim(t, side);
    if (t->prec == RITE_FLOAT32) tu_from_layout_f(t->Xf[side], k, t->r, lay_of(l, side), ld_of(l, side, k, t->r), X);
    else tu_from_layout_d(t->Xd[side], k, t->r, lay_of(l, side), ld_of(l, side, k, t->r), X);
}

/* Gradients of batch b at the current factors, into the layer's storage. */
static void layer_grad(tlayer *t, int l, int b) {
    double L[MAXK * MAXR], R[MAXK * MAXR], g[2][MAXK * MAXR];
    int side;
    layer_get(t, l, 0, L);
    layer_get(t, l, 1, R);
    batch_grad(l, b, L, R, g[0], g[1]);
    for (side = 0; side < 2; side++) {
        int k = kdim(t, side);
        if (t->prec == RITE_FLOAT32) tu_to_layout_f(g[side], k, t->r, lay_of(l, side), ld_of(l, side, k, t->r), t->Gf[side]);
        else tu_to_layout_d(g[side], k, t->r, lay_of(l, side), ld_of(l, side, k, t->r), t->Gd[side]);
    }
}

static rite_status layer_step(tlayer *t) {
    return t->prec == RITE_FLOAT32 ? rite_step_f32(t->layer, t->Xf[0], t->Xf[1], t->Gf[0], t->Gf[1])
                                   : rite_step_f64(t->layer, t->Xd[0], t->Xd[1], t->Gd[0], t->Gd[1]);
}

static rite_status layer_prepare(tlayer *t) {
    return t->prec == RITE_FLOAT32 ? rite_prepare_f32(t->layer, t->Xf[0], t->Xf[1], t->Gf[0], t->Gf[1], &t->sumsq)
                                   : rite_prepare_f64(t->layer, t->Xd[0], t->Xd[1], t->Gd[0], t->Gd[1], &t->sumsq);
}

/* Storage element of logical entry e (mod k r) of a factor or gradient. */
static size_t poison_index(const tlayer *t, int l, const poison *p) {
    int k = kdim(t, p->side), e = p->entry % (k * t->r);
    return tu_index(lay_of(l, p->side), ld_of(l, p->side, k, t->r), e / t->r, e % t->r);
}

static double poison_value(poison_kind kind) {
    return kind == GRAD_NAN || kind == FACTOR_NAN ? (double)NAN : kind == GRAD_NEGINF ? -(double)INFINITY : (double)INFINITY;
}

static int is_factor_poison(poison_kind kind) { return kind == FACTOR_NAN || kind == FACTOR_INF; }

/* Write poison p into layer t. */
static void poison_apply(tlayer *t, int l, const poison *p) {
    size_t e = poison_index(t, l, p);
    double v = poison_value(p->kind);
    if (is_factor_poison(p->kind)) {
        if (t->prec == RITE_FLOAT32) t->Xf[p->side][e] = (float)v;
        else t->Xd[p->side][e] = v;
    } else {
        if (t->prec == RITE_FLOAT32) t->Gf[p->side][e] = (float)v;
        else t->Gd[p->side][e] = v;
    }
}

/* ---- snapshots ---------------------------------------------------------------- */

enum { MAXSTATE = 1 << 14 };

typedef struct snap {
    unsigned char X[2][MAXK * MAXR * sizeof(double)];
    unsigned char state[MAXSTATE];
    size_t state_bytes;
    long long steps;
} snap;

static size_t xbytes(const tlayer *t, int side) {
    return (size_t)kdim(t, side) * (size_t)t->r * (t->prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double));
}

static void snap_take(snap *s, const tlayer *t) {
    int side;
    memset(s, 0, sizeof *s);
    for (side = 0; side < 2; side++)
        memcpy(s->X[side], t->prec == RITE_FLOAT32 ? (const void *)t->Xf[side] : (const void *)t->Xd[side], xbytes(t, side));
    s->state_bytes = rite_state_size(t->layer);
    assert_true(s->state_bytes > 0 && s->state_bytes <= MAXSTATE);
    assert_int_equal(rite_state_copy(t->layer, s->state, s->state_bytes), RITE_OK);
    s->steps = rite_step_count(t->layer);
}

/* 1 when the layer's factors, state and step count are those of the snapshot */
static int snap_equal(const snap *a, const snap *b) {
    return a->state_bytes == b->state_bytes && a->steps == b->steps &&
           memcmp(a->X, b->X, sizeof a->X) == 0 && memcmp(a->state, b->state, a->state_bytes) == 0;
}

/* ---- the trainers --------------------------------------------------------------- */

typedef enum mode {
    POISONED,      /* poisoned batches are fed, rejected and skipped */
    LEFT_OUT,      /* the reference: poisoned batches are never fed */
    ALL_CLEAN      /* poisoned batches are fed in their clean version */
} mode;

/* the poisons of batch b for layer l (or for any layer when l < 0) */
static int poisoned(int b, int l) {
    int i;
    for (i = 0; i < NPOISON; i++)
        if (POISONS[i].batch == b && (l < 0 || POISONS[i].layer == l)) return 1;
    return 0;
}

static rite_status expected_status(int b, int l) {
    int i;
    for (i = 0; i < NPOISON; i++)
        if (POISONS[i].batch == b && POISONS[i].layer == l)
            return is_factor_poison(POISONS[i].kind) ? RITE_ERR_NONFINITE_FACTOR : RITE_ERR_NONFINITE_GRADIENT;
    return RITE_OK;
}

/* Poison layer l for batch b (after its gradients were computed). backup
   keeps the clean factors (the trainer's copy, to restore them) and the
   state; poisoned keeps the buffers exactly as they are handed to the call. */
static void poison_layer(tlayer *t, int l, int b, snap *backup, tlayer *poisoned_copy) {
    int i;
    snap_take(backup, t);
    for (i = 0; i < NPOISON; i++)
        if (POISONS[i].batch == b && POISONS[i].layer == l) poison_apply(t, l, &POISONS[i]);
    *poisoned_copy = *t;
}

/* Put back the factors of the backup (the trainer's copy of its weights). */
static void restore_factors(tlayer *t, const snap *backup) {
    int side;
    for (side = 0; side < 2; side++)
        memcpy(t->prec == RITE_FLOAT32 ? (void *)t->Xf[side] : (void *)t->Xd[side], backup->X[side], xbytes(t, side));
}

/* After a rejected call: the status is the expected one, the buffers are
   byte for byte those handed to the call, and once the trainer restored its
   factors, factors, state and step count are those before the batch. */
static void check_rejected(tlayer *t, const snap *backup, const tlayer *poisoned_copy,
                           rite_status st, rite_status want, int b, int l) {
    snap now;
    if (st != want)
        print_error("batch %d layer %d: got %s, want %s\n", b, l, rite_status_string(st), rite_status_string(want));
    assert_int_equal(st, want);
    assert_memory_equal(t->Xd, poisoned_copy->Xd, sizeof t->Xd);
    assert_memory_equal(t->Xf, poisoned_copy->Xf, sizeof t->Xf);
    assert_memory_equal(t->Gd, poisoned_copy->Gd, sizeof t->Gd);
    assert_memory_equal(t->Gf, poisoned_copy->Gf, sizeof t->Gf);
    restore_factors(t, backup);
    snap_take(&now, t);
    assert_true(snap_equal(&now, backup));
}

static int g_rejected;   /* rejected calls of the last run */

static void train_two_phase(rite_optimizer opt, rite_precision prec, mode md, snap *out) {
    tlayer t[NL], copy;
    snap backup[NL];
    int l, b;
    g_rejected = 0;
    for (l = 0; l < NL; l++) layer_make(&t[l], l, opt, prec);
    for (b = 0; b < NB; b++) {
        int bad = 0;
        double total = 0;
        if (md == LEFT_OUT && poisoned(b, -1)) continue;
        for (l = 0; l < NL; l++) {
            rite_status st, want = md == POISONED ? expected_status(b, l) : RITE_OK;
            layer_grad(&t[l], l, b);
            if (want != RITE_OK) poison_layer(&t[l], l, b, &backup[l], &copy);
            st = layer_prepare(&t[l]);
            if (want != RITE_OK) {
                check_rejected(&t[l], &backup[l], &copy, st, want, b, l);
                g_rejected++;
                bad = 1;
                break;   /* a trainer stops preparing at the first rejection */
            }
            assert_int_equal(st, RITE_OK);
        }
        if (bad) continue;   /* skip the batch: no layer is applied */
        for (l = 0; l < NL; l++) total += t[l].sumsq;
        for (l = 0; l < NL; l++) assert_int_equal(rite_apply(t[l].layer, total), RITE_OK);
    }
    for (l = 0; l < NL; l++) {
        snap_take(&out[l], &t[l]);
        rite_free(t[l].layer);
    }
}

static void train_per_layer(rite_optimizer opt, rite_precision prec, mode md, snap *out) {
    tlayer t[NL], copy;
    snap backup;
    int l, b;
    g_rejected = 0;
    for (l = 0; l < NL; l++) layer_make(&t[l], l, opt, prec);
    for (b = 0; b < NB; b++)
        for (l = 0; l < NL; l++) {
            rite_status st, want = md == POISONED ? expected_status(b, l) : RITE_OK;
            if (md == LEFT_OUT && poisoned(b, l)) continue;
            layer_grad(&t[l], l, b);
            if (want != RITE_OK) poison_layer(&t[l], l, b, &backup, &copy);
            st = layer_step(&t[l]);
            if (want != RITE_OK) {
                check_rejected(&t[l], &backup, &copy, st, want, b, l);
                g_rejected++;
                continue;   /* skip this batch for this layer */
            }
            if (st != RITE_OK) print_error("batch %d layer %d: %s\n", b, l, rite_status_string(st));
            assert_int_equal(st, RITE_OK);
        }
    for (l = 0; l < NL; l++) {
        snap_take(&out[l], &t[l]);
        rite_free(t[l].layer);
    }
}

/* ---- the tests ------------------------------------------------------------------- */

typedef void (*trainer)(rite_optimizer, rite_precision, mode, snap *);

static snap g_a[NL], g_b[NL], g_c[NL];

static void check_trainer(trainer train, int two_phase, rite_optimizer opt, rite_precision prec) {
    int l, b, want_rejected = 0, skipped_everywhere = 0, differ = 0;
    train(opt, prec, POISONED, g_a);
    /* the trainer met every poison: a batch is rejected once in two-phase
       mode (preparation stops at its first poisoned layer), once per
       poisoned layer otherwise */
    for (b = 0; b < NB; b++)
        for (l = 0; l < NL; l++)
            if (poisoned(b, l)) {
                want_rejected++;
                if (two_phase) { skipped_everywhere++; break; }
            }
    assert_int_equal(g_rejected, two_phase ? skipped_everywhere : want_rejected);
    train(opt, prec, LEFT_OUT, g_b);
    for (l = 0; l < NL; l++) {
        if (!snap_equal(&g_a[l], &g_b[l]))
            print_error("layer %d: the run that skipped the poisoned batches differs from the run without them\n", l);
        assert_true(snap_equal(&g_a[l], &g_b[l]));
    }
    /* every layer lost at least one batch, and those batches mattered */
    train(opt, prec, ALL_CLEAN, g_c);
    for (l = 0; l < NL; l++) {
        int lost = 0;
        for (b = 0; b < NB; b++) lost += two_phase ? poisoned(b, -1) : poisoned(b, l);
        assert_true(lost > 0);
        assert_int_equal(g_a[l].steps, NB - lost);
        assert_int_equal(g_c[l].steps, NB);
        differ += memcmp(g_a[l].X, g_c[l].X, sizeof g_a[l].X) != 0;
    }
    assert_int_equal(differ, NL);
}

static void test_two_phase_rite_f32(void **s) { (void)s; check_trainer(train_two_phase, 1, RITE_LORA_RITE, RITE_FLOAT32); }
static void test_two_phase_rite_f64(void **s) { (void)s; check_trainer(train_two_phase, 1, RITE_LORA_RITE, RITE_FLOAT64); }
static void test_two_phase_adamw_f32(void **s) { (void)s; check_trainer(train_two_phase, 1, RITE_ADAMW, RITE_FLOAT32); }
static void test_two_phase_adamw_f64(void **s) { (void)s; check_trainer(train_two_phase, 1, RITE_ADAMW, RITE_FLOAT64); }
static void test_per_layer_rite_f32(void **s) { (void)s; check_trainer(train_per_layer, 0, RITE_LORA_RITE, RITE_FLOAT32); }
static void test_per_layer_rite_f64(void **s) { (void)s; check_trainer(train_per_layer, 0, RITE_LORA_RITE, RITE_FLOAT64); }
static void test_per_layer_adamw_f32(void **s) { (void)s; check_trainer(train_per_layer, 0, RITE_ADAMW, RITE_FLOAT32); }
static void test_per_layer_adamw_f64(void **s) { (void)s; check_trainer(train_per_layer, 0, RITE_ADAMW, RITE_FLOAT64); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_phase_rite_f32),
        cmocka_unit_test(test_two_phase_rite_f64),
        cmocka_unit_test(test_two_phase_adamw_f32),
        cmocka_unit_test(test_two_phase_adamw_f64),
        cmocka_unit_test(test_per_layer_rite_f32),
        cmocka_unit_test(test_per_layer_rite_f64),
        cmocka_unit_test(test_per_layer_adamw_f32),
        cmocka_unit_test(test_per_layer_adamw_f64),
    };
    problems_make();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
