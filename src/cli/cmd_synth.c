// graft synth: random models in common HF layouts (or fine-tune-like derivatives) for demos, tests, benches.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "../ops/presets.h"

static const char help[] =
    "Usage: graft synth OUT [--arch A] [--layers N] [--hidden N] [--intermediate N] [--heads N]\n"
    "                       [--kv-heads N] [--vocab N] [--dtype T] [--seed S] [--tie]\n"
    "                       [--like BASE --delta SCALE] [--threads N] [--out-shard-size S] [--force]\n"
    "       graft synth OUT --like-config CONFIG.json | --preset NAME [--layers N] [--hidden N] [--intermediate N] [--heads N]\n"
    "                       [--kv-heads N] [--head-dim N] [--experts N] [--vocab N] [--dtype T] [options]\n"
    "\n"
    "Write a random model folder in a Hugging Face layout (config.json, generation_config.json, tokenizer files,\n"
    "and the architecture's tensor names, e.g. model.embed_tokens / model.layers.N.{self_attn,mlp} / lm_head).\n"
    "Matrices ~ N(0, 0.02²) (approximately), norm weights ~ 1 + N(0, 0.1²). The same options and seed give\n"
    "the same bytes whatever --threads is.\n"
    "\n"
    "With --like BASE, write a fine-tune-like derivative instead: every floating tensor of BASE plus\n"
    "SCALE × Laplace(0,1) noise keyed by --seed; BASE's config and tokenizer files are copied.\n"
    "\n"
    "With --like-config, the model has exactly the tensors transformers saves for that config.json: names,\n"
    "shapes and their order (which decides the 5 GB shards and model.safetensors.index.json), q/k/v\n"
    "biases (Qwen2, attention_bias), q/k norms (Qwen3, Gemma 3), pre/post feed-forward norms and norms\n"
    "stored as w − 1 (Gemma 2/3), fused qkv_proj / gate_up_proj (Phi-3), experts (Mixtral), the SigLIP\n"
    "tower of Gemma 3 vision–language configs, a tied or separate lm_head, the config's torch_dtype.\n"
    "model_type llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3(_text), phi3, mixtral. Shape options\n"
    "given override the config's values, which config.json then holds (a reshaped Gemma 3 gets a small\n"
    "vision tower: hidden 32, intermediate 64, --layers layers, 4×4 patches); keys the config leaves out\n"
    "take transformers' defaults. --preset NAME takes one of the real configs compiled into graft\n"
    "(tests/configs; listed at the end).\n"
    "\n"
    "Options (defaults):\n"
    "  --arch A            llama, mistral, qwen2, gemma, phi3, gpt2, gpt_neox, mixtral (4 experts),\n"
    "                      gemma3vl (text decoder + SigLIP vision tower + projector)\n"
    "  --layers N          2          --hidden N        64       --intermediate N  172\n"
    "  --heads N           4          --kv-heads N      2        --vocab N         256\n"
    "  --dtype T           bf16 (f32, f16, bf16, f8_e4m3, f8_e5m2); with --like: BASE's dtype\n"
    "  --seed S            1          --tie             tie lm_head to the embeddings (no lm_head.weight)\n"
    "  --delta SCALE       0.01 (with --like)\n"
    "  --head-dim N        (with --like-config) per-head width; default: the config's, or hidden / heads\n"
    "                      when those are overridden\n"
    "  --experts N         (with --like-config) Mixtral's num_local_experts\n"
    "  --preset NAME       --like-config with a real config compiled into graft (the list below)\n"
    "  --threads N         CPUs       --out-shard-size  5G       --force   replace a non-empty OUT\n";

int cmd_synth(int argc, char **argv) {
    enum { O_ARCH = 256, O_LAYERS, O_HIDDEN, O_INTER, O_HEADS, O_KV, O_VOCAB, O_DTYPE, O_SEED, O_TIE, O_LIKE, O_DELTA,
           O_THREADS, O_SHARD, O_FORCE, O_LIKE_CONFIG, O_HEAD_DIM, O_EXPERTS, O_PRESET };
    static const struct option opts[] = {
        {"arch", required_argument, 0, O_ARCH}, {"layers", required_argument, 0, O_LAYERS},
        {"hidden", required_argument, 0, O_HIDDEN}, {"intermediate", required_argument, 0, O_INTER},
        {"heads", required_argument, 0, O_HEADS}, {"kv-heads", required_argument, 0, O_KV},
        {"vocab", required_argument, 0, O_VOCAB}, {"dtype", required_argument, 0, O_DTYPE},
        {"seed", required_argument, 0, O_SEED}, {"tie", no_argument, 0, O_TIE},
        {"like", required_argument, 0, O_LIKE}, {"delta", required_argument, 0, O_DELTA},
        {"threads", required_argument, 0, O_THREADS}, {"out-shard-size", required_argument, 0, O_SHARD},
        {"force", no_argument, 0, O_FORCE}, {"like-config", required_argument, 0, O_LIKE_CONFIG},
        {"head-dim", required_argument, 0, O_HEAD_DIM}, {"experts", required_argument, 0, O_EXPERTS}, {"preset", required_argument, 0, O_PRESET}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_synth_params p = graft_synth_default_params();
    p.n_threads = graft_n_cpus();
    const char *like = NULL, *like_config = NULL, *preset = NULL;
    bool have_dtype = false, given[O_PRESET + 1] = {0};
    double delta = p.delta;
    int c;
    optind = 1;
    const int MAXD = 1 << 20;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        if (c >= 256 && c <= O_PRESET) given[c] = true;
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
        case O_LIKE_CONFIG: like_config = optarg; break;
        case O_PRESET: preset = optarg; break;
        case O_HEAD_DIM: ok = cli_int("synth", "--head-dim", optarg, 1, 65536, &p.head_dim); break;
        case O_EXPERTS: ok = cli_int("synth", "--experts", optarg, 1, 1024, &p.experts); break;
        case 'h':
            fputs(help, stdout);
            fputs("\nPresets:", stdout);
            for (size_t i = 0; i < graft__n_presets; i++) printf(" %s", graft__presets[i].name);
            fputs("\n", stdout);
            return GRAFT_EXIT_OK;
        default: return cli_usage("synth", "unknown option");
        }
        if (!ok) return GRAFT_EXIT_USAGE;
    }
    if (argc - optind != 1) return cli_usage("synth", "expected one OUT folder");
    p.delta = (float)delta;
    struct graft_err err;
    graft_err_clear(&err);
    char *cfg_text = NULL;
    if (preset) { // a compiled-in config: the same path as --like-config
        if (like_config) return cli_usage("synth", "--preset and --like-config exclude each other");
        size_t k = 0;
        while (k < graft__n_presets && strcmp(graft__presets[k].name, preset)) k++;
        if (k == graft__n_presets) {
            fprintf(stderr, "graft: error: no preset '%s'; the presets are:", preset);
            for (size_t i = 0; i < graft__n_presets; i++) fprintf(stderr, " %s", graft__presets[i].name);
            fprintf(stderr, "\nTry 'graft synth --help'.\n");
            return GRAFT_EXIT_USAGE;
        }
        if (!(cfg_text = strdup(graft__presets[k].json))) { graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); return cli_fail(&err); }
        like_config = preset;
    }
    if (like_config) {
        if (like) return cli_usage("synth", "--like-config and --like exclude each other");
        if (given[O_ARCH] || given[O_TIE]) return cli_usage("synth", "--like-config takes the architecture and tied head from the config: drop --arch / --tie");
        size_t len;
        if (!cfg_text && !(cfg_text = cli_read_file(like_config, &len))) {
            graft_err_set(&err, GRAFT_E_IO, like_config, NULL, 0, "cannot read the file");
            return cli_fail(&err);
        }
        p.like_config = cfg_text, p.like_config_label = like_config;
        // shapes not given on the command line come from the config
        if (!given[O_LAYERS]) p.n_layers = 0;
        if (!given[O_HIDDEN]) p.hidden = 0;
        if (!given[O_INTER]) p.intermediate = 0;
        if (!given[O_HEADS]) p.n_heads = 0;
        if (!given[O_KV]) p.n_kv_heads = 0;
        if (!given[O_VOCAB]) p.vocab = 0;
        if (!have_dtype) p.dtype = GRAFT_DTYPE_COUNT;
    } else if (given[O_HEAD_DIM] || given[O_EXPERTS]) {
        return cli_usage("synth", "--head-dim and --experts go with --like-config or --preset");
    }
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
    free(cfg_text);
    if (rc) return cli_fail(&err);
    fprintf(stderr, "graft: wrote %s model to %s\n", like ? "derived" : like_config ? "synthetic (real layout)" : "synthetic", argv[optind]);
    return GRAFT_EXIT_OK;
}
