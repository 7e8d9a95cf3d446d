// Synthetic LLaMA-layout models. Tensor values are pure functions of (seed, tensor name, index).
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <jansson.h>
#include "graft/synth.h"
#include "graft/convert.h"
#include "../io/io-impl.h"
#include "chunks.h"

struct graft_synth_params graft_synth_default_params(void) {
    return (struct graft_synth_params){
        .arch = "llama", .n_layers = 2, .hidden = 64, .intermediate = 172, .n_heads = 4, .n_kv_heads = 2,
        .vocab = 256, .dtype = GRAFT_DTYPE_BF16, .seed = 1, .init_std = 0.02, .delta = 0.01f, .n_threads = 1,
    };
}

enum init_kind { INIT_NORMAL, INIT_NORM_WEIGHT };

struct spec {
    char          name[96];
    int           n_dims;
    uint64_t      ne[2];
    enum init_kind kind;
};

struct job {
    const struct graft_synth_params *p;
    struct graft_writer *w;
    struct spec         *specs;    // fresh mode
    size_t               n;
    struct graft__chunks c;
    float              **f32;      // per thread: chunk floats
    uint8_t            **out;      // per thread: chunk encoded
};

static void spec_add(struct spec *s, size_t *n, const char *name, uint64_t a, uint64_t b, enum init_kind k) {
    struct spec *x = &s[(*n)++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->n_dims = b ? 2 : 1, x->ne[0] = a, x->ne[1] = b, x->kind = k;
}

static size_t llama_specs(const struct graft_synth_params *p, struct spec *s) {
    size_t n = 0;
    uint64_t h = (uint64_t)p->hidden, hd = h / (uint64_t)p->n_heads, kv = hd * (uint64_t)p->n_kv_heads;
    char name[96];
    spec_add(s, &n, "model.embed_tokens.weight", (uint64_t)p->vocab, h, INIT_NORMAL);
    for (int l = 0; l < p->n_layers; l++) {
#define L(fmt, a, b, k) (snprintf(name, sizeof name, "model.layers.%d." fmt, l), spec_add(s, &n, name, a, b, k))
        L("input_layernorm.weight", h, 0, INIT_NORM_WEIGHT);
        L("self_attn.q_proj.weight", hd * (uint64_t)p->n_heads, h, INIT_NORMAL);
        L("self_attn.k_proj.weight", kv, h, INIT_NORMAL);
        L("self_attn.v_proj.weight", kv, h, INIT_NORMAL);
        L("self_attn.o_proj.weight", h, hd * (uint64_t)p->n_heads, INIT_NORMAL);
        L("post_attention_layernorm.weight", h, 0, INIT_NORM_WEIGHT);
        L("mlp.gate_proj.weight", (uint64_t)p->intermediate, h, INIT_NORMAL);
        L("mlp.up_proj.weight", (uint64_t)p->intermediate, h, INIT_NORMAL);
        L("mlp.down_proj.weight", h, (uint64_t)p->intermediate, INIT_NORMAL);
#undef L
    }
    spec_add(s, &n, "model.norm.weight", h, 0, INIT_NORM_WEIGHT);
    if (!p->tie_embeddings) spec_add(s, &n, "lm_head.weight", (uint64_t)p->vocab, h, INIT_NORMAL);
    return n;
}

static int synth_chunk(void *ctx, size_t item, int ith, struct graft_err *err) {
    struct job *j = ctx;
    uint64_t e0;
    size_t ti = graft__chunks_locate(&j->c, item, &e0);
    const struct graft_synth_params *p = j->p;
    float *f = j->f32[ith];
    enum graft_dtype out;
    uint64_t n_elem, ne;
    if (p->like) {
        const struct graft_model_tensor *mt = graft_model_tensor(p->like, ti);
        const struct graft_tensor_info *t = mt->info;
        out = graft_convert_out_dtype(t->dtype, p->dtype), n_elem = t->n_elem;
        ne = graft__chunks_len(&j->c, e0, n_elem);
        uint64_t in_off, in_len;
        graft_dtype_nbytes(t->dtype, e0, &in_off);
        graft_dtype_nbytes(t->dtype, ne, &in_len);
        const uint8_t *src = graft_model_data(p->like, mt) + in_off;
        if (out == t->dtype && !graft_dtype_traits(t->dtype)->is_float) // integers: carried unchanged
            return graft_writer_write(j->w, (long)ti, in_off, src, (size_t)in_len, err);
        graft_row_to_f32(t->dtype, src, f, (size_t)ne);
        // Heavy-tailed delta: Laplace(0, delta) — most weights move a little, a few move a lot.
        uint64_t key = graft_rng_key(p->seed, 1, t->name, t->name_len);
        for (uint64_t i = 0; i < ne; i++) {
            float u = graft_rng_uniform(key, e0 + i) * 2.0f - 1.0f;
            float a = fabsf(u);
            float lap = -logf(1.0f - a + 0x1.0p-25f);
            f[i] += p->delta * (u < 0 ? -lap : lap);
        }
    } else {
        const struct spec *s = &j->specs[ti];
        out = p->dtype, n_elem = s->n_dims == 2 ? s->ne[0] * s->ne[1] : s->ne[0];
        ne = graft__chunks_len(&j->c, e0, n_elem);
        uint64_t key = graft_rng_key(p->seed, 0, s->name, strlen(s->name));
        for (uint64_t i = 0; i < ne; i++) {
            float z = graft_rng_normalish(key, e0 + i);
            f[i] = s->kind == INIT_NORM_WEIGHT ? 1.0f + 0.1f * z : (float)p->init_std * z;
        }
    }
    uint64_t off, len;
    graft_dtype_nbytes(out, e0, &off);
    graft_dtype_nbytes(out, ne, &len);
    graft_row_from_f32(out, f, j->out[ith], (size_t)ne);
    graft_progress_add(p->progress, len);
    return graft_writer_write(j->w, (long)ti, off, j->out[ith], (size_t)len, err);
}

static char *llama_config(const struct graft_synth_params *p) {
    json_t *c = json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:s, s:b, s:s, s:i, s:i, s:f, s:b, s:b}",
        "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_size", p->hidden,
        "intermediate_size", p->intermediate, "num_attention_heads", p->n_heads, "num_key_value_heads", p->n_kv_heads,
        "num_hidden_layers", p->n_layers, "vocab_size", p->vocab, "max_position_embeddings", 2048,
        "rms_norm_eps", 1e-5, "rope_theta", 10000.0, "hidden_act", "silu", "tie_word_embeddings", p->tie_embeddings,
        "torch_dtype", graft_dtype_torch_name(p->dtype) ? graft_dtype_torch_name(p->dtype) : "float32",
        "bos_token_id", 1, "eos_token_id", 2, "initializer_range", p->init_std, "attention_bias", 0, "use_cache", 1);
    if (!c) return NULL;
    struct graft__buf b;
    graft__buf_init(&b, 1 << 20);
    graft__json_dump_pretty(&b, c);
    json_decref(c);
    if (b.failed) { graft__buf_free(&b); return NULL; }
    return b.data;
}

int graft_synth(const char *target, const struct graft_synth_params *p, struct graft_err *err) {
    if (!p->like) {
        if (strcmp(p->arch, "llama") && strcmp(p->arch, "mistral"))
            return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "unknown --arch '%s' (supported: llama, mistral)", p->arch);
        if (p->n_layers < 0 || p->hidden <= 0 || p->intermediate <= 0 || p->n_heads <= 0 || p->n_kv_heads <= 0 || p->vocab <= 0 ||
            p->hidden % p->n_heads || p->n_heads % p->n_kv_heads || p->n_layers > 100000)
            return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0,
                                 "invalid shape: need hidden divisible by heads and heads divisible by kv-heads, all positive");
    }
    if (!graft_dtype_is_float_target(p->dtype))
        return graft_err_set(err, GRAFT_E_USAGE, NULL, NULL, 0, "--dtype must be a float type (f32, f16, bf16, f8_e4m3, f8_e5m2)");
    int n_threads = p->n_threads > 0 ? p->n_threads : 1;
    struct job j = {.p = p};
    struct graft_writer *w = NULL;
    char *cfg = NULL;
    int rc;
    size_t n = p->like ? graft_model_n_tensors(p->like) : 2 + 9 * (size_t)p->n_layers + 2;
    if (!p->like && !(j.specs = graft__calloc(n, sizeof *j.specs)))
        return graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
    if (!p->like) n = llama_specs(p, j.specs);
    j.n = n;
    struct graft_writer_params wp = graft_writer_default_params();
    wp.max_shard_bytes = p->max_shard_bytes, wp.flags = p->writer_flags;
    const char *protect[1] = {p->like ? graft_model_dir(p->like) : NULL};
    wp.protect = protect, wp.n_protect = p->like ? 1 : 0;
    if ((rc = graft_writer_open(target, &wp, &w, err))) goto out;
    j.w = w;
    j.f32 = graft__calloc((size_t)n_threads, sizeof *j.f32);
    j.out = graft__calloc((size_t)n_threads, sizeof *j.out);
    if (graft__chunks_init(&j.c, n, 1u << 18) || !j.f32 || !j.out) { rc = graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory"); goto out; }
    for (int i = 0; i < n_threads; i++) {
        j.f32[i] = graft__malloc((size_t)j.c.chunk * 4);
        j.out[i] = graft__malloc((size_t)j.c.chunk * 8);
        if (!j.f32[i] || !j.out[i]) { rc = graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory"); goto out; }
    }
    for (size_t i = 0; i < n; i++) {
        long id;
        if (p->like) {
            const struct graft_tensor_info *t = graft_model_tensor(p->like, i)->info;
            id = graft_writer_add_tensor(w, t->name, t->name_len, graft_convert_out_dtype(t->dtype, p->dtype), t->n_dims, t->ne, err);
            graft__chunks_set(&j.c, i, t->n_elem);
        } else {
            const struct spec *s = &j.specs[i];
            id = graft_writer_add_tensor(w, s->name, strlen(s->name), p->dtype, s->n_dims, s->ne, err);
            graft__chunks_set(&j.c, i, s->n_dims == 2 ? s->ne[0] * s->ne[1] : s->ne[0]);
        }
        if (id < 0) { rc = (int)id; goto out; }
    }
    if ((rc = graft_writer_layout(w, err))) goto out;
    if (p->progress) p->progress->total = graft_writer_total_bytes(w);
    rc = graft_pool_run(n_threads, graft__chunks_items(&j.c), synth_chunk, &j,
                        p->progress && p->progress->enabled ? graft_progress_draw : NULL, p->progress, err);
    if (rc) goto out;
    if (p->like) {
        rc = graft_writer_copy_side_files(w, p->like, graft_dtype_torch_name(p->dtype), err);
    } else {
        static const char gen[] = "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n";
        cfg = llama_config(p);
        rc = cfg ? graft_writer_add_file(w, "config.json", cfg, strlen(cfg), err)
                 : graft_err_set(err, GRAFT_E_NOMEM, target, NULL, 0, "out of memory");
        if (!rc) rc = graft_writer_add_file(w, "generation_config.json", gen, sizeof gen - 1, err);
    }
    if (!rc) rc = graft_writer_commit(w, err);
out:
    if (j.f32) for (int i = 0; i < n_threads; i++) graft__free(j.f32[i]);
    if (j.out) for (int i = 0; i < n_threads; i++) graft__free(j.out[i]);
    graft__free(j.f32);
    graft__free(j.out);
    graft__free(j.specs);
    graft__free(cfg);
    graft__chunks_free(&j.c);
    graft_writer_free(w);
    return rc;
}
