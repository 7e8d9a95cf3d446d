// Truncated SVD by the Gram route (src/core/linalg.c): singular values, vectors and signs on matrices
// whose SVD is known by hand, both Gram sides (m ≤ n and m > n), rank-deficient input, the
// Eckart–Young tail, and orthonormality / reconstruction on a random matrix.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "harness.h"
#include <lapacke.h>
#include "graft/util.h"
#include "../src/core/impl.h"
#include "../src/eval/eval-impl.h"

static bool near(double a, double b, double tol) { return fabs(a - b) <= tol; }

// M = [[3, 0, 0], [0, −4, 0]]: S = (4, 3); u₁ = (0, 1) (sign: largest entry positive), v₁ = (0, −1, 0);
// u₂ = (1, 0), v₂ = (1, 0, 0). The transpose swaps the roles (right-hand Gram route).
TEST(svd_by_hand_both_sides) {
    const float M[6] = {3, 0, 0, 0, -4, 0}, Mt[6] = {3, 0, 0, -4, 0, 0};
    struct graft_err err;
    for (int side = 0; side < 2; side++) {
        struct graft__svd s;
        size_t m = side ? 3 : 2, n = side ? 2 : 3;
        CHECK_EQ(graft__svd_gram(side ? Mt : M, m, n, 2, &s, &err), GRAFT_OK);
        CHECK(s.left == (side == 0));
        CHECK(near(s.energy, 25, 1e-12) && near(graft__svd_sv(&s, 0), 4, 1e-12) && near(graft__svd_sv(&s, 1), 3, 1e-12));
        CHECK(near(graft__svd_tail(&s, 1), 9, 1e-12) && near(graft__svd_tail(&s, 2), 0, 1e-12));
        double U[6], S[2], Vt[6];
        CHECK_EQ(graft__svd_factors(&s, side ? Mt : M, 2, U, S, Vt, &err), GRAFT_OK);
        // the short side carries the positive sign: M: u₁ = (0, 1); Mᵀ: v₁ = (0, 1)
        if (!side) {
            CHECK(near(U[0 * 2 + 0], 0, 1e-12) && near(U[1 * 2 + 0], 1, 1e-12) && near(U[0 * 2 + 1], 1, 1e-12));
            CHECK(near(Vt[0 * 3 + 1], -1, 1e-12) && near(Vt[1 * 3 + 0], 1, 1e-12));
        } else {
            CHECK(near(Vt[0 * 2 + 1], 1, 1e-12) && near(Vt[1 * 2 + 0], 1, 1e-12));
            CHECK(near(U[1 * 2 + 0], -1, 1e-12) && near(U[0 * 2 + 1], 1, 1e-12));
        }
        graft__svd_free(&s);
        // values only (how ranks are chosen from the spectrum), and one vector (tail from the energy)
        CHECK_EQ(graft__svd_gram(side ? Mt : M, m, n, 0, &s, &err), GRAFT_OK);
        CHECK(s.n_vals == 2 && s.vec == NULL && near(graft__svd_sv(&s, 1), 3, 1e-12) && near(graft__svd_tail(&s, 1), 9, 1e-12));
        graft__svd_free(&s);
        CHECK_EQ(graft__svd_gram(side ? Mt : M, m, n, 1, &s, &err), GRAFT_OK);
        CHECK(s.n_vals == 1 && near(graft__svd_sv(&s, 0), 4, 1e-12) && near(graft__svd_tail(&s, 1), 9, 1e-12));
        graft__svd_free(&s);
    }
}

// A rank-1 matrix u·vᵀ: one singular value |u|·|v|, the rest 0, and the rank-1 factors rebuild it.
TEST(svd_rank_one_and_zero_directions) {
    float M[4 * 5];
    const float u[4] = {1, -2, 0.5f, 3}, v[5] = {2, 0, -1, 1, 0.25f};
    double nu = 0, nv = 0;
    for (int i = 0; i < 4; i++) nu += u[i] * u[i];
    for (int j = 0; j < 5; j++) nv += v[j] * v[j];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) M[i * 5 + j] = u[i] * v[j];
    struct graft_err err;
    struct graft__svd s;
    CHECK_EQ(graft__svd_gram(M, 4, 5, 4, &s, &err), GRAFT_OK);
    CHECK(near(graft__svd_sv(&s, 0), sqrt(nu * nv), 1e-9));
    for (size_t j = 1; j < s.k; j++) CHECK(graft__svd_sv(&s, j) < 1e-6);
    double U[4 * 4], S[4], Vt[4 * 5];
    CHECK_EQ(graft__svd_factors(&s, M, 4, U, S, Vt, &err), GRAFT_OK);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) CHECK(near(U[i * 4] * S[0] * Vt[j], M[i * 5 + j], 1e-5));
    for (int c = 0; c < 4; c++) CHECK(isfinite(U[c]) && isfinite(Vt[c * 5])); // zero directions give no NaN
    graft__svd_free(&s);
    float Z[6] = {0};
    CHECK_EQ(graft__svd_gram(Z, 2, 3, 0, &s, &err), GRAFT_OK);
    CHECK(s.energy == 0 && graft__svd_sv(&s, 0) == 0);
    graft__svd_free(&s);
}

// Random 70 × 40 (right side) and 40 × 70 (left side): U and V orthonormal, U·S·Vᵀ = M, descending S.
TEST(svd_random_reconstructs) {
    enum { A = 70, Bn = 40 };
    float *M = malloc(A * Bn * sizeof *M), *Mt = malloc(A * Bn * sizeof *Mt);
    uint64_t st = 11;
    for (int i = 0; i < A * Bn; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        M[i] = (float)((double)(st >> 11) / 9007199254740992.0 - 0.5);
    }
    for (int i = 0; i < A; i++)
        for (int j = 0; j < Bn; j++) Mt[j * A + i] = M[i * Bn + j];
    struct graft_err err;
    for (int side = 0; side < 2; side++) {
        size_t m = side ? Bn : A, n = side ? A : Bn, k = Bn;
        const float *X = side ? Mt : M;
        struct graft__svd s;
        CHECK_EQ(graft__svd_gram(X, m, n, k, &s, &err), GRAFT_OK);
        double *U = malloc(m * k * sizeof *U), *S = malloc(k * sizeof *S), *Vt = malloc(k * n * sizeof *Vt);
        CHECK_EQ(graft__svd_factors(&s, X, k, U, S, Vt, &err), GRAFT_OK);
        double worst = 0, orth = 0;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double r = 0;
                for (size_t c = 0; c < k; c++) r += U[i * k + c] * S[c] * Vt[c * n + j];
                worst = fmax(worst, fabs(r - X[i * n + j]));
            }
        for (size_t a = 0; a < k; a++)
            for (size_t b = 0; b < k; b++) {
                double du = 0, dv = 0;
                for (size_t i = 0; i < m; i++) du += U[i * k + a] * U[i * k + b];
                for (size_t j = 0; j < n; j++) dv += Vt[a * n + j] * Vt[b * n + j];
                orth = fmax(orth, fmax(fabs(du - (a == b)), fabs(dv - (a == b))));
            }
        for (size_t c = 1; c < k; c++) CHECK(S[c] <= S[c - 1]);
        CHECK(worst < 1e-9);
        CHECK(orth < 1e-9);
        free(U), free(S), free(Vt);
        graft__svd_free(&s);
    }
    free(M), free(Mt);
}

// sgesdd thin SVD: known values on both shapes, reconstruction and orthonormal factors on a random
// matrix, and the polar factor P·Qh: orthonormal columns (tall) or rows (wide) to 1e-5, and the
// identity for a matrix that already has orthonormal columns.
TEST(svd_thin_and_polar) {
    struct graft_err err;
    const float M[6] = {3, 0, 0, 0, -4, 0};
    float U[4], S[2], Vt[6];
    CHECK_EQ(graft__svd_thin(M, 2, 3, U, S, Vt, &err), GRAFT_OK);
    CHECK(near(S[0], 4, 1e-6) && near(S[1], 3, 1e-6));
    float A[5 * 3], B[5 * 3];
    unsigned x = 12345;
    for (int i = 0; i < 15; i++) x = x * 1103515245u + 12345u, A[i] = (float)((x >> 8) % 2001) / 1000.0f - 1.0f;
    float U2[15], S2[3], V2[9];
    CHECK_EQ(graft__svd_thin(A, 5, 3, U2, S2, V2, &err), GRAFT_OK);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 3; j++) {
            double r = 0;
            for (int k = 0; k < 3; k++) r += (double)U2[i * 3 + k] * S2[k] * V2[k * 3 + j];
            CHECK(near(r, A[i * 3 + j], 1e-5));
        }
    memcpy(B, A, sizeof A);
    CHECK_EQ(graft__polar(B, 5, 3, &err), GRAFT_OK); // tall: BᵀB = I
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            double d = 0;
            for (int i = 0; i < 5; i++) d += (double)B[i * 3 + a] * B[i * 3 + b];
            CHECK(near(d, a == b, 1e-5));
        }
    float W[3 * 5];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) W[i * 5 + j] = A[j * 3 + i];
    CHECK_EQ(graft__polar(W, 3, 5, &err), GRAFT_OK); // wide: WWᵀ = I, and it is the transpose of the tall one
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            double d = 0;
            for (int j = 0; j < 5; j++) d += (double)W[a * 5 + j] * W[b * 5 + j];
            CHECK(near(d, a == b, 1e-5));
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) CHECK(near(W[i * 5 + j], B[j * 3 + i], 1e-5));
    float Q[4] = {0, 1, 1, 0}; // already orthogonal: its own polar factor
    CHECK_EQ(graft__polar(Q, 2, 2, &err), GRAFT_OK);
    CHECK(near(Q[0], 0, 1e-6) && near(Q[1], 1, 1e-6) && near(Q[2], 1, 1e-6) && near(Q[3], 0, 1e-6));
    const float bad[2] = {1, NAN};
    float u1[1], s1[1], v1[2];
    CHECK_EQ(graft__svd_thin(bad, 1, 2, u1, s1, v1, &err), GRAFT_E_FORMAT);
}

// The polar factor of a matrix whose last columns (or rows) are orthonormal already, by two thin QRs and
// a small SVD (graft__polar_partial, iso_cts) against the SVD route: the same matrix to a small
// multiple of n·ε·κ (κ = σ_max/σ_min of A) on a well-conditioned one, tall and wide; on a singular one
// (F copies columns of C; the polar factor is then not unique) still orthonormal columns P with PᵀA
// symmetric, as a polar factor must have.
static void rnd_fill(float *a, size_t n, unsigned seed, float scale) {
    unsigned x = seed;
    for (size_t i = 0; i < n; i++) x = x * 1103515245u + 12345u, a[i] = scale * ((float)((x >> 8) % 20001) / 10000.0f - 1.0f);
}

static double cond(const float *A, size_t m, size_t n) {
    size_t k = m < n ? m : n;
    float *U = malloc(m * k * sizeof *U), *S = malloc(k * sizeof *S), *V = malloc(k * n * sizeof *V);
    struct graft_err err;
    double kap = graft__svd_thin(A, m, n, U, S, V, &err) ? 1e9 : S[0] / S[k - 1];
    free(U), free(S), free(V);
    return kap;
}

static bool same_polar(const float *A, size_t m, size_t n, const float *P, double tol) {
    float *R = malloc(m * n * sizeof *R);
    struct graft_err err;
    memcpy(R, A, m * n * sizeof *R);
    bool ok = graft__polar(R, m, n, &err) == GRAFT_OK;
    double worst = 0;
    for (size_t i = 0; ok && i < m * n; i++) worst = fmax(worst, fabs((double)R[i] - P[i]));
    if (worst > tol) fprintf(stderr, "polar differs by %g (bound %g)\n", worst, tol);
    free(R);
    return ok && worst <= tol;
}

// P (m×n, m ≥ n): PᵀP = I and PᵀA symmetric, to tol.
static bool is_polar_cols(const float *A, const float *P, size_t m, size_t n, double tol) {
    double worst = 0;
    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b < n; b++) {
            double pp = 0, pa = 0, pb = 0;
            for (size_t i = 0; i < m; i++) pp += (double)P[i * n + a] * P[i * n + b], pa += (double)P[i * n + a] * A[i * n + b], pb += (double)P[i * n + b] * A[i * n + a];
            worst = fmax(worst, fmax(fabs(pp - (a == b)), fabs(pa - pb)));
        }
    if (worst > tol) fprintf(stderr, "not a polar factor: %g\n", worst);
    return worst <= tol;
}

TEST(polar_with_orthonormal_part) {
    struct graft_err err;
    enum { M = 60, N = 40, K = 12 };
    float A[M * N], P[M * N], W[N * M], PW[N * M], C[M * N], F[M * K], R[M * N];
    rnd_fill(C, M * N, 11, 1.0f); // C orthonormal: the SVD route's polar factor of a random matrix
    CHECK_EQ(graft__polar(C, M, N, &err), GRAFT_OK);
    memcpy(A, C, sizeof A);
    rnd_fill(F, M * K, 13, 0.3f);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < K; j++) A[i * N + j] = F[i * K + j];
    double kap = cond(A, M, N), tol = 50.0 * M * 1.2e-7 * kap;
    CHECK(tol < 1e-2); // far below the O(1) error of a wrong formula
    memcpy(P, A, sizeof A);
    CHECK_EQ(graft__polar_partial(P, M, N, K, false, &err), GRAFT_OK);
    CHECK(same_polar(A, M, N, P, tol));
    for (int i = 0; i < M; i++) // the row form: Aᵀ with its first K rows free
        for (int j = 0; j < N; j++) W[j * M + i] = A[i * N + j];
    memcpy(PW, W, sizeof W);
    CHECK_EQ(graft__polar_partial(PW, N, M, K, true, &err), GRAFT_OK);
    CHECK(same_polar(W, N, M, PW, tol));
    // F copies columns of C: A is singular (no unique polar factor); the result is still one
    for (int i = 0; i < M; i++)
        for (int j = 0; j < K; j++) A[i * N + j] = C[i * N + K + j];
    memcpy(P, A, sizeof A);
    CHECK_EQ(graft__polar_partial(P, M, N, K, false, &err), GRAFT_OK);
    CHECK(is_polar_cols(A, P, M, N, 1e-5));
    memcpy(R, A, sizeof A);
    CHECK_EQ(graft__polar(R, M, N, &err), GRAFT_OK);
    CHECK(is_polar_cols(A, R, M, N, 1e-5)); // (the SVD route is held to the same)
    // k > r − k: the plain SVD route (the same bits)
    rnd_fill(A, M * N, 17, 1.0f);
    memcpy(R, A, sizeof A), memcpy(P, A, sizeof A);
    CHECK_EQ(graft__polar(R, M, N, &err), GRAFT_OK);
    CHECK_EQ(graft__polar_partial(P, M, N, 30, false, &err), GRAFT_OK);
    CHECK(memcmp(P, R, sizeof R) == 0);
    const float bad[4] = {1, 0, 0, INFINITY};
    float b2[4];
    memcpy(b2, bad, sizeof b2);
    CHECK_EQ(graft__polar_partial(b2, 2, 2, 1, false, &err), GRAFT_E_FORMAT);
}

// graft__polar_pair (tsv at T = 2: two orthonormal halves) against the SVD route, tall (column halves)
// and wide (row halves, which must give the column form's values transposed): random halves, their
// columns scaled by 1 ± 10⁻⁵ so that they are orthonormal only to ‖E‖_F ≈ 10⁻⁴ (t = 0); halves sharing a direction up to 10⁻³ (t = 1: 1 − σ ≈
// 5·10⁻⁷, A's κ ≈ 2.6·10³); square (t = 4: two random 32-dimensional subspaces of 64, the shape tsv
// gives one side of every matrix); each time the pair route runs and its result is a polar factor —
// orthonormal columns and PᵀA symmetric — and the SVD route's, both to 2·√M·u·κ (10⁻⁵ at least): a
// backward error of √M·u·‖A‖ amplified by κ, which the final f32 product by the κ-sized G^-½ reaches
// (measured at κ = 2.6·10³: 10⁻⁴, the Gram route 3·10⁻⁵). An exactly shared direction (t = 2: σ = 1) and
// a zero column (t = 3: not orthonormal) go to the Gram route and on to the SVD route: still a polar
// factor, and for the zero column (column form) the SVD route's very bits.
static void two_halves(float *A, size_t M, size_t K, unsigned seed) {
    float *H = malloc(M * K * sizeof *H);
    struct graft_err err;
    for (size_t h = 0; h < 2; h++) { // each half: the polar factor of a random M × K matrix
        rnd_fill(H, M * K, seed + (unsigned)h, 1.0f);
        if (graft__polar(H, M, K, &err)) abort();
        for (size_t i = 0; i < M; i++) memcpy(A + i * 2 * K + h * K, H + i * K, K * sizeof *H);
    }
    free(H);
}

TEST(polar_of_two_orthonormal_halves) {
    struct graft_err err;
    for (int t = 0; t < 5; t++) {
        size_t M = t == 4 ? 64 : 70, K = t == 4 ? 32 : 12, R = 2 * K;
        float *A = malloc(M * R * sizeof *A), *B = malloc(M * R * sizeof *B), *W = malloc(M * R * sizeof *W), *H = malloc(M * K * sizeof *H);
        float *C = malloc(M * R * sizeof *C);
        two_halves(A, M, K, 31 + 2 * (unsigned)t);
        if (t == 1 || t == 2) { // column K+3 of half 2 ≈ (t = 1) or = (t = 2) column 0, half 2 orthonormalised again
            for (size_t i = 0; i < M; i++)
                for (size_t j = 0; j < K; j++) H[i * K + j] = A[i * R + K + j];
            for (size_t i = 0; i < M; i++) H[i * K + 3] = A[i * R] + (t == 1 ? 1e-3f * H[i * K + 3] : 0);
            CHECK_EQ(graft__polar(H, M, K, &err), GRAFT_OK);
            for (size_t i = 0; i < M; i++)
                for (size_t j = 0; j < K; j++) A[i * R + K + j] = H[i * K + j];
        }
        if (t == 3)
            for (size_t i = 0; i < M; i++) A[i * R + 4] = 0;
        if (t == 0) // halves orthonormal only to 10⁻⁵ (‖E‖_F ≈ 10⁻⁴): the whitening L ≠ I matters
            for (size_t i = 0; i < M * R; i++) A[i] *= 1.0f + 1e-5f * (float)((int)((i * 2654435761u >> 7) % 201) - 100) / 100.0f;
        bool paired;
        memcpy(B, A, M * R * sizeof *A);
        CHECK_EQ(graft__polar_pair(B, M, R, false, &paired, &err), GRAFT_OK);
        memcpy(C, B, M * R * sizeof *B);
        CHECK(paired == (t == 0 || t == 1 || t == 4));
        double kap = t == 2 ? 1 : cond(A, M, R), tol = fmax(1e-5, 2.0 * sqrt((double)M) * 1.2e-7 * kap);
        CHECK(is_polar_cols(A, B, M, R, tol));
        CHECK(same_polar(A, M, R, B, t == 3 ? 0 : t == 2 ? INFINITY : tol));
        for (size_t i = 0; i < M; i++) // the row form: Aᵀ, halves of rows
            for (size_t j = 0; j < R; j++) W[j * M + i] = A[i * R + j];
        CHECK_EQ(graft__polar_pair(W, R, M, true, &paired, &err), GRAFT_OK);
        CHECK(paired == (t == 0 || t == 1 || t == 4));
        double rc_diff = 0; // back to columns: the same checks, and where the pair route ran, the column form's values
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < R; j++) rc_diff = fmax(rc_diff, fabs((double)W[j * M + i] - C[i * R + j])), B[i * R + j] = W[j * M + i];
        CHECK(!paired || rc_diff <= 1e-6);
        CHECK(is_polar_cols(A, B, M, R, tol)); // (singular t = 2, 3: another completion than the columns' SVD)
        CHECK(same_polar(A, M, R, B, t == 2 || t == 3 ? INFINITY : tol));
        free(A), free(B), free(W), free(H), free(C);
    }
    const float bad[4] = {1, 0, 0, NAN};
    float b2[4];
    memcpy(b2, bad, sizeof b2);
    CHECK_EQ(graft__polar_pair(b2, 2, 2, false, NULL, &err), GRAFT_E_FORMAT);
}

// graft__svd_product against LAPACK's SVD of the product formed in double, for a core wider than
// either side (c > p, c > q), one narrower (c < p, q) and a rank-deficient B (two equal column blocks):
// singular values, U·S·Vᵀ = the best rank-r approximation, orthonormal factors, the sign rule.
TEST(svd_of_a_product_without_forming_it) {
    static const size_t shapes[][4] = {{5, 9, 7, 4}, {20, 6, 11, 3}, {8, 8, 8, 8}, {12, 6, 9, 5}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        size_t p = shapes[t][0], c = shapes[t][1], q = shapes[t][2], r = shapes[t][3];
        double *B = malloc(p * c * sizeof *B), *A = malloc(c * q * sizeof *A), *M = calloc(p * q, sizeof *M), *Mc = malloc(p * q * sizeof *Mc);
        double *U = malloc(p * r * sizeof *U), *S = malloc(r * sizeof *S), *Vt = malloc(r * q * sizeof *Vt);
        size_t k = p < q ? p : q;
        double *Sr = malloc(k * sizeof *Sr), *Ur = malloc(p * k * sizeof *Ur), *Vr = malloc(k * q * sizeof *Vr), *sup = malloc(k * sizeof *sup);
        uint64_t key = graft_rng_key(t, 0, "svd_product", 11);
        for (size_t i = 0; i < p * c; i++) B[i] = graft_rng_normalish(key, i);
        for (size_t i = 0; i < c * q; i++) A[i] = graft_rng_normalish(key, 1000 + i);
        if (t == 3) // B = [X X]: rank 3 at most, the core is singular
            for (size_t i = 0; i < p; i++)
                for (size_t j = 3; j < 6; j++) B[i * c + j] = B[i * c + j - 3];
        for (size_t i = 0; i < p; i++)
            for (size_t l = 0; l < c; l++)
                for (size_t j = 0; j < q; j++) M[i * q + j] += B[i * c + l] * A[l * q + j];
        memcpy(Mc, M, p * q * sizeof *M);
        CHECK_EQ(LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', (lapack_int)p, (lapack_int)q, Mc, (lapack_int)q, Sr, Ur, (lapack_int)k, Vr, (lapack_int)q, sup), 0);
        double energy, tail, e_ref = 0, t_ref = 0, norm = 0;
        struct graft_err err;
        CHECK_EQ(graft__svd_product(B, p, c, A, q, r, U, S, Vt, &energy, &tail, &err), GRAFT_OK);
        for (size_t j = 0; j < k; j++) e_ref += Sr[j] * Sr[j], t_ref += j >= r ? Sr[j] * Sr[j] : 0;
        norm = sqrt(e_ref);
        CHECK(near(energy, e_ref, 1e-12 * e_ref) && near(tail, t_ref, 1e-10 * e_ref));
        for (size_t j = 0; j < r; j++) CHECK(near(S[j], Sr[j], 1e-12 * Sr[0]));
        size_t keep = t == 3 ? 3 : r; // beyond the rank the vectors are any basis of the null space
        for (size_t i = 0; i < p; i++)
            for (size_t j = 0; j < q; j++) {
                double got = 0, want = 0;
                for (size_t l = 0; l < keep; l++) got += U[i * r + l] * S[l] * Vt[l * q + j], want += Ur[i * k + l] * Sr[l] * Vr[l * q + j];
                CHECK(near(got, want, 1e-12 * norm));
            }
        for (size_t a = 0; a < keep; a++)
            for (size_t b = 0; b < keep; b++) {
                double uu = 0, vv = 0;
                for (size_t i = 0; i < p; i++) uu += U[i * r + a] * U[i * r + b];
                for (size_t i = 0; i < q; i++) vv += Vt[a * q + i] * Vt[b * q + i];
                CHECK(near(uu, a == b, 1e-12) && near(vv, a == b, 1e-12));
            }
        for (size_t l = 0; l < keep; l++) { // the short side's largest-magnitude entry is positive
            size_t n = p <= q ? p : q, best = 0;
            for (size_t i = 1; i < n; i++)
                if (fabs(p <= q ? U[i * r + l] : Vt[l * q + i]) > fabs(p <= q ? U[best * r + l] : Vt[l * q + best])) best = i;
            CHECK((p <= q ? U[best * r + l] : Vt[l * q + best]) > 0);
        }
        free(B), free(A), free(M), free(Mc), free(U), free(S), free(Vt), free(Sr), free(Ur), free(Vr), free(sup);
    }
}

// graft__polar_gram against the SVD route (graft__polar) on tall, wide and square random matrices, and
// on one with two equal rows (rank-deficient: the Gram route hands over to the SVD route).
TEST(polar_by_the_gram_route) {
    static const size_t shapes[][2] = {{40, 12}, {12, 40}, {24, 24}, {6, 30}};
    for (size_t t = 0; t < 5; t++) {
        size_t m = shapes[t % 4][0], n = shapes[t % 4][1];
        float *A = malloc(m * n * sizeof *A), *B = malloc(m * n * sizeof *B);
        uint64_t key = graft_rng_key(t, 1, "polar", 5);
        for (size_t i = 0; i < m * n; i++) A[i] = graft_rng_normalish(key, i);
        if (t == 4) memcpy(A + n, A, n * sizeof *A); // rows 0 and 1 equal
        memcpy(B, A, m * n * sizeof *A);
        struct graft_err err;
        CHECK_EQ(graft__polar_gram(A, m, n, &err), GRAFT_OK);
        CHECK_EQ(graft__polar(B, m, n, &err), GRAFT_OK);
        double worst = 0;
        for (size_t i = 0; t < 4 && i < m * n; i++) worst = fmax(worst, fabs((double)A[i] - (double)B[i]));
        CHECK(worst < 1e-4);
        // orthonormal rows (wide) or columns (tall)
        size_t k = m < n ? m : n;
        for (size_t a = 0; t < 4 && a < k; a++)
            for (size_t b = 0; b < k; b++) {
                double d = 0;
                for (size_t i = 0; i < (m <= n ? n : m); i++) d += m <= n ? (double)A[a * n + i] * A[b * n + i] : (double)A[i * n + a] * A[i * n + b];
                CHECK(near(d, a == b, 1e-5));
            }
        free(A), free(B);
    }
}

// The evaluator's bf16 products (src/eval/bf16gemm.c, `eval --matmul bf16`): X rounded to bf16 (to
// nearest even: 1 + 2⁻⁸ is a tie and goes to 1, 1 + 3·2⁻⁹ rounds up to 1 + 2⁻⁷), Y (+)= Xb·Wᵀ against the same
// products summed in double — every bf16·bf16 product is exact in f32, so the only error is the f32
// accumulation, below K·2⁻²⁴·Σ|x·w| — for shapes off every tile edge (M not a multiple of 6, N of
// 64, K/2 past two chunks of 256 pairs), with and without accumulation. Runs where the CPU has
// AVX512-BF16; elsewhere the evaluator takes sgemm.
TEST(bf16_products) {
    const float r[3] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 512, -2.5f};
    uint16_t rb[6 * 3];
    graft__bf16_round_rows(r, 1, 3, rb);
    CHECK(rb[0] == 0x3F80 && rb[1] == 0x3F81 && rb[2] == 0xC020);
    CHECK(graft__bf16_rows_padded(1) == 6 && graft__bf16_rows_padded(6) == 6 && graft__bf16_rows_padded(13) == 18);
    for (size_t i = 3; i < 6 * 3; i++) CHECK(rb[i] == 0); // padded rows are zero
    if (!graft__bf16_gemm_cpu()) return;
    static const size_t shapes[][3] = {{13, 37, 1030}, {12, 32, 64}, {1, 256, 8}, {30, 70, 2}};
    for (size_t t = 0; t < 4; t++) {
        size_t M = shapes[t][0], N = shapes[t][1], K = shapes[t][2], Mp = graft__bf16_rows_padded(M);
        float *X = malloc(M * K * sizeof *X), *Y = malloc(M * N * sizeof *Y), *Wf = malloc(N * K * sizeof *Wf), *Xf = malloc(M * K * sizeof *Xf);
        uint16_t *Xb = malloc(Mp * K * sizeof *Xb), *W = malloc(N * K * sizeof *W);
        uint32_t *pack = malloc((N + 64) * K / 2 * sizeof *pack);
        uint64_t key = graft_rng_key(t, 2, "bf16", 4);
        for (size_t i = 0; i < M * K; i++) X[i] = (float)graft_rng_normalish(key, i);
        for (size_t i = 0; i < N * K; i++) Wf[i] = (float)graft_rng_normalish(key, 1u << 30 | i);
        graft_row_from_f32(GRAFT_DTYPE_BF16, Wf, W, N * K);
        graft_row_to_f32(GRAFT_DTYPE_BF16, W, Wf, N * K);
        graft__bf16_round_rows(X, M, K, Xb);
        graft_row_to_f32(GRAFT_DTYPE_BF16, Xb, Xf, M * K);
        for (int acc = 0; acc < 2; acc++) {
            for (size_t i = 0; i < M * N; i++) Y[i] = acc ? (float)i : -7.0f; // overwritten, or added to
            graft__bf16_gemm(M, N, K, Xb, W, Y, N, acc, pack);
            double worst = 0;
            for (size_t m = 0; m < M; m++)
                for (size_t n = 0; n < N; n++) {
                    double want = acc ? (double)(m * N + n) : 0, mag = fabs(want);
                    for (size_t k = 0; k < K; k++) want += (double)Xf[m * K + k] * Wf[n * K + k], mag += fabs((double)Xf[m * K + k] * Wf[n * K + k]);
                    worst = fmax(worst, fabs(Y[m * N + n] - want) / (mag * (double)(K + 2) * 0x1p-24));
                }
            CHECK(worst <= 1.0);
        }
        free(X), free(Y), free(Wf), free(Xf), free(Xb), free(W), free(pack);
    }
}
