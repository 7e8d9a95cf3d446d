// graft convert: change the dtype of a model's floating tensors, streaming, into a new output.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "graft/gguf.h"

static const char help[] =
    "Usage: graft convert IN OUT [--dtype T] [--out-shard-size S] [--threads N] [--force] [--allow-nonfinite]\n"
    "       graft convert IN OUT.gguf --to gguf [--type f32|f16|bf16|q8_0|q4_0] [--threads N] [--force]\n"
    "       graft convert IN.gguf OUT [--to hf] [--dtype T] [--threads N] [--force]\n"
    "\n"
    "Convert every floating tensor of IN (a .safetensors file, a PyTorch .bin checkpoint or a model folder,\n"
    "pytorch_model.bin.index.json shards included; a .bin's pickle is never executed) to T, rounding to\n"
    "nearest even exactly as PyTorch's tensor.to(): f32, f16, bf16, f8_e4m3 (float8_e4m3fn) or f8_e5m2.\n"
    "Integer, bool and block-scale (F4/F6/E8M0) tensors are copied unchanged.\n"
    "\n"
    "OUT ending in .safetensors is written as one file; otherwise OUT is a Hugging Face folder:\n"
    "model.safetensors, or model-0000i-of-0000N.safetensors + model.safetensors.index.json, plus\n"
    "config.json (torch_dtype updated) and the tokenizer/generation files of IN.\n"
    "The output appears atomically: it is written to a temporary folder beside OUT, synced, then renamed.\n"
    "\n"
    "Options:\n"
    "  --dtype T            target type; without it every tensor keeps its type (e.g. pytorch_model.bin →\n"
    "                       safetensors, bit for bit)\n"
    "  --to gguf            one GGUF file for llama.cpp (Llama, Mistral, Mixtral, Qwen2, Qwen3, Phi-3, Gemma,\n"
    "                       Gemma 2, Gemma 3 folders): llama.cpp's tensor names, its q/k row permutation (Llama, Mistral,\n"
    "                       Mixtral), stacked experts, Gemma's 1 + w norms, Phi-3's LongRoPE factors, metadata\n"
    "                       and the tokenizer from tokenizer.json; also chosen by an OUT ending in .gguf\n"
    "                       (docs/gguf.md)\n"
    "  --to hf              (IN a .gguf file: the default) a Hugging Face folder: names, q/k rows, config.json,\n"
    "                       tokenizer.json, tokenizer_config.json and generation_config.json rebuilt from the\n"
    "                       GGUF; F32/F16/BF16 tensors kept bit for bit, quantized ones decoded to f32 unless\n"
    "                       --dtype is given (llama, qwen2, qwen3, phi3, gemma, gemma2, gemma3 files)\n"
    "  --type T             GGUF matrix type: f32, f16 (default), bf16, q8_0, q4_0; 1-D tensors stay f32\n"
    "  --out-shard-size S   max tensor bytes per shard: 5G, 500M, 2GiB, 5B (MergeKit: B = 10^9). Default 5G\n"
    "  --threads N          worker threads (default: number of CPUs)\n"
    "  --force              replace OUT if it exists and is not empty\n"
    "  --no-copy-tokenizer  do not copy config.json and tokenizer files\n"
    "  --allow-nonfinite    write values that overflow the target type as infinite/NaN, as PyTorch's tensor.to()\n"
    "                       does (with a warning and the count); without it such a conversion fails (exit 1,\n"
    "                       nothing written), e.g. float32 values beyond ±65504 to f16\n"
    "  -h, --help           this text\n";

// A GGUF file as a Hugging Face folder.
static int from_gguf(const char *in, const char *out, int dtype, const struct graft_convert_params *p) {
    size_t ol = strlen(out);
    if (ol > 12 && !strcmp(out + ol - 12, ".safetensors")) return cli_usage("convert", "a GGUF file converts to a folder (config.json and tokenizer files come with it), not to one .safetensors file");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_gguf *g;
    if (graft_gguf_open(in, &g, &err)) return cli_fail(&err);
    uint64_t total = 0;
    for (size_t i = 0; i < graft_gguf_n_tensors(g); i++) total += graft_gguf_tensor(g, i)->n_bytes;
    struct graft_progress prog;
    graft_progress_init(&prog, "convert", total);
    double t0 = graft_now();
    int rc = graft_gguf_to_hf(g, in, out, dtype, p->n_threads, p->writer_flags, &prog, &err);
    graft_progress_finish(&prog);
    size_t n = graft_gguf_n_tensors(g);
    graft_gguf_close(g);
    if (rc) return cli_fail(&err);
    fprintf(stderr, "graft: wrote %s (%zu GGUF tensors) in %.2fs\n", out, n, graft_now() - t0);
    return GRAFT_EXIT_OK;
}

int cmd_convert(int argc, char **argv) {
    static const struct option opts[] = {
        {"dtype", required_argument, 0, 'd'}, {"out-shard-size", required_argument, 0, 's'},
        {"threads", required_argument, 0, 't'}, {"force", no_argument, 0, 'f'},
        {"no-copy-tokenizer", no_argument, 0, 'n'}, {"to", required_argument, 0, 'T'}, {"type", required_argument, 0, 'y'},
        {"allow-nonfinite", no_argument, 0, 'N'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool to_gguf = false, to_hf = false;
    uint32_t gtype = GRAFT_GGML_F16;
    struct graft_convert_params p = graft_convert_default_params();
    p.n_threads = graft_n_cpus();
    bool have_dtype = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': if (!cli_dtype("convert", optarg, &p.dtype)) return GRAFT_EXIT_USAGE; have_dtype = true; break;
        case 's': if (!cli_size("convert", "--out-shard-size", optarg, &p.max_shard_bytes)) return GRAFT_EXIT_USAGE; break;
        case 't': if (!cli_threads("convert", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'n': p.copy_side_files = false; break;
        case 'N': p.allow_nonfinite = true, p.writer_flags |= GRAFT_WRITER_ALLOW_NONFINITE; break;
        case 'T':
            if (!strcmp(optarg, "gguf")) to_gguf = true;
            else if (!strcmp(optarg, "hf")) to_hf = true;
            else if (strcmp(optarg, "safetensors")) return cli_usage("convert", "--to expects gguf, hf or safetensors, got '%s'", optarg);
            break;
        case 'y':
            if (!strcmp(optarg, "f32")) gtype = GRAFT_GGML_F32;
            else if (!strcmp(optarg, "f16")) gtype = GRAFT_GGML_F16;
            else if (!strcmp(optarg, "bf16")) gtype = GRAFT_GGML_BF16;
            else if (!strcmp(optarg, "q8_0")) gtype = GRAFT_GGML_Q8_0;
            else if (!strcmp(optarg, "q4_0")) gtype = GRAFT_GGML_Q4_0;
            else return cli_usage("convert", "--type expects f32, f16, bf16, q8_0 or q4_0, got '%s'", optarg);
            break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("convert", "unknown option");
        }
    }
    if (argc - optind != 2) return cli_usage("convert", "expected IN and OUT");
    size_t ol = strlen(argv[optind + 1]);
    if (ol > 5 && !strcmp(argv[optind + 1] + ol - 5, ".gguf") && !to_hf) to_gguf = true;
    if (!to_gguf && graft_gguf_sniff(argv[optind])) return from_gguf(argv[optind], argv[optind + 1], have_dtype ? (int)p.dtype : -1, &p);
    if (to_gguf) {
        struct graft_err gerr;
        graft_err_clear(&gerr);
        struct graft_model *gm;
        if (graft_model_open(argv[optind], &gm, &gerr)) return cli_fail(&gerr);
        double t0 = graft_now();
        char name[256] = "";
        struct graft_gguf *in = NULL;
        const char *gn;
        size_t gl;
        if (graft_gguf_sniff(argv[optind]) && !graft_gguf_open(argv[optind], &in, &gerr) && graft_gguf_get_str(in, "general.name", &gn, &gl) && gl < sizeof name)
            memcpy(name, gn, gl), name[gl] = 0; // GGUF → GGUF keeps the model's name
        graft_gguf_close(in);
        graft_err_clear(&gerr);
        int grc = graft_to_gguf(gm, argv[optind + 1], gtype, name[0] ? name : NULL, p.n_threads, p.writer_flags, &gerr);
        graft_model_close(gm);
        if (grc) return cli_fail(&gerr);
        fprintf(stderr, "graft: wrote %s (%s matrices) in %.2fs\n", argv[optind + 1], graft_ggml_type_name(gtype), graft_now() - t0);
        return GRAFT_EXIT_OK;
    }
    if (!have_dtype) p.dtype = GRAFT_DTYPE_COUNT; // keep each tensor's type
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) return cli_fail(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "convert", graft_model_n_bytes(m));
    p.progress = &prog;
    double t0 = graft_now();
    int rc = graft_convert(m, argv[optind + 1], &p, &err);
    graft_progress_finish(&prog);
    if (rc) {
        graft_model_close(m);
        return cli_fail(&err);
    }
    fprintf(stderr, "graft: converted %zu tensors (%llu bytes) to %s in %.2fs: %s\n", graft_model_n_tensors(m),
            (unsigned long long)graft_model_n_bytes(m), have_dtype ? graft_dtype_traits(p.dtype)->cli_name : "safetensors (types kept)", graft_now() - t0,
            argv[optind + 1]);
    graft_model_close(m);
    return GRAFT_EXIT_OK;
}
