// Generator of corrupt safetensors files, one class per adversarial case of shared/formats.md §6.1–6.3.
// corrupt_make(class, seed) is deterministic: a failing (class, seed) replays with
// `build/tests/gen-corrupt CLASS SEED OUT`.
#ifndef GRAFT_TEST_CORRUPT_H
#define GRAFT_TEST_CORRUPT_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

struct corrupt_class {
    const char *name;         // e.g. "HDR_PAST_EOF"
    const char *ref;          // checklist id in formats.md, e.g. "S05"
    int         status;       // expected enum graft_status
    const char *msg;          // expected substring of the error message
    bool        names_tensor; // the message must name the tensor: "tensor '<name>'"
};

int corrupt_n_classes(void);
const struct corrupt_class *corrupt_class(int i);
int corrupt_find(const char *name); // -1 if unknown
// Bytes of a corrupt file (malloc'd; caller frees). When the class names a tensor, its name is copied
// into `tensor` (cap bytes).
uint8_t *corrupt_make(int cls, uint32_t seed, size_t *len, char *tensor, size_t cap);
// A valid file with a few tensors of assorted dtypes (for round trips and fuzz seeds).
uint8_t *corrupt_make_valid(uint32_t seed, size_t *len);
#endif
