// graft — Hugging Face `tokenizer.json` BPE tokenizers (byte-level GPT-2 / Llama-3 / Qwen2 style, and
// SentencePiece-style with `▁` and byte fallback as Llama-2 / Mistral ship them).
//
// Pipeline, as the `tokenizers` library runs it: added tokens are split off the raw text first
// (leftmost, then longest; lstrip / rstrip / single_word honoured), each remaining part is normalized
// (NFC/NFD/NFKC/NFKD, Lowercase, Prepend, Replace, Strip, Sequence), pre-tokenized (ByteLevel, Split
// with its regex and behaviour, Metaspace, Digits, Sequence) and each piece is encoded by BPE (merge
// ranks, byte_fallback, unk fusing, ignore_merges). Decoding runs the decoder chain (ByteLevel,
// Replace, ByteFallback, Fuse, Strip, Metaspace, Sequence). Anything else is refused when loading,
// naming the component, rather than tokenized differently. docs/eval.md lists the differences.
#ifndef GRAFT_TOKENIZER_H
#define GRAFT_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GRAFT_TOKENIZER_MAX_BYTES (256u << 20)

struct graft_tokenizer;

// Load `DIR/tokenizer.json` (plus `tokenizer_config.json` and `config.json` for BOS, when present);
// `DIR` may also be a GGUF file, whose tokenizer.ggml.* vocabulary is rebuilt (graft_gguf_hf_tokenizer).
// Errors: GRAFT_E_IO, GRAFT_E_FORMAT (malformed or unsupported), GRAFT_E_NOTFOUND, GRAFT_E_LIMIT.
int  graft_tokenizer_load(const char *dir, struct graft_tokenizer **out, struct graft_err *err);
// From the text of tokenizer.json alone (`name` is used in messages); no BOS unless the
// post-processor template starts with a special token.
int  graft_tokenizer_load_json(const char *json, size_t len, const char *name, struct graft_tokenizer **out,
                               struct graft_err *err);
// From texts already in memory: tokenizer.json, and tokenizer_config.json / config.json (NULL when absent).
int  graft_tokenizer_load_texts(const char *tok_json, size_t len, const char *tokenizer_config, const char *config, const char *name,
                                struct graft_tokenizer **out, struct graft_err *err);
// From an open GGUF file's tokenizer.ggml.* vocabulary (`name` is used in messages); GRAFT_E_NOTFOUND
// when it carries none.
struct graft_gguf;
int  graft_tokenizer_load_gguf(const struct graft_gguf *g, const char *name, struct graft_tokenizer **out, struct graft_err *err);
void graft_tokenizer_free(struct graft_tokenizer *t); // NULL-safe

// Encode UTF-8 text (no BOS added). *ids is malloc'd (free()), *n its length.
// Invalid UTF-8 is GRAFT_E_FORMAT naming the byte offset.
int graft_tokenizer_encode(const struct graft_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                           struct graft_err *err);
// Decode ids to text (special tokens included, as `decode(skip_special_tokens=False)`); *out is
// malloc'd and NUL-terminated.
int graft_tokenizer_decode(const struct graft_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *out_len,
                           struct graft_err *err);

// The BOS id a sequence starts with (tokenizer_config.json's add_bos_token, else the post-processor
// template), or -1 when the tokenizer adds none.
int32_t graft_tokenizer_bos(const struct graft_tokenizer *t);
// One past the largest id (model vocabulary and added tokens).
int32_t graft_tokenizer_n_ids(const struct graft_tokenizer *t);
// Id of a token's exact string, or -1.
int32_t graft_tokenizer_find(const struct graft_tokenizer *t, const char *s, size_t len);
// The vocabulary string of id (as tokenizer.json spells it: "Ġthe", "▁the", "<0x0A>", added tokens'
// content), or NULL for an id with no token; *len its length in bytes.
const char *graft_tokenizer_token(const struct graft_tokenizer *t, int32_t id, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
