//! Client for an OCI runtime CLI (runc, crun, youki — anything with runc's command line).
//!
//! Every invocation goes through the shared [`Reaper`] so its exit is never stolen, and
//! writes a JSON log (`--log-format json`) whose error lines become the error message.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use serde::Deserialize;

use crate::reaper::Reaper;

#[derive(Debug)]
pub struct RuntimeError {
    pub message: String,
    /// The runtime ran and said "no such container" (or its equivalent).
    pub not_found: bool,
}

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

fn err(message: String) -> RuntimeError {
    let lower = message.to_ascii_lowercase();
    let not_found = lower.contains("does not exist")
        || lower.contains("not found")
        || lower.contains("no such file or directory");
    RuntimeError { message, not_found }
}

/// The container's stdio for `create`/`exec` (the runtime hands its own stdio to the process).
#[derive(Default)]
pub struct ProcessIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl ProcessIo {
    fn apply(self, cmd: &mut Command) {
        cmd.stdin(self.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stdout(self.stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
        cmd.stderr(self.stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
    }
}

pub struct CreateOpts<'a> {
    pub bundle: &'a Path,
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub io: ProcessIo,
}

/// `checkpoint` flags (CRIU), from containerd's CheckpointOptions.
#[derive(Default, Debug)]
pub struct CheckpointOpts {
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    /// Stop the container after the dump (otherwise `--leave-running`).
    pub exit: bool,
    pub open_tcp: bool,
    pub external_unix_sockets: bool,
    pub terminal: bool,
    pub file_locks: bool,
    pub empty_namespaces: Vec<String>,
    pub cgroups_mode: String,
}

pub struct RestoreOpts<'a> {
    pub bundle: &'a Path,
    pub pid_file: &'a Path,
    pub image_path: &'a Path,
    pub work_path: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub io: ProcessIo,
}

pub struct ExecOpts<'a> {
    pub process_json: &'a Path,
    pub pid_file: &'a Path,
    pub console_socket: Option<&'a Path>,
    pub io: ProcessIo,
}

#[derive(Clone)]
pub struct Runtime {
    /// Resolved path of the binary (resolved once so a missing binary is a clear error).
    binary: PathBuf,
    root: PathBuf,
    systemd_cgroup: bool,
    /// Directory for the per-invocation JSON logs (the bundle).
    log_dir: PathBuf,
    reaper: Arc<Reaper>,
}

/// Gives every runtime invocation its own log file, so concurrent calls never read each
/// other's errors.
static LOG_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many `create`s and `exec`s this shim has run (see [`Runtime::container_process_command`]).
static CONTAINER_PROCESSES_STARTED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Finds `name` on PATH (or takes it as a path when it contains a slash).
pub fn resolve_binary(name: &str) -> std::result::Result<PathBuf, String> {
    if name.is_empty() {
        return Err("empty runtime binary name".into());
    }
    let candidate = Path::new(name);
    if name.contains('/') {
        return if candidate.is_file() {
            Ok(candidate.to_path_buf())
        } else {
            Err(format!("runtime binary {name:?} does not exist"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| {
        OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    });
    for dir in std::env::split_paths(&path) {
        let full = dir.join(name);
        if full.is_file() {
            return Ok(full);
        }
    }
    Err(format!("runtime binary {name:?} not found in PATH"))
}

impl Runtime {
    pub fn new(
        binary: &str,
        root: PathBuf,
        systemd_cgroup: bool,
        log_dir: PathBuf,
        reaper: Arc<Reaper>,
    ) -> std::result::Result<Self, String> {
        Ok(Self {
            binary: resolve_binary(binary)?,
            root,
            systemd_cgroup,
            log_dir,
            reaper,
        })
    }

    pub fn binary_name(&self) -> String {
        self.binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn command(&self, args: &[&std::ffi::OsStr]) -> Command {
        self.command_running(&self.binary, args)
    }

    /// For the commands that start a process inside the container (`create`, `exec`): those
    /// run `runc init`, which runs from the shared sealed copy when there is one (see
    /// [`crate::sealed_runtime`]); every other command runs the binary by its path.
    fn container_process_command(&self, args: &[&std::ffi::OsStr]) -> Command {
        let Some(copies) = crate::sealed_runtime::shared() else {
            return self.command(args);
        };
        // Making a copy pays off only for a shim that starts container processes repeatedly.
        let earlier =
            CONTAINER_PROCESSES_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (program, _) = copies.program(&self.binary, earlier > 0);
        self.command_running(&program, args)
    }

    fn command_running(&self, program: &Path, args: &[&std::ffi::OsStr]) -> Command {
        let seq = LOG_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.log_dir.join(format!(".runtime-{seq}.log"));
        let mut cmd = Command::new(program);
        // `ps` and the runtime's own argv[0] show the binary, not /proc/self/fd/<n>.
        cmd.arg0(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.args(args);
        cmd
    }

    /// Runs the command to completion; stdout is returned when `capture` is set.
    async fn run(&self, mut cmd: Command, capture: bool, what: &str) -> Result<Vec<u8>> {
        let log = cmd.get_args().nth(3).map(PathBuf::from).unwrap_or_default();
        let result = self.run_logged(&mut cmd, capture, what, &log).await;
        let _ = std::fs::remove_file(&log);
        result
    }

    async fn run_logged(
        &self,
        cmd: &mut Command,
        capture: bool,
        what: &str,
        log: &Path,
    ) -> Result<Vec<u8>> {
        let started = std::time::Instant::now();
        let mut reader = None;
        if capture {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| err(format!("{what}: pipe: {e}")))?;
            cmd.stdout(Stdio::from(w));
            reader = Some(r);
        }
        let (_pid, exit) = self
            .reaper
            .spawn(cmd)
            .map_err(|e| err(format!("{what}: cannot run {}: {e}", self.binary.display())))?;
        // The write end must be closed in this process, or the read below never sees EOF.
        cmd.stdout(Stdio::null())
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let mut out = Vec::new();
        if let Some(r) = reader {
            out = read_to_end(r)
                .await
                .map_err(|e| err(format!("{what}: read output: {e}")))?;
        }
        let exit = exit
            .await
            .inspect(|_| log::debug!("runtime {what} took {:?}", started.elapsed()))
            .map_err(|_| err(format!("{what}: exit status lost")))?;
        if exit.status != 0 {
            return Err(err(format!(
                "{what}: {} exited with status {}: {}",
                self.binary_name(),
                exit.status,
                last_error_in_file(log)
            )));
        }
        Ok(out)
    }

    pub async fn create(&self, id: &str, opts: CreateOpts<'_>) -> Result<()> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "create".as_ref(),
            "--bundle".as_ref(),
            opts.bundle.as_os_str(),
            "--pid-file".as_ref(),
            opts.pid_file.as_os_str(),
        ];
        if let Some(sock) = opts.console_socket {
            args.push("--console-socket".as_ref());
            args.push(sock.as_os_str());
        }
        if opts.no_pivot {
            args.push("--no-pivot".as_ref());
        }
        if opts.no_new_keyring {
            args.push("--no-new-keyring".as_ref());
        }
        args.push(id.as_ref());
        let mut cmd = self.container_process_command(&args);
        opts.io.apply(&mut cmd);
        self.run(cmd, false, "create").await.map(drop)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        let mut cmd = self.command(&["start".as_ref(), id.as_ref()]);
        ProcessIo::default().apply(&mut cmd);
        self.run(cmd, false, "start").await.map(drop)
    }

    pub async fn exec(&self, id: &str, opts: ExecOpts<'_>) -> Result<()> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "exec".as_ref(),
            "--process".as_ref(),
            opts.process_json.as_os_str(),
            "--detach".as_ref(),
            "--pid-file".as_ref(),
            opts.pid_file.as_os_str(),
        ];
        if let Some(sock) = opts.console_socket {
            args.push("--console-socket".as_ref());
            args.push(sock.as_os_str());
        }
        args.push(id.as_ref());
        let mut cmd = self.container_process_command(&args);
        opts.io.apply(&mut cmd);
        self.run(cmd, false, "exec").await.map(drop)
    }

    pub async fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "checkpoint".into(),
            "--image-path".into(),
            opts.image_path.clone().into(),
        ];
        if let Some(work) = &opts.work_path {
            args.push("--work-path".into());
            args.push(work.clone().into());
        }
        if !opts.exit {
            args.push("--leave-running".into());
        }
        for (on, flag) in [
            (opts.open_tcp, "--tcp-established"),
            (opts.external_unix_sockets, "--ext-unix-sk"),
            (opts.terminal, "--shell-job"),
            (opts.file_locks, "--file-locks"),
        ] {
            if on {
                args.push(flag.into());
            }
        }
        for ns in &opts.empty_namespaces {
            args.push("--empty-ns".into());
            args.push(ns.into());
        }
        if !opts.cgroups_mode.is_empty() {
            args.push("--manage-cgroups-mode".into());
            args.push(opts.cgroups_mode.clone().into());
        }
        args.push(id.into());
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let mut cmd = self.command(&refs);
        ProcessIo::default().apply(&mut cmd);
        self.run(cmd, false, "checkpoint").await.map(drop)
    }

    /// Creates and starts the container from a checkpoint image (`restore --detach`).
    pub async fn restore(&self, id: &str, opts: RestoreOpts<'_>) -> Result<()> {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "restore".as_ref(),
            "--detach".as_ref(),
            "--bundle".as_ref(),
            opts.bundle.as_os_str(),
            "--pid-file".as_ref(),
            opts.pid_file.as_os_str(),
            "--image-path".as_ref(),
            opts.image_path.as_os_str(),
        ];
        if let Some(work) = opts.work_path {
            args.push("--work-path".as_ref());
            args.push(work.as_os_str());
        }
        if let Some(sock) = opts.console_socket {
            args.push("--console-socket".as_ref());
            args.push(sock.as_os_str());
        }
        if opts.no_pivot {
            args.push("--no-pivot".as_ref());
        }
        args.push(id.as_ref());
        let mut cmd = self.command(&args);
        opts.io.apply(&mut cmd);
        self.run(cmd, false, "restore").await.map(drop)
    }

    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let sig = signal.to_string();
        let mut args: Vec<&std::ffi::OsStr> = vec!["kill".as_ref()];
        if all {
            args.push("--all".as_ref());
        }
        args.push(id.as_ref());
        args.push(sig.as_ref());
        let mut cmd = self.command(&args);
        ProcessIo::default().apply(&mut cmd);
        self.run(cmd, false, "kill").await.map(drop)
    }

    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut args: Vec<&std::ffi::OsStr> = vec!["delete".as_ref()];
        if force {
            args.push("--force".as_ref());
        }
        args.push(id.as_ref());
        let mut cmd = self.command(&args);
        ProcessIo::default().apply(&mut cmd);
        self.run(cmd, false, "delete").await.map(drop)
    }

    pub async fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let mut cmd = self.command(&[
            "ps".as_ref(),
            "--format".as_ref(),
            "json".as_ref(),
            id.as_ref(),
        ]);
        cmd.stdin(Stdio::null()).stderr(Stdio::null());
        let out = self.run(cmd, true, "ps").await?;
        let pids: Option<Vec<i32>> = serde_json::from_slice(&out)
            .map_err(|e| err(format!("ps: bad runtime output: {e}")))?;
        Ok(pids.unwrap_or_default())
    }

    pub async fn simple(&self, verb: &'static str, id: &str) -> Result<()> {
        let mut cmd = self.command(&[verb.as_ref(), id.as_ref()]);
        ProcessIo::default().apply(&mut cmd);
        self.run(cmd, false, verb).await.map(drop)
    }

    pub async fn update(&self, id: &str, resources_json: &Path) -> Result<()> {
        let mut cmd = self.command(&[
            "update".as_ref(),
            "--resources".as_ref(),
            resources_json.as_os_str(),
            id.as_ref(),
        ]);
        ProcessIo::default().apply(&mut cmd);
        self.run(cmd, false, "update").await.map(drop)
    }
}

async fn read_to_end(fd: OwnedFd) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut out = Vec::new();
    rx.read_to_end(&mut out).await?;
    Ok(out)
}

/// The last error message from a runtime's JSON log file.
fn last_error_in_file(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => last_error_in_log(&text),
        Err(_) => "no runtime log".into(),
    }
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

/// Picks the last error-level message of a runc-style JSON log; falls back to the last line.
pub fn last_error_in_log(text: &str) -> String {
    let mut last_any = None;
    for line in text.lines().rev() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if last_any.is_none() {
            last_any = Some(line);
        }
        if let Ok(entry) = serde_json::from_str::<LogLine>(line) {
            if matches!(entry.level.as_str(), "error" | "fatal" | "panic") && !entry.msg.is_empty()
            {
                return entry.msg;
            }
        }
    }
    match last_any {
        Some(line) => line.chars().take(4096).collect(),
        None => "runtime log is empty".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_error_is_extracted() {
        let log = r#"{"level":"info","msg":"starting","time":"x"}
{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"x"}
{"level":"info","msg":"tail","time":"x"}
"#;
        assert_eq!(
            last_error_in_log(log),
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            last_error_in_log("plain text failure\n"),
            "plain text failure"
        );
        assert_eq!(last_error_in_log(""), "runtime log is empty");
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let e = resolve_binary("definitely-not-a-runtime-xyz").unwrap_err();
        assert!(e.contains("not found"), "{e}");
        assert!(resolve_binary("sh").is_ok());
    }
}
