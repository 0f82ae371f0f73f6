//! Restart safety, faults and load, end to end: a private containerd 1.6 (really SIGKILLed
//! and started again by the tests), real runc, the shim under test.
//!
//! Every test prints what it measured (`println!`, shown with `--nocapture`).

#[macro_use]
mod common;

use common::{mounts_containing, process_alive, process_cmdline, process_state, wait_until, Ctr};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);
const GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// A counter printed every 10 ms as `<n> <phase>`, where `<phase>` is the content of the
/// container's /tmp/phase (written by the test after each restart, so lines carrying the new
/// phase were provably written after that restart). A failed write ends the loop with 99, and
/// SIGPIPE would kill the shell with 141: either way the task would stop, so RUNNING and a
/// final status of 137 (our SIGKILL) prove it never happened.
const COUNTER: &str = "i=0; p=0; while true; do [ -f /tmp/phase ] && read p < /tmp/phase; \
                       echo \"$i $p\" || exit 99; i=$((i+1)); usleep 10000; done";

/// Writes `content` to `<rootfs>/<rel>` of a running container atomically (the container
/// sees the file appear whole).
fn write_in_rootfs(c: &Ctr<'_>, id: &str, rel: &str, content: &str) {
    let rootfs = c.bundle_dir(id).join("rootfs");
    let target = rootfs.join(rel);
    let tmp = rootfs.join(format!("{rel}.tmp"));
    fs::write(&tmp, content).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, &target).unwrap_or_else(|e| panic!("rename {}: {e}", target.display()));
}

/// Parses counter lines (`<n> <phase>`), checks the counters are consecutive (no output lost
/// or reordered) and returns (first, last, count). A first partial line (the rest of a line an
/// earlier reader took half of) is skipped.
fn consecutive(lines: &[String]) -> Result<(u64, u64, usize), String> {
    let mut nums = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match l.split_whitespace().next().unwrap_or("").parse::<u64>() {
            Ok(n) => nums.push(n),
            Err(_) if i == 0 => continue,
            Err(_) => return Err(format!("line {i} is not a counter: {l:?}")),
        }
    }
    // The first line may be the tail of a line an earlier reader consumed half of.
    let start = if nums.len() > 1 && nums[1] != nums[0] + 1 {
        1
    } else {
        0
    };
    let nums = &nums[start..];
    for w in nums.windows(2) {
        if w[1] != w[0] + 1 {
            return Err(format!("gap in the counter: {} then {}", w[0], w[1]));
        }
    }
    match (nums.first(), nums.last()) {
        (Some(a), Some(b)) => Ok((*a, *b, nums.len())),
        _ => Err("no counter lines".into()),
    }
}

/// Attaches to `id`, reads counter lines until `want` lines of phase `phase` were seen;
/// returns all lines read. The attach is killed afterwards (a reader going away must not hurt
/// the container either).
fn attach_lines(c: &Ctr<'_>, id: &str, phase: usize, want: usize) -> Vec<String> {
    let mut att = c.spawn_ctr(&["task", "attach", id]);
    let mut lines = Vec::new();
    let mut newer = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while newer < want && Instant::now() < deadline {
        match att.next_line(Duration::from_secs(5)) {
            Some(l) => {
                if l.split_whitespace().nth(1) == Some(phase.to_string().as_str()) {
                    newer += 1;
                }
                lines.push(l);
            }
            None => break,
        }
    }
    let out = att.wait(Duration::from_millis(1));
    assert!(
        newer >= want,
        "`ctr task attach {id}` gave {newer} counter lines of phase {phase} (wanted {want}); \
         {} lines in all, last {:?}{}",
        lines.len(),
        lines.last(),
        c.diag(&out)
    );
    lines
}

/// The shim process serving `id` (from the pid in containerd's shim argv / its socket).
fn shim_pid(c: &Ctr<'_>) -> u32 {
    let shims = c.shim_processes();
    assert_eq!(
        shims.len(),
        1,
        "expected exactly one shim for namespace {}: {shims:?}{}",
        c.namespace,
        c.log()
    );
    shims[0].0
}

#[test]
fn containerd_sigkill_restart_keeps_containers_and_io() {
    let cd = setup!("containerd_sigkill_restart_keeps_containers_and_io");
    let c = cd.client("restart");
    let counter = common::unique_id("counter");
    let sleeper = common::unique_id("sleeper");
    let cinfo = c.start_running(&counter, &["sh", "-c", COUNTER]);
    let sinfo = c.start_running(&sleeper, &["sleep", "1000"]);
    let shims_before: BTreeSet<u32> = c.shim_processes().into_iter().map(|s| s.0).collect();

    const RESTARTS: usize = 3;
    let mut last = 0u64;
    let mut lines_total = 0usize;
    for round in 1..=RESTARTS {
        let t = Instant::now();
        cd.restart();
        let restart_ms = t.elapsed().as_millis();
        // containerd reconnected to the shims: both tasks RUNNING with the same pids.
        let t1 = c.wait_task_status(&counter, "RUNNING", SHORT);
        let t2 = c.wait_task_status(&sleeper, "RUNNING", SHORT);
        assert_eq!((t1.pid, t2.pid), (cinfo.pid, sinfo.pid), "pids changed");
        assert!(process_alive(cinfo.pid) && process_alive(sinfo.pid));
        let shims: BTreeSet<u32> = c.shim_processes().into_iter().map(|s| s.0).collect();
        assert_eq!(shims, shims_before, "shims changed across the restart");
        write_in_rootfs(&c, &counter, "tmp/phase", &format!("{round}\n"));

        // Output written after the restart reaches a new reader, without gaps.
        let lines = attach_lines(&c, &counter, round, 30);
        let (first, end, n) = consecutive(&lines)
            .unwrap_or_else(|e| panic!("round {round}: {e}; lines: {lines:?}{}", c.log()));
        assert!(end > last, "round {round}: counter did not advance");
        println!(
            "restart {round}: containerd back in {restart_ms} ms; attach read {n} consecutive \
             lines {first}..={end}, 30 of them written after the restart"
        );
        last = end;
        lines_total += n;

        // Exec (and its Wait) and State keep working.
        let exec_id = format!("ex{round}");
        let out = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            &sleeper,
            "sh",
            "-c",
            "echo exec-ok; exit 3",
        ]);
        assert_eq!(out.code, Some(3), "exec after restart{}", c.diag(&out));
        assert_eq!(out.stdout_str(), "exec-ok\n", "exec output{}", c.diag(&out));
        let pids = c.task_pids(&sleeper);
        assert!(pids.contains(&sinfo.pid), "ps after restart: {pids:?}");
    }

    // The counter never saw a failed write: still running after all restarts and readers.
    let t = c.wait_task_status(&counter, "RUNNING", SHORT);
    assert_eq!(t.pid, cinfo.pid);

    // Kill + Wait after the restarts: `ctr task attach` waits for the exit and returns its
    // status (and then deletes the task itself, as ctr 1.6's attach does).
    let mut att = c.spawn_ctr(&["task", "attach", &counter]);
    assert!(
        att.next_line(SHORT).is_some(),
        "attach before kill gave no output"
    );
    c.kill(&counter, "SIGKILL");
    let out = att.wait(SHORT);
    assert_eq!(
        out.code,
        Some(137),
        "attach (Wait) must return the exit status 137 (a write error would have given 99 \
         or 141){}",
        c.diag(&out)
    );
    let gone = wait_until(SHORT, POLL, || c.task(&counter).is_none().then_some(()));
    assert!(gone.is_some(), "attach did not delete the task{}", c.log());
    c.delete_container(&counter);
    // Kill + Delete: Delete reports the exit status.
    c.kill(&sleeper, "SIGKILL");
    c.wait_task_status(&sleeper, "STOPPED", SHORT);
    let del = c.delete_task(&sleeper);
    assert!(
        del.success() && del.stderr_str().contains("exit code 137"),
        "delete after restarts must report exit code 137{}",
        c.diag(&del)
    );
    c.delete_container(&sleeper);
    let gone = wait_until(SHORT, POLL, || c.shim_processes().is_empty().then_some(()));
    assert!(gone.is_some(), "shims left: {:?}", c.shim_processes());
    println!(
        "containerd SIGKILL+restart x{RESTARTS}: 2 containers kept running, {lines_total} \
         counter lines read after restarts with 0 gaps, 0 write errors, {RESTARTS} execs ok"
    );
}

/// Waits until `pid` is gone (or a zombie nobody of ours will reap).
fn wait_dead(pid: u32, what: &str) {
    let dead = wait_until(SHORT, POLL, || (!process_alive(pid)).then_some(()));
    assert!(
        dead.is_some(),
        "{what} (pid {pid}, `{}`) is still alive",
        process_cmdline(pid).unwrap_or_default()
    );
}

/// Lines of containerd's log after byte `from` that say an event of `topic` in `ns` was
/// forwarded (containerd received it from a shim). containerd 1.6 logs that line at debug
/// level, 1.7 and 2.x only at trace level: read it from a containerd started with
/// `--log-level trace`.
fn forwarded_since(log: &str, from: usize, ns: &str, topic: &str) -> usize {
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| {
            l.contains("msg=\"event forwarded\"")
                && l.contains(&format!("ns={ns} "))
                && l.contains(&format!("topic={topic} "))
        })
        .count()
}

#[test]
fn exits_while_containerd_is_down_are_not_lost() {
    let cd = setup!("exits_while_containerd_is_down_are_not_lost");
    let c = cd.client("away");
    let wait_go = |code: u32| format!("while [ ! -e /tmp/go ]; do usleep 10000; done; exit {code}");
    // Inits that exit by themselves with 42 and 3, one that is SIGKILLed from outside (137),
    // and two execs (5, 6) in a container that keeps running.
    let a = common::unique_id("exit42");
    let b = common::unique_id("exit3");
    let k = common::unique_id("killed");
    let host = common::unique_id("host");
    let ia = c.start_running(&a, &["sh", "-c", &wait_go(42)]);
    let ib = c.start_running(&b, &["sh", "-c", &wait_go(3)]);
    let ik = c.start_running(&k, &["sleep", "1000"]);
    let _ih = c.start_running(&host, &["sleep", "1000"]);
    for (exec_id, code) in [("ex5", 5), ("ex6", 6)] {
        c.ctr_ok(&[
            "task",
            "exec",
            "-d",
            "--exec-id",
            exec_id,
            &host,
            "sh",
            "-c",
            &wait_go(code),
        ]);
    }
    // The execs' shells (their `usleep` children come and go).
    let exec_pids: Vec<u32> = wait_until(SHORT, POLL, || {
        let p: Vec<u32> = c
            .task_pids(&host)
            .into_iter()
            .filter(|p| process_cmdline(*p).is_some_and(|c| c.starts_with("sh -c while")))
            .collect();
        (p.len() == 2).then_some(p)
    })
    .unwrap_or_else(|| panic!("execs did not show up in ctr task ps{}", c.log()));

    cd.kill_daemon();
    let down = Instant::now();
    for id in [&a, &b, &host] {
        write_in_rootfs(&c, id, "tmp/go", "");
    }
    common::send_signal(ik.pid, common::SIGKILL);
    for (pid, what) in [
        (ia.pid, "exit-42 init"),
        (ib.pid, "exit-3 init"),
        (ik.pid, "killed init"),
    ] {
        wait_dead(pid, what);
    }
    for pid in &exec_pids {
        wait_dead(*pid, "exec");
    }
    // Stay away long enough for the shims' event delivery to fail and back off a few times.
    std::thread::sleep(Duration::from_millis(1500));
    let log_mark = cd.log_text().len();
    // Trace level: the only level at which containerd 1.7 and 2.x log each forwarded event.
    cd.start_daemon_with(&["--log-level", "trace"]);
    let away_ms = down.elapsed().as_millis();

    // containerd 1.7 and 2.x reload every shim at startup, ask it for its processes (Pids)
    // and, when the task (not a sandbox) has none, log "cleaning leaked shim process", Delete
    // the task and shut its shim down: the fix for containerd/containerd#6860 (shims whose
    // task was never created) also catches tasks whose init merely exited while containerd
    // was away. The Go shim (io.containerd.runc.v2) gets exactly the same treatment. So there
    // the exited inits' tasks are gone after the restart, and `ctr task delete` can no longer
    // report their exit codes; what must still hold is that containerd cleaned them
    // completely (no shim, mount, bundle or runc state left) and that nothing of the running
    // container (its execs' exits) is lost. 1.6 keeps the tasks, STOPPED.
    let cleans_exited = cd.build.version >= (1, 7, 0);
    if cleans_exited {
        for id in [&a, &b, &k] {
            let gone = wait_until(SHORT, POLL, || c.task(id).is_none().then_some(()));
            assert!(
                gone.is_some(),
                "containerd {} cleans the task of an exited init at startup; {id} is still \
                 listed: {:?}{}",
                cd.build.minor_label(),
                c.task(id),
                c.log()
            );
        }
        // Their shims are gone: only the running container's is left.
        let one = wait_until(SHORT, POLL, || {
            (c.shim_processes().len() == 1).then_some(())
        });
        assert!(
            one.is_some(),
            "the exited inits' shims are still there after containerd cleaned their tasks: \
             {:?}",
            c.shim_processes()
        );
    } else {
        // State after the restart: the three inits STOPPED.
        for id in [&a, &b, &k] {
            c.wait_task_status(id, "STOPPED", SHORT);
        }
    }
    c.wait_task_status(&host, "RUNNING", SHORT);

    // The queued TaskExit events reach the new containerd (5 exits happened while it was
    // down). Where containerd cleans the exited inits' tasks at startup, Tender still flushes
    // their TaskExit events before its shims exit (containerd publishes them with the exit
    // codes), while the Go shim loses them and delivers only the 2 exec exits of the running
    // container: Tender must deliver all 5 everywhere, any runtime at least the execs' 2.
    let want = if cleans_exited && !common::runtime_is_tender() {
        2
    } else {
        5
    };
    let delivered = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        let n = forwarded_since(&cd.log_text(), log_mark, &c.namespace, "/tasks/exit");
        (n >= want).then_some(n)
    });
    let delivered = delivered.unwrap_or_else(|| {
        panic!(
            "only {} of {want} TaskExit events reached containerd {} after its restart{}",
            forwarded_since(&cd.log_text(), log_mark, &c.namespace, "/tasks/exit"),
            cd.build.minor_label(),
            c.log()
        )
    });

    // The exit statuses, through Delete.
    let mut codes = Vec::new();
    for (exec_id, code) in [("ex5", 5), ("ex6", 6)] {
        let out = c.ctr(&["task", "delete", "--exec-id", exec_id, &host]);
        assert_eq!(
            out.code,
            Some(code),
            "exec {exec_id}: `ctr task delete --exec-id` must exit with the exec's status{}",
            c.diag(&out)
        );
        codes.push(code);
    }
    for (id, code) in [(&a, 42), (&b, 3), (&k, 137)] {
        if cleans_exited {
            c.delete_container(id);
            assert_nothing_left(&c, id, "exited init cleaned by containerd at startup");
            continue;
        }
        let del = c.delete_task(id);
        assert!(
            del.success() && del.stderr_str().contains(&format!("exit code {code}")),
            "task {id} exited with {code} while containerd was down; delete must say so{}",
            c.diag(&del)
        );
        codes.push(code);
        c.delete_container(id);
    }
    c.kill(&host, "SIGKILL");
    c.wait_task_status(&host, "STOPPED", SHORT);
    assert!(c.delete_task(&host).success());
    c.delete_container(&host);
    let gone = wait_until(SHORT, POLL, || c.shim_processes().is_empty().then_some(()));
    assert!(gone.is_some(), "shims left: {:?}", c.shim_processes());
    println!(
        "exits while containerd {} was down ({away_ms} ms): {} exit codes delivered after the \
         restart {codes:?}, 0 lost{}; {delivered} TaskExit events forwarded after the restart",
        cd.build.minor_label(),
        codes.len(),
        if cleans_exited {
            "; the 3 exited inits' tasks cleaned by containerd at startup, nothing left"
        } else {
            ""
        }
    );
}

/// cgroup directories of a container on this host (every v1 controller, the unified tree),
/// from the spec's cgroupsPath.
fn cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    let mut dirs = vec![Path::new("/sys/fs/cgroup").join(rel)];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            if e.path().join("cgroup.procs").exists() || e.path().is_dir() {
                dirs.push(e.path().join(rel));
            }
        }
    }
    dirs
}

fn spec_cgroups_path(c: &Ctr<'_>, id: &str) -> String {
    let spec = fs::read_to_string(c.bundle_dir(id).join("config.json"))
        .unwrap_or_else(|e| panic!("config.json of {id}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&spec).expect("config.json is JSON");
    v["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn shim_sigkill_cleans_every_container_of_its_group() {
    let cd = setup!("shim_sigkill_cleans_every_container_of_its_group");
    let c = cd.client("shimkill9");
    let events = c.events();
    let group = common::unique_id("grp");
    let ann = format!("{GROUP_ANNOTATION}={group}");
    let ids = [common::unique_id("g1"), common::unique_id("g2")];
    let mut infos = Vec::new();
    for id in &ids {
        let out = c.run_detached_extra(&["--annotation", &ann], id, &["sleep", "1000"]);
        assert!(out.success(), "ctr run{}", c.diag(&out));
        infos.push(c.wait_task_status(id, "RUNNING", SHORT));
    }
    // One shim serves the group; an exec runs too (it must die with its container).
    let shim = shim_pid(&c);
    c.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "e1",
        &ids[0],
        "sleep",
        "1000",
    ]);
    let exec_pid = wait_until(SHORT, POLL, || {
        c.task_pids(&ids[0])
            .into_iter()
            .find(|p| *p != infos[0].pid)
    })
    .expect("exec pid");
    let socket = c.shim_socket(&ids[0]);
    assert_eq!(
        socket,
        c.shim_socket(&ids[1]),
        "group members share one socket"
    );
    let mut cgroups = Vec::new();
    for id in &ids {
        let cg = spec_cgroups_path(&c, id);
        assert!(!cg.is_empty(), "spec of {id} has no cgroupsPath");
        let existing: Vec<PathBuf> = cgroup_dirs(&cg)
            .into_iter()
            .filter(|d| d.is_dir())
            .collect();
        assert!(
            !existing.is_empty(),
            "no cgroup dir for {id} ({cg}) while running"
        );
        cgroups.push((id.clone(), cg, existing));
        assert!(!mounts_containing(&format!("/{}/{}/", c.namespace, id)).is_empty());
    }

    assert!(common::send_signal(shim, common::SIGKILL));

    for id in &ids {
        assert!(
            events.wait_for(id, "/tasks/exit", Duration::from_secs(20)),
            "no /tasks/exit for {id} after its shim was SIGKILLed: {:?}{}",
            events.topics_for(id),
            c.log()
        );
    }
    let statuses: Vec<String> = events
        .all()
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit" && ids.iter().any(|id| e.is_for_container(id)))
        .map(|e| e.payload)
        .collect();
    assert!(
        statuses.iter().all(|p| p.contains("\"exit_status\":137")),
        "dead-shim cleanup must report 137 (SIGKILL) for every container: {statuses:?}"
    );
    for info in &infos {
        wait_dead(info.pid, "container init");
    }
    wait_dead(exec_pid, "exec");
    for (id, cg, dirs) in &cgroups {
        let left = wait_until(SHORT, POLL, || {
            let l: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
            l.is_empty().then_some(())
        });
        assert!(
            left.is_some(),
            "cgroups of {id} ({cg}) left after the dead-shim cleanup: {:?}",
            dirs.iter().filter(|d| d.exists()).collect::<Vec<_>>()
        );
        let needle = format!("/{}/{}/", c.namespace, id);
        let unmounted = wait_until(SHORT, POLL, || {
            mounts_containing(&needle).is_empty().then_some(())
        });
        assert!(
            unmounted.is_some(),
            "mounts of {id} left: {:?}",
            mounts_containing(&needle)
        );
        let runc_state = Path::new("/run/containerd/runc")
            .join(&c.namespace)
            .join(id);
        assert!(
            !runc_state.exists(),
            "runc state {} left",
            runc_state.display()
        );
    }
    let sock_gone = wait_until(SHORT, POLL, || (!socket.exists()).then_some(()));
    assert!(
        sock_gone.is_some(),
        "socket {} of the dead shim left behind{}",
        socket.display(),
        c.log()
    );
    for id in &ids {
        let settled = wait_until(SHORT, POLL, || match c.task(id) {
            None => Some(()),
            Some(t) if t.status == "STOPPED" => Some(()),
            Some(_) => None,
        });
        assert!(settled.is_some(), "task {id}: {:?}", c.task(id));
        let del = c.delete_task(id);
        assert!(
            del.success() || del.stderr_str().contains("not found"),
            "{}",
            c.diag(&del)
        );
        c.delete_container(id);
        let bundle = c.bundle_dir(id);
        let gone = wait_until(SHORT, POLL, || (!bundle.exists()).then_some(()));
        assert!(gone.is_some(), "bundle {} left", bundle.display());
    }
    assert!(!process_alive(shim), "state {:?}", process_state(shim));
    println!(
        "shim kill -9 (group of {}): {} container processes + 1 exec dead, {} cgroup dirs, \
         mounts, runc state, socket and bundles gone; exits reported as 137",
        ids.len(),
        infos.len(),
        cgroups.iter().map(|c| c.2.len()).sum::<usize>()
    );
}

/// The overlay lowerdir(s) of a mounted container rootfs, from mountinfo.
fn overlay_lowerdirs(c: &Ctr<'_>, id: &str) -> Vec<PathBuf> {
    let target = c.bundle_dir(id).join("rootfs").display().to_string();
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mi.lines()
        .filter(|l| l.split(' ').nth(4) == Some(target.as_str()))
        .flat_map(|l| {
            l.split(' ')
                .next_back()
                .unwrap_or("")
                .split(',')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|o| o.strip_prefix("lowerdir=").map(String::from))
        .flat_map(|l| l.split(':').map(PathBuf::from).collect::<Vec<_>>())
        .collect()
}

/// Nothing of a container whose creation failed is left: task, container record, mounts,
/// bundle, runc state, cgroups.
fn assert_nothing_left(c: &Ctr<'_>, id: &str, case: &str) {
    assert!(c.task(id).is_none(), "{case}: task {id} still listed");
    let needle = format!("/{}/{}/", c.namespace, id);
    let clean = wait_until(SHORT, POLL, || {
        (mounts_containing(&needle).is_empty() && !c.bundle_dir(id).exists()).then_some(())
    });
    assert!(
        clean.is_some(),
        "{case}: leftovers of {id}: mounts {:?}, bundle exists: {}",
        mounts_containing(&needle),
        c.bundle_dir(id).exists()
    );
    let runc_state = Path::new("/run/containerd/runc")
        .join(&c.namespace)
        .join(id);
    assert!(
        !runc_state.exists(),
        "{case}: runc state {} left",
        runc_state.display()
    );
    let cgroups: Vec<PathBuf> = cgroup_dirs(&format!("/{}/{}", c.namespace, id))
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(cgroups.is_empty(), "{case}: cgroups left: {cgroups:?}");
    let ls = c.ctr_ok(&["containers", "ls", "-q"]);
    assert!(
        !ls.stdout_str().lines().any(|l| l.trim() == id),
        "{case}: container record {id} left"
    );
    let snaps = c.ctr_ok(&["snapshots", "ls"]);
    assert!(
        !snaps
            .stdout_str()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id)),
        "{case}: snapshot {id} left"
    );
}

#[test]
fn runtime_failures_are_clear_and_leave_nothing() {
    let cd = setup!("runtime_failures_are_clear_and_leave_nothing");
    let c = cd.client("rtfail");
    let group = common::unique_id("grp");
    let ann = format!("{GROUP_ANNOTATION}={group}");
    // The long-lived member of the group: its shim serves every failing container below.
    let anchor = common::unique_id("anchor");
    let out = c.run_detached_extra(&["--annotation", &ann], &anchor, &["sleep", "1000"]);
    assert!(out.success(), "{}", c.diag(&out));
    let ainfo = c.wait_task_status(&anchor, "RUNNING", SHORT);
    let shim = shim_pid(&c);
    let toml = cd.dir.join("missing-runtime.toml");
    fs::write(&toml, "BinaryName = \"/nonexistent/tender-runc\"\n").expect("toml");
    let toml = toml.display().to_string();
    let lowers = overlay_lowerdirs(&c, &anchor);
    assert!(
        !lowers.is_empty(),
        "anchor rootfs is not an overlay with a lowerdir"
    );

    struct Case<'a> {
        name: &'a str,
        extra: Vec<&'a str>,
        cmd: Vec<&'a str>,
        /// Every one of these must appear in ctr's error output.
        needles: Vec<&'a str>,
        /// Hide the image's layer so the rootfs mount fails.
        hide_lower: bool,
    }
    let cases = vec![
        Case {
            name: "missing runtime binary",
            extra: vec!["--runtime-config-path", &toml],
            cmd: vec!["true"],
            needles: vec!["/nonexistent/tender-runc", "does not exist"],
            hide_lower: false,
        },
        Case {
            name: "spec with a mount whose source is missing",
            extra: vec![
                "--mount",
                "type=bind,src=/nonexistent-tender-src,dst=/x,options=rbind:ro",
            ],
            cmd: vec!["true"],
            needles: vec!["/nonexistent-tender-src", "no such file or directory"],
            hide_lower: false,
        },
        Case {
            name: "spec joining a missing namespace",
            extra: vec!["--with-ns", "network:/nonexistent/tender-netns"],
            cmd: vec!["true"],
            needles: vec!["/nonexistent/tender-netns"],
            hide_lower: false,
        },
        Case {
            name: "command not found in the image",
            extra: vec![],
            cmd: vec!["tender-no-such-cmd"],
            needles: vec!["tender-no-such-cmd", "executable file not found"],
            hide_lower: false,
        },
        Case {
            name: "rootfs mount failure",
            extra: vec![],
            cmd: vec!["true"],
            needles: vec!["rootfs: mount overlay", "Invalid argument"],
            hide_lower: true,
        },
    ];
    let mut report = Vec::new();
    for case in &cases {
        let id = common::unique_id("fail");
        let mut extra = vec!["--annotation", ann.as_str()];
        extra.extend(case.extra.iter().copied());
        if case.hide_lower {
            let mut args = vec!["containers", "create", "--runtime", c.runtime.as_str()];
            args.extend(extra.iter().copied());
            args.extend([common::IMAGE_REF, id.as_str()]);
            args.extend(case.cmd.iter().copied());
            c.ctr_ok(&args);
        }
        let hidden: Vec<(PathBuf, PathBuf)> = if case.hide_lower {
            lowers
                .iter()
                .map(|l| {
                    // containerd's snapshotter only stats the parent layer, so a plain file
                    // in its place gets past containerd and makes the overlay mount itself
                    // (the shim's job) fail with ENOTDIR.
                    let h = l.with_extension("tender-hidden");
                    fs::rename(l, &h).unwrap_or_else(|e| panic!("hide {}: {e}", l.display()));
                    fs::write(l, b"not a directory").expect("decoy layer");
                    (l.clone(), h)
                })
                .collect()
        } else {
            Vec::new()
        };
        let out = if case.hide_lower {
            // `ctr run` mounts the image client-side first; `ctr task start` of a created
            // container only hands the mount list to the shim, which is what must fail here.
            let fifo = cd.dir.join("fifo").display().to_string();
            let mut args = vec!["task", "start", "--fifo-dir", fifo.as_str(), id.as_str()];
            if hidden.is_empty() {
                args.clear();
            }
            c.ctr(&args)
        } else {
            c.run_output_extra(&extra, &id, &case.cmd)
        };
        for (l, h) in &hidden {
            let _ = fs::remove_file(l);
            fs::rename(h, l).unwrap_or_else(|e| panic!("unhide {}: {e}", l.display()));
        }
        assert!(
            !out.success(),
            "{}: ctr run must fail{}",
            case.name,
            c.diag(&out)
        );
        let err = out.stderr_str();
        for needle in &case.needles {
            assert!(
                err.contains(needle),
                "{}: the error must name the cause ({needle:?}){}",
                case.name,
                c.diag(&out)
            );
        }
        assert!(
            !err.contains("panicked"),
            "{}: the shim panicked{}",
            case.name,
            c.diag(&out)
        );
        if case.hide_lower {
            // Created with `ctr containers create`: the record is ours to remove.
            c.delete_container(&id);
        }
        assert_nothing_left(&c, &id, case.name);
        // The shim and its other container are unaffected.
        let shims: Vec<u32> = c.shim_processes().into_iter().map(|s| s.0).collect();
        assert_eq!(shims, vec![shim], "{}: the group's shim changed", case.name);
        let t = c.wait_task_status(&anchor, "RUNNING", SHORT);
        assert_eq!(t.pid, ainfo.pid, "{}: anchor restarted?", case.name);
        let exec_id = format!("after-{}", report.len());
        let ex = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            &anchor,
            "sh",
            "-c",
            "echo ok",
        ]);
        assert!(
            ex.success() && ex.stdout_str() == "ok\n",
            "{}: exec in the anchor afterwards{}",
            case.name,
            c.diag(&ex)
        );
        let line = err
            .lines()
            .rfind(|l| l.starts_with("ctr:"))
            .unwrap_or("")
            .to_string();
        report.push(format!("{}: {line}", case.name));
    }
    // The group's shim goes away with its last container: the failures left no state in it.
    c.kill(&anchor, "SIGKILL");
    c.wait_task_status(&anchor, "STOPPED", SHORT);
    assert!(c.delete_task(&anchor).success());
    c.delete_container(&anchor);
    let gone = wait_until(SHORT, POLL, || (!process_alive(shim)).then_some(()));
    assert!(
        gone.is_some(),
        "the group's shim did not exit after its last container was deleted (failed creates \
         left state behind?){}",
        c.log()
    );
    println!(
        "runtime failures: {} cases through one group shim (pid {shim}), each a clear error, \
         0 leftovers, anchor unaffected, shim exited at the end:\n  {}",
        cases.len(),
        report.join("\n  ")
    );
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (fd count, RssAnon in KiB, zombie children) of a process. RssAnon (heap, stacks) is what a
/// leak grows; VmRSS also counts the binary's code pages, which fault in as new paths run.
fn footprint(pid: u32) -> (usize, u64, usize) {
    (
        common::fd_count_besides_runtime_copy(pid),
        status_kib(pid, "RssAnon:"),
        children(pid).iter().filter(|c| c.1 == 'Z').count(),
    )
}

/// Children of `pid` as (pid, state).
fn children(pid: u32) -> Vec<(u32, char)> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut f = stat[close + 1..].split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == pid {
            v.push((p, state));
        }
    }
    v
}

/// Runs `n` jobs on `workers` threads; returns the failures (job index, message).
fn parallel(
    n: usize,
    workers: usize,
    job: impl Fn(usize) -> Result<(), String> + Sync,
) -> Vec<(usize, String)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return;
                }
                if let Err(e) = job(i) {
                    failures.lock().unwrap().push((i, e));
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

#[test]
fn load_cycles_and_execs_lose_nothing_and_leak_nothing() {
    let cd = setup!("load_cycles_and_execs_lose_nothing_and_leak_nothing");
    let c = cd.client("load");
    let cycles: usize = std::env::var("TENDER_LOAD_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let execs: usize = std::env::var("TENDER_LOAD_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let group = common::unique_id("grp");
    let ann = format!("{GROUP_ANNOTATION}={group}");
    let anchor = common::unique_id("anchor");
    let out = c.run_detached_extra(&["--annotation", &ann], &anchor, &["sleep", "100000"]);
    assert!(out.success(), "{}", c.diag(&out));
    let ainfo = c.wait_task_status(&anchor, "RUNNING", SHORT);
    let shim = shim_pid(&c);
    // TaskExit events containerd has received from this namespace, as its subscribers see
    // them (containerd 1.6 logs each forwarded event at debug level, 1.7 and 2.x only at
    // trace level; a subscription works on every version). Started before any exit.
    let events = c.events();
    let fifo = cd.dir.join("fifo").display().to_string();

    let cycle = |i: usize| -> Result<(), String> {
        let id = format!("cyc-{i}");
        let code = (i % 250 + 1) as i32;
        let script = format!("exit {code}");
        let out = c.run_output_extra(&["--annotation", &ann], &id, &["sh", "-c", &script]);
        if out.code != Some(code) {
            return Err(format!(
                "ctr run {id}: exit {:?}, wanted {code}: {}",
                out.code,
                out.stderr_str()
            ));
        }
        Ok(())
    };
    let socket = c.shim_socket(&anchor);
    let exec = |i: usize| -> Result<(), String> {
        let exec_id = format!("ex-{i}");
        let code = (i % 100) as i32;
        let script = format!("echo {i}; exit {code}");
        let mut cmd = c.command();
        cmd.args([
            "task",
            "exec",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            &exec_id,
            &anchor,
            "sh",
            "-c",
            &script,
        ]);
        let out = common::run_cmd(cmd, Duration::from_secs(30));
        if out.code != Some(code) || out.stdout_str() != format!("{i}\n") {
            return Err(format!(
                "exec {exec_id}: exit {:?} (wanted {code}), timed out {}, stdout {:?}, stderr \
                 {:?}; the shim says: {}",
                out.code,
                out.timed_out,
                out.stdout_str(),
                out.stderr_str(),
                shim_exec_state(&socket, &anchor, &exec_id)
            ));
        }
        Ok(())
    };

    // Warm up (first-use allocations, thread-local caches), then take the baseline.
    let warm: Vec<_> = (0..5)
        .map(|i| cycle(100_000 + i))
        .chain((0..20).map(|i| exec(100_000 + i)))
        .filter_map(Result::err)
        .collect();
    assert!(warm.is_empty(), "warm-up failed: {warm:?}");
    let exits_forwarded = || events.count("/tasks/exit");
    let lags = std::sync::Mutex::new(Vec::new());
    // Settled: only the anchor's init is a child, no zombies, and every TaskExit reached
    // containerd (under load the ordered, one-at-a-time event delivery falls behind; the
    // queue's memory must not be mistaken for a leak), and the fd count has come back to
    // `fds_want` (the baseline: connections and copy tasks of the last RPCs close a moment
    // after ctr returns) or, for the baseline itself, read the same twice in a row.
    // Returns (fds, RssAnon, zombies).
    let settle = |what: &str, exits: usize, fds_want: Option<usize>| -> (usize, u64, usize) {
        let behind = exits.saturating_sub(exits_forwarded());
        let t = Instant::now();
        let drained = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            (exits_forwarded() >= exits).then_some(())
        });
        lags.lock().unwrap().push(match drained {
            Some(()) => format!(
                "{what}: {behind} behind, drained in {} ms",
                t.elapsed().as_millis()
            ),
            None => format!(
                "{what}: NOT DRAINED: {} of {exits} after 60 s",
                exits_forwarded()
            ),
        });
        let got = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            let kids = children(shim);
            let (fds, rss, z) = footprint(shim);
            (kids.len() == 1 && z == 0).then_some((fds, rss, z))
        });
        let (mut fds, _, _) = got.unwrap_or_else(|| {
            panic!(
                "{what}: shim {shim} did not settle: children {:?}",
                children(shim)
            )
        });
        if fds_want.is_none() {
            // Two readings in a row means two readings 100 ms apart, not back to back.
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let now = footprint(shim).0;
            let done = fds_want.map_or(now == fds, |want| now == want);
            fds = now;
            done.then_some(())
        });
        let (_, rss, z) = footprint(shim);
        (fds, rss, z)
    };
    let mut exits = 25; // the warm-up
    let (fd0, rss0, _) = settle("baseline", exits, None);
    let t = Instant::now();
    let cycle_failures = parallel(cycles, 4, cycle);
    let cycles_s = t.elapsed().as_secs_f64();
    exits += cycles;
    let (fd1, rss1, _) = settle("after the cycles", exits, Some(fd0));
    // Two halves: the first may raise allocator high-water marks, the second must not grow
    // memory any further (growth proportional to the work would be a leak).
    let t = Instant::now();
    let half = execs / 2;
    let mut exec_failures = parallel(half, 50, exec);
    exits += half;
    let (fd_half, rss_half, _) = settle("after the first half of the execs", exits, Some(fd0));
    exec_failures.extend(parallel(execs - half, 50, |i| exec(half + i)));
    let execs_s = t.elapsed().as_secs_f64();
    exits = exits - half + execs;
    let (fd2, rss2, z2) = settle("after the execs", exits, Some(fd0));
    // Exactly one TaskExit per process, none twice (a duplicate would hide a lost one).
    let exit_ids: Vec<(String, String)> = events
        .all()
        .iter()
        .filter(|e| e.namespace == c.namespace && e.topic == "/tasks/exit")
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap_or_default();
            let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (field("container_id"), field("id"))
        })
        .collect();
    let distinct: BTreeSet<&(String, String)> = exit_ids.iter().collect();
    let missing: Vec<String> = (0..cycles)
        .map(|i| format!("cyc-{i}"))
        .filter(|id| !distinct.contains(&(id.clone(), id.clone())))
        .chain(
            (0..execs)
                .map(|i| format!("ex-{i}"))
                .filter(|id| !distinct.contains(&(anchor.clone(), id.clone()))),
        )
        .collect();
    assert!(
        exit_ids.len() == exits && distinct.len() == exits && missing.is_empty(),
        "TaskExit events seen by a subscriber: {} ({} distinct) for {exits} exits; missing: \
         {missing:?}",
        exit_ids.len(),
        distinct.len()
    );
    let (vm_rss, rss_file) = (status_kib(shim, "VmRSS:"), status_kib(shim, "RssFile:"));
    let t2 = c.wait_task_status(&anchor, "RUNNING", SHORT);
    assert_eq!(t2.pid, ainfo.pid);
    assert!(
        shim_pid(&c) == shim,
        "the group's shim changed during the load"
    );

    println!(
        "load: {cycles} create/start/delete cycles in {cycles_s:.1} s ({} lost or wrong exit \
         codes), {execs} execs (50 concurrent) in {execs_s:.1} s ({} lost or wrong); shim \
         {shim}: fds {fd0} -> {fd1} -> {fd_half} -> {fd2}, RssAnon {rss0} -> {rss1} -> \
         {rss_half} -> {rss2} KiB (baseline, after cycles, after {half} execs, after all; \
         finally VmRSS {vm_rss} KiB of which RssFile {rss_file} KiB), zombies {z2}",
        cycle_failures.len(),
        exec_failures.len()
    );
    println!(
        "load: TaskExit delivery to containerd at the end of each phase: {}",
        lags.lock().unwrap().join("; ")
    );
    assert!(
        cycle_failures.is_empty(),
        "{} cycles failed, first: {:?}{}",
        cycle_failures.len(),
        cycle_failures.first(),
        c.log()
    );
    assert!(
        exec_failures.is_empty(),
        "{} execs failed, first: {:?}{}",
        exec_failures.len(),
        exec_failures.first(),
        c.log()
    );
    let lags = lags.into_inner().unwrap();
    assert!(
        !lags.iter().any(|l| l.contains("NOT DRAINED")),
        "TaskExit events did not all reach containerd: {lags:?}"
    );
    assert_eq!(z2, 0, "zombie children of the shim");
    assert_eq!(fd2, fd0, "the shim's fd count is not back to its baseline");
    assert_eq!(
        fd1, fd0,
        "the shim's fd count after the cycles is not back to its baseline"
    );
    // Memory: allocator high-water marks are allowed, growth proportional to the work is not.
    // The total may include the heap high-water of an event backlog (see `settle`).
    let tolerance = (rss0 / 4).max(4096);
    assert!(
        rss2 <= rss0 + tolerance,
        "shim RssAnon grew from {rss0} to {rss2} KiB (tolerance {tolerance} KiB)"
    );
    assert!(
        rss2 <= rss_half + 512,
        "shim RssAnon kept growing with the work: {rss_half} KiB after {half} execs, {rss2} \
         KiB after {execs}"
    );
    c.kill(&anchor, "SIGKILL");
    c.wait_task_status(&anchor, "STOPPED", SHORT);
    assert!(c.delete_task(&anchor).success());
    c.delete_container(&anchor);
    let gone = wait_until(SHORT, POLL, || (!process_alive(shim)).then_some(()));
    assert!(gone.is_some(), "the shim did not exit after the load");
}

/// What the shim itself says about an exec (asked over its socket, bypassing containerd).
fn shim_exec_state(socket: &Path, id: &str, exec_id: &str) -> String {
    use containerd_shim_protos::{api, shim_async::TaskClient, ttrpc};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("no runtime: {e}"),
    };
    rt.block_on(async {
        let client =
            match ttrpc::r#async::Client::connect(&format!("unix://{}", socket.display())).await {
                Ok(c) => TaskClient::new(c),
                Err(e) => return format!("connect {}: {e}", socket.display()),
            };
        let mut r = api::StateRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        match client
            .state(ttrpc::context::with_timeout(5_000_000_000), &r)
            .await
        {
            Ok(s) => format!(
                "status {:?}, pid {} (process state {:?}), exit status {}",
                s.status.enum_value_or_default(),
                s.pid,
                process_state(s.pid),
                s.exit_status
            ),
            Err(e) => format!("State: {e}"),
        }
    })
}
