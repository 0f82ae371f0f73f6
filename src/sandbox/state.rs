//! One sandbox's life, as an explicit state machine:
//!
//! ```text
//! Created ──start──▶ Starting ──holder ready──▶ Ready ──holder exit──▶ Stopped
//!    │                  │ holder failed                                  ▲
//!    │                  └──────────▶ Created                             │
//!    └──────────────────── stop before start ────────────────────────────┘
//! ```
//!
//! Invariants: `Stopped` is final and entered exactly once, which is the only place the pod's
//! exit is published (to every WaitSandbox); a `Ready` sandbox always has a live, unreaped
//! holder pid (its exit is what moves it on). The lock guards only these few words: no I/O,
//! no await and no runtime call happen under it.

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::lock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodExit {
    pub status: u32,
    pub at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Starting,
    Ready { pid: i32 },
    Stopped { pid: i32, exit: PodExit },
}

pub struct Machine {
    phase: Mutex<Phase>,
    exited: watch::Sender<Option<PodExit>>,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            phase: Mutex::new(Phase::Created),
            exited: watch::channel(None).0,
        }
    }
}

impl Machine {
    pub fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    /// Created → Starting.
    pub fn begin_start(&self) -> Result<(), Phase> {
        let mut p = lock(&self.phase);
        match *p {
            Phase::Created => {
                *p = Phase::Starting;
                Ok(())
            }
            other => Err(other),
        }
    }

    /// Starting → Ready (the holder reported ready) or back to Created (it failed).
    pub fn end_start(&self, pid: Option<i32>) {
        let mut p = lock(&self.phase);
        if *p == Phase::Starting {
            *p = match pid {
                Some(pid) => Phase::Ready { pid },
                None => Phase::Created,
            };
        }
    }

    /// Ready → Stopped when the holder `pid` exited; Created → Stopped when the sandbox is
    /// stopped before it ever started (pid 0). Returns false when it was already stopped (or
    /// not in a phase that can stop), so the exit is published once.
    pub fn stop(&self, pid: i32, exit: PodExit) -> bool {
        {
            let mut p = lock(&self.phase);
            match *p {
                Phase::Ready { pid: running } if running == pid => {}
                Phase::Created if pid == 0 => {}
                _ => return false,
            }
            *p = Phase::Stopped { pid, exit };
        }
        self.exited.send_replace(Some(exit));
        true
    }

    /// The pod's exit, once there is one.
    pub async fn wait(&self) -> PodExit {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`: not reached while we are borrowed.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_checked_and_the_exit_is_published_once() {
        let m = Machine::default();
        let exit = PodExit {
            status: 137,
            at: SystemTime::now(),
        };
        assert!(!m.stop(5, exit), "not started");
        assert!(m.begin_start().is_ok());
        assert!(m.begin_start().is_err(), "start twice");
        m.end_start(None);
        assert_eq!(m.phase(), Phase::Created);
        assert!(m.begin_start().is_ok());
        m.end_start(Some(5));
        assert_eq!(m.phase(), Phase::Ready { pid: 5 });
        assert!(!m.stop(6, exit), "another pid");
        assert!(m.stop(5, exit));
        assert!(!m.stop(5, exit), "once");
        assert_eq!(*m.exited.subscribe().borrow(), Some(exit));
    }
}
