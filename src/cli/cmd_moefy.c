// graft moefy: a dense model's FFNs split into experts of a Mixtral-layout MoE (MoEfication).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "graft/moefy.h"
#include "graft/tokenizer.h"

static const char help[] =
    "Usage: graft moefy IN OUT --experts E --top-k K [--calib TEXT] [--ctx C] [--windows W] [--max-tokens N]\n"
    "                          [--iters N] [--router-range R] [--seed S] [--no-bos] [--threads N] [--json] [--dry-run] [--force]\n"
    "\n"
    "MoEfication (Zhang et al. 2022): split each FFN of IN (a dense Llama or Mistral model) into E experts\n"
    "of intermediate_size / E neurons each and write a Mixtral-layout model that runs K of them per token.\n"
    "The groups come from balanced k-means (k-means++ seeded by --seed, every group the same size) on\n"
    "the neurons' unit-normalised gate_proj and up_proj rows, or with --calib on their |activation| over\n"
    "the first N calibration tokens (co-activation). The router's row e is the mean of group e's gate_proj\n"
    "rows, or with --calib the least-squares fit of the MLP input to the groups' activation norms. It is\n"
    "scaled so its logits stay within ±R (on the calibration tokens, else 4σ of an estimate): the softmax\n"
    "then only ranks the experts, the K chosen get weights within e^(±2R) of 1/K, and each expert's\n"
    "down_proj is multiplied by K, so the MoE adds the chosen experts' outputs as MoEfication does; with\n"
    "K = E it computes the dense FFN. Prints each layer's k-means objective (--json: also the groups).\n"
    "\n"
    "Options:\n"
    "  --experts E       experts per layer (divides intermediate_size)\n"
    "  --top-k K         experts per token (num_experts_per_tok)\n"
    "  --calib TEXT      calibration text (UTF-8): co-activation groups and a fitted router\n"
    "  --ctx C           tokens per calibration window (default 256)\n"
    "  --windows W       at most W windows (default 32)\n"
    "  --max-tokens N    calibration tokens kept per layer (default 1024; memory: layers × N × (hidden +\n"
    "                    intermediate) floats)\n"
    "  --iters N         k-means iterations at most (default 50)\n"
    "  --router-range R  largest router logit (default 1e-5)\n"
    "  --seed S          k-means++ seed (default 0)\n"
    "  --no-bos          no BOS at the start of each window\n"
    "  --threads N       threads (default: number of CPUs); the output does not depend on it\n"
    "  --json            the report as JSON on stdout\n"
    "  --dry-run         cluster and report; write nothing\n"
    "  --force           replace OUT if it exists and is not empty\n"
    "  -h, --help        this text\n";

int cmd_moefy(int argc, char **argv) {
    static const struct option opts[] = {{"experts", required_argument, 0, 'e'}, {"top-k", required_argument, 0, 'k'}, {"calib", required_argument, 0, 'c'},
                                         {"ctx", required_argument, 0, 'x'}, {"windows", required_argument, 0, 'w'}, {"max-tokens", required_argument, 0, 'M'},
                                         {"iters", required_argument, 0, 'i'}, {"router-range", required_argument, 0, 'r'}, {"seed", required_argument, 0, 'S'},
                                         {"no-bos", no_argument, 0, 'B'}, {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
                                         {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_moefy_params p = graft_moefy_default_params();
    p.n_threads = graft_n_cpus();
    const char *calib = NULL;
    bool json = false, no_bos = false, have_e = false, have_k = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'e': ok = cli_int("moefy", "--experts", optarg, 2, 1024, &p.experts), have_e = true; break;
        case 'k': ok = cli_int("moefy", "--top-k", optarg, 1, 1024, &p.top_k), have_k = true; break;
        case 'c': calib = optarg; break;
        case 'x': ok = cli_int("moefy", "--ctx", optarg, 2, 1 << 20, &p.ctx); break;
        case 'w': ok = cli_int("moefy", "--windows", optarg, 1, 1 << 20, &p.windows); break;
        case 'M': ok = cli_int("moefy", "--max-tokens", optarg, 2, 1 << 24, &p.max_tokens); break;
        case 'i': ok = cli_int("moefy", "--iters", optarg, 1, 100000, &p.iters); break;
        case 'r': ok = cli_float("moefy", "--router-range", optarg, 1e-30, 1e6, &p.router_range); break;
        case 'S':
            if (!graft_parse_u64(optarg, UINT64_MAX, &p.seed)) return cli_usage("moefy", "--seed expects a whole number, got '%s'", optarg);
            break;
        case 'B': no_bos = true; break;
        case 't': ok = cli_threads("moefy", optarg, &p.n_threads); break;
        case 'j': json = true; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("moefy", "unknown option");
        }
        if (!ok) return GRAFT_EXIT_USAGE;
    }
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) return cli_usage("moefy", "expected IN and OUT");
    if (!have_e || !have_k) return cli_usage("moefy", "give --experts E and --top-k K");
    struct graft_err err;
    graft_err_clear(&err);
    struct cli_calib cc;
    int rc = GRAFT_EXIT_OK;
    struct graft_moefy_report r = {0};
    if (cli_calib_open(argv[optind], calib, no_bos, &cc, &err)) {
        rc = cli_fail(&err);
        goto close;
    }
    if (graft_moefy(cc.m, cc.ids, cc.n, cc.bos, p.dry_run ? "" : argv[optind + 1], &p, &r, &err)) { rc = cli_fail(&err); goto close; }
    if (json) {
        printf("{\"layers\": %d, \"intermediate\": %d, \"experts\": %d, \"top_k\": %d, \"calibrated\": %s, \"tokens\": %llu, \"layer\": [", r.n_layers, r.ffn,
               r.experts, r.top_k, r.calibrated ? "true" : "false", (unsigned long long)r.tokens);
        for (int l = 0; l < r.n_layers; l++) {
            printf("%s{\"objective\": %.9g, \"iters\": %d, \"converged\": %s, \"router_scale\": %.9g, \"router_range\": %.9g, \"expert\": [", l ? ", " : "",
                   r.objective[l], r.iters[l], r.converged[l] ? "true" : "false", r.scale[l], r.range[l]);
            for (int i = 0; i < r.ffn; i++) printf("%s%u", i ? ", " : "", r.expert[(size_t)l * r.ffn + i]);
            printf("]}");
        }
        printf("]}\n");
    } else {
        for (int l = 0; l < r.n_layers; l++)
            printf("layer %3d  k-means objective %.5f after %d iterations%s, router scale %.3g, logits within ±%.3g\n", l, r.objective[l], r.iters[l],
                   r.converged[l] ? "" : " (not converged)", r.scale[l], r.range[l]);
        printf("%d experts of %d neurons per layer, %d per token%s\n", r.experts, r.ffn / r.experts, r.top_k,
               r.calibrated ? " (co-activation groups, fitted router)" : "");
    }
    if (!p.dry_run) fprintf(stderr, "graft: wrote %s\n", argv[optind + 1]);
close:
    graft_moefy_report_free(&r);
    cli_calib_close(&cc);
    return rc;
}
