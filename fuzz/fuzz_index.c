// Fuzz target: model.safetensors.index.json handling. The input becomes the index of a scratch
// folder holding two valid shards (a: tensors x y, b: tensor z); graft_model_open must either accept
// a consistent index or reject it cleanly, never read outside the folder.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "graft/graft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256]; // per-process scratch folder, made on first use

static void put(const char *name, const void *d, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    fclose(f);
}

static void shard(const char *name, const char *hdr, size_t data) {
    size_t hl = strlen(hdr);
    uint8_t buf[512] = {0};
    buf[0] = (uint8_t)hl;
    memcpy(buf + 8, hdr, hl);
    put(name, buf, 8 + hl + data);
}

static void setup(void) {
    snprintf(dir, sizeof dir, "%s/graft-fuzz-index-%ld", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    mkdir(dir, 0755);
    shard("a.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"y\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[8,9]}}", 9);
    shard("b.safetensors", "{\"z\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]}}", 6);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) setup();
    put("model.safetensors.index.json", data, size);
    struct graft_model *m;
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_model_open(dir, &m, &err) == GRAFT_OK) {
        for (size_t i = 0; i < graft_model_n_tensors(m); i++) (void)graft_model_data(m, graft_model_tensor(m, i));
        graft_model_close(m);
    }
    return 0;
}
