// graft evolve: search merge parameters with CMA-ES, scoring each candidate merge by perplexity.
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include "cli.h"
#include "../core/impl.h"
#include "../eval/eval-impl.h"
#include "graft/cmaes.h"
#include "graft/eval.h"
#include "graft/genome.h"
#include "graft/merge.h"
#include "graft/tokenizer.h"

static const char help[] =
    "Usage: graft evolve GENOME.yml --eval TEXT... --budget N OUT [options]\n"
    "\n"
    "Search the parameters of a merge with CMA-ES. GENOME.yml is a MergeKit merge config in which any\n"
    "number may be a search range: `weight: {search: [0, 1]}`, `{search: [lo, hi], groups: G}` for G\n"
    "values given to MergeKit as a gradient list over the layers, `init: x` (or G values) for its\n"
    "starting value; and any plain value a choice: `merge_method: {choice: [ties, dare_ties], init: ties}`.\n"
    "Ranges inside MergeKit filter lists (`weight: [{filter: mlp, value: {search: ...}}, ...]`) search\n"
    "attention, MLP and other modules apart. A candidate that does not merge (a chosen method refusing\n"
    "another's parameters) or whose activations overflow scores worst; the baseline must merge. Each\n"
    "candidate is merged in memory (nothing is written) and\n"
    "scored on each --eval text by its mean negative log-likelihood per token (windows of --ctx tokens\n"
    "with BOS, as graft eval); lower is better. The search runs in [0, 1] per value (0 ↦ lo, 1 ↦ hi,\n"
    "clipped; a choice's items take equal bins), population λ = 4 + ⌊3 ln n⌋, σ0 = 1/6.\n"
    "\n"
    "Data-flow space (the evolutionary model merge paper): a genome `dataflow: {models: [A, B], repeats:\n"
    "2, scale: true, scale_range: [0.5, 2]}` (other keys such as dtype kept) lays the models' layers out\n"
    "in order, the whole repeated; each slot is in or out of the path, and with scale each path layer's\n"
    "input (the residual stream) is scaled. A candidate is a passthrough frankenmerge: one slice per\n"
    "path layer, its o_proj and down_proj scaled by 1/(the product of the scales so far) — the same\n"
    "function up to the norms' ε; embeddings from the first slice's model, final norm and lm_head from\n"
    "the last's (MergeKit's rule). Its baseline is model A as it is. Combine both spaces as the paper\n"
    "does: search the parameters, then the data flow over [the result, A, B, ...].\n"
    "\n"
    "Start: the first generation is the baseline — every init value, else for weights 1 / the number of\n"
    "models merged (the equal-weight average for linear and task_arithmetic), else the middle of each\n"
    "range, a choice's first item — and λ − 1 Latin-hypercube points; CMA-ES then starts at the best of\n"
    "them. Every generation's best is reported against the baseline. The budget is spent in whole\n"
    "generations (⌊N/λ⌋, at least one).\n"
    "\n"
    "Objectives (--objective): mean (default) of the texts' NLLs, max (the worst text), or pareto (each\n"
    "generation ranked by Pareto fronts, then by the mean; the front of all candidates goes to the log and\n"
    "stderr with the best for each text; OUT is the front's best mean). --race stops a candidate's\n"
    "evaluation early once it is worse than the best full evaluation of the earlier generations by Z\n"
    "standard errors (windows in a seeded random order, each paired with the best's loss on it; mean\n"
    "objective, one process); the windows saved are reported.\n"
    "\n"
    "The inputs are opened and validated once; a tensor whose recipe (inputs, method, parameters, seeds)\n"
    "is the previous candidate's is copied from it instead of merged again.\n"
    "\n"
    "Every evaluation and a per-generation summary go to the log (JSON lines, default OUT.evolve.log);\n"
    "--resume replays it — the same seed gives the same candidates, so logged ones are not merged again —\n"
    "and continues, possibly with a larger budget. At the end the best candidate is merged into OUT\n"
    "(atomically), its plain MergeKit YAML as OUT/mergekit_config.yml.\n"
    "\n"
    "Options:\n"
    "  --eval FILE        UTF-8 text to score on (repeatable; required)\n"
    "  --budget N         number of candidate evaluations (required)\n"
    "  --objective O      mean (default), max or pareto\n"
    "  --race             stop clearly worse candidates early (--objective mean)\n"
    "  --race-z Z         the confidence bound in standard errors (default 3)\n"
    "  --seed S           CMA-ES draws, the initial design and random merge methods (default 0)\n"
    "  --ctx N            window length (default 512)   --batch B   windows per forward pass (default 1)\n"
    "  --max-tokens N     score only the first N tokens of each text\n"
    "  --matmul f32|bf16  products with BF16 weights as graft eval computes them (default f32; bf16:\n"
    "                     activations rounded to bf16 first, as llama.cpp; faster on CPUs with\n"
    "                     AVX512-BF16; the best's NLL is then `graft eval --matmul bf16`'s)\n"
    "  --sigma S          initial step size in the [0, 1] search space (default 1/6)\n"
    "  --population L     λ (default 4 + ⌊3 ln n⌋)\n"
    "  --log FILE         the evaluation log (default OUT.evolve.log)\n"
    "  --resume           continue from the log instead of refusing to overwrite it\n"
    "  --threads N        worker threads (default: number of CPUs)\n"
    "  --force            replace OUT (and start a new log over an old one)\n"
    "  -h, --help         this text\n";

struct logged { int gen, k; double *x; double f, *nlls, *w; bool raced; size_t n_w; }; // w: per-window NLLs (racing), or NULL

enum objective { OBJ_MEAN, OBJ_MAX, OBJ_PARETO };
static const char *const obj_name[] = {"mean", "max", "pareto"};

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
    uint64_t tok_fp;             // what the texts were tokenized with (tok_fingerprint)
    bool fatal;                  // the error stops the search (not a candidate scored as the worst)
    enum objective obj;
    bool race;
    double race_z;
    enum graft_matmul matmul;
    struct graft_model_cache *cache; // the inputs, opened and validated once for every candidate
    struct graft_merge_reuse *reuse; // the previous candidate's tensors, copied where nothing changed
    struct graft__window *win;   // every text's windows, in scoring order (--race: a seeded shuffle)
    size_t n_win;
    uint64_t *text_scored;       // scored tokens per text
    double best_full;            // the best fully evaluated objective so far (racing's bar)
    double *bar_w;               // its per-window NLLs, in window order (racing; NULL: not known)
    size_t bar_n;                // their count
    double *cur_w;               // the candidate being scored: its per-window NLLs (racing)
    uint64_t win_done, win_all;  // windows evaluated and windows the full evaluations would have taken
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

// The texts' windows as graft eval makes them (graft__ppl_windows, no stride), those with a scored
// token kept; with --race in a seeded random order, the same for every candidate.
static int build_windows(struct run *r) {
    struct graft_ppl_opts po = {r->ctx, 0, r->batch, r->bos, (size_t)r->max_tokens, NULL, NULL, NULL, NULL};
    int rc = graft__ppl_windows((const int32_t *const *)r->docs, r->lens, r->n_evals, &po, &r->win, &r->n_win, r->err);
    if (rc) return rc;
    if (!(r->text_scored = calloc((size_t)r->n_evals, sizeof *r->text_scored))) return graft_err_set(r->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    size_t kept = 0;
    for (size_t w = 0; w < r->n_win; w++) {
        size_t len = r->win[w].n + (r->bos >= 0);
        if (len <= (size_t)r->win[w].score_from) continue;
        r->text_scored[r->win[w].doc] += len - (size_t)r->win[w].score_from;
        r->win[kept++] = r->win[w];
    }
    r->n_win = kept;
    for (int t = 0; t < r->n_evals; t++)
        if (!r->text_scored[t]) return graft_err_set(r->err, GRAFT_E_USAGE, r->evals[t], NULL, 0, "fewer than two tokens to score");
    if (r->race && !(r->cur_w = malloc(r->n_win * sizeof *r->cur_w))) return graft_err_set(r->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    if (r->race) { // Fisher–Yates from the counter-based generator
        uint64_t key = graft_rng_key(r->seed, 0, "evolve-race", 11);
        for (size_t i = r->n_win; i > 1; i--) {
            size_t j = (size_t)(graft__rng_u64(key, i) % i);
            struct graft__window t = r->win[i - 1];
            r->win[i - 1] = r->win[j], r->win[j] = t;
        }
    }
    return GRAFT_OK;
}

// FNV-1a continued over v as 8 little-endian bytes.
static uint64_t fnv_u64(uint64_t h, uint64_t v) {
    unsigned char le[8];
    for (int j = 0; j < 8; j++) le[j] = (unsigned char)(v >> (8 * j));
    return graft__fnv64(h, le, sizeof le);
}

// What tokenizing depends on: tokenizer.json, tokenizer_config.json and config.json's bos_token_id
// (apply_bos's fallback), as the merge carries them.
static uint64_t tok_fingerprint(const struct graft_writer *w) {
    uint64_t h = GRAFT_FNV64_INIT;
    size_t n;
    for (int i = 0; i < 2; i++) {
        const char *f = graft_writer_mem_file(w, i ? "tokenizer_config.json" : "tokenizer.json", &n);
        if (f) h = graft__fnv64(h, f, n);
        h = graft__fnv64(h, "\xff", 1);
    }
    const char *cfg = graft_writer_mem_file(w, "config.json", NULL);
    json_t *c = cfg ? json_loads(cfg, 0, NULL) : NULL, *id = json_object_get(c, "bos_token_id");
    if (json_is_integer(id)) h = fnv_u64(h, (uint64_t)json_integer_value(id));
    json_decref(c);
    return h;
}

// Tokenize the eval texts with the merge's tokenizer into docs/lens (freed again on failure).
static int tokenize_into(struct run *r, const struct graft_writer *w, int32_t **docs, size_t *lens, int32_t *bos) {
    size_t tl;
    const char *tj = graft_writer_mem_file(w, "tokenizer.json", &tl);
    if (!tj) return graft_err_set(r->err, GRAFT_E_NOTFOUND, r->genome_path, NULL, 0, "the merge's donor model has no tokenizer.json to read --eval texts with");
    struct graft_tokenizer *t;
    int rc = graft_tokenizer_load_texts(tj, tl, graft_writer_mem_file(w, "tokenizer_config.json", NULL), graft_writer_mem_file(w, "config.json", NULL),
                                        "tokenizer.json (of the merge's donor)", &t, r->err);
    if (rc) return rc;
    *bos = graft_tokenizer_bos(t);
    for (int i = 0; i < r->n_evals && !rc; i++) rc = cli_encode_file(t, r->evals[i], &docs[i], &lens[i], r->err);
    for (int i = 0; rc && i < r->n_evals; i++) free(docs[i]), docs[i] = NULL;
    graft_tokenizer_free(t);
    return rc;
}

// The texts' tokens come from the first candidate that merges (a failure: a later one tries again).
// Every later candidate must tokenize them the same — NLL per token does not compare across
// tokenizers, and a resumed run must score as a fresh one — so one whose tokenizer files differ (say
// a choice of base_model or tokenizer_source) is checked by tokenizing again, and stops the search
// if the tokens differ.
static int tokenize_evals(struct run *r, const struct graft_writer *w) {
    uint64_t tf = tok_fingerprint(w);
    if (!r->have_docs) {
        int rc = tokenize_into(r, w, r->docs, r->lens, &r->bos);
        r->have_docs = !rc, r->tok_fp = tf;
        return rc ? rc : build_windows(r);
    }
    if (tf == r->tok_fp) return GRAFT_OK;
    int32_t **docs = calloc((size_t)r->n_evals, sizeof *docs), bos;
    size_t *lens = calloc((size_t)r->n_evals, sizeof *lens);
    int rc = docs && lens ? tokenize_into(r, w, docs, lens, &bos) : graft_err_set(r->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    bool same = !rc && bos == r->bos;
    for (int i = 0; same && i < r->n_evals; i++) same = lens[i] == r->lens[i] && !memcmp(docs[i], r->docs[i], lens[i] * sizeof *docs[i]);
    for (int i = 0; docs && i < r->n_evals; i++) free(docs[i]);
    free(docs), free(lens);
    if (same) r->tok_fp = tf;
    else if (!rc)
        r->fatal = true, rc = graft_err_set(r->err, GRAFT_E_CONFIG, r->genome_path, NULL, 0,
                                            "this candidate's tokenizer reads the --eval texts differently from the first's, and NLL per token "
                                            "does not compare across tokenizers: fix it (tokenizer_source) or choose among models that share one");
    return rc;
}

// One evaluated candidate's log line (lf NULL: nothing; the MPI ranks other than 0), written with one
// call and flushed: a killed run leaves whole lines (and at most a cut last one, dropped on resume).
static void log_candidate(FILE *lf, int gen, int k, double f, const double *nlls, int n_texts, bool raced, const double *wv, size_t n_win, const double *x,
                          int dim) {
    if (!lf) return;
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    graft__buf_printf(&b, "{\"gen\": %d, \"k\": %d, \"nll\": %.17g, \"nlls\": [", gen, k, f);
    for (int i = 0; i < n_texts; i++) graft__buf_printf(&b, "%s%.17g", i ? ", " : "", isfinite(nlls[i]) ? nlls[i] : 1e30);
    graft__buf_printf(&b, "]%s", raced ? ", \"raced\": true" : "");
    if (wv && !raced) { // a full evaluation's windows: racing's bar after a resume
        graft__buf_puts(&b, ", \"w\": [");
        for (size_t i = 0; i < n_win; i++) graft__buf_printf(&b, "%s%.17g", i ? ", " : "", wv[i]);
        graft__buf_puts(&b, "]");
    }
    graft__buf_puts(&b, ", \"x\": [");
    for (int i = 0; i < dim; i++) graft__buf_printf(&b, "%s%.17g", i ? ", " : "", x[i]);
    graft__buf_puts(&b, "]}\n");
    if (!b.failed) fwrite(b.data, 1, b.len, lf);
    fflush(lf);
    graft__buf_free(&b);
}

// What the log's candidates depend on beyond the header's numbers: the genome's and the --eval texts'
// bytes, ctx, max-tokens, a --batch above 1 (it changes the sums' order) and --matmul bf16 (FNV-1a, 64
// bits; batch 1 and f32 add nothing, so older logs resume).
static int fingerprint(const struct run *r, uint64_t *out) {
    uint64_t h = GRAFT_FNV64_INIT;
    const char *files[257];
    files[0] = r->genome_path;
    for (int i = 0; i < r->n_evals; i++) files[i + 1] = r->evals[i];
    unsigned char buf[65536];
    for (int i = 0; i <= r->n_evals; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) return graft_err_set(r->err, GRAFT_E_IO, files[i], NULL, 0, "cannot read: %s", strerror(errno));
        for (size_t n; (n = fread(buf, 1, sizeof buf, f)) > 0;) h = graft__fnv64(h, buf, n);
        fclose(f);
        h = graft__fnv64(h, "\xff", 1); // file boundary
    }
    h = fnv_u64(fnv_u64(h, (uint64_t)r->ctx), (uint64_t)r->max_tokens);
    int batch = r->race ? 1 : r->batch; // (racing runs one window at a time)
    if (batch > 1) h = fnv_u64(graft__fnv64(h, "batch", 5), (uint64_t)batch);
    if (r->matmul == GRAFT_MATMUL_BF16) h = graft__fnv64(h, "bf16", 4);
    *out = h;
    return GRAFT_OK;
}

// n doubles, every one NaN (racing's per-window rows: a row never filled is never a bar)
static double *nan_rows(size_t n) {
    double *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; v && i < n; i++) v[i] = NAN;
    return v;
}

static double objective(const struct run *r, const double *nlls) {
    double m = r->obj == OBJ_MAX ? -INFINITY : 0;
    for (int t = 0; t < r->n_evals; t++) m = r->obj == OBJ_MAX ? (nlls[t] > m ? nlls[t] : m) : m + nlls[t] / r->n_evals;
    return m;
}

// Score the merged model: each text's mean NLL per token (nlls), the objective (*f) and, with racing,
// each window's NLL (wv). Racing runs the windows in their shuffled order, one at a time, paired with
// the bar (the best full evaluation of the earlier generations): with y_w = c_w (nll_w − bar_w), c_w
// the window's weight in the objective, after k of W windows the difference is estimated as W·ȳ with
// standard error W·s_y/√k·√((W − k)/(W − 1)) (sampling without replacement); evaluation stops once
// the estimate less z standard errors is above 0. Then *f = bar + the estimate, *raced set. Pairing
// cancels how hard each window is, which dominates the unpaired variance.
static int score(struct run *r, struct graft_llama *L, double *nlls, double *f, bool *raced) {
    double *wv = r->cur_w;
    bool bos = r->bos >= 0, racing = r->race && r->bar_w && r->bar_n == r->n_win;
    size_t ctx = (size_t)r->ctx, B = r->race ? 1 : (size_t)r->batch, W = r->n_win, k = 0;
    int32_t *buf = malloc(B * ctx * sizeof *buf);
    int *sf = malloc(B * sizeof *sf);
    double *nll = calloc((size_t)r->n_evals, sizeof *nll), sy = 0, syy = 0;
    uint64_t *sc = calloc((size_t)r->n_evals, sizeof *sc);
    int rc = buf && sf && nll && sc ? GRAFT_OK : graft_err_set(r->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    *raced = false;
    for (size_t w = 0; w < W && !rc;) {
        size_t len = r->win[w].n + bos, nb = 0;
        while (w + nb < W && nb < B && r->win[w + nb].n + bos == len && r->win[w + nb].doc == r->win[w].doc) {
            int32_t *p = buf + nb * len;
            if (bos) *p++ = r->bos;
            memcpy(p, r->win[w + nb].src, r->win[w + nb].n * sizeof *p);
            sf[nb] = r->win[w + nb].score_from;
            nb++;
        }
        double b_nll = 0;
        uint64_t b_sc = 0;
        if ((rc = graft_llama_forward(L, buf, (int)nb, (int)len, sf, &b_nll, &b_sc, NULL, NULL, r->err))) break;
        int t = r->win[w].doc;
        nll[t] += b_nll, sc[t] += b_sc;
        if (r->race) wv[w] = b_nll; // (one window per forward when racing)
        w += nb, k += nb;
        if (!racing) continue;
        double y = (b_nll - r->bar_w[w - 1]) / ((double)r->n_evals * (double)r->text_scored[t]);
        sy += y, syy += y * y;
        if (k < 4 || k * 10 < W || k == W) continue; // at least 4 windows and a tenth of them
        double mean = sy / (double)k, var = (syy - sy * mean) / (double)(k - 1), est = (double)W * mean;
        double se = (double)W * sqrt((var > 0 ? var : 0) / (double)k * (double)(W - k) / (double)(W - 1));
        if (est - r->race_z * se > 0) {
            *raced = true, *f = r->best_full + est;
            break;
        }
    }
    for (int t = 0; !rc && t < r->n_evals; t++) nlls[t] = sc[t] ? nll[t] / (double)sc[t] : NAN;
    if (!rc && !*raced) *f = objective(r, nlls);
    for (size_t w = k; r->race && w < W; w++) wv[w] = NAN; // not run
    r->win_done += k, r->win_all += W;
    free(buf), free(sf), free(nll), free(sc);
    return rc;
}

// Merge the candidate in memory and score it.
static int evaluate(struct run *r, const char *yaml, double *nlls, double *f, bool *raced) {
    struct graft_merge_options o = graft_merge_default_options();
    struct graft_writer *w = NULL;
    o.n_threads = r->n_threads, o.seed = r->seed, o.write_model_card = false, o.config_text = yaml, o.in_memory = &w, o.cache = r->cache, o.reuse = r->reuse;
    int rc = graft_merge(r->genome_path, r->out, &o, r->err);
    if (rc) return rc;
    struct graft_llama *L = NULL;
    rc = tokenize_evals(r, w);
    const char *cfg = rc ? NULL : graft_writer_mem_file(w, "config.json", NULL);
    if (!rc && !cfg) rc = graft_err_set(r->err, GRAFT_E_FORMAT, r->genome_path, NULL, 0, "the merge has no config.json");
    if (!rc) rc = graft_llama_new(cfg, writer_lookup, w, "candidate merge", r->n_threads, &L, r->err);
    if (!rc) graft_llama_set_matmul(L, r->matmul);
    if (!rc) rc = score(r, L, nlls, f, raced);
    graft_llama_free(L);
    if (!r->reuse) graft_writer_free(w); // (with reuse the writer is kept for the next candidate)
    return rc;
}

// The log of an earlier run: its candidates into r->log; *good_end: the bytes up to its last whole line
// (a run killed mid-write leaves a cut last line, dropped); *has_header: false for an empty log.
static int read_log(struct run *r, const char *path, int lambda, double sigma0, uint64_t fp, long *good_end, bool *has_header) {
    FILE *f = fopen(path, "r");
    if (!f) return graft_err_set(r->err, GRAFT_E_IO, path, NULL, 0, "cannot read the log to resume from");
    char *line = NULL;
    size_t cap = 0;
    int rc = GRAFT_OK, ln = 0;
    *good_end = 0, *has_header = false;
    for (ssize_t n; !rc && (n = getline(&line, &cap, f)) > 0;) {
        if (line[n - 1] != '\n') break; // cut by a kill: not read
        ln++;
        *good_end += n; // (a blank line too: appending after it keeps the last line whole)
        json_t *j = json_loads(line, 0, NULL);
        if (!json_is_object(j)) { json_decref(j); if (n > 1) rc = graft_err_set(r->err, GRAFT_E_FORMAT, path, NULL, 0, "line %d is not a JSON object", ln); continue; }
        if (ln == 1) {
            char want[20];
            snprintf(want, sizeof want, "%016llx", (unsigned long long)fp);
            const char *ob = json_string_value(json_object_get(j, "objective")), *fps = json_string_value(json_object_get(j, "fingerprint"));
            *has_header = true;
            if (json_integer_value(json_object_get(j, "graft_evolve")) != 3 || json_integer_value(json_object_get(j, "dim")) != r->dim ||
                json_integer_value(json_object_get(j, "lambda")) != lambda || (uint64_t)json_integer_value(json_object_get(j, "seed")) != r->seed ||
                json_number_value(json_object_get(j, "sigma0")) != sigma0 || !ob || strcmp(ob, obj_name[r->obj]) ||
                json_is_true(json_object_get(j, "race")) != r->race || (r->race && json_number_value(json_object_get(j, "race_z")) != r->race_z) ||
                json_integer_value(json_object_get(j, "texts")) != r->n_evals || !fps || strcmp(fps, want))
                rc = graft_err_set(r->err, GRAFT_E_USAGE, path, NULL, 0, "the log was written for another genome, --eval texts, ctx, max-tokens, batch, "
                                                                       "matmul, seed, σ0, population, objective or racing (or by another graft); use another --log");
        } else if (json_object_get(j, "nll")) {
            json_t *x = json_object_get(j, "x"), *ns = json_object_get(j, "nlls");
            struct logged *nl = realloc(r->log, (r->n_log + 1) * sizeof *nl);
            double *xv = malloc((size_t)r->dim * sizeof *xv), *nv = malloc((size_t)r->n_evals * sizeof *nv);
            if (nl) r->log = nl;
            if (!nl || !xv || !nv || json_array_size(x) != (size_t)r->dim || json_array_size(ns) != (size_t)r->n_evals) {
                free(xv), free(nv);
                rc = nl && xv && nv ? graft_err_set(r->err, GRAFT_E_FORMAT, path, NULL, 0, "line %d: x or nlls has the wrong length", ln)
                                    : graft_err_set(r->err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
            } else {
                for (int i = 0; i < r->dim; i++) xv[i] = json_number_value(json_array_get(x, (size_t)i));
                for (int i = 0; i < r->n_evals; i++) nv[i] = json_number_value(json_array_get(ns, (size_t)i));
                json_t *wj = json_object_get(j, "w");
                if (!json_array_size(wj)) wj = NULL; // ("w": [] holds nothing to race against)
                double *wv = json_is_array(wj) ? malloc((json_array_size(wj) + 1) * sizeof *wv) : NULL;
                for (size_t i = 0; wv && i < json_array_size(wj); i++) wv[i] = json_number_value(json_array_get(wj, i));
                r->log[r->n_log++] = (struct logged){(int)json_integer_value(json_object_get(j, "gen")), (int)json_integer_value(json_object_get(j, "k")), xv,
                                                     json_number_value(json_object_get(j, "nll")), nv, wv, json_is_true(json_object_get(j, "raced")),
                                                     wv ? json_array_size(wj) : 0};
                if (json_is_array(wj) && !wv) rc = graft_err_set(r->err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
            }
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return rc;
}

static bool dominates(const double *a, const double *b, int n) {
    bool less = false;
    for (int t = 0; t < n; t++) {
        if (a[t] > b[t]) return false;
        less |= a[t] < b[t];
    }
    return less;
}

// --objective pareto: each candidate's fitness = its front's rank within the generation (0: not
// dominated by any, 1: only by rank-0 ones, …) + mean/(1 + mean), so CMA-ES ranks by front, then mean.
static void pareto_fitness(const double *nlls, int lam, int n, double *fit) {
    int rank[4096], left = lam;
    for (int k = 0; k < lam; k++) rank[k] = -1;
    for (int level = 0; left > 0; level++) {
        int now[4096], m = 0;
        for (int k = 0; k < lam; k++) {
            if (rank[k] >= 0) continue;
            bool dom = false;
            for (int j = 0; j < lam && !dom; j++) dom = j != k && rank[j] < 0 && dominates(nlls + (size_t)j * n, nlls + (size_t)k * n, n);
            if (!dom) now[m++] = k;
        }
        for (int i = 0; i < m; i++) rank[now[i]] = level;
        left -= m;
    }
    for (int k = 0; k < lam; k++) {
        double mean = 0;
        for (int t = 0; t < n; t++) mean += nlls[(size_t)k * n + t] / n;
        fit[k] = rank[k] + mean / (1 + mean);
    }
}

// The front of every candidate (log and stderr), the best for each text, and OUT's choice: the front's
// best mean.
static int pareto_front(struct run *r, const double *allx, const double *alln, int n_all, int lam, double *best, char **best_yaml) {
    int n = r->n_evals, pick = -1, m = 0;
    double pm = INFINITY;
    if (r->lf) fprintf(r->lf, "{\"pareto\": [");
    for (int a = 0; a < n_all; a++) {
        bool dom = false;
        for (int b = 0; b < n_all && !dom; b++) dom = b != a && dominates(alln + (size_t)b * n, alln + (size_t)a * n, n);
        if (dom) continue;
        double mean = objective(r, alln + (size_t)a * n);
        if (r->lf) {
            fprintf(r->lf, "%s{\"gen\": %d, \"k\": %d, \"mean\": %.17g, \"nlls\": [", m ? ", " : "", a / lam, a % lam, mean);
            for (int t = 0; t < n; t++) fprintf(r->lf, "%s%.17g", t ? ", " : "", alln[(size_t)a * n + t]);
            fprintf(r->lf, "]}");
        }
        if (!cli_quiet()) {
            fprintf(stderr, "graft: Pareto front: generation %d candidate %d, mean NLL %.6f:", a / lam + 1, a % lam, mean);
            for (int t = 0; t < n; t++) fprintf(stderr, " %.6f", alln[(size_t)a * n + t]);
            fputc('\n', stderr);
        }
        if (mean < pm) pm = mean, pick = a;
        m++;
    }
    if (r->lf) fprintf(r->lf, "]}\n"), fflush(r->lf);
    for (int t = 0; t < n && !cli_quiet(); t++) {
        int b = 0;
        for (int a = 1; a < n_all; a++)
            if (alln[(size_t)a * n + t] < alln[(size_t)b * n + t]) b = a;
        fprintf(stderr, "graft: best on %s: generation %d candidate %d, NLL %.6f\n", r->evals[t], b / lam + 1, b % lam, alln[(size_t)b * n + t]);
    }
    *best = pm;
    free(*best_yaml);
    if (!(*best_yaml = graft_genome_render(r->g, allx + (size_t)pick * r->dim))) return graft_err_set(r->err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    return GRAFT_OK;
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
        {"objective", required_argument, 0, 'o'}, {"race", no_argument, 0, 'R'}, {"race-z", required_argument, 0, 'z'},
        {"matmul", required_argument, 0, 'M'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *evals[256], *log_path = NULL;
    int n_evals = 0, budget = 0, ctx = 512, batch = 1, max_tokens = 0, lambda = 0, n_threads = graft_n_cpus(), c;
    double sigma0 = 1.0 / 6, race_z = 3;
    uint64_t seed = 0;
    bool resume = false, force = false, race = false;
    enum objective obj = OBJ_MEAN;
    enum graft_matmul matmul = GRAFT_MATMUL_F32;
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
        case 'p': if (!cli_int("evolve", "--population", optarg, 2, 4096, &lambda)) return GRAFT_EXIT_USAGE; break;
        case 'l': log_path = optarg; break;
        case 'r': resume = true; break;
        case 't': if (!cli_threads("evolve", optarg, &n_threads)) return GRAFT_EXIT_USAGE; break;
        case 'f': force = true; break;
        case 'o':
            if (!strcmp(optarg, "mean")) obj = OBJ_MEAN;
            else if (!strcmp(optarg, "max")) obj = OBJ_MAX;
            else if (!strcmp(optarg, "pareto")) obj = OBJ_PARETO;
            else return cli_usage("evolve", "--objective expects mean, max or pareto, got '%s'", optarg);
            break;
        case 'R': race = true; break;
        case 'z': if (!cli_float("evolve", "--race-z", optarg, 0, 100, &race_z)) return GRAFT_EXIT_USAGE; break;
        case 'M': if (!cli_matmul("evolve", optarg, &matmul)) return GRAFT_EXIT_USAGE; break;
        case 'h': fputs(help, stdout); return GRAFT_EXIT_OK;
        default: return cli_usage("evolve", "unknown option");
        }
    }
    if (argc - optind != 2) return cli_usage("evolve", "expected GENOME.yml and OUT");
    if (!n_evals) return cli_usage("evolve", "give at least one --eval FILE");
    if (!budget) return cli_usage("evolve", "give --budget N (candidate evaluations)");
    if (race && obj != OBJ_MEAN) return cli_usage("evolve", "--race estimates the mean objective: use it with --objective mean");
    struct graft_err err;
    graft_err_clear(&err);
    struct run r = {.genome_path = argv[optind], .out = argv[optind + 1], .n_threads = n_threads, .ctx = ctx, .batch = batch,
                    .max_tokens = max_tokens, .seed = seed, .evals = evals, .n_evals = n_evals, .obj = obj, .race = race, .race_z = race_z,
                    .matmul = matmul, .best_full = INFINITY, .err = &err};
    char *lp = log_path ? strdup(log_path) : NULL, *best_yaml = NULL;
    if (!lp && asprintf(&lp, "%s.evolve.log", r.out) < 0) lp = NULL;
    r.docs = calloc((size_t)n_evals, sizeof *r.docs), r.lens = calloc((size_t)n_evals, sizeof *r.lens);
    struct graft_cmaes *es = NULL;
    double *x0 = NULL, *fit = NULL, *share = NULL, *nlls = NULL, *design = NULL, *allx = NULL, *alln = NULL, *wvs = NULL, best = INFINITY;
    bool *raced = NULL;
    int rc = GRAFT_OK;
    if (!lp || !r.docs || !r.lens) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    if (access(r.out, F_OK) == 0 && !force) {
        rc = graft_err_set(&err, GRAFT_E_EXISTS, r.out, NULL, 0, "already exists; use --force to replace it");
        goto out;
    }
    if ((rc = graft_genome_load(r.genome_path, &r.g, &err)) || (rc = graft_model_cache_new(&r.cache, &err)) ||
        (rc = graft_merge_reuse_new(&r.reuse, &err))) goto out;
    r.dim = graft_genome_dim(r.g);
    if (!(x0 = malloc((size_t)r.dim * sizeof *x0))) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    graft_genome_init(r.g, x0);
    int lam = lambda ? lambda : graft_cmaes_default_lambda(r.dim), gens = budget / lam ? budget / lam : 1;
    if (!(fit = malloc((size_t)lam * sizeof *fit)) || !(nlls = malloc((size_t)lam * n_evals * sizeof *nlls)) || !(raced = calloc((size_t)lam, sizeof *raced)) ||
        !(design = malloc((size_t)lam * r.dim * sizeof *design)) ||
        (obj == OBJ_PARETO && (!(allx = malloc((size_t)gens * lam * r.dim * sizeof *allx)) || !(alln = malloc((size_t)gens * lam * n_evals * sizeof *alln))))) {
        rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        goto out;
    }
    // generation 0: the baseline, then a Latin hypercube (stratum order and jitter from the seed)
    memcpy(design, x0, (size_t)r.dim * sizeof *design);
    for (int j = 0; j < r.dim && lam > 1; j++) {
        uint64_t key = graft_rng_key(seed, (uint64_t)j, "evolve-design", 13);
        int m = lam - 1, *perm = malloc((size_t)m * sizeof *perm);
        if (!perm) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
        for (int i = 0; i < m; i++) perm[i] = i;
        for (int i = m; i > 1; i--) { int q = (int)(graft__rng_u64(key, (uint64_t)i) % (uint64_t)i), t = perm[i - 1]; perm[i - 1] = perm[q], perm[q] = t; }
        uint64_t jit = graft_rng_key(seed, (uint64_t)j, "evolve-jitter", 13);
        for (int i = 0; i < m; i++) design[(size_t)(i + 1) * r.dim + j] = (perm[i] + graft__rng_uniform(jit, (uint64_t)i)) / m;
        free(perm);
    }
    bool log_exists = access(lp, F_OK) == 0;
    if (log_exists && !resume && !force) {
        rc = graft_err_set(&err, GRAFT_E_EXISTS, lp, NULL, 0, "an evolve log is already there; --resume continues it, --force starts over");
        goto out;
    }
    uint64_t fp = 0;
    long good_end = 0;
    bool has_header = false;
    if ((rc = fingerprint(&r, &fp))) goto out;
    if (resume && log_exists && (rc = read_log(&r, lp, lam, sigma0, fp, &good_end, &has_header))) goto out;
    if (!has_header) log_exists = false; // an empty log (killed before its header): start it
    // (a cut last line is dropped before appending)
    if (log_exists && !cli_quiet() && truncate(lp, good_end) != 0) rc = graft_err_set(&err, GRAFT_E_IO, lp, NULL, 0, "cannot truncate the log: %s", strerror(errno));
    // under mpirun every rank has read the same log before rank 0 (the only writer of it) opens it
    const struct graft_dist *d = cli_dist();
    if (d && race && !rc) rc = graft_err_set(&err, GRAFT_E_USAGE, NULL, NULL, 0, "--race runs in one process (its paired windows are not shared between MPI ranks)");
    if (d && (rc = graft__dist_status(d, rc, lp, &err))) goto out;
    if (!rc && !cli_quiet() && !(r.lf = fopen(lp, resume && log_exists ? "a" : "w"))) rc = graft_err_set(&err, GRAFT_E_IO, lp, NULL, 0, "cannot write the log");
    if (d && (rc = graft__dist_status(d, rc, lp, &err))) goto out;
    if (rc) goto out;
    if (r.lf && !(resume && log_exists)) {
        char fps[20];
        snprintf(fps, sizeof fps, "%016llx", (unsigned long long)fp);
        json_t *h = json_pack("{s:i, s:s, s:i, s:i, s:I, s:f, s:s, s:b, s:f, s:i, s:i, s:i, s:s, s:s}", "graft_evolve", 3, "genome", r.genome_path, "dim", r.dim,
                              "lambda", lam, "seed", (json_int_t)seed, "sigma0", sigma0, "objective", obj_name[obj], "race", race, "race_z", race_z,
                              "texts", n_evals, "ctx", ctx, "max_tokens", max_tokens, "matmul", matmul == GRAFT_MATMUL_BF16 ? "bf16" : "f32",
                              "fingerprint", fps);
        char *hs = h ? json_dumps(h, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
        if (!hs || fprintf(r.lf, "%s\n", hs) < 0 || fflush(r.lf) || fsync(fileno(r.lf))) rc = graft_err_set(&err, GRAFT_E_IO, lp, NULL, 0, "cannot write the log");
        free(hs), json_decref(h);
        if (rc) goto out;
    }
    if (!cli_quiet())
        fprintf(stderr, "graft: evolve: %d searched values, λ = %d, %d generations (%d evaluations), objective %s%s%s%s\n", r.dim, lam, gens, gens * lam,
                obj_name[obj], race ? ", racing" : "", r.n_log ? ", resuming from the log" : "", d ? ", candidates shared by the MPI ranks" : "");
    share = d ? calloc((size_t)lam * (n_evals + 2), sizeof *share) : NULL; // under mpirun: candidate k's scores from rank k mod N
    if (d && !share) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto out; }
    double baseline = NAN;
    char last_invalid[GRAFT_ERR_MSG_MAX] = "";
    size_t wn = 0; // windows per candidate (racing's per-window rows), once known
    for (int gen = 0; gen < gens && !rc; gen++) {
        if (gen == 1) { // CMA-ES from the best of the initial design
            int b = 0;
            for (int k = 1; k < lam; k++)
                if (fit[k] < fit[b]) b = k;
            struct graft_cmaes_params cp = {r.dim, lam, sigma0, design + (size_t)b * r.dim, seed};
            rc = graft_cmaes_new(&cp, &es, &err);
            if (d) rc = graft__dist_status(d, rc, lp, &err); // every rank stops together
            if (rc) break;
        }
        const double *X = gen == 0 ? design : graft_cmaes_ask(es);
        double sum = 0, gbest = INFINITY;
        int fresh = 0, n_sum = 0;
        // candidates scored first (under mpirun: each on its rank, the scores then gathered), then taken
        // in order as one process takes them
        for (int k = 0; k < lam && !rc; k++) {
            const double *x = X + (size_t)k * r.dim;
            double *nk = nlls + (size_t)k * n_evals;
            const struct logged *lg = find_logged(&r, gen, k);
            if (lg && memcmp(lg->x, x, (size_t)r.dim * sizeof *x)) {
                rc = graft_err_set(&err, GRAFT_E_USAGE, lp, NULL, 0, "generation %d candidate %d differs from the log: it was written for another genome or seed", gen, k);
                break;
            }
            if (d && k % d->size != d->rank) { memset(share + (size_t)k * (n_evals + 2), 0, (size_t)(n_evals + 2) * sizeof *share); continue; }
            if (lg) {
                fit[k] = lg->f, raced[k] = lg->raced, memcpy(nk, lg->nlls, (size_t)n_evals * sizeof *nk);
                if (race && lg->w && (!wn || wn == lg->n_w) && (wvs || (wvs = nan_rows((size_t)lam * lg->n_w)))) {
                    wn = lg->n_w; // (the windows themselves are built with the first merge)
                    memcpy(wvs + (size_t)k * wn, lg->w, wn * sizeof *wvs);
                } else if (wvs)
                    for (size_t w = 0; w < wn; w++) wvs[(size_t)k * wn + w] = NAN;
            }
            else {
                char *yaml = graft_genome_render(r.g, x);
                if (!yaml) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
                rc = evaluate(&r, yaml, nk, &fit[k], &raced[k]);
                if (!rc && race && wn && wn != r.n_win) rc = graft_err_set(&err, GRAFT_E_USAGE, lp, NULL, 0, "the log's windows are not these texts'");
                else if (!rc && race && (wvs || (wvs = nan_rows((size_t)lam * r.n_win))))
                    wn = r.n_win, memcpy(wvs + (size_t)k * wn, r.cur_w, wn * sizeof *wvs);
                else if (!rc && race) rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
                free(yaml);
                // activations overflow, or a combination the chosen method refuses (a choice of method
                // with another's parameters): the worst score; the baseline must merge
                bool invalid = rc == GRAFT_E_CONFIG && (gen || k) && !r.fatal, failed = invalid || (rc == GRAFT_E_NONFINITE && (gen || k));
                if (invalid && !cli_quiet()) fprintf(stderr, "graft: warning: generation %d candidate %d does not merge (%s); scored as the worst\n", gen + 1, k, err.msg);
                if (invalid) snprintf(last_invalid, sizeof last_invalid, "%s", err.msg);
                if (failed) {
                    fit[k] = 1e30, raced[k] = false, rc = GRAFT_OK, graft_err_clear(&err);
                    for (int t = 0; t < n_evals; t++) nk[t] = 1e30;
                    for (size_t w = 0; wvs && w < wn; w++) wvs[(size_t)k * wn + w] = NAN;
                }
                if (!rc && !d) log_candidate(r.lf, gen, k, fit[k], nk, n_evals, raced[k], wvs && !failed ? wvs + (size_t)k * wn : NULL, wn, x, r.dim); // at once: a killed run resumes from here
            }
            if (d) {
                double *sh = share + (size_t)k * (n_evals + 2);
                sh[0] = fit[k], sh[1] = raced[k];
                memcpy(sh + 2, nk, (size_t)n_evals * sizeof *sh);
            }
        }
        if (d) { // every rank: agree on the status, then every rank has every score (x + 0 + … exact)
            rc = graft__dist_status(d, rc, lp, &err);
            if (!rc && d->sum_f64(d->ctx, share, (size_t)lam * (n_evals + 2))) rc = graft_err_set(&err, GRAFT_E_IO, lp, NULL, 0, "MPI reduction failed");
            for (int k = 0; !rc && k < lam; k++) {
                const double *sh = share + (size_t)k * (n_evals + 2);
                fit[k] = sh[0], raced[k] = sh[1] != 0;
                memcpy(nlls + (size_t)k * n_evals, sh + 2, (size_t)n_evals * sizeof *nlls);
            }
        }
        int n_failed = 0; // a generation in which nothing merges (or scores): a broken genome, not bad luck
        for (int k = gen == 0; !rc && k < lam; k++) n_failed += fit[k] >= 1e30;
        if (!rc && lam > 1 && n_failed == lam - (gen == 0))
            rc = graft_err_set(&err, GRAFT_E_CONFIG, r.genome_path, NULL, 0, "no candidate of generation %d merges or scores%s%s", gen + 1,
                               *last_invalid ? "; the last error: " : "", last_invalid);
        if (rc) break;
        if (gen == 0) baseline = objective(&r, nlls); // candidate 0
        double gen_full = INFINITY;
        int gen_k = -1;
        if (obj == OBJ_PARETO) { // every candidate kept for the final front
            memcpy(allx + (size_t)gen * lam * r.dim, X, (size_t)lam * r.dim * sizeof *allx);
            memcpy(alln + (size_t)gen * lam * n_evals, nlls, (size_t)lam * n_evals * sizeof *alln);
            pareto_fitness(nlls, lam, n_evals, fit); // the front's rank within the generation, then the mean
        }
        for (int k = 0; k < lam && !rc; k++) {
            const double *x = X + (size_t)k * r.dim;
            double *nk = nlls + (size_t)k * n_evals, f = obj == OBJ_PARETO ? objective(&r, nk) : fit[k];
            if (!find_logged(&r, gen, k)) {
                fresh++;
                if (d) log_candidate(r.lf, gen, k, f, nk, n_evals, raced[k], NULL, 0, x, r.dim); // rank 0 (the others have no log open)
            }
            if (!raced[k] && f < gen_full) gen_full = f, gen_k = k;
            if (f < 1e30) sum += f, n_sum++; // (the generation's mean over candidates that scored)
            if (f < gbest) gbest = f;
            if (obj != OBJ_PARETO && !raced[k] && f < best) {
                char *yaml = graft_genome_render(r.g, x);
                if (!yaml) { rc = graft_err_set(&err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
                free(best_yaml), best_yaml = yaml, best = f;
            }
            if (obj == OBJ_PARETO && f < best) best = f; // (reported; OUT is chosen from the front)
        }
        if (d) rc = graft__dist_status(d, rc, lp, &err);
        if (rc) break;
        if (gen_full < r.best_full) { // racing's bar moves between generations only (a resumed run decides the same)
            r.best_full = gen_full;
            bool whole = race && wvs && wn;
            for (size_t w = 0; whole && w < wn; w++) whole = isfinite(wvs[(size_t)gen_k * wn + w]);
            free(r.bar_w), r.bar_w = NULL;
            if (whole && (r.bar_w = malloc(wn * sizeof *r.bar_w))) memcpy(r.bar_w, wvs + (size_t)gen_k * wn, wn * sizeof *r.bar_w), r.bar_n = wn;
        }
        double sigma = gen ? graft_cmaes_sigma(es) : sigma0;
        if (gen) rc = graft_cmaes_tell(es, fit, &err);
        if (d) rc = graft__dist_status(d, rc, lp, &err);
        if (rc) break;
        if (fresh && r.lf) {
            fprintf(r.lf, "{\"gen\": %d, \"best\": %.9g, \"mean\": %.9g, \"sigma\": %.9g, \"best_so_far\": %.9g, \"baseline\": %.9g}\n", gen, gbest, n_sum ? sum / n_sum : 1e30,
                    sigma, best, baseline);
            fflush(r.lf);
            fsync(fileno(r.lf));
        }
        if (!cli_quiet() && obj != OBJ_PARETO)
            fprintf(stderr, "graft: generation %d/%d%s: best %.6f (%+.2f %% perplexity vs the baseline %.6f), mean %.6f, σ %.4f; best so far %.6f (perplexity %.4f)\n",
                    gen + 1, gens, gen ? "" : " (baseline + initial design)", gbest, 100 * (exp(gbest - baseline) - 1), baseline, n_sum ? sum / n_sum : 1e30, sigma, best, exp(best));
    }
    if (rc) goto out;
    if (obj == OBJ_PARETO && (rc = pareto_front(&r, allx, alln, gens * lam, lam, &best, &best_yaml))) goto out;
    if (race && !cli_quiet() && r.win_all)
        fprintf(stderr, "graft: racing evaluated %llu of %llu windows (%.1f %% saved)\n", (unsigned long long)r.win_done, (unsigned long long)r.win_all,
                100.0 * (double)(r.win_all - r.win_done) / (double)r.win_all);
    if (race && r.lf) fprintf(r.lf, "{\"race_windows\": %llu, \"full_windows\": %llu}\n", (unsigned long long)r.win_done, (unsigned long long)r.win_all);
    uint64_t reused, merged;
    graft_merge_reuse_counts(r.reuse, &reused, &merged);
    if (!cli_quiet() && merged) // (this process's: not in the log, which must not depend on the MPI ranks)
        fprintf(stderr, "graft: %llu of %llu tensor merges copied from the previous candidate (nothing they depend on changed)\n", (unsigned long long)reused,
                (unsigned long long)merged);
    // the best candidate, merged for real
    struct graft_merge_options o = graft_merge_default_options();
    o.n_threads = n_threads, o.seed = seed, o.config_text = best_yaml, o.writer_flags = force ? GRAFT_WRITER_FORCE : 0;
    o.dist = d, o.cache = r.cache; // the winner's merge, too, shared by the ranks
    if ((rc = graft_merge(r.genome_path, r.out, &o, &err))) goto out;
    if (cli_quiet()) goto out;
    fprintf(stderr, "graft: best %s NLL %.6f (perplexity %.4f) written to %s; its config: %s/mergekit_config.yml\n", obj == OBJ_MAX ? "max" : "mean", best,
            exp(best), r.out, r.out);
    fputs(best_yaml, stdout);
out:
    if (r.lf) fclose(r.lf);
    for (size_t i = 0; i < r.n_log; i++) free(r.log[i].x), free(r.log[i].nlls), free(r.log[i].w);
    free(r.log);
    for (int i = 0; r.docs && i < n_evals; i++) free(r.docs[i]);
    free(r.docs), free(r.lens), free(x0), free(fit), free(best_yaml), free(lp), free(share);
    free(nlls), free(design), free(allx), free(alln), free(raced), graft__free(r.win), free(r.text_scored), free(wvs), free(r.bar_w), free(r.cur_w);
    graft_cmaes_free(es);
    graft_genome_free(r.g);
    graft_model_cache_free(r.cache);
    graft_merge_reuse_free(r.reuse);
    return rc ? cli_fail(&err) : GRAFT_EXIT_OK;
}
