/* test_threads.c - distinct layers stepped concurrently from several threads.

   A "model" of 24 layers of mixed sizes (two of them large enough that
   OpenBLAS splits their products across its own threads), with both
   optimizers, both precisions, both layouts, padded leading dimensions
   (padding filled with NaN, which the library must never read) and several
   option sets. Every layer's gradient is a cheap deterministic function of
   its current factors and of the step, so any divergence propagates.

   The same training run is done twice, and must end bit-identical (factors
   with their padding, rite_state_copy, step count):
     - sequentially, every layer in one thread;
     - concurrently from 4 threads, thread t owning the layers i % 4 == t:
       it creates them (rite_init, all threads sharing the same read-only
       rite_config through desc.config), computes their gradients, steps
       them, swaps in a second shared config half-way (rite_set_config),
       copies their state and frees them.
   Two ways of stepping:
     - independent: rite_step_* per layer, the threads never synchronise;
     - two-phase global clipping (SPEC step 5): each thread prepares its
       layers; after a barrier the sums of squares are added in layer order;
       after another, the *next* thread applies each layer with the total
       (so a layer moves between threads, with barriers in between). The
       sequential run does prepare-all, the same ordered sum, apply-all. The
       run checks that clipping by the global norm was active, and that it
       ends elsewhere than clipping each layer by its own norm.
   Each is run with OpenBLAS set to 1 thread and with its startup thread
   count (OPENBLAS_NUM_THREADS, or the number of cores).
   Finally 4 threads call the read-only functions (rite_state_copy,
   rite_checkpoint_save, the getters) on the same layers at once and must
   all get what one thread got. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "lora_rite.h"
#include "test_util.h"

enum { NL = 24, NT = 4, STEPS = 24, SWITCH = 12 };

/* ---- shared, read-only configurations (set before any thread starts) ------ */

enum { CFG_PLAIN, CFG_OPTIONS, CFG_ADAMW, NCFG };
static rite_config g_cfg[NCFG][2];   /* [family][first half, second half] */

static void configs_make(void) {
    rite_config *c;
    /* LoRA-RITE, skipping off so that every layer keeps moving */
    c = g_cfg[CFG_PLAIN];
    c[0] = rite_config_default(RITE_LORA_RITE);
    c[0].lr = 2e-2;
    c[0].skip = 0;
    c[1] = c[0];
    c[1].lr = 1e-2;
    c[1].skip = 4.0;
    c[1].cap = 0.5;
    c[1].weight_decay = 1e-3;
    /* LoRA-RITE with the optional corrections */
    c = g_cfg[CFG_OPTIONS];
    c[0] = rite_config_default(RITE_LORA_RITE);
    c[0].lr = 1e-2;
    c[0].escape = 1;
    c[0].relative_eps = 1;
    c[0].eps_root = 1e-8;
    c[0].balance = 1;
    c[1] = c[0];
    c[1].lr = 5e-3;
    c[1].clip = 0.5;
    /* AdamW */
    c = g_cfg[CFG_ADAMW];
    c[0] = rite_config_default(RITE_ADAMW);
    c[0].lr = 1e-2;
    c[0].weight_decay = 1e-2;
    c[1] = c[0];
    c[1].lr = 5e-3;
}

/* ---- deterministic pseudo-random numbers without state --------------------- */

/* uniform in [-1, 1), a hash of four integers */
static double hash_uniform(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    tu_rng g;
    g.s = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull;
    g.s ^= (c * 0x94D049BB133111EBull) ^ (d << 17);
    tu_next(&g);
    return 2.0 * tu_uniform(&g) - 1.0;
}

/* ---- one layer and its buffers -------------------------------------------- */

typedef struct tlayer {
    int id, m, n, r, family;
    rite_desc desc;
    rite_layer *layer;
    size_t es;                 /* element size: 4 or 8 */
    size_t cnt[2];             /* storage elements of L, R (gradients use ld_g*) */
    size_t gcnt[2];
    void *X[2], *G[2];         /* factors and gradients in storage */
    double sumsq;              /* from the last prepare */
    rite_status st;            /* first error seen (threads cannot assert) */
    const char *where;
    long step_failed;
} tlayer;

static int packed_ld(rite_layout lay, int k, int r) { return lay == RITE_RANK_LAST ? r : k; }

static double elem_get(const tlayer *t, const void *buf, size_t i) {
    return t->es == 4 ? (double)((const float *)buf)[i] : ((const double *)buf)[i];
}
static void elem_set(const tlayer *t, void *buf, size_t i, double v) {
    if (t->es == 4) ((float *)buf)[i] = (float)v;
    else ((double *)buf)[i] = v;
}

/* Layer i's sizes and options: a fixed mix over the 24 layers. */
static void layer_describe(tlayer *t, int i) {
    static const int big[2][3] = {{1200, 900, 16}, {1500, 400, 12}};
    int ldpad = i % 4 == 0, side;
    memset(t, 0, sizeof *t);
    t->id = i;
    if (i == 4 || i == 18) {
        const int *b = big[i == 18];
        t->m = b[0]; t->n = b[1]; t->r = b[2];
    } else {
        t->m = 6 + (i * 37) % 90;
        t->n = 5 + (i * 53) % 70;
        t->r = 1 + (i * 5) % 8;
        if (t->r > t->m) t->r = t->m;
        if (t->r > t->n) t->r = t->n;
    }
    t->desc.m = t->m;
    t->desc.n = t->n;
    t->desc.r = t->r;
    t->desc.optimizer = i % 3 == 2 ? RITE_ADAMW : RITE_LORA_RITE;
    t->desc.precision = (i / 2) % 2 ? RITE_FLOAT64 : RITE_FLOAT32;
    t->desc.layout_L = (i / 4) % 2 ? RITE_RANK_FIRST : RITE_RANK_LAST;
    t->desc.layout_R = (i / 3) % 2 ? RITE_RANK_LAST : RITE_RANK_FIRST;
    t->desc.keep_basis = i % 7 == 1;
    t->family = t->desc.optimizer == RITE_ADAMW ? CFG_ADAMW : (i % 6 == 1 || i % 6 == 3 ? CFG_OPTIONS : CFG_PLAIN);
    t->desc.config = &g_cfg[t->family][0];
    t->es = t->desc.precision == RITE_FLOAT32 ? sizeof(float) : sizeof(double);
    for (side = 0; side < 2; side++) {
        rite_layout lay = side ? t->desc.layout_R : t->desc.layout_L;
        int k = side ? t->n : t->m;
        int ld = packed_ld(lay, k, t->r) + (ldpad ? 3 : 0);
        int ldg = i % 5 == 0 ? packed_ld(lay, k, t->r) + 1 : 0;
        if (side) { t->desc.ld_R = ldpad ? ld : 0; t->desc.ld_gR = ldg; }
        else { t->desc.ld_L = ldpad ? ld : 0; t->desc.ld_gL = ldg; }
        t->cnt[side] = tu_storage_count(lay, ld, k, t->r);
        t->gcnt[side] = tu_storage_count(lay, ldg ? ldg : ld, k, t->r);
    }
}

static int side_ld(const tlayer *t, int side) {
    rite_layout lay = side ? t->desc.layout_R : t->desc.layout_L;
    int ld = side ? t->desc.ld_R : t->desc.ld_L;
    return ld ? ld : packed_ld(lay, side ? t->n : t->m, t->r);
}
static int side_ldg(const tlayer *t, int side) {
    int ldg = side ? t->desc.ld_gR : t->desc.ld_gL;
    return ldg ? ldg : side_ld(t, side);
}

static void record(tlayer *t, rite_status st, const char *where, long step) {
    if (st != RITE_OK && t->st == RITE_OK) {
        t->st = st;
        t->where = where;
        t->step_failed = step;
    }
}

/* Allocate the buffers (padding NaN), set the initial factors, create the layer. */
static void layer_create(tlayer *t) {
    int side, i, j;
    for (side = 0; side < 2; side++) {
        rite_layout lay = side ? t->desc.layout_R : t->desc.layout_L;
        int k = side ? t->n : t->m, ld = side_ld(t, side);
        size_t e;
        t->X[side] = malloc(t->cnt[side] * t->es);
        t->G[side] = malloc(t->gcnt[side] * t->es);
        if (!t->X[side] || !t->G[side]) { record(t, RITE_ERR_OUT_OF_MEMORY, "malloc", -1); return; }
        for (e = 0; e < t->cnt[side]; e++) elem_set(t, t->X[side], e, NAN);
        for (e = 0; e < t->gcnt[side]; e++) elem_set(t, t->G[side], e, NAN);
        for (i = 0; i < k; i++)
            for (j = 0; j < t->r; j++) {
                /* layer 3's R starts at zero, as in standard LoRA */
                double v = side && t->id == 3 ? 0.0 : 0.3 * hash_uniform((uint64_t)t->id, 0, (uint64_t)side, (uint64_t)(i * t->r + j));
                elem_set(t, t->X[side], tu_index(lay, ld, i, j), v);
            }
    }
    record(t, rite_init(&t->layer, &t->desc), "rite_init", -1);
}

static void layer_destroy(tlayer *t) {
    rite_free(t->layer);
    free(t->X[0]); free(t->X[1]);
    free(t->G[0]); free(t->G[1]);
    t->layer = NULL;
    t->X[0] = t->X[1] = t->G[0] = t->G[1] = NULL;
}

/* g = 0.4 (x - target) + 0.2 noise(step), elementwise, into the gradient storage */
static void layer_grad(tlayer *t, int step) {
    int side, i, j;
    for (side = 0; side < 2; side++) {
        rite_layout lay = side ? t->desc.layout_R : t->desc.layout_L;
        int k = side ? t->n : t->m, ld = side_ld(t, side), ldg = side_ldg(t, side);
        for (i = 0; i < k; i++)
            for (j = 0; j < t->r; j++) {
                uint64_t e = (uint64_t)(i * t->r + j);
                double x = elem_get(t, t->X[side], tu_index(lay, ld, i, j));
                double target = 0.5 * hash_uniform((uint64_t)t->id, 1, (uint64_t)side, e);
                double noise = hash_uniform((uint64_t)t->id, 2 + (uint64_t)step, (uint64_t)side, e);
                elem_set(t, t->G[side], tu_index(lay, ldg, i, j), 0.4 * (x - target) + 0.2 * noise);
            }
    }
}

static rite_status layer_step(tlayer *t) {
    return t->es == 4 ? rite_step_f32(t->layer, (float *)t->X[0], (float *)t->X[1],
                                      (const float *)t->G[0], (const float *)t->G[1])
                      : rite_step_f64(t->layer, (double *)t->X[0], (double *)t->X[1],
                                      (const double *)t->G[0], (const double *)t->G[1]);
}

static rite_status layer_prepare(tlayer *t) {
    return t->es == 4 ? rite_prepare_f32(t->layer, (float *)t->X[0], (float *)t->X[1],
                                         (const float *)t->G[0], (const float *)t->G[1], &t->sumsq)
                      : rite_prepare_f64(t->layer, (double *)t->X[0], (double *)t->X[1],
                                         (const double *)t->G[0], (const double *)t->G[1], &t->sumsq);
}

/* Everything a run keeps of a layer at its end. Taken by the thread that
   owns the layer, which cannot assert: failures are recorded in the layer. */
typedef struct snapshot {
    void *X[2];
    size_t xbytes[2];
    unsigned char *state;
    size_t state_bytes;
    long long steps;
} snapshot;

static void snapshot_take(snapshot *s, tlayer *t) {
    int side;
    memset(s, 0, sizeof *s);
    for (side = 0; side < 2; side++) {
        s->xbytes[side] = t->cnt[side] * t->es;
        s->X[side] = malloc(s->xbytes[side]);
        if (!s->X[side]) { record(t, RITE_ERR_OUT_OF_MEMORY, "snapshot", -1); return; }
        memcpy(s->X[side], t->X[side], s->xbytes[side]);
    }
    s->state_bytes = rite_state_size(t->layer);
    s->state = malloc(s->state_bytes ? s->state_bytes : 1);
    if (!s->state) { record(t, RITE_ERR_OUT_OF_MEMORY, "snapshot", -1); return; }
    record(t, rite_state_copy(t->layer, s->state, s->state_bytes), "rite_state_copy", -1);
    s->steps = rite_step_count(t->layer);
}

static void snapshot_free(snapshot *s) {
    free(s->X[0]); free(s->X[1]); free(s->state);
}

/* ---- the two ways of stepping ------------------------------------------------ */

typedef struct barrier {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, count;
    unsigned long gen;
} barrier;

static void barrier_init(barrier *b, int n) {
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->n = n;
    b->count = 0;
    b->gen = 0;
}
static void barrier_destroy(barrier *b) {
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}
static void barrier_wait(barrier *b) {
    unsigned long gen;
    pthread_mutex_lock(&b->mu);
    gen = b->gen;
    if (++b->count == b->n) {
        b->count = 0;
        b->gen++;
        pthread_cond_broadcast(&b->cv);
    } else {
        while (gen == b->gen) pthread_cond_wait(&b->cv, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
}

typedef struct run {
    tlayer *layers;
    snapshot *out;
    int two_phase;
    int nthreads;              /* 1: the sequential run */
    barrier bar;
    double total;              /* the global sum of squares of the current step */
    int clipped_steps;         /* steps with total > 1 (read after the run) */
} run;

typedef struct worker {
    run *run;
    int t;                     /* owns layers i with i % nthreads == t */
} worker;

static void switch_config(tlayer *t, int step) {
    if (step == SWITCH) record(t, rite_set_config(t->layer, &g_cfg[t->family][1]), "rite_set_config", step);
}

/* The body of every thread; with nthreads == 1 it is the sequential run.
   Thread t creates, steps (or prepares), snapshots and frees the layers
   i % nthreads == t. In the two-phase run the layers are applied by the
   next thread, (i + 1) % nthreads == t: a layer changes threads twice per
   step, with barriers in between. */
static void *worker_main(void *arg) {
    worker *w = (worker *)arg;
    run *rn = w->run;
    int i, step, nt = rn->nthreads;
    for (i = w->t; i < NL; i += nt) layer_create(&rn->layers[i]);
    if (!rn->two_phase) {
        /* independent: no synchronisation at all between threads */
        for (i = w->t; i < NL; i += nt) {
            tlayer *t = &rn->layers[i];
            if (t->st != RITE_OK) continue;
            for (step = 0; step < STEPS; step++) {
                switch_config(t, step);
                layer_grad(t, step);
                record(t, layer_step(t), "rite_step", step);
            }
        }
    } else {
        for (step = 0; step < STEPS; step++) {
            /* phase 1: prepare my layers */
            for (i = w->t; i < NL; i += nt) {
                tlayer *t = &rn->layers[i];
                t->sumsq = 0;
                if (t->st != RITE_OK) continue;
                switch_config(t, step);
                layer_grad(t, step);
                record(t, layer_prepare(t), "rite_prepare", step);
            }
            barrier_wait(&rn->bar);
            /* reduce in layer order: every run adds the same numbers in the same order */
            if (w->t == 0) {
                double total = 0;
                for (i = 0; i < NL; i++) total += rn->layers[i].sumsq;
                rn->total = total;
                if (total > 1.0) rn->clipped_steps++;
            }
            barrier_wait(&rn->bar);
            /* phase 2: apply with the global total the layers the previous thread prepared */
            for (i = (w->t + nt - 1) % nt; i < NL; i += nt) {
                tlayer *t = &rn->layers[i];
                if (t->st == RITE_OK) record(t, rite_apply(t->layer, rn->total), "rite_apply", step);
            }
            barrier_wait(&rn->bar);
        }
    }
    for (i = w->t; i < NL; i += nt) {
        tlayer *t = &rn->layers[i];
        if (t->st == RITE_OK) snapshot_take(&rn->out[i], t);
        layer_destroy(t);
    }
    return NULL;
}

/* Run the training with nthreads threads; snapshots of every layer go to out. */
static void run_training(int two_phase, int nthreads, snapshot *out, int *clipped_steps) {
    tlayer *layers = (tlayer *)calloc(NL, sizeof *layers);
    pthread_t th[NT];
    worker w[NT];
    run rn;
    int i, t;
    assert_non_null(layers);
    assert_true(nthreads >= 1 && nthreads <= NT);
    memset(out, 0, NL * sizeof *out);
    for (i = 0; i < NL; i++) layer_describe(&layers[i], i);
    memset(&rn, 0, sizeof rn);
    rn.layers = layers;
    rn.out = out;
    rn.two_phase = two_phase;
    rn.nthreads = nthreads;
    barrier_init(&rn.bar, nthreads);
    for (t = 0; t < nthreads; t++) {
        w[t].run = &rn;
        w[t].t = t;
    }
    if (nthreads == 1) {
        worker_main(&w[0]);
    } else {
        for (t = 0; t < nthreads; t++) assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
        for (t = 0; t < nthreads; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    }
    barrier_destroy(&rn.bar);
    for (i = 0; i < NL; i++) {
        tlayer *ly = &layers[i];
        if (ly->st != RITE_OK)
            print_error("layer %d (%dx%dx%d): %s at step %ld: %s\n", i, ly->m, ly->n, ly->r,
                        ly->where, ly->step_failed, rite_status_string(ly->st));
        assert_int_equal(ly->st, RITE_OK);
        assert_true(out[i].steps == STEPS);
    }
    if (clipped_steps) *clipped_steps = rn.clipped_steps;
    free(layers);
}

/* ---- OpenBLAS threads ------------------------------------------------------ */

static int g_blas_default = 1;

static void blas_threads(int n) {
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---- the tests --------------------------------------------------------------- */

static int differs(const void *a, const void *b, size_t n) { return memcmp(a, b, n) != 0; }

static void check_same_run(int two_phase, int blas) {
    snapshot seq[NL], par[NL];
    int i, side, clipped_seq = 0, clipped_par = 0, moved = 0;
    tlayer t0;
    blas_threads(blas);
    run_training(two_phase, 1, seq, &clipped_seq);
    run_training(two_phase, NT, par, &clipped_par);
    for (i = 0; i < NL; i++) {
        for (side = 0; side < 2; side++) {
            assert_int_equal(seq[i].xbytes[side], par[i].xbytes[side]);
            if (differs(seq[i].X[side], par[i].X[side], seq[i].xbytes[side]))
                print_error("layer %d: factor %c differs between the sequential and the threaded run\n",
                            i, side ? 'R' : 'L');
            assert_memory_equal(seq[i].X[side], par[i].X[side], seq[i].xbytes[side]);
        }
        assert_int_equal(seq[i].state_bytes, par[i].state_bytes);
        if (differs(seq[i].state, par[i].state, seq[i].state_bytes))
            print_error("layer %d: optimizer state differs between the sequential and the threaded run\n", i);
        assert_memory_equal(seq[i].state, par[i].state, seq[i].state_bytes);
        assert_true(seq[i].steps == par[i].steps);
        /* the run did something: the factors moved from their start */
        layer_describe(&t0, i);
        layer_create(&t0);
        assert_int_equal(t0.st, RITE_OK);
        for (side = 0; side < 2; side++) moved += differs(t0.X[side], seq[i].X[side], seq[i].xbytes[side]);
        layer_destroy(&t0);
    }
    assert_int_equal(moved, 2 * NL);
    if (two_phase) {
        assert_int_equal(clipped_seq, clipped_par);
        assert_true(clipped_seq > 0);   /* global clipping was active */
    }
    for (i = 0; i < NL; i++) {
        snapshot_free(&seq[i]);
        snapshot_free(&par[i]);
    }
}

static void test_independent_blas1(void **state) { (void)state; check_same_run(0, 1); }
static void test_independent_blas_default(void **state) { (void)state; check_same_run(0, g_blas_default); }
static void test_two_phase_blas1(void **state) { (void)state; check_same_run(1, 1); }
static void test_two_phase_blas_default(void **state) { (void)state; check_same_run(1, g_blas_default); }

/* Global clipping matters here: the two-phase run ends elsewhere than the
   independent one (each layer clipped by its own norm). */
static void test_global_clip_differs(void **state) {
    snapshot ind[NL], glob[NL];
    int i, rite_differs = 0, adamw_same = 1;
    tlayer t;
    (void)state;
    blas_threads(1);
    run_training(0, 1, ind, NULL);
    run_training(1, 1, glob, NULL);
    for (i = 0; i < NL; i++) {
        int d = differs(ind[i].X[0], glob[i].X[0], ind[i].xbytes[0]) ||
                differs(ind[i].X[1], glob[i].X[1], ind[i].xbytes[1]);
        layer_describe(&t, i);
        if (t.desc.optimizer == RITE_ADAMW) adamw_same &= !d;   /* AdamW does not clip */
        else rite_differs += d;
        snapshot_free(&ind[i]);
        snapshot_free(&glob[i]);
    }
    assert_true(adamw_same);
    assert_true(rite_differs > 0);
}

/* Read-only calls (those taking a const rite_layer *) on the same layers
   from every thread at once, while no thread changes them: each thread gets
   exactly what the main thread got. */
typedef struct reader {
    tlayer *layers;
    const snapshot *expect;
    unsigned char *const *ckpt;
    const size_t *ckpt_bytes;
    int t, mismatches;
} reader;

static int config_equal(const rite_config *a, const rite_config *b) {
    return a->lr == b->lr && a->beta1 == b->beta1 && a->beta2 == b->beta2 && a->eps == b->eps &&
           a->eps_root == b->eps_root && a->clip == b->clip && a->skip == b->skip && a->cap == b->cap &&
           a->weight_decay == b->weight_decay && a->escape == b->escape &&
           a->relative_eps == b->relative_eps && a->balance == b->balance;
}

static void *reader_main(void *arg) {
    reader *rd = (reader *)arg;
    size_t cap = 0;
    unsigned char *buf;
    int rep, j;
    for (j = 0; j < NL; j++) {
        if (rd->expect[j].state_bytes > cap) cap = rd->expect[j].state_bytes;
        if (rd->ckpt_bytes[j] > cap) cap = rd->ckpt_bytes[j];
    }
    buf = (unsigned char *)malloc(cap);
    if (!buf) { rd->mismatches = -1; return NULL; }
    for (rep = 0; rep < 8; rep++)
        for (j = 0; j < NL; j++) {
            int i = (j + 7 * rd->t) % NL;   /* every thread in its own order */
            const tlayer *t = &rd->layers[i];
            const snapshot *e = &rd->expect[i];
            rite_config c = rite_get_config(t->layer);
            rite_desc d = rite_get_desc(t->layer);
            rd->mismatches += rite_step_count(t->layer) != e->steps;
            rd->mismatches += !config_equal(&c, &g_cfg[t->family][1]);
            rd->mismatches += d.m != t->m || d.n != t->n || d.r != t->r || d.optimizer != t->desc.optimizer;
            rd->mismatches += rite_state_size(t->layer) != e->state_bytes;
            rd->mismatches += rite_state_copy(t->layer, buf, e->state_bytes) != RITE_OK ||
                              memcmp(buf, e->state, e->state_bytes) != 0;
            rd->mismatches += rite_checkpoint_size(t->layer) != rd->ckpt_bytes[i];
            rd->mismatches += rite_checkpoint_save(t->layer, buf, rd->ckpt_bytes[i]) != RITE_OK ||
                              memcmp(buf, rd->ckpt[i], rd->ckpt_bytes[i]) != 0;
            rd->mismatches += rite_status_string(RITE_ERR_NONFINITE_GRADIENT)[0] == '\0';
        }
    free(buf);
    return NULL;
}

static void test_concurrent_readers(void **state) {
    tlayer *layers = (tlayer *)calloc(NL, sizeof *layers);
    snapshot expect[NL];
    unsigned char *ckpt[NL];
    size_t ckpt_bytes[NL];
    pthread_t th[NT];
    reader rd[NT];
    int i, t, step;
    (void)state;
    assert_non_null(layers);
    blas_threads(g_blas_default);
    for (i = 0; i < NL; i++) {
        tlayer *ly = &layers[i];
        layer_describe(ly, i);
        layer_create(ly);
        for (step = 0; step < SWITCH + 2; step++) {
            switch_config(ly, step);
            layer_grad(ly, step);
            record(ly, layer_step(ly), "rite_step", step);
        }
        assert_int_equal(ly->st, RITE_OK);
        snapshot_take(&expect[i], ly);
        assert_int_equal(ly->st, RITE_OK);
        ckpt_bytes[i] = rite_checkpoint_size(ly->layer);
        ckpt[i] = (unsigned char *)malloc(ckpt_bytes[i]);
        assert_non_null(ckpt[i]);
        assert_int_equal(rite_checkpoint_save(ly->layer, ckpt[i], ckpt_bytes[i]), RITE_OK);
    }
    for (t = 0; t < NT; t++) {
        rd[t].layers = layers;
        rd[t].expect = expect;
        rd[t].ckpt = ckpt;
        rd[t].ckpt_bytes = ckpt_bytes;
        rd[t].t = t;
        rd[t].mismatches = 0;
        assert_int_equal(pthread_create(&th[t], NULL, reader_main, &rd[t]), 0);
    }
    for (t = 0; t < NT; t++) assert_int_equal(pthread_join(th[t], NULL), 0);
    for (t = 0; t < NT; t++) assert_int_equal(rd[t].mismatches, 0);
    for (i = 0; i < NL; i++) {
        snapshot_free(&expect[i]);
        free(ckpt[i]);
        layer_destroy(&layers[i]);
    }
    free(layers);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_independent_blas1),
        cmocka_unit_test(test_independent_blas_default),
        cmocka_unit_test(test_two_phase_blas1),
        cmocka_unit_test(test_two_phase_blas_default),
        cmocka_unit_test(test_global_clip_differs),
        cmocka_unit_test(test_concurrent_readers),
    };
    int rc;
    configs_make();
#ifdef OPENBLAS_VERSION
    g_blas_default = openblas_get_num_threads();
#endif
    printf("# OpenBLAS threads at startup: %d\n", g_blas_default);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    blas_threads(g_blas_default);
    return rc;
}
