#include <stdio.h>
#include <string.h>
#include "harness.h"
#include "mergetest.h"

int merge_yaml(const char *yaml, const char *out, int threads, uint64_t seed, uint64_t chunk_elems, struct graft_err *err) {
    const char *cfg = tpath("cfg-%s.yml", out);
    twrite(cfg, yaml, strlen(yaml));
    struct graft_merge_options o = graft_merge_default_options();
    o.n_threads = threads, o.seed = seed, o.chunk_elems = chunk_elems;
    FILE *devnull = fopen("/dev/null", "w");
    o.log = devnull;
    graft_err_clear(err);
    int rc = graft_merge(cfg, tpath("%s", out), &o, err);
    fclose(devnull);
    return rc;
}
