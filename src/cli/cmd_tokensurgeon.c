// graft tokensurgeon: give a model a donor's tokenizer (mergekit-tokensurgeon).
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "graft/tokensurgeon.h"

static const char help[] =
    "Usage: graft tokensurgeon MODEL DONOR OUT [--approach omp|mean|zero|subword] [--k K] [--threads N] [--json]\n"
    "                          [--dry-run] [--force] [--allow-nonfinite]\n"
    "\n"
    "Give MODEL the tokenizer of DONOR (as mergekit-tokensurgeon), so that the two can be merged or used\n"
    "for speculative decoding. OUT has the donor's vocabulary: its embedding rows, ids, tokenizer files,\n"
    "vocab_size and special-token ids. A donor token MODEL also has (compared after normalising the\n"
    "word-start marker Ġ / ▁ and special tokens by role: bos, eos, unk, pad) keeps MODEL's row; the others\n"
    "are approximated:\n"
    "  omp      (default) orthogonal matching pursuit: the donor's row as K of the shared tokens' donor\n"
    "           rows (greedy by |correlation| with the residual, least squares), the same coefficients on\n"
    "           MODEL's rows of those tokens\n"
    "  mean     the mean of MODEL's rows;  zero  zeros\n"
    "  subword  the mean of MODEL's rows for MODEL's tokenization of the token's text\n"
    "An untied lm_head gets the same from the lm_head rows; a tied one stays tied. Donor rows that no\n"
    "token uses are zero. generation_config.json is MODEL's with the donor's token ids. Prints how many\n"
    "tokens were exact and approximated (and omp's mean relative residual in the donor's space).\n"
    "Llama-style models (model.embed_tokens.weight, lm_head.weight) with tokenizer.json.\n"
    "\n"
    "Options:\n"
    "  --approach A  omp, mean, zero or subword (default omp)\n"
    "  --k K         omp: atoms per token (default 64)\n"
    "  --threads N   worker threads (default: number of CPUs)\n"
    "  --json        the counts as JSON on stdout\n"
    "  --dry-run     compute and report; write nothing\n"
    "  --force       replace OUT if it exists and is not empty\n"
    "  --allow-nonfinite  write NaN / infinite rows the approximation made (with a warning)\n"
    "  -h, --help    this text\n";

int cmd_tokensurgeon(int argc, char **argv) {
    static const struct option opts[] = {{"approach", required_argument, 0, 'a'}, {"k", required_argument, 0, 'k'}, {"threads", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'j'}, {"dry-run", no_argument, 0, 'n'}, {"force", no_argument, 0, 'f'},
                                         {"allow-nonfinite", no_argument, 0, 1000}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    struct graft_tokensurgeon_params p = graft_tokensurgeon_default_params();
    p.n_threads = graft_n_cpus();
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            if (!strcmp(optarg, "omp")) p.approach = GRAFT_TOK_OMP;
            else if (!strcmp(optarg, "mean")) p.approach = GRAFT_TOK_MEAN;
            else if (!strcmp(optarg, "zero")) p.approach = GRAFT_TOK_ZERO;
            else if (!strcmp(optarg, "subword")) p.approach = GRAFT_TOK_SUBWORD;
            else return cli_usage("tokensurgeon", "--approach expects omp, mean, zero or subword, got '%s'", optarg);
            break;
        case 'k': if (!cli_int("tokensurgeon", "--k", optarg, 1, 1024, &p.k)) return GRAFT_EXIT_USAGE; break;
        case 't': if (!cli_threads("tokensurgeon", optarg, &p.n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'j': json = true; break;
        case 'n': p.dry_run = true; break;
        case 'f': p.writer_flags |= GRAFT_WRITER_FORCE; break;
        case 1000: p.writer_flags |= GRAFT_WRITER_ALLOW_NONFINITE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("tokensurgeon", "unknown option");
        }
    }
    if (argc - optind != 3 && !(p.dry_run && argc - optind == 2)) return cli_usage("tokensurgeon", "expected MODEL, DONOR and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_tokensurgeon_report r;
    double t0 = graft_now();
    if (graft_tokensurgeon(argv[optind], argv[optind + 1], p.dry_run ? "" : argv[optind + 2], &p, &r, &err)) return cli_fail(&err);
    if (json)
        printf("{\"vocab\": %llu, \"exact\": %llu, \"approximated\": %llu, \"unused\": %llu, \"shared\": %llu, \"omp_residual\": %.9g}\n",
               (unsigned long long)r.vocab, (unsigned long long)r.exact, (unsigned long long)r.approximated, (unsigned long long)r.unused,
               (unsigned long long)r.shared, r.omp_residual);
    else
        printf("vocabulary %llu: %llu tokens exact, %llu approximated, %llu rows unused\n", (unsigned long long)r.vocab, (unsigned long long)r.exact,
               (unsigned long long)r.approximated, (unsigned long long)r.unused);
    if (p.approach == GRAFT_TOK_OMP && r.approximated && !json)
        printf("omp: up to %d atoms (and at most the donor's width) from %llu shared tokens, mean relative residual %.4f in the donor's embedding space\n",
               p.k < (int)r.shared ? p.k : (int)r.shared, (unsigned long long)r.shared, r.omp_residual);
    if (p.dry_run) fprintf(stderr, "graft: dry run; nothing written\n");
    else fprintf(stderr, "graft: transplanted the tokenizer in %.2fs: %s\n", graft_now() - t0, argv[optind + 2]);
    return GRAFT_EXIT_OK;
}
