// Fuzz target: the safetensors header parser and validator on arbitrary bytes, then a read of every
// tensor through the dtype decoders (which must stay inside the validated data section).
#include <stdint.h>
#include <stdlib.h>
#include "graft/graft.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct graft_st *st;
    struct graft_err err;
    graft_err_clear(&err);
    if (graft_st_open_mem(data, size, "fuzz", &st, &err) != GRAFT_OK) return 0;
    float buf[64];
    for (size_t i = 0; i < graft_st_n_tensors(st); i++) {
        const struct graft_tensor_info *t = graft_st_tensor(st, i);
        (void)graft_st_find(st, t->name, t->name_len);
        uint64_t n = t->n_elem < 64 ? t->n_elem : 64;
        if (graft_dtype_traits(t->dtype)->to_f32 && n && t->n_bytes) {
            if (t->dtype == GRAFT_DTYPE_F4) n &= ~1ull;
            graft_row_to_f32(t->dtype, graft_st_data(st, t), buf, (size_t)n);
        }
    }
    graft_st_close(st);
    return 0;
}
