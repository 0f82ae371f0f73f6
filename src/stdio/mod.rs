//! A process's stdio as containerd asks for it: FIFO paths (what ctr and CRI use),
//! `binary://` loggers, `file://` logs, nothing (null), or a terminal.
//!
//! Invariant: with FIFOs the container only ever writes into pipes the shim owns, and the shim
//! holds a read end of each output FIFO as long as the process can write. containerd going
//! away (restart, crash) therefore never reaches the container as EPIPE/SIGPIPE: its output
//! waits in the pipes until a new reader comes. Opening a FIFO that way (read end first, both
//! non-blocking) also never blocks, even if the client already deleted or abandoned it.

pub mod console;
pub mod copy;

use crate::lock;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::reaper::Reaper;
use crate::runtime::ProcessIo;
use copy::{async_fd, copy, Stop};

/// What containerd asked for, verbatim (reported back in State).
#[derive(Clone, Debug, Default)]
pub struct StdioSpec {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Scheme {
    Null,
    Fifo(PathBuf),
    File(PathBuf),
    Binary { path: PathBuf, args: Vec<String> },
}

/// Parses one stdio URI. A bare path is a FIFO (containerd's default).
pub fn parse_uri(uri: &str) -> Result<Scheme, String> {
    if uri.is_empty() {
        return Ok(Scheme::Null);
    }
    if uri.contains('\0') {
        return Err("stdio path contains NUL".into());
    }
    if let Some(rest) = uri.strip_prefix("binary://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = percent_decode(path)?;
        if !path.starts_with('/') {
            return Err(format!("binary:// logger path must be absolute: {uri:?}"));
        }
        let mut args = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            args.push(percent_decode(&k.replace('+', " "))?);
            if !v.is_empty() {
                args.push(percent_decode(&v.replace('+', " "))?);
            }
        }
        return Ok(Scheme::Binary {
            path: PathBuf::from(path),
            args,
        });
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        let path = percent_decode(rest.split_once('?').map_or(rest, |(p, _)| p))?;
        if !path.starts_with('/') {
            return Err(format!("file:// path must be absolute: {uri:?}"));
        }
        return Ok(Scheme::File(PathBuf::from(path)));
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(format!("unsupported stdio scheme {scheme:?} in {uri:?}"));
    }
    let path = uri.strip_prefix("fifo:").unwrap_or(uri);
    if !path.starts_with('/') {
        return Err(format!("stdio FIFO path must be absolute: {uri:?}"));
    }
    Ok(Scheme::Fifo(PathBuf::from(path)))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return Err(format!("stdio URI decodes to a NUL byte: {s:?}"));
    }
    String::from_utf8(out).map_err(|_| format!("stdio URI is not UTF-8: {s:?}"))
}

/// The shim's two ends of an output FIFO, opened without blocking whatever the client did.
///
/// The read end is the shim's own: while the process can still write, it keeps the FIFO from
/// ever having no reader, so a client that goes away (containerd restarting) never turns the
/// copy into EPIPE, and the output waits in the FIFO for the next reader. Once the copy has
/// reached the end of the process's output, the shim drops it: from then on a reader is
/// somebody else, and the writer can tell whether one is there (see [`copy::wait_consumed`]).
struct OutFifo {
    writer: OwnedFd,
    reader: OwnedFd,
}

impl OutFifo {
    fn open(path: &Path) -> io::Result<OutFifo> {
        let open = |write: bool| {
            OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map(OwnedFd::from)
                .map_err(|e| io::Error::new(e.kind(), format!("open fifo {}: {e}", path.display())))
        };
        // Reader first: a non-blocking open for reading always succeeds, and then the one for
        // writing does too (it fails with ENXIO only while a FIFO has no reader).
        let reader = open(false)?;
        let writer = open(true)?;
        Ok(OutFifo { writer, reader })
    }

    fn try_clone(&self) -> io::Result<OutFifo> {
        Ok(OutFifo {
            writer: self.writer.try_clone()?,
            reader: self.reader.try_clone()?,
        })
    }
}

/// Opens a stdin FIFO for reading without blocking. Unlike the output FIFOs it is read-only:
/// the client closing its end is how end of input reaches the process (ctr relies on it).
fn open_stdin_fifo(path: &Path) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open fifo {}: {e}", path.display())))?;
    Ok(file.into())
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(pipe2(OFlag::O_CLOEXEC)?)
}

/// The shim's side of a process's stdio. Interior locks are held for a field swap only.
#[derive(Default)]
pub struct ProcessStdio {
    stdin_close: Mutex<Option<oneshot::Sender<()>>>,
    outputs: Mutex<Vec<Output>>,
    console: Mutex<Option<Arc<OwnedFd>>>,
}

/// One stdout/stderr copy. `settled` fires once the process's output is all in the FIFO and
/// the FIFO's reader has taken it, or there is no reader, or it stopped taking for
/// [`DRAIN_BOUND`] (see [`spawn_output`]).
struct Output {
    task: JoinHandle<()>,
    settled: Option<oneshot::Receiver<()>>,
}

/// How long a reader may take nothing out of an output FIFO after the process's output ended
/// before the shim closes its end of the FIFO anyway. Closing it loses nothing while the
/// reader holds the FIFO open (the bytes stay in it, then the reader sees end of file); the
/// bound only keeps a stuck reader from pinning the copy until the process is deleted.
const DRAIN_BOUND: Duration = Duration::from_secs(2);

/// How long after a process's exit its exit is reported at the latest, whatever the readers of
/// its output do (containerd's Go shim reports it at once; the requirement is 0.5 s).
///
/// Until then the exit waits for the output to get out: for the copy to have moved everything
/// the process wrote into the FIFO, and for the FIFO's reader to have taken it, because some
/// clients stop reading once they have the exit (ctr 1.6 closes its FIFOs when it deletes the
/// task, and deletes right after Wait returns). An attached reader takes the at most 2 MiB
/// left in the pipes in milliseconds. Nobody to wait for (a detached `ctr run -d`, a
/// containerd that is away) ends the wait at once. The bound covers what cannot be waited
/// for: a background process that inherited stdout (no end of output), a reader that stopped
/// reading, output that does not fit into a FIFO nobody reads.
pub const EXIT_REPORT_BOUND: Duration = Duration::from_millis(300);

impl ProcessStdio {
    /// CloseIO: everything already written to the stdin FIFO is delivered, then the process
    /// sees end of file.
    pub fn close_stdin(&self) {
        if let Some(tx) = lock(&self.stdin_close).take() {
            let _ = tx.send(());
        }
    }

    /// Waits until all output has been copied into the FIFOs and taken out by their readers
    /// (see [`spawn_output`]), for `bound` at most. A copy still running after that keeps
    /// running (nothing is thrown away) until it ends or the process is deleted.
    pub async fn finish_output(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        let mut outputs = std::mem::take(&mut *lock(&self.outputs));
        for out in &mut outputs {
            if let Some(settled) = out.settled.take() {
                // An error (the copy ended without settling) counts as settled.
                let _ = tokio::time::timeout_at(deadline, settled).await;
            }
        }
        // Kept until the process is deleted: a copy may still run, or hold output for a reader.
        lock(&self.outputs).extend(outputs);
    }

    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let console = lock(&self.console).clone();
        let Some(console) = console else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "process has no terminal",
            ));
        };
        console::resize(console.as_raw_fd(), width, height)
    }

    /// Takes over the stdio prepared for a process that already exists in the table (execs).
    pub fn adopt(&self, other: ProcessStdio) {
        if let Some(tx) = lock(&other.stdin_close).take() {
            *lock(&self.stdin_close) = Some(tx);
        }
        lock(&self.outputs).append(&mut lock(&other.outputs));
        if let Some(c) = lock(&other.console).take() {
            *lock(&self.console) = Some(c);
        }
    }

    /// Stops everything at once (process deleted).
    pub fn abort(&self) {
        self.close_stdin();
        for out in std::mem::take(&mut *lock(&self.outputs)) {
            out.task.abort();
        }
        lock(&self.console).take();
    }
}

impl Drop for ProcessStdio {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Prepared stdio: the fds for the runtime CLI (the process inherits them), the console
/// socket when a terminal was asked for, and the shim side.
pub struct Prepared {
    pub runtime_io: ProcessIo,
    pub console_socket: Option<console::ConsoleSocket>,
    pub stdio: ProcessStdio,
    /// The console's far side is attached after the runtime hands over the pty master.
    pending_console: Option<(Option<OwnedFd>, Option<OutFifo>)>,
    /// Output pipes (read end, FIFO) copied only once the runtime call succeeded
    /// ([`Prepared::start_outputs`]): until then the only writer is the runtime CLI itself,
    /// whose error text is the failed call's error, not the process's output (the Go shim
    /// starts copying after the call too). Dropped unread when the call fails.
    pending_outputs: Vec<(OwnedFd, OutFifo)>,
}

/// Identity given to a `binary://` logger.
pub struct LoggerEnv<'a> {
    pub namespace: &'a str,
    pub id: &'a str,
}

/// Sets up stdio for a process before the runtime creates it.
pub async fn prepare(
    spec: &StdioSpec,
    reaper: &Arc<Reaper>,
    logger_env: LoggerEnv<'_>,
    console_dir: &Path,
    io_owner: Option<(u32, u32)>,
) -> io::Result<Prepared> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    let stdin = parse_uri(&spec.stdin).map_err(invalid)?;
    let stdout = parse_uri(&spec.stdout).map_err(invalid)?;
    let stderr = parse_uri(&spec.stderr).map_err(invalid)?;
    if matches!(stdin, Scheme::File(_) | Scheme::Binary { .. }) {
        return Err(invalid(format!(
            "stdin must be a FIFO or empty, got {:?}",
            spec.stdin
        )));
    }

    let mut prepared = Prepared {
        runtime_io: ProcessIo::default(),
        console_socket: None,
        stdio: ProcessStdio::default(),
        pending_console: None,
        pending_outputs: Vec::new(),
    };

    let stdin_fifo = match &stdin {
        Scheme::Fifo(p) => Some(open_stdin_fifo(p)?),
        _ => None,
    };

    if spec.terminal {
        let out_fifo = match &stdout {
            Scheme::Fifo(p) => Some(OutFifo::open(p)?),
            Scheme::Null => None,
            _ => {
                return Err(invalid(
                    "a terminal needs a FIFO (or nothing) for stdout".to_string(),
                ))
            }
        };
        prepared.console_socket = Some(console::ConsoleSocket::new(console_dir)?);
        prepared.pending_console = Some((stdin_fifo, out_fifo));
        return Ok(prepared);
    }

    // stdin: FIFO → pipe → process.
    if let Some(fifo) = stdin_fifo {
        let (r, w) = cloexec_pipe()?;
        chown_fd(&r, io_owner)?;
        prepared.runtime_io.stdin = Some(r);
        let (tx, rx) = oneshot::channel();
        *lock(&prepared.stdio.stdin_close) = Some(tx);
        let src = async_fd(fifo)?;
        let dst = async_fd(w)?;
        tokio::spawn(pump_stdin(src, dst, rx, None));
    }

    match (&stdout, &stderr) {
        (Scheme::Binary { path, args }, _) => {
            let (out_r, out_w) = cloexec_pipe()?;
            let (err_r, err_w) = cloexec_pipe()?;
            chown_fd(&out_w, io_owner)?;
            chown_fd(&err_w, io_owner)?;
            start_logger(reaper, path, args, &logger_env, out_r, err_r).await?;
            prepared.runtime_io.stdout = Some(out_w);
            prepared.runtime_io.stderr = Some(err_w);
        }
        (Scheme::File(path), _) => {
            // The process appends straight to the file: nothing to copy, nothing to lose.
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
            let fd: OwnedFd = file.into();
            prepared.runtime_io.stderr = Some(fd.try_clone()?);
            prepared.runtime_io.stdout = Some(fd);
        }
        _ => {
            let out_fifo = match &stdout {
                Scheme::Fifo(p) => Some(OutFifo::open(p)?),
                Scheme::Null => None,
                _ => return Err(invalid(format!("unsupported stdout {:?}", spec.stdout))),
            };
            let err_fifo = match &stderr {
                Scheme::Fifo(p) if Some(p) == fifo_path(&stdout) => match &out_fifo {
                    Some(f) => Some(f.try_clone()?),
                    None => None,
                },
                Scheme::Fifo(p) => Some(OutFifo::open(p)?),
                Scheme::Null => None,
                _ => return Err(invalid(format!("unsupported stderr {:?}", spec.stderr))),
            };
            if let Some(fifo) = out_fifo {
                let (r, w) = cloexec_pipe()?;
                chown_fd(&w, io_owner)?;
                prepared.runtime_io.stdout = Some(w);
                prepared.pending_outputs.push((r, fifo));
            }
            if let Some(fifo) = err_fifo {
                let (r, w) = cloexec_pipe()?;
                chown_fd(&w, io_owner)?;
                prepared.runtime_io.stderr = Some(w);
                prepared.pending_outputs.push((r, fifo));
            }
        }
    }
    Ok(prepared)
}

fn fifo_path(s: &Scheme) -> Option<&PathBuf> {
    match s {
        Scheme::Fifo(p) => Some(p),
        _ => None,
    }
}

fn chown_fd(fd: &OwnedFd, owner: Option<(u32, u32)>) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(
            fd.as_raw_fd(),
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )?;
    }
    Ok(())
}

/// Copies the process's output `src` into `fifo` until the process's output ends, then waits
/// until the FIFO's reader has taken it all (see [`copy::wait_consumed`]) and closes the FIFO,
/// so that the reader sees end of file. Output nobody reads stays in the FIFO (the shim keeps
/// it open) until a reader comes and takes it (containerd back from a restart), or until the
/// process is deleted.
fn spawn_output(src: OwnedFd, fifo: OutFifo) -> io::Result<Output> {
    let OutFifo { writer, reader } = fifo;
    // Bigger pipes mean fewer wake-ups and bigger splices for the writer, the shim and the
    // reader alike (the data path is dd → pipe → shim → FIFO → client).
    copy::grow_pipe(&src);
    copy::grow_pipe(&writer);
    let src = async_fd(src)?;
    let dst = async_fd(writer)?;
    let (settled_tx, settled) = oneshot::channel();
    let task = tokio::spawn(async move {
        let counter = AtomicU64::new(0);
        match copy::copy_counted(&src, &dst, false, &counter).await {
            Ok(_) => {
                // Nothing more to write: from now on, a reader of the FIFO is someone else.
                drop(reader);
                copy::wait_consumed(dst.get_ref(), &counter, DRAIN_BOUND).await;
                let _ = settled_tx.send(());
                copy::hold_until_taken(dst.get_ref()).await;
            }
            Err(e) => log::warn!("stdout/stderr copy ended: {e}"),
        }
    });
    Ok(Output {
        task,
        settled: Some(settled),
    })
}

/// Copies the stdin FIFO to the process until the client's end of input or CloseIO. On
/// CloseIO, flushes what the client wrote before it, then ends input: by closing `dst` (a
/// pipe: end of file), after writing `eof_char` first where closing is not enough (a terminal
/// sees end of input as ^D).
async fn pump_stdin(
    src: tokio::io::unix::AsyncFd<OwnedFd>,
    dst: tokio::io::unix::AsyncFd<OwnedFd>,
    close: oneshot::Receiver<()>,
    eof_char: Option<u8>,
) {
    tokio::select! {
        res = copy_stdin(&src, &dst) => {
            if let Err(e) = res { log::debug!("stdin copy ended: {e}"); }
        }
        _ = close => {
            match copy(&src, &dst, true).await {
                Ok(Stop::Eof) | Ok(Stop::Drained) => {}
                Err(e) => log::debug!("stdin drain ended: {e}"),
            }
            if let Some(c) = eof_char {
                let _ = copy::write_all(&dst, &[c]).await;
            }
        }
    }
}

/// Copies a read-only stdin FIFO. Before any client opened the FIFO for writing, a read
/// returns 0 although this is not end of input; epoll only reports the FIFO once a writer
/// came (data, or hang-up after it left). So wait for that first.
async fn copy_stdin(
    src: &tokio::io::unix::AsyncFd<OwnedFd>,
    dst: &tokio::io::unix::AsyncFd<OwnedFd>,
) -> io::Result<Stop> {
    let _ = src.readable().await?;
    copy(src, dst, false).await
}

/// Starts a `binary://` logger: fd 3 = stdout, fd 4 = stderr, fd 5 = closed by the logger
/// once it is ready. It ends by itself when the process's output ends.
async fn start_logger(
    reaper: &Arc<Reaper>,
    path: &Path,
    args: &[String],
    env: &LoggerEnv<'_>,
    out_r: OwnedFd,
    err_r: OwnedFd,
) -> io::Result<()> {
    let (ready_r, ready_w) = cloexec_pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env("CONTAINER_ID", env.id)
        .env("CONTAINER_NAMESPACE", env.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls (dup/dup2/close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources above 5 first so the dup2 sequence cannot clobber them.
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let h = libc::fcntl(*fd, libc::F_DUPFD, 10);
                if h < 0 {
                    return Err(io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(*h);
            }
            Ok(())
        });
    }
    reaper
        .spawn(&mut cmd)
        .map_err(|e| io::Error::new(e.kind(), format!("start logger {}: {e}", path.display())))?;
    drop(cmd);
    drop(ready_w);
    drop(out_r);
    drop(err_r);
    // Wait until the logger closes fd 5 (or exits).
    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r)?;
    let wait = async {
        let mut buf = [0u8; 64];
        loop {
            rx.readable().await?;
            match rx.try_read(&mut buf) {
                Ok(0) => return Ok::<(), io::Error>(()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "logger did not become ready in 10s",
            )
        })?
}

impl Prepared {
    /// Runs `start` — the runtime call that creates the process (create, exec, restore) and
    /// gets its stdio and the console socket path — while taking the pty master it sends.
    pub async fn launch<T, Fut>(
        &mut self,
        start: impl FnOnce(ProcessIo, Option<PathBuf>) -> Fut,
    ) -> (T, io::Result<()>)
    where
        Fut: std::future::Future<Output = T>,
    {
        let console = self.console_socket.as_ref().map(|c| c.path().to_path_buf());
        let io = std::mem::take(&mut self.runtime_io);
        let started = start(io, console);
        tokio::join!(started, self.attach_console())
    }

    /// After the runtime call succeeded: starts copying the output pipes to their FIFOs
    /// (what the runtime CLI wrote there on failure is never forwarded).
    pub fn start_outputs(&mut self) -> io::Result<()> {
        for (r, fifo) in std::mem::take(&mut self.pending_outputs) {
            lock(&self.stdio.outputs).push(spawn_output(r, fifo)?);
        }
        Ok(())
    }

    /// After the runtime created the process: takes the pty master from the console socket
    /// and starts copying between it and the FIFOs.
    pub async fn attach_console(&mut self) -> io::Result<()> {
        let Some(sock) = self.console_socket.take() else {
            return Ok(());
        };
        let (stdin_fifo, out_fifo) = self.pending_console.take().unwrap_or((None, None));
        let master = Arc::new(sock.receive_master().await?);
        if let Some(fifo) = stdin_fifo {
            let src = async_fd(fifo)?;
            let dst = async_fd(master.try_clone()?)?;
            let (tx, rx) = oneshot::channel();
            *lock(&self.stdio.stdin_close) = Some(tx);
            // End of input for a terminal is the EOF character (^D).
            tokio::spawn(pump_stdin(src, dst, rx, Some(4)));
        }
        if let Some(fifo) = out_fifo {
            lock(&self.stdio.outputs).push(spawn_output(master.try_clone()?, fifo)?);
        }
        *lock(&self.stdio.console) = Some(master);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse() {
        assert_eq!(parse_uri("").unwrap(), Scheme::Null);
        assert_eq!(
            parse_uri("/run/x/stdout").unwrap(),
            Scheme::Fifo("/run/x/stdout".into())
        );
        assert_eq!(
            parse_uri("file:///var/log/a%20b.log").unwrap(),
            Scheme::File("/var/log/a b.log".into())
        );
        assert_eq!(
            parse_uri("binary:///usr/bin/logger?-level=debug&x").unwrap(),
            Scheme::Binary {
                path: "/usr/bin/logger".into(),
                args: vec!["-level".into(), "debug".into(), "x".into()]
            }
        );
        assert!(parse_uri("tcp://1.2.3.4:5").is_err());
        assert!(parse_uri("relative/path").is_err());
        assert!(parse_uri("binary://relative").is_err());
        assert!(parse_uri("/a\0b").is_err());
        assert!(parse_uri("file:///bad%zz").is_err());
        assert!(parse_uri("file:///a%00b").is_err());
        assert!(parse_uri("binary:///bin/log?x=%00").is_err());
        assert!(parse_uri("fifo:relative").is_err());
        assert_eq!(
            parse_uri("fifo:/run/x").unwrap(),
            Scheme::Fifo("/run/x".into())
        );
    }
}
