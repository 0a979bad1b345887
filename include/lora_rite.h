/* lora_rite.h - the LoRA-RITE optimizer for C trainers, in one header.

   LoRA trains a low-rank update Z = L R^T of a frozen weight (L is m x r,
   R is n x r). LoRA-RITE (Yen et al., "LoRA Done RITE", ICLR 2025) gives the
   same update of Z for every factorization (L S, R S^-T) of the same product:
   it takes a thin QR of each factor, preconditions the "unmagnified"
   gradients in the orthonormal basis with an r x r matrix second moment,
   carries both moments across basis changes, and maps the update back.
   The same layer API also runs a plain AdamW, so a trainer switches
   optimizer with one setting.

   USE
   ---
   In exactly one C or C++ file:

       #define LORA_RITE_IMPLEMENTATION
       #include "lora_rite.h"

   Everywhere else just #include "lora_rite.h". Link against a CBLAS and
   LAPACKE (OpenBLAS: -llapacke -lopenblas -pthread, or CMake's
   lora_rite::lora_rite).

   EXAMPLE (a model: every LoRA layer of a network, single precision)

       rite_lora mods[2];
       rite_model *model;
       char detail[256];
       rite_model_desc md = {0};
       mods[0] = rite_lora_peft(2048, 2048, 16);   // in, out, r: lora_A r x in,
       mods[1] = rite_lora_peft(2048, 16384, 16);  // lora_B out x r (PEFT's storage)
       md.layers = mods; md.n_layers = 2; md.threads = 2;
       if (rite_model_init(&model, &md, detail, sizeof detail) != RITE_OK) ...
       for (step = 0; step < steps; step++) {
           compute_gradients(A, B, gA, gB);           // float *A[2], *B[2], ...
           if (rite_model_step_f32(model, A, B, gA, gB) != RITE_OK)
               fprintf(stderr, "%s\n", rite_model_last_error(model));
       }
       rite_model_free(model);

   A model steps every layer in one call: clipping is global (SPEC step 5),
   the step is all or nothing (a NaN in any buffer changes no layer, and the
   error names the layer and the buffer), the layers share one workspace per
   thread, and rite_model_diagnostics, rite_model_checkpoint_* and
   rite_schedule_lr cover what a training loop logs, saves and schedules.
   It is built on the layer API below, and steps to the bit as it does.

   EXAMPLE (one layer, single precision)

       rite_layer *layer;
       rite_desc desc = {0};
       desc.m = 512; desc.n = 256; desc.r = 8;        // L: 512x8, R: 256x8
       if (rite_init(&layer, &desc) != RITE_OK) ...   // SPEC.md defaults
       for (step = 0; step < steps; step++) {
           compute_gradients(L, R, gL, gR);           // yours
           rite_status s = rite_step_f32(layer, L, R, gL, gR);
           if (s != RITE_OK) fprintf(stderr, "%s\n", rite_status_string(s));
       }
       rite_free(layer);

   Every function that takes buffers comes as _f32 (float) and _f64
   (double), for layers created with precision RITE_FLOAT32 / RITE_FLOAT64.
   In C11 and C++, rite_step(layer, L, R, gL, gR) and rite_prepare(...)
   pick the right one from the buffer type.

   SEVERAL LAYERS, GLOBAL CLIPPING (SPEC step 5)
   The unmagnified gradients of every layer are clipped together by their
   global norm. Step in two phases: prepare every layer (each returns its
   own sum of squares), add the sums (across processes too, e.g. with
   MPI_Allreduce), then apply every layer with the total:

       double total = 0, sq;
       rite_status st = RITE_OK;
       for (i = 0; i < nl && st == RITE_OK; i++) {
           st = rite_prepare_f32(lay[i], L[i], R[i], gL[i], gR[i], &sq);
           total += sq;
       }
       for (i = 0; i < nl && st == RITE_OK; i++) st = rite_apply(lay[i], total);

   rite_step_f32 is rite_prepare_f32 followed by rite_apply with the layer's
   own sum: a layer stepped alone is clipped by its own norm. Check every
   status: a layer whose prepare failed must not be applied, and the others
   should not be either (step them all again once the input is fixed).
   Between prepare and apply neither the factors nor the gradients may be
   changed (both optimizers read them again in apply); rite_set_lr may be
   called (an lr schedule), and so may rite_set_config unless it changes
   skip. A pending prepare is dropped when the next successful prepare
   replaces it, or when rite_set_config changes skip, rite_factors_changed,
   rite_reset or a checkpoint load cancels it; rite_prepares_dropped()
   counts those, so a loop that forgets rite_apply shows up. A prepare that
   fails, for whatever reason, keeps a pending one. Between the two phases a
   LoRA-RITE layer keeps only r x r numbers per factor.

   STORAGE
   Each factor (and its gradient) is stored row-major in one of two layouts:
     RITE_RANK_LAST   k x r, element (i, j) at  X[i * ld + j], ld >= r
     RITE_RANK_FIRST  r x k, element (i, j) at  X[j * ld + i], ld >= k
   (k = m for L, n for R). PEFT's lora_A (r x in) is L in RITE_RANK_FIRST and
   lora_B (out x r) is R in RITE_RANK_LAST. Results do not depend on layout.
   A leading dimension of 0 means "packed" (r or k) for a factor, and "the
   same as its factor's" for a gradient. L and R must not share storage
   (side by side in one array, with a common leading dimension, they do
   not). A gradient may share storage with a factor for LoRA-RITE, which
   reads every gradient before it writes a factor; AdamW reads its
   gradients while it writes the factors and refuses that (both with
   RITE_ERR_ALIASING, before anything is read). Passing double buffers to a
   _f32 function is only a warning in C: build with
   -Werror=incompatible-pointer-types, or use C11's rite_step.

   CONFIGURATION
   rite_config holds the hyper-parameters; rite_config_default(optimizer)
   returns the defaults of SPEC.md (the algorithm, step by step, in the
   repository). A desc whose config pointer is NULL uses them. A config must
   start from rite_config_default of the layer's optimizer (or from
   rite_get_config): a zeroed one, or one made for the other optimizer, is
   refused (RITE_ERR_CONFIG). lr, eps and weight_decay must be finite in the
   layer's precision. Zero in any other desc field means its default
   (float32, rank-last, packed, LoRA-RITE, malloc/free).

     field         LoRA-RITE   AdamW   meaning
     lr            1e-3        1e-3    learning rate (>= 0)
     beta1         0.9         0.9     first-moment decay, in [0, 1)
     beta2         0.999       0.999   second-moment decay, in [0, 1)
     eps           1e-6        1e-8    added to the root of the second moment
     eps_root      0           -       added under the root (RITE)
     clip          1.0         -       global unmagnified-gradient clipping, 0 = off
     skip          1.0         -       skip a factor whose unmagnified rms > skip, 0 = off
     cap           0           -       cap the update rms, 0 = off
     weight_decay  0           0       decoupled weight decay
     escape        0           -       escaped-mass correction (SPEC step 8)
     relative_eps  0           -       eps_root scaled by the largest eigenvalue
     balance       0           -       rebalance the factor norms after a step

   A "-" field does not exist for AdamW and must stay 0 in an AdamW config
   (RITE_ERR_CONFIG otherwise): AdamW does no clipping, so a trainer that
   switches to it clips its gradients itself if it wants that.

   STATE AND MEMORY
   A LoRA-RITE layer keeps one k x r first moment per factor and a few r x r
   matrices: the second moment, the escaped mass, and in place of the
   previous step's k x r basis (SPEC step 4) the r x r product the next step
   needs of it, formed while the old and new factors are both at hand. That
   is half of AdamW's two k x r moments per factor, plus O(r^2). It is exact
   as long as the factor buffers keep what the last step wrote (or what a
   checkpoint restores); a trainer that changes them between steps calls
   rite_factors_changed(), or creates the layer with desc.keep_basis = 1 to
   keep the bases themselves. Where a factor is rank-deficient its QR basis
   is not unique (LAPACK completes it arbitrarily); the library uses the
   basis U = X T^+ of the factor's range, which gives the result of any
   completion whenever the moments carry no mass outside that range, as
   from LoRA's standard start (B = 0). Between prepare and apply a layer
   keeps r x r matrices only. Its workspace (the new first moment, k x r per factor, a
   copy of each factor for a double layer, small tiles and r x r matrices)
   is needed only inside a call: a standalone layer owns one, and a model's
   layers share one per thread, sized for the largest layer, so that a
   model takes its state plus little more. rite_memory_query() and
   rite_model_memory_query() report state and scratch bytes before
   allocating; rite_checkpoint_save()/load() store and restore the state in
   a versioned, checksummed format (rite_model_checkpoint_* for a model).

   HOW A STEP IS COMPUTED
   SPEC step 1 needs only the triangular factor T of X = U T, never U. A
   float layer reads each factor and gradient once in prepare, forming
   X^T X and G^T G in double; T is the Cholesky factor of X^T X while its
   condition estimate (LAPACK dtrcon) is below 4096, where it is at least as
   accurate as float Householder QR, and Householder QR otherwise (exactly
   singular factors included). The unmagnified gradient enters only through
   r x r products, so apply reads M, G and X once more for its k x r x r
   products (the new moment with its norm and Mn^T X, then the update),
   written straight into the caller's buffer when a bound shows that no
   element can overflow, else into scratch that is checked before anything
   is written. These products run in the library's own kernels: portable C,
   and where the compiler can, the same code for AVX2 with FMA, chosen at
   run time by the CPU (define LORA_RITE_NO_SIMD for the portable ones
   only). Their results differ in rounding (fused multiply-adds), so float
   results depend on the machine in the last bits. A double layer follows
   the SPEC's own order: Householder QR, the unmagnified gradient formed,
   BLAS products; it agrees with the reference implementation to rounding.

   ERRORS
   The functions that can fail return a rite_status; rite_status_string()
   describes it, and rite_last_error(layer) gives the detail of a layer's
   last error (which argument, buffer or field, and its value);
   rite_desc_check_detail() does the same for a desc that rite_init refused.
   On any error nothing is changed: factors, optimizer state and step count
   are exactly as before, so the caller may fix the input and retry (for
   example skip a batch whose gradients hold NaN). Nothing prints, aborts or
   allocates inside a step; all memory is taken at rite_init (and
   rite_model_init). The BLAS the step calls may allocate inside its own
   routines: OpenBLAS 0.3.21 does so in its threaded gemm on every call with
   more than 262144 multiply-adds, k r^2 > 262144 (from 1025 x 16; some of
   its kernel sets start later), which double layers and keep_basis reach
   (a float layer's k x r products are the library's own), and in the
   small-matrix gemm kernels it
   uses on AVX-512 CPUs, even on one thread. With OPENBLAS_NUM_THREADS=1
   and a CPU without AVX-512, a step allocates nothing at all.

   THREADS
   Layers are independent and the library has no global mutable state; all
   scratch space is per layer. Distinct layers may be created, stepped,
   reconfigured, checkpointed and freed concurrently from different threads,
   with results bit-identical to stepping them in one thread (for a given
   BLAS thread count). A rite_config may be shared read-only; rite_init and
   rite_set_config copy it. One layer must not be used by two threads at
   once, except that functions taking a const rite_layer * may run together
   while no thread modifies it. A layer may move between threads (prepared
   in one, applied in another) with ordinary synchronisation in between.
   Allocator hooks shared by layers of different threads must be
   thread-safe, and so must the CBLAS/LAPACKE (OpenBLAS's pthreads build
   is). When stepping layers from several threads, OPENBLAS_NUM_THREADS=1
   avoids contention between the two kinds of threads.
   A model steps its layers on desc.threads workers: POSIX threads it
   starts at rite_model_init (the caller's thread is worker 0), or the
   caller's own parallel_for (OpenMP, a pool). Each worker has its own
   workspace; every layer's numbers are the same on any worker, and sums
   over layers are taken in layer order, so results are bit-identical for
   every thread count. One model is used by one thread at a time.

   OPTIONS (define before including the implementation)
     LORA_RITE_API      storage class of the public functions (default: extern)
     LORA_RITE_NO_SIMD  compile only the portable kernels (no AVX2 variants)
     LORA_RITE_NO_THREADS  no built-in threads (a model with threads > 1
                        then needs a parallel_for); no -pthread needed

   LICENSE: MIT, see the end of this file.
*/
#ifndef LORA_RITE_H
#define LORA_RITE_H

#include <stddef.h>

#define LORA_RITE_VERSION_MAJOR 0
#define LORA_RITE_VERSION_MINOR 2
#define LORA_RITE_VERSION_PATCH 0

#ifndef LORA_RITE_API
#define LORA_RITE_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes, from one list: the enum and rite_status_string() are made
   from it (as sokol makes its log items). RITE_OK is 0; every error has its
   own code; the README's error table is checked against this list. */
#define RITE_STATUS_LIST(X)                                                                                           \
    X(RITE_OK, "success")                                                                                             \
    X(RITE_ERR_NULL_ARGUMENT, "a required pointer argument is NULL")                                                  \
    X(RITE_ERR_SIZE, "m, n and r must be positive (and not too large)")                                               \
    X(RITE_ERR_RANK, "the rank r must not exceed min(m, n)")                                                          \
    X(RITE_ERR_LAYOUT, "a layout must be RITE_RANK_LAST or RITE_RANK_FIRST")                                          \
    X(RITE_ERR_LEADING_DIM, "a leading dimension is negative or smaller than the packed one")                         \
    X(RITE_ERR_PRECISION, "unknown precision, or buffers of the other precision than the layer's")                    \
    X(RITE_ERR_OPTIMIZER, "unknown optimizer kind")                                                                   \
    X(RITE_ERR_LR, "lr must be finite and >= 0")                                                                      \
    X(RITE_ERR_BETA1, "beta1 must be in [0, 1)")                                                                      \
    X(RITE_ERR_BETA2, "beta2 must be in [0, 1)")                                                                      \
    X(RITE_ERR_EPS, "eps must be finite and >= 0")                                                                    \
    X(RITE_ERR_EPS_ROOT, "eps_root must be finite and >= 0")                                                          \
    X(RITE_ERR_CLIP, "clip must be >= 0 (0 disables clipping)")                                                       \
    X(RITE_ERR_SKIP, "skip must be >= 0 (0 disables skipping)")                                                       \
    X(RITE_ERR_CAP, "cap must be >= 0 (0 disables capping)")                                                          \
    X(RITE_ERR_WEIGHT_DECAY, "weight_decay must be finite and >= 0")                                                  \
    X(RITE_ERR_NONFINITE_GRADIENT, "a gradient holds NaN or Inf; nothing was changed")                                \
    X(RITE_ERR_NONFINITE_FACTOR, "a factor holds NaN or Inf; nothing was changed")                                    \
    X(RITE_ERR_NONFINITE_UPDATE, "the step would produce NaN or Inf (overflow); nothing was changed")                 \
    X(RITE_ERR_NOT_PREPARED, "rite_apply needs a pending rite_prepare_* (none, already applied, or cancelled; see "   \
                             "rite_last_error)")                                                                      \
    X(RITE_ERR_SUMSQ, "the total sum of squares must be finite and >= the layer's own")                               \
    X(RITE_ERR_OUT_OF_MEMORY, "out of memory")                                                                        \
    X(RITE_ERR_LAPACK, "a LAPACK routine failed")                                                                     \
    X(RITE_ERR_BUFFER_SIZE, "the destination buffer is too small")                                                    \
    X(RITE_ERR_IO, "a checkpoint file could not be opened, read or written")                                          \
    X(RITE_ERR_CHECKPOINT_FORMAT, "not a lora_rite checkpoint, or truncated")                                         \
    X(RITE_ERR_CHECKPOINT_VERSION, "unsupported checkpoint format version")                                           \
    X(RITE_ERR_CHECKPOINT_CORRUPT, "checkpoint checksum mismatch, or impossible values in it (NaN or Inf, step "      \
                                   "count, negative escaped mass)")                                                   \
    X(RITE_ERR_CHECKPOINT_MISMATCH, "checkpoint is for another optimizer, precision, size or keep_basis")             \
    X(RITE_ERR_CONFIG, "config not made by rite_config_default(), made for the other optimizer, or a LoRA-RITE "      \
                       "option on AdamW")                                                                             \
    X(RITE_ERR_ALIASING, "a factor buffer overlaps the other factor or a gradient")                                  \
    X(RITE_ERR_THREADS, "threads must be 0 to 256 (0 and 1: the caller's thread), more than 1 needs POSIX threads "   \
                        "or a parallel_for, and the threads must start")                                             \
    X(RITE_ERR_MODEL, "a model's description is wrong: no layers (see rite_model_init's detail)")

typedef enum rite_status {
#define RITE__STATUS_ENUM(code, text) code,
    RITE_STATUS_LIST(RITE__STATUS_ENUM)
#undef RITE__STATUS_ENUM
    RITE_STATUS_COUNT
} rite_status;


typedef enum rite_optimizer {
    RITE_LORA_RITE = 0,          /* LoRA-RITE, SPEC.md steps 1-16 */
    RITE_ADAMW = 1               /* elementwise AdamW on each factor (the baseline) */
} rite_optimizer;

typedef enum rite_precision {
    RITE_FLOAT32 = 0,            /* buffers are float:  use the *_f32 functions */
    RITE_FLOAT64 = 1             /* buffers are double: use the *_f64 functions */
} rite_precision;

typedef enum rite_layout {
    RITE_RANK_LAST = 0,          /* k x r row-major: X[i * ld + j] */
    RITE_RANK_FIRST = 1          /* r x k row-major: X[j * ld + i] */
} rite_layout;

/* Hyper-parameters. Start from rite_config_default(optimizer) (or
   rite_get_config) and change the fields you want: a config made otherwise,
   such as rite_config c = {0}, is refused with RITE_ERR_CONFIG. */
typedef struct rite_config {
    double lr;
    double beta1;
    double beta2;
    double eps;
    double eps_root;
    double clip;
    double skip;
    double cap;
    double weight_decay;
    int escape;
    int relative_eps;
    int balance;
    unsigned int tag;            /* set by rite_config_default: the optimizer the config
                                    is for; leave it as it is */
} rite_config;

/* Optional allocator hooks. Both NULL means malloc/free. */
typedef struct rite_allocator {
    void *(*alloc)(size_t size, void *user_data);
    void (*release)(void *ptr, void *user_data);
    void *user_data;
} rite_allocator;

/* Everything rite_init needs. Zero-initialise, then set m, n, r. */
typedef struct rite_desc {
    int m, n, r;                 /* L is m x r, R is n x r, 1 <= r <= min(m, n) */
    rite_optimizer optimizer;    /* RITE_LORA_RITE (default) or RITE_ADAMW */
    rite_precision precision;    /* RITE_FLOAT32 (default) or RITE_FLOAT64 */
    rite_layout layout_L;        /* storage of L and of its gradient */
    rite_layout layout_R;        /* storage of R and of its gradient */
    int ld_L, ld_R;              /* leading dimension of L, R; 0 = packed */
    int ld_gL, ld_gR;            /* leading dimension of the gradients; 0 = as the factor's */
    const rite_config *config;   /* NULL = rite_config_default(optimizer) */
    rite_allocator allocator;    /* zero = malloc/free */
    int keep_basis;              /* LoRA-RITE: keep each factor's k x r basis between
                                    steps, so that factors changed outside the
                                    library are transported exactly (see
                                    rite_factors_changed); costs (m + n) r numbers */
} rite_desc;

/* Bytes a layer takes, as rite_memory_query reports them. */
typedef struct rite_memory {
    size_t state_bytes;          /* persistent optimizer state (moments, bases, counters) */
    size_t scratch_bytes;        /* per-layer workspace used inside a step */
    size_t total_bytes;          /* everything rite_init allocates, layer struct included */
} rite_memory;

typedef struct rite_layer rite_layer;

/* The SPEC.md defaults for an optimizer. */
LORA_RITE_API rite_config rite_config_default(rite_optimizer optimizer);

/* Check a desc without allocating. Returns the first problem found. */
LORA_RITE_API rite_status rite_desc_check(const rite_desc *desc);

/* The same, and the detail of the problem (which field, its value and what
   it must be) into detail (size bytes, always terminated; may be NULL). */
LORA_RITE_API rite_status rite_desc_check_detail(const rite_desc *desc, char *detail, size_t size);

/* Memory a layer with this desc would take (filled only on RITE_OK). */
LORA_RITE_API rite_status rite_memory_query(const rite_desc *desc, rite_memory *out);

/* Create a layer: checks desc, allocates state and scratch once, zeroes the
   state. On error *layer is set to NULL. */
LORA_RITE_API rite_status rite_init(rite_layer **layer, const rite_desc *desc);

/* Release a layer (NULL is allowed). */
LORA_RITE_API void rite_free(rite_layer *layer);

/* Replace the hyper-parameters. The optimizer kind, sizes, layouts and
   precision are fixed at init. A pending prepare is kept unless skip
   changes (the one hyper-parameter prepare uses). */
LORA_RITE_API rite_status rite_set_config(rite_layer *layer, const rite_config *config);
/* Change lr alone (for example an lr schedule); keeps a pending prepare. */
LORA_RITE_API rite_status rite_set_lr(rite_layer *layer, double lr);
LORA_RITE_API rite_config rite_get_config(const rite_layer *layer);
LORA_RITE_API rite_desc rite_get_desc(const rite_layer *layer);

/* Completed steps of this layer (skipped steps count). */
LORA_RITE_API long long rite_step_count(const rite_layer *layer);

/* 1 while a prepare waits for its rite_apply, else 0. */
LORA_RITE_API int rite_is_prepared(const rite_layer *layer);

/* How many successful prepares were never applied: replaced by the next
   prepare, or cancelled (by rite_set_config changing skip, a checkpoint
   load, rite_factors_changed or rite_reset). A trainer whose two-phase loop
   skips rite_apply by mistake sees this count grow. */
LORA_RITE_API long long rite_prepares_dropped(const rite_layer *layer);

/* The detail of the last error this layer returned (which argument, buffer
   or field, and its value), or "" when its last call succeeded. The text
   belongs to the layer and stays valid until the layer's next call; it is
   as thread-safe as the layer (one thread uses a layer at a time). */
LORA_RITE_API const char *rite_last_error(const rite_layer *layer);

/* Zero the optimizer state and the step count. */
LORA_RITE_API void rite_reset(rite_layer *layer);

/* Say that the factors were changed outside rite_step/rite_apply since the
   last step (for example merged, re-initialised or rescaled by the trainer).
   By default a layer does not keep the previous k x r bases of SPEC step 4;
   it keeps the r x r products it needs of them, formed from the factors it
   wrote, which is exact as long as the factor buffers keep what the last
   step wrote (or what a checkpoint restores with its state). After this
   call the next step takes the moments to be already in the new factors'
   bases (the basis transport P is the identity for that one step); moments,
   second moment and step count are kept. Without the call, the next step
   would transport the moments with bases that no longer match. A layer
   created with desc.keep_basis = 1 keeps the bases themselves and needs no
   call: it transports exactly as SPEC step 4 says, whatever happened to the
   factors. For a fresh start use rite_reset. Cancels a pending prepare. */
LORA_RITE_API void rite_factors_changed(rite_layer *layer);

/* One optimizer step: reads the gradients gL, gR and updates L and R in
   place. Equal to rite_prepare_* then rite_apply with the layer's own sum. */
LORA_RITE_API rite_status rite_step_f32(rite_layer *layer, float *L, float *R,
                                        const float *gL, const float *gR);
LORA_RITE_API rite_status rite_step_f64(rite_layer *layer, double *L, double *R,
                                        const double *gL, const double *gR);

/* Phase one of a step: checks everything, computes this layer's unmagnified
   gradients, and stores their sum of squares (after skipping) in *sumsq
   (0 for AdamW). Changes neither the factors nor the optimizer state. */
LORA_RITE_API rite_status rite_prepare_f32(rite_layer *layer, float *L, float *R,
                                           const float *gL, const float *gR,
                                           double *sumsq);
LORA_RITE_API rite_status rite_prepare_f64(rite_layer *layer, double *L, double *R,
                                           const double *gL, const double *gR,
                                           double *sumsq);

/* Phase two: clips with the global sum of squares total_sumsq (the sum of
   every layer's *sumsq; it must be >= this layer's own), updates the state
   and writes the new factors into the buffers given to prepare. */
LORA_RITE_API rite_status rite_apply(rite_layer *layer, double total_sumsq);

/* The persistent optimizer state as flat bytes (for comparisons and
   checkpoints): rite_state_size() bytes, copied by rite_state_copy(). */
LORA_RITE_API size_t rite_state_size(const rite_layer *layer);
LORA_RITE_API rite_status rite_state_copy(const rite_layer *layer, void *dst, size_t dst_size);

/* Checkpoints: a layer's optimizer state (step count included) in a
   versioned binary format with a header and a checksum (see README).
   rite_checkpoint_size() is the exact byte count rite_checkpoint_save()
   writes, and rite_checkpoint_load() wants exactly that many. Loading checks,
   in this order: magic and byte order (RITE_ERR_CHECKPOINT_FORMAT), version
   (_VERSION), header size (_FORMAT), that optimizer, precision, m, n, r and
   keep_basis match the layer (_MISMATCH; for AdamW the layouts too), the
   length (_FORMAT), then the checksum and that every number is finite, the
   step count below 2^62 and the escaped mass not negative (_CORRUPT);
   rite_last_error names the field or check. escape, relative_eps and
   balance are hyper-parameters like lr: they are recorded, not compared,
   and stay the layer's own. On any error the layer is left
   exactly as it was; a successful load cancels a pending prepare. The
   hyper-parameters (lr, betas, ...) stay the layer's own. The factors are
   the caller's: save them alongside. save_file writes PATH in place (save
   to another name and rename it to replace a checkpoint safely); load_file
   reads through the layer's allocator and may return RITE_ERR_OUT_OF_MEMORY. */
LORA_RITE_API size_t rite_checkpoint_size(const rite_layer *layer);
LORA_RITE_API rite_status rite_checkpoint_save(const rite_layer *layer, void *dst, size_t dst_size);
LORA_RITE_API rite_status rite_checkpoint_load(rite_layer *layer, const void *src, size_t src_size);
LORA_RITE_API rite_status rite_checkpoint_save_file(const rite_layer *layer, const char *path);
LORA_RITE_API rite_status rite_checkpoint_load_file(rite_layer *layer, const char *path);

/* A short English description of a status code. Never NULL. */
LORA_RITE_API const char *rite_status_string(rite_status status);

/* What a step did, filled by every successful step (rite_layer_diagnostics
   for a layer, rite_model_diagnostics for a model's step over all layers). */
typedef struct rite_diagnostics {
    long long step;          /* steps completed, this one included */
    double grad_norm;        /* LoRA-RITE: sqrt of the sum of squares that clipping used (SPEC 5:
                                the unmagnified gradients after skipping, before clipping);
                                AdamW: the norm of the gradients */
    double clip_factor;      /* SPEC 5's factor applied to the unmagnified gradients (1: none) */
    int skipped;             /* factors skipped by SPEC 3 */
    double update_rms;       /* LoRA-RITE: lr rms(U) (SPEC 11's U, all entries of both factors):
                                the first-order change of L R^T, in the rms of its factors;
                                AdamW: the rms of the change of every factor element */
    double rho_max;          /* the largest escaped mass after the step (SPEC 8) */
    double cond_max;         /* the largest condition estimate of a factor's T (SPEC 1; inf
                                for a rank-deficient factor such as LoRA's B = 0 at start) */
} rite_diagnostics;

LORA_RITE_API rite_status rite_layer_diagnostics(const rite_layer *layer, rite_diagnostics *out);

/* ---- the model: every layer of a network in one call -----------------------------

   One LoRA module as PEFT describes it: the weight update is lora_B lora_A
   (out x in) with lora_A r x in and lora_B out x r. In the layer API lora_A
   is L (m = in_features) and lora_B is R (n = out_features). Fill it with
   rite_lora_peft() (PEFT's storage, lr_scale 1) and change what differs. */
typedef struct rite_lora {
    int in_features;
    int out_features;
    int r;
    rite_layout layout_A;        /* storage of lora_A and its gradient: RITE_RANK_FIRST is
                                    PEFT's r x in (rite_lora_peft's), RITE_RANK_LAST in x r */
    rite_layout layout_B;        /* storage of lora_B and its gradient: RITE_RANK_LAST is
                                    PEFT's out x r (rite_lora_peft's), RITE_RANK_FIRST r x out */
    double lr_scale;             /* this layer's lr is the model's times lr_scale (finite, > 0) */
} rite_lora;

LORA_RITE_API rite_lora rite_lora_peft(int in_features, int out_features, int r);

/* A caller's parallel loop: call fn(task, i, worker) once for every i in
   [0, count), with worker in [0, workers) and no two calls running at
   once with the same worker, and return when all are done. For OpenMP:
       #pragma omp parallel for schedule(dynamic)
       for (i = 0; i < count; i++) fn(task, i, omp_get_thread_num());  */
typedef void (*rite_task_fn)(void *task, int index, int worker);
typedef void (*rite_parallel_for_fn)(void *user, int count, int workers, rite_task_fn fn, void *task);

typedef struct rite_model_desc {
    const rite_lora *layers;     /* n_layers modules (copied) */
    int n_layers;
    rite_optimizer optimizer;    /* one optimizer, precision and config for every layer */
    rite_precision precision;
    const rite_config *config;   /* NULL = rite_config_default(optimizer); config->lr is the
                                    model's lr */
    int keep_basis;              /* as rite_desc.keep_basis */
    int threads;                 /* workers, each with its own workspace; 0 = 1 */
    rite_parallel_for_fn parallel_for; /* NULL: the model starts threads - 1 POSIX threads */
    void *parallel_user;         /* passed to parallel_for */
    rite_allocator allocator;    /* zero = malloc/free */
} rite_model_desc;

typedef struct rite_model rite_model;

/* Memory a model would take: state (every layer's), scratch (the layers'
   r x r data and one workspace per worker) and total (everything
   rite_model_init allocates). Filled only on RITE_OK. */
LORA_RITE_API rite_status rite_model_memory_query(const rite_model_desc *desc, rite_memory *out);
/* Create a model (checks the desc; on error *model = NULL and detail, if
   not NULL, gets the reason: which layer, which field). */
LORA_RITE_API rite_status rite_model_init(rite_model **model, const rite_model_desc *desc, char *detail,
                                          size_t detail_size);
LORA_RITE_API void rite_model_free(rite_model *model);

/* One step of every layer: A[i], B[i] are layer i's lora_A and lora_B
   (updated in place), gA[i], gB[i] their gradients, in the storage its
   rite_lora gives (packed); the gradients are only read (their arrays are
   not const so that a float *gA[] passes without a cast). Clipping is
   global over all layers (SPEC 5).
   All or nothing: if any layer's input is bad (or any layer's step would
   overflow), no layer changes, and rite_model_last_error names the layer
   and the buffer. The result is, to the bit, what rite_prepare_* on every
   layer and rite_apply with the sum of their sums of squares give, for
   any number of threads. */
LORA_RITE_API rite_status rite_model_step_f32(rite_model *model, float *const *A, float *const *B,
                                              float *const *gA, float *const *gB);
LORA_RITE_API rite_status rite_model_step_f64(rite_model *model, double *const *A, double *const *B,
                                              double *const *gA, double *const *gB);
/* The same step in two phases, for a model split across processes: prepare
   every layer (*sumsq gets this model's sum of squares), add the sums of
   all processes (MPI_Allreduce), apply with the total. A failed prepare or
   apply changes nothing; a failed apply keeps the prepare. */
LORA_RITE_API rite_status rite_model_prepare_f32(rite_model *model, float *const *A, float *const *B,
                                                 float *const *gA, float *const *gB, double *sumsq);
LORA_RITE_API rite_status rite_model_prepare_f64(rite_model *model, double *const *A, double *const *B,
                                                 double *const *gA, double *const *gB, double *sumsq);
LORA_RITE_API rite_status rite_model_apply(rite_model *model, double total_sumsq);

/* The model's lr (every layer gets lr times its lr_scale), and its config. */
LORA_RITE_API rite_status rite_model_set_lr(rite_model *model, double lr);
LORA_RITE_API rite_status rite_model_set_config(rite_model *model, const rite_config *config);
LORA_RITE_API rite_config rite_model_get_config(const rite_model *model);
LORA_RITE_API long long rite_model_step_count(const rite_model *model);
LORA_RITE_API int rite_model_layer_count(const rite_model *model);
/* Layer i, for the layer API's queries (state, checkpoint, diagnostics); NULL when out of range */
LORA_RITE_API const rite_layer *rite_model_layer(const rite_model *model, int i);
LORA_RITE_API const char *rite_model_last_error(const rite_model *model);
/* The last step's diagnostics over all layers (zero before the first step) */
LORA_RITE_API rite_status rite_model_diagnostics(const rite_model *model, rite_diagnostics *out);
LORA_RITE_API void rite_model_reset(rite_model *model);
LORA_RITE_API void rite_model_factors_changed(rite_model *model);

/* One checkpoint for the model: little-endian, versioned, checksummed, with
   every layer's description and state, and the factors when A and B are
   given (NULL: without): A and B are the arrays the step takes (float *A[]
   for a float model, double *A[] for a double one), passed as they are. Loading checks the format, then that the model
   matches (optimizer, precision, keep_basis, layer count, each layer's
   sizes and storage; the message names the first field that differs),
   then the length, checksum and values; on any error nothing changes.
   Factors in a checkpoint are loaded when A and B are given (an error when
   it has none) and skipped otherwise. The hyper-parameters stay the
   model's own. */
LORA_RITE_API size_t rite_model_checkpoint_size(const rite_model *model, int with_factors);
LORA_RITE_API rite_status rite_model_checkpoint_save(const rite_model *model, const void *A, const void *B,
                                                     void *dst, size_t dst_size);
LORA_RITE_API rite_status rite_model_checkpoint_load(rite_model *model, const void *A, const void *B,
                                                     const void *src, size_t src_size);
LORA_RITE_API rite_status rite_model_checkpoint_save_file(const rite_model *model, const void *A, const void *B,
                                                          const char *path);
LORA_RITE_API rite_status rite_model_checkpoint_load_file(rite_model *model, const void *A, const void *B,
                                                          const char *path);

/* A learning-rate schedule of the kind trainers write by hand: linear
   warmup from lr / warmup_steps to lr over warmup_steps steps, then
   constant, or a linear or cosine decay to final_lr at total_steps (and
   final_lr after). rite_schedule_lr gives the lr of step `step` (0 = the
   first); NaN for a schedule that makes no sense (negative counts, lr or
   final_lr not finite and >= 0, total_steps < warmup_steps for a decay). */
typedef enum rite_decay {
    RITE_DECAY_CONSTANT = 0,
    RITE_DECAY_LINEAR = 1,
    RITE_DECAY_COSINE = 2
} rite_decay;

typedef struct rite_schedule {
    double lr;                   /* the peak lr */
    long long warmup_steps;      /* 0: none */
    long long total_steps;       /* where the decay ends */
    double final_lr;
    rite_decay decay;
} rite_schedule;

LORA_RITE_API double rite_schedule_lr(const rite_schedule *schedule, long long step);

#ifdef __cplusplus
} /* extern "C" */

/* C++: rite_step / rite_prepare pick the precision from the buffer type. */
inline rite_status rite_step(rite_layer *layer, float *L, float *R, const float *gL, const float *gR)
{
    return rite_step_f32(layer, L, R, gL, gR);
}
inline rite_status rite_step(rite_layer *layer, double *L, double *R, const double *gL, const double *gR)
{
    return rite_step_f64(layer, L, R, gL, gR);
}
inline rite_status rite_prepare(rite_layer *layer, float *L, float *R, const float *gL, const float *gR,
                                double *sumsq)
{
    return rite_prepare_f32(layer, L, R, gL, gR, sumsq);
}
inline rite_status rite_prepare(rite_layer *layer, double *L, double *R, const double *gL, const double *gR,
                                double *sumsq)
{
    return rite_prepare_f64(layer, L, R, gL, gR, sumsq);
}
inline rite_status rite_model_step(rite_model *model, float *const *A, float *const *B, float *const *gA,
                                   float *const *gB)
{
    return rite_model_step_f32(model, A, B, gA, gB);
}
inline rite_status rite_model_step(rite_model *model, double *const *A, double *const *B, double *const *gA,
                                   double *const *gB)
{
    return rite_model_step_f64(model, A, B, gA, gB);
}
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
/* C11: rite_step / rite_prepare pick the precision from the type of L. */
#define rite_step(layer, L, R, gL, gR) \
    _Generic((L), float *: rite_step_f32, double *: rite_step_f64)(layer, L, R, gL, gR)
#define rite_prepare(layer, L, R, gL, gR, sumsq) \
    _Generic((L), float *: rite_prepare_f32, double *: rite_prepare_f64)(layer, L, R, gL, gR, sumsq)
#define rite_model_step(model, A, B, gA, gB)                                                              \
    _Generic((A), float **: rite_model_step_f32, float *const *: rite_model_step_f32,                     \
             double **: rite_model_step_f64, double *const *: rite_model_step_f64)(model, A, B, gA, gB)
#endif

#endif /* LORA_RITE_H */

/* ======================================================================== */
/*                            IMPLEMENTATION                                */
/* ======================================================================== */
/* Sections, each marked with its tag (search for it):
     @types      the layer struct and what prepare leaves for apply
     @kernels    element, Gram and row kernels (portable, and AVX2 + FMA), AdamW's SSE2
     @dispatch   one call for both precisions (BLAS, LAPACK, small helpers)
     @config     hyper-parameters and descs: defaults, checks, detail messages
     @memory     the layout of a layer's block and of a workspace
     @layer      creating, configuring and querying a layer
     @rite       the LoRA-RITE step, by SPEC step: prepare (1-3), apply's r x r
                 phase (4-9, the bound) and k x r phase (10-16)
     @adamw      the AdamW step
     @step       the public step functions: checks, aliasing, prepare, apply
     @state      state export and the layer checkpoint
     @model      the model: threads, phases, settings, checkpoint, lr schedule */
#if defined(LORA_RITE_IMPLEMENTATION) && !defined(LORA_RITE__IMPLEMENTED)
#define LORA_RITE__IMPLEMENTED

#include <cblas.h>
#include <lapacke.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The k x r matrices the implementation keeps are packed. AdamW's moments
   are stored as their factor is (its layout, packed), in state copies and
   checkpoints too. A float LoRA-RITE layer's first moments (M, Mn) are
   row-major (element (i, j) at x[i * r + j]) for its row kernels; every
   other LoRA-RITE k x r matrix is column-major (at x[j * k + i]), and so is
   every LoRA-RITE k x r matrix in state copies and checkpoints. Every r x r
   matrix of the algebra is double, column-major. "T" below is the layer's
   element type. */

#define RITE__ALIGN 64
#define RITE__TAG(opt) (0x52540000u | ((unsigned int)(opt) + 1u))   /* a config's tag: "RT", optimizer + 1 */
#define RITE__PAD8(r) (((r) + 7) / 8 * 8)
#define RITE__CHOL_COND 4096.0   /* float layers take T from Cholesky while its condition estimate is below */
#define RITE__TILE_DOUBLES 16384   /* doubles per tile of a float layer's double passes (128 KiB) */

/* ---- @types ------------------------------------------------------------------ */

/* What a LoRA-RITE prepare leaves for apply, per factor: r x r data only,
   so that nothing k x r has to survive between the two phases. */
typedef struct rite__prep {
    double *T;             /* SPEC 1: the triangular factor of X = U T */
    double *Tp;            /* its pseudo-inverse T^+ */
    double *GG;            /* gbar^T gbar of this factor's unmagnified gradient (SPEC 7),
                              before clipping; upper triangle */
    double ss;             /* ||gbar||_F^2 after skipping (SPEC 3, 5) */
    double xmax;           /* largest |X|: bounds the update before it is written */
    double xnorm;          /* a bound of ||X||_F */
    double gnorm;          /* a bound of ||G||_F */
    double cond;           /* the condition estimate of T (inf when singular) */
    int skipped;           /* SPEC 3 set gbar to 0 */
    int gg_overflow;       /* double layers: GG overflowed; apply forms it again, clipped first */
} rite__prep;

/* One factor of a layer: L (index 0) or R (index 1). */
typedef struct rite__side {
    int k;                 /* rows: m for L, n for R */
    rite_layout layout;
    int ld, ldg;           /* leading dimensions of the factor and its gradient */
    /* persistent state */
    void *M;               /* first moment, k x r (LoRA-RITE: row-major in float, column-major in
                              double; AdamW: the factor's storage) */
    void *exp_avg_sq;      /* AdamW: second moment (k x r), PyTorch's name */
    double *Vp;            /* LoRA-RITE: second moment, upper triangle packed by columns */
    double *C;             /* LoRA-RITE: X_new^T U, what the next step needs of this
                              factor's basis U to transport the moments (r x r) */
    void *U_prev;          /* LoRA-RITE with keep_basis: the basis U of the last step (k x r) */
    double rho;            /* LoRA-RITE: escaped mass */
    double m2;             /* ||M||_F^2 (not stored: recomputed when M is loaded) */
    /* LoRA-RITE: prepare's results, two sets (the pending one survives a failed
       prepare; a model's layers, which never keep one between calls, alias them) */
    rite__prep pre[2];
    /* LoRA-RITE: the r x r results of apply's first phase (rite__lorarite_plan) */
    double *P;             /* SPEC 4: the transport of this factor's moments */
    double *Q;             /* SPEC 9: the preconditioner */
    double *Vn;            /* SPEC 7: the new second moment */
    double rho_n;          /* SPEC 8: the new escaped mass */
    /* LoRA-RITE workspace (k x r blocks and r x r matrices of apply's second phase;
       a layer's own, or a model's, bound by rite__bind) */
    void *Mn;              /* the new first moment (k x r, laid out as M) */
    void *Xw;              /* k x r work: the QR's copy of X; a double layer's unmagnified
                              gradient; the new factor on the careful path */
    double *Cn;            /* new C (r x r) */
    double *E;             /* Mn^T X (r x r), for SPEC 16 */
    double mn2;            /* ||Mn||_F^2 */
    double capf;           /* SPEC 11: the cap factor of this step */
    /* buffers of the pending step (set by prepare) */
    void *X;
    const void *G;
} rite__side;

struct rite_layer {
    rite_desc desc;        /* defaults and leading dimensions resolved; config NULL */
    rite_config cfg;
    rite_allocator allocator;
    size_t es;             /* element size in bytes: 4 or 8 */
    long long steps;       /* completed steps */
    rite__side s[2];       /* 0: L, 1: R */
    int pend;              /* the prep set of the pending prepare (0 or 1) */
    double scale;          /* SPEC 5: the clipping factor of the planned apply */
    int safe;              /* the planned apply cannot fail (rite__lorarite_bound) */
    int shared;            /* a model's layer: no workspace of its own, one prep set */
    void *home;            /* a model's layer: the workspace the layer API's calls use */
    const char *const *names; /* of L, R, gL, gR in messages */
    double g2, u2;         /* AdamW: sums of squares of the gradients and of the change
                              of the factors, from prepare (for the diagnostics) */
    rite_config checked;   /* AdamW: the config prepare's check pass used */
    double diag_u2, diag_n;/* the update's sum of squares and element count */
    rite_diagnostics diag; /* of the last step */
    /* workspace: r x r matrices (double unless noted), shared by both sides */
    double *V, *Vt, *T1, *T2, *T3, *W, *lam, *lam2;
    void *WT;              /* r x r weights of the products, layer precision */
    float *WF;             /* float layers: two r x rp weights of the row kernels */
    float *ftile;          /* float layers: three tiles of RITE__ROWS_OF(r) rows of rp floats */
    void *work;            /* LAPACK workspace in the layer precision (geqrf) */
    int lwork;
    double *dwork;         /* double LAPACK workspace (gesvd, syevd, trcon) */
    int ldwork;
    lapack_int *iwork;     /* integer workspace (syevd, trcon) */
    int liwork;
    double *tile;          /* float layers: a tile of tile_rows x rp doubles (the Gram
                              matrices, accumulated in double) */
    int tile_rows;
    int stale;             /* the factors were changed outside a step */
    double chol_cond;      /* float layers take T from Cholesky while its condition
                              estimate is below this (RITE__CHOL_COND; 0: always Householder) */
    /* pending step */
    int prepared;
    long long dropped;     /* successful prepares never applied */
    const char *unprepared;/* why there is no pending prepare */
    double own_sumsq;
    char msg[256];         /* detail of the last error (rite_last_error) */
    rite_memory mem;
    void *raw;             /* what the allocator returned */
};

/* ---- @kernels: element kernels, instantiated for float and double ------------ */

/* A k x r factor in caller storage is `outer` contiguous runs of `inner`
   elements, run a at x + a * ld: rank-last has k runs of r (a = i, b = j),
   rank-first r runs of k (a = j, b = i). */
#define RITE__OUTER(lay, k, r) ((lay) == RITE_RANK_LAST ? (k) : (r))
#define RITE__INNER(lay, k, r) ((lay) == RITE_RANK_LAST ? (r) : (k))
#define RITE__TILE 16   /* rows per tile when transposing rank-last storage */

#define RITE__KERNELS(T, S, SQRT)                                                      \
/* 1 when every element of a k x r matrix in storage (lay, ld) is finite */           \
static int rite__finite_##S(const T *x, rite_layout lay, int ld, int k, int r)         \
{                                                                                      \
    int a, b, no = RITE__OUTER(lay, k, r), ni = RITE__INNER(lay, k, r), bad = 0;       \
    for (a = 0; a < no; a++)                                                           \
        for (b = 0; b < ni; b++) bad |= x[(size_t)a * ld + b] * 0 != 0; /* NaN iff not finite */ \
    return !bad;                                                                       \
}                                                                                      \
/* caller storage -> column-major k x r */                                             \
static void rite__load_##S(const T *x, rite_layout lay, int ld, int k, int r, T *out)  \
{                                                                                      \
    int i, j, i0, i1;                                                                  \
    if (lay == RITE_RANK_FIRST) {                                                      \
        for (j = 0; j < r; j++) memcpy(out + (size_t)j * k, x + (size_t)j * ld, (size_t)k * sizeof(T)); \
        return;                                                                        \
    }                                                                                  \
    for (i0 = 0; i0 < k; i0 = i1) {           /* transpose by tiles of rows */         \
        i1 = i0 + RITE__TILE < k ? i0 + RITE__TILE : k;                                \
        for (j = 0; j < r; j++)                                                        \
            for (i = i0; i < i1; i++) out[(size_t)j * k + i] = x[(size_t)i * ld + j];  \
    }                                                                                  \
}                                                                                      \
/* non-finite entries -> 0 */                                                          \
static void rite__zap_##S(T *x, size_t count)                                          \
{                                                                                      \
    size_t i;                                                                          \
    for (i = 0; i < count; i++)                                                        \
        if (x[i] * 0 != 0) x[i] = 0;                                                   \
}                                                                                      \
static void rite__to_double_##S(const T *x, int ldx, int rows, int cols, double *y, int ldy) \
{                                                                                      \
    int i, j;                                                                          \
    for (j = 0; j < cols; j++)                                                         \
        for (i = 0; i < rows; i++) y[(size_t)j * ldy + i] = (double)x[(size_t)j * ldx + i]; \
}                                                                                      \
/* AdamW, SPEC "AdamW baseline", on n contiguous elements. ac holds b1, b2,      \
   1 - b1, 1 - b2, 1 - b1^t, 1 / sqrt(1 - b2^t), lr, eps, wd: sqrt(v / (1 - b2^t)) \
   is taken as sqrt(v) / sqrt(1 - b2^t), which cannot overflow where v can be     \
   stored. With write = 0 nothing is written, the result says what is not         \
   finite (bit 1 a factor, bit 2 a gradient, bit 4 a result), and acc[0] and      \
   acc[1] get the sums of squares of the gradient and of the change of x. */       \
static int rite__adamw_span_##S(T *x, const T *g, T *m, T *v, int n, const T *ac, int write, double *acc) \
{                                                                                      \
    int b, bx = 0, bg = 0, br = 0;                                                     \
    for (b = 0; b < n; b++) {                                                          \
        T gv = g[b], xv = x[b];                                                        \
        T mv = ac[0] * m[b] + ac[2] * gv;                     /* m <- b1 m + (1-b1) g */ \
        T vv = ac[1] * v[b] + ac[3] * gv * gv;                /* v <- b2 v + (1-b2) g^2 */ \
        T xn = xv - ac[6] * ((mv / ac[4]) / (SQRT(vv) * ac[5] + ac[7]) + ac[8] * xv);      \
        if (write) {                                                                   \
            m[b] = mv;                                                                 \
            v[b] = vv;                                                                 \
            x[b] = xn;                                                                 \
        } else {                                                                       \
            bx |= xv * 0 != 0;                                                         \
            bg |= gv * 0 != 0;                                                         \
            br |= (mv * 0 + vv * 0 + xn * 0) != 0;  /* each value, not their sum */    \
            acc[0] += (double)gv * (double)gv;                                         \
            acc[1] += ((double)xn - (double)xv) * ((double)xn - (double)xv);           \
        }                                                                              \
    }                                                                                  \
    return bx | bg << 1 | br << 2;                                                     \
}

/* The element loops are written to vectorise. GCC keeps a scalar sqrt call
   (for errno) unless told otherwise, and at -O2 vectorises only the simplest
   loops; these kernels never read errno, so relax both for them alone. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER)
#pragma GCC push_options
#pragma GCC optimize("no-math-errno", "tree-vectorize", "vect-cost-model=dynamic")
#endif
RITE__KERNELS(float, f32, sqrtf)
RITE__KERNELS(double, f64, sqrt)

/* Gram kernel: A += D^T D for a tile D of n rows of rp doubles (rp = r
   rounded up to 8, the extra columns zero), A r x r column-major, upper
   triangle. Blocks of 4 x 8 entries of A are accumulated over all rows in
   registers, in a fixed order. With GCC or clang the block is written with
   vector types and compiled twice: for the baseline instruction set and, on
   x86, for AVX2 with FMA (chosen at run time); the two differ only by the
   rounding of fused multiply-adds. */
#if defined(__GNUC__) || defined(__clang__)
typedef double rite__v4d __attribute__((vector_size(32)));
#define RITE__GRAM_ROW(p, v)                                                           \
    {                                                                                  \
        const double v_ = v;                                                           \
        const rite__v4d a = {v_, v_, v_, v_};                                          \
        c##p##0 += a * b0;                                                             \
        c##p##1 += a * b1;                                                             \
    }
#define RITE__GRAM_TILE_BODY                                                           \
    int i, l0, j0, p, q;                                                               \
    for (l0 = 0; l0 < rp; l0 += 4)                                                     \
        for (j0 = l0 / 8 * 8; j0 < rp; j0 += 8) {                                      \
            rite__v4d c00 = {0, 0, 0, 0}, c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00; \
            rite__v4d c30 = c00, c31 = c00, b0, b1;                                    \
            double out[4][8];                                                          \
            for (i = 0; i < n; i++) {                                                  \
                const double *di = D + (size_t)i * rp;                                 \
                memcpy(&b0, di + j0, sizeof b0);                                       \
                memcpy(&b1, di + j0 + 4, sizeof b1);                                   \
                RITE__GRAM_ROW(0, di[l0])                                              \
                RITE__GRAM_ROW(1, di[l0 + 1])                                          \
                RITE__GRAM_ROW(2, di[l0 + 2])                                          \
                RITE__GRAM_ROW(3, di[l0 + 3])                                          \
            }                                                                          \
            memcpy(out[0], &c00, sizeof c00); memcpy(out[0] + 4, &c01, sizeof c01);    \
            memcpy(out[1], &c10, sizeof c10); memcpy(out[1] + 4, &c11, sizeof c11);    \
            memcpy(out[2], &c20, sizeof c20); memcpy(out[2] + 4, &c21, sizeof c21);    \
            memcpy(out[3], &c30, sizeof c30); memcpy(out[3] + 4, &c31, sizeof c31);    \
            for (p = 0; p < 4 && l0 + p < r; p++)                                      \
                for (q = 0; q < 8 && j0 + q < r; q++)                                  \
                    if (j0 + q >= l0 + p) A[(size_t)(j0 + q) * r + l0 + p] += out[p][q]; \
        }
#else
#define RITE__GRAM_TILE_BODY                                                           \
    int i, l, j;                                                                       \
    for (i = 0; i < n; i++)                                                            \
        for (j = 0; j < r; j++)                                                        \
            for (l = 0; l <= j; l++) A[(size_t)j * r + l] += D[(size_t)i * rp + l] * D[(size_t)i * rp + j];
#endif

/* rows [i0, i1) of a float k x r matrix in storage (lay, ld) -> D, rows of rp doubles */
#define RITE__TO_TILE_BODY                                                             \
    int i, j;                                                                          \
    if (lay == RITE_RANK_LAST) {                                                       \
        for (i = i0; i < i1; i++) {                                                    \
            const float *row = x + (size_t)i * ld;                                     \
            double *o = D + (size_t)(i - i0) * rp;                                     \
            for (j = 0; j < r; j++) o[j] = row[j];                                     \
            for (; j < rp; j++) o[j] = 0;                                              \
        }                                                                              \
    } else {                                                                           \
        for (i = i0; i < i1; i++)                                                      \
            for (j = r; j < rp; j++) D[(size_t)(i - i0) * rp + j] = 0;                 \
        for (j = 0; j < r; j++) {                                                      \
            const float *col = x + (size_t)j * ld;                                     \
            for (i = i0; i < i1; i++) D[(size_t)(i - i0) * rp + j] = col[i];           \
        }                                                                              \
    }

static void rite__gram_tile_c(const float *x, rite_layout lay, int ld, int i0, int i1, double *D, int r, int rp,
                              double *A)
{
    int n = i1 - i0;
    {
        RITE__TO_TILE_BODY
    }
    {
        RITE__GRAM_TILE_BODY
    }
}

#if !defined(LORA_RITE_NO_SIMD) && defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__clang__) || __GNUC__ >= 6)
#define RITE__DISPATCH 1
__attribute__((target("avx2,fma"))) static void rite__gram_tile_avx2(const float *x, rite_layout lay, int ld,
                                                                     int i0, int i1, double *D, int r, int rp,
                                                                     double *A)
{
    int n = i1 - i0;
    {
        RITE__TO_TILE_BODY
    }
    {
        RITE__GRAM_TILE_BODY
    }
}

static int rite__have_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

/* A += X^T X over rows [i0, i1) of a float k x r matrix in storage (lay, ld),
   through the double tile D */
static void rite__gram_tile(const float *x, rite_layout lay, int ld, int i0, int i1, double *D, int r, int rp,
                            double *A)
{
#ifdef RITE__DISPATCH
    if (rite__have_avx2()) {
        rite__gram_tile_avx2(x, lay, ld, i0, i1, D, r, rp, A);
        return;
    }
#endif
    rite__gram_tile_c(x, lay, ld, i0, i1, D, r, rp, A);
}

/* Row kernels of a float layer's apply, for n rows; rp = r rounded up to
   16, and every row a kernel reads or writes has rp floats in memory (the
   columns from r on are zero where they are read, scratch where written):
     rows_times:  C = beta C + A W   (A n x r at a + i rs + l cs, W r x rp
                                      row-major, C rows at c + i ldc)
     rows_cross:  E += C^T X         (C rows at c + i ldc, X rows at x + i ldx;
                                      E r x r double column-major, accumulated
                                      per call in float, then in double)
   Blocks of 4 rows x 16 columns (times) and 4 x 16 entries of E (cross) are
   kept in registers, with vector types under GCC and clang, compiled twice
   like the Gram kernel; plain loops elsewhere. */
#define RITE__PAD16(r) (((r) + 15) / 16 * 16)
/* rows per tile of the row kernels: 64 for r <= 32 (three tiles stay in L1);
   for larger r up to 256, fewer folds of E into double, tiles of at most
   16 Ki floats */
#define RITE__ROWS_OF(r)                                                               \
    (RITE__PAD16(r) <= 32 ? 64                                                         \
     : 16384 / RITE__PAD16(r) >= 256 ? 256                                             \
     : 16384 / RITE__PAD16(r) >= 4 ? 16384 / RITE__PAD16(r) / 4 * 4 : 4)
#if defined(__GNUC__) || defined(__clang__)
typedef float rite__v8f __attribute__((vector_size(32)));
#define RITE__TIMES_ROW(p)                                                             \
    {                                                                                  \
        const float v_ = a[(size_t)(i0 + (p < h ? p : 0)) * rs + (size_t)q * cs];      \
        const rite__v8f av = {v_, v_, v_, v_, v_, v_, v_, v_};                         \
        c##p##0 += av * w0;                                                            \
        c##p##1 += av * w1;                                                            \
    }
#define RITE__TIMES_LOAD(p)                                                            \
    if (p < h) {                                                                       \
        memcpy(&c##p##0, c + (size_t)(i0 + p) * ldc + j0, 32);                         \
        memcpy(&c##p##1, c + (size_t)(i0 + p) * ldc + j0 + 8, 32);                     \
        c##p##0 *= bv;                                                                 \
        c##p##1 *= bv;                                                                 \
    }
#define RITE__TIMES_STORE(p)                                                           \
    if (p < h) {                                                                       \
        memcpy(c + (size_t)(i0 + p) * ldc + j0, &c##p##0, 32);                         \
        memcpy(c + (size_t)(i0 + p) * ldc + j0 + 8, &c##p##1, 32);                     \
    }
#define RITE__ROWS_TIMES_BODY                                                          \
    int i0, j0, q;                                                                     \
    const rite__v8f bv = {beta, beta, beta, beta, beta, beta, beta, beta};             \
    for (i0 = 0; i0 < n; i0 += 4) {                                                    \
        int h = n - i0 < 4 ? n - i0 : 4;                                               \
        for (j0 = 0; j0 < rp; j0 += 16) {                                              \
            rite__v8f c00 = {0, 0, 0, 0, 0, 0, 0, 0}, c01 = c00, c10 = c00, c11 = c00; \
            rite__v8f c20 = c00, c21 = c00, c30 = c00, c31 = c00, w0, w1;              \
            if (beta != 0) {                                                           \
                RITE__TIMES_LOAD(0) RITE__TIMES_LOAD(1) RITE__TIMES_LOAD(2) RITE__TIMES_LOAD(3) \
            }                                                                          \
            for (q = 0; q < r; q++) {                                                  \
                memcpy(&w0, w + (size_t)q * rp + j0, 32);                              \
                memcpy(&w1, w + (size_t)q * rp + j0 + 8, 32);                          \
                RITE__TIMES_ROW(0)                                                     \
                RITE__TIMES_ROW(1)                                                     \
                RITE__TIMES_ROW(2)                                                     \
                RITE__TIMES_ROW(3)                                                     \
            }                                                                          \
            RITE__TIMES_STORE(0) RITE__TIMES_STORE(1) RITE__TIMES_STORE(2) RITE__TIMES_STORE(3) \
        }                                                                              \
    }
#define RITE__CROSS_ROW(p)                                                             \
    {                                                                                  \
        const float v_ = ci[l0 + p];                                                   \
        const rite__v8f av = {v_, v_, v_, v_, v_, v_, v_, v_};                         \
        e##p##0 += av * x0;                                                            \
        e##p##1 += av * x1;                                                            \
    }
#define RITE__ROWS_CROSS_BODY                                                          \
    int i, l0, j0, p, q;                                                               \
    for (l0 = 0; l0 < r; l0 += 4)                                                      \
        for (j0 = 0; j0 < r; j0 += 16) {                                               \
            rite__v8f e00 = {0, 0, 0, 0, 0, 0, 0, 0}, e01 = e00, e10 = e00, e11 = e00; \
            rite__v8f e20 = e00, e21 = e00, e30 = e00, e31 = e00, x0, x1;              \
            float out[4][16];                                                          \
            for (i = 0; i < n; i++) {                                                  \
                const float *ci = c + (size_t)i * ldc, *xi = x + (size_t)i * ldx;      \
                memcpy(&x0, xi + j0, 32);                                              \
                memcpy(&x1, xi + j0 + 8, 32);                                          \
                RITE__CROSS_ROW(0)                                                     \
                RITE__CROSS_ROW(1)                                                     \
                RITE__CROSS_ROW(2)                                                     \
                RITE__CROSS_ROW(3)                                                     \
            }                                                                          \
            memcpy(out[0], &e00, 32); memcpy(out[0] + 8, &e01, 32);                    \
            memcpy(out[1], &e10, 32); memcpy(out[1] + 8, &e11, 32);                    \
            memcpy(out[2], &e20, 32); memcpy(out[2] + 8, &e21, 32);                    \
            memcpy(out[3], &e30, 32); memcpy(out[3] + 8, &e31, 32);                    \
            for (p = 0; p < 4 && l0 + p < r; p++)                                      \
                for (q = 0; q < 16 && j0 + q < r; q++) E[(size_t)(j0 + q) * r + l0 + p] += out[p][q]; \
        }
#else
#define RITE__ROWS_TIMES_BODY                                                          \
    int i, j, q;                                                                       \
    for (i = 0; i < n; i++)                                                            \
        for (j = 0; j < rp; j++) {                                                     \
            float v = beta != 0 ? beta * c[(size_t)i * ldc + j] : 0.0f;               \
            for (q = 0; q < r; q++) v += a[(size_t)i * rs + (size_t)q * cs] * w[(size_t)q * rp + j]; \
            c[(size_t)i * ldc + j] = v;                                                \
        }
#define RITE__ROWS_CROSS_BODY                                                          \
    int i, l, j;                                                                       \
    for (l = 0; l < r; l++)                                                            \
        for (j = 0; j < r; j++) {                                                      \
            float v = 0;                                                               \
            for (i = 0; i < n; i++) v += c[(size_t)i * ldc + l] * x[(size_t)i * ldx + j]; \
            E[(size_t)j * r + l] += v;                                                 \
        }
#endif

/* sum of squares of n rows of r floats (row stride ld), in double: eight
   independent sums, added in a fixed order */
#define RITE__SUMSQ_ROWS_BODY                                                          \
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, ss = 0;                                  \
    int i, j, t;                                                                       \
    for (i = 0; i < n; i++) {                                                          \
        const float *xi = x + (size_t)i * ld;                                          \
        for (j = 0; j + 8 <= r; j += 8)                                                \
            for (t = 0; t < 8; t++) acc[t] += (double)xi[j + t] * xi[j + t];           \
        for (; j < r; j++) acc[0] += (double)xi[j] * xi[j];                            \
    }                                                                                  \
    for (t = 0; t < 8; t++) ss += acc[t];                                              \
    return ss;

static void rite__rows_times_c(int n, int r, int rp, const float *a, size_t rs, size_t cs, const float *w, float beta,
                               float *c, size_t ldc)
{
    RITE__ROWS_TIMES_BODY
}

static void rite__rows_cross_c(int n, int r, const float *c, size_t ldc, const float *x, size_t ldx, double *E)
{
    RITE__ROWS_CROSS_BODY
}

static double rite__sumsq_rows_c(const float *x, size_t ld, int n, int r)
{
    RITE__SUMSQ_ROWS_BODY
}

#ifdef RITE__DISPATCH
__attribute__((target("avx2,fma"))) static void rite__rows_times_avx2(int n, int r, int rp, const float *a,
                                                                      size_t rs, size_t cs, const float *w,
                                                                      float beta, float *c, size_t ldc)
{
    RITE__ROWS_TIMES_BODY
}

__attribute__((target("avx2,fma"))) static void rite__rows_cross_avx2(int n, int r, const float *c, size_t ldc,
                                                                      const float *x, size_t ldx, double *E)
{
    RITE__ROWS_CROSS_BODY
}

__attribute__((target("avx2"))) static double rite__sumsq_rows_avx2(const float *x, size_t ld, int n, int r)
{
    RITE__SUMSQ_ROWS_BODY
}
#endif

static void rite__rows_times(int n, int r, int rp, const float *a, size_t rs, size_t cs, const float *w, float beta,
                             float *c, size_t ldc)
{
#ifdef RITE__DISPATCH
    if (rite__have_avx2()) {
        rite__rows_times_avx2(n, r, rp, a, rs, cs, w, beta, c, ldc);
        return;
    }
#endif
    rite__rows_times_c(n, r, rp, a, rs, cs, w, beta, c, ldc);
}

static void rite__rows_cross(int n, int r, const float *c, size_t ldc, const float *x, size_t ldx, double *E)
{
#ifdef RITE__DISPATCH
    if (rite__have_avx2()) {
        rite__rows_cross_avx2(n, r, c, ldc, x, ldx, E);
        return;
    }
#endif
    rite__rows_cross_c(n, r, c, ldc, x, ldx, E);
}

static double rite__sumsq_rows(const float *x, size_t ld, int n, int r)
{
#ifdef RITE__DISPATCH
    if (rite__have_avx2()) return rite__sumsq_rows_avx2(x, ld, n, r);
#endif
    return rite__sumsq_rows_c(x, ld, n, r);
}

/* rows [i0, i1) of a float k x r matrix in storage (lay, ld) -> t, rows of rp floats */
static void rite__pack_rows(const float *x, rite_layout lay, int ld, int i0, int i1, int r, int rp, float *t)
{
    int i, j;
    for (i = i0; i < i1; i++)
        for (j = r; j < rp; j++) t[(size_t)(i - i0) * rp + j] = 0;
    if (lay == RITE_RANK_LAST) {
        for (i = i0; i < i1; i++) memcpy(t + (size_t)(i - i0) * rp, x + (size_t)i * ld, (size_t)r * sizeof(float));
        return;
    }
    for (j = 0; j < r; j++)
        for (i = i0; i < i1; i++) t[(size_t)(i - i0) * rp + j] = x[(size_t)j * ld + i];
}

/* rows of rp floats, times f -> rows [i0, i1) of a float k x r matrix in storage (lay, ld) */
static void rite__unpack_rows(const float *t, int i0, int i1, int r, int rp, float f, float *x, rite_layout lay,
                              int ld)
{
    int i, j;
    if (lay == RITE_RANK_LAST) {
        for (i = i0; i < i1; i++)
            for (j = 0; j < r; j++) x[(size_t)i * ld + j] = t[(size_t)(i - i0) * rp + j] * f;
        return;
    }
    for (j = 0; j < r; j++)
        for (i = i0; i < i1; i++) x[(size_t)j * ld + i] = t[(size_t)(i - i0) * rp + j] * f;
}

#if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER)
#pragma GCC pop_options
#endif

/* AdamW spans in SSE2 where it exists: compilers keep sqrt scalar (for errno)
   in the plain loop above. The same operations in the same order, lane by
   lane; the scalar loop does the tail. */
#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>

/* S: f32 or f64; T the element, V the SSE2 vector type, P the intrinsics'
   suffix (ps, pd), W the lanes */
#define RITE__ADAMW_SSE2(S, T, V, P, W)                                                                               \
static int rite__adamw_block_##S(T *x, const T *g, T *m, T *v, int n, const T *ac, int write, double *acc)            \
{                                                                                                                     \
    V sg = _mm_setzero_##P(), su = _mm_setzero_##P();                                                                 \
    T lane[W];                                                                                                        \
    double a0 = 0, a1 = 0;                                                                                            \
    const V b1 = _mm_set1_##P(ac[0]), b2 = _mm_set1_##P(ac[1]), ob1 = _mm_set1_##P(ac[2]);                            \
    const V ob2 = _mm_set1_##P(ac[3]), bc1 = _mm_set1_##P(ac[4]), rbc2 = _mm_set1_##P(ac[5]);                         \
    const V lr = _mm_set1_##P(ac[6]), eps = _mm_set1_##P(ac[7]), wd = _mm_set1_##P(ac[8]);                            \
    const V zero = _mm_setzero_##P();                                                                                 \
    int b = 0, flags = 0, bx = 0, bg = 0, br = 0;                                                                     \
    for (; b + W <= n; b += W) {                                                                                      \
        V gv = _mm_loadu_##P(g + b), xv = _mm_loadu_##P(x + b);                                                       \
        V mv = _mm_add_##P(_mm_mul_##P(b1, _mm_loadu_##P(m + b)), _mm_mul_##P(ob1, gv));                              \
        V vv = _mm_add_##P(_mm_mul_##P(b2, _mm_loadu_##P(v + b)), _mm_mul_##P(_mm_mul_##P(ob2, gv), gv));             \
        V den = _mm_add_##P(_mm_mul_##P(_mm_sqrt_##P(vv), rbc2), eps);                                                \
        V upd = _mm_add_##P(_mm_div_##P(_mm_div_##P(mv, bc1), den), _mm_mul_##P(wd, xv));                             \
        V xn = _mm_sub_##P(xv, _mm_mul_##P(lr, upd));                                                                 \
        if (write) {                                                                                                  \
            _mm_storeu_##P(m + b, mv);                                                                                \
            _mm_storeu_##P(v + b, vv);                                                                                \
            _mm_storeu_##P(x + b, xn);                                                                                \
        } else {                                                                                                      \
            bx |= _mm_movemask_##P(_mm_cmpneq_##P(_mm_mul_##P(xv, zero), zero));                                      \
            bg |= _mm_movemask_##P(_mm_cmpneq_##P(_mm_mul_##P(gv, zero), zero));                                      \
            br |= _mm_movemask_##P(_mm_cmpneq_##P(                                                                    \
                _mm_add_##P(_mm_add_##P(_mm_mul_##P(mv, zero), _mm_mul_##P(vv, zero)), _mm_mul_##P(xn, zero)), zero));\
            sg = _mm_add_##P(sg, _mm_mul_##P(gv, gv));                                                                \
            xn = _mm_sub_##P(xn, xv);                                                                                 \
            su = _mm_add_##P(su, _mm_mul_##P(xn, xn));                                                                \
        }                                                                                                             \
    }                                                                                                                 \
    flags = (bx ? 1 : 0) | (bg ? 2 : 0) | (br ? 4 : 0);                                                               \
    if (!write && b > 0) {   /* the sums in T; again in double if they overflowed there */                           \
        int q;                                                                                                        \
        _mm_storeu_##P(lane, sg);                                                                                     \
        for (q = 0; q < W; q++) a0 += lane[q];                                                                        \
        _mm_storeu_##P(lane, su);                                                                                     \
        for (q = 0; q < W; q++) a1 += lane[q];                                                                        \
        if (!(a0 + a1 <= DBL_MAX / 2) || (T)a0 * 0 != 0 || (T)a1 * 0 != 0) {                                         \
            double t[2] = {0, 0};                                                                                     \
            rite__adamw_span_##S(x, g, m, v, b, ac, 0, t);                                                            \
            a0 = t[0];                                                                                                \
            a1 = t[1];                                                                                                \
        }                                                                                                             \
        acc[0] += a0;                                                                                                 \
        acc[1] += a1;                                                                                                 \
    }                                                                                                                 \
    return flags | rite__adamw_span_##S(x + b, g + b, m + b, v + b, n - b, ac, write, acc);                           \
}                                                                                                                     \
/* by blocks of RITE__ADAMW_BLOCK, whose sums of squares go to double */                                             \
static int rite__adamw_fast_##S(T *x, const T *g, T *m, T *v, int n, const T *ac, int write, double *acc)             \
{                                                                                                                     \
    int b, flags = 0;                                                                                                 \
    for (b = 0; b < n; b += RITE__ADAMW_BLOCK)                                                                        \
        flags |= rite__adamw_block_##S(x + b, g + b, m + b, v + b, n - b < RITE__ADAMW_BLOCK ? n - b : RITE__ADAMW_BLOCK, \
                                       ac, write, acc);                                                               \
    return flags;                                                                                                     \
}
#define RITE__ADAMW_BLOCK 1024
RITE__ADAMW_SSE2(f32, float, __m128, ps, 4)
RITE__ADAMW_SSE2(f64, double, __m128d, pd, 2)
#undef RITE__ADAMW_SSE2
#else
#define rite__adamw_fast_f32 rite__adamw_span_f32
#define rite__adamw_fast_f64 rite__adamw_span_f64
#endif

#undef RITE__KERNELS

/* ---- @dispatch: precision dispatch ------------------------------------------ */

#define RITE__F32(l) ((l)->desc.precision == RITE_FLOAT32)

/* the largest finite number and the machine epsilon of the layer precision */
static double rite__top(const rite_layer *l)
{
    return RITE__F32(l) ? (double)FLT_MAX : DBL_MAX;
}

static double rite__eps(const rite_layer *l)
{
    return RITE__F32(l) ? (double)FLT_EPSILON : DBL_EPSILON;
}

static void rite__gemm(const rite_layer *l, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb,
                       int M, int N, int K, double alpha, const void *A, int lda,
                       const void *B, int ldb, double beta, void *C, int ldc)
{
    if (RITE__F32(l))
        cblas_sgemm(CblasColMajor, ta, tb, M, N, K, (float)alpha, (const float *)A, lda,
                    (const float *)B, ldb, (float)beta, (float *)C, ldc);
    else
        cblas_dgemm(CblasColMajor, ta, tb, M, N, K, alpha, (const double *)A, lda,
                    (const double *)B, ldb, beta, (double *)C, ldc);
}

/* double r x r: C = alpha op(A) op(B) + beta C */
static void rite__dgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int r, double alpha,
                        const double *A, const double *B, double beta, double *C)
{
    cblas_dgemm(CblasColMajor, ta, tb, r, r, r, alpha, A, r, B, r, beta, C, r);
}

static int rite__finite(const rite_layer *l, const void *x, rite_layout lay, int ld, int k)
{
    return RITE__F32(l) ? rite__finite_f32((const float *)x, lay, ld, k, l->desc.r)
                        : rite__finite_f64((const double *)x, lay, ld, k, l->desc.r);
}

/* sum of squares of a packed buffer, accumulated in double */
static double rite__sumsq(const rite_layer *l, const void *x, size_t count)
{
    return RITE__F32(l) ? cblas_dsdot((int)count, (const float *)x, 1, (const float *)x, 1)
                        : cblas_ddot((int)count, (const double *)x, 1, (const double *)x, 1);
}

/* Frobenius norm of a packed buffer (scaled: no overflow) */
static double rite__nrm2(const rite_layer *l, const void *x, size_t count)
{
    return RITE__F32(l) ? (double)cblas_snrm2((int)count, (const float *)x, 1)
                        : cblas_dnrm2((int)count, (const double *)x, 1);
}

static void rite__zap(const rite_layer *l, void *x, size_t count)
{
    if (RITE__F32(l)) rite__zap_f32((float *)x, count);
    else rite__zap_f64((double *)x, count);
}

static void rite__scal(const rite_layer *l, size_t count, double alpha, void *x)
{
    if (RITE__F32(l)) cblas_sscal((int)count, (float)alpha, (float *)x, 1);
    else cblas_dscal((int)count, alpha, (double *)x, 1);
}

/* r x r in the layer precision (leading dimension ldx) -> double (packed) */
static void rite__to_double(const rite_layer *l, const void *x, int ldx, double *y)
{
    int r = l->desc.r;
    if (RITE__F32(l)) rite__to_double_f32((const float *)x, ldx, r, r, y, r);
    else rite__to_double_f64((const double *)x, ldx, r, r, y, r);
}

/* Householder QR (LAPACK ?geqrf) of side s's factor, copied column-major
   into Xw (k x r): T in the upper triangle of Xw */
static lapack_int rite__geqrf(rite_layer *l, rite__side *s)
{
    int r = l->desc.r, k = s->k;
    if (RITE__F32(l)) {
        rite__load_f32((const float *)s->X, s->layout, s->ld, k, r, (float *)s->Xw);
        return LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, k, r, (float *)s->Xw, k, (float *)l->work,
                                   (float *)l->work + r, l->lwork - r);
    }
    rite__load_f64((const double *)s->X, s->layout, s->ld, k, r, (double *)s->Xw);
    return LAPACKE_dgeqrf_work(LAPACK_COL_MAJOR, k, r, (double *)s->Xw, k, (double *)l->work,
                               (double *)l->work + r, l->lwork - r);
}

/* n doubles divided by p -> the layer precision (packed) */
static void rite__from_double(const rite_layer *l, const double *x, int n, double p, void *y)
{
    int i;
    if (RITE__F32(l))
        for (i = 0; i < n; i++) ((float *)y)[i] = (float)(x[i] / p);
    else
        for (i = 0; i < n; i++) ((double *)y)[i] = x[i] / p;
}

/* column-major k x r times a scalar -> caller storage */
static void rite__store_f64(const double *d, int k, int r, double scale, double *x, rite_layout lay, int ld)
{
    int i, j, i0, i1;
    if (lay == RITE_RANK_FIRST) {
        for (j = 0; j < r; j++)
            for (i = 0; i < k; i++) x[(size_t)j * ld + i] = d[(size_t)j * k + i] * scale;
        return;
    }
    for (i0 = 0; i0 < k; i0 = i1) {           /* transpose by tiles of rows */
        i1 = i0 + RITE__TILE < k ? i0 + RITE__TILE : k;
        for (j = 0; j < r; j++)
            for (i = i0; i < i1; i++) x[(size_t)i * ld + j] = d[(size_t)j * k + i] * scale;
    }
}

/* largest |x| of a double k x r matrix in storage (lay, ld), or NaN when
   it holds NaN or Inf: the finiteness check in the same pass */
static double rite__absmax_f64(const double *x, rite_layout lay, int ld, int k, int r)
{
    int a, b, no = RITE__OUTER(lay, k, r), ni = RITE__INNER(lay, k, r);
    double m = 0, z = 0;
    for (a = 0; a < no; a++)
        for (b = 0; b < ni; b++) {
            double v = fabs(x[(size_t)a * ld + b]);
            z += v * 0;   /* NaN from the first NaN or Inf on */
            m = v > m ? v : m;
        }
    return z == 0 ? m : (double)NAN;
}

/* ---- @dispatch: small r x r helpers (double) --------------------------------- */

/* sym(X) = (X + X^T) / 2, in place */
static void rite__sym(double *x, int r)
{
    int i, j;
    for (j = 0; j < r; j++)
        for (i = 0; i < j; i++) {
            double v = 0.5 * (x[(size_t)j * r + i] + x[(size_t)i * r + j]);
            x[(size_t)j * r + i] = v;
            x[(size_t)i * r + j] = v;
        }
}

static int rite__all_finite_d(const double *x, size_t count)
{
    size_t i;
    double acc = 0;
    for (i = 0; i < count; i++) acc += x[i] * 0;
    return acc == 0;
}

/* SPEC 6: bias-corrected decay beta_hat(k) = beta (1 - beta^k) / (1 - beta^(k+1)),
   with k the steps completed */
static double rite__bhat(double beta, long long steps)
{
    return beta * (1.0 - pow(beta, (double)steps)) / (1.0 - pow(beta, (double)(steps + 1)));
}

/* ---- @config: hyper-parameters and descs --------------------------------------- */

LORA_RITE_API rite_config rite_config_default(rite_optimizer optimizer)
{
    rite_config c;
    memset(&c, 0, sizeof c);
    c.tag = RITE__TAG(optimizer == RITE_ADAMW ? RITE_ADAMW : RITE_LORA_RITE);
    c.lr = 1e-3;
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    if (optimizer == RITE_ADAMW) {
        c.eps = 1e-8;
    } else {
        c.eps = 1e-6;
        c.clip = 1.0;
        c.skip = 1.0;
    }
    return c;
}

/* st, with the detail of the problem printed into msg (n bytes; msg may be NULL) */
static rite_status rite__say(char *msg, size_t n, rite_status st, const char *fmt, ...)
{
    va_list ap;
    if (!msg || !n) return st;
    va_start(ap, fmt);
    vsnprintf(msg, n, fmt, ap);
    va_end(ap);
    return st;
}


/* A config for a layer of optimizer opt and precision prec: made by
   rite_config_default for that optimizer, every value in range and finite
   in the layer's precision, and (AdamW) no LoRA-RITE option set. */
static rite_status rite__check_config(const rite_config *c, rite_optimizer opt, rite_precision prec, char *msg,
                                      size_t n)
{
    double top = prec == RITE_FLOAT32 ? (double)FLT_MAX : DBL_MAX;
    const char *pn = prec == RITE_FLOAT32 ? "float" : "double";
    if (c->tag != RITE__TAG(RITE_LORA_RITE) && c->tag != RITE__TAG(RITE_ADAMW))
        return rite__say(msg, n, RITE_ERR_CONFIG,
                         "the config was not made by rite_config_default() or rite_get_config() (tag %#x)", c->tag);
    if (c->tag != RITE__TAG(opt))
        return rite__say(msg, n, RITE_ERR_CONFIG, "the config was made for %s, the layer is %s",
                         opt == RITE_ADAMW ? "LoRA-RITE" : "AdamW", opt == RITE_ADAMW ? "AdamW" : "LoRA-RITE");
    if (!(c->lr >= 0 && c->lr <= top))
        return rite__say(msg, n, RITE_ERR_LR, "lr = %g: it must be >= 0 and finite in %s", c->lr, pn);
    if (!(c->beta1 >= 0 && c->beta1 < 1)) return rite__say(msg, n, RITE_ERR_BETA1, "beta1 = %g: not in [0, 1)", c->beta1);
    if (!(c->beta2 >= 0 && c->beta2 < 1)) return rite__say(msg, n, RITE_ERR_BETA2, "beta2 = %g: not in [0, 1)", c->beta2);
    if (!(c->eps >= 0 && c->eps <= top))
        return rite__say(msg, n, RITE_ERR_EPS, "eps = %g: it must be >= 0 and finite in %s", c->eps, pn);
    if (!(c->eps_root >= 0 && c->eps_root <= DBL_MAX))
        return rite__say(msg, n, RITE_ERR_EPS_ROOT, "eps_root = %g: it must be >= 0 and finite", c->eps_root);
    if (!(c->clip >= 0)) return rite__say(msg, n, RITE_ERR_CLIP, "clip = %g: it must be >= 0", c->clip);
    if (!(c->skip >= 0)) return rite__say(msg, n, RITE_ERR_SKIP, "skip = %g: it must be >= 0", c->skip);
    if (!(c->cap >= 0)) return rite__say(msg, n, RITE_ERR_CAP, "cap = %g: it must be >= 0", c->cap);
    if (!(c->weight_decay >= 0 && c->weight_decay <= top))
        return rite__say(msg, n, RITE_ERR_WEIGHT_DECAY, "weight_decay = %g: it must be >= 0 and finite in %s",
                         c->weight_decay, pn);
    if (opt == RITE_ADAMW) {
        const char *f = c->eps_root != 0 ? "eps_root" : c->clip != 0 ? "clip" : c->skip != 0 ? "skip"
                      : c->cap != 0 ? "cap" : c->escape ? "escape" : c->relative_eps ? "relative_eps"
                      : c->balance ? "balance" : NULL;
        if (f)
            return rite__say(msg, n, RITE_ERR_CONFIG,
                             "%s is a LoRA-RITE option and must be 0 for AdamW (AdamW does not clip: clip "
                             "the gradients before the step)", f);
    }
    return RITE_OK;
}

/* rite_set_config's and rite_model_set_config's checks: msg is cleared, then
   holds the reason of a refusal */
static rite_status rite__check_new_config(const rite_config *c, rite_optimizer opt, rite_precision prec, char *msg,
                                          size_t n)
{
    msg[0] = 0;
    if (!c) return rite__say(msg, n, RITE_ERR_NULL_ARGUMENT, "config is NULL");
    return rite__check_config(c, opt, prec, msg, n);
}

/* Checks desc and fills in its defaults (leading dimensions, config). */
static rite_status rite__resolve(const rite_desc *in, rite_desc *d, rite_config *cfg, char *msg, size_t n)
{
    int minmn, pack[4], i;
    int *ld[4];
    static const char *const ldname[4] = {"ld_L", "ld_R", "ld_gL", "ld_gR"};
    if (msg && n) msg[0] = 0;
    if (!in) return rite__say(msg, n, RITE_ERR_NULL_ARGUMENT, "desc is NULL");
    *d = *in;
    if ((d->allocator.alloc == NULL) != (d->allocator.release == NULL))
        return rite__say(msg, n, RITE_ERR_NULL_ARGUMENT, "allocator.%s is NULL but allocator.%s is not",
                         d->allocator.alloc ? "release" : "alloc", d->allocator.alloc ? "alloc" : "release");
    if (d->optimizer != RITE_LORA_RITE && d->optimizer != RITE_ADAMW)
        return rite__say(msg, n, RITE_ERR_OPTIMIZER, "optimizer = %d", (int)d->optimizer);
    if (d->precision != RITE_FLOAT32 && d->precision != RITE_FLOAT64)
        return rite__say(msg, n, RITE_ERR_PRECISION, "precision = %d", (int)d->precision);
    if (d->m <= 0 || d->n <= 0 || d->r <= 0)
        return rite__say(msg, n, RITE_ERR_SIZE, "m = %d, n = %d, r = %d: each must be positive", d->m, d->n, d->r);
    /* every k x r buffer must be addressable with size_t, its element count
       must fit BLAS's int, and so must LAPACK's r x r workspaces */
    if ((size_t)d->m > (SIZE_MAX / 64) / (size_t)d->r || (size_t)d->n > (SIZE_MAX / 64) / (size_t)d->r ||
        (size_t)d->m * (size_t)d->r > (size_t)INT_MAX || (size_t)d->n * (size_t)d->r > (size_t)INT_MAX ||
        d->r > 16384)
        return rite__say(msg, n, RITE_ERR_SIZE, "m = %d, n = %d, r = %d: m r and n r must not exceed %d, r 16384",
                         d->m, d->n, d->r, INT_MAX);
    minmn = d->m < d->n ? d->m : d->n;
    if (d->r > minmn) return rite__say(msg, n, RITE_ERR_RANK, "r = %d exceeds min(m, n) = %d", d->r, minmn);
    if ((d->layout_L != RITE_RANK_LAST && d->layout_L != RITE_RANK_FIRST) ||
        (d->layout_R != RITE_RANK_LAST && d->layout_R != RITE_RANK_FIRST))
        return rite__say(msg, n, RITE_ERR_LAYOUT, "layout_L = %d, layout_R = %d", (int)d->layout_L,
                         (int)d->layout_R);
    pack[0] = pack[2] = d->layout_L == RITE_RANK_LAST ? d->r : d->m;
    pack[1] = pack[3] = d->layout_R == RITE_RANK_LAST ? d->r : d->n;
    ld[0] = &d->ld_L; ld[1] = &d->ld_R; ld[2] = &d->ld_gL; ld[3] = &d->ld_gR;
    for (i = 0; i < 4; i++)
        if (*ld[i] < 0) return rite__say(msg, n, RITE_ERR_LEADING_DIM, "%s = %d is negative", ldname[i], *ld[i]);
    for (i = 0; i < 4; i++) {
        int given = *ld[i];
        if (*ld[i] == 0) *ld[i] = i < 2 ? pack[i] : *ld[i - 2];
        if (*ld[i] < pack[i])
            return rite__say(msg, n, RITE_ERR_LEADING_DIM, "%s = %d%s is below its minimum %d (%s storage: %s)",
                             ldname[i], *ld[i], given ? "" : " (as its factor's)", pack[i],
                             (i % 2 ? d->layout_R : d->layout_L) == RITE_RANK_LAST ? "rank-last" : "rank-first",
                             (i % 2 ? d->layout_R : d->layout_L) == RITE_RANK_LAST ? "ld >= r" : "ld >= rows");
    }
    *cfg = d->config ? *d->config : rite_config_default(d->optimizer);
    {
        rite_status st = rite__check_config(cfg, d->optimizer, d->precision, msg, n);
        if (st != RITE_OK) return st;
    }
    d->config = NULL;
    d->keep_basis = d->optimizer == RITE_LORA_RITE && d->keep_basis != 0;
    return RITE_OK;
}

/* ---- @memory: a layer's block and a workspace ----------------------------------- */

/* LAPACK workspace sizes for a resolved desc (LoRA-RITE only). */
static rite_status rite__lapack_sizes(const rite_desc *d, int *lwork, int *ldwork, int *liwork)
{
    int side, r = d->r;
    lapack_int info, iq = 0;
    double dq = 0, dummy[1] = {0};
    float fq = 0, fdummy[1] = {0};
    *lwork = 1;
    *ldwork = 1;
    *liwork = 1;
    for (side = 0; side < 2; side++) {
        int k = side == 0 ? d->m : d->n;
        if (d->precision == RITE_FLOAT32) {
            info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, k, r, fdummy, k, fdummy, &fq, -1);
            if (info != 0) return RITE_ERR_LAPACK;
            if ((int)fq > *lwork) *lwork = (int)fq;
        } else {
            info = LAPACKE_dgeqrf_work(LAPACK_COL_MAJOR, k, r, dummy, k, dummy, &dq, -1);
            if (info != 0) return RITE_ERR_LAPACK;
            if ((int)dq > *lwork) *lwork = (int)dq;
        }
    }
    info = LAPACKE_dgesvd_work(LAPACK_COL_MAJOR, 'A', 'A', r, r, dummy, r, dummy, dummy, r,
                               dummy, r, &dq, -1);
    if (info != 0) return RITE_ERR_LAPACK;
    if ((int)dq > *ldwork) *ldwork = (int)dq;
    info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', r, dummy, r, dummy, &dq, -1, &iq, -1);
    if (info != 0) return RITE_ERR_LAPACK;
    if ((int)dq > *ldwork) *ldwork = (int)dq;
    if ((int)iq > *liwork) *liwork = (int)iq;
    if (*ldwork < 3 * r) *ldwork = 3 * r;   /* dtrcon */
    if (*liwork < r) *liwork = r;
    return RITE_OK;
}

/* Lays the layer out in one block. With base == NULL it only counts bytes. */
typedef struct rite__carver {
    char *base;
    size_t off;
} rite__carver;

static void *rite__carve(rite__carver *c, size_t bytes)
{
    void *p = c->base ? c->base + c->off : NULL;
    c->off += (bytes + RITE__ALIGN - 1) / RITE__ALIGN * RITE__ALIGN;
    return p;
}

static size_t rite__state_bytes(const rite_layer *l);

/* A LoRA-RITE layer's r x r data that lives from prepare to the end of
   apply: per factor the prep sets (one, aliased, for a model's layer) and
   the results of apply's first phase. */
static void rite__plan_rr(rite_layer *l, rite__carver *c)
{
    size_t dr = (size_t)l->desc.r * (size_t)l->desc.r * sizeof(double);
    int side, set;
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        for (set = 0; set < 2; set++) {
            if (set == 1 && l->shared) {
                s->pre[1] = s->pre[0];
                continue;
            }
            s->pre[set].T = (double *)rite__carve(c, dr);
            s->pre[set].Tp = (double *)rite__carve(c, dr);
            s->pre[set].GG = (double *)rite__carve(c, dr);
        }
        s->P = (double *)rite__carve(c, dr);
        s->Q = (double *)rite__carve(c, dr);
        s->Vn = (double *)rite__carve(c, dr);
    }
}

/* A LoRA-RITE layer's workspace, which nothing needs between calls: per
   factor the k x r blocks and r x r results of apply's second phase; the
   r x r matrices, LAPACK workspaces and tiles of the layer. Carved in the
   layer's own block, or (a model's layer) in a worker's workspace, sized for
   the largest layer: every carve grows with k, r and the LAPACK sizes. */
static void rite__plan_ws(rite_layer *l, rite__carver *c)
{
    size_t r = (size_t)l->desc.r, rr = r * r, es = l->es, dr = rr * sizeof(double);
    int side, kmax = l->desc.m > l->desc.n ? l->desc.m : l->desc.n;
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        size_t kb = (size_t)s->k * r * es;
        s->Mn = rite__carve(c, kb);
        s->Xw = RITE__F32(l) ? s->Mn : rite__carve(c, kb);   /* a float layer's Xw is used by prepare only */
        s->Cn = (double *)rite__carve(c, dr);
        s->E = (double *)rite__carve(c, dr);
    }
    l->V = (double *)rite__carve(c, dr);
    l->Vt = (double *)rite__carve(c, dr);
    l->T1 = (double *)rite__carve(c, dr);
    l->T2 = (double *)rite__carve(c, dr);
    l->T3 = (double *)rite__carve(c, dr);
    l->W = (double *)rite__carve(c, dr);
    l->lam = (double *)rite__carve(c, r * sizeof(double));
    l->lam2 = (double *)rite__carve(c, r * sizeof(double));
    l->WT = rite__carve(c, rr * es);
    l->work = rite__carve(c, (size_t)l->lwork * es);
    l->dwork = (double *)rite__carve(c, (size_t)l->ldwork * sizeof(double));
    l->iwork = (lapack_int *)rite__carve(c, (size_t)l->liwork * sizeof(lapack_int));
    l->WF = NULL;
    l->ftile = NULL;
    l->tile = NULL;
    if (RITE__F32(l)) {
        size_t rp = (size_t)RITE__PAD8(l->desc.r), rp16 = (size_t)RITE__PAD16(l->desc.r);
        l->WF = (float *)rite__carve(c, 2 * r * rp16 * sizeof(float));
        l->ftile = (float *)rite__carve(c, 3 * (size_t)RITE__ROWS_OF(l->desc.r) * rp16 * sizeof(float));
        l->tile_rows = RITE__TILE_DOUBLES / (int)rp > 0 ? RITE__TILE_DOUBLES / (int)rp : 1;
        if (l->tile_rows > kmax) l->tile_rows = kmax;
        l->tile = (double *)rite__carve(c, (size_t)l->tile_rows * rp * sizeof(double));
    }
}

/* Bytes of a layer's workspace (rite__plan_ws), and binding one to it */
static size_t rite__ws_bytes(rite_layer *l)
{
    rite__carver c;
    c.base = NULL;
    c.off = 0;
    if (l->desc.optimizer == RITE_LORA_RITE) rite__plan_ws(l, &c);
    return c.off;
}

static void rite__bind(rite_layer *l, void *ws)
{
    rite__carver c;
    c.base = (char *)ws;
    c.off = 0;
    if (l->desc.optimizer == RITE_LORA_RITE) rite__plan_ws(l, &c);
}

static void rite__plan(rite_layer *l, char *base, rite_memory *mem)
{
    rite__carver c;
    size_t rr = (size_t)l->desc.r * (size_t)l->desc.r, r = (size_t)l->desc.r;
    size_t dr = rr * sizeof(double);
    int side;
    c.base = base;
    c.off = 0;
    rite__carve(&c, sizeof(rite_layer));
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        size_t kb = (size_t)s->k * r * l->es;
        s->M = rite__carve(&c, kb);
        if (l->desc.optimizer == RITE_ADAMW) {
            s->exp_avg_sq = rite__carve(&c, kb);
            continue;
        }
        s->Vp = (double *)rite__carve(&c, (rr + r) / 2 * sizeof(double));
        if (l->desc.keep_basis) s->U_prev = rite__carve(&c, kb);
        else s->C = (double *)rite__carve(&c, dr);
    }
    if (l->desc.optimizer == RITE_LORA_RITE) {
        rite__plan_rr(l, &c);
        if (!l->shared) rite__plan_ws(l, &c);
    }
    mem->state_bytes = rite__state_bytes(l);
    mem->total_bytes = c.off + RITE__ALIGN; /* room to align the block */
    mem->scratch_bytes = mem->total_bytes - mem->state_bytes - sizeof(rite_layer);
}

/* Fills a layer struct (not its buffers) from a desc. */
static const char *const rite__layer_names[4] = {"L", "R", "gL", "gR"};

static rite_status rite__setup(const rite_desc *desc, rite_layer *l)
{
    rite_status st;
    memset(l, 0, sizeof *l);
    l->names = rite__layer_names;
    st = rite__resolve(desc, &l->desc, &l->cfg, l->msg, sizeof l->msg);
    if (st != RITE_OK) return st;
    l->allocator = l->desc.allocator;
    l->es = l->desc.precision == RITE_FLOAT32 ? sizeof(float) : sizeof(double);
    l->chol_cond = RITE__CHOL_COND;
    l->s[0].k = l->desc.m;
    l->s[0].layout = l->desc.layout_L;
    l->s[0].ld = l->desc.ld_L;
    l->s[0].ldg = l->desc.ld_gL;
    l->s[1].k = l->desc.n;
    l->s[1].layout = l->desc.layout_R;
    l->s[1].ld = l->desc.ld_R;
    l->s[1].ldg = l->desc.ld_gR;
    if (l->desc.optimizer == RITE_LORA_RITE)
        return rite__lapack_sizes(&l->desc, &l->lwork, &l->ldwork, &l->liwork);
    return RITE_OK;
}

LORA_RITE_API rite_status rite_desc_check(const rite_desc *desc)
{
    rite_desc d;
    rite_config c;
    return rite__resolve(desc, &d, &c, NULL, 0);
}

LORA_RITE_API rite_status rite_desc_check_detail(const rite_desc *desc, char *detail, size_t size)
{
    rite_desc d;
    rite_config c;
    return rite__resolve(desc, &d, &c, detail, size);
}

LORA_RITE_API rite_status rite_memory_query(const rite_desc *desc, rite_memory *out)
{
    rite_layer tmp;
    rite_status st;
    if (!out) return RITE_ERR_NULL_ARGUMENT;
    st = rite__setup(desc, &tmp);
    if (st != RITE_OK) return st;
    rite__plan(&tmp, NULL, out);
    return RITE_OK;
}

static void *rite__alloc(const rite_allocator *a, size_t n)
{
    return a->alloc ? a->alloc(n, a->user_data) : malloc(n);
}

static void rite__dealloc(const rite_allocator *a, void *p)
{
    if (a->alloc) {
        if (a->release) a->release(p, a->user_data);
    } else {
        free(p);
    }
}

/* ---- @layer: creating, configuring and querying a layer ------------------------- */

/* A layer in one block; shared: a model's (no workspace of its own) */
static rite_status rite__layer_new(rite_layer **layer, const rite_desc *desc, int shared)
{
    rite_layer tmp, *l;
    rite_memory mem;
    rite_status st;
    char *raw, *base;
    *layer = NULL;
    st = rite__setup(desc, &tmp);
    if (st != RITE_OK) return st;
    tmp.shared = shared;
    rite__plan(&tmp, NULL, &mem);
    raw = (char *)rite__alloc(&tmp.allocator, mem.total_bytes);
    if (!raw) return RITE_ERR_OUT_OF_MEMORY;
    base = raw + (RITE__ALIGN - (size_t)((uintptr_t)raw % RITE__ALIGN)) % RITE__ALIGN;
    memset(base, 0, mem.total_bytes - RITE__ALIGN);
    l = (rite_layer *)(void *)base;
    *l = tmp;
    rite__plan(l, base, &l->mem);
    l->raw = raw;
    *layer = l;
    return RITE_OK;
}

LORA_RITE_API rite_status rite_init(rite_layer **layer, const rite_desc *desc)
{
    if (!layer) return RITE_ERR_NULL_ARGUMENT;
    return rite__layer_new(layer, desc, 0);
}

LORA_RITE_API void rite_free(rite_layer *layer)
{
    rite_allocator a;
    if (!layer) return;
    a = layer->allocator;
    rite__dealloc(&a, layer->raw);
}

/* a pending prepare is given up (why: for RITE_ERR_NOT_PREPARED's detail) */
static void rite__cancel(rite_layer *l, const char *why)
{
    if (l->prepared) {
        l->dropped++;
        l->unprepared = why;
    }
    l->prepared = 0;
}

/* a checked config in place; a change of skip, which prepare used, cancels
   a pending prepare */
static void rite__config_set(rite_layer *l, const rite_config *c)
{
    if (c->skip != l->cfg.skip) rite__cancel(l, "the pending prepare was cancelled by a change of skip");
    l->cfg = *c;
}

LORA_RITE_API rite_status rite_set_config(rite_layer *layer, const rite_config *config)
{
    rite_status st;
    if (!layer) return RITE_ERR_NULL_ARGUMENT;
    st = rite__check_new_config(config, layer->desc.optimizer, layer->desc.precision, layer->msg, sizeof layer->msg);
    if (st == RITE_OK) rite__config_set(layer, config);
    return st;
}

LORA_RITE_API rite_status rite_set_lr(rite_layer *layer, double lr)
{
    rite_config c;
    if (!layer) return RITE_ERR_NULL_ARGUMENT;
    c = layer->cfg;
    c.lr = lr;
    return rite_set_config(layer, &c);
}

LORA_RITE_API int rite_is_prepared(const rite_layer *layer)
{
    return layer ? layer->prepared : 0;
}

LORA_RITE_API long long rite_prepares_dropped(const rite_layer *layer)
{
    return layer ? layer->dropped : 0;
}

LORA_RITE_API const char *rite_last_error(const rite_layer *layer)
{
    return layer ? layer->msg : "";
}

LORA_RITE_API rite_config rite_get_config(const rite_layer *layer)
{
    rite_config c;
    if (layer) return layer->cfg;
    memset(&c, 0, sizeof c);
    return c;
}

LORA_RITE_API rite_desc rite_get_desc(const rite_layer *layer)
{
    rite_desc d;
    if (layer) return layer->desc;
    memset(&d, 0, sizeof d);
    return d;
}

LORA_RITE_API long long rite_step_count(const rite_layer *layer)
{
    return layer ? layer->steps : 0;
}

LORA_RITE_API void rite_reset(rite_layer *layer)
{
    int side;
    size_t r;
    if (!layer) return;
    r = (size_t)layer->desc.r;
    layer->steps = 0;
    for (side = 0; side < 2; side++) {
        rite__side *s = &layer->s[side];
        size_t kb = (size_t)s->k * r * layer->es;
        memset(s->M, 0, kb);
        if (s->exp_avg_sq) memset(s->exp_avg_sq, 0, kb);
        if (s->Vp) memset(s->Vp, 0, (r * r + r) / 2 * sizeof(double));
        if (s->C) memset(s->C, 0, r * r * sizeof(double));
        if (s->U_prev) memset(s->U_prev, 0, kb);
        s->rho = 0;
        s->m2 = 0;
    }
    layer->steps = 0;
    layer->stale = 0;
    rite__cancel(layer, "the pending prepare was cancelled by rite_reset");
}

LORA_RITE_API void rite_factors_changed(rite_layer *layer)
{
    if (!layer) return;
    layer->stale = !layer->desc.keep_basis;
    rite__cancel(layer, "the pending prepare was cancelled by rite_factors_changed");
}

/* ---- @rite: the LoRA-RITE step ---------------------------------------------- */

/* The step never forms U or the unmagnified gradient gbar = G T_o^+ of a float
   layer: both enter only through r x r products. Per factor, prepare reads X
   and G once each (Gram matrices in double, finite checks on the way) and
   keeps r x r results; apply reads M, G and X once more for three products:
     Mn = M (b1h P^T) + G ((1 - b1h) scale T_o^+ Q)      (SPEC 9-10)
     E  = Mn^T X                                           (for SPEC 16)
     X <- (1 - lr wd) X - lr capf Mn T_o^+T                (SPEC 11-14)
   the last straight into the caller's buffer when a bound shows that nothing
   can overflow, else through a copy that is checked first (the careful path,
   also taken for balance, SPEC 15). Double layers take T from Householder QR
   and form gbar, as the SPEC writes them. */


/* ---- float layers: passes accumulated in double ---- */

/* A = X^T X (upper triangle, r x r) of a float k x r matrix, in double.
   Returns 0 when X holds NaN or Inf: an element that is not finite makes
   its column's sum of squares (a diagonal element) NaN or Inf, while float
   squares cannot overflow double. *amax gets a bound of max |x|: the
   largest column norm; *fro ||X||_F. */
static int rite__gram_f32(const rite_layer *l, const float *x, rite_layout lay, int ld, int k, double *A,
                          double *amax, double *fro)
{
    int r = l->desc.r, rp = RITE__PAD8(r), i0, i1, j;
    double *D = l->tile, m = 0, t = 0;
    memset(A, 0, (size_t)r * (size_t)r * sizeof(double));
    for (i0 = 0; i0 < k; i0 = i1) {
        i1 = i0 + l->tile_rows < k ? i0 + l->tile_rows : k;
        rite__gram_tile(x, lay, ld, i0, i1, D, r, rp, A);
    }
    for (j = 0; j < r; j++) {
        double v = A[(size_t)j * r + j];
        if (!(v <= DBL_MAX)) return 0;
        m = v > m ? v : m;
        t += v;
    }
    *amax = sqrt(m);
    *fro = sqrt(t);
    return 1;
}

/* ---- r x r helpers ---- */

/* the full symmetric matrix from its upper triangle */
static void rite__symfill(double *x, int r)
{
    int i, j;
    for (j = 0; j < r; j++)
        for (i = j + 1; i < r; i++) x[(size_t)j * r + i] = x[(size_t)i * r + j];
}

static void rite__zero_lower(double *x, int r)
{
    int i, j;
    for (j = 0; j < r; j++)
        for (i = j + 1; i < r; i++) x[(size_t)j * r + i] = 0;
}

static double rite__absmax_d(const double *x, size_t n)
{
    size_t i;
    double m = 0;
    for (i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* y = x / 2^e in the layer precision, with the power of two 2^e (returned)
   just large enough that y cannot overflow there: a product with y, times
   2^e, is then finite whenever its result is. */
static double rite__to_layer_scaled(const rite_layer *l, const double *x, int n, void *y)
{
    double big = rite__top(l) / 4, m = rite__absmax_d(x, (size_t)n), p = 1;
    int e;
    if (m > big) {
        frexp(m / big, &e);
        p = ldexp(1.0, e);
    }
    rite__from_double(l, x, n, p, y);
    return p;
}

/* ---- SPEC 1: T and T^+ ---- */

/* T^+ from T with singular values sigma <= r eps sigma_max counted as zero.
   When none is, T^+ = T^-1, which the triangular inverse gives at a fraction
   of the cost of the singular vectors. */
static rite_status rite__pinv(rite_layer *l, const double *T, double *Tp, double *cond)
{
    int r = l->desc.r, i, p;
    size_t rr = (size_t)r * (size_t)r;
    double *A = l->T1, *Usv = l->T2, *VsT = l->T3, *sv = l->lam;
    double tol, eps = rite__eps(l);
    lapack_int info;
    memcpy(A, T, rr * sizeof(double));
    info = LAPACKE_dgesvd_work(LAPACK_COL_MAJOR, 'N', 'N', r, r, A, r, sv, Usv, r, VsT, r, l->dwork, l->ldwork);
    if (info != 0) return RITE_ERR_LAPACK;
    tol = (double)r * eps * sv[0];
    *cond = sv[r - 1] > 0 ? sv[0] / sv[r - 1] : HUGE_VAL;
    if (sv[r - 1] > tol) {
        memcpy(Tp, T, rr * sizeof(double));
        info = LAPACKE_dtrtri_work(LAPACK_COL_MAJOR, 'U', 'N', r, Tp, r);
        return info != 0 ? RITE_ERR_LAPACK : RITE_OK;
    }
    memcpy(A, T, rr * sizeof(double));
    info = LAPACKE_dgesvd_work(LAPACK_COL_MAJOR, 'A', 'A', r, r, A, r, sv, Usv, r, VsT, r, l->dwork, l->ldwork);
    if (info != 0) return RITE_ERR_LAPACK;
    tol = (double)r * eps * sv[0];
    for (p = 0; p < r; p++) {
        double inv = sv[p] > tol ? 1.0 / sv[p] : 0.0;
        for (i = 0; i < r; i++) VsT[(size_t)i * r + p] *= inv;   /* row p of V^T */
    }
    rite__dgemm(CblasTrans, CblasTrans, r, 1.0, VsT, Usv, 0.0, Tp);
    return RITE_OK;
}

/* Householder QR of side s's factor (copied into Xw): T, then T^+. */
static rite_status rite__householder(rite_layer *l, rite__side *s, rite__prep *p)
{
    int r = l->desc.r;
    if (rite__geqrf(l, s) != 0) return RITE_ERR_LAPACK;
    rite__to_double(l, s->Xw, s->k, p->T);
    rite__zero_lower(p->T, r);
    /* a factor so large that its norms overflow: refuse before LAPACK sees it */
    if (!rite__all_finite_d(p->T, (size_t)r * (size_t)r)) return RITE_ERR_NONFINITE_UPDATE;
    return rite__pinv(l, p->T, p->Tp, &p->cond);
}

/* Float layers: T from the Cholesky factor of the Gram matrix X^T X (formed
   in double, in p->T), while its condition estimate shows it as accurate as
   float Householder QR (U = X T^-1 then loses orthogonality ~ cond^2 2^-53);
   else Householder. */
static rite_status rite__factor_T(rite_layer *l, rite__side *s, rite__prep *p)
{
    int r = l->desc.r;
    double rcond = 0;
    lapack_int info;
    if (RITE__F32(l)) {
        info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'U', r, p->T, r);
        if (info == 0) {
            rite__zero_lower(p->T, r);
            info = LAPACKE_dtrcon_work(LAPACK_COL_MAJOR, '1', 'U', 'N', r, p->T, r, &rcond, l->dwork, l->iwork);
        }
        if (info == 0 && rcond * l->chol_cond >= 1.0) {
            p->cond = 1.0 / rcond;
            memcpy(p->Tp, p->T, (size_t)r * (size_t)r * sizeof(double));
            info = LAPACKE_dtrtri_work(LAPACK_COL_MAJOR, 'U', 'N', r, p->Tp, r);
            if (info == 0) return RITE_OK;
        }
    }
    return rite__householder(l, s, p);
}

/* SPEC 2-3 for side s: the unmagnified gradient gbar = G T_o^+ through
   gbar^T gbar and its sum of squares; skipping. A float layer has G^T G in
   p->GG already; a double layer forms gbar in Xw. */
static void rite__unmagnified(rite_layer *l, rite__side *s, rite__prep *p, const rite__prep *po)
{
    int r = l->desc.r;
    size_t kr = (size_t)s->k * (size_t)r, rr = (size_t)r * (size_t)r;
    double ss = 0;
    int i;
    p->gg_overflow = 0;
    if (RITE__F32(l)) {
        /* gbar^T gbar = T_o^+T (G^T G) T_o^+ */
        rite__symfill(p->GG, r);
        rite__dgemm(CblasNoTrans, CblasNoTrans, r, 1.0, p->GG, po->Tp, 0.0, l->T1);
        rite__dgemm(CblasTrans, CblasNoTrans, r, 1.0, po->Tp, l->T1, 0.0, p->GG);
        for (i = 0; i < r; i++) ss += p->GG[(size_t)i * r + i];
    } else {
        rite__gemm(l, s->layout == RITE_RANK_LAST ? CblasTrans : CblasNoTrans, CblasNoTrans, s->k, r, r, 1.0,
                   s->G, s->ldg, po->Tp, r, 0.0, s->Xw, s->k);
        ss = rite__sumsq(l, s->Xw, kr);
        cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, r, s->k, 1.0, (const double *)s->Xw, s->k, 0.0,
                    p->GG, r);
        rite__symfill(p->GG, r);
        p->gg_overflow = !rite__all_finite_d(p->GG, rr);
    }
    /* SPEC 3: skip a factor whose unmagnified rms exceeds the threshold, or
       cannot be represented */
    p->skipped = l->cfg.skip > 0 && !(sqrt(ss / (double)kr) <= l->cfg.skip);
    p->ss = p->skipped ? 0 : ss;
}

static rite_status rite__lorarite_prepare(rite_layer *l, double *sumsq)
{
    int side, set = 1 - l->pend;
    rite_status st;
    if (RITE__F32(l)) {   /* Gram matrices of X and G, checking them on the way */
        for (side = 0; side < 2; side++) {
            rite__side *s = &l->s[side];
            rite__prep *p = &s->pre[set];
            if (!rite__gram_f32(l, (const float *)s->X, s->layout, s->ld, s->k, p->T, &p->xmax, &p->xnorm))
                return rite__say(l->msg, sizeof l->msg, RITE_ERR_NONFINITE_FACTOR, "%s holds NaN or Inf",
                                 l->names[side]);
        }
        for (side = 0; side < 2; side++) {
            rite__side *s = &l->s[side];
            double gmax;
            if (!rite__gram_f32(l, (const float *)s->G, s->layout, s->ldg, s->k, s->pre[set].GG, &gmax,
                                &s->pre[set].gnorm))
                return rite__say(l->msg, sizeof l->msg, RITE_ERR_NONFINITE_GRADIENT, "%s holds NaN or Inf",
                                 l->names[2 + side]);
        }
    } else {
        for (side = 0; side < 2; side++) {   /* one pass a buffer: the largest |x|, NaN if not finite */
            rite__side *s = &l->s[side];
            s->pre[set].xmax = rite__absmax_f64((const double *)s->X, s->layout, s->ld, s->k, l->desc.r);
            if (!(s->pre[set].xmax <= DBL_MAX))
                return rite__say(l->msg, sizeof l->msg, RITE_ERR_NONFINITE_FACTOR, "%s holds NaN or Inf",
                                 l->names[side]);
        }
        for (side = 0; side < 2; side++) {
            rite__side *s = &l->s[side];
            double kr = (double)s->k * l->desc.r;
            double gmax = rite__absmax_f64((const double *)s->G, s->layout, s->ldg, s->k, l->desc.r);
            if (!(gmax <= DBL_MAX))
                return rite__say(l->msg, sizeof l->msg, RITE_ERR_NONFINITE_GRADIENT, "%s holds NaN or Inf",
                                 l->names[2 + side]);
            s->pre[set].xnorm = sqrt(kr) * s->pre[set].xmax;
            s->pre[set].gnorm = sqrt(kr) * gmax;
        }
    }
    /* SPEC 1 */
    for (side = 0; side < 2; side++) {
        st = rite__factor_T(l, &l->s[side], &l->s[side].pre[set]);
        if (st != RITE_OK)
            return rite__say(l->msg, sizeof l->msg, st, "the QR of %s: %s", l->names[side],
                             st == RITE_ERR_LAPACK ? "LAPACK failed" : "its norms overflow");
    }
    /* SPEC 2-3 */
    for (side = 0; side < 2; side++)
        rite__unmagnified(l, &l->s[side], &l->s[side].pre[set], &l->s[1 - side].pre[set]);
    *sumsq = l->s[0].pre[set].ss + l->s[1].pre[set].ss;
    if (!(*sumsq <= DBL_MAX))
        return rite__say(l->msg, sizeof l->msg, RITE_ERR_NONFINITE_UPDATE,
                         "the unmagnified gradients' sum of squares overflows (skip is off)");
    l->pend = set;
    return RITE_OK;
}

/* SPEC 4: P = U_o^T U_o,prev. With X_o = U_o T_o this is T_o^+T (X_o^T U_o,prev)
   = T_o^+T C_o, where C_o was formed when the previous step wrote X_o (with
   keep_basis, X_o^T U_o,prev is formed from the kept basis). Zero at the
   first step; the identity after rite_factors_changed. */
static void rite__transport(rite_layer *l, const rite__side *o, const rite__prep *po, double *P)
{
    int r = l->desc.r, i;
    size_t rr = (size_t)r * (size_t)r;
    memset(P, 0, rr * sizeof(double));
    if (l->steps == 0) return;
    if (l->desc.keep_basis) {
        rite__gemm(l, o->layout == RITE_RANK_LAST ? CblasNoTrans : CblasTrans, CblasNoTrans, r, r, o->k, 1.0, o->X,
                   o->ld, o->U_prev, o->k, 0.0, l->WT, r);
        rite__to_double(l, l->WT, r, l->T3);
        rite__dgemm(CblasTrans, CblasNoTrans, r, 1.0, po->Tp, l->T3, 0.0, P);
    } else if (l->stale) {
        for (i = 0; i < r; i++) P[(size_t)i * r + i] = 1.0;
    } else {
        rite__dgemm(CblasTrans, CblasNoTrans, r, 1.0, po->Tp, o->C, 0.0, P);
    }
}

/* SPEC 7: V~ = sym(P V P^T) (non-finite -> 0) into Vt, and
   V_new = sym(b2h V~ + (1 - b2h) (scale gbar)^T (scale gbar) / k) */
static rite_status rite__second_moment(rite_layer *l, rite__side *s, const rite__prep *p, const rite__prep *po,
                                       const double *P, double *Vt, double scale, double b2h)
{
    int r = l->desc.r, i, j, q;
    size_t rr = (size_t)r * (size_t)r;
    double *GG = l->T2, c = scale * scale / s->k;
    for (j = 0, q = 0; j < r; j++)   /* unpack V */
        for (i = 0; i <= j; i++, q++) l->V[(size_t)j * r + i] = l->V[(size_t)i * r + j] = s->Vp[q];
    memset(Vt, 0, rr * sizeof(double));
    if (l->steps > 0) {
        rite__dgemm(CblasNoTrans, CblasNoTrans, r, 1.0, P, l->V, 0.0, l->T3);
        rite__dgemm(CblasNoTrans, CblasTrans, r, 1.0, l->T3, P, 0.0, Vt);
        rite__sym(Vt, r);
        for (q = 0; q < (int)rr; q++)
            if (Vt[q] * 0 != 0) Vt[q] = 0;
    }
    if (p->skipped) {
        memset(GG, 0, rr * sizeof(double));
    } else if (p->gg_overflow && scale != 1.0) {
        /* gbar^T gbar overflowed before the clipping factor could act: clip
           first, as the SPEC's order does (double layers; gbar again in Xw) */
        rite__gemm(l, s->layout == RITE_RANK_LAST ? CblasTrans : CblasNoTrans, CblasNoTrans, s->k, r, r, scale,
                   s->G, s->ldg, po->Tp, r, 0.0, s->Xw, s->k);
        cblas_dsyrk(CblasColMajor, CblasUpper, CblasTrans, r, s->k, 1.0 / s->k, (const double *)s->Xw, s->k, 0.0,
                    GG, r);
        rite__symfill(GG, r);
    } else {
        for (q = 0; q < (int)rr; q++) GG[q] = c * p->GG[q];
    }
    for (q = 0; q < (int)rr; q++) s->Vn[q] = b2h * Vt[q] + (1.0 - b2h) * GG[q];
    rite__sym(s->Vn, r);
    return rite__all_finite_d(s->Vn, rr) ? RITE_OK : RITE_ERR_NONFINITE_UPDATE;
}

/* SPEC 8: escaped mass, from the old second moment V and the transported Vt */
static rite_status rite__escaped_mass(rite_layer *l, rite__side *s, const double *Vt, double b2h)
{
    int r = l->desc.r, q;
    size_t rr = (size_t)r * (size_t)r;
    double e1 = 0, e2, tr_old = 0, tr_t = 0;
    lapack_int info;
    s->rho_n = 0;
    if (!l->cfg.escape) return RITE_OK;
    memcpy(l->W, l->V, rr * sizeof(double));
    info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'N', 'U', r, l->W, r, l->lam2, l->dwork, l->ldwork, l->iwork,
                               l->liwork);
    if (info != 0) return RITE_ERR_LAPACK;
    memcpy(l->W, Vt, rr * sizeof(double));
    info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'N', 'U', r, l->W, r, l->lam, l->dwork, l->ldwork, l->iwork,
                               l->liwork);
    if (info != 0) return RITE_ERR_LAPACK;
    for (q = 0; q < r; q++) {
        double d = l->lam2[q] - l->lam[q];   /* both ascending */
        if (d > e1) e1 = d;
        tr_old += l->V[(size_t)q * r + q];
        tr_t += Vt[(size_t)q * r + q];
    }
    e2 = tr_old - tr_t > 0 ? tr_old - tr_t : 0;
    s->rho_n = b2h * (s->rho + (e1 < e2 ? e1 : e2));
    return s->rho_n <= DBL_MAX ? RITE_OK : RITE_ERR_NONFINITE_UPDATE;
}

/* SPEC 9: Q = sym(W diag(1 / (sqrt(max(lam, 0) + rho + eps_root) + eps)) W^T) */
static rite_status rite__preconditioner(rite_layer *l, const rite__side *s, double *Q)
{
    int r = l->desc.r, i, q;
    double root_eps = l->cfg.eps_root, *W = l->W, *Wd = l->T3, *lam = l->lam;
    lapack_int info;
    memcpy(W, s->Vn, (size_t)r * (size_t)r * sizeof(double));
    info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', r, W, r, lam, l->dwork, l->ldwork, l->iwork, l->liwork);
    if (info != 0) return RITE_ERR_LAPACK;
    if (l->cfg.relative_eps) root_eps *= lam[r - 1] > 0 ? lam[r - 1] : 0;
    for (q = 0; q < r; q++) {
        double lp = lam[q] > 0 ? lam[q] : 0;   /* (fix) clamp round-off negatives */
        double d = 1.0 / (sqrt(lp + s->rho_n + root_eps) + l->cfg.eps);
        for (i = 0; i < r; i++) Wd[(size_t)q * r + i] = W[(size_t)q * r + i] * d;
    }
    rite__dgemm(CblasNoTrans, CblasTrans, r, 1.0, Wd, W, 0.0, Q);
    rite__sym(Q, r);
    return RITE_OK;
}

/* Mn += alpha op(A) B for k x r Mn (column-major), A in storage (lay, lda),
   B an r x r double matrix put in the layer precision (scaled into range) */
static void rite__times_rr(rite_layer *l, int k, double alpha, const void *A, rite_layout lay, int lda,
                           const double *B, double beta, void *Mn)
{
    int r = l->desc.r;
    double p = rite__to_layer_scaled(l, B, r * r, l->WT);
    rite__gemm(l, lay == RITE_RANK_LAST ? CblasTrans : CblasNoTrans, CblasNoTrans, k, r, r, alpha * p, A, lda,
               l->WT, r, beta, Mn, k);
}

/* SPEC 9-10: Mn = b1h M P^T + (1 - b1h) S with S = (scale gbar) Q, that is
   M (b1h P^T) + G ((1 - b1h) scale T_o^+ Q); then SPEC 11's cap factor. */
static rite_status rite__first_moment(rite_layer *l, rite__side *s, const rite__prep *p, const rite__prep *po,
                                      const double *P, const double *Q, double scale, double b1h)
{
    int r = l->desc.r, i, j, has_m = l->steps > 0 && b1h != 0;
    size_t kr = (size_t)s->k * (size_t)r;
    double *Wg = l->T1, *Wm = l->T2, ss;
    if (p->skipped) memset(Wg, 0, (size_t)r * (size_t)r * sizeof(double));
    else rite__dgemm(CblasNoTrans, CblasNoTrans, r, (1.0 - b1h) * scale, po->Tp, Q, 0.0, Wg);
    for (j = 0; j < r; j++)
        for (i = 0; i < r; i++) Wm[(size_t)j * r + i] = b1h * P[(size_t)i * r + j];
    rite__times_rr(l, s->k, 1.0, s->G, s->layout, s->ldg, Wg, 0.0, s->Mn);
    if (has_m) rite__times_rr(l, s->k, 1.0, s->M, RITE_RANK_FIRST, s->k, Wm, 1.0, s->Mn);
    ss = rite__sumsq(l, s->Mn, kr);
    if (!(ss <= DBL_MAX)) {
        /* an overflow: redo it in the SPEC's order, S's non-finite entries -> 0 */
        if (p->skipped) memset(Wg, 0, (size_t)r * (size_t)r * sizeof(double));
        else rite__dgemm(CblasNoTrans, CblasNoTrans, r, scale, po->Tp, Q, 0.0, Wg);
        rite__times_rr(l, s->k, 1.0, s->G, s->layout, s->ldg, Wg, 0.0, s->Mn);
        rite__zap(l, s->Mn, kr);
        rite__scal(l, kr, 1.0 - b1h, s->Mn);
        if (has_m) rite__times_rr(l, s->k, 1.0, s->M, RITE_RANK_FIRST, s->k, Wm, 1.0, s->Mn);
        ss = rite__sumsq(l, s->Mn, kr);
        if (!(ss <= DBL_MAX)) return RITE_ERR_NONFINITE_UPDATE;
    }
    s->mn2 = ss;
    /* SPEC 11: cap the update (not the stored moment) */
    s->capf = 1.0;
    if (l->cfg.cap > 0) {
        double rms = sqrt(ss / (double)kr);
        if (rms / l->cfg.cap > 1) s->capf = l->cfg.cap / rms;
    }
    return RITE_OK;
}

/* For SPEC 16 (double layers): E = Mn^T X (r x r), before X is written */
static void rite__cross(rite_layer *l, rite__side *s)
{
    int r = l->desc.r;
    rite__gemm(l, CblasTrans, s->layout == RITE_RANK_LAST ? CblasTrans : CblasNoTrans, r, r, s->k, 1.0, s->Mn,
               s->k, s->X, s->ld, 0.0, l->WT, r);
    rite__to_double(l, l->WT, r, s->E);
}

/* SPEC 12-14 as one product: X <- a X - Mn Bu with a = 1 - lr wd and
   Bu = lr capf T_o^+T. dst is the caller's buffer (storage lay, ld) or a
   column-major copy of X. Nothing else may change it. */
static void rite__descend_product(rite_layer *l, const rite__side *s, const rite__prep *po, void *dst,
                                  rite_layout lay, int ld)
{
    int r = l->desc.r, i, j;
    double *Bu = l->T3, a = 1.0 - l->cfg.lr * l->cfg.weight_decay, p;
    for (j = 0; j < r; j++)
        for (i = 0; i < r; i++) Bu[(size_t)j * r + i] = l->cfg.lr * s->capf * po->Tp[(size_t)i * r + j];
    p = rite__to_layer_scaled(l, Bu, r * r, l->WT);
    if (lay == RITE_RANK_FIRST)   /* X is k x r column-major */
        rite__gemm(l, CblasNoTrans, CblasNoTrans, s->k, r, r, -p, s->Mn, s->k, l->WT, r, a, dst, ld);
    else                          /* X^T is r x k column-major: X^T <- a X^T - Bu^T Mn^T */
        rite__gemm(l, CblasTrans, CblasTrans, r, s->k, r, -p, l->WT, r, s->Mn, s->k, a, dst, ld);
}

/* 1 when the product of rite__descend_product cannot overflow: its scalars
   a and lr capf T_o^+ are representable in the layer precision as they are
   (no rescaling), and every new element is at most
   |a| max|X| + lr capf ||Mn||_F ||T_o^+||_F, below the largest number / 4 */
static int rite__descend_safe(const rite_layer *l, const rite__side *s, const rite__prep *p, const rite__prep *po)
{
    int r = l->desc.r;
    double a = fabs(1.0 - l->cfg.lr * l->cfg.weight_decay), big = rite__top(l);
    double tn = sqrt(cblas_ddot(r * r, po->Tp, 1, po->Tp, 1));
    double bu = l->cfg.lr * s->capf * rite__absmax_d(po->Tp, (size_t)r * (size_t)r);
    double prod = l->cfg.lr * s->capf * sqrt(s->mn2) * tn;
    return a <= big / 4 && bu <= big / 4 && prod <= big / 4 && a * p->xmax + prod <= big / 4;
}

/* SPEC 16: what the next step needs of this step's basis U = X T^+:
   C = X_new^T U = f ((1 - lr wd) X^T - lr D^T) X T^+ = f ((1 - lr wd) T^T - lr E_D T^+)
   with D = capf Mn T_o^+T, E_D = D^T X = capf T_o^+ E, as X^T X T^+ = T^T. */
static rite_status rite__next_basis(rite_layer *l, rite__side *s, const rite__prep *p, const rite__prep *po,
                                    double f)
{
    int r = l->desc.r, i, j;
    double a = f * (1.0 - l->cfg.lr * l->cfg.weight_decay), b = -f * l->cfg.lr;
    rite__dgemm(CblasNoTrans, CblasNoTrans, r, s->capf, po->Tp, s->E, 0.0, l->T1);
    rite__dgemm(CblasNoTrans, CblasNoTrans, r, 1.0, l->T1, p->Tp, 0.0, l->T2);
    for (j = 0; j < r; j++)
        for (i = 0; i < r; i++) s->Cn[(size_t)j * r + i] = a * p->T[(size_t)i * r + j] + b * l->T2[(size_t)j * r + i];
    return rite__all_finite_d(s->Cn, (size_t)r * (size_t)r) ? RITE_OK : RITE_ERR_NONFINITE_UPDATE;
}

/* ---- a float layer's k x r products, by tiles of rows ---- */

/* W (r x r, double, column-major; the matrix of a product X W) -> wf, r rows
   of rp floats, divided by the power of two (returned) that keeps it finite */
static double rite__weights_f32(const rite_layer *l, const double *W, float *wf)
{
    int r = l->desc.r, rp = RITE__PAD16(r), q, j;
    double big = (double)FLT_MAX / 4, m = rite__absmax_d(W, (size_t)r * (size_t)r), p = 1;
    if (m > big) {
        frexp(m / big, &q);
        p = ldexp(1.0, q);
    }
    m = 1 / p;   /* a power of two: exact */
    for (q = 0; q < r; q++) {
        for (j = 0; j < r; j++) wf[(size_t)q * rp + j] = (float)(W[(size_t)j * r + q] * m);
        for (; j < rp; j++) wf[(size_t)q * rp + j] = 0;
    }
    return p;
}

/* Rows [i0, i1) of Mn into c (row stride ldc):
   c = G wg pg [non-finite -> 0, times (1 - b1h): spec_order] + M wm pm.
   M is row-major k x r. */
static void rite__moment_rows_f32(rite_layer *l, const rite__side *s, int i0, int i1, const float *wg, double pg,
                                  const float *wm, double pm, int has_m, int spec_order, double b1h, float *c,
                                  size_t ldc)
{
    int r = l->desc.r, rp = RITE__PAD16(r), n = i1 - i0, i, j;
    float *t = l->ftile + 2 * (size_t)RITE__ROWS_OF(r) * (size_t)rp;
    const float *g = (const float *)s->G, *m = (const float *)s->M + (size_t)i0 * r;
    size_t rs = s->layout == RITE_RANK_LAST ? (size_t)s->ldg : 1, cs = s->layout == RITE_RANK_LAST ? 1 : (size_t)s->ldg;
    rite__rows_times(n, r, rp, g + (size_t)i0 * rs, rs, cs, wg, 0.0f, c, ldc);
    if (pg != 1 || spec_order)
        for (i = 0; i < n; i++)
            for (j = 0; j < r; j++) {
                float *v = c + (size_t)i * ldc + j;
                *v = (float)(*v * pg);
                if (spec_order) *v = *v * 0 != 0 ? 0.0f : (float)(*v * (1.0 - b1h));
            }
    if (!has_m) return;
    if (pm == 1) {
        rite__rows_times(n, r, rp, m, (size_t)r, 1, wm, 1.0f, c, ldc);
        return;
    }
    rite__rows_times(n, r, rp, m, (size_t)r, 1, wm, 0.0f, t, (size_t)rp);
    for (i = 0; i < n; i++)
        for (j = 0; j < r; j++) c[(size_t)i * ldc + j] += (float)(t[(size_t)i * rp + j] * pm);
}

/* SPEC 9-10 for a float layer: Mn = M (b1h P^T) + G ((1 - b1h) scale T_o^+ Q)
   into s->Mn (row-major k x r), its sum of squares, SPEC 11's cap factor,
   and E = Mn^T X for SPEC 16, in one pass over M, G and X. */
static rite_status rite__first_moment_f32(rite_layer *l, rite__side *s, const rite__prep *p, const rite__prep *po,
                                          const double *P, const double *Q, double scale, double b1h)
{
    int r = l->desc.r, rp = RITE__PAD16(r), i, j, i0, i1, pass, has_m = l->steps > 0 && b1h != 0;
    int direct = r == rp, direct_x = direct && s->layout == RITE_RANK_LAST;
    size_t kr = (size_t)s->k * (size_t)r;
    double *Wg = l->T1, *Wm = l->T2, ss = 0, pg, pm;
    float *wg = l->WF, *wm = l->WF + (size_t)r * (size_t)rp, *tile = l->ftile, *xt = l->ftile + (size_t)RITE__ROWS_OF(r) * rp;
    float *mn = (float *)s->Mn;
    for (j = 0; j < r; j++)
        for (i = 0; i < r; i++) Wm[(size_t)j * r + i] = b1h * P[(size_t)i * r + j];
    pm = rite__weights_f32(l, Wm, wm);
    for (pass = 0; pass < 2; pass++) {   /* pass 1: an overflow, redone in the SPEC's order */
        if (p->skipped) memset(Wg, 0, (size_t)r * (size_t)r * sizeof(double));
        else rite__dgemm(CblasNoTrans, CblasNoTrans, r, pass ? scale : (1.0 - b1h) * scale, po->Tp, Q, 0.0, Wg);
        pg = rite__weights_f32(l, Wg, wg);
        memset(s->E, 0, (size_t)r * (size_t)r * sizeof(double));
        ss = 0;
        for (i0 = 0; i0 < s->k; i0 = i1) {
            float *c = direct ? mn + (size_t)i0 * r : tile;
            size_t ldc = direct ? (size_t)r : (size_t)rp;
            i1 = i0 + RITE__ROWS_OF(r) < s->k ? i0 + RITE__ROWS_OF(r) : s->k;
            rite__moment_rows_f32(l, s, i0, i1, wg, pg, wm, pm, has_m, pass, b1h, c, ldc);
            ss += rite__sumsq_rows(c, ldc, i1 - i0, r);
            if (!direct)
                for (i = 0; i < i1 - i0; i++)
                    memcpy(mn + (size_t)(i0 + i) * r, tile + (size_t)i * rp, (size_t)r * sizeof(float));
            if (l->desc.keep_basis) continue;
            if (direct_x) {
                rite__rows_cross(i1 - i0, r, c, ldc, (const float *)s->X + (size_t)i0 * s->ld, (size_t)s->ld, s->E);
            } else {
                rite__pack_rows((const float *)s->X, s->layout, s->ld, i0, i1, r, rp, xt);
                rite__rows_cross(i1 - i0, r, c, ldc, xt, (size_t)rp, s->E);
            }
        }
        if (ss <= DBL_MAX) break;
        if (pass) return RITE_ERR_NONFINITE_UPDATE;
    }
    s->mn2 = ss;
    s->capf = 1.0;   /* SPEC 11: cap the update (not the stored moment) */
    if (l->cfg.cap > 0) {
        double rms = sqrt(ss / (double)kr);
        if (rms / l->cfg.cap > 1) s->capf = l->cfg.cap / rms;
    }
    return rite__all_finite_d(s->E, (size_t)r * (size_t)r) ? RITE_OK : RITE_ERR_NONFINITE_UPDATE;
}

/* SPEC 12-14 for a float layer: X_new = (1 - lr wd) X - lr capf Mn T_o^+T,
   by tiles. write = 1: X_new f into the caller's X (in place, row by row,
   where the storage allows); write = 0: nothing written, the sum of squares
   of X_new returned (not finite if an element is not). Both form the same
   numbers. */
static double rite__descend_f32(rite_layer *l, rite__side *s, const rite__prep *po, int write, float f)
{
    int r = l->desc.r, rp = RITE__PAD16(r), i, j, i0, i1;
    double *Bu = l->T3, pb, ss = 0;
    float *wb = l->WF, *c = l->ftile, *t = l->ftile + (size_t)RITE__ROWS_OF(r) * rp, *x = (float *)s->X;
    float a = (float)(1.0 - l->cfg.lr * l->cfg.weight_decay);
    const float *mn = (const float *)s->Mn;
    for (j = 0; j < r; j++)
        for (i = 0; i < r; i++) Bu[(size_t)j * r + i] = -l->cfg.lr * s->capf * po->Tp[(size_t)i * r + j];
    pb = rite__weights_f32(l, Bu, wb);
    for (i0 = 0; i0 < s->k; i0 = i1) {
        int n;
        i1 = i0 + RITE__ROWS_OF(r) < s->k ? i0 + RITE__ROWS_OF(r) : s->k;
        n = i1 - i0;
        if (write && f == 1.0f && pb == 1 && r == rp && s->layout == RITE_RANK_LAST) {
            rite__rows_times(n, r, rp, mn + (size_t)i0 * r, (size_t)r, 1, wb, a, x + (size_t)i0 * s->ld,
                             (size_t)s->ld);
            continue;
        }
        rite__pack_rows(x, s->layout, s->ld, i0, i1, r, rp, c);
        if (pb == 1) {
            rite__rows_times(n, r, rp, mn + (size_t)i0 * r, (size_t)r, 1, wb, a, c, (size_t)rp);
        } else {
            rite__rows_times(n, r, rp, mn + (size_t)i0 * r, (size_t)r, 1, wb, 0.0f, t, (size_t)rp);
            for (i = 0; i < n * rp; i++) c[i] = (float)(a * c[i] + pb * t[i]);
        }
        if (write) rite__unpack_rows(c, i0, i1, r, rp, f, x, s->layout, s->ld);
        else ss += rite__sumsq_rows(c, (size_t)rp, n, r);
    }
    return ss;
}

/* SPEC 12-15 on the careful path: the new factors formed without being
   written (float) or into copies (double, in Xw), checked, and the balance
   factors f (SPEC 15) */
static rite_status rite__careful_factors(rite_layer *l, double *f)
{
    int side, r = l->desc.r;
    double nrm[2], sab;
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        const rite__prep *po = &l->s[1 - side].pre[l->pend];
        if (RITE__F32(l)) {
            double ss = rite__descend_f32(l, s, po, 0, 1.0f);
            if (!(ss <= DBL_MAX)) return RITE_ERR_NONFINITE_UPDATE;
            nrm[side] = sqrt(ss) + 1e-6;
        } else {
            rite__load_f64((const double *)s->X, s->layout, s->ld, s->k, r, (double *)s->Xw);
            rite__descend_product(l, s, po, s->Xw, RITE_RANK_FIRST, s->k);
            if (!rite__finite(l, s->Xw, RITE_RANK_FIRST, s->k, s->k)) return RITE_ERR_NONFINITE_UPDATE;
            nrm[side] = rite__nrm2(l, s->Xw, (size_t)s->k * (size_t)r) + 1e-6;
        }
    }
    if (!l->cfg.balance) return RITE_OK;
    sab = sqrt(nrm[0] * nrm[1]);   /* SPEC 15: balance the factor norms */
    /* an element of X_new f is at most ||X_new||_F f = sab */
    if (!(sab <= rite__top(l) / 2)) return RITE_ERR_NONFINITE_UPDATE;
    f[0] = sab / nrm[0];
    f[1] = sab / nrm[1];
    return RITE_OK;
}

/* The commit of a LoRA-RITE step: nothing here can fail. SPEC 14 (the new
   factors, straight or from the checked copies times f), 10, 7 and 16. */
static void rite__lorarite_commit(rite_layer *l, int careful, const double *f)
{
    int side, r = l->desc.r, i, j, q;
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        const rite__prep *po = &l->s[1 - side].pre[l->pend];
        if (l->desc.keep_basis)   /* SPEC 16: this step's basis U = X T^+, kept before X changes */
            rite__times_rr(l, s->k, 1.0, s->X, s->layout, s->ld, s->pre[l->pend].Tp, 0.0, s->U_prev);
        if (RITE__F32(l)) {
            rite__descend_f32(l, s, po, 1, (float)f[side]);
        } else {
            if (!careful) rite__descend_product(l, s, po, s->X, s->layout, s->ld);
            else rite__store_f64((const double *)s->Xw, s->k, r, f[side], (double *)s->X, s->layout, s->ld);
        }
        memcpy(s->M, s->Mn, (size_t)s->k * (size_t)r * l->es);   /* SPEC 10 */
        for (j = 0, q = 0; j < r; j++)                             /* SPEC 7, packed */
            for (i = 0; i <= j; i++, q++) s->Vp[q] = s->Vn[(size_t)j * r + i];
        s->m2 = s->mn2;
        if (!l->desc.keep_basis) memcpy(s->C, s->Cn, (size_t)r * (size_t)r * sizeof(double));   /* SPEC 16 */
        s->rho = s->rho_n;
    }
    l->stale = 0;
}

/* ||x||_F of n doubles, without overflow */
static double rite__fro(const double *x, size_t n)
{
    return cblas_dnrm2((int)n, x, 1);
}

/* 1 when apply's second phase cannot fail: bounds, from r x r data, of
   every number it forms (Mn and its partial sums, E, the new factors, C)
   stay below a quarter of the largest number of the precision they are
   formed in. Norms of products are bounded by products of Frobenius norms;
   the 1.01 covers rounding. A model whose layers all pass steps them in one
   pass; a layer that does not is first run without writing (a dry run). */
static int rite__lorarite_bound(rite_layer *l)
{
    int side, r = l->desc.r;
    size_t rr = (size_t)r * (size_t)r;
    double big = rite__top(l) / 4, lr = l->cfg.lr;
    double b1h = rite__bhat(l->cfg.beta1, l->steps), a = fabs(1.0 - lr * l->cfg.weight_decay);
    double xnb[2], t[2], tt[2], f = 1.0, dmax = DBL_MAX / 4;
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        const rite__prep *p = &s->pre[l->pend], *po = &l->s[1 - side].pre[l->pend];
        double tpo = rite__fro(po->Tp, rr), tp = rite__fro(p->Tp, rr);
        double wg = p->skipped ? 0 : (1.0 - b1h) * l->scale * tpo * rite__fro(s->Q, rr);
        double wm = l->steps > 0 && b1h != 0 ? b1h * rite__fro(s->P, rr) : 0;
        double mnb = 1.01 * (p->gnorm * wg + sqrt(s->m2) * wm), eb = 1.01 * mnb * p->xnorm;
        xnb[side] = 1.01 * (a * p->xnorm + lr * mnb * tpo);
        t[side] = rite__fro(p->T, rr);
        tt[side] = 1.01 * tpo * eb * tp;   /* SPEC 16's T_o^+ E T^+ */
        if (!(mnb <= big && mnb * mnb <= dmax && eb <= big && xnb[side] <= big && a <= big && lr * tpo <= big &&
              tpo * eb <= dmax && tt[side] <= dmax))
            return 0;
    }
    if (l->cfg.balance) {   /* SPEC 15's factors: at most sqrt(a b) / 1e-6 */
        f = sqrt((xnb[0] + 1e-6) * (xnb[1] + 1e-6)) / 1e-6;
        if (!(f <= dmax)) return 0;
    }
    /* SPEC 16's C = f (1 - lr wd) T^T - f lr T_o^+ E T^+, each scalar and term */
    for (side = 0; side < 2; side++)
        if (!(f * a <= dmax && f * lr <= dmax && f * a * t[side] + f * lr * tt[side] <= dmax)) return 0;
    return 1;
}

/* Apply's first phase: SPEC 5, and per factor SPEC 4 and 6-9, r x r work
   that keeps its results (P, Vn, rho_n, Q) in the layer; then the bound
   that says whether the second phase can fail. Changes no state. */
static rite_status rite__lorarite_plan(rite_layer *l, double total)
{
    const rite_config *c = &l->cfg;
    double b2h = rite__bhat(c->beta2, l->steps);
    int side;
    rite_status st;
    l->scale = 1.0;
    if (c->clip > 0) {   /* SPEC 5: global clipping of the unmagnified gradients */
        double gamma = sqrt(total);
        if (gamma > c->clip) l->scale = c->clip / gamma;
    }
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        const rite__prep *p = &s->pre[l->pend], *po = &l->s[1 - side].pre[l->pend];
        rite__transport(l, &l->s[1 - side], po, s->P);
        st = rite__second_moment(l, s, p, po, s->P, l->Vt, l->scale, b2h);
        if (st == RITE_OK) st = rite__escaped_mass(l, s, l->Vt, b2h);
        if (st == RITE_OK) st = rite__preconditioner(l, s, s->Q);
        if (st != RITE_OK) return st;
    }
    l->safe = rite__lorarite_bound(l);
    return RITE_OK;
}

/* Apply's second phase: SPEC 10-16, the k x r passes. With commit = 0 it
   only finds out whether the step fails (a model's dry run); with
   commit = 1 it writes the factors and the state unless it fails first.
   Both compute the same numbers. */
static rite_status rite__lorarite_run(rite_layer *l, int commit)
{
    double b1h = rite__bhat(l->cfg.beta1, l->steps), f[2] = {1.0, 1.0};
    int side, careful = l->cfg.balance;
    rite_status st;
    for (side = 0; side < 2; side++) {   /* SPEC 10-11 */
        rite__side *s = &l->s[side];
        const rite__prep *p = &s->pre[l->pend], *po = &l->s[1 - side].pre[l->pend];
        if (RITE__F32(l)) {
            st = rite__first_moment_f32(l, s, p, po, s->P, s->Q, l->scale, b1h);
        } else {
            st = rite__first_moment(l, s, p, po, s->P, s->Q, l->scale, b1h);
            if (st == RITE_OK && !l->desc.keep_basis) rite__cross(l, s);
        }
        if (st != RITE_OK) return st;
    }
    /* SPEC 12-15: straight into the caller's buffers when that cannot
       overflow, else (and for balance) through checked copies */
    for (side = 0; side < 2; side++)
        careful |= !rite__descend_safe(l, &l->s[side], &l->s[side].pre[l->pend], &l->s[1 - side].pre[l->pend]);
    if (careful) {
        st = rite__careful_factors(l, f);
        if (st != RITE_OK) return st;
    }
    for (side = 0; side < 2 && !l->desc.keep_basis; side++) {
        st = rite__next_basis(l, &l->s[side], &l->s[side].pre[l->pend], &l->s[1 - side].pre[l->pend], f[side]);
        if (st != RITE_OK) return st;
    }
    if (commit) rite__lorarite_commit(l, careful, f);
    return RITE_OK;
}

/* ---- @adamw: the AdamW step ------------------------------------------------------ */

/* SPEC "AdamW baseline" for one factor, row by row of its storage: with
   write = 0 only checks (see rite__adamw_span_*), else updates. */
static int rite__adamw_side(rite_layer *l, rite__side *s, int write, double *acc)
{
    int a, flags = 0, r = l->desc.r;
    int no = RITE__OUTER(s->layout, s->k, r), ni = RITE__INNER(s->layout, s->k, r);
    double t = (double)(l->steps + 1), ac_d[9];
    float ac_f[9];
    ac_d[0] = l->cfg.beta1;
    ac_d[1] = l->cfg.beta2;
    ac_d[2] = 1.0 - l->cfg.beta1;
    ac_d[3] = 1.0 - l->cfg.beta2;
    ac_d[4] = 1.0 - pow(l->cfg.beta1, t);
    ac_d[5] = 1.0 / sqrt(1.0 - pow(l->cfg.beta2, t));
    ac_d[6] = l->cfg.lr;
    ac_d[7] = l->cfg.eps;
    ac_d[8] = l->cfg.weight_decay;
    for (a = 0; a < 9; a++) ac_f[a] = (float)ac_d[a];
    ac_f[2] = (float)(1.0 - l->cfg.beta1);   /* not 1 - (float)b1: b1 may round to 1 in float */
    ac_f[3] = (float)(1.0 - l->cfg.beta2);
    if (s->ld == ni && s->ldg == ni && (double)no * ni <= INT_MAX) {   /* packed: one run */
        ni *= no;
        no = 1;
    }
    for (a = 0; a < no; a++) {
        if (RITE__F32(l))
            flags |= rite__adamw_fast_f32((float *)s->X + (size_t)a * s->ld, (const float *)s->G + (size_t)a * s->ldg,
                                          (float *)s->M + (size_t)a * ni, (float *)s->exp_avg_sq + (size_t)a * ni, ni,
                                          ac_f, write, acc);
        else
            flags |= rite__adamw_fast_f64((double *)s->X + (size_t)a * s->ld,
                                          (const double *)s->G + (size_t)a * s->ldg, (double *)s->M + (size_t)a * ni,
                                          (double *)s->exp_avg_sq + (size_t)a * ni, ni, ac_d, write, acc);
    }
    return flags;
}

/* ---- @step: public step functions --------------------------------------------- */

/* A k x r matrix in caller storage as `rows` runs of `cols` elements, run a
   at p + a * ld elements of es bytes. */
typedef struct rite__span {
    uintptr_t p;
    size_t rows, cols, ld;
} rite__span;

static rite__span rite__span_of(const void *p, rite_layout lay, int ld, int k, int r)
{
    rite__span sp;
    sp.p = (uintptr_t)p;
    sp.rows = (size_t)RITE__OUTER(lay, k, r);
    sp.cols = (size_t)RITE__INNER(lay, k, r);
    sp.ld = (size_t)ld;
    return sp;
}

/* 1 when two matrices of es-byte elements may share an element: exact when
   both have the same leading dimension and element grid, else by extent */
static int rite__overlap(rite__span a, rite__span b, size_t es)
{
    uintptr_t ea = a.p + ((a.rows - 1) * a.ld + a.cols) * es, eb = b.p + ((b.rows - 1) * b.ld + b.cols) * es;
    size_t d, t, q0;
    if (!(a.p < eb && b.p < ea)) return 0;
    if (a.ld != b.ld || (a.p > b.p ? a.p - b.p : b.p - a.p) % es) return 1;
    if (a.p > b.p) {   /* b first */
        rite__span c = a;
        a = b;
        b = c;
    }
    d = (size_t)(b.p - a.p) / es;   /* b's row i starts at column t of a's row q0 + i */
    q0 = d / a.ld;
    t = d % a.ld;
    if (t < a.cols && q0 < a.rows) return 1;
    return t + b.cols > a.ld && q0 + 1 < a.rows;
}

/* the buffers' storage rule: the factors must not share an element with
   each other, nor (AdamW, which reads its gradients again while writing)
   with a gradient */
static rite_status rite__check_aliasing(rite_layer *l, const void *L, const void *R, const void *gL, const void *gR)
{
    const rite__side *a = &l->s[0], *b = &l->s[1];
    rite__span x[2], g[2];
    const char *const *xn = l->names, *const *gn = l->names + 2;
    int i, j;
    x[0] = rite__span_of(L, a->layout, a->ld, a->k, l->desc.r);
    x[1] = rite__span_of(R, b->layout, b->ld, b->k, l->desc.r);
    g[0] = rite__span_of(gL, a->layout, a->ldg, a->k, l->desc.r);
    g[1] = rite__span_of(gR, b->layout, b->ldg, b->k, l->desc.r);
    if (rite__overlap(x[0], x[1], l->es))
        return rite__say(l->msg, sizeof l->msg, RITE_ERR_ALIASING, "L and R share storage");
    if (l->desc.optimizer != RITE_ADAMW) return RITE_OK;
    for (i = 0; i < 2; i++)
        for (j = 0; j < 2; j++)
            if (rite__overlap(g[i], x[j], l->es))
                return rite__say(l->msg, sizeof l->msg, RITE_ERR_ALIASING,
                                 "%s shares storage with %s: AdamW reads its gradients while writing the factors",
                                 gn[i], xn[j]);
    return RITE_OK;
}

static rite_status rite__prepare(rite_layer *l, rite_precision prec, void *L, void *R,
                                 const void *gL, const void *gR, double *sumsq)
{
    rite_status st;
    int side;
    double own = 0;
    void *oX[2];
    const void *oG[2];
    if (!l) return RITE_ERR_NULL_ARGUMENT;
    l->msg[0] = 0;
    if (!L || !R || !gL || !gR || !sumsq)
        return rite__say(l->msg, sizeof l->msg, RITE_ERR_NULL_ARGUMENT, "%s is NULL",
                         !L ? l->names[0] : !R ? l->names[1] : !gL ? l->names[2] : !gR ? l->names[3] : "sumsq");
    if (l->desc.precision != prec)
        return rite__say(l->msg, sizeof l->msg, RITE_ERR_PRECISION, "%s buffers for a %s layer",
                         prec == RITE_FLOAT32 ? "float" : "double",
                         l->desc.precision == RITE_FLOAT32 ? "float" : "double");
    st = rite__check_aliasing(l, L, R, gL, gR);
    if (st != RITE_OK) return st;
    /* the buffers of a pending prepare are put back if this one fails */
    for (side = 0; side < 2; side++) {
        oX[side] = l->s[side].X;
        oG[side] = l->s[side].G;
    }
    l->s[0].X = L; l->s[0].G = gL;
    l->s[1].X = R; l->s[1].G = gR;
    if (l->desc.optimizer == RITE_ADAMW) {
        /* one read-only pass: inputs finite, and results finite */
        double acc[2] = {0, 0};
        int f0 = rite__adamw_side(l, &l->s[0], 0, acc), f1 = rite__adamw_side(l, &l->s[1], 0, acc), side_bad;
        st = (f0 | f1) & 1 ? RITE_ERR_NONFINITE_FACTOR
           : (f0 | f1) & 2 ? RITE_ERR_NONFINITE_GRADIENT
           : (f0 | f1) & 4 ? RITE_ERR_NONFINITE_UPDATE : RITE_OK;
        side_bad = st == RITE_ERR_NONFINITE_FACTOR ? !(f0 & 1) : st == RITE_ERR_NONFINITE_GRADIENT ? !(f0 & 2)
                                                                                                 : !(f0 & 4);
        if (st == RITE_ERR_NONFINITE_FACTOR || st == RITE_ERR_NONFINITE_GRADIENT)
            rite__say(l->msg, sizeof l->msg, st, "%s holds NaN or Inf",
                      l->names[(st == RITE_ERR_NONFINITE_GRADIENT ? 2 : 0) + side_bad]);
        else if (st != RITE_OK)
            rite__say(l->msg, sizeof l->msg, st, "the update of %s would overflow (a moment or the factor)",
                      l->names[side_bad]);
        if (st == RITE_OK) {
            l->g2 = acc[0];
            l->u2 = acc[1];
            l->checked = l->cfg;
        }
    } else {
        st = rite__lorarite_prepare(l, &own);
    }
    if (st != RITE_OK) {
        for (side = 0; side < 2; side++) {
            l->s[side].X = oX[side];
            l->s[side].G = oG[side];
        }
        return st;
    }
    if (l->prepared) l->dropped++;   /* a pending prepare, replaced */
    l->own_sumsq = own;
    l->prepared = 1;
    *sumsq = own;
    return RITE_OK;
}

static rite_status rite__apply_failed(rite_layer *l, rite_status st)
{
    return rite__say(l->msg, sizeof l->msg, st, "%s; the pending prepare is kept",
                     st == RITE_ERR_LAPACK ? "a LAPACK eigen decomposition did not converge"
                                           : "the step would make a factor or the state overflow");
}

/* The diagnostics of the step rite__apply_end just took */
static void rite__layer_diag(rite_layer *l, double total)
{
    rite_diagnostics *d = &l->diag;
    int side;
    memset(d, 0, sizeof *d);
    d->step = l->steps;
    d->clip_factor = 1.0;
    l->diag_n = (double)(l->s[0].k + l->s[1].k) * l->desc.r;
    if (l->desc.optimizer == RITE_ADAMW) {
        d->grad_norm = sqrt(l->g2);
        l->diag_u2 = l->u2;
    } else {
        (void)total;
        d->grad_norm = sqrt(l->own_sumsq);
        d->clip_factor = l->scale;
        l->diag_u2 = 0;
        for (side = 0; side < 2; side++) {
            const rite__side *s = &l->s[side];
            const rite__prep *p = &s->pre[l->pend];
            double u = l->cfg.lr * s->capf;
            d->skipped += p->skipped;
            l->diag_u2 += u * u * s->mn2;
            d->rho_max = s->rho > d->rho_max ? s->rho : d->rho_max;
            d->cond_max = p->cond > d->cond_max ? p->cond : d->cond_max;
        }
    }
    d->update_rms = sqrt(l->diag_u2 / l->diag_n);
}

/* AdamW: when the hyper-parameters changed since prepare (rite_set_lr,
   rite_set_config), the check pass again with the new ones: the update
   must still be finite */
static rite_status rite__adamw_recheck(rite_layer *l)
{
    const rite_config *a = &l->checked, *b = &l->cfg;
    double acc[2] = {0, 0};
    int f0, f1;
    if (a->lr == b->lr && a->beta1 == b->beta1 && a->beta2 == b->beta2 && a->eps == b->eps &&
        a->weight_decay == b->weight_decay)
        return RITE_OK;
    f0 = rite__adamw_side(l, &l->s[0], 0, acc);
    f1 = rite__adamw_side(l, &l->s[1], 0, acc);
    if (f0 | f1)
        return rite__say(l->msg, sizeof l->msg, RITE_ERR_NONFINITE_UPDATE,
                         "with the config set since prepare, the update of %s would overflow; the pending "
                         "prepare is kept", l->names[f0 ? 0 : 1]);
    l->g2 = acc[0];
    l->u2 = acc[1];
    l->checked = l->cfg;
    return RITE_OK;
}

/* apply's first half: the checks, and LoRA-RITE's first phase. Changes no state. */
static rite_status rite__apply_begin(rite_layer *l, double total)
{
    rite_status st;
    l->msg[0] = 0;
    if (!l->prepared)
        return rite__say(l->msg, sizeof l->msg, RITE_ERR_NOT_PREPARED, "%s",
                         l->unprepared ? l->unprepared : "no prepare since the layer was created");
    if (!(total >= l->own_sumsq && total <= DBL_MAX))
        return rite__say(l->msg, sizeof l->msg, RITE_ERR_SUMSQ,
                         "total_sumsq = %g: it must be finite and >= this layer's own %g", total, l->own_sumsq);
    if (l->desc.optimizer == RITE_ADAMW) return rite__adamw_recheck(l);
    st = rite__lorarite_plan(l, total);
    return st == RITE_OK ? RITE_OK : rite__apply_failed(l, st);
}

/* apply's second half: the writes (LoRA-RITE's second phase, which fails
   only where its bound does not hold), the step count and diagnostics */
static rite_status rite__apply_end(rite_layer *l, double total)
{
    int side;
    if (l->desc.optimizer == RITE_ADAMW) {
        for (side = 0; side < 2; side++) rite__adamw_side(l, &l->s[side], 1, NULL);
    } else {
        rite_status st = rite__lorarite_run(l, 1);
        if (st != RITE_OK) return rite__apply_failed(l, st);
    }
    l->steps++;
    l->prepared = 0;
    l->unprepared = "the last prepare was applied already";
    rite__layer_diag(l, total);
    return RITE_OK;
}

LORA_RITE_API rite_status rite_apply(rite_layer *layer, double total_sumsq)
{
    rite_status st;
    if (!layer) return RITE_ERR_NULL_ARGUMENT;
    if (layer->shared) rite__bind(layer, layer->home);
    st = rite__apply_begin(layer, total_sumsq);
    return st == RITE_OK ? rite__apply_end(layer, total_sumsq) : st;
}

LORA_RITE_API rite_status rite_layer_diagnostics(const rite_layer *layer, rite_diagnostics *out)
{
    if (!layer || !out) return RITE_ERR_NULL_ARGUMENT;
    *out = layer->diag;
    return RITE_OK;
}

LORA_RITE_API rite_status rite_prepare_f32(rite_layer *layer, float *L, float *R,
                                           const float *gL, const float *gR, double *sumsq)
{
    if (layer && layer->shared) rite__bind(layer, layer->home);
    return rite__prepare(layer, RITE_FLOAT32, L, R, gL, gR, sumsq);
}

LORA_RITE_API rite_status rite_prepare_f64(rite_layer *layer, double *L, double *R,
                                           const double *gL, const double *gR, double *sumsq)
{
    if (layer && layer->shared) rite__bind(layer, layer->home);
    return rite__prepare(layer, RITE_FLOAT64, L, R, gL, gR, sumsq);
}

static rite_status rite__step(rite_layer *l, rite_precision prec, void *L, void *R,
                              const void *gL, const void *gR)
{
    double own;
    rite_status st;
    if (l && l->shared) rite__bind(l, l->home);
    st = rite__prepare(l, prec, L, R, gL, gR, &own);
    if (st != RITE_OK) return st;
    st = rite_apply(l, own);
    l->prepared = 0;
    return st;
}

LORA_RITE_API rite_status rite_step_f32(rite_layer *layer, float *L, float *R,
                                        const float *gL, const float *gR)
{
    return rite__step(layer, RITE_FLOAT32, L, R, gL, gR);
}

LORA_RITE_API rite_status rite_step_f64(rite_layer *layer, double *L, double *R,
                                        const double *gL, const double *gR)
{
    return rite__step(layer, RITE_FLOAT64, L, R, gL, gR);
}

/* ---- @state: state export and checkpoints ----------------------------------- */

/* ||M||_F^2 of each factor, after its first moment was loaded */
static void rite__moments_loaded(rite_layer *l)
{
    int side;
    for (side = 0; side < 2; side++) {
        rite__side *s = &l->s[side];
        s->m2 = rite__sumsq(l, s->M, (size_t)s->k * (size_t)l->desc.r);
    }
}

/* The persistent state as a list of byte ranges, in checkpoint order. */
typedef struct rite__field {
    void *p;
    size_t n;
    int kind;              /* 0 integers, 1 numbers of the layer precision, 2 doubles */
    int rows, cols;        /* > 0: a float matrix kept row-major (rows x cols) and
                              stored column-major, as every k x r moment is stored */
} rite__field;

static void rite__field_set(rite__field *f, void *p, size_t n, int kind)
{
    f->p = p;
    f->n = n;
    f->kind = kind;
    f->rows = f->cols = 0;
}

/* Bytes [off, off + len) of field f as stored (len a multiple of 4 for a
   transposed field, off too) into dst. */
static void rite__field_read(const rite__field *f, size_t off, size_t len, unsigned char *dst)
{
    size_t e, i, j;
    const float *m = (const float *)f->p;
    if (!f->rows) {
        memcpy(dst, (const char *)f->p + off, len);
        return;
    }
    for (e = off / sizeof(float); e < (off + len) / sizeof(float); e++, dst += sizeof(float)) {
        j = e / (size_t)f->rows;
        i = e % (size_t)f->rows;
        memcpy(dst, m + i * (size_t)f->cols + j, sizeof(float));
    }
}

/* the stored bytes of field f (f->n of them) from src into the field */
static void rite__field_write(const rite__field *f, const unsigned char *src)
{
    size_t i, j;
    float *m = (float *)f->p;
    if (!f->rows) {
        memcpy(f->p, src, f->n);
        return;
    }
    for (j = 0; j < (size_t)f->cols; j++)
        for (i = 0; i < (size_t)f->rows; i++, src += sizeof(float)) memcpy(m + i * (size_t)f->cols + j, src, sizeof(float));
}

static int rite__state_fields(const rite_layer *l, rite__field *f)
{
    int side, nf = 0;
    size_t r = (size_t)l->desc.r;
    rite__field_set(&f[nf++], (void *)&l->steps, sizeof l->steps, 0);
    for (side = 0; side < 2; side++) {
        const rite__side *s = &l->s[side];
        size_t kb = (size_t)s->k * r * l->es;
        rite__field_set(&f[nf++], s->M, kb, 1);
        if (l->desc.optimizer == RITE_LORA_RITE && l->desc.precision == RITE_FLOAT32) {
            f[nf - 1].rows = s->k;   /* kept row-major for the row kernels */
            f[nf - 1].cols = (int)r;
        }
        if (l->desc.optimizer == RITE_ADAMW) {
            rite__field_set(&f[nf++], s->exp_avg_sq, kb, 1);
            continue;
        }
        rite__field_set(&f[nf++], s->Vp, (r * r + r) / 2 * sizeof(double), 2);
        if (l->desc.keep_basis)
            rite__field_set(&f[nf++], s->U_prev, kb, 1);
        else
            rite__field_set(&f[nf++], s->C, r * r * sizeof(double), 2);
        rite__field_set(&f[nf++], (void *)&s->rho, sizeof s->rho, 2);
    }
    if (l->desc.optimizer == RITE_LORA_RITE && !l->desc.keep_basis)
        rite__field_set(&f[nf++], (void *)&l->stale, sizeof l->stale, 0);
    return nf;
}

#define RITE__MAX_FIELDS 16

static size_t rite__state_bytes(const rite_layer *l)
{
    rite__field f[RITE__MAX_FIELDS] = {{NULL, 0, 0, 0, 0}};
    size_t n = 0;
    int i, nf = rite__state_fields(l, f);
    for (i = 0; i < nf; i++) n += f[i].n;
    return n;
}

LORA_RITE_API size_t rite_state_size(const rite_layer *layer)
{
    return layer ? rite__state_bytes(layer) : 0;
}

LORA_RITE_API rite_status rite_state_copy(const rite_layer *layer, void *dst, size_t dst_size)
{
    rite__field f[RITE__MAX_FIELDS] = {{NULL, 0, 0, 0, 0}};
    char *o = (char *)dst;
    int i, nf;
    if (!layer || !dst) return RITE_ERR_NULL_ARGUMENT;
    if (dst_size < rite_state_size(layer)) return RITE_ERR_BUFFER_SIZE;
    nf = rite__state_fields(layer, f);
    for (i = 0; i < nf; i++) {
        rite__field_read(&f[i], 0, f[i].n, (unsigned char *)o);
        o += f[i].n;
    }
    return RITE_OK;
}

/* Checkpoint layout (all integers in the writer's byte order, which the
   byte-order mark records; a reader of the other order rejects the file):
     0  char[8] magic "LORARITE"        8  u32 version (1)
    12  u32 header bytes (64)          16  u32 byte-order mark 0x01020304
    20  u32 optimizer                  24  u32 precision
    28  u32 m   32 u32 n   36 u32 r    40  u32 options: 1 escape, 2 relative_eps, 4 balance,
                                           8 keep_basis
    44  u32 layouts: 1 L rank-first, 2 R rank-first (checked for AdamW only)
    48  u64 payload bytes              56  u64 step count (also in the payload)
    64  payload: the state fields, as rite_state_copy writes them
   end  u64 FNV-1a 64 checksum of every byte before it */
#define RITE__CKPT_VERSION 1u
#define RITE__CKPT_HEADER 64u

#define RITE__FNV_BASIS 14695981039346656037ull   /* FNV-1a 64: the offset basis; h is it or a running hash */

static uint64_t rite__fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void rite__ckpt_header(const rite_layer *l, unsigned char *h)
{
    uint32_t v[10];
    uint64_t payload = rite_state_size(l), k = (uint64_t)l->steps;
    memset(h, 0, RITE__CKPT_HEADER);
    memcpy(h, "LORARITE", 8);
    v[0] = RITE__CKPT_VERSION;
    v[1] = RITE__CKPT_HEADER;
    v[2] = 0x01020304u;
    v[3] = (uint32_t)l->desc.optimizer;
    v[4] = (uint32_t)l->desc.precision;
    v[5] = (uint32_t)l->desc.m;
    v[6] = (uint32_t)l->desc.n;
    v[7] = (uint32_t)l->desc.r;
    v[8] = l->desc.optimizer == RITE_ADAMW ? 0u
           : (l->cfg.escape ? 1u : 0u) | (l->cfg.relative_eps ? 2u : 0u) | (l->cfg.balance ? 4u : 0u) |
             (l->desc.keep_basis ? 8u : 0u);
    v[9] = (l->desc.layout_L == RITE_RANK_FIRST ? 1u : 0u) | (l->desc.layout_R == RITE_RANK_FIRST ? 2u : 0u);
    memcpy(h + 8, v, sizeof v);
    memcpy(h + 48, &payload, 8);
    memcpy(h + 56, &k, 8);
}

LORA_RITE_API size_t rite_checkpoint_size(const rite_layer *layer)
{
    return layer ? RITE__CKPT_HEADER + rite_state_size(layer) + 8 : 0;
}

LORA_RITE_API rite_status rite_checkpoint_save(const rite_layer *layer, void *dst, size_t dst_size)
{
    unsigned char *o = (unsigned char *)dst;
    uint64_t h;
    size_t n;
    if (!layer || !dst) return RITE_ERR_NULL_ARGUMENT;
    n = rite_checkpoint_size(layer);
    if (dst_size < n) return RITE_ERR_BUFFER_SIZE;
    rite__ckpt_header(layer, o);
    rite_state_copy(layer, o + RITE__CKPT_HEADER, n - RITE__CKPT_HEADER - 8);
    h = rite__fnv1a(RITE__FNV_BASIS, o, n - 8);
    memcpy(o + n - 8, &h, 8);
    return RITE_OK;
}

/* A checkpoint's header against the layer: the format, the version, the
   identity fields (optimizer, precision, m, n, r at bytes 20-39,
   keep_basis, bit 8 of the options at 40, and for AdamW, whose moments
   follow them, the layouts at 44), then the length and the checksum. */
static rite_status rite__ckpt_check_header(rite_layer *layer, const unsigned char *in, size_t src_size)
{
    static const char *const fname[7] = {"optimizer", "precision", "m", "n", "r", "keep_basis", "layouts"};
    unsigned char want[RITE__CKPT_HEADER];
    char *msg = layer->msg;
    uint32_t version, mark, hsize;
    uint64_t h, stored;
    size_t n, ms = sizeof layer->msg;
    int i;
    if (src_size < RITE__CKPT_HEADER + 8 || memcmp(in, "LORARITE", 8) != 0)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "%s",
                         src_size < RITE__CKPT_HEADER + 8 ? "shorter than a header and checksum" : "bad magic");
    memcpy(&version, in + 8, 4);
    memcpy(&hsize, in + 12, 4);
    memcpy(&mark, in + 16, 4);
    if (mark != 0x01020304u) return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "byte-order mark %#x", mark);
    if (version != RITE__CKPT_VERSION)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_VERSION, "version %u, this library reads %u", version,
                         RITE__CKPT_VERSION);
    if (hsize != RITE__CKPT_HEADER) return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "header size %u", hsize);
    n = rite_checkpoint_size(layer);
    rite__ckpt_header(layer, want);
    for (i = 0; i < 7; i++) {
        uint32_t a, b;
        memcpy(&a, in + 20 + 4 * i, 4);
        memcpy(&b, want + 20 + 4 * i, 4);
        if (i == 5) {
            a = (a & 8u) >> 3;
            b = (b & 8u) >> 3;
        }
        if (i == 6 && layer->desc.optimizer != RITE_ADAMW) continue;
        if (a != b)
            return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "%s differs: checkpoint %u, layer %u", fname[i], a,
                             b);
    }
    if (memcmp(in + 48, want + 48, 8) != 0)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "payload size differs");
    if (src_size != n)   /* truncated, or trailing bytes */
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "%zu bytes, the layer's checkpoint has %zu", src_size, n);
    memcpy(&stored, in + n - 8, 8);
    h = rite__fnv1a(RITE__FNV_BASIS, in, n - 8);
    if (h != stored || memcmp(in + 56, in + RITE__CKPT_HEADER, 8) != 0)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_CORRUPT, "%s",
                         h != stored ? "checksum mismatch" : "the two step counts differ");
    return RITE_OK;
}

static int rite__big_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 0;
}

/* n bytes of es-byte numbers, in place, between the host's order and little-endian */
static void rite__le_swap(unsigned char *p, size_t n, size_t es)
{
    size_t i, j;
    if (!rite__big_endian() || es < 2) return;
    for (i = 0; i + es <= n; i += es)
        for (j = 0; j < es / 2; j++) {
            unsigned char t = p[i + j];
            p[i + j] = p[i + es - 1 - j];
            p[i + es - 1 - j] = t;
        }
}

/* the element size of a state field */
static size_t rite__field_es(const rite_layer *l, const rite__field *f)
{
    return f->kind == 0 ? f->n : f->kind == 1 ? l->es : sizeof(double);
}

/* a number of es bytes at p, in little-endian (le) or the host's order: its
   value, and its bits as an unsigned integer in *u */
static double rite__number_at(const unsigned char *p, size_t es, int le, uint64_t *u)
{
    unsigned char b[8];
    memcpy(b, p, es);
    if (le) rite__le_swap(b, es, es);
    if (es == sizeof(double)) {
        double d;
        memcpy(u, b, sizeof *u);
        memcpy(&d, b, sizeof d);
        return d;
    } else {
        uint32_t v;
        float f;
        memcpy(&v, b, sizeof v);
        memcpy(&f, b, sizeof f);
        *u = v;
        return f;
    }
}

/* What is wrong with a layer's state as a checkpoint holds it at p (le:
   little-endian, else the host's order), or NULL: a number that is NaN or
   Inf, a negative escaped mass, a factors-changed flag other than 0 or 1 (a
   file resealed by hand could hold anything). *steps: its step count. */
static const char *rite__state_problem(const rite_layer *l, const unsigned char *p, int le, uint64_t *steps)
{
    rite__field f[RITE__MAX_FIELDS] = {{NULL, 0, 0, 0, 0}};
    int j, nf = rite__state_fields(l, f);
    size_t e, es;
    uint64_t u;
    *steps = 0;
    for (j = 0; j < nf; p += f[j].n, j++)
        for (e = 0, es = rite__field_es(l, &f[j]); e + es <= f[j].n; e += es) {
            double v = rite__number_at(p + e, es, le, &u);
            if (f[j].kind == 0) {   /* the integers */
                if (f[j].p == (const void *)&l->steps) *steps = u;
                if (f[j].p == (const void *)&l->stale && u > 1) return "a factors-changed flag other than 0 or 1";
            } else if (v * 0 != 0) {
                return "a number that is NaN or Inf";
            } else if (v < 0 && (f[j].p == (const void *)&l->s[0].rho || f[j].p == (const void *)&l->s[1].rho)) {
                return "a negative escaped mass";
            }
        }
    return NULL;
}

/* The payload's numbers (rite__state_problem), and a step count that can go
   on counting. */
static rite_status rite__ckpt_check_payload(rite_layer *layer, const unsigned char *in)
{
    uint64_t steps;
    const char *why = rite__state_problem(layer, in + RITE__CKPT_HEADER, 0, &steps);
    if (why) return rite__say(layer->msg, sizeof layer->msg, RITE_ERR_CHECKPOINT_CORRUPT, "the state holds %s", why);
    if (steps >= ((uint64_t)1 << 62))
        return rite__say(layer->msg, sizeof layer->msg, RITE_ERR_CHECKPOINT_CORRUPT, "step count 2^62 or more");
    return RITE_OK;
}

LORA_RITE_API rite_status rite_checkpoint_load(rite_layer *layer, const void *src, size_t src_size)
{
    const unsigned char *in = (const unsigned char *)src;
    rite__field f[RITE__MAX_FIELDS] = {{NULL, 0, 0, 0, 0}};
    rite_status st;
    uint64_t k;
    size_t off;
    int i, nf;
    if (!layer) return RITE_ERR_NULL_ARGUMENT;
    layer->msg[0] = 0;
    if (!src) return rite__say(layer->msg, sizeof layer->msg, RITE_ERR_NULL_ARGUMENT, "src is NULL");
    st = rite__ckpt_check_header(layer, in, src_size);
    if (st == RITE_OK) st = rite__ckpt_check_payload(layer, in);
    if (st != RITE_OK) return st;
    /* all checked: copy */
    memcpy(&k, in + 56, 8);
    layer->steps = (long long)k;
    nf = rite__state_fields(layer, f);
    for (i = 0, off = RITE__CKPT_HEADER; i < nf; off += f[i].n, i++) rite__field_write(&f[i], in + off);
    rite__moments_loaded(layer);
    rite__cancel(layer, "the pending prepare was cancelled by a checkpoint load");
    return RITE_OK;
}

/* Writes PATH in place (to replace a checkpoint safely, save to another
   name and rename it). */
LORA_RITE_API rite_status rite_checkpoint_save_file(const rite_layer *layer, const char *path)
{
    rite__field f[RITE__MAX_FIELDS] = {{NULL, 0, 0, 0, 0}};
    unsigned char head[RITE__CKPT_HEADER], chunk[4096];
    uint64_t h;
    FILE *fp;
    int i, nf, ok;
    if (!layer || !path) return RITE_ERR_NULL_ARGUMENT;
    fp = fopen(path, "wb");
    if (!fp) return RITE_ERR_IO;
    rite__ckpt_header(layer, head);
    h = rite__fnv1a(RITE__FNV_BASIS, head, sizeof head);
    ok = fwrite(head, 1, sizeof head, fp) == sizeof head;
    nf = rite__state_fields(layer, f);
    for (i = 0; i < nf && ok; i++) {
        size_t off;
        for (off = 0; off < f[i].n && ok; off += sizeof chunk) {   /* as stored, in chunks */
            size_t len = f[i].n - off < sizeof chunk ? f[i].n - off : sizeof chunk;
            rite__field_read(&f[i], off, len, chunk);
            h = rite__fnv1a(h, chunk, len);
            ok = fwrite(chunk, 1, len, fp) == len;
        }
    }
    ok = ok && fwrite(&h, 1, 8, fp) == 8;
    ok = (fclose(fp) == 0) && ok;
    return ok ? RITE_OK : RITE_ERR_IO;
}

/* Reads the file into memory taken from the layer's allocator (loading is
   not a step), then loads it. */
LORA_RITE_API rite_status rite_checkpoint_load_file(rite_layer *layer, const char *path)
{
    size_t want, got;
    unsigned char *buf;
    rite_status st;
    FILE *fp;
    if (!layer || !path) return RITE_ERR_NULL_ARGUMENT;
    fp = fopen(path, "rb");
    if (!fp) return RITE_ERR_IO;
    want = rite_checkpoint_size(layer);
    buf = (unsigned char *)rite__alloc(&layer->allocator, want + 1);
    if (!buf) {
        fclose(fp);
        return RITE_ERR_OUT_OF_MEMORY;
    }
    got = fread(buf, 1, want + 1, fp);   /* one byte more shows a file that is too long */
    st = ferror(fp) ? RITE_ERR_IO : rite_checkpoint_load(layer, buf, got);
    fclose(fp);
    rite__dealloc(&layer->allocator, buf);
    return st;
}

/* ==== @model: the model ======================================================= */

/* Built-in threads: POSIX threads where they exist. */
#if !defined(LORA_RITE_NO_THREADS) && (defined(__unix__) || defined(__APPLE__))
#include <pthread.h>
#define RITE__PTHREADS 1
#endif
#define RITE__MAX_THREADS 256

#ifdef RITE__PTHREADS
/* A pool of workers 1..n (the caller is worker 0) that run a task over an
   index range, each index taken once, under one mutex. */
typedef struct rite__pool rite__pool;
typedef struct rite__worker {
    rite__pool *pool;
    int id;
} rite__worker;
struct rite__pool {
    pthread_mutex_t mu;
    pthread_cond_t go, idle;
    pthread_t th[RITE__MAX_THREADS];
    rite__worker arg[RITE__MAX_THREADS];
    int started, count, next;
    unsigned long gen, running, quit;   /* written with mu held (atomically where spun on) */
    unsigned long hold;                 /* 1 inside a model's call: workers keep spinning */
    rite_task_fn fn;
    void *task;
};

/* Waiting: a step's phases follow each other within microseconds, and a
   sleeping thread can take a millisecond to wake (an idle virtual CPU), so
   a worker spins (atomic loads where the compiler has them, yielding now
   and then) for the next phase as long as the model holds the pool (inside
   a step), then a while more, then sleeps; the caller spins likewise for
   the workers to finish a phase. */
#include <sched.h>
#if defined(__GNUC__) || defined(__clang__)
#define RITE__SPIN 20000
#define RITE__LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define RITE__STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#else
#define RITE__SPIN 0
#define RITE__LOAD(x) (x)
#define RITE__STORE(x, v) ((x) = (v))
#endif

/* one turn of a spin loop (the spin-th): a pause, and every 256 a yield */
static void rite__relax(int spin)
{
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#endif
    if (spin % 256 == 255) sched_yield();
}

/* a worker, with mu held: until the generation differs from seen */
static void rite__pool_wait(rite__pool *p, unsigned long seen)
{
    int spin = 0;
    if (p->gen != seen) return;
    pthread_mutex_unlock(&p->mu);
    while (RITE__LOAD(p->gen) == seen && (RITE__LOAD(p->hold) || spin < RITE__SPIN)) rite__relax(spin++);
    pthread_mutex_lock(&p->mu);
    while (p->gen == seen) pthread_cond_wait(&p->go, &p->mu);
}

/* runs indices until none is left; called and returns with mu held */
static void rite__pool_drain(rite__pool *p, int id)
{
    while (p->next < p->count) {
        int i = p->next++;
        pthread_mutex_unlock(&p->mu);
        p->fn(p->task, i, id);
        pthread_mutex_lock(&p->mu);
    }
}

static void *rite__pool_main(void *arg)
{
    rite__worker *w = (rite__worker *)arg;
    rite__pool *p = w->pool;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        rite__pool_wait(p, seen);
        if (p->quit) break;
        seen = p->gen;
        rite__pool_drain(p, w->id);
        RITE__STORE(p->running, p->running - 1);
        if (p->running == 0) pthread_cond_signal(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void rite__pool_stop(rite__pool *p)
{
    int i;
    pthread_mutex_lock(&p->mu);
    RITE__STORE(p->quit, 1ul);
    RITE__STORE(p->gen, p->gen + 1);   /* wakes a spinning worker */
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (i = 0; i < p->started; i++) pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->mu);
}

/* starts n threads; 0 on failure (none left running) */
static int rite__pool_start(rite__pool *p, int n)
{
    int i;
    memset(p, 0, sizeof *p);
    if (pthread_mutex_init(&p->mu, NULL) != 0) return 0;
    if (pthread_cond_init(&p->go, NULL) != 0 || pthread_cond_init(&p->idle, NULL) != 0) return 0;
    for (i = 0; i < n; i++) {
        p->arg[i].pool = p;
        p->arg[i].id = i + 1;
        if (pthread_create(&p->th[i], NULL, rite__pool_main, &p->arg[i]) != 0) {
            rite__pool_stop(p);
            return 0;
        }
        p->started++;
    }
    return 1;
}

static void rite__pool_hold(rite__pool *p, unsigned long hold)
{
    pthread_mutex_lock(&p->mu);
    RITE__STORE(p->hold, hold);
    pthread_mutex_unlock(&p->mu);
}

static void rite__pool_run(rite__pool *p, int count, rite_task_fn fn, void *task)
{
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->task = task;
    p->count = count;
    p->next = 0;
    RITE__STORE(p->running, (unsigned long)p->started);
    RITE__STORE(p->gen, p->gen + 1);
    pthread_cond_broadcast(&p->go);
    rite__pool_drain(p, 0);
    if (p->running != 0) {   /* wait for the workers, spinning first */
        int spin;
        pthread_mutex_unlock(&p->mu);
        for (spin = 0; spin < 64 * RITE__SPIN && RITE__LOAD(p->running) != 0; spin++) rite__relax(spin);
        pthread_mutex_lock(&p->mu);
        while (p->running != 0) pthread_cond_wait(&p->idle, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}
#endif

/* one buffer of a model's step: its bytes [begin, end), its layer, and
   which of the layer's buffers it is (0 A, 1 B, 2 gA, 3 gB) */
typedef struct rite__extent {
    uintptr_t begin, end;
    int layer, which;
} rite__extent;

/* the phases of a model's step, each run over every layer */
enum { RITE__PH_PREPARE, RITE__PH_BEGIN, RITE__PH_END };

struct rite_model {
    rite_model_desc desc;        /* layers -> mods; config NULL */
    rite_lora *mods;
    rite_layer **lay;
    rite_status *st;             /* per layer: the status of the phase */
    double *ss;                  /* per layer: prepare's sum of squares */
    rite__extent *ext;           /* 4 per layer: a step's buffers, sorted by address */
    char **ws;                   /* a workspace per worker */
    int workers;
    rite_config cfg;             /* the model's config (lr unscaled) */
    long long steps;
    int prepared;
    double own;
    rite_diagnostics diag;
    rite_memory mem;
    char msg[256];
    /* the phase being run */
    int phase;
    rite_precision prec;
    double total;
    const void *arr[4];          /* the caller's arrays A, B, gA, gB (float *const * or
                                    double *const *, by prec) */
#ifdef RITE__PTHREADS
    rite__pool *pool;            /* NULL: no threads of its own */
#endif
    void *raw;
};

static const char *const rite__model_names[4] = {"lora_A", "lora_B", "gA", "gB"};

LORA_RITE_API rite_lora rite_lora_peft(int in_features, int out_features, int r)
{
    rite_lora d;
    memset(&d, 0, sizeof d);
    d.in_features = in_features;
    d.out_features = out_features;
    d.r = r;
    d.layout_A = RITE_RANK_FIRST;
    d.layout_B = RITE_RANK_LAST;
    d.lr_scale = 1.0;
    return d;
}

/* layer i's rite_desc (config: the model's with lr scaled) */
static void rite__model_layer_desc(const rite_model_desc *md, int i, const rite_config *cfg, rite_config *lc,
                                   rite_desc *d)
{
    const rite_lora *g = &md->layers[i];
    memset(d, 0, sizeof *d);
    *lc = *cfg;
    lc->lr = cfg->lr * g->lr_scale;
    d->m = g->in_features;
    d->n = g->out_features;
    d->r = g->r;
    d->optimizer = md->optimizer;
    d->precision = md->precision;
    d->layout_L = g->layout_A;
    d->layout_R = g->layout_B;
    d->config = lc;
    d->allocator = md->allocator;
    d->keep_basis = md->keep_basis;
}

/* checks a model desc; *cfg gets its config */
static rite_status rite__model_check(const rite_model_desc *md, rite_config *cfg, char *msg, size_t n)
{
    rite_status st;
    int i;
    if (!md) return rite__say(msg, n, RITE_ERR_NULL_ARGUMENT, "desc is NULL");
    if (!md->layers) return rite__say(msg, n, RITE_ERR_NULL_ARGUMENT, "desc->layers is NULL");
    if (md->n_layers <= 0) return rite__say(msg, n, RITE_ERR_MODEL, "n_layers = %d: it must be positive", md->n_layers);
    if (md->threads < 0 || md->threads > RITE__MAX_THREADS)
        return rite__say(msg, n, RITE_ERR_THREADS, "threads = %d: it must be 0 to %d", md->threads, RITE__MAX_THREADS);
#ifndef RITE__PTHREADS
    if (md->threads > 1 && !md->parallel_for)
        return rite__say(msg, n, RITE_ERR_THREADS, "threads = %d without POSIX threads: give a parallel_for",
                         md->threads);
#endif
    if (md->optimizer != RITE_LORA_RITE && md->optimizer != RITE_ADAMW)
        return rite__say(msg, n, RITE_ERR_OPTIMIZER, "optimizer = %d", (int)md->optimizer);
    if (md->precision != RITE_FLOAT32 && md->precision != RITE_FLOAT64)
        return rite__say(msg, n, RITE_ERR_PRECISION, "precision = %d", (int)md->precision);
    *cfg = md->config ? *md->config : rite_config_default(md->optimizer);
    st = rite__check_config(cfg, md->optimizer, md->precision, msg, n);
    if (st != RITE_OK) return st;
    for (i = 0; i < md->n_layers; i++) {
        const rite_lora *g = &md->layers[i];
        rite_desc d;
        rite_config lc;
        char detail[200];
        int mn = g->in_features < g->out_features ? g->in_features : g->out_features;
        if (g->in_features <= 0 || g->out_features <= 0 || g->r <= 0)
            return rite__say(msg, n, RITE_ERR_SIZE, "layer %d: in_features = %d, out_features = %d, r = %d: each must "
                             "be positive", i, g->in_features, g->out_features, g->r);
        if (g->r > mn)
            return rite__say(msg, n, RITE_ERR_RANK, "layer %d: r = %d exceeds min(in_features, out_features) = %d", i,
                             g->r, mn);
        if (!(g->lr_scale > 0 && g->lr_scale <= DBL_MAX))
            return rite__say(msg, n, RITE_ERR_LR, "layer %d: lr_scale = %g: it must be finite and > 0 (rite_lora_peft "
                             "sets 1)", i, g->lr_scale);
        rite__model_layer_desc(md, i, cfg, &lc, &d);
        st = rite_desc_check_detail(&d, detail, sizeof detail);
        if (st != RITE_OK) return rite__say(msg, n, st, "layer %d: %s", i, detail);
    }
    return RITE_OK;
}

/* The model's own block: struct, module copies, layer pointers, statuses,
   sums, workspace pointers, the pool; then the workspaces, one block. With
   base == NULL it only counts. */
static size_t rite__model_carve(rite_model *m, char *base, int n, int workers, size_t wsb, int pool)
{
    rite__carver c;
    int w;
    c.base = base;
    c.off = 0;
    rite__carve(&c, sizeof(rite_model));
    m->mods = (rite_lora *)rite__carve(&c, (size_t)n * sizeof(rite_lora));
    m->lay = (rite_layer **)rite__carve(&c, (size_t)n * sizeof(rite_layer *));
    m->st = (rite_status *)rite__carve(&c, (size_t)n * sizeof(rite_status));
    m->ss = (double *)rite__carve(&c, (size_t)n * sizeof(double));
    m->ext = (rite__extent *)rite__carve(&c, (size_t)4 * (size_t)n * sizeof(rite__extent));
    m->ws = (char **)rite__carve(&c, (size_t)workers * sizeof(char *));
#ifdef RITE__PTHREADS
    m->pool = pool ? (rite__pool *)rite__carve(&c, sizeof(rite__pool)) : NULL;
#else
    (void)pool;
#endif
    for (w = 0; w < workers; w++) {
        char *p = (char *)rite__carve(&c, wsb);
        if (base) m->ws[w] = p;
    }
    return c.off + RITE__ALIGN;
}

/* sizes of a model: the layers' memory, the largest workspace */
static rite_status rite__model_sizes(const rite_model_desc *md, const rite_config *cfg, rite_memory *mem,
                                     size_t *wsb)
{
    int i;
    memset(mem, 0, sizeof *mem);
    *wsb = 0;
    for (i = 0; i < md->n_layers; i++) {
        rite_layer tmp;
        rite_memory lm;
        rite_config lc;
        rite_desc d;
        size_t b;
        rite_status st;
        rite__model_layer_desc(md, i, cfg, &lc, &d);
        st = rite__setup(&d, &tmp);
        if (st != RITE_OK) return st;
        tmp.shared = 1;
        rite__plan(&tmp, NULL, &lm);
        b = rite__ws_bytes(&tmp);
        *wsb = b > *wsb ? b : *wsb;
        mem->state_bytes += lm.state_bytes;
        mem->total_bytes += lm.total_bytes;
    }
    return RITE_OK;
}

static int rite__model_workers(const rite_model_desc *md)
{
    return md->threads > 1 ? md->threads : 1;
}

static int rite__model_pooled(const rite_model_desc *md)
{
    return rite__model_workers(md) > 1 && !md->parallel_for;
}

LORA_RITE_API rite_status rite_model_memory_query(const rite_model_desc *desc, rite_memory *out)
{
    rite_config cfg;
    rite_memory mem;
    rite_model tmp;
    size_t wsb;
    char msg[256];
    rite_status st;
    if (!out) return RITE_ERR_NULL_ARGUMENT;
    st = rite__model_check(desc, &cfg, msg, sizeof msg);
    if (st == RITE_OK) st = rite__model_sizes(desc, &cfg, &mem, &wsb);
    if (st != RITE_OK) return st;
    mem.total_bytes += rite__model_carve(&tmp, NULL, desc->n_layers, rite__model_workers(desc), wsb,
                                         rite__model_pooled(desc));
    mem.scratch_bytes = mem.total_bytes - mem.state_bytes;
    *out = mem;
    return RITE_OK;
}

LORA_RITE_API void rite_model_free(rite_model *model)
{
    rite_allocator a;
    int i;
    if (!model) return;
#ifdef RITE__PTHREADS
    if (model->pool) rite__pool_stop(model->pool);
#endif
    for (i = 0; i < model->desc.n_layers; i++) rite_free(model->lay[i]);
    a = model->desc.allocator;
    rite__dealloc(&a, model->raw);
}

LORA_RITE_API rite_status rite_model_init(rite_model **model, const rite_model_desc *desc, char *detail,
                                          size_t detail_size)
{
    rite_model tmp, *m;
    rite_config cfg;
    rite_memory mem;
    size_t wsb, bytes;
    char msg[256], *raw, *base;
    rite_status st;
    int i, n;
    if (detail && detail_size) detail[0] = 0;
    if (!model) return rite__say(detail, detail_size, RITE_ERR_NULL_ARGUMENT, "model is NULL");
    *model = NULL;
    st = rite__model_check(desc, &cfg, msg, sizeof msg);
    if (st == RITE_OK) st = rite__model_sizes(desc, &cfg, &mem, &wsb);
    if (st != RITE_OK) return rite__say(detail, detail_size, st, "%s", msg);
    n = desc->n_layers;
    bytes = rite__model_carve(&tmp, NULL, n, rite__model_workers(desc), wsb, rite__model_pooled(desc));
    raw = (char *)rite__alloc(&desc->allocator, bytes);
    if (!raw) return rite__say(detail, detail_size, RITE_ERR_OUT_OF_MEMORY, "%zu bytes", bytes);
    base = raw + (RITE__ALIGN - (size_t)((uintptr_t)raw % RITE__ALIGN)) % RITE__ALIGN;
    memset(base, 0, bytes - RITE__ALIGN);
    m = (rite_model *)(void *)base;
    rite__model_carve(m, base, n, rite__model_workers(desc), wsb, rite__model_pooled(desc));
    m->raw = raw;
    m->desc = *desc;
    m->desc.config = NULL;
    m->workers = rite__model_workers(desc);
    m->cfg = cfg;
    memcpy(m->mods, desc->layers, (size_t)n * sizeof(rite_lora));
    m->desc.layers = m->mods;
    m->desc.n_layers = 0;   /* counts the layers made, for rite_model_free */
    for (i = 0; i < n && st == RITE_OK; i++) {
        rite_config lc;
        rite_desc d;
        rite__model_layer_desc(&m->desc, i, &cfg, &lc, &d);
        st = rite__layer_new(&m->lay[i], &d, 1);
        if (st != RITE_OK) break;
        m->lay[i]->home = m->ws[0];
        m->lay[i]->names = rite__model_names;
        m->desc.n_layers++;
    }
#ifdef RITE__PTHREADS
    if (st == RITE_OK && m->pool && !rite__pool_start(m->pool, m->workers - 1)) {
        m->pool = NULL;
        st = RITE_ERR_THREADS;
    }
#endif
    if (st != RITE_OK) {
        rite_model_free(m);
        return rite__say(detail, detail_size, st, "%s",
                         st == RITE_ERR_THREADS ? "a thread could not be started" : "out of memory");
    }
    m->mem = mem;
    m->mem.total_bytes += bytes;
    m->mem.scratch_bytes = m->mem.total_bytes - m->mem.state_bytes;
    *model = m;
    return RITE_OK;
}

/* ---- a model's step ---- */

/* element i of a caller's array of buffers (float *const * or double *const *) */
static void *rite__at(rite_precision prec, const void *arr, int i)
{
    if (prec == RITE_FLOAT32) return (void *)((float *const *)arr)[i];
    return (void *)((double *const *)arr)[i];
}

/* layer i's buffer a (0 A, 1 B, 2 gA, 3 gB) */
static void *rite__model_buf(const rite_model *m, int a, int i)
{
    return rite__at(m->prec, m->arr[a], i);
}

static void rite__model_task(void *task, int i, int worker)
{
    rite_model *m = (rite_model *)task;
    rite_layer *l = m->lay[i];
    rite__bind(l, m->ws[worker]);
    if (m->phase == RITE__PH_PREPARE) {
        m->st[i] = rite__prepare(l, m->prec, rite__model_buf(m, 0, i), rite__model_buf(m, 1, i),
                                 rite__model_buf(m, 2, i), rite__model_buf(m, 3, i), &m->ss[i]);
    } else if (m->phase == RITE__PH_BEGIN) {
        m->st[i] = rite__apply_begin(l, m->total);
        /* a layer whose bound does not hold is run once without writing */
        if (m->st[i] == RITE_OK && l->desc.optimizer == RITE_LORA_RITE && !l->safe) {
            m->st[i] = rite__lorarite_run(l, 0);
            if (m->st[i] != RITE_OK) rite__apply_failed(l, m->st[i]);
        }
    } else {
        m->st[i] = rite__apply_end(l, m->total);
    }
}

/* keep the model's own workers spinning between phases (1) or not (0) */
static void rite__model_hold(rite_model *m, unsigned long hold)
{
#ifdef RITE__PTHREADS
    if (m->pool) rite__pool_hold(m->pool, hold);
#else
    (void)m;
    (void)hold;
#endif
}

/* runs the phase over every layer; the first layer (in order) that failed, or -1 */
static int rite__model_phase(rite_model *m, int phase)
{
    int i, n = m->desc.n_layers;
    m->phase = phase;
    if (m->workers > 1 && m->desc.parallel_for) {
        m->desc.parallel_for(m->desc.parallel_user, n, m->workers, rite__model_task, m);
    }
#ifdef RITE__PTHREADS
    else if (m->pool) {
        rite__pool_run(m->pool, n, rite__model_task, m);
    }
#endif
    else {
        for (i = 0; i < n; i++) rite__model_task(m, i, 0);
    }
    for (i = 0; i < n; i++)
        if (m->st[i] != RITE_OK) return i;
    return -1;
}

/* Heapsort of the extents by first byte (qsort may allocate, a step must not). */
static void rite__extent_sift(rite__extent *e, size_t root, size_t n)
{
    rite__extent top = e[root];
    size_t child;
    while ((child = 2 * root + 1) < n) {
        if (child + 1 < n && e[child + 1].begin > e[child].begin) child++;
        if (e[child].begin <= top.begin) break;
        e[root] = e[child];
        root = child;
    }
    e[root] = top;
}

static void rite__extent_sort(rite__extent *e, size_t n)
{
    size_t i;
    for (i = n / 2; i-- > 0;) rite__extent_sift(e, i, n);
    for (i = n; i-- > 1;) {
        rite__extent t = e[0];
        e[0] = e[i];
        e[i] = t;
        rite__extent_sift(e, 0, i);
    }
}

/* Of the extents seen so far, the one reaching furthest and the one reaching
   furthest among those of the other layers. */
typedef struct rite__reach {
    const rite__extent *first, *second;
} rite__reach;

static void rite__reach_add(rite__reach *r, const rite__extent *e)
{
    if (!r->first || e->end > r->first->end) {
        if (r->first && r->first->layer != e->layer) r->second = r->first;
        r->first = e;
    } else if (e->layer != r->first->layer && (!r->second || e->end > r->second->end)) {
        r->second = e;
    }
}

/* an extent seen so far, of a layer other than `layer`, that reaches past
   `begin`; NULL when there is none */
static const rite__extent *rite__reach_past(const rite__reach *r, int layer, uintptr_t begin)
{
    const rite__extent *e = r->first && r->first->layer != layer ? r->first : r->second;
    return e && e->end > begin ? e : NULL;
}

/* The arrays m->arr: not NULL, and no factor sharing storage with another
   layer's factor or gradient (the layers run at once). The 4n buffers are
   sorted by address, and one sweep finds any such pair: O(n log n) a step. */
static rite_status rite__model_buffers(rite_model *m)
{
    int i, a, n = m->desc.n_layers;
    size_t es = m->prec == RITE_FLOAT32 ? sizeof(float) : sizeof(double), k;
    static const char *const an[4] = {"A", "B", "gA", "gB"};
    rite__reach all = {NULL, NULL}, factors = {NULL, NULL};
    for (a = 0; a < 4; a++)
        if (!m->arr[a]) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "the array %s is NULL", an[a]);
    for (i = 0; i < n; i++)
        for (a = 0; a < 4; a++) {
            rite__extent *e = &m->ext[4 * i + a];
            e->begin = (uintptr_t)rite__model_buf(m, a, i);
            if (!e->begin)
                return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "layer %d: %s is NULL", i,
                                 rite__model_names[a]);
            e->end = e->begin + (size_t)(a & 1 ? m->mods[i].out_features : m->mods[i].in_features) *
                                    (size_t)m->mods[i].r * es;
            e->layer = i;
            e->which = a;
        }
    rite__extent_sort(m->ext, (size_t)4 * (size_t)n);
    for (k = 0; k < (size_t)4 * (size_t)n; k++) {
        const rite__extent *c = &m->ext[k];
        const rite__extent *o = rite__reach_past(c->which < 2 ? &all : &factors, c->layer, c->begin);
        if (o) {   /* the factor first */
            const rite__extent *f = c->which < 2 ? c : o, *g = c->which < 2 ? o : c;
            return rite__say(m->msg, sizeof m->msg, RITE_ERR_ALIASING, "layer %d's %s shares storage with layer %d's %s",
                             f->layer, rite__model_names[f->which], g->layer, rite__model_names[g->which]);
        }
        rite__reach_add(&all, c);
        if (c->which < 2) rite__reach_add(&factors, c);
    }
    return RITE_OK;
}

/* every layer's pending prepare given up, as if never made */
static void rite__model_unprepare(rite_model *m, const char *why)
{
    int i;
    for (i = 0; i < m->desc.n_layers; i++) {
        m->lay[i]->prepared = 0;
        m->lay[i]->unprepared = why;
    }
    m->prepared = 0;
}

static rite_status rite__model_prepare(rite_model *m, rite_precision prec, const void *A, const void *B,
                                       const void *gA, const void *gB, double *sumsq)
{
    rite_status st;
    int bad, i;
    double total = 0;
    if (!m) return RITE_ERR_NULL_ARGUMENT;
    m->msg[0] = 0;
    if (!sumsq) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "sumsq is NULL");
    if (prec != m->desc.precision)
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_PRECISION, "%s buffers for a %s model",
                         prec == RITE_FLOAT32 ? "float" : "double",
                         m->desc.precision == RITE_FLOAT32 ? "float" : "double");
    m->prec = prec;
    m->arr[0] = A;
    m->arr[1] = B;
    m->arr[2] = gA;
    m->arr[3] = gB;
    st = rite__model_buffers(m);
    if (st != RITE_OK) return st;
    rite__model_unprepare(m, "the model's prepare did not finish");
    bad = rite__model_phase(m, RITE__PH_PREPARE);
    if (bad >= 0) {
        rite__model_unprepare(m, "the model's prepare failed");
        return rite__say(m->msg, sizeof m->msg, m->st[bad], "layer %d: %s; no layer was changed", bad,
                         m->lay[bad]->msg);
    }
    for (i = 0; i < m->desc.n_layers; i++) total += m->ss[i];   /* in layer order */
    if (!(total <= DBL_MAX)) {
        rite__model_unprepare(m, "the model's prepare failed");
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_NONFINITE_UPDATE,
                         "the layers' sum of squares overflows; no layer was changed");
    }
    m->own = total;
    m->prepared = 1;
    *sumsq = total;
    return RITE_OK;
}

/* the model's diagnostics from its layers' */
static void rite__model_diag(rite_model *m)
{
    rite_diagnostics *d = &m->diag;
    double u2 = 0, cnt = 0, g2 = 0;
    int i;
    memset(d, 0, sizeof *d);
    d->step = m->steps;
    d->clip_factor = 1.0;
    for (i = 0; i < m->desc.n_layers; i++) {
        const rite_layer *l = m->lay[i];
        u2 += l->diag_u2;
        cnt += l->diag_n;
        g2 += l->diag.grad_norm * l->diag.grad_norm;
        d->skipped += l->diag.skipped;
        d->rho_max = l->diag.rho_max > d->rho_max ? l->diag.rho_max : d->rho_max;
        d->cond_max = l->diag.cond_max > d->cond_max ? l->diag.cond_max : d->cond_max;
        if (i == 0) d->clip_factor = l->diag.clip_factor;
    }
    d->grad_norm = m->desc.optimizer == RITE_LORA_RITE ? sqrt(m->total) : sqrt(g2);
    d->update_rms = sqrt(u2 / cnt);
}

LORA_RITE_API rite_status rite_model_apply(rite_model *model, double total_sumsq)
{
    rite_model *m = model;
    int bad, late;
    if (!m) return RITE_ERR_NULL_ARGUMENT;
    m->msg[0] = 0;
    if (!m->prepared)
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_NOT_PREPARED, "no pending rite_model_prepare_*");
    if (!(total_sumsq >= m->own && total_sumsq <= DBL_MAX))
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_SUMSQ,
                         "total_sumsq = %g: it must be finite and >= the model's own %g", total_sumsq, m->own);
    m->total = total_sumsq;
    rite__model_hold(m, 1);
    bad = rite__model_phase(m, RITE__PH_BEGIN);                  /* every check, and the dry runs */
    late = bad < 0 ? rite__model_phase(m, RITE__PH_END) : -1;   /* the writes: cannot fail */
    rite__model_hold(m, 0);
    if (bad >= 0)
        return rite__say(m->msg, sizeof m->msg, m->st[bad], "layer %d: %s; no layer was changed", bad,
                         m->lay[bad]->msg);
    if ((bad = late) >= 0) {   /* not reachable: the checks and dry runs passed */
        m->prepared = 0;
        return rite__say(m->msg, sizeof m->msg, m->st[bad], "layer %d failed after its checks passed: %s", bad,
                         m->lay[bad]->msg);
    }
    m->steps++;
    m->prepared = 0;
    rite__model_diag(m);
    return RITE_OK;
}

LORA_RITE_API rite_status rite_model_prepare_f32(rite_model *model, float *const *A, float *const *B,
                                                 float *const *gA, float *const *gB, double *sumsq)
{
    return rite__model_prepare(model, RITE_FLOAT32, (const void *)A, (const void *)B, (const void *)gA,
                               (const void *)gB, sumsq);
}

LORA_RITE_API rite_status rite_model_prepare_f64(rite_model *model, double *const *A, double *const *B,
                                                 double *const *gA, double *const *gB, double *sumsq)
{
    return rite__model_prepare(model, RITE_FLOAT64, (const void *)A, (const void *)B, (const void *)gA,
                               (const void *)gB, sumsq);
}

static rite_status rite__model_step(rite_model *m, rite_precision prec, const void *A, const void *B,
                                    const void *gA, const void *gB)
{
    double own;
    rite_status st;
    if (!m) return RITE_ERR_NULL_ARGUMENT;
    rite__model_hold(m, 1);
    st = rite__model_prepare(m, prec, A, B, gA, gB, &own);
    if (st == RITE_OK) st = rite_model_apply(m, own);
    rite__model_hold(m, 0);
    if (st != RITE_OK && !m->prepared) return st;
    if (st != RITE_OK) rite__model_unprepare(m, "the model's step failed");
    return st;
}

LORA_RITE_API rite_status rite_model_step_f32(rite_model *model, float *const *A, float *const *B,
                                              float *const *gA, float *const *gB)
{
    return rite__model_step(model, RITE_FLOAT32, (const void *)A, (const void *)B, (const void *)gA,
                            (const void *)gB);
}

LORA_RITE_API rite_status rite_model_step_f64(rite_model *model, double *const *A, double *const *B,
                                              double *const *gA, double *const *gB)
{
    return rite__model_step(model, RITE_FLOAT64, (const void *)A, (const void *)B, (const void *)gA,
                            (const void *)gB);
}

/* ---- a model's settings and queries ---- */

/* checks every layer's config for the model config c, then sets them */
static rite_status rite__model_configure(rite_model *m, const rite_config *c)
{
    int i, pass;
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < m->desc.n_layers; i++) {
            rite_layer *l = m->lay[i];
            rite_config lc = *c;
            lc.lr = c->lr * m->mods[i].lr_scale;
            if (pass == 0) {
                rite_status st = rite__check_new_config(&lc, l->desc.optimizer, l->desc.precision, l->msg,
                                                        sizeof l->msg);
                if (st != RITE_OK) return rite__say(m->msg, sizeof m->msg, st, "layer %d: %s", i, l->msg);
                continue;
            }
            rite__config_set(l, &lc);
            m->prepared &= l->prepared;   /* a change of skip cancels the model's prepare too */
        }
    m->cfg = *c;
    return RITE_OK;
}

LORA_RITE_API rite_status rite_model_set_config(rite_model *model, const rite_config *config)
{
    rite_status st;
    if (!model) return RITE_ERR_NULL_ARGUMENT;
    st = rite__check_new_config(config, model->desc.optimizer, model->desc.precision, model->msg, sizeof model->msg);
    return st != RITE_OK ? st : rite__model_configure(model, config);
}

LORA_RITE_API rite_status rite_model_set_lr(rite_model *model, double lr)
{
    rite_config c = rite_model_get_config(model);
    if (!model) return RITE_ERR_NULL_ARGUMENT;
    c.lr = lr;   /* every layer gets lr times its lr_scale */
    return rite_model_set_config(model, &c);
}

LORA_RITE_API rite_config rite_model_get_config(const rite_model *model)
{
    return model ? model->cfg : rite_get_config(NULL);
}

LORA_RITE_API long long rite_model_step_count(const rite_model *model)
{
    return model ? model->steps : 0;
}

LORA_RITE_API int rite_model_layer_count(const rite_model *model)
{
    return model ? model->desc.n_layers : 0;
}

LORA_RITE_API const rite_layer *rite_model_layer(const rite_model *model, int i)
{
    return model && i >= 0 && i < model->desc.n_layers ? model->lay[i] : NULL;
}

LORA_RITE_API const char *rite_model_last_error(const rite_model *model)
{
    return model ? model->msg : "";
}

LORA_RITE_API rite_status rite_model_diagnostics(const rite_model *model, rite_diagnostics *out)
{
    if (!model || !out) return RITE_ERR_NULL_ARGUMENT;
    *out = model->diag;
    return RITE_OK;
}

LORA_RITE_API void rite_model_reset(rite_model *model)
{
    int i;
    if (!model) return;
    for (i = 0; i < model->desc.n_layers; i++) rite_reset(model->lay[i]);
    model->steps = 0;
    model->prepared = 0;
    memset(&model->diag, 0, sizeof model->diag);
}

LORA_RITE_API void rite_model_factors_changed(rite_model *model)
{
    int i;
    if (!model) return;
    for (i = 0; i < model->desc.n_layers; i++) rite_factors_changed(model->lay[i]);
    model->prepared = 0;
}

/* ---- a model's checkpoint ----

   Layout, every number little-endian:
     0  char[8] magic "LRITEMDL"     8  u32 version (1)
    12  u32 header bytes (48 + 32 n)  16  u32 flags: 1 the factors follow the states
    20  u32 optimizer   24 u32 precision   28 u32 keep_basis   32 u32 n (layers)
    36  u32 0           40  u64 the model's step count
    48  per layer, 32 bytes: u32 in_features, out_features, r, layout_A, layout_B, 0;
        f64 lr_scale (recorded, not compared)
     .  per layer, its state as rite_state_copy writes it (numbers little-endian)
     .  with flag 1, per layer lora_A then lora_B, packed in their storage
   end  u64 FNV-1a 64 of every byte before it */
#define RITE__MCKPT_VERSION 1u
#define RITE__MCKPT_HEAD 48u
#define RITE__MCKPT_LAYER 32u

static void rite__put_u32(unsigned char *p, uint32_t v)
{
    int i;
    for (i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t rite__get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void rite__put_u64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t rite__get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static size_t rite__model_factor_bytes(const rite_model *m, int i)
{
    return (size_t)(m->mods[i].in_features + m->mods[i].out_features) * (size_t)m->mods[i].r * m->lay[i]->es;
}

static size_t rite__mckpt_size(const rite_model *m, int with_factors)
{
    size_t n = RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)m->desc.n_layers + 8;
    int i;
    for (i = 0; i < m->desc.n_layers; i++)
        n += rite__state_bytes(m->lay[i]) + (with_factors ? rite__model_factor_bytes(m, i) : 0);
    return n;
}

LORA_RITE_API size_t rite_model_checkpoint_size(const rite_model *model, int with_factors)
{
    return model ? rite__mckpt_size(model, with_factors != 0) : 0;
}

static void rite__mckpt_header(const rite_model *m, int with_factors, unsigned char *h)
{
    int i;
    memset(h, 0, RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)m->desc.n_layers);
    memcpy(h, "LRITEMDL", 8);
    rite__put_u32(h + 8, RITE__MCKPT_VERSION);
    rite__put_u32(h + 12, (uint32_t)(RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)m->desc.n_layers));
    rite__put_u32(h + 16, with_factors ? 1u : 0u);
    rite__put_u32(h + 20, (uint32_t)m->desc.optimizer);
    rite__put_u32(h + 24, (uint32_t)m->desc.precision);
    rite__put_u32(h + 28, (uint32_t)(m->desc.keep_basis != 0));
    rite__put_u32(h + 32, (uint32_t)m->desc.n_layers);
    rite__put_u64(h + 40, (uint64_t)m->steps);
    for (i = 0; i < m->desc.n_layers; i++) {
        unsigned char *q = h + RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)i;
        const rite_lora *g = &m->mods[i];
        rite__put_u32(q, (uint32_t)g->in_features);
        rite__put_u32(q + 4, (uint32_t)g->out_features);
        rite__put_u32(q + 8, (uint32_t)g->r);
        rite__put_u32(q + 12, (uint32_t)g->layout_A);
        rite__put_u32(q + 16, (uint32_t)g->layout_B);
        memcpy(q + 24, &g->lr_scale, 8);
        rite__le_swap(q + 24, 8, 8);
    }
}

LORA_RITE_API rite_status rite_model_checkpoint_save(const rite_model *model, const void *A, const void *B,
                                                     void *dst, size_t dst_size)
{
    rite_model *m = (rite_model *)(uintptr_t)model;   /* only its message changes */
    unsigned char *o = (unsigned char *)dst;
    int i, j, nf, wf;
    size_t n;
    if (!m) return RITE_ERR_NULL_ARGUMENT;
    m->msg[0] = 0;
    if (!dst) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "dst is NULL");
    if (!A != !B) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "%s is NULL", A ? "B" : "A");
    wf = A != NULL;
    for (i = 0; wf && i < m->desc.n_layers; i++)
        if (!rite__at(m->desc.precision, A, i) || !rite__at(m->desc.precision, B, i))
            return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "layer %d: %s is NULL", i,
                             !rite__at(m->desc.precision, A, i) ? "lora_A" : "lora_B");
    n = rite__mckpt_size(m, wf);
    if (dst_size < n)
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_BUFFER_SIZE, "%zu bytes, the checkpoint needs %zu", dst_size,
                         n);
    rite__mckpt_header(m, wf, o);
    o += RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)m->desc.n_layers;
    for (i = 0; i < m->desc.n_layers; i++) {
        rite__field f[RITE__MAX_FIELDS] = {{NULL, 0, 0, 0, 0}};
        nf = rite__state_fields(m->lay[i], f);
        for (j = 0; j < nf; j++) {
            rite__field_read(&f[j], 0, f[j].n, o);
            rite__le_swap(o, f[j].n, rite__field_es(m->lay[i], &f[j]));
            o += f[j].n;
        }
    }
    for (i = 0; wf && i < m->desc.n_layers; i++) {
        size_t na = (size_t)m->mods[i].in_features * (size_t)m->mods[i].r * m->lay[i]->es;
        size_t nb = rite__model_factor_bytes(m, i) - na;
        memcpy(o, rite__at(m->desc.precision, A, i), na);
        rite__le_swap(o, na, m->lay[i]->es);
        memcpy(o + na, rite__at(m->desc.precision, B, i), nb);
        rite__le_swap(o + na, nb, m->lay[i]->es);
        o += na + nb;
    }
    rite__put_u64(o, rite__fnv1a(RITE__FNV_BASIS, dst, n - 8));
    return RITE_OK;
}

/* the header against the model: format, version, then the first field that differs */
static rite_status rite__mckpt_check_header(rite_model *m, const unsigned char *in, size_t size, int want_factors)
{
    static const char *const opt[2] = {"LoRA-RITE", "AdamW"}, *const prec[2] = {"float", "double"};
    static const char *const lf[5] = {"in_features", "out_features", "r", "layout_A", "layout_B"};
    char *msg = m->msg;
    size_t ms = sizeof m->msg, head;
    uint32_t v, n;
    int i, j;
    if (size < RITE__MCKPT_HEAD || memcmp(in, "LRITEMDL", 8) != 0)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "%s",
                         size < 8 || memcmp(in, "LRITEMDL", 8) != 0 ? "not a lora_rite model checkpoint"
                                                                   : "truncated in its header");
    if ((v = rite__get_u32(in + 8)) != RITE__MCKPT_VERSION)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_VERSION, "version %u; this library reads version %u", v,
                         RITE__MCKPT_VERSION);
    v = rite__get_u32(in + 20);
    if (v != (uint32_t)m->desc.optimizer)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "optimizer: %s in the checkpoint, %s in the model",
                         v < 2 ? opt[v] : "unknown", opt[m->desc.optimizer]);
    v = rite__get_u32(in + 24);
    if (v != (uint32_t)m->desc.precision)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "precision: %s in the checkpoint, %s in the model",
                         v < 2 ? prec[v] : "unknown", prec[m->desc.precision]);
    v = rite__get_u32(in + 28);
    if (v != (uint32_t)(m->desc.keep_basis != 0))
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "keep_basis: %u in the checkpoint, %d in the model", v,
                         m->desc.keep_basis != 0);
    n = rite__get_u32(in + 32);
    if (n != (uint32_t)m->desc.n_layers)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "layer count: %u in the checkpoint, %d in the model", n,
                         m->desc.n_layers);
    head = RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)n;
    if (rite__get_u32(in + 12) != head)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "header bytes %u for %u layers",
                         rite__get_u32(in + 12), n);
    if (size < head) return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "truncated in its layer table");
    for (i = 0; i < m->desc.n_layers; i++) {
        const unsigned char *q = in + RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)i;
        const rite_lora *g = &m->mods[i];
        int want[5];
        want[0] = g->in_features;
        want[1] = g->out_features;
        want[2] = g->r;
        want[3] = (int)g->layout_A;
        want[4] = (int)g->layout_B;
        for (j = 0; j < 5; j++)
            if (rite__get_u32(q + 4 * j) != (uint32_t)want[j])
                return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "layer %d: %s is %u in the checkpoint, %d in "
                                 "the model", i, lf[j], rite__get_u32(q + 4 * j), want[j]);
    }
    v = rite__get_u32(in + 16);
    if (v > 1) return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "flags %#x", v);
    if (want_factors && !v)
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_MISMATCH, "the checkpoint holds no factors to load");
    if (size != rite__mckpt_size(m, (int)v))
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_FORMAT, "%zu bytes, the model's checkpoint has %zu", size,
                         rite__mckpt_size(m, (int)v));
    if (rite__get_u64(in + size - 8) != rite__fnv1a(RITE__FNV_BASIS, in, size - 8))
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_CORRUPT, "checksum mismatch");
    if (rite__get_u64(in + 40) >= ((uint64_t)1 << 62))
        return rite__say(msg, ms, RITE_ERR_CHECKPOINT_CORRUPT, "step count 2^62 or more");
    return RITE_OK;
}

/* layer i's state at p (of the checkpoint in): rite__state_problem's
   checks, and the model's step count (checked below 2^62 already) */
static rite_status rite__mckpt_check_state(rite_model *m, int i, const unsigned char *in, const unsigned char *p)
{
    uint64_t steps, model_steps = rite__get_u64(in + 40);
    const char *why = rite__state_problem(m->lay[i], p, 1, &steps);
    if (why)
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_CHECKPOINT_CORRUPT, "layer %d: its state holds %s", i, why);
    if (steps != model_steps)
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_CHECKPOINT_CORRUPT,
                         "layer %d: step count %llu, the model's %llu", i, (unsigned long long)steps,
                         (unsigned long long)model_steps);
    return RITE_OK;
}

LORA_RITE_API rite_status rite_model_checkpoint_load(rite_model *model, const void *A, const void *B,
                                                     const void *src, size_t src_size)
{
    rite_model *m = model;
    const unsigned char *in = (const unsigned char *)src, *p;
    rite_status st;
    int i, j, nf, has;
    if (!m) return RITE_ERR_NULL_ARGUMENT;
    m->msg[0] = 0;
    if (!src) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "src is NULL");
    if (!A != !B) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "%s is NULL", A ? "B" : "A");
    for (i = 0; A && i < m->desc.n_layers; i++)
        if (!rite__at(m->desc.precision, A, i) || !rite__at(m->desc.precision, B, i))
            return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "layer %d: %s is NULL", i,
                             !rite__at(m->desc.precision, A, i) ? "lora_A" : "lora_B");
    st = rite__mckpt_check_header(m, in, src_size, A != NULL);
    if (st != RITE_OK) return st;
    has = (int)rite__get_u32(in + 16);
    p = in + RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)m->desc.n_layers;
    for (i = 0; i < m->desc.n_layers; p += rite__state_bytes(m->lay[i]), i++) {
        st = rite__mckpt_check_state(m, i, in, p);
        if (st != RITE_OK) return st;
    }
    for (i = 0; has && i < m->desc.n_layers; p += rite__model_factor_bytes(m, i), i++) {
        size_t e, es = m->lay[i]->es;
        uint64_t u;
        for (e = 0; e < rite__model_factor_bytes(m, i); e += es)
            if (rite__number_at(p + e, es, 1, &u) * 0 != 0)
                return rite__say(m->msg, sizeof m->msg, RITE_ERR_CHECKPOINT_CORRUPT, "layer %d: a factor holds NaN "
                                 "or Inf", i);
    }
    /* all checked: copy */
    p = in + RITE__MCKPT_HEAD + RITE__MCKPT_LAYER * (size_t)m->desc.n_layers;
    for (i = 0; i < m->desc.n_layers; i++) {
        rite__field f[RITE__MAX_FIELDS] = {{NULL, 0, 0, 0, 0}};
        rite_layer *l = m->lay[i];
        nf = rite__state_fields(l, f);
        for (j = 0; j < nf; p += f[j].n, j++) {
            rite__field_write(&f[j], p);
            rite__le_swap((unsigned char *)f[j].p, f[j].n, rite__field_es(l, &f[j]));
        }
        rite__moments_loaded(l);
        rite__cancel(l, "the pending prepare was cancelled by a checkpoint load");
    }
    for (i = 0; A && i < m->desc.n_layers; i++) {
        size_t na = (size_t)m->mods[i].in_features * (size_t)m->mods[i].r * m->lay[i]->es;
        size_t nb = rite__model_factor_bytes(m, i) - na;
        unsigned char *a = (unsigned char *)rite__at(m->desc.precision, A, i);
        unsigned char *b = (unsigned char *)rite__at(m->desc.precision, B, i);
        memcpy(a, p, na);
        rite__le_swap(a, na, m->lay[i]->es);
        memcpy(b, p + na, nb);
        rite__le_swap(b, nb, m->lay[i]->es);
        p += na + nb;
    }
    m->steps = (long long)rite__get_u64(in + 40);
    m->prepared = 0;
    memset(&m->diag, 0, sizeof m->diag);
    return RITE_OK;
}

LORA_RITE_API rite_status rite_model_checkpoint_save_file(const rite_model *model, const void *A, const void *B,
                                                          const char *path)
{
    rite_model *m = (rite_model *)(uintptr_t)model;
    size_t n;
    void *buf;
    FILE *fp;
    rite_status st;
    int ok;
    if (!m) return RITE_ERR_NULL_ARGUMENT;
    if (!path) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "path is NULL");
    n = rite__mckpt_size(m, A != NULL);
    buf = rite__alloc(&m->desc.allocator, n);
    if (!buf) return rite__say(m->msg, sizeof m->msg, RITE_ERR_OUT_OF_MEMORY, "%zu bytes", n);
    st = rite_model_checkpoint_save(m, A, B, buf, n);
    if (st == RITE_OK) {
        fp = fopen(path, "wb");
        ok = fp && fwrite(buf, 1, n, fp) == n;
        if (fp && fclose(fp) != 0) ok = 0;
        if (!ok) st = rite__say(m->msg, sizeof m->msg, RITE_ERR_IO, "could not write %s", path);
    }
    rite__dealloc(&m->desc.allocator, buf);
    return st;
}

LORA_RITE_API rite_status rite_model_checkpoint_load_file(rite_model *model, const void *A, const void *B,
                                                          const char *path)
{
    rite_model *m = model;
    size_t want, got;
    void *buf;
    FILE *fp;
    rite_status st;
    if (!m) return RITE_ERR_NULL_ARGUMENT;
    m->msg[0] = 0;
    if (!path) return rite__say(m->msg, sizeof m->msg, RITE_ERR_NULL_ARGUMENT, "path is NULL");
    fp = fopen(path, "rb");
    if (!fp) return rite__say(m->msg, sizeof m->msg, RITE_ERR_IO, "could not open %s", path);
    /* no file of this model is longer than its checkpoint with the factors:
       read one byte more, which shows a file that is too long */
    want = rite__mckpt_size(m, 1);
    buf = rite__alloc(&m->desc.allocator, want + 1);
    if (!buf) {
        fclose(fp);
        return rite__say(m->msg, sizeof m->msg, RITE_ERR_OUT_OF_MEMORY, "%zu bytes", want + 1);
    }
    got = fread(buf, 1, want + 1, fp);
    if (ferror(fp)) st = rite__say(m->msg, sizeof m->msg, RITE_ERR_IO, "could not read %s", path);
    else st = rite_model_checkpoint_load(m, A, B, buf, got);
    fclose(fp);
    rite__dealloc(&m->desc.allocator, buf);
    return st;
}

/* ---- the learning-rate schedule ---- */

LORA_RITE_API double rite_schedule_lr(const rite_schedule *s, long long step)
{
    double t;
    if (!s || step < 0 || s->warmup_steps < 0 || s->total_steps < 0 || !(s->lr >= 0 && s->lr <= DBL_MAX) ||
        !(s->final_lr >= 0 && s->final_lr <= DBL_MAX) ||
        (s->decay != RITE_DECAY_CONSTANT && s->decay != RITE_DECAY_LINEAR && s->decay != RITE_DECAY_COSINE))
        return NAN;
    if (s->decay != RITE_DECAY_CONSTANT && s->total_steps < s->warmup_steps) return NAN;
    if (step < s->warmup_steps) return s->lr * (double)(step + 1) / (double)s->warmup_steps;
    if (s->decay == RITE_DECAY_CONSTANT) return s->lr;
    if (step >= s->total_steps) return s->final_lr;
    t = (double)(step - s->warmup_steps) / (double)(s->total_steps - s->warmup_steps);
    if (s->decay == RITE_DECAY_LINEAR) return s->final_lr + (s->lr - s->final_lr) * (1.0 - t);
    return s->final_lr + (s->lr - s->final_lr) * 0.5 * (1.0 + cos(3.14159265358979323846 * t));
}

LORA_RITE_API const char *rite_status_string(rite_status status)
{
    switch (status) {
#define RITE__STATUS_TEXT(code, text) case code: return text;
    RITE_STATUS_LIST(RITE__STATUS_TEXT)
#undef RITE__STATUS_TEXT
    case RITE_STATUS_COUNT: break;
    }
    return "unknown status code";
}

#endif /* LORA_RITE_IMPLEMENTATION */

/*
MIT License

Copyright (c) 2026 the lora_rite authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
*/
