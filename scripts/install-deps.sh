#!/usr/bin/env bash
# Install the host packages Tender's tests and demo need (Debian/Ubuntu).
# Runs apt-get only when something is missing.
set -euo pipefail

packages=(containerd runc crun busybox-static criu containernetworking-plugins)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# containerd 1.7 / 2.1, Docker and kubectl for the version matrix: a private cache, never
# installed system-wide (needs root for apt-get's own lock-free download; skipped otherwise).
fetch_matrix() {
    if [ "$(id -u)" -eq 0 ]; then
        "$here/fetch-matrix.sh"
    else
        echo "install-deps: not root, skipping scripts/fetch-matrix.sh" >&2
    fi
}

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all present (${packages[*]})"
    fetch_matrix
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update
"${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fetch_matrix
