// Dense linear algebra on top of LAPACKE / OpenBLAS (Debian's liblapacke-dev, libopenblas-dev).
//
// Truncated SVD by the Gram route: for an m×n matrix M with k = min(m, n), the k×k Gram matrix
// (M·Mᵀ when m ≤ n, else Mᵀ·M) is accumulated in double from f32 blocks, and dsyevr (MRRR) gives its
// top r eigenpairs (or, for choosing r, every eigenvalue alone): S = √λ, one side's singular vectors
// directly and the other side's as M·v / S (or uᵀ·M / S), also in double. Against a full sgesdd this
// costs one syrk (m·n·k) plus a k×k eigensolve instead of the bidiagonalisation of M, and in double the
// squared spectrum loses nothing that f32 results could show: eigenvalue errors are ~1e-16·λ₁, so a
// singular value S_j is exact to f32 unless S_j/S₁ < 1e-4 — and such components carry < 1e-8 of the
// energy. Signs are made deterministic: each kept u_j (or v_j on the short side) has its entry of
// largest magnitude positive.
//
// BLAS runs single-threaded inside each call (graft parallelises over matrices), so results do not
// depend on --threads.
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include "impl.h"

void openblas_set_num_threads(int num_threads); // OpenBLAS extension (not in cblas.h everywhere)

void graft__blas_single_thread(void) { openblas_set_num_threads(1); }

enum { BLK = 256 }; // rows or columns of M converted to double at a time

// G (k × k, upper triangle, row-major, zeroed by the caller) = M·Mᵀ (left, k = m) or Mᵀ·M (k = n) in
// double: Σ over blocks of D·Dᵀ (D = M[:, c0..c1) as k × w) or Dᵀ·D (D = M[r0..r1, :] as w × k) in a
// fixed block order; D: k·BLK doubles of scratch.
static void gram_upper(const float *M, size_t m, size_t n, bool left, double *G, double *D) {
    size_t k = left ? m : n, other = left ? n : m;
    for (size_t b0 = 0; b0 < other; b0 += BLK) {
        size_t w = other - b0 < BLK ? other - b0 : BLK;
        if (left) {
            for (size_t i = 0; i < k; i++)
                for (size_t j = 0; j < w; j++) D[i * w + j] = M[i * n + b0 + j];
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)k, (int)w, 1.0, D, (int)w, 1.0, G, (int)k);
        } else {
            for (size_t i = 0; i < w; i++)
                for (size_t j = 0; j < k; j++) D[i * k + j] = M[(b0 + i) * n + j];
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)w, 1.0, D, (int)k, 1.0, G, (int)k);
        }
    }
}

int graft__svd_gram(const float *M, size_t m, size_t n, size_t r_vec, struct graft__svd *s, struct graft_err *err) {
    memset(s, 0, sizeof *s);
    s->m = m, s->n = n, s->left = m <= n, s->k = s->left ? m : n;
    size_t k = s->k;
    if (k == 0) return GRAFT_OK;
    if (r_vec > k) r_vec = k;
    if (k > (size_t)1 << 20 || k * k > ((size_t)1 << 40) / sizeof(double))
        return graft_err_set(err, GRAFT_E_LIMIT, NULL, NULL, 0, "matrix of %zu × %zu is too large for an SVD", m, n);
    double *G = graft__calloc(k * k, sizeof *G), *D = graft__malloc(k * BLK * sizeof *D);
    s->lambda = graft__malloc(k * sizeof *s->lambda);
    s->vec = r_vec ? graft__malloc(k * r_vec * sizeof *s->vec) : NULL;
    lapack_int *isuppz = graft__malloc(2 * (k + 1) * sizeof *isuppz);
    if (!G || !D || !s->lambda || (r_vec && !s->vec) || !isuppz) {
        graft__free(D), graft__free(G), graft__free(isuppz);
        graft__svd_free(s);
        return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for a %zu × %zu Gram matrix", k, k);
    }
    for (size_t i = 0; i < m * n; i++)
        if (!isfinite(M[i])) {
            graft__free(D), graft__free(G), graft__free(isuppz);
            graft__svd_free(s);
            return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "the matrix holds NaN or infinite values");
        }
    gram_upper(M, m, n, s->left, G, D);
    graft__free(D);
    for (size_t i = 0; i < k; i++) s->energy += G[i * k + i]; // trace = ‖M‖_F²
    // dsyevr (MRRR): every eigenvalue, or only the top r_vec eigenpairs; all k eigenpairs (a polar
    // factor) by dsyevd (divide and conquer: the faster one for a whole basis)
    lapack_int found = 0, info;
    if (r_vec == k) {
        info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)k, G, (lapack_int)k, s->lambda);
        if (!info) memcpy(s->vec, G, k * k * sizeof *G), found = (lapack_int)k;
    } else {
        info = r_vec ? LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'V', 'I', 'U', (lapack_int)k, G, (lapack_int)k, 0, 0, (lapack_int)(k - r_vec + 1), (lapack_int)k,
                                      0.0, &found, s->lambda, s->vec, (lapack_int)r_vec, isuppz)
                     : LAPACKE_dsyevr(LAPACK_ROW_MAJOR, 'N', 'A', 'U', (lapack_int)k, G, (lapack_int)k, 0, 0, 0, 0, 0.0, &found, s->lambda, NULL, 1,
                                      isuppz);
    }
    graft__free(G), graft__free(isuppz);
    if (info != 0 || (size_t)found != (r_vec ? r_vec : k)) {
        graft__svd_free(s);
        return graft_err_set(err, info < 0 ? GRAFT_E_INTERNAL : GRAFT_E_FORMAT, NULL, NULL, 0,
                             "eigendecomposition of a %zu × %zu Gram matrix failed (LAPACK info %d)%s", k, k, (int)info,
                             info > 0 ? ": the matrix holds NaN or infinite values?" : "");
    }
    s->n_vals = (size_t)found, s->r_vec = r_vec;
    // ascending → descending; clamp the rounding negatives
    size_t nv = s->n_vals;
    for (size_t i = 0; i < nv / 2; i++) {
        double t = s->lambda[i];
        s->lambda[i] = s->lambda[nv - 1 - i], s->lambda[nv - 1 - i] = t;
        for (size_t row = 0; r_vec && row < k; row++) {
            double *r = s->vec + row * r_vec;
            t = r[i], r[i] = r[nv - 1 - i], r[nv - 1 - i] = t;
        }
    }
    for (size_t i = 0; i < nv; i++)
        if (!(s->lambda[i] > 0)) s->lambda[i] = 0;
    return GRAFT_OK;
}

void graft__svd_free(struct graft__svd *s) {
    graft__free(s->vec), graft__free(s->lambda);
    s->vec = s->lambda = NULL;
}

double graft__svd_sv(const struct graft__svd *s, size_t j) { return j < s->n_vals ? sqrt(s->lambda[j]) : 0.0; }

// Σ_{j ≥ r} λ_j: the squared Frobenius error of the best rank-r approximation (Eckart–Young). With
// every eigenvalue known, summed smallest first; else the energy minus the known top ones.
double graft__svd_tail(const struct graft__svd *s, size_t r) {
    double t = 0;
    if (s->n_vals == s->k) {
        for (size_t j = s->k; j-- > r;) t += s->lambda[j];
        return t;
    }
    for (size_t j = 0; j < r && j < s->n_vals; j++) t += s->lambda[j];
    return s->energy - t > 0 ? s->energy - t : 0;
}

int graft__svd_factors(const struct graft__svd *s, const float *M, size_t r, double *U, double *S, double *Vt,
                       struct graft_err *err) {
    size_t m = s->m, n = s->n, k = s->k, w = s->r_vec;
    if (r > w) r = w; // only the computed eigenvectors
    // the short side's vectors (columns of vec), signs fixed, into U (m × r) or Vt (r × n)
    for (size_t j = 0; j < r; j++) {
        size_t best = 0;
        for (size_t i = 1; i < k; i++)
            if (fabs(s->vec[i * w + j]) > fabs(s->vec[best * w + j])) best = i;
        double sg = s->vec[best * w + j] < 0 ? -1.0 : 1.0;
        S[j] = sqrt(s->lambda[j]);
        for (size_t i = 0; i < k; i++) {
            double v = sg * s->vec[i * w + j];
            if (s->left) U[i * r + j] = v;
            else Vt[j * n + i] = v;
        }
    }
    if (!r) return GRAFT_OK;
    // the long side: Vt = diag(1/S)·Uᵀ·M (left) or U = M·V·diag(1/S) (right), blockwise in double
    double *D = graft__malloc(BLK * n * sizeof *D);
    if (!D) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for SVD factors");
    if (s->left) {
        memset(Vt, 0, r * n * sizeof *Vt);
        for (size_t r0 = 0; r0 < m; r0 += BLK) {
            size_t bw = m - r0 < BLK ? m - r0 : BLK;
            for (size_t i = 0; i < bw * n; i++) D[i] = M[r0 * n + i];
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)n, (int)bw, 1.0, U + r0 * r, (int)r, D, (int)n, 1.0, Vt,
                        (int)n);
        }
        for (size_t j = 0; j < r; j++) {
            double inv = S[j] > 0 ? 1.0 / S[j] : 0.0;
            for (size_t i = 0; i < n; i++) Vt[j * n + i] *= inv;
        }
    } else {
        for (size_t r0 = 0; r0 < m; r0 += BLK) {
            size_t bw = m - r0 < BLK ? m - r0 : BLK;
            for (size_t i = 0; i < bw * n; i++) D[i] = M[r0 * n + i];
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)bw, (int)r, (int)n, 1.0, D, (int)n, Vt, (int)n, 0.0, U + r0 * r, (int)r);
        }
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < r; j++) U[i * r + j] *= S[j] > 0 ? 1.0 / S[j] : 0.0;
    }
    graft__free(D);
    return GRAFT_OK;
}

// Orthonormal basis of the columns of Y (rows × l, row-major) in place: Householder QR (sgeqrf + sorgqr).
static int orthonormalize(float *Y, size_t rows, size_t l, float *tau, struct graft_err *err) {
    if (LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)l, Y, (lapack_int)l, tau) ||
        LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)l, (lapack_int)l, Y, (lapack_int)l, tau))
        return graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "QR factorisation failed (non-finite values?)");
    return GRAFT_OK;
}

int graft__svd_randomized(const float *M, size_t m, size_t n, size_t r, size_t oversample, int power, uint64_t key, double *U, double *S,
                          double *Vt, double *energy, double *tail, struct graft_err *err) {
    size_t k = m < n ? m : n, l = r + oversample < k ? r + oversample : k;
    if (r > l) r = l;
    double e = 0;
    for (size_t i = 0; i < m * n; i++) e += (double)M[i] * M[i];
    *energy = e, *tail = e;
    if (!r) return GRAFT_OK;
    float *Om = graft__malloc(n * l * sizeof *Om), *Y = graft__malloc(m * l * sizeof *Y), *Z = graft__malloc(n * l * sizeof *Z);
    float *tau = graft__malloc(l * sizeof *tau), *B = graft__malloc(l * n * sizeof *B);
    double *Bd = graft__malloc(l * n * sizeof *Bd), *Ub = graft__malloc(l * l * sizeof *Ub), *Sb = graft__malloc(l * sizeof *Sb);
    double *Vb = graft__malloc(l * n * sizeof *Vb), *Qd = graft__malloc(m * l * sizeof *Qd);
    int rc = Om && Y && Z && tau && B && Bd && Ub && Sb && Vb && Qd ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for a randomized SVD");
    if (rc) goto out;
    for (size_t i = 0; i < n * l; i++) Om[i] = (float)graft__rng_normal(key, i, 1.0); // a pure function of key: thread-independent
    // Y = M·Ω, then `power` rounds of Z = orth(Mᵀ·orth(Y)), Y = M·Z (each product orthonormalised first:
    // without it the small singular directions drown in rounding after one or two rounds)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)n, 1.0f, M, (int)n, Om, (int)l, 0.0f, Y, (int)l);
    for (int q = 0; q < power && !rc; q++) {
        if ((rc = orthonormalize(Y, m, l, tau, err))) break;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)l, (int)m, 1.0f, M, (int)n, Y, (int)l, 0.0f, Z, (int)l);
        if ((rc = orthonormalize(Z, n, l, tau, err))) break;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)n, 1.0f, M, (int)n, Z, (int)l, 0.0f, Y, (int)l);
    }
    if (rc || (rc = orthonormalize(Y, m, l, tau, err))) goto out;
    // B = Qᵀ·M (l × n), its exact SVD in double: B = Ub·Sb·Vb, then U = Q·Ub
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)l, (int)n, (int)m, 1.0f, Y, (int)l, M, (int)n, 0.0f, B, (int)n);
    for (size_t i = 0; i < l * n; i++) Bd[i] = B[i];
    if (LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)l, (lapack_int)n, Bd, (lapack_int)n, Sb, Ub, (lapack_int)l, Vb, (lapack_int)n)) {
        rc = graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "SVD of the projected matrix failed");
        goto out;
    }
    for (size_t i = 0; i < m * l; i++) Qd[i] = Y[i];
    double *Ul = graft__malloc(m * l * sizeof *Ul);
    if (!Ul) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for a randomized SVD"); goto out; }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)l, (int)l, 1.0, Qd, (int)l, Ub, (int)l, 0.0, Ul, (int)l);
    bool left = m <= n; // signs fixed on the short side's vector, as the Gram route does
    double kept = 0;
    for (size_t j = 0; j < r; j++) {
        size_t best = 0, len = left ? m : n;
        for (size_t i = 1; i < len; i++)
            if (fabs(left ? Ul[i * l + j] : Vb[j * n + i]) > fabs(left ? Ul[best * l + j] : Vb[j * n + best])) best = i;
        double sg = (left ? Ul[best * l + j] : Vb[j * n + best]) < 0 ? -1.0 : 1.0;
        S[j] = Sb[j], kept += Sb[j] * Sb[j];
        for (size_t i = 0; i < m; i++) U[i * r + j] = sg * Ul[i * l + j];
        for (size_t i = 0; i < n; i++) Vt[j * n + i] = sg * Vb[j * n + i];
    }
    graft__free(Ul);
    *tail = e - kept > 0 ? e - kept : 0;
out:
    graft__free(Om), graft__free(Y), graft__free(Z), graft__free(tau), graft__free(B);
    graft__free(Bd), graft__free(Ub), graft__free(Sb), graft__free(Vb), graft__free(Qd);
    return rc;
}

void graft__sgemm_acc(bool ta, bool tb, size_t m, size_t n, size_t kk, float alpha, const float *A, size_t lda, const float *B, size_t ldb,
                      float *C, size_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)kk, alpha, A, (int)lda, B,
                (int)ldb, 1.0f, C, (int)ldc);
}

// Thin SVD by LAPACK's divide and conquer (sgesdd), in f32 as the reference implementations run it.
// The row-major m×n matrix is, as stored, the column-major n×m matrix Mᵀ = V·S·Uᵀ, so LAPACK's left
// factor of Mᵀ is our Vt and its right factor our U, both already row-major: no transposed copies.
int graft__svd_thin(const float *M, size_t m, size_t n, float *U, float *S, float *Vt, struct graft_err *err) {
    size_t k = m < n ? m : n;
    if (!k) return GRAFT_OK;
    for (size_t i = 0; i < m * n; i++)
        if (!isfinite(M[i])) return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "non-finite value in a %zu×%zu matrix to decompose", m, n);
    float *A = graft__malloc(m * n * sizeof *A);
    if (!A) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for the SVD of a %zu×%zu matrix", m, n);
    memcpy(A, M, m * n * sizeof *A);
    lapack_int info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)n, (lapack_int)m, A, (lapack_int)n, S, Vt, (lapack_int)n, U, (lapack_int)k);
    if (info > 0) { // divide and conquer did not converge (rare, input-dependent): the transposed problem
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) A[j * m + i] = M[i * n + j];
        info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)m, (lapack_int)n, A, (lapack_int)m, S, U, (lapack_int)m, Vt, (lapack_int)k);
        if (!info) { // column-major U (m×k) and Vᵀ (k×n) → row-major
            float *T = graft__malloc((m > n ? m : n) * k * sizeof *T);
            if (!T) info = -1;
            for (size_t i = 0; T && i < m; i++)
                for (size_t j = 0; j < k; j++) T[i * k + j] = U[j * m + i];
            if (T) memcpy(U, T, m * k * sizeof *T);
            for (size_t i = 0; T && i < k; i++)
                for (size_t j = 0; j < n; j++) T[i * n + j] = Vt[j * k + i];
            if (T) memcpy(Vt, T, k * n * sizeof *T);
            graft__free(T);
        }
    }
    if (info > 0) { // QR iteration: slower, converges where divide and conquer does not
        float *sup = graft__malloc((k > 1 ? k - 1 : 1) * sizeof *sup);
        if (sup) {
            memcpy(A, M, m * n * sizeof *A);
            info = LAPACKE_sgesvd(LAPACK_COL_MAJOR, 'S', 'S', (lapack_int)n, (lapack_int)m, A, (lapack_int)n, S, Vt, (lapack_int)n, U, (lapack_int)k, sup);
        }
        graft__free(sup);
    }
    graft__free(A);
    if (info) return graft_err_set(err, info < 0 ? GRAFT_E_NOMEM : GRAFT_E_FORMAT, NULL, NULL, 0, "sgesdd failed (info %d) on a %zu×%zu matrix", (int)info, m, n);
    return GRAFT_OK;
}

// polar(A) = P·Qh for the thin SVD A = P·S·Qh (the nearest matrix with orthonormal rows or columns).
int graft__polar(float *A, size_t m, size_t n, struct graft_err *err) {
    size_t k = m < n ? m : n;
    float *P = graft__malloc(m * k * sizeof *P), *S = graft__malloc(k * sizeof *S), *Q = graft__malloc(k * n * sizeof *Q);
    int rc = P && S && Q ? graft__svd_thin(A, m, n, P, S, Q, err) : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    if (!rc) {
        memset(A, 0, m * n * sizeof *A);
        graft__sgemm_acc(false, false, m, n, k, 1.0f, P, k, Q, n, A, n);
    }
    graft__free(P), graft__free(S), graft__free(Q);
    return rc;
}

// The polar factor by the Gram route: with G = A·Aᵀ (A wide) or Aᵀ·A (tall), accumulated in double
// and eigendecomposed (graft__svd_gram: G = W·Λ·Wᵀ), polar(A) = W·Λ^-½·Wᵀ·A or A·W·Λ^-½·Wᵀ — the same
// factor P·Qᵀ as the SVD route when A has full rank, for one short-side² eigensolve and two GEMMs
// instead of the bidiagonalisation of A. Errors grow like ε·κ² in double; past κ = 10⁶ (λ_min / λ_max
// < 10⁻¹²: nearly dependent rows, where the factor is ill-defined anyway) the SVD route runs instead.
int graft__polar_gram(float *A, size_t m, size_t n, struct graft_err *err) {
    size_t k = m < n ? m : n;
    if (!k) return GRAFT_OK;
    struct graft__svd s;
    int rc = graft__svd_gram(A, m, n, k, &s, err);
    if (rc == GRAFT_E_LIMIT) { graft_err_clear(err); return graft__polar(A, m, n, err); } // a Gram matrix too large: the SVD route
    if (rc) return rc;
    if (s.n_vals < k || !(s.lambda[k - 1] > 1e-12 * s.lambda[0])) { graft__svd_free(&s); return graft__polar(A, m, n, err); }
    double *Z = graft__malloc(k * k * sizeof *Z), *Td = graft__malloc(k * k * sizeof *Td);
    float *T = graft__malloc(k * k * sizeof *T), *out = graft__calloc(m * n, sizeof *out);
    if (!Z || !Td || !T || !out) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for a %zu × %zu polar factor", m, n); goto out; }
    for (size_t i = 0; i < k; i++) // Z = W·Λ^-½ (W = s.vec, k × k, column j = eigenvector j)
        for (size_t j = 0; j < k; j++) Z[i * k + j] = s.vec[i * k + j] / sqrt(s.lambda[j]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)k, (int)k, (int)k, 1.0, Z, (int)k, s.vec, (int)k, 0.0, Td, (int)k);
    for (size_t i = 0; i < k * k; i++) T[i] = (float)Td[i];
    if (s.left) graft__sgemm_acc(false, false, m, n, k, 1.0f, T, k, A, n, out, n); // (A·Aᵀ)^-½·A
    else graft__sgemm_acc(false, false, m, n, k, 1.0f, A, n, T, k, out, n);        // A·(Aᵀ·A)^-½
    memcpy(A, out, m * n * sizeof *A);
out:
    graft__svd_free(&s);
    graft__free(Z), graft__free(Td), graft__free(T), graft__free(out);
    return rc;
}

// The polar factor of A = [A₁ | A₂] (rows: A₁ over A₂) whose halves each have orthonormal columns
// (rows) — tsv's Ũ and Ṽh at T = 2 — without the 2k × 2k eigensolve of the Gram route. G = AᵀA (rows:
// AAᵀ) is formed in double as there: [[I + E₁, C], [Cᵀ, I + E₂]], E_i the halves' departure from
// orthonormality (float rounding: ‖E_i‖_F ≈ 10⁻⁵ at k = 1024). L_i = (I + E_i)^-½ by its series to E³
// (‖E_i‖_F ≤ 3·10⁻⁴: the rest, below 35/128·‖E‖⁴ ≈ 2·10⁻¹⁵, is at double rounding) makes
// G̃ = L·G·L = [[I, C̃], [C̃ᵀ, I]], C̃ = L₁·C·L₂, L = diag(L₁, L₂).
// With C̃ = P·Σ·Qᵀ each pair p_i, q_i spans a 2 × 2 block [[1, σ_i], [σ_i, 1]], so
// G̃^-½ = ½·[[P·D₊·Pᵀ, P·D₋·Qᵀ], [Q·D₋·Pᵀ, Q·D₊·Qᵀ]], D± = (1 + σ)^-½ ± (1 − σ)^-½, and A·L·G̃^-½
// (rows: G̃^-½·L·A) has orthonormal columns (rows) exactly: (L·G̃^-½)ᵀ·G·(L·G̃^-½) = I. It is the polar
// factor of A·L, A within ‖E‖ — what a float SVD of A gives too. Costs a k × k SVD and a few k³ GEMMs
// beside the Gram matrix and the final GEMM. Halves further from orthonormal (zero singular values
// upstream), σ within 10⁻¹² of 1 (the Gram route's limit) or a failed SVD take graft__polar_gram.
int graft__polar_pair(float *A, size_t m, size_t n, bool rows, bool *paired, struct graft_err *err) {
    size_t r = rows ? m : n, len = rows ? n : m, k = r / 2;
    if (paired) *paired = false;
    if (r % 2 || r > len || !k) return graft__polar_gram(A, m, n, err);
    for (size_t i = 0; i < m * n; i++)
        if (!isfinite(A[i])) return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "non-finite value in a %zu×%zu matrix to orthogonalise", m, n);
    double *G = graft__calloc(r * r, sizeof *G), *D = graft__malloc(r * BLK * sizeof *D), *sg = graft__malloc(k * sizeof *sg);
    double *E[2] = {graft__malloc(k * k * sizeof(double)), graft__malloc(k * k * sizeof(double))};
    double *Lh[2] = {graft__malloc(k * k * sizeof(double)), graft__malloc(k * k * sizeof(double))};
    double *Ct = graft__malloc(k * k * sizeof *Ct), *P = graft__malloc(k * k * sizeof *P), *Qt = graft__malloc(k * k * sizeof *Qt);
    double *Xd = graft__malloc(r * r * sizeof *Xd);
    float *X = graft__malloc(r * r * sizeof *X), *out = graft__calloc(m * n, sizeof *out);
    int rc = G && D && sg && E[0] && E[1] && Lh[0] && Lh[1] && Ct && P && Qt && Xd && X && out
                 ? GRAFT_OK
                 : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for a %zu × %zu polar factor", m, n);
    bool gram = false;
    if (!rc) gram_upper(A, m, n, rows, G, D);
    for (int h = 0; !rc && !gram && h < 2; h++) { // E_h from the upper triangle; L_h = I + E(−½ + E(⅜ − (5/16)·E))
        double *e = E[h], *l = Lh[h], f = 0;
        for (size_t i = 0; i < k; i++)
            for (size_t j = i; j < k; j++) {
                double v = G[(h * k + i) * r + h * k + j] - (i == j);
                e[i * k + j] = e[j * k + i] = v, f += (i == j ? 1 : 2) * v * v;
            }
        if (!(f <= 9e-8)) { gram = true; break; } // ‖E‖_F > 3·10⁻⁴, or not finite
        for (size_t i = 0; i < k * k; i++) Ct[i] = -0.3125 * e[i] + (i % (k + 1) == 0 ? 0.375 : 0);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)k, (int)k, 1.0, e, (int)k, Ct, (int)k, 0.0, P, (int)k);
        for (size_t i = 0; i < k; i++) P[i * k + i] -= 0.5;
        for (size_t i = 0; i < k * k; i++) l[i] = i % (k + 1) == 0 ? 1 : 0;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)k, (int)k, 1.0, e, (int)k, P, (int)k, 1.0, l, (int)k);
    }
    if (!rc && !gram) { // C̃ = L₁·C·L₂ (C: G's upper right block)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)k, (int)k, 1.0, Lh[0], (int)k, G + k, (int)r, 0.0, P, (int)k);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)k, (int)k, 1.0, P, (int)k, Lh[1], (int)k, 0.0, Ct, (int)k);
        if (LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'A', (lapack_int)k, (lapack_int)k, Ct, (lapack_int)k, sg, P, (lapack_int)k, Qt, (lapack_int)k) ||
            !((1.0 - sg[0]) > 1e-12 * (1.0 + sg[0])))
            gram = true;
    }
    if (!rc && !gram) {
        // G̃^-½ into G's storage: X₁₁ = P·(½D₊)·Pᵀ, X₁₂ = P·(½D₋)·Qᵀ = X₂₁ᵀ, X₂₂ = Q·(½D₊)·Qᵀ
        double *Y = E[0];
        for (int half = 0; half < 2; half++) {
            for (size_t i = 0; i < k; i++)
                for (size_t j = 0; j < k; j++) {
                    double a = 1.0 / sqrt(1.0 + sg[j]), bb = 1.0 / sqrt(1.0 - sg[j]);
                    Y[i * k + j] = P[i * k + j] * 0.5 * (half ? a - bb : a + bb);
                }
            cblas_dgemm(CblasRowMajor, CblasNoTrans, half ? CblasNoTrans : CblasTrans, (int)k, (int)k, (int)k, 1.0, Y, (int)k, half ? Qt : P,
                        (int)k, 0.0, G + (half ? k : 0), (int)r);
        }
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < k; j++) Y[i * k + j] = Qt[i * k + j] * 0.5 * (1.0 / sqrt(1.0 + sg[i]) + 1.0 / sqrt(1.0 - sg[i]));
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)k, (int)k, 1.0, Qt, (int)k, Y, (int)k, 0.0, G + k * r + k, (int)r);
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < k; j++) G[(k + j) * r + i] = G[i * r + k + j];
        // X = L·G̃^-½: row half h is L_h times G̃^-½'s rows of that half
        for (int h = 0; h < 2; h++)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)r, (int)k, 1.0, Lh[h], (int)k, G + h * k * r, (int)r, 0.0, Xd + h * k * r, (int)r);
        for (size_t i = 0; i < r * r; i++) X[i] = (float)Xd[i];
        if (rows) cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)m, (int)n, (int)r, 1.0f, X, (int)r, A, (int)n, 0.0f, out, (int)n); // Xᵀ·A
        else graft__sgemm_acc(false, false, m, n, r, 1.0f, A, n, X, r, out, n);                                                             // A·X
        memcpy(A, out, m * n * sizeof *A);
        if (paired) *paired = true;
    }
    graft__free(G), graft__free(D), graft__free(sg), graft__free(E[0]), graft__free(E[1]), graft__free(Lh[0]), graft__free(Lh[1]);
    graft__free(Ct), graft__free(P), graft__free(Qt), graft__free(Xd), graft__free(X), graft__free(out);
    return !rc && gram ? graft__polar_gram(A, m, n, err) : rc;
}

// Householder QR of the row-major rows × k matrix A (rows ≥ k) in place: A becomes Q (orthonormal
// columns), R (k × k, upper triangular) is written separately.
static int qr_thin(float *A, size_t rows, size_t k, float *R, struct graft_err *err) {
    float *tau = graft__malloc((k ? k : 1) * sizeof *tau);
    int rc = tau ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory");
    if (!rc && LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)k, A, (lapack_int)k, tau))
        rc = graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "QR factorisation of a %zu×%zu matrix failed", rows, k);
    for (size_t i = 0; !rc && i < k; i++)
        for (size_t j = 0; j < k; j++) R[i * k + j] = j >= i ? A[i * k + j] : 0.0f;
    if (!rc && LAPACKE_sorgqr(LAPACK_ROW_MAJOR, (lapack_int)rows, (lapack_int)k, (lapack_int)k, A, (lapack_int)k, tau))
        rc = graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "QR factorisation of a %zu×%zu matrix failed", rows, k);
    graft__free(tau);
    return rc;
}

// Column form of graft__polar_partial: A (m×r) = [F | C], F the first k columns, C's c = r − k columns
// orthonormal, k ≤ c. Split F = C·B + F⊥ (F⊥ ⟂ C, projected twice), F⊥ = Q⊥·R⊥ and B = Q_B·R_B (thin
// QRs). With Z = [Q⊥ | C] (orthonormal columns), A = Z·K for K = [[R⊥, 0], [B, I]], which is the
// identity outside the 2k coordinates W = diag(I_k, Q_B) and there equals K_s = [[R⊥, 0], [R_B, I_k]].
// So polar(A) = Z·polar(K) = Z + [Q⊥ | C·Q_B]·(polar(K_s) − I)·Wᵀ — exact, with one SVD of 2k × 2k
// (graft__polar, as the reference's full one) instead of one of m × r.
static int polar_cols_partial(float *A, size_t m, size_t r, size_t k, struct graft_err *err) {
    size_t c = r - k, p = 2 * k;
    float *B = graft__calloc(c * k, sizeof *B), *D = graft__calloc(c * k, sizeof *D), *Fp = graft__malloc(m * k * sizeof *Fp);
    float *Rp = graft__malloc(k * k * sizeof *Rp), *Rb = graft__malloc(k * k * sizeof *Rb), *Ks = graft__calloc(p * p, sizeof *Ks);
    float *Y = graft__malloc(m * p * sizeof *Y), *X = graft__malloc(m * p * sizeof *X);
    int rc = B && D && Fp && Rp && Rb && Ks && Y && X ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory to orthogonalise a %zu×%zu matrix", m, r);
    const float *C = A + k;
    for (size_t i = 0; !rc && i < m; i++) memcpy(Fp + i * k, A + i * r, k * sizeof *Fp);
    for (int round = 0; !rc && round < 2; round++) { // B += Cᵀ·F⊥, F⊥ −= C·(Cᵀ·F⊥): F = C·B + F⊥ holds throughout
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c, (int)k, (int)m, 1.0f, C, (int)r, Fp, (int)k, 0.0f, D, (int)k);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)k, (int)c, -1.0f, C, (int)r, D, (int)k, 1.0f, Fp, (int)k);
        for (size_t i = 0; i < c * k; i++) B[i] += D[i];
    }
    if (!rc) rc = qr_thin(Fp, m, k, Rp, err); // Fp → Q⊥
    // Columns of F⊥ much shorter than F's lose their orthogonality to C in rounding, and so do the QR's
    // columns for them: D = Cᵀ·Q⊥, Q⊥ − C·D = Q₂·R₂ gives F = C·(B + D·R⊥) + Q₂·(R₂·R⊥) ("twice is
    // enough"); if Q⊥ is still not ⟂ C (dependent columns), the full SVD runs.
    for (int round = 0; !rc; round++) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)c, (int)k, (int)m, 1.0f, C, (int)r, Fp, (int)k, 0.0f, D, (int)k);
        float worst = 0;
        for (size_t i = 0; i < c * k; i++) worst = fabsf(D[i]) > worst ? fabsf(D[i]) : worst;
        if (worst <= 1e-6f) break;
        if (round == 2) {
            graft__free(B), graft__free(D), graft__free(Fp), graft__free(Rp), graft__free(Rb), graft__free(Ks), graft__free(Y), graft__free(X);
            return graft__polar(A, m, r, err);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)k, (int)c, -1.0f, C, (int)r, D, (int)k, 1.0f, Fp, (int)k);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)c, (int)k, (int)k, 1.0f, D, (int)k, Rp, (int)k, 1.0f, B, (int)k); // B += D·R⊥
        if ((rc = qr_thin(Fp, m, k, Rb, err))) break; // Rb: R₂ for now
        cblas_strmm(CblasRowMajor, CblasLeft, CblasUpper, CblasNoTrans, CblasNonUnit, (int)k, (int)k, 1.0f, Rb, (int)k, Rp, (int)k); // R⊥ = R₂·R⊥
    }
    if (!rc) rc = qr_thin(B, c, k, Rb, err);  // B → Q_B
    for (size_t i = 0; !rc && i < k; i++) {   // K_s = [[R⊥, 0], [R_B, I]]
        memcpy(Ks + i * p, Rp + i * k, k * sizeof *Ks);
        memcpy(Ks + (k + i) * p, Rb + i * k, k * sizeof *Ks);
        Ks[(k + i) * p + k + i] = 1.0f;
    }
    if (!rc) rc = graft__polar(Ks, p, p, err);
    for (size_t i = 0; !rc && i < p; i++) Ks[i * p + i] -= 1.0f; // E = polar(K_s) − I
    if (!rc) {
        for (size_t i = 0; i < m; i++) memcpy(Y + i * p, Fp + i * k, k * sizeof *Y); // Y = [Q⊥ | C·Q_B]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)k, (int)c, 1.0f, C, (int)r, B, (int)k, 0.0f, Y + k, (int)p);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)p, (int)p, 1.0f, Y, (int)p, Ks, (int)p, 0.0f, X, (int)p);
        for (size_t i = 0; i < m; i++) // first k columns: Q⊥ + X₁; the rest: C + X₂·Q_Bᵀ
            for (size_t j = 0; j < k; j++) A[i * r + j] = Fp[i * k + j] + X[i * p + j];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)c, (int)k, 1.0f, X + k, (int)p, B, (int)k, 1.0f, A + k, (int)r);
    }
    graft__free(B), graft__free(D), graft__free(Fp), graft__free(Rp), graft__free(Rb), graft__free(Ks), graft__free(Y), graft__free(X);
    return rc;
}

int graft__polar_partial(float *A, size_t m, size_t n, size_t k, bool rows, struct graft_err *err) {
    size_t r = rows ? m : n, len = rows ? n : m;
    if (!k || k > r - k || r > len) return k ? graft__polar(A, m, n, err) : GRAFT_OK; // k = 0: already orthonormal
    for (size_t i = 0; i < m * n; i++)
        if (!isfinite(A[i])) return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "non-finite value in a %zu×%zu matrix to orthogonalise", m, n);
    if (!rows) return polar_cols_partial(A, m, n, k, err);
    float *T = graft__malloc(m * n * sizeof *T);
    if (!T) return graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory to orthogonalise a %zu×%zu matrix", m, n);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) T[j * m + i] = A[i * n + j];
    int rc = polar_cols_partial(T, n, m, k, err);
    for (size_t i = 0; !rc && i < m; i++)
        for (size_t j = 0; j < n; j++) A[i * n + j] = T[j * m + i];
    graft__free(T);
    return rc;
}

// Top r singular triplets of the product B·A (B: p × c, A: c × q, row-major double, both overwritten)
// without forming it: blocked Householder QRs B = Q_B·R_B and Aᵀ = Q_A·R_A (dgeqrt: BLAS-3 even for
// the c ≤ 128 columns where dgeqrf runs unblocked, rank-1 updates over the whole matrix per column),
// the SVD of the small core R_B·R_Aᵀ = U_c·S·V_cᵀ, then U = Q_B·U_c and V = Q_A·V_c by applying the
// reflectors (dgemqrt) to the r kept columns. Column-major throughout: A's row-major storage is Aᵀ's
// column-major one, so nothing is transposed. Costs O((p + q)·c² + (p + q)·c·r). Signs as
// graft__svd_factors (the short side's vector has its largest-magnitude entry positive). *energy =
// ‖B·A‖_F² and *tail = the energy of the components dropped, both from the core's exact spectrum.
int graft__svd_product(double *B, size_t p, size_t c, double *A, size_t q, size_t r, double *U, double *S, double *Vt, double *energy,
                       double *tail, struct graft_err *err) {
    size_t kb = p < c ? p : c, ka = q < c ? q : c, kc = kb < ka ? kb : ka;
    *energy = *tail = 0;
    if (r > kc) r = kc;
    if (kc == 0) return GRAFT_OK;
    size_t nbb = kb < 32 ? kb : 32, nba = ka < 32 ? ka : 32;
    double *Bc = graft__malloc(p * c * sizeof *Bc), *Tb = graft__malloc(nbb * kb * sizeof *Tb), *Ta = graft__malloc(nba * ka * sizeof *Ta),
           *C = graft__calloc(kb * ka, sizeof *C), *Uc = graft__malloc(kb * kc * sizeof *Uc), *Sc = graft__malloc(kc * sizeof *Sc),
           *Vc = graft__malloc(kc * ka * sizeof *Vc), *Ucol = graft__calloc(p * (r ? r : 1), sizeof *Ucol), *sup = graft__malloc(kc * sizeof *sup);
    int rc = GRAFT_OK;
    if (!Bc || !Tb || !Ta || !C || !Uc || !Sc || !Vc || !Ucol || !sup) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for an SVD"); goto out; }
    for (size_t i = 0; i < p; i++) // B row-major → column-major (p × c, ld p)
        for (size_t j = 0; j < c; j++) Bc[j * p + i] = B[i * c + j];
    // A row-major c × q is Aᵀ column-major q × c (ld q)
    if (LAPACKE_dgeqrt(LAPACK_COL_MAJOR, (lapack_int)p, (lapack_int)c, (lapack_int)nbb, Bc, (lapack_int)p, Tb, (lapack_int)nbb) ||
        LAPACKE_dgeqrt(LAPACK_COL_MAJOR, (lapack_int)q, (lapack_int)c, (lapack_int)nba, A, (lapack_int)q, Ta, (lapack_int)nba)) {
        rc = graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "QR factorization failed");
        goto out;
    }
    // C = R_B·R_Aᵀ (kb × ka, column-major): R_B is kb × c, R_A is ka × c, both upper trapezoids (copied
    // out contiguous)
    double *Rb = graft__calloc(kb * c, sizeof *Rb), *Ra = graft__calloc(ka * c, sizeof *Ra);
    if (!Rb || !Ra) { graft__free(Rb), graft__free(Ra); rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for an SVD"); goto out; }
    for (size_t l = 0; l < c; l++) {
        memcpy(Rb + l * kb, Bc + l * p, (l + 1 < kb ? l + 1 : kb) * sizeof *Rb);
        memcpy(Ra + l * ka, A + l * q, (l + 1 < ka ? l + 1 : ka) * sizeof *Ra);
    }
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, (int)kb, (int)ka, (int)c, 1.0, Rb, (int)kb, Ra, (int)ka, 0.0, C, (int)kb);
    graft__free(Rb), graft__free(Ra);
    double *C0 = graft__malloc(kb * ka * sizeof *C0); // dgesdd destroys C: its fallback needs the original
    if (!C0) { rc = graft_err_set(err, GRAFT_E_NOMEM, NULL, NULL, 0, "out of memory for an SVD"); goto out; }
    memcpy(C0, C, kb * ka * sizeof *C);
    bool failed = LAPACKE_dgesdd(LAPACK_COL_MAJOR, 'S', (lapack_int)kb, (lapack_int)ka, C, (lapack_int)kb, Sc, Uc, (lapack_int)kb, Vc, (lapack_int)kc) &&
                  LAPACKE_dgesvd(LAPACK_COL_MAJOR, 'S', 'S', (lapack_int)kb, (lapack_int)ka, C0, (lapack_int)kb, Sc, Uc, (lapack_int)kb, Vc, (lapack_int)kc, sup);
    graft__free(C0);
    if (failed) {
        rc = graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "the SVD of a %zu × %zu core did not converge", kb, ka);
        goto out;
    }
    for (size_t j = 0; j < kc; j++) *energy += Sc[j] * Sc[j];
    for (size_t j = r; j < kc; j++) *tail += Sc[j] * Sc[j];
    if (!r) goto out;
    // U = Q_B·[U_c(:, :r); 0] (p × r), V = Q_A·[V_c(:, :r); 0] (q × r) — V column-major is Vt row-major
    memset(Vt, 0, r * q * sizeof *Vt);
    for (size_t j = 0; j < r; j++) {
        for (size_t i = 0; i < kb; i++) Ucol[j * p + i] = Uc[j * kb + i];
        for (size_t i = 0; i < ka; i++) Vt[j * q + i] = Vc[i * kc + j]; // Vc holds V_cᵀ (kc × ka, ld kc)
    }
    if (LAPACKE_dgemqrt(LAPACK_COL_MAJOR, 'L', 'N', (lapack_int)p, (lapack_int)r, (lapack_int)kb, (lapack_int)nbb, Bc, (lapack_int)p, Tb,
                        (lapack_int)nbb, Ucol, (lapack_int)p) ||
        LAPACKE_dgemqrt(LAPACK_COL_MAJOR, 'L', 'N', (lapack_int)q, (lapack_int)r, (lapack_int)ka, (lapack_int)nba, A, (lapack_int)q, Ta,
                        (lapack_int)nba, Vt, (lapack_int)q)) {
        rc = graft_err_set(err, GRAFT_E_INTERNAL, NULL, NULL, 0, "applying the QR factors failed");
        goto out;
    }
    for (size_t j = 0; j < r; j++) {
        S[j] = Sc[j];
        bool left = p <= q;
        size_t n = left ? p : q, best = 0;
        const double *v = left ? Ucol + j * p : Vt + j * q;
        for (size_t i = 1; i < n; i++)
            if (fabs(v[i]) > fabs(v[best])) best = i;
        double sg = v[best] < 0 ? -1.0 : 1.0;
        for (size_t i = 0; i < p; i++) U[i * r + j] = sg * Ucol[j * p + i];
        for (size_t i = 0; i < q; i++) Vt[j * q + i] *= sg;
    }
out:
    graft__free(Bc), graft__free(Tb), graft__free(Ta), graft__free(C), graft__free(Uc), graft__free(Sc), graft__free(Vc), graft__free(Ucol), graft__free(sup);
    return rc;
}
