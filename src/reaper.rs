//! The one reaper of the shim.
//!
//! The shim is a child subreaper: container processes (orphaned by the OCI runtime CLI once it
//! exits) and the runtime CLI invocations themselves are all our children. Exactly one place
//! calls `waitpid` — [`Reaper::reap_all`] — and hands each exit to whoever subscribed to that pid.
//! Nobody else may wait on a child (so no `std::process::Child::wait`, no `tokio::process`),
//! otherwise a runtime CLI's exit could be stolen from the container bookkeeping or vice versa.
//!
//! Two ways to subscribe:
//! * [`Reaper::spawn`] for a process we start ourselves: the subscription is registered before
//!   the reaper can possibly observe the exit (the runtime is single-threaded and spawn+register
//!   happen without an await in between).
//! * [`Reaper::subscribe`] for a pid we learn later (a container's init read from a pid file):
//!   the process may already be gone, so exits nobody asked for are parked as "unclaimed" and
//!   handed over on subscription — but only when they happened after `not_before`, so a recycled
//!   pid can never inherit an old exit.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How many exits nobody subscribed to are remembered (orphans of a dying pid namespace,
/// processes whose pid file we have not read yet).
const UNCLAIMED_LIMIT: usize = 1024;

#[derive(Clone, Copy, Debug)]
pub struct Exit {
    pub pid: i32,
    /// Exit code, or 128 + signal number for a process killed by a signal (shell convention,
    /// what containerd reports).
    pub status: u32,
    pub at: SystemTime,
    seen: Instant,
}

#[derive(Default)]
struct Inner {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, Exit>,
}

#[derive(Default)]
pub struct Reaper {
    inner: Mutex<Inner>,
}

impl Reaper {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }

    /// Spawns `cmd` and returns its pid and a receiver for its exit.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(i32, oneshot::Receiver<Exit>)> {
        let mut inner = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        // `child` is dropped without waiting: the reaper owns the wait.
        let (tx, rx) = oneshot::channel();
        inner.waiters.insert(pid, tx);
        Ok((pid, rx))
    }

    /// Subscribes to the exit of a pid that is not our direct spawn (it became our child by
    /// reparenting). Exits recorded before `not_before` belong to an earlier owner of the pid.
    pub fn subscribe(&self, pid: i32, not_before: Instant) -> oneshot::Receiver<Exit> {
        let mut inner = self.lock();
        let (tx, rx) = oneshot::channel();
        match inner.unclaimed.remove(&pid) {
            Some(exit) if exit.seen >= not_before => {
                let _ = tx.send(exit);
            }
            _ => {
                inner.waiters.insert(pid, tx);
            }
        }
        rx
    }

    /// Drops interest in a pid (e.g. a container deleted before its init was reaped).
    pub fn unsubscribe(&self, pid: i32) {
        self.lock().waiters.remove(&pid);
    }

    /// Reaps every exited child without blocking.
    pub fn reap_all(&self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as u32),
                Ok(WaitStatus::StillAlive) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => return, // ECHILD: no children at all
            };
            self.dispatch(Exit {
                pid,
                status,
                at: SystemTime::now(),
                seen: Instant::now(),
            });
        }
    }

    fn dispatch(&self, exit: Exit) {
        let mut inner = self.lock();
        if let Some(tx) = inner.waiters.remove(&exit.pid) {
            if tx.send(exit).is_ok() {
                return;
            }
        }
        if inner.unclaimed.len() >= UNCLAIMED_LIMIT {
            if let Some(oldest) = inner
                .unclaimed
                .values()
                .min_by_key(|e| e.seen)
                .map(|e| e.pid)
            {
                inner.unclaimed.remove(&oldest);
            }
        }
        inner.unclaimed.insert(exit.pid, exit);
    }

    /// Runs forever: reaps on every SIGCHLD.
    pub async fn run(self: Arc<Self>) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigchld = signal(SignalKind::child())?;
        loop {
            self.reap_all();
            if sigchld.recv().await.is_none() {
                return Ok(());
            }
        }
    }
}

/// Makes this process a child subreaper so orphaned container processes become our children.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test for everything the reaper spawns; the lock keeps other tests' children out of
    /// its `waitpid(-1)`.
    #[tokio::test(flavor = "current_thread")]
    async fn spawned_exits_reach_their_subscribers() {
        let _children = crate::CHILD_PROCESS_TESTS.lock().await;
        let reaper = Reaper::new();
        tokio::spawn(reaper.clone().run());
        let (_pid, rx) = reaper
            .spawn(Command::new("sh").args(["-c", "exit 7"]))
            .expect("spawn sh");
        assert_eq!(rx.await.expect("exit delivered").status, 7);
        let (_pid, rx) = reaper
            .spawn(Command::new("sh").args(["-c", "kill -TERM $$"]))
            .expect("spawn sh");
        assert_eq!(rx.await.expect("exit").status, 143);
    }

    #[test]
    fn unclaimed_exit_is_handed_over_unless_stale() {
        let reaper = Reaper::new();
        let before = Instant::now();
        reaper.dispatch(Exit {
            pid: 4242,
            status: 3,
            at: SystemTime::now(),
            seen: Instant::now(),
        });
        let mut rx = reaper.subscribe(4242, before);
        assert_eq!(rx.try_recv().expect("parked exit").status, 3);

        reaper.dispatch(Exit {
            pid: 4343,
            status: 1,
            at: SystemTime::now(),
            seen: Instant::now(),
        });
        // A subscription that starts after the recorded exit must not inherit it.
        let mut rx = reaper.subscribe(4343, Instant::now() + std::time::Duration::from_secs(1));
        assert!(rx.try_recv().is_err());
    }
}
