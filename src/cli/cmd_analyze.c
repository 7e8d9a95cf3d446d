// graft analyze: how related fine-tuned models are — task-vector norms, cosines, Pearson, distances,
// sign conflicts, top-k overlap and effective ranks, per tensor / layer / model; a table or JSON.
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "graft/analyze.h"

static const char help[] =
    "Usage: graft analyze --base BASE MODEL... [--json] [--per-layer] [--per-tensor] [--density D] [--threads N]\n"
    "\n"
    "Compare the task vectors τ_i = MODEL_i − BASE (up to 16 models; folders, .safetensors or .gguf files)\n"
    "over every tensor they share with the base (same shape; others are counted as skipped):\n"
    "  norm       ‖τ_i‖\n"
    "  cos        τ_i·τ_j / (‖τ_i‖‖τ_j‖);  |cos| is Model Kinship's similarity\n"
    "  pearson    correlation of the entries of τ_i and τ_j\n"
    "  euclid     ‖τ_i − τ_j‖\n"
    "  conflict   entries with opposite signs, among those both models changed\n"
    "  overlap    |top-k(τ_i) ∩ top-k(τ_j)| / max(k_i, k_j), k_i = ⌊d·density⌋ largest |τ_i| per tensor\n"
    "             among the entries τ_i changed (density 0.2)\n"
    "  erank      effective rank of each 2-D τ_i: exp(entropy of its normalised singular values),\n"
    "             averaged over the matrices τ_i changes\n"
    "Layer and model figures add up the per-tensor sums (cosines are of the concatenated vectors).\n"
    "Tensors are read one at a time per worker (memory: threads × one tensor of every model, in f32).\n"
    "\n"
    "Options:\n"
    "  --base BASE     the common base model (required)\n"
    "  --per-layer     also one block per layer (\"layers.N.\" in the tensor name)\n"
    "  --per-tensor    also one block per tensor (the table; --json always lists tensors)\n"
    "  --density D     top-k fraction for the overlap (default 0.2)\n"
    "  --json          one JSON object: {\"models\":[…], \"model\":{…}, \"layers\":[…], \"tensors\":[…]}; each\n"
    "                  block has n_elem, norm[i], erank[i] and pairs [{\"a\":i,\"b\":j,\"cos\":…,\"abs_cos\":…,\n"
    "                  \"pearson\":…, \"euclid\":…, \"conflict\":…, \"overlap\":…}] (null when undefined)\n"
    "  --threads N     worker threads (default: number of CPUs)\n"
    "  -h, --help      this text\n";

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *block(const struct graft_analyze_sums *s, int n) {
    json_t *o = json_object(), *nr = json_array(), *er = json_array(), *pairs = json_array();
    json_object_set_new(o, "n_elem", json_integer((json_int_t)s->n_elem));
    json_object_set_new(o, "n_tensors", json_integer((json_int_t)s->n_tensors));
    for (int i = 0; i < n; i++) json_array_append_new(nr, num(graft_analyze_norm(s, i))), json_array_append_new(er, num(graft_analyze_erank(s, i)));
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double c = graft_analyze_cos(s, n, i, j);
            json_array_append_new(pairs, json_pack("{s:i, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "a", i, "b", j, "cos", num(c), "abs_cos", num(fabs(c)),
                                                   "pearson", num(graft_analyze_pearson(s, n, i, j)), "euclid", num(graft_analyze_euclid(s, n, i, j)),
                                                   "conflict", num(graft_analyze_conflict(s, n, i, j)), "overlap", num(graft_analyze_overlap(s, n, i, j))));
        }
    json_object_set_new(o, "norm", nr), json_object_set_new(o, "erank", er), json_object_set_new(o, "pairs", pairs);
    return o;
}

static void table(const char *title, const struct graft_analyze_sums *s, int n) {
    printf("%s  (%llu tensors, %llu values)\n", title, (unsigned long long)s->n_tensors, (unsigned long long)s->n_elem);
    printf("  model  %12s %8s\n", "norm", "erank");
    for (int i = 0; i < n; i++) printf("  %-5c  %12.6g %8.2f\n", 'A' + i, graft_analyze_norm(s, i), graft_analyze_erank(s, i));
    if (n > 1) printf("  pair   %9s %9s %9s %12s %9s %9s\n", "cos", "|cos|", "pearson", "euclid", "conflict", "overlap");
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double c = graft_analyze_cos(s, n, i, j);
            printf("  %c-%c    %9.5f %9.5f %9.5f %12.6g %9.4f %9.4f\n", 'A' + i, 'A' + j, c, fabs(c), graft_analyze_pearson(s, n, i, j),
                   graft_analyze_euclid(s, n, i, j), graft_analyze_conflict(s, n, i, j), graft_analyze_overlap(s, n, i, j));
        }
}

int cmd_analyze(int argc, char **argv) {
    static const struct option opts[] = {{"base", required_argument, 0, 'B'}, {"json", no_argument, 0, 'j'}, {"per-layer", no_argument, 0, 'L'},
                                         {"per-tensor", no_argument, 0, 'T'}, {"density", required_argument, 0, 'd'}, {"threads", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *base_path = NULL;
    bool as_json = false, per_layer = false, per_tensor = false;
    struct graft_analyze_params p = {.n_threads = graft_n_cpus(), .density = 0.2};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'B': base_path = optarg; break;
        case 'j': as_json = true; break;
        case 'L': per_layer = true; break;
        case 'T': per_tensor = true; break;
        case 'd': if (!cli_float("analyze", "--density", optarg, 1e-9, 1, &p.density)) return GRAFT_EXIT_USAGE; break;
        case 't': if (!cli_threads("analyze", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("analyze", "unknown option");
        }
    }
    if (!base_path) return cli_usage("analyze", "--base BASE is required");
    int n = argc - optind;
    if (n < 1 || n > GRAFT_ANALYZE_MAX_MODELS) return cli_usage("analyze", "expected 1 to %d models besides the base", GRAFT_ANALYZE_MAX_MODELS);
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *base = NULL, *ms[GRAFT_ANALYZE_MAX_MODELS] = {0};
    struct graft_analyze *a = NULL;
    int rc = graft_model_open(base_path, &base, &err);
    for (int i = 0; !rc && i < n; i++) rc = graft_model_open(argv[optind + i], &ms[i], &err);
    struct graft_progress prog;
    graft_progress_init(&prog, "analyze", 0);
    p.progress = &prog;
    if (!rc) rc = graft_analyze_run(base, (const struct graft_model *const *)ms, n, &p, &a, &err);
    graft_progress_finish(&prog);
    if (!rc && as_json) {
        json_t *o = json_object(), *models = json_array(), *layers = json_array(), *tensors = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(models, json_string(argv[optind + i]));
        json_object_set_new(o, "base", json_string(base_path));
        json_object_set_new(o, "models", models);
        json_object_set_new(o, "skipped_tensors", json_integer((json_int_t)a->n_skipped));
        json_object_set_new(o, "model", block(&a->total, n));
        for (int l = 0; l < a->n_layers; l++) {
            json_t *b = block(&a->layers[l], n);
            json_object_set_new(b, "layer", json_integer(l));
            json_array_append_new(layers, b);
        }
        for (size_t t = 0; t < a->n_tensors; t++) {
            json_t *b = block(&a->tensors[t].s, n);
            json_object_set_new(b, "name", json_string(a->tensors[t].name));
            json_array_append_new(tensors, b);
        }
        json_object_set_new(o, "layers", layers), json_object_set_new(o, "tensors", tensors);
        char *s = json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        if (s) puts(s);
        free(s);
        json_decref(o);
    } else if (!rc) {
        printf("base: %s\n", base_path);
        for (int i = 0; i < n; i++) printf("%c: %s\n", 'A' + i, argv[optind + i]);
        if (a->n_skipped) printf("(%zu tensors skipped: not in every model with the base's shape, or not floating)\n", a->n_skipped);
        printf("\n");
        table("whole model", &a->total, n);
        char title[300];
        for (int l = 0; per_layer && l < a->n_layers; l++) {
            snprintf(title, sizeof title, "\nlayer %d", l);
            table(title, &a->layers[l], n);
        }
        for (size_t t = 0; per_tensor && t < a->n_tensors; t++) {
            snprintf(title, sizeof title, "\n%s", a->tensors[t].name);
            table(title, &a->tensors[t].s, n);
        }
    }
    graft_analyze_free(a);
    graft_model_close(base);
    for (int i = 0; i < n; i++) graft_model_close(ms[i]);
    return rc ? cli_fail(&err) : GRAFT_EXIT_OK;
}
