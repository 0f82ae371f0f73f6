//! The ttrpc server: one Task implementation under both service names containerd may dial,
//! and the Sandbox service (containerd 2.x `sandboxer = "shim"`) beside it.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use containerd_shim_protos::sandbox_async::create_sandbox;
use containerd_shim_protos::shim_async::create_task;
use ttrpc::asynchronous::{MethodHandler, Server, Service, TtrpcContext};
use ttrpc::{Request, Response};

use crate::sandbox::task_bridge::{self, Bridge};
use crate::sandbox::SandboxService;
use crate::service::Shim;

pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// The service map: the Task API registered as v2 and v3 (its Connect/State/Pids also answer
/// for the sandbox id, see `sandbox::task_bridge`), and the Sandbox API.
pub fn services(
    shim: Arc<Shim>,
    sandboxes: Arc<SandboxService>,
    exit: Arc<Exit>,
) -> HashMap<String, Service> {
    // The generated code registers the v3 name; the v2 API is the same messages and methods.
    let mut map = create_task(shim.clone());
    let mut v2 = create_task(shim);
    if let Some(svc) = v2.remove(TASK_V3) {
        map.insert(TASK_V2.to_string(), svc);
    }
    for svc in map.values_mut() {
        for name in task_bridge::METHODS {
            if let Some(inner) = svc.methods.remove(name) {
                let bridge = Bridge {
                    inner,
                    sandboxes: sandboxes.clone(),
                };
                svc.methods.insert(name.to_string(), Box::new(bridge));
            }
        }
    }
    map.extend(create_sandbox(sandboxes));
    for svc in map.values_mut() {
        let methods = std::mem::take(&mut svc.methods);
        svc.methods = methods
            .into_iter()
            .map(|(name, handler)| {
                let handler: Box<dyn MethodHandler + Send + Sync> =
                    if name == "Wait" || name == "WaitSandbox" {
                        handler // only waits: safe to drop when the caller gives up
                    } else {
                        Box::new(RunToCompletion {
                            inner: Arc::from(handler),
                            exit: exit.clone(),
                            // The requests that decide the exit wait for the others.
                            counted: name != "Shutdown" && name != "ShutdownSandbox",
                        })
                    };
                (name, handler)
            })
            .collect();
    }
    map
}

/// Runs a request to its end even when the caller stops waiting.
///
/// ttrpc drops the handler's future when the request's deadline (`timeout_nano`, from the
/// caller's context) passes. Dropped halfway, a Create would leave its ID reserved forever, a
/// mounted rootfs and a runtime container nobody tracks; a Start would leave the process
/// "starting" for good (neither startable nor deletable). So every handler but Wait runs in its
/// own task: the caller still gets DEADLINE_EXCEEDED, and the shim's state stays whole — the
/// container exists or it does not, and the follow-up Delete works. A handler that panics
/// becomes an INTERNAL error instead of a request that is never answered.
///
/// It also admits the request through [`Exit`] (see there): counted while it runs, held while
/// the shim decides whether to exit, refused once it exits.
struct RunToCompletion {
    inner: Arc<dyn MethodHandler + Send + Sync>,
    exit: Arc<Exit>,
    /// False for Shutdown and ShutdownSandbox, which decide the exit (see [`Exit::try_exit`]).
    counted: bool,
}

#[async_trait::async_trait]
impl MethodHandler for RunToCompletion {
    async fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        // One admission, held by this future and by the task below: the request counts as in
        // flight until both are done — the work (a Create past its caller's deadline still
        // runs) and the answer (this future ends, and ttrpc queues the reply in the same poll).
        let admission = match self.counted {
            true => match self.exit.admit().await {
                Some(admission) => Some(Arc::new(admission)),
                None => {
                    return Ok(status_response(
                        ttrpc::Code::UNAVAILABLE,
                        "shim is shutting down",
                    ))
                }
            },
            false => None,
        };
        let held = admission.clone();
        let inner = self.inner.clone();
        let started = std::time::Instant::now();
        let method = log::log_enabled!(log::Level::Debug).then(|| req.method.clone());
        let joined = tokio::spawn(async move {
            let _held = held;
            inner.handler(ctx, req).await
        })
        .await;
        if let Some(method) = method {
            log::debug!("{method} took {:?}", started.elapsed());
        }
        let result = match joined {
            Ok(result) => result,
            Err(e) => Ok(status_response(
                ttrpc::Code::INTERNAL,
                &format!("request handler failed: {e}"),
            )),
        };
        drop(admission);
        result
    }
}

/// An error answer. A `MethodHandler` answers errors inside the Response (as the generated
/// handlers do): ttrpc turns an `Err` of the handler into UNKNOWN.
fn status_response(code: ttrpc::Code, message: &str) -> Response {
    ttrpc::proto::ResponseInit::init_status(ttrpc::get_status(code, message))
}

/// How long an exiting shim waits for the requests in flight to be answered.
const DRAIN_BOUND: Duration = Duration::from_secs(10);

/// The daemon's exit, and the requests that must be answered before it.
///
/// Invariant: **a request the shim accepted gets an answer.** containerd closes its connection
/// as soon as Shutdown is answered (`shim.Delete` after `waitShutdown`), failing every call
/// still pending on it with `ttrpc: closed`. CRI sends the pod's Kill and, on the TaskExit it
/// causes, Delete and Shutdown; the pause container dies the moment `runc kill` signals it, so
/// that Kill is often still running when Shutdown arrives. containerd's Go shim serializes
/// Delete behind the Kill (the init process's lock); Tender does not, so it holds the
/// Shutdown's answer instead:
/// - Shutdown (and ShutdownSandbox) of an idle shim closes the gate, waits (bounded by
///   [`DRAIN_BOUND`]) until no other request is in flight, checks again that the shim is idle
///   (a Create admitted before the gate closed may have added a container: then the gate opens
///   again and the shim stays), and only then decides to exit and answers. A request's count
///   ends in the same poll in which ttrpc queues its reply, and replies of one connection are
///   written in queue order, so on containerd's connection the Kill's reply precedes the
///   Shutdown's.
/// - A request that arrives while the gate is closed waits for the decision; once the shim
///   exits it is refused with UNAVAILABLE ("shim is shutting down") instead of being started
///   and lost.
/// - The daemon then stops the server, which waits until every connection's handlers have
///   queued their replies and its writer has written them (ttrpc's `Server::shutdown`: each
///   connection's reader waits for its handlers, the server for readers and writers), so the
///   answers reach the socket before the runtime is dropped.
///
/// Wait and WaitSandbox are neither counted nor held: they only wait, and an idle shim has
/// nothing left to wait for.
pub struct Exit {
    state: Mutex<Gate>,
    /// Woken on every change of `state`.
    changed: tokio::sync::Notify,
    /// One decision at a time.
    deciding: tokio::sync::Mutex<()>,
    /// Whether the shim holds nothing any more (no container, no sandbox); see
    /// [`Exit::set_idle_check`]. Unset: never idle.
    idle: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// Deciding: new requests wait.
    Closing,
    /// Decided: new requests are refused.
    Exiting,
}

struct Gate {
    phase: Phase,
    in_flight: usize,
}

/// A request counted as in flight; dropped when it is answered.
pub struct Admission(Arc<Exit>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.update(|g| g.in_flight -= 1);
    }
}

impl Exit {
    pub fn new() -> Arc<Exit> {
        Arc::new(Exit {
            state: Mutex::new(Gate {
                phase: Phase::Open,
                in_flight: 0,
            }),
            changed: tokio::sync::Notify::new(),
            deciding: tokio::sync::Mutex::new(()),
            idle: OnceLock::new(),
        })
    }

    /// Sets what "idle" means (set once, by the daemon).
    pub fn set_idle_check(&self, idle: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.idle.set(Box::new(idle));
    }

    fn is_idle(&self) -> bool {
        self.idle.get().is_some_and(|idle| idle())
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        crate::lock(&self.state)
    }

    fn update<T>(&self, f: impl FnOnce(&mut Gate) -> T) -> T {
        let out = f(&mut self.gate());
        self.changed.notify_waiters();
        out
    }

    /// Waits until `ready` holds for the gate, then returns what it gave.
    async fn wait_for<T>(&self, mut ready: impl FnMut(&mut Gate) -> Option<T>) -> T {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check: a change after it is not missed.
            changed.as_mut().enable();
            if let Some(out) = ready(&mut self.gate()) {
                return out;
            }
            changed.await;
        }
    }

    /// Admits a request: counted until the returned value is dropped. Waits while an exit is
    /// being decided; refused (None) once the shim exits.
    pub async fn admit(self: &Arc<Self>) -> Option<Admission> {
        let admitted = self
            .wait_for(|g| match g.phase {
                Phase::Open => {
                    g.in_flight += 1;
                    Some(true)
                }
                Phase::Closing => None,
                Phase::Exiting => Some(false),
            })
            .await;
        admitted.then(|| Admission(self.clone()))
    }

    /// Exits if the shim is idle, once every other request is answered (see [`Exit`]).
    /// Returns whether the shim exits.
    pub async fn try_exit(&self) -> bool {
        let _one = self.deciding.lock().await;
        let phase = self.gate().phase;
        if phase == Phase::Exiting {
            return true;
        }
        if !self.is_idle() {
            return false;
        }
        self.update(|g| g.phase = Phase::Closing);
        let drained = tokio::time::timeout(
            DRAIN_BOUND,
            self.wait_for(|g| (g.in_flight == 0).then_some(())),
        )
        .await;
        if drained.is_err() {
            let n = self.gate().in_flight;
            log::warn!("exiting with {n} request(s) still in flight after {DRAIN_BOUND:?}");
        }
        let exits = self.is_idle();
        self.update(|g| {
            g.phase = match exits {
                true => Phase::Exiting,
                false => Phase::Open,
            }
        });
        exits
    }

    /// Returns once the shim has decided to exit.
    pub async fn exiting(&self) {
        self.wait_for(|g| (g.phase == Phase::Exiting).then_some(()))
            .await
    }
}

pub fn build(
    shim: Arc<Shim>,
    sandboxes: Arc<SandboxService>,
    exit: Arc<Exit>,
    listener_fd: RawFd,
) -> Result<Server, String> {
    // SAFETY: the start action handed us this listening socket as fd 3 and nothing else in
    // this process uses it.
    let server = unsafe { Server::new().add_unix_listener(listener_fd) }
        .map_err(|e| format!("listener fd {listener_fd}: {e}"))?;
    Ok(server.register_service(services(shim, sandboxes, exit)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn exit_with(idle: bool) -> (Arc<Exit>, Arc<AtomicBool>) {
        let exit = Exit::new();
        let flag = Arc::new(AtomicBool::new(idle));
        let f = flag.clone();
        exit.set_idle_check(move || f.load(Ordering::SeqCst));
        (exit, flag)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn exit_waits_for_requests_in_flight_then_refuses_new_ones() {
        let (exit, _) = exit_with(true);
        let kill = exit.admit().await.expect("admitted");
        let decider = tokio::spawn({
            let exit = exit.clone();
            async move { exit.try_exit().await }
        });
        // A request arriving while the exit is being decided waits for the decision.
        let late = tokio::spawn({
            let exit = exit.clone();
            async move { exit.admit().await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!decider.is_finished(), "decided with a request in flight");
        assert!(
            !late.is_finished(),
            "admitted while the exit was being decided"
        );
        drop(kill);
        assert!(decider.await.unwrap(), "an idle shim exits");
        assert!(
            !late.await.unwrap(),
            "admitted after the shim decided to exit"
        );
        exit.exiting().await;
        assert!(exit.try_exit().await, "a second Shutdown agrees");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_shim_that_is_not_idle_after_draining_stays() {
        let (exit, idle) = exit_with(true);
        let create = exit.admit().await.expect("admitted");
        let decider = tokio::spawn({
            let exit = exit.clone();
            async move { exit.try_exit().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The Create admitted before the gate closed adds a container, then is answered.
        idle.store(false, Ordering::SeqCst);
        drop(create);
        assert!(!decider.await.unwrap(), "exited with a container");
        assert!(exit.admit().await.is_some(), "the gate stays closed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_an_idle_check_the_shim_never_exits() {
        let exit = Exit::new();
        assert!(!exit.try_exit().await);
        assert!(exit.admit().await.is_some());
    }
}
