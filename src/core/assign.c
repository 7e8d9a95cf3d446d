// Linear assignment (the Hungarian method, in the shortest-augmenting-path form with dual potentials,
// O(n³)): a permutation maximising Σ S[i][perm[i]] over an n × n score matrix. Deterministic: ties go
// to the lowest column index found first.
#include <float.h>
#include <math.h>
#include <string.h>
#include "impl.h"

int graft__assign_max(const double *S, size_t n, size_t *perm, struct graft_err *err) {
    if (n == 0) return GRAFT_OK;
    for (size_t i = 0; i < n * n; i++) // a NaN / ±Inf score would never be chosen nor left: the search would not end
        if (!isfinite(S[i])) return graft_err_set(err, GRAFT_E_NONFINITE, NULL, NULL, 0, "the matching scores are not finite (NaN or infinite weights)");
    // minimise the cost C = −S; rows and columns 1-based, index 0 the virtual start (u, v potentials)
    double *u = graft__calloc(n + 1, sizeof *u), *v = graft__calloc(n + 1, sizeof *v), *minv = graft__malloc((n + 1) * sizeof *minv);
    size_t *p = graft__calloc(n + 1, sizeof *p), *way = graft__calloc(n + 1, sizeof *way);
    bool *used = graft__malloc((n + 1) * sizeof *used);
    if (!u || !v || !minv || !p || !way || !used) {
        graft__free(u), graft__free(v), graft__free(minv), graft__free(p), graft__free(way), graft__free(used);
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for an assignment of %zu", n);
    }
    for (size_t i = 1; i <= n; i++) {
        p[0] = i;
        size_t j0 = 0;
        for (size_t j = 0; j <= n; j++) minv[j] = INFINITY, used[j] = false;
        do { // grow the alternating tree from row i until it reaches a free column
            used[j0] = true;
            size_t i0 = p[j0], j1 = 0;
            double delta = INFINITY;
            for (size_t j = 1; j <= n; j++) {
                if (used[j]) continue;
                double cur = -S[(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
                if (cur < minv[j]) minv[j] = cur, way[j] = j0;
                if (minv[j] < delta) delta = minv[j], j1 = j;
            }
            if (j1 == 0 || !isfinite(delta)) { // cannot happen with finite scores; never loop on it
                graft__free(u), graft__free(v), graft__free(minv), graft__free(p), graft__free(way), graft__free(used);
                return graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "the assignment search found no column");
            }
            for (size_t j = 0; j <= n; j++) {
                if (used[j]) u[p[j]] += delta, v[j] -= delta;
                else minv[j] -= delta;
            }
            j0 = j1;
        } while (p[j0] != 0);
        do { // augment along the path back to the start
            size_t j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
        } while (j0);
    }
    for (size_t j = 1; j <= n; j++) perm[p[j] - 1] = j - 1;
    graft__free(u), graft__free(v), graft__free(minv), graft__free(p), graft__free(way), graft__free(used);
    return GRAFT_OK;
}
