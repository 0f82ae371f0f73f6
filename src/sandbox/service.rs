//! The Sandbox service (`containerd.runtime.sandbox.v1.Sandbox`): decode, validate, route to
//! the one sandbox this shim serves (containerd starts one shim per sandbox).
//!
//! Every field is untrusted (the socket can be reached without containerd): ids are checked
//! with the Task service's rules, paths must be absolute, the pod config is decoded without
//! panicking. No lock is held across an await or I/O: the slot is a plain mutex taken to look
//! up, insert or remove the sandbox.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use containerd_shim_protos::sandbox_api as api;
use containerd_shim_protos::sandbox_async::Sandbox as SandboxApi;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::types::platform::Platform;
use ttrpc::{Code, Error as TtrpcError};

use super::files::PodFiles;
use super::holder::{self, HolderSpec};
use super::podconfig::PodConfig;
use super::state::{Machine, Phase, PodExit};
use super::Record;
use crate::events::timestamp;
use crate::lock;
use crate::reaper::Reaper;
use crate::service::validate_id;

type Result<T> = std::result::Result<T, TtrpcError>;

fn status(code: Code, msg: impl Into<String>) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, msg.into()))
}

/// What CRI reads in `SandboxStatusResponse.state`.
const READY: &str = "SANDBOX_READY";
const NOT_READY: &str = "SANDBOX_NOTREADY";
/// How long StopSandbox waits for the SIGKILLed holder to be reaped.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One pod.
pub struct Pod {
    pub id: String,
    bundle: PathBuf,
    config: PodConfig,
    netns: Option<PathBuf>,
    files: PodFiles,
    cgroup: Option<String>,
    /// The cgroup directories above the holder's that StartSandbox made (a slice or cgroupfs
    /// parent that did not exist): the only ancestors Shutdown/`delete` may remove.
    created_cgroups: Mutex<Vec<PathBuf>>,
    created_at: SystemTime,
    pub machine: Machine,
}

impl Pod {
    fn record(&self, holder_pid: i32) -> Record {
        Record {
            files: Some(self.files.clone()),
            cgroup: self.cgroup.clone(),
            created_cgroups: lock(&self.created_cgroups).clone(),
            holder_pid,
        }
    }

    /// The holder's pid while the pod is ready.
    pub fn holder_pid(&self) -> Option<i32> {
        match self.machine.phase() {
            Phase::Ready { pid } => Some(pid),
            _ => None,
        }
    }

    fn holder_spec(&self) -> HolderSpec {
        let c = &self.config;
        HolderSpec {
            id: self.id.clone(),
            netns: self.netns.clone(),
            // The node's network namespace comes with the node's UTS namespace (as for a
            // pause container of a hostNetwork pod).
            new_uts: !c.host_network,
            hostname: c.hostname.clone(),
            new_ipc: !c.host_ipc,
            new_pid: !c.host_pid,
            sysctls: c.sysctls.clone(),
            cgroup: self.cgroup.clone(),
            userns: c.userns.clone(),
        }
    }

    /// At Shutdown, the holder gone: its cgroup (the leaf is Tender's, whoever made it), then
    /// the ancestors StartSandbox made, each only while empty.
    ///
    /// Invariant: Tender never removes a cgroup directory above the holder's that it did not
    /// make itself (a slice or pod cgroup of the kubelet's, or of systemd's, is never
    /// touched), and one it made only once nothing is in it (`rmdir` is refused for a cgroup
    /// with a process or a child; another pod or the kubelet may have started using it). The
    /// list is taken, so each directory is tried once: after Shutdown, a directory of the same
    /// name is someone else's.
    async fn remove_cgroups(&self) {
        if let Some(cg) = &self.cgroup {
            // The holder may take a moment to leave its cgroup once reaped.
            for _ in 0..50 {
                if crate::cgroups::remove(cg) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let made = std::mem::take(&mut *lock(&self.created_cgroups));
        for d in crate::cgroups::remove_created(&made) {
            log::info!("sandbox {}: {} is in use, left", self.id, d.display());
        }
    }

    /// Kills the holder (if it runs) and waits for the reaper to report it.
    async fn kill_holder(&self) {
        if let Some(pid) = self.holder_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            if tokio::time::timeout(STOP_WAIT, self.machine.wait())
                .await
                .is_err()
            {
                log::warn!(
                    "sandbox {}: holder {pid} not reaped in {STOP_WAIT:?}",
                    self.id
                );
            }
        } else if self.machine.phase() == Phase::Created {
            self.machine.stop(
                0,
                PodExit {
                    status: 0,
                    at: SystemTime::now(),
                },
            );
        }
    }
}

/// The name of the holder's cgroup under a systemd slice: `tender-sandbox-<id>.scope`.
///
/// containerd's pause container gets `cri-containerd-<id>.scope` with the systemd driver (its
/// CRI asks runc for `<slice>:cri-containerd:<id>`). Tender's holder is not a container of
/// containerd's, and the directory is not a systemd unit either (see [`holder_cgroup`]), so it
/// is not named like one of containerd's: an operator who sees it in `systemd-cgls` knows whose
/// it is, and nobody looks for a containerd container or a unit of that name. `.scope` because that is
/// what a process group not started by systemd is in a slice, and the path stays the same if
/// Tender ever registers the scope through systemd.
const SCOPE_PREFIX: &str = "tender-sandbox-";

/// The cgroup of the holder, from CRI's `cgroup_parent`:
///
/// * a systemd slice name (the kubelet's systemd driver: `kubepods-besteffort-pod<uid>.slice`,
///   no `/`): `<expanded slice path>/tender-sandbox-<id>.scope`, the slice expanded as
///   systemd does (`a-b.slice` → `/a.slice/a-b.slice`); an invalid slice name is an error;
/// * anything else (the cgroupfs driver: an absolute path such as
///   `/kubepods/besteffort/pod<uid>`): `<cgroup_parent>/<id>`, where runc would put a pause
///   container;
/// * empty: None, the holder stays in the shim's cgroup.
///
/// Under a slice, runc (systemd driver) asks systemd over D-Bus for a transient scope unit
/// (StartTransientUnit with `Slice=`, `Delegate=yes`), and systemd makes the cgroup, moves the
/// process and creates a missing slice unit. Tender has no D-Bus client: it makes the
/// directories itself in every cgroup hierarchy (`cgroups::create`), a missing slice included
/// (as systemd would), and moves the holder there. The placement, accounting and limits are the
/// kernel's and the same; what differs is that systemd does not know the scope as a unit
/// (`systemctl` does not show it, nor stop or kill it as one), a slice directory Tender made is
/// not a slice unit systemd loaded, and systemd's rule that only it writes into its tree
/// outside delegated units is bent (as with the cgroupfs driver on a systemd host). Not
/// tested on a systemd node (the test machine has none). README "Shim sandboxer", limits.
fn holder_cgroup(parent: &str, id: &str) -> std::result::Result<Option<String>, String> {
    let parent = parent.trim_end_matches('/');
    if parent.is_empty() {
        return Ok(None);
    }
    if parent.ends_with(".slice") && !parent.starts_with('/') {
        let slice = crate::cgroups::expand_slice(parent)?;
        let slice = slice.trim_end_matches('/');
        return Ok(Some(format!("{slice}/{SCOPE_PREFIX}{id}.scope")));
    }
    Ok(Some(format!("{parent}/{id}")))
}

pub struct SandboxService {
    reaper: Arc<Reaper>,
    namespace: String,
    slot: Mutex<Option<Arc<Pod>>>,
    /// The daemon's exit (shared with the Task service and the server).
    exit: Arc<crate::server::Exit>,
}

impl SandboxService {
    pub fn new(namespace: String, reaper: Arc<Reaper>, exit: Arc<crate::server::Exit>) -> Self {
        Self {
            reaper,
            namespace,
            slot: Mutex::new(None),
            exit,
        }
    }

    /// No sandbox is served (any more): the daemon may exit once its containers are gone.
    pub fn is_idle(&self) -> bool {
        lock(&self.slot).is_none()
    }

    /// The pod `id`, if this shim serves it.
    pub fn pod(&self, id: &str) -> Option<Arc<Pod>> {
        lock(&self.slot).as_ref().filter(|p| p.id == id).cloned()
    }

    fn get(&self, id: &str) -> Result<Arc<Pod>> {
        validate_id("sandbox id", id)?;
        self.pod(id)
            .ok_or_else(|| status(Code::NOT_FOUND, format!("sandbox {id} not found")))
    }

    fn write_record(&self, pod: &Pod, pid: i32) {
        let path = pod.bundle.join(super::RECORD_FILE);
        let bytes = serde_json::to_vec(&pod.record(pid)).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, bytes) {
            log::warn!("write {}: {e}", path.display());
        }
    }

    /// Recreates the pod files CRI may have removed (containerd restarts) while the pod is
    /// ready.
    fn refresh_files(&self, pod: &Pod) {
        if pod.holder_pid().is_some() {
            if let Err(e) = pod.files.ensure(&pod.config) {
                log::warn!("sandbox {}: {e}", pod.id);
            }
        }
    }

    fn build(&self, req: &api::CreateSandboxRequest) -> Result<Pod> {
        let bundle = PathBuf::from(&req.bundle_path);
        if req.bundle_path.contains('\0') || !bundle.is_absolute() || !bundle.is_dir() {
            return Err(status(
                Code::INVALID_ARGUMENT,
                format!(
                    "bundle {:?} must be an existing absolute directory",
                    req.bundle_path
                ),
            ));
        }
        let mut config = match req.options.as_ref() {
            Some(any) => PodConfig::from_any(&any.type_url, &any.value),
            None => Ok(PodConfig::default()),
        }
        .map_err(|e| status(Code::INVALID_ARGUMENT, format!("sandbox options: {e}")))?;
        if req.options.is_none() {
            // No pod config (not CRI): the network namespace is the node's when none is given.
            config.host_network = req.netns_path.is_empty();
        }
        let netns = match req.netns_path.as_str() {
            "" => None,
            p if p.starts_with('/') && !p.contains('\0') && Path::new(p).exists() => {
                Some(PathBuf::from(p))
            }
            p => {
                return Err(status(
                    Code::INVALID_ARGUMENT,
                    format!("netns_path {p:?} must be an existing absolute path"),
                ))
            }
        };
        if netns.is_some() == config.host_network {
            return Err(status(
                Code::INVALID_ARGUMENT,
                "netns_path must be empty exactly when the pod uses the node's network",
            ));
        }
        if let (Some(_), Some(p)) = (&config.userns, &netns) {
            // The holder joins the user namespace that owns CRI's network namespace: it must
            // be one of its own (containerd makes it so for a userns pod).
            let f = std::fs::File::open(p).map_err(|e| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("netns_path {}: {e}", p.display()),
                )
            })?;
            holder::owning_userns(&f.into())
                .map_err(|e| status(Code::FAILED_PRECONDITION, format!("sandbox options: {e}")))?;
        }
        let files = PodFiles::locate(&bundle, &self.namespace, &req.sandbox_id)
            .map_err(|e| status(Code::FAILED_PRECONDITION, e))?;
        let cgroup = holder_cgroup(&config.cgroup_parent, &req.sandbox_id)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("cgroup_parent: {e}")))?;
        Ok(Pod {
            id: req.sandbox_id.clone(),
            bundle,
            config,
            netns,
            files,
            cgroup,
            created_cgroups: Mutex::new(Vec::new()),
            created_at: SystemTime::now(),
            machine: Machine::default(),
        })
    }

    /// Watches the holder's exit (delivered once by the reaper) and moves the pod to Stopped.
    fn watch_exit(
        pod: Arc<Pod>,
        pid: i32,
        exit: tokio::sync::oneshot::Receiver<crate::reaper::Exit>,
    ) {
        tokio::spawn(async move {
            let exit = match exit.await {
                Ok(e) => PodExit {
                    status: e.status,
                    at: e.at,
                },
                // The reaper went away: the shim is ending anyway.
                Err(_) => return,
            };
            log::info!("sandbox {}: holder {pid} exited ({})", pod.id, exit.status);
            pod.machine.stop(pid, exit);
            if let Some(cg) = &pod.cgroup {
                crate::cgroups::remove(cg);
            }
        });
    }
}

fn platform() -> Platform {
    let mut p = Platform::new();
    p.os = "linux".into();
    p.architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
    .into();
    p
}

#[async_trait]
impl SandboxApi for SandboxService {
    async fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateSandboxRequest,
    ) -> Result<api::CreateSandboxResponse> {
        validate_id("sandbox id", &req.sandbox_id)?;
        if let Some(other) = lock(&self.slot).as_ref() {
            let code = if other.id == req.sandbox_id {
                Code::ALREADY_EXISTS
            } else {
                Code::FAILED_PRECONDITION
            };
            return Err(status(
                code,
                format!("this shim already serves sandbox {}", other.id),
            ));
        }
        let pod = self.build(&req)?;
        pod.files
            .ensure(&pod.config)
            .map_err(|e| status(Code::UNKNOWN, format!("pod files: {e}")))?;
        let pod = Arc::new(pod);
        {
            let mut slot = lock(&self.slot);
            if let Some(other) = slot.clone() {
                drop(slot);
                // Lost a race with a concurrent Create. Of the same id, the files are the
                // winner's too; of another id, ours are removed.
                if other.id != pod.id {
                    let _ = pod.files.remove();
                }
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("this shim already serves sandbox {}", other.id),
                ));
            }
            *slot = Some(pod.clone());
        }
        self.write_record(&pod, 0);
        log::info!("sandbox {} created", pod.id);
        Ok(api::CreateSandboxResponse::new())
    }

    async fn start_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartSandboxRequest,
    ) -> Result<api::StartSandboxResponse> {
        let pod = self.get(&req.sandbox_id)?;
        pod.machine.begin_start().map_err(|phase| {
            status(
                Code::FAILED_PRECONDITION,
                format!("sandbox {} cannot start: {phase:?}", pod.id),
            )
        })?;
        if let Some(cg) = &pod.cgroup {
            // Made here rather than by `move_to` so that what was made is known (and recorded
            // before the holder exists, for `delete` after a dead shim).
            let made = crate::cgroups::create(cg);
            for e in &made.errors {
                log::warn!("sandbox {}: cgroup {cg}: {e}", pod.id);
            }
            if !made.dirs.is_empty() {
                lock(&pod.created_cgroups).extend(made.dirs);
                self.write_record(&pod, 0);
            }
        }
        let spawned = holder::spawn(&pod.holder_spec(), &self.reaper).await;
        let h = match spawned {
            Ok(h) => h,
            Err(e) => {
                pod.machine.end_start(None);
                return Err(status(
                    Code::UNKNOWN,
                    format!("start sandbox {}: {e}", pod.id),
                ));
            }
        };
        pod.machine.end_start(Some(h.pid));
        Self::watch_exit(pod.clone(), h.pid, h.exit);
        self.write_record(&pod, h.pid);
        log::info!("sandbox {} started: holder {}", pod.id, h.pid);
        let mut resp = api::StartSandboxResponse::new();
        resp.pid = h.pid as u32;
        resp.created_at = Some(timestamp(pod.created_at)).into();
        Ok(resp)
    }

    async fn platform(
        &self,
        _ctx: &TtrpcContext,
        req: api::PlatformRequest,
    ) -> Result<api::PlatformResponse> {
        let pod = self.get(&req.sandbox_id)?;
        self.refresh_files(&pod);
        let mut resp = api::PlatformResponse::new();
        resp.platform = Some(platform()).into();
        Ok(resp)
    }

    async fn stop_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::StopSandboxRequest,
    ) -> Result<api::StopSandboxResponse> {
        let pod = self.get(&req.sandbox_id)?;
        if pod.machine.phase() == Phase::Starting {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("sandbox {} is starting", pod.id),
            ));
        }
        pod.kill_holder().await;
        Ok(api::StopSandboxResponse::new())
    }

    async fn wait_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitSandboxRequest,
    ) -> Result<api::WaitSandboxResponse> {
        let pod = self.get(&req.sandbox_id)?;
        let exit = pod.machine.wait().await;
        let mut resp = api::WaitSandboxResponse::new();
        resp.exit_status = exit.status;
        resp.exited_at = Some(timestamp(exit.at)).into();
        Ok(resp)
    }

    async fn sandbox_status(
        &self,
        _ctx: &TtrpcContext,
        req: api::SandboxStatusRequest,
    ) -> Result<api::SandboxStatusResponse> {
        let pod = self.get(&req.sandbox_id)?;
        self.refresh_files(&pod);
        let mut resp = api::SandboxStatusResponse::new();
        resp.sandbox_id = pod.id.clone();
        resp.created_at = Some(timestamp(pod.created_at)).into();
        match pod.machine.phase() {
            Phase::Ready { pid } => {
                resp.pid = pid as u32;
                resp.state = READY.into();
            }
            Phase::Stopped { pid, exit } => {
                resp.pid = pid as u32;
                resp.state = NOT_READY.into();
                resp.exited_at = Some(timestamp(exit.at)).into();
            }
            Phase::Created | Phase::Starting => resp.state = NOT_READY.into(),
        }
        Ok(resp)
    }

    async fn ping_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::PingRequest,
    ) -> Result<api::PingResponse> {
        self.get(&req.sandbox_id)?;
        Ok(api::PingResponse::new())
    }

    async fn shutdown_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::ShutdownSandboxRequest,
    ) -> Result<api::ShutdownSandboxResponse> {
        let pod = self.get(&req.sandbox_id)?;
        pod.kill_holder().await;
        if let Err(e) = pod.files.remove() {
            log::warn!("sandbox {}: {e}", pod.id);
        }
        pod.remove_cgroups().await;
        let _ = std::fs::remove_file(pod.bundle.join(super::RECORD_FILE));
        {
            let mut slot = lock(&self.slot);
            if slot.as_ref().is_some_and(|p| Arc::ptr_eq(p, &pod)) {
                *slot = None;
            }
        }
        log::info!("sandbox {} shut down", pod.id);
        // The daemon exits once no container is left, and answers first every other request
        // in flight: containerd may close the connection on this answer (see `server::Exit`).
        self.exit.try_exit().await;
        Ok(api::ShutdownSandboxResponse::new())
    }

    async fn sandbox_metrics(
        &self,
        _ctx: &TtrpcContext,
        req: api::SandboxMetricsRequest,
    ) -> Result<api::SandboxMetricsResponse> {
        self.get(&req.sandbox_id)?;
        Err(status(
            Code::UNIMPLEMENTED,
            "SandboxMetrics is not implemented by Tender",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_cgroup_follows_cgroupfs_paths_and_systemd_slices() {
        let ok = |p, id| holder_cgroup(p, id).expect(p);
        assert_eq!(ok("/pods/p1/", "s1").as_deref(), Some("/pods/p1/s1"));
        assert_eq!(
            ok("kubepods-besteffort-pod1.slice", "s1").as_deref(),
            Some("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/tender-sandbox-s1.scope")
        );
        assert_eq!(
            ok("-.slice", "s1").as_deref(),
            Some("/tender-sandbox-s1.scope")
        );
        // An absolute path is a cgroupfs parent, whatever its last name.
        assert_eq!(
            ok("/a.slice/a-b.slice", "s1").as_deref(),
            Some("/a.slice/a-b.slice/s1")
        );
        assert_eq!(ok("", "s1"), None);
        assert_eq!(ok("/", "s1"), None);
        for bad in [
            "kube--pod.slice",
            "-pod.slice",
            "pod-.slice",
            "a/b.slice",
            ".slice",
        ] {
            let e = holder_cgroup(bad, "s1").expect_err(bad);
            assert!(e.contains("invalid systemd slice name"), "{bad}: {e}");
        }
    }
}
