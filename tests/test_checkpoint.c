/* test_checkpoint.c - saving and restoring a layer's optimizer state.

   A checkpoint holds a layer's optimizer state (step count included) behind
   a 64-byte header and ahead of an FNV-1a 64 checksum; the factors are the
   caller's and are saved alongside. These tests check, for LoRA-RITE (by
   default and with keep_basis) and AdamW, in float and double, in both
   layouts (and with padded leading dimensions), with and without the
   options (escape, relative eps, balance, cap, weight decay):
   - resume is exact: N steps straight give bit for bit the factors and the
     state of N/2 steps, a checkpoint and N/2 more steps, both in this
     process (from memory, at several split points) and in a fresh process
     (this executable run again with --phase2, from a file);
   - the header: every field parsed here by the documented layout, and the
     checksum recomputed here with FNV-1a 64;
   - rejections, each with its own code, leave the layer exactly as it was
     (state bytes, step count, a pending prepare, and the next step, which
     must equal that of a twin layer that never saw the bad checkpoint):
     other sizes, precision, optimizer or options (MISMATCH), truncated or
     over-long data and foreign files (FORMAT), every flipped bit (CORRUPT,
     or the code of the header field it lands in), another version
     (VERSION), unreadable or unwritable paths (IO), NULL arguments and too
     small buffers;
   - a successful load cancels a pending prepare.
   Expected values come from straight runs of the same problem (the
   least-squares loss of test_util.h), from the documented format, and from
   the layer's own state bytes before a rejected load. */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#define CK_POSIX 1
#include <dirent.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#else
#define CK_POSIX 0
#endif

#include <cmocka.h>

#include "lora_rite.h"
#include "test_util.h"

enum { M = 10, N = 7, RK = 3, STEPS = 40 };   /* the resume problem */
enum { SM = 4, SN = 3, SR = 2 };             /* a small layer: every byte, every length */
enum { HEADER = 64 };

static const char *g_self;                    /* argv[0] */
static char g_dir[4096];                      /* a private temporary directory */

/* ------------------------------------------------------------------ cases */

typedef struct ck_case {
    rite_optimizer opt;
    rite_precision prec;
    rite_layout lay_L, lay_R;
    int pad;         /* extra elements in each leading dimension */
    int keep_basis;  /* desc.keep_basis (LoRA-RITE) */
    int options;     /* escape, relative_eps, balance, cap (LoRA-RITE); weight decay (both) */
} ck_case;

enum { CK_MAX_CASES = 64 };

/* Every optimizer, precision, layout pair, mode and option set. */
static int ck_cases(ck_case *out) {
    static const rite_layout lays[3][2] = {{RITE_RANK_LAST, RITE_RANK_LAST},
                                           {RITE_RANK_FIRST, RITE_RANK_FIRST},
                                           {RITE_RANK_FIRST, RITE_RANK_LAST}};
    int n = 0, o, p, l, kb, op;
    for (o = 0; o < 2; o++)
        for (p = 0; p < 2; p++)
            for (l = 0; l < 3; l++)
                for (kb = 0; kb < (o == 0 ? 2 : 1); kb++)
                    for (op = 0; op < 2; op++) {
                        ck_case c;
                        c.opt = o == 0 ? RITE_LORA_RITE : RITE_ADAMW;
                        c.prec = p == 0 ? RITE_FLOAT32 : RITE_FLOAT64;
                        c.lay_L = lays[l][0];
                        c.lay_R = lays[l][1];
                        c.pad = l == 2 ? 2 : 0;
                        c.keep_basis = kb;
                        c.options = op;
                        out[n++] = c;
                    }
    return n;
}

static const char *ck_name(const ck_case *c) {
    static char buf[160];
    snprintf(buf, sizeof buf, "%s %s L:%s R:%s pad %d%s%s", c->opt == RITE_ADAMW ? "AdamW" : "LoRA-RITE",
             c->prec == RITE_FLOAT32 ? "f32" : "f64", c->lay_L == RITE_RANK_LAST ? "last" : "first",
             c->lay_R == RITE_RANK_LAST ? "last" : "first", c->pad, c->keep_basis ? " keep_basis" : "",
             c->options ? " options" : "");
    return buf;
}

static void ck_config(const ck_case *c, rite_config *cfg) {
    *cfg = rite_config_default(c->opt);
    cfg->lr = 0.02;
    if (c->options) {
        cfg->weight_decay = 0.01;
        if (c->opt == RITE_LORA_RITE) {
            cfg->escape = 1;
            cfg->relative_eps = 1;
            cfg->eps_root = 1e-4;
            cfg->balance = 1;
            cfg->cap = 0.3;
        }
    }
}

/* ---------------------------------------------------------------- problem */

/* One layer's problem: target A, factors and gradients in the layer's
   storage, and their logical double copies. */
typedef struct ck_prob {
    ck_case c;
    rite_config cfg;
    int m, n, r, ldL, ldR;
    size_t nL, nR, es;   /* elements of the L and R buffers, element size */
    unsigned char *L, *R, *gL, *gR;
    double *A, *Ld, *Rd, *gLd, *gRd, *work;
} ck_prob;

static void *ck_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    assert_non_null(p);
    return p;
}

static void ck_put(ck_prob *p, const double *Ld, const double *Rd, unsigned char *L, unsigned char *R) {
    if (p->c.prec == RITE_FLOAT32) {
        tu_to_layout_f(Ld, p->m, p->r, p->c.lay_L, p->ldL, (float *)(void *)L);
        tu_to_layout_f(Rd, p->n, p->r, p->c.lay_R, p->ldR, (float *)(void *)R);
    } else {
        tu_to_layout_d(Ld, p->m, p->r, p->c.lay_L, p->ldL, (double *)(void *)L);
        tu_to_layout_d(Rd, p->n, p->r, p->c.lay_R, p->ldR, (double *)(void *)R);
    }
}

static void ck_get(const ck_prob *p, double *Ld, double *Rd) {
    if (p->c.prec == RITE_FLOAT32) {
        tu_from_layout_f((const float *)(const void *)p->L, p->m, p->r, p->c.lay_L, p->ldL, Ld);
        tu_from_layout_f((const float *)(const void *)p->R, p->n, p->r, p->c.lay_R, p->ldR, Rd);
    } else {
        tu_from_layout_d((const double *)(const void *)p->L, p->m, p->r, p->c.lay_L, p->ldL, Ld);
        tu_from_layout_d((const double *)(const void *)p->R, p->n, p->r, p->c.lay_R, p->ldR, Rd);
    }
}

/* The same seed gives the same A and the same initial factors. */
static void ck_prob_init(ck_prob *p, const ck_case *c, int m, int n, int r, uint64_t seed) {
    tu_rng g;
    g.s = seed;
    memset(p, 0, sizeof *p);
    p->c = *c;
    ck_config(c, &p->cfg);
    p->m = m;
    p->n = n;
    p->r = r;
    p->ldL = (c->lay_L == RITE_RANK_LAST ? r : m) + c->pad;
    p->ldR = (c->lay_R == RITE_RANK_LAST ? r : n) + c->pad;
    p->nL = tu_storage_count(c->lay_L, p->ldL, m, r);
    p->nR = tu_storage_count(c->lay_R, p->ldR, n, r);
    p->es = c->prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double);
    p->L = (unsigned char *)ck_calloc(p->nL, p->es);
    p->R = (unsigned char *)ck_calloc(p->nR, p->es);
    p->gL = (unsigned char *)ck_calloc(p->nL, p->es);
    p->gR = (unsigned char *)ck_calloc(p->nR, p->es);
    p->A = (double *)ck_calloc((size_t)m * n, sizeof(double));
    p->Ld = (double *)ck_calloc((size_t)m * r, sizeof(double));
    p->Rd = (double *)ck_calloc((size_t)n * r, sizeof(double));
    p->gLd = (double *)ck_calloc((size_t)m * r, sizeof(double));
    p->gRd = (double *)ck_calloc((size_t)n * r, sizeof(double));
    p->work = (double *)ck_calloc((size_t)m * n, sizeof(double));
    tu_fill_normal(&g, p->A, (size_t)m * n, 1.0);
    tu_fill_normal(&g, p->Ld, (size_t)m * r, 0.5);
    tu_fill_normal(&g, p->Rd, (size_t)n * r, 0.5);
    ck_put(p, p->Ld, p->Rd, p->L, p->R);
}

static void ck_prob_free(ck_prob *p) {
    free(p->L);
    free(p->R);
    free(p->gL);
    free(p->gR);
    free(p->A);
    free(p->Ld);
    free(p->Rd);
    free(p->gLd);
    free(p->gRd);
    free(p->work);
}

static rite_desc ck_desc(const ck_prob *p) {
    rite_desc d;
    d = tu_desc(p->m, p->n, p->r, p->c.opt, p->c.prec);
    d.layout_L = p->c.lay_L;
    d.layout_R = p->c.lay_R;
    d.ld_L = p->ldL;
    d.ld_R = p->ldR;
    d.config = &p->cfg;
    d.keep_basis = p->c.keep_basis;
    return d;
}

static rite_layer *ck_layer(const ck_prob *p) {
    rite_layer *l = NULL;
    rite_desc d = ck_desc(p);
    assert_int_equal(rite_init(&l, &d), RITE_OK);
    return l;
}

/* Gradients of the least-squares loss at the current factors. */
static void ck_grad(ck_prob *p) {
    ck_get(p, p->Ld, p->Rd);
    tu_lsq_loss_grad(p->Ld, p->Rd, p->A, p->m, p->n, p->r, p->gLd, p->gRd, p->work);
    ck_put(p, p->gLd, p->gRd, p->gL, p->gR);
}

static rite_status ck_step(ck_prob *p, rite_layer *l) {
    ck_grad(p);
    if (p->c.prec == RITE_FLOAT32)
        return rite_step_f32(l, (float *)(void *)p->L, (float *)(void *)p->R, (const float *)(void *)p->gL,
                             (const float *)(void *)p->gR);
    return rite_step_f64(l, (double *)(void *)p->L, (double *)(void *)p->R, (const double *)(void *)p->gL,
                         (const double *)(void *)p->gR);
}

static rite_status ck_prepare(ck_prob *p, rite_layer *l, double *sumsq) {
    ck_grad(p);
    if (p->c.prec == RITE_FLOAT32)
        return rite_prepare_f32(l, (float *)(void *)p->L, (float *)(void *)p->R, (const float *)(void *)p->gL,
                                (const float *)(void *)p->gR, sumsq);
    return rite_prepare_f64(l, (double *)(void *)p->L, (double *)(void *)p->R, (const double *)(void *)p->gL,
                            (const double *)(void *)p->gR, sumsq);
}

static unsigned char *ck_state(const rite_layer *l, size_t *size) {
    size_t n = rite_state_size(l);
    unsigned char *s = (unsigned char *)ck_calloc(n, 1);
    assert_int_equal(rite_state_copy(l, s, n), RITE_OK);
    *size = n;
    return s;
}

static unsigned char *ck_save(const rite_layer *l, size_t *size) {
    size_t n = rite_checkpoint_size(l);
    unsigned char *b = (unsigned char *)ck_calloc(n, 1);
    assert_int_equal(rite_checkpoint_save(l, b, n), RITE_OK);
    *size = n;
    return b;
}

/* What a run ends with: factor bytes (padding included), state bytes, step count. */
typedef struct ck_result {
    unsigned char *L, *R, *state;
    size_t nL, nR, nstate;
    long long count;
} ck_result;

static void ck_result_of(const ck_prob *p, const rite_layer *l, ck_result *res) {
    res->nL = p->nL * p->es;
    res->nR = p->nR * p->es;
    res->L = (unsigned char *)ck_calloc(res->nL, 1);
    res->R = (unsigned char *)ck_calloc(res->nR, 1);
    memcpy(res->L, p->L, res->nL);
    memcpy(res->R, p->R, res->nR);
    res->state = ck_state(l, &res->nstate);
    res->count = rite_step_count(l);
}

static void ck_result_free(ck_result *res) {
    free(res->L);
    free(res->R);
    free(res->state);
    memset(res, 0, sizeof *res);
}

static int ck_result_same(const ck_result *a, const ck_result *b, const char **what) {
    if (a->count != b->count) return *what = "step count", 0;
    if (a->nL != b->nL || memcmp(a->L, b->L, a->nL)) return *what = "L", 0;
    if (a->nR != b->nR || memcmp(a->R, b->R, a->nR)) return *what = "R", 0;
    if (a->nstate != b->nstate || memcmp(a->state, b->state, a->nstate)) return *what = "state", 0;
    return 1;
}

static uint64_t ck_seed(int i) { return 7001u + 131u * (uint64_t)i; }

/* ------------------------------------------------------------------ files */

static void ck_path(char *out, size_t size, const char *name) {
    int n = snprintf(out, size, "%s/%s", g_dir, name);
    assert_true(n > 0 && (size_t)n < size);
}

static int ck_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(data, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok;
}

/* Whole file into memory (NULL when it cannot be read). */
static unsigned char *ck_read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (n == cap) {
            unsigned char *nb;
            cap = cap ? 2 * cap : 4096;
            nb = (unsigned char *)realloc(buf, cap);
            if (!nb) break;
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = n;
    return buf;
}

/* ----------------------------------------------------- format, by the docs */

static uint32_t ck_u32(const unsigned char *b) {
    uint32_t v;
    memcpy(&v, b, 4);
    return v;
}

static uint64_t ck_u64(const unsigned char *b) {
    uint64_t v;
    memcpy(&v, b, 8);
    return v;
}

static void ck_set_u32(unsigned char *b, uint32_t v) { memcpy(b, &v, 4); }

/* Rewrite the trailing checksum after an edit, so that only the edit is wrong. */
static void ck_reseal(unsigned char *b, size_t n) {
    uint64_t h = tu_fnv1a(b, n - 8);
    memcpy(b + n - 8, &h, 8);
}

/* --------------------------------------------------------- a layer and its twin */

/* Two layers with the same history; rejections are tried on `a` only, and
   the next step of `a` must equal that of `b`. */
typedef struct ck_twin {
    ck_prob pa, pb;
    rite_layer *a, *b;
} ck_twin;

static void ck_twin_init(ck_twin *t, const ck_case *c, int m, int n, int r, uint64_t seed, int steps) {
    int s;
    ck_prob_init(&t->pa, c, m, n, r, seed);
    ck_prob_init(&t->pb, c, m, n, r, seed);
    t->a = ck_layer(&t->pa);
    t->b = ck_layer(&t->pb);
    for (s = 0; s < steps; s++) {
        assert_int_equal(ck_step(&t->pa, t->a), RITE_OK);
        assert_int_equal(ck_step(&t->pb, t->b), RITE_OK);
    }
}

/* One more step of both: every byte of factors and state, and the count, agree. */
static void ck_twin_check(ck_twin *t, const char *what) {
    ck_result ra, rb;
    const char *diff = "";
    assert_int_equal(ck_step(&t->pa, t->a), RITE_OK);
    assert_int_equal(ck_step(&t->pb, t->b), RITE_OK);
    ck_result_of(&t->pa, t->a, &ra);
    ck_result_of(&t->pb, t->b, &rb);
    if (!ck_result_same(&ra, &rb, &diff)) {
        print_error("%s (%s): after rejected loads, the next step differs from the twin's in %s\n", what,
                    ck_name(&t->pa.c), diff);
        fail();
    }
    ck_result_free(&ra);
    ck_result_free(&rb);
}

static void ck_twin_free(ck_twin *t) {
    rite_free(t->a);
    rite_free(t->b);
    ck_prob_free(&t->pa);
    ck_prob_free(&t->pb);
}

/* The layer's state bytes and step count, to check a rejection changed nothing. */
typedef struct ck_before {
    unsigned char *state;
    size_t n;
    long long count;
} ck_before;

static void ck_before_take(ck_before *b, const rite_layer *l) {
    b->state = ck_state(l, &b->n);
    b->count = rite_step_count(l);
}

static void ck_expect(const rite_layer *l, const ck_before *b, rite_status got, rite_status want, const char *what,
                      long detail) {
    size_t n;
    unsigned char *now;
    if (got != want) {
        print_error("%s [%ld]: status %d (%s), want %d (%s)\n", what, detail, (int)got, rite_status_string(got),
                    (int)want, rite_status_string(want));
        fail();
    }
    now = ck_state(l, &n);
    if (n != b->n || memcmp(now, b->state, n) != 0 || rite_step_count(l) != b->count) {
        print_error("%s [%ld]: the rejected load changed the layer\n", what, detail);
        fail();
    }
    free(now);
}

/* ============================================================== resume */

/* N steps straight vs a checkpoint after s steps loaded into a new layer
   (with the factors of step s) and N - s more steps, in this process. */
static void test_resume_in_process(void **state) {
    static const int splits[] = {1, 7, 20, 21, 33};
    enum { NS = (int)(sizeof splits / sizeof splits[0]) };
    ck_case cases[CK_MAX_CASES];
    int nc = ck_cases(cases), i, j, s;
    (void)state;
    for (i = 0; i < nc; i++) {
        ck_prob p;
        rite_layer *l;
        ck_result straight;
        unsigned char *snap[NS], *snapL[NS], *snapR[NS], *snapS[NS];
        size_t snapn[NS], snapSn[NS];
        memset(snap, 0, sizeof snap);
        memset(snapL, 0, sizeof snapL);
        memset(snapR, 0, sizeof snapR);
        memset(snapS, 0, sizeof snapS);
        memset(snapn, 0, sizeof snapn);
        memset(snapSn, 0, sizeof snapSn);
        ck_prob_init(&p, &cases[i], M, N, RK, ck_seed(i));
        l = ck_layer(&p);
        for (s = 0; s < STEPS; s++) {
            for (j = 0; j < NS; j++)
                if (splits[j] == s) {
                    snap[j] = ck_save(l, &snapn[j]);
                    snapS[j] = ck_state(l, &snapSn[j]);
                    snapL[j] = (unsigned char *)ck_calloc(p.nL, p.es);
                    snapR[j] = (unsigned char *)ck_calloc(p.nR, p.es);
                    memcpy(snapL[j], p.L, p.nL * p.es);
                    memcpy(snapR[j], p.R, p.nR * p.es);
                }
            assert_int_equal(ck_step(&p, l), RITE_OK);
        }
        ck_result_of(&p, l, &straight);
        assert_int_equal(straight.count, STEPS);
        rite_free(l);
        ck_prob_free(&p);

        for (j = 0; j < NS; j++) {
            ck_prob q;
            rite_layer *ql;
            ck_result resumed;
            size_t n;
            unsigned char *loaded;
            const char *diff = "";
            ck_prob_init(&q, &cases[i], M, N, RK, ck_seed(i));
            memcpy(q.L, snapL[j], q.nL * q.es);
            memcpy(q.R, snapR[j], q.nR * q.es);
            ql = ck_layer(&q);
            assert_int_equal(rite_checkpoint_load(ql, snap[j], snapn[j]), RITE_OK);
            assert_int_equal(rite_step_count(ql), splits[j]);
            loaded = ck_state(ql, &n);
            assert_int_equal(n, snapSn[j]);
            assert_memory_equal(loaded, snapS[j], n);
            free(loaded);
            for (s = splits[j]; s < STEPS; s++) assert_int_equal(ck_step(&q, ql), RITE_OK);
            ck_result_of(&q, ql, &resumed);
            if (!ck_result_same(&straight, &resumed, &diff)) {
                print_error("%s: resumed after %d of %d steps (in process), %s differs from the straight run\n",
                            ck_name(&cases[i]), splits[j], STEPS, diff);
                fail();
            }
            ck_result_free(&resumed);
            rite_free(ql);
            ck_prob_free(&q);
            free(snap[j]);
            free(snapS[j]);
            free(snapL[j]);
            free(snapR[j]);
        }
        ck_result_free(&straight);
    }
}

#if CK_POSIX
/* Phase two, in a fresh process: for every case load c<i>.fac (the factors)
   and c<i>.ckpt (the checkpoint file), take the remaining steps, and write
   the factors, the step count and the state to c<i>.out. */
static int ck_phase2(const char *dir) {
    ck_case cases[CK_MAX_CASES];
    int nc = ck_cases(cases), i, s;
    char path[4200];
    for (i = 0; i < nc; i++) {
        ck_prob q;
        rite_layer *l = NULL;
        rite_desc d;
        rite_status st;
        unsigned char *fac, *stbuf;
        size_t n, ns;
        long long count;
        FILE *f;
        int ok;
        ck_prob_init(&q, &cases[i], M, N, RK, ck_seed(i));
        snprintf(path, sizeof path, "%s/c%d.fac", dir, i);
        fac = ck_read_file(path, &n);
        if (!fac || n != (q.nL + q.nR) * q.es) {
            fprintf(stderr, "phase 2: cannot read %s\n", path);
            return 1;
        }
        memcpy(q.L, fac, q.nL * q.es);
        memcpy(q.R, fac + q.nL * q.es, q.nR * q.es);
        free(fac);
        d = ck_desc(&q);
        if (rite_init(&l, &d) != RITE_OK) return fprintf(stderr, "phase 2: rite_init failed\n"), 1;
        snprintf(path, sizeof path, "%s/c%d.ckpt", dir, i);
        st = rite_checkpoint_load_file(l, path);
        if (st != RITE_OK) {
            fprintf(stderr, "phase 2: %s: %s\n", path, rite_status_string(st));
            return 1;
        }
        for (s = STEPS / 2; s < STEPS; s++) {
            st = ck_step(&q, l);
            if (st != RITE_OK) return fprintf(stderr, "phase 2: step: %s\n", rite_status_string(st)), 1;
        }
        count = rite_step_count(l);
        ns = rite_state_size(l);
        stbuf = (unsigned char *)malloc(ns ? ns : 1);
        if (!stbuf || rite_state_copy(l, stbuf, ns) != RITE_OK) return fprintf(stderr, "phase 2: state\n"), 1;
        snprintf(path, sizeof path, "%s/c%d.out", dir, i);
        f = fopen(path, "wb");
        if (!f) return fprintf(stderr, "phase 2: cannot write %s\n", path), 1;
        ok = fwrite(q.L, q.es, q.nL, f) == q.nL;
        ok = ok && fwrite(q.R, q.es, q.nR, f) == q.nR;
        ok = ok && fwrite(&count, sizeof count, 1, f) == 1;
        ok = ok && fwrite(stbuf, 1, ns, f) == ns;
        ok = (fclose(f) == 0) && ok;
        if (!ok) return fprintf(stderr, "phase 2: cannot write %s\n", path), 1;
        free(stbuf);
        rite_free(l);
        ck_prob_free(&q);
    }
    return 0;
}

/* Run this executable again as `<self> --phase2 <dir>`; its exit status. */
static int ck_run_phase2(void) {
    /* the resolved path of this program (under valgrind /proc/self/exe is valgrind) */
    static char resolved[4200];
    const char *self = g_self;
    ssize_t len = readlink("/proc/self/exe", resolved, sizeof resolved - 1);
    char a0[4200], a1[] = "--phase2", a2[4200];
    char *args[4];
    pid_t pid;
    int status = 0;
    if (len > 0) {
        resolved[len] = 0;
        if (access(resolved, X_OK) == 0) self = resolved;
    }
    snprintf(a0, sizeof a0, "%s", self);
    snprintf(a2, sizeof a2, "%s", g_dir);
    args[0] = a0;
    args[1] = a1;
    args[2] = a2;
    args[3] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv(a0, args);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
#endif

/* N steps straight vs N/2 steps, save_file, and N/2 more steps in a fresh
   process that loads the checkpoint file and the factors into a new layer. */
static void test_resume_fresh_process(void **state) {
#if CK_POSIX
    ck_case cases[CK_MAX_CASES];
    ck_result straight[CK_MAX_CASES];
    int nc = ck_cases(cases), i, s;
    char path[4200], name[64];
    (void)state;
    if (getenv("LORA_RITE_VALGRIND")) {
        /* valgrind emulates floating point: its numbers need not match the
           native child process bit for bit (in-process resume is still tested) */
        printf("    skipped under valgrind: a native child would be compared with an emulated parent\n");
        skip();
    }
    for (i = 0; i < nc; i++) {
        ck_prob p;
        rite_layer *l;
        ck_prob_init(&p, &cases[i], M, N, RK, ck_seed(i));
        l = ck_layer(&p);
        for (s = 0; s < STEPS; s++) {
            if (s == STEPS / 2) {
                unsigned char *mem, *file, *fac;
                size_t n, fn;
                snprintf(name, sizeof name, "c%d.ckpt", i);
                ck_path(path, sizeof path, name);
                assert_int_equal(rite_checkpoint_save_file(l, path), RITE_OK);
                /* the file holds exactly what rite_checkpoint_save writes */
                mem = ck_save(l, &n);
                file = ck_read_file(path, &fn);
                assert_non_null(file);
                assert_int_equal(fn, n);
                assert_memory_equal(file, mem, n);
                free(mem);
                free(file);
                fac = (unsigned char *)ck_calloc(p.nL + p.nR, p.es);
                memcpy(fac, p.L, p.nL * p.es);
                memcpy(fac + p.nL * p.es, p.R, p.nR * p.es);
                snprintf(name, sizeof name, "c%d.fac", i);
                ck_path(path, sizeof path, name);
                assert_true(ck_write_file(path, fac, (p.nL + p.nR) * p.es));
                free(fac);
            }
            assert_int_equal(ck_step(&p, l), RITE_OK);
        }
        ck_result_of(&p, l, &straight[i]);
        rite_free(l);
        ck_prob_free(&p);
    }

    assert_int_equal(ck_run_phase2(), 0);

    for (i = 0; i < nc; i++) {
        ck_result resumed;
        unsigned char *out;
        size_t n;
        const char *diff = "";
        snprintf(name, sizeof name, "c%d.out", i);
        ck_path(path, sizeof path, name);
        out = ck_read_file(path, &n);
        assert_non_null(out);
        assert_int_equal(n, straight[i].nL + straight[i].nR + sizeof(long long) + straight[i].nstate);
        resumed.nL = straight[i].nL;
        resumed.nR = straight[i].nR;
        resumed.nstate = straight[i].nstate;
        resumed.L = out;
        resumed.R = out + resumed.nL;
        memcpy(&resumed.count, out + resumed.nL + resumed.nR, sizeof(long long));
        resumed.state = out + resumed.nL + resumed.nR + sizeof(long long);
        if (!ck_result_same(&straight[i], &resumed, &diff)) {
            print_error("%s: resumed in a fresh process after %d of %d steps, %s differs from the straight run\n",
                        ck_name(&cases[i]), STEPS / 2, STEPS, diff);
            fail();
        }
        free(out);
        ck_result_free(&straight[i]);
    }
#else
    (void)state;
    skip();
#endif
}

/* The loaded state does not depend on the layout for LoRA-RITE (only AdamW
   records it), nor on leading dimensions: a checkpoint of a rank-last,
   packed layer loads into a rank-first, padded one, and the continuation
   gives the same logical factors and state, bit for bit. */
static void test_resume_other_storage(void **state) {
    int o, p, kb, s;
    (void)state;
    for (o = 0; o < 2; o++)
        for (p = 0; p < 2; p++)
            for (kb = 0; kb < (o == 0 ? 2 : 1); kb++) {
                ck_case a = {RITE_LORA_RITE, RITE_FLOAT32, RITE_RANK_LAST, RITE_RANK_LAST, 0, 0, 1};
                ck_case b;
                ck_prob pa, pb;
                rite_layer *la, *lb;
                unsigned char *ck, *sa, *sb;
                size_t n, na, nb;
                double *La = (double *)ck_calloc(M * RK, sizeof(double)), *Ra = (double *)ck_calloc(N * RK, sizeof(double));
                double *Lb = (double *)ck_calloc(M * RK, sizeof(double)), *Rb = (double *)ck_calloc(N * RK, sizeof(double));
                a.opt = o ? RITE_ADAMW : RITE_LORA_RITE;
                a.prec = p ? RITE_FLOAT64 : RITE_FLOAT32;
                a.keep_basis = kb;
                b = a;
                b.pad = 3;
                if (a.opt == RITE_LORA_RITE) {   /* AdamW records the layouts: for it only the padding differs */
                    b.lay_L = RITE_RANK_FIRST;
                    b.lay_R = RITE_RANK_FIRST;
                }
                ck_prob_init(&pa, &a, M, N, RK, 99);
                ck_prob_init(&pb, &b, M, N, RK, 99);
                la = ck_layer(&pa);
                lb = ck_layer(&pb);
                for (s = 0; s < 9; s++) assert_int_equal(ck_step(&pa, la), RITE_OK);
                ck = ck_save(la, &n);
                assert_int_equal(n, rite_checkpoint_size(lb));
                assert_int_equal(rite_checkpoint_load(lb, ck, n), RITE_OK);
                ck_get(&pa, La, Ra);
                ck_put(&pb, La, Ra, pb.L, pb.R);
                for (s = 0; s < 9; s++) {
                    assert_int_equal(ck_step(&pa, la), RITE_OK);
                    assert_int_equal(ck_step(&pb, lb), RITE_OK);
                }
                ck_get(&pa, La, Ra);
                ck_get(&pb, Lb, Rb);
                assert_memory_equal(La, Lb, M * RK * sizeof(double));
                assert_memory_equal(Ra, Rb, N * RK * sizeof(double));
                sa = ck_state(la, &na);
                sb = ck_state(lb, &nb);
                assert_int_equal(na, nb);
                assert_memory_equal(sa, sb, na);
                assert_int_equal(rite_step_count(lb), 18);
                free(sa);
                free(sb);
                free(ck);
                free(La);
                free(Ra);
                free(Lb);
                free(Rb);
                rite_free(la);
                rite_free(lb);
                ck_prob_free(&pa);
                ck_prob_free(&pb);
            }
}

/* rite_factors_changed says the factors were changed outside a step, so the
   next step takes P = I. A checkpoint holds "the optimizer state": loading
   one with the factors it was saved with must give the continuation of the
   saving layer, whatever the loading layer was told before, and a layer
   restored from a checkpoint saved after rite_factors_changed must continue
   as the saving layer does. */
static void test_resume_after_factors_changed(void **state) {
    int p, s, scenario;
    (void)state;
    for (scenario = 0; scenario < 2; scenario++)
        for (p = 0; p < 2; p++) {
            ck_case c = {RITE_LORA_RITE, RITE_FLOAT32, RITE_RANK_LAST, RITE_RANK_FIRST, 0, 0, 0};
            ck_prob pa, pb;
            rite_layer *la, *lb;
            unsigned char *ck;
            size_t n;
            ck_result ra, rb;
            const char *diff = "";
            c.prec = p ? RITE_FLOAT64 : RITE_FLOAT32;
            ck_prob_init(&pa, &c, M, N, RK, 4242);
            ck_prob_init(&pb, &c, M, N, RK, 4243);
            la = ck_layer(&pa);
            lb = ck_layer(&pb);
            for (s = 0; s < 6; s++) {
                assert_int_equal(ck_step(&pa, la), RITE_OK);
                assert_int_equal(ck_step(&pb, lb), RITE_OK);
            }
            if (scenario == 0) {
                /* the loading layer was told its own factors changed; then it
                   takes the state and factors of another layer */
                rite_factors_changed(lb);
            } else {
                /* the saving layer's factors are changed (rescaled: L 2, R 1/2)
                   and it is told so; then it is saved */
                ck_get(&pa, pa.Ld, pa.Rd);
                for (s = 0; s < M * RK; s++) pa.Ld[s] *= 2.0;
                for (s = 0; s < N * RK; s++) pa.Rd[s] *= 0.5;
                ck_put(&pa, pa.Ld, pa.Rd, pa.L, pa.R);
                rite_factors_changed(la);
            }
            ck = ck_save(la, &n);
            assert_int_equal(rite_checkpoint_load(lb, ck, n), RITE_OK);
            memcpy(pb.A, pa.A, (size_t)M * N * sizeof(double));
            memcpy(pb.L, pa.L, pa.nL * pa.es);
            memcpy(pb.R, pa.R, pa.nR * pa.es);
            for (s = 0; s < 3; s++) {
                assert_int_equal(ck_step(&pa, la), RITE_OK);
                assert_int_equal(ck_step(&pb, lb), RITE_OK);
            }
            ck_result_of(&pa, la, &ra);
            ck_result_of(&pb, lb, &rb);
            if (!ck_result_same(&ra, &rb, &diff)) {
                print_error("%s: %s: the restored layer's %s differs from the saving layer's\n",
                            p ? "f64" : "f32",
                            scenario == 0 ? "loaded into a layer told rite_factors_changed"
                                          : "saved after rite_factors_changed",
                            diff);
                fail();
            }
            ck_result_free(&ra);
            ck_result_free(&rb);
            free(ck);
            rite_free(la);
            rite_free(lb);
            ck_prob_free(&pa);
            ck_prob_free(&pb);
        }
}

/* ============================================================== header */

static void test_header_fields(void **state) {
    ck_case cases[CK_MAX_CASES];
    int nc = ck_cases(cases), i, s;
    char path[4200];
    (void)state;
    ck_path(path, sizeof path, "header.ckpt");
    for (i = 0; i < nc; i++) {
        const ck_case *c = &cases[i];
        ck_prob p;
        rite_layer *l;
        unsigned char *b, *st, *file;
        size_t n, ns, fn;
        uint32_t options = 0, layouts = 0;
        uint64_t sum;
        ck_prob_init(&p, c, SM + i % 3, SN + i % 2, SR, ck_seed(i));
        l = ck_layer(&p);
        for (s = 0; s < 5 + i % 4; s++) assert_int_equal(ck_step(&p, l), RITE_OK);
        b = ck_save(l, &n);
        st = ck_state(l, &ns);
        if (c->opt == RITE_LORA_RITE && c->options) options |= 1u | 2u | 4u;
        if (c->opt == RITE_LORA_RITE && c->keep_basis) options |= 8u;
        if (c->lay_L == RITE_RANK_FIRST) layouts |= 1u;
        if (c->lay_R == RITE_RANK_FIRST) layouts |= 2u;

        assert_int_equal(n, (size_t)HEADER + ns + 8);
        assert_memory_equal(b, "LORARITE", 8);
        assert_int_equal(ck_u32(b + 8), 1);                     /* version */
        assert_int_equal(ck_u32(b + 12), HEADER);               /* header bytes */
        assert_int_equal(ck_u32(b + 16), 0x01020304u);          /* byte-order mark */
        assert_int_equal(ck_u32(b + 20), c->opt == RITE_ADAMW ? 1 : 0);
        assert_int_equal(ck_u32(b + 24), c->prec == RITE_FLOAT64 ? 1 : 0);
        assert_int_equal(ck_u32(b + 28), p.m);
        assert_int_equal(ck_u32(b + 32), p.n);
        assert_int_equal(ck_u32(b + 36), p.r);
        assert_int_equal(ck_u32(b + 40), options);
        assert_int_equal(ck_u32(b + 44), layouts);
        assert_int_equal(ck_u64(b + 48), ns);                   /* payload bytes */
        assert_int_equal(ck_u64(b + 56), 5 + i % 4);            /* step count */
        assert_memory_equal(b + HEADER, st, ns);                /* payload: the state bytes */
        sum = tu_fnv1a(b, n - 8);
        assert_int_equal(ck_u64(b + n - 8), sum);

        /* the file is byte for byte the same */
        assert_int_equal(rite_checkpoint_save_file(l, path), RITE_OK);
        file = ck_read_file(path, &fn);
        assert_non_null(file);
        assert_int_equal(fn, n);
        assert_memory_equal(file, b, n);
        free(file);

        /* a fresh layer saves the step count 0 and a checksum of its own bytes */
        {
            rite_layer *f = ck_layer(&p);
            unsigned char *fb;
            size_t fbn;
            fb = ck_save(f, &fbn);
            assert_int_equal(fbn, n);
            assert_int_equal(ck_u64(fb + 56), 0);
            assert_memory_equal(fb + 8, b + 8, 48);           /* same fields up to the step count */
            assert_int_equal(ck_u64(fb + fbn - 8), tu_fnv1a(fb, fbn - 8));
            free(fb);
            rite_free(f);
        }
        free(b);
        free(st);
        rite_free(l);
        ck_prob_free(&p);
    }
    remove(path);
}

/* The checksum routine of the test itself, on the published FNV-1a 64 test
   vectors (empty string, "a", "foobar"). */
static void test_fnv1a_vectors(void **state) {
    (void)state;
    assert_int_equal(tu_fnv1a((const unsigned char *)"", 0), 0xcbf29ce484222325ull);
    assert_int_equal(tu_fnv1a((const unsigned char *)"a", 1), 0xaf63dc4c8601ec8cull);
    assert_int_equal(tu_fnv1a((const unsigned char *)"foobar", 6), 0x85944171f73967e8ull);
}

/* ============================================================ rejections */

/* The small-layer cases of the exhaustive tests. */
static const ck_case small_cases[] = {
    {RITE_LORA_RITE, RITE_FLOAT32, RITE_RANK_LAST, RITE_RANK_LAST, 0, 0, 0},
    {RITE_LORA_RITE, RITE_FLOAT64, RITE_RANK_FIRST, RITE_RANK_LAST, 1, 0, 1},
    {RITE_LORA_RITE, RITE_FLOAT32, RITE_RANK_FIRST, RITE_RANK_FIRST, 0, 1, 1},
    {RITE_LORA_RITE, RITE_FLOAT64, RITE_RANK_LAST, RITE_RANK_FIRST, 0, 1, 0},
    {RITE_ADAMW, RITE_FLOAT32, RITE_RANK_FIRST, RITE_RANK_LAST, 0, 0, 1},
    {RITE_ADAMW, RITE_FLOAT64, RITE_RANK_LAST, RITE_RANK_LAST, 2, 0, 0},
};
enum { NSMALL = (int)(sizeof small_cases / sizeof small_cases[0]) };

/* A checkpoint of another layer: the target's case with one thing changed. */
typedef struct ck_other {
    const char *what;
    int dm, dn, dr, swap_mn;        /* size changes */
    int other_prec, other_opt;
    int flip_escape, flip_releps, flip_balance, flip_keep, flip_lay_L, flip_lay_R;
} ck_other;

static unsigned char *ck_other_checkpoint(const ck_case *target, const ck_other *o, size_t *n) {
    ck_case c = *target;
    ck_prob p;
    rite_layer *l;
    unsigned char *b;
    int m = SM + 1 + o->dm, nn = SN + 1 + o->dn, r = SR + o->dr, s;
    if (o->swap_mn) {
        int t = m;
        m = nn;
        nn = t;
    }
    if (o->other_prec) c.prec = c.prec == RITE_FLOAT32 ? RITE_FLOAT64 : RITE_FLOAT32;
    if (o->other_opt) {
        c.opt = c.opt == RITE_ADAMW ? RITE_LORA_RITE : RITE_ADAMW;
        c.keep_basis = 0;
        c.options = 0;
    }
    if (o->flip_keep) c.keep_basis = !c.keep_basis;
    if (o->flip_lay_L) c.lay_L = c.lay_L == RITE_RANK_LAST ? RITE_RANK_FIRST : RITE_RANK_LAST;
    if (o->flip_lay_R) c.lay_R = c.lay_R == RITE_RANK_LAST ? RITE_RANK_FIRST : RITE_RANK_LAST;
    ck_prob_init(&p, &c, m, nn, r, 555);
    if (o->flip_escape) p.cfg.escape = !p.cfg.escape;
    if (o->flip_releps) p.cfg.relative_eps = !p.cfg.relative_eps;
    if (o->flip_balance) p.cfg.balance = !p.cfg.balance;
    l = ck_layer(&p);
    for (s = 0; s < 3; s++) assert_int_equal(ck_step(&p, l), RITE_OK);
    b = ck_save(l, n);
    rite_free(l);
    ck_prob_free(&p);
    return b;
}

/* The rejection tests, for each small case: twins of size m x n stepped
   `steps` times, the state of tw->a taken, then `body` (whose loads into
   tw->a are to leave it as it was); afterwards the twins' next step must
   agree. `path`, the body's file, is `file` in the test directory; it is
   removed at the end. */
typedef void (*ck_twin_body)(int t, ck_twin *tw, const ck_before *before, const char *path);

static void ck_each_twin(int m, int n, uint64_t seed, int steps, const char *what, ck_twin_body body,
                         const char *file) {
    char path[4200];
    int t;
    ck_path(path, sizeof path, file);
    for (t = 0; t < NSMALL; t++) {
        ck_twin tw;
        ck_before before;
        ck_twin_init(&tw, &small_cases[t], m, n, SR, seed, steps);
        ck_before_take(&before, tw.a);
        body(t, &tw, &before, path);
        free(before.state);
        ck_twin_check(&tw, what);
        ck_twin_free(&tw);
    }
    remove(path);
}

/* the checkpoints of other layers that test_reject_mismatch loads */
static const ck_other mismatch_others[] = {
    {"m", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"m smaller", -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"n", 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"r", 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"r smaller", 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"m and n swapped", 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
    {"precision", 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0},
    {"optimizer", 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    {"keep_basis", 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0},
    {"AdamW layout of L", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
    {"AdamW layout of R", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
};
enum { N_MISMATCH_OTHERS = (int)(sizeof mismatch_others / sizeof mismatch_others[0]) };

static void reject_mismatch_case(int t, ck_twin *tw, const ck_before *before, const char *path) {
    const ck_case *c = &small_cases[t];
    int k;
    for (k = 0; k < N_MISMATCH_OTHERS; k++) {
        const ck_other *o = &mismatch_others[k];
        unsigned char *b;
        size_t n;
        char what[400];
        if (c->opt == RITE_ADAMW && (o->flip_escape || o->flip_releps || o->flip_balance || o->flip_keep))
            continue;   /* LoRA-RITE options */
        if (c->opt == RITE_LORA_RITE && (o->flip_lay_L || o->flip_lay_R)) continue;
        b = ck_other_checkpoint(c, o, &n);
        snprintf(what, sizeof what, "%s: checkpoint of another %s", ck_name(c), o->what);
        ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_MISMATCH, what, 0);
        {   /* the detail names the first field that differs */
            char field[32];
            if (strncmp(o->what, "AdamW", 5) == 0) snprintf(field, sizeof field, "layouts differ");
            else snprintf(field, sizeof field, "%.*s differs", (int)strcspn(o->what, " "), o->what);
            if (!strstr(rite_last_error(tw->a), field))
                print_error("%s: detail \"%s\" does not say \"%s\"\n", what, rite_last_error(tw->a), field);
            assert_non_null(strstr(rite_last_error(tw->a), field));
        }
        assert_true(ck_write_file(path, b, n));
        ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_ERR_CHECKPOINT_MISMATCH, what, 1);
        free(b);
    }
}

static void test_reject_mismatch(void **state) {
    (void)state;
    ck_each_twin(SM + 1, SN + 1, 77, 4, "mismatch", reject_mismatch_case, "other.ckpt");
}

/* Hyper-parameters may differ between the checkpoint and the layer (lr,
   cap, clip, betas, and the options escape, relative_eps and balance, which
   rite_set_config may change too): the load takes the state and leaves the
   layer's hyper-parameters as they are. */
static void test_options_are_hyper_parameters(void **state) {
    ck_case c = {RITE_LORA_RITE, RITE_FLOAT64, RITE_RANK_LAST, RITE_RANK_FIRST, 0, 0, 1};
    ck_prob p, q;
    rite_layer *a, *b;
    unsigned char *ck, *sa, *sb;
    size_t n, na, nb;
    rite_config cfg;
    int s;
    (void)state;
    ck_prob_init(&p, &c, SM + 2, SN + 2, SR, 31);
    ck_prob_init(&q, &c, SM + 2, SN + 2, SR, 31);
    q.cfg.lr = 0.5;
    q.cfg.cap = 0;
    q.cfg.clip = 3.0;
    q.cfg.beta1 = 0.5;
    q.cfg.escape = 0;   /* differs from the checkpoint */
    a = ck_layer(&p);
    b = ck_layer(&q);
    for (s = 0; s < 5; s++) assert_int_equal(ck_step(&p, a), RITE_OK);
    ck = ck_save(a, &n);
    assert_int_equal(rite_checkpoint_load(b, ck, n), RITE_OK);
    assert_int_equal(rite_step_count(b), 5);
    cfg = rite_get_config(b);
    assert_int_equal(cfg.escape, 0);   /* the layer's own */
    assert_true(cfg.lr == 0.5 && cfg.clip == 3.0 && cfg.beta1 == 0.5);
    sa = ck_state(a, &na);
    sb = ck_state(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(sa, sb, na);
    free(sa);
    free(sb);
    free(ck);
    rite_free(a);
    rite_free(b);
    ck_prob_free(&p);
    ck_prob_free(&q);
}

/* Another layer of case c stepped `steps` times, and its checkpoint, which
   the rejection tests damage; ck_source_done checks that the intact
   checkpoint loads (into that layer) and frees both. */
typedef struct ck_source {
    ck_prob p;
    rite_layer *l;
} ck_source;

static unsigned char *ck_source_init(ck_source *src, const ck_case *c, uint64_t seed, int steps, size_t *n) {
    int s;
    ck_prob_init(&src->p, c, SM, SN, SR, seed);
    src->l = ck_layer(&src->p);
    for (s = 0; s < steps; s++) assert_int_equal(ck_step(&src->p, src->l), RITE_OK);
    return ck_save(src->l, n);
}

static void ck_source_done(ck_source *src, unsigned char *b, size_t n) {
    assert_int_equal(rite_checkpoint_load(src->l, b, n), RITE_OK);
    free(b);
    rite_free(src->l);
    ck_prob_free(&src->p);
}

/* Every truncation (memory: every length; file: a sample) and trailing bytes -> FORMAT. */
static void reject_truncated_and_trailing_case(int t, ck_twin *tw, const ck_before *before, const char *path) {
    const ck_case *c = &small_cases[t];
    ck_source src;
    unsigned char *b, *longer;
    size_t n, len, extra;
    b = ck_source_init(&src, c, 79, 6, &n);
    for (len = 0; len < n; len++) {
        unsigned char *cut = (unsigned char *)ck_calloc(len, 1);   /* exactly len bytes */
        memcpy(cut, b, len);
        ck_expect(tw->a, before, rite_checkpoint_load(tw->a, cut, len), RITE_ERR_CHECKPOINT_FORMAT,
                  "truncated checkpoint in memory", (long)len);
        if (len == 0 || len == 1 || len == 8 || len == HEADER - 1 || len == HEADER || len == HEADER + 7 ||
            len == HEADER + 8 || len == n / 2 || len == n - 8 || len == n - 1) {
            assert_true(ck_write_file(path, cut, len));
            ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_ERR_CHECKPOINT_FORMAT,
                      "truncated checkpoint file", (long)len);
        }
        free(cut);
    }
    for (extra = 1; extra <= n + 1; extra = extra < 16 ? extra + 1 : extra * 2) {
        longer = (unsigned char *)ck_calloc(n + extra, 1);
        memcpy(longer, b, n);
        memset(longer + n, 0, extra);
        ck_expect(tw->a, before, rite_checkpoint_load(tw->a, longer, n + extra), RITE_ERR_CHECKPOINT_FORMAT,
                  "checkpoint with trailing bytes in memory", (long)extra);
        if (extra == 1 || extra == 8 || extra > 64) {
            assert_true(ck_write_file(path, longer, n + extra));
            ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_ERR_CHECKPOINT_FORMAT,
                      "checkpoint file with trailing bytes", (long)extra);
        }
        free(longer);
    }
    /* the intact checkpoint loads (so the rejections above were about the length) */
    ck_source_done(&src, b, n);
}

static void test_reject_truncated_and_trailing(void **state) {
    (void)state;
    ck_each_twin(SM, SN, 78, 3, "truncated", reject_truncated_and_trailing_case, "cut.ckpt");
}

/* The code a flipped bit at byte `pos` must give: the header fields are
   checked in the documented way (magic, header size and byte-order mark:
   FORMAT; version: VERSION; optimizer, precision, sizes, options, payload bytes, and for AdamW
   the layouts: MISMATCH); everything else only the checksum sees (CORRUPT). */
/* the status a flip of bit `bit` of byte pos gives: the identity fields
   (optimizer, precision, sizes; of the options word only keep_basis, bit 3
   of byte 40; the layouts for AdamW) are compared before the checksum */
static rite_status ck_flip_expect(const ck_case *c, size_t pos, int bit) {
    if (pos < 8) return RITE_ERR_CHECKPOINT_FORMAT;
    if (pos < 12) return RITE_ERR_CHECKPOINT_VERSION;
    if (pos < 20) return RITE_ERR_CHECKPOINT_FORMAT;
    if (pos < 40) return RITE_ERR_CHECKPOINT_MISMATCH;
    if (pos < 44) return pos == 40 && bit == 3 ? RITE_ERR_CHECKPOINT_MISMATCH : RITE_ERR_CHECKPOINT_CORRUPT;
    if (pos < 48) return c->opt == RITE_ADAMW ? RITE_ERR_CHECKPOINT_MISMATCH : RITE_ERR_CHECKPOINT_CORRUPT;
    if (pos < 56) return RITE_ERR_CHECKPOINT_MISMATCH;
    return RITE_ERR_CHECKPOINT_CORRUPT;
}

static void reject_flipped_bits_case(int t, ck_twin *tw, const ck_before *before, const char *path) {
    const ck_case *c = &small_cases[t];
    ck_source src;
    unsigned char *b;
    size_t n, pos;
    int bit;
    char what[400];
    b = ck_source_init(&src, c, 81, 7, &n);
    for (pos = 0; pos < n; pos++)
        for (bit = 0; bit < 8; bit++) {
            rite_status want = ck_flip_expect(c, pos, bit);
            b[pos] ^= (unsigned char)(1u << bit);
            snprintf(what, sizeof what, "%s: bit %d of byte (index in brackets) flipped", ck_name(c), bit);
            ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), want, what, (long)pos);
            if (bit == (int)(pos % 8) && pos % 5 == 0) {
                assert_true(ck_write_file(path, b, n));
                ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), want, what, (long)pos);
            }
            b[pos] ^= (unsigned char)(1u << bit);
        }
    /* unflipped, it loads */
    ck_source_done(&src, b, n);
}

static void test_reject_flipped_bits(void **state) {
    (void)state;
    ck_each_twin(SM, SN, 80, 5, "flipped bits", reject_flipped_bits_case, "flip.ckpt");
}

/* Edits with the checksum recomputed, so that the checksum cannot be what rejects them. */
static void reject_resealed_edits_case(int t, ck_twin *tw, const ck_before *before, const char *path) {
    static const uint32_t versions[] = {0u, 2u, 3u, 0x01000000u, 0xffffffffu};
    const ck_case *c = &small_cases[t];
    unsigned char *good, *b;
    size_t n;
    int k;
    good = ck_save(tw->b, &n);   /* the twin's own checkpoint: it would load */
    b = (unsigned char *)ck_calloc(n, 1);
    /* another version: VERSION, resealed or not */
    for (k = 0; k < (int)(sizeof versions / sizeof versions[0]); k++) {
        memcpy(b, good, n);
        ck_set_u32(b + 8, versions[k]);
        ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_VERSION,
                  "version changed", (long)versions[k]);
        ck_reseal(b, n);
        ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_VERSION,
                  "version changed, checksum recomputed", (long)versions[k]);
        assert_true(ck_write_file(path, b, n));
        ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_ERR_CHECKPOINT_VERSION,
                  "version changed, file", (long)versions[k]);
    }
    /* written in the other byte order: the byte-order mark reads 0x04030201 -> FORMAT */
    memcpy(b, good, n);
    ck_set_u32(b + 16, 0x04030201u);
    ck_reseal(b, n);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_FORMAT,
              "byte-order mark of the other order", 0);
    /* the step count of the header disagrees with the one in the payload -> CORRUPT */
    memcpy(b, good, n);
    b[56] ^= 1;
    ck_reseal(b, n);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_CORRUPT,
              "header step count edited, checksum recomputed", 0);
    /* a step count that could not go on counting (negative, or near the
       top of the range) in both copies, resealed -> CORRUPT */
    {
        static const int64_t counts[] = {-1, INT64_MIN, INT64_MAX, (int64_t)1 << 62 | 1};
        int q;
        for (q = 0; q < 4; q++) {
            memcpy(b, good, n);
            memcpy(b + 56, &counts[q], 8);
            memcpy(b + HEADER, &counts[q], 8);
            ck_reseal(b, n);
            ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_CORRUPT,
                      "impossible step count, checksum recomputed", (long)q);
        }
    }
    /* another magic -> FORMAT */
    memcpy(b, good, n);
    memcpy(b, "LORARITF", 8);
    ck_reseal(b, n);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_FORMAT, "magic edited", 0);
    /* a payload edited and resealed is a valid checkpoint of other numbers:
       it loads (the checksum detects damage, not edits); then the layer
       takes its own state back */
    memcpy(b, good, n);
    b[HEADER + 8] ^= 0x01;   /* the lowest bits of the first moment's first number */
    ck_reseal(b, n);
    assert_int_equal(rite_checkpoint_load(tw->a, b, n), RITE_OK);
    assert_int_equal(rite_checkpoint_load(tw->a, good, n), RITE_OK);
    /* ... unless an edited number is not finite: the first number of the
       payload after the step count (L's first moment) set to NaN -> CORRUPT */
    memcpy(b, good, n);
    if (c->prec == RITE_FLOAT32) {
        float v = NAN;
        memcpy(b + HEADER + 8, &v, sizeof v);
    } else {
        double v = NAN;
        memcpy(b + HEADER + 8, &v, sizeof v);
    }
    ck_reseal(b, n);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_CORRUPT,
              "NaN in the payload, checksum recomputed", 0);
    if (c->opt == RITE_LORA_RITE) {   /* the payload ends with R's escaped mass, then (no keep_basis) the flag */
        const size_t rho_at = n - 8 - sizeof(double) - (c->keep_basis ? 0 : sizeof(int));
        const double neg = -1.0;
        const int flag = 2;
        memcpy(b, good, n);
        memcpy(b + rho_at, &neg, sizeof neg);
        ck_reseal(b, n);
        ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_CORRUPT,
                  "a negative escaped mass, checksum recomputed", 0);
        if (!c->keep_basis) {
            memcpy(b, good, n);
            memcpy(b + n - 8 - sizeof(int), &flag, sizeof flag);
            ck_reseal(b, n);
            ck_expect(tw->a, before, rite_checkpoint_load(tw->a, b, n), RITE_ERR_CHECKPOINT_CORRUPT,
                      "a factors-changed flag of 2, checksum recomputed", 0);
        }
    }
    free(good);
    free(b);
}

static void test_reject_resealed_edits(void **state) {
    (void)state;
    ck_each_twin(SM, SN, 82, 4, "resealed edits", reject_resealed_edits_case, "edit.ckpt");
}

/* Files and buffers that are not checkpoints -> FORMAT. */
static void reject_foreign_case(int t, ck_twin *tw, const ck_before *before, const char *path) {
    static const char text[] = "step,loss\n1,0.25\n2,0.125\nthis is a text file, not a checkpoint\n";
    tu_rng g;
    size_t n, i, k;
    unsigned char *rnd;
    size_t sizes[5];
    n = rite_checkpoint_size(tw->a);
    sizes[0] = n;
    sizes[1] = n + 1;
    sizes[2] = 100;
    sizes[3] = 7;
    sizes[4] = 4096;
    g.s = 12345u + (uint64_t)t;
    for (k = 0; k < 5; k++) {
        rnd = (unsigned char *)ck_calloc(sizes[k], 1);
        for (i = 0; i < sizes[k]; i++) rnd[i] = (unsigned char)(tu_next(&g) >> 56);
        ck_expect(tw->a, before, rite_checkpoint_load(tw->a, rnd, sizes[k]), RITE_ERR_CHECKPOINT_FORMAT,
                  "random bytes in memory", (long)sizes[k]);
        assert_true(ck_write_file(path, rnd, sizes[k]));
        ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_ERR_CHECKPOINT_FORMAT,
                  "random bytes file", (long)sizes[k]);
        free(rnd);
    }
    /* all zeros, of the exact size */
    rnd = (unsigned char *)ck_calloc(n, 1);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, rnd, n), RITE_ERR_CHECKPOINT_FORMAT, "zeros", (long)n);
    free(rnd);
    /* a text file */
    assert_true(ck_write_file(path, text, sizeof text - 1));
    ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_ERR_CHECKPOINT_FORMAT, "text file", 0);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, text, sizeof text - 1), RITE_ERR_CHECKPOINT_FORMAT,
              "text in memory", 0);
    /* an empty file, and an empty buffer */
    assert_true(ck_write_file(path, "", 0));
    ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_ERR_CHECKPOINT_FORMAT, "empty file", 0);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, text, 0), RITE_ERR_CHECKPOINT_FORMAT, "empty buffer", 0);
}

static void test_reject_foreign(void **state) {
    (void)state;
    ck_each_twin(SM, SN, 83, 4, "foreign", reject_foreign_case, "foreign.bin");
}

/* Paths that cannot be opened, read or written -> IO (`path`: a good file). */
static void io_errors_case(int t, ck_twin *tw, const ck_before *before, const char *path) {
    char missing[4200], nodir[4200];
    FILE *f;
    (void)t;
    ck_path(missing, sizeof missing, "does-not-exist.ckpt");
    ck_path(nodir, sizeof nodir, "no-such-directory/x.ckpt");
    remove(missing);
    ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, missing), RITE_ERR_IO, "missing file", 0);
    ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, nodir), RITE_ERR_IO, "missing directory", 0);
    ck_expect(tw->a, before, rite_checkpoint_save_file(tw->a, nodir), RITE_ERR_IO, "save into a missing directory",
              0);
    f = fopen(nodir, "rb");
    assert_null(f);
#if CK_POSIX
    /* a directory is neither a readable nor a writable checkpoint */
    ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, g_dir), RITE_ERR_IO, "load from a directory", 0);
    ck_expect(tw->a, before, rite_checkpoint_save_file(tw->a, g_dir), RITE_ERR_IO, "save to a directory", 0);
    /* a device that is always full: the write (or its flush at close) fails */
    if (access("/dev/full", W_OK) == 0)
        ck_expect(tw->a, before, rite_checkpoint_save_file(tw->a, "/dev/full"), RITE_ERR_IO, "save to /dev/full", 0);
#endif
    /* and a good file still loads (its own state) */
    assert_int_equal(rite_checkpoint_save_file(tw->a, path), RITE_OK);
    ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, path), RITE_OK, "own checkpoint file", 0);
}

static void test_io_errors(void **state) {
    (void)state;
    ck_each_twin(SM, SN, 84, 4, "io", io_errors_case, "good.ckpt");
}

static void null_and_buffer_size_case(int t, ck_twin *tw, const ck_before *before, const char *path) {
    unsigned char *b, *big;
    size_t n, len, k;
    (void)t;
    b = ck_save(tw->b, &n);
    assert_int_equal(rite_checkpoint_save(NULL, b, n), RITE_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_checkpoint_save(tw->a, NULL, n), RITE_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_checkpoint_save(tw->a, NULL, 0), RITE_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_checkpoint_load(NULL, b, n), RITE_ERR_NULL_ARGUMENT);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, NULL, n), RITE_ERR_NULL_ARGUMENT, "load NULL", 0);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, NULL, 0), RITE_ERR_NULL_ARGUMENT, "load NULL, 0", 0);
    assert_int_equal(rite_checkpoint_save_file(NULL, path), RITE_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_checkpoint_save_file(tw->a, NULL), RITE_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_checkpoint_load_file(NULL, path), RITE_ERR_NULL_ARGUMENT);
    ck_expect(tw->a, before, rite_checkpoint_load_file(tw->a, NULL), RITE_ERR_NULL_ARGUMENT, "load_file NULL", 0);
    /* every too-small buffer */
    big = (unsigned char *)ck_calloc(n + 32, 1);
    for (len = 0; len < n; len++) {
        rite_status st = rite_checkpoint_save(tw->a, big, len);
        if (st != RITE_ERR_BUFFER_SIZE) {
            print_error("save into %zu of %zu bytes: status %d\n", len, n, (int)st);
            fail();
        }
    }
    /* a larger buffer: exactly rite_checkpoint_size bytes are written */
    memset(big, 0xA5, n + 32);
    assert_int_equal(rite_checkpoint_save(tw->a, big, n + 32), RITE_OK);
    for (k = n; k < n + 32; k++) assert_int_equal(big[k], 0xA5);
    ck_expect(tw->a, before, rite_checkpoint_load(tw->a, big, n), RITE_OK, "own checkpoint", 0);
    free(big);
    free(b);
}

static void test_null_and_buffer_size(void **state) {
    (void)state;
    assert_int_equal(rite_checkpoint_size(NULL), 0);
    ck_each_twin(SM, SN, 85, 4, "null", null_and_buffer_size_case, "null.ckpt");
}

/* ==================================================== prepare and loading */

/* A successful load cancels a pending prepare; a rejected one keeps it. */
static void test_load_and_prepare(void **state) {
    int t;
    (void)state;
    for (t = 0; t < NSMALL; t++) {
        const ck_case *c = &small_cases[t];
        ck_twin tw;
        ck_before before;
        unsigned char *b, *bad;
        size_t n;
        double sa = 0, sb = 0;
        ck_result ra, rb;
        const char *diff = "";
        ck_twin_init(&tw, c, SM, SN, SR, 86, 4);
        b = ck_save(tw.a, &n);
        bad = (unsigned char *)ck_calloc(n, 1);
        memcpy(bad, b, n);
        bad[n - 1] ^= 1;

        /* rejected load between prepare and apply: the apply still goes
           through, and equals the twin's prepare and apply */
        assert_int_equal(ck_prepare(&tw.pa, tw.a, &sa), RITE_OK);
        assert_int_equal(ck_prepare(&tw.pb, tw.b, &sb), RITE_OK);
        ck_before_take(&before, tw.a);
        ck_expect(tw.a, &before, rite_checkpoint_load(tw.a, bad, n), RITE_ERR_CHECKPOINT_CORRUPT, "corrupt", 0);
        ck_expect(tw.a, &before, rite_checkpoint_load(tw.a, b, n - 1), RITE_ERR_CHECKPOINT_FORMAT, "short", 0);
        assert_int_equal(rite_apply(tw.a, sa), RITE_OK);
        assert_int_equal(rite_apply(tw.b, sb), RITE_OK);
        ck_result_of(&tw.pa, tw.a, &ra);
        ck_result_of(&tw.pb, tw.b, &rb);
        if (!ck_result_same(&ra, &rb, &diff)) {
            print_error("%s: a rejected load lost the pending prepare (%s differs)\n", ck_name(c), diff);
            fail();
        }
        ck_result_free(&ra);
        ck_result_free(&rb);
        free(before.state);

        /* successful load between prepare and apply: apply is refused */
        assert_int_equal(ck_prepare(&tw.pa, tw.a, &sa), RITE_OK);
        assert_int_equal(rite_checkpoint_load(tw.a, b, n), RITE_OK);
        assert_int_equal(rite_apply(tw.a, sa), RITE_ERR_NOT_PREPARED);
        assert_int_equal(rite_step_count(tw.a), 4);
        free(b);
        b = ck_save(tw.a, &n);
        assert_int_equal(ck_u64(b + 56), 4);
        free(b);
        free(bad);
        ck_twin_free(&tw);
    }
}

/* load_file reads through the layer's allocator: when it fails, the layer is untouched. */
typedef struct ck_alloc {
    int fail;
    long live;
} ck_alloc;

static void *ck_alloc_fn(size_t size, void *user) {
    ck_alloc *a = (ck_alloc *)user;
    void *p;
    if (a->fail) return NULL;
    p = malloc(size);
    if (p) a->live++;
    return p;
}

static void ck_free_fn(void *ptr, void *user) {
    ck_alloc *a = (ck_alloc *)user;
    if (!ptr) return;
    a->live--;
    free(ptr);
}

static void test_load_file_out_of_memory(void **state) {
    ck_case c = {RITE_LORA_RITE, RITE_FLOAT32, RITE_RANK_LAST, RITE_RANK_FIRST, 0, 0, 0};
    ck_prob p;
    rite_layer *l = NULL;
    rite_desc d;
    ck_alloc a = {0, 0};
    ck_before before;
    char path[4200];
    int s;
    (void)state;
    ck_path(path, sizeof path, "oom.ckpt");
    ck_prob_init(&p, &c, SM, SN, SR, 87);
    d = ck_desc(&p);
    d.allocator.alloc = ck_alloc_fn;
    d.allocator.release = ck_free_fn;
    d.allocator.user_data = &a;
    assert_int_equal(rite_init(&l, &d), RITE_OK);
    for (s = 0; s < 3; s++) assert_int_equal(ck_step(&p, l), RITE_OK);
    assert_int_equal(rite_checkpoint_save_file(l, path), RITE_OK);
    assert_int_equal(ck_step(&p, l), RITE_OK);
    ck_before_take(&before, l);
    a.fail = 1;
    ck_expect(l, &before, rite_checkpoint_load_file(l, path), RITE_ERR_OUT_OF_MEMORY, "allocator fails", 0);
    a.fail = 0;
    assert_int_equal(rite_checkpoint_load_file(l, path), RITE_OK);
    assert_int_equal(rite_step_count(l), 3);
    rite_free(l);
    assert_int_equal(a.live, 0);   /* the read buffer was given back */
    free(before.state);
    ck_prob_free(&p);
    remove(path);
}

/* ================================================================== main */

static int ck_group_setup(void **state) {
    (void)state;
#if CK_POSIX
    {
        const char *tmp = getenv("TMPDIR");
        int n = snprintf(g_dir, sizeof g_dir, "%s/rite_checkpoint_XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (n <= 0 || (size_t)n >= sizeof g_dir || !mkdtemp(g_dir)) return -1;
    }
#else
    snprintf(g_dir, sizeof g_dir, ".");
#endif
    return 0;
}

static int ck_group_teardown(void **state) {
    (void)state;
#if CK_POSIX
    {
        DIR *d = opendir(g_dir);
        struct dirent *e;
        char path[sizeof g_dir + 300];
        if (d) {
            while ((e = readdir(d)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
                snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
                remove(path);
            }
            closedir(d);
        }
        rmdir(g_dir);
    }
#endif
    return 0;
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv1a_vectors),
        cmocka_unit_test(test_header_fields),
        cmocka_unit_test(test_resume_in_process),
        cmocka_unit_test(test_resume_fresh_process),
        cmocka_unit_test(test_resume_other_storage),
        cmocka_unit_test(test_resume_after_factors_changed),
        cmocka_unit_test(test_reject_mismatch),
        cmocka_unit_test(test_options_are_hyper_parameters),
        cmocka_unit_test(test_reject_truncated_and_trailing),
        cmocka_unit_test(test_reject_flipped_bits),
        cmocka_unit_test(test_reject_resealed_edits),
        cmocka_unit_test(test_reject_foreign),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_null_and_buffer_size),
        cmocka_unit_test(test_load_and_prepare),
        cmocka_unit_test(test_load_file_out_of_memory),
    };
#if CK_POSIX
    if (argc == 3 && strcmp(argv[1], "--phase2") == 0) return ck_phase2(argv[2]);
#endif
    g_self = argc > 0 ? argv[0] : "";
    return cmocka_run_group_tests(tests, ck_group_setup, ck_group_teardown);
}
