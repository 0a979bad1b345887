/* test_noalloc.c - a step performs no heap allocation.

   The executable replaces malloc, calloc, realloc, free, posix_memalign,
   aligned_alloc, memalign, valloc and pvalloc (glibc allows this; the
   replacements forward to glibc's own __libc_* entry points). The
   replacements are used by every shared library in the process too, so an
   allocation made by a LAPACKE wrapper on behalf of the library is counted
   as well. An allocation made by a BLAS or LAPACK routine inside its own
   code is the BLAS's, not the library's: it is reported and not counted
   (OpenBLAS 0.3.21 allocates inside gemm in its small-matrix kernels for
   AVX-512 cores, and in threaded gemm; see the header's MEMORY notes).
   Counting is switched on only around calls into the library. Every layer
   is also created with a counting rite_allocator hook.

   After one warm-up step per layer (a BLAS may set itself up on first use;
   what that step allocates is printed, not asserted), steps, two-phase
   steps, error returns and the small accessors must allocate and free
   nothing, for both optimizers, both precisions and both layouts, with
   every option on, at sizes where a LAPACK workspace would be noticeable.
   A model's steps (two threads of its own, a layer of 1100 x 16) must not
   allocate either.

   On a C library other than glibc only the allocator hook is counted and
   the tests that need the replacements are skipped. */
#define _GNU_SOURCE /* backtrace, dladdr, valloc, pvalloc, memalign */
#include "lora_rite.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include <cmocka.h>

#include "test_util.h"

#if defined(__GLIBC__)
#define NOALLOC_INTERPOSE 1
#include <dlfcn.h>
#include <execinfo.h>
#include <malloc.h>
#else
#define NOALLOC_INTERPOSE 0
#endif

/* ------------------------------------------------------ counting window */

enum { MAX_RECORDS = 8, MAX_FRAMES = 14 };

typedef struct alloc_record {
    const char *kind;
    size_t size;
    int depth;
    void *frames[MAX_FRAMES];
} alloc_record;

static atomic_int g_measuring;          /* counting is on */
static atomic_long g_allocs, g_frees;   /* events while counting */
static atomic_long g_blas_allocs;       /* allocations made inside BLAS routines (not counted above) */
static atomic_int g_nrecords;
static alloc_record g_records[MAX_RECORDS]; /* the first few allocations, with call stacks */
static _Thread_local int g_recording;   /* inside backtrace(): do not count */

static void measure_reset(void) {
    atomic_store(&g_allocs, 0);
    atomic_store(&g_blas_allocs, 0);
    atomic_store(&g_frees, 0);
    atomic_store(&g_nrecords, 0);
}
static void measure_on(void) { atomic_store(&g_measuring, 1); }
static void measure_off(void) { atomic_store(&g_measuring, 0); }

#if NOALLOC_INTERPOSE
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

/* 1 when the function that called the allocator lives in the BLAS or LAPACK
   library itself (not in this executable, where the header's code is, and
   not in LAPACKE, whose non-_work wrappers allocate on the caller's behalf):
   an allocation the BLAS makes inside one of its own routines. */
static int called_from_blas(void *const *frames, int depth) {
    static const char *const allocators[] = {"malloc", "calloc", "realloc", "free", "posix_memalign",
                                             "aligned_alloc", "memalign", "valloc", "pvalloc"};
    int k, a, seen = 0;
    for (k = 0; k < depth; k++) {
        Dl_info info;
        int is_alloc = 0;
        if (!dladdr(frames[k], &info)) continue;
        for (a = 0; a < (int)(sizeof allocators / sizeof allocators[0]); a++)
            if (info.dli_sname && strcmp(info.dli_sname, allocators[a]) == 0) is_alloc = 1;
        if (is_alloc) {
            seen = 1;
            continue;
        }
        if (!seen) continue;
        if (!info.dli_fname) return 0;
        return strstr(info.dli_fname, "libopenblas") || strstr(info.dli_fname, "libblas") ||
               strstr(info.dli_fname, "liblapack.");
    }
    return 0;
}

static void note_alloc(const char *kind, size_t size) {
    int slot, depth, blas;
    void *frames[MAX_FRAMES];
    if (!atomic_load(&g_measuring) || g_recording) return;
    g_recording = 1;
    depth = backtrace(frames, MAX_FRAMES);
    blas = called_from_blas(frames, depth);
    g_recording = 0;
    if (blas) {   /* the BLAS's own: reported, not the library's */
        atomic_fetch_add(&g_blas_allocs, 1);
        return;
    }
    atomic_fetch_add(&g_allocs, 1);
    slot = atomic_fetch_add(&g_nrecords, 1);
    if (slot < MAX_RECORDS) {
        g_records[slot].kind = kind;
        g_records[slot].size = size;
        g_records[slot].depth = depth;
        memcpy(g_records[slot].frames, frames, sizeof frames);
    }
}

static void note_free(void *ptr) {
    void *frames[MAX_FRAMES];
    int depth, blas;
    if (!ptr || !atomic_load(&g_measuring) || g_recording) return;
    g_recording = 1;
    depth = backtrace(frames, MAX_FRAMES);
    blas = called_from_blas(frames, depth);
    g_recording = 0;
    if (!blas) atomic_fetch_add(&g_frees, 1);
}

void *malloc(size_t size) {
    note_alloc("malloc", size);
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    note_alloc("calloc", count * size);
    return __libc_calloc(count, size);
}

void *realloc(void *ptr, size_t size) {
    note_alloc("realloc", size);
    return __libc_realloc(ptr, size);
}

void free(void *ptr) {
    note_free(ptr);
    __libc_free(ptr);
}

int posix_memalign(void **memptr, size_t alignment, size_t size) {
    void *p;
    note_alloc("posix_memalign", size);
    if (alignment < sizeof(void *) || (alignment & (alignment - 1))) return EINVAL;
    p = __libc_memalign(alignment, size);
    if (!p && size) return ENOMEM;
    *memptr = p;
    return 0;
}

void *aligned_alloc(size_t alignment, size_t size) {
    note_alloc("aligned_alloc", size);
    return __libc_memalign(alignment, size);
}

void *memalign(size_t alignment, size_t size) {
    note_alloc("memalign", size);
    return __libc_memalign(alignment, size);
}

void *valloc(size_t size) {
    note_alloc("valloc", size);
    return __libc_valloc(size);
}

void *pvalloc(size_t size) {
    note_alloc("pvalloc", size);
    return __libc_pvalloc(size);
}

/* Print the recorded call stacks (outside the counting window). */
static void print_records(void) {
    int n = atomic_load(&g_nrecords), i, k;
    if (n > MAX_RECORDS) n = MAX_RECORDS;
    for (i = 0; i < n; i++) {
        const alloc_record *r = &g_records[i];
        print_message("    %s(%zu) from:\n", r->kind, r->size);
        for (k = 0; k < r->depth; k++) {
            Dl_info info;
            if (dladdr(r->frames[k], &info) && info.dli_fname) {
                const char *lib = strrchr(info.dli_fname, '/');
                if (info.dli_sname)
                    print_message("      %-24s %s\n", lib ? lib + 1 : info.dli_fname, info.dli_sname);
                else /* a static function: resolve with addr2line -e <file> <offset> */
                    print_message("      %-24s +0x%lx\n", lib ? lib + 1 : info.dli_fname,
                                  (unsigned long)((char *)r->frames[k] - (char *)info.dli_fbase));
            } else {
                print_message("      %p\n", r->frames[k]);
            }
        }
    }
}
#else
static void print_records(void) {}
#endif

/* ------------------------------------------------- counting allocator hook */

typedef struct hook_count {
    long allocs, frees;
    size_t bytes;
} hook_count;

static void *hook_alloc(size_t size, void *user_data) {
    hook_count *h = (hook_count *)user_data;
    h->allocs++;
    h->bytes += size;
    return malloc(size);
}

static void hook_free(void *ptr, void *user_data) {
    hook_count *h = (hook_count *)user_data;
    if (ptr) h->frees++;
    free(ptr);
}

/* -------------------------------------------------------- sanity checks */

/* The counter sees allocations made in the window, including those made
   inside a shared library (a LAPACKE high-level wrapper allocates its
   workspace): the tests below can fail. */
static void test_counter_sees_allocations(void **state) {
#if NOALLOC_INTERPOSE
    /* through volatile pointers so that the compiler cannot drop the pairs */
    void *(*volatile p_malloc)(size_t) = malloc;
    void *(*volatile p_calloc)(size_t, size_t) = calloc;
    void *(*volatile p_realloc)(void *, size_t) = realloc;
    void *(*volatile p_aligned)(size_t, size_t) = aligned_alloc;
    int (*volatile p_posix)(void **, size_t, size_t) = posix_memalign;
    void (*volatile p_free)(void *) = free;
    void *a, *b, *c, *d = NULL;
    double sym[9] = {2, 1, 0, 1, 2, 1, 0, 1, 2}, w[3];
    lapack_int info;
    (void)state;

    measure_reset();
    measure_on();
    a = p_malloc(16);
    b = p_calloc(4, 8);
    c = p_aligned(64, 128);
    assert_int_equal(p_posix(&d, 64, 256), 0);
    a = p_realloc(a, 4096);
    assert_non_null(a);
    p_free(a);
    p_free(b);
    p_free(c);
    p_free(d);
    p_free(NULL);
    measure_off();
    assert_int_equal(atomic_load(&g_allocs), 5);
    assert_int_equal(atomic_load(&g_frees), 4);

    measure_reset();
    measure_on();
    info = LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', 3, sym, 3, w);
    measure_off();
    assert_int_equal(info, 0);
    assert_true(fabs(w[0] - (2 - sqrt(2.0))) < 1e-12); /* eigenvalues of tridiag(1, 2, 1) */
    print_message("    LAPACKE_dsyev (high level) allocated %ld time(s): counted\n", atomic_load(&g_allocs));
    assert_true(atomic_load(&g_allocs) > 0);
    assert_int_equal(atomic_load(&g_allocs), atomic_load(&g_frees));
#else
    (void)state;
    skip();
#endif
}

/* rite_init takes exactly what rite_memory_query reports, through the hook,
   and rite_free gives it all back. */
static void test_init_takes_reported_memory(void **state) {
    int opt, prec;
    (void)state;
    for (opt = 0; opt < 2; opt++)
        for (prec = 0; prec < 2; prec++) {
            rite_desc d;
            rite_memory mem;
            rite_layer *layer = NULL;
            hook_count h = {0, 0, 0};
            memset(&mem, 0, sizeof mem);
            d = tu_desc(300, 260, 16, (rite_optimizer)opt, (rite_precision)prec);
            d.allocator.alloc = hook_alloc;
            d.allocator.release = hook_free;
            d.allocator.user_data = &h;
            assert_int_equal(rite_memory_query(&d, &mem), RITE_OK);
            assert_int_equal(rite_init(&layer, &d), RITE_OK);
            assert_true(h.allocs > 0);
            if (h.bytes != mem.total_bytes) {
                print_error("opt %d prec %d: init took %zu bytes, memory_query reports %zu\n", opt, prec, h.bytes,
                            mem.total_bytes);
                fail();
            }
            assert_true(mem.total_bytes >= mem.state_bytes + mem.scratch_bytes);
            rite_free(layer);
            assert_int_equal(h.allocs, h.frees);
        }
}

/* ------------------------------------------------------------ the steps */

enum { SM = 300, SN = 260, SR = 16 };

typedef struct big_layer {
    rite_desc desc;
    rite_config cfg;
    rite_layer *layer;
    hook_count hook;
    size_t es;
    int ld[4];
    rite_layout lay[4];
    int rows[4];
    size_t count[4];
    void *buf[4]; /* L, R, gL, gR */
} big_layer;

static void big_put(big_layer *b, int k, int i, int j, double v) {
    size_t idx = tu_index(b->lay[k], b->ld[k], i, j);
    if (b->es == sizeof(float))
        ((float *)b->buf[k])[idx] = (float)v;
    else
        ((double *)b->buf[k])[idx] = v;
}

static void big_fill(big_layer *b, int k, tu_rng *g, double scale) {
    int i, j;
    for (i = 0; i < b->rows[k]; i++)
        for (j = 0; j < SR; j++) big_put(b, k, i, j, scale * tu_normal(g));
}

static void big_setup(big_layer *b, rite_optimizer opt, rite_precision prec, rite_layout lL, rite_layout lR, int pad,
                      tu_rng *g) {
    int k;
    memset(b, 0, sizeof *b);
    b->cfg = rite_config_default(opt);
    b->cfg.weight_decay = 1e-3;
    if (opt == RITE_LORA_RITE) {
        b->cfg.escape = 1;
        b->cfg.balance = 1;
        b->cfg.cap = 1e-3; /* small enough to be active */
        b->cfg.relative_eps = 1;
        b->cfg.eps_root = 1e-4;
    }
    b->es = prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double);
    b->desc.m = SM;
    b->desc.n = SN;
    b->desc.r = SR;
    b->desc.optimizer = opt;
    b->desc.precision = prec;
    b->desc.layout_L = lL;
    b->desc.layout_R = lR;
    b->desc.config = &b->cfg;
    b->rows[0] = b->rows[2] = SM;
    b->rows[1] = b->rows[3] = SN;
    b->lay[0] = b->lay[2] = lL;
    b->lay[1] = b->lay[3] = lR;
    b->ld[0] = b->ld[2] = lL == RITE_RANK_LAST ? SR : SM;
    b->ld[1] = b->ld[3] = lR == RITE_RANK_LAST ? SR : SN;
    if (pad) {
        b->desc.ld_L = b->ld[0] += 3;
        b->desc.ld_gL = b->ld[2] += 5;
        b->desc.ld_R = b->ld[1] += 1;
        b->ld[3] = b->ld[1]; /* ld_gR = 0: as R's */
    }
    b->desc.allocator.alloc = hook_alloc;
    b->desc.allocator.release = hook_free;
    b->desc.allocator.user_data = &b->hook;
    for (k = 0; k < 4; k++) {
        b->count[k] = tu_storage_count(b->lay[k], b->ld[k], b->rows[k], SR);
        b->buf[k] = calloc(b->count[k], b->es);
        assert_non_null(b->buf[k]);
    }
    big_fill(b, 0, g, 1.0);
    big_fill(b, 1, g, 1.0);
    assert_int_equal(rite_init(&b->layer, &b->desc), RITE_OK);
}

static void big_grads(big_layer *b, tu_rng *g) {
    big_fill(b, 2, g, 1.0);
    big_fill(b, 3, g, 1.0);
}

static rite_status big_step(big_layer *b) {
    if (b->es == sizeof(float))
        return rite_step_f32(b->layer, (float *)b->buf[0], (float *)b->buf[1], (const float *)b->buf[2],
                             (const float *)b->buf[3]);
    return rite_step_f64(b->layer, (double *)b->buf[0], (double *)b->buf[1], (const double *)b->buf[2],
                         (const double *)b->buf[3]);
}

static rite_status big_prepare(big_layer *b, double *sumsq) {
    if (b->es == sizeof(float))
        return rite_prepare_f32(b->layer, (float *)b->buf[0], (float *)b->buf[1], (const float *)b->buf[2],
                                (const float *)b->buf[3], sumsq);
    return rite_prepare_f64(b->layer, (double *)b->buf[0], (double *)b->buf[1], (const double *)b->buf[2],
                            (const double *)b->buf[3], sumsq);
}

static void big_teardown(big_layer *b) {
    int k;
    rite_free(b->layer);
    assert_int_equal(b->hook.allocs, b->hook.frees);
    for (k = 0; k < 4; k++) free(b->buf[k]);
}

/* Runs `call` inside the counting window and checks its status. */
#define MEASURED(want, call)                      \
    do {                                          \
        rite_status st_;                          \
        measure_on();                             \
        st_ = (call);                             \
        measure_off();                            \
        assert_int_equal(st_, want);              \
    } while (0)

static void run_case(rite_optimizer opt, rite_precision prec, rite_layout lL, rite_layout lR, int pad) {
    big_layer a, b;
    tu_rng g = {2024};
    double sa = 0, sb = 0;
    long hook_allocs, hook_frees;
    long warm_allocs, warm_frees;
    size_t state_size;
    unsigned char *state_buf;
    rite_memory mem;
    rite_config cfg;
    long long count = 0;
    int s;
    char name[96];
    snprintf(name, sizeof name, "%s %s L:%s R:%s%s", opt == RITE_ADAMW ? "adamw" : "rite",
             prec == RITE_FLOAT32 ? "f32" : "f64", lL == RITE_RANK_LAST ? "last" : "first",
             lR == RITE_RANK_LAST ? "last" : "first", pad ? " padded" : "");

    big_setup(&a, opt, prec, lL, lR, pad, &g);
    big_setup(&b, opt, prec, lL, lR, pad, &g);
    state_size = rite_state_size(a.layer);
    state_buf = (unsigned char *)malloc(state_size);
    assert_non_null(state_buf);

    /* warm-up: one step of each layer, reported only */
    measure_reset();
    big_grads(&a, &g);
    big_grads(&b, &g);
    MEASURED(RITE_OK, big_step(&a));
    MEASURED(RITE_OK, big_step(&b));
    warm_allocs = atomic_load(&g_allocs);
    warm_frees = atomic_load(&g_frees);
    if (warm_allocs || warm_frees) {
        print_message("    [%s] warm-up steps: %ld allocation(s), %ld free(s)\n", name, warm_allocs, warm_frees);
        print_records();
    }

    hook_allocs = a.hook.allocs + b.hook.allocs;
    hook_frees = a.hook.frees + b.hook.frees;
    measure_reset();

    /* plain steps */
    for (s = 0; s < 3; s++) {
        big_grads(&a, &g);
        MEASURED(RITE_OK, big_step(&a));
    }
    /* two-phase steps, one layer */
    for (s = 0; s < 2; s++) {
        big_grads(&a, &g);
        MEASURED(RITE_OK, big_prepare(&a, &sa));
        MEASURED(RITE_OK, rite_apply(a.layer, sa));
    }
    /* two-phase step, two layers clipped together */
    big_grads(&a, &g);
    big_grads(&b, &g);
    MEASURED(RITE_OK, big_prepare(&a, &sa));
    MEASURED(RITE_OK, big_prepare(&b, &sb));
    MEASURED(RITE_OK, rite_apply(a.layer, sa + sb));
    MEASURED(RITE_OK, rite_apply(b.layer, sa + sb));
    /* error returns */
    big_grads(&a, &g);
    big_put(&a, 2, SM / 2, SR / 2, NAN);
    MEASURED(RITE_ERR_NONFINITE_GRADIENT, big_step(&a));
    MEASURED(RITE_ERR_NONFINITE_GRADIENT, big_prepare(&a, &sa));
    MEASURED(RITE_ERR_NOT_PREPARED, rite_apply(a.layer, 1.0));
    MEASURED(RITE_ERR_BUFFER_SIZE, rite_state_copy(a.layer, state_buf, state_size - 1));
    MEASURED(RITE_ERR_LR, rite_set_lr(a.layer, -1.0));
    /* accessors */
    MEASURED(RITE_OK, rite_state_copy(a.layer, state_buf, state_size));
    MEASURED(RITE_OK, rite_set_lr(a.layer, 2e-3));
    MEASURED(RITE_OK, rite_desc_check(&a.desc));
    MEASURED(RITE_OK, rite_memory_query(&a.desc, &mem));
    measure_on();
    cfg = rite_get_config(a.layer);
    count = rite_step_count(a.layer);
    measure_off();
    assert_true(cfg.lr == 2e-3);
    assert_true(count == 7);
    MEASURED(RITE_OK, rite_set_config(a.layer, &cfg));
    /* the first-step path again, after a reset */
    measure_on();
    rite_reset(a.layer);
    measure_off();
    big_grads(&a, &g);
    MEASURED(RITE_OK, big_step(&a));
    MEASURED(RITE_OK, big_step(&a));

    if (atomic_load(&g_blas_allocs))
        print_message("    [%s] the BLAS allocated %ld time(s) inside its own routines (not counted)\n", name,
                      atomic_load(&g_blas_allocs));
    if (atomic_load(&g_allocs) || atomic_load(&g_frees)) {
        print_error("[%s] steps allocated %ld time(s) and freed %ld time(s):\n", name, atomic_load(&g_allocs),
                    atomic_load(&g_frees));
        print_records();
        fail();
    }
    assert_int_equal(a.hook.allocs + b.hook.allocs, hook_allocs);
    assert_int_equal(a.hook.frees + b.hook.frees, hook_frees);

    free(state_buf);
    big_teardown(&a);
    big_teardown(&b);
}

/* One optimizer in one precision, in both layouts (the second padded). */
typedef struct step_case {
    rite_optimizer opt;
    rite_precision prec;
} step_case;

static void run_step_case(void **state) {
    const step_case *c = (const step_case *)*state;
    run_case(c->opt, c->prec, RITE_RANK_LAST, RITE_RANK_FIRST, 0);
    run_case(c->opt, c->prec, RITE_RANK_FIRST, RITE_RANK_LAST, 1);
}

/* ------------------------------------------------------------ the model */

/* A model of three layers, one of them 1100 x 16 (m r^2 above the size
   where a threaded OpenBLAS gemm allocates: ctest runs this test with
   OPENBLAS_NUM_THREADS=1), stepped on two threads of its own. */
enum { NL = 3 };
static const int model_shape[NL][3] = {{1100, 64, 16}, {300, 260, 16}, {96, 200, 8}};

typedef struct big_model {
    rite_model *model;
    rite_precision prec;
    size_t es;
    void *buf[4][NL];   /* A, B, gA, gB of each layer */
    size_t count[4][NL];
    hook_count hook;
} big_model;

static void model_fill(big_model *b, int k, tu_rng *g, double scale) {
    int i;
    size_t e;
    for (i = 0; i < NL; i++)
        for (e = 0; e < b->count[k][i]; e++) {
            double v = scale * tu_normal(g);
            if (b->es == sizeof(float)) ((float *)b->buf[k][i])[e] = (float)v;
            else ((double *)b->buf[k][i])[e] = v;
        }
}

static void model_setup(big_model *b, rite_optimizer opt, rite_precision prec, tu_rng *g) {
    rite_lora mods[NL];
    rite_model_desc md;
    rite_memory mem;
    char detail[256];
    int i, k;
    memset(b, 0, sizeof *b);
    memset(&md, 0, sizeof md);
    b->prec = prec;
    b->es = prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double);
    for (i = 0; i < NL; i++) {
        mods[i] = rite_lora_peft(model_shape[i][0], model_shape[i][1], model_shape[i][2]);
        b->count[0][i] = b->count[2][i] = (size_t)model_shape[i][0] * (size_t)model_shape[i][2];
        b->count[1][i] = b->count[3][i] = (size_t)model_shape[i][1] * (size_t)model_shape[i][2];
        for (k = 0; k < 4; k++) {
            b->buf[k][i] = calloc(b->count[k][i], b->es);
            assert_non_null(b->buf[k][i]);
        }
    }
    md.layers = mods;
    md.n_layers = NL;
    md.optimizer = opt;
    md.precision = prec;
    md.threads = 2;
    md.allocator.alloc = hook_alloc;
    md.allocator.release = hook_free;
    md.allocator.user_data = &b->hook;
    model_fill(b, 0, g, 1.0);
    model_fill(b, 1, g, 1.0);
    assert_int_equal(rite_model_memory_query(&md, &mem), RITE_OK);
    assert_int_equal(rite_model_init(&b->model, &md, detail, sizeof detail), RITE_OK);
    assert_true(b->hook.bytes == mem.total_bytes);
}

/* one model step (prepare: its first phase only), with the buffers as arrays of their type */
static rite_status model_call(big_model *b, double *sumsq) {
    float *f[4][NL];
    double *d[4][NL];
    int i, k;
    for (k = 0; k < 4; k++)
        for (i = 0; i < NL; i++) {
            f[k][i] = (float *)b->buf[k][i];
            d[k][i] = (double *)b->buf[k][i];
        }
    if (b->prec == RITE_FLOAT32)
        return sumsq ? rite_model_prepare_f32(b->model, f[0], f[1], f[2], f[3], sumsq)
                     : rite_model_step_f32(b->model, f[0], f[1], f[2], f[3]);
    return sumsq ? rite_model_prepare_f64(b->model, d[0], d[1], d[2], d[3], sumsq)
                 : rite_model_step_f64(b->model, d[0], d[1], d[2], d[3]);
}

static void model_case(rite_optimizer opt, rite_precision prec) {
    big_model b;
    tu_rng g = {7};
    rite_diagnostics d;
    double ss = 0;
    long hook_allocs, hook_frees;
    int s, i, k;
    model_setup(&b, opt, prec, &g);
    model_fill(&b, 2, &g, 1.0);
    model_fill(&b, 3, &g, 1.0);
    measure_reset();
    MEASURED(RITE_OK, model_call(&b, NULL));   /* warm-up: printed below if it allocated */
    if (atomic_load(&g_allocs)) print_message("    [model] the warm-up step allocated %ld time(s)\n", atomic_load(&g_allocs));
    measure_reset();
    hook_allocs = b.hook.allocs;
    hook_frees = b.hook.frees;
    for (s = 0; s < 3; s++) {
        model_fill(&b, 2, &g, 1.0);
        MEASURED(RITE_OK, model_call(&b, NULL));
    }
    MEASURED(RITE_OK, model_call(&b, &ss));
    MEASURED(RITE_OK, rite_model_apply(b.model, 2 * ss));
    MEASURED(RITE_OK, rite_model_set_lr(b.model, 5e-4));
    MEASURED(RITE_OK, rite_model_diagnostics(b.model, &d));
    if (b.es == sizeof(float)) ((float *)b.buf[3][1])[5] = NAN;
    else ((double *)b.buf[3][1])[5] = NAN;
    MEASURED(RITE_ERR_NONFINITE_GRADIENT, model_call(&b, NULL));
    if (atomic_load(&g_blas_allocs))
        print_message("    [model] the BLAS allocated %ld time(s) inside its own routines (not counted)\n",
                      atomic_load(&g_blas_allocs));
    if (atomic_load(&g_allocs) || atomic_load(&g_frees)) {
        print_error("[model %s %s] steps allocated %ld time(s) and freed %ld time(s):\n",
                    opt == RITE_ADAMW ? "adamw" : "rite", prec == RITE_FLOAT32 ? "f32" : "f64",
                    atomic_load(&g_allocs), atomic_load(&g_frees));
        print_records();
        fail();
    }
    assert_int_equal(b.hook.allocs, hook_allocs);
    assert_int_equal(b.hook.frees, hook_frees);
    assert_true(d.step == 5);
    rite_model_free(b.model);
    assert_int_equal(b.hook.allocs, b.hook.frees);
    for (k = 0; k < 4; k++)
        for (i = 0; i < NL; i++) free(b.buf[k][i]);
}

static void test_model_steps_allocate_nothing(void **state) {
    (void)state;
    model_case(RITE_LORA_RITE, RITE_FLOAT32);
    model_case(RITE_LORA_RITE, RITE_FLOAT64);
    model_case(RITE_ADAMW, RITE_FLOAT32);
}

/* a test's name, and the optimizer and precision its steps run with */
#define STEP_TEST(name, opt, prec) {"test_" #name, run_step_case, NULL, NULL, &(step_case){opt, prec}}

int main(void) {
#if NOALLOC_INTERPOSE
    void *frames[2];
#endif
    const struct CMUnitTest tests[] = {
        /* the steps come first, so that the first warm-up step is the
           first use of BLAS and LAPACK in the process */
        STEP_TEST(rite_f32, RITE_LORA_RITE, RITE_FLOAT32),
        STEP_TEST(rite_f64, RITE_LORA_RITE, RITE_FLOAT64),
        STEP_TEST(adamw_f32, RITE_ADAMW, RITE_FLOAT32),
        STEP_TEST(adamw_f64, RITE_ADAMW, RITE_FLOAT64),
        cmocka_unit_test(test_model_steps_allocate_nothing),
        cmocka_unit_test(test_init_takes_reported_memory),
        cmocka_unit_test(test_counter_sees_allocations),
    };
#if NOALLOC_INTERPOSE
    /* backtrace() loads its unwinder (and allocates) on first use */
    (void)backtrace(frames, 2);
#endif
    return cmocka_run_group_tests(tests, NULL, NULL);
}
