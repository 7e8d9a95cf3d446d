// Merge engine and methods: exact values on small hand-checkable tensors, properties (endpoints,
// sign election, kept fraction, thread and seed independence), agreement with naive reference code
// written here (sort-based top-k, whole-tensor arrays in double), and config errors.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "harness.h"
#include "mergetest.h"
#include "graft/graft.h"

// A model folder with tensors "model.embed_tokens.weight" [2,2], "model.layers.L.w" [2,3] for each
// layer and "model.norm.weight" [2]; values from f(model_seed, tensor, element).
struct tt { const char *name; int n_dims; uint64_t ne[2]; const float *v; };

static void mkmodel(const char *dir, const struct tt *t, int n, int n_layers) {
    struct graft_writer *w;
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_writer_open(dir, NULL, &w, &err)) { harness_fail(__FILE__, __LINE__, "%s", err.msg); return; }
    for (int i = 0; i < n; i++) graft_writer_add_tensor(w, t[i].name, strlen(t[i].name), GRAFT_DTYPE_F32, t[i].n_dims, t[i].ne, &err);
    graft_writer_layout(w, &err);
    for (int i = 0; i < n; i++) {
        uint64_t ne = t[i].n_dims == 2 ? t[i].ne[0] * t[i].ne[1] : t[i].ne[0];
        graft_writer_write(w, i, 0, t[i].v, ne * 4, &err);
    }
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"num_hidden_layers\":%d,\"torch_dtype\":\"float32\"}", n_layers);
    graft_writer_add_file(w, "config.json", cfg, strlen(cfg), &err);
    if (graft_writer_commit(w, &err)) harness_fail(__FILE__, __LINE__, "%s", err.msg);
    graft_writer_free(w);
}

static int run_merge(const char *yaml, const char *out, int threads, uint64_t seed, struct graft_err *err) {
    return merge_yaml(yaml, out, threads, seed, 4, err); // tiny chunks: many chunks even for tiny tensors
}

// Read tensor `name` of model folder `dir` as floats (n elements).
static bool get(const char *dir, const char *name, float *v, size_t n) {
    struct graft_model *m;
    struct graft_err err;
    if (graft_model_open(tpath("%s", dir), &m, &err)) { harness_fail(__FILE__, __LINE__, "%s", err.msg); return false; }
    const struct graft_model_tensor *t = graft_model_find(m, name, strlen(name));
    bool ok = t && t->info->n_elem == n && graft_row_to_f32(t->info->dtype, graft_model_data(m, t), v, n);
    graft_model_close(m);
    if (!ok) harness_fail(__FILE__, __LINE__, "tensor %s missing or wrong size in %s", name, dir);
    return ok;
}

#define NEAR(a, b) (fabs((double)(a) - (double)(b)) <= 1e-6 * (1 + fabs((double)(b))))
#define CHECK_VEC(got, ...) do { const float want_[] = {__VA_ARGS__}; for (size_t k_ = 0; k_ < sizeof want_ / sizeof want_[0]; k_++) \
    if (!NEAR((got)[k_], want_[k_])) { harness_fail(__FILE__, __LINE__, "element %zu: %.9g != %.9g", k_, (double)(got)[k_], (double)want_[k_]); return; } } while (0)

// Three one-layer models: base, a, b.
static void three_models(void) {
    static const float eb[4] = {1, 2, 3, 4}, ea[4] = {2, 2, 3, 5}, ebb[4] = {0, 2, 4, 4};
    static const float wb[6] = {0, 0, 0, 0, 0, 0}, wa[6] = {1, -2, 3, 0.5f, 0, -1}, wbb[6] = {-3, 1, 1, 0.25f, 0, 2};
    static const float nb[2] = {1, 1}, na[2] = {1.5f, 1}, nbb[2] = {0.5f, 3};
    struct tt base[] = {{"model.embed_tokens.weight", 2, {2, 2}, eb}, {"model.layers.0.w", 2, {2, 3}, wb}, {"model.norm.weight", 1, {2, 0}, nb}};
    struct tt a[] = {{"model.embed_tokens.weight", 2, {2, 2}, ea}, {"model.layers.0.w", 2, {2, 3}, wa}, {"model.norm.weight", 1, {2, 0}, na}};
    struct tt b[] = {{"model.embed_tokens.weight", 2, {2, 2}, ebb}, {"model.layers.0.w", 2, {2, 3}, wbb}, {"model.norm.weight", 1, {2, 0}, nbb}};
    mkmodel(tpath("base"), base, 3, 1);
    mkmodel(tpath("a"), a, 3, 1);
    mkmodel(tpath("b"), b, 3, 1);
}

TEST(merge_linear_exact) {
    three_models();
    CHECK_OK();
    struct graft_err err;
    CHECK_EQ(run_merge("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: 1.0}\n  - model: b\n    parameters: {weight: 3.0}\n", "o", 2, 0, &err), 0);
    float v[6];
    CHECK(get("o", "model.layers.0.w", v, 6));
    CHECK_VEC(v, (1 - 9) / 4.0f, (-2 + 3) / 4.0f, (3 + 3) / 4.0f, (0.5f + 0.75f) / 4.0f, 0, (-1 + 6) / 4.0f);
    CHECK(get("o", "model.norm.weight", v, 2));
    CHECK_VEC(v, (1.5f + 1.5f) / 4, (1 + 9) / 4.0f);
    // normalize: false, weights via a filter and a top-level default
    CHECK_EQ(run_merge("merge_method: linear\nmodels:\n  - model: a\n  - model: b\nparameters:\n  normalize: false\n  weight:\n"
                       "    - filter: norm\n      value: 2\n    - value: 1\n", "o2", 1, 0, &err), 0);
    CHECK(get("o2", "model.norm.weight", v, 2));
    CHECK_VEC(v, 4, 8);
    CHECK(get("o2", "model.layers.0.w", v, 6));
    CHECK_VEC(v, -2, -1, 4, 0.75f, 0, 1);
    char *card = tread(tpath("o/README.md"), NULL);
    CHECK_CONTAINS(card, "merge_method: linear");
    free(card);
    CHECK(texists(tpath("o/mergekit_config.yml")));
}

TEST(merge_task_arithmetic_and_ties_exact) {
    three_models();
    CHECK_OK();
    struct graft_err err;
    // TA: B + λ Σ w_i δ_i ; δ_a = wa, δ_b = wbb (base is zero)
    CHECK_EQ(run_merge("merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 0.5}\n"
                       "  - model: b\n    parameters: {weight: 1.0}\nparameters: {lambda: 2}\n", "ta", 3, 0, &err), 0);
    float v[6];
    CHECK(get("ta", "model.layers.0.w", v, 6));
    CHECK_VEC(v, 2 * (0.5f - 3), 2 * (-1 + 1), 2 * (1.5f + 1), 2 * (0.25f + 0.25f), 0, 2 * (-0.5f + 2));
    // TIES, density 1 (no pruning), weights 1: sign election by the sum, mean over agreeing models
    //   e0: δ = (1, -3) sum -2 → maj − → keep -3 → -3 ; e1: (-2, 1) → − → -2 ; e2: (3, 1) → + → 2
    //   e3: (0.5, 0.25) → 0.375 ; e4: (0, 0) → 0 ; e5: (-1, 2) → + → 2
    CHECK_EQ(run_merge("merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1}\n"
                       "  - model: b\n    parameters: {weight: 1}\n", "ties", 2, 0, &err), 0);
    CHECK(get("ties", "model.layers.0.w", v, 6));
    CHECK_VEC(v, -3, -2, 2, 0.375f, 0, 2);
    // TIES with density 0.5: a keeps its 3 largest |δ| {e2 3, e1 -2, e0 1 (first of the tied 1s)},
    //   b keeps {e0 -3, e5 2, e1 1 (first of the tied 1s)} → e0 -3, e1 -2, e2 3, e3 0, e4 0, e5 2
    CHECK_EQ(run_merge("merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.5}\n"
                       "  - model: b\n    parameters: {weight: 1, density: 0.5}\n", "ties5", 4, 0, &err), 0);
    CHECK(get("ties5", "model.layers.0.w", v, 6));
    CHECK_VEC(v, -3, -2, 3, 0, 0, 2);
    // embeddings and norms go through the same method: ties on the embedding with density 1
    CHECK(get("ties", "model.embed_tokens.weight", v, 4));
    CHECK_VEC(v, 2, 2, 4, 5); // δa = (1,0,0,1), δb = (-1,0,1,0): e0 sum 0 → + → a: 1; e2 → b: 1; e3 → a: 1
}

// Models p and q, each one tensor "model.norm.weight": p = (1, 0), q = (0, 1).
static void orthogonal_pair(void) {
    static const float x0[2] = {1, 0}, x1[2] = {0, 1};
    struct tt m0[] = {{"model.norm.weight", 1, {2, 0}, x0}}, m1[] = {{"model.norm.weight", 1, {2, 0}, x1}};
    mkmodel(tpath("p"), m0, 1, 0);
    mkmodel(tpath("q"), m1, 1, 0);
}

TEST(merge_slerp_endpoints_and_angle) {
    // two orthogonal unit-norm tensors: slerp at t = 0.5 gives (v0 + v1)/√2 · ... = sin(π/4)/sin(π/2) each
    orthogonal_pair();
    struct graft_err err;
    float v[2];
    CHECK_EQ(run_merge("merge_method: slerp\nbase_model: p\nmodels:\n  - model: p\n  - model: q\nparameters: {t: 0.5}\n", "s", 1, 0, &err), 0);
    CHECK(get("s", "model.norm.weight", v, 2));
    CHECK_VEC(v, 0.70710678f, 0.70710678f);
    CHECK_EQ(run_merge("merge_method: slerp\nbase_model: p\nmodels:\n  - model: p\n  - model: q\nparameters: {t: 0}\n", "s0", 1, 0, &err), 0);
    CHECK(get("s0", "model.norm.weight", v, 2));
    CHECK_VEC(v, 1, 0);
    CHECK_EQ(run_merge("merge_method: slerp\nbase_model: p\nmodels:\n  - model: p\n  - model: q\nparameters: {t: 1}\n", "s1", 1, 0, &err), 0);
    CHECK(get("s1", "model.norm.weight", v, 2));
    CHECK_VEC(v, 0, 1);
    // nearswap: |B − b| = 1 everywhere; t = 0.25 → w = 0.25
    CHECK_EQ(run_merge("merge_method: nearswap\nbase_model: p\nmodels:\n  - model: q\nparameters: {t: 0.25}\n", "ns", 1, 0, &err), 0);
    CHECK(get("ns", "model.norm.weight", v, 2));
    CHECK_VEC(v, 0.75f, 0.25f);
}

TEST(merge_passthrough_frankenmerge) {
    // a: 3 layers, b: 3 layers → slices a[0,2) + b[1,3) = 4 layers, renumbered; config updated
    float l[6][6];
    struct tt a[5], b[5];
    static const float e[4] = {1, 1, 1, 1}, n2[2] = {7, 7};
    char names[6][32];
    for (int i = 0; i < 3; i++) {
        snprintf(names[i], 32, "model.layers.%d.w", i);
        snprintf(names[3 + i], 32, "model.layers.%d.w", i);
        for (int k = 0; k < 6; k++) l[i][k] = 10.0f * (float)i + (float)k, l[3 + i][k] = 100.0f + 10.0f * (float)i + (float)k;
        a[1 + i] = (struct tt){names[i], 2, {2, 3}, l[i]};
        b[1 + i] = (struct tt){names[3 + i], 2, {2, 3}, l[3 + i]};
    }
    a[0] = b[0] = (struct tt){"model.embed_tokens.weight", 2, {2, 2}, e};
    a[4] = b[4] = (struct tt){"model.norm.weight", 1, {2, 0}, n2};
    mkmodel(tpath("a"), a, 5, 3);
    mkmodel(tpath("b"), b, 5, 3);
    CHECK_OK();
    struct graft_err err;
    CHECK_EQ(run_merge("slices:\n  - sources: [{model: a, layer_range: [0, 2]}]\n  - sources:\n      - model: b\n        layer_range: [1, 3]\n"
                       "        parameters: {scale: [{filter: layers, value: 0.5}, {value: 1}]}\nmerge_method: passthrough\n", "f", 2, 0, &err), 0);
    float v[6];
    CHECK(get("f", "model.layers.0.w", v, 6)); CHECK_VEC(v, 0, 1, 2, 3, 4, 5);
    CHECK(get("f", "model.layers.1.w", v, 6)); CHECK_VEC(v, 10, 11, 12, 13, 14, 15);
    CHECK(get("f", "model.layers.2.w", v, 6)); CHECK_VEC(v, 55, 55.5f, 56, 56.5f, 57, 57.5f);
    CHECK(get("f", "model.layers.3.w", v, 6)); CHECK_VEC(v, 60, 60.5f, 61, 61.5f, 62, 62.5f);
    char *cfg = tread(tpath("f/config.json"), NULL);
    CHECK_CONTAINS(cfg, "\"num_hidden_layers\": 4");
    free(cfg);
    struct graft_model *m;
    CHECK_EQ(graft_model_open(tpath("f"), &m, &err), 0);
    CHECK_EQ(graft_model_n_tensors(m), 6);
    graft_model_close(m);
}

// Naive reference for TIES with pruning on a whole tensor, in double with a sort-based top-k.
static int cmp_desc(const void *a, const void *b) {
    const double *x = a, *y = b; // pairs (|δ|, index): larger first, then lower index
    if (x[0] != y[0]) return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? -1 : 1;
}
static void ref_ties(const float *B, const float *const *X, const double *w, const double *d, int N, size_t n, double *out) {
    double *keep = calloc(n * (size_t)N, sizeof *keep), *pr = malloc(2 * n * sizeof *pr);
    for (int i = 0; i < N; i++) {
        for (size_t e = 0; e < n; e++) pr[2 * e] = fabs((double)X[i][e] - B[e]), pr[2 * e + 1] = (double)e;
        qsort(pr, n, 2 * sizeof *pr, cmp_desc);
        size_t k = d[i] >= 1 ? n : (size_t)(d[i] * (double)n);
        for (size_t r = 0; r < k; r++) keep[(size_t)i * n + (size_t)pr[2 * r + 1]] = 1;
    }
    for (size_t e = 0; e < n; e++) {
        double sum = 0, wd[8];
        for (int i = 0; i < N; i++) sum += wd[i] = w[i] * ((double)X[i][e] - B[e]) * keep[(size_t)i * n + e];
        double maj = sum >= 0 ? 1 : -1, mixed = 0, div = 0;
        for (int i = 0; i < N; i++)
            if ((wd[i] > 0 && maj > 0) || (wd[i] < 0 && maj < 0)) mixed += wd[i], div += w[i];
        out[e] = B[e] + mixed / (div == 0 ? 1 : div);
    }
    free(keep), free(pr);
}

TEST(merge_ties_matches_reference_and_threads) {
    struct graft_err err;
    struct graft_synth_params sp = graft_synth_default_params();
    sp.dtype = GRAFT_DTYPE_F32;
    CHECK_EQ(graft_synth(tpath("base"), &sp, &err), 0);
    struct graft_model *bm, *am, *cm;
    CHECK_EQ(graft_model_open(tpath("base"), &bm, &err), 0);
    sp.like = bm, sp.seed = 11, sp.delta = 0.01f;
    CHECK_EQ(graft_synth(tpath("a"), &sp, &err), 0);
    sp.seed = 12;
    CHECK_EQ(graft_synth(tpath("c"), &sp, &err), 0);
    const char *y = "merge_method: ties\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 0.7, density: 0.3}\n"
                    "  - model: c\n    parameters: {weight: 0.4, density: 0.6}\ndtype: float32\n";
    CHECK_EQ(run_merge(y, "t1", 1, 0, &err), 0);
    CHECK_EQ(run_merge(y, "t3", 3, 0, &err), 0);
    size_t la, lb;
    char *x1 = tread(tpath("t1/model.safetensors"), &la), *x3 = tread(tpath("t3/model.safetensors"), &lb);
    CHECK(la == lb && !memcmp(x1, x3, la)); // bit-identical for any thread count
    free(x1), free(x3);
    struct graft_model *om;
    CHECK_EQ(graft_model_open(tpath("a"), &am, &err), 0);
    CHECK_EQ(graft_model_open(tpath("c"), &cm, &err), 0);
    CHECK_EQ(graft_model_open(tpath("t1"), &om, &err), 0);
    const char *name = "model.layers.1.mlp.up_proj.weight";
    size_t n = graft_model_find(bm, name, strlen(name))->info->n_elem;
    float *B = malloc(n * 4), *A = malloc(n * 4), *C = malloc(n * 4), *O = malloc(n * 4);
    double *R = malloc(n * 8);
    graft_row_to_f32(GRAFT_DTYPE_F32, graft_model_data(bm, graft_model_find(bm, name, strlen(name))), B, n);
    graft_row_to_f32(GRAFT_DTYPE_F32, graft_model_data(am, graft_model_find(am, name, strlen(name))), A, n);
    graft_row_to_f32(GRAFT_DTYPE_F32, graft_model_data(cm, graft_model_find(cm, name, strlen(name))), C, n);
    graft_row_to_f32(GRAFT_DTYPE_F32, graft_model_data(om, graft_model_find(om, name, strlen(name))), O, n);
    const float *X[2] = {A, C};
    double w[2] = {0.7, 0.4}, d[2] = {0.3, 0.6};
    ref_ties(B, X, w, d, 2, n, R);
    size_t bad = 0;
    for (size_t e = 0; e < n; e++) bad += fabs(R[e] - O[e]) > 1e-6;
    CHECK_EQ(bad, 0);
    free(B), free(A), free(C), free(O), free(R);
    graft_model_close(om), graft_model_close(am), graft_model_close(cm), graft_model_close(bm);
}

TEST(merge_dare_fraction_and_seed) {
    struct graft_err err;
    struct graft_synth_params sp = graft_synth_default_params();
    sp.dtype = GRAFT_DTYPE_F32;
    CHECK_EQ(graft_synth(tpath("base"), &sp, &err), 0);
    struct graft_model *bm;
    CHECK_EQ(graft_model_open(tpath("base"), &bm, &err), 0);
    sp.like = bm, sp.seed = 5;
    CHECK_EQ(graft_synth(tpath("a"), &sp, &err), 0);
    const char *y = "merge_method: dare_linear\nbase_model: base\nmodels:\n  - model: a\n    parameters: {weight: 1, density: 0.3}\n"
                    "parameters: {rescale: false}\n";
    CHECK_EQ(run_merge(y, "d1", 1, 42, &err), 0);
    CHECK_EQ(run_merge(y, "d2", 4, 42, &err), 0);
    CHECK_EQ(run_merge(y, "d3", 2, 43, &err), 0);
    size_t l1, l2, l3;
    char *a = tread(tpath("d1/model.safetensors"), &l1), *b = tread(tpath("d2/model.safetensors"), &l2), *c = tread(tpath("d3/model.safetensors"), &l3);
    CHECK(l1 == l2 && !memcmp(a, b, l1));  // same seed, any threads: same bytes
    CHECK(l1 == l3 && memcmp(a, c, l1));   // another seed: another mask
    free(a), free(b), free(c);
    // kept fraction ≈ density: count elements that moved away from the base
    const char *name = "model.embed_tokens.weight";
    size_t n = 256 * 64;
    float *B = malloc(n * 4), *O = malloc(n * 4);
    CHECK(get("base", name, B, n) && get("d1", name, O, n));
    size_t moved = 0;
    for (size_t e = 0; e < n; e++) moved += O[e] != B[e];
    CHECK(fabs((double)moved / (double)n - 0.3) < 0.02);
    free(B), free(O);
    graft_model_close(bm);
}

// Encoder–decoder names (T5): modules encoder / decoder / shared, each with its own method parameters
// and layers; the top-level lm_head (no marker) goes to `shared`.
TEST(merge_modules_exact) {
    static const float x[2][8] = {{1, 2, 3, 4, 5, 6, 7, 8}, {3, 6, 9, 12, 15, 18, 21, 24}};
    for (int m = 0; m < 2; m++) {
        struct tt t[] = {{"decoder.block.0.w", 1, {2, 0}, x[m]},     {"decoder.block.1.w", 1, {2, 0}, x[m] + 2},
                         {"encoder.block.0.w", 1, {2, 0}, x[m] + 4}, {"encoder.final_layer_norm.weight", 1, {2, 0}, x[m] + 6},
                         {"lm_head.weight", 1, {2, 0}, x[m] + 2},    {"shared.weight", 1, {2, 0}, x[m]}};
        mkmodel(tpath(m ? "t5b" : "t5a"), t, 6, 2);
    }
    CHECK_OK();
    struct graft_err err;
    // decoder: a's layer 1 then b's layers 0–1 stacked (3 layers), weight from the module level;
    // encoder: one layer, so t = 1 picks the last gradient value (b only); shared (with lm_head):
    // equal weights from the top level.
    CHECK_EQ(run_merge("merge_method: linear\nmodules:\n"
                       "  decoder:\n    slices:\n      - sources: [{model: t5a, layer_range: [1, 2]}]\n"
                       "      - sources: [{model: t5b, layer_range: [0, 2]}]\n    parameters: {weight: 2}\n"
                       "  encoder:\n    models:\n      - model: t5a\n        parameters: {weight: [1, 0]}\n"
                       "      - model: t5b\n        parameters: {weight: [0, 1]}\n"
                       "  shared:\n    models: [{model: t5a}, {model: t5b}]\n"
                       "parameters: {weight: 1}\n", "mod", 2, 0, &err), 0);
    float v[2];
    CHECK(get("mod", "decoder.block.0.w", v, 2)); // a layer 1
    CHECK_VEC(v, 3, 4);
    CHECK(get("mod", "decoder.block.1.w", v, 2)); // b layer 0
    CHECK_VEC(v, 3, 6);
    CHECK(get("mod", "decoder.block.2.w", v, 2)); // b layer 1
    CHECK_VEC(v, 9, 12);
    CHECK(get("mod", "encoder.block.0.w", v, 2)); // t = 1 in a one-layer module: b
    CHECK_VEC(v, 15, 18);
    CHECK(get("mod", "encoder.final_layer_norm.weight", v, 2)); // not a layer: t = 0, a
    CHECK_VEC(v, 7, 8);
    CHECK(get("mod", "shared.weight", v, 2)); // mean of (1,2) and (3,6)
    CHECK_VEC(v, 2, 4);
    CHECK(get("mod", "lm_head.weight", v, 2)); // mean of (3,4) and (9,12)
    CHECK_VEC(v, 6, 8);
    // T5 counts decoder layers in num_decoder_layers: absent from this config, so nothing changes
    char *cfg = tread(tpath("mod/config.json"), NULL);
    CHECK_CONTAINS(cfg, "\"num_hidden_layers\": 2");
    free(cfg);
    // a module the config does not list: its tensors would be lost, so it is an error
    CHECK_EQ(run_merge("merge_method: linear\nmodules:\n  decoder: {models: [{model: t5a}]}\n  shared: {models: [{model: t5a}]}\n"
                       "parameters: {weight: 1}\n", "bad", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "tensor encoder.block.0.w of 't5a' belongs to module 'encoder'");
    CHECK(!texists(tpath("bad")));
}

TEST(merge_config_errors) {
    three_models();
    CHECK_OK();
    struct { const char *yaml; const char *msg; } cases[] = {
        {"merge_method: frobnicate\nmodels: [{model: a}]\n", "unknown merge_method 'frobnicate'"},
        {"merge_method: ties\nmodels: [{model: a, parameters: {weight: 1}}]\n", "needs base_model"},
        {"merge_method: ties\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1, density: 1.5}}]\n", "density 1.5 is out of range"},
        {"merge_method: linear\nmodels: [{model: a}]\n", "missing required parameter 'weight'"},
        {"merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [0, 5]}]\n", "past the 1 layers"},
        {"merge_method: linear\nmodles: [{model: a}]\n", "unknown key 'modles'"},
        {"merge_method: linear\nmodels: [{model: nothere, parameters: {weight: 1}}]\n", "not found"},
        {"merge_method: linear\nmodels: [{model: org/repo, parameters: {weight: 1}}]\n", "works offline"},
        {"merge_method: linear\nmodels: [{model: a+lora, parameters: {weight: 1}}]\n", "model 'lora' not found"}, // the adapter folder
        {"merge_method: linear\nmodels: [{model: a+b+c, parameters: {weight: 1}}]\n", "model+lora"},
        {"merge_method: slerp\nbase_model: base\nmodels: [{model: a}, {model: b}]\nparameters: {t: 0.5}\n", "exactly 1 model"},
        {"merge_method: della\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1, density: 0.1}}]\n", "epsilon"},
        {"merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}\n", "invalid YAML"},
        {"merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}]\ndtype: int4\n", "unsupported dtype"},
        {"- a\n- b\n", "top level must be a mapping"},
        {"merge_method: linear\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1}}]\n", "has no 'weight'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct graft_err err;
        int rc = run_merge(cases[i].yaml, "bad", 1, 0, &err);
        if (rc != GRAFT_E_CONFIG || !strstr(err.msg, cases[i].msg) || !strstr(err.msg, ".yml")) {
            harness_fail(__FILE__, __LINE__, "case %zu: rc %d, '%s' (want '%s')", i, rc, err.msg, cases[i].msg);
            return;
        }
        CHECK(!texists(tpath("bad")));
    }
    // shape mismatch on a non-embedding tensor with a method that cannot skip models
    static const float w4[4] = {1, 2, 3, 4}, e[4] = {0};
    struct tt odd[] = {{"model.embed_tokens.weight", 2, {2, 2}, e}, {"model.layers.0.w", 2, {2, 2}, w4}, {"model.norm.weight", 1, {2, 0}, w4}};
    mkmodel(tpath("odd"), odd, 3, 1);
    struct graft_err err;
    CHECK_EQ(run_merge("merge_method: linear\nmodels: [{model: a, parameters: {weight: 1}}, {model: odd, parameters: {weight: 1}}]\n", "bad", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "does not match");
}

TEST(merge_spherical_means) {
    // orthogonal unit vectors: karcher, multislerp and nuslerp (equal weights) all give (1, 1)/√2
    orthogonal_pair();
    struct graft_err err;
    float v[2];
    const char *cfgs[] = {
        "merge_method: karcher\nmodels: [{model: p}, {model: q}]\n",
        "merge_method: multislerp\nmodels: [{model: p, parameters: {weight: 1}}, {model: q, parameters: {weight: 1}}]\n",
        "merge_method: nuslerp\nmodels: [{model: p, parameters: {weight: 1}}, {model: q, parameters: {weight: 1}}]\n",
        "merge_method: nuslerp\nmodels: [{model: p, parameters: {weight: 1}}, {model: q, parameters: {weight: 1}}]\nparameters: {nuslerp_flatten: false}\n",
    };
    for (int i = 0; i < 4; i++) {
        char out[16];
        snprintf(out, sizeof out, "o%d", i & 7);
        if (run_merge(cfgs[i], out, 2, 0, &err)) { harness_fail(__FILE__, __LINE__, "%s: %s", cfgs[i], err.msg); return; }
        CHECK(get(out, "model.norm.weight", v, 2));
        CHECK_VEC(v, 0.70710678f, 0.70710678f);
    }
    // nuslerp weights 1:3 → t = 0.75 → (cos 67.5°, sin 67.5°)
    CHECK_EQ(run_merge("merge_method: nuslerp\nmodels: [{model: p, parameters: {weight: 1}}, {model: q, parameters: {weight: 3}}]\n", "o9", 1, 0, &err), 0);
    CHECK(get("o9", "model.norm.weight", v, 2));
    CHECK_VEC(v, 0.38268343f, 0.92387953f);
}

TEST(merge_nuslerp_row_wise) {
    // [3, 2] tensors. Columns (row_wise): j=0 p=(1,0,2) ⊥ q=(0,1,0) → sin(45°)/sin(90°) of each;
    // j=1 p = q = (1,1,0), colinear → LERP. Rows instead (flatten false): row 0 (1,1) vs (0,1) at 45°.
    static const float p[6] = {1, 1, 0, 1, 2, 0}, q[6] = {0, 1, 1, 1, 0, 0};
    struct tt mp[] = {{"model.norm.weight", 2, {3, 2}, p}}, mq[] = {{"model.norm.weight", 2, {3, 2}, q}};
    mkmodel(tpath("p"), mp, 1, 0);
    mkmodel(tpath("q"), mq, 1, 0);
    struct graft_err err;
    float v[6];
    CHECK_EQ(run_merge("merge_method: nuslerp\nmodels: [{model: p, parameters: {weight: 1}}, {model: q, parameters: {weight: 1}}]\n"
                       "parameters: {nuslerp_flatten: false, nuslerp_row_wise: true}\n", "rw", 2, 0, &err), 0);
    CHECK(get("rw", "model.norm.weight", v, 6));
    CHECK_VEC(v, 0.70710678f, 1, 0.70710678f, 1, 1.41421356f, 0);
    CHECK_EQ(run_merge("merge_method: nuslerp\nmodels: [{model: p, parameters: {weight: 1}}, {model: q, parameters: {weight: 1}}]\n"
                       "parameters: {nuslerp_flatten: false}\n", "rows", 2, 0, &err), 0);
    CHECK(get("rows", "model.norm.weight", v, 6));
    const float k = 0.38268343f / 0.70710678f; // sin(22.5°)/sin(45°)
    CHECK_VEC(v, k, 2 * k, k, 2 * k, 1.41421356f, 0); // row 2: (2,0) vs (0,0): |q| clamps, cos 0 → θ = 90°, sin 45° · (2,0)
}

TEST(merge_ram_and_model_stock_exact) {
    static const float z[3] = {0, 0, 0}, a[3] = {1, 2, 0}, b[3] = {3, 0, 0};
    struct tt mz[] = {{"model.norm.weight", 1, {3, 0}, z}}, ma[] = {{"model.norm.weight", 1, {3, 0}, a}}, mb[] = {{"model.norm.weight", 1, {3, 0}, b}};
    mkmodel(tpath("z"), mz, 1, 0);
    mkmodel(tpath("a"), ma, 1, 0);
    mkmodel(tpath("b"), mb, 1, 0);
    struct graft_err err;
    float v[3];
    CHECK_EQ(run_merge("merge_method: ram\nbase_model: z\nmodels: [{model: a}, {model: b}]\n", "r", 2, 0, &err), 0);
    CHECK(get("r", "model.norm.weight", v, 3));
    CHECK_VEC(v, 2, 2, 0); // e0 changed by both → mean; e1 only by a → a's change
    CHECK_EQ(run_merge("merge_method: ramplus_tl\nbase_model: z\nmodels: [{model: a}, {model: b}]\n", "rp", 2, 0, &err), 0);
    CHECK(get("rp", "model.norm.weight", v, 3));
    CHECK_VEC(v, 2, 2.04f, 0); // λ_a = 1 + 0.1·clamp(1/1, 0, 0.2) = 1.02
    // sce: W_a = mean(τ_a²)/Σ = (5/3)/(5/3 + 3) = 5/14, W_b = 9/14; e0 both positive → 1·5/14 + 3·9/14
    CHECK_EQ(run_merge("merge_method: sce\nbase_model: z\nmodels: [{model: a}, {model: b}]\n", "sce", 2, 0, &err), 0);
    CHECK(get("sce", "model.norm.weight", v, 3));
    CHECK_VEC(v, 32.0f / 14, 2, 0);
    // select_topk 0.5: variances (1, 1, 0) → 2 non-zero → keep 1 → e0 (ties by position); W = (0.1, 0.9)
    CHECK_EQ(run_merge("merge_method: sce\nbase_model: z\nmodels: [{model: a}, {model: b}]\nparameters: {select_topk: 0.5}\n", "sce2", 2, 0, &err), 0);
    CHECK(get("sce2", "model.norm.weight", v, 3));
    CHECK_VEC(v, 2.8f, 0, 0);
    // model_stock: o_a = (1,2,0), o_b = (3,0,0): cos = 3/(√5·3) → t = 2cos/(1+cos); R = t·mean
    CHECK_EQ(run_merge("merge_method: model_stock\nbase_model: z\nmodels: [{model: a}, {model: b}]\n", "ms", 2, 0, &err), 0);
    CHECK(get("ms", "model.norm.weight", v, 3));
    double c = 1 / sqrt(5.0), t = 2 * c / (1 + c);
    CHECK_VEC(v, (float)(t * 2), (float)(t * 1), 0);
}

TEST(merge_arcee_fusion_exact) {
    // one row: imp = |b − a|·kl with one kl; sorted imp = kl·(1..8, 100): Q25 = 3kl, Q50 = 5kl, Q75 = 7kl,
    // thr = 5kl + 1.5·4kl = 11kl → only the last element takes b's value
    static const float a[9] = {0}, b[9] = {1, 2, 3, 4, 5, 6, 7, 8, 100};
    struct tt ma[] = {{"model.norm.weight", 1, {9, 0}, a}}, mb[] = {{"model.norm.weight", 1, {9, 0}, b}};
    mkmodel(tpath("a"), ma, 1, 0);
    mkmodel(tpath("b"), mb, 1, 0);
    struct graft_err err;
    float v[9];
    CHECK_EQ(run_merge("merge_method: arcee_fusion\nbase_model: a\nmodels: [{model: a}, {model: b}]\n", "af", 2, 0, &err), 0);
    CHECK(get("af", "model.norm.weight", v, 9));
    CHECK_VEC(v, 0, 0, 0, 0, 0, 0, 0, 0, 100);
}

// The SVD-based merges on matrices whose SVDs are known by hand (base 0, so outputs are Δ·α):
// iso_c flattens diag(3, 1) to diag(2, 2) and keeps the sum of equal-norm orthogonal rank-1 tasks;
// iso_cts with common_space_fraction 0.5 on 4×4 diagonal tasks keeps the top-2 common directions
// (4, 3) and one task-specific direction per task (1 and 2): mean 2.5 → 2.5·I; with the default 0.8
// on 2×2, round(0.5·…) leaves no task-specific room and it equals iso_c; tsv with three orthogonal
// rank-1 tasks on 3×3 keeps each task's direction: the plain sum; with three generic 4×4 tasks it keeps
// one direction per task: rank 3. Vectors and scalars: the mean task vector. Threads do not matter.
static void diag_models(const char *prefix, int n, const float *const *d, int count) {
    for (int t = 0; t < count; t++) {
        float w[16] = {0}, nv[4] = {0};
        for (int i = 0; i < n; i++) w[i * n + i] = d[t][i], nv[i] = d[t][i];
        struct tt x[] = {{"model.layers.0.w", 2, {(uint64_t)n, (uint64_t)n}, w}, {"model.norm.weight", 1, {(uint64_t)n, 0}, nv}};
        mkmodel(tpath("%s%d", prefix, t), x, 2, 1);
    }
}

static const float *z16(void) { static const float z[16] = {0}; return z; }

TEST(merge_isotropic_and_tsv_by_hand) {
    struct graft_err err;
    float v[16];
    static const float z[4] = {0}, a1[2] = {3, 0}, a2[2] = {0, 1}, e1[2] = {2, 0}, e2[2] = {0, 2};
    const float *two[] = {z, a1, a2}, *eq[] = {z, e1, e2};
    diag_models("d", 2, two, 3);
    diag_models("e", 2, eq, 3);
    CHECK_OK();
    CHECK_EQ(run_merge("merge_method: iso_c\nbase_model: d0\nmodels: [{model: d1}, {model: d2}]\n", "ic", 2, 0, &err), 0);
    CHECK(get("ic", "model.layers.0.w", v, 4));
    CHECK_VEC(v, 2, 0, 0, 2);
    CHECK(get("ic", "model.norm.weight", v, 2));
    CHECK_VEC(v, 1.5f, 0.5f); // mean task vector
    CHECK_EQ(run_merge("merge_method: iso_c\nbase_model: e0\nmodels: [{model: e1}, {model: e2}]\nparameters: {scaling_factor: 0.5}\n", "ie", 3, 0, &err), 0);
    CHECK(get("ie", "model.layers.0.w", v, 4));
    CHECK_VEC(v, 1, 0, 0, 1); // = 0.5 · (τ1 + τ2)
    CHECK_EQ(run_merge("merge_method: iso_cts\nbase_model: d0\nmodels: [{model: d1}, {model: d2}]\n", "icts2", 2, 0, &err), 0);
    CHECK(get("icts2", "model.layers.0.w", v, 4));
    CHECK_VEC(v, 2, 0, 0, 2);
    static const float t1[4] = {4, 0, 1, 0}, t2[4] = {0, 3, 0, 2};
    const float *four[] = {z, t1, t2};
    diag_models("f", 4, four, 3);
    CHECK_EQ(run_merge("merge_method: iso_cts\nbase_model: f0\nmodels: [{model: f1}, {model: f2}]\nparameters: {common_space_fraction: 0.5}\n", "icts", 1, 0, &err), 0);
    CHECK(get("icts", "model.layers.0.w", v, 16));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) CHECK(fabs(v[i * 4 + j] - (i == j ? 2.5 : 0)) < 1e-5);
    static const float s1[3] = {3, 0, 0}, s2[3] = {0, 2, 0}, s3[3] = {0, 0, 1};
    const float *three[] = {z, s1, s2, s3};
    diag_models("g", 3, three, 4);
    CHECK_EQ(run_merge("merge_method: tsv\nbase_model: g0\nmodels: [{model: g1}, {model: g2}, {model: g3}]\n", "tsv", 2, 0, &err), 0);
    CHECK(get("tsv", "model.layers.0.w", v, 9));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) CHECK(fabs(v[i * 3 + j] - (i == j ? 3 - i : 0)) < 1e-5);
    // generic 4×4 tasks, T = 3: one direction each → Δ has rank ≤ 3 (det 0), same for 1 and 4 threads
    float w[3][16];
    for (int t = 0; t < 3; t++) {
        for (int i = 0; i < 16; i++) w[t][i] = (float)sin(1.0 + 7.0 * t + 3.1 * i);
        struct tt x[] = {{"model.layers.0.w", 2, {4, 4}, w[t]}, {"model.norm.weight", 1, {4, 0}, w[t]}};
        mkmodel(tpath("h%d", t + 1), x, 2, 1);
    }
    struct tt x0[] = {{"model.layers.0.w", 2, {4, 4}, z16()}, {"model.norm.weight", 1, {4, 0}, z}};
    mkmodel(tpath("h0"), x0, 2, 1);
    CHECK_OK();
    CHECK_EQ(run_merge("merge_method: tsv\nbase_model: h0\nmodels: [{model: h1}, {model: h2}, {model: h3}]\n", "th1", 1, 0, &err), 0);
    CHECK_EQ(run_merge("merge_method: tsv\nbase_model: h0\nmodels: [{model: h1}, {model: h2}, {model: h3}]\n", "th4", 4, 0, &err), 0);
    float u[16];
    CHECK(get("th1", "model.layers.0.w", v, 16) && get("th4", "model.layers.0.w", u, 16));
    CHECK(!memcmp(u, v, sizeof u));
    double m[4][4], det = 1, nrm = 0;
    for (int i = 0; i < 16; i++) m[i / 4][i % 4] = v[i], nrm += (double)v[i] * v[i];
    for (int c = 0; c < 4; c++) { // Gaussian elimination with partial pivoting
        int p = c;
        for (int r = c + 1; r < 4; r++) if (fabs(m[r][c]) > fabs(m[p][c])) p = r;
        if (p != c) { for (int k = 0; k < 4; k++) { double tmp = m[c][k]; m[c][k] = m[p][k]; m[p][k] = tmp; } det = -det; }
        det *= m[c][c];
        for (int r = c + 1; r < 4 && m[c][c] != 0; r++) { double f = m[r][c] / m[c][c]; for (int k = c; k < 4; k++) m[r][k] -= f * m[c][k]; }
    }
    CHECK(fabs(det) < 1e-4 * nrm * nrm);
}

// pcb with one task: β grows with |τ|, so pcb_ratio keeps the top fraction of entries by magnitude
// (minmax maps the threshold entry itself to 0) and the kept ones come back as τc·λ·s / s = λ·τc.
// τ = (1, −2, 0.5, 4), d = 4: the reference's upper clip index int(4·(1 − 1e-4) − 1) = 2 clips |τ| at
// the third smallest, 2, so τc = (1, −2, 0.5, 2). Ratio 1 drops only the smallest (0.5); ratio 0.5
// keeps only the last (β = e·tanh(16) > e·tanh(4)), times λ = 0.5.
TEST(merge_pcb_by_hand) {
    static const float z[4] = {0}, t[4] = {1, -2, 0.5f, 4};
    struct tt mz[] = {{"model.norm.weight", 1, {4, 0}, z}}, mt_[] = {{"model.norm.weight", 1, {4, 0}, t}};
    mkmodel(tpath("z"), mz, 1, 0);
    mkmodel(tpath("t"), mt_, 1, 0);
    struct graft_err err;
    float v[4];
    CHECK_EQ(run_merge("merge_method: pcb\nbase_model: z\nmodels: [{model: t}]\nparameters: {pcb_ratio: 1}\n", "p1", 2, 0, &err), 0);
    CHECK(get("p1", "model.norm.weight", v, 4));
    CHECK_VEC(v, 1, -2, 0, 2);
    CHECK_EQ(run_merge("merge_method: pcb\nbase_model: z\nmodels: [{model: t, parameters: {weight: 0.5}}]\nparameters: {pcb_ratio: 0.5}\n", "p2", 3, 0, &err), 0);
    CHECK(get("p2", "model.norm.weight", v, 4));
    CHECK_VEC(v, 0, 0, 0, 1);
    CHECK_EQ(run_merge("merge_method: pcb\nbase_model: z\nmodels: [{model: t}]\nparameters: {pcb_ratio: 0}\n", "p3", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "pcb_ratio must be in (0, 1]");
}

// RegMean, Fisher and MaTS on hand-checkable statistics. RegMean with diagonal Grams G1 = diag(1, 3),
// G2 = diag(3, 1) weights each input column: W = [(1·1 + 3·3)/4, (3·2 + 1·6)/4] = [2.5, 3]; MaTS
// converges to the same (two CG steps for a 2×2 system); Fisher per element (no floor, no
// normalisation): (1·1 + 3·3)/4 = 2.5 and (0·1 + 1·5)/1 = 5. Bad statistics are config errors naming
// the file and tensor.
TEST(merge_statistics_methods_by_hand) {
    static const float w1[2] = {1, 2}, w2[2] = {3, 6}, g1[4] = {1, 0, 0, 3}, g2[4] = {3, 0, 0, 1}, g3[9] = {0};
    static const float n1[2] = {1, 1}, n2[2] = {3, 5}, f1[2] = {1, 0}, f2[2] = {3, 1};
    struct tt m1[] = {{"model.layers.0.w", 2, {1, 2}, w1}, {"model.norm.weight", 1, {2, 0}, n1}};
    struct tt m2[] = {{"model.layers.0.w", 2, {1, 2}, w2}, {"model.norm.weight", 1, {2, 0}, n2}};
    struct tt s1[] = {{"model.layers.0.w", 2, {2, 2}, g1}}, s2[] = {{"model.layers.0.w", 2, {2, 2}, g2}}, s3[] = {{"model.layers.0.w", 2, {3, 3}, g3}};
    struct tt fa[] = {{"model.layers.0.w", 2, {1, 2}, w1}, {"model.norm.weight", 1, {2, 0}, f1}};
    struct tt fb[] = {{"model.layers.0.w", 2, {1, 2}, w1}, {"model.norm.weight", 1, {2, 0}, f2}};
    mkmodel(tpath("m1"), m1, 2, 1), mkmodel(tpath("m2"), m2, 2, 1);
    mkmodel(tpath("s1"), s1, 1, 0), mkmodel(tpath("s2"), s2, 1, 0), mkmodel(tpath("s3"), s3, 1, 0), mkmodel(tpath("s4"), m1 + 1, 1, 0);
    mkmodel(tpath("fa"), fa, 2, 0), mkmodel(tpath("fb"), fb, 2, 0);
    CHECK_OK();
    struct graft_err err;
    float v[2];
    CHECK_EQ(run_merge("merge_method: regmean\nmodels:\n  - {model: m1, parameters: {gram: s1}}\n  - {model: m2, parameters: {gram: s2}}\n", "rm", 2, 0, &err), 0);
    CHECK(get("rm", "model.layers.0.w", v, 2));
    CHECK_VEC(v, 2.5f, 3);
    CHECK(get("rm", "model.norm.weight", v, 2));
    CHECK_VEC(v, 2, 3); // no Gram: the mean
    CHECK_EQ(run_merge("merge_method: mats\nmodels:\n  - {model: m1, parameters: {gram: s1}}\n  - {model: m2, parameters: {gram: s2}}\n", "ma", 1, 0, &err), 0);
    CHECK(get("ma", "model.layers.0.w", v, 2));
    CHECK_VEC(v, 2.5f, 3);
    CHECK_EQ(run_merge("merge_method: fisher\nmodels:\n  - {model: m1, parameters: {fisher: fa}}\n  - {model: m2, parameters: {fisher: fb}}\n"
                       "parameters: {fisher_floor: 0, favor_target_model: false, normalize_fishers: false}\n", "fi", 2, 0, &err), 0);
    CHECK(get("fi", "model.norm.weight", v, 2));
    CHECK_VEC(v, 2.5f, 5);
    // errors: no statistics, a missing file, a missing tensor, a wrong shape
    CHECK_EQ(run_merge("merge_method: regmean\nmodels:\n  - {model: m1, parameters: {gram: s1}}\n  - {model: m2}\n", "e1", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "model 'm2' needs its gram statistics");
    CHECK_EQ(run_merge("merge_method: regmean\nmodels:\n  - {model: m1, parameters: {gram: s1}}\n  - {model: m2, parameters: {gram: nope}}\n", "e2", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "statistics file 'nope' not found");
    CHECK_EQ(run_merge("merge_method: regmean\nmodels:\n  - {model: m1, parameters: {gram: s1}}\n  - {model: m2, parameters: {gram: s4}}\n", "e3", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "has no tensor model.layers.0.w (model 'm2')");
    CHECK_EQ(run_merge("merge_method: regmean\nmodels:\n  - {model: m1, parameters: {gram: s1}}\n  - {model: m2, parameters: {gram: s3}}\n", "e4", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "statistics tensor model.layers.0.w in ");
    CHECK_CONTAINS(err.msg, "is F32 [3, 3]; regmean needs a floating tensor of shape [2, 2]");
    CHECK_EQ(run_merge("merge_method: fisher\nmodels:\n  - {model: m1, parameters: {fisher: fa}}\n  - {model: m2, parameters: {fisher: s1}}\n", "e5", 1, 0, &err), GRAFT_E_CONFIG);
    CHECK(!texists(tpath("e5")));
}

// opcm: τ₂ = diag(3, 0) lies on M = τ₁ = diag(2, 1)'s singular directions, so its projection P is
// diagonal and zeroed — it adds nothing; λ = ‖M‖/mean(‖τ₁‖, ‖τ₂‖) = √5 / ((√5 + 3)/2), θ = M/λ. A task
// vector orthogonal to M's directions (off-diagonal) passes whole (with α = 1, r* = 2 zeroes the
// whole 2×2 block instead). The merged task vector's norm is the mean task-vector norm.
TEST(merge_opcm_by_hand) {
    static const float z[4] = {0}, t1[4] = {2, 0, 0, 1}, t2[4] = {3, 0, 0, 0}, t3[4] = {0, 4, 0, 0};
    struct tt mz[] = {{"model.layers.0.w", 2, {2, 2}, z}}, m1[] = {{"model.layers.0.w", 2, {2, 2}, t1}}, m2[] = {{"model.layers.0.w", 2, {2, 2}, t2}},
              m3[] = {{"model.layers.0.w", 2, {2, 2}, t3}};
    mkmodel(tpath("z"), mz, 1, 1), mkmodel(tpath("a"), m1, 1, 1), mkmodel(tpath("b"), m2, 1, 1), mkmodel(tpath("c"), m3, 1, 1);
    CHECK_OK();
    struct graft_err err;
    float v[4];
    CHECK_EQ(run_merge("merge_method: opcm\nbase_model: z\nmodels: [{model: a}, {model: b}]\n", "o1", 2, 0, &err), 0);
    CHECK(get("o1", "model.layers.0.w", v, 4));
    double s = (sqrt(5.0) + 3) / 2 / sqrt(5.0);
    CHECK_VEC(v, (float)(2 * s), 0, 0, (float)s);
    // orthogonal: P = Uᵀτ₃V = [[0, 4], [0, 0]] off the diagonal and (α = 0.5: r* = 0) kept: M' = [[2, 4], [0, 1]]
    CHECK_EQ(run_merge("merge_method: opcm\nbase_model: z\nmodels: [{model: a}, {model: c}]\n", "o2", 1, 0, &err), 0);
    CHECK(get("o2", "model.layers.0.w", v, 4));
    double nu = (sqrt(5.0) + 4) / 2, l = sqrt(21.0) / nu;
    CHECK_VEC(v, (float)(2 / l), (float)(4 / l), 0, (float)(1 / l));
    double n2 = 0;
    for (int i = 0; i < 4; i++) n2 += (double)v[i] * v[i];
    CHECK(fabs(sqrt(n2) - nu) < 1e-5 * nu);
    CHECK_EQ(run_merge("merge_method: opcm\nbase_model: z\nmodels: [{model: a}, {model: b}]\nparameters: {alpha: 2}\n", "o3", 1, 0, &err), GRAFT_E_CONFIG);
}
