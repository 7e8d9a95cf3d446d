// Model folders and sharded indexes: valid layouts, and each index attack of formats.md §6.4.
#include <stdlib.h>
#include <sys/stat.h>
#include "harness.h"
#include "graft/graft.h"

// Write a small valid shard holding tensors `names` (space-separated), each U8 [2] = {i, i}.
static void shard(const char *path, const char *names) {
    char hdr[4096] = "{", list[1024];
    snprintf(list, sizeof list, "%s", names);
    size_t off = 0, n = 0;
    for (char *t = strtok(list, " "); t; t = strtok(NULL, " "), n++) {
        size_t l = strlen(hdr);
        snprintf(hdr + l, sizeof hdr - l, "%s\"%s\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[%zu,%zu]}", n ? "," : "", t, off, off + 2);
        off += 2;
    }
    strcat(hdr, "}");
    size_t hl = strlen(hdr), len = 8 + hl + off;
    uint8_t *f = calloc(1, len);
    f[0] = (uint8_t)hl, f[1] = (uint8_t)(hl >> 8);
    memcpy(f + 8, hdr, hl);
    for (size_t i = 0; i < off; i++) f[8 + hl + i] = (uint8_t)(i / 2);
    twrite(path, f, len);
    free(f);
}

static int open_model(const char *dir, struct graft_err *err) {
    graft_err_clear(err);
    struct graft_model *m = NULL;
    int rc = graft_model_open(dir, &m, err);
    graft_model_close(m);
    return rc;
}

static void sharded_folder(const char *dir) {
    mkdir(dir, 0755);
    char p[4096];
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    shard(p, "a b");
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    shard(p, "c");
}

static void write_index(const char *dir, const char *json) {
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    twrite(p, json, strlen(json));
}

#define GOOD_MAP "\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\""

TEST(model_sharded_ok) {
    const char *d = tpath("m");
    sharded_folder(d);
    write_index(d, "{\"metadata\":{\"total_size\":999,\"anything\":[1]},\"weight_map\":{" GOOD_MAP "}}");
    const char *cfg = "{\"model_type\":\"llama\",\"rms_norm_eps\":1e-05}";
    twrite(tpath("m/config.json"), cfg, strlen(cfg));
    struct graft_err err;
    struct graft_model *m;
    CHECK_EQ(graft_model_open(d, &m, &err), GRAFT_OK);
    CHECK_EQ(graft_model_n_shards(m), 2);
    CHECK_EQ(graft_model_n_tensors(m), 3);
    CHECK_EQ(graft_model_n_bytes(m), 6);
    const struct graft_model_tensor *c = graft_model_find(m, "c", 1);
    CHECK(c && c->shard == 1);
    CHECK(graft_model_find(m, "d", 1) == NULL);
    CHECK_CONTAINS(graft_model_config_json(m), "\"model_type\":\"llama\"");
    graft_model_close(m);
    // total_size and metadata are advisory: absent is fine (I05)
    write_index(d, "{\"weight_map\":{" GOOD_MAP "}}");
    CHECK_EQ(open_model(d, &err), GRAFT_OK);
}

TEST(model_index_attacks) {
    const char *d = tpath("m");
    sharded_folder(d);
    shard(tpath("outside.safetensors"), "a b");
    struct { const char *json; int status; const char *msg; } cases[] = {
        {"{\"weight_map\":{\"a\":\"../outside.safetensors\"}}", GRAFT_E_FORMAT, "path separator"},       // I01
        {"{\"weight_map\":{\"a\":\"/etc/passwd\"}}", GRAFT_E_FORMAT, "path separator"},
        {"{\"weight_map\":{\"a\":\"sub/dir/x.safetensors\"}}", GRAFT_E_FORMAT, "path separator"},
        {"{\"weight_map\":{\"a\":\"C:\\\\x.safetensors\"}}", GRAFT_E_FORMAT, "path separator"},
        {"{\"weight_map\":{\"a\":\"C:x.safetensors\"}}", GRAFT_E_FORMAT, "drive"},
        {"{\"weight_map\":{\"a\":\"..safetensors\"}}", GRAFT_E_FORMAT, "starts with '.'"},
        {"{\"weight_map\":{\"a\":\"x\\u0000.safetensors\"}}", GRAFT_E_FORMAT, "invalid JSON"},
        {"{\"weight_map\":{\"a\":\"model-00009-of-00009.safetensors\"}}", GRAFT_E_FORMAT, "missing"},     // I02
        {"{\"weight_map\":{" GOOD_MAP ",\"z\":\"model-00002-of-00002.safetensors\"}}", GRAFT_E_FORMAT, "absent from shard"}, // I03
        {"{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"b\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}",
         GRAFT_E_FORMAT, "weight_map says shard"},                                                         // I04 wrong shard
        {"{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\",\"c\":\"model-00002-of-00002.safetensors\"}}", GRAFT_E_FORMAT,
         "not listed"},                                                                                    // I04 unlisted
        {"{\"weight_map\":{" GOOD_MAP ",\"a\":\"model-00001-of-00002.safetensors\"}}", GRAFT_E_FORMAT, "duplicate"}, // I06
        {"{\"weight_map\":{\"a\":\"model.pt\"}}", GRAFT_E_FORMAT, "does not end in .safetensors or .bin"}, // I08 (a .bin shard is a PyTorch checkpoint)
        {"{\"weight_map\":{\"a\":\"model.safetensors.index.json\"}}", GRAFT_E_FORMAT, "does not end in .safetensors"},
        {"{\"weight_map\":{\"a\":7}}", GRAFT_E_FORMAT, "not a string"},
        {"{\"weight_map\":[]}", GRAFT_E_FORMAT, "weight_map"},
        {"{\"weight_map\":{}}", GRAFT_E_FORMAT, "no tensors"},
        {"[]", GRAFT_E_FORMAT, "not an object"},
        {"{\"weight_map\":{\"a\":", GRAFT_E_FORMAT, "invalid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_index(d, cases[i].json);
        struct graft_err err;
        int rc = open_model(d, &err);
        if (rc != cases[i].status || !strstr(err.msg, cases[i].msg)) {
            harness_fail(__FILE__, __LINE__, "case %zu %s: got %d '%s', want %d '%s'", i, cases[i].json, rc, err.msg, cases[i].status, cases[i].msg);
            return;
        }
    }
    // a tensor in two shards, both listed once (the map cannot say both): rejected
    shard(tpath("m/model-00002-of-00002.safetensors"), "c a");
    write_index(d, "{\"weight_map\":{" GOOD_MAP "}}");
    struct graft_err err;
    CHECK_EQ(open_model(d, &err), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "tensor 'a'");
    // a deeply nested index (I07) and an oversized one are bounded rejections
    char *deep = malloc(200000);
    strcpy(deep, "{\"x\":");
    for (int i = 0; i < 50000; i++) strcat(deep + 5 + i, "[");
    write_index(d, deep);
    free(deep);
    CHECK_EQ(open_model(d, &err), GRAFT_E_FORMAT);
    FILE *f = fopen(tpath("m/model.safetensors.index.json"), "wb");
    fseek(f, (long)GRAFT_INDEX_MAX_BYTES + 1, SEEK_SET);
    fputc(' ', f);
    fclose(f);
    CHECK_EQ(open_model(d, &err), GRAFT_E_LIMIT);
}

TEST(model_folder_forms) {
    struct graft_err err;
    const char *d = tpath("f");
    mkdir(d, 0755);
    CHECK_EQ(open_model(d, &err), GRAFT_E_NOTFOUND);
    CHECK_CONTAINS(err.msg, "no model.safetensors");
    shard(tpath("f/adapter.safetensors"), "x");
    CHECK_EQ(open_model(d, &err), GRAFT_OK); // the only .safetensors file
    shard(tpath("f/other.safetensors"), "y");
    CHECK_EQ(open_model(d, &err), GRAFT_E_FORMAT); // ambiguous
    shard(tpath("f/model.safetensors"), "w");
    CHECK_EQ(open_model(d, &err), GRAFT_OK); // model.safetensors wins
    twrite(tpath("f/config.json"), "{\"a\":1,\"a\":2}", 13);
    CHECK_EQ(open_model(d, &err), GRAFT_E_FORMAT);
    CHECK_CONTAINS(err.msg, "config.json");
    CHECK_CONTAINS(err.msg, "duplicate");
    twrite(tpath("f/config.json"), "[1]", 3);
    CHECK_EQ(open_model(d, &err), GRAFT_E_FORMAT);
    CHECK_EQ(open_model(tpath("f/model.safetensors"), &err), GRAFT_OK); // a single file
    CHECK_EQ(open_model(tpath("nope"), &err), GRAFT_E_NOTFOUND);
}
