//! A private Docker Engine on top of a private containerd, for `tests/e2e_docker.rs`.
//!
//! [`Dockerd::start`] starts a containerd (2.1 from `scripts/fetch-matrix.sh`, whatever
//! `TENDER_E2E_CONTAINERD` says: Docker 28 needs containerd >= 1.7) through the common harness,
//! then a `dockerd` from the matrix (`<matrix>/docker/usr/{bin,sbin}`) with everything it
//! would otherwise take from the host overridden:
//!
//! - `--data-root`, `--exec-root`, `--pidfile`, `-H unix://...` and `--config-file` under the
//!   containerd instance's temp dir (so the harness unmounts and removes them);
//! - `--containerd` = the private containerd, `--containerd-namespace` = a unique namespace that
//!   the harness cleans up (tasks, `/run/containerd/runc/<ns>`), `--cgroup-parent /<ns>` so
//!   that its cgroups are the ones the harness kills and removes;
//! - no network changes: `--iptables=false --ip6tables=false --bridge=none --ip-forward=false
//!   --ip-masq=false`, containers run with `--network none`.
//!
//! The daemon.json names one runtime, `tender` → `runtimeType` = the runtime under test
//! (`io.containerd.tender.v2`, or `TENDER_E2E_RUNTIME`, e.g. the Go shim). The CLI is the
//! matrix `docker` with `-H unix://...` and a private `DOCKER_CONFIG`; `/usr/local/bin/docker`
//! is never used. The busybox image is `docker load`ed from a docker-save archive made out of
//! the harness's OCI archive (the classic image store does not load a bare OCI layout).
#![allow(dead_code)]

use crate::common::{self, CmdOutput, Containerd};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The image every test runs (loaded from the harness's busybox archive).
pub const IMAGE: &str = "busybox:tender";
/// Name of the runtime declared in daemon.json.
pub const NAMED_RUNTIME: &str = "tender";
/// Timeout for one docker CLI call.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(60);

/// `<matrix>/docker/usr`.
pub fn docker_usr() -> PathBuf {
    common::matrix_dir().join("docker/usr")
}

pub fn docker_cli() -> PathBuf {
    docker_usr().join("bin/docker")
}

pub fn dockerd_bin() -> PathBuf {
    docker_usr().join("sbin/dockerd")
}

/// The containerd the Docker tests run: `TENDER_E2E_CONTAINERD` if it names 1.7 or newer,
/// else the matrix 2.1.
pub fn containerd_for_docker() -> Result<common::ContainerdBuild, String> {
    if let Ok(b) = common::containerd_under_test() {
        if b.version >= (1, 7, 0) {
            return Ok(b);
        }
    }
    common::containerd_build(Some(&common::matrix_dir().join("containerd-2.1/usr/bin")))
}

/// Whether the matrix Docker and a containerd >= 1.7 are there. (`docker-init` is not
/// needed: no test uses `--init`; the matrix's is a symlink to a `tini-static` it lacks.)
pub fn docker_present() -> bool {
    dockerd_bin().is_file() && docker_cli().is_file() && containerd_for_docker().is_ok()
}

/// `true` if the test can run (else SKIP, or panic under CI=true).
pub fn enabled(test: &str) -> bool {
    common::e2e_enabled_with(
        test,
        &[("docker from scripts/fetch-matrix.sh", docker_present())],
    )
}

/// `let d = docker_setup!("name", live_restore);`
#[allow(unused_macros)]
macro_rules! docker_setup {
    ($name:expr, $live:expr) => {{
        if !docker::enabled($name) {
            return;
        }
        docker::Dockerd::start($name, $live)
    }};
}

/// Whether `/run/docker` existed before this process started a dockerd (dockerd creates
/// `/run/docker/plugins` whatever its exec-root; removed again when it was not there).
static RUN_DOCKER_PREEXISTED: OnceLock<bool> = OnceLock::new();
/// Live [`Dockerd`]s of this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A private dockerd (and its containerd); dropped = containers removed, daemons stopped,
/// mounts, cgroups and directories removed.
pub struct Dockerd {
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub pidfile: PathBuf,
    pub config_file: PathBuf,
    pub cli_config: PathBuf,
    pub log_path: PathBuf,
    /// containerd namespace (also the cgroup parent's name).
    pub ns: String,
    pub live_restore: bool,
    child: Mutex<Option<Child>>,
    /// Declared last: dropped after [`Drop::drop`] stopped dockerd.
    pub cd: Containerd,
}

impl Dockerd {
    /// Starts containerd + dockerd and loads [`IMAGE`].
    pub fn start(test: &str, live_restore: bool) -> Dockerd {
        let build = match containerd_for_docker() {
            Ok(b) => b,
            Err(e) => panic!("containerd for docker: {e}"),
        };
        RUN_DOCKER_PREEXISTED.get_or_init(|| Path::new("/run/docker").exists());
        // The Go shim for TENDER_E2E_RUNTIME=io.containerd.runc.v2: the one of this build.
        let bin_dir = build
            .containerd
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let cd = Containerd::start_build_with_config(build, &[&bin_dir], |l| {
            common::base_config(l, false)
        });
        let ns = common::unique_id(&format!("dk-{test}"));
        cd.track_namespace(&ns);
        let dir = cd.dir.join("docker");
        let d = Dockerd {
            sock: dir.join("docker.sock"),
            data_root: dir.join("data"),
            exec_root: dir.join("exec"),
            pidfile: dir.join("docker.pid"),
            config_file: dir.join("daemon.json"),
            cli_config: dir.join("cli"),
            log_path: dir.join("dockerd.log"),
            dir,
            ns,
            live_restore,
            child: Mutex::new(None),
            cd,
        };
        LIVE.fetch_add(1, Ordering::SeqCst);
        for p in [&d.dir, &d.data_root, &d.exec_root, &d.cli_config] {
            if let Err(e) = fs::create_dir_all(p) {
                panic!("mkdir {}: {e}", p.display());
            }
        }
        // The README's daemon.json, with the test's settings on top (and the runtime under
        // test as the named runtime's type when that is not Tender).
        let snippet = common::readme_snippet("docker-daemon-json");
        let mut json: serde_json::Value = serde_json::from_str(&snippet)
            .unwrap_or_else(|e| panic!("README daemon.json snippet: {e}\n{snippet}"));
        assert_eq!(
            json["runtimes"][NAMED_RUNTIME]["runtimeType"],
            common::TENDER_RUNTIME,
            "README daemon.json snippet must declare {NAMED_RUNTIME}: {snippet}"
        );
        json["runtimes"][NAMED_RUNTIME]["runtimeType"] = common::runtime().into();
        json["live-restore"] = live_restore.into();
        json["log-driver"] = "json-file".into();
        if let Err(e) = fs::write(&d.config_file, json.to_string()) {
            panic!("write {}: {e}", d.config_file.display());
        }
        d.start_daemon();
        let out = d.docker(&["load", "-i", &docker_archive().to_string_lossy()]);
        assert!(out.success(), "docker load failed\n{out}\n{}", d.diag());
        d
    }

    /// Starts dockerd (again, same flags) and waits until it answers.
    pub fn start_daemon(&self) {
        let usr = docker_usr();
        let path = format!(
            "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            usr.join("bin").display(),
            usr.join("sbin").display()
        );
        let log = match fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            Ok(f) => f,
            Err(e) => panic!("open {}: {e}", self.log_path.display()),
        };
        let log2 = log.try_clone().expect("dup dockerd log fd");
        let mut cmd = Command::new(dockerd_bin());
        cmd.arg("--config-file")
            .arg(&self.config_file)
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--exec-root")
            .arg(&self.exec_root)
            .arg("--pidfile")
            .arg(&self.pidfile)
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .arg("--containerd")
            .arg(&self.cd.socket)
            .arg("--containerd-namespace")
            .arg(&self.ns)
            .arg("--containerd-plugins-namespace")
            .arg(format!("{}-plugins", self.ns))
            .arg("--cgroup-parent")
            .arg(format!("/{}", self.ns))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-forward=false",
                "--ip-masq=false",
                "--userland-proxy=false",
                "--shutdown-timeout=2",
                "--debug",
            ])
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.dir)
            .env("TMPDIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start dockerd: {e}"),
        };
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self
                .child
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("dockerd exited during startup ({st})\n{}", self.diag());
                }
            }
            if self.sock.exists() {
                let out = self.docker_timeout(&["version"], Duration::from_secs(10));
                if out.success() {
                    return;
                }
                if Instant::now() >= deadline {
                    panic!("dockerd not ready\n{out}\n{}", self.diag());
                }
            } else if Instant::now() >= deadline {
                panic!("dockerd socket never appeared\n{}", self.diag());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// PID of the running dockerd.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|c| c.id())
    }

    /// Sends `sig` to dockerd and waits (up to `timeout`) for it to exit.
    pub fn stop_daemon(&self, sig: i32, timeout: Duration) -> bool {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut child) = child else {
            return true;
        };
        common::send_signal(child.id(), sig);
        let exited = common::wait_until(timeout, Duration::from_millis(20), || {
            matches!(child.try_wait(), Ok(Some(_))).then_some(())
        })
        .is_some();
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
        exited
    }

    /// A docker CLI command bound to this daemon (private socket and config dir).
    pub fn command(&self) -> Command {
        let mut c = Command::new(docker_cli());
        c.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.cli_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        c
    }

    pub fn docker(&self, args: &[&str]) -> CmdOutput {
        self.docker_timeout(args, DOCKER_TIMEOUT)
    }

    pub fn docker_timeout(&self, args: &[&str], timeout: Duration) -> CmdOutput {
        let mut c = self.command();
        c.args(args);
        common::run_cmd(c, timeout)
    }

    /// `docker` that must succeed; returns its stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.success(), "docker failed\n{out}\n{}", self.diag());
        out.stdout_str()
    }

    /// `docker inspect -f <format> <id>`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.docker_ok(&["inspect", "-f", format, id])
            .trim()
            .to_string()
    }

    /// Polls `inspect -f format` until it equals `want`.
    pub fn wait_inspect(&self, id: &str, format: &str, want: &str, timeout: Duration) {
        let mut last = String::new();
        let ok = common::wait_until(timeout, Duration::from_millis(50), || {
            let out = self.docker(&["inspect", "-f", format, id]);
            last = out.stdout_str().trim().to_string();
            (last == want).then_some(())
        });
        assert!(
            ok.is_some(),
            "{id}: {format} = {last:?}, wanted {want:?} within {timeout:?}\n{}",
            self.diag()
        );
    }

    /// Tail of dockerd's and containerd's logs.
    pub fn diag(&self) -> String {
        let text = fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!(
            "----- dockerd log tail ({}) -----\n{}\n{}",
            self.log_path.display(),
            lines[start..].join("\n"),
            self.cd.log_tail(40)
        )
    }

    /// Shim processes serving this containerd: `(pid, argv)`.
    pub fn shims(&self) -> Vec<(u32, String)> {
        self.cd.shim_processes()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.diag());
            let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("e2e-failed-logs")
                .join(format!("{}-dockerd.log", self.ns));
            let _ = fs::create_dir_all(saved.parent().unwrap_or(Path::new("/tmp")));
            if fs::copy(&self.log_path, &saved).is_ok() {
                eprintln!("full dockerd log: {}", saved.display());
            }
        }
        // Containers first (a container ignoring SIGTERM would hold dockerd's shutdown).
        if self.pid().is_some() {
            let ids = self.docker_timeout(&["ps", "-aq"], Duration::from_secs(10));
            let ids: Vec<String> = ids
                .stdout_str()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.docker_timeout(&args, Duration::from_secs(20));
            }
        }
        if !self.stop_daemon(common::SIGTERM, Duration::from_secs(15)) {
            common::notice("warning: dockerd did not stop on SIGTERM; killed");
        }
        // Then the containerd instance (its Drop: tasks of our namespace, shims, cgroups
        // /<ns>, mounts under its dir, the dir itself).
        if LIVE.fetch_sub(1, Ordering::SeqCst) == 1
            && !RUN_DOCKER_PREEXISTED.get().copied().unwrap_or(true)
        {
            let _ = fs::remove_dir("/run/docker/plugins");
            let _ = fs::remove_dir("/run/docker");
        }
    }
}

/// The busybox image as a `docker save` archive (OCI layout + `manifest.json`), built once
/// per process from [`common::busybox_image`].
pub fn docker_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(build_docker_archive).clone()
}

fn build_docker_archive() -> PathBuf {
    let oci = common::busybox_image();
    // Named after the OCI archive (itself named by a hash of its inputs): built once.
    let stem = oci
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "busybox".into());
    let archive = oci.with_file_name(format!("{stem}-docker-save.tar"));
    if archive.is_file() {
        return archive;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "docker-archive-{}-{}",
        std::process::id(),
        common::unique_id("a")
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("mkdir docker archive dir");
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(&oci).arg("-C").arg(&dir);
    let out = common::run_cmd(tar, Duration::from_secs(60));
    assert!(out.success(), "untar {}\n{out}", oci.display());
    let blob = |digest: &str| -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let p = dir.join("blobs/sha256").join(hex);
        let b = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        serde_json::from_slice(&b).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
    };
    let index: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.join("index.json")).expect("read index.json of the busybox archive"),
    )
    .expect("parse index.json");
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .expect("index.json: manifests[0].digest");
    let manifest = blob(mdigest);
    let path_of = |d: &serde_json::Value| {
        format!(
            "blobs/sha256/{}",
            d.as_str()
                .and_then(|s| s.strip_prefix("sha256:"))
                .expect("digest")
        )
    };
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .map(|l| path_of(&l["digest"]))
        .collect();
    let docker_manifest = serde_json::json!([{
        "Config": path_of(&manifest["config"]["digest"]),
        "RepoTags": [IMAGE],
        "Layers": layers,
    }]);
    fs::write(dir.join("manifest.json"), docker_manifest.to_string()).expect("manifest.json");
    // Written aside and renamed: a concurrent test process never sees a partial archive.
    let tmp = dir.with_extension("tar");
    let mut tar = Command::new("tar");
    tar.arg("-cf").arg(&tmp).arg("-C").arg(&dir).arg(".");
    let out = common::run_cmd(tar, Duration::from_secs(60));
    assert!(out.success(), "tar docker archive\n{out}");
    let _ = fs::remove_dir_all(&dir);
    if let Err(e) = fs::rename(&tmp, &archive) {
        panic!("rename {} -> {}: {e}", tmp.display(), archive.display());
    }
    archive
}

// ---------------------------------------------------------------------------
// A docker client under a pseudo-terminal
// ---------------------------------------------------------------------------

/// A process (the docker CLI) whose stdin/stdout/stderr and controlling terminal are the
/// slave of a pty this test owns; everything it prints is collected from the master.
pub struct PtyClient {
    master: OwnedFd,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtyClient {
    /// Spawns `cmd` on a new pty of `rows` x `cols`, as session leader with the pty as its
    /// controlling terminal.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtyClient {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let ws = winsize(rows, cols);
        // SAFETY: out-pointers to locals; NULL name and termios are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors we now own.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // Not inherited by what other tests spawn meanwhile (the master would never see EIO).
        for fd in [&master, &slave] {
            // SAFETY: fcntl on our own descriptor.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let so = slave.try_clone().expect("dup pty slave");
        let se = slave.try_clone().expect("dup pty slave");
        cmd.stdin(Stdio::from(slave))
            .stdout(Stdio::from(so))
            .stderr(Stdio::from(se))
            .env("TERM", "xterm");
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
        let child = cmd.spawn().expect("spawn under pty");
        drop(cmd); // closes our copies of the slave: EIO on the master once the client exits
        let output = Arc::new(Mutex::new(Vec::new()));
        let rfd = master.try_clone().expect("dup pty master");
        let out2 = Arc::clone(&output);
        let reader = thread::spawn(move || {
            let mut f = fs::File::from(rfd);
            let mut buf = [0u8; 4096];
            loop {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out2
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]),
                }
            }
        });
        PtyClient {
            master,
            child,
            output,
            reader: Some(reader),
        }
    }

    /// Everything read from the master so far, `\r` removed.
    pub fn text(&self) -> String {
        let b = self
            .output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        String::from_utf8_lossy(&b).replace('\r', "")
    }

    /// Waits until the output contains `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        common::wait_until(timeout, Duration::from_millis(20), || {
            self.text().contains(needle).then_some(())
        })
        .is_some()
    }

    /// Types `bytes` on the terminal.
    pub fn write(&self, bytes: &[u8]) {
        let f = fs::File::from(self.master.try_clone().expect("dup pty master"));
        std::io::Write::write_all(&mut &f, bytes).expect("write to pty master");
    }

    /// Sets the terminal's size (the kernel sends SIGWINCH to the client's foreground
    /// process group; sent explicitly as well).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ with a pointer to a valid winsize.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
        common::send_signal(self.child.id(), libc::SIGWINCH);
    }

    /// Sets the size to `rows` x `cols` and waits until `"rows cols\n"` appears in the output
    /// after this call. The docker CLI installs its SIGWINCH handler (and reads the size it
    /// compares against) concurrently with attaching, so a resize that comes too early is
    /// never forwarded: when nothing shows up within 2 s, the size is wiggled (one row less,
    /// then back) and the wait starts again.
    pub fn resize_and_wait(&self, rows: u16, cols: u16, timeout: Duration) -> bool {
        let needle = format!("{rows} {cols}\n");
        let mark = self.text().len();
        let deadline = Instant::now() + timeout;
        self.resize(rows, cols);
        loop {
            let seen =
                common::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
                    self.text()
                        .get(mark..)
                        .is_some_and(|t| t.contains(&needle))
                        .then_some(())
                });
            if seen.is_some() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.resize(rows.saturating_sub(1).max(1), cols);
            thread::sleep(Duration::from_millis(100));
            self.resize(rows, cols);
        }
    }

    /// Waits for the client to exit; returns its exit code (`None` = killed, timed out).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let st = common::wait_until(timeout, Duration::from_millis(20), || {
            self.child.try_wait().ok().flatten()
        });
        match st {
            Some(st) => {
                // The reader sees EIO once the client's side of the pty is closed.
                if let Some(r) = self.reader.take() {
                    let _ = common::wait_until(
                        Duration::from_secs(2),
                        Duration::from_millis(10),
                        || r.is_finished().then_some(()),
                    );
                }
                st.code()
            }
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        }
    }
}

impl Drop for PtyClient {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
