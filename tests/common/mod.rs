//! End-to-end test harness for the Tender shim (std only).
//!
//! Every test gets its own *private* containerd (the distribution binary)
//! running under a fresh directory `/tmp/tender-e2e-<pid>-<n>-<nanos>/` with
//! its own root, state, gRPC and ttrpc sockets. containerd's `PATH` starts with
//! a private `bin/` directory holding a `containerd-shim-tender-v2` symlink to
//! the shim binary built by cargo, so `--runtime io.containerd.tender.v2`
//! resolves to the shim under test.
//!
//! The runtime under test defaults to `io.containerd.tender.v2`; set
//! `TENDER_E2E_RUNTIME=io.containerd.runc.v2` to validate the harness and the
//! tests against containerd's Go shim. `TENDER_E2E_KEEP=1` keeps the temp dir
//! (processes are still killed and mounts removed).
//!
//! The containerd under test is the host's (Debian 12: 1.6.20) unless `TENDER_E2E_CONTAINERD`
//! names another: `1.7` or `2.1` (the builds `scripts/fetch-matrix.sh` unpacks under
//! `TENDER_MATRIX_DIR`, default `/var/cache/tender-matrix`), or a directory holding
//! `containerd` and `ctr`. Its own `ctr` is used with it, and the config schema follows its
//! major version (`version = 2` for 1.x, `version = 3` for 2.x).
//!
//! Tests need root and containerd. Without them they print `SKIP ...` and
//! pass, unless `CI=true`, in which case they fail.
#![allow(dead_code)]

/// `let cd = setup!("test_name");` — a private containerd for the test, or return (SKIP) when
/// end-to-end tests cannot run here (never under CI=true; see [`setup`]).
#[allow(unused_macros)]
macro_rules! setup {
    ($name:expr) => {
        match common::setup($name) {
            Some(cd) => cd,
            None => return,
        }
    };
}

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shim binary built by cargo for this package.
pub const SHIM_BIN: &str = env!("CARGO_BIN_EXE_containerd-shim-tender-v2");
/// Runtime name of the shim under test.
pub const TENDER_RUNTIME: &str = "io.containerd.tender.v2";
/// Reference of the busybox image built by `scripts/busybox-image.sh`.
pub const IMAGE_REF: &str = "docker.io/library/busybox:tender";
/// Script that builds the busybox OCI archive (shared with `scripts/demo.sh`).
pub const IMAGE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/busybox-image.sh");
/// Default timeout for a single `ctr` invocation.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(30);
/// Where shims put their ttrpc sockets (containerd 1.6 convention).
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

static COUNTER: AtomicU64 = AtomicU64::new(0);

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn geteuid() -> u32;
}

pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

/// Send `sig` to `pid`; returns false if the process does not exist.
pub fn send_signal(pid: u32, sig: i32) -> bool {
    // SAFETY: plain libc call with integer arguments.
    unsafe { kill(pid as i32, sig) == 0 }
}

/// A process-unique, short, containerd-valid identifier: `<prefix>-<pid>-<n>`.
pub fn unique_id(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let prefix = if prefix.len() > 40 {
        &prefix[..40]
    } else {
        &prefix
    };
    let prefix = prefix.trim_end_matches('-');
    format!("{}-{}-{}", prefix, std::process::id(), n)
}

/// The runtime under test (`TENDER_E2E_RUNTIME` or `io.containerd.tender.v2`).
pub fn runtime() -> String {
    match std::env::var("TENDER_E2E_RUNTIME") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => TENDER_RUNTIME.to_string(),
    }
}

/// True when the runtime under test is Tender (not the Go shim the harness is validated with).
pub fn runtime_is_tender() -> bool {
    runtime() == TENDER_RUNTIME
}

// ---------------------------------------------------------------------------
// The containerd under test (TENDER_E2E_CONTAINERD)
// ---------------------------------------------------------------------------

/// Selects the containerd under test: unset/`1.6`/`system` = the host's, `1.7` / `2.1` = the
/// builds unpacked by `scripts/fetch-matrix.sh`, or a directory with `containerd` and `ctr`.
pub const CONTAINERD_ENV: &str = "TENDER_E2E_CONTAINERD";

/// A containerd build: its binaries and version.
#[derive(Clone, Debug)]
pub struct ContainerdBuild {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// `(major, minor, patch)` from `containerd --version`.
    pub version: (u32, u32, u32),
}

impl ContainerdBuild {
    /// The config schema this build reads: `version = 3` for 2.x, else `version = 2`.
    pub fn config_version(&self) -> u32 {
        if self.version.0 >= 2 {
            3
        } else {
            2
        }
    }

    /// `"1.6"`, `"1.7"`, `"2.1"`.
    pub fn minor_label(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }
}

/// Where `scripts/fetch-matrix.sh` unpacks the newer builds.
pub fn matrix_dir() -> PathBuf {
    match std::env::var_os("TENDER_MATRIX_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/var/cache/tender-matrix"),
    }
}

/// kubectl: `TENDER_KUBECTL`, else the version-matrix build under [`matrix_dir`], else the first
/// on `PATH`.
pub fn kubectl() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("TENDER_KUBECTL").filter(|k| !k.is_empty()) {
        return Some(PathBuf::from(k));
    }
    let k = matrix_dir().join("kubectl/usr/bin/kubectl");
    if k.is_file() {
        return Some(k);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|k| k.is_file())
    })
}

/// Parses `containerd --version` output (`containerd github.com/... 1.7.24~ds1 ...` or
/// `... v2.1.9 ...`): the first word that looks like a version.
pub fn parse_containerd_version(text: &str) -> Option<(u32, u32, u32)> {
    text.split_whitespace().skip(2).find_map(|w| {
        let w = w.trim_start_matches('v');
        let core: String = w
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
        match (it.next(), it.next(), it.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c))) => Some((a, b, c)),
            _ => None,
        }
    })
}

/// Describes one containerd build by its directory of binaries (or `None` = the host's PATH).
pub fn containerd_build(dir: Option<&Path>) -> Result<ContainerdBuild, String> {
    let (containerd, ctr) = match dir {
        Some(d) => (d.join("containerd"), d.join("ctr")),
        None => (
            in_path("containerd").ok_or("`containerd` binary (make deps)")?,
            in_path("ctr").ok_or("`ctr` binary (make deps)")?,
        ),
    };
    if !containerd.is_file() {
        return Err(format!(
            "`{}` (run scripts/fetch-matrix.sh)",
            containerd.display()
        ));
    }
    let out = Command::new(&containerd)
        .arg("--version")
        .output()
        .map_err(|e| format!("`{} --version`: {e}", containerd.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let version = parse_containerd_version(&text).ok_or_else(|| {
        format!(
            "cannot read the version of {}: {text:?}",
            containerd.display()
        )
    })?;
    Ok(ContainerdBuild {
        containerd,
        ctr,
        version,
    })
}

/// The containerd under test ([`CONTAINERD_ENV`]), resolved once.
pub fn containerd_under_test() -> Result<ContainerdBuild, String> {
    static BUILD: OnceLock<Result<ContainerdBuild, String>> = OnceLock::new();
    BUILD
        .get_or_init(|| {
            let sel = std::env::var(CONTAINERD_ENV).unwrap_or_default();
            let sel = sel.trim();
            match sel {
                "" | "1.6" | "system" => containerd_build(None),
                "1.7" | "2.1" => containerd_build(Some(
                    &matrix_dir().join(format!("containerd-{sel}/usr/bin")),
                )),
                dir => containerd_build(Some(Path::new(dir))),
            }
        })
        .clone()
}

/// The containerd under test; panics with the reason when it cannot be found (callers run
/// after [`e2e_enabled`], which reports that as a SKIP or a CI failure).
pub fn containerd_version() -> ContainerdBuild {
    match containerd_under_test() {
        Ok(b) => b,
        Err(e) => panic!("containerd under test: {e}"),
    }
}

/// Path of the `containerd` binary under test.
pub fn containerd_bin() -> PathBuf {
    containerd_under_test()
        .map(|b| b.containerd)
        .unwrap_or_else(|_| PathBuf::from("containerd"))
}

/// A `Command` for the `ctr` that belongs to the containerd under test.
pub fn ctr_command() -> Command {
    Command::new(
        containerd_under_test()
            .map(|b| b.ctr)
            .unwrap_or_else(|_| PathBuf::from("ctr")),
    )
}

/// True when the containerd under test is 2.x.
pub fn containerd_is_v2() -> bool {
    containerd_under_test()
        .map(|b| b.version.0 >= 2)
        .unwrap_or(false)
}

/// `io.containerd.runc.v2` -> `containerd-shim-runc-v2`.
pub fn shim_binary_name(runtime: &str) -> String {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() >= 2 {
        format!(
            "containerd-shim-{}-{}",
            parts[parts.len() - 2],
            parts[parts.len() - 1]
        )
    } else {
        format!("containerd-shim-{runtime}")
    }
}

fn in_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(bin)).find(|p| p.is_file())
}

fn ci() -> bool {
    matches!(
        std::env::var("CI").map(|v| v.to_ascii_lowercase()),
        Ok(ref v) if v == "true" || v == "1"
    )
}

/// Print straight to the terminal (bypasses libtest's output capture so that
/// SKIP notices are visible even for passing tests).
pub fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// Returns `true` if end-to-end tests can run here. Otherwise prints a SKIP
/// notice and returns `false` — or panics when `CI=true`.
pub fn e2e_enabled(test: &str) -> bool {
    e2e_enabled_with(test, &[])
}

/// What every end-to-end test needs and this machine lacks.
fn e2e_missing() -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: trivial libc call.
    if unsafe { geteuid() } != 0 {
        missing.push("root privileges".to_string());
    }
    for bin in ["tar", "sha256sum"] {
        if in_path(bin).is_none() {
            missing.push(format!("`{bin}` binary"));
        }
    }
    match containerd_under_test() {
        Ok(c) => {
            for bin in [&c.containerd, &c.ctr] {
                if !bin.is_file() {
                    missing.push(format!("`{}`", bin.display()));
                }
            }
        }
        Err(e) => missing.push(e),
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox (busybox-static)".to_string());
    }
    let rt = runtime();
    if rt != TENDER_RUNTIME && in_path(&shim_binary_name(&rt)).is_none() {
        missing.push(format!("`{}` for runtime {rt}", shim_binary_name(&rt)));
    }
    missing.extend(runtime_binary_missing());
    missing
}

/// Poll `f` every `interval` until it returns `Some` or `timeout` elapses.
pub fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(interval);
    }
}

// ---------------------------------------------------------------------------
// Running commands with a timeout
// ---------------------------------------------------------------------------

/// Result of a command run by [`run_cmd`].
#[derive(Clone, Debug)]
pub struct CmdOutput {
    pub cmdline: String,
    /// Exit code; `None` if killed by a signal, timed out or failed to spawn.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub spawn_error: Option<String>,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.cmdline)?;
        if let Some(e) = &self.spawn_error {
            writeln!(f, "  spawn error: {e}")?;
        }
        if self.timed_out {
            writeln!(f, "  TIMED OUT (killed)")?;
        }
        writeln!(f, "  exit code: {:?}  signal: {:?}", self.code, self.signal)?;
        writeln!(f, "  stdout: {:?}", truncate(&self.stdout_str(), 2000))?;
        write!(f, "  stderr: {:?}", truncate(&self.stderr_str(), 4000))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        let mut cut = s.len() - max;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        format!("...{}", &s[cut..])
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn reader_thread<R: Read + Send + 'static>(r: Option<R>) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Run `cmd` (stdin = /dev/null) collecting stdout/stderr; kill it after `timeout`.
pub fn run_cmd(cmd: Command, timeout: Duration) -> CmdOutput {
    run_cmd_with_stdin(cmd, None, timeout)
}

/// [`run_cmd`] with `input` written to the command's stdin from a thread, which is closed
/// after it (end of input); `None` = /dev/null.
pub fn run_cmd_with_stdin(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> CmdOutput {
    let cmdline = describe(&cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut out = CmdOutput {
        cmdline,
        code: None,
        signal: None,
        stdout: Vec::new(),
        stderr: Vec::new(),
        timed_out: false,
        spawn_error: None,
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            out.spawn_error = Some(e.to_string());
            return out;
        }
    };
    let mut stdin = child.stdin.take();
    let writer = input.map(|data| {
        thread::spawn(move || {
            if let Some(s) = stdin.as_mut() {
                let _ = s.write_all(&data);
            }
            drop(stdin);
        })
    });
    let so = reader_thread(child.stdout.take());
    let se = reader_thread(child.stderr.take());
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                out.code = status.code();
                out.signal = status.signal();
                break;
            }
            Ok(None) => {}
            Err(e) => {
                out.spawn_error = Some(format!("wait failed: {e}"));
                break;
            }
        }
        if Instant::now() >= deadline {
            out.timed_out = true;
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                out.signal = status.signal();
            }
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    if let Some(w) = writer {
        // The process is gone, so a blocked write has failed by now.
        let _ = w.join();
    }
    // A grandchild could keep the pipes open; do not wait forever for EOF.
    out.stdout = so.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    out.stderr = se.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    out
}

// ---------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------

/// All processes as (pid, argv).
pub fn processes() -> Vec<(u32, Vec<String>)> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue; // kernel thread or zombie
        }
        let argv = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        v.push((pid, argv));
    }
    v
}

/// A gRPC channel to the unix socket `path` (containerd's, or its CRI plugin's).
pub async fn unix_channel(
    path: PathBuf,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    // The URI is a placeholder: the connector always dials the unix socket.
    tonic::transport::Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// Open fds of a shim, besides the shared sealed runtime copy (`src/sealed_runtime.rs`): a
/// shim takes that one once, at its first or second create/exec, and keeps it.
pub fn fd_count_besides_runtime_copy(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    !fs::read_link(e.path())
                        .is_ok_and(|t| t.to_string_lossy().contains("tender-sealed-runtime"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Process state letter from /proc/<pid>/stat (`R`, `S`, `Z`, ...), `None` if gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// True if `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Pids of the live processes whose argv is exactly `argv`.
pub fn processes_with_argv(argv: &[&str]) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(pid, a)| {
            a.iter().map(String::as_str).eq(argv.iter().copied()) && process_alive(*pid)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// argv of a process, joined with spaces.
pub fn process_cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Mount points (from /proc/self/mountinfo) containing `needle`.
///
/// With a containerd in a private mount namespace ([`hide_cgroup2`]), the mounts its shims
/// make are only visible there: those namespaces' mountinfo is read as well.
pub fn mounts_containing(needle: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for source in mountinfo_sources() {
        let Ok(mi) = fs::read_to_string(&source) else {
            continue;
        };
        for mp in mi
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|mp| mp.contains(needle))
        {
            if !found.contains(&mp) {
                found.push(mp);
            }
        }
    }
    found
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hex sha256 of `data` (via the `sha256sum` tool, std only).
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn sha256sum: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(data)
            .unwrap_or_else(|e| panic!("writing to sha256sum: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("sha256sum failed: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------
// Busybox image
// ---------------------------------------------------------------------------

/// Build (once, cached under `target/`) the busybox OCI archive and return its path.
pub fn busybox_image() -> PathBuf {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match IMAGE.get_or_init(build_busybox_image) {
        Ok(p) => p.clone(),
        Err(e) => panic!("building the busybox image failed: {e}"),
    }
}

fn build_busybox_image() -> Result<PathBuf, String> {
    use std::hash::{Hash, Hasher};
    let script = fs::read(IMAGE_SCRIPT).map_err(|e| format!("reading {IMAGE_SCRIPT}: {e}"))?;
    let bb = fs::metadata("/bin/busybox").map_err(|e| format!("/bin/busybox: {e}"))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    script.hash(&mut h);
    bb.len().hash(&mut h);
    bb.modified().ok().hash(&mut h);
    IMAGE_REF.hash(&mut h);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("busybox-oci-{:016x}.tar", h.finish()));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let mut cmd = Command::new("bash");
    cmd.arg(IMAGE_SCRIPT)
        .arg(&path)
        .arg(IMAGE_REF)
        .arg("/bin/busybox");
    let out = run_cmd(cmd, Duration::from_secs(120));
    if !out.success() || !path.is_file() {
        return Err(format!("{out}"));
    }
    Ok(path)
}

// ---------------------------------------------------------------------------
// Private containerd
// ---------------------------------------------------------------------------

/// A private containerd instance; dropped = stopped and cleaned up.
pub struct Containerd {
    /// Temp dir holding everything (`/tmp/tender-e2e-...`).
    pub dir: PathBuf,
    /// gRPC socket (what `ctr -a` and shims' `-address` use).
    pub socket: PathBuf,
    pub ttrpc_socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub log_path: PathBuf,
    pub runtime: String,
    /// The containerd build this instance runs.
    pub build: ContainerdBuild,
    /// The daemon; behind a lock so that [`Containerd::restart`] works while `Ctr`
    /// clients borrow this instance.
    child: Mutex<Option<Child>>,
    /// containerd's PATH (kept for restarts).
    path_env: std::ffi::OsString,
    namespaces: Mutex<Vec<String>>,
    containers: Mutex<Vec<(String, String)>>,
}

impl Containerd {
    /// Start a private containerd. `runtime_dirs` are extra directories put
    /// on containerd's PATH after the private shim dir (before the normal PATH).
    pub fn start(runtime_dirs: &[&Path]) -> Containerd {
        Self::start_with_config(runtime_dirs, default_config)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        loop {
            if let Some(child) = lock_child(&self.child).as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "containerd exited during startup ({status})\n{}",
                        self.log_tail(60)
                    );
                }
            }
            if self.socket.exists() {
                let mut cmd = Command::new(&self.build.ctr);
                cmd.arg("-a").arg(&self.socket).arg("version");
                let out = run_cmd(cmd, Duration::from_secs(5));
                if out.success() {
                    self.runtime_binary_ready();
                    return;
                }
                last = Some(out);
            }
            if Instant::now() >= deadline {
                panic!(
                    "containerd did not become ready within 30s\nlast probe: {}\n{}",
                    last.map(|o| o.to_string())
                        .unwrap_or_else(|| "socket never appeared".into()),
                    self.log_tail(60)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// PID of the containerd daemon.
    pub fn pid(&self) -> Option<u32> {
        lock_child(&self.child).as_ref().map(|c| c.id())
    }

    /// Whole containerd log.
    pub fn log_text(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Last `n` lines of containerd's log (stdout+stderr, includes shim logs).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()));
        // Plugin-loading chatter at startup is never interesting.
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("loading plugin"))
            .collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "----- containerd log tail ({}) -----\n{}\n----- end of containerd log -----",
            self.log_path.display(),
            lines[start..].join("\n")
        )
    }

    /// A `ctr` client bound to a fresh unique namespace (`prefix-<pid>-<n>`)
    /// into which the busybox image has been imported.
    pub fn client(&self, prefix: &str) -> Ctr<'_> {
        let ns = unique_id(prefix);
        if let Ok(mut v) = self.namespaces.lock() {
            v.push(ns.clone());
        }
        let c = Ctr {
            cd: self,
            namespace: ns,
            runtime: self.runtime.clone(),
        };
        c.import_image();
        c
    }

    /// Adds a containerd namespace another client (dockerd) creates containers in to the ones
    /// cleaned up at drop: its tasks and containers deleted, `/sys/fs/cgroup/*/<ns>` killed
    /// and removed, `/run/containerd/runc/<ns>` removed.
    pub fn track_namespace(&self, ns: &str) {
        if let Ok(mut v) = self.namespaces.lock() {
            if !v.iter().any(|n| n == ns) {
                v.push(ns.to_string());
            }
        }
    }

    fn record_container(&self, ns: &str, id: &str) {
        if let Ok(mut v) = self.containers.lock() {
            v.push((ns.to_string(), id.to_string()));
        }
    }

    fn raw_ctr(&self, ns: &str, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut cmd = Command::new(&self.build.ctr);
        cmd.arg("-a").arg(&self.socket).arg("-n").arg(ns).args(args);
        run_cmd(cmd, timeout)
    }

    /// Shim processes of this containerd: argv mentions our socket and
    /// argv[0] (or /proc/pid/exe) is a `containerd-shim-*` binary.
    pub fn shim_processes(&self) -> Vec<(u32, String)> {
        let sock = self.socket.to_string_lossy().into_owned();
        processes()
            .into_iter()
            .filter(|(pid, argv)| {
                if *pid == std::process::id() || !argv.iter().any(|a| a.contains(&sock)) {
                    return false;
                }
                let argv0 = argv.first().map(|a| basename(a)).unwrap_or_default();
                let exe = fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| basename(&p.to_string_lossy()))
                    .unwrap_or_default();
                argv0.starts_with("containerd-shim") || exe.starts_with("containerd-shim")
            })
            .map(|(pid, argv)| (pid, argv.join(" ")))
            .collect()
    }

    fn cleanup(&mut self) {
        let started = Instant::now();
        let namespaces: Vec<String> = self
            .namespaces
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let containerd_alive = lock_child(&self.child)
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false);

        // 1. Graceful: kill + delete leftover tasks and containers.
        if containerd_alive {
            let t = Duration::from_secs(5);
            for ns in &namespaces {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let tasks = self.raw_ctr(ns, &["task", "ls", "-q"], t);
                for id in tasks.stdout_str().split_whitespace() {
                    let _ = self.raw_ctr(ns, &["task", "kill", "-s", "SIGKILL", id], t);
                }
                for id in tasks.stdout_str().split_whitespace() {
                    let _ = self.raw_ctr(ns, &["task", "delete", "-f", id], t);
                }
                let ctrs = self.raw_ctr(ns, &["containers", "ls", "-q"], t);
                for id in ctrs.stdout_str().split_whitespace() {
                    let _ = self.raw_ctr(ns, &["containers", "delete", id], t);
                }
            }
        }

        // 2. Stop containerd: SIGTERM, then SIGKILL.
        let child = lock_child(&self.child).take();
        if let Some(mut child) = child {
            send_signal(child.id(), SIGTERM);
            let exited = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
                matches!(child.try_wait(), Ok(Some(_))).then_some(())
            });
            if exited.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }

        // 3. Kill leftover shims (anything whose argv has our socket path).
        let sock = self.socket.to_string_lossy().into_owned();
        for (pid, argv) in processes() {
            if pid != std::process::id() && argv.iter().any(|a| a.contains(&sock)) {
                send_signal(pid, SIGKILL);
            }
        }

        // 4. Kill container processes left in our namespaces' cgroups
        //    (ctr uses cgroupsPath /<namespace>/<id>), then remove the cgroups.
        for ns in &namespaces {
            let mut roots = vec![PathBuf::from("/sys/fs/cgroup").join(ns)];
            if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
                for e in rd.flatten() {
                    roots.push(e.path().join(ns));
                }
            }
            for r in roots.iter().filter(|r| r.is_dir()) {
                kill_cgroup_tree(r);
            }
            for r in roots.iter().filter(|r| r.is_dir()) {
                remove_cgroup_tree(r);
            }
            // runc's state dir used by the Go shim.
            let _ = fs::remove_dir_all(Path::new("/run/containerd/runc").join(ns));
        }

        // 5. Unmount anything under our dir (deepest first).
        let prefix = format!("{}/", self.dir.display());
        for _ in 0..3 {
            let mut mps = mounts_containing(&prefix);
            if mps.is_empty() {
                break;
            }
            mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for mp in mps {
                let ok = Command::new("umount")
                    .arg(&mp)
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if !ok {
                    let _ = Command::new("umount")
                        .arg("-l")
                        .arg(&mp)
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }

        // 6. Remove shim sockets of containers we created (a SIGKILLed shim
        //    cannot remove its own socket).
        let containers: Vec<(String, String)> = self
            .containers
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        for (ns, id) in containers {
            let p = computed_shim_socket(&self.socket, &ns, &id);
            if p.exists() {
                let _ = fs::remove_file(p);
            }
        }
        // Grouped containers share a socket named after the group, not the id: take the
        // address every bundle of this containerd recorded, and remove it if nobody listens.
        remove_dead_bundle_sockets(&self.state);

        // 7. Remove the temp dir.
        let keep = matches!(
            std::env::var("TENDER_E2E_KEEP").as_deref(),
            Ok("1") | Ok("true")
        );
        if keep {
            notice(&format!("TENDER_E2E_KEEP: leaving {}", self.dir.display()));
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            notice(&format!(
                "warning: cannot remove {}: {e}",
                self.dir.display()
            ));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if thread::panicking() {
            // Captured by libtest and shown with the failure. The full log is
            // copied under target/ since the temp dir is removed.
            let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("e2e-failed-logs")
                .join(format!("{}.log", basename(&self.dir.to_string_lossy())));
            let _ = fs::create_dir_all(saved.parent().unwrap_or(Path::new("/tmp")));
            match fs::copy(&self.log_path, &saved) {
                Ok(_) => eprintln!(
                    "full containerd log of the failed test: {}",
                    saved.display()
                ),
                Err(e) => eprintln!("could not save containerd log to {}: {e}", saved.display()),
            }
            let shims = self.shim_processes();
            if !shims.is_empty() {
                eprintln!("shim processes still running at teardown: {shims:#?}");
            }
        }
        self.cleanup();
    }
}

fn basename(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn kill_cgroup_tree(dir: &Path) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            send_signal(pid, SIGKILL);
        }
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_cgroup_tree(&e.path());
            }
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // Processes may take a moment to die after SIGKILL.
    let _ = wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        fs::remove_dir(dir)
            .ok()
            .or_else(|| (!dir.exists()).then_some(()))
    });
}

/// containerd 1.6's shim socket convention:
/// `/run/containerd/s/<sha256(<grpc address>/<namespace>/<id>)>`.
pub fn computed_shim_socket(containerd_socket: &Path, ns: &str, id: &str) -> PathBuf {
    let key = format!("{}/{}/{}", containerd_socket.display(), ns, id);
    Path::new(SHIM_SOCKET_DIR).join(sha256_hex(key.as_bytes()))
}

// ---------------------------------------------------------------------------
// ctr client
// ---------------------------------------------------------------------------

/// One row of `ctr task ls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

/// `ctr -a <sock> -n <namespace> ...` bound to one private containerd.
pub struct Ctr<'a> {
    pub cd: &'a Containerd,
    pub namespace: String,
    /// Runtime passed to `ctr run --runtime`.
    pub runtime: String,
}

impl<'a> Ctr<'a> {
    /// A `Command` for `ctr -a <sock> -n <ns>` (add args yourself).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cd.build.ctr);
        cmd.arg("-a")
            .arg(&self.cd.socket)
            .arg("-n")
            .arg(&self.namespace);
        cmd
    }

    /// `args` with `--fifo-dir <instance>/fifo` added to the ctr commands that make stdio FIFOs
    /// (`run`, `task start`, `task exec`) when they name no FIFO dir, log URI or
    /// null IO themselves: ctr's default is the host's `/run/containerd/fifo`, and a test's
    /// files stay under its own directory.
    pub fn private_fifos(&self, args: &[&str]) -> Vec<String> {
        let makes_fifos = matches!(
            args,
            ["run", ..] | ["task", "start", ..] | ["task", "exec", ..]
        );
        let chosen = args.iter().any(|a| {
            a.starts_with("--fifo-dir") || a.starts_with("--log-uri") || a.starts_with("--null-io")
        });
        let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if makes_fifos && !chosen {
            let at = if args[0] == "run" { 1 } else { 2 };
            v.insert(at, "--fifo-dir".into());
            v.insert(at + 1, self.cd.dir.join("fifo").display().to_string());
        }
        v
    }

    /// Run `ctr <args>` with the default timeout; panics only on timeout.
    pub fn ctr(&self, args: &[&str]) -> CmdOutput {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut cmd = self.command();
        cmd.args(self.private_fifos(args));
        let out = run_cmd(cmd, timeout);
        if out.timed_out {
            panic!(
                "ctr timed out after {timeout:?}\n{out}\n{}",
                self.cd.log_tail(80)
            );
        }
        out
    }

    /// Run `ctr <args>` and panic (with diagnostics) unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> CmdOutput {
        let out = self.ctr(args);
        if !out.success() {
            panic!("ctr failed\n{out}\n{}", self.cd.log_tail(80));
        }
        out
    }

    /// Diagnostics for assertion messages: the command output plus the containerd log tail.
    pub fn diag(&self, out: &CmdOutput) -> String {
        format!("\n{out}\n{}", self.cd.log_tail(60))
    }

    /// Just the containerd log tail.
    pub fn log(&self) -> String {
        format!("\n{}", self.cd.log_tail(60))
    }

    fn import_image(&self) {
        let img = busybox_image();
        let img = img.to_string_lossy().into_owned();
        self.ctr_ok(&[
            "images",
            "import",
            "--base-name",
            "docker.io/library/busybox",
            &img,
        ]);
        let ls = self.ctr_ok(&["images", "ls", "-q"]);
        if !ls.stdout_str().lines().any(|l| l.trim() == IMAGE_REF) {
            panic!(
                "image {IMAGE_REF} missing after import\n{ls}\n{}",
                self.cd.log_tail(40)
            );
        }
    }

    fn run_args(
        &self,
        runtime: &str,
        detach: bool,
        rm: bool,
        id: &str,
        cmd: &[&str],
    ) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        if rm {
            v.push("--rm".into());
        }
        if detach {
            v.push("-d".into());
        }
        // Keep ctr's IO fifos inside our temp dir (a detached run whose
        // shim dies would otherwise leave them in /run/containerd/fifo).
        v.push("--fifo-dir".into());
        v.push(self.cd.dir.join("fifo").display().to_string());
        v.push("--runtime".into());
        v.push(runtime.into());
        v.extend(self.runtime_binary_args(runtime));
        v.push(IMAGE_REF.into());
        v.push(id.into());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    /// `ctr run --rm --runtime <runtime> <image> <id> <cmd...>`: full output.
    pub fn run_output_with(&self, runtime: &str, id: &str, cmd: &[&str]) -> CmdOutput {
        self.cd.record_container(&self.namespace, id);
        let args = self.run_args(runtime, false, true, id, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(&args)
    }

    /// Like [`Ctr::run_output_with`] with the runtime under test.
    pub fn run_output(&self, id: &str, cmd: &[&str]) -> CmdOutput {
        let rt = self.runtime.clone();
        self.run_output_with(&rt, id, cmd)
    }

    /// `ctr run --rm`: (exit code, stdout bytes). Exit code -1 if ctr died by a signal.
    pub fn run_with(&self, runtime: &str, id: &str, cmd: &[&str]) -> (i32, Vec<u8>) {
        let out = self.run_output_with(runtime, id, cmd);
        if out.spawn_error.is_some() {
            panic!("cannot run ctr\n{out}");
        }
        (out.code.unwrap_or(-1), out.stdout)
    }

    /// `ctr run --rm` with the runtime under test: (exit code, stdout bytes).
    pub fn run(&self, id: &str, cmd: &[&str]) -> (i32, Vec<u8>) {
        let rt = self.runtime.clone();
        self.run_with(&rt, id, cmd)
    }

    /// `ctr run -d` (detached); panics unless ctr succeeds. Does not wait for RUNNING.
    pub fn run_detached(&self, id: &str, cmd: &[&str]) -> CmdOutput {
        self.cd.record_container(&self.namespace, id);
        let rt = self.runtime.clone();
        let args = self.run_args(&rt, true, false, id, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr_ok(&args)
    }

    /// `ctr run -d` and wait until the task is RUNNING; returns its info.
    pub fn start_running(&self, id: &str, cmd: &[&str]) -> TaskInfo {
        self.run_detached(id, cmd);
        self.wait_task_status(id, "RUNNING", Duration::from_secs(15))
    }

    /// Foreground `ctr run --rm` in a background child (stdout streamed).
    pub fn spawn_run(&self, id: &str, cmd: &[&str]) -> BackgroundRun {
        self.cd.record_container(&self.namespace, id);
        let rt = self.runtime.clone();
        let args = self.run_args(&rt, false, true, id, cmd);
        let mut c = self.command();
        c.args(&args);
        BackgroundRun::spawn(c)
    }

    /// Parsed `ctr task ls`.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.stdout_str()
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 3 {
                    return None;
                }
                Some(TaskInfo {
                    id: f[0].to_string(),
                    pid: f[1].parse().unwrap_or(0),
                    status: f[2].to_string(),
                })
            })
            .collect()
    }

    pub fn task(&self, id: &str) -> Option<TaskInfo> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// Wait until `ctr task ls` shows `id` with `status`; panics with diagnostics otherwise.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> TaskInfo {
        let mut last = None;
        let found = wait_until(timeout, Duration::from_millis(25), || {
            let t = self.task(id);
            last = t.clone();
            t.filter(|t| t.status == status)
        });
        match found {
            Some(t) => t,
            None => panic!(
                "task {id} did not reach {status} within {timeout:?}; last seen: {last:?}{}",
                self.log()
            ),
        }
    }

    /// PIDs from `ctr task ps <id>`.
    pub fn task_pids(&self, id: &str) -> Vec<u32> {
        let out = self.ctr_ok(&["task", "ps", id]);
        out.stdout_str()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// `ctr task kill -s <signal> <id>`; panics unless it succeeds.
    pub fn kill(&self, id: &str, signal: &str) -> CmdOutput {
        self.ctr_ok(&["task", "kill", "-s", signal, id])
    }

    /// `ctr task delete <id>` (not asserted).
    pub fn delete_task(&self, id: &str) -> CmdOutput {
        self.ctr(&["task", "delete", id])
    }

    /// `ctr containers delete <id>`; panics unless it succeeds.
    pub fn delete_container(&self, id: &str) -> CmdOutput {
        self.ctr_ok(&["containers", "delete", id])
    }

    /// Bundle directory containerd created for the task.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.cd
            .state
            .join("io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    /// Shim ttrpc socket path: from the bundle's `address` file if the shim
    /// wrote one, else containerd's convention.
    pub fn shim_socket(&self, id: &str) -> PathBuf {
        if let Ok(a) = fs::read_to_string(self.bundle_dir(id).join("address")) {
            let a = a.trim();
            let p = a.strip_prefix("unix://").unwrap_or(a);
            if !p.is_empty() && !p.starts_with('@') {
                return PathBuf::from(p);
            }
        }
        computed_shim_socket(&self.cd.socket, &self.namespace, id)
    }

    /// Shim processes serving this namespace (argv has socket path, a
    /// `containerd-shim-*` name and the namespace).
    pub fn shim_processes(&self) -> Vec<(u32, String)> {
        self.cd
            .shim_processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.split(' ').any(|a| a == self.namespace))
            .collect()
    }

    /// Subscribe to `ctr events` (returns once the subscription is live).
    pub fn events(&self) -> Events {
        Events::start(self)
    }
}

// ---------------------------------------------------------------------------
// Background `ctr run`
// ---------------------------------------------------------------------------

/// A foreground `ctr run` running in a child process.
pub struct BackgroundRun {
    child: Option<Child>,
    cmdline: String,
    lines: Receiver<String>,
    seen: Vec<String>,
    stdout_all: std::sync::Arc<Mutex<Vec<u8>>>,
    stderr: Receiver<Vec<u8>>,
}

impl BackgroundRun {
    fn spawn(mut cmd: Command) -> BackgroundRun {
        let cmdline = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot spawn {cmdline}: {e}"),
        };
        let (tx, rx) = mpsc::channel();
        let all = std::sync::Arc::new(Mutex::new(Vec::new()));
        let all2 = all.clone();
        let stdout = child.stdout.take();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut r = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Ok(mut a) = all2.lock() {
                            a.extend_from_slice(&line);
                        }
                        let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
                    }
                }
            }
        });
        let stderr = reader_thread(child.stderr.take());
        BackgroundRun {
            child: Some(child),
            cmdline,
            lines: rx,
            seen: Vec::new(),
            stdout_all: all,
            stderr,
        }
    }

    /// Wait until stdout has a line equal to `line`.
    pub fn wait_for_line(&mut self, line: &str, timeout: Duration) -> bool {
        if self.seen.iter().any(|l| l == line) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l == line;
                    self.seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Wait for `ctr run` to exit (killing it after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> CmdOutput {
        let mut out = CmdOutput {
            cmdline: self.cmdline.clone(),
            code: None,
            signal: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            timed_out: false,
            spawn_error: None,
        };
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + timeout;
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => {
                        out.code = st.code();
                        out.signal = st.signal();
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        out.timed_out = true;
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        out.stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        // Give the stdout reader a moment to drain.
        thread::sleep(Duration::from_millis(20));
        out.stdout = self
            .stdout_all
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        out
    }
}

impl Drop for BackgroundRun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// One line of `ctr events`.
#[derive(Clone, Debug)]
pub struct Event {
    pub namespace: String,
    pub topic: String,
    pub payload: String,
}

impl Event {
    /// True if the payload refers to container `id`.
    pub fn is_for_container(&self, id: &str) -> bool {
        self.payload.contains(&format!("\"container_id\":\"{id}\""))
    }
}

/// `ctr events` running in the background, output collected to a file.
pub struct Events {
    child: Option<Child>,
    pub path: PathBuf,
    namespace: String,
}

impl Events {
    fn start(c: &Ctr<'_>) -> Events {
        let path = c.cd.dir.join(format!("events-{}.log", unique_id("ev")));
        let file = match fs::File::create(&path) {
            Ok(f) => f,
            Err(e) => panic!("cannot create {}: {e}", path.display()),
        };
        let err = file
            .try_clone()
            .ok()
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null);
        let mut cmd = c.command();
        cmd.arg("events")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let child = match cmd.spawn() {
            Ok(ch) => ch,
            Err(e) => panic!("cannot spawn ctr events: {e}"),
        };
        let ev = Events {
            child: Some(child),
            path,
            namespace: c.namespace.clone(),
        };
        // The subscription is asynchronous: poke containerd with namespace
        // label updates until one shows up in the stream.
        for i in 0..200 {
            let probe = format!("e2e-probe-{i}");
            let label = format!("{probe}=1");
            let _ = c.ctr(&["namespaces", "label", &c.namespace, &label]);
            let seen = wait_until(
                Duration::from_millis(100),
                Duration::from_millis(10),
                || ev.raw().contains(&probe).then_some(()),
            );
            if seen.is_some() {
                return ev;
            }
        }
        panic!(
            "ctr events did not deliver probe events within ~20s; output so far:\n{}{}",
            ev.raw(),
            c.log()
        );
    }

    /// Raw collected output.
    pub fn raw(&self) -> String {
        fs::read(&self.path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// All parsed events (all namespaces).
    pub fn all(&self) -> Vec<Event> {
        self.raw()
            .lines()
            .filter_map(|l| {
                // "<date> <time> <zone> <zone> <namespace> <topic> <json>"
                let toks: Vec<&str> = l.split(' ').collect();
                let ti = toks.iter().position(|t| t.starts_with('/'))?;
                if ti == 0 {
                    return None;
                }
                Some(Event {
                    namespace: toks[ti - 1].to_string(),
                    topic: toks[ti].to_string(),
                    payload: toks[ti + 1..].join(" "),
                })
            })
            .collect()
    }

    /// Topics (in order) of events in our namespace about container `id`.
    pub fn topics_for(&self, id: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|e| e.namespace == self.namespace && e.is_for_container(id))
            .map(|e| e.topic)
            .collect()
    }

    /// Number of events with `topic` (`/tasks/exit`) in our namespace received so far.
    pub fn count(&self, topic: &str) -> usize {
        self.all()
            .iter()
            .filter(|e| e.namespace == self.namespace && e.topic == topic)
            .count()
    }

    /// Wait until an event with `topic` for container `id` arrives.
    pub fn wait_for(&self, id: &str, topic: &str, timeout: Duration) -> bool {
        wait_until(timeout, Duration::from_millis(20), || {
            self.topics_for(id).iter().any(|t| t == topic).then_some(())
        })
        .is_some()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Set of entries in /run/containerd/s (shim sockets).
pub fn shim_socket_dir_entries() -> BTreeSet<String> {
    fs::read_dir(SHIM_SOCKET_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Convenience: start containerd for `test`, or `None` when skipping.
/// Stop (SIGKILL), delete task and container, asserting each step.
pub fn kill_and_delete(c: &Ctr<'_>, id: &str) {
    c.kill(id, "SIGKILL");
    c.wait_task_status(id, "STOPPED", Duration::from_secs(10));
    let del = c.delete_task(id);
    assert!(del.success(), "ctr task delete {id} failed{}", c.diag(&del));
    c.delete_container(id);
}

pub fn setup(test: &str) -> Option<Containerd> {
    if !e2e_enabled(test) {
        return None;
    }
    Some(Containerd::start(&[]))
}

// ---------------------------------------------------------------------------
// containerd restarts, extra `ctr run` flags, streaming any ctr command
// ---------------------------------------------------------------------------

fn lock_child(m: &Mutex<Option<Child>>) -> std::sync::MutexGuard<'_, Option<Child>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Containerd {
    /// True while the containerd daemon process is alive.
    pub fn daemon_running(&self) -> bool {
        lock_child(&self.child)
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }

    /// SIGKILLs the containerd daemon (no shutdown of anything: shims and containers keep
    /// running, exactly as in a crash) and reaps it.
    pub fn kill_daemon(&self) {
        let child = lock_child(&self.child).take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again with the same config, root, state, sockets and PATH (after
    /// [`Containerd::kill_daemon`]); the log is appended to. Waits until it answers.
    pub fn start_daemon(&self) {
        self.start_daemon_with(&[]);
    }

    /// [`Containerd::start_daemon`] with extra command-line flags (`--log-level trace`).
    pub fn start_daemon_with(&self, args: &[&str]) {
        assert!(
            !self.daemon_running(),
            "start_daemon: containerd is still running"
        );
        let log = match fs::OpenOptions::new().append(true).open(&self.log_path) {
            Ok(f) => f,
            Err(e) => panic!("cannot open {}: {e}", self.log_path.display()),
        };
        let log2 = match log.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("dup log fd: {e}"),
        };
        let child = match containerd_command_for(&self.build)
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .args(args)
            .env("PATH", &self.path_env)
            .env("TMPDIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot restart containerd: {e}"),
        };
        *lock_child(&self.child) = Some(child);
        self.wait_ready();
    }

    /// `kill -9 containerd`, then start it again with the same config/root/state.
    pub fn restart(&self) {
        self.kill_daemon();
        self.start_daemon();
    }
}

impl Ctr<'_> {
    /// `ctr run` arguments with extra `ctr run` flags (`--annotation`, `--cwd`,
    /// `--runtime-config-path`, ...) placed before the image.
    pub fn run_args_extra(
        &self,
        detach: bool,
        extra: &[&str],
        id: &str,
        cmd: &[&str],
    ) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into()];
        v.push(if detach { "-d" } else { "--rm" }.into());
        v.push("--fifo-dir".into());
        v.push(self.cd.dir.join("fifo").display().to_string());
        v.push("--runtime".into());
        v.push(self.runtime.clone());
        // Before `extra`, so that a test's own --runtime-config-path wins.
        v.extend(self.runtime_binary_args(&self.runtime));
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(IMAGE_REF.into());
        v.push(id.into());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    /// `ctr run -d <extra flags>` (not asserted: the output tells whether it worked).
    pub fn run_detached_extra(&self, extra: &[&str], id: &str, cmd: &[&str]) -> CmdOutput {
        self.cd.record_container(&self.namespace, id);
        let args = self.run_args_extra(true, extra, id, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(&args)
    }

    /// `ctr run --rm <extra flags>` (not asserted).
    pub fn run_output_extra(&self, extra: &[&str], id: &str, cmd: &[&str]) -> CmdOutput {
        self.cd.record_container(&self.namespace, id);
        let args = self.run_args_extra(false, extra, id, cmd);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(&args)
    }

    /// Any `ctr` command in a background child, stdout streamed line by line
    /// (`ctr task attach`, a foreground `ctr task exec`, ...).
    pub fn spawn_ctr(&self, args: &[&str]) -> BackgroundRun {
        let mut c = self.command();
        c.args(self.private_fifos(args));
        BackgroundRun::spawn(c)
    }
}

impl BackgroundRun {
    /// The next stdout line (already seen lines are not returned again), `None` on timeout or
    /// end of output.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    /// True while the child runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }
}

// ---------------------------------------------------------------------------
// A private containerd with a caller-rendered config (the CRI tests enable the cri plugin)
// ---------------------------------------------------------------------------

/// Paths of a private containerd that a config renderer may use (all under `dir`).
#[derive(Clone, Debug)]
pub struct ContainerdLayout {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub ttrpc_socket: PathBuf,
    /// For `[plugins."io.containerd.internal.v1.opt"] path`.
    pub opt: PathBuf,
    /// The containerd build the config is for (its schema version).
    pub build: ContainerdBuild,
}

impl Containerd {
    /// Like [`Containerd::start`], except that the whole `config.toml` is rendered by `config`
    /// from the instance's paths (root, state, sockets must be taken from the layout so that
    /// the instance stays private). Everything else — the shim symlink on PATH, log, cleanup —
    /// is the same.
    pub fn start_with_config(
        runtime_dirs: &[&Path],
        config: impl FnOnce(&ContainerdLayout) -> String,
    ) -> Containerd {
        Self::start_build_with_config(containerd_version(), runtime_dirs, config)
    }

    /// Like [`Containerd::start_with_config`] with a given containerd build instead of the one
    /// under test (the Docker tests need one Docker accepts, whatever the matrix runs).
    pub fn start_build_with_config(
        build: ContainerdBuild,
        runtime_dirs: &[&Path],
        config: impl FnOnce(&ContainerdLayout) -> String,
    ) -> Containerd {
        Self::start_build_with_shim(build, Path::new(SHIM_BIN), runtime_dirs, config)
    }

    /// Like [`Containerd::start`], with the private `bin/containerd-shim-tender-v2` symlink
    /// pointing at `shim` instead of cargo's build (e.g. the binary a package installed).
    pub fn start_with_shim(shim: &Path) -> Containerd {
        Self::start_build_with_shim(containerd_version(), shim, &[], default_config)
    }

    /// Like [`Containerd::start_build_with_config`], with the private
    /// `bin/containerd-shim-tender-v2` symlink pointing at `shim` (the pod benchmark runs a
    /// release build, or another branch's).
    pub fn start_build_with_shim(
        build: ContainerdBuild,
        shim: &Path,
        runtime_dirs: &[&Path],
        config: impl FnOnce(&ContainerdLayout) -> String,
    ) -> Containerd {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = PathBuf::from(format!(
            "/tmp/tender-e2e-{}-{}-{:x}",
            std::process::id(),
            n,
            nanos
        ));
        let layout = ContainerdLayout {
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("containerd.sock"),
            ttrpc_socket: dir.join("containerd.sock.ttrpc"),
            opt: dir.join("opt"),
            dir: dir.clone(),
            build: build.clone(),
        };
        let bin = dir.join("bin");
        for d in [&dir, &bin, &layout.root, &layout.state] {
            if let Err(e) = fs::create_dir_all(d) {
                panic!("cannot create {}: {e}", d.display());
            }
        }
        if let Err(e) = symlink(shim, bin.join("containerd-shim-tender-v2")) {
            panic!("cannot symlink shim into {}: {e}", bin.display());
        }
        let config_path = dir.join("config.toml");
        if let Err(e) = fs::write(&config_path, config(&layout)) {
            panic!("cannot write {}: {e}", config_path.display());
        }
        let mut path_dirs: Vec<PathBuf> = vec![bin];
        path_dirs.extend(runtime_dirs.iter().map(|d| d.to_path_buf()));
        path_dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        for d in [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ] {
            let d = PathBuf::from(d);
            if !path_dirs.contains(&d) {
                path_dirs.push(d);
            }
        }
        let path_env = match std::env::join_paths(path_dirs) {
            Ok(p) => p,
            Err(e) => panic!("bad PATH: {e}"),
        };
        let log_path = dir.join("containerd.log");
        let log = match fs::File::create(&log_path) {
            Ok(f) => f,
            Err(e) => panic!("cannot create {}: {e}", log_path.display()),
        };
        let log2 = match log.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("dup log fd: {e}"),
        };
        let child = match containerd_command_for(&build)
            .arg("--config")
            .arg(&config_path)
            .env("PATH", &path_env)
            .env("TMPDIR", &dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot start containerd: {e}"),
        };
        let cd = Containerd {
            dir,
            socket: layout.socket,
            ttrpc_socket: layout.ttrpc_socket,
            root: layout.root,
            state: layout.state,
            log_path,
            runtime: runtime(),
            build,
            child: Mutex::new(Some(child)),
            path_env,
            namespaces: Mutex::new(Vec::new()),
            containers: Mutex::new(Vec::new()),
        };
        cd.wait_ready();
        static ANNOUNCED: std::sync::Once = std::sync::Once::new();
        ANNOUNCED.call_once(|| {
            let b = &cd.build;
            notice(&format!(
                "e2e: containerd {}.{}.{} ({}), config version {}",
                b.version.0,
                b.version.1,
                b.version.2,
                b.containerd.display(),
                b.config_version()
            ));
        });
        cd
    }
}

/// The standard private config: no CRI, debug log, everything under the instance's dir.
fn default_config(l: &ContainerdLayout) -> String {
    base_config(l, false)
}

/// The part of a private containerd's config every test shares: own root, state, sockets and
/// opt dir, debug log, no metrics, eager GC. With `cri`, the CRI plugin stays enabled (the
/// caller appends its `[plugins."io.containerd.grpc.v1.cri"]` table).
pub fn base_config(l: &ContainerdLayout, cri: bool) -> String {
    let v2 = l.build.version.0 >= 2;
    let cri_disabled = match (cri, v2) {
        (true, _) => "",
        (false, false) => "\n  \"io.containerd.grpc.v1.cri\",",
        // 2.x splits CRI into the service and its runtime and images plugins.
        (false, true) => concat!(
            "\n  \"io.containerd.grpc.v1.cri\",",
            "\n  \"io.containerd.cri.v1.runtime\",",
            "\n  \"io.containerd.cri.v1.images\",",
        ),
    };
    let version = if v2 { 3 } else { 2 };
    format!(
        r#"version = {version}
root = "{root}"
state = "{state}"
disabled_plugins = [{cri_disabled}
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{ttrpc}"

[debug]
  level = "debug"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"

[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.02
"#,
        root = l.root.display(),
        state = l.state.display(),
        sock = l.socket.display(),
        ttrpc = l.ttrpc_socket.display(),
        opt = l.opt.display(),
    )
}

/// SIGKILLs every process in the cgroup directory `dir` and below, then removes the
/// directories (deepest first). For cgroups a test created under its own unique parent.
pub fn kill_and_remove_cgroup_tree(dir: &Path) {
    if dir.is_dir() {
        kill_cgroup_tree(dir);
        remove_cgroup_tree(dir);
    }
}

/// Like [`e2e_enabled`] with extra requirements: each `(what, present)` pair that is not
/// present is named in the SKIP notice (or the panic when `CI=true`).
pub fn e2e_enabled_with(test: &str, extra: &[(&str, bool)]) -> bool {
    let mut missing: Vec<String> = extra
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(w, _)| w.to_string())
        .collect();
    missing.extend(e2e_missing());
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "SKIP {test}: end-to-end test needs {} (run as root after `make deps`)",
        missing.join(", ")
    );
    if ci() {
        panic!("{msg} — failing because CI=true");
    }
    notice(&msg);
    false
}

// ---------------------------------------------------------------------------
// The OCI runtime binary under test: runc, or crun (TENDER_E2E_RUNTIME_BINARY=crun)
// ---------------------------------------------------------------------------

/// Selects the OCI runtime binary the containers run with (default runc).
pub const RUNTIME_BINARY_ENV: &str = "TENDER_E2E_RUNTIME_BINARY";
/// Where a hybrid host mounts cgroup2.
pub const UNIFIED_MOUNT: &str = "/sys/fs/cgroup/unified";

/// The runtime binary under test when it is not runc (`TENDER_E2E_RUNTIME_BINARY`).
pub fn runtime_binary_override() -> Option<String> {
    match std::env::var(RUNTIME_BINARY_ENV) {
        Ok(v) if !v.trim().is_empty() && v.trim() != "runc" => Some(v.trim().to_string()),
        _ => None,
    }
}

/// The OCI runtime binary under test: `runc` or `TENDER_E2E_RUNTIME_BINARY`.
pub fn runtime_binary() -> String {
    runtime_binary_override().unwrap_or_else(|| "runc".to_string())
}

/// Absolute path of the runtime binary under test (for wrapper scripts that exec it).
pub fn runtime_binary_path() -> PathBuf {
    let bin = runtime_binary();
    if bin.contains('/') {
        return PathBuf::from(bin);
    }
    in_path(&bin).unwrap_or_else(|| panic!("runtime binary {bin:?} not found in PATH"))
}

/// True when the host is hybrid (cgroup v1 controllers plus cgroup2 at
/// `/sys/fs/cgroup/unified`).
pub fn host_is_hybrid() -> bool {
    Path::new(UNIFIED_MOUNT).join("cgroup.controllers").exists()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// Whether private containerds run in their own mount namespace without the cgroup2 mount:
/// crun 1.8 refuses hybrid hosts ("cgroupv2 is mounted on a hybrid host ..."), and with
/// `/sys/fs/cgroup/unified` unmounted it sees a plain cgroup v1 host. Only with a runtime
/// binary other than runc, and only on hybrid hosts.
pub fn hide_cgroup2() -> bool {
    runtime_binary_override().is_some() && host_is_hybrid()
}

/// What the runtime binary under test needs (names for the SKIP notice).
fn runtime_binary_missing() -> Vec<String> {
    let mut missing = Vec::new();
    if let Some(bin) = runtime_binary_override() {
        let found = if bin.contains('/') {
            Path::new(&bin).is_file()
        } else {
            in_path(&bin).is_some()
        };
        if !found {
            missing.push(format!("`{bin}` binary ({RUNTIME_BINARY_ENV})"));
        }
        if hide_cgroup2() {
            for tool in ["unshare", "umount"] {
                if in_path(tool).is_none() {
                    missing.push(format!("`{tool}` (util-linux) for {RUNTIME_BINARY_ENV}"));
                }
            }
        }
    }
    missing
}

/// The command that starts a private containerd (add its arguments): plain `containerd`,
/// or with [`hide_cgroup2`] `unshare --mount --propagation private` + `umount
/// /sys/fs/cgroup/unified` + `exec containerd` (same pid, so [`Containerd::pid`] stays right).
pub fn containerd_command() -> Command {
    containerd_command_for(&containerd_version())
}

/// [`containerd_command`] for a given build.
pub fn containerd_command_for(build: &ContainerdBuild) -> Command {
    if !hide_cgroup2() {
        return Command::new(&build.containerd);
    }
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "umount /sys/fs/cgroup/unified || exit 125; exec \"$0\" \"$@\"",
    ]);
    c.arg(&build.containerd);
    c
}

/// PIDs of containerds started in private mount namespaces (their mountinfo is searched too).
static PRIVATE_MOUNT_NS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

impl Containerd {
    /// Once containerd answers: remember its private mount namespace, and with a runtime
    /// binary other than runc put `runc` → that binary first on containerd's PATH, so that
    /// runs whose TOML options ctr replaces (`--no-pivot` and `--uidmap` make ctr send
    /// containerd.linux.runc.CreateOptions instead, and containerd then passes only those)
    /// still use the binary under test.
    fn runtime_binary_ready(&self) {
        let Some(bin) = runtime_binary_override() else {
            return;
        };
        if let (true, Some(pid)) = (hide_cgroup2(), self.pid()) {
            let mut v = PRIVATE_MOUNT_NS.lock().unwrap_or_else(|e| e.into_inner());
            if !v.contains(&pid) {
                v.push(pid);
            }
        }
        let link = self.dir.join("bin").join("runc");
        if fs::symlink_metadata(&link).is_err() {
            let target = if bin.contains('/') {
                Some(PathBuf::from(&bin))
            } else {
                in_path(&bin)
            };
            if let Some(target) = target {
                let _ = symlink(target, &link);
            }
        }
    }
}

/// mountinfo files to search: ours, and those of live private-namespace containerds.
fn mountinfo_sources() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/proc/self/mountinfo")];
    let pids = PRIVATE_MOUNT_NS
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    v.extend(
        pids.into_iter()
            .filter(|p| process_alive(*p))
            .map(|p| PathBuf::from(format!("/proc/{p}/mountinfo"))),
    );
    v
}

impl Containerd {
    /// Writes `<dir>/<name>.toml`, a runtime options file for `ctr run
    /// --runtime-config-path` (CRI's `runtimeoptions.v1.Options` TOML): `BinaryName` of the
    /// runtime binary under test (unless `body` sets its own) followed by `body`.
    pub fn runtime_config(&self, name: &str, body: &str) -> PathBuf {
        let mut text = String::new();
        let sets_binary = body
            .lines()
            .any(|l| l.trim_start().starts_with("BinaryName"));
        if let (false, Some(bin)) = (sets_binary, runtime_binary_override()) {
            text.push_str(&format!("BinaryName = {bin:?}\n"));
        }
        text.push_str(body);
        let path = self.dir.join(format!("{name}.toml"));
        // Written aside and renamed: a concurrent reader never sees a partial file.
        let tmp = self.dir.join(format!(".{name}.toml.{}", unique_id("w")));
        if let Err(e) = fs::write(&tmp, text).and_then(|_| fs::rename(&tmp, &path)) {
            panic!("cannot write {}: {e}", path.display());
        }
        path
    }
}

impl Ctr<'_> {
    /// `ctr run` flags that select the runtime binary under test for `runtime`: none for
    /// runc; `--runc-binary <bin>` for `io.containerd.runc.v2` (ctr then sends
    /// containerd.runc.v1.Options); else `--runtime-config-path` of a TOML file with
    /// `BinaryName` (runtimeoptions.v1.Options).
    pub fn runtime_binary_args(&self, runtime: &str) -> Vec<String> {
        let Some(bin) = runtime_binary_override() else {
            return Vec::new();
        };
        if runtime == "io.containerd.runc.v2" {
            return vec!["--runc-binary".into(), bin];
        }
        let path = self.cd.dir.join("runtime-binary.toml");
        if !path.is_file() {
            self.cd.runtime_config("runtime-binary", "");
        }
        vec!["--runtime-config-path".into(), path.display().to_string()]
    }
}

/// Removes the shim sockets named by the bundles' `address` files under a containerd state
/// dir when nothing listens on them any more (shims SIGKILLed at teardown).
fn remove_dead_bundle_sockets(state: &Path) {
    let tasks = state.join("io.containerd.runtime.v2.task");
    let Ok(namespaces) = fs::read_dir(&tasks) else {
        return;
    };
    for ns in namespaces.flatten() {
        let Ok(bundles) = fs::read_dir(ns.path()) else {
            continue;
        };
        for b in bundles.flatten() {
            let Ok(addr) = fs::read_to_string(b.path().join("address")) else {
                continue;
            };
            let addr = addr.trim();
            let p = Path::new(addr.strip_prefix("unix://").unwrap_or(addr));
            if p.starts_with(SHIM_SOCKET_DIR) && std::os::unix::net::UnixStream::connect(p).is_err()
            {
                let _ = fs::remove_file(p);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// README snippets: every config snippet in the README is one a test uses
// ---------------------------------------------------------------------------

/// The README of this repository.
pub fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The body of the fenced block after `<!-- snippet: NAME -->` in the README.
pub fn readme_snippet(name: &str) -> String {
    snippet_in(&readme(), name).unwrap_or_else(|e| panic!("README.md: {e}"))
}

/// [`readme_snippet`] on a given text.
pub fn snippet_in(text: &str, name: &str) -> Result<String, String> {
    let marker = format!("<!-- snippet: {name} -->");
    let at = text.find(&marker).ok_or_else(|| format!("no `{marker}`"))?;
    let rest = &text[at + marker.len()..];
    let open = rest
        .find("```")
        .ok_or_else(|| format!("no fenced block after `{marker}`"))?;
    let rest = &rest[open + 3..];
    let body_start = rest
        .find('\n')
        .ok_or_else(|| format!("unterminated fence after `{marker}`"))?;
    let rest = &rest[body_start + 1..];
    let close = rest
        .find("\n```")
        .ok_or_else(|| format!("unterminated fence after `{marker}`"))?;
    Ok(rest[..close + 1].to_string())
}
