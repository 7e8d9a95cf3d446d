// graft synth: random models in common HF layouts (or fine-tune-like derivatives) for demos, tests, benches.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"

static const char help[] =
    "Usage: graft synth OUT [--arch A] [--layers N] [--hidden N] [--intermediate N] [--heads N]\n"
    "                       [--kv-heads N] [--vocab N] [--dtype T] [--seed S] [--tie]\n"
    "                       [--like BASE --delta SCALE] [--threads N] [--out-shard-size S] [--force]\n"
    "\n"
    "Write a random model folder in a Hugging Face layout (config.json, generation_config.json, tokenizer files,\n"
    "and the architecture's tensor names, e.g. model.embed_tokens / model.layers.N.{self_attn,mlp} / lm_head).\n"
    "Matrices ~ N(0, 0.02²) (approximately), norm weights ~ 1 + N(0, 0.1²). The same options and seed give\n"
    "the same bytes whatever --threads is.\n"
    "\n"
    "With --like BASE, write a fine-tune-like derivative instead: every floating tensor of BASE plus\n"
    "SCALE × Laplace(0,1) noise keyed by --seed; BASE's config and tokenizer files are copied.\n"
    "\n"
    "Options (defaults):\n"
    "  --arch A            llama, mistral, qwen2, gemma, phi3, gpt2, gpt_neox, mixtral (4 experts),\n"
    "                      gemma3vl (text decoder + SigLIP vision tower + projector)\n"
    "  --layers N          2          --hidden N        64       --intermediate N  172\n"
    "  --heads N           4          --kv-heads N      2        --vocab N         256\n"
    "  --dtype T           bf16 (f32, f16, bf16, f8_e4m3, f8_e5m2); with --like: BASE's dtype\n"
    "  --seed S            1          --tie             tie lm_head to the embeddings (no lm_head.weight)\n"
    "  --delta SCALE       0.01 (with --like)\n"
    "  --threads N         CPUs       --out-shard-size  5G       --force   replace a non-empty OUT\n";

int cmd_synth(int argc, char **argv) {
    enum { O_ARCH = 256, O_LAYERS, O_HIDDEN, O_INTER, O_HEADS, O_KV, O_VOCAB, O_DTYPE, O_SEED, O_TIE, O_LIKE, O_DELTA,
           O_THREADS, O_SHARD, O_FORCE };
    static const struct option opts[] = {
        {"arch", required_argument, 0, O_ARCH}, {"layers", required_argument, 0, O_LAYERS},
        {"hidden", required_argument, 0, O_HIDDEN}, {"intermediate", required_argument, 0, O_INTER},
        {"heads", required_argument, 0, O_HEADS}, {"kv-heads", required_argument, 0, O_KV},
        {"vocab", required_argument, 0, O_VOCAB}, {"dtype", required_argument, 0, O_DTYPE},
        {"seed", required_argument, 0, O_SEED}, {"tie", no_argument, 0, O_TIE},
        {"like", required_argument, 0, O_LIKE}, {"delta", required_argument, 0, O_DELTA},
        {"threads", required_argument, 0, O_THREADS}, {"out-shard-size", required_argument, 0, O_SHARD},
        {"force", no_argument, 0, O_FORCE}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_synth_params p = graft_synth_default_params();
    p.n_threads = graft_n_cpus();
    const char *like = NULL;
    bool have_dtype = false;
    double delta = p.delta;
    int c;
    optind = 1;
    const int MAXD = 1 << 20;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case O_ARCH: p.arch = optarg; break;
        case O_LAYERS: ok = cli_int("synth", "--layers", optarg, 0, 10000, &p.n_layers); break;
        case O_HIDDEN: ok = cli_int("synth", "--hidden", optarg, 1, MAXD, &p.hidden); break;
        case O_INTER: ok = cli_int("synth", "--intermediate", optarg, 1, MAXD, &p.intermediate); break;
        case O_HEADS: ok = cli_int("synth", "--heads", optarg, 1, 4096, &p.n_heads); break;
        case O_KV: ok = cli_int("synth", "--kv-heads", optarg, 1, 4096, &p.n_kv_heads); break;
        case O_VOCAB: ok = cli_int("synth", "--vocab", optarg, 1, 1 << 24, &p.vocab); break;
        case O_DTYPE: ok = cli_dtype("synth", optarg, &p.dtype), have_dtype = true; break;
        case O_SEED:
            if (!graft_parse_u64(optarg, UINT64_MAX, &p.seed)) return cli_usage("synth", "--seed expects a whole number, got '%s'", optarg);
            break;
        case O_TIE: p.tie_embeddings = true; break;
        case O_LIKE: like = optarg; break;
        case O_DELTA: ok = cli_float("synth", "--delta", optarg, 0, 1e6, &delta); break;
        case O_THREADS: ok = cli_threads("synth", optarg, &p.n_threads); break;
        case O_SHARD: ok = cli_size("synth", "--out-shard-size", optarg, &p.max_shard_bytes); break;
        case O_FORCE: p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("synth", "unknown option");
        }
        if (!ok) return GRAFT_EXIT_USAGE;
    }
    if (argc - optind != 1) return cli_usage("synth", "expected one OUT folder");
    p.delta = (float)delta;
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *base = NULL;
    if (like) {
        if (graft_model_open(like, &base, &err)) return cli_fail(&err);
        p.like = base;
        if (!have_dtype) // keep the base's floating dtype
            for (size_t i = 0; i < graft_model_n_tensors(base); i++) {
                enum graft_dtype t = graft_model_tensor(base, i)->info->dtype;
                if (graft_dtype_is_float_target(t)) { p.dtype = t; break; }
            }
    }
    struct graft_progress prog;
    graft_progress_init(&prog, "synth", 0);
    p.progress = &prog;
    int rc = graft_synth(argv[optind], &p, &err);
    graft_progress_finish(&prog);
    graft_model_close(base);
    if (rc) return cli_fail(&err);
    fprintf(stderr, "graft: wrote %s model to %s\n", like ? "derived" : "synthetic", argv[optind]);
    return GRAFT_EXIT_OK;
}
