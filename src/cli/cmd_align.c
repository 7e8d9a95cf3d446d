// graft align: permute model B's MLP neurons and attention heads to match model A (Git Re-Basin's
// weight matching), keeping B's function.
#include <getopt.h>
#include <stdio.h>
#include "cli.h"
#include "graft/align.h"

static const char help[] =
    "Usage: graft align MODEL_B --to MODEL_A OUT [--no-mlp] [--no-heads] [--no-residual] [--max-iters N] [--threads N]\n"
    "                   [--json] [--dry-run] [--force]\n"
    "\n"
    "Write MODEL_B with its MLP neurons and attention heads reordered to best match MODEL_A (weight\n"
    "matching, Ainsworth et al.'s Git Re-Basin), so that a linear merge of two independently trained\n"
    "models averages corresponding units. B's function is unchanged: its tensors are only reordered.\n"
    "Per layer, the MLP permutation maximises Σ_i ⟨gate_A[i], gate_B[π(i)]⟩ + ⟨up_A[i], up_B[π(i)]⟩ +\n"
    "⟨down_A[:, i], down_B[:, π(i)]⟩ (Hungarian method, O(intermediate³) per layer); key/value head groups\n"
    "move as whole units (k and v rows plus their best-matched query heads' q rows and o_proj columns).\n"
    "The residual stream's channels are permuted too (embedding and lm_head columns, every norm gain,\n"
    "q/k/v/gate/up columns, o/down rows): the layers and the residual are assigned in turn (coordinate\n"
    "descent) until the residual permutation stops changing; --no-residual keeps it and aligns each layer\n"
    "alone (exact and independent).\n"
    "Llama, Mistral, Qwen2/3 and Gemma 2/3 layouts of the same shapes. Prints per layer the cosine\n"
    "similarity of A's and B's MLP and attention weights before and after, and how many units moved.\n"
    "\n"
    "Options:\n"
    "  --to MODEL_A  the model to match (required)\n"
    "  --no-mlp      leave the MLP neurons in place\n"
    "  --no-heads    leave the attention heads in place\n"
    "  --no-residual leave the residual stream in place\n"
    "  --max-iters N layer passes at most, the residual assigned between them (default 20, at least 2)\n"
    "  --threads N   layers aligned side by side (default: number of CPUs)\n"
    "  --json        the report as JSON on stdout\n"
    "  --dry-run     compute and report; write nothing\n"
    "  --force       replace OUT if it exists and is not empty\n"
    "  -h, --help    this text\n";

int cmd_align(int argc, char **argv) {
    static const struct option opts[] = {{"to", required_argument, 0, 'a'}, {"no-mlp", no_argument, 0, 'M'}, {"no-heads", no_argument, 0, 'H'}, {"no-residual", no_argument, 0, 'R'}, {"max-iters", required_argument, 0, 'i'},
                                         {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'}, {"dry-run", no_argument, 0, 'n'},
                                         {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_align_params p = graft_align_default_params();
    p.n_threads = graft_n_cpus();
    const char *to = NULL;
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'a': to = optarg; break;
        case 'M': p.mlp = false; break;
        case 'H': p.heads = false; break;
        case 'R': p.residual = false; break;
        case 'i': if (!cli_int("align", "--max-iters", optarg, 2, 1000, &p.max_iters)) return GRAFT_EXIT_USAGE; break;
        case 't': if (!cli_threads("align", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'j': json = true; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("align", "unknown option");
        }
    }
    if (!to) return cli_usage("align", "--to MODEL_A is required");
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) return cli_usage("align", "expected MODEL_B and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *a = NULL, *b = NULL;
    if (graft_model_open(to, &a, &err) || graft_model_open(argv[optind], &b, &err)) {
        graft_model_close(a);
        return cli_fail(&err);
    }
    struct graft_align_report rep = {0};
    double t0 = graft_now();
    int rc = graft_align(a, b, p.dry_run ? "" : argv[optind + 1], &p, &rep, &err);
    graft_model_close(a), graft_model_close(b);
    if (rc) return cli_fail(&err);
    double mb = 0, ma = 0, ab = 0, aa = 0;
    if (json) printf("{\"layers\": [");
    for (int l = 0; l < rep.n_layers; l++) {
        const struct graft_align_layer *y = &rep.layers[l];
        mb += y->mlp_before, ma += y->mlp_after, ab += y->attn_before, aa += y->attn_after;
        if (json)
            printf("%s\n  {\"layer\": %d, \"mlp_before\": %.9g, \"mlp_after\": %.9g, \"mlp_moved\": %llu, \"attn_before\": %.9g, \"attn_after\": %.9g, "
                   "\"heads_moved\": %llu}", l ? "," : "", l, y->mlp_before, y->mlp_after, (unsigned long long)y->mlp_moved, y->attn_before, y->attn_after,
                   (unsigned long long)y->heads_moved);
        else
            printf("layer %3d  mlp cosine %.4f → %.4f (%llu neurons moved)  attention %.4f → %.4f (%llu heads moved)\n", l, y->mlp_before, y->mlp_after,
                   (unsigned long long)y->mlp_moved, y->attn_before, y->attn_after, (unsigned long long)y->heads_moved);
    }
    int n = rep.n_layers ? rep.n_layers : 1;
    if (json)
        printf("\n], \"mlp_before\": %.9g, \"mlp_after\": %.9g, \"attn_before\": %.9g, \"attn_after\": %.9g, \"iterations\": %d, \"residual\": %s, \"residual_moved\": %llu}\n",
               mb / n, ma / n, ab / n, aa / n, rep.iterations, p.residual ? "true" : "false", (unsigned long long)rep.residual_moved);
    else if (p.residual)
        printf("residual stream: %llu channels moved; %d coordinate-descent rounds\n", (unsigned long long)rep.residual_moved, rep.iterations);
    if (p.dry_run) fprintf(stderr, "graft: dry run: %d layers aligned; nothing written\n", rep.n_layers);
    else fprintf(stderr, "graft: aligned %d layers in %.2fs (mean MLP cosine %.4f → %.4f): %s\n", rep.n_layers, graft_now() - t0, mb / n, ma / n, argv[optind + 1]);
    graft_align_report_free(&rep);
    return GRAFT_EXIT_OK;
}
