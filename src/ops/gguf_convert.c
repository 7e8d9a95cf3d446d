// Hugging Face Llama / Mistral / Mixtral / Qwen2 / Qwen3 / Phi-3 / Gemma / Gemma 2 / Gemma 3 folder → one GGUF file
// for llama.cpp (shared/formats.md §4.7), as its convert_hf_to_gguf.py writes it: llama.cpp's tensor
// names per architecture, the Q/K row permutation its converter applies for Llama-type rotary layouts
// (not for the NEOX-rotation architectures), Mixtral's experts stacked into one 3-D tensor per matrix
// kind, Gemma's norms stored as 1 + w (and its tied lm_head dropped), Phi-3's LongRoPE factors as
// tensors, its metadata keys, and the tokenizer as tokenizer.ggml.* arrays. 1-D tensors and Mixtral's
// router stay F32 as the converter keeps them; matrices take the requested type (a quantized type falls
// back to F16 for rows that are not a multiple of its 32-value block, as gguf-py does). Tensors are
// converted a block of rows at a time.
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/gguf.h"
#include "graft/tokenizer.h"
#include "graft/util.h"
#include "graft/model.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "../io/io-impl.h"

struct gt {
    const struct graft_model_tensor *src;   // the tensor, or expert 0's
    const struct graft_model_tensor **exp;  // Mixtral: the n_exp experts stacked into this tensor (NULL otherwise)
    uint32_t n_exp;
    char     name[96];
    uint32_t type;
    int      permute_heads; // > 0: permute rows in groups of this many heads (q: n_head, k: n_head_kv)
    bool     plus_one;      // Gemma norms: llama.cpp stores 1 + w
    long     id;
};

struct extra { const char *name; float *v; size_t n; long id; }; // generated F32 vectors (rope factors)

struct gjob {
    const struct graft_model *m;
    struct graft_gguf_writer *w;
    struct gt *t;
    size_t n;
    struct extra x[2];
    size_t n_x;
    bool allow; // --allow-nonfinite
};

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

static int write_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct gjob *j = ctx;
    if (item >= j->n) { // a generated vector
        struct extra *e = &j->x[item - j->n];
        return graft_gguf_w_write(j->w, e->id, 0, e->v, e->n * sizeof(float), err);
    }
    struct gt *x = &j->t[item];
    const struct graft_tensor_info *t = x->src->info;
    // a permuted q/k bias (1-D, F32) moves its values as rows of one, as llama.cpp's convert permutes it
    bool vec_rows = t->n_dims != 2 && x->permute_heads;
    uint64_t rows = t->n_dims == 2 ? t->ne[0] : vec_rows ? t->n_elem : 1, cols = t->n_dims == 2 ? t->ne[1] : vec_rows ? 1 : t->n_elem;
    uint64_t hd = x->permute_heads ? rows / (uint64_t)x->permute_heads : 1, block = x->permute_heads ? hd : 64;
    if (block > rows) block = rows ? rows : 1;
    size_t es = (size_t)graft_dtype_traits(t->dtype)->bits / 8;
    uint64_t row_bytes = cols / graft_ggml_block_size(x->type) * graft_ggml_type_size(x->type);
    float *f = graft__malloc((size_t)(block * cols) * sizeof *f);
    uint8_t *enc = graft__malloc((size_t)(block * row_bytes) + 1);
    int rc = f && enc ? GRAFT_OK : nomem(err);
    uint64_t bad = 0, held = 0, first = UINT64_MAX; // NaN / ±Inf written; values (or blocks' values) whose source held some
    for (uint32_t e = 0; e < (x->exp ? x->n_exp : 1) && !rc; e++) {
        const struct graft_model_tensor *st = x->exp ? x->exp[e] : x->src;
        const uint8_t *src = graft_model_data(j->m, st);
        uint64_t base = (uint64_t)e * rows; // this expert's first row in the stacked tensor
        for (uint64_t r0 = 0; !rc && r0 < rows; r0 += block) {
            uint64_t nr = rows - r0 < block ? rows - r0 : block;
            for (uint64_t r = 0; r < nr; r++) {
                uint64_t sr = x->permute_heads ? graft_gguf_permuted_row(r0 + r, hd) : r0 + r;
                graft_row_to_f32(st->info->dtype, src + sr * cols * es, f + r * cols, (size_t)cols);
            }
            if (x->plus_one)
                for (uint64_t i = 0; i < nr * cols; i++) f[i] += 1.0f;
            graft_ggml_from_f32(x->type, f, enc, nr * cols);
            uint64_t b = graft_ggml_count_nonfinite(x->type, enc, nr * cols);
            if (b) { // rare: where, and whether the source held them (per value, or per block of a quantized type)
                uint64_t bs = graft_ggml_block_size(x->type), ts = graft_ggml_type_size(x->type);
                for (uint64_t k = 0; k < nr * cols / bs; k++) {
                    uint64_t bk = graft_ggml_count_nonfinite(x->type, enc + k * ts, bs);
                    if (!bk) continue;
                    if (first == UINT64_MAX) first = (base + r0) * cols + k * bs;
                    bad += bk;
                    held += graft_count_nonfinite(GRAFT_DTYPE_F32, f + k * bs, (size_t)bs, NULL) ? bk : 0;
                }
            }
            rc = graft_gguf_w_write(j->w, x->id, (base + r0) * row_bytes, enc, (size_t)(nr * row_bytes), err);
        }
    }
    // made: finite source values that overflow f16 (as values, or as a block's scale)
    if (!rc && bad)
        rc = graft__nonfinite_rule("the conversion to GGUF", x->src->info->name, x->src->info->name_len,
                                   x->type == GRAFT_GGML_BF16 ? GRAFT_DTYPE_BF16 : x->type == GRAFT_GGML_F32 ? GRAFT_DTYPE_F32 : GRAFT_DTYPE_F16, bad, held, first, held,
                                   j->allow, err);
    graft__free(f), graft__free(enc);
    return rc;
}


// tokenizer.ggml.* from tokenizer.json (+ tokenizer_config.json): gpt2 (byte-level BPE) or llama
// (SentencePiece-style BPE); vocabulary padded to the embedding rows with [PADn] unused tokens.
static int write_tokenizer(struct graft_gguf_writer *w, const struct graft_model *m, json_t *cfg, uint64_t n_rows, struct graft_err *err) {
    char *p = graft__asprintf("%s/tokenizer.json", graft_model_dir(m));
    json_t *tj = NULL, *tc = NULL;
    int rc = p ? graft__load_json_file(p, GRAFT_TOKENIZER_MAX_BYTES, &tj, err) : nomem(err);
    if (rc == GRAFT_E_NOTFOUND) {
        graft_err_clear(err);
        rc = graft_err_set(err, GRAFT_E_NOTFOUND, p, NULL, 0, "a GGUF file carries its tokenizer: the model folder needs tokenizer.json");
    }
    char *pc = graft__asprintf("%s/tokenizer_config.json", graft_model_dir(m));
    struct graft_err e2 = {0};
    if (pc) graft__load_json_file(pc, 16u << 20, &tc, &e2);
    graft__free(pc);
    char **tok = NULL;
    int32_t *type = NULL;
    float *score = NULL;
    const char **mer = NULL;
    char **mer_own = NULL;
    size_t n_mer = 0;
    if (rc) goto out;
    json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab)) { rc = graft_err_set(err, GRAFT_E_FORMAT, p, NULL, 0, "no BPE vocabulary (model.vocab)"); goto out; }
    const char *mt = json_string_value(json_object_get(model, "type"));
    if (mt && strcmp(mt, "BPE")) { rc = graft_err_set(err, GRAFT_E_FORMAT, p, NULL, 0, "model type %s: graft converts BPE tokenizers", mt); goto out; }
    // llama.cpp's pre-tokenizer, from the Split regex (the converter names it by hashing token
    // outputs; a byte-level regex it would not know is refused rather than guessed as gpt-2)
    char *dump = json_dumps(json_object_get(tj, "pre_tokenizer"), JSON_COMPACT);
    char *all = json_dumps(tj, JSON_COMPACT);
    bool bytelevel = all && strstr(all, "\"type\":\"ByteLevel\""), split = dump && strstr(dump, "\"type\":\"Split\"");
    free(all);
    const char *pre = "default";
    static const char cased[] = "[\\\\p{Lu}\\\\p{Lt}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]*[\\\\p{Ll}\\\\p{Lm}\\\\p{Lo}\\\\p{M}]+";
    if (dump && strstr(dump, cased)) pre = strstr(dump, "(?i:'s|'t|'re|'ve|'m|'ll|'d)?") ? "gpt-4o" : "tekken";
    else if (dump && strstr(dump, "\\\\p{N}{1,3}") && strstr(dump, "(?i:'s|'t|'re|'ve|'m|'ll|'d)|"))
        pre = json_is_true(json_object_get(model, "ignore_merges")) ? "llama-bpe" : "smaug-bpe"; // (llama-bpe: merges ignored for whole words)
    else if (dump && strstr(dump, "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}|")) pre = "qwen2";
    else if (bytelevel && split) {
        free(dump);
        rc = graft_err_set(err, GRAFT_E_CONFIG, p, NULL, 0, "its pre-tokenizer's Split regex is none llama.cpp knows (Llama 3, Qwen2, tekken, "
                           "GPT-4o, GPT-2): the GGUF file would tokenize differently");
        goto out;
    } else if (bytelevel) pre = "gpt-2";
    free(dump);
    size_t n = (size_t)n_rows;
    tok = graft__calloc(n, sizeof *tok), type = graft__calloc(n, sizeof *type), score = graft__calloc(n, sizeof *score);
    if (!tok || !type || !score) { rc = nomem(err); goto out; }
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (id < 0 || (uint64_t)id >= n_rows) { rc = graft_err_set(err, GRAFT_E_FORMAT, p, NULL, 0, "token id %lld is beyond the %llu embedding rows", (long long)id, (unsigned long long)n_rows); goto out; }
        tok[id] = (char *)k, type[id] = 1;
        if (!bytelevel && strlen(k) == 6 && !strncmp(k, "<0x", 3) && k[5] == '>') type[id] = 6;
    }
    size_t i;
    json_array_foreach(json_object_get(tj, "added_tokens"), i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        const char *c = json_string_value(json_object_get(v, "content"));
        if (!c || id < 0 || (uint64_t)id >= n_rows) { rc = graft_err_set(err, GRAFT_E_FORMAT, p, NULL, 0, "added token %zu is beyond the embedding rows", i); goto out; }
        tok[id] = (char *)c, type[id] = json_is_true(json_object_get(v, "special")) ? 3 : 4;
    }
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    char pad[40];
    for (size_t id = 0; id < n; id++) {
        if (!tok[id]) { // ids the tokenizer leaves free (padded embeddings): unused placeholders
            snprintf(pad, sizeof pad, "[PAD%zu]", id);
            if (!(tok[id] = graft__strdup(pad))) { rc = nomem(err); goto out; }
            type[id] = -5; // marks an owned placeholder; stored as 5 (unused)
        } else if (unk && !strcmp(tok[id], unk)) type[id] = 2;
    }
    // merges as "a b" strings; the SentencePiece form scores a token by the rank of the merge making it
    n_mer = json_array_size(merges);
    mer = graft__calloc(n_mer + 1, sizeof *mer), mer_own = graft__calloc(n_mer + 1, sizeof *mer_own);
    if (!mer || !mer_own) { rc = nomem(err); goto out; }
    for (size_t r = 0; r < n_mer; r++) {
        json_t *e = json_array_get(merges, r);
        if (json_is_string(e)) mer[r] = json_string_value(e);
        else if (json_is_array(e) && json_array_size(e) == 2) {
            if (!(mer_own[r] = graft__asprintf("%s %s", json_string_value(json_array_get(e, 0)), json_string_value(json_array_get(e, 1))))) { rc = nomem(err); goto out; }
            mer[r] = mer_own[r];
        } else { rc = graft_err_set(err, GRAFT_E_FORMAT, p, NULL, 0, "merge %zu is neither \"a b\" nor [a, b]", r); goto out; }
        if (!bytelevel) {
            const char *sp = strchr(mer[r], ' ');
            char *joined = sp ? graft__asprintf("%.*s%s", (int)(sp - mer[r]), mer[r], sp + 1) : NULL;
            json_t *idv = joined ? json_object_get(vocab, joined) : NULL;
            if (json_is_integer(idv) && score[json_integer_value(idv)] == 0) score[json_integer_value(idv)] = -(float)(r + 1);
            graft__free(joined);
        }
    }
    int32_t *tt = graft__malloc(n * sizeof *tt);
    if (!tt) { rc = nomem(err); goto out; }
    for (size_t id = 0; id < n; id++) tt[id] = type[id] < 0 ? 5 : type[id];
    const char *model_name = bytelevel ? "gpt2" : "llama";
    rc = graft_gguf_w_str(w, "tokenizer.ggml.model", model_name, strlen(model_name), err);
    if (!rc) rc = graft_gguf_w_str(w, "tokenizer.ggml.pre", pre, strlen(pre), err);
    if (!rc) rc = graft_gguf_w_arr(w, "tokenizer.ggml.tokens", GRAFT_GGUF_STRING, tok, NULL, n, err);
    if (!rc && !bytelevel) rc = graft_gguf_w_arr(w, "tokenizer.ggml.scores", GRAFT_GGUF_F32, score, NULL, n, err);
    if (!rc) rc = graft_gguf_w_arr(w, "tokenizer.ggml.token_type", GRAFT_GGUF_I32, tt, NULL, n, err);
    if (!rc && bytelevel) rc = graft_gguf_w_arr(w, "tokenizer.ggml.merges", GRAFT_GGUF_STRING, mer, NULL, n_mer, err);
    graft__free(tt);
    // BOS as graft eval takes it (add_bos_token, else the post-processor template); other special ids
    // from tokenizer_config.json's token strings, else config.json's ids (gguf-py's order)
    struct graft_tokenizer *gt = NULL;
    struct graft_err e3 = {0};
    int32_t tb = graft_tokenizer_load(graft_model_dir(m), &gt, &e3) ? -1 : graft_tokenizer_bos(gt);
    graft_tokenizer_free(gt);
    static const char *const keys[3][3] = {{"bos_token_id", "bos_token", "tokenizer.ggml.bos_token_id"},
                                           {"eos_token_id", "eos_token", "tokenizer.ggml.eos_token_id"},
                                           {"pad_token_id", "pad_token", "tokenizer.ggml.padding_token_id"}};
    for (int s = 0; s < 3 && !rc; s++) {
        long id = s == 0 ? tb : -1;
        json_t *ts = json_object_get(tc, keys[s][1]);
        const char *str = json_is_string(ts) ? json_string_value(ts) : json_string_value(json_object_get(ts, "content"));
        for (size_t q = 0; id < 0 && str && q < n; q++)
            if (!strcmp(tok[q], str)) id = (long)q;
        if (id < 0) id = graft__json_int(cfg, keys[s][0], -1);
        if (id >= 0 && (uint64_t)id < n_rows) rc = graft_gguf_w_u32(w, keys[s][2], (uint32_t)id, err);
    }
    if (!rc && unk) {
        json_t *uid = json_object_get(vocab, unk);
        if (json_is_integer(uid)) rc = graft_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)json_integer_value(uid), err);
    }
    if (!rc && !bytelevel) { // SentencePiece: llama.cpp prefixes ▁ unless told (Gemma's tokenizer.json never does)
        char *nd = json_dumps(json_object_get(tj, "normalizer"), JSON_COMPACT), *pd = json_dumps(json_object_get(tj, "pre_tokenizer"), JSON_COMPACT);
        bool prefix = (nd && strstr(nd, "\"type\":\"Prepend\"")) ||
                      (pd && strstr(pd, "\"type\":\"Metaspace\"") && !strstr(pd, "\"prepend_scheme\":\"never\"") &&
                       (strstr(pd, "\"prepend_scheme\"") || !strstr(pd, "\"add_prefix_space\":false")));
        free(nd), free(pd);
        rc = graft_gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", prefix, err);
    }
    if (!rc) rc = graft_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", tb >= 0, err);
    if (!rc) rc = graft_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(json_object_get(tc, "add_eos_token")), err);
    json_t *ct = json_object_get(tc, "chat_template");
    if (!rc && json_is_string(ct)) rc = graft_gguf_w_str(w, "tokenizer.chat_template", json_string_value(ct), json_string_length(ct), err);
out:
    for (size_t id = 0; tok && type && id < n_rows; id++)
        if (type[id] < 0) graft__free(tok[id]);
    for (size_t r = 0; mer_own && r < n_mer; r++) graft__free(mer_own[r]);
    graft__free(tok), graft__free(type), graft__free(score), graft__free(mer), graft__free(mer_own), graft__free(p);
    json_decref(tj), json_decref(tc);
    return rc;
}

// The GGUF architecture for a transformers class, and whether its q/k rows take llama.cpp's permutation
// (the architectures it runs with interleaved, not NEOX, rotation).
static const char *gguf_arch(const char *a, bool *permute) {
    static const struct { const char *hf, *gg; bool permute; } A[] = {
        {"LlamaForCausalLM", "llama", true}, {"MistralForCausalLM", "llama", true}, {"MixtralForCausalLM", "llama", true},
        {"Qwen2ForCausalLM", "qwen2", false}, {"Qwen3ForCausalLM", "qwen3", false}, {"Phi3ForCausalLM", "phi3", false},
        {"GemmaForCausalLM", "gemma", false}, {"Gemma2ForCausalLM", "gemma2", false}, {"Gemma3ForCausalLM", "gemma3", false},
        {"Gemma3ForConditionalGeneration", "gemma3", false}};
    for (size_t i = 0; a && i < sizeof A / sizeof A[0]; i++)
        if (!strcmp(a, A[i].hf)) return *permute = A[i].permute, A[i].gg;
    return NULL;
}

// Gemma 3's text decoder config with Gemma3TextConfig's defaults for the keys a published config leaves
// out (gemma-3-4b's text_config omits its head counts, head_dim and vocabulary size).
static json_t *gemma3_text(json_t *c) {
    static const struct { const char *k; double v; } D[] = {
        {"vocab_size", 262208}, {"hidden_size", 2304}, {"intermediate_size", 9216}, {"num_hidden_layers", 26}, {"num_attention_heads", 8},
        {"num_key_value_heads", 4}, {"head_dim", 256}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0}, {"rope_local_base_freq", 10000.0},
        {"sliding_window", 4096}, {"sliding_window_pattern", 6}, {"query_pre_attn_scalar", 256}, {"max_position_embeddings", 131072}};
    for (size_t i = 0; i < sizeof D / sizeof D[0]; i++)
        if (!json_object_get(c, D[i].k))
            json_object_set_new(c, D[i].k, D[i].v == (double)(json_int_t)D[i].v && D[i].v >= 1 ? json_integer((json_int_t)D[i].v) : json_real(D[i].v));
    return c;
}

// A Gemma 3 vision–language checkpoint's text decoder under transformers' names (older
// "language_model.model.", newer "model.language_model."); NULL for the vision tower and projector,
// which llama.cpp keeps in a separate mmproj file.
static const char *text_name(const char *n, bool vl, char *buf, size_t cap) {
    if (!vl) return n;
    if (!strncmp(n, "language_model.model.", 21)) return snprintf(buf, cap, "model.%s", n + 21), buf;
    if (!strncmp(n, "model.language_model.", 21)) return snprintf(buf, cap, "model.%s", n + 21), buf;
    if (!strcmp(n, "language_model.lm_head.weight")) return "lm_head.weight";
    if (!strcmp(n, "lm_head.weight")) return n;
    return NULL;
}

int graft_to_gguf(const struct graft_model *m, const char *target, uint32_t type, const char *name, int n_threads, unsigned flags, struct graft_err *err) {
    const char *cs = graft_model_config_json(m);
    json_t *c = cs ? json_loads(cs, 0, NULL) : NULL;
    struct gjob j = {.m = m, .allow = flags & GRAFT_WRITER_ALLOW_NONFINITE};
    const struct graft_model_tensor **exps = NULL; // every expert tensor, grouped per stacked tensor
    int rc = GRAFT_OK;
    const char *mp = graft_model_path(m);
    json_t *root = c; // c: the decoder's config (Gemma 3 VL: text_config)
    if (!c) return graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "needs the model folder's config.json");
    const char *archs = json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
    bool permute = false;
    const char *arch = gguf_arch(archs, &permute);
    if (!arch) { // exit 4: the operation does not apply to this model
        rc = graft_err_set(err, GRAFT_E_CONFIG, mp, NULL, 0, "architecture %s: GGUF conversion covers LlamaForCausalLM, MistralForCausalLM, MixtralForCausalLM, "
                           "Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM, GemmaForCausalLM and Gemma2ForCausalLM", archs ? archs : "(none)");
        goto out;
    }
    bool gemma = !strncmp(arch, "gemma", 5), phi3 = !strcmp(arch, "phi3"), gemma3 = !strcmp(arch, "gemma3");
    bool vl = !strcmp(archs, "Gemma3ForConditionalGeneration");
    if (vl && !json_is_object(c = json_object_get(root, "text_config"))) {
        c = root;
        rc = graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "config.json: Gemma3ForConditionalGeneration without a text_config");
        goto out;
    }
    graft__rope_parameters_compat(c); // transformers ≥ 5 writes RoPE there (before Gemma 3's defaults fill the older keys)
    if (gemma3) gemma3_text(c);
    long H = graft__json_int(c, "hidden_size", -1), nh = graft__json_int(c, "num_attention_heads", -1), nkv = graft__json_int(c, "num_key_value_heads", nh), L = graft__json_int(c, "num_hidden_layers", -1);
    long hd = graft__json_int(c, "head_dim", nh > 0 ? H / nh : -1), V = graft__json_int(c, "vocab_size", -1);
    long n_exp = graft__json_int(c, "num_local_experts", 0), n_used = graft__json_int(c, "num_experts_per_tok", 0);
    if (gemma && !json_object_get(c, "head_dim")) hd = 256; // GemmaConfig's default
    if (H < 1 || nh < 1 || nkv < 1 || L < 1 || hd < 2 || V < 1) { rc = graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "config.json lacks hidden_size, heads, layers or vocab_size"); goto out; }
    if (phi3 && hd != H / nh) { rc = graft_err_set(err, GRAFT_E_CONFIG, mp, NULL, 0, "head_dim %ld: llama.cpp's phi3 takes hidden_size / num_attention_heads = %ld", hd, H / nh); goto out; }
    // what llama.cpp's model would compute otherwise is refused (exit 4), as its converter asserts:
    // gemma2 always soft-caps (null caps: transformers does not); gemma3 has no attention cap
    if (!strcmp(arch, "gemma2")) {
        json_t *ca = json_object_get(c, "attn_logit_softcapping"), *cf = json_object_get(c, "final_logit_softcapping");
        if ((ca && !(json_number_value(ca) > 0)) || (cf && !(json_number_value(cf) > 0))) {
            rc = graft_err_set(err, GRAFT_E_CONFIG, mp, NULL, 0, "config.json: Gemma 2 without logit soft-capping (null or 0): llama.cpp's gemma2 always caps");
            goto out;
        }
    }
    if (gemma3 && graft__json_num(c, "attn_logit_softcapping", 0) > 0) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, mp, NULL, 0, "config.json: Gemma 3 with attn_logit_softcapping: llama.cpp's gemma3 does not cap attention");
        goto out;
    }
    // a rotary part of each head (partial_rotary_factor): rope.dimension_count, as the converter writes it
    double prf = graft__json_num(c, "partial_rotary_factor", 1.0);
    long rot = prf > 0 && prf < 1 ? (long)(prf * (double)H) / nh : hd;
    if (!(prf > 0 && prf <= 1) || rot < 2 || rot % 2) { rc = graft_err_set(err, GRAFT_E_CONFIG, mp, NULL, 0, "config.json: partial_rotary_factor %g gives %ld rotary dimensions", prf, rot); goto out; }
    if ((!strcmp(archs, "MixtralForCausalLM") || n_exp > 0) && (n_exp < 1 || n_exp > 4096 || n_used < 1 || n_used > n_exp)) { rc = graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "config.json: num_local_experts / num_experts_per_tok are missing or inconsistent"); goto out; }
    if (!strcmp(arch, "gemma2") || gemma3) { // llama.cpp cannot store query_pre_attn_scalar: it scales queries by its own rule
        long big = gemma3 ? 62 : 46, want = L == big ? H / nh : hd, q = graft__json_int(c, "query_pre_attn_scalar", 256);
        if (q != want) {
            rc = graft_err_set(err, GRAFT_E_CONFIG, mp, NULL, 0, "query_pre_attn_scalar %ld: llama.cpp scales Gemma %d queries by 1/sqrt(%ld) (%s), so the GGUF file would compute "
                               "another model", q, gemma3 ? 3 : 2, want, L == big ? (gemma3 ? "hidden_size / heads for the 62-layer 27B" : "hidden_size / heads for the 46-layer 27B") : "head_dim");
            goto out;
        }
    }
    if (gemma3 && json_is_array(json_object_get(c, "layer_types"))) { // llama.cpp takes a period: every p-th layer global
        long p = graft__json_int(c, "sliding_window_pattern", 6);
        json_t *lt = json_object_get(c, "layer_types");
        for (size_t l = 0; l < json_array_size(lt) && !rc; l++) {
            const char *ty = json_string_value(json_array_get(lt, l));
            bool slide = ty && !strcmp(ty, "sliding_attention");
            if (slide != (p < 1 || (long)(l + 1) % p != 0))
                rc = graft_err_set(err, GRAFT_E_CONFIG, mp, NULL, 0, "layer_types: layer %zu is %s, which no sliding_window_pattern llama.cpp reads expresses", l, ty ? ty : "?");
        }
        if (rc) goto out;
    }
    const char *emb_name = !vl ? "model.embed_tokens.weight" : graft_model_find(m, "model.language_model.embed_tokens.weight", strlen("model.language_model.embed_tokens.weight")) ? "model.language_model.embed_tokens.weight"
                                                                                                                              : "language_model.model.embed_tokens.weight";
    const struct graft_model_tensor *emb = graft_model_find(m, emb_name, strlen(emb_name));
    if (!emb || emb->info->n_dims != 2) { rc = graft_err_set(err, GRAFT_E_FORMAT, mp, emb_name, strlen(emb_name), "missing or not 2-D"); goto out; }
    size_t nt = graft_model_n_tensors(m);
    if (!(j.t = graft__calloc(nt ? nt : 1, sizeof *j.t)) || (n_exp > 0 && !(exps = graft__calloc(nt ? nt : 1, sizeof *exps)))) { rc = nomem(err); goto out; }
    size_t n_exps_used = 0;
    for (size_t i = 0; i < nt && !rc; i++) {
        const struct graft_model_tensor *t = graft_model_tensor(m, i);
        if (strstr(t->info->name, "rotary_emb.inv_freq")) continue; // recomputed by llama.cpp
        char nbuf[160];
        const char *hn = text_name(t->info->name, vl, nbuf, sizeof nbuf);
        if (!hn) continue; // the vision tower and projector: llama.cpp's mmproj file, not this one
        if (gemma && !gemma3 && !strcmp(hn, "lm_head.weight")) { // Gemma 1/2 tie it; llama.cpp reads token_embd
            const struct graft_model_tensor *et = graft_model_find(m, "model.embed_tokens.weight", 25);
            bool same = et && et->info->dtype == t->info->dtype && et->info->n_bytes == t->info->n_bytes &&
                        !memcmp(graft_model_data(m, et), graft_model_data(m, t), (size_t)t->info->n_bytes);
            if (!same) { // an untied head llama.cpp would replace by the embedding: another model
                rc = graft_err_set(err, GRAFT_E_CONFIG, mp, t->info->name, t->info->name_len, "differs from the embedding, but llama.cpp's %s always "
                                   "uses token_embd as the output layer", arch);
                break;
            }
            continue;
        }
        char gname[96];
        int e = -1;
        if (!graft_gguf_hf_name(arch, hn, gname, sizeof gname, n_exp > 0 ? &e : NULL)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, mp, t->info->name, t->info->name_len, "no llama.cpp name for this tensor");
            break;
        }
        if (!graft_dtype_traits(t->info->dtype)->is_float || t->info->n_dims > 2 || (e >= 0 && t->info->n_dims != 2)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, mp, t->info->name, t->info->name_len, "only 1-D and 2-D floating tensors convert");
            break;
        }
        if (e >= n_exp) { rc = graft_err_set(err, GRAFT_E_FORMAT, mp, t->info->name, t->info->name_len, "expert %d, but num_local_experts is %ld", e, n_exp); break; }
        struct gt *x = NULL;
        if (e >= 0) // the stacked tensor this expert joins, created with the first of them
            for (size_t k = 0; k < j.n && !x; k++)
                if (j.t[k].exp && !strcmp(j.t[k].name, gname)) x = &j.t[k];
        if (x) {
            const struct graft_tensor_info *a = x->src->info, *b = t->info;
            if (x->exp[e] || a->ne[0] != b->ne[0] || a->ne[1] != b->ne[1] || a->dtype != b->dtype) {
                rc = graft_err_set(err, GRAFT_E_FORMAT, mp, t->info->name, t->info->name_len, "experts stacked into %s differ in shape or dtype, or repeat", gname);
                break;
            }
            x->exp[e] = t;
            continue;
        }
        x = &j.t[j.n];
        snprintf(x->name, sizeof x->name, "%s", gname);
        x->src = t, x->id = -1;
        if (e >= 0) {
            x->exp = exps + n_exps_used, x->n_exp = (uint32_t)n_exp, n_exps_used += (size_t)n_exp;
            if (n_exps_used > nt) { rc = graft_err_set(err, GRAFT_E_FORMAT, mp, t->info->name, t->info->name_len, "more experts than tensors"); break; }
            x->exp[e] = t;
        }
        uint64_t cols = t->info->n_dims == 2 ? t->info->ne[1] : t->info->n_elem;
        x->type = t->info->n_dims < 2 || strstr(gname, ".ffn_gate_inp.") ? GRAFT_GGML_F32 : type; // the router stays F32, as gguf-py keeps it
        if (graft_ggml_block_size(x->type) > 1 && cols % graft_ggml_block_size(x->type)) x->type = GRAFT_GGML_F16;
        x->plus_one = gemma && t->info->n_dims == 1 && strstr(gname, "norm.weight");
        if (permute && strstr(x->name, ".attn_q.")) x->permute_heads = (int)nh;
        if (permute && strstr(x->name, ".attn_k.")) x->permute_heads = (int)nkv;
        if (x->permute_heads && (t->info->ne[0] % (uint64_t)x->permute_heads || (t->info->ne[0] / (uint64_t)x->permute_heads) % 2)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, mp, t->info->name, t->info->name_len, "rows are not whole rotary heads");
            break;
        }
        j.n++;
    }
    for (size_t k = 0; k < j.n && !rc; k++)
        for (uint32_t e = 0; j.t[k].exp && e < j.t[k].n_exp && !rc; e++)
            if (!j.t[k].exp[e]) rc = graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "%s: expert %u of %u is missing", j.t[k].name, e, j.t[k].n_exp);
    if (rc) goto out;
    // generated vectors: llama3 rope_scaling as per-frequency factors (rope_freqs), Phi-3's LongRoPE pair
    double theta = graft__json_num(c, "rope_theta", 10000.0), attn_factor = 0;
    json_t *rs = json_object_get(c, "rope_scaling");
    const char *rt = json_string_value(json_object_get(rs, "rope_type")) ? json_string_value(json_object_get(rs, "rope_type")) : json_string_value(json_object_get(rs, "type"));
    long ctx = graft__json_int(c, "max_position_embeddings", 2048), octx = graft__json_int(c, "original_max_position_embeddings", ctx);
    if (rt && !strcmp(rt, "llama3") && !phi3 && !gemma) {
        double f = graft__json_num(rs, "factor", 8.0), lo = graft__json_num(rs, "low_freq_factor", 1.0), hi = graft__json_num(rs, "high_freq_factor", 4.0), old = graft__json_num(rs, "original_max_position_embeddings", 8192);
        struct extra *x = &j.x[j.n_x++];
        *x = (struct extra){.name = "rope_freqs.weight", .n = (size_t)rot / 2, .id = -1};
        if (!(x->v = graft__malloc(x->n * sizeof(float)))) { rc = nomem(err); goto out; }
        for (size_t i = 0; i < x->n; i++) {
            double freq = 1.0 / pow(theta, (double)(2 * i) / (double)rot), wl = 2 * M_PI / freq;
            x->v[i] = (float)graft__llama3_rope_factor(f, lo, hi, old, wl);
        }
    } else if (rt && (!strcmp(rt, "longrope") || !strcmp(rt, "su")) && phi3) {
        if (octx < 2 || ctx < 1) { rc = graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "longrope needs original_max_position_embeddings ≥ 2 and max_position_embeddings ≥ 1"); goto out; }
        double scale = (double)ctx / (double)octx;
        attn_factor = scale > 1 ? sqrt(1 + log(scale) / log((double)octx)) : 1.0;
        static const char *const key[2] = {"long_factor", "short_factor"}, *const gn[2] = {"rope_factors_long.weight", "rope_factors_short.weight"};
        for (int k = 0; k < 2; k++) {
            json_t *a = json_object_get(rs, key[k]);
            if (json_array_size(a) != (size_t)rot / 2) { rc = graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "rope_scaling.%s must hold %ld factors", key[k], rot / 2); goto out; }
            struct extra *x = &j.x[j.n_x++];
            *x = (struct extra){.name = gn[k], .n = (size_t)rot / 2, .id = -1};
            if (!(x->v = graft__malloc(x->n * sizeof(float)))) { rc = nomem(err); goto out; }
            for (size_t i = 0; i < x->n; i++) x->v[i] = (float)json_number_value(json_array_get(a, i));
        }
    } else if (rt && strcmp(rt, "default") && !(rt && !strcmp(rt, "linear") && !phi3)) {
        rc = graft_err_set(err, GRAFT_E_FORMAT, mp, NULL, 0, "rope_scaling type %s is not converted for %s (linear, llama3; longrope for phi3)", rt, archs);
        goto out;
    }
    const char *src = mp; // the file must not replace its source, nor land inside its folder
    if ((rc = graft__output_check(target, &src, 1, err)) || (rc = graft_gguf_writer_open(target, flags, &j.w, err))) goto out;
    struct graft_gguf_writer *w = j.w;
    char key[128];
    const char *base = name ? name : strrchr(graft_model_dir(m), '/');
    base = name ? name : base ? base + 1 : graft_model_dir(m);
    uint32_t ftype = type == GRAFT_GGML_F32 ? 0 : type == GRAFT_GGML_F16 ? 1 : type == GRAFT_GGML_Q4_0 ? 2 : type == GRAFT_GGML_Q8_0 ? 7 : 32; // 32: MOSTLY_BF16
#define KU(name, v) (snprintf(key, sizeof key, "%s." name, arch), rc = rc ? rc : graft_gguf_w_u32(w, key, (uint32_t)(v), err))
#define KF(name, v) (snprintf(key, sizeof key, "%s." name, arch), rc = rc ? rc : graft_gguf_w_f32(w, key, (float)(v), err))
    rc = graft_gguf_w_str(w, "general.architecture", arch, strlen(arch), err);
    if (!rc) rc = graft_gguf_w_str(w, "general.name", base, strlen(base), err);
    if (!rc) rc = graft_gguf_w_u32(w, "general.file_type", ftype, err);
    if (!rc && graft_ggml_block_size(type) > 1) rc = graft_gguf_w_u32(w, "general.quantization_version", 2, err);
    KU("context_length", ctx);
    KU("embedding_length", H);
    KU("block_count", L);
    KU("feed_forward_length", graft__json_int(c, "intermediate_size", 0));
    KU("attention.head_count", nh);
    KU("attention.head_count_kv", nkv);
    KU("rope.dimension_count", rot);
    KU("vocab_size", emb->info->ne[0]);
    KF("rope.freq_base", theta);
    KF("attention.layer_norm_rms_epsilon", graft__json_num(c, "rms_norm_eps", 1e-6));
    if (!rc && ((json_object_get(c, "head_dim") && hd != H / nh) || gemma)) KU("attention.key_length", hd), KU("attention.value_length", hd);
    if (n_exp > 0) KU("expert_count", n_exp), KU("expert_used_count", n_used);
    if (!strcmp(arch, "gemma2") || gemma3) { // (caps llama.cpp cannot drop or add were refused above)
        double ca = graft__json_num(c, "attn_logit_softcapping", gemma3 ? 0 : 50.0), cf = graft__json_num(c, "final_logit_softcapping", gemma3 ? 0 : 30.0);
        if (ca > 0 && !gemma3) KF("attn_logit_softcapping", ca);
        if (cf > 0) KF("final_logit_softcapping", cf);
        KU("attention.sliding_window", graft__json_int(c, "sliding_window", 4096));
    }
    if (gemma3) { // local (sliding) layers: their own RoPE base, unscaled; every p-th layer global
        KF("rope.freq_base_swa", graft__json_num(c, "rope_local_base_freq", 10000.0));
        KU("attention.sliding_window_pattern", graft__json_int(c, "sliding_window_pattern", 6));
    }
    if (phi3) {
        KU("rope.scaling.original_context_length", octx);
        KU("attention.sliding_window", graft__json_int(c, "sliding_window", 0)); // 0: none (Phi-4), as the converter writes it
        if (j.n_x) KF("rope.scaling.attn_factor", attn_factor);
    }
    if (!rc && rt && !strcmp(rt, "linear")) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
        rc = graft_gguf_w_str(w, key, "linear", 6, err);
        KF("rope.scaling.factor", graft__json_num(rs, "factor", 1.0));
    }
#undef KU
#undef KF
    if (!rc) rc = write_tokenizer(w, m, root, emb->info->ne[0], err);
    for (size_t i = 0; i < j.n_x && !rc; i++) {
        uint64_t ne[1] = {j.x[i].n};
        if ((j.x[i].id = graft_gguf_w_tensor(w, j.x[i].name, 1, ne, GRAFT_GGML_F32, err)) < 0) rc = (int)j.x[i].id;
    }
    for (size_t i = 0; i < j.n && !rc; i++) {
        const struct graft_tensor_info *t = j.t[i].src->info;
        uint64_t ne[3] = {t->n_dims == 2 ? t->ne[1] : t->n_elem, t->n_dims == 2 ? t->ne[0] : 1, j.t[i].n_exp}; // ggml order: innermost first
        uint32_t nd = j.t[i].exp ? 3 : t->n_dims == 2 ? 2 : 1;
        if ((j.t[i].id = graft_gguf_w_tensor(w, j.t[i].name, nd, ne, j.t[i].type, err)) < 0) rc = (int)j.t[i].id;
    }
    if (!rc) rc = graft_gguf_w_layout(w, err);
    if (!rc) rc = graft_pool_run(n_threads > 0 ? n_threads : 1, j.n + j.n_x, write_one, &j, NULL, NULL, err);
    if (!rc) rc = graft_gguf_w_commit(w, err);
out:
    graft_gguf_writer_free(j.w);
    for (size_t i = 0; i < j.n_x; i++) graft__free(j.x[i].v);
    graft__free(j.t), graft__free(exps);
    json_decref(root);
    return rc;
}
