//! End-to-end tests of exec, terminals and every stdio scheme, through a
//! private containerd and `ctr` (see `tests/common/mod.rs`).
//!
//! - exec output / exit code, errors for stopped, unknown and duplicate execs
//! - 500 execs, 50 at a time, every exit code checked
//! - terminals driven through a pty allocated here (`ctr task exec -t`,
//!   `ctr run -t`): echo, `stty size` after ResizePty, SIGWINCH resizes,
//!   exit codes
//! - CloseIO (stdin EOF) for init and exec, stdin byte-identical
//! - 100 MiB of output followed by an immediate exit arrives complete
//! - `binary://` logger and `file://` log receive exactly the container's bytes
//! - a background process holding stdout does not keep `ctr` hanging
//!
//! `TENDER_E2E_RUNTIME=io.containerd.runc.v2` runs the same tests against
//! containerd's Go shim.

#[macro_use]
mod common;

use common::{processes, wait_until, CmdOutput, Containerd, Ctr, IMAGE_REF};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/// Hex sha256 through the `sha256sum` tool: the `sha2` crate is unoptimized in
/// test builds and takes seconds for 100 MiB.
fn sha256(data: &[u8]) -> String {
    common::sha256_hex(data)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut f = fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut v = vec![0u8; n];
    f.read_exact(&mut v).expect("read /dev/urandom");
    v
}

/// `ctr run` arguments (mirrors the harness: fifo dir inside the temp dir).
fn run_args(c: &Ctr<'_>, opts: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["run".into(), "--rm".into()];
    v.extend(opts.iter().map(|s| s.to_string()));
    v.push("--fifo-dir".into());
    v.push(c.cd.dir.join("fifo").display().to_string());
    v.push("--runtime".into());
    v.push(c.runtime.clone());
    v.push(IMAGE_REF.into());
    v.push(id.into());
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

/// `ctr task exec` arguments.
fn exec_args(c: &Ctr<'_>, opts: &[&str], id: &str, exec_id: &str, cmd: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["task".into(), "exec".into()];
    v.extend(opts.iter().map(|s| s.to_string()));
    // `ctr task exec` refuses --fifo-dir together with --log-uri.
    if !opts.contains(&"--log-uri") {
        v.push("--fifo-dir".into());
        v.push(c.cd.dir.join("fifo").display().to_string());
    }
    v.push("--exec-id".into());
    v.push(exec_id.into());
    v.push(id.into());
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

fn ctr_command(c: &Ctr<'_>, args: &[String]) -> Command {
    let mut cmd = c.command();
    cmd.args(args);
    cmd
}

/// `ctr task exec --exec-id <exec_id> <id> <cmd...>` (stdin /dev/null).
fn exec(c: &Ctr<'_>, id: &str, exec_id: &str, cmd: &[&str]) -> CmdOutput {
    let args = exec_args(c, &[], id, exec_id, cmd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ctr(&args)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A directory for test files inside the containerd temp dir (removed with it).
fn scratch_dir(cd: &Containerd, name: &str) -> PathBuf {
    let d = cd.dir.join(name);
    fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}

// ---------------------------------------------------------------------------
// A command running on a pty allocated here
// ---------------------------------------------------------------------------

fn set_cloexec(fd: &OwnedFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFD);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, flags | libc::FD_CLOEXEC);
    }
}

/// A child whose controlling terminal is the slave side of a pty we own.
struct PtySession {
    child: Option<Child>,
    cmdline: String,
    master: fs::File,
    buf: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    /// Position after the last successful [`PtySession::expect`].
    pos: usize,
}

impl PtySession {
    fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtySession {
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        set_cloexec(&pty.master);
        set_cloexec(&pty.slave);
        let cmdline = describe(&cmd);
        let slave = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup slave")))
            .stderr(Stdio::from(slave.try_clone().expect("dup slave")));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmdline} on a pty: {e}"));
        drop(cmd);
        drop(slave);
        let master = fs::File::from(pty.master);
        let buf = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut rd = master.try_clone().expect("dup master");
        let (buf2, stop2) = (buf.clone(), stop.clone());
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while !stop2.load(Ordering::Relaxed) {
                let mut pfd = libc::pollfd {
                    fd: rd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 100) };
                if n <= 0 {
                    continue;
                }
                match rd.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // EIO: every slave fd closed
                    // Line endings differ between terminals (\r\n, \r\r\n): keep only \n.
                    Ok(n) => buf2
                        .lock()
                        .unwrap()
                        .extend(chunk[..n].iter().copied().filter(|b| *b != b'\r')),
                }
            }
        });
        PtySession {
            child: Some(child),
            cmdline,
            master,
            buf,
            stop,
            pos: 0,
        }
    }

    fn send(&mut self, data: &str) {
        self.master
            .write_all(data.as_bytes())
            .unwrap_or_else(|e| panic!("writing to the pty of {}: {e}", self.cmdline));
    }

    fn output(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears after the previous match.
    fn expect(&mut self, needle: &str, timeout: Duration) -> bool {
        let n = needle.as_bytes();
        let found = wait_until(timeout, Duration::from_millis(10), || {
            let b = self.buf.lock().unwrap();
            b[self.pos.min(b.len())..]
                .windows(n.len())
                .position(|w| w == n)
                .map(|p| self.pos + p + n.len())
        });
        match found {
            Some(end) => {
                self.pos = end;
                true
            }
            None => false,
        }
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Exit code of the child (None on timeout: killed; or killed by a signal).
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    // Let the reader pick up the last output.
                    thread::sleep(Duration::from_millis(50));
                    return st.code();
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    fn diag(&self, c: &Ctr<'_>) -> String {
        format!(
            "\ncommand: {}\npty output: {:?}{}",
            self.cmdline,
            self.output(),
            c.log()
        )
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Types `stty size` until the shell reports `rows cols`. ctr sends ResizePty only
/// after Start returned, so a shell that is quick enough can still see 0x0 at first.
fn expect_stty_size(s: &mut PtySession, rows: u16, cols: u16) -> bool {
    let want = format!("\n{rows} {cols}\n");
    let deadline = Instant::now() + SHORT;
    while Instant::now() < deadline {
        s.send("stty size\r");
        if s.expect(&want, Duration::from_millis(500)) {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------
// 1. exec output, exit code and errors
// ---------------------------------------------------------------------------

#[test]
fn exec_output_and_exit_code() {
    let cd = setup!("exec_output_and_exit_code");
    let c = cd.client("exec-out");
    let id = common::unique_id("exec");
    c.start_running(&id, &["sleep", "1000"]);

    let out = exec(
        &c,
        &id,
        "e1",
        &["sh", "-c", "echo out-line; echo err-line >&2; exit 5"],
    );
    assert_eq!(out.code, Some(5), "exec must exit 5{}", c.diag(&out));
    assert_eq!(
        out.stdout,
        b"out-line\n".to_vec(),
        "exec stdout must be exactly \"out-line\\n\"{}",
        c.diag(&out)
    );
    assert!(
        out.stderr_str().contains("err-line"),
        "exec stderr must carry \"err-line\"{}",
        c.diag(&out)
    );

    // The same exec id can be used again once the previous exec was deleted.
    let out = exec(&c, &id, "e1", &["echo", "again"]);
    assert_eq!(out.code, Some(0), "reused exec id{}", c.diag(&out));
    assert_eq!(out.stdout, b"again\n".to_vec(), "{}", c.diag(&out));

    // An exec sees the container's filesystem and environment.
    let out = exec(
        &c,
        &id,
        "e2",
        &["sh", "-c", "cat /etc/hostname >/dev/null; pwd"],
    );
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    assert_eq!(out.stdout, b"/\n".to_vec(), "{}", c.diag(&out));

    // A running exec id cannot be used twice.
    let args = exec_args(&c, &["-d"], &id, "dup", &["sleep", "1000"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = c.ctr(&args);
    assert!(first.success(), "detached exec{}", c.diag(&first));
    let second = exec(&c, &id, "dup", &["true"]);
    assert!(
        !second.success(),
        "a second exec with the running exec id `dup` must fail{}",
        c.diag(&second)
    );
    assert!(
        second.stderr_str().contains("already exists"),
        "duplicate exec id error should say `already exists`{}",
        c.diag(&second)
    );

    // No command: a clear error, not a hang.
    let out = exec(&c, &id, "e3", &["/no/such/binary"]);
    assert!(
        !out.success(),
        "exec of a missing binary must fail{}",
        c.diag(&out)
    );

    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&id, "STOPPED", SHORT);
    let del = c.delete_task(&id);
    assert!(del.success(), "ctr task delete{}", c.diag(&del));
    c.delete_container(&id);
}

#[test]
fn exec_into_stopped_or_unknown_container_fails_clearly() {
    let cd = setup!("exec_into_stopped_or_unknown_container_fails_clearly");
    let c = cd.client("exec-err");

    // Stopped task.
    let id = common::unique_id("stopped");
    c.run_detached(&id, &["true"]);
    c.wait_task_status(&id, "STOPPED", SHORT);
    let started = Instant::now();
    let out = exec(&c, &id, "late", &["echo", "hi"]);
    assert!(
        !out.success(),
        "exec into a stopped task must fail{}",
        c.diag(&out)
    );
    assert!(
        started.elapsed() < SHORT,
        "exec into a stopped task took {:?}{}",
        started.elapsed(),
        c.diag(&out)
    );
    let err = out.stderr_str().to_lowercase();
    assert!(
        err.contains("not running") || err.contains("stopped"),
        "error for exec into a stopped task should say it is not running / stopped{}",
        c.diag(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "no output expected from a failed exec{}",
        c.diag(&out)
    );
    // The task is still there and deletable; the failed exec left nothing behind.
    let del = c.delete_task(&id);
    assert!(del.success(), "ctr task delete{}", c.diag(&del));
    c.delete_container(&id);

    // Unknown container.
    let out = exec(&c, "no-such-container", "x", &["echo", "hi"]);
    assert!(
        !out.success(),
        "exec into an unknown container must fail{}",
        c.diag(&out)
    );
    assert!(
        out.stderr_str().contains("not found"),
        "error for an unknown container should say `not found`{}",
        c.diag(&out)
    );

    // Container without a task.
    let id = common::unique_id("notask");
    let create = c.ctr(&[
        "containers",
        "create",
        "--runtime",
        &c.runtime,
        IMAGE_REF,
        &id,
        "sleep",
        "1000",
    ]);
    assert!(create.success(), "{}", c.diag(&create));
    let out = exec(&c, &id, "x", &["echo", "hi"]);
    assert!(
        !out.success() && out.stderr_str().contains("not found"),
        "exec into a container without a task must fail with `not found`{}",
        c.diag(&out)
    );
    c.delete_container(&id);
}

// ---------------------------------------------------------------------------
// 2. many execs
// ---------------------------------------------------------------------------

#[test]
fn five_hundred_execs_fifty_at_a_time() {
    const TOTAL: usize = 500;
    const PARALLEL: usize = 50;
    let cd = setup!("five_hundred_execs_fifty_at_a_time");
    let c = cd.client("many-execs");
    let id = common::unique_id("many");
    c.start_running(&id, &["sleep", "1000"]);

    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= TOTAL {
                    break;
                }
                let script = format!("echo exec-{i}; exit $(({i} % 7))");
                let args = exec_args(&c, &[], &id, &format!("x{i}"), &["sh", "-c", &script]);
                let mut cmd = c.command();
                cmd.args(&args);
                let out = common::run_cmd(cmd, Duration::from_secs(60));
                let want_out = format!("exec-{i}\n");
                if out.code != Some((i % 7) as i32) || out.stdout != want_out.as_bytes() {
                    failures.lock().unwrap().push(format!(
                        "exec {i}: want exit {} and {want_out:?}\n{out}",
                        i % 7
                    ));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {TOTAL} execs went wrong (took {elapsed:?}); first ones:\n{}{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        c.log()
    );
    common::notice(&format!(
        "five_hundred_execs_fifty_at_a_time: {TOTAL} execs in {elapsed:?}"
    ));

    // Every exec was deleted by ctr: only the init is left.
    let pids = c.task_pids(&id);
    assert_eq!(
        pids.len(),
        1,
        "only the init should remain after all execs; ctr task ps: {pids:?}{}",
        c.log()
    );
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&id, "STOPPED", SHORT);
    let del = c.delete_task(&id);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&id);
}

// ---------------------------------------------------------------------------
// 3. terminals
// ---------------------------------------------------------------------------

#[test]
fn exec_tty_echo_stty_size_and_resize() {
    let cd = setup!("exec_tty_echo_stty_size_and_resize");
    let c = cd.client("exec-tty");
    let id = common::unique_id("tty");
    c.start_running(&id, &["sleep", "1000"]);

    let args = exec_args(&c, &["-t"], &id, "tty1", &["sh"]);
    let mut s = PtySession::spawn(ctr_command(&c, &args), 33, 77);
    assert!(s.expect("# ", SHORT), "no shell prompt{}", s.diag(&c));

    // Typed input is echoed by the container's terminal, output comes back. Only the
    // argument is matched: ctr's first ResizePty can reach the shell while the line is being
    // typed, and ash's SIGWINCH redraw then splits the echo ("echo/ # echo\e[J tender''echo").
    // The quotes appear only in the echo, never in the output.
    s.send("echo tender''echo\r");
    assert!(
        s.expect("tender''echo", SHORT),
        "typed input was not echoed{}",
        s.diag(&c)
    );
    assert!(
        s.expect("tenderecho\n", SHORT),
        "output of `echo` missing{}",
        s.diag(&c)
    );

    // ctr sends its terminal's size (ResizePty) right after Start.
    assert!(
        expect_stty_size(&mut s, 33, 77),
        "`stty size` must report the size set through ResizePty (33 77){}",
        s.diag(&c)
    );

    // Resizing our terminal: ctr gets SIGWINCH and sends ResizePty again.
    s.resize(40, 100);
    let ok = expect_stty_size(&mut s, 40, 100);
    assert!(ok, "resize to 40x100 never reached the exec{}", s.diag(&c));

    // A terminal process sees a tty on all three fds.
    s.send("tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all''tty\r");
    assert!(
        s.expect("/dev/pts/", SHORT) && s.expect("alltty\n", SHORT),
        "stdin/stdout/stderr of a terminal exec must be the pty{}",
        s.diag(&c)
    );

    s.send("exit 4\r");
    let code = s.wait(SHORT);
    assert_eq!(
        code,
        Some(4),
        "ctr task exec -t must exit with the shell's status 4{}",
        s.diag(&c)
    );
    drop(s);

    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&id, "STOPPED", SHORT);
    let del = c.delete_task(&id);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&id);
}

#[test]
fn run_tty_shell_is_interactive() {
    let cd = setup!("run_tty_shell_is_interactive");
    let c = cd.client("run-tty");
    let id = common::unique_id("runtty");
    let args = run_args(&c, &["-t"], &id, &["sh"]);
    let mut s = PtySession::spawn(ctr_command(&c, &args), 24, 80);
    assert!(s.expect("# ", SHORT), "no shell prompt{}", s.diag(&c));
    s.send("echo h''i\r");
    assert!(
        s.expect("hi\n", SHORT),
        "`echo hi` gave no `hi`{}",
        s.diag(&c)
    );
    assert!(
        expect_stty_size(&mut s, 24, 80),
        "`stty size` of `ctr run -t` should be 24 80{}",
        s.diag(&c)
    );
    // ^C reaches the shell as SIGINT through the terminal, not ctr.
    s.send("sleep 1000\r");
    assert!(s.expect("sleep 1000\n", SHORT), "{}", s.diag(&c));
    thread::sleep(Duration::from_millis(300));
    s.send("\x03");
    assert!(
        s.expect("# ", SHORT),
        "^C did not interrupt `sleep`{}",
        s.diag(&c)
    );
    s.send("echo still''alive\r");
    assert!(
        s.expect("stillalive\n", SHORT),
        "shell gone after ^C{}",
        s.diag(&c)
    );
    s.send("exit 3\r");
    let code = s.wait(SHORT);
    assert_eq!(
        code,
        Some(3),
        "`ctr run -t ... sh` must exit 3 after `exit 3`{}",
        s.diag(&c)
    );
    let gone = wait_until(SHORT, Duration::from_millis(25), || {
        c.task(&id).is_none().then_some(())
    });
    assert!(gone.is_some(), "task {id} left after run --rm{}", c.log());
}

// ---------------------------------------------------------------------------
// 4./5. stdin: CloseIO and byte-identical input
// ---------------------------------------------------------------------------

#[test]
fn close_io_ends_cat_for_init_and_exec() {
    let cd = setup!("close_io_ends_cat_for_init_and_exec");
    let c = cd.client("closeio");

    // init: `echo x | ctr run ... cat`
    let id = common::unique_id("cat");
    let args = run_args(&c, &[], &id, &["cat"]);
    let out = common::run_cmd_with_stdin(ctr_command(&c, &args), Some(b"x\n".to_vec()), SHORT);
    assert!(
        !out.timed_out,
        "`echo x | ctr run ... cat` hung: stdin EOF (CloseIO) never reached cat{}",
        c.diag(&out)
    );
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    assert_eq!(out.stdout, b"x\n".to_vec(), "{}", c.diag(&out));

    // Not tested: *empty* stdin. ctr's copy then reads EOF and closes its end of
    // the FIFO before the shim is even created, and sends no CloseIO (its CloseIO
    // hook is installed only after NewTask returns). The FIFO then looks exactly
    // like one whose writer has not come yet, for any shim; `cat` waits forever
    // (the Go shim hangs the same way).

    // exec: `echo y | ctr task exec ... cat`, twice in the same container.
    let id = common::unique_id("host");
    c.start_running(&id, &["sleep", "1000"]);
    for n in 0..2 {
        let args = exec_args(&c, &[], &id, &format!("cat{n}"), &["cat"]);
        let input = format!("y{n}\n").into_bytes();
        let out = common::run_cmd_with_stdin(ctr_command(&c, &args), Some(input.clone()), SHORT);
        assert!(
            !out.timed_out,
            "`echo y | ctr task exec ... cat` hung: CloseIO never reached the exec{}",
            c.diag(&out)
        );
        assert_eq!(out.code, Some(0), "{}", c.diag(&out));
        assert_eq!(out.stdout, input, "{}", c.diag(&out));
    }
    // The container's init is untouched by the execs' stdin closing.
    let t = c.task(&id);
    assert_eq!(
        t.as_ref().map(|t| t.status.as_str()),
        Some("RUNNING"),
        "{t:?}{}",
        c.log()
    );
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&id, "STOPPED", SHORT);
    let del = c.delete_task(&id);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&id);
}

#[test]
fn stdin_round_trips_byte_identical() {
    let cd = setup!("stdin_round_trips_byte_identical");
    let c = cd.client("stdin");

    // init: 4 MiB of random bytes through cat. Several rounds: ctr stops reading stdout once
    // it has the exit, so an exit reported while output still sits in the FIFO loses bytes
    // in some rounds only.
    let data = random_bytes(4 << 20);
    let want = sha256(&data);
    for round in 0..4 {
        let id = common::unique_id("stdin");
        let args = run_args(&c, &[], &id, &["cat"]);
        let out = common::run_cmd_with_stdin(ctr_command(&c, &args), Some(data.clone()), LONG);
        assert!(!out.timed_out, "init cat hung{}", c.diag(&out));
        assert_eq!(out.code, Some(0), "{}", c.diag(&out));
        assert_eq!(
            (out.stdout.len(), sha256(&out.stdout)),
            (data.len(), want.clone()),
            "init round {round}: bytes through stdin -> cat -> stdout differ\nstderr: {}{}",
            out.stderr_str(),
            c.log()
        );
    }

    // Checked inside too: the container's cat sees exactly these bytes.
    let id = common::unique_id("stdin-sum");
    let args = run_args(&c, &[], &id, &["sha256sum"]);
    let out = common::run_cmd_with_stdin(ctr_command(&c, &args), Some(data.clone()), LONG);
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    assert_eq!(
        out.stdout_str().split_whitespace().next().unwrap_or(""),
        want,
        "sha256 computed inside the container differs{}",
        c.diag(&out)
    );

    // exec: 1 MiB.
    let data = random_bytes(1 << 20);
    let id = common::unique_id("stdin-host");
    c.start_running(&id, &["sleep", "1000"]);
    let args = exec_args(&c, &[], &id, "cat", &["cat"]);
    let out = common::run_cmd_with_stdin(ctr_command(&c, &args), Some(data.clone()), LONG);
    assert!(!out.timed_out, "exec cat hung{}", c.diag(&out));
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    assert_eq!(
        (out.stdout.len(), sha256(&out.stdout)),
        (data.len(), sha256(&data)),
        "exec: bytes through stdin -> cat -> stdout differ{}",
        c.log()
    );
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&id, "STOPPED", SHORT);
    let del = c.delete_task(&id);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&id);
}

// ---------------------------------------------------------------------------
// 6. large output then immediate exit
// ---------------------------------------------------------------------------

/// Writes `size` random bytes to stdout (through `tee`) and the sha256 of what
/// it wrote to stderr, then exits at once.
fn big_output_script(size: usize) -> String {
    format!(
        "exec 3>&1; s=$(head -c {size} /dev/urandom | tee /dev/fd/3 | sha256sum); echo \"sum=$s\" >&2"
    )
}

fn check_big_output(c: &Ctr<'_>, what: &str, size: usize, out: &CmdOutput) {
    assert!(!out.timed_out, "{what}: timed out{}", summarize(c, out));
    assert_eq!(out.code, Some(0), "{what}: exit code{}", summarize(c, out));
    let inner = out
        .stderr_str()
        .lines()
        .find_map(|l| l.strip_prefix("sum=").map(|s| s.to_string()))
        .unwrap_or_default();
    let inner = inner.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(
        inner.len(),
        64,
        "{what}: no checksum from inside the container on stderr{}",
        summarize(c, out)
    );
    assert_eq!(
        out.stdout.len(),
        size,
        "{what}: received {} of {size} bytes{}",
        out.stdout.len(),
        summarize(c, out)
    );
    assert_eq!(
        sha256(&out.stdout),
        inner,
        "{what}: received bytes differ from what the container wrote{}",
        summarize(c, out)
    );
}

/// Diagnostics without dumping megabytes of binary stdout.
fn summarize(c: &Ctr<'_>, out: &CmdOutput) -> String {
    format!(
        "\ncommand: {}\n  exit code: {:?} signal: {:?} timed out: {}\n  stdout: {} bytes\n  stderr: {:?}{}",
        out.cmdline,
        out.code,
        out.signal,
        out.timed_out,
        out.stdout.len(),
        out.stderr_str(),
        c.log()
    )
}

#[test]
fn hundred_mib_then_exit_arrives_complete() {
    const SIZE: usize = 100 << 20;
    let cd = setup!("hundred_mib_then_exit_arrives_complete");
    let c = cd.client("bigout");
    let id = common::unique_id("big");
    let script = big_output_script(SIZE);
    let args = run_args(&c, &[], &id, &["sh", "-c", &script]);
    let started = Instant::now();
    let out = common::run_cmd(ctr_command(&c, &args), LONG);
    check_big_output(&c, "init", SIZE, &out);
    common::notice(&format!(
        "hundred_mib_then_exit_arrives_complete: init 100 MiB in {:?}",
        started.elapsed()
    ));

    // The same through an exec (16 MiB keeps it quick).
    let id = common::unique_id("big-host");
    c.start_running(&id, &["sleep", "1000"]);
    let script = big_output_script(16 << 20);
    let args = exec_args(&c, &[], &id, "big", &["sh", "-c", &script]);
    let out = common::run_cmd(ctr_command(&c, &args), LONG);
    check_big_output(&c, "exec", 16 << 20, &out);
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&id, "STOPPED", SHORT);
    let del = c.delete_task(&id);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&id);
}

// ---------------------------------------------------------------------------
// 7./8. binary:// logger and file:// log
// ---------------------------------------------------------------------------

/// A `binary://` logger: copies fd 3 (stdout) and fd 4 (stderr) to files in the
/// directory given as its second argument (`?dir=<path>` → argv `dir <path>`),
/// closes fd 5 once ready, renames the files when its inputs end.
const LOGGER: &str = r#"#!/bin/sh
# containerd's Go shim sends SIGTERM at delete: keep going until the input ends.
trap '' TERM
dir="$2"
env | grep '^CONTAINER_' | sort > "$dir/env"
cat <&3 >"$dir/stdout.part" 4<&- 5>&- &
cat <&4 >"$dir/stderr.part" 3<&- 5>&- &
exec 3<&- 4<&- 5>&-
wait
mv "$dir/stdout.part" "$dir/stdout"
mv "$dir/stderr.part" "$dir/stderr"
"#;

fn seq_text(from: u32, to: u32, prefix: &str) -> String {
    (from..=to).map(|i| format!("{prefix}{i}\n")).collect()
}

#[test]
fn binary_logger_receives_exact_bytes() {
    let cd = setup!("binary_logger_receives_exact_bytes");
    let c = cd.client("binlog");
    let dir = scratch_dir(&cd, "binlog");
    let logger = dir.join("logger.sh");
    fs::write(&logger, LOGGER).expect("write logger");
    fs::set_permissions(&logger, fs::Permissions::from_mode(0o755)).expect("chmod logger");
    let out_dir = scratch_dir(&cd, "binlog/out");

    let id = common::unique_id("binlog");
    let uri = format!("binary://{}?dir={}", logger.display(), out_dir.display());
    let script = "seq 1 100000; seq 1 2000 | sed 's/^/e/' >&2; printf 'no newline at end'";
    let args = run_args(&c, &["--log-uri", &uri], &id, &["sh", "-c", script]);
    let out = common::run_cmd(ctr_command(&c, &args), LONG);
    assert_eq!(out.code, Some(0), "ctr run with {uri}{}", c.diag(&out));
    assert!(
        out.stdout.is_empty(),
        "with a binary:// logger ctr itself gets no output{}",
        c.diag(&out)
    );

    let done = wait_until(SHORT, Duration::from_millis(25), || {
        (out_dir.join("stdout").exists() && out_dir.join("stderr").exists()).then_some(())
    });
    let listing: Vec<String> = fs::read_dir(&out_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        done.is_some(),
        "the logger never saw the end of its input (files: {listing:?}){}",
        c.log()
    );
    let got_out = fs::read(out_dir.join("stdout")).unwrap_or_default();
    let got_err = fs::read(out_dir.join("stderr")).unwrap_or_default();
    let want_out = seq_text(1, 100000, "") + "no newline at end";
    let want_err = seq_text(1, 2000, "e");
    assert!(
        got_out == want_out.as_bytes(),
        "logger stdout differs: got {} bytes, want {}; tail {:?}{}",
        got_out.len(),
        want_out.len(),
        String::from_utf8_lossy(&got_out[got_out.len().saturating_sub(100)..]),
        c.log()
    );
    assert!(
        got_err == want_err.as_bytes(),
        "logger stderr differs: got {:?}…, {} bytes, want {} bytes{}",
        String::from_utf8_lossy(&got_err[..got_err.len().min(100)]),
        got_err.len(),
        want_err.len(),
        c.log()
    );
    let env = fs::read_to_string(out_dir.join("env")).unwrap_or_default();
    assert!(
        env.contains(&format!("CONTAINER_ID={id}\n"))
            && env.contains(&format!("CONTAINER_NAMESPACE={}\n", c.namespace)),
        "logger environment must name the container and namespace: {env:?}"
    );

    // An exec with its own binary:// logger.
    let host = common::unique_id("binlog-host");
    c.start_running(&host, &["sleep", "1000"]);
    let exec_dir = scratch_dir(&cd, "binlog/exec");
    let uri = format!("binary://{}?dir={}", logger.display(), exec_dir.display());
    let args = exec_args(
        &c,
        &["--log-uri", &uri],
        &host,
        "logged",
        &["sh", "-c", "seq 1 5000; echo exec-err >&2; exit 6"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    assert_eq!(out.code, Some(6), "exec with {uri}{}", c.diag(&out));
    let done = wait_until(SHORT, Duration::from_millis(25), || {
        (exec_dir.join("stdout").exists() && exec_dir.join("stderr").exists()).then_some(())
    });
    assert!(done.is_some(), "exec logger never finished{}", c.log());
    assert!(
        fs::read(exec_dir.join("stdout")).unwrap_or_default() == seq_text(1, 5000, "").as_bytes(),
        "exec logger stdout differs{}",
        c.log()
    );
    assert_eq!(
        fs::read_to_string(exec_dir.join("stderr")).unwrap_or_default(),
        "exec-err\n"
    );
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &host]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&host, "STOPPED", SHORT);
    let del = c.delete_task(&host);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&host);
}

#[test]
fn file_log_holds_the_output() {
    let cd = setup!("file_log_holds_the_output");
    let c = cd.client("filelog");
    let dir = scratch_dir(&cd, "filelog");
    let log = dir.join("ctr.log");
    let id = common::unique_id("filelog");
    let uri = format!("file://{}", log.display());
    let script = "seq 1 100000; echo ERR-LINE >&2; echo END";
    let args = run_args(&c, &["--log-uri", &uri], &id, &["sh", "-c", script]);
    let out = common::run_cmd(ctr_command(&c, &args), LONG);
    assert_eq!(out.code, Some(0), "ctr run with {uri}{}", c.diag(&out));
    assert!(
        out.stdout.is_empty(),
        "with a file:// log ctr itself gets no output{}",
        c.diag(&out)
    );
    let text = wait_until(SHORT, Duration::from_millis(25), || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.ends_with("END\n"))
    })
    .unwrap_or_else(|| {
        panic!(
            "{} never got the complete output: {:?}{}",
            log.display(),
            fs::read_to_string(&log)
                .map(|t| t[t.len().saturating_sub(200)..].to_string())
                .unwrap_or_default(),
            c.log()
        )
    });
    let stdout_part: String = text
        .lines()
        .filter(|l| *l != "ERR-LINE")
        .map(|l| format!("{l}\n"))
        .collect();
    let want = seq_text(1, 100000, "") + "END\n";
    assert!(
        stdout_part == want,
        "file log stdout lines differ: {} bytes, want {}",
        stdout_part.len(),
        want.len()
    );
    assert_eq!(
        text.lines().filter(|l| *l == "ERR-LINE").count(),
        1,
        "file log must hold the stderr line exactly once"
    );
    assert_eq!(text.len(), want.len() + "ERR-LINE\n".len());

    // Appends: a second container with the same file adds to it.
    let id2 = common::unique_id("filelog2");
    let args = run_args(&c, &["--log-uri", &uri], &id2, &["echo", "second"]);
    let out = common::run_cmd(ctr_command(&c, &args), LONG);
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    let appended = wait_until(SHORT, Duration::from_millis(25), || {
        fs::read_to_string(&log)
            .ok()
            .filter(|t| t.ends_with("second\n"))
    });
    assert!(
        appended.map(|t| t.len()) == Some(text.len() + "second\n".len()),
        "second container's output must be appended to {}{}",
        log.display(),
        c.log()
    );

    // An exec logging to its own file.
    let host = common::unique_id("filelog-host");
    c.start_running(&host, &["sleep", "1000"]);
    let exec_log = dir.join("exec.log");
    let uri = format!("file://{}", exec_log.display());
    let args = exec_args(
        &c,
        &["--log-uri", &uri],
        &host,
        "logged",
        &["sh", "-c", "seq 1 5000; exit 2"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = c.ctr(&args);
    assert_eq!(out.code, Some(2), "exec with {uri}{}", c.diag(&out));
    let got = wait_until(SHORT, Duration::from_millis(25), || {
        fs::read_to_string(&exec_log)
            .ok()
            .filter(|t| t.ends_with("5000\n"))
    });
    assert!(
        got.as_deref() == Some(seq_text(1, 5000, "").as_str()),
        "exec file log differs{}",
        c.log()
    );
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &host]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&host, "STOPPED", SHORT);
    let del = c.delete_task(&host);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&host);

    // No stdio at all (`--null-io`): output is dropped, the exit code still comes back.
    let id3 = common::unique_id("nullio");
    let args = run_args(
        &c,
        &["--null-io"],
        &id3,
        &["sh", "-c", "seq 1 100000; echo e >&2; exit 3"],
    );
    let out = common::run_cmd(ctr_command(&c, &args), LONG);
    assert_eq!(out.code, Some(3), "ctr run --null-io{}", c.diag(&out));
    assert!(out.stdout.is_empty(), "{}", c.diag(&out));
}

// ---------------------------------------------------------------------------
// 9. background process holding stdout
// ---------------------------------------------------------------------------

/// Pids of processes whose argv is exactly `sleep <arg>`.
fn sleepers(arg: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, argv)| argv.len() == 2 && argv[0] == "sleep" && argv[1] == arg)
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
fn background_process_holding_stdout_does_not_block() {
    let cd = setup!("background_process_holding_stdout_does_not_block");
    let c = cd.client("bgout");
    // "Does not block" means: done long before ctr's own 20 s limit. The exec case always
    // includes the shim's 0.3 s exit report bound (the background `sleep` keeps stdout open).
    let bound = Duration::from_secs(15);

    // init: its own pid namespace, the `sleep` dies with it.
    let id = common::unique_id("bg");
    let args = run_args(&c, &[], &id, &["sh", "-c", "sleep 1000 & echo done"]);
    let started = Instant::now();
    let out = common::run_cmd(ctr_command(&c, &args), SHORT + SHORT);
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    assert_eq!(out.stdout, b"done\n".to_vec(), "{}", c.diag(&out));
    assert!(took < bound, "ctr run --rm took {took:?}{}", c.diag(&out));

    // exec: the exec's `sleep` outlives it and keeps its stdout open.
    let id = common::unique_id("bg-host");
    c.start_running(&id, &["sleep", "1000"]);
    let marker = format!("{}", 100_000 + std::process::id() % 100_000);
    let script = format!("sleep {marker} & echo done");
    let started = Instant::now();
    let out = exec(&c, &id, "bg", &["sh", "-c", &script]);
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    assert_eq!(out.stdout, b"done\n".to_vec(), "{}", c.diag(&out));
    assert!(
        took < bound,
        "ctr task exec with a background child holding stdout took {took:?}{}",
        c.diag(&out)
    );
    assert!(
        !sleepers(&marker).is_empty(),
        "the exec's background `sleep {marker}` should still run in the container"
    );
    // A later exec still works.
    let out = exec(&c, &id, "after", &["echo", "ok"]);
    assert_eq!(out.stdout, b"ok\n".to_vec(), "{}", c.diag(&out));
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&id, "STOPPED", SHORT);
    let del = c.delete_task(&id);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&id);

    // A pod-like pid namespace shared with another container: the init is not
    // pid 1 there, so its grandchild outlives it and holds its stdout. `ctr run
    // --rm` must still finish, and the delete kills the grandchild (runc kills
    // the whole cgroup of a container without its own pid namespace).
    let owner = common::unique_id("bg-owner");
    let owner_info = c.start_running(&owner, &["sleep", "1000"]);
    let id = common::unique_id("bg-shared");
    let marker = format!("{}", 200_000 + std::process::id() % 100_000);
    let script = format!("sleep {marker} & echo done");
    let ns = format!("pid:/proc/{}/ns/pid", owner_info.pid);
    let args = run_args(&c, &["--with-ns", &ns], &id, &["sh", "-c", &script]);
    let started = Instant::now();
    let out = common::run_cmd(ctr_command(&c, &args), SHORT + SHORT);
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{}", c.diag(&out));
    assert_eq!(out.stdout, b"done\n".to_vec(), "{}", c.diag(&out));
    assert!(
        took < bound,
        "ctr run --rm (shared pid ns, grandchild holding stdout) took {took:?}{}",
        c.diag(&out)
    );
    let gone = wait_until(SHORT, Duration::from_millis(25), || {
        sleepers(&marker).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the grandchild `sleep {marker}` survived the container's deletion: {:?}",
        sleepers(&marker)
    );
    let k = c.ctr(&["task", "kill", "-s", "SIGKILL", &owner]);
    assert!(k.success(), "{}", c.diag(&k));
    c.wait_task_status(&owner, "STOPPED", SHORT);
    let del = c.delete_task(&owner);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&owner);
}
