#!/usr/bin/env bash
# Build the tender-installer OCI image archive (OCI image layout in a tar) for the
# DaemonSets in deploy/kubernetes/. No registry, no docker build: the layer is written
# with tar and the blobs named with sha256sum, as in scripts/busybox-image.sh.
#
# Usage: scripts/build-installer-image.sh OUTPUT.tar
#
# Contents (one layer):
#   /opt/tender/bin/containerd-shim-tender-v2, /opt/tender/bin/tender-install
#       static release builds (the shim by scripts/build-release.sh, tender-install the
#       same way: +crt-static, --target HOST)
#   /bin/busybox (+ sh, cp, mv, ... links)   a static busybox for the entrypoint
#   /tender-entrypoint.sh                     deploy/image/tender-entrypoint.sh
#   /etc/containerd -> /host/etc/containerd   so the options file lands on the host and
#                                             config.toml names its host path
#   /usr/local/bin/kubectl                    labels the node (see KUBECTL); a dynamically
#   (+ the shared libraries ldd lists)        linked one (Debian's) comes with the libraries
#                                             ldd lists, at their paths (~83 MB in all)
#
# Environment:
#   REF      image reference (default docker.io/library/tender-installer:VERSION, which is
#            what `image: tender-installer:VERSION` in the manifests resolves to)
#   BUSYBOX  static busybox (default /bin/busybox, from busybox-static)
#   KUBECTL  the kubectl to include, for the node label step. Default: the one
#            scripts/fetch-matrix.sh unpacks (Debian sid's kubernetes-client), else
#            `kubectl` on PATH, else an error.
#            KUBECTL=none builds the image without one (~10 MB; the installer then logs the
#            `kubectl label` command to run instead).
#   NO_BUILD=1  use the binaries already in target/release (do not run cargo)
#
# Import on a node with:  ctr -n k8s.io images import OUTPUT.tar
set -euo pipefail

out=${1:?usage: $0 OUTPUT.tar}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cargo=${CARGO:-cargo}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1)
ref=${REF:-docker.io/library/tender-installer:$version}
busybox=${BUSYBOX:-/bin/busybox}
kubectl=${KUBECTL:-}
if [ -z "$kubectl" ]; then
    matrix_kubectl=${TENDER_MATRIX_DIR:-/var/cache/tender-matrix}/kubectl/usr/bin/kubectl
    if [ -x "$matrix_kubectl" ]; then kubectl=$matrix_kubectl; else kubectl=$(command -v kubectl || true); fi
    if [ -z "$kubectl" ]; then
        echo "build-installer-image.sh: no kubectl on PATH nor in the matrix cache" \
            "(scripts/fetch-matrix.sh); set KUBECTL=PATH, or KUBECTL=none for an image" \
            "that does not label its node" >&2
        exit 1
    fi
fi
[ "$kubectl" = none ] && kubectl=

static_ok() { # file: refuse a dynamically linked executable (the image has no libc)
    if command -v file >/dev/null 2>&1 && ! file -L "$1" | grep -Eq 'statically linked|static-pie'; then
        echo "build-installer-image.sh: $1 is not statically linked" >&2
        exit 1
    fi
}

[ -x "$busybox" ] || { echo "build-installer-image.sh: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
static_ok "$busybox"
if [ -n "$kubectl" ]; then
    [ -x "$kubectl" ] || { echo "build-installer-image.sh: KUBECTL=$kubectl is not executable" >&2; exit 1; }
fi

# --- binaries -----------------------------------------------------------------
cd "$repo"
if [ "${NO_BUILD:-0}" != 1 ]; then
    "$repo/scripts/build-release.sh"
    host=$(rustc -vV | sed -n 's/^host: //p')
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
        "$cargo" build --release --target "$host" --bin tender-install
    install -m 0755 "target/$host/release/tender-install" target/release/.tender-install.new
    mv -f target/release/.tender-install.new target/release/tender-install
fi
for b in containerd-shim-tender-v2 tender-install; do
    [ -x "target/release/$b" ] || { echo "build-installer-image.sh: target/release/$b missing" >&2; exit 1; }
    static_ok "target/release/$b"
done

case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    armv7l) arch=arm ;;
    ppc64le) arch=ppc64le ;;
    s390x) arch=s390x ;;
    riscv64) arch=riscv64 ;;
    *) arch=$(uname -m) ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/installer-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- rootfs -------------------------------------------------------------------
root=$work/rootfs
mkdir -p "$root/bin" "$root/dev" "$root/etc" "$root/proc" "$root/sys" "$root/tmp" \
    "$root/root" "$root/run" "$root/var" "$root/opt/tender/bin" "$root/usr/local/bin" \
    "$root/host/bin" "$root/host/etc/containerd"
chmod 1777 "$root/tmp"
install -m 0755 "$busybox" "$root/bin/busybox"
for a in sh echo cat sleep true false ls cp mv rm ln chmod mkdir test [ printf sed grep \
    env id uname readlink basename dirname wget nsenter; do
    ln -s busybox "$root/bin/$a"
done
install -m 0755 target/release/containerd-shim-tender-v2 target/release/tender-install \
    "$root/opt/tender/bin/"
install -m 0755 deploy/image/tender-entrypoint.sh "$root/tender-entrypoint.sh"
ln -s /host/etc/containerd "$root/etc/containerd"
if [ -n "$kubectl" ]; then
    install -m 0755 "$kubectl" "$root/usr/local/bin/kubectl"
    # A dynamically linked kubectl (Debian's is, for cgo): its libraries and loader, at the
    # paths ldd resolves them to (the loader's built-in search path covers them).
    # (ldd fails on a static executable: nothing to copy then.)
    if deps=$(ldd "$kubectl" 2>/dev/null); then
        libs=$(printf '%s\n' "$deps" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p')
        [ -n "$libs" ] || { echo "build-installer-image.sh: ldd lists no library path for $kubectl" >&2; exit 1; }
        for lib in $libs; do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    fi
    "$kubectl" version --client >/dev/null || { echo "build-installer-image.sh: $kubectl does not run" >&2; exit 1; }
fi
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"

# --- layer (uncompressed, reproducible tar) ------------------------------------
blobs=$work/layout/blobs/sha256
mkdir -p "$blobs"
tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=ustar \
    -C "$root" -cf "$work/layer.tar" .

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

layer_digest=$(sha "$work/layer.tar")
layer_size=$(size "$work/layer.tar")
mv "$work/layer.tar" "$blobs/$layer_digest"

# --- config -------------------------------------------------------------------
cat >"$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/bin:/opt/tender/bin:/bin"],"Entrypoint":["/tender-entrypoint.sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_digest"]},"history":[{"created_by":"scripts/build-installer-image.sh","comment":"Tender $version static binaries, static busybox"}]}
JSON
config_digest=$(sha "$work/config.json")
config_size=$(size "$work/config.json")
mv "$work/config.json" "$blobs/$config_digest"

# --- manifest -----------------------------------------------------------------
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
manifest_digest=$(sha "$work/manifest.json")
manifest_size=$(size "$work/manifest.json")
mv "$work/manifest.json" "$blobs/$manifest_digest"

# --- layout -------------------------------------------------------------------
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
cat >"$work/layout/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"platform":{"architecture":"$arch","os":"linux"},"annotations":{"io.containerd.image.name":"$ref","org.opencontainers.image.ref.name":"$ref"}}]}
JSON

mkdir -p "$(dirname "$out")"
tmp_out="$out.tmp.$$"
tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=ustar \
    -C "$work/layout" -cf "$tmp_out" oci-layout index.json blobs
mv -f "$tmp_out" "$out"
echo "$out"
