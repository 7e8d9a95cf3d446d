// graft verify: full validation of a file or folder; exit 0 only when clean.
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "graft/gguf.h"
#include "../io/io-impl.h"

static const char help[] =
    "Usage: graft verify PATH [--values]\n"
    "\n"
    "Validate a .safetensors file or a model folder completely: header framing, JSON, dtypes, shapes,\n"
    "overflow-checked sizes, offsets that tile the data exactly, file sizes; for folders the index\n"
    "(shard names, every shard present, every tensor in exactly the shard the index names) and\n"
    "config.json (valid JSON object without duplicate keys), and that tokenizer.json's ids and config.json's\n"
    "vocab_size fit the input embedding's rows. A GGUF file (v2/v3) is validated as llama.cpp's\n"
    "reader would, and more strictly (docs/gguf.md).\n"
    "Prints one summary line on success. Exit codes: 0 clean, 3 invalid input, 1 I/O failure.\n"
    "\n"
    "Options:\n"
    "  --values    also read every floating value: per tensor holding NaN or infinite values, a line with\n"
    "              the counts of NaN, Inf and subnormal values and the finite min / max (then exit 3:\n"
    "              such a checkpoint is not clean); a summary line either way\n"
    "  -h, --help  this text\n";

// Value statistics of tensor i of m (false for a non-float tensor).
bool cli_tensor_stats(const struct graft_model *m, size_t i, struct graft_value_stats *s) {
    const struct graft_model_tensor *t = graft_model_tensor(m, i);
    memset(s, 0, sizeof *s);
    return graft_value_stats_add(s, t->info->dtype, graft_model_data(m, t), (size_t)t->info->n_elem);
}

static int verify_values(const struct graft_model *m, const char *path) {
    uint64_t nan = 0, inf = 0, sub = 0, n_float = 0, n_bad = 0;
    const struct graft_model_tensor *first = NULL;
    for (size_t i = 0; i < graft_model_n_tensors(m); i++) {
        struct graft_value_stats s;
        if (!cli_tensor_stats(m, i, &s)) continue;
        n_float++, nan += s.nan, inf += s.inf, sub += s.subnormal;
        if (!s.nan && !s.inf) continue;
        const struct graft_model_tensor *t = graft_model_tensor(m, i);
        if (!first) first = t;
        n_bad++;
        printf("%.*s: %llu NaN, %llu Inf, %llu subnormal of %llu; finite min %.9g, max %.9g\n", (int)t->info->name_len, t->info->name,
               (unsigned long long)s.nan, (unsigned long long)s.inf, (unsigned long long)s.subnormal, (unsigned long long)s.n, s.min, s.max);
    }
    printf("values: %llu floating tensors, %llu NaN, %llu Inf, %llu subnormal\n", (unsigned long long)n_float, (unsigned long long)nan,
           (unsigned long long)inf, (unsigned long long)sub);
    if (!first) return GRAFT_EXIT_OK;
    fprintf(stderr, "graft: error: %s: tensor '%.*s': holds NaN or infinite values (%llu tensor%s in all)\n", path, (int)first->info->name_len,
            first->info->name, (unsigned long long)n_bad, n_bad == 1 ? "" : "s");
    return GRAFT_EXIT_INPUT;
}

int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {{"values", no_argument, 0, 'v'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    bool values = false;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') { fputs(help, stdout); return GRAFT_EXIT_OK; }
        if (c == 'v') { values = true; continue; }
        return cli_usage("verify", "unknown option");
    }
    if (argc - optind != 1) return cli_usage("verify", "expected one PATH");
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_gguf_sniff(argv[optind])) {
        if (values) return cli_usage("verify", "--values reads safetensors models (convert the GGUF file first)");
        return cli_gguf_verify(argv[optind]);
    }
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) return cli_fail(&err);
    if (graft__vocab_fits(m, -1, true, &err)) { // a valid file that fails at its first token past the embedding
        graft_model_close(m);
        return cli_fail(&err);
    }
    printf("ok: %s: %zu tensors in %d file%s, %llu parameters, %llu bytes\n", argv[optind], graft_model_n_tensors(m),
           graft_model_n_shards(m), graft_model_n_shards(m) == 1 ? "" : "s", (unsigned long long)graft_model_n_params(m),
           (unsigned long long)graft_model_n_bytes(m));
    int rc = values ? verify_values(m, argv[optind]) : GRAFT_EXIT_OK;
    graft_model_close(m);
    return rc;
}
