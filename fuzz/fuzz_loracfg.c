// Fuzz target: the graft merge-lora YAML config reader (libyaml document + schema checks) on arbitrary bytes.
#include <stdint.h>
#include <stdlib.h>
#include "../src/config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct graft_lora_merge_config *c;
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_lora_merge_config_parse((const char *)data, size, "dir/fuzz.yml", &c, &err) == GRAFT_OK) {
        // what the merge reads of a parsed config: every input, the combination's name
        double sum = 0;
        for (size_t i = 0; i < c->spec.n_inputs; i++) sum += c->spec.inputs[i].weight + (double)(c->spec.inputs[i].adapter[0] == '/');
        (void)graft_lora_combination_name(c->spec.combination);
        (void)sum;
        graft_lora_merge_config_free(c);
    }
    return 0;
}
