// graft inspect: what a model holds — tensors, sizes, metadata, config summary; text or JSON.
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include "cli.h"
#include "graft/gguf.h"
#include "../io/io-impl.h"

static const char help[] =
    "Usage: graft inspect PATH [--json] [--stats]\n"
    "\n"
    "List the tensors of a .safetensors file, a model folder or a GGUF file: name, dtype, shape, shard file and the\n"
    "byte offset of its data in that file; then the parameter count, data bytes, __metadata__ and a\n"
    "summary of config.json. The model is fully validated first (as `graft verify`).\n"
    "\n"
    "Options:\n"
    "  --json      print one JSON object instead:\n"
    "              {\"tensors\":[{\"name\":…,\"dtype\":\"BF16\",\"shape\":[…],\"file\":…,\"offset\":…}],\n"
    "               \"n_params\":…, \"n_bytes\":…, \"metadata\":{…}, \"files\":[…], \"config\":{…}|null}\n"
    "              (offset: absolute byte offset of the tensor data inside its file)\n"
    "  --stats     also read every floating value: per tensor the finite min and max and the counts of\n"
    "              NaN, Inf and subnormal values (JSON: \"stats\":{\"min\",\"max\",\"nan\",\"inf\",\"subnormal\"})\n"
    "  -h, --help  this text\n";

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void shape_text(char *buf, size_t cap, const struct graft_tensor_info *t) {
    size_t pos = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->n_dims && pos < cap; d++)
        pos += (size_t)snprintf(buf + pos, cap - pos, d ? ", %llu" : "%llu", (unsigned long long)t->ne[d]);
    if (pos < cap) snprintf(buf + pos, cap - pos, "]");
}

static void print_name(const struct graft_tensor_info *t) {
    for (size_t i = 0; i < t->name_len; i++) {
        unsigned char c = (unsigned char)t->name[i];
        if (c < 0x20 || c == 0x7f) printf("\\x%02x", c); else putchar(c);
    }
}

static json_t *stats_json(const struct graft_value_stats *v) {
    json_t *o = json_object();
    json_object_set_new(o, "min", json_real(v->min));
    json_object_set_new(o, "max", json_real(v->max));
    json_object_set_new(o, "nan", json_integer((json_int_t)v->nan));
    json_object_set_new(o, "inf", json_integer((json_int_t)v->inf));
    json_object_set_new(o, "subnormal", json_integer((json_int_t)v->subnormal));
    return o;
}

static int print_json(const struct graft_model *m, bool stats) {
    json_t *root = json_object(), *tensors = json_array(), *meta = json_object(), *files = json_array();
    for (size_t i = 0; i < graft_model_n_tensors(m); i++) {
        const struct graft_model_tensor *mt = graft_model_tensor(m, i);
        const struct graft_tensor_info *t = mt->info;
        const struct graft_st *st = graft_model_shard(m, mt->shard);
        json_t *shape = json_array();
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer((json_int_t)t->ne[d]));
        json_t *o = json_object();
        json_object_set_new(o, "name", json_stringn(t->name, t->name_len));
        json_object_set_new(o, "dtype", json_string(graft_dtype_traits(t->dtype)->name));
        json_object_set_new(o, "shape", shape);
        json_object_set_new(o, "file", json_string(base_name(graft_st_path(st))));
        json_object_set_new(o, "offset", json_integer((json_int_t)(graft_st_data_start(st) + t->begin)));
        struct graft_value_stats v;
        if (stats && cli_tensor_stats(m, i, &v)) json_object_set_new(o, "stats", stats_json(&v));
        json_array_append_new(tensors, o);
    }
    for (int s = 0; s < graft_model_n_shards(m); s++) {
        const struct graft_st *st = graft_model_shard(m, s);
        json_array_append_new(files, json_string(base_name(graft_st_path(st))));
        for (size_t k = 0; k < graft_st_n_meta(st); k++) {
            const char *key, *val;
            graft_st_meta(st, k, &key, &val);
            if (!json_object_get(meta, key)) json_object_set_new(meta, key, json_string(val));
        }
    }
    json_object_set_new(root, "tensors", tensors);
    json_object_set_new(root, "n_params", json_integer((json_int_t)graft_model_n_params(m)));
    json_object_set_new(root, "n_bytes", json_integer((json_int_t)graft_model_n_bytes(m)));
    json_object_set_new(root, "metadata", meta);
    json_object_set_new(root, "files", files);
    const char *cfg = graft_model_config_json(m);
    json_object_set_new(root, "config", cfg ? json_loads(cfg, 0, NULL) : json_null());
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    graft__json_dump_pretty(&b, root);
    json_decref(root);
    if (b.failed) {
        graft__buf_free(&b);
        fputs("graft: error: out of memory\n", stderr);
        return GRAFT_EXIT_RUN;
    }
    fwrite(b.data, 1, b.len, stdout);
    graft__buf_free(&b);
    return GRAFT_EXIT_OK;
}

static void print_config_summary(const char *cfg) {
    json_t *c = json_loads(cfg, 0, NULL);
    if (!c) return;
    json_t *arch = json_object_get(c, "architectures");
    printf("config: model_type %s", json_string_value(json_object_get(c, "model_type")) ?: "?");
    if (json_is_array(arch) && json_array_size(arch)) printf(", %s", json_string_value(json_array_get(arch, 0)) ?: "?");
    static const char *keys[] = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                 "num_key_value_heads", "vocab_size"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(c, keys[i]);
        if (json_is_integer(v)) printf(", %s %lld", keys[i], (long long)json_integer_value(v));
    }
    const char *dt = json_string_value(json_object_get(c, "torch_dtype"));
    if (!dt) dt = json_string_value(json_object_get(c, "dtype"));
    if (dt) printf(", torch_dtype %s", dt);
    json_t *tie = json_object_get(c, "tie_word_embeddings");
    if (json_is_boolean(tie)) printf(", tie_word_embeddings %s", json_is_true(tie) ? "true" : "false");
    printf("\n");
    json_decref(c);
}

int cmd_inspect(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"stats", no_argument, 0, 's'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bool as_json = false, stats = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') as_json = true;
        else if (c == 's') stats = true;
        else if (c == 'h') { fputs(help, stdout); return GRAFT_EXIT_OK; }
        else return cli_usage("inspect", "unknown option");
    }
    if (argc - optind != 1) return cli_usage("inspect", "expected one PATH");
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_gguf_sniff(argv[optind])) {
        if (stats) return cli_usage("inspect", "--stats reads safetensors models (convert the GGUF file first)");
        return cli_gguf_inspect(argv[optind], as_json);
    }
    struct graft_model *m;
    if (graft_model_open(argv[optind], &m, &err)) return cli_fail(&err);
    int rc = GRAFT_EXIT_OK;
    if (as_json) {
        rc = print_json(m, stats);
    } else {
        printf("model: %s (%s, %d file%s%s%s)\n", graft_model_path(m), graft_model_is_dir(m) ? "folder" : "file",
               graft_model_n_shards(m), graft_model_n_shards(m) == 1 ? "" : "s",
               graft_model_index_path(m) ? ", index " : "", graft_model_index_path(m) ? base_name(graft_model_index_path(m)) : "");
        if (graft_model_config_json(m)) print_config_summary(graft_model_config_json(m));
        const struct graft_st *st0 = graft_model_shard(m, 0);
        printf("metadata:");
        for (size_t k = 0; k < graft_st_n_meta(st0); k++) {
            const char *key, *val;
            graft_st_meta(st0, k, &key, &val);
            printf(" %s=%s", key, val);
        }
        printf("\n%-8s %-16s %-34s %s\n", "dtype", "shape", "file", "offset  name");
        for (size_t i = 0; i < graft_model_n_tensors(m); i++) {
            const struct graft_model_tensor *mt = graft_model_tensor(m, i);
            const struct graft_st *st = graft_model_shard(m, mt->shard);
            char sh[128];
            shape_text(sh, sizeof sh, mt->info);
            printf("%-8s %-16s %-34s %llu  ", graft_dtype_traits(mt->info->dtype)->name, sh, base_name(graft_st_path(st)),
                   (unsigned long long)(graft_st_data_start(st) + mt->info->begin));
            print_name(mt->info);
            struct graft_value_stats v;
            if (stats && cli_tensor_stats(m, i, &v))
                printf("  min %.6g max %.6g nan %llu inf %llu subnormal %llu", v.min, v.max, (unsigned long long)v.nan, (unsigned long long)v.inf,
                       (unsigned long long)v.subnormal);
            putchar('\n');
        }
        printf("%zu tensors, %llu parameters, %llu bytes of tensor data\n", graft_model_n_tensors(m),
               (unsigned long long)graft_model_n_params(m), (unsigned long long)graft_model_n_bytes(m));
    }
    graft_model_close(m);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fputs("graft: error: cannot write to standard output\n", stderr);
        return GRAFT_EXIT_RUN;
    }
    return rc;
}
