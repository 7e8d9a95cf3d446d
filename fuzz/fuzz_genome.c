// Fuzz target: evolve genomes (src/config/genome.c) on arbitrary bytes. A genome that loads must render
// at the corners and centre of its search space and at its starting point, and each rendering must be a text the MergeKit
// config reader accepts or rejects cleanly.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "graft/genome.h"
#include "../src/config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct graft_genome *g;
    struct graft_err err = {0};
    if (graft_genome_parse((const char *)data, size, "fuzz.yml", &g, &err)) return 0;
    int n = graft_genome_dim(g);
    double *x = malloc((size_t)n * sizeof *x);
    for (int corner = 0; x && corner < 4; corner++) { // low, high, centre, the starting point
        if (corner == 3) graft_genome_init(g, x);
        else
            for (int i = 0; i < n; i++) x[i] = corner == 2 ? 0.5 : corner == 1 ? 7.0 : -3.0;
        char *y = graft_genome_render(g, x);
        struct graft_merge_config *c;
        if (y && !graft_config_parse(y, strlen(y), "rendered.yml", &c, &err)) graft_config_free(c);
        free(y);
    }
    free(x);
    graft_genome_free(g);
    return 0;
}
