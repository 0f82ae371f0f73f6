//! The Task service: decode, validate, route. Registered under both `containerd.task.v2.Task`
//! and `containerd.task.v3.Task` (the two differ only in name).
//!
//! Every field that comes over the socket is untrusted — the socket can be reached without
//! containerd — so IDs, paths, signals and sizes are checked here and turned into clear ttrpc
//! errors. No lock is held across a runtime call or an await: the container table is a plain
//! mutex taken only to look up, insert or remove an entry.

use crate::lock;
use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskIO, TaskPaused, TaskResumed,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::oci::{CheckpointOptions, ProcessDetails};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use ttrpc::{Code, Error as TtrpcError};

use crate::container::{Container, NewContainer, OpError};
use crate::events::{pack, timestamp, Publisher};
use crate::mount::{self, MountSpec};
use crate::options::Options;
use crate::process::{Process, Status};
use crate::reaper::Reaper;
use crate::runtime::{CheckpointOpts, Runtime};
use crate::stdio::StdioSpec;

/// File in the bundle that tells the `delete` action which runtime to clean up with.
pub const BUNDLE_OPTIONS_FILE: &str = "tender-options.json";

pub type Result<T> = std::result::Result<T, TtrpcError>;

fn status(code: Code, msg: impl Into<String>) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, msg.into()))
}

impl From<OpError> for TtrpcError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(m) => status(Code::NOT_FOUND, m),
            OpError::AlreadyExists(m) => status(Code::ALREADY_EXISTS, m),
            OpError::Precondition(m) => status(Code::FAILED_PRECONDITION, m),
            OpError::Invalid(m) => status(Code::INVALID_ARGUMENT, m),
            OpError::Internal(m) => status(Code::UNKNOWN, m),
        }
    }
}

/// containerd's identifier rules: 1–76 characters of `[A-Za-z0-9]`, separated by single
/// `.`, `_` or `-`. This excludes `/`, `..`, NUL and control characters by construction.
pub fn validate_id(kind: &str, id: &str) -> Result<()> {
    const MAX: usize = 76;
    let bad = |why: &str| {
        status(
            Code::INVALID_ARGUMENT,
            format!("invalid {kind} {id:?}: {why}"),
        )
    };
    if id.is_empty() {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("{kind} must not be empty"),
        ));
    }
    if id.len() > MAX {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("invalid {kind}: longer than {MAX} characters"),
        ));
    }
    let bytes = id.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_alphanumeric();
    let is_sep = |b: u8| matches!(b, b'.' | b'_' | b'-');
    if !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return Err(bad("must start and end with a letter or digit"));
    }
    for w in bytes.windows(2) {
        if !(is_alnum(w[0]) || is_sep(w[0])) || !(is_alnum(w[1]) || is_sep(w[1])) {
            return Err(bad("only letters, digits, '.', '_' and '-' are allowed"));
        }
        if is_sep(w[0]) && is_sep(w[1]) {
            return Err(bad("separators must not repeat"));
        }
    }
    Ok(())
}

fn is_json_object(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.is_object())
}

fn validate_signal(sig: u32) -> Result<()> {
    // 1..=SIGRTMAX (64 on Linux).
    if !(1..=64).contains(&sig) {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("invalid signal {sig}: must be 1..=64"),
        ));
    }
    Ok(())
}

pub struct Shim {
    namespace: String,
    reaper: Arc<Reaper>,
    publisher: Publisher,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// IDs whose Create is in flight (so a concurrent Create of the same ID is refused).
    creating: Mutex<HashSet<String>>,
    /// Woken whenever a Create ends (see `create_settled`).
    create_ended: tokio::sync::Notify,
    /// Options the shim was started with (the start action's stdin); Create's options win.
    start_options: Options,
    /// The daemon's exit (shared with the Sandbox service and the server).
    exit: Arc<crate::server::Exit>,
}

impl Shim {
    pub fn new(
        namespace: String,
        reaper: Arc<Reaper>,
        publisher: Publisher,
        start_options: Options,
        exit: Arc<crate::server::Exit>,
    ) -> Self {
        Self {
            namespace,
            reaper,
            publisher,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            create_ended: tokio::sync::Notify::new(),
            start_options,
            exit,
        }
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.containers).is_empty() && lock(&self.creating).is_empty()
    }

    /// Waits (bounded) while a Create of `id` is still running. A Create whose caller gave up
    /// (deadline passed) keeps running to its end (see `server::RunToCompletion`); the Delete
    /// containerd sends right after such a failure must find the container, not race it.
    async fn create_settled(&self, id: &str) {
        const BOUND: std::time::Duration = std::time::Duration::from_secs(60);
        let deadline = tokio::time::Instant::now() + BOUND;
        loop {
            // Armed before the check, so a Create ending in between still wakes us.
            let ended = self.create_ended.notified();
            if !lock(&self.creating).contains(id) {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return;
            }
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        validate_id("container id", id)?;
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id} not found")))
    }

    /// The process addressed by (id, exec_id): the init when exec_id is empty.
    fn process(&self, id: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Process>)> {
        let c = self.container(id)?;
        if exec_id.is_empty() {
            let init = c.init.clone();
            return Ok((c, init));
        }
        validate_id("exec id", exec_id)?;
        let p = c.exec(exec_id).ok_or_else(|| {
            status(
                Code::NOT_FOUND,
                format!("exec {exec_id} not found in container {id}"),
            )
        })?;
        Ok((c, p))
    }

    async fn do_create(&self, req: &api::CreateTaskRequest) -> Result<Arc<Container>> {
        let bundle = PathBuf::from(&req.bundle);
        if req.bundle.contains('\0') || !bundle.is_absolute() || !bundle.is_dir() {
            return Err(status(
                Code::INVALID_ARGUMENT,
                format!(
                    "bundle {:?} must be an existing absolute directory",
                    req.bundle
                ),
            ));
        }
        let create_opts = Options::from_any(req.options.as_ref())
            .map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        let opts = self.start_options.merged_with(&create_opts);
        let runtime = Runtime::new(
            opts.binary(),
            opts.runtime_root(&self.namespace),
            opts.systemd_cgroup,
            bundle.clone(),
            self.reaper.clone(),
        )
        .map_err(|e| status(Code::FAILED_PRECONDITION, e))?;
        // The `delete` action (run after a shim crash) must find the same runtime and root.
        let marker = serde_json::to_vec(&opts).unwrap_or_default();
        std::fs::write(bundle.join(BUNDLE_OPTIONS_FILE), marker)
            .map_err(|e| status(Code::UNKNOWN, format!("write bundle options: {e}")))?;

        let rootfs = bundle.join("rootfs");
        let mounted = mount_rootfs(req, &rootfs, &self.reaper).await?;
        let checkpoint = if req.checkpoint.is_empty() {
            None
        } else {
            let image = checked_path("checkpoint", &req.checkpoint)?;
            let work = match opts.criu_work_path.as_str() {
                "" => None,
                p => Some(checked_path("CriuWorkPath", p)?),
            };
            Some((image, work))
        };
        let io_owner = (opts.io_uid != 0 || opts.io_gid != 0).then_some((opts.io_uid, opts.io_gid));
        let new = NewContainer {
            id: req.id.clone(),
            namespace: self.namespace.clone(),
            bundle: bundle.clone(),
            runtime,
            stdio: StdioSpec {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            rootfs_mounted: mounted,
            no_pivot: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
            io_owner,
            checkpoint,
        };
        match Container::create(new, self.reaper.clone(), self.publisher.clone(), &bundle).await {
            Ok(c) => Ok(c),
            Err(e) => {
                if mounted {
                    if let Err(ue) = mount::unmount_all(&rootfs) {
                        log::warn!("{ue}");
                    }
                }
                Err(e.into())
            }
        }
    }

    async fn delete_container(&self, c: Arc<Container>) -> Result<api::DeleteResponse> {
        // Refuse before touching anything: a running init is not deletable.
        match c.init.status() {
            Status::Running | Status::Paused => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("cannot delete container {}: it is running", c.id),
                ))
            }
            Status::Deleted => {
                return Err(status(
                    Code::NOT_FOUND,
                    format!("container {} already deleted", c.id),
                ))
            }
            _ => {}
        }
        // Unmounting syncs the overlay's upper filesystem (milliseconds); the runtime's delete
        // does not touch the rootfs, so the two run side by side. join! polls in order: the
        // runtime is already running when the unmount thread is being created.
        let unmount = async {
            if c.rootfs_mounted {
                Some(unmount_in_background(c.bundle.join("rootfs")).await)
            } else {
                None
            }
        };
        let (deleted, unmounted) = tokio::join!(c.runtime.delete(&c.id, true), unmount);
        match unmounted {
            Some(Ok(Err(e))) => log::warn!("{e}"),
            Some(Err(_)) => log::warn!("unmount of {} did not report back", c.id),
            _ => {}
        }
        if let Err(e) = deleted {
            if !e.not_found {
                return Err(status(
                    Code::UNKNOWN,
                    format!("delete container {}: {e}", c.id),
                ));
            }
        }
        let exit = c.init.set_deleted().map_err(OpError::from)?;
        c.init.stdio.abort();
        c.drop_execs();
        if exit.is_none() {
            c.reaper().unsubscribe(c.init.pid());
        }
        lock(&self.containers).remove(&c.id);
        let (exit_status, exited_at) = match exit {
            Some(e) => (e.status, timestamp(e.at)),
            None => (0, timestamp(std::time::SystemTime::now())),
        };
        let mut ev = TaskDelete::new();
        ev.container_id = c.id.clone();
        ev.id = c.id.clone();
        ev.pid = c.init.pid() as u32;
        ev.exit_status = exit_status;
        ev.exited_at = Some(exited_at.clone()).into();
        self.publisher.publish(topics::TASK_DELETE_EVENT_TOPIC, &ev);
        let mut resp = api::DeleteResponse::new();
        resp.pid = c.init.pid() as u32;
        resp.exit_status = exit_status;
        resp.exited_at = Some(exited_at).into();
        Ok(resp)
    }
}

/// Unmounts on a short-lived thread (a blocking syscall must not stall the one runtime
/// thread); the receiver reports the result.
fn unmount_in_background(target: PathBuf) -> tokio::sync::oneshot::Receiver<std::io::Result<()>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("unmount".into()).spawn({
        let target = target.clone();
        move || {
            let _ = tx.send(mount::unmount_all(&target));
        }
    });
    if let Err(e) = spawned {
        // No thread to be had: do it inline rather than not at all.
        log::warn!("unmount thread: {e}");
        let (tx, rx2) = tokio::sync::oneshot::channel();
        let _ = tx.send(mount::unmount_all(&target));
        return rx2;
    }
    rx
}

/// An absolute path without NUL, from an untrusted field.
fn checked_path(what: &str, p: &str) -> Result<PathBuf> {
    if p.contains('\0') || !p.starts_with('/') {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("{what} must be an absolute path, got {p:?}"),
        ));
    }
    Ok(PathBuf::from(p))
}

async fn mount_rootfs(
    req: &api::CreateTaskRequest,
    rootfs: &Path,
    reaper: &Reaper,
) -> Result<bool> {
    if req.rootfs.is_empty() {
        return Ok(false);
    }
    if let Err(e) = std::fs::create_dir_all(rootfs) {
        return Err(status(
            Code::UNKNOWN,
            format!("create {}: {e}", rootfs.display()),
        ));
    }
    for (i, m) in req.rootfs.iter().enumerate() {
        let spec = MountSpec {
            kind: &m.type_,
            source: &m.source,
            options: &m.options,
        };
        // uidmap=/gidmap= (a container in a user namespace): the namespace to map through.
        let userns = match mount::idmap::IdMapping::from_options(&m.options) {
            Ok(None) => None,
            Ok(Some(map)) => match mount::idmap::userns_for(&map, reaper).await {
                Ok(ns) => Some(ns),
                Err(e) => return Err(rootfs_failed(i, rootfs, e)),
            },
            Err(e) => return Err(rootfs_failed(i, rootfs, e)),
        };
        if let Err(e) = mount::mount_one(&spec, rootfs, userns.as_ref().map(|f| f.as_fd())) {
            return Err(rootfs_failed(i, rootfs, e));
        }
    }
    Ok(true)
}

/// Mount `i` of the rootfs failed: the ones before it are undone.
fn rootfs_failed(i: usize, rootfs: &Path, e: std::io::Error) -> TtrpcError {
    if i > 0 {
        let _ = mount::unmount_all(rootfs);
    }
    let code = if e.kind() == std::io::ErrorKind::InvalidInput {
        Code::INVALID_ARGUMENT
    } else {
        Code::UNKNOWN
    };
    status(code, format!("rootfs: {e}"))
}

#[async_trait]
impl Task for Shim {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse> {
        validate_id("container id", &req.id)?;
        {
            let containers = lock(&self.containers);
            let mut creating = lock(&self.creating);
            if containers.contains_key(&req.id) || !creating.insert(req.id.clone()) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("container {} already exists", req.id),
                ));
            }
        }
        let result = self.do_create(&req).await;
        let mut creating = lock(&self.creating);
        creating.remove(&req.id);
        self.create_ended.notify_waiters();
        let c = result?;
        let pid = c.init.pid();
        lock(&self.containers).insert(req.id.clone(), c.clone());
        drop(creating);

        let mut ev = TaskCreate::new();
        ev.container_id = req.id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        let mut io = TaskIO::new();
        io.stdin = req.stdin.clone();
        io.stdout = req.stdout.clone();
        io.stderr = req.stderr.clone();
        io.terminal = req.terminal;
        ev.io = Some(io).into();
        ev.checkpoint = req.checkpoint.clone();
        ev.pid = pid as u32;
        self.publisher.publish(topics::TASK_CREATE_EVENT_TOPIC, &ev);
        // Not needed for the reply: see Container::ensure_cgroup.
        let looked_up = c.clone();
        crate::after_reply(async move { looked_up.ensure_cgroup().await });

        let mut resp = api::CreateTaskResponse::new();
        resp.pid = pid as u32;
        Ok(resp)
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> Result<api::StartResponse> {
        let (c, p) = self.process(&req.id, &req.exec_id)?;
        let pid = if p.is_init() {
            c.start().await?
        } else {
            c.start_exec(&p).await?
        };
        let mut resp = api::StartResponse::new();
        resp.pid = pid as u32;
        Ok(resp)
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> Result<api::StateResponse> {
        let (c, p) = self.process(&req.id, &req.exec_id)?;
        let mut resp = api::StateResponse::new();
        resp.id = req.id.clone();
        resp.exec_id = req.exec_id.clone();
        resp.bundle = c.bundle.to_string_lossy().into_owned();
        resp.pid = p.pid() as u32;
        resp.status = p.status().to_proto().into();
        resp.stdin = p.stdio_spec.stdin.clone();
        resp.stdout = p.stdio_spec.stdout.clone();
        resp.stderr = p.stdio_spec.stderr.clone();
        resp.terminal = p.stdio_spec.terminal;
        if let Some(exit) = p.exit() {
            resp.exit_status = exit.status;
            resp.exited_at = Some(timestamp(exit.at)).into();
        }
        Ok(resp)
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> Result<api::DeleteResponse> {
        self.create_settled(&req.id).await;
        let (c, p) = self.process(&req.id, &req.exec_id)?;
        if p.is_init() {
            return self.delete_container(c).await;
        }
        let (pid, exit) = c.delete_exec(&req.exec_id)?;
        let mut resp = api::DeleteResponse::new();
        resp.pid = pid as u32;
        if let Some(e) = exit {
            resp.exit_status = e.status;
            resp.exited_at = Some(timestamp(e.at)).into();
        }
        Ok(resp)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> Result<api::PidsResponse> {
        let c = self.container(&req.id)?;
        let pids = c
            .runtime
            .ps(&c.id)
            .await
            .map_err(|e| status(Code::UNKNOWN, format!("pids of {}: {e}", c.id)))?;
        let execs: HashMap<i32, String> = c.exec_ids().into_iter().collect();
        let mut resp = api::PidsResponse::new();
        for pid in pids {
            let mut info = api::ProcessInfo::new();
            info.pid = pid as u32;
            if let Some(exec_id) = execs.get(&pid) {
                let mut d = ProcessDetails::new();
                d.exec_id = exec_id.clone();
                info.info = MessageField::some(pack(&d));
            }
            resp.processes.push(info);
        }
        Ok(resp)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        if c.init.status() != Status::Running {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running", c.id),
            ));
        }
        c.runtime
            .simple("pause", &c.id)
            .await
            .map_err(|e| status(Code::UNKNOWN, format!("pause {}: {e}", c.id)))?;
        c.init.set_paused(true).map_err(OpError::from)?;
        let mut ev = TaskPaused::new();
        ev.container_id = c.id.clone();
        self.publisher.publish(topics::TASK_PAUSED_EVENT_TOPIC, &ev);
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        if c.init.status() != Status::Paused {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not paused", c.id),
            ));
        }
        c.runtime
            .simple("resume", &c.id)
            .await
            .map_err(|e| status(Code::UNKNOWN, format!("resume {}: {e}", c.id)))?;
        c.init.set_paused(false).map_err(OpError::from)?;
        let mut ev = TaskResumed::new();
        ev.container_id = c.id.clone();
        self.publisher
            .publish(topics::TASK_RESUMED_EVENT_TOPIC, &ev);
        Ok(Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> Result<Empty> {
        validate_signal(req.signal)?;
        let (c, p) = self.process(&req.id, &req.exec_id)?;
        match p.status() {
            Status::Stopped | Status::Deleted => {
                return Err(status(Code::NOT_FOUND, "process already finished"));
            }
            _ => {}
        }
        if p.is_init() {
            c.runtime
                .kill(&c.id, req.signal, req.all)
                .await
                .map_err(|e| {
                    if e.not_found {
                        status(Code::NOT_FOUND, format!("kill {}: {e}", c.id))
                    } else {
                        status(Code::UNKNOWN, format!("kill {}: {e}", c.id))
                    }
                })?;
            // A frozen (cgroup v1 freezer) init does not die before it is thawed. runc thaws
            // the cgroup for SIGKILL itself, crun does not; containerd expects `kill -9` (and
            // `ctr task delete -f`) of a paused task to end it whatever the runtime: thaw it.
            if req.signal == libc::SIGKILL as u32 && p.status() == Status::Paused {
                match c.runtime.simple("resume", &c.id).await {
                    Ok(()) => {
                        let _ = p.set_paused(false);
                    }
                    // runc already thawed it (or the init is gone): nothing to do.
                    Err(e) => log::debug!("thaw {} after SIGKILL: {e}", c.id),
                }
            }
        } else {
            let pid = p.pid();
            if pid <= 0 {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} is not started", req.exec_id),
                ));
            }
            let sig = nix::sys::signal::Signal::try_from(req.signal as i32).ok();
            let rc = match sig {
                Some(s) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), s),
                // Real-time signals have no nix::Signal variant.
                None => {
                    // SAFETY: plain kill(2) with a validated signal number.
                    let r = unsafe { libc::kill(pid, req.signal as i32) };
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(nix::errno::Errno::last())
                    }
                }
            };
            rc.map_err(|e| match e {
                nix::errno::Errno::ESRCH => status(Code::NOT_FOUND, "process already finished"),
                e => status(Code::UNKNOWN, format!("kill exec {}: {e}", req.exec_id)),
            })?;
        }
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> Result<Empty> {
        validate_id("exec id", &req.exec_id)?;
        let c = self.container(&req.id)?;
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        // The spec is checked (a JSON object) and given the request's terminal by add_exec.
        let stdio = StdioSpec {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        for uri in [&stdio.stdin, &stdio.stdout, &stdio.stderr] {
            crate::stdio::parse_uri(uri).map_err(|e| status(Code::INVALID_ARGUMENT, e))?;
        }
        c.add_exec(&req.exec_id, stdio, &spec.value)?;
        let mut ev = TaskExecAdded::new();
        ev.container_id = c.id.clone();
        ev.exec_id = req.exec_id.clone();
        self.publisher
            .publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, &ev);
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> Result<Empty> {
        let (_c, p) = self.process(&req.id, &req.exec_id)?;
        if req.width > u16::MAX as u32 || req.height > u16::MAX as u32 {
            return Err(status(Code::INVALID_ARGUMENT, "terminal size out of range"));
        }
        match p.stdio.resize(req.width, req.height) {
            // No terminal: nothing to resize (what containerd's runc shim answers too).
            Err(e) if e.kind() != std::io::ErrorKind::Unsupported => {
                Err(status(Code::UNKNOWN, format!("resize: {e}")))
            }
            _ => Ok(Empty::new()),
        }
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> Result<Empty> {
        let (_c, p) = self.process(&req.id, &req.exec_id)?;
        if req.stdin {
            p.stdio.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> Result<Empty> {
        let c = self.container(&req.id)?;
        let res = req
            .resources
            .as_ref()
            .ok_or_else(|| status(Code::INVALID_ARGUMENT, "update without resources"))?;
        if !is_json_object(&res.value) {
            return Err(status(
                Code::INVALID_ARGUMENT,
                "resources are not a JSON object",
            ));
        }
        let path = c.bundle.join(".update-resources.json");
        std::fs::write(&path, &res.value)
            .map_err(|e| status(Code::UNKNOWN, format!("write resources: {e}")))?;
        let r = c.runtime.update(&c.id, &path).await;
        let _ = std::fs::remove_file(&path);
        r.map_err(|e| status(Code::UNKNOWN, format!("update {}: {e}", c.id)))?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> Result<api::WaitResponse> {
        let (_c, p) = self.process(&req.id, &req.exec_id)?;
        let exit = p.wait().await;
        let mut resp = api::WaitResponse::new();
        resp.exit_status = exit.status;
        resp.exited_at = Some(timestamp(exit.at)).into();
        Ok(resp)
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> Result<Empty> {
        let c = self.container(&req.id)?;
        if !matches!(c.init.status(), Status::Running | Status::Paused) {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running", c.id),
            ));
        }
        // containerd.runc.v1.CheckpointOptions and the older containerd.linux.runc
        // CheckpointOptions share their field numbers, so one decoder serves both.
        let o = match req.options.as_ref() {
            Some(any) if !any.value.is_empty() => {
                let name = any.type_url.rsplit('/').next().unwrap_or("");
                if !matches!(
                    name,
                    "containerd.runc.v1.CheckpointOptions"
                        | "containerd.linux.runc.CheckpointOptions"
                ) {
                    return Err(status(
                        Code::INVALID_ARGUMENT,
                        format!("unknown checkpoint options type {name:?}"),
                    ));
                }
                CheckpointOptions::parse_from_bytes(&any.value).map_err(|e| {
                    status(
                        Code::INVALID_ARGUMENT,
                        format!("bad checkpoint options: {e}"),
                    )
                })?
            }
            _ => CheckpointOptions::new(),
        };
        let image = if o.image_path.is_empty() {
            req.path.clone()
        } else {
            o.image_path.clone()
        };
        let image_path = checked_path("checkpoint image path", &image)?;
        let work_path = match (
            o.work_path.as_str(),
            self.start_options.criu_work_path.as_str(),
        ) {
            ("", "") => None,
            ("", p) | (p, _) => Some(checked_path("checkpoint work path", p)?),
        };
        let opts = CheckpointOpts {
            image_path,
            work_path,
            exit: o.exit,
            open_tcp: o.open_tcp,
            external_unix_sockets: o.external_unix_sockets,
            terminal: o.terminal,
            file_locks: o.file_locks,
            empty_namespaces: o.empty_namespaces.clone(),
            cgroups_mode: o.cgroups_mode.clone(),
        };
        c.runtime
            .checkpoint(&c.id, &opts)
            .await
            .map_err(|e| status(Code::UNKNOWN, format!("checkpoint {}: {e}", c.id)))?;
        Ok(Empty::new())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> Result<api::StatsResponse> {
        let c = self.container(&req.id)?;
        c.ensure_cgroup().await;
        let cgroup = c
            .cgroup
            .get()
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {} has no cgroup", c.id)))?;
        let stats = cgroup.stats().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                status(Code::NOT_FOUND, format!("stats of {}: {e}", c.id))
            } else {
                status(Code::UNKNOWN, format!("stats of {}: {e}", c.id))
            }
        })?;
        let mut resp = api::StatsResponse::new();
        resp.stats = MessageField::some(stats);
        Ok(resp)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> Result<api::ConnectResponse> {
        let mut resp = api::ConnectResponse::new();
        resp.shim_pid = std::process::id();
        resp.version = env!("CARGO_PKG_VERSION").to_string();
        if let Ok(c) = self.container(&req.id) {
            resp.task_pid = c.init.pid() as u32;
        }
        Ok(resp)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> Result<Empty> {
        // Only an empty shim goes away; containerd calls this after every Delete. It answers
        // once every other request is answered: containerd closes the connection on this
        // answer (see `server::Exit`).
        if self.is_empty() {
            self.exit.try_exit().await;
        }
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        for ok in ["a", "abc-123", "x.y_z", "A1", &"a".repeat(76)] {
            assert!(validate_id("id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc",
            "../x",
            "a/b",
            "a..b",
            "a\0b",
            "a\nb",
            "-a",
            "a-",
            ".",
            "..",
            &"a".repeat(77),
            "a b",
            "é",
        ] {
            assert!(validate_id("id", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signals_are_validated() {
        assert!(validate_signal(0).is_err());
        assert!(validate_signal(65).is_err());
        assert!(validate_signal(u32::MAX).is_err());
        assert!(validate_signal(9).is_ok());
        assert!(validate_signal(64).is_ok());
    }
}
