// graft merge-lora: several PEFT LoRA adapters of one base merged into one adapter (PEFT's
// add_weighted_adapter), without forming full weights.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "graft/lora.h"

static const char help[] =
    "Usage: graft merge-lora CONFIG.yml OUT [--seed S] [--threads N] [--json] [--dry-run] [--force] [--allow-nonfinite]\n"
    "\n"
    "Merge LoRA adapters of one base into one PEFT adapter, as PEFT's add_weighted_adapter does, in\n"
    "adapter space: no full weight matrix is formed (except one module at a time per thread by the\n"
    "*_svd types that prune elements of each update). CONFIG:\n"
    "\n"
    "  base_model: path/to/base            # optional: every module is checked against it\n"
    "  combination: svd                    # (or combination_type) default svd\n"
    "  rank: 16                            # *_svd: output rank (default: the largest input rank)\n"
    "  density: 0.5                        # ties / dare / magnitude_prune types (fraction kept)\n"
    "  majority_sign_method: total         # or frequency (ties types)\n"
    "  svd_clamp: 0.99                     # *_svd: clamp factors to this quantile (optional)\n"
    "  adapters:\n"
    "    - adapter: path/to/adapter1       # (or path:) a PEFT adapter folder\n"
    "      weight: 1.0\n"
    "      density: 0.7                    # optional, per adapter\n"
    "    - path/to/adapter2                # weight 1\n"
    "\n"
    "With sᵢ = each adapter's own scale (lora_alpha / r, or / √r with use_rslora; rank_pattern and\n"
    "alpha_pattern applied) and ΔWᵢ = sᵢ·Bᵢ·Aᵢ, the combinations are:\n"
    "  cat         A = [wᵢsᵢ·Aᵢ] stacked, B = [Bᵢ] side by side: exactly Σ wᵢ·ΔWᵢ, rank Σ rᵢ\n"
    "  svd         Σ wᵢ·ΔWᵢ truncated to the rank (QR of the stacked factors + SVD of their core)\n"
    "  linear      A = Σ ±√|wᵢsᵢ|·Aᵢ, B = Σ √|wᵢsᵢ|·Bᵢ (PEFT's; equal ranks; not Σ wᵢ·ΔWᵢ)\n"
    "  ties, dare_linear, dare_ties, magnitude_prune   that merge of the A and of the B factors\n"
    "              with those weights, after TIES/DARE/magnitude pruning (equal ranks)\n"
    "  ties_svd, dare_linear_svd, dare_ties_svd, magnitude_prune_svd   the pruning merge of the\n"
    "              ΔWᵢ with weights wᵢ, truncated to the rank by an SVD\n"
    "The output has lora_alpha = r (every scale 1), use_rslora false, rank_pattern for modules of\n"
    "other ranks; tensors saved whole (modules_to_save) become base + Σ wᵢ·(Wᵢ − base) with base_model\n"
    "(without it: copied when the adapters agree). A bias (lora_B.bias) becomes Σ wᵢsᵢ·biasᵢ.\n"
    "Prints one line per module: name, kind, shape, rank, relative truncation error.\n"
    "Differences from PEFT: svd types scale each ΔWᵢ once (PEFT twice: peft_svd_scaling: true gives\n"
    "PEFT's), DARE's masks come from graft's generator (--seed), and magnitude ties keep the first.\n"
    "\n"
    "Options:\n"
    "  --seed S      seed of DARE's random masks (default 0)\n"
    "  --threads N   modules merged in parallel (default: number of CPUs)\n"
    "  --json        the per-module report as JSON on stdout\n"
    "  --dry-run     check the config and the adapters, print the plan; write nothing\n"
    "  --force       replace OUT if it exists and is not empty\n"
    "  --allow-nonfinite  write NaN / infinite values the merge made (with a warning) instead of failing\n"
    "  -h, --help    this text\n";

int cmd_merge_lora(int argc, char **argv) {
    static const struct option opts[] = {{"seed", required_argument, 0, 's'}, {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
                                         {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"allow-nonfinite", no_argument, 0, 1000},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_lora_merge_params p = graft_lora_merge_default_params();
    p.n_threads = graft_n_cpus();
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': if (!graft_parse_u64(optarg, UINT64_MAX, &p.seed)) return cli_usage("merge-lora", "--seed expects a whole number, got '%s'", optarg); break;
        case 't': if (!cli_threads("merge-lora", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'j': json = true; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 1000: p.writer_flags |= GRAFT_WRITER_ALLOW_NONFINITE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("merge-lora", "unknown option");
        }
    }
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) return cli_usage("merge-lora", "expected CONFIG.yml and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "merge-lora", 0);
    p.progress = &prog;
    struct graft_lora_report rep = {0};
    double t0 = graft_now();
    int rc = graft_lora_merge_file(argv[optind], p.dry_run ? "" : argv[optind + 1], &p, &rep, &err);
    graft_progress_finish(&prog);
    if (rc) return cli_fail(&err);
    size_t n_lora = 0, n_whole = 0;
    double worst = 0;
    cli_lora_report(&rep, json, &n_lora, &n_whole, &worst);
    if (json) printf(", \"low_rank\": %zu, \"whole\": %zu, \"max_rel_error\": %.9g}\n", n_lora, n_whole, worst);
    if (p.dry_run) fprintf(stderr, "graft: dry run: %zu low-rank modules, %zu whole; nothing written\n", n_lora, n_whole);
    else
        fprintf(stderr, "graft: merged %zu low-rank modules (largest relative truncation error %.4g) and %zu whole in %.2fs: %s\n", n_lora, worst, n_whole,
                graft_now() - t0, argv[optind + 1]);
    graft_lora_report_free(&rep);
    return GRAFT_EXIT_OK;
}
