// Hugging Face tokenizer.json BPE tokenizers (see include/graft/tokenizer.h for the pipeline).
// Regexes run on PCRE2 (UTF + Unicode properties, as the `tokenizers` library's Oniguruma patterns
// need); Unicode normalisation is utf8proc's.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "graft/model.h"
#include "graft/gguf.h"
#include "graft/tokenizer.h"
#include "../io/io-impl.h"

#define MAX_IDS (1u << 24)

enum kind {
    N_NFC, N_NFD, N_NFKC, N_NFKD, N_LOWER, N_PREPEND, N_REPLACE, N_STRIP,
    P_BYTELEVEL, P_SPLIT, P_METASPACE, P_DIGITS,
    D_BYTELEVEL, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP, D_METASPACE,
};
enum behavior { B_ISOLATED, B_REMOVED, B_PREV, B_NEXT, B_CONTIG };
enum scheme { S_ALWAYS, S_FIRST, S_NEVER };

struct step {
    enum kind   kind;
    char       *a, *b;        // Prepend: a. Replace: literal a → b. Metaspace: replacement a. Strip decoder: content a
    size_t      alen, blen;
    pcre2_code *re;           // Split, and Replace with a Regex pattern
    enum behavior behavior;
    bool        invert;
    bool        f1, f2;       // ByteLevel: add_prefix_space, use_regex. Metaspace: split. Strip: left, right. Digits: individual
    enum scheme scheme;
    int         start, stop;  // Strip decoder
};

struct added {
    int32_t id;
    char   *s;
    size_t  len;
    bool    lstrip, rstrip, single_word;
};

struct merge_ent { uint64_t key; uint32_t rank; int32_t id; };

// A byte trie of the added tokens: matching at a text position walks it once (the longest token is
// at most a few dozen bytes) instead of comparing every added token — 6,000 of them (Gemma) made a
// 1 MB text take 8 s. Children are a sibling list, the root's a table by first byte.
struct atrie { int32_t child, sibling, token; uint8_t byte; };

struct graft_tokenizer {
    char    *name;
    // id → token string (NULL for holes), and string → id
    char   **str;
    uint32_t *slen;
    int32_t  n_ids;
    int32_t *vh;  // open addressing table of ids, -1 empty
    size_t   vh_mask;
    uint64_t vh_key;   // its hash key (graft__name_hash)
    struct merge_ent *mh;
    size_t   mh_mask;
    uint64_t mh_key;   // its hash key: a hostile tokenizer.json cannot aim its merges at one slot
    struct step *norm, *pre, *dec;
    int      n_norm, n_pre, n_dec;
    struct added *added;
    int      n_added;
    struct atrie *trie;       // node 0: the root
    int32_t  trie_root[256];  // root's child by first byte, -1 none
    bool     byte_fallback, fuse_unk, ignore_merges;
    int32_t  unk;
    int32_t  bos;
    int32_t  byte_tok[256];   // id of "<0xXX>" or -1 (byte fallback)
    char     b2u[256][3];     // byte-level alphabet: byte → its UTF-8 char (1–2 bytes, NUL-terminated)
    int16_t  u2b[324];        // and back: code point → byte, -1 if not in the alphabet
    pcre2_code *gpt2_re;      // ByteLevel's own split regex (use_regex)
    pcre2_code *word_re;      // Rust regex's Unicode \w, which HF tests single_word tokens' neighbours with
};

// ---- small helpers -----------------------------------------------------------------------------------

static int fail(struct graft_err *err, const char *name, const char *fmt, const char *what) {
    return graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, fmt, what);
}

static size_t utf8_len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static int32_t vocab_find(const struct graft_tokenizer *t, const char *s, size_t n) {
    if (!t->vh) return -1;
    for (size_t i = graft__name_hash(t->vh_key, s, n) & t->vh_mask;; i = (i + 1) & t->vh_mask) {
        int32_t id = t->vh[i];
        if (id < 0) return -1;
        if (t->slen[id] == n && memcmp(t->str[id], s, n) == 0) return id;
    }
}

static bool merge_find(const struct graft_tokenizer *t, int32_t a, int32_t b, uint32_t *rank, int32_t *id) {
    if (!t->mh) return false;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = graft__mix64(key ^ t->mh_key) & t->mh_mask;; i = (i + 1) & t->mh_mask) {
        if (t->mh[i].key == UINT64_MAX) return false;
        if (t->mh[i].key == key) { *rank = t->mh[i].rank; *id = t->mh[i].id; return true; }
    }
}

static void put_utf8(struct graft__buf *b, int32_t cp) {
    uint8_t u[4];
    ssize_t n = utf8proc_encode_char(cp, u);
    graft__buf_append(b, u, (size_t)n);
}

// ---- loading -----------------------------------------------------------------------------------------

static const char *jstr(json_t *o, const char *k) {
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
static bool jbool(json_t *o, const char *k, bool dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int set_token(struct graft_tokenizer *t, int32_t id, const char *s, size_t n, struct graft_err *err) {
    if (id < 0 || (uint32_t)id >= MAX_IDS)
        return graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "token id %ld out of range", (long)id);
    if (t->str[id]) {
        if (t->slen[id] == n && memcmp(t->str[id], s, n) == 0) return GRAFT_OK; // added token repeating a vocab entry
        return graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "id %ld is given to two different tokens", (long)id);
    }
    if (!(t->str[id] = graft__strndup(s, n))) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
    t->slen[id] = (uint32_t)n;
    return GRAFT_OK;
}

static pcre2_code *compile_re(const char *pat, size_t n, bool literal, const char *name, struct graft_err *err) {
    int ec;
    PCRE2_SIZE eo;
    // MULTILINE: ^ and $ are line anchors in Oniguruma's default syntax, which HF's regexes use
    // (PCRE2_LITERAL allows no UCP: a String pattern, escaped by HF, needs no character classes)
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, n, PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE), &ec, &eo, NULL);
    if (!re) {
        char m[160];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)m, sizeof m);
        graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "regex /%.60s/ at offset %zu: %s", pat, (size_t)eo, m);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); // best effort: the interpreter is the fallback
    return re;
}

// A pattern object {"String": s} or {"Regex": r}.
static int pattern(json_t *p, struct step *s, bool want_regex, const char *name, struct graft_err *err) {
    const char *str = jstr(p, "String"), *rx = jstr(p, "Regex");
    if (str && *str && !want_regex) { // (HF escapes a String into a regex: an empty one matches everywhere)
        s->a = graft__strdup(str), s->alen = strlen(str);
        return s->a ? GRAFT_OK : graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory");
    }
    if (!str && !rx) return fail(err, name, "pattern must be {\"String\": …} or {\"Regex\": …}%s", "");
    s->re = compile_re(str ? str : rx, strlen(str ? str : rx), str != NULL, name, err);
    return s->re ? GRAFT_OK : GRAFT_E_FORMAT;
}

static int push_step(struct step **v, int *n, struct step s, const char *name, struct graft_err *err) {
    struct step *nv = graft__realloc(*v, (size_t)(*n + 1) * sizeof **v);
    if (!nv) return graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory");
    *v = nv;
    nv[(*n)++] = s;
    return GRAFT_OK;
}

static void step_free(struct step *s) {
    graft__free(s->a), graft__free(s->b);
    pcre2_code_free(s->re);
}

static enum scheme metaspace_scheme(json_t *o) {
    const char *ps = jstr(o, "prepend_scheme");
    if (ps) return !strcmp(ps, "first") ? S_FIRST : !strcmp(ps, "never") ? S_NEVER : S_ALWAYS;
    return jbool(o, "add_prefix_space", true) ? S_ALWAYS : S_NEVER; // files before prepend_scheme existed
}

// which: 0 normalizer, 1 pre-tokenizer, 2 decoder. Sequences are flattened.
static int parse_steps(struct graft_tokenizer *t, json_t *o, int which, struct step **v, int *n, struct graft_err *err) {
    static const char *const what[] = {"normalizer", "pre_tokenizer", "decoder"};
    if (!o || json_is_null(o)) return GRAFT_OK;
    const char *type = jstr(o, "type");
    if (!json_is_object(o) || !type) return graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "%s without a type", what[which]);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(o, which == 0 ? "normalizers" : which == 1 ? "pretokenizers" : "decoders");
        if (!json_is_array(arr)) return graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "%s Sequence without its list", what[which]);
        size_t i;
        json_t *e;
        json_array_foreach(arr, i, e) {
            int rc = parse_steps(t, e, which, v, n, err);
            if (rc) return rc;
        }
        return GRAFT_OK;
    }
    struct step s = {0};
    int rc = GRAFT_OK;
    bool ok = true;
    if (which == 0) {
        if (!strcmp(type, "NFC")) s.kind = N_NFC;
        else if (!strcmp(type, "NFD")) s.kind = N_NFD;
        else if (!strcmp(type, "NFKC")) s.kind = N_NFKC;
        else if (!strcmp(type, "NFKD")) s.kind = N_NFKD;
        else if (!strcmp(type, "Lowercase")) s.kind = N_LOWER;
        else if (!strcmp(type, "Strip")) s.kind = N_STRIP, s.f1 = jbool(o, "strip_left", true), s.f2 = jbool(o, "strip_right", true);
        else if (!strcmp(type, "Prepend")) {
            const char *p = jstr(o, "prepend");
            if (!p) return fail(err, t->name, "Prepend normalizer without \"prepend\"%s", "");
            s.kind = N_PREPEND, s.a = graft__strdup(p), s.alen = strlen(p);
            if (!s.a) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
        } else if (!strcmp(type, "Replace")) {
            const char *c = jstr(o, "content");
            if (!c) return fail(err, t->name, "Replace normalizer without \"content\"%s", "");
            s.kind = N_REPLACE;
            if ((rc = pattern(json_object_get(o, "pattern"), &s, false, t->name, err))) return rc;
            if (!(s.b = graft__strdup(c))) rc = graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
            s.blen = strlen(c);
        } else ok = false;
    } else if (which == 1) {
        if (!strcmp(type, "ByteLevel")) s.kind = P_BYTELEVEL, s.f1 = jbool(o, "add_prefix_space", true), s.f2 = jbool(o, "use_regex", true);
        else if (!strcmp(type, "Digits")) s.kind = P_DIGITS, s.f1 = jbool(o, "individual_digits", false);
        else if (!strcmp(type, "Metaspace")) {
            const char *r = jstr(o, "replacement");
            s.kind = P_METASPACE, s.scheme = metaspace_scheme(o), s.f1 = jbool(o, "split", true);
            s.a = graft__strdup(r ? r : "\xe2\x96\x81"), s.alen = s.a ? strlen(s.a) : 0;
            if (!s.a) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
        } else if (!strcmp(type, "Split")) {
            const char *b = jstr(o, "behavior");
            s.kind = P_SPLIT, s.invert = jbool(o, "invert", false);
            if (!b || !strcmp(b, "Isolated")) s.behavior = B_ISOLATED;
            else if (!strcmp(b, "Removed")) s.behavior = B_REMOVED;
            else if (!strcmp(b, "MergedWithPrevious")) s.behavior = B_PREV;
            else if (!strcmp(b, "MergedWithNext")) s.behavior = B_NEXT;
            else if (!strcmp(b, "Contiguous")) s.behavior = B_CONTIG;
            else return fail(err, t->name, "Split behavior \"%s\" is not supported", b);
            if ((rc = pattern(json_object_get(o, "pattern"), &s, true, t->name, err))) return rc;
        } else ok = false;
    } else {
        if (!strcmp(type, "ByteLevel")) s.kind = D_BYTELEVEL;
        else if (!strcmp(type, "ByteFallback")) s.kind = D_BYTEFALLBACK;
        else if (!strcmp(type, "Fuse")) s.kind = D_FUSE;
        else if (!strcmp(type, "Strip")) {
            const char *c = jstr(o, "content");
            s.kind = D_STRIP, s.start = (int)json_integer_value(json_object_get(o, "start")), s.stop = (int)json_integer_value(json_object_get(o, "stop"));
            s.a = graft__strdup(c ? c : " "), s.alen = s.a ? strlen(s.a) : 0;
            if (!s.a) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
        } else if (!strcmp(type, "Metaspace")) {
            const char *r = jstr(o, "replacement");
            s.kind = D_METASPACE, s.scheme = metaspace_scheme(o);
            s.a = graft__strdup(r ? r : "\xe2\x96\x81"), s.alen = s.a ? strlen(s.a) : 0;
            if (!s.a) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
        } else if (!strcmp(type, "Replace")) {
            const char *c = jstr(o, "content");
            if (!c) return fail(err, t->name, "Replace decoder without \"content\"%s", "");
            s.kind = D_REPLACE;
            if ((rc = pattern(json_object_get(o, "pattern"), &s, false, t->name, err))) return rc;
            if (!(s.b = graft__strdup(c))) rc = graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
            s.blen = strlen(c);
        } else ok = false;
    }
    if (!ok) return graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "%s \"%s\" is not supported", what[which], type);
    if (!rc) rc = push_step(v, n, s, t->name, err);
    if (rc) step_free(&s);
    return rc;
}

// The byte-level alphabet of GPT-2: printable Latin-1 bytes stand for themselves, the other 68 bytes
// take code points 256, 257, … in byte order.
static void byte_alphabet(struct graft_tokenizer *t) {
    for (int i = 0; i < 324; i++) t->u2b[i] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool self = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        int cp = self ? b : next++;
        uint8_t u[4];
        ssize_t n = utf8proc_encode_char(cp, u);
        memcpy(t->b2u[b], u, (size_t)n);
        t->b2u[b][n] = 0;
        t->u2b[cp] = (int16_t)b;
    }
}

static int parse_model(struct graft_tokenizer *t, json_t *model, struct graft_err *err) {
    if (!json_is_object(model)) return fail(err, t->name, "no \"model\" object%s", "");
    const char *type = jstr(model, "type");
    if (type && strcmp(type, "BPE"))
        return fail(err, t->name, "model type \"%s\" is not supported (graft reads BPE tokenizers)", type);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab) || !json_is_array(merges)) return fail(err, t->name, "BPE model without \"vocab\" object and \"merges\" list%s", "");
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0) return fail(err, t->name, "BPE dropout is not supported%s", "");
    const char *cont = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((cont && *cont) || (eow && *eow)) return fail(err, t->name, "continuing_subword_prefix / end_of_word_suffix are not supported%s", "");
    t->byte_fallback = jbool(model, "byte_fallback", false);
    t->fuse_unk = jbool(model, "fuse_unk", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    const char *k;
    size_t kl;
    json_t *v;
    json_object_keylen_foreach(vocab, k, kl, v) {
        if (!json_is_integer(v)) return graft_err_set(err, GRAFT_E_FORMAT, t->name, k, kl, "vocabulary id is not an integer");
        int rc = set_token(t, (int32_t)(json_integer_value(v) < 0 || json_integer_value(v) >= MAX_IDS ? -1 : json_integer_value(v)), k, kl, err);
        if (rc) return rc;
    }
    return GRAFT_OK;
}

static int build_vocab_hash(struct graft_tokenizer *t, struct graft_err *err) {
    size_t cap = 16;
    while (cap < 2 * (size_t)t->n_ids) cap <<= 1;
    if (!(t->vh = graft__malloc(cap * sizeof *t->vh))) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
    memset(t->vh, 0xff, cap * sizeof *t->vh);
    t->vh_mask = cap - 1, t->vh_key = graft__hash_key();
    for (int32_t id = 0; id < t->n_ids; id++) {
        if (!t->str[id]) continue;
        if (vocab_find(t, t->str[id], t->slen[id]) >= 0)
            return graft_err_set(err, GRAFT_E_FORMAT, t->name, t->str[id], t->slen[id], "token appears twice with different ids");
        size_t i = graft__name_hash(t->vh_key, t->str[id], t->slen[id]) & t->vh_mask;
        while (t->vh[i] >= 0) i = (i + 1) & t->vh_mask;
        t->vh[i] = id;
    }
    return GRAFT_OK;
}

static int parse_merges(struct graft_tokenizer *t, json_t *merges, struct graft_err *err) {
    size_t n = json_array_size(merges), cap = 16;
    while (cap < 2 * n + 2) cap <<= 1;
    if (!(t->mh = graft__malloc(cap * sizeof *t->mh))) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
    for (size_t i = 0; i < cap; i++) t->mh[i].key = UINT64_MAX;
    t->mh_mask = cap - 1, t->mh_key = graft__hash_key();
    char *cat = NULL;
    int rc = GRAFT_OK;
    for (size_t r = 0; r < n && !rc; r++) {
        json_t *m = json_array_get(merges, r);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(m) && !strncmp(json_string_value(m), "#version", 8)) continue; // a merges.txt header line (HF skips it)
        if (json_is_string(m)) { // "a b" (older files)
            a = json_string_value(m);
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) { rc = graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "merge %zu is not \"A B\"", r); break; }
            al = (size_t)(sp - a), b = sp + 1, bl = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0)), al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1)), bl = json_string_length(json_array_get(m, 1));
        } else { rc = graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "merge %zu is neither \"A B\" nor [A, B]", r); break; }
        int32_t ia = vocab_find(t, a, al), ib = vocab_find(t, b, bl);
        graft__free(cat);
        if (!(cat = graft__malloc(al + bl + 1))) { rc = graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory"); break; }
        memcpy(cat, a, al), memcpy(cat + al, b, bl);
        int32_t ic = vocab_find(t, cat, al + bl);
        if (ia < 0 || ib < 0 || ic < 0) {
            rc = graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "merge %zu (\"%.40s\" + \"%.40s\") uses a token not in the vocabulary", r, ia < 0 ? a : "", b);
            break;
        }
        uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        size_t i = graft__mix64(key ^ t->mh_key) & t->mh_mask;
        while (t->mh[i].key != UINT64_MAX && t->mh[i].key != key) i = (i + 1) & t->mh_mask;
        // a repeated merge takes its last rank, as HF's merge map (a later insert replaces the earlier)
        t->mh[i] = (struct merge_ent){key, (uint32_t)r, ic};
    }
    graft__free(cat);
    return rc;
}

static int parse_added(struct graft_tokenizer *t, json_t *arr, struct graft_err *err) {
    if (!arr || json_is_null(arr)) return GRAFT_OK;
    if (!json_is_array(arr)) return fail(err, t->name, "\"added_tokens\" is not a list%s", "");
    size_t n = json_array_size(arr);
    if (n && !(t->added = graft__calloc(n, sizeof *t->added))) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i), *id = json_object_get(e, "id"), *c = json_object_get(e, "content");
        if (!json_is_integer(id) || !json_is_string(c) || !json_string_length(c))
            return graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "added token %zu needs an integer id and non-empty content", i);
        json_int_t v = json_integer_value(id);
        int rc = set_token(t, v < 0 || v >= MAX_IDS ? -1 : (int32_t)v, json_string_value(c), json_string_length(c), err);
        if (rc) return rc;
        struct added *a = &t->added[t->n_added++];
        a->id = (int32_t)v;
        a->len = json_string_length(c);
        if (!(a->s = graft__strndup(json_string_value(c), a->len))) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
        a->lstrip = jbool(e, "lstrip", false), a->rstrip = jbool(e, "rstrip", false), a->single_word = jbool(e, "single_word", false);
    }
    // the trie: at most one node per byte of the contents, plus the root
    size_t cap = 1;
    for (int a = 0; a < t->n_added; a++) cap += t->added[a].len;
    if (!(t->trie = graft__malloc(cap * sizeof *t->trie))) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
    for (int b = 0; b < 256; b++) t->trie_root[b] = -1;
    int32_t nn = 1;
    t->trie[0] = (struct atrie){-1, -1, -1, 0};
    for (int a = 0; a < t->n_added; a++) {
        int32_t at = 0;
        for (size_t k = 0; k < t->added[a].len; k++) {
            uint8_t c = (uint8_t)t->added[a].s[k];
            int32_t *link = at ? &t->trie[at].child : &t->trie_root[c];
            while (*link >= 0 && t->trie[*link].byte != c) link = &t->trie[*link].sibling;
            if (*link < 0) t->trie[nn] = (struct atrie){-1, -1, -1, c}, *link = nn++;
            at = *link;
        }
        if (t->trie[at].token < 0) t->trie[at].token = a; // the same content twice: the first
    }
    return GRAFT_OK;
}

// Largest id in the vocabulary and added tokens, so the id tables can be sized before filling.
static json_int_t max_id(json_t *model, json_t *added) {
    json_int_t m = -1;
    const char *k;
    json_t *v;
    json_t *vocab = json_object_get(model, "vocab");
    json_object_foreach(vocab, k, v) if (json_is_integer(v) && json_integer_value(v) > m) m = json_integer_value(v);
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (json_is_integer(id) && json_integer_value(id) > m) m = json_integer_value(id);
    }
    return m;
}

// BOS from a post-processor: TemplateProcessing whose single template starts with a special token,
// or Roberta/Bert's cls.
static int32_t template_bos(const struct graft_tokenizer *t, json_t *pp) {
    const char *type = jstr(pp, "type");
    if (!type) return -1;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(pp, "processors"), i, e) {
            int32_t b = template_bos(t, e);
            if (b >= 0) return b;
        }
        return -1;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        json_t *cls = json_object_get(pp, "cls");
        json_t *id = json_array_get(cls, 1);
        return json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) < t->n_ids ? (int32_t)json_integer_value(id) : -1;
    }
    if (strcmp(type, "TemplateProcessing")) return -1;
    json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    json_t *sp = json_object_get(first, "SpecialToken");
    const char *name = jstr(sp, "id");
    if (!name) return -1;
    json_t *ids = json_object_get(json_object_get(json_object_get(pp, "special_tokens"), name), "ids");
    json_t *id = json_array_get(ids, 0);
    if (json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) < t->n_ids) return (int32_t)json_integer_value(id);
    return vocab_find(t, name, strlen(name));
}

int graft_tokenizer_load_json(const char *text, size_t len, const char *name, struct graft_tokenizer **out, struct graft_err *err) {
    *out = NULL;
    if (len > GRAFT_TOKENIZER_MAX_BYTES)
        return graft_err_set(err, GRAFT_E_LIMIT, name, NULL, 0, "tokenizer.json is %zu bytes (limit %u)", len, GRAFT_TOKENIZER_MAX_BYTES);
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root) return graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "line %d: %s", je.line, je.text);
    struct graft_tokenizer *t = graft__calloc(1, sizeof *t);
    int rc = GRAFT_OK;
    if (!t || !(t->name = graft__strdup(name))) { rc = graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory"); goto out; }
    t->unk = t->bos = -1;
    byte_alphabet(t);
    json_t *model = json_object_get(root, "model"), *added = json_object_get(root, "added_tokens");
    if (!json_is_object(root) || !json_is_object(model)) { rc = fail(err, name, "not a tokenizer.json (no \"model\" object)%s", ""); goto out; }
    json_int_t mx = max_id(model, added);
    if (mx >= MAX_IDS) { rc = graft_err_set(err, GRAFT_E_LIMIT, name, NULL, 0, "token id %lld over the limit %u", (long long)mx, MAX_IDS); goto out; }
    t->n_ids = (int32_t)(mx + 1);
    if (!(t->str = graft__calloc((size_t)t->n_ids + 1, sizeof *t->str)) || !(t->slen = graft__calloc((size_t)t->n_ids + 1, sizeof *t->slen))) {
        rc = graft_err_set(err, GRAFT_E_NOMEM, name, NULL, 0, "out of memory");
        goto out;
    }
    if ((rc = parse_model(t, model, err)) || (rc = parse_added(t, added, err)) || (rc = build_vocab_hash(t, err)) ||
        (rc = parse_merges(t, json_object_get(model, "merges"), err)))
        goto out;
    if ((rc = parse_steps(t, json_object_get(root, "normalizer"), 0, &t->norm, &t->n_norm, err)) ||
        (rc = parse_steps(t, json_object_get(root, "pre_tokenizer"), 1, &t->pre, &t->n_pre, err)) ||
        (rc = parse_steps(t, json_object_get(root, "decoder"), 2, &t->dec, &t->n_dec, err)))
        goto out;
    const char *unk = jstr(model, "unk_token");
    if (unk && (t->unk = vocab_find(t, unk, strlen(unk))) < 0) { rc = fail(err, name, "unk_token \"%.60s\" is not in the vocabulary", unk); goto out; }
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        t->byte_tok[b] = vocab_find(t, s, 6);
    }
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].kind == P_BYTELEVEL && t->pre[i].f2 && !t->gpt2_re) {
            static const char gpt2[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
            if (!(t->gpt2_re = compile_re(gpt2, sizeof gpt2 - 1, false, name, err))) { rc = GRAFT_E_FORMAT; goto out; }
        }
    for (int i = 0; i < t->n_added && !t->word_re; i++)
        if (t->added[i].single_word) {
            static const char word[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
            if (!(t->word_re = compile_re(word, sizeof word - 1, false, name, err))) { rc = GRAFT_E_FORMAT; goto out; }
        }
    t->bos = template_bos(t, json_object_get(root, "post_processor"));
out:
    json_decref(root);
    if (rc) graft_tokenizer_free(t);
    else *out = t;
    return rc;
}

void graft_tokenizer_free(struct graft_tokenizer *t) {
    if (!t) return;
    if (t->str)
        for (int32_t i = 0; i < t->n_ids; i++) graft__free(t->str[i]);
    graft__free(t->str), graft__free(t->slen), graft__free(t->vh), graft__free(t->mh);
    for (int i = 0; i < t->n_norm; i++) step_free(&t->norm[i]);
    for (int i = 0; i < t->n_pre; i++) step_free(&t->pre[i]);
    for (int i = 0; i < t->n_dec; i++) step_free(&t->dec[i]);
    graft__free(t->norm), graft__free(t->pre), graft__free(t->dec);
    for (int i = 0; i < t->n_added; i++) graft__free(t->added[i].s);
    graft__free(t->added), graft__free(t->trie);
    pcre2_code_free(t->gpt2_re), pcre2_code_free(t->word_re);
    graft__free(t->name);
    graft__free(t);
}

// BOS: tokenizer_config.json's add_bos_token decides when it is there (true: its bos_token, else
// config.json's bos_token_id); without it the post-processor template does.
static int apply_bos(struct graft_tokenizer *t, const char *tc_text, const char *cfg_text, struct graft_err *err) {
    json_t *tc = tc_text ? json_loads(tc_text, 0, NULL) : NULL;
    json_t *add = json_object_get(tc, "add_bos_token");
    int rc = GRAFT_OK;
    if (json_is_boolean(add)) {
        t->bos = -1;
        if (json_is_true(add)) {
            json_t *b = json_object_get(tc, "bos_token");
            const char *s = json_is_string(b) ? json_string_value(b) : jstr(b, "content");
            if (s) t->bos = vocab_find(t, s, strlen(s));
            json_t *cfg = t->bos < 0 && cfg_text ? json_loads(cfg_text, 0, NULL) : NULL;
            json_t *id = json_object_get(cfg, "bos_token_id");
            if (t->bos < 0 && json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) < t->n_ids) t->bos = (int32_t)json_integer_value(id);
            json_decref(cfg);
            if (t->bos < 0) rc = graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "tokenizer_config.json: add_bos_token is true but no BOS token is known (bos_token, or config.json bos_token_id)");
        }
    }
    json_decref(tc);
    return rc;
}

int graft_tokenizer_load_texts(const char *tok_json, size_t len, const char *tokenizer_config, const char *config, const char *name,
                               struct graft_tokenizer **out, struct graft_err *err) {
    *out = NULL;
    if (graft__utf8_check((const uint8_t *)tok_json, len) != len) return graft_err_set(err, GRAFT_E_FORMAT, name, NULL, 0, "not valid UTF-8");
    int rc = graft_tokenizer_load_json(tok_json, len, name, out, err);
    if (!rc && (rc = apply_bos(*out, tokenizer_config, config, err))) graft_tokenizer_free(*out), *out = NULL;
    return rc;
}

// A small side file's text, or NULL when absent or unreadable (they only refine the BOS rule).
static char *side_file(const char *dir, const char *name) {
    char *p = graft__asprintf("%s/%s", dir, name), *text = NULL;
    struct graft_err e = {0};
    if (p && graft__read_small_file(p, GRAFT_CONFIG_MAX_BYTES, &text, NULL, &e)) text = NULL;
    graft__free(p);
    return text;
}

// The vocabulary a GGUF file carries, rebuilt as tokenizer.json (graft_gguf_hf_tokenizer).
int graft_tokenizer_load_gguf(const struct graft_gguf *g, const char *name, struct graft_tokenizer **out, struct graft_err *err) {
    char *tj = NULL, *tc = NULL;
    *out = NULL;
    int rc = graft_gguf_hf_tokenizer(g, &tj, &tc, err);
    if (rc) graft__err_prefix(err, name, NULL, 0);
    else rc = graft_tokenizer_load_texts(tj, strlen(tj), tc, NULL, name, out, err);
    graft__free(tj), graft__free(tc);
    return rc;
}

static int load_gguf(const char *path, struct graft_tokenizer **out, struct graft_err *err) {
    struct graft_gguf *g;
    int rc = graft_gguf_open(path, &g, err);
    if (rc) return rc;
    rc = graft_tokenizer_load_gguf(g, path, out, err);
    graft_gguf_close(g);
    return rc;
}

int graft_tokenizer_load(const char *dir, struct graft_tokenizer **out, struct graft_err *err) {
    *out = NULL;
    if (graft_gguf_sniff(dir)) return load_gguf(dir, out, err);
    char *p = graft__asprintf("%s/tokenizer.json", dir), *text = NULL;
    if (!p) return graft_err_set(err, GRAFT_E_NOMEM, dir, NULL, 0, "out of memory");
    size_t len = 0;
    int rc = graft__read_small_file(p, GRAFT_TOKENIZER_MAX_BYTES, &text, &len, err);
    if (rc == GRAFT_E_NOTFOUND) {
        graft_err_clear(err);
        rc = graft_err_set(err, GRAFT_E_NOTFOUND, p, NULL, 0, "no tokenizer.json (graft reads the fast-tokenizer file; give --tokens instead)");
    }
    char *tc = rc ? NULL : side_file(dir, "tokenizer_config.json"), *cfg = rc ? NULL : side_file(dir, "config.json");
    if (!rc) rc = graft_tokenizer_load_texts(text, len, tc, cfg, p, out, err);
    graft__free(tc), graft__free(cfg), graft__free(text), graft__free(p);
    return rc;
}

int32_t graft_tokenizer_bos(const struct graft_tokenizer *t) { return t->bos; }
int32_t graft_tokenizer_n_ids(const struct graft_tokenizer *t) { return t->n_ids; }
const char *graft_tokenizer_token(const struct graft_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !t->str[id]) return NULL;
    *len = t->slen[id];
    return t->str[id];
}

int32_t graft_tokenizer_find(const struct graft_tokenizer *t, const char *s, size_t len) { return vocab_find(t, s, len); }

// ---- encoding ----------------------------------------------------------------------------------------

// A list of strings: piece i is s.data[off[i] .. off[i + 1]).
struct pieces {
    struct graft__buf s;
    size_t *off;
    size_t  n, cap;
};

static bool pieces_push(struct pieces *p, const char *d, size_t n) {
    if (!n) return true;
    if (p->n + 2 > p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 16;
        size_t *no = graft__realloc(p->off, nc * sizeof *no);
        if (!no) return false;
        p->off = no, p->cap = nc;
    }
    if (!p->n) p->off[0] = p->s.len;
    graft__buf_append(&p->s, d, n);
    p->off[++p->n] = p->s.len;
    return !p->s.failed;
}
// Grow the last piece (MergedWithPrevious) or start one.
static bool pieces_extend(struct pieces *p, const char *d, size_t n) {
    if (!p->n) return pieces_push(p, d, n);
    graft__buf_append(&p->s, d, n);
    p->off[p->n] = p->s.len;
    return !p->s.failed;
}
static void pieces_free(struct pieces *p) {
    graft__buf_free(&p->s);
    graft__free(p->off);
    memset(p, 0, sizeof *p);
}
static void pieces_init(struct pieces *p) {
    memset(p, 0, sizeof *p);
    graft__buf_init(&p->s, SIZE_MAX / 2);
}

// Matches of `re` in s as (start, end) pairs, as the onig crate's find_iter gives them to HF
// tokenizers: leftmost-first and non-overlapping; an empty match counts (it splits the text, or takes
// a Replace's content), the search going on one character past it, except that the first empty match
// after a non-empty one is dropped wherever it falls.
static int find_all(const pcre2_code *re, const char *s, size_t n, size_t **out, size_t *n_out) {
    *out = NULL, *n_out = 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    // PCRE2's default limit of 10M steps per search fails ordinary patterns on long runs (Llama 3's on
    // 12M spaces backtracks through the run): the limit grows with the text, as Oniguruma has none
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (!md || !mc) { pcre2_match_data_free(md), pcre2_match_context_free(mc); return GRAFT_E_NOMEM; }
    pcre2_set_match_limit(mc, n < (UINT32_MAX - 10000000u) / 4 ? 10000000u + 4 * (uint32_t)n : UINT32_MAX);
    size_t cap = 0, k = 0, *v = NULL, at = 0;
    bool skip_empty = false;
    int rc = GRAFT_OK;
    while (at <= n) {
        int r = pcre2_match(re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, md, mc);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) { rc = GRAFT_E_INTERNAL; break; }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t b = ov[0], e = ov[1] < ov[0] ? ov[0] : ov[1]; // (\K in a lookahead can end a match before its start)
        at = e;
        if (e == b) {
            at += e < n ? utf8_len((uint8_t)s[e]) : 1;
            if (skip_empty) { skip_empty = false; continue; }
        } else skip_empty = true;
        if (k + 2 > cap) {
            cap = cap ? 2 * cap : 64;
            size_t *nv = graft__realloc(v, cap * sizeof *v);
            if (!nv) { rc = GRAFT_E_NOMEM; break; }
            v = nv;
        }
        v[k++] = b, v[k++] = e;
    }
    pcre2_match_data_free(md), pcre2_match_context_free(mc);
    if (rc) graft__free(v);
    else *out = v, *n_out = k / 2;
    return rc;
}

// Split one piece by regex matches with a HF SplitDelimiterBehavior, as HF's NormalizedString::split
// does: the text becomes gaps and matches in order (flags flipped by `invert`), folded by the
// behavior, and empty pieces are dropped.
struct seg { size_t b, e; bool hit; };
static int split_piece(const struct step *st, const pcre2_code *re, const char *s, size_t n, struct pieces *out) {
    if (!n) return GRAFT_OK;
    size_t *m, nm;
    int rc = find_all(re, s, n, &m, &nm);
    if (rc) return rc;
    struct seg *v = graft__malloc((4 * nm + 2) * sizeof *v), *w = v + 2 * nm + 1;
    if (!v) { graft__free(m); return GRAFT_E_NOMEM; }
    size_t k = 0, nw = 0, prev = 0;
    for (size_t i = 0; i < nm; i++) {
        if (prev != m[2 * i]) v[k++] = (struct seg){prev, m[2 * i], st->invert};
        v[k++] = (struct seg){m[2 * i], m[2 * i + 1], !st->invert};
        prev = m[2 * i + 1];
    }
    if (prev != n) v[k++] = (struct seg){prev, n, st->invert};
    graft__free(m);
    bool last_hit = false;
    for (size_t r = 0; r < k; r++) { // (MergedWithNext folds from the end: w is then reversed)
        const struct seg x = v[st->behavior == B_NEXT ? k - 1 - r : r];
        bool merge = st->behavior == B_CONTIG ? x.hit == last_hit : (st->behavior == B_PREV || st->behavior == B_NEXT) && x.hit && !last_hit;
        if (merge && nw) {
            if (st->behavior == B_NEXT) w[nw - 1].b = x.b;
            else w[nw - 1].e = x.e;
        } else w[nw++] = (struct seg){x.b, x.e, st->behavior == B_REMOVED && x.hit}; // hit: removed
        last_hit = x.hit;
    }
    bool ok = true;
    for (size_t r = 0; r < nw && ok; r++) {
        const struct seg x = w[st->behavior == B_NEXT ? nw - 1 - r : r];
        if (!x.hit) ok = pieces_push(out, s + x.b, x.e - x.b);
    }
    graft__free(v);
    return ok ? GRAFT_OK : GRAFT_E_NOMEM;
}

// Replace every literal `a` by `b` (or every regex match) in s.
static bool replace_into(const struct step *st, const char *s, size_t n, struct graft__buf *o) {
    if (st->re) {
        size_t *m, nm, pos = 0;
        if (find_all(st->re, s, n, &m, &nm)) return false;
        for (size_t i = 0; i < nm; i++) {
            graft__buf_append(o, s + pos, m[2 * i] - pos);
            graft__buf_append(o, st->b, st->blen);
            pos = m[2 * i + 1];
        }
        graft__buf_append(o, s + pos, n - pos);
        graft__free(m);
        return !o->failed;
    }
    size_t i = 0;
    while (i < n) {
        if (st->alen && i + st->alen <= n && !memcmp(s + i, st->a, st->alen)) {
            graft__buf_append(o, st->b, st->blen);
            i += st->alen;
        } else graft__buf_append(o, s + i++, 1);
    }
    return !o->failed;
}

static bool is_ws(int32_t cp) {
    const utf8proc_property_t *p = utf8proc_get_property(cp);
    return cp == ' ' || (cp >= 9 && cp <= 13) || p->category == UTF8PROC_CATEGORY_ZS || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

// Normalizers turn one string into another.
static int normalize(const struct graft_tokenizer *t, const char *s, size_t n, struct graft__buf *out) {
    struct graft__buf cur, nxt;
    graft__buf_init(&cur, SIZE_MAX / 2);
    graft__buf_append(&cur, s, n);
    for (int i = 0; i < t->n_norm && !cur.failed; i++) {
        const struct step *st = &t->norm[i];
        graft__buf_init(&nxt, SIZE_MAX / 2);
        switch (st->kind) {
        case N_NFC: case N_NFD: case N_NFKC: case N_NFKD: {
            int opt = UTF8PROC_STABLE | (st->kind == N_NFC || st->kind == N_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
                      (st->kind == N_NFKC || st->kind == N_NFKD ? UTF8PROC_COMPAT : 0);
            utf8proc_uint8_t *d = NULL;
            utf8proc_ssize_t r = cur.len ? utf8proc_map((const utf8proc_uint8_t *)cur.data, (utf8proc_ssize_t)cur.len, &d, opt) : 0;
            if (r < 0) nxt.failed = true;
            else graft__buf_append(&nxt, d, (size_t)r);
            free(d);
            break;
        }
        case N_LOWER: {
            size_t j = 0;
            while (j < cur.len) {
                utf8proc_int32_t cp;
                utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)cur.data + j, (utf8proc_ssize_t)(cur.len - j), &cp);
                if (r <= 0) { nxt.failed = true; break; }
                if (cp == 0x130) put_utf8(&nxt, 'i'), cp = 0x307; // Rust's full lowercase mapping: İ → i + U+0307
                put_utf8(&nxt, utf8proc_tolower(cp));
                j += (size_t)r;
            }
            break;
        }
        case N_PREPEND:
            if (cur.len) graft__buf_append(&nxt, st->a, st->alen);
            graft__buf_append(&nxt, cur.data, cur.len);
            break;
        case N_REPLACE: replace_into(st, cur.data, cur.len, &nxt); break;
        case N_STRIP: {
            size_t b = 0, e = cur.len;
            utf8proc_int32_t cp;
            while (st->f1 && b < e) {
                utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)cur.data + b, (utf8proc_ssize_t)(e - b), &cp);
                if (r <= 0 || !is_ws(cp)) break;
                b += (size_t)r;
            }
            while (st->f2 && e > b) {
                size_t k = e - 1;
                while (k > b && ((uint8_t)cur.data[k] & 0xC0) == 0x80) k--;
                utf8proc_iterate((const utf8proc_uint8_t *)cur.data + k, (utf8proc_ssize_t)(e - k), &cp);
                if (!is_ws(cp)) break;
                e = k;
            }
            graft__buf_append(&nxt, cur.data + b, e - b);
            break;
        }
        default: break;
        }
        graft__buf_free(&cur);
        cur = nxt;
    }
    int rc = cur.failed ? GRAFT_E_NOMEM : GRAFT_OK;
    if (!rc) graft__buf_append(out, cur.data, cur.len), rc = out->failed ? GRAFT_E_NOMEM : GRAFT_OK;
    graft__buf_free(&cur);
    return rc;
}

// Pre-tokenizer steps map a list of pieces to a new list. `at_start`: piece 0 begins the input.
static int pre_tokenize(const struct graft_tokenizer *t, struct pieces *p, bool at_start) {
    static const char digits_re[] = "\\p{N}";
    int rc = GRAFT_OK;
    pcre2_code *dre = NULL;
    for (int i = 0; i < t->n_pre && !rc; i++) {
        const struct step *st = &t->pre[i];
        struct pieces q;
        pieces_init(&q);
        for (size_t k = 0; k < p->n && !rc; k++) {
            const char *s = p->s.data + p->off[k];
            size_t n = p->off[k + 1] - p->off[k];
            switch (st->kind) {
            case P_SPLIT: rc = split_piece(st, st->re, s, n, &q); break;
            case P_DIGITS: {
                if (!dre && !(dre = compile_re(digits_re, sizeof digits_re - 1, false, "digits", NULL))) { rc = GRAFT_E_INTERNAL; break; }
                struct step d = {.behavior = st->f1 ? B_ISOLATED : B_CONTIG};
                rc = split_piece(&d, dre, s, n, &q);
                break;
            }
            case P_METASPACE: {
                struct graft__buf b;
                graft__buf_init(&b, SIZE_MAX / 2);
                bool pre = (st->scheme == S_ALWAYS || (st->scheme == S_FIRST && k == 0 && at_start)) &&
                           !(n >= st->alen && !memcmp(s, st->a, st->alen));
                // a leading ' ' becomes the replacement, so test for it too
                if (pre && n && s[0] == ' ') pre = false;
                if (pre) graft__buf_append(&b, st->a, st->alen);
                struct step rep = {.a = " ", .alen = 1, .b = st->a, .blen = st->alen};
                replace_into(&rep, s, n, &b);
                if (b.failed) { rc = GRAFT_E_NOMEM; graft__buf_free(&b); break; }
                if (!st->f1) { if (!pieces_push(&q, b.data, b.len)) rc = GRAFT_E_NOMEM; }
                else { // split before each replacement char (MergedWithNext)
                    size_t from = 0;
                    for (size_t j = 1; j + st->alen <= b.len; j++)
                        if (!memcmp(b.data + j, st->a, st->alen)) {
                            if (!pieces_push(&q, b.data + from, j - from)) rc = GRAFT_E_NOMEM;
                            from = j;
                        }
                    if (!pieces_push(&q, b.data + from, b.len - from)) rc = GRAFT_E_NOMEM;
                }
                graft__buf_free(&b);
                break;
            }
            case P_BYTELEVEL: {
                struct graft__buf b;
                graft__buf_init(&b, SIZE_MAX / 2);
                if (st->f1 && n && s[0] != ' ') graft__buf_append(&b, " ", 1);
                graft__buf_append(&b, s, n);
                struct pieces r;
                pieces_init(&r);
                if (st->f2) rc = split_piece(&(struct step){.behavior = B_ISOLATED}, t->gpt2_re, b.data, b.len, &r);
                else if (!pieces_push(&r, b.data, b.len)) rc = GRAFT_E_NOMEM;
                for (size_t j = 0; j < r.n && !rc; j++) {
                    struct graft__buf m;
                    graft__buf_init(&m, SIZE_MAX / 2);
                    for (size_t x = r.off[j]; x < r.off[j + 1]; x++) graft__buf_puts(&m, t->b2u[(uint8_t)r.s.data[x]]);
                    if (m.failed || !pieces_push(&q, m.data, m.len)) rc = GRAFT_E_NOMEM;
                    graft__buf_free(&m);
                }
                pieces_free(&r);
                if (b.failed) rc = GRAFT_E_NOMEM;
                graft__buf_free(&b);
                break;
            }
            default: break;
            }
        }
        pieces_free(p);
        *p = q;
    }
    pcre2_code_free(dre);
    return rc;
}

struct ids { int32_t *v; size_t n, cap; };
static bool ids_push(struct ids *d, int32_t id) {
    if (d->n == d->cap) {
        size_t nc = d->cap ? 2 * d->cap : 256;
        int32_t *nv = graft__realloc(d->v, nc * sizeof *nv);
        if (!nv) return false;
        d->v = nv, d->cap = nc;
    }
    d->v[d->n++] = id;
    return true;
}

// Heap of candidate merges, ordered by (rank, left position).
struct cand { uint32_t rank; uint32_t pos; int32_t a, b; };
static bool cand_less(const struct cand *x, const struct cand *y) { return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos; }
static void heap_push(struct cand *h, size_t *n, struct cand c) {
    size_t i = (*n)++;
    while (i && cand_less(&c, &h[(i - 1) / 2])) h[i] = h[(i - 1) / 2], i = (i - 1) / 2;
    h[i] = c;
}
static struct cand heap_pop(struct cand *h, size_t *n) {
    struct cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const struct cand *mv = &last;
        if (l < *n && cand_less(&h[l], mv)) m = l, mv = &h[l];
        if (r < *n && cand_less(&h[r], mv)) m = r;
        if (m == i) break;
        h[i] = h[m], i = m;
    }
    if (*n) h[i] = last;
    return top;
}

// BPE over one piece: characters (or their bytes, or unk) become symbols; the lowest-ranked adjacent
// pair is merged until none is left, leftmost first among equal ranks.
static int bpe(const struct graft_tokenizer *t, const char *s, size_t n, struct ids *out) {
    if (!n) return GRAFT_OK;
    if (t->ignore_merges) {
        int32_t id = vocab_find(t, s, n);
        if (id >= 0) return ids_push(out, id) ? GRAFT_OK : GRAFT_E_NOMEM;
    }
    size_t cap = n + 1;
    int32_t *sym = graft__malloc(cap * sizeof *sym);
    uint32_t *nx = graft__malloc(cap * sizeof *nx), *pv = graft__malloc(cap * sizeof *pv);
    struct cand *h = graft__malloc(cap * 2 * sizeof *h);
    int rc = GRAFT_OK;
    if (!sym || !nx || !pv || !h) { rc = GRAFT_E_NOMEM; goto out; }
    size_t k = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n;) {
        size_t cl = utf8_len((uint8_t)s[i]);
        if (cl > n - i) cl = n - i;
        int32_t id = vocab_find(t, s + i, cl);
        if (id >= 0) sym[k++] = id, last_unk = false;
        else {
            bool bytes = t->byte_fallback;
            for (size_t j = 0; j < cl && bytes; j++) bytes = t->byte_tok[(uint8_t)s[i + j]] >= 0;
            if (bytes) {
                for (size_t j = 0; j < cl; j++) sym[k++] = t->byte_tok[(uint8_t)s[i + j]];
                last_unk = false;
            } else if (t->unk >= 0) {
                if (!(t->fuse_unk && last_unk)) sym[k++] = t->unk;
                last_unk = true;
            }
        }
        i += cl;
    }
    if (k + 1 > cap) { rc = GRAFT_E_INTERNAL; goto out; } // byte fallback never makes more symbols than bytes
    for (size_t i = 0; i < k; i++) nx[i] = (uint32_t)(i + 1), pv[i] = (uint32_t)i - 1;
    size_t hn = 0, hcap = cap * 2;
    uint32_t rank;
    int32_t mid;
    for (size_t i = 0; i + 1 < k; i++)
        if (merge_find(t, sym[i], sym[i + 1], &rank, &mid)) heap_push(h, &hn, (struct cand){rank, (uint32_t)i, sym[i], sym[i + 1]});
    while (hn) {
        struct cand c = heap_pop(h, &hn);
        uint32_t i = c.pos, j = nx[i];
        if (sym[i] != c.a || j >= k || sym[j] != c.b) continue; // stale: a neighbour was merged since
        merge_find(t, c.a, c.b, &rank, &mid);
        sym[i] = mid;
        sym[j] = -1; // removed
        nx[i] = nx[j];
        if (nx[j] < k) pv[nx[j]] = i;
        if (hn + 2 > hcap) { rc = GRAFT_E_INTERNAL; break; }
        if (i > 0 && pv[i] < k && merge_find(t, sym[pv[i]], sym[i], &rank, &mid))
            heap_push(h, &hn, (struct cand){rank, pv[i], sym[pv[i]], sym[i]});
        if (nx[i] < k && merge_find(t, sym[i], sym[nx[i]], &rank, &mid))
            heap_push(h, &hn, (struct cand){rank, i, sym[i], sym[nx[i]]});
    }
    for (size_t i = 0; i < k && !rc; i = nx[i])
        if (!ids_push(out, sym[i])) rc = GRAFT_E_NOMEM;
out:
    graft__free(sym), graft__free(nx), graft__free(pv), graft__free(h);
    return rc;
}

// Encode text that holds no added token.
static int encode_plain(const struct graft_tokenizer *t, const char *s, size_t n, bool at_start, struct ids *out) {
    if (!n) return GRAFT_OK;
    struct graft__buf norm;
    graft__buf_init(&norm, SIZE_MAX / 2);
    int rc = normalize(t, s, n, &norm);
    struct pieces p;
    pieces_init(&p);
    if (!rc && !pieces_push(&p, norm.data, norm.len)) rc = GRAFT_E_NOMEM;
    if (!rc) rc = pre_tokenize(t, &p, at_start);
    for (size_t i = 0; i < p.n && !rc; i++) rc = bpe(t, p.s.data + p.off[i], p.off[i + 1] - p.off[i], out);
    pieces_free(&p);
    graft__buf_free(&norm);
    return rc;
}

static bool word_char(const struct graft_tokenizer *t, const char *s, size_t n, size_t at, bool before) {
    // the character just before `at` (before) or at `at`
    size_t i = at;
    if (before) {
        if (!at) return false;
        i = at - 1;
        while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80) i--;
    } else if (at >= n) return false;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int r = md ? pcre2_match(t->word_re, (PCRE2_SPTR)s, n, i, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, NULL) : -1;
    pcre2_match_data_free(md);
    return r > 0;
}

int graft_tokenizer_encode(const struct graft_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, struct graft_err *err) {
    *ids = NULL, *n = 0;
    size_t bad = graft__utf8_check((const uint8_t *)text, len);
    if (bad != len) return graft_err_set(err, GRAFT_E_FORMAT, NULL, NULL, 0, "text is not valid UTF-8 (byte %zu)", bad);
    struct ids out = {0};
    int rc = GRAFT_OK;
    size_t seg = 0, i = 0;
    while (i < len && !rc) {
        // leftmost, then longest added token starting at i (one walk down the trie), as HF's daachorse
        int best = -1;
        for (int32_t at = t->n_added ? t->trie_root[(uint8_t)text[i]] : -1, k = 1; at >= 0; k++) {
            const struct atrie *nd = &t->trie[at];
            if (nd->token >= 0) best = nd->token;
            if (i + (size_t)k >= len) break;
            for (at = nd->child; at >= 0 && t->trie[at].byte != (uint8_t)text[i + (size_t)k]; at = t->trie[at].sibling) {}
        }
        if (best < 0) { i++; continue; }
        const struct added *ad = &t->added[best];
        // a single_word token inside a word is skipped whole: HF neither falls back to a shorter token
        // here nor matches one inside the skipped span (its search goes on after it)
        if (ad->single_word && (word_char(t, text, len, i, true) || word_char(t, text, len, i + ad->len, false))) { i += ad->len; continue; }
        size_t b = i, e = i + ad->len;
        if (ad->lstrip) // (Unicode White_Space, as Rust regex's \s)
            while (b > seg) {
                size_t p = b - 1;
                while (p > seg && ((uint8_t)text[p] & 0xC0) == 0x80) p--;
                utf8proc_int32_t cp;
                if (utf8proc_iterate((const utf8proc_uint8_t *)text + p, (utf8proc_ssize_t)(b - p), &cp) <= 0 || !is_ws(cp)) break;
                b = p;
            }
        if (ad->rstrip)
            for (utf8proc_int32_t cp; e < len;) {
                utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)text + e, (utf8proc_ssize_t)(len - e), &cp);
                if (r <= 0 || !is_ws(cp)) break;
                e += (size_t)r;
            }
        rc = encode_plain(t, text + seg, b - seg, seg == 0, &out);
        if (!rc && !ids_push(&out, ad->id)) rc = GRAFT_E_NOMEM;
        seg = i = e;
    }
    if (!rc) rc = encode_plain(t, text + seg, len - seg, seg == 0, &out);
    if (rc) {
        graft__free(out.v);
        return graft_err_set(err, rc, t->name, NULL, 0, rc == GRAFT_E_NOMEM ? "out of memory while tokenizing" : "regex matching failed while tokenizing");
    }
    *ids = out.v, *n = out.n;
    if (!out.v && !(*ids = graft__malloc(1))) return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
    return GRAFT_OK;
}

// ---- decoding ----------------------------------------------------------------------------------------

static int decode_step(const struct graft_tokenizer *t, const struct step *st, struct pieces *p) {
    struct pieces q;
    pieces_init(&q);
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    bool ok = true;
    for (size_t k = 0; k < p->n && ok; k++) {
        const char *s = p->s.data + p->off[k];
        size_t n = p->off[k + 1] - p->off[k];
        b.len = 0;
        switch (st->kind) {
        case D_BYTELEVEL: // each alphabet char back to its byte; the whole list fuses into one string
            for (size_t i = 0; i < n;) {
                utf8proc_int32_t cp;
                utf8proc_ssize_t r = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
                if (r <= 0) r = 1, cp = -1;
                if (cp >= 0 && cp < 324 && t->u2b[cp] >= 0) { uint8_t c = (uint8_t)t->u2b[cp]; graft__buf_append(&b, &c, 1); }
                else graft__buf_append(&b, s + i, (size_t)r);
                i += (size_t)r;
            }
            ok = pieces_extend(&q, b.data, b.len);
            break;
        case D_FUSE: ok = pieces_extend(&q, s, n); break;
        case D_REPLACE: replace_into(st, s, n, &b), ok = !b.failed && pieces_push(&q, b.data, b.len); break;
        case D_METASPACE: {
            // HF: in the first token every replacement goes (unless prepend_scheme is never), elsewhere each becomes ' '
            bool first = k == 0 && st->scheme != S_NEVER;
            struct step rep = {.a = st->a, .alen = st->alen, .b = first ? "" : " ", .blen = first ? 0 : 1};
            replace_into(&rep, s, n, &b);
            ok = !b.failed && pieces_push(&q, b.data, b.len);
            break;
        }
        case D_STRIP: {
            size_t from = 0, to = n;
            for (int c = 0; c < st->start && to - from >= st->alen && !memcmp(s + from, st->a, st->alen); c++) from += st->alen;
            for (int c = 0; c < st->stop && to - from >= st->alen && !memcmp(s + to - st->alen, st->a, st->alen); c++) to -= st->alen;
            ok = pieces_push(&q, s + from, to - from);
            break;
        }
        case D_BYTEFALLBACK: { // a run of <0xXX> tokens becomes its bytes if they are UTF-8, else U+FFFD each
            size_t e = k;
            unsigned v;
            while (e < p->n && p->off[e + 1] - p->off[e] == 6 && !memcmp(p->s.data + p->off[e], "<0x", 3) &&
                   p->s.data[p->off[e] + 5] == '>' && sscanf(p->s.data + p->off[e] + 3, "%2x", &v) == 1)
                e++;
            if (e == k) { ok = pieces_push(&q, s, n); break; }
            for (size_t j = k; j < e; j++) {
                sscanf(p->s.data + p->off[j] + 3, "%2x", &v);
                uint8_t c = (uint8_t)v;
                graft__buf_append(&b, &c, 1);
            }
            if (!b.failed && graft__utf8_check((const uint8_t *)b.data, b.len) == b.len) ok = pieces_push(&q, b.data, b.len);
            else for (size_t j = k; j < e; j++) ok = ok && pieces_push(&q, "\xef\xbf\xbd", 3);
            k = e - 1;
            break;
        }
        default: ok = pieces_push(&q, s, n); break;
        }
    }
    ok = ok && !b.failed && !q.s.failed;
    graft__buf_free(&b);
    pieces_free(p);
    *p = q;
    return ok ? GRAFT_OK : GRAFT_E_NOMEM;
}

int graft_tokenizer_decode(const struct graft_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *out_len, struct graft_err *err) {
    *out = NULL;
    struct pieces p;
    pieces_init(&p);
    int rc = GRAFT_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !t->str[ids[i]]) {
            pieces_free(&p);
            return graft_err_set(err, GRAFT_E_FORMAT, t->name, NULL, 0, "token id %ld is not in the vocabulary", (long)ids[i]);
        }
        // an empty token string still occupies its place (pieces_push skips empties)
        if (!pieces_push(&p, t->str[ids[i]], t->slen[ids[i]])) rc = GRAFT_E_NOMEM;
    }
    for (int i = 0; i < t->n_dec && !rc; i++) rc = decode_step(t, &t->dec[i], &p);
    struct graft__buf o;
    graft__buf_init(&o, SIZE_MAX / 2);
    if (!rc) graft__buf_append(&o, p.n ? p.s.data + p.off[0] : "", p.n ? p.off[p.n] - p.off[0] : 0), graft__buf_append(&o, "", 1);
    pieces_free(&p);
    if (rc || o.failed) {
        graft__buf_free(&o);
        return graft_err_set(err, GRAFT_E_NOMEM, t->name, NULL, 0, "out of memory");
    }
    *out = o.data, *out_len = o.len - 1;
    return GRAFT_OK;
}
