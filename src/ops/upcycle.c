// Sparse upcycling, streaming. Plan: every tensor of the dense model is copied, except each layer's
// mlp.{gate,up,down}_proj, which become block_sparse_moe.experts.{0..E−1}.{w1,w3,w2} (Mixtral's names:
// w1 = gate_proj, w3 = up_proj, w2 = down_proj), each expert written straight from the dense tensor's
// mapping, plus block_sparse_moe.gate.weight [E, hidden], the router. config.json becomes Mixtral's
// (num_local_experts, num_experts_per_tok). Mixtral renormalises the top-k router probabilities, so
// with identical experts the MoE output is the dense MLP's whatever the router (up to the rounding of
// the renormalised weights' sum): the upcycled model starts out computing what the dense one did. The random router draws N(0, σ²) from graft's counter-based generator keyed by
// (seed, tensor name), so it is reproducible and thread-independent.
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "graft/convert.h"
#include "graft/upcycle.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"
#include "ops-impl.h"

struct graft_upcycle_params graft_upcycle_default_params(void) {
    return (struct graft_upcycle_params){.experts = 8, .top_k = 2, .n_threads = 1};
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

struct ut {
    const struct graft_model_tensor *src; // copied from (NULL: a router)
    char    *name;
    enum graft_dtype dt;
    int      n_dims;
    uint64_t ne[2];
    long     id;
};

struct ujob {
    const struct graft_model *m;
    const struct graft_upcycle_params *p;
    struct ut *ts;
    size_t n;
    double std;
    struct graft_writer *w;
};

static int write_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct ujob *j = ctx;
    struct ut *x = &j->ts[item];
    if (x->src) return graft__ops_copy_tensor(j->w, x->id, j->m, x->src, j->p->progress, err);
    uint64_t n = x->ne[0] * x->ne[1], nb;
    float *v = graft__calloc((size_t)n, sizeof *v);
    void *enc = graft__malloc((size_t)n * 8 + 8);
    if (!v || !enc) { graft__free(v), graft__free(enc); return nomem(err); }
    if (!j->p->router_zero) {
        uint64_t key = graft_rng_key(j->p->seed, 0, x->name, strlen(x->name));
        for (uint64_t i = 0; i < n; i++) v[i] = (float)graft__rng_normal(key, i, j->std);
    }
    graft_dtype_nbytes(x->dt, n, &nb);
    int rc = graft__ops_encode("upcycle's router", x->name, strlen(x->name), x->dt, v, enc, (size_t)n, j->m, NULL, j->p->writer_flags, err);
    if (!rc) rc = graft_writer_write(j->w, x->id, 0, enc, (size_t)nb, err);
    graft__free(v), graft__free(enc);
    return rc;
}

// "model.layers.N.mlp.<proj>.weight": the layer prefix length (up to ".mlp.") and which projection.
static int mlp_part(const char *name, size_t *pre) {
    const char *m = strstr(name, ".mlp.");
    if (!m || !strstr(name, "layers.")) return -1;
    static const char *const parts[] = {"gate_proj.weight", "up_proj.weight", "down_proj.weight"};
    for (int k = 0; k < 3; k++)
        if (!strcmp(m + 5, parts[k])) { *pre = (size_t)(m - name); return k; }
    return -1;
}

int graft_upcycle(const struct graft_model *m, const char *target, const struct graft_upcycle_params *p, int *n_layers, size_t *n_tensors,
                  struct graft_err *err) {
    if (p->experts < 2 || p->experts > 1024) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--experts must be from 2 to 1024");
    if (p->top_k < 1 || p->top_k > p->experts) return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--top-k must be from 1 to --experts");
    const char *cfg = graft_model_config_json(m);
    json_t *root = cfg ? json_loads(cfg, 0, NULL) : NULL;
    if (!root) return graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "needs the model's config.json (a Llama or Mistral folder)");
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    int rc = GRAFT_OK;
    if (!mt || (strcmp(mt, "llama") && strcmp(mt, "mistral")))
        rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(m), NULL, 0, // does not apply: exit 4
                           "model_type '%s': upcycling writes Mixtral's layout, which holds Llama and Mistral models (not attention biases or other MLPs)",
                           mt ? mt : "?");
    else if (json_is_true(json_object_get(root, "attention_bias")) || json_is_true(json_object_get(root, "mlp_bias")))
        rc = graft_err_set(err, GRAFT_E_CONFIG, graft_model_path(m), NULL, 0, "attention or MLP biases: Mixtral's layout has none");
    struct ujob j = {.m = m, .p = p};
    double ir = json_number_value(json_object_get(root, "initializer_range"));
    j.std = p->router_std > 0 ? p->router_std : ir > 0 ? ir : 0.02;
    size_t nt = graft_model_n_tensors(m), cap = nt * (size_t)p->experts + nt + 1;
    int layers = 0;
    if (!rc && !(j.ts = graft__calloc(cap, sizeof *j.ts))) rc = nomem(err);
    // each layer's three projections, found first
    for (size_t i = 0; !rc && i < nt; i++) {
        const struct graft_model_tensor *t = graft_model_tensor(m, i);
        const char *name = t->info->name;
        size_t pre;
        int part = mlp_part(name, &pre);
        if (part < 0) { // copied as it is
            struct ut *x = &j.ts[j.n++];
            *x = (struct ut){.src = t, .name = graft__strndup(name, t->info->name_len), .id = -1};
            if (!x->name) rc = nomem(err);
            continue;
        }
        char nb[1024];
        if (part != 0) { // emitted with the gate projection, which must be there (else it would vanish)
            snprintf(nb, sizeof nb, "%.*s.mlp.gate_proj.weight", (int)pre, name);
            if (!graft_model_find(m, nb, strlen(nb))) {
                rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), name, t->info->name_len, "a gated MLP needs gate_proj, up_proj and down_proj (2-D)");
                break;
            }
            continue;
        }
        const struct graft_model_tensor *proj[3] = {t, NULL, NULL};
        for (int k = 1; k < 3; k++) {
            snprintf(nb, sizeof nb, "%.*s.mlp.%s_proj.weight", (int)pre, name, k == 1 ? "up" : "down");
            proj[k] = graft_model_find(m, nb, strlen(nb));
        }
        if (!proj[1] || !proj[2] || t->info->n_dims != 2) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), name, t->info->name_len, "a gated MLP needs gate_proj, up_proj and down_proj (2-D)");
            break;
        }
        uint64_t hidden = t->info->ne[1];
        struct ut *r = &j.ts[j.n++];
        *r = (struct ut){.name = graft__asprintf("%.*s.block_sparse_moe.gate.weight", (int)pre, name), .dt = t->info->dtype, .n_dims = 2,
                         .ne = {(uint64_t)p->experts, hidden}, .id = -1};
        if (!r->name) { rc = nomem(err); break; }
        static const char *const wn[3] = {"w1", "w3", "w2"};
        for (int e = 0; e < p->experts && !rc; e++)
            for (int k = 0; k < 3 && !rc; k++) {
                struct ut *x = &j.ts[j.n++];
                *x = (struct ut){.src = proj[k], .name = graft__asprintf("%.*s.block_sparse_moe.experts.%d.%s.weight", (int)pre, name, e, wn[k]), .id = -1};
                if (!x->name) rc = nomem(err);
            }
        layers++;
    }
    if (!rc && !layers) rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "no layers.N.mlp.gate_proj / up_proj / down_proj to upcycle");
    long L = json_is_integer(json_object_get(root, "num_hidden_layers")) ? (long)json_integer_value(json_object_get(root, "num_hidden_layers")) : -1;
    if (!rc && layers != L) // every layer becomes a MoE layer in Mixtral's config: a layer without its MLP would be missing
        rc = graft_err_set(err, GRAFT_E_FORMAT, graft_model_path(m), NULL, 0, "%d layers have a gated MLP, but num_hidden_layers is %ld", layers, L);
    struct graft_writer *w = NULL;
    if (!rc && !p->dry_run) {
        rc = graft__ops_writer_open(m, target, p->max_shard_bytes, p->writer_flags, &w, err);
        j.w = w;
        for (size_t i = 0; !rc && i < j.n; i++) {
            struct ut *x = &j.ts[i];
            const struct graft_tensor_info *t = x->src ? x->src->info : NULL;
            x->id = t ? graft_writer_add_tensor(w, x->name, strlen(x->name), t->dtype, t->n_dims, t->ne, err)
                      : graft_writer_add_tensor(w, x->name, strlen(x->name), x->dt, x->n_dims, x->ne, err);
            if (x->id < 0) rc = (int)x->id;
        }
        if (!rc) rc = graft_writer_layout(w, err);
        if (!rc) rc = graft_pool_run(p->n_threads > 0 ? p->n_threads : 1, j.n, write_one, &j, p->progress && p->progress->enabled ? graft_progress_draw : NULL,
                                     p->progress, err);
        if (!rc) { // config.json: Mixtral's
            json_object_set_new(root, "output_router_logits", json_false());
            json_object_set_new(root, "router_aux_loss_coef", json_real(0.02));
            rc = graft__ops_add_mixtral_config(w, root, p->experts, p->top_k, err);
        }
        if (!rc) rc = graft_writer_copy_tokenizer(w, m, err);
        if (!rc) rc = graft_writer_commit(w, err);
    }
    if (n_layers) *n_layers = layers;
    if (n_tensors) *n_tensors = j.n;
    graft_writer_free(w);
    for (size_t i = 0; j.ts && i < j.n; i++) graft__free(j.ts[i].name);
    graft__free(j.ts);
    json_decref(root);
    return rc;
}
