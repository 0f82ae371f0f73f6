#!/usr/bin/env bash
# Pod benchmark of issue 14 (`make bench-pods`; `make bench` runs it after the shim
# scorecard): CRI pod start and teardown, and the memory of a pod's infrastructure, for
#   runc        containerd's Go shim (io.containerd.runc.v2) + pause container
#   tender      Tender (io.containerd.tender.v2) + pause container
#   tender-shim Tender as containerd's shim sandboxer (sandboxer = "shim": no pause container)
# on ONE private containerd 2.1.9 with CRI, rounds interleaved. Writes bench/pods.md.
#
#   scripts/bench-pods.sh          (as root; ~1 min on 2 vCPUs, plus the release build)
#
# The benchmark is tests/podbench.rs (an #[ignore]d test, reusing the CRI client and node of
# tests/cri); this script builds the static release shim (scripts/build-release.sh) and runs
#   cargo test --test podbench -- --ignored --nocapture --exact podbench
# The driver is built in cargo's test profile on purpose: `cargo test --release` would
# replace target/release/containerd-shim-tender-v2 (the static build measured here and by
# scripts/bench.sh) with cargo's dynamic one. The client's own cost per CRI call is printed
# in the report (a fraction of a millisecond next to pods of hundreds).
#
# Environment (tests/podbench.rs documents them too):
#   PODBENCH_N=40        measured rounds (one pod per mode each)
#   PODBENCH_WARMUP=2    unrecorded warm-up rounds
#   PODBENCH_PODS=10     pods running per mode when memory is sampled
#   PODBENCH_SETTLE=2    seconds between starting them and sampling
#   PODBENCH_QUICK=1     N=3, warm-up 1, 3 pods (BENCH_QUICK=1 sets it)
#   PODBENCH_MODES=runc,tender,tender-shim
#   PODBENCH_OUT=bench/pods.md   (`-`: print only)
#   PODBENCH_TENDER_SHIM=target/release/containerd-shim-tender-v2 (or TENDER_SHIM): the
#                        Tender binary of both Tender modes, e.g. another branch's build
#   PODBENCH_GO_SHIM     default: containerd 2.1's own containerd-shim-runc-v2
#   PODBENCH_CONTAINERD  directory with containerd + ctr (default: the 2.1.9 that
#                        scripts/fetch-matrix.sh unpacks under /var/cache/tender-matrix)
#   PODBENCH_NO_BUILD=1  (or BENCH_NO_BUILD=1) do not run scripts/build-release.sh
#
# Exit status: non-zero when the benchmark cannot run (prerequisites, a failing Go shim or
# Tender + pause pod). An unmet target, or the shim sandboxer being unavailable (reported as
# such in the table), is not an error.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
cargo=${CARGO:-cargo}

die() { echo "bench-pods: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (the benchmark starts its own containerd)"
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    export PODBENCH_QUICK="${PODBENCH_QUICK:-1}"
fi
if [ -n "${TENDER_SHIM:-}" ] && [ -z "${PODBENCH_TENDER_SHIM:-}" ]; then
    export PODBENCH_TENDER_SHIM="$TENDER_SHIM"
fi
if [ "${PODBENCH_NO_BUILD:-${BENCH_NO_BUILD:-0}}" != 1 ]; then
    echo "bench-pods: building the release shim"
    CARGO=$cargo "$repo/scripts/build-release.sh" ||
        die "scripts/build-release.sh failed (to bench a built binary: PODBENCH_NO_BUILD=1 PODBENCH_TENDER_SHIM=PATH)"
fi
"$cargo" test --test podbench --no-run
exec "$cargo" test --test podbench -- --ignored --nocapture --exact podbench --test-threads=1
