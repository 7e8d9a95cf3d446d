// graft verify: full validation of a file or folder; exit 0 only when clean.
#include <getopt.h>
#include <stdio.h>
#include "cli.h"
#include "graft/gguf.h"

static const char help[] =
    "Usage: graft verify PATH\n"
    "\n"
    "Validate a .safetensors file or a model folder completely: header framing, JSON, dtypes, shapes,\n"
    "overflow-checked sizes, offsets that tile the data exactly, file sizes; for folders the index\n"
    "(shard names, every shard present, every tensor in exactly the shard the index names) and\n"
    "config.json (valid JSON object without duplicate keys). A GGUF file (v2/v3) is validated as llama.cpp's\n"
    "reader would, and more strictly (docs/gguf.md).\n"
    "Prints one summary line on success. Exit codes: 0 clean, 3 invalid input, 1 I/O failure.\n";

int cmd_verify(int argc, char **argv) {
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') { fputs(help, stdout); return GRAFT_EXIT_OK; }
        return cli_usage("verify", "unknown option");
    }
    if (argc - optind != 1) return cli_usage("verify", "expected one PATH");
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_gguf_sniff(argv[optind])) return cli_gguf_verify(argv[optind]);
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) return cli_fail(&err);
    printf("ok: %s: %zu tensors in %d file%s, %llu parameters, %llu bytes\n", argv[optind], graft_model_n_tensors(m),
           graft_model_n_shards(m), graft_model_n_shards(m) == 1 ? "" : "s", (unsigned long long)graft_model_n_params(m),
           (unsigned long long)graft_model_n_bytes(m));
    graft_model_close(m);
    return GRAFT_EXIT_OK;
}
