#!/usr/bin/env bash
# Shared by demo.sh and memcheck.sh (sourced): lays out a private containerd under $1 with
# Tender's shim first on its PATH, and writes its config.toml (no CRI, own root/state/sockets).
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
