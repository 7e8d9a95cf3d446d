// graft evolve: search merge parameters with CMA-ES, scoring each candidate merge by perplexity.
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "../core/impl.h"
#include "graft/cmaes.h"
#include "graft/eval.h"
#include "graft/genome.h"
#include "graft/merge.h"
#include "graft/tokenizer.h"

static const char help[] =
    "Usage: graft evolve GENOME.yml --eval TEXT... --budget N OUT [options]\n"
    "\n"
    "Search the numeric parameters of a merge with CMA-ES. GENOME.yml is a MergeKit merge config in which\n"
    "any number may be a search range: `weight: {search: [0, 1]}`, or `{search: [lo, hi], groups: G}` for\n"
    "G values given to MergeKit as a gradient list over the layers. Each candidate is merged in memory\n"
    "(nothing is written) and scored by its mean negative log-likelihood on the --eval texts (windows of\n"
    "--ctx tokens with BOS, as graft eval); lower is better. The search runs in [0, 1] per value (0 ↦ lo,\n"
    "1 ↦ hi, clipped), from 0.5 with σ0 = 1/6 (the evolutionary model merge paper's settings) and the\n"
    "population λ = 4 + ⌊3 ln n⌋. The budget is spent in whole generations (⌊N/λ⌋, at least one).\n"
    "\n"
    "Every evaluation and a per-generation summary (best, mean, σ) go to the log (JSON lines, default\n"
    "OUT.evolve.log); --resume replays it — the same seed gives the same candidates, so logged ones are\n"
    "not merged again — and continues, possibly with a larger budget. At the end the best candidate is\n"
    "merged into OUT (atomically), its plain MergeKit YAML as OUT/mergekit_config.yml.\n"
    "\n"
    "Options:\n"
    "  --eval FILE        UTF-8 text to score on (repeatable; required)\n"
    "  --budget N         number of candidate evaluations (required)\n"
    "  --seed S           CMA-ES draws and random merge methods (default 0)\n"
    "  --ctx N            window length (default 512)   --batch B   windows per forward pass (default 1)\n"
    "  --max-tokens N     score only the first N tokens of each text\n"
    "  --sigma S          initial step size in the [0, 1] search space (default 1/6)\n"
    "  --population L     λ (default 4 + ⌊3 ln n⌋)\n"
    "  --log FILE         the evaluation log (default OUT.evolve.log)\n"
    "  --resume           continue from the log instead of refusing to overwrite it\n"
    "  --threads N        worker threads (default: number of CPUs)\n"
    "  --force            replace OUT (and start a new log over an old one)\n"
    "  -h, --help         this text\n";

struct logged { int gen, k; double *x; double f; };

struct run {
    const char *genome_path, *out;
    struct graft_genome *g;
    int dim, n_threads, ctx, batch, max_tokens;
    uint64_t seed;
    const char **evals;
    int n_evals;
    int32_t **docs;
    size_t *lens;
    int32_t bos;
    bool have_docs;
    struct logged *log;
    size_t n_log;
    FILE *lf;
    struct graft_err *err;
};

static bool writer_lookup(void *ctx, const char *name, struct graft_tensor_ref *out) {
    const void *d;
    enum graft_dtype dt;
    int nd;
    const uint64_t *ne;
    if (!graft_writer_mem_tensor(ctx, name, &d, &dt, &nd, &ne)) return false;
    out->data = d, out->dtype = dt, out->n_dims = nd;
    out->ne[0] = nd > 0 ? ne[0] : 1, out->ne[1] = nd > 1 ? ne[1] : 1;
    return true;
}

// The eval texts, tokenized once with the tokenizer the merge carries (its donor's).
static int tokenize_evals(struct run *r, struct graft_writer *w) {
    size_t tl;
    const char *tj = graft_writer_mem_file(w, "tokenizer.json", &tl);
    if (!tj) return graft_err_set(r->err, GRAFT_E_NOTFOUND, r->genome_path, NULL, 0, "the merge's donor model has no tokenizer.json to read --eval texts with");
    struct graft_tokenizer *t;
    int rc = graft_tokenizer_load_texts(tj, tl, graft_writer_mem_file(w, "tokenizer_config.json", NULL), graft_writer_mem_file(w, "config.json", NULL),
                                        "tokenizer.json (of the merge's donor)", &t, r->err);
    if (rc) return rc;
    r->bos = graft_tokenizer_bos(t);
    for (int i = 0; i < r->n_evals && !rc; i++) rc = cli_encode_file(t, r->evals[i], &r->docs[i], &r->lens[i], r->err);
    graft_tokenizer_free(t);
    r->have_docs = !rc;
    return rc;
}

// One evaluated candidate's log line (lf NULL: nothing; the MPI ranks other than 0).
static void log_candidate(FILE *lf, int gen, int k, double f, const double *x, int dim) {
    if (!lf) return;
    fprintf(lf, "{\"gen\": %d, \"k\": %d, \"nll\": %.17g, \"x\": [", gen, k, f);
    for (int i = 0; i < dim; i++) fprintf(lf, "%s%.17g", i ? ", " : "", x[i]);
    fprintf(lf, "]}\n");
    fflush(lf);
}

// Merge the candidate in memory and score it: mean NLL per scored token.
static int evaluate(struct run *r, const char *yaml, double *nll) {
    struct graft_merge_options o = graft_merge_default_options();
    struct graft_writer *w = NULL;
    o.n_threads = r->n_threads, o.seed = r->seed, o.write_model_card = false, o.config_text = yaml, o.in_memory = &w;
    int rc = graft_merge(r->genome_path, r->out, &o, r->err);
    if (rc) return rc;
    struct graft_llama *L = NULL;
    if (!r->have_docs) rc = tokenize_evals(r, w);
    const char *cfg = rc ? NULL : graft_writer_mem_file(w, "config.json", NULL);
    if (!rc && !cfg) rc = graft_err_set(r->err, GRAFT_E_FORMAT, r->genome_path, NULL, 0, "the merge has no config.json");
    if (!rc) rc = graft_llama_new(cfg, writer_lookup, w, "candidate merge", r->n_threads, &L, r->err);
    struct graft_ppl_opts po = {r->ctx, 0, r->batch, r->bos, (size_t)r->max_tokens, NULL, NULL, NULL, NULL};
    struct graft_ppl_result res;
    if (!rc) rc = graft_eval_ppl(L, (const int32_t *const *)r->docs, r->lens, r->n_evals, &po, &res, r->err);
    if (!rc && !res.scored) rc = graft_err_set(r->err, GRAFT_E_USAGE, r->evals[0], NULL, 0, "the --eval texts have fewer than two tokens");
    if (!rc) *nll = res.nll / (double)res.scored;
    graft_llama_free(L);
    graft_writer_free(w);
    return rc;
}

static int read_log(struct run *r, const char *path, int lambda, double sigma0) {
    FILE *f = fopen(path, "r");
    if (!f) return graft_err_set(r->err, GRAFT_E_IO, path, NULL, 0, "cannot read the log to resume from");
    char *line = NULL;
    size_t cap = 0;
    int rc = GRAFT_OK, ln = 0;
    for (ssize_t n; !rc && (n = getline(&line, &cap, f)) > 0;) {
        ln++;
        json_t *j = json_loads(line, 0, NULL);
        if (!json_is_object(j)) { json_decref(j); if (n > 1) rc = graft_err_set(r->err, GRAFT_E_FORMAT, path, NULL, 0, "line %d is not a JSON object", ln); continue; }
        if (ln == 1) {
            if (json_integer_value(json_object_get(j, "dim")) != r->dim || json_integer_value(json_object_get(j, "lambda")) != lambda ||
                (uint64_t)json_integer_value(json_object_get(j, "seed")) != r->seed || json_real_value(json_object_get(j, "sigma0")) != sigma0)
                rc = graft_err_set(r->err, GRAFT_E_USAGE, path, NULL, 0, "the log was written for another genome, seed, σ0 or population; use another --log");
        } else if (json_object_get(j, "nll")) {
            json_t *x = json_object_get(j, "x");
            struct logged *nl = realloc(r->log, (r->n_log + 1) * sizeof *nl);
            double *xv = malloc((size_t)r->dim * sizeof *xv);
            if (!nl || !xv || json_array_size(x) != (size_t)r->dim) {
                free(xv);
                if (nl) r->log = nl;
                rc = nl && xv ? graft_err_set(r->err, GRAFT_E_FORMAT, path, NULL, 0, "line %d: x has the wrong length", ln) : graft_err_set(r->err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
            } else {
                r->log = nl;
                for (int i = 0; i < r->dim; i++) xv[i] = json_number_value(json_array_get(x, (size_t)i));
                r->log[r->n_log++] = (struct logged){(int)json_integer_value(json_object_get(j, "gen")), (int)json_integer_value(json_object_get(j, "k")), xv,
                                                     json_number_value(json_object_get(j, "nll"))};
            }
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return rc;
}

static const struct logged *find_logged(const struct run *r, int gen, int k) {
    for (size_t i = 0; i < r->n_log; i++)
        if (r->log[i].gen == gen && r->log[i].k == k) return &r->log[i];
    return NULL;
}

int cmd_evolve(int argc, char **argv) {
    static const struct option opts[] = {
        {"eval", required_argument, 0, 'e'}, {"budget", required_argument, 0, 'n'}, {"seed", required_argument, 0, 's'},
        {"ctx", required_argument, 0, 'c'}, {"batch", required_argument, 0, 'b'}, {"max-tokens", required_argument, 0, 'm'},
        {"sigma", required_argument, 0, 'S'}, {"population", required_argument, 0, 'p'}, {"log", required_argument, 0, 'l'},
        {"resume", no_argument, 0, 'r'}, {"threads", required_argument, 0, 't'}, {"force", no_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *evals[256], *log_path = NULL;
    int n_evals = 0, budget = 0, ctx = 512, batch = 1, max_tokens = 0, lambda = 0, n_threads = graft_n_cpus(), c;
    double sigma0 = 1.0 / 6;
    uint64_t seed = 0;
    bool resume = false, force = false;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'e':
            if (n_evals == 256) return cli_usage("evolve", "at most 256 --eval files");
            evals[n_evals++] = optarg;
            break;
        case 'n': if (!cli_int("evolve", "--budget", optarg, 1, 1000000, &budget)) return GRAFT_EXIT_USAGE; break;
        case 's':
            if (!graft_parse_u64(optarg, UINT64_MAX, &seed)) return cli_usage("evolve", "--seed expects a whole number, got '%s'", optarg);
            break;
        case 'c': if (!cli_int("evolve", "--ctx", optarg, 3, 1 << 20, &ctx)) return GRAFT_EXIT_USAGE; break;
        case 'b': if (!cli_int("evolve", "--batch", optarg, 1, 4096, &batch)) return GRAFT_EXIT_USAGE; break;
        case 'm': if (!cli_int("evolve", "--max-tokens", optarg, 2, INT32_MAX, &max_tokens)) return GRAFT_EXIT_USAGE; break;
        case 'S': if (!cli_float("evolve", "--sigma", optarg, 1e-6, 10, &sigma0)) return GRAFT_EXIT_USAGE; break;
        case 'p': if (!cli_int("evolve", "--population", optarg, 2, 10000, &lambda)) return GRAFT_EXIT_USAGE; break;
        case 'l': log_path = optarg; break;
        case 'r': resume = true; break;
        case 't': if (!cli_threads("evolve", optarg, &n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'f': force = true; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("evolve", "unknown option");
        }
    }
    if (argc - optind != 2) return cli_usage("evolve", "expected GENOME.yml and OUT");
    if (!n_evals) return cli_usage("evolve", "give at least one --eval FILE");
    if (!budget) return cli_usage("evolve", "give --budget N (candidate evaluations)");
    struct graft_err err;
    graft_err_clear(&err);
    struct run r = {.genome_path = argv[optind], .out = argv[optind + 1], .n_threads = n_threads, .ctx = ctx, .batch = batch,
                    .max_tokens = max_tokens, .seed = seed, .evals = evals, .n_evals = n_evals, .err = &err};
    char *lp = log_path ? strdup(log_path) : NULL, *best_yaml = NULL;
    if (!lp && asprintf(&lp, "%s.evolve.log", r.out) < 0) lp = NULL;
    r.docs = calloc((size_t)n_evals, sizeof *r.docs), r.lens = calloc((size_t)n_evals, sizeof *r.lens);
    struct graft_cmaes *es = NULL;
    double *x0 = NULL, *fit = NULL, *share = NULL, best = INFINITY;
    int rc = GRAFT_OK;
    if (!lp || !r.docs || !r.lens) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    if (access(r.out, F_OK) == 0 && !force) {
        rc = graft_err_set(&err, GRAFT_E_EXISTS, r.out, NULL, 0, "already exists; use --force to replace it");
        goto out;
    }
    if ((rc = graft_genome_load(r.genome_path, &r.g, &err))) goto out;
    r.dim = graft_genome_dim(r.g);
    if (!(x0 = malloc((size_t)r.dim * sizeof *x0))) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    for (int i = 0; i < r.dim; i++) x0[i] = 0.5;
    struct graft_cmaes_params cp = {r.dim, lambda, sigma0, x0, seed};
    if ((rc = graft_cmaes_new(&cp, &es, &err))) goto out;
    int lam = graft_cmaes_lambda(es), gens = budget / lam ? budget / lam : 1;
    if (!(fit = malloc((size_t)lam * sizeof *fit))) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    bool log_exists = access(lp, F_OK) == 0;
    if (log_exists && !resume && !force) {
        rc = graft_err_set(&err, GRAFT_E_EXISTS, lp, NULL, 0, "an evolve log is already there; --resume continues it, --force starts over");
        goto out;
    }
    if (resume && log_exists && (rc = read_log(&r, lp, lam, sigma0))) goto out;
    // under mpirun every rank has read the same log before rank 0 (the only writer of it) opens it
    const struct graft_dist *d = cli_dist();
    if (d && (rc = graft__dist_status(d, rc, lp, &err))) goto out;
    if (!cli_quiet() && !(r.lf = fopen(lp, resume && log_exists ? "a" : "w"))) rc = graft_err_set(&err, GRAFT_E_IO, lp, NULL, 0, "cannot write the log");
    if (d && (rc = graft__dist_status(d, rc, lp, &err))) goto out;
    if (rc) goto out;
    if (r.lf && !(resume && log_exists))
        fprintf(r.lf, "{\"graft_evolve\": 1, \"genome\": \"%s\", \"dim\": %d, \"lambda\": %d, \"seed\": %llu, \"sigma0\": %.17g}\n", r.genome_path, r.dim, lam,
                (unsigned long long)seed, sigma0);
    if (!cli_quiet())
        fprintf(stderr, "graft: evolve: %d searched values, λ = %d, %d generations (%d evaluations)%s%s\n", r.dim, lam, gens, gens * lam,
                r.n_log ? ", resuming from the log" : "", d ? ", candidates shared by the MPI ranks" : "");
    share = d ? calloc((size_t)lam, sizeof *share) : NULL; // under mpirun: candidate k's score from rank k mod N
    if (d && !share) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    for (int gen = 0; gen < gens && !rc; gen++) {
        const double *X = graft_cmaes_ask(es);
        double sum = 0, gbest = INFINITY;
        int fresh = 0;
        // candidates scored first (under mpirun: each on its rank, the scores then gathered), then taken
        // in order as one process takes them
        for (int k = 0; k < lam && !rc; k++) {
            const double *x = X + (size_t)k * r.dim;
            const struct logged *lg = find_logged(&r, gen, k);
            if (lg && memcmp(lg->x, x, (size_t)r.dim * sizeof *x)) {
                rc = graft_err_set(&err, GRAFT_E_USAGE, lp, NULL, 0, "generation %d candidate %d differs from the log: it was written for another genome or seed", gen, k);
                break;
            }
            if (d && k % d->size != d->rank) { share[k] = 0; continue; }
            if (lg) fit[k] = lg->f;
            else {
                char *yaml = graft_genome_render(r.g, x);
                if (!yaml) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
                rc = evaluate(&r, yaml, &fit[k]);
                free(yaml);
                if (rc == GRAFT_E_NONFINITE) fit[k] = 1e30, rc = GRAFT_OK, graft_err_clear(&err); // activations overflow: the worst score
                if (!rc && !d) log_candidate(r.lf, gen, k, fit[k], x, r.dim); // at once: a killed run resumes from here
            }
            if (d) share[k] = fit[k];
        }
        if (d) { // every rank: agree on the status, then every rank has every score (x + 0 + … exact)
            rc = graft__dist_status(d, rc, lp, &err);
            if (!rc && d->sum_f64(d->ctx, share, (size_t)lam)) rc = graft_err_set(&err, GRAFT_E_IO, lp, NULL, 0, "MPI reduction failed");
            for (int k = 0; !rc && k < lam; k++) fit[k] = share[k];
        }
        for (int k = 0; k < lam && !rc; k++) {
            const double *x = X + (size_t)k * r.dim;
            char *yaml = graft_genome_render(r.g, x);
            if (!yaml) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
            if (!find_logged(&r, gen, k)) {
                fresh++;
                if (d) log_candidate(r.lf, gen, k, fit[k], x, r.dim); // rank 0 (the others have no log open)
            }
            sum += fit[k];
            if (fit[k] < gbest) gbest = fit[k];
            if (fit[k] < best) free(best_yaml), best_yaml = yaml, best = fit[k];
            else free(yaml);
        }
        if (rc) break;
        double sigma = graft_cmaes_sigma(es);
        if ((rc = graft_cmaes_tell(es, fit, &err))) break;
        if (fresh && r.lf) {
            fprintf(r.lf, "{\"gen\": %d, \"best\": %.9g, \"mean\": %.9g, \"sigma\": %.9g, \"best_so_far\": %.9g}\n", gen, gbest, sum / lam, sigma, best);
            fflush(r.lf);
            fsync(fileno(r.lf));
        }
        if (!cli_quiet())
            fprintf(stderr, "graft: generation %d/%d: best NLL %.6f, mean %.6f, σ %.4f; best so far %.6f (perplexity %.4f)\n", gen + 1, gens, gbest,
                    sum / lam, sigma, best, exp(best));
    }
    if (rc) goto out;
    // the best candidate, merged for real
    struct graft_merge_options o = graft_merge_default_options();
    o.n_threads = n_threads, o.seed = seed, o.config_text = best_yaml, o.writer_flags = force ? GRAFT_WRITER_FORCE : 0;
    o.dist = d; // the winner's merge, too, shared by the ranks
    if ((rc = graft_merge(r.genome_path, r.out, &o, &err))) goto out;
    if (cli_quiet()) goto out;
    fprintf(stderr, "graft: best mean NLL %.6f (perplexity %.4f) written to %s; its config: %s/mergekit_config.yml\n", best, exp(best), r.out, r.out);
    fputs(best_yaml, stdout);
out:
    if (r.lf) fclose(r.lf);
    for (size_t i = 0; i < r.n_log; i++) free(r.log[i].x);
    free(r.log);
    for (int i = 0; r.docs && i < n_evals; i++) free(r.docs[i]);
    free(r.docs), free(r.lens), free(x0), free(fit), free(best_yaml), free(lp), free(share);
    graft_cmaes_free(es);
    graft_genome_free(r.g);
    return rc ? cli_fail(&err) : GRAFT_EXIT_OK;
}
