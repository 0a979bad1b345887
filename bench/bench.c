/* bench.c - speed and memory of lora_rite's LoRA-RITE and AdamW steps.

   Single precision throughout. In one run it measures:
     - the machine: OpenBLAS sgemm on a 1024^3 product (GFLOP/s, the peak the
       RITE figures are compared with), sgemm on the skinny products of a step
       (4096 x r times r x r, for each r of the run) and a large memcpy (GB/s),
       at 1 and 2 threads. It says which OpenBLAS kernels run, with a note when
       a DYNAMIC_ARCH OpenBLAS fell back to generic SSE-level kernels (every
       BLAS figure is then that much lower);
     - one rite_step_f32 per layer for LoRA-RITE and for the library's AdamW on
       the same buffers, over LLM-like shapes, a sweep of m + n at r = 16 and a
       sweep of r at m = n = 4096, with BLAS on 1 and on 2 threads; each
       LoRA-RITE step is also set against a lower bound made of the memcpy
       bandwidth and the skinny sgemm rate (see "lower bound of a step");
     - a plain one-pass AdamW loop written here, against the library's AdamW;
     - a whole model's worth of LoRA layers (18 Gemma-2B-like blocks, r = 16)
       stepped with the layer API's two-phase global clipping, serially, from
       two pthreads on disjoint layer sets, and serially with 2 BLAS threads;
       and with the model API (rite_model_step_f32 over every layer) with
       threads = 1 and threads = 2, with its memory (rite_model_memory_query);
     - the optimizer state of each layer (rite_memory_query).
   Times are per step; each figure is the median over repeats, with the
   spread (min..max, quartiles in the CSV). Ratios are taken repeat by repeat
   from measurements made next to each other, so machine noise hits both.

   usage: bench [--quick] [--reps N] [--threads 1|2|both] [--out DIR]
                [--layout last|peft] [--shape M,N,R] [--no-model | --model-only] [--svg]
     --quick    few shapes and repeats, a small model: a smoke run of seconds
     --reps N   repeats per measurement (default 11, quick 3)
     --threads  BLAS thread counts to measure (default both); the model's
                1-thread step is always measured, as the speed-ups' baseline
     --out DIR  where bench.csv and the scaling picture go (default .)
     --layout   factor storage: rank-last for both (default), or PEFT's
                (L = lora_A^T rank-first, R = lora_B rank-last)
     --shape    time this one layer shape only (for profiling); no model
     --no-model skip the whole-model part
     --model-only  the whole-model part only (no machine figures, no layer shapes)
     --svg      draw the picture as SVG even when gnuplot is available

   Files written to DIR: bench.csv (every measurement, long format),
   bench_scaling.png (gnuplot) or bench_scaling.svg (drawn here), and the
   gnuplot script and data it is made from. */
#define _POSIX_C_SOURCE 200809L

#include "lora_rite.h"
#include "test_util.h"

#include <cblas.h>
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* ---- small utilities ------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xmalloc(size_t bytes, const char *what)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "bench: out of memory (%s, %zu bytes)\n", what, bytes);
        exit(1);
    }
    return p;
}

static void check(rite_status st, const char *where)
{
    if (st != RITE_OK) {
        fprintf(stderr, "bench: %s: %s\n", where, rite_status_string(st));
        exit(1);
    }
}

/* BLAS threads: OpenBLAS takes the count at run time; another CBLAS keeps
   whatever its environment says. */
static void blas_threads(int n)
{
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}

/* After OpenBLAS ran on 2 threads its worker keeps spinning for a while
   (OPENBLAS_THREAD_TIMEOUT, about 0.1 s here) and takes a core; wait that out
   before timing anything else. */
static void blas_settle(void)
{
    struct timespec ts = {0, 250000000L};
    nanosleep(&ts, NULL);
}

#ifdef OPENBLAS_VERSION
/* equal ignoring case (ASCII) */
static int same_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return 0;
    return *a == *b;
}

/* The core names a DYNAMIC_ARCH OpenBLAS falls back to on a CPU it does not
   know (a CPU newer than the library, or a hypervisor that hides features):
   generic SSE-level kernels, several times slower than the AVX2 ones. */
static int generic_core(const char *name)
{
    static const char *const generic[] = {"Prescott", "Katmai", "Coppermine", "Northwood", "Banias",
                                          "Core2", "Penryn", "Dunnington", "Atom", "Nano", "Barcelona",
                                          "Opteron", "Opteron_SSE3", "Athlon", "generic", "unknown"};
    size_t i;
    for (i = 0; i < sizeof generic / sizeof *generic; i++)
        if (same_nocase(name, generic[i])) return 1;
    return 0;
}

/* 1 if this CPU has AVX2, 0 if not, -1 if this compiler cannot tell */
static int cpu_avx2(void)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    return __builtin_cpu_supports("avx2") != 0;
#else
    return -1;
#endif
}

/* Which kernels OpenBLAS runs, and a plain note when they are a generic
   fallback: the sgemm peak and every BLAS-bound figure of the run are then
   those of the fallback kernels, not of this CPU. */
static void print_core_note(void)
{
    const char *name = openblas_get_corename(), *config = openblas_get_config();
    int dynamic = config && strstr(config, "DYNAMIC_ARCH") != NULL;
    if (!name) name = "unknown";
    if (!generic_core(name)) {
        printf("OpenBLAS kernels: %s (%s)\n", name,
               dynamic ? "detected; OPENBLAS_CORETYPE overrides" : "fixed when OpenBLAS was built");
    } else if (dynamic && cpu_avx2() != 0) {
        printf("note: OpenBLAS runs its generic %s kernels here (SSE-level, several times below this CPU's AVX2 "
               "peak); OPENBLAS_CORETYPE=Haswell forces its AVX2 kernels. Figures below are for the %s kernels.\n",
               name, name);
    } else {
        printf("note: OpenBLAS runs its generic %s kernels here (SSE-level). Figures below are for the %s "
               "kernels.\n",
               name, name);
    }
}
#endif

/* the machine's load average (Linux), to tell how quiet the machine was */
static void print_load(const char *when)
{
    char buf[128];
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return;
    if (fgets(buf, sizeof buf, f)) printf("load average %s: %s", when, buf);
    fclose(f);
}

/* A pool of standard normal numbers; buffers are filled from it at random
   offsets (generating tens of millions of fresh normals would take longer
   than the benchmark itself). */
#define POOL_SIZE (1u << 21)
static float *g_pool;
static tu_rng g_rng = {20250101u};

static void fill_normal(float *x, size_t count, float scale)
{
    size_t i = 0;
    while (i < count) {
        size_t off = (size_t)(tu_next(&g_rng) % POOL_SIZE), run = POOL_SIZE - off, j;
        if (run > count - i) run = count - i;
        for (j = 0; j < run; j++) x[i + j] = scale * g_pool[off + j];
        i += run;
    }
}

/* ---- statistics ------------------------------------------------------------ */

typedef struct stats {
    double med, min, p25, p75, max;
    int n;
} stats;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(const double *sorted, int n, double q)
{
    double pos = q * (n - 1);
    int i = (int)pos;
    if (i >= n - 1) return sorted[n - 1];
    return sorted[i] + (pos - i) * (sorted[i + 1] - sorted[i]);
}

static stats summarize(const double *x, int n)
{
    stats s;
    double *y = (double *)xmalloc((size_t)n * sizeof *y, "stats");
    memcpy(y, x, (size_t)n * sizeof *y);
    qsort(y, (size_t)n, sizeof *y, cmp_double);
    s.n = n;
    s.min = y[0];
    s.max = y[n - 1];
    s.med = quantile(y, n, 0.5);
    s.p25 = quantile(y, n, 0.25);
    s.p75 = quantile(y, n, 0.75);
    free(y);
    return s;
}

static stats scale_stats(stats s, double f)
{
    s.med *= f; s.min *= f; s.p25 *= f; s.p75 *= f; s.max *= f;
    return s;
}

/* ---- options ---------------------------------------------------------------- */

typedef struct options {
    int quick;
    int reps;
    int thr[2];          /* thr[0]: measure 1 thread; thr[1]: measure 2 */
    const char *out;
    int peft;
    int shape[3];        /* --shape, 0 = not given */
    int model;
    int model_only;      /* --model-only: the whole model and nothing else */
    int svg;
    double batch_s;      /* a timed batch of steps lasts at least this long */
} options;

static void usage(void)
{
    fprintf(stderr,
            "usage: bench [--quick] [--reps N] [--threads 1|2|both] [--out DIR]\n"
            "             [--layout last|peft] [--shape M,N,R] [--no-model | --model-only] [--svg]\n");
    exit(2);
}

static options parse(int argc, char **argv)
{
    options o;
    int i, reps = 0;
    memset(&o, 0, sizeof o);
    o.thr[0] = o.thr[1] = 1;
    o.out = ".";
    o.model = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quick")) {
            o.quick = 1;
        } else if (!strcmp(a, "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1) usage();
        } else if (!strcmp(a, "--threads") && i + 1 < argc) {
            const char *t = argv[++i];
            o.thr[0] = !strcmp(t, "1") || !strcmp(t, "both");
            o.thr[1] = !strcmp(t, "2") || !strcmp(t, "both");
            if (!o.thr[0] && !o.thr[1]) usage();
        } else if (!strcmp(a, "--out") && i + 1 < argc) {
            o.out = argv[++i];
        } else if (!strcmp(a, "--layout") && i + 1 < argc) {
            const char *t = argv[++i];
            if (!strcmp(t, "peft")) o.peft = 1;
            else if (strcmp(t, "last")) usage();
        } else if (!strcmp(a, "--shape") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d,%d", &o.shape[0], &o.shape[1], &o.shape[2]) != 3 ||
                o.shape[0] < 1 || o.shape[1] < 1 || o.shape[2] < 1)
                usage();
            o.model = 0;
        } else if (!strcmp(a, "--no-model")) {
            o.model = 0;
        } else if (!strcmp(a, "--model-only")) {
            o.model_only = 1;
        } else if (!strcmp(a, "--svg")) {
            o.svg = 1;
        } else {
            usage();
        }
    }
    if (o.model_only && (!o.model || o.shape[0])) usage();   /* --model-only with --no-model or --shape */
    o.reps = reps ? reps : o.quick ? 3 : 11;
    o.batch_s = o.quick ? 0.004 : 0.04;
    return o;
}

/* ---- the machine: sgemm peak and memory copy ---------------------------------- */

#define GEMM_N 1024

/* GFLOP/s of C = A B, all GEMM_N x GEMM_N, over reps products */
static stats bench_sgemm(int threads, int reps)
{
    size_t nn = (size_t)GEMM_N * GEMM_N;
    float *A = (float *)xmalloc(3 * nn * sizeof(float), "sgemm"), *B = A + nn, *C = B + nn;
    double *g = (double *)xmalloc((size_t)reps * sizeof *g, "sgemm");
    double flops = 2.0 * GEMM_N * GEMM_N * (double)GEMM_N;
    int i;
    stats s;
    fill_normal(A, 2 * nn, 1.0f);
    memset(C, 0, nn * sizeof(float));
    blas_threads(threads);
    for (i = -1; i < reps; i++) {   /* i = -1: warm-up */
        double t0 = now(), t;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, GEMM_N, GEMM_N, GEMM_N, 1.0f, A, GEMM_N,
                    B, GEMM_N, 0.0f, C, GEMM_N);
        t = now() - t0;
        if (i >= 0) g[i] = flops / t * 1e-9;
    }
    s = summarize(g, reps);
    free(g);
    free(A);
    return s;
}

typedef struct copy_job {
    char *dst;
    const char *src;
    size_t bytes;
    pthread_barrier_t *bar;
    double t;
} copy_job;

static void *copy_worker(void *arg)
{
    copy_job *j = (copy_job *)arg;
    double t0;
    pthread_barrier_wait(j->bar);
    t0 = now();
    memcpy(j->dst, j->src, j->bytes);
    j->t = now() - t0;
    pthread_barrier_wait(j->bar);
    return NULL;
}

/* GB/s of a memcpy of `bytes`, counting read + write (2 bytes moved per byte
   copied); with 2 threads each copies one half. */
static stats bench_memcpy(size_t bytes, int threads, int reps)
{
    char *src = (char *)xmalloc(bytes, "memcpy"), *dst = (char *)xmalloc(bytes, "memcpy");
    double *g = (double *)xmalloc((size_t)reps * sizeof *g, "memcpy");
    int i, k;
    stats s;
    memset(src, 1, bytes);
    memset(dst, 2, bytes);   /* fault the pages in before timing */
    for (i = -1; i < reps; i++) {
        double t;
        if (threads == 1) {
            double t0 = now();
            memcpy(dst, src, bytes);
            t = now() - t0;
        } else {
            pthread_t th[2];
            copy_job job[2];
            pthread_barrier_t bar;
            double t0;
            pthread_barrier_init(&bar, NULL, 3);
            for (k = 0; k < 2; k++) {
                job[k].dst = dst + k * (bytes / 2);
                job[k].src = src + k * (bytes / 2);
                job[k].bytes = bytes / 2;
                job[k].bar = &bar;
                pthread_create(&th[k], NULL, copy_worker, &job[k]);
            }
            pthread_barrier_wait(&bar);
            t0 = now();
            pthread_barrier_wait(&bar);
            t = now() - t0;
            for (k = 0; k < 2; k++) pthread_join(th[k], NULL);
            pthread_barrier_destroy(&bar);
        }
        if (i >= 0) g[i] = 2.0 * (double)bytes / t * 1e-9;
    }
    s = summarize(g, reps);
    free(g);
    free(src);
    free(dst);
    return s;
}

/* ---- one layer ----------------------------------------------------------------- */

typedef struct shape {
    int m, n, r;
} shape;

/* the factors and gradients of one layer, packed (either layout) */
typedef struct bufs {
    float *L, *R, *gL, *gR;
} bufs;

static void bufs_alloc(bufs *b, int m, int n, int r)
{
    size_t mr = (size_t)m * r, nr = (size_t)n * r;
    b->L = (float *)xmalloc(2 * (mr + nr) * sizeof(float), "layer buffers");
    b->R = b->L + mr;
    b->gL = b->R + nr;
    b->gR = b->gL + mr;
    /* factors ~ N(0, 0.02^2), gradients ~ N(0, (1e-4)^2): far from the skip
       and clip thresholds, so every step does the full work */
    fill_normal(b->L, mr + nr, 0.02f);
    fill_normal(b->gL, mr + nr, 1e-4f);
}

static void bufs_free(bufs *b)
{
    free(b->L);
}

#define BENCH_LR 1e-5   /* small: the factors stay sane over hundreds of steps */

static rite_layer *make_layer(int m, int n, int r, rite_optimizer opt, int peft, rite_memory *mem)
{
    rite_config cfg = rite_config_default(opt);
    rite_desc d = tu_desc(m, n, r, opt, RITE_FLOAT32);
    rite_layer *l;
    cfg.lr = BENCH_LR;
    d.layout_L = peft ? RITE_RANK_FIRST : RITE_RANK_LAST;
    d.layout_R = RITE_RANK_LAST;
    d.config = &cfg;
    if (mem) check(rite_memory_query(&d, mem), "rite_memory_query");
    check(rite_init(&l, &d), "rite_init");
    return l;
}

/* seconds per step over a batch of `steps` steps */
static double time_steps(rite_layer *l, bufs *b, int steps)
{
    double t0 = now();
    int i;
    for (i = 0; i < steps; i++) check(rite_step_f32(l, b->L, b->R, b->gL, b->gR), "rite_step_f32");
    return (now() - t0) / steps;
}

/* The plain AdamW written as one loop: m, v, bias correction, decoupled weight
   decay, the same arithmetic as the library's, no checks. It is compiled with
   the same flags as the library's element loops (both are in this file). */
static void plain_adamw(float *restrict x, const float *restrict g, float *restrict m,
                        float *restrict v, size_t count, const float *c)
{
    float b1 = c[0], b2 = c[1], bc1 = c[2], rbc2 = c[3], lr = c[4], eps = c[5], wd = c[6];
    size_t i;
    for (i = 0; i < count; i++) {
        float mv = b1 * m[i] + (1 - b1) * g[i];
        float vv = b2 * v[i] + (1 - b2) * g[i] * g[i];
        m[i] = mv;
        v[i] = vv;
        x[i] -= lr * ((mv / bc1) / (sqrtf(vv) * rbc2 + eps) + wd * x[i]);
    }
}

typedef struct plain_state {
    float *mL, *vL, *mR, *vR;
    long long t;
} plain_state;

static double time_plain(plain_state *p, bufs *b, size_t mr, size_t nr, int steps)
{
    double t0 = now();
    int i;
    for (i = 0; i < steps; i++) {
        float c[7];
        double t = (double)(++p->t);
        c[0] = 0.9f;
        c[1] = 0.999f;
        c[2] = (float)(1.0 - pow(0.9, t));
        c[3] = (float)(1.0 / sqrt(1.0 - pow(0.999, t)));
        c[4] = (float)BENCH_LR;
        c[5] = 1e-8f;
        c[6] = 0.0f;
        plain_adamw(b->L, b->gL, p->mL, p->vL, mr, c);
        plain_adamw(b->R, b->gR, p->mR, p->vR, nr, c);
    }
    return (now() - t0) / steps;
}

static int steps_for(double t_step, double batch_s)
{
    double s = ceil(batch_s / (t_step > 1e-9 ? t_step : 1e-9));
    return s < 1 ? 1 : s > 20000 ? 20000 : (int)s;
}

typedef struct layer_result {
    int done;
    stats rite, adamw, ratio;        /* seconds per step; ratio = RITE / AdamW per repeat */
    int has_plain;
    stats plain, plain_ratio;        /* plain loop; library AdamW / plain loop per repeat */
    int steps_rite, steps_adamw;
} layer_result;

/* Times LoRA-RITE and AdamW (and the plain loop) on one shape, BLAS on
   `threads` threads. Batches of the optimizers alternate, repeat by repeat. */
static layer_result bench_layer(shape s, int threads, const options *o, int with_plain)
{
    layer_result res;
    bufs b;
    plain_state p;
    rite_layer *lr, *la;
    size_t mr = (size_t)s.m * s.r, nr = (size_t)s.n * s.r;
    double *tr = (double *)xmalloc(5 * (size_t)o->reps * sizeof(double), "times");
    double *ta = tr + o->reps, *tp = ta + o->reps, *q1 = tp + o->reps, *q2 = q1 + o->reps;
    double w1, w2, w3 = 1;
    int i, sp = 1;

    memset(&res, 0, sizeof res);
    blas_threads(threads);
    bufs_alloc(&b, s.m, s.n, s.r);
    lr = make_layer(s.m, s.n, s.r, RITE_LORA_RITE, o->peft, NULL);
    la = make_layer(s.m, s.n, s.r, RITE_ADAMW, o->peft, NULL);
    memset(&p, 0, sizeof p);
    if (with_plain) {
        p.mL = (float *)calloc(2 * (mr + nr), sizeof(float));
        if (!p.mL) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
        p.vL = p.mL + mr;
        p.mR = p.vL + mr;
        p.vR = p.mR + nr;
    }
    /* warm-up (the first LoRA-RITE step takes a shorter path) and calibration */
    time_steps(lr, &b, 1);
    time_steps(la, &b, 1);
    w1 = time_steps(lr, &b, 2);
    w2 = time_steps(la, &b, 2);
    if (with_plain) {
        time_plain(&p, &b, mr, nr, 1);
        w3 = time_plain(&p, &b, mr, nr, 2);
        sp = steps_for(w3, o->batch_s);
    }
    res.steps_rite = steps_for(w1, o->batch_s);
    res.steps_adamw = steps_for(w2, o->batch_s);
    for (i = 0; i < o->reps; i++) {
        if (i % 2 == 0) {
            tr[i] = time_steps(lr, &b, res.steps_rite);
            ta[i] = time_steps(la, &b, res.steps_adamw);
            if (with_plain) tp[i] = time_plain(&p, &b, mr, nr, sp);
        } else {
            if (with_plain) tp[i] = time_plain(&p, &b, mr, nr, sp);
            ta[i] = time_steps(la, &b, res.steps_adamw);
            tr[i] = time_steps(lr, &b, res.steps_rite);
        }
        q1[i] = tr[i] / ta[i];
        if (with_plain) q2[i] = ta[i] / tp[i];
    }
    res.rite = summarize(tr, o->reps);
    res.adamw = summarize(ta, o->reps);
    res.ratio = summarize(q1, o->reps);
    if (with_plain) {
        res.has_plain = 1;
        res.plain = summarize(tp, o->reps);
        res.plain_ratio = summarize(q2, o->reps);
    }
    res.done = 1;
    free(tr);
    free(p.mL);
    rite_free(lr);
    rite_free(la);
    bufs_free(&b);
    return res;
}

/* ---- lower bound of a step -------------------------------------------------------- */

/* What a LoRA-RITE step of shape (m, n, r) cannot go below, from two figures
   measured in the same run at the same BLAS thread count:
     bytes: per factor X (k x r floats; k = m for L, k = n for R) the step
       reads X, its gradient G and its moment M and writes X and M: 5 k r
       floats, 20 (m + n) r bytes for the two factors, at the memcpy
       bandwidth. Both count every byte read and every byte written (the
       memcpy figure moves 2 B for a copy of B bytes).
     flops: the nominal 8 (m + n) r^2 flops of the GFLOP/s column, at the rate
       sgemm reaches on C (4096 x r) = A (4096 x r) B (r x r), column-major:
       the k x r by r x r products the step is made of.
   bound = max(bytes / memcpy bandwidth, flops / skinny sgemm rate). It counts
   nothing else: no r x r algebra, no checks, no call overheads, no second
   pass over the factors, and the two parts may overlap fully. It is not a
   hard limit either: the memcpy runs far out of cache, and a layer whose
   buffers stay in cache from step to step can move its bytes faster. */

#define SKINNY_K 4096

/* seconds per call of C = A B, A SKINNY_K x r, B r x r, over `calls` calls */
static double time_skinny(const float *A, const float *B, float *C, int r, int calls)
{
    double t0 = now();
    int i;
    for (i = 0; i < calls; i++)
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, SKINNY_K, r, r, 1.0f, A, SKINNY_K, B, r, 0.0f, C,
                    SKINNY_K);
    return (now() - t0) / calls;
}

/* GFLOP/s of the skinny product; one call takes microseconds, so each repeat
   times a batch of calls lasting about batch_s, as the layer steps do */
static stats bench_sgemm_skinny(int r, int threads, const options *o)
{
    size_t kr = (size_t)SKINNY_K * r, rr = (size_t)r * r;
    float *A = (float *)xmalloc((2 * kr + rr) * sizeof(float), "skinny sgemm"), *B = A + kr, *C = B + rr;
    double *g = (double *)xmalloc((size_t)o->reps * sizeof *g, "skinny sgemm");
    double flops = 2.0 * SKINNY_K * (double)r * r;
    int i, calls;
    stats s;
    fill_normal(A, kr + rr, 1.0f);
    memset(C, 0, kr * sizeof(float));
    blas_threads(threads);
    time_skinny(A, B, C, r, 1);   /* warm-up, then calibration */
    calls = steps_for(time_skinny(A, B, C, r, 2), o->batch_s);
    for (i = 0; i < o->reps; i++) g[i] = flops / time_skinny(A, B, C, r, calls) * 1e-9;
    s = summarize(g, o->reps);
    free(g);
    free(A);
    return s;
}

/* the skinny rates of the run, measured once per (r, BLAS threads) */
#define SKINNY_MAX 64

typedef struct skinny_cache {
    int n, r[SKINNY_MAX], threads[SKINNY_MAX];
    stats gf[SKINNY_MAX];
} skinny_cache;

/* the rate for (r, threads): measured on the first request, then kept */
static stats skinny_rate(skinny_cache *c, int r, int threads, const options *o)
{
    int i;
    for (i = 0; i < c->n; i++)
        if (c->r[i] == r && c->threads[i] == threads) return c->gf[i];
    if (c->n == SKINNY_MAX) {
        fprintf(stderr, "bench: too many skinny sgemm shapes\n");
        exit(1);
    }
    c->r[c->n] = r;
    c->threads[c->n] = threads;
    c->gf[c->n] = bench_sgemm_skinny(r, threads, o);
    return c->gf[c->n++];
}

typedef struct step_bound {
    double bytes_s, flops_s, s;   /* seconds: bytes at memcpy speed, flops at the skinny rate, the max */
} step_bound;

/* the bound of a shape, from the memcpy GB/s (read + write) and the skinny
   sgemm GFLOP/s at the step's thread count */
static step_bound bound_of(shape s, double copy_gbs, double skinny_gflops)
{
    step_bound b;
    b.bytes_s = 5.0 * (s.m + s.n) * (double)s.r * sizeof(float) / (copy_gbs * 1e9);
    b.flops_s = 8.0 * (s.m + s.n) * (double)s.r * s.r / (skinny_gflops * 1e9);
    b.s = b.bytes_s > b.flops_s ? b.bytes_s : b.flops_s;
    return b;
}

/* ---- the whole model ------------------------------------------------------------- */

/* One LoRA layer of the model, both optimizers on the same buffers. */
typedef struct mlayer {
    const char *name;
    int m, n;
    bufs b;
    rite_layer *lay[2];   /* 0: LoRA-RITE, 1: AdamW */
    double cost;
} mlayer;

typedef struct model {
    int nl, r;
    mlayer *l;
    int *part[2], npart[2];   /* the layers of each of the two threads */
    double load[2];
} model;

#define GEMMA_HIDDEN 2048
#define GEMMA_HEAD 256
#define GEMMA_HEADS 8
#define GEMMA_KV_HEADS 1
#define GEMMA_FFN 16384

/* Gemma-2B-like blocks: projections in -> out give L = lora_A^T (in x r, m = in)
   and R = lora_B (out x r, n = out). */
static void model_build(model *md, int blocks, int r, int peft)
{
    static const char *names[7] = {"q", "k", "v", "o", "gate", "up", "down"};
    const int in[7] = {GEMMA_HIDDEN, GEMMA_HIDDEN, GEMMA_HIDDEN, GEMMA_HEADS * GEMMA_HEAD,
                       GEMMA_HIDDEN, GEMMA_HIDDEN, GEMMA_FFN};
    const int out[7] = {GEMMA_HEADS * GEMMA_HEAD, GEMMA_KV_HEADS * GEMMA_HEAD,
                        GEMMA_KV_HEADS * GEMMA_HEAD, GEMMA_HIDDEN, GEMMA_FFN, GEMMA_FFN, GEMMA_HIDDEN};
    int i, k, *order;
    md->nl = 7 * blocks;
    md->r = r;
    md->l = (mlayer *)xmalloc((size_t)md->nl * sizeof(mlayer), "model");
    for (i = 0; i < md->nl; i++) {
        mlayer *L = &md->l[i];
        L->name = names[i % 7];
        L->m = in[i % 7];
        L->n = out[i % 7];
        bufs_alloc(&L->b, L->m, L->n, r);
        L->lay[0] = make_layer(L->m, L->n, r, RITE_LORA_RITE, peft, NULL);
        L->lay[1] = make_layer(L->m, L->n, r, RITE_ADAMW, peft, NULL);
        /* cost model for balancing: both optimizers are linear in m + n, plus
           a fixed part for the r x r algebra */
        L->cost = (double)(L->m + L->n) + 64.0 * r;
    }
    /* split the layers between two threads: largest first, each to the
       thread with the smaller load so far */
    order = (int *)xmalloc((size_t)md->nl * sizeof(int), "model");
    for (i = 0; i < md->nl; i++) order[i] = i;
    for (i = 1; i < md->nl; i++)   /* insertion sort by cost, descending */
        for (k = i; k > 0 && md->l[order[k]].cost > md->l[order[k - 1]].cost; k--) {
            int t = order[k];
            order[k] = order[k - 1];
            order[k - 1] = t;
        }
    for (k = 0; k < 2; k++) {
        md->part[k] = (int *)xmalloc((size_t)md->nl * sizeof(int), "model");
        md->npart[k] = 0;
        md->load[k] = 0;
    }
    for (i = 0; i < md->nl; i++) {
        int t = md->load[1] < md->load[0];
        md->part[t][md->npart[t]++] = order[i];
        md->load[t] += md->l[order[i]].cost;
    }
    free(order);
}

static void model_free(model *md)
{
    int i;
    for (i = 0; i < md->nl; i++) {
        rite_free(md->l[i].lay[0]);
        rite_free(md->l[i].lay[1]);
        bufs_free(&md->l[i].b);
    }
    free(md->part[0]);
    free(md->part[1]);
    free(md->l);
}

/* phase one on a set of layers: returns the sum of their squares */
static double model_prepare(model *md, int opt, const int *idx, int count)
{
    double sum = 0, sq;
    int i;
    for (i = 0; i < count; i++) {
        mlayer *L = &md->l[idx[i]];
        check(rite_prepare_f32(L->lay[opt], L->b.L, L->b.R, L->b.gL, L->b.gR, &sq), "rite_prepare_f32");
        sum += sq;
    }
    return sum;
}

static void model_apply(model *md, int opt, const int *idx, int count, double total)
{
    int i;
    for (i = 0; i < count; i++) check(rite_apply(md->l[idx[i]].lay[opt], total), "rite_apply");
}

/* one model step by the calling thread alone: seconds */
static double model_step_serial(model *md, int opt, const int *all)
{
    double t0 = now(), total = model_prepare(md, opt, all, md->nl);
    model_apply(md, opt, all, md->nl, total);
    return now() - t0;
}

typedef struct team {
    model *md;
    int opt;
    pthread_barrier_t bar;
    double partial[2];
    double t;
} team;

typedef struct member {
    team *tm;
    int id;
} member;

/* One model step on two threads: each prepares its layers, the two partial
   sums meet at a barrier, each applies its layers with the global total. */
static void *model_worker(void *arg)
{
    member *me = (member *)arg;
    team *tm = me->tm;
    model *md = tm->md;
    double t0 = 0, total;
    pthread_barrier_wait(&tm->bar);
    if (me->id == 0) t0 = now();
    tm->partial[me->id] = model_prepare(md, tm->opt, md->part[me->id], md->npart[me->id]);
    pthread_barrier_wait(&tm->bar);
    total = tm->partial[0] + tm->partial[1];   /* the same sum, in the same order, in both */
    model_apply(md, tm->opt, md->part[me->id], md->npart[me->id], total);
    pthread_barrier_wait(&tm->bar);
    if (me->id == 0) tm->t = now() - t0;
    return NULL;
}

static double model_step_threads(model *md, int opt)
{
    team tm;
    member mem[2];
    pthread_t th[2];
    int k;
    tm.md = md;
    tm.opt = opt;
    tm.t = 0;
    pthread_barrier_init(&tm.bar, NULL, 2);
    for (k = 0; k < 2; k++) {
        mem[k].tm = &tm;
        mem[k].id = k;
        if (pthread_create(&th[k], NULL, model_worker, &mem[k]) != 0) {
            fprintf(stderr, "bench: pthread_create failed\n");
            exit(1);
        }
    }
    for (k = 0; k < 2; k++) pthread_join(th[k], NULL);
    pthread_barrier_destroy(&tm.bar);
    return tm.t;
}

/* ---- the whole model through the model API ---------------------------------------- */

/* The same layers and buffers as one rite_model per optimizer and thread count
   (rite_model_step_f32: every layer in one call, the library's own workers). */
typedef struct api_models {
    rite_model *m[2][2];               /* [optimizer][threads - 1], NULL if not measured */
    rite_memory mem[2][2];             /* rite_model_memory_query of each */
    float **A, **B, **gA, **gB;        /* per layer: L = lora_A^T, R = lora_B, their gradients */
} api_models;

static void api_build(api_models *am, const model *md, int peft, int two_threads)
{
    rite_lora *lo = (rite_lora *)xmalloc((size_t)md->nl * sizeof(rite_lora), "model API");
    int i, opt, th;
    memset(am, 0, sizeof *am);
    am->A = (float **)xmalloc(4 * (size_t)md->nl * sizeof(float *), "model API");
    am->B = am->A + md->nl;
    am->gA = am->B + md->nl;
    am->gB = am->gA + md->nl;
    for (i = 0; i < md->nl; i++) {   /* lora_A is L (m = in), lora_B is R (n = out) */
        lo[i] = rite_lora_peft(md->l[i].m, md->l[i].n, md->r);
        lo[i].layout_A = peft ? RITE_RANK_FIRST : RITE_RANK_LAST;
        am->A[i] = md->l[i].b.L;
        am->B[i] = md->l[i].b.R;
        am->gA[i] = md->l[i].b.gL;
        am->gB[i] = md->l[i].b.gR;
    }
    for (opt = 0; opt < 2; opt++)
        for (th = 1; th <= 1 + two_threads; th++) {
            rite_config cfg = rite_config_default(opt ? RITE_ADAMW : RITE_LORA_RITE);
            rite_model_desc d;
            char detail[256];
            rite_status st;
            cfg.lr = BENCH_LR;
            memset(&d, 0, sizeof d);
            d.layers = lo;
            d.n_layers = md->nl;
            d.optimizer = opt ? RITE_ADAMW : RITE_LORA_RITE;
            d.config = &cfg;
            d.threads = th;
            check(rite_model_memory_query(&d, &am->mem[opt][th - 1]), "rite_model_memory_query");
            st = rite_model_init(&am->m[opt][th - 1], &d, detail, sizeof detail);
            if (st != RITE_OK) {
                fprintf(stderr, "bench: rite_model_init: %s (%s)\n", rite_status_string(st), detail);
                exit(1);
            }
        }
    free(lo);
}

static void api_free(api_models *am)
{
    int opt, th;
    for (opt = 0; opt < 2; opt++)
        for (th = 0; th < 2; th++)
            if (am->m[opt][th]) rite_model_free(am->m[opt][th]);
    free(am->A);
}

/* one rite_model_step_f32 over every layer: seconds */
static double api_step(api_models *am, int opt, int threads)
{
    rite_model *m = am->m[opt][threads - 1];
    double t0 = now();
    rite_status st = rite_model_step_f32(m, am->A, am->B, am->gA, am->gB);
    double dt = now() - t0;
    if (st != RITE_OK) {
        fprintf(stderr, "bench: rite_model_step_f32: %s (%s)\n", rite_status_string(st), rite_model_last_error(m));
        exit(1);
    }
    return dt;
}

/* ---- measuring the whole model ------------------------------------------------------ */

/* modes of the model step: the layer API's three, then the model API's two */
enum { MODE_SERIAL, MODE_THREADS, MODE_BLAS2, MODE_MODEL1, MODE_MODEL2, MODE_COUNT };
static const char *mode_name[MODE_COUNT] = {"1 thread, BLAS 1", "2 pthreads, BLAS 1 each", "1 thread, BLAS 2",
                                            "model API, threads = 1", "model API, threads = 2"};
static const char *mode_tag[MODE_COUNT] = {"1", "2x1", "1x2", "model1", "model2"};
/* the mode each one's speed-up is over: the model's 2 threads over its 1, the rest over the layer API's 1 */
static const int mode_base[MODE_COUNT] = {MODE_SERIAL, MODE_SERIAL, MODE_SERIAL, MODE_SERIAL, MODE_MODEL1};

typedef struct model_result {
    int done[MODE_COUNT];
    stats t[2][MODE_COUNT];          /* [optimizer][mode], seconds per model step */
    stats speedup[2][MODE_COUNT];    /* mode_base / mode, paired by round */
    size_t state_bytes[2], total_bytes[2];   /* the layer API: sums over rite_memory_query */
    rite_memory api_mem[2][2];       /* the model API: [optimizer][threads - 1], rite_model_memory_query */
    size_t params;
    int nl;
    double load[2];
} model_result;

/* what the layer API's layers take (rite_memory_query), and the LoRA parameters */
static void model_memory(const model *md, model_result *res)
{
    int i, opt;
    for (i = 0; i < md->nl; i++) {
        rite_memory mem;
        rite_desc d = rite_get_desc(md->l[i].lay[0]);
        for (opt = 0; opt < 2; opt++) {
            d.optimizer = opt ? RITE_ADAMW : RITE_LORA_RITE;
            d.config = NULL;
            check(rite_memory_query(&d, &mem), "rite_memory_query");
            res->state_bytes[opt] += mem.state_bytes;
            res->total_bytes[opt] += mem.total_bytes;
        }
        res->params += (size_t)(md->l[i].m + md->l[i].n) * md->r;
    }
    res->nl = md->nl;
    res->load[0] = md->load[0];
    res->load[1] = md->load[1];
}

/* one model step of optimizer opt in a mode: seconds */
static double model_step_mode(model *md, api_models *am, const int *all, int opt, int mode)
{
    double dt;
    blas_threads(mode == MODE_BLAS2 ? 2 : 1);
    if (mode == MODE_THREADS) dt = model_step_threads(md, opt);
    else if (mode == MODE_MODEL1 || mode == MODE_MODEL2) dt = api_step(am, opt, mode == MODE_MODEL2 ? 2 : 1);
    else dt = model_step_serial(md, opt, all);
    if (mode == MODE_BLAS2) blas_settle();
    return dt;
}

/* medians and paired speed-ups from the per-round times t[opt][mode][round] */
static void model_summarize(model_result *res, const int *want, double *t[2][MODE_COUNT], int reps)
{
    double *sp = (double *)xmalloc((size_t)reps * sizeof(double), "model");
    int opt, mode, round;
    for (opt = 0; opt < 2; opt++)
        for (mode = 0; mode < MODE_COUNT; mode++) {
            int base = mode_base[mode];
            if (!want[mode]) continue;
            res->done[mode] = 1;
            res->t[opt][mode] = summarize(t[opt][mode], reps);
            if (!want[base]) continue;
            for (round = 0; round < reps; round++) sp[round] = t[opt][base][round] / t[opt][mode][round];
            res->speedup[opt][mode] = summarize(sp, reps);
        }
    free(sp);
}

static model_result bench_model(const options *o, int blocks, int reps)
{
    model md;
    api_models am;
    model_result res;
    int *all, i, opt, mode, round, want[MODE_COUNT];
    double *t[2][MODE_COUNT];
    double t_build = now();

    memset(&res, 0, sizeof res);
    want[MODE_SERIAL] = want[MODE_MODEL1] = 1;
    want[MODE_THREADS] = want[MODE_BLAS2] = want[MODE_MODEL2] = o->thr[1];
    model_build(&md, blocks, 16, o->peft);
    api_build(&am, &md, o->peft, o->thr[1]);
    memcpy(res.api_mem, am.mem, sizeof am.mem);
    model_memory(&md, &res);
    all = (int *)xmalloc((size_t)md.nl * sizeof(int), "model");
    for (i = 0; i < md.nl; i++) all[i] = i;
    printf("  (model: %d layers, %.1f M LoRA parameters, built in %.1f s; thread loads %.1f%% / %.1f%%)\n",
           md.nl, res.params * 1e-6, now() - t_build, 100 * md.load[0] / (md.load[0] + md.load[1]),
           100 * md.load[1] / (md.load[0] + md.load[1]));
    fflush(stdout);
    for (opt = 0; opt < 2; opt++)
        for (mode = 0; mode < MODE_COUNT; mode++)
            t[opt][mode] = (double *)xmalloc((size_t)reps * sizeof(double), "model");
    /* rounds: every mode and optimizer once per round, so the paired
       speed-ups compare steps taken moments apart; round -1 warms up */
    for (round = -1; round < reps; round++)
        for (opt = 0; opt < 2; opt++)
            for (mode = 0; mode < MODE_COUNT; mode++) {
                double dt;
                if (!want[mode]) continue;
                dt = model_step_mode(&md, &am, all, opt, mode);
                if (round >= 0) t[opt][mode][round] = dt;
            }
    model_summarize(&res, want, t, reps);
    for (opt = 0; opt < 2; opt++)
        for (mode = 0; mode < MODE_COUNT; mode++) free(t[opt][mode]);
    free(all);
    api_free(&am);
    model_free(&md);
    return res;
}

/* the whole-model table, and the memory of both APIs */
static void print_model(const model_result *mres)
{
    int mode, opt, th;
    printf("%-26s %-30s %-30s\n", "mode", "LoRA-RITE ms per model step", "AdamW ms per model step");
    for (mode = 0; mode < MODE_COUNT; mode++) {
        char a[2][64];
        if (!mres->done[mode]) continue;
        for (opt = 0; opt < 2; opt++) {
            stats s = mres->t[opt][mode];
            if (mode == MODE_SERIAL)
                snprintf(a[opt], sizeof a[opt], "%8.1f [%.1f..%.1f]", s.med * 1e3, s.min * 1e3, s.max * 1e3);
            else
                snprintf(a[opt], sizeof a[opt], "%8.1f [%.1f..%.1f] %.2fx", s.med * 1e3, s.min * 1e3,
                         s.max * 1e3, mres->speedup[opt][mode].med);
        }
        printf("%-26s %-30s %-30s\n", mode_name[mode], a[0], a[1]);
    }
    printf("(Nx = speed-up, the median of per-round ratios: over the layer API's 1 thread; for the model API's\n"
           "threads = 2, over its threads = 1. The model API runs BLAS on 1 thread: its threads are its own.)\n");
    printf("layer API: state LoRA-RITE %.1f MiB, AdamW %.1f MiB; allocated with scratch: LoRA-RITE %.1f MiB, "
           "AdamW %.1f MiB\n",
           mres->state_bytes[0] / 1048576.0, mres->state_bytes[1] / 1048576.0, mres->total_bytes[0] / 1048576.0,
           mres->total_bytes[1] / 1048576.0);
    for (th = 1; th <= 2; th++) {
        const rite_memory *r = &mres->api_mem[0][th - 1], *a = &mres->api_mem[1][th - 1];
        if (!mres->done[th == 1 ? MODE_MODEL1 : MODE_MODEL2]) continue;
        printf("model API, threads = %d (rite_model_memory_query): state LoRA-RITE %.1f MiB, AdamW %.1f MiB; "
               "total allocated: LoRA-RITE %.1f MiB, AdamW %.1f MiB (LoRA-RITE / AdamW %.3f)\n",
               th, r->state_bytes / 1048576.0, a->state_bytes / 1048576.0, r->total_bytes / 1048576.0,
               a->total_bytes / 1048576.0, (double)r->total_bytes / (double)a->total_bytes);
    }
}

/* target (d) of the whole model: 2 threads against 1, the layer API's pthreads and the model API's threads */
static void print_model_speedups(const model_result *mres)
{
    static const struct { int mode; const char *what; } rows[] = {
        {MODE_THREADS, "2 pthreads vs 1 thread"},
        {MODE_MODEL2, "model API, threads = 2 vs 1"},
    };
    int opt, i;
    for (i = 0; i < 2; i++)
        for (opt = 0; opt < 2 && mres->done[rows[i].mode]; opt++) {
            const stats *s = &mres->speedup[opt][rows[i].mode];
            printf("(d) whole model, %s, %s: %.2fx [%.2f..%.2f] (target >= 1.7): %s\n", rows[i].what,
                   opt ? "AdamW" : "LoRA-RITE", s->med, s->min, s->max, s->med >= 1.7 ? "met" : "NOT met");
        }
    if (!mres->done[MODE_THREADS] && !mres->done[MODE_MODEL2]) printf("(d) not measured in this run\n");
}

/* target (e) of the whole model: the model API's LoRA-RITE allocates at most 0.55x what its AdamW does */
static void print_model_memory_target(const model_result *mres)
{
    int th;
    for (th = 1; th <= 2; th++) {
        const rite_memory *r = &mres->api_mem[0][th - 1], *a = &mres->api_mem[1][th - 1];
        double q = (double)r->total_bytes / (double)a->total_bytes;
        if (!mres->done[th == 1 ? MODE_MODEL1 : MODE_MODEL2]) continue;
        printf("(e) whole model, model API, threads = %d: LoRA-RITE total %.1f MiB = %.3fx AdamW's total %.1f MiB "
               "(target <= 0.55x): %s\n",
               th, r->total_bytes / 1048576.0, q, a->total_bytes / 1048576.0, q <= 0.55 ? "met" : "NOT met");
    }
}

/* ---- state size ------------------------------------------------------------------ */

/* The optimizer state counted in numbers: the k x r moments are floats (one
   number per 4 bytes: M for LoRA-RITE, m and v for AdamW); everything else in
   the state (the r x r matrices, the escaped mass, the step count) is 8 bytes
   per number. */
static double state_numbers(size_t bytes, shape s, int adamw)
{
    double f = (double)(s.m + s.n) * s.r * (adamw ? 2 : 1);
    return f + ((double)bytes - 4.0 * f) / 8.0;
}

/* ---- linear fit -------------------------------------------------------------------- */

typedef struct fit {
    int ok;
    double a, b, maxdev;   /* t = a + b x; max |t - fit| / fit */
} fit;

/* Weighted least squares: minimises sum w_i (y_i - a - b x_i)^2. With all
   weights 1 it is the ordinary fit; with w_i = 1 / y_i^2 it minimises the
   relative deviations, so that the small shapes count as much as the large. */
static fit fit_line_w(const double *x, const double *y, int n, int relative)
{
    fit f;
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0, d;
    int i;
    memset(&f, 0, sizeof f);
    if (n < 3) return f;
    for (i = 0; i < n; i++) {
        double w = relative ? 1.0 / (y[i] * y[i]) : 1.0;
        sw += w;
        sx += w * x[i];
        sy += w * y[i];
        sxx += w * x[i] * x[i];
        sxy += w * x[i] * y[i];
    }
    d = sw * sxx - sx * sx;
    f.b = (sw * sxy - sx * sy) / d;
    f.a = (sy - f.b * sx) / sw;
    for (i = 0; i < n; i++) {
        double p = f.a + f.b * x[i], dev = fabs(y[i] - p) / p;
        if (dev > f.maxdev) f.maxdev = dev;
    }
    f.ok = 1;
    return f;
}

/* ---- pictures ------------------------------------------------------------------------ */

#define MAXPTS 16

typedef struct series {
    const char *name, *color;
    int dashed, n;
    double x[MAXPTS], y[MAXPTS];
} series;

typedef struct axis {
    double lo, hi;
    int base;   /* 0 linear, else logarithmic in this base (ticks at its powers) */
} axis;

static double axis_pos(const axis *a, double v)
{
    if (a->base) return (log(v) - log(a->lo)) / (log(a->hi) - log(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

static double nice_step(double range)
{
    double e = pow(10, floor(log10(range / 5))), f = range / 5 / e;
    return e * (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10);
}

/* ticks of an axis into t[], returns how many */
static int axis_ticks(const axis *a, double *t, int max)
{
    int n = 0;
    if (!a->base) {
        double st = nice_step(a->hi - a->lo), v = ceil(a->lo / st - 1e-9) * st;
        for (; v <= a->hi * (1 + 1e-9) && n < max; v += st) t[n++] = fabs(v) < 1e-12 * st ? 0 : v;
    } else if (a->base == 2) {
        double v = pow(2, ceil(log2(a->lo) - 1e-9));
        for (; v <= a->hi * (1 + 1e-9) && n < max; v *= 2) t[n++] = v;
    } else {
        double d = pow(10, floor(log10(a->lo)));
        for (; d <= a->hi && n < max; d *= 10) {
            const double mul[3] = {1, 2, 5};
            int k;
            for (k = 0; k < 3 && n < max; k++)
                if (d * mul[k] >= a->lo * (1 - 1e-9) && d * mul[k] <= a->hi * (1 + 1e-9)) t[n++] = d * mul[k];
        }
    }
    return n;
}

static axis axis_for(const series *s, int ns, int use_y, int base)
{
    axis a;
    double lo = HUGE_VAL, hi = -HUGE_VAL;
    int i, k;
    for (k = 0; k < ns; k++)
        for (i = 0; i < s[k].n; i++) {
            double v = use_y ? s[k].y[i] : s[k].x[i];
            if (v < lo) lo = v;
            if (v > hi) hi = v;
        }
    if (!(lo <= hi)) lo = 1, hi = 2;
    a.base = base;
    if (base) {   /* a little room around the data, in log space */
        double span = log(hi / lo) + 1e-9;
        a.lo = lo * exp(-0.06 * span - 1e-3);
        a.hi = hi * exp(0.06 * span + 1e-3);
        if (base == 10) {   /* take whole 1-2-5 steps, so ticks reach the ends */
            double d = pow(10, floor(log10(a.lo)));
            a.lo = a.lo >= 5 * d ? 5 * d : a.lo >= 2 * d ? 2 * d : d;
            d = pow(10, floor(log10(a.hi)));
            a.hi = a.hi <= d ? d : a.hi <= 2 * d ? 2 * d : a.hi <= 5 * d ? 5 * d : 10 * d;
        }
    } else {
        double st;
        a.lo = 0;
        st = nice_step(hi);
        a.hi = ceil(hi * 1.04 / st) * st;
    }
    return a;
}

/* One panel: frame, ticks, grid, labels, the series and a legend. */
static void svg_panel(FILE *f, double x0, double y0, double w, double h, const char *title,
                      const char *xlabel, const char *ylabel, const series *s, int ns, int xbase, int ybase)
{
    axis ax = axis_for(s, ns, 0, xbase), ay = axis_for(s, ns, 1, ybase);
    double px = x0 + 70, py = y0 + 34, pw = w - 90, ph = h - 90, t[64];
    int nt, i, k;
    if (!xbase) ax.lo = 0;
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"15\" text-anchor=\"middle\" font-weight=\"bold\">%s</text>\n",
            px + pw / 2, y0 + 20, title);
    nt = axis_ticks(&ax, t, 64);
    for (i = 0; i < nt; i++) {
        double X = px + pw * axis_pos(&ax, t[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", X, py, X, py + ph);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\"/>\n", X, py + ph, X,
                py + ph + 5);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"middle\">%g</text>\n", X,
                py + ph + 19, t[i]);
    }
    nt = axis_ticks(&ay, t, 64);
    for (i = 0; i < nt; i++) {
        double Y = py + ph * (1 - axis_pos(&ay, t[i]));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", px, Y, px + pw, Y);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#000\"/>\n", px - 5, Y, px, Y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" text-anchor=\"end\">%g</text>\n", px - 8, Y + 4,
                t[i]);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#000\"/>\n", px, py,
            pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\">%s</text>\n", px + pw / 2,
            py + ph + 40, xlabel);
    fprintf(f,
            "<text x=\"%.1f\" y=\"%.1f\" font-size=\"13\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 %.1f %.1f)\">%s</text>\n",
            x0 + 18, py + ph / 2, x0 + 18, py + ph / 2, ylabel);
    for (k = 0; k < ns; k++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", s[k].color,
                s[k].dashed ? " stroke-dasharray=\"6,4\"" : "");
        for (i = 0; i < s[k].n; i++)
            fprintf(f, "%.1f,%.1f ", px + pw * axis_pos(&ax, s[k].x[i]), py + ph * (1 - axis_pos(&ay, s[k].y[i])));
        fprintf(f, "\"/>\n");
        if (!s[k].dashed || s[k].n > 2)
            for (i = 0; i < s[k].n; i++)
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                        px + pw * axis_pos(&ax, s[k].x[i]), py + ph * (1 - axis_pos(&ay, s[k].y[i])), s[k].color);
        /* legend entry */
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
                px + 12, py + 16 + 18.0 * k, px + 40, py + 16 + 18.0 * k, s[k].color,
                s[k].dashed ? " stroke-dasharray=\"6,4\"" : "");
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">%s</text>\n", px + 46, py + 20 + 18.0 * k,
                s[k].name);
    }
}

/* ---- the state of a run ------------------------------------------------------------------ */

#define MAXSHAPES 32

typedef struct group {
    const char *title;
    shape s[MAXSHAPES];
    int n;
} group;

/* everything a run plans and measures; the steps of main take it by pointer */
typedef struct run {
    options o;
    double t_start;
    int thr_list[2], nthr;            /* the BLAS thread counts measured, 1 first */
    group g[3];                       /* LLM-like shapes, the sweep of m + n, the sweep of r */
    shape u[MAXSHAPES];               /* the distinct shapes of the groups, each measured once */
    int nu;
    int rs[MAXSHAPES], nrs;           /* the distinct r of the run, ascending */
    int plain_idx;                    /* the shape of the plain-loop comparison in u, -1 = none */
    size_t copy_bytes;                /* the size of the memcpy */
    stats peak[2], peak2[2], copy[2]; /* [threads - 1]: sgemm at the start and at the end, memcpy */
    double peak_best[2];              /* [threads - 1]: the best sgemm GFLOP/s of the run, the peak */
    skinny_cache sk;
    layer_result res[MAXSHAPES][2];   /* [shape][threads - 1] */
    rite_memory mem[MAXSHAPES][2];    /* [shape][optimizer] */
    step_bound bnd[MAXSHAPES][2];     /* [shape][threads - 1]: the lower bound of the LoRA-RITE step */
    fit fits[2][2], rfits[2][2];      /* [optimizer][threads - 1]: ordinary, relative */
    model_result mres;
} run;

/* the index of s in u[0..nu), -1 if it is not there */
static int shape_find(const shape *u, int nu, shape s)
{
    int i;
    for (i = 0; i < nu; i++)
        if (u[i].m == s.m && u[i].n == s.n && u[i].r == s.r) return i;
    return -1;
}

/* the index of s in u[0..*nu), appended if it is not there yet */
static int shape_index(shape *u, int *nu, shape s)
{
    int i = shape_find(u, *nu, s);
    if (i >= 0) return i;
    u[*nu] = s;
    return (*nu)++;
}

/* the result of a measured shape at a BLAS thread count */
static const layer_result *result_of(const run *R, shape s, int th)
{
    return &R->res[shape_find(R->u, R->nu, s)][th - 1];
}

/* the nominal 8 (m+n) r^2 flops of a LoRA-RITE step, in GFLOP/s for a step of `seconds` */
static double nominal_gflops(shape s, double seconds)
{
    return 8.0 * (s.m + s.n) * (double)s.r * s.r / seconds * 1e-9;
}

/* ---- planning ------------------------------------------------------------------------------ */

/* the thread counts, the output folder and the pool of random numbers */
static void run_setup(run *R)
{
    int i;
    if (R->o.thr[0]) R->thr_list[R->nthr++] = 1;
    if (R->o.thr[1]) R->thr_list[R->nthr++] = 2;
    R->copy_bytes = (size_t)(R->o.quick ? 64 : 256) << 20;
    mkdir(R->o.out, 0777);   /* may exist already */
    g_pool = (float *)xmalloc(POOL_SIZE * sizeof(float), "pool");
    for (i = 0; i < (int)POOL_SIZE; i++) g_pool[i] = (float)tu_normal(&g_rng);
}

/* the default groups: LLM-like shapes, the sweep of m + n and the sweep of r */
static void plan_default_groups(group *g, int quick)
{
    static const shape llm[4] = {{1024, 1024, 8}, {4096, 4096, 16}, {2048, 16384, 16}, {4096, 4096, 64}};
    static const int mn_full[5] = {1024, 2048, 4096, 8192, 16384}, mn_quick[3] = {1024, 2048, 4096};
    static const int r_full[6] = {4, 8, 16, 32, 64, 128}, r_quick[3] = {4, 16, 64};
    const int *mn = quick ? mn_quick : mn_full, *rr = quick ? r_quick : r_full;
    int i;
    for (i = 0; i < 4; i++)
        if (!quick || i != 2) g[0].s[g[0].n++] = llm[i];
    for (i = 0; i < (quick ? 3 : 5); i++) g[1].s[g[1].n++] = (shape){mn[i], mn[i], 16};
    for (i = 0; i < (quick ? 3 : 6); i++) g[2].s[g[2].n++] = (shape){4096, 4096, rr[i]};
}

/* the distinct r of the distinct shapes, sorted by insertion */
static void collect_ranks(run *R)
{
    int i;
    for (i = 0; i < R->nu; i++) {
        int j, seen = 0, r = R->u[i].r;
        for (j = 0; j < R->nrs; j++) seen |= R->rs[j] == r;
        if (seen) continue;
        for (j = R->nrs++; j > 0 && R->rs[j - 1] > r; j--) R->rs[j] = R->rs[j - 1];
        R->rs[j] = r;
    }
}

/* the shapes of the run: the groups, their distinct shapes and r, the plain loop's shape */
static void plan_shapes(run *R)
{
    static const shape plain_shape = {4096, 4096, 16};
    group *g = R->g;
    int gi, i;
    g[0].title = "LLM-like shapes";
    g[1].title = "sweep of m + n (m = n, r = 16)";
    g[2].title = "sweep of r (m = n = 4096)";
    if (R->o.model_only) {
        /* no layer shapes: the whole model only */
    } else if (R->o.shape[0]) {
        g[0].title = "the given shape";
        g[0].s[g[0].n++] = (shape){R->o.shape[0], R->o.shape[1], R->o.shape[2]};
    } else {
        plan_default_groups(g, R->o.quick);
    }
    for (gi = 0; gi < 3; gi++)
        for (i = 0; i < g[gi].n; i++) shape_index(R->u, &R->nu, g[gi].s[i]);
    R->plain_idx = shape_find(R->u, R->nu, plain_shape);
    collect_ranks(R);
}

static void print_header(const run *R)
{
    printf("lora_rite bench: LoRA-RITE vs AdamW, float32, %s layout, %d repeats%s\n",
           R->o.peft ? "PEFT (L rank-first, R rank-last)" : "rank-last", R->o.reps, R->o.quick ? " (quick)" : "");
#ifdef OPENBLAS_VERSION
    printf("BLAS:%s core %s, config %s\n", OPENBLAS_VERSION, openblas_get_corename(), openblas_get_config());
    print_core_note();
#endif
    print_load("at start");
    printf("times per step in ms: median [min..max] over repeats; ratios are medians of per-repeat ratios\n\n");
}

/* ---- measuring ----------------------------------------------------------------------------- */

/* sgemm peak, memcpy and the skinny products of every r, at each thread count */
static void measure_machine(run *R)
{
    int t, i;
    printf("== machine (same run) ==\n");
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        stats *pk = &R->peak[th - 1], *cp = &R->copy[th - 1];
        *pk = bench_sgemm(th, R->o.reps);
        *cp = bench_memcpy(R->copy_bytes, th, R->o.quick ? 3 : 7);
        R->peak_best[th - 1] = pk->max;
        if (th == 2) blas_settle();
        printf("  sgemm %d^3, %d thread%s: %6.1f GFLOP/s median [%.1f..%.1f]\n", GEMM_N, th, th > 1 ? "s" : " ",
               pk->med, pk->min, pk->max);
        printf("  memcpy %zu MiB, %d thread%s: %6.1f GB/s median [%.1f..%.1f] (read + write)\n",
               R->copy_bytes >> 20, th, th > 1 ? "s" : " ", cp->med, cp->min, cp->max);
        for (i = 0; i < R->nrs; i++) {   /* the skinny products, for the lower bounds */
            stats sg = skinny_rate(&R->sk, R->rs[i], th, &R->o);
            printf("  sgemm %d x %d by %d x %d, %d thread%s: %6.1f GFLOP/s median [%.1f..%.1f]\n", SKINNY_K,
                   R->rs[i], R->rs[i], R->rs[i], th, th > 1 ? "s" : " ", sg.med, sg.min, sg.max);
        }
        fflush(stdout);
    }
}

/* every shape's state, then its step at every thread count (1 thread first for all shapes) */
static void measure_layers(run *R)
{
    int t, i;
    for (i = 0; i < R->nu; i++) {
        shape s = R->u[i];
        check(rite_memory_query(&(rite_desc){.m = s.m, .n = s.n, .r = s.r}, &R->mem[i][0]), "memory");
        check(rite_memory_query(&(rite_desc){.m = s.m, .n = s.n, .r = s.r, .optimizer = RITE_ADAMW},
                                &R->mem[i][1]),
              "memory");
    }
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        for (i = 0; i < R->nu; i++) {
            R->res[i][th - 1] = bench_layer(R->u[i], th, &R->o, i == R->plain_idx);
            R->bnd[i][th - 1] =
                bound_of(R->u[i], R->copy[th - 1].med, skinny_rate(&R->sk, R->u[i].r, th, &R->o).med);
        }
        if (th == 2) blas_settle();
    }
}

/* the sgemm peak again at the end: the best of both is the peak */
static void measure_peak_again(run *R)
{
    int t;
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        stats *pk = &R->peak2[th - 1];
        *pk = bench_sgemm(th, R->o.reps);
        if (pk->max > R->peak_best[th - 1]) R->peak_best[th - 1] = pk->max;
        if (th == 2) blas_settle();
        printf("  sgemm %d^3, %d thread%s, end of run: %6.1f GFLOP/s median [%.1f..%.1f]; peak used: %.1f\n",
               GEMM_N, th, th > 1 ? "s" : " ", pk->med, pk->min, pk->max, R->peak_best[th - 1]);
    }
}

/* ---- the layer tables ------------------------------------------------------------------------ */

/* one row of the layer table: shape u[k] at th BLAS threads */
static void print_layer_row(const run *R, int k, int th)
{
    const layer_result *r = &R->res[k][th - 1];
    const step_bound *bd = &R->bnd[k][th - 1];
    shape s = R->u[k];
    char sh[40], a[40], b[40];
    double gf = nominal_gflops(s, r->rite.med);
    snprintf(sh, sizeof sh, "(%d, %d, %d)", s.m, s.n, s.r);
    snprintf(a, sizeof a, "%8.3f [%.3f..%.3f]", r->rite.med * 1e3, r->rite.min * 1e3, r->rite.max * 1e3);
    snprintf(b, sizeof b, "%8.3f [%.3f..%.3f]", r->adamw.med * 1e3, r->adamw.min * 1e3, r->adamw.max * 1e3);
    printf("%-18s %3d  %-26s %-26s %10.2f %8.1f %5.1f%% %8.3f %6.2f\n", sh, th, a, b, r->ratio.med, gf,
           100 * gf / R->peak_best[th - 1], bd->s * 1e3, r->rite.med / bd->s);
}

/* one step per layer: a table per group of shapes */
static void print_layer_table(const run *R)
{
    int gi, i, t;
    if (R->nu == 0) return;
    printf("\n== one step per layer (rite_step_f32) ==\n");
    printf("GFLOP/s counts a nominal 8 (m+n) r^2 flops per LoRA-RITE step; %%peak is of the best sgemm\n"
           "GFLOP/s of this run at the same thread count. thr = BLAS threads (the library's AdamW makes\n"
           "no BLAS calls: its thr 2 rows differ from thr 1 only by machine noise).\n"
           "bound ms: a lower bound of the LoRA-RITE step, the larger of 20 (m+n) r bytes at the memcpy GB/s\n"
           "and the nominal flops at the sgemm GFLOP/s of %d x r by r x r, both at the same thread count\n"
           "(what it counts: see bench.c). /bound = LoRA-RITE ms / bound.\n",
           SKINNY_K);
    for (gi = 0; gi < 3; gi++) {
        const group *g = &R->g[gi];
        if (!g->n) continue;
        printf("\n-- %s --\n", g->title);
        printf("%-18s %3s  %-26s %-26s %10s %8s %6s %8s %6s\n", "(m, n, r)", "thr", "LoRA-RITE ms", "AdamW ms",
               "RITE/AdamW", "GFLOP/s", "%peak", "bound ms", "/bound");
        for (i = 0; i < g->n; i++)
            for (t = 0; t < R->nthr; t++) print_layer_row(R, shape_find(R->u, R->nu, g->s[i]), R->thr_list[t]);
    }
}

/* the library's AdamW against the plain one-pass loop written here */
static void print_plain_loop(const run *R)
{
    int t;
    if (R->plain_idx < 0) return;
    printf("\n-- library AdamW vs a plain one-pass AdamW loop, (4096, 4096, 16) --\n");
    for (t = 0; t < R->nthr; t++) {
        const layer_result *r = &R->res[R->plain_idx][R->thr_list[t] - 1];
        printf("  thr %d: library %.3f ms [%.3f..%.3f], plain loop %.3f ms [%.3f..%.3f], library/plain %.2fx "
               "[%.2f..%.2f]\n",
               R->thr_list[t], r->adamw.med * 1e3, r->adamw.min * 1e3, r->adamw.max * 1e3, r->plain.med * 1e3,
               r->plain.min * 1e3, r->plain.max * 1e3, r->plain_ratio.med, r->plain_ratio.min, r->plain_ratio.max);
    }
}

/* the optimizer state of every shape, against the bound RITE <= AdamW / 2 + 4 r^2 */
static void print_state_table(const run *R)
{
    int i, all_hold = 1;
    if (R->nu == 0) return;
    printf("\n== optimizer state per layer (rite_memory_query) ==\n");
    printf("nums (numbers): the k x r moments are floats, 4 bytes each; the r x r matrices, escaped mass and\n"
           "step count are 8 bytes each. bound: RITE nums <= AdamW nums / 2 + 4 r^2. bytes: the same bound in\n"
           "bytes with 4-byte numbers, RITE bytes <= AdamW bytes / 2 + 16 r^2. total: everything rite_init "
           "allocates\n");
    printf("%-18s %11s %11s %10s %10s %10s %5s %5s %11s %11s\n", "(m, n, r)", "RITE bytes", "AdamW bytes",
           "RITE nums", "AdamW nums", "bound", "holds", "bytes", "RITE total", "AdamW total");
    for (i = 0; i < R->nu; i++) {
        const rite_memory *rm = &R->mem[i][0], *am = &R->mem[i][1];
        shape s = R->u[i];
        char sh[40];
        double rn = state_numbers(rm->state_bytes, s, 0);
        double an = state_numbers(am->state_bytes, s, 1);
        double bound = an / 2 + 4.0 * s.r * s.r;
        int bytes_hold = (double)rm->state_bytes <= am->state_bytes / 2.0 + 16.0 * s.r * s.r;
        all_hold &= rn <= bound;
        snprintf(sh, sizeof sh, "(%d, %d, %d)", s.m, s.n, s.r);
        printf("%-18s %11zu %11zu %10.0f %10.0f %10.0f %5s %5s %11zu %11zu\n", sh, rm->state_bytes,
               am->state_bytes, rn, an, bound, rn <= bound ? "yes" : "NO", bytes_hold ? "yes" : "no",
               rm->total_bytes, am->total_bytes);
    }
    printf("bound (in numbers) holds for every shape: %s\n", all_hold ? "yes" : "NO");
}

/* straight lines t = a + b (m + n) through the sweep of m + n, both optimizers, every thread count */
static void fit_mn_sweep(run *R)
{
    const group *g = &R->g[1];
    int t, opt, i;
    if (g->n < 3) return;
    printf("\n== linearity in m + n (r = 16): straight line t = a + b (m + n) through the sweep ==\n");
    printf("least squares (ls), and least squares of the relative deviations (rel); max |t - line| / line\n");
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        for (opt = 0; opt < 2; opt++) {
            fit *ls = &R->fits[opt][th - 1], *rel = &R->rfits[opt][th - 1];
            double x[MAXSHAPES], y[MAXSHAPES];
            for (i = 0; i < g->n; i++) {
                const layer_result *r = result_of(R, g->s[i], th);
                x[i] = g->s[i].m + g->s[i].n;
                y[i] = (opt ? r->adamw.med : r->rite.med) * 1e3;
            }
            *ls = fit_line_w(x, y, g->n, 0);
            *rel = fit_line_w(x, y, g->n, 1);
            printf("  %-9s thr %d: ls  a = %8.4f ms, b = %7.2f us per 1k rows, max deviation %5.1f%% (%s 20%%)\n",
                   opt ? "AdamW" : "LoRA-RITE", th, ls->a, ls->b * 1e6, 100 * ls->maxdev,
                   ls->maxdev <= 0.2 ? "within" : "OUTSIDE");
            printf("  %-9s thr %d: rel a = %8.4f ms, b = %7.2f us per 1k rows, max deviation %5.1f%% (%s 20%%)\n",
                   "", th, rel->a, rel->b * 1e6, 100 * rel->maxdev, rel->maxdev <= 0.2 ? "within" : "OUTSIDE");
        }
    }
}

/* the whole model: its table and memory */
static void measure_model(run *R)
{
    int blocks = R->o.quick ? 2 : 18;
    printf("\n== whole model: %d Gemma-2B-like blocks x (q, k, v, o, gate, up, down), r = 16 ==\n", blocks);
    printf("layer API: two-phase step, rite_prepare_f32 on every layer, global sum, rite_apply on every layer;\n"
           "model API: one rite_model_step_f32 over every layer (one rite_model per optimizer and threads)\n");
    R->mres = bench_model(&R->o, blocks, R->o.reps);
    print_model(&R->mres);
}

/* ---- the targets ------------------------------------------------------------------------------ */

/* (a) LoRA-RITE at most 2.5x (stretch 2x) AdamW's time at (4096, 4096, 16), 1 thread */
static void print_target_a_ratio(const run *R)
{
    static const shape sa = {4096, 4096, 16};
    int k = shape_find(R->u, R->nu, sa);
    if (k >= 0 && R->res[k][0].done) {
        const stats *q = &R->res[k][0].ratio;
        printf("(a) RITE/AdamW at (4096, 4096, 16), 1 thread: %.2fx [%.2f..%.2f] (target <= 2.5, stretch 2): %s\n",
               q->med, q->min, q->max,
               q->med <= 2 ? "met, stretch met" : q->med <= 2.5 ? "met, stretch NOT met" : "NOT met");
    } else {
        printf("(a) not measured in this run\n");
    }
}

/* (b) at r = 64 the LoRA-RITE step reaches at least half the sgemm peak */
static void print_target_b_peak(const run *R)
{
    static const shape sb = {4096, 4096, 64};
    int k = shape_find(R->u, R->nu, sb), t;
    if (k < 0) {
        printf("(b) not measured in this run\n");
        return;
    }
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        double gf = nominal_gflops(sb, R->res[k][th - 1].rite.med), peak = R->peak_best[th - 1];
        printf("(b) r = 64, %d thread%s: %.1f GFLOP/s nominal = %.1f%% of sgemm peak %.1f (target >= 50%%): %s\n",
               th, th > 1 ? "s" : "", gf, 100 * gf / peak, peak, gf >= 0.5 * peak ? "met" : "NOT met");
    }
}

/* (c) the LoRA-RITE time is linear in m + n within 20% */
static void print_target_c_linearity(const run *R)
{
    int t;
    if (!R->fits[0][0].ok && !R->fits[0][1].ok) {
        printf("(c) not measured in this run\n");
        return;
    }
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        double ls = R->fits[0][th - 1].maxdev, rel = R->rfits[0][th - 1].maxdev;
        printf("(c) LoRA-RITE time vs m + n, %d thread%s: max deviation from the least-squares line %.1f%% "
               "(target <= 20%%): %s; from the relative fit %.1f%%: %s\n",
               th, th > 1 ? "s" : "", 100 * ls, ls <= 0.2 ? "met" : "NOT met", 100 * rel,
               rel <= 0.2 ? "met" : "NOT met");
    }
}

/* (e) per layer: RITE state <= AdamW state / 2 + 4 r^2 numbers; then the whole model's */
static void print_target_e_state(const run *R)
{
    int i, hold = 1;
    double worst = -HUGE_VAL;
    for (i = 0; i < R->nu; i++) {
        shape s = R->u[i];
        double rn = state_numbers(R->mem[i][0].state_bytes, s, 0);
        double an = state_numbers(R->mem[i][1].state_bytes, s, 1);
        double slack = rn - an / 2;
        hold &= rn <= an / 2 + 4.0 * s.r * s.r;
        if (slack / ((double)s.r * s.r) > worst) worst = slack / ((double)s.r * s.r);
    }
    if (R->nu > 0)
        printf("(e) RITE state <= AdamW state / 2 + 4 r^2 numbers, every shape: %s (RITE - AdamW/2 is at "
               "most %.2f r^2 numbers)\n",
               hold ? "met" : "NOT met", worst);
    else
        printf("(e) per layer: not measured in this run\n");
    if (R->o.model) print_model_memory_target(&R->mres);
}

/* (f) at the r = 16 shapes, 1 thread, the step takes at most 1.5x its lower bound */
static void print_target_f_bound(const run *R)
{
    int i, n16 = 0, kw = -1;
    double worst = 0;
    for (i = 0; i < R->nu; i++) {
        double q;
        if (R->u[i].r != 16 || !R->res[i][0].done) continue;
        q = R->res[i][0].rite.med / R->bnd[i][0].s;
        n16++;
        if (kw < 0 || q > worst) kw = i, worst = q;
    }
    if (n16)
        printf("(f) step / lower bound at the r = 16 shapes, 1 thread: worst %.2f at (%d, %d, %d), over %d "
               "shape%s (target <= 1.5): %s\n",
               worst, R->u[kw].m, R->u[kw].n, R->u[kw].r, n16, n16 > 1 ? "s" : "", worst <= 1.5 ? "met" : "NOT met");
    else
        printf("(f) not measured in this run\n");
}

static void print_targets(const run *R)
{
    printf("\n== targets ==\n");
    print_target_a_ratio(R);
    print_target_b_peak(R);
    print_target_c_linearity(R);
    if (R->o.model) print_model_speedups(&R->mres);
    else printf("(d) not measured in this run\n");
    print_target_e_state(R);
    print_target_f_bound(R);
}

/* ---- the CSV ------------------------------------------------------------------------------------ */

static const char *csv_path(const options *o, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", o->out, name);
    return buf;
}

static void csv_row(FILE *f, const char *section, const char *name, shape s, const char *threads, stats st,
                    const char *unit, double ratio, double gflops, double pct, double sbytes, double snum,
                    const char *note)
{
    fprintf(f, "%s,%s,%d,%d,%d,%s,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%s,", section, name, s.m, s.n, s.r, threads, st.n,
            st.med, st.min, st.p25, st.p75, st.max, unit);
    if (ratio == ratio) fprintf(f, "%.4g", ratio);
    fprintf(f, ",");
    if (gflops == gflops) fprintf(f, "%.4g", gflops);
    fprintf(f, ",");
    if (pct == pct) fprintf(f, "%.4g", pct);
    fprintf(f, ",");
    if (sbytes == sbytes) fprintf(f, "%.0f", sbytes);
    fprintf(f, ",");
    if (snum == snum) fprintf(f, "%.0f", snum);
    fprintf(f, ",\"%s\"\n", note);   /* quoted: notes hold commas */
}

/* a figure made of one value, as stats of n values all equal to v */
static stats single_value(int n, double v)
{
    stats s;
    memset(&s, 0, sizeof s);
    s.n = n;
    s.med = s.min = s.p25 = s.p75 = s.max = v;
    return s;
}

/* sgemm at the start and at the end, memcpy and the skinny products, at each thread count */
static void csv_machine_rows(FILE *csv, run *R)
{
    const shape gs = {GEMM_N, GEMM_N, GEMM_N}, z = {0, 0, 0};
    int t, i;
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        char ts[8];
        snprintf(ts, sizeof ts, "%d", th);
        csv_row(csv, "machine", "sgemm_start", gs, ts, R->peak[th - 1], "GFLOP/s", NAN, NAN, NAN, NAN, NAN, "");
        csv_row(csv, "machine", "sgemm_end", gs, ts, R->peak2[th - 1], "GFLOP/s", NAN, NAN, NAN, NAN, NAN, "");
        csv_row(csv, "machine", "memcpy", z, ts, R->copy[th - 1], "GB/s", NAN, NAN, NAN, NAN, NAN, "read+write");
        for (i = 0; i < R->nrs; i++)
            csv_row(csv, "machine", "sgemm_skinny", (shape){SKINNY_K, R->rs[i], R->rs[i]}, ts,
                    skinny_rate(&R->sk, R->rs[i], th, &R->o), "GFLOP/s", NAN, NAN, NAN, NAN, NAN,
                    "C(m x r) = A(m x r) B(r x r), column-major");
    }
}

/* shape u[i] at th BLAS threads: LoRA-RITE, AdamW, the plain loop if timed, and the lower bound */
static void csv_layer_rows_of(FILE *csv, run *R, int i, int th)
{
    const layer_result *r = &R->res[i][th - 1];
    const rite_memory *mem = R->mem[i];
    const step_bound *bd = &R->bnd[i][th - 1];
    shape s = R->u[i];
    char ts[8], note[160];
    double gf = nominal_gflops(s, r->rite.med);
    snprintf(ts, sizeof ts, "%d", th);
    csv_row(csv, "layer", "rite", s, ts, scale_stats(r->rite, 1e3), "ms", r->ratio.med, gf,
            100 * gf / R->peak_best[th - 1], (double)mem[0].state_bytes, state_numbers(mem[0].state_bytes, s, 0),
            "ratio = RITE/AdamW");
    csv_row(csv, "layer", "adamw", s, ts, scale_stats(r->adamw, 1e3), "ms", NAN, NAN, NAN,
            (double)mem[1].state_bytes, state_numbers(mem[1].state_bytes, s, 1), "");
    if (r->has_plain)
        csv_row(csv, "layer", "plain_adamw", s, ts, scale_stats(r->plain, 1e3), "ms", r->plain_ratio.med, NAN, NAN,
                NAN, NAN, "ratio = library AdamW / plain loop");
    /* the lower bound: one value, from the medians of memcpy and skinny sgemm */
    snprintf(note, sizeof note,
             "ratio = RITE/bound; gflops = skinny sgemm rate; bound = max(bytes %.4g ms, flops %.4g ms)",
             bd->bytes_s * 1e3, bd->flops_s * 1e3);
    csv_row(csv, "layer", "rite_bound", s, ts, single_value(1, bd->s * 1e3), "ms", r->rite.med / bd->s,
            skinny_rate(&R->sk, s.r, th, &R->o).med, NAN, NAN, NAN, note);
}

/* the fits of the sweep of m + n: ordinary and relative, both optimizers, every thread count */
static void csv_fit_rows(FILE *csv, const run *R)
{
    int t, opt, w;
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        char ts[8], note[128];
        snprintf(ts, sizeof ts, "%d", th);
        for (opt = 0; opt < 2; opt++)
            for (w = 0; w < 2; w++) {
                const fit *ft = w ? &R->rfits[opt][th - 1] : &R->fits[opt][th - 1];
                if (!ft->ok) continue;
                snprintf(note, sizeof note, "%s: t = %.6g ms + %.6g ms * (m+n)", w ? "relative fit" : "least squares",
                         ft->a, ft->b);
                csv_row(csv, "fit", opt ? "adamw" : "rite", (shape){0, 0, 16}, ts,
                        single_value(R->g[1].n, 100 * ft->maxdev), "% max deviation", NAN, NAN, NAN, NAN, NAN, note);
            }
    }
}

/* the whole model: every mode measured, both optimizers */
static void csv_model_rows(FILE *csv, const run *R)
{
    const model_result *mres = &R->mres;
    int mode, opt;
    for (mode = 0; mode < MODE_COUNT; mode++) {
        int api = mode == MODE_MODEL1 || mode == MODE_MODEL2;
        if (!mres->done[mode]) continue;
        for (opt = 0; opt < 2; opt++) {
            char note[128];
            snprintf(note, sizeof note, "%s; %d layers; ratio = speed-up over %s", mode_name[mode], mres->nl,
                     mode_name[mode_base[mode]]);
            csv_row(csv, "model", opt ? "adamw" : "rite", (shape){0, 0, 16}, mode_tag[mode],
                    scale_stats(mres->t[opt][mode], 1e3), "ms", mres->speedup[opt][mode].med, NAN, NAN,
                    api ? (double)mres->api_mem[opt][mode - MODE_MODEL1].state_bytes : (double)mres->state_bytes[opt],
                    NAN, note);
        }
    }
}

/* bench.csv: every measurement, long format; 0, or 1 if it cannot be written */
static int write_csv(run *R)
{
    char path[4096];
    FILE *csv = fopen(csv_path(&R->o, "bench.csv", path, sizeof path), "w");
    int t, i;
    if (!csv) {
        fprintf(stderr, "bench: cannot write %s\n", path);
        return 1;
    }
    fprintf(csv, "section,name,m,n,r,threads,reps,median,min,p25,p75,max,unit,ratio,gflops,pct_peak,"
                 "state_bytes,state_numbers,note\n");
    if (!R->o.model_only) csv_machine_rows(csv, R);
    for (i = 0; i < R->nu; i++)
        for (t = 0; t < R->nthr; t++) csv_layer_rows_of(csv, R, i, R->thr_list[t]);
    csv_fit_rows(csv, R);
    if (R->o.model) csv_model_rows(csv, R);
    fclose(csv);
    printf("\nwrote %s\n", path);
    return 0;
}

/* ---- the picture -------------------------------------------------------------------------------- */

/* the two panels: time vs m + n (the fitted line of LoRA-RITE last, if any), time vs r */
typedef struct picture {
    series sm[5], sr[4];
    int nsm, nsr;
} picture;

/* the series of both panels, per thread count and optimizer, and the fitted line */
static void build_series(const run *R, picture *p)
{
    static const char *col[4] = {"#c0392b", "#2471a3", "#e67e22", "#17a589"};
    static const char *nm[2][2] = {{"LoRA-RITE, 1 thread", "AdamW, 1 thread"},
                                   {"LoRA-RITE, 2 threads", "AdamW, 2 threads"}};
    const group *gm = &R->g[1], *gr = &R->g[2];
    const fit *f = &R->fits[0][R->thr_list[0] - 1];
    int t, opt, i;
    memset(p, 0, sizeof *p);
    for (t = 0; t < R->nthr; t++) {
        int th = R->thr_list[t];
        for (opt = 0; opt < 2; opt++) {
            series *a = &p->sm[p->nsm++], *b = &p->sr[p->nsr++];
            a->name = b->name = nm[th - 1][opt];
            a->color = b->color = col[(th - 1) * 2 + opt];
            for (i = 0; i < gm->n; i++) {
                const layer_result *r = result_of(R, gm->s[i], th);
                a->x[a->n] = gm->s[i].m + gm->s[i].n;
                a->y[a->n++] = (opt ? r->adamw.med : r->rite.med) * 1e3;
            }
            for (i = 0; i < gr->n; i++) {
                const layer_result *r = result_of(R, gr->s[i], th);
                b->x[b->n] = gr->s[i].r;
                b->y[b->n++] = (opt ? r->adamw.med : r->rite.med) * 1e3;
            }
        }
    }
    if (f->ok) {   /* the fitted line of LoRA-RITE */
        series *a = &p->sm[p->nsm++];
        a->name = R->thr_list[0] == 1 ? "fit a + b(m+n), LoRA-RITE 1 thread" : "fit a + b(m+n), LoRA-RITE 2 threads";
        a->color = "#555555";
        a->dashed = 1;
        a->n = 2;
        a->x[0] = p->sm[0].x[0];
        a->x[1] = p->sm[0].x[p->sm[0].n - 1];
        a->y[0] = f->a + f->b * a->x[0];
        a->y[1] = f->a + f->b * a->x[1];
    }
}

/* gnuplot's data: a column per series, and the fitted line at each m + n last */
static void write_gnuplot_data(FILE *f1, FILE *f2, const run *R, const picture *p)
{
    const fit *lf = &R->fits[0][R->thr_list[0] - 1];
    int k, i, ns = 2 * R->nthr;
    fprintf(f1, "# m+n");
    fprintf(f2, "# r");
    for (k = 0; k < ns; k++) {
        fprintf(f1, "\t\"%s\"", p->sm[k].name);
        fprintf(f2, "\t\"%s\"", p->sr[k].name);
    }
    fprintf(f1, "\t\"fit\"\n");   /* last column: the fitted line at each m + n */
    fprintf(f2, "\n");
    for (i = 0; i < p->sm[0].n; i++) {
        fprintf(f1, "%g", p->sm[0].x[i]);
        for (k = 0; k < ns; k++) fprintf(f1, "\t%.6g", p->sm[k].y[i]);
        fprintf(f1, "\t%.6g\n", lf->ok ? lf->a + lf->b * p->sm[0].x[i] : NAN);
    }
    for (i = 0; i < p->sr[0].n; i++) {
        fprintf(f2, "%g", p->sr[0].x[i]);
        for (k = 0; k < ns; k++) fprintf(f2, "\t%.6g", p->sr[k].y[i]);
        fprintf(f2, "\n");
    }
}

/* gnuplot's script: both panels side by side into png */
static void write_gnuplot_script(FILE *fg, const run *R, const picture *p, const char *dat1, const char *dat2,
                                 const char *png)
{
    int k, ns = 2 * R->nthr;
    fprintf(fg, "# made by bench: time per step of one layer, LoRA-RITE and AdamW\n");
    fprintf(fg, "set terminal pngcairo size 1300,520 font \",11\"\nset output \"%s\"\n", png);
    fprintf(fg, "set multiplot layout 1,2\nset grid\nset key top left Left reverse\n");
    fprintf(fg, "set title \"one step vs m + n (m = n, r = 16)\"\nset xlabel \"m + n\"\n"
                "set ylabel \"ms per step\"\nset xrange [0:*]\nset yrange [0:*]\n");
    fprintf(fg, "plot ");
    for (k = 0; k < ns; k++)
        fprintf(fg, "\"%s\" using 1:%d with linespoints lw 2 pt 7 lc rgb \"%s\" title \"%s\", ", dat1, k + 2,
                p->sm[k].color, p->sm[k].name);
    if (p->nsm > ns)
        fprintf(fg, "\"%s\" using 1:%d with lines dt 2 lw 1.5 lc rgb \"#555555\" title \"%s\"", dat1, ns + 2,
                p->sm[p->nsm - 1].name);
    else
        fprintf(fg, "1/0 notitle");
    fprintf(fg, "\nset title \"one step vs r (m = n = 4096)\"\nset xlabel \"r\"\nset logscale xy\n"
                "set xrange [%g:%g]\nset yrange [*:*]\nset xtics (4, 8, 16, 32, 64, 128)\nplot ",
            p->sr[0].x[0] / 1.25, p->sr[0].x[p->sr[0].n - 1] * 1.25);
    for (k = 0; k < ns; k++)
        fprintf(fg, "%s\"%s\" using 1:%d with linespoints lw 2 pt 7 lc rgb \"%s\" title \"%s\"", k ? ", " : "", dat2,
                k + 2, p->sr[k].color, p->sr[k].name);
    fprintf(fg, "\nunset multiplot\n");
}

/* the picture as PNG through gnuplot; 1 if gnuplot made it */
static int plot_with_gnuplot(const run *R, const picture *p)
{
    char dat1[4096], dat2[4096], gp[4096], png[4096], cmd[8300];
    FILE *f1 = fopen(csv_path(&R->o, "bench_scaling_mn.dat", dat1, sizeof dat1), "w");
    FILE *f2 = fopen(csv_path(&R->o, "bench_scaling_r.dat", dat2, sizeof dat2), "w");
    FILE *fg = fopen(csv_path(&R->o, "bench_scaling.gp", gp, sizeof gp), "w");
    int gnuplot_ok = 0;
    csv_path(&R->o, "bench_scaling.png", png, sizeof png);
    if (f1 && f2 && fg) {
        write_gnuplot_data(f1, f2, R, p);
        write_gnuplot_script(fg, R, p, dat1, dat2, png);
    }
    if (f1) fclose(f1);
    if (f2) fclose(f2);
    if (fg) {
        fclose(fg);
        snprintf(cmd, sizeof cmd, "gnuplot '%s'", gp);
        gnuplot_ok = system(cmd) == 0;
    }
    if (gnuplot_ok) printf("wrote %s (from %s)\n", png, gp);
    else printf("gnuplot failed; drawing SVG instead\n");
    return gnuplot_ok;
}

/* the picture as SVG, drawn here; 0, or 1 if it cannot be written */
static int write_svg(const run *R, const picture *p)
{
    char path[4096];
    FILE *f = fopen(csv_path(&R->o, "bench_scaling.svg", path, sizeof path), "w");
    if (!f) {
        fprintf(stderr, "bench: cannot write %s\n", path);
        return 1;
    }
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"1200\" height=\"480\" "
               "font-family=\"sans-serif\">\n<rect width=\"1200\" height=\"480\" fill=\"white\"/>\n");
    if (R->g[1].n >= 2)
        svg_panel(f, 0, 0, 600, 480, "one step vs m + n (m = n, r = 16)", "m + n", "ms per step", p->sm, p->nsm, 0,
                  0);
    if (R->g[2].n >= 2)
        svg_panel(f, 600, 0, 600, 480, "one step vs r (m = n = 4096)", "r (log scale)", "ms per step (log scale)",
                  p->sr, p->nsr, 2, 10);
    fprintf(f, "</svg>\n");
    fclose(f);
    printf("wrote %s\n", path);
    return 0;
}

/* the scaling picture, when a sweep has two shapes or more: gnuplot's PNG, else (or with --svg) SVG;
   0, or 1 if it cannot be written */
static int draw_picture(const run *R)
{
    picture p;
    int gnuplot_ok = 0;
    if (R->g[1].n < 2 && R->g[2].n < 2) return 0;
    build_series(R, &p);
    if (!R->o.svg && system("command -v gnuplot >/dev/null 2>&1") == 0) gnuplot_ok = plot_with_gnuplot(R, &p);
    return gnuplot_ok ? 0 : write_svg(R, &p);
}

/* ---- main ---------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    run *R = (run *)xmalloc(sizeof *R, "run");
    int rc;
    memset(R, 0, sizeof *R);
    R->o = parse(argc, argv);
    R->t_start = now();
    run_setup(R);
    plan_shapes(R);
    print_header(R);
    if (!R->o.model_only) measure_machine(R);
    measure_layers(R);
    if (!R->o.model_only) measure_peak_again(R);
    print_layer_table(R);
    print_plain_loop(R);
    print_state_table(R);
    fit_mn_sweep(R);
    fflush(stdout);   /* the layer part is out before the model's long run */
    if (R->o.model) measure_model(R);
    print_targets(R);
    rc = write_csv(R);
    if (rc == 0) rc = draw_picture(R);
    if (rc == 0) {
        print_load("at end");
        printf("total time %.1f s\n", now() - R->t_start);
    }
    free(g_pool);
    free(R);
    return rc;
}
