//! Foundation end-to-end tests: run containers through a private containerd
//! with the shim under test (`io.containerd.tender.v2` by default,
//! `TENDER_E2E_RUNTIME=io.containerd.runc.v2` to check the tests themselves
//! against containerd's Go shim).
//!
//! Each test starts its own containerd and uses its own namespace and
//! container ids, so tests can run in parallel.

#[macro_use]
mod common;

use common::{
    mounts_containing, process_alive, process_cmdline, process_state, wait_until, Containerd,
};
use std::path::Path;
use std::time::Duration;

const SHORT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(25);

#[test]
fn echo_hello_output_bytes() {
    let cd = setup!("echo_hello_output_bytes");
    let c = cd.client("echo");
    let id = common::unique_id("echo");
    let out = c.run_output(&id, &["echo", "hello"]);
    assert_eq!(
        out.code,
        Some(0),
        "`echo hello` should exit 0{}",
        c.diag(&out)
    );
    assert_eq!(
        out.stdout,
        b"hello\n".to_vec(),
        "stdout of `echo hello` must be exactly \"hello\\n\"{}",
        c.diag(&out)
    );
    assert!(
        c.task(&id).is_none(),
        "task {id} still listed after run --rm{}",
        c.log()
    );
}

#[test]
fn exit_code_is_propagated() {
    let cd = setup!("exit_code_is_propagated");
    let c = cd.client("exit");
    let id = common::unique_id("exit7");
    let out = c.run_output(&id, &["sh", "-c", "exit 7"]);
    assert_eq!(
        out.code,
        Some(7),
        "`sh -c 'exit 7'` must give exit code 7{}",
        c.diag(&out)
    );
}

/// SIGTERM (ctr's default signal) delivered to the container -> 143.
///
/// Note: the container's process is PID 1 of its PID namespace, and the
/// kernel drops signals to a namespace init that has no handler for them
/// (only SIGKILL/SIGSTOP are forced). A bare `sleep 1000` therefore ignores
/// SIGTERM under any runtime; the init here installs a TERM trap exiting with
/// 128+15, reports readiness, and waits on `sleep 1000`.
#[test]
fn sigterm_gives_143() {
    let cd = setup!("sigterm_gives_143");
    let c = cd.client("sigterm");
    let id = common::unique_id("term");
    let mut run = c.spawn_run(
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; echo ready; sleep 1000 & wait",
        ],
    );
    if !run.wait_for_line("ready", SHORT) {
        let out = run.wait(Duration::from_secs(1));
        panic!("container never printed `ready`{}", c.diag(&out));
    }
    let info = c.wait_task_status(&id, "RUNNING", SHORT);
    assert!(info.pid > 0, "running task must have a pid: {info:?}");
    // Default signal of `ctr task kill` is SIGTERM.
    c.ctr_ok(&["task", "kill", &id]);
    let out = run.wait(SHORT);
    assert_eq!(
        out.code,
        Some(143),
        "`ctr run` must report exit status 143 after SIGTERM{}",
        c.diag(&out)
    );
    assert!(
        c.task(&id).is_none(),
        "task {id} still listed after run --rm{}",
        c.log()
    );
}

/// SIGKILL to a plain `sleep 1000` -> 137 (128+9), read back via `ctr task delete`.
#[test]
fn sigkill_gives_137() {
    let cd = setup!("sigkill_gives_137");
    let c = cd.client("sigkill");
    let id = common::unique_id("kill");
    c.start_running(&id, &["sleep", "1000"]);
    c.kill(&id, "SIGKILL");
    let stopped = c.wait_task_status(&id, "STOPPED", SHORT);
    assert!(stopped.pid > 0, "stopped task keeps its pid: {stopped:?}");
    let del = c.delete_task(&id);
    assert!(del.success(), "ctr task delete failed{}", c.diag(&del));
    // ctr 1.6 reports a non-zero exit status of the deleted task as a warning.
    assert!(
        del.stderr_str().contains("exit code 137"),
        "ctr task delete must report exit code 137{}",
        c.diag(&del)
    );
    c.delete_container(&id);
}

#[test]
fn state_and_pids_of_running_container() {
    let cd = setup!("state_and_pids_of_running_container");
    let c = cd.client("state");
    let id = common::unique_id("state");
    let info = c.start_running(&id, &["sleep", "1000"]);
    assert_eq!(info.status, "RUNNING");
    assert!(
        info.pid > 1,
        "ctr task ls must show the container pid: {info:?}{}",
        c.log()
    );
    // RUNNING is reported once the runtime's `start` returned, which (crun) may be a moment
    // before the container's process has exec'd: poll.
    let mut cmdline = String::new();
    common::wait_until(SHORT, POLL, || {
        cmdline = process_cmdline(info.pid).unwrap_or_default();
        (cmdline == "sleep 1000").then_some(())
    });
    assert_eq!(
        cmdline,
        "sleep 1000",
        "pid {} from `ctr task ls` should be the container's `sleep 1000`{}",
        info.pid,
        c.log()
    );
    let pids = c.task_pids(&id);
    assert!(
        pids.contains(&info.pid),
        "`ctr task ps {id}` must list the init pid {}; got {pids:?}{}",
        info.pid,
        c.log()
    );
    assert_eq!(
        pids.len(),
        1,
        "only `sleep` runs in the container; ctr task ps gave {pids:?}"
    );
    common::kill_and_delete(&c, &id);
}

#[test]
fn event_sequence_create_start_exit_delete() {
    let cd = setup!("event_sequence_create_start_exit_delete");
    let c = cd.client("events");
    let events = c.events();
    let id = common::unique_id("ev");
    let out = c.run_output(&id, &["true"]);
    assert_eq!(out.code, Some(0), "`true` should exit 0{}", c.diag(&out));
    let got_delete = events.wait_for(&id, "/tasks/delete", SHORT);
    let topics = events.topics_for(&id);
    assert!(
        got_delete,
        "no /tasks/delete event for {id}; task events seen: {topics:?}\nraw events:\n{}{}",
        events.raw(),
        c.log()
    );
    let expected = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let mut positions = Vec::new();
    for topic in expected {
        match topics.iter().position(|t| t == topic) {
            Some(p) => positions.push(p),
            None => panic!(
                "missing {topic} event for {id}; got {topics:?}\nraw events:\n{}{}",
                events.raw(),
                c.log()
            ),
        }
    }
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "task events out of order for {id}: expected {expected:?}, got {topics:?}"
    );
    // Exactly one of each for a single run.
    for topic in expected {
        let n = topics.iter().filter(|t| *t == topic).count();
        assert_eq!(
            n, 1,
            "expected one {topic} event for {id}, got {n}: {topics:?}"
        );
    }
}

#[test]
fn no_leftovers_after_delete() {
    let cd = setup!("no_leftovers_after_delete");
    let c = cd.client("leftovers");
    let id = common::unique_id("left");
    let info = c.start_running(&id, &["sleep", "1000"]);

    // While running: rootfs mounted, a shim serving the namespace, its socket present.
    let needle = format!("/{}/{}/", c.namespace, id);
    let mounts = mounts_containing(&needle);
    assert!(
        !mounts.is_empty(),
        "expected the rootfs of {id} to be mounted while running (mountinfo has nothing with {needle}){}",
        c.log()
    );
    let shims = c.shim_processes();
    assert!(
        !shims.is_empty(),
        "expected a shim process (argv with {} and namespace {}) while running{}",
        cd.socket.display(),
        c.namespace,
        c.log()
    );
    let socket = c.shim_socket(&id);
    assert!(
        socket.exists(),
        "shim socket {} should exist while the container runs{}",
        socket.display(),
        c.log()
    );

    common::kill_and_delete(&c, &id);

    let left = wait_until(SHORT, POLL, || {
        mounts_containing(&needle).is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "mounts of {id} left after delete: {:?}{}",
        mounts_containing(&needle),
        c.log()
    );
    let gone = wait_until(SHORT, POLL, || c.shim_processes().is_empty().then_some(()));
    assert!(
        gone.is_some(),
        "shim process(es) left after delete: {:?}{}",
        c.shim_processes(),
        c.log()
    );
    let sock_gone = wait_until(SHORT, POLL, || (!socket.exists()).then_some(()));
    assert!(
        sock_gone.is_some(),
        "shim socket {} left after delete{}",
        socket.display(),
        c.log()
    );
    assert!(
        !process_alive(info.pid),
        "container process {} still alive after delete (state {:?})",
        info.pid,
        process_state(info.pid)
    );
    assert!(
        !c.bundle_dir(&id).exists(),
        "bundle dir {} left after delete{}",
        c.bundle_dir(&id).display(),
        c.log()
    );
}

#[test]
fn shim_sigkill_is_cleaned_up() {
    let cd = setup!("shim_sigkill_is_cleaned_up");
    let c = cd.client("shimkill");
    let events = c.events();
    let id = common::unique_id("shimkill");
    let info = c.start_running(&id, &["sleep", "1000"]);
    let needle = format!("/{}/{}/", c.namespace, id);
    assert!(
        !mounts_containing(&needle).is_empty(),
        "rootfs of {id} should be mounted while running{}",
        c.log()
    );
    let shims = c.shim_processes();
    assert!(
        !shims.is_empty(),
        "no shim process found for namespace {}{}",
        c.namespace,
        c.log()
    );

    for (pid, _) in &shims {
        common::send_signal(*pid, common::SIGKILL);
    }

    // containerd notices the dead shim, runs `<shim binary> delete` (the
    // shim's cleanup action) and then publishes /tasks/exit with the status
    // that action returned (255 if it failed).
    let exited = events.wait_for(&id, "/tasks/exit", Duration::from_secs(20));
    assert!(
        exited,
        "no /tasks/exit for {id} within 20s after its shim was SIGKILLed; task events: {:?}{}",
        events.topics_for(&id),
        c.log()
    );
    let log = cd.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("cleaning up after shim disconnected")
                && l.contains(&format!("id={id}"))),
        "containerd did not run the dead-shim cleanup for {id}{}",
        c.log()
    );
    assert!(
        !log.contains("failed to clean up after shim disconnected"),
        "the shim's `delete` action failed during dead-shim cleanup{}",
        c.log()
    );
    let exit_payloads: Vec<String> = events
        .all()
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit" && e.is_for_container(&id))
        .map(|e| e.payload)
        .collect();
    assert!(
        !exit_payloads.iter().any(|p| p.contains("\"exit_status\":255")),
        "dead-shim cleanup reported exit status 255 (the delete action failed): {exit_payloads:?}{}",
        c.log()
    );

    // The cleanup killed the container's `sleep` (a zombie awaiting reaping
    // by the host's init counts as dead) and unmounted its rootfs.
    let dead = wait_until(SHORT, POLL, || (!process_alive(info.pid)).then_some(()));
    assert!(
        dead.is_some(),
        "container process {} (`{}`) survived the dead-shim cleanup{}",
        info.pid,
        process_cmdline(info.pid).unwrap_or_default(),
        c.log()
    );
    let unmounted = wait_until(SHORT, POLL, || {
        mounts_containing(&needle).is_empty().then_some(())
    });
    assert!(
        unmounted.is_some(),
        "mounts of {id} left after dead-shim cleanup: {:?}{}",
        mounts_containing(&needle),
        c.log()
    );

    // The task is gone or STOPPED; deleting it works (or it is already gone).
    let settled = wait_until(SHORT, POLL, || match c.task(&id) {
        None => Some("gone".to_string()),
        Some(t) if t.status == "STOPPED" => Some("STOPPED".to_string()),
        Some(_) => None,
    });
    assert!(
        settled.is_some(),
        "task {id} still {:?} after the dead-shim cleanup{}",
        c.task(&id),
        c.log()
    );
    let del = c.delete_task(&id);
    assert!(
        del.success() || del.stderr_str().contains("not found"),
        "ctr task delete after shim death must succeed (or say not found){}",
        c.diag(&del)
    );
    c.delete_container(&id);
    let shims_left = wait_until(SHORT, POLL, || c.shim_processes().is_empty().then_some(()));
    assert!(
        shims_left.is_some(),
        "shim processes left: {:?}",
        c.shim_processes()
    );
}

/// Sanity check of the harness itself: the private containerd uses the
/// cargo-built shim for io.containerd.tender.v2.
#[test]
fn harness_puts_tender_shim_on_containerd_path() {
    let cd: Containerd = setup!("harness_puts_tender_shim_on_containerd_path");
    let link = cd.dir.join("bin").join("containerd-shim-tender-v2");
    let target = std::fs::read_link(&link).unwrap_or_default();
    assert_eq!(
        target,
        Path::new(common::SHIM_BIN),
        "shim symlink {}",
        link.display()
    );
    let pid = cd.pid().unwrap_or(0);
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let env = String::from_utf8_lossy(&env);
    let path = env
        .split('\0')
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or_default()
        .to_string();
    assert!(
        path.starts_with(&cd.dir.join("bin").display().to_string()),
        "containerd's PATH must start with the private shim dir: {path}"
    );
}

/// The memfd holding the shared sealed runtime copy in a shim's fd table, if any.
fn sealed_copy_of(shim: u32) -> Option<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{shim}/fd"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read_link(p)
                .map(|t| t.to_string_lossy().contains("memfd:tender-sealed-runtime"))
                .unwrap_or(false)
        })
}

fn shim_of(c: &common::Ctr<'_>, id: &str) -> u32 {
    let shims = c.shim_processes();
    shims
        .iter()
        .find(|(_, cmd)| cmd.split(' ').any(|a| a == id))
        .map(|(pid, _)| *pid)
        .unwrap_or_else(|| panic!("no shim serves {id}: {shims:?}"))
}

/// Names created in `dir` while `during` runs (inotify), after proving the watch works.
fn files_created_during(dir: &Path, during: impl FnOnce()) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: plain syscalls on an fd this function owns and closes.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    assert!(
        fd >= 0,
        "inotify_init1: {}",
        std::io::Error::last_os_error()
    );
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let wd = unsafe { libc::inotify_add_watch(fd, cdir.as_ptr(), libc::IN_CREATE) };
    assert!(
        wd >= 0,
        "watch {dir:?}: {}",
        std::io::Error::last_os_error()
    );
    during();
    let probe = dir.join("tender-test-probe");
    std::fs::write(&probe, b"").unwrap();
    let _ = std::fs::remove_file(&probe);
    let mut names = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut off = 0;
        while off < n as usize {
            // struct inotify_event: wd, mask, cookie, len, then `len` bytes of name.
            let len = u32::from_ne_bytes(buf[off + 12..off + 16].try_into().unwrap()) as usize;
            let name = &buf[off + 16..off + 16 + len];
            let name = name.split(|b| *b == 0).next().unwrap_or_default();
            names.push(String::from_utf8_lossy(name).into_owned());
            off += 16 + len;
        }
    }
    unsafe { libc::close(fd) };
    assert!(
        names.iter().any(|n| n == "tender-test-probe"),
        "the inotify watch on {dir:?} saw nothing: {names:?}"
    );
    names.retain(|n| n != "tender-test-probe");
    names
}

/// runc (and crun) protect their binary from containers (CVE-2019-5736) by running
/// `runc init` from a private read-only handle they make on every create and exec (runc 1.1:
/// a bind mount, a remount and an unmount in its state dir; crun 1.8: the same in /tmp).
/// Tender gives them one sealed in-memory copy instead, shared by all its shims, which they
/// accept as is: no mount per exec, no copy per pod.
#[test]
fn container_processes_start_from_one_shared_sealed_runtime_copy() {
    let cd = setup!("container_processes_start_from_one_shared_sealed_runtime_copy");
    if common::runtime() != common::TENDER_RUNTIME {
        common::notice("SKIP sealed runtime copy: Tender's own behaviour");
        return;
    }
    let c = cd.client("sealed");
    let a = common::unique_id("sealed-a");
    c.start_running(&a, &["sleep", "1000"]);
    let shim_a = shim_of(&c, &a);
    // A shim makes the copy when it starts a container process for the second time, unless
    // another shim (maybe another test's) holds one already; another shim may hold the lock
    // for a moment, so allow a few execs.
    let mut copy = None;
    for i in 0..20 {
        let out = c.ctr(&["task", "exec", "--exec-id", &format!("e{i}"), &a, "true"]);
        assert!(out.success(), "exec{}", c.diag(&out));
        copy = sealed_copy_of(shim_a);
        if copy.is_some() {
            break;
        }
    }
    let copy = copy.unwrap_or_else(|| panic!("shim {shim_a} holds no sealed runtime copy"));
    let binary = common::runtime_binary_path();
    assert!(
        std::fs::read(&copy).unwrap() == std::fs::read(&binary).unwrap(),
        "the copy must be the runtime binary {binary:?} byte for byte"
    );
    let file = std::fs::File::open(&copy).unwrap();
    let seals = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), libc::F_GET_SEALS) };
    let all = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    assert_eq!(seals, all, "the copy must be sealed against any change");
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());

    if common::runtime_binary() == "runc" {
        // runc makes its read-only handle through a `runc.XXXXXX` file in the container's
        // state dir: none must appear.
        let state = Path::new("/run/containerd/runc")
            .join(&c.namespace)
            .join(&a);
        let created = files_created_during(&state, || {
            let out = c.ctr(&["task", "exec", "--exec-id", "watched", &a, "true"]);
            assert!(out.success(), "exec{}", c.diag(&out));
        });
        assert!(
            !created.iter().any(|n| n.starts_with("runc.")),
            "runc cloned itself for the exec: {created:?}"
        );
    }

    // A second pod's shim takes the same copy at its first create.
    let b = common::unique_id("sealed-b");
    c.start_running(&b, &["sleep", "1000"]);
    let shim_b = shim_of(&c, &b);
    assert_ne!(shim_a, shim_b, "two pods, two shims");
    let copy_b = sealed_copy_of(shim_b)
        .unwrap_or_else(|| panic!("the second shim {shim_b} holds no sealed runtime copy"));
    assert_eq!(
        ino(&copy_b),
        ino(&copy),
        "both shims must hold the same memfd"
    );
    let out = c.ctr(&["task", "exec", "--exec-id", "b1", &b, "sh", "-c", "exit 3"]);
    assert_eq!(out.code, Some(3), "exec in the second pod{}", c.diag(&out));

    common::kill_and_delete(&c, &a);
    common::kill_and_delete(&c, &b);
}
