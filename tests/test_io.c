/* test_io.c - lora_rite_io.h: PEFT safetensors, adapter_config.json and GGUF
   adapters, written and read back, and every kind of hostile file.

   The files are checked byte by byte with parsers written here
   (tests/io/io_util.h), not with the header's own:
   - safetensors: the 8-byte little-endian header length, the JSON header
     (padded to 8 bytes; exactly the tensors expected, their dtype, shape and
     data_offsets, contiguous from 0 to the end of the file, __metadata__ of
     strings), the data in C order, little-endian;
   - adapter_config.json: peft_type, r, lora_alpha, target_modules (that
     match every module as PEFT matches them), base_model_name_or_path,
     task_type;
   - GGUF: magic, version 3, the adapter keys and their value types, tensor
     names <name>.lora_a / .lora_b with ne = [in, r] / [r, out], types F32
     and F16, offsets multiples of 32, the data.
   F16 and BF16 are compared with a naive round-to-nearest-even written here
   (io_util.h), on special values (zeros, subnormals, the largest finite,
   ties) and random ones; every finite half and bfloat16 goes through a
   write and a read unchanged; NaN, Inf and values that overflow the dtype
   are refused (RITE_IO_ERR_NOT_FINITE), as a reader refuses them.

   Every hostile file (hand-made here, valid except for the one defect its
   test names) must give its own status, leave the caller's modules
   (sentinel-filled, and the module array itself) byte for byte as they
   were, and read nothing past the buffer (every input is a heap block of
   its exact size, for AddressSanitizer and valgrind). A valid file cut at
   every length is refused. The detail text is always 0-terminated within
   the size given. Where the contract's list leaves a choice, the tests pin
   the reader's: JSON of the wrong kind for safetensors (a shape that is a
   string, three data_offsets, a metadata value that is a number) is
   RITE_IO_ERR_JSON; a safetensors tensor past the data is
   RITE_IO_ERR_OFFSETS, a GGUF tensor (or its padding) past the end of the
   file RITE_IO_ERR_TRUNCATED (its data section has no size but the file's);
   a GGUF file without general.type or adapter.type is
   RITE_IO_ERR_NOT_ADAPTER. GGUF tensors whose offsets go backwards (lora_a's
   data after lora_b's while its info comes first) are refused as llama.cpp
   refuses them (RITE_IO_ERR_OFFSETS).

   The header needs neither lora_rite.h nor a BLAS: this file includes
   only lora_rite_io.h. The optimizer-state export is in test_io_state.c. */
#define _POSIX_C_SOURCE 200809L

#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#define IO_POSIX 1
#include <sys/stat.h>
#include <unistd.h>
#else
#define IO_POSIX 0
#endif

#include <cmocka.h>

#define LORA_RITE_IO_IMPLEMENTATION
#include "lora_rite_io.h"

#ifdef LORA_RITE_H
#error "test_io.c checks that lora_rite_io.h stands alone: it must not include lora_rite.h"
#endif

#include "io/io_util.h"

/* ================================================================ helpers */

static void check_status(rite_io_status got, rite_io_status want, const char *what, const char *detail) {
    if (got != want) {
        print_error("%s: got %d (%s), want %d (%s); detail \"%s\"\n", what, (int)got, rite_io_status_string(got),
                    (int)want, rite_io_status_string(want), detail ? detail : "");
        fail();
    }
}

/* splitmix64 */
typedef struct rng {
    uint64_t s;
} rng;
static uint64_t rng_next(rng *g) {
    uint64_t z = (g->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform(rng *g) { return (double)(rng_next(g) >> 11) * (1.0 / 9007199254740992.0); }
/* a float of random sign and magnitude in [2^lo, 2^hi) */
static float rng_float(rng *g, int lo, int hi) {
    double e = lo + (hi - lo) * rng_uniform(g);
    double v = pow(2.0, e);
    return (float)((rng_next(g) & 1) ? -v : v);
}

/* A module with its own exact-size A and B. */
typedef struct mod {
    rite_io_module m;
    char name[160];
} mod;

static void mod_init(mod *x, const char *name, int in, int out, int r) {
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->m.name = x->name;
    x->m.in_features = in;
    x->m.out_features = out;
    x->m.r = r;
    x->m.A = (float *)malloc((size_t)r * (size_t)in * sizeof(float));
    x->m.B = (float *)malloc((size_t)out * (size_t)r * sizeof(float));
    assert_non_null(x->m.A);
    assert_non_null(x->m.B);
}
static size_t mod_na(const rite_io_module *m) { return (size_t)m->r * (size_t)m->in_features; }
static size_t mod_nb(const rite_io_module *m) { return (size_t)m->out_features * (size_t)m->r; }
static void mod_free(mod *x) {
    free(x->m.A);
    free(x->m.B);
    x->m.A = x->m.B = NULL;
}
static void mod_fill_random(mod *x, rng *g) {
    size_t i;
    for (i = 0; i < mod_na(&x->m); i++) x->m.A[i] = rng_float(g, -12, 4);
    for (i = 0; i < mod_nb(&x->m); i++) x->m.B[i] = rng_float(g, -12, 4);
}
static void mod_fill_byte(mod *x, int byte) {
    memset(x->m.A, byte, mod_na(&x->m) * sizeof(float));
    memset(x->m.B, byte, mod_nb(&x->m) * sizeof(float));
}

/* n modules -> the array the API takes */
static void mods_array(mod *xs, int n, rite_io_module *out) {
    int i;
    for (i = 0; i < n; i++) out[i] = xs[i].m;
}

/* k modules of these names and shapes, filled (in order) from one generator seeded with seed */
typedef struct mod_spec {
    const char *name;
    int in, out, r;
} mod_spec;
static void mods_random(mod *x, const mod_spec *spec, int k, uint64_t seed) {
    rng g;
    int i;
    g.s = seed;
    for (i = 0; i < k; i++) mod_init(&x[i], spec[i].name, spec[i].in, spec[i].out, spec[i].r);
    for (i = 0; i < k; i++) mod_fill_random(&x[i], &g);
}

static const rite_io_peft k_peft_f32 = {"meta-llama/Llama-3.2-1B", "CAUSAL_LM", 16.0, RITE_IO_F32};
static const rite_io_gguf k_gguf_f32 = {"llama", 16.0, RITE_IO_F32};

static rite_io_peft peft_opt(rite_io_dtype dt) {
    rite_io_peft o = k_peft_f32;
    o.dtype = dt;
    return o;
}
static rite_io_gguf gguf_opt(rite_io_dtype dt) {
    rite_io_gguf o = k_gguf_f32;
    o.dtype = dt;
    return o;
}

enum { FMT_PEFT = 0, FMT_GGUF = 1 };

/* The options of both formats in dtype dt (k_peft_f32, k_gguf_f32 otherwise); returns those of fmt. */
typedef struct fmt_opts {
    rite_io_peft peft;
    rite_io_gguf gguf;
} fmt_opts;
static const void *fmt_opt(int fmt, rite_io_dtype dt, fmt_opts *o) {
    o->peft = peft_opt(dt);
    o->gguf = gguf_opt(dt);
    return fmt == FMT_GGUF ? (const void *)&o->gguf : (const void *)&o->peft;
}

/* The size and the writer of either format; o is a rite_io_peft or a rite_io_gguf. */
static rite_io_status size_fmt(int fmt, const rite_io_module *m, int n, const void *o, size_t *size) {
    return fmt == FMT_GGUF ? rite_io_gguf_size(m, n, (const rite_io_gguf *)o, size)
                           : rite_io_peft_safetensors_size(m, n, (const rite_io_peft *)o, size);
}
static rite_io_status write_fmt(int fmt, const rite_io_module *m, int n, const void *o, void *dst, size_t size,
                                char *detail, size_t detail_size) {
    return fmt == FMT_GGUF ? rite_io_gguf_write(m, n, (const rite_io_gguf *)o, dst, size, detail, detail_size)
                           : rite_io_peft_safetensors_write(m, n, (const rite_io_peft *)o, dst, size, detail,
                                                            detail_size);
}

/* The file of n modules, in a heap block of its exact size. */
static unsigned char *fmt_file(int fmt, const rite_io_module *m, int n, const void *o, size_t *size) {
    char detail[256] = "";
    unsigned char *p;
    int gguf = fmt == FMT_GGUF;
    rite_io_status st = size_fmt(fmt, m, n, o, size);
    check_status(st, RITE_IO_OK, gguf ? "rite_io_gguf_size" : "rite_io_peft_safetensors_size", NULL);
    p = (unsigned char *)malloc(*size);
    assert_non_null(p);
    st = write_fmt(fmt, m, n, o, p, *size, detail, sizeof detail);
    check_status(st, RITE_IO_OK, gguf ? "rite_io_gguf_write" : "rite_io_peft_safetensors_write", detail);
    return p;
}
static unsigned char *peft_file(const rite_io_module *m, int n, const rite_io_peft *o, size_t *size) {
    return fmt_file(FMT_PEFT, m, n, o, size);
}
static unsigned char *gguf_file(const rite_io_module *m, int n, const rite_io_gguf *o, size_t *size) {
    return fmt_file(FMT_GGUF, m, n, o, size);
}

/* Two modules of one name would make a file with a duplicate key: the size or
   the writer refuses them. */
static void expect_one_name_refused(int fmt, const rite_io_module *m, const void *o) {
    unsigned char buf[4096];
    char detail[256];
    size_t n;
    rite_io_status st = size_fmt(fmt, m, 2, o, &n);
    if (st == RITE_IO_OK) st = write_fmt(fmt, m, 2, o, buf, sizeof buf, detail, sizeof detail);
    if (st != RITE_IO_ERR_ARGUMENT && st != RITE_IO_ERR_DUPLICATE_KEY) {
        print_error("two modules of one name: %s\n", rite_io_status_string(st));
        fail();
    }
}

/* Two modules of in 4, out 3, r 2, these names, all zeros; their arrays in m. */
static void zero_pair(mod *x, rite_io_module *m, const char *name0, const char *name1) {
    mod_init(&x[0], name0, 4, 3, 2);
    mod_init(&x[1], name1, 4, 3, 2);
    mod_fill_byte(&x[0], 0);
    mod_fill_byte(&x[1], 0);
    mods_array(x, 2, m);
}

/* The size and the writer refuse NULL modules, options, size and destination. */
static void expect_null_arguments(int fmt, const rite_io_module *m, const void *o) {
    size_t n;
    char detail[128];
    check_status(size_fmt(fmt, NULL, 1, o, &n), RITE_IO_ERR_NULL_ARGUMENT, "mods NULL", NULL);
    check_status(size_fmt(fmt, m, 1, NULL, &n), RITE_IO_ERR_NULL_ARGUMENT, "opt NULL", NULL);
    check_status(size_fmt(fmt, m, 1, o, NULL), RITE_IO_ERR_NULL_ARGUMENT, "size NULL", NULL);
    check_status(write_fmt(fmt, m, 1, o, NULL, 4096, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT, "dst NULL",
                 detail);
}

/* The modules y (their arrays in back) of the shapes and names of x[0, k), and freeing them. */
static void mods_like(const mod *x, int k, mod *y, rite_io_module *back) {
    int i;
    for (i = 0; i < k; i++) {
        mod_init(&y[i], x[i].name, x[i].m.in_features, x[i].m.out_features, x[i].m.r);
        back[i] = y[i].m;
    }
}
static void mods_free(mod *x, int k) {
    int i;
    for (i = 0; i < k; i++) mod_free(&x[i]);
}

static rite_io_status read_fmt(int fmt, const void *src, size_t n, rite_io_module *m, int k, char *detail,
                               size_t detail_size) {
    return fmt == FMT_GGUF ? rite_io_gguf_read(src, n, m, k, detail, detail_size)
                           : rite_io_peft_safetensors_read(src, n, m, k, detail, detail_size);
}

/* Reads file[0, n) (copied into a heap block of exactly n bytes) into the k
   modules, after filling them with a sentinel. On an error the modules, the
   module array and the file bytes must be as they were, and the detail text
   0-terminated, not empty, and within its size. Returns the status. */
static rite_io_status read_guarded(int fmt, const void *file, size_t n, rite_io_module *m, int k, char *detail,
                                   size_t detail_size) {
    unsigned char *src = iu_exact_copy(file, n);
    rite_io_module saved_mods[8];
    float *saved[8][2];
    char detail_buf[512];
    rite_io_status st;
    int i;
    assert_true(k <= 8);
    for (i = 0; i < k; i++) {
        memset(m[i].A, 0xA5, mod_na(&m[i]) * sizeof(float));
        memset(m[i].B, 0x5A, mod_nb(&m[i]) * sizeof(float));
        saved[i][0] = (float *)iu_exact_copy(m[i].A, mod_na(&m[i]) * sizeof(float));
        saved[i][1] = (float *)iu_exact_copy(m[i].B, mod_nb(&m[i]) * sizeof(float));
    }
    if (k) memcpy(saved_mods, m, (size_t)k * sizeof *m);
    if (!detail) {
        detail = detail_buf;
        detail_size = sizeof detail_buf;
    }
    memset(detail, 'x', detail_size);
    st = read_fmt(fmt, src, n, m, k, detail, detail_size);
    if (n) assert_memory_equal(src, file, n);
    if (st != RITE_IO_OK) {
        assert_true(st > RITE_IO_OK && st < RITE_IO_STATUS_COUNT);
        if (k) assert_memory_equal(saved_mods, m, (size_t)k * sizeof *m);
        for (i = 0; i < k; i++) {
            if (memcmp(saved[i][0], m[i].A, mod_na(&m[i]) * sizeof(float)) != 0 ||
                memcmp(saved[i][1], m[i].B, mod_nb(&m[i]) * sizeof(float)) != 0) {
                print_error("status %s: module %d (%s) was written\n", rite_io_status_string(st), i, m[i].name);
                fail();
            }
        }
        if (detail_size) {
            assert_non_null(memchr(detail, 0, detail_size));
            if (detail_size > 1) assert_true(detail[0] != 0);
        }
    }
    for (i = 0; i < k; i++) {
        free(saved[i][0]);
        free(saved[i][1]);
    }
    free(src);
    return st;
}

/* read_guarded, and the status must be `want` */
static void expect_read(int fmt, const void *file, size_t n, rite_io_module *m, int k, rite_io_status want,
                        const char *what) {
    char detail[512];
    rite_io_status st = read_guarded(fmt, file, n, m, k, detail, sizeof detail);
    check_status(st, want, what, detail);
}

/* The float values of every module must equal the reference modules'. */
static void expect_same_values(const rite_io_module *got, const rite_io_module *want, int k) {
    int i;
    for (i = 0; i < k; i++) {
        assert_memory_equal(got[i].A, want[i].A, mod_na(&want[i]) * sizeof(float));
        assert_memory_equal(got[i].B, want[i].B, mod_nb(&want[i]) * sizeof(float));
    }
}

/* ================================================================ hand-made safetensors */

/* The module of the hand-made files: PEFT name, in 3, out 2, r 2. */
#define ST_MOD "layers.0.q"
#define ST_A "'base_model.model.layers.0.q.lora_A.weight'"
#define ST_B "'base_model.model.layers.0.q.lora_B.weight'"
/* the valid tensor entries under a key: A 2 x 3 F32 at [0, 24), B 2 x 2 F32 at [24, 40) */
#define ST_ENTRY_A(key) key ":{'dtype':'F32','shape':[2,3],'data_offsets':[0,24]}"
#define ST_ENTRY_B(key) key ":{'dtype':'F32','shape':[2,2],'data_offsets':[24,40]}"
#define ST_TA ST_ENTRY_A(ST_A)
#define ST_TB ST_ENTRY_B(ST_B)
#define ST_META "'__metadata__':{'format':'pt'}"
/* the module's tensors as F16 (A, 12 bytes) and BF16 (B, 8 bytes): 20 bytes of data */
#define ST_F16_BF16                                                                                                    \
    "{" ST_A ":{'dtype':'F16','shape':[2,3],'data_offsets':[0,12]}," ST_B                                              \
    ":{'dtype':'BF16','shape':[2,2],'data_offsets':[12,20]}}"

/* A safetensors file: the header (with ' for ") behind its 8-byte length,
   then `data` bytes, each 0x3C (finite as F32, F16 and BF16: 0.0115, 1.06, 0.0115). */
static void st_make(iu_buf *b, const char *header, size_t data) {
    size_t i, n = strlen(header);
    b->n = 0;
    iu_put64(b, (uint64_t)n);
    for (i = 0; i < n; i++) iu_put8(b, header[i] == '\'' ? '"' : (unsigned char)header[i]);
    for (i = 0; i < data; i++) iu_put8(b, 0x3C);
}

static void st_module(mod *x) { mod_init(x, ST_MOD, 3, 2, 2); }

static void gg_module(mod *x);

/* The status of the hand-made file b (freed) read (read_guarded, detail as it
   takes it) into the module of the hand-made files of its format. */
static rite_io_status read_made(int fmt, iu_buf *b, char *detail, size_t detail_size) {
    mod x;
    rite_io_status st;
    if (fmt == FMT_GGUF) gg_module(&x);
    else st_module(&x);
    st = read_guarded(fmt, b->p, b->n, &x.m, 1, detail, detail_size);
    iu_free(b);
    mod_free(&x);
    return st;
}

/* Expect status `want` from the hand-made file b (freed). */
static void expect_made(int fmt, iu_buf *b, rite_io_status want, const char *what) {
    char detail[512];
    rite_io_status st = read_made(fmt, b, detail, sizeof detail);
    check_status(st, want, what, detail);
}

/* Expect status `want` from the hand-made file with this header and data. */
static void st_expect(const char *header, size_t data, rite_io_status want, const char *what) {
    iu_buf b = {NULL, 0, 0};
    st_make(&b, header, data);
    expect_made(FMT_PEFT, &b, want, what);
}

/* Values for the keys of a tensor entry of the hand-made header, as JSON (' for "):
   NULL keeps the valid one, ST_LEFT_OUT leaves the key out. */
#define ST_LEFT_OUT ""
typedef struct st_entry {
    const char *dtype, *shape, *offsets;
} st_entry;

/* key:{'dtype':..,'shape':..,'data_offsets':..} with e's values, else valid's */
static void st_put_entry(iu_buf *h, const char *key, const st_entry *e, const st_entry *valid) {
    static const char *const names[3] = {"dtype", "shape", "data_offsets"};
    const char *v[3];
    int k, n = 0;
    v[0] = e->dtype ? e->dtype : valid->dtype;
    v[1] = e->shape ? e->shape : valid->shape;
    v[2] = e->offsets ? e->offsets : valid->offsets;
    iu_puts(h, key);
    iu_puts(h, ":{");
    for (k = 0; k < 3; k++) {
        if (!*v[k]) continue;
        if (n++) iu_puts(h, ",");
        iu_puts(h, "'");
        iu_puts(h, names[k]);
        iu_puts(h, "':");
        iu_puts(h, v[k]);
    }
    iu_puts(h, "}");
}

/* The hand-made header "{" ST_TA "," ST_TB "}" with the values of a and b in
   its entries, and the entries `extra` (NULL: none) after them, 0-terminated in h. */
static void st_header(iu_buf *h, const st_entry *a, const st_entry *b, const char *extra) {
    static const st_entry valid_a = {"'F32'", "[2,3]", "[0,24]"}, valid_b = {"'F32'", "[2,2]", "[24,40]"};
    h->n = 0;
    iu_puts(h, "{");
    st_put_entry(h, ST_A, a, &valid_a);
    iu_puts(h, ",");
    st_put_entry(h, ST_B, b, &valid_b);
    if (extra) {
        iu_puts(h, ",");
        iu_puts(h, extra);
    }
    iu_puts(h, "}");
    iu_put8(h, 0);
}

/* ================================================================ hand-made GGUF */

/* The module of the hand-made files: base tensor blk.0.attn_q.weight, in 3,
   out 2, r 2; lora_a ne [3, 2] F32 at 0, lora_b ne [2, 2] F32 at 32. */
#define GG_MOD "blk.0.attn_q.weight"

/* What the hand-made file gets wrong (param: the value used). */
typedef enum gg_defect {
    GG_NONE,
    GG_MAGIC,            /* "GGUG" */
    GG_VERSION,          /* version = param */
    GG_VERSION_BIG,      /* version 3 written big-endian */
    GG_N_TENSORS,        /* tensor count = param */
    GG_N_KV,             /* key count = param */
    GG_KEY_LEN,          /* the length of the key "general.name" = param */
    GG_STR_LEN,          /* the length of general.name's value = param */
    GG_NAME_LEN,         /* the length of lora_b's name = param */
    GG_ARRAY_COUNT,      /* the count of general.ints (u32) = param */
    GG_ARRAY_STR_LEN,    /* the length of general.tags' second string = param */
    GG_KV_TYPE,          /* the value type of general.count = param */
    GG_ARRAY_TYPE,       /* the element type of general.ints = param */
    GG_NESTED,           /* general.nested: arrays in arrays, param deep */
    GG_DUP_KV,           /* general.type twice */
    GG_DUP_TENSOR,       /* lora_a's info twice (the second at offset 64, with data) */
    GG_GENERAL_TYPE,     /* general.type = (const char *)param, or left out for 0 */
    GG_ADAPTER_TYPE,     /* adapter.type = (const char *)param, or left out for 0 */
    GG_GENERAL_TYPE_U32, /* general.type as a u32 */
    GG_TENSOR_TYPE,      /* lora_a's type = param */
    GG_NDIMS,            /* lora_a's n_dims = param (its ne padded with 1) */
    GG_NE_BOTH,          /* lora_a's ne = [param, param] */
    GG_NE0,              /* lora_a's ne[0] = param */
    GG_ALIGNMENT,        /* general.alignment = param */
    GG_NO_ALIGNMENT,     /* general.alignment left out (32 by default): valid */
    GG_OFFSET_A,         /* lora_a's offset = param */
    GG_OFFSET_B,         /* lora_b's offset = param */
    GG_POKE_A,           /* lora_a's first value: the float bits param */
    GG_F16,              /* both tensors F16: valid */
    GG_EXTRA,            /* another module's tensors and a foreign tensor: valid */
    GG_SHORT_DATA,       /* the data section cut to 44 bytes (lora_b ends at 48) */
    GG_NO_B,             /* lora_b's info left out */
    GG_SWAPPED           /* lora_a at 32 and lora_b at 0, their data in that order */
} gg_defect;

static void gg_str(iu_buf *b, const char *s, uint64_t len) {
    iu_put64(b, len);
    iu_puts(b, s);
}
static void gg_kv_str(iu_buf *b, const char *key, const char *v) {
    gg_str(b, key, strlen(key));
    iu_put32(b, IU_GGUF_STRING);
    gg_str(b, v, strlen(v));
}
static void gg_info(iu_buf *b, const char *name, uint64_t name_len, uint32_t n_dims, uint64_t ne0, uint64_t ne1,
                    uint32_t type, uint64_t offset) {
    uint32_t d;
    gg_str(b, name, name_len);
    iu_put32(b, n_dims);
    for (d = 0; d < n_dims; d++) iu_put64(b, d == 0 ? ne0 : d == 1 ? ne1 : 1);
    iu_put32(b, type);
    iu_put64(b, offset);
}
static void gg_pad(iu_buf *b, size_t align) {
    while (b->n % align) iu_put8(b, 0);
}

static const float gg_values_a[6] = {0.5f, -1.25f, 2.0f, 0.125f, -3.5f, 1.0f};
static const float gg_values_b[4] = {-0.75f, 4.0f, 0.0625f, -2.5f};

/* The hand-made adapter with one defect (GG_NONE: valid). */
static void gg_make(iu_buf *out, gg_defect defect, uint64_t param) {
    iu_buf kv = {NULL, 0, 0}, ti = {NULL, 0, 0};
    uint64_t n_kv = 0, n_tensors = 0, i;
    const char *name_a = GG_MOD ".lora_a", *name_b = GG_MOD ".lora_b";
    uint32_t type = defect == GG_F16 ? 1u : 0u;
    size_t es = type == 1 ? 2 : 4, data_start;
    uint32_t align = 32;

    /* --- metadata */
    gg_kv_str(&kv, "general.architecture", "llama"), n_kv++;
    if (defect == GG_GENERAL_TYPE_U32) {
        gg_str(&kv, "general.type", 12);
        iu_put32(&kv, IU_GGUF_U32);
        iu_put32(&kv, 1);
        n_kv++;
    } else if (defect != GG_GENERAL_TYPE) {
        gg_kv_str(&kv, "general.type", "adapter"), n_kv++;
    } else if (param) {
        gg_kv_str(&kv, "general.type", (const char *)(uintptr_t)param), n_kv++;
    }
    if (defect != GG_ADAPTER_TYPE) gg_kv_str(&kv, "adapter.type", "lora"), n_kv++;
    else if (param) gg_kv_str(&kv, "adapter.type", (const char *)(uintptr_t)param), n_kv++;
    gg_str(&kv, "adapter.lora.alpha", 18);
    iu_put32(&kv, IU_GGUF_F32);
    iu_putf32(&kv, 16.0f);
    n_kv++;
    if (defect != GG_NO_ALIGNMENT) {
        gg_str(&kv, "general.alignment", 17);
        iu_put32(&kv, IU_GGUF_U32);
        iu_put32(&kv, defect == GG_ALIGNMENT ? (uint32_t)param : align);
        n_kv++;
    }
    /* keys a reader skips: an array of strings, an array of u32, scalars, a string */
    gg_str(&kv, "general.tags", 12);
    iu_put32(&kv, IU_GGUF_ARRAY);
    iu_put32(&kv, IU_GGUF_STRING);
    iu_put64(&kv, 3);
    gg_str(&kv, "lora", 4);
    gg_str(&kv, "test", defect == GG_ARRAY_STR_LEN ? param : 4);
    gg_str(&kv, "x", 1);
    n_kv++;
    gg_str(&kv, "general.ints", 12);
    iu_put32(&kv, IU_GGUF_ARRAY);
    iu_put32(&kv, defect == GG_ARRAY_TYPE ? (uint32_t)param : IU_GGUF_U32);
    iu_put64(&kv, defect == GG_ARRAY_COUNT ? param : 3);
    iu_put32(&kv, 1), iu_put32(&kv, 2), iu_put32(&kv, 3);
    n_kv++;
    gg_str(&kv, "general.count", 13);
    iu_put32(&kv, defect == GG_KV_TYPE ? (uint32_t)param : IU_GGUF_U64);
    iu_put64(&kv, 7);
    n_kv++;
    gg_str(&kv, "general.flag", 12);
    iu_put32(&kv, IU_GGUF_BOOL);
    iu_put8(&kv, 1);
    n_kv++;
    gg_str(&kv, "general.name", defect == GG_KEY_LEN ? param : 12);
    iu_put32(&kv, IU_GGUF_STRING);
    gg_str(&kv, "hand-made adapter", defect == GG_STR_LEN ? param : 17);
    n_kv++;
    if (defect == GG_NESTED) {
        gg_str(&kv, "general.nested", 14);
        iu_put32(&kv, IU_GGUF_ARRAY);
        for (i = 1; i < param; i++) {
            iu_put32(&kv, IU_GGUF_ARRAY);
            iu_put64(&kv, 1);
        }
        iu_put32(&kv, IU_GGUF_U8);
        iu_put64(&kv, 0);
        n_kv++;
    }
    if (defect == GG_DUP_KV) gg_kv_str(&kv, "general.type", "adapter"), n_kv++;

    /* --- tensor infos: a at 0 (24 or 12 bytes), b at 32 */
    {
        uint32_t ta = defect == GG_TENSOR_TYPE ? (uint32_t)param : type;
        uint32_t nd = defect == GG_NDIMS ? (uint32_t)param : 2u;
        uint64_t ne0 = defect == GG_NE_BOTH || defect == GG_NE0 ? param : 3, ne1 = defect == GG_NE_BOTH ? param : 2;
        uint64_t off_a = defect == GG_OFFSET_A ? param : defect == GG_SWAPPED ? 32 : 0;
        uint64_t off_b = defect == GG_OFFSET_B ? param : defect == GG_SWAPPED ? 0 : 32;
        gg_info(&ti, name_a, strlen(name_a), nd, ne0, ne1, ta, off_a);
        n_tensors++;
        if (defect != GG_NO_B) {
            gg_info(&ti, name_b, defect == GG_NAME_LEN ? param : strlen(name_b), 2, 2, 2, type, off_b);
            n_tensors++;
        }
        if (defect == GG_DUP_TENSOR) gg_info(&ti, name_a, strlen(name_a), 2, 3, 2, type, 64), n_tensors++;
        if (defect == GG_EXTRA) {
            gg_info(&ti, "blk.1.attn_v.weight.lora_a", 26, 2, 3, 2, type, 64), n_tensors++;
            gg_info(&ti, "blk.1.attn_v.weight.lora_b", 26, 2, 2, 2, type, 96), n_tensors++;
            gg_info(&ti, "token_embd.weight", 17, 1, 8, 1, 0, 128), n_tensors++;
        }
    }

    /* --- the file */
    out->n = 0;
    iu_puts(out, defect == GG_MAGIC ? "GGUG" : "GGUF");
    if (defect == GG_VERSION_BIG) {
        iu_put8(out, 0), iu_put8(out, 0), iu_put8(out, 0), iu_put8(out, 3);
    } else {
        iu_put32(out, defect == GG_VERSION ? (uint32_t)param : 3u);
    }
    iu_put64(out, defect == GG_N_TENSORS ? param : n_tensors);
    iu_put64(out, defect == GG_N_KV ? param : n_kv);
    iu_put(out, kv.p, kv.n);
    iu_put(out, ti.p, ti.n);
    gg_pad(out, align);
    data_start = out->n;
    /* data: a, b (b, a if swapped), then the extra tensors (copies of a and b, 8 floats of 1) */
    {
        int t, copies = defect == GG_DUP_TENSOR ? 3 : defect == GG_EXTRA ? 5 : 2;
        for (t = 0; t < copies; t++) {
            int is_a = (t % 2 == 0) != (defect == GG_SWAPPED && t < 2);
            const float *v = is_a ? gg_values_a : gg_values_b;
            int k, nv = t == 4 ? 8 : is_a ? 6 : 4;
            for (k = 0; k < nv; k++) {
                float f = t == 4 ? 1.0f : v[k];
                if (defect == GG_POKE_A && t == 0 && k == 0) f = iu_bits_float((uint32_t)param);
                (void)is_a;
                if (es == 2 && t != 4) iu_put16(out, iu_f16_from_float(f));
                else iu_putf32(out, f);
            }
            gg_pad(out, align);
        }
    }
    if (defect == GG_SHORT_DATA) out->n = data_start + 44;
    iu_free(&kv);
    iu_free(&ti);
}

static void gg_module(mod *x) { mod_init(x, GG_MOD, 3, 2, 2); }

static void gg_expect(gg_defect defect, uint64_t param, rite_io_status want, const char *what) {
    iu_buf b = {NULL, 0, 0};
    gg_make(&b, defect, param);
    expect_made(FMT_GGUF, &b, want, what);
}

/* the status of the hand-made adapter with this defect */
static rite_io_status gg_status(gg_defect defect, uint64_t param) {
    iu_buf b = {NULL, 0, 0};
    gg_make(&b, defect, param);
    return read_made(FMT_GGUF, &b, NULL, 0);
}

/* ================================================================ tables of hand-made files */

/* A test of a few hand-made files that must all give one status: a table
   named as its test, a named row per file, run by run_st_cases / run_gg_cases
   from the cmocka entry ST_CASES(name, status) / GG_CASES(name, status). */

/* A safetensors file: the whole header (' for ") and the data bytes after it,
   or (header NULL) the hand-made header with the values of a and b in its
   entries and the entries `extra` after them, and 40 bytes of data. */
typedef struct st_case {
    const char *what;
    const char *header;
    size_t data;
    st_entry a, b;
    const char *extra;
} st_case;
typedef struct gg_case {
    gg_defect defect;
    uint64_t param;
    const char *what;
} gg_case;
typedef struct cases {
    const void *c;
    size_t count;
    rite_io_status want;
} cases;

/* Expect status `want` from the file of row c. */
static void st_expect_case(const st_case *c, rite_io_status want) {
    iu_buf h = {NULL, 0, 0};
    if (c->header) {
        st_expect(c->header, c->data, want, c->what);
    } else {
        st_header(&h, &c->a, &c->b, c->extra);
        st_expect((const char *)h.p, 40, want, c->what);
    }
    iu_free(&h);
}

static void run_st_cases(void **state) {
    const cases *t = (const cases *)*state;
    size_t i;
    for (i = 0; i < t->count; i++) st_expect_case((const st_case *)t->c + i, t->want);
}
static void run_gg_cases(void **state) {
    const cases *t = (const cases *)*state;
    const gg_case *c = (const gg_case *)t->c;
    size_t i;
    for (i = 0; i < t->count; i++) gg_expect(c[i].defect, c[i].param, t->want, c[i].what);
}
#define CASES_TEST(t, run, want) {#t, run, NULL, NULL, &(cases){t, sizeof t / sizeof t[0], want}}
#define ST_CASES(t, want) CASES_TEST(t, run_st_cases, want)
#define GG_CASES(t, want) CASES_TEST(t, run_gg_cases, want)

/* the module of test_each_reader_refuses_the_other_format and test_zero_modules */
static const mod_spec k_q_4x4 = {"blk.0.attn_q.weight", 4, 4, 2};

/* ================================================================ status strings */

static void test_status_strings_are_distinct_and_never_null(void **state) {
    int a, b;
    (void)state;
    static const int out_of_range[] = {RITE_IO_STATUS_COUNT, -1, 1000000};
    for (a = 0; a < RITE_IO_STATUS_COUNT; a++) {
        const char *s = rite_io_status_string((rite_io_status)a);
        assert_true(s != NULL && s[0] != 0);
        for (b = 0; b < a; b++) assert_string_not_equal(s, rite_io_status_string((rite_io_status)b));
    }
    for (a = 0; a < 3; a++) assert_non_null(rite_io_status_string((rite_io_status)out_of_range[a]));
}

/* ================================================================ PEFT: the bytes written */

/* Checks a safetensors file of modules m: header, keys, dtypes, shapes,
   contiguous offsets, __metadata__ of strings, and the data (F32: the
   floats; F16, BF16: the naive conversion of io_util.h). */
static void check_safetensors_bytes(const unsigned char *file, size_t n, const rite_io_module *m, int k,
                                    rite_io_dtype dt) {
    iu_st st;
    char err[160];
    const char *dname = dt == RITE_IO_F32 ? "F32" : dt == RITE_IO_F16 ? "F16" : "BF16";
    size_t es = dt == RITE_IO_F32 ? 4 : 2;
    uint64_t expect_begin = 0;
    int i, side, members, tensors = 0, meta;
    if (iu_st_parse(&st, file, n, err, sizeof err) != 0) {
        print_error("safetensors: %s\n", err);
        iu_st_free(&st);
        fail();
    }
    assert_false(st.json.duplicate_key);
    assert_true(st.header_len > 0 && st.header[0] == '{');
    /* the header is padded with spaces to 8 bytes (as the safetensors library
       writes it), so that the data starts 8-byte aligned */
    assert_true(st.header_len % 8 == 0);
    /* the members: every module's two tensors, and __metadata__ (strings only) */
    members = st.json.n[st.root].count;
    meta = iu_jget(&st.json, st.root, "__metadata__");
    if (meta >= 0) {
        int e;
        assert_int_equal(st.json.n[meta].type, IU_JOBJ);
        for (e = 0; e < st.json.n[meta].count; e++) assert_int_equal(st.json.n[iu_jat(&st.json, meta, e)].type, IU_JSTR);
        members--;
    }
    assert_int_equal(members, 2 * k);
    /* offsets: the tensors, sorted by their begin, tile [0, data) exactly */
    for (;;) {
        int e, best = -1;
        uint64_t best_begin = UINT64_MAX;
        for (e = 0; e < st.json.n[st.root].count; e++) {
            iu_st_tensor t;
            int id = iu_jat(&st.json, st.root, e);
            if (strcmp(st.json.n[id].key, "__metadata__") == 0) continue;
            assert_int_equal(iu_st_tensor_get(&st, st.json.n[id].key, &t), 0);
            if (t.begin >= expect_begin && t.begin < best_begin) {
                best_begin = t.begin;
                best = e;
            }
        }
        if (best < 0) break;
        {
            iu_st_tensor t;
            iu_st_tensor_get(&st, st.json.n[iu_jat(&st.json, st.root, best)].key, &t);
            assert_true(t.begin == expect_begin);
            assert_true(t.end > t.begin);
            expect_begin = t.end;
            tensors++;
        }
    }
    assert_int_equal(tensors, 2 * k);
    assert_true(expect_begin == st.data_len);
    /* each module's tensors */
    for (i = 0; i < k; i++) {
        for (side = 0; side < 2; side++) {
            char key[256];
            iu_st_tensor t;
            uint64_t rows = side ? (uint64_t)m[i].out_features : (uint64_t)m[i].r;
            uint64_t cols = side ? (uint64_t)m[i].r : (uint64_t)m[i].in_features;
            const float *v = side ? m[i].B : m[i].A;
            size_t e, count = (size_t)(rows * cols);
            snprintf(key, sizeof key, "base_model.model.%s.lora_%c.weight", m[i].name, side ? 'B' : 'A');
            if (iu_st_tensor_get(&st, key, &t) != 0) {
                print_error("tensor %s missing or malformed\n", key);
                fail();
            }
            assert_string_equal(t.dtype, dname);
            assert_int_equal(t.ndim, 2);
            assert_true(t.shape[0] == rows && t.shape[1] == cols);
            assert_true(t.end - t.begin == count * es);
            for (e = 0; e < count; e++) {
                const unsigned char *p = t.bytes + e * es;
                int ok = dt == RITE_IO_F32   ? iu_le32(p) == iu_float_bits(v[e])
                         : dt == RITE_IO_F16 ? iu_le16(p) == iu_f16_from_float(v[e])
                                             : iu_le16(p) == iu_bf16_from_float(v[e]);
                if (!ok) {
                    print_error("%s[%zu]: %.9g written as 0x%0*x, want 0x%0*x\n", key, e, (double)v[e],
                                (int)(2 * es), (unsigned)(es == 4 ? iu_le32(p) : iu_le16(p)), (int)(2 * es),
                                (unsigned)(dt == RITE_IO_F32   ? iu_float_bits(v[e])
                                           : dt == RITE_IO_F16 ? iu_f16_from_float(v[e])
                                                               : iu_bf16_from_float(v[e])));
                    fail();
                }
            }
        }
    }
    iu_st_free(&st);
}

static void test_peft_safetensors_bytes_f32(void **state) {
    static const mod_spec spec[3] = {{"model.layers.0.self_attn.q_proj", 16, 16, 4},
                                     {"model.layers.0.self_attn.v_proj", 16, 8, 4},
                                     {"model.layers.1.mlp.down_proj", 5, 7, 3}};
    mod x[3];
    rite_io_module m[3];
    size_t n;
    unsigned char *f;
    (void)state;
    mods_random(x, spec, 3, 11);
    mods_array(x, 3, m);
    f = peft_file(m, 3, &k_peft_f32, &n);
    check_safetensors_bytes(f, n, m, 3, RITE_IO_F32);
    free(f);
    mods_free(x, 3);
}

static void test_peft_size_is_what_write_needs(void **state) {
    mod x;
    rite_io_module m;
    rng g = {12};
    size_t n, n2;
    unsigned char *f, *small;
    char detail[128];
    int dt;
    (void)state;
    mod_init(&x, "a.b", 9, 5, 2);
    mod_fill_random(&x, &g);
    m = x.m;
    for (dt = RITE_IO_F32; dt <= RITE_IO_BF16; dt++) {
        rite_io_peft o = peft_opt((rite_io_dtype)dt);
        f = peft_file(&m, 1, &o, &n);
        assert_int_equal(rite_io_peft_safetensors_size(&m, 1, &o, &n2), RITE_IO_OK);
        assert_true(n == n2);
        small = (unsigned char *)malloc(n - 1);
        assert_non_null(small);
        check_status(rite_io_peft_safetensors_write(&m, 1, &o, small, n - 1, detail, sizeof detail),
                     RITE_IO_ERR_BUFFER_SIZE, "one byte short", detail);
        free(small);
        free(f);
    }
    mod_free(&x);
}

/* Values at the edges of each dtype, and the ties of round-to-nearest-even. */
static const float k_special_f16[] = {
    0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, -65504.0f, 65519.0f, 65519.99f,
    0x1p-24f,                 /* the smallest subnormal */
    -0x1p-24f, 0x1p-25f,      /* half of it: a tie, to 0 */
    0x1.8p-24f,               /* 1.5 steps: a tie, to 2 steps */
    0x1.000002p-25f,          /* just above half: 1 step */
    0x1.4p-23f, 0x1p-14f,     /* the smallest normal */
    0x1.ff8p-15f,             /* 1023.5 steps: a tie, to 1024 = the smallest normal */
    0x1.ffcp-15f, 6.0e-5f, 1e-7f, 3e-8f, 2.9e-8f, 1e-9f, FLT_MIN, 0x1p-149f, -0x1p-149f,
    1.0f + 0x1p-11f,          /* a tie, to 1 */
    1.0f + 0x1.8p-10f,        /* 1 + 3 2^-11: a tie, to 1 + 2^-9 */
    1.0f + 0x1p-11f + 0x1p-20f, 1.0f - 0x1p-12f, 1024.5f, 1025.5f, 2049.0f, 2051.0f, 0.1f, 1.0f / 3.0f,
    -2.0f / 3.0f, 3.14159265f, 100.0f, 4097.0f, 32768.0f, 49152.5f};

static const uint32_t k_special_bf16_bits[] = {
    0x00000000u, 0x80000000u, 0x3F800000u, 0xBF800000u,
    0x3F808000u,  /* 1 + 2^-8: a tie, to 1 */
    0x3F818000u,  /* 1 + 3 2^-8: a tie, to 1 + 2^-6 */
    0x3F808001u,  /* just above the tie */
    0x3F807FFFu,  /* just below */
    0x7F7F0000u,  /* the largest finite bfloat16 */
    0x7F7F7FFFu,  /* rounds down to it */
    0xFF7F7FFFu, 0x00800000u, /* FLT_MIN */
    0x00000001u,  /* the smallest float subnormal: to 0 */
    0x00008000u,  /* a tie at the subnormal step: to 0 */
    0x00018000u,  /* a tie: to 2 steps */
    0x00008001u,  /* above the tie: 1 step */
    0x007FFFFFu,  /* the largest subnormal: up to FLT_MIN */
    0x807FFFFFu, 0x3DCCCCCDu, /* 0.1 */
    0x40490FDBu,  /* pi */
    0x477FE000u, 0x4B800001u, 0x1E3CE508u};

/* modules whose values are `vals` (repeated), then random ones of every magnitude
   the dtype holds (scales from 2^lo to 2^hi) */
static void fill_special(mod *x, const float *vals, size_t nv, rng *g, int lo, int hi) {
    size_t i, na = mod_na(&x->m), nb = mod_nb(&x->m);
    for (i = 0; i < na; i++) x->m.A[i] = i < nv ? vals[i] : rng_float(g, lo, hi);
    for (i = 0; i < nb; i++) x->m.B[i] = i < nv ? vals[nv - 1 - i] : rng_float(g, lo, hi);
}

static void peft_round_trip(rite_io_dtype dt, const float *vals, size_t nv, int lo, int hi) {
    mod x[2], y[2];
    rite_io_module m[2], back[2];
    rite_io_peft o = peft_opt(dt);
    rng g = {13u + (unsigned)dt};
    size_t n, i;
    unsigned char *f;
    int k;
    mod_init(&x[0], "model.layers.3.self_attn.o_proj", 64, 48, 8);
    mod_init(&x[1], "model.layers.3.mlp.gate_proj", 48, 96, 8);
    for (k = 0; k < 2; k++) fill_special(&x[k], vals, nv, &g, lo, hi);
    mods_array(x, 2, m);
    f = peft_file(m, 2, &o, &n);
    check_safetensors_bytes(f, n, m, 2, dt);
    /* read back: F32 exactly, F16 / BF16 the rounded values */
    mods_like(x, 2, y, back);
    expect_read(FMT_PEFT, f, n, back, 2, RITE_IO_OK, "reading back");
    for (k = 0; k < 2; k++) {
        for (i = 0; i < mod_na(&m[k]) + mod_nb(&m[k]); i++) {
            int isb = i >= mod_na(&m[k]);
            size_t e = isb ? i - mod_na(&m[k]) : i;
            float v = isb ? m[k].B[e] : m[k].A[e], got = isb ? back[k].B[e] : back[k].A[e];
            float want = dt == RITE_IO_F32 ? v
                         : dt == RITE_IO_F16 ? iu_f16_to_float(iu_f16_from_float(v))
                                             : iu_bf16_to_float(iu_bf16_from_float(v));
            if (iu_float_bits(got) != iu_float_bits(want)) {
                print_error("module %d %c[%zu]: %.9g read back as %.9g, want %.9g\n", k, isb ? 'B' : 'A', e,
                            (double)v, (double)got, (double)want);
                fail();
            }
        }
    }
    free(f);
    mods_free(x, 2);
    mods_free(y, 2);
}

static void test_peft_f32_round_trip_is_exact(void **state) {
    static const float vals[] = {0.0f, -0.0f, FLT_MAX, -FLT_MAX, FLT_MIN, 0x1p-149f, -0x1p-149f, 0x1.fffffcp-127f,
                                 1.0f + FLT_EPSILON, 0.1f, 65520.0f, 1e30f, -1e-30f};
    (void)state;
    peft_round_trip(RITE_IO_F32, vals, sizeof vals / sizeof vals[0], -149, 127);
}

static void test_peft_f16_is_round_to_nearest_even(void **state) {
    (void)state;
    /* random values from below the subnormals to the largest finite */
    peft_round_trip(RITE_IO_F16, k_special_f16, sizeof k_special_f16 / sizeof k_special_f16[0], -27, 15);
}

static void test_peft_bf16_is_round_to_nearest_even(void **state) {
    float vals[sizeof k_special_bf16_bits / sizeof k_special_bf16_bits[0]];
    size_t i;
    (void)state;
    for (i = 0; i < sizeof vals / sizeof vals[0]; i++) vals[i] = iu_bits_float(k_special_bf16_bits[i]);
    peft_round_trip(RITE_IO_BF16, vals, sizeof vals / sizeof vals[0], -140, 127);
}

/* Every finite half (or bfloat16), as a float, written in that dtype and read
   back: the bytes are the half itself and the value comes back unchanged.
   The 63488 finite halves (65280 bfloat16) fill, a quarter each, A (2 x q)
   and B (q x 2) of two modules, q = count / 8. */
static void every_finite_16bit(int fmt, rite_io_dtype dt) {
    mod x[2], y[2];
    rite_io_module m[2], back[2];
    fmt_opts opts;
    unsigned h;
    size_t count = 0, n, i;
    unsigned char *f;
    int k;
    int finite_count = dt == RITE_IO_F16 ? 63488 : 65280;
    /* module 0: A is 2 x q, B is q x 2; module 1 holds the rest the same way */
    mod_init(&x[0], fmt == FMT_GGUF ? "blk.0.ffn_up.weight" : "model.layers.0.mlp.up_proj", finite_count / 8,
             finite_count / 8, 2);
    mod_init(&x[1], fmt == FMT_GGUF ? "blk.0.ffn_down.weight" : "model.layers.0.mlp.down_proj", finite_count / 8,
             finite_count / 8, 2);
    for (h = 0; h < 65536; h++) {
        uint16_t v = (uint16_t)h;
        float fv;
        if (dt == RITE_IO_F16 ? !iu_f16_finite(v) : !iu_bf16_finite(v)) continue;
        fv = dt == RITE_IO_F16 ? iu_f16_to_float(v) : iu_bf16_to_float(v);
        {
            size_t per = (size_t)finite_count / 4, q = count / per, e = count % per;
            mod *t = &x[q / 2];
            if (q % 2 == 0) t->m.A[e] = fv;
            else t->m.B[e] = fv;
        }
        count++;
    }
    assert_int_equal((int)count, finite_count);
    mods_array(x, 2, m);
    f = fmt_file(fmt, m, 2, fmt_opt(fmt, dt, &opts), &n);
    if (fmt == FMT_PEFT) check_safetensors_bytes(f, n, m, 2, dt);
    mods_like(x, 2, y, back);
    expect_read(fmt, f, n, back, 2, RITE_IO_OK, "every finite 16-bit value");
    for (k = 0; k < 2; k++) {
        for (i = 0; i < mod_na(&m[k]); i++) assert_int_equal(iu_float_bits(back[k].A[i]), iu_float_bits(m[k].A[i]));
        for (i = 0; i < mod_nb(&m[k]); i++) assert_int_equal(iu_float_bits(back[k].B[i]), iu_float_bits(m[k].B[i]));
    }
    free(f);
    mods_free(x, 2);
    mods_free(y, 2);
}

/* A test of one format and dtype: the cmocka entry FMT_DTYPE_TEST(name, runner, format, dtype). */
typedef struct fmt_dtype {
    int fmt;
    rite_io_dtype dt;
} fmt_dtype;
#define FMT_DTYPE_TEST(t, run, fmt, dt) {#t, run, NULL, NULL, &(fmt_dtype){fmt, dt}}

static void run_every_finite_16bit(void **state) {
    const fmt_dtype *c = (const fmt_dtype *)*state;
    every_finite_16bit(c->fmt, c->dt);
}

/* NaN, Inf and finite values past the dtype's largest (which would round to
   Inf) are refused by the writers, as the readers refuse them. */
static void writer_refuses(int fmt, rite_io_dtype dt, float v, const char *what) {
    mod x;
    rite_io_module m;
    fmt_opts opts;
    const void *o = fmt_opt(fmt, dt, &opts);
    char detail[256] = "";
    size_t n = 0;
    unsigned char *dst;
    rite_io_status st;
    int side;
    for (side = 0; side < 2; side++) {
        mod_init(&x, fmt == FMT_GGUF ? "blk.2.attn_k.weight" : "model.layers.2.self_attn.k_proj", 4, 3, 2);
        mod_fill_byte(&x, 0);
        if (side) x.m.B[5] = v;
        else x.m.A[7] = v;
        m = x.m;
        size_fmt(fmt, &m, 1, o, &n);
        dst = (unsigned char *)malloc(n ? n : 4096);
        st = write_fmt(fmt, &m, 1, o, dst, n ? n : 4096, detail, sizeof detail);
        check_status(st, RITE_IO_ERR_NOT_FINITE, what, detail);
        free(dst);
        mod_free(&x);
    }
}

static void test_peft_writer_refuses_nan_inf_and_overflow(void **state) {
    int dt;
    (void)state;
    for (dt = RITE_IO_F32; dt <= RITE_IO_BF16; dt++) {
        writer_refuses(FMT_PEFT, (rite_io_dtype)dt, NAN, "NaN");
        writer_refuses(FMT_PEFT, (rite_io_dtype)dt, -NAN, "-NaN");
        writer_refuses(FMT_PEFT, (rite_io_dtype)dt, INFINITY, "Inf");
        writer_refuses(FMT_PEFT, (rite_io_dtype)dt, -INFINITY, "-Inf");
    }
    writer_refuses(FMT_PEFT, RITE_IO_F16, 65520.0f, "65520 (rounds to Inf in F16)");
    writer_refuses(FMT_PEFT, RITE_IO_F16, -1e6f, "-1e6 in F16");
    writer_refuses(FMT_PEFT, RITE_IO_F16, FLT_MAX, "FLT_MAX in F16");
    writer_refuses(FMT_PEFT, RITE_IO_BF16, FLT_MAX, "FLT_MAX (rounds to Inf in BF16)");
    writer_refuses(FMT_PEFT, RITE_IO_BF16, iu_bits_float(0xFF7F8000u), "-0x1.ff8p127, a tie to -Inf in BF16");
}

/* ================================================================ PEFT: adapter_config.json */

static void config_json(const rite_io_module *m, int n, const rite_io_peft *o, iu_json *j, int *root, char **text) {
    size_t written = 0, len;
    char *buf = (char *)malloc(65536);
    assert_non_null(buf);
    check_status(rite_io_peft_config_write(m, n, o, buf, 65536, &written), RITE_IO_OK, "config_write", NULL);
    len = strlen(buf);
    assert_true(written == len + 1);
    *root = iu_json_parse(j, buf, len);
    if (*root < 0) {
        print_error("adapter_config.json: %s\n%s\n", j->err, buf);
        fail();
    }
    assert_false(j->duplicate_key);
    assert_int_equal(j->n[*root].type, IU_JOBJ);
    *text = buf;
}

/* PEFT applies a module when its name is a target or ends with "." target */
static int peft_targets(const char *name, const char *target) {
    size_t n = strlen(name), t = strlen(target);
    return (n == t && strcmp(name, target) == 0) ||
           (n > t && strcmp(name + n - t, target) == 0 && name[n - t - 1] == '.');
}

static void test_peft_config_keys(void **state) {
    mod x[3];
    rite_io_module m[3];
    iu_json j;
    char *text;
    int root, tm, i, e;
    uint64_t r;
    (void)state;
    mod_init(&x[0], "model.layers.0.self_attn.q_proj", 8, 8, 4);
    mod_init(&x[1], "model.layers.0.self_attn.v_proj", 8, 4, 4);
    mod_init(&x[2], "model.layers.1.self_attn.q_proj", 8, 8, 4);
    mods_array(x, 3, m);
    config_json(m, 3, &k_peft_f32, &j, &root, &text);
    assert_string_equal(iu_jstr(&j, iu_jget(&j, root, "peft_type")), "LORA");
    assert_true(iu_juint(&j, iu_jget(&j, root, "r"), &r));
    assert_true(r == 4);
    assert_int_equal(j.n[iu_jget(&j, root, "lora_alpha")].type, IU_JNUM);
    assert_true(j.n[iu_jget(&j, root, "lora_alpha")].num == 16.0);
    assert_string_equal(iu_jstr(&j, iu_jget(&j, root, "base_model_name_or_path")), k_peft_f32.base_model);
    assert_string_equal(iu_jstr(&j, iu_jget(&j, root, "task_type")), "CAUSAL_LM");
    /* target_modules: strings; every module targeted, every target used */
    tm = iu_jget(&j, root, "target_modules");
    assert_true(tm >= 0 && j.n[tm].type == IU_JARR && j.n[tm].count > 0);
    for (i = 0; i < 3; i++) {
        int hit = 0;
        for (e = 0; e < j.n[tm].count; e++) {
            const char *t = iu_jstr(&j, iu_jat(&j, tm, e));
            assert_non_null(t);
            hit |= peft_targets(m[i].name, t);
        }
        if (!hit) {
            print_error("module %s matches no target_modules entry\n%s\n", m[i].name, text);
            fail();
        }
    }
    for (e = 0; e < j.n[tm].count; e++) {
        int used = 0;
        for (i = 0; i < 3; i++) used |= peft_targets(m[i].name, iu_jstr(&j, iu_jat(&j, tm, e)));
        assert_true(used);
    }
    iu_json_free(&j);
    free(text);
    for (i = 0; i < 3; i++) mod_free(&x[i]);
}

static void test_peft_config_null_base_model_and_no_task_type(void **state) {
    mod x;
    iu_json j;
    char *text;
    int root, bm;
    rite_io_peft o = {NULL, NULL, 8.5, RITE_IO_F16};
    (void)state;
    mod_init(&x, "encoder.layer.0.attention.self.query", 8, 8, 2);
    config_json(&x.m, 1, &o, &j, &root, &text);
    bm = iu_jget(&j, root, "base_model_name_or_path");
    assert_true(bm >= 0 && j.n[bm].type == IU_JNULL);
    assert_int_equal(iu_jget(&j, root, "task_type"), -1);
    assert_true(j.n[iu_jget(&j, root, "lora_alpha")].num == 8.5);
    assert_string_equal(iu_jstr(&j, iu_jget(&j, root, "peft_type")), "LORA");
    iu_json_free(&j);
    free(text);
    mod_free(&x);
}

/* A backslash or a control character in a string is escaped (or refused
   with RITE_IO_ERR_ARGUMENT): the JSON written is never broken. */
static void test_peft_strings_are_escaped_or_refused(void **state) {
    static const char *const odd[] = {"C:\\models\\llama", "a\tb", "line\nbreak", "bell\a", "\x7f", "caf\xc3\xa9"};
    mod x;
    size_t i;
    (void)state;
    mod_init(&x, "model.layers.0.q", 4, 4, 1);
    mod_fill_byte(&x, 0);
    for (i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        char buf[8192], name[64];
        size_t written = 0, n = 0;
        rite_io_peft o = {odd[i], "SEQ_CLS", 4.0, RITE_IO_F32};
        rite_io_module m = x.m;
        rite_io_status st = rite_io_peft_config_write(&m, 1, &o, buf, sizeof buf, &written);
        if (st == RITE_IO_OK) {
            iu_json j;
            int root = iu_json_parse(&j, buf, strlen(buf));
            assert_true(root >= 0);
            assert_string_equal(iu_jstr(&j, iu_jget(&j, root, "base_model_name_or_path")), odd[i]);
            iu_json_free(&j);
        } else {
            check_status(st, RITE_IO_ERR_ARGUMENT, "an odd base model name", NULL);
        }
        /* the same in a module name: in the safetensors header and the config */
        snprintf(name, sizeof name, "model.%s.q", odd[i]);
        m.name = name;
        o.base_model = "x";
        st = rite_io_peft_safetensors_size(&m, 1, &o, &n);
        if (st == RITE_IO_OK) {
            unsigned char *f = peft_file(&m, 1, &o, &n);
            check_safetensors_bytes(f, n, &m, 1, RITE_IO_F32);
            free(f);
            check_status(rite_io_peft_config_write(&m, 1, &o, buf, sizeof buf, &written), RITE_IO_OK,
                         "config of an odd module name", NULL);
            {
                iu_json j;
                assert_true(iu_json_parse(&j, buf, strlen(buf)) >= 0);
                iu_json_free(&j);
            }
        } else {
            check_status(st, RITE_IO_ERR_ARGUMENT, "an odd module name", NULL);
        }
    }
    mod_free(&x);
}

static void test_peft_config_buffer_too_small(void **state) {
    mod x;
    char buf[4096], small[16];
    size_t written = 0, need;
    (void)state;
    mod_init(&x, "model.layers.0.q", 4, 4, 1);
    check_status(rite_io_peft_config_write(&x.m, 1, &k_peft_f32, buf, sizeof buf, &written), RITE_IO_OK, "config",
                 NULL);
    need = written;
    assert_true(need > sizeof small);
    check_status(rite_io_peft_config_write(&x.m, 1, &k_peft_f32, small, sizeof small, &written),
                 RITE_IO_ERR_BUFFER_SIZE, "16 bytes", NULL);
    check_status(rite_io_peft_config_write(&x.m, 1, &k_peft_f32, buf, need - 1, &written), RITE_IO_ERR_BUFFER_SIZE,
                 "one byte short (the terminating 0)", NULL);
    check_status(rite_io_peft_config_write(&x.m, 1, &k_peft_f32, buf, need, &written), RITE_IO_OK, "exact size",
                 NULL);
    assert_true(written == need);
    mod_free(&x);
}

/* ================================================================ PEFT: arguments */

static void test_peft_writer_rejects_bad_arguments(void **state) {
    mod x[2];
    rite_io_module m[2], bad;
    rite_io_peft o = k_peft_f32;
    size_t n;
    unsigned char buf[4096];
    char long_name[400];
    size_t written;
    (void)state;
    zero_pair(x, m, "model.layers.0.q", "model.layers.0.v");
    expect_null_arguments(FMT_PEFT, m, &o);
    check_status(rite_io_peft_config_write(m, 1, &o, NULL, 0, NULL), RITE_IO_ERR_NULL_ARGUMENT,
                 "config dst and written NULL", NULL);
    check_status(rite_io_peft_safetensors_size(m, -1, &o, &n), RITE_IO_ERR_ARGUMENT, "n < 0", NULL);
    bad = m[0];
    bad.A = NULL;
    check_status(rite_io_peft_safetensors_size(&bad, 1, &o, &n), RITE_IO_ERR_NULL_ARGUMENT, "A NULL", NULL);
    bad = m[0];
    bad.name = NULL;
    check_status(rite_io_peft_safetensors_size(&bad, 1, &o, &n), RITE_IO_ERR_NULL_ARGUMENT, "name NULL", NULL);
    bad = m[0];
    bad.r = 0;
    check_status(rite_io_peft_safetensors_size(&bad, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "r = 0", NULL);
    bad = m[0];
    bad.in_features = -3;
    check_status(rite_io_peft_safetensors_size(&bad, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "in < 0", NULL);
    bad = m[0];
    bad.out_features = 0;
    check_status(rite_io_peft_safetensors_size(&bad, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "out = 0", NULL);
    bad = m[0];
    bad.name = "model.\"q\"";
    check_status(rite_io_peft_safetensors_size(&bad, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "a quote in the name", NULL);
    check_status(rite_io_peft_config_write(&bad, 1, &o, (char *)buf, sizeof buf, &written), RITE_IO_ERR_ARGUMENT,
                 "a quote in the name (config)", NULL);
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    bad = m[0];
    bad.name = long_name;
    {
        /* a name past the header's limit, if any: either written whole or refused */
        rite_io_status st = rite_io_peft_safetensors_size(&bad, 1, &o, &n);
        assert_true(st == RITE_IO_OK || st == RITE_IO_ERR_ARGUMENT);
    }
    o.dtype = (rite_io_dtype)3;
    check_status(rite_io_peft_safetensors_size(m, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "dtype 3", NULL);
    o = k_peft_f32;
    o.lora_alpha = NAN;
    check_status(rite_io_peft_config_write(m, 1, &o, (char *)buf, sizeof buf, &written), RITE_IO_ERR_ARGUMENT,
                 "alpha NaN (config)", NULL);
    o.lora_alpha = INFINITY;
    check_status(rite_io_peft_config_write(m, 1, &o, (char *)buf, sizeof buf, &written), RITE_IO_ERR_ARGUMENT,
                 "alpha Inf (config)", NULL);
    o = k_peft_f32;
    o.task_type = "CAUSAL\"LM";
    {
        /* a quote in task_type: escaped, or refused */
        rite_io_status st = rite_io_peft_config_write(m, 1, &o, (char *)buf, sizeof buf, &written);
        if (st == RITE_IO_OK) {
            iu_json j;
            int root = iu_json_parse(&j, (const char *)buf, strlen((const char *)buf));
            assert_true(root >= 0);
            assert_string_equal(iu_jstr(&j, iu_jget(&j, root, "task_type")), o.task_type);
            iu_json_free(&j);
        } else {
            check_status(st, RITE_IO_ERR_ARGUMENT, "a quote in task_type", NULL);
        }
    }
    o = k_peft_f32;
    /* two modules of one name would make a file with a duplicate key */
    m[1].name = m[0].name;
    expect_one_name_refused(FMT_PEFT, m, &o);
    mod_free(&x[0]);
    mod_free(&x[1]);
}

static void test_peft_reader_rejects_bad_arguments(void **state) {
    mod x;
    rite_io_module m, bad;
    size_t n;
    unsigned char *f;
    char detail[128];
    rng g = {21};
    (void)state;
    mod_init(&x, "model.layers.0.q", 4, 3, 2);
    mod_fill_random(&x, &g);
    m = x.m;
    f = peft_file(&m, 1, &k_peft_f32, &n);
    check_status(rite_io_peft_safetensors_read(NULL, n, &m, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT,
                 "src NULL", detail);
    check_status(rite_io_peft_safetensors_read(f, n, NULL, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT,
                 "mods NULL", detail);
    bad = m;
    bad.B = NULL;
    check_status(rite_io_peft_safetensors_read(f, n, &bad, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT,
                 "B NULL", detail);
    bad = m;
    bad.name = NULL;
    check_status(rite_io_peft_safetensors_read(f, n, &bad, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT,
                 "name NULL", detail);
    bad = m;
    bad.r = 0;
    check_status(rite_io_peft_safetensors_read(f, n, &bad, 1, detail, sizeof detail), RITE_IO_ERR_ARGUMENT, "r = 0",
                 detail);
    check_status(rite_io_peft_safetensors_read(f, n, &m, -1, detail, sizeof detail), RITE_IO_ERR_ARGUMENT, "n < 0",
                 detail);
    free(f);
    mod_free(&x);
}

/* ================================================================ PEFT: reading */

static void test_peft_reads_modules_in_any_order_and_subsets(void **state) {
    mod x[4], y[4];
    rite_io_module m[4], back[4];
    rng g = {31};
    size_t n;
    unsigned char *f;
    int i;
    static const int order[4] = {3, 1, 0, 2};
    (void)state;
    mod_init(&x[0], "model.layers.0.self_attn.q_proj", 12, 12, 2);
    mod_init(&x[1], "model.layers.0.self_attn.k_proj", 12, 6, 3);
    mod_init(&x[2], "model.layers.0.self_attn.v_proj", 12, 6, 2);
    mod_init(&x[3], "model.layers.1.self_attn.q_proj", 12, 12, 4);
    for (i = 0; i < 4; i++) mod_fill_random(&x[i], &g);
    mods_array(x, 4, m);
    f = peft_file(m, 4, &k_peft_f32, &n);
    for (i = 0; i < 4; i++) {
        const rite_io_module *s = &m[order[i]];
        mod_init(&y[i], s->name, s->in_features, s->out_features, s->r);
        back[i] = y[i].m;
    }
    expect_read(FMT_PEFT, f, n, back, 4, RITE_IO_OK, "the modules in another order");
    for (i = 0; i < 4; i++) expect_same_values(&back[i], &m[order[i]], 1);
    /* two of them: the others are extra tensors, ignored */
    expect_read(FMT_PEFT, f, n, &back[1], 2, RITE_IO_OK, "a subset");
    expect_same_values(&back[1], &m[1], 1);
    expect_same_values(&back[2], &m[0], 1);
    free(f);
    for (i = 0; i < 4; i++) {
        mod_free(&x[i]);
        mod_free(&y[i]);
    }
}

static void test_peft_ignores_extra_tensors(void **state) {
    mod x;
    iu_buf b = {NULL, 0, 0};
    (void)state;
    st_module(&x);
    /* a foreign tensor of another dtype, and another module, before and after ours */
    st_make(&b,
            "{'base_model.model.lm_head.weight':{'dtype':'BF16','shape':[4],'data_offsets':[0,8]},"
            "'base_model.model.layers.1.q.lora_A.weight':{'dtype':'F16','shape':[2,3],'data_offsets':[8,20]},"
            ST_A ":{'dtype':'F32','shape':[2,3],'data_offsets':[20,44]},"
            ST_B ":{'dtype':'F32','shape':[2,2],'data_offsets':[44,60]},"
            "'base_model.model.layers.1.q.lora_B.weight':{'dtype':'F32','shape':[2,2],'data_offsets':[60,76]},"
            ST_META "}",
            76);
    expect_read(FMT_PEFT, b.p, b.n, &x.m, 1, RITE_IO_OK, "extra tensors");
    assert_true(x.m.A[0] == iu_bits_float(0x3C3C3C3Cu));
    iu_free(&b);
    mod_free(&x);
}

static void test_peft_reads_hand_made_files(void **state) {
    mod x;
    iu_buf b = {NULL, 0, 0};
    (void)state;
    st_module(&x);
    /* the reference file of these tests */
    st_expect("{" ST_TA "," ST_TB "}", 40, RITE_IO_OK, "the hand-made file");
    /* tensors in the other order of offsets, and the header padded with
       spaces to 8 bytes as the safetensors library writes it */
    st_make(&b, "{" ST_B ":{'dtype':'F32','shape':[2,2],'data_offsets':[0,16]}," ST_A
                ":{'dtype':'F32','shape':[2,3],'data_offsets':[16,40]}}       ",
            40);
    expect_read(FMT_PEFT, b.p, b.n, &x.m, 1, RITE_IO_OK, "B before A, padded header");
    /* whitespace everywhere JSON allows it, escapes in a key, metadata */
    st_expect("{ \n\t" ST_META " ,\r\n " ST_A " : { 'dtype' : 'F32' , 'shape' : [ 2 , 3 ] , 'data_offsets' : [ 0 , 24 ] } ,"
              "'base_model.model.layers.0.q.lora_\\u0042.weight':{'dtype':'F32','shape':[2,2],'data_offsets':[24,40]} }",
              40, RITE_IO_OK, "whitespace and a \\u escape");
    /* F16 and BF16 */
    st_expect(ST_F16_BF16, 20, RITE_IO_OK, "F16 and BF16");
    iu_free(&b);
    mod_free(&x);
}

static void test_peft_values_read_from_f16_and_bf16_bytes(void **state) {
    mod x;
    iu_buf b = {NULL, 0, 0};
    static const uint16_t a16[6] = {0x3C00, 0xC000, 0x0001, 0x8000, 0x7BFF, 0x03FF};   /* 1, -2, 2^-24, -0, 65504, subnormal */
    static const uint16_t b16[4] = {0x3F80, 0x0001, 0xFF7F, 0x8080};                   /* bf16: 1, 2^-133, -max, -FLT_MIN */
    int i;
    (void)state;
    st_module(&x);
    st_make(&b, ST_F16_BF16, 0);
    for (i = 0; i < 6; i++) iu_put16(&b, a16[i]);
    for (i = 0; i < 4; i++) iu_put16(&b, b16[i]);
    expect_read(FMT_PEFT, b.p, b.n, &x.m, 1, RITE_IO_OK, "F16 and BF16 values");
    for (i = 0; i < 6; i++) assert_int_equal(iu_float_bits(x.m.A[i]), iu_float_bits(iu_f16_to_float(a16[i])));
    for (i = 0; i < 4; i++) assert_int_equal(iu_float_bits(x.m.B[i]), (uint32_t)b16[i] << 16);
    iu_free(&b);
    mod_free(&x);
}

/* ================================================================ PEFT: hostile files */

static void test_peft_file_shorter_than_the_length_field(void **state) {
    static const unsigned char bytes[8] = {24, 0, 0, 0, 0, 0, 0, 0};
    mod x;
    size_t n;
    (void)state;
    st_module(&x);
    for (n = 0; n < 8; n++) expect_read(FMT_PEFT, bytes, n, &x.m, 1, RITE_IO_ERR_TRUNCATED, "under 8 bytes");
    mod_free(&x);
}

/* Expect status `want` from the hand-made file "{" ST_TA "," ST_TB "}" whose
   header length field says `length`. */
static void expect_header_length(uint64_t length, rite_io_status want, const char *what) {
    iu_buf b = {NULL, 0, 0};
    int k;
    st_make(&b, "{" ST_TA "," ST_TB "}", 40);
    for (k = 0; k < 8; k++) b.p[k] = (unsigned char)(length >> (8 * k));
    expect_made(FMT_PEFT, &b, want, what);
}

static void test_peft_header_length_past_the_file(void **state) {
    /* the rest of the file (the header and 40 bytes): one more, and far more */
    const uint64_t rest = sizeof("{" ST_TA "," ST_TB "}") - 1 + 40;
    const uint64_t lengths[] = {rest + 1,   rest + 1000,    1ull << 32,     100000000ull, 1ull << 62,
                                1ull << 63, UINT64_MAX - 7, UINT64_MAX - 8, UINT64_MAX};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof lengths / sizeof lengths[0]; i++)
        expect_header_length(lengths[i], RITE_IO_ERR_HEADER_SIZE, "header length past the file");
}

static void test_peft_header_length_zero_or_short(void **state) {
    (void)state;
    /* length 0: an empty header, not JSON */
    expect_header_length(0, RITE_IO_ERR_JSON, "header length 0");
    /* length 10: the JSON is cut */
    expect_header_length(10, RITE_IO_ERR_JSON, "header length 10");
}

static void test_peft_malformed_json(void **state) {
    static const char *const cases[] = {
        "",
        " ",
        "{",
        "}",
        "{" ST_TA "," ST_TB,
        "{" ST_TA "," ST_TB ",}",
        "{" ST_TA "," ST_TB "}}",
        "{" ST_TA "," ST_TB "} x",
        "{" ST_TA ";" ST_TB "}",
        "{" ST_TA "," ST_TB ",'x'}",
        "{" ST_TA "," ST_TB ",'x':}",
        "{" ST_TA "," ST_TB ",'x':tru}",
        "{" ST_TA "," ST_TB ",'x':nul}",
        "{" ST_TA "," ST_TB ",'x':01}",
        "{" ST_TA "," ST_TB ",'x':1.}",
        "{" ST_TA "," ST_TB ",'x':.5}",
        "{" ST_TA "," ST_TB ",'x':1e}",
        "{" ST_TA "," ST_TB ",'x':-}",
        "{" ST_TA "," ST_TB ",'x':+1}",
        "{" ST_TA "," ST_TB ",'x':NaN}",
        "{" ST_TA "," ST_TB ",'x':'\\q'}",
        "{" ST_TA "," ST_TB ",'x':'\\u12G4'}",
        "{" ST_TA "," ST_TB ",'x':'abc}",
        "{" ST_TA "," ST_TB ",'x':'a\tb'}",
        "{" ST_TA "," ST_TB ",'x\n':1}",
        "{" ST_TA "," ST_TB ",x:1}",
        "{" ST_TA "," ST_TB ",'x':[1,2}",
        "{" ST_TA "," ST_TB ",'x':[1,,2]}",
        "{" ST_TA "," ST_TB ",'x':{'a' 1}}",
        "{" ST_A ":{'dtype':'F32','shape':[2,3],'data_offsets':[0,24]" "," ST_TB "}",
        "{" ST_A ":{'dtype':'F32','shape':[2 3],'data_offsets':[0,24]}," ST_TB "}",
        "{" ST_A ":{'dtype':'F32' 'shape':[2,3],'data_offsets':[0,24]}," ST_TB "}",
        "{" ST_A ":{'dtype':F32,'shape':[2,3],'data_offsets':[0,24]}," ST_TB "}",
    };
    size_t i;
    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "malformed JSON case %zu", i);
        st_expect(cases[i], 40, RITE_IO_ERR_JSON, what);
    }
}

/* A valid header whose lora_A entry has an unknown key (readers skip those)
   holding `depth` nested arrays (or objects). */
static void st_deep(iu_buf *hdr, size_t depth, int objects) {
    size_t i;
    hdr->n = 0;
    iu_puts(hdr, "{" ST_A ":{'x':");
    for (i = 0; i < depth; i++) iu_puts(hdr, objects ? "{'a':" : "[");
    iu_puts(hdr, "1");
    for (i = 0; i < depth; i++) iu_puts(hdr, objects ? "}" : "]");
    iu_puts(hdr, ",'dtype':'F32','shape':[2,3],'data_offsets':[0,24]}," ST_TB "}");
    iu_put8(hdr, 0);
}

static void test_peft_json_nested_too_deeply(void **state) {
    iu_buf h = {NULL, 0, 0};
    static const size_t depths[] = {1000, 100000};
    size_t i;
    (void)state;
    /* a little nesting is JSON like any other */
    st_deep(&h, 4, 0);
    st_expect((const char *)h.p, 40, RITE_IO_OK, "arrays 4 deep in an unknown key");
    st_deep(&h, 4, 1);
    st_expect((const char *)h.p, 40, RITE_IO_OK, "objects 4 deep in an unknown key");
    for (i = 0; i < 2; i++) {
        st_deep(&h, depths[i], 0);
        st_expect((const char *)h.p, 40, RITE_IO_ERR_JSON_DEPTH, "nested arrays");
        st_deep(&h, depths[i], 1);
        st_expect((const char *)h.p, 40, RITE_IO_ERR_JSON_DEPTH, "nested objects");
    }
    /* deep and unterminated: an error either way, and no crash */
    {
        iu_buf b = {NULL, 0, 0};
        rite_io_status st;
        h.n = 0;
        iu_puts(&h, "{'deep':");
        for (i = 0; i < 200000; i++) iu_put8(&h, '[');
        iu_put8(&h, 0);
        st_make(&b, (const char *)h.p, 40);
        st = read_made(FMT_PEFT, &b, NULL, 0);
        assert_true(st == RITE_IO_ERR_JSON_DEPTH || st == RITE_IO_ERR_JSON);
    }
    iu_free(&h);
}

static void test_peft_unknown_dtype(void **state) {
    static const char *const dtypes[] = {"X99", "I32", "I64", "U8", "BOOL", "F8_E4M3", "Q4_0", "f32", "F32 ", "",
                                         "F16\\u0000"};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++) {
        char dtype[32];
        st_case c = {dtypes[i], .a.dtype = dtype};
        snprintf(dtype, sizeof dtype, "'%s'", dtypes[i]);
        st_expect_case(&c, RITE_IO_ERR_DTYPE);
    }
}

static const st_case test_peft_offsets_overlap[] = {
    {"B inside A", .b.offsets = "[16,32]"},
    {"B at A's start", .b.offsets = "[0,16]"},
    {"two tensors on the same bytes", .b.offsets = "[0,16]",
     .extra = "'base_model.model.x.lora_A.weight':{'dtype':'F32','shape':[4],'data_offsets':[24,40]}"},
};

static const st_case test_peft_offsets_go_backwards[] = {
    {"A from 24 to 0", .a.offsets = "[24,0]"},
    {"B from 40 to 24", .b.offsets = "[40,24]"},
};

static const st_case test_peft_offsets_past_the_end[] = {
    {"B past the data", .b.offsets = "[40,56]"},
    {"the data 4 bytes short", .header = "{" ST_TA "," ST_TB "}", .data = 36},
    {"offsets near 2^64", .b.offsets = "[18446744073709551600,18446744073709551615]"},
    {"an offset that wraps", .b.offsets = "[18446744073709551608,8]"},
};

static const st_case test_peft_offsets_not_the_tensor_size[] = {
    {"A 20 bytes for 24", .a.offsets = "[0,20]"},
    {"F16 A 24 bytes for 12", .a.dtype = "'F16'"},
};

static const st_case test_peft_shape_product_overflows[] = {
    /* the caller's module's tensor, and an extra one */
    {"2^32 x 2^32 elements", .a.shape = "[4294967296,4294967296]"},
    {"2^63 elements", .a.shape = "[4611686018427387904,2]"},
    {"2^62 elements of 4 bytes", .a.shape = "[2305843009213693952,2]"},
    {"a product past 2^64 in the third factor", .a.shape = "[3,2,3074457345618258603]"},
    {"an extra tensor of 2^64 elements",
     .extra = "'base_model.model.big.lora_A.weight':"
              "{'dtype':'BF16','shape':[65536,65536,65536,65536],'data_offsets':[40,40]}"},
    {"a dimension of 2^64", .a.shape = "[18446744073709551616,1]"},
};

static const st_case test_peft_missing_keys[] = {
    {"no dtype", .a.dtype = ST_LEFT_OUT},
    {"no shape", .a.shape = ST_LEFT_OUT},
    {"no data_offsets", .a.offsets = ST_LEFT_OUT},
    {"no lora_B", .header = "{" ST_TA "}", .data = 24},
    {"no lora_A", .header = "{" ST_TB "}", .data = 40},
    {"no tensors", .header = "{}", .data = 0},
    {"only metadata", .header = "{" ST_META "}", .data = 0},
    {"another module",
     .header = "{" ST_ENTRY_A("'base_model.model.layers.0.k.lora_A.weight'") ","
               ST_ENTRY_B("'base_model.model.layers.0.k.lora_B.weight'") "}",
     .data = 40},
    {"without the base_model.model. prefix",
     .header = "{" ST_ENTRY_A("'model.layers.0.q.lora_A.weight'") "," ST_ENTRY_B("'model.layers.0.q.lora_B.weight'")
               "}",
     .data = 40},
};

static const st_case test_peft_duplicate_keys[] = {
    {"lora_A twice", .header = "{" ST_TA "," ST_TB "," ST_A ":{'dtype':'F32','shape':[2,3],'data_offsets':[40,64]}}",
     .data = 64},
    {"lora_A twice, once escaped",
     .header = "{" ST_TA ",'base_model.model.layers.0.q.lora_\\u0041.weight':"
               "{'dtype':'F32','shape':[2,3],'data_offsets':[40,64]}," ST_TB "}",
     .data = 64},
    {"dtype twice", .header = "{" ST_A ":{'dtype':'F32','dtype':'F16','shape':[2,3],'data_offsets':[0,24]}," ST_TB "}",
     .data = 40},
    {"shape twice", .header = "{" ST_A ":{'dtype':'F32','shape':[2,3],'shape':[2,3],'data_offsets':[0,24]}," ST_TB "}",
     .data = 40},
    {"data_offsets twice",
     .header = "{" ST_A ":{'dtype':'F32','shape':[2,3],'data_offsets':[0,24],'data_offsets':[0,24]}," ST_TB "}",
     .data = 40},
    {"__metadata__ twice", .header = "{" ST_META "," ST_TA "," ST_TB "," ST_META "}", .data = 40},
    {"a metadata key twice", .header = "{'__metadata__':{'format':'pt','format':'np'}," ST_TA "," ST_TB "}",
     .data = 40},
};

static void test_peft_shape_mismatch(void **state) {
    static const char *const shapes[][2] = {
        {"[3,2]", "[2,2]"},   /* A transposed */
        {"[2,2]", "[2,2]"},   /* A too small (and its bytes) */
        {"[6]", "[2,2]"},     /* A flat */
        {"[1,2,3]", "[2,2]"}, /* A with a third dimension */
        {"[2,3]", "[4]"},     /* B flat */
        {"[2,3]", "[1,4]"},   /* B of the same size */
        {"[2,3]", "[2,2,1]"},
        {"[0,3]", "[2,2]"},
        {"[]", "[2,2]"},
    };
    char hdr[512];
    size_t i;
    (void)state;
    for (i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        /* offsets sized to each shape, so that only the shape is wrong */
        size_t na = 4, nb = 4, k;
        const char *p;
        for (k = 0; k < 2; k++) {
            size_t count = 1, dim = 0;
            int any = 0;
            for (p = shapes[i][k]; *p; p++) {
                if (*p >= '0' && *p <= '9') {
                    dim = dim * 10 + (size_t)(*p - '0');
                    any = 1;
                } else if (*p == ',' || *p == ']') {
                    if (any) count *= dim;
                    dim = 0;
                    any = 0;
                }
            }
            if (k) nb *= count;
            else na *= count;
        }
        snprintf(hdr, sizeof hdr,
                 "{" ST_A ":{'dtype':'F32','shape':%s,'data_offsets':[0,%zu]}," ST_B
                 ":{'dtype':'F32','shape':%s,'data_offsets':[%zu,%zu]}}",
                 shapes[i][0], na, shapes[i][1], na, na + nb);
        st_expect(hdr, na + nb, RITE_IO_ERR_SHAPE_MISMATCH, hdr);
    }
}

static void test_peft_shape_mismatch_with_the_caller(void **state) {
    mod x, y;
    rite_io_module m;
    rng g = {41};
    size_t n;
    unsigned char *f;
    (void)state;
    mod_init(&x, "model.layers.0.q", 6, 5, 3);
    mod_fill_random(&x, &g);
    m = x.m;
    f = peft_file(&m, 1, &k_peft_f32, &n);
    mod_init(&y, "model.layers.0.q", 6, 5, 2);
    expect_read(FMT_PEFT, f, n, &y.m, 1, RITE_IO_ERR_SHAPE_MISMATCH, "another r");
    mod_free(&y);
    mod_init(&y, "model.layers.0.q", 5, 6, 3);
    expect_read(FMT_PEFT, f, n, &y.m, 1, RITE_IO_ERR_SHAPE_MISMATCH, "in and out swapped");
    mod_free(&y);
    mod_init(&y, "model.layers.0.q", 6, 4, 3);
    expect_read(FMT_PEFT, f, n, &y.m, 1, RITE_IO_ERR_SHAPE_MISMATCH, "another out");
    mod_free(&y);
    free(f);
    mod_free(&x);
}

/* A file of F16 A and BF16 B whose 16-bit value `back` bytes before the end is v: not finite. */
static void expect_bad_16bit(iu_buf *b, mod *x, size_t back, uint16_t v, const char *what) {
    st_make(b, ST_F16_BF16, 20);
    b->p[b->n - back] = (unsigned char)v, b->p[b->n - back + 1] = (unsigned char)(v >> 8);
    expect_read(FMT_PEFT, b->p, b->n, &x->m, 1, RITE_IO_ERR_NOT_FINITE, what);
}

static void test_peft_nan_or_inf_in_a_tensor(void **state) {
    iu_buf b = {NULL, 0, 0};
    mod x;
    static const uint32_t bad32[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0x7F800000u, 0xFF800000u};
    static const uint16_t bad16[] = {0x7C00, 0xFC00, 0x7E00, 0x7C01};
    static const uint16_t badbf[] = {0x7F80, 0xFF80, 0x7FC0, 0x7F81};
    size_t i;
    (void)state;
    st_module(&x);
    for (i = 0; i < sizeof bad32 / sizeof bad32[0]; i++) {
        unsigned char *p;
        st_make(&b, "{" ST_TA "," ST_TB "}", 40);
        p = b.p + b.n - 4; /* B's last value */
        p[0] = (unsigned char)bad32[i], p[1] = (unsigned char)(bad32[i] >> 8);
        p[2] = (unsigned char)(bad32[i] >> 16), p[3] = (unsigned char)(bad32[i] >> 24);
        expect_read(FMT_PEFT, b.p, b.n, &x.m, 1, RITE_IO_ERR_NOT_FINITE, "F32 NaN or Inf");
    }
    for (i = 0; i < 4; i++) {
        expect_bad_16bit(&b, &x, 20 - 2, bad16[i], "F16 NaN or Inf");
        expect_bad_16bit(&b, &x, 2, badbf[i], "BF16 NaN or Inf");
    }
    iu_free(&b);
    mod_free(&x);
}

/* A header that is JSON but not what safetensors puts there: the reader
   says RITE_IO_ERR_JSON for values of the wrong kind. */
static const st_case test_peft_header_values_of_the_wrong_kind[] = {
    {"an array", .header = "[1,2]", .data = 40},
    {"a string", .header = "\"x\"", .data = 40},
    {"a tensor that is an array", .header = "{" ST_A ":[1,2]," ST_TB "}", .data = 40},
    {"a dtype that is a number", .a.dtype = "7"},
    {"a shape that is a string", .a.shape = "'2,3'"},
    {"a shape that is not an integer", .a.shape = "[2,3.5]"},
    {"a negative dimension", .a.shape = "[2,-3]"},
    {"one offset", .a.offsets = "[0]"},
    {"three offsets", .a.offsets = "[0,24,40]"},
    {"a negative offset", .a.offsets = "[-8,16]"},
    {"an offset with an exponent", .a.offsets = "[0,2.4e1]"},
    {"a metadata value not a string", .header = "{'__metadata__':{'format':1}," ST_TA "," ST_TB "}", .data = 40},
    {"__metadata__ not an object", .header = "{'__metadata__':[]," ST_TA "," ST_TB "}", .data = 40},
};

/* Every proper prefix of a valid file is refused (no length reads as OK). */
static void truncate_everywhere(int fmt, const unsigned char *f, size_t n, rite_io_module *m, int k) {
    size_t len;
    for (len = 0; len < n; len++) {
        char detail[256];
        rite_io_status st = read_guarded(fmt, f, len, m, k, detail, sizeof detail);
        if (st == RITE_IO_OK) {
            print_error("%s cut to %zu of %zu bytes was read\n", fmt == FMT_GGUF ? "GGUF" : "safetensors", len, n);
            fail();
        }
    }
    check_status(read_guarded(fmt, f, n, m, k, NULL, 0), RITE_IO_OK, "the whole file", NULL);
}

/* truncate_everywhere on the file of two random modules, in each dtype from F32 to last */
static void truncate_two_modules(int fmt, const mod_spec spec[2], uint64_t seed, int last) {
    mod x[2];
    rite_io_module m[2];
    size_t n;
    unsigned char *f;
    int dt;
    mods_random(x, spec, 2, seed);
    for (dt = RITE_IO_F32; dt <= last; dt++) {
        fmt_opts opts;
        mods_array(x, 2, m);
        f = fmt_file(fmt, m, 2, fmt_opt(fmt, (rite_io_dtype)dt, &opts), &n);
        truncate_everywhere(fmt, f, n, m, 2);
        free(f);
    }
    mods_free(x, 2);
}

static void test_peft_truncated_at_every_length(void **state) {
    static const mod_spec spec[2] = {{"model.layers.0.self_attn.q_proj", 5, 4, 2},
                                     {"model.layers.0.self_attn.v_proj", 5, 3, 2}};
    (void)state;
    truncate_two_modules(FMT_PEFT, spec, 51, RITE_IO_BF16);
}

/* the detail text: 0-terminated within any size, and NULL allowed */
static void test_peft_detail_is_bounded(void **state) {
    mod x;
    iu_buf b = {NULL, 0, 0};
    char d[64];
    size_t size;
    (void)state;
    st_module(&x);
    st_make(&b, "{" ST_TA "}", 24);
    for (size = 0; size < 40; size++) {
        memset(d, '#', sizeof d);
        check_status(rite_io_peft_safetensors_read(b.p, b.n, &x.m, 1, size ? d : NULL, size), RITE_IO_ERR_MISSING_KEY,
                     "detail", NULL);
        if (size) assert_non_null(memchr(d, 0, size));
        assert_true(d[size] == '#' || size == 0);
    }
    memset(d, '#', sizeof d);
    check_status(rite_io_peft_safetensors_read(b.p, b.n, &x.m, 1, d, 16), RITE_IO_ERR_MISSING_KEY, "detail", NULL);
    assert_true(strlen(d) > 0 && strlen(d) < 16);
    check_status(rite_io_peft_safetensors_read(b.p, b.n, &x.m, 1, NULL, 100), RITE_IO_ERR_MISSING_KEY, "NULL", NULL);
    iu_free(&b);
    mod_free(&x);
}

/* ================================================================ PEFT: files */

#if IO_POSIX
static char g_dir[4096];

static void make_temp_dir(void) {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/test_io.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(g_dir));
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    unsigned char *p;
    long len;
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    len = ftell(fp);
    assert_true(len >= 0);
    rewind(fp);
    p = (unsigned char *)malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return p;
}

static void test_peft_save_and_load_directory(void **state) {
    mod x[2], y[2];
    rite_io_module m[2], back[2];
    rite_io_peft o = peft_opt(RITE_IO_BF16);
    rng g = {61};
    char path[4200], detail[256], config[8192];
    size_t n, fn, written;
    unsigned char *mem, *file;
    int i;
    (void)state;
    make_temp_dir();
    mod_init(&x[0], "model.layers.0.self_attn.q_proj", 8, 8, 2);
    mod_init(&x[1], "model.layers.0.self_attn.v_proj", 8, 4, 2);
    for (i = 0; i < 2; i++) {
        mod_fill_random(&x[i], &g);
        mod_init(&y[i], x[i].name, 8, x[i].m.out_features, 2);
    }
    mods_array(x, 2, m);
    mods_array(y, 2, back);
    check_status(rite_io_peft_save(g_dir, m, 2, &o, detail, sizeof detail), RITE_IO_OK, "peft_save", detail);
    /* the files are the in-memory ones */
    mem = peft_file(m, 2, &o, &n);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", g_dir);
    file = slurp(path, &fn);
    assert_true(fn == n);
    assert_memory_equal(file, mem, n);
    free(file);
    check_status(rite_io_peft_config_write(m, 2, &o, config, sizeof config, &written), RITE_IO_OK, "config", NULL);
    snprintf(path, sizeof path, "%s/adapter_config.json", g_dir);
    file = slurp(path, &fn);
    assert_true(fn == strlen(config));
    assert_memory_equal(file, config, fn);
    free(file);
    check_status(rite_io_peft_load(g_dir, back, 2, detail, sizeof detail), RITE_IO_OK, "peft_load", detail);
    for (i = 0; i < 2; i++) {
        size_t e;
        for (e = 0; e < mod_na(&m[i]); e++)
            assert_int_equal(iu_float_bits(back[i].A[e]), iu_float_bits(iu_bf16_to_float(iu_bf16_from_float(m[i].A[e]))));
        for (e = 0; e < mod_nb(&m[i]); e++)
            assert_int_equal(iu_float_bits(back[i].B[e]), iu_float_bits(iu_bf16_to_float(iu_bf16_from_float(m[i].B[e]))));
    }
    free(mem);
    /* errors: a directory that does not exist, a file that is not there */
    snprintf(path, sizeof path, "%s/no/such/dir", g_dir);
    check_status(rite_io_peft_save(path, m, 2, &o, detail, sizeof detail), RITE_IO_ERR_IO, "save to nowhere", detail);
    check_status(rite_io_peft_load(path, back, 2, detail, sizeof detail), RITE_IO_ERR_IO, "load from nowhere",
                 detail);
    check_status(rite_io_peft_save(NULL, m, 2, &o, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT, "dir NULL",
                 detail);
    /* a damaged file on disk is refused as in memory, and changes nothing */
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", g_dir);
    {
        FILE *fp = fopen(path, "r+b");
        float a0 = back[0].A[0];
        assert_non_null(fp);
        fputc(0xFF, fp);
        fputc(0xFF, fp);
        fclose(fp);
        check_status(rite_io_peft_load(g_dir, back, 2, detail, sizeof detail), RITE_IO_ERR_HEADER_SIZE,
                     "header length damaged on disk", detail);
        assert_int_equal(iu_float_bits(back[0].A[0]), iu_float_bits(a0));
    }
    remove(path);
    snprintf(path, sizeof path, "%s/adapter_config.json", g_dir);
    remove(path);
    rmdir(g_dir);
    for (i = 0; i < 2; i++) {
        mod_free(&x[i]);
        mod_free(&y[i]);
    }
}
#endif

/* ================================================================ GGUF: the bytes written */

/* The key, which must be there with this value type. */
static const iu_gguf_kv *gguf_kv(const iu_gguf *g, const char *key, int type) {
    const iu_gguf_kv *kv = iu_gguf_find_kv(g, key);
    assert_non_null(kv);
    assert_int_equal(kv->type, type);
    return kv;
}

static void check_gguf_bytes(const unsigned char *file, size_t n, const rite_io_module *m, int k,
                             const rite_io_gguf *o) {
    iu_gguf g;
    const iu_gguf_kv *kv;
    char err[160];
    size_t es = o->dtype == RITE_IO_F16 ? 2 : 4;
    int i, side;
    uint64_t t, u;
    if (iu_gguf_parse(&g, file, n, err, sizeof err) != 0) {
        print_error("GGUF: %s\n", err);
        fail();
    }
    assert_memory_equal(file, "GGUF", 4);
    assert_int_equal(g.version, 3);
    assert_true(g.n_tensors == (uint64_t)(2 * k));
    /* the keys llama.cpp's adapter loader reads, with their types */
    assert_string_equal(gguf_kv(&g, "general.type", IU_GGUF_STRING)->str, "adapter");
    assert_string_equal(gguf_kv(&g, "general.architecture", IU_GGUF_STRING)->str, o->architecture);
    assert_string_equal(gguf_kv(&g, "adapter.type", IU_GGUF_STRING)->str, "lora");
    assert_true(gguf_kv(&g, "adapter.lora.alpha", IU_GGUF_F32)->num == (double)(float)o->lora_alpha);
    kv = iu_gguf_find_kv(&g, "general.alignment");
    if (kv) {
        assert_int_equal(kv->type, IU_GGUF_U32);
        assert_true(kv->num == 32.0);
    }
    assert_true(g.alignment == 32);
    /* no key twice */
    for (t = 0; t < g.n_kv; t++)
        for (u = 0; u < t; u++) assert_string_not_equal(g.kv[t].key, g.kv[u].key);
    assert_true(g.data_start % 32 == 0);
    /* tensors: names, shapes, types, offsets, data */
    for (i = 0; i < k; i++) {
        for (side = 0; side < 2; side++) {
            char name[256];
            const iu_gguf_tensor *ti;
            const float *v = side ? m[i].B : m[i].A;
            size_t e, count = side ? mod_nb(&m[i]) : mod_na(&m[i]);
            snprintf(name, sizeof name, "%s.lora_%c", m[i].name, side ? 'b' : 'a');
            ti = iu_gguf_find_tensor(&g, name);
            if (!ti) {
                print_error("GGUF: no tensor %s\n", name);
                fail();
            }
            assert_int_equal(ti->n_dims, 2);
            if (side == 0) {
                assert_true(ti->ne[0] == (uint64_t)m[i].in_features && ti->ne[1] == (uint64_t)m[i].r);
            } else {
                assert_true(ti->ne[0] == (uint64_t)m[i].r && ti->ne[1] == (uint64_t)m[i].out_features);
            }
            assert_int_equal(ti->type, o->dtype == RITE_IO_F16 ? 1 : 0);
            assert_true(ti->offset % 32 == 0);
            assert_true(ti->offset <= n - g.data_start && count * es <= n - g.data_start - ti->offset);
            for (e = 0; e < count; e++) {
                const unsigned char *p = file + g.data_start + ti->offset + e * es;
                int ok = es == 4 ? iu_le32(p) == iu_float_bits(v[e]) : iu_le16(p) == iu_f16_from_float(v[e]);
                if (!ok) {
                    print_error("%s[%zu]: %.9g written wrong\n", name, e, (double)v[e]);
                    fail();
                }
            }
        }
    }
    /* no two tensors share a byte */
    for (t = 0; t < g.n_tensors; t++)
        for (u = 0; u < t; u++) {
            uint64_t a0 = g.t[t].offset, a1 = a0 + g.t[t].ne[0] * g.t[t].ne[1] * es;
            uint64_t b0 = g.t[u].offset, b1 = b0 + g.t[u].ne[0] * g.t[u].ne[1] * es;
            assert_true(a1 <= b0 || b1 <= a0);
        }
}

static void test_gguf_bytes(void **state) {
    mod x[3];
    rite_io_module m[3];
    rng g = {71};
    size_t n, n2;
    unsigned char *f;
    int i, dt;
    (void)state;
    mod_init(&x[0], "blk.0.attn_q.weight", 16, 16, 4);
    mod_init(&x[1], "blk.0.attn_v.weight", 16, 8, 4);
    mod_init(&x[2], "blk.1.ffn_down.weight", 5, 7, 3);
    for (i = 0; i < 3; i++) fill_special(&x[i], k_special_f16, sizeof k_special_f16 / sizeof k_special_f16[0], &g, -20, 15);
    mods_array(x, 3, m);
    for (dt = RITE_IO_F32; dt <= RITE_IO_F16; dt++) {
        rite_io_gguf o = gguf_opt((rite_io_dtype)dt);
        o.architecture = dt ? "gemma2" : "llama";
        o.lora_alpha = dt ? 0.1 : 32.0;
        f = gguf_file(m, 3, &o, &n);
        check_gguf_bytes(f, n, m, 3, &o);
        assert_int_equal(rite_io_gguf_size(m, 3, &o, &n2), RITE_IO_OK);
        assert_true(n2 == n);
        {
            char detail[128];
            unsigned char *small = (unsigned char *)malloc(n - 1);
            assert_non_null(small);
            check_status(rite_io_gguf_write(m, 3, &o, small, n - 1, detail, sizeof detail), RITE_IO_ERR_BUFFER_SIZE,
                         "one byte short", detail);
            free(small);
        }
        free(f);
    }
    for (i = 0; i < 3; i++) mod_free(&x[i]);
}

static void gguf_round_trip(rite_io_dtype dt) {
    mod x[2], y[2];
    rite_io_module m[2], back[2];
    rite_io_gguf o = gguf_opt(dt);
    rng g = {81};
    size_t n, e;
    unsigned char *f;
    int k;
    mod_init(&x[0], "blk.5.attn_output.weight", 64, 48, 8);
    mod_init(&x[1], "blk.5.ffn_gate.weight", 48, 96, 8);
    for (k = 0; k < 2; k++)
        fill_special(&x[k], k_special_f16, sizeof k_special_f16 / sizeof k_special_f16[0], &g, dt ? -27 : -149,
                     dt ? 15 : 127);
    mods_array(x, 2, m);
    f = gguf_file(m, 2, &o, &n);
    check_gguf_bytes(f, n, m, 2, &o);
    /* read back in the other order */
    for (k = 0; k < 2; k++) {
        mod_init(&y[k], x[1 - k].name, x[1 - k].m.in_features, x[1 - k].m.out_features, x[1 - k].m.r);
        back[k] = y[k].m;
    }
    expect_read(FMT_GGUF, f, n, back, 2, RITE_IO_OK, "reading back");
    for (k = 0; k < 2; k++) {
        const rite_io_module *w = &m[1 - k];
        for (e = 0; e < mod_na(w); e++) {
            float want = dt ? iu_f16_to_float(iu_f16_from_float(w->A[e])) : w->A[e];
            assert_int_equal(iu_float_bits(back[k].A[e]), iu_float_bits(want));
        }
        for (e = 0; e < mod_nb(w); e++) {
            float want = dt ? iu_f16_to_float(iu_f16_from_float(w->B[e])) : w->B[e];
            assert_int_equal(iu_float_bits(back[k].B[e]), iu_float_bits(want));
        }
    }
    free(f);
    mods_free(x, 2);
    mods_free(y, 2);
}

static void run_gguf_round_trip(void **state) { gguf_round_trip(((const fmt_dtype *)*state)->dt); }

static void test_gguf_writer_refuses_nan_inf_and_overflow(void **state) {
    int dt;
    (void)state;
    for (dt = RITE_IO_F32; dt <= RITE_IO_F16; dt++) {
        writer_refuses(FMT_GGUF, (rite_io_dtype)dt, NAN, "NaN");
        writer_refuses(FMT_GGUF, (rite_io_dtype)dt, INFINITY, "Inf");
        writer_refuses(FMT_GGUF, (rite_io_dtype)dt, -INFINITY, "-Inf");
    }
    writer_refuses(FMT_GGUF, RITE_IO_F16, 65520.0f, "65520 (rounds to Inf in F16)");
    writer_refuses(FMT_GGUF, RITE_IO_F16, -1e30f, "-1e30 in F16");
}

static void test_gguf_writer_rejects_bad_arguments(void **state) {
    mod x[2];
    rite_io_module m[2], bad;
    rite_io_gguf o = k_gguf_f32;
    size_t n;
    char name[200];
    (void)state;
    zero_pair(x, m, "blk.0.attn_q.weight", "blk.0.attn_k.weight");
    expect_null_arguments(FMT_GGUF, m, &o);
    o.architecture = NULL;
    check_status(rite_io_gguf_size(m, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "architecture NULL", NULL);
    o = k_gguf_f32;
    o.dtype = RITE_IO_BF16;
    check_status(rite_io_gguf_size(m, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "BF16 in GGUF", NULL);
    o.dtype = (rite_io_dtype)7;
    check_status(rite_io_gguf_size(m, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "dtype 7", NULL);
    o = k_gguf_f32;
    o.lora_alpha = NAN;
    check_status(rite_io_gguf_size(m, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "alpha NaN", NULL);
    o.lora_alpha = 1e300;
    check_status(rite_io_gguf_size(m, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "alpha past float", NULL);
    o = k_gguf_f32;
    check_status(rite_io_gguf_size(m, -2, &o, &n), RITE_IO_ERR_ARGUMENT, "n < 0", NULL);
    bad = m[0];
    bad.r = -1;
    check_status(rite_io_gguf_size(&bad, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "r < 0", NULL);
    bad = m[0];
    bad.B = NULL;
    check_status(rite_io_gguf_size(&bad, 1, &o, &n), RITE_IO_ERR_NULL_ARGUMENT, "B NULL", NULL);
    /* llama.cpp's tensor names hold at most 63 bytes: <name>.lora_a must fit */
    memset(name, 'w', sizeof name);
    name[63 - 7] = 0; /* 56 + ".lora_a" = 63 */
    bad = m[0];
    bad.name = name;
    check_status(rite_io_gguf_size(&bad, 1, &o, &n), RITE_IO_OK, "a 63-byte tensor name", NULL);
    name[63 - 7] = 'w';
    name[64 - 7] = 0;
    check_status(rite_io_gguf_size(&bad, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "a 64-byte tensor name", NULL);
    name[sizeof name - 1] = 0;
    check_status(rite_io_gguf_size(&bad, 1, &o, &n), RITE_IO_ERR_ARGUMENT, "a 206-byte tensor name", NULL);
    m[1].name = m[0].name;
    expect_one_name_refused(FMT_GGUF, m, &o);
    mod_free(&x[0]);
    mod_free(&x[1]);
}

/* ================================================================ GGUF: reading */

static void test_gguf_reads_the_hand_made_file(void **state) {
    mod x;
    iu_buf b = {NULL, 0, 0};
    int i;
    (void)state;
    gg_module(&x);
    gg_make(&b, GG_NONE, 0);
    expect_read(FMT_GGUF, b.p, b.n, &x.m, 1, RITE_IO_OK, "the hand-made file");
    for (i = 0; i < 6; i++) assert_true(x.m.A[i] == gg_values_a[i]);
    for (i = 0; i < 4; i++) assert_true(x.m.B[i] == gg_values_b[i]);
    gg_make(&b, GG_F16, 0);
    expect_read(FMT_GGUF, b.p, b.n, &x.m, 1, RITE_IO_OK, "F16");
    for (i = 0; i < 6; i++) assert_true(x.m.A[i] == gg_values_a[i]);
    gg_make(&b, GG_NO_ALIGNMENT, 0);
    expect_read(FMT_GGUF, b.p, b.n, &x.m, 1, RITE_IO_OK, "general.alignment left out (32)");
    gg_make(&b, GG_VERSION, 2);
    expect_read(FMT_GGUF, b.p, b.n, &x.m, 1, RITE_IO_OK, "version 2");
    iu_free(&b);
    mod_free(&x);
}

static void test_gguf_ignores_extra_tensors_and_reads_any_order(void **state) {
    mod x[2];
    rite_io_module m[2];
    iu_buf b = {NULL, 0, 0};
    int i;
    (void)state;
    mod_init(&x[0], "blk.1.attn_v.weight", 3, 2, 2);
    gg_module(&x[1]);
    mods_array(x, 2, m);
    gg_make(&b, GG_EXTRA, 0);
    expect_read(FMT_GGUF, b.p, b.n, m, 2, RITE_IO_OK, "extra tensors, modules in another order");
    for (i = 0; i < 6; i++) assert_true(m[0].A[i] == gg_values_a[i] && m[1].A[i] == gg_values_a[i]);
    for (i = 0; i < 4; i++) assert_true(m[0].B[i] == gg_values_b[i] && m[1].B[i] == gg_values_b[i]);
    iu_free(&b);
    mod_free(&x[0]);
    mod_free(&x[1]);
}

static void test_gguf_shape_mismatch_with_the_caller(void **state) {
    mod y;
    iu_buf b = {NULL, 0, 0};
    (void)state;
    gg_make(&b, GG_NONE, 0);
    mod_init(&y, GG_MOD, 2, 3, 2); /* in and out swapped */
    expect_read(FMT_GGUF, b.p, b.n, &y.m, 1, RITE_IO_ERR_SHAPE_MISMATCH, "in and out swapped");
    mod_free(&y);
    mod_init(&y, GG_MOD, 3, 2, 1);
    expect_read(FMT_GGUF, b.p, b.n, &y.m, 1, RITE_IO_ERR_SHAPE_MISMATCH, "another r");
    mod_free(&y);
    mod_init(&y, GG_MOD, 2, 2, 3); /* lora_a ne [3, 2] read as r 3, in 2: the same numbers, transposed */
    expect_read(FMT_GGUF, b.p, b.n, &y.m, 1, RITE_IO_ERR_SHAPE_MISMATCH, "lora_a transposed");
    mod_free(&y);
    iu_free(&b);
    gg_expect(GG_NE0, 4, RITE_IO_ERR_SHAPE_MISMATCH, "lora_a ne[0] 4 (its data fits)");
    gg_expect(GG_NDIMS, 1, RITE_IO_ERR_SHAPE_MISMATCH, "lora_a with 1 dimension [3]");
}

static void test_gguf_bad_magic(void **state) {
    iu_buf b = {NULL, 0, 0};
    (void)state;
    gg_expect(GG_MAGIC, 0, RITE_IO_ERR_GGUF_MAGIC, "GGUG");
    /* a safetensors file is not GGUF */
    st_make(&b, "{" ST_TA "," ST_TB "}", 40);
    expect_made(FMT_GGUF, &b, RITE_IO_ERR_GGUF_MAGIC, "a safetensors file");
}

static const gg_case test_gguf_unsupported_version[] = {
    {GG_VERSION, 1, "version 1"},
    {GG_VERSION, 0, "version 0"},
    {GG_VERSION, 4, "version 4"},
    {GG_VERSION, 0xFFFFFFFFu, "version 2^32-1"},
    {GG_VERSION_BIG, 0, "big-endian"},
};

static void test_gguf_string_lengths_that_lie(void **state) {
    static const uint64_t lens[] = {100000, 1ull << 32, 1ull << 62, UINT64_MAX};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        gg_expect(GG_KEY_LEN, lens[i], RITE_IO_ERR_GGUF_STRING, "a key's length");
        gg_expect(GG_STR_LEN, lens[i], RITE_IO_ERR_GGUF_STRING, "a string value's length");
        gg_expect(GG_NAME_LEN, lens[i], RITE_IO_ERR_GGUF_STRING, "a tensor name's length");
        gg_expect(GG_ARRAY_STR_LEN, lens[i], RITE_IO_ERR_GGUF_STRING, "a length in an array of strings");
    }
}

static void test_gguf_array_lengths_that_lie(void **state) {
    static const uint64_t counts[] = {100000, 1ull << 32, 1ull << 61, 1ull << 62, UINT64_MAX};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof counts / sizeof counts[0]; i++)
        gg_expect(GG_ARRAY_COUNT, counts[i], RITE_IO_ERR_GGUF_ARRAY, "an array's count");
}

static const gg_case test_gguf_unknown_value_type[] = {
    {GG_KV_TYPE, 13, "value type 13"},
    {GG_KV_TYPE, 0xFFFFFFFFu, "value type 2^32-1"},
    {GG_ARRAY_TYPE, 13, "array element type 13"},
    {GG_ARRAY_TYPE, 0x80000000u, "array element type 2^31"},
};

static void test_gguf_arrays_nested_too_deeply(void **state) {
    (void)state;
    if (gg_status(GG_NESTED, 100000) == RITE_IO_OK) {
        print_error("arrays nested 100000 deep were read\n");
        fail();
    }
}

static const gg_case test_gguf_duplicate_keys[] = {
    {GG_DUP_KV, 0, "general.type twice"},
    {GG_DUP_TENSOR, 0, "lora_a twice"},
};

static void test_gguf_not_an_adapter(void **state) {
    (void)state;
    gg_expect(GG_GENERAL_TYPE, (uint64_t)(uintptr_t) "model", RITE_IO_ERR_NOT_ADAPTER, "general.type model");
    gg_expect(GG_GENERAL_TYPE, (uint64_t)(uintptr_t) "", RITE_IO_ERR_NOT_ADAPTER, "general.type empty");
    gg_expect(GG_GENERAL_TYPE, (uint64_t)(uintptr_t) "adapterX", RITE_IO_ERR_NOT_ADAPTER, "general.type adapterX");
    gg_expect(GG_ADAPTER_TYPE, (uint64_t)(uintptr_t) "control_vector", RITE_IO_ERR_NOT_ADAPTER,
              "adapter.type control_vector");
    gg_expect(GG_GENERAL_TYPE_U32, 0, RITE_IO_ERR_NOT_ADAPTER, "general.type a number");
    /* without general.type or adapter.type a file is not an adapter */
    gg_expect(GG_GENERAL_TYPE, 0, RITE_IO_ERR_NOT_ADAPTER, "no general.type");
    gg_expect(GG_ADAPTER_TYPE, 0, RITE_IO_ERR_NOT_ADAPTER, "no adapter.type");
}

static void test_gguf_missing_keys(void **state) {
    mod x;
    iu_buf b = {NULL, 0, 0};
    (void)state;
    /* the tensors of a module that is not there */
    gg_make(&b, GG_NONE, 0);
    mod_init(&x, "blk.7.attn_q.weight", 3, 2, 2);
    expect_read(FMT_GGUF, b.p, b.n, &x.m, 1, RITE_IO_ERR_MISSING_KEY, "another module");
    mod_free(&x);
    iu_free(&b);
    gg_expect(GG_NO_B, 0, RITE_IO_ERR_MISSING_KEY, "no lora_b");
}

static const gg_case test_gguf_unknown_tensor_type[] = {
    {GG_TENSOR_TYPE, 2, "Q4_0"},
    {GG_TENSOR_TYPE, 8, "Q8_0"},
    {GG_TENSOR_TYPE, 1000, "type 1000"},
    {GG_TENSOR_TYPE, 0xFFFFFFFFu, "type 2^32-1"},
};

static const gg_case test_gguf_shape_product_overflows[] = {
    {GG_NE_BOTH, 1ull << 32, "ne [2^32, 2^32]"},
    {GG_NE_BOTH, UINT64_MAX, "ne [2^64-1, 2^64-1]"},
    {GG_NE0, 1ull << 63, "ne [2^63, 2]"},
    {GG_NE0, 1ull << 62, "ne [2^62, 2] of 4 bytes"},
};

static const gg_case test_gguf_alignment_not_valid[] = {
    {GG_ALIGNMENT, 0, "general.alignment 0"},
    {GG_ALIGNMENT, 3, "general.alignment 3"},
    {GG_ALIGNMENT, 48, "general.alignment 48"},
    {GG_ALIGNMENT, 64, "general.alignment 64, lora_b at 32"},
    {GG_OFFSET_B, 36, "lora_b at 36"},
    {GG_OFFSET_A, 1, "lora_a at 1"},
};

static const gg_case test_gguf_offsets_overlap[] = {
    {GG_OFFSET_B, 0, "lora_b on lora_a"},
    {GG_OFFSET_A, 32, "lora_a on lora_b"},
};

static const gg_case test_gguf_offsets_go_backwards[] = {
    /* lora_a's info first, its data after lora_b's: ggml (gguf_init) wants
       each tensor's data where the ones before it end */
    {GG_SWAPPED, 0, "lora_a at 32 after lora_b at 0"},
};

/* A GGUF data section runs to the end of the file: a tensor past it is a
   truncated file (RITE_IO_ERR_TRUNCATED). */
static const gg_case test_gguf_offsets_past_the_end[] = {
    {GG_OFFSET_B, 64, "lora_b at 64 of 64"},
    {GG_OFFSET_B, 1ull << 40, "lora_b at 2^40"},
    {GG_OFFSET_B, UINT64_MAX - 31, "lora_b at 2^64-32"},
    {GG_SHORT_DATA, 0, "the data section 20 bytes short"},
};

static void test_gguf_absurd_counts(void **state) {
    static const uint64_t counts[] = {1ull << 20, 1ull << 40, 1ull << 62, UINT64_MAX};
    size_t i;
    (void)state;
    for (i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        assert_true(gg_status(GG_N_TENSORS, counts[i]) != RITE_IO_OK);
        assert_true(gg_status(GG_N_KV, counts[i]) != RITE_IO_OK);
    }
}

static const gg_case test_gguf_nan_or_inf_in_a_tensor[] = {
    {GG_POKE_A, 0x7FC00000u, "NaN"},
    {GG_POKE_A, 0xFF800000u, "-Inf"},
    {GG_POKE_A, 0x7F800001u, "a signalling NaN"},
};

static void test_gguf_truncated_at_every_length(void **state) {
    static const mod_spec spec[2] = {{"blk.0.attn_q.weight", 8, 8, 4},
                                     {"blk.0.attn_k.weight", 8, 3, 3}}; /* lora_b: 36 bytes, padded to 64 */
    iu_buf b = {NULL, 0, 0};
    mod y;
    (void)state;
    truncate_two_modules(FMT_GGUF, spec, 91, RITE_IO_F16);
    gg_module(&y);
    gg_make(&b, GG_NONE, 0);
    /* the hand-made file pads lora_b to 32, as llama.cpp wants it: a cut in the padding fails too */
    truncate_everywhere(FMT_GGUF, b.p, b.n, &y.m, 1);
    iu_free(&b);
    mod_free(&y);
}

static void test_gguf_reader_rejects_bad_arguments(void **state) {
    mod x;
    rite_io_module bad;
    iu_buf b = {NULL, 0, 0};
    char detail[128];
    (void)state;
    gg_module(&x);
    gg_make(&b, GG_NONE, 0);
    check_status(rite_io_gguf_read(NULL, b.n, &x.m, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT,
                 "src NULL", detail);
    check_status(rite_io_gguf_read(b.p, b.n, NULL, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT,
                 "mods NULL", detail);
    bad = x.m;
    bad.A = NULL;
    check_status(rite_io_gguf_read(b.p, b.n, &bad, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT, "A NULL",
                 detail);
    bad = x.m;
    bad.in_features = 0;
    check_status(rite_io_gguf_read(b.p, b.n, &bad, 1, detail, sizeof detail), RITE_IO_ERR_ARGUMENT, "in = 0", detail);
    check_status(rite_io_gguf_read(b.p, b.n, &x.m, -1, detail, sizeof detail), RITE_IO_ERR_ARGUMENT, "n < 0", detail);
    iu_free(&b);
    mod_free(&x);
}

#if IO_POSIX
static void test_gguf_save_and_load_file(void **state) {
    mod x, y;
    rite_io_gguf o = gguf_opt(RITE_IO_F16);
    rng g = {101};
    char path[4200], detail[256];
    size_t n, fn, e;
    unsigned char *mem, *file;
    (void)state;
    make_temp_dir();
    mod_init(&x, "blk.3.attn_q.weight", 24, 16, 4);
    mod_fill_random(&x, &g);
    mod_init(&y, x.name, 24, 16, 4);
    snprintf(path, sizeof path, "%s/adapter.gguf", g_dir);
    check_status(rite_io_gguf_save(path, &x.m, 1, &o, detail, sizeof detail), RITE_IO_OK, "gguf_save", detail);
    mem = gguf_file(&x.m, 1, &o, &n);
    file = slurp(path, &fn);
    assert_true(fn == n);
    assert_memory_equal(file, mem, n);
    check_status(rite_io_gguf_load(path, &y.m, 1, detail, sizeof detail), RITE_IO_OK, "gguf_load", detail);
    for (e = 0; e < mod_na(&x.m); e++)
        assert_int_equal(iu_float_bits(y.m.A[e]), iu_float_bits(iu_f16_to_float(iu_f16_from_float(x.m.A[e]))));
    free(file);
    free(mem);
    remove(path);
    check_status(rite_io_gguf_load(path, &y.m, 1, detail, sizeof detail), RITE_IO_ERR_IO, "load a missing file",
                 detail);
    snprintf(path, sizeof path, "%s/no/such/dir/a.gguf", g_dir);
    check_status(rite_io_gguf_save(path, &x.m, 1, &o, detail, sizeof detail), RITE_IO_ERR_IO, "save to nowhere",
                 detail);
    check_status(rite_io_gguf_load(NULL, &y.m, 1, detail, sizeof detail), RITE_IO_ERR_NULL_ARGUMENT, "path NULL",
                 detail);
    rmdir(g_dir);
    mod_free(&x);
    mod_free(&y);
}
#endif

/* ================================================================ both formats */

/* A file of one format given to the other reader is refused. */
static void test_each_reader_refuses_the_other_format(void **state) {
    mod x;
    size_t n;
    unsigned char *f;
    (void)state;
    mods_random(&x, &k_q_4x4, 1, 111);
    f = gguf_file(&x.m, 1, &k_gguf_f32, &n);
    assert_true(read_guarded(FMT_PEFT, f, n, &x.m, 1, NULL, 0) != RITE_IO_OK);
    free(f);
    f = peft_file(&x.m, 1, &k_peft_f32, &n);
    check_status(read_guarded(FMT_GGUF, f, n, &x.m, 1, NULL, 0), RITE_IO_ERR_GGUF_MAGIC, "safetensors as GGUF",
                 NULL);
    free(f);
    mod_free(&x);
}

/* The same adapter in both formats holds the same bytes (lora_a is lora_A). */
static void test_both_formats_hold_the_same_bytes(void **state) {
    mod x;
    size_t n1, n2;
    unsigned char *p, *q;
    iu_st st;
    iu_gguf gg;
    iu_st_tensor ta, tb;
    const iu_gguf_tensor *ga, *gb;
    char err[128];
    rng g = {121};
    int dt;
    (void)state;
    mod_init(&x, "blk.0.attn_q.weight", 10, 6, 3);
    mod_fill_random(&x, &g);
    for (dt = RITE_IO_F32; dt <= RITE_IO_F16; dt++) {
        rite_io_peft po = peft_opt((rite_io_dtype)dt);
        rite_io_gguf go = gguf_opt((rite_io_dtype)dt);
        size_t es = dt ? 2 : 4;
        p = peft_file(&x.m, 1, &po, &n1);
        q = gguf_file(&x.m, 1, &go, &n2);
        assert_int_equal(iu_st_parse(&st, p, n1, err, sizeof err), 0);
        assert_int_equal(iu_gguf_parse(&gg, q, n2, err, sizeof err), 0);
        assert_int_equal(iu_st_tensor_get(&st, "base_model.model.blk.0.attn_q.weight.lora_A.weight", &ta), 0);
        assert_int_equal(iu_st_tensor_get(&st, "base_model.model.blk.0.attn_q.weight.lora_B.weight", &tb), 0);
        ga = iu_gguf_find_tensor(&gg, "blk.0.attn_q.weight.lora_a");
        gb = iu_gguf_find_tensor(&gg, "blk.0.attn_q.weight.lora_b");
        assert_non_null(ga);
        assert_non_null(gb);
        assert_memory_equal(ta.bytes, q + gg.data_start + ga->offset, mod_na(&x.m) * es);
        assert_memory_equal(tb.bytes, q + gg.data_start + gb->offset, mod_nb(&x.m) * es);
        iu_st_free(&st);
        free(p);
        free(q);
    }
    mod_free(&x);
}

/* Zero modules: the writers make an empty adapter or refuse; a reader asked
   for nothing reads a valid file and changes nothing. */
static void test_zero_modules(void **state) {
    mod x;
    int fmt;
    (void)state;
    mods_random(&x, &k_q_4x4, 1, 131);
    for (fmt = FMT_PEFT; fmt <= FMT_GGUF; fmt++) {
        fmt_opts opts;
        size_t n;
        unsigned char *f = fmt_file(fmt, &x.m, 1, fmt_opt(fmt, RITE_IO_F32, &opts), &n);
        check_status(read_fmt(fmt, f, n, &x.m, 0, NULL, 0), RITE_IO_OK,
                     fmt == FMT_GGUF ? "GGUF, no module" : "safetensors, no module", NULL);
        free(f);
    }
    mod_free(&x);
}

int main(void) {
    const struct CMUnitTest status_strings[] = {
        cmocka_unit_test(test_status_strings_are_distinct_and_never_null),
    };
    const struct CMUnitTest peft_writing[] = {
        cmocka_unit_test(test_peft_safetensors_bytes_f32),
        cmocka_unit_test(test_peft_size_is_what_write_needs),
        cmocka_unit_test(test_peft_f32_round_trip_is_exact),
        cmocka_unit_test(test_peft_f16_is_round_to_nearest_even),
        cmocka_unit_test(test_peft_bf16_is_round_to_nearest_even),
        FMT_DTYPE_TEST(test_peft_every_finite_f16_round_trips, run_every_finite_16bit, FMT_PEFT, RITE_IO_F16),
        FMT_DTYPE_TEST(test_peft_every_finite_bf16_round_trips, run_every_finite_16bit, FMT_PEFT, RITE_IO_BF16),
        cmocka_unit_test(test_peft_writer_refuses_nan_inf_and_overflow),
        cmocka_unit_test(test_peft_config_keys),
        cmocka_unit_test(test_peft_config_null_base_model_and_no_task_type),
        cmocka_unit_test(test_peft_strings_are_escaped_or_refused),
        cmocka_unit_test(test_peft_config_buffer_too_small),
        cmocka_unit_test(test_peft_writer_rejects_bad_arguments),
    };
    const struct CMUnitTest peft_reading[] = {
        cmocka_unit_test(test_peft_reader_rejects_bad_arguments),
        cmocka_unit_test(test_peft_reads_modules_in_any_order_and_subsets),
        cmocka_unit_test(test_peft_ignores_extra_tensors),
        cmocka_unit_test(test_peft_reads_hand_made_files),
        cmocka_unit_test(test_peft_values_read_from_f16_and_bf16_bytes),
        cmocka_unit_test(test_peft_shape_mismatch_with_the_caller),
    };
    const struct CMUnitTest peft_hostile[] = {
        cmocka_unit_test(test_peft_file_shorter_than_the_length_field),
        cmocka_unit_test(test_peft_header_length_past_the_file),
        cmocka_unit_test(test_peft_header_length_zero_or_short),
        cmocka_unit_test(test_peft_malformed_json),
        cmocka_unit_test(test_peft_json_nested_too_deeply),
        ST_CASES(test_peft_header_values_of_the_wrong_kind, RITE_IO_ERR_JSON),
        cmocka_unit_test(test_peft_unknown_dtype),
        ST_CASES(test_peft_offsets_overlap, RITE_IO_ERR_OFFSETS),
        ST_CASES(test_peft_offsets_go_backwards, RITE_IO_ERR_OFFSETS),
        ST_CASES(test_peft_offsets_past_the_end, RITE_IO_ERR_OFFSETS),
        ST_CASES(test_peft_offsets_not_the_tensor_size, RITE_IO_ERR_OFFSETS),
        ST_CASES(test_peft_shape_product_overflows, RITE_IO_ERR_SHAPE_OVERFLOW),
        ST_CASES(test_peft_missing_keys, RITE_IO_ERR_MISSING_KEY),
        ST_CASES(test_peft_duplicate_keys, RITE_IO_ERR_DUPLICATE_KEY),
        cmocka_unit_test(test_peft_shape_mismatch),
        cmocka_unit_test(test_peft_nan_or_inf_in_a_tensor),
        cmocka_unit_test(test_peft_truncated_at_every_length),
        cmocka_unit_test(test_peft_detail_is_bounded),
#if IO_POSIX
        cmocka_unit_test(test_peft_save_and_load_directory),
#endif
    };
    const struct CMUnitTest gguf_writing[] = {
        cmocka_unit_test(test_gguf_bytes),
        FMT_DTYPE_TEST(test_gguf_f32_round_trip_is_exact, run_gguf_round_trip, FMT_GGUF, RITE_IO_F32),
        FMT_DTYPE_TEST(test_gguf_f16_is_round_to_nearest_even, run_gguf_round_trip, FMT_GGUF, RITE_IO_F16),
        FMT_DTYPE_TEST(test_gguf_every_finite_f16_round_trips, run_every_finite_16bit, FMT_GGUF, RITE_IO_F16),
        cmocka_unit_test(test_gguf_writer_refuses_nan_inf_and_overflow),
        cmocka_unit_test(test_gguf_writer_rejects_bad_arguments),
    };
    const struct CMUnitTest gguf_reading[] = {
        cmocka_unit_test(test_gguf_reader_rejects_bad_arguments),
        cmocka_unit_test(test_gguf_reads_the_hand_made_file),
        cmocka_unit_test(test_gguf_ignores_extra_tensors_and_reads_any_order),
        cmocka_unit_test(test_gguf_shape_mismatch_with_the_caller),
    };
    const struct CMUnitTest gguf_hostile[] = {
        cmocka_unit_test(test_gguf_bad_magic),
        GG_CASES(test_gguf_unsupported_version, RITE_IO_ERR_GGUF_VERSION),
        cmocka_unit_test(test_gguf_string_lengths_that_lie),
        cmocka_unit_test(test_gguf_array_lengths_that_lie),
        GG_CASES(test_gguf_unknown_value_type, RITE_IO_ERR_GGUF_VALUE_TYPE),
        cmocka_unit_test(test_gguf_arrays_nested_too_deeply),
        GG_CASES(test_gguf_duplicate_keys, RITE_IO_ERR_DUPLICATE_KEY),
        cmocka_unit_test(test_gguf_not_an_adapter),
        cmocka_unit_test(test_gguf_missing_keys),
        GG_CASES(test_gguf_unknown_tensor_type, RITE_IO_ERR_DTYPE),
        GG_CASES(test_gguf_shape_product_overflows, RITE_IO_ERR_SHAPE_OVERFLOW),
        GG_CASES(test_gguf_alignment_not_valid, RITE_IO_ERR_GGUF_ALIGNMENT),
        GG_CASES(test_gguf_offsets_overlap, RITE_IO_ERR_OFFSETS),
        GG_CASES(test_gguf_offsets_go_backwards, RITE_IO_ERR_OFFSETS),
        GG_CASES(test_gguf_offsets_past_the_end, RITE_IO_ERR_TRUNCATED),
        cmocka_unit_test(test_gguf_absurd_counts),
        GG_CASES(test_gguf_nan_or_inf_in_a_tensor, RITE_IO_ERR_NOT_FINITE),
        cmocka_unit_test(test_gguf_truncated_at_every_length),
#if IO_POSIX
        cmocka_unit_test(test_gguf_save_and_load_file),
#endif
    };
    const struct CMUnitTest both_formats[] = {
        cmocka_unit_test(test_each_reader_refuses_the_other_format),
        cmocka_unit_test(test_both_formats_hold_the_same_bytes),
        cmocka_unit_test(test_zero_modules),
    };
    int failed = 0;
    failed += cmocka_run_group_tests_name("status strings", status_strings, NULL, NULL);
    failed += cmocka_run_group_tests_name("PEFT: writing", peft_writing, NULL, NULL);
    failed += cmocka_run_group_tests_name("PEFT: reading", peft_reading, NULL, NULL);
    failed += cmocka_run_group_tests_name("PEFT: hostile files", peft_hostile, NULL, NULL);
    failed += cmocka_run_group_tests_name("GGUF: writing", gguf_writing, NULL, NULL);
    failed += cmocka_run_group_tests_name("GGUF: reading", gguf_reading, NULL, NULL);
    failed += cmocka_run_group_tests_name("GGUF: hostile files", gguf_hostile, NULL, NULL);
    failed += cmocka_run_group_tests_name("both", both_formats, NULL, NULL);
    return failed;
}
