// Tokenizer merges (tokenizer_source / tokenizer:): output vocabulary, embedding row remapping with
// MergeKit's fallbacks, tokenizer.tokens sources, padding, config vocab_size, tokenizer files and chat
// templates. Expected rows are worked out by hand in the comments.
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include "harness.h"
#include "mergetest.h"
#include "graft/graft.h"

// A tied model (no lm_head) with embedding rows v[r] = (x, -x) and one layer tensor, its tokenizer.json
// (BPE vocabulary + added tokens) and config.json with vocab_size.
static void vmodel(const char *name, const float *x, int rows, long vocab_size, const char *vocab_json, const char *added_json,
                   const char *tok_config) {
    const char *dir = tpath("%s", name);
    struct graft_writer *w;
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_writer_open(dir, NULL, &w, &err)) { harness_fail(__FILE__, __LINE__, "%s", err.msg); return; }
    float e[64], l[4] = {1, 2, 3, 4};
    for (int r = 0; r < rows; r++) e[2 * r] = x[r], e[2 * r + 1] = -x[r];
    uint64_t ne_e[2] = {(uint64_t)rows, 2}, ne_l[2] = {2, 2};
    graft_writer_add_tensor(w, "model.embed_tokens.weight", 25, GRAFT_DTYPE_F32, 2, ne_e, &err);
    graft_writer_add_tensor(w, "model.layers.0.w", 16, GRAFT_DTYPE_F32, 2, ne_l, &err);
    graft_writer_layout(w, &err);
    graft_writer_write(w, 0, 0, e, (size_t)rows * 8, &err);
    graft_writer_write(w, 1, 0, l, 16, &err);
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"num_hidden_layers\":1,"
                              "\"tie_word_embeddings\":true,\"vocab_size\":%ld}", vocab_size);
    graft_writer_add_file(w, "config.json", buf, strlen(buf), &err);
    snprintf(buf, sizeof buf, "{\"version\":\"1.0\",\"added_tokens\":%s,\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}}", added_json, vocab_json);
    graft_writer_add_file(w, "tokenizer.json", buf, strlen(buf), &err);
    if (tok_config) graft_writer_add_file(w, "tokenizer_config.json", tok_config, strlen(tok_config), &err);
    graft_writer_add_file(w, "special_tokens_map.json", "{}", 2, &err);
    if (graft_writer_commit(w, &err)) harness_fail(__FILE__, __LINE__, "%s", err.msg);
    graft_writer_free(w);
}

#define S_ADDED(id) "[{\"id\":" #id ",\"content\":\"<s>\",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}]"

// base: a b c <s>; m1: a c d <s>; m2: b d e a <s> (vocab_size 5).
static void three_vocab_models(void) {
    static const float xb[] = {1, 2, 3, 4}, x1[] = {10, 30, 50, 40}, x2[] = {200, 500, 600, 100, 400};
    vmodel("base", xb, 4, 4, "{\"a\":0,\"b\":1,\"c\":2}", S_ADDED(3),
           "{\"added_tokens_decoder\":{\"3\":{\"content\":\"<s>\",\"special\":true}},\"chat_template\":\"X{{ messages }}X-template-one\"}");
    vmodel("m1", x1, 4, 4, "{\"a\":0,\"c\":1,\"d\":2}", S_ADDED(3), "{\"chat_template\":\"Y{{ messages }}Y-template-two\"}");
    vmodel("m2", x2, 5, 5, "{\"b\":0,\"d\":1,\"e\":2,\"a\":3}", S_ADDED(4), "{\"chat_template\":\"Y{{ messages }}Y-template-two\"}");
}

static int vmerge(const char *yaml, const char *out, struct graft_err *err) {
    return merge_yaml(yaml, out, 2, 0, 3, err); // chunks cut rows: the loader must handle partial rows
}

// Check the output embedding's first column against want[] (the second must be its negation).
static void check_rows(const char *out, const float *want, int rows) {
    struct graft_model *m;
    struct graft_err err;
    if (graft_model_open(tpath("%s", out), &m, &err)) { harness_fail(__FILE__, __LINE__, "%s", err.msg); return; }
    const struct graft_model_tensor *t = graft_model_find(m, "model.embed_tokens.weight", 25);
    if (!t || t->info->ne[0] != (uint64_t)rows || t->info->ne[1] != 2) {
        harness_fail(__FILE__, __LINE__, "embedding missing or %llu rows, want %d", t ? (unsigned long long)t->info->ne[0] : 0ull, rows);
    } else {
        float v[64];
        graft_row_to_f32(t->info->dtype, graft_model_data(m, t), v, (size_t)rows * 2);
        for (int r = 0; r < rows; r++)
            if (fabsf(v[2 * r] - want[r]) > 1e-4f * (1 + fabsf(want[r])) || v[2 * r + 1] != -v[2 * r])
                harness_fail(__FILE__, __LINE__, "%s row %d: (%g, %g), want (%g, %g)", out, r, (double)v[2 * r], (double)v[2 * r + 1],
                             (double)want[r], (double)-want[r]);
    }
    graft_model_close(m);
}

static const char *MODELS3 = "merge_method: linear\nbase_model: base\nmodels:\n  - model: base\n    parameters: {weight: 1}\n"
                             "  - model: m1\n    parameters: {weight: 1}\n  - model: m2\n    parameters: {weight: 1}\n";

static char *cfg_with(const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf, "%s%s", MODELS3, extra);
    return buf;
}

TEST(vocab_union_rows) {
    three_vocab_models();
    CHECK_OK();
    struct graft_err err;
    CHECK_EQ(vmerge(cfg_with("tokenizer_source: union\n"), "u", &err), 0);
    // a: (1+10+100)/3; b: m1 lacks it, base has it → base's 2: (2+2+200)/3; c: m2 takes base's: (3+30+3)/3;
    // <s>: (4+40+400)/3; d (new id 4): base lacks it, two have it → their mean 275 for base: (275+50+500)/3;
    // e (id 5): only m2 has it → 600 everywhere.
    static const float want[] = {37, 68, 12, 148, 275, 600};
    check_rows("u", want, 6);
    size_t len;
    char *cfg = tread(tpath("u/config.json"), &len);
    CHECK_CONTAINS(cfg, "\"vocab_size\": 6");
    free(cfg);
    char *tok = tread(tpath("u/tokenizer.json"), &len);
    CHECK_CONTAINS(tok, "\"id\": 4,\n      \"content\": \"d\",\n      \"single_word\": false,\n      \"lstrip\": false,\n"
                        "      \"rstrip\": false,\n      \"normalized\": true,\n      \"special\": false");
    CHECK_CONTAINS(tok, "\"id\": 5,\n      \"content\": \"e\"");
    free(tok);
    char *tc = tread(tpath("u/tokenizer_config.json"), &len);
    CHECK_CONTAINS(tc, "\"4\": {\n      \"content\": \"d\"");
    free(tc);
    struct stat sb;
    CHECK(stat(tpath("u/special_tokens_map.json"), &sb) == 0);
}

TEST(vocab_base_and_model_sources) {
    three_vocab_models();
    CHECK_OK();
    struct graft_err err;
    CHECK_EQ(vmerge(cfg_with("tokenizer_source: base\n"), "b", &err), 0);
    static const float want_b[] = {37, 68, 12, 148};
    check_rows("b", want_b, 4);
    // m2's vocabulary b d e a <s>
    CHECK_EQ(vmerge(cfg_with("tokenizer_source: m2\n"), "m", &err), 0);
    static const float want_m[] = {68, 275, 600, 37, 148};
    check_rows("m", want_m, 5);
    size_t len;
    char *cfg = tread(tpath("m/config.json"), &len);
    CHECK_CONTAINS(cfg, "\"vocab_size\": 5");
    free(cfg);
}

TEST(vocab_tokens_sources_and_padding) {
    three_vocab_models();
    CHECK_OK();
    struct graft_err err;
    // a forced from m1 → 10; b forced from m2's "e" row → 600; e: zero for base and m1, m2 keeps 600 → 200;
    // new token "f" from base's row 2 ("c") → 3. Padding to 8: rows 7 and 8 are the mean of the real rows.
    CHECK_EQ(vmerge(cfg_with("tokenizer:\n  source: union\n  pad_to_multiple_of: 8\n  tokens:\n    a: {source: m1, force: true}\n"
                             "    b: {source: {kind: model_token, model: m2, token: e}, force: true}\n"
                             "    e: {source: {kind: zero}}\n    f: {source: {kind: model_token, model: base, token_id: 2}}\n"),
                    "t", &err), 0);
    float w8[8] = {10, 600, 12, 148, 275, 200, 3, 0};
    double s = 0;
    for (int r = 0; r < 7; r++) s += w8[r];
    w8[7] = (float)(s / 7);
    check_rows("t", w8, 8);
    // errors: a source model outside the merge, a token the source lacks, a row past the tensor
    CHECK(vmerge(cfg_with("tokenizer:\n  source: union\n  tokens:\n    c: {source: m2}\n"), "e1", &err) == GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "'c' is not in the vocabulary of 'm2'");
    CHECK(vmerge(cfg_with("tokenizer:\n  source: union\n  tokens:\n    c: {source: {kind: model_token, model: m1, token_id: 9}}\n"), "e2", &err) ==
          GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "row 9 is past the 4 rows");
    CHECK(vmerge(cfg_with("tokenizer:\n  source: union\n  tokens:\n    c: {source: {kind: model_token, model: m1}}\n"), "e3", &err) ==
          GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "exactly one of 'token' and 'token_id'");
    struct stat sb;
    CHECK(stat(tpath("e1"), &sb) != 0 && stat(tpath("e2"), &sb) != 0);
}

TEST(vocab_chat_templates) {
    three_vocab_models();
    CHECK_OK();
    struct graft_err err;
    size_t len;
    CHECK_EQ(vmerge(cfg_with("chat_template: auto\n"), "c1", &err), 0); // two of three models use template two
    char *tc = tread(tpath("c1/tokenizer_config.json"), &len);
    CHECK_CONTAINS(tc, "\"chat_template\": \"Y{{ messages }}Y-template-two\"");
    CHECK_CONTAINS(tc, "added_tokens_decoder"); // the rest is the donor's (base's)
    free(tc);
    CHECK_EQ(vmerge(cfg_with("chat_template: chatml\ntokenizer_source: union\n"), "c2", &err), 0);
    tc = tread(tpath("c2/tokenizer_config.json"), &len);
    CHECK_CONTAINS(tc, "<|im_start|>");
    free(tc);
    CHECK(vmerge(cfg_with("chat_template: nonsense\n"), "c3", &err) == GRAFT_E_CONFIG);
    CHECK_CONTAINS(err.msg, "built-in name");
    // no chat_template: tokenizer files are copied byte for byte
    CHECK_EQ(vmerge(MODELS3, "c4", &err), 0);
    char *a = tread(tpath("c4/tokenizer_config.json"), &len), *b = tread(tpath("base/tokenizer_config.json"), &len);
    CHECK_STR(a, b);
    free(a), free(b);
}

TEST(vocab_strip_base) {
    // base's config vocab_size 3: "<s>" (id 3) is stripped, so with `base` the output has 3 rows;
    // the BPE merge that uses a stripped token goes too.
    static const float xb[] = {1, 2, 3, 4}, x1[] = {10, 30, 50, 40};
    vmodel("sb", xb, 4, 3, "{\"a\":0,\"b\":1,\"c\":2,\"d\":3}", "[]", NULL);
    vmodel("s1", x1, 4, 4, "{\"a\":0,\"c\":1,\"d\":2,\"b\":3}", "[]", NULL);
    CHECK_OK();
    struct graft_err err;
    CHECK_EQ(vmerge("merge_method: linear\nbase_model: sb\nmodels:\n  - model: sb\n    parameters: {weight: 1}\n  - model: s1\n"
                    "    parameters: {weight: 3}\ntokenizer_source: base\n", "s", &err), 0);
    static const float want[] = {(1 + 30) / 4.0f, (2 + 120) / 4.0f, (3 + 90) / 4.0f};
    check_rows("s", want, 3);
    size_t len;
    char *tok = tread(tpath("s/tokenizer.json"), &len);
    CHECK(tok && !strstr(tok, "\"d\""));
    free(tok);
    // not a tokenizer.json at all → a clear error naming the file
    twrite(tpath("s1/tokenizer.json"), "[1,2]", 5);
    CHECK(vmerge("merge_method: linear\nmodels:\n  - model: sb\n    parameters: {weight: 1}\n  - model: s1\n    parameters: {weight: 3}\n"
                 "tokenizer_source: s1\n", "s2", &err) != 0);
    CHECK_CONTAINS(err.msg, "s1/tokenizer.json");
}
