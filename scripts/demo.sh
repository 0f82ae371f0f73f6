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
(cd "$repo" && cargo build --release)
shim="$repo/target/release/containerd-shim-tender-v2"
[ -x "$shim" ] || { echo "demo: $shim not built" >&2; exit 1; }

dir=$(mktemp -d /tmp/tender-demo.XXXXXX)
sock="$dir/containerd.sock"
ns=tender-demo
id="demo-$$"
containerd_pid=

ctr_() { ctr -a "$sock" -n "$ns" "$@"; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then
        timeout 10 ctr -a "$sock" -n "$ns" task kill -s SIGKILL "$id" >/dev/null 2>&1
        timeout 10 ctr -a "$sock" -n "$ns" task delete -f "$id" >/dev/null 2>&1
        timeout 10 ctr -a "$sock" -n "$ns" containers delete "$id" >/dev/null 2>&1
        kill -TERM "$containerd_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$containerd_pid" 2>/dev/null
        wait "$containerd_pid" 2>/dev/null
    fi
    # Leftover shims of this containerd (their argv carries our socket path).
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$sock"; then
            kill -KILL "${p#/proc/}" 2>/dev/null
        fi
    done
    # Mounts under the demo dir, deepest first.
    awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    for c in /sys/fs/cgroup/"$ns" /sys/fs/cgroup/*/"$ns"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "/run/containerd/runc/$ns"
    if [ $rc -ne 0 ] && [ -f "$dir/containerd.log" ]; then
        echo "demo: FAILED (exit $rc); containerd log tail:" >&2
        grep -v 'loading plugin' "$dir/containerd.log" | tail -n 40 >&2
    fi
    rm -rf "$dir"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=scripts/private-containerd.sh
. "$repo/scripts/private-containerd.sh"
private_containerd_layout "$dir" "$sock" "$shim" debug

echo "demo: starting a private containerd in $dir"
PATH="$dir/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin" \
    containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
containerd_pid=$!
for _ in $(seq 300); do
    ctr -a "$sock" version >/dev/null 2>&1 && break
    kill -0 "$containerd_pid" 2>/dev/null || { echo "demo: containerd exited" >&2; exit 1; }
    sleep 0.1
done
ctr -a "$sock" version >/dev/null

echo "demo: building and importing $image"
"$repo/scripts/busybox-image.sh" "$dir/busybox.tar" "$image" >/dev/null
ctr_ images import --base-name docker.io/library/busybox "$dir/busybox.tar"

echo "demo: ctr run --rm --runtime $runtime $image $id echo \"Hello from a container run by Tender\""
echo "----------------------------------------------------------------------"
ctr_ run --rm --fifo-dir "$dir/fifo" --runtime "$runtime" "$image" "$id" \
    echo "Hello from a container run by Tender"
echo "----------------------------------------------------------------------"
echo "demo: done"
