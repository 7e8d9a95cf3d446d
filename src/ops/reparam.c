// Structural reparameterization by tensor names (methods-research B4, B5):
//
// bn — a convolution or linear weight W [Cout, …] (and bias b0) followed by BatchNorm (weight γ,
//      bias β, running_mean μ, running_var σ²): t = γ / √(σ² + ε), W' = W·t per output channel,
//      b' = β + (b0 − μ)·t. Pairs: BN module B (it has running_mean) with the conv module named by
//      replacing, in B's last name component, "bn" with "conv" (bn → conv, bn1 → conv1), or for a
//      numbered Sequential (…features.1) the previous number (…features.0); --pair
//      BN_SUFFIX=CONV_SUFFIX adds a rule. The pair must fit: a weight of ≥ 2 axes with B's channel
//      count as outputs (a PReLU before the BN is not a conv). "norm1"/"conv1" is not a rule: timm's
//      ResNetV2 and DenseNet put that BN *before* its conv (pre-activation), where no fold is exact.
//      The BN tensors go; the conv gains a bias.
// repvgg — a RepVGG block P (P.rbr_dense.{conv,bn}, P.rbr_1x1.{conv,bn}, optional P.rbr_identity BN):
//      each branch BN-fused, the 1×1 kernel zero-padded to 3×3 at the centre, the identity as a BN-fused
//      kernel with 1 at (i, i mod Cin/g, centre); summed into P.rbr_reparam.weight / .bias (RepVGG's
//      deploy names).
// mobileone — a MobileOne block P (Apple's ml-mobileone, also FastViT's): k×k branches
//      P.rbr_conv.N.{conv,bn} (N = 0, 1, …), an optional 1×1 P.rbr_scale.{conv,bn} and an optional
//      identity BN P.rbr_skip, into P.reparam_conv.weight / .bias; and FastViT's large-kernel convolution
//      P.lkb_origin.{conv,bn} plus an optional P.small_conv.{conv,bn}, into P.lkb_reparam. Smaller
//      kernels are zero-padded to the centre (every branch pads k//2, as the reference code does).
// weight-norm — w = g·v / ‖v‖ (PyTorch weight_norm: NAME_g / NAME_v, or
//      parametrizations.NAME.original0 / original1), the norm over every axis but `dim`, inferred from
//      g's shape (the axis where g matches v; g all ones-shaped: one norm over the whole tensor, dim=None).
// Everything in double (float64 tensors read and written as such), written in the tensors' dtype;
// a folded value that is not finite (a negative running_var, NaN inputs) is refused. Other tensors
// are copied.
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/reparam.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

// Names are built in 1100-byte buffers from tensor names checked to be ≤ 512 bytes (graft_reparam
// refuses longer ones first), so these snprintf calls cannot truncate.
#pragma GCC diagnostic ignored "-Wformat-truncation"
#define NAME_CAP 512

struct graft_reparam_params graft_reparam_default_params(void) { return (struct graft_reparam_params){.eps = 1e-5, .n_threads = 1}; }

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

// An output tensor: copied from src, or computed (data in f64, written as dt).
struct rt {
    char    *name;
    const struct graft_model_tensor *src;
    double  *data;
    enum graft_dtype dt;
    int      n_dims;
    uint64_t ne[GRAFT_MAX_DIMS];
    long     id;
};

struct rjob {
    const struct graft_model *m;
    const struct graft_reparam_params *p;
    struct rt *out;
    size_t n_out, cap;
    bool *drop; // input tensors consumed by a fold
    struct graft_writer *w;
};

static const struct graft_model_tensor *find(const struct graft_model *m, const char *a, const char *b) {
    char name[1100];
    snprintf(name, sizeof name, "%s%s", a, b);
    return graft_model_find(m, name, strlen(name));
}

static void drop_t(struct rjob *j, const struct graft_model_tensor *t) {
    for (size_t i = 0; i < graft_model_n_tensors(j->m); i++)
        if (graft_model_tensor(j->m, i) == t) j->drop[i] = true;
}

static double *load64(const struct graft_model *m, const struct graft_model_tensor *t) {
    uint64_t n = t->info->n_elem;
    double *d = graft__malloc((size_t)(n ? n : 1) * sizeof *d);
    if (!d) return NULL;
    if (t->info->dtype == GRAFT_DTYPE_F64) { // (little-endian hosts only, as everywhere in graft)
        memcpy(d, graft_model_data(m, t), (size_t)n * sizeof *d);
        return d;
    }
    float *f = graft__malloc((size_t)(n ? n : 1) * sizeof *f);
    if (!f) { graft__free(d); return NULL; }
    graft_row_to_f32(t->info->dtype, graft_model_data(m, t), f, (size_t)n);
    for (uint64_t i = 0; i < n; i++) d[i] = f[i];
    graft__free(f);
    return d;
}

static struct rt *add_out(struct rjob *j, const char *name, enum graft_dtype dt, int nd, const uint64_t *ne, double *data, struct graft_err *err) {
    if (data && !graft_dtype_is_float_target(dt)) { // computed values must be encodable
        graft__free(data);
        graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), name, strlen(name), "stored as %s: folding needs float16, bfloat16, float32 or float64",
                      graft_dtype_traits(dt) ? graft_dtype_traits(dt)->name : "?");
        return NULL;
    }
    if (j->n_out == j->cap) {
        size_t c = j->cap ? 2 * j->cap : 64;
        struct rt *o = graft__realloc(j->out, c * sizeof *o);
        if (!o) { graft__free(data); nomem(err); return NULL; }
        j->out = o, j->cap = c;
    }
    struct rt *x = &j->out[j->n_out++];
    memset(x, 0, sizeof *x);
    x->name = graft__strdup(name), x->data = data, x->dt = dt, x->n_dims = nd, x->id = -1;
    for (int d = 0; d < nd; d++) x->ne[d] = ne[d];
    if (!x->name) { nomem(err); return NULL; }
    return x;
}

// The BN of module prefix `bn` fused into kernel K [Cout, per] (bias b0 or NULL): K, b overwritten.
static int fuse_bn(const struct rjob *j, const char *bn, double *K, uint64_t cout, uint64_t per, double *b, struct graft_err *err) {
    static const char *const parts[4] = {".weight", ".bias", ".running_mean", ".running_var"};
    double *v[4] = {0};
    int rc = GRAFT_OK;
    for (int k = 0; k < 4 && !rc; k++) {
        const struct graft_model_tensor *t = find(j->m, bn, parts[k]);
        if (!t || t->info->n_elem != cout)
            rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), NULL, 0, "BatchNorm '%s' needs %s with %llu values", bn, parts[k], (unsigned long long)cout);
        else if (!(v[k] = load64(j->m, t))) rc = nomem(err);
    }
    for (uint64_t c = 0; !rc && c < cout; c++) {
        if (!(v[3][c] + j->p->eps > 0)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), NULL, 0, "BatchNorm '%s': running_var[%llu] + eps is %g, not positive: "
                               "a damaged checkpoint?", bn, (unsigned long long)c, v[3][c] + j->p->eps);
            break;
        }
        double t = v[0][c] / sqrt(v[3][c] + j->p->eps);
        for (uint64_t i = 0; i < per; i++) K[c * per + i] *= t;
        b[c] = v[1][c] + (b[c] - v[2][c]) * t;
    }
    for (int k = 0; k < 4; k++) graft__free(v[k]);
    return rc;
}

static void drop_bn(struct rjob *j, const char *bn) {
    static const char *const parts[5] = {".weight", ".bias", ".running_mean", ".running_var", ".num_batches_tracked"};
    for (int k = 0; k < 5; k++) {
        const struct graft_model_tensor *t = find(j->m, bn, parts[k]);
        if (t) drop_t(j, t);
    }
}

// The conv module a BN module follows, by the naming rules (see the top of the file), or NULL.
static bool conv_of(const struct rjob *j, const char *bn, char *conv, size_t cap) {
    const char *last = strrchr(bn, '.');
    size_t pre = last ? (size_t)(last - bn) + 1 : 0;
    const char *l = bn + pre;
    for (size_t k = 0; k < j->p->n_pair; k++) { // user rules first: BN_SUFFIX=CONV_SUFFIX
        const char *eq = strchr(j->p->pair[k], '=');
        if (!eq) continue;
        size_t bl = (size_t)(eq - j->p->pair[k]), n = strlen(bn);
        if (n >= bl && !memcmp(bn + n - bl, j->p->pair[k], bl)) {
            snprintf(conv, cap, "%.*s%s", (int)(n - bl), bn, eq + 1);
            if (find(j->m, conv, ".weight")) return true;
        }
    }
    char cand[2][1100];
    int nc = 0;
    const char *hit = strstr(l, "bn");
    if (hit) snprintf(cand[nc++], sizeof cand[0], "%.*s%.*sconv%s", (int)pre, bn, (int)(hit - l), l, hit + 2);
    char *end;
    long idx = strtol(l, &end, 10);
    if (*l && !*end && idx > 0) snprintf(cand[nc++], sizeof cand[0], "%.*s%ld", (int)pre, bn, idx - 1);
    for (int c = 0; c < nc; c++)
        if (find(j->m, cand[c], ".weight")) { snprintf(conv, cap, "%s", cand[c]); return true; }
    return false;
}

// Whether weight w can be the conv / linear layer before a BN of `ch` channels: ≥ 2 axes, ch outputs.
static bool fits_bn(const struct graft_model_tensor *w, uint64_t ch) {
    return w->info->n_dims >= 2 && w->info->ne[0] == ch && graft_dtype_is_float_target(w->info->dtype);
}

static int fold_bn(struct rjob *j, size_t *n_folds, struct graft_err *err) {
    size_t nt = graft_model_n_tensors(j->m);
    for (size_t i = 0; i < nt; i++) {
        const struct graft_tensor_info *t = graft_model_tensor(j->m, i)->info;
        if (t->name_len < 13 || strcmp(t->name + t->name_len - 13, ".running_mean")) continue;
        char bn[1100], conv[1100];
        snprintf(bn, sizeof bn, "%.*s", (int)(t->name_len - 13), t->name);
        if (!conv_of(j, bn, conv, sizeof conv)) continue; // a BN without a preceding conv stays
        const struct graft_model_tensor *w = find(j->m, conv, ".weight"), *b0 = find(j->m, conv, ".bias");
        if (!fits_bn(w, t->n_elem)) continue; // not a layer this BN normalises the outputs of: it stays
        uint64_t cout = w->info->ne[0], per = cout ? w->info->n_elem / cout : 0;
        if (b0 && b0->info->n_elem != cout)
            return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), b0->info->name, b0->info->name_len, "%llu values for %llu outputs",
                                 (unsigned long long)b0->info->n_elem, (unsigned long long)cout);
        double *K = load64(j->m, w), *b = b0 ? load64(j->m, b0) : graft__calloc((size_t)cout, sizeof *b);
        if (!K || !b) { graft__free(K), graft__free(b); return nomem(err); }
        int rc = fuse_bn(j, bn, K, cout, per, b, err);
        if (rc) { graft__free(K), graft__free(b); return rc; }
        char name[1100];
        snprintf(name, sizeof name, "%s.weight", conv);
        if (!add_out(j, name, w->info->dtype, w->info->n_dims, w->info->ne, K, err)) { graft__free(b); return err->code; }
        snprintf(name, sizeof name, "%s.bias", conv);
        uint64_t bne[1] = {cout};
        if (!add_out(j, name, w->info->dtype, 1, bne, b, err)) return err->code;
        drop_t(j, w);
        if (b0) drop_t(j, b0);
        drop_bn(j, bn);
        (*n_folds)++;
    }
    return GRAFT_OK;
}

// A conv's bias (NULL: none) into b, checked to have cout values.
static int conv_bias(const struct rjob *j, const struct graft_model_tensor *t, uint64_t cout, double *b, struct graft_err *err) {
    if (!t) return GRAFT_OK;
    if (t->info->n_elem != cout)
        return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), t->info->name, t->info->name_len, "%llu values for %llu outputs",
                             (unsigned long long)t->info->n_elem, (unsigned long long)cout);
    double *v = load64(j->m, t);
    if (!v) return nomem(err);
    memcpy(b, v, (size_t)cout * sizeof *b);
    graft__free(v);
    return GRAFT_OK;
}

static int fold_repvgg(struct rjob *j, size_t *n_folds, struct graft_err *err) {
    size_t nt = graft_model_n_tensors(j->m);
    for (size_t i = 0; i < nt; i++) {
        const struct graft_tensor_info *t = graft_model_tensor(j->m, i)->info;
        const char *suf = ".rbr_dense.conv.weight";
        size_t sl = strlen(suf);
        if (t->name_len < sl || strcmp(t->name + t->name_len - sl, suf)) continue;
        char P[1100], m1[1100], mb[1100];
        snprintf(P, sizeof P, "%.*s", (int)(t->name_len - sl), t->name);
        const struct graft_model_tensor *w3 = graft_model_tensor(j->m, i), *w1 = find(j->m, P, ".rbr_1x1.conv.weight");
        if (t->n_dims != 4 || t->ne[2] != 3 || t->ne[3] != 3)
            return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), t->name, t->name_len, "the RepVGG dense branch must be a 3×3 convolution");
        uint64_t cout = t->ne[0], cg = t->ne[1], per = cg * 9;
        if (w1 && (w1->info->n_dims != 4 || w1->info->ne[0] != cout || w1->info->ne[1] != cg || w1->info->ne[2] != 1 || w1->info->ne[3] != 1))
            return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), w1->info->name, w1->info->name_len, "the 1×1 branch must be [%llu, %llu, 1, 1]",
                                 (unsigned long long)cout, (unsigned long long)cg);
        double *K = load64(j->m, w3), *b = graft__calloc((size_t)cout, sizeof *b), *k1 = NULL, *b1 = graft__calloc((size_t)cout, sizeof *b1);
        double *kid = graft__calloc((size_t)(cout * per), sizeof *kid), *bid = graft__calloc((size_t)cout, sizeof *bid);
        int rc = !K || !b || !b1 || !kid || !bid ? nomem(err) : GRAFT_OK;
        // a branch conv's own bias (bias=True) enters before its BN: b' = β + (b0 − μ)·t
        const struct graft_model_tensor *cb3 = find(j->m, P, ".rbr_dense.conv.bias"), *cb1 = find(j->m, P, ".rbr_1x1.conv.bias");
        if (!rc) rc = conv_bias(j, cb3, cout, b, err);
        if (!rc && w1) rc = conv_bias(j, cb1, cout, b1, err);
        snprintf(mb, sizeof mb, "%s.rbr_dense.bn", P);
        if (!rc) rc = fuse_bn(j, mb, K, cout, per, b, err);
        if (!rc && w1) {
            if (!(k1 = load64(j->m, w1))) rc = nomem(err);
            snprintf(mb, sizeof mb, "%s.rbr_1x1.bn", P);
            if (!rc) rc = fuse_bn(j, mb, k1, cout, cg, b1, err);
            for (uint64_t c = 0; !rc && c < cout; c++) {
                b[c] += b1[c];
                for (uint64_t g = 0; g < cg; g++) K[c * per + g * 9 + 4] += k1[c * cg + g]; // centre of the 3×3
            }
        }
        snprintf(m1, sizeof m1, "%s.rbr_identity", P);
        if (!rc && find(j->m, m1, ".running_mean")) { // identity: 1 at (c, c mod Cin/g, centre), then its BN
            for (uint64_t c = 0; c < cout; c++) kid[c * per + (c % cg) * 9 + 4] = 1.0;
            rc = fuse_bn(j, m1, kid, cout, per, bid, err);
            for (uint64_t c = 0; !rc && c < cout; c++) {
                b[c] += bid[c];
                for (uint64_t e = 0; e < per; e++) K[c * per + e] += kid[c * per + e];
            }
            drop_bn(j, m1);
        }
        graft__free(k1), graft__free(b1), graft__free(kid), graft__free(bid);
        if (rc) { graft__free(K), graft__free(b); return rc; }
        char name[1100];
        snprintf(name, sizeof name, "%s.rbr_reparam.weight", P);
        if (!add_out(j, name, t->dtype, 4, t->ne, K, err)) { graft__free(b); return err->code; }
        snprintf(name, sizeof name, "%s.rbr_reparam.bias", P);
        uint64_t bne[1] = {cout};
        if (!add_out(j, name, t->dtype, 1, bne, b, err)) return err->code;
        drop_t(j, w3);
        if (w1) drop_t(j, w1);
        if (cb3) drop_t(j, cb3);
        if (cb1 && w1) drop_t(j, cb1);
        snprintf(mb, sizeof mb, "%s.rbr_dense.bn", P), drop_bn(j, mb);
        snprintf(mb, sizeof mb, "%s.rbr_1x1.bn", P), drop_bn(j, mb);
        (*n_folds)++;
    }
    return GRAFT_OK;
}

// Add conv + BN branch `br` (br.conv.weight [cout, cg, s, s], s odd ≤ k, and br.bn) into the k×k
// kernel K and bias b, centred. *found: whether the branch exists.
static int add_branch(struct rjob *j, const char *br, uint64_t cout, uint64_t cg, uint64_t k, double *K, double *b, bool *found,
                      struct graft_err *err) {
    const struct graft_model_tensor *w = find(j->m, br, ".conv.weight");
    *found = w != NULL;
    if (!w) return GRAFT_OK;
    const struct graft_tensor_info *t = w->info;
    uint64_t sz = t->n_dims == 4 ? t->ne[2] : 0;
    if (t->n_dims != 4 || t->ne[0] != cout || t->ne[1] != cg || t->ne[3] != sz || !(sz & 1) || sz > k)
        return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), t->name, t->name_len,
                             "a branch must be a square odd kernel [%llu, %llu, s, s] with s ≤ %llu", (unsigned long long)cout, (unsigned long long)cg,
                             (unsigned long long)k);
    const struct graft_model_tensor *cb = find(j->m, br, ".conv.bias");
    double *kb = load64(j->m, w), *bb = cb ? load64(j->m, cb) : graft__calloc((size_t)cout, sizeof *bb);
    char bn[1100];
    snprintf(bn, sizeof bn, "%s.bn", br);
    int rc = !kb || !bb ? nomem(err) : fuse_bn(j, bn, kb, cout, cg * sz * sz, bb, err);
    uint64_t off = (k - sz) / 2;
    for (uint64_t c = 0; !rc && c < cout; c++) {
        b[c] += bb[c];
        for (uint64_t g = 0; g < cg; g++)
            for (uint64_t u = 0; u < sz; u++)
                for (uint64_t v = 0; v < sz; v++) K[((c * cg + g) * k + u + off) * k + v + off] += kb[((c * cg + g) * sz + u) * sz + v];
    }
    graft__free(kb), graft__free(bb);
    if (!rc) {
        drop_t(j, w);
        if (cb) drop_t(j, cb);
        drop_bn(j, bn);
    }
    return rc;
}

static int fold_mobileone(struct rjob *j, size_t *n_folds, struct graft_err *err) {
    size_t nt = graft_model_n_tensors(j->m);
    for (size_t i = 0; i < nt; i++) {
        const struct graft_tensor_info *t = graft_model_tensor(j->m, i)->info;
        static const char *const first[2] = {".rbr_conv.0.conv.weight", ".lkb_origin.conv.weight"};
        int kind = -1;
        for (int f = 0; f < 2; f++) {
            size_t sl = strlen(first[f]);
            if (t->name_len >= sl && !strcmp(t->name + t->name_len - sl, first[f])) kind = f;
        }
        if (kind < 0) continue;
        char P[1100], br[1100];
        snprintf(P, sizeof P, "%.*s", (int)(t->name_len - strlen(first[kind])), t->name);
        if (t->n_dims != 4 || t->ne[2] != t->ne[3] || !(t->ne[2] & 1))
            return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), t->name, t->name_len, "must be a square odd convolution kernel");
        uint64_t cout = t->ne[0], cg = t->ne[1], k = t->ne[2], per = cg * k * k;
        double *K = graft__calloc((size_t)(cout * per), sizeof *K), *b = graft__calloc((size_t)cout, sizeof *b);
        int rc = !K || !b ? nomem(err) : GRAFT_OK;
        bool found = true;
        if (kind == 0) {
            for (int n = 0; !rc && found; n++) {
                snprintf(br, sizeof br, "%s.rbr_conv.%d", P, n);
                rc = add_branch(j, br, cout, cg, k, K, b, &found, err);
            }
            snprintf(br, sizeof br, "%s.rbr_scale", P);
            if (!rc) rc = add_branch(j, br, cout, cg, k, K, b, &found, err);
            snprintf(br, sizeof br, "%s.rbr_skip", P);
            if (!rc && find(j->m, br, ".running_mean")) { // identity: 1 at (c, c mod Cin/g, centre), then its BN
                double *kid = graft__calloc((size_t)(cout * per), sizeof *kid), *bid = graft__calloc((size_t)cout, sizeof *bid);
                if (!kid || !bid) rc = nomem(err);
                for (uint64_t c = 0; !rc && c < cout; c++) kid[c * per + (c % cg) * k * k + (k / 2) * k + k / 2] = 1.0;
                if (!rc) rc = fuse_bn(j, br, kid, cout, per, bid, err);
                for (uint64_t c = 0; !rc && c < cout; c++) {
                    b[c] += bid[c];
                    for (uint64_t e = 0; e < per; e++) K[c * per + e] += kid[c * per + e];
                }
                graft__free(kid), graft__free(bid);
                if (!rc) drop_bn(j, br);
            }
        } else {
            snprintf(br, sizeof br, "%s.lkb_origin", P);
            rc = add_branch(j, br, cout, cg, k, K, b, &found, err);
            snprintf(br, sizeof br, "%s.small_conv", P);
            if (!rc) rc = add_branch(j, br, cout, cg, k, K, b, &found, err);
        }
        if (rc) { graft__free(K), graft__free(b); return rc; }
        char name[1100];
        snprintf(name, sizeof name, "%s.%s.weight", P, kind ? "lkb_reparam" : "reparam_conv");
        if (!add_out(j, name, t->dtype, 4, t->ne, K, err)) { graft__free(b); return err->code; }
        snprintf(name, sizeof name, "%s.%s.bias", P, kind ? "lkb_reparam" : "reparam_conv");
        uint64_t bne[1] = {cout};
        if (!add_out(j, name, t->dtype, 1, bne, b, err)) return err->code;
        (*n_folds)++;
    }
    return GRAFT_OK;
}

// Weight normalisation: (g, v) pairs in either naming.
static int fold_wn(struct rjob *j, size_t *n_folds, struct graft_err *err) {
    size_t nt = graft_model_n_tensors(j->m);
    for (size_t i = 0; i < nt; i++) {
        const struct graft_model_tensor *vt = graft_model_tensor(j->m, i);
        const struct graft_tensor_info *t = vt->info;
        char base[1100], gname[1100], out[1100];
        const char *p = NULL;
        if (t->name_len > 2 && !strcmp(t->name + t->name_len - 2, "_v")) { // NAME_v / NAME_g → NAME
            snprintf(base, sizeof base, "%.*s", (int)(t->name_len - 2), t->name);
            snprintf(gname, sizeof gname, "%s_g", base), snprintf(out, sizeof out, "%s", base);
        } else if ((p = strstr(t->name, "parametrizations.")) && t->name_len > 10 && !strcmp(t->name + t->name_len - 10, ".original1")) {
            // PREFIX.parametrizations.NAME.original1 → PREFIX.NAME
            snprintf(gname, sizeof gname, "%.*s.original0", (int)(t->name_len - 10), t->name);
            snprintf(out, sizeof out, "%.*s%.*s", (int)(p - t->name), t->name, (int)(t->name + t->name_len - 10 - (p + 17)), p + 17);
        } else {
            continue;
        }
        const struct graft_model_tensor *gt = graft_model_find(j->m, gname, strlen(gname));
        if (!gt) continue;
        const struct graft_tensor_info *g = gt->info;
        // dim: the axis where g has v's size (the others 1); none → one norm over the whole tensor
        int dim = -1;
        bool ok = g->n_elem == 1 || g->n_dims == t->n_dims;
        for (int d = 0; ok && g->n_elem > 1 && d < t->n_dims; d++) {
            if (g->ne[d] == t->ne[d] && t->ne[d] > 1 && dim < 0) dim = d;
            else if (g->ne[d] != 1) ok = false;
        }
        if (!ok || (g->n_elem > 1 && dim < 0))
            return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(j->m), g->name, g->name_len, "shape does not match a weight_norm magnitude of '%.*s'",
                                 (int)t->name_len, t->name);
        double *v = load64(j->m, vt), *gv = load64(j->m, gt);
        uint64_t n = t->n_elem, outer = 1, len = dim < 0 ? 1 : t->ne[dim], inner = 1;
        for (int d = 0; dim >= 0 && d < dim; d++) outer *= t->ne[d];
        for (int d = dim + 1; dim >= 0 && d < t->n_dims; d++) inner *= t->ne[d];
        double *nrm = graft__calloc((size_t)len, sizeof *nrm);
        if (!v || !gv || !nrm) { graft__free(v), graft__free(gv), graft__free(nrm); return nomem(err); }
        for (uint64_t e = 0; e < n; e++) { // element e = (o, c, i): its slice along dim is c
            uint64_t c = dim < 0 ? 0 : (e / inner) % len;
            nrm[c] += v[e] * v[e];
        }
        for (uint64_t e = 0; e < n; e++) {
            uint64_t c = dim < 0 ? 0 : (e / inner) % len;
            double s = sqrt(nrm[c]);
            v[e] = s > 0 ? gv[c] * v[e] / s : 0.0; // PyTorch has no epsilon; a zero v gives 0 here, not NaN
        }
        (void)outer;
        graft__free(gv), graft__free(nrm);
        if (!add_out(j, out, t->dtype, t->n_dims, t->ne, v, err)) return err->code;
        drop_t(j, vt), drop_t(j, gt);
        (*n_folds)++;
    }
    return GRAFT_OK;
}

static int write_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct rjob *j = ctx;
    struct rt *x = &j->out[item];
    if (x->src) {
        uint64_t nb = x->src->info->n_bytes;
        return nb ? graft_writer_write(j->w, x->id, 0, graft_model_data(j->m, x->src), (size_t)nb, err) : GRAFT_OK;
    }
    uint64_t n = 1, nb;
    for (int d = 0; d < x->n_dims; d++) n *= x->ne[d];
    float *f = graft__malloc((size_t)(n ? n : 1) * sizeof *f);
    void *enc = graft__malloc((size_t)(n ? n : 1) * 8);
    if (!f || !enc) { graft__free(f), graft__free(enc); return nomem(err); }
    graft_dtype_nbytes(x->dt, n, &nb);
    if (x->dt == GRAFT_DTYPE_F64) memcpy(enc, x->data, (size_t)nb);
    else {
        for (uint64_t i = 0; i < n; i++) f[i] = (float)x->data[i];
        graft_row_from_f32(x->dt, f, enc, (size_t)n);
    }
    size_t first = 0;
    uint64_t bad = graft_count_nonfinite(x->dt, enc, (size_t)n, &first);
    int rc = bad ? graft_err_set(err, GRAFT_E_NONFINITE, graft_model_path(j->m), x->name, strlen(x->name),
                                 "the fold gives %llu NaN or infinite values (first at element %llu) in %s: a damaged checkpoint, or values "
                                 "beyond the dtype's range", (unsigned long long)bad, (unsigned long long)first, graft_dtype_traits(x->dt)->name)
         : nb ? graft_writer_write(j->w, x->id, 0, enc, (size_t)nb, err) : GRAFT_OK;
    graft__free(f), graft__free(enc);
    return rc;
}

int graft_reparam(const struct graft_model *m, const char *target, const struct graft_reparam_params *p, size_t *n_folds, struct graft_err *err) {
    if (p->fold == GRAFT_FOLD_MUP) return graft__fold_mup(m, target, p, n_folds, err); // streaming, with a new config.json
    if (!(p->eps > 0)) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--eps must be positive");
    struct rjob j = {.m = m, .p = p};
    size_t nt = graft_model_n_tensors(m), folds = 0;
    for (size_t i = 0; i < nt; i++)
        if (graft_model_tensor(m, i)->info->name_len > NAME_CAP)
            return graft_err_set(err, GRAFT_E_LIMIT, graft_model_path(m), NULL, 0, "a tensor name is longer than %d bytes", NAME_CAP);
    int rc = (j.drop = graft__calloc(nt ? nt : 1, sizeof *j.drop)) ? GRAFT_OK : nomem(err);
    if (!rc) rc = p->fold == GRAFT_FOLD_BN ? fold_bn(&j, &folds, err) : p->fold == GRAFT_FOLD_REPVGG ? fold_repvgg(&j, &folds, err)
                : p->fold == GRAFT_FOLD_MOBILEONE ? fold_mobileone(&j, &folds, err) : fold_wn(&j, &folds, err);
    if (!rc && !folds)
        rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "nothing to fold: no tensors match the %s patterns (see graft reparam --help)",
                           p->fold == GRAFT_FOLD_BN ? "BatchNorm" : p->fold == GRAFT_FOLD_REPVGG ? "RepVGG" : p->fold == GRAFT_FOLD_MOBILEONE ? "MobileOne / FastViT" : "weight_norm");
    size_t n_new = j.n_out;
    for (size_t i = 0; !rc && i < nt; i++) { // kept input tensors, in input order, then the folded ones
        if (j.drop[i]) continue;
        const struct graft_tensor_info *t = graft_model_tensor(m, i)->info;
        char *name = graft__strndup(t->name, t->name_len);
        struct rt *x = name ? add_out(&j, name, t->dtype, t->n_dims, t->ne, NULL, err) : NULL;
        graft__free(name);
        if (!x) { rc = err->code ? err->code : nomem(err); break; }
        x->src = graft_model_tensor(m, i);
    }
    struct graft_writer *w = NULL;
    if (!rc && !p->dry_run) {
        bool single = graft__ops_single_file(target);
        rc = graft__ops_writer_open(m, target, 0, p->writer_flags, &w, err);
        j.w = w;
        for (size_t k = 0; !rc && k < j.n_out; k++) { // kept tensors first, as they were ordered
            struct rt *x = &j.out[(k + n_new) % j.n_out];
            if ((x->id = graft_writer_add_tensor(w, x->name, strlen(x->name), x->dt, x->n_dims, x->ne, err)) < 0) rc = (int)x->id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, j.n_out, write_one, &j, NULL, NULL, err);
        if (!rc && !single) rc = graft_writer_copy_side_files(w, m, NULL, err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (n_folds) *n_folds = folds;
    graft_writer_free(w);
    for (size_t i = 0; i < j.n_out; i++) graft__free(j.out[i].name), graft__free(j.out[i].data);
    graft__free(j.out), graft__free(j.drop);
    return rc;
}
