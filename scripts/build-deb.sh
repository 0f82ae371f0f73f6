#!/usr/bin/env bash
# Builds the Debian package target/deb/tender_<version>_<arch>.deb (or in OUTDIR):
#   scripts/build-deb.sh [OUTDIR]
#
# The binaries are the static release builds of scripts/build-release.sh
# (incremental: reruns cargo only when sources changed), so the package depends on no
# library. It holds
#   /usr/bin/containerd-shim-tender-v2, /usr/bin/tender-install,
#   /usr/share/man/man8/{containerd-shim-tender-v2,tender-install}.8.gz,
#   /usr/share/doc/tender/{copyright,README.md.gz,changelog.gz},
#   /usr/share/lintian/overrides/tender
# and NO maintainer scripts: the package never touches /etc/containerd. After
# `dpkg -i`, run `tender-install install --restart auto` (README, the walk-through's way A).
#
# Only dpkg-deb, gzip and the Rust toolchain are needed. SKIP_BUILD=1 packages the
# binaries already in target/release as they are.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
outdir=${1:-$repo/target/deb}

for tool in dpkg-deb dpkg gzip; do
    command -v "$tool" >/dev/null || { echo "build-deb: \`$tool\` not found (apt-get install dpkg gzip)" >&2; exit 1; }
done

version=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)
# The Maintainer field and changelog signature: set DEB_MAINTAINER="Name <address>" when
# publishing the package.
maintainer=${DEB_MAINTAINER:-Tender maintainers <tender@example.org>}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    scripts/build-release.sh
fi
for bin in containerd-shim-tender-v2 tender-install; do
    [ -x "target/release/$bin" ] || { echo "build-deb: target/release/$bin missing" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/tender-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/tender
umask 022
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/doc/tender" "$root/usr/share/man/man8"

install -m 0755 target/release/containerd-shim-tender-v2 target/release/tender-install "$root/usr/bin/"
for page in containerd-shim-tender-v2 tender-install; do
    gzip -9n <"packaging/deb/$page.8" >"$root/usr/share/man/man8/$page.8.gz"
done
gzip -9n <README.md >"$root/usr/share/doc/tender/README.md.gz"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
date_r=$(git log -1 --format=%aD 2>/dev/null || date -R)
{
    echo "tender ($version) unstable; urgency=medium"
    echo
    echo "  * Built from git commit $commit."
    echo
    echo " -- $maintainer  $date_r"
} | gzip -9n >"$root/usr/share/doc/tender/changelog.gz"

year=$(git log -1 --format=%ad --date=format:%Y 2>/dev/null || date +%Y)
cat >"$root/usr/share/doc/tender/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tender
Comment: Tender, a containerd shim v2 written in Rust. The binaries are statically
 linked against glibc and the Rust crates listed in Cargo.lock (each under its own
 license, all compatible with Apache-2.0).

Files: *
Copyright: $year Tender contributors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License");
 you may not use this file except in compliance with the License.
 You may obtain a copy of the License at
 .
 http://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS,
 WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 See the License for the specific language governing permissions and
 limitations under the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0
 can be found in "/usr/share/common-licenses/Apache-2.0".
COPYRIGHT

# lintian reads a static-pie executable as a shared library without a libc dependency.
mkdir -p "$root/usr/share/lintian/overrides"
cat >"$root/usr/share/lintian/overrides/tender" <<'OVERRIDES'
# Both binaries are static-pie executables (no libc.so), see scripts/build-release.sh.
tender: shared-library-lacks-prerequisites [usr/bin/containerd-shim-tender-v2]
tender: shared-library-lacks-prerequisites [usr/bin/tender-install]
OVERRIDES

size_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: tender
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size_kb
Depends: runc | crun
Recommends: containerd
Section: admin
Priority: optional
Description: small, fast containerd shim v2 (runtime io.containerd.tender.v2)
 Tender is a containerd shim v2 written in Rust, a drop-in for containerd's
 runc shim: containerd runs it for containers started with the runtime
 io.containerd.tender.v2. Both binaries are static.
 .
 This package installs containerd-shim-tender-v2 and tender-install and does
 not change containerd's configuration. For Kubernetes (CRI), run
 "tender-install install" and restart containerd.
CONTROL
(cd "$root" && find usr -type f -exec md5sum {} + | sort -k2) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$outdir"
deb=$outdir/tender_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$root" "$deb.tmp" >/dev/null
mv -f "$deb.tmp" "$deb"
echo "$deb"
