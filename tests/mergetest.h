// Test helper shared by the merge tests: run a YAML config (written to cfg-OUT.yml in the test's
// folder) into folder OUT with small chunks, warnings silenced.
#ifndef GRAFT_TESTS_MERGETEST_H
#define GRAFT_TESTS_MERGETEST_H
#include <stdint.h>
#include "graft/graft.h"

int merge_yaml(const char *yaml, const char *out, int threads, uint64_t seed, uint64_t chunk_elems, struct graft_err *err);
#endif
