#!/bin/sh
# `make install` and the pkg-config file (called by the Makefile; tests/shlib.sh runs it directly).
#   install.sh pc PREFIX VERSION                     graft.pc for PREFIX on stdout
#   install.sh install PREFIX VERSION BUILD SOVER    PREFIX/bin/graft, PREFIX/lib/libgraft.{a,so*},
#                                                    PREFIX/include/graft/*.h, PREFIX/lib/pkgconfig/graft.pc
# DESTDIR, when set, is prepended to every installed path (staged installs, as Debian packaging does).
set -eu
pc() {
    cat <<PC
prefix=$1
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: graft
Description: operate on trained neural-network checkpoints (safetensors, GGUF): merge, convert, LoRA, evaluate
Version: $2
Libs: -L\${libdir} -lgraft
Libs.private: -ljansson -lyaml -lpcre2-8 -lutf8proc -llapacke -lopenblas -lz -lm -pthread
Requires.private: jansson yaml-0.1 libpcre2-8 libutf8proc
Cflags: -I\${includedir} -pthread
PC
}
case $1 in
pc) pc "$2" "$3" ;;
install)
    P=$2 V=$3 B=$4 S=$5 D=${DESTDIR:-}
    install -d "$D$P/bin" "$D$P/lib/pkgconfig" "$D$P/include/graft"
    install -m 755 "$B/graft" "$D$P/bin/graft"
    install -m 644 "$B/libgraft.a" "$D$P/lib/libgraft.a"
    install -m 755 "$B/libgraft.so.$V" "$D$P/lib/libgraft.so.$V"
    ln -sf "libgraft.so.$V" "$D$P/lib/libgraft.so.$S"
    ln -sf "libgraft.so.$V" "$D$P/lib/libgraft.so"
    install -m 644 include/graft/*.h "$D$P/include/graft/"
    pc "$P" "$V" > "$D$P/lib/pkgconfig/graft.pc"
    echo "graft $V installed under $D$P" >&2 ;;
*) echo "usage: install.sh pc|install …" >&2; exit 2 ;;
esac
