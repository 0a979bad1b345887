/* char_lm.c - LoRA fine-tuning of a character-level language model, LoRA-RITE vs AdamW.

   A small, complete trainer in one file: data, model, forward, backward,
   optimizers, training loop and logging. It pretrains a character-level MLP
   language model on English words, freezes it, attaches LoRA adapters to
   every linear layer and fine-tunes them on German (or French) words, once
   with LoRA-RITE and once with the library's AdamW, each at the best
   learning rate of a small sweep. It prints a table of the losses, writes the
   loss curves as CSV and draws them (PNG with gnuplot, else an SVG).

   DATA
   Word lists of Debian: /usr/share/dict/american-english (package wamerican)
   for pretraining, /usr/share/dict/ngerman (wngerman) or /usr/share/dict/french
   (wfrench) for fine-tuning. Words are lowercased and deduplicated. The
   vocabulary has 32 tokens:
       0      '.'  end of word (and the padding before a word's first letter)
       1..26  a..z
       27..31 ä ö ü ß é
   Other accented letters lose their accent (à â -> a, è ê ë -> e, î ï -> i,
   ô -> o, ù û -> u, ç -> c, ñ -> n, ...). A word with any other character
   (apostrophe, hyphen, digit, ...) is dropped. Each word is assigned by a hash
   of its letters and the seed to the training split (90%), the validation
   split (5%, used only to choose learning rates) or the held-out split (5%,
   reported). A word of n letters gives n + 1 examples: each letter and the
   end token, predicted from the CTX = 4 tokens before it.

   MODEL (frozen after pretraining)
       x  = concat(emb[c1], ..., emb[c4])    4 x 16 = 64 inputs
       h1 = tanh(x  W1^T + b1)               128
       h2 = tanh(h1 W2^T + b2)               128
       y  = softmax(h2 W3^T + b3)            32
   Each W is out x in, row-major (as torch.nn.Linear). Matrix products go
   through cblas_sgemm, single precision. The loss is the mean cross-entropy
   in nats per character. Pretraining is 3000 steps of a plain Adam on all
   weights (written out below, learning rate 1e-2 with a cosine decay to 5e-4,
   from rite_schedule_lr): it is full-weight training, not LoRA.

   LORA ADAPTERS (one per linear layer, the only trained weights)
       W_eff = W + lora_B lora_A           lora_A: r x in, lora_B: out x r
   stored as PEFT does. In the library's notation the update Z = L R^T is
   W_eff^T - W^T (m = in, n = out) with
       L = lora_A^T  (in x r)   stored r x in   -> layout RITE_RANK_FIRST
       R = lora_B    (out x r)  stored out x r  -> layout RITE_RANK_LAST
   Standard LoRA initialisation: lora_A ~ N(0, 1/in), lora_B = 0, so the
   fine-tuned model starts as the pretrained one. The three adapters are one
   rite_model (each described by rite_lora_peft: PEFT's storage), and every
   step is one rite_model_step_f32 over all of them: LoRA-RITE's gradient
   clipping is global over the whole model. AdamW uses the same calls.

   TRAINING AND REPORT
   Fine-tuning uses a constant learning rate and minibatches of --batch
   examples drawn uniformly from the training split. Unless --lr is given,
   each optimizer first tries the learning rates 2.5e-3, 5e-3, 1e-2, 2e-2 for
   steps/4 steps each, ranked by the loss on 16384 validation examples; the
   full run uses the best (or the next one if it diverges). The final table
   gives the loss on 65536 training examples and on every held-out example.
   DIR/loss.csv has a row every steps/30 steps (step, optimizer, train_loss,
   heldout_loss, on fixed sets of 8192 training and 8192 held-out examples);
   DIR/loss.png (gnuplot) or DIR/loss.svg draws it. While training, a progress
   line (redrawn in place on a terminal, every tenth of a run otherwise) shows
   the step, the smoothed minibatch loss, the last step's gradient norm and
   clip factor (rite_model_diagnostics; AdamW does not clip: always 1),
   characters per second and the time left.

   RESCALING (--rescale S)
   LoRA-RITE's update of W_eff does not depend on how the product is split
   between the factors; AdamW's does. With --rescale S each optimizer is run
   twice from the same model, once with (lora_A, lora_B) and once with
   (S lora_A, lora_B / S), and the final held-out losses are compared. Since
   lora_B = 0 at standard init makes that rescaling a no-op, this mode
   initialises lora_B ~ N(0, 0.02^2) too and subtracts the initial product
   lora_B lora_A from the frozen W, so training still starts from the
   pretrained model.

   FLAGS
     --optimizer rite|adamw|both  (both)      --lang german|french  (german)
     --rank R (8)  --steps N (6000)  --batch B (256)  --seed S (1)
     --lr X        one learning rate for the optimizer(s): no sweep
     --threads T   BLAS threads (1: at these sizes more threads only add overhead)
     --base PATH   load the pretrained model from PATH if it exists, else
                   pretrain and save it there (default: pretrain, no file)
     --rescale S   the rescaling experiment above
     --out DIR     where the CSV and the plot go (char_lm_out)
     --save PATH   after training, save a checkpoint (single optimizer only)
     --resume PATH continue training from a checkpoint up to --steps (the
                   optimizer, rank, batch, language, seed and lr are the
                   checkpoint's; use the same --base)
     --export DIR  after fine-tuning, write the adapters for PEFT and llama.cpp
                   (EXPORTING below): DIR/peft/ and DIR/adapter.gguf, or with
                   both optimizers DIR/rite/... and DIR/adamw/...
     --init-adapter PATH  start fine-tuning from these adapters instead of the
                   standard initialisation: a GGUF file or a PEFT directory
                   written by --export (its rank must be --rank; use the same
                   --base); prints their held-out loss first
     --dict DIR    directory of the word lists (/usr/share/dict)
     --svg         draw the SVG even when gnuplot is available
     --quick       a few-second smoke run: a finite-difference check of the
                   backward pass, 150 pretraining steps, 60 steps at lr 1e-2
                   (no sweep), 2048-example evaluations; exits 1 if the
                   gradient check fails or fine-tuning did not lower the
                   held-out loss of every optimizer
   Exit status: 0 success, 1 error, 2 bad flags, 77 a word list is missing.

   CHECKPOINTS (--save PATH, --resume PATH)
   PATH holds the trainer's settings, native byte order:
       char[8]  "CHARLM02"
       int32    optimizer (0 LoRA-RITE, 1 AdamW), rank, batch, language (0 de, 1 fr)
       int64    seed, completed steps
       double   learning rate
       uint64   FNV-1a hash of the frozen base weights (checked on resume)
   and PATH.rite the model's checkpoint, written by
   rite_model_checkpoint_save_file: every adapter's lora_A and lora_B and its
   optimizer state (moments, bases, step count), versioned and checksummed.
   The minibatch of step t is drawn from a generator seeded with (seed, t)
   alone, so the seed and the step count are the whole random state, the
   learning rate is constant, and N steps in one run or N/2 + save + resume +
   N/2 give bit-identical factors and optimizer state (same machine and
   thread count).

   EXPORTING (--export DIR, --init-adapter PATH)
   lora_rite_io.h writes the fine-tuned adapters as PEFT and llama.cpp load
   them, F32, lora_alpha = r (forward() adds B A x unscaled, and both tools
   scale B A by lora_alpha / r):
       DIR/peft/adapter_model.safetensors, DIR/peft/adapter_config.json
       DIR/adapter.gguf (general.architecture "char_lm")
   The caller names the modules. As a PyTorch module the base model would be
       emb = nn.Embedding(32, 16)      fc1 = nn.Linear(64, 128)
       fc2 = nn.Linear(128, 128)       head = nn.Linear(128, 32)
   so the layers W1, W2, W3 are
       layer  PEFT module  PEFT tensors                        GGUF tensors
       W1     fc1          base_model.model.fc1.lora_A.weight  fc1.weight.lora_a
       W2     fc2          base_model.model.fc2.lora_A.weight  fc2.weight.lora_a
       W3     head         base_model.model.head.lora_A.weight head.weight.lora_a
   (and lora_B / lora_b): the GGUF names are the base weights' names in that
   module's state_dict. A run prints the held-out loss of what it exported;
   --init-adapter reads it back (the reader checks every shape against
   --rank and the layers) and prints the same loss before training on.

   BUILD
       cmake --build build --target char_lm       (or, by hand:)
       cc -std=c99 -O2 -Iinclude examples/char_lm.c -o char_lm -llapacke -lopenblas -lm -pthread
*/
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"
#define LORA_RITE_IO_IMPLEMENTATION
#include "lora_rite_io.h"

/* ----------------------------------------------------------------------------
   sizes */

#define VOCAB 32               /* tokens: '.', a-z, ä ö ü ß é */
#define CTX 4                  /* characters of context */
#define EMB 16                 /* embedding width */
#define IN0 (CTX * EMB)        /* input width of the first layer */
#define HID 128                /* hidden width */
#define NLAYER 3               /* linear layers: 64->128, 128->128, 128->32 */
#define EVAL_CHUNK 4096        /* rows per forward pass when evaluating */
#define EXIT_NO_WORDS 77       /* a word list is missing */

static const int layer_in[NLAYER] = {IN0, HID, HID};
static const int layer_out[NLAYER] = {HID, HID, VOCAB};

/* the layers' names in exported adapters (EXPORTING above): PEFT module paths, GGUF base tensors */
static const char *const peft_name[NLAYER] = {"fc1", "fc2", "head"};
static const char *const gguf_name[NLAYER] = {"fc1.weight", "fc2.weight", "head.weight"};
#define GGUF_ARCH "char_lm"    /* general.architecture of the exported GGUF */

/* ----------------------------------------------------------------------------
   check-and-die helpers, timer */

static void *malloc_check(size_t size, const char *file, int line)
{
    void *p = malloc(size ? size : 1);
    if (!p) {
        fprintf(stderr, "char_lm: out of memory (%zu bytes) at %s:%d\n", size, file, line);
        exit(1);
    }
    return p;
}
#define mallocCheck(n) malloc_check((n), __FILE__, __LINE__)

static void *calloc_check(size_t count, size_t size, const char *file, int line)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "char_lm: out of memory at %s:%d\n", file, line);
        exit(1);
    }
    return p;
}
#define callocCheck(n, s) calloc_check((n), (s), __FILE__, __LINE__)

static FILE *fopen_check(const char *path, const char *mode, const char *file, int line)
{
    FILE *f = fopen(path, mode);
    if (!f) {
        fprintf(stderr, "char_lm: cannot open %s (%s) at %s:%d\n", path, strerror(errno), file, line);
        exit(1);
    }
    return f;
}
#define fopenCheck(p, m) fopen_check((p), (m), __FILE__, __LINE__)

static void io_check(int ok, const char *path, const char *file, int line)
{
    if (!ok) {
        fprintf(stderr, "char_lm: cannot read or write %s at %s:%d\n", path, file, line);
        exit(1);
    }
}
#define ioCheck(ok, p) io_check((ok), (p), __FILE__, __LINE__)

/* a failed lora_rite call: the status, and the model's detail of it (which layer, buffer or field) */
static void rite_check(rite_status s, const rite_model *model, const char *what, const char *file, int line)
{
    if (s != RITE_OK) {
        fprintf(stderr, "char_lm: %s: %s (%s) at %s:%d\n", what, rite_status_string(s), rite_model_last_error(model),
                file, line);
        exit(1);
    }
}
#define riteCheck(s, model, what) rite_check((s), (model), (what), __FILE__, __LINE__)

/* a failed lora_rite_io call: the status, and its detail (which file, tensor, key or offset) */
static void rite_io_check(rite_io_status s, const char *what, const char *detail, const char *file, int line)
{
    if (s != RITE_IO_OK) {
        fprintf(stderr, "char_lm: %s: %s (%s) at %s:%d\n", what, rite_io_status_string(s), detail, file, line);
        exit(1);
    }
}
#define riteIoCheck(s, what, detail) rite_io_check((s), (what), (detail), __FILE__, __LINE__)

/* mkdir -p: the directory and its missing parents */
static void make_dir(const char *dir)
{
    char path[1024];
    size_t i, n = strlen(dir);
    if (n >= sizeof path) { fprintf(stderr, "char_lm: path too long: %s\n", dir); exit(1); }
    memcpy(path, dir, n + 1);
    for (i = 1; i <= n; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        path[i] = 0;
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "char_lm: cannot create %s (%s)\n", path, strerror(errno));
            exit(1);
        }
        path[i] = dir[i];
    }
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ----------------------------------------------------------------------------
   random numbers: splitmix64; the generator of step t depends only on (seed, t) */

typedef struct { uint64_t s; } Rng;

static uint64_t rng_next(Rng *g)
{
    uint64_t z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static Rng rng_for(uint64_t seed, uint64_t stream, uint64_t index)
{
    Rng g;
    g.s = seed * 0xD1B54A32D192ED03ull ^ stream * 0x8CB92BA72F3D8DD7ull ^ index;
    rng_next(&g);
    return g;
}

/* uniform in [0, 1) */
static double rng_uniform(Rng *g) { return (double)(rng_next(g) >> 11) * (1.0 / 9007199254740992.0); }

/* standard normal (Box-Muller) */
static double rng_normal(Rng *g)
{
    double u1 = rng_uniform(g), u2 = rng_uniform(g);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

enum { STREAM_PRETRAIN = 1, STREAM_FINETUNE, STREAM_INIT, STREAM_SAMPLE };

/* FNV-1a, 64 bit */
static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
#define FNV_OFFSET 14695981039346656037ull

/* ----------------------------------------------------------------------------
   data: word lists -> token strings -> (context, next token) examples */

/* token of a lowercase Latin-1 code point, -1 if outside the vocabulary */
static int token_of(unsigned cp)
{
    if (cp >= 'A' && cp <= 'Z') cp += 32;
    if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) cp += 0x20;   /* Latin-1 upper -> lower */
    if (cp >= 'a' && cp <= 'z') return (int)(cp - 'a') + 1;
    switch (cp) {
    case 0xE4: return 27;                                         /* ä */
    case 0xF6: return 28;                                         /* ö */
    case 0xFC: return 29;                                         /* ü */
    case 0xDF: return 30;                                         /* ß */
    case 0xE9: return 31;                                         /* é */
    case 0xE0: case 0xE1: case 0xE2: case 0xE3: case 0xE5: return 1;   /* à á â ã å */
    case 0xE7: return 3;                                          /* ç */
    case 0xE8: case 0xEA: case 0xEB: return 5;                    /* è ê ë */
    case 0xEC: case 0xED: case 0xEE: case 0xEF: return 9;         /* ì í î ï */
    case 0xF1: return 14;                                         /* ñ */
    case 0xF2: case 0xF3: case 0xF4: case 0xF5: return 15;        /* ò ó ô õ */
    case 0xF9: case 0xFA: case 0xFB: return 21;                   /* ù ú û */
    case 0xFD: case 0xFF: return 25;                              /* ý ÿ */
    default: return -1;
    }
}

/* the UTF-8 spelling of a token (for printing samples) */
static const char *token_text(int t)
{
    static const char *const extra[5] = {"\xC3\xA4", "\xC3\xB6", "\xC3\xBC", "\xC3\x9F", "\xC3\xA9"};
    static char letters[27][2];
    if (t == 0) return ".";
    if (t >= 27) return extra[t - 27];
    letters[t][0] = (char)('a' + t - 1);
    letters[t][1] = 0;
    return letters[t];
}

/* a line of UTF-8 -> tokens 1..31 terminated by 0; returns the length, -1 to drop the word */
#define MAX_WORD 48
static int encode_word(const char *line, unsigned char *out)
{
    const unsigned char *p = (const unsigned char *)line;
    int n = 0;
    while (*p && *p != '\n' && *p != '\r') {
        unsigned cp;
        int t;
        if (*p < 0x80) cp = *p++;
        else if ((p[0] == 0xC2 || p[0] == 0xC3) && (p[1] & 0xC0) == 0x80) {   /* U+0080..U+00FF */
            cp = ((unsigned)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
            p += 2;
        } else return -1;
        t = token_of(cp);
        if (t < 0 || n >= MAX_WORD) return -1;
        out[n++] = (unsigned char)t;
    }
    out[n] = 0;
    return n;
}

typedef struct {
    char **words;              /* token strings (bytes 1..31, 0-terminated), sorted, unique */
    size_t count;
} WordList;

static int cmp_words(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads a word list; a missing file ends the program with the package to install. */
static WordList read_words(const char *dir, const char *name, const char *package)
{
    char path[1024], line[1024];
    unsigned char tok[MAX_WORD + 1];
    WordList wl;
    size_t cap = 1 << 16, i, j;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "char_lm: cannot read the word list %s (%s).\n"
                        "         Install the Debian package %s:  apt-get install %s\n",
                path, strerror(errno), package, package);
        exit(EXIT_NO_WORDS);
    }
    wl.words = (char **)mallocCheck(cap * sizeof(char *));
    wl.count = 0;
    while (fgets(line, sizeof line, f)) {
        int n = encode_word(line, tok);
        if (n <= 0) continue;
        if (wl.count == cap) {
            char **grown;
            cap *= 2;
            grown = (char **)realloc(wl.words, cap * sizeof(char *));
            if (!grown) { fprintf(stderr, "char_lm: out of memory\n"); exit(1); }
            wl.words = grown;
        }
        wl.words[wl.count] = (char *)mallocCheck((size_t)n + 1);
        memcpy(wl.words[wl.count++], tok, (size_t)n + 1);
    }
    fclose(f);
    /* sort and drop duplicates ("Bill" and "bill" are one word) */
    qsort(wl.words, wl.count, sizeof(char *), cmp_words);
    for (i = j = 0; i < wl.count; i++) {
        if (j > 0 && strcmp(wl.words[i], wl.words[j - 1]) == 0) { free(wl.words[i]); continue; }
        wl.words[j++] = wl.words[i];
    }
    wl.count = j;
    return wl;
}

static void free_words(WordList *wl)
{
    size_t i;
    for (i = 0; i < wl->count; i++) free(wl->words[i]);
    free(wl->words);
}

enum { SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST, NSPLIT };

/* split of a word: 90% train, 5% valid, 5% held-out, by a hash of its letters and the seed */
static int split_of(const char *word, uint64_t seed)
{
    Rng g;
    g.s = fnv1a(FNV_OFFSET ^ seed, word, strlen(word));
    return (int)(rng_next(&g) % 100) < 90 ? SPLIT_TRAIN : (rng_next(&g) & 1) ? SPLIT_VALID : SPLIT_TEST;
}

typedef struct {
    unsigned char *x;          /* n x CTX context tokens */
    unsigned char *y;          /* n next tokens */
    size_t n;
    size_t words;
} Examples;

/* every (context, next token) pair of the words of one split */
static Examples make_examples(const WordList *wl, int split, uint64_t seed)
{
    Examples e;
    size_t i, n = 0, k = 0;
    e.words = 0;
    for (i = 0; i < wl->count; i++)
        if (split_of(wl->words[i], seed) == split) { n += strlen(wl->words[i]) + 1; e.words++; }
    e.x = (unsigned char *)mallocCheck(n * CTX);
    e.y = (unsigned char *)mallocCheck(n);
    e.n = n;
    for (i = 0; i < wl->count; i++) {
        const unsigned char *w = (const unsigned char *)wl->words[i];
        unsigned char ctx[CTX] = {0};
        size_t len = strlen(wl->words[i]), p;
        int c;
        if (split_of(wl->words[i], seed) != split) continue;
        for (p = 0; p <= len; p++, k++) {
            memcpy(e.x + k * CTX, ctx, CTX);
            e.y[k] = p < len ? w[p] : 0;
            for (c = 0; c < CTX - 1; c++) ctx[c] = ctx[c + 1];   /* slide the context */
            ctx[CTX - 1] = e.y[k];
        }
    }
    return e;
}

/* a fixed, evenly strided subset of at most n examples (shares the arrays) */
static Examples subset(const Examples *e, size_t n, unsigned char **owned)
{
    Examples s;
    size_t i, stride;
    if (n >= e->n) { *owned = NULL; return *e; }
    stride = e->n / n;
    s.x = (unsigned char *)mallocCheck(n * (CTX + 1));
    s.y = s.x + n * CTX;
    s.n = n;
    s.words = 0;
    for (i = 0; i < n; i++) {
        memcpy(s.x + i * CTX, e->x + i * stride * CTX, CTX);
        s.y[i] = e->y[i * stride];
    }
    *owned = s.x;
    return s;
}

typedef struct {
    Examples split[NSPLIT];
} Dataset;

static Dataset make_dataset(const WordList *wl, uint64_t seed)
{
    Dataset d;
    int s;
    for (s = 0; s < NSPLIT; s++) d.split[s] = make_examples(wl, s, seed);
    return d;
}

static void free_dataset(Dataset *d)
{
    int s;
    for (s = 0; s < NSPLIT; s++) { free(d->split[s].x); free(d->split[s].y); }
}

/* ----------------------------------------------------------------------------
   model: parameters in one array (so Adam and the file format are one loop) */

typedef struct {
    float *params;             /* everything, contiguous */
    size_t count;
    float *emb;                /* VOCAB x EMB */
    float *W[NLAYER];          /* out x in, row-major */
    float *b[NLAYER];          /* out */
} Model;

static size_t model_count(void)
{
    size_t n = (size_t)VOCAB * EMB;
    int l;
    for (l = 0; l < NLAYER; l++) n += (size_t)layer_out[l] * layer_in[l] + (size_t)layer_out[l];
    return n;
}

/* points emb, W, b into a block of model_count() floats */
static void model_point(Model *m, float *block)
{
    float *p = block;
    int l;
    m->params = block;
    m->count = model_count();
    m->emb = p; p += VOCAB * EMB;
    for (l = 0; l < NLAYER; l++) {
        m->W[l] = p; p += (size_t)layer_out[l] * layer_in[l];
        m->b[l] = p; p += layer_out[l];
    }
}

static void model_alloc(Model *m) { model_point(m, (float *)callocCheck(model_count(), sizeof(float))); }

/* embeddings N(0, 1), weights N(0, 1/in) (the last layer 10x smaller), biases 0 */
static void model_init(Model *m, uint64_t seed)
{
    Rng g = rng_for(seed, STREAM_INIT, 0);
    size_t i;
    int l;
    memset(m->params, 0, m->count * sizeof(float));
    for (i = 0; i < (size_t)VOCAB * EMB; i++) m->emb[i] = (float)rng_normal(&g);
    for (l = 0; l < NLAYER; l++) {
        double sd = (l == NLAYER - 1 ? 0.1 : 1.0) / sqrt((double)layer_in[l]);
        for (i = 0; i < (size_t)layer_out[l] * layer_in[l]; i++) m->W[l][i] = (float)(sd * rng_normal(&g));
    }
}

static uint64_t model_hash(const Model *m) { return fnv1a(FNV_OFFSET, m->params, m->count * sizeof(float)); }

/* base model file: "CHARLMB1", int32 VOCAB CTX EMB HID, then all parameters */
static int model_load(Model *m, const char *path)
{
    char magic[8];
    int32_t dims[4];
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    ioCheck(fread(magic, 1, 8, f) == 8 && memcmp(magic, "CHARLMB1", 8) == 0, path);
    ioCheck(fread(dims, sizeof dims, 1, f) == 1, path);
    if (dims[0] != VOCAB || dims[1] != CTX || dims[2] != EMB || dims[3] != HID) {
        fprintf(stderr, "char_lm: %s is a model of other sizes\n", path);
        exit(1);
    }
    ioCheck(fread(m->params, sizeof(float), m->count, f) == m->count, path);
    fclose(f);
    return 1;
}

static void model_save(const Model *m, const char *path)
{
    int32_t dims[4] = {VOCAB, CTX, EMB, HID};
    FILE *f = fopenCheck(path, "wb");
    ioCheck(fwrite("CHARLMB1", 1, 8, f) == 8, path);
    ioCheck(fwrite(dims, sizeof dims, 1, f) == 1, path);
    ioCheck(fwrite(m->params, sizeof(float), m->count, f) == m->count, path);
    ioCheck(fclose(f) == 0, path);
}

/* ----------------------------------------------------------------------------
   LoRA adapters: lora_A (r x in), lora_B (out x r) per layer, and their optimizer */

typedef struct {
    int r;
    float *A[NLAYER], *B[NLAYER];      /* factors, PEFT's storage: lora_A r x in, lora_B out x r */
    float *gA[NLAYER], *gB[NLAYER];    /* their gradients, same storage */
    rite_model *opt;                   /* the optimizer of all three adapters */
} Lora;

static void lora_alloc(Lora *lo, int r)
{
    int l;
    lo->r = r;
    for (l = 0; l < NLAYER; l++) {
        size_t na = (size_t)r * layer_in[l], nb = (size_t)layer_out[l] * r;
        lo->A[l] = (float *)callocCheck(na, sizeof(float));
        lo->B[l] = (float *)callocCheck(nb, sizeof(float));
        lo->gA[l] = (float *)callocCheck(na, sizeof(float));
        lo->gB[l] = (float *)callocCheck(nb, sizeof(float));
    }
    lo->opt = NULL;
}

static void lora_free(Lora *lo)
{
    int l;
    for (l = 0; l < NLAYER; l++) {
        free(lo->A[l]); free(lo->B[l]); free(lo->gA[l]); free(lo->gB[l]);
    }
    if (lo->opt) rite_model_free(lo->opt);
}

/* lora_A ~ N(0, 1/in); lora_B = 0 (standard), or N(0, b_sd^2) when b_sd > 0 */
static void lora_init(Lora *lo, uint64_t seed, double b_sd)
{
    Rng g = rng_for(seed, STREAM_INIT, 1);
    int l;
    size_t i;
    for (l = 0; l < NLAYER; l++) {
        double sd = 1.0 / sqrt((double)layer_in[l]);
        for (i = 0; i < (size_t)lo->r * layer_in[l]; i++) lo->A[l][i] = (float)(sd * rng_normal(&g));
        for (i = 0; i < (size_t)layer_out[l] * lo->r; i++) lo->B[l][i] = (float)(b_sd * rng_normal(&g));
    }
}

/* the optimizer: one model of the three adapters, each described as PEFT stores it */
static void lora_optimizer(Lora *lo, rite_optimizer kind, double lr)
{
    rite_config cfg = rite_config_default(kind);
    rite_lora layers[NLAYER];
    rite_model_desc d;
    char detail[256];
    rite_status s;
    int l;
    cfg.lr = lr;
    for (l = 0; l < NLAYER; l++) layers[l] = rite_lora_peft(layer_in[l], layer_out[l], lo->r);
    memset(&d, 0, sizeof d);
    d.layers = layers;
    d.n_layers = NLAYER;
    d.optimizer = kind;
    d.config = &cfg;
    s = rite_model_init(&lo->opt, &d, detail, sizeof detail);
    if (s != RITE_OK) {   /* the desc's problem, in detail */
        fprintf(stderr, "char_lm: rite_model_init: %s (%s)\n", rite_status_string(s), detail);
        exit(1);
    }
}

/* one optimizer step of every adapter, clipped by their global norm; returns 0
   when the step would be non-finite (nothing changed: the run diverged) */
static int lora_step(Lora *lo)
{
    rite_status s = rite_model_step_f32(lo->opt, lo->A, lo->B, lo->gA, lo->gB);
    if (s == RITE_ERR_NONFINITE_GRADIENT || s == RITE_ERR_NONFINITE_FACTOR || s == RITE_ERR_NONFINITE_UPDATE)
        return 0;
    riteCheck(s, lo->opt, "rite_model_step_f32");
    return 1;
}

/* ----------------------------------------------------------------------------
   activations and gradients of one batch */

typedef struct {
    int rows;                  /* capacity */
    float *x0;                 /* rows x IN0: concatenated embeddings */
    float *h[NLAYER];          /* rows x out: tanh outputs, and the last layer's probabilities */
    float *u[NLAYER];          /* rows x r: x A^T of each adapter */
    float *dy, *dx;            /* rows x HID scratch for backward (dy of the current layer, dx) */
    float *du;                 /* rows x r */
    double loss;
} Acts;

static void acts_alloc(Acts *a, int rows, int r)
{
    int l;
    a->rows = rows;
    a->x0 = (float *)mallocCheck((size_t)rows * IN0 * sizeof(float));
    for (l = 0; l < NLAYER; l++) {
        a->h[l] = (float *)mallocCheck((size_t)rows * layer_out[l] * sizeof(float));
        a->u[l] = (float *)mallocCheck((size_t)rows * (r > 0 ? r : 1) * sizeof(float));
    }
    a->dy = (float *)mallocCheck((size_t)rows * HID * sizeof(float));
    a->dx = (float *)mallocCheck((size_t)rows * HID * sizeof(float));
    a->du = (float *)mallocCheck((size_t)rows * (r > 0 ? r : 1) * sizeof(float));
}

static void acts_free(Acts *a)
{
    int l;
    free(a->x0);
    for (l = 0; l < NLAYER; l++) { free(a->h[l]); free(a->u[l]); }
    free(a->dy); free(a->dx); free(a->du);
}

/* the input of layer l */
static float *layer_input(Acts *a, int l) { return l == 0 ? a->x0 : a->h[l - 1]; }

/* ----------------------------------------------------------------------------
   forward: embeddings -> tanh -> tanh -> softmax, returns the mean cross-entropy */

static double forward(const Model *m, const Lora *lo, Acts *a, const unsigned char *x,
                      const unsigned char *y, int n)
{
    int i, j, l;
    double loss = 0;
    /* x0 = concat of the context's embeddings */
    for (i = 0; i < n; i++)
        for (j = 0; j < CTX; j++)
            memcpy(a->x0 + (size_t)i * IN0 + j * EMB, m->emb + (size_t)x[i * CTX + j] * EMB, EMB * sizeof(float));
    for (l = 0; l < NLAYER; l++) {
        int in = layer_in[l], out = layer_out[l];
        float *inp = layer_input(a, l), *o = a->h[l];
        /* o = b (broadcast), then o += inp W^T */
        for (i = 0; i < n; i++) memcpy(o + (size_t)i * out, m->b[l], (size_t)out * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, inp, in, m->W[l], in, 1.0f, o, out);
        if (lo) {
            /* LoRA: u = inp A^T, o += u B^T */
            int r = lo->r;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, r, in, 1.0f, inp, in, lo->A[l], in, 0.0f, a->u[l], r);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, r, 1.0f, a->u[l], r, lo->B[l], r, 1.0f, o, out);
        }
        /* tanh on the hidden layers, as 1 - 2 / (1 + exp(2x)) (much faster than libm's tanhf) */
        if (l < NLAYER - 1)
            for (i = 0; i < n * out; i++) o[i] = 1.0f - 2.0f / (1.0f + expf(2.0f * o[i]));
    }
    /* softmax in place and cross-entropy: loss_i = log sum_k exp(z_k - zmax) - (z_y - zmax) */
    for (i = 0; i < n; i++) {
        float *z = a->h[NLAYER - 1] + (size_t)i * VOCAB, zmax = z[0], zy;
        double sum = 0;
        for (j = 1; j < VOCAB; j++) if (z[j] > zmax) zmax = z[j];
        zy = z[y[i]] - zmax;
        for (j = 0; j < VOCAB; j++) { z[j] = expf(z[j] - zmax); sum += z[j]; }
        loss += log(sum) - zy;
        for (j = 0; j < VOCAB; j++) z[j] = (float)(z[j] / sum);
    }
    a->loss = loss / n;
    return a->loss;
}

/* ----------------------------------------------------------------------------
   backward: gradients of the mean cross-entropy; into the full weights (grad,
   pretraining) and/or into the adapters (lo, fine-tuning) */

static void backward(const Model *m, Lora *lo, Model *grad, Acts *a, const unsigned char *x,
                     const unsigned char *y, int n)
{
    int i, j, l;
    float *dy = a->dy, *dx = a->dx;
    /* dlogits = (p - onehot(y)) / n */
    for (i = 0; i < n; i++) {
        const float *p = a->h[NLAYER - 1] + (size_t)i * VOCAB;
        float *d = dy + (size_t)i * VOCAB;
        for (j = 0; j < VOCAB; j++) d[j] = p[j] / (float)n;
        d[y[i]] -= 1.0f / (float)n;
    }
    for (l = NLAYER - 1; l >= 0; l--) {
        int in = layer_in[l], out = layer_out[l];
        const float *inp = layer_input(a, l);
        float *tmp;
        if (grad) {
            /* dW = dy^T inp, db = column sums of dy */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, inp, in, 0.0f, grad->W[l], in);
            memset(grad->b[l], 0, (size_t)out * sizeof(float));
            for (i = 0; i < n; i++)
                for (j = 0; j < out; j++) grad->b[l][j] += dy[(size_t)i * out + j];
        }
        if (lo) {
            /* LoRA: gB = dy^T u, du = dy B, gA = du^T inp */
            int r = lo->r;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, r, n, 1.0f, dy, out, a->u[l], r, 0.0f, lo->gB[l], r);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, r, out, 1.0f, dy, out, lo->B[l], r, 0.0f, a->du, r);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r, in, n, 1.0f, a->du, r, inp, in, 0.0f, lo->gA[l], in);
        }
        if (l == 0 && !grad) break;             /* embeddings are frozen while fine-tuning */
        /* dx = dy W (+ du A) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, m->W[l], in, 0.0f, dx, in);
        if (lo)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, lo->r, 1.0f, a->du, lo->r,
                        lo->A[l], in, 1.0f, dx, in);
        if (l == 0) {
            /* d emb[token] += the slice of dx0 at its context position */
            memset(grad->emb, 0, (size_t)VOCAB * EMB * sizeof(float));
            for (i = 0; i < n; i++)
                for (j = 0; j < CTX; j++) {
                    float *ge = grad->emb + (size_t)x[i * CTX + j] * EMB;
                    const float *g = dx + (size_t)i * IN0 + j * EMB;
                    int e;
                    for (e = 0; e < EMB; e++) ge[e] += g[e];
                }
            break;
        }
        /* through tanh: da = dx * (1 - h^2), h = this layer's input */
        for (i = 0; i < n * in; i++) dx[i] *= 1.0f - inp[i] * inp[i];
        tmp = dy; dy = dx; dx = tmp;            /* the next layer down reads it as its dy */
    }
}

/* --quick: backward() against central finite differences of forward(), on a few
   entries of every weight and factor (random model, adapters with lora_B != 0);
   returns the largest relative error */
static double gradient_check(uint64_t seed)
{
    enum { N = 32, R = 3, PROBES = 4 };
    Model m, g;
    Lora lo;
    Acts a;
    unsigned char x[N * CTX], y[N];
    float *p[4 * NLAYER + 1], *gp[4 * NLAYER + 1];
    size_t cnt[4 * NLAYER + 1];
    Rng rng = rng_for(seed, STREAM_SAMPLE, 1);
    double worst = 0;
    int i, l, np = 0;
    model_alloc(&m);
    model_alloc(&g);
    model_init(&m, seed);
    for (i = 0; i < (int)m.count; i++) m.params[i] += (float)(0.05 * rng_normal(&rng));   /* biases != 0 */
    lora_alloc(&lo, R);
    lora_init(&lo, seed, 0.3);
    acts_alloc(&a, N, R);
    for (i = 0; i < N * CTX; i++) x[i] = (unsigned char)(rng_next(&rng) % VOCAB);
    for (i = 0; i < N; i++) y[i] = (unsigned char)(rng_next(&rng) % VOCAB);
    forward(&m, &lo, &a, x, y, N);
    backward(&m, &lo, &g, &a, x, y, N);
    p[np] = m.emb; gp[np] = g.emb; cnt[np++] = (size_t)VOCAB * EMB;
    for (l = 0; l < NLAYER; l++) {
        p[np] = m.W[l]; gp[np] = g.W[l]; cnt[np++] = (size_t)layer_out[l] * layer_in[l];
        p[np] = m.b[l]; gp[np] = g.b[l]; cnt[np++] = (size_t)layer_out[l];
        p[np] = lo.A[l]; gp[np] = lo.gA[l]; cnt[np++] = (size_t)R * layer_in[l];
        p[np] = lo.B[l]; gp[np] = lo.gB[l]; cnt[np++] = (size_t)layer_out[l] * R;
    }
    for (i = 0; i < np; i++) {
        int t;
        for (t = 0; t < PROBES; t++) {
            /* (loss(w + h) - loss(w - h)) / 2h against the analytic gradient */
            size_t k = (size_t)(rng_next(&rng) % cnt[i]);
            float w = p[i][k];
            double h = 1e-2, lp, lm, fd, err;
            p[i][k] = w + (float)h; lp = forward(&m, &lo, &a, x, y, N);
            p[i][k] = w - (float)h; lm = forward(&m, &lo, &a, x, y, N);
            p[i][k] = w;
            fd = (lp - lm) / (2 * h);
            err = fabs(fd - gp[i][k]) / (fabs(fd) + fabs(gp[i][k]) + 1e-4);
            if (err > worst) worst = err;
        }
    }
    free(m.params); free(g.params);
    lora_free(&lo);
    acts_free(&a);
    return worst;
}

/* mean loss over a set of examples, in chunks */
static double evaluate(const Model *m, const Lora *lo, Acts *a, const Examples *e)
{
    double sum = 0;
    size_t i;
    for (i = 0; i < e->n; i += (size_t)a->rows) {
        int n = (int)(e->n - i < (size_t)a->rows ? e->n - i : (size_t)a->rows);
        sum += forward(m, lo, a, e->x + i * CTX, e->y + i, n) * n;
    }
    return sum / (double)e->n;
}

/* the minibatch of step t: uniform examples from a generator seeded by (seed, t) only */
static void sample_batch(const Examples *e, uint64_t seed, int stream, long long step, int batch,
                         unsigned char *bx, unsigned char *by)
{
    Rng g = rng_for(seed, (uint64_t)stream, (uint64_t)step);
    int i;
    for (i = 0; i < batch; i++) {
        size_t k = (size_t)(rng_next(&g) % e->n);
        memcpy(bx + (size_t)i * CTX, e->x + k * CTX, CTX);
        by[i] = e->y[k];
    }
}

/* ----------------------------------------------------------------------------
   progress line: \r-updated on a terminal, a plain line every tenth of the run otherwise
   (none for the short sweep runs: they print one line each) */

static int stdout_is_tty;

typedef struct {
    const char *label;
    long long first, steps;    /* the run goes from step first to steps */
    int batch;                 /* characters per step */
    double t0;                 /* when it started */
    int quiet;                 /* 1: only the terminal's line */
} Progress;

/* the line after `step` steps; diag (NULL: none) adds the optimizer's gradient norm and clip factor */
static void progress(const Progress *p, long long step, double loss, const rite_diagnostics *diag, int force)
{
    static double last;
    double t = now_seconds(), el = t - p->t0;
    double rate = el > 0 ? (double)(step - p->first) / el : 0;
    double eta = rate > 0 ? (double)(p->steps - step) / rate : 0;
    long long every = p->steps / 10 > 0 ? p->steps / 10 : 1;
    char opt[48] = "";
    if (stdout_is_tty ? !force && t - last < 0.1 : p->quiet || !(force || step % every == 0)) return;
    last = t;
    if (diag) snprintf(opt, sizeof opt, " | grad %.3f clip %.2f", diag->grad_norm, diag->clip_factor);
    printf("%s  %-14s step %5lld/%-5lld | loss %.4f%s | %6.0fk tok/s | ETA %4.0fs%s", stdout_is_tty ? "\r" : "",
           p->label, step, p->steps, loss, opt, rate * p->batch / 1000.0, eta, stdout_is_tty ? "   " : "\n");
    fflush(stdout);
}

static void progress_done(void)
{
    if (stdout_is_tty) printf("\n");   /* keep the last state of the line */
}

/* ----------------------------------------------------------------------------
   pretraining: Adam on every weight, English, cosine learning-rate decay */

static void pretrain(Model *m, const Dataset *en, int steps, int batch, uint64_t seed)
{
    Model grad;
    Acts a;
    float *mo = (float *)callocCheck(m->count, sizeof(float));   /* Adam first moment */
    float *ve = (float *)callocCheck(m->count, sizeof(float));   /* Adam second moment */
    unsigned char *bx = (unsigned char *)mallocCheck((size_t)batch * CTX), *by = (unsigned char *)mallocCheck((size_t)batch);
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    const rite_schedule schedule = {.lr = 1e-2, .total_steps = steps, .final_lr = 5e-4, .decay = RITE_DECAY_COSINE};
    Progress pr = {"pretrain (en)", 0, steps, batch, 0, 0};
    double avg = 0, loss;
    long long t;
    size_t i;
    model_alloc(&grad);
    acts_alloc(&a, batch, 0);
    model_init(m, seed);
    pr.t0 = now_seconds();
    for (t = 0; t < steps; t++) {
        double lr = rite_schedule_lr(&schedule, t);
        float c1 = (float)(1.0 - pow(b1, (double)(t + 1))), c2 = (float)(1.0 - pow(b2, (double)(t + 1)));
        sample_batch(&en->split[SPLIT_TRAIN], seed, STREAM_PRETRAIN, t, batch, bx, by);
        loss = forward(m, NULL, &a, bx, by, batch);
        avg = t == 0 ? loss : 0.98 * avg + 0.02 * loss;
        backward(m, NULL, &grad, &a, bx, by, batch);
        /* Adam: m = b1 m + (1-b1) g, v = b2 v + (1-b2) g^2, p -= lr mhat / (sqrt(vhat) + eps) */
        for (i = 0; i < m->count; i++) {
            float g = grad.params[i];
            mo[i] = (float)b1 * mo[i] + (float)(1 - b1) * g;
            ve[i] = (float)b2 * ve[i] + (float)(1 - b2) * g * g;
            m->params[i] -= (float)lr * (mo[i] / c1) / (sqrtf(ve[i] / c2) + (float)eps);
        }
        progress(&pr, t + 1, avg, NULL, t + 1 == steps);
    }
    progress_done();
    free(mo); free(ve); free(bx); free(by); free(grad.params);
    acts_free(&a);
}

/* ----------------------------------------------------------------------------
   loss curves (CSV, plot) */

typedef struct {
    char label[32];
    long long step;
    double train, heldout;
} Point;

typedef struct {
    Point *p;
    size_t n, cap;
} Curves;

static void curve_add(Curves *c, const char *label, long long step, double train, double heldout)
{
    if (c->n == c->cap) {
        Point *grown;
        c->cap = c->cap ? 2 * c->cap : 256;
        grown = (Point *)realloc(c->p, c->cap * sizeof(Point));
        if (!grown) { fprintf(stderr, "char_lm: out of memory\n"); exit(1); }
        c->p = grown;
    }
    snprintf(c->p[c->n].label, sizeof c->p[c->n].label, "%s", label);
    c->p[c->n].step = step;
    c->p[c->n].train = train;
    c->p[c->n].heldout = heldout;
    c->n++;
}

/* ----------------------------------------------------------------------------
   fine-tuning: one run of one optimizer */

typedef struct {
    /* data and sizes, fixed for the whole program */
    const Model *base;
    const Dataset *data;
    Examples train_curve, test_curve;    /* fixed subsets for the loss curves */
    Examples train_final, valid_sweep;   /* fixed subsets: final train loss, sweep selection */
    int rank, batch, lang, eval_every;
    uint64_t seed;
    int full_test;                       /* 1: the final held-out loss uses every held-out example */
    const Lora *init;                    /* --init-adapter: the factors every run starts from; NULL: lora_init */
} Setup;

typedef struct {
    const char *label;         /* "rite", "adamw", ... (CSV and plot) */
    rite_optimizer kind;
    double lr;
    long long steps;           /* train until this step */
    double rescale;            /* 0: standard init; else lora_B != 0 and (S A, B / S) */
    int sweep;                 /* 1: only the validation loss at the end */
    const char *save, *resume; /* checkpoint paths or NULL */
} Run;

typedef struct {
    double train, valid, heldout, seconds;
    int diverged;
    long long stopped;         /* the step a diverged run stopped at */
    Lora lora;                 /* the fine-tuned adapters (kept for sampling) */
    Model model;               /* the frozen weights the adapters go with */
} Result;

static void save_checkpoint(const char *path, const Setup *su, const Run *run, const Lora *lo,
                            const Model *m, long long step);
static long long load_checkpoint(const char *path, const Setup *su, const Run *run, Lora *lo, const Model *m);

static const char *opt_name(rite_optimizer k) { return k == RITE_LORA_RITE ? "LoRA-RITE" : "AdamW"; }

/* the examples of the final held-out loss: every held-out example, or (--quick) the curves' subset */
static const Examples *heldout_set(const Setup *su)
{
    return su->full_test ? &su->data->split[SPLIT_TEST] : &su->test_curve;
}

/* the adapters of a run and their optimizer: from the base model (with --rescale, lora_B != 0
   and the product moved out of W), then from the checkpoint with --resume; returns the first step */
static long long finetune_start(const Setup *su, const Run *run, Result *res)
{
    int l;
    model_alloc(&res->model);
    memcpy(res->model.params, su->base->params, su->base->count * sizeof(float));
    lora_alloc(&res->lora, su->rank);
    lora_init(&res->lora, su->seed, run->rescale > 0 ? 0.02 : 0.0);
    if (su->init)   /* --init-adapter (never with --rescale) */
        for (l = 0; l < NLAYER; l++) {
            memcpy(res->lora.A[l], su->init->A[l], (size_t)su->rank * layer_in[l] * sizeof(float));
            memcpy(res->lora.B[l], su->init->B[l], (size_t)layer_out[l] * su->rank * sizeof(float));
        }
    if (run->rescale > 0) {
        /* W -= B A, so that W + B A is the pretrained W; then A *= S, B /= S */
        for (l = 0; l < NLAYER; l++) {
            int in = layer_in[l], out = layer_out[l], r = su->rank;
            size_t i;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, -1.0f, res->lora.B[l], r,
                        res->lora.A[l], in, 1.0f, res->model.W[l], in);
            for (i = 0; i < (size_t)r * in; i++) res->lora.A[l][i] *= (float)run->rescale;
            for (i = 0; i < (size_t)out * r; i++) res->lora.B[l][i] /= (float)run->rescale;
        }
    }
    lora_optimizer(&res->lora, run->kind, run->lr);
    return run->resume ? load_checkpoint(run->resume, su, run, &res->lora, &res->model) : 0;
}

/* the losses at the end of a run that did not diverge: the validation loss of a sweep run,
   else the curves' last point, the final train and held-out losses, and the checkpoint */
static void finetune_finish(const Setup *su, const Run *run, Result *res, Acts *a, Curves *curves)
{
    const Model *m = &res->model;
    const Lora *lo = &res->lora;
    if (run->sweep) {
        res->valid = evaluate(m, lo, a, &su->valid_sweep);
        return;
    }
    if (curves) curve_add(curves, run->label, run->steps, evaluate(m, lo, a, &su->train_curve),
                          evaluate(m, lo, a, &su->test_curve));
    res->train = evaluate(m, lo, a, &su->train_final);
    res->heldout = evaluate(m, lo, a, heldout_set(su));
    if (run->save) save_checkpoint(run->save, su, run, lo, m, run->steps);
}

static Result finetune(const Setup *su, const Run *run, Curves *curves)
{
    Result res;
    Acts a;
    int batch = su->batch, rows = batch > EVAL_CHUNK ? batch : EVAL_CHUNK;
    unsigned char *bx = (unsigned char *)mallocCheck((size_t)batch * CTX), *by = (unsigned char *)mallocCheck((size_t)batch);
    char label[64];
    Progress pr;
    rite_diagnostics diag;
    long long t;
    double avg = 0;
    memset(&res, 0, sizeof res);
    acts_alloc(&a, rows, su->rank);
    snprintf(label, sizeof label, "%s %g", run->label, run->lr);
    pr.label = label;
    pr.first = finetune_start(su, run, &res);
    pr.steps = run->steps;
    pr.batch = batch;
    pr.quiet = run->sweep;
    pr.t0 = now_seconds();
    for (t = pr.first; t < run->steps; t++) {
        double loss;
        /* record the curves: train and held-out loss on fixed subsets */
        if (curves && (t % su->eval_every == 0)) {
            curve_add(curves, run->label, t, evaluate(&res.model, &res.lora, &a, &su->train_curve),
                      evaluate(&res.model, &res.lora, &a, &su->test_curve));
        }
        /* forward and backward of the minibatch of step t */
        sample_batch(&su->data->split[SPLIT_TRAIN], su->seed, STREAM_FINETUNE, t, batch, bx, by);
        loss = forward(&res.model, &res.lora, &a, bx, by, batch);
        /* diverged: worse than twice the loss of a uniform guess (or not finite) */
        if (!(loss < 2.0 * log((double)VOCAB))) { res.diverged = 1; break; }
        backward(&res.model, &res.lora, NULL, &a, bx, by, batch);
        /* optimizer step of every adapter, clipped by their global norm */
        if (!lora_step(&res.lora)) { res.diverged = 1; break; }
        riteCheck(rite_model_diagnostics(res.lora.opt, &diag), res.lora.opt, "rite_model_diagnostics");
        avg = t == pr.first ? loss : 0.95 * avg + 0.05 * loss;
        progress(&pr, t + 1, avg, &diag, t + 1 == run->steps);
    }
    progress_done();
    res.seconds = now_seconds() - pr.t0;
    if (res.diverged) {
        res.stopped = t;
        res.train = res.valid = res.heldout = INFINITY;
    } else {
        finetune_finish(su, run, &res, &a, curves);
    }
    free(bx); free(by);
    acts_free(&a);
    return res;
}

static void result_free(Result *r)
{
    lora_free(&r->lora);
    free(r->model.params);
}

/* ----------------------------------------------------------------------------
   checkpoints: PATH = the trainer's settings, PATH.rite = the model's checkpoint
   (the library's: every adapter's factors and optimizer state) */

typedef struct {
    char magic[8];
    int32_t optimizer, rank, batch, lang;
    int64_t seed, step;
    double lr;
    uint64_t base_hash;
} CkptHeader;

#define CKPT_MAGIC "CHARLM02"

static void save_checkpoint(const char *path, const Setup *su, const Run *run, const Lora *lo,
                            const Model *m, long long step)
{
    CkptHeader h;
    char mpath[1100];
    FILE *f = fopenCheck(path, "wb");
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CKPT_MAGIC, 8);
    h.optimizer = (int32_t)run->kind;
    h.rank = su->rank;
    h.batch = su->batch;
    h.lang = su->lang;
    h.seed = (int64_t)su->seed;
    h.step = step;
    h.lr = run->lr;
    h.base_hash = model_hash(m);
    ioCheck(fwrite(&h, sizeof h, 1, f) == 1, path);
    ioCheck(fclose(f) == 0, path);
    snprintf(mpath, sizeof mpath, "%s.rite", path);
    riteCheck(rite_model_checkpoint_save_file(lo->opt, lo->A, lo->B, mpath),
              lo->opt, mpath);
    printf("  saved checkpoint %s (+ .rite) at step %lld\n", path, step);
}

/* reads the settings only (to learn the optimizer, rank and lr before anything is built) */
static void peek_checkpoint(const char *path, CkptHeader *h)
{
    FILE *f = fopenCheck(path, "rb");
    ioCheck(fread(h, sizeof *h, 1, f) == 1 && memcmp(h->magic, CKPT_MAGIC, 8) == 0, path);
    fclose(f);
}

static long long load_checkpoint(const char *path, const Setup *su, const Run *run, Lora *lo, const Model *m)
{
    CkptHeader h;
    char mpath[1100];
    peek_checkpoint(path, &h);
    if (h.optimizer != (int32_t)run->kind || h.rank != su->rank || h.batch != su->batch ||
        h.lang != su->lang || (uint64_t)h.seed != su->seed || h.lr != run->lr) {
        fprintf(stderr, "char_lm: %s was saved with other settings\n", path);
        exit(1);
    }
    if (h.step > run->steps) {
        fprintf(stderr, "char_lm: %s is already at step %lld, past --steps %lld\n", path, (long long)h.step, run->steps);
        exit(1);
    }
    if (h.base_hash != model_hash(m)) {
        fprintf(stderr, "char_lm: %s was trained on another base model (use the same --base)\n", path);
        exit(1);
    }
    snprintf(mpath, sizeof mpath, "%s.rite", path);
    riteCheck(rite_model_checkpoint_load_file(lo->opt, lo->A, lo->B, mpath), lo->opt,
              mpath);
    if (rite_model_step_count(lo->opt) != h.step) {
        fprintf(stderr, "char_lm: %s is at step %lld, %s at step %lld\n", mpath, rite_model_step_count(lo->opt), path,
                (long long)h.step);
        exit(1);
    }
    printf("  resumed %s from %s at step %lld\n", opt_name(run->kind), path, (long long)h.step);
    return (long long)h.step;
}

/* ----------------------------------------------------------------------------
   exported adapters (lora_rite_io.h): PEFT's safetensors and llama.cpp's GGUF,
   under the names of EXPORTING at the top */

/* the modules of the adapters lo (the caller's buffers), under their PEFT (gguf = 0) or GGUF names */
static void adapter_modules(rite_io_module mods[NLAYER], const Lora *lo, int gguf)
{
    int l;
    for (l = 0; l < NLAYER; l++) {
        mods[l].name = gguf ? gguf_name[l] : peft_name[l];
        mods[l].in_features = layer_in[l];
        mods[l].out_features = layer_out[l];
        mods[l].r = lo->r;
        mods[l].A = lo->A[l];
        mods[l].B = lo->B[l];
    }
}

/* DIR/peft/ (adapter_model.safetensors, adapter_config.json) and DIR/adapter.gguf, F32;
   lora_alpha = r, since forward() adds B A x unscaled and both tools scale by alpha / r */
static void save_adapters(const char *dir, const Lora *lo, char *peft, char *gguf, size_t size)
{
    rite_io_module mods[NLAYER];
    rite_io_peft popt;
    rite_io_gguf gopt;
    char detail[256] = "";
    snprintf(peft, size, "%s/peft", dir);
    snprintf(gguf, size, "%s/adapter.gguf", dir);
    make_dir(dir);
    make_dir(peft);
    memset(&popt, 0, sizeof popt);
    popt.base_model = NULL;    /* not a model of the Hugging Face Hub: null */
    popt.task_type = NULL;     /* a plain torch module: no task type, PeftModel itself */
    popt.lora_alpha = lo->r;
    popt.dtype = RITE_IO_F32;
    adapter_modules(mods, lo, 0);
    riteIoCheck(rite_io_peft_save(peft, mods, NLAYER, &popt, detail, sizeof detail), peft, detail);
    memset(&gopt, 0, sizeof gopt);
    gopt.architecture = GGUF_ARCH;
    gopt.lora_alpha = lo->r;
    gopt.dtype = RITE_IO_F32;
    adapter_modules(mods, lo, 1);
    riteIoCheck(rite_io_gguf_save(gguf, mods, NLAYER, &gopt, detail, sizeof detail), gguf, detail);
}

/* the factors of lo from a PEFT directory, or else a GGUF file; the reader checks every
   tensor's shape against the layers and lo->r, and on failure changes nothing; returns the format */
static const char *load_adapters(const char *path, Lora *lo)
{
    rite_io_module mods[NLAYER];
    char detail[256] = "";
    struct stat st;
    int peft = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    adapter_modules(mods, lo, !peft);
    riteIoCheck(peft ? rite_io_peft_load(path, mods, NLAYER, detail, sizeof detail)
                     : rite_io_gguf_load(path, mods, NLAYER, detail, sizeof detail),
                path, detail);
    return peft ? "PEFT" : "GGUF";
}

/* ----------------------------------------------------------------------------
   plot: gnuplot PNG when gnuplot is on PATH, else an SVG drawn here */

static int on_path(const char *prog)
{
    const char *path = getenv("PATH"), *p;
    char buf[1024];
    if (!path) return 0;
    for (p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 0 && len + strlen(prog) + 2 < sizeof buf) {
            memcpy(buf, p, len);
            buf[len] = '/';
            strcpy(buf + len + 1, prog);
            if (access(buf, X_OK) == 0) return 1;
        }
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* distinct labels in order of first appearance */
static int curve_labels(const Curves *c, const char *labels[8])
{
    size_t i;
    int n = 0, k;
    for (i = 0; i < c->n; i++) {
        for (k = 0; k < n && strcmp(labels[k], c->p[i].label) != 0; k++) {}
        if (k == n && n < 8) labels[n++] = c->p[i].label;
    }
    return n;
}

static const char *const colors[8] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};

/* What a plot shows besides the curves: the base model's held-out loss (the
   table's, NAN: none), the subsets the curves are measured on, and the
   y range, which the later steps set (where the optimizers differ; the
   first steps' higher losses run off the top). */
typedef struct {
    double base_loss;
    size_t train_n, heldout_n;          /* the curves' subsets */
    double lo, hi;                      /* y range */
    double smax;                        /* last step */
} PlotInfo;

static const char *curve_name(const char *label)
{
    return strcmp(label, "rite") == 0 ? "LoRA-RITE" : strcmp(label, "adamw") == 0 ? "AdamW" : label;
}

static void plot_range(const Curves *c, PlotInfo *pi)
{
    double vmin = 1e30, late = -1e30;
    size_t i;
    pi->smax = 1;
    for (i = 0; i < c->n; i++)
        if ((double)c->p[i].step > pi->smax) pi->smax = (double)c->p[i].step;
    for (i = 0; i < c->n; i++) {
        double v[2];
        int j;
        v[0] = c->p[i].train;
        v[1] = c->p[i].heldout;
        for (j = 0; j < 2; j++) {
            if (!(v[j] < 1e30)) continue;
            if (v[j] < vmin) vmin = v[j];
            if ((double)c->p[i].step >= pi->smax / 5 && v[j] > late) late = v[j];
        }
    }
    if (late < vmin) late = vmin + 0.1;
    pi->lo = vmin - 0.1 * (late - vmin);
    pi->hi = late + 0.6 * (late - vmin);
    if (pi->base_loss == pi->base_loss && pi->base_loss <= pi->hi + 0.25 * (pi->hi - pi->lo))
        pi->hi = pi->base_loss + 0.05 * (pi->hi - pi->lo);   /* the base line fits with a little more room */
}

/* the note under the title: what the curves are measured on, where the base model is */
static void plot_note(const PlotInfo *pi, char *note, size_t size)
{
    char base[96] = "";
    if (pi->base_loss == pi->base_loss && pi->base_loss > pi->hi)
        snprintf(base, sizeof base, "; base model %.4f held-out (above the plot)", pi->base_loss);
    snprintf(note, size, "curves: losses on fixed subsets (%zu train, %zu held-out examples); "
                         "the table: its own sets%s", pi->train_n, pi->heldout_n, base);
}

static int plot_gnuplot(const Curves *c, const PlotInfo *pi, const char *dir, char *out, size_t outsz)
{
    const char *labels[8];
    char script[1100], cmd[1200], note[256];
    int nl = curve_labels(c, labels), k, kind, base = pi->base_loss <= pi->hi;
    size_t i;
    FILE *f;
    if (strchr(dir, '\'') || strchr(dir, '"')) return 0;
    snprintf(script, sizeof script, "%s/loss.gp", dir);
    snprintf(out, outsz, "%s/loss.png", dir);
    f = fopenCheck(script, "w");
    fprintf(f, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { set terminal pngcairo size 960,600 }"
               " else { set terminal png size 960,600 }\n");
    plot_note(pi, note, sizeof note);
    fprintf(f, "set output '%s'\nset title \"LoRA fine-tuning of a character-level MLP language model\\n"
               "{/*0.8 %s}\"\nset xlabel 'step'\nset ylabel 'loss (nats per character)'\nset grid\n"
               "set key top right\nset yrange [%g:%g]\n", out, note, pi->lo, pi->hi);
    fprintf(f, "plot ");
    for (k = 0; k < nl; k++)
        for (kind = 0; kind < 2; kind++)
            fprintf(f, "%s'-' using 1:2 with lines lw 2 dt %d lc rgb '%s' title '%s %s'", k + kind ? ", " : "",
                    kind ? 2 : 1, colors[k], curve_name(labels[k]), kind ? "train" : "held-out");
    if (base)
        fprintf(f, ", %g with lines lw 1 dt 3 lc rgb '#555555' title 'base model, held-out'", pi->base_loss);
    fprintf(f, "\n");
    for (k = 0; k < nl; k++)
        for (kind = 0; kind < 2; kind++) {
            for (i = 0; i < c->n; i++)
                if (strcmp(c->p[i].label, labels[k]) == 0)
                    fprintf(f, "%lld %.6f\n", c->p[i].step, kind ? c->p[i].train : c->p[i].heldout);
            fprintf(f, "e\n");
        }
    ioCheck(fclose(f) == 0, script);
    snprintf(cmd, sizeof cmd, "gnuplot '%s' 2>/dev/null", script);
    return system(cmd) == 0;
}

/* 1, 2 or 5 times a power of ten, at least x: a tick spacing */
static double nice_step(double x)
{
    double p = pow(10.0, floor(log10(x))), f = x / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

static void plot_svg(const Curves *c, const PlotInfo *pi, const char *dir, char *out, size_t outsz)
{
    const double W = 960, H = 600, x0 = 80, x1 = 700, y0 = 56, y1 = 540;
    const char *labels[8];
    char note[256];
    int nl = curve_labels(c, labels), k, kind, tck;
    double smax = pi->smax, lmin = pi->lo, lmax = pi->hi, xs, ys;
    size_t i;
    FILE *f;
    snprintf(out, outsz, "%s/loss.svg", dir);
    plot_note(pi, note, sizeof note);
    ys = nice_step((lmax - lmin) / 5);
    xs = nice_step(smax / 5);
    lmin = floor(lmin / ys) * ys;
    lmax = ceil(lmax / ys) * ys;
    smax = ceil(smax / xs) * xs;
#define SX(s) (x0 + (x1 - x0) * (double)(s) / smax)
#define SY(v) (y1 - (y1 - y0) * ((v) - lmin) / (lmax - lmin))
    f = fopenCheck(out, "w");
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f'"
               " font-family='sans-serif' font-size='13'>\n", W, H);
    fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
    fprintf(f, "<text x='%.0f' y='22' text-anchor='middle' font-size='15'>"
               "LoRA fine-tuning of a character-level MLP language model</text>\n", (x0 + x1) / 2);
    fprintf(f, "<text x='%.0f' y='40' text-anchor='middle' font-size='11'>%s</text>\n", (x0 + x1) / 2, note);
    fprintf(f, "<clipPath id='area'><rect x='%.1f' y='%.1f' width='%.1f' height='%.1f'/></clipPath>\n", x0, y0,
            x1 - x0, y1 - y0);
    /* axes, ticks and grid */
    fprintf(f, "<path d='M%.1f %.1f V%.1f H%.1f' stroke='black' fill='none'/>\n", x0, y0, y1, x1);
    for (tck = 0; tck * xs <= smax + 0.5 * xs; tck++) {
        double s = tck * xs;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", SX(s), y0, SX(s), y1);
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle'>%g</text>\n", SX(s), y1 + 18, s);
    }
    for (tck = 0; lmin + tck * ys <= lmax + 0.5 * ys; tck++) {
        double v = lmin + tck * ys;
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/>\n", x0, SY(v), x1, SY(v));
        fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='end'>%.2f</text>\n", x0 - 6, SY(v) + 4, v);
    }
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle'>step</text>\n", (x0 + x1) / 2, y1 + 40);
    fprintf(f, "<text transform='translate(24 %.1f) rotate(-90)' text-anchor='middle'>"
               "loss (nats per character)</text>\n", (y0 + y1) / 2);
    /* one polyline per optimizer and split; legend on the right */
    for (k = 0; k < nl; k++)
        for (kind = 0; kind < 2; kind++) {
            double ly = y0 + 10 + 22 * (2 * k + kind);
            fprintf(f, "<polyline clip-path='url(#area)' fill='none' stroke='%s' stroke-width='2'%s points='",
                    colors[k], kind ? " stroke-dasharray='6 4'" : "");
            for (i = 0; i < c->n; i++)
                if (strcmp(c->p[i].label, labels[k]) == 0)
                    fprintf(f, "%.1f,%.1f ", SX(c->p[i].step), SY(kind ? c->p[i].train : c->p[i].heldout));
            fprintf(f, "'/>\n");
            fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='2'%s/>\n",
                    x1 + 20, ly, x1 + 50, ly, colors[k], kind ? " stroke-dasharray='6 4'" : "");
            fprintf(f, "<text x='%.1f' y='%.1f'>%s %s</text>\n", x1 + 58, ly + 4, curve_name(labels[k]),
                    kind ? "train" : "held-out");
        }
    if (pi->base_loss <= lmax) {
        double ly = y0 + 10 + 22 * (2 * nl);
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#555' stroke-dasharray='2 3'/>\n", x0,
                SY(pi->base_loss), x1, SY(pi->base_loss));
        fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#555' stroke-dasharray='2 3'/>\n",
                x1 + 20, ly, x1 + 50, ly);
        fprintf(f, "<text x='%.1f' y='%.1f'>base model, held-out</text>\n", x1 + 58, ly + 4);
    }
    fprintf(f, "</svg>\n");
#undef SX
#undef SY
    ioCheck(fclose(f) == 0, out);
}

static void write_outputs(const Curves *c, PlotInfo *pi, const char *dir, int force_svg)
{
    char path[1100], plot[1100];
    size_t i;
    FILE *f;
    if (c->n == 0) return;
    plot_range(c, pi);
    make_dir(dir);
    /* CSV: step, optimizer, train_loss, heldout_loss */
    snprintf(path, sizeof path, "%s/loss.csv", dir);
    f = fopenCheck(path, "w");
    fprintf(f, "step,optimizer,train_loss,heldout_loss\n");
    for (i = 0; i < c->n; i++)
        fprintf(f, "%lld,%s,%.6f,%.6f\n", c->p[i].step, c->p[i].label, c->p[i].train, c->p[i].heldout);
    ioCheck(fclose(f) == 0, path);
    if (force_svg || !on_path("gnuplot") || !plot_gnuplot(c, pi, dir, plot, sizeof plot))
        plot_svg(c, pi, dir, plot, sizeof plot);
    printf("\nloss curves: %s, plot: %s\n", path, plot);
}

/* ----------------------------------------------------------------------------
   sampling words from a model, for a look at what it learned */

static void print_samples(const Model *m, const Lora *lo, uint64_t seed, int count)
{
    Acts a;
    Rng g = rng_for(seed, STREAM_SAMPLE, 0);
    int w;
    acts_alloc(&a, 1, lo ? lo->r : 0);
    for (w = 0; w < count; w++) {
        unsigned char ctx[CTX] = {0}, y = 0;
        int len, c;
        printf("%s", w ? " " : "   ");
        for (len = 0; len < 24; len++) {
            double u, acc = 0;
            int t;
            forward(m, lo, &a, ctx, &y, 1);
            u = rng_uniform(&g);
            for (t = 0; t < VOCAB - 1; t++) { acc += a.h[NLAYER - 1][t]; if (u < acc) break; }
            if (t == 0) break;
            printf("%s", token_text(t));
            for (c = 0; c < CTX - 1; c++) ctx[c] = ctx[c + 1];
            ctx[CTX - 1] = (unsigned char)t;
        }
    }
    printf("\n");
    acts_free(&a);
}

/* ----------------------------------------------------------------------------
   main: flags, data, pretraining, sweeps, final runs, report */

static void set_threads(int n)
{
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(n);
#else
    (void)n;   /* another BLAS: set its own environment variable */
#endif
}

static void usage(FILE *f)
{
    fprintf(f, "usage: char_lm [--optimizer rite|adamw|both] [--lang german|french] [--rank R]\n"
           "               [--steps N] [--batch B] [--lr X] [--seed S] [--threads T]\n"
           "               [--base PATH] [--rescale S] [--out DIR] [--save PATH] [--resume PATH]\n"
           "               [--export DIR] [--init-adapter PATH] [--dict DIR] [--svg] [--quick]\n"
           "LoRA fine-tuning of a character-level MLP language model (English -> German or\n"
           "French), LoRA-RITE against AdamW. See the top of examples/char_lm.c.\n");
}

static int is_value_flag(const char *f)
{
    static const char *const names[] = {"--optimizer", "--lang", "--rank", "--steps", "--batch", "--lr", "--seed",
                                        "--threads", "--base", "--rescale", "--out", "--save", "--resume", "--dict",
                                        "--export", "--init-adapter"};
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(f, names[i])) return 1;
    return 0;
}

static void bad_flag(const char *msg, const char *arg)
{
    fprintf(stderr, "char_lm: %s%s\n", msg, arg ? arg : "");
    usage(stderr);
    exit(2);
}

/* learning rates tried by the sweep (and the fixed ones of --quick) */
static const double sweep_rite[] = {2.5e-3, 5e-3, 1e-2, 2e-2};
static const double sweep_adamw[] = {2.5e-3, 5e-3, 1e-2, 2e-2};
#define NSWEEP 4

/* the command line */
typedef struct {
    const char *optimizer, *lang, *base_path, *out_dir, *save, *resume, *dict;
    const char *export_dir, *init_adapter;   /* --export, --init-adapter, or NULL */
    int rank, batch, threads, quick, force_svg;
    long long steps;           /* -1 until checked: the default of the mode */
    double lr, rescale;
    uint64_t seed;
    rite_optimizer kinds[2];   /* the optimizers to run */
    int nopt;
} Options;

static Options parse_flags(int argc, char **argv)
{
    Options o;
    int i;
    memset(&o, 0, sizeof o);
    o.optimizer = "both"; o.lang = "german"; o.out_dir = "char_lm_out"; o.dict = "/usr/share/dict";
    o.rank = 8; o.batch = 256; o.threads = 1; o.steps = -1; o.seed = 1;
    for (i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { usage(stdout); exit(0); }
        else if (!strcmp(f, "--quick")) { o.quick = 1; takes = 0; }
        else if (!strcmp(f, "--svg")) { o.force_svg = 1; takes = 0; }
        else if (!is_value_flag(f)) bad_flag("unknown flag ", f);
        else if (!v) bad_flag("missing value after ", f);
        else if (!strcmp(f, "--optimizer")) o.optimizer = v;
        else if (!strcmp(f, "--lang")) o.lang = v;
        else if (!strcmp(f, "--rank")) o.rank = atoi(v);
        else if (!strcmp(f, "--steps")) o.steps = atoll(v);
        else if (!strcmp(f, "--batch")) o.batch = atoi(v);
        else if (!strcmp(f, "--lr")) o.lr = atof(v);
        else if (!strcmp(f, "--seed")) o.seed = (uint64_t)strtoull(v, NULL, 10);
        else if (!strcmp(f, "--threads")) o.threads = atoi(v);
        else if (!strcmp(f, "--base")) o.base_path = v;
        else if (!strcmp(f, "--rescale")) o.rescale = atof(v);
        else if (!strcmp(f, "--out")) o.out_dir = v;
        else if (!strcmp(f, "--save")) o.save = v;
        else if (!strcmp(f, "--resume")) o.resume = v;
        else if (!strcmp(f, "--dict")) o.dict = v;
        else if (!strcmp(f, "--export")) o.export_dir = v;
        else if (!strcmp(f, "--init-adapter")) o.init_adapter = v;
        else bad_flag("unknown flag ", f);
        i += takes;
    }
    return o;
}

/* --resume: the checkpoint decides the optimizer, rank, batch, language, seed and lr */
static void resume_settings(Options *o)
{
    CkptHeader h;
    peek_checkpoint(o->resume, &h);
    o->optimizer = h.optimizer == RITE_LORA_RITE ? "rite" : "adamw";
    o->rank = h.rank;
    o->batch = h.batch;
    o->lang = h.lang ? "french" : "german";
    o->seed = (uint64_t)h.seed;
    o->lr = h.lr;
}

/* the optimizers to run, the flags' ranges and combinations, the default step count */
static void check_flags(Options *o)
{
    if (!strcmp(o->optimizer, "rite")) o->kinds[o->nopt++] = RITE_LORA_RITE;
    else if (!strcmp(o->optimizer, "adamw")) o->kinds[o->nopt++] = RITE_ADAMW;
    else if (!strcmp(o->optimizer, "both")) { o->kinds[o->nopt++] = RITE_LORA_RITE; o->kinds[o->nopt++] = RITE_ADAMW; }
    else bad_flag("--optimizer must be rite, adamw or both, not ", o->optimizer);
    if (strcmp(o->lang, "german") && strcmp(o->lang, "french"))
        bad_flag("--lang must be german or french, not ", o->lang);
    if (o->rank < 1 || o->rank > VOCAB) bad_flag("--rank must be in 1..32", NULL);
    if (o->batch < 1) bad_flag("--batch must be positive", NULL);
    if (o->threads < 1) bad_flag("--threads must be positive", NULL);
    if (o->steps == 0 || o->steps < -1) bad_flag("--steps must be positive", NULL);
    if (o->lr < 0 || o->rescale < 0) bad_flag("--lr and --rescale must be positive", NULL);
    if ((o->save || o->resume) && o->nopt != 1) bad_flag("--save and --resume need --optimizer rite or adamw", NULL);
    if ((o->save || o->resume) && o->rescale > 0) bad_flag("--save and --resume do not combine with --rescale", NULL);
    if ((o->export_dir || o->init_adapter) && o->rescale > 0)   /* it changes the frozen W */
        bad_flag("--export and --init-adapter do not combine with --rescale", NULL);
    if (o->init_adapter && o->resume)   /* the checkpoint has the adapters */
        bad_flag("--init-adapter does not combine with --resume", NULL);
    if (o->steps == -1) o->steps = o->quick ? 60 : 6000;
}

/* the frozen base model: loaded from --base, or pretrained on English (and saved to --base) */
static void load_base(Model *base, const Options *o, double t_start)
{
    WordList en;
    Dataset den;
    Acts a;
    int pre_steps = o->quick ? 150 : 3000;
    model_alloc(base);
    if (o->base_path && model_load(base, o->base_path)) {
        printf("base model: loaded %s\n", o->base_path);
        return;
    }
    en = read_words(o->dict, "american-english", "wamerican");
    den = make_dataset(&en, o->seed);
    printf("English: %zu words (%zu train, %zu held-out), %zu training characters\n", en.count,
           den.split[SPLIT_TRAIN].words, den.split[SPLIT_TEST].words, den.split[SPLIT_TRAIN].n);
    pretrain(base, &den, pre_steps, o->batch, o->seed);
    acts_alloc(&a, EVAL_CHUNK, 0);
    printf("base model: %d Adam steps on English, held-out loss %.4f nats/char (%.1f s)\n", pre_steps,
           evaluate(base, NULL, &a, &den.split[SPLIT_TEST]), now_seconds() - t_start);
    acts_free(&a);
    if (o->base_path) { model_save(base, o->base_path); printf("base model: saved %s\n", o->base_path); }
    free_dataset(&den);
    free_words(&en);
}

/* the target language's data and the fixed evaluation subsets; returns the base model's held-out loss */
static double setup_finetune(Setup *su, Dataset *d, const Model *base, const Options *o, unsigned char *own[4])
{
    int fr = !strcmp(o->lang, "french"), quick = o->quick;
    WordList wl = read_words(o->dict, fr ? "french" : "ngerman", fr ? "wfrench" : "wngerman");
    Acts a;
    double base_loss;
    *d = make_dataset(&wl, o->seed);
    free_words(&wl);
    su->base = base;
    su->data = d;
    su->rank = o->rank;
    su->batch = o->batch;
    su->lang = fr;
    su->seed = o->seed;
    su->eval_every = (int)(o->steps / 30 > 0 ? o->steps / 30 : 1);
    su->full_test = !quick;
    su->init = NULL;
    su->train_curve = subset(&d->split[SPLIT_TRAIN], quick ? 2048 : 8192, &own[0]);
    su->test_curve = subset(&d->split[SPLIT_TEST], quick ? 2048 : 8192, &own[1]);
    su->train_final = subset(&d->split[SPLIT_TRAIN], quick ? 2048 : 65536, &own[2]);
    su->valid_sweep = subset(&d->split[SPLIT_VALID], quick ? 2048 : 16384, &own[3]);
    acts_alloc(&a, EVAL_CHUNK, 0);
    base_loss = evaluate(base, NULL, &a, su->full_test ? &d->split[SPLIT_TEST] : &su->test_curve);
    acts_free(&a);
    printf("%s: %zu words (%zu train, %zu valid, %zu held-out), %zu training characters\n",
           fr ? "French" : "German", d->split[0].words + d->split[1].words + d->split[2].words,
           d->split[SPLIT_TRAIN].words, d->split[SPLIT_VALID].words, d->split[SPLIT_TEST].words,
           d->split[SPLIT_TRAIN].n);
    printf("base model on %s held-out words: %.4f nats/char\n", fr ? "French" : "German", base_loss);
    printf("LoRA: rank %d on all %d linear layers, %d trainable parameters (frozen: %zu)\n", o->rank, NLAYER,
           o->rank * (IN0 + HID + HID + HID + HID + VOCAB), base->count);
    return base_loss;
}

/* a run of optimizer k of the options, at learning rate lr, up to `steps` */
static Run make_run(const Options *o, int k, const char *label, double lr, long long steps)
{
    Run run;
    memset(&run, 0, sizeof run);
    run.label = label ? label : o->kinds[k] == RITE_LORA_RITE ? "rite" : "adamw";
    run.kind = o->kinds[k];
    run.lr = lr;
    run.steps = steps;
    return run;
}

/* the learning rates of optimizer k, best first: --lr, the fixed one of --quick, or a short
   sweep on the validation split (a rate that diverged is dropped); returns how many */
static int choose_lrs(const Setup *su, const Options *o, int k, double cand[NSWEEP])
{
    const double *grid = o->kinds[k] == RITE_LORA_RITE ? sweep_rite : sweep_adamw;
    int sweep_steps = (int)(o->steps / 4 > 1 ? o->steps / 4 : 1), n = 0, i, j;
    double valid[NSWEEP];
    if (o->lr > 0 || o->quick) { cand[0] = o->lr > 0 ? o->lr : grid[2]; return 1; }
    printf("\nsweep %s: %d steps per learning rate, loss on the validation split\n", opt_name(o->kinds[k]),
           sweep_steps);
    for (i = 0; i < NSWEEP; i++) {
        Run run = make_run(o, k, NULL, grid[i], sweep_steps);
        Result r;
        run.sweep = 1;
        r = finetune(su, &run, NULL);
        if (r.diverged) printf("  lr %-8g diverged at step %lld\n", grid[i], r.stopped);
        else printf("  lr %-8g valid %.4f (%.1f s)\n", grid[i], r.valid, r.seconds);
        if (!r.diverged) {   /* insert into the ranking */
            for (j = n; j > 0 && valid[j - 1] > r.valid; j--) {
                valid[j] = valid[j - 1];
                cand[j] = cand[j - 1];
            }
            valid[j] = r.valid;
            cand[j] = grid[i];
            n++;
        }
        result_free(&r);
    }
    return n;
}

/* the rescaling experiment: (A, B) against (S A, B / S) for each optimizer */
static void run_rescale(const Setup *su, const Options *o, double cand[2][NSWEEP], Curves *curves)
{
    double held[2][2];
    int k, i;
    printf("\nrescaling: lora_A *= %g, lora_B /= %g (lora_B initialised non-zero, see top of file)\n", o->rescale,
           o->rescale);
    for (k = 0; k < o->nopt; k++)
        for (i = 0; i < 2; i++) {
            char label[32];
            Run run;
            Result r;
            snprintf(label, sizeof label, "%s%s", o->kinds[k] == RITE_LORA_RITE ? "rite" : "adamw",
                     i ? "-rescaled" : "");
            run = make_run(o, k, label, cand[k][0], o->steps);
            run.rescale = i ? o->rescale : 1.0;
            r = finetune(su, &run, curves);
            held[k][i] = r.heldout;
            result_free(&r);
        }
    printf("\n%-10s %9s %16s %16s %12s\n", "optimizer", "lr", "held-out (S=1)", "held-out (S)", "difference");
    for (k = 0; k < o->nopt; k++)
        printf("%-10s %9g %16.6f %16.6f %12.2e\n", opt_name(o->kinds[k]), cand[k][0], held[k][0], held[k][1],
               fabs(held[k][1] - held[k][0]));
    printf("(S = %g; loss in nats per character on the held-out words)\n", o->rescale);
}

/* the full run of optimizer k: its best learning rate, or the next ones while a run diverges */
static Result run_final(const Setup *su, const Options *o, int k, const double *cand, int ncand, double *used_lr,
                        Curves *curves)
{
    Result res;
    int c;
    for (c = 0;; c++) {
        size_t mark = curves->n;
        Run run = make_run(o, k, NULL, cand[c], o->steps);
        run.save = o->save;
        run.resume = o->resume;
        *used_lr = cand[c];
        res = finetune(su, &run, curves);
        if (!res.diverged) {
            printf("  %-9s lr %g: %.1f s\n", opt_name(o->kinds[k]), cand[c], res.seconds);
            return res;
        }
        printf("  %-9s lr %g: diverged at step %lld%s\n", opt_name(o->kinds[k]), cand[c], res.stopped,
               c + 1 < ncand ? "; next learning rate of the sweep" : "");
        if (c + 1 == ncand) return res;
        result_free(&res);
        curves->n = mark;
    }
}

/* --export DIR: the adapters of each run that did not diverge, in DIR (one optimizer) or
   DIR/rite and DIR/adamw (both), with their final held-out loss (what --init-adapter prints) */
static void export_runs(const Options *o, const Result *res)
{
    char dir[1024], peft[1100], gguf[1100];
    int k;
    printf("\n");
    if (o->nopt > 1) make_dir(o->export_dir);
    for (k = 0; k < o->nopt; k++) {
        if (res[k].diverged) {
            printf("  %s diverged: its adapters are not exported\n", opt_name(o->kinds[k]));
            continue;
        }
        if (o->nopt > 1)
            snprintf(dir, sizeof dir, "%s/%s", o->export_dir, o->kinds[k] == RITE_LORA_RITE ? "rite" : "adamw");
        else
            snprintf(dir, sizeof dir, "%s", o->export_dir);
        save_adapters(dir, &res[k].lora, peft, gguf, sizeof peft);
        printf("exported %s adapters (held-out loss %.6f nats/char): %s (PEFT), %s (GGUF)\n",
               opt_name(o->kinds[k]), res[k].heldout, peft, gguf);
    }
}

/* --init-adapter PATH: the adapters every run starts from, read once; prints their held-out
   loss (on the set, and in the chunks, of a run's final held-out loss) */
static void init_adapters(Lora *init, Setup *su, const Options *o)
{
    Acts a;
    const char *format;
    lora_alloc(init, o->rank);
    format = load_adapters(o->init_adapter, init);
    su->init = init;
    acts_alloc(&a, o->batch > EVAL_CHUNK ? o->batch : EVAL_CHUNK, o->rank);   /* the rows of finetune() */
    printf("initial adapters: %s (%s, rank %d), held-out loss %.6f nats/char\n", o->init_adapter, format, o->rank,
           evaluate(su->base, init, &a, heldout_set(su)));
    acts_free(&a);
}

/* the comparison: each optimizer at its learning rate, full length, then the table and
   samples; returns 1 when --quick finds an optimizer that did not lower the held-out loss */
static int run_comparison(const Setup *su, const Options *o, double cand[2][NSWEEP], const int ncand[2],
                          double base_loss, Curves *curves)
{
    Result res[2];
    double used_lr[2];
    int fail = 0, k;
    printf("\nfine-tuning on %s, %lld steps of %d characters\n", su->lang ? "French" : "German", o->steps, o->batch);
    for (k = 0; k < o->nopt; k++) res[k] = run_final(su, o, k, cand[k], ncand[k], &used_lr[k], curves);
    printf("\n%-10s %9s %12s %12s\n", "optimizer", "lr", "train", "held-out");
    printf("%-10s %9s %12s %12.4f\n", "base", "-", "-", base_loss);
    for (k = 0; k < o->nopt; k++)
        printf("%-10s %9g %12.4f %12.4f%s\n", opt_name(o->kinds[k]), used_lr[k], res[k].train, res[k].heldout,
               res[k].diverged ? "  (diverged)" : "");
    printf("(loss in nats per character; train: %zu training examples, held-out: %zu examples of unseen words)\n",
           su->train_final.n, heldout_set(su)->n);
    if (o->export_dir) export_runs(o, res);
    printf("\nsamples from the base model:\n");
    print_samples(su->base, NULL, o->seed, 10);
    for (k = 0; k < o->nopt; k++) {
        if (!res[k].diverged) {
            printf("samples after fine-tuning with %s:\n", opt_name(o->kinds[k]));
            print_samples(&res[k].model, &res[k].lora, o->seed, 10);
        }
        if (o->quick && !(res[k].heldout < base_loss)) {
            fprintf(stderr, "char_lm: %s did not lower the held-out loss\n", opt_name(o->kinds[k]));
            fail = 1;
        }
        result_free(&res[k]);
    }
    return fail;
}

int main(int argc, char **argv)
{
    Options o = parse_flags(argc, argv);
    double t_start = now_seconds(), base_loss, cand[2][NSWEEP];
    int ncand[2] = {0, 0}, i, k;
    Model base;
    Dataset d;
    Setup su;
    Curves curves = {NULL, 0, 0};
    PlotInfo plot;
    Lora init;                 /* --init-adapter */
    unsigned char *own[4];

    if (o.resume) resume_settings(&o);
    check_flags(&o);
    stdout_is_tty = isatty(fileno(stdout));
    setvbuf(stdout, NULL, _IOLBF, 0);   /* log lines appear in order with the errors */
    set_threads(o.threads);
    if (o.quick) {
        double err = gradient_check(o.seed);
        printf("gradient check: largest relative error of backward() against finite differences %.1e\n", err);
        if (!(err < 2e-2)) { fprintf(stderr, "char_lm: the gradient check failed\n"); return 1; }
    }
    /* data and the frozen model: English for pretraining (only when the base model is trained), the target language */
    load_base(&base, &o, t_start);
    base_loss = setup_finetune(&su, &d, &base, &o, own);
    if (o.init_adapter) init_adapters(&init, &su, &o);
    /* learning rates, then the rescaling experiment or the comparison */
    for (k = 0; k < o.nopt; k++) {
        ncand[k] = choose_lrs(&su, &o, k, cand[k]);
        if (ncand[k] == 0) { fprintf(stderr, "char_lm: every learning rate diverged\n"); return 1; }
    }
    if (o.rescale > 0) run_rescale(&su, &o, cand, &curves);
    else if (run_comparison(&su, &o, cand, ncand, base_loss, &curves)) return 1;
    plot.base_loss = o.rescale > 0 ? NAN : base_loss;
    plot.train_n = su.train_curve.n;
    plot.heldout_n = su.test_curve.n;
    write_outputs(&curves, &plot, o.out_dir, o.force_svg);
    printf("total time %.1f s\n", now_seconds() - t_start);

    free(curves.p);
    if (o.init_adapter) lora_free(&init);
    for (i = 0; i < 4; i++) free(own[i]);
    free_dataset(&d);
    free(base.params);
    return 0;
}
