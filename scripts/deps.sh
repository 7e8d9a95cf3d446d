#!/bin/sh
# Install the Debian packages graft builds against (jansson, libyaml, PCRE2, utf8proc, LAPACKE + OpenBLAS, zlib, and
# python3-dev for the Python module), when missing. Called by `make`; safe to re-run.
# `deps.sh test` also installs what the test suite uses: bash, Python 3 with NumPy and PyYAML and regex (the
# independent references in tests/ref), PyTorch (python3-torch: checkpoints written by torch.save) and
# `script` (progress-line test), and Open MPI (libopenmpi-dev, openmpi-bin: build/graft-mpi, tests/mpi.sh);
# `deps.sh mpi` only the latter.
set -e
need=""
[ -f /usr/include/jansson.h ] || need="$need libjansson-dev"
[ -f /usr/include/yaml.h ] || need="$need libyaml-dev"
[ -f /usr/include/pcre2.h ] || need="$need libpcre2-dev"
[ -f /usr/include/utf8proc.h ] || need="$need libutf8proc-dev"
[ -f /usr/include/lapacke.h ] || need="$need liblapacke-dev"
[ -f /usr/include/zlib.h ] || need="$need zlib1g-dev" # CRC-32 of PyTorch .bin checkpoints
ls /usr/lib/*/libopenblas.so >/dev/null 2>&1 || need="$need libopenblas-dev"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
[ -x /usr/bin/python3-config ] || need="$need python3-dev" # the Python module (build/python)
if [ "${1:-}" = mpi ] || [ "${1:-}" = test ]; then # build/graft-mpi and its tests (tests/mpi.sh)
    command -v mpicc >/dev/null 2>&1 || need="$need libopenmpi-dev"
    command -v mpirun >/dev/null 2>&1 || need="$need openmpi-bin"
fi
if [ "${1:-}" = test ]; then
    command -v bash >/dev/null 2>&1 || need="$need bash"
    command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config" # tests/shlib.sh builds against graft.pc
    /usr/bin/python3 -c 'import numpy, yaml, regex' >/dev/null 2>&1 || need="$need python3 python3-numpy python3-yaml python3-regex"
    /usr/bin/python3 -c 'import torch' >/dev/null 2>&1 || need="$need python3-torch" # torch.save fixtures (tests/torchbin.sh)
fi
[ -z "$need" ] && exit 0
# one installer at a time (`make -j all asan` starts two)
if command -v flock >/dev/null 2>&1; then
    exec 9>"${TMPDIR:-/tmp}/graft-deps.lock"
    flock 9
fi
echo "graft: installing Debian packages:$need" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $need >/dev/null
