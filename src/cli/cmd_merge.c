// graft merge: run a MergeKit YAML config on local model folders.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cli.h"
#include "graft/gguf.h"
#include "../io/io-impl.h"

static const char help[] =
    "Usage: graft merge CONFIG.yml OUT_DIR [--threads N] [--seed S] [--out-shard-size S] [--dry-run] [--force]\n"
    "                  [--copy-tokenizer|--no-copy-tokenizer] [--allow-crimes] [--allow-nonfinite]\n"
    "                  [--write-model-card|--no-write-model-card] [--format gguf [--type T]] [--lora-space]\n"
    "\n"
    "Merge models as MergeKit's `mergekit-yaml CONFIG OUT` does, from the same YAML: merge_method,\n"
    "base_model, models or slices (layer_range) or modules (per-module models/slices/parameters for\n"
    "vision-language and encoder-decoder models), parameters (scalars, gradients over layers, filtered\n"
    "lists), dtype, out_dtype, tokenizer_source / tokenizer (source, tokens, pad_to_multiple_of),\n"
    "chat_template. Model paths are local folders, absolute or relative to the config file.\n"
    "\n"
    "Methods: linear, slerp, nuslerp, multislerp, karcher, task_arithmetic, ties, dare_linear, dare_ties,\n"
    "breadcrumbs, breadcrumbs_ties, della, della_linear, sce, ram, ramplus_tl, model_stock, nearswap, arcee_fusion,\n"
    "passthrough; beyond MergeKit (docs/merge.md): iso_c, iso_cts (scaling_factor, common_space_fraction),\n"
    "tsv (scaling_factor), pcb (pcb_ratio, clip_ratio, per_tensor, per-model weight); with per-model\n"
    "statistics files: regmean and mats ({gram: PATH}), fisher ({fisher: PATH}); continual: opcm (alpha;\n"
    "--resume).\n"
    "Model paths are folders, .safetensors or .gguf files.\n"
    "\n"
    "Vocabularies: with tokenizer_source base | union | MODEL (or a tokenizer: block) the output vocabulary\n"
    "is built from the models' tokenizer.json files as MergeKit does, and every embedding/lm_head row is\n"
    "taken from each model by token string (missing rows: the token's configured source, else the only\n"
    "model that has it, else the base's, else the mean of those that have it); config.json vocab_size\n"
    "follows. chat_template: auto (most common among the models), alpaca, chatml, exaone, llama3, or a\n"
    "Jinja template.\n"
    "\n"
    "The whole plan (every output tensor, its inputs, resolved parameters, dtype and shard) is made and\n"
    "checked before any computation; a config error is reported at once (exit 4) and nothing is written.\n"
    "Compute is float32; `dtype`/`out_dtype` set the stored precision. The output folder (shards, index,\n"
    "config.json, tokenizer files, README.md, mergekit_config.yml) appears atomically.\n"
    "Parameters must be finite float32 numbers (weights' sum too), else exit 4. Every output value is\n"
    "checked as stored: NaN or infinite values that no input of the tensor holds (an overflow, a\n"
    "normalisation by ~0, float16 overflow beyond ±65504) fail the merge (exit 1, nothing written) unless\n"
    "--allow-nonfinite; values inherited from inputs that hold NaN/Inf are written with a warning.\n"
    "\n"
    "Options:\n"
    "  --threads N               worker threads (default: number of CPUs); output is identical for any N\n"
    "  --seed S                  seed for dare_*/della* (default 0); same seed → same bytes\n"
    "  --out-shard-size S        max tensor bytes per shard: 5G, 500M, 5B (default 5G)\n"
    "  --dry-run                 print the plan and write nothing\n"
    "  --force                   replace OUT_DIR if it exists and is not empty\n"
    "  --no-copy-tokenizer       do not copy tokenizer/generation files from the base (or first) model\n"
    "  --allow-crimes            allow models whose config.json architectures differ\n"
    "  --allow-nonfinite         write NaN / infinite values the merge produced (with a warning and counts)\n"
    "  --no-write-model-card     do not write README.md and mergekit_config.yml\n"
    "  --format gguf             write one GGUF file for llama.cpp instead (also chosen by OUT ending in .gguf):\n"
    "                            the merge goes to a temporary folder beside OUT, then is converted as\n"
    "                            `graft convert --to gguf` does (Llama, Mistral, Qwen2) and the folder removed\n"
    "  --type T                  GGUF matrix type: f32, f16 (default), bf16, q8_0, q4_0\n"
    "  --resume STATE            opcm: fold the config's models into an earlier opcm merge, whose state\n"
    "                            (merged task vector, λ, norms) that merge wrote beside its output as\n"
    "                            OUT.opcm-state.safetensors; this merge writes its own state the same way\n"
    "  --lora-space              linear or task_arithmetic of BASE+ADAPTER models of one base (and the base\n"
    "                            itself): write one PEFT adapter to OUT_DIR instead of a model — the exact\n"
    "                            weighted sum of the adapters' updates (merge-lora's cat), without densifying\n";

int cmd_merge(int argc, char **argv) {
    enum { O_THREADS = 256, O_SEED, O_SHARD, O_DRY, O_FORCE, O_COPY, O_NOCOPY, O_CRIMES, O_CARD, O_NOCARD, O_FORMAT, O_TYPE, O_RESUME, O_NONFINITE, O_LORA_SPACE };
    static const struct option opts[] = {
        {"threads", required_argument, 0, O_THREADS}, {"seed", required_argument, 0, O_SEED},
        {"random-seed", required_argument, 0, O_SEED}, {"out-shard-size", required_argument, 0, O_SHARD},
        {"dry-run", no_argument, 0, O_DRY}, {"force", no_argument, 0, O_FORCE},
        {"copy-tokenizer", no_argument, 0, O_COPY}, {"no-copy-tokenizer", no_argument, 0, O_NOCOPY},
        {"allow-crimes", no_argument, 0, O_CRIMES}, {"allow-nonfinite", no_argument, 0, O_NONFINITE}, {"write-model-card", no_argument, 0, O_CARD},
        {"no-write-model-card", no_argument, 0, O_NOCARD}, {"format", required_argument, 0, O_FORMAT}, {"type", required_argument, 0, O_TYPE},
        {"resume", required_argument, 0, O_RESUME}, {"lora-space", no_argument, 0, O_LORA_SPACE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool gguf = false, lora_space = false;
    uint32_t gtype = GRAFT_GGML_F16;
    struct graft_merge_options o = graft_merge_default_options();
    o.n_threads = graft_n_cpus();
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_THREADS: if (!cli_threads("merge", optarg, &o.n_threads)) return GRAFT_EXIT_USAGE; break;
        case O_SEED:
            if (!graft_parse_u64(optarg, UINT64_MAX, &o.seed)) return cli_usage("merge", "--seed expects a whole number, got '%s'", optarg);
            break;
        case O_SHARD: if (!cli_size("merge", "--out-shard-size", optarg, &o.max_shard_bytes)) return GRAFT_EXIT_USAGE; break;
        case O_DRY: o.dry_run = true; break;
        case O_FORCE: o.writer_flags |= GRAFT_WRITER_FORCE; break;
        case O_COPY: o.copy_tokenizer = true; break;
        case O_NOCOPY: o.copy_tokenizer = false; break;
        case O_CRIMES: o.allow_crimes = true; break;
        case O_NONFINITE: o.allow_nonfinite = true; break;
        case O_CARD: o.write_model_card = true; break;
        case O_NOCARD: o.write_model_card = false; break;
        case O_FORMAT:
            if (!strcmp(optarg, "gguf")) gguf = true;
            else if (strcmp(optarg, "hf") && strcmp(optarg, "safetensors")) return cli_usage("merge", "--format expects gguf or hf, got '%s'", optarg);
            break;
        case O_TYPE: {
            static const char *const names[5] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
            static const uint32_t types[5] = {GRAFT_GGML_F32, GRAFT_GGML_F16, GRAFT_GGML_BF16, GRAFT_GGML_Q8_0, GRAFT_GGML_Q4_0};
            int k = 0;
            while (k < 5 && strcmp(optarg, names[k])) k++;
            if (k == 5) return cli_usage("merge", "--type expects f32, f16, bf16, q8_0 or q4_0, got '%s'", optarg);
            gtype = types[k];
            break;
        }
        case O_RESUME: o.resume = optarg; break;
        case O_LORA_SPACE: lora_space = true; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("merge", "unknown option");
        }
    }
    if (argc - optind != 2) return cli_usage("merge", "expected CONFIG.yml and OUT_DIR");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "merge", 0);
    if (cli_quiet()) prog.enabled = false;
    if ((o.dist = o.dry_run ? NULL : cli_dist())) { // under mpirun: this rank's output shards (docs/distributed.md)
        size_t l = strlen(argv[optind + 1]);
        if (gguf || (l > 5 && !strcmp(argv[optind + 1] + l - 5, ".gguf")))
            return cli_usage("merge", "a GGUF output is one file: merge into a folder under mpirun, then graft convert it");
    }
    if (o.dry_run && cli_quiet()) return GRAFT_EXIT_OK; // rank 0 prints the plan
    if (lora_space) {
        size_t l = strlen(argv[optind + 1]);
        if (gguf || o.dist || o.resume || (l > 5 && !strcmp(argv[optind + 1] + l - 5, ".gguf")))
            return cli_usage("merge", "--lora-space writes one adapter folder: no GGUF output, --resume or mpirun");
        struct graft_lora_merge_params lp = graft_lora_merge_default_params();
        lp.n_threads = o.n_threads, lp.seed = o.seed, lp.writer_flags = o.writer_flags, lp.dry_run = o.dry_run, lp.progress = &prog;
        struct graft_lora_report rep = {0};
        double t1 = graft_now();
        int rc = graft_lora_merge_merge_config(argv[optind], o.dry_run ? "" : argv[optind + 1], &lp, &rep, &err);
        graft_progress_finish(&prog);
        if (rc) return cli_fail(&err);
        size_t n_lora = 0, n_whole = 0;
        double worst = 0;
        cli_lora_report(&rep, false, &n_lora, &n_whole, &worst);
        graft_lora_report_free(&rep);
        if (!o.dry_run) fprintf(stderr, "graft: merged %zu modules in adapter space into %s in %.2fs\n", n_lora + n_whole, argv[optind + 1], graft_now() - t1);
        return GRAFT_EXIT_OK;
    }
    o.progress = &prog;
    double t0 = graft_now();
    const char *out = argv[optind + 1];
    size_t ol = strlen(out);
    if (ol > 5 && !strcmp(out + ol - 5, ".gguf")) gguf = true;
    if (gguf && !o.dry_run) { // merge into a folder beside OUT, convert, remove the folder
        struct stat sb;
        if (!(o.writer_flags & GRAFT_WRITER_FORCE) && lstat(out, &sb) == 0) {
            graft_err_set(&err, GRAFT_E_EXISTS, out, NULL, 0, "file already exists; use --force to replace it");
            return cli_fail(&err);
        }
        const char *slash = strrchr(out, '/');
        graft__remove_stale_beside(out); // (the folder and its writer's temporary of a killed run)
        char *tmp = graft__temp_beside(out, "-hf");
        if (!tmp) { graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); return cli_fail(&err); }
        unsigned keep = o.writer_flags;
        o.writer_flags &= ~(unsigned)GRAFT_WRITER_FORCE, o.check_target = out; // OUT.gguf must not be an input either
        int rc = graft_merge(argv[optind], tmp, &o, &err);
        graft_progress_finish(&prog);
        struct graft_model *m = NULL;
        if (!rc) rc = graft_model_open(tmp, &m, &err);
        char *name = graft__strndup(slash ? slash + 1 : out, strlen(slash ? slash + 1 : out) - (ol > 5 && !strcmp(out + ol - 5, ".gguf") ? 5 : 0));
        if (!rc && !name) rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        if (!rc) rc = graft_to_gguf(m, out, gtype, name, o.n_threads, keep | (o.allow_nonfinite ? GRAFT_WRITER_ALLOW_NONFINITE : 0), &err);
        graft__free(name);
        graft_model_close(m);
        graft__rm_tree(tmp);
        free(tmp);
        if (rc) return cli_fail(&err);
        fprintf(stderr, "graft: merged into %s (GGUF, %s matrices) in %.2fs\n", out, graft_ggml_type_name(gtype), graft_now() - t0);
        return GRAFT_EXIT_OK;
    }
    int rc = graft_merge(argv[optind], argv[optind + 1], &o, &err);
    graft_progress_finish(&prog);
    if (rc) return cli_fail(&err);
    if (!o.dry_run && !cli_quiet())
        fprintf(stderr, "graft: merged into %s in %.2fs (%d process%s)\n", argv[optind + 1], graft_now() - t0, o.dist ? o.dist->size : 1, o.dist ? "es" : "");
    return GRAFT_EXIT_OK;
}
