#!/usr/bin/env bash
# What a containerd build hands a shim: runs one `ctr run --rm` through Tender under a private
# containerd whose shim is a wrapper that records each call's argv, environment (containerd is
# started with an empty environment, so all of it comes from containerd), stdin and bundle
# listing, then execs the real shim. Prints the record. Used for the README's "Which task API
# containerd gets" (1.6.20 vs 1.7.24 vs 2.1.9).
#
#   scripts/probe-shim-start.sh BIN_DIR [SHIM] [RUNTIME_CONFIG_TOML]
#     BIN_DIR   directory holding containerd and ctr (e.g. /usr/bin,
#               /var/cache/tender-matrix/containerd-2.1/usr/bin)
#     SHIM      the shim binary (default: target/debug/containerd-shim-tender-v2)
#     RUNTIME_CONFIG_TOML  passed as `ctr run --runtime-config-path` (options on stdin)
# Needs root and the busybox image script's prerequisites. Leaves nothing behind.
set -euo pipefail

bin=${1:?usage: $0 BIN_DIR [SHIM] [RUNTIME_CONFIG_TOML]}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shim=$(realpath "${2:-$repo/target/debug/containerd-shim-tender-v2}")
opts=${3:-}
[ -x "$bin/containerd" ] && [ -x "$bin/ctr" ] || { echo "no containerd/ctr in $bin" >&2; exit 1; }
[ -x "$shim" ] || { echo "no shim at $shim (cargo build)" >&2; exit 1; }

dir=$(mktemp -d /tmp/tender-probe-XXXXXX)
sock=$dir/containerd.sock
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/bin" "$dir/root" "$dir/state"

cat >"$dir/bin/containerd-shim-tender-v2" <<WRAPPER
#!/bin/bash
in=\$(mktemp)
cat >"\$in"
{
    echo "=== \$*"
    echo "--- cwd: \$PWD"
    echo "--- env:"; env | grep -v '^\(PWD\|SHLVL\|_\)=' | sort
    echo "--- stdin (\$(stat -c %s "\$in") bytes):"; od -An -c "\$in"
    echo "--- bundle:"; ls -A
} >>"$dir/calls.log"
exec "$shim" "\$@" <"\$in"
WRAPPER
chmod +x "$dir/bin/containerd-shim-tender-v2"

version=$("$bin/containerd" --version)
case $version in
*" v2."* | *" 2."*) config_version=3 ;;
*) config_version=2 ;;
esac
cat >"$dir/config.toml" <<TOML
version = $config_version
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
TOML

env -i PATH="$dir/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "$bin/containerd" --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 300); do
    "$bin/ctr" -a "$sock" version >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/containerd.log" >&2; exit 1; }
    sleep 0.1
done
ctr=("$bin/ctr" -a "$sock" -n probe)
bash "$repo/scripts/busybox-image.sh" "$dir/busybox.tar" >/dev/null
"${ctr[@]}" images import --base-name docker.io/library/busybox "$dir/busybox.tar" >/dev/null
echo "# $version"
"${ctr[@]}" run --rm --runtime io.containerd.tender.v2 ${opts:+--runtime-config-path "$opts"} \
    docker.io/library/busybox:tender probe echo container ran
"${ctr[@]}" images rm docker.io/library/busybox:tender >/dev/null
sed "s|$dir|<dir>|g" "$dir/calls.log"
