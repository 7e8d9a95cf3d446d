// Evolve genomes (include/graft/genome.h): find every {search: [lo, hi], groups: G, init: x} and
// {choice: [a, b, …], init: a} mapping in the YAML, remember its byte span, and render points by
// splicing values (or the chosen item's text) into the text.
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <yaml.h>
#include "graft/genome.h"
#include "../core/impl.h"
#include "../io/io-impl.h"

// first: its first coordinate; init: `groups` starting values (NAN: the default); a choice has n_items
// item spans [item[2i], item[2i+1]) in the text and one coordinate
struct range { size_t begin, end; double lo, hi; int groups, line, first, n_items; double *init; size_t *item; bool weight; };

// The data-flow space (evolutionary model merge, Akiba et al. 2024): the layers of every model laid
// out in order, the whole repeated `repeats` times, T slots; coordinates 0…T−1 include a slot (≥ ½),
// T…2T−1 (with scale) its layer's input scale.
struct dataflow {
    size_t begin, end;  // the `dataflow:` entry's span, replaced by the passthrough config
    int    n_models, repeats, slots, line;
    char **model;       // names as written
    int   *layers;      // each model's layer count (0: not known yet)
    bool   scale;
    double lo, hi;      // the scales' range
};

struct graft_genome {
    char         *text;
    size_t        len;
    struct range *r;
    int           n, dim;
    int           n_models; // models merged into the base (for the equal-weight start), 0 if unknown
    struct dataflow *df;    // a data-flow genome, or NULL
};

static bool number(yaml_node_t *n, double *v) {
    if (!n || n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    char buf[64];
    size_t l = n->data.scalar.length;
    if (l == 0 || l >= sizeof buf) return false;
    memcpy(buf, n->data.scalar.value, l), buf[l] = 0;
    char *end;
    *v = strtod(buf, &end);
    return *end == 0 && isfinite(*v);
}

static bool key_is(yaml_node_t *k, const char *s) {
    return k && k->type == YAML_SCALAR_NODE && k->data.scalar.length == strlen(s) && !memcmp(k->data.scalar.value, s, strlen(s));
}

// libyaml's marks count characters (a BOM not counted); the text is spliced by bytes. at[c] = the byte
// offset of character c.
static size_t *char_offsets(const char *text, size_t len, size_t *n_chars) {
    size_t *at = graft__malloc((len + 2) * sizeof *at), c = 0, b = 0;
    if (!at) return NULL;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) b = 3;
    for (; b < len; c++) {
        at[c] = b;
        unsigned char u = (unsigned char)text[b];
        size_t w = u < 0x80 ? 1 : (u >> 5) == 6 ? 2 : (u >> 4) == 14 ? 3 : (u >> 3) == 30 ? 4 : 1;
        b += w <= len - b ? w : len - b;
    }
    at[c] = b, at[c + 1] = b, *n_chars = c;
    return at;
}

// Where a node's text ends: a block collection's end mark runs on to the next token, so descend to its
// last scalar (or flow collection).
static size_t node_end(yaml_document_t *d, yaml_node_t *n) {
    for (int depth = 0; n && depth < 64; depth++) {
        if (n->type == YAML_SEQUENCE_NODE && n->data.sequence.style == YAML_BLOCK_SEQUENCE_STYLE && n->data.sequence.items.top > n->data.sequence.items.start)
            n = yaml_document_get_node(d, n->data.sequence.items.top[-1]);
        else if (n->type == YAML_MAPPING_NODE && n->data.mapping.style == YAML_BLOCK_MAPPING_STYLE && n->data.mapping.pairs.top > n->data.mapping.pairs.start)
            n = yaml_document_get_node(d, n->data.mapping.pairs.top[-1].value);
        else return n->end_mark.index;
    }
    return n ? n->end_mark.index : 0;
}

void graft_genome_free(struct graft_genome *g) {
    if (!g) return;
    for (int i = 0; g->r && i < g->n; i++) graft__free(g->r[i].init), graft__free(g->r[i].item);
    if (g->df) {
        for (int i = 0; g->df->model && i < g->df->n_models; i++) graft__free(g->df->model[i]);
        graft__free(g->df->model), graft__free(g->df->layers), graft__free(g->df);
    }
    graft__free(g->text), graft__free(g->r), graft__free(g);
}

// `dataflow: {models: [A, B], repeats: 2, scale: true, scale_range: [0.5, 2], layers: [32, 32]}`
static int parse_dataflow(struct graft_genome *g, yaml_document_t *d, yaml_node_t *key, yaml_node_t *v, const char *label, struct graft_err *err) {
    int line = (int)key->start_mark.line + 1;
    struct dataflow *df = g->df = graft__calloc(1, sizeof *df);
    if (!df) return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    df->line = line, df->repeats = 2, df->scale = true, df->lo = 0.5, df->hi = 2;
    if (!v || v->type != YAML_MAPPING_NODE) return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: dataflow expects a mapping (models, repeats, scale)", line);
    yaml_node_t *models = NULL, *layers = NULL;
    for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top; q++) {
        yaml_node_t *k = yaml_document_get_node(d, q->key), *x = yaml_document_get_node(d, q->value);
        double n;
        if (key_is(k, "models")) models = x;
        else if (key_is(k, "layers")) layers = x;
        else if (key_is(k, "repeats")) {
            if (!number(x, &n) || n != floor(n) || n < 1 || n > 8) return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: repeats expects 1 to 8", line);
            df->repeats = (int)n;
        } else if (key_is(k, "scale")) {
            if (!x || x->type != YAML_SCALAR_NODE || (!key_is(x, "true") && !key_is(x, "false")))
                return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: scale expects true or false", line);
            df->scale = key_is(x, "true");
        } else if (key_is(k, "scale_range")) {
            yaml_node_item_t *it = x && x->type == YAML_SEQUENCE_NODE ? x->data.sequence.items.start : NULL;
            if (!it || x->data.sequence.items.top - it != 2 || !number(yaml_document_get_node(d, it[0]), &df->lo) ||
                !number(yaml_document_get_node(d, it[1]), &df->hi) || !(df->lo > 0) || df->lo > 1 || df->hi < 1 || !(df->lo < df->hi))
                return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: scale_range expects [lo, hi] with 0 < lo ≤ 1 ≤ hi, lo < hi", line);
        } else {
            return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: dataflow takes models, layers, repeats, scale and scale_range", line);
        }
    }
    yaml_node_item_t *it = models && models->type == YAML_SEQUENCE_NODE ? models->data.sequence.items.start : NULL;
    int nm = it ? (int)(models->data.sequence.items.top - it) : 0;
    if (nm < 1 || nm > 64) return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: dataflow needs models: [A, B, ...] (1 to 64)", line);
    if (!(df->model = graft__calloc((size_t)nm, sizeof *df->model)) || !(df->layers = graft__calloc((size_t)nm, sizeof *df->layers)))
        return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    df->n_models = nm; // (the arrays exist: freeing walks them)
    yaml_node_item_t *lt = layers && layers->type == YAML_SEQUENCE_NODE ? layers->data.sequence.items.start : NULL;
    if (layers && (!lt || layers->data.sequence.items.top - lt != df->n_models))
        return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: layers expects one count per model", line);
    for (int i = 0; i < df->n_models; i++) {
        yaml_node_t *m = yaml_document_get_node(d, it[i]);
        if (!m || m->type != YAML_SCALAR_NODE || !m->data.scalar.length || m->data.scalar.length > 4096)
            return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: dataflow models are model paths", line);
        if (!(df->model[i] = graft__strndup((const char *)m->data.scalar.value, m->data.scalar.length)))
            return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
        double n;
        if (lt && (!number(yaml_document_get_node(d, lt[i]), &n) || n != floor(n) || n < 1 || n > 4096))
            return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: layers expects whole numbers from 1 to 4096", line);
        if (lt) df->layers[i] = (int)n;
    }
    df->begin = key->start_mark.index, df->end = node_end(d, v); // characters (bytes after parsing)
    return GRAFT_OK;
}

// Slots and dimension once every model's layer count is known.
static int dataflow_size(struct graft_genome *g, const char *label, struct graft_err *err) {
    struct dataflow *df = g->df;
    long t = 0;
    for (int i = 0; i < df->n_models; i++) {
        if (df->layers[i] < 1) return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: the layer count of %s is not known (give layers: [...])", df->line, df->model[i]);
        t += df->layers[i];
    }
    t *= df->repeats;
    if (t * (df->scale ? 2 : 1) > GRAFT_GENOME_MAX_DIM)
        return graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: %ld layer slots: more than %d searched values", df->line, t, GRAFT_GENOME_MAX_DIM);
    df->slots = (int)t, g->dim = (int)t * (df->scale ? 2 : 1);
    return GRAFT_OK;
}

// The key under which node `id` sits, skipping filter-list items (`value:`) and sequences: weight for
// `weight: {search: …}` and for `weight: [{filter: mlp, value: {search: …}}]`.
static bool under_weight(yaml_document_t *d, int id) {
    for (int depth = 0; depth < 8; depth++) {
        int parent = 0;
        yaml_node_t *key = NULL;
        for (yaml_node_t *n = d->nodes.start; n < d->nodes.top && !parent; n++) {
            if (n->type == YAML_MAPPING_NODE)
                for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < n->data.mapping.pairs.top; q++)
                    if (q->value == id) { parent = (int)(n - d->nodes.start) + 1, key = yaml_document_get_node(d, q->key); break; }
            if (n->type == YAML_SEQUENCE_NODE)
                for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++)
                    if (*it == id) { parent = (int)(n - d->nodes.start) + 1; break; }
        }
        if (!parent) return false;
        if (key && key_is(key, "weight")) return true;
        if (key && !key_is(key, "value")) return false;
        id = parent;
    }
    return false;
}

// Models merged into the base: `models` entries whose model is not base_model (0 when not plain).
static int count_models(yaml_document_t *d) {
    yaml_node_t *root = yaml_document_get_root_node(d), *models = NULL, *base = NULL;
    if (!root || root->type != YAML_MAPPING_NODE) return 0;
    for (yaml_node_pair_t *q = root->data.mapping.pairs.start; q < root->data.mapping.pairs.top; q++) {
        yaml_node_t *k = yaml_document_get_node(d, q->key);
        if (key_is(k, "models")) models = yaml_document_get_node(d, q->value);
        if (key_is(k, "base_model")) base = yaml_document_get_node(d, q->value);
    }
    if (!models || models->type != YAML_SEQUENCE_NODE) return 0;
    int n = 0;
    for (yaml_node_item_t *it = models->data.sequence.items.start; it < models->data.sequence.items.top; it++) {
        yaml_node_t *m = yaml_document_get_node(d, *it), *name = NULL;
        if (!m || m->type != YAML_MAPPING_NODE) continue;
        for (yaml_node_pair_t *q = m->data.mapping.pairs.start; q < m->data.mapping.pairs.top; q++)
            if (key_is(yaml_document_get_node(d, q->key), "model")) name = yaml_document_get_node(d, q->value);
        bool is_base = name && base && name->type == YAML_SCALAR_NODE && base->type == YAML_SCALAR_NODE &&
                       name->data.scalar.length == base->data.scalar.length && !memcmp(name->data.scalar.value, base->data.scalar.value, name->data.scalar.length);
        n += !is_base;
    }
    return n;
}

int graft_genome_parse(const char *text, size_t len, const char *label, struct graft_genome **out, struct graft_err *err) {
    *out = NULL;
    struct graft_genome *g = graft__calloc(1, sizeof *g);
    if (!g || !(g->text = graft__strndup(text, len))) {
        graft_genome_free(g);
        return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    }
    g->len = len;
    yaml_parser_t p;
    yaml_document_t d;
    if (!yaml_parser_initialize(&p)) { graft_genome_free(g); return graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory"); }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    int rc = GRAFT_OK;
    if (!yaml_parser_load(&p, &d)) {
        rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %zu column %zu: invalid YAML: %s", p.problem_mark.line + 1,
                           p.problem_mark.column + 1, p.problem ? p.problem : "syntax error");
        yaml_parser_delete(&p);
        graft_genome_free(g);
        return rc;
    }
    yaml_parser_delete(&p);
    yaml_node_t *root = yaml_document_get_root_node(&d);
    for (yaml_node_pair_t *q = root && root->type == YAML_MAPPING_NODE ? root->data.mapping.pairs.start : NULL; q && q < root->data.mapping.pairs.top && !rc; q++)
        if (key_is(yaml_document_get_node(&d, q->key), "dataflow"))
            rc = g->df ? graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "two dataflow entries")
                       : parse_dataflow(g, &d, yaml_document_get_node(&d, q->key), yaml_document_get_node(&d, q->value), label, err);
    for (yaml_node_t *n = d.nodes.start; n < d.nodes.top && !rc; n++) {
        if (n->type != YAML_MAPPING_NODE) continue;
        yaml_node_pair_t *pr = n->data.mapping.pairs.start, *pe = n->data.mapping.pairs.top;
        bool has = false, choice = false;
        for (yaml_node_pair_t *q = pr; q < pe; q++) {
            has |= key_is(yaml_document_get_node(&d, q->key), "search");
            choice |= key_is(yaml_document_get_node(&d, q->key), "choice");
        }
        if (!has && !choice) continue;
        int line = (int)n->start_mark.line + 1;
        struct range r = {.begin = n->start_mark.index, .groups = 1, .line = line};
        yaml_node_t *init = NULL;
        if (has && choice) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: a value is either searched in a range or chosen, not both", line);
        for (yaml_node_pair_t *q = pr; q < pe && !rc; q++) {
            yaml_node_t *k = yaml_document_get_node(&d, q->key), *v = yaml_document_get_node(&d, q->value);
            double gv;
            if (key_is(k, "search")) {
                yaml_node_item_t *it = v && v->type == YAML_SEQUENCE_NODE ? v->data.sequence.items.start : NULL;
                if (!it || v->data.sequence.items.top - it != 2 || !number(yaml_document_get_node(&d, it[0]), &r.lo) ||
                    !number(yaml_document_get_node(&d, it[1]), &r.hi) || r.lo > r.hi)
                    rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: search expects [lo, hi] with numbers lo ≤ hi", line);
            } else if (key_is(k, "choice")) {
                if (r.item) { rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: two choice lists in one value", line); break; }
                yaml_node_item_t *it = v && v->type == YAML_SEQUENCE_NODE ? v->data.sequence.items.start : NULL;
                size_t ni = it ? (size_t)(v->data.sequence.items.top - it) : 0;
                if (ni < 1 || ni > 1024) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: choice expects a list of 1 to 1024 values", line);
                else if (!(r.item = graft__malloc(2 * ni * sizeof *r.item))) rc = graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
                for (size_t i = 0; !rc && i < ni; i++) {
                    yaml_node_t *e = yaml_document_get_node(&d, it[i]);
                    if (!e || e->type != YAML_SCALAR_NODE || e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
                        rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: choice items must be plain values (a method name, a number)", line);
                    else r.item[2 * i] = e->start_mark.index, r.item[2 * i + 1] = e->end_mark.index;
                }
                r.n_items = (int)ni;
            } else if (key_is(k, "groups")) {
                if (!number(v, &gv) || gv != floor(gv) || gv < 1 || gv > 1024)
                    rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: groups expects a whole number from 1 to 1024", line);
                else r.groups = (int)gv;
            } else if (key_is(k, "init")) {
                init = v;
            } else {
                rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: a search range takes only 'search' (or 'choice'), 'groups' and 'init'", line);
            }
        }
        if (!rc && choice && r.groups != 1) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: a choice has no groups", line);
        if (!rc && !(r.init = graft__malloc((size_t)r.groups * sizeof *r.init))) rc = graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
        for (int j = 0; !rc && j < r.groups; j++) r.init[j] = NAN;
        if (!rc && init && choice) { // init: one of the items, as written
            int hit = -1;
            yaml_node_t *cv = NULL;
            for (yaml_node_pair_t *q = pr; q < pe; q++)
                if (key_is(yaml_document_get_node(&d, q->key), "choice")) cv = yaml_document_get_node(&d, q->value);
            for (int i = 0; i < r.n_items && hit < 0; i++) {
                yaml_node_t *e = yaml_document_get_node(&d, cv->data.sequence.items.start[i]);
                if (init->type == YAML_SCALAR_NODE && init->data.scalar.length == e->data.scalar.length &&
                    !memcmp(init->data.scalar.value, e->data.scalar.value, e->data.scalar.length))
                    hit = i;
            }
            if (hit < 0) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: init must be one of the choice's items", line);
            else r.init[0] = hit;
        } else if (!rc && init) { // a number, or one per group
            yaml_node_item_t *it = init->type == YAML_SEQUENCE_NODE ? init->data.sequence.items.start : NULL;
            int ni = it ? (int)(init->data.sequence.items.top - it) : 1;
            if (it && ni != r.groups) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: init has %d values for %d groups", line, ni, r.groups);
            for (int j = 0; !rc && j < r.groups; j++) {
                double v;
                if (!number(it ? yaml_document_get_node(&d, it[j]) : init, &v) || v < r.lo || v > r.hi)
                    rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: init expects numbers within the search range [%g, %g]", line, r.lo, r.hi);
                else r.init[j] = v;
            }
        }
        if (!rc && has) r.weight = under_weight(&d, (int)(n - d.nodes.start) + 1);
        if (rc) { graft__free(r.init), graft__free(r.item); break; }
        r.end = node_end(&d, n); // characters until the marks are turned into bytes below
        r.first = g->dim;
        if (g->dim + r.groups > GRAFT_GENOME_MAX_DIM) { graft__free(r.init), graft__free(r.item); rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "more than %d searched values", GRAFT_GENOME_MAX_DIM); break; }
        struct range *nr = graft__realloc(g->r, (size_t)(g->n + 1) * sizeof *nr);
        if (!nr) { graft__free(r.init), graft__free(r.item); rc = graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory"); break; }
        g->r = nr, g->r[g->n++] = r, g->dim += r.groups;
    }
    if (!rc) g->n_models = count_models(&d);
    yaml_document_delete(&d);
    size_t nc = 0, *at = rc ? NULL : char_offsets(g->text, len, &nc);
    if (!rc && !at) rc = graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory");
    // marks past the last character (a document end) map to the end of the text
#define BYTE(c) ((c) <= nc ? at[c] : len)
    for (int i = 0; !rc && i < g->n; i++) {
        struct range *q = &g->r[i];
        q->begin = BYTE(q->begin), q->end = BYTE(q->end);
        for (int k = 0; k < 2 * q->n_items; k++) q->item[k] = BYTE(q->item[k]);
        // the node's span starts at its anchor (&name) or tag: keep an anchor (an alias *name then reads
        // the rendered value); a tag would be left in front of a number
        while (!rc && q->begin < q->end && g->text[q->begin] == '&') {
            while (q->begin < q->end && !isspace((unsigned char)g->text[q->begin])) q->begin++;
            while (q->begin < q->end && isspace((unsigned char)g->text[q->begin])) q->begin++;
        }
        if (!rc && q->begin < q->end && g->text[q->begin] == '!')
            rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: a search range or choice cannot carry a tag (%.*s)", q->line,
                               (int)strcspn(g->text + q->begin, " \t\r\n"), g->text + q->begin);
    }
    if (!rc && g->df) g->df->begin = BYTE(g->df->begin), g->df->end = BYTE(g->df->end);
#undef BYTE
    graft__free(at);
    if (!rc && g->df && g->n) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: a dataflow genome has no other search ranges (search the "
                                                                                       "parameters first, then the data flow over the result)", g->r[0].line);
    bool known = true;
    for (int i = 0; !rc && g->df && i < g->df->n_models; i++) known &= g->df->layers[i] > 0;
    if (!rc && g->df && known) rc = dataflow_size(g, label, err);
    if (!rc && !g->dim && !g->df) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "no search ranges (write e.g. weight: {search: [0, 1]})");
    // spans come in document order except nesting, which a range cannot have (its values are numbers)
    for (int i = 1; i < g->n && !rc; i++)
        if (g->r[i].begin < g->r[i - 1].end) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: overlapping search ranges", g->r[i].line);
    if (rc) graft_genome_free(g);
    else *out = g;
    return rc;
}

int graft_genome_load(const char *path, struct graft_genome **out, struct graft_err *err) {
    char *text;
    size_t len;
    *out = NULL;
    int rc = graft__read_small_file(path, 16u << 20, &text, &len, err);
    if (rc) {
        if (rc != GRAFT_E_NOMEM && err) err->code = GRAFT_E_CONFIG;
        return rc == GRAFT_E_NOMEM ? rc : GRAFT_E_CONFIG;
    }
    rc = graft_genome_parse(text, len, path, out, err);
    graft__free(text);
    struct dataflow *df = rc ? NULL : (*out)->df;
    if (!df) return rc;
    // data flow: the models' layer counts from their config.json (paths relative to the genome's
    // folder; given counts must agree), and architectures whose projections the scales cannot reach
    const char *slash = strrchr(path, '/');
    for (int i = 0; !rc && i < df->n_models; i++) {
        int given = df->layers[i];
        df->layers[i] = 0;
        char *cp = df->model[i][0] == '/' || !slash ? graft__asprintf("%s/config.json", df->model[i])
                                                     : graft__asprintf("%.*s/%s/config.json", (int)(slash - path), path, df->model[i]);
        char *cj = NULL;
        size_t cl;
        json_t *c = NULL;
        if (!cp) rc = graft_err_set(err, GRAFT_E_NOMEM, path, NULL, 0, "out of memory");
        else if (graft__read_small_file(cp, 64u << 20, &cj, &cl, err)) graft_err_clear(err); // (reported below)
        else if ((c = json_loadb(cj, cl, 0, NULL))) {
            json_t *tc = json_object_get(c, "text_config");
            json_int_t n = json_integer_value(json_object_get(json_is_object(tc) ? tc : c, "num_hidden_layers"));
            const char *arch = json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
            df->layers[i] = n >= 1 && n <= 4096 ? (int)n : 0;
            if (df->scale && arch && (!strncmp(arch, "Gemma", 5) || !strncmp(arch, "Mixtral", 7)))
                rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "line %d: %s is %s: its %s, so the residual scales cannot be rendered; use scale: false",
                                   df->line, df->model[i], arch, arch[0] == 'G' ? "post-norms undo scaled projections" : "experts' projections are not o_proj / down_proj");
            if (!rc && given && df->layers[i] && given != df->layers[i])
                rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "line %d: layers gives %s %d layers, its config.json %d", df->line, df->model[i], given, df->layers[i]);
        }
        if (!rc && !df->layers[i]) df->layers[i] = given; // (no config.json: the count given, if any)
        if (!rc && !df->layers[i])
            rc = graft_err_set(err, GRAFT_E_CONFIG, path, NULL, 0, "line %d: no num_hidden_layers in %s (is %s a model folder?)", df->line, cp, df->model[i]);
        json_decref(c), graft__free(cj), graft__free(cp);
    }
    if (!rc && !df->slots) rc = dataflow_size(*out, path, err);
    if (rc) graft_genome_free(*out), *out = NULL;
    return rc;
}

int graft_genome_dim(const struct graft_genome *g) { return g->dim; }

static const struct range *range_of(const struct graft_genome *g, int i) {
    if (g->df) return NULL;
    for (int k = 0; k < g->n; k++)
        if (i < g->r[k].first + g->r[k].groups) return &g->r[k];
    return NULL;
}
int graft_genome_line(const struct graft_genome *g, int i) { return g->df ? g->df->line : range_of(g, i)->line; }
double graft_genome_value(const struct graft_genome *g, int i, double x) {
    const struct range *r = range_of(g, i);
    double t = isnan(x) ? 0.5 : x < 0 ? 0 : x > 1 ? 1 : x;
    if (g->df) return i < g->df->slots ? t >= 0.5 : g->df->lo + t * (g->df->hi - g->df->lo); // included; a scale
    if (r->n_items) { // a choice: equal bins of [0, 1]
        int k = (int)(t * r->n_items);
        return k >= r->n_items ? r->n_items - 1 : k;
    }
    return r->lo + t * (r->hi - r->lo);
}

int graft_genome_choices(const struct graft_genome *g, int i) { return g->df ? (i < g->df->slots ? 2 : 0) : range_of(g, i)->n_items; }

void graft_genome_init(const struct graft_genome *g, double *x) {
    if (g->df) { // the first model as it is: its layers in the first repetition, every scale 1
        for (int t = 0; t < g->df->slots; t++) x[t] = t < g->df->layers[0] ? 0.75 : 0.25;
        for (int t = g->df->slots; t < g->dim; t++) x[t] = (1 - g->df->lo) / (g->df->hi - g->df->lo);
        return;
    }
    for (int k = 0; k < g->n; k++) {
        const struct range *r = &g->r[k];
        for (int j = 0; j < r->groups; j++) {
            double v = r->init[j], *o = &x[r->first + j];
            if (r->n_items) { *o = ((isnan(v) ? 0 : v) + 0.5) / r->n_items; continue; } // the bin's middle
            if (isnan(v)) v = r->weight && g->n_models > 0 ? 1.0 / g->n_models : 0.5 * (r->lo + r->hi);
            v = v < r->lo ? r->lo : v > r->hi ? r->hi : v;
            *o = r->hi > r->lo ? (v - r->lo) / (r->hi - r->lo) : 0.5;
        }
    }
}

// A number as YAML 1.1 reads a float (PyYAML, so MergeKit): a dot in the mantissa, "1.0e-05" not "1e-05".
static void put_float(struct graft__buf *b, double v, int digits) {
    char t[48];
    snprintf(t, sizeof t, "%.*g", digits, v);
    char *e = strchr(t, 'e');
    if (!strchr(t, '.') && !strchr(t, 'n')) { // (inf / nan are never rendered: values are clipped)
        if (e) memmove(e + 2, e, strlen(e) + 1), e[0] = '.', e[1] = '0';
        else strcat(t, ".0");
    }
    graft__buf_puts(b, t);
}

// A model name as a YAML double-quoted scalar: a name such as `py #2`, `null` or `a: b` stays itself.
static void put_quoted(struct graft__buf *b, const char *s) {
    graft__buf_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') graft__buf_printf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7f) graft__buf_printf(b, "\\x%02x", c);
        else graft__buf_append(b, s, 1);
    }
    graft__buf_puts(b, "\"");
}

// The data-flow point as a passthrough frankenmerge: the included slots in order, one single-layer
// slice each. A scale w_p on the input of path position p scales the residual stream there; RMSNorm
// makes each layer (and the final norm) blind to a common factor of the stream, so this equals
// scaling every contribution up to p by 1/Π_{q≤p} w_q relative to the embedding: the slice's o_proj
// and down_proj are multiplied by that (exact up to the norms' ε).
static void render_dataflow(const struct graft_genome *g, const double *x, struct graft__buf *b) {
    const struct dataflow *df = g->df;
    graft__buf_puts(b, "merge_method: passthrough\nslices:");
    double cum = 1;
    int t = 0, n = 0;
    for (int rep = 0; rep < df->repeats; rep++)
        for (int m = 0; m < df->n_models; m++)
            for (int l = 0; l < df->layers[m]; l++, t++) {
                if (graft_genome_value(g, t, x[t]) < 0.5) continue;
                if (df->scale) cum *= graft_genome_value(g, df->slots + t, x[df->slots + t]);
                graft__buf_puts(b, "\n  - sources:\n      - model: ");
                put_quoted(b, df->model[m]);
                graft__buf_printf(b, "\n        layer_range: [%d, %d]", l, l + 1);
                if (df->scale) {
                    graft__buf_puts(b, "\n    parameters:\n      scale:\n        - filter: o_proj\n          value: ");
                    put_float(b, 1 / cum, 9);
                    graft__buf_puts(b, "\n        - filter: down_proj\n          value: ");
                    put_float(b, 1 / cum, 9);
                    graft__buf_puts(b, "\n        - value: 1.0");
                }
                n++;
            }
    if (!n) graft__buf_puts(b, " []"); // no layer: the merge refuses it (scored as the worst)
}

char *graft_genome_render(const struct graft_genome *g, const double *x) {
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    if (g->df) {
        graft__buf_append(&b, g->text, g->df->begin);
        render_dataflow(g, x, &b);
        graft__buf_append(&b, g->text + g->df->end, g->len - g->df->end);
        graft__buf_append(&b, "", 1);
        if (b.failed) { graft__buf_free(&b); return NULL; }
        return b.data;
    }
    size_t at = 0;
    for (int k = 0; k < g->n; k++) {
        const struct range *r = &g->r[k];
        graft__buf_append(&b, g->text + at, r->begin - at);
        at = r->end;
        if (r->n_items) {
            int c = (int)graft_genome_value(g, r->first, x[r->first]);
            graft__buf_append(&b, g->text + r->item[2 * c], r->item[2 * c + 1] - r->item[2 * c]);
            continue;
        }
        if (r->groups > 1) graft__buf_puts(&b, "[");
        for (int j = 0; j < r->groups; j++) {
            if (j) graft__buf_puts(&b, ", ");
            put_float(&b, graft_genome_value(g, r->first + j, x[r->first + j]), 6);
        }
        if (r->groups > 1) graft__buf_puts(&b, "]");
        at = r->end;
    }
    graft__buf_append(&b, g->text + at, g->len - at);
    graft__buf_append(&b, "", 1);
    if (b.failed) { graft__buf_free(&b); return NULL; }
    return b.data;
}
