// Internal helpers of the I/O modules.
#ifndef GRAFT_IO_IMPL_H
#define GRAFT_IO_IMPL_H
#include <jansson.h>
#include <string.h>
#include "graft/status.h"
#include "../core/impl.h"

// Read a whole regular file of at most `max` bytes (NUL-terminated copy; caller frees with graft__free).
int graft__read_small_file(const char *path, size_t max, char **out, size_t *out_len, struct graft_err *err);
// Load a JSON object file: UTF-8, no duplicate keys, ≤ max bytes. Caller json_decref()s.
int graft__load_json_file(const char *path, size_t max, json_t **out, struct graft_err *err);
// A member of object o as an integer / a number, or dflt when absent or of another type.
static inline long graft__json_int(const json_t *o, const char *k, long dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (long)json_integer_value(v) : dflt;
}
static inline double graft__json_num(const json_t *o, const char *k, double dflt) {
    json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : dflt;
}
// llama3 rope_scaling's factor for a frequency of wavelength wl (transformers' formula, as llama.cpp's
// converter writes it into rope_freqs): 1 above the high-frequency band, `factor` below the low one, a
// smooth blend between.
static inline double graft__llama3_rope_factor(double factor, double lo, double hi, double old, double wl) {
    double s = (old / wl - lo) / (hi - lo);
    return wl < old / hi ? 1.0 : wl > old / lo ? factor : 1.0 / ((1 - s) / factor + s);
}
// transformers ≥ 5 keeps RoPE in rope_parameters (Gemma 3: one set per layer type): copy it into config
// c's older keys (rope_theta, rope_scaling, rope_local_base_freq) where those are absent.
static inline void graft__rope_parameters_compat(json_t *c) {
    json_t *rp = json_object_get(c, "rope_parameters");
    if (!json_is_object(rp)) return;
    json_t *full = json_object_get(rp, "full_attention"), *local = json_object_get(rp, "sliding_attention");
    json_t *g = json_is_object(full) ? full : rp;
    if (json_is_number(json_object_get(g, "rope_theta")) && !json_object_get(c, "rope_theta")) json_object_set(c, "rope_theta", json_object_get(g, "rope_theta"));
    const char *rt = json_string_value(json_object_get(g, "rope_type"));
    if (rt && strcmp(rt, "default") && !json_is_object(json_object_get(c, "rope_scaling"))) json_object_set(c, "rope_scaling", g);
    if (json_is_object(local) && json_is_number(json_object_get(local, "rope_theta")) && !json_object_get(c, "rope_local_base_freq"))
        json_object_set(c, "rope_local_base_freq", json_object_get(local, "rope_theta"));
    static const char *const keys[] = {"partial_rotary_factor", "original_max_position_embeddings"};
    for (size_t k = 0; k < 2; k++)
        if (json_is_number(json_object_get(g, keys[k])) && !json_object_get(c, keys[k])) json_object_set(c, keys[k], json_object_get(g, keys[k]));
}
// Append `j` as Python's json.dumps(j, indent=2) + "\n" would write it (key order kept).
void graft__json_dump_pretty(struct graft__buf *b, const json_t *j);
// Shortest round-trip decimal form of a double, always with '.' or an exponent.
void graft__fmt_double(char *out, size_t cap, double v);

struct graft_writer;
// Add config.json from `config_json` (compact JSON text) with "torch_dtype" (and "dtype" when present)
// set to `torch_dtype` unless NULL, and layer counts rewritten (see graft__layer_count).
// `vocab_size` (when ≥ 0) replaces vocab_size (or text_config.vocab_size); `untie` sets a true
// tie_word_embeddings (also text_config's) to false: the output holds its own lm_head.
// A layer count to write into config.json: every key of `keys` (NULL-terminated; "a.b" reaches into a
// nested object) that holds an integer gets `value`.
struct graft__layer_count {
    const char *const *keys;
    int                value;
};
int graft__writer_add_config(struct graft_writer *w, const char *config_json, const char *torch_dtype,
                             const struct graft__layer_count *counts, size_t n_counts, long vocab_size, bool untie, struct graft_err *err);

// A model's vocabulary from its tokenizer.json (src/io/vocab.c).
struct graft_model;
struct graft__vocab {
    char    *path;         // the tokenizer.json read
    json_t  *root;         // its JSON
    json_t  *ids;          // token → id: regular vocabulary and added tokens
    json_t  *added;        // token → its added_tokens entry
    uint64_t n_ids;        // largest id + 1
    long     config_vocab; // config.json vocab_size (or text_config.vocab_size), -1 if absent
};
int  graft__vocab_load(const struct graft_model *m, struct graft__vocab **out, struct graft_err *err);
void graft__vocab_free(struct graft__vocab *v);
long graft__config_vocab_size(const char *config_json);
// Whether model m's tokenizer.json ids (and with `config`, a top-level config.json vocab_size) fit
// `rows` embedding rows (rows < 0: m's own input embedding's). GRAFT_OK when they do or there is
// nothing to compare; else GRAFT_E_FORMAT with the reason in err (a model that fails at such a token).
int  graft__vocab_fits(const struct graft_model *m, long rows, bool config, struct graft_err *err);

// Copy the tokenizer and generation files of model m, except the names in `skip` (NULL-terminated).
int graft__writer_copy_tokenizer_except(struct graft_writer *w, const struct graft_model *m, const char *const *skip,
                                        struct graft_err *err);

// Checked I/O with fault injection (GRAFT_FAULT_IO in test builds). Return 0 or -1 with errno set.
int graft__pwrite_full(int fd, const void *buf, size_t n, uint64_t off);
int graft__fsync(int fd);
int graft__rename(const char *from, const char *to);
// Remove a file or a folder tree (best effort; links are removed, never followed).
void graft__rm_tree(const char *path);
// "<host>@<pid>" of this process (host: gethostname, characters outside [A-Za-z0-9.-] as '_'): the
// owner tag of every temporary's name, so that a folder shared between hosts (NFS) never has another
// host's live temporary taken for a dead one of this host. `buf` holds GRAFT__OWNER_TAG_MAX bytes.
#define GRAFT__OWNER_TAG_MAX 96
void graft__owner_tag(char *buf);
// Remove entries of `dir` named PREFIX<host>@<pid>… (or PREFIX<pid>… of older versions) of this host
// whose process no longer exists (left by killed runs).
void graft__remove_stale(const char *dir, const char *prefix);
// "<dir>/.<name>.graft-tmp-<owner tag><suffix>" for target "<dir>/<name>" (trailing '/' ignored; without a
// folder part, relative to the working folder): the name of every temporary graft keeps beside an
// output, so that graft__remove_stale_beside (or the folder writer) of a later run removes it if this
// process is killed.
char *graft__temp_beside(const char *target, const char *suffix);
// Remove the temporaries of killed runs beside target (".<name>.graft-tmp-<host>@<dead pid>…").
void graft__remove_stale_beside(const char *target);
// The folder `target` is in ("." when it has no folder part).
char *graft__parent_of(const char *target);
// Inputs are read-only: an output (which need not exist yet) must not be one of `protect`, contain
// one, or lie inside an input folder (a file of it replaced, or a folder left in it). GRAFT_E_USAGE.
int graft__output_check(const char *target, const char *const *protect, size_t n, struct graft_err *err);
// fsync a folder by path.
int graft__fsync_dir(const char *path);
// Refuse early (GRAFT_E_IO, exit 1, naming `what` and both sizes) when the file system holding `path`
// (a file or folder that exists) has fewer than `need` bytes free for this user. Test builds take the
// free byte count from GRAFT_FAULT_FREE_BYTES when it is set.
// The message names `target` (the output as the user gave it).
int graft__check_space(const char *path, const char *target, uint64_t need, const char *what, struct graft_err *err);

// An open tensor file: safetensors, or a PyTorch zip checkpoint read by torchbin.c.
#include "graft/safetensors.h"
struct graft_st {
    char                     *path;
    int                       fd;
    const uint8_t            *map;      // whole file (or caller's buffer)
    size_t                    map_len;
    bool                      owns_map;
    uint64_t                  header_len, file_size, data_start;
    struct graft_tensor_info *tensors;  // sorted by offset
    bool                      torch;    // a PyTorch zip checkpoint (torchbin.c): data_start 0, offsets in the file
    size_t                    n;
    char                     *names;    // arena holding every name, NUL-terminated
    uint32_t                 *slots;    // open-addressing hash: tensor index + 1, 0 = empty
    size_t                    n_slots;  // power of two
    uint64_t                  hkey;     // the name table's hash key (graft__name_hash)
    char                    **meta;     // key0, value0, key1, value1, …
    size_t                    n_meta;
};

// PyTorch checkpoints (torchbin.c): the zip magic (and not a safetensors header); the pre-1.6 format;
// fill st's tensor table from its mapped file (CRC-32 checks on `threads` threads).
bool graft__torchbin_sniff(const uint8_t *p, size_t n);
bool graft__torchbin_legacy(const uint8_t *p, size_t n);
int  graft__torchbin_parse(struct graft_st *st, const char *label, int threads, struct graft_err *err);
#endif
