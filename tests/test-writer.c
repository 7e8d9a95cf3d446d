// Writer: HF shard naming and index text, greedy sharding, atomic appearance, refusal to clobber
// inputs or non-empty folders, --force replacement, stale temp clean-up, abort leaves nothing.
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "harness.h"
#include "graft/graft.h"

static int n_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) n += de->d_name[0] != '.' || (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."));
    closedir(d);
    return n;
}

// Writes tensors t0..t{n-1}, U8 [sizes[i]] filled with i; returns status.
static int write_model(const char *out, const uint64_t *sizes, int n, const struct graft_writer_params *p, struct graft_err *err) {
    struct graft_writer *w;
    graft_err_clear(err);
    int rc = graft_writer_open(out, p, &w, err);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        if (graft_writer_add_tensor(w, name, strlen(name), GRAFT_DTYPE_U8, 1, &sizes[i], err) < 0) { graft_writer_free(w); return err->code; }
    }
    if ((rc = graft_writer_layout(w, err))) { graft_writer_free(w); return rc; }
    for (int i = 0; i < n; i++) {
        uint8_t *b = malloc(sizes[i] + 1);
        memset(b, i, sizes[i]);
        rc = graft_writer_write(w, i, 0, b, sizes[i], err);
        free(b);
        if (rc) { graft_writer_free(w); return rc; }
    }
    rc = graft_writer_commit(w, err);
    graft_writer_free(w);
    return rc;
}

TEST(writer_shards_and_index) {
    uint64_t sizes[5] = {40, 30, 50, 100, 10};
    struct graft_writer_params p = graft_writer_default_params();
    p.max_shard_bytes = 80; // greedy: [t0 t1] [t2] [t3] [t4]
    struct graft_err err;
    CHECK_EQ(write_model(tpath("out"), sizes, 5, &p, &err), GRAFT_OK);
    CHECK(texists(tpath("out/model-00001-of-00004.safetensors")));
    CHECK(texists(tpath("out/model-00004-of-00004.safetensors")));
    CHECK(!texists(tpath("out/model.safetensors")));
    char *idx = tread(tpath("out/model.safetensors.index.json"), NULL);
    CHECK_STR(idx, "{\n  \"metadata\": {\n    \"total_size\": 230\n  },\n  \"weight_map\": {\n"
                   "    \"t0\": \"model-00001-of-00004.safetensors\",\n    \"t1\": \"model-00001-of-00004.safetensors\",\n"
                   "    \"t2\": \"model-00002-of-00004.safetensors\",\n    \"t3\": \"model-00003-of-00004.safetensors\",\n"
                   "    \"t4\": \"model-00004-of-00004.safetensors\"\n  }\n}\n");
    free(idx);
    struct graft_model *m;
    CHECK_EQ(graft_model_open(tpath("out"), &m, &err), GRAFT_OK);
    CHECK_EQ(graft_model_n_tensors(m), 5);
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof name, "t%d", i);
        const struct graft_model_tensor *t = graft_model_find(m, name, strlen(name));
        CHECK(t && t->info->n_bytes == sizes[i]);
        CHECK_EQ(graft_model_data(m, t)[sizes[i] - 1], i);
    }
    graft_model_close(m);
    CHECK_EQ(n_entries(tdir()), 1); // no temp folder left beside
    // one shard → plain model.safetensors, no index
    p.max_shard_bytes = 1000;
    CHECK_EQ(write_model(tpath("one"), sizes, 5, &p, &err), GRAFT_OK);
    CHECK(texists(tpath("one/model.safetensors")));
    CHECK(!texists(tpath("one/model.safetensors.index.json")));
}

TEST(writer_refuses_and_forces) {
    uint64_t sizes[1] = {8};
    struct graft_writer_params p = graft_writer_default_params();
    struct graft_err err;
    CHECK_EQ(write_model(tpath("out"), sizes, 1, &p, &err), GRAFT_OK);
    // non-empty target without force
    CHECK_EQ(write_model(tpath("out"), sizes, 1, &p, &err), GRAFT_E_EXISTS);
    CHECK_CONTAINS(err.msg, "--force");
    // an empty existing folder is fine
    mkdir(tpath("empty"), 0755);
    CHECK_EQ(write_model(tpath("empty"), sizes, 1, &p, &err), GRAFT_OK);
    // force replaces the old content completely (old extra files are gone)
    twrite(tpath("out/stale.txt"), "x", 1);
    mkdir(tpath("out/sub"), 0755);
    twrite(tpath("out/sub/deep.txt"), "x", 1);
    p.flags = GRAFT_WRITER_FORCE;
    uint64_t two[2] = {4, 4};
    CHECK_EQ(write_model(tpath("out"), two, 2, &p, &err), GRAFT_OK);
    CHECK(!texists(tpath("out/stale.txt")));
    CHECK(!texists(tpath("out/sub")));
    CHECK_EQ(n_entries(tdir()), 2);
    // the output must not be an input, nor contain one, even with --force
    const char *in = tpath("out/model.safetensors");
    const char *protect[1] = {in};
    p.protect = protect, p.n_protect = 1;
    CHECK_EQ(write_model(tpath("out"), sizes, 1, &p, &err), GRAFT_E_USAGE);
    CHECK_CONTAINS(err.msg, "contains the input");
    p.flags |= GRAFT_WRITER_SINGLE_FILE;
    CHECK_EQ(write_model(in, sizes, 1, &p, &err), GRAFT_E_USAGE);
    CHECK_CONTAINS(err.msg, "is the input");
    const char *pdir[1] = {tpath("out")};
    p.protect = pdir, p.flags = GRAFT_WRITER_FORCE;
    CHECK_EQ(write_model(tpath("out"), sizes, 1, &p, &err), GRAFT_E_USAGE);
    // the input is untouched
    struct graft_model *m;
    CHECK_EQ(graft_model_open(tpath("out"), &m, &err), GRAFT_OK);
    CHECK_EQ(graft_model_n_tensors(m), 2);
    graft_model_close(m);
}

TEST(writer_abort_leaves_nothing) {
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_writer *w;
    CHECK_EQ(graft_writer_open(tpath("out"), NULL, &w, &err), GRAFT_OK);
    uint64_t ne = 16;
    CHECK_EQ(graft_writer_add_tensor(w, "a", 1, GRAFT_DTYPE_F32, 1, &ne, &err), 0);
    CHECK_EQ(graft_writer_layout(w, &err), GRAFT_OK);
    CHECK_EQ(n_entries(tdir()), 1); // the temp folder, hidden
    CHECK(!texists(tpath("out")));
    // committing with missing bytes is refused
    CHECK_EQ(graft_writer_commit(w, &err), GRAFT_E_INTERNAL);
    CHECK_CONTAINS(err.msg, "only 0 of 64 bytes");
    graft_writer_free(w);
    CHECK_EQ(n_entries(tdir()), 0);
    // bad names and duplicates
    CHECK_EQ(graft_writer_open(tpath("out"), NULL, &w, &err), GRAFT_OK);
    graft_err_clear(&err);
    CHECK_EQ(graft_writer_add_tensor(w, "a", 1, GRAFT_DTYPE_F32, 1, &ne, &err), 0);
    graft_err_clear(&err);
    CHECK_EQ(graft_writer_add_tensor(w, "a", 1, GRAFT_DTYPE_F32, 1, &ne, &err), GRAFT_E_USAGE);
    graft_err_clear(&err);
    CHECK_EQ(graft_writer_add_tensor(w, "\xff", 1, GRAFT_DTYPE_F32, 1, &ne, &err), GRAFT_E_USAGE);
    graft_writer_free(w);
    CHECK_EQ(n_entries(tdir()), 0);
}

TEST(writer_removes_stale_temps) {
    // A temp folder of a killed run (dead pid) is removed by the next run on the same target.
    mkdir(tpath(".out.graft-tmp-2147483646"), 0755);
    twrite(tpath(".out.graft-tmp-2147483646/model.safetensors"), "junk", 4);
    uint64_t sizes[1] = {8};
    struct graft_err err;
    CHECK_EQ(write_model(tpath("out"), sizes, 1, NULL, &err), GRAFT_OK);
    CHECK(!texists(tpath(".out.graft-tmp-2147483646")));
    CHECK_EQ(n_entries(tdir()), 1);
}

TEST(writer_stale_temps_of_other_hosts_kept) {
    // Temporaries are named HOST@PID: in a folder shared between hosts, a pid that is dead here may be
    // another host's live run, so only this host's dead ones are swept.
    char host[64], mine[160], other[160];
    if (gethostname(host, sizeof host) != 0) host[0] = 0;
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '.' || *c == '-')) *c = '_';
    snprintf(mine, sizeof mine, ".out.graft-tmp-%s@2147483646", host);
    snprintf(other, sizeof other, ".out.graft-tmp-%sx@2147483646", host);
    mkdir(tpath(mine), 0755);
    mkdir(tpath(other), 0755);
    uint64_t sizes[1] = {8};
    struct graft_err err;
    CHECK_EQ(write_model(tpath("out"), sizes, 1, NULL, &err), GRAFT_OK);
    CHECK(!texists(tpath(mine)));
    CHECK(texists(tpath(other)));
    CHECK_EQ(n_entries(tdir()), 2);
}

TEST(writer_side_files) {
    // config.json gets the new torch_dtype (and keeps everything else), tokenizer files are copied.
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_synth_params sp = graft_synth_default_params();
    CHECK_EQ(graft_synth(tpath("base"), &sp, &err), GRAFT_OK);
    twrite(tpath("base/tokenizer.json"), "{\"x\":1}", 7);
    twrite(tpath("base/tokenizer_config.json"), "{}", 2);
    twrite(tpath("base/unrelated.bin"), "zz", 2);
    struct graft_model *m;
    CHECK_EQ(graft_model_open(tpath("base"), &m, &err), GRAFT_OK);
    struct graft_convert_params cp = graft_convert_default_params();
    cp.dtype = GRAFT_DTYPE_F32;
    CHECK_EQ(graft_convert(m, tpath("out"), &cp, &err), GRAFT_OK);
    graft_model_close(m);
    char *cfg = tread(tpath("out/config.json"), NULL);
    CHECK_CONTAINS(cfg, "\"torch_dtype\": \"float32\"");
    CHECK_CONTAINS(cfg, "\"rms_norm_eps\": 1e-05");
    CHECK_CONTAINS(cfg, "\"rope_theta\": 10000.0");
    free(cfg);
    char *tok = tread(tpath("out/tokenizer.json"), NULL);
    CHECK_STR(tok, "{\"x\":1}");
    free(tok);
    CHECK(texists(tpath("out/tokenizer_config.json")));
    CHECK(texists(tpath("out/generation_config.json")));
    CHECK(!texists(tpath("out/unrelated.bin")));
}
