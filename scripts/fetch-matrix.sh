#!/usr/bin/env bash
# Fetches the newer containerd and Docker builds the end-to-end suites run against, from
# Debian's archive (suites trixie and sid), without touching the host's apt state: an extra
# sources list with its own lists/cache directories, `apt-get download`, `dpkg-deb -x` into a
# private directory. Nothing is installed system-wide. Results are cached (the directory is
# reused while every expected binary is present at its expected version).
#
#   scripts/fetch-matrix.sh [DIR]      (default: $TENDER_MATRIX_DIR or /var/cache/tender-matrix)
#
# Layout afterwards (each a `dpkg-deb -x` tree):
#   DIR/containerd-1.7/usr/bin/{containerd,ctr,containerd-shim-runc-v2}    (trixie, 1.7.24)
#   DIR/containerd-2.1/usr/bin/{containerd,ctr,containerd-shim-runc-v2}    (sid, 2.1.x)
#   DIR/docker/usr/{bin,sbin,libexec/docker/cli-plugins}                    (sid: docker.io, docker-cli)
#   DIR/kubectl/usr/bin/kubectl                                             (sid: kubectl)
# sid's runc/crun need a newer glibc than bookworm's: bookworm's stay in use.
set -euo pipefail

dir=${1:-${TENDER_MATRIX_DIR:-/var/cache/tender-matrix}}
mirror=${TENDER_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    # The host's own Debian mirror (deb822 or one-line sources), else the default.
    mirror=$(grep -hoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        head -n1 | sed 's/^URIs: *//') || true
    if [ -z "$mirror" ]; then
        mirror=$(grep -hoE '^deb +(\[[^]]*\] +)?[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null |
            head -n1 | awk '{print $NF}') || true
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
fi
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

want_ok() {
    [ -x "$dir/containerd-1.7/usr/bin/containerd" ] &&
        [ -x "$dir/containerd-1.7/usr/bin/ctr" ] &&
        [ -x "$dir/containerd-2.1/usr/bin/containerd" ] &&
        [ -x "$dir/containerd-2.1/usr/bin/ctr" ] &&
        [ -x "$dir/docker/usr/sbin/dockerd" ] &&
        [ -x "$dir/docker/usr/bin/docker" ] &&
        [ -x "$dir/kubectl/usr/bin/kubectl" ] &&
        [ -f "$dir/.complete" ]
}

if want_ok; then
    echo "fetch-matrix: cached in $dir"
    exit 0
fi

apt_dir="$dir/.apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$apt_dir/etc/preferences.d"
cat >"$apt_dir/sources.list" <<EOF
deb [signed-by=$keyring] $mirror trixie main
deb [signed-by=$keyring] $mirror sid main
EOF
: >"$apt_dir/status"
apt_opts=(
    -o "Dir::Etc::SourceList=$apt_dir/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
    -o "Dir::State::Lists=$apt_dir/lists"
    -o "Dir::State::Status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache"
    -o "Dir::Cache::Archives=$apt_dir/cache/archives"
    -o "Dir::Cache::pkgcache=$apt_dir/cache/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$apt_dir/cache/srcpkgcache.bin"
    -o "APT::Get::List-Cleanup=0"
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=root"
)

echo "fetch-matrix: apt-get update (trixie, sid) from $mirror into $apt_dir"
apt-get "${apt_opts[@]}" update -qq

# `apt-get download PKG/SUITE` picks that suite's candidate version.
fetch() { # fetch SUITE PKG DEST
    local suite=$1 pkg=$2 dest=$3 deb
    rm -f "$apt_dir/debs/${pkg}_"*.deb
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download -qq "$pkg/$suite")
    deb=$(ls "$apt_dir/debs/${pkg}_"*.deb)
    echo "fetch-matrix: $suite $(basename "$deb") -> $dest"
    mkdir -p "$dest"
    dpkg-deb -x "$deb" "$dest"
}

rm -rf "$dir/containerd-1.7" "$dir/containerd-2.1" "$dir/docker" "$dir/kubectl" "$dir/.complete"
fetch trixie containerd "$dir/containerd-1.7"
fetch sid containerd "$dir/containerd-2.1"
fetch sid docker.io "$dir/docker"
fetch sid docker-cli "$dir/docker"
fetch sid kubectl "$dir/kubectl"   # kubernetes-client is a transitional package for it

for v in 1.7 2.1; do
    "$dir/containerd-$v/usr/bin/containerd" --version
done
"$dir/docker/usr/sbin/dockerd" --version
"$dir/docker/usr/bin/docker" --version
"$dir/kubectl/usr/bin/kubectl" version --client 2>/dev/null | head -n1 || true
rm -rf "$apt_dir/cache/archives"/*.deb
touch "$dir/.complete"
echo "fetch-matrix: done ($dir)"
