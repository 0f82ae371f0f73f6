//! Metrics: a cgroup's files read into containerd's native metrics messages
//! (`io.containerd.cgroups.v1.Metrics` / `io.containerd.cgroups.v2.Metrics`).
//!
//! Readers take directories, parsers take file contents. A missing or unreadable file skips
//! its section (or field); malformed lines are skipped; nothing here panics on file data.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use containerd_shim_protos::cgroups::metrics as m1;
use containerd_shim_protos::cgroups_v2::metrics as m2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

use super::{Layout, ProcessCgroup, V1Dirs};

/// The type URL containerd's Go shims put on v1 metrics (`typeurl.MarshalAny` of the
/// `io.containerd.cgroups.v1.Metrics` proto: the bare full name, no `type.googleapis.com/`).
pub const V1_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// The type URL of v2 metrics (`io.containerd.cgroups.v2.Metrics`).
pub const V2_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

impl ProcessCgroup {
    /// containerd's native metrics packed as an Any: type_url `io.containerd.cgroups.v1.Metrics`
    /// on v1/hybrid hosts, `io.containerd.cgroups.v2.Metrics` on unified hosts.
    ///
    /// Fails with NotFound when none of the cgroup's directories exist any more (the cgroup
    /// was removed); missing files inside an existing cgroup only leave sections empty.
    pub fn stats(&self) -> io::Result<Any> {
        let gone = || io::Error::new(io::ErrorKind::NotFound, "cgroup no longer exists");
        let (type_url, value) = match &self.layout {
            Layout::V1(dirs) => {
                if !dirs.all().any(|d| d.is_dir()) {
                    return Err(gone());
                }
                (V1_METRICS_TYPE_URL, v1_metrics(dirs).write_to_bytes())
            }
            Layout::V2(dir) => {
                if !dir.is_dir() {
                    return Err(gone());
                }
                (V2_METRICS_TYPE_URL, v2_metrics(dir).write_to_bytes())
            }
        };
        Ok(Any {
            type_url: type_url.to_string(),
            value: value.map_err(io::Error::other)?,
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Generic helpers.

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

fn parse_u64(s: &str) -> Option<u64> {
    s.trim().parse().ok()
}

fn read_u64(dir: &Path, name: &str) -> Option<u64> {
    read(dir, name).as_deref().and_then(parse_u64)
}

/// A limit file: a number, or "max" which becomes `max_as`.
fn parse_limit(s: &str, max_as: u64) -> Option<u64> {
    match s.trim() {
        "max" => Some(max_as),
        t => t.parse().ok(),
    }
}

fn read_limit(dir: &Path, name: &str, max_as: u64) -> Option<u64> {
    read(dir, name).and_then(|s| parse_limit(&s, max_as))
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, ...); other lines are skipped.
fn kv_pairs(content: &str) -> impl Iterator<Item = (&str, u64)> {
    content.lines().filter_map(|line| {
        let mut it = line.split_whitespace();
        let key = it.next()?;
        let value = it.next()?.parse().ok()?;
        if it.next().is_some() {
            return None;
        }
        Some((key, value))
    })
}

/// Hugetlb page sizes from file names `hugetlb.<size>.<suffix>` in `dir` (sorted).
fn hugetlb_sizes(dir: &Path, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            let size = size.strip_suffix('.')?;
            (!size.is_empty() && !size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
}

/// v2 hugetlb: (pagesize, current, max, failcnt) per page size.
fn v2_hugetlb(dir: &Path) -> Vec<(String, u64, u64, u64)> {
    hugetlb_sizes(dir, "current")
        .into_iter()
        .filter_map(|size| {
            let current = read_u64(dir, &format!("hugetlb.{size}.current"))?;
            let max = read_limit(dir, &format!("hugetlb.{size}.max"), u64::MAX).unwrap_or(0);
            let failcnt = read(dir, &format!("hugetlb.{size}.events"))
                .and_then(|s| kv_pairs(&s).find(|(k, _)| *k == "max").map(|(_, v)| v))
                .unwrap_or(0);
            Some((size, current, max, failcnt))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// cgroup v1.

/// All v1 sections we can read.
fn v1_metrics(dirs: &V1Dirs) -> m1::Metrics {
    let mut m = m1::Metrics::new();
    if let Some(dir) = &dirs.pids {
        m.pids = MessageField::from_option(v1_pids(dir));
    }
    m.cpu = MessageField::from_option(v1_cpu(dirs.cpuacct.as_deref(), dirs.cpu.as_deref()));
    if let Some(dir) = &dirs.memory {
        if let Some((mem, oom)) = v1_memory(dir) {
            m.memory = MessageField::some(mem);
            m.memory_oom_control = MessageField::from_option(oom);
        }
    }
    if let Some(dir) = &dirs.blkio {
        m.blkio = MessageField::from_option(v1_blkio(dir));
    }
    if let Some(dir) = &dirs.hugetlb {
        m.hugetlb = v1_hugetlb(dir);
    } else if let Some(dir) = &dirs.unified {
        // Hybrid hosts may bind hugetlb to the cgroup2 hierarchy.
        m.hugetlb = v2_hugetlb(dir)
            .into_iter()
            .map(|(pagesize, usage, max, failcnt)| m1::HugetlbStat {
                usage,
                max,
                failcnt,
                pagesize,
                ..Default::default()
            })
            .collect();
    }
    m
}

fn v1_pids(dir: &Path) -> Option<m1::PidsStat> {
    let current = read_u64(dir, "pids.current")?;
    Some(m1::PidsStat {
        current,
        limit: read_limit(dir, "pids.max", 0).unwrap_or(0),
        ..Default::default()
    })
}

/// Clock ticks per second, the unit of cpuacct.stat.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// cpuacct.usage_percpu: one number per CPU. A malformed token drops the whole list (indexes
/// would no longer match CPUs).
fn parse_per_cpu(content: &str) -> Vec<u64> {
    content
        .split_whitespace()
        .map(|t| t.parse().ok())
        .collect::<Option<Vec<u64>>>()
        .unwrap_or_default()
}

/// cpuacct.stat (`user N`, `system N`, in clock ticks) as (user, kernel) nanoseconds.
fn parse_cpuacct_stat(content: &str, ticks_per_sec: u64) -> (u64, u64) {
    let ns_per_tick = 1_000_000_000 / ticks_per_sec.max(1);
    let (mut user, mut kernel) = (0, 0);
    for (k, v) in kv_pairs(content) {
        match k {
            "user" => user = v.saturating_mul(ns_per_tick),
            "system" => kernel = v.saturating_mul(ns_per_tick),
            _ => {}
        }
    }
    (user, kernel)
}

/// cpu.stat (v1): nr_periods, nr_throttled, throttled_time (ns).
fn parse_v1_throttle(content: &str) -> m1::Throttle {
    let mut t = m1::Throttle::new();
    for (k, v) in kv_pairs(content) {
        match k {
            "nr_periods" => t.periods = v,
            "nr_throttled" => t.throttled_periods = v,
            "throttled_time" => t.throttled_time = v,
            _ => {}
        }
    }
    t
}

fn v1_cpu(cpuacct: Option<&Path>, cpu: Option<&Path>) -> Option<m1::CPUStat> {
    let usage = cpuacct.and_then(|dir| {
        let total = read_u64(dir, "cpuacct.usage");
        let per_cpu = read(dir, "cpuacct.usage_percpu");
        let stat = read(dir, "cpuacct.stat");
        if total.is_none() && per_cpu.is_none() && stat.is_none() {
            return None;
        }
        let (user, kernel) = stat
            .map(|s| parse_cpuacct_stat(&s, clock_ticks()))
            .unwrap_or_default();
        Some(m1::CPUUsage {
            total: total.unwrap_or(0),
            kernel,
            user,
            per_cpu: per_cpu.map(|s| parse_per_cpu(&s)).unwrap_or_default(),
            ..Default::default()
        })
    });
    let throttling = cpu
        .and_then(|dir| read(dir, "cpu.stat"))
        .map(|s| parse_v1_throttle(&s));
    if usage.is_none() && throttling.is_none() {
        return None;
    }
    Some(m1::CPUStat {
        usage: MessageField::from_option(usage),
        throttling: MessageField::from_option(throttling),
        ..Default::default()
    })
}

/// memory.stat (v1) into the message's fields; unknown keys are ignored.
fn fill_v1_memory_stat(content: &str, s: &mut m1::MemoryStat) {
    for (k, v) in kv_pairs(content) {
        let field = match k {
            "cache" => &mut s.cache,
            "rss" => &mut s.rss,
            "rss_huge" => &mut s.rss_huge,
            "mapped_file" => &mut s.mapped_file,
            "dirty" => &mut s.dirty,
            "writeback" => &mut s.writeback,
            "pgpgin" => &mut s.pg_pg_in,
            "pgpgout" => &mut s.pg_pg_out,
            "pgfault" => &mut s.pg_fault,
            "pgmajfault" => &mut s.pg_maj_fault,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "hierarchical_memory_limit" => &mut s.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut s.hierarchical_swap_limit,
            "total_cache" => &mut s.total_cache,
            "total_rss" => &mut s.total_rss,
            "total_rss_huge" => &mut s.total_rss_huge,
            "total_mapped_file" => &mut s.total_mapped_file,
            "total_dirty" => &mut s.total_dirty,
            "total_writeback" => &mut s.total_writeback,
            "total_pgpgin" => &mut s.total_pg_pg_in,
            "total_pgpgout" => &mut s.total_pg_pg_out,
            "total_pgfault" => &mut s.total_pg_fault,
            "total_pgmajfault" => &mut s.total_pg_maj_fault,
            "total_inactive_anon" => &mut s.total_inactive_anon,
            "total_active_anon" => &mut s.total_active_anon,
            "total_inactive_file" => &mut s.total_inactive_file,
            "total_active_file" => &mut s.total_active_file,
            "total_unevictable" => &mut s.total_unevictable,
            _ => continue,
        };
        *field = v;
    }
}

/// memory.oom_control: oom_kill_disable, under_oom, oom_kill.
fn parse_oom_control(content: &str) -> m1::MemoryOomControl {
    let mut o = m1::MemoryOomControl::new();
    for (k, v) in kv_pairs(content) {
        match k {
            "oom_kill_disable" => o.oom_kill_disable = v,
            "under_oom" => o.under_oom = v,
            "oom_kill" => o.oom_kill = v,
            _ => {}
        }
    }
    o
}

/// `<prefix>usage_in_bytes`, `max_usage_in_bytes`, `limit_in_bytes`, `failcnt`; None when
/// none of them exist (e.g. no memsw without swap accounting).
fn v1_memory_entry(dir: &Path, prefix: &str) -> Option<m1::MemoryEntry> {
    let usage = read_u64(dir, &format!("{prefix}usage_in_bytes"));
    let max = read_u64(dir, &format!("{prefix}max_usage_in_bytes"));
    let limit = read_u64(dir, &format!("{prefix}limit_in_bytes"));
    let failcnt = read_u64(dir, &format!("{prefix}failcnt"));
    if usage.is_none() && max.is_none() && limit.is_none() && failcnt.is_none() {
        return None;
    }
    Some(m1::MemoryEntry {
        limit: limit.unwrap_or(0),
        usage: usage.unwrap_or(0),
        max: max.unwrap_or(0),
        failcnt: failcnt.unwrap_or(0),
        ..Default::default()
    })
}

fn v1_memory(dir: &Path) -> Option<(m1::MemoryStat, Option<m1::MemoryOomControl>)> {
    let stat = read(dir, "memory.stat");
    let usage = v1_memory_entry(dir, "memory.");
    if stat.is_none() && usage.is_none() {
        return None;
    }
    let mut s = m1::MemoryStat::new();
    if let Some(content) = stat {
        fill_v1_memory_stat(&content, &mut s);
    }
    s.usage = MessageField::from_option(usage);
    s.swap = MessageField::from_option(v1_memory_entry(dir, "memory.memsw."));
    s.kernel = MessageField::from_option(v1_memory_entry(dir, "memory.kmem."));
    s.kernel_tcp = MessageField::from_option(v1_memory_entry(dir, "memory.kmem.tcp."));
    let oom = read(dir, "memory.oom_control").map(|c| parse_oom_control(&c));
    Some((s, oom))
}

/// A blkio file: `MAJ:MIN Op Value` lines (the trailing `Total N` line and malformed lines are
/// skipped). `device` is left empty.
fn parse_blkio(content: &str) -> Vec<m1::BlkIOEntry> {
    content
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, value] = f.as_slice() else {
                return None;
            };
            let (major, minor) = parse_major_minor(dev)?;
            Some(m1::BlkIOEntry {
                op: op.to_string(),
                major,
                minor,
                value: value.parse().ok()?,
                ..Default::default()
            })
        })
        .collect()
}

fn parse_major_minor(s: &str) -> Option<(u64, u64)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `/dev/<name>` of a block device, from /sys/dev/block/MAJ:MIN/uevent.
fn block_device_name(major: u64, minor: u64) -> Option<String> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.is_empty())
        .map(|n| format!("/dev/{n}"))
}

fn v1_blkio(dir: &Path) -> Option<m1::BlkIOStat> {
    let mut b = m1::BlkIOStat::new();
    let mut any = false;
    let mut load = |name: &str, entries: &mut Vec<m1::BlkIOEntry>| {
        if let Some(content) = read(dir, name) {
            *entries = parse_blkio(&content);
            any = true;
        }
    };
    // Like containerd: the CFQ (proportional weight) files when the kernel has them, else the
    // throttle files, which always account.
    if dir.join("blkio.io_serviced_recursive").exists() {
        load(
            "blkio.io_service_bytes_recursive",
            &mut b.io_service_bytes_recursive,
        );
        load("blkio.io_serviced_recursive", &mut b.io_serviced_recursive);
        load("blkio.io_queued_recursive", &mut b.io_queued_recursive);
        load(
            "blkio.io_service_time_recursive",
            &mut b.io_service_time_recursive,
        );
        load(
            "blkio.io_wait_time_recursive",
            &mut b.io_wait_time_recursive,
        );
        load("blkio.io_merged_recursive", &mut b.io_merged_recursive);
        load("blkio.time_recursive", &mut b.io_time_recursive);
        load("blkio.sectors_recursive", &mut b.sectors_recursive);
    } else {
        load(
            "blkio.throttle.io_service_bytes_recursive",
            &mut b.io_service_bytes_recursive,
        );
        load(
            "blkio.throttle.io_serviced_recursive",
            &mut b.io_serviced_recursive,
        );
    }
    if !any {
        return None;
    }
    let mut names: HashMap<(u64, u64), Option<String>> = HashMap::new();
    for list in [
        &mut b.io_service_bytes_recursive,
        &mut b.io_serviced_recursive,
        &mut b.io_queued_recursive,
        &mut b.io_service_time_recursive,
        &mut b.io_wait_time_recursive,
        &mut b.io_merged_recursive,
        &mut b.io_time_recursive,
        &mut b.sectors_recursive,
    ] {
        for e in list.iter_mut() {
            let name = names
                .entry((e.major, e.minor))
                .or_insert_with(|| block_device_name(e.major, e.minor));
            if let Some(n) = name {
                e.device = n.clone();
            }
        }
    }
    Some(b)
}

fn v1_hugetlb(dir: &Path) -> Vec<m1::HugetlbStat> {
    hugetlb_sizes(dir, "usage_in_bytes")
        .into_iter()
        .filter_map(|size| {
            let usage = read_u64(dir, &format!("hugetlb.{size}.usage_in_bytes"))?;
            Some(m1::HugetlbStat {
                usage,
                max: read_u64(dir, &format!("hugetlb.{size}.max_usage_in_bytes")).unwrap_or(0),
                failcnt: read_u64(dir, &format!("hugetlb.{size}.failcnt")).unwrap_or(0),
                pagesize: size,
                ..Default::default()
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// cgroup v2.

/// All v2 sections we can read from the cgroup directory `dir`.
fn v2_metrics(dir: &Path) -> m2::Metrics {
    let mut m = m2::Metrics::new();
    if let Some(current) = read_u64(dir, "pids.current") {
        m.pids = MessageField::some(m2::PidsStat {
            current,
            limit: read_limit(dir, "pids.max", 0).unwrap_or(0),
            ..Default::default()
        });
    }
    if let Some(content) = read(dir, "cpu.stat") {
        let mut cpu = parse_v2_cpu_stat(&content);
        cpu.psi = MessageField::from_option(read(dir, "cpu.pressure").map(|c| parse_psi(&c)));
        m.cpu = MessageField::some(cpu);
    }
    m.memory = MessageField::from_option(v2_memory(dir));
    if let Some(content) = read(dir, "memory.events") {
        m.memory_events = MessageField::some(parse_memory_events(&content));
    }
    if let Some(content) = read(dir, "io.stat") {
        m.io = MessageField::some(m2::IOStat {
            usage: parse_io_stat(&content),
            psi: MessageField::from_option(read(dir, "io.pressure").map(|c| parse_psi(&c))),
            ..Default::default()
        });
    }
    m.hugetlb = v2_hugetlb(dir)
        .into_iter()
        .map(|(pagesize, current, max, failcnt)| m2::HugeTlbStat {
            current,
            max,
            pagesize,
            failcnt,
            ..Default::default()
        })
        .collect();
    m
}

/// cpu.stat (v2).
fn parse_v2_cpu_stat(content: &str) -> m2::CPUStat {
    let mut c = m2::CPUStat::new();
    for (k, v) in kv_pairs(content) {
        match k {
            "usage_usec" => c.usage_usec = v,
            "user_usec" => c.user_usec = v,
            "system_usec" => c.system_usec = v,
            "nr_periods" => c.nr_periods = v,
            "nr_throttled" => c.nr_throttled = v,
            "throttled_usec" => c.throttled_usec = v,
            "nr_bursts" => c.nr_bursts = v,
            "burst_usec" => c.burst_usec = v,
            _ => {}
        }
    }
    c
}

/// memory.stat (v2) into the message's fields.
fn fill_v2_memory_stat(content: &str, s: &mut m2::MemoryStat) {
    let (mut refault_split, mut activate_split) = (None::<u64>, None::<u64>);
    let (mut refault, mut activate) = (None, None);
    for (k, v) in kv_pairs(content) {
        let field = match k {
            "anon" => &mut s.anon,
            "file" => &mut s.file,
            "kernel_stack" => &mut s.kernel_stack,
            "slab" => &mut s.slab,
            "sock" => &mut s.sock,
            "shmem" => &mut s.shmem,
            "file_mapped" => &mut s.file_mapped,
            "file_dirty" => &mut s.file_dirty,
            "file_writeback" => &mut s.file_writeback,
            "anon_thp" => &mut s.anon_thp,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "slab_reclaimable" => &mut s.slab_reclaimable,
            "slab_unreclaimable" => &mut s.slab_unreclaimable,
            "pgfault" => &mut s.pgfault,
            "pgmajfault" => &mut s.pgmajfault,
            "workingset_nodereclaim" => &mut s.workingset_nodereclaim,
            "pgrefill" => &mut s.pgrefill,
            "pgscan" => &mut s.pgscan,
            "pgsteal" => &mut s.pgsteal,
            "pgactivate" => &mut s.pgactivate,
            "pgdeactivate" => &mut s.pgdeactivate,
            "pglazyfree" => &mut s.pglazyfree,
            "pglazyfreed" => &mut s.pglazyfreed,
            "thp_fault_alloc" => &mut s.thp_fault_alloc,
            "thp_collapse_alloc" => &mut s.thp_collapse_alloc,
            // Kernels >= 5.9 split these into _anon and _file: report the sum.
            "workingset_refault" => {
                refault = Some(v);
                continue;
            }
            "workingset_activate" => {
                activate = Some(v);
                continue;
            }
            "workingset_refault_anon" | "workingset_refault_file" => {
                refault_split = Some(refault_split.unwrap_or(0).saturating_add(v));
                continue;
            }
            "workingset_activate_anon" | "workingset_activate_file" => {
                activate_split = Some(activate_split.unwrap_or(0).saturating_add(v));
                continue;
            }
            _ => continue,
        };
        *field = v;
    }
    s.workingset_refault = refault.or(refault_split).unwrap_or(0);
    s.workingset_activate = activate.or(activate_split).unwrap_or(0);
}

fn v2_memory(dir: &Path) -> Option<m2::MemoryStat> {
    let stat = read(dir, "memory.stat");
    let usage = read_u64(dir, "memory.current");
    if stat.is_none() && usage.is_none() {
        return None;
    }
    let mut s = m2::MemoryStat::new();
    if let Some(content) = stat {
        fill_v2_memory_stat(&content, &mut s);
    }
    // "max" limits are reported as u64::MAX, as containerd does.
    s.usage = usage.unwrap_or(0);
    s.usage_limit = read_limit(dir, "memory.max", u64::MAX).unwrap_or(0);
    s.swap_usage = read_u64(dir, "memory.swap.current").unwrap_or(0);
    s.swap_limit = read_limit(dir, "memory.swap.max", u64::MAX).unwrap_or(0);
    s.max_usage = read_u64(dir, "memory.peak").unwrap_or(0);
    s.swap_max_usage = read_u64(dir, "memory.swap.peak").unwrap_or(0);
    s.psi = MessageField::from_option(read(dir, "memory.pressure").map(|c| parse_psi(&c)));
    Some(s)
}

/// memory.events: low, high, max, oom, oom_kill, oom_group_kill.
fn parse_memory_events(content: &str) -> m2::MemoryEvents {
    let mut e = m2::MemoryEvents::new();
    for (k, v) in kv_pairs(content) {
        match k {
            "low" => e.low = v,
            "high" => e.high = v,
            "max" => e.max = v,
            "oom" => e.oom = v,
            "oom_kill" => e.oom_kill = v,
            "oom_group_kill" => e.oom_group_kill = v,
            _ => {}
        }
    }
    e
}

/// io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` lines.
fn parse_io_stat(content: &str) -> Vec<m2::IOEntry> {
    content
        .lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let (major, minor) = parse_major_minor(it.next()?)?;
            let mut e = m2::IOEntry {
                major,
                minor,
                ..Default::default()
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(v) = v.parse() else { continue };
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

/// A pressure file: `some avg10=.. avg60=.. avg300=.. total=..` and a `full ...` line.
fn parse_psi(content: &str) -> m2::PSIStats {
    let mut p = m2::PSIStats::new();
    for line in content.lines() {
        let mut it = line.split_whitespace();
        let slot = match it.next() {
            Some("some") => &mut p.some,
            Some("full") => &mut p.full,
            _ => continue,
        };
        let mut d = m2::PSIData::new();
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => d.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => d.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => d.avg300 = v.parse().unwrap_or(0.0),
                "total" => d.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        *slot = MessageField::some(d);
    }
    p
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;
    use std::path::PathBuf;

    /// A fresh, empty directory under the temp dir; removed on drop.
    pub(in crate::cgroups) struct TempDir(pub PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "tender-cg-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn write(&self, name: &str, content: &str) {
            std::fs::write(self.0.join(name), content).unwrap();
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn type_urls_are_the_proto_full_names() {
        assert_eq!(m1::Metrics::descriptor().full_name(), V1_METRICS_TYPE_URL);
        assert_eq!(m2::Metrics::descriptor().full_name(), V2_METRICS_TYPE_URL);
    }

    #[test]
    fn parses_scalars_and_kv() {
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64("x"), None);
        assert_eq!(parse_limit("max\n", 0), Some(0));
        assert_eq!(parse_limit("max", u64::MAX), Some(u64::MAX));
        assert_eq!(parse_limit("100\n", 0), Some(100));
        assert_eq!(parse_limit("", 0), None);
        let kv: Vec<_> = kv_pairs("a 1\nb\nc x\nd 2 3\n\ne 5").collect();
        assert_eq!(kv, vec![("a", 1), ("e", 5)]);
    }

    #[test]
    fn parses_v1_cpu() {
        assert_eq!(parse_per_cpu("1 2 3 \n"), vec![1, 2, 3]);
        assert_eq!(parse_per_cpu("1 x 3"), Vec::<u64>::new());
        assert_eq!(
            parse_cpuacct_stat("user 66741\nsystem 11089\n", 100),
            (667_410_000_000, 110_890_000_000)
        );
        assert_eq!(
            parse_cpuacct_stat("user 18446744073709551615\n", 100).0,
            u64::MAX
        );
        let t =
            parse_v1_throttle("nr_periods 10\nnr_throttled 3\nthrottled_time 999\nnr_bursts 0\n");
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (10, 3, 999)
        );
    }

    const V1_MEMORY_STAT: &str = "cache 9936896\nrss 6246400\nrss_huge 0\nshmem 9068544\n\
mapped_file 7626752\ndirty 20480\nwriteback 0\nswap 0\npgpgin 34525\npgpgout 30574\n\
pgfault 38798\npgmajfault 1\ninactive_anon 7\nactive_anon 1531904\ninactive_file 16384\n\
active_file 851968\nunevictable 13783040\nhierarchical_memory_limit 8388608\n\
hierarchical_memsw_limit 9223372036854771712\ntotal_cache 3114213376\ntotal_rss 29143040\n\
total_rss_huge 2\ntotal_mapped_file 33366016\ntotal_dirty 954368\ntotal_writeback 3\n\
total_pgpgin 17093243\ntotal_pgpgout 16633054\ntotal_pgfault 19850102\ntotal_pgmajfault 2059\n\
total_inactive_anon 22736896\ntotal_active_anon 1581056\ntotal_inactive_file 1529344000\n\
total_active_file 1575800832\ntotal_unevictable 13783040\nbogus line here\n";

    #[test]
    fn parses_v1_memory_stat() {
        let mut s = m1::MemoryStat::new();
        fill_v1_memory_stat(V1_MEMORY_STAT, &mut s);
        assert_eq!(s.cache, 9936896);
        assert_eq!(s.rss, 6246400);
        assert_eq!(s.pg_pg_in, 34525);
        assert_eq!(s.pg_maj_fault, 1);
        assert_eq!(s.inactive_anon, 7);
        assert_eq!(s.hierarchical_memory_limit, 8388608);
        assert_eq!(s.hierarchical_swap_limit, 9223372036854771712);
        assert_eq!(s.total_rss_huge, 2);
        assert_eq!(s.total_writeback, 3);
        assert_eq!(s.total_pg_maj_fault, 2059);
        assert_eq!(s.total_unevictable, 13783040);
        let o = parse_oom_control("oom_kill_disable 0\nunder_oom 1\noom_kill 4\n");
        assert_eq!((o.oom_kill_disable, o.under_oom, o.oom_kill), (0, 1, 4));
    }

    #[test]
    fn parses_blkio() {
        let e = parse_blkio("8:0 Read 4096\n8:0 Write 8192\n253:1 Sync 1\nbad\n8:x Read 1\n8:0 Read y\nTotal 12289\n");
        assert_eq!(e.len(), 3);
        assert_eq!(
            (e[0].major, e[0].minor, e[0].op.as_str(), e[0].value),
            (8, 0, "Read", 4096)
        );
        assert_eq!(
            (e[2].major, e[2].minor, e[2].op.as_str(), e[2].value),
            (253, 1, "Sync", 1)
        );
        assert!(parse_blkio("Total 0\n").is_empty());
    }

    #[test]
    fn reads_v1_dirs() {
        let t = TempDir::new("v1");
        t.write("memory.stat", V1_MEMORY_STAT);
        t.write("memory.usage_in_bytes", "4096\n");
        t.write("memory.limit_in_bytes", "8388608\n");
        t.write("memory.max_usage_in_bytes", "8192\n");
        t.write("memory.failcnt", "2\n");
        t.write("memory.memsw.usage_in_bytes", "5000\n");
        t.write(
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        t.write("cpuacct.usage", "1000\n");
        t.write("cpuacct.usage_percpu", "600 400 \n");
        t.write("cpuacct.stat", "user 1\nsystem 2\n");
        t.write(
            "cpu.stat",
            "nr_periods 5\nnr_throttled 1\nthrottled_time 77\n",
        );
        t.write("pids.current", "3\n");
        t.write("pids.max", "max\n");
        t.write(
            "blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
        );
        t.write(
            "blkio.throttle.io_serviced_recursive",
            "8:0 Read 1\nTotal 1\n",
        );
        t.write("hugetlb.2MB.usage_in_bytes", "2097152\n");
        t.write("hugetlb.2MB.max_usage_in_bytes", "4194304\n");
        t.write("hugetlb.2MB.failcnt", "1\n");
        t.write("hugetlb.2MB.limit_in_bytes", "9\n");
        let d = t.0.clone();
        let dirs = V1Dirs {
            memory: Some(d.clone()),
            cpu: Some(d.clone()),
            cpuacct: Some(d.clone()),
            pids: Some(d.clone()),
            blkio: Some(d.clone()),
            hugetlb: Some(d.clone()),
            unified: None,
        };
        let m = v1_metrics(&dirs);
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        let u = &m.cpu.usage;
        assert_eq!((u.total, u.per_cpu.clone()), (1000, vec![600, 400]));
        let ns = 1_000_000_000 / clock_ticks();
        assert_eq!((u.user, u.kernel), (ns, 2 * ns));
        assert_eq!(m.cpu.throttling.throttled_time, 77);
        let mem = &m.memory;
        assert_eq!(mem.cache, 9936896);
        assert_eq!(
            (
                mem.usage.usage,
                mem.usage.limit,
                mem.usage.max,
                mem.usage.failcnt
            ),
            (4096, 8388608, 8192, 2)
        );
        assert_eq!(mem.swap.usage, 5000);
        assert!(mem.kernel.is_none() && mem.kernel_tcp.is_none());
        assert_eq!(m.memory_oom_control.oom_kill, 1);
        assert_eq!(m.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(m.blkio.io_serviced_recursive[0].value, 1);
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(
            (
                m.hugetlb[0].pagesize.as_str(),
                m.hugetlb[0].usage,
                m.hugetlb[0].max,
                m.hugetlb[0].failcnt
            ),
            ("2MB", 2097152, 4194304, 1)
        );

        // Everything missing: empty sections, no panic.
        let empty = TempDir::new("v1-empty");
        let dirs = V1Dirs {
            memory: Some(empty.0.clone()),
            cpu: Some(empty.0.clone()),
            cpuacct: Some(empty.0.clone()),
            pids: Some(empty.0.clone()),
            blkio: Some(empty.0.clone()),
            hugetlb: None,
            unified: Some(empty.0.clone()),
        };
        assert_eq!(v1_metrics(&dirs), m1::Metrics::new());
    }

    const V2_MEMORY_STAT: &str = "anon 1000\nfile 2000\nkernel_stack 3\nslab 4\nsock 5\nshmem 6\n\
file_mapped 7\nfile_dirty 8\nfile_writeback 9\nanon_thp 10\ninactive_anon 11\nactive_anon 12\n\
inactive_file 13\nactive_file 14\nunevictable 15\nslab_reclaimable 16\nslab_unreclaimable 17\n\
workingset_refault_anon 1\nworkingset_refault_file 2\nworkingset_activate_anon 3\n\
workingset_activate_file 4\nworkingset_nodereclaim 22\npgfault 18\npgmajfault 19\npgrefill 23\n\
pgscan 24\npgsteal 25\npgactivate 26\npgdeactivate 27\npglazyfree 28\npglazyfreed 29\n\
thp_fault_alloc 30\nthp_collapse_alloc 31\nzswap 0\nmalformed\n";

    #[test]
    fn parses_v2_files() {
        let c = parse_v2_cpu_stat("usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 5\nnr_throttled 2\nthrottled_usec 9\nnr_bursts 1\nburst_usec 3\ncore_sched.force_idle_usec 0\n");
        assert_eq!((c.usage_usec, c.user_usec, c.system_usec), (100, 60, 40));
        assert_eq!(
            (
                c.nr_periods,
                c.nr_throttled,
                c.throttled_usec,
                c.nr_bursts,
                c.burst_usec
            ),
            (5, 2, 9, 1, 3)
        );
        let mut s = m2::MemoryStat::new();
        fill_v2_memory_stat(V2_MEMORY_STAT, &mut s);
        assert_eq!(
            (s.anon, s.file, s.unevictable, s.slab_unreclaimable),
            (1000, 2000, 15, 17)
        );
        assert_eq!((s.workingset_refault, s.workingset_activate), (3, 7));
        assert_eq!(
            (s.pgfault, s.pgmajfault, s.thp_collapse_alloc),
            (18, 19, 31)
        );
        let mut s = m2::MemoryStat::new();
        fill_v2_memory_stat("workingset_refault 5\nworkingset_activate 6\n", &mut s);
        assert_eq!((s.workingset_refault, s.workingset_activate), (5, 6));
        let e = parse_memory_events("low 1\nhigh 2\nmax 3\noom 4\noom_kill 5\noom_group_kill 6\n");
        assert_eq!(
            (e.low, e.high, e.max, e.oom, e.oom_kill, e.oom_group_kill),
            (1, 2, 3, 4, 5, 6)
        );
        let io = parse_io_stat("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\nbad line\n259:1 rbytes=x wbytes=7 junk\n");
        assert_eq!(io.len(), 2);
        assert_eq!(
            (
                io[0].major,
                io[0].minor,
                io[0].rbytes,
                io[0].wbytes,
                io[0].rios,
                io[0].wios
            ),
            (8, 0, 1, 2, 3, 4)
        );
        assert_eq!(
            (io[1].major, io[1].minor, io[1].rbytes, io[1].wbytes),
            (259, 1, 0, 7)
        );
        let p = parse_psi("some avg10=1.50 avg60=0.00 avg300=0.00 total=123\nfull avg10=x avg60=0.25 avg300=0.00 total=7\n");
        assert_eq!((p.some.avg10, p.some.total), (1.5, 123));
        assert_eq!((p.full.avg10, p.full.avg60, p.full.total), (0.0, 0.25, 7));
    }

    #[test]
    fn reads_v2_dir() {
        let t = TempDir::new("v2");
        t.write("cpu.stat", "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n");
        t.write("memory.current", "4096\n");
        t.write("memory.max", "max\n");
        t.write("memory.stat", V2_MEMORY_STAT);
        t.write("memory.swap.current", "0\n");
        t.write("memory.swap.max", "1024\n");
        t.write(
            "memory.events",
            "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        t.write("pids.current", "4\n");
        t.write("pids.max", "100\n");
        t.write(
            "io.stat",
            "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n",
        );
        t.write("hugetlb.2MB.current", "0\n");
        t.write("hugetlb.2MB.max", "max\n");
        t.write("hugetlb.2MB.events", "max 3\n");
        t.write("hugetlb.2MB.rsvd.current", "0\n");
        let m = v2_metrics(&t.0);
        assert_eq!((m.pids.current, m.pids.limit), (4, 100));
        assert_eq!(m.cpu.usage_usec, 100);
        assert!(m.cpu.psi.is_none());
        assert_eq!(
            (m.memory.usage, m.memory.usage_limit, m.memory.swap_limit),
            (4096, u64::MAX, 1024)
        );
        assert_eq!(m.memory.anon, 1000);
        assert_eq!((m.memory_events.max, m.memory_events.oom_kill), (9, 1));
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!(m.hugetlb.len(), 1);
        assert_eq!(
            (
                m.hugetlb[0].pagesize.as_str(),
                m.hugetlb[0].max,
                m.hugetlb[0].failcnt
            ),
            ("2MB", u64::MAX, 3)
        );

        // Through the public API.
        let pc = ProcessCgroup {
            layout: Layout::V2(t.0.clone()),
        };
        let any = pc.stats().unwrap();
        assert_eq!(any.type_url, V2_METRICS_TYPE_URL);
        assert_eq!(m2::Metrics::parse_from_bytes(&any.value).unwrap(), m);

        let empty = TempDir::new("v2-empty");
        assert_eq!(v2_metrics(&empty.0), m2::Metrics::new());
        let gone = ProcessCgroup {
            layout: Layout::V2(empty.0.join("nope")),
        };
        assert_eq!(gone.stats().unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn stats_of_self() {
        let me = ProcessCgroup::of_pid(std::process::id() as i32).unwrap();
        let any = me.stats().unwrap();
        if super::super::is_unified() {
            assert_eq!(any.type_url, V2_METRICS_TYPE_URL);
            let m = m2::Metrics::parse_from_bytes(&any.value).unwrap();
            assert!(m.cpu.usage_usec > 0);
        } else {
            assert_eq!(any.type_url, V1_METRICS_TYPE_URL);
            let m = m1::Metrics::parse_from_bytes(&any.value).unwrap();
            assert!(m.memory.is_some() || m.cpu.is_some(), "{m:?}");
            if m.cpu.is_some() {
                assert!(m.cpu.usage.total > 0);
            }
        }
    }
}
