// GGUF reader (src/io/gguf.c): a well-formed file built byte by byte here (every value type, arrays,
// strings, alignment, quantized tensors) reads back exactly; each adversarial class of
// shared/formats.md §6.5 is refused with its reason; block decoders give hand-computed values.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include "graft/gguf.h"
#include "graft/tokenizer.h"

struct gb { uint8_t *p; size_t n, cap; };
static void put(struct gb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n), b->n += n;
}
static void u32(struct gb *b, uint32_t v) { uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)}; put(b, x, 4); }
static void u64(struct gb *b, uint64_t v) { for (int i = 0; i < 8; i++) { uint8_t c = (uint8_t)(v >> (8 * i)); put(b, &c, 1); } }
static void str(struct gb *b, const char *s) { u64(b, strlen(s)), put(b, s, strlen(s)); }
static void pad(struct gb *b, size_t a) { while (b->n % a) { uint8_t z = 0; put(b, &z, 1); } }

// A header: version, counts; then the caller adds kvs and tensor infos.
static void head(struct gb *b, uint32_t version, uint64_t nt, uint64_t nkv) {
    put(b, "GGUF", 4), u32(b, version), u64(b, nt), u64(b, nkv);
}
static void tinfo(struct gb *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off) {
    str(b, name), u32(b, nd);
    for (uint32_t d = 0; d < nd; d++) u64(b, ne[d]);
    u32(b, type), u64(b, off);
}

static int open_buf(struct gb *b, struct graft_gguf **g, struct graft_err *err) {
    graft_err_clear(err);
    return graft_gguf_open_mem(b->p, b->n, "t.gguf", g, err);
}

TEST(gguf_reads_a_wellformed_file) {
    struct gb b = {0};
    head(&b, 3, 3, 6);
    str(&b, "general.architecture"), u32(&b, GRAFT_GGUF_STRING), str(&b, "llama");
    str(&b, "llama.block_count"), u32(&b, GRAFT_GGUF_U32), u32(&b, 2);
    str(&b, "llama.rope.freq_base"), u32(&b, GRAFT_GGUF_F32), u32(&b, 0x461C4000); // 10000.0f
    str(&b, "tokenizer.ggml.tokens"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_STRING), u64(&b, 3), str(&b, "<s>"), str(&b, "a"), str(&b, "bc");
    str(&b, "general.alignment"), u32(&b, GRAFT_GGUF_U32), u32(&b, 64);
    str(&b, "x.i64"), u32(&b, GRAFT_GGUF_I64), u64(&b, (uint64_t)-5);
    uint64_t ne_a[2] = {4, 2}, ne_b[1] = {32}, ne_c[1] = {32};
    tinfo(&b, "a", 2, ne_a, GRAFT_GGML_F32, 0);    // 32 bytes → padded 64
    tinfo(&b, "b", 1, ne_b, GRAFT_GGML_Q8_0, 64);  // 34 bytes → padded 64
    tinfo(&b, "c", 1, ne_c, GRAFT_GGML_Q4_0, 128); // 18 bytes → padded 64
    pad(&b, 64);
    size_t data = b.n;
    float av[8] = {1, -2, 3.5f, 0, 5, 6, 7, -8};
    put(&b, av, 32), pad(&b, 64);
    uint8_t q8[34] = {0x00, 0x3C}; // d = 1.0 (f16 0x3C00)
    for (int j = 0; j < 32; j++) q8[2 + j] = (uint8_t)(int8_t)(j - 16);
    put(&b, q8, 34), pad(&b, 64);
    uint8_t q4[18] = {0x00, 0x40}; // d = 2.0
    for (int j = 0; j < 16; j++) q4[2 + j] = (uint8_t)((j & 0xF) | ((15 - j) << 4));
    put(&b, q4, 18), pad(&b, 64);
    struct graft_gguf *g;
    struct graft_err err;
    CHECK_EQ(open_buf(&b, &g, &err), GRAFT_OK);
    CHECK(graft_gguf_version(g) == 3 && graft_gguf_alignment(g) == 64 && graft_gguf_data_offset(g) == data);
    uint64_t u;
    double f;
    const char *s;
    size_t sl;
    CHECK(graft_gguf_get_u64(g, "llama.block_count", &u) && u == 2);
    CHECK(graft_gguf_get_f64(g, "llama.rope.freq_base", &f) && f == 10000.0);
    CHECK(graft_gguf_get_str(g, "general.architecture", &s, &sl) && sl == 5 && !memcmp(s, "llama", 5));
    CHECK(!graft_gguf_get_u64(g, "x.i64", &u)); // negative
    const struct graft_gguf_kv *tk = graft_gguf_find_kv(g, "tokenizer.ggml.tokens");
    CHECK(tk && tk->n == 3 && graft_gguf_arr_str(tk, 2, &s, &sl) && sl == 2 && !memcmp(s, "bc", 2));
    CHECK(!graft_gguf_arr_str(tk, 3, &s, &sl));
    const struct graft_gguf_tensor *ta = graft_gguf_find(g, "a"), *tb = graft_gguf_find(g, "b"), *tc = graft_gguf_find(g, "c");
    CHECK(ta && tb && tc && ta->ne[0] == 4 && ta->ne[1] == 2 && ta->n_elem == 8 && tb->n_bytes == 34);
    float out[32];
    CHECK(graft_ggml_to_f32(ta->type, graft_gguf_data(g, ta), out, 8));
    CHECK(memcmp(out, av, 32) == 0);
    CHECK(graft_ggml_to_f32(tb->type, graft_gguf_data(g, tb), out, 32));
    for (int j = 0; j < 32; j++) CHECK(out[j] == (float)(j - 16));
    CHECK(graft_ggml_to_f32(tc->type, graft_gguf_data(g, tc), out, 32));
    for (int j = 0; j < 16; j++) CHECK(out[j] == (float)((j & 0xF) - 8) * 2 && out[j + 16] == (float)(15 - j - 8) * 2);
    graft_gguf_close(g);
    free(b.p);
}

// Q4_K and Q6_K blocks with chosen scales: values computed by hand from the block formulas.
TEST(gguf_k_quant_blocks) {
    uint8_t k4[144] = {0};
    k4[0] = 0x00, k4[1] = 0x3C;           // d = 1
    k4[2] = 0x00, k4[3] = 0x38;           // dmin = 0.5
    k4[4] = 3, k4[8] = 2;                 // sub-block 0: scale 3, min 2
    k4[5] = 5, k4[9] = 1;                 // sub-block 1: scale 5, min 1
    k4[12] = 0x21;                        // sub-block 4 (j ≥ 4): scale = (sc[8] & 0xF) | (sc[0] >> 6) << 4 = 1, min = sc[8] >> 4 | … = 2
    for (int l = 0; l < 32; l++) k4[16 + l] = (uint8_t)((l & 0xF) | (((l + 1) & 0xF) << 4));
    float y[256];
    CHECK(graft_ggml_to_f32(GRAFT_GGML_Q4_K, k4, y, 256));
    for (int l = 0; l < 32; l++) {
        CHECK(y[l] == 1.0f * 3 * (float)(l & 0xF) - 0.5f * 2);
        CHECK(y[32 + l] == 1.0f * 5 * (float)((l + 1) & 0xF) - 0.5f * 1);
    }
    // sub-block 4 is chunk 2's low nibbles (qs[64..95] are zero): y = d·1·0 − dmin·2 = −1
    CHECK(y[128] == -1.0f && y[159] == -1.0f);
    uint8_t k6[210] = {0};
    k6[208] = 0x00, k6[209] = 0x40;       // d = 2
    ((int8_t *)k6)[192] = 3;              // scale of values 0..15
    ((int8_t *)k6)[194] = -1;             // scale of values 32..47
    k6[0] = 0x05, k6[128] = 0x02;         // value 0: ql low 5 | (qh & 3) << 4 = 2 → 5 + 32 = 37 → 37 − 32 = 5
    k6[32] = 0x0F;                        // value 32: ql[32] low 15 | ((qh[0] >> 2) & 3) << 4 = 0 → 15 − 32 = −17
    CHECK(graft_ggml_to_f32(GRAFT_GGML_Q6_K, k6, y, 256));
    CHECK(y[0] == 2.0f * 3 * 5);
    CHECK(y[32] == 2.0f * -1 * -17);
    CHECK(y[1] == 2.0f * 3 * -32); // all-zero bits: q = −32
}

// Each adversarial class: (builder, expected phrase).
static void one_tensor(struct gb *b, uint32_t version, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off, size_t data) {
    head(b, version, 1, 0);
    tinfo(b, name, nd, ne, type, off);
    pad(b, 32);
    for (size_t i = 0; i < data; i++) { uint8_t z = 0; put(b, &z, 1); }
}

TEST(gguf_refuses_adversarial_files) {
    struct { const char *what; int kind; const char *phrase; } cases[] = {
        {"magic", 0, "no 'GGUF' magic"},           {"v1", 1, "version 1"},                 {"big-endian", 2, "big-endian"},
        {"short header", 3, "truncated"},          {"huge tensor count", 4, "tensor count"}, {"huge kv count", 5, "key/value count"},
        {"empty key", 6, "is empty"},              {"duplicate key", 7, "appears twice"},  {"bad vtype", 8, "unknown value type 13"},
        {"nested array", 9, "nested"},             {"array too long", 10, "truncated"},    {"string past end", 11, "truncated"},
        {"alignment type", 12, "must be a u32"},   {"alignment 3", 13, "power of two"},    {"alignment 0", 14, "power of two"},
        {"name 64 bytes", 15, "name of 64 bytes"}, {"duplicate tensor", 16, "appears twice"}, {"5 dims", 17, "5 dimensions"},
        {"negative dim", 18, "negative"},          {"overflowing shape", 19, "overflows"},  {"removed type 4", 20, "unknown or removed"},
        {"type 99", 21, "unknown or removed"},     {"block misfit", 22, "not a multiple"},  {"gap offset", 23, "expected 0"},
        {"truncated data", 24, "truncated"},       {"missing last padding", 25, "truncated"}, {"overlap", 26, "expected 32"},
        {"invalid utf8 key", 27, "UTF-8"},          {"NUL in name", 28, "UTF-8 without NUL"}, {"empty name", 29, "name of 0 bytes"},
        {"string too long", 30, "limit"},          {"product wrapping to 0", 31, "overflows"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct gb b = {0};
        uint64_t ne1[1] = {8}, ne5[5] = {1, 1, 1, 1, 1};
        switch (cases[c].kind) {
        case 0: put(&b, "GGUG", 4), u32(&b, 3), u64(&b, 0), u64(&b, 0); break;
        case 1: head(&b, 1, 0, 0); break;
        case 2: head(&b, 0x03000000, 0, 0); break;
        case 3: put(&b, "GGUF", 4), u32(&b, 3), u32(&b, 0); break;
        case 4: head(&b, 3, 1ull << 40, 0); break;
        case 5: head(&b, 3, 0, 1000); break;
        case 6: head(&b, 3, 0, 1), str(&b, ""), u32(&b, 0), put(&b, "x", 1); break;
        case 7: head(&b, 3, 0, 2); for (int i = 0; i < 2; i++) str(&b, "k"), u32(&b, GRAFT_GGUF_U8), put(&b, "x", 1); break;
        case 8: head(&b, 3, 0, 1), str(&b, "k"), u32(&b, 13), u64(&b, 0); break;
        case 9: head(&b, 3, 0, 1), str(&b, "k"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_ARRAY), u64(&b, 0), u64(&b, 0); break;
        case 10: head(&b, 3, 0, 1), str(&b, "k"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_U64), u64(&b, 100), u64(&b, 1); break;
        case 11: head(&b, 3, 0, 1), str(&b, "k"), u32(&b, GRAFT_GGUF_STRING), u64(&b, 50), put(&b, "short", 5); break;
        case 12: head(&b, 3, 0, 1), str(&b, "general.alignment"), u32(&b, GRAFT_GGUF_U64), u64(&b, 32); break;
        case 13: head(&b, 3, 0, 1), str(&b, "general.alignment"), u32(&b, GRAFT_GGUF_U32), u32(&b, 3); break;
        case 14: head(&b, 3, 0, 1), str(&b, "general.alignment"), u32(&b, GRAFT_GGUF_U32), u32(&b, 0); break;
        case 15: one_tensor(&b, 3, "0123456789012345678901234567890123456789012345678901234567890123", 1, ne1, GRAFT_GGML_F32, 0, 32); break;
        case 16:
            head(&b, 3, 2, 0), tinfo(&b, "w", 1, ne1, GRAFT_GGML_F32, 0), tinfo(&b, "w", 1, ne1, GRAFT_GGML_F32, 32), pad(&b, 32);
            for (int i = 0; i < 64; i++) put(&b, "", 1);
            break;
        case 17: one_tensor(&b, 3, "w", 5, ne5, GRAFT_GGML_F32, 0, 32); break;
        case 18: { uint64_t ne[1] = {(uint64_t)-1}; one_tensor(&b, 3, "w", 1, ne, GRAFT_GGML_F32, 0, 32); break; }
        case 19: { uint64_t ne[3] = {1ull << 32, 1ull << 32, 4}; one_tensor(&b, 3, "w", 3, ne, GRAFT_GGML_I8, 0, 32); break; }
        case 20: one_tensor(&b, 3, "w", 1, ne1, 4, 0, 32); break;
        case 21: one_tensor(&b, 3, "w", 1, ne1, 99, 0, 32); break;
        case 22: one_tensor(&b, 3, "w", 1, ne1, GRAFT_GGML_Q8_0, 0, 64); break;
        case 23: one_tensor(&b, 3, "w", 1, ne1, GRAFT_GGML_F32, 32, 96); break;
        case 24: one_tensor(&b, 3, "w", 1, ne1, GRAFT_GGML_F32, 0, 16); break;
        case 25: { uint64_t ne[1] = {5}; one_tensor(&b, 3, "w", 1, ne, GRAFT_GGML_F32, 0, 20); break; } // 20 bytes, padded end at 32
        case 26:
            head(&b, 3, 2, 0), tinfo(&b, "a", 1, ne1, GRAFT_GGML_F32, 0), tinfo(&b, "b", 1, ne1, GRAFT_GGML_F32, 0), pad(&b, 32);
            for (int i = 0; i < 64; i++) put(&b, "", 1);
            break;
        case 27: head(&b, 3, 0, 1), u64(&b, 2), put(&b, "\xC3\x28", 2), u32(&b, GRAFT_GGUF_U8), put(&b, "x", 1); break;
        case 28: { one_tensor(&b, 3, "a\x01", 1, ne1, GRAFT_GGML_F32, 0, 32); b.p[24 + 8 + 1] = 0; break; }
        case 29: one_tensor(&b, 3, "", 1, ne1, GRAFT_GGML_F32, 0, 32); break;
        case 30: head(&b, 3, 0, 1), str(&b, "k"), u32(&b, GRAFT_GGUF_STRING), u64(&b, (1ull << 30) + 1); break;
        case 31: { uint64_t ne[2] = {1ull << 32, 1ull << 32}; one_tensor(&b, 3, "w", 2, ne, GRAFT_GGML_I8, 0, 0); break; } // wraps to exactly 0: ggml skips its check
        }
        struct graft_gguf *g = NULL;
        struct graft_err err;
        int rc = open_buf(&b, &g, &err);
        if (rc == GRAFT_OK || !strstr(err.msg, cases[c].phrase) || strncmp(err.msg, "t.gguf: ", 8)) {
            fprintf(stderr, "case '%s': rc %d, message '%s' (want '%s')\n", cases[c].what, rc, err.msg, cases[c].phrase);
            CHECK(false);
        }
        graft_gguf_close(g);
        free(b.p);
    }
}

// Golden bytes: a tiny file written by graft's GGUF writer equals, byte for byte, the file assembled
// here by hand from the format (header, key/values in order, tensor infos, padding to 32, data);
// the Q8_0 block of −16…15 is ggml's reference quantization worked out by hand: d = 16/127 →
// f16 0x3008, q = round(x·127/16).
TEST(gguf_writer_golden_bytes) {
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_gguf_writer *w = NULL;
    const char *path = tpath("g.gguf");
    CHECK_EQ(graft_gguf_writer_open(path, 0, &w, &err), GRAFT_OK);
    const char *toks[2] = {"<s>", "ab"};
    int32_t types[2] = {3, 1};
    CHECK_EQ(graft_gguf_w_str(w, "general.architecture", "llama", 5, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_u32(w, "llama.block_count", 1, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_f32(w, "llama.rope.freq_base", 10000.0f, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", true, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_arr(w, "tokenizer.ggml.tokens", GRAFT_GGUF_STRING, toks, NULL, 2, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_arr(w, "tokenizer.ggml.token_type", GRAFT_GGUF_I32, types, NULL, 2, &err), GRAFT_OK);
    uint64_t ne_a[1] = {3}, ne_b[2] = {32, 1}, ne_c[1] = {2};
    CHECK_EQ(graft_gguf_w_tensor(w, "a", 1, ne_a, GRAFT_GGML_F32, &err), 0);
    CHECK_EQ(graft_gguf_w_tensor(w, "blk.0.b", 2, ne_b, GRAFT_GGML_Q8_0, &err), 1);
    CHECK_EQ(graft_gguf_w_tensor(w, "c", 1, ne_c, GRAFT_GGML_F16, &err), 2);
    CHECK_EQ(graft_gguf_w_layout(w, &err), GRAFT_OK);
    float av[3] = {1.0f, -2.0f, 0.5f}, bv[32];
    for (int i = 0; i < 32; i++) bv[i] = (float)(i - 16);
    uint8_t q8[34], cv[4] = {0x00, 0x3C, 0x00, 0xC0}; // f16 1.0, −2.0
    CHECK(graft_ggml_from_f32(GRAFT_GGML_Q8_0, bv, q8, 32));
    CHECK_EQ(graft_gguf_w_write(w, 1, 0, q8, 34, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_write(w, 0, 0, av, 12, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_write(w, 2, 0, cv, 4, &err), GRAFT_OK);
    CHECK_EQ(graft_gguf_w_commit(w, &err), GRAFT_OK);
    graft_gguf_writer_free(w);

    struct gb b = {0};
    head(&b, 3, 3, 6);
    str(&b, "general.architecture"), u32(&b, GRAFT_GGUF_STRING), str(&b, "llama");
    str(&b, "llama.block_count"), u32(&b, GRAFT_GGUF_U32), u32(&b, 1);
    str(&b, "llama.rope.freq_base"), u32(&b, GRAFT_GGUF_F32), u32(&b, 0x461C4000);
    str(&b, "tokenizer.ggml.add_bos_token"), u32(&b, GRAFT_GGUF_BOOL), put(&b, "\x01", 1);
    str(&b, "tokenizer.ggml.tokens"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_STRING), u64(&b, 2), str(&b, "<s>"), str(&b, "ab");
    str(&b, "tokenizer.ggml.token_type"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_I32), u64(&b, 2), u32(&b, 3), u32(&b, 1);
    uint64_t e_a[1] = {3}, e_b[2] = {32, 1}, e_c[1] = {2};
    tinfo(&b, "a", 1, e_a, GRAFT_GGML_F32, 0);        // 12 bytes → 32
    tinfo(&b, "blk.0.b", 2, e_b, GRAFT_GGML_Q8_0, 32); // 34 bytes → 64
    tinfo(&b, "c", 1, e_c, GRAFT_GGML_F16, 96);       // 4 bytes → 32
    pad(&b, 32);
    u32(&b, 0x3F800000), u32(&b, 0xC0000000), u32(&b, 0x3F000000), pad(&b, 32);
    static const int8_t q[32] = {-127, -119, -111, -103, -95, -87, -79, -71, -64, -56, -48, -40, -32, -24, -16, -8,
                                 0, 8, 16, 24, 32, 40, 48, 56, 64, 71, 79, 87, 95, 103, 111, 119};
    put(&b, "\x08\x30", 2), put(&b, q, 32), pad(&b, 32);
    put(&b, cv, 4), pad(&b, 32);
    size_t n = 0;
    char *got = tread(path, &n);
    CHECK(got);
    CHECK_EQ(n, b.n);
    size_t at = 0;
    while (at < n && (uint8_t)got[at] == b.p[at]) at++;
    CHECK_EQ(at, n); // the first differing byte, if any
    free(got), free(b.p);
}

// A SentencePiece-type vocabulary comes back as BPE merges: every split of a piece into two pieces,
// ranked by the piece's score (ties: piece id, then left and right ids), worked out by hand here;
// the rebuilt tokenizer then encodes as llama.cpp's highest-score-first merging does.
TEST(gguf_spm_vocabulary_rebuilt_as_merges) {
    static const char *const tok[8] = {"<unk>", "<s>", "\xe2\x96\x81", "a", "b", "ab", "\xe2\x96\x81" "a", "\xe2\x96\x81" "ab"};
    static const int32_t ty[8] = {2, 3, 1, 1, 1, 1, 1, 1};
    static const float sc[8] = {0, 0, 0, 0, 0, -1, -2, -3};
    struct gb b = {0};
    head(&b, 3, 1, 7);
    str(&b, "general.architecture"), u32(&b, GRAFT_GGUF_STRING), str(&b, "llama");
    str(&b, "tokenizer.ggml.model"), u32(&b, GRAFT_GGUF_STRING), str(&b, "llama");
    str(&b, "tokenizer.ggml.tokens"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_STRING), u64(&b, 8);
    for (int i = 0; i < 8; i++) str(&b, tok[i]);
    str(&b, "tokenizer.ggml.token_type"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_I32), u64(&b, 8), put(&b, ty, sizeof ty);
    str(&b, "tokenizer.ggml.scores"), u32(&b, GRAFT_GGUF_ARRAY), u32(&b, GRAFT_GGUF_F32), u64(&b, 8), put(&b, sc, sizeof sc);
    str(&b, "tokenizer.ggml.bos_token_id"), u32(&b, GRAFT_GGUF_U32), u32(&b, 1);
    str(&b, "tokenizer.ggml.unknown_token_id"), u32(&b, GRAFT_GGUF_U32), u32(&b, 0);
    uint64_t ne[1] = {32};
    tinfo(&b, "x", 1, ne, GRAFT_GGML_F32, 0);
    pad(&b, 32);
    for (int i = 0; i < 32; i++) u32(&b, 0);
    struct graft_gguf *g = NULL;
    struct graft_err err;
    CHECK_EQ(open_buf(&b, &g, &err), GRAFT_OK);
    char *tj = NULL, *tc = NULL;
    CHECK_EQ(graft_gguf_hf_tokenizer(g, &tj, &tc, &err), GRAFT_OK);
    const char *m = strstr(tj, "\"merges\"");
    CHECK(m);
    const char *m1 = strstr(m, "\"a b\""), *m2 = strstr(m, "\"\\u2581 a\""), *m3 = strstr(m, "\"\\u2581 ab\""), *m4 = strstr(m, "\"\\u2581a b\""); // JSON as Python writes it
    CHECK(m1 && m2 && m3 && m4 && m1 < m2 && m2 < m3 && m3 < m4);
    CHECK(!strstr(m, "\"<s"));
    CHECK_CONTAINS(tc, "\"add_bos_token\": true");
    CHECK_CONTAINS(tc, "\"bos_token\": \"<s>\"");
    struct graft_tokenizer *t = NULL;
    CHECK_EQ(graft_tokenizer_load_texts(tj, strlen(tj), tc, NULL, "t.gguf", &t, &err), GRAFT_OK);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ(graft_tokenizer_encode(t, "ab ab", 5, &ids, &n, &err), GRAFT_OK);
    CHECK_EQ(n, 2);
    CHECK_EQ(ids[0], 7);
    CHECK_EQ(ids[1], 7);
    CHECK_EQ(graft_tokenizer_bos(t), 1);
    free(ids);
    graft_tokenizer_free(t);
    free(tj), free(tc);
    graft_gguf_close(g);
    free(b.p);
}

// GGUF ⇄ HF tensor names are inverse per architecture; unknown names have none.
TEST(gguf_hf_names_are_inverse) {
    static const char *const hf[] = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.0.self_attn.q_proj.weight",
                                     "model.layers.12.self_attn.k_proj.bias", "model.layers.3.mlp.down_proj.weight", "model.layers.7.post_attention_layernorm.weight",
                                     "model.layers.2.block_sparse_moe.gate.weight"};
    char a[128], back[128];
    for (size_t i = 0; i < sizeof hf / sizeof hf[0]; i++) {
        CHECK(graft_gguf_hf_name("llama", hf[i], a, sizeof a, NULL));
        CHECK(graft_gguf_name_to_hf("llama", a, -1, back, sizeof back));
        CHECK_STR(back, hf[i]);
    }
    CHECK(graft_gguf_name_to_hf(NULL, "blk.3.ffn_up.weight", -1, back, sizeof back));
    CHECK_STR(back, "model.layers.3.mlp.up_proj.weight");
    CHECK(graft_gguf_hf_name("llama", "model.layers.7.post_attention_layernorm.weight", a, sizeof a, NULL));
    CHECK_STR(a, "blk.7.ffn_norm.weight");
    // Gemma 2: the same HF name is a post-norm there; its feed-forward pre-norm is pre_feedforward_layernorm
    static const char *const g2[][2] = {{"model.layers.7.post_attention_layernorm.weight", "blk.7.post_attention_norm.weight"},
                                        {"model.layers.7.pre_feedforward_layernorm.weight", "blk.7.ffn_norm.weight"},
                                        {"model.layers.7.post_feedforward_layernorm.weight", "blk.7.post_ffw_norm.weight"},
                                        {"model.layers.1.self_attn.q_proj.weight", "blk.1.attn_q.weight"}};
    for (size_t i = 0; i < sizeof g2 / sizeof g2[0]; i++) {
        CHECK(graft_gguf_hf_name("gemma2", g2[i][0], a, sizeof a, NULL));
        CHECK_STR(a, g2[i][1]);
        CHECK(graft_gguf_name_to_hf("gemma2", a, -1, back, sizeof back));
        CHECK_STR(back, g2[i][0]);
    }
    // Phi-3: fused projections; ffn_up is gate_up_proj there
    CHECK(graft_gguf_hf_name("phi3", "model.layers.0.self_attn.qkv_proj.weight", a, sizeof a, NULL));
    CHECK_STR(a, "blk.0.attn_qkv.weight");
    CHECK(graft_gguf_name_to_hf("phi3", "blk.4.ffn_up.weight", -1, back, sizeof back));
    CHECK_STR(back, "model.layers.4.mlp.gate_up_proj.weight");
    CHECK(!graft_gguf_hf_name("phi3", "model.layers.0.self_attn.q_proj.weight", a, sizeof a, NULL));
    // Mixtral experts: stacked, with their index
    int e = 0;
    CHECK(graft_gguf_hf_name("llama", "model.layers.3.block_sparse_moe.experts.5.w2.weight", a, sizeof a, &e));
    CHECK_STR(a, "blk.3.ffn_down_exps.weight");
    CHECK(e == 5);
    CHECK(graft_gguf_is_experts(a));
    CHECK(graft_gguf_name_to_hf("llama", a, 6, back, sizeof back));
    CHECK_STR(back, "model.layers.3.block_sparse_moe.experts.6.w2.weight");
    CHECK(!graft_gguf_hf_name("llama", "model.layers.3.block_sparse_moe.experts.5.w2.weight", a, sizeof a, NULL));
    CHECK(!graft_gguf_hf_name("llama", "model.layers.3.block_sparse_moe.experts.5.w4.weight", a, sizeof a, &e));
    CHECK(!graft_gguf_name_to_hf("llama", "blk.3.ffn_gate_exps.weight", -1, back, sizeof back));
    CHECK(!graft_gguf_name_to_hf("llama", "blk.-1.ffn_up.weight", -1, back, sizeof back));
    CHECK(!graft_gguf_name_to_hf("llama", "rope_freqs.weight", -1, back, sizeof back));
    // the row permutation and its inverse as used to un-permute
    for (uint64_t r = 0; r < 64; r++) CHECK(graft_gguf_permuted_row(r, 16) < 64);
}
