// opcm — continual merging by orthogonal projection (Tang et al., "Merging Models on the Fly Without
// Retraining", NeurIPS 2025; methods-research.md A9; fusion_bench's opcm). Models are folded in the
// listed order; M is the merged task vector:
//   M₁ = τ₁, norms = [‖τ₁‖], λ₁ = 1
//   for each further model t (τ = θ_t − θ0, norms += ‖τ‖, ν = mean(norms)):
//     per 2-D weight (input embeddings excepted): U S Vᵀ = svd(M_ℓ); r* = first k with
//       cumsum(S)[k]/ΣS > α; P = Uᵀ τ_ℓ V with its diagonal and its [:r*, :r*] block zeroed;
//       M'_ℓ = λ_{t−1}·M_ℓ + U P Vᵀ   (= λ_{t−1}·M_ℓ + τ_ℓ − U_k D V_kᵀ, D the zeroed part: thin SVD)
//     other tensors: M'_p = λ_{t−1}·M_p + τ_p
//     λ_t = ‖M'‖ / ν (whole model);  M = M'/λ_t
//   θ = θ0 + M
// Since λ_{t−1}·M_{t−1} = M'_{t−1} and scaling keeps singular vectors and r*, graft keeps the unscaled
// M' (one f32 copy of the merged tensors in a temporary file beside the output, updated in place) and
// divides by λ once at the end: memory is one tensor per worker, constant in the number of models; each
// further model costs one pass over the model. The state (M', λ, norms) is written beside the output as
// OUT.opcm-state.safetensors; `graft merge --resume STATE` folds further models into it. Order: as
// listed (the reference shuffles by default; shuffle the list to reproduce that). The state holds M'
// (θ − θ0 = M'/λ) in F32 with metadata graft_opcm_lambda, graft_opcm_norms (JSON) and
// graft_opcm_models, so a resumed merge computes exactly what one merge of all the models does.
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "plan.h"
#include "../io/io-impl.h"

static const struct graft_mparam params[] = {{"alpha", false, false, 0.5}};

static int validate(const struct graft_mt *mt, struct graft_err *err) {
    double a = GP(mt, "alpha");
    if (!(a >= 0 && a <= 1)) return graft_err_set(err, GRAFT_E_CONFIG, NULL, NULL, 0, "alpha must be in [0, 1], got %g", a);
    return GRAFT_OK;
}

struct job {
    struct plan *p;
    int fd;                 // M' of every merged tensor, f32, at off[i]
    uint64_t *off;
    bool *merged;           // tensor i is folded (else a copy of the base)
    int step;               // which model (0-based among the non-base inputs)
    bool fresh;             // step 0 without a resumed state: M' = τ
    double *sq_m, *sq_t;    // per tensor: ‖M'‖², ‖τ‖² of this pass
    // final pass
    bool final;
    double lambda;
    struct graft_writer *w, *sw; // output, state
    long *sid;
};

// nn.Linear weights: 2-D tensors except input embeddings (lm_head is a linear layer)
static bool is_matrix(const struct otensor *o) {
    const char *n = o->name;
    return o->n_dims == 2 && !strstr(n, "embed_tokens") && !strstr(n, "wte.") && !strstr(n, "wpe.") && !strstr(n, "embed_in") &&
           !strstr(n, "word_embeddings") && !strstr(n, "tok_embeddings") && !strstr(n, "embeddings.");
}

static int pio(struct job *j, bool wr, float *buf, size_t n, uint64_t off, struct graft_err *err) {
    size_t done = 0, bytes = n * sizeof(float);
    if (wr) {
        if (graft__pwrite_full(j->fd, buf, bytes, off)) return graft_err_set(err, GRAFT_E_IO, NULL, NULL, 0, "opcm temporary file: write failed: %s", strerror(errno));
        return GRAFT_OK;
    }
    while (done < bytes) {
        ssize_t r = pread(j->fd, (char *)buf + done, bytes - done, (off_t)(off + done));
        if (r <= 0) return graft_err_set(err, GRAFT_E_IO, NULL, NULL, 0, "opcm temporary file: read failed");
        done += (size_t)r;
    }
    return GRAFT_OK;
}

// Fold model j->step into tensor `item` (or, in the final pass, write θ0 + M'/λ and the state).
static int one(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith;
    struct job *j = ctx;
    struct plan *p = j->p;
    struct otensor *o = &p->t[item];
    struct graft_mt *mt = &o->mt;
    if (!j->merged[item]) return GRAFT_OK;
    size_t n = (size_t)mt->numel, m = (size_t)mt->dim0, c = (size_t)mt->row_len, k = m < c ? m : c;
    float *M = graft__malloc(n * sizeof *M), *t = graft__malloc(n * sizeof *t), *b = graft__malloc(n * sizeof *b);
    int rc = M && t && b ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    const struct oin *bi = &o->in[mt->base];
    if (!rc) graft_row_to_f32(bi->t->info->dtype, graft_model_data(p->models[bi->model].m, bi->t), b, n);
    if (j->final) {
        if (!rc) rc = pio(j, false, M, n, j->off[item], err);
        uint8_t *enc = rc ? NULL : graft__malloc(n * 8);
        if (!rc && !enc) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        if (!rc && j->sw) rc = graft_writer_write(j->sw, j->sid[item], 0, M, n * sizeof(float), err); // the state keeps M'
        for (size_t e = 0; !rc && e < n; e++) M[e] = (float)((double)M[e] / j->lambda);
        for (size_t e = 0; !rc && e < n; e++) t[e] = b[e] + M[e];
        uint64_t len = 0;
        graft_dtype_nbytes(o->dtype, n, &len);
        if (!rc) graft__engine_encode(o, 0, t, enc, n), rc = graft_writer_write(j->w, o->wid, 0, enc, (size_t)len, err);
        if (!rc) graft_progress_add(p->opt->progress, len);
        graft__free(enc), graft__free(M), graft__free(t), graft__free(b);
        return rc;
    }
    // τ of this step's model: the step-th input that is not the base
    int in = -1;
    for (int i = 0, s = 0; i < o->n_in && in < 0; i++)
        if (i != mt->base && s++ == j->step) in = i;
    if (!rc) {
        const struct oin *x = &o->in[in];
        graft_row_to_f32(x->t->info->dtype, graft_model_data(p->models[x->model].m, x->t), t, n);
        for (size_t e = 0; e < n; e++) t[e] -= b[e];
    }
    if (!rc && j->fresh) memcpy(M, t, n * sizeof *M);
    else if (!rc) {
        rc = pio(j, false, M, n, j->off[item], err);
        if (!rc && is_matrix(o)) {
            float *U = graft__malloc(m * k * sizeof *U), *S = graft__malloc(k * sizeof *S), *Vt = graft__malloc(k * c * sizeof *Vt);
            float *TV = graft__calloc(m * k, sizeof *TV), *P = graft__calloc(k * k, sizeof *P);
            if (!U || !S || !Vt || !TV || !P) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
            if (!rc) rc = graft__svd_thin(M, m, c, U, S, Vt, err);
            if (!rc) {
                double tot = 0, cum = 0, a = GP(mt, "alpha");
                for (size_t q = 0; q < k; q++) tot += S[q];
                size_t r = k;
                for (size_t q = 0; q < k && tot > 0; q++)
                    if ((cum += S[q]) / tot > a) { r = q; break; }
                if (!(tot > 0)) r = 0;
                graft__sgemm_acc(false, true, m, k, c, 1.0f, t, c, Vt, c, TV, k); // τ·V  (m × k)
                graft__sgemm_acc(true, false, k, k, m, 1.0f, U, k, TV, k, P, k);  // Uᵀ·τ·V (k × k)
                for (size_t a2 = 0; a2 < k; a2++) // keep only what is zeroed: the diagonal and the top r* block
                    for (size_t b2 = 0; b2 < k; b2++)
                        if (!(a2 == b2 || (a2 < r && b2 < r))) P[a2 * k + b2] = 0;
                for (size_t e = 0; e < n; e++) M[e] += t[e];
                memset(TV, 0, m * k * sizeof *TV);
                graft__sgemm_acc(false, false, m, k, k, 1.0f, U, k, P, k, TV, k);  // U·D
                graft__sgemm_acc(false, false, m, c, k, -1.0f, TV, k, Vt, c, M, c); // − U·D·Vᵀ
            }
            graft__free(U), graft__free(S), graft__free(Vt), graft__free(TV), graft__free(P);
        } else if (!rc) {
            for (size_t e = 0; e < n; e++) M[e] += t[e];
        }
    }
    double sm = 0, st = 0;
    for (size_t e = 0; !rc && e < n; e++) sm += (double)M[e] * M[e], st += (double)t[e] * t[e];
    j->sq_m[item] = sm, j->sq_t[item] = st;
    if (!rc) rc = pio(j, true, M, n, j->off[item], err);
    graft__free(M), graft__free(t), graft__free(b);
    return rc;
}

static int run(struct plan *p, struct graft_writer *w, const char *out_dir, struct graft_err *err) {
    int nth = p->opt->n_threads > 0 ? p->opt->n_threads : 1;
    struct job j = {.p = p, .fd = -1, .w = w};
    int rc = GRAFT_OK, T = -1, done_models = 0;
    double lambda = 1;
    json_t *norms = NULL;
    char *tmp = NULL, *state_path = NULL;
    struct graft_model *st = NULL;
    j.off = graft__calloc(p->n + 1, sizeof *j.off), j.merged = graft__calloc(p->n + 1, sizeof *j.merged);
    j.sq_m = graft__calloc(p->n + 1, sizeof *j.sq_m), j.sq_t = graft__calloc(p->n + 1, sizeof *j.sq_t), j.sid = graft__calloc(p->n + 1, sizeof *j.sid);
    if (!j.off || !j.merged || !j.sq_m || !j.sq_t || !j.sid) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto agree; }
    uint64_t total = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct otensor *o = &p->t[i];
        j.merged[i] = !o->identity && !o->copy;
        if (!j.merged[i]) continue;
        int others = o->n_in - 1;
        if (T < 0) T = others;
        if (others != T) { rc = graft__plan_fail(p, "opcm folds every model into every tensor, but %s is in %d of the %d models", o->name, others, T); goto agree; }
        j.off[i] = total, total += o->mt.numel * sizeof(float);
    }
    // resumed state: M' (θ − θ0 = M'/λ), λ, norms
    if (!(norms = json_array())) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto agree; }
    if (p->opt->resume) {
        if ((rc = graft_model_open(p->opt->resume, &st, err))) goto agree;
        const struct graft_st *sh = graft_model_shard(st, 0);
        const char *ls = sh ? graft_st_meta_get(sh, "graft_opcm_lambda") : NULL, *ns = sh ? graft_st_meta_get(sh, "graft_opcm_norms") : NULL;
        json_decref(norms);
        norms = ns ? json_loads(ns, 0, NULL) : NULL;
        if (!ls || !graft_parse_double(ls, &lambda) || !(lambda > 0) || !json_is_array(norms) || !json_array_size(norms)) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, p->opt->resume, NULL, 0, "not an opcm state (metadata graft_opcm_lambda / graft_opcm_norms missing or invalid)");
            goto agree;
        }
        done_models = (int)json_array_size(norms);
    }
    {   // the temporary M' file beside the output (named like the writer's temporaries: removed if we are killed)
        size_t ol = strlen(out_dir);
        while (ol > 1 && out_dir[ol - 1] == '/') ol--;
        tmp = graft__temp_beside(out_dir, "-opcm");
        state_path = graft__asprintf("%.*s.opcm-state.safetensors", (int)ol, out_dir);
        if (!tmp || !state_path) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); goto agree; }
        int inj = graft__fault_io("open");
        j.fd = inj ? (errno = inj, -1) : open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (j.fd < 0) { rc = graft_err_set(err, GRAFT_E_IO, tmp, NULL, 0, "cannot create: %s", strerror(errno)); graft__free(tmp), tmp = NULL; goto agree; }
    }
    if (st) { // M' of the state, checked tensor by tensor
        for (size_t i = 0; i < p->n && !rc; i++) {
            if (!j.merged[i]) continue;
            struct otensor *o = &p->t[i];
            const struct graft_model_tensor *s = graft_model_find(st, o->name, strlen(o->name));
            if (!s || s->info->dtype != GRAFT_DTYPE_F32 || s->info->n_elem != o->mt.numel) {
                rc = graft_err_set(err, GRAFT_E_CONFIG, p->opt->resume, o->name, strlen(o->name), "the opcm state has no F32 tensor of %llu values for this tensor",
                                   (unsigned long long)o->mt.numel);
                break;
            }
            size_t n = (size_t)o->mt.numel;
            float *v = graft__malloc(n * sizeof *v);
            if (!v) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory"); break; }
            memcpy(v, graft_model_data(st, s), n * sizeof *v);
            rc = pio(&j, true, v, n, j.off[i], err);
            graft__free(v);
        }
    }
    // one pass per model
    for (int s = 0; s < (T > 0 ? T : 0) && !rc; s++) {
        j.step = s, j.fresh = s == 0 && !st;
        rc = graft_pool_run(nth, p->n, one, &j, NULL, NULL, err);
        double m2 = 0, t2 = 0;
        for (size_t i = 0; i < p->n; i++) m2 += j.sq_m[i], t2 += j.sq_t[i];
        json_array_append_new(norms, json_real(sqrt(t2)));
        if (j.fresh) lambda = 1;
        else {
            double nu = 0;
            for (size_t q = 0; q < json_array_size(norms); q++) nu += json_real_value(json_array_get(norms, q));
            nu /= (double)json_array_size(norms);
            lambda = nu > 0 ? sqrt(m2) / nu : 1;
            if (!(lambda > 0)) lambda = 1;
        }
    }
    // the output and the state (under MPI all ranks agree first, failed or not: the state writer's
    // collectives are only reached by ranks that got here; every earlier failure comes here too)
agree:
    if (p->opt->dist && p->opt->dist->size > 1 && !p->opt->in_memory) rc = graft__dist_status(p->opt->dist, rc, out_dir, err);
    if (!rc && !p->opt->in_memory) {
        struct graft_writer_params wp = graft_writer_default_params();
        const char *protect[1] = {p->opt->resume};
        wp.flags = GRAFT_WRITER_SINGLE_FILE | (p->opt->writer_flags & GRAFT_WRITER_FORCE), wp.protect = protect, wp.n_protect = p->opt->resume ? 1 : 0;
        wp.dist = p->opt->in_memory ? NULL : p->opt->dist; // under MPI: rank 0 writes the state file
        rc = graft_writer_open(state_path, &wp, &j.sw, err);
        char num[64], *ns = NULL;
        snprintf(num, sizeof num, "%.17g", lambda);
        if (!rc) rc = graft_writer_set_meta(j.sw, "graft_opcm_lambda", num, err);
        if (!rc && !(ns = json_dumps(norms, JSON_COMPACT | JSON_REAL_PRECISION(17)))) rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
        if (!rc) rc = graft_writer_set_meta(j.sw, "graft_opcm_norms", ns, err);
        free(ns);
        snprintf(num, sizeof num, "%d", done_models + T);
        if (!rc) rc = graft_writer_set_meta(j.sw, "graft_opcm_models", num, err);
        for (size_t i = 0; i < p->n && !rc; i++) {
            if (!j.merged[i]) continue;
            struct otensor *o = &p->t[i];
            if ((j.sid[i] = graft_writer_add_tensor(j.sw, o->name, strlen(o->name), GRAFT_DTYPE_F32, o->n_dims, o->ne, err)) < 0) rc = (int)j.sid[i];
        }
        if (!rc) rc = graft_writer_layout(j.sw, err);
    }
    if (!rc) {
        j.final = true, j.lambda = lambda;
        rc = graft_pool_run(nth, p->n, one, &j, NULL, NULL, err);
    }
    for (size_t i = 0; i < p->n && !rc; i++) { // tensors only the base has: the base
        struct otensor *o = &p->t[i];
        if (j.merged[i]) continue;
        rc = graft__engine_copy_base(p, w, o);
    }
    if (!rc) p->extra = j.sw, j.sw = NULL; // committed by the engine right after the model
    if (j.fd >= 0) close(j.fd);
    if (tmp) unlink(tmp);
    graft_writer_free(j.sw);
    graft_model_close(st);
    json_decref(norms);
    graft__free(tmp), graft__free(state_path);
    graft__free(j.off), graft__free(j.merged), graft__free(j.sq_m), graft__free(j.sq_t), graft__free(j.sid);
    return rc;
}

static int whole(void *plan, struct graft_writer *w, const char *out_dir, struct graft_err *err) { return run(plan, w, out_dir, err); }

const struct graft_method graft_method_opcm = {
    .name = "opcm", .pretty = "OPCM (continual merging by orthogonal projection)", .base = GRAFT_BASE_REQUIRED, .min_models = 1, .max_models = -1,
    .params = params, .n_params = 1, .validate = validate, .whole = whole,
};
