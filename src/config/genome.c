// Evolve genomes (include/graft/genome.h): find every {search: [lo, hi], groups: G} mapping in the
// YAML, remember its byte span, and render points by splicing values into the text.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include "graft/genome.h"
#include "../core/impl.h"
#include "../io/io-impl.h"

struct range { size_t begin, end; double lo, hi; int groups, line, first; }; // first: its first coordinate

struct graft_genome {
    char         *text;
    size_t        len;
    struct range *r;
    int           n, dim;
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

void graft_genome_free(struct graft_genome *g) {
    if (!g) return;
    graft__free(g->text), graft__free(g->r), graft__free(g);
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
    for (yaml_node_t *n = d.nodes.start; n < d.nodes.top && !rc; n++) {
        if (n->type != YAML_MAPPING_NODE) continue;
        yaml_node_pair_t *pr = n->data.mapping.pairs.start, *pe = n->data.mapping.pairs.top;
        bool has = false;
        for (yaml_node_pair_t *q = pr; q < pe; q++) has |= key_is(yaml_document_get_node(&d, q->key), "search");
        if (!has) continue;
        int line = (int)n->start_mark.line + 1;
        struct range r = {.begin = n->start_mark.index, .groups = 1, .line = line};
        yaml_node_t *last = NULL;
        for (yaml_node_pair_t *q = pr; q < pe && !rc; q++) {
            yaml_node_t *k = yaml_document_get_node(&d, q->key), *v = yaml_document_get_node(&d, q->value);
            last = v;
            double gv;
            if (key_is(k, "search")) {
                yaml_node_item_t *it = v && v->type == YAML_SEQUENCE_NODE ? v->data.sequence.items.start : NULL;
                if (!it || v->data.sequence.items.top - it != 2 || !number(yaml_document_get_node(&d, it[0]), &r.lo) ||
                    !number(yaml_document_get_node(&d, it[1]), &r.hi) || r.lo > r.hi)
                    rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: search expects [lo, hi] with numbers lo ≤ hi", line);
            } else if (key_is(k, "groups")) {
                if (!number(v, &gv) || gv != floor(gv) || gv < 1 || gv > 1024)
                    rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: groups expects a whole number from 1 to 1024", line);
                else r.groups = (int)gv;
            } else {
                rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "line %d: a search range takes only 'search' and 'groups'", line);
            }
        }
        if (rc) break;
        // a flow mapping ends at its '}'; a block mapping's end mark runs on to the next token, so end
        // at its last value instead
        r.end = n->data.mapping.style == YAML_FLOW_MAPPING_STYLE || !last ? n->end_mark.index : last->end_mark.index;
        r.first = g->dim;
        if (g->dim + r.groups > GRAFT_GENOME_MAX_DIM) { rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "more than %d searched values", GRAFT_GENOME_MAX_DIM); break; }
        struct range *nr = graft__realloc(g->r, (size_t)(g->n + 1) * sizeof *nr);
        if (!nr) { rc = graft_err_set(err, GRAFT_E_NOMEM, label, NULL, 0, "out of memory"); break; }
        g->r = nr, g->r[g->n++] = r, g->dim += r.groups;
    }
    yaml_document_delete(&d);
    if (!rc && !g->dim) rc = graft_err_set(err, GRAFT_E_CONFIG, label, NULL, 0, "no search ranges (write e.g. weight: {search: [0, 1]})");
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
    return rc;
}

int graft_genome_dim(const struct graft_genome *g) { return g->dim; }

static const struct range *range_of(const struct graft_genome *g, int i) {
    for (int k = 0; k < g->n; k++)
        if (i < g->r[k].first + g->r[k].groups) return &g->r[k];
    return NULL;
}
int graft_genome_line(const struct graft_genome *g, int i) { return range_of(g, i)->line; }
double graft_genome_value(const struct graft_genome *g, int i, double x) {
    const struct range *r = range_of(g, i);
    double t = isnan(x) ? 0.5 : x < 0 ? 0 : x > 1 ? 1 : x;
    return r->lo + t * (r->hi - r->lo);
}

char *graft_genome_render(const struct graft_genome *g, const double *x) {
    struct graft__buf b;
    graft__buf_init(&b, SIZE_MAX / 2);
    size_t at = 0;
    for (int k = 0; k < g->n; k++) {
        const struct range *r = &g->r[k];
        graft__buf_append(&b, g->text + at, r->begin - at);
        if (r->groups > 1) graft__buf_puts(&b, "[");
        for (int j = 0; j < r->groups; j++) {
            char v[32];
            snprintf(v, sizeof v, "%.6g", graft_genome_value(g, r->first + j, x[r->first + j]));
            if (!strchr(v, '.') && !strchr(v, 'e') && !strchr(v, 'n')) strcat(v, ".0"); // stays a float
            graft__buf_printf(&b, "%s%s", j ? ", " : "", v);
        }
        if (r->groups > 1) graft__buf_puts(&b, "]");
        at = r->end;
    }
    graft__buf_append(&b, g->text + at, g->len - at);
    graft__buf_append(&b, "", 1);
    if (b.failed) { graft__buf_free(&b); return NULL; }
    return b.data;
}
