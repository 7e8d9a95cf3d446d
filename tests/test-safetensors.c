// safetensors reader and writer: golden bytes, the reference test vectors, every adversarial class,
// round trips for every dtype.
#include <stdlib.h>
#include "harness.h"
#include "corrupt.h"
#include "graft/graft.h"

static uint8_t *mkfile(const char *hdr, size_t hlen, uint64_t n, const void *data, size_t dlen, size_t *len) {
    *len = 8 + hlen + dlen;
    uint8_t *f = calloc(1, *len + 1);
    for (int i = 0; i < 8; i++) f[i] = (uint8_t)(n >> (8 * i));
    memcpy(f + 8, hdr, hlen);
    if (data) memcpy(f + 8 + hlen, data, dlen);
    return f;
}

// Open bytes through the file path (mmap) and the memory path; both must agree.
static int open_both(const uint8_t *b, size_t len, struct graft_err *err, struct graft_st **out) {
    const char *p = tpath("f.safetensors");
    twrite(p, b, len);
    struct graft_err e2;
    graft_err_clear(&e2);
    graft_err_clear(err);
    struct graft_st *m = NULL;
    int rc_mem = graft_st_open_mem(b, len, p, &m, &e2);
    int rc = graft_st_open(p, out, err);
    graft_st_close(m);
    if (rc != rc_mem || strcmp(err->msg, e2.msg)) {
        harness_fail(__FILE__, __LINE__, "file and memory readers disagree: %d '%s' vs %d '%s'", rc, err->msg, rc_mem, e2.msg);
        return -100;
    }
    return rc;
}

TEST(st_reference_vectors_invalid) {
    struct graft_err err;
    struct graft_st *st;
    size_t len;
    uint8_t *f;
    // test_header_too_small
    CHECK_EQ(open_both((const uint8_t *)"", 0, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "too small");
    // test_invalid_header_length: N=60, no header bytes
    CHECK_EQ(open_both((const uint8_t *)"<\0\0\0\0\0\0\0", 8, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "runs past the end of the file");
    // test_header_too_large
    const char *hv = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    f = mkfile(hv, strlen(hv), 0xFFFFFF000000003Cull, NULL, 16, &len);
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_E_LIMIT);
    free(f);
    // test_invalid_header_non_utf8
    CHECK_EQ(open_both((const uint8_t *)"\x01\0\0\0\0\0\0\0\xff", 9, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "UTF-8");
    // test_invalid_header_not_json
    CHECK_EQ(open_both((const uint8_t *)"\x01\0\0\0\0\0\0\0{", 9, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "invalid JSON");
    // test_invalid_info: I32 [2,2] with offsets [0,4]
    const char *hi = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0, 4]}}";
    f = mkfile(hi, strlen(hi), strlen(hi), NULL, 4, &len);
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "tensor 'test': data_offsets span 4 bytes but shape [2, 2] of I32 needs 16");
    free(f);
    // test_json_attack: 10 tensors aliasing (0,16)
    char big[2048];
    size_t pos = (size_t)snprintf(big, sizeof big, "{");
    for (int i = 0; i < 10; i++)
        pos += (size_t)snprintf(big + pos, sizeof big - pos, "%s\"weight_%d\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}", i ? "," : "", i);
    snprintf(big + pos, sizeof big - pos, "}");
    f = mkfile(big, strlen(big), strlen(big), NULL, 16, &len);
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "overlap");
    free(f);
    // test_metadata_incomplete_buffer (a) trailing polyglot bytes, (b) 2 bytes missing
    const char *hm = "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    uint8_t data[64] = {0};
    memcpy(data + 16, "extra_bogus_data_for_polyglot_file", 34);
    f = mkfile(hm, strlen(hm), strlen(hm), data, 16 + 34, &len);
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "34 unexpected bytes after the last tensor");
    free(f);
    f = mkfile(hm, strlen(hm), strlen(hm), data, 14, &len);
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "truncated");
    free(f);
}

TEST(st_reference_vectors_valid) {
    struct graft_err err;
    struct graft_st *st;
    size_t len;
    uint8_t *f;
    struct { const char *hdr; size_t dlen; size_t n; } ok[] = {
        {"{\"test\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, 1},  // scalar
        {"{\"test\":{\"dtype\":\"I32\",\"shape\":[2,0],\"data_offsets\":[0,0]}}", 0, 1}, // zero-sized
        {"{}\r \t\n", 0, 0},                                                               // trailing whitespace
        {"\t\n{}\r ", 0, 0},                                                               // leading whitespace
        {"{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 1},
        {"{\"__metadata__\":null}", 0, 0},
        {"{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 3, 2}, // S45
        {"{\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"m\":{\"dtype\":\"U8\",\"shape\":[3,0],\"data_offsets\":[1,1]},\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,1]}}", 1, 4}, // S46
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":{\"any\":[1,2]}}}", 4, 1}, // S28: ignored field
        {"{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"../../x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]},"
         "\"\\ud83d\\ude00\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[2,3]}}", 3, 3}, // S33 odd names
        {"{\"\\u005f_metadata__\":{\"k\":\"v\"}}", 0, 0}, // S24: escaped __metadata__
        {"{\"t\":{\"dtype\":\"F\\u0033\\u0032\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 1}, // escaped dtype
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        f = mkfile(ok[i].hdr, strlen(ok[i].hdr), strlen(ok[i].hdr), NULL, ok[i].dlen, &len);
        int rc = open_both(f, len, &err, &st);
        free(f);
        if (rc) harness_fail(__FILE__, __LINE__, "case %zu: %s", i, err.msg);
        CHECK_EQ(rc, GRAFT_OK);
        CHECK_EQ(graft_st_n_tensors(st), ok[i].n);
        graft_st_close(st);
    }
    // S24: the escaped key is the metadata
    const char *h = "{\"\\u005f_metadata__\":{\"k\":\"v\"}}";
    f = mkfile(h, strlen(h), strlen(h), NULL, 0, &len);
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_OK);
    CHECK_STR(graft_st_meta_get(st, "k"), "v");
    graft_st_close(st);
    free(f);
    // S46: zero-size tensors sit at the cursor; lookups work for all
    const char *z = ok[7].hdr;
    f = mkfile(z, strlen(z), strlen(z), "\x2a", 1, &len);
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_OK);
    long ia = graft_st_find(st, "a", 1);
    CHECK(ia >= 0);
    CHECK_EQ(graft_st_data(st, graft_st_tensor(st, (size_t)ia))[0], 0x2a);
    CHECK(graft_st_find(st, "m", 1) >= 0);
    CHECK(graft_st_find(st, "q", 1) < 0);
    graft_st_close(st);
    free(f);
    // N = 100,000,000 exactly is accepted (S04)
    size_t big = 100000000;
    char *hdr = malloc(big);
    memset(hdr, ' ', big);
    memcpy(hdr, "{}", 2);
    f = mkfile(hdr, big, big, NULL, 0, &len);
    free(hdr);
    CHECK_EQ(graft_st_open_mem(f, len, "big", &st, &err), GRAFT_OK);
    graft_st_close(st);
    free(f);
}

TEST(st_adversarial_classes) {
    // Every class × several seeds: exact status, the message names the file (and the tensor when the
    // class is about one), through both readers.
    char tensor[128];
    for (int c = 0; c < corrupt_n_classes(); c++) {
        const struct corrupt_class *cc = corrupt_class(c);
        int seeds = !strcmp(cc->name, "TOO_MANY_TENSORS") ? 1 : 8;
        for (uint32_t seed = 1; seed <= (uint32_t)seeds; seed++) {
            size_t len;
            tensor[0] = 0;
            uint8_t *b = corrupt_make(c, seed, &len, tensor, sizeof tensor);
            struct graft_err err;
            struct graft_st *st = NULL;
            int rc = open_both(b, len, &err, &st);
            free(b);
            if (rc != cc->status || !strstr(err.msg, cc->msg) || strncmp(err.msg, tpath("f.safetensors"), strlen(tdir()))) {
                harness_fail(__FILE__, __LINE__, "class %s (%s) seed %u: status %d (want %d), message '%s' (want '%s'); replay: gen-corrupt %s %u f",
                             cc->name, cc->ref, seed, rc, cc->status, err.msg, cc->msg, cc->name, seed);
                graft_st_close(st);
                return;
            }
            if (cc->names_tensor) {
                char want[160];
                snprintf(want, sizeof want, "tensor '%s", tensor);
                CHECK_CONTAINS(err.msg, want);
            }
        }
    }
}

TEST(st_golden_writer_bytes) {
    // formats.md §1.9: serialize({"attn.0": F32 [1,2,3] = 0..5}) with no metadata
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_writer *w;
    CHECK_EQ(graft_writer_open(tpath("g.safetensors"), &(struct graft_writer_params){.flags = GRAFT_WRITER_SINGLE_FILE}, &w, &err), 0);
    graft_writer_clear_meta(w);
    uint64_t ne[3] = {1, 2, 3};
    long id = graft_writer_add_tensor(w, "attn.0", 6, GRAFT_DTYPE_F32, 3, ne, &err);
    CHECK_EQ(id, 0);
    CHECK_EQ(graft_writer_layout(w, &err), 0);
    float v[6] = {0, 1, 2, 3, 4, 5};
    CHECK_EQ(graft_writer_write(w, id, 0, v, sizeof v, &err), 0);
    CHECK_EQ(graft_writer_commit(w, &err), 0);
    graft_writer_free(w);
    size_t len;
    char *got = tread(tpath("g.safetensors"), &len);
    static const uint8_t want[] = {
        0x40, 0, 0, 0, 0, 0, 0, 0,
        '{', '"', 'a', 't', 't', 'n', '.', '0', '"', ':', '{', '"', 'd', 't', 'y', 'p', 'e', '"', ':', '"', 'F', '3', '2', '"', ',',
        '"', 's', 'h', 'a', 'p', 'e', '"', ':', '[', '1', ',', '2', ',', '3', ']', ',', '"', 'd', 'a', 't', 'a', '_', 'o', 'f', 'f',
        's', 'e', 't', 's', '"', ':', '[', '0', ',', '2', '4', ']', '}', '}',
        0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40, 0, 0, 0xa0, 0x40};
    CHECK_EQ(len, sizeof want);
    CHECK(!memcmp(got, want, len));
    free(got);

    // "attn0" [1,1,2,3]: 65-byte JSON padded with 7 spaces to N = 72
    CHECK_EQ(graft_writer_open(tpath("h.safetensors"), &(struct graft_writer_params){.flags = GRAFT_WRITER_SINGLE_FILE}, &w, &err), 0);
    graft_writer_clear_meta(w);
    uint64_t ne4[4] = {1, 1, 2, 3};
    id = graft_writer_add_tensor(w, "attn0", 5, GRAFT_DTYPE_F32, 4, ne4, &err);
    CHECK_EQ(graft_writer_layout(w, &err), 0);
    CHECK_EQ(graft_writer_write(w, id, 0, v, sizeof v, &err), 0);
    CHECK_EQ(graft_writer_commit(w, &err), 0);
    graft_writer_free(w);
    got = tread(tpath("h.safetensors"), &len);
    CHECK_EQ((uint8_t)got[0], 72);
    CHECK(!memcmp(got + 8 + 65, "       ", 7));
    free(got);

    // empty dict: {} + 6 spaces; with {"framework":"pt"}: N = 40
    CHECK_EQ(graft_writer_open(tpath("e.safetensors"), &(struct graft_writer_params){.flags = GRAFT_WRITER_SINGLE_FILE}, &w, &err), 0);
    graft_writer_clear_meta(w);
    CHECK_EQ(graft_writer_layout(w, &err), 0);
    CHECK_EQ(graft_writer_commit(w, &err), 0);
    graft_writer_free(w);
    got = tread(tpath("e.safetensors"), &len);
    CHECK_EQ(len, 16);
    CHECK(!memcmp(got, "\x08\0\0\0\0\0\0\0{}      ", 16));
    free(got);
    CHECK_EQ(graft_writer_open(tpath("m.safetensors"), &(struct graft_writer_params){.flags = GRAFT_WRITER_SINGLE_FILE}, &w, &err), 0);
    graft_writer_clear_meta(w);
    CHECK_EQ(graft_writer_set_meta(w, "framework", "pt", &err), 0);
    CHECK_EQ(graft_writer_layout(w, &err), 0);
    CHECK_EQ(graft_writer_commit(w, &err), 0);
    graft_writer_free(w);
    got = tread(tpath("m.safetensors"), &len);
    CHECK_EQ(len, 48);
    CHECK(!memcmp(got, "\x28\0\0\0\0\0\0\0{\"__metadata__\":{\"framework\":\"pt\"}}     ", 48));
    free(got);
}

TEST(st_roundtrip_every_dtype) {
    // One tensor of each dtype with random bytes, plus names that need escaping; reading back gives
    // the same dtype, shape and bytes; data order follows the reference writer (dtype desc, name).
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_writer *w;
    CHECK_EQ(graft_writer_open(tpath("all.safetensors"), &(struct graft_writer_params){.flags = GRAFT_WRITER_SINGLE_FILE}, &w, &err), 0);
    uint8_t *bufs[GRAFT_DTYPE_COUNT];
    uint64_t nbs[GRAFT_DTYPE_COUNT];
    char names[GRAFT_DTYPE_COUNT][64];
    uint32_t s = 7;
    for (int t = 0; t < GRAFT_DTYPE_COUNT; t++) {
        uint64_t ne[2] = {3, 4}; // 12 elements: whole bytes for F4 and F6 too
        snprintf(names[t], sizeof names[t], "t%02d \"q\\\n\x01 \xc3\xa9", t);
        CHECK_EQ(graft_writer_add_tensor(w, names[t], strlen(names[t]), (enum graft_dtype)t, 2, ne, &err), t);
        CHECK(graft_dtype_nbytes((enum graft_dtype)t, 12, &nbs[t]));
        bufs[t] = malloc(nbs[t]);
        for (uint64_t i = 0; i < nbs[t]; i++) bufs[t][i] = (uint8_t)((s = s * 1103515245u + 12345u) >> 16);
    }
    CHECK_EQ(graft_writer_layout(w, &err), 0);
    for (int t = GRAFT_DTYPE_COUNT - 1; t >= 0; t--) CHECK_EQ(graft_writer_write(w, t, 0, bufs[t], nbs[t], &err), 0);
    CHECK_EQ(graft_writer_commit(w, &err), 0);
    graft_writer_free(w);
    struct graft_st *st;
    if (graft_st_open(tpath("all.safetensors"), &st, &err)) harness_fail(__FILE__, __LINE__, "%s", err.msg);
    CHECK_OK();
    CHECK_STR(graft_st_meta_get(st, "format"), "pt");
    CHECK_EQ(graft_st_n_tensors(st), GRAFT_DTYPE_COUNT);
    CHECK_EQ(graft_st_header_len(st) % 8, 0);
    for (int t = 0; t < GRAFT_DTYPE_COUNT; t++) {
        long i = graft_st_find(st, names[t], strlen(names[t]));
        CHECK(i >= 0);
        const struct graft_tensor_info *ti = graft_st_tensor(st, (size_t)i);
        CHECK_EQ(ti->dtype, t);
        CHECK_EQ(ti->n_dims, 2);
        CHECK_EQ(ti->ne[0], 3);
        CHECK_EQ(ti->ne[1], 4);
        CHECK(!memcmp(graft_st_data(st, ti), bufs[t], nbs[t]));
        // data order: larger enum first, so the first tensor is U64 and the last BOOL
        CHECK_EQ(graft_st_tensor(st, (size_t)(GRAFT_DTYPE_COUNT - 1 - t))->dtype, t);
        free(bufs[t]);
    }
    graft_st_close(st);
}

TEST(st_unaligned_header_reads) {
    // S56: N not a multiple of 8 and a BF16 tensor at an odd file offset: reading values must work
    // (UBSan's alignment check runs in the sanitizer build).
    const char *h = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[1,13]}}";
    float v[3] = {1.5f, -2.25f, 1e-40f};
    uint8_t data[13] = {9};
    memcpy(data + 1, v, 12);
    size_t len;
    uint8_t *f = mkfile(h, strlen(h), strlen(h), data, 13, &len);
    struct graft_err err;
    struct graft_st *st;
    CHECK_EQ(open_both(f, len, &err, &st), GRAFT_OK);
    free(f);
    const struct graft_tensor_info *t = graft_st_tensor(st, (size_t)graft_st_find(st, "b", 1));
    float out[3];
    CHECK(graft_row_to_f32(t->dtype, graft_st_data(st, t), out, 3));
    CHECK(!memcmp(out, v, 12));
    graft_st_close(st);
}

TEST(st_many_tensors_fast) {
    // S34/S44: 100,000 tensors parse in bounded time; 100,000 aliases are rejected (sorting, no O(n²)).
    size_t cap = 100000 * 96, pos = 0;
    char *h = malloc(cap);
    pos += (size_t)snprintf(h, cap, "{");
    for (int i = 0; i < 100000; i++)
        pos += (size_t)snprintf(h + pos, cap - pos, "%s\"model.layers.%d.w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}", i ? "," : "", i, i, i + 1);
    snprintf(h + pos, cap - pos, "}");
    size_t len;
    uint8_t *f = mkfile(h, strlen(h), strlen(h), NULL, 100000, &len);
    struct graft_err err;
    struct graft_st *st;
    double t0 = graft_now();
    CHECK_EQ(graft_st_open_mem(f, len, "many", &st, &err), GRAFT_OK);
    CHECK(graft_now() - t0 < 20.0);
    CHECK_EQ(graft_st_n_tensors(st), 100000);
    CHECK_EQ(graft_st_find(st, "model.layers.99999.w", 20), 99999);
    graft_st_close(st);
    free(f);
    free(h);
}

// Names chosen so that unkeyed FNV-1a puts them all in one slot (its low bits depend only on the names'
// low bits: a hostile file can find thousands cheaply) must spread under the keyed table hash: linear
// probing stays near 2.5 probes per insert at half load, not n/2 (a reviewer's 65,536 such names took
// 13 s to open). The file still opens and finds every name.
#include "../src/core/impl.h"
TEST(st_colliding_names_spread) {
    enum { N = 4096, SLOTS = 2 * N };
    static char names[N][16];
    int n = 0;
    for (uint32_t u = 0; n < N; u++) { // "n<u>" and two letters: the prefix's state once, then two steps
        char s[16];
        int l = snprintf(s, sizeof s, "n%u", u);
        uint64_t p = graft__fnv64(GRAFT_FNV64_INIT, s, (size_t)l);
        for (int a = 'a'; a <= 'z' && n < N; a++)
            for (int b = 'a'; b <= 'z' && n < N; b++)
                if ((((p ^ (uint64_t)a) * 0x100000001b3ull ^ (uint64_t)b) * 0x100000001b3ull & (SLOTS - 1)) == 0)
                    s[l] = (char)a, s[l + 1] = (char)b, s[l + 2] = 0, memcpy(names[n++], s, (size_t)l + 3);
    }
    for (int i = 0; i < N; i += 511) CHECK((graft__fnv64(GRAFT_FNV64_INIT, names[i], strlen(names[i])) & (SLOTS - 1)) == 0);
    static uint8_t used[SLOTS];
    uint64_t key = graft__hash_key(), probes = 0;
    for (int i = 0; i < N; i++) {
        size_t h = graft__name_hash(key, names[i], strlen(names[i])) & (SLOTS - 1);
        for (probes++; used[h]; h = (h + 1) & (SLOTS - 1)) probes++;
        used[h] = 1;
    }
    CHECK(probes < 8 * N); // (unkeyed: N²/2 ≈ 8.4 million)
    size_t cap = (size_t)N * 80, pos = 0;
    char *h = malloc(cap);
    pos += (size_t)snprintf(h, cap, "{");
    for (int i = 0; i < N; i++) pos += (size_t)snprintf(h + pos, cap - pos, "%s\"%s\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}", i ? "," : "", names[i], i, i + 1);
    snprintf(h + pos, cap - pos, "}");
    size_t len;
    uint8_t *f = mkfile(h, strlen(h), strlen(h), NULL, N, &len);
    struct graft_err err;
    struct graft_st *st;
    CHECK_EQ(graft_st_open_mem(f, len, "colliding", &st, &err), GRAFT_OK);
    for (int i = 0; i < N; i += 97) CHECK_EQ(graft_st_find(st, names[i], strlen(names[i])), i);
    graft_st_close(st);
    free(f), free(h);
}
