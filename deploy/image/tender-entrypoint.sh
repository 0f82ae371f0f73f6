#!/bin/sh
# Entrypoint of the tender-installer image (scripts/build-installer-image.sh), run by the
# DaemonSets in deploy/kubernetes/. busybox sh.
#
# The host's binary directory is mounted at /host/bin and its /etc/containerd at
# /host/etc/containerd. In the image, /etc/containerd is a symlink to
# /host/etc/containerd, so `--options-file /etc/containerd/tender.toml` both writes the
# file on the host and puts the HOST path into config.toml (the path containerd reads).
#
# containerd is restarted by tender-install itself (--restart): where the host's PID 1 is
# systemd (the pod has hostPID: true), `systemctl restart containerd` runs in PID 1's
# namespaces (nsenter -t 1 -m -u -i -n -p), and only when the config changed (or an earlier
# restart failed); elsewhere it prints what the operator must do and does not fail.
#
# Environment:
#   TENDER_MODE             install (default) or uninstall
#   RESTART_CONTAINERD      auto (default): through systemd where PID 1 is systemd, else
#                           print what to do; systemd: fail without systemd; none: only
#                           print what to do
#   NODE_NAME               this node (downward API spec.nodeName); needed for the label
#   TENDER_SKIP_LABEL=1     do not label/unlabel the node (no API server, e.g. in tests)
#   TENDER_REMOVE_BINARIES=1  uninstall also deletes the binaries from /host/bin
#   TENDER_NO_SLEEP=1       exit when done instead of sleeping (a DaemonSet pod must not
#                           exit, or it is restarted; ctr run in tests wants it to exit)
set -eu

mode=${TENDER_MODE:-install}
restart=${RESTART_CONTAINERD:-auto}
bin=/host/bin
config=/host/etc/containerd/config.toml
options=/etc/containerd/tender.toml
label=tender-runtime
src=/opt/tender/bin

say() { echo "tender-installer: $*"; }

# The label: with the image's kubectl and the pod's service account (in-cluster config;
# RBAC: get and patch nodes). An image built with KUBECTL=none has no kubectl: say what to run.
set_label() { # "installed" or "" (remove)
    if [ "${TENDER_SKIP_LABEL:-0}" = 1 ]; then
        say "label step skipped (TENDER_SKIP_LABEL=1)"
        return 0
    fi
    if [ -z "${NODE_NAME:-}" ]; then
        say "NODE_NAME is not set (downward API spec.nodeName); cannot label the node" >&2
        return 1
    fi
    if [ -n "$1" ]; then arg="$label=$1"; value="\"$1\""; else arg="$label-"; value=null; fi
    if command -v kubectl >/dev/null 2>&1; then
        # A JSON merge patch of the node's labels (kubectl reads the node first, so RBAC
        # allows get and patch). Removing a label the node does not have is a no-op.
        kubectl patch node "$NODE_NAME" --type=merge \
            -p "{\"metadata\":{\"labels\":{\"$label\":$value}}}"
        say "node $NODE_NAME: label $arg"
    else
        say "no kubectl in this image: run  kubectl label node $NODE_NAME --overwrite $arg"
    fi
}

finish() {
    say "done"
    if [ "${TENDER_NO_SLEEP:-0}" = 1 ]; then
        exit 0
    fi
    # A DaemonSet pod must keep running; sleep in the background so TERM ends us at once.
    trap 'exit 0' TERM INT
    while :; do
        sleep 3600 &
        wait $! || true
    done
}

case "$mode" in
install)
    [ -d "$bin" ] || { say "$bin is not mounted" >&2; exit 1; }
    [ -e "$config" ] || { say "$config not found (is /etc/containerd mounted at /host/etc/containerd, and does containerd have a config.toml? create one with containerd config default)" >&2; exit 1; }
    for b in containerd-shim-tender-v2 tender-install; do
        # Replace, not overwrite in place: a running shim may be executing the old file.
        cp "$src/$b" "$bin/.$b.new"
        chmod 0755 "$bin/.$b.new"
        mv -f "$bin/.$b.new" "$bin/$b"
        say "installed $bin/$b"
    done
    # Then the label, so that pods are scheduled here only once containerd has the handler.
    "$src/tender-install" install --config "$config" --options-file "$options" \
        --restart "$restart"
    set_label installed
    finish
    ;;
uninstall)
    # The label first, so that no new Tender pod is scheduled here while the handler goes.
    set_label ""
    if [ -e "$config" ]; then
        "$src/tender-install" uninstall --config "$config" --restart "$restart"
    else
        say "$config not found; nothing to uninstall there"
    fi
    if [ "${TENDER_REMOVE_BINARIES:-0}" = 1 ]; then
        rm -f "$bin/containerd-shim-tender-v2" "$bin/tender-install"
        say "removed the binaries from $bin"
    fi
    finish
    ;;
*)
    say "TENDER_MODE must be install or uninstall, not \`$mode'" >&2
    exit 2
    ;;
esac
