/* test_io_state.c - the optimizer state of a model as safetensors
   (rite_io_state_*, which lora_rite_io.h has when lora_rite.h is included
   before it).

   Small models (two PEFT modules, rite_lora_peft) of both optimizers, in
   float and double, LoRA-RITE also with keep_basis and with the escaped-mass
   correction, are stepped and exported; the file is parsed here
   (tests/io/io_util.h) and checked:
   - exactly the tensors the header lists, per module and factor, with the
     dtype of the model (F32 or F64), the shapes r x in, out x r, r x r, [1],
     data_offsets tiling the data section, __metadata__ of strings naming
     the optimizer and the step count;
   - every value against rite_state_copy (whose layout fuzz/fuzz_rite.c
     documents: LoRA-RITE's first moments are k x r column-major, so lora_A's
     is r x in row-major as exported and lora_B's is transposed; AdamW's are
     kept as their factor is stored; the LoRA-RITE second moment is the
     upper triangle packed by columns), to
     the bit (F32 of a float model: the float the state holds, or the double
     second moment and escaped mass rounded to float);
   - against what the gradients give directly: AdamW's first moment after
     one step is (1 - beta1) g and after two b1 (1 - b1) g1 + (1 - b1) g2,
     its second moment (1 - b2) g^2 and b2 (1 - b2) g1^2 + (1 - b2) g2^2; a
     LoRA-RITE second moment is symmetric with a non-negative diagonal, and
     the escaped mass is 0 with escape off;
   - a model not stepped yet exports zeros;
   - errors: NULL arguments, a name with a quote, two modules of one name,
     a buffer one byte short, a path that cannot be written. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <unistd.h>

#include "lora_rite.h"
#define LORA_RITE_IO_IMPLEMENTATION
#include "lora_rite_io.h"

#include "io/io_util.h"
#include "test_util.h"

enum { NL = 2 };

static const int k_in[NL] = {6, 4}, k_out[NL] = {5, 7}, k_r[NL] = {2, 3};
static const char *const k_names[NL] = {"model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj"};

/* A model and its buffers: factors A, B and two gradients per factor, in
   PEFT's storage (A r x in, B out x r, row-major), float or double. */
typedef struct fixture {
    rite_model *model;
    rite_optimizer opt;
    int f64;
    rite_config cfg;
    void *A[NL], *B[NL], *gA[2][NL], *gB[2][NL];  /* gradients of step 1 and step 2 */
    double *gAd[2][NL], *gBd[2][NL];             /* the same, as doubles */
} fixture;

static size_t na(int i) { return (size_t)k_r[i] * (size_t)k_in[i]; }
static size_t nb(int i) { return (size_t)k_out[i] * (size_t)k_r[i]; }

static void *fill(tu_rng *g, size_t n, int f64, double scale, double **copy) {
    void *p = malloc(n * (f64 ? sizeof(double) : sizeof(float)));
    size_t e;
    assert_non_null(p);
    if (copy) {
        *copy = (double *)malloc(n * sizeof(double));
        assert_non_null(*copy);
    }
    for (e = 0; e < n; e++) {
        double v = scale * tu_normal(g);
        if (f64) ((double *)p)[e] = v;
        else ((float *)p)[e] = (float)v;
        if (copy) (*copy)[e] = f64 ? v : (double)(float)v;
    }
    return p;
}

static void fixture_init(fixture *fx, rite_optimizer opt, int f64, int keep_basis, int escape) {
    rite_lora mods[NL];
    rite_model_desc md;
    char detail[256] = "";
    tu_rng g = {1234u + (uint64_t)opt * 7u + (uint64_t)f64};
    int i, s;
    memset(fx, 0, sizeof *fx);
    fx->opt = opt;
    fx->f64 = f64;
    fx->cfg = rite_config_default(opt);
    fx->cfg.lr = 0.01;
    if (escape) fx->cfg.escape = 1;
    for (i = 0; i < NL; i++) mods[i] = rite_lora_peft(k_in[i], k_out[i], k_r[i]);
    memset(&md, 0, sizeof md);
    md.layers = mods;
    md.n_layers = NL;
    md.optimizer = opt;
    md.precision = f64 ? RITE_FLOAT64 : RITE_FLOAT32;
    md.config = &fx->cfg;
    md.keep_basis = keep_basis;
    md.threads = 1;
    if (rite_model_init(&fx->model, &md, detail, sizeof detail) != RITE_OK) {
        print_error("rite_model_init: %s\n", detail);
        fail();
    }
    for (i = 0; i < NL; i++) {
        fx->A[i] = fill(&g, na(i), f64, 0.5, NULL);
        fx->B[i] = fill(&g, nb(i), f64, 0.5, NULL);
        for (s = 0; s < 2; s++) {
            fx->gA[s][i] = fill(&g, na(i), f64, 0.01, &fx->gAd[s][i]);
            fx->gB[s][i] = fill(&g, nb(i), f64, 0.01, &fx->gBd[s][i]);
        }
    }
}

static void fixture_free(fixture *fx) {
    int i, s;
    rite_model_free(fx->model);
    for (i = 0; i < NL; i++) {
        free(fx->A[i]);
        free(fx->B[i]);
        for (s = 0; s < 2; s++) {
            free(fx->gA[s][i]);
            free(fx->gB[s][i]);
            free(fx->gAd[s][i]);
            free(fx->gBd[s][i]);
        }
    }
}

static void fixture_step(fixture *fx, int s) {
    rite_status st = fx->f64 ? rite_model_step_f64(fx->model, (double *const *)fx->A, (double *const *)fx->B,
                                                    (double *const *)fx->gA[s], (double *const *)fx->gB[s])
                             : rite_model_step_f32(fx->model, (float *const *)fx->A, (float *const *)fx->B,
                                                   (float *const *)fx->gA[s], (float *const *)fx->gB[s]);
    if (st != RITE_OK) {
        print_error("step %d: %s (%s)\n", s + 1, rite_status_string(st), rite_model_last_error(fx->model));
        fail();
    }
}

/* ------------------------------------------------------------ rite_state_copy, read */

/* Where each field of one layer's rite_state_copy is (the order of
   fuzz/fuzz_rite.c's fz_state_scan). A k x r moment is column-major (element
   (i, j) at j k + i), except AdamW's, which are kept as their factor is
   stored: row-major (i r + j) for a rank-last factor (rite_lora_peft's
   lora_B). */
typedef struct state_view {
    unsigned char *bytes;
    long long steps;
    int row_major[2];                   /* the k x r moments of this factor are row-major */
    const unsigned char *M[2], *V[2];   /* first and (AdamW) second moment, k x r */
    const unsigned char *Vp[2];         /* LoRA-RITE: second moment, upper triangle packed by columns */
    double rho[2];                      /* LoRA-RITE: escaped mass */
} state_view;

static void state_view_get(const fixture *fx, int layer, int keep_basis, state_view *v) {
    const rite_layer *l = rite_model_layer(fx->model, layer);
    size_t n = rite_state_size(l), off = 8, es = fx->f64 ? 8 : 4, r = (size_t)k_r[layer];
    int side;
    memset(v, 0, sizeof *v);
    v->bytes = (unsigned char *)malloc(n);
    assert_non_null(v->bytes);
    assert_int_equal(rite_state_copy(l, v->bytes, n), RITE_OK);
    memcpy(&v->steps, v->bytes, 8);
    for (side = 0; side < 2; side++) {
        size_t kr = (size_t)(side ? k_out[layer] : k_in[layer]) * r;
        rite_desc d = rite_get_desc(l);
        v->row_major[side] = fx->opt == RITE_ADAMW && (side ? d.layout_R : d.layout_L) == RITE_RANK_LAST;
        v->M[side] = v->bytes + off;
        off += kr * es;
        if (fx->opt == RITE_ADAMW) {
            v->V[side] = v->bytes + off;
            off += kr * es;
            continue;
        }
        v->Vp[side] = v->bytes + off;
        off += (r * r + r) / 2 * 8;
        off += keep_basis ? kr * es : r * r * 8;
        memcpy(&v->rho[side], v->bytes + off, 8);
        off += 8;
    }
    if (fx->opt == RITE_LORA_RITE && !keep_basis) off += sizeof(int);
    assert_true(off == n);
}

static double state_num(const unsigned char *p, size_t e, int f64) {
    if (f64) {
        double d;
        memcpy(&d, p + e * 8, 8);
        return d;
    } else {
        float f;
        memcpy(&f, p + e * 4, 4);
        return f;
    }
}

/* ------------------------------------------------------------ the export, parsed */

static unsigned char *export_state(const fixture *fx, size_t *n) {
    char detail[256] = "";
    unsigned char *p;
    rite_io_status st = rite_io_state_size(fx->model, k_names, n);
    if (st != RITE_IO_OK) {
        print_error("rite_io_state_size: %s\n", rite_io_status_string(st));
        fail();
    }
    p = (unsigned char *)malloc(*n);
    assert_non_null(p);
    st = rite_io_state_write(fx->model, k_names, p, *n, detail, sizeof detail);
    if (st != RITE_IO_OK) {
        print_error("rite_io_state_write: %s (%s)\n", rite_io_status_string(st), detail);
        fail();
    }
    return p;
}

/* A tensor of the export: its dtype and shape checked, its values as doubles. */
static double *tensor(const iu_st *st, const char *name, const char *field, int f64, uint64_t d0, uint64_t d1,
                      int ndim) {
    char key[256];
    iu_st_tensor t;
    size_t count = (size_t)(d0 * d1), e;
    double *out;
    snprintf(key, sizeof key, "%s.%s", name, field);
    if (iu_st_tensor_get(st, key, &t) != 0) {
        print_error("the export has no tensor %s\n", key);
        fail();
    }
    assert_string_equal(t.dtype, f64 ? "F64" : "F32");
    assert_int_equal(t.ndim, ndim);
    assert_true(t.shape[0] == d0);
    if (ndim == 2) assert_true(t.shape[1] == d1);
    assert_true(t.end - t.begin == count * (f64 ? 8 : 4));
    out = (double *)malloc(count * sizeof(double));
    assert_non_null(out);
    for (e = 0; e < count; e++) out[e] = f64 ? iu_lef64(t.bytes + 8 * e) : (double)iu_lef32(t.bytes + 4 * e);
    return out;
}

/* Header and layout: the tensors, contiguous offsets, metadata. */
static void check_layout(const iu_st *st, const fixture *fx, long long steps) {
    int per = fx->opt == RITE_ADAMW ? 4 : 6, members, meta, e, l, found_opt = 0, found_steps = 0;
    uint64_t at = 0;
    assert_false(st->json.duplicate_key);
    assert_true(st->header_len % 8 == 0);
    members = st->json.n[st->root].count;
    meta = iu_jget(&st->json, st->root, "__metadata__");
    assert_true(meta >= 0);
    members--;
    assert_int_equal(members, per * NL);
    /* metadata: strings; one names the optimizer, and the step count is there */
    for (e = 0; e < st->json.n[meta].count; e++) {
        int id = iu_jat(&st->json, meta, e);
        const char *v = iu_jstr(&st->json, id), *k = st->json.n[id].key;
        char low[256];
        size_t c;
        assert_non_null(v);
        for (c = 0; v[c] && c < sizeof low - 1; c++) low[c] = (char)(v[c] >= 'A' && v[c] <= 'Z' ? v[c] + 32 : v[c]);
        low[c] = 0;
        if (fx->opt == RITE_ADAMW ? strstr(low, "adam") != NULL : strstr(low, "rite") != NULL) found_opt = 1;
        if (strstr(k, "step") || strstr(v, "step")) {
            char want[32];
            snprintf(want, sizeof want, "%lld", steps);
            if (strstr(v, want)) found_steps = 1;
        }
    }
    if (!found_opt || !found_steps) {
        print_error("__metadata__ does not name the optimizer (%d) or the step count %lld (%d)\n", found_opt, steps,
                    found_steps);
        fail();
    }
    /* every layer's step count: a key that names the layer */
    for (l = 0; l < NL; l++) {
        int hit = 0;
        char want[32];
        snprintf(want, sizeof want, "%lld", steps);
        for (e = 0; e < st->json.n[meta].count; e++) {
            int id = iu_jat(&st->json, meta, e);
            if (strstr(st->json.n[id].key, k_names[l]) && strcmp(iu_jstr(&st->json, id), want) == 0) hit = 1;
        }
        if (!hit) {
            print_error("__metadata__ has no step count %s for %s\n", want, k_names[l]);
            fail();
        }
    }
    /* data_offsets tile the data section */
    for (;;) {
        int best = -1;
        uint64_t best_begin = UINT64_MAX;
        iu_st_tensor t;
        for (e = 0; e < st->json.n[st->root].count; e++) {
            int id = iu_jat(&st->json, st->root, e);
            if (id == meta) continue;
            assert_int_equal(iu_st_tensor_get(st, st->json.n[id].key, &t), 0);
            if (t.begin >= at && t.begin < best_begin) {
                best_begin = t.begin;
                best = id;
            }
        }
        if (best < 0) break;
        iu_st_tensor_get(st, st->json.n[best].key, &t);
        assert_true(t.begin == at && t.end > t.begin);
        at = t.end;
    }
    assert_true(at == st->data_len);
}

/* The export of fx against its rite_state_copy; steps: how many were taken. */
static void check_export(const fixture *fx, int keep_basis, long long steps) {
    size_t n;
    unsigned char *file = export_state(fx, &n);
    iu_st st;
    char err[160];
    int i, side;
    int f64 = fx->f64;
    if (iu_st_parse(&st, file, n, err, sizeof err) != 0) {
        print_error("the export: %s\n", err);
        fail();
    }
    check_layout(&st, fx, steps);
    for (i = 0; i < NL; i++) {
        state_view v;
        size_t r = (size_t)k_r[i];
        state_view_get(fx, i, keep_basis, &v);
        assert_int_equal(v.steps, steps);
        for (side = 0; side < 2; side++) {
            char name[200];
            size_t k = side ? (size_t)k_out[i] : (size_t)k_in[i], p, q;
            double *m;
            snprintf(name, sizeof name, "%s.lora_%c", k_names[i], side ? 'B' : 'A');
            /* first moment: lora_A is r x in, lora_B out x r, element (q, p) of the k x r moment */
            m = tensor(&st, name, "exp_avg", f64, side ? k : r, side ? r : k, 2);
            for (p = 0; p < r; p++)
                for (q = 0; q < k; q++) {
                    double got = side ? m[q * r + p] : m[p * k + q];
                    double want = state_num(v.M[side], v.row_major[side] ? q * r + p : p * k + q, f64);
                    assert_true(memcmp(&got, &want, sizeof got) == 0 || (got == 0 && want == 0));
                }
            free(m);
            if (fx->opt == RITE_ADAMW) {
                m = tensor(&st, name, "exp_avg_sq", f64, side ? k : r, side ? r : k, 2);
                for (p = 0; p < r; p++)
                    for (q = 0; q < k; q++) {
                        double got = side ? m[q * r + p] : m[p * k + q];
                        assert_true(got == state_num(v.V[side], v.row_major[side] ? q * r + p : p * k + q, f64));
                    }
                free(m);
                continue;
            }
            /* LoRA-RITE: the r x r second moment, symmetric, from the packed triangle */
            m = tensor(&st, name, "second_moment", f64, r, r, 2);
            for (p = 0; p < r; p++) {
                assert_true(m[p * r + p] >= 0);
                for (q = p; q < r; q++) {
                    double packed = state_num(v.Vp[side], q * (q + 1) / 2 + p, 1);
                    double want = f64 ? packed : (double)(float)packed;
                    assert_true(m[p * r + q] == want);
                    assert_true(m[q * r + p] == want);
                }
            }
            free(m);
            m = tensor(&st, name, "escaped_mass", f64, 1, 1, 1);
            assert_true(m[0] == (f64 ? v.rho[side] : (double)(float)v.rho[side]));
            assert_true(m[0] >= 0);
            if (!fx->cfg.escape) assert_true(m[0] == 0);
            free(m);
        }
        free(v.bytes);
    }
    iu_st_free(&st);
    free(file);
}

/* AdamW's moments from the gradients: (1-b1) g after one step, b1 (1-b1) g1 + (1-b1) g2 after two
   (to rounding: 1e-6 of the terms' magnitude in float, 1e-14 in double). */
static void check_adamw_moments(const fixture *fx, int steps) {
    size_t n;
    unsigned char *file = export_state(fx, &n);
    iu_st st;
    char err[160];
    double b1 = fx->cfg.beta1, b2 = fx->cfg.beta2, tol = fx->f64 ? 1e-14 : 1e-6;
    int i, side;
    assert_int_equal(iu_st_parse(&st, file, n, err, sizeof err), 0);
    for (i = 0; i < NL; i++) {
        for (side = 0; side < 2; side++) {
            char name[200];
            size_t count = side ? nb(i) : na(i), e;
            const double *g1 = side ? fx->gBd[0][i] : fx->gAd[0][i], *g2 = side ? fx->gBd[1][i] : fx->gAd[1][i];
            double *m, *v;
            snprintf(name, sizeof name, "%s.lora_%c", k_names[i], side ? 'B' : 'A');
            m = tensor(&st, name, "exp_avg", fx->f64, side ? (uint64_t)k_out[i] : (uint64_t)k_r[i],
                       side ? (uint64_t)k_r[i] : (uint64_t)k_in[i], 2);
            v = tensor(&st, name, "exp_avg_sq", fx->f64, side ? (uint64_t)k_out[i] : (uint64_t)k_r[i],
                       side ? (uint64_t)k_r[i] : (uint64_t)k_in[i], 2);
            for (e = 0; e < count; e++) {
                /* the terms, and their magnitudes (the scale of the rounding errors) */
                double m1 = (1 - b1) * g1[e], m2 = steps == 1 ? 0 : (1 - b1) * g2[e];
                double wm = steps == 1 ? m1 : b1 * m1 + m2, sm = fabs(m1) + fabs(m2);
                double v1 = (1 - b2) * g1[e] * g1[e], v2 = steps == 1 ? 0 : (1 - b2) * g2[e] * g2[e];
                double wv = steps == 1 ? v1 : b2 * v1 + v2, sv = v1 + v2;
                if (fabs(m[e] - wm) > tol * sm || fabs(v[e] - wv) > tol * sv) {
                    print_error("%s[%zu] after %d steps: exp_avg %.17g (want %.17g), exp_avg_sq %.17g (want %.17g)\n",
                                name, e, steps, m[e], wm, v[e], wv);
                    fail();
                }
            }
            free(m);
            free(v);
        }
    }
    iu_st_free(&st);
    free(file);
}

/* ------------------------------------------------------------ tests */

/* A model stepped twice: its export after each step (AdamW, with the moments from the
   gradients) or after the second (LoRA-RITE). */
typedef struct {
    rite_optimizer opt;
    int f64;
} two_steps_case;

static two_steps_case k_adamw_f32 = {RITE_ADAMW, 0}, k_adamw_f64 = {RITE_ADAMW, 1},
                            k_lora_rite_f32 = {RITE_LORA_RITE, 0}, k_lora_rite_f64 = {RITE_LORA_RITE, 1};

/* keep: LoRA-RITE keeps its basis and escapes (fixture_init's last two flags) */
static void two_steps(rite_optimizer opt, int f64, int keep) {
    int adamw = opt == RITE_ADAMW;
    fixture fx;
    fixture_init(&fx, opt, f64, keep, keep);
    fixture_step(&fx, 0);
    if (adamw) {
        check_export(&fx, 0, 1);
        check_adamw_moments(&fx, 1);
    }
    fixture_step(&fx, 1);
    check_export(&fx, keep, 2);
    if (adamw) check_adamw_moments(&fx, 2);
    fixture_free(&fx);
}

static void run_two_steps(void **state) {
    const two_steps_case *c = (const two_steps_case *)*state;
    two_steps(c->opt, c->f64, 0);
}

static void test_lora_rite_keep_basis_and_escape(void **state) {
    int f64;
    (void)state;
    for (f64 = 0; f64 < 2; f64++) two_steps(RITE_LORA_RITE, f64, 1);
}

static void test_a_model_not_stepped_exports_zeros(void **state) {
    fixture fx;
    int opt;
    (void)state;
    for (opt = 0; opt < 2; opt++) {
        size_t n, e;
        unsigned char *file;
        iu_st st;
        char err[160];
        fixture_init(&fx, (rite_optimizer)opt, 0, 0, 0);
        check_export(&fx, 0, 0);
        file = export_state(&fx, &n);
        assert_int_equal(iu_st_parse(&st, file, n, err, sizeof err), 0);
        for (e = 0; e < st.data_len; e++) assert_int_equal(st.data[e], 0);
        iu_st_free(&st);
        free(file);
        fixture_free(&fx);
    }
}

static void test_state_export_errors(void **state) {
    fixture fx;
    size_t n = 0, good = 0;
    unsigned char *buf;
    char detail[256];
    const char *names[NL];
    (void)state;
    fixture_init(&fx, RITE_LORA_RITE, 0, 0, 0);
    fixture_step(&fx, 0);
    assert_int_equal(rite_io_state_size(fx.model, k_names, &good), RITE_IO_OK);
    buf = (unsigned char *)malloc(good);
    assert_non_null(buf);
    assert_int_equal(rite_io_state_size(NULL, k_names, &n), RITE_IO_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_io_state_size(fx.model, NULL, &n), RITE_IO_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_io_state_size(fx.model, k_names, NULL), RITE_IO_ERR_NULL_ARGUMENT);
    assert_int_equal(rite_io_state_write(fx.model, k_names, NULL, good, detail, sizeof detail),
                     RITE_IO_ERR_NULL_ARGUMENT);
    names[0] = k_names[0];
    names[1] = NULL;
    assert_int_equal(rite_io_state_size(fx.model, names, &n), RITE_IO_ERR_NULL_ARGUMENT);
    names[1] = "model.\"layers\".1";
    assert_int_equal(rite_io_state_size(fx.model, names, &n), RITE_IO_ERR_ARGUMENT);
    names[1] = k_names[0];
    {
        rite_io_status st = rite_io_state_size(fx.model, names, &n);
        if (st == RITE_IO_OK) st = rite_io_state_write(fx.model, names, buf, good, detail, sizeof detail);
        assert_true(st == RITE_IO_ERR_ARGUMENT || st == RITE_IO_ERR_DUPLICATE_KEY);
    }
    assert_int_equal(rite_io_state_write(fx.model, k_names, buf, good - 1, detail, sizeof detail),
                     RITE_IO_ERR_BUFFER_SIZE);
    assert_int_equal(rite_io_state_save("/nonexistent-dir-of-test_io_state/state.safetensors", fx.model, k_names,
                                        detail, sizeof detail),
                     RITE_IO_ERR_IO);
    assert_true(detail[0] != 0);
    free(buf);
    fixture_free(&fx);
}

static void test_state_save_writes_the_same_bytes(void **state) {
    fixture fx;
    size_t n;
    unsigned char *mem, *file;
    char path[4096], detail[256];
    const char *tmp = getenv("TMPDIR");
    FILE *fp;
    long len;
    (void)state;
    fixture_init(&fx, RITE_ADAMW, 1, 0, 0);
    fixture_step(&fx, 0);
    mem = export_state(&fx, &n);
    snprintf(path, sizeof path, "%s/test_io_state.%ld.safetensors", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    assert_int_equal(rite_io_state_save(path, fx.model, k_names, detail, sizeof detail), RITE_IO_OK);
    fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    len = ftell(fp);
    rewind(fp);
    assert_true(len == (long)n);
    file = (unsigned char *)malloc(n);
    assert_non_null(file);
    assert_int_equal(fread(file, 1, n, fp), n);
    fclose(fp);
    remove(path);
    assert_memory_equal(file, mem, n);
    free(file);
    free(mem);
    fixture_free(&fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        {"test_adamw_f32_moments_after_one_and_two_steps", run_two_steps, NULL, NULL, &k_adamw_f32},
        {"test_adamw_f64_moments_after_one_and_two_steps", run_two_steps, NULL, NULL, &k_adamw_f64},
        {"test_lora_rite_f32_state_after_two_steps", run_two_steps, NULL, NULL, &k_lora_rite_f32},
        {"test_lora_rite_f64_state_after_two_steps", run_two_steps, NULL, NULL, &k_lora_rite_f64},
        cmocka_unit_test(test_lora_rite_keep_basis_and_escape),
        cmocka_unit_test(test_a_model_not_stepped_exports_zeros),
        cmocka_unit_test(test_state_export_errors),
        cmocka_unit_test(test_state_save_writes_the_same_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
