#!/usr/bin/env bash
# Shared by demo.sh and memcheck.sh (sourced): a private containerd, laid out, started and torn
# down. The layout puts Tender's shim first on its PATH and writes its config.toml (no CRI,
# own root/state/sockets).
#
#   private_containerd_layout DIR SOCKET SHIM_BINARY LOG_LEVEL
private_containerd_layout() {
    local dir=$1 sock=$2 shim=$3 level=$4
    mkdir -p "$dir/bin" "$dir/root" "$dir/state"
    ln -s "$shim" "$dir/bin/containerd-shim-tender-v2"
    cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  level = "$level"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
TOML
}

# Starts containerd on the layout above in the background (its PATH: the layout's bin/ first,
# then sbin dirs for runc), sets containerd_pid, and waits until it answers. Fails if it exits
# or does not answer within 30 s.
#
#   private_containerd_start DIR SOCKET
private_containerd_start() {
    local dir=$1 sock=$2
    PATH="$dir/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin" \
        containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
    containerd_pid=$!
    for _ in $(seq 300); do
        ctr -a "$sock" version >/dev/null 2>&1 && return 0
        kill -0 "$containerd_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Removes everything a run on the layout left behind: SIGKILLs and deletes the given tasks
# and containers, stops containerd ($containerd_pid), kills leftover shims (their argv carries
# the socket path), unmounts what is mounted under DIR (deepest first), kills processes still
# in the namespace's cgroups (the namespace is unique to the run), then removes those cgroups
# and the runtime's state. Never fails; leaves DIR itself to the caller.
#
#   private_containerd_teardown DIR SOCKET NAMESPACE [ID ...]
private_containerd_teardown() {
    local dir=$1 sock=$2 ns=$3 id p m c
    shift 3
    if [ -n "${containerd_pid:-}" ] && kill -0 "$containerd_pid" 2>/dev/null; then
        for id in "$@"; do
            timeout 10 ctr -a "$sock" -n "$ns" task kill -s SIGKILL "$id" >/dev/null 2>&1
        done
        for id in "$@"; do
            timeout 10 ctr -a "$sock" -n "$ns" task delete -f "$id" >/dev/null 2>&1
            timeout 10 ctr -a "$sock" -n "$ns" containers delete "$id" >/dev/null 2>&1
        done
        kill -TERM "$containerd_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$containerd_pid" 2>/dev/null
        wait "$containerd_pid" 2>/dev/null
    fi
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$sock"; then
            kill -KILL "${p#/proc/}" 2>/dev/null
        fi
    done
    awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    for c in /sys/fs/cgroup/"$ns" /sys/fs/cgroup/*/"$ns"; do
        [ -d "$c" ] || continue
        find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u |
            while read -r p; do kill -KILL "$p" 2>/dev/null; done
    done
    sleep 0.2
    for c in /sys/fs/cgroup/"$ns" /sys/fs/cgroup/*/"$ns"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -rf "/run/containerd/runc/$ns"
    return 0
}
