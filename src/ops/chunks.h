// Work partition shared by streaming operations: every tensor is cut into chunks of a fixed element
// count; work item k maps to (tensor, first element, element count) through prefix sums. The partition
// depends only on the tensor sizes and the chunk size, never on the thread count.
#ifndef GRAFT_OPS_CHUNKS_H
#define GRAFT_OPS_CHUNKS_H
#include <stddef.h>
#include <stdint.h>
#include "../core/impl.h"

struct graft__chunks {
    uint64_t  chunk;      // elements per chunk (even, so 4-bit types start on a byte)
    uint64_t *first;      // n + 1 prefix sums: first item of each tensor
    size_t    n;
};

static inline int graft__chunks_init(struct graft__chunks *c, size_t n_tensors, uint64_t chunk) {
    c->chunk = chunk ? (chunk + 1) & ~1ull : 1u << 20;
    c->n     = n_tensors;
    c->first = graft__calloc(n_tensors + 1, sizeof *c->first);
    return c->first ? GRAFT_OK : GRAFT_E_NOMEM;
}
static inline void graft__chunks_set(struct graft__chunks *c, size_t i, uint64_t n_elem) {
    c->first[i + 1] = c->first[i] + (n_elem + c->chunk - 1) / c->chunk;
}
static inline size_t graft__chunks_items(const struct graft__chunks *c) { return (size_t)c->first[c->n]; }
// Tensor of `item`, and the element range [*e0, *e0 + *ne) within it (given its element count).
static inline size_t graft__chunks_locate(const struct graft__chunks *c, size_t item, uint64_t *e0) {
    size_t lo = 0, hi = c->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (c->first[mid] <= item) lo = mid; else hi = mid;
    }
    *e0 = (item - c->first[lo]) * c->chunk;
    return lo;
}
static inline uint64_t graft__chunks_len(const struct graft__chunks *c, uint64_t e0, uint64_t n_elem) {
    return n_elem - e0 < c->chunk ? n_elem - e0 : c->chunk;
}
static inline void graft__chunks_free(struct graft__chunks *c) { graft__free(c->first); c->first = NULL; }
#endif
