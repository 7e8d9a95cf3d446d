// Shared pieces of the command-line front end: one message shape, documented exit codes, strict
// option values.
#ifndef GRAFT_CLI_H
#define GRAFT_CLI_H
#include <stdbool.h>
#include <stdint.h>
#include "graft/graft.h"
#include "graft/eval.h"

// MPI (dist.c; only build/graft-mpi has it): start/end, the library's handle (NULL for one process),
// and whether this process is a rank other than 0 (which prints no errors, progress or summaries).
void cli_dist_init(int *argc, char ***argv);
void cli_dist_end(int rc);
const struct graft_dist *cli_dist(void);
bool cli_quiet(void);

// Print "graft: error: <msg>" and return the exit code for err->code (nothing printed on MPI ranks
// other than 0).
int cli_fail(const struct graft_err *err);
// Print "graft: error: <msg>" plus a hint to `graft CMD --help`; returns GRAFT_EXIT_USAGE.
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Strict option values; on failure print a usage error and return false.
bool cli_threads(const char *cmd, const char *s, int *out);
bool cli_size(const char *cmd, const char *opt, const char *s, uint64_t *out);
bool cli_int(const char *cmd, const char *opt, const char *s, int min, int max, int *out);
bool cli_float(const char *cmd, const char *opt, const char *s, double min, double max, double *out);
bool cli_dtype(const char *cmd, const char *s, enum graft_dtype *out);
bool cli_matmul(const char *cmd, const char *s, enum graft_matmul *out); // --matmul f32|bf16

// A whole file ("-": standard input), NUL-terminated; NULL when it cannot be read (free()).
char *cli_read_file(const char *path, size_t *len);
// A text file tokenized; errors name the file.
struct graft_tokenizer;
int cli_encode_file(const struct graft_tokenizer *t, const char *path, int32_t **ids, size_t *n, struct graft_err *err);
// A model and, when `calib` is given, that text tokenized with the model's tokenizer (shrink, moefy);
// bos: the tokenizer's BOS id, or −1 with no_bos or without calibration.
struct graft_model;
struct cli_calib { struct graft_model *m; struct graft_tokenizer *tok; int32_t *ids; size_t n; int32_t bos; };
int  cli_calib_open(const char *model, const char *calib, bool no_bos, struct cli_calib *c, struct graft_err *err);
void cli_calib_close(struct cli_calib *c);

// inspect / verify of a GGUF file (gguf_show.c)
int cli_gguf_inspect(const char *path, bool as_json);
int cli_gguf_verify(const char *path);

int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_extract_lora(int argc, char **argv);
int cmd_apply_lora(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_dequantize(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_upcycle(int argc, char **argv);
int cmd_reparam(int argc, char **argv);
int cmd_moe(int argc, char **argv);
int cmd_expand(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_evolve(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
// The per-module lines of a LoRA report (or, with json, `{"modules": [...]` left open for the caller's
// other fields); counts low-rank and whole modules and the largest relative error (cmd_extract_lora.c).
struct graft_lora_report;
void cli_lora_report(const struct graft_lora_report *rep, bool json, size_t *n_lora, size_t *n_whole, double *worst);
int cmd_merge_lora(int argc, char **argv);
int cmd_align(int argc, char **argv);
int cmd_tokensurgeon(int argc, char **argv);
int cmd_shrink(int argc, char **argv);
int cmd_moefy(int argc, char **argv);
// Value statistics of tensor i (cmd_verify.c); false for a non-float tensor.
struct graft_model;
struct graft_value_stats;
bool cli_tensor_stats(const struct graft_model *m, size_t i, struct graft_value_stats *s);
#endif
