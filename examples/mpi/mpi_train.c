/* mpi_train.c - data-parallel LoRA training over MPI, with the optimizer
   state divided among the processes by layer (ZeRO stage 1).

   MODEL
   A small regression network of NL layers (default 5) of different sizes:
       h_0 = x,   h_{i+1} = tanh(W_i h_i)  for i < NL - 1,   y^ = W_{NL-1} h_{NL-1}
   Layer i maps DIMS[i] inputs to DIMS[i + 1] outputs. Its weight is a frozen
   random W0_i plus a LoRA adapter, W_i = W0_i + L_i R_i^T, with L_i
   (DIMS[i+1] x r) and R_i (DIMS[i] x r); only the factors are trained. They
   start as in LoRA: L_i = 0, R_i small and random. The targets come from a
   "teacher" network with the same frozen weights and a random rank-r adapter
   on every layer, plus a little noise. The loss of a batch is the mean over
   its samples of 0.5 ||y^ - y||^2. The model computes in double; the factors
   and the optimizer use the precision of --precision.

   ONE STEP ON P PROCESSES
   Every process holds all the factors and all the data. Layer i's optimizer
   state (moments, second moment) exists on one process only, its owner:
   each process has one rite_model of the layers it owns. The layers are
   assigned once, from their state sizes, the same way on every process
   (--assign). As a LoRA module (rite_lora), layer i's lora_B is L_i and its
   lora_A is R_i^T, so R_i is lora_A stored rank-last.
     1. Each process computes the gradients of all the factors over its share
        of the batch (the batch is cut into P contiguous pieces).
     2. MPI_Allreduce (sum) of all the layers' gradients in one buffer, divided
        by the batch size: every process has the gradient of the whole batch.
     3. Each process calls rite_model_prepare_* on its model, which gives the
        sum of squares of the unmagnified gradients of the layers it owns.
     4. MPI_Allreduce (sum) of the per-process sums of squares: the global
        sum of SPEC step 5, so clipping is over every layer, as on one process.
        Each process's prepare status rides along: if any failed, no process
        applies, and every process stops at the same step.
     5. rite_model_apply with the global sum writes the new factors of the
        owned layers.
     6. MPI_Bcast of each layer's new factors from its owner to all.
   The processes then hold the same factors, equal to those of one process
   stepping every layer (up to rounding: the sums are added in another order).
   The statuses of apply travel in a reduction too, so an error on one
   process stops every process at the same step.

   USAGE
       mpirun -np 2 ./mpi_train [options]
     --steps N            training steps (default 200)
     --optimizer rite|adamw
     --precision f32|f64  precision of the factors and the optimizer (default f64)
     --layers N           number of layers, 1 to 8 (default 5)
     --rank R             LoRA rank r, 1 to 16 (default 4)
     --lr X               learning rate (default 0.01)
     --clip X             LoRA-RITE global clipping threshold, 0 = off (default 1)
     --batch B            samples per step over all processes (default 64)
     --samples S          size of the data set (default 512)
     --seed S             seed of the data and the initial factors (default 1)
     --assign balanced|cyclic
                          layer owners: balanced by optimizer state (default),
                          or layer i on process i mod P
     --print N            print the loss every N steps, 0 = never (default 20)
     --check              rank 0 also trains on its own (one process, every
                          layer) and prints the largest difference of the factors
     --tol X              largest difference --check accepts (default 1e-12 for
                          f64, 1e-4 for f32)
   Every process must be given the same options: they are compared first.

   EXIT STATUS (the same on every process)
     0 success; 1 a step failed or --check found a larger difference; 2 a
     process could not parse its command line; 3 the processes were given
     different options; 4 more processes than layers. */
#include <mpi.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

#define MAX_LAYERS 8
#define MAX_RANK 16

/* Layer i maps DIMS[i] inputs to DIMS[i + 1] outputs. */
static const int DIMS[MAX_LAYERS + 1] = {32, 48, 40, 24, 36, 16, 28, 20, 44};

enum { EXIT_STEP = 1, EXIT_USAGE = 2, EXIT_MISMATCH = 3, EXIT_TOO_MANY = 4 };

/* ---- configuration ---------------------------------------------------------- */

typedef enum assign_policy { ASSIGN_BALANCED = 0, ASSIGN_CYCLIC = 1 } assign_policy;

typedef struct train_config {
    int steps;
    rite_optimizer optimizer;
    rite_precision precision;
    int layers;
    int rank;              /* LoRA rank r */
    double lr;
    double clip;
    int batch;
    int samples;
    long seed;
    assign_policy assign;
    int print_every;
    int check;
    double tol;            /* 0: the default of the precision */
    int help;
} train_config;

static train_config config_default(void)
{
    const train_config c = {.steps = 200, .optimizer = RITE_LORA_RITE, .precision = RITE_FLOAT64, .layers = 5,
                            .rank = 4, .lr = 0.01, .clip = 1.0, .batch = 64, .samples = 512, .seed = 1,
                            .assign = ASSIGN_BALANCED, .print_every = 20};
    return c;
}

static double config_tol(const train_config *c)
{
    return c->tol > 0 ? c->tol : c->precision == RITE_FLOAT64 ? 1e-12 : 1e-4;
}

/* Whole-string integer in [lo, hi]. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;
    if (!s || !*s) return -1;
    v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* Whole-string finite number >= 0. */
static int parse_nonneg(const char *s, double *out)
{
    char *end;
    double v;
    if (!s || !*s) return -1;
    v = strtod(s, &end);
    if (*end || !(v >= 0) || v > 1e300) return -1;
    *out = v;
    return 0;
}

/* Fills *c from the command line. Returns 0, or -1 with a message in err. */
static int parse_args(int argc, char **argv, train_config *c, char *err, size_t errsize)
{
    int a;
    *c = config_default();
    for (a = 1; a < argc; a++) {
        const char *opt = argv[a], *val = a + 1 < argc ? argv[a + 1] : NULL;
        long v = 0;
        int bad = 0, takes_value = 1;
        if (!strcmp(opt, "--check")) { c->check = 1; takes_value = 0; }
        else if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) { c->help = 1; takes_value = 0; }
        else if (!val) {
            snprintf(err, errsize, "unknown option or missing value: %s", opt);
            return -1;
        }
        else if (!strcmp(opt, "--steps")) { bad = parse_long(val, 0, 100000000, &v); c->steps = (int)v; }
        else if (!strcmp(opt, "--layers")) { bad = parse_long(val, 1, MAX_LAYERS, &v); c->layers = (int)v; }
        else if (!strcmp(opt, "--rank")) { bad = parse_long(val, 1, MAX_RANK, &v); c->rank = (int)v; }
        else if (!strcmp(opt, "--batch")) { bad = parse_long(val, 1, 1000000, &v); c->batch = (int)v; }
        else if (!strcmp(opt, "--samples")) { bad = parse_long(val, 1, 1000000, &v); c->samples = (int)v; }
        else if (!strcmp(opt, "--seed")) { bad = parse_long(val, 0, 2000000000, &v); c->seed = v; }
        else if (!strcmp(opt, "--print")) { bad = parse_long(val, 0, 100000000, &v); c->print_every = (int)v; }
        else if (!strcmp(opt, "--lr")) bad = parse_nonneg(val, &c->lr);
        else if (!strcmp(opt, "--clip")) bad = parse_nonneg(val, &c->clip);
        else if (!strcmp(opt, "--tol")) bad = parse_nonneg(val, &c->tol);
        else if (!strcmp(opt, "--optimizer")) {
            if (!strcmp(val, "rite")) c->optimizer = RITE_LORA_RITE;
            else if (!strcmp(val, "adamw")) c->optimizer = RITE_ADAMW;
            else bad = 1;
        } else if (!strcmp(opt, "--precision")) {
            if (!strcmp(val, "f32")) c->precision = RITE_FLOAT32;
            else if (!strcmp(val, "f64")) c->precision = RITE_FLOAT64;
            else bad = 1;
        } else if (!strcmp(opt, "--assign")) {
            if (!strcmp(val, "balanced")) c->assign = ASSIGN_BALANCED;
            else if (!strcmp(val, "cyclic")) c->assign = ASSIGN_CYCLIC;
            else bad = 1;
        } else {
            snprintf(err, errsize, "unknown option: %s", opt);
            return -1;
        }
        if (bad) {
            snprintf(err, errsize, "bad value for %s: %s", opt, val);
            return -1;
        }
        a += takes_value;
    }
    return 0;
}

/* ---- the same configuration on every process -------------------------------- */

/* A configuration as a record of numbers, one per option (integers are
   exact in a double). Slot 0 says whether the command line was parsed. */
enum { RECORD_SIZE = 17 };
static const char *const RECORD_NAMES[RECORD_SIZE] = {
    "(parsed)", "library version", "--steps", "--optimizer", "--precision", "--layers",
    "--rank", "--lr", "--clip", "--batch", "--samples", "--seed", "--assign",
    "--print", "--check", "--tol", "--help"};

static void config_record(const train_config *c, int parsed, double rec[RECORD_SIZE])
{
    rec[0] = parsed;
    rec[1] = LORA_RITE_VERSION_MAJOR * 10000 + LORA_RITE_VERSION_MINOR * 100 + LORA_RITE_VERSION_PATCH;
    rec[2] = c->steps;
    rec[3] = c->optimizer;
    rec[4] = c->precision;
    rec[5] = c->layers;
    rec[6] = c->rank;
    rec[7] = c->lr;
    rec[8] = c->clip;
    rec[9] = c->batch;
    rec[10] = c->samples;
    rec[11] = (double)c->seed;
    rec[12] = c->assign;
    rec[13] = c->print_every;
    rec[14] = c->check;
    rec[15] = c->tol;
    rec[16] = c->help;
}

static void record_value(int field, double v, char *buf, size_t size)
{
    if (field == 3) snprintf(buf, size, "%s", v == RITE_ADAMW ? "adamw" : "rite");
    else if (field == 4) snprintf(buf, size, "%s", v == RITE_FLOAT32 ? "f32" : "f64");
    else if (field == 12) snprintf(buf, size, "%s", v == ASSIGN_CYCLIC ? "cyclic" : "balanced");
    else if (field == 14 || field == 16) snprintf(buf, size, "%s", v != 0 ? "given" : "not given");
    else snprintf(buf, size, "%.17g", v);
}

/* Collective: every process calls it once, first, whatever its command line
   said (parsed = 0 if it could not parse it). MPI_Allgather of every
   process's configuration record, compared with rank 0's. Returns 0 when all
   parsed and agree; otherwise EXIT_USAGE or EXIT_MISMATCH with the reason in
   msg, the same text on every process. */
static int config_agree(const train_config *c, int parsed, MPI_Comm comm, char *msg, size_t size)
{
    double mine[RECORD_SIZE], *all;
    int nprocs, p, f;
    MPI_Comm_size(comm, &nprocs);
    config_record(c, parsed, mine);
    all = (double *)malloc((size_t)nprocs * sizeof mine);
    if (!all) {
        fprintf(stderr, "mpi_train: out of memory\n");
        MPI_Abort(comm, EXIT_STEP);
        return EXIT_STEP;
    }
    MPI_Allgather(mine, RECORD_SIZE, MPI_DOUBLE, all, RECORD_SIZE, MPI_DOUBLE, comm);
    for (p = 0; p < nprocs; p++)
        if (all[(size_t)p * RECORD_SIZE] == 0) {
            snprintf(msg, size, "rank %d could not parse its command line (see its message)", p);
            free(all);
            return EXIT_USAGE;
        }
    for (p = 1; p < nprocs; p++)
        for (f = 1; f < RECORD_SIZE; f++) {
            const double *theirs = &all[(size_t)p * RECORD_SIZE + f];
            if (memcmp(theirs, &all[f], sizeof *theirs) != 0) {
                char v0[40], vp[40];
                record_value(f, all[f], v0, sizeof v0);
                record_value(f, *theirs, vp, sizeof vp);
                snprintf(msg, size,
                         "the processes were given different options: %s is %s on rank %d "
                         "but %s on rank 0 (every process must be given the same options)",
                         RECORD_NAMES[f], vp, p, v0);
                free(all);
                return EXIT_MISMATCH;
            }
        }
    free(all);
    return 0;
}

/* ---- random numbers (splitmix64, the same on every machine) ----------------- */

typedef struct rng { unsigned long long s; } rng;

static double rng_uniform(rng *g)
{
    unsigned long long z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng *g)
{
    double u1 = rng_uniform(g), u2 = rng_uniform(g);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void fill_normal(rng *g, double *x, size_t count, double scale)
{
    size_t i;
    for (i = 0; i < count; i++) x[i] = scale * rng_normal(g);
}

/* ---- the model --------------------------------------------------------------- */

typedef struct model {
    int nl, r, samples;
    int dim[MAX_LAYERS + 1];
    double *W0[MAX_LAYERS];            /* frozen weights, dim[i+1] x dim[i], row-major */
    double *L0[MAX_LAYERS];            /* initial factors: L_i (dim[i+1] x r) = 0 */
    double *R0[MAX_LAYERS];            /*                  R_i (dim[i] x r) random */
    double *X, *Y;                     /* inputs (samples x dim[0]), targets (samples x dim[nl]) */
    size_t goff[MAX_LAYERS + 1];       /* layer i's gL at goff[i], its gR right after */
    size_t work_count;                 /* doubles of scratch model_sample needs */
} model;

static void model_free(model *net)
{
    int i;
    for (i = 0; i < MAX_LAYERS; i++) {
        free(net->W0[i]);
        free(net->L0[i]);
        free(net->R0[i]);
    }
    free(net->X);
    free(net->Y);
    memset(net, 0, sizeof *net);
}

/* Frozen weights, initial factors and data set, from the seed alone: every
   process makes the same. Returns 0, or -1 when out of memory. */
static int model_init(model *net, const train_config *c)
{
    rng g;
    double *V = NULL, *h = NULL, *a = NULL;
    int i, s, ok = 1, maxdim = 0;
    memset(net, 0, sizeof *net);
    net->nl = c->layers;
    net->r = c->rank;
    net->samples = c->samples;
    for (i = 0; i <= net->nl; i++) {
        net->dim[i] = DIMS[i];
        if (DIMS[i] > maxdim) maxdim = DIMS[i];
    }
    for (i = 0; i < net->nl; i++) {
        size_t m = (size_t)net->dim[i + 1], n = (size_t)net->dim[i], r = (size_t)net->r;
        net->goff[i + 1] = net->goff[i] + (m + n) * r;
        net->W0[i] = (double *)malloc(m * n * sizeof(double));
        net->L0[i] = (double *)calloc(m * r, sizeof(double));
        net->R0[i] = (double *)malloc(n * r * sizeof(double));
        ok &= net->W0[i] && net->L0[i] && net->R0[i];
    }
    net->X = (double *)malloc((size_t)c->samples * (size_t)net->dim[0] * sizeof(double));
    net->Y = (double *)malloc((size_t)c->samples * (size_t)net->dim[net->nl] * sizeof(double));
    V = (double *)malloc((size_t)maxdim * MAX_RANK * 2 * sizeof(double));
    h = (double *)malloc((size_t)maxdim * sizeof(double));
    a = (double *)malloc((size_t)maxdim * sizeof(double));
    net->work_count = 0;
    for (i = 0; i <= net->nl; i++) net->work_count += (size_t)net->dim[i];
    net->work_count += 2 * (size_t)maxdim + 2 * (size_t)net->r;
    if (!ok || !net->X || !net->Y || !V || !h || !a) {
        free(V); free(h); free(a);
        model_free(net);
        return -1;
    }
    g.s = 0x5eed0000ull + (unsigned long long)c->seed;
    for (i = 0; i < net->nl; i++) {
        int m = net->dim[i + 1], n = net->dim[i];
        fill_normal(&g, net->W0[i], (size_t)m * n, 1.0 / sqrt((double)n));
        fill_normal(&g, net->R0[i], (size_t)n * net->r, 1.0 / sqrt((double)n));
    }
    fill_normal(&g, net->X, (size_t)c->samples * net->dim[0], 1.0);
    /* targets: y = teacher(x) + noise; the teacher's layer i is W0_i + P_i Q_i^T */
    {
        double *T[MAX_LAYERS] = {NULL};
        for (i = 0; i < net->nl && ok; i++) {
            int m = net->dim[i + 1], n = net->dim[i], r = net->r, j, k, p;
            double *P = V, *Q = V + (size_t)maxdim * MAX_RANK;
            T[i] = (double *)malloc((size_t)m * n * sizeof(double));
            if (!T[i]) { ok = 0; break; }
            fill_normal(&g, P, (size_t)m * r, 1.0 / sqrt((double)r));
            fill_normal(&g, Q, (size_t)n * r, 0.5 / sqrt((double)n));
            for (j = 0; j < m; j++)
                for (k = 0; k < n; k++) {
                    double z = net->W0[i][(size_t)j * n + k];
                    for (p = 0; p < r; p++) z += P[(size_t)j * r + p] * Q[(size_t)k * r + p];
                    T[i][(size_t)j * n + k] = z;
                }
        }
        for (s = 0; s < c->samples && ok; s++) {
            int j, k, last = net->nl - 1;
            memcpy(h, net->X + (size_t)s * net->dim[0], (size_t)net->dim[0] * sizeof(double));
            for (i = 0; i < net->nl; i++) {
                int m = net->dim[i + 1], n = net->dim[i];
                for (j = 0; j < m; j++) {
                    double z = 0;
                    for (k = 0; k < n; k++) z += T[i][(size_t)j * n + k] * h[k];
                    a[j] = i < last ? tanh(z) : z;
                }
                memcpy(h, a, (size_t)m * sizeof(double));
            }
            for (j = 0; j < net->dim[net->nl]; j++)
                net->Y[(size_t)s * net->dim[net->nl] + j] = h[j] + 0.01 * rng_normal(&g);
        }
        for (i = 0; i < net->nl; i++) free(T[i]);
    }
    free(V); free(h); free(a);
    if (!ok) {
        model_free(net);
        return -1;
    }
    return 0;
}

/* W_i = W0_i + L_i R_i^T for every layer (factors in double, k x r row-major). */
static void model_weights(const model *net, double *const L[], double *const R[], double *const W[])
{
    int i, j, k, p, r = net->r;
    for (i = 0; i < net->nl; i++) {
        int m = net->dim[i + 1], n = net->dim[i];
        for (j = 0; j < m; j++)
            for (k = 0; k < n; k++) {
                double z = net->W0[i][(size_t)j * n + k];
                for (p = 0; p < r; p++) z += L[i][(size_t)j * r + p] * R[i][(size_t)k * r + p];
                W[i][(size_t)j * n + k] = z;
            }
    }
}

/* Loss 0.5 ||y^ - y||^2 of sample s; when grad is not NULL, adds the
   sample's gradient with respect to every factor to grad (layer i's gL,
   dim[i+1] x r, at goff[i], its gR, dim[i] x r, right after). work holds
   net->work_count doubles. */
static double model_sample(const model *net, double *const W[], double *const L[], double *const R[],
                           int s, double *grad, double *work)
{
    double *h[MAX_LAYERS + 1], *d, *dn, *u, *v, loss = 0;
    int i, j, k, p, nl = net->nl, r = net->r, maxdim = 0;
    size_t off = 0;
    for (i = 0; i <= nl; i++) {
        h[i] = work + off;
        off += (size_t)net->dim[i];
        if (net->dim[i] > maxdim) maxdim = net->dim[i];
    }
    d = work + off;
    dn = d + maxdim;
    u = dn + maxdim;
    v = u + r;
    /* forward: h_{i+1} = tanh(W_i h_i), the last layer linear */
    memcpy(h[0], net->X + (size_t)s * net->dim[0], (size_t)net->dim[0] * sizeof(double));
    for (i = 0; i < nl; i++) {
        int m = net->dim[i + 1], n = net->dim[i];
        for (j = 0; j < m; j++) {
            double z = 0;
            for (k = 0; k < n; k++) z += W[i][(size_t)j * n + k] * h[i][k];
            h[i + 1][j] = i < nl - 1 ? tanh(z) : z;
        }
    }
    /* loss, and d = dloss/dy^ */
    for (j = 0; j < net->dim[nl]; j++) {
        d[j] = h[nl][j] - net->Y[(size_t)s * net->dim[nl] + j];
        loss += 0.5 * d[j] * d[j];
    }
    if (!grad) return loss;
    /* backward: d = dloss/d(W_i h_i); dW_i = d h_i^T, so gL_i = d (R_i^T h_i)^T
       and gR_i = h_i (L_i^T d)^T */
    for (i = nl - 1; i >= 0; i--) {
        int m = net->dim[i + 1], n = net->dim[i];
        double *gL = grad + net->goff[i], *gR = gL + (size_t)m * r, *t;
        for (p = 0; p < r; p++) {
            double su = 0, sv = 0;
            for (k = 0; k < n; k++) su += R[i][(size_t)k * r + p] * h[i][k];
            for (j = 0; j < m; j++) sv += L[i][(size_t)j * r + p] * d[j];
            u[p] = su;
            v[p] = sv;
        }
        for (j = 0; j < m; j++)
            for (p = 0; p < r; p++) gL[(size_t)j * r + p] += d[j] * u[p];
        for (k = 0; k < n; k++)
            for (p = 0; p < r; p++) gR[(size_t)k * r + p] += h[i][k] * v[p];
        if (i == 0) break;
        /* d for layer i-1: (W_i^T d) * tanh'(.), tanh' = 1 - h_i^2 */
        for (k = 0; k < n; k++) {
            double z = 0;
            for (j = 0; j < m; j++) z += W[i][(size_t)j * n + k] * d[j];
            dn[k] = z * (1.0 - h[i][k] * h[i][k]);
        }
        t = d; d = dn; dn = t;
    }
    return loss;
}

/* Sample j of the batch of step `step`: the data set is read in order, round and round. */
static int batch_sample(const model *net, int step, int batch, int j)
{
    return (int)(((long long)step * batch + j) % net->samples);
}

/* ---- which process owns which layer's optimizer ---------------------------- */

/* Balanced sharing, by exhaustive search: layers 0..nl-1 are given out in
   turn, each to a process that already has a layer or to the next unused one
   (processes are interchangeable, so this visits every way of sharing the
   layers out once: at most 4140 ways for 8 layers). The sharing with the
   least sum of squared loads wins (the first found among equals). */
static void assign_search(int i, int nl, const size_t cost[], int nprocs, int used, int cur[],
                          double load[], double *best, int owner[])
{
    int p;
    if (i == nl) {
        double sq = 0;
        for (p = 0; p < nprocs; p++) sq += load[p] * load[p];
        if (sq < *best) {
            *best = sq;
            memcpy(owner, cur, (size_t)nl * sizeof *owner);
        }
        return;
    }
    for (p = 0; p <= used && p < nprocs; p++) {
        cur[i] = p;
        load[p] += (double)cost[i];
        assign_search(i + 1, nl, cost, nprocs, used + (p == used), cur, load, best, owner);
        load[p] -= (double)cost[i];
    }
}

/* owner[i] for every layer, the same on every process. Cyclic: layer i on
   process i mod P. Balanced: the least sum of squared loads, where a
   process's load is the cost of the layers it owns. No layer can then move
   from a process to a less loaded one and bring the two closer, so with
   nl >= P every process owns a layer, and any two loads differ by at most
   the largest cost: each load is within it of total / P. */
static void assign_layers(int nl, const size_t cost[], int nprocs, assign_policy policy, int owner[])
{
    int cur[MAX_LAYERS], i;
    double load[MAX_LAYERS] = {0}, best = HUGE_VAL;
    if (policy == ASSIGN_CYCLIC) {
        for (i = 0; i < nl; i++) owner[i] = i % nprocs;
        return;
    }
    assign_search(0, nl, cost, nprocs, 0, cur, load, &best, owner);
}

/* ---- the data-parallel trainer ---------------------------------------------- */

/* What lora_rite allocates on this process is counted through the layers'
   allocator hooks. */
typedef union alloc_header { size_t bytes; long double ld; void *p; long long ll; } alloc_header;

static void *count_alloc(size_t size, void *user_data)
{
    alloc_header *h = (alloc_header *)malloc(sizeof *h + size);
    if (!h) return NULL;
    h->bytes = size;
    *(size_t *)user_data += size;
    return h + 1;
}

static void count_free(void *ptr, void *user_data)
{
    alloc_header *h;
    if (!ptr) return;
    h = (alloc_header *)ptr - 1;
    *(size_t *)user_data -= h->bytes;
    free(h);
}

typedef struct trainer {
    train_config cfg;
    MPI_Comm comm;
    int rank, nprocs;
    model net;
    rite_config rcfg;
    int owner[MAX_LAYERS];
    int nown, own[MAX_LAYERS];     /* the layers this process owns, ascending: its model's layers */
    rite_model *opt;               /* the optimizer of the owned layers (one model) */
    void *fac[MAX_LAYERS];         /* L_i then R_i, optimizer precision, on every process */
    float *g32[MAX_LAYERS];        /* f32, owned layers: the batch gradient in single precision */
    double *grad;                  /* every layer's gradient, then the loss: goff[nl] + 1 */
    double *W[MAX_LAYERS], *Ld[MAX_LAYERS], *Rd[MAX_LAYERS];  /* model copies, double */
    double *work;
    size_t rite_bytes;             /* bytes lora_rite holds on this process */
    double last_sumsq;             /* global sum of squares of the last step */
    int failed_rank;               /* the process whose step failed, or -1 */
} trainer;

static size_t elem_size(const train_config *c)
{
    return c->precision == RITE_FLOAT64 ? sizeof(double) : sizeof(float);
}

/* Layer i as a LoRA module: W_i - W0_i = L_i R_i^T, so PEFT's lora_B (out x r)
   is L_i and lora_A is R_i^T: R_i (in x r) is lora_A stored rank-last. */
static rite_lora layer_lora(const trainer *t, int i)
{
    rite_lora lo = rite_lora_peft(t->net.dim[i], t->net.dim[i + 1], t->cfg.rank);
    lo.layout_A = RITE_RANK_LAST;  /* R_i, in x r */
    return lo;                     /* lora_B = L_i, out x r: PEFT's storage */
}

/* The model of the layers this process owns; lo holds t->nown modules. Its
   memory is counted through the allocator hooks. */
static rite_model_desc owned_desc(trainer *t, rite_lora lo[MAX_LAYERS])
{
    rite_model_desc d;
    int j;
    for (j = 0; j < t->nown; j++) lo[j] = layer_lora(t, t->own[j]);
    memset(&d, 0, sizeof d);
    d.layers = lo;
    d.n_layers = t->nown;
    d.optimizer = t->cfg.optimizer;
    d.precision = t->cfg.precision;
    d.config = &t->rcfg;
    d.allocator.alloc = count_alloc;
    d.allocator.release = count_free;
    d.allocator.user_data = &t->rite_bytes;
    return d;
}

/* Bytes of persistent optimizer state layer i has (on its owner): the cost
   the layers are assigned by. Returns 0, or -1 with a message in err. */
static int layer_state_bytes(const trainer *t, int i, size_t *bytes, char *err, size_t errsize)
{
    rite_lora lo = layer_lora(t, i);
    rite_model_desc d;
    rite_memory mem;
    rite_status st;
    memset(&d, 0, sizeof d);
    d.layers = &lo;
    d.n_layers = 1;
    d.optimizer = t->cfg.optimizer;
    d.precision = t->cfg.precision;
    d.config = &t->rcfg;
    st = rite_model_memory_query(&d, &mem);
    if (st != RITE_OK) {
        snprintf(err, errsize, "layer %d (%d -> %d, rank %d): %s", i, lo.in_features, lo.out_features, lo.r,
                 rite_status_string(st));
        return -1;
    }
    *bytes = mem.state_bytes;
    return 0;
}

static void trainer_free(trainer *t)
{
    int i;
    if (t->opt) rite_model_free(t->opt);
    for (i = 0; i < MAX_LAYERS; i++) {
        free(t->fac[i]);
        free(t->g32[i]);
        free(t->W[i]);
        free(t->Ld[i]);
        free(t->Rd[i]);
    }
    free(t->grad);
    free(t->work);
    model_free(&t->net);
    memset(t, 0, sizeof *t);
}

/* Layer i's factors (initial values, in the optimizer's precision), its
   double copies, and on its owner the f32 gradient. Returns 0, or -1 when
   out of memory. */
static int trainer_alloc_layer(trainer *t, int i)
{
    size_t m = (size_t)t->net.dim[i + 1], n = (size_t)t->net.dim[i], r = (size_t)t->cfg.rank, k;
    int need_g32 = t->owner[i] == t->rank && t->cfg.precision == RITE_FLOAT32;
    t->fac[i] = malloc((m + n) * r * elem_size(&t->cfg));
    t->W[i] = (double *)malloc(m * n * sizeof(double));
    t->Ld[i] = (double *)malloc(m * r * sizeof(double));
    t->Rd[i] = (double *)malloc(n * r * sizeof(double));
    if (need_g32) t->g32[i] = (float *)malloc((m + n) * r * sizeof(float));
    if (!t->fac[i] || !t->W[i] || !t->Ld[i] || !t->Rd[i] || (need_g32 && !t->g32[i])) return -1;
    for (k = 0; k < (m + n) * r; k++) {   /* initial factors, L then R */
        double x = k < m * r ? t->net.L0[i][k] : t->net.R0[i][k - m * r];
        if (t->cfg.precision == RITE_FLOAT64) ((double *)t->fac[i])[k] = x;
        else ((float *)t->fac[i])[k] = (float)x;
    }
    return 0;
}

/* The data, every layer's buffers, and the model of the owned layers.
   Returns 0, or 1 after printing why this process failed. */
static int trainer_build(trainer *t)
{
    rite_lora lo[MAX_LAYERS];
    rite_model_desc d;
    char detail[256];
    rite_status st;
    int i;
    if (model_init(&t->net, &t->cfg) != 0) return 1;
    t->grad = (double *)malloc((t->net.goff[t->cfg.layers] + 1) * sizeof(double));
    t->work = (double *)malloc(t->net.work_count * sizeof(double));
    if (!t->grad || !t->work) return 1;
    for (i = 0; i < t->cfg.layers; i++)
        if (trainer_alloc_layer(t, i) != 0) return 1;
    d = owned_desc(t, lo);
    st = rite_model_init(&t->opt, &d, detail, sizeof detail);
    if (st != RITE_OK) {
        fprintf(stderr, "mpi_train: rank %d: %s (%s)\n", t->rank, rite_status_string(st), detail);
        return 1;
    }
    return 0;
}

/* Collective over comm. Builds the model, assigns the layers and creates the
   optimizer of the layers this process owns. Returns 0, or an exit status
   with a message in err; every process returns the same status. */
static int trainer_init(trainer *t, const train_config *c, MPI_Comm comm, char *err, size_t errsize)
{
    size_t cost[MAX_LAYERS];
    int i, fail, any_fail = 0;
    memset(t, 0, sizeof *t);
    t->cfg = *c;
    t->comm = comm;
    t->failed_rank = -1;
    MPI_Comm_rank(comm, &t->rank);
    MPI_Comm_size(comm, &t->nprocs);
    if (t->nprocs > c->layers) {
        snprintf(err, errsize, "%d processes but only %d layers: every process must own the "
                 "optimizer of at least one layer (run at most %d processes, or give more --layers)",
                 t->nprocs, c->layers, c->layers);
        return EXIT_TOO_MANY;
    }
    t->rcfg = rite_config_default(c->optimizer);
    t->rcfg.lr = c->lr;
    if (c->optimizer == RITE_LORA_RITE) t->rcfg.clip = c->clip;
    /* every layer's description is checked on every process: the same verdict everywhere */
    t->net.nl = c->layers;
    for (i = 0; i <= c->layers; i++) t->net.dim[i] = DIMS[i];
    for (i = 0; i < c->layers; i++)
        if (layer_state_bytes(t, i, &cost[i], err, errsize) != 0) return EXIT_USAGE;
    assign_layers(c->layers, cost, t->nprocs, c->assign, t->owner);
    for (i = 0; i < c->layers; i++)
        if (t->owner[i] == t->rank) t->own[t->nown++] = i;

    fail = trainer_build(t);
    /* a process that failed must not leave the others waiting: agree first */
    MPI_Allreduce(&fail, &any_fail, 1, MPI_INT, MPI_MAX, comm);
    if (any_fail) {
        snprintf(err, errsize, "%s", fail ? "could not set up (out of memory, or see above)"
                                          : "another process could not set up");
        trainer_free(t);
        return EXIT_STEP;
    }
    return 0;
}

/* The factors in double (L_i, R_i of every layer) and the model weights. */
static void trainer_widen(trainer *t)
{
    int i;
    for (i = 0; i < t->net.nl; i++) {
        size_t m = (size_t)t->net.dim[i + 1], n = (size_t)t->net.dim[i], r = (size_t)t->net.r, k;
        for (k = 0; k < (m + n) * r; k++) {
            double x = t->cfg.precision == RITE_FLOAT64 ? ((double *)t->fac[i])[k]
                                                         : (double)((float *)t->fac[i])[k];
            if (k < m * r) t->Ld[i][k] = x;
            else t->Rd[i][k - m * r] = x;
        }
    }
    model_weights(&t->net, t->Ld, t->Rd, t->W);
}

/* Step 3, phase one on the owned layers (rite_model_prepare_*): lora_A is
   R_i, lora_B is L_i, their gradients are in t->grad. *sumsq gets this
   process's sum of squares. */
static rite_status trainer_prepare(trainer *t, double *sumsq)
{
    const model *net = &t->net;
    int j;
    if (t->cfg.precision == RITE_FLOAT64) {
        double *A[MAX_LAYERS], *B[MAX_LAYERS];
        double *gA[MAX_LAYERS], *gB[MAX_LAYERS];
        for (j = 0; j < t->nown; j++) {
            int i = t->own[j];
            size_t mr = (size_t)net->dim[i + 1] * net->r;
            B[j] = (double *)t->fac[i];
            A[j] = B[j] + mr;
            gB[j] = t->grad + net->goff[i];
            gA[j] = gB[j] + mr;
        }
        return rite_model_prepare_f64(t->opt, A, B, gA, gB, sumsq);
    } else {
        float *A[MAX_LAYERS], *B[MAX_LAYERS];
        float *gA[MAX_LAYERS], *gB[MAX_LAYERS];
        for (j = 0; j < t->nown; j++) {
            int i = t->own[j];
            size_t mr = (size_t)net->dim[i + 1] * net->r, nr = (size_t)net->dim[i] * net->r, k;
            for (k = 0; k < mr + nr; k++) t->g32[i][k] = (float)t->grad[net->goff[i] + k];
            B[j] = (float *)t->fac[i];
            A[j] = B[j] + mr;
            gB[j] = t->g32[i];
            gA[j] = gB[j] + mr;
        }
        return rite_model_prepare_f32(t->opt, A, B, gA, gB, sumsq);
    }
}

/* The first nonzero status of the processes' statuses (one slot per process,
   summed over the processes) and which process it is; RITE_OK if none. */
static rite_status first_failure(trainer *t, const double *status)
{
    int p;
    for (p = 0; p < t->nprocs; p++)
        if (status[p] != 0) {
            t->failed_rank = p;
            return (rite_status)(int)status[p];
        }
    return RITE_OK;
}

/* One data-parallel training step (collective). *loss is the loss of the
   batch before the step. Returns RITE_OK, or the status of the process whose
   step failed (t->failed_rank); every process returns the same. */
static rite_status trainer_step(trainer *t, int step, double *loss)
{
    const model *net = &t->net;
    int nl = net->nl, i, j, first, last;
    size_t gn = net->goff[nl], k;
    double red[1 + MAX_LAYERS], sq = 0;
    rite_status status;

    /* 1. gradients over this process's share of the batch */
    trainer_widen(t);
    memset(t->grad, 0, (gn + 1) * sizeof(double));
    first = (int)((long long)t->cfg.batch * t->rank / t->nprocs);
    last = (int)((long long)t->cfg.batch * (t->rank + 1) / t->nprocs);
    for (j = first; j < last; j++)
        t->grad[gn] += model_sample(net, t->W, t->Ld, t->Rd, batch_sample(net, step, t->cfg.batch, j),
                                    t->grad, t->work);

    /* 2. sum over the processes (the loss rides along), then the mean over the batch */
    MPI_Allreduce(MPI_IN_PLACE, t->grad, (int)(gn + 1), MPI_DOUBLE, MPI_SUM, t->comm);
    for (k = 0; k <= gn; k++) t->grad[k] /= t->cfg.batch;
    *loss = t->grad[gn];

    /* 3. phase one on the owned layers: this process's sum of squares, and its status */
    memset(red, 0, sizeof red);
    status = trainer_prepare(t, &sq);
    red[0] = status == RITE_OK ? sq : 0;
    red[1 + t->rank] = status;      /* only this process fills its slot */

    /* 4. the global sum of squares (SPEC step 5); if any prepare failed, every process skips apply */
    MPI_Allreduce(MPI_IN_PLACE, red, 1 + t->nprocs, MPI_DOUBLE, MPI_SUM, t->comm);
    t->last_sumsq = red[0];
    status = first_failure(t, red + 1);
    if (status != RITE_OK) return status;

    /* 5. phase two on the owned layers, clipped by the global norm */
    memset(red, 0, sizeof red);
    red[t->rank] = rite_model_apply(t->opt, t->last_sumsq);
    MPI_Allreduce(MPI_IN_PLACE, red, t->nprocs, MPI_DOUBLE, MPI_SUM, t->comm);

    /* 6. every layer's new factors from its owner (a failed apply changed nothing) */
    for (i = 0; i < nl; i++) {
        int count = (net->dim[i + 1] + net->dim[i]) * net->r;
        MPI_Bcast(t->fac[i], count, t->cfg.precision == RITE_FLOAT64 ? MPI_DOUBLE : MPI_FLOAT,
                  t->owner[i], t->comm);
    }
    return first_failure(t, red);
}

/* Mean loss over the whole data set (collective: the samples are shared out). */
static double trainer_eval(trainer *t)
{
    int s, first = (int)((long long)t->net.samples * t->rank / t->nprocs),
           last = (int)((long long)t->net.samples * (t->rank + 1) / t->nprocs);
    double sum = 0, total = 0;
    trainer_widen(t);
    for (s = first; s < last; s++) sum += model_sample(&t->net, t->W, t->Ld, t->Rd, s, NULL, t->work);
    MPI_Allreduce(&sum, &total, 1, MPI_DOUBLE, MPI_SUM, t->comm);
    return total / t->net.samples;
}

/* Bytes of persistent optimizer state this process holds. */
static size_t trainer_state_bytes(const trainer *t)
{
    size_t n = 0;
    int j;
    for (j = 0; j < t->nown; j++) n += rite_state_size(rite_model_layer(t->opt, j));
    return n;
}

/* Largest |difference| between the factors of two trainers. */
static double trainer_max_diff(trainer *a, trainer *b)
{
    double worst = 0;
    int i;
    trainer_widen(a);
    trainer_widen(b);
    for (i = 0; i < a->net.nl; i++) {
        size_t k, mr = (size_t)a->net.dim[i + 1] * a->net.r, nr = (size_t)a->net.dim[i] * a->net.r;
        for (k = 0; k < mr; k++) {
            double d = fabs(a->Ld[i][k] - b->Ld[i][k]);
            if (d > worst || d != d) worst = d;
        }
        for (k = 0; k < nr; k++) {
            double d = fabs(a->Rd[i][k] - b->Rd[i][k]);
            if (d > worst || d != d) worst = d;
        }
    }
    return worst;
}

#ifndef MPI_TRAIN_NO_MAIN

static void usage(FILE *f)
{
    fprintf(f,
        "usage: mpirun -np P mpi_train [--steps N] [--optimizer rite|adamw] [--precision f32|f64]\n"
        "         [--layers N] [--rank R] [--lr X] [--clip X] [--batch B] [--samples S]\n"
        "         [--seed S] [--assign balanced|cyclic] [--print N] [--check] [--tol X]\n"
        "Every process must be given the same options; P must not exceed --layers.\n");
}

/* Rank 0 prints each process's layers and bytes (collective). */
static void report_memory(trainer *t)
{
    unsigned long long mine[2], *all = NULL;
    size_t fac_bytes = 0, grad_bytes = 0;
    int i, p;
    mine[0] = trainer_state_bytes(t);
    mine[1] = t->rite_bytes;
    if (t->rank == 0) all = (unsigned long long *)malloc(2 * (size_t)t->nprocs * sizeof *all);
    if (t->rank == 0 && !all) {
        fprintf(stderr, "mpi_train: out of memory\n");
        MPI_Abort(t->comm, EXIT_STEP);
    }
    MPI_Gather(mine, 2, MPI_UNSIGNED_LONG_LONG, all, 2, MPI_UNSIGNED_LONG_LONG, 0, t->comm);
    if (t->rank != 0) return;
    for (i = 0; i < t->net.nl; i++) fac_bytes += (t->net.goff[i + 1] - t->net.goff[i]) * elem_size(&t->cfg);
    grad_bytes = t->net.goff[t->net.nl] * sizeof(double);
    printf("optimizer state by process (layers assigned %s):\n",
           t->cfg.assign == ASSIGN_CYCLIC ? "cyclically" : "by size");
    {
        unsigned long long state = 0, alloc = 0, most = 0;
        for (p = 0; p < t->nprocs; p++) {
            char layers[64] = "";
            size_t len = 0;
            for (i = 0; i < t->net.nl; i++)
                if (t->owner[i] == p)
                    len += (size_t)snprintf(layers + len, sizeof layers - len, " %d", i);
            printf("  rank %-3d layers%-12s state %8llu B   allocated by lora_rite %8llu B\n",
                   p, layers, all[2 * p], all[2 * p + 1]);
            state += all[2 * p];
            alloc += all[2 * p + 1];
            if (all[2 * p] > most) most = all[2 * p];
        }
        printf("  total    %-18s state %8llu B   allocated by lora_rite %8llu B\n", "", state, alloc);
        printf("  the largest share is %.1f%% of the state (1/%d = %.1f%%)\n",
               state ? 100.0 * (double)most / (double)state : 0.0, t->nprocs, 100.0 / t->nprocs);
    }
    printf("  on every process: factors %lu B, gradients %lu B\n",
           (unsigned long)fac_bytes, (unsigned long)grad_bytes);
    free(all);
}

/* A failed step, on every process; the process whose step failed adds its
   model's detail (the model's layer j is the network's layer t->own[j]). */
static void report_failure(const trainer *t, int step, rite_status status)
{
    char layers[64] = "";
    size_t len = 0;
    int j;
    if (t->failed_rank != t->rank) {
        fprintf(stderr, "mpi_train: rank %d: error: step %d failed on rank %d: %s\n", t->rank, step, t->failed_rank,
                rite_status_string(status));
        return;
    }
    for (j = 0; j < t->nown; j++) len += (size_t)snprintf(layers + len, sizeof layers - len, " %d", t->own[j]);
    fprintf(stderr, "mpi_train: rank %d: error: step %d: %s (its model: %s; the model's layers 0, 1, ... are the "
            "network's layers%s)\n", t->rank, step, rite_status_string(status), rite_model_last_error(t->opt), layers);
}

/* The training run (collective): the loss before, --steps steps (rank 0
   prints every --print), the loss after. Returns 0, or EXIT_STEP after
   every process said which step failed. */
static int train(trainer *t)
{
    const train_config *c = &t->cfg;
    double loss = 0, before, after, t0, seconds;
    rite_status status = RITE_OK;
    int step;
    before = trainer_eval(t);
    MPI_Barrier(t->comm);
    t0 = MPI_Wtime();
    for (step = 0; step < c->steps && status == RITE_OK; step++) {
        status = trainer_step(t, step, &loss);
        if (t->rank == 0 && c->print_every > 0 && (step % c->print_every == 0 || step == c->steps - 1))
            printf("step %5d  batch loss %.6e  global gradient norm %.3e\n", step, loss, sqrt(t->last_sumsq));
    }
    seconds = MPI_Wtime() - t0;
    if (status != RITE_OK) {
        report_failure(t, step - 1, status);
        return EXIT_STEP;
    }
    after = trainer_eval(t);
    if (t->rank == 0) {
        printf("loss over the data set: %.6e before, %.6e after\n", before, after);
        printf("time: %.3f s, %.3f ms per step\n", seconds, c->steps ? 1e3 * seconds / c->steps : 0.0);
    }
    return 0;
}

/* --check (collective): rank 0 trains again alone (the same trainer on
   MPI_COMM_SELF, whose model holds every layer) and compares the factors
   with t's. Returns the exit status, the same on every process. */
static int check_single(trainer *t)
{
    int verdict = 0, step;
    if (t->rank == 0) {
        trainer one;
        char msg[512];
        double diff = 0, loss;
        rite_status st = RITE_OK;
        if (trainer_init(&one, &t->cfg, MPI_COMM_SELF, msg, sizeof msg) != 0) {
            fprintf(stderr, "mpi_train: rank 0: error: check: %s\n", msg);
            verdict = EXIT_STEP;
        } else {
            for (step = 0; step < t->cfg.steps && st == RITE_OK; step++) st = trainer_step(&one, step, &loss);
            diff = trainer_max_diff(t, &one);
            if (st != RITE_OK || !(diff <= config_tol(&t->cfg))) verdict = EXIT_STEP;
            printf("check: largest |difference| of the factors from a single-process run: %.3e "
                   "(tolerance %.0e): %s\n", diff, config_tol(&t->cfg), verdict ? "FAILED" : "ok");
            trainer_free(&one);
        }
    }
    MPI_Bcast(&verdict, 1, MPI_INT, 0, t->comm);
    return verdict;
}

static int finish(int code)
{
    MPI_Finalize();
    return code;
}

int main(int argc, char **argv)
{
    train_config cfg;
    trainer t;
    char err[256] = "", msg[512] = "";
    int rank, nprocs, parsed, code;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nprocs);

    /* Parse, then compare the configurations of all processes: every process
       takes part in this one collective whatever its command line said, so
       none is left waiting, and afterwards every decision below is taken
       from the same configuration, identically on every process. */
    parsed = parse_args(argc, argv, &cfg, err, sizeof err) == 0;
    if (!parsed) fprintf(stderr, "mpi_train: rank %d: error: %s\n", rank, err);
    code = config_agree(&cfg, parsed, MPI_COMM_WORLD, msg, sizeof msg);
    if (code != 0) {
        fprintf(stderr, "mpi_train: rank %d: error: %s\n", rank, msg);
        if (rank == 0 && code == EXIT_USAGE) usage(stderr);
        return finish(code);
    }
    if (cfg.help) {
        if (rank == 0) usage(stdout);
        return finish(0);
    }
    /* no collective call: each process finds the same answer on its own */
    if (nprocs > cfg.layers) {
        fprintf(stderr, "mpi_train: rank %d: error: %d processes but only %d layers: every process "
                "must own the optimizer of at least one layer (run at most %d processes, or give more "
                "--layers)\n", rank, nprocs, cfg.layers, cfg.layers);
        return finish(EXIT_TOO_MANY);
    }

    code = trainer_init(&t, &cfg, MPI_COMM_WORLD, msg, sizeof msg);
    if (code != 0) {
        fprintf(stderr, "mpi_train: rank %d: error: %s\n", rank, msg);
        return finish(code);
    }
    if (rank == 0)
        printf("mpi_train: %d process%s, %d layers, %s, %s, rank %d, lr %g, batch %d (%d to %d per process), %d steps\n",
               nprocs, nprocs == 1 ? "" : "es", cfg.layers,
               cfg.optimizer == RITE_LORA_RITE ? "LoRA-RITE" : "AdamW",
               cfg.precision == RITE_FLOAT64 ? "float64" : "float32", cfg.rank, cfg.lr, cfg.batch,
               cfg.batch / nprocs, (cfg.batch + nprocs - 1) / nprocs, cfg.steps);
    report_memory(&t);

    code = train(&t);
    if (code == 0 && cfg.check) code = check_single(&t);
    trainer_free(&t);
    return finish(code);
}

#endif /* MPI_TRAIN_NO_MAIN */
