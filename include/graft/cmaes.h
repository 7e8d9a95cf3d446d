// graft — CMA-ES (covariance matrix adaptation evolution strategy), the optimiser of `graft evolve`.
//
// The (μ/μ_w, λ)-CMA-ES of Hansen's tutorial ("The CMA Evolution Strategy: A Tutorial", 2016) with
// its default strategy parameters: λ = 4 + ⌊3 ln n⌋, μ = ⌊λ/2⌋, log-rank weights, cumulative step-size
// adaptation, rank-one and rank-μ covariance updates with the h_σ stall guard. Minimises. Samples
// come from graft's counter-based generator, so (seed, fitness values) determine every candidate —
// which is what lets `graft evolve --resume` replay a log.
#ifndef GRAFT_CMAES_H
#define GRAFT_CMAES_H

#include <stdint.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct graft_cmaes_params {
    int           dim;     // n ≥ 1
    int           lambda;  // population; 0 → 4 + ⌊3 ln n⌋
    double        sigma0;  // initial step size (> 0)
    const double *x0;      // initial mean, n values
    uint64_t      seed;
};

// λ = 4 + ⌊3 ln n⌋, the population graft_cmaes_new takes when p->lambda is 0.
int  graft_cmaes_default_lambda(int dim);
struct graft_cmaes;
int  graft_cmaes_new(const struct graft_cmaes_params *p, struct graft_cmaes **out, struct graft_err *err);
void graft_cmaes_free(struct graft_cmaes *c); // NULL-safe
int  graft_cmaes_lambda(const struct graft_cmaes *c);
int  graft_cmaes_generation(const struct graft_cmaes *c); // generations told so far
double graft_cmaes_sigma(const struct graft_cmaes *c);
const double *graft_cmaes_mean(const struct graft_cmaes *c);
// The current generation's λ candidates, row-major λ × n (the same until told).
const double *graft_cmaes_ask(struct graft_cmaes *c);
// Their fitness values (λ, lower is better; NaN counts as worst); updates mean, paths, C and σ.
int  graft_cmaes_tell(struct graft_cmaes *c, const double *fitness, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
