//! One state machine per process (a container's init or an exec):
//!
//! ```text
//! created ──start──▶ running ◀──resume── paused
//!    │                  │ └────pause────▶   │
//!    │                  ▼                   │
//!    └──────exit────▶ stopped ◀────exit─────┘
//!                       │
//!                       ▼
//!                    deleted      (created may also be deleted directly)
//! ```
//!
//! Illegal moves are errors, never silently accepted. The state lives behind a plain mutex that
//! is only held for the transition itself — never across a runtime call, I/O or an await.
//!
//! A start is a phase, not a point: it begins with [`Process::begin_start`] and ends with
//! [`Process::start_done`] (or [`Process::start_failed`]), once the start event is queued. An
//! init's exit watcher runs from Create on (an init may die before it is started: a hook, the
//! OOM killer, a signal) and waits for that phase to end before it reports the exit
//! ([`Process::start_settled`]), so a TaskExit never overtakes its TaskStart. Once the kernel has
//! reported the exit ([`Process::note_reaped`]) no start may begin. An exec whose Start is
//! refused because its container's init has exited stays created ([`Process::start_refused`]),
//! as containerd's runc shim reports it; any other failed start stops it for good.

use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{oneshot, watch, Notify};

use crate::reaper::Exit;
use crate::stdio::{ProcessStdio, StdioSpec};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
    Deleted,
}

impl Status {
    /// containerd's `containerd.v1.types.Status` numbering.
    pub fn to_proto(self) -> containerd_shim_protos::types::task::Status {
        use containerd_shim_protos::types::task::Status as P;
        match self {
            Status::Created => P::CREATED,
            Status::Running => P::RUNNING,
            Status::Paused => P::PAUSED,
            Status::Stopped | Status::Deleted => P::STOPPED,
        }
    }
}

/// What Wait answers for a process that never ran (its Start failed, or it was deleted
/// while created): runc's own status for "the runtime failed".
pub const NEVER_RAN: u32 = 255;

#[derive(Clone, Copy, Debug)]
pub struct ExitInfo {
    pub status: u32,
    pub at: SystemTime,
}

impl ExitInfo {
    /// The exit Wait reports for a process that never ran, stamped now.
    fn never_ran() -> Self {
        Self {
            status: NEVER_RAN,
            at: SystemTime::now(),
        }
    }
}

struct State {
    status: Status,
    pid: i32,
    /// A start is in its phase (from `begin_start` until its start event is queued, or it
    /// failed): a second one must be refused, and the exit watcher waits for it to end.
    starting: bool,
    /// The kernel reported the exit (it may not be published yet): nothing can start any more.
    reaped: bool,
    exit: Option<ExitInfo>,
    /// The reaper's promise for this pid; whoever takes it owns the exit handling.
    exit_rx: Option<oneshot::Receiver<Exit>>,
}

pub struct Process {
    pub container_id: String,
    /// Empty for a container's init.
    pub exec_id: String,
    pub stdio_spec: StdioSpec,
    pub stdio: ProcessStdio,
    /// Tells this exec's scratch files apart from those of an earlier exec with the same ID
    /// (an ID may be reused once deleted, and the old files are removed in the background).
    /// 0 for a container's init.
    pub instance: u64,
    state: Mutex<State>,
    exited: watch::Sender<Option<ExitInfo>>,
    /// Woken whenever a start phase ends (see `start_settled`).
    start_ended: Notify,
}

#[derive(Debug)]
pub struct Illegal(pub String);

impl Process {
    pub fn new(
        container_id: &str,
        exec_id: &str,
        stdio_spec: StdioSpec,
        stdio: ProcessStdio,
    ) -> Self {
        Self {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdio_spec,
            stdio,
            instance: 0,
            state: Mutex::new(State {
                status: Status::Created,
                pid: 0,
                starting: false,
                reaped: false,
                exit: None,
                exit_rx: None,
            }),
            exited: watch::channel(None).0,
            start_ended: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    pub fn is_init(&self) -> bool {
        self.exec_id.is_empty()
    }

    fn name(&self) -> String {
        if self.is_init() {
            format!("container {}", self.container_id)
        } else {
            format!("exec {} in container {}", self.exec_id, self.container_id)
        }
    }

    pub fn status(&self) -> Status {
        self.lock().status
    }

    pub fn pid(&self) -> i32 {
        self.lock().pid
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        self.lock().exit
    }

    /// The runtime created the process: remember its pid and the reaper's promise.
    pub fn set_created(&self, pid: i32, exit_rx: oneshot::Receiver<Exit>) {
        let mut s = self.lock();
        s.pid = pid;
        s.exit_rx = Some(exit_rx);
    }

    /// created → (starting). Refuses anything else, and a process whose exit was already seen.
    pub fn begin_start(&self) -> Result<(), Illegal> {
        let mut s = self.lock();
        match (s.status, s.starting, s.reaped) {
            (Status::Created, false, false) => {
                s.starting = true;
                Ok(())
            }
            (Status::Created, true, _) => {
                Err(Illegal(format!("{} is already starting", self.name())))
            }
            (Status::Created, false, true) => Err(Illegal(format!(
                "cannot start {}: it has already exited",
                self.name()
            ))),
            (st, _, _) => Err(Illegal(format!(
                "cannot start {}: it is {st:?}",
                self.name()
            ))),
        }
    }

    /// The runtime's start returned. On success: created → running. Returns the exit promise
    /// still held here (a restored init's; a created init's watcher took its own at Create), so
    /// the caller can watch for the exit — only *after* it has published the start event. The
    /// start phase lasts until [`Process::start_done`].
    pub fn end_start(&self, ok: bool) -> Option<oneshot::Receiver<Exit>> {
        let mut s = self.lock();
        if ok && s.status == Status::Created && s.starting {
            s.status = Status::Running;
            return s.exit_rx.take();
        }
        None
    }

    /// Ends the start phase (its start event is queued, or the start failed): a watcher held
    /// back by [`Process::start_settled`] may now report the exit.
    pub fn start_done(&self) {
        self.lock().starting = false;
        self.start_ended.notify_waiters();
    }

    /// Waits while a start phase is running.
    pub async fn start_settled(&self) {
        loop {
            // Armed before the check, so a phase ending in between still wakes us.
            let ended = self.start_ended.notified();
            if !self.lock().starting {
                return;
            }
            ended.await;
        }
    }

    /// The kernel reported this process's exit: no start may begin from now on.
    pub fn note_reaped(&self) {
        self.lock().reaped = true;
    }

    /// An exec's Start failed: it never ran and never will, so it is stopped (a second Start
    /// is refused), and whoever waits for it — containerd's clients call Wait before Start —
    /// is answered with [`NEVER_RAN`] instead of waiting forever (a failing exec probe would
    /// otherwise leave one stuck Wait per attempt). No TaskExit: nothing started.
    pub fn start_failed(&self) {
        let exit = ExitInfo::never_ran();
        let stopped = {
            let mut s = self.lock();
            s.starting = false;
            let created = s.status == Status::Created;
            if created {
                s.status = Status::Stopped;
                s.exit = Some(exit);
            }
            created
        };
        self.start_ended.notify_waiters();
        if stopped {
            self.exited.send_replace(Some(exit));
        }
    }

    /// An exec's Start was refused because its container's init has exited: it stays created,
    /// as containerd's runc shim reports it (State says created, Delete reports no exit), and
    /// whoever waits for it is answered with [`NEVER_RAN`] since it never will run.
    pub fn start_refused(&self) {
        self.lock().starting = false;
        self.start_ended.notify_waiters();
        self.exited.send_replace(Some(ExitInfo::never_ran()));
    }

    /// The process has exited (reported or not yet): its exit was reaped, or it is stopped.
    pub fn has_exited(&self) -> bool {
        let s = self.lock();
        s.reaped || matches!(s.status, Status::Stopped | Status::Deleted)
    }

    /// Takes the exit promise of a created process, for a watcher that runs from now on.
    pub fn take_exit_rx(&self) -> Option<oneshot::Receiver<Exit>> {
        self.lock().exit_rx.take()
    }

    /// running ⇄ paused.
    pub fn set_paused(&self, paused: bool) -> Result<(), Illegal> {
        let mut s = self.lock();
        match (s.status, paused) {
            (Status::Running, true) => s.status = Status::Paused,
            (Status::Paused, false) => s.status = Status::Running,
            (st, _) => {
                return Err(Illegal(format!(
                    "cannot {} {}: it is {st:?}",
                    if paused { "pause" } else { "resume" },
                    self.name()
                )))
            }
        }
        Ok(())
    }

    /// Any live state → stopped. Wakes every Wait.
    pub fn set_exited(&self, exit: ExitInfo) {
        {
            let mut s = self.lock();
            if matches!(s.status, Status::Stopped | Status::Deleted) {
                return;
            }
            s.status = Status::Stopped;
            s.exit = Some(exit);
        }
        self.exited.send_replace(Some(exit));
    }

    /// stopped|created → deleted. Returns the exit (if any) for the Delete response.
    pub fn set_deleted(&self) -> Result<Option<ExitInfo>, Illegal> {
        let mut s = self.lock();
        match s.status {
            Status::Stopped if !s.starting => {
                s.status = Status::Deleted;
                Ok(s.exit)
            }
            Status::Created if !s.starting => {
                s.status = Status::Deleted;
                drop(s);
                // Never ran: release waiters (see `start_failed`); Delete itself still reports
                // no exit.
                self.exited.send_replace(Some(ExitInfo::never_ran()));
                Ok(None)
            }
            st => Err(Illegal(format!(
                "cannot delete {}: it is {st:?}",
                self.name()
            ))),
        }
    }

    /// Waits until the process has exited (and its exit was published), or is known never to
    /// run ([`NEVER_RAN`]).
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as the process; unreachable in practice.
                return ExitInfo {
                    status: 255,
                    at: SystemTime::now(),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Process {
        Process::new("c1", "", StdioSpec::default(), ProcessStdio::default())
    }

    #[test]
    fn legal_path_and_illegal_moves() {
        let p = p();
        assert!(p.set_paused(true).is_err(), "created cannot pause");
        p.begin_start().expect("start");
        assert!(p.begin_start().is_err(), "double start refused");
        assert!(p.set_deleted().is_err(), "cannot delete while starting");
        p.end_start(true);
        assert_eq!(p.status(), Status::Running);
        p.start_done();
        assert!(p.begin_start().is_err(), "running cannot start");
        assert!(p.set_deleted().is_err(), "running cannot be deleted");
        p.set_paused(true).expect("pause");
        assert!(p.set_paused(true).is_err());
        p.set_paused(false).expect("resume");
        p.set_exited(ExitInfo {
            status: 7,
            at: SystemTime::now(),
        });
        assert_eq!(p.status(), Status::Stopped);
        assert!(p.set_paused(true).is_err());
        assert_eq!(p.set_deleted().expect("delete").map(|e| e.status), Some(7));
        assert!(p.set_deleted().is_err(), "double delete refused");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn wait_returns_exit() {
        let p = std::sync::Arc::new(p());
        let q = p.clone();
        let waiter = tokio::spawn(async move { q.wait().await.status });
        tokio::task::yield_now().await;
        p.set_exited(ExitInfo {
            status: 143,
            at: SystemTime::now(),
        });
        assert_eq!(waiter.await.expect("join"), 143);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_start_stops_the_process_and_answers_waiters() {
        let p = std::sync::Arc::new(p());
        let q = p.clone();
        let waiter = tokio::spawn(async move { q.wait().await.status });
        tokio::task::yield_now().await;
        p.begin_start().expect("start");
        p.start_failed();
        assert_eq!(waiter.await.expect("join"), NEVER_RAN);
        assert_eq!(p.status(), Status::Stopped);
        assert!(p.begin_start().is_err(), "no second start");
        assert_eq!(
            p.set_deleted().expect("delete").map(|e| e.status),
            Some(NEVER_RAN)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_start_stays_created_and_answers_waiters() {
        let p = std::sync::Arc::new(p());
        let q = p.clone();
        let waiter = tokio::spawn(async move { q.wait().await.status });
        tokio::task::yield_now().await;
        p.begin_start().expect("start");
        p.start_refused();
        assert_eq!(waiter.await.expect("join"), NEVER_RAN);
        assert_eq!(p.status(), Status::Created);
        assert!(p.exit().is_none(), "no exit for State to report");
        p.begin_start().expect("a later start may try again");
        p.start_refused();
        assert!(p.set_deleted().expect("delete").is_none());
    }

    #[test]
    fn an_exit_seen_before_start_refuses_the_start() {
        let p = p();
        assert!(!p.has_exited());
        p.note_reaped();
        assert!(p.has_exited());
        assert!(p.begin_start().is_err(), "a dead init cannot start");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn start_settled_waits_for_the_start_phase() {
        let p = std::sync::Arc::new(p());
        p.start_settled().await; // no phase: at once
        p.begin_start().expect("start");
        let q = p.clone();
        let settled = tokio::spawn(async move { q.start_settled().await });
        tokio::task::yield_now().await;
        assert!(!settled.is_finished(), "held while starting");
        p.end_start(true);
        tokio::task::yield_now().await;
        assert!(
            !settled.is_finished(),
            "held until the start event is queued"
        );
        p.start_done();
        settled.await.expect("join");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn deleting_a_created_process_answers_waiters() {
        let p = std::sync::Arc::new(p());
        let q = p.clone();
        let waiter = tokio::spawn(async move { q.wait().await.status });
        tokio::task::yield_now().await;
        assert!(
            p.set_deleted().expect("delete").is_none(),
            "no exit to report"
        );
        assert_eq!(waiter.await.expect("join"), NEVER_RAN);
        // A later Wait (e.g. a retried RPC) is answered at once too.
        assert_eq!(p.wait().await.status, NEVER_RAN);
    }
}
