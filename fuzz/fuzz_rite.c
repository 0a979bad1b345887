/* fuzz_rite.c - a libFuzzer harness for lora_rite.h that checks the contract.

   The fuzzer's bytes describe one to three layers (sizes, optimizer,
   precision, layouts, leading dimensions, allocator, hyper-parameters; some
   of them invalid on purpose), the contents of their factors and gradients
   (zero factors, repeated or nearly dependent columns, condition numbers up
   to 1e6, NaN, Inf, huge and subnormal values, NaN in the padding between
   rows), and a sequence of calls: steps, two-phase prepare/apply with a total
   sum of squares that may be wrong, training loops, set_lr, set_config,
   reset, factors_changed, rescaled factors, state copies, checkpoints saved
   and loaded back (intact, mutated, from an older step, into another layer,
   with a re-computed checksum), checkpoints made of raw fuzzer bytes, and
   calls with NULL or wrong-precision arguments.

   After every call it checks the contract of lora_rite.h and aborts on any
   violation:
   - a call that fails changes nothing: factors (padding included),
     gradients, the state bytes of rite_state_copy, the step count and the
     configuration are byte for byte as before;
   - a step or apply that succeeds leaves every factor and every state
     number finite, counts one step, and writes neither the padding nor the
     gradients; with lr = 0 (and balance off) the factors keep their values;
   - NaN or Inf in a factor or gradient is reported as such, and only then;
     a bad desc or config is rejected with a code that names a real problem,
     and a good one is accepted; a failed rite_init leaves *layer NULL;
   - prepare, set_config and the queries change neither factors nor state,
     factors_changed only its flag; reset zeroes the state; no allocator
     call happens outside rite_init; rite_init takes what rite_memory_query
     reports;
   - checkpoints: a saved checkpoint loads back to the same state, a damaged
     or foreign one is rejected; rite_status_string is never NULL;
   - LAPACK is never given an illegal argument (its xerbla, which would
     print, is replaced by a check).

   Build with clang -fsanitize=fuzzer,address,undefined (fuzz/CMakeLists.txt).
   With FUZZ_RITE_STANDALONE defined it has its own main that replays files
   and directories, for compilers without libFuzzer.

   A loaded checkpoint must hold only finite numbers (the header says the
   load checks that). FUZZ_RITE_STRICT_LOAD: also require that a hand-made
   checkpoint (bytes changed, checksum re-computed) which loads has what a
   step would leave: a step count >= 0, second moments and escaped mass
   >= 0, a 0/1 flag. Off by default: the header does not promise it. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

/* ------------------------------------------------------------ checking */

static void fz_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "fuzz_rite: contract violated: %s (%s:%d)\n", what, file, line);
    fflush(stderr);
    abort();
}

#define FZ_CHECK(cond) do { if (!(cond)) fz_fail(#cond, __FILE__, __LINE__); } while (0)

/* LAPACK reports an illegal argument through xerbla, which prints (and
   LAPACKE through LAPACKE_xerbla). The library must never pass one: these
   definitions replace the libraries' own where the linker allows it. */
int xerbla_(const char *name, const int *info, int len);
int xerbla_(const char *name, const int *info, int len)
{
    fprintf(stderr, "fuzz_rite: LAPACK routine %.*s got an illegal argument %d\n", len > 0 && len < 16 ? len : 6,
            name, info ? *info : 0);
    fz_fail("the library passed an illegal argument to LAPACK", __FILE__, __LINE__);
    return 0;
}

void LAPACKE_xerbla(const char *name, int info);
void LAPACKE_xerbla(const char *name, int info)
{
    fprintf(stderr, "fuzz_rite: LAPACKE %s: wrong parameter %d\n", name, info);
    fz_fail("the library passed an illegal argument to LAPACKE", __FILE__, __LINE__);
}

/* ------------------------------------------------------------ input */

typedef struct fz_in {
    const uint8_t *p;
    size_t n, i;
} fz_in;

static unsigned fz_u8(fz_in *in) { return in->i < in->n ? in->p[in->i++] : 0u; }
static unsigned fz_u16(fz_in *in) { unsigned a = fz_u8(in); return a | fz_u8(in) << 8; }
static int fz_more(const fz_in *in) { return in->i < in->n; }

/* hyper-parameter values: ordinary, boundary and invalid */
static const double fz_specials[] = {
    0.0, -0.0, 1.0, -1.0, 0.5, 0.9, 0.999, 0.9999999999999999, 1e-3, 1e-6, 1e-8, 1e-30,
    1e-320, DBL_MIN, 1e15, 1e30, 1e300, DBL_MAX, HUGE_VAL, -HUGE_VAL, 0.0 /* NaN */, 2.0,
    10.0, 1e-12, 3.4028234663852886e38, 3.5e38, 1e-45, -1e-300, 0.1, 1e6, 1e-2, 1.0 - 1e-3};
#define FZ_NSPECIAL (sizeof fz_specials / sizeof fz_specials[0])

static double fz_special(unsigned b)
{
    b %= (unsigned)FZ_NSPECIAL;
    return b == 20 ? nan("") : fz_specials[b];
}

/* a value for one element: non-finite, extreme, subnormal, signed zero */
static double fz_element_special(unsigned b)
{
    static const double v[] = {0.0, HUGE_VAL, -HUGE_VAL, 3.4028234663852886e38, -3.4028234663852886e38,
                               DBL_MAX, 1.401298464324817e-45, 1e-310, 0.0, -0.0, 1e30, -1e30,
                               1e20, 1e38, 3.5e38, 1e300};
    b %= 16u;
    return b == 0 ? nan("") : v[b];
}

/* mostly the default, sometimes a special value */
static double fz_pick(fz_in *in, double dflt)
{
    unsigned b = fz_u8(in);
    return b < 160 ? dflt : fz_special(b - 160);
}

/* scale of a fill: ordinary, wide, extreme */
static double fz_scale(unsigned b)
{
    static const double ord[7] = {1, 0.1, 10, 1e-2, 1e2, 1e-3, 1e3};
    static const double ext[16] = {1e-38, 1e-40, 1e-45, 1e-300, 1e-310, 1e38, 1e300, 3e38,
                                   1e-30, 1e15, 1e20, 1e-20, 2e19, 1e30, 1e-35, 1e35};
    if (b < 96) return ord[b % 7];
    if (b < 224) return pow(10.0, (double)((int)(b - 96) / 2 - 32));
    return ext[(b - 224) % 16];
}

/* ------------------------------------------------------------ model */

#define FZ_MAXK 24
#define FZ_MAXLAYERS 3
#define FZ_MAXBUF 8192     /* bytes of one factor or gradient buffer */
#define FZ_MAXSTATE 32768  /* bytes of the state of one layer */
#define FZ_MAXCKPT (FZ_MAXSTATE + 128)

enum { FZ_NO = 0, FZ_YES = 1, FZ_UNKNOWN = 2 };   /* is a prepare pending */

typedef struct fz_alloc {
    int on;           /* this layer uses the hooks */
    long fail_at;     /* refuse this request (1-based); 0 = never */
    long requests, allocs, frees;
    size_t bytes;
} fz_alloc;

static void *fz_alloc_fn(size_t size, void *user)
{
    fz_alloc *a = (fz_alloc *)user;
    void *p;
    a->requests++;
    if (a->fail_at && a->requests == a->fail_at) return NULL;
    p = malloc(size);
    if (p) {
        a->allocs++;
        a->bytes += size;
    }
    return p;
}

static void fz_free_fn(void *p, void *user)
{
    fz_alloc *a = (fz_alloc *)user;
    if (p) a->frees++;
    free(p);
}

typedef struct fz_layer {
    rite_layer *l;
    rite_desc d;                /* as resolved by the harness' own model */
    rite_config cfg;            /* the configuration last set */
    int f32;
    size_t es;
    int k[2];                   /* rows of L, R */
    size_t cnt[2], cntg[2];     /* elements of the factor and gradient buffers */
    void *X[2], *G[2];
    void *X2[2], *G2[2];        /* other buffers, for a second prepare */
    double *A;                  /* target of the least-squares loss (m x n) */
    double gscale;              /* scale of loss gradients */
    int pending;
    double own;                 /* the sum of squares of the pending prepare */
    int pending_alt;            /* the pending prepare was given G2 */
    int tainted;                /* the state came from a forged checkpoint (until a
                                   reset or the load of a genuine one) */
    long long steps;
    fz_alloc alloc;
    unsigned char ckpt[FZ_MAXCKPT];   /* a checkpoint saved earlier */
    size_t ckpt_n;
    unsigned ckpt_opts;
    int ckpt_tainted;
    unsigned char ckpt_state[FZ_MAXSTATE];
} fz_layer;

typedef struct fz_snap {
    unsigned char x[2][FZ_MAXBUF], g[2][FZ_MAXBUF];
    unsigned char state[FZ_MAXSTATE];
    size_t state_n;
    long long steps;
    rite_config cfg;
    long requests;
} fz_snap;

static fz_layer fz_lay[FZ_MAXLAYERS];
static int fz_nl;
static fz_snap fz_snaps[FZ_MAXLAYERS];

static double fz_get(const fz_layer *x, const void *buf, size_t i)
{
    return x->f32 ? (double)((const float *)buf)[i] : ((const double *)buf)[i];
}

static void fz_set(const fz_layer *x, void *buf, size_t i, double v)
{
    if (x->f32) ((float *)buf)[i] = (float)v;
    else ((double *)buf)[i] = v;
}

static int fz_ld(const fz_layer *x, int side) { return side ? x->d.ld_R : x->d.ld_L; }
static int fz_ldg(const fz_layer *x, int side) { return side ? x->d.ld_gR : x->d.ld_gL; }
static rite_layout fz_layout(const fz_layer *x, int side) { return side ? x->d.layout_R : x->d.layout_L; }

/* the options a checkpoint must match: keep_basis alone (escape,
   relative_eps and balance are hyper-parameters, not compared) */
static unsigned fz_opts(const fz_layer *x)
{
    if (x->d.optimizer == RITE_ADAMW) return 0;
    return x->d.keep_basis ? 8u : 0u;
}

static int fz_finite_logical(const fz_layer *x, const void *buf, int side, int ld)
{
    int i, j, r = x->d.r;
    for (i = 0; i < x->k[side]; i++)
        for (j = 0; j < r; j++)
            if (!isfinite(fz_get(x, buf, tu_index(fz_layout(x, side), ld, i, j)))) return 0;
    return 1;
}

static int fz_factors_finite(const fz_layer *x)
{
    return fz_finite_logical(x, x->X[0], 0, fz_ld(x, 0)) && fz_finite_logical(x, x->X[1], 1, fz_ld(x, 1));
}

static int fz_grads_finite(const fz_layer *x)
{
    return fz_finite_logical(x, x->G[0], 0, fz_ldg(x, 0)) && fz_finite_logical(x, x->G[1], 1, fz_ldg(x, 1));
}

/* 1 when storage index idx of a buffer holds a logical element */
static int fz_is_logical(const fz_layer *x, int side, int ld, size_t idx)
{
    size_t inner = fz_layout(x, side) == RITE_RANK_LAST ? (size_t)x->d.r : (size_t)x->k[side];
    return idx % (size_t)ld < inner;
}

/* ------------------------------------------------------------ state bytes */

static size_t fz_read_state(const fz_layer *x, unsigned char *dst)
{
    size_t n = rite_state_size(x->l);
    FZ_CHECK(n > 0 && n <= FZ_MAXSTATE);
    FZ_CHECK(rite_state_copy(x->l, dst, n) == RITE_OK);
    return n;
}

/* What fz_state_scan finds wrong. */
enum { FZ_NONFINITE = 1, FZ_BADSIGN = 2 };

/* Scans the bytes of rite_state_copy: an int64 step count, then for L and for
   R the first moment (k x r, layer precision) and
     AdamW:     the second moment (k x r, layer precision, never negative);
     LoRA-RITE: the second moment, packed ((r^2 + r)/2 doubles), the basis
                data (k x r in the layer precision with keep_basis, else
                r x r doubles) and the escaped mass (a double, never negative);
   then for LoRA-RITE without keep_basis an int flag (0 or 1: the factors
   were changed outside a step). Returns FZ_NONFINITE when a number is not
   finite, FZ_BADSIGN when a sign or the flag is out of range (possible only
   after a hand-made checkpoint), or both; reports (on stderr) the first
   problem of a kind in the mask report. */
static int fz_state_scan(const fz_layer *x, const unsigned char *st, size_t n, long long *steps, int report)
{
    static const char *const names[2][4] = {{"first moment", "second moment", "?", "?"},
                                            {"first moment", "second moment", "basis data", "escaped mass"}};
    size_t off = 8, r = (size_t)x->d.r, need = 8, i;
    int side, field = 0, bad = 0, rite = x->d.optimizer == RITE_LORA_RITE;
    int flag = rite && !x->d.keep_basis;
    for (side = 0; side < 2; side++) {
        size_t kr = (size_t)x->k[side] * r;
        need += kr * x->es + (rite ? (r * r + r) / 2 * 8 + (x->d.keep_basis ? kr * x->es : r * r * 8) + 8
                                   : kr * x->es);
    }
    if (flag) need += sizeof(int);
    if (need != n) {
        fprintf(stderr, "fuzz_rite: rite_state_copy layout changed (%zu bytes, expected %zu); "
                        "update fz_state_scan\n", n, need);
        abort();
    }
    memcpy(steps, st, 8);
#define FZ_SCAN(count, T, nonneg)                                                              \
    for (i = 0; i < (count); i++, off += sizeof(T)) {                                          \
        T v;                                                                                   \
        int b;                                                                                 \
        memcpy(&v, st + off, sizeof v);                                                        \
        b = !isfinite(v) ? FZ_NONFINITE : (nonneg) && v < 0 ? FZ_BADSIGN : 0;                  \
        if ((b & report) && !(bad & report))                                                   \
            fprintf(stderr, "fuzz_rite: state of %s: %s[%zu] = %g\n", side ? "R" : "L",         \
                    names[rite][field], i, (double)v);                                         \
        bad |= b;                                                                              \
    }                                                                                          \
    field++;
    for (side = 0; side < 2; side++) {
        size_t kr = (size_t)x->k[side] * r;
        field = 0;
        if (x->f32) { FZ_SCAN(kr, float, 0) } else { FZ_SCAN(kr, double, 0) }
        if (!rite) {
            if (x->f32) { FZ_SCAN(kr, float, 1) } else { FZ_SCAN(kr, double, 1) }
            continue;
        }
        FZ_SCAN((r * r + r) / 2, double, 0)
        if (x->d.keep_basis) {
            if (x->f32) { FZ_SCAN(kr, float, 0) } else { FZ_SCAN(kr, double, 0) }
        } else {
            FZ_SCAN(r * r, double, 0)
        }
        FZ_SCAN(1, double, 1)
    }
#undef FZ_SCAN
    if (flag) {
        int v;
        memcpy(&v, st + off, sizeof v);
        if (v != 0 && v != 1) bad |= FZ_BADSIGN;
    }
    return bad;
}

/* ------------------------------------------------------------ snapshots */

static void fz_snapshot(const fz_layer *x, fz_snap *s)
{
    int side;
    for (side = 0; side < 2; side++) {
        memcpy(s->x[side], x->X[side], x->cnt[side] * x->es);
        memcpy(s->g[side], x->G[side], x->cntg[side] * x->es);
    }
    s->state_n = fz_read_state(x, s->state);
    s->steps = rite_step_count(x->l);
    s->cfg = rite_get_config(x->l);
    s->requests = x->alloc.requests;
    FZ_CHECK(s->steps == x->steps);
}

static int fz_cfg_same(const rite_config *a, const rite_config *b)
{
    return !memcmp(&a->lr, &b->lr, 8) && !memcmp(&a->beta1, &b->beta1, 8) && !memcmp(&a->beta2, &b->beta2, 8) &&
           !memcmp(&a->eps, &b->eps, 8) && !memcmp(&a->eps_root, &b->eps_root, 8) &&
           !memcmp(&a->clip, &b->clip, 8) && !memcmp(&a->skip, &b->skip, 8) && !memcmp(&a->cap, &b->cap, 8) &&
           !memcmp(&a->weight_decay, &b->weight_decay, 8) && a->escape == b->escape &&
           a->relative_eps == b->relative_eps && a->balance == b->balance;
}

/* gradients never change; no allocation outside rite_init */
static void fz_check_const(const fz_layer *x, const fz_snap *s)
{
    FZ_CHECK(!memcmp(s->g[0], x->G[0], x->cntg[0] * x->es));
    FZ_CHECK(!memcmp(s->g[1], x->G[1], x->cntg[1] * x->es));
    FZ_CHECK(x->alloc.requests == s->requests);
}

/* everything exactly as in the snapshot */
static void fz_check_unchanged(const fz_layer *x, const fz_snap *s)
{
    static unsigned char now[FZ_MAXSTATE];
    rite_config c = rite_get_config(x->l);
    fz_check_const(x, s);
    FZ_CHECK(!memcmp(s->x[0], x->X[0], x->cnt[0] * x->es));
    FZ_CHECK(!memcmp(s->x[1], x->X[1], x->cnt[1] * x->es));
    FZ_CHECK(fz_read_state(x, now) == s->state_n);
    FZ_CHECK(!memcmp(now, s->state, s->state_n));
    FZ_CHECK(rite_step_count(x->l) == s->steps);
    FZ_CHECK(fz_cfg_same(&c, &s->cfg));
}

/* after a successful step or apply */
static void fz_check_stepped(fz_layer *x, const fz_snap *s)
{
    static unsigned char now[FZ_MAXSTATE];
    long long k;
    int side;
    size_t i;
    fz_check_const(x, s);
    FZ_CHECK(fz_factors_finite(x));
    for (side = 0; side < 2; side++) {
        int ld = fz_ld(x, side);
        for (i = 0; i < x->cnt[side]; i++) {
            if (!fz_is_logical(x, side, ld, i)) {
                FZ_CHECK(!memcmp((const char *)x->X[side] + i * x->es, s->x[side] + i * x->es, x->es));
            } else if (x->cfg.lr == 0 && !(x->d.optimizer == RITE_LORA_RITE && x->cfg.balance)) {
                double before = x->f32 ? (double)((const float *)(const void *)s->x[side])[i]
                                       : ((const double *)(const void *)s->x[side])[i];
                FZ_CHECK(fz_get(x, x->X[side], i) == before);
            }
        }
    }
    FZ_CHECK(fz_read_state(x, now) == s->state_n);
    {
        int must = FZ_NONFINITE | (x->tainted ? 0 : FZ_BADSIGN);
        int bad = fz_state_scan(x, now, s->state_n, &k, must);
        FZ_CHECK(!(bad & must));
    }
    /* (the step count of a forged checkpoint may be anything: no overflow here) */
    x->steps = (long long)((unsigned long long)s->steps + 1u);
    FZ_CHECK(rite_step_count(x->l) == x->steps);
    FZ_CHECK(k == x->steps);
}

/* the status of a failed step or prepare names the right problem */
static void fz_check_step_error(const fz_layer *x, rite_status st)
{
    int ff = fz_factors_finite(x), gf = fz_grads_finite(x);
    if (!ff && !gf) FZ_CHECK(st == RITE_ERR_NONFINITE_FACTOR || st == RITE_ERR_NONFINITE_GRADIENT);
    else if (!ff) FZ_CHECK(st == RITE_ERR_NONFINITE_FACTOR);
    else if (!gf) FZ_CHECK(st == RITE_ERR_NONFINITE_GRADIENT);
    else FZ_CHECK(st == RITE_OK || st == RITE_ERR_NONFINITE_UPDATE || st == RITE_ERR_LAPACK);
}

static void fz_check_status_string(rite_status st)
{
    const char *s = rite_status_string(st);
    FZ_CHECK(s != NULL && s[0] != '\0');
}

/* ------------------------------------------------------------ filling buffers */

static void fz_logical_to_buf(const fz_layer *x, const double *lg, int side, void *buf, int ld)
{
    if (x->f32) tu_to_layout_f(lg, x->k[side], x->d.r, fz_layout(x, side), ld, (float *)buf);
    else tu_to_layout_d(lg, x->k[side], x->d.r, fz_layout(x, side), ld, (double *)buf);
}

static void fz_buf_to_logical(const fz_layer *x, const void *buf, int side, int ld, double *lg)
{
    if (x->f32) tu_from_layout_f((const float *)buf, x->k[side], x->d.r, fz_layout(x, side), ld, lg);
    else tu_from_layout_d((const double *)buf, x->k[side], x->d.r, fz_layout(x, side), ld, lg);
}

static double fz_lgL[FZ_MAXK * FZ_MAXK], fz_lgR[FZ_MAXK * FZ_MAXK];
static double fz_lgA[FZ_MAXK * FZ_MAXK], fz_lgB[FZ_MAXK * FZ_MAXK], fz_work[FZ_MAXK * FZ_MAXK];

/* Gradients of 0.5 ||L R^T - A||^2 at the current factors, times gscale,
   into G (or G2). */
static void fz_loss_gradients(fz_layer *x, void *const *G)
{
    int m = x->k[0], n = x->k[1], r = x->d.r, i;
    fz_buf_to_logical(x, x->X[0], 0, fz_ld(x, 0), fz_lgL);
    fz_buf_to_logical(x, x->X[1], 1, fz_ld(x, 1), fz_lgR);
    tu_lsq_loss_grad(fz_lgL, fz_lgR, x->A, m, n, r, fz_lgA, fz_lgB, fz_work);
    for (i = 0; i < m * r; i++) fz_lgA[i] *= x->gscale;
    for (i = 0; i < n * r; i++) fz_lgB[i] *= x->gscale;
    fz_logical_to_buf(x, fz_lgA, 0, G[0], fz_ldg(x, 0));
    fz_logical_to_buf(x, fz_lgB, 1, G[1], fz_ldg(x, 1));
}

/* One fill spec: kind byte (bits 0-2 pattern, bits 3-4 number of pokes,
   bit 7 for gradients: the loss gradient), scale byte, 16-bit seed, pokes
   (16-bit index, value byte). */
static void fz_fill_to(fz_layer *x, fz_in *in, int side, int grad, double *lg, void *const *G)
{
    unsigned kind = fz_u8(in), pokes = (kind >> 3) & 3u, p;
    double scale = fz_scale(fz_u8(in));
    tu_rng g;
    int k = x->k[side], r = x->d.r, i, j;
    g.s = 0x5eedull ^ (uint64_t)fz_u16(in) << 8 ^ (uint64_t)(side + 2 * grad);
    tu_fill_normal(&g, lg, (size_t)k * r, scale);
    switch (kind & 7u) {
    case 0: break;                                                   /* random */
    case 1: memset(lg, 0, (size_t)k * r * sizeof *lg); break;        /* zero */
    case 2:                                                          /* repeated columns */
        for (i = 0; i < k; i++)
            for (j = 1; j < r; j++) lg[i * r + j] = lg[i * r];
        break;
    case 3: {                                                        /* condition up to 1e6 */
        double c = pow(10.0, (double)(1 + tu_next(&g) % 6));
        for (j = 1; j < r; j++) {
            double f = pow(c, -(double)j / (double)(r - 1));
            for (i = 0; i < k; i++) lg[i * r + j] *= f;
        }
        break;
    }
    case 4: {                                                        /* zero columns */
        uint64_t bits = tu_next(&g);
        for (j = 0; j < r; j++)
            if (bits >> (j % 64) & 1u)
                for (i = 0; i < k; i++) lg[i * r + j] = 0;
        break;
    }
    case 5:                                                          /* nearly dependent */
        for (i = 0; i < k; i++)
            for (j = 1; j < r; j++) lg[i * r + j] = lg[i * r] * (1.0 + 1e-7 * tu_normal(&g));
        break;
    case 6:                                                          /* from the input bytes */
        for (i = 0; i < k * r; i++) lg[i] = (double)(int8_t)fz_u8(in) / 16.0 * scale;
        break;
    default:                                                         /* diagonal */
        for (i = 0; i < k; i++)
            for (j = 0; j < r; j++) lg[i * r + j] = i == j ? scale * (j + 1) : 0.0;
        break;
    }
    for (p = 0; p < pokes; p++) {
        unsigned idx = fz_u16(in) % (unsigned)(k * r);
        lg[idx] = fz_element_special(fz_u8(in));
    }
    if (grad) {
        if (kind & 0x80u) {
            x->gscale = scale;
            fz_loss_gradients(x, G);
            return;
        }
        fz_logical_to_buf(x, lg, side, G[side], fz_ldg(x, side));
    } else {
        fz_logical_to_buf(x, lg, side, x->X[side], fz_ld(x, side));
    }
}

static void fz_fill(fz_layer *x, fz_in *in, int side, int grad, double *lg)
{
    fz_fill_to(x, in, side, grad, lg, x->G);
}

/* ------------------------------------------------------------ descs */

/* the harness' own reading of the rules for a config (rite_desc_check,
   rite_set_config): made by rite_config_default for the layer's optimizer,
   lr, eps and weight decay finite in the layer's precision, and no
   LoRA-RITE option on an AdamW layer */
static int fz_config_rite_only(const rite_config *c)
{
    return c->eps_root != 0 || c->clip != 0 || c->skip != 0 || c->cap != 0 || c->escape || c->relative_eps ||
           c->balance;
}

static int fz_config_tag_ok(const rite_config *c, rite_optimizer opt)
{
    rite_config d = rite_config_default(opt);
    return c->tag == d.tag;
}

static int fz_config_valid(const rite_config *c, rite_optimizer opt, rite_precision prec)
{
    double top = prec == RITE_FLOAT32 ? (double)FLT_MAX : DBL_MAX;
    return fz_config_tag_ok(c, opt) && c->lr >= 0 && c->lr <= top && c->beta1 >= 0 && c->beta1 < 1 &&
           c->beta2 >= 0 && c->beta2 < 1 && c->eps >= 0 && c->eps <= top && c->eps_root >= 0 &&
           c->eps_root <= DBL_MAX && c->clip >= 0 && c->skip >= 0 && c->cap >= 0 && c->weight_decay >= 0 &&
           c->weight_decay <= top && !(opt == RITE_ADAMW && fz_config_rite_only(c));
}

/* the error codes a bad config may get */
static int fz_config_code_ok(const rite_config *c, rite_optimizer opt, rite_precision prec, rite_status st)
{
    double top = prec == RITE_FLOAT32 ? (double)FLT_MAX : DBL_MAX;
    return (st == RITE_ERR_CONFIG && (!fz_config_tag_ok(c, opt) || (opt == RITE_ADAMW && fz_config_rite_only(c)))) ||
           (st == RITE_ERR_LR && !(c->lr >= 0 && c->lr <= top)) ||
           (st == RITE_ERR_BETA1 && !(c->beta1 >= 0 && c->beta1 < 1)) ||
           (st == RITE_ERR_BETA2 && !(c->beta2 >= 0 && c->beta2 < 1)) ||
           (st == RITE_ERR_EPS && !(c->eps >= 0 && c->eps <= top)) ||
           (st == RITE_ERR_EPS_ROOT && !(c->eps_root >= 0 && c->eps_root <= DBL_MAX)) ||
           (st == RITE_ERR_CLIP && !(c->clip >= 0)) || (st == RITE_ERR_SKIP && !(c->skip >= 0)) ||
           (st == RITE_ERR_CAP && !(c->cap >= 0)) ||
           (st == RITE_ERR_WEIGHT_DECAY && !(c->weight_decay >= 0 && c->weight_decay <= top));
}

static void fz_read_config(fz_in *in, rite_config *c, rite_optimizer opt)
{
    unsigned o;
    *c = rite_config_default(opt);
    c->lr = fz_pick(in, c->lr);
    c->beta1 = fz_pick(in, c->beta1);
    c->beta2 = fz_pick(in, c->beta2);
    c->eps = fz_pick(in, c->eps);
    c->eps_root = fz_pick(in, c->eps_root);
    c->clip = fz_pick(in, c->clip);
    c->skip = fz_pick(in, c->skip);
    c->cap = fz_pick(in, c->cap);
    c->weight_decay = fz_pick(in, c->weight_decay);
    o = fz_u8(in);
    c->escape = o & 1u ? (o & 8u ? -1 : 1) : 0;
    c->relative_eps = o & 2u ? (o & 16u ? 7 : 1) : 0;
    c->balance = o & 4u ? 1 : 0;
}

/* Is a desc valid, and if not, is st an error it may get? (sizes here are
   small or plainly invalid, never too large to address) */
static int fz_desc_valid(const rite_desc *d, const rite_config *cfg)
{
    int pL, pR, ldL, ldR;
    if ((d->allocator.alloc == NULL) != (d->allocator.release == NULL)) return 0;
    if ((unsigned)d->optimizer > 1u || (unsigned)d->precision > 1u) return 0;
    if (d->m <= 0 || d->n <= 0 || d->r <= 0 || d->r > 46340 || d->r > (d->m < d->n ? d->m : d->n)) return 0;
    if ((unsigned)d->layout_L > 1u || (unsigned)d->layout_R > 1u) return 0;
    if (d->ld_L < 0 || d->ld_R < 0 || d->ld_gL < 0 || d->ld_gR < 0) return 0;
    pL = d->layout_L == RITE_RANK_LAST ? d->r : d->m;
    pR = d->layout_R == RITE_RANK_LAST ? d->r : d->n;
    ldL = d->ld_L ? d->ld_L : pL;
    ldR = d->ld_R ? d->ld_R : pR;
    if (ldL < pL || ldR < pR || (d->ld_gL ? d->ld_gL : ldL) < pL || (d->ld_gR ? d->ld_gR : ldR) < pR) return 0;
    return !d->config || fz_config_valid(cfg, d->optimizer, d->precision);
}

static int fz_desc_code_ok(const rite_desc *d, const rite_config *cfg, rite_status st)
{
    int pL, pR, minmn = d->m < d->n ? d->m : d->n;
    int sizes = d->m > 0 && d->n > 0 && d->r > 0, lays = (unsigned)d->layout_L <= 1u && (unsigned)d->layout_R <= 1u;
    switch (st) {
    case RITE_ERR_NULL_ARGUMENT: return (d->allocator.alloc == NULL) != (d->allocator.release == NULL);
    case RITE_ERR_OPTIMIZER: return (unsigned)d->optimizer > 1u;
    case RITE_ERR_PRECISION: return (unsigned)d->precision > 1u;
    case RITE_ERR_SIZE: return !sizes || d->r > 46340;
    case RITE_ERR_RANK: return sizes && d->r > minmn;
    case RITE_ERR_LAYOUT: return !lays;
    case RITE_ERR_LEADING_DIM:
        if (d->ld_L < 0 || d->ld_R < 0 || d->ld_gL < 0 || d->ld_gR < 0) return 1;
        if (!lays || !sizes) return 0;
        pL = d->layout_L == RITE_RANK_LAST ? d->r : d->m;
        pR = d->layout_R == RITE_RANK_LAST ? d->r : d->n;
        return (d->ld_L && d->ld_L < pL) || (d->ld_R && d->ld_R < pR) ||
               (d->ld_gL ? d->ld_gL : (d->ld_L ? d->ld_L : pL)) < pL ||
               (d->ld_gR ? d->ld_gR : (d->ld_R ? d->ld_R : pR)) < pR;
    default: return d->config && fz_config_code_ok(cfg, d->optimizer, d->precision, st);
    }
}

static int fz_ld_code(unsigned c, int packed)
{
    static const int pad[4] = {0, 0, 1, 3};
    return c == 0 ? 0 : packed + pad[c];
}

/* a desc that is wrong in one way (sometimes two) */
static void fz_break_desc(fz_in *in, rite_desc *d, fz_alloc *a, int depth)
{
    unsigned e = fz_u8(in) % 14u;
    int pL = d->layout_L == RITE_RANK_LAST ? d->r : d->m;
    switch (e) {
    case 0: d->m = 0; break;
    case 1: d->n = -1; break;
    case 2: d->r = 0; break;
    case 3: d->r = (d->m < d->n ? d->m : d->n) + 1; break;
    case 4: d->r = INT_MAX; break;
    case 5: d->layout_L = (rite_layout)2; break;
    case 6: d->layout_R = (rite_layout)-1; break;
    case 7: d->ld_L = pL > 1 ? pL - 1 : -1; break;
    case 8: d->ld_gR = -2; break;
    case 9: d->optimizer = (rite_optimizer)2; break;
    case 10: d->precision = (rite_precision)7; break;
    case 11: d->allocator.release = NULL; d->allocator.alloc = fz_alloc_fn; d->allocator.user_data = a; break;
    case 12: d->m = INT_MIN; d->r = 46341; break;
    default: if (depth == 0) { fz_break_desc(in, d, a, 1); fz_break_desc(in, d, a, 1); } break;
    }
}

/* Only descs whose layer is at most this large are created. */
#define FZ_MAX_LAYER_BYTES ((size_t)1 << 22)

/* Reads one layer: flags (bit 0 AdamW, 1 double, 2 L rank-first, 3 R
   rank-first, 4 keep_basis, 5 a config follows, 6 counting allocator,
   7 a broken variant is tried first), m, n, r, leading-dimension byte
   (2 bits each for ld_L, ld_R, ld_gL, ld_gR), padding byte, then the config,
   the breaking bytes, and four fill specs (L, R, gL, gR). */
static void fz_make_layer(fz_in *in, fz_layer *x)
{
    unsigned fl = fz_u8(in), ldb, padb;
    rite_desc d, bad;
    rite_config cfg, goodcfg;
    rite_memory mem;
    rite_status st, st2;
    rite_layer *l;
    tu_rng g;
    int side, minmn, pL, pR;
    size_t i;
    memset(x, 0, sizeof *x);
    memset(&d, 0, sizeof d);
    d.optimizer = fl & 1u ? RITE_ADAMW : RITE_LORA_RITE;
    d.precision = fl & 2u ? RITE_FLOAT64 : RITE_FLOAT32;
    d.layout_L = fl & 4u ? RITE_RANK_FIRST : RITE_RANK_LAST;
    d.layout_R = fl & 8u ? RITE_RANK_FIRST : RITE_RANK_LAST;
    d.keep_basis = fl & 16u ? (fl & 128u ? 5 : 1) : 0;
    d.m = 1 + (int)(fz_u8(in) % FZ_MAXK);
    d.n = 1 + (int)(fz_u8(in) % FZ_MAXK);
    minmn = d.m < d.n ? d.m : d.n;
    d.r = 1 + (int)(fz_u8(in) % (unsigned)minmn);
    ldb = fz_u8(in);
    padb = fz_u8(in);
    pL = d.layout_L == RITE_RANK_LAST ? d.r : d.m;
    pR = d.layout_R == RITE_RANK_LAST ? d.r : d.n;
    d.ld_L = fz_ld_code(ldb & 3u, pL);
    d.ld_R = fz_ld_code(ldb >> 2 & 3u, pR);
    d.ld_gL = fz_ld_code(ldb >> 4 & 3u, pL);
    d.ld_gR = fz_ld_code(ldb >> 6 & 3u, pR);
    if (fl & 64u) {
        x->alloc.on = 1;
        d.allocator.alloc = fz_alloc_fn;
        d.allocator.release = fz_free_fn;
        d.allocator.user_data = &x->alloc;
    }
    if (fl & 32u) {
        fz_read_config(in, &cfg, d.optimizer);
        d.config = &cfg;
    } else {
        cfg = rite_config_default(d.optimizer);
    }

    /* a broken variant first, when asked: desc_check, memory_query and init
       agree, and a failed init leaves *layer NULL */
    bad = d;
    if (fl & 128u) fz_break_desc(in, &bad, &x->alloc, 0);
    st = rite_desc_check(&bad);
    fz_check_status_string(st);
    if (fz_desc_valid(&bad, &cfg)) FZ_CHECK(st == RITE_OK);
    else FZ_CHECK(st != RITE_OK && fz_desc_code_ok(&bad, &cfg, st));
    memset(&mem, 0, sizeof mem);
    st2 = rite_memory_query(&bad, &mem);
    FZ_CHECK(st2 == st);
    FZ_CHECK(rite_memory_query(&bad, NULL) == RITE_ERR_NULL_ARGUMENT);
    if (st != RITE_OK || mem.total_bytes <= FZ_MAX_LAYER_BYTES) {
        long req = x->alloc.requests;
        l = (rite_layer *)&l;   /* not NULL: init must clear it */
        st2 = rite_init(&l, &bad);
        FZ_CHECK(st2 == st);
        if (st2 != RITE_OK) {
            FZ_CHECK(l == NULL);
            FZ_CHECK(x->alloc.requests == req);
        } else {
            rite_free(l);
        }
    }
    FZ_CHECK(rite_init(NULL, &d) == RITE_ERR_NULL_ARGUMENT);
    l = (rite_layer *)&l;
    FZ_CHECK(rite_init(&l, NULL) == RITE_ERR_NULL_ARGUMENT && l == NULL);

    /* the layer itself: its config replaced by the defaults if invalid */
    goodcfg = cfg;
    if (!fz_config_valid(&cfg, d.optimizer, d.precision)) {
        goodcfg = rite_config_default(d.optimizer);
        if (d.optimizer == RITE_LORA_RITE) {
            goodcfg.escape = cfg.escape;
            goodcfg.balance = cfg.balance;
            goodcfg.relative_eps = cfg.relative_eps;
        }
        d.config = &goodcfg;
    }
    FZ_CHECK(rite_memory_query(&d, &mem) == RITE_OK);
    if (x->alloc.on && (padb & 0x80u)) {
        /* an allocator that refuses */
        x->alloc.fail_at = x->alloc.requests + 1;
        l = (rite_layer *)&l;
        FZ_CHECK(rite_init(&l, &d) == RITE_ERR_OUT_OF_MEMORY && l == NULL);
        x->alloc.fail_at = 0;
    }
    {
        long req = x->alloc.requests;
        size_t bytes = x->alloc.bytes;
        st = rite_init(&x->l, &d);
        FZ_CHECK(st == RITE_OK && x->l != NULL);
        if (x->alloc.on) FZ_CHECK(x->alloc.requests > req && x->alloc.bytes - bytes == mem.total_bytes);
    }
    x->cfg = goodcfg;
    x->d = d;
    x->d.config = NULL;
    x->d.keep_basis = d.optimizer == RITE_LORA_RITE && d.keep_basis != 0;
    x->d.ld_L = d.ld_L ? d.ld_L : pL;
    x->d.ld_R = d.ld_R ? d.ld_R : pR;
    x->d.ld_gL = d.ld_gL ? d.ld_gL : x->d.ld_L;
    x->d.ld_gR = d.ld_gR ? d.ld_gR : x->d.ld_R;
    {   /* the resolved desc the layer reports */
        rite_desc got = rite_get_desc(x->l);
        rite_config c = rite_get_config(x->l);
        FZ_CHECK(got.m == x->d.m && got.n == x->d.n && got.r == x->d.r);
        FZ_CHECK(got.optimizer == x->d.optimizer && got.precision == x->d.precision);
        FZ_CHECK(got.layout_L == x->d.layout_L && got.layout_R == x->d.layout_R);
        FZ_CHECK(got.ld_L == x->d.ld_L && got.ld_R == x->d.ld_R);
        FZ_CHECK(got.ld_gL == x->d.ld_gL && got.ld_gR == x->d.ld_gR);
        FZ_CHECK(got.keep_basis == x->d.keep_basis && got.config == NULL);
        FZ_CHECK(fz_cfg_same(&c, &x->cfg));
        FZ_CHECK(rite_state_size(x->l) == mem.state_bytes);
    }
    x->f32 = d.precision == RITE_FLOAT32;
    x->es = x->f32 ? sizeof(float) : sizeof(double);
    x->k[0] = d.m;
    x->k[1] = d.n;
    x->gscale = 1.0;
    for (side = 0; side < 2; side++) {
        double pad;
        x->cnt[side] = tu_storage_count(fz_layout(x, side), fz_ld(x, side), x->k[side], d.r);
        x->cntg[side] = tu_storage_count(fz_layout(x, side), fz_ldg(x, side), x->k[side], d.r);
        FZ_CHECK(x->cnt[side] * x->es <= FZ_MAXBUF && x->cntg[side] * x->es <= FZ_MAXBUF);
        /* exact sizes: reading or writing one element past the end is caught */
        x->X[side] = malloc(x->cnt[side] * x->es);
        x->G[side] = malloc(x->cntg[side] * x->es);
        x->X2[side] = malloc(x->cnt[side] * x->es);
        x->G2[side] = malloc(x->cntg[side] * x->es);
        FZ_CHECK(x->X[side] && x->G[side] && x->X2[side] && x->G2[side]);
        /* the padding holds NaN or a finite marker: neither may be read or written */
        pad = padb & 1u ? nan("") : padb & 2u ? 7.0 : padb & 4u ? HUGE_VAL : -0.0;
        for (i = 0; i < x->cnt[side]; i++) fz_set(x, x->X[side], i, pad);
        for (i = 0; i < x->cntg[side]; i++) fz_set(x, x->G[side], i, pad);
        memcpy(x->G2[side], x->G[side], x->cntg[side] * x->es);
    }
    /* the target of the loss: a random rank-r product plus noise */
    g.s = 0xa11ceull + fl;
    tu_fill_normal(&g, fz_lgL, (size_t)d.m * d.r, 1.0);
    tu_fill_normal(&g, fz_lgR, (size_t)d.n * d.r, 1.0);
    x->A = malloc((size_t)d.m * d.n * sizeof(double));
    FZ_CHECK(x->A != NULL);
    tu_product(fz_lgL, fz_lgR, d.m, d.n, d.r, x->A);
    for (i = 0; i < (size_t)d.m * d.n; i++) x->A[i] += 0.1 * tu_normal(&g);

    fz_fill(x, in, 0, 0, fz_lgL);
    fz_fill(x, in, 1, 0, fz_lgR);
    fz_fill(x, in, 0, 1, fz_lgA);
    fz_fill(x, in, 1, 1, fz_lgB);

    {   /* a new layer has a zero state */
        static unsigned char st0[FZ_MAXSTATE];
        size_t n = fz_read_state(x, st0);
        for (i = 0; i < n; i++) FZ_CHECK(st0[i] == 0);
        FZ_CHECK(rite_step_count(x->l) == 0);
    }
    x->pending = FZ_NO;
}

static void fz_free_layer(fz_layer *x)
{
    rite_free(x->l);
    if (x->alloc.on) FZ_CHECK(x->alloc.frees == x->alloc.allocs);
    free(x->X[0]);
    free(x->X[1]);
    free(x->G[0]);
    free(x->G[1]);
    free(x->X2[0]);
    free(x->X2[1]);
    free(x->G2[0]);
    free(x->G2[1]);
    free(x->A);
    x->l = NULL;
}

/* ------------------------------------------------------------ operations */

/* The caller changes factors or gradients only with no prepare pending:
   changing skip (the hyper-parameter prepare uses) and back cancels one of
   LoRA-RITE; rite_factors_changed one of AdamW (whose state it leaves). */
static void fz_cancel_pending(fz_layer *x)
{
    if (x->pending != FZ_NO) {
        long long dropped = rite_prepares_dropped(x->l);
        if (x->d.optimizer == RITE_ADAMW) {
            rite_factors_changed(x->l);
        } else {
            rite_config c = x->cfg;
            c.skip = x->cfg.skip == 0 ? 1 : 0;
            FZ_CHECK(rite_set_config(x->l, &c) == RITE_OK);
            FZ_CHECK(rite_set_config(x->l, &x->cfg) == RITE_OK);
        }
        FZ_CHECK(!rite_is_prepared(x->l));
        FZ_CHECK(x->pending == FZ_YES ? rite_prepares_dropped(x->l) == dropped + 1
                                      : rite_prepares_dropped(x->l) - dropped <= 1);
        x->pending = FZ_NO;
    }
}

/* rite_step_f32 (f32 nonzero) or rite_step_f64 on any handle and buffers:
   the calls the layer expects, and those of the wrong precision or with NULL */
static rite_status fz_step_with(int f32, rite_layer *l, void *L, void *R, const void *gL, const void *gR)
{
    return f32 ? rite_step_f32(l, (float *)L, (float *)R, (const float *)gL, (const float *)gR)
               : rite_step_f64(l, (double *)L, (double *)R, (const double *)gL, (const double *)gR);
}

/* rite_prepare_f32 (f32 nonzero) or rite_prepare_f64, the same way */
static rite_status fz_prepare_with(int f32, rite_layer *l, void *L, void *R, const void *gL, const void *gR,
                                   double *sumsq)
{
    return f32 ? rite_prepare_f32(l, (float *)L, (float *)R, (const float *)gL, (const float *)gR, sumsq)
               : rite_prepare_f64(l, (double *)L, (double *)R, (const double *)gL, (const double *)gR, sumsq);
}

static rite_status fz_call_step(fz_layer *x)
{
    return fz_step_with(x->f32, x->l, x->X[0], x->X[1], x->G[0], x->G[1]);
}

static rite_status fz_call_prepare(fz_layer *x, double *sumsq)
{
    return fz_prepare_with(x->f32, x->l, x->X[0], x->X[1], x->G[0], x->G[1], sumsq);
}

static void fz_op_step(fz_layer *x)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    rite_status st;
    fz_snapshot(x, s);
    st = fz_call_step(x);
    fz_check_status_string(st);
    if (st == RITE_OK) {
        fz_check_stepped(x, s);
        x->pending = FZ_NO;
    } else {
        fz_check_unchanged(x, s);
        fz_check_step_error(x, st);
        if (x->pending != FZ_NO) x->pending = FZ_UNKNOWN;
    }
}

static void fz_prepare(fz_layer *x, rite_status *out, double *sq)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    rite_status st;
    double sumsq = -12345.0;
    fz_snapshot(x, s);
    st = fz_call_prepare(x, &sumsq);
    fz_check_status_string(st);
    fz_check_unchanged(x, s);   /* prepare writes neither factors nor state */
    if (st == RITE_OK) {
        FZ_CHECK(sumsq >= 0 && sumsq <= DBL_MAX);
        if (x->d.optimizer == RITE_ADAMW) FZ_CHECK(sumsq == 0);
        x->pending = FZ_YES;
        x->pending_alt = 0;
        x->own = sumsq;
    } else {
        fz_check_step_error(x, st);
        if (x->pending != FZ_NO) x->pending = FZ_UNKNOWN;
    }
    *out = st;
    *sq = sumsq;
}

static void fz_apply(fz_layer *x, double total)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    rite_status st;
    int valid = x->pending == FZ_YES && total >= x->own && total <= DBL_MAX;
    fz_snapshot(x, s);
    st = rite_apply(x->l, total);
    fz_check_status_string(st);
    if (x->pending == FZ_NO) FZ_CHECK(st == RITE_ERR_NOT_PREPARED);
    if (x->pending == FZ_YES && !valid) FZ_CHECK(st == RITE_ERR_SUMSQ);
    if (valid) FZ_CHECK(st == RITE_OK || st == RITE_ERR_NONFINITE_UPDATE || st == RITE_ERR_LAPACK);
    if (st == RITE_OK) {
        fz_check_stepped(x, s);
        x->pending = FZ_NO;
    } else {
        fz_check_unchanged(x, s);
        FZ_CHECK(st == RITE_ERR_NOT_PREPARED || st == RITE_ERR_SUMSQ || st == RITE_ERR_NONFINITE_UPDATE ||
                 st == RITE_ERR_LAPACK);
        if (st == RITE_ERR_NOT_PREPARED) x->pending = FZ_NO;
        else if (st != RITE_ERR_SUMSQ) x->pending = FZ_UNKNOWN;
    }
}

/* a total sum of squares: right, larger, slightly too small, or invalid */
static double fz_total(unsigned b, double total)
{
    switch (b % 12u) {
    case 0: case 1: case 2: return total;
    case 3: return total * 2 + 1;
    case 4: return total * (1 - 1e-9);
    case 5: return nan("");
    case 6: return -1.0;
    case 7: return HUGE_VAL;
    case 8: return 0.0;
    case 9: return DBL_MAX;
    case 10: return total + 1e300;
    default: return nextafter(total, 0.0);
    }
}

static void fz_op_two_phase(fz_in *in)
{
    rite_status st[FZ_MAXLAYERS];
    double sq[FZ_MAXLAYERS], total = 0;
    unsigned b = fz_u8(in);
    int i;
    for (i = 0; i < fz_nl; i++) {
        fz_prepare(&fz_lay[i], &st[i], &sq[i]);
        if (st[i] == RITE_OK) total += sq[i];
    }
    total = fz_total(b, total);
    for (i = 0; i < fz_nl; i++)
        if (st[i] == RITE_OK) fz_apply(&fz_lay[i], total);
}

static void fz_op_apply(fz_in *in, fz_layer *x)
{
    unsigned b = fz_u8(in);
    fz_apply(x, fz_total(b, x->pending == FZ_YES ? x->own : fz_special(b >> 4)));
}

/* A second prepare on other buffers while one may be pending (allowed: the
   buffers of the first are not touched). With factors holding NaN or Inf
   it must fail with RITE_ERR_NONFINITE_FACTOR; with other gradients it may
   succeed, and then apply uses them. */
static void fz_op_prepare_other(fz_in *in, fz_layer *x)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    static unsigned char other[2][FZ_MAXBUF];
    unsigned b = fz_u8(in);
    double sumsq = -1.0;
    rite_status st;
    int side;
    if (b & 1u) {
        unsigned idx = fz_u16(in);
        int bad = (int)(b >> 1 & 1u), i = (int)(idx % (unsigned)x->k[bad]), j = (int)(idx >> 8) % x->d.r;
        for (side = 0; side < 2; side++) memcpy(x->X2[side], x->X[side], x->cnt[side] * x->es);
        fz_set(x, x->X2[bad], tu_index(fz_layout(x, bad), fz_ld(x, bad), i, j), fz_element_special((b >> 2) % 3u));
        for (side = 0; side < 2; side++) memcpy(other[side], x->X2[side], x->cnt[side] * x->es);
        fz_snapshot(x, s);
        st = fz_prepare_with(x->f32, x->l, x->X2[0], x->X2[1], x->G[0], x->G[1], &sumsq);
        FZ_CHECK(st == RITE_ERR_NONFINITE_FACTOR && sumsq == -1.0);
        for (side = 0; side < 2; side++) FZ_CHECK(!memcmp(other[side], x->X2[side], x->cnt[side] * x->es));
        fz_check_unchanged(x, s);
        if (x->pending != FZ_NO) x->pending = FZ_UNKNOWN;
        return;
    }
    if (x->pending_alt) fz_cancel_pending(x);   /* G2 is about to change */
    fz_fill_to(x, in, 0, 1, fz_lgA, x->G2);
    fz_fill_to(x, in, 1, 1, fz_lgB, x->G2);
    for (side = 0; side < 2; side++) memcpy(other[side], x->G2[side], x->cntg[side] * x->es);
    fz_snapshot(x, s);
    st = fz_prepare_with(x->f32, x->l, x->X[0], x->X[1], x->G2[0], x->G2[1], &sumsq);
    fz_check_status_string(st);
    for (side = 0; side < 2; side++) FZ_CHECK(!memcmp(other[side], x->G2[side], x->cntg[side] * x->es));
    fz_check_unchanged(x, s);
    if (st == RITE_OK) {
        FZ_CHECK(sumsq >= 0 && sumsq <= DBL_MAX);
        x->pending = FZ_YES;
        x->pending_alt = 1;
        x->own = sumsq;
    } else {
        int gf = fz_finite_logical(x, x->G2[0], 0, fz_ldg(x, 0)) && fz_finite_logical(x, x->G2[1], 1, fz_ldg(x, 1));
        if (!fz_factors_finite(x)) FZ_CHECK(st == RITE_ERR_NONFINITE_FACTOR || (!gf && st == RITE_ERR_NONFINITE_GRADIENT));
        else if (!gf) FZ_CHECK(st == RITE_ERR_NONFINITE_GRADIENT);
        else FZ_CHECK(st == RITE_ERR_NONFINITE_UPDATE || st == RITE_ERR_LAPACK);
        if (x->pending != FZ_NO) x->pending = FZ_UNKNOWN;
    }
}

static void fz_op_set_config(fz_layer *x, const rite_config *c)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    rite_status st;
    fz_snapshot(x, s);
    st = rite_set_config(x->l, c);
    fz_check_status_string(st);
    if (fz_config_valid(c, x->d.optimizer, x->d.precision)) {
        rite_config got;
        FZ_CHECK(st == RITE_OK);
        got = rite_get_config(x->l);
        FZ_CHECK(fz_cfg_same(&got, c));
        s->cfg = got;
        if (c->skip != x->cfg.skip) x->pending = FZ_NO;   /* prepare used skip */
        x->cfg = *c;
    } else {
        FZ_CHECK(st != RITE_OK && fz_config_code_ok(c, x->d.optimizer, x->d.precision, st));
        FZ_CHECK(rite_last_error(x->l)[0] != 0);   /* the detail is there */
    }
    fz_check_unchanged(x, s);
}

static void fz_op_set_lr(fz_in *in, fz_layer *x)
{
    static const double lrs[8] = {1e-3, 1e-2, 0.1, 1.0, 0.0, 1e-6, 10.0, 3e-4};
    unsigned b = fz_u8(in);
    double lr = b < 128 ? lrs[b % 8] : fz_special(b);
    fz_snap *s = &fz_snaps[x - fz_lay];
    rite_config want = x->cfg;
    rite_status st;
    want.lr = lr;
    fz_snapshot(x, s);
    st = rite_set_lr(x->l, lr);
    fz_check_status_string(st);
    if (lr >= 0 && lr <= (x->d.precision == RITE_FLOAT32 ? (double)FLT_MAX : DBL_MAX)) {
        rite_config got = rite_get_config(x->l);
        FZ_CHECK(st == RITE_OK && fz_cfg_same(&got, &want));
        s->cfg = got;
        x->cfg = want;   /* a pending prepare stays */
    } else {
        FZ_CHECK(st == RITE_ERR_LR);
    }
    fz_check_unchanged(x, s);
}

static void fz_op_reset(fz_layer *x)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    static unsigned char now[FZ_MAXSTATE];
    size_t n, i;
    fz_snapshot(x, s);
    rite_reset(x->l);
    fz_check_const(x, s);
    FZ_CHECK(!memcmp(s->x[0], x->X[0], x->cnt[0] * x->es) && !memcmp(s->x[1], x->X[1], x->cnt[1] * x->es));
    n = fz_read_state(x, now);
    for (i = 0; i < n; i++) FZ_CHECK(now[i] == 0);
    FZ_CHECK(rite_step_count(x->l) == 0);
    x->steps = 0;
    x->pending = FZ_NO;
    x->tainted = 0;
}

static void fz_op_factors_changed(fz_layer *x)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    fz_snapshot(x, s);
    rite_factors_changed(x->l);
    if (x->d.optimizer == RITE_LORA_RITE && !x->d.keep_basis) {
        /* the state's last field, the flag, says so now; the rest is kept */
        int one = 1;
        size_t n = s->state_n - sizeof(int);
        if (!x->tainted)
            FZ_CHECK(!memcmp(s->state + n, &one, sizeof one) || !memcmp(s->state + n, "\0\0\0\0", sizeof one));
        memcpy(s->state + n, &one, sizeof one);
    }
    fz_check_unchanged(x, s);
    x->pending = FZ_NO;
}

/* the trainer rescales the factors: L s, R / s (Z is kept) */
static void fz_op_rescale(fz_in *in, fz_layer *x)
{
    static const double f[8] = {2.0, 0.5, 1e3, 1e-3, -1.0, 1e10, 1e-10, 3.0};
    unsigned b = fz_u8(in);
    double s = f[b % 8];
    int side;
    size_t i;
    fz_cancel_pending(x);
    for (side = 0; side < 2; side++) {
        int ld = fz_ld(x, side);
        for (i = 0; i < x->cnt[side]; i++)
            if (fz_is_logical(x, side, ld, i))
                fz_set(x, x->X[side], i, fz_get(x, x->X[side], i) * (side ? 1.0 / s : s));
    }
    if (b & 8u) fz_op_factors_changed(x);
}

static void fz_op_refill(fz_in *in, fz_layer *x, int grads)
{
    unsigned b = fz_u8(in);
    fz_cancel_pending(x);
    fz_fill(x, in, 0, grads, grads ? fz_lgA : fz_lgL);
    fz_fill(x, in, 1, grads, grads ? fz_lgB : fz_lgR);
    if (!grads && (b & 1u)) fz_op_factors_changed(x);
}

/* a special value anywhere in a buffer, padding included */
static void fz_op_poke(fz_in *in, fz_layer *x)
{
    unsigned w = fz_u8(in), idx = fz_u16(in), v = fz_u8(in);
    int side = (int)(w & 1u);
    void *buf = w & 2u ? x->G[side] : x->X[side];
    size_t cnt = w & 2u ? x->cntg[side] : x->cnt[side];
    fz_cancel_pending(x);
    fz_set(x, buf, idx % cnt, fz_element_special(v));
}

/* a few steps of training on the least-squares loss */
static void fz_op_train(fz_in *in, fz_layer *x)
{
    unsigned n = 1 + fz_u8(in) % 16u, i;
    for (i = 0; i < n; i++) {
        fz_cancel_pending(x);
        if (fz_factors_finite(x)) fz_loss_gradients(x, x->G);
        fz_op_step(x);
    }
}

static void fz_op_state_copy(fz_in *in, fz_layer *x)
{
    static unsigned char buf[FZ_MAXSTATE + 64];
    fz_snap *s = &fz_snaps[x - fz_lay];
    size_t n, i, extra = fz_u8(in) % 64u;
    fz_snapshot(x, s);
    n = s->state_n;
    memset(buf, 0xA5, sizeof buf);
    FZ_CHECK(rite_state_copy(x->l, buf, n - 1) == RITE_ERR_BUFFER_SIZE);
    for (i = 0; i < sizeof buf; i++) FZ_CHECK(buf[i] == 0xA5);
    FZ_CHECK(rite_state_copy(x->l, buf, 0) == RITE_ERR_BUFFER_SIZE);
    FZ_CHECK(rite_state_copy(x->l, NULL, n) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(rite_state_copy(NULL, buf, n) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(rite_state_copy(x->l, buf, n + extra) == RITE_OK);
    FZ_CHECK(!memcmp(buf, s->state, n));
    for (i = n; i < sizeof buf; i++) FZ_CHECK(buf[i] == 0xA5);
    fz_check_unchanged(x, s);
}

/* a load that must fail and change nothing */
static void fz_load_rejected(fz_layer *x, const void *src, size_t n)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    rite_status st;
    fz_snapshot(x, s);
    st = rite_checkpoint_load(x->l, src, n);
    fz_check_status_string(st);
    FZ_CHECK(st != RITE_OK);
    fz_check_unchanged(x, s);
}

/* A load that may succeed; on success the state is the checkpoint's payload,
   and every number in it is finite. trusted: the bytes are what
   rite_checkpoint_save wrote for a layer whose state came from steps (not
   from a hand-made checkpoint): then signs and step count are right too. */
static rite_status fz_load_any(fz_layer *x, const unsigned char *src, size_t n, int trusted)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    static unsigned char now[FZ_MAXSTATE];
    rite_status st;
    long long k;
    fz_snapshot(x, s);
    st = rite_checkpoint_load(x->l, src, n);
    fz_check_status_string(st);
    if (st != RITE_OK) {
        fz_check_unchanged(x, s);
        return st;
    }
    fz_check_const(x, s);
    FZ_CHECK(!memcmp(s->x[0], x->X[0], x->cnt[0] * x->es) && !memcmp(s->x[1], x->X[1], x->cnt[1] * x->es));
    FZ_CHECK(fz_read_state(x, now) == s->state_n);
    FZ_CHECK(n == 64 + s->state_n + 8 && !memcmp(now, src + 64, s->state_n));
    {
        /* every number finite, always (the header says a load checks it);
           signs and step count as a step leaves them, for genuine checkpoints */
        int bad;
#ifdef FUZZ_RITE_STRICT_LOAD
        trusted = 1;
#endif
        bad = fz_state_scan(x, now, s->state_n, &k, trusted ? FZ_NONFINITE | FZ_BADSIGN : FZ_NONFINITE);
        FZ_CHECK(!(bad & FZ_NONFINITE));
        if (k < 0) bad |= FZ_BADSIGN;
        if (trusted) FZ_CHECK(!bad);
        x->tainted = bad != 0;
    }
    FZ_CHECK(rite_step_count(x->l) == k);
    x->steps = k;
    x->pending = FZ_NO;
    return st;
}

static size_t fz_save(fz_layer *x, unsigned char *buf)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    size_t n = rite_checkpoint_size(x->l), i;
    FZ_CHECK(n > rite_state_size(x->l) && n + 16 <= FZ_MAXCKPT);
    fz_snapshot(x, s);
    memset(buf, 0x5A, n + 16);
    FZ_CHECK(rite_checkpoint_save(x->l, buf, n - 1) == RITE_ERR_BUFFER_SIZE);
    for (i = 0; i < n + 16; i++) FZ_CHECK(buf[i] == 0x5A);
    FZ_CHECK(rite_checkpoint_save(x->l, NULL, n) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(rite_checkpoint_save(x->l, buf, n) == RITE_OK);
    for (i = n; i < n + 16; i++) FZ_CHECK(buf[i] == 0x5A);
    fz_check_unchanged(x, s);
    return n;
}

/* save and load back; or keep the checkpoint, or load the kept one */
static void fz_op_ckpt(fz_in *in, fz_layer *x)
{
    static unsigned char buf[FZ_MAXCKPT];
    unsigned b = fz_u8(in);
    size_t n;
    if ((b & 3u) == 2u && x->ckpt_n) {   /* the checkpoint of an earlier step */
        rite_status st = fz_load_any(x, x->ckpt, x->ckpt_n, !x->ckpt_tainted);
        if (x->ckpt_opts == fz_opts(x)) {
            static unsigned char now[FZ_MAXSTATE];
            size_t sn;
            FZ_CHECK(st == RITE_OK);
            sn = fz_read_state(x, now);
            FZ_CHECK(!memcmp(now, x->ckpt_state, sn));
        } else {
            FZ_CHECK(st == RITE_ERR_CHECKPOINT_MISMATCH);
        }
        return;
    }
    n = fz_save(x, buf);
    if ((b & 3u) == 1u) {                /* keep it */
        memcpy(x->ckpt, buf, n);
        x->ckpt_n = n;
        x->ckpt_opts = fz_opts(x);
        x->ckpt_tainted = x->tainted;
        fz_read_state(x, x->ckpt_state);
    }
    fz_load_rejected(x, buf, n - 1);
    fz_load_rejected(x, buf, n + 1);
    fz_load_rejected(x, buf, 0);
    fz_load_rejected(x, NULL, n);
    FZ_CHECK(fz_load_any(x, buf, n, !x->tainted) == RITE_OK);
    {
        static unsigned char now[FZ_MAXSTATE];
        size_t sn = fz_read_state(x, now);
        FZ_CHECK(!memcmp(now, buf + 64, sn));
    }
}

/* change some bytes of a checkpoint: it must be rejected */
static void fz_op_ckpt_mutate(fz_in *in, fz_layer *x)
{
    static unsigned char buf[FZ_MAXCKPT], orig[FZ_MAXCKPT];
    size_t n = fz_save(x, buf), m = n;
    unsigned count = 1 + fz_u8(in) % 4u, i;
    memcpy(orig, buf, n);
    for (i = 0; i < count; i++) {
        unsigned what = fz_u8(in), pos = fz_u16(in), v = fz_u8(in);
        if (what % 8u == 0) {
            m = pos % (n + 8);   /* truncated or extended (by 0x5A bytes) */
        } else {
            size_t p = what % 8u == 1 ? pos % 64u : pos % n;
            buf[p] ^= (unsigned char)(v ? v : 1u);
        }
    }
    if (m == n && !memcmp(buf, orig, n)) return;
    fz_load_rejected(x, buf, m);
}

/* a checkpoint made of raw bytes; with a flag, the header of this layer
   and a correct checksum are put on it */
static void fz_op_ckpt_raw(fz_in *in, fz_layer *x)
{
    static unsigned char buf[FZ_MAXCKPT];
    unsigned fl = fz_u8(in);
    size_t n = rite_checkpoint_size(x->l), m = fz_u16(in) % (n + 16), i;
    for (i = 0; i < m; i++) buf[i] = (unsigned char)fz_u8(in);
    if ((fl & 1u) && m == n) {
        static unsigned char good[FZ_MAXCKPT];
        uint64_t h;
        fz_save(x, good);
        memcpy(buf, good, 64);
        memcpy(buf + 56, buf + 64, 8);   /* the step count, twice */
        h = tu_fnv1a(buf, n - 8);
        memcpy(buf + n - 8, &h, 8);
    }
    fz_load_any(x, buf, m, 0);
}

/* a checkpoint of this layer with payload values changed and the checksum
   made right again */
static void fz_op_ckpt_forge(fz_in *in, fz_layer *x)
{
    static const long long ks[8] = {0, 1, -1, LLONG_MAX, LLONG_MIN, 1LL << 53, 1000000, LLONG_MAX - 1};
    static unsigned char buf[FZ_MAXCKPT];
    size_t n = fz_save(x, buf);
    unsigned what = fz_u8(in), count = 1 + fz_u8(in) % 4u, i;
    uint64_t h;
    for (i = 0; i < count; i++) {
        unsigned a = fz_u8(in), pos = fz_u16(in), v = fz_u8(in);
        size_t off = 64 + 8 + pos % (n - 64 - 16);
        switch (a % 4u) {
        case 0: {   /* the step count, in header and payload */
            long long k = ks[v % 8u];
            memcpy(buf + 56, &k, 8);
            memcpy(buf + 64, &k, 8);
            break;
        }
        case 1: {   /* a double */
            double d = fz_element_special(v);
            off &= ~(size_t)7;
            if (off < 72) off = 72;
            if (off + 8 <= n - 8) memcpy(buf + off, &d, 8);
            break;
        }
        case 2: {   /* a float */
            float f = (float)fz_element_special(v);
            off &= ~(size_t)3;
            if (off + 4 <= n - 8) memcpy(buf + off, &f, 4);
            break;
        }
        default:    /* a byte */
            buf[off] = (unsigned char)v;
            break;
        }
    }
    if (what & 1u) buf[44] ^= 3u;   /* the layouts: recorded, checked for AdamW only */
    h = tu_fnv1a(buf, n - 8);
    memcpy(buf + n - 8, &h, 8);
    fz_load_any(x, buf, n, 0);
}

/* the checkpoint of one layer loaded into another */
static void fz_op_ckpt_cross(fz_in *in)
{
    static unsigned char buf[FZ_MAXCKPT];
    unsigned b = fz_u8(in);
    fz_layer *a = &fz_lay[b % (unsigned)fz_nl], *x = &fz_lay[(b >> 2) % (unsigned)fz_nl];
    size_t n = fz_save(a, buf);
    int trusted = !a->tainted;
    int same = a->d.optimizer == x->d.optimizer && a->d.precision == x->d.precision && a->d.m == x->d.m &&
               a->d.n == x->d.n && a->d.r == x->d.r && fz_opts(a) == fz_opts(x) &&
               (a->d.optimizer == RITE_LORA_RITE ||
                (a->d.layout_L == x->d.layout_L && a->d.layout_R == x->d.layout_R));
    rite_status st = fz_load_any(x, buf, n, trusted);
    if (same ? st != RITE_OK : st != RITE_ERR_CHECKPOINT_MISMATCH)
        fprintf(stderr, "fuzz_rite: checkpoint of layer %d (opt %d prec %d %dx%dx%d opts %u) into layer %d "
                        "(opt %d prec %d %dx%dx%d opts %u): %s\n", (int)(a - fz_lay), (int)a->d.optimizer,
                (int)a->d.precision, a->d.m, a->d.n, a->d.r, fz_opts(a), (int)(x - fz_lay), (int)x->d.optimizer,
                (int)x->d.precision, x->d.m, x->d.n, x->d.r, fz_opts(x), rite_status_string(st));
    FZ_CHECK(same ? st == RITE_OK : st == RITE_ERR_CHECKPOINT_MISMATCH);
}

static void fz_op_queries(fz_in *in, fz_layer *x)
{
    fz_snap *s = &fz_snaps[x - fz_lay];
    rite_config c;
    rite_desc d;
    rite_memory mem;
    int code = (int)(signed char)fz_u8(in);
    fz_snapshot(x, s);
    c = rite_get_config(x->l);
    FZ_CHECK(fz_cfg_same(&c, &x->cfg));
    d = rite_get_desc(x->l);
    FZ_CHECK(d.m == x->d.m && d.n == x->d.n && d.r == x->d.r && d.ld_L == x->d.ld_L && d.ld_gR == x->d.ld_gR);
    FZ_CHECK(rite_step_count(x->l) == x->steps);
    d.config = &c;
    FZ_CHECK(rite_memory_query(&d, &mem) == RITE_OK && mem.state_bytes == rite_state_size(x->l));
    FZ_CHECK(mem.total_bytes >= mem.state_bytes + mem.scratch_bytes);
    fz_check_status_string((rite_status)code);
    fz_check_status_string(RITE_STATUS_COUNT);
    /* NULL pointers, where the header says what happens */
    FZ_CHECK(rite_set_lr(NULL, 1e-3) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(rite_set_config(NULL, &c) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(rite_set_config(x->l, NULL) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(rite_apply(NULL, 0) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(rite_checkpoint_load(NULL, s->state, 8) == RITE_ERR_NULL_ARGUMENT);
    rite_free(NULL);
    fz_check_unchanged(x, s);
}

/* calls that must be rejected: wrong precision, NULL pointers, bad files */
static void fz_op_bad_calls(fz_in *in, fz_layer *x)
{
    static double dbuf[2][FZ_MAXBUF / sizeof(double)];
    fz_snap *s = &fz_snaps[x - fz_lay];
    unsigned b = fz_u8(in);
    double sq = 3.0;
    rite_status st;
    void *p[4];
    fz_snapshot(x, s);
    /* the other precision's functions, on buffers that are large enough */
    st = b & 1u ? fz_step_with(!x->f32, x->l, dbuf[0], dbuf[1], dbuf[0], dbuf[1])
                : fz_prepare_with(!x->f32, x->l, dbuf[0], dbuf[1], dbuf[0], dbuf[1], &sq);
    FZ_CHECK(st == RITE_ERR_PRECISION && sq == 3.0);
    fz_check_unchanged(x, s);
    /* shared storage: L passed as R too (both optimizers), and for AdamW a
       gradient that is a factor; refused before anything is read */
    {
        void *r = b & 64u ? x->X[0] : x->X[1];
        const void *g = b & 64u ? x->G[1] : x->X[(b >> 3) & 1u];
        if (b & 64u || x->d.optimizer == RITE_ADAMW) {
            st = fz_prepare_with(x->f32, x->l, x->X[0], r, x->G[0], g, &sq);
            FZ_CHECK(st == RITE_ERR_ALIASING && sq == 3.0 && rite_last_error(x->l)[0] != 0);
            fz_check_unchanged(x, s);
        }
    }
    /* one NULL pointer */
    p[0] = x->X[0];
    p[1] = x->X[1];
    p[2] = x->G[0];
    p[3] = x->G[1];
    p[(b >> 1) % 4u] = NULL;
    FZ_CHECK(fz_step_with(x->f32, x->l, p[0], p[1], p[2], p[3]) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(fz_prepare_with(x->f32, x->l, p[0], p[1], p[2], p[3], &sq) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(fz_prepare_with(x->f32, x->l, x->X[0], x->X[1], x->G[0], x->G[1], NULL) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(fz_step_with(x->f32, NULL, x->X[0], x->X[1], x->G[0], x->G[1]) == RITE_ERR_NULL_ARGUMENT);
    FZ_CHECK(sq == 3.0);
    fz_check_unchanged(x, s);
    if (b & 0x80u) {   /* files that cannot be opened */
        FZ_CHECK(rite_checkpoint_load_file(x->l, "/nonexistent-dir/fuzz_rite.ckpt") == RITE_ERR_IO);
        FZ_CHECK(rite_checkpoint_save_file(x->l, "/nonexistent-dir/fuzz_rite.ckpt") == RITE_ERR_IO);
        FZ_CHECK(rite_checkpoint_load_file(x->l, NULL) == RITE_ERR_NULL_ARGUMENT);
        FZ_CHECK(rite_checkpoint_save_file(NULL, "/nonexistent-dir/fuzz_rite.ckpt") == RITE_ERR_NULL_ARGUMENT);
        fz_check_unchanged(x, s);
    }
}

/* ------------------------------------------------------------ entry point */

#define FZ_MAXOPS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in;
    int i, ops = 0;
    in.p = data;
    in.n = size;
    in.i = 0;
    fz_nl = 1 + (int)(fz_u8(&in) % FZ_MAXLAYERS);
    for (i = 0; i < fz_nl; i++) fz_make_layer(&in, &fz_lay[i]);
    while (fz_more(&in) && ops++ < FZ_MAXOPS) {
        unsigned op = fz_u8(&in), which = fz_u8(&in);
        fz_layer *x = &fz_lay[which % (unsigned)fz_nl];
        switch (op % 23u) {
        case 0: case 1: fz_op_step(x); break;
        case 2: fz_op_two_phase(&in); break;
        case 3: {
            rite_status st;
            double sq;
            fz_prepare(x, &st, &sq);
            break;
        }
        case 4: fz_op_apply(&in, x); break;
        case 5: fz_op_set_lr(&in, x); break;
        case 6: {
            rite_config c;
            fz_read_config(&in, &c, x->d.optimizer);
            fz_op_set_config(x, &c);
            break;
        }
        case 7: fz_op_reset(x); break;
        case 8: fz_op_factors_changed(x); break;
        case 9: fz_op_rescale(&in, x); break;
        case 10: fz_op_refill(&in, x, 1); break;
        case 11: fz_op_refill(&in, x, 0); break;
        case 12: fz_op_poke(&in, x); break;
        case 13: case 14: fz_op_train(&in, x); break;
        case 15: fz_op_state_copy(&in, x); break;
        case 16: fz_op_ckpt(&in, x); break;
        case 17: fz_op_ckpt_mutate(&in, x); break;
        case 18: fz_op_ckpt_raw(&in, x); break;
        case 19: fz_op_ckpt_forge(&in, x); break;
        case 20: fz_op_ckpt_cross(&in); break;
        case 21: fz_op_prepare_other(&in, x); break;
        default:
            if (which & 0x40u) fz_op_queries(&in, x);
            else fz_op_bad_calls(&in, x);
            break;
        }
    }
    for (i = 0; i < fz_nl; i++) fz_free_layer(&fz_lay[i]);
    return 0;
}

/* ------------------------------------------------------------ standalone driver */

#ifdef FUZZ_RITE_STANDALONE
#include "fuzz_replay.h"

/* Replays every file named on the command line; a directory stands for the
   files in it. Returns non-zero when a file cannot be read (a contract
   violation aborts). */
int main(int argc, char **argv)
{
    return fz_replay("fuzz_rite", argc, argv);
}
#endif
