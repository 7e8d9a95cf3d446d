// Agreeing on one status across MPI ranks (include/graft/dist.h).
#include <stdio.h>
#include "graft/dist.h"
#include "impl.h"

int graft__dist_status(const struct graft_dist *d, int rc, const char *label, struct graft_err *err) {
    int64_t who = rc ? d->rank : d->size;
    if (d->min_i64(d->ctx, &who, 1)) return graft_err_set(err, GRAFT_E_IO, label, NULL, 0, "MPI reduction failed");
    if (who == d->size) return GRAFT_OK;
    struct { int32_t code; char msg[GRAFT_ERR_MSG_MAX]; } m = {0};
    if (d->rank == who) m.code = rc, snprintf(m.msg, sizeof m.msg, "%s", err->msg);
    if (d->bcast(d->ctx, &m, sizeof m, (int)who)) return graft_err_set(err, GRAFT_E_IO, label, NULL, 0, "MPI broadcast failed");
    m.msg[sizeof m.msg - 1] = 0;
    graft_err_clear(err);
    // an error agreed on earlier already names its rank (every rank then holds it: the lowest, 0, sends it)
    long long r0;
    int used = 0;
    if (sscanf(m.msg, "rank %lld: %n", &r0, &used) == 1 && used > 0) return graft_err_set(err, m.code, NULL, NULL, 0, "%s", m.msg);
    return graft_err_set(err, m.code, NULL, NULL, 0, "rank %lld: %s", (long long)who, m.msg);
}
