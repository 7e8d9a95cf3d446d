// Fuzz target: PyTorch zip checkpoints (src/io/torchbin.c) on arbitrary bytes — the zip directory
// reader and the allow-list pickle machine — then a read of every tensor found (which must stay inside
// the mapped input). graft_st_open_mem dispatches on the bytes, so the harness is the safetensors one;
// this target has its own corpus (torch.save files and hostile ones), and its libFuzzer build (make
// fuzz) skips CRC-32 checks so that mutations reach the pickle.
#include "fuzz_safetensors.c"
