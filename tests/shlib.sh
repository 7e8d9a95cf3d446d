#!/bin/sh
# The shared library and `make install` (release build only): build/libgraft.so has soname
# libgraft.so.0 and exports exactly the functions of include/graft/*.h (no graft__ helper, no
# internal registry symbol); a program compiled against include/ and linked with -lgraft opens a model
# folder and reads what the CLI reports; scripts/install.sh (what `make install` runs) installs the
# binary, both libraries, the headers and graft.pc into a prefix, where pkg-config finds the flags that
# build the same program, which then runs against the installed library; DESTDIR stages.
# Usage: tests/shlib.sh BUILD_DIR
set -u
B=${1:?build dir}
ROOT=$PWD
G="$ROOT/$B/graft"
. "$(dirname "$0")/lib.sh"
V=$(sed -n 's/^#define GRAFT_VERSION "\(.*\)"/\1/p' include/graft/graft.h)
L="$ROOT/$B/libgraft.so"
[ -e "$L" ] && [ -e "$ROOT/$B/libgraft.so.0" ] && [ -e "$ROOT/$B/libgraft.so.$V" ] && ok || bad "libgraft.so, .so.0 and .so.$V are not all built"
readelf -d "$L" | grep -q 'SONAME.*\[libgraft.so.0\]' && ok || bad "soname: $(readelf -d "$L" | grep SONAME)"
nm -D --defined-only "$L" | awk '{print $3}' | sort -u > "$T/exported"
sh scripts/libgraft-map.sh | grep -o 'graft_[a-z][a-z0-9_]*' | sort -u > "$T/declared" # what the headers declare
cmp -s "$T/exported" "$T/declared" && ok || bad "exported ≠ declared: $(diff "$T/declared" "$T/exported" | head -5 | tr '\n' ' ')"
! grep -q '^graft__' "$T/exported" && grep -q '^graft_model_open$' "$T/exported" && ok || bad "export list"
cd "$T" || exit 1
cat > use.c <<'C'
#include <stdio.h>
#include <string.h>
#include <graft/graft.h>
int main(int argc, char **argv) {
    struct graft_model *m;
    struct graft_err err = {0};
    if (argc < 2 || graft_model_open(argv[1], &m, &err)) { fprintf(stderr, "%s\n", err.msg); return 1; }
    printf("%s %zu %s\n", graft_version(), graft_model_n_tensors(m), graft_model_tensor(m, 0)->info->name);
    graft_model_close(m);
    return strcmp(graft_version(), GRAFT_VERSION) != 0;
}
C
expect 0 "$G" synth m --layers 1 --hidden 32 --intermediate 48 --heads 2 --kv-heads 1 --vocab 64 --seed 1
want="$V $("$G" inspect m --json | grep -c '"name":') $("$G" inspect m --json | sed -n 's/^ *"name": "\([^"]*\)".*/\1/p' | head -n 1)"
cc -std=c11 -I"$ROOT/include" use.c -L"$ROOT/$B" -lgraft -o use 2> "$T/err" && ok || bad "compile against build/: $(cat "$T/err")"
[ "$(LD_LIBRARY_PATH="$ROOT/$B" ./use m 2>&1)" = "$want" ] && ok || bad "program on build/libgraft.so: $(LD_LIBRARY_PATH="$ROOT/$B" ./use m 2>&1) (want $want)"
ldd ./use 2>/dev/null | grep -q "libgraft.so.0 => $ROOT/$B/libgraft.so.0" || LD_LIBRARY_PATH="$ROOT/$B" ldd ./use | grep -q "libgraft.so.0 => $ROOT/$B/libgraft.so.0" && ok || bad "the program does not load libgraft.so.0"
# install into a prefix, and a staged one
(cd "$ROOT" && sh scripts/install.sh install "$T/inst" "$V" "$B" 0) 2> "$T/err" && ok || bad "install: $(cat "$T/err")"
for f in bin/graft lib/libgraft.a lib/libgraft.so "lib/libgraft.so.$V" lib/libgraft.so.0 include/graft/graft.h include/graft/gguf.h lib/pkgconfig/graft.pc; do
    [ -e "inst/$f" ] && ok || bad "install: inst/$f missing"
done
"$T/inst/bin/graft" --help > /dev/null && ok || bad "installed graft --help"
flags=$(PKG_CONFIG_PATH="$T/inst/lib/pkgconfig" pkg-config --cflags --libs graft 2> "$T/err") && [ "$(PKG_CONFIG_PATH="$T/inst/lib/pkgconfig" pkg-config --modversion graft)" = "$V" ] &&
    ok || bad "pkg-config graft: $(cat "$T/err")"
cc -std=c11 use.c $flags -o use2 2> "$T/err" && [ "$(LD_LIBRARY_PATH="$T/inst/lib" ./use2 m 2>&1)" = "$want" ] && ok || bad "program built with pkg-config: $(cat "$T/err")"
(cd "$ROOT" && DESTDIR="$T/stage" sh scripts/install.sh install /opt/g "$V" "$B" 0) 2> /dev/null && [ -x "$T/stage/opt/g/bin/graft" ] &&
    grep -q '^prefix=/opt/g$' "$T/stage/opt/g/lib/pkgconfig/graft.pc" && ok || bad "DESTDIR install"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
