// graft expand: grow a Llama-family model, preserving its function (or duplicating layers).
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

static const char help[] =
    "Usage: graft expand MODEL OUT [--hidden H] [--intermediate I] [--heads N] [--add-layers N@P] [--duplicate A:B] [options]\n"
    "\n"
    "Function-preserving growth (Gesmundo & Maile 2023) of Llama, Mistral and Qwen2 models:\n"
    "  --hidden H         wider residual stream: embeddings gain zero columns, q/k/v/gate/up/lm_head gain\n"
    "                     random input columns, o_proj/down_proj zero output rows, every RMSNorm gain g\n"
    "                     becomes g·√(h/H) with zero new entries (head_dim is kept; RoPE unchanged)\n"
    "  --intermediate I   wider MLP: gate/up gain random rows, down_proj zero columns\n"
    "  --heads N          more attention heads of the same head_dim: new q rows (and k/v heads for\n"
    "                     multi-head attention) random, o_proj zero columns; with grouped KV heads N must\n"
    "                     be a multiple of their count and old heads are reordered to keep their KV head\n"
    "  --add-layers N@P   N new blocks before layer P (0 … layers): copies of the neighbouring block with\n"
    "                     o_proj and down_proj zero, so each computes the identity; repeatable (positions\n"
    "                     count the input's layers)\n"
    "  --duplicate A:B    depth up-scaling (SOLAR-style): layers A…B−1 repeated after B−1. NOT function\n"
    "                     preserving: for continued training\n"
    "The model computes what it did before (up to float rounding) after every transformation but\n"
    "--duplicate. Layers are renumbered, config.json updated. New random weights: N(0, σ²), σ =\n"
    "--init-std, else initializer_range, else 0.02, from --seed.\n"
    "\n"
    "Options:\n"
    "  --init-std S         σ of the new random weights\n"
    "  --seed N             seed of the new random weights (default 0)\n"
    "  --out-shard-size S   max tensor bytes per shard (default 5G)\n"
    "  --threads N          worker threads (default: number of CPUs)\n"
    "  --dry-run            check and report; write nothing\n"
    "  --allow-nonfinite    write NaN / infinite values it computed (with a warning) instead of failing\n"
    "  --force              replace OUT if it exists and is not empty\n"
    "  -h, --help           this text\n";

int cmd_expand(int argc, char **argv) {
    static const struct option opts[] = {
        {"hidden", required_argument, 0, 'H'}, {"intermediate", required_argument, 0, 'I'}, {"heads", required_argument, 0, 'N'}, {"add-layers", required_argument, 0, 'a'},
        {"duplicate", required_argument, 0, 'd'}, {"init-std", required_argument, 0, 's'}, {"seed", required_argument, 0, 'S'},
        {"out-shard-size", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, 'n'},
        {"force", no_argument, 0, 'f'}, {"allow-nonfinite", no_argument, 0, 1000}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_expand_params p = graft_expand_default_params();
    p.n_threads = graft_n_cpus();
    int c;
    char tail;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'H': if (!cli_int("expand", "--hidden", optarg, 1, 1 << 24, &p.hidden)) return GRAFT_EXIT_USAGE; break;
        case 'I': if (!cli_int("expand", "--intermediate", optarg, 1, 1 << 24, &p.intermediate)) return GRAFT_EXIT_USAGE; break;
        case 'N': if (!cli_int("expand", "--heads", optarg, 1, 1 << 16, &p.heads)) return GRAFT_EXIT_USAGE; break;
        case 'a':
            if (p.n_adds == GRAFT_EXPAND_MAX_ADDS) return cli_usage("expand", "at most %d --add-layers", GRAFT_EXPAND_MAX_ADDS);
            if (sscanf(optarg, "%d@%d%c", &p.add_n[p.n_adds], &p.add_at[p.n_adds], &tail) != 2 || p.add_n[p.n_adds] < 1 || p.add_n[p.n_adds] > 4096 ||
                p.add_at[p.n_adds] < 0)
                return cli_usage("expand", "--add-layers expects N@P (N new blocks before layer P), got '%s'", optarg);
            p.n_adds++;
            break;
        case 'd':
            if (sscanf(optarg, "%d:%d%c", &p.dup_a, &p.dup_b, &tail) != 2 || p.dup_a < 0 || p.dup_b <= p.dup_a)
                return cli_usage("expand", "--duplicate expects A:B with 0 ≤ A < B, got '%s'", optarg);
            break;
        case 's': if (!cli_float("expand", "--init-std", optarg, 1e-12, 1e3, &p.init_std)) return GRAFT_EXIT_USAGE; break;
        case 'S': if (!graft_parse_u64(optarg, UINT64_MAX, &p.seed)) return cli_usage("expand", "--seed expects a whole number, got '%s'", optarg); break;
        case 'o': if (!cli_size("expand", "--out-shard-size", optarg, &p.max_shard_bytes)) return GRAFT_EXIT_USAGE; break;
        case 't': if (!cli_threads("expand", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 1000: p.writer_flags |= GRAFT_WRITER_ALLOW_NONFINITE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("expand", "unknown option");
        }
    }
    if (!p.hidden && !p.intermediate && !p.heads && !p.n_adds && !p.dup_b)
        return cli_usage("expand", "nothing to do: give --hidden, --intermediate, --heads, --add-layers or --duplicate");
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) return cli_usage("expand", "expected MODEL and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) return cli_fail(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "expand", graft_model_n_bytes(m));
    p.progress = &prog;
    int nl = 0;
    double t0 = graft_now();
    int rc = graft_expand(m, p.dry_run ? "" : argv[optind + 1], &p, &nl, &err);
    graft_progress_finish(&prog);
    graft_model_close(m);
    if (rc) return cli_fail(&err);
    if (p.dry_run) fprintf(stderr, "graft: dry run: the expansion fits (%d layers); nothing written\n", nl);
    else fprintf(stderr, "graft: expanded to %d layers in %.2fs: %s\n", nl, graft_now() - t0, argv[optind + 1]);
    return GRAFT_EXIT_OK;
}
