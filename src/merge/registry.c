// The method registry: MergeKit's names, one line per method (the GTA family is one table of eight).
#include <string.h>
#include "method.h"

extern const struct graft_method graft_method_linear, graft_method_passthrough, graft_method_slerp, graft_method_nearswap;
extern const struct graft_method graft_methods_gta[8];
extern const struct graft_method graft_method_ram, graft_method_ramplus_tl, graft_method_model_stock, graft_method_karcher,
    graft_method_multislerp, graft_method_nuslerp, graft_method_sce, graft_method_arcee_fusion;
extern const struct graft_method graft_method_iso_c, graft_method_iso_cts, graft_method_tsv, graft_method_pcb, graft_method_regmean, graft_method_fisher, graft_method_mats, graft_method_opcm;

static const struct graft_method *const registry[] = {
    &graft_method_linear,
    &graft_method_slerp,
    &graft_method_nuslerp,
    &graft_method_multislerp,
    &graft_method_karcher,
    &graft_methods_gta[0], // task_arithmetic
    &graft_methods_gta[1], // ties
    &graft_methods_gta[2], // dare_linear
    &graft_methods_gta[3], // dare_ties
    &graft_methods_gta[4], // breadcrumbs
    &graft_methods_gta[5], // breadcrumbs_ties
    &graft_methods_gta[6], // della
    &graft_methods_gta[7], // della_linear
    &graft_method_sce,
    &graft_method_ram,
    &graft_method_ramplus_tl,
    &graft_method_model_stock,
    &graft_method_nearswap,
    &graft_method_arcee_fusion,
    &graft_method_passthrough,
    &graft_method_iso_c,
    &graft_method_iso_cts,
    &graft_method_tsv,
    &graft_method_pcb,
    &graft_method_regmean,
    &graft_method_fisher,
    &graft_method_mats,
    &graft_method_opcm,
};

const struct graft_method *graft_method_find(const char *name) {
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    return NULL;
}

const char *graft_method_names(void) {
    return "linear, slerp, nuslerp, multislerp, karcher, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, "
           "breadcrumbs_ties, della, della_linear, sce, ram, ramplus_tl, model_stock, nearswap, arcee_fusion, passthrough, iso_c, iso_cts, tsv, pcb, regmean, fisher, mats, opcm";
}
