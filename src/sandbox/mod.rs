//! containerd 2.x's Sandbox API (`sandboxer = "shim"`): a pod with no pause container.
//!
//! * [`service`]: the ttrpc `containerd.runtime.sandbox.v1.Sandbox` service, beside the Task
//!   service on the same socket (see `server.rs`);
//! * [`state`]: one sandbox's state machine;
//! * [`holder`]: the namespace holder process (spawned by the shim, reaped by its reaper);
//! * [`podconfig`] / [`wire`]: the CRI pod config the holder needs, decoded by hand;
//! * [`files`]: hostname, hosts, resolv.conf and the shm tmpfs where CRI looks for them;
//! * [`task_bridge`]: Task `Connect`/`State`/`Pids` for the sandbox id.
//!
//! A sandbox bundle has no config.json; the `delete` action finds what to clean up after a
//! dead shim in [`RECORD_FILE`].

pub mod files;
pub mod holder;
pub mod podconfig;
pub mod service;
pub mod state;
pub mod task_bridge;
pub mod wire;

use std::path::Path;

pub use service::SandboxService;

/// In a sandbox's bundle: what the `delete` action must undo when the shim died.
pub const RECORD_FILE: &str = "tender-sandbox.json";

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub files: Option<files::PodFiles>,
    pub cgroup: Option<String>,
    /// The directories above the holder's cgroup that Tender made (and may remove once
    /// empty), see `Pod::remove_cgroups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub created_cgroups: Vec<std::path::PathBuf>,
    /// 0 before StartSandbox.
    pub holder_pid: i32,
}

/// The `delete` action's part for a sandbox bundle (no-op for a container's): the holder (if
/// it outlived the shim — it should not, see `holder`), the pod files and the holder's cgroup.
pub fn cleanup_dead(bundle: &Path) {
    let Ok(bytes) = std::fs::read(bundle.join(RECORD_FILE)) else {
        return;
    };
    let Ok(rec) = serde_json::from_slice::<Record>(&bytes) else {
        eprintln!("tender: unreadable {RECORD_FILE} in {}", bundle.display());
        return;
    };
    if rec.holder_pid > 0 && is_holder(rec.holder_pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.holder_pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let Some(f) = &rec.files {
        if let Err(e) = f.remove() {
            eprintln!("tender: {e}");
        }
    }
    if let Some(cg) = &rec.cgroup {
        // The holder may take a moment to leave its cgroup after SIGKILL.
        for _ in 0..50 {
            if crate::cgroups::remove(cg) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    crate::cgroups::remove_created(&rec.created_cgroups);
    let _ = std::fs::remove_file(bundle.join(RECORD_FILE));
}

/// Whether `pid` is (still) a namespace holder, not a recycled pid.
fn is_holder(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).nth(1) == Some(holder::HOLDER_ARG.as_bytes()))
        .unwrap_or(false)
}
