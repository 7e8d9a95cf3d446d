// graft extract-lora: a PEFT LoRA adapter from the difference between a fine-tune and its base.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "graft/lora.h"

static const char help[] =
    "Usage: graft extract-lora --base BASE --model FT OUT [options]\n"
    "\n"
    "Write the LoRA adapter that turns BASE into FT (as mergekit-extract-lora): for every 2-D weight,\n"
    "Δ = W_ft − W_base and its truncated SVD U·S·Vᵀ give lora_A = √S·Vᵀ and lora_B = U·√S (lora_alpha = r,\n"
    "so the scale is 1). OUT is a folder with adapter_model.safetensors, adapter_config.json (PEFT) and\n"
    "README.md; it appears atomically. The input embedding and lm_head are saved whole (modules_to_save)\n"
    "unless --embed-lora; 1-D tensors (norms) are saved whole unless --skip-undecomposable. A changed\n"
    "bias is saved as lora_B.bias. The SVD is exact (Gram matrix eigendecomposition in double, LAPACK), or\n"
    "with --svd randomized a range finder (Halko, Martinsson & Tropp): R + P Gaussian test vectors, Q\n"
    "subspace iterations, the exact SVD of the projection; much faster on large matrices, within a hair of\n"
    "the exact error when the spectrum decays (the printed error is exact for the factors written).\n"
    "Prints one line per module: name, kind, shape, rank, relative error ‖Δ − B·A‖_F / ‖Δ‖_F.\n"
    "\n"
    "Options:\n"
    "  --base BASE            the base model (folder or .safetensors) (required)\n"
    "  --model FT             the fine-tuned model (required)\n"
    "  --rank R, --max-rank R keep at most R components per module (default 128)\n"
    "  --energy E             keep the fewest components holding fraction E of ‖Δ‖² (0 < E ≤ 1; capped by --rank)\n"
    "  --sv-epsilon X         drop singular values ≤ X\n"
    "  --svd exact|randomized the SVD route (default exact); randomized keeps exactly --rank components\n"
    "                         (matrices whose short side is at most rank + oversample take the exact route)\n"
    "  --oversample P         randomized: extra test vectors (default 10)\n"
    "  --power-iters Q        randomized: subspace iterations (default 2)\n"
    "  --seed S               randomized: seed of the test vectors (default 0)\n"
    "  --no-distribute-scale  A = S·Vᵀ, B = U (instead of √S on both)\n"
    "  --embed-lora           low-rank factors for the embedding and lm_head too (off when the vocabulary grew)\n"
    "  --save-module NAME     save this module whole (repeatable; a module name or its last components)\n"
    "  --include RE           only modules matching this POSIX extended regex (repeatable)\n"
    "  --exclude RE           never modules matching this regex (repeatable; wins over --include)\n"
    "  --skip-undecomposable  leave 1-D and ≥3-D tensors out instead of saving them whole\n"
    "  --threads N            modules decomposed in parallel (default: number of CPUs)\n"
    "  --dry-run              print the plan (modules, kinds, shapes, rank caps); write nothing\n"
    "  --json                 the per-module report as JSON on stdout\n"
    "  --force                replace OUT if it exists and is not empty\n"
    "  -h, --help             this text\n";

static bool push(const char ***v, size_t *n, const char *s) {
    const char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) return false;
    nv[(*n)++] = s, *v = nv;
    return true;
}

// A JSON string literal (module names come from the checkpoint: escape what JSON needs).
static void json_str(const char *v) {
    putchar('"');
    for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
        if (*c == '"' || *c == '\\') printf("\\%c", *c);
        else if (*c < 0x20) printf("\\u%04x", *c);
        else putchar(*c);
    }
    putchar('"');
}

static const char *kind_name(enum graft_lora_kind k) {
    return k == GRAFT_LORA_WHOLE ? "whole" : k == GRAFT_LORA_EMBEDDING ? "embedding" : "lora";
}

void cli_lora_report(const struct graft_lora_report *rep, bool json, size_t *n_lora, size_t *n_whole, double *worst) {
    if (json) printf("{\"modules\": [");
    for (size_t i = 0; i < rep->n; i++) {
        const struct graft_lora_module *m = &rep->mods[i];
        if (m->kind == GRAFT_LORA_WHOLE) (*n_whole)++;
        else (*n_lora)++, *worst = m->rel_error > *worst ? m->rel_error : *worst;
        if (json) {
            printf("%s\n  {\"name\": ", i ? "," : "");
            json_str(m->name);
            printf(", \"kind\": \"%s\", \"shape\": [%llu, %llu], \"rank\": %d, \"rel_error\": %.9g}", kind_name(m->kind),
                   (unsigned long long)m->rows, (unsigned long long)m->cols, m->rank, m->rel_error < 0 ? 0.0 : m->rel_error);
        }
        else if (m->kind == GRAFT_LORA_WHOLE)
            printf("%-60s %-9s [%llu, %llu]  saved whole\n", m->name, kind_name(m->kind), (unsigned long long)m->rows, (unsigned long long)m->cols);
        else if (m->rel_error < 0)
            printf("%-60s %-9s [%llu, %llu]  rank ≤ %d\n", m->name, kind_name(m->kind), (unsigned long long)m->rows, (unsigned long long)m->cols, m->rank);
        else
            printf("%-60s %-9s [%llu, %llu]  rank %d  rel. error %.4g\n", m->name, kind_name(m->kind), (unsigned long long)m->rows,
                   (unsigned long long)m->cols, m->rank, m->rel_error);
    }
    if (json) printf("\n]");
}

int cmd_extract_lora(int argc, char **argv) {
    static const struct option opts[] = {
        {"base", required_argument, 0, 'b'}, {"model", required_argument, 0, 'm'}, {"rank", required_argument, 0, 'r'},
        {"max-rank", required_argument, 0, 'r'}, {"energy", required_argument, 0, 'e'}, {"sv-epsilon", required_argument, 0, 'E'},
        {"no-distribute-scale", no_argument, 0, 'D'}, {"embed-lora", no_argument, 0, 'L'}, {"save-module", required_argument, 0, 'S'},
        {"include", required_argument, 0, 'i'}, {"exclude", required_argument, 0, 'x'}, {"skip-undecomposable", no_argument, 0, 'U'},
        {"threads", required_argument, 0, 't'}, {"dry-run", no_argument, 0, 'n'}, {"json", no_argument, 0, 'j'},
        {"force", no_argument, 0, 'f'}, {"svd", required_argument, 0, 1000}, {"oversample", required_argument, 0, 1001},
        {"power-iters", required_argument, 0, 1002}, {"seed", required_argument, 0, 1003}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_lora_extract_params p = graft_lora_extract_default_params();
    p.n_threads = graft_n_cpus();
    const char *base_path = NULL, *ft_path = NULL, **inc = NULL, **exc = NULL, **save = NULL;
    bool json = false;
    int c, rc = GRAFT_EXIT_OK;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 'b': base_path = optarg; break;
        case 'm': ft_path = optarg; break;
        case 'r': ok = cli_int("extract-lora", "--rank", optarg, 1, 1 << 20, &p.max_rank); break;
        case 'e': ok = cli_float("extract-lora", "--energy", optarg, 1e-9, 1.0, &p.energy); break;
        case 'E': ok = cli_float("extract-lora", "--sv-epsilon", optarg, 0.0, 1e30, &p.sv_epsilon); break;
        case 'D': p.distribute_scale = false; break;
        case 'L': p.embed_lora = true; break;
        case 'S': ok = push(&save, &p.n_save_module, optarg); break;
        case 'i': ok = push(&inc, &p.n_include, optarg); break;
        case 'x': ok = push(&exc, &p.n_exclude, optarg); break;
        case 'U': p.skip_undecomposable = true; break;
        case 't': ok = cli_threads("extract-lora", optarg, &p.n_threads); break;
        case 'n': p.dry_run = true; break;
        case 'j': json = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 1000:
            if (!strcmp(optarg, "randomized")) p.randomized = true;
            else if (!strcmp(optarg, "exact")) p.randomized = false;
            else { rc = cli_usage("extract-lora", "--svd expects exact or randomized, got '%s'", optarg); goto done; }
            break;
        case 1001: ok = cli_int("extract-lora", "--oversample", optarg, 0, 4096, &p.oversample); break;
        case 1002: ok = cli_int("extract-lora", "--power-iters", optarg, 0, 64, &p.power_iters); break;
        case 1003:
            if (!graft_parse_u64(optarg, UINT64_MAX, &p.seed)) { rc = cli_usage("extract-lora", "--seed expects a whole number, got '%s'", optarg); goto done; }
            break;
        case 'h': fputs(help, stdout); goto done;
        default: rc = cli_usage("extract-lora", "unknown option"); goto done;
        }
        if (!ok) { rc = GRAFT_EXIT_USAGE; goto done; }
    }
    if (!base_path || !ft_path) { rc = cli_usage("extract-lora", "--base and --model are required"); goto done; }
    if (argc - optind != 1 && !(p.dry_run && argc == optind)) { rc = cli_usage("extract-lora", "expected one OUT folder"); goto done; }
    p.include = inc, p.exclude = exc, p.save_module = save, p.base_ref = base_path;
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *base = NULL, *ft = NULL;
    if (graft_model_open(base_path, &base, &err) || graft_model_open(ft_path, &ft, &err)) {
        rc = cli_fail(&err);
        graft_model_close(base);
        goto done;
    }
    struct graft_progress prog;
    graft_progress_init(&prog, "extract-lora", graft_model_n_bytes(ft));
    p.progress = &prog;
    struct graft_lora_report rep = {0};
    double t0 = graft_now();
    int r = graft_lora_extract(base, ft, p.dry_run ? "" : argv[optind], &p, &rep, &err);
    graft_progress_finish(&prog);
    if (r) {
        rc = cli_fail(&err);
    } else {
        size_t n_lora = 0, n_whole = 0;
        double worst = 0;
        cli_lora_report(&rep, json, &n_lora, &n_whole, &worst);
        if (json) printf(", \"low_rank\": %zu, \"whole\": %zu, \"skipped\": %zu, \"max_rel_error\": %.9g}\n", n_lora, n_whole, rep.n_skipped, worst);
        if (p.dry_run)
            fprintf(stderr, "graft: dry run: %zu low-rank modules, %zu saved whole, %zu left out; nothing written\n", n_lora, n_whole, rep.n_skipped);
        else
            fprintf(stderr, "graft: extracted %zu low-rank modules (largest relative error %.4g), %zu saved whole, %zu left out, in %.2fs: %s\n",
                    n_lora, worst, n_whole, rep.n_skipped, graft_now() - t0, argv[optind]);
    }
    graft_lora_report_free(&rep);
    graft_model_close(base), graft_model_close(ft);
done:
    free(inc), free(exc), free(save);
    return rc;
}
