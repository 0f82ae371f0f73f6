#!/usr/bin/env bash
# Demo: run a busybox container through a private containerd using Tender.
#
#   scripts/demo.sh            (as root; `make demo` does the same)
#
# Installs missing deps, builds the release shim, starts a throw-away
# containerd (own root/state/sockets under /tmp) with the shim first on its
# PATH, imports a busybox image built from the host's static busybox, runs
#   ctr run --rm --runtime io.containerd.tender.v2 ... echo "Hello from a container run by Tender"
# and cleans everything up on exit.
#
# TENDER_DEMO_RUNTIME=io.containerd.runc.v2 runs the same demo with the Go shim.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runtime=${TENDER_DEMO_RUNTIME:-io.containerd.tender.v2}
image=docker.io/library/busybox:tender

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: must run as root (containerd needs it)" >&2
    exit 1
fi

"$repo/scripts/install-deps.sh"

echo "demo: building the release shim"
"$repo/scripts/build-release.sh"
shim="$repo/target/release/containerd-shim-tender-v2"
[ -x "$shim" ] || { echo "demo: $shim not built" >&2; exit 1; }

dir=$(mktemp -d /tmp/tender-demo.XXXXXX)
sock="$dir/containerd.sock"
ns=tender-demo
id="demo-$$"
containerd_pid=

ctr_() { ctr -a "$sock" -n "$ns" "$@"; }

# shellcheck source=scripts/private-containerd.sh
. "$repo/scripts/private-containerd.sh"

cleanup() {
    local rc=$?
    set +e
    private_containerd_teardown "$dir" "$sock" "$ns" "$id"
    if [ $rc -ne 0 ] && [ -f "$dir/containerd.log" ]; then
        echo "demo: FAILED (exit $rc); containerd log tail:" >&2
        grep -v 'loading plugin' "$dir/containerd.log" | tail -n 40 >&2
    fi
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

private_containerd_layout "$dir" "$sock" "$shim" debug

echo "demo: starting a private containerd in $dir"
private_containerd_start "$dir" "$sock" || { echo "demo: containerd did not come up" >&2; exit 1; }

echo "demo: building and importing $image"
"$repo/scripts/busybox-image.sh" "$dir/busybox.tar" "$image" >/dev/null
ctr_ images import --base-name docker.io/library/busybox "$dir/busybox.tar"

echo "demo: ctr run --rm --runtime $runtime $image $id echo \"Hello from a container run by Tender\""
echo "----------------------------------------------------------------------"
ctr_ run --rm --fifo-dir "$dir/fifo" --runtime "$runtime" "$image" "$id" \
    echo "Hello from a container run by Tender"
echo "----------------------------------------------------------------------"
echo "demo: done"
