#!/bin/sh
# Install the Debian packages graft builds against, when missing. Called by `make`; safe to re-run.
set -e
need=""
[ -f /usr/include/jansson.h ] || need="$need libjansson-dev"
[ -f /usr/include/yaml.h ] || need="$need libyaml-dev"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
[ -z "$need" ] && exit 0
echo "graft: installing Debian packages:$need" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $need >/dev/null
