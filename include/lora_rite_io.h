/* lora_rite_io.h - LoRA adapters that other tools load: PEFT's safetensors
   and llama.cpp's GGUF, written and read back. A companion of lora_rite.h,
   in one header, with no dependency beyond the C library.

   USE
   ---
   In exactly one C or C++ file:

       #define LORA_RITE_IO_IMPLEMENTATION
       #include "lora_rite_io.h"

   Everywhere else just #include "lora_rite_io.h". It needs neither
   lora_rite.h nor a BLAS; when lora_rite.h is included before it, the
   optimizer state of a rite_model can be written as safetensors too
   (rite_io_state_*).

   ADAPTERS
   An adapter is an array of modules. A module is one LoRA pair, stored as
   PEFT and llama.cpp store it (and as lora_rite.h's rite_lora_peft() does):
   lora_A is r x in_features and lora_B is out_features x r, both row-major
   float. Its name says where it goes: for PEFT the module path in the base
   model ("model.layers.0.self_attn.q_proj": the tensors are
   base_model.model.<name>.lora_A.weight and .lora_B.weight); for GGUF the
   base weight's tensor name ("blk.0.attn_q.weight": the tensors are
   <name>.lora_a and <name>.lora_b, as llama.cpp names them, with ggml shapes
   lora_a ne = [in, r] and lora_b ne = [r, out]: the same bytes as PEFT's).

   FILES
     PEFT   DIR/adapter_model.safetensors (8-byte little-endian header
            length, a JSON header with dtype, shape and data_offsets per
            tensor and __metadata__, then the data, little-endian, C order)
            and DIR/adapter_config.json (peft_type "LORA", r, lora_alpha,
            target_modules, base_model_name_or_path, task_type).
     GGUF   one file, version 3, as llama.cpp's --lora loads it:
            general.type "adapter", general.architecture (the base model's),
            adapter.type "lora", adapter.lora.alpha (f32), alignment 32.
   Writers take F32 (always), F16 and BF16 (PEFT) or F16 (GGUF), converted
   with round-to-nearest-even. Readers convert any of them to float.

   WRITING
   A writer checks everything before it writes a byte: n >= 1 modules, each
   name 1 or more bytes of UTF-8 with no quote, backslash or control
   character (such names are refused, RITE_IO_ERR_ARGUMENT, not escaped, so
   a name is the same bytes in every file and tool), no name twice, and for
   GGUF at most 56 bytes (llama.cpp wants "<name>.lora_a" shorter than 64);
   every value finite and, for F16 and BF16, not rounding to Inf
   (RITE_IO_ERR_NOT_FINITE names the module and element), so that a file
   never holds what the readers refuse. The safetensors header is padded
   with spaces to a multiple of 8 bytes, and its tensors follow one another
   from offset 0 in the header's order (lora_A, lora_B, module by module);
   the config's strings (base_model, task_type) are JSON-escaped. GGUF
   tensors are packed in their infos' order, each padded to 32 bytes.

   READING BACK
   The readers fill the caller's modules: every module asked for must be in
   the file with the shapes the caller gives (r x in, out x r), else they
   fail (n = 0 only checks the file). Every reader takes hostile input: a
   truncated file, a header length past the file or absurdly large,
   malformed or too deeply nested JSON, an unknown dtype, offsets that
   overlap, go backwards or past the end, shapes whose product overflows,
   missing or duplicate keys, GGUF strings and arrays whose lengths lie:
   each gives its own status, reads nothing past the buffer, and changes
   none of the caller's buffers (a reader checks everything, every module
   asked for, before it writes). Other tensors in the file are allowed, and
   checked as well. In detail:
     safetensors  the header at most 10^8 bytes, Hugging Face's limit
       (RITE_IO_ERR_HEADER_SIZE), and one JSON object, UTF-8, nested at most
       32 deep (_JSON_DEPTH), no key
       twice in any object, escapes decoded first (_DUPLICATE_KEY);
       __metadata__ an object of strings; every tensor has dtype, shape and
       data_offsets (_MISSING_KEY; other keys are skipped), its dtype F32,
       F16, BF16 or F64 (_DTYPE, for every tensor of the file); a shape or
       data_offsets that is not an array of non-negative integers (two of
       them for data_offsets) is _JSON, a shape whose size does not fit a
       size_t _SHAPE_OVERFLOW, offsets that do not fit 64 bits, go
       backwards, hold other than the shape's bytes, pass the end of the
       data or overlap another tensor's _OFFSETS (gaps are allowed); F64
       values must fit a float (_NOT_FINITE).
     GGUF  version 2 or 3; key-value and tensor counts the file could hold
       (else _TRUNCATED, as is any read past the end), no empty key
       (_GGUF_STRING), all 13 value types, arrays of arrays at most 32 deep
       (_GGUF_ARRAY); general.alignment, if there, a u32 power of two
       (_GGUF_ALIGNMENT); general.type "adapter" and adapter.type "lora"
       must both be there, and general.architecture and adapter.lora.alpha,
       when there, a string and an f32, as llama.cpp reads them
       (_NOT_ADAPTER); n_dims 1 to 4 and an element count that fits a size_t
       (else _SHAPE_OVERFLOW); ggml types F32, F16 and BF16 (_DTYPE);
       offsets multiples of the alignment (_GGUF_ALIGNMENT); every tensor's
       data and its padding to the alignment inside the file (_TRUNCATED);
       the tensors' data in the order of their infos, each at or after the
       end of the one before, as ggml's reader wants it (else _OFFSETS,
       which covers overlaps; gaps are allowed). lora_a must have
       ne = [in, r] and lora_b ne = [r, out] (further dimensions 1).

   ERRORS
   Every function that can fail returns a rite_io_status;
   rite_io_status_string() describes it, and the detail argument (size
   bytes, may be NULL) gets which file, tensor, key or offset it was.

   LICENSE: MIT, as lora_rite.h.
*/
#ifndef LORA_RITE_IO_H
#define LORA_RITE_IO_H

#include <stddef.h>
#include <stdint.h>

#ifndef LORA_RITE_IO_API
#define LORA_RITE_IO_API extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define RITE_IO_STATUS_LIST(X)                                                                                        \
    X(RITE_IO_OK, "success")                                                                                          \
    X(RITE_IO_ERR_NULL_ARGUMENT, "a required pointer argument is NULL")                                              \
    X(RITE_IO_ERR_ARGUMENT, "an argument is out of range (sizes, dtype, alpha, a name empty, too long, twice or "   \
                            "with a quote, backslash or control character)")                                         \
    X(RITE_IO_ERR_IO, "a file could not be opened, read or written")                                                 \
    X(RITE_IO_ERR_OUT_OF_MEMORY, "out of memory")                                                                    \
    X(RITE_IO_ERR_BUFFER_SIZE, "the destination buffer is too small")                                                \
    X(RITE_IO_ERR_TRUNCATED, "the file ends before what its header says")                                           \
    X(RITE_IO_ERR_HEADER_SIZE, "the safetensors header length is past the file or absurdly large")                  \
    X(RITE_IO_ERR_JSON, "malformed JSON")                                                                            \
    X(RITE_IO_ERR_JSON_DEPTH, "JSON nested too deeply")                                                              \
    X(RITE_IO_ERR_DUPLICATE_KEY, "a key appears twice")                                                              \
    X(RITE_IO_ERR_MISSING_KEY, "a key or tensor the reader needs is missing")                                       \
    X(RITE_IO_ERR_DTYPE, "an unknown or unsupported dtype or tensor type")                                          \
    X(RITE_IO_ERR_OFFSETS, "tensor data offsets overlap, go backwards or past the end")                             \
    X(RITE_IO_ERR_SHAPE_OVERFLOW, "a tensor's element count or byte size overflows")                                \
    X(RITE_IO_ERR_SHAPE_MISMATCH, "a tensor's shape is not the one the caller expects")                             \
    X(RITE_IO_ERR_GGUF_MAGIC, "not a GGUF file")                                                                     \
    X(RITE_IO_ERR_GGUF_VERSION, "unsupported GGUF version (2 and 3 are read)")                                      \
    X(RITE_IO_ERR_GGUF_STRING, "a GGUF string's length goes past the file or is absurd")                           \
    X(RITE_IO_ERR_GGUF_ARRAY, "a GGUF array's length goes past the file or is absurd")                              \
    X(RITE_IO_ERR_GGUF_VALUE_TYPE, "an unknown GGUF metadata value type")                                           \
    X(RITE_IO_ERR_GGUF_ALIGNMENT, "a GGUF alignment or tensor offset that is not valid")                           \
    X(RITE_IO_ERR_NOT_ADAPTER, "a GGUF file that is not a LoRA adapter (general.type, adapter.type)")             \
    X(RITE_IO_ERR_NOT_FINITE, "a tensor holds NaN or Inf")                                                           \
    X(RITE_IO_ERR_STATE, "the optimizer state could not be read from the model")

typedef enum rite_io_status {
#define RITE_IO__STATUS_ENUM(code, text) code,
    RITE_IO_STATUS_LIST(RITE_IO__STATUS_ENUM)
#undef RITE_IO__STATUS_ENUM
    RITE_IO_STATUS_COUNT
} rite_io_status;

typedef enum rite_io_dtype {
    RITE_IO_F32 = 0,
    RITE_IO_F16 = 1,
    RITE_IO_BF16 = 2            /* safetensors only */
} rite_io_dtype;

/* One LoRA pair (see ADAPTERS above). The writers only read A and B. */
typedef struct rite_io_module {
    const char *name;           /* PEFT module path, or GGUF base tensor name */
    int in_features, out_features, r;
    float *A;                   /* lora_A, r x in_features, row-major */
    float *B;                   /* lora_B, out_features x r, row-major */
} rite_io_module;

/* What else a PEFT adapter records. */
typedef struct rite_io_peft {
    const char *base_model;     /* base_model_name_or_path; NULL: null */
    const char *task_type;      /* "CAUSAL_LM", ...; NULL: not written */
    double lora_alpha;          /* PEFT scales B A by lora_alpha / r */
    rite_io_dtype dtype;        /* of the tensors: F32, F16 or BF16 */
} rite_io_peft;

/* What else a GGUF adapter records. */
typedef struct rite_io_gguf {
    const char *architecture;   /* general.architecture of the base model ("llama", "gemma", ...) */
    double lora_alpha;          /* adapter.lora.alpha; llama.cpp scales by alpha / r */
    rite_io_dtype dtype;        /* F32 or F16 */
} rite_io_gguf;

/* ---- PEFT: adapter_model.safetensors and adapter_config.json ---- */

/* Bytes of the safetensors file, and the file written into a buffer. */
LORA_RITE_IO_API rite_io_status rite_io_peft_safetensors_size(const rite_io_module *mods, int n,
                                                              const rite_io_peft *opt, size_t *size);
LORA_RITE_IO_API rite_io_status rite_io_peft_safetensors_write(const rite_io_module *mods, int n,
                                                               const rite_io_peft *opt, void *dst, size_t dst_size,
                                                               char *detail, size_t detail_size);
/* adapter_config.json as a string. *written (may be NULL) gets its size,
   the terminating 0 included, also when dst_size is too small
   (RITE_IO_ERR_BUFFER_SIZE); dst = NULL only asks for that size (written
   must not be NULL then). The modules' A and B may be NULL here. */
LORA_RITE_IO_API rite_io_status rite_io_peft_config_write(const rite_io_module *mods, int n, const rite_io_peft *opt,
                                                          char *dst, size_t dst_size, size_t *written);
/* Both files into the directory dir (which must exist). */
LORA_RITE_IO_API rite_io_status rite_io_peft_save(const char *dir, const rite_io_module *mods, int n,
                                                  const rite_io_peft *opt, char *detail, size_t detail_size);
/* Fills mods[i].A and .B (the caller's buffers, of the shapes in mods[i])
   from a safetensors file in memory, or from DIR/adapter_model.safetensors. */
LORA_RITE_IO_API rite_io_status rite_io_peft_safetensors_read(const void *src, size_t src_size, rite_io_module *mods,
                                                              int n, char *detail, size_t detail_size);
LORA_RITE_IO_API rite_io_status rite_io_peft_load(const char *dir, rite_io_module *mods, int n, char *detail,
                                                  size_t detail_size);

/* ---- GGUF ---- */

LORA_RITE_IO_API rite_io_status rite_io_gguf_size(const rite_io_module *mods, int n, const rite_io_gguf *opt,
                                                  size_t *size);
LORA_RITE_IO_API rite_io_status rite_io_gguf_write(const rite_io_module *mods, int n, const rite_io_gguf *opt,
                                                   void *dst, size_t dst_size, char *detail, size_t detail_size);
LORA_RITE_IO_API rite_io_status rite_io_gguf_save(const char *path, const rite_io_module *mods, int n,
                                                  const rite_io_gguf *opt, char *detail, size_t detail_size);
LORA_RITE_IO_API rite_io_status rite_io_gguf_read(const void *src, size_t src_size, rite_io_module *mods, int n,
                                                  char *detail, size_t detail_size);
LORA_RITE_IO_API rite_io_status rite_io_gguf_load(const char *path, rite_io_module *mods, int n, char *detail,
                                                  size_t detail_size);

LORA_RITE_IO_API const char *rite_io_status_string(rite_io_status status);

/* ---- the optimizer state of a model as safetensors (with lora_rite.h) ----

   One tensor per moment, F32 for a float model and F64 for a double one,
   named after the modules (names[i] for layer i of the model):
     <name>.lora_A.exp_avg      r x in   first moment of lora_A (both optimizers)
     <name>.lora_B.exp_avg      out x r  first moment of lora_B
     <name>.lora_A.exp_avg_sq   r x in   AdamW: second moment of lora_A
     <name>.lora_B.exp_avg_sq   out x r  AdamW: second moment of lora_B
     <name>.lora_A.second_moment r x r   LoRA-RITE: the r x r second moment of lora_A (SPEC 7)
     <name>.lora_B.second_moment r x r   LoRA-RITE: that of lora_B
     <name>.lora_A.escaped_mass  [1]     LoRA-RITE: SPEC 8's rho (0 unless escape is on)
     <name>.lora_B.escaped_mass  [1]
   and __metadata__ (strings): "format" "pt", "optimizer" "lora_rite" or
   "adamw", "steps" the model's step count and "<name>.steps" each layer's.
   The names follow the writers' rules (WRITING above). For
   inspection by standard tools; the model checkpoint of lora_rite.h is the
   format to resume from. These are declared once lora_rite.h has been
   included: a file that includes lora_rite.h after this header includes
   this header again to get them. The implementation defines them when
   lora_rite.h comes before it. */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LORA_RITE_IO_H */

/* Declared once lora_rite.h has been included, whichever of the two headers
   came first (this part is outside the include guard for that). */
#if defined(LORA_RITE_H) && !defined(LORA_RITE_IO__STATE_DECLARED)
#define LORA_RITE_IO__STATE_DECLARED
#ifdef __cplusplus
extern "C" {
#endif
LORA_RITE_IO_API rite_io_status rite_io_state_size(const rite_model *model, const char *const *names, size_t *size);
LORA_RITE_IO_API rite_io_status rite_io_state_write(const rite_model *model, const char *const *names, void *dst,
                                                    size_t dst_size, char *detail, size_t detail_size);
LORA_RITE_IO_API rite_io_status rite_io_state_save(const char *path, const rite_model *model,
                                                   const char *const *names, char *detail, size_t detail_size);
#ifdef __cplusplus
} /* extern "C" */
#endif
#endif

#if defined(LORA_RITE_IO_IMPLEMENTATION) && !defined(LORA_RITE_IO__IMPLEMENTED)
#define LORA_RITE_IO__IMPLEMENTED

/* Sections, each marked with its tag (search for it):
     @base      detail messages, little-endian bytes, checked sizes, names and modules
     @half      float <-> IEEE half and bfloat16, rounding to nearest even
     @out       a writer that counts what it would write; JSON text
     @st_out    safetensors and adapter_config.json written (PEFT)
     @json      a JSON parser for hostile safetensors headers
     @st_in     safetensors read back
     @gguf_out  GGUF written
     @gguf_in   GGUF read back
     @files     whole files: the _save and _load functions
     @state     the optimizer state of a model as safetensors (with lora_rite.h) */

#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- @base ---------------------------------------------------------------------- */

#define RITE_IO__MAX_HEADER ((size_t)100000000) /* the largest safetensors header read or written (the
                                                  limit of Hugging Face's safetensors) */
#define RITE_IO__MAX_DEPTH 32      /* JSON nesting, and GGUF arrays of arrays */
#define RITE_IO__GGUF_ALIGN 32u    /* the GGUF writer's alignment (llama.cpp's default) */
#define RITE_IO__GGUF_NAME 64      /* llama.cpp's GGML_MAX_NAME: a tensor name has fewer bytes */
#define RITE_IO__SHOW 160          /* at most this many bytes of a name from a file go into a message */
#define RITE_IO__ABSENT 0xffffffffu

/* a span of bytes from a file, for "%.*s" (at most RITE_IO__SHOW of them) */
#define RITE_IO__SPAN(s, n) (int)((n) < RITE_IO__SHOW ? (n) : RITE_IO__SHOW), (const char *)(s)

/* The element types the files use, as the code below knows them. */
enum { RITE_IO__NONE = 0, RITE_IO__F32 = 1, RITE_IO__F16 = 2, RITE_IO__BF16 = 3, RITE_IO__F64 = 4 };
static const char *const rite_io__type_names[5] = {"?", "F32", "F16", "BF16", "F64"};

#if defined(__GNUC__) || defined(__clang__)
#define RITE_IO__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define RITE_IO__PRINTF(f, a)
#endif

/* st, with the detail printed into detail (size bytes; detail may be NULL) */
static rite_io_status rite_io__say(char *detail, size_t size, rite_io_status st, const char *fmt, ...)
    RITE_IO__PRINTF(4, 5);
static rite_io_status rite_io__say(char *detail, size_t size, rite_io_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (detail && size) vsnprintf(detail, size, fmt, ap);
    va_end(ap);
    return st;
}

static void rite_io__clear(char *detail, size_t size)
{
    if (detail && size) detail[0] = 0;
}

static size_t rite_io__esize(int type)
{
    return type == RITE_IO__F64 ? 8 : type == RITE_IO__F32 ? 4 : 2;
}

/* *out = a * b; 0 when that overflows a size_t */
static int rite_io__mul(size_t a, size_t b, size_t *out)
{
    if (b && a > SIZE_MAX / b) return 0;
    *out = a * b;
    return 1;
}

/* *acc += b; 0 when that overflows */
static int rite_io__add(size_t *acc, size_t b)
{
    if (b > SIZE_MAX - *acc) return 0;
    *acc += b;
    return 1;
}

/* little-endian integers of `bytes` bytes, whatever the host's byte order */
static void rite_io__put_le(unsigned char *p, uint64_t v, int bytes)
{
    int i;
    for (i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t rite_io__get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* 1 when s[0, n) is well-formed UTF-8: no overlong forms, surrogates or code points past U+10FFFF */
static int rite_io__utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0, k, need;
    uint32_t cp, min;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) need = 1, cp = c & 0x1fu, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef) need = 2, cp = c & 0x0fu, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) need = 3, cp = c & 0x07u, min = 0x10000;
        else return 0;
        if (n - i - 1 < need) return 0;
        for (k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += need + 1;
    }
    return 1;
}

/* A module name the writers take: 1 to max bytes of UTF-8 with nothing JSON would escape (no quote,
   backslash or control character), so that it is the same bytes in a safetensors header, the
   config and a GGUF file, and every tool reads it back as written. */
static rite_io_status rite_io__check_name(const char *name, size_t max, int i, char *detail, size_t ds)
{
    size_t k, n = strlen(name);
    if (n == 0 || n > max)
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "module %d: a name of %zu bytes (1 to %zu)", i, n, max);
    for (k = 0; k < n; k++) {
        unsigned char c = (unsigned char)name[k];
        if (c < 0x20 || c == '"' || c == '\\')
            return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT,
                                "module %d: name \"%s\" has a quote, backslash or control character (byte %zu)", i,
                                name, k);
    }
    if (!rite_io__utf8_ok((const unsigned char *)name, n))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "module %d: name \"%s\" is not UTF-8", i, name);
    return RITE_IO_OK;
}

#define RITE_IO__NEED_DATA 1   /* rite_io__check_modules: A and B must be given */
#define RITE_IO__WRITER 2      /* ... and n >= 1, names a writer takes, no name twice */

/* The modules given to a writer or a reader: pointers, sizes (every r x in and out x r matrix fits
   in a size_t as doubles), and for a writer the names (max bytes each). */
static rite_io_status rite_io__check_modules(const rite_io_module *mods, int n, int flags, size_t max_name,
                                             char *detail, size_t ds)
{
    int i, j;
    size_t a;
    if (n < ((flags & RITE_IO__WRITER) ? 1 : 0))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "n = %d modules", n);
    if (n > 0 && !mods) return rite_io__say(detail, ds, RITE_IO_ERR_NULL_ARGUMENT, "mods is NULL");
    for (i = 0; i < n; i++) {
        const rite_io_module *m = &mods[i];
        if (!m->name || ((flags & RITE_IO__NEED_DATA) && (!m->A || !m->B)))
            return rite_io__say(detail, ds, RITE_IO_ERR_NULL_ARGUMENT, "module %d: %s is NULL", i,
                                !m->name ? "name" : !m->A ? "A" : "B");
        if (m->in_features < 1 || m->out_features < 1 || m->r < 1 ||
            !rite_io__mul((size_t)m->r, (size_t)m->in_features, &a) || !rite_io__mul(a, 8, &a) ||
            !rite_io__mul((size_t)m->r, (size_t)m->out_features, &a) || !rite_io__mul(a, 8, &a))
            return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT,
                                "module %d (%s): in_features %d, out_features %d, r %d (positive, and not too large)",
                                i, m->name, m->in_features, m->out_features, m->r);
        if (!(flags & RITE_IO__WRITER)) continue;
        {
            rite_io_status st = rite_io__check_name(m->name, max_name, i, detail, ds);
            if (st != RITE_IO_OK) return st;
        }
        for (j = 0; j < i; j++)
            if (!strcmp(mods[j].name, m->name))
                return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "modules %d and %d are both named \"%s\"", j,
                                    i, m->name);
    }
    return RITE_IO_OK;
}

/* the elements of module m's lora_A (side 0, r x in) or lora_B (side 1, out x r) */
static size_t rite_io__count(const rite_io_module *m, int side)
{
    return (size_t)m->r * (size_t)(side ? m->out_features : m->in_features);
}

/* ---- @half ---------------------------------------------------------------------- */

/* float -> IEEE 754 half, rounding to nearest even: NaN stays a (quiet) NaN with the sign and the top
   of its payload, what rounds past 65504 becomes Inf, and below 2^-14 the result is subnormal (or a
   signed zero from 2^-25 down, 2^-25 itself being a tie that goes to the even 0). */
static uint16_t rite_io__f2h(float f)
{
    uint32_t x, ax, sign, m, h, rem, half, shift;
    memcpy(&x, &f, 4);
    sign = (x >> 16) & 0x8000u;
    ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* Inf, and from 65520 (the tie past 65504) */
    if (ax >= 0x38800000u) {                                     /* a normal half: rebias, round 13 bits off */
        h = (ax - 0x38000000u) >> 13;
        rem = ax & 0x1fffu;
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    if (ax <= 0x33000000u) return (uint16_t)sign;
    /* a subnormal half: the 24-bit significand in units of 2^-24 */
    m = (ax & 0x7fffffu) | 0x800000u;
    shift = 126u - (ax >> 23);   /* 14 .. 24 */
    h = m >> shift;
    rem = m & ((1u << shift) - 1u);
    half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) h++;   /* may carry into the smallest normal: still right */
    return (uint16_t)(sign | h);
}

/* IEEE half -> float (exact) */
static float rite_io__h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
    float f;
    if (e == 0x1f) x = sign | 0x7f800000u | (m << 13);
    else if (e) x = sign | ((e + 112u) << 23) | (m << 13);
    else if (!m) x = sign;
    else {   /* subnormal: normalise */
        e = 113;
        while (!(m & 0x400u)) {
            m <<= 1;
            e--;
        }
        x = sign | (e << 23) | ((m & 0x3ffu) << 13);
    }
    memcpy(&f, &x, 4);
    return f;
}

/* float -> bfloat16 (the top half of a float), rounding to nearest even; the carry of a value that
   rounds past the largest bfloat16 reaches the Inf pattern, as it should. NaN stays a quiet NaN. */
static uint16_t rite_io__f2bf(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

static float rite_io__bf2f(uint16_t b)
{
    uint32_t x = (uint32_t)b << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* one little-endian element of type t as a float (an F64 one is known to fit: rite_io__first_bad) */
static float rite_io__get(const unsigned char *p, int t)
{
    uint32_t x;
    uint64_t y;
    float f;
    double d;
    if (t == RITE_IO__F16) return rite_io__h2f((uint16_t)rite_io__get_le(p, 2));
    if (t == RITE_IO__BF16) return rite_io__bf2f((uint16_t)rite_io__get_le(p, 2));
    if (t == RITE_IO__F64) {
        y = rite_io__get_le(p, 8);
        memcpy(&d, &y, 8);
        return (float)d;
    }
    x = (uint32_t)rite_io__get_le(p, 4);
    memcpy(&f, &x, 4);
    return f;
}

/* The index of the first of the n elements at p (type t) that is NaN or Inf, or for F64 too large for
   a float; n when there is none. */
static size_t rite_io__first_bad(const unsigned char *p, size_t n, int t)
{
    size_t i, es = rite_io__esize(t);
    for (i = 0; i < n; i++, p += es) {
        uint64_t v = rite_io__get_le(p, (int)es);
        double d;
        if (t == RITE_IO__F32 && (v & 0x7f800000u) == 0x7f800000u) return i;
        if (t == RITE_IO__F16 && (v & 0x7c00u) == 0x7c00u) return i;
        if (t == RITE_IO__BF16 && (v & 0x7f80u) == 0x7f80u) return i;
        if (t == RITE_IO__F64) {
            memcpy(&d, &v, 8);
            if (!(d >= -FLT_MAX && d <= FLT_MAX)) return i;
        }
    }
    return n;
}

/* n elements at p (type t, checked by rite_io__first_bad) into dst */
static void rite_io__to_float(float *dst, const unsigned char *p, size_t n, int t)
{
    size_t i, es = rite_io__esize(t);
    for (i = 0; i < n; i++, p += es) dst[i] = rite_io__get(p, t);
}

/* The index of the first of x[0, n) that type t cannot hold (NaN, Inf, or rounding to Inf in F16 or
   BF16), or n. The writers check this first, so that a file never holds what the readers refuse. */
static size_t rite_io__first_unfit(const float *x, size_t n, int t)
{
    size_t i;
    for (i = 0; i < n; i++) {
        float v = x[i];
        if (!(v >= -FLT_MAX && v <= FLT_MAX)) return i;
        if (t == RITE_IO__F16 && (rite_io__f2h(v) & 0x7fffu) == 0x7c00u) return i;
        if (t == RITE_IO__BF16 && (rite_io__f2bf(v) & 0x7fffu) == 0x7f80u) return i;
    }
    return n;
}

/* n floats as little-endian elements of type t (F32, F16 or BF16); returns the end */
static unsigned char *rite_io__put_floats(unsigned char *dst, const float *x, size_t n, int t)
{
    size_t i;
    uint32_t bits;
    for (i = 0; i < n; i++) {
        if (t == RITE_IO__F16) {
            rite_io__put_le(dst, rite_io__f2h(x[i]), 2);
            dst += 2;
        } else if (t == RITE_IO__BF16) {
            rite_io__put_le(dst, rite_io__f2bf(x[i]), 2);
            dst += 2;
        } else {
            memcpy(&bits, &x[i], 4);
            rite_io__put_le(dst, bits, 4);
            dst += 4;
        }
    }
    return dst;
}

/* Every value of the modules' A and B fits type t (else RITE_IO_ERR_NOT_FINITE, naming it) */
static rite_io_status rite_io__check_values(const rite_io_module *mods, int n, int t, char *detail, size_t ds)
{
    static const char *const what[2] = {"lora_A", "lora_B"};
    int i, side;
    for (i = 0; i < n; i++)
        for (side = 0; side < 2; side++) {
            const float *x = side ? mods[i].B : mods[i].A;
            size_t c = rite_io__count(&mods[i], side), k = rite_io__first_unfit(x, c, t);
            if (k < c)
                return rite_io__say(detail, ds, RITE_IO_ERR_NOT_FINITE, "module %d (%s): %s[%zu] = %g does not fit %s",
                                    i, mods[i].name, what[side], k, (double)x[k], rite_io__type_names[t]);
        }
    return RITE_IO_OK;
}

/* ---- @out ----------------------------------------------------------------------- */

/* Text and headers are written twice by the same code: first only counted (p NULL), to learn the
   size, then into a buffer of that size. */
typedef struct rite_io__out {
    unsigned char *p;      /* where to write; NULL: only count */
    size_t n;              /* bytes so far (saturating at SIZE_MAX) */
    size_t cap;            /* bytes at p */
} rite_io__out;

static void rite_io__out_init(rite_io__out *o, void *p, size_t cap)
{
    o->p = (unsigned char *)p;
    o->n = 0;
    o->cap = cap;
}

static void rite_io__put(rite_io__out *o, const void *s, size_t n)
{
    if (o->p && n && o->n <= o->cap && n <= o->cap - o->n) memcpy(o->p + o->n, s, n);
    o->n = n > SIZE_MAX - o->n ? SIZE_MAX : o->n + n;
}

static void rite_io__puts(rite_io__out *o, const char *s)
{
    rite_io__put(o, s, strlen(s));
}

/* v in decimal */
static void rite_io__putu(rite_io__out *o, uint64_t v)
{
    char b[24];
    int k = 24;
    do {
        b[--k] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    rite_io__put(o, b + k, (size_t)(24 - k));
}

/* v as `bytes` little-endian bytes */
static void rite_io__putle(rite_io__out *o, uint64_t v, int bytes)
{
    unsigned char b[8];
    rite_io__put_le(b, v, bytes);
    rite_io__put(o, b, (size_t)bytes);
}

/* s as a JSON string, quoted and escaped */
static void rite_io__putj(rite_io__out *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    char e[6] = {'\\', 'u', '0', '0', 0, 0};
    rite_io__puts(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *short_form = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                                 : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (short_form) {
            rite_io__puts(o, short_form);
        } else if (c < 0x20) {
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            rite_io__put(o, e, 6);
        } else {
            rite_io__put(o, s, 1);
        }
    }
    rite_io__puts(o, "\"");
}

/* a finite double as a JSON number, in the fewest digits that read back to it */
static void rite_io__putd(rite_io__out *o, double v)
{
    char b[40];
    int prec, k;
    for (prec = 15; prec <= 17; prec++) {
        snprintf(b, sizeof b, "%.*g", prec, v);
        if (strtod(b, NULL) == v) break;
    }
    for (k = 0; b[k]; k++)   /* a locale's decimal comma (or other mark) becomes JSON's point */
        if (!(b[k] >= '0' && b[k] <= '9') && b[k] != '-' && b[k] != '+' && b[k] != 'e') b[k] = '.';
    rite_io__puts(o, b);
}

/* ---- @st_out -------------------------------------------------------------------- */

/* One tensor of a safetensors header, after a comma:
   "<a><b><c>":{"dtype":"F32","shape":[..],"data_offsets":[begin,end]} */
static void rite_io__st_entry(rite_io__out *o, const char *a, const char *b, const char *c, int type,
                              const size_t *shape, int ndim, size_t begin, size_t end)
{
    int d;
    rite_io__puts(o, ",\"");
    rite_io__puts(o, a);
    rite_io__puts(o, b);
    rite_io__puts(o, c);
    rite_io__puts(o, "\":{\"dtype\":\"");
    rite_io__puts(o, rite_io__type_names[type]);
    rite_io__puts(o, "\",\"shape\":[");
    for (d = 0; d < ndim; d++) {
        if (d) rite_io__puts(o, ",");
        rite_io__putu(o, shape[d]);
    }
    rite_io__puts(o, "],\"data_offsets\":[");
    rite_io__putu(o, begin);
    rite_io__puts(o, ",");
    rite_io__putu(o, end);
    rite_io__puts(o, "]}");
}

/* Closes a header and pads it with spaces (which safetensors allows) to a multiple of 8 bytes, so
   that after the 8-byte length the data starts 8-byte aligned; returns the header's length. */
static size_t rite_io__st_close(rite_io__out *o)
{
    rite_io__puts(o, "}");
    while (o->n % 8) rite_io__puts(o, " ");
    return o->n;
}

/* An adapter's header: __metadata__, then lora_A and lora_B of every module, their data in that
   order. Returns its length. */
static size_t rite_io__peft_header(rite_io__out *o, const rite_io_module *mods, int n, int type)
{
    static const char *const post[2] = {".lora_A.weight", ".lora_B.weight"};
    size_t es = rite_io__esize(type), off = 0, bytes, shape[2];
    int i, side;
    rite_io__puts(o, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (i = 0; i < n; i++)
        for (side = 0; side < 2; side++) {
            shape[0] = side ? (size_t)mods[i].out_features : (size_t)mods[i].r;
            shape[1] = side ? (size_t)mods[i].r : (size_t)mods[i].in_features;
            bytes = shape[0] * shape[1] * es;
            rite_io__st_entry(o, "base_model.model.", mods[i].name, post[side], type, shape, 2, off, off + bytes);
            off += bytes;
        }
    return rite_io__st_close(o);
}

static int rite_io__type_of(rite_io_dtype d)
{
    return d == RITE_IO_F32 ? RITE_IO__F32 : d == RITE_IO_F16 ? RITE_IO__F16 : d == RITE_IO_BF16 ? RITE_IO__BF16
                                                                                      : RITE_IO__NONE;
}

/* 1 when v is a finite double */
static int rite_io__finite(double v)
{
    return v >= -DBL_MAX && v <= DBL_MAX;
}

/* Clears the detail, checks a PEFT writer's arguments (not the values) and plans the file: header
   length *hlen (hlen may be NULL), size *total; neither is written unless the plan is RITE_IO_OK. */
static rite_io_status rite_io__peft_plan(const rite_io_module *mods, int n, const rite_io_peft *opt, size_t *hlen,
                                         size_t *total, char *detail, size_t ds)
{
    rite_io__out o;
    rite_io_status st;
    size_t data = 0, b, h, t = 8;
    int i, side, type;
    rite_io__clear(detail, ds);
    if (!opt) return rite_io__say(detail, ds, RITE_IO_ERR_NULL_ARGUMENT, "opt is NULL");
    type = rite_io__type_of(opt->dtype);
    if (!type) return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "dtype %d (F32, F16 or BF16)", (int)opt->dtype);
    if (!rite_io__finite(opt->lora_alpha))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "lora_alpha %g is not finite", opt->lora_alpha);
    st = rite_io__check_modules(mods, n, RITE_IO__NEED_DATA | RITE_IO__WRITER, RITE_IO__MAX_HEADER, detail, ds);
    if (st != RITE_IO_OK) return st;
    for (i = 0; i < n; i++)
        for (side = 0; side < 2; side++)
            if (!rite_io__mul(rite_io__count(&mods[i], side), rite_io__esize(type), &b) || !rite_io__add(&data, b))
                return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "the tensors' bytes overflow a size_t");
    rite_io__out_init(&o, NULL, 0);
    h = rite_io__peft_header(&o, mods, n, type);
    if (h > RITE_IO__MAX_HEADER || !rite_io__add(&t, h) || !rite_io__add(&t, data))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "a header of %zu bytes (readers take up to %zu)", h,
                            RITE_IO__MAX_HEADER);
    if (hlen) *hlen = h;
    *total = t;
    return RITE_IO_OK;
}

LORA_RITE_IO_API rite_io_status rite_io_peft_safetensors_size(const rite_io_module *mods, int n,
                                                              const rite_io_peft *opt, size_t *size)
{
    if (!size) return RITE_IO_ERR_NULL_ARGUMENT;
    return rite_io__peft_plan(mods, n, opt, NULL, size, NULL, 0);
}

/* what both writers check once the file is planned: the destination, its
   size (total bytes), and every value representable in the dtype (*type) */
static rite_io_status rite_io__write_checks(const rite_io_module *mods, int n, rite_io_dtype dtype, const void *dst,
                                            size_t dst_size, size_t total, int *type, char *detail,
                                            size_t detail_size)
{
    if (!dst) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "dst is NULL");
    if (dst_size < total)
        return rite_io__say(detail, detail_size, RITE_IO_ERR_BUFFER_SIZE, "dst_size %zu, the file takes %zu",
                            dst_size, total);
    *type = rite_io__type_of(dtype);
    return rite_io__check_values(mods, n, *type, detail, detail_size);
}

LORA_RITE_IO_API rite_io_status rite_io_peft_safetensors_write(const rite_io_module *mods, int n,
                                                               const rite_io_peft *opt, void *dst, size_t dst_size,
                                                               char *detail, size_t detail_size)
{
    rite_io__out o;
    unsigned char *q = (unsigned char *)dst;
    size_t hlen = 0, total = 0;
    int i, type;
    rite_io_status st = rite_io__peft_plan(mods, n, opt, &hlen, &total, detail, detail_size);
    if (st == RITE_IO_OK)
        st = rite_io__write_checks(mods, n, opt->dtype, dst, dst_size, total, &type, detail, detail_size);
    if (st != RITE_IO_OK) return st;
    rite_io__put_le(q, hlen, 8);
    rite_io__out_init(&o, q + 8, hlen);
    rite_io__peft_header(&o, mods, n, type);
    q += 8 + hlen;
    for (i = 0; i < n; i++) {
        q = rite_io__put_floats(q, mods[i].A, rite_io__count(&mods[i], 0), type);
        q = rite_io__put_floats(q, mods[i].B, rite_io__count(&mods[i], 1), type);
    }
    return RITE_IO_OK;
}

/* adapter_config.json. PEFT's r is one number: when the modules' ranks differ, r is the first one's
   and rank_pattern gives every module whose rank is not that. */
static void rite_io__peft_config(rite_io__out *o, const rite_io_module *mods, int n, const rite_io_peft *opt)
{
    int i, first = 1;
    rite_io__puts(o, "{\n  \"peft_type\": \"LORA\",\n  \"r\": ");
    rite_io__putu(o, (uint64_t)mods[0].r);
    rite_io__puts(o, ",\n  \"lora_alpha\": ");
    rite_io__putd(o, opt->lora_alpha);
    rite_io__puts(o, ",\n  \"target_modules\": [");
    for (i = 0; i < n; i++) {
        if (i) rite_io__puts(o, ", ");
        rite_io__putj(o, mods[i].name);
    }
    rite_io__puts(o, "]");
    for (i = 1; i < n; i++) {
        if (mods[i].r == mods[0].r) continue;
        rite_io__puts(o, first ? ",\n  \"rank_pattern\": {" : ", ");
        rite_io__putj(o, mods[i].name);
        rite_io__puts(o, ": ");
        rite_io__putu(o, (uint64_t)mods[i].r);
        first = 0;
    }
    if (!first) rite_io__puts(o, "}");
    rite_io__puts(o, ",\n  \"base_model_name_or_path\": ");
    if (opt->base_model) rite_io__putj(o, opt->base_model);
    else rite_io__puts(o, "null");
    if (opt->task_type) {
        rite_io__puts(o, ",\n  \"task_type\": ");
        rite_io__putj(o, opt->task_type);
    }
    rite_io__puts(o, ",\n  \"bias\": \"none\",\n  \"lora_dropout\": 0.0,\n  \"fan_in_fan_out\": false,\n"
                     "  \"inference_mode\": true\n}\n");
}

/* the config's arguments: modules (names, sizes), alpha, and its strings UTF-8 */
static rite_io_status rite_io__config_check(const rite_io_module *mods, int n, const rite_io_peft *opt, char *detail,
                                            size_t ds)
{
    if (!opt) return rite_io__say(detail, ds, RITE_IO_ERR_NULL_ARGUMENT, "opt is NULL");
    if (!rite_io__finite(opt->lora_alpha))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "lora_alpha %g is not finite", opt->lora_alpha);
    if (opt->base_model && !rite_io__utf8_ok((const unsigned char *)opt->base_model, strlen(opt->base_model)))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "base_model is not UTF-8");
    if (opt->task_type && !rite_io__utf8_ok((const unsigned char *)opt->task_type, strlen(opt->task_type)))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "task_type is not UTF-8");
    return rite_io__check_modules(mods, n, RITE_IO__WRITER, RITE_IO__MAX_HEADER, detail, ds);
}

LORA_RITE_IO_API rite_io_status rite_io_peft_config_write(const rite_io_module *mods, int n, const rite_io_peft *opt,
                                                          char *dst, size_t dst_size, size_t *written)
{
    rite_io__out o;
    rite_io_status st = rite_io__config_check(mods, n, opt, NULL, 0);
    if (st != RITE_IO_OK) return st;
    rite_io__out_init(&o, NULL, 0);
    rite_io__peft_config(&o, mods, n, opt);
    if (written) *written = o.n + 1;
    if (!dst) return written ? RITE_IO_OK : RITE_IO_ERR_NULL_ARGUMENT;   /* a size query */
    if (dst_size < o.n + 1) return RITE_IO_ERR_BUFFER_SIZE;
    rite_io__out_init(&o, dst, dst_size);
    rite_io__peft_config(&o, mods, n, opt);
    dst[o.n] = 0;
    return RITE_IO_OK;
}

/* ---- @json ---------------------------------------------------------------------- */

/* A span of bytes: an object key, or a tensor name with the index of its tensor. */
typedef struct rite_io__key {
    const char *s;         /* not terminated */
    size_t n;
    size_t i;
} rite_io__key;

/* bytes first, then length: a total order for qsort and bsearch */
static int rite_io__key_cmp(const void *a, const void *b)
{
    const rite_io__key *x = (const rite_io__key *)a, *y = (const rite_io__key *)b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = n ? memcmp(x->s, y->s, n) : 0;
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* RITE_IO_ERR_DUPLICATE_KEY when two of the n keys are equal (sorts them) */
static rite_io_status rite_io__dups(rite_io__key *k, size_t n, const char *what, char *detail, size_t ds)
{
    size_t i;
    if (n > 1) qsort(k, n, sizeof *k, rite_io__key_cmp);
    for (i = 1; i < n; i++)
        if (!rite_io__key_cmp(&k[i - 1], &k[i]))
            return rite_io__say(detail, ds, RITE_IO_ERR_DUPLICATE_KEY, "%s \"%.*s\" appears twice", what,
                                RITE_IO__SPAN(k[i].s, k[i].n));
    return RITE_IO_OK;
}

/* The parser walks the header once; strings are decoded into an arena as large as the header (a
   decoded string and its terminating 0 never take more bytes than its quoted form), and every open
   object keeps its keys on a stack, checked for duplicates (after decoding, so "a" and "\u0061" are
   the same key) when the object closes. Containers nest at most RITE_IO__MAX_DEPTH deep, which
   also bounds the recursion. */
typedef struct rite_io__json {
    const unsigned char *p, *end;  /* the cursor and the end of the header text */
    const unsigned char *start;    /* the header text, at byte 8 of the file */
    char *arena;                   /* decoded strings, one after another (never moved) */
    size_t used;
    rite_io__key *keys;            /* the keys of the open objects, innermost last */
    size_t nkeys, capkeys;
    int depth;
    char *detail;
    size_t ds;
} rite_io__json;

static rite_io_status rite_io__json_fail(rite_io__json *j, rite_io_status st, const char *what)
{
    return rite_io__say(j->detail, j->ds, st, "JSON header: %s at byte %zu of the file", what,
                        8 + (size_t)(j->p - j->start));
}

static void rite_io__json_ws(rite_io__json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* 1 when the next byte after white space is c (then consumed) */
static int rite_io__json_eat(rite_io__json *j, unsigned char c)
{
    rite_io__json_ws(j);
    if (j->p < j->end && *j->p == c) {
        j->p++;
        return 1;
    }
    return 0;
}

/* the four hex digits of a \u escape into *v */
static int rite_io__json_hex4(rite_io__json *j, uint32_t *v)
{
    int k;
    *v = 0;
    if (j->end - j->p < 4) return 0;
    for (k = 0; k < 4; k++) {
        unsigned char c = j->p[k];
        uint32_t d = c >= '0' && c <= '9'   ? (uint32_t)(c - '0')
                     : c >= 'a' && c <= 'f' ? (uint32_t)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (uint32_t)(c - 'A' + 10)
                                            : 16u;
        if (d > 15) return 0;
        *v = *v << 4 | d;
    }
    j->p += 4;
    return 1;
}

/* code point cp (not a surrogate, at most U+10FFFF) as UTF-8 at o + *k */
static void rite_io__utf8_put(char *o, size_t *k, uint32_t cp)
{
    unsigned char *u = (unsigned char *)o + *k;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        *k += 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xc0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3f));
        *k += 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xe0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (unsigned char)(0x80 | (cp & 0x3f));
        *k += 3;
    } else {
        u[0] = (unsigned char)(0xf0 | cp >> 18);
        u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (unsigned char)(0x80 | (cp & 0x3f));
        *k += 4;
    }
}

/* one escape, after its backslash, decoded to o + *k; \uXXXX surrogates must come in pairs */
static rite_io_status rite_io__json_escape(rite_io__json *j, char *o, size_t *k)
{
    static const char from[8] = {'"', '\\', '/', 'b', 'f', 'n', 'r', 't'};
    static const char to[8] = {'"', '\\', '/', '\b', '\f', '\n', '\r', '\t'};
    const char *e;
    uint32_t cp, lo;
    if (j->p >= j->end) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "an unterminated string");
    if (*j->p != 'u') {
        e = (const char *)memchr(from, *j->p, sizeof from);
        if (!e) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "an unknown escape");
        o[(*k)++] = to[e - from];
        j->p++;
        return RITE_IO_OK;
    }
    j->p++;
    if (!rite_io__json_hex4(j, &cp)) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a bad \\u escape");
    if (cp >= 0xdc00 && cp <= 0xdfff) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a lone low surrogate");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u')
            return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a high surrogate without its low half");
        j->p += 2;
        if (!rite_io__json_hex4(j, &lo) || lo < 0xdc00 || lo > 0xdfff)
            return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a high surrogate without its low half");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    rite_io__utf8_put(o, k, cp);
    return RITE_IO_OK;
}

/* The string at the cursor, decoded into the arena (*s, *n; terminated too). It must be UTF-8 and
   hold no raw control character. */
static rite_io_status rite_io__json_string(rite_io__json *j, const char **s, size_t *n)
{
    char *o = j->arena + j->used;
    size_t k = 0;
    rite_io_status st;
    if (j->p >= j->end || *j->p != '"') return rite_io__json_fail(j, RITE_IO_ERR_JSON, "expected a string");
    j->p++;
    for (;;) {
        unsigned char c;
        if (j->p >= j->end) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "an unterminated string");
        c = *j->p++;
        if (c == '"') break;
        if (c < 0x20) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a control character in a string");
        if (c != '\\') {
            o[k++] = (char)c;
            continue;
        }
        st = rite_io__json_escape(j, o, &k);
        if (st != RITE_IO_OK) return st;
    }
    if (!rite_io__utf8_ok((const unsigned char *)o, k))
        return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a string that is not UTF-8");
    o[k] = 0;
    *s = o;
    *n = k;
    j->used += k + 1;
    return RITE_IO_OK;
}

/* A number at the cursor (JSON's grammar). *kind: 0 a non-negative integer, in *v; 1 one too large
   for 64 bits (*v = UINT64_MAX); 2 anything else (a sign, fraction or exponent). */
static rite_io_status rite_io__json_number(rite_io__json *j, uint64_t *v, int *kind)
{
    const unsigned char *q = j->p, *e = j->end;
    *v = 0;
    *kind = 0;
    if (q < e && *q == '-') *kind = 2, q++;
    if (q >= e || *q < '0' || *q > '9') return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a bad number");
    if (*q == '0') {
        q++;   /* no digit may follow a leading 0 */
    } else {
        for (; q < e && *q >= '0' && *q <= '9'; q++) {
            unsigned d = (unsigned)(*q - '0');
            if (*v > (UINT64_MAX - d) / 10) *v = UINT64_MAX, *kind = *kind ? *kind : 1;
            else if (*kind != 1) *v = *v * 10 + d;
        }
    }
    if (q < e && *q == '.') {
        *kind = 2;
        if (++q >= e || *q < '0' || *q > '9') return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a bad fraction");
        while (q < e && *q >= '0' && *q <= '9') q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        *kind = 2;
        q++;
        if (q < e && (*q == '+' || *q == '-')) q++;
        if (q >= e || *q < '0' || *q > '9') return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a bad exponent");
        while (q < e && *q >= '0' && *q <= '9') q++;
    }
    j->p = q;
    return RITE_IO_OK;
}

/* 1 when a number starts at the cursor (after white space) */
static int rite_io__json_at_number(rite_io__json *j)
{
    rite_io__json_ws(j);
    return j->p < j->end && (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'));
}

/* enters the object or array opened by c at the cursor (else `what` is the error) */
static rite_io_status rite_io__json_open(rite_io__json *j, unsigned char c, const char *what)
{
    if (!rite_io__json_eat(j, c)) return rite_io__json_fail(j, RITE_IO_ERR_JSON, what);
    if (++j->depth > RITE_IO__MAX_DEPTH)
        return rite_io__json_fail(j, RITE_IO_ERR_JSON_DEPTH, "objects and arrays nested more than 32 deep");
    return RITE_IO_OK;
}

/* Before each element of an array: *more = 0 at its ']' (consumed); *count counts the elements. */
static rite_io_status rite_io__json_next(rite_io__json *j, size_t *count, int *more)
{
    *more = 0;
    if (rite_io__json_eat(j, ']')) {
        j->depth--;
        return RITE_IO_OK;
    }
    if (*count && !rite_io__json_eat(j, ',')) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "expected , or ]");
    (*count)++;
    *more = 1;
    return RITE_IO_OK;
}

static rite_io_status rite_io__json_push(rite_io__json *j, const char *s, size_t n)
{
    if (j->nkeys == j->capkeys) {
        size_t c = j->capkeys ? 2 * j->capkeys : 64;
        rite_io__key *k = (rite_io__key *)realloc(j->keys, c * sizeof *k);
        if (!k) return rite_io__say(j->detail, j->ds, RITE_IO_ERR_OUT_OF_MEMORY, "%zu keys", c);
        j->keys = k;
        j->capkeys = c;
    }
    j->keys[j->nkeys].s = s;
    j->keys[j->nkeys].n = n;
    j->keys[j->nkeys].i = 0;
    j->nkeys++;
    return RITE_IO_OK;
}

/* Before each member of an object whose keys start at keys[base]: reads the key (*key, *n) and the
   colon. *key = NULL at the object's '}', where its keys are checked for duplicates and dropped. */
static rite_io_status rite_io__json_member(rite_io__json *j, size_t base, const char **key, size_t *n)
{
    rite_io_status st;
    *key = NULL;
    if (rite_io__json_eat(j, '}')) {
        st = j->nkeys > base ? rite_io__dups(j->keys + base, j->nkeys - base, "JSON header: key", j->detail, j->ds)
                             : RITE_IO_OK;   /* an empty object (keys may still be NULL) */
        j->nkeys = base;
        j->depth--;
        return st;
    }
    if (j->nkeys > base && !rite_io__json_eat(j, ','))
        return rite_io__json_fail(j, RITE_IO_ERR_JSON, "expected , or }");
    rite_io__json_ws(j);
    if (j->p >= j->end || *j->p != '"') return rite_io__json_fail(j, RITE_IO_ERR_JSON, "expected a key");
    st = rite_io__json_string(j, key, n);
    if (st == RITE_IO_OK) st = rite_io__json_push(j, *key, *n);
    if (st == RITE_IO_OK && !rite_io__json_eat(j, ':')) st = rite_io__json_fail(j, RITE_IO_ERR_JSON, "expected :");
    return st;
}

/* true, false or null at the cursor */
static rite_io_status rite_io__json_literal(rite_io__json *j)
{
    static const char *const lit[3] = {"true", "false", "null"};
    int k;
    for (k = 0; k < 3; k++) {
        size_t n = strlen(lit[k]);
        if ((size_t)(j->end - j->p) >= n && !memcmp(j->p, lit[k], n)) {
            j->p += n;
            return RITE_IO_OK;
        }
    }
    return rite_io__json_fail(j, RITE_IO_ERR_JSON, "an unexpected character");
}

/* Any value at the cursor, checked and skipped. */
static rite_io_status rite_io__json_value(rite_io__json *j)
{
    rite_io_status st = RITE_IO_OK;
    const char *s;
    size_t n, count = 0, base = j->nkeys;
    uint64_t v;
    int kind, more;
    rite_io__json_ws(j);
    if (j->p >= j->end) return rite_io__json_fail(j, RITE_IO_ERR_JSON, "expected a value");
    if (*j->p == '"') return rite_io__json_string(j, &s, &n);
    if (rite_io__json_at_number(j)) return rite_io__json_number(j, &v, &kind);
    if (*j->p == '[') {
        st = rite_io__json_open(j, '[', "expected [");
        while (st == RITE_IO_OK && (st = rite_io__json_next(j, &count, &more)) == RITE_IO_OK && more)
            st = rite_io__json_value(j);
        return st;
    }
    if (*j->p == '{') {
        st = rite_io__json_open(j, '{', "expected {");
        while (st == RITE_IO_OK && (st = rite_io__json_member(j, base, &s, &n)) == RITE_IO_OK && s)
            st = rite_io__json_value(j);
        return st;
    }
    return rite_io__json_literal(j);
}

/* ---- @st_in --------------------------------------------------------------------- */

/* One tensor of a safetensors header, as parsed; rite_io__st_check fills type and bytes. */
typedef struct rite_io__st_tensor {
    const char *name;      /* decoded, in the arena */
    size_t name_n;
    const char *dtype;     /* NULL: missing */
    size_t dtype_n;
    int has_shape, has_offsets;
    int shape_overflow;    /* a dimension or the element count does not fit a size_t */
    int offset_overflow;   /* an offset does not fit 64 bits */
    size_t ndim;
    uint64_t dim[2];       /* the first two dimensions */
    size_t count;          /* elements */
    uint64_t begin, end;   /* data_offsets */
    int type;              /* RITE_IO__F32, ... */
    size_t bytes;
} rite_io__st_tensor;

typedef struct rite_io__st {
    rite_io__json j;
    rite_io__st_tensor *t;
    size_t nt, capt;
    rite_io__key *idx;          /* tensor names, sorted, for lookups */
    const unsigned char *data;  /* the data section */
    size_t data_size;
    char *key;                  /* room for the longest name looked up */
} rite_io__st;

/* "dtype": a string */
static rite_io_status rite_io__st_dtype(rite_io__json *j, rite_io__st_tensor *t)
{
    rite_io__json_ws(j);
    if (j->p >= j->end || *j->p != '"') return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a dtype that is not a string");
    return rite_io__json_string(j, &t->dtype, &t->dtype_n);
}

/* "shape": non-negative integers; their product as a size_t (a zero dimension makes it 0) */
static rite_io_status rite_io__st_shape(rite_io__json *j, rite_io__st_tensor *t)
{
    rite_io_status st = rite_io__json_open(j, '[', "a shape that is not an array");
    size_t count = 0, prod = 1;
    int more, kind, zero = 0, over = 0;
    uint64_t v;
    while (st == RITE_IO_OK && (st = rite_io__json_next(j, &count, &more)) == RITE_IO_OK && more) {
        if (!rite_io__json_at_number(j) || (st = rite_io__json_number(j, &v, &kind)) != RITE_IO_OK || kind == 2)
            return st != RITE_IO_OK ? st : rite_io__json_fail(j, RITE_IO_ERR_JSON, "a shape entry not an integer >= 0");
        if (count <= 2) t->dim[count - 1] = v;
        if (kind == 1 || v > SIZE_MAX) over = 1;
        else if (v == 0) zero = 1;
        else if (!rite_io__mul(prod, (size_t)v, &prod)) over = 1;
    }
    t->has_shape = 1;
    t->ndim = count;
    t->count = zero ? 0 : prod;
    t->shape_overflow = over && !zero;
    return st;
}

/* "data_offsets": two non-negative integers */
static rite_io_status rite_io__st_offsets(rite_io__json *j, rite_io__st_tensor *t)
{
    static const char *const bad = "data_offsets that are not two non-negative integers";
    rite_io_status st = rite_io__json_open(j, '[', bad);
    size_t count = 0;
    int more, kind;
    uint64_t v[2] = {0, 0}, x;
    while (st == RITE_IO_OK && (st = rite_io__json_next(j, &count, &more)) == RITE_IO_OK && more) {
        if (count > 2 || !rite_io__json_at_number(j) || (st = rite_io__json_number(j, &x, &kind)) != RITE_IO_OK ||
            kind == 2)
            return st != RITE_IO_OK ? st : rite_io__json_fail(j, RITE_IO_ERR_JSON, bad);
        v[count - 1] = x;
        if (kind == 1) t->offset_overflow = 1;
    }
    if (st == RITE_IO_OK && count != 2) return rite_io__json_fail(j, RITE_IO_ERR_JSON, bad);
    t->begin = v[0];
    t->end = v[1];
    t->has_offsets = 1;
    return st;
}

/* A tensor's object: dtype, shape and data_offsets (other keys are skipped). */
static rite_io_status rite_io__st_tensor_parse(rite_io__json *j, rite_io__st_tensor *t)
{
    const char *k;
    size_t n, base = j->nkeys;
    rite_io_status st = rite_io__json_open(j, '{', "a tensor's entry that is not an object");
    while (st == RITE_IO_OK && (st = rite_io__json_member(j, base, &k, &n)) == RITE_IO_OK && k) {
        if (n == 5 && !memcmp(k, "dtype", 5)) st = rite_io__st_dtype(j, t);
        else if (n == 5 && !memcmp(k, "shape", 5)) st = rite_io__st_shape(j, t);
        else if (n == 12 && !memcmp(k, "data_offsets", 12)) st = rite_io__st_offsets(j, t);
        else st = rite_io__json_value(j);
    }
    return st;
}

/* __metadata__: an object of strings */
static rite_io_status rite_io__st_metadata(rite_io__json *j)
{
    const char *k, *s;
    size_t n, base = j->nkeys;
    rite_io_status st = rite_io__json_open(j, '{', "a __metadata__ that is not an object");
    while (st == RITE_IO_OK && (st = rite_io__json_member(j, base, &k, &n)) == RITE_IO_OK && k) {
        rite_io__json_ws(j);
        if (j->p >= j->end || *j->p != '"')
            return rite_io__json_fail(j, RITE_IO_ERR_JSON, "a __metadata__ value that is not a string");
        st = rite_io__json_string(j, &s, &n);
    }
    return st;
}

/* a new tensor named (k, n) */
static rite_io_status rite_io__st_add(rite_io__st *s, const char *k, size_t n)
{
    if (s->nt == s->capt) {
        size_t c = s->capt ? 2 * s->capt : 64;
        rite_io__st_tensor *t = (rite_io__st_tensor *)realloc(s->t, c * sizeof *t);
        if (!t) return rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_OUT_OF_MEMORY, "%zu tensors", c);
        s->t = t;
        s->capt = c;
    }
    memset(&s->t[s->nt], 0, sizeof s->t[s->nt]);
    s->t[s->nt].name = k;
    s->t[s->nt].name_n = n;
    s->nt++;
    return RITE_IO_OK;
}

/* The header: one object of tensors and __metadata__, then nothing but white space. */
static rite_io_status rite_io__st_parse(rite_io__st *s)
{
    rite_io__json *j = &s->j;
    const char *k;
    size_t n;
    rite_io_status st = rite_io__json_open(j, '{', "the header is not a JSON object");
    while (st == RITE_IO_OK && (st = rite_io__json_member(j, 0, &k, &n)) == RITE_IO_OK && k) {
        if (n == 12 && !memcmp(k, "__metadata__", 12)) st = rite_io__st_metadata(j);
        else if ((st = rite_io__st_add(s, k, n)) == RITE_IO_OK) st = rite_io__st_tensor_parse(j, &s->t[s->nt - 1]);
    }
    rite_io__json_ws(j);
    if (st == RITE_IO_OK && j->p != j->end)
        st = rite_io__json_fail(j, RITE_IO_ERR_JSON, "text after the header's object");
    return st;
}

/* The element type of a dtype: F32, F16, BF16 and F64 are read; anything else is none. */
static int rite_io__st_type(const char *s, size_t n)
{
    int t;
    for (t = RITE_IO__F32; t <= RITE_IO__F64; t++)
        if (strlen(rite_io__type_names[t]) == n && !memcmp(rite_io__type_names[t], s, n)) return t;
    return RITE_IO__NONE;
}

/* One tensor's entry: its keys, dtype, byte size and data_offsets within the data section. */
static rite_io_status rite_io__st_check_one(rite_io__st *s, rite_io__st_tensor *t)
{
    char *d = s->j.detail;
    size_t ds = s->j.ds;
    const char *miss = !t->dtype ? "dtype" : !t->has_shape ? "shape" : !t->has_offsets ? "data_offsets" : NULL;
    unsigned long long b = t->begin, e = t->end;
    if (miss)
        return rite_io__say(d, ds, RITE_IO_ERR_MISSING_KEY, "tensor \"%.*s\" has no %s",
                            RITE_IO__SPAN(t->name, t->name_n), miss);
    t->type = rite_io__st_type(t->dtype, t->dtype_n);
    if (!t->type)
        return rite_io__say(d, ds, RITE_IO_ERR_DTYPE,
                            "tensor \"%.*s\": dtype \"%.*s\" (F32, F16, BF16 and F64 are read)",
                            RITE_IO__SPAN(t->name, t->name_n), RITE_IO__SPAN(t->dtype, t->dtype_n));
    if (t->shape_overflow || !rite_io__mul(t->count, rite_io__esize(t->type), &t->bytes))
        return rite_io__say(d, ds, RITE_IO_ERR_SHAPE_OVERFLOW, "tensor \"%.*s\": its shape's size overflows",
                            RITE_IO__SPAN(t->name, t->name_n));
    if (t->offset_overflow || e < b || e - b != t->bytes || e > s->data_size)
        return rite_io__say(d, ds, RITE_IO_ERR_OFFSETS,
                            "tensor \"%.*s\": data_offsets [%llu, %llu] for %zu bytes, in a data section of %zu",
                            RITE_IO__SPAN(t->name, t->name_n), b, e, t->bytes, s->data_size);
    return RITE_IO_OK;
}

/* A byte range of a tensor's data, for the overlap check. */
typedef struct rite_io__range {
    uint64_t b, e;
    size_t i;
} rite_io__range;

static int rite_io__range_cmp(const void *a, const void *b)
{
    const rite_io__range *x = (const rite_io__range *)a, *y = (const rite_io__range *)b;
    if (x->b != y->b) return x->b < y->b ? -1 : 1;
    return (x->e > y->e) - (x->e < y->e);
}

/* 1 when two of the n ranges (empty ones aside) overlap: *i and *k get the tensors (sorts them) */
static int rite_io__overlap(rite_io__range *r, size_t n, size_t *i, size_t *k)
{
    size_t a, who = 0;
    uint64_t reach = 0;
    int any = 0;
    if (n > 1) qsort(r, n, sizeof *r, rite_io__range_cmp);
    for (a = 0; a < n; a++) {
        if (r[a].b == r[a].e) continue;
        if (any && r[a].b < reach) {
            *i = who;
            *k = r[a].i;
            return 1;
        }
        if (!any || r[a].e > reach) reach = r[a].e, who = r[a].i;
        any = 1;
    }
    return 0;
}

/* Every tensor of the file: entries, then no two overlapping; and the sorted name index. */
static rite_io_status rite_io__st_check(rite_io__st *s)
{
    rite_io__range *r;
    size_t i, a, b, cap = s->nt ? s->nt : 1;
    rite_io_status st = RITE_IO_OK;
    for (i = 0; i < s->nt && st == RITE_IO_OK; i++) st = rite_io__st_check_one(s, &s->t[i]);
    if (st != RITE_IO_OK) return st;
    r = (rite_io__range *)malloc(cap * sizeof *r);
    s->idx = (rite_io__key *)malloc(cap * sizeof *s->idx);
    if (!r || !s->idx) st = rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_OUT_OF_MEMORY, "%zu tensors", s->nt);
    for (i = 0; i < s->nt && st == RITE_IO_OK; i++) {
        r[i].b = s->t[i].begin;
        r[i].e = s->t[i].end;
        r[i].i = s->idx[i].i = i;
        s->idx[i].s = s->t[i].name;
        s->idx[i].n = s->t[i].name_n;
    }
    if (st == RITE_IO_OK && rite_io__overlap(r, s->nt, &a, &b))
        st = rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_OFFSETS,
                          "the data of tensors \"%.*s\" and \"%.*s\" overlap",
                          RITE_IO__SPAN(s->t[a].name, s->t[a].name_n), RITE_IO__SPAN(s->t[b].name, s->t[b].name_n));
    if (st == RITE_IO_OK && s->nt > 1) qsort(s->idx, s->nt, sizeof *s->idx, rite_io__key_cmp);
    free(r);
    return st;
}

/* The tensor named pre + name + post in the sorted index idx[0, n), or NULL (key: room for the name) */
static const rite_io__key *rite_io__find(const rite_io__key *idx, size_t n, char *key, const char *pre,
                                         const char *name, const char *post)
{
    rite_io__key q;
    size_t a = strlen(pre), b = strlen(name), c = strlen(post);
    memcpy(key, pre, a);
    memcpy(key + a, name, b);
    memcpy(key + a + b, post, c + 1);
    q.s = key;
    q.n = a + b + c;
    q.i = 0;
    return n ? (const rite_io__key *)bsearch(&q, idx, n, sizeof *idx, rite_io__key_cmp) : NULL;
}

/* room for the longest name the n modules look up, with pre and post around it */
static char *rite_io__key_room(const rite_io_module *mods, int n)
{
    size_t most = 0, k;
    int i;
    for (i = 0; i < n; i++)
        if ((k = strlen(mods[i].name)) > most) most = k;
    return (char *)malloc(most + 40);
}

/* What both readers do first: clear the detail, check the arguments, and make the room for the
   names the modules look up (*key, which the caller frees). */
static rite_io_status rite_io__read_begin(const void *src, const rite_io_module *mods, int n, char **key,
                                         char *detail, size_t detail_size)
{
    rite_io_status st;
    rite_io__clear(detail, detail_size);
    if (!src) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "src is NULL");
    st = rite_io__check_modules(mods, n, RITE_IO__NEED_DATA, 0, detail, detail_size);
    if (st != RITE_IO_OK) return st;
    *key = rite_io__key_room(mods, n);
    return *key ? RITE_IO_OK : rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "a name");
}

/* Module m's two tensors: checks them (fill 0: present, shaped r x in and out x r, finite), or reads
   them into A and B (fill 1, after every module passed the checks). */
static rite_io_status rite_io__st_module(rite_io__st *s, rite_io_module *m, int fill)
{
    static const char *const post[2] = {".lora_A.weight", ".lora_B.weight"};
    int side;
    for (side = 0; side < 2; side++) {
        uint64_t rows = (uint64_t)(side ? m->out_features : m->r), cols = (uint64_t)(side ? m->r : m->in_features);
        const rite_io__key *k = rite_io__find(s->idx, s->nt, s->key, "base_model.model.", m->name, post[side]);
        const rite_io__st_tensor *t = k ? &s->t[k->i] : NULL;
        size_t bad;
        if (!t)
            return rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_MISSING_KEY, "no tensor %s in the file", s->key);
        if (fill) {
            rite_io__to_float(side ? m->B : m->A, s->data + t->begin, (size_t)(rows * cols), t->type);
            continue;
        }
        if (t->ndim != 2 || t->dim[0] != rows || t->dim[1] != cols) {
            char shape[64];
            if (t->ndim == 0) snprintf(shape, sizeof shape, "[]");
            else if (t->ndim == 1) snprintf(shape, sizeof shape, "[%llu]", (unsigned long long)t->dim[0]);
            else snprintf(shape, sizeof shape, "[%llu, %llu%s]", (unsigned long long)t->dim[0],
                          (unsigned long long)t->dim[1], t->ndim > 2 ? ", ..." : "");
            return rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_SHAPE_MISMATCH,
                                "tensor %s: shape %s, the module's is [%llu, %llu]", s->key, shape,
                                (unsigned long long)rows, (unsigned long long)cols);
        }
        bad = rite_io__first_bad(s->data + t->begin, t->count, t->type);
        if (bad < t->count)
            return rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_NOT_FINITE,
                                "tensor %s: element %zu is NaN or Inf (or too large for a float)", s->key, bad);
    }
    return RITE_IO_OK;
}

/* The 8-byte header length, the header, and the data section's place. */
static rite_io_status rite_io__st_open(rite_io__st *s, const unsigned char *src, size_t size)
{
    uint64_t hlen;
    if (size < 8)
        return rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_TRUNCATED, "%zu bytes, shorter than the header length",
                            size);
    hlen = rite_io__get_le(src, 8);
    if (hlen > size - 8 || hlen > RITE_IO__MAX_HEADER)
        return rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_HEADER_SIZE,
                            "a header of %llu bytes, in a file of %zu (at most %zu read)", (unsigned long long)hlen,
                            size, RITE_IO__MAX_HEADER);
    s->j.start = s->j.p = src + 8;
    s->j.end = src + 8 + hlen;
    s->data = s->j.end;
    s->data_size = size - 8 - (size_t)hlen;
    s->j.arena = (char *)malloc((size_t)hlen + 1);
    if (!s->j.arena) return rite_io__say(s->j.detail, s->j.ds, RITE_IO_ERR_OUT_OF_MEMORY, "%llu bytes",
                                             (unsigned long long)hlen);
    return rite_io__st_parse(s);
}

LORA_RITE_IO_API rite_io_status rite_io_peft_safetensors_read(const void *src, size_t src_size, rite_io_module *mods,
                                                              int n, char *detail, size_t detail_size)
{
    rite_io__st s;
    rite_io_status st;
    int i;
    memset(&s, 0, sizeof s);
    s.j.detail = detail;
    s.j.ds = detail_size;
    st = rite_io__read_begin(src, mods, n, &s.key, detail, detail_size);
    if (st == RITE_IO_OK) st = rite_io__st_open(&s, (const unsigned char *)src, src_size);
    if (st == RITE_IO_OK) st = rite_io__st_check(&s);
    for (i = 0; i < n && st == RITE_IO_OK; i++) st = rite_io__st_module(&s, &mods[i], 0);
    for (i = 0; i < n && st == RITE_IO_OK; i++) rite_io__st_module(&s, &mods[i], 1);
    free(s.j.arena);
    free(s.j.keys);
    free(s.t);
    free(s.idx);
    free(s.key);
    return st;
}

/* ---- @gguf_out ------------------------------------------------------------------ */

/* GGUF's metadata value types, and ggml's tensor types, that this file uses */
#define RITE_IO__GGUF_U32 4u
#define RITE_IO__GGUF_F32 6u
#define RITE_IO__GGUF_STRING 8u
#define RITE_IO__GGUF_ARRAY 9u
#define RITE_IO__GGML_F32 0u
#define RITE_IO__GGML_F16 1u
#define RITE_IO__GGML_BF16 30u

static const char *const rite_io__gguf_post[2] = {".lora_a", ".lora_b"};

/* a GGUF string: u64 length, then the bytes */
static void rite_io__gguf_str(rite_io__out *o, const char *a, const char *b)
{
    rite_io__putle(o, strlen(a) + strlen(b), 8);
    rite_io__puts(o, a);
    rite_io__puts(o, b);
}

/* a key-value pair whose value is the string v */
static void rite_io__gguf_kv_str(rite_io__out *o, const char *key, const char *v)
{
    rite_io__gguf_str(o, key, "");
    rite_io__putle(o, RITE_IO__GGUF_STRING, 4);
    rite_io__gguf_str(o, v, "");
}

/* bytes padded to the alignment */
static size_t rite_io__gguf_pad(size_t bytes)
{
    return (bytes + RITE_IO__GGUF_ALIGN - 1) / RITE_IO__GGUF_ALIGN * RITE_IO__GGUF_ALIGN;
}

/* The header, the key-value pairs llama.cpp's adapter loader reads, and the tensor infos (lora_a
   ne = [in, r] and lora_b ne = [r, out] of every module, each at an aligned offset, packed in that
   order as llama.cpp's gguf reader wants), padded to the alignment. Returns its length. */
static size_t rite_io__gguf_header(rite_io__out *o, const rite_io_module *mods, int n, const rite_io_gguf *opt)
{
    float alpha = (float)opt->lora_alpha;
    uint32_t bits;
    size_t es = opt->dtype == RITE_IO_F16 ? 2 : 4, off = 0;
    int i, side;
    memcpy(&bits, &alpha, 4);
    rite_io__puts(o, "GGUF");
    rite_io__putle(o, 3, 4);
    rite_io__putle(o, 2 * (uint64_t)n, 8);   /* tensors */
    rite_io__putle(o, 5, 8);                 /* key-value pairs */
    rite_io__gguf_kv_str(o, "general.architecture", opt->architecture);
    rite_io__gguf_kv_str(o, "general.type", "adapter");
    rite_io__gguf_kv_str(o, "adapter.type", "lora");
    rite_io__gguf_str(o, "adapter.lora.alpha", "");
    rite_io__putle(o, RITE_IO__GGUF_F32, 4);
    rite_io__putle(o, bits, 4);
    rite_io__gguf_str(o, "general.alignment", "");
    rite_io__putle(o, RITE_IO__GGUF_U32, 4);
    rite_io__putle(o, RITE_IO__GGUF_ALIGN, 4);
    for (i = 0; i < n; i++)
        for (side = 0; side < 2; side++) {
            rite_io__gguf_str(o, mods[i].name, rite_io__gguf_post[side]);
            rite_io__putle(o, 2, 4);
            rite_io__putle(o, (uint64_t)(side ? mods[i].r : mods[i].in_features), 8);
            rite_io__putle(o, (uint64_t)(side ? mods[i].out_features : mods[i].r), 8);
            rite_io__putle(o, es == 2 ? RITE_IO__GGML_F16 : RITE_IO__GGML_F32, 4);
            rite_io__putle(o, off, 8);
            off += rite_io__gguf_pad(rite_io__count(&mods[i], side) * es);
        }
    while (o->n % RITE_IO__GGUF_ALIGN) rite_io__put(o, "", 1);
    return o->n;
}

/* Clears the detail, checks a GGUF writer's arguments (not the values) and plans the file: header
   length *hlen (hlen may be NULL), size *total; neither is written unless the plan is RITE_IO_OK. */
static rite_io_status rite_io__gguf_plan(const rite_io_module *mods, int n, const rite_io_gguf *opt, size_t *hlen,
                                         size_t *total, char *detail, size_t ds)
{
    rite_io__out o;
    rite_io_status st;
    size_t data = 0, b, es, h, t;
    int i, side;
    rite_io__clear(detail, ds);
    if (!opt) return rite_io__say(detail, ds, RITE_IO_ERR_NULL_ARGUMENT, "opt is NULL");
    if (opt->dtype != RITE_IO_F32 && opt->dtype != RITE_IO_F16)
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "dtype %d (F32 or F16)", (int)opt->dtype);
    if (!(opt->lora_alpha >= -FLT_MAX && opt->lora_alpha <= FLT_MAX))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "lora_alpha %g is not a finite float", opt->lora_alpha);
    if (!opt->architecture || !opt->architecture[0] ||
        !rite_io__utf8_ok((const unsigned char *)opt->architecture, strlen(opt->architecture)))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT,
                            "architecture (llama.cpp needs the base model's, a UTF-8 string) is %s",
                            opt->architecture ? "empty or not UTF-8" : "NULL");
    st = rite_io__check_modules(mods, n, RITE_IO__NEED_DATA | RITE_IO__WRITER,
                                RITE_IO__GGUF_NAME - 1 - strlen(rite_io__gguf_post[0]), detail, ds);
    if (st != RITE_IO_OK) return st;
    es = opt->dtype == RITE_IO_F16 ? 2 : 4;
    for (i = 0; i < n; i++)
        for (side = 0; side < 2; side++)
            if (!rite_io__mul(rite_io__count(&mods[i], side), es, &b) || b > SIZE_MAX - RITE_IO__GGUF_ALIGN ||
                !rite_io__add(&data, rite_io__gguf_pad(b)))
                return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "the tensors' bytes overflow a size_t");
    rite_io__out_init(&o, NULL, 0);
    h = t = rite_io__gguf_header(&o, mods, n, opt);
    if (!rite_io__add(&t, data))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "the file's bytes overflow a size_t");
    if (hlen) *hlen = h;
    *total = t;
    return RITE_IO_OK;
}

LORA_RITE_IO_API rite_io_status rite_io_gguf_size(const rite_io_module *mods, int n, const rite_io_gguf *opt,
                                                  size_t *size)
{
    if (!size) return RITE_IO_ERR_NULL_ARGUMENT;
    return rite_io__gguf_plan(mods, n, opt, NULL, size, NULL, 0);
}

LORA_RITE_IO_API rite_io_status rite_io_gguf_write(const rite_io_module *mods, int n, const rite_io_gguf *opt,
                                                   void *dst, size_t dst_size, char *detail, size_t detail_size)
{
    rite_io__out o;
    unsigned char *q = (unsigned char *)dst, *e;
    size_t hlen = 0, total = 0;
    int i, side, type;
    rite_io_status st = rite_io__gguf_plan(mods, n, opt, &hlen, &total, detail, detail_size);
    if (st == RITE_IO_OK)
        st = rite_io__write_checks(mods, n, opt->dtype, dst, dst_size, total, &type, detail, detail_size);
    if (st != RITE_IO_OK) return st;
    rite_io__out_init(&o, q, hlen);
    rite_io__gguf_header(&o, mods, n, opt);
    q += hlen;
    for (i = 0; i < n; i++)
        for (side = 0; side < 2; side++) {
            e = rite_io__put_floats(q, side ? mods[i].B : mods[i].A, rite_io__count(&mods[i], side), type);
            q += rite_io__gguf_pad((size_t)(e - q));
            memset(e, 0, (size_t)(q - e));
        }
    return RITE_IO_OK;
}

/* ---- @gguf_in ------------------------------------------------------------------- */

/* One tensor info of a GGUF file. */
typedef struct rite_io__gguf_tensor {
    const char *name;      /* in the file, not terminated */
    size_t name_n;
    uint32_t n_dims;
    uint64_t ne[4];        /* 1 past n_dims, as ggml has it */
    int type;              /* RITE_IO__F32, ... */
    uint64_t offset;       /* from the start of the data section */
    size_t count, bytes;
} rite_io__gguf_tensor;

/* the keys the reader interprets, in the order of rite_io__gguf_known */
enum { RITE_IO__K_ALIGN, RITE_IO__K_GTYPE, RITE_IO__K_ATYPE, RITE_IO__K_ARCH, RITE_IO__K_ALPHA, RITE_IO__K_N };
static const char *const rite_io__gguf_known[RITE_IO__K_N] = {"general.alignment", "general.type", "adapter.type",
                                                             "general.architecture", "adapter.lora.alpha"};

typedef struct rite_io__gg {
    const unsigned char *p;     /* the file */
    size_t n, at;               /* its size, the read position */
    const char *ctx;            /* what is being read, for messages */
    size_t ctx_n;
    uint64_t n_kv, n_t;
    rite_io__key *keys;         /* the keys of the key-value pairs */
    rite_io__gguf_tensor *t;
    rite_io__key *idx;          /* tensor names, sorted, for duplicates and lookups */
    uint32_t kt[RITE_IO__K_N];  /* value type of each known key (RITE_IO__ABSENT), */
    size_t kat[RITE_IO__K_N];   /* and where its value starts */
    uint32_t align;
    size_t data;                /* where the data section starts */
    char *key;                  /* room for the longest name looked up */
    char *detail;
    size_t ds;
} rite_io__gg;

/* `bytes` bytes at the read position as a little-endian integer */
static rite_io_status rite_io__gg_int(rite_io__gg *g, uint64_t *v, int bytes)
{
    if (g->n - g->at < (size_t)bytes)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_TRUNCATED, "the file ends at byte %zu, in %.*s", g->n,
                            RITE_IO__SPAN(g->ctx, g->ctx_n));
    *v = rite_io__get_le(g->p + g->at, bytes);
    g->at += (size_t)bytes;
    return RITE_IO_OK;
}

static rite_io_status rite_io__gg_u32(rite_io__gg *g, uint32_t *v)
{
    uint64_t x = 0;
    rite_io_status st = rite_io__gg_int(g, &x, 4);
    *v = (uint32_t)x;
    return st;
}

/* a string: u64 length (at most the bytes left), then its bytes (*s, *n) */
static rite_io_status rite_io__gg_str(rite_io__gg *g, const char **s, size_t *n)
{
    uint64_t len = 0;
    rite_io_status st = rite_io__gg_int(g, &len, 8);
    if (st != RITE_IO_OK) return st;
    if (len > g->n - g->at)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_STRING,
                            "a string of %llu bytes at byte %zu, %zu bytes before the end, in %.*s",
                            (unsigned long long)len, g->at - 8, g->n - g->at, RITE_IO__SPAN(g->ctx, g->ctx_n));
    *s = (const char *)g->p + g->at;
    *n = (size_t)len;
    g->at += (size_t)len;
    return RITE_IO_OK;
}

/* bytes of one value of type t; 0 for strings, arrays and unknown types */
static size_t rite_io__gguf_size(uint32_t t)
{
    static const unsigned char size[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? size[t] : 0;
}

static rite_io_status rite_io__gguf_array(rite_io__gg *g, int depth);

/* one value of type t, checked and skipped */
static rite_io_status rite_io__gguf_value(rite_io__gg *g, uint32_t t, int depth)
{
    const char *s;
    size_t n;
    uint64_t v;
    if (t > 12)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_VALUE_TYPE, "value type %u at byte %zu, in %.*s", t,
                            g->at, RITE_IO__SPAN(g->ctx, g->ctx_n));
    if (t == RITE_IO__GGUF_STRING) return rite_io__gg_str(g, &s, &n);
    if (t == RITE_IO__GGUF_ARRAY) return rite_io__gguf_array(g, depth + 1);
    return rite_io__gg_int(g, &v, (int)rite_io__gguf_size(t));
}

/* An array: element type, u64 count (no more than the bytes left could hold), elements. Arrays of
   arrays nest at most RITE_IO__MAX_DEPTH deep. */
static rite_io_status rite_io__gguf_array(rite_io__gg *g, int depth)
{
    uint32_t et = 0;
    uint64_t count = 0, i;
    size_t least, at = g->at;
    rite_io_status st;
    if (depth > RITE_IO__MAX_DEPTH)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_ARRAY, "arrays nested more than %d deep at byte %zu",
                            RITE_IO__MAX_DEPTH, at);
    st = rite_io__gg_u32(g, &et);
    if (st == RITE_IO_OK && et > 12)
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_VALUE_TYPE,
                          "an array of value type %u at byte %zu, in %.*s", et, at, RITE_IO__SPAN(g->ctx, g->ctx_n));
    if (st == RITE_IO_OK) st = rite_io__gg_int(g, &count, 8);
    if (st != RITE_IO_OK) return st;
    least = et == RITE_IO__GGUF_STRING ? 8 : et == RITE_IO__GGUF_ARRAY ? 12 : rite_io__gguf_size(et);
    if (count > (g->n - g->at) / least)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_ARRAY,
                            "an array of %llu elements at byte %zu, %zu bytes before the end, in %.*s",
                            (unsigned long long)count, at, g->n - g->at, RITE_IO__SPAN(g->ctx, g->ctx_n));
    if (et != RITE_IO__GGUF_STRING && et != RITE_IO__GGUF_ARRAY) {
        g->at += (size_t)count * least;
        return RITE_IO_OK;
    }
    for (i = 0; i < count && st == RITE_IO_OK; i++) st = rite_io__gguf_value(g, et, depth);
    return st;
}

/* magic, version and the two counts (no more than the bytes left could hold) */
static rite_io_status rite_io__gguf_head(rite_io__gg *g)
{
    uint32_t version;
    rite_io_status st;
    size_t left;
    if (memcmp(g->p, "GGUF", g->n < 4 ? g->n : 4))
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_MAGIC, "the file does not start with GGUF");
    if (g->n < 4) return rite_io__say(g->detail, g->ds, RITE_IO_ERR_TRUNCATED, "a file of %zu bytes", g->n);
    g->at = 4;
    g->ctx = "the header";
    g->ctx_n = strlen(g->ctx);
    st = rite_io__gg_u32(g, &version);
    if (st == RITE_IO_OK && version != 2 && version != 3)
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_VERSION, "version %u (2 and 3 are read)", version);
    if (st == RITE_IO_OK) st = rite_io__gg_int(g, &g->n_t, 8);
    if (st == RITE_IO_OK) st = rite_io__gg_int(g, &g->n_kv, 8);
    if (st != RITE_IO_OK) return st;
    left = g->n - g->at;   /* a pair takes at least 13 bytes, a tensor info 32 */
    if (g->n_kv > left / 13 || g->n_t > left / 32 || g->n_kv * 13 + g->n_t * 32 > left)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_TRUNCATED,
                            "%llu key-value pairs and %llu tensors cannot fit in the file's %zu bytes",
                            (unsigned long long)g->n_kv, (unsigned long long)g->n_t, g->n);
    return RITE_IO_OK;
}

/* The key-value pairs: keys not empty and not twice; where the known keys' values are. */
static rite_io_status rite_io__gguf_kvs(rite_io__gg *g)
{
    uint64_t i;
    uint32_t type;
    int k;
    rite_io_status st = RITE_IO_OK;
    for (i = 0; i < g->n_kv && st == RITE_IO_OK; i++) {
        rite_io__key *key = &g->keys[i];
        g->ctx = "a key";
        g->ctx_n = 5;
        st = rite_io__gg_str(g, &key->s, &key->n);
        if (st == RITE_IO_OK && !key->n)
            st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_STRING, "key %llu is empty", (unsigned long long)i);
        if (st != RITE_IO_OK) break;
        g->ctx = key->s;
        g->ctx_n = key->n;
        st = rite_io__gg_u32(g, &type);
        for (k = 0; k < RITE_IO__K_N && st == RITE_IO_OK; k++)
            if (strlen(rite_io__gguf_known[k]) == key->n && !memcmp(rite_io__gguf_known[k], key->s, key->n)) {
                g->kt[k] = type;
                g->kat[k] = g->at;
            }
        if (st == RITE_IO_OK) st = rite_io__gguf_value(g, type, 0);
    }
    if (st == RITE_IO_OK) st = rite_io__dups(g->keys, (size_t)g->n_kv, "key", g->detail, g->ds);
    return st;
}

/* known key k is a string equal to want (else RITE_IO_ERR_NOT_ADAPTER) */
static rite_io_status rite_io__gguf_want(rite_io__gg *g, int k, const char *want)
{
    const char *key = rite_io__gguf_known[k];
    size_t n;
    if (g->kt[k] == RITE_IO__ABSENT)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_NOT_ADAPTER, "no %s (an adapter has %s = \"%s\")", key, key,
                            want);
    if (g->kt[k] != RITE_IO__GGUF_STRING)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_NOT_ADAPTER, "%s has value type %u, not string", key,
                            g->kt[k]);
    n = (size_t)rite_io__get_le(g->p + g->kat[k], 8);
    if (n != strlen(want) || memcmp(g->p + g->kat[k] + 8, want, n))
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_NOT_ADAPTER, "%s is \"%.*s\", not \"%s\"", key,
                            RITE_IO__SPAN(g->p + g->kat[k] + 8, n), want);
    return RITE_IO_OK;
}

/* general.alignment (a u32 power of two, 32 when absent), then what makes the file an adapter that
   llama.cpp loads: general.type "adapter" and adapter.type "lora", and if present a string
   general.architecture and an f32 adapter.lora.alpha (llama.cpp takes them as such). */
static rite_io_status rite_io__gguf_meta(rite_io__gg *g)
{
    rite_io_status st;
    g->align = RITE_IO__GGUF_ALIGN;
    if (g->kt[RITE_IO__K_ALIGN] != RITE_IO__ABSENT) {
        if (g->kt[RITE_IO__K_ALIGN] != RITE_IO__GGUF_U32)
            return rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_ALIGNMENT,
                                "general.alignment has value type %u, not u32", g->kt[RITE_IO__K_ALIGN]);
        g->align = (uint32_t)rite_io__get_le(g->p + g->kat[RITE_IO__K_ALIGN], 4);
        if (!g->align || (g->align & (g->align - 1)))
            return rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_ALIGNMENT,
                                "general.alignment %u is not a power of two", g->align);
    }
    st = rite_io__gguf_want(g, RITE_IO__K_GTYPE, "adapter");
    if (st == RITE_IO_OK) st = rite_io__gguf_want(g, RITE_IO__K_ATYPE, "lora");
    if (st == RITE_IO_OK && g->kt[RITE_IO__K_ARCH] != RITE_IO__ABSENT && g->kt[RITE_IO__K_ARCH] != RITE_IO__GGUF_STRING)
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_NOT_ADAPTER,
                          "general.architecture has value type %u, not string", g->kt[RITE_IO__K_ARCH]);
    if (st == RITE_IO_OK && g->kt[RITE_IO__K_ALPHA] != RITE_IO__ABSENT && g->kt[RITE_IO__K_ALPHA] != RITE_IO__GGUF_F32)
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_NOT_ADAPTER, "adapter.lora.alpha has value type %u, not f32",
                          g->kt[RITE_IO__K_ALPHA]);
    return st;
}

/* n_dims (1 to 4) and ne: each below 2^63 (ggml's int64), their product a size_t */
static rite_io_status rite_io__gguf_shape(rite_io__gg *g, rite_io__gguf_tensor *t)
{
    uint32_t d;
    int zero = 0, over = 0;
    size_t count = 1;
    rite_io_status st = rite_io__gg_u32(g, &t->n_dims);
    if (st == RITE_IO_OK && (t->n_dims < 1 || t->n_dims > 4))
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_SHAPE_OVERFLOW, "tensor %.*s: %u dimensions (1 to 4 are read)",
                          RITE_IO__SPAN(t->name, t->name_n), t->n_dims);
    for (d = 0; d < 4 && st == RITE_IO_OK; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims) st = rite_io__gg_int(g, &t->ne[d], 8);
        if (t->ne[d] > (uint64_t)INT64_MAX || t->ne[d] > SIZE_MAX) over = 1;
        else if (!t->ne[d]) zero = 1;
        else if (!rite_io__mul(count, (size_t)t->ne[d], &count)) over = 1;
    }
    if (st == RITE_IO_OK && over && !zero)
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_SHAPE_OVERFLOW, "tensor %.*s: its element count overflows",
                          RITE_IO__SPAN(t->name, t->name_n));
    t->count = zero ? 0 : count;
    return st;
}

/* One tensor info: name, shape, type (F32, F16 or BF16), offset (a multiple of the alignment). */
static rite_io_status rite_io__gguf_info(rite_io__gg *g, rite_io__gguf_tensor *t)
{
    uint32_t type = 0;
    rite_io_status st;
    g->ctx = "a tensor name";
    g->ctx_n = strlen(g->ctx);
    st = rite_io__gg_str(g, &t->name, &t->name_n);
    if (st != RITE_IO_OK) return st;
    g->ctx = t->name;
    g->ctx_n = t->name_n;
    st = rite_io__gguf_shape(g, t);
    if (st == RITE_IO_OK) st = rite_io__gg_u32(g, &type);
    t->type = type == RITE_IO__GGML_F32 ? RITE_IO__F32 : type == RITE_IO__GGML_F16 ? RITE_IO__F16
              : type == RITE_IO__GGML_BF16 ? RITE_IO__BF16 : RITE_IO__NONE;
    if (st == RITE_IO_OK && !t->type)
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_DTYPE, "tensor %.*s: ggml type %u (F32, F16 and BF16 are read)",
                          RITE_IO__SPAN(t->name, t->name_n), type);
    if (st == RITE_IO_OK && !rite_io__mul(t->count, rite_io__esize(t->type), &t->bytes))
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_SHAPE_OVERFLOW, "tensor %.*s: its byte size overflows",
                          RITE_IO__SPAN(t->name, t->name_n));
    if (st == RITE_IO_OK) st = rite_io__gg_int(g, &t->offset, 8);
    if (st == RITE_IO_OK && t->offset % g->align)
        st = rite_io__say(g->detail, g->ds, RITE_IO_ERR_GGUF_ALIGNMENT,
                          "tensor %.*s: offset %llu is not a multiple of the alignment %u",
                          RITE_IO__SPAN(t->name, t->name_n), (unsigned long long)t->offset, g->align);
    return st;
}

/* The data section, after the infos padded to the alignment: every tensor inside the file with its
   padding to the alignment (as llama.cpp's gguf reader wants it when it loads the data, and every
   GGUF writer pads), and the tensors' data in the order of their infos, each after the end of the
   one before (ggml's reader wants each exactly there; a gap is allowed here). That order also
   means no two overlap. */
static rite_io_status rite_io__gguf_ranges(rite_io__gg *g)
{
    size_t i, room, pad = g->at % g->align ? g->align - g->at % g->align : 0;
    uint64_t reach = 0;   /* where the data so far ends */
    const rite_io__gguf_tensor *last = NULL;
    if (!g->n_t) return RITE_IO_OK;
    if (pad > g->n - g->at)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_TRUNCATED,
                            "the file ends (%zu bytes) before its data section", g->n);
    g->data = g->at + pad;
    room = g->n - g->data;
    for (i = 0; i < g->n_t; i++) {
        const rite_io__gguf_tensor *t = &g->t[i];
        size_t tail = t->bytes % g->align ? g->align - t->bytes % g->align : 0;
        if (t->offset > room || t->bytes > room - t->offset || tail > room - t->offset - t->bytes)
            return rite_io__say(g->detail, g->ds, RITE_IO_ERR_TRUNCATED,
                                "tensor %.*s: %zu bytes and %zu of padding at offset %llu of a data section of %zu",
                                RITE_IO__SPAN(t->name, t->name_n), t->bytes, tail, (unsigned long long)t->offset,
                                room);
    }
    for (i = 0; i < g->n_t; i++) {
        const rite_io__gguf_tensor *t = &g->t[i];
        if (!t->bytes) continue;
        if (t->offset < reach)
            return rite_io__say(g->detail, g->ds, RITE_IO_ERR_OFFSETS,
                                "tensor %.*s at offset %llu: before the end (%llu) of tensor %.*s, whose info comes "
                                "first", RITE_IO__SPAN(t->name, t->name_n), (unsigned long long)t->offset,
                                (unsigned long long)reach, RITE_IO__SPAN(last->name, last->name_n));
        reach = t->offset + t->bytes;
        last = t;
    }
    return RITE_IO_OK;
}

/* The tensor infos, their names not twice (sorted into idx), and the data section. */
static rite_io_status rite_io__gguf_infos(rite_io__gg *g)
{
    uint64_t i;
    rite_io_status st = RITE_IO_OK;
    for (i = 0; i < g->n_t && st == RITE_IO_OK; i++) {
        st = rite_io__gguf_info(g, &g->t[i]);
        if (st != RITE_IO_OK) break;
        g->idx[i].s = g->t[i].name;
        g->idx[i].n = g->t[i].name_n;
        g->idx[i].i = (size_t)i;
    }
    if (st == RITE_IO_OK) st = rite_io__dups(g->idx, (size_t)g->n_t, "tensor", g->detail, g->ds);
    if (st == RITE_IO_OK) st = rite_io__gguf_ranges(g);
    return st;
}

/* Module m's two tensors: checks them (fill 0: present, ne = [in, r] and [r, out], finite), or reads
   them into A and B (fill 1, after every module passed the checks). */
static rite_io_status rite_io__gguf_module(rite_io__gg *g, rite_io_module *m, int fill)
{
    int side;
    for (side = 0; side < 2; side++) {
        uint64_t ne0 = (uint64_t)(side ? m->r : m->in_features), ne1 = (uint64_t)(side ? m->out_features : m->r);
        const rite_io__key *k = rite_io__find(g->idx, (size_t)g->n_t, g->key, "", m->name, rite_io__gguf_post[side]);
        const rite_io__gguf_tensor *t = k ? &g->t[k->i] : NULL;
        const unsigned char *data = t ? g->p + g->data + t->offset : NULL;
        size_t bad;
        if (!t) return rite_io__say(g->detail, g->ds, RITE_IO_ERR_MISSING_KEY, "no tensor %s in the file", g->key);
        if (fill) {
            rite_io__to_float(side ? m->B : m->A, data, t->count, t->type);
            continue;
        }
        if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
            return rite_io__say(g->detail, g->ds, RITE_IO_ERR_SHAPE_MISMATCH,
                                "tensor %s: ne [%llu, %llu, %llu, %llu], the module's is [%llu, %llu]", g->key,
                                (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                                (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                                (unsigned long long)ne0, (unsigned long long)ne1);
        bad = rite_io__first_bad(data, t->count, t->type);
        if (bad < t->count)
            return rite_io__say(g->detail, g->ds, RITE_IO_ERR_NOT_FINITE, "tensor %s: element %zu is NaN or Inf",
                                g->key, bad);
    }
    return RITE_IO_OK;
}

/* the whole file checked: header, pairs, metadata, infos, data section */
static rite_io_status rite_io__gguf_parse(rite_io__gg *g)
{
    int k;
    size_t bk = 0, bt = 0, bi = 0;
    rite_io_status st = rite_io__gguf_head(g);
    if (st != RITE_IO_OK) return st;
    /* the counts are bounded by the file's size, their products by size_t */
    if (!rite_io__mul((size_t)g->n_kv + 1, sizeof *g->keys, &bk) || !rite_io__mul((size_t)g->n_t + 1, sizeof *g->t, &bt) ||
        !rite_io__mul((size_t)g->n_t + 1, sizeof *g->idx, &bi))
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_OUT_OF_MEMORY, "%llu pairs and %llu tensors",
                            (unsigned long long)g->n_kv, (unsigned long long)g->n_t);
    g->keys = (rite_io__key *)malloc(bk);
    g->t = (rite_io__gguf_tensor *)malloc(bt);
    g->idx = (rite_io__key *)malloc(bi);
    if (!g->keys || !g->t || !g->idx)
        return rite_io__say(g->detail, g->ds, RITE_IO_ERR_OUT_OF_MEMORY, "%llu pairs and %llu tensors",
                            (unsigned long long)g->n_kv, (unsigned long long)g->n_t);
    for (k = 0; k < RITE_IO__K_N; k++) g->kt[k] = RITE_IO__ABSENT;
    st = rite_io__gguf_kvs(g);
    if (st == RITE_IO_OK) st = rite_io__gguf_meta(g);
    if (st == RITE_IO_OK) st = rite_io__gguf_infos(g);
    return st;
}

LORA_RITE_IO_API rite_io_status rite_io_gguf_read(const void *src, size_t src_size, rite_io_module *mods, int n,
                                                  char *detail, size_t detail_size)
{
    rite_io__gg g;
    rite_io_status st;
    int i;
    memset(&g, 0, sizeof g);
    g.p = (const unsigned char *)src;
    g.n = src_size;
    g.detail = detail;
    g.ds = detail_size;
    st = rite_io__read_begin(src, mods, n, &g.key, detail, detail_size);
    if (st == RITE_IO_OK) st = rite_io__gguf_parse(&g);
    for (i = 0; i < n && st == RITE_IO_OK; i++) st = rite_io__gguf_module(&g, &mods[i], 0);
    for (i = 0; i < n && st == RITE_IO_OK; i++) rite_io__gguf_module(&g, &mods[i], 1);
    free(g.keys);
    free(g.t);
    free(g.idx);
    free(g.key);
    return st;
}

/* ---- @files --------------------------------------------------------------------- */

/* the whole file at path into a malloc'd *buf of *size bytes (the caller frees it) */
static rite_io_status rite_io__read_file(const char *path, unsigned char **buf, size_t *size, char *detail, size_t ds)
{
    FILE *fp = fopen(path, "rb");
    unsigned char *b = NULL, *nb;
    size_t n = 0, cap = 0;
    *buf = NULL;
    *size = 0;
    if (!fp) return rite_io__say(detail, ds, RITE_IO_ERR_IO, "could not open %s", path);
    for (;;) {
        if (n == cap) {   /* grow by doubling: no ftell, whose long is 32 bits on some systems */
            cap = cap ? (cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * cap) : 1 << 16;
            nb = n == cap ? NULL : (unsigned char *)realloc(b, cap);
            if (!nb) {
                free(b);
                fclose(fp);
                return rite_io__say(detail, ds, RITE_IO_ERR_OUT_OF_MEMORY, "reading %s (%zu bytes so far)", path, n);
            }
            b = nb;
        }
        n += fread(b + n, 1, cap - n, fp);
        if (n < cap) break;
    }
    if (ferror(fp)) {
        free(b);
        fclose(fp);
        return rite_io__say(detail, ds, RITE_IO_ERR_IO, "could not read %s", path);
    }
    fclose(fp);
    *buf = b;
    *size = n;
    return RITE_IO_OK;
}

/* n bytes to the file at path (created or replaced) */
static rite_io_status rite_io__write_file(const char *path, const void *data, size_t n, char *detail, size_t ds)
{
    FILE *fp = fopen(path, "wb");
    int ok = fp && fwrite(data, 1, n, fp) == n;
    if (fp && fclose(fp) != 0) ok = 0;
    return ok ? RITE_IO_OK : rite_io__say(detail, ds, RITE_IO_ERR_IO, "could not write %s", path);
}

/* dir/name, malloc'd (NULL when out of memory); an empty dir is the current directory */
static char *rite_io__join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    int sep = a && dir[a - 1] != '/' && dir[a - 1] != '\\';
    char *p = (char *)malloc(a + (size_t)sep + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (sep) p[a] = '/';
    memcpy(p + a + sep, name, b + 1);
    return p;
}

/* A reader of a whole file in memory: rite_io_peft_safetensors_read or rite_io_gguf_read. */
typedef rite_io_status (*rite_io__reader)(const void *src, size_t src_size, rite_io_module *mods, int n,
                                          char *detail, size_t detail_size);

/* The file at path read whole, then by reader into the n modules. */
static rite_io_status rite_io__load(const char *path, rite_io__reader reader, rite_io_module *mods, int n,
                                    char *detail, size_t detail_size)
{
    unsigned char *buf = NULL;
    size_t size = 0;
    rite_io_status st = rite_io__read_file(path, &buf, &size, detail, detail_size);
    if (st == RITE_IO_OK) st = reader(buf, size, mods, n, detail, detail_size);
    free(buf);
    return st;
}

LORA_RITE_IO_API rite_io_status rite_io_peft_save(const char *dir, const rite_io_module *mods, int n,
                                                  const rite_io_peft *opt, char *detail, size_t detail_size)
{
    size_t total = 0, clen = 0;
    unsigned char *buf = NULL;
    char *cfg = NULL, *path = NULL;
    rite_io_status st;
    rite_io__clear(detail, detail_size);
    if (!dir) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "dir is NULL");
    st = rite_io__peft_plan(mods, n, opt, NULL, &total, detail, detail_size);
    if (st == RITE_IO_OK) st = rite_io__config_check(mods, n, opt, detail, detail_size);
    if (st == RITE_IO_OK) st = rite_io_peft_config_write(mods, n, opt, NULL, 0, &clen);
    if (st != RITE_IO_OK) return st;
    buf = (unsigned char *)malloc(total);
    cfg = (char *)malloc(clen);
    if (!buf || !cfg) st = rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "%zu bytes", total + clen);
    if (st == RITE_IO_OK) st = rite_io_peft_safetensors_write(mods, n, opt, buf, total, detail, detail_size);
    if (st == RITE_IO_OK) st = rite_io_peft_config_write(mods, n, opt, cfg, clen, &clen);
    if (st == RITE_IO_OK && !(path = rite_io__join(dir, "adapter_model.safetensors")))
        st = rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "a path");
    if (st == RITE_IO_OK) st = rite_io__write_file(path, buf, total, detail, detail_size);
    free(path);
    path = NULL;
    if (st == RITE_IO_OK && !(path = rite_io__join(dir, "adapter_config.json")))
        st = rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "a path");
    if (st == RITE_IO_OK) st = rite_io__write_file(path, cfg, clen - 1, detail, detail_size);
    free(path);
    free(cfg);
    free(buf);
    return st;
}

LORA_RITE_IO_API rite_io_status rite_io_peft_load(const char *dir, rite_io_module *mods, int n, char *detail,
                                                  size_t detail_size)
{
    char *path;
    rite_io_status st;
    rite_io__clear(detail, detail_size);
    if (!dir) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "dir is NULL");
    path = rite_io__join(dir, "adapter_model.safetensors");
    if (!path) return rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "a path");
    st = rite_io__load(path, rite_io_peft_safetensors_read, mods, n, detail, detail_size);
    free(path);
    return st;
}

LORA_RITE_IO_API rite_io_status rite_io_gguf_save(const char *path, const rite_io_module *mods, int n,
                                                  const rite_io_gguf *opt, char *detail, size_t detail_size)
{
    size_t total = 0;
    unsigned char *buf;
    rite_io_status st;
    rite_io__clear(detail, detail_size);
    if (!path) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "path is NULL");
    st = rite_io__gguf_plan(mods, n, opt, NULL, &total, detail, detail_size);
    if (st != RITE_IO_OK) return st;
    buf = (unsigned char *)malloc(total);
    if (!buf) return rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "%zu bytes", total);
    st = rite_io_gguf_write(mods, n, opt, buf, total, detail, detail_size);
    if (st == RITE_IO_OK) st = rite_io__write_file(path, buf, total, detail, detail_size);
    free(buf);
    return st;
}

LORA_RITE_IO_API rite_io_status rite_io_gguf_load(const char *path, rite_io_module *mods, int n, char *detail,
                                                  size_t detail_size)
{
    rite_io__clear(detail, detail_size);
    if (!path) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "path is NULL");
    return rite_io__load(path, rite_io_gguf_read, mods, n, detail, detail_size);
}

LORA_RITE_IO_API const char *rite_io_status_string(rite_io_status status)
{
    switch (status) {
#define RITE_IO__STATUS_TEXT(code, text) \
    case code: return text;
        RITE_IO_STATUS_LIST(RITE_IO__STATUS_TEXT)
#undef RITE_IO__STATUS_TEXT
    case RITE_IO_STATUS_COUNT: break;
    }
    return "unknown status code";
}

/* ---- @state --------------------------------------------------------------------- */
#ifdef LORA_RITE_H

/* Where the numbers of a layer's rite_state_copy() are: its fields, in lora_rite.h's order
   (rite__state_fields), with nothing between them: the step count (long long), then per factor the
   first moment M (k x r), and AdamW's second moment (k x r), or LoRA-RITE's second moment (the
   upper triangle of an r x r matrix packed by columns, doubles), C (r x r doubles) or with
   keep_basis U_prev (k x r), and the escaped mass (a double); then LoRA-RITE's stale flag (int) unless
   keep_basis. k x r matrices are column-major, except AdamW's, which are stored as their factor
   is (row-major k x r for RITE_RANK_LAST). */
typedef struct rite_io__state_map {
    size_t M[2], V[2], rho[2];  /* byte offsets per factor: first moment, second moment, escaped mass */
    int row_major[2];           /* the k x r moments are row-major */
    size_t es;                  /* bytes of a number of the layer's precision */
    size_t total;               /* what rite_state_size() should say */
} rite_io__state_map;

static void rite_io__state_layout(const rite_desc *d, rite_io__state_map *s)
{
    size_t r = (size_t)d->r, off = sizeof(long long), kb;
    int side, adamw = d->optimizer == RITE_ADAMW;
    s->es = d->precision == RITE_FLOAT32 ? sizeof(float) : sizeof(double);
    for (side = 0; side < 2; side++) {
        kb = (size_t)(side ? d->n : d->m) * r * s->es;
        s->row_major[side] = adamw && (side ? d->layout_R : d->layout_L) == RITE_RANK_LAST;
        s->M[side] = off;
        off += kb;
        s->V[side] = off;
        s->rho[side] = 0;
        if (adamw) {
            off += kb;
            continue;
        }
        off += (r * r + r) / 2 * sizeof(double);
        off += d->keep_basis ? kb : r * r * sizeof(double);
        s->rho[side] = off;
        off += sizeof(double);
    }
    if (!adamw && !d->keep_basis) off += sizeof(int);
    s->total = off;
}

/* What the file holds of one layer: a tensor per entry (header comment of rite_io_state_size). */
typedef struct rite_io__stt {
    const char *suffix;
    int what;              /* 0 the first moment, 1 AdamW's second moment, 2 LoRA-RITE's, 3 the escaped mass */
    int side;              /* 0 lora_A (L), 1 lora_B (R) */
    size_t shape[2];
    int ndim;
} rite_io__stt;

static void rite_io__stt_set(rite_io__stt *t, const char *suffix, int what, int side, size_t rows, size_t cols)
{
    t->suffix = suffix;
    t->what = what;
    t->side = side;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->ndim = cols ? 2 : 1;
}

/* bytes of tensor t with numbers of es bytes */
static size_t rite_io__stt_bytes(const rite_io__stt *t, size_t es)
{
    return t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1) * es;
}

static int rite_io__state_plan(const rite_desc *d, rite_io__stt *t)
{
    size_t m = (size_t)d->m, n = (size_t)d->n, r = (size_t)d->r;
    rite_io__stt_set(&t[0], ".lora_A.exp_avg", 0, 0, r, m);
    rite_io__stt_set(&t[1], ".lora_B.exp_avg", 0, 1, n, r);
    if (d->optimizer == RITE_ADAMW) {
        rite_io__stt_set(&t[2], ".lora_A.exp_avg_sq", 1, 0, r, m);
        rite_io__stt_set(&t[3], ".lora_B.exp_avg_sq", 1, 1, n, r);
        return 4;
    }
    rite_io__stt_set(&t[2], ".lora_A.second_moment", 2, 0, r, r);
    rite_io__stt_set(&t[3], ".lora_B.second_moment", 2, 1, r, r);
    rite_io__stt_set(&t[4], ".lora_A.escaped_mass", 3, 0, 1, 0);
    rite_io__stt_set(&t[5], ".lora_B.escaped_mass", 3, 1, 1, 0);
    return 6;
}

/* a number of es bytes in the host's format at p, as a double */
static double rite_io__state_get(const unsigned char *p, size_t es)
{
    float f;
    double d;
    if (es == sizeof(float)) {
        memcpy(&f, p, sizeof f);
        return f;
    }
    memcpy(&d, p, sizeof d);
    return d;
}

/* v as a little-endian F32 (es 4; past the float range it becomes +-Inf) or F64; returns the end */
static unsigned char *rite_io__state_put(unsigned char *o, double v, size_t es)
{
    uint64_t b64;
    uint32_t b32;
    float f = v >= -FLT_MAX && v <= FLT_MAX ? (float)v : 0.0f;
    if (es == 8) {
        memcpy(&b64, &v, 8);
        rite_io__put_le(o, b64, 8);
        return o + 8;
    }
    memcpy(&b32, &f, 4);
    if (v > FLT_MAX) b32 = 0x7f800000u;          /* Inf, without converting out of range */
    else if (v < -FLT_MAX) b32 = 0xff800000u;
    else if (v != v) b32 = 0x7fc00000u;
    rite_io__put_le(o, b32, 4);
    return o + 4;
}

/* Tensor t of a layer from its state copy s, row-major: a k x r moment as lora_A's r x k or
   lora_B's k x r, the second moment unpacked to a full symmetric r x r, or the escaped mass. */
static unsigned char *rite_io__state_tensor(unsigned char *o, const unsigned char *s, const rite_io__state_map *map,
                                            const rite_desc *d, const rite_io__stt *t)
{
    size_t a, b, i, j, r = (size_t)d->r, k = (size_t)(t->side ? d->n : d->m), es = map->es;
    const unsigned char *src = s + (t->what == 0 ? map->M[t->side] : map->V[t->side]);
    size_t at;
    if (t->what == 3) return rite_io__state_put(o, rite_io__state_get(s + map->rho[t->side], 8), es);
    for (a = 0; a < t->shape[0]; a++)
        for (b = 0; b < t->shape[1]; b++) {
            if (t->what == 2) {   /* element (a, b) of the symmetric matrix, kept at (min, max) */
                i = a < b ? a : b;
                j = a < b ? b : a;
                o = rite_io__state_put(o, rite_io__state_get(src + (j * (j + 1) / 2 + i) * 8, 8), es);
                continue;
            }
            i = t->side ? a : b;   /* the k index */
            j = t->side ? b : a;   /* the r index */
            at = map->row_major[t->side] ? i * r + j : j * k + i;
            o = rite_io__state_put(o, rite_io__state_get(src + at * es, es), es);
        }
    return o;
}

/* The header: __metadata__ (format, optimizer, the model's step count and each layer's as
   "<name>.steps", all strings), then every layer's tensors. Returns its length. */
static size_t rite_io__state_header(rite_io__out *o, const rite_model *model, const char *const *names, int nl)
{
    rite_io__stt t[6];
    rite_desc d;
    size_t off = 0, es, bytes;
    int i, k, nt;
    d = rite_get_desc(rite_model_layer(model, 0));
    rite_io__puts(o, "{\"__metadata__\":{\"format\":\"pt\",\"optimizer\":\"");
    rite_io__puts(o, d.optimizer == RITE_ADAMW ? "adamw" : "lora_rite");
    rite_io__puts(o, "\",\"steps\":\"");
    rite_io__putu(o, (uint64_t)rite_model_step_count(model));
    for (i = 0; i < nl; i++) {
        rite_io__puts(o, "\",\"");
        rite_io__puts(o, names[i]);
        rite_io__puts(o, ".steps\":\"");
        rite_io__putu(o, (uint64_t)rite_step_count(rite_model_layer(model, i)));
    }
    rite_io__puts(o, "\"}");
    for (i = 0; i < nl; i++) {
        d = rite_get_desc(rite_model_layer(model, i));
        es = d.precision == RITE_FLOAT32 ? 4 : 8;
        nt = rite_io__state_plan(&d, t);
        for (k = 0; k < nt; k++) {
            bytes = rite_io__stt_bytes(&t[k], es);
            rite_io__st_entry(o, "", names[i], t[k].suffix, es == 4 ? RITE_IO__F32 : RITE_IO__F64, t[k].shape,
                              t[k].ndim, off, off + bytes);
            off += bytes;
        }
    }
    return rite_io__st_close(o);
}

/* one layer's arguments: the layer, its name (a module name, not one before it), its state's size */
static rite_io_status rite_io__state_layer(const rite_model *model, const char *const *names, int i, size_t *data,
                                           size_t *most, char *detail, size_t ds)
{
    const rite_layer *l = rite_model_layer(model, i);
    rite_io__state_map map;
    rite_desc d;
    rite_io_status st;
    int j;
    if (!l) return rite_io__say(detail, ds, RITE_IO_ERR_STATE, "the model has no layer %d", i);
    if (!names[i]) return rite_io__say(detail, ds, RITE_IO_ERR_NULL_ARGUMENT, "names[%d] is NULL", i);
    st = rite_io__check_name(names[i], RITE_IO__MAX_HEADER, i, detail, ds);
    if (st != RITE_IO_OK) return st;
    for (j = 0; j < i; j++)
        if (!strcmp(names[j], names[i]))
            return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "layers %d and %d are both named \"%s\"", j, i,
                                names[i]);
    d = rite_get_desc(l);
    rite_io__state_layout(&d, &map);
    if (map.total != rite_state_size(l))
        return rite_io__say(detail, ds, RITE_IO_ERR_STATE, "layer %d: a state of %zu bytes, not the %zu expected", i,
                            rite_state_size(l), map.total);
    if (map.total > *most) *most = map.total;
    /* the tensors take what the state's moments take, or less (no basis data, no step count) */
    if (!rite_io__add(data, map.total))
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "the state overflows a size_t");
    return RITE_IO_OK;
}

/* Checks the arguments and plans the file: header length *hlen, size *total, largest state *most. */
static rite_io_status rite_io__state_plan_all(const rite_model *model, const char *const *names, size_t *hlen,
                                              size_t *total, size_t *most, char *detail, size_t ds)
{
    rite_io__out o;
    rite_io_status st = RITE_IO_OK;
    size_t bound = 0;
    int i, nl;
    if (!model || !names)
        return rite_io__say(detail, ds, RITE_IO_ERR_NULL_ARGUMENT, "%s is NULL", !model ? "model" : "names");
    nl = rite_model_layer_count(model);
    if (nl < 1) return rite_io__say(detail, ds, RITE_IO_ERR_STATE, "the model has no layers");
    *most = 0;
    for (i = 0; i < nl && st == RITE_IO_OK; i++) st = rite_io__state_layer(model, names, i, &bound, most, detail, ds);
    if (st != RITE_IO_OK) return st;
    rite_io__out_init(&o, NULL, 0);
    *hlen = rite_io__state_header(&o, model, names, nl);
    if (*hlen > RITE_IO__MAX_HEADER || *hlen > SIZE_MAX - 8 - bound)
        return rite_io__say(detail, ds, RITE_IO_ERR_ARGUMENT, "a header of %zu bytes (readers take up to %zu)", *hlen,
                            RITE_IO__MAX_HEADER);
    *total = 8 + *hlen;
    for (i = 0; i < nl; i++) {   /* the exact data size */
        rite_desc d = rite_get_desc(rite_model_layer(model, i));
        rite_io__stt t[6];
        int k, nt = rite_io__state_plan(&d, t);
        for (k = 0; k < nt; k++)
            *total += rite_io__stt_bytes(&t[k], d.precision == RITE_FLOAT32 ? 4 : 8);
    }
    return RITE_IO_OK;
}

LORA_RITE_IO_API rite_io_status rite_io_state_size(const rite_model *model, const char *const *names, size_t *size)
{
    size_t hlen = 0, total = 0, most = 0;
    rite_io_status st;
    if (!size) return RITE_IO_ERR_NULL_ARGUMENT;
    st = rite_io__state_plan_all(model, names, &hlen, &total, &most, NULL, 0);
    if (st == RITE_IO_OK) *size = total;
    return st;
}

LORA_RITE_IO_API rite_io_status rite_io_state_write(const rite_model *model, const char *const *names, void *dst,
                                                    size_t dst_size, char *detail, size_t detail_size)
{
    rite_io__out o;
    rite_io__state_map map;
    rite_io__stt t[6];
    rite_desc d;
    unsigned char *q = (unsigned char *)dst, *s;
    size_t hlen = 0, total = 0, most = 0;
    int i, k, nt, nl;
    rite_io_status st;
    rite_io__clear(detail, detail_size);
    st = rite_io__state_plan_all(model, names, &hlen, &total, &most, detail, detail_size);
    if (st != RITE_IO_OK) return st;
    if (!dst) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "dst is NULL");
    if (dst_size < total)
        return rite_io__say(detail, detail_size, RITE_IO_ERR_BUFFER_SIZE, "dst_size %zu, the file takes %zu",
                            dst_size, total);
    s = (unsigned char *)malloc(most);
    if (!s) return rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "%zu bytes", most);
    nl = rite_model_layer_count(model);
    rite_io__put_le(q, hlen, 8);
    rite_io__out_init(&o, q + 8, hlen);
    rite_io__state_header(&o, model, names, nl);
    q += 8 + hlen;
    for (i = 0; i < nl && st == RITE_IO_OK; i++) {
        const rite_layer *l = rite_model_layer(model, i);
        d = rite_get_desc(l);
        rite_io__state_layout(&d, &map);
        if (rite_state_copy(l, s, most) != RITE_OK) {
            st = rite_io__say(detail, detail_size, RITE_IO_ERR_STATE, "layer %d: rite_state_copy failed", i);
            break;
        }
        nt = rite_io__state_plan(&d, t);
        for (k = 0; k < nt; k++) q = rite_io__state_tensor(q, s, &map, &d, &t[k]);
    }
    free(s);
    return st;
}

LORA_RITE_IO_API rite_io_status rite_io_state_save(const char *path, const rite_model *model,
                                                   const char *const *names, char *detail, size_t detail_size)
{
    size_t hlen = 0, total = 0, most = 0;
    unsigned char *buf;
    rite_io_status st;
    rite_io__clear(detail, detail_size);
    if (!path) return rite_io__say(detail, detail_size, RITE_IO_ERR_NULL_ARGUMENT, "path is NULL");
    st = rite_io__state_plan_all(model, names, &hlen, &total, &most, detail, detail_size);
    if (st != RITE_IO_OK) return st;
    buf = (unsigned char *)malloc(total);
    if (!buf) return rite_io__say(detail, detail_size, RITE_IO_ERR_OUT_OF_MEMORY, "%zu bytes", total);
    st = rite_io_state_write(model, names, buf, total, detail, detail_size);
    if (st == RITE_IO_OK) st = rite_io__write_file(path, buf, total, detail, detail_size);
    free(buf);
    return st;
}

#endif /* LORA_RITE_H */

#endif /* LORA_RITE_IO_IMPLEMENTATION */
