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
#ifndef GRAFT_GRAFT_H
#define GRAFT_GRAFT_H

#define GRAFT_VERSION "0.1.0"

#include "status.h"
#include "dtype.h"
#include "util.h"
#include "safetensors.h"
#include "model.h"
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

#endif
