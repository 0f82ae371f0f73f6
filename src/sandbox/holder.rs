//! The namespace holder: the one process a shim-sandboxed pod has besides its containers.
//!
//! The shim clones it straight into the pod's new namespaces (UTS, IPC, PID unless the pod
//! uses the node's; the network namespace CRI made is joined), and the child immediately
//! re-executes the shim binary (`/proc/self/exe`) in [`HOLDER_ARG`] mode: no runc, no image,
//! no rootfs. The shim is multi-threaded, so between the clone and the exec the child makes
//! only raw system calls (prctl, setns, sethostname, dup2, execve, _exit), on memory prepared
//! before the clone.
//!
//! In holder mode the fresh process applies the pod's namespaced sysctls from inside its
//! namespaces, reports `ok` (or the error) on fd 3, and then waits forever; as PID 1 of the
//! pod's PID namespace it reaps every zombie there (`shareProcessNamespace`).
//!
//! Invariants: the holder is a direct child of the shim and is reaped only by the shim's
//! reaper (the exit receiver returned by [`spawn`]); it dies with the shim (parent-death
//! signal), so a SIGKILLed shim leaves no pod behind.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

use crate::reaper::{Exit, Reaper};

/// argv[1] of the shim binary in holder mode (never given by containerd).
pub const HOLDER_ARG: &str = "--tender-sandbox-holder";
/// argv[0] of the holder: what `ps` shows.
pub const HOLDER_NAME: &str = "tender-pod-holder";
/// How long the holder may take to report readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The holder's readiness/error channel.
const REPORT_FD: i32 = 3;

#[derive(Debug, Clone, Default)]
pub struct HolderSpec {
    /// The sandbox id (shown in `ps`).
    pub id: String,
    /// CRI's network namespace to join; None = stay in the node's (host network).
    pub netns: Option<PathBuf>,
    pub new_uts: bool,
    pub hostname: String,
    pub new_ipc: bool,
    pub new_pid: bool,
    pub sysctls: Vec<(String, String)>,
    /// cgroup (relative to each hierarchy's root) to put the holder in.
    pub cgroup: Option<String>,
}

pub struct Holder {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
}

/// Everything the child needs, allocated before the clone.
struct Prepared {
    exe: CString,
    argv: Vec<CString>,
    hostname: Option<CString>,
    netns: Option<OwnedFd>,
}

fn prepare(spec: &HolderSpec) -> Result<Prepared, String> {
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
    let mut argv = vec![cstr(HOLDER_NAME)?, cstr(HOLDER_ARG)?, cstr(&spec.id)?];
    for (k, v) in &spec.sysctls {
        argv.push(cstr(&format!("{k}={v}"))?);
    }
    let netns = match &spec.netns {
        None => None,
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| format!("open network namespace {}: {e}", p.display()))?;
            Some(OwnedFd::from(f))
        }
    };
    let hostname = (spec.new_uts && !spec.hostname.is_empty())
        .then(|| cstr(&spec.hostname))
        .transpose()?;
    Ok(Prepared {
        exe: cstr("/proc/self/exe")?,
        argv,
        hostname,
        netns,
    })
}

/// Starts the holder and waits until it reports ready. Must run on the shim's runtime thread
/// (the parent-death signal follows the thread that cloned) with no await between the clone
/// and the reaper subscription.
pub async fn spawn(spec: &HolderSpec, reaper: &Reaper) -> Result<Holder, String> {
    let (pid, exit, report) = clone_holder(spec, reaper)?;
    if let Some(cg) = &spec.cgroup {
        if let Err(e) = crate::cgroups::move_to(cg, pid as u32) {
            log::warn!("namespace holder {pid}: cgroup {cg}: {e}");
        }
    }
    match read_report(report).await {
        Ok(Report::Ready) => Ok(Holder { pid, exit }),
        Ok(Report::Closed) => {
            // It exited before reporting: its exit code says which step failed.
            let code = tokio::time::timeout(Duration::from_secs(2), exit)
                .await
                .ok()
                .and_then(Result::ok)
                .map(|e| e.status);
            Err(match code {
                Some(121) => "namespace holder could not join the pod's network namespace".into(),
                Some(122) => "namespace holder could not set the pod's hostname".into(),
                Some(126) => "namespace holder: the shim went away while it started".into(),
                Some(c) => format!("namespace holder exited ({c}) before it was ready"),
                None => "namespace holder closed its report pipe without an answer".into(),
            })
        }
        Err(e) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            Err(e)
        }
    }
}

/// What the holder said on its report pipe.
enum Report {
    /// `ok`: in its namespaces, sysctls applied.
    Ready,
    /// End of file without a word: it died before it could report.
    Closed,
}

/// The clone and the reaper subscription, with nothing in between that could await.
fn clone_holder(
    spec: &HolderSpec,
    reaper: &Reaper,
) -> Result<(i32, oneshot::Receiver<Exit>, OwnedFd), String> {
    let p = prepare(spec)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let mut flags = libc::SIGCHLD as libc::c_ulong;
    if spec.new_uts {
        flags |= libc::CLONE_NEWUTS as libc::c_ulong;
    }
    if spec.new_ipc {
        flags |= libc::CLONE_NEWIPC as libc::c_ulong;
    }
    if spec.new_pid {
        flags |= libc::CLONE_NEWPID as libc::c_ulong;
    }
    let parent = std::process::id() as libc::pid_t;
    let new_pid = spec.new_pid;
    let netns_fd = p.netns.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
    let host_ptr = p.hostname.as_ref().map(|h| h.as_ptr());
    let host_len = p.hostname.as_ref().map(|h| h.as_bytes().len()).unwrap_or(0);
    let w = report_w.as_raw_fd();
    let not_before = Instant::now();
    // SAFETY: clone without CLONE_VM and without a new stack is a fork. The child runs only
    // async-signal-safe system calls on memory prepared above, then execve or _exit; it
    // never returns into Rust code that could take a lock another thread held.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if pid == 0 {
        // SAFETY: see above; the child only issues system calls and never returns.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // The shim died before the signal was armed. (In a new PID namespace getppid()
            // is 0; there a dead shim shows as a failed `ok` write on the report pipe.)
            if !new_pid && libc::getppid() != parent {
                libc::_exit(126);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            if netns_fd >= 0 && libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                libc::_exit(121);
            }
            if let Some(h) = host_ptr {
                if libc::sethostname(h, host_len) != 0 {
                    libc::_exit(122);
                }
            }
            if w == REPORT_FD {
                libc::fcntl(w, libc::F_SETFD, 0);
            } else if libc::dup2(w, REPORT_FD) != REPORT_FD {
                libc::_exit(123);
            }
            libc::execve(p.exe.as_ptr(), argv_ptrs.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        return Err(format!(
            "clone namespace holder: {}",
            std::io::Error::last_os_error()
        ));
    }
    let pid = pid as i32;
    // No await since the clone: the reaper has not run, the exit cannot be lost.
    let exit = reaper.subscribe(pid, not_before);
    drop(report_w);
    Ok((pid, exit, report_r))
}

async fn read_report(fd: OwnedFd) -> Result<Report, String> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| format!("holder report pipe: {e}"))?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(READY_TIMEOUT, async {
        let mut chunk = [0u8; 512];
        loop {
            match rx.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) if buf.len() < 4096 => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match read {
        Err(_) => Err(format!(
            "namespace holder not ready within {READY_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("holder report: {e}")),
        Ok(Ok(())) if buf == b"ok" => Ok(Report::Ready),
        Ok(Ok(())) if buf.is_empty() => Ok(Report::Closed),
        Ok(Ok(())) => Err(format!(
            "namespace holder: {}",
            String::from_utf8_lossy(&buf)
        )),
    }
}

/// The holder's own `main` (argv: [name, HOLDER_ARG, id, sysctl=value...]).
pub fn main(args: &[String]) -> i32 {
    // `ps -o comm` and /proc/<pid>/comm would otherwise show "exe" (we run /proc/self/exe).
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"tender-holder".as_ptr(), 0, 0, 0) };
    // SAFETY: fd 3 is the report pipe the shim set up for us (see `spawn`).
    let mut report = unsafe { std::fs::File::from_raw_fd(REPORT_FD) };
    for kv in args.iter().skip(3) {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        if let Err(e) = std::fs::write(&path, v) {
            use std::io::Write;
            let _ = write!(report, "sysctl {k}={v}: {e}");
            return 1;
        }
    }
    {
        use std::io::Write;
        if report.write_all(b"ok").is_err() {
            return 1;
        }
    }
    drop(report);
    hold()
}

/// Waits forever; reaps whatever is reparented to us (we are PID 1 of the pod's PID
/// namespace unless the pod uses the node's).
fn hold() -> i32 {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        loop {
            match waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let _ = set.wait();
    }
}
