/* test_errors.c - every error a caller can reach through the public API.

   Each rejected call is checked twice:
   - its status code is exactly the one the header's enum describes, and
     factors, gradients, optimizer state (rite_state_copy), step count and
     configuration are bit-for-bit what they were before the call;
   - behaviourally: one more valid step on the layer gives bitwise the same
     factors and state as a twin layer that saw the same valid history and
     never saw the rejected call.

   Layer-level cases run on eight fixtures: both optimizers, both
   precisions, L rank-last with R rank-first and the reverse, with padded
   leading dimensions, half of them with every optional feature on.

   RITE_ERR_LAPACK is the one code not triggered here: no input that passes
   the other checks is known to make the symmetric eigensolver or the QR
   fail. */
#include "lora_rite.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"

/* ---------------------------------------------------------------- helpers */

/* Report a status mismatch with the case name, then fail. */
static void check_status(rite_status got, rite_status want, const char *what) {
    if (got != want) {
        print_error("%s: got %d (%s), want %d (%s)\n", what, (int)got,
                    rite_status_string(got), (int)want, rite_status_string(want));
        fail();
    }
}

/* Bitwise equality of two configs (field by field: the struct has padding). */
static int cfg_equal(const rite_config *a, const rite_config *b) {
    return !memcmp(&a->lr, &b->lr, sizeof(double)) && !memcmp(&a->beta1, &b->beta1, sizeof(double)) &&
           !memcmp(&a->beta2, &b->beta2, sizeof(double)) && !memcmp(&a->eps, &b->eps, sizeof(double)) &&
           !memcmp(&a->eps_root, &b->eps_root, sizeof(double)) && !memcmp(&a->clip, &b->clip, sizeof(double)) &&
           !memcmp(&a->skip, &b->skip, sizeof(double)) && !memcmp(&a->cap, &b->cap, sizeof(double)) &&
           !memcmp(&a->weight_decay, &b->weight_decay, sizeof(double)) && a->escape == b->escape &&
           a->relative_eps == b->relative_eps && a->balance == b->balance;
}

/* --------------------------------------------------------------- fixture */

enum { NM = 12, NN = 10, NR = 3 };
enum { B_L, B_R, B_GL, B_GR };
static const char *const buf_name[4] = {"L", "R", "gL", "gR"};
static const double PAD_VALUE = -777.0; /* padding sentinel: must never change */

typedef struct variant {
    rite_optimizer opt;
    rite_precision prec;
    rite_layout layout_L, layout_R;
    int options; /* escape, balance, cap, relative eps, weight decay */
} variant;

static const variant variants[] = {
    {RITE_LORA_RITE, RITE_FLOAT32, RITE_RANK_LAST, RITE_RANK_FIRST, 0},
    {RITE_LORA_RITE, RITE_FLOAT64, RITE_RANK_FIRST, RITE_RANK_LAST, 1},
    {RITE_LORA_RITE, RITE_FLOAT32, RITE_RANK_FIRST, RITE_RANK_LAST, 1},
    {RITE_LORA_RITE, RITE_FLOAT64, RITE_RANK_LAST, RITE_RANK_FIRST, 0},
    {RITE_ADAMW, RITE_FLOAT32, RITE_RANK_LAST, RITE_RANK_FIRST, 1},
    {RITE_ADAMW, RITE_FLOAT64, RITE_RANK_FIRST, RITE_RANK_LAST, 0},
    {RITE_ADAMW, RITE_FLOAT32, RITE_RANK_FIRST, RITE_RANK_LAST, 0},
    {RITE_ADAMW, RITE_FLOAT64, RITE_RANK_LAST, RITE_RANK_FIRST, 1},
};
enum { NVARIANTS = (int)(sizeof variants / sizeof variants[0]) };

/* A layer and its twin, each with its own L, R, gL, gR buffers. */
typedef struct fx {
    variant v;
    char name[96];
    rite_desc desc;
    rite_config cfg;
    rite_layer *layer, *twin;
    size_t es; /* element size */
    int rows[4], ld[4];
    rite_layout lay[4];
    size_t count[4]; /* storage elements of each buffer */
    void *buf[4], *tbuf[4];
    tu_rng rng;
} fx;

static size_t fx_bytes(const fx *f, int b) { return f->count[b] * f->es; }

static size_t fx_index(const fx *f, int b, int i, int j) { return tu_index(f->lay[b], f->ld[b], i, j); }

static void fx_put(const fx *f, void *p, int b, int i, int j, double v) {
    size_t idx = fx_index(f, b, i, j);
    if (f->es == sizeof(float))
        ((float *)p)[idx] = (float)v;
    else
        ((double *)p)[idx] = v;
}

/* Same random logical values into the layer's and the twin's buffer b. */
static void fx_fill_random(fx *f, int b, double scale) {
    int i, j;
    for (i = 0; i < f->rows[b]; i++)
        for (j = 0; j < NR; j++) {
            double v = scale * tu_normal(&f->rng);
            fx_put(f, f->buf[b], b, i, j, v);
            fx_put(f, f->tbuf[b], b, i, j, v);
        }
}

/* Is storage element idx of buffer b padding (not a matrix element)? */
static int fx_is_padding(const fx *f, int b, size_t idx) {
    size_t inner = f->lay[b] == RITE_RANK_LAST ? (size_t)NR : (size_t)f->rows[b];
    return idx % (size_t)f->ld[b] >= inner;
}

static void fx_fill_padding(const fx *f, void *p, int b, double v) {
    size_t idx;
    for (idx = 0; idx < f->count[b]; idx++)
        if (fx_is_padding(f, b, idx)) {
            if (f->es == sizeof(float))
                ((float *)p)[idx] = (float)v;
            else
                ((double *)p)[idx] = v;
        }
}

/* rite_step_* or, with `prepare` set, rite_prepare_* of element size es
   (float or double buffers) on b = {L, R, gL, gR}. */
static rite_status call_entry(size_t es, int prepare, rite_layer *layer, void *const *b, double *sumsq) {
    if (es == sizeof(float)) {
        float *L = (float *)b[B_L], *R = (float *)b[B_R];
        const float *gL = (const float *)b[B_GL], *gR = (const float *)b[B_GR];
        return prepare ? rite_prepare_f32(layer, L, R, gL, gR, sumsq) : rite_step_f32(layer, L, R, gL, gR);
    } else {
        double *L = (double *)b[B_L], *R = (double *)b[B_R];
        const double *gL = (const double *)b[B_GL], *gR = (const double *)b[B_GR];
        return prepare ? rite_prepare_f64(layer, L, R, gL, gR, sumsq) : rite_step_f64(layer, L, R, gL, gR);
    }
}

static rite_status fx_step(const fx *f, rite_layer *layer, void *const *b) {
    return call_entry(f->es, 0, layer, b, NULL);
}

static rite_status fx_prepare(const fx *f, rite_layer *layer, void *const *b, double *sumsq) {
    return call_entry(f->es, 1, layer, b, sumsq);
}

static void fx_new_grads(fx *f) {
    fx_fill_random(f, B_GL, 0.5);
    fx_fill_random(f, B_GR, 0.5);
}

static unsigned char *state_of(const rite_layer *layer, size_t *size) {
    unsigned char *s;
    *size = rite_state_size(layer);
    assert_true(*size > 0);
    s = (unsigned char *)malloc(*size);
    assert_non_null(s);
    check_status(rite_state_copy(layer, s, *size), RITE_OK, "rite_state_copy");
    return s;
}

/* Factors, state and step count of the layer equal the twin's, bitwise. */
static void fx_assert_twin(const fx *f, const char *what) {
    size_t s1, s2;
    unsigned char *a, *b;
    int k;
    for (k = B_L; k <= B_R; k++)
        if (memcmp(f->buf[k], f->tbuf[k], fx_bytes(f, k))) {
            print_error("%s [%s]: factor %s differs from the twin's\n", what, f->name, buf_name[k]);
            fail();
        }
    a = state_of(f->layer, &s1);
    b = state_of(f->twin, &s2);
    assert_int_equal(s1, s2);
    if (memcmp(a, b, s1)) {
        print_error("%s [%s]: state differs from the twin's\n", what, f->name);
        fail();
    }
    free(a);
    free(b);
    assert_true(rite_step_count(f->layer) == rite_step_count(f->twin));
}

/* One valid step on both layers with fresh gradients; must agree bitwise. */
static void fx_sync_step(fx *f, const char *what) {
    char msg[512];
    snprintf(msg, sizeof msg, "valid step after %s [%s]", what, f->name);
    fx_new_grads(f);
    check_status(fx_step(f, f->layer, f->buf), RITE_OK, msg);
    check_status(fx_step(f, f->twin, f->tbuf), RITE_OK, msg);
    fx_assert_twin(f, msg);
}

static void fx_setup(fx *f, const variant *v, uint64_t seed) {
    int packed_L, packed_R, b, i;
    memset(f, 0, sizeof *f);
    f->v = *v;
    snprintf(f->name, sizeof f->name, "%s %s L:%s R:%s%s", v->opt == RITE_ADAMW ? "adamw" : "rite",
             v->prec == RITE_FLOAT32 ? "f32" : "f64", v->layout_L == RITE_RANK_LAST ? "last" : "first",
             v->layout_R == RITE_RANK_LAST ? "last" : "first", v->options ? " +options" : "");
    f->rng.s = seed;
    f->es = v->prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double);
    f->cfg = rite_config_default(v->opt);
    f->cfg.lr = 1e-2;
    if (v->options) {
        f->cfg.weight_decay = 1e-2;
        if (v->opt == RITE_LORA_RITE) {
            f->cfg.escape = 1;
            f->cfg.balance = 1;
            f->cfg.cap = 0.5;
            f->cfg.relative_eps = 1;
            f->cfg.eps_root = 1e-3;
        }
    }
    packed_L = v->layout_L == RITE_RANK_LAST ? NR : NM;
    packed_R = v->layout_R == RITE_RANK_LAST ? NR : NN;
    f->desc.m = NM;
    f->desc.n = NN;
    f->desc.r = NR;
    f->desc.optimizer = v->opt;
    f->desc.precision = v->prec;
    f->desc.layout_L = v->layout_L;
    f->desc.layout_R = v->layout_R;
    f->desc.ld_L = 0;             /* packed */
    f->desc.ld_gL = packed_L + 2; /* padded gradient */
    f->desc.ld_R = packed_R + 1;  /* padded factor */
    f->desc.ld_gR = 0;            /* as the factor's */
    f->desc.config = &f->cfg;
    f->rows[B_L] = f->rows[B_GL] = NM;
    f->rows[B_R] = f->rows[B_GR] = NN;
    f->lay[B_L] = f->lay[B_GL] = v->layout_L;
    f->lay[B_R] = f->lay[B_GR] = v->layout_R;
    f->ld[B_L] = packed_L;
    f->ld[B_GL] = packed_L + 2;
    f->ld[B_R] = f->ld[B_GR] = packed_R + 1;
    for (b = 0; b < 4; b++) {
        f->count[b] = tu_storage_count(f->lay[b], f->ld[b], f->rows[b], NR);
        f->buf[b] = malloc(fx_bytes(f, b));
        f->tbuf[b] = malloc(fx_bytes(f, b));
        assert_non_null(f->buf[b]);
        assert_non_null(f->tbuf[b]);
        fx_fill_padding(f, f->buf[b], b, PAD_VALUE);
        fx_fill_padding(f, f->tbuf[b], b, PAD_VALUE);
    }
    check_status(rite_init(&f->layer, &f->desc), RITE_OK, f->name);
    check_status(rite_init(&f->twin, &f->desc), RITE_OK, f->name);
    fx_fill_random(f, B_L, 1.0);
    fx_fill_random(f, B_R, 1.0);
    for (i = 0; i < 3; i++) fx_sync_step(f, "setup");
}

static void free_each(void *const *p, int n) {
    int i;
    for (i = 0; i < n; i++) free(p[i]);
}

static void fx_teardown(fx *f) {
    rite_free(f->layer);
    rite_free(f->twin);
    free_each(f->buf, 4);
    free_each(f->tbuf, 4);
}

/* Everything a rejected call must leave alone. */
typedef struct snap {
    void *buf[4];
    unsigned char *state;
    size_t state_size;
    long long count;
    rite_config cfg;
} snap;

static void snap_take(snap *s, const fx *f) {
    int b;
    for (b = 0; b < 4; b++) {
        s->buf[b] = malloc(fx_bytes(f, b));
        assert_non_null(s->buf[b]);
        memcpy(s->buf[b], f->buf[b], fx_bytes(f, b));
    }
    s->state = state_of(f->layer, &s->state_size);
    s->count = rite_step_count(f->layer);
    s->cfg = rite_get_config(f->layer);
}

static void snap_check(const snap *s, const fx *f, const char *what) {
    int b;
    size_t size;
    unsigned char *now;
    rite_config cfg;
    for (b = 0; b < 4; b++)
        if (memcmp(s->buf[b], f->buf[b], fx_bytes(f, b))) {
            print_error("%s [%s]: buffer %s changed\n", what, f->name, buf_name[b]);
            fail();
        }
    now = state_of(f->layer, &size);
    if (size != s->state_size || memcmp(now, s->state, size)) {
        print_error("%s [%s]: optimizer state changed\n", what, f->name);
        fail();
    }
    free(now);
    if (rite_step_count(f->layer) != s->count) {
        print_error("%s [%s]: step count changed\n", what, f->name);
        fail();
    }
    cfg = rite_get_config(f->layer);
    if (!cfg_equal(&cfg, &s->cfg)) {
        print_error("%s [%s]: config changed\n", what, f->name);
        fail();
    }
}

static void snap_free(snap *s) {
    free_each(s->buf, 4);
    free(s->state);
}

/* A call that returned `got` was rejected with `want` and left everything
   as in s; with check_apply set, it left nothing to apply either. */
static void check_rejected(const fx *f, const snap *s, rite_status got, rite_status want, int check_apply,
                           const char *what) {
    check_status(got, want, what);
    snap_check(s, f, what);
    if (check_apply) {
        check_status(rite_apply(f->layer, 1.0), RITE_ERR_NOT_PREPARED, what);
        snap_check(s, f, what);
    }
}

/* Make a call that must fail with `want`, check nothing changed, then check
   the layer still matches its twin after one more valid step. */
#define REJECT(f, want, what, call)                     \
    do {                                                \
        snap s_;                                        \
        char m_[512];                                   \
        snprintf(m_, sizeof m_, "%s [%s]", what, (f)->name); \
        snap_take(&s_, f);                              \
        check_status((call), want, m_);                 \
        snap_check(&s_, f, what);                       \
        snap_free(&s_);                                 \
        fx_sync_step(f, what);                          \
    } while (0)

/* A test run on a fresh fixture of every variant, seeded with `seed` plus
   the variant's index. */
typedef struct variant_test {
    void (*body)(fx *f);
    uint64_t seed;
} variant_test;

static void run_on_every_variant(void **state) {
    const variant_test *t = (const variant_test *)*state;
    int v;
    for (v = 0; v < NVARIANTS; v++) {
        fx f;
        fx_setup(&f, &variants[v], t->seed + (uint64_t)v);
        t->body(&f);
        fx_teardown(&f);
    }
}

/* A test run for both optimizers in both precisions. */
typedef struct kind_test {
    void (*body)(rite_optimizer opt, rite_precision prec);
} kind_test;

static void run_for_every_kind(void **state) {
    const kind_test *t = (const kind_test *)*state;
    int opt, prec;
    for (opt = 0; opt < 2; opt++)
        for (prec = 0; prec < 2; prec++) t->body((rite_optimizer)opt, (rite_precision)prec);
}

/* ------------------------------------------------------- status strings */

static void test_status_strings(void **state) {
    int a, b;
    (void)state;
    for (a = 0; a < RITE_STATUS_COUNT; a++) {
        const char *s = rite_status_string((rite_status)a);
        assert_non_null(s);
        assert_true(s[0] != '\0');
        for (b = 0; b < a; b++) {
            if (!strcmp(s, rite_status_string((rite_status)b))) {
                print_error("status %d and %d share the string \"%s\"\n", a, b, s);
                fail();
            }
        }
    }
    assert_non_null(rite_status_string(RITE_STATUS_COUNT));
    assert_non_null(rite_status_string((rite_status)(RITE_STATUS_COUNT + 100)));
    assert_non_null(rite_status_string((rite_status)-1));
    assert_non_null(rite_status_string((rite_status)INT_MAX));
    rite_free(NULL); /* allowed, does nothing */
}

/* ------------------------------------------------------------ bad descs */

static void check_good_desc(const rite_desc *d0, const char *what) {
    rite_desc d = *d0;
    rite_memory mem;
    rite_layer *layer = NULL;
    tu_count_alloc ca;
    check_status(rite_desc_check(&d), RITE_OK, what);
    check_status(rite_memory_query(&d, &mem), RITE_OK, what);
    memset(&ca, 0, sizeof ca);
    d.allocator = tu_count_hooks(&ca);
    check_status(rite_init(&layer, &d), RITE_OK, what);
    assert_non_null(layer);
    rite_free(layer);
    assert_int_equal(ca.nlive, 0);
    assert_int_equal(ca.bad_frees, 0);
}

/* desc_check, memory_query and init all return `want`; init sets *layer to
   NULL and leaves nothing allocated; memory_query leaves *out alone. */
static void check_bad_desc(const rite_desc *d0, rite_status want, const char *what) {
    rite_desc d = *d0;
    rite_memory mem, ref;
    rite_layer *layer;
    tu_count_alloc ca;
    char msg[256];

    snprintf(msg, sizeof msg, "rite_desc_check: %s", what);
    check_status(rite_desc_check(&d), want, msg);

    memset(&mem, 0xA5, sizeof mem);
    memcpy(&ref, &mem, sizeof mem);
    snprintf(msg, sizeof msg, "rite_memory_query: %s", what);
    check_status(rite_memory_query(&d, &mem), want, msg);
    if (memcmp(&mem, &ref, sizeof mem)) {
        print_error("%s: output written on error\n", msg);
        fail();
    }

    snprintf(msg, sizeof msg, "rite_init: %s", what);
    layer = (rite_layer *)&ca; /* any non-NULL value */
    check_status(rite_init(&layer, &d), want, msg);
    assert_null(layer);

    if (d.allocator.alloc || d.allocator.release) return; /* the case is about the hooks */
    memset(&ca, 0, sizeof ca);
    d.allocator = tu_count_hooks(&ca);
    layer = (rite_layer *)&ca;
    snprintf(msg, sizeof msg, "rite_init (hooked allocator): %s", what);
    check_status(rite_init(&layer, &d), want, msg);
    assert_null(layer);
    if (ca.nlive || ca.bad_frees) {
        print_error("%s: %d blocks leaked, %ld bad frees\n", msg, ca.nlive, ca.bad_frees);
        fail();
    }
}

/* check_good_desc when want is RITE_OK, else check_bad_desc. */
static void check_desc(const rite_desc *d, rite_status want, const char *what) {
    if (want == RITE_OK)
        check_good_desc(d, what);
    else
        check_bad_desc(d, want, what);
}

/* One fault at a time on top of a valid desc. */
static void desc_faults(const rite_desc *base) {
    rite_desc d;
    char what[192];
    int minmn = base->m < base->n ? base->m : base->n;
    int maxmn = base->m < base->n ? base->n : base->m;
    int packed_L = base->layout_L == RITE_RANK_LAST ? base->r : base->m;
    int packed_R = base->layout_R == RITE_RANK_LAST ? base->r : base->n;
    int small_L = base->layout_L == RITE_RANK_LAST ? base->r - 1 : base->m - 1;
    int small_R = base->layout_R == RITE_RANK_LAST ? base->r - 1 : base->n - 1;

/* `stmt` applied to the valid desc must give `want` (RITE_OK: accepted) */
#define EXPECT(stmt, want)                                                              \
    do {                                                                                \
        d = *base;                                                                      \
        stmt;                                                                           \
        snprintf(what, sizeof what, "%s (opt %d prec %d layouts %d/%d)", #stmt,         \
                 (int)base->optimizer, (int)base->precision, (int)base->layout_L,       \
                 (int)base->layout_R);                                                  \
        check_desc(&d, want, what);                                                     \
    } while (0)
#define BAD(stmt, want) EXPECT(stmt, want)
#define GOOD(stmt) EXPECT(stmt, RITE_OK)

    GOOD((void)0);

    /* sizes */
    BAD(d.m = 0, RITE_ERR_SIZE);
    BAD(d.m = -1, RITE_ERR_SIZE);
    BAD(d.m = INT_MIN, RITE_ERR_SIZE);
    BAD(d.n = 0, RITE_ERR_SIZE);
    BAD(d.n = -3, RITE_ERR_SIZE);
    BAD(d.r = 0, RITE_ERR_SIZE);
    BAD(d.r = -1, RITE_ERR_SIZE);
    BAD(d.r = INT_MIN, RITE_ERR_SIZE);

    /* rank */
    GOOD(d.r = minmn);
    BAD(d.r = minmn + 1, RITE_ERR_RANK);
    BAD(d.r = maxmn + 1, RITE_ERR_RANK);

    /* layouts */
    BAD(d.layout_L = (rite_layout)2, RITE_ERR_LAYOUT);
    BAD(d.layout_L = (rite_layout)-1, RITE_ERR_LAYOUT);
    BAD(d.layout_R = (rite_layout)2, RITE_ERR_LAYOUT);
    BAD(d.layout_R = (rite_layout)-1, RITE_ERR_LAYOUT);

    /* leading dimensions: negative, too small, and the smallest legal one */
    BAD(d.ld_L = -1, RITE_ERR_LEADING_DIM);
    BAD(d.ld_L = INT_MIN, RITE_ERR_LEADING_DIM);
    BAD(d.ld_L = small_L, RITE_ERR_LEADING_DIM);
    BAD(d.ld_L = 1, RITE_ERR_LEADING_DIM);
    GOOD(d.ld_L = packed_L);
    GOOD(d.ld_L = packed_L + 5);
    BAD(d.ld_R = -1, RITE_ERR_LEADING_DIM);
    BAD(d.ld_R = small_R, RITE_ERR_LEADING_DIM);
    BAD(d.ld_R = 1, RITE_ERR_LEADING_DIM);
    GOOD(d.ld_R = packed_R);
    BAD(d.ld_gL = -1, RITE_ERR_LEADING_DIM);
    BAD(d.ld_gL = small_L, RITE_ERR_LEADING_DIM);
    BAD(d.ld_gL = 1, RITE_ERR_LEADING_DIM);
    GOOD(d.ld_gL = packed_L);
    BAD(d.ld_gR = -1, RITE_ERR_LEADING_DIM);
    BAD(d.ld_gR = small_R, RITE_ERR_LEADING_DIM);
    BAD(d.ld_gR = 1, RITE_ERR_LEADING_DIM);
    GOOD(d.ld_gR = packed_R);
    /* a padded factor with a packed (inherited) gradient is fine,
       a padded factor whose gradient's ld is too small is not */
    GOOD(d.ld_L = packed_L + 3; d.ld_gL = 0);
    BAD(d.ld_L = packed_L + 3; d.ld_gL = small_L, RITE_ERR_LEADING_DIM);

    /* precision and optimizer kind */
    BAD(d.precision = (rite_precision)2, RITE_ERR_PRECISION);
    BAD(d.precision = (rite_precision)-1, RITE_ERR_PRECISION);
    BAD(d.optimizer = (rite_optimizer)2, RITE_ERR_OPTIMIZER);
    BAD(d.optimizer = (rite_optimizer)-1, RITE_ERR_OPTIMIZER);
#undef EXPECT
#undef BAD
#undef GOOD
}

static void test_desc_errors(void **state) {
    static const int sizes[2][2] = {{7, 5}, {5, 7}};
    int opt, prec, lL, lR, s;
    rite_desc d;
    rite_memory mem;
    rite_layer *layer;
    (void)state;

    for (opt = 0; opt < 2; opt++)
        for (prec = 0; prec < 2; prec++)
            for (lL = 0; lL < 2; lL++)
                for (lR = 0; lR < 2; lR++)
                    for (s = 0; s < 2; s++) {
                        d = tu_desc(sizes[s][0], sizes[s][1], 3, (rite_optimizer)opt, (rite_precision)prec);
                        d.layout_L = (rite_layout)lL;
                        d.layout_R = (rite_layout)lR;
                        desc_faults(&d);
                    }

    /* NULL pointers */
    d = tu_desc(6, 4, 2, RITE_LORA_RITE, RITE_FLOAT32);
    check_status(rite_desc_check(NULL), RITE_ERR_NULL_ARGUMENT, "rite_desc_check(NULL)");
    check_status(rite_memory_query(NULL, &mem), RITE_ERR_NULL_ARGUMENT, "rite_memory_query(NULL, out)");
    check_status(rite_memory_query(&d, NULL), RITE_ERR_NULL_ARGUMENT, "rite_memory_query(desc, NULL)");
    check_status(rite_init(NULL, &d), RITE_ERR_NULL_ARGUMENT, "rite_init(NULL, desc)");
    layer = (rite_layer *)&d;
    check_status(rite_init(&layer, NULL), RITE_ERR_NULL_ARGUMENT, "rite_init(layer, NULL)");
    assert_null(layer);
}

/* A size whose state cannot even be counted in size_t is "too large". */
static void test_desc_too_large(void **state) {
    rite_desc d;
    (void)state;
    memset(&d, 0, sizeof d);
    d.m = INT_MAX;
    d.n = INT_MAX;
    d.r = INT_MAX; /* r x r doubles alone exceed SIZE_MAX bytes */
    check_bad_desc(&d, RITE_ERR_SIZE, "m = n = r = INT_MAX");
    d.precision = RITE_FLOAT64;
    d.optimizer = RITE_ADAMW;
    check_bad_desc(&d, RITE_ERR_SIZE, "m = n = r = INT_MAX (adamw, f64)");
}

/* ----------------------------------------------------------- bad configs */

typedef struct cfg_case {
    const char *name;
    size_t offset; /* of a double field in rite_config */
    double value;
    rite_status want; /* RITE_OK: a legal boundary value */
    int adamw;        /* AdamW uses this field */
} cfg_case;

#define CFG(field, value, want, adamw) {#field " = " #value, offsetof(rite_config, field), value, want, adamw}
static const cfg_case cfg_cases[] = {
    CFG(lr, -1e-3, RITE_ERR_LR, 1),
    CFG(lr, -INFINITY, RITE_ERR_LR, 1),
    CFG(lr, NAN, RITE_ERR_LR, 1),
    CFG(lr, INFINITY, RITE_ERR_LR, 1),
    CFG(lr, 0.0, RITE_OK, 1),
    CFG(beta1, 1.0, RITE_ERR_BETA1, 1),
    CFG(beta1, 1.5, RITE_ERR_BETA1, 1),
    CFG(beta1, -0.1, RITE_ERR_BETA1, 1),
    CFG(beta1, -DBL_MIN, RITE_ERR_BETA1, 1),
    CFG(beta1, NAN, RITE_ERR_BETA1, 1),
    CFG(beta1, INFINITY, RITE_ERR_BETA1, 1),
    CFG(beta1, 0.0, RITE_OK, 1),
    CFG(beta1, 0.9999999999999999, RITE_OK, 1),
    CFG(beta2, 1.0, RITE_ERR_BETA2, 1),
    CFG(beta2, 2.0, RITE_ERR_BETA2, 1),
    CFG(beta2, -0.5, RITE_ERR_BETA2, 1),
    CFG(beta2, NAN, RITE_ERR_BETA2, 1),
    CFG(beta2, -INFINITY, RITE_ERR_BETA2, 1),
    CFG(beta2, 0.0, RITE_OK, 1),
    CFG(beta2, 0.9999999999999999, RITE_OK, 1),
    CFG(eps, -1e-8, RITE_ERR_EPS, 1),
    CFG(eps, NAN, RITE_ERR_EPS, 1),
    CFG(eps, INFINITY, RITE_ERR_EPS, 1),
    CFG(eps, 0.0, RITE_OK, 1),
    CFG(eps_root, -1e-8, RITE_ERR_EPS_ROOT, 0),
    CFG(eps_root, NAN, RITE_ERR_EPS_ROOT, 0),
    CFG(eps_root, INFINITY, RITE_ERR_EPS_ROOT, 0),
    CFG(eps_root, 0.0, RITE_OK, 0),
    CFG(clip, -1.0, RITE_ERR_CLIP, 0),
    CFG(clip, -INFINITY, RITE_ERR_CLIP, 0),
    CFG(clip, NAN, RITE_ERR_CLIP, 0),
    CFG(clip, 0.0, RITE_OK, 0),
    CFG(clip, INFINITY, RITE_OK, 0),
    CFG(skip, -1.0, RITE_ERR_SKIP, 0),
    CFG(skip, NAN, RITE_ERR_SKIP, 0),
    CFG(skip, 0.0, RITE_OK, 0),
    CFG(skip, INFINITY, RITE_OK, 0),
    CFG(cap, -1.0, RITE_ERR_CAP, 0),
    CFG(cap, NAN, RITE_ERR_CAP, 0),
    CFG(cap, 0.0, RITE_OK, 0),
    CFG(cap, INFINITY, RITE_OK, 0),
    CFG(weight_decay, -1e-4, RITE_ERR_WEIGHT_DECAY, 1),
    CFG(weight_decay, NAN, RITE_ERR_WEIGHT_DECAY, 1),
    CFG(weight_decay, INFINITY, RITE_ERR_WEIGHT_DECAY, 1),
    CFG(weight_decay, 0.0, RITE_OK, 1),
};
#undef CFG
enum { NCFG = (int)(sizeof cfg_cases / sizeof cfg_cases[0]) };

static rite_config cfg_with(rite_config c, const cfg_case *k) {
    memcpy((unsigned char *)&c + k->offset, &k->value, sizeof(double));
    return c;
}

/* Bad hyper-parameters in the desc: desc_check, memory_query and init. */
static void check_config_in_desc(rite_optimizer opt, rite_precision prec) {
    int i;
    for (i = 0; i < NCFG; i++) {
        const cfg_case *k = &cfg_cases[i];
        rite_config c;
        rite_desc d;
        char what[160];
        if (opt == RITE_ADAMW && !k->adamw) continue;
        c = cfg_with(rite_config_default(opt), k);
        d = tu_desc(9, 6, 2, opt, prec);
        d.layout_R = RITE_RANK_FIRST;
        d.config = &c;
        snprintf(what, sizeof what, "desc config %s (%s, %s)", k->name, opt ? "adamw" : "rite", prec ? "f64" : "f32");
        check_desc(&d, k->want, what);
    }
}

/* Bad hyper-parameters on a live layer: rite_set_config and rite_set_lr. */
static void check_set_config(fx *f) {
    rite_config now;
    int i;
    for (i = 0; i < NCFG; i++) {
        const cfg_case *k = &cfg_cases[i];
        rite_config bad;
        char what[160];
        if (f->v.opt == RITE_ADAMW && !k->adamw) continue;
        bad = cfg_with(f->cfg, k);
        snprintf(what, sizeof what, "rite_set_config(%s)", k->name);
        if (k->want != RITE_OK) {
            REJECT(f, k->want, what, rite_set_config(f->layer, &bad));
        } else {
            /* legal boundary: accepted and reported back, then undone */
            check_status(rite_set_config(f->layer, &bad), RITE_OK, what);
            now = rite_get_config(f->layer);
            assert_true(cfg_equal(&now, &bad));
            check_status(rite_set_config(f->layer, &f->cfg), RITE_OK, "restore config");
            fx_sync_step(f, what);
        }
    }
    REJECT(f, RITE_ERR_LR, "rite_set_lr(-1)", rite_set_lr(f->layer, -1.0));
    REJECT(f, RITE_ERR_LR, "rite_set_lr(NaN)", rite_set_lr(f->layer, NAN));
    REJECT(f, RITE_ERR_LR, "rite_set_lr(Inf)", rite_set_lr(f->layer, INFINITY));
    REJECT(f, RITE_ERR_LR, "rite_set_lr(-Inf)", rite_set_lr(f->layer, -INFINITY));
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "rite_set_config(layer, NULL)", rite_set_config(f->layer, NULL));
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "rite_set_config(NULL, cfg)", rite_set_config(NULL, &f->cfg));
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "rite_set_lr(NULL, lr)", rite_set_lr(NULL, 1e-3));
    /* a legal lr through rite_set_lr is applied, and undone */
    check_status(rite_set_lr(f->layer, 0.5), RITE_OK, "rite_set_lr(0.5)");
    now = rite_get_config(f->layer);
    assert_true(now.lr == 0.5);
    check_status(rite_set_lr(f->layer, f->cfg.lr), RITE_OK, "rite_set_lr(restore)");
    fx_sync_step(f, "rite_set_lr(0.5) then restore");
}

/* ---------------------------------------------------- NULL layer buffers */

static void check_null_pointers(fx *f) {
    void *b[4];
    double sq = 0;
    size_t size;
    unsigned char *dst;
    int k;
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "step(NULL layer)", fx_step(f, NULL, f->buf));
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "prepare(NULL layer)", fx_prepare(f, NULL, f->buf, &sq));
    for (k = 0; k < 4; k++) {
        char what[64];
        memcpy(b, f->buf, sizeof b);
        b[k] = NULL;
        snprintf(what, sizeof what, "step(%s = NULL)", buf_name[k]);
        REJECT(f, RITE_ERR_NULL_ARGUMENT, what, fx_step(f, f->layer, b));
        snprintf(what, sizeof what, "prepare(%s = NULL)", buf_name[k]);
        REJECT(f, RITE_ERR_NULL_ARGUMENT, what, fx_prepare(f, f->layer, b, &sq));
    }
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "prepare(sumsq = NULL)", fx_prepare(f, f->layer, f->buf, NULL));
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "rite_apply(NULL)", rite_apply(NULL, 1.0));
    size = rite_state_size(f->layer);
    dst = (unsigned char *)malloc(size);
    assert_non_null(dst);
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "rite_state_copy(NULL layer)", rite_state_copy(NULL, dst, size));
    REJECT(f, RITE_ERR_NULL_ARGUMENT, "rite_state_copy(dst = NULL)", rite_state_copy(f->layer, NULL, size));
    free(dst);
}

/* ------------------------------------------------ functions of the other precision */

static void check_precision_mismatch(fx *f) {
    size_t oes = f->es == sizeof(float) ? sizeof(double) : sizeof(float);
    void *o[4], *ocopy[4];
    int b, prepare;
    /* valid buffers of the other precision, with the same values */
    for (b = 0; b < 4; b++) {
        size_t i;
        o[b] = malloc(f->count[b] * oes);
        ocopy[b] = malloc(f->count[b] * oes);
        assert_non_null(o[b]);
        assert_non_null(ocopy[b]);
        for (i = 0; i < f->count[b]; i++) {
            if (f->es == sizeof(float))
                ((double *)o[b])[i] = ((float *)f->buf[b])[i];
            else
                ((float *)o[b])[i] = (float)((double *)f->buf[b])[i];
        }
        memcpy(ocopy[b], o[b], f->count[b] * oes);
    }
    for (prepare = 0; prepare < 2; prepare++) {
        char what[64];
        double sq = 0;
        snap s;
        snprintf(what, sizeof what, "%s_%s on a %s layer", prepare ? "rite_prepare" : "rite_step",
                 oes == sizeof(float) ? "f32" : "f64", f->es == sizeof(float) ? "float32" : "float64");
        snap_take(&s, f);
        /* a rejected call prepares nothing */
        check_rejected(f, &s, call_entry(oes, prepare, f->layer, o, &sq), RITE_ERR_PRECISION, 1, what);
        snap_free(&s);
        for (b = 0; b < 4; b++) assert_memory_equal(o[b], ocopy[b], f->count[b] * oes);
        fx_sync_step(f, what);
    }
    for (b = 0; b < 4; b++) assert_memory_equal(o[b], ocopy[b], f->count[b] * oes);
    free_each(o, 4);
    free_each(ocopy, 4);
}

/* ------------------------------------------- non-finite gradients and factors */

/* `value` in the first, middle or last (pos 0, 1, 2) element of buffer b,
   then a step or a prepare: rejected, nothing changed, nothing prepared. */
static void check_nonfinite_element(fx *f, int b, int pos, double value, const char *value_name, int prepare) {
    static const char *const pos_name[3] = {"first", "middle", "last"};
    int k = f->rows[b];
    int i = pos == 0 ? 0 : pos == 1 ? k / 2 : k - 1;
    int j = pos == 0 ? 0 : pos == 1 ? NR / 2 : NR - 1;
    size_t idx = fx_index(f, b, i, j);
    unsigned char saved[sizeof(double)];
    rite_status want = b <= B_R ? RITE_ERR_NONFINITE_FACTOR : RITE_ERR_NONFINITE_GRADIENT;
    char what[160];
    snap s;
    double sq = 0;

    snprintf(what, sizeof what, "%s with %s in the %s element of %s", prepare ? "prepare" : "step", value_name,
             pos_name[pos], buf_name[b]);
    fx_new_grads(f);
    memcpy(saved, (unsigned char *)f->buf[b] + idx * f->es, f->es);
    fx_put(f, f->buf[b], b, i, j, value);
    snap_take(&s, f);
    check_rejected(f, &s, call_entry(f->es, prepare, f->layer, f->buf, &sq), want, prepare, what);
    snap_free(&s);
    memcpy((unsigned char *)f->buf[b] + idx * f->es, saved, f->es);
    fx_sync_step(f, what);
}

static void check_nonfinite_inputs(fx *f) {
    static const double values[3] = {NAN, INFINITY, -INFINITY};
    static const char *const value_name[3] = {"NaN", "+Inf", "-Inf"};
    int b, pos, val, prepare;
    for (b = 0; b < 4; b++)
        for (pos = 0; pos < 3; pos++)
            for (val = 0; val < 3; val++)
                for (prepare = 0; prepare < 2; prepare++)
                    check_nonfinite_element(f, b, pos, values[val], value_name[val], prepare);
}

/* Non-finite values in the padding are not matrix elements: no error, no
   effect, and the padding is left as it was. */
static void check_padding_not_read(fx *f) {
    int b, s;
    for (s = 0; s < 3; s++) {
        fx_new_grads(f);
        for (b = 0; b < 4; b++) fx_fill_padding(f, f->buf[b], b, NAN);
        check_status(fx_step(f, f->layer, f->buf), RITE_OK, "step with NaN padding");
        check_status(fx_step(f, f->twin, f->tbuf), RITE_OK, "step with finite padding");
        for (b = 0; b < 4; b++) {
            size_t idx;
            for (idx = 0; idx < f->count[b]; idx++) {
                if (fx_is_padding(f, b, idx)) {
                    double x = f->es == sizeof(float) ? ((float *)f->buf[b])[idx] : ((double *)f->buf[b])[idx];
                    double y = f->es == sizeof(float) ? ((float *)f->tbuf[b])[idx] : ((double *)f->tbuf[b])[idx];
                    assert_true(isnan(x));
                    assert_true(y == PAD_VALUE);
                }
            }
            fx_fill_padding(f, f->buf[b], b, PAD_VALUE);
        }
        fx_assert_twin(f, "NaN padding");
    }
}

/* ------------------------------------------------------- prepare / apply */

/* A layer that was never prepared has nothing to apply, and stays as it was. */
static void check_apply_on_new_layer(const rite_desc *desc) {
    rite_layer *fresh = NULL;
    unsigned char *z0, *z1;
    size_t zs0, zs1;
    check_status(rite_init(&fresh, desc), RITE_OK, "init fresh");
    z0 = state_of(fresh, &zs0);
    check_status(rite_apply(fresh, 1.0), RITE_ERR_NOT_PREPARED, "apply on a new layer");
    z1 = state_of(fresh, &zs1);
    assert_int_equal(zs0, zs1);
    assert_memory_equal(z0, z1, zs0);
    assert_true(rite_step_count(fresh) == 0);
    free(z0);
    free(z1);
    rite_free(fresh);
}

/* A prepared layer refuses totals below its own sum of squares sq, which
   changes nothing; then applies with sq as its twin's step would. */
static void check_apply_refuses_small_totals(fx *f, double sq, const snap *s) {
    double bad[8];
    int nbad = 0, i;
    bad[nbad++] = -1.0;
    bad[nbad++] = -DBL_MIN;
    bad[nbad++] = -INFINITY;
    bad[nbad++] = NAN;
    if (sq > 0) {
        bad[nbad++] = 0.0;
        bad[nbad++] = 0.5 * sq;
        bad[nbad++] = nextafter(sq, 0.0);
    }
    for (i = 0; i < nbad; i++) {
        char what[96];
        snprintf(what, sizeof what, "apply(total = %.17g) with own sumsq %.17g", bad[i], sq);
        check_status(rite_apply(f->layer, bad[i]), RITE_ERR_SUMSQ, what);
        snap_check(s, f, what);
    }
}

static void check_apply_errors(fx *f) {
    snap s;
    double sq = -1, sq2 = -1;

    check_apply_on_new_layer(&f->desc);

    /* a stepped layer: the step consumed its own prepare */
    REJECT(f, RITE_ERR_NOT_PREPARED, "apply after a step", rite_apply(f->layer, 1.0));

    /* prepare changes nothing, then rejected totals, then the right one */
    fx_new_grads(f);
    snap_take(&s, f);
    check_status(fx_prepare(f, f->layer, f->buf, &sq), RITE_OK, "prepare");
    snap_check(&s, f, "prepare");
    if (f->v.opt == RITE_ADAMW) {
        assert_true(sq == 0.0);
    } else {
        assert_true(sq > 0.0 && isfinite(sq));
    }
    check_apply_refuses_small_totals(f, sq, &s);
    snap_free(&s);
    /* the prepared step survives rejected totals */
    check_status(rite_apply(f->layer, sq), RITE_OK, "apply(own sumsq) after rejected totals");
    check_status(fx_step(f, f->twin, f->tbuf), RITE_OK, "twin step");
    fx_assert_twin(f, "apply after rejected totals");

    /* one prepare, two applies */
    REJECT(f, RITE_ERR_NOT_PREPARED, "second apply after one prepare", rite_apply(f->layer, sq));

    /* a larger global total is legal: same two-phase step on both */
    fx_new_grads(f);
    check_status(fx_prepare(f, f->layer, f->buf, &sq), RITE_OK, "prepare (global)");
    check_status(fx_prepare(f, f->twin, f->tbuf, &sq2), RITE_OK, "prepare twin (global)");
    assert_memory_equal(&sq, &sq2, sizeof sq);
    check_status(rite_apply(f->layer, 4 * sq + 1), RITE_OK, "apply (global)");
    check_status(rite_apply(f->twin, 4 * sq + 1), RITE_OK, "apply twin (global)");
    fx_assert_twin(f, "two-phase step with a global total");
    fx_sync_step(f, "two-phase step");
}

/* --------------------------------------------------------- rite_state_copy */

static void check_state_copy_size(fx *f) {
    size_t size, i;
    unsigned char *dst;
    int bad_write = 0;
    size = rite_state_size(f->layer);
    assert_true(size > 0);
    dst = (unsigned char *)malloc(size + 16);
    assert_non_null(dst);
    memset(dst, 0x5A, size + 16);
    REJECT(f, RITE_ERR_BUFFER_SIZE, "rite_state_copy(size - 1)", rite_state_copy(f->layer, dst, size - 1));
    REJECT(f, RITE_ERR_BUFFER_SIZE, "rite_state_copy(0)", rite_state_copy(f->layer, dst, 0));
    for (i = 0; i < size + 16; i++) bad_write |= dst[i] != 0x5A;
    assert_false(bad_write);
    /* a larger buffer is fine; nothing is written past the state */
    check_status(rite_state_copy(f->layer, dst, size + 8), RITE_OK, "rite_state_copy(size + 8)");
    for (i = size; i < size + 16; i++) bad_write |= dst[i] != 0x5A;
    assert_false(bad_write);
    free(dst);
}

/* --------------------------------------------------- non-finite updates */

/* lr * weight_decay * L overflows the factor's precision:
   double 1e300 * 1e20 = 1e320, float 1e30 * 1e10 = 1e40 */
static void check_overflowing_lr(fx *f) {
    rite_config huge = f->cfg;
    snap s;
    double sq = 0;
    rite_status st;
    huge.lr = f->es == sizeof(double) ? 1e300 : 1e30;
    huge.weight_decay = f->es == sizeof(double) ? 1e20 : 1e10;
    check_status(rite_set_config(f->layer, &huge), RITE_OK, "set huge lr");
    fx_new_grads(f);

    snap_take(&s, f);
    check_rejected(f, &s, fx_step(f, f->layer, f->buf), RITE_ERR_NONFINITE_UPDATE, 0, "step with an overflowing lr");
    /* prepare may already see it (AdamW needs no global total); if it
       does not, apply must */
    st = fx_prepare(f, f->layer, f->buf, &sq);
    if (st == RITE_OK) st = rite_apply(f->layer, sq);
    check_rejected(f, &s, st, RITE_ERR_NONFINITE_UPDATE, 0, "prepare + apply with an overflowing lr");
    snap_free(&s);

    check_status(rite_set_config(f->layer, &f->cfg), RITE_OK, "restore config");
    fx_sync_step(f, "an overflowing lr");
}

/* a finite gradient whose square overflows the second moment (double) */
static void check_overflowing_gradient_square(fx *f) {
    rite_config noclip = f->cfg;
    int b;
    if (f->v.opt == RITE_LORA_RITE) {
        noclip.clip = 0; /* neither clip nor skip may hide the gradient */
        noclip.skip = 0;
    }
    check_status(rite_set_config(f->layer, &noclip), RITE_OK, "set clip = skip = 0");
    check_status(rite_set_config(f->twin, &noclip), RITE_OK, "set clip = skip = 0 (twin)");
    fx_sync_step(f, "clip = skip = 0");
    for (b = B_GL; b <= B_GR; b++) {
        char msg[96];
        snap s;
        snprintf(msg, sizeof msg, "step with 1e200 in %s", buf_name[b]);
        fx_new_grads(f);
        fx_put(f, f->buf[b], b, f->rows[b] / 2, NR / 2, 1e200);
        fx_put(f, f->tbuf[b], b, f->rows[b] / 2, NR / 2, 1e200);
        snap_take(&s, f);
        check_rejected(f, &s, fx_step(f, f->layer, f->buf), RITE_ERR_NONFINITE_UPDATE, 0, msg);
        snap_free(&s);
        fx_sync_step(f, msg);
    }
}

static void check_nonfinite_update(fx *f) {
    check_overflowing_lr(f);
    if (f->es == sizeof(double)) check_overflowing_gradient_square(f);
}

/* Finite inputs: a step either succeeds with finite factors or is rejected
   with RITE_ERR_NONFINITE_UPDATE and changes nothing; it never reports
   success with NaN or Inf in a factor. Here L is about 1e160 (double), so
   ||L||_F^2 overflows although L, R and the balanced factors of SPEC step 15
   (about 1e79 and 1e80) are all representable. */
static void test_huge_factor(void **state) {
    enum { HM = 12, HN = 10, HR = 3 };
    int balance, lay;
    (void)state;
    for (balance = 0; balance < 2; balance++)
        for (lay = 0; lay < 2; lay++) {
            double L[HM * HR], R[HN * HR], gL[HM * HR], gR[HN * HR], L0[HM * HR], R0[HN * HR];
            tu_rng g = {900};
            rite_config c = rite_config_default(RITE_LORA_RITE);
            rite_desc d;
            rite_layer *layer = NULL;
            unsigned char *s0, *s1;
            size_t n0, n1;
            rite_status st;
            char what[96];
            int i, bad = 0;
            snprintf(what, sizeof what, "step with |L| ~ 1e160, balance %d, layout_L %d", balance, lay);
            c.balance = balance;
            d = tu_desc(HM, HN, HR, RITE_LORA_RITE, RITE_FLOAT64);
            d.layout_L = (rite_layout)lay;
            d.layout_R = (rite_layout)(1 - lay);
            d.config = &c;
            /* storage order does not matter for i.i.d. entries */
            tu_fill_normal(&g, L, HM * HR, 1e160);
            tu_fill_normal(&g, R, HN * HR, 1.0);
            tu_fill_normal(&g, gL, HM * HR, 1.0);
            tu_fill_normal(&g, gR, HN * HR, 1.0);
            memcpy(L0, L, sizeof L);
            memcpy(R0, R, sizeof R);
            check_status(rite_init(&layer, &d), RITE_OK, what);
            s0 = state_of(layer, &n0);
            st = rite_step_f64(layer, L, R, gL, gR);
            if (st == RITE_OK) {
                for (i = 0; i < HM * HR; i++) bad += !isfinite(L[i]);
                for (i = 0; i < HN * HR; i++) bad += !isfinite(R[i]);
                if (bad) {
                    print_error("%s: RITE_OK but %d factor entries are not finite (L[0] = %g, R[0] = %g)\n",
                                what, bad, L[0], R[0]);
                    fail();
                }
            } else {
                check_status(st, RITE_ERR_NONFINITE_UPDATE, what);
                assert_memory_equal(L, L0, sizeof L);
                assert_memory_equal(R, R0, sizeof R);
                s1 = state_of(layer, &n1);
                assert_int_equal(n0, n1);
                assert_memory_equal(s0, s1, n0);
                free(s1);
                assert_true(rite_step_count(layer) == 0);
            }
            free(s0);
            rite_free(layer);
        }
}

/* ------------------------------------------------------------ allocator */

/* rite_init with each of its allocations refused in turn: out of memory,
   *layer set to NULL, and everything it took given back. */
static void check_out_of_memory(rite_optimizer opt, rite_precision prec) {
    rite_desc d = tu_desc(20, 16, 4, opt, prec);
    tu_count_alloc ca;
    rite_layer *layer = NULL;
    long n, k;
    d.layout_L = RITE_RANK_FIRST;

    /* how many allocations a successful init makes */
    memset(&ca, 0, sizeof ca);
    d.allocator = tu_count_hooks(&ca);
    check_status(rite_init(&layer, &d), RITE_OK, "init with counting hook");
    assert_non_null(layer);
    n = ca.allocs;
    assert_true(n >= 1);
    rite_free(layer);
    assert_int_equal(ca.nlive, 0);
    assert_int_equal(ca.bad_frees, 0);

    /* refuse each one in turn */
    for (k = 1; k <= n; k++) {
        char what[96];
        snprintf(what, sizeof what, "init with allocation %ld of %ld refused (opt %d prec %d)", k, n, (int)opt,
                 (int)prec);
        memset(&ca, 0, sizeof ca);
        ca.fail_at = k;
        d.allocator = tu_count_hooks(&ca);
        layer = (rite_layer *)&ca;
        check_status(rite_init(&layer, &d), RITE_ERR_OUT_OF_MEMORY, what);
        assert_null(layer);
        if (ca.nlive || ca.bad_frees || ca.allocs != ca.frees) {
            print_error("%s: %ld allocs, %ld frees, %ld bad frees\n", what, ca.allocs, ca.frees, ca.bad_frees);
            fail();
        }
    }
}

/* Only one of the two hooks set: a required pointer is missing. rite_init,
   rite_desc_check and rite_memory_query must agree, and nothing may be
   allocated through the half-set hook. */
static void check_half_allocator(rite_allocator half, const char *what) {
    rite_desc d = tu_desc(8, 6, 2, RITE_LORA_RITE, RITE_FLOAT32);
    tu_count_alloc *ca = (tu_count_alloc *)half.user_data;
    memset(ca, 0, sizeof *ca);
    d.allocator = half;
    check_bad_desc(&d, RITE_ERR_NULL_ARGUMENT, what);
    assert_int_equal(ca->nlive, 0);
    assert_int_equal(ca->requests, 0);
}

static void test_half_allocator(void **state) {
    tu_count_alloc ca;
    const rite_allocator alloc_only = {.alloc = tu_count_malloc, .user_data = &ca};
    const rite_allocator release_only = {.release = tu_count_free, .user_data = &ca};
    (void)state;
    check_half_allocator(alloc_only, "allocator.release = NULL");
    check_half_allocator(release_only, "allocator.alloc = NULL");
}

/* A pending prepare survives a rejected prepare: prepare (good), prepare
   (NaN gradient, rejected), apply -> the first prepare is applied, equal to
   a twin that never saw the rejected call. */
typedef union small_buf {
    float f[12];
    double d[12];
} small_buf;

/* n values into b as floats (es = sizeof(float)) or doubles */
static void small_store(small_buf *b, size_t es, const double *v, int n) {
    int i;
    for (i = 0; i < n; i++) {
        if (es == sizeof(float))
            b->f[i] = (float)v[i];
        else
            b->d[i] = v[i];
    }
}

static void check_pending_prepare_survives(rite_optimizer opt, rite_precision prec) {
    const rite_desc d = tu_desc(6, 4, 2, opt, prec);
    const size_t es = prec == RITE_FLOAT64 ? sizeof(double) : sizeof(float);
    double L[12], R[8], gL[12], gR[8], sq = 0;
    small_buf La, Ra, Lb, Rb, gLs, gRs, bad;
    void *first[4] = {&La, &Ra, &gLs, &gRs}, *rejected[4] = {&La, &Ra, &bad, &gRs}, *twin[4] = {&Lb, &Rb, &gLs, &gRs};
    rite_layer *a, *b;
    int i;
    for (i = 0; i < 12; i++) {
        L[i] = 0.1 * (i + 1) - 0.5 * (i % 3);
        gL[i] = 0.01 * (i % 5) - 0.02;
    }
    for (i = 0; i < 8; i++) {
        R[i] = 0.2 * (i % 4) - 0.3 + 0.05 * i;
        gR[i] = 0.03 * (i % 3) - 0.01;
    }
    small_store(&La, es, L, 12);
    small_store(&Lb, es, L, 12);
    small_store(&Ra, es, R, 8);
    small_store(&Rb, es, R, 8);
    small_store(&gLs, es, gL, 12);
    small_store(&gRs, es, gR, 8);
    gL[5] = NAN;
    small_store(&bad, es, gL, 12);
    assert_int_equal(rite_init(&a, &d), RITE_OK);
    assert_int_equal(rite_init(&b, &d), RITE_OK);
    assert_int_equal(call_entry(es, 1, a, first, &sq), RITE_OK);
    assert_int_equal(call_entry(es, 1, a, rejected, &sq), RITE_ERR_NONFINITE_GRADIENT);
    assert_int_equal(rite_apply(a, 1e300), RITE_OK);
    assert_int_equal(call_entry(es, 1, b, twin, &sq), RITE_OK);
    assert_int_equal(rite_apply(b, 1e300), RITE_OK);
    assert_memory_equal(&La, &Lb, 12 * es);
    assert_memory_equal(&Ra, &Rb, 8 * es);
    rite_free(a);
    rite_free(b);
}

/* Clipping acts before g^T g is formed (SPEC 5 before 7): float gradients
   near 1e20 with skip off succeed and give the step of the same gradients
   scaled to ordinary size (both are clipped to the same norm). And float
   AdamW with a beta that rounds to 1 in float still weights the gradient by
   1 - beta: the float step matches the double one. */
static void test_float_extremes(void **state) {
    rite_desc d;
    rite_config c;
    rite_layer *a, *b, *ad, *af;
    float La[12], Ra[8], Lb[12], Rb[8], gLa[12], gRa[8], gLb[12], gRb[8], Lf[12], Rf[8];
    double Ld[12], Rd[8], gLd[12], gRd[8];
    int i;
    (void)state;
    d = tu_desc(6, 4, 2, RITE_LORA_RITE, RITE_FLOAT32);
    c = rite_config_default(RITE_LORA_RITE);
    c.skip = 0;
    c.lr = 0.01;
    d.config = &c;
    assert_int_equal(rite_init(&a, &d), RITE_OK);
    assert_int_equal(rite_init(&b, &d), RITE_OK);
    for (i = 0; i < 12; i++) {
        La[i] = Lb[i] = 0.3f * (float)((i * 7) % 5) - 0.5f + 0.01f * (float)i;
        gLb[i] = 10.0f * (float)((i * 3) % 4) - 12.0f;
        gLa[i] = gLb[i] * 1e20f;
    }
    for (i = 0; i < 8; i++) {
        Ra[i] = Rb[i] = 0.2f * (float)((i * 5) % 3) - 0.25f + 0.02f * (float)i;
        gRb[i] = 5.0f * (float)((i * 2) % 5) - 9.0f;
        gRa[i] = gRb[i] * 1e20f;
    }
    assert_int_equal(rite_step_f32(a, La, Ra, gLa, gRa), RITE_OK);
    assert_int_equal(rite_step_f32(b, Lb, Rb, gLb, gRb), RITE_OK);
    for (i = 0; i < 12; i++) assert_true(fabs((double)La[i] - (double)Lb[i]) <= 1e-5 * (1 + fabs((double)Lb[i])));
    for (i = 0; i < 8; i++) assert_true(fabs((double)Ra[i] - (double)Rb[i]) <= 1e-5 * (1 + fabs((double)Rb[i])));
    rite_free(a);
    rite_free(b);

    c = rite_config_default(RITE_ADAMW);
    c.beta1 = 0.99999999;
    c.beta2 = 0.99999999;
    d.optimizer = RITE_ADAMW;
    assert_int_equal(rite_init(&af, &d), RITE_OK);
    d.precision = RITE_FLOAT64;
    assert_int_equal(rite_init(&ad, &d), RITE_OK);
    for (i = 0; i < 12; i++) {
        Ld[i] = 0.5;
        Lf[i] = 0.5f;
        gLd[i] = 0.01;
        gLb[i] = 0.01f;
    }
    for (i = 0; i < 8; i++) {
        Rd[i] = -0.5;
        Rf[i] = -0.5f;
        gRd[i] = -0.02;
        gRb[i] = -0.02f;
    }
    assert_int_equal(rite_step_f64(ad, Ld, Rd, gLd, gRd), RITE_OK);
    assert_int_equal(rite_step_f32(af, Lf, Rf, gLb, gRb), RITE_OK);
    /* first step: each entry moves by lr against the sign of its gradient */
    for (i = 0; i < 12; i++) assert_true(fabs((double)Lf[i] - Ld[i]) <= 1e-6 && fabs(Ld[i] - 0.499) <= 1e-9);
    for (i = 0; i < 8; i++) assert_true(fabs((double)Rf[i] - Rd[i]) <= 1e-6 && fabs(Rd[i] + 0.499) <= 1e-9);
    rite_free(ad);
    rite_free(af);
}

/* a test's name and the body that runs on every fixture variant (its seed) */
#define VARIANT_TEST(x, seed) {"test_" #x, run_on_every_variant, NULL, NULL, &(variant_test){check_##x, seed}}
/* a test's name and the body that runs for both optimizers and precisions */
#define KIND_TEST(x) {"test_" #x, run_for_every_kind, NULL, NULL, &(kind_test){check_##x}}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_desc_errors),
        cmocka_unit_test(test_desc_too_large),
        KIND_TEST(config_in_desc),
        VARIANT_TEST(set_config, 100),
        VARIANT_TEST(null_pointers, 200),
        VARIANT_TEST(precision_mismatch, 300),
        VARIANT_TEST(nonfinite_inputs, 400),
        VARIANT_TEST(padding_not_read, 500),
        VARIANT_TEST(apply_errors, 600),
        VARIANT_TEST(state_copy_size, 700),
        VARIANT_TEST(nonfinite_update, 800),
        cmocka_unit_test(test_huge_factor),
        KIND_TEST(out_of_memory),
        cmocka_unit_test(test_half_allocator),
        KIND_TEST(pending_prepare_survives),
        cmocka_unit_test(test_float_extremes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
