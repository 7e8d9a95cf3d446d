// graft — evolve genomes: a MergeKit merge config in which numeric parameters may be search ranges,
//
//     weight: {search: [0, 1]}               one value in [0, 1]
//     density: {search: [0.2, 1], groups: 4} four values: a gradient list over the layers
//
// A point x (one coordinate per searched value, 0 ↦ lo and 1 ↦ hi, clipped to [0, 1]) renders the
// genome into a plain MergeKit YAML: each range is replaced in the text by its value (or list), so
// comments and layout stay as written.
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
// Line of coordinate i's range in the genome (1-based), and its value at x_i.
int    graft_genome_line(const struct graft_genome *g, int i);
double graft_genome_value(const struct graft_genome *g, int i, double x);
// The MergeKit YAML at point x (dim values); malloc'd, NUL-terminated, NULL when out of memory.
char *graft_genome_render(const struct graft_genome *g, const double *x);

#ifdef __cplusplus
}
#endif
#endif
