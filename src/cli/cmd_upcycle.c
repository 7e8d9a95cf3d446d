// graft upcycle: a dense Llama/Mistral model into a Mixtral-layout mixture of experts.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

static const char help[] =
    "Usage: graft upcycle MODEL OUT --experts E --top-k K [--router-init random|zero] [--router-std S] [--seed N]\n"
    "\n"
    "Sparse upcycling: every layer's MLP (gate_proj, up_proj, down_proj) becomes E experts that are copies\n"
    "of it (Mixtral's w1, w3, w2), with a new router block_sparse_moe.gate.weight [E, hidden]; every other\n"
    "tensor is copied and config.json becomes Mixtral's (num_local_experts E, num_experts_per_tok K).\n"
    "Mixtral renormalises its top-k router weights, so with identical experts the model computes what\n"
    "the dense one did; the experts drift apart only through further training.\n"
    "The random router is N(0, S²) with S = --router-std, else config.json's initializer_range, else 0.02,\n"
    "drawn reproducibly from --seed. Llama and Mistral models (no attention or MLP biases).\n"
    "\n"
    "Options:\n"
    "  --experts E          experts per layer (2…1024, default 8)\n"
    "  --top-k K            experts per token (default 2)\n"
    "  --router-init I      random (default) or zero\n"
    "  --router-std S       standard deviation of the random router\n"
    "  --seed N             seed of the random router (default 0)\n"
    "  --out-shard-size S   max tensor bytes per shard (default 5G)\n"
    "  --threads N          worker threads (default: number of CPUs)\n"
    "  --dry-run            check and report; write nothing\n"
    "  --allow-nonfinite    write NaN / infinite values it computed (with a warning) instead of failing\n"
    "  --force              replace OUT if it exists and is not empty\n"
    "  -h, --help           this text\n";

int cmd_upcycle(int argc, char **argv) {
    static const struct option opts[] = {
        {"experts", required_argument, 0, 'e'}, {"top-k", required_argument, 0, 'k'}, {"router-init", required_argument, 0, 'r'},
        {"router-std", required_argument, 0, 's'}, {"seed", required_argument, 0, 'S'}, {"out-shard-size", required_argument, 0, 'o'},
        {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"allow-nonfinite", no_argument, 0, 1000}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    struct graft_upcycle_params p = graft_upcycle_default_params();
    p.n_threads = graft_n_cpus();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'e': if (!cli_int("upcycle", "--experts", optarg, 2, 1024, &p.experts)) return GRAFT_EXIT_USAGE; break;
        case 'k': if (!cli_int("upcycle", "--top-k", optarg, 1, 1024, &p.top_k)) return GRAFT_EXIT_USAGE; break;
        case 'r':
            if (!strcmp(optarg, "zero")) p.router_zero = true;
            else if (strcmp(optarg, "random")) return cli_usage("upcycle", "--router-init expects random or zero, got '%s'", optarg);
            break;
        case 's': if (!cli_float("upcycle", "--router-std", optarg, 1e-12, 1e6, &p.router_std)) return GRAFT_EXIT_USAGE; break;
        case 'S': if (!graft_parse_u64(optarg, UINT64_MAX, &p.seed)) return cli_usage("upcycle", "--seed expects a whole number, got '%s'", optarg); break;
        case 'o': if (!cli_size("upcycle", "--out-shard-size", optarg, &p.max_shard_bytes)) return GRAFT_EXIT_USAGE; break;
        case 't': if (!cli_threads("upcycle", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 1000: p.writer_flags |= GRAFT_WRITER_ALLOW_NONFINITE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("upcycle", "unknown option");
        }
    }
    if (p.top_k > p.experts) return cli_usage("upcycle", "--top-k %d is more than --experts %d", p.top_k, p.experts);
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) return cli_usage("upcycle", "expected MODEL and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) return cli_fail(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "upcycle", graft_model_n_bytes(m) * (uint64_t)p.experts);
    p.progress = &prog;
    int layers = 0;
    size_t nt = 0;
    double t0 = graft_now();
    int rc = graft_upcycle(m, p.dry_run ? "" : argv[optind + 1], &p, &layers, &nt, &err);
    graft_progress_finish(&prog);
    graft_model_close(m);
    if (rc) return cli_fail(&err);
    if (p.dry_run) fprintf(stderr, "graft: dry run: %d layers would become %d experts each (top %d), %zu tensors; nothing written\n", layers, p.experts, p.top_k, nt);
    else fprintf(stderr, "graft: upcycled %d layers into %d experts each (top %d, %s router), %zu tensors, in %.2fs: %s\n", layers, p.experts, p.top_k,
                 p.router_zero ? "zero" : "random", nt, graft_now() - t0, argv[optind + 1]);
    return GRAFT_EXIT_OK;
}
