# graft — build, test, demo. `make` builds build/graft, build/libgraft.a, build/libgraft.so (soname
# libgraft.so.0) and build/graft.pc; `make test` runs everything (release build + an AddressSanitizer/UBSan
# build with fault injection); `make demo` shows a real run; `make install PREFIX=/usr/local` installs.
BUILD  ?= build
SAN    ?= 0
CC     ?= cc
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes -g -Iinclude -pthread -MMD -MP -fPIC
ifeq ($(SAN),1)
  OPT := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -DGRAFT_FAULT_INJECTION
else
  OPT := -O3 -fno-trapping-math
endif
CFLAGS  ?=
CFLAGS  += $(CFLAGS_BASE) $(OPT)
NPROC   := $(shell nproc 2>/dev/null || echo 2)
LDLIBS  := -ljansson -lyaml -lpcre2-8 -lutf8proc -llapacke -lopenblas -lz -lm -pthread

PREFIX  ?= /usr/local
VERSION := $(shell sed -n 's/^\#define GRAFT_VERSION "\(.*\)"/\1/p' include/graft/graft.h)
SOVER   := 0

LIB_SRC  := $(sort $(wildcard src/core/*.c src/io/*.c src/ops/*.c src/config/*.c src/merge/*.c src/eval/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test-*.c)) tests/harness.c tests/corrupt.c tests/mergetest.c
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/presets.o
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

.PHONY: all deps deps-mpi test demo bench clean fuzz asan install python mpi
.SECONDARY:
all: deps $(BUILD)/graft $(BUILD)/libgraft.a $(BUILD)/libgraft.so $(BUILD)/graft.pc $(BUILD)/tests/unit $(BUILD)/tests/gen-corrupt \
     $(BUILD)/tests/fuzz-safetensors $(BUILD)/tests/fuzz-index $(BUILD)/tests/fuzz-config \
     $(BUILD)/tests/fuzz-tokenizer $(BUILD)/tests/fuzz-genome $(BUILD)/tests/fuzz-gguf $(BUILD)/tests/fuzz-layout $(BUILD)/tests/fuzz-torchbin $(BUILD)/tests/fuzz-loracfg \
     $(if $(filter 0,$(SAN)),python) $(if $(filter 1,$(MPI)),$(BUILD)/graft-mpi)

deps:
	@sh scripts/deps.sh

# deps first (order-only): under -j no compiler starts before the Debian headers are installed
$(BUILD)/obj/%.o: %.c Makefile | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The real config.json files of tests/configs, compiled in for `graft synth --preset NAME`.
$(BUILD)/gen/presets.c: scripts/embed-configs.sh $(wildcard tests/configs/*.json)
	@mkdir -p $(dir $@)
	sh scripts/embed-configs.sh tests/configs > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/presets.o: $(BUILD)/gen/presets.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Isrc -c $< -o $@

$(BUILD)/libgraft.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The shared library exports exactly the functions the public headers declare (the version script
# scripts/libgraft-map.sh derives from them); soname libgraft.so.$(SOVER), bumped when the ABI breaks.
$(BUILD)/libgraft.map: scripts/libgraft-map.sh $(wildcard include/graft/*.h)
	@mkdir -p $(BUILD)
	sh scripts/libgraft-map.sh > $@

$(BUILD)/libgraft.so.$(VERSION): $(LIB_OBJ) $(BUILD)/libgraft.map
	$(CC) $(CFLAGS) -shared -Wl,-soname,libgraft.so.$(SOVER) -Wl,--version-script=$(BUILD)/libgraft.map $(LIB_OBJ) $(LDLIBS) -o $@

$(BUILD)/libgraft.so: $(BUILD)/libgraft.so.$(VERSION)
	ln -sf libgraft.so.$(VERSION) $(BUILD)/libgraft.so.$(SOVER)
	ln -sf libgraft.so.$(VERSION) $@

# pkg-config file for the installed prefix (`make install PREFIX=…` writes its own copy)
$(BUILD)/graft.pc: Makefile scripts/install.sh
	@mkdir -p $(BUILD)
	sh scripts/install.sh pc $(PREFIX) $(VERSION) > $@

# The Python module (docs/python.md): build/python/graft.so against Debian's python3-dev (asked for in
# the recipe: deps installs it after this Makefile is read), libgraft.a linked in.
# PYTHONPATH=build/python python3 -c 'import graft'
python: $(BUILD)/python/graft.so

$(BUILD)/python/graft.so: python/graftmodule.c $(BUILD)/libgraft.a | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-missing-field-initializers -Wno-cast-function-type $$(/usr/bin/python3-config --includes) -shared python/graftmodule.c $(BUILD)/libgraft.a $(LDLIBS) -o $@

install: all
	sh scripts/install.sh install $(PREFIX) $(VERSION) $(BUILD) $(SOVER)

$(BUILD)/graft: $(CLI_OBJ) $(BUILD)/libgraft.a
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

# The same front end under MPI (docs/distributed.md): Open MPI's mpicc, -DGRAFT_MPI; the library and
# build/graft never link MPI. `make mpi` (or MPI=1 with any target) installs Debian's Open MPI.
mpi: $(BUILD)/graft-mpi

$(BUILD)/graft-mpi: $(CLI_SRC) src/cli/cli.h $(BUILD)/libgraft.a | deps-mpi
	mpicc $(CFLAGS) -DGRAFT_MPI $(CLI_SRC) $(BUILD)/libgraft.a $(LDLIBS) -o $@

deps-mpi:
	@sh scripts/deps.sh mpi

$(BUILD)/tests/unit: $(filter-out $(BUILD)/obj/tests/gen-corrupt-main.o,$(TEST_OBJ)) $(BUILD)/libgraft.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/gen-corrupt: $(BUILD)/obj/tests/gen-corrupt-main.o $(BUILD)/obj/tests/corrupt.o $(BUILD)/libgraft.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

# Fuzz targets built with a plain driver that replays files (the seed corpus runs as a test).
$(BUILD)/tests/fuzz-%: $(BUILD)/obj/fuzz/fuzz_%.o $(BUILD)/obj/fuzz/fuzz_main.o $(BUILD)/libgraft.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

asan:
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 all

# both builds side by side on every core, then the suites (tests/run-all.sh runs them in parallel too)
test:
	@sh scripts/deps.sh test
	@$(MAKE) --no-print-directory -j$(NPROC) all asan mpi
	@sh tests/run-all.sh

# libFuzzer builds (clang): make fuzz && build/fuzz/safetensors -max_total_time=600 fuzz/corpus/safetensors
fuzz: deps
	@mkdir -p build/fuzz
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_safetensors.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/safetensors
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_index.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/index
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_config.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/config
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_tokenizer.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/tokenizer
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_genome.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/genome
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_gguf.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/gguf
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_layout.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/layout
	clang -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_loracfg.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/loracfg
	clang -std=c11 -D_GNU_SOURCE -DGRAFT_FUZZ_NO_CRC -g -O1 -Iinclude -fsanitize=fuzzer,address,undefined fuzz/fuzz_torchbin.c $(LIB_SRC) $(LDLIBS) -o build/fuzz/torchbin

demo:
	@sh scripts/deps.sh
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@sh scripts/demo.sh

bench: all
	@sh bench/convert.sh
	@sh bench/merge.sh
	@sh bench/lora.sh
	@sh bench/ops.sh
	@sh bench/eval.sh
	@sh bench/research.sh

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(patsubst fuzz/%.c,$(BUILD)/obj/fuzz/%.d,$(wildcard fuzz/*.c))
