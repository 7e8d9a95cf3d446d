// Fuzz target: the MergeKit YAML config reader (libyaml document + schema checks) on arbitrary bytes.
#include <stdint.h>
#include <stdlib.h>
#include "../src/config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct graft_merge_config *c;
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_config_parse((const char *)data, size, "fuzz.yml", &c, &err) == GRAFT_OK) {
        double v;
        const char *s = NULL;
        for (size_t i = 0; i < c->params.n; i++) graft_pv_eval(&c->params.p[i].value, "model.layers.3.mlp.up_proj.weight", 0.5, &v, &s);
        for (size_t m = 0; m < c->n_modules; m++)
            for (size_t i = 0; i < c->modules[m].params.n; i++)
                graft_pv_eval(&c->modules[m].params.p[i].value, "vision_tower.encoder.layers.1.mlp.fc1.weight", 1.0, &v, &s);
        graft_config_free(c);
    }
    return 0;
}
