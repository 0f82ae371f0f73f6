#!/usr/bin/env bash
# Build a minimal busybox OCI image archive (OCI image layout in a tar) from
# the host's static busybox binary. No network, no registry needed.
#
# Usage: scripts/busybox-image.sh OUTPUT.tar [REF] [BUSYBOX]
#   OUTPUT.tar  where to write the archive (written atomically)
#   REF         image reference stored in the index annotation
#               (default: docker.io/library/busybox:tender)
#   BUSYBOX     path of a *static* busybox binary (default: /bin/busybox)
#
# Import with:  ctr images import --base-name docker.io/library/busybox OUTPUT.tar
# The output is deterministic for a given busybox binary.
set -euo pipefail

out=${1:?usage: $0 OUTPUT.tar [REF] [BUSYBOX]}
ref=${2:-docker.io/library/busybox:tender}
busybox=${3:-/bin/busybox}

if [ ! -x "$busybox" ]; then
    echo "busybox-image.sh: $busybox not found (apt-get install busybox-static)" >&2
    exit 1
fi
if command -v file >/dev/null 2>&1 && ! file -L "$busybox" | grep -q 'statically linked'; then
    echo "busybox-image.sh: $busybox is not statically linked (install busybox-static)" >&2
    exit 1
fi

case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    armv7l) arch=arm ;;
    ppc64le) arch=ppc64le ;;
    s390x) arch=s390x ;;
    riscv64) arch=riscv64 ;;
    *) arch=$(uname -m) ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/busybox-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- rootfs -----------------------------------------------------------------
root=$work/rootfs
mkdir -p "$root/bin" "$root/dev" "$root/etc" "$root/proc" "$root/sys" \
    "$root/tmp" "$root/root" "$root/run" "$root/var"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
applets="sh ash echo cat sleep true false dd head tail yes ls stty id ps wc
sha256sum md5sum env printf test [ kill pwd hostname uname mount umount grep
sed awk tr cut sort uniq mkdir rm rmdir cp mv ln touch chmod stat date tee
seq nproc top free df du find xargs readlink realpath basename dirname
timeout nohup setsid tty whoami usleep wget nc vi less more which"
for a in $applets; do
    ln -s busybox "$root/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"

# --- layer (uncompressed, reproducible tar) --------------------------------
blobs=$work/layout/blobs/sha256
mkdir -p "$blobs"
tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner \
    --format=ustar \
    -C "$root" -cf "$work/layer.tar" .

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

layer_digest=$(sha "$work/layer.tar")
layer_size=$(size "$work/layer.tar")
mv "$work/layer.tar" "$blobs/$layer_digest"

# --- config -----------------------------------------------------------------
cat >"$work/config.json" <<JSON
{"architecture":"$arch","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_digest"]},"history":[{"created_by":"scripts/busybox-image.sh","comment":"static busybox from the host"}]}
JSON
config_digest=$(sha "$work/config.json")
config_size=$(size "$work/config.json")
mv "$work/config.json" "$blobs/$config_digest"

# --- manifest ---------------------------------------------------------------
cat >"$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
manifest_digest=$(sha "$work/manifest.json")
manifest_size=$(size "$work/manifest.json")
mv "$work/manifest.json" "$blobs/$manifest_digest"

# --- layout -----------------------------------------------------------------
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
