/* test_mpi.c - the data-parallel trainer of examples/mpi/mpi_train.c.

   Run with any number of processes (ctest runs it with 1, 2 and 3):
       mpirun -np 3 ./test_mpi
   Every process runs every test in the same order. Inside a test the
   collective calls come first and the assertions after them, so a failed
   assertion on one process never leaves the others waiting; the exit status
   is non-zero when any process saw a failure.

   What is checked, and against what:
   - the model's gradients, against central finite differences of its loss;
   - the layer assignment, against a brute-force search over every
     assignment, and the balance bound it promises;
   - that every process rejects different options, and a bad command line
     on one process, with the same message, and that a process count above
     the layer count is refused by each process on its own, with no
     collective call (a collective would hang the test, and ctest's timeout
     would fail it);
   - the factors after N data-parallel steps, against a single process
     stepping every layer itself (prepare all, add the sums, apply all),
     written here independently of the trainer: to 1e-12 in double
     precision, with the batch split unevenly and global clipping active;
     that clipping each layer by its own norm instead would be detected;
     that every process ends with bit-identical factors;
   - that each process's model holds its own layers only, that its bytes
     (counted through the allocator hooks) are what rite_model_memory_query
     says for that model, and that its share of the state is within the
     largest layer of 1/P of the whole. */
#define MPI_TRAIN_NO_MAIN
#include "mpi_train.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static int g_rank, g_nprocs;

/* ---- helpers ------------------------------------------------------------------- */

static unsigned long long fnv1a(const char *s)
{
    unsigned long long h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* 1 when every process passed the same string (collective). */
static int same_everywhere(const char *s)
{
    unsigned long long h = fnv1a(s), lo = 0, hi = 0;
    MPI_Allreduce(&h, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

/* Factors of one layer in double, logical k x r row-major: L then R. */
typedef struct factors {
    int nl;
    double *x[MAX_LAYERS];
    size_t count[MAX_LAYERS];
} factors;

static void factors_free(factors *f)
{
    int i;
    for (i = 0; i < MAX_LAYERS; i++) free(f->x[i]);
    memset(f, 0, sizeof *f);
}

static void factors_from_trainer(trainer *t, factors *f)
{
    int i;
    memset(f, 0, sizeof *f);
    f->nl = t->net.nl;
    trainer_widen(t);
    for (i = 0; i < t->net.nl; i++) {
        size_t mr = (size_t)t->net.dim[i + 1] * t->net.r, nr = (size_t)t->net.dim[i] * t->net.r;
        f->count[i] = mr + nr;
        f->x[i] = (double *)malloc(f->count[i] * sizeof(double));
        memcpy(f->x[i], t->Ld[i], mr * sizeof(double));
        memcpy(f->x[i] + mr, t->Rd[i], nr * sizeof(double));
    }
}

static double factors_max_diff(const factors *a, const factors *b)
{
    double worst = 0;
    int i;
    size_t k;
    if (a->nl != b->nl) return HUGE_VAL;
    for (i = 0; i < a->nl; i++) {
        if (a->count[i] != b->count[i]) return HUGE_VAL;
        for (k = 0; k < a->count[i]; k++) {
            double d = fabs(a->x[i][k] - b->x[i][k]);
            if (d > worst || d != d) worst = d;
        }
    }
    return worst;
}

/* 1 when every process holds bit-identical factors (collective). */
static int factors_identical_everywhere(const factors *f)
{
    int i, same = 1, all = 0;
    for (i = 0; i < f->nl; i++) {
        int n = (int)f->count[i];
        double *lo = (double *)malloc((size_t)n * sizeof(double));
        double *hi = (double *)malloc((size_t)n * sizeof(double));
        MPI_Allreduce(f->x[i], lo, n, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(f->x[i], hi, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        same &= memcmp(lo, f->x[i], (size_t)n * sizeof(double)) == 0 &&
                memcmp(hi, f->x[i], (size_t)n * sizeof(double)) == 0;
        free(lo);
        free(hi);
    }
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    return all;
}

/* ---- the single-process reference ---------------------------------------------- */

/* One process, every layer: the gradient of the whole batch summed sample by
   sample in batch order, then rite_prepare_* on every layer, the sums of
   squares added in layer order, rite_apply on every layer with the total
   (SPEC step 5). With per_layer_clip, each layer is instead stepped alone
   (rite_step_*: clipped by its own norm), which is what a data-parallel
   trainer that forgot to reduce the sums of squares would compute.
   Also returns the largest and the last global sum of squares. No MPI. */
static int reference_train(const train_config *c, int per_layer_clip, factors *out,
                           double *max_sumsq, double *last_sumsq)
{
    model net;
    rite_layer *lay[MAX_LAYERS] = {NULL};
    double *L[MAX_LAYERS] = {NULL}, *R[MAX_LAYERS] = {NULL}, *W[MAX_LAYERS] = {NULL};
    void *fac[MAX_LAYERS] = {NULL};
    float *g32[MAX_LAYERS] = {NULL};
    double *grad, *work;
    rite_config rc = rite_config_default(c->optimizer);
    int f64 = c->precision == RITE_FLOAT64, i, step, j, ok = 1;
    size_t k;

    if (model_init(&net, c) != 0) return -1;
    rc.lr = c->lr;
    if (c->optimizer == RITE_LORA_RITE) rc.clip = c->clip;
    grad = (double *)malloc(net.goff[net.nl] * sizeof(double));
    work = (double *)malloc(net.work_count * sizeof(double));
    *max_sumsq = 0;
    *last_sumsq = 0;
    for (i = 0; i < net.nl; i++) {
        size_t m = (size_t)net.dim[i + 1], n = (size_t)net.dim[i], r = (size_t)net.r;
        rite_desc d;
        memset(&d, 0, sizeof d);
        d.m = (int)m; d.n = (int)n; d.r = (int)r;
        d.optimizer = c->optimizer;
        d.precision = c->precision;
        d.config = &rc;
        ok &= rite_init(&lay[i], &d) == RITE_OK;
        L[i] = (double *)malloc(m * r * sizeof(double));
        R[i] = (double *)malloc(n * r * sizeof(double));
        W[i] = (double *)malloc(m * n * sizeof(double));
        fac[i] = malloc((m + n) * r * (f64 ? sizeof(double) : sizeof(float)));
        g32[i] = (float *)malloc((m + n) * r * sizeof(float));
        for (k = 0; k < (m + n) * r; k++) {
            double x = k < m * r ? net.L0[i][k] : net.R0[i][k - m * r];
            if (f64) ((double *)fac[i])[k] = x;
            else ((float *)fac[i])[k] = (float)x;
        }
    }
    for (step = 0; step < c->steps && ok; step++) {
        double total = 0, sq;
        for (i = 0; i < net.nl; i++) {   /* the factors in double */
            size_t mr = (size_t)net.dim[i + 1] * net.r, nr = (size_t)net.dim[i] * net.r;
            for (k = 0; k < mr + nr; k++) {
                double x = f64 ? ((double *)fac[i])[k] : (double)((float *)fac[i])[k];
                if (k < mr) L[i][k] = x;
                else R[i][k - mr] = x;
            }
        }
        model_weights(&net, L, R, W);
        memset(grad, 0, net.goff[net.nl] * sizeof(double));
        for (j = 0; j < c->batch; j++)
            model_sample(&net, W, L, R, batch_sample(&net, step, c->batch, j), grad, work);
        for (k = 0; k < net.goff[net.nl]; k++) grad[k] /= c->batch;
        for (i = 0; i < net.nl && ok; i++) {
            size_t mr = (size_t)net.dim[i + 1] * net.r, nr = (size_t)net.dim[i] * net.r;
            const double *g = grad + net.goff[i];
            rite_status st;
            if (f64) {
                double *x = (double *)fac[i];
                st = per_layer_clip ? rite_step_f64(lay[i], x, x + mr, g, g + mr)
                                    : rite_prepare_f64(lay[i], x, x + mr, g, g + mr, &sq);
            } else {
                float *x = (float *)fac[i];
                for (k = 0; k < mr + nr; k++) g32[i][k] = (float)g[k];
                st = per_layer_clip ? rite_step_f32(lay[i], x, x + mr, g32[i], g32[i] + mr)
                                    : rite_prepare_f32(lay[i], x, x + mr, g32[i], g32[i] + mr, &sq);
            }
            ok &= st == RITE_OK;
            if (!per_layer_clip) total += sq;
        }
        if (!per_layer_clip) {
            for (i = 0; i < net.nl && ok; i++) ok &= rite_apply(lay[i], total) == RITE_OK;
            if (total > *max_sumsq) *max_sumsq = total;
            *last_sumsq = total;
        }
    }
    memset(out, 0, sizeof *out);
    out->nl = net.nl;
    for (i = 0; i < net.nl; i++) {
        size_t cnt = (size_t)(net.dim[i + 1] + net.dim[i]) * net.r;
        out->count[i] = cnt;
        out->x[i] = (double *)malloc(cnt * sizeof(double));
        for (k = 0; k < cnt; k++)
            out->x[i][k] = f64 ? ((double *)fac[i])[k] : (double)((float *)fac[i])[k];
        rite_free(lay[i]);
        free(L[i]); free(R[i]); free(W[i]); free(fac[i]); free(g32[i]);
    }
    free(grad);
    free(work);
    model_free(&net);
    return ok ? 0 : -1;
}

/* ---- the model's gradient ---------------------------------------------------- */

static void test_model_gradient(void **state)
{
    train_config c = config_default();
    model net;
    double *L[MAX_LAYERS], *R[MAX_LAYERS], *W[MAX_LAYERS], *grad, *work, worst = 0;
    rng g = {42};
    int i, s, checked = 0;
    (void)state;
    c.layers = 4;
    c.rank = 3;
    c.samples = 8;
    assert_int_equal(model_init(&net, &c), 0);
    grad = (double *)calloc(net.goff[net.nl], sizeof(double));
    work = (double *)malloc(net.work_count * sizeof(double));
    for (i = 0; i < net.nl; i++) {   /* random factors: L = 0 would hide half of the gradient */
        size_t m = (size_t)net.dim[i + 1], n = (size_t)net.dim[i], r = (size_t)net.r;
        L[i] = (double *)malloc(m * r * sizeof(double));
        R[i] = (double *)malloc(n * r * sizeof(double));
        W[i] = (double *)malloc(m * n * sizeof(double));
        fill_normal(&g, L[i], m * r, 0.3);
        fill_normal(&g, R[i], n * r, 0.3);
    }
    model_weights(&net, L, R, W);
    for (s = 0; s < 3; s++) model_sample(&net, W, L, R, s, grad, work);
    /* central differences of the summed loss, a few entries of every factor */
    for (i = 0; i < net.nl; i++) {
        int side;
        for (side = 0; side < 2; side++) {
            double *x = side == 0 ? L[i] : R[i];
            size_t count = (size_t)net.dim[side == 0 ? i + 1 : i] * net.r, e;
            size_t base = net.goff[i] + (side == 0 ? 0 : (size_t)net.dim[i + 1] * net.r);
            for (e = 0; e < count; e += count / 5 + 1) {
                const double h = 1e-6;
                double keep = x[e], up = 0, down = 0, fd, err;
                x[e] = keep + h;
                model_weights(&net, L, R, W);
                for (s = 0; s < 3; s++) up += model_sample(&net, W, L, R, s, NULL, work);
                x[e] = keep - h;
                model_weights(&net, L, R, W);
                for (s = 0; s < 3; s++) down += model_sample(&net, W, L, R, s, NULL, work);
                x[e] = keep;
                fd = (up - down) / (2 * h);
                err = fabs(fd - grad[base + e]) / (fabs(fd) + 1e-3);
                if (err > worst) worst = err;
                checked++;
            }
        }
    }
    model_weights(&net, L, R, W);
    assert_true(checked >= 8 * net.nl);
    assert_true(worst < 1e-6);
    for (i = 0; i < net.nl; i++) { free(L[i]); free(R[i]); free(W[i]); }
    free(grad);
    free(work);
    model_free(&net);
}

/* ---- the layer assignment -------------------------------------------------------- */

/* The least sum of squared loads over all nprocs^nl assignments, by brute force. */
static double brute_force_best(int nl, const size_t cost[], int nprocs)
{
    long long code, total = 1;
    double best = HUGE_VAL;
    int i;
    for (i = 0; i < nl; i++) total *= nprocs;
    for (code = 0; code < total; code++) {
        double load[MAX_LAYERS] = {0}, sq = 0;
        long long c = code;
        for (i = 0; i < nl; i++) {
            load[c % nprocs] += (double)cost[i];
            c /= nprocs;
        }
        for (i = 0; i < nprocs; i++) sq += load[i] * load[i];
        if (sq < best) best = sq;
    }
    return best;
}

static void check_assignment(int nl, const size_t cost[], int nprocs)
{
    int owner[MAX_LAYERS], i, p;
    double load[MAX_LAYERS] = {0}, sq = 0, total = 0, cmax = 0, lo = HUGE_VAL, hi = 0;
    int count[MAX_LAYERS] = {0};
    assign_layers(nl, cost, nprocs, ASSIGN_BALANCED, owner);
    for (i = 0; i < nl; i++) {
        assert_in_range(owner[i], 0, nprocs - 1);
        load[owner[i]] += (double)cost[i];
        count[owner[i]]++;
        total += (double)cost[i];
        if ((double)cost[i] > cmax) cmax = (double)cost[i];
    }
    for (p = 0; p < nprocs; p++) {
        assert_true(count[p] >= 1);             /* every process owns a layer */
        sq += load[p] * load[p];
        if (load[p] < lo) lo = load[p];
        if (load[p] > hi) hi = load[p];
        assert_true(fabs(load[p] - total / nprocs) <= cmax);
    }
    assert_true(hi - lo <= cmax);
    if (nl <= 7 && nprocs <= 4) assert_true(sq == brute_force_best(nl, cost, nprocs));
    assign_layers(nl, cost, nprocs, ASSIGN_CYCLIC, owner);
    for (i = 0; i < nl; i++) assert_int_equal(owner[i], i % nprocs);
}

static void test_assignment(void **state)
{
    static const size_t skewed[MAX_LAYERS] = {100, 1, 100, 1, 100, 1, 100, 1};
    static const size_t equal[MAX_LAYERS] = {7, 7, 7, 7, 7, 7, 7, 7};
    size_t sizes[MAX_LAYERS], primes[MAX_LAYERS] = {31, 7, 23, 2, 19, 11, 29, 5};
    int nl, p, i;
    (void)state;
    for (i = 0; i < MAX_LAYERS; i++) {      /* the example's layers: their LoRA-RITE state */
        rite_desc d;
        rite_memory mem = {0, 0, 0};
        memset(&d, 0, sizeof d);
        d.m = DIMS[i + 1]; d.n = DIMS[i]; d.r = 4;
        assert_int_equal(rite_memory_query(&d, &mem), RITE_OK);
        sizes[i] = mem.state_bytes;
    }
    for (nl = 1; nl <= MAX_LAYERS; nl++)
        for (p = 1; p <= nl; p++) {
            check_assignment(nl, sizes, p);
            check_assignment(nl, skewed, p);
            check_assignment(nl, equal, p);
            check_assignment(nl, primes, p);
        }
}

/* ---- the same options everywhere -------------------------------------------------- */

static void test_parse_args(void **state)
{
    char *ok[] = {"mpi_train", "--steps", "7", "--optimizer", "adamw", "--precision", "f32",
                  "--lr", "0.5", "--assign", "cyclic", "--check"};
    char *bad1[] = {"mpi_train", "--steps", "x"};
    char *bad2[] = {"mpi_train", "--optimizer", "sgd"};
    char *bad3[] = {"mpi_train", "--lr", "-1"};
    char *bad4[] = {"mpi_train", "--layers", "9"};
    char *bad5[] = {"mpi_train", "--frobnicate"};
    char *bad6[] = {"mpi_train", "--rank"};
    train_config c;
    char err[256];
    (void)state;
    assert_int_equal(parse_args(12, ok, &c, err, sizeof err), 0);
    assert_int_equal(c.steps, 7);
    assert_int_equal(c.optimizer, RITE_ADAMW);
    assert_int_equal(c.precision, RITE_FLOAT32);
    assert_true(c.lr == 0.5);
    assert_int_equal(c.assign, ASSIGN_CYCLIC);
    assert_int_equal(c.check, 1);
    assert_true(config_tol(&c) == 1e-4);
    assert_int_equal(parse_args(3, bad1, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "--steps"));
    assert_int_equal(parse_args(3, bad2, &c, err, sizeof err), -1);
    assert_int_equal(parse_args(3, bad3, &c, err, sizeof err), -1);
    assert_int_equal(parse_args(3, bad4, &c, err, sizeof err), -1);
    assert_int_equal(parse_args(2, bad5, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "--frobnicate"));
    assert_int_equal(parse_args(2, bad6, &c, err, sizeof err), -1);
}

static void test_config_agreement(void **state)
{
    train_config c = config_default();
    char m_same[512] = "", m_lr[512] = "", m_opt[512] = "", m_parse[512] = "", want[128];
    int r_same, r_lr, r_opt, r_parse, last = g_nprocs - 1;
    int s_lr, s_opt, s_parse;
    (void)state;
    r_same = config_agree(&c, 1, MPI_COMM_WORLD, m_same, sizeof m_same);
    c.lr = g_rank == last ? 0.02 : 0.01;              /* the last process differs */
    r_lr = config_agree(&c, 1, MPI_COMM_WORLD, m_lr, sizeof m_lr);
    s_lr = same_everywhere(m_lr);
    c = config_default();
    c.optimizer = g_rank == last ? RITE_ADAMW : RITE_LORA_RITE;
    r_opt = config_agree(&c, 1, MPI_COMM_WORLD, m_opt, sizeof m_opt);
    s_opt = same_everywhere(m_opt);
    c = config_default();
    r_parse = config_agree(&c, g_rank != last, MPI_COMM_WORLD, m_parse, sizeof m_parse);
    s_parse = same_everywhere(m_parse);

    assert_int_equal(r_same, 0);
    assert_int_equal(r_parse, EXIT_USAGE);            /* even with one process */
    snprintf(want, sizeof want, "rank %d could not parse", last);
    assert_non_null(strstr(m_parse, want));
    assert_true(s_parse);
    if (g_nprocs == 1) {                              /* nothing to differ from */
        assert_int_equal(r_lr, 0);
        assert_int_equal(r_opt, 0);
        return;
    }
    assert_int_equal(r_lr, EXIT_MISMATCH);
    snprintf(want, sizeof want, "--lr is 0.02 on rank %d but 0.01 on rank 0", last);
    assert_non_null(strstr(m_lr, want));
    assert_true(s_lr);
    assert_int_equal(r_opt, EXIT_MISMATCH);
    snprintf(want, sizeof want, "--optimizer is adamw on rank %d but rite on rank 0", last);
    assert_non_null(strstr(m_opt, want));
    assert_true(s_opt);
}

/* Each process in turn, alone, sets up a trainer on a communicator the others
   never use: a collective call inside would wait forever. */
static void test_too_many_processes(void **state)
{
    train_config c = config_default();
    MPI_Comm dup;
    trainer t;
    char msg[512] = "", want[128];
    int p, code = -1, same;
    (void)state;
    c.layers = g_nprocs > 1 ? g_nprocs - 1 : 1;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    for (p = 0; p < g_nprocs; p++) {
        if (p == g_rank) {
            code = trainer_init(&t, &c, dup, msg, sizeof msg);
            if (code == 0) trainer_free(&t);          /* one process: a valid setup */
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    MPI_Comm_free(&dup);
    same = same_everywhere(msg);
    if (g_nprocs == 1) {
        assert_int_equal(code, 0);
        return;
    }
    assert_int_equal(code, EXIT_TOO_MANY);
    snprintf(want, sizeof want, "%d processes but only %d layers", g_nprocs, g_nprocs - 1);
    assert_non_null(strstr(msg, want));
    assert_true(same);
}

/* ---- data-parallel training equals one process ------------------------------------ */

typedef struct parity {
    int init_code, step_fail, steps_done, identical;
    double diff, diff_per_layer, max_sumsq, last_sumsq, trainer_last_sumsq;
    int ref_ok, ref_pl_ok;
} parity;

/* Collective: trains c on every process, then (each process on its own)
   the single-process reference, with and without global clipping. */
static parity run_parity(const train_config *c)
{
    parity r;
    trainer t;
    factors dist, ref, ref_pl;
    char msg[512];
    double loss, ignored;
    int step;
    memset(&r, 0, sizeof r);
    r.init_code = trainer_init(&t, c, MPI_COMM_WORLD, msg, sizeof msg);
    if (r.init_code != 0) return r;                   /* the same on every process */
    for (step = 0; step < c->steps; step++)
        if (trainer_step(&t, step, &loss) != RITE_OK) { r.step_fail = 1; break; }
    r.steps_done = step;
    r.trainer_last_sumsq = t.last_sumsq;
    factors_from_trainer(&t, &dist);
    trainer_free(&t);
    r.identical = factors_identical_everywhere(&dist);
    r.ref_ok = reference_train(c, 0, &ref, &r.max_sumsq, &r.last_sumsq) == 0;
    r.ref_pl_ok = reference_train(c, 1, &ref_pl, &ignored, &ignored) == 0;
    r.diff = factors_max_diff(&dist, &ref);
    r.diff_per_layer = factors_max_diff(&dist, &ref_pl);
    factors_free(&dist);
    factors_free(&ref);
    factors_free(&ref_pl);
    return r;
}

static void check_parity(const train_config *c, const parity *r, double tol)
{
    assert_int_equal(r->init_code, 0);
    assert_int_equal(r->step_fail, 0);
    assert_int_equal(r->steps_done, c->steps);
    assert_true(r->ref_ok);
    assert_true(r->identical);                        /* every process: the same factors */
    if (r->diff > tol) print_error("rank %d: largest difference %.3e > %.0e\n", g_rank, r->diff, tol);
    assert_true(r->diff <= tol);
}

/* One parity case: mpi_train's options (config_default() for the others),
   the tolerance of the factors and, with check_clipping, the checks that
   global clipping was active, that the trainer's last sum of squares is the
   reference's, and that clipping each layer by its own norm would have given
   other factors (the comparison would see it). */
typedef struct parity_case {
    const char *options;
    double tol;
    int check_clipping;
} parity_case;

/* batch 50: 25 + 25 on two processes, 16 + 17 + 17 on three (uneven);
   clip 0.25: the global norm exceeds it, clipping is active */
static parity_case parity_rite_f64 = {"--steps 40 --batch 50 --clip 0.25", 1e-12, 1};
static parity_case parity_adamw_f64 = {"--optimizer adamw --steps 30 --batch 47", 1e-12, 0};
static parity_case parity_rite_cyclic = {"--assign cyclic --layers 7 --rank 3 --steps 25 --clip 0.25", 1e-12, 0};
static parity_case parity_rite_f32 = {"--precision f32 --steps 40 --batch 50 --clip 0.25", 1e-5, 0};

/* a cmocka test named test_<row> running test_parity on the row */
#define PARITY_TEST(row) {"test_" #row, test_parity, NULL, NULL, &(row)}

/* parse_args on options split at the spaces; 0 when they parse */
static int parse_option_line(const char *options, train_config *c)
{
    char line[256], err[256], *argv[32] = {"mpi_train"}, *word;
    int argc = 1;
    snprintf(line, sizeof line, "%s", options);
    for (word = strtok(line, " "); word && argc < 32; word = strtok(NULL, " ")) argv[argc++] = word;
    return parse_args(argc, argv, c, err, sizeof err);
}

static void test_parity(void **state)
{
    const parity_case *pc = (const parity_case *)*state;
    train_config c;
    parity r;
    assert_int_equal(parse_option_line(pc->options, &c), 0);   /* the same on every process */
    r = run_parity(&c);
    check_parity(&c, &r, pc->tol);
    if (!pc->check_clipping) return;
    assert_true(r.max_sumsq > c.clip * c.clip);
    assert_true(fabs(r.trainer_last_sumsq - r.last_sumsq) <= 1e-12 * r.last_sumsq);
    assert_true(r.ref_pl_ok);
    assert_true(r.diff_per_layer > 1e-6);
}

/* The example's own --check: the same trainer on MPI_COMM_SELF, which owns
   every layer. Also the data-set loss, evaluated with the samples shared out,
   equals the loss evaluated by one process, and went down. */
static void test_check_against_self(void **state)
{
    train_config c = config_default();
    trainer t, one;
    char msg[512];
    double loss, before = 0, after = 0, after_one = 0, diff = HUGE_VAL;
    int code, code_one = -1, step, fail = 0, fail_one = 0;
    (void)state;
    c.steps = 30;
    c.batch = 61;
    code = trainer_init(&t, &c, MPI_COMM_WORLD, msg, sizeof msg);
    if (code == 0) {
        before = trainer_eval(&t);
        for (step = 0; step < c.steps && !fail; step++) fail = trainer_step(&t, step, &loss) != RITE_OK;
        after = trainer_eval(&t);
        code_one = trainer_init(&one, &c, MPI_COMM_SELF, msg, sizeof msg);
        if (code_one == 0) {
            for (step = 0; step < c.steps && !fail_one; step++)
                fail_one = trainer_step(&one, step, &loss) != RITE_OK;
            after_one = trainer_eval(&one);
            diff = trainer_max_diff(&t, &one);
            trainer_free(&one);
        }
        trainer_free(&t);
    }
    assert_int_equal(code, 0);
    assert_int_equal(code_one, 0);
    assert_false(fail);
    assert_false(fail_one);
    assert_true(diff <= 1e-12);
    assert_true(fabs(after - after_one) <= 1e-12 * after_one);
    assert_true(after < 0.5 * before);
}

/* ---- the optimizer state is divided ----------------------------------------------- */

static void check_sharding(rite_optimizer optimizer)
{
    train_config c = config_default();
    trainer t;
    char msg[512];
    size_t want_state = 0, want_bytes = 0, total_state = 0, cmax = 0, mine_state = 0, mine_bytes = 0;
    unsigned long long mine = 0, sum = 0;
    int i, code, owned = 0, only_own = 1;
    c.optimizer = optimizer;
    code = trainer_init(&t, &c, MPI_COMM_WORLD, msg, sizeof msg);
    if (code == 0) {
        rite_lora lo[MAX_LAYERS];
        rite_model_desc d = owned_desc(&t, lo);
        rite_memory mem = {0, 0, 0};
        mine_state = trainer_state_bytes(&t);
        mine_bytes = t.rite_bytes;
        mine = mine_state;
        if (rite_model_memory_query(&d, &mem) != RITE_OK) only_own = 0;
        want_bytes = mem.total_bytes;
        for (i = 0; i < c.layers; i++) {
            size_t bytes = 0;
            if (layer_state_bytes(&t, i, &bytes, msg, sizeof msg) != 0) only_own = 0;
            total_state += bytes;
            if (bytes > cmax) cmax = bytes;
            if (t.owner[i] == g_rank) {
                if (owned >= t.nown || t.own[owned] != i) only_own = 0;   /* the model's layers, in order */
                owned++;
                want_state += bytes;
            }
        }
        if (owned != t.nown || rite_model_layer_count(t.opt) != t.nown) only_own = 0;
        trainer_free(&t);
    }
    MPI_Allreduce(&mine, &sum, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);

    assert_int_equal(code, 0);
    assert_true(only_own);                 /* a model of the layers it owns, no more */
    assert_true(owned >= 1);
    assert_true(mine_state == want_state);
    assert_true(mine_bytes == want_bytes); /* the allocator hooks saw what the query says */
    assert_true(sum == total_state);       /* the shares add up to the whole */
    /* the share is within the largest layer of 1/P */
    assert_true(fabs((double)mine_state - (double)total_state / g_nprocs) <= (double)cmax);
    if (g_nprocs > 1) assert_true(mine_state < total_state);
}

static void test_sharding_rite(void **state) { (void)state; check_sharding(RITE_LORA_RITE); }
static void test_sharding_adamw(void **state) { (void)state; check_sharding(RITE_ADAMW); }

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_gradient),
        cmocka_unit_test(test_assignment),
        cmocka_unit_test(test_parse_args),
        cmocka_unit_test(test_config_agreement),
        cmocka_unit_test(test_too_many_processes),
        PARITY_TEST(parity_rite_f64),
        PARITY_TEST(parity_adamw_f64),
        PARITY_TEST(parity_rite_cyclic),
        PARITY_TEST(parity_rite_f32),
        cmocka_unit_test(test_check_against_self),
        cmocka_unit_test(test_sharding_rite),
        cmocka_unit_test(test_sharding_adamw),
    };
    int failed, any = 0;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_nprocs);
    printf("test_mpi: rank %d of %d\n", g_rank, g_nprocs);
    fflush(stdout);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any != 0;
}
