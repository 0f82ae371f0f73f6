//! The namespace holder: the one process a shim-sandboxed pod has besides its containers.
//!
//! The shim clones it straight into the pod's new namespaces (UTS, IPC, PID unless the pod
//! uses the node's; the network namespace CRI made is joined), and the child immediately
//! re-executes the shim binary (`/proc/self/exe`) in [`HOLDER_ARG`] mode: no runc, no image,
//! no rootfs. The shim is multi-threaded, so between the clone and the exec the child makes
//! only raw system calls (prctl, setns, sethostname, dup2, execve, _exit; for a userns pod
//! also setgroups, setresgid, setresuid, unshare, clone, getpid, write), on memory prepared
//! before the clone.
//!
//! A pod with its own user namespace (`hostUsers: false`) is held differently, see
//! [`clone_holder_userns`]: containerd's CRI made the network namespace inside a user namespace
//! with the pod's mappings, and the holder joins that one rather than making its own, so
//! that everything a container joins (user first, as runc does) belongs to it.
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

use super::podconfig::UserNs;
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
    /// The pod's user namespace: the holder joins the one that owns `netns` (containerd
    /// creates the pod's network namespace inside it) and checks its mappings.
    pub userns: Option<UserNs>,
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
    /// The user namespace owning `netns`, for a pod with its own user namespace.
    userns: Option<OwnedFd>,
}

/// `ioctl(ns_fd, NS_GET_USERNS)`: the user namespace that owns a namespace (`_IO(0xb7, 0x1)`).
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// The user namespace owning the namespace open at `ns`; an error when it is the shim's own
/// (the node's): containerd creates a userns pod's network namespace inside the pod's user
/// namespace, and the pod's containers (which join the user namespace first) could not join
/// a network namespace of the node's.
pub fn owning_userns(ns: &OwnedFd) -> Result<OwnedFd, String> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new fd (or -1).
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS as _) };
    if fd < 0 {
        return Err(format!(
            "the owner of the pod's network namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
    let owner = unsafe { OwnedFd::from_raw_fd(fd) };
    let id = |f: &std::fs::Metadata| {
        use std::os::unix::fs::MetadataExt;
        (f.dev(), f.ino())
    };
    let ours = std::fs::metadata("/proc/self/ns/user").map_err(|e| format!("own userns: {e}"))?;
    let theirs = std::fs::File::from(owner.try_clone().map_err(|e| format!("dup: {e}"))?)
        .metadata()
        .map_err(|e| format!("userns: {e}"))?;
    if id(&ours) == id(&theirs) {
        let msg = "the pod asks for its own user namespace, but its network namespace belongs \
                   to the node's user namespace (containerd creates it inside the pod's)";
        return Err(msg.into());
    }
    Ok(owner)
}

fn prepare(spec: &HolderSpec) -> Result<Prepared, String> {
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("NUL in {s:?}"));
    let mut argv = vec![cstr(HOLDER_NAME)?, cstr(HOLDER_ARG)?, cstr(&spec.id)?];
    for (k, v) in &spec.sysctls {
        argv.push(cstr(&format!("{k}={v}"))?);
    }
    if let Some(u) = &spec.userns {
        for (tag, maps) in [(UID_MAP_ARG, &u.uids), (GID_MAP_ARG, &u.gids)] {
            for m in maps {
                let line = format!("{tag}{}:{}:{}", m.container_id, m.host_id, m.length);
                argv.push(cstr(&line)?);
            }
        }
    }
    let netns = match &spec.netns {
        None => None,
        Some(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| format!("open network namespace {}: {e}", p.display()))?;
            Some(OwnedFd::from(f))
        }
    };
    let userns = match (&spec.userns, &netns) {
        (None, _) => None,
        (Some(_), Some(net)) => Some(owning_userns(net)?),
        (Some(_), None) => {
            return Err("a pod with its own user namespace needs its own network namespace".into())
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
        userns,
    })
}

/// Holder arguments carrying the mappings the pod's user namespace must have
/// (`container:host:length`), checked by the holder against its own `/proc/self/*_map`.
const UID_MAP_ARG: &str = "uidmap:";
const GID_MAP_ARG: &str = "gidmap:";

/// Starts the holder and waits until it reports ready. Must run on the shim's runtime thread
/// (the parent-death signal follows the thread that cloned) with no await between the clone
/// and the reaper subscription.
pub async fn spawn(spec: &HolderSpec, reaper: &Reaper) -> Result<Holder, String> {
    let (pid, exit, report) = if spec.userns.is_some() {
        clone_holder_userns(spec, reaper).await?
    } else {
        clone_holder(spec, reaper)?
    };
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
    let pid = unsafe { crate::clone_like_fork(flags) };
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

/// The holder of a pod with its own user namespace. The child C, cloned by the shim into no
/// new namespace, joins CRI's network namespace and then the user namespace that owns it
/// (as the node's root, which may join both), becomes uid/gid 0 there, and only then unshares
/// UTS, IPC and PID, so that the pod's user namespace owns them (containers join it first,
/// then them). The holder must be PID 1 of the new PID namespace, so C forks it with `CLONE_PARENT` (the
/// shim stays its parent and reaper), sends its pid on a pipe and exits. Without a new PID
/// namespace C is the holder itself.
async fn clone_holder_userns(
    spec: &HolderSpec,
    reaper: &Reaper,
) -> Result<(i32, oneshot::Receiver<Exit>, OwnedFd), String> {
    let (c_pid, c_exit, pid_r, report, not_before) = clone_userns_child(spec, reaper)?;
    let kill_c = || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let mut rx = match tokio::net::unix::pipe::Receiver::from_owned_fd(pid_r) {
        Ok(rx) => rx,
        Err(e) => {
            kill_c();
            return Err(format!("holder pid pipe: {e}"));
        }
    };
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(READY_TIMEOUT, rx.read_exact(&mut buf)).await;
    let holder = match read {
        Ok(Ok(_)) => i32::from_ne_bytes(buf),
        Ok(Err(_)) => {
            // End of file without a pid: C failed; its exit code says at which step.
            let code = tokio::time::timeout(Duration::from_secs(2), c_exit)
                .await
                .ok()
                .and_then(Result::ok)
                .map(|e| e.status);
            return Err(match code {
                Some(119) => "namespace holder: fork into the pod's PID namespace failed".into(),
                Some(120) => {
                    "namespace holder could not create the pod's UTS/IPC/PID namespaces".into()
                }
                Some(121) => "namespace holder could not join the pod's network namespace".into(),
                Some(122) => "namespace holder could not set the pod's hostname".into(),
                Some(124) => "namespace holder could not join the pod's user namespace".into(),
                Some(125) => "namespace holder could not become uid/gid 0 of the pod's user \
                              namespace (are 0 mapped?)"
                    .into(),
                Some(126) => "namespace holder: the shim went away while it started".into(),
                Some(c) => format!("namespace holder exited ({c}) before it was ready"),
                None => "namespace holder closed its pid pipe without an answer".into(),
            });
        }
        Err(_) => {
            kill_c();
            return Err(format!(
                "namespace holder did not start within {READY_TIMEOUT:?}"
            ));
        }
    };
    if holder == c_pid {
        return Ok((holder, c_exit, report));
    }
    if holder <= 0 {
        kill_c();
        return Err(format!("namespace holder: bad pid {holder}"));
    }
    // C exits right after sending the pid (the reaper reaps it; nobody waits for it). The
    // holder may already be gone too: the reaper keeps such an exit for this subscription.
    drop(c_exit);
    Ok((holder, reaper.subscribe(holder, not_before), report))
}

type UsernsChild = (i32, oneshot::Receiver<Exit>, OwnedFd, OwnedFd, Instant);

/// The clone of C (see [`clone_holder_userns`]) and its reaper subscription, with nothing in
/// between that could await. Returns C's pid and exit, the read ends of the pid and report
/// pipes, and the instant before the clone.
fn clone_userns_child(spec: &HolderSpec, reaper: &Reaper) -> Result<UsernsChild, String> {
    let p = prepare(spec)?;
    let (Some(netns), Some(userns)) = (p.netns.as_ref(), p.userns.as_ref()) else {
        return Err("a pod with its own user namespace needs its own network namespace".into());
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (report_r, report_w) = nix::unistd::pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (pid_r, pid_w) = nix::unistd::pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let mut unshare_flags = 0;
    if spec.new_uts {
        unshare_flags |= libc::CLONE_NEWUTS;
    }
    if spec.new_ipc {
        unshare_flags |= libc::CLONE_NEWIPC;
    }
    if spec.new_pid {
        unshare_flags |= libc::CLONE_NEWPID;
    }
    let parent = std::process::id() as libc::pid_t;
    let new_pid = spec.new_pid;
    let (netns_fd, userns_fd) = (netns.as_raw_fd(), userns.as_raw_fd());
    let host_ptr = p.hostname.as_ref().map(|h| h.as_ptr());
    let host_len = p.hostname.as_ref().map(|h| h.as_bytes().len()).unwrap_or(0);
    let (w, pw) = (report_w.as_raw_fd(), pid_w.as_raw_fd());
    let not_before = Instant::now();
    // SAFETY: as in `clone_holder`: a fork whose child (and grandchild) run only system
    // calls on memory prepared above, then execve or _exit.
    let pid = unsafe { crate::clone_like_fork(libc::SIGCHLD as libc::c_ulong) };
    if pid == 0 {
        // SAFETY: see above; the child only issues system calls and never returns.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(126);
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            // The network namespace first, as the node's root (who may join any).
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                libc::_exit(121);
            }
            if libc::setns(userns_fd, libc::CLONE_NEWUSER) != 0 {
                libc::_exit(124);
            }
            // The node's supplementary groups mean nothing there (best effort: a user
            // namespace whose setgroups is "deny" keeps them, unmapped).
            libc::setgroups(0, std::ptr::null());
            if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                libc::_exit(125);
            }
            // Changing credentials cleared the parent-death signal.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(126);
            }
            if unshare_flags != 0 && libc::unshare(unshare_flags) != 0 {
                libc::_exit(120);
            }
            if let Some(h) = host_ptr {
                if libc::sethostname(h, host_len) != 0 {
                    libc::_exit(122);
                }
            }
            let holder = if new_pid {
                let g =
                    crate::clone_like_fork((libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong);
                if g < 0 {
                    libc::_exit(119);
                }
                if g > 0 {
                    let b = (g as i32).to_ne_bytes();
                    let ok = libc::write(pw, b.as_ptr().cast(), 4) == 4;
                    libc::_exit(if ok { 0 } else { 126 });
                }
                // The holder: PID 1 of the pod's PID namespace, a child of the shim. A shim
                // dead before this shows as a failed `ok` write on the report pipe.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                None
            } else {
                Some(libc::getpid())
            };
            if let Some(me) = holder {
                let b = me.to_ne_bytes();
                if libc::write(pw, b.as_ptr().cast(), 4) != 4 {
                    libc::_exit(126);
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
    drop(pid_w);
    Ok((pid, exit, pid_r, report_r, not_before))
}

/// The `container:host:length` triples of the holder's arguments with `tag`, sorted.
fn expected_map(args: &[String], tag: &str) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64, u64)> = args
        .iter()
        .filter_map(|a| a.strip_prefix(tag))
        .filter_map(|t| {
            let mut it = t.split(':').map(|n| n.parse::<u64>().ok());
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect();
    v.sort_unstable();
    v
}

/// The lines of a `/proc/<pid>/uid_map`-style file, sorted.
pub fn parse_map(text: &str) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<(u64, u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|n| n.parse::<u64>().ok());
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect();
    v.sort_unstable();
    v
}

/// In a pod user namespace: its mappings must be the pod's (CRI made it; we only joined it).
fn check_own_maps(args: &[String]) -> Result<(), String> {
    for (tag, file) in [(UID_MAP_ARG, "uid_map"), (GID_MAP_ARG, "gid_map")] {
        let want = expected_map(args, tag);
        if want.is_empty() {
            continue;
        }
        let path = format!("/proc/self/{file}");
        let have = parse_map(&std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?);
        if have != want {
            return Err(format!(
                "the pod's user namespace has {file} {have:?}, the pod asks for {want:?} \
                 (container, host, length)"
            ));
        }
    }
    Ok(())
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

/// The holder's own `main` (argv: [name, HOLDER_ARG, id, sysctl=value..., uidmap:c:h:l...,
/// gidmap:c:h:l...]).
pub fn main(args: &[String]) -> i32 {
    // `ps -o comm` and /proc/<pid>/comm would otherwise show "exe" (we run /proc/self/exe).
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"tender-holder".as_ptr(), 0, 0, 0) };
    // SAFETY: fd 3 is the report pipe the shim set up for us (see `spawn`).
    let mut report = unsafe { std::fs::File::from_raw_fd(REPORT_FD) };
    if let Err(e) = check_own_maps(args) {
        use std::io::Write;
        let _ = write!(report, "{e}");
        return 1;
    }
    for kv in args.iter().skip(3) {
        if kv.starts_with(UID_MAP_ARG) || kv.starts_with(GID_MAP_ARG) {
            continue;
        }
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
