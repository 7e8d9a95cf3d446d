// graft tokenize: a model folder's tokenizer.json on text files (or ids back to text).
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "graft/tokenizer.h"
#include "../core/impl.h"

static const char help[] =
    "Usage: graft tokenize MODEL_DIR [FILE...] [--bos] [--decode] [--json]\n"
    "\n"
    "Encode each FILE (UTF-8 text; standard input when none or '-') with MODEL_DIR/tokenizer.json and\n"
    "print its token ids, one line per file, space-separated. The BOS that graft eval puts at the start\n"
    "of each window (tokenizer_config.json's add_bos_token, else the post-processor template) is added\n"
    "with --bos. BPE tokenizers only: byte-level (GPT-2, Llama 3, Qwen2) and SentencePiece-style with\n"
    "byte fallback (Llama 2, Mistral); docs/eval.md lists what is supported. MODEL_DIR may be a GGUF\n"
    "file: its tokenizer.ggml.* vocabulary is rebuilt as llama.cpp reads it (docs/gguf.md).\n"
    "\n"
    "Options:\n"
    "  --bos         start with the BOS id (when the tokenizer adds one)\n"
    "  --decode      read whitespace-separated ids from each FILE and print the text instead\n"
    "  --json        {\"file\": ..., \"ids\": [...]} per file, one object a line (encode only)\n"
    "  -h, --help    this text\n";

// The error, prefixed with the text file it concerns.
static int fail_in(const char *file, struct graft_err *err) {
    graft__err_prefix(err, file, NULL, 0);
    return cli_fail(err);
}

int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"bos", no_argument, 0, 'b'}, {"decode", no_argument, 0, 'd'}, {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool bos = false, decode = false, json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'b': bos = true; break;
        case 'd': decode = true; break;
        case 'j': json = true; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("tokenize", "unknown option");
        }
    }
    if (argc - optind < 1) return cli_usage("tokenize", "expected MODEL_DIR");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_tokenizer *t;
    if (graft_tokenizer_load(argv[optind], &t, &err)) return cli_fail(&err);
    char *stdin_only[] = {"-"};
    char **files = argc - optind > 1 ? argv + optind + 1 : stdin_only;
    int n_files = argc - optind > 1 ? argc - optind - 1 : 1, rc = GRAFT_EXIT_OK;
    for (int f = 0; f < n_files && rc == GRAFT_EXIT_OK; f++) {
        size_t len = 0;
        char *text = cli_read_file(files[f], &len);
        if (!text) {
            graft_err_set(&err, GRAFT_E_IO, files[f], NULL, 0, "cannot read the file");
            rc = cli_fail(&err);
            break;
        }
        if (decode) {
            size_t n = 0, cap = len / 2 + 1;
            int32_t *ids = malloc(cap * sizeof *ids);
            char *p = text, *end; // cli_read_file NUL-terminates
            for (long v; ids && (v = strtol(p, &end, 10), end != p); p = end) ids[n++] = (int32_t)v;
            char *out = NULL;
            size_t ol = 0;
            if (!ids || graft_tokenizer_decode(t, ids, n, &out, &ol, &err)) {
                if (!ids) graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
                rc = fail_in(files[f], &err);
            } else fwrite(out, 1, ol, stdout);
            free(out), free(ids);
        } else {
            int32_t *ids;
            size_t n;
            if (graft_tokenizer_encode(t, text, len, &ids, &n, &err)) {
                rc = fail_in(files[f], &err);
            } else {
                int32_t b = bos ? graft_tokenizer_bos(t) : -1;
                if (json) {
                    printf("{\"file\": \"");
                    for (const char *s = files[f]; *s; s++) printf(*s == '"' || *s == '\\' ? "\\%c" : (unsigned char)*s < 0x20 ? "?" : "%c", *s);
                    printf("\", \"ids\": [");
                }
                const char *sep = json ? ", " : " ";
                if (b >= 0) printf("%d%s", b, n ? sep : "");
                for (size_t i = 0; i < n; i++) printf("%d%s", ids[i], i + 1 < n ? sep : "");
                puts(json ? "]}" : "");
                free(ids);
            }
        }
        free(text);
    }
    graft_tokenizer_free(t);
    return rc;
}
