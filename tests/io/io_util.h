/* io_util.h - what the tests of lora_rite_io.h need to look inside the files
   it writes, written here without the header's help:

   - little-endian byte access and a growable byte buffer;
   - the float -> F16 / BF16 conversions with round-to-nearest-even, and back,
     the naive way (frexp, ldexp and an explicit tie rule on doubles, never
     by shifting the bits of a float);
   - a small strict JSON parser (RFC 8259: objects, arrays, strings with
     escapes, numbers, literals) that flags duplicate keys, for the
     safetensors header and adapter_config.json;
   - a safetensors parser (8-byte little-endian header length, the JSON
     header, the data section) and a GGUF parser (header, metadata, tensor
     infos, data section), both checking bounds at every read.

   Everything is static; include it where it is needed. Only the C library
   is used (no lora_rite.h, no lora_rite_io.h). */
#ifndef LORA_RITE_TEST_IO_UTIL_H
#define LORA_RITE_TEST_IO_UTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ bytes */

static inline uint16_t iu_le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t iu_le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t iu_le64(const unsigned char *p) { return (uint64_t)iu_le32(p) | ((uint64_t)iu_le32(p + 4) << 32); }
static inline float iu_lef32(const unsigned char *p) {
    uint32_t u = iu_le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline double iu_lef64(const unsigned char *p) {
    uint64_t u = iu_le64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}
static inline uint32_t iu_float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float iu_bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A growable byte buffer; on allocation failure it aborts (tests only). */
typedef struct iu_buf {
    unsigned char *p;
    size_t n, cap;
} iu_buf;

static inline void iu_put(iu_buf *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        unsigned char *q;
        while (cap < b->n + n) cap *= 2;
        q = (unsigned char *)realloc(b->p, cap);
        if (!q) abort();
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static inline void iu_put8(iu_buf *b, unsigned v) {
    unsigned char c = (unsigned char)v;
    iu_put(b, &c, 1);
}
static inline void iu_put16(iu_buf *b, uint16_t v) {
    unsigned char c[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    iu_put(b, c, 2);
}
static inline void iu_put32(iu_buf *b, uint32_t v) {
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    iu_put(b, c, 4);
}
static inline void iu_put64(iu_buf *b, uint64_t v) {
    iu_put32(b, (uint32_t)v);
    iu_put32(b, (uint32_t)(v >> 32));
}
static inline void iu_putf32(iu_buf *b, float f) { iu_put32(b, iu_float_bits(f)); }
static inline void iu_puts(iu_buf *b, const char *s) { iu_put(b, s, strlen(s)); }
static inline void iu_free(iu_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* A heap copy of exactly n bytes (at least 1 allocated), so that a read past
   the end is caught by AddressSanitizer and valgrind. */
static inline unsigned char *iu_exact_copy(const void *src, size_t n) {
    unsigned char *p = (unsigned char *)malloc(n ? n : 1);
    if (!p) abort();
    if (n) memcpy(p, src, n);
    return p;
}

/* ------------------------------------------------------------ F16 and BF16, naively */

/* q rounded to the nearest integer, ties to even (q >= 0, exact in double) */
static inline double iu_round_even(double q) {
    double f = floor(q), d = q - f;
    if (d > 0.5 || (d == 0.5 && fmod(f, 2.0) != 0.0)) f += 1.0;
    return f;
}

/* A 16-bit float of exp_bits exponent and man_bits mantissa bits (IEEE half:
   5 and 10; bfloat16, the top half of a float: 8 and 7), bias b = 2^(exp_bits-1) - 1,
   from x with round-to-nearest-even: sign, then |x| = q 2^(1-b-man_bits) for
   |x| < 2^(1-b) (subnormal; q = 2^man_bits is the smallest normal), else
   (1 + q/2^man_bits) 2^e, with Inf past the largest finite (half: 65504, and
   65520 and above round up to 2^16; bfloat16: 0x1.FEp127). NaN gives the quiet
   NaN (half 0x7E00, bfloat16 0x7FC0) with x's sign. */
static inline uint16_t iu_16bit_from_float(float x, int exp_bits, int man_bits) {
    int bias = (1 << (exp_bits - 1)) - 1, e;
    uint16_t sign = signbit(x) ? 0x8000u : 0u;
    uint16_t inf = (uint16_t)(((1u << exp_bits) - 1u) << man_bits);
    double a = fabs((double)x), one = ldexp(1.0, man_bits), q;
    if (isnan(x)) return (uint16_t)(sign | inf | (1u << (man_bits - 1)));
    if (isinf(x)) return (uint16_t)(sign | inf);
    if (a == 0.0) return sign;
    (void)frexp(a, &e);
    e -= 1; /* a = m 2^e, 1 <= m < 2 */
    if (e < 1 - bias) return (uint16_t)(sign | (uint16_t)iu_round_even(ldexp(a, bias - 1 + man_bits)));
    q = iu_round_even(ldexp(a, man_bits - e)); /* in [one, 2 one] */
    if (q == 2.0 * one) {
        q = one;
        e++;
    }
    if (e > bias) return (uint16_t)(sign | inf);
    return (uint16_t)(sign | (uint16_t)((e + bias) << man_bits) | (uint16_t)(q - one));
}

/* The value of the 16-bit float h of that layout (NaN and Inf included). */
static inline float iu_16bit_to_float(uint16_t h, int exp_bits, int man_bits) {
    int bias = (1 << (exp_bits - 1)) - 1, max_ex = (1 << exp_bits) - 1;
    int ex = (h >> man_bits) & max_ex, man = h & ((1 << man_bits) - 1);
    double one = ldexp(1.0, man_bits);
    double v = ex == 0        ? ldexp((double)man, 1 - bias - man_bits)
               : ex == max_ex ? (man ? NAN : INFINITY)
                              : ldexp(one + man, ex - bias - man_bits);
    return (float)((h & 0x8000u) ? -v : v);
}

static inline int iu_16bit_finite(uint16_t h, int exp_bits, int man_bits) {
    int max_ex = (1 << exp_bits) - 1;
    return ((h >> man_bits) & max_ex) != max_ex;
}

/* IEEE half and bfloat16 */
static inline uint16_t iu_f16_from_float(float x) { return iu_16bit_from_float(x, 5, 10); }
static inline uint16_t iu_bf16_from_float(float x) { return iu_16bit_from_float(x, 8, 7); }
static inline float iu_f16_to_float(uint16_t h) { return iu_16bit_to_float(h, 5, 10); }
static inline float iu_bf16_to_float(uint16_t h) { return iu_16bit_to_float(h, 8, 7); }
static inline int iu_f16_finite(uint16_t h) { return iu_16bit_finite(h, 5, 10); }
static inline int iu_bf16_finite(uint16_t h) { return iu_16bit_finite(h, 8, 7); }

/* ------------------------------------------------------------ JSON */

typedef enum iu_jtype { IU_JNULL, IU_JFALSE, IU_JTRUE, IU_JNUM, IU_JSTR, IU_JARR, IU_JOBJ } iu_jtype;

typedef struct iu_jnode {
    iu_jtype type;
    int kid;          /* first element or member, -1 if none */
    int next;         /* next sibling, -1 if last */
    int count;        /* elements or members */
    char *key;        /* for a member: its key (decoded, 0-terminated) */
    size_t key_len;
    char *str;        /* for a string: decoded, 0-terminated */
    size_t str_len;
    double num;       /* for a number */
    char raw[40];     /* for a number: its text (truncated past 39 characters) */
} iu_jnode;

typedef struct iu_json {
    iu_jnode *n;
    int count, cap;
    int duplicate_key;   /* 1 if some object has a key twice */
    const char *p, *end;
    int depth;
    char err[96];
} iu_json;

static inline int iu_j_new(iu_json *j, iu_jtype t) {
    iu_jnode *x;
    if (j->count == j->cap) {
        int cap = j->cap ? 2 * j->cap : 64;
        iu_jnode *q = (iu_jnode *)realloc(j->n, (size_t)cap * sizeof *q);
        if (!q) abort();
        j->n = q;
        j->cap = cap;
    }
    x = &j->n[j->count];
    memset(x, 0, sizeof *x);
    x->type = t;
    x->kid = x->next = -1;
    return j->count++;
}

static inline void iu_j_ws(iu_json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static inline int iu_j_fail(iu_json *j, const char *what) {
    if (!j->err[0]) snprintf(j->err, sizeof j->err, "%s at byte %ld", what, (long)(j->end - j->p));
    return -1;
}

static inline int iu_j_hex(const char *p, unsigned *v) {
    int i;
    *v = 0;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        *v <<= 4;
        if (c >= '0' && c <= '9') *v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') *v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') *v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    return 1;
}

/* a string at j->p (at the opening quote) -> malloc'd decoded text */
static inline int iu_j_string(iu_json *j, char **out, size_t *out_len) {
    iu_buf b = {NULL, 0, 0};
    j->p++;
    for (;;) {
        unsigned char c;
        if (j->p >= j->end) {
            iu_free(&b);
            return iu_j_fail(j, "unterminated string");
        }
        c = (unsigned char)*j->p++;
        if (c == '"') break;
        if (c < 0x20) {
            iu_free(&b);
            return iu_j_fail(j, "control character in a string");
        }
        if (c != '\\') {
            iu_put8(&b, c);
            continue;
        }
        if (j->p >= j->end) {
            iu_free(&b);
            return iu_j_fail(j, "unterminated escape");
        }
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"': case '\\': case '/': iu_put8(&b, c); break;
        case 'b': iu_put8(&b, '\b'); break;
        case 'f': iu_put8(&b, '\f'); break;
        case 'n': iu_put8(&b, '\n'); break;
        case 'r': iu_put8(&b, '\r'); break;
        case 't': iu_put8(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (j->end - j->p < 4 || !iu_j_hex(j->p, &cp)) {
                iu_free(&b);
                return iu_j_fail(j, "bad \\u escape");
            }
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' || !iu_j_hex(j->p + 2, &lo) ||
                    lo < 0xDC00 || lo >= 0xE000) {
                    iu_free(&b);
                    return iu_j_fail(j, "lone surrogate");
                }
                j->p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp < 0xE000) {
                iu_free(&b);
                return iu_j_fail(j, "lone surrogate");
            }
            if (cp < 0x80) {
                iu_put8(&b, cp);
            } else if (cp < 0x800) {
                iu_put8(&b, 0xC0 | (cp >> 6));
                iu_put8(&b, 0x80 | (cp & 63));
            } else if (cp < 0x10000) {
                iu_put8(&b, 0xE0 | (cp >> 12));
                iu_put8(&b, 0x80 | ((cp >> 6) & 63));
                iu_put8(&b, 0x80 | (cp & 63));
            } else {
                iu_put8(&b, 0xF0 | (cp >> 18));
                iu_put8(&b, 0x80 | ((cp >> 12) & 63));
                iu_put8(&b, 0x80 | ((cp >> 6) & 63));
                iu_put8(&b, 0x80 | (cp & 63));
            }
            break;
        }
        default:
            iu_free(&b);
            return iu_j_fail(j, "bad escape");
        }
    }
    *out_len = b.n;
    iu_put8(&b, 0);
    *out = (char *)b.p;
    return 0;
}

static inline int iu_j_value(iu_json *j);

static inline int iu_j_number(iu_json *j) {
    const char *s = j->p;
    char tmp[400];
    int id;
    size_t len;
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p >= j->end) return iu_j_fail(j, "bad number");
    if (*j->p == '0') {
        j->p++;
    } else if (*j->p >= '1' && *j->p <= '9') {
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    } else {
        return iu_j_fail(j, "bad number");
    }
    if (j->p < j->end && *j->p == '.') {
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return iu_j_fail(j, "bad fraction");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return iu_j_fail(j, "bad exponent");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    len = (size_t)(j->p - s);
    if (len >= sizeof tmp) return iu_j_fail(j, "number too long for this parser");
    memcpy(tmp, s, len);
    tmp[len] = 0;
    id = iu_j_new(j, IU_JNUM);
    j->n[id].num = strtod(tmp, NULL);
    memcpy(j->n[id].raw, tmp, len < sizeof j->n[id].raw ? len + 1 : sizeof j->n[id].raw - 1);
    return id;
}

static inline int iu_j_literal(iu_json *j, const char *word, iu_jtype t) {
    size_t n = strlen(word);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return iu_j_fail(j, "bad literal");
    j->p += n;
    return iu_j_new(j, t);
}

static inline int iu_j_container(iu_json *j, int object) {
    int id = iu_j_new(j, object ? IU_JOBJ : IU_JARR), last = -1;
    if (++j->depth > 64) return iu_j_fail(j, "nested too deeply for this parser");
    j->p++;
    iu_j_ws(j);
    if (j->p < j->end && *j->p == (object ? '}' : ']')) {
        j->p++;
        j->depth--;
        return id;
    }
    for (;;) {
        char *key = NULL;
        size_t key_len = 0;
        int v;
        iu_j_ws(j);
        if (object) {
            if (j->p >= j->end || *j->p != '"') return iu_j_fail(j, "expected a key");
            if (iu_j_string(j, &key, &key_len) < 0) return -1;
            iu_j_ws(j);
            if (j->p >= j->end || *j->p != ':') {
                free(key);
                return iu_j_fail(j, "expected ':'");
            }
            j->p++;
            /* a key seen before in this object? */
            {
                int k;
                for (k = j->n[id].kid; k >= 0; k = j->n[k].next)
                    if (j->n[k].key_len == key_len && memcmp(j->n[k].key, key, key_len) == 0) j->duplicate_key = 1;
            }
        }
        v = iu_j_value(j);
        if (v < 0) {
            free(key);
            return -1;
        }
        j->n[v].key = key;
        j->n[v].key_len = key_len;
        if (last < 0) j->n[id].kid = v;
        else j->n[last].next = v;
        last = v;
        j->n[id].count++;
        iu_j_ws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        if (j->p < j->end && *j->p == (object ? '}' : ']')) {
            j->p++;
            break;
        }
        return iu_j_fail(j, "expected ',' or the closing bracket");
    }
    j->depth--;
    return id;
}

static inline int iu_j_value(iu_json *j) {
    iu_j_ws(j);
    if (j->p >= j->end) return iu_j_fail(j, "unexpected end");
    switch (*j->p) {
    case '{': return iu_j_container(j, 1);
    case '[': return iu_j_container(j, 0);
    case '"': {
        char *s;
        size_t n;
        int id;
        if (iu_j_string(j, &s, &n) < 0) return -1;
        id = iu_j_new(j, IU_JSTR);
        j->n[id].str = s;
        j->n[id].str_len = n;
        return id;
    }
    case 't': return iu_j_literal(j, "true", IU_JTRUE);
    case 'f': return iu_j_literal(j, "false", IU_JFALSE);
    case 'n': return iu_j_literal(j, "null", IU_JNULL);
    default: return iu_j_number(j);
    }
}

/* Parses text[0, len) as one JSON value (whitespace around it allowed).
   Returns the root node (0) or -1 with j->err set. Free with iu_json_free. */
static inline int iu_json_parse(iu_json *j, const char *text, size_t len) {
    int root;
    memset(j, 0, sizeof *j);
    j->p = text;
    j->end = text + len;
    root = iu_j_value(j);
    if (root < 0) return -1;
    iu_j_ws(j);
    if (j->p != j->end) return iu_j_fail(j, "trailing characters");
    return root;
}

static inline void iu_json_free(iu_json *j) {
    int i;
    for (i = 0; i < j->count; i++) {
        free(j->n[i].key);
        free(j->n[i].str);
    }
    free(j->n);
    memset(j, 0, sizeof *j);
}

/* member `key` of object `obj`, or -1 */
static inline int iu_jget(const iu_json *j, int obj, const char *key) {
    int k;
    if (obj < 0 || j->n[obj].type != IU_JOBJ) return -1;
    for (k = j->n[obj].kid; k >= 0; k = j->n[k].next)
        if (j->n[k].key_len == strlen(key) && memcmp(j->n[k].key, key, j->n[k].key_len) == 0) return k;
    return -1;
}

/* element i of array (or member i of object) `c`, or -1 */
static inline int iu_jat(const iu_json *j, int c, int i) {
    int k;
    if (c < 0 || (j->n[c].type != IU_JARR && j->n[c].type != IU_JOBJ)) return -1;
    for (k = j->n[c].kid; k >= 0 && i > 0; k = j->n[k].next) i--;
    return k;
}

/* 1 and *v when node id is a non-negative integer written as digits only */
static inline int iu_juint(const iu_json *j, int id, uint64_t *v) {
    const char *s;
    uint64_t x = 0;
    if (id < 0 || j->n[id].type != IU_JNUM) return 0;
    s = j->n[id].raw;
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        if (x > (UINT64_MAX - (uint64_t)(*s - '0')) / 10) return 0;
        x = x * 10 + (uint64_t)(*s - '0');
    }
    *v = x;
    return 1;
}

/* the string of node id, or NULL */
static inline const char *iu_jstr(const iu_json *j, int id) {
    return id >= 0 && j->n[id].type == IU_JSTR ? j->n[id].str : NULL;
}

/* ------------------------------------------------------------ safetensors */

typedef struct iu_st {
    uint64_t header_len;
    const unsigned char *header;   /* header_len bytes of JSON */
    const unsigned char *data;     /* the data section */
    size_t data_len;
    iu_json json;
    int root;
} iu_st;

/* 0 on success; else -1 and a message in err */
static inline int iu_st_parse(iu_st *st, const void *file, size_t n, char *err, size_t err_size) {
    const unsigned char *b = (const unsigned char *)file;
    memset(st, 0, sizeof *st);
    st->root = -1;
    if (n < 8) {
        snprintf(err, err_size, "file of %zu bytes", n);
        return -1;
    }
    st->header_len = iu_le64(b);
    if (st->header_len > n - 8) {
        snprintf(err, err_size, "header length %llu past the file", (unsigned long long)st->header_len);
        return -1;
    }
    st->header = b + 8;
    st->data = b + 8 + st->header_len;
    st->data_len = n - 8 - (size_t)st->header_len;
    st->root = iu_json_parse(&st->json, (const char *)st->header, (size_t)st->header_len);
    if (st->root < 0) {
        snprintf(err, err_size, "header JSON: %s", st->json.err);
        return -1;
    }
    if (st->json.n[st->root].type != IU_JOBJ) {
        snprintf(err, err_size, "header is not an object");
        return -1;
    }
    return 0;
}

static inline void iu_st_free(iu_st *st) { iu_json_free(&st->json); }

/* A tensor of a parsed safetensors file: 0 on success, -1 when missing or malformed. */
typedef struct iu_st_tensor {
    const char *dtype;
    int ndim;
    uint64_t shape[8];
    uint64_t begin, end;
    const unsigned char *bytes;   /* data + begin */
} iu_st_tensor;

static inline int iu_st_tensor_get(const iu_st *st, const char *name, iu_st_tensor *t) {
    int id = iu_jget(&st->json, st->root, name), dt, sh, off, i;
    memset(t, 0, sizeof *t);
    if (id < 0) return -1;
    dt = iu_jget(&st->json, id, "dtype");
    sh = iu_jget(&st->json, id, "shape");
    off = iu_jget(&st->json, id, "data_offsets");
    if (!iu_jstr(&st->json, dt) || sh < 0 || st->json.n[sh].type != IU_JARR || off < 0 ||
        st->json.n[off].type != IU_JARR || st->json.n[off].count != 2 || st->json.n[sh].count > 8)
        return -1;
    t->dtype = iu_jstr(&st->json, dt);
    t->ndim = st->json.n[sh].count;
    for (i = 0; i < t->ndim; i++)
        if (!iu_juint(&st->json, iu_jat(&st->json, sh, i), &t->shape[i])) return -1;
    if (!iu_juint(&st->json, iu_jat(&st->json, off, 0), &t->begin) ||
        !iu_juint(&st->json, iu_jat(&st->json, off, 1), &t->end) || t->begin > t->end || t->end > st->data_len)
        return -1;
    t->bytes = st->data + t->begin;
    return 0;
}

/* ------------------------------------------------------------ GGUF */

enum {
    IU_GGUF_U8 = 0, IU_GGUF_I8 = 1, IU_GGUF_U16 = 2, IU_GGUF_I16 = 3, IU_GGUF_U32 = 4, IU_GGUF_I32 = 5,
    IU_GGUF_F32 = 6, IU_GGUF_BOOL = 7, IU_GGUF_STRING = 8, IU_GGUF_ARRAY = 9, IU_GGUF_U64 = 10,
    IU_GGUF_I64 = 11, IU_GGUF_F64 = 12
};

typedef struct iu_gguf_kv {
    char key[128];
    uint32_t type;
    double num;          /* a scalar's value */
    char str[256];       /* a string's value (truncated) */
    uint32_t elem_type;  /* an array's */
    uint64_t count;
} iu_gguf_kv;

typedef struct iu_gguf_tensor {
    char name[128];
    uint32_t n_dims;
    uint64_t ne[4];
    uint32_t type;
    uint64_t offset;
} iu_gguf_tensor;

typedef struct iu_gguf {
    uint32_t version;
    uint64_t n_tensors, n_kv;
    iu_gguf_kv kv[64];
    iu_gguf_tensor t[64];
    uint64_t alignment;
    size_t data_start;    /* in the file */
    size_t size;
} iu_gguf;

typedef struct iu_gr {
    const unsigned char *b;
    size_t n, at;
    int bad;
} iu_gr;

static inline const unsigned char *iu_gr_take(iu_gr *r, size_t k) {
    const unsigned char *p;
    if (r->bad || k > r->n - r->at) {
        r->bad = 1;
        return NULL;
    }
    p = r->b + r->at;
    r->at += k;
    return p;
}
static inline uint32_t iu_gr32(iu_gr *r) {
    const unsigned char *p = iu_gr_take(r, 4);
    return p ? iu_le32(p) : 0;
}
static inline uint64_t iu_gr64(iu_gr *r) {
    const unsigned char *p = iu_gr_take(r, 8);
    return p ? iu_le64(p) : 0;
}
/* a GGUF string into out (truncated to out_size - 1) */
static inline void iu_gr_str(iu_gr *r, char *out, size_t out_size) {
    uint64_t len = iu_gr64(r);
    const unsigned char *p;
    if (r->bad || len > r->n - r->at) {
        r->bad = 1;
        if (out_size) out[0] = 0;
        return;
    }
    p = iu_gr_take(r, (size_t)len);
    if (out_size) {
        size_t k = (size_t)len < out_size - 1 ? (size_t)len : out_size - 1;
        memcpy(out, p, k);
        out[k] = 0;
    }
}

static inline size_t iu_gguf_scalar_size(uint32_t t) {
    switch (t) {
    case IU_GGUF_U8: case IU_GGUF_I8: case IU_GGUF_BOOL: return 1;
    case IU_GGUF_U16: case IU_GGUF_I16: return 2;
    case IU_GGUF_U32: case IU_GGUF_I32: case IU_GGUF_F32: return 4;
    case IU_GGUF_U64: case IU_GGUF_I64: case IU_GGUF_F64: return 8;
    default: return 0;
    }
}

static inline double iu_gguf_scalar(uint32_t t, const unsigned char *p) {
    switch (t) {
    case IU_GGUF_U8: case IU_GGUF_BOOL: return p[0];
    case IU_GGUF_I8: return (signed char)p[0];
    case IU_GGUF_U16: return iu_le16(p);
    case IU_GGUF_I16: return (int16_t)iu_le16(p);
    case IU_GGUF_U32: return iu_le32(p);
    case IU_GGUF_I32: return (int32_t)iu_le32(p);
    case IU_GGUF_F32: return iu_lef32(p);
    case IU_GGUF_U64: return (double)iu_le64(p);
    case IU_GGUF_I64: return (double)(int64_t)iu_le64(p);
    case IU_GGUF_F64: return iu_lef64(p);
    default: return 0;
    }
}

/* Parses a GGUF v2/v3 file (scalars, strings, and arrays of those). 0 on
   success; else -1 and a message in err. */
static inline int iu_gguf_parse(iu_gguf *g, const void *file, size_t n, char *err, size_t err_size) {
    iu_gr r;
    uint64_t i;
    const unsigned char *magic;
    memset(g, 0, sizeof *g);
    r.b = (const unsigned char *)file;
    r.n = n;
    r.at = 0;
    r.bad = 0;
    g->size = n;
    magic = iu_gr_take(&r, 4);
    if (!magic || memcmp(magic, "GGUF", 4) != 0) {
        snprintf(err, err_size, "no GGUF magic");
        return -1;
    }
    g->version = iu_gr32(&r);
    g->n_tensors = iu_gr64(&r);
    g->n_kv = iu_gr64(&r);
    if (r.bad || g->n_kv > 64 || g->n_tensors > 64) {
        snprintf(err, err_size, "header: %llu tensors, %llu keys", (unsigned long long)g->n_tensors,
                 (unsigned long long)g->n_kv);
        return -1;
    }
    g->alignment = 32;
    for (i = 0; i < g->n_kv && !r.bad; i++) {
        iu_gguf_kv *kv = &g->kv[i];
        iu_gr_str(&r, kv->key, sizeof kv->key);
        kv->type = iu_gr32(&r);
        if (kv->type == IU_GGUF_STRING) {
            iu_gr_str(&r, kv->str, sizeof kv->str);
        } else if (kv->type == IU_GGUF_ARRAY) {
            uint64_t e;
            kv->elem_type = iu_gr32(&r);
            kv->count = iu_gr64(&r);
            for (e = 0; e < kv->count && !r.bad; e++) {
                if (kv->elem_type == IU_GGUF_STRING) {
                    char tmp[8];
                    iu_gr_str(&r, tmp, sizeof tmp);
                } else if (iu_gguf_scalar_size(kv->elem_type)) {
                    (void)iu_gr_take(&r, iu_gguf_scalar_size(kv->elem_type));
                } else {
                    r.bad = 1;
                }
            }
        } else if (iu_gguf_scalar_size(kv->type)) {
            const unsigned char *p = iu_gr_take(&r, iu_gguf_scalar_size(kv->type));
            if (p) kv->num = iu_gguf_scalar(kv->type, p);
        } else {
            r.bad = 1;
        }
        if (!r.bad && strcmp(kv->key, "general.alignment") == 0) g->alignment = (uint64_t)kv->num;
    }
    for (i = 0; i < g->n_tensors && !r.bad; i++) {
        iu_gguf_tensor *t = &g->t[i];
        uint32_t d;
        iu_gr_str(&r, t->name, sizeof t->name);
        t->n_dims = iu_gr32(&r);
        if (t->n_dims > 4) {
            r.bad = 1;
            break;
        }
        for (d = 0; d < 4; d++) t->ne[d] = 1;
        for (d = 0; d < t->n_dims; d++) t->ne[d] = iu_gr64(&r);
        t->type = iu_gr32(&r);
        t->offset = iu_gr64(&r);
    }
    if (r.bad || g->alignment == 0) {
        snprintf(err, err_size, "malformed metadata or tensor infos near byte %zu", r.at);
        return -1;
    }
    g->data_start = (r.at + (size_t)g->alignment - 1) / (size_t)g->alignment * (size_t)g->alignment;
    if (g->data_start > n) {
        snprintf(err, err_size, "data section starts past the file");
        return -1;
    }
    return 0;
}

static inline const iu_gguf_kv *iu_gguf_find_kv(const iu_gguf *g, const char *key) {
    uint64_t i;
    for (i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

static inline const iu_gguf_tensor *iu_gguf_find_tensor(const iu_gguf *g, const char *name) {
    uint64_t i;
    for (i = 0; i < g->n_tensors; i++)
        if (strcmp(g->t[i].name, name) == 0) return &g->t[i];
    return NULL;
}

#endif /* LORA_RITE_TEST_IO_UTIL_H */
