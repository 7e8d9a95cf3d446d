// GGUF ⇄ Hugging Face names, and a llama / qwen2 GGUF file as a Hugging Face folder: tensors renamed,
// q/k rows of `llama` files un-permuted, config.json rebuilt from the metadata, tokenizer.json from
// the tokenizer.ggml.* arrays (BPE with merges for gpt2-type vocabularies; for SentencePiece-type
// ones the merges are derived from the scores as transformers' SentencePieceExtractor does, which is
// also how llama.cpp ranks them). Used by `graft convert IN.gguf OUT --to hf`, by graft_model_open on
// a .gguf file and by the evaluator.
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "graft/dtype.h"
#include "graft/gguf.h"
#include "graft/util.h"
#include "graft/writer.h"
#include "../core/impl.h"
#include "io-impl.h"

static const struct { const char *hf, *gg; } TOP[] = {
    {"model.embed_tokens.weight", "token_embd.weight"}, {"model.norm.weight", "output_norm.weight"}, {"lm_head.weight", "output.weight"}};
// Per-layer names by architecture family: llama.cpp gives the same HF name different GGUF names (Gemma 2's
// post_attention_layernorm is a post-norm, Llama's the feed-forward pre-norm) and one GGUF name
// different HF tensors (Phi-3's ffn_up is the fused gate_up_proj).
struct nm { const char *hf, *gg; };
static const struct nm LAY_LLAMA[] = {
    {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"}, {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"}, {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"}, {"self_attn.q_norm", "attn_q_norm"}, {"self_attn.k_norm", "attn_k_norm"}, {"block_sparse_moe.gate", "ffn_gate_inp"}};
static const struct nm LAY_PHI3[] = {
    {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"}, {"self_attn.qkv_proj", "attn_qkv"},
    {"self_attn.o_proj", "attn_output"}, {"mlp.gate_up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"}};
static const struct nm LAY_GEMMA2[] = {
    {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "post_attention_norm"}, {"pre_feedforward_layernorm", "ffn_norm"},
    {"post_feedforward_layernorm", "post_ffw_norm"}, {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"}, {"mlp.up_proj", "ffn_up"}, {"mlp.down_proj", "ffn_down"},
    {"self_attn.q_norm", "attn_q_norm"}, {"self_attn.k_norm", "attn_k_norm"}};
// Mixtral's experts, stacked by llama.cpp into one 3-D tensor per matrix kind
static const struct nm EXPS[] = {{"w1", "ffn_gate_exps"}, {"w2", "ffn_down_exps"}, {"w3", "ffn_up_exps"}};
#define N_TOP (sizeof TOP / sizeof TOP[0])
#define N_EXPS (sizeof EXPS / sizeof EXPS[0])

static const struct nm *layer_table(const char *arch, size_t *n) {
    if (arch && !strcmp(arch, "phi3")) return *n = sizeof LAY_PHI3 / sizeof *LAY_PHI3, LAY_PHI3;
    if (arch && (!strcmp(arch, "gemma2") || !strcmp(arch, "gemma3"))) return *n = sizeof LAY_GEMMA2 / sizeof *LAY_GEMMA2, LAY_GEMMA2;
    return *n = sizeof LAY_LLAMA / sizeof *LAY_LLAMA, LAY_LLAMA;
}

static bool weight_or_bias(const char *s) { return !strcmp(s, ".weight") || !strcmp(s, ".bias"); }

bool graft_gguf_hf_name(const char *arch, const char *hf, char *out, size_t cap, int *expert) {
    if (expert) *expert = -1;
    for (size_t i = 0; i < N_TOP; i++)
        if (!strcmp(hf, TOP[i].hf)) return snprintf(out, cap, "%s", TOP[i].gg), true;
    int l, n = 0, e, m = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &n) != 1 || !n || l < 0) return false;
    const char *rest = hf + n;
    size_t nt;
    const struct nm *lay = layer_table(arch, &nt);
    for (size_t i = 0; i < nt; i++) {
        size_t k = strlen(lay[i].hf);
        if (!strncmp(rest, lay[i].hf, k) && weight_or_bias(rest + k)) return snprintf(out, cap, "blk.%d.%s%s", l, lay[i].gg, rest + k), true;
    }
    if (lay == LAY_LLAMA && expert && sscanf(rest, "block_sparse_moe.experts.%d.%n", &e, &m) == 1 && m && e >= 0)
        for (size_t i = 0; i < N_EXPS; i++)
            if (!strncmp(rest + m, EXPS[i].hf, 2) && !strcmp(rest + m + 2, ".weight"))
                return *expert = e, snprintf(out, cap, "blk.%d.%s.weight", l, EXPS[i].gg), true;
    return false;
}

bool graft_gguf_name_to_hf(const char *arch, const char *gg, int expert, char *out, size_t cap) {
    for (size_t i = 0; i < N_TOP; i++)
        if (!strcmp(gg, TOP[i].gg)) return snprintf(out, cap, "%s", TOP[i].hf), true;
    int l, n = 0;
    if (sscanf(gg, "blk.%d.%n", &l, &n) != 1 || !n || l < 0) return false;
    const char *rest = gg + n;
    size_t nt;
    const struct nm *lay = layer_table(arch, &nt);
    for (size_t i = 0; i < nt; i++) {
        size_t k = strlen(lay[i].gg);
        if (!strncmp(rest, lay[i].gg, k) && weight_or_bias(rest + k)) return snprintf(out, cap, "model.layers.%d.%s%s", l, lay[i].hf, rest + k), true;
    }
    if (lay == LAY_LLAMA && expert >= 0)
        for (size_t i = 0; i < N_EXPS; i++) {
            size_t k = strlen(EXPS[i].gg);
            if (!strncmp(rest, EXPS[i].gg, k) && !strcmp(rest + k, ".weight"))
                return snprintf(out, cap, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, expert, EXPS[i].hf), true;
        }
    return false;
}

bool graft_gguf_is_experts(const char *gg) { return strstr(gg, "_exps.weight") != NULL; }

// llama.cpp's converter permutes q/k rows: per head, the two rotary halves interleaved —
// out[h·d + 2j + i] = in[h·d + i·d/2 + j].
uint64_t graft_gguf_permuted_row(uint64_t r, uint64_t head_dim) {
    uint64_t h = r / head_dim, k = r % head_dim, j = k / 2, i = k % 2;
    return h * head_dim + i * (head_dim / 2) + j;
}

static int nomem(struct graft_err *err) { return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); }

// The shortest decimal that reads back as the same float32 (metadata floats are f32: 1e-6 stays 1e-6).
static double short_f32(double v) {
    float f = (float)v;
    char b[40];
    for (int p = 1; p <= 9; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)f);
        if ((float)strtod(b, NULL) == f) return strtod(b, NULL);
    }
    return (double)f;
}

// llama3 rope_scaling back from rope_freqs: the factors depend on (factor, low, high, old) only through
// factor and two line coefficients, so low_freq_factor is fixed to 1 and the rest is solved from the
// transition band; accepted only when recomputing every factor gives the stored floats back.
static bool fit_llama3(const float *rf, size_t n, double theta, uint64_t hd, json_t **out) {
    double f = 1;
    for (size_t i = 0; i < n; i++) f = rf[i] > f ? rf[i] : f;
    if (!(f > 1)) return false;
    // s_i = (1/r_i − 1/f)/(1 − 1/f) = a/wl_i + b in the band; two band points give a and b
    double xa = 0, ya = 0, xb = 0, yb = 0;
    int nb = 0;
    for (size_t i = 0; i < n; i++) {
        double wl = 2 * M_PI * pow(theta, (double)(2 * i) / (double)hd), s = (1 / rf[i] - 1 / f) / (1 - 1 / f);
        if (rf[i] > 1.0f && rf[i] < (float)f) {
            if (!nb) xa = 1 / wl, ya = s;
            else xb = 1 / wl, yb = s;
            nb++;
        }
    }
    double cand[4][3] = {{1, 4, 8192}, {1, 4, 0}, {1, 2, 0}, {0}};
    int nc = 3;
    if (nb >= 2 && xa != xb) {
        double a = (ya - yb) / (xa - xb), b = ya - a * xa;
        if (b < 0 && a > 0) {
            double old = round(-a / b);
            cand[nc][0] = 1, cand[nc][1] = 1 + old / a, cand[nc][2] = old, nc++;
        }
    }
    for (int c = 0; c < nc; c++) {
        double lo = cand[c][0], hi = cand[c][1], old = cand[c][2];
        if (old == 0) continue;
        hi = short_f32(hi);
        bool okc = true;
        for (size_t i = 0; okc && i < n; i++) {
            double wl = 2 * M_PI * pow(theta, (double)(2 * i) / (double)hd);
            okc = fabsf((float)graft__llama3_rope_factor(f, lo, hi, old, wl) - rf[i]) <= 1e-6f * rf[i];
        }
        if (okc) {
            *out = json_pack("{s:f, s:f, s:f, s:I, s:s}", "factor", short_f32(f), "low_freq_factor", lo, "high_freq_factor", hi,
                             "original_max_position_embeddings", (json_int_t)old, "rope_type", "llama3");
            return *out != NULL;
        }
    }
    return false;
}

static bool get_str(const struct graft_gguf *g, const char *key, char *buf, size_t cap) {
    const char *s;
    size_t n;
    if (!graft_gguf_get_str(g, key, &s, &n) || n >= cap) return false;
    memcpy(buf, s, n), buf[n] = 0;
    return true;
}

static int hf_config(const struct graft_gguf *g, json_t **out, struct graft_gguf_heads *heads, struct graft_err *err) {
    *out = NULL;
    char arch[32], key[96];
    if (!get_str(g, "general.architecture", arch, sizeof arch))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "GGUF file without general.architecture");
    const char *hf = !strcmp(arch, "llama") ? "LlamaForCausalLM" : !strcmp(arch, "qwen2") ? "Qwen2ForCausalLM" : !strcmp(arch, "qwen3") ? "Qwen3ForCausalLM"
                   : !strcmp(arch, "phi3") ? "Phi3ForCausalLM" : !strcmp(arch, "gemma") ? "GemmaForCausalLM" : !strcmp(arch, "gemma2") ? "Gemma2ForCausalLM"
                   : !strcmp(arch, "gemma3") ? "Gemma3ForCausalLM" : NULL;
    if (!hf) return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "GGUF architecture '%s': graft reads llama (and Mixtral), qwen2, qwen3, phi3, gemma, gemma2 and gemma3 files as Hugging Face models", arch);
    bool gemma = !strncmp(arch, "gemma", 5), phi3 = !strcmp(arch, "phi3");
    uint64_t H = 0, I = 0, L = 0, nh = 0, nkv = 0, hd = 0, ctx = 2048, u, n_exp = 0, n_used = 0, swa = 0, octx = 0, swa_p = 6;
    double eps = 1e-6, theta = 10000.0, factor = 0, cap_attn = 0, cap_final = 0, theta_swa = 10000.0;
#define U(name, v) (snprintf(key, sizeof key, "%s." name, arch), graft_gguf_get_u64(g, key, &(v)))
#define F(name, v) (snprintf(key, sizeof key, "%s." name, arch), graft_gguf_get_f64(g, key, &(v)))
    if (!U("embedding_length", H) || !U("feed_forward_length", I) || !U("block_count", L) || !U("attention.head_count", nh) || !H || !nh || !L)
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "GGUF metadata lacks %s.embedding_length, feed_forward_length, block_count or attention.head_count", arch);
    if (!U("attention.head_count_kv", nkv) || !nkv) nkv = nh;
    // the tensors must be the layers block_count says (llama.cpp refuses a file whose tensor count
    // differs): a layer past it would be dropped, a missing one would fail later, deep in a merge
    for (size_t i = 0; i < graft_gguf_n_tensors(g); i++) {
        const struct graft_gguf_tensor *t = graft_gguf_tensor(g, i);
        unsigned long long li;
        if (!strncmp(t->name, "blk.", 4) && sscanf(t->name + 4, "%llu", &li) == 1 && li >= L)
            return graft_err_set(err, GRAFT_E_FORMAT, NULL, t->name, strlen(t->name), "a layer past %s.block_count (%llu)", arch, (unsigned long long)L);
    }
    for (uint64_t l = 0; l < L; l++) {
        snprintf(key, sizeof key, "blk.%llu.attn_norm.weight", (unsigned long long)l);
        if (!graft_gguf_find(g, key)) return graft_err_set(err, GRAFT_E_FORMAT, NULL, key, strlen(key), "missing: %s.block_count is %llu", arch, (unsigned long long)L);
    }
    bool explicit_hd = U("attention.key_length", hd) && hd;
    if (!explicit_hd) hd = H / nh;
    uint64_t rot = 0; // a rotary part of each head: transformers' partial_rotary_factor
    bool partial = U("rope.dimension_count", rot) && rot && rot < hd;
    U("context_length", ctx);
    F("attention.layer_norm_rms_epsilon", eps);
    F("rope.freq_base", theta);
    bool has_exp = U("expert_count", n_exp) && n_exp > 0;
    if (has_exp && !graft_gguf_find(g, "blk.0.ffn_gate_exps.weight"))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, "blk.0.ffn_gate_exps.weight", 26, "missing, though %s.expert_count is %llu", arch, (unsigned long long)n_exp);
    if (has_exp && (strcmp(arch, "llama") || n_exp > 4096 || !U("expert_used_count", n_used) || !n_used || n_used > n_exp))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "%s.expert_count (at most 4096) without a valid expert_used_count (graft reads Mixtral-style llama files)", arch);
    bool has_swa = U("attention.sliding_window", swa), has_octx = U("rope.scaling.original_context_length", octx);
    bool has_cap_a = F("attn_logit_softcapping", cap_attn), has_cap_f = F("final_logit_softcapping", cap_final);
    F("rope.freq_base_swa", theta_swa), U("attention.sliding_window_pattern", swa_p);
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    char st[32];
    bool has_st = get_str(g, key, st, sizeof st);
    if (has_st && strcmp(st, "none") && strcmp(st, "linear"))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "%s '%s' is not read (linear)", key, st);
    // as llama.cpp: the type defaults to linear, and the factor has an older key, rope.scale_linear
    bool linear = !has_st || !strcmp(st, "linear");
    if (linear && !F("rope.scaling.factor", factor)) F("rope.scale_linear", factor);
#undef U
#undef F
    const struct graft_gguf_tensor *emb = graft_gguf_find(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) return graft_err_set(err, GRAFT_E_FORMAT, NULL, "token_embd.weight", 17, "missing or not 2-D");
    json_t *rs = NULL;
    const struct graft_gguf_tensor *rft = graft_gguf_find(g, "rope_freqs.weight");
    if (rft) {
        if (rft->type != GRAFT_GGML_F32 || rft->n_dims != 1 || rft->ne[0] != hd / 2)
            return graft_err_set(err, GRAFT_E_FORMAT, NULL, "rope_freqs.weight", 17, "expected %llu F32 factors", (unsigned long long)(hd / 2));
        float *rf = graft__malloc((size_t)rft->ne[0] * sizeof *rf);
        if (!rf) return nomem(err);
        memcpy(rf, graft_gguf_data(g, rft), (size_t)rft->ne[0] * sizeof *rf);
        bool fit = fit_llama3(rf, (size_t)rft->ne[0], theta, hd, &rs);
        graft__free(rf);
        if (!fit) return graft_err_set(err, GRAFT_E_FORMAT, NULL, "rope_freqs.weight", 17, "these per-frequency RoPE factors are not llama3 rope_scaling; graft cannot express them in config.json");
    } else if (linear && factor > 0 && (has_st || factor != 1)) {
        rs = json_pack("{s:s, s:f}", "type", "linear", "factor", short_f32(factor));
    }
    // Phi-3 LongRoPE: the per-frequency factors are tensors, HF keeps them in rope_scaling
    const struct graft_gguf_tensor *rl = phi3 ? graft_gguf_find(g, "rope_factors_long.weight") : NULL, *rsh = phi3 ? graft_gguf_find(g, "rope_factors_short.weight") : NULL;
    if (phi3 && (rl || rsh)) {
        for (int k = 0; k < 2; k++) {
            const struct graft_gguf_tensor *t = k ? rsh : rl;
            if (!t || t->type != GRAFT_GGML_F32 || t->n_dims != 1 || t->ne[0] != (H / nh) / 2) {
                json_decref(rs);
                return graft_err_set(err, GRAFT_E_FORMAT, NULL, k ? "rope_factors_short.weight" : "rope_factors_long.weight", k ? 25 : 24, "expected %llu F32 factors, with its long/short pair",
                                     (unsigned long long)((H / nh) / 2));
            }
        }
        json_t *lf = json_array(), *sf = json_array();
        const uint8_t *pl = graft_gguf_data(g, rl), *ps = graft_gguf_data(g, rsh);
        for (uint64_t i = 0; lf && sf && i < rl->ne[0]; i++) {
            float a, b;
            memcpy(&a, pl + 4 * i, 4), memcpy(&b, ps + 4 * i, 4);
            json_array_append_new(lf, json_real(short_f32(a))), json_array_append_new(sf, json_real(short_f32(b)));
        }
        json_decref(rs);
        rs = json_pack("{s:s, s:o, s:o}", "type", "longrope", "long_factor", lf, "short_factor", sf);
    }
    // the dtype most matrices have; quantized ones are decoded to float32
    size_t cnt[3] = {0};
    for (size_t i = 0; i < graft_gguf_n_tensors(g); i++) {
        uint32_t t = graft_gguf_tensor(g, i)->type;
        if (graft_gguf_tensor(g, i)->n_dims < 2) continue;
        cnt[t == GRAFT_GGML_F16 ? 1 : t == GRAFT_GGML_BF16 ? 2 : 0]++;
    }
    const char *td = cnt[1] > cnt[0] && cnt[1] >= cnt[2] ? "float16" : cnt[2] > cnt[0] ? "bfloat16" : "float32";
    json_t *c = json_object();
    if (!c) { json_decref(rs); return nomem(err); }
    json_object_set_new(c, "architectures", json_pack("[s]", has_exp ? "MixtralForCausalLM" : hf));
    json_object_set_new(c, "model_type", json_string(has_exp ? "mixtral" : !strcmp(arch, "gemma3") ? "gemma3_text" : arch));
    json_object_set_new(c, "hidden_act", json_string(gemma ? "gelu_pytorch_tanh" : "silu"));
    if (gemma) json_object_set_new(c, "hidden_activation", json_string("gelu_pytorch_tanh"));
    json_object_set_new(c, "hidden_size", json_integer((json_int_t)H));
    json_object_set_new(c, "intermediate_size", json_integer((json_int_t)I));
    json_object_set_new(c, "num_hidden_layers", json_integer((json_int_t)L));
    json_object_set_new(c, "num_attention_heads", json_integer((json_int_t)nh));
    json_object_set_new(c, "num_key_value_heads", json_integer((json_int_t)nkv));
    // Qwen3Config's head_dim defaults to 128, not hidden / heads: always written for it
    if ((explicit_hd && hd != H / nh) || !strcmp(arch, "qwen3") || gemma) json_object_set_new(c, "head_dim", json_integer((json_int_t)hd));
    if (has_exp) {
        json_object_set_new(c, "num_local_experts", json_integer((json_int_t)n_exp));
        json_object_set_new(c, "num_experts_per_tok", json_integer((json_int_t)n_used));
    }
    if (partial) json_object_set_new(c, "partial_rotary_factor", json_real((double)rot / (double)hd));
    bool gemma3 = !strcmp(arch, "gemma3");
    if (!strcmp(arch, "gemma2") || gemma3) { // llama.cpp scales queries by 1/√(hidden/heads) for the 27B (46 or 62 layers), else 1/√head_dim
        json_object_set_new(c, "query_pre_attn_scalar", json_integer((json_int_t)(L == (gemma3 ? 62u : 46u) ? H / nh : hd)));
        // llama.cpp's gemma2 always caps, at 50 / 30 when the keys are absent: the same model here
        bool g2 = !gemma3;
        json_object_set_new(c, "attn_logit_softcapping", g2 ? json_real(short_f32(has_cap_a ? cap_attn : 50.0)) : json_null());
        json_object_set_new(c, "final_logit_softcapping", has_cap_f || g2 ? json_real(short_f32(has_cap_f ? cap_final : 30.0)) : json_null());
        json_object_set_new(c, "sliding_window", json_integer((json_int_t)(has_swa ? swa : 4096)));
    }
    if (gemma3) { // no sliding window: every layer global (pattern 1)
        json_object_set_new(c, "sliding_window_pattern", json_integer((json_int_t)(has_swa && swa ? swa_p : 1)));
        json_object_set_new(c, "rope_local_base_freq", json_real(short_f32(theta_swa)));
    }
    if (phi3) {
        json_object_set_new(c, "original_max_position_embeddings", json_integer((json_int_t)(has_octx && octx ? octx : ctx)));
        json_object_set_new(c, "sliding_window", has_swa && swa ? json_integer((json_int_t)swa) : json_null());
    }
    json_object_set_new(c, "vocab_size", json_integer((json_int_t)emb->ne[1]));
    json_object_set_new(c, "max_position_embeddings", json_integer((json_int_t)ctx));
    json_object_set_new(c, "rms_norm_eps", json_real(short_f32(eps)));
    json_object_set_new(c, "rope_theta", json_real(short_f32(theta)));
    json_object_set_new(c, "rope_scaling", rs ? rs : json_null());
    json_object_set_new(c, "tie_word_embeddings", json_boolean((gemma && strcmp(arch, "gemma3")) || !graft_gguf_find(g, "output.weight")));
    if (!strcmp(arch, "llama") && graft_gguf_find(g, "blk.0.attn_q.bias")) json_object_set_new(c, "attention_bias", json_true());
    if (graft_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &u)) json_object_set_new(c, "bos_token_id", json_integer((json_int_t)u));
    if (graft_gguf_get_u64(g, "tokenizer.ggml.eos_token_id", &u)) json_object_set_new(c, "eos_token_id", json_integer((json_int_t)u));
    json_object_set_new(c, "torch_dtype", json_string(td));
    if (heads) *heads = (struct graft_gguf_heads){.n_head = nh, .n_kv = nkv, .head_dim = hd, .permuted = !strcmp(arch, "llama"), .norm_plus_one = gemma};
    if (heads) snprintf(heads->arch, sizeof heads->arch, "%s", arch);
    *out = c;
    return GRAFT_OK;
}

// llama.cpp's pre-tokenizer names of the Llama 3 kind (llama-vocab.cpp: ignore_merges, and BOS added
// unless tokenizer.ggml.add_bos_token says otherwise).
static bool llama3_pre(const char *pre) {
    static const char *const names[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(pre, names[i])) return true;
    return false;
}

// Whether llama.cpp adds BOS: tokenizer.ggml.add_bos_token, else its default — SentencePiece
// vocabularies, and BPE ones with a Llama 3 kind of pre-tokenizer (or tekken, chameleon).
static bool add_bos_of(const struct graft_gguf *g) {
    const struct graft_gguf_kv *ab = graft_gguf_find_kv(g, "tokenizer.ggml.add_bos_token");
    if (ab && ab->type == GRAFT_GGUF_BOOL) return ab->value[0] != 0;
    char model[32] = "", pre[64] = "default";
    get_str(g, "tokenizer.ggml.model", model, sizeof model), get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    return !strcmp(model, "llama") || (!strcmp(model, "gpt2") && (llama3_pre(pre) || !strcmp(pre, "tekken") || !strcmp(pre, "chameleon")));
}

int32_t graft_gguf_bos(const struct graft_gguf *g) {
    uint64_t b;
    return graft_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &b) && add_bos_of(g) ? (int32_t)b : -1;
}

int graft_gguf_hf_config(const struct graft_gguf *g, char **out, struct graft_gguf_heads *heads, struct graft_err *err) {
    json_t *c;
    *out = NULL;
    int rc = hf_config(g, &c, heads, err);
    if (rc) return rc;
    *out = json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(c);
    return *out ? GRAFT_OK : nomem(err);
}

// ---- tokenizer --------------------------------------------------------------------------------------

static const char *const PRE_LLAMA3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const PRE_QWEN2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// tekken (Mistral Nemo) and GPT-4o: the tokenizer.json regexes llama.cpp's comments quote
static const char *const PRE_TEKKEN =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *const PRE_GPT4O =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?"
    "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// llama.cpp's `default` BPE pre-tokenizer (llama-vocab.cpp): four regexes, each splitting the pieces
// of the one before (matches and the text between them both become pieces, HF's Isolated): punctuation
// runs, GPT-2's regex, digit runs, then digits in threes.
static const char *const PRE_DEFAULT[4] = {"[\\p{P}\\$\\+<=>\\^~\\|]+",
                                           "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
                                           "\\p{N}+", "[0-9][0-9][0-9]"};

struct cand { float score; uint32_t id, l, r; };
static int cmp_cand(const void *a, const void *b) {
    const struct cand *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1; // higher score merges first
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

static json_t *added_token(const char *s, size_t n, uint64_t id, bool special) {
    return json_pack("{s:I, s:s%, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)id, "content", s, n, "single_word", 0, "lstrip", 0, "rstrip", 0,
                     "normalized", !special, "special", special);
}

int graft_gguf_hf_tokenizer(const struct graft_gguf *g, char **tok_json, char **tok_config, struct graft_err *err) {
    *tok_json = *tok_config = NULL;
    char model[32], pre[64] = "default";
    if (!get_str(g, "tokenizer.ggml.model", model, sizeof model))
        return graft_err_set(err, GRAFT_E_NOTFOUND, NULL, NULL, 0, "the GGUF file carries no tokenizer (tokenizer.ggml.model)");
    bool spm = !strcmp(model, "llama");
    if (!spm && strcmp(model, "gpt2"))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "tokenizer.ggml.model '%s': graft rebuilds gpt2 (BPE) and llama (SentencePiece) vocabularies", model);
    get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    const char *rx = NULL;
    if (!spm) {
        if (llama3_pre(pre) || !strcmp(pre, "smaug-bpe")) rx = PRE_LLAMA3; // (smaug: the regex, not ignore_merges)
        else if (!strcmp(pre, "qwen2")) rx = PRE_QWEN2;
        else if (!strcmp(pre, "tekken")) rx = PRE_TEKKEN;
        else if (!strcmp(pre, "gpt-4o")) rx = PRE_GPT4O;
        else if (strcmp(pre, "default") && strcmp(pre, "gpt-2") && strcmp(pre, "gpt2"))
            return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "tokenizer.ggml.pre '%s': graft rebuilds default, gpt-2, the Llama 3 kind (llama-bpe, llama3, falcon3, pixtral, …), smaug-bpe, qwen2, tekken and gpt-4o pre-tokenizers", pre);
    }
    const struct graft_gguf_kv *tk = graft_gguf_find_kv(g, "tokenizer.ggml.tokens"), *ty = graft_gguf_find_kv(g, "tokenizer.ggml.token_type"),
                               *sc = graft_gguf_find_kv(g, "tokenizer.ggml.scores"), *mg = graft_gguf_find_kv(g, "tokenizer.ggml.merges");
    if (!tk || tk->type != GRAFT_GGUF_ARRAY || tk->arr_type != GRAFT_GGUF_STRING || !tk->n)
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "tokenizer.ggml.tokens is missing or not an array of strings");
    uint64_t n = tk->n;
    if (ty && (ty->type != GRAFT_GGUF_ARRAY || ty->arr_type != GRAFT_GGUF_I32 || ty->n != n))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "tokenizer.ggml.token_type is not %llu INT32 values", (unsigned long long)n);
    if (sc && (sc->type != GRAFT_GGUF_ARRAY || sc->arr_type != GRAFT_GGUF_F32 || sc->n != n))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "tokenizer.ggml.scores is not %llu FLOAT32 values", (unsigned long long)n);
    if (!spm && (!mg || mg->type != GRAFT_GGUF_ARRAY || mg->arr_type != GRAFT_GGUF_STRING))
        return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "a gpt2 vocabulary needs tokenizer.ggml.merges (an array of strings)");
    const char **s = graft__calloc((size_t)n, sizeof *s);
    size_t *len = graft__calloc((size_t)n, sizeof *len);
    struct cand *cd = NULL;
    json_t *root = NULL, *tc = NULL;
    int rc = GRAFT_OK;
    if (!s || !len) { rc = nomem(err); goto out; }
    const uint8_t *p = tk->value; // packed (u64 length, bytes) pairs, bounds checked at open
    for (uint64_t i = 0; i < n && !rc; i++) {
        len[i] = (size_t)graft__load_u64le(p), s[i] = (const char *)p + 8, p += 8 + len[i];
        // tokenizer.json cannot hold them (JSON would drop or cut the piece and leave a broken vocabulary)
        if (graft__utf8_check((const uint8_t *)s[i], len[i]) != len[i] || memchr(s[i], 0, len[i]))
            rc = graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "tokenizer.ggml.tokens[%llu] is not valid UTF-8 or holds NUL", (unsigned long long)i);
    }
    if (rc) goto out;
#define TYPE(i) (ty ? (int32_t)(ty->value[4 * (i)] | ty->value[4 * (i) + 1] << 8 | ty->value[4 * (i) + 2] << 16 | (uint32_t)ty->value[4 * (i) + 3] << 24) : 1)
    json_t *vocab = json_object(), *added = json_array();
    root = json_object();
    if (!vocab || !added || !root) { json_decref(vocab), json_decref(added); rc = nomem(err); goto out; }
    uint64_t unk = UINT64_MAX, u;
    bool bytes = false;
    for (uint64_t i = 0; i < n && !rc; i++) {
        int32_t t = TYPE(i);
        if (t == 5) continue; // unused placeholder rows
        char *k = graft__strndup(s[i], len[i]);
        if (!k) { rc = nomem(err); break; }
        if (!json_object_get(vocab, k)) json_object_set_new(vocab, k, json_integer((json_int_t)i));
        graft__free(k);
        if (t == 2 && unk == UINT64_MAX) unk = i;
        if (t == 6) bytes = true;
        if (t == 3 || t == 4) json_array_append_new(added, added_token(s[i], len[i], i, t == 3));
    }
    if (graft_gguf_get_u64(g, "tokenizer.ggml.unknown_token_id", &u) && u < n) unk = u;
    json_t *merges = json_array();
    if (!merges) rc = nomem(err);
    if (!rc && !spm) {
        const uint8_t *q = mg->value;
        for (uint64_t i = 0; i < mg->n; i++) {
            size_t l = (size_t)graft__load_u64le(q);
            json_array_append_new(merges, json_stringn((const char *)q + 8, l));
            q += 8 + l;
        }
    } else if (!rc) { // every split of a vocabulary piece into two pieces, ranked by the piece's score
        size_t nc = 0, cap = 0;
        for (uint64_t i = 0; i < n && !rc; i++) {
            // (SentencePiece pieces are short; a hostile file's long ones would cost O(len²) each here)
            if ((TYPE(i) != 1 && TYPE(i) != 4) || len[i] > 256) continue;
            for (size_t k = 1; k < len[i]; k++) {
                if (((unsigned char)s[i][k] & 0xC0) == 0x80) continue; // split at code points only
                char *a = graft__strndup(s[i], k), *b = graft__strndup(s[i] + k, len[i] - k);
                json_t *ia = a ? json_object_get(vocab, a) : NULL, *ib = b ? json_object_get(vocab, b) : NULL;
                graft__free(a), graft__free(b);
                if (!ia || !ib) continue;
                if (nc == cap) {
                    struct cand *nw = graft__realloc(cd, (cap = cap ? 2 * cap : 1024) * sizeof *cd);
                    if (!nw) { rc = nomem(err); break; }
                    cd = nw;
                }
                float scv = 0;
                if (sc) memcpy(&scv, sc->value + 4 * i, 4);
                cd[nc++] = (struct cand){sc ? scv : -(float)i, (uint32_t)i, (uint32_t)json_integer_value(ia), (uint32_t)json_integer_value(ib)};
            }
        }
        if (!rc && nc) qsort(cd, nc, sizeof *cd, cmp_cand);
        for (size_t c = 0; c < nc && !rc; c++) {
            char *m = graft__asprintf("%.*s %.*s", (int)len[cd[c].l], s[cd[c].l], (int)len[cd[c].r], s[cd[c].r]);
            if (!m) { rc = nomem(err); break; }
            json_array_append_new(merges, json_string(m));
            graft__free(m);
        }
    }
    json_t *bpe = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b}", "type", "BPE", "dropout", "continuing_subword_prefix", "end_of_word_suffix",
                            "unk_token", "fuse_unk", spm, "byte_fallback", spm && bytes, "ignore_merges", !spm && (llama3_pre(pre) || !strcmp(pre, "tekken")));
    if (!bpe) { json_decref(vocab), json_decref(added), json_decref(merges); if (!rc) rc = nomem(err); goto out; }
    if (spm && unk != UINT64_MAX) json_object_set_new(bpe, "unk_token", json_stringn(s[unk], len[unk]));
    json_object_set_new(bpe, "vocab", vocab);
    json_object_set_new(bpe, "merges", merges);
    if (rc) { json_decref(added), json_decref(bpe); goto out; }
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "truncation", json_null());
    json_object_set_new(root, "padding", json_null());
    json_object_set_new(root, "added_tokens", added);
    const char *SP = "\xe2\x96\x81";
    if (spm) {
        bool prefix = true;
        const struct graft_gguf_kv *ap = graft_gguf_find_kv(g, "tokenizer.ggml.add_space_prefix");
        if (ap && ap->type == GRAFT_GGUF_BOOL) prefix = ap->value[0] != 0;
        json_t *norm = json_pack("{s:s, s:[]}", "type", "Sequence", "normalizers");
        if (prefix) json_array_append_new(json_object_get(norm, "normalizers"), json_pack("{s:s, s:s}", "type", "Prepend", "prepend", SP));
        json_array_append_new(json_object_get(norm, "normalizers"), json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "String", " ", "content", SP));
        json_object_set_new(root, "normalizer", norm);
        json_object_set_new(root, "pre_tokenizer", json_null());
        json_object_set_new(root, "post_processor", json_null());
        json_t *dec = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]}", "type", "Sequence", "decoders", "type", "Replace", "pattern", "String", SP,
                                "content", " ", "type", "ByteFallback", "type", "Fuse");
        if (dec && prefix) json_array_append_new(json_object_get(dec, "decoders"), json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ", "start", 1, "stop", 0));
        json_object_set_new(root, "decoder", dec);
    } else {
        json_object_set_new(root, "normalizer", rx == PRE_QWEN2 ? json_pack("{s:s}", "type", "NFC") : json_null());
        json_t *pt;
        if (rx || !strcmp(pre, "default")) { // Split(s), then the bytes → alphabet step alone
            json_t *seq = json_array();
            for (int k = 0; seq && k < (rx ? 1 : 4); k++)
                json_array_append_new(seq, json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern", "Regex", rx ? rx : PRE_DEFAULT[k], "behavior", "Isolated", "invert", 0));
            if (seq) json_array_append_new(seq, json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0));
            pt = seq ? json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", seq) : NULL;
        } else { // gpt-2: ByteLevel's own regex (GPT-2's; llama.cpp's lacks the last \s+, which splits the same)
            pt = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1, "use_regex", 1);
        }
        json_object_set_new(root, "pre_tokenizer", pt);
        json_object_set_new(root, "post_processor", json_null());
        json_object_set_new(root, "decoder", json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1));
    }
    json_object_set_new(root, "model", bpe);
    // tokenizer_config.json: BOS/EOS strings and flags (llama.cpp's defaults: BOS for SentencePiece vocabularies)
    tc = json_object();
    if (!tc) { rc = nomem(err); goto out; }
    const struct graft_gguf_kv *ae = graft_gguf_find_kv(g, "tokenizer.ggml.add_eos_token");
    bool add_bos = add_bos_of(g), add_eos = ae && ae->type == GRAFT_GGUF_BOOL && ae->value[0];
    uint64_t bos = UINT64_MAX, eos = UINT64_MAX, pad = UINT64_MAX;
    graft_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &bos), graft_gguf_get_u64(g, "tokenizer.ggml.eos_token_id", &eos);
    graft_gguf_get_u64(g, "tokenizer.ggml.padding_token_id", &pad);
    json_object_set_new(tc, "add_bos_token", json_boolean(add_bos && bos < n));
    json_object_set_new(tc, "add_eos_token", json_boolean(add_eos && eos < n));
    json_object_set_new(tc, "bos_token", bos < n ? json_stringn(s[bos], len[bos]) : json_null());
    json_object_set_new(tc, "eos_token", eos < n ? json_stringn(s[eos], len[eos]) : json_null());
    if (pad < n) json_object_set_new(tc, "pad_token", json_stringn(s[pad], len[pad]));
    if (spm && unk < n) json_object_set_new(tc, "unk_token", json_stringn(s[unk], len[unk]));
    const char *ct;
    size_t ctl;
    if (graft_gguf_get_str(g, "tokenizer.chat_template", &ct, &ctl)) json_object_set_new(tc, "chat_template", json_stringn(ct, ctl));
    json_object_set_new(tc, "tokenizer_class", json_string(spm ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast"));
    struct graft__buf b1, b2;
    graft__buf_init(&b1, SIZE_MAX / 2), graft__buf_init(&b2, SIZE_MAX / 2);
    graft__json_dump_pretty(&b1, root), graft__json_dump_pretty(&b2, tc);
    if (b1.failed || b2.failed) rc = nomem(err);
    else *tok_json = b1.data, *tok_config = b2.data, b1.data = b2.data = NULL;
    graft__buf_free(&b1), graft__buf_free(&b2);
#undef TYPE
out:
    json_decref(root), json_decref(tc);
    graft__free(s), graft__free(len), graft__free(cd);
    return rc;
}

// ---- tensors ----------------------------------------------------------------------------------------

struct ht {
    const struct graft_gguf_tensor *t;
    long             id;
    enum graft_dtype out;
    uint64_t         rows, cols, hd; // hd > 0: q/k rows to un-permute per head of hd rows
    int              expert;         // ≥ 0: this expert's slice of a stacked ffn_*_exps tensor
    bool             minus_one;      // Gemma norms: llama.cpp stores 1 + w, transformers w
};

struct hjob {
    const struct graft_gguf *g;
    struct graft_writer     *w;
    struct ht               *t;
    struct graft_progress   *progress;
    const char              *label;
    bool                     allow; // --allow-nonfinite
};

static enum graft_dtype native(uint32_t type) {
    return type == GRAFT_GGML_F16 ? GRAFT_DTYPE_F16 : type == GRAFT_GGML_BF16 ? GRAFT_DTYPE_BF16 : GRAFT_DTYPE_F32;
}

// The GGUF row holding HF row R of a permuted q/k matrix (the inverse of graft_gguf_permuted_row).
static uint64_t gguf_row(uint64_t R, uint64_t d) {
    uint64_t k = R % d, i = k / (d / 2), j = k % (d / 2);
    return R - k + 2 * j + i;
}

// A 1-D q/k bias of a llama file: decoded whole, its values un-permuted one by one.
static int conv_bias(struct hjob *j, const struct ht *x, struct graft_err *err) {
    float *v = graft__malloc((size_t)x->cols * sizeof *v), *u = graft__malloc((size_t)x->cols * sizeof *u);
    uint8_t *o = graft__malloc((size_t)x->cols * (graft_dtype_traits(x->out)->bits / 8) + 1);
    int rc = v && u && o ? GRAFT_OK : nomem(err);
    if (!rc && !graft_ggml_to_f32(x->t->type, graft_gguf_data(j->g, x->t), v, x->cols))
        rc = graft_err_set(err, GRAFT_E_FORMAT, j->label, x->t->name, x->t->name_len, "cannot decode %s", graft_ggml_type_name(x->t->type));
    for (uint64_t r = 0; !rc && r < x->cols; r++) u[r] = v[gguf_row(r, x->hd)];
    size_t at;
    uint64_t bad = rc ? 0 : (graft_row_from_f32(x->out, u, o, (size_t)x->cols), graft_count_nonfinite(x->out, o, (size_t)x->cols, &at));
    uint64_t held = bad ? graft_count_nonfinite(GRAFT_DTYPE_F32, u, (size_t)x->cols, NULL) : 0; // (in the file already)
    if (!rc && bad) rc = graft__nonfinite_rule("the conversion from GGUF", x->t->name, x->t->name_len, x->out, bad, held, at, held, j->allow, err);
    if (!rc) rc = graft_writer_write(j->w, x->id, 0, o, (size_t)x->cols * (graft_dtype_traits(x->out)->bits / 8), err);
    graft__free(v), graft__free(u), graft__free(o);
    return rc;
}

static int conv_one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct hjob *j = ctx;
    struct ht *x = &j->t[item];
    if (x->hd && x->t->n_dims == 1) return conv_bias(j, x, err);
    uint64_t row_in = x->cols / graft_ggml_block_size(x->t->type) * graft_ggml_type_size(x->t->type);
    const uint8_t *src = graft_gguf_data(j->g, x->t) + (x->expert > 0 ? (uint64_t)x->expert * x->rows * row_in : 0);
    size_t es = (size_t)graft_dtype_traits(x->out)->bits / 8;
    bool same = !x->minus_one && native(x->t->type) == x->out && (x->t->type == GRAFT_GGML_F32 || x->t->type == GRAFT_GGML_F16 || x->t->type == GRAFT_GGML_BF16);
    uint64_t block = x->hd ? x->hd : 64;
    if (block > x->rows) block = x->rows ? x->rows : 1;
    float *f = same ? NULL : graft__malloc((size_t)x->cols * sizeof *f);
    uint8_t *o = graft__malloc((size_t)(block * x->cols) * es + 1);
    int rc = (same || f) && o ? GRAFT_OK : nomem(err);
    uint64_t bad = 0, held = 0, first = UINT64_MAX; // NaN / ±Inf written, and those already in float32
    for (uint64_t r0 = 0; !rc && r0 < x->rows; r0 += block) {
        uint64_t nr = x->rows - r0 < block ? x->rows - r0 : block;
        for (uint64_t r = 0; r < nr && !rc; r++) {
            uint64_t gr = x->hd ? gguf_row(r0 + r, x->hd) : r0 + r;
            uint8_t *dst = o + (size_t)(r * x->cols) * es;
            if (same) memcpy(dst, src + gr * row_in, (size_t)row_in);
            else if (!graft_ggml_to_f32(x->t->type, src + gr * row_in, f, x->cols))
                rc = graft_err_set(err, GRAFT_E_FORMAT, j->label, x->t->name, x->t->name_len, "cannot decode %s", graft_ggml_type_name(x->t->type));
            else {
                if (x->minus_one)
                    for (uint64_t c = 0; c < x->cols; c++) f[c] -= 1.0f;
                graft_row_from_f32(x->out, f, dst, (size_t)x->cols);
            }
            size_t at;
            uint64_t b = same || rc ? 0 : graft_count_nonfinite(x->out, dst, (size_t)x->cols, &at);
            if (b && first == UINT64_MAX) first = (r0 + r) * x->cols + at;
            if (b) bad += b, held += graft_count_nonfinite(GRAFT_DTYPE_F32, f, (size_t)x->cols, NULL);
        }
        if (!rc) rc = graft_writer_write(j->w, x->id, r0 * x->cols * es, o, (size_t)(nr * x->cols) * es, err);
        if (!rc && j->progress) graft_progress_add(j->progress, nr * row_in);
    }
    graft__free(f), graft__free(o);
    if (!rc && bad) // the NaN / ±Inf rule: values the GGUF holds carry over (a warning), overflow of --dtype is refused
        rc = graft__nonfinite_rule("the conversion from GGUF", x->t->name, x->t->name_len, x->out, bad, held, first, held, j->allow, err);
    return rc;
}

static const char *torch_name(int dtype) {
    return dtype == GRAFT_DTYPE_F16 ? "float16" : dtype == GRAFT_DTYPE_BF16 ? "bfloat16" : dtype == GRAFT_DTYPE_F32 ? "float32" : dtype == GRAFT_DTYPE_F64 ? "float64" : NULL;
}

static int add_json_file(struct graft_writer *w, const char *name, const json_t *j, struct graft_err *err) {
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    graft__json_dump_pretty(&b, j);
    int rc = b.failed ? nomem(err) : graft_writer_add_file(w, name, b.data, b.len, err);
    graft__buf_free(&b);
    return rc;
}

int graft_gguf_to_hf(const struct graft_gguf *g, const char *label, const char *target, int dtype, int n_threads, unsigned flags,
                     struct graft_progress *progress, struct graft_err *err) {
    json_t *cfg = NULL;
    char *cfg_text = NULL, *tj = NULL, *tcj = NULL;
    struct hjob j = {.g = g, .progress = progress, .label = label, .allow = flags & GRAFT_WRITER_ALLOW_NONFINITE};
    struct graft_gguf_heads hh;
    int rc = hf_config(g, &cfg, &hh, err);
    if (rc) { graft__err_prefix(err, label, NULL, 0); goto out; }
    uint64_t nh = hh.n_head, nkv = hh.n_kv, hd = hh.head_dim;
    const char *td = json_string_value(json_object_get(cfg, "torch_dtype"));
    enum graft_dtype model_dt = !strcmp(td, "float16") ? GRAFT_DTYPE_F16 : !strcmp(td, "bfloat16") ? GRAFT_DTYPE_BF16 : GRAFT_DTYPE_F32;
    size_t n = graft_gguf_n_tensors(g), k = 0, cap = n ? n : 1;
    if (!(j.t = graft__calloc(cap, sizeof *j.t))) { rc = nomem(err); goto out; }
    char hf[160];
    for (size_t i = 0; i < n && !rc; i++) {
        const struct graft_gguf_tensor *t = graft_gguf_tensor(g, i);
        if (!strcmp(t->name, "rope_freqs.weight") || !strncmp(t->name, "rope_factors_", 13)) continue; // now config.json's rope_scaling
        bool exps = graft_gguf_is_experts(t->name);
        if (!graft_gguf_name_to_hf(hh.arch, t->name, exps ? 0 : -1, hf, sizeof hf)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, label, t->name, t->name_len, "no Hugging Face name for this GGUF tensor");
            break;
        }
        bool fl = t->type == GRAFT_GGML_F32 || t->type == GRAFT_GGML_F16 || t->type == GRAFT_GGML_BF16 || t->type == GRAFT_GGML_F64 ||
                  graft_ggml_block_size(t->type) > 1;
        float probe = 0;
        if (!fl || t->n_dims > (exps ? 3u : 2u) || (exps && t->n_dims != 3) || (graft_ggml_block_size(t->type) > 1 && !graft_ggml_to_f32(t->type, graft_gguf_data(g, t), &probe, 0))) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, label, t->name, t->name_len, exps ? "stacked experts must be one 3-D float or Q8_0/Q4_0/Q4_1/Q4_K/Q6_K tensor"
                                                                                      : "type %s does not convert (float and Q8_0/Q4_0/Q4_1/Q4_K/Q6_K tensors of 1 or 2 dims do)",
                               graft_ggml_type_name(t->type) ? graft_ggml_type_name(t->type) : "?");
            break;
        }
        uint64_t ne_exp = exps ? t->ne[2] : 1;
        if (exps && (!t->ne[0] || !t->ne[1] || !t->ne[2])) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, label, t->name, t->name_len, "stacked experts with an empty dimension");
            break;
        }
        if (exps && (json_int_t)ne_exp != json_integer_value(json_object_get(cfg, "num_local_experts"))) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, label, t->name, t->name_len, "%llu experts stacked, expert_count says %lld", (unsigned long long)ne_exp,
                               (long long)json_integer_value(json_object_get(cfg, "num_local_experts")));
            break;
        }
        if (k + ne_exp > cap) { // ne_exp ≤ 4096 (hf_config): no overflow
            struct ht *nt = graft__realloc(j.t, (cap = 2 * cap + (size_t)ne_exp) * sizeof *nt);
            if (!nt) { rc = nomem(err); break; }
            j.t = nt;
        }
        for (uint64_t e = 0; e < ne_exp; e++) {
            struct ht *x = &j.t[k++];
            *x = (struct ht){.t = t, .expert = exps ? (int)e : -1, .out = dtype >= 0 ? (enum graft_dtype)dtype : native(t->type)};
            if (dtype < 0 && t->n_dims == 1 && t->type == GRAFT_GGML_F32) x->out = model_dt; // norms and biases, kept F32 by the converter
            x->cols = t->ne[0], x->rows = t->n_dims >= 2 ? t->ne[1] : 1;
            x->minus_one = hh.norm_plus_one && strstr(t->name, "norm.weight") != NULL;
        }
        struct ht *x = &j.t[k - 1];
        bool q = strstr(t->name, ".attn_q.") != NULL, kk = strstr(t->name, ".attn_k.") != NULL;
        if (hh.permuted && (q || kk)) {
            x->hd = hd;
            uint64_t units = t->n_dims >= 2 ? x->rows : x->cols; // a 1-D bias: value by value (as llama.cpp permuted it)
            if (hd < 2 || hd % 2 || units % hd || units / hd != (q ? nh : nkv)) {
                rc = graft_err_set(err, GRAFT_E_FORMAT, label, t->name, t->name_len, "%llu rows are not %llu heads of %llu", (unsigned long long)units,
                                   (unsigned long long)(q ? nh : nkv), (unsigned long long)hd);
                break;
            }
        }
    }
    if (rc) goto out;
    struct graft_writer_params wp = graft_writer_default_params();
    const char *protect[1] = {label};
    wp.flags = flags, wp.protect = protect, wp.n_protect = label ? 1 : 0;
    if ((rc = graft_writer_open(target, &wp, &j.w, err))) goto out;
    for (size_t i = 0; i < k && !rc; i++) {
        struct ht *x = &j.t[i];
        graft_gguf_name_to_hf(hh.arch, x->t->name, x->expert, hf, sizeof hf);
        uint64_t ne[2] = {x->rows, x->cols};
        int nd = x->t->n_dims >= 2 ? 2 : 1;
        long id = graft_writer_add_tensor(j.w, hf, strlen(hf), x->out, nd, nd == 2 ? ne : ne + 1, err);
        if (id < 0) rc = (int)id;
        x->id = id;
    }
    if (!rc) rc = graft_writer_layout(j.w, err);
    if (!rc) rc = graft_pool_run(n_threads > 0 ? n_threads : 1, k, conv_one, &j, progress ? graft_progress_draw : NULL, progress, err);
    // side files: config.json, tokenizer.json + tokenizer_config.json, generation_config.json
    if (!rc && !(cfg_text = json_dumps(cfg, JSON_COMPACT | JSON_PRESERVE_ORDER))) rc = nomem(err);
    if (!rc) rc = graft__writer_add_config(j.w, cfg_text, torch_name(dtype), NULL, 0, -1, false, err);
    if (!rc) {
        int trc = graft_gguf_hf_tokenizer(g, &tj, &tcj, err);
        if (trc == GRAFT_E_NOTFOUND) graft_err_clear(err);
        else if (trc) rc = trc, graft__err_prefix(err, label, NULL, 0);
        else if (!(rc = graft_writer_add_file(j.w, "tokenizer.json", tj, strlen(tj), err))) rc = graft_writer_add_file(j.w, "tokenizer_config.json", tcj, strlen(tcj), err);
    }
    json_t *bos = json_object_get(cfg, "bos_token_id"), *eos = json_object_get(cfg, "eos_token_id");
    if (!rc && (bos || eos)) {
        json_t *gc = json_object();
        if (bos) json_object_set(gc, "bos_token_id", bos);
        if (eos) json_object_set(gc, "eos_token_id", eos);
        rc = gc ? add_json_file(j.w, "generation_config.json", gc, err) : nomem(err);
        json_decref(gc);
    }
    if (!rc) rc = graft_writer_commit(j.w, err);
out:
    graft_writer_free(j.w);
    graft__free(j.t), graft__free(tj), graft__free(tcj);
    free(cfg_text);
    json_decref(cfg);
    return rc;
}
