// graft dequantize: back from `graft quantize` to floating point.
#include <getopt.h>
#include <stdio.h>
#include "cli.h"

static const char help[] =
    "Usage: graft dequantize MODEL OUT [--dtype f32|f16|bf16] [--threads N] [--force] [--allow-nonfinite]\n"
    "\n"
    "Turn every integer tensor NAME that has a NAME_scale partner (as `graft quantize` writes them) back\n"
    "into ŵ = q·s; other tensors are copied. The dtype defaults to the one recorded in config.json's\n"
    "quantization_config (dequantized_dtype), else bf16. quantization_config is removed from config.json.\n"
    "\n"
    "Options:\n"
    "  --dtype T           f32, f16 or bf16\n"
    "  --threads N         worker threads (default: number of CPUs)\n"
    "  --allow-nonfinite   write values that overflow --dtype as infinite (with a warning) instead of failing\n"
    "  --force             replace OUT if it exists and is not empty\n"
    "  -h, --help          this text\n";

int cmd_dequantize(int argc, char **argv) {
    static const struct option opts[] = {{"dtype", required_argument, 0, 'd'}, {"threads", required_argument, 0, 't'},
                                         {"force", no_argument, 0, 'f'}, {"allow-nonfinite", no_argument, 0, 1000}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    enum graft_dtype dt = GRAFT_DTYPE_COUNT;
    int n_threads = graft_n_cpus(), c;
    unsigned flags = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (!cli_dtype("dequantize", optarg, &dt)) return GRAFT_EXIT_USAGE;
            if (dt != GRAFT_DTYPE_F32 && dt != GRAFT_DTYPE_F16 && dt != GRAFT_DTYPE_BF16) return cli_usage("dequantize", "--dtype expects f32, f16 or bf16");
            break;
        case 't': if (!cli_threads("dequantize", optarg, &n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'f': flags |= GRAFT_WRITER_FORCE; break;
        case 1000: flags |= GRAFT_WRITER_ALLOW_NONFINITE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("dequantize", "unknown option");
        }
    }
    if (argc - optind != 2) return cli_usage("dequantize", "expected MODEL and OUT");
    struct graft_err err;
    graft_err_clear(&err);
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) return cli_fail(&err);
    struct graft_progress prog;
    graft_progress_init(&prog, "dequantize", graft_model_n_bytes(m));
    size_t n = 0;
    double t0 = graft_now();
    int rc = graft_dequantize(m, argv[optind + 1], dt, n_threads, flags, &prog, &n, &err);
    graft_progress_finish(&prog);
    graft_model_close(m);
    if (rc) return cli_fail(&err);
    fprintf(stderr, "graft: dequantized %zu tensors in %.2fs: %s\n", n, graft_now() - t0, argv[optind + 1]);
    return GRAFT_EXIT_OK;
}
