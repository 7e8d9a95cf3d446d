// `graft inspect` and `graft verify` on GGUF files.
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "graft/gguf.h"

// One value as text (arrays: their type and length, and the first few elements).
static void value_text(const struct graft_gguf_kv *kv, char *buf, size_t cap) {
    const uint8_t *p = kv->value;
    uint32_t t = kv->type == GRAFT_GGUF_ARRAY ? kv->arr_type : kv->type;
    size_t pos = 0;
    if (kv->type == GRAFT_GGUF_ARRAY) pos += (size_t)snprintf(buf, cap, "[%s × %llu]", graft_gguf_vtype_name(t), (unsigned long long)kv->n);
    uint64_t show = kv->type == GRAFT_GGUF_ARRAY ? (kv->n < 4 ? kv->n : 4) : 1;
    for (uint64_t i = 0; i < show && pos < cap; i++) {
        const char *sep = kv->type == GRAFT_GGUF_ARRAY ? (i ? ", " : " ") : "";
        uint64_t u = 0;
        switch (t) {
        case GRAFT_GGUF_STRING: {
            uint64_t n = 0;
            for (int b = 0; b < 8; b++) n |= (uint64_t)p[b] << (8 * b);
            pos += (size_t)snprintf(buf + pos, cap - pos, "%s\"%.*s\"", sep, (int)(n > 60 ? 60 : n), (const char *)p + 8);
            p += 8 + n;
            continue;
        }
        case GRAFT_GGUF_F32: { float f; memcpy(&f, p, 4); pos += (size_t)snprintf(buf + pos, cap - pos, "%s%g", sep, f); p += 4; continue; }
        case GRAFT_GGUF_F64: { double f; memcpy(&f, p, 8); pos += (size_t)snprintf(buf + pos, cap - pos, "%s%g", sep, f); p += 8; continue; }
        case GRAFT_GGUF_BOOL: pos += (size_t)snprintf(buf + pos, cap - pos, "%s%s", sep, *p ? "true" : "false"), p += 1; continue;
        case GRAFT_GGUF_I8: pos += (size_t)snprintf(buf + pos, cap - pos, "%s%d", sep, (int8_t)*p), p += 1; continue;
        case GRAFT_GGUF_I16: pos += (size_t)snprintf(buf + pos, cap - pos, "%s%d", sep, (int16_t)(p[0] | p[1] << 8)), p += 2; continue;
        case GRAFT_GGUF_I32: { int32_t v; memcpy(&v, p, 4); pos += (size_t)snprintf(buf + pos, cap - pos, "%s%d", sep, v); p += 4; continue; }
        case GRAFT_GGUF_I64: { int64_t v; memcpy(&v, p, 8); pos += (size_t)snprintf(buf + pos, cap - pos, "%s%lld", sep, (long long)v); p += 8; continue; }
        default: {
            int w = t == GRAFT_GGUF_U8 ? 1 : t == GRAFT_GGUF_U16 ? 2 : t == GRAFT_GGUF_U32 ? 4 : 8;
            for (int b = 0; b < w; b++) u |= (uint64_t)p[b] << (8 * b);
            pos += (size_t)snprintf(buf + pos, cap - pos, "%s%llu", sep, (unsigned long long)u);
            p += w;
        }
        }
    }
    if (kv->type == GRAFT_GGUF_ARRAY && kv->n > show && pos < cap) snprintf(buf + pos, cap - pos, ", …");
}

// Open (fully validated) and total the elements and bytes of every tensor. Returns the exit code
// (the error printed) when the file is refused.
static int open_totals(const char *path, struct graft_gguf **g, uint64_t *params, uint64_t *bytes) {
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_gguf_open(path, g, &err)) return cli_fail(&err);
    *params = *bytes = 0;
    for (size_t i = 0; i < graft_gguf_n_tensors(*g); i++) *params += graft_gguf_tensor(*g, i)->n_elem, *bytes += graft_gguf_tensor(*g, i)->n_bytes;
    return GRAFT_EXIT_OK;
}

int cli_gguf_inspect(const char *path, bool as_json) {
    uint64_t params = 0, bytes = 0;
    struct graft_gguf *g;
    int ex = open_totals(path, &g, &params, &bytes);
    if (ex) return ex;
    char v[512];
    if (as_json) {
        json_t *root = json_object(), *kvs = json_object(), *ts = json_array();
        for (size_t i = 0; i < graft_gguf_n_kv(g); i++) {
            const struct graft_gguf_kv *kv = graft_gguf_kv(g, i);
            value_text(kv, v, sizeof v);
            json_object_set_new(kvs, kv->key, json_string(v));
        }
        for (size_t i = 0; i < graft_gguf_n_tensors(g); i++) {
            const struct graft_gguf_tensor *t = graft_gguf_tensor(g, i);
            json_t *o = json_object(), *ne = json_array();
            for (uint32_t d = 0; d < t->n_dims; d++) json_array_append_new(ne, json_integer((json_int_t)t->ne[d]));
            json_object_set_new(o, "name", json_string(t->name));
            json_object_set_new(o, "type", json_string(graft_ggml_type_name(t->type)));
            json_object_set_new(o, "ne", ne);
            json_object_set_new(o, "offset", json_integer((json_int_t)(graft_gguf_data_offset(g) + t->offset)));
            json_object_set_new(o, "bytes", json_integer((json_int_t)t->n_bytes));
            json_array_append_new(ts, o);
        }
        json_object_set_new(root, "format", json_string("gguf"));
        json_object_set_new(root, "version", json_integer(graft_gguf_version(g)));
        json_object_set_new(root, "alignment", json_integer(graft_gguf_alignment(g)));
        json_object_set_new(root, "metadata", kvs);
        json_object_set_new(root, "tensors", ts);
        json_object_set_new(root, "n_params", json_integer((json_int_t)params));
        json_object_set_new(root, "n_bytes", json_integer((json_int_t)bytes));
        char *s = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (s) puts(s);
        free(s);
        json_decref(root);
    } else {
        printf("model: %s (GGUF v%u, alignment %u, %zu key/values, %zu tensors)\n", path, graft_gguf_version(g), graft_gguf_alignment(g),
               graft_gguf_n_kv(g), graft_gguf_n_tensors(g));
        for (size_t i = 0; i < graft_gguf_n_kv(g); i++) {
            const struct graft_gguf_kv *kv = graft_gguf_kv(g, i);
            value_text(kv, v, sizeof v);
            printf("  %-40s %s\n", kv->key, v);
        }
        printf("%-8s %-24s %12s  %s\n", "type", "ne (innermost first)", "offset", "name");
        for (size_t i = 0; i < graft_gguf_n_tensors(g); i++) {
            const struct graft_gguf_tensor *t = graft_gguf_tensor(g, i);
            char ne[96];
            size_t pos = (size_t)snprintf(ne, sizeof ne, "[");
            for (uint32_t d = 0; d < t->n_dims && pos < sizeof ne; d++) pos += (size_t)snprintf(ne + pos, sizeof ne - pos, d ? ", %llu" : "%llu", (unsigned long long)t->ne[d]);
            if (pos < sizeof ne) snprintf(ne + pos, sizeof ne - pos, "]");
            printf("%-8s %-24s %12llu  %s\n", graft_ggml_type_name(t->type), ne, (unsigned long long)(graft_gguf_data_offset(g) + t->offset), t->name);
        }
        printf("parameters: %llu, tensor bytes: %llu\n", (unsigned long long)params, (unsigned long long)bytes);
    }
    graft_gguf_close(g);
    return GRAFT_EXIT_OK;
}

int cli_gguf_verify(const char *path) {
    uint64_t params = 0, bytes = 0;
    struct graft_gguf *g;
    int ex = open_totals(path, &g, &params, &bytes);
    if (ex) return ex;
    printf("ok: %s: GGUF v%u, %zu tensors, %zu key/values, %llu parameters, %llu bytes\n", path, graft_gguf_version(g), graft_gguf_n_tensors(g),
           graft_gguf_n_kv(g), (unsigned long long)params, (unsigned long long)bytes);
    graft_gguf_close(g);
    return GRAFT_EXIT_OK;
}
