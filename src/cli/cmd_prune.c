// graft prune: magnitude, N:M and Wanda pruning, streaming.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char help[] =
    "Usage: graft prune MODEL OUT (--sparsity S [--scope layer|global] | --nm N:M) [--wanda STATS] [options]\n"
    "\n"
    "Zero weights of every 2-D floating tensor (not the input embedding and lm_head unless --embeddings):\n"
    "  --sparsity S          magnitude: exactly ⌊S·n⌋ smallest |w| of each tensor (--scope layer, the default)\n"
    "                        or of all pruned tensors together (--scope global); equal magnitudes at the\n"
    "                        threshold: the lower index is kept. With --wanda: per output row, the ⌊S·in⌋\n"
    "                        lowest scores |w_ij|·√s_j.\n"
    "  --nm N:M              semi-structured: keep N of every M consecutive elements of a row (2:4, 4:8),\n"
    "                        by |w| or by Wanda's score; the row length must be a multiple of M\n"
    "  --wanda STATS         a safetensors file or folder holding, for each pruned weight NAME [out, in],\n"
    "                        a tensor NAME [in] = Σ over calibration tokens of x_j² (docs/prune.md)\n"
    "Prints each pruned tensor's achieved sparsity. Kept weights are copied bit for bit. The output\n"
    "appears atomically, with MODEL's config.json and tokenizer files.\n"
    "\n"
    "Options:\n"
    "  --embeddings         prune the input embedding and lm_head too\n"
    "  --exclude RE         never prune tensors matching this POSIX extended regex (repeatable)\n"
    "  --out-shard-size S   max tensor bytes per shard (default 5G)\n"
    "  --threads N          worker threads (default: number of CPUs)\n"
    "  --dry-run            list the tensors that would be pruned; write nothing\n"
    "  --force              replace OUT if it exists and is not empty\n"
    "  -h, --help           this text\n";

int cmd_prune(int argc, char **argv) {
    static const struct option opts[] = {
        {"sparsity", required_argument, 0, 's'}, {"scope", required_argument, 0, 'S'}, {"nm", required_argument, 0, 'N'},
        {"wanda", required_argument, 0, 'w'}, {"embeddings", no_argument, 0, 'e'}, {"exclude", required_argument, 0, 'x'},
        {"out-shard-size", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, 'n'},
        {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_prune_params p = graft_prune_default_params();
    p.n_threads = graft_n_cpus();
    const char **exc = NULL, *wanda = NULL;
    bool have_s = false;
    int c, rc = GRAFT_EXIT_OK;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 's': ok = cli_float("prune", "--sparsity", optarg, 0.0, 0.999999999, &p.sparsity); have_s = true; break;
        case 'S':
            if (!strcmp(optarg, "global")) p.global = true;
            else if (strcmp(optarg, "layer")) ok = false, cli_usage("prune", "--scope expects layer or global, got '%s'", optarg);
            break;
        case 'N': {
            char tail;
            if (sscanf(optarg, "%d:%d%c", &p.nm_n, &p.nm_m, &tail) != 2 || p.nm_n < 1 || p.nm_m <= p.nm_n || p.nm_m > 4096)
                ok = false, cli_usage("prune", "--nm expects N:M with 1 ≤ N < M ≤ 4096 (e.g. 2:4), got '%s'", optarg);
            break;
        }
        case 'w': wanda = optarg; break;
        case 'e': p.embeddings = true; break;
        case 'x': {
            const char **v = realloc(exc, (p.n_exclude + 1) * sizeof *v);
            if ((ok = v != NULL)) v[p.n_exclude++] = optarg, exc = v;
            break;
        }
        case 'o': ok = cli_size("prune", "--out-shard-size", optarg, &p.max_shard_bytes); break;
        case 't': ok = cli_threads("prune", optarg, &p.n_threads); break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'h': fputs(help, stdout); goto done;
        default: rc = cli_usage("prune", "unknown option"); goto done;
        }
        if (!ok) { rc = GRAFT_EXIT_USAGE; goto done; }
    }
    if (have_s == (p.nm_m != 0)) { rc = cli_usage("prune", "give exactly one of --sparsity and --nm"); goto done; }
    if (p.global && (wanda || p.nm_m)) { rc = cli_usage("prune", "--scope global is for magnitude pruning"); goto done; }
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) { rc = cli_usage("prune", "expected MODEL and OUT"); goto done; }
    p.exclude = exc;
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m = NULL, *st = NULL;
    if (graft_model_open(argv[optind], &m, &err) || (wanda && graft_model_open(wanda, &st, &err))) {
        rc = cli_fail(&err);
        graft_model_close(m);
        goto done;
    }
    p.wanda = st;
    struct graft_progress prog;
    graft_progress_init(&prog, "prune", graft_model_n_bytes(m));
    p.progress = &prog;
    struct graft_prune_report rep = {0};
    double t0 = graft_now();
    int r = graft_prune(m, p.dry_run ? "" : argv[optind + 1], &p, &rep, &err);
    graft_progress_finish(&prog);
    if (r) rc = cli_fail(&err);
    else {
        uint64_t z = 0, n = 0;
        for (size_t i = 0; i < rep.n; i++) {
            z += rep.zeros[i], n += rep.numel[i];
            if (p.dry_run) printf("%s\n", rep.names[i]);
            else printf("%-60s sparsity %.6f (%llu of %llu zero)\n", rep.names[i], (double)rep.zeros[i] / (double)rep.numel[i],
                        (unsigned long long)rep.zeros[i], (unsigned long long)rep.numel[i]);
        }
        if (p.dry_run) fprintf(stderr, "graft: dry run: %zu tensors would be pruned, %zu copied; nothing written\n", rep.n, rep.n_kept);
        else fprintf(stderr, "graft: pruned %zu tensors to sparsity %.6f overall, %zu copied, in %.2fs: %s\n", rep.n, n ? (double)z / (double)n : 0.0,
                     rep.n_kept, graft_now() - t0, argv[optind + 1]);
    }
    graft_prune_report_free(&rep);
    graft_model_close(m), graft_model_close(st);
done:
    free(exc);
    return rc;
}
