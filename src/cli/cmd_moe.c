// graft moe: mergekit-moe configs (Mixtral output).
#include <getopt.h>
#include <stdio.h>
#include "cli.h"

static const char help[] =
    "Usage: graft moe CONFIG.yml OUT [--seed S] [--threads N] [--out-shard-size S] [--force] [--dry-run] [--allow-nonfinite]\n"
    "                 [--i-understand-this-is-not-useful-without-training] [--no-copy-tokenizer]\n"
    "\n"
    "Build a mixture of experts from a mergekit-moe config: attention, norms and embeddings from base_model;\n"
    "each layer's experts are the MLPs (gate_proj, up_proj, down_proj → w1, w3, w2) of the listed source\n"
    "models, down_proj × residual_scale and + N(0, noise_scale²) when given; the router\n"
    "block_sparse_moe.gate.weight [experts, hidden] comes from gate_mode. Output: Mixtral's layout and\n"
    "config (num_local_experts, num_experts_per_tok = experts_per_token), the base's tokenizer, and\n"
    "mergekit_moe_config.yml. Llama and Mistral inputs.\n"
    "\n"
    "gate_mode: random (N(0, 1)) and uniform_random (U(±1/√hidden)) are drawn from --seed; hidden /\n"
    "hidden_last (each layer's input at the prompt's last token), hidden_avg (its mean over the tokens)\n"
    "and cheap_embed (sum of the prompt's embedding rows) run the base model on BOS + prompt with its\n"
    "tokenizer.json: positive prompts averaged, negative ones subtracted, L2-normalised per layer.\n"
    "With one shared expert (shared_experts) the output is Qwen2-MoE's layout instead (mlp.experts.N.*,\n"
    "mlp.shared_expert.*, mlp.gate, mlp.shared_expert_gate; zero q/k/v biases added for Llama/Mistral\n"
    "bases), as MergeKit's qwen output; Llama, Mistral and Qwen2 inputs.\n"
    "\n"
    "Options:\n"
    "  --seed S             seed of the random router and of noise_scale (default 0)\n"
    "  --threads N          worker threads (default: number of CPUs)\n"
    "  --out-shard-size S   max tensor bytes per shard (default 5G)\n"
    "  --i-understand-this-is-not-useful-without-training   allow every expert to be the same model\n"
    "  --no-copy-tokenizer  do not copy the base's tokenizer files\n"
    "  --dry-run            check the config and inputs; write nothing\n"
    "  --allow-nonfinite    write NaN / infinite values it computed (with a warning) instead of failing\n"
    "  --force              replace OUT if it exists and is not empty\n"
    "  -h, --help           this text\n";

int cmd_moe(int argc, char **argv) {
    static const struct option opts[] = {
        {"seed", required_argument, 0, 's'}, {"threads", required_argument, 0, 't'}, {"out-shard-size", required_argument, 0, 'o'},
        {"i-understand-this-is-not-useful-without-training", no_argument, 0, 'i'}, {"no-copy-tokenizer", no_argument, 0, 'c'},
        {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"allow-nonfinite", no_argument, 0, 1000}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_moe_options o = graft_moe_default_options();
    o.n_threads = graft_n_cpus();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': if (!graft_parse_u64(optarg, UINT64_MAX, &o.seed)) return cli_usage("moe", "--seed expects a whole number, got '%s'", optarg); break;
        case 't': if (!cli_threads("moe", optarg, &o.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'o': if (!cli_size("moe", "--out-shard-size", optarg, &o.max_shard_bytes)) return GRAFT_EXIT_USAGE; break;
        case 'i': o.allow_same_model = true; break;
        case 'c': o.copy_tokenizer = false; break;
        case 'n': o.dry_run = true; break;
        case 'f': o.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 1000: o.writer_flags |= GRAFT_WRITER_ALLOW_NONFINITE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("moe", "unknown option");
        }
    }
    if (argc - optind != 2 && !(o.dry_run && argc - optind == 1)) return cli_usage("moe", "expected CONFIG.yml and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "moe", 0);
    o.progress = &prog;
    int e = 0, l = 0;
    double t0 = graft_now();
    int rc = graft_moe(argv[optind], o.dry_run ? "" : argv[optind + 1], &o, &e, &l, &err);
    graft_progress_finish(&prog);
    if (rc) return cli_fail(&err);
    if (o.dry_run) fprintf(stderr, "graft: dry run: %d layers of %d experts; nothing written\n", l, e);
    else fprintf(stderr, "graft: built %d layers of %d experts in %.2fs: %s\n", l, e, graft_now() - t0, argv[optind + 1]);
    return GRAFT_EXIT_OK;
}
