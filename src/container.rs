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
//! 5. Output copied before the exit is reported: the watcher drains stdout/stderr (bounded by
//!    [`DRAIN_BOUND`]) before publishing.

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
use crate::stdio::{self, LoggerEnv, StdioSpec, DRAIN_BOUND};

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
        Ok(Self::assemble(new, init, reaper, publisher, None))
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

    /// Starts the init process; publishes TaskStart, then watches for its exit.
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
        result?;
        let pid = self.init.pid();
        let mut ev = TaskStart::new();
        ev.container_id = self.id.clone();
        ev.pid = pid as u32;
        self.publisher.publish(topics::TASK_START_EVENT_TOPIC, &ev);
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

    /// The init was killed before it was started: its exit still has to be handled.
    pub fn watch_unstarted_init(self: &Arc<Self>) {
        if let Some(rx) = self.init.take_exit_rx_if_created() {
            tokio::spawn(self.clone().watch_init(rx));
        }
    }

    async fn watch_init(self: Arc<Self>, rx: oneshot::Receiver<Exit>) {
        let exit = received(rx, self.init.pid()).await;
        // Invariant 4: an OOM kill that caused this exit is reported first.
        self.report_oom(false);
        self.init.stdio.finish_output(DRAIN_BOUND).await;
        // Invariant 2: every started exec's exit goes out before the init's.
        let mut execs = self.running_execs.subscribe();
        let _ = execs.wait_for(|n| *n == 0).await;
        self.publish_exit(&self.init, exit);
    }

    fn publish_exit(&self, process: &Process, exit: ExitInfo) {
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

    /// Registers a new exec (not started yet).
    pub fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioSpec,
        spec_json: &[u8],
    ) -> Result<(), OpError> {
        use crate::process::Status;
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
        std::fs::write(&path, spec_json)
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
        use crate::process::Status;
        process.begin_start()?;
        if matches!(self.init.status(), Status::Stopped | Status::Deleted) {
            process.start_failed();
            return Err(OpError::Precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        self.running_execs.send_modify(|n| *n += 1);
        match self.run_exec(process).await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                process.start_failed();
                self.running_execs.send_modify(|n| *n = n.saturating_sub(1));
                Err(e)
            }
        }
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
        if let Some(rx) = rx {
            tokio::spawn(self.clone().watch_exec(process.clone(), rx));
        }
        Ok(pid)
    }

    async fn watch_exec(self: Arc<Self>, process: Arc<Process>, rx: oneshot::Receiver<Exit>) {
        let exit = received(rx, process.pid()).await;
        process.stdio.finish_output(DRAIN_BOUND).await;
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
        Err(_) => {
            // The subscription was dropped (reaper gone): report it as killed rather than hang.
            log::error!("exit of pid {pid} was lost; reporting 255");
            ExitInfo {
                status: 255,
                at: std::time::SystemTime::now(),
            }
        }
    }
}
