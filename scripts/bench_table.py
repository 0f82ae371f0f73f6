#!/usr/bin/env python3
"""Turn shimbench's results.json into the issue-7 scorecard (bench/results.md).

Usage: scripts/bench_table.py RESULTS.json OUTPUT.md [--go LABEL] [--tender LABEL]
                             [--machine-info FILE]

Rows (Tender vs the Go shim, both measured interleaved by shimbench):
  lifecycle create->start->wait->delete of `true`   median ratio <= 0.70
  exec `true` into a running container              median ratio <= 0.90
  memory per pod shim, 50 pods running              PSS <= 0.8 MB, RSS <= 4 MB, <= 2 threads
  stdout throughput, 1 GiB through FIFOs            MB/s >= 3x Go, shim CPU/GiB <= 0.15x Go

Memory units: /proc reports kB (KiB); the budgets are read strictly with
1 MB = 1000 kB, i.e. PSS <= 800 kB and RSS <= 4000 kB per shim.

Exit status: 0 when every row could be computed (whether it PASSes or FAILs),
1 when results are missing or broken (a harness error), 2 on usage errors.
"""
import argparse
import json
import statistics
import sys

PSS_BUDGET_KB = 800
RSS_BUDGET_KB = 4000
THREADS_BUDGET = 2
LIFECYCLE_MAX_RATIO = 0.70
EXEC_MAX_RATIO = 0.90
TP_MIN_RATIO = 3.0
TP_CPU_MAX_RATIO = 0.15

# the scorecard's rows and targets, worded as in issue 7
ROW_LIFECYCLE = "lifecycle create→start→wait→delete of `true`"
ROW_EXEC = "exec `true` into a running container"
ROW_MEMORY = "memory per pod shim with 50 pods running (PSS)"
ROW_THROUGHPUT = "stdout throughput, 1 GiB through FIFOs"
TARGET_MEMORY = "≤ 0.8 MB, and RSS ≤ 4 MB, ≤ 2 threads"
TARGET_THROUGHPUT = "≥ 3× Go MB/s, shim CPU ≤ 0.15× Go per GiB"


class HarnessError(Exception):
    pass


class NotRun(Exception):
    pass


def fmt(x, spec="%.1f"):
    return "-" if x is None else spec % x


def requested(res, test):
    tests = (res.get("config") or {}).get("tests")
    if tests is not None and test not in tests:
        raise NotRun(test)


def latency(res, test, label):
    requested(res, test)
    t = res.get(test)
    if not isinstance(t, dict) or label not in t:
        raise HarnessError("%s: no results for %s" % (test, label))
    r = t[label]
    tot = r.get("total")
    if not tot or not tot.get("n"):
        raise HarnessError("%s: %s has no measured runs (errors=%s, last: %s)"
                           % (test, label, r.get("errors"), r.get("last_error")))
    return r


def good_records(res, test, label):
    requested(res, test)
    recs = (res.get(test) or {}).get(label)
    if not recs:
        raise HarnessError("%s: no results for %s" % (test, label))
    ok = [x for x in recs if "error" not in x]
    if not ok:
        raise HarnessError("%s: every round of %s failed (%s)" % (test, label, recs[-1].get("error")))
    return ok, len(recs) - len(ok)


def mean_of(recs, key):
    v = [x[key] for x in recs if x.get(key) is not None]
    return statistics.fmean(v) if v else None


def median_of(recs, key):
    v = [x[key] for x in recs if x.get(key) is not None]
    return statistics.median(v) if v else None


def ratio(a, b):
    return None if a is None or not b else a / b


def ratio_error(g, t, r):
    """Standard error of the ratio of two medians: each median's error is about
    1.25 * stdev / sqrt(n) (normal approximation); relative errors add in quadrature.
    Tells the reader how much of the ratio is noise at this n."""
    try:
        rel = [1.2533 * x["stdev"] / (x["n"] ** 0.5) / x["median"] for x in (g, t)]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return r * (rel[0] ** 2 + rel[1] ** 2) ** 0.5


def verdict(ok):
    return "**PASS**" if ok else "**FAIL**"


def latency_row(res, go, td, test, row, max_ratio, phases, rows, details, harness_errors):
    """One latency row (median ratio Tender / Go, judged as displayed) and its phase table."""
    target = "≤ %.2f× Go" % max_ratio
    try:
        g, t = latency(res, test, go), latency(res, test, td)
        gm, tm = g["total"]["median"], t["total"]["median"]
        r = round(ratio(tm, gm), 3)  # judged as displayed
        rows.append((row, "median %.1f ms" % gm, "median %.1f ms" % tm, "%.3f×" % r,
                     target, verdict(r <= max_ratio)))
        details.append("%s phase medians, ms (n = %d / %d, errors %d / %d):\n" % (
            test, g["total"]["n"], t["total"]["n"], g.get("errors", 0), t.get("errors", 0)))
        details.append("| shim | " + " | ".join(phases) + " | total | p95 |")
        details.append("|---" * (len(phases) + 3) + "|")
        for lab, x in ((go, g), (td, t)):
            details.append("| %s | %s | %.1f | %.1f |" % (
                lab, " | ".join(fmt((x.get(p) or {}).get("median")) for p in phases),
                x["total"]["median"], x["total"]["p95"]))
        se = ratio_error(g["total"], t["total"], r)
        if se is not None:
            details.append("")
            details.append("Sampling error of the ratio: about ±%.3f (one standard error; each median's "
                           "error taken as 1.25 × stdev / √n, the normal approximation, which long tails "
                           "make an over-estimate): %.3f–%.3f." % (se, r - se, r + se))
        details.append("")
    except NotRun:
        rows.append((row, "-", "-", "-", target, "not run"))
    except HarnessError as e:
        harness_errors.append(str(e))
        rows.append((row, "-", "-", "-", target, "ERROR"))


def build(res, go, td, machine_lines):
    rows, notes, details = [], [], []
    harness_errors = []
    cfg = res.get("config", {})

    # -- lifecycle and exec: latency medians, ratio to Go, phase table ------
    latency_row(res, go, td, "lifecycle", ROW_LIFECYCLE, LIFECYCLE_MAX_RATIO,
                ("prep", "create", "start", "wait", "delete", "cleanup"),
                rows, details, harness_errors)
    latency_row(res, go, td, "exec", ROW_EXEC, EXEC_MAX_RATIO,
                ("exec", "start", "wait", "delete"),
                rows, details, harness_errors)

    # -- density -------------------------------------------------------------
    try:
        gr, gbad = good_records(res, "density", go)
        tr, tbad = good_records(res, "density", td)
        m = tr[0]["containers"]
        gp, tp = mean_of(gr, "pss_kb_per_shim"), mean_of(tr, "pss_kb_per_shim")
        grss, trss = mean_of(gr, "rss_kb_per_shim"), mean_of(tr, "rss_kb_per_shim")
        gth, tth = mean_of(gr, "threads_per_shim"), mean_of(tr, "threads_per_shim")
        fails = []
        if tp is None or tp > PSS_BUDGET_KB:
            fails.append("PSS %s kB > %d" % (fmt(tp, "%.0f"), PSS_BUDGET_KB))
        if trss is None or trss > RSS_BUDGET_KB:
            fails.append("RSS %s kB > %d" % (fmt(trss, "%.0f"), RSS_BUDGET_KB))
        if tth is None or tth > THREADS_BUDGET:
            fails.append("threads %s > %d" % (fmt(tth), THREADS_BUDGET))
        res_txt = verdict(not fails) + ("" if not fails else " (" + ", ".join(fails) + ")")
        if m != 50:
            res_txt += " (M = %d, target is for 50)" % m
            notes.append("density ran with M = %d containers, not 50: per-shim PSS shrinks as more "
                         "shims share the binary's pages, so this row is only indicative." % m)
        rows.append((ROW_MEMORY,
                     "PSS %.0f kB, RSS %.0f kB, %.1f threads (M = %d)" % (gp, grss, gth, m),
                     "PSS %.0f kB, RSS %.0f kB, %.1f threads (M = %d)" % (tp, trss, tth, m),
                     "PSS %.2f×, RSS %.2f×" % (ratio(tp, gp), ratio(trss, grss)),
                     TARGET_MEMORY, res_txt))
        details.append("density (mean over %d / %d good rounds; failed rounds %d / %d):\n"
                       % (len(gr), len(tr), gbad, tbad))
        details.append("| shim | M | shim procs | RSS kB | PSS kB | USS kB | PSS total MB | threads "
                       "| ms/container start | containerd RSS kB |")
        details.append("|---|---|---|---|---|---|---|---|---|---|")
        for lab, x in ((go, gr), (td, tr)):
            details.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                lab, x[0]["containers"], fmt(mean_of(x, "shim_processes"), "%.0f"),
                fmt(mean_of(x, "rss_kb_per_shim"), "%.0f"), fmt(mean_of(x, "pss_kb_per_shim"), "%.0f"),
                fmt(mean_of(x, "uss_kb_per_shim"), "%.0f"),
                fmt((mean_of(x, "pss_kb_total") or 0) / 1024, "%.1f"),
                fmt(mean_of(x, "threads_per_shim"), "%.1f"),
                fmt(mean_of(x, "start_per_container_ms"), "%.1f"),
                fmt(mean_of(x, "containerd_rss_kb"), "%.0f")))
        details.append("")
    except NotRun:
        rows.append((ROW_MEMORY, "-", "-", "-", TARGET_MEMORY, "not run"))
    except HarnessError as e:
        harness_errors.append(str(e))
        rows.append((ROW_MEMORY, "-", "-", "-", TARGET_MEMORY, "ERROR"))

    # -- throughput ------------------------------------------------------------
    try:
        gr, gbad = good_records(res, "throughput", go)
        tr, tbad = good_records(res, "throughput", td)
        size_mb = cfg.get("size_mb")
        gmb, tmb = median_of(gr, "MBps"), median_of(tr, "MBps")
        gcpu, tcpu = median_of(gr, "shim_cpu_s_per_GiB"), median_of(tr, "shim_cpu_s_per_GiB")
        r_mb, r_cpu = ratio(tmb, gmb), ratio(tcpu, gcpu)
        r_mb = None if r_mb is None else round(r_mb, 2)  # judged as displayed
        r_cpu = None if r_cpu is None else round(r_cpu, 2)
        fails = []
        if r_mb is None or r_mb < TP_MIN_RATIO:
            fails.append("MB/s %sx < %.0fx" % (fmt(r_mb, "%.2f"), TP_MIN_RATIO))
        if r_cpu is None or r_cpu > TP_CPU_MAX_RATIO:
            fails.append("CPU %sx > %.2fx" % (fmt(r_cpu, "%.2f"), TP_CPU_MAX_RATIO))
        res_txt = verdict(not fails) + ("" if not fails else " (" + ", ".join(fails) + ")")
        if size_mb != 1024:
            res_txt += " (%s MiB, target is for 1 GiB)" % size_mb
            notes.append("throughput wrote %s MiB, not 1 GiB; shim CPU has a 10 ms resolution, so "
                         "small sizes make the CPU ratio coarse." % size_mb)
        rows.append((ROW_THROUGHPUT,
                     "%.0f MB/s, shim CPU %s s/GiB" % (gmb, fmt(gcpu, "%.2f")),
                     "%.0f MB/s, shim CPU %s s/GiB" % (tmb, fmt(tcpu, "%.2f")),
                     "%s× MB/s; %s× CPU" % (fmt(r_mb, "%.2f"), fmt(r_cpu, "%.2f")),
                     TARGET_THROUGHPUT, res_txt))
        details.append("throughput rounds (%d / %d good, failed %d / %d):\n" % (len(gr), len(tr), gbad, tbad))
        details.append("| shim | MB/s each round | shim CPU s/GiB each round | container stdout |")
        details.append("|---|---|---|---|")
        for lab, x in ((go, gr), (td, tr)):
            details.append("| %s | %s | %s | %s |" % (
                lab, ", ".join("%.0f" % y["MBps"] for y in x),
                ", ".join(fmt(y.get("shim_cpu_s_per_GiB"), "%.2f") for y in x),
                ", ".join(sorted(set(str(y.get("container_stdout")) for y in x)))))
        details.append("")
    except NotRun:
        rows.append((ROW_THROUGHPUT, "-", "-", "-", TARGET_THROUGHPUT, "not run"))
    except HarnessError as e:
        harness_errors.append(str(e))
        rows.append((ROW_THROUGHPUT, "-", "-", "-", TARGET_THROUGHPUT, "ERROR"))

    host = res.get("host", {})
    L = ["# Tender vs Go runc v2 shim — issue 7 scorecard", ""]
    L.append("Generated by `make bench` (scripts/bench.sh → ../shared/bench/shimbench → "
             "scripts/bench_table.py). Both shims are measured in one shimbench run, interleaved "
             "(A B, B A, …) against the same private containerd; latency figures are medians, "
             "ratio = Tender / Go.")
    L.append("")
    L.append("| metric | Go (`%s`) | Tender (`%s`) | ratio | target | result |" % (go, td))
    L.append("|---|---|---|---|---|---|")
    for row in rows:
        L.append("| " + " | ".join(row) + " |")
    L.append("")
    L.append("Memory budgets read strictly with 1 MB = 1000 kB (kB as in /proc smaps): "
             "PSS ≤ %d kB, RSS ≤ %d kB per shim." % (PSS_BUDGET_KB, RSS_BUDGET_KB))
    for n in notes:
        L.append("")
        L.append("Note: " + n)
    if harness_errors:
        L.append("")
        L.append("Harness errors:")
        for e in harness_errors:
            L.append("- " + e)
    L.append("")
    L.append("## Machine and run")
    L.append("")
    idle = host.get("idle_pct_before")
    L.append("- shimbench: host %s, %s CPUs, kernel %s, containerd %s; parameters: n=%s, exec n=%s, "
             "warmup=%s, density M=%s × %s round(s), throughput %s MiB × %s round(s), io=%s%s" % (
                 host.get("hostname"), host.get("cpus"), host.get("kernel"), host.get("containerd"),
                 cfg.get("n"), cfg.get("exec_n") or cfg.get("n"), cfg.get("warmup"), cfg.get("m"),
                 cfg.get("density_rounds"), cfg.get("size_mb"), cfg.get("tp_rounds"), cfg.get("io"),
                 ", cgroup2 hidden (%s)" % cfg["cgroup2_hidden"] if cfg.get("cgroup2_hidden") else ""))
    L.append("- CPU idle in the second before the tests: %s%%%s" % (
        fmt(idle), "  ⚠ below 80 %: other load on the machine (e.g. concurrent builds) adds noise"
        if idle is not None and idle < 80 else ""))
    cpu = host.get("cpu_during_run_pct")
    if cpu:
        L.append("- CPU during the run (all processes, incl. the benchmark): " +
                 ", ".join("%s %s%%" % (k, v) for k, v in cpu.items()))
    L.append("- loadavg at start %s, at end %s; total wall time %.0f s" % (
        "/".join(host.get("loadavg_start", [])), "/".join(host.get("loadavg_end", [])),
        res.get("wall_s") or 0))
    for rt in res.get("runtimes", []):
        L.append("- runtime `%s`: %s → `%s`" % (rt.get("label"), rt.get("name"), rt.get("shim")))
    for line in machine_lines:
        L.append("- " + line)
    L.append("")
    if details:
        L.append("## Details")
        L.append("")
        L.extend(details)
    L.append("Full shimbench report: `bench/shimbench/results.md`; raw statistics: "
             "`bench/shimbench/results.json`.")
    return "\n".join(L) + "\n", harness_errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("output")
    ap.add_argument("--go", default="go", help="label of the Go shim in results.json")
    ap.add_argument("--tender", default="tender", help="label of Tender in results.json")
    ap.add_argument("--machine-info", help="file with extra machine lines (`key: value`)")
    a = ap.parse_args()
    try:
        with open(a.results) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        print("bench_table: cannot read %s: %s" % (a.results, e), file=sys.stderr)
        return 1
    machine = []
    if a.machine_info:
        try:
            with open(a.machine_info) as f:
                machine = [ln.rstrip("\n") for ln in f if ln.strip()]
        except OSError:
            pass
    md, errs = build(res, a.go, a.tender, machine)
    with open(a.output, "w") as f:
        f.write(md)
    for e in errs:
        print("bench_table: harness error: %s" % e, file=sys.stderr)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
