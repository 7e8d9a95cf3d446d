// graft — operate on trained neural-network checkpoints: read and validate safetensors files and
// Hugging Face model folders, convert dtypes, write sharded outputs atomically; merge, extract, grow
// and prune models (later modules).
//
// Conventions of the whole API:
//   * names: graft_<object>_<verb>; counts n_*; shapes ne[] outermost first (HF order).
//   * errors: functions return int status (GRAFT_OK == 0, negative on failure) and fill a
//     caller-owned struct graft_err with one line "<file>: tensor '<name>': <reason>".
//   * ownership: pointers returned by accessors are borrowed until the owning object is closed;
//     pointers into input files are const and unaligned.
//   * the library never prints, never exits, and keeps no global mutable state.
//
// Stability. Linking: libgraft.a, or libgraft.so (soname libgraft.so.0) with `pkg-config graft`; the
// shared library exports exactly the functions declared in include/graft/ (internal helpers are
// hidden), and graft_version() names the build. While the version is 0.x the API may still change in a
// minor release (0.1 → 0.2): functions and struct fields are added, and a changed signature is called
// out in the commit that changes it; the soname stays libgraft.so.0 for the 0.x series, so programs
// linked against an older 0.x library are rebuilt with the new headers. From 1.0 on, a major version
// only adds (new functions, new fields at the end of structs the library allocates) and keeps the
// layout of the structs a caller allocates (struct graft_err, the *_params structs); the soname follows
// the major version. Start *_params from graft_*_default_params() and zero-initialise struct
// graft_err (or graft_err_clear it), so that fields added later take their defaults.
#ifndef GRAFT_GRAFT_H
#define GRAFT_GRAFT_H

#define GRAFT_VERSION "0.1.0"

#include "status.h"
#include "dtype.h"
#include "util.h"
#include "safetensors.h"
#include "model.h"
#include "dist.h"
#include "writer.h"
#include "convert.h"
#include "synth.h"
#include "merge.h"
#include "lora.h"
#include "quantize.h"
#include "prune.h"
#include "upcycle.h"
#include "reparam.h"
#include "moe.h"
#include "expand.h"
#include "align.h"
#include "tokensurgeon.h"
#include "shrink.h"
#include "moefy.h"

#endif
