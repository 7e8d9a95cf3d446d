// graft apply-lora: merge a PEFT LoRA adapter into its base model (W + s·B·A), streaming.
#include <getopt.h>
#include <stdio.h>
#include "cli.h"
#include "graft/lora.h"

static const char help[] =
    "Usage: graft apply-lora BASE ADAPTER OUT [--scale S] [--out-shard-size S] [--threads N] [--force] [--dry-run]\n"
    "                        [--allow-nonfinite]\n"
    "\n"
    "Write BASE with the LoRA adapter ADAPTER merged in, as PEFT's merge_and_unload does:\n"
    "W' = W + s·B·A for every lora_A / lora_B pair (embeddings: E' = E + s·(B·A)ᵀ; fan_in_fan_out: W' = W + s·(B·A)ᵀ),\n"
    "bias' = bias + s·lora_B.bias, and tensors saved whole (modules_to_save) replace the base's.\n"
    "s = lora_alpha / r (use_rslora: lora_alpha / √r), per module from rank_pattern / alpha_pattern, times --scale.\n"
    "Computed in f32 and rounded once to each tensor's dtype. ADAPTER is a PEFT folder (adapter_config.json +\n"
    "adapter_model.safetensors). OUT is a Hugging Face folder (or one .safetensors file) with BASE's\n"
    "config.json and tokenizer files; it appears atomically.\n"
    "\n"
    "In merge configs, `model: BASE+ADAPTER` (MergeKit's syntax) applies the adapter on the fly.\n"
    "\n"
    "Options:\n"
    "  --scale S            multiply every module's alpha/r by S (default 1)\n"
    "  --allow-nonfinite    write NaN / infinite values the update makes (W + s·B·A overflowing float32 or the\n"
    "                       output dtype); without it they fail the run (exit 1, nothing written). Values\n"
    "                       inherited from a base tensor or factors that hold NaN/Inf are written as they are\n"
    "  --out-shard-size S   max tensor bytes per shard (default 5G)\n"
    "  --threads N          worker threads (default: number of CPUs)\n"
    "  --dry-run            check that the adapter fits BASE and report; write nothing\n"
    "  --force              replace OUT if it exists and is not empty\n"
    "  --no-copy-tokenizer  do not copy config.json and tokenizer files\n"
    "  -h, --help           this text\n";

int cmd_apply_lora(int argc, char **argv) {
    static const struct option opts[] = {
        {"scale", required_argument, 0, 's'}, {"out-shard-size", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'},
        {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"no-copy-tokenizer", no_argument, 0, 'c'},
        {"allow-nonfinite", no_argument, 0, 'N'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_lora_apply_params p = graft_lora_apply_default_params();
    p.n_threads = graft_n_cpus();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': if (!cli_float("apply-lora", "--scale", optarg, -1e6, 1e6, &p.scale)) return GRAFT_EXIT_USAGE; break;
        case 'N': p.allow_nonfinite = true; break;
        case 'o': if (!cli_size("apply-lora", "--out-shard-size", optarg, &p.max_shard_bytes)) return GRAFT_EXIT_USAGE; break;
        case 't': if (!cli_threads("apply-lora", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'c': p.copy_side_files = false; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("apply-lora", "unknown option");
        }
    }
    if (argc - optind != 3 && !(p.dry_run && argc - optind == 2)) return cli_usage("apply-lora", "expected BASE, ADAPTER and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *base;
    if (graft_model_open(argv[optind], &base, &err)) return cli_fail(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "apply-lora", graft_model_n_bytes(base));
    p.progress = &prog;
    size_t nl = 0, nw = 0;
    double t0 = graft_now();
    int rc = graft_lora_apply(base, argv[optind + 1], p.dry_run ? "" : argv[optind + 2], &p, &nl, &nw, &err);
    graft_progress_finish(&prog);
    graft_model_close(base);
    if (rc) return cli_fail(&err);
    if (p.dry_run) fprintf(stderr, "graft: dry run: the adapter fits: %zu LoRA modules, %zu tensors replaced whole; nothing written\n", nl, nw);
    else fprintf(stderr, "graft: applied %zu LoRA modules and %zu whole tensors in %.2fs: %s\n", nl, nw, graft_now() - t0, argv[optind + 2]);
    return GRAFT_EXIT_OK;
}
