/* fuzz_io.c - a libFuzzer harness for the readers of lora_rite_io.h that
   checks their contract on hostile files.

   Input: one selector byte, then the file. The file goes to both readers,
   rite_io_peft_safetensors_read and rite_io_gguf_read, each asked for the
   modules of one of four sets (selector & 3):
     0  one module: in 8, out 6, r 2
     1  two modules, the second file module listed first: in 8, out 4, r 2
        and the module of set 0
     2  the module of set 0 with r 3 (a file of set 0 read as set 2 is a
        shape mismatch)
     3  a module of in 1, out 1, r 1
   (PEFT names "model.layers.0.self_attn.q_proj", ...; GGUF names
   "blk.0.attn_q.weight", ...), and with a detail buffer of 256 bytes, of
   (selector >> 2) & 15 bytes (0: NULL), checked against overruns.

   After every call it checks, and aborts on a violation:
   - the status is a valid one and rite_io_status_string gives a text;
   - the detail text is 0-terminated within its size and nothing is
     written past it;
   - on an error, the caller's buffers (sentinel-filled, each allocated to
     its exact size) and the module array are byte for byte as before;
   - on success, every value is finite, a second read gives the same bits,
     and the values written back by the same format's writer (F32) and read
     again are the same bits;
   - nothing is read past the input (AddressSanitizer: the input is a heap
     block of its exact size) and no undefined behaviour (UBSan).

   Build with clang -fsanitize=fuzzer,address,undefined (fuzz/CMakeLists.txt).
   With FUZZ_RITE_STANDALONE defined it has its own main that replays files
   and directories, and writes the seed corpus:
       fuzz_io_replay --write-corpus DIR */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LORA_RITE_IO_IMPLEMENTATION
#include "lora_rite_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fz_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "fuzz_io: contract violated at %s:%d: %s\n", file, line, what);
    abort();
}
#define FZ_CHECK(cond) do { if (!(cond)) fz_fail(#cond, __FILE__, __LINE__); } while (0)

/* ------------------------------------------------------------ the module sets */

typedef struct fz_mod {
    const char *peft, *gguf;
    int in, out, r;
} fz_mod;

static const fz_mod fz_q = {"model.layers.0.self_attn.q_proj", "blk.0.attn_q.weight", 8, 6, 2};
static const fz_mod fz_v = {"model.layers.0.self_attn.v_proj", "blk.0.attn_v.weight", 8, 4, 2};
static const fz_mod fz_q3 = {"model.layers.0.self_attn.q_proj", "blk.0.attn_q.weight", 8, 6, 3};
static const fz_mod fz_d = {"model.layers.1.mlp.down_proj", "blk.1.ffn_down.weight", 1, 1, 1};

static int fz_set(int s, const fz_mod **out)
{
    switch (s & 3) {
    case 0: out[0] = &fz_q; return 1;
    case 1: out[0] = &fz_v; out[1] = &fz_q; return 2;
    case 2: out[0] = &fz_q3; return 1;
    default: out[0] = &fz_d; return 1;
    }
}

#define FZ_SENTINEL 0xA5
#define FZ_CANARY 0x5C

/* k modules of a set, with exact-size sentinel-filled buffers */
static void fz_modules(const fz_mod *const *set, int k, int gguf, rite_io_module *m)
{
    int i;
    for (i = 0; i < k; i++) {
        size_t na = (size_t)set[i]->r * (size_t)set[i]->in, nb = (size_t)set[i]->out * (size_t)set[i]->r;
        m[i].name = gguf ? set[i]->gguf : set[i]->peft;
        m[i].in_features = set[i]->in;
        m[i].out_features = set[i]->out;
        m[i].r = set[i]->r;
        m[i].A = (float *)malloc(na * sizeof(float));
        m[i].B = (float *)malloc(nb * sizeof(float));
        FZ_CHECK(m[i].A && m[i].B);
        memset(m[i].A, FZ_SENTINEL, na * sizeof(float));
        memset(m[i].B, FZ_SENTINEL, nb * sizeof(float));
    }
}

static void fz_free(rite_io_module *m, int k)
{
    int i;
    for (i = 0; i < k; i++) {
        free(m[i].A);
        free(m[i].B);
    }
}

static size_t fz_na(const rite_io_module *m) { return (size_t)m->r * (size_t)m->in_features; }
static size_t fz_nb(const rite_io_module *m) { return (size_t)m->out_features * (size_t)m->r; }

static int fz_all_bytes(const float *p, size_t n, int byte)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n * sizeof(float); i++)
        if (b[i] != byte) return 0;
    return 1;
}

static rite_io_status fz_read(int gguf, const void *src, size_t n, rite_io_module *m, int k, char *detail,
                              size_t detail_size)
{
    return gguf ? rite_io_gguf_read(src, n, m, k, detail, detail_size)
                : rite_io_peft_safetensors_read(src, n, m, k, detail, detail_size);
}

/* One reader on the file: the checks of the header comment. */
static void fz_one(int gguf, const uint8_t *src, size_t n, int set, size_t detail_size)
{
    const fz_mod *mods[2];
    rite_io_module m[2], saved[2];
    char *detail = NULL;
    rite_io_status st;
    const char *text;
    int k = fz_set(set, mods), i;
    size_t e;

    fz_modules(mods, k, gguf, m);
    memcpy(saved, m, sizeof saved[0] * (size_t)k);
    if (detail_size) {
        detail = (char *)malloc(detail_size + 16);
        FZ_CHECK(detail != NULL);
        memset(detail, FZ_CANARY, detail_size + 16);
    }
    st = fz_read(gguf, src, n, m, k, detail, detail_size);
    FZ_CHECK(st >= RITE_IO_OK && st < RITE_IO_STATUS_COUNT);
    text = rite_io_status_string(st);
    FZ_CHECK(text != NULL && text[0] != 0);
    FZ_CHECK(memcmp(saved, m, sizeof saved[0] * (size_t)k) == 0);
    if (detail) {
        for (e = 0; e < 16; e++) FZ_CHECK((unsigned char)detail[detail_size + e] == FZ_CANARY);
        FZ_CHECK(memchr(detail, 0, detail_size) != NULL);
    }
    if (st != RITE_IO_OK) {
        for (i = 0; i < k; i++) {
            FZ_CHECK(fz_all_bytes(m[i].A, fz_na(&m[i]), FZ_SENTINEL));
            FZ_CHECK(fz_all_bytes(m[i].B, fz_nb(&m[i]), FZ_SENTINEL));
        }
    } else {
        rite_io_module again[2], back[2];
        unsigned char *file = NULL;
        size_t fn = 0;
        char d[256];
        for (i = 0; i < k; i++) {
            for (e = 0; e < fz_na(&m[i]); e++) FZ_CHECK(isfinite(m[i].A[e]));
            for (e = 0; e < fz_nb(&m[i]); e++) FZ_CHECK(isfinite(m[i].B[e]));
        }
        /* the same file read again: the same bits */
        fz_modules(mods, k, gguf, again);
        FZ_CHECK(fz_read(gguf, src, n, again, k, NULL, 0) == RITE_IO_OK);
        for (i = 0; i < k; i++) {
            FZ_CHECK(memcmp(again[i].A, m[i].A, fz_na(&m[i]) * sizeof(float)) == 0);
            FZ_CHECK(memcmp(again[i].B, m[i].B, fz_nb(&m[i]) * sizeof(float)) == 0);
        }
        /* written back as F32 and read again: the same bits */
        if (gguf) {
            rite_io_gguf o = {"llama", 16.0, RITE_IO_F32};
            FZ_CHECK(rite_io_gguf_size(m, k, &o, &fn) == RITE_IO_OK);
            file = (unsigned char *)malloc(fn);
            FZ_CHECK(file != NULL);
            FZ_CHECK(rite_io_gguf_write(m, k, &o, file, fn, d, sizeof d) == RITE_IO_OK);
        } else {
            rite_io_peft o = {NULL, NULL, 16.0, RITE_IO_F32};
            FZ_CHECK(rite_io_peft_safetensors_size(m, k, &o, &fn) == RITE_IO_OK);
            file = (unsigned char *)malloc(fn);
            FZ_CHECK(file != NULL);
            FZ_CHECK(rite_io_peft_safetensors_write(m, k, &o, file, fn, d, sizeof d) == RITE_IO_OK);
        }
        fz_modules(mods, k, gguf, back);
        FZ_CHECK(fz_read(gguf, file, fn, back, k, d, sizeof d) == RITE_IO_OK);
        for (i = 0; i < k; i++) {
            FZ_CHECK(memcmp(back[i].A, m[i].A, fz_na(&m[i]) * sizeof(float)) == 0);
            FZ_CHECK(memcmp(back[i].B, m[i].B, fz_nb(&m[i]) * sizeof(float)) == 0);
        }
        free(file);
        fz_free(again, k);
        fz_free(back, k);
    }
    free(detail);
    fz_free(m, k);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned sel;
    size_t detail_size;
    if (size < 1) return 0;
    sel = data[0];
    detail_size = (sel >> 2) & 15u;
    if (detail_size == 15) detail_size = 256;
    fz_one(0, data + 1, size - 1, (int)sel, detail_size);
    fz_one(1, data + 1, size - 1, (int)sel, detail_size);
    return 0;
}

#ifdef FUZZ_RITE_STANDALONE
#include "fuzz_replay.h"

/* ------------------------------------------------------------ the seed corpus */

static int fz_save(const char *dir, const char *name, unsigned sel, const void *p, size_t n)
{
    char path[4096];
    FILE *f;
    unsigned char s = (unsigned char)sel;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "fuzz_io: cannot write %s\n", path);
        return 1;
    }
    fwrite(&s, 1, 1, f);
    fwrite(p, 1, n, f);
    return fclose(f) != 0;
}

/* a file of the modules of set `set` (and, with extra, those of set 3 too) */
static int fz_seed(const char *dir, const char *name, unsigned sel, int gguf, rite_io_dtype dt, int extra)
{
    const fz_mod *mods[3];
    rite_io_module m[3];
    unsigned char *file;
    size_t fn = 0, e;
    char d[256];
    int k = fz_set((int)sel, mods), i, rc;
    if (extra) mods[k++] = &fz_d;
    fz_modules(mods, k, gguf, m);
    for (i = 0; i < k; i++) {
        for (e = 0; e < fz_na(&m[i]); e++) m[i].A[e] = (float)(0.01 * (double)(e + 1) * (i % 2 ? -1 : 1));
        for (e = 0; e < fz_nb(&m[i]); e++) m[i].B[e] = (float)(0.5 - 0.125 * (double)e);
    }
    if (gguf) {
        rite_io_gguf o = {"llama", 16.0, dt};
        FZ_CHECK(rite_io_gguf_size(m, k, &o, &fn) == RITE_IO_OK);
        file = (unsigned char *)malloc(fn);
        FZ_CHECK(file && rite_io_gguf_write(m, k, &o, file, fn, d, sizeof d) == RITE_IO_OK);
    } else {
        rite_io_peft o = {"meta-llama/Llama-3.2-1B", "CAUSAL_LM", 16.0, dt};
        FZ_CHECK(rite_io_peft_safetensors_size(m, k, &o, &fn) == RITE_IO_OK);
        file = (unsigned char *)malloc(fn);
        FZ_CHECK(file && rite_io_peft_safetensors_write(m, k, &o, file, fn, d, sizeof d) == RITE_IO_OK);
    }
    rc = fz_save(dir, name, sel, file, fn);
    free(file);
    fz_free(m, k);
    return rc;
}

static void fz_put64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* The seed corpus: valid files of every set and dtype, then hostile ones. */
static int fz_write_corpus(const char *dir)
{
    static const char *const dts[3] = {"f32", "f16", "bf16"};
    char name[128];
    int rc = 0, s, dt;
    for (s = 0; s < 4; s++) {
        unsigned sel = (unsigned)s | (unsigned)((s * 5) % 16) << 2;
        for (dt = 0; dt < 3; dt++) {
            snprintf(name, sizeof name, "peft_set%d_%s", s, dts[dt]);
            rc |= fz_seed(dir, name, sel, 0, (rite_io_dtype)dt, 0);
            if (dt < 2) {
                snprintf(name, sizeof name, "gguf_set%d_%s", s, dts[dt]);
                rc |= fz_seed(dir, name, sel, 1, (rite_io_dtype)dt, 0);
            }
        }
    }
    rc |= fz_seed(dir, "peft_extra_modules", 0x3Cu, 0, RITE_IO_F32, 1);
    rc |= fz_seed(dir, "gguf_extra_modules", 0x3Cu, 1, RITE_IO_F16, 1);
    {
        /* hand-made safetensors: deep JSON, a huge header length, NaN, escapes, overlap */
        static const char *const headers[][2] = {
            {"peft_deep_json", NULL},
            {"peft_escapes", "{\"base_model.model.model.layers.1.mlp.down_proj.lora_\\u0041.weight\":"
                             "{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]},"
                             "\"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight\":"
                             "{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[4,8]},"
                             "\"__metadata__\":{\"k\":\"v\\n\\\"\"}}"},
            {"peft_overlap", "{\"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight\":"
                             "{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]},"
                             "\"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight\":"
                             "{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[2,6]}}"},
            {"peft_overflow", "{\"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight\":"
                              "{\"dtype\":\"BF16\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]},"
                              "\"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight\":"
                              "{\"dtype\":\"F16\",\"shape\":[1,1],\"data_offsets\":[4,6]}}"},
            {"peft_nan", "{\"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight\":"
                         "{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]},"
                         "\"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight\":"
                         "{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[4,8]}}"},
        };
        size_t h;
        for (h = 0; h < sizeof headers / sizeof headers[0]; h++) {
            unsigned char buf[8192];
            size_t hl, n;
            if (headers[h][1]) {
                hl = strlen(headers[h][1]);
                memcpy(buf + 8, headers[h][1], hl);
            } else {
                /* 2000 arrays deep in an unknown key of a tensor entry */
                static const char *const pre = "{\"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight\":{\"x\":";
                static const char *const post = ",\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]},"
                                                "\"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight\":"
                                                "{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[4,8]}}";
                size_t i, a = strlen(pre), c = strlen(post);
                memcpy(buf + 8, pre, a);
                for (i = 0; i < 2000; i++) buf[8 + a + i] = '[';
                for (i = 0; i < 2000; i++) buf[8 + a + 2000 + i] = ']';
                memcpy(buf + 8 + a + 4000, post, c);
                hl = a + 4000 + c;
            }
            fz_put64(buf, hl);
            n = 8 + hl;
            memset(buf + n, 0x3C, 8);
            if (strcmp(headers[h][0], "peft_nan") == 0) fz_put64(buf + n, 0x7FC000003C3C3C3Cull);
            n += 8;
            rc |= fz_save(dir, headers[h][0], 3u | (15u << 2), buf, n);
        }
        {
            /* a header length of 2^63 */
            unsigned char buf[64];
            memset(buf, '{', sizeof buf);
            fz_put64(buf, 1ull << 63);
            rc |= fz_save(dir, "peft_header_huge", 0u, buf, sizeof buf);
        }
    }
    {
        /* hand-made GGUF: a string length that lies, an array count that lies, nested arrays */
        unsigned char buf[512];
        size_t n = 0, i;
        memcpy(buf, "GGUF", 4);
        buf[4] = 3, buf[5] = buf[6] = buf[7] = 0;
        fz_put64(buf + 8, 0);   /* tensors */
        fz_put64(buf + 16, 2);  /* keys */
        n = 24;
        fz_put64(buf + n, 12), n += 8;
        memcpy(buf + n, "general.type", 12), n += 12;
        buf[n] = 8, buf[n + 1] = buf[n + 2] = buf[n + 3] = 0, n += 4;
        fz_put64(buf + n, 7), n += 8;
        memcpy(buf + n, "adapter", 7), n += 7;
        fz_put64(buf + n, 9), n += 8;
        memcpy(buf + n, "x.nested.", 9), n += 9;
        buf[n] = 9, buf[n + 1] = buf[n + 2] = buf[n + 3] = 0, n += 4; /* array */
        for (i = 0; i < 8; i++) {
            buf[n] = 9, buf[n + 1] = buf[n + 2] = buf[n + 3] = 0, n += 4; /* of arrays */
            fz_put64(buf + n, 1), n += 8;
        }
        buf[n] = 4, buf[n + 1] = buf[n + 2] = buf[n + 3] = 0, n += 4; /* of u32 */
        fz_put64(buf + n, 1ull << 62), n += 8;                      /* a count that lies */
        rc |= fz_save(dir, "gguf_nested_array_count", 0u, buf, n);
        fz_put64(buf + 24, 1ull << 40); /* the first key's length lies */
        rc |= fz_save(dir, "gguf_key_length", 1u, buf, n);
    }
    return rc;
}

/* Replays every file named on the command line; a directory stands for the
   files in it. --write-corpus DIR writes the seed corpus into DIR. Returns
   non-zero when a file cannot be read (a contract violation aborts). */
int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return fz_write_corpus(argv[2]);
    return fz_replay("fuzz_io", argc, argv);
}
#endif
