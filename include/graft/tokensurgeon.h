// graft — tokenizer transplant (mergekit-tokensurgeon): give a model a donor's tokenizer, so that the
// two can be merged or used together for speculative decoding.
//
// The output's vocabulary is the donor's (its embedding rows, ids and tokenizer files). Each donor
// token that the model's vocabulary also holds keeps the model's row (tokens are compared after
// normalisation: the word-start marker "Ġ" or "▁" of each tokenizer, and special tokens by their role
// in tokenizer_config.json: bos_token, eos_token, unk_token, pad_token). Every other token's row is
// approximated:
//   omp      (default) orthogonal matching pursuit in the donor's embedding space: the donor row is
//            approximated by k atoms among the rows of the shared tokens (greedy, largest |correlation|
//            with the residual, least squares on the chosen atoms), and the coefficients are applied to
//            the model's rows of the same tokens (Goddard & Neto, "Training-Free Tokenizer
//            Transplantation via Orthogonal Matching Pursuit", 2025)
//   mean     the mean of the model's rows
//   zero     zeros
//   subword  the mean of the model's rows for the model's tokenization of the token's text
// For an untied lm_head the same is done with the donor's and the model's lm_head rows (the donor's
// tied embedding standing in for a missing lm_head). Rows of donor ids that no token uses are zero.
// config.json: vocab_size and the special-token ids become the donor's; the donor's tokenizer and
// chat-template files are copied; generation_config.json is the model's with the donor's token ids.
#ifndef GRAFT_TOKENSURGEON_H
#define GRAFT_TOKENSURGEON_H

#include <stdbool.h>
#include <stdint.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum graft_tok_approach { GRAFT_TOK_OMP, GRAFT_TOK_MEAN, GRAFT_TOK_ZERO, GRAFT_TOK_SUBWORD };

struct graft_tokensurgeon_params {
    enum graft_tok_approach approach;
    int      k;               // omp: atoms per token (default 64; at most the shared tokens and the donor's width)
    int      n_threads;
    uint64_t max_shard_bytes;
    unsigned writer_flags;
    bool     dry_run;
};
struct graft_tokensurgeon_params graft_tokensurgeon_default_params(void);

struct graft_tokensurgeon_report {
    uint64_t vocab;           // output rows (the donor's embedding rows)
    uint64_t exact;           // donor tokens whose rows come from the model
    uint64_t approximated;    // donor tokens whose rows were approximated
    uint64_t unused;          // donor rows with no token (zero)
    uint64_t shared;          // candidate atoms for omp (shared tokens)
    double   omp_residual;    // omp: mean of ‖donor row − its approximation‖ / ‖donor row‖ over the embedding's tokens
};

// Model and donor are folders with config.json, tokenizer.json and weights.
int graft_tokensurgeon(const char *model_dir, const char *donor_dir, const char *target, const struct graft_tokensurgeon_params *p,
                       struct graft_tokensurgeon_report *rep, struct graft_err *err);

#ifdef __cplusplus
}
#endif
#endif
