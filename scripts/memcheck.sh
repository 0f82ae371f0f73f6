#!/usr/bin/env bash
# Memory budget check for the Tender shim (CI-friendly; `make memcheck`).
#
#   scripts/memcheck.sh        (as root)
#
# Starts a throw-away containerd (own root/state/sockets under /tmp, nothing
# shared with a system containerd), imports the local busybox image, starts
# MEMCHECK_N (default 50) `sleep` containers with io.containerd.tender.v2 via
# `ctr run -d`, waits MEMCHECK_SETTLE seconds, then samples every Tender shim
# of that containerd:
#   PSS, RSS   /proc/PID/smaps_rollup
#   threads    Threads: in /proc/PID/status
# prints one line per shim plus mean/max, and fails (exit 1) if
#   mean PSS per shim > MEMCHECK_PSS_KB   (default 800 kB  = 0.8 MB)
#   max  RSS per shim > MEMCHECK_RSS_KB   (default 4000 kB = 4 MB)
#   max  threads      > MEMCHECK_THREADS  (default 2)
#   or fewer than N shims are found.
#
# Why N=50 by default: PSS splits shared pages (the shim's text, libc) among
# all processes mapping them, so per-shim PSS falls as more shims run. The
# issue-7 target (PSS <= 0.8 MB per pod shim) is stated for 50 pods, so the
# check runs 50 containers (about 10-20 s on 2 vCPUs). With a smaller N the
# PSS budget would have to be looser to be honest; MEMCHECK_N=10 is allowed
# for a quicker look, and then MEMCHECK_PSS_KB should be raised accordingly
# (the script warns). RSS and thread limits do not depend on N.
# 1 MB is read strictly as 1000 kB (kB as /proc reports them).
#
# Other knobs: MEMCHECK_IO=fifo|null (fifo: ctr's default FIFOs, as in the
# benchmark; null: --null-io), MEMCHECK_NO_BUILD=1, TENDER_SHIM=path,
# MEMCHECK_HOLD=SECONDS (keep the containers running that long after sampling,
# to inspect the shims by hand; the report lists their pids).
# Exit: 0 within budget, 1 over budget, 2 harness error.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=${MEMCHECK_N:-50}
settle=${MEMCHECK_SETTLE:-2}
pss_budget=${MEMCHECK_PSS_KB:-800}
rss_budget=${MEMCHECK_RSS_KB:-4000}
threads_budget=${MEMCHECK_THREADS:-2}
io_mode=${MEMCHECK_IO:-fifo}
shim=${TENDER_SHIM:-$repo/target/release/containerd-shim-tender-v2}
image=docker.io/library/busybox:tender
runtime=io.containerd.tender.v2

die() { echo "memcheck: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (containerd needs it)"
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
for t in containerd ctr runc; do
    command -v "$t" >/dev/null || die "$t not found (make deps)"
done
case "$io_mode" in fifo) io_args=() ;; null) io_args=(--null-io) ;; *) die "MEMCHECK_IO must be fifo or null" ;; esac

if [ "${MEMCHECK_NO_BUILD:-0}" != 1 ]; then
    echo "memcheck: building the release shim"
    "$repo/scripts/build-release.sh" ||
        die "scripts/build-release.sh failed (to check an already built binary: MEMCHECK_NO_BUILD=1 TENDER_SHIM=PATH)"
fi
[ -x "$shim" ] || die "$shim not built"
shim=$(readlink -f "$shim")

dir=$(mktemp -d /tmp/tender-memcheck.XXXXXX)
sock="$dir/containerd.sock"
ns=tender-memcheck-$$
containerd_pid=
ids=()

ctr_() { ctr -a "$sock" -n "$ns" "$@"; }

# shellcheck source=scripts/private-containerd.sh
. "$repo/scripts/private-containerd.sh"

# shellcheck disable=SC2317 # invoked through the EXIT trap
cleanup() {
    local rc=$?
    set +e
    private_containerd_teardown "$dir" "$sock" "$ns" "${ids[@]}"
    if [ "$rc" -eq 2 ] && [ -f "$dir/containerd.log" ]; then
        echo "memcheck: harness error; containerd log tail:" >&2
        grep -v 'loading plugin' "$dir/containerd.log" | tail -n 40 >&2
    fi
    rm -rf "$dir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

private_containerd_layout "$dir" "$sock" "$shim" warn

private_containerd_start "$dir" "$sock" || die "containerd did not come up (see $dir/containerd.log)"

"$repo/scripts/busybox-image.sh" "$dir/busybox.tar" "$image" >/dev/null || die "cannot build the busybox image"
ctr_ images import --base-name docker.io/library/busybox "$dir/busybox.tar" >/dev/null ||
    die "cannot import the busybox image"

echo "memcheck: starting $n sleep containers with $runtime ($shim, io=$io_mode)"
t0=$(date +%s.%N)
for i in $(seq "$n"); do
    id="mc-$$-$i"
    ids+=("$id")
    ctr_ run -d "${io_args[@]}" --fifo-dir "$dir/fifo" --runtime "$runtime" "$image" "$id" \
        sleep 100000 >/dev/null || die "container $i of $n did not start"
done
t1=$(date +%s.%N)
sleep "$settle"

# Our shims: processes running the Tender binary whose argv names our socket. The binary
# is matched by name so that a rebuild meanwhile ("... (deleted)") does not hide a shim.
pids=()
for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    exe=${exe% (deleted)}
    [ "${exe##*/}" = "${shim##*/}" ] || continue
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$sock" || continue
    pids+=("${p#/proc/}")
done
[ "${#pids[@]}" -gt 0 ] || die "no Tender shim processes found"

report=$dir/report
for pid in "${pids[@]}"; do
    pss=$(awk '$1 == "Pss:" { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null)
    rss=$(awk '$1 == "Rss:" { print $2 }' "/proc/$pid/smaps_rollup" 2>/dev/null)
    uss=$(awk '$1 == "Private_Clean:" || $1 == "Private_Dirty:" { s += $2 } END { print s + 0 }' \
        "/proc/$pid/smaps_rollup" 2>/dev/null)
    thr=$(awk '$1 == "Threads:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
    if [ -z "$pss" ] || [ -z "$rss" ] || [ -z "$thr" ]; then continue; fi
    echo "$pid $pss $rss $uss $thr"
done >"$report"

awk -v n="$n" -v pss_b="$pss_budget" -v rss_b="$rss_budget" -v thr_b="$threads_budget" \
    -v secs="$(echo "$t1 $t0" | awk '{ printf "%.1f", $1 - $2 }')" '
    BEGIN { printf "%8s %8s %8s %8s %8s\n", "pid", "PSS kB", "RSS kB", "USS kB", "threads" }
    {
        printf "%8d %8d %8d %8d %8d\n", $1, $2, $3, $4, $5
        k++; pss += $2; rss += $3; uss += $4; thr += $5
        if ($2 > mpss) mpss = $2; if ($3 > mrss) mrss = $3; if ($5 > mthr) mthr = $5
    }
    END {
        if (k == 0) { print "memcheck: no shim could be sampled"; exit 2 }
        printf "%8s %8.0f %8.0f %8.0f %8.1f\n", "mean", pss / k, rss / k, uss / k, thr / k
        printf "%8s %8d %8d %8s %8d\n", "max", mpss, mrss, "", mthr
        printf "memcheck: %d containers started in %s s, %d shims sampled, PSS total %.1f MB\n", n, secs, k, pss / 1000
        fail = 0
        if (k < n) { printf "memcheck: FAIL: only %d shims for %d containers\n", k, n; fail = 1 }
        if (pss / k > pss_b) { printf "memcheck: FAIL: mean PSS %.0f kB > %d kB (+%.0f%%)\n", pss / k, pss_b, 100 * (pss / k / pss_b - 1); fail = 1 }
        else printf "memcheck: ok:   mean PSS %.0f kB <= %d kB\n", pss / k, pss_b
        if (mrss > rss_b) { printf "memcheck: FAIL: max RSS %d kB > %d kB (+%.0f%%)\n", mrss, rss_b, 100 * (mrss / rss_b - 1); fail = 1 }
        else printf "memcheck: ok:   max RSS %d kB <= %d kB\n", mrss, rss_b
        if (mthr > thr_b) { printf "memcheck: FAIL: max threads %d > %d\n", mthr, thr_b; fail = 1 }
        else printf "memcheck: ok:   max threads %d <= %d\n", mthr, thr_b
        exit fail
    }' "$report" && rc=0 || rc=$?

if [ "${MEMCHECK_HOLD:-0}" != 0 ]; then
    echo "memcheck: holding the containers for $MEMCHECK_HOLD s (shim pids above)"
    sleep "$MEMCHECK_HOLD"
fi
if [ "$n" -lt 50 ] && [ -z "${MEMCHECK_PSS_KB:-}" ]; then
    echo "memcheck: note: N=$n < 50; PSS per shim is higher than at the 50-pod target (fewer shims share the text pages)"
fi
if [ "$rc" -eq 0 ]; then echo "memcheck: PASS"; else echo "memcheck: over budget"; fi
exit "$rc"
