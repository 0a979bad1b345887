/* test_model.c - the model API: every LoRA module of a network in one call.

   A model of five modules of different shapes and ranks, in PEFT's storage
   (lora_A r x in, lora_B out x r) and in the other one, some with an
   lr_scale other than 1, is held against what can be derived without it:
   - a model step equals, to the bit (factors and rite_state_copy bytes),
     the layer API's two-phase path: standalone layers made with the same
     sizes, layouts and config (lr times lr_scale), rite_prepare_* on each,
     the sums added in layer order, rite_apply with the total; for
     LoRA-RITE and AdamW, float and double, with global clipping active,
     keep_basis, balance and the other options;
   - the result is the same for 1, 2 and 3 built-in threads and for a
     caller's parallel_for that runs the layers in reverse order;
   - a NaN or Inf in any buffer of any layer changes no layer, the message
     names the layer and the buffer, and the next good step equals that of
     a twin model that never saw the bad batch; so does a step that would
     overflow;
   - the two-phase model API with a total that includes another process's
     share equals the layer path with the same total;
   - the diagnostics against the naive reference (tests/ref_rite.h) and
     hand values (a factor with orthogonal columns of norms 1 and 10 has
     condition number 10), and the model's against its layers';
   - checkpoints: exact resume, and every rejection changes nothing;
   - rite_schedule_lr at hand-computed steps, rite_model_set_lr, bad descs,
     and rite_model_memory_query against a counting allocator.
   Factors are handled here in logical form (k x r, row-major, double) and
   put into / read from the storage each module's rite_lora gives; for a
   module, the layer API's L is lora_A (k = in_features) and R is lora_B
   (k = out_features). */
#define _POSIX_C_SOURCE 200809L

#include <float.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#define TM_POSIX 1
#include <unistd.h>
#else
#define TM_POSIX 0
#endif

#include <cmocka.h>

#include "lora_rite.h"
#include "ref_rite.h"
#include "test_util.h"

/* ================================================================ fixture */

enum { MAXL = 5, MAXK = 40, MAXR = 6, MAXE = MAXK * MAXR, STEPS = 4 };
enum { BUF_A, BUF_B, BUF_GA, BUF_GB };

/* Five modules: different shapes and ranks; PEFT's storage (A rank-first,
   B rank-last) and the other ones; lr_scale 1 and otherwise. */
static const rite_lora SHAPES[MAXL] = {
    {12, 20, 4, RITE_RANK_FIRST, RITE_RANK_LAST, 1.0},
    {24, 9, 3, RITE_RANK_LAST, RITE_RANK_FIRST, 0.5},
    {16, 16, 6, RITE_RANK_FIRST, RITE_RANK_LAST, 2.0},
    {8, 30, 2, RITE_RANK_LAST, RITE_RANK_LAST, 1.5},
    {40, 10, 5, RITE_RANK_FIRST, RITE_RANK_FIRST, 1.0},
};

/* A network's LoRA factors and gradients, in each module's storage (packed),
   and the least-squares target each module fits. */
typedef struct net {
    int nl;
    rite_precision prec;
    rite_lora lora[MAXL];
    float f[MAXL][4][MAXE];        /* A, B, gA, gB of a float net */
    double d[MAXL][4][MAXE];       /* the same of a double net */
    double target[MAXL][MAXK * MAXK];
} net;

static int buf_rows(const rite_lora *lo, int b) {
    return b == BUF_A || b == BUF_GA ? lo->in_features : lo->out_features;
}
static rite_layout buf_layout(const rite_lora *lo, int b) {
    return b == BUF_A || b == BUF_GA ? lo->layout_A : lo->layout_B;
}
static size_t buf_count(const net *n, int i, int b) { return (size_t)buf_rows(&n->lora[i], b) * (size_t)n->lora[i].r; }
static size_t elem_size(const net *n) { return n->prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double); }
static void *buf_ptr(net *n, int i, int b) { return n->prec == RITE_FLOAT32 ? (void *)n->f[i][b] : (void *)n->d[i][b]; }
static const void *buf_cptr(const net *n, int i, int b) {
    return n->prec == RITE_FLOAT32 ? (const void *)n->f[i][b] : (const void *)n->d[i][b];
}

/* n's lora_A and lora_B arrays as the model's functions take them (float *[]
   or double *[] by n's precision); A and B NULL when n is NULL */
typedef struct factor_arrays {
    float *f[2][MAXL];
    double *d[2][MAXL];
} factor_arrays;

static void factor_arrays_of(const net *n, factor_arrays *t, const void **A, const void **B) {
    int i, b;
    *A = *B = NULL;
    if (!n) return;
    for (b = 0; b < 2; b++)
        for (i = 0; i < n->nl; i++) {
            t->f[b][i] = (float *)(uintptr_t)n->f[i][b == 0 ? BUF_A : BUF_B];
            t->d[b][i] = (double *)(uintptr_t)n->d[i][b == 0 ? BUF_A : BUF_B];
        }
    *A = n->prec == RITE_FLOAT32 ? (const void *)t->f[0] : (const void *)t->d[0];
    *B = n->prec == RITE_FLOAT32 ? (const void *)t->f[1] : (const void *)t->d[1];
}

static double elem_get(const net *n, int i, int b, size_t e) {
    return n->prec == RITE_FLOAT32 ? (double)n->f[i][b][e] : n->d[i][b][e];
}
static void elem_set(net *n, int i, int b, size_t e, double v) {
    if (n->prec == RITE_FLOAT32) n->f[i][b][e] = (float)v;
    else n->d[i][b][e] = v;
}

/* buffer b of module i <-> logical k x r */
static void net_get(const net *n, int i, int b, double *logical) {
    const rite_lora *lo = &n->lora[i];
    int k = buf_rows(lo, b);
    rite_layout lay = buf_layout(lo, b);
    int ld = lay == RITE_RANK_LAST ? lo->r : k;
    if (n->prec == RITE_FLOAT32) tu_from_layout_f(n->f[i][b], k, lo->r, lay, ld, logical);
    else tu_from_layout_d(n->d[i][b], k, lo->r, lay, ld, logical);
}
static void net_put(net *n, int i, int b, const double *logical) {
    const rite_lora *lo = &n->lora[i];
    int k = buf_rows(lo, b);
    rite_layout lay = buf_layout(lo, b);
    int ld = lay == RITE_RANK_LAST ? lo->r : k;
    if (n->prec == RITE_FLOAT32) tu_to_layout_f(logical, k, lo->r, lay, ld, n->f[i][b]);
    else tu_to_layout_d(logical, k, lo->r, lay, ld, n->d[i][b]);
}

/* The first nl modules of `shapes`: factors normal (deviation 0.3, full
   rank), a target of rank r + 2 that they cannot fit exactly. */
static net *net_new(int nl, const rite_lora *shapes, rite_precision prec, uint64_t seed) {
    net *n = (net *)calloc(1, sizeof *n);
    tu_rng g;
    int i, j;
    assert_non_null(n);
    assert_true(nl <= MAXL);
    g.s = seed;
    n->nl = nl;
    n->prec = prec;
    for (i = 0; i < nl; i++) {
        double P[MAXK * (MAXR + 2)], Q[MAXK * (MAXR + 2)], L[MAXE], R[MAXE];
        int m = shapes[i].in_features, k = shapes[i].out_features, r = shapes[i].r, q = r + 2;
        n->lora[i] = shapes[i];
        tu_fill_normal(&g, P, (size_t)m * q, 1.0);
        tu_fill_normal(&g, Q, (size_t)k * q, 1.0);
        tu_product(P, Q, m, k, q, n->target[i]);
        for (j = 0; j < m * k; j++) n->target[i][j] *= 0.5 / sqrt((double)q);
        tu_fill_normal(&g, L, (size_t)m * r, 0.3);
        tu_fill_normal(&g, R, (size_t)k * r, 0.3);
        net_put(n, i, BUF_A, L);
        net_put(n, i, BUF_B, R);
    }
    return n;
}

static net *net_clone(const net *n) {
    net *c = (net *)malloc(sizeof *c);
    assert_non_null(c);
    memcpy(c, n, sizeof *c);
    return c;
}

/* lora_B = 0, LoRA's standard start */
static void net_zero_B(net *n, int i) { memset(buf_ptr(n, i, BUF_B), 0, buf_count(n, i, BUF_B) * elem_size(n)); }

/* Least-squares gradients at the current factors, times `scale`. */
static void net_grad(net *n, double scale) {
    static double work[MAXK * MAXK];
    int i, j;
    for (i = 0; i < n->nl; i++) {
        const rite_lora *lo = &n->lora[i];
        double L[MAXE], R[MAXE], gL[MAXE], gR[MAXE];
        int m = lo->in_features, k = lo->out_features, r = lo->r;
        net_get(n, i, BUF_A, L);
        net_get(n, i, BUF_B, R);
        tu_lsq_loss_grad(L, R, n->target[i], m, k, r, gL, gR, work);
        for (j = 0; j < m * r; j++) gL[j] *= scale;
        for (j = 0; j < k * r; j++) gR[j] *= scale;
        net_put(n, i, BUF_GA, gL);
        net_put(n, i, BUF_GB, gR);
    }
}

/* the gradient scale of step s: changes from step to step; the
   unmagnified gradients' rms stays near 0.1 to 0.25, below skip = 1 */
static double grad_scale(int s) { return 0.2 * (1.0 + 0.5 * (double)(s % 3)); }

static void net_copy_grads(net *dst, const net *src) {
    int i;
    for (i = 0; i < src->nl; i++) {
        memcpy(buf_ptr(dst, i, BUF_GA), buf_cptr(src, i, BUF_GA), buf_count(src, i, BUF_GA) * elem_size(src));
        memcpy(buf_ptr(dst, i, BUF_GB), buf_cptr(src, i, BUF_GB), buf_count(src, i, BUF_GB) * elem_size(src));
    }
}

/* 1 when every factor of a and b is the same, bit for bit */
static int net_factors_equal(const net *a, const net *b) {
    int i, bf;
    for (i = 0; i < a->nl; i++)
        for (bf = BUF_A; bf <= BUF_B; bf++)
            if (memcmp(buf_cptr(a, i, bf), buf_cptr(b, i, bf), buf_count(a, i, bf) * elem_size(a)) != 0) {
                print_error("layer %d, factor %s differs\n", i, bf == BUF_A ? "A" : "B");
                return 0;
            }
    return 1;
}

/* ------------------------------------------------------------- the model */

static rite_model_desc model_desc(const net *n, rite_optimizer opt, const rite_config *cfg, int keep_basis) {
    rite_model_desc d;
    memset(&d, 0, sizeof d);
    d.layers = n->lora;
    d.n_layers = n->nl;
    d.optimizer = opt;
    d.precision = n->prec;
    d.config = cfg;
    d.keep_basis = keep_basis;
    return d;
}

static rite_model *model_from(const rite_model_desc *d) {
    char detail[256] = "";
    rite_model *m = NULL;
    rite_status st = rite_model_init(&m, d, detail, sizeof detail);
    if (st != RITE_OK) print_error("rite_model_init: %s (%s)\n", rite_status_string(st), detail);
    assert_int_equal(st, RITE_OK);
    assert_non_null(m);
    return m;
}

static rite_model *model_new(const net *n, rite_optimizer opt, const rite_config *cfg, int keep_basis) {
    rite_model_desc d = model_desc(n, opt, cfg, keep_basis);
    return model_from(&d);
}

/* the net's arrays as the model takes them: f[BUF_A] the layers' A of a
   float net, d[BUF_GB] the layers' gB of a double net, ... */
typedef struct net_arrays {
    float *f[4][MAXL];
    double *d[4][MAXL];
} net_arrays;

static net_arrays net_arrays_of(net *n) {
    net_arrays p;
    int i, b;
    for (i = 0; i < MAXL; i++)
        for (b = BUF_A; b <= BUF_GB; b++) {
            p.f[b][i] = n->f[i][b];
            p.d[b][i] = n->d[i][b];
        }
    return p;
}

static rite_status net_step(rite_model *m, net *n) {
    net_arrays p = net_arrays_of(n);
    if (n->prec == RITE_FLOAT32) return rite_model_step_f32(m, p.f[BUF_A], p.f[BUF_B], p.f[BUF_GA], p.f[BUF_GB]);
    return rite_model_step_f64(m, p.d[BUF_A], p.d[BUF_B], p.d[BUF_GA], p.d[BUF_GB]);
}

static rite_status net_prepare(rite_model *m, net *n, double *sumsq) {
    net_arrays p = net_arrays_of(n);
    if (n->prec == RITE_FLOAT32)
        return rite_model_prepare_f32(m, p.f[BUF_A], p.f[BUF_B], p.f[BUF_GA], p.f[BUF_GB], sumsq);
    return rite_model_prepare_f64(m, p.d[BUF_A], p.d[BUF_B], p.d[BUF_GA], p.d[BUF_GB], sumsq);
}

static void check_status(rite_status got, rite_status want, const char *what) {
    if (got != want) {
        print_error("%s: got %d (%s), want %d (%s)\n", what, (int)got, rite_status_string(got), (int)want,
                    rite_status_string(want));
        fail();
    }
}

/* steps s0 .. s1 - 1 of model m on net n */
static void run_steps(rite_model *m, net *n, int s0, int s1) {
    int s;
    for (s = s0; s < s1; s++) {
        net_grad(n, grad_scale(s));
        check_status(net_step(m, n), RITE_OK, "rite_model_step");
    }
}

static void assert_rel(double got, double want, double tol, const char *what) {
    double scale = fabs(want) > 1e-300 ? fabs(want) : 1e-300;
    if (!(fabs(got - want) <= tol * scale)) {
        print_error("%s: got %.17g, want %.17g (relative tolerance %g)\n", what, got, want, tol);
        fail();
    }
}

/* ------------------------------------------- the layer API's two-phase path */

typedef struct layer_path {
    int nl;
    rite_layer *l[MAXL];
} layer_path;

/* Standalone layers: m = in_features, n = out_features, L = lora_A,
   R = lora_B, the model's config with lr times lr_scale. */
static void path_make(layer_path *p, const net *n, rite_optimizer opt, const rite_config *cfg, int keep_basis) {
    int i;
    p->nl = n->nl;
    for (i = 0; i < n->nl; i++) {
        const rite_lora *lo = &n->lora[i];
        rite_desc d = tu_desc(lo->in_features, lo->out_features, lo->r, opt, n->prec);
        rite_config c = cfg ? *cfg : rite_config_default(opt);
        c.lr = c.lr * lo->lr_scale;
        d.layout_L = lo->layout_A;
        d.layout_R = lo->layout_B;
        d.config = &c;
        d.keep_basis = keep_basis;
        check_status(rite_init(&p->l[i], &d), RITE_OK, "rite_init of a standalone layer");
    }
}

static void path_free(layer_path *p) {
    int i;
    for (i = 0; i < p->nl; i++) rite_free(p->l[i]);
}

/* Prepare every layer, add the sums in layer order, apply every layer with
   the sum plus `extra`. Returns the total. */
static double path_step(layer_path *p, net *n, double extra) {
    double total = 0, sq;
    int i;
    for (i = 0; i < p->nl; i++) {
        sq = -1;
        if (n->prec == RITE_FLOAT32)
            check_status(rite_prepare_f32(p->l[i], n->f[i][BUF_A], n->f[i][BUF_B], n->f[i][BUF_GA], n->f[i][BUF_GB], &sq),
                         RITE_OK, "rite_prepare_f32");
        else
            check_status(rite_prepare_f64(p->l[i], n->d[i][BUF_A], n->d[i][BUF_B], n->d[i][BUF_GA], n->d[i][BUF_GB], &sq),
                         RITE_OK, "rite_prepare_f64");
        total += sq;
    }
    total += extra;
    for (i = 0; i < p->nl; i++) check_status(rite_apply(p->l[i], total), RITE_OK, "rite_apply");
    return total;
}

/* --------------------------------------------------------------- snapshots */

/* Every layer's state bytes (rite_state_copy) and step count. */
typedef struct snap {
    unsigned char *bytes;
    size_t n;
    int nl;
    long long steps[MAXL];
} snap;

static void snap_layers(snap *s, const rite_layer *const *layers, int nl) {
    size_t off = 0;
    int i;
    s->n = 0;
    s->nl = nl;
    for (i = 0; i < nl; i++) s->n += rite_state_size(layers[i]);
    s->bytes = (unsigned char *)malloc(s->n ? s->n : 1);
    assert_non_null(s->bytes);
    for (i = 0; i < nl; i++) {
        size_t sz = rite_state_size(layers[i]);
        check_status(rite_state_copy(layers[i], s->bytes + off, sz), RITE_OK, "rite_state_copy");
        off += sz;
        s->steps[i] = rite_step_count(layers[i]);
    }
}

static void snap_model(snap *s, const rite_model *m) {
    const rite_layer *ls[MAXL];
    int i, nl = rite_model_layer_count(m);
    assert_true(nl >= 1 && nl <= MAXL);
    for (i = 0; i < nl; i++) {
        ls[i] = rite_model_layer(m, i);
        assert_non_null(ls[i]);
    }
    snap_layers(s, ls, nl);
}

static void snap_path(snap *s, const layer_path *p) {
    const rite_layer *ls[MAXL];
    int i;
    for (i = 0; i < p->nl; i++) ls[i] = p->l[i];
    snap_layers(s, ls, p->nl);
}

static void snap_free(snap *s) {
    free(s->bytes);
    s->bytes = NULL;
}

static int snap_equal(const snap *a, const snap *b) {
    int i;
    if (a->nl != b->nl || a->n != b->n) return 0;
    for (i = 0; i < a->nl; i++)
        if (a->steps[i] != b->steps[i]) return 0;
    return memcmp(a->bytes, b->bytes, a->n) == 0;
}

/* the state of every layer of m equals that of the other snapshot */
static void assert_model_state(const rite_model *m, const snap *want, const char *what) {
    snap s;
    snap_model(&s, m);
    if (!snap_equal(&s, want)) {
        print_error("%s: the layers' state differs\n", what);
        snap_free(&s);
        fail();
    }
    snap_free(&s);
}

static void assert_same_model_state(const rite_model *a, const rite_model *b, const char *what) {
    snap s;
    snap_model(&s, b);
    assert_model_state(a, &s, what);
    snap_free(&s);
}

/* frees models m and t (either may be NULL), then nets a and b */
static void free_twins(rite_model *m, rite_model *t, net *a, net *b) {
    rite_model_free(m);
    rite_model_free(t);
    free(a);
    free(b);
}

/* A model on net a and the layer API's path on a's clone b: twins that
   get the same gradients and must stay equal. */
typedef struct model_and_path {
    net *a, *b;
    rite_model *m;
    layer_path p;
} model_and_path;

/* the twins of net a, which they take over (twins_free frees it) */
static void twins_make(model_and_path *t, net *a, rite_optimizer opt, const rite_config *cfg, int keep_basis) {
    t->a = a;
    t->b = net_clone(a);
    t->m = model_new(a, opt, cfg, keep_basis);
    path_make(&t->p, t->b, opt, cfg, keep_basis);
}

static void twins_free(model_and_path *t) {
    path_free(&t->p);
    free_twins(t->m, NULL, t->a, t->b);
}

/* the gradients of step s, the same for both */
static void twins_grad(model_and_path *t, int s) {
    net_grad(t->a, grad_scale(s));
    net_copy_grads(t->b, t->a);
}

/* the model's factors and every layer's state are the layer path's */
static void assert_twins_equal(const model_and_path *t, const char *what) {
    snap want;
    assert_true(net_factors_equal(t->a, t->b));
    snap_path(&want, &t->p);
    assert_model_state(t->m, &want, what);
    snap_free(&want);
}

/* ---------------------------------------------------------------- configs */

static ref_config rc_rite(double lr, double clip) {
    ref_config c = ref_config_default();
    c.lr = lr;
    c.clip = clip;
    return c;
}

static ref_config rc_adamw(double lr) {
    ref_config c = ref_config_default();
    c.lr = lr;
    c.eps = 1e-8;
    c.weight_decay = 0.01;
    return c;
}

/* the library's config of a reference config */
static rite_config cfg_of(ref_config rc, rite_optimizer opt) {
    return tu_rite_config(&rc, opt);
}

/* ------------------------------------------------------- table-driven cases */

/* extra options of a case's LoRA-RITE config */
enum { CASE_BALANCE = 1, CASE_ESCAPE = 2, CASE_EVERY_OPTION = 4 };

/* One table-driven test: its cmocka name, the check it runs and the
   check's parameters (each check reads the ones it needs). */
typedef struct model_case {
    const char *name;
    void (*check)(const struct model_case *c);
    rite_optimizer opt;
    rite_precision prec;
    double lr, clip;   /* clip: LoRA-RITE only */
    unsigned options;  /* CASE_* */
    int keep_basis, must_clip, must_skip, lora_init;
    double tol;
} model_case;

/* the case's config: rc_adamw(lr), or rc_rite(lr, clip) with its options */
static ref_config case_config(const model_case *c) {
    ref_config rc;
    if (c->opt == RITE_ADAMW) return rc_adamw(c->lr);
    rc = rc_rite(c->lr, c->clip);
    if (c->options & CASE_EVERY_OPTION) {
        rc.escape = 1;
        rc.relative_eps = 1;
        rc.eps_root = 0.05;
        rc.cap = 0.5;
        rc.weight_decay = 0.05;
        rc.skip = 0.2;
    }
    if (c->options & CASE_BALANCE) rc.balance = 1;
    if (c->options & CASE_ESCAPE) rc.escape = 1;
    return rc;
}

/* the runner of every table-driven test: its case is cmocka's state */
static void run_case(void **state) {
    const model_case *c = (const model_case *)*state;
    c->check(c);
}

/* the cmocka entry of case i of table t, under the case's own name */
#define CASE_TEST(t, i) {t[i].name, run_case, NULL, NULL, &t[i]}

/* ============================================= 0. module descriptions */

static void lora_peft_is_peft_storage_with_lr_scale_one(void **state) {
    rite_lora lo = rite_lora_peft(12, 20, 4);
    (void)state;
    assert_int_equal(lo.in_features, 12);
    assert_int_equal(lo.out_features, 20);
    assert_int_equal(lo.r, 4);
    assert_int_equal(lo.layout_A, RITE_RANK_FIRST);   /* lora_A: r x in */
    assert_int_equal(lo.layout_B, RITE_RANK_LAST);    /* lora_B: out x r */
    assert_true(lo.lr_scale == 1.0);
}

static void model_layers_have_the_modules_sizes_layouts_and_lr(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 1.0), RITE_LORA_RITE);
    net *n = net_new(MAXL, SHAPES, RITE_FLOAT64, 11);
    rite_model *m = model_new(n, RITE_LORA_RITE, &cfg, 0);
    int i;
    (void)state;
    assert_int_equal(rite_model_layer_count(m), MAXL);
    assert_null(rite_model_layer(m, -1));
    assert_null(rite_model_layer(m, MAXL));
    for (i = 0; i < MAXL; i++) {
        rite_desc d = rite_get_desc(rite_model_layer(m, i));
        rite_config c = rite_get_config(rite_model_layer(m, i));
        assert_int_equal(d.m, SHAPES[i].in_features);
        assert_int_equal(d.n, SHAPES[i].out_features);
        assert_int_equal(d.r, SHAPES[i].r);
        assert_int_equal(d.layout_L, SHAPES[i].layout_A);
        assert_int_equal(d.layout_R, SHAPES[i].layout_B);
        assert_int_equal(d.precision, RITE_FLOAT64);
        assert_int_equal(d.optimizer, RITE_LORA_RITE);
        assert_true(c.lr == 0.01 * SHAPES[i].lr_scale);
        assert_true(c.clip == 1.0);
    }
    assert_true(rite_model_get_config(m).lr == 0.01);
    assert_int_equal(rite_model_step_count(m), 0);
    rite_model_free(m);
    rite_model_free(NULL);   /* allowed */
    free(n);
}

/* ============================= 1. a model step is the layer API's path */

/* the layer API's checkpoint of a model's layer is the standalone layer's */
static void assert_layer_checkpoints_equal(const model_and_path *t) {
    int i;
    for (i = 0; i < MAXL; i++) {
        size_t n1 = rite_checkpoint_size(rite_model_layer(t->m, i)), n2 = rite_checkpoint_size(t->p.l[i]);
        unsigned char *c1 = (unsigned char *)malloc(n1), *c2 = (unsigned char *)malloc(n2);
        assert_true(c1 && c2);
        assert_int_equal(n1, n2);
        check_status(rite_checkpoint_save(rite_model_layer(t->m, i), c1, n1), RITE_OK, "checkpoint of a model's layer");
        check_status(rite_checkpoint_save(t->p.l[i], c2, n2), RITE_OK, "checkpoint of a standalone layer");
        assert_memory_equal(c1, c2, n1);
        free(c1);
        free(c2);
    }
}

/* STEPS steps of the model and of standalone layers from the same start
   with the same gradients: factors and state bytes equal after each. When
   `must_clip`, global clipping is active at every step; when `must_skip`,
   SPEC 3 skips some factors but not all. Layer 1 starts at LoRA's B = 0
   (rank-deficient) when `lora_init`. */
static void check_equals_layer_path(rite_optimizer opt, rite_precision prec, const ref_config *rc, int keep_basis,
                                    int must_clip, int must_skip, int lora_init) {
    rite_config cfg = tu_rite_config(rc, opt);
    net *a = net_new(MAXL, SHAPES, prec, 0x5eed0001ull);
    model_and_path t;
    int s, i, clipped = 0, skipped = 0;
    if (lora_init) net_zero_B(a, 1);
    twins_make(&t, a, opt, &cfg, keep_basis);
    for (s = 0; s < STEPS; s++) {
        double total;
        char what[64];
        snprintf(what, sizeof what, "step %d", s);
        twins_grad(&t, s);
        check_status(net_step(t.m, t.a), RITE_OK, "rite_model_step");
        total = path_step(&t.p, t.b, 0.0);
        if (cfg.clip > 0 && sqrt(total) > cfg.clip) clipped++;
        for (i = 0; i < MAXL; i++) {
            rite_diagnostics dg = {0, 0, 0, 0, 0, 0, 0};
            check_status(rite_layer_diagnostics(t.p.l[i], &dg), RITE_OK, "rite_layer_diagnostics");
            skipped += dg.skipped;
        }
        assert_twins_equal(&t, what);
        assert_int_equal(rite_model_step_count(t.m), s + 1);
    }
    if (must_clip) assert_int_equal(clipped, STEPS);
    if (must_skip) assert_true(skipped > 0 && skipped < STEPS * MAXL * 2);
    assert_layer_checkpoints_equal(&t);
    twins_free(&t);
}

static void run_equals_layer_path(const model_case *c) {
    ref_config rc = case_config(c);
    check_equals_layer_path(c->opt, c->prec, &rc, c->keep_basis, c->must_clip, c->must_skip, c->lora_init);
}

/* every_option: escape, relative eps_root, cap, weight decay, a skip that some factors exceed */
static model_case layer_path_cases[] = {
    /* name, check, opt, prec, lr, clip, options, keep_basis, must_clip, must_skip, lora_init, tol */
    {"model_step_equals_layer_two_phase_path_f32", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT32, 0.01, 1.0, 0, 0, 0, 0, 1, 0},
    {"model_step_equals_layer_two_phase_path_f64", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT64, 0.01, 1.0, 0, 0, 0, 0, 1, 0},
    {"model_step_clips_globally_as_layer_path_f32", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT32, 0.01, 0.05, 0, 0, 1, 0, 0, 0},
    {"model_step_clips_globally_as_layer_path_f64", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT64, 0.01, 0.05, 0, 0, 1, 0, 0, 0},
    {"model_step_with_keep_basis_equals_layer_path_f32", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT32, 0.01, 0.05, 0, 1, 1, 0, 1, 0},
    {"model_step_with_keep_basis_equals_layer_path_f64", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT64, 0.01, 0.05, 0, 1, 1, 0, 0, 0},
    {"model_step_with_balance_equals_layer_path_f32", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT32, 0.01, 0.05, CASE_BALANCE, 0, 1, 0, 0, 0},
    {"model_step_with_balance_equals_layer_path_f64", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT64, 0.01, 0.05, CASE_BALANCE, 0, 1, 0, 0, 0},
    {"model_step_with_every_option_equals_layer_path_f32", run_equals_layer_path, RITE_LORA_RITE, RITE_FLOAT32, 0.02, 0.05, CASE_EVERY_OPTION, 0, 1, 1, 1, 0},
    {"adamw_model_step_equals_layer_path_f32", run_equals_layer_path, RITE_ADAMW, RITE_FLOAT32, 0.01, 0, 0, 0, 0, 0, 1, 0},
    {"adamw_model_step_equals_layer_path_f64", run_equals_layer_path, RITE_ADAMW, RITE_FLOAT64, 0.01, 0, 0, 0, 0, 0, 0, 0},
};

/* ==================================== 2. the thread count changes nothing */

/* A legal schedule of the caller's: the indices in reverse order, one call
   at a time, worker (i + calls) % workers, so that a layer runs on another
   worker in each phase. Records what it was asked. */
typedef struct pf_log {
    int calls, min_workers, max_workers, tasks;
} pf_log;

static void pf_reverse(void *user, int count, int workers, rite_task_fn fn, void *task) {
    pf_log *log = (pf_log *)user;
    int i;
    log->calls++;
    if (workers < log->min_workers) log->min_workers = workers;
    if (workers > log->max_workers) log->max_workers = workers;
    for (i = count - 1; i >= 0; i--) {
        log->tasks++;
        fn(task, i, (i + log->calls) % workers);
    }
}

/* STEPS steps of a model made with this threads / parallel_for from `start`:
   the final factors into *out (a new net) and the state into *st. */
static void run_threads(const net *start, rite_optimizer opt, const rite_config *cfg, int keep_basis, int threads,
                        pf_log *log, net **out, snap *st) {
    net *n = net_clone(start);
    rite_model_desc d = model_desc(n, opt, cfg, keep_basis);
    rite_model *m;
    int s;
    d.threads = threads;
    if (log) {
        d.parallel_for = pf_reverse;
        d.parallel_user = log;
    }
    m = model_from(&d);
    for (s = 0; s < STEPS; s++) {
        net_grad(n, grad_scale(s));
        check_status(net_step(m, n), RITE_OK, "rite_model_step");
    }
    snap_model(st, m);
    rite_model_free(m);
    *out = n;
}

static void check_thread_invariance(rite_optimizer opt, rite_precision prec, const ref_config *rc, int keep_basis) {
    rite_config cfg = tu_rite_config(rc, opt);
    net *start = net_new(MAXL, SHAPES, prec, 0x7e7e0002ull), *one, *other;
    static const int counts[5] = {0, 1, 2, 3, 8};   /* 0 means 1; 8 is more than the layers */
    snap s1, so;
    int threads, k;
    net_zero_B(start, 3);
    run_threads(start, opt, &cfg, keep_basis, 1, NULL, &one, &s1);
    /* the model moved: the comparisons below compare something */
    assert_true(memcmp(start->f, one->f, sizeof start->f) != 0 || memcmp(start->d, one->d, sizeof start->d) != 0);
    for (k = 0; k < 5; k++) {
        run_threads(start, opt, &cfg, keep_basis, counts[k], NULL, &other, &so);
        if (!net_factors_equal(one, other) || !snap_equal(&s1, &so)) {
            print_error("%d built-in threads differ from 1\n", counts[k]);
            fail();
        }
        free(other);
        snap_free(&so);
    }
    for (threads = 1; threads <= 3; threads++) {
        pf_log log = {0, 1 << 30, 0, 0};
        run_threads(start, opt, &cfg, keep_basis, threads, &log, &other, &so);
        if (!net_factors_equal(one, other) || !snap_equal(&s1, &so)) {
            print_error("a caller's parallel_for with %d workers differs from 1 thread\n", threads);
            fail();
        }
        if (threads > 1) {
            /* the caller's loop was used, with `threads` workers */
            assert_true(log.calls >= STEPS);
            assert_true(log.tasks >= STEPS * MAXL);
            assert_int_equal(log.min_workers, threads);
            assert_int_equal(log.max_workers, threads);
        }
        free(other);
        snap_free(&so);
    }
    free(one);
    free(start);
    snap_free(&s1);
}

static void run_thread_invariance(const model_case *c) {
    ref_config rc = case_config(c);
    check_thread_invariance(c->opt, c->prec, &rc, c->keep_basis);
}

static model_case thread_cases[] = {
    /* name, check, opt, prec, lr, clip, options, keep_basis, must_clip, must_skip, lora_init, tol */
    {"model_step_is_the_same_for_any_thread_count_f32", run_thread_invariance, RITE_LORA_RITE, RITE_FLOAT32, 0.01, 0.05, 0, 0, 0, 0, 0, 0},
    {"model_step_is_the_same_for_any_thread_count_keep_basis_f64", run_thread_invariance, RITE_LORA_RITE, RITE_FLOAT64, 0.01, 0.05, CASE_ESCAPE, 1, 0, 0, 0, 0},
    {"adamw_model_step_is_the_same_for_any_thread_count_f32", run_thread_invariance, RITE_ADAMW, RITE_FLOAT32, 0.01, 0, 0, 0, 0, 0, 0, 0},
};

/* ========================================================= 3. all or nothing */

/* 1 when the message names buffer b with the model's words (lora_A,
   lora_B, gA, gB) */
static int names_buffer(const char *msg, int b) {
    static const char *const names[4] = {"lora_A", "lora_B", "gA", "gB"};
    return strstr(msg, names[b]) != NULL;
}

/* Model m and its twin t have taken the same steps (with nets a and tn).
   Each bad batch: the step fails with the right code and a message naming
   the layer and buffer, and nothing changes; then the good batch on both
   gives the same result. */
static void check_all_or_nothing(rite_optimizer opt, rite_precision prec) {
    static const char *const bufname[4] = {"A", "B", "gA", "gB"};
    rite_config cfg = cfg_of(opt == RITE_ADAMW ? rc_adamw(0.01) : rc_rite(0.01, 0.05), opt);
    net *a = net_new(MAXL, SHAPES, prec, 0xbad0003ull), *tn, *before;
    rite_model *m, *t;
    int pass, i, b, s = 0;
    tn = net_clone(a);
    m = model_new(a, opt, &cfg, 0);
    t = model_new(tn, opt, &cfg, 0);
    net_grad(a, 1.0);
    net_copy_grads(tn, a);
    check_status(net_step(m, a), RITE_OK, "first step");
    check_status(net_step(t, tn), RITE_OK, "first step, twin");
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < MAXL; i++)
            for (b = BUF_A; b <= BUF_GB; b++) {
                double bad = pass == 0 ? NAN : (b % 2 ? -INFINITY : INFINITY), old;
                size_t e = ((size_t)i * 7 + (size_t)b * 3) % buf_count(a, i, b);
                rite_status want = b <= BUF_B ? RITE_ERR_NONFINITE_FACTOR : RITE_ERR_NONFINITE_GRADIENT;
                char what[96], layer_word[32];
                const char *msg;
                rite_diagnostics d0, d1;
                snap st0;
                s++;
                snprintf(what, sizeof what, "%s in layer %d, buffer %s", pass ? "Inf" : "NaN", i, bufname[b]);
                net_grad(a, grad_scale(s));
                net_copy_grads(tn, a);
                snap_model(&st0, m);
                check_status(rite_model_diagnostics(m, &d0), RITE_OK, "diagnostics");
                old = elem_get(a, i, b, e);
                elem_set(a, i, b, e, bad);
                before = net_clone(a);
                check_status(net_step(m, a), want, what);
                msg = rite_model_last_error(m);
                assert_non_null(msg);
                snprintf(layer_word, sizeof layer_word, "layer %d", i);
                if (!strstr(msg, layer_word) || !names_buffer(msg, b)) {
                    print_error("%s: the message \"%s\" does not name the layer and buffer\n", what, msg);
                    fail();
                }
                /* nothing changed: every factor, every layer's state and step count */
                assert_true(net_factors_equal(a, before));
                assert_model_state(m, &st0, what);
                assert_int_equal(rite_model_step_count(m), s);
                check_status(rite_model_diagnostics(m, &d1), RITE_OK, "diagnostics");
                assert_memory_equal(&d0, &d1, sizeof d0);   /* still the last good step's */
                snap_free(&st0);
                free(before);
                /* the good batch equals the twin's, which never saw the bad one */
                elem_set(a, i, b, e, old);
                check_status(net_step(m, a), RITE_OK, "good step after a bad one");
                check_status(net_step(t, tn), RITE_OK, "good step, twin");
                assert_true(net_factors_equal(a, tn));
                assert_same_model_state(m, t, "after the good step");
                assert_string_equal(rite_model_last_error(m), "");
            }
    free_twins(m, t, a, tn);
}

static void run_all_or_nothing(const model_case *c) {
    check_all_or_nothing(c->opt, c->prec);
}

static model_case all_or_nothing_cases[] = {
    {"model_nonfinite_in_any_buffer_changes_no_layer_f32", run_all_or_nothing, RITE_LORA_RITE, RITE_FLOAT32, 0, 0, 0, 0, 0, 0, 0, 0},
    {"model_nonfinite_in_any_buffer_changes_no_layer_f64", run_all_or_nothing, RITE_LORA_RITE, RITE_FLOAT64, 0, 0, 0, 0, 0, 0, 0, 0},
    {"adamw_model_nonfinite_in_any_buffer_changes_no_layer_f32", run_all_or_nothing, RITE_ADAMW, RITE_FLOAT32, 0, 0, 0, 0, 0, 0, 0, 0},
};

/* The step of m on a, which has taken no step, would leave float's range
   in layer 2: it is refused and names layer 2, and nothing changes. */
static void check_overflow_refused(rite_model *m, net *a, const char *what) {
    net *before = net_clone(a);
    snap st0;
    const char *msg;
    snap_model(&st0, m);
    check_status(net_step(m, a), RITE_ERR_NONFINITE_UPDATE, what);
    msg = rite_model_last_error(m);
    if (!strstr(msg, "layer 2")) {
        print_error("the message \"%s\" does not name layer 2\n", msg);
        fail();
    }
    assert_true(net_factors_equal(a, before));
    assert_model_state(m, &st0, "after the overflowing step");
    assert_int_equal(rite_model_step_count(m), 0);
    snap_free(&st0);
    free(before);
}

/* An AdamW float step whose update of one element of layer 2's lora_A
   leaves float's range: -3.4e38 - 2 * 1e37 (lr 1e37, lr_scale 2, the first
   AdamW update is lr * sign(g)). Layers 0 and 1, before it, would step
   fine; nothing changes, and the message names layer 2. */
static void model_step_that_would_overflow_changes_no_layer(void **state) {
    rite_config cfg = cfg_of(rc_adamw(1e37), RITE_ADAMW);
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x0f0f0004ull), *tn;
    rite_model *m, *t;
    size_t e;
    (void)state;
    cfg.weight_decay = 0;
    m = model_new(a, RITE_ADAMW, &cfg, 0);
    net_grad(a, 1.0);
    e = 5;
    a->f[2][BUF_A][e] = -3.4e38f;
    a->f[2][BUF_GA][e] = 1.0f;
    tn = net_clone(a);
    t = model_new(tn, RITE_ADAMW, &cfg, 0);
    check_overflow_refused(m, a, "an overflowing AdamW step");
    /* with that element back in range, the same batch equals a twin's */
    a->f[2][BUF_A][e] = -1.0f;
    tn->f[2][BUF_A][e] = -1.0f;
    check_status(net_step(m, a), RITE_OK, "the step with the element in range");
    check_status(net_step(t, tn), RITE_OK, "the twin's step");
    assert_true(net_factors_equal(a, tn));
    assert_same_model_state(m, t, "after the good step");
    free_twins(m, t, a, tn);
}

/* LoRA-RITE, float: layer 2's lora_B of size 1e-37 makes T_R^+ about 1e37,
   and with lr 100 (x 2) its lora_A update leaves float's range. The other
   layers' updates are large but finite; no layer changes. */
static void rite_model_step_that_would_overflow_changes_no_layer(void **state) {
    rite_config cfg = cfg_of(rc_rite(100.0, 0.0), RITE_LORA_RITE);
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x0f0f0018ull);
    rite_model *m;
    rite_diagnostics d0, d1;
    size_t e;
    (void)state;
    cfg.skip = 0;
    for (e = 0; e < buf_count(a, 2, BUF_B); e++) a->f[2][BUF_B][e] *= 1e-37f;
    m = model_new(a, RITE_LORA_RITE, &cfg, 0);
    net_grad(a, 1.0);
    check_status(rite_model_diagnostics(m, &d0), RITE_OK, "diagnostics");
    check_overflow_refused(m, a, "an overflowing LoRA-RITE step");
    check_status(rite_model_diagnostics(m, &d1), RITE_OK, "diagnostics");
    assert_memory_equal(&d0, &d1, sizeof d0);
    free_twins(m, NULL, a, NULL);
}

/* Bad arrays: NULL arrays or entries, a factor shared between layers,
   buffers of the other precision. Each refused, the message names the
   layer and the buffer where there is one, and nothing changes. */
static void model_step_refuses_bad_arrays(void **state) {
    net *n = net_new(MAXL, SHAPES, RITE_FLOAT32, 0xa7a70019ull), *before;
    rite_model *m = model_new(n, RITE_LORA_RITE, NULL, 0);
    net_arrays p = net_arrays_of(n);
    float **A = p.f[BUF_A], **B = p.f[BUF_B], **gA = p.f[BUF_GA], **gB = p.f[BUF_GB];
    double **dA = p.d[BUF_A];
    double sq;
    snap st0;
    (void)state;
    run_steps(m, n, 0, 1);
    net_grad(n, 1.0);
    before = net_clone(n);
    snap_model(&st0, m);
    check_status(rite_model_step_f32(m, NULL, B, gA, gB), RITE_ERR_NULL_ARGUMENT, "A NULL");
    check_status(rite_model_prepare_f32(m, A, B, gA, gB, NULL), RITE_ERR_NULL_ARGUMENT, "sumsq NULL");
    gB[3] = NULL;
    check_status(rite_model_step_f32(m, A, B, gA, gB), RITE_ERR_NULL_ARGUMENT, "layer 3's gB NULL");
    assert_true(strstr(rite_model_last_error(m), "layer 3") && strstr(rite_model_last_error(m), "gB"));
    gB[3] = n->f[3][BUF_GB];
    /* layer 1's lora_B (9 x 3) inside layer 0's lora_A (4 x 12) */
    B[1] = n->f[0][BUF_A] + 2;
    check_status(rite_model_step_f32(m, A, B, gA, gB), RITE_ERR_ALIASING, "layer 1's B in layer 0's A");
    assert_true(strstr(rite_model_last_error(m), "layer 1") && strstr(rite_model_last_error(m), "layer 0"));
    B[1] = n->f[1][BUF_B];
    check_status(rite_model_step_f64(m, dA, dA, dA, dA),
                 RITE_ERR_PRECISION, "double arrays for a float model");
    check_status(rite_model_prepare_f64(m, dA, dA, dA, dA, &sq),
                 RITE_ERR_PRECISION, "double arrays for a float model, prepare");
    assert_true(net_factors_equal(n, before));
    assert_model_state(m, &st0, "after the refused arrays");
    assert_int_equal(rite_model_step_count(m), 1);
    /* and with the arrays right, it steps */
    check_status(rite_model_step_f32(m, A, B, gA, gB), RITE_OK, "the good arrays");
    snap_free(&st0);
    free_twins(m, NULL, n, before);
}

/* 1 when a factor of one layer shares a byte with any buffer of another
   (off, len: per layer and buffer A, B, gA, gB, in floats) */
static int naive_shared_across_layers(size_t off[][4], size_t len[][4], int nl) {
    int i, j, a, b;
    for (i = 0; i < nl; i++)
        for (j = 0; j < nl; j++)
            for (a = 0; a < 2 && i != j; a++)
                for (b = 0; b < 4; b++)
                    if (off[i][a] < off[j][b] + len[j][b] && off[j][b] < off[i][a] + len[i][a]) return 1;
    return 0;
}

/* random places for every layer's four buffers in one arena; a layer's A
   and B never overlap (the layer refuses that itself), while its gradients
   may share storage with its factors, as LoRA-RITE allows */
static void place_buffers(tu_rng *g, size_t off[][4], size_t len[][4], int nl, size_t arena) {
    int i, a;
    for (i = 0; i < nl; i++)
        do {
            for (a = 0; a < 4; a++) off[i][a] = (size_t)(tu_uniform(g) * (double)(arena - len[i][a] + 1));
        } while (off[i][0] < off[i][1] + len[i][1] && off[i][1] < off[i][0] + len[i][0]);
}

/* The model's check of storage shared between layers (sorted, one sweep)
   refuses exactly what the naive all-pairs check finds, over 1000 random
   placements, with both outcomes common. */
static void model_shared_storage_check_matches_naive(void **state) {
    enum { NL = 6, ARENA = 60000, TRIALS = 1000 };
    rite_lora mods[NL];
    rite_model_desc md;
    rite_model *m;
    size_t off[NL][4], len[NL][4];
    float *arena = (float *)malloc(ARENA * sizeof(float)), *p[4][NL];
    tu_rng g = {0x5a5a0042ull};
    int i, a, t, refused = 0;
    double sq;
    (void)state;
    assert_non_null(arena);
    for (i = 0; i < ARENA; i++) arena[i] = (float)(0.1 * tu_normal(&g));
    for (i = 0; i < NL; i++) {
        mods[i] = rite_lora_peft(3 + 40 * (i % 3), 5 + 60 * ((i + 1) % 3), 2);   /* short and long ones */
        for (a = 0; a < 4; a++) len[i][a] = (size_t)(a & 1 ? mods[i].out_features : mods[i].in_features) * 2;
    }
    memset(&md, 0, sizeof md);
    md.layers = mods;
    md.n_layers = NL;
    assert_int_equal(rite_model_init(&m, &md, NULL, 0), RITE_OK);
    for (t = 0; t < TRIALS; t++) {
        int want;
        place_buffers(&g, off, len, NL, ARENA);
        for (i = 0; i < NL; i++)
            for (a = 0; a < 4; a++) p[a][i] = arena + off[i][a];
        want = naive_shared_across_layers(off, len, NL);
        refused += want;
        if (rite_model_prepare_f32(m, p[0], p[1], p[2], p[3], &sq) != (want ? RITE_ERR_ALIASING : RITE_OK)) {
            print_error("trial %d: %s, want %s\n", t, rite_model_last_error(m), want ? "refused" : "accepted");
            fail();
        }
    }
    assert_true(refused > TRIALS / 5 && refused < TRIALS * 4 / 5);
    /* what a sweep that kept only the furthest-reaching buffer would miss:
       layer 1's A starts inside its own gA (allowed), which reaches past
       layer 0's gB, and A overlaps that gB; every other buffer apart */
    for (i = 0, t = 2000; i < NL; i++)
        for (a = 0; a < 4; a++, t += (int)len[i][a - 1]) off[i][a] = (size_t)t;
    off[0][3] = 1000;                                       /* layer 0's gB: 130 floats */
    off[1][2] = off[0][3] + len[0][3] + 6 - len[1][2];      /* layer 1's gA: 86, ends 6 later */
    off[1][0] = off[1][2] + 1;                              /* layer 1's A, inside both */
    for (i = 0; i < NL; i++)
        for (a = 0; a < 4; a++) p[a][i] = arena + off[i][a];
    assert_true(naive_shared_across_layers(off, len, NL));
    assert_int_equal(rite_model_prepare_f32(m, p[0], p[1], p[2], p[3], &sq), RITE_ERR_ALIASING);
    assert_non_null(strstr(rite_model_last_error(m), "layer 1's lora_A shares storage with layer 0's gB"));
    rite_model_free(m);
    free(arena);
}

/* A prepare that fails after a successful one leaves nothing half done:
   apply then either refuses (NOT_PREPARED) and nothing changed, or applies
   the first prepare exactly as the layer path does. */
static void model_failed_prepare_leaves_nothing_half_done(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE);
    model_and_path t;
    net *bad;
    double sq = -1, sq2 = -1;
    rite_status st;
    snap st0;
    (void)state;
    twins_make(&t, net_new(MAXL, SHAPES, RITE_FLOAT64, 0x4a1f001aull), RITE_LORA_RITE, &cfg, 0);
    net_grad(t.a, 1.0);
    net_copy_grads(t.b, t.a);
    snap_model(&st0, t.m);
    check_status(net_prepare(t.m, t.a, &sq), RITE_OK, "first prepare");
    bad = net_clone(t.a);
    bad->d[3][BUF_GA][0] = NAN;
    check_status(net_prepare(t.m, bad, &sq2), RITE_ERR_NONFINITE_GRADIENT, "second prepare, NaN in layer 3");
    assert_true(sq2 == -1);
    st = rite_model_apply(t.m, sq);
    if (st == RITE_OK) {
        path_step(&t.p, t.b, 0.0);
        assert_twins_equal(&t, "the first prepare applied");
        assert_true(memcmp(bad->d[0][BUF_A], t.a->d[0][BUF_A], sizeof t.a->d[0][BUF_A]) != 0);   /* it moved */
    } else {
        check_status(st, RITE_ERR_NOT_PREPARED, "apply after a failed prepare");
        assert_model_state(t.m, &st0, "nothing applied");
        assert_true(net_factors_equal(t.a, t.b));
    }
    snap_free(&st0);
    twins_free(&t);
    free(bad);
}

/* An lr schedule between the phases: set_lr after prepare is used by
   apply, as rite_set_lr on each layer of the layer path */
static void model_set_lr_between_prepare_and_apply_is_used(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE);
    model_and_path t;
    int s, i;
    (void)state;
    twins_make(&t, net_new(MAXL, SHAPES, RITE_FLOAT32, 0x5c4e001bull), RITE_LORA_RITE, &cfg, 0);
    for (s = 0; s < 3; s++) {
        double sq = -1, total = 0, lr = 0.02 / (s + 1);
        net *b = t.b;
        twins_grad(&t, s);
        check_status(net_prepare(t.m, t.a, &sq), RITE_OK, "model prepare");
        check_status(rite_model_set_lr(t.m, lr), RITE_OK, "set_lr between the phases");
        check_status(rite_model_apply(t.m, sq), RITE_OK, "model apply");
        for (i = 0; i < MAXL; i++) {
            double own = -1;
            check_status(rite_prepare_f32(t.p.l[i], b->f[i][BUF_A], b->f[i][BUF_B], b->f[i][BUF_GA], b->f[i][BUF_GB],
                                          &own),
                         RITE_OK, "layer prepare");
            total += own;
            check_status(rite_set_lr(t.p.l[i], lr * SHAPES[i].lr_scale), RITE_OK, "layer set_lr");
        }
        for (i = 0; i < MAXL; i++) check_status(rite_apply(t.p.l[i], total), RITE_OK, "layer apply");
        assert_twins_equal(&t, "after apply");
    }
    twins_free(&t);
}

/* ===================================================== 4. two-phase model API */

/* prepare gives the layers' sum of squares (in layer order) and changes
   nothing; apply with a total below it fails and changes nothing (and
   keeps the prepare); apply with own + extra equals the layer path with
   that total, and the diagnostics report sqrt(total). */
static void check_two_phase(rite_precision prec) {
    ref_config rc = rc_rite(0.01, 0.3);
    rite_config cfg = tu_rite_config(&rc, RITE_LORA_RITE);
    model_and_path t;
    int s;
    twins_make(&t, net_new(MAXL, SHAPES, prec, 0x2fa5e005ull), RITE_LORA_RITE, &cfg, 0);
    for (s = 0; s < STEPS; s++) {
        double sq = -1, total, extra = (0.5 + s) * 0.7, path_total;
        rite_diagnostics dg = {0, 0, 0, 0, 0, 0, 0};
        net *before;
        snap st0;
        twins_grad(&t, s);
        snap_model(&st0, t.m);
        before = net_clone(t.a);
        check_status(net_prepare(t.m, t.a, &sq), RITE_OK, "rite_model_prepare");
        assert_true(sq > 0);
        assert_true(net_factors_equal(t.a, before));
        assert_model_state(t.m, &st0, "after prepare");
        /* a total below the model's own sum, or not a number: refused, nothing changes */
        check_status(rite_model_apply(t.m, sq * 0.5), RITE_ERR_SUMSQ, "apply with half the own sum");
        check_status(rite_model_apply(t.m, NAN), RITE_ERR_SUMSQ, "apply with NaN");
        check_status(rite_model_apply(t.m, -1.0), RITE_ERR_SUMSQ, "apply with -1");
        assert_true(net_factors_equal(t.a, before));
        assert_model_state(t.m, &st0, "after a refused apply");
        /* the prepare was kept: apply with own + another process's share */
        total = sq + extra;
        check_status(rite_model_apply(t.m, total), RITE_OK, "rite_model_apply");
        path_total = path_step(&t.p, t.b, extra);
        assert_true(path_total == total);   /* the same sum, added in layer order */
        assert_twins_equal(&t, "after apply");
        check_status(rite_model_diagnostics(t.m, &dg), RITE_OK, "rite_model_diagnostics");
        assert_rel(dg.grad_norm, sqrt(total), 1e-15, "grad_norm: sqrt of the total clipping used");
        assert_rel(dg.clip_factor, sqrt(total) > rc.clip ? rc.clip / sqrt(total) : 1.0, 1e-15, "clip_factor");
        assert_int_equal(dg.step, s + 1);
        /* applied: a second apply has nothing to apply */
        check_status(rite_model_apply(t.m, total), RITE_ERR_NOT_PREPARED, "a second apply");
        assert_twins_equal(&t, "after a second apply");
        snap_free(&st0);
        free(before);
    }
    twins_free(&t);
}

static void run_two_phase(const model_case *c) {
    check_two_phase(c->prec);
}

static model_case two_phase_cases[] = {
    {"model_two_phase_with_another_share_equals_layer_path_f32", run_two_phase, RITE_LORA_RITE, RITE_FLOAT32, 0, 0, 0, 0, 0, 0, 0, 0},
    {"model_two_phase_with_another_share_equals_layer_path_f64", run_two_phase, RITE_LORA_RITE, RITE_FLOAT64, 0, 0, 0, 0, 0, 0, 0, 0},
};

static void model_apply_without_prepare_is_refused(void **state) {
    net *a = net_new(2, SHAPES, RITE_FLOAT32, 77);
    rite_model *m = model_new(a, RITE_LORA_RITE, NULL, 0);
    snap st0;
    (void)state;
    snap_model(&st0, m);
    check_status(rite_model_apply(m, 1.0), RITE_ERR_NOT_PREPARED, "apply before any prepare");
    assert_model_state(m, &st0, "after a refused apply");
    snap_free(&st0);
    rite_model_free(m);
    free(a);
}

/* ============================================================ 5. diagnostics */

/* One module (in 7, out 5, r 2, PEFT storage), double, against the naive
   reference. L = lora_A has orthogonal columns of norms 1 and 10 (its T is
   diag(1, 10) up to signs: condition number 10), R = lora_B orthogonal
   columns of norms 1 and 3 (condition 3), or 0 (LoRA's init). Gradients are
   normal (deviation 0.05), gL times gl_mult; the same for model and
   reference. */
enum { DM = 7, DN = 5, DR = 2 };
#define DIAG_GRAD_SCALE 0.05

typedef struct diag_run {
    rite_diagnostics model, layer;     /* after the last step */
    ref_layer ref;                     /* the reference after the same steps (its cfg: the run's) */
    long ref_skips_last;               /* factors the reference skipped in the last step */
    double gamma_last;                 /* the reference's global norm of the last step */
    double Lm[DM * DR], Rm[DN * DR];   /* the model's factors after the steps */
    double Lr[DM * DR], Rr[DN * DR];   /* the reference's */
} diag_run;

/* One diagnostics test: the run (rc_rite(lr, clip) with cap and escape,
   `steps` steps, gL times gl_mult, B = 0 when lora_init) and the check of
   its diagnostics. */
typedef struct diag_case {
    const char *name;
    double lr, clip, cap;
    int escape, steps;
    double gl_mult;
    int lora_init;
    void (*check)(const diag_run *r);
} diag_case;

/* columns of X (k x 2 logical) made orthogonal (Gram-Schmidt), with norms n0, n1 */
static void orthogonal_columns(double *X, int k, double n0, double n1) {
    double a = 0, d = 0, b = 0;
    int i;
    for (i = 0; i < k; i++) a += X[i * 2] * X[i * 2];
    a = sqrt(a);
    for (i = 0; i < k; i++) X[i * 2] /= a;
    for (i = 0; i < k; i++) d += X[i * 2] * X[i * 2 + 1];
    for (i = 0; i < k; i++) X[i * 2 + 1] -= d * X[i * 2];
    for (i = 0; i < k; i++) b += X[i * 2 + 1] * X[i * 2 + 1];
    b = sqrt(b);
    for (i = 0; i < k; i++) {
        X[i * 2] *= n0;
        X[i * 2 + 1] *= n1 / b;
    }
}

/* the steps of case c on the model and on the reference (rc) */
static void diag_run_steps(diag_run *out, const diag_case *c, rite_model *m, net *n, tu_rng *g) {
    int s;
    for (s = 0; s < c->steps; s++) {
        double gL[DM * DR], gR[DN * DR];
        long skips = out->ref.n_skip;
        tu_fill_normal(g, gL, DM * DR, DIAG_GRAD_SCALE * c->gl_mult);
        tu_fill_normal(g, gR, DN * DR, DIAG_GRAD_SCALE);
        net_put(n, 0, BUF_GA, gL);
        net_put(n, 0, BUF_GB, gR);
        check_status(net_step(m, n), RITE_OK, "rite_model_step_f64");
        out->gamma_last = ref_step(&out->ref, out->Lr, out->Rr, gL, gR);
        out->ref_skips_last = out->ref.n_skip - skips;
    }
}

static void diag_run_do(diag_run *out, const diag_case *c) {
    static const rite_lora one[1] = {{DM, DN, DR, RITE_RANK_FIRST, RITE_RANK_LAST, 1.0}};
    ref_config rc = rc_rite(c->lr, c->clip);
    rite_config cfg;
    net *n = net_new(1, one, RITE_FLOAT64, 0xd1a90006ull);
    rite_model *m;
    tu_rng g;
    rc.cap = c->cap;
    rc.escape = c->escape;
    cfg = tu_rite_config(&rc, RITE_LORA_RITE);
    memset(out, 0, sizeof *out);
    g.s = 0xd1a9d1a9ull;
    tu_fill_normal(&g, out->Lr, DM * DR, 1.0);
    tu_fill_normal(&g, out->Rr, DN * DR, 1.0);
    orthogonal_columns(out->Lr, DM, 1.0, 10.0);
    orthogonal_columns(out->Rr, DN, 1.0, 3.0);
    if (c->lora_init) memset(out->Rr, 0, sizeof out->Rr);
    net_put(n, 0, BUF_A, out->Lr);
    net_put(n, 0, BUF_B, out->Rr);
    m = model_new(n, RITE_LORA_RITE, &cfg, 0);
    ref_init(&out->ref, DM, DN, DR, &rc);
    diag_run_steps(out, c, m, n, &g);
    net_get(n, 0, BUF_A, out->Lm);
    net_get(n, 0, BUF_B, out->Rm);
    /* the model followed the reference (a sanity check of the setup) */
    assert_true(tu_rel_diff(out->Lm, out->Lr, DM * DR) < 1e-9);
    assert_true(tu_rel_diff(out->Rm, out->Rr, DN * DR) < 1e-9);
    check_status(rite_model_diagnostics(m, &out->model), RITE_OK, "rite_model_diagnostics");
    check_status(rite_layer_diagnostics(rite_model_layer(m, 0), &out->layer), RITE_OK, "rite_layer_diagnostics");
    rite_model_free(m);
    free(n);
}

/* the runner of every diagnostics case: its case is cmocka's state */
static void run_diag_case(void **state) {
    const diag_case *c = (const diag_case *)*state;
    diag_run r;
    diag_run_do(&r, c);
    c->check(&r);
    ref_free(&r.ref);
}

/* lr rms(U), U = M / max(1, rms(M) / cap) per factor (SPEC 11), from the
   reference's first moments */
static double expected_update_rms(const ref_layer *ly) {
    const ref_config *c = &ly->cfg;
    double sL = ref__sumsq(ly->ML, (size_t)ly->m * ly->r), sR = ref__sumsq(ly->MR, (size_t)ly->n * ly->r);
    if (c->cap > 0) {
        double fL = sqrt(sL / ((double)ly->m * ly->r)) / c->cap, fR = sqrt(sR / ((double)ly->n * ly->r)) / c->cap;
        if (fL > 1) sL /= fL * fL;
        if (fR > 1) sR /= fR * fR;
    }
    return c->lr * sqrt((sL + sR) / ((double)(ly->m + ly->n) * ly->r));
}


static void diag_equal(const rite_diagnostics *a, const rite_diagnostics *b) {
    assert_int_equal(a->step, b->step);
    assert_true(a->grad_norm == b->grad_norm);
    assert_true(a->clip_factor == b->clip_factor);
    assert_int_equal(a->skipped, b->skipped);
    assert_true(a->update_rms == b->update_rms);
    assert_true(a->rho_max == b->rho_max);
    assert_true(a->cond_max == b->cond_max);
}

/* step 1, clipping active: grad_norm = sqrt(sum ||gbar||^2), clip_factor =
   clip / grad_norm, update_rms = lr rms(gbar Q) (at step 1 M = S), cond 10 */
static void check_hand_values_at_step_one(const diag_run *r) {
    assert_true(r->gamma_last > r->ref.cfg.clip);   /* clipping was active */
    assert_int_equal(r->ref.n_clip, 1);
    assert_int_equal(r->model.step, 1);
    assert_rel(r->model.grad_norm, r->gamma_last, 1e-12, "grad_norm");
    assert_rel(r->model.clip_factor, r->ref.cfg.clip / r->gamma_last, 1e-12, "clip_factor");
    assert_int_equal(r->model.skipped, 0);
    assert_rel(r->model.update_rms, expected_update_rms(&r->ref), 1e-9, "update_rms");
    assert_true(r->model.rho_max == 0.0);   /* escape off */
    assert_rel(r->model.cond_max, 10.0, 1e-9, "cond_max");
    diag_equal(&r->model, &r->layer);       /* one layer: the model's are the layer's */
}

/* a global norm below clip */
static void check_clip_factor_one_below_clip(const diag_run *r) {
    assert_true(r->gamma_last < r->ref.cfg.clip);
    assert_rel(r->model.grad_norm, r->gamma_last, 1e-12, "grad_norm");
    assert_true(r->model.clip_factor == 1.0);
    assert_rel(r->model.update_rms, expected_update_rms(&r->ref), 1e-9, "update_rms");
}

/* clip = 0: off */
static void check_clip_factor_one_with_clip_off(const diag_run *r) {
    assert_rel(r->model.grad_norm, r->gamma_last, 1e-12, "grad_norm, clip off");
    assert_true(r->model.clip_factor == 1.0);
}

/* gL 1e4 times larger: gbar_L's rms is far above skip, gbar_R's below */
static void check_one_factor_skipped(const diag_run *r) {
    assert_int_equal(r->ref_skips_last, 1);
    assert_int_equal(r->model.skipped, 1);
    /* the norm after skipping is gbar_R's alone */
    assert_rel(r->model.grad_norm, sqrt(ref__sumsq(r->ref.gbR, DN * DR)), 1e-12, "grad_norm");
    assert_rel(r->model.update_rms, expected_update_rms(&r->ref), 1e-9, "update_rms");
}

/* escape on, lr large enough to turn the bases: escaped mass at step 2 */
static void check_rho_max_is_the_escaped_mass(const diag_run *r) {
    double rho = r->ref.rhoL > r->ref.rhoR ? r->ref.rhoL : r->ref.rhoR;
    assert_true(r->ref.n_escape > 0);
    assert_true(rho > 0);
    assert_int_equal(r->model.step, 2);
    assert_rel(r->model.rho_max, rho, 1e-6, "rho_max");
    assert_rel(r->model.grad_norm, r->gamma_last, 1e-9, "grad_norm at step 2");
    assert_rel(r->model.update_rms, expected_update_rms(&r->ref), 1e-7, "update_rms at step 2");
}

/* cap active: update_rms is that of the capped U, not of M */
static void check_update_rms_after_capping(const diag_run *r) {
    assert_true(r->ref.n_cap > 0);
    assert_rel(r->model.update_rms, expected_update_rms(&r->ref), 1e-9, "update_rms");
}

/* LoRA's B = 0: a rank-deficient factor's condition is infinite */
static void check_cond_max_is_inf(const diag_run *r) {
    assert_true(isinf(r->model.cond_max) && r->model.cond_max > 0);
}

static const diag_case diag_cases[] = {
    /* name, lr, clip, cap, escape, steps, gl_mult, lora_init, check */
    {"diagnostics_at_step_one_match_hand_values", 0.01, 0.05, 0, 0, 1, 1.0, 0, check_hand_values_at_step_one},
    {"diagnostics_without_clipping_have_clip_factor_one", 0.01, 100.0, 0, 0, 1, 1.0, 0, check_clip_factor_one_below_clip},
    {"diagnostics_with_clipping_off_have_clip_factor_one", 0.01, 0, 0, 0, 1, 1.0, 0, check_clip_factor_one_with_clip_off},
    {"diagnostics_count_a_skipped_factor", 0.01, 1.0, 0, 0, 1, 1e4, 0, check_one_factor_skipped},
    {"diagnostics_rho_max_is_the_escaped_mass", 0.2, 1.0, 0, 1, 2, 1.0, 0, check_rho_max_is_the_escaped_mass},
    {"diagnostics_update_rms_is_after_capping", 0.01, 1.0, 0.2, 0, 2, 1.0, 0, check_update_rms_after_capping},
    {"diagnostics_cond_max_is_inf_for_lora_init", 0.01, 1.0, 0, 0, 1, 1.0, 1, check_cond_max_is_inf},
};

/* the cmocka entry of diagnostics case i */
#define DIAG_TEST(i) {diag_cases[i].name, run_diag_case, NULL, NULL, (void *)&diag_cases[i]}

static void diagnostics_are_zero_before_the_first_step(void **state) {
    net *n = net_new(3, SHAPES, RITE_FLOAT32, 99);
    rite_model *m = model_new(n, RITE_LORA_RITE, NULL, 0);
    rite_diagnostics dg;
    (void)state;
    memset(&dg, 0x5a, sizeof dg);
    check_status(rite_model_diagnostics(m, &dg), RITE_OK, "rite_model_diagnostics");
    assert_int_equal(dg.step, 0);
    assert_true(dg.grad_norm == 0 && dg.clip_factor == 0 && dg.update_rms == 0);
    assert_true(dg.rho_max == 0 && dg.cond_max == 0);
    assert_int_equal(dg.skipped, 0);
    check_status(rite_model_diagnostics(m, NULL), RITE_ERR_NULL_ARGUMENT, "diagnostics into NULL");
    rite_model_free(m);
    free(n);
}

/* AdamW: grad_norm is the plain gradient norm over every layer, update_rms
   the rms of the actual change of every factor element (to `tol`: a float
   model may form the squares in float) */
static void check_adamw_diagnostics(rite_precision prec, double tol) {
    rite_config cfg = cfg_of(rc_adamw(0.01), RITE_ADAMW);
    net *n = net_new(3, SHAPES, prec, 0xada0007ull), *before;
    rite_model *m = model_new(n, RITE_ADAMW, &cfg, 0);
    int s;
    for (s = 0; s < 2; s++) {
        double gsq = 0, dsq = 0, cnt = 0;
        rite_diagnostics dg;
        int i, b;
        size_t e;
        memset(&dg, 0, sizeof dg);
        net_grad(n, grad_scale(s));
        before = net_clone(n);
        check_status(net_step(m, n), RITE_OK, "AdamW model step");
        for (i = 0; i < n->nl; i++) {
            for (b = BUF_GA; b <= BUF_GB; b++)
                for (e = 0; e < buf_count(n, i, b); e++) gsq += elem_get(n, i, b, e) * elem_get(n, i, b, e);
            for (b = BUF_A; b <= BUF_B; b++)
                for (e = 0; e < buf_count(n, i, b); e++) {
                    double dlt = elem_get(n, i, b, e) - elem_get(before, i, b, e);
                    dsq += dlt * dlt;
                    cnt += 1;
                }
        }
        check_status(rite_model_diagnostics(m, &dg), RITE_OK, "rite_model_diagnostics");
        assert_int_equal(dg.step, s + 1);
        assert_rel(dg.grad_norm, sqrt(gsq), tol, "AdamW grad_norm");
        assert_rel(dg.update_rms, sqrt(dsq / cnt), tol, "AdamW update_rms");
        assert_true(dg.clip_factor == 1.0);
        assert_int_equal(dg.skipped, 0);
        assert_true(dg.rho_max == 0);
        free(before);
    }
    rite_model_free(m);
    free(n);
}

static void run_adamw_diagnostics(const model_case *c) {
    check_adamw_diagnostics(c->prec, c->tol);
}

static model_case adamw_diagnostics_cases[] = {
    {"adamw_diagnostics_are_gradient_norm_and_change_rms_f64", run_adamw_diagnostics, RITE_ADAMW, RITE_FLOAT64, 0, 0, 0, 0, 0, 0, 0, 1e-9},
    {"adamw_diagnostics_are_gradient_norm_and_change_rms_f32", run_adamw_diagnostics, RITE_ADAMW, RITE_FLOAT32, 0, 0, 0, 0, 0, 0, 0, 1e-4},
};

/* The model's diagnostics over its layers': grad_norm^2 the sum of the
   layers' squares, the same clip factor everywhere (global clipping),
   skipped a sum, rho_max and cond_max maxima, update_rms the rms over every
   entry (each layer's weighted by its (in + out) r entries). */
static void assert_aggregate_of_layers(const rite_model *m, const rite_diagnostics *md) {
    double sq = 0, usq = 0, cnt = 0, rho = 0, cond = 0;
    int skipped = 0, i;
    for (i = 0; i < MAXL; i++) {
        double k = (double)(SHAPES[i].in_features + SHAPES[i].out_features) * SHAPES[i].r;
        rite_diagnostics ld = {0, 0, 0, 0, 0, 0, 0};
        check_status(rite_layer_diagnostics(rite_model_layer(m, i), &ld), RITE_OK, "rite_layer_diagnostics");
        assert_int_equal(ld.step, md->step);
        assert_true(ld.clip_factor == md->clip_factor);
        sq += ld.grad_norm * ld.grad_norm;
        usq += ld.update_rms * ld.update_rms * k;
        cnt += k;
        skipped += ld.skipped;
        if (ld.rho_max > rho) rho = ld.rho_max;
        if (ld.cond_max > cond) cond = ld.cond_max;
    }
    assert_rel(md->grad_norm, sqrt(sq), 1e-12, "model grad_norm");
    assert_int_equal(md->skipped, skipped);
    assert_rel(md->update_rms, sqrt(usq / cnt), 1e-12, "model update_rms");
    assert_true(md->rho_max == rho);
    assert_true(md->cond_max == cond);
}

/* three steps with global clipping active and layer 2's lora_A skipped */
static void model_diagnostics_aggregate_the_layers(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.02, 0.05), RITE_LORA_RITE);
    net *n = net_new(MAXL, SHAPES, RITE_FLOAT32, 0xa99e0008ull);
    rite_model *m;
    int s, i;
    (void)state;
    cfg.escape = 1;
    cfg.skip = 0.6;
    m = model_new(n, RITE_LORA_RITE, &cfg, 0);
    for (s = 0; s < 3; s++) {
        rite_diagnostics md = {0, 0, 0, 0, 0, 0, 0};
        net_grad(n, grad_scale(s));
        /* layer 2's lora_A gradient far too large: skipped */
        for (i = 0; i < (int)buf_count(n, 2, BUF_GA); i++) n->f[2][BUF_GA][i] *= 1000.0f;
        check_status(net_step(m, n), RITE_OK, "model step");
        check_status(rite_model_diagnostics(m, &md), RITE_OK, "rite_model_diagnostics");
        assert_int_equal(md.step, s + 1);   /* and so each layer's (assert_aggregate_of_layers) */
        assert_true(md.grad_norm > cfg.clip);   /* clipping was active */
        assert_rel(md.clip_factor, cfg.clip / md.grad_norm, 1e-12, "model clip_factor");
        assert_aggregate_of_layers(m, &md);
        assert_true(md.skipped >= 1);
    }
    rite_model_free(m);
    free(n);
}

/* ============================================================ 6. checkpoints */

/* The model checkpoint's documented layout (little-endian):
     0 "LRITEMDL", 8 u32 version, 12 u32 header bytes (48 + 32 n),
     16 u32 flags (1: factors), 20 optimizer, 24 precision, 28 keep_basis,
     32 n, 40 u64 step count; 48 + 32 i: in, out, r, layout_A, layout_B, 0,
     f64 lr_scale; then every layer's state, then (flag 1) every layer's
     lora_A and lora_B packed; last a u64 FNV-1a 64 of all bytes before. */
enum { CK_HEAD = 48, CK_LAYER = 32, CK_K = 3, CK_N = 3 };

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void put_le32(unsigned char *p, uint32_t v) {
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_le64(unsigned char *p, uint64_t v) {
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
/* a checksum recomputed after an edit ("resealed") */
static void reseal(unsigned char *buf, size_t size) { put_le64(buf + size - 8, tu_fnv1a(buf, size - 8)); }

static int host_little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static size_t model_state_bytes(const rite_model *m) {
    size_t n = 0;
    int i;
    for (i = 0; i < rite_model_layer_count(m); i++) n += rite_state_size(rite_model_layer(m, i));
    return n;
}

/* save into a new buffer, with n's factors (NULL: without) */
static unsigned char *ck_save(const rite_model *m, const net *n, size_t *size) {
    factor_arrays t;
    const void *A, *B;
    unsigned char *buf;
    *size = rite_model_checkpoint_size(m, n != NULL);
    buf = (unsigned char *)malloc(*size + 16);
    assert_non_null(buf);
    factor_arrays_of(n, &t, &A, &B);
    check_status(rite_model_checkpoint_save(m, A, B, buf, *size), RITE_OK, "rite_model_checkpoint_save");
    return buf;
}

/* load, into n's factors (NULL: without) */
static rite_status ck_load(rite_model *m, net *n, const unsigned char *buf, size_t size) {
    factor_arrays t;
    const void *A, *B;
    factor_arrays_of(n, &t, &A, &B);
    return rite_model_checkpoint_load(m, A, B, buf, size);
}

/* a path for a temporary file (created empty) */
static void tmp_path(char *path, size_t size) {
#if TM_POSIX
    const char *dir = getenv("TMPDIR");
    int fd;
    snprintf(path, size, "%s/rite_model_XXXXXX", dir && *dir ? dir : "/tmp");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
#else
    snprintf(path, size, "rite_model_test.ckpt");
#endif
}

static void ck_save_file(const rite_model *m, const net *n, const char *path) {
    factor_arrays t;
    const void *A, *B;
    factor_arrays_of(n, &t, &A, &B);
    check_status(rite_model_checkpoint_save_file(m, A, B, path), RITE_OK, "rite_model_checkpoint_save_file");
}

static rite_status ck_load_file(rite_model *m, net *n, const char *path) {
    factor_arrays t;
    const void *A, *B;
    factor_arrays_of(n, &t, &A, &B);
    return rite_model_checkpoint_load_file(m, A, B, path);
}

/* CK_K steps, a checkpoint, CK_N more; a fresh model that loads the
   checkpoint (its factors too, or the caller's copy of them) and takes the
   same CK_N steps ends bit for bit where the first did. */
static void check_resume(rite_optimizer opt, rite_precision prec, int keep_basis, int with_factors, int file) {
    ref_config rc = opt == RITE_ADAMW ? rc_adamw(0.01) : rc_rite(0.01, 0.05);
    rite_config cfg;
    net *a = net_new(MAXL, SHAPES, prec, 0xc4e0010ull), *mid, *b;
    rite_model *m, *m2;
    unsigned char *buf = NULL;
    size_t size = 0;
    char path[512];
    snap at_k;
    int i;
    if (opt == RITE_LORA_RITE) rc.escape = 1;
    cfg = tu_rite_config(&rc, opt);
    m = model_new(a, opt, &cfg, keep_basis);
    run_steps(m, a, 0, CK_K);
    mid = net_clone(a);
    snap_model(&at_k, m);
    if (file) {
        tmp_path(path, sizeof path);
        ck_save_file(m, with_factors ? a : NULL, path);
    } else {
        buf = ck_save(m, with_factors ? a : NULL, &size);
    }
    run_steps(m, a, CK_K, CK_K + CK_N);

    b = net_clone(mid);
    m2 = model_new(b, opt, &cfg, keep_basis);
    if (with_factors)   /* the load must bring them back */
        for (i = 0; i < b->nl; i++) {
            memset(buf_ptr(b, i, BUF_A), 0x41, buf_count(b, i, BUF_A) * elem_size(b));
            memset(buf_ptr(b, i, BUF_B), 0x41, buf_count(b, i, BUF_B) * elem_size(b));
        }
    if (file) {
        check_status(ck_load_file(m2, with_factors ? b : NULL, path), RITE_OK, "rite_model_checkpoint_load_file");
        remove(path);
    } else {
        check_status(ck_load(m2, with_factors ? b : NULL, buf, size), RITE_OK, "rite_model_checkpoint_load");
    }
    assert_true(net_factors_equal(b, mid));
    assert_int_equal(rite_model_step_count(m2), CK_K);
    assert_model_state(m2, &at_k, "after the load");
    run_steps(m2, b, CK_K, CK_K + CK_N);
    assert_true(net_factors_equal(b, a));
    assert_same_model_state(m2, m, "after the resumed steps");
    assert_int_equal(rite_model_step_count(m2), CK_K + CK_N);
    snap_free(&at_k);
    free(buf);
    free_twins(m, m2, a, b);
    free(mid);
}

static void model_checkpoint_resumes_exactly_f32(void **state) {
    (void)state;
    check_resume(RITE_LORA_RITE, RITE_FLOAT32, 0, 1, 0);
}

static void model_checkpoint_resumes_exactly_keep_basis_f64_file(void **state) {
    (void)state;
    check_resume(RITE_LORA_RITE, RITE_FLOAT64, 1, 1, 1);
}

static void model_checkpoint_without_factors_resumes_with_the_callers(void **state) {
    (void)state;
    check_resume(RITE_LORA_RITE, RITE_FLOAT32, 0, 0, 0);
    check_resume(RITE_LORA_RITE, RITE_FLOAT64, 0, 0, 1);
}

static void adamw_model_checkpoint_resumes_exactly(void **state) {
    (void)state;
    check_resume(RITE_ADAMW, RITE_FLOAT64, 0, 1, 1);
    check_resume(RITE_ADAMW, RITE_FLOAT32, 0, 0, 0);
}

/* every field where the layout puts it, little-endian, and the checksum */
static void model_checkpoint_layout_is_the_documented_one(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE);
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x1a70011ull);
    rite_model *m = model_new(a, RITE_LORA_RITE, &cfg, 0);
    unsigned char *buf, *nof;
    size_t size, size0, off, factor_bytes = 0;
    int i, b;
    (void)state;
    run_steps(m, a, 0, 2);
    buf = ck_save(m, a, &size);
    nof = ck_save(m, NULL, &size0);
    for (i = 0; i < MAXL; i++) factor_bytes += (buf_count(a, i, BUF_A) + buf_count(a, i, BUF_B)) * sizeof(float);
    assert_int_equal(size0, CK_HEAD + CK_LAYER * MAXL + model_state_bytes(m) + 8);
    assert_int_equal(size, size0 + factor_bytes);
    assert_memory_equal(buf, "LRITEMDL", 8);
    assert_int_equal(le32(buf + 8), 1);                         /* version */
    assert_int_equal(le32(buf + 12), CK_HEAD + CK_LAYER * MAXL); /* header bytes */
    assert_int_equal(le32(buf + 16), 1);                        /* factors follow */
    assert_int_equal(le32(nof + 16), 0);
    assert_int_equal(le32(buf + 20), RITE_LORA_RITE);
    assert_int_equal(le32(buf + 24), RITE_FLOAT32);
    assert_int_equal(le32(buf + 28), 0);                        /* keep_basis */
    assert_int_equal(le32(buf + 32), MAXL);
    assert_int_equal(le64(buf + 40), 2);                        /* step count */
    for (i = 0; i < MAXL; i++) {
        const unsigned char *q = buf + CK_HEAD + CK_LAYER * i;
        uint64_t bits = le64(q + 24);
        double scale;
        memcpy(&scale, &bits, 8);
        assert_int_equal(le32(q), SHAPES[i].in_features);
        assert_int_equal(le32(q + 4), SHAPES[i].out_features);
        assert_int_equal(le32(q + 8), SHAPES[i].r);
        assert_int_equal(le32(q + 12), SHAPES[i].layout_A);
        assert_int_equal(le32(q + 16), SHAPES[i].layout_B);
        assert_true(scale == SHAPES[i].lr_scale);
    }
    assert_true(le64(buf + size - 8) == tu_fnv1a(buf, size - 8));
    assert_true(le64(nof + size0 - 8) == tu_fnv1a(nof, size0 - 8));
    /* the states as rite_state_copy gives them, then lora_A and lora_B
       (little-endian: as in memory on a little-endian host) */
    off = CK_HEAD + CK_LAYER * MAXL;
    for (i = 0; i < MAXL; i++) {
        size_t n = rite_state_size(rite_model_layer(m, i));
        unsigned char *st = (unsigned char *)malloc(n);
        assert_non_null(st);
        check_status(rite_state_copy(rite_model_layer(m, i), st, n), RITE_OK, "rite_state_copy");
        if (host_little_endian()) assert_memory_equal(buf + off, st, n);
        free(st);
        off += n;
    }
    for (i = 0; i < MAXL; i++)
        for (b = BUF_A; b <= BUF_B; b++) {
            size_t e;
            for (e = 0; e < buf_count(a, i, b); e++) {
                uint32_t u = le32(buf + off + 4 * e);
                float f;
                memcpy(&f, &u, 4);
                assert_true(memcmp(&f, &a->f[i][b][e], 4) == 0);
            }
            off += buf_count(a, i, b) * 4;
        }
    assert_int_equal(off + 8, size);
    free(buf);
    free(nof);
    rite_model_free(m);
    free(a);
}

/* A load that must fail with `want` (and a message holding `word`): the
   model's state, step count and the caller's factors stay as they were. */
static void expect_load_fails(rite_model *m, net *n, const unsigned char *buf, size_t size, rite_status want,
                              const char *word, const char *what) {
    snap before;
    net *keep = n ? net_clone(n) : NULL;
    long long steps = rite_model_step_count(m);
    const char *msg;
    snap_model(&before, m);
    check_status(ck_load(m, n, buf, size), want, what);
    msg = rite_model_last_error(m);
    if (word && !strstr(msg, word)) {
        print_error("%s: the message \"%s\" does not contain \"%s\"\n", what, msg, word);
        fail();
    }
    assert_model_state(m, &before, what);
    assert_int_equal(rite_model_step_count(m), steps);
    if (n) assert_true(net_factors_equal(n, keep));
    snap_free(&before);
    free(keep);
}

/* A model that differs from the checkpoint's in one respect refuses it
   (MISMATCH), names what differs, and changes nothing. */
static void check_mismatch(const unsigned char *buf, size_t size, const rite_lora *shapes, int nl,
                           rite_optimizer opt, rite_precision prec, int keep_basis, const char *word,
                           const char *what) {
    net *n = net_new(nl, shapes, prec, 0x3133ull);
    rite_model *m = model_new(n, opt, NULL, keep_basis);
    run_steps(m, n, 0, 1);   /* a state of its own, to see that it stays */
    expect_load_fails(m, n, buf, size, RITE_ERR_CHECKPOINT_MISMATCH, word, what);
    expect_load_fails(m, NULL, buf, size, RITE_ERR_CHECKPOINT_MISMATCH, word, what);
    rite_model_free(m);
    free(n);
}

static void model_checkpoint_for_another_model_is_refused(void **state) {
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x3e3e0012ull);
    rite_model *m = model_new(a, RITE_LORA_RITE, NULL, 0);
    rite_lora other[MAXL];
    unsigned char *buf;
    size_t size;
    (void)state;
    run_steps(m, a, 0, 2);
    buf = ck_save(m, a, &size);
    check_mismatch(buf, size, SHAPES, MAXL - 1, RITE_LORA_RITE, RITE_FLOAT32, 0, "layer count", "4 layers, not 5");
    memcpy(other, SHAPES, sizeof other);
    other[2].r = 5;
    check_mismatch(buf, size, other, MAXL, RITE_LORA_RITE, RITE_FLOAT32, 0, "layer 2: r", "r 5 in layer 2");
    memcpy(other, SHAPES, sizeof other);
    other[0].in_features = 13;
    check_mismatch(buf, size, other, MAXL, RITE_LORA_RITE, RITE_FLOAT32, 0, "layer 0: in_features",
                   "in_features 13 in layer 0");
    memcpy(other, SHAPES, sizeof other);
    other[3].out_features = 31;
    check_mismatch(buf, size, other, MAXL, RITE_LORA_RITE, RITE_FLOAT32, 0, "layer 3: out_features",
                   "out_features 31 in layer 3");
    memcpy(other, SHAPES, sizeof other);
    other[1].layout_A = RITE_RANK_FIRST;
    check_mismatch(buf, size, other, MAXL, RITE_LORA_RITE, RITE_FLOAT32, 0, "layer 1: layout_A",
                   "another layout_A in layer 1");
    memcpy(other, SHAPES, sizeof other);
    other[4].layout_B = RITE_RANK_LAST;
    check_mismatch(buf, size, other, MAXL, RITE_LORA_RITE, RITE_FLOAT32, 0, "layer 4: layout_B",
                   "another layout_B in layer 4");
    check_mismatch(buf, size, SHAPES, MAXL, RITE_ADAMW, RITE_FLOAT32, 0, "optimizer", "AdamW");
    check_mismatch(buf, size, SHAPES, MAXL, RITE_LORA_RITE, RITE_FLOAT64, 0, "precision", "double");
    check_mismatch(buf, size, SHAPES, MAXL, RITE_LORA_RITE, RITE_FLOAT32, 1, "keep_basis", "keep_basis 1");
    free(buf);
    rite_model_free(m);
    free(a);
}

/* Damaged checkpoints: each refused with its code; the model that refuses
   them then steps exactly as a twin that never saw them. */
static void model_checkpoint_damaged_is_refused_and_changes_nothing(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE);
    net *src = net_new(MAXL, SHAPES, RITE_FLOAT32, 0xda0013ull), *n, *tn;
    rite_model *ms = model_new(src, RITE_LORA_RITE, &cfg, 0), *m, *t;
    unsigned char *good, *nof, *bad;
    size_t size, size0, head = CK_HEAD + CK_LAYER * MAXL, factors_at, k;
    static const size_t cut_at[] = {0, 1, 7, 8, 47, 48, 49};
    char what[96];
    (void)state;
    run_steps(ms, src, 0, 2);
    good = ck_save(ms, src, &size);
    nof = ck_save(ms, NULL, &size0);
    factors_at = head + model_state_bytes(ms);
    bad = (unsigned char *)malloc(size + 1);
    assert_non_null(bad);

    /* the model that refuses, and its twin; both take one step first */
    n = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x7717ull);
    tn = net_clone(n);
    m = model_new(n, RITE_LORA_RITE, &cfg, 0);
    t = model_new(tn, RITE_LORA_RITE, &cfg, 0);
    run_steps(m, n, 0, 1);
    run_steps(t, tn, 0, 1);

    memcpy(bad, good, size);
    bad[0] ^= 0xff;
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_FORMAT, NULL, "another magic");
    memcpy(bad, good, size);
    put_le32(bad + 8, 2);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_VERSION, "version", "version 2");
    reseal(bad, size);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_VERSION, "version", "version 2, resealed");
    /* truncated anywhere, or one byte too long */
    memcpy(bad, good, size);
    for (k = 0; k < sizeof cut_at / sizeof cut_at[0]; k++) {
        snprintf(what, sizeof what, "truncated to %zu bytes", cut_at[k]);
        expect_load_fails(m, n, bad, cut_at[k], RITE_ERR_CHECKPOINT_FORMAT, NULL, what);
    }
    {
        const size_t more[] = {head - 1, head, head + 8, factors_at, size / 2, size - 9, size - 8, size - 1};
        for (k = 0; k < sizeof more / sizeof more[0]; k++) {
            snprintf(what, sizeof what, "truncated to %zu of %zu bytes", more[k], size);
            expect_load_fails(m, n, bad, more[k], RITE_ERR_CHECKPOINT_FORMAT, NULL, what);
        }
    }
    bad[size] = 0;
    expect_load_fails(m, n, bad, size + 1, RITE_ERR_CHECKPOINT_FORMAT, NULL, "one byte too long");
    /* one flipped byte in a state, in a factor, in a recorded lr_scale: the checksum */
    memcpy(bad, good, size);
    bad[head + 20] ^= 0x10;
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "checksum", "a byte of a state flipped");
    memcpy(bad, good, size);
    bad[size - 9] ^= 0x01;
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "checksum", "a byte of a factor flipped");
    memcpy(bad, good, size);
    bad[CK_HEAD + 24] ^= 0x01;
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "checksum", "layer 0's lr_scale flipped");
    /* impossible values behind a good checksum */
    memcpy(bad, good, size);
    put_le32(bad + factors_at, 0x7fc00000u);   /* layer 0's first lora_A element: a float NaN */
    reseal(bad, size);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "NaN", "a NaN factor, resealed");
    /* the last layer's state ends with R's escaped mass (a double) and the
       factors-changed flag (4 bytes), just before the factors */
    memcpy(bad, good, size);
    put_le64(bad + factors_at - 12, 0xbff0000000000000ull);   /* -1.0 */
    reseal(bad, size);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "escaped mass", "a negative escaped mass");
    memcpy(bad, good, size);
    put_le64(bad + factors_at - 12, 0x7ff8000000000000ull);   /* NaN */
    reseal(bad, size);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "NaN", "a NaN escaped mass");
    memcpy(bad, good, size);
    put_le32(bad + factors_at - 4, 2);
    reseal(bad, size);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "factors-changed", "a flag of 2");
    memcpy(bad, good, size);
    put_le64(bad + 40, (uint64_t)1 << 62);
    reseal(bad, size);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_CORRUPT, "step count", "step count 2^62, resealed");
    memcpy(bad, good, size);
    put_le32(bad + 16, 3);
    reseal(bad, size);
    expect_load_fails(m, n, bad, size, RITE_ERR_CHECKPOINT_FORMAT, NULL, "flags 3, resealed");
    /* factors asked of a checkpoint without them */
    expect_load_fails(m, n, nof, size0, RITE_ERR_CHECKPOINT_MISMATCH, "factors", "no factors to load");
    /* arguments */
    {
        factor_arrays t;
        const void *A, *B;
        snap before;
        factor_arrays_of(n, &t, &A, &B);
        snap_model(&before, m);
        check_status(rite_model_checkpoint_load(m, A, NULL, good, size), RITE_ERR_NULL_ARGUMENT, "A without B");
        check_status(rite_model_checkpoint_load(m, NULL, NULL, NULL, size), RITE_ERR_NULL_ARGUMENT, "NULL src");
        assert_model_state(m, &before, "after refused arguments");
        snap_free(&before);
    }
    /* the refusing model steps as its twin */
    assert_true(net_factors_equal(n, tn));
    run_steps(m, n, 1, 3);
    run_steps(t, tn, 1, 3);
    assert_true(net_factors_equal(n, tn));
    assert_same_model_state(m, t, "after all the refused loads");
    free(good);
    free(nof);
    free(bad);
    rite_model_free(ms);
    free_twins(m, t, src, n);
    free(tn);
}

/* A checkpoint load cancels a pending prepare as rite_checkpoint_load does
   for a layer: apply is refused, and every layer counts one dropped prepare. */
static void model_checkpoint_load_cancels_a_pending_prepare(void **state) {
    net *a = net_new(3, SHAPES, RITE_FLOAT32, 0xca9ce100ull);
    rite_model *m = model_new(a, RITE_LORA_RITE, NULL, 0);
    unsigned char *buf;
    size_t size;
    double sq;
    int i;
    (void)state;
    run_steps(m, a, 0, 1);
    buf = ck_save(m, NULL, &size);
    net_grad(a, 1.0);
    check_status(net_prepare(m, a, &sq), RITE_OK, "prepare");
    check_status(ck_load(m, NULL, buf, size), RITE_OK, "load");
    check_status(rite_model_apply(m, sq), RITE_ERR_NOT_PREPARED, "apply after the load");
    for (i = 0; i < a->nl; i++) {
        assert_int_equal(rite_prepares_dropped(rite_model_layer(m, i)), 1);
        assert_false(rite_is_prepared(rite_model_layer(m, i)));
    }
    free(buf);
    free_twins(m, NULL, a, NULL);
}

/* Between prepare and apply the lr may change, skip may not: a config that
   changes skip cancels the model's prepare and every layer's, as
   rite_set_config does for a layer. */
static void model_set_config_changing_skip_cancels_the_prepare(void **state) {
    net *a = net_new(3, SHAPES, RITE_FLOAT32, 0x5c1b0001ull);
    rite_model *m = model_new(a, RITE_LORA_RITE, NULL, 0);
    rite_config c = rite_model_get_config(m);
    double sq;
    int i;
    (void)state;
    net_grad(a, 1.0);
    check_status(net_prepare(m, a, &sq), RITE_OK, "prepare");
    c.lr *= 0.5;
    check_status(rite_model_set_config(m, &c), RITE_OK, "a new lr");
    check_status(rite_model_apply(m, sq), RITE_OK, "apply after a new lr");
    check_status(net_prepare(m, a, &sq), RITE_OK, "prepare again");
    c.skip *= 2;
    check_status(rite_model_set_config(m, &c), RITE_OK, "a new skip");
    check_status(rite_model_apply(m, sq), RITE_ERR_NOT_PREPARED, "apply after a new skip");
    assert_non_null(strstr(rite_model_last_error(m), "no pending rite_model_prepare"));   /* the model knows */
    for (i = 0; i < a->nl; i++) assert_int_equal(rite_prepares_dropped(rite_model_layer(m, i)), 1);
    free_twins(m, NULL, a, NULL);
}

static void model_checkpoint_file_errors_change_nothing(void **state) {
    net *a = net_new(3, SHAPES, RITE_FLOAT64, 0xf11e0014ull);
    rite_model *m = model_new(a, RITE_LORA_RITE, NULL, 0);
    factor_arrays t;
    const void *A, *B;
    char path[512];
    snap before;
    (void)state;
    run_steps(m, a, 0, 1);
    snap_model(&before, m);
    factor_arrays_of(a, &t, &A, &B);
    tmp_path(path, sizeof path);
    remove(path);   /* now it does not exist */
    check_status(ck_load_file(m, a, path), RITE_ERR_IO, "load of a missing file");
    {   /* a good checkpoint with 1 MiB after it: too long, refused */
        FILE *fp;
        int i;
        ck_save_file(m, a, path);
        fp = fopen(path, "ab");
        assert_non_null(fp);
        for (i = 0; i < 1 << 20; i++) fputc(i & 0xff, fp);
        assert_int_equal(fclose(fp), 0);
        check_status(ck_load_file(m, a, path), RITE_ERR_CHECKPOINT_FORMAT, "load of a file 1 MiB too long");
        remove(path);
    }
    check_status(rite_model_checkpoint_save_file(m, A, B, "/nonexistent-dir-of-rite/x.ckpt"), RITE_ERR_IO,
                 "save into a missing directory");
    {
        size_t size = rite_model_checkpoint_size(m, 1);
        unsigned char *buf = (unsigned char *)malloc(size);
        assert_non_null(buf);
        check_status(rite_model_checkpoint_save(m, A, B, buf, size - 1), RITE_ERR_BUFFER_SIZE, "one byte short");
        check_status(rite_model_checkpoint_save(m, A, NULL, buf, size), RITE_ERR_NULL_ARGUMENT, "A without B");
        free(buf);
    }
    assert_model_state(m, &before, "after the file errors");
    snap_free(&before);
    rite_model_free(m);
    free(a);
}

/* lr_scale and the config are the model's own: recorded, not compared */
static void model_checkpoint_keeps_the_models_hyper_parameters(void **state) {
    rite_config c1 = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE), c2;
    rite_lora other[MAXL];
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT64, 0x4b0015ull), *b;
    rite_model *m = model_new(a, RITE_LORA_RITE, &c1, 0), *m2;
    unsigned char *buf;
    size_t size;
    int i;
    (void)state;
    run_steps(m, a, 0, 2);
    buf = ck_save(m, a, &size);
    memcpy(other, SHAPES, sizeof other);
    other[1].lr_scale = 3.0;
    b = net_new(MAXL, other, RITE_FLOAT64, 1);
    c2 = c1;
    c2.lr = 0.002;
    c2.clip = 0.7;
    m2 = model_new(b, RITE_LORA_RITE, &c2, 0);
    check_status(ck_load(m2, b, buf, size), RITE_OK, "load into a model with other hyper-parameters");
    assert_int_equal(rite_model_step_count(m2), 2);
    assert_same_model_state(m2, m, "after the load");
    for (i = 0; i < MAXL; i++) {
        rite_config c = rite_get_config(rite_model_layer(m2, i));
        assert_true(c.lr == 0.002 * other[i].lr_scale);
        assert_true(c.clip == 0.7);
    }
    assert_true(rite_model_get_config(m2).lr == 0.002);
    free(buf);
    free_twins(m, m2, a, b);
}

/* The model's step count (header) and its layers' (in their states) are
   always equal: a resealed checkpoint where they differ holds impossible
   values (as a layer checkpoint whose two step counts differ, CORRUPT) */
static void model_checkpoint_with_inconsistent_step_counts_is_corrupt(void **state) {
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x5c0001eull);
    rite_model *m = model_new(a, RITE_LORA_RITE, NULL, 0);
    unsigned char *buf;
    size_t size;
    (void)state;
    run_steps(m, a, 0, 2);
    buf = ck_save(m, NULL, &size);
    put_le64(buf + 40, 7);   /* the layers say 2 */
    reseal(buf, size);
    expect_load_fails(m, NULL, buf, size, RITE_ERR_CHECKPOINT_CORRUPT, NULL, "step count 7 for layers at 2");
    free(buf);
    rite_model_free(m);
    free(a);
}

/* A successful load cancels a pending prepare; a refused one keeps it */
static void model_checkpoint_load_and_a_pending_prepare(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE);
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x10ad001cull), *tn;
    rite_model *m = model_new(a, RITE_LORA_RITE, &cfg, 0), *t;
    unsigned char *buf;
    size_t size;
    double sq = -1, tsq = -1;
    snap st0;
    (void)state;
    run_steps(m, a, 0, 1);
    buf = ck_save(m, a, &size);
    tn = net_clone(a);
    t = model_new(tn, RITE_LORA_RITE, &cfg, 0);
    check_status(ck_load(t, NULL, buf, size), RITE_OK, "the twin loads the state");
    net_grad(a, 1.0);
    net_copy_grads(tn, a);
    /* refused load: the prepare stays, and apply equals the twin's step */
    check_status(net_prepare(m, a, &sq), RITE_OK, "prepare");
    buf[0] ^= 0xff;
    check_status(ck_load(m, a, buf, size), RITE_ERR_CHECKPOINT_FORMAT, "a foreign buffer");
    buf[0] ^= 0xff;
    check_status(rite_model_apply(m, sq), RITE_OK, "apply after a refused load");
    check_status(net_prepare(t, tn, &tsq), RITE_OK, "twin prepare");
    assert_true(sq == tsq);
    check_status(rite_model_apply(t, tsq), RITE_OK, "twin apply");
    assert_true(net_factors_equal(a, tn));
    assert_same_model_state(m, t, "after apply");
    /* successful load: the prepare is cancelled */
    net_grad(a, 1.0);
    check_status(net_prepare(m, a, &sq), RITE_OK, "prepare");
    check_status(ck_load(m, NULL, buf, size), RITE_OK, "load");
    snap_model(&st0, m);
    check_status(rite_model_apply(m, sq), RITE_ERR_NOT_PREPARED, "apply after a load");
    assert_model_state(m, &st0, "after the refused apply");
    snap_free(&st0);
    free(buf);
    free_twins(m, t, a, tn);
}

/* ============================================== reset, factors changed */

/* rite_model_reset: every layer as a fresh model's, and the next step too */
static void model_reset_is_a_fresh_model(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE);
    net *a = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x4e5e0016ull), *b;
    rite_model *m = model_new(a, RITE_LORA_RITE, &cfg, 0), *fresh;
    rite_diagnostics dg;
    (void)state;
    run_steps(m, a, 0, 2);
    rite_model_reset(m);
    b = net_clone(a);
    fresh = model_new(b, RITE_LORA_RITE, &cfg, 0);
    assert_int_equal(rite_model_step_count(m), 0);
    assert_same_model_state(m, fresh, "after reset");
    check_status(rite_model_diagnostics(m, &dg), RITE_OK, "diagnostics after reset");
    assert_int_equal(dg.step, 0);
    run_steps(m, a, 0, 2);
    run_steps(fresh, b, 0, 2);
    assert_true(net_factors_equal(a, b));
    assert_same_model_state(m, fresh, "two steps after reset");
    free_twins(m, fresh, a, b);
}

/* rite_model_factors_changed is rite_factors_changed on every layer */
static void model_factors_changed_equals_layer_path(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 0.05), RITE_LORA_RITE);
    model_and_path t;
    int s, i;
    size_t e;
    (void)state;
    twins_make(&t, net_new(MAXL, SHAPES, RITE_FLOAT64, 0xfc0017ull), RITE_LORA_RITE, &cfg, 0);
    for (s = 0; s < 4; s++) {
        net *a = t.a;
        if (s == 2) {   /* the trainer rescales the factors: L R^T unchanged, bases kept */
            for (i = 0; i < MAXL; i++) {
                for (e = 0; e < buf_count(a, i, BUF_A); e++) a->d[i][BUF_A][e] *= 2.0;
                for (e = 0; e < buf_count(a, i, BUF_B); e++) a->d[i][BUF_B][e] *= 0.5;
                rite_factors_changed(t.p.l[i]);
            }
            memcpy(t.b->d, a->d, sizeof a->d);
            rite_model_factors_changed(t.m);
        }
        twins_grad(&t, s);
        check_status(net_step(t.m, a), RITE_OK, "model step");
        path_step(&t.p, t.b, 0.0);
        assert_twins_equal(&t, "after factors_changed");
    }
    twins_free(&t);
}

/* ============================================================== 7. schedule */

static void assert_lr(const rite_schedule *s, long long step, double want) {
    double got = rite_schedule_lr(s, step);
    if (!(fabs(got - want) <= 1e-15 * fabs(want) + 1e-300)) {
        print_error("step %lld: lr %.17g, want %.17g\n", step, got, want);
        fail();
    }
}

/* the lr a schedule gives at a step */
typedef struct lr_point {
    long long step;
    double lr;
} lr_point;

#define LR_END {-1, 0}   /* the end of a case's points */
#define COS_PI_4 0.70710678118654752440

/* One schedule test: the schedule and its lr at some steps, by hand. */
typedef struct schedule_case {
    const char *name;
    rite_schedule s;   /* lr, warmup_steps, total_steps, final_lr, decay */
    lr_point at[10];   /* up to LR_END */
} schedule_case;

static const schedule_case schedule_cases[] = {
    /* warmup: lr * (step + 1) / warmup for the first warmup steps, then lr */
    {"schedule_warmup_then_constant", {0.1, 4, 0, 0, RITE_DECAY_CONSTANT},
     {{0, 0.025}, {1, 0.05}, {2, 0.075}, {3, 0.1} /* end of warmup */, {4, 0.1}, {1000000, 0.1}, LR_END}},
    {"schedule_constant_without_warmup", {0.3, 0, 0, 0, RITE_DECAY_CONSTANT}, {{0, 0.3}, {7, 0.3}, LR_END}},
    /* a constant lr needs no total_steps */
    {"schedule_constant_ignores_total_steps", {0.1, 20, 10, 0, RITE_DECAY_CONSTANT}, {{30, 0.1}, LR_END}},
    /* linear decay from lr at the end of warmup (step 10) to final_lr at step 110 */
    {"schedule_linear_decay", {0.1, 10, 110, 0.01, RITE_DECAY_LINEAR},
     {{0, 0.01}, {4, 0.05}, {9, 0.1}, {10, 0.1}, {35, 0.1 - 0.09 * 0.25}, {60, 0.055} /* the middle */,
      {110, 0.01} /* the end */, {111, 0.01}, {100000, 0.01}, LR_END}},
    {"schedule_linear_decay_without_warmup", {0.2, 0, 100, 0, RITE_DECAY_LINEAR},
     {{0, 0.2}, {50, 0.1}, {75, 0.05}, {100, 0.0}, LR_END}},
    /* cosine: final + (lr - final) (1 + cos(pi p)) / 2, p the decay's progress */
    {"schedule_cosine_decay", {0.1, 10, 110, 0.01, RITE_DECAY_COSINE},
     {{0, 0.01}, {9, 0.1}, {10, 0.1}, {35, 0.01 + 0.09 * 0.5 * (1 + COS_PI_4)}, {60, 0.055},
      {85, 0.01 + 0.09 * 0.5 * (1 - COS_PI_4)}, {110, 0.01}, {5000, 0.01}, LR_END}},
};

/* the runner of every schedule case: its case is cmocka's state */
static void run_schedule_case(void **state) {
    const schedule_case *c = (const schedule_case *)*state;
    int i;
    for (i = 0; c->at[i].step >= 0; i++) assert_lr(&c->s, c->at[i].step, c->at[i].lr);
}

/* the cmocka entry of schedule case i */
#define SCHEDULE_TEST(i) {schedule_cases[i].name, run_schedule_case, NULL, NULL, (void *)&schedule_cases[i]}

/* every schedule of bad[n] gives NaN at `step` */
static void assert_nan_lr(const rite_schedule *bad, int n, long long step) {
    int i;
    for (i = 0; i < n; i++) {
        double lr = rite_schedule_lr(&bad[i], step);
        if (!isnan(lr)) {
            print_error("bad schedule %d: lr %g, want NaN\n", i, lr);
            fail();
        }
    }
}

static void schedule_that_makes_no_sense_is_nan(void **state) {
    static const rite_schedule bad[] = {
        /* lr, warmup_steps, total_steps, final_lr, decay */
        {0.1, -1, 100, 0, RITE_DECAY_LINEAR},        /* negative warmup */
        {0.1, 0, -5, 0, RITE_DECAY_LINEAR},          /* negative total */
        {NAN, 10, 100, 0, RITE_DECAY_COSINE},        /* lr not a number */
        {-0.1, 10, 100, 0, RITE_DECAY_COSINE},       /* negative lr */
        {INFINITY, 0, 0, 0, RITE_DECAY_CONSTANT},    /* infinite lr */
        {0.1, 10, 100, NAN, RITE_DECAY_LINEAR},      /* final_lr not a number */
        {0.1, 10, 100, -0.01, RITE_DECAY_LINEAR},    /* negative final_lr */
        {0.1, 10, 100, INFINITY, RITE_DECAY_COSINE}, /* infinite final_lr */
        {0.1, 20, 10, 0, RITE_DECAY_LINEAR},         /* decay ends before warmup does */
        {0.1, 20, 10, 0, RITE_DECAY_COSINE},
        {0.1, 10, 100, 0, (rite_decay)7},            /* no such decay */
        {0.1, -3, 0, 0, RITE_DECAY_CONSTANT},        /* negative warmup, constant */
    };
    (void)state;
    assert_nan_lr(bad, (int)(sizeof bad / sizeof bad[0]), 5);
    assert_true(isnan(rite_schedule_lr(NULL, 0)));
}

/* The header: NaN for "negative counts, lr or final_lr not finite and
   >= 0"; only the last condition (total_steps < warmup_steps) is limited
   to a decay. So a constant schedule with a negative total_steps or a
   final_lr that is not a number makes no sense either. */
static void schedule_constant_with_bad_total_or_final_is_nan(void **state) {
    static const rite_schedule bad[] = {
        {0.1, 0, -1, 0, RITE_DECAY_CONSTANT},
        {0.1, 0, 0, NAN, RITE_DECAY_CONSTANT},
        {0.1, 0, 0, -1.0, RITE_DECAY_CONSTANT},
    };
    (void)state;
    assert_nan_lr(bad, (int)(sizeof bad / sizeof bad[0]), 3);
}

/* ============================================================== 8. set_lr */

static void model_set_lr_scales_every_layer(void **state) {
    rite_config cfg = cfg_of(rc_rite(0.01, 1.0), RITE_LORA_RITE);
    net *n = net_new(MAXL, SHAPES, RITE_FLOAT64, 5);
    rite_model *m = model_new(n, RITE_LORA_RITE, &cfg, 0);
    static const double bad[3] = {NAN, -0.001, INFINITY};
    int i, k;
    (void)state;
    check_status(rite_model_set_lr(m, 0.037), RITE_OK, "rite_model_set_lr");
    assert_true(rite_model_get_config(m).lr == 0.037);
    for (i = 0; i < MAXL; i++) assert_true(rite_get_config(rite_model_layer(m, i)).lr == 0.037 * SHAPES[i].lr_scale);
    for (k = 0; k < 3; k++) {
        check_status(rite_model_set_lr(m, bad[k]), RITE_ERR_LR, "a bad lr");
        assert_true(rite_model_get_config(m).lr == 0.037);
        for (i = 0; i < MAXL; i++)
            assert_true(rite_get_config(rite_model_layer(m, i)).lr == 0.037 * SHAPES[i].lr_scale);
    }
    check_status(rite_model_set_lr(m, 0.0), RITE_OK, "lr 0");
    for (i = 0; i < MAXL; i++) assert_true(rite_get_config(rite_model_layer(m, i)).lr == 0.0);
    /* set_config: the new lr, times each lr_scale; the other fields as given */
    cfg.lr = 0.003;
    cfg.clip = 0.25;
    check_status(rite_model_set_config(m, &cfg), RITE_OK, "rite_model_set_config");
    for (i = 0; i < MAXL; i++) {
        rite_config c = rite_get_config(rite_model_layer(m, i));
        assert_true(c.lr == 0.003 * SHAPES[i].lr_scale);
        assert_true(c.clip == 0.25);
    }
    rite_model_free(m);
    free(n);
}

/* float layers: lr times lr_scale must be finite in float. For the model
   lr 2e38 every layer's is (1e38 to 3e38) but layer 2's (scale 2: 4e38,
   above FLT_MAX); the model refuses it and no layer changes. */
static void model_set_lr_beyond_float_range_changes_no_layer(void **state) {
    net *n = net_new(MAXL, SHAPES, RITE_FLOAT32, 6);
    rite_model *m = model_new(n, RITE_LORA_RITE, NULL, 0);
    int i;
    (void)state;
    check_status(rite_model_set_lr(m, 0.5), RITE_OK, "lr 0.5");
    check_status(rite_model_set_lr(m, 2e38), RITE_ERR_LR, "lr 2e38 (4e38 for layer 2)");
    assert_true(rite_model_get_config(m).lr == 0.5);
    for (i = 0; i < MAXL; i++) assert_true(rite_get_config(rite_model_layer(m, i)).lr == 0.5 * SHAPES[i].lr_scale);
    rite_model_free(m);
    free(n);
}

/* =========================================================== 9. bad descs */

/* init refuses the desc with `want`, sets *model to NULL, leaks nothing, and
   the detail contains `word` (when given); memory_query refuses it too and
   leaves its output alone */
static void check_bad_model_desc(const rite_model_desc *d0, rite_status want, const char *word, const char *what) {
    rite_model_desc d = *d0;
    rite_model *m;
    rite_memory mem, ref;
    tu_count_alloc ca;
    char detail[256];
    memset(&ca, 0, sizeof ca);
    d.allocator = tu_count_hooks(&ca);
    m = (rite_model *)&ca;
    strcpy(detail, "untouched");
    check_status(rite_model_init(&m, &d, detail, sizeof detail), want, what);
    assert_null(m);
    if (word && !strstr(detail, word)) {
        print_error("%s: the detail \"%s\" does not contain \"%s\"\n", what, detail, word);
        fail();
    }
    if (ca.nlive || ca.bad_frees) {
        print_error("%s: %d blocks leaked, %ld bad frees\n", what, ca.nlive, ca.bad_frees);
        fail();
    }
    memset(&mem, 0xA5, sizeof mem);
    memcpy(&ref, &mem, sizeof mem);
    check_status(rite_model_memory_query(&d, &mem), want, what);
    assert_memory_equal(&mem, &ref, sizeof mem);
    /* a NULL detail is allowed */
    m = (rite_model *)&ca;
    check_status(rite_model_init(&m, &d, NULL, 0), want, what);
    assert_null(m);
}

static void model_init_refuses_bad_descs_and_names_the_layer(void **state) {
    rite_lora lo[4];
    rite_model_desc base, d;
    rite_config zero;
    net *n = net_new(4, SHAPES, RITE_FLOAT32, 8);
    rite_model *m = NULL;
    (void)state;
    memcpy(lo, SHAPES, sizeof lo);
    memset(&base, 0, sizeof base);
    base.layers = lo;
    base.n_layers = 4;

    d = base;
    d.layers = NULL;
    check_bad_model_desc(&d, RITE_ERR_NULL_ARGUMENT, NULL, "NULL layers");
    d = base;
    d.n_layers = 0;
    check_bad_model_desc(&d, RITE_ERR_MODEL, NULL, "no layers");
    d = base;
    d.n_layers = -2;
    check_bad_model_desc(&d, RITE_ERR_MODEL, NULL, "a negative layer count");

    lo[2].r = 17;   /* > min(16, 16) */
    check_bad_model_desc(&base, RITE_ERR_RANK, "layer 2", "r > min(in, out) in layer 2");
    lo[2] = SHAPES[2];
    lo[3].in_features = 0;
    check_bad_model_desc(&base, RITE_ERR_SIZE, "layer 3", "in_features 0 in layer 3");
    lo[3] = SHAPES[3];
    lo[1].layout_B = (rite_layout)5;
    check_bad_model_desc(&base, RITE_ERR_LAYOUT, "layer 1", "layout_B 5 in layer 1");
    lo[1] = SHAPES[1];
    /* lr_scale must be finite and > 0: refused as an lr */
    lo[2].lr_scale = 0;
    check_bad_model_desc(&base, RITE_ERR_LR, "layer 2", "lr_scale 0 in layer 2");
    lo[2].lr_scale = NAN;
    check_bad_model_desc(&base, RITE_ERR_LR, "layer 2", "lr_scale NaN in layer 2");
    lo[2].lr_scale = -1;
    check_bad_model_desc(&base, RITE_ERR_LR, "layer 2", "lr_scale -1 in layer 2");
    lo[2].lr_scale = INFINITY;
    check_bad_model_desc(&base, RITE_ERR_LR, "layer 2", "lr_scale Inf in layer 2");
    /* the model's lr times a layer's scale must be finite in the precision */
    lo[2].lr_scale = 1e300;
    d = base;
    d.precision = RITE_FLOAT32;
    check_bad_model_desc(&d, RITE_ERR_LR, "layer 2", "lr 1e-3 times lr_scale 1e300 in layer 2");
    lo[2] = SHAPES[2];

    d = base;
    d.threads = -1;
    check_bad_model_desc(&d, RITE_ERR_THREADS, NULL, "threads -1");
    d.threads = 1000;
    check_bad_model_desc(&d, RITE_ERR_THREADS, NULL, "threads 1000");
    d.threads = 257;
    check_bad_model_desc(&d, RITE_ERR_THREADS, NULL, "threads 257");
    d.threads = -1;
    d.parallel_for = pf_reverse;   /* a parallel_for does not make -1 workers acceptable */
    check_bad_model_desc(&d, RITE_ERR_THREADS, NULL, "threads -1 with a parallel_for");
    d = base;
    d.optimizer = (rite_optimizer)9;
    check_bad_model_desc(&d, RITE_ERR_OPTIMIZER, NULL, "optimizer 9");
    d = base;
    d.precision = (rite_precision)9;
    check_bad_model_desc(&d, RITE_ERR_PRECISION, NULL, "precision 9");
    d = base;
    memset(&zero, 0, sizeof zero);
    d.config = &zero;
    check_bad_model_desc(&d, RITE_ERR_CONFIG, NULL, "a zeroed config");

    check_status(rite_model_init(&m, NULL, NULL, 0), RITE_ERR_NULL_ARGUMENT, "NULL desc");
    assert_null(m);
    check_status(rite_model_init(NULL, &base, NULL, 0), RITE_ERR_NULL_ARGUMENT, "NULL model pointer");

    /* threads 0 means 1 */
    d = base;
    d.threads = 0;
    m = model_from(&d);
    rite_model_free(m);
    free(n);
}

/* every allocation of init refused in turn: OUT_OF_MEMORY, *model NULL,
   nothing leaked (with the built-in threads' pool, and without) */
static void model_init_out_of_memory_leaks_nothing(void **state) {
    net *n = net_new(MAXL, SHAPES, RITE_FLOAT32, 0x00e0001dull);
    int threads;
    (void)state;
    for (threads = 1; threads <= 3; threads += 2) {
        rite_model_desc d = model_desc(n, RITE_LORA_RITE, NULL, 1);
        tu_count_alloc ca;
        rite_model *m;
        long k, total;
        d.threads = threads;
        memset(&ca, 0, sizeof ca);
        d.allocator = tu_count_hooks(&ca);
        m = model_from(&d);
        total = ca.requests;
        rite_model_free(m);
        assert_true(total >= 2);
        for (k = 1; k <= total; k++) {
            char detail[256];
            memset(&ca, 0, sizeof ca);
            ca.fail_at = k;
            d.allocator = tu_count_hooks(&ca);
            m = (rite_model *)&ca;
            check_status(rite_model_init(&m, &d, detail, sizeof detail), RITE_ERR_OUT_OF_MEMORY, "a refused allocation");
            assert_null(m);
            if (ca.nlive || ca.bad_frees) {
                print_error("allocation %ld of %ld refused: %d blocks leaked, %ld bad frees\n", k, total, ca.nlive,
                            ca.bad_frees);
                fail();
            }
        }
    }
    free(n);
}

/* ================================================================ 10. memory */

static void check_memory_query(rite_optimizer opt, rite_precision prec, int keep_basis, int threads) {
    net *n = net_new(MAXL, SHAPES, prec, 0x3e3e0009ull);
    rite_model_desc d = model_desc(n, opt, NULL, keep_basis);
    rite_memory mem;
    rite_model *m;
    tu_count_alloc ca;
    size_t state = 0;
    long requests;
    int i, s;
    d.threads = threads;
    check_status(rite_model_memory_query(&d, &mem), RITE_OK, "rite_model_memory_query");
    memset(&ca, 0, sizeof ca);
    d.allocator = tu_count_hooks(&ca);
    m = model_from(&d);
    /* everything init allocates, and nothing more, is what the query said */
    assert_int_equal(ca.requested, mem.total_bytes);
    assert_int_equal(ca.live_bytes, mem.total_bytes);
    for (i = 0; i < MAXL; i++) state += rite_state_size(rite_model_layer(m, i));
    assert_int_equal(mem.state_bytes, state);
    assert_true(mem.total_bytes >= mem.state_bytes + mem.scratch_bytes);
    /* a step allocates nothing */
    requests = ca.requests;
    for (s = 0; s < 2; s++) {
        net_grad(n, 1.0);
        check_status(net_step(m, n), RITE_OK, "step");
    }
    assert_int_equal(ca.requests, requests);
    rite_model_free(m);
    assert_int_equal(ca.nlive, 0);
    assert_int_equal(ca.bad_frees, 0);
    free(n);
}

static void model_memory_query_is_what_init_allocates(void **state) {
    (void)state;
    check_memory_query(RITE_LORA_RITE, RITE_FLOAT32, 0, 1);
    check_memory_query(RITE_LORA_RITE, RITE_FLOAT64, 1, 1);
    check_memory_query(RITE_ADAMW, RITE_FLOAT32, 0, 1);
    check_memory_query(RITE_LORA_RITE, RITE_FLOAT32, 0, 3);
}

/* one workspace per worker: more workers, more scratch, the same state */
static void model_scratch_grows_with_workers_state_does_not(void **state) {
    net *n = net_new(MAXL, SHAPES, RITE_FLOAT32, 10);
    rite_model_desc d = model_desc(n, RITE_LORA_RITE, NULL, 0);
    rite_memory m1, m3;
    (void)state;
    d.threads = 1;
    check_status(rite_model_memory_query(&d, &m1), RITE_OK, "query, 1 thread");
    d.threads = 3;
    check_status(rite_model_memory_query(&d, &m3), RITE_OK, "query, 3 threads");
    assert_int_equal(m1.state_bytes, m3.state_bytes);
    assert_true(m3.scratch_bytes > m1.scratch_bytes);
    free(n);
}

/* ================================================================== main */

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lora_peft_is_peft_storage_with_lr_scale_one),
        cmocka_unit_test(model_layers_have_the_modules_sizes_layouts_and_lr),
        /* 1. the layer API's two-phase path */
        CASE_TEST(layer_path_cases, 0),
        CASE_TEST(layer_path_cases, 1),
        CASE_TEST(layer_path_cases, 2),
        CASE_TEST(layer_path_cases, 3),
        CASE_TEST(layer_path_cases, 4),
        CASE_TEST(layer_path_cases, 5),
        CASE_TEST(layer_path_cases, 6),
        CASE_TEST(layer_path_cases, 7),
        CASE_TEST(layer_path_cases, 8),
        CASE_TEST(layer_path_cases, 9),
        CASE_TEST(layer_path_cases, 10),
        /* 2. threads */
        CASE_TEST(thread_cases, 0),
        CASE_TEST(thread_cases, 1),
        CASE_TEST(thread_cases, 2),
        /* 3. all or nothing */
        CASE_TEST(all_or_nothing_cases, 0),
        CASE_TEST(all_or_nothing_cases, 1),
        CASE_TEST(all_or_nothing_cases, 2),
        cmocka_unit_test(model_step_that_would_overflow_changes_no_layer),
        cmocka_unit_test(rite_model_step_that_would_overflow_changes_no_layer),
        cmocka_unit_test(model_step_refuses_bad_arrays),
        cmocka_unit_test(model_shared_storage_check_matches_naive),
        /* 4. two phases */
        CASE_TEST(two_phase_cases, 0),
        CASE_TEST(two_phase_cases, 1),
        cmocka_unit_test(model_apply_without_prepare_is_refused),
        cmocka_unit_test(model_failed_prepare_leaves_nothing_half_done),
        cmocka_unit_test(model_set_lr_between_prepare_and_apply_is_used),
        /* 5. diagnostics */
        DIAG_TEST(0),
        DIAG_TEST(1),
        DIAG_TEST(2),
        DIAG_TEST(3),
        DIAG_TEST(4),
        DIAG_TEST(5),
        DIAG_TEST(6),
        cmocka_unit_test(diagnostics_are_zero_before_the_first_step),
        CASE_TEST(adamw_diagnostics_cases, 0),
        CASE_TEST(adamw_diagnostics_cases, 1),
        cmocka_unit_test(model_diagnostics_aggregate_the_layers),
        /* 6. checkpoints */
        cmocka_unit_test(model_checkpoint_resumes_exactly_f32),
        cmocka_unit_test(model_checkpoint_resumes_exactly_keep_basis_f64_file),
        cmocka_unit_test(model_checkpoint_without_factors_resumes_with_the_callers),
        cmocka_unit_test(adamw_model_checkpoint_resumes_exactly),
        cmocka_unit_test(model_checkpoint_layout_is_the_documented_one),
        cmocka_unit_test(model_checkpoint_for_another_model_is_refused),
        cmocka_unit_test(model_checkpoint_damaged_is_refused_and_changes_nothing),
        cmocka_unit_test(model_checkpoint_load_cancels_a_pending_prepare),
        cmocka_unit_test(model_set_config_changing_skip_cancels_the_prepare),
        cmocka_unit_test(model_checkpoint_file_errors_change_nothing),
        cmocka_unit_test(model_checkpoint_keeps_the_models_hyper_parameters),
        cmocka_unit_test(model_checkpoint_load_and_a_pending_prepare),
        cmocka_unit_test(model_checkpoint_with_inconsistent_step_counts_is_corrupt),
        /* reset, factors changed */
        cmocka_unit_test(model_reset_is_a_fresh_model),
        cmocka_unit_test(model_factors_changed_equals_layer_path),
        /* 7. schedule */
        SCHEDULE_TEST(0),
        SCHEDULE_TEST(1),
        SCHEDULE_TEST(2),
        SCHEDULE_TEST(3),
        SCHEDULE_TEST(4),
        SCHEDULE_TEST(5),
        cmocka_unit_test(schedule_that_makes_no_sense_is_nan),
        cmocka_unit_test(schedule_constant_with_bad_total_or_final_is_nan),
        /* 8. lr */
        cmocka_unit_test(model_set_lr_scales_every_layer),
        cmocka_unit_test(model_set_lr_beyond_float_range_changes_no_layer),
        /* 9. descs */
        cmocka_unit_test(model_init_refuses_bad_descs_and_names_the_layer),
        cmocka_unit_test(model_init_out_of_memory_leaks_nothing),
        /* 10. memory */
        cmocka_unit_test(model_memory_query_is_what_init_allocates),
        cmocka_unit_test(model_scratch_grows_with_workers_state_does_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
