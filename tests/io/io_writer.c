/* io_writer.c - writes adapters with lora_rite_io.h for readers we did not
   write (tests/io/check_safetensors.py: Python's json and numpy;
   tests/io/check_gguf.mjs: the npm package @huggingface/gguf), together with
   the values they must find.

       io_writer OUTDIR

   writes into OUTDIR (which it creates):
     peft_f32/, peft_f16/, peft_bf16/   adapter_model.safetensors and
                                        adapter_config.json, one dtype each
     adapter_f32.gguf, adapter_f16.gguf the same modules for llama.cpp
     reference.txt                      what was written: one "key value" a line
                                        (alpha, base_model, task_type,
                                        architecture), then per module
                                        "module <peft name> <gguf name> <in> <out> <r>"
     values.bin                         the float inputs, little-endian float32:
                                        per module lora_A (r x in), then lora_B
                                        (out x r), row-major

   The values are random over every magnitude F16 holds, plus the special
   values of each dtype (signed zeros, subnormals, the largest finite F16,
   round-to-nearest-even ties of F16 and BF16), so that the readers' own
   conversions (numpy's float16, a bit-level bfloat16, the GGUF check's own)
   are compared with the C writer's on the cases that matter. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LORA_RITE_IO_IMPLEMENTATION
#include "lora_rite_io.h"

enum { NM = 4 };

static const char *const peft_names[NM] = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                           "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"};
static const char *const gguf_names[NM] = {"blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.1.attn_q.weight",
                                           "blk.1.ffn_down.weight"};
static const int dims[NM][3] = {{32, 32, 8}, {32, 16, 8}, {32, 32, 8}, {44, 32, 8}}; /* in, out, r */

/* finite in F32, F16 and BF16 (nothing rounds past 65504 in F16) */
static const uint32_t special_bits[] = {
    0x00000000u, 0x80000000u, 0x3F800000u, 0xBF800000u, 0x477FE000u, /* 65504 */
    0xC77FE000u, 0x477FEFFFu,                                        /* 65519.99: down to 65504 */
    0x33800000u,                                                     /* 2^-24, the smallest F16 subnormal */
    0x33000000u,                                                     /* 2^-25: a tie, to 0 */
    0x33C00000u,                                                     /* 1.5 2^-24: a tie, to 2^-23 */
    0x337FFFFFu, 0x33000001u, 0x387FC000u,                           /* 1023.5 2^-24: a tie, to 2^-14 */
    0x38800000u,                                                     /* 2^-14 */
    0x3F801000u,                                                     /* 1 + 2^-11: F16 tie, to 1 */
    0x3F803000u,                                                     /* 1 + 3 2^-11: to 1 + 2^-9 */
    0x3F808000u,                                                     /* 1 + 2^-8: BF16 tie, to 1 */
    0x3F818000u,                                                     /* 1 + 3 2^-8: to 1 + 2^-6 */
    0x3F808001u, 0x3F807FFFu, 0x00800000u,                           /* FLT_MIN */
    0x00000001u, 0x00008000u,                                        /* BF16 subnormal tie, to 0 */
    0x00018000u,                                                     /* to 2 steps */
    0x007FFFFFu, 0x807FFFFFu, 0x3DCCCCCDu, 0x40490FDBu, 0x44801000u, /* 1024.5 */
    0x45001000u,                                                     /* 2049: F16 tie, to 2048 */
    0xC5003000u                                                      /* -2051: F16 tie, to -2052 */
};

static uint64_t g_state = 20250101u;
static double uniform(void) {
    uint64_t z = (g_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

static const double k_alpha = 16.0;
static const char *const k_base_model = "meta-llama/Llama-3.2-1B", *const k_task_type = "CAUSAL_LM",
                  *const k_arch = "llama";

/* The adapters written: a PEFT directory per dtype, a GGUF file per dtype. */
typedef struct adapter_out {
    int gguf;
    rite_io_dtype dtype;
    const char *name; /* in OUTDIR */
} adapter_out;
static const adapter_out k_outputs[] = {
    {0, RITE_IO_F32, "peft_f32"},         {0, RITE_IO_F16, "peft_f16"}, {0, RITE_IO_BF16, "peft_bf16"},
    {1, RITE_IO_F32, "adapter_f32.gguf"}, {1, RITE_IO_F16, "adapter_f16.gguf"},
};

static int make_dir(const char *path) {
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "io_writer: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

/* The modules (names left NULL): the special values first, then random ones
   from 2^-30 to 2^15. Returns 0, or 1 when out of memory. */
static int make_modules(rite_io_module mods[NM], float *buf[NM][2]) {
    size_t nspecial = sizeof special_bits / sizeof special_bits[0], s = 0;
    int i, side;
    for (i = 0; i < NM; i++) {
        mods[i].name = NULL;
        mods[i].in_features = dims[i][0];
        mods[i].out_features = dims[i][1];
        mods[i].r = dims[i][2];
        for (side = 0; side < 2; side++) {
            size_t n = (size_t)dims[i][2] * (size_t)dims[i][side ? 1 : 0], e;
            buf[i][side] = (float *)malloc(n * sizeof(float));
            if (!buf[i][side]) return 1;
            for (e = 0; e < n; e++) {
                float v;
                if (s < nspecial) {
                    uint32_t b = special_bits[s++];
                    memcpy(&v, &b, 4);
                } else {
                    double mag = pow(2.0, -30.0 + 45.0 * uniform());
                    v = (float)(uniform() < 0.5 ? -mag : mag);
                }
                buf[i][side][e] = v;
            }
        }
        mods[i].A = buf[i][0];
        mods[i].B = buf[i][1];
    }
    return 0;
}

/* reference.txt and values.bin; returns 0, or 1 on an I/O error */
static int write_reference(const char *dir, float *buf[NM][2]) {
    char path[4096];
    FILE *fp;
    int i, side;
    snprintf(path, sizeof path, "%s/reference.txt", dir);
    fp = fopen(path, "w");
    if (!fp) return 1;
    fprintf(fp, "alpha %.17g\nbase_model %s\ntask_type %s\narchitecture %s\n", k_alpha, k_base_model, k_task_type,
            k_arch);
    for (i = 0; i < NM; i++)
        fprintf(fp, "module %s %s %d %d %d\n", peft_names[i], gguf_names[i], dims[i][0], dims[i][1], dims[i][2]);
    if (fclose(fp) != 0) return 1;
    snprintf(path, sizeof path, "%s/values.bin", dir);
    fp = fopen(path, "wb");
    if (!fp) return 1;
    for (i = 0; i < NM; i++)
        for (side = 0; side < 2; side++) {
            size_t n = (size_t)dims[i][2] * (size_t)dims[i][side ? 1 : 0], e;
            for (e = 0; e < n; e++) {
                uint32_t b;
                unsigned char le[4];
                memcpy(&b, &buf[i][side][e], 4);
                le[0] = (unsigned char)b, le[1] = (unsigned char)(b >> 8);
                le[2] = (unsigned char)(b >> 16), le[3] = (unsigned char)(b >> 24);
                fwrite(le, 1, 4, fp);
            }
        }
    return fclose(fp) != 0;
}

/* One adapter of the modules, named for its format; returns 0, or 1 (said on stderr) */
static int write_adapter(const char *dir, rite_io_module mods[NM], const adapter_out *out) {
    char path[4096], detail[512] = "";
    rite_io_status st;
    int i;
    for (i = 0; i < NM; i++) mods[i].name = out->gguf ? gguf_names[i] : peft_names[i];
    snprintf(path, sizeof path, "%s/%s", dir, out->name);
    if (out->gguf) {
        rite_io_gguf o = {k_arch, k_alpha, out->dtype};
        st = rite_io_gguf_save(path, mods, NM, &o, detail, sizeof detail);
    } else {
        rite_io_peft o = {k_base_model, k_task_type, k_alpha, out->dtype};
        if (make_dir(path)) return 1;
        st = rite_io_peft_save(path, mods, NM, &o, detail, sizeof detail);
    }
    if (st == RITE_IO_OK) return 0;
    fprintf(stderr, "io_writer: %s: %s (%s)\n", out->name, rite_io_status_string(st), detail);
    return 1;
}

int main(int argc, char **argv) {
    rite_io_module mods[NM];
    float *buf[NM][2] = {{NULL}};
    size_t k;
    int i, rc = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: io_writer OUTDIR\n");
        return 2;
    }
    if (make_dir(argv[1]) || make_modules(mods, buf) || write_reference(argv[1], buf)) return 1;
    for (k = 0; k < sizeof k_outputs / sizeof k_outputs[0] && !rc; k++) rc = write_adapter(argv[1], mods, &k_outputs[k]);
    for (i = 0; i < NM; i++) {
        free(buf[i][0]);
        free(buf[i][1]);
    }
    if (!rc) printf("io_writer: wrote %d modules as PEFT (F32, F16, BF16) and GGUF (F32, F16) in %s\n", NM, argv[1]);
    return rc;
}
