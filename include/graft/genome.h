// graft — evolve genomes: a MergeKit merge config in which numeric parameters may be search ranges
// and any plain value a choice,
//
//     weight: {search: [0, 1]}               one value in [0, 1]
//     density: {search: [0.2, 1], groups: 4} four values: a gradient list over the layers
//     lambda: {search: [0.5, 1.5], init: 1}  starting from 1
//     merge_method: {choice: [ties, dare_ties, task_arithmetic], init: ties}
//
// A point x (one coordinate per searched value or choice, 0 ↦ lo and 1 ↦ hi, clipped to [0, 1]; a
// choice's n items take equal bins of [0, 1]) renders the genome into a plain MergeKit YAML: each
// range is replaced in the text by its value (or list), each choice by its item, so comments and
// layout stay as written. The starting point (graft_genome_init) is each `init:`, else for a weight
// (`weight:`, also inside a filter list) 1 / the number of models merged into the base — the
// equal-weight average for linear and task_arithmetic —, else the range's middle, a choice's first
// item.
//
// A data-flow genome (`dataflow: {models: [A, B], repeats: R, scale: true, scale_range: [lo, hi],
// layers: [...]}`; layer counts read from the models' config.json by graft_genome_load when not given)
// has one coordinate per layer slot (every model's layers in order, the whole repeated R times: in the
// path when ≥ ½) and, with scale, one per slot for the residual scale at that layer's input; it
// renders as a passthrough config of single-layer slices, each with o_proj and down_proj scaled by
// 1 / the product of the path's scales so far (RMSNorm is blind to the stream's common factor). Its
// starting point is model A alone, scales 1.
#ifndef GRAFT_GENOME_H
#define GRAFT_GENOME_H

#include <stddef.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_GENOME_MAX_DIM 4096

struct graft_genome;
// Errors: GRAFT_E_CONFIG (bad YAML or range, with its line), GRAFT_E_NOMEM, and those of reading.
int  graft_genome_load(const char *path, struct graft_genome **out, struct graft_err *err);
int  graft_genome_parse(const char *text, size_t len, const char *label, struct graft_genome **out, struct graft_err *err);
void graft_genome_free(struct graft_genome *g); // NULL-safe
int  graft_genome_dim(const struct graft_genome *g);
// Line of coordinate i's range in the genome (1-based), and its value at x_i (a choice: the item's index).
int    graft_genome_line(const struct graft_genome *g, int i);
double graft_genome_value(const struct graft_genome *g, int i, double x);
// Coordinate i's choice count (0: a numeric range).
int    graft_genome_choices(const struct graft_genome *g, int i);
// The starting point (dim coordinates in [0, 1]).
void   graft_genome_init(const struct graft_genome *g, double *x);
// The MergeKit YAML at point x (dim values); malloc'd, NUL-terminated, NULL when out of memory.
char *graft_genome_render(const struct graft_genome *g, const double *x);

#ifdef __cplusplus
}
#endif
#endif
