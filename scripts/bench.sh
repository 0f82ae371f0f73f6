#!/usr/bin/env bash
# Benchmark Tender against Debian's Go shim (containerd-shim-runc-v2) and
# write the issue-7 scorecard to bench/results.md.
#
#   scripts/bench.sh            (as root; `make bench` does the same)
#
# Builds the release shim, runs the reference harness ../shared/bench/shimbench
# with both runtimes interleaved on one private containerd:
#   go     = io.containerd.runc.v2   (/usr/bin/containerd-shim-runc-v2)
#   tender = io.containerd.tender.v2 (target/release/containerd-shim-tender-v2)
# and turns its results.json into bench/results.md with scripts/bench_table.py
# (lifecycle, exec, memory per shim with 50 pods, 1 GiB stdout throughput:
# Go value, Tender value, ratio, target, PASS/FAIL, plus machine info).
#
# Outputs (in $BENCH_OUT, default bench/):
#   results.md              the scorecard
#   shimbench/results.json  shimbench's raw statistics
#   shimbench/results.md    shimbench's full report
#   shimbench/shimbench.log shimbench's progress log (stderr)
#   shimbench/machine.txt   machine info quoted in the scorecard
# (regenerate the scorecard alone: scripts/bench_table.py bench/shimbench/results.json
#  bench/results.md --machine-info bench/shimbench/machine.txt)
#
# Environment (defaults: ~5 min on 2 vCPUs):
#   BENCH_N=800          lifecycle runs per runtime (-n)
#   BENCH_EXEC_N=400     exec runs per runtime (at most BENCH_N)
#                        (At n=200 a ratio's sampling error is about ±0.012 for
#                        lifecycle and ±0.027 for exec; bench_table.py prints it.
#                        That is as wide as lifecycle's margin to its line, so the
#                        verdict flipped with noise. 4x the runs halve the error.)
#   BENCH_WARMUP=5       unrecorded warm-up runs
#   BENCH_M=50           containers in the density test (the target is for 50)
#   BENCH_DENSITY_ROUNDS=1
#   BENCH_SIZE_MB=1024   MiB through stdout in the throughput test
#   BENCH_TP_ROUNDS=5    throughput rounds per runtime
#   BENCH_TESTS=lifecycle,exec,density,throughput
#   BENCH_QUICK=1        smoke run (~20 s): n=10, warmup 1, M=10, 64 MiB x 1
#                        (explicit BENCH_* values still win)
#   BENCH_NO_BUILD=1     do not build (scripts/build-release.sh)
#   BENCH_OUT=bench      output directory
#   BENCH_ARGS="..."     extra shimbench arguments
#   SHIMBENCH=../shared/bench/shimbench
#   TENDER_SHIM=target/release/containerd-shim-tender-v2
#
# Exit status: non-zero only when the harness fails (missing tools, shimbench
# error, missing results); a FAIL row in the scorecard is not an error.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

shimbench=${SHIMBENCH:-$(cd "$repo/.." && pwd)/shared/bench/shimbench}
out=${BENCH_OUT:-$repo/bench}
shim=${TENDER_SHIM:-$repo/target/release/containerd-shim-tender-v2}

if [ "${BENCH_QUICK:-0}" = 1 ]; then
    : "${BENCH_N:=10}" "${BENCH_WARMUP:=1}" "${BENCH_M:=10}" "${BENCH_SIZE_MB:=64}" "${BENCH_TP_ROUNDS:=1}"
fi
n=${BENCH_N:-800}
exec_n=${BENCH_EXEC_N:-$((n < 400 ? n : 400))}
warmup=${BENCH_WARMUP:-5}
m=${BENCH_M:-50}
density_rounds=${BENCH_DENSITY_ROUNDS:-1}
size_mb=${BENCH_SIZE_MB:-1024}
tp_rounds=${BENCH_TP_ROUNDS:-5}
tests=${BENCH_TESTS:-lifecycle,exec,density,throughput}

die() { echo "bench: $*" >&2; exit 2; }

if [ ! -f "$shimbench" ]; then
    die "the reference harness is missing: $shimbench
bench: it lives in the shared checkout next to this repository (../shared/bench/shimbench,
bench: see ../shared/bench/README.md); set SHIMBENCH=/path/to/shimbench to use another copy."
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (shimbench starts its own containerd)"
command -v python3 >/dev/null || die "python3 not found"
for t in containerd ctr runc containerd-shim-runc-v2; do
    command -v "$t" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$t" >/dev/null 2>&1 ||
        die "$t not found (apt-get install -y containerd runc busybox-static, or make deps)"
done

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "bench: building the release shim"
    "$repo/scripts/build-release.sh" ||
        die "scripts/build-release.sh failed (to bench a built binary: BENCH_NO_BUILD=1 TENDER_SHIM=PATH)"
fi
[ -x "$shim" ] || die "$shim not built"
shim=$(readlink -f "$shim")

mkdir -p "$out/shimbench"
rm -f "$out/shimbench/results.json" "$out/shimbench/results.md" "$out/shimbench/machine.txt"
log=$out/shimbench/shimbench.log

# Machine info for the scorecard (what shimbench itself does not record).
info=$out/shimbench/machine.txt
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "nproc: $(nproc)"
    echo "memory: $(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -srm)"
    echo "CPU: $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "containerd: $(containerd --version 2>/dev/null | awk '{ print $3 }')"
    echo "runc: $(runc --version 2>/dev/null | head -n1 | awk '{ print $3 }')"
    go_shim=$(command -v containerd-shim-runc-v2)
    echo "Go shim: $go_shim ($("$go_shim" -v 2>/dev/null | awk '$1 == "Version:" { print $2 }'))"
    rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')
    [ -z "$(git -C "$repo" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] ||
        rev="$rev + uncommitted changes in src/Cargo"
    echo "Tender: source $rev; binary $(stat -c %s "$shim") bytes," \
        "sha256 $(sha256sum "$shim" | cut -c1-12), mtime $(date -u -r "$shim" '+%Y-%m-%d %H:%M UTC')"
    echo "rustc: $(rustc --version 2>/dev/null)"
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cg=v2
    elif [ -d /sys/fs/cgroup/unified ]; then cg=hybrid; else cg=v1; fi
    echo "cgroups: $cg"
} >"$info"

args=(-r "go=io.containerd.runc.v2"
      -r "tender=io.containerd.tender.v2,shim=$shim"
      --tests "$tests" -n "$n" --exec-n "$exec_n" --warmup "$warmup"
      -m "$m" --density-rounds "$density_rounds"
      --size-mb "$size_mb" --tp-rounds "$tp_rounds"
      -o "$out/shimbench")
# shellcheck disable=SC2206 # BENCH_ARGS is a plain word list on purpose
if [ -n "${BENCH_ARGS:-}" ]; then args+=(${BENCH_ARGS}); fi

echo "bench: $shimbench ${args[*]}"
echo "bench: progress in $log"
rc=0
"$shimbench" "${args[@]}" >/dev/null 2> >(tee "$log" >&2) || rc=$?
if [ ! -f "$out/shimbench/results.json" ]; then
    echo "bench: shimbench failed (exit $rc) and wrote no results; see $log" >&2
    exit 1
fi

table_rc=0
python3 "$repo/scripts/bench_table.py" "$out/shimbench/results.json" "$out/results.md" \
    --machine-info "$info" || table_rc=$?
echo
cat "$out/results.md"
echo "bench: wrote $out/results.md"

if [ "$rc" -ne 0 ]; then
    echo "bench: shimbench exited with $rc (harness error); the results above are partial" >&2
    exit 1
fi
[ "$table_rc" -eq 0 ] || { echo "bench: incomplete results (harness error)" >&2; exit 1; }
exit 0
