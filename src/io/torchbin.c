// PyTorch checkpoints (`torch.save` of a state dict, the zip format of PyTorch ≥ 1.6) read without
// executing anything: a checked reader of the zip's central directory (store-only members, zip64),
// then an allow-list pickle machine that knows only what torch.save writes for a dict of tensors.
//
//   ARCHIVE/data.pkl     the pickle: a dict (or collections.OrderedDict) name → tensor, each tensor
//                        torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad,
//                        backward_hooks[, metadata]), each storage a persistent id
//                        ('storage', torch.<Type>Storage, key, location, numel)
//   ARCHIVE/data/KEY     the storage's raw bytes (little-endian, ARCHIVE/byteorder says so when present)
//
// Allowed GLOBALs: collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter and the typed storage classes; any other name (os.system,
// builtins.eval, a model class…) is refused by name before anything else happens, as are the opcodes
// that build arbitrary objects (INST, OBJ, NEWOBJ, EXT*) and text-protocol ones. Nothing is ever called:
// REDUCE of an allowed name builds a C value. Memory stays linear in the pickle's size (memo entries
// are shared references, never copies), so pickle "bombs" cannot expand: at most VALUES_MAX values
// of ~110 bytes each with their arrays (about 0.5 GB), and names at most the pickle's size.
// The result is a graft_st whose tensors point into the mapped zip (data_start 0, begin = the file
// offset of a tensor's first byte); tensors sharing a storage (tied weights) share bytes.
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "graft/util.h"
#include "io-impl.h"

#define PKL_MAX      (64u << 20)  // data.pkl bytes (a state dict of 100,000 tensors needs ~10 MB)
#define VALUES_MAX   (4u << 20)   // pickle values (a real state dict makes ~10 per tensor: 400,000 tensors)
#define ZIP_MAX_ENTS 4000000u
#define MEMO_MAX     (1u << 24)

#define FAIL(code, tensor, tlen, ...) (graft_err_set(err, (code), label, (tensor), (tlen), __VA_ARGS__))
// In the pickle machine an allocation fails for want of memory or because pnew reached VALUES_MAX
#define VM_NOMEM() \
    (vm->n_all >= VALUES_MAX ? FAIL(GRAFT_E_LIMIT, NULL, 0, "data.pkl makes more than %u values: not a state dict", VALUES_MAX) \
                             : FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory"))

static uint16_t u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t u64(const uint8_t *p) { return (uint64_t)u32(p) | (uint64_t)u32(p + 4) << 32; }

bool graft__torchbin_sniff(const uint8_t *p, size_t n) {
    // a local file header; a safetensors file whose 8-byte length reads "PK\3\4\0\0\0\0" has '{' next
    return n >= 30 && !memcmp(p, "PK\3\4", 4) && p[8] != '{';
}

bool graft__torchbin_legacy(const uint8_t *p, size_t n) {
    // pre-1.6 torch.save: a pickled magic number 0x1950a86a20f9469cfc6c first (PROTO 2, LONG1 10 bytes)
    static const uint8_t magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
    return n >= sizeof magic && !memcmp(p, magic, sizeof magic);
}

// ---- zip -------------------------------------------------------------------------------------------
struct zmember {
    const char *name; // in the central directory (not NUL-terminated)
    size_t      name_len;
    uint64_t    data, size, local; // data offset, bytes, local header offset
    uint32_t    crc;
};

// Attacker bytes for a message: at most cap − 1, control and non-ASCII bytes as '?'.
static const char *printable(const char *p, size_t n, char *buf, size_t cap) {
    size_t k = n < cap - 1 ? n : cap - 1;
    for (size_t i = 0; i < k; i++) buf[i] = p[i] >= 0x20 && p[i] < 0x7f ? p[i] : '?';
    buf[k] = 0;
    return buf;
}

// A zip member's name for messages: at most 80 bytes, control and non-ASCII bytes as '?'.
static const char *mname(const struct zmember *m, char *buf, size_t cap) { return printable(m->name, m->name_len, buf, cap); }

static int cmp_local(const void *a, const void *b) {
    const struct zmember *x = a, *y = b;
    return x->local < y->local ? -1 : x->local > y->local;
}

static int cmp_name(const void *a, const void *b) {
    const struct zmember *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static int zip_read(const uint8_t *f, uint64_t fsz, const char *label, struct zmember **out, size_t *n_out, struct graft_err *err) {
    *out = NULL, *n_out = 0;
    if (fsz < 22) return FAIL(GRAFT_E_FORMAT, NULL, 0, "zip archive is truncated (%llu bytes)", (unsigned long long)fsz);
    uint64_t eocd = UINT64_MAX;
    for (uint64_t back = 22; back <= fsz && back <= 22 + 65535; back++)
        if (u32(f + fsz - back) == 0x06054b50 && back - 22 == u16(f + fsz - back + 20)) { eocd = fsz - back; break; }
    if (eocd == UINT64_MAX) return FAIL(GRAFT_E_FORMAT, NULL, 0, "zip archive is truncated or damaged: no end-of-central-directory record");
    const uint8_t *e = f + eocd;
    uint64_t n_ent = u16(e + 10), cd_size = u32(e + 12), cd_off = u32(e + 16), cd_end_lim = eocd;
    if (u16(e + 4) || u16(e + 6) || u16(e + 8) != u16(e + 10))
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "multi-disk zip archives are not supported");
    if (n_ent == 0xFFFF || cd_size == 0xFFFFFFFF || cd_off == 0xFFFFFFFF) { // zip64
        if (eocd < 20 || u32(f + eocd - 20) != 0x07064b50) return FAIL(GRAFT_E_FORMAT, NULL, 0, "zip64 archive without its end-of-central-directory locator");
        uint64_t z = u64(f + eocd - 20 + 8);
        if (z > eocd - 20 || eocd - 20 - z < 56 || u32(f + z) != 0x06064b50)
            return FAIL(GRAFT_E_FORMAT, NULL, 0, "zip64 end-of-central-directory record is missing or misplaced");
        if (u32(f + z + 16) || u32(f + z + 20) || u64(f + z + 24) != u64(f + z + 32))
            return FAIL(GRAFT_E_FORMAT, NULL, 0, "multi-disk zip archives are not supported");
        n_ent = u64(f + z + 32), cd_size = u64(f + z + 40), cd_off = u64(f + z + 48), cd_end_lim = z;
    }
    uint64_t cd_end;
    if (!graft__add_u64(cd_off, cd_size, &cd_end) || cd_end > cd_end_lim)
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "zip central directory (%llu bytes at %llu) runs past its end record: the file is truncated or damaged",
                    (unsigned long long)cd_size, (unsigned long long)cd_off);
    if (n_ent > ZIP_MAX_ENTS || n_ent > cd_size / 46)
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "zip central directory claims %llu entries in %llu bytes", (unsigned long long)n_ent, (unsigned long long)cd_size);
    struct zmember *z = graft__calloc(n_ent ? n_ent : 1, sizeof *z);
    char nb[81];
    if (!z) return FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory");
    uint64_t at = cd_off;
    int rc = GRAFT_OK;
    for (uint64_t i = 0; i < n_ent; i++) {
        if (cd_end - at < 46 || u32(f + at) != 0x02014b50) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip central directory entry %llu is damaged", (unsigned long long)i); break; }
        const uint8_t *c = f + at;
        uint16_t flags = u16(c + 8), method = u16(c + 10), nl = u16(c + 28), xl = u16(c + 30), cl = u16(c + 32);
        if (cd_end - at - 46 < (uint64_t)nl + xl + cl) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip central directory entry %llu runs past the directory", (unsigned long long)i); break; }
        struct zmember *m = &z[i];
        m->name = (const char *)c + 46, m->name_len = nl, m->crc = u32(c + 16);
        uint64_t csize = u32(c + 20), usize = u32(c + 24), local = u32(c + 42);
        const uint8_t *x = c + 46 + nl, *xe = x + xl;
        while (xe - x >= 4) { // zip64 extra field: the 0xFFFFFFFF fields, in order usize, csize, offset
            uint16_t id = u16(x), len = u16(x + 2);
            if ((size_t)(xe - x - 4) < len) break;
            if (id == 1) {
                const uint8_t *q = x + 4, *qe = q + len;
                bool bad = false;
                if (usize == 0xFFFFFFFF) { if (qe - q < 8) bad = true; else usize = u64(q), q += 8; }
                if (!bad && csize == 0xFFFFFFFF) { if (qe - q < 8) bad = true; else csize = u64(q), q += 8; }
                if (!bad && local == 0xFFFFFFFF) { if (qe - q < 8) bad = true; else local = u64(q), q += 8; }
                if (bad) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s: its zip64 extra field is too short", mname(m, nb, sizeof nb)); break; }
            }
            x += 4 + len;
        }
        if (rc) break;
        if (flags & 1) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s is encrypted", mname(m, nb, sizeof nb)); break; }
        if (method != 0 || csize != usize) {
            rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s is compressed (method %u); torch.save stores members uncompressed — re-save the checkpoint with torch.save", mname(m, nb, sizeof nb), method);
            break;
        }
        uint64_t hdr_end, data_end;
        if (local > cd_off || cd_off - local < 30 || u32(f + local) != 0x04034b50) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s: local header missing or misplaced", mname(m, nb, sizeof nb)); break; }
        uint16_t lnl = u16(f + local + 26), lxl = u16(f + local + 28);
        if (!graft__add_u64(local, 30 + (uint64_t)lnl + lxl, &hdr_end) || hdr_end > cd_off || !graft__add_u64(hdr_end, usize, &data_end) || data_end > cd_off) {
            rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s (%llu bytes) runs past the central directory: the file is truncated or damaged", mname(m, nb, sizeof nb), (unsigned long long)usize);
            break;
        }
        if (lnl != nl || memcmp(f + local + 30, m->name, nl)) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s: its local header names a different member", mname(m, nb, sizeof nb)); break; }
        m->data = hdr_end, m->size = usize, m->local = local;
        at += 46 + (uint64_t)nl + xl + cl;
    }
    if (!rc && n_ent) { // members may not overlap (each one's header + data before the next one's header)
        qsort(z, n_ent, sizeof *z, cmp_local);
        for (uint64_t i = 1; i < n_ent && !rc; i++)
            if (z[i].local < z[i - 1].data + z[i - 1].size) rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s overlaps the previous one", mname(&z[i], nb, sizeof nb));
        if (!rc) qsort(z, n_ent, sizeof *z, cmp_name);
        for (uint64_t i = 1; i < n_ent && !rc; i++)
            if (!cmp_name(&z[i], &z[i - 1])) rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s appears twice", mname(&z[i], nb, sizeof nb));
    }
    if (rc) { graft__free(z); return rc; }
    *out = z, *n_out = (size_t)n_ent;
    return GRAFT_OK;
}

static const struct zmember *zfind(const struct zmember *z, size_t n, const char *pre, size_t pre_len, const char *name, size_t name_len) {
    char buf[1024];
    if (pre_len + name_len > sizeof buf) return NULL;
    memcpy(buf, pre, pre_len), memcpy(buf + pre_len, name, name_len);
    struct zmember key = {.name = buf, .name_len = pre_len + name_len};
    return bsearch(&key, z, n, sizeof *z, cmp_name);
}

// CRC-32 of members, in 64 MiB pieces on all threads (zlib's crc32_combine joins them).
#define CRC_PIECE (64u << 20)
struct crcjob {
    const uint8_t *f;
    const struct zmember **m;
    size_t n_m, *first; // first piece of member i (prefix sums), n_m + 1 entries
    uLong *piece;
};

static int crc_piece(void *ctx, size_t item, int ith, struct graft_err *err) {
    (void)ith, (void)err;
    struct crcjob *j = ctx;
    size_t lo = 0, hi = j->n_m;
    while (hi - lo > 1) { // member holding piece `item`
        size_t mid = (lo + hi) / 2;
        if (j->first[mid] <= item) lo = mid;
        else hi = mid;
    }
    const struct zmember *m = j->m[lo];
    uint64_t off = (uint64_t)(item - j->first[lo]) * CRC_PIECE, len = m->size - off < CRC_PIECE ? m->size - off : CRC_PIECE;
    j->piece[item] = crc32(0L, j->f + m->data + off, (uInt)len);
    return GRAFT_OK;
}

static int crc_check(const uint8_t *f, const struct zmember **m, size_t n, int threads, const char *label, struct graft_err *err) {
#ifdef GRAFT_FUZZ_NO_CRC
    (void)f, (void)m, (void)n, (void)threads, (void)label, (void)err;
    return GRAFT_OK; // fuzzing explores the pickle machine, which a checksum would hide
#else
    struct crcjob j = {f, m, n, graft__malloc((n + 1) * sizeof(size_t)), NULL};
    if (!j.first) return FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory");
    size_t total = 0;
    for (size_t i = 0; i < n; i++) j.first[i] = total, total += (size_t)((m[i]->size + CRC_PIECE - 1) / CRC_PIECE);
    j.first[n] = total;
    int rc = (j.piece = graft__malloc((total ? total : 1) * sizeof *j.piece)) ? GRAFT_OK : FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory");
    if (!rc) rc = graft_pool_run(total > 1 ? threads : 1, total, crc_piece, &j, NULL, NULL, err);
    char nb[81];
    for (size_t i = 0; !rc && i < n; i++) {
        uLong c = crc32(0L, Z_NULL, 0);
        for (size_t p = j.first[i]; p < j.first[i + 1]; p++) {
            uint64_t off = (uint64_t)(p - j.first[i]) * CRC_PIECE;
            c = crc32_combine(c, j.piece[p], (z_off_t)(m[i]->size - off < CRC_PIECE ? m[i]->size - off : CRC_PIECE));
        }
        if ((uint32_t)c != m[i]->crc)
            rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "zip member %s: its CRC-32 is %08x but the directory says %08x: the data is damaged", mname(m[i], nb, sizeof nb), (unsigned)c,
                      (unsigned)m[i]->crc);
    }
    graft__free(j.first), graft__free(j.piece);
    return rc;
#endif
}

// ---- pickle ----------------------------------------------------------------------------------------
enum pk { PK_NONE, PK_BOOL, PK_INT, PK_FLOAT, PK_STR, PK_BYTES, PK_TUPLE, PK_LIST, PK_DICT, PK_GLOBAL, PK_STORAGE, PK_TENSOR };
enum glob { G_ODICT, G_REBUILD_V2, G_REBUILD_PARAM, G_STORAGE };

struct pv;
struct pstorage { const char *key; size_t key_len; enum graft_dtype dt; uint64_t numel; };
struct ptensor {
    struct pv *storage;
    uint64_t   offset;
    int        nd;
    uint64_t   size[GRAFT_MAX_DIMS];
    int64_t    stride[GRAFT_MAX_DIMS];
};
struct pv {
    enum pk k;
    union {
        int64_t i;
        double  f;
        struct { const char *p; size_t n; } s;
        struct { struct pv **v; size_t n, cap; } seq; // tuples, lists; dicts as key, value, key, value…
        struct { enum glob g; enum graft_dtype dt; } g;
        struct pstorage st;
        struct ptensor *t; // allocated apart: it would triple every value's size
    };
    bool used_as_name; // a string already naming a tensor: the same object again is a duplicate name
};

struct pvm {
    const uint8_t *p, *end;
    const char    *label;
    struct pv    **stack; size_t sp, scap;
    size_t        *marks; size_t nm, mcap;
    struct pv    **memo; size_t memo_cap, n_memo; // n_memo: entries stored (MEMOIZE's next index)
    struct pv    **all; size_t n_all, all_cap; // every value, freed together
};

static struct pv *pnew(struct pvm *vm, enum pk k) {
    if (vm->n_all >= VALUES_MAX) return NULL; // (VM_NOMEM reports the limit)
    if (vm->n_all == vm->all_cap) {
        size_t c = vm->all_cap ? 2 * vm->all_cap : 256;
        struct pv **a = graft__realloc(vm->all, c * sizeof *a);
        if (!a) return NULL;
        vm->all = a, vm->all_cap = c;
    }
    struct pv *v = graft__calloc(1, sizeof *v);
    if (v) v->k = k, vm->all[vm->n_all++] = v;
    return v;
}

static bool grow(void **arr, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : need; // exact at first: TUPLE1 is one byte of pickle for a one-slot array
    while (c < need) c *= 2;
    void *a = graft__realloc(*arr, c * elem);
    if (!a) return false;
    *arr = a, *cap = c;
    return true;
}

static bool seq_add(struct pv *s, struct pv *x) {
    if (!grow((void **)&s->seq.v, &s->seq.cap, s->seq.n + 1, sizeof *s->seq.v)) return false;
    s->seq.v[s->seq.n++] = x;
    return true;
}

static const char *pk_name(enum pk k) {
    static const char *const n[] = {"None", "bool", "int", "float", "str", "bytes", "tuple", "list", "dict", "class", "storage", "tensor"};
    return n[k];
}

static const struct { const char *name; enum graft_dtype dt; } storages[] = {
    {"FloatStorage", GRAFT_DTYPE_F32}, {"HalfStorage", GRAFT_DTYPE_F16}, {"BFloat16Storage", GRAFT_DTYPE_BF16}, {"DoubleStorage", GRAFT_DTYPE_F64},
    {"LongStorage", GRAFT_DTYPE_I64},  {"IntStorage", GRAFT_DTYPE_I32},  {"ShortStorage", GRAFT_DTYPE_I16},    {"CharStorage", GRAFT_DTYPE_I8},
    {"ByteStorage", GRAFT_DTYPE_U8},   {"BoolStorage", GRAFT_DTYPE_BOOL},
};

static bool eq(const char *a, size_t n, const char *lit) { return strlen(lit) == n && !memcmp(a, lit, n); }

static int global(struct pvm *vm, const char *mod, size_t ml, const char *name, size_t nl, struct graft_err *err) {
    const char *label = vm->label;
    struct pv *v = pnew(vm, PK_GLOBAL);
    if (!v) return VM_NOMEM();
    if (eq(mod, ml, "collections") && eq(name, nl, "OrderedDict")) v->g.g = G_ODICT;
    else if (eq(mod, ml, "torch._utils") && eq(name, nl, "_rebuild_tensor_v2")) v->g.g = G_REBUILD_V2;
    else if (eq(mod, ml, "torch._utils") && eq(name, nl, "_rebuild_parameter")) v->g.g = G_REBUILD_PARAM;
    else {
        bool found = false;
        for (size_t i = 0; !found && eq(mod, ml, "torch") && i < sizeof storages / sizeof *storages; i++)
            if (eq(name, nl, storages[i].name)) v->g.g = G_STORAGE, v->g.dt = storages[i].dt, found = true;
        if (!found) {
            char safe[160];
            size_t o = 0;
            for (size_t i = 0; i < ml + 1 + nl && o + 1 < sizeof safe; i++) {
                char c = i < ml ? mod[i] : i == ml ? '.' : name[i - ml - 1];
                safe[o++] = c >= 0x20 && c < 0x7f ? c : '?';
            }
            safe[o] = 0;
            return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl refers to '%s', which a state dict of tensors never contains; refused, nothing was executed", safe);
        }
    }
    if (!grow((void **)&vm->stack, &vm->scap, vm->sp + 1, sizeof *vm->stack)) return VM_NOMEM();
    vm->stack[vm->sp++] = v;
    return GRAFT_OK;
}

static bool int_of(const struct pv *v, int64_t *out) {
    if (v->k == PK_INT || v->k == PK_BOOL) { *out = v->i; return true; }
    return false;
}

// REDUCE: an allowed callable applied to its argument tuple, as a C value.
static int reduce(struct pvm *vm, struct pv *fn, struct pv *args, struct pv **out, struct graft_err *err) {
    const char *label = vm->label;
    if (fn->k != PK_GLOBAL || args->k != PK_TUPLE) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: REDUCE of a %s with a %s", pk_name(fn->k), pk_name(args->k));
    size_t n = args->seq.n;
    struct pv **a = args->seq.v;
    switch (fn->g.g) {
    case G_ODICT:
        if (n) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: OrderedDict called with arguments");
        return (*out = pnew(vm, PK_DICT)) ? GRAFT_OK : VM_NOMEM();
    case G_REBUILD_PARAM:
        if (n != 3 || a[0]->k != PK_TENSOR) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: _rebuild_parameter with unexpected arguments");
        *out = a[0];
        return GRAFT_OK;
    case G_STORAGE:
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: a storage class called directly (not as a persistent id)");
    case G_REBUILD_V2: break;
    }
    int64_t off;
    if ((n != 6 && n != 7) || a[0]->k != PK_STORAGE || !int_of(a[1], &off) || off < 0 || a[2]->k != PK_TUPLE || a[3]->k != PK_TUPLE ||
        a[2]->seq.n != a[3]->seq.n)
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: _rebuild_tensor_v2 with unexpected arguments");
    if (a[2]->seq.n > GRAFT_MAX_DIMS) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: a tensor of %zu dimensions (at most %d)", a[2]->seq.n, GRAFT_MAX_DIMS);
    struct pv *t = pnew(vm, PK_TENSOR);
    if (!t || !(t->t = graft__calloc(1, sizeof *t->t))) return VM_NOMEM();
    t->t->storage = a[0], t->t->offset = (uint64_t)off, t->t->nd = (int)a[2]->seq.n;
    for (int d = 0; d < t->t->nd; d++) {
        int64_t sz, st;
        if (!int_of(a[2]->seq.v[d], &sz) || !int_of(a[3]->seq.v[d], &st) || sz < 0)
            return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: a tensor's size or stride is not a non-negative integer");
        t->t->size[d] = (uint64_t)sz, t->t->stride[d] = st;
    }
    *out = t;
    return GRAFT_OK;
}

// Persistent id ('storage', class, key, location, numel) → a storage value.
static int persid(struct pvm *vm, struct pv *pid, struct pv **out, struct graft_err *err) {
    const char *label = vm->label;
    int64_t numel;
    if (pid->k != PK_TUPLE || pid->seq.n != 5 || pid->seq.v[0]->k != PK_STR || !eq(pid->seq.v[0]->s.p, pid->seq.v[0]->s.n, "storage") ||
        pid->seq.v[1]->k != PK_GLOBAL || pid->seq.v[1]->g.g != G_STORAGE || pid->seq.v[2]->k != PK_STR || !int_of(pid->seq.v[4], &numel) || numel < 0)
        return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: a persistent id that is not ('storage', torch.<Type>Storage, key, location, numel)");
    struct pv *s = pnew(vm, PK_STORAGE);
    if (!s) return VM_NOMEM();
    s->st.key = pid->seq.v[2]->s.p, s->st.key_len = pid->seq.v[2]->s.n, s->st.dt = pid->seq.v[1]->g.dt, s->st.numel = (uint64_t)numel;
    *out = s;
    return GRAFT_OK;
}

static int run_pickle(struct pvm *vm, struct pv **result, struct graft_err *err) {
    const char *label = vm->label;
#define NEED(k) \
    do { if ((uint64_t)(k) > SIZE_MAX || (size_t)(vm->end - p) < (size_t)(k)) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl is truncated (opcode 0x%02x at byte %zu)", op, at); } while (0)
#define POP(v) \
    do { if (vm->sp == 0 || (vm->nm && vm->sp == vm->marks[vm->nm - 1])) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: stack underflow at byte %zu", at); (v) = vm->stack[--vm->sp]; } while (0)
#define PUSH(v) \
    do { \
        struct pv *v_ = (v); \
        if (!v_ || !grow((void **)&vm->stack, &vm->scap, vm->sp + 1, sizeof *vm->stack)) return VM_NOMEM(); \
        vm->stack[vm->sp++] = v_; \
    } while (0)
    const uint8_t *p = vm->p;
    for (;;) {
        size_t at = (size_t)(p - vm->p);
        if (p >= vm->end) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl ends without STOP");
        uint8_t op = *p++;
        struct pv *a, *b, *c = NULL;
        uint64_t len = 0;
        switch (op) {
        case 0x80: NEED(1); if (*p > 5) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: pickle protocol %u", *p); p++; break; // PROTO
        case 0x95: NEED(8); p += 8; break;                                                                                   // FRAME
        case '}': PUSH(pnew(vm, PK_DICT)); break;
        case ']': PUSH(pnew(vm, PK_LIST)); break;
        case ')': PUSH(pnew(vm, PK_TUPLE)); break;
        case 'N': PUSH(pnew(vm, PK_NONE)); break;
        case 0x88: case 0x89: PUSH(a = pnew(vm, PK_BOOL)); a->i = op == 0x88; break;
        case '(':
            if (!grow((void **)&vm->marks, &vm->mcap, vm->nm + 1, sizeof *vm->marks)) return VM_NOMEM();
            vm->marks[vm->nm++] = vm->sp;
            break;
        case '1': // POP_MARK
            if (!vm->nm) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: POP_MARK without MARK at byte %zu", at);
            vm->sp = vm->marks[--vm->nm];
            break;
        case '0': POP(a); break;
        case '2': POP(a); PUSH(a); PUSH(a); break; // DUP
        case 't': case 'l': case 'd': { // TUPLE, LIST, DICT from the last mark
            if (!vm->nm) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: opcode '%c' without MARK at byte %zu", op, at);
            size_t k = vm->marks[--vm->nm], n = vm->sp - k;
            if (op == 'd' && n % 2) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: DICT with an odd number of items");
            a = pnew(vm, op == 't' ? PK_TUPLE : op == 'l' ? PK_LIST : PK_DICT);
            if (!a || (n && !grow((void **)&a->seq.v, &a->seq.cap, n, sizeof *a->seq.v))) return VM_NOMEM();
            if (n) memcpy(a->seq.v, vm->stack + k, n * sizeof *a->seq.v);
            a->seq.n = n, vm->sp = k;
            PUSH(a);
            break;
        }
        case 0x85: case 0x86: case 0x87: { // TUPLE1..3
            size_t n = (size_t)(op - 0x84);
            a = pnew(vm, PK_TUPLE);
            if (!a || !grow((void **)&a->seq.v, &a->seq.cap, n, sizeof *a->seq.v)) return VM_NOMEM();
            for (size_t i = n; i-- > 0;) POP(a->seq.v[i]);
            a->seq.n = n;
            PUSH(a);
            break;
        }
        case 'a': case 'e': case 's': case 'u': { // APPEND, APPENDS, SETITEM, SETITEMS
            size_t k, n;
            if (op == 'a' || op == 's') {
                n = op == 'a' ? 1 : 2;
                if (vm->sp < n + 1 || (vm->nm && vm->sp - n - 1 < vm->marks[vm->nm - 1])) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: stack underflow at byte %zu", at);
                k = vm->sp - n;
            } else {
                if (!vm->nm) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: opcode '%c' without MARK at byte %zu", op, at);
                k = vm->marks[--vm->nm], n = vm->sp - k;
                if (k == 0 || (vm->nm && k - 1 < vm->marks[vm->nm - 1])) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: stack underflow at byte %zu", at);
            }
            struct pv *tgt = vm->stack[k - 1];
            bool dict = op == 's' || op == 'u';
            if (tgt->k != (dict ? PK_DICT : PK_LIST)) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: %s into a %s", dict ? "SETITEM" : "APPEND", pk_name(tgt->k));
            if (dict && n % 2) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: SETITEMS with an odd number of items");
            for (size_t i = 0; i < n; i++)
                if (!seq_add(tgt, vm->stack[k + i])) return VM_NOMEM();
            vm->sp = k;
            break;
        }
        case 'q': case 'r': case 0x94: { // BINPUT, LONG_BINPUT, MEMOIZE
            uint64_t idx;
            if (op == 'q') { NEED(1); idx = *p++; }
            else if (op == 'r') { NEED(4); idx = u32(p), p += 4; }
            else idx = vm->n_memo;
            if (!vm->sp) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: memo store from an empty stack at byte %zu", at);
            if (idx >= MEMO_MAX || idx > 2 * (uint64_t)(vm->end - vm->p)) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: memo index %llu is out of range", (unsigned long long)idx);
            if (idx >= vm->memo_cap) {
                size_t old = vm->memo_cap;
                if (!grow((void **)&vm->memo, &vm->memo_cap, (size_t)idx + 1, sizeof *vm->memo)) return VM_NOMEM();
                memset(vm->memo + old, 0, (vm->memo_cap - old) * sizeof *vm->memo);
            }
            if (!vm->memo[idx]) vm->n_memo++;
            vm->memo[idx] = vm->stack[vm->sp - 1];
            break;
        }
        case 'h': case 'j': { // BINGET, LONG_BINGET
            uint64_t idx;
            if (op == 'h') { NEED(1); idx = *p++; }
            else { NEED(4); idx = u32(p), p += 4; }
            if (idx >= vm->memo_cap || !vm->memo[idx]) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: memo entry %llu was never stored", (unsigned long long)idx);
            PUSH(vm->memo[idx]);
            break;
        }
        case 'J': NEED(4); PUSH(a = pnew(vm, PK_INT)); a->i = (int32_t)u32(p); p += 4; break;
        case 'K': NEED(1); PUSH(a = pnew(vm, PK_INT)); a->i = *p++; break;
        case 'M': NEED(2); PUSH(a = pnew(vm, PK_INT)); a->i = u16(p); p += 2; break;
        case 0x8a: case 0x8b: { // LONG1, LONG4: little-endian two's complement
            if (op == 0x8a) { NEED(1); len = *p++; }
            else { NEED(4); len = u32(p), p += 4; }
            if (len > 8) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: an integer of %llu bytes", (unsigned long long)len);
            NEED(len);
            uint64_t v = 0;
            for (uint64_t i = 0; i < len; i++) v |= (uint64_t)p[i] << (8 * i);
            if (len && len < 8 && (p[len - 1] & 0x80)) v |= ~0ull << (8 * len);
            PUSH(a = pnew(vm, PK_INT));
            a->i = (int64_t)v;
            p += len;
            break;
        }
        case 'G': { // BINFLOAT, big-endian
            NEED(8);
            uint64_t v = 0;
            for (int i = 0; i < 8; i++) v = v << 8 | p[i];
            PUSH(a = pnew(vm, PK_FLOAT));
            memcpy(&a->f, &v, 8);
            p += 8;
            break;
        }
        case 'X': case 0x8c: case 0x8d: case 'B': case 'C': case 0x8e: case 'T': case 'U': { // strings and bytes
            int w = op == 0x8c || op == 'C' || op == 'U' ? 1 : op == 0x8d || op == 0x8e ? 8 : 4;
            NEED(w);
            len = w == 1 ? *p : w == 4 ? u32(p) : u64(p);
            p += w;
            NEED(len);
            PUSH(a = pnew(vm, op == 'X' || op == 0x8c || op == 0x8d ? PK_STR : PK_BYTES));
            a->s.p = (const char *)p, a->s.n = (size_t)len;
            p += len;
            break;
        }
        case 'c': { // GLOBAL "module\nname\n"
            const uint8_t *m = p, *e1 = memchr(p, '\n', (size_t)(vm->end - p));
            const uint8_t *e2 = e1 ? memchr(e1 + 1, '\n', (size_t)(vm->end - e1 - 1)) : NULL;
            if (!e2) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl is truncated (GLOBAL at byte %zu)", at);
            int rc = global(vm, (const char *)m, (size_t)(e1 - m), (const char *)e1 + 1, (size_t)(e2 - e1 - 1), err);
            if (rc) return rc;
            p = e2 + 1;
            break;
        }
        case 0x93: // STACK_GLOBAL
            POP(b); POP(a);
            if (a->k != PK_STR || b->k != PK_STR) return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: STACK_GLOBAL of a %s and a %s", pk_name(a->k), pk_name(b->k));
            { int rc = global(vm, a->s.p, a->s.n, b->s.p, b->s.n, err); if (rc) return rc; }
            break;
        case 'Q': { // BINPERSID
            POP(a);
            int rc = persid(vm, a, &c, err);
            if (rc) return rc;
            PUSH(c);
            break;
        }
        case 'R': { // REDUCE
            POP(b); POP(a);
            int rc = reduce(vm, a, b, &c, err);
            if (rc) return rc;
            PUSH(c);
            break;
        }
        case 'b': // BUILD: the state of an OrderedDict (its _metadata attribute) or a tensor's; not needed
            POP(b);
            if (!vm->sp || (vm->stack[vm->sp - 1]->k != PK_DICT && vm->stack[vm->sp - 1]->k != PK_TENSOR))
                return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: BUILD on a %s", vm->sp ? pk_name(vm->stack[vm->sp - 1]->k) : "empty stack");
            break;
        case '.': // STOP
            POP(a);
            *result = a;
            return GRAFT_OK;
        case 'i': case 'o': case 0x81: case 0x92:
            return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl builds an object of a class (opcode %s at byte %zu); refused, nothing was executed",
                        op == 'i' ? "INST" : op == 'o' ? "OBJ" : op == 0x81 ? "NEWOBJ" : "NEWOBJ_EX", at);
        case 0x82: case 0x83: case 0x84:
            return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl uses the extension registry (EXT opcode at byte %zu); refused", at);
        default:
            return FAIL(GRAFT_E_FORMAT, NULL, 0, "data.pkl: opcode 0x%02x at byte %zu is not one torch.save writes for a state dict", op, at);
        }
    }
#undef NEED
#undef POP
#undef PUSH
}

// Data order; tensors of one storage (same begin) by name, so the order never depends on qsort.
static int cmp_tensor(const void *a, const void *b) {
    const struct graft_tensor_info *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

// ---- the state dict → tensor table ----------------------------------------------------------------
int graft__torchbin_parse(struct graft_st *st, const char *label, int threads, struct graft_err *err) {
    const uint8_t *f = st->map;
    struct zmember *z = NULL;
    size_t nz = 0;
    struct pvm vm = {.label = label};
    const struct zmember **used = NULL;
    const struct pstorage **first = NULL; // per member: the storage it was first read as
    int rc = zip_read(f, st->file_size, label, &z, &nz, err);
    if (rc) return rc;
    // ARCHIVE/data.pkl: the one member of that name, one folder deep
    const struct zmember *pkl = NULL;
    for (size_t i = 0; i < nz; i++) {
        const char *sl = memchr(z[i].name, '/', z[i].name_len);
        if (sl && (size_t)(z[i].name + z[i].name_len - sl) == 9 && !memcmp(sl, "/data.pkl", 9)) {
            if (pkl) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "two data.pkl members: not one torch.save checkpoint"); goto out; }
            pkl = &z[i];
        }
    }
    if (!pkl) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "a zip archive without ARCHIVE/data.pkl: not a PyTorch checkpoint"); goto out; }
    size_t pre = pkl->name_len - 8; // "ARCHIVE/"
    if (pkl->size > PKL_MAX) { rc = FAIL(GRAFT_E_LIMIT, NULL, 0, "data.pkl is %llu bytes (limit %u)", (unsigned long long)pkl->size, PKL_MAX); goto out; }
    const struct zmember *bo = zfind(z, nz, pkl->name, pre, "byteorder", 9);
    if (bo && !(bo->size == 6 && !memcmp(f + bo->data, "little", 6))) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "saved on a big-endian machine (byteorder is not 'little'); not supported"); goto out; }
    // the pickle's checksum first: nothing of it is interpreted unless it is intact
    if ((rc = crc_check(f, &pkl, 1, 1, label, err))) goto out;
    vm.p = f + pkl->data, vm.end = vm.p + pkl->size;
    struct pv *root = NULL;
    if ((rc = run_pickle(&vm, &root, err))) goto out;
    if (root->k != PK_DICT) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "the checkpoint holds a %s, not a state dict (a dict of tensors)", pk_name(root->k)); goto out; }
    size_t n = 0, names_len = 0;
    for (size_t i = 0; i < root->seq.n; i += 2) {
        struct pv *k = root->seq.v[i], *v = root->seq.v[i + 1];
        if (v->k == PK_DICT || v->k == PK_LIST || v->k == PK_TUPLE) {
            char kb[44];
            if (k->k == PK_STR) rc = FAIL(GRAFT_E_FORMAT, k->s.p, k->s.n, "a nested %s: not a flat state dict (extract the model's state dict, e.g. torch.save(ckpt['%s'], …))",
                                          pk_name(v->k), printable(k->s.p, k->s.n, kb, sizeof kb));
            else rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "a nested %s: not a flat state dict", pk_name(v->k));
            goto out;
        }
        if (v->k != PK_TENSOR) continue; // step counters, None, strings: no weights to carry
        if (k->k != PK_STR) { rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "a tensor under a %s key (names must be strings)", pk_name(k->k)); goto out; }
        if (!k->s.n || k->s.n > GRAFT_ST_MAX_NAME || memchr(k->s.p, 0, k->s.n) || graft__utf8_check((const uint8_t *)k->s.p, k->s.n) != k->s.n) {
            rc = FAIL(GRAFT_E_FORMAT, NULL, 0, "a tensor name that is empty, too long, not UTF-8 or contains NUL");
            goto out;
        }
        if (k->used_as_name) { // one string object naming two entries (via the memo): a duplicate, refused before it costs anything
            rc = FAIL(GRAFT_E_FORMAT, k->s.p, k->s.n, "tensor name appears twice");
            goto out;
        }
        k->used_as_name = true;
        n++, names_len += k->s.n + 1; // distinct objects own distinct pickle bytes: names_len ≤ the pickle's size + n
    }
    if (n > GRAFT_ST_MAX_TENSORS) { rc = FAIL(GRAFT_E_LIMIT, NULL, 0, "%zu tensors (limit %d)", n, GRAFT_ST_MAX_TENSORS); goto out; }
    st->tensors = graft__calloc(n ? n : 1, sizeof *st->tensors);
    st->names = graft__malloc(names_len ? names_len : 1);
    used = graft__calloc(n + 1, sizeof *used);
    first = graft__calloc(nz, sizeof *first);
    if (!st->tensors || !st->names || !used || !first) { rc = FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory"); goto out; }
    used[0] = pkl;
    size_t n_used = 1, at = 0;
    for (size_t i = 0; i < root->seq.n; i += 2) {
        struct pv *k = root->seq.v[i], *v = root->seq.v[i + 1];
        if (v->k != PK_TENSOR) continue;
        struct graft_tensor_info *t = &st->tensors[st->n];
        memcpy(st->names + at, k->s.p, k->s.n), st->names[at + k->s.n] = 0;
        t->name = st->names + at, t->name_len = k->s.n, at += k->s.n + 1;
        const struct ptensor *pt = v->t;
        const struct pstorage *ps = &pt->storage->st;
        t->dtype = ps->dt, t->n_dims = pt->nd;
        uint64_t ne = 1, expect = 1, es = (uint64_t)graft_dtype_traits(ps->dt)->bits / 8, sbytes, need, off_b;
        bool contiguous = true;
        for (int d = pt->nd - 1; d >= 0; d--) {
            t->ne[d] = pt->size[d];
            if (!graft__mul_u64(ne, pt->size[d], &ne)) { rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "element count overflows 64 bits"); goto out; }
            if (pt->size[d] != 1 && (uint64_t)pt->stride[d] != expect) contiguous = false;
            if (pt->stride[d] < 0 || !graft__mul_u64(expect, pt->size[d] ? pt->size[d] : 1, &expect)) contiguous = false;
        }
        t->n_elem = ne;
        if (!contiguous && ne > 1) {
            rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "stored as a non-contiguous view of its storage; re-save it with tensor.contiguous()");
            goto out;
        }
        if (!graft__mul_u64(ne, es, &t->n_bytes) || !graft__mul_u64(ps->numel, es, &sbytes) || !graft__mul_u64(pt->offset, es, &off_b) ||
            !graft__add_u64(off_b, t->n_bytes, &need) || need > sbytes) {
            char kb[44];
            rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "elements %llu… of %llu run past its storage '%s' of %llu elements", (unsigned long long)pt->offset,
                      (unsigned long long)ne, printable(ps->key, ps->key_len, kb, sizeof kb), (unsigned long long)ps->numel);
            goto out;
        }
        char kraw[5 + 200], kbuf[5 + 44]; // the member's name by its bytes; the message's, printable
        size_t kl = ps->key_len <= 200 ? 5 + ps->key_len : 0;
        if (kl) memcpy(kraw, "data/", 5), memcpy(kraw + 5, ps->key, ps->key_len);
        memcpy(kbuf, "data/", 5), printable(ps->key, ps->key_len, kbuf + 5, sizeof kbuf - 5);
        const struct zmember *sm = kl ? zfind(z, nz, pkl->name, pre, kraw, kl) : NULL;
        if (!sm) { rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "its storage member %s is missing from the archive", kbuf); goto out; }
        if (sm->size != sbytes) {
            rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "storage %s holds %llu bytes but the pickle says %llu elements of %llu bytes", kbuf,
                      (unsigned long long)sm->size, (unsigned long long)ps->numel, (unsigned long long)es);
            goto out;
        }
        t->begin = sm->data + off_b;
        const struct pstorage *f0 = first[sm - z];
        if (!f0) first[sm - z] = ps, used[n_used++] = sm; // each storage's checksum once
        else if (f0->dt != ps->dt || f0->numel != ps->numel) { // torch.load keeps the first type it meets and reinterprets (or fails)
            rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "storage %s is read as %s × %llu here but as %s × %llu by an earlier tensor", kbuf,
                      graft_dtype_traits(ps->dt)->name, (unsigned long long)ps->numel, graft_dtype_traits(f0->dt)->name, (unsigned long long)f0->numel);
            goto out;
        }
        st->n++;
    }
    if ((rc = crc_check(f, used + 1, n_used - 1, threads, label, err))) goto out;
    // data order, then the name table (a name twice is an error, as in a safetensors header)
    qsort(st->tensors, st->n, sizeof *st->tensors, cmp_tensor);
    st->n_slots = 16, st->hkey = graft__hash_key();
    while (st->n_slots < 2 * st->n) st->n_slots *= 2;
    if (!(st->slots = graft__calloc(st->n_slots, sizeof *st->slots))) { rc = FAIL(GRAFT_E_NOMEM, NULL, 0, "out of memory"); goto out; }
    for (size_t i = 0; i < st->n; i++) {
        const struct graft_tensor_info *t = &st->tensors[i];
        size_t s = graft__name_hash(st->hkey, t->name, t->name_len) & (st->n_slots - 1);
        while (st->slots[s]) {
            const struct graft_tensor_info *o = &st->tensors[st->slots[s] - 1];
            if (o->name_len == t->name_len && !memcmp(o->name, t->name, t->name_len)) { rc = FAIL(GRAFT_E_FORMAT, t->name, t->name_len, "tensor name appears twice"); goto out; }
            s = (s + 1) & (st->n_slots - 1);
        }
        st->slots[s] = (uint32_t)(i + 1);
    }
    // a key also given to a value that is not a tensor: Python keeps the last of them (torch.load may
    // drop the tensor), so the name is as ambiguous as a tensor's twice
    for (size_t i = 0; i < root->seq.n; i += 2) {
        const struct pv *k = root->seq.v[i], *v = root->seq.v[i + 1];
        if (v->k != PK_TENSOR && k->k == PK_STR && graft_st_find(st, k->s.p, k->s.n) >= 0) {
            rc = FAIL(GRAFT_E_FORMAT, k->s.p, k->s.n, "tensor name appears twice (once for a %s)", pk_name(v->k));
            goto out;
        }
    }
    st->data_start = 0, st->header_len = 0, st->torch = true;
out:
    for (size_t i = 0; i < vm.n_all; i++) {
        struct pv *v = vm.all[i];
        if (v->k == PK_TUPLE || v->k == PK_LIST || v->k == PK_DICT) graft__free(v->seq.v);
        if (v->k == PK_TENSOR) graft__free(v->t);
        graft__free(v);
    }
    graft__free(vm.all), graft__free(vm.stack), graft__free(vm.marks), graft__free(vm.memo);
    graft__free(z), graft__free(used), graft__free(first);
    return rc;
}
