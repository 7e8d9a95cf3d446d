// The real config.json files of tests/configs, compiled into graft (scripts/embed-configs.sh writes
// them into the build's gen/presets.c) for `graft synth --preset NAME`.
#ifndef GRAFT_OPS_PRESETS_H
#define GRAFT_OPS_PRESETS_H
#include <stddef.h>

struct graft__preset {
    const char *name; // the file name without .json, e.g. "llama-3.1-8b"
    const char *json;
};
extern const struct graft__preset graft__presets[];
extern const size_t graft__n_presets;
#endif
