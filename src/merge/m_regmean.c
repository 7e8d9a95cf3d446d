// regmean — RegMean, dataless knowledge fusion by merging weights (Jin et al., ICLR 2023;
// methods-research.md A5). Each model i comes with Gram matrices G_i = X_iᵀX_i / N_i of the inputs of
// its linear layers (`parameters: {gram: PATH}`: a safetensors file with one [in × in] tensor per
// linear weight name, as `graft eval --collect gram` writes; docs/merge.md); graft's files hold
// Σ x xᵀ and their token count (metadata graft_tokens), which is divided out. Per linear weight
// W_i [out × in]:
//   G̃_i = w_i·(a·G_i + (1 − a)·diag(G_i))          (a = reduce_non_diagonal: off-diagonals × a)
//   W*ᵀ = (Σ_i G̃_i)⁻¹ · Σ_i G̃_i·W_iᵀ              (an LU solve in double, not an explicit inverse)
// Tensors without Gram matrices (embeddings, norms, biases): the weighted mean Σ w_i θ_i / Σ w_i.
#include <lapacke.h>
#include <math.h>
#include <string.h>
#include "lowrank.h"

static const struct graft_mparam params[] = {{"weight", true, false, 1.0}, {"reduce_non_diagonal", false, false, 0.1}};

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    double a = GP(mt, "reduce_non_diagonal");
    if (!(a >= 0 && a <= 1)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "reduce_non_diagonal must be in [0, 1], got %g", a);
    for (int i = 0; i < mt->n_in; i++)
        if (!(PM(mt, i, "weight") > 0)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "regmean weights must be positive, got %g", PM(mt, i, "weight"));
    return GRAFT_OK;
}

static int combine(struct graft_mt *mt, int pass, const double *partials, void *const *accs, int n_accs, struct graft_err *err) {
    (void)pass, (void)partials, (void)accs, (void)n_accs;
    struct graft_gather *s = mt->state;
    size_t out = (size_t)mt->dim0, in = (size_t)mt->row_len;
    double a = GP(mt, "reduce_non_diagonal");
    double *A = graft__malloc(in * in * sizeof *A), *Bm = graft__malloc(in * out * sizeof *Bm), scale[GRAFT_MAX_INPUTS];
    lapack_int *piv = graft__malloc(in * sizeof *piv);
    int ins[GRAFT_MAX_INPUTS];
    for (int i = 0; i < mt->n_in; i++) ins[i] = i, scale[i] = PM(mt, i, "weight") * mt->stat_scale[i];
    int rc = A && Bm && piv ? graft__gram_system(mt, ins, scale, mt->n_in, a, A, Bm, err)
                            : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for %zu×%zu Gram matrices", in, in);
    for (size_t k = 0; !rc && k < in * in; k++)
        if (!isfinite(A[k])) rc = graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "non-finite values in the Gram matrices");
    if (!rc) {
        lapack_int info = LAPACKE_dgesv(LAPACK_ROW_MAJOR, (lapack_int)in, (lapack_int)out, A, (lapack_int)in, piv, Bm, (lapack_int)out);
        if (info > 0) rc = graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "the summed Gram matrix is singular (input %d never active?): RegMean needs a positive diagonal", (int)info);
        else if (info < 0) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "dgesv failed (%d)", (int)info);
    }
    if (!rc && !(s->res = graft__malloc(out * in * sizeof(float)))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    for (size_t o = 0; !rc && o < out; o++)
        for (size_t q = 0; q < in; q++) s->res[o * in + q] = (float)Bm[q * out + o];
    graft__free(A), graft__free(Bm), graft__free(piv);
    graft__free(s->w), s->w = NULL;
    return rc;
}

static void apply(const struct graft_mt *mt, const struct graft_chunk *c, float *out) {
    const struct graft_gather *s = mt->state;
    if (s->mat) { memcpy(out, s->res + c->e0, (size_t)c->n * sizeof(float)); return; }
    double sw = 0;
    for (int i = 0; i < mt->n_in; i++) sw += PM(mt, i, "weight");
    for (uint64_t e = 0; e < c->n; e++) {
        float acc = 0;
        for (int i = 0; i < mt->n_in; i++) acc += (float)PM(mt, i, "weight") * c->in[i][e];
        out[e] = acc / (float)sw;
    }
}

const struct graft_method graft_method_regmean = {
    .name = "regmean", .pretty = "RegMean", .base = GRAFT_BASE_IGNORED, .min_models = 2, .max_models = -1, .params = params, .n_params = 2,
    .stats = "gram", .stats_kind = GRAFT_STATS_GRAM, .init = graft__gather_init, .n_passes = graft__gather_passes, .partial_len = graft__lr_partial_len, .stat = graft__gather_stat,
    .combine = combine, .apply = apply, .validate = validate, .free_state = graft__gather_free,
};
