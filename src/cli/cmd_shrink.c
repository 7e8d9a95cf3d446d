// graft shrink: a smaller dense model by dropping whole decoder layers (depth pruning) or by keeping
// the most important neurons, heads and channels (width pruning).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "graft/shrink.h"
#include "graft/tokenizer.h"

static const char help[] =
    "Usage: graft shrink IN OUT --drop-layers N [--metric angular|block-influence|ppl] --calib TEXT [--ctx C] [--windows W]\n"
    "       graft shrink IN OUT --layers A,B,...\n"
    "       graft shrink IN OUT [--intermediate I] [--heads H] [--hidden D] --calib TEXT [--ctx C] [--windows W]\n"
    "                          [--no-bos] [--threads N] [--json] [--dry-run] [--force]\n"
    "\n"
    "Drop whole decoder layers, chosen from the hidden states of IN (a Llama-family model the evaluator\n"
    "runs) on calibration text tokenized with IN's tokenizer, in windows of C tokens (BOS first):\n"
    "  angular          (default) the N consecutive layers whose input and output are closest: the mean\n"
    "                   over windows of arccos(cos(h_l, h_{l+N})) / π at the last token (Gromov et al.)\n"
    "  block-influence  the N layers of lowest 1 − mean cos(h_i, h_{i+1}) over every token (ShortGPT)\n"
    "  ppl              greedy: N rounds, each dropping the layer whose removal leaves the lowest mean NLL\n"
    "                   on the calibration windows (layers × N evaluations; --budget caps them)\n"
    "or the named layers (--layers). OUT keeps every other tensor, the layers renumbered; config.json gets\n"
    "num_hidden_layers and per-layer lists (layer_types) shortened. Prints the metric per candidate and\n"
    "the layers dropped (--json as JSON).\n"
    "\n"
    "Width pruning keeps, by Minitron's activation importance on the calibration windows (per window the\n"
    "mean over its tokens, then the root mean square over windows), the I FFN neurons of each layer with\n"
    "the largest |down_proj input|, the H query heads per layer (whole key/value groups: H a multiple of\n"
    "heads / kv heads; a group ranks by its heads' summed output norms) and the D embedding channels with\n"
    "the largest |RMSNorm output| summed over the layers' norms. Every affected tensor is sliced\n"
    "(q/k/v/o per head, gate/up rows and down columns, the channels of embeddings, norms, lm_head and\n"
    "projections; Phi-3's fused projections too) and\n"
    "config.json updated (intermediate_size, num_attention_heads, num_key_value_heads, hidden_size,\n"
    "head_dim). With fewer channels each norm's gain is multiplied by √(hidden / D) and rms_norm_eps by\n"
    "hidden / D: the output computes what IN computes with the removed units zeroed. Prints the sizes and parameter counts (--json: also\n"
    "every importance and the kept indices).\n"
    "\n"
    "Options:\n"
    "  --drop-layers N   layers to drop (with a metric)\n"
    "  --metric M        angular (default), block-influence or ppl\n"
    "  --budget B        ppl: at most B evaluations of the calibration windows (default: no limit)\n"
    "  --calib TEXT      calibration text (UTF-8)\n"
    "  --layers A,B,...  drop these layers (0-based); no calibration\n"
    "  --intermediate I  FFN neurons to keep in each layer\n"
    "  --heads H         attention heads to keep in each layer\n"
    "  --hidden D        embedding channels to keep\n"
    "  --ctx C           tokens per window (default 256)\n"
    "  --windows W       at most W windows (default 32)\n"
    "  --no-bos          no BOS at the start of each window\n"
    "  --threads N       threads of the forward pass (default: number of CPUs)\n"
    "  --json            the report as JSON on stdout\n"
    "  --dry-run         measure and report; write nothing\n"
    "  --force           replace OUT if it exists and is not empty\n"
    "  -h, --help        this text\n";

// A list (nested: one list per layer) of doubles v or indices u.
static void print_list(const char *key, const double *v, const uint32_t *u, size_t n, size_t rows, bool nested) {
    printf(", \"%s\": [", key);
    for (size_t r = 0; r < rows; r++) {
        printf("%s%s", r ? ", " : "", nested ? "[" : "");
        for (size_t i = 0; i < n; i++)
            if (v) printf("%s%.9g", i ? ", " : "", v[r * n + i]);
            else printf("%s%u", i ? ", " : "", u[r * n + i]);
        printf("%s", nested ? "]" : "");
    }
    printf("]");
}

static void print_width(const struct graft_shrink_report *r, bool json) {
    size_t L = (size_t)r->n_layers;
    if (!json) {
        printf("intermediate %d → %d per layer, heads %d → %d (key/value %d → %d), hidden %d → %d\n", r->ffn, r->ffn_kept, r->heads, r->heads_kept,
               r->kv_heads, r->kv_kept, r->hidden, r->hidden_kept);
        printf("parameters %llu → %llu (%.1f %%), importances over %llu tokens in %d windows\n", (unsigned long long)r->params,
               (unsigned long long)r->params_kept, r->params ? 100.0 * (double)r->params_kept / (double)r->params : 0.0, (unsigned long long)r->tokens, r->windows);
        return;
    }
    printf("{\"layers\": %d, \"windows\": %d, \"tokens\": %llu, \"params\": %llu, \"params_kept\": %llu", r->n_layers, r->windows,
           (unsigned long long)r->tokens, (unsigned long long)r->params, (unsigned long long)r->params_kept);
    printf(", \"intermediate\": [%d, %d], \"heads\": [%d, %d], \"kv_heads\": [%d, %d], \"hidden\": [%d, %d]", r->ffn, r->ffn_kept, r->heads,
           r->heads_kept, r->kv_heads, r->kv_kept, r->hidden, r->hidden_kept);
    print_list("ffn_importance", r->ffn_imp, NULL, (size_t)r->ffn, L, true);
    print_list("head_importance", r->head_imp, NULL, (size_t)r->heads, L, true);
    print_list("hidden_importance", r->hidden_imp, NULL, (size_t)r->hidden, 1, false);
    if (r->ffn_keep) print_list("ffn_kept", NULL, r->ffn_keep, (size_t)r->ffn_kept, L, true);
    if (r->group_keep) print_list("groups_kept", NULL, r->group_keep, (size_t)r->kv_kept, L, true);
    if (r->hidden_keep) print_list("hidden_kept", NULL, r->hidden_keep, (size_t)r->hidden_kept, 1, false);
    printf("}\n");
}

int cmd_shrink(int argc, char **argv) {
    static const struct option opts[] = {{"drop-layers", required_argument, 0, 'd'}, {"metric", required_argument, 0, 'm'}, {"calib", required_argument, 0, 'c'},
                                         {"layers", required_argument, 0, 'l'}, {"ctx", required_argument, 0, 'x'}, {"windows", required_argument, 0, 'w'},
                                         {"no-bos", no_argument, 0, 'B'}, {"intermediate", required_argument, 0, 'I'},
                                         {"heads", required_argument, 0, 'H'}, {"hidden", required_argument, 0, 'D'}, {"budget", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
                                         {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_shrink_params p = graft_shrink_default_params();
    p.n_threads = graft_n_cpus();
    const char *calib = NULL;
    bool json = false, no_bos = false, have_drop = false;
    int *layers = NULL, c, rc = GRAFT_EXIT_OK;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'd': ok = cli_int("shrink", "--drop-layers", optarg, 1, 4095, &p.drop), have_drop = true; break;
        case 'm':
            if (!strcmp(optarg, "angular")) p.metric = GRAFT_DEPTH_ANGULAR;
            else if (!strcmp(optarg, "block-influence")) p.metric = GRAFT_DEPTH_BLOCK_INFLUENCE;
            else if (!strcmp(optarg, "ppl")) p.metric = GRAFT_DEPTH_PPL;
            else { rc = cli_usage("shrink", "--metric expects angular, block-influence or ppl, got '%s'", optarg); goto done; }
            break;
        case 'c': calib = optarg; break;
        case 'l':
            for (char *s = optarg; *s;) {
                char *end;
                long v = strtol(s, &end, 10);
                if (end == s || v < 0 || v > 4095 || (*end && *end != ',')) { rc = cli_usage("shrink", "--layers expects A,B,... (layer numbers), got '%s'", optarg); goto done; }
                int *nl = realloc(layers, (p.n_layers + 1) * sizeof *nl);
                if (!nl) { rc = cli_usage("shrink", "out of memory"); goto done; }
                layers = nl, layers[p.n_layers++] = (int)v;
                s = *end ? end + 1 : end;
            }
            break;
        case 'x': ok = cli_int("shrink", "--ctx", optarg, 2, 1 << 20, &p.ctx); break;
        case 'w': ok = cli_int("shrink", "--windows", optarg, 1, 1 << 20, &p.windows); break;
        case 'B': no_bos = true; break;
        case 'I': ok = cli_int("shrink", "--intermediate", optarg, 1, 1 << 26, &p.intermediate); break;
        case 'H': ok = cli_int("shrink", "--heads", optarg, 1, 1 << 20, &p.heads); break;
        case 'D': ok = cli_int("shrink", "--hidden", optarg, 1, 1 << 24, &p.hidden); break;
        case 'b': ok = cli_int("shrink", "--budget", optarg, 1, 1 << 30, &p.budget); break;
        case 't': ok = cli_threads("shrink", optarg, &p.n_threads); break;
        case 'j': json = true; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'h': fputs(help, stdout); goto done;
        default: rc = cli_usage("shrink", "unknown option"); goto done;
        }
        if (!ok) { rc = GRAFT_EXIT_USAGE; goto done; }
    }
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) { rc = cli_usage("shrink", "expected IN and OUT"); goto done; }
    bool width = p.intermediate || p.heads || p.hidden;
    if (width && (have_drop || p.n_layers)) { rc = cli_usage("shrink", "prune depth (--drop-layers, --layers) or width (--intermediate, --heads, --hidden), not both at once"); goto done; }
    if (width && !calib) { rc = cli_usage("shrink", "width pruning needs --calib TEXT"); goto done; }
    if (!width && !!p.n_layers == (have_drop || calib)) { rc = cli_usage("shrink", "give --drop-layers N with --calib TEXT, or --layers A,B,..., or --intermediate / --heads / --hidden with --calib TEXT"); goto done; }
    if (have_drop && !calib) { rc = cli_usage("shrink", "--drop-layers needs --calib TEXT"); goto done; }
    p.layers = layers;
    struct graft_err err;
    graft_err_clear(&err);
    struct cli_calib cc;
    if (cli_calib_open(argv[optind], calib, no_bos, &cc, &err)) {
        rc = cli_fail(&err);
        goto close;
    }
    struct graft_shrink_report r = {0};
    if (width) {
        if (graft_shrink_width(cc.m, cc.ids, cc.n, cc.bos, p.dry_run ? "" : argv[optind + 1], &p, &r, &err)) { rc = cli_fail(&err); goto close; }
        print_width(&r, json);
        if (!p.dry_run) fprintf(stderr, "graft: wrote %s\n", argv[optind + 1]);
        graft_shrink_report_free(&r);
        goto close;
    }
    if (graft_shrink_depth(cc.m, cc.ids, cc.n, cc.bos, p.dry_run ? "" : argv[optind + 1], &p, &r, &err)) { rc = cli_fail(&err); goto close; }
    if (json) {
        printf("{\"layers\": %d, \"windows\": %d, \"metric\": \"%s\", \"values\": [", r.n_layers, r.windows,
               p.n_layers ? "none" : p.metric == GRAFT_DEPTH_ANGULAR ? "angular" : p.metric == GRAFT_DEPTH_PPL ? "ppl" : "block-influence");
        for (int i = 0; i < r.n_values; i++) printf("%s%.9g", i ? ", " : "", r.values[i]);
        printf("], \"dropped\": [");
        for (int i = 0; i < r.n_dropped; i++) printf("%s%d", i ? ", " : "", r.dropped[i]);
        printf("]}\n");
    } else {
        for (int i = 0; i < r.n_values; i++)
            printf(p.metric == GRAFT_DEPTH_ANGULAR ? "layers %3d–%-3d angular distance %.5f\n"
                   : p.metric == GRAFT_DEPTH_PPL  ? "layer %3d%.0d removed alone: mean NLL %.5f\n"
                                                  : "layer %3d%.0d block influence %.5f\n", i,
                   p.metric == GRAFT_DEPTH_ANGULAR ? i + p.drop - 1 : 0, r.values[i]);
        printf("dropped:");
        for (int i = 0; i < r.n_dropped; i++) printf(" %d", r.dropped[i]);
        printf(" (%d of %d layers remain)\n", r.n_layers - r.n_dropped, r.n_layers);
    }
    if (!p.dry_run) fprintf(stderr, "graft: wrote %d layers: %s\n", r.n_layers - r.n_dropped, argv[optind + 1]);
    graft_shrink_report_free(&r);
close:
    cli_calib_close(&cc);
done:
    free(layers);
    return rc;
}
