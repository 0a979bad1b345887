// test_cxx.cpp - lora_rite.h used from C++: the implementation compiles as
// C++11 with -Wall -Wextra -Wpedantic, and the API works from C++ code.
//
// Checks, each derived independently of the library:
// - rite_config_default returns the numbers listed in SPEC.md;
// - rite_init rejects r > min(m, n) with RITE_ERR_RANK and leaves no layer;
// - every status code has its own non-empty description;
// - a first LoRA-RITE step from the standard LoRA init (R = 0) does not move
//   L (T_R = 0 makes the unmagnified gradient of L zero) and moves R so that
//   Z = L R^T has a positive inner product with the target A (the loss
//   0.5 ||L R^T - A||^2 decreases to first order);
// - a first AdamW step moves each entry of R by lr against its gradient
//   sign (m-hat = g, v-hat = g^2, so the step is lr g / (|g| + eps)).
#define LORA_RITE_IMPLEMENTATION
#include "lora_rite.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const char *what, int line) {
    if (!ok) {
        std::fprintf(stderr, "test_cxx.cpp:%d: FAILED: %s\n", line, what);
        ++failures;
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

const int m = 6, n = 5, r = 2;

struct Problem {
    std::vector<double> L, R, A, gL, gR;
    Problem() : L(m * r), R(n * r, 0.0), A(m * n), gL(m * r, 0.0), gR(n * r, 0.0) {
        unsigned long s = 7;
        for (double &x : L) x = next(s);
        for (double &x : A) x = 0.05 * next(s);
        // E = L R^T - A = -A, so gL = E R = 0 and gR = E^T L = -A^T L
        for (int j = 0; j < n; ++j)
            for (int p = 0; p < r; ++p) {
                double g = 0;
                for (int i = 0; i < m; ++i) g -= A[i * n + j] * L[i * r + p];
                gR[j * r + p] = g;
            }
    }
    static double next(unsigned long &s) {
        s = (s * 1103515245ul + 12345ul) & 0x7ffffffful;
        return static_cast<double>(s) / 1073741824.0 - 1.0;
    }
};

// The defaults SPEC.md lists for both optimizers.
struct SpecDefaults {
    const char *name;
    rite_optimizer opt;
    double lr, beta1, beta2, eps, weight_decay;
};
const SpecDefaults spec_defaults[] = {
    {"LoRA-RITE", RITE_LORA_RITE, 1e-3, 0.9, 0.999, 1e-6, 0},
    {"AdamW", RITE_ADAMW, 1e-3, 0.9, 0.999, 1e-8, 0},
};

void test_defaults() {
    for (const SpecDefaults &d : spec_defaults) {
        const int before = failures;
        const rite_config c = rite_config_default(d.opt);
        CHECK(c.lr == d.lr);
        CHECK(c.beta1 == d.beta1);
        CHECK(c.beta2 == d.beta2);
        CHECK(c.eps == d.eps);
        CHECK(c.weight_decay == d.weight_decay);
        if (failures != before) std::fprintf(stderr, "  (the defaults of %s)\n", d.name);
    }
    // the options of LoRA-RITE only
    const rite_config c = rite_config_default(RITE_LORA_RITE);
    CHECK(c.eps_root == 0);
    CHECK(c.clip == 1.0);
    CHECK(c.skip == 1.0);
    CHECK(c.cap == 0);
    CHECK(c.escape == 0 && c.relative_eps == 0 && c.balance == 0);
}

void test_rank_error() {
    rite_desc desc = rite_desc();
    desc.m = 3;
    desc.n = 4;
    desc.r = 4;  // r > min(m, n)
    rite_layer *layer = reinterpret_cast<rite_layer *>(&desc);  // must be reset to NULL
    CHECK(rite_init(&layer, &desc) == RITE_ERR_RANK);
    CHECK(layer == nullptr);
}

void test_status_strings() {
    for (int i = 0; i < RITE_STATUS_COUNT; ++i) {
        const char *s = rite_status_string(static_cast<rite_status>(i));
        CHECK(s != nullptr && s[0] != '\0');
        for (int j = 0; j < i && s; ++j) {
            const char *t = rite_status_string(static_cast<rite_status>(j));
            if (t && std::strcmp(s, t) == 0) {
                std::fprintf(stderr, "status %d and %d share the description \"%s\"\n", i, j, s);
                ++failures;
            }
        }
    }
}

rite_layer *make_layer(rite_optimizer opt, double lr) {
    rite_config config = rite_config_default(opt);
    config.lr = lr;
    rite_desc desc = rite_desc();
    desc.m = m;
    desc.n = n;
    desc.r = r;
    desc.optimizer = opt;
    desc.precision = RITE_FLOAT64;
    desc.config = &config;  // copied by rite_init
    rite_layer *layer = nullptr;
    CHECK(rite_init(&layer, &desc) == RITE_OK);
    return layer;
}

void test_rite_step() {
    Problem p;
    const std::vector<double> L0 = p.L;
    rite_layer *layer = make_layer(RITE_LORA_RITE, 0.1);
    if (!layer) return;
    CHECK(rite_step_f64(layer, p.L.data(), p.R.data(), p.gL.data(), p.gR.data()) == RITE_OK);
    CHECK(rite_step_count(layer) == 1);
    CHECK(p.L == L0);
    double inner = 0, norm = 0;
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
            double z = 0;
            for (int q = 0; q < r; ++q) z += p.L[i * r + q] * p.R[j * r + q];
            inner += z * p.A[i * n + j];
            norm += z * z;
        }
    CHECK(std::isfinite(norm) && norm > 0);
    CHECK(inner > 0);
    rite_free(layer);
}

void test_adamw_step() {
    Problem p;
    const std::vector<double> L0 = p.L;
    const double lr = 0.01;
    rite_layer *layer = make_layer(RITE_ADAMW, lr);
    if (!layer) return;
    CHECK(rite_step_f64(layer, p.L.data(), p.R.data(), p.gL.data(), p.gR.data()) == RITE_OK);
    CHECK(p.L == L0);
    for (int i = 0; i < n * r; ++i) {
        const double g = p.gR[i];
        const double want = -lr * g / (std::fabs(g) + 1e-8);
        CHECK(std::fabs(p.R[i] - want) <= 1e-12);
    }
    rite_free(layer);
}

}  // namespace

// The rite_step / rite_prepare overloads call the _f32 / _f64 function of
// the buffer type: the same bits as calling it directly.
void test_overloads() {
    Problem p;
    for (int prec = 0; prec < 2; ++prec) {
        rite_desc d = {};
        d.m = m;
        d.n = n;
        d.r = r;
        d.precision = prec ? RITE_FLOAT64 : RITE_FLOAT32;
        rite_layer *a = nullptr, *b = nullptr;
        CHECK(rite_init(&a, &d) == RITE_OK && rite_init(&b, &d) == RITE_OK);
        std::vector<double> Ld(p.L), Rd(m * r > n * r ? m * r : n * r, 0.1), Ld2(Ld), Rd2(Rd);
        std::vector<float> Lf(Ld.begin(), Ld.end()), Rf(Rd.begin(), Rd.end()), Lf2(Lf), Rf2(Rf);
        std::vector<double> gLd(m * r, 0.01), gRd(n * r, -0.02);
        std::vector<float> gLf(gLd.begin(), gLd.end()), gRf(gRd.begin(), gRd.end());
        double sq = 0;
        if (prec) {
            CHECK(rite_step(a, Ld.data(), Rd.data(), gLd.data(), gRd.data()) == RITE_OK);
            CHECK(rite_step_f64(b, Ld2.data(), Rd2.data(), gLd.data(), gRd.data()) == RITE_OK);
            CHECK(Ld == Ld2 && Rd == Rd2);
            CHECK(rite_prepare(a, Ld.data(), Rd.data(), gLd.data(), gRd.data(), &sq) == RITE_OK);
        } else {
            CHECK(rite_step(a, Lf.data(), Rf.data(), gLf.data(), gRf.data()) == RITE_OK);
            CHECK(rite_step_f32(b, Lf2.data(), Rf2.data(), gLf.data(), gRf.data()) == RITE_OK);
            CHECK(Lf == Lf2 && Rf == Rf2);
            CHECK(rite_prepare(a, Lf.data(), Rf.data(), gLf.data(), gRf.data(), &sq) == RITE_OK);
        }
        CHECK(sq > 0);
        rite_free(a);
        rite_free(b);
    }
}

int main() {
    test_overloads();
    test_defaults();
    test_rank_error();
    test_status_strings();
    test_rite_step();
    test_adamw_step();
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("C++%ld: all checks passed\n", static_cast<long>(__cplusplus));
    return 0;
}
