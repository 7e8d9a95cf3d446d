// graft — command-line entry point: dispatch to one file per subcommand.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

static const char usage[] =
    "graft " GRAFT_VERSION " — operate on neural-network checkpoints (safetensors, PyTorch .bin, Hugging Face folders, GGUF)\n"
    "\n"
    "Usage: graft COMMAND [ARGS...]\n"
    "\n"
    "Commands:\n"
    "  inspect PATH [--json] [--stats] list tensors, parameter count, metadata and config summary\n"
    "  verify PATH [--values]          validate a file or folder completely (exit 0 only if clean)\n"
    "  convert IN OUT [--dtype T]      safetensors output; floating tensors to f32/f16/bf16/f8_e4m3/f8_e5m2\n"
    "  convert IN OUT.gguf [--type T]  a llama.cpp GGUF file (f32/f16/bf16/q8_0/q4_0; Llama, Mistral, Qwen2)\n"
    "  convert IN.gguf OUT [--dtype T] a GGUF file back to a Hugging Face folder (config, tokenizer rebuilt)\n"
    "  synth OUT [options]             write a random LLaMA-layout model, or a fine-tune-like copy\n"
    "  merge CONFIG.yml OUT [options]  merge models from a MergeKit YAML config (OUT.gguf: a GGUF file;\n"
    "                                  opcm: --resume STATE continues a continual merge)\n"
    "  extract-lora --base B --model F OUT   a LoRA adapter from a fine-tune's difference to its base\n"
    "  apply-lora BASE ADAPTER OUT     merge a PEFT LoRA adapter into its base model\n"
    "  merge-lora CONFIG.yml OUT       merge LoRA adapters of one base into one adapter (PEFT's combinations)\n"
    "  align B --to A OUT              permute B's MLP neurons and heads to match A (Git Re-Basin), same function\n"
    "  tokensurgeon MODEL DONOR OUT    give MODEL the donor's tokenizer (new rows by orthogonal matching pursuit)\n"
    "  shrink IN OUT --drop-layers N   drop whole layers by angular distance, block influence or measured loss\n"
    "  shrink IN OUT --intermediate I | --heads H | --hidden D   width pruning by activation importance\n"
    "  moefy IN OUT --experts E --top-k K   split each FFN into experts of a Mixtral-layout MoE (MoEfication)\n"
    "  quantize IN OUT --scheme S      round-to-nearest group-wise int8 / int4 weights (safetensors)\n"
    "  dequantize IN OUT               back to floating point\n"
    "  prune IN OUT --sparsity S | --nm N:M   magnitude (layer or global), N:M and Wanda pruning\n"
    "  upcycle IN OUT --experts E --top-k K   dense Llama/Mistral → Mixtral-layout MoE (sparse upcycling)\n"
    "  reparam IN OUT --fold bn|repvgg|mobileone|weight-norm   fold BatchNorm / RepVGG or MobileOne branches / weight norm\n"
    "  moe CONFIG.yml OUT              mergekit-moe configs: experts from several models (Mixtral layout)\n"
    "  expand IN OUT [--hidden H] [--intermediate I] [--heads N] [--add-layers N@P] [--duplicate A:B]\n"
    "                                  function-preserving growth (--duplicate: depth up-scaling)\n"
    "  eval MODEL --text FILE...       perplexity of a Llama/Mistral/Qwen2 model; --collect gram|act-norm\n"
    "  evolve GENOME.yml --eval TEXT --budget N OUT   CMA-ES search of merge parameters by perplexity\n"
    "  tokenize MODEL [FILE...]        token ids of text with the model's tokenizer.json (or --decode)\n"
    "  analyze --base BASE MODEL...    task-vector norms, cosines, sign conflicts, overlaps, effective ranks\n"
    "\n"
    "PATH / IN is a .safetensors file or a model folder (model.safetensors, or shards listed in\n"
    "model.safetensors.index.json, plus config.json), a PyTorch checkpoint (pytorch_model.bin, or shards\n"
    "listed in pytorch_model.bin.index.json; its pickle is never run: docs/formats-policy.md), or a GGUF\n"
    "file (docs/gguf.md). Run `graft COMMAND --help` for details.\n"
    "\n"
    "Exit codes: 0 ok, 1 runtime or I/O failure, 2 usage error, 3 bad input file, 4 bad config.\n"
    "Errors are one line on stderr: graft: error: <file>: tensor '<name>': <reason>\n";

int cli_fail(const struct graft_err *err) {
    if (!cli_quiet()) fprintf(stderr, "graft: error: %s\n", err->msg[0] ? err->msg : graft_status_str(err->code));
    return graft_status_exit_code(err->code);
}

int cli_usage(const char *cmd, const char *fmt, ...) {
    if (cli_quiet()) return GRAFT_EXIT_USAGE;
    va_list ap;
    va_start(ap, fmt);
    fputs("graft: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'graft %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
    return GRAFT_EXIT_USAGE;
}

bool cli_threads(const char *cmd, const char *s, int *out) { return cli_int(cmd, "--threads", s, 1, 1024, out); }

bool cli_int(const char *cmd, const char *opt, const char *s, int min, int max, int *out) {
    uint64_t v;
    if (!graft_parse_u64(s, (uint64_t)max, &v) || (int64_t)v < min) {
        cli_usage(cmd, "%s expects a whole number from %d to %d, got '%s'", opt, min, max, s);
        return false;
    }
    *out = (int)v;
    return true;
}

bool cli_float(const char *cmd, const char *opt, const char *s, double min, double max, double *out) {
    double v;
    if (!graft_parse_double(s, &v) || v < min || v > max) {
        cli_usage(cmd, "%s expects a number from %g to %g, got '%s'", opt, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool cli_matmul(const char *cmd, const char *s, enum graft_matmul *out) {
    if (strcmp(s, "f32") && strcmp(s, "bf16")) {
        cli_usage(cmd, "--matmul expects f32 or bf16, got '%s'", s);
        return false;
    }
    *out = s[0] == 'b' ? GRAFT_MATMUL_BF16 : GRAFT_MATMUL_F32;
    return true;
}

bool cli_size(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    if (!graft_parse_size(s, out) || *out == 0) {
        cli_usage(cmd, "%s expects a positive byte size such as 5G, 500M, 2GiB or 1000000, got '%s'", opt, s);
        return false;
    }
    return true;
}

bool cli_dtype(const char *cmd, const char *s, enum graft_dtype *out) {
    int t = graft_dtype_from_cli_name(s);
    if (t < 0 || !graft_dtype_is_float_target((enum graft_dtype)t)) {
        cli_usage(cmd, "--dtype expects f32, f16, bf16, f8_e4m3 or f8_e5m2 (or float32, float16, bfloat16), got '%s'", s);
        return false;
    }
    *out = (enum graft_dtype)t;
    return true;
}

static int run(int argc, char **argv);

int main(int argc, char **argv) {
    cli_dist_init(&argc, &argv);
    int rc = run(argc, argv);
    cli_dist_end(rc);
    return rc;
}

static int run(int argc, char **argv) {
    static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
        {"inspect", cmd_inspect}, {"verify", cmd_verify}, {"convert", cmd_convert}, {"synth", cmd_synth}, {"merge", cmd_merge},
        {"extract-lora", cmd_extract_lora}, {"apply-lora", cmd_apply_lora}, {"merge-lora", cmd_merge_lora}, {"align", cmd_align}, {"tokensurgeon", cmd_tokensurgeon}, {"shrink", cmd_shrink}, {"moefy", cmd_moefy},
        {"quantize", cmd_quantize}, {"dequantize", cmd_dequantize}, {"prune", cmd_prune}, {"upcycle", cmd_upcycle}, {"reparam", cmd_reparam}, {"moe", cmd_moe}, {"expand", cmd_expand},
        {"tokenize", cmd_tokenize}, {"eval", cmd_eval}, {"evolve", cmd_evolve}, {"analyze", cmd_analyze},
    };
    if (argc < 2) {
        fputs(usage, stderr);
        return GRAFT_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, stdout);
        return GRAFT_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("graft %s\n", GRAFT_VERSION);
        return GRAFT_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) {
            // every rank would write the same output: only merge divides its work (docs/distributed.md)
            if (cli_dist() && strcmp(argv[1], "merge") && strcmp(argv[1], "eval") && strcmp(argv[1], "evolve"))
                return cli_usage(NULL, "graft %s runs in one process; under mpirun with more than one process only merge, eval and evolve run (docs/distributed.md)", argv[1]);
            return cmds[i].fn(argc - 1, argv + 1);
        }
    return cli_usage(NULL, "unknown command '%s' (commands: inspect, verify, convert, synth, merge, extract-lora, apply-lora, merge-lora, align, tokensurgeon, shrink, moefy, quantize, dequantize, prune, upcycle, reparam, moe, expand, tokenize, eval, evolve, analyze)", argv[1]);
}
