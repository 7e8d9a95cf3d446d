// graft eval: perplexity of a Llama-family model on text (or token ids), and activation statistics.
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "graft/eval.h"
#include "graft/gguf.h"
#include "graft/tokenizer.h"
#include "../core/impl.h"

static const char help[] =
    "Usage: graft eval MODEL (--text FILE... | --tokens FILE...) [options]\n"
    "       (MODEL: a Hugging Face folder, or a GGUF file — llama, qwen2, qwen3, phi3, gemma2, gemma3 — whose\n"
    "       tokenizer.ggml.* vocabulary tokenizes --text unless --tokenizer DIR is given)\n"
    "\n"
    "Perplexity of a Llama, Mistral, Mixtral, Qwen2, Qwen3, Phi-3, Gemma 2 or Gemma 3 model (F32/F16/BF16\n"
    "safetensors; GGUF also F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K) on the CPU (docs/eval.md). Each file is\n"
    "tokenized with MODEL/tokenizer.json (--text) or read as whitespace-separated token ids (--tokens,\n"
    "as `graft tokenize` prints them) and cut into windows of --ctx tokens that never span two files.\n"
    "Each window starts with BOS when the tokenizer adds one (tokenizer_config.json add_bos_token, else\n"
    "the post-processor template); every token after the BOS is predicted once. With --stride S the\n"
    "windows slide by S tokens and only the tokens not yet scored count (Hugging Face's sliding-window\n"
    "perplexity). Prints the mean negative log-likelihood (nats/token), perplexity = exp(mean NLL) and\n"
    "tokens/s (all window positions, per second of forward pass).\n"
    "\n"
    "Options:\n"
    "  --text FILE        UTF-8 text (repeatable)\n"
    "  --tokens FILE      token ids (repeatable; BOS is still added per window unless --no-bos)\n"
    "  --ctx N            window length in tokens, BOS included (default 512)\n"
    "  --stride S         slide windows by S tokens (default: non-overlapping)\n"
    "  --batch B          windows per forward pass (default 1; larger batches amortise weight conversion)\n"
    "  --max-tokens N     stop after the first N tokens of each file\n"
    "  --bos / --no-bos   force BOS at the start of each window on or off\n"
    "  --collect KIND OUT write statistics of every linear layer's inputs to OUT (.safetensors):\n"
    "                     gram (Σ x xᵀ, [in, in], for RegMean/MaTS) or act-norm (Σ x², [in], for\n"
    "                     `graft prune --wanda`); format in docs/eval.md\n"
    "  --dump-logits FILE raw little-endian f32 logits [window][position][vocab] (for tests)\n"
    "  --tokenizer DIR    tokenizer.json (and tokenizer_config.json) from DIR instead of MODEL's folder\n"
    "  --matmul f32|bf16  products with BF16 weights: widened to f32 (default; what transformers computes\n"
    "                     in float32), or the activations rounded to bf16 first and summed in f32 (what\n"
    "                     llama.cpp and a bfloat16 transformers run compute; about twice as fast on CPUs\n"
    "                     with AVX512-BF16; perplexity within bf16 rounding of the f32 figure)\n"
    "  --threads N        worker threads (default: number of CPUs)\n"
    "  --json             one JSON object on stdout\n"
    "  -h, --help         this text\n";

struct doc { int32_t *ids; size_t n; };

static int read_ids(const char *path, struct doc *d, struct graft_err *err) {
    FILE *f = fopen(path, "r");
    if (!f) return graft_err_set(err, GRAFT_E_IO, path, NULL, 0, "cannot open");
    size_t cap = 1024;
    d->ids = malloc(cap * sizeof *d->ids), d->n = 0;
    long v;
    int rc = GRAFT_OK, r;
    while (d->ids && (r = fscanf(f, "%ld", &v)) == 1) {
        if (v < 0 || v > INT32_MAX) { rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "token id %ld out of range", v); break; }
        if (d->n == cap) {
            int32_t *n = realloc(d->ids, (cap *= 2) * sizeof *n);
            if (!n) { free(d->ids), d->ids = NULL; break; }
            d->ids = n;
        }
        d->ids[d->n++] = (int32_t)v;
    }
    if (!rc && !d->ids) rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
    if (!rc && !feof(f)) rc = graft_err_set(err, GRAFT_E_FORMAT, path, NULL, 0, "not a list of whitespace-separated token ids (after %zu ids)", d->n);
    fclose(f);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {
        {"text", required_argument, 0, 'x'}, {"tokens", required_argument, 0, 'k'}, {"ctx", required_argument, 0, 'c'},
        {"stride", required_argument, 0, 's'}, {"batch", required_argument, 0, 'b'}, {"max-tokens", required_argument, 0, 'm'},
        {"bos", no_argument, 0, 'B'}, {"no-bos", no_argument, 0, 'N'}, {"collect", required_argument, 0, 'C'},
        {"dump-logits", required_argument, 0, 'D'}, {"tokenizer", required_argument, 0, 'K'}, {"threads", required_argument, 0, 't'}, {"json", no_argument, 0, 'j'},
        {"matmul", required_argument, 0, 'M'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *texts[256], *toks[256], *dump = NULL, *collect_out = NULL, *tok_dir = NULL;
    int n_texts = 0, n_toks = 0, ctx = 512, stride = 0, batch = 1, max_tokens = 0, bos_mode = -1, n_threads = graft_n_cpus(), c;
    enum graft_collect collect = GRAFT_COLLECT_NONE;
    enum graft_matmul matmul = GRAFT_MATMUL_F32;
    bool json = false;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'x':
            if (n_texts == 256) return cli_usage("eval", "at most 256 --text files");
            texts[n_texts++] = optarg;
            break;
        case 'k':
            if (n_toks == 256) return cli_usage("eval", "at most 256 --tokens files");
            toks[n_toks++] = optarg;
            break;
        case 'c': if (!cli_int("eval", "--ctx", optarg, 2, 1 << 20, &ctx)) return GRAFT_EXIT_USAGE; break;
        case 's': if (!cli_int("eval", "--stride", optarg, 1, 1 << 20, &stride)) return GRAFT_EXIT_USAGE; break;
        case 'b': if (!cli_int("eval", "--batch", optarg, 1, 4096, &batch)) return GRAFT_EXIT_USAGE; break;
        case 'm': if (!cli_int("eval", "--max-tokens", optarg, 1, INT32_MAX, &max_tokens)) return GRAFT_EXIT_USAGE; break;
        case 'B': bos_mode = 1; break;
        case 'N': bos_mode = 0; break;
        case 'C':
            if (!strcmp(optarg, "gram")) collect = GRAFT_COLLECT_GRAM;
            else if (!strcmp(optarg, "act-norm")) collect = GRAFT_COLLECT_ACT_NORM;
            else return cli_usage("eval", "--collect expects gram or act-norm, got '%s'", optarg);
            if (optind >= argc) return cli_usage("eval", "--collect %s needs an output path", optarg);
            collect_out = argv[optind++];
            break;
        case 'D': dump = optarg; break;
        case 'K': tok_dir = optarg; break;
        case 't': if (!cli_threads("eval", optarg, &n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'M': if (!cli_matmul("eval", optarg, &matmul)) return GRAFT_EXIT_USAGE; break;
        case 'j': json = true; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("eval", "unknown option");
        }
    }
    if (argc - optind != 1) return cli_usage("eval", "expected one MODEL");
    if (!n_texts && !n_toks) return cli_usage("eval", "give --text FILE or --tokens FILE");
    const char *path = argv[optind];
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m = NULL;
    struct graft_gguf *gg = NULL;
    struct graft_llama *L = NULL;
    struct graft_tokenizer *tk = NULL;
    struct graft_llama_stats *st = NULL;
    struct doc docs[512] = {{0}};
    int n_docs = 0, rc = GRAFT_OK;
    FILE *df = NULL;
    int32_t bos = -1;
    if (graft_gguf_sniff(path)) {
        if ((rc = graft_gguf_open(path, &gg, &err))) goto agree;
        if ((rc = graft_llama_open_gguf(gg, n_threads, &L, &err))) {
            graft__err_prefix(&err, path, NULL, 0);
            goto agree;
        }
        bos = graft_gguf_bos(gg);
    } else if ((rc = graft_model_open(path, &m, &err)) || (rc = graft_llama_open(m, n_threads, &L, &err))) goto agree;
    graft_llama_set_matmul(L, matmul);
    if (n_texts || bos_mode != 0 || tok_dir) {
        struct graft_err e2;
        graft_err_clear(&e2);
        const char *dir = tok_dir ? tok_dir : m && graft_model_is_dir(m) ? graft_model_dir(m) : gg ? path : NULL;
        int r = gg && !tok_dir ? graft_tokenizer_load_gguf(gg, path, &tk, &e2) // the file already open
              : dir            ? graft_tokenizer_load(dir, &tk, &e2)
                               : GRAFT_E_NOTFOUND;
        if (r && (n_texts || tok_dir)) {
            if (r == GRAFT_E_NOTFOUND && (!dir || (gg && !tok_dir))) graft_err_clear(&e2), graft_err_set(&e2, r, path, NULL, 0, "--text needs a tokenizer%s: give --tokenizer DIR (a folder with tokenizer.json)", gg ? " and the GGUF file carries none" : "");
            rc = r, err = e2;
            goto agree;
        }
        if (!r) bos = graft_tokenizer_bos(tk);
    }
    if (bos_mode == 0) bos = -1;
    if (bos_mode == 1 && bos < 0) {
        rc = graft_err_set(&err, GRAFT_E_USAGE, path, NULL, 0, "--bos: the tokenizer names no BOS token");
        goto agree;
    }
    for (int i = 0; i < n_texts && !rc; i++) rc = cli_encode_file(tk, texts[i], &docs[n_docs].ids, &docs[n_docs].n, &err), n_docs++;
    for (int i = 0; i < n_toks && !rc; i++) rc = read_ids(toks[i], &docs[n_docs++], &err);
    if (rc) goto agree;
    if (cli_dist() && (collect || dump)) {
        rc = graft_err_set(&err, GRAFT_E_USAGE, path, NULL, 0, "--collect and --dump-logits run in one process: start without mpirun");
        goto agree;
    }
    if (collect && (rc = graft_llama_stats_new(L, collect, &st, &err))) goto agree;
    if (dump && !(df = fopen(dump, "wb"))) { rc = graft_err_set(&err, GRAFT_E_IO, dump, NULL, 0, "cannot create"); goto agree; }
agree: // under mpirun: a rank that failed alone would leave the others waiting in the windows' reduction
    if (cli_dist()) rc = graft__dist_status(cli_dist(), rc, path, &err);
    if (rc) goto out;
    const int32_t *dv[512];
    size_t dl[512];
    for (int d = 0; d < n_docs; d++) dv[d] = docs[d].ids, dl[d] = docs[d].n;
    struct graft_ppl_opts po = {ctx, stride, batch, bos, (size_t)max_tokens, df, st, NULL, cli_dist()}; // under mpirun: windows shared
    struct graft_ppl_result res;
    if ((rc = graft_eval_ppl(L, dv, dl, n_docs, &po, &res, &err))) {
        if (!err.msg[0] || strncmp(err.msg, path, strlen(path))) graft__err_prefix(&err, path, NULL, 0);
        goto out;
    }
    double secs = res.seconds, nll = res.nll;
    uint64_t scored = res.scored, positions = res.positions;
    size_t n_win = res.windows;
    if (df && fclose(df)) { df = NULL; rc = graft_err_set(&err, GRAFT_E_IO, dump, NULL, 0, "write failed"); goto out; }
    df = NULL;
    if (st && (rc = graft_llama_stats_save(st, collect_out, positions, &err))) goto out;
    if (!scored) { rc = graft_err_set(&err, GRAFT_E_USAGE, path, NULL, 0, "no token was scored (texts shorter than two tokens?)"); goto out; }
    double mean = nll / (double)scored;
    if (cli_quiet()) goto out; // rank 0 prints
    if (json)
        printf("{\"model\": \"%s\", \"windows\": %zu, \"ctx\": %d, \"bos\": %d, \"tokens_scored\": %llu, \"positions\": %llu, "
               "\"nll\": %.9g, \"perplexity\": %.9g, \"seconds\": %.4f, \"tokens_per_second\": %.2f, \"gflop_per_second\": %.2f}\n",
               path, n_win, ctx, (int)bos, (unsigned long long)scored, (unsigned long long)positions, mean, exp(mean), secs,
               (double)positions / secs, res.flop / secs / 1e9);
    else
        printf("%s: %llu tokens scored in %zu windows of ≤ %d: mean NLL %.6f nats, perplexity %.4f, %.1f tokens/s\n", path,
               (unsigned long long)scored, n_win, ctx, mean, exp(mean), (double)positions / secs);
    if (st) fprintf(stderr, "graft: %s statistics over %llu tokens: %s\n", collect == GRAFT_COLLECT_GRAM ? "gram" : "act-norm",
                    (unsigned long long)positions, collect_out);
out:
    if (df) fclose(df), remove(dump);
    for (int d = 0; d < n_docs; d++) free(docs[d].ids);
    graft_llama_stats_free(st);
    graft_tokenizer_free(tk);
    graft_llama_free(L);
    graft_model_close(m);
    graft_gguf_close(gg);
    return rc ? cli_fail(&err) : GRAFT_EXIT_OK;
}
