// Permutation alignment (graft align; include/graft/align.h has the method). Each coordinate-descent
// round: one work item per layer computes its scores (f32 GEMMs, B's residual axis under the current
// residual permutation) and solves its assignments in double (core/assign.c); then the residual score
// matrix is accumulated by row blocks (one work item each, every tensor in a fixed order, so its sums do
// not depend on the threads) and assigned. Last, one work item per output tensor writes B's bytes with
// rows and columns gathered by the permutations (no arithmetic: the output is B exactly, reordered).
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "graft/align.h"
#include "graft/convert.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

struct graft_align_params graft_align_default_params(void) {
    return (struct graft_align_params){.mlp = true, .heads = true, .residual = true, .max_iters = 20, .n_threads = 1};
}

void graft_align_report_free(struct graft_align_report *r) {
    if (!r) return;
    graft__free(r->layers);
    memset(r, 0, sizeof *r);
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

struct lay {
    size_t *mlp;   // I: output neuron i is B's mlp[i] (NULL: not permuted)
    size_t *head;  // nh: output head h is B's head[h]
    size_t *group; // nkv
    struct graft_align_layer r;
};

struct ajob {
    const struct graft_model *a, *b;
    const struct graft_align_params *p;
    int L, nh, nkv, hd;
    uint64_t H, I;
    struct lay *lays;
    size_t *res;      // H: output residual channel i is B's res[i] (identity without --residual)
    float *C;         // H × H residual scores
    size_t n_blk;     // row blocks of C (work items)
    // write pass
    struct graft_writer *w;
    long *ids;
};

static const struct graft_model_tensor *tensor(const struct graft_model *m, int l, const char *part) {
    char n[160];
    int len = snprintf(n, sizeof n, "model.layers.%d.%s", l, part);
    return graft_model_find(m, n, (size_t)len);
}

// B's loaded rows × cols matrix with its columns (cols: true) or rows gathered by perm: out[·][i] = in[·][perm[i]].
static void gather(float *x, uint64_t rows, uint64_t cols, const size_t *perm, bool by_cols, float *tmp) {
    if (!perm) return;
    if (by_cols) {
        for (uint64_t r = 0; r < rows; r++) {
            for (uint64_t c = 0; c < cols; c++) tmp[c] = x[r * cols + perm[c]];
            memcpy(x + r * cols, tmp, (size_t)cols * sizeof *x);
        }
    } else {
        for (uint64_t r = 0; r < rows; r++) memcpy(tmp + r * cols, x + perm[r] * cols, (size_t)cols * sizeof *x);
        memcpy(x, tmp, (size_t)(rows * cols) * sizeof *x);
    }
}

// Block version for heads: blocks of `blk` rows (or columns) move together.
static void gather_blocks(float *x, uint64_t rows, uint64_t cols, const size_t *perm, uint64_t blk, bool by_cols, float *tmp) {
    if (!perm) return;
    if (by_cols) {
        for (uint64_t r = 0; r < rows; r++) {
            for (uint64_t b = 0; b < cols / blk; b++) memcpy(tmp + b * blk, x + r * cols + perm[b] * blk, (size_t)blk * sizeof *x);
            memcpy(x + r * cols, tmp, (size_t)cols * sizeof *x);
        }
    } else {
        for (uint64_t b = 0; b < rows / blk; b++) memcpy(tmp + b * blk * cols, x + perm[b] * blk * cols, (size_t)(blk * cols) * sizeof *x);
        memcpy(x, tmp, (size_t)(rows * cols) * sizeof *x);
    }
}

static double dot(const float *x, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)y[i];
    return s;
}

static double cosine(double ab, double aa, double bb) { return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0; }

// MLP neurons of layer l: scores S = gate_A·gate_Bᵀ + up_A·up_Bᵀ + down_Aᵀ·down_B (f32 GEMMs), assignment in double.
static int align_mlp(struct ajob *j, int l, struct lay *y, struct graft_err *err) {
    const uint64_t H = j->H, I = j->I;
    const struct graft_model_tensor *ta[3], *tb[3];
    static const char *const parts[3] = {"mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"};
    for (int k = 0; k < 3; k++) ta[k] = tensor(j->a, l, parts[k]), tb[k] = tensor(j->b, l, parts[k]);
    float *A[3] = {0}, *B[3] = {0}, *S = graft__calloc((size_t)(I * I), sizeof *S);
    double *Sd = graft__malloc((size_t)(I * I) * sizeof *Sd);
    y->mlp = graft__malloc((size_t)I * sizeof *y->mlp);
    int rc = S && Sd && y->mlp ? GRAFT_OK : nomem(err);
    float *tmp = graft__malloc((size_t)(I * H) * sizeof *tmp);
    if (!rc && !tmp) rc = nomem(err);
    for (int k = 0; !rc && k < 3; k++)
        if (!(A[k] = graft__ops_load_f32(j->a, ta[k])) || !(B[k] = graft__ops_load_f32(j->b, tb[k]))) rc = nomem(err);
    if (!rc) { // B's residual axis as the current residual permutation has it
        gather(B[0], I, H, j->res, true, tmp), gather(B[1], I, H, j->res, true, tmp), gather(B[2], H, I, j->res, false, tmp);
        graft__sgemm_acc(false, true, (size_t)I, (size_t)I, (size_t)H, 1.0f, A[0], (size_t)H, B[0], (size_t)H, S, (size_t)I);
        graft__sgemm_acc(false, true, (size_t)I, (size_t)I, (size_t)H, 1.0f, A[1], (size_t)H, B[1], (size_t)H, S, (size_t)I);
        graft__sgemm_acc(true, false, (size_t)I, (size_t)I, (size_t)H, 1.0f, A[2], (size_t)I, B[2], (size_t)I, S, (size_t)I);
        for (uint64_t i = 0; i < I * I; i++) Sd[i] = (double)S[i];
        rc = graft__assign_max(Sd, (size_t)I, y->mlp, err);
    }
    if (!rc) {
        double before = 0, after = 0, aa = 0, bb = 0;
        for (uint64_t i = 0; i < I; i++) before += Sd[i * I + i], after += Sd[i * I + y->mlp[i]], y->r.mlp_moved += y->mlp[i] != i;
        for (int k = 0; k < 3; k++) aa += dot(A[k], A[k], (size_t)(I * H)), bb += dot(B[k], B[k], (size_t)(I * H));
        y->r.mlp_before = cosine(before, aa, bb), y->r.mlp_after = cosine(after, aa, bb);
    }
    for (int k = 0; k < 3; k++) graft__free(A[k]), graft__free(B[k]);
    graft__free(S), graft__free(Sd), graft__free(tmp);
    return rc;
}

// Attention of layer l: query heads scored by their q rows and o_proj columns, k/v groups by their k and
// v rows plus the best assignment of their query heads; groups assigned, then heads within each group.
static int align_heads(struct ajob *j, int l, struct lay *y, struct graft_err *err) {
    const uint64_t H = j->H, hd = (uint64_t)j->hd, nh = (uint64_t)j->nh, nkv = (uint64_t)j->nkv, g = nh / nkv;
    static const char *const parts[4] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight"};
    float *A[4] = {0}, *B[4] = {0};
    double *Q = graft__malloc((size_t)(nh * nh) * sizeof *Q), *K = graft__malloc((size_t)(nkv * nkv) * sizeof *K);
    double *G = graft__malloc((size_t)(nkv * nkv) * sizeof *G), *sub = graft__malloc((size_t)(g * g) * sizeof *sub);
    size_t *sp = graft__malloc((size_t)g * sizeof *sp);
    y->head = graft__malloc((size_t)nh * sizeof *y->head), y->group = graft__malloc((size_t)nkv * sizeof *y->group);
    int rc = Q && K && G && sub && sp && y->head && y->group ? GRAFT_OK : nomem(err);
    for (int k = 0; !rc && k < 4; k++)
        if (!(A[k] = graft__ops_load_f32(j->a, tensor(j->a, l, parts[k]))) || !(B[k] = graft__ops_load_f32(j->b, tensor(j->b, l, parts[k])))) rc = nomem(err);
    float *tmp = rc ? NULL : graft__malloc((size_t)(nh * hd * H) * sizeof *tmp);
    if (!rc && !tmp) rc = nomem(err);
    if (rc) goto out;
    for (int k = 0; k < 3; k++) gather(B[k], (k ? nkv : nh) * hd, H, j->res, true, tmp);
    gather(B[3], H, nh * hd, j->res, false, tmp);
    graft__free(tmp);
    for (uint64_t ha = 0; ha < nh; ha++)
        for (uint64_t hb = 0; hb < nh; hb++) {
            double s = dot(A[0] + ha * hd * H, B[0] + hb * hd * H, (size_t)(hd * H));
            for (uint64_t r = 0; r < H; r++) s += dot(A[3] + r * nh * hd + ha * hd, B[3] + r * nh * hd + hb * hd, (size_t)hd);
            Q[ha * nh + hb] = s;
        }
    for (uint64_t a = 0; a < nkv; a++)
        for (uint64_t b = 0; b < nkv; b++)
            K[a * nkv + b] = dot(A[1] + a * hd * H, B[1] + b * hd * H, (size_t)(hd * H)) + dot(A[2] + a * hd * H, B[2] + b * hd * H, (size_t)(hd * H));
    for (uint64_t a = 0; !rc && a < nkv; a++)
        for (uint64_t b = 0; !rc && b < nkv; b++) { // the best query-head assignment between groups a and b
            for (uint64_t i = 0; i < g; i++)
                for (uint64_t k = 0; k < g; k++) sub[i * g + k] = Q[(a * g + i) * nh + b * g + k];
            if ((rc = graft__assign_max(sub, (size_t)g, sp, err))) break;
            double best = 0;
            for (uint64_t i = 0; i < g; i++) best += sub[i * g + sp[i]];
            G[a * nkv + b] = K[a * nkv + b] + best;
        }
    if (!rc) rc = graft__assign_max(G, (size_t)nkv, y->group, err);
    for (uint64_t a = 0; !rc && a < nkv; a++) {
        uint64_t b = y->group[a];
        for (uint64_t i = 0; i < g; i++)
            for (uint64_t k = 0; k < g; k++) sub[i * g + k] = Q[(a * g + i) * nh + b * g + k];
        if ((rc = graft__assign_max(sub, (size_t)g, sp, err))) break;
        for (uint64_t i = 0; i < g; i++) y->head[a * g + i] = b * g + sp[i];
    }
    if (!rc) {
        double before = 0, after = 0, aa = 0, bb = 0;
        for (uint64_t h = 0; h < nh; h++) before += Q[h * nh + h], after += Q[h * nh + y->head[h]], y->r.heads_moved += y->head[h] != h;
        for (uint64_t a = 0; a < nkv; a++) before += K[a * nkv + a], after += K[a * nkv + y->group[a]];
        for (int k = 0; k < 4; k++) {
            size_t n = (size_t)(k == 1 || k == 2 ? nkv * hd * H : nh * hd * H);
            aa += dot(A[k], A[k], n), bb += dot(B[k], B[k], n);
        }
        y->r.attn_before = cosine(before, aa, bb), y->r.attn_after = cosine(after, aa, bb);
    }
out:
    for (int k = 0; k < 4; k++) graft__free(A[k]), graft__free(B[k]);
    graft__free(Q), graft__free(K), graft__free(G), graft__free(sub), graft__free(sp);
    return rc;
}

static int align_layer(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct ajob *j = ctx;
    struct lay *y = &j->lays[item];
    int rc = j->p->mlp ? align_mlp(j, (int)item, y, err) : GRAFT_OK;
    if (!rc && j->p->heads) rc = align_heads(j, (int)item, y, err);
    if (rc) {
        char n[48];
        int len = snprintf(n, sizeof n, "model.layers.%d", (int)item);
        graft__err_prefix(err, NULL, n, (size_t)len);
    }
    return rc;
}

// The role of a tensor (by name): which permutation its rows and its columns follow.
enum { P_NONE, P_RES, P_MLP, P_HEAD, P_GROUP };
struct how { int rows, cols; bool known; int nd; }; // nd: the dimensions the role implies (0: any)

static struct how role(const struct ajob *j, const char *name, size_t len, int *layer) {
    struct how h = {P_NONE, P_NONE, false, 0};
    *layer = -1;
    char n[200];
    if (len >= sizeof n) return h;
    memcpy(n, name, len), n[len] = 0;
    if (!strcmp(n, "model.embed_tokens.weight") || !strcmp(n, "lm_head.weight")) return (struct how){P_NONE, P_RES, true, 2};
    if (!strcmp(n, "model.norm.weight")) return (struct how){P_RES, P_NONE, true, 1};
    int l, off = 0;
    if (sscanf(n, "model.layers.%d.%n", &l, &off) != 1 || off <= 0 || l < 0 || l >= j->L) return h;
    *layer = l;
    const char *pt = n + off;
    static const struct { const char *part; int rows, cols; } roles[] = {
        {"input_layernorm.weight", P_RES, P_NONE}, {"post_attention_layernorm.weight", P_RES, P_NONE},
        {"pre_feedforward_layernorm.weight", P_RES, P_NONE}, {"post_feedforward_layernorm.weight", P_RES, P_NONE},
        {"self_attn.q_proj.weight", P_HEAD, P_RES}, {"self_attn.q_proj.bias", P_HEAD, P_NONE},
        {"self_attn.k_proj.weight", P_GROUP, P_RES}, {"self_attn.k_proj.bias", P_GROUP, P_NONE},
        {"self_attn.v_proj.weight", P_GROUP, P_RES}, {"self_attn.v_proj.bias", P_GROUP, P_NONE},
        {"self_attn.o_proj.weight", P_RES, P_HEAD}, {"self_attn.o_proj.bias", P_RES, P_NONE},
        {"self_attn.q_norm.weight", P_NONE, P_NONE}, {"self_attn.k_norm.weight", P_NONE, P_NONE},
        {"mlp.gate_proj.weight", P_MLP, P_RES}, {"mlp.gate_proj.bias", P_MLP, P_NONE},
        {"mlp.up_proj.weight", P_MLP, P_RES}, {"mlp.up_proj.bias", P_MLP, P_NONE},
        {"mlp.down_proj.weight", P_RES, P_MLP}, {"mlp.down_proj.bias", P_RES, P_NONE}};
    for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++)
        if (!strcmp(pt, roles[k].part)) {
            bool vec = strstr(roles[k].part, "norm") || strstr(roles[k].part, ".bias");
            return (struct how){roles[k].rows, roles[k].cols, true, vec ? 1 : 2};
        }
    size_t pl = strlen(pt);
    if (pl >= 19 && !strcmp(pt + pl - 19, "rotary_emb.inv_freq")) return (struct how){P_NONE, P_NONE, true, 0}; // a buffer: no channels
    return h;
}

// The permutation (and its block size) of a role in layer l, or NULL when that axis does not move.
static const size_t *perm_of(const struct ajob *j, int what, int l, uint64_t *blk) {
    *blk = what == P_HEAD || what == P_GROUP ? (uint64_t)j->hd : 1;
    switch (what) {
    case P_RES: return j->res;
    case P_MLP: return l >= 0 ? j->lays[l].mlp : NULL;
    case P_HEAD: return l >= 0 ? j->lays[l].head : NULL;
    case P_GROUP: return l >= 0 ? j->lays[l].group : NULL;
    default: return NULL;
    }
}

static int write_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct ajob *j = ctx;
    const struct graft_model_tensor *t = graft_model_tensor(j->b, item);
    const struct graft_tensor_info *ti = t->info;
    int l;
    struct how h = role(j, ti->name, ti->name_len, &l);
    uint64_t rb_, cb_;
    const size_t *rp = perm_of(j, h.rows, l, &rb_), *cp = perm_of(j, h.cols, l, &cb_);
    if (!rp && !cp) return graft__ops_copy_tensor(j->w, j->ids[item], j->b, t, NULL, err);
    const uint8_t *src = graft_model_data(j->b, t);
    uint8_t *dst = graft__malloc((size_t)ti->n_bytes + 1);
    if (!dst) return nomem(err);
    uint64_t es = (uint64_t)graft_dtype_traits(ti->dtype)->bits / 8, rows = ti->n_dims ? ti->ne[0] : 1, cols = ti->n_dims == 2 ? ti->ne[1] : 1;
    uint64_t rb = cols * es; // bytes per row
    for (uint64_t r = 0; r < rows; r++) { // output row r is B's row rp(r); within it, column block c is B's block cp(c)
        uint64_t sr = rp ? rp[r / rb_] * rb_ + r % rb_ : r;
        if (!cp) { memcpy(dst + r * rb, src + sr * rb, (size_t)rb); continue; }
        for (uint64_t c = 0; c < cols / cb_; c++) memcpy(dst + r * rb + c * cb_ * es, src + sr * rb + cp[c] * cb_ * es, (size_t)(cb_ * es));
    }
    int rc = graft_writer_write(j->w, j->ids[item], 0, dst, (size_t)ti->n_bytes, err);
    graft__free(dst);
    return rc;
}

// The residual scores C[i][j] = Σ ⟨A's channel i, B's channel j⟩ over every tensor with a residual axis,
// B's other axis under the layers' current permutations. Tensors are taken one at a time, in B's order
// (each loaded once); the work items split C by rows, so every element is summed by one thread in a
// fixed order and the result does not depend on the threads.
struct rtask { struct ajob *j; const float *A, *B; uint64_t rows, cols; int kind; }; // kind 0: a vector, 1: reads the stream, 2: writes it

static int res_rows(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith, (void)err;
    const struct rtask *t = ctx;
    const struct ajob *j = t->j;
    const uint64_t H = j->H, i0 = item * H / j->n_blk, i1 = (item + 1) * H / j->n_blk, nr = i1 - i0;
    float *Cb = j->C + i0 * H;
    if (t->kind == 0)
        for (uint64_t r = 0; r < nr; r++)
            for (uint64_t c = 0; c < H; c++) Cb[r * H + c] += t->A[i0 + r] * t->B[c];
    else if (t->kind == 1) // rows × H: C += Aᵀ·B
        graft__sgemm_acc(true, false, (size_t)nr, (size_t)H, (size_t)t->rows, 1.0f, t->A + i0, (size_t)H, t->B, (size_t)H, Cb, (size_t)H);
    else // H × cols: C += A·Bᵀ
        graft__sgemm_acc(false, true, (size_t)nr, (size_t)H, (size_t)t->cols, 1.0f, t->A + i0 * t->cols, (size_t)t->cols, t->B, (size_t)t->cols, Cb, (size_t)H);
    return GRAFT_OK;
}

static int res_scores(struct ajob *j, int nth, struct graft_err *err) {
    memset(j->C, 0, (size_t)(j->H * j->H) * sizeof *j->C);
    int rc = GRAFT_OK;
    for (size_t i = 0; !rc && i < graft_model_n_tensors(j->b); i++) {
        const struct graft_model_tensor *tb = graft_model_tensor(j->b, i), *ta = graft_model_find(j->a, tb->info->name, tb->info->name_len);
        int l;
        struct how h = role(j, tb->info->name, tb->info->name_len, &l);
        if (h.rows != P_RES && h.cols != P_RES) continue;
        uint64_t rows = tb->info->n_dims ? tb->info->ne[0] : 1, cols = tb->info->n_dims == 2 ? tb->info->ne[1] : 1, blk = 1;
        float *A = graft__ops_load_f32(j->a, ta), *B = graft__ops_load_f32(j->b, tb), *tmp = graft__malloc((size_t)(rows * cols) * sizeof *tmp + 4);
        struct rtask t = {j, A, B, rows, cols, tb->info->n_dims == 1 ? 0 : h.cols == P_RES ? 1 : 2};
        const size_t *pp = t.kind == 1 ? perm_of(j, h.rows, l, &blk) : t.kind == 2 ? perm_of(j, h.cols, l, &blk) : NULL;
        if (!A || !B || !tmp) rc = nomem(err);
        else if (t.kind) gather_blocks(B, rows, cols, pp, blk, t.kind == 2, tmp);
        if (!rc) rc = graft_pool_run(nth, j->n_blk, res_rows, &t, NULL, NULL, err);
        graft__free(A), graft__free(B), graft__free(tmp);
    }
    return rc;
}

static uint64_t axis_len(const struct ajob *j, int what) {
    return what == P_RES ? j->H : what == P_MLP ? j->I : what == P_HEAD ? (uint64_t)(j->nh * j->hd) : what == P_GROUP ? (uint64_t)(j->nkv * j->hd) : 0;
}

// Every tensor of B with a role must have the shape its role implies (each permuted axis exactly as
// long as that permutation) and whole-byte elements; A must have the same tensor wherever the residual
// scores read it. Unknown tensors are refused when the residual stream moves (they might carry it).
static int check_roles(const struct ajob *j, struct graft_err *err) {
    for (size_t i = 0; i < graft_model_n_tensors(j->b); i++) {
        const struct graft_tensor_info *t = graft_model_tensor(j->b, i)->info;
        int l;
        struct how h = role(j, t->name, t->name_len, &l);
        const struct graft_dtype_traits *dt = graft_dtype_traits(t->dtype);
        if (!h.known) {
            if (j->p->residual)
                return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(j->b), t->name, t->name_len, "graft align does not know whether this tensor "
                                                                                                      "reads or writes the residual stream: --no-residual aligns the layers only");
            continue;
        }
        if (h.rows == P_NONE && h.cols == P_NONE) continue;
        bool shape = t->n_dims == h.nd && (h.rows == P_NONE || t->ne[0] == axis_len(j, h.rows)) && (h.cols == P_NONE || (t->n_dims == 2 && t->ne[1] == axis_len(j, h.cols)));
        if (!shape)
            return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(j->b), t->name, t->name_len, "a %d-D tensor of %llu rows does not have the shape its "
                                                                                                  "place implies (hidden %llu, intermediate %llu, heads %d × %d, kv heads %d)",
                                 t->n_dims, (unsigned long long)(t->n_dims ? t->ne[0] : 0), (unsigned long long)j->H, (unsigned long long)j->I, j->nh, j->hd, j->nkv);
        if (!dt || dt->bits % 8 || !dt->to_f32 || !dt->is_float)
            return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(j->b), t->name, t->name_len, "stored as %s: only unquantized floating tensors are permuted",
                                 dt ? dt->name : "?");
        if (h.rows == P_RES || h.cols == P_RES) {
            const struct graft_model_tensor *ta = graft_model_find(j->a, t->name, t->name_len);
            const struct graft_dtype_traits *da = ta ? graft_dtype_traits(ta->info->dtype) : NULL;
            bool same = ta && ta->info->n_dims == t->n_dims && da && da->to_f32 && da->is_float;
            for (int d = 0; same && d < t->n_dims; d++) same = ta->info->ne[d] == t->ne[d];
            if (j->p->residual && !same)
                return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(j->a), t->name, t->name_len, "A lacks this tensor of B, or its shape or dtype differs");
        }
    }
    return GRAFT_OK;
}

// The shapes both models must have for layer l.
static int check_layer(const struct ajob *j, int l, struct graft_err *err) {
    struct { const char *part; uint64_t r, c; bool need; } want[] = {
        {"mlp.gate_proj.weight", j->I, j->H, j->p->mlp}, {"mlp.up_proj.weight", j->I, j->H, j->p->mlp}, {"mlp.down_proj.weight", j->H, j->I, j->p->mlp},
        {"self_attn.q_proj.weight", (uint64_t)(j->nh * j->hd), j->H, j->p->heads}, {"self_attn.k_proj.weight", (uint64_t)(j->nkv * j->hd), j->H, j->p->heads},
        {"self_attn.v_proj.weight", (uint64_t)(j->nkv * j->hd), j->H, j->p->heads}, {"self_attn.o_proj.weight", j->H, (uint64_t)(j->nh * j->hd), j->p->heads}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        if (!want[k].need) continue;
        for (int m = 0; m < 2; m++) {
            const struct graft_model *md = m ? j->b : j->a;
            const struct graft_model_tensor *t = tensor(md, l, want[k].part);
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, want[k].part);
            if (!t) return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(md), name, strlen(name), "missing: graft align needs separate q/k/v/o and gate/up/down "
                                                                                                      "projections (Llama, Mistral, Qwen2/3, Gemma 2/3 layouts)");
            const struct graft_tensor_info *ti = t->info;
            const struct graft_dtype_traits *dt = graft_dtype_traits(ti->dtype);
            if (ti->n_dims != 2 || ti->ne[0] != want[k].r || ti->ne[1] != want[k].c)
                return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(md), name, strlen(name), "shape [%llu, %llu] where [%llu, %llu] is needed: %s",
                                     (unsigned long long)ti->ne[0], (unsigned long long)(ti->n_dims > 1 ? ti->ne[1] : 0), (unsigned long long)want[k].r,
                                     (unsigned long long)want[k].c, m ? "B does not have A's shapes" : "the config and the tensors disagree");
            if (!dt || !dt->is_float || !dt->to_f32 || dt->bits % 8)
                return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(md), name, strlen(name), "stored as %s: only unquantized floating weights are permuted",
                                     dt ? dt->name : "?");
        }
    }
    return GRAFT_OK;
}

int graft_align(const struct graft_model *a, const struct graft_model *b, const char *target, const struct graft_align_params *p,
                struct graft_align_report *rep, struct graft_err *err) {
    if (!p->mlp && !p->heads) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "nothing to align: both the MLP and the heads are off");
    if (p->residual && p->max_iters < 2)
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--max-iters must be at least 2 with the residual permutation (a layer pass, the residual, "
                                                              "the layers again)");
    const char *ca = graft_model_config_json(a), *cb = graft_model_config_json(b);
    if (!ca || !cb) return graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(ca ? b : a), NULL, 0, "graft align needs model folders with config.json");
    graft__blas_single_thread();
    json_t *ja = json_loads(ca, 0, NULL), *jb = json_loads(cb, 0, NULL);
    struct ajob j = {.a = a, .b = b, .p = p};
    struct graft_writer *w = NULL;
    int rc = ja && jb ? GRAFT_OK : graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(ja ? b : a), NULL, 0, "config.json cannot be parsed");
    const char *arch = rc ? NULL : json_string_value(json_array_get(json_object_get(ja, "architectures"), 0)),
               *archb = rc ? NULL : json_string_value(json_array_get(json_object_get(jb, "architectures"), 0));
    static const char *const ok_arch[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"};
    bool known = false;
    for (size_t k = 0; arch && k < sizeof ok_arch / sizeof ok_arch[0]; k++) known |= !strcmp(arch, ok_arch[k]);
    if (!rc && !known)
        rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(a), NULL, 0, "architecture %s: graft align permutes Llama, Mistral, Qwen2/3, Gemma 2 and Gemma 3 "
                                                                          "text decoders (separate projections; Phi-3's fused ones, MoE experts and "
                                                                          "vision-language models are not)", arch ? arch : "(none)");
    if (!rc && (!archb || strcmp(arch, archb)))
        rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(b), NULL, 0, "architecture %s, A's is %s: align models of one architecture",
                           archb ? archb : "(none)", arch);
    if (!rc) {
        j.L = (int)graft__json_int(ja, "num_hidden_layers", -1), j.nh = (int)graft__json_int(ja, "num_attention_heads", -1);
        j.nkv = (int)graft__json_int(ja, "num_key_value_heads", j.nh), j.H = (uint64_t)graft__json_int(ja, "hidden_size", -1);
        j.I = (uint64_t)graft__json_int(ja, "intermediate_size", -1);
        const struct graft_model_tensor *q = tensor(a, 0, "self_attn.q_proj.weight");
        j.hd = q && j.nh > 0 && q->info->n_dims == 2 && q->info->ne[0] % (uint64_t)j.nh == 0 ? (int)(q->info->ne[0] / (uint64_t)j.nh) : -1;
        if (j.L < 1 || j.L > 4096 || j.nh < 1 || j.nh > 4096 || j.nkv < 1 || j.nh % j.nkv || j.hd < 1 || (int64_t)j.H < 1 || j.H > (1u << 20) ||
            (int64_t)j.I < 1 || j.I > (1u << 20))
            rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(a), NULL, 0, "config.json: layers, heads, hidden_size or intermediate_size missing or "
                                                                                  "inconsistent with the q_proj weights");
        if (!rc && (graft__json_int(jb, "num_hidden_layers", -1) != j.L || graft__json_int(jb, "num_attention_heads", -1) != j.nh ||
                    graft__json_int(jb, "num_key_value_heads", graft__json_int(jb, "num_attention_heads", -1)) != j.nkv ||
                    graft__json_int(jb, "hidden_size", -1) != (long)j.H || graft__json_int(jb, "intermediate_size", -1) != (long)j.I))
            rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(b), NULL, 0, "layers, heads, hidden or intermediate sizes differ from A's");
    }
    for (int l = 0; !rc && l < j.L; l++) rc = check_layer(&j, l, err);
    if (!rc) rc = check_roles(&j, err);
    if (!rc && !(j.lays = graft__calloc((size_t)j.L, sizeof *j.lays))) rc = nomem(err);
    int nth = p->n_threads > 0 ? p->n_threads : 1, it = 0;
    size_t *next = NULL;
    double *Cd = NULL, *before = rc ? NULL : graft__calloc(2 * (size_t)j.L, sizeof *before);
    if (!rc && !before) rc = nomem(err);
    if (!rc && p->residual) {
        j.res = graft__malloc((size_t)j.H * sizeof *j.res), next = graft__malloc((size_t)j.H * sizeof *next);
        j.C = graft__malloc((size_t)(j.H * j.H) * sizeof *j.C), Cd = graft__malloc((size_t)(j.H * j.H) * sizeof *Cd);
        if (!j.res || !next || !j.C || !Cd) rc = nomem(err);
        for (uint64_t i = 0; !rc && i < j.H; i++) j.res[i] = i;
        j.n_blk = (size_t)nth < j.H ? (size_t)nth : j.H;
    }
    while (!rc) { // coordinate descent: the layers given the residual permutation, then the residual given the layers
        it++;
        for (int l = 0; l < j.L; l++) {
            graft__free(j.lays[l].mlp), graft__free(j.lays[l].head), graft__free(j.lays[l].group);
            memset(&j.lays[l], 0, sizeof j.lays[l]);
        }
        if ((rc = graft_pool_run(nth, (size_t)j.L, align_layer, &j, NULL, NULL, err))) break;
        if (it == 1) // "before": the scores of B as it is (the first round's residual permutation is the identity)
            for (int l = 0; l < j.L; l++) before[2 * l] = j.lays[l].r.mlp_before, before[2 * l + 1] = j.lays[l].r.attn_before;
        if (!p->residual || it >= p->max_iters) break;
        if ((rc = res_scores(&j, nth, err))) break;
        for (uint64_t i = 0; i < j.H * j.H; i++) Cd[i] = (double)j.C[i];
        if ((rc = graft__assign_max(Cd, (size_t)j.H, next, err))) break;
        if (!memcmp(next, j.res, (size_t)j.H * sizeof *next)) break;
        memcpy(j.res, next, (size_t)j.H * sizeof *next);
    }
    graft__free(next), graft__free(Cd), graft__free(j.C);
    for (int l = 0; !rc && l < j.L; l++) j.lays[l].r.mlp_before = before[2 * l], j.lays[l].r.attn_before = before[2 * l + 1];
    graft__free(before);
    if (!rc && rep && !(rep->layers = graft__calloc((size_t)j.L, sizeof *rep->layers))) rc = nomem(err); // now: nothing may fail once OUT exists
    if (!rc && !p->dry_run) {
        size_t nt = graft_model_n_tensors(b);
        rc = graft__ops_writer_open(b, target, p->max_shard_bytes, p->writer_flags, &w, err);
        j.w = w;
        if (!rc && !(j.ids = graft__calloc(nt + 1, sizeof *j.ids))) rc = nomem(err);
        for (size_t i = 0; !rc && i < nt; i++) {
            const struct graft_tensor_info *t = graft_model_tensor(b, i)->info;
            if ((j.ids[i] = graft_writer_add_tensor(w, t->name, t->name_len, t->dtype, t->n_dims, t->ne, err)) < 0) rc = (int)j.ids[i];
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, nt, write_one, &j, NULL, NULL, err);
        if (!rc && !graft__ops_single_file(target)) rc = graft_writer_copy_side_files(w, b, NULL, err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (!rc && rep) {
        for (int l = 0; l < j.L; l++) rep->layers[l] = j.lays[l].r;
        rep->n_layers = j.L, rep->iterations = it, rep->residual_moved = 0;
        for (uint64_t i = 0; j.res && i < j.H; i++) rep->residual_moved += j.res[i] != i;
    }
    if (rc && rep) graft_align_report_free(rep);
    graft_writer_free(w);
    for (int l = 0; j.lays && l < j.L; l++) graft__free(j.lays[l].mlp), graft__free(j.lays[l].head), graft__free(j.lays[l].group);
    graft__free(j.lays), graft__free(j.ids), graft__free(j.res);
    json_decref(ja), json_decref(jb);
    return rc;
}
