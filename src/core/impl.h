// Internal helpers shared by the library's modules (never installed).
#ifndef GRAFT_CORE_IMPL_H
#define GRAFT_CORE_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include "graft/status.h"

// Every allocation goes through these so tests can fail the Nth one (GRAFT_FAULT_ALLOC=N in builds
// with GRAFT_FAULT_INJECTION). They behave like malloc/calloc/realloc/free otherwise.
void *graft__malloc(size_t n);
// *a = min(*a, v), atomically (the first element index that several threads report).
static inline void graft__atomic_min_u64(_Atomic uint64_t *a, uint64_t v) {
    uint64_t cur = atomic_load(a);
    while (v < cur && !atomic_compare_exchange_weak(a, &cur, v)) {}
}
// Ask for transparent huge pages over the 2 MiB-aligned interior of a large buffer about to be written
// whole (with THP in "madvise" mode: one fault per 2 MiB instead of per 4 KiB). A hint; never fails.
void  graft__advise_huge(void *p, size_t n);
void *graft__calloc(size_t n, size_t size);
void *graft__realloc(void *p, size_t n);
void  graft__free(void *p);
char *graft__strndup(const char *s, size_t n);
char *graft__strdup(const char *s);
// printf into a fresh allocation; NULL on failure.
char *graft__asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Add context to an error already set: "<file>: tensor '<name>': <old message>" (code kept).
void graft__err_prefix(struct graft_err *err, const char *file, const char *tensor, size_t tensor_len);

// I/O fault injection: returns an errno value to fail with, or 0. `op` is one of "open", "write",
// "fsync", "rename", "mkdir". Configured by GRAFT_FAULT_IO=op:N:ERRNO (fail the Nth call of op).
// Always 0 in builds without GRAFT_FAULT_INJECTION.
int graft__fault_io(const char *op);
// "16.1 GB": bytes in decimal units (kB, MB, GB, TB; 1 decimal), as progress lines and disk sizes show them.
void graft__human_bytes(char *buf, size_t n, double bytes);

static inline bool graft__mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
// Whether the n bytes at s end with the string suf.
static inline bool graft__ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}
static inline bool graft__add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

// The hash of every name table (tensors of a file, of a model, of an output; GGUF keys; a vocabulary):
// FNV-1a started from a per-table random key, then murmur3's fmix64. Unkeyed, FNV-1a's low bits depend
// only on the names' low bits, so a hostile file could cheaply pick thousands of names for one slot
// and make linear probing quadratic (65,536 names: 13 s); with an unknown key it cannot. Lookups only:
// no output depends on the slot order.
uint64_t graft__hash_key(void); // a random key for a new table (getrandom)
static inline uint64_t graft__name_hash(uint64_t key, const char *s, size_t n) {
    uint64_t h = 0xCBF29CE484222325ull ^ key;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001B3ull;
    h ^= h >> 33, h *= 0xff51afd7ed558ccdull, h ^= h >> 33, h *= 0xc4ceb9fe1a85ec53ull, h ^= h >> 33;
    return h;
}

// Unaligned little-endian loads and stores (inputs come from mapped files).
static inline uint64_t graft__load_u64le(const void *p) {
    const uint8_t *b = p;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
    return v;
}
static inline void graft__store_u64le(void *p, uint64_t v) {
    uint8_t *b = p;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

// Validate UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF). Returns the byte offset of the first
// invalid sequence, or `len` when valid.
size_t graft__utf8_check(const uint8_t *s, size_t len);

// Growable byte buffer with a ceiling (fails cleanly past `max`).
struct graft__buf {
    char  *data;
    size_t len, cap, max;
    bool   failed; // sticky: an append failed (no memory or past max)
};
void graft__buf_init(struct graft__buf *b, size_t max);
void graft__buf_free(struct graft__buf *b);
void graft__buf_append(struct graft__buf *b, const void *p, size_t n);
void graft__buf_puts(struct graft__buf *b, const char *s);
void graft__buf_printf(struct graft__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Append a JSON string literal (quotes included) escaped as serde_json does: \" \\ \b \f \n \r \t,
// other bytes < 0x20 as \u00XX, everything else raw.
void graft__buf_json_str(struct graft__buf *b, const char *s, size_t n);


// Hot loops are compiled three times, for x86-64-v4 (AVX-512), AVX2 and baseline x86-64, and picked at load time (GCC's
// target_clones; other compilers get the baseline only).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define GRAFT_KERNEL __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define GRAFT_KERNEL
#endif

// bf16 → f32 of one value (exact: the high half of an f32), inline so element loops vectorize.
static inline float graft__bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Counter-based generator (src/core/rng.c documents it). 64-bit draws: SplitMix64 started at `key`.
static inline uint64_t graft__mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline uint64_t graft__rng_u64(uint64_t key, uint64_t counter) { return graft__mix64(key + (counter + 1) * 0x9E3779B97F4A7C15ull); }
// Uniform floats (24 bits) from two rounds of a 32-bit integer hash (lowbias32), cheap enough to draw
// one per weight: u(key, i) = H(H(lo32(i) ^ lo32(key)) ^ K(key, hi32(i))) >> 8 · 2⁻²⁴ with
// K(key, h) = hi32(mix64(key + h)).
static inline uint32_t graft__hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    return x ^ (x >> 16);
}
// FNV-1a (64 bits) of n bytes continued from h (start from GRAFT_FNV64_INIT): content fingerprints
// (evolve's log, the merge's tensor-reuse recipes) and the RNG keys of tensor names (graft_rng_key).
#define GRAFT_FNV64_INIT 0xcbf29ce484222325ull
static inline uint64_t graft__fnv64(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
static inline uint32_t graft__rng_k1(uint64_t key, uint64_t hi) { return (uint32_t)(graft__mix64(key + hi) >> 32); }
static inline float graft__rng_uniform(uint64_t key, uint64_t counter) {
    uint32_t x = graft__hash32(graft__hash32((uint32_t)counter ^ (uint32_t)key) ^ graft__rng_k1(key, counter >> 32));
    return (float)(x >> 8) * 0x1.0p-24f;
}
// scale · a standard normal draw i of key (Box–Muller on graft__rng_u64 draws 2i, 2i + 1), in double.
double graft__rng_normal(uint64_t key, uint64_t i, double scale);
// keep[j] = graft__rng_uniform(key, c0 + j) < p ? 1 : 0, compared as integers (no float conversion).
void graft__rng_keep_block(uint64_t key, uint64_t c0, size_t n, float p, float *keep);
uint32_t graft__rng_keep_threshold(float p);
// The same test, one bit per element: element j → bits[j / 8] bit j % 8.
void graft__rng_keep_bits(uint64_t key, uint64_t c0, size_t n, float p, uint8_t *bits);
// The CPU has AVX-512 F/BW/DQ/VL and GRAFT_CPU is not "generic" (hand-written kernels may run).
bool graft__cpu_avx512(void);
// GRAFT_CPU=generic: only the portable code paths run (tests compare them with the vector ones).
bool graft__cpu_generic(void);

// The NaN / ±Inf rule for values an operation computed (docs/merge.md, "Numerical safety"): `bad` of
// them are non-finite as stored in dtype dt, `bad32` of those already were in float32 (the rest is
// overflow of dt), `first` is the first one's element index, and the operation's sources hold `held`.
// Inherited (no overflow, bad ≤ held): a warning. Made by the operation (`op`, e.g. "expand"): refused
// with GRAFT_E_NONFINITE naming the tensor, unless `allow` (--allow-nonfinite: a warning with the counts).
int graft__nonfinite_rule(const char *op, const char *tensor, size_t tlen, int dt, uint64_t bad, uint64_t bad32, uint64_t first,
                          uint64_t held, bool allow, struct graft_err *err);

// The k-th smallest (0-based) of v[0..n), n > 0, k < n; v is reordered. Quickselect with a median of
// three, falling back to a sort when partitions keep coming out lopsided. NaN-free input.
float graft__kth_smallest(float *v, size_t n, size_t k);

// ---- linear algebra (linalg.c, LAPACKE + OpenBLAS) ----------------------------------------------------
// Truncated SVD of an m×n row-major f32 matrix by the Gram route (see linalg.c).
struct graft__svd {
    size_t  m, n, k;  // k = min(m, n)
    bool    left;     // m ≤ n: the Gram matrix is M·Mᵀ and its eigenvectors are the left vectors
    double *lambda;   // n_vals eigenvalues = squared singular values, descending, ≥ 0
    size_t  n_vals;   // k (values only) or r_vec
    double *vec;      // k × r_vec row-major; column j is the eigenvector of lambda[j] (NULL when r_vec = 0)
    size_t  r_vec;
    double  energy;   // ‖M‖_F² (the Gram trace)
};
// r_vec = 0: every singular value, no vectors; else the top r_vec triplets' data.
int    graft__svd_gram(const float *M, size_t m, size_t n, size_t r_vec, struct graft__svd *s, struct graft_err *err);
void   graft__svd_free(struct graft__svd *s);
double graft__svd_sv(const struct graft__svd *s, size_t j);   // S_j
double graft__svd_tail(const struct graft__svd *s, size_t r); // Σ_{j ≥ r} S_j²
// Top r ≤ r_vec triplets: S[r], U (m × r row-major), Vt (r × n row-major), in double.
int    graft__svd_factors(const struct graft__svd *s, const float *M, size_t r, double *U, double *S, double *Vt,
                          struct graft_err *err);
// Top r triplets by a randomized range finder (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1): l =
// min(r + oversample, m, n) Gaussian test vectors drawn from `key`, `power` subspace iterations with
// re-orthonormalisation, then the exact SVD of the l × n projection. U (m × r), S (r), Vt (r × n) in
// double, signs as graft__svd_factors; *energy = ‖M‖_F², *tail = ‖M − U·S·Vt‖_F² (exact for the
// factors returned: ‖M‖² − Σ S_j², since the range basis is orthonormal).
int    graft__svd_randomized(const float *M, size_t m, size_t n, size_t r, size_t oversample, int power, uint64_t key, double *U, double *S,
                             double *Vt, double *energy, double *tail, struct graft_err *err);
// C (m × n, row-major, ldc) += alpha · op(A) · op(B), op = transpose when ta/tb; single-threaded BLAS.
void   graft__sgemm_acc(bool ta, bool tb, size_t m, size_t n, size_t k, float alpha, const float *A, size_t lda, const float *B,
                        size_t ldb, float *C, size_t ldc);
// Thin SVD M = U·diag(S)·Vt of a row-major m×n f32 matrix by sgesdd (sgesvd when divide and conquer
// fails to converge; k = min(m, n); U m×k, S k, Vt k×n, row-major; M unchanged). Non-finite input is an
// error.
int    graft__svd_thin(const float *M, size_t m, size_t n, float *U, float *S, float *Vt, struct graft_err *err);
// Replace A (m×n, row-major) by its polar factor P·Qh (P, S, Qh = thin SVD of A).
int    graft__polar(float *A, size_t m, size_t n, struct graft_err *err);
// The same by the Gram route (linalg.c): a short-side² eigensolve in double and two GEMMs; the SVD route
// when A is within 10⁶ of rank-deficient.
int    graft__polar_gram(float *A, size_t m, size_t n, struct graft_err *err);
// The same for A = [A₁ | A₂] (rows: A₁ over A₂) whose halves have orthonormal columns (rows) each, to
// ‖E‖_F ≤ 3·10⁻⁴: the Gram matrix, a k × k SVD and k³ GEMMs (linalg.c); else graft__polar_gram. *paired
// (may be NULL): whether this route ran.
int    graft__polar_pair(float *A, size_t m, size_t n, bool rows, bool *paired, struct graft_err *err);
// The same for A whose last r − k columns (rows: last r − k rows) are orthonormal already, r = n (m):
// two thin QRs and the polar factor of a 2k × 2k matrix (linalg.c), when k ≤ r − k and r ≤ the long
// side; else graft__polar.
int    graft__polar_partial(float *A, size_t m, size_t n, size_t k, bool rows, struct graft_err *err);
// MPI (graft/dist.h): every rank's status → the lowest failing rank's status and message ("rank R: …")
// on every rank, or GRAFT_OK. A collective: every rank calls it at the same point (dist.c).
struct graft_dist;
int graft__dist_status(const struct graft_dist *d, int rc, const char *label, struct graft_err *err);
// Top r singular triplets of B·A (B: p × c, A: c × q, row-major double, both overwritten) by thin QRs of B
// and Aᵀ and the SVD of the c × c core: never the p × q product. U p × r, S r, Vt r × q; signs as
// graft__svd_factors; *energy = ‖B·A‖_F², *tail = Σ_{j ≥ r} S_j². r ≤ min(p, q, c).
int    graft__svd_product(double *B, size_t p, size_t c, double *A, size_t q, size_t r, double *U, double *S, double *Vt, double *energy,
                          double *tail, struct graft_err *err);
// A permutation maximising Σ S[i][perm[i]] over the n × n row-major scores S (the Hungarian method,
// O(n³); assign.c). S must be finite.
int    graft__assign_max(const double *S, size_t n, size_t *perm, struct graft_err *err);
// Make OpenBLAS run each call on the calling thread (graft parallelises over matrices itself).
void   graft__blas_single_thread(void);
#endif
