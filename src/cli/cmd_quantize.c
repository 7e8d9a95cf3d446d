// graft quantize: round-to-nearest symmetric group-wise int8 / int4, or binary-coded (BCQ) 2–4-bit
// weights in safetensors.
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char help[] =
    "Usage: graft quantize MODEL OUT --scheme int8|int4 [--group G] [options]\n"
    "       graft quantize MODEL OUT --scheme bcq --bits 2|3|4 [--group G] [--shift] [--rounds R] [options]\n"
    "\n"
    "Quantize every 2-D floating weight (not the input embedding and lm_head unless --embeddings) by\n"
    "round-to-nearest, symmetric, per group of G consecutive elements of a row: s = max|w| / qmax\n"
    "(qmax 127 for int8, 7 for int4), q = round_half_even(w / s) clamped to [−qmax, qmax].\n"
    "Stored as NAME (I8 [rows, cols]; int4: U8 [rows, cols/2], two values per byte, low nibble first)\n"
    "and NAME_scale (F32 [rows, ⌈cols/G⌉]); config.json gets quantization_config (docs/quantize.md).\n"
    "Other tensors are copied. Prints each quantized tensor's relative error ‖w − ŵ‖ / ‖w‖.\n"
    "`graft dequantize` goes back. The output appears atomically.\n"
    "\n"
    "bcq (binary-coded quantization, ShiftAddLLM): each group is w ≈ Σ_k α_k·b_k, b_k ∈ {±1}, k < bits:\n"
    "greedy init, then R rounds of α ← least squares for the codes and codes ← the nearest of the 2^bits\n"
    "levels Σ ±α_k (--shift: α_k rounded to powers of two first, so ŵ needs only shifts and adds).\n"
    "Stored as NAME (U8 [rows, bits, cols/8]: bit planes, +1 = 1) and NAME_alpha (F32 [rows, ⌈cols/G⌉,\n"
    "bits]). Prints each tensor's relative error and that of min-max round-to-nearest at the same bits.\n"
    "\n"
    "Options:\n"
    "  --scheme int8|int4|bcq  (required)\n"
    "  --bits B             bcq: 2, 3 or 4 (required with bcq)\n"
    "  --shift              bcq: power-of-two α\n"
    "  --rounds R           bcq: alternating rounds (default 15)\n"
    "  --group G            elements per scale (default 128; the last group of a row may be shorter)\n"
    "  --embeddings         quantize the input embedding and lm_head too\n"
    "  --exclude RE         leave tensors matching this POSIX extended regex as they are (repeatable)\n"
    "  --out-shard-size S   max tensor bytes per shard (default 5G)\n"
    "  --threads N          worker threads (default: number of CPUs)\n"
    "  --dry-run            list the tensors that would be quantized; write nothing\n"
    "  --force              replace OUT if it exists and is not empty\n"
    "  -h, --help           this text\n";

int cmd_quantize(int argc, char **argv) {
    static const struct option opts[] = {
        {"scheme", required_argument, 0, 's'}, {"group", required_argument, 0, 'g'}, {"embeddings", no_argument, 0, 'e'},
        {"exclude", required_argument, 0, 'x'}, {"out-shard-size", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'},
        {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'}, {"bits", required_argument, 0, 'b'}, {"shift", no_argument, 0, 'S'},
        {"rounds", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_quantize_params p = graft_quantize_default_params();
    p.n_threads = graft_n_cpus(), p.bits = 0;
    int bcq_bits = 0;
    bool shift = false, rounds = false;
    const char **exc = NULL;
    int c, rc = GRAFT_EXIT_OK;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 's':
            if (!strcmp(optarg, "int8")) p.bits = 8;
            else if (!strcmp(optarg, "int4")) p.bits = 4;
            else if (!strcmp(optarg, "bcq")) p.bcq = true, p.bits = -1;
            else ok = false, cli_usage("quantize", "--scheme expects int8, int4 or bcq, got '%s'", optarg);
            break;
        case 'b': ok = cli_int("quantize", "--bits", optarg, 2, 4, &bcq_bits); break;
        case 'S': shift = true; break;
        case 'r': ok = cli_int("quantize", "--rounds", optarg, 0, 1000, &p.rounds), rounds = true; break;
        case 'g': ok = cli_int("quantize", "--group", optarg, 1, 1 << 30, &p.group); break;
        case 'e': p.embeddings = true; break;
        case 'x': {
            const char **v = realloc(exc, (p.n_exclude + 1) * sizeof *v);
            if ((ok = v != NULL)) v[p.n_exclude++] = optarg, exc = v;
            break;
        }
        case 'o': ok = cli_size("quantize", "--out-shard-size", optarg, &p.max_shard_bytes); break;
        case 't': ok = cli_threads("quantize", optarg, &p.n_threads); break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 'h': fputs(help, stdout); goto done;
        default: rc = cli_usage("quantize", "unknown option"); goto done;
        }
        if (!ok) { rc = GRAFT_EXIT_USAGE; goto done; }
    }
    if (!p.bits) { rc = cli_usage("quantize", "--scheme int8|int4|bcq is required"); goto done; }
    if (p.bcq && !bcq_bits) { rc = cli_usage("quantize", "--scheme bcq needs --bits 2, 3 or 4"); goto done; }
    if (!p.bcq && (bcq_bits || shift || rounds)) { rc = cli_usage("quantize", "--bits, --shift and --rounds are for --scheme bcq"); goto done; }
    if (p.bcq) p.bits = bcq_bits, p.shift = shift;
    if (argc - optind != 2 && !(p.dry_run && argc - optind == 1)) { rc = cli_usage("quantize", "expected MODEL and OUT"); goto done; }
    p.exclude = exc;
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) { rc = cli_fail(&err); goto done; }
    struct graft_progress prog;
    graft_progress_init(&prog, "quantize", graft_model_n_bytes(m));
    p.progress = &prog;
    struct graft_quant_report rep = {0};
    double t0 = graft_now();
    int r = graft_quantize(m, p.dry_run ? "" : argv[optind + 1], &p, &rep, &err);
    graft_progress_finish(&prog);
    if (r) rc = cli_fail(&err);
    else {
        double worst = 0;
        for (size_t i = 0; i < rep.n; i++) {
            if (rep.rel_error[i] >= 0 && rep.rtn_error)
                printf("%-60s rel. error %.4g  (round-to-nearest at %d bits: %.4g)\n", rep.names[i], rep.rel_error[i], p.bits, rep.rtn_error[i]);
            else if (rep.rel_error[i] >= 0) printf("%-60s rel. error %.4g\n", rep.names[i], rep.rel_error[i]);
            else printf("%s\n", rep.names[i]);
            worst = rep.rel_error[i] > worst ? rep.rel_error[i] : worst;
        }
        if (p.dry_run) fprintf(stderr, "graft: dry run: %zu tensors would be quantized, %zu copied; nothing written\n", rep.n, rep.n_kept);
        else
            fprintf(stderr, "graft: quantized %zu tensors to %s%d (group %d, largest relative error %.4g), %zu copied, in %.2fs: %s\n", rep.n,
                    p.bcq ? "bcq" : "int", p.bits, p.group, worst, rep.n_kept, graft_now() - t0, argv[optind + 1]);
    }
    graft_quant_report_free(&rep);
    graft_model_close(m);
done:
    free(exc);
    return rc;
}
