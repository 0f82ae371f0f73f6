//! A container: its bundle, rootfs, OCI runtime, init process and execs — and the exit-ordering
//! rules between them.
//!
//! Exit-ordering invariants (enforced here, relied on by containerd and CRI):
//! 1. A process's TaskExit is published after its TaskStart / TaskExecStarted: the exit watcher
//!    for a process is spawned only after the start event was queued ([`Container::start`],
//!    [`Container::start_exec`]), and the event queue is FIFO.
//! 2. A container's init TaskExit is published after the TaskExit of every exec that was
//!    started: the init watcher waits for `running_execs` to drop to zero first.
//! 3. Wait returns only after the process's TaskExit was queued, so a Delete (and its
//!    TaskDelete) that follows a Wait can never overtake the exit event.
//! 4. TaskOOM of an OOM-killed init precedes its TaskExit: the init watcher re-reads the
//!    cgroup's OOM-kill counter and publishes a pending TaskOOM before the exit, whichever of
//!    the two notifications (eventfd/inotify vs. SIGCHLD) the runtime happened to wake first.
//! 5. Output copied before the exit is reported: the watcher waits until stdout/stderr are in
//!    their FIFOs and taken by the readers (no reader: not at all), [`EXIT_REPORT_BOUND`] after
//!    the exit at the latest, before publishing.
//! 6. An init's exit is handled even when it was never started: its watcher runs from Create on
//!    (see [`Container::watch_created_init`]). It reports nothing while a start phase runs
//!    (invariant 1), and nothing for an init deleted while created.
//! 7. A container without a PID namespace of its own (the host's, or one joined by path) leaves
//!    nothing running once its init has exited: the watcher has the runtime kill every process
//!    left in the container (`kill --all`) before it reports the exit. No lock is held across
//!    that call, and the reaper goes on reaping while it runs (the watcher is its own task).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use containerd_shim_protos::events::task::{TaskExecStarted, TaskExit, TaskOOM, TaskStart};
use containerd_shim_protos::topics;
use tokio::sync::{oneshot, watch};

use crate::cgroups::ProcessCgroup;
use crate::events::{timestamp, Publisher};
use crate::process::{ExitInfo, Process};
use crate::reaper::{Exit, Reaper};
use crate::runtime::{CreateOpts, ExecOpts, RestoreOpts, Runtime};
use crate::stdio::{self, LoggerEnv, StdioSpec, EXIT_REPORT_BOUND};

pub struct Container {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
    pub init: Arc<Process>,
    pub rootfs_mounted: bool,
    pub io_owner: Option<(u32, u32)>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    running_execs: watch::Sender<usize>,
    reaper: Arc<Reaper>,
    publisher: Publisher,
    /// The init's cgroup (stats, OOM); unset when the runtime put it nowhere we can read.
    pub cgroup: OnceLock<ProcessCgroup>,
    /// For a container created from a checkpoint: what `start` needs to run `restore`.
    restore: Mutex<Option<RestorePlan>>,
    /// OOM kills already reported with a TaskOOM.
    oom_reported: Mutex<u64>,
    /// Set once [`Container::ensure_cgroup`] has looked the init's cgroup up.
    cgroup_looked_up: tokio::sync::OnceCell<()>,
}

/// How long an init's watcher waits for the processes it killed with `kill --all` to be gone.
const KILL_ALL_BOUND: std::time::Duration = std::time::Duration::from_secs(1);

/// Source of [`Process::instance`] for execs.
static EXEC_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// Failure of a container operation, classified for the RPC layer.
#[derive(Debug)]
pub enum OpError {
    NotFound(String),
    AlreadyExists(String),
    Precondition(String),
    Invalid(String),
    Internal(String),
}

impl From<crate::process::Illegal> for OpError {
    fn from(e: crate::process::Illegal) -> Self {
        OpError::Precondition(e.0)
    }
}

pub struct NewContainer {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
    pub stdio: StdioSpec,
    pub rootfs_mounted: bool,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub io_owner: Option<(u32, u32)>,
    /// Restore from this checkpoint image (with this CRIU work dir) instead of creating.
    pub checkpoint: Option<(PathBuf, Option<PathBuf>)>,
}

/// A restore is create+start in one runtime call, so it runs at Start; Create only prepares.
struct RestorePlan {
    prepared: stdio::Prepared,
    image: PathBuf,
    work: Option<PathBuf>,
    no_pivot: bool,
}

fn read_pid(path: &Path) -> Result<i32, OpError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| OpError::Internal(format!("read pid file {}: {e}", path.display())))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| OpError::Internal(format!("bad pid file {}: {text:?}", path.display())))
}

impl Container {
    fn locked_execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Process>>> {
        crate::lock(&self.execs)
    }

    /// Runs the runtime's `create` for the init process. Nothing is published here.
    pub async fn create(
        new: NewContainer,
        reaper: Arc<Reaper>,
        publisher: Publisher,
        console_dir: &Path,
    ) -> Result<Arc<Container>, OpError> {
        let mut prepared = stdio::prepare(
            &new.stdio,
            &reaper,
            LoggerEnv {
                namespace: &new.namespace,
                id: &new.id,
            },
            console_dir,
            new.io_owner,
        )
        .await
        .map_err(|e| OpError::Invalid(format!("stdio: {e}")))?;
        let pid_file = new.bundle.join("init.pid");
        let _ = std::fs::remove_file(&pid_file);
        if let Some((image, work)) = new.checkpoint.clone() {
            let init = Arc::new(Process::new(
                &new.id,
                "",
                new.stdio.clone(),
                Default::default(),
            ));
            let plan = RestorePlan {
                prepared,
                image,
                work,
                no_pivot: new.no_pivot,
            };
            return Ok(Self::assemble(new, init, reaper, publisher, Some(plan)));
        }
        let not_before = Instant::now();
        let (runtime, id, bundle, pid_path) = (&new.runtime, &new.id, &new.bundle, &pid_file);
        let (no_pivot, no_new_keyring) = (new.no_pivot, new.no_new_keyring);
        let (created, attached) = prepared
            .launch(|io, console| async move {
                let opts = CreateOpts {
                    bundle,
                    pid_file: pid_path,
                    console_socket: console.as_deref(),
                    no_pivot,
                    no_new_keyring,
                    io,
                };
                runtime.create(id, opts).await
            })
            .await;
        if let Err(e) = created {
            return Err(OpError::Internal(format!(
                "create container {}: {e}",
                new.id
            )));
        }
        let cleanup_err = |container_id: &str, runtime: &Runtime, e: OpError| {
            let runtime = runtime.clone();
            let id = container_id.to_string();
            tokio::spawn(async move {
                let _ = runtime.delete(&id, true).await;
            });
            e
        };
        if let Err(e) = prepared.start_outputs() {
            return Err(cleanup_err(
                &new.id,
                &new.runtime,
                OpError::Internal(format!("stdio: {e}")),
            ));
        }
        if let Err(e) = attached {
            return Err(cleanup_err(
                &new.id,
                &new.runtime,
                OpError::Internal(format!("terminal: {e}")),
            ));
        }
        let pid = match read_pid(&pid_file) {
            Ok(pid) => pid,
            Err(e) => return Err(cleanup_err(&new.id, &new.runtime, e)),
        };
        let exit_rx = reaper.subscribe(pid, not_before);
        let init = Arc::new(Process::new(&new.id, "", new.stdio.clone(), prepared.stdio));
        init.set_created(pid, exit_rx);
        let container = Self::assemble(new, init, reaper, publisher, None);
        container.watch_created_init();
        Ok(container)
    }

    fn assemble(
        new: NewContainer,
        init: Arc<Process>,
        reaper: Arc<Reaper>,
        publisher: Publisher,
        restore: Option<RestorePlan>,
    ) -> Arc<Container> {
        Arc::new(Container {
            id: new.id,
            namespace: new.namespace,
            bundle: new.bundle,
            runtime: new.runtime,
            init,
            rootfs_mounted: new.rootfs_mounted,
            io_owner: new.io_owner,
            execs: Mutex::new(HashMap::new()),
            running_execs: watch::channel(0).0,
            reaper,
            publisher,
            cgroup: OnceLock::new(),
            restore: Mutex::new(restore),
            oom_reported: Mutex::new(0),
            cgroup_looked_up: tokio::sync::OnceCell::new(),
        })
    }

    /// Looks up the init's cgroup (for Stats and TaskOOM) and starts the OOM watch, once the
    /// init has a pid; later and concurrent callers wait for the first. The lookup reads
    /// `/proc/<pid>/cgroup` and the whole mount table, so Create leaves it to a task that runs
    /// after its reply; Start, Stats and the restore path call this before they need it.
    pub async fn ensure_cgroup(self: &Arc<Self>) {
        let _ = self
            .cgroup_looked_up
            .get_or_try_init(|| async {
                let pid = self.init.pid();
                if pid <= 0 {
                    return Err(()); // not created yet (a restore creates it in Start)
                }
                if let Some(cg) = cgroup_of(&self.id, pid) {
                    // OOM kills before this point are not this container's to report.
                    *crate::lock(&self.oom_reported) = cg.oom_kills().unwrap_or(0);
                    let _ = self.cgroup.set(cg);
                    self.watch_oom();
                }
                Ok(())
            })
            .await;
    }

    /// Publishes TaskOOM for OOM kills not reported yet. `notified` says an OOM notification
    /// arrived (then an event goes out even where the kill counter cannot be read).
    fn report_oom(&self, notified: bool) {
        let kills = self.cgroup.get().and_then(|c| c.oom_kills());
        let mut reported = crate::lock(&self.oom_reported);
        let publish = match kills {
            Some(k) if k > *reported => {
                *reported = k;
                true
            }
            Some(_) => false,
            None => notified,
        };
        drop(reported);
        if publish {
            let mut ev = TaskOOM::new();
            ev.container_id = self.id.clone();
            self.publisher.publish(topics::TASK_OOM_EVENT_TOPIC, &ev);
        }
    }

    /// Watches the container's cgroup for OOM kills until the cgroup goes away.
    fn watch_oom(self: &Arc<Self>) {
        let Some(cgroup) = self.cgroup.get() else {
            return;
        };
        let mut rx = match cgroup.watch_oom() {
            Ok(rx) => rx,
            Err(e) => {
                log::warn!("no OOM notifications for {}: {e}", self.id);
                return;
            }
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                match weak.upgrade() {
                    Some(c) => c.report_oom(true),
                    None => return,
                }
            }
        });
    }

    /// Starts the init process; publishes TaskStart. Its exit is watched from Create on (a
    /// restored init's from here).
    pub async fn start(self: &Arc<Self>) -> Result<i32, OpError> {
        // The OOM watch must be in place before the init runs (a no-op for a restore, whose
        // init does not exist yet: run_restore does it).
        self.ensure_cgroup().await;
        self.init.begin_start()?;
        let plan = crate::lock(&self.restore).take();
        let result = match plan {
            Some(plan) => self.run_restore(plan).await,
            None => self
                .runtime
                .start(&self.id)
                .await
                .map_err(|e| OpError::Internal(format!("start container {}: {e}", self.id))),
        };
        let exit_rx = self.init.end_start(result.is_ok());
        if let Err(e) = result {
            // Still created: a watcher holding an exit reports it now (invariant 6).
            self.init.start_done();
            return Err(e);
        }
        let pid = self.init.pid();
        let mut ev = TaskStart::new();
        ev.container_id = self.id.clone();
        ev.pid = pid as u32;
        self.publisher.publish(topics::TASK_START_EVENT_TOPIC, &ev);
        // Invariant 1: the exit may go out from now on.
        self.init.start_done();
        if let Some(rx) = exit_rx {
            tokio::spawn(self.clone().watch_init(rx));
        }
        Ok(pid)
    }

    /// `restore --detach`: creates and starts the init from the checkpoint image.
    async fn run_restore(self: &Arc<Self>, mut plan: RestorePlan) -> Result<(), OpError> {
        let pid_file = self.bundle.join("init.pid");
        let not_before = Instant::now();
        let (image, work, no_pivot) = (&plan.image, plan.work.as_deref(), plan.no_pivot);
        let pid_path = &pid_file;
        let (restored, attached) = plan
            .prepared
            .launch(|io, console| async move {
                let opts = RestoreOpts {
                    bundle: &self.bundle,
                    pid_file: pid_path,
                    image_path: image,
                    work_path: work,
                    console_socket: console.as_deref(),
                    no_pivot,
                    io,
                };
                self.runtime.restore(&self.id, opts).await
            })
            .await;
        restored.map_err(|e| OpError::Internal(format!("restore container {}: {e}", self.id)))?;
        plan.prepared
            .start_outputs()
            .map_err(|e| OpError::Internal(format!("stdio: {e}")))?;
        attached.map_err(|e| OpError::Internal(format!("terminal: {e}")))?;
        let pid = read_pid(&pid_file)?;
        self.init
            .stdio
            .adopt(std::mem::take(&mut plan.prepared.stdio));
        self.init
            .set_created(pid, self.reaper.subscribe(pid, not_before));
        self.ensure_cgroup().await;
        Ok(())
    }

    /// Watches a created init's exit from now on (invariant 6).
    fn watch_created_init(self: &Arc<Self>) {
        if let Some(rx) = self.init.take_exit_rx() {
            tokio::spawn(self.clone().watch_init(rx));
        }
    }

    async fn watch_init(self: Arc<Self>, rx: oneshot::Receiver<Exit>) {
        let exit = match rx.await {
            Ok(exit) => ExitInfo {
                status: exit.status,
                at: exit.at,
            },
            // Deleted while created: it gave up its subscription, nothing to report.
            Err(_) if self.init.status() == crate::process::Status::Deleted => return,
            Err(_) => lost_exit(self.init.pid()),
        };
        self.init.note_reaped();
        // Invariant 7: whatever the init left behind in a shared PID namespace dies first.
        if kills_all_on_exit(&self.bundle) {
            self.kill_all().await;
        }
        // Invariant 1: no TaskExit while the start event may still be on its way.
        self.init.start_settled().await;
        // Invariant 4: an OOM kill that caused this exit is reported first.
        self.report_oom(false);
        self.init.stdio.finish_output(EXIT_REPORT_BOUND).await;
        // Invariant 2: every started exec's exit goes out before the init's.
        let mut execs = self.running_execs.subscribe();
        let _ = execs.wait_for(|n| *n == 0).await;
        self.publish_exit(&self.init, exit);
    }

    /// Invariant 7: SIGKILL to every process left in the container, then waits (bounded by
    /// [`KILL_ALL_BOUND`]) until its cgroup has none left: a signal is only queued when the
    /// runtime returns, and the exit must not be reported while one is still dying.
    async fn kill_all(&self) {
        if let Err(e) = self
            .runtime
            .kill(&self.id, libc::SIGKILL as u32, true)
            .await
        {
            log::warn!("kill the processes left in {}: {e}", self.id);
            return;
        }
        let Some(cgroup) = self.cgroup.get() else {
            return;
        };
        let deadline = Instant::now() + KILL_ALL_BOUND;
        while cgroup.is_empty() == Some(false) {
            if Instant::now() >= deadline {
                log::warn!("processes of {} still alive after SIGKILL", self.id);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    fn publish_exit(&self, process: &Process, exit: ExitInfo) {
        if process.status() == crate::process::Status::Deleted {
            return; // deleted while created (invariant 6): no exit to report after TaskDelete
        }
        let mut ev = TaskExit::new();
        ev.container_id = self.id.clone();
        ev.id = if process.is_init() {
            self.id.clone()
        } else {
            process.exec_id.clone()
        };
        ev.pid = process.pid() as u32;
        ev.exit_status = exit.status;
        ev.exited_at = Some(timestamp(exit.at)).into();
        self.publisher.publish(topics::TASK_EXIT_EVENT_TOPIC, &ev);
        // Invariant 3: waiters wake only after the event is queued.
        process.set_exited(exit);
    }

    pub fn exec(&self, exec_id: &str) -> Option<Arc<Process>> {
        self.locked_execs().get(exec_id).cloned()
    }

    pub fn exec_ids(&self) -> Vec<(i32, String)> {
        self.locked_execs()
            .values()
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect()
    }

    /// Registers a new exec (not started yet). `spec_json` is the exec's process spec; its
    /// `terminal` is set to the request's (`stdio.terminal`), which decides, as in containerd's
    /// runc shim: the runtime refuses a console socket for a process spec without a terminal.
    pub fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioSpec,
        spec_json: &[u8],
    ) -> Result<(), OpError> {
        use crate::process::Status;
        let spec = exec_spec_with_terminal(spec_json, stdio.terminal)?;
        if matches!(self.init.status(), Status::Stopped | Status::Deleted) {
            return Err(OpError::Precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        let mut execs = self.locked_execs();
        if execs.contains_key(exec_id) {
            return Err(OpError::AlreadyExists(format!(
                "exec {exec_id} already exists in container {}",
                self.id
            )));
        }
        let mut process = Process::new(&self.id, exec_id, stdio, Default::default());
        process.instance = EXEC_INSTANCE.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.exec_spec_path(&process);
        std::fs::write(&path, &spec)
            .map_err(|e| OpError::Internal(format!("write {}: {e}", path.display())))?;
        execs.insert(exec_id.to_string(), Arc::new(process));
        Ok(())
    }

    fn exec_spec_path(&self, exec: &Process) -> PathBuf {
        let (id, n) = (&exec.exec_id, exec.instance);
        self.bundle.join(format!(".exec-{id}-{n}.json"))
    }

    fn exec_pid_path(&self, exec: &Process) -> PathBuf {
        let (id, n) = (&exec.exec_id, exec.instance);
        self.bundle.join(format!(".exec-{id}-{n}.pid"))
    }

    /// An exec's files stay until its Delete and go after that reply. Unlinking the pid file
    /// runc has just written was measured at 0.3–0.5 ms on this project's ext4 `/run`; even
    /// after Start's reply it delayed the State that containerd sends right behind Start,
    /// while after Delete nothing is waiting. The names carry the exec's instance, so a new
    /// exec under the same ID never loses its files to this.
    fn remove_exec_files_soon(&self, exec: &Process) {
        crate::remove_file_soon(self.exec_spec_path(exec));
        crate::remove_file_soon(self.exec_pid_path(exec));
    }

    /// Starts an exec; publishes TaskExecStarted, then watches for its exit.
    pub async fn start_exec(self: &Arc<Self>, process: &Arc<Process>) -> Result<i32, OpError> {
        process.begin_start()?;
        if self.init.has_exited() {
            process.start_refused();
            return Err(OpError::Precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        self.running_execs.send_modify(|n| *n += 1);
        let result = self.run_exec(process).await;
        if result.is_err() {
            // The runtime refuses an exec into a container whose init died meanwhile: the exec
            // is as unstarted as before. Any other failure leaves it stopped for good.
            if self.init.has_exited() {
                process.start_refused();
            } else {
                process.start_failed();
            }
            self.running_execs.send_modify(|n| *n = n.saturating_sub(1));
        }
        result
    }

    async fn run_exec(self: &Arc<Self>, process: &Arc<Process>) -> Result<i32, OpError> {
        let mut prepared = stdio::prepare(
            &process.stdio_spec,
            &self.reaper,
            LoggerEnv {
                namespace: &self.namespace,
                id: &self.id,
            },
            &self.bundle,
            self.io_owner,
        )
        .await
        .map_err(|e| OpError::Invalid(format!("stdio: {e}")))?;
        // Named per exec instance, and a Start is never retried: no stale file to clear.
        let pid_file = self.exec_pid_path(process);
        let spec_path = self.exec_spec_path(process);
        let not_before = Instant::now();
        let (spec, pid_path) = (&spec_path, &pid_file);
        let (ran, attached) = prepared
            .launch(|io, console| async move {
                let opts = ExecOpts {
                    process_json: spec,
                    pid_file: pid_path,
                    console_socket: console.as_deref(),
                    io,
                };
                self.runtime.exec(&self.id, opts).await
            })
            .await;
        ran.map_err(|e| {
            OpError::Internal(format!("exec {} in {}: {e}", process.exec_id, self.id))
        })?;
        prepared
            .start_outputs()
            .map_err(|e| OpError::Internal(format!("stdio: {e}")))?;
        attached.map_err(|e| OpError::Internal(format!("terminal: {e}")))?;
        let pid = read_pid(&pid_file)?;
        process.stdio.adopt(std::mem::take(&mut prepared.stdio));
        process.set_created(pid, self.reaper.subscribe(pid, not_before));
        let rx = process.end_start(true);
        let mut ev = TaskExecStarted::new();
        ev.container_id = self.id.clone();
        ev.exec_id = process.exec_id.clone();
        ev.pid = pid as u32;
        self.publisher
            .publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, &ev);
        process.start_done();
        if let Some(rx) = rx {
            tokio::spawn(self.clone().watch_exec(process.clone(), rx));
        }
        Ok(pid)
    }

    async fn watch_exec(self: Arc<Self>, process: Arc<Process>, rx: oneshot::Receiver<Exit>) {
        let exit = received(rx, process.pid()).await;
        process.stdio.finish_output(EXIT_REPORT_BOUND).await;
        self.publish_exit(&process, exit);
        self.running_execs.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Deletes an exec that is not running; returns its exit.
    pub fn delete_exec(&self, exec_id: &str) -> Result<(i32, Option<ExitInfo>), OpError> {
        let mut execs = self.locked_execs();
        let process = execs
            .get(exec_id)
            .cloned()
            .ok_or_else(|| OpError::NotFound(format!("exec {exec_id} not found in {}", self.id)))?;
        let exit = process.set_deleted()?;
        execs.remove(exec_id);
        drop(execs);
        process.stdio.abort();
        self.remove_exec_files_soon(&process);
        Ok((process.pid(), exit))
    }

    /// Forgets all execs (container deleted).
    pub fn drop_execs(&self) {
        let execs = std::mem::take(&mut *self.locked_execs());
        for p in execs.into_values() {
            // An exec that never started answers its waiters now (a stopped one already has;
            // a running one cannot be: its container is gone, so its exit is on the way).
            let _ = p.set_deleted();
            p.stdio.abort();
            self.remove_exec_files_soon(&p);
        }
    }

    pub fn reaper(&self) -> &Arc<Reaper> {
        &self.reaper
    }
}

/// An exec's process spec with `terminal` as the request says (the bytes as they came when they
/// agree already). Refuses anything but a JSON object: the runtime reads it.
fn exec_spec_with_terminal(spec: &[u8], terminal: bool) -> Result<Cow<'_, [u8]>, OpError> {
    let not_object = || OpError::Invalid("exec process spec is not a JSON object".into());
    let mut value: serde_json::Value = serde_json::from_slice(spec).map_err(|_| not_object())?;
    let object = value.as_object_mut().ok_or_else(not_object)?;
    let current = object
        .get("terminal")
        .and_then(|t| t.as_bool())
        .unwrap_or(false);
    if current == terminal {
        return Ok(Cow::Borrowed(spec));
    }
    object.insert("terminal".into(), serde_json::Value::Bool(terminal));
    serde_json::to_vec(&value)
        .map(Cow::Owned)
        .map_err(|e| OpError::Internal(format!("exec process spec: {e}")))
}

/// containerd's rule for a container whose processes can outlive its init: its spec has no PID
/// namespace entry (the host's), or one with a path (shared with another container or a pod).
/// An unreadable spec counts as shared: killing what is left of a dead container is harmless.
fn kills_all_on_exit(bundle: &Path) -> bool {
    #[derive(serde::Deserialize)]
    struct Spec {
        linux: Option<Linux>,
    }
    #[derive(serde::Deserialize)]
    struct Linux {
        #[serde(default)]
        namespaces: Vec<Namespace>,
    }
    #[derive(serde::Deserialize)]
    struct Namespace {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        path: String,
    }
    let spec: Spec = match std::fs::read(bundle.join("config.json"))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(e) => {
            log::warn!("spec of {}: {e}", bundle.display());
            return true;
        }
    };
    let private = spec.linux.is_some_and(|l| {
        l.namespaces
            .iter()
            .any(|ns| ns.kind == "pid" && ns.path.is_empty())
    });
    !private
}

fn cgroup_of(id: &str, pid: i32) -> Option<ProcessCgroup> {
    ProcessCgroup::of_pid(pid)
        .map_err(|e| log::warn!("no cgroup for {id}: {e}"))
        .ok()
}

async fn received(rx: oneshot::Receiver<Exit>, pid: i32) -> ExitInfo {
    match rx.await {
        Ok(exit) => ExitInfo {
            status: exit.status,
            at: exit.at,
        },
        Err(_) => lost_exit(pid),
    }
}

/// The subscription was dropped (reaper gone): report the process as failed rather than hang.
fn lost_exit(pid: i32) -> ExitInfo {
    log::error!("exit of pid {pid} was lost; reporting 255");
    ExitInfo {
        status: 255,
        at: std::time::SystemTime::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_decides_an_execs_terminal() {
        let spec = br#"{"args":["tty"],"terminal":false}"#;
        let out = exec_spec_with_terminal(spec, true).expect("object");
        let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(v["terminal"], true);
        assert_eq!(v["args"][0], "tty");
        let same = exec_spec_with_terminal(spec, false).expect("object");
        assert!(
            matches!(same, Cow::Borrowed(_)),
            "unchanged bytes when they agree"
        );
        let none = exec_spec_with_terminal(br#"{"args":["sh"]}"#, false).expect("object");
        assert!(matches!(none, Cow::Borrowed(_)), "absent means false");
        for bad in [&b"[]"[..], b"null", b"{", b""] {
            assert!(exec_spec_with_terminal(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kill_all_on_exit_unless_the_pid_namespace_is_private() {
        let dir = std::env::temp_dir().join(format!("tender-killall-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let case = |json: &str| {
            std::fs::write(dir.join("config.json"), json).expect("write");
            kills_all_on_exit(&dir)
        };
        let own = r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}]}}"#;
        assert!(!case(own));
        assert!(
            case(r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#),
            "host PID ns"
        );
        assert!(
            case(r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/7/ns/pid"}]}}"#),
            "joined PID ns"
        );
        assert!(case(r#"{"process":{}}"#), "no linux section");
        assert!(case("not json"), "unreadable spec");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
