// graft reparam: fold BatchNorm, RepVGG branches or weight normalisation into plain weights.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char help[] =
    "Usage: graft reparam MODEL OUT --fold bn|repvgg|mobileone|weight-norm|mup [--eps E] [--pair BN=CONV] [--threads N] [--force] [--dry-run]\n"
    "\n"
    "  --fold bn           a convolution or linear weight W (bias b0) followed by BatchNorm (γ, β, running mean μ,\n"
    "                      running var σ²): W' = W·t per output channel, b' = β + (b0 − μ)·t, t = γ / √(σ² + ε).\n"
    "                      The BN module (it has running_mean) is matched to its conv by name: \"bn\" → \"conv\"\n"
    "                      in its last component (bn1 → conv1), or the previous index of a numbered Sequential\n"
    "                      (features.1 → features.0), if that weight has ≥ 2 axes and the BN's channels as outputs;\n"
    "                      --pair BN_SUFFIX=CONV_SUFFIX adds a rule (not norm=conv for pre-activation nets).\n"
    "  --fold repvgg       RepVGG blocks P.rbr_dense / P.rbr_1x1 (conv + bn) and P.rbr_identity (bn): one 3×3\n"
    "                      kernel and bias P.rbr_reparam.weight / .bias (the 1×1 padded to the centre, the\n"
    "                      identity as a unit kernel), each branch BN-folded first.\n"
    "  --fold mobileone    MobileOne blocks (also FastViT's): P.rbr_conv.N (k×k conv + bn, any number),\n"
    "                      P.rbr_scale (1×1 conv + bn) and P.rbr_skip (bn) into P.reparam_conv.weight / .bias;\n"
    "                      FastViT's large kernels P.lkb_origin + P.small_conv (conv + bn) into P.lkb_reparam.\n"
    "  --fold weight-norm  w = g·v / ‖v‖ for NAME_g / NAME_v or parametrizations.NAME.original0 / original1;\n"
    "                      the norm runs over every axis but the one where g matches v (g of size 1: one norm\n"
    "                      over the whole tensor, PyTorch's dim=None).\n"
    "  --fold mup          a MiniCPM-style μP checkpoint (config.json: scale_emb, scale_depth, dim_model_base)\n"
    "                      becomes a plain LlamaForCausalLM with the same logits: embed_tokens × scale_emb,\n"
    "                      o_proj and down_proj × scale_depth/√layers, lm_head × dim_model_base/hidden (a tied\n"
    "                      head becomes its own tensor); scaled in f32, rounded once to each tensor's dtype.\n"
    "Computed in double, written in each tensor's dtype; other tensors are copied. Exact in eval mode\n"
    "(running statistics) with zero padding. The output appears atomically.\n"
    "\n"
    "Options:\n"
    "  --eps E       BatchNorm epsilon (default 1e-5, PyTorch's; checkpoints do not store it)\n"
    "  --pair R      an extra naming rule BN_SUFFIX=CONV_SUFFIX (repeatable)\n"
    "  --threads N   worker threads (default: number of CPUs)\n"
    "  --dry-run     count the folds; write nothing\n"
    "  --force       replace OUT if it exists and is not empty\n"
    "  -h, --help    this text\n";

int cmd_reparam(int argc, char **argv) {
    static const struct option opts[] = {
        {"fold", required_argument, 0, 'F'}, {"eps", required_argument, 0, 'e'}, {"pair", required_argument, 0, 'p'},
        {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    struct graft_reparam_params p = graft_reparam_default_params();
    p.n_threads = graft_n_cpus();
    const char **pairs = NULL;
    bool have_fold = false;
    int c, rc = GRAFT_EXIT_OK;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'F':
            have_fold = true;
            if (!strcmp(optarg, "bn")) p.fold = GRAFT_FOLD_BN;
            else if (!strcmp(optarg, "repvgg")) p.fold = GRAFT_FOLD_REPVGG;
            else if (!strcmp(optarg, "weight-norm")) p.fold = GRAFT_FOLD_WEIGHT_NORM;
            else if (!strcmp(optarg, "mobileone")) p.fold = GRAFT_FOLD_MOBILEONE;
            else if (!strcmp(optarg, "mup")) p.fold = GRAFT_FOLD_MUP;
            else ok = false, cli_usage("reparam", "--fold expects bn, repvgg, mobileone, weight-norm or mup, got '%s'", optarg);
            break;
        case 'e': ok = cli_float("reparam", "--eps", optarg, 1e-30, 1.0, &p.eps); break;
        case 'p': {
            const char **v = realloc(pairs, (p.n_pair + 1) * sizeof *v);
            if ((ok = v && strchr(optarg, '='))) v[p.n_pair++] = optarg, pairs = v;
            else if (v) pairs = v, cli_usage("reparam", "--pair expects BN_SUFFIX=CONV_SUFFIX, got '%s'", optarg);
            break;
        }
        case 't': ok = cli_threads("reparam", optarg, &p.n_threads); break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'h': fputs(help, stdout); goto done;
        default: rc = cli_usage("reparam", "unknown option"); goto done;
        }
        if (!ok) { rc = GRAFT_EXIT_USAGE; goto done; }
    }
    if (!have_fold) { rc = cli_usage("reparam", "--fold bn|repvgg|mobileone|weight-norm is required"); goto done; }
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) { rc = cli_usage("reparam", "expected MODEL and OUT"); goto done; }
    p.pair = pairs;
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) { rc = cli_fail(&err); goto done; }
    size_t n = 0;
    double t0 = graft_now();
    int r = graft_reparam(m, p.dry_run ? "" : argv[optind + 1], &p, &n, &err);
    graft_model_close(m);
    if (r) rc = cli_fail(&err);
    else if (p.dry_run) fprintf(stderr, "graft: dry run: %zu folds; nothing written\n", n);
    else fprintf(stderr, "graft: folded %zu in %.2fs: %s\n", n, graft_now() - t0, argv[optind + 1]);
done:
    free(pairs);
    return rc;
}
