// convert and synth end to end, thread-count independence, the RNG, the pool, number parsing.
#include <math.h>
#include <stdlib.h>
#include "harness.h"
#include "graft/graft.h"

static char *slurp_dir_model(const char *dir, size_t *len) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    return tread(p, len);
}

TEST(synth_deterministic_across_threads) {
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_synth_params p = graft_synth_default_params();
    p.n_threads = 1;
    CHECK_EQ(graft_synth(tpath("a"), &p, &err), GRAFT_OK);
    p.n_threads = 7;
    CHECK_EQ(graft_synth(tpath("b"), &p, &err), GRAFT_OK);
    size_t la, lb;
    char *a = slurp_dir_model(tpath("a"), &la), *b = slurp_dir_model(tpath("b"), &lb);
    CHECK(la == lb && !memcmp(a, b, la));
    free(a), free(b);
    p.seed = 2;
    CHECK_EQ(graft_synth(tpath("c"), &p, &err), GRAFT_OK);
    a = slurp_dir_model(tpath("a"), &la), b = slurp_dir_model(tpath("c"), &lb);
    CHECK(la == lb && memcmp(a, b, la)); // another seed, other values
    free(a), free(b);
    struct graft_model *m;
    CHECK_EQ(graft_model_open(tpath("a"), &m, &err), GRAFT_OK);
    CHECK_EQ(graft_model_n_tensors(m), 2 + 9 * 2 + 1);
    const struct graft_model_tensor *q = graft_model_find(m, "model.layers.1.self_attn.k_proj.weight", 38);
    CHECK(q && q->info->ne[0] == 32 && q->info->ne[1] == 64 && q->info->dtype == GRAFT_DTYPE_BF16);
    // matrix statistics: mean ≈ 0, std ≈ 0.02
    const struct graft_model_tensor *e = graft_model_find(m, "model.embed_tokens.weight", 25);
    size_t n = (size_t)e->info->n_elem;
    float *f = malloc(n * 4);
    graft_row_to_f32(e->info->dtype, graft_model_data(m, e), f, n);
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) s += f[i], s2 += (double)f[i] * f[i];
    double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    CHECK(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.002);
    free(f);
    graft_model_close(m);
}

TEST(synth_like_and_convert) {
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_synth_params p = graft_synth_default_params();
    p.dtype = GRAFT_DTYPE_F32, p.tie_embeddings = true;
    CHECK_EQ(graft_synth(tpath("base"), &p, &err), GRAFT_OK);
    struct graft_model *base, *ft;
    CHECK_EQ(graft_model_open(tpath("base"), &base, &err), GRAFT_OK);
    CHECK(graft_model_find(base, "lm_head.weight", 14) == NULL);
    p = graft_synth_default_params();
    p.like = base, p.delta = 0.01f, p.dtype = GRAFT_DTYPE_F32, p.seed = 5, p.n_threads = 3;
    CHECK_EQ(graft_synth(tpath("ft"), &p, &err), GRAFT_OK);
    CHECK_EQ(graft_model_open(tpath("ft"), &ft, &err), GRAFT_OK);
    CHECK_EQ(graft_model_n_tensors(ft), graft_model_n_tensors(base));
    // delta statistics: Laplace(0, 0.01) has mean |x| = 0.01
    double sabs = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < graft_model_n_tensors(base); i++) {
        const struct graft_model_tensor *b = graft_model_tensor(base, i);
        const struct graft_model_tensor *t = graft_model_find(ft, b->info->name, b->info->name_len);
        CHECK(t && t->info->n_elem == b->info->n_elem);
        const float *x = (const float *)graft_model_data(base, b), *y = (const float *)graft_model_data(ft, t);
        for (size_t k = 0; k < b->info->n_elem; k++) {
            float xv, yv;
            memcpy(&xv, x + k, 4), memcpy(&yv, y + k, 4);
            sabs += fabs((double)yv - xv), cnt++;
        }
    }
    CHECK(fabs(sabs / (double)cnt - 0.01) < 0.001);
    char *cfg = tread(tpath("ft/config.json"), NULL);
    CHECK_CONTAINS(cfg, "\"tie_word_embeddings\": true");
    free(cfg);
    // convert f32 → bf16 with 1 and 4 threads: identical bytes, equal to the reference rounding
    struct graft_convert_params cp = graft_convert_default_params();
    cp.dtype = GRAFT_DTYPE_BF16, cp.n_threads = 1, cp.chunk_elems = 1000;
    CHECK_EQ(graft_convert(ft, tpath("c1"), &cp, &err), GRAFT_OK);
    cp.n_threads = 4, cp.max_shard_bytes = 20000;
    CHECK_EQ(graft_convert(ft, tpath("c4.safetensors"), &cp, &err), GRAFT_OK);
    struct graft_model *c1, *c4;
    CHECK_EQ(graft_model_open(tpath("c1"), &c1, &err), GRAFT_OK);
    CHECK_EQ(graft_model_open(tpath("c4.safetensors"), &c4, &err), GRAFT_OK);
    CHECK_EQ(graft_model_n_shards(c4), 1); // single-file output ignores the shard size
    for (size_t i = 0; i < graft_model_n_tensors(ft); i++) {
        const struct graft_model_tensor *s = graft_model_tensor(ft, i);
        const struct graft_model_tensor *a = graft_model_find(c1, s->info->name, s->info->name_len);
        const struct graft_model_tensor *b = graft_model_find(c4, s->info->name, s->info->name_len);
        CHECK(a && b && a->info->dtype == GRAFT_DTYPE_BF16);
        CHECK(!memcmp(graft_model_data(c1, a), graft_model_data(c4, b), a->info->n_bytes));
        for (size_t k = 0; k < s->info->n_elem; k += 97) {
            float v;
            uint16_t h;
            memcpy(&v, graft_model_data(ft, s) + 4 * k, 4);
            memcpy(&h, graft_model_data(c1, a) + 2 * k, 2);
            CHECK_EQ(h, graft_f32_to_bf16_ref(v));
        }
    }
    graft_model_close(c1), graft_model_close(c4), graft_model_close(ft), graft_model_close(base);
}

TEST(convert_keeps_non_float_tensors) {
    // integer and bool tensors pass through unchanged; float ones convert
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_writer *w;
    CHECK_EQ(graft_writer_open(tpath("in.safetensors"), &(struct graft_writer_params){.flags = GRAFT_WRITER_SINGLE_FILE}, &w, &err), 0);
    uint64_t n = 5;
    CHECK_EQ(graft_writer_add_tensor(w, "ids", 3, GRAFT_DTYPE_I64, 1, &n, &err), 0);
    CHECK_EQ(graft_writer_add_tensor(w, "w", 1, GRAFT_DTYPE_F16, 1, &n, &err), 1);
    CHECK_EQ(graft_writer_layout(w, &err), 0);
    int64_t ids[5] = {1, -2, 3, 1LL << 40, 5};
    uint16_t h[5] = {0x3C00, 0xBC00, 0x7E00, 0x0001, 0x7BFF};
    CHECK_EQ(graft_writer_write(w, 0, 0, ids, sizeof ids, &err), 0);
    CHECK_EQ(graft_writer_write(w, 1, 0, h, sizeof h, &err), 0);
    CHECK_EQ(graft_writer_commit(w, &err), 0);
    graft_writer_free(w);
    struct graft_model *m, *o;
    CHECK_EQ(graft_model_open(tpath("in.safetensors"), &m, &err), 0);
    struct graft_convert_params cp = graft_convert_default_params();
    cp.dtype = GRAFT_DTYPE_F32;
    CHECK_EQ(graft_convert(m, tpath("out"), &cp, &err), 0);
    CHECK_EQ(graft_model_open(tpath("out"), &o, &err), 0);
    const struct graft_model_tensor *a = graft_model_find(o, "ids", 3), *b = graft_model_find(o, "w", 1);
    CHECK(a->info->dtype == GRAFT_DTYPE_I64 && !memcmp(graft_model_data(o, a), ids, sizeof ids));
    CHECK(b->info->dtype == GRAFT_DTYPE_F32);
    float f[5];
    memcpy(f, graft_model_data(o, b), sizeof f);
    CHECK(f[0] == 1.0f && f[1] == -1.0f && isnan(f[2]) && f[3] == ldexpf(1, -24) && f[4] == 65504.0f);
    graft_model_close(o), graft_model_close(m);
    // the input folder is refused as output; and a bad target dtype is a usage error
    CHECK_EQ(graft_model_open(tpath("out"), &m, &err), 0);
    graft_err_clear(&err);
    cp.writer_flags = GRAFT_WRITER_FORCE;
    CHECK_EQ(graft_convert(m, tpath("out"), &cp, &err), GRAFT_E_USAGE);
    graft_err_clear(&err);
    cp.dtype = GRAFT_DTYPE_I32;
    CHECK_EQ(graft_convert(m, tpath("x"), &cp, &err), GRAFT_E_USAGE);
    graft_model_close(m);
}

TEST(rng_properties) {
    uint64_t k1 = graft_rng_key(1, 0, "a", 1), k2 = graft_rng_key(1, 0, "b", 1), k3 = graft_rng_key(2, 0, "a", 1),
             k4 = graft_rng_key(1, 1, "a", 1);
    CHECK(k1 != k2 && k1 != k3 && k1 != k4);
    CHECK_EQ_U64(graft_rng_u64(k1, 12345), graft_rng_u64(k1, 12345));
    double s = 0, s2 = 0, u = 0;
    int n = 1000000, below = 0;
    for (int i = 0; i < n; i++) {
        float z = graft_rng_normalish(k1, (uint64_t)i), x = graft_rng_uniform(k2, (uint64_t)i);
        s += z, s2 += (double)z * z, u += x;
        below += x < 0.25f;
        CHECK(x >= 0.0f && x < 1.0f);
    }
    CHECK(fabs(s / n) < 0.01 && fabs(s2 / n - 1.0) < 0.01);
    CHECK(fabs(u / n - 0.5) < 0.002 && abs(below - n / 4) < 3000);
}

static int count_item(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    int *hits = ctx;
    __atomic_fetch_add(&hits[item], 1, __ATOMIC_RELAXED);
    if (item == 700 || item == 900) return graft_err_set(err, GRAFT_E_IO, NULL, NULL, 0, "item %zu failed", item);
    return GRAFT_OK;
}

TEST(pool_runs_each_item_once_and_reports_lowest_failure) {
    int *hits = calloc(1000, sizeof *hits);
    struct graft_err err;
    for (int t = 1; t <= 8; t *= 2) {
        memset(hits, 0, 1000 * sizeof *hits);
        graft_err_clear(&err);
        CHECK_EQ(graft_pool_run(t, 1000, count_item, hits, NULL, NULL, &err), GRAFT_E_IO);
        CHECK_STR(err.msg, "item 700 failed");
        for (int i = 0; i < 700; i++) CHECK_EQ(hits[i], 1);
    }
    free(hits);
}

TEST(parse_numbers) {
    uint64_t v;
    CHECK(graft_parse_size("5G", &v) && v == 5000000000ull);
    CHECK(graft_parse_size("5B", &v) && v == 5000000000ull); // MergeKit's billion
    CHECK(graft_parse_size("500M", &v) && v == 500000000ull);
    CHECK(graft_parse_size("2GiB", &v) && v == 2147483648ull);
    CHECK(graft_parse_size("1.5k", &v) && v == 1500);
    CHECK(graft_parse_size("123", &v) && v == 123);
    CHECK(!graft_parse_size("", &v) && !graft_parse_size("G", &v) && !graft_parse_size("5X", &v) && !graft_parse_size("-1", &v));
    CHECK(!graft_parse_size("99999999999T", &v));
    CHECK(graft_parse_u64("42", 100, &v) && v == 42);
    CHECK(!graft_parse_u64("101", 100, &v) && !graft_parse_u64("4x", 100, &v) && !graft_parse_u64("", 100, &v));
    CHECK(!graft_parse_u64("18446744073709551616", UINT64_MAX, &v));
    double d;
    CHECK(graft_parse_double("0.25", &d) && d == 0.25);
    CHECK(!graft_parse_double("nan", &d) && !graft_parse_double("1e999", &d) && !graft_parse_double("1.0x", &d));
}
