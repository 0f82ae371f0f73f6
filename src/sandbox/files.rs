//! The pod files CRI bind-mounts into every container of the pod — `hostname`, `hosts` and
//! `resolv.conf` from `<root>/io.containerd.grpc.v1.cri/sandboxes/<id>/`, the `shm` tmpfs from
//! `<state>/io.containerd.grpc.v1.cri/sandboxes/<id>/` — when they exist. With the pause
//! controller CRI writes them itself; with `sandboxer = "shim"` the shim must.
//!
//! `<state>` and `<root>` are containerd's, derived from the bundle containerd's shim
//! sandbox controller made: `<state>/io.containerd.sandbox.controller.v1.shim/<ns>/<id>`, with
//! a `work` symlink to `<root>/io.containerd.sandbox.controller.v1.shim/<ns>/<id>`. Any other
//! layout is refused with an error naming what was expected.
//!
//! The shm tmpfs itself is mounted on `<bundle>/shm` (containerd leaves the sandbox bundle
//! alone) and bind-mounted where CRI looks: when containerd restarts, CRI unmounts and removes
//! its directories of shim pods, and the bind made again afterwards is the same tmpfs, so
//! containers started before and after the restart still share /dev/shm.
//!
//! Invariant: every path written or mounted here is under one of the two `sandboxes/<id>`
//! directories or is `<bundle>/shm`, and `remove` takes all of it away (unmount first).

use std::path::{Path, PathBuf};

use super::podconfig::PodConfig;

const CONTROLLER_DIR: &str = "io.containerd.sandbox.controller.v1.shim";
const CRI_DIR: &str = "io.containerd.grpc.v1.cri";
/// The size of the pod's /dev/shm, as containerd's pause controller mounts it.
const SHM_OPTIONS: &str = "mode=1777,size=65536k";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodFiles {
    /// `<root>/io.containerd.grpc.v1.cri/sandboxes/<id>`
    pub root_dir: PathBuf,
    /// `<state>/io.containerd.grpc.v1.cri/sandboxes/<id>`
    pub state_dir: PathBuf,
    /// `<bundle>/shm`: the pod's shm tmpfs (bind-mounted to `state_dir/shm`).
    #[serde(default)]
    pub shm_source: Option<PathBuf>,
}

/// `<base>/io.containerd.sandbox.controller.v1.shim/<ns>/<id>` → `<base>`.
fn base_of(dir: &Path, namespace: &str, id: &str) -> Option<PathBuf> {
    let (i, n, c) = (dir.file_name()?, dir.parent()?, dir.parent()?.parent()?);
    let ok = i == id && n.file_name()? == namespace && c.file_name()? == CONTROLLER_DIR;
    ok.then(|| c.parent().map(Path::to_path_buf))?
}

impl PodFiles {
    /// Where CRI looks for the files of sandbox `id`, derived from its bundle.
    pub fn locate(bundle: &Path, namespace: &str, id: &str) -> Result<PodFiles, String> {
        let expected = || {
            format!(
                "bundle {} is not <state>/{CONTROLLER_DIR}/{namespace}/{id} with a `work` link \
                 to <root>/{CONTROLLER_DIR}/{namespace}/{id} (containerd 2.x's shim sandbox \
                 controller layout): cannot tell where CRI expects the pod's files",
                bundle.display()
            )
        };
        let state = base_of(bundle, namespace, id).ok_or_else(expected)?;
        let work = std::fs::read_link(bundle.join("work")).map_err(|_| expected())?;
        let root = base_of(&work, namespace, id).ok_or_else(expected)?;
        let sub = |base: PathBuf| base.join(CRI_DIR).join("sandboxes").join(id);
        Ok(PodFiles {
            root_dir: sub(root),
            state_dir: sub(state),
            shm_source: Some(bundle.join("shm")),
        })
    }

    pub fn shm(&self) -> PathBuf {
        self.state_dir.join("shm")
    }

    /// Writes whatever is missing (also after CRI removed the directories on a restart):
    /// idempotent. `hostname` is the pod's (the node's when empty).
    pub fn ensure(&self, config: &PodConfig) -> Result<(), String> {
        let mkdir = |d: &Path| {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))
        };
        mkdir(&self.root_dir)?;
        mkdir(&self.state_dir)?;
        let write_new = |name: &str, text: &[u8]| {
            let p = self.root_dir.join(name);
            if p.exists() {
                return Ok(());
            }
            let tmp = self.root_dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, &p))
                .map_err(|e| format!("write {}: {e}", p.display()))
        };
        let hostname = if config.hostname.is_empty() {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        write_new("hostname", format!("{hostname}\n").as_bytes())?;
        let hosts = std::fs::read("/etc/hosts")
            .unwrap_or_else(|_| b"127.0.0.1\tlocalhost\n::1\tlocalhost\n".to_vec());
        write_new("hosts", &hosts)?;
        write_new("resolv.conf", &resolv_conf(config))?;
        if !config.host_ipc {
            self.mount_shm()?;
        }
        Ok(())
    }

    fn mount_shm(&self) -> Result<(), String> {
        use nix::mount::{mount, MsFlags};
        let mkdir = |d: &Path| {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))
        };
        let shm = self.shm();
        mkdir(&shm)?;
        if is_mountpoint(&shm) {
            return Ok(());
        }
        let source = self.shm_source.as_deref().unwrap_or(&shm);
        mkdir(source)?;
        if !is_mountpoint(source) {
            mount(
                Some("shm"),
                source,
                Some("tmpfs"),
                MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(SHM_OPTIONS),
            )
            .map_err(|e| format!("mount shm tmpfs on {}: {e}", source.display()))?;
        }
        if source != shm {
            mount(
                Some(source),
                &shm,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("bind {} to {}: {e}", source.display(), shm.display()))?;
        }
        Ok(())
    }

    /// Unmounts the shm tmpfs and removes both directories. Errors are reported, the rest is
    /// still removed.
    pub fn remove(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for shm in [Some(self.shm()), self.shm_source.clone()]
            .into_iter()
            .flatten()
        {
            while is_mountpoint(&shm) {
                if let Err(e) = nix::mount::umount2(&shm, nix::mount::MntFlags::MNT_DETACH) {
                    errors.push(format!("unmount {}: {e}", shm.display()));
                    break;
                }
            }
            if shm.exists() && shm.parent() != Some(self.state_dir.as_path()) {
                let _ = std::fs::remove_dir(&shm);
            }
        }
        for d in [&self.root_dir, &self.state_dir] {
            match std::fs::remove_dir_all(d) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    errors.push(format!("remove {}: {e}", d.display()))
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// A directory on another filesystem than its parent.
fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.dev() != parent.dev(),
        _ => false,
    }
}

/// resolv.conf from the pod's DNS config, or the node's own when the pod has none (as
/// containerd's pause controller does).
pub fn resolv_conf(config: &PodConfig) -> Vec<u8> {
    let Some(d) = config
        .dns
        .as_ref()
        .filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return std::fs::read("/etc/resolv.conf").unwrap_or_default();
    };
    let mut out = String::new();
    if !d.searches.is_empty() {
        out.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for s in &d.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !d.options.is_empty() {
        out.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_cri_dirs_from_the_bundle_and_refuses_other_layouts() {
        let t = std::env::temp_dir().join(format!("tender-files-{}", std::process::id()));
        let bundle = t
            .join("state")
            .join(CONTROLLER_DIR)
            .join("k8s.io")
            .join("p1");
        let work = t
            .join("root")
            .join(CONTROLLER_DIR)
            .join("k8s.io")
            .join("p1");
        std::fs::create_dir_all(&bundle).expect("mkdir");
        assert!(
            PodFiles::locate(&bundle, "k8s.io", "p1").is_err(),
            "no work link"
        );
        std::os::unix::fs::symlink(&work, bundle.join("work")).expect("symlink");
        let f = PodFiles::locate(&bundle, "k8s.io", "p1").expect("layout");
        assert_eq!(
            f.root_dir,
            t.join("root").join(CRI_DIR).join("sandboxes/p1")
        );
        assert_eq!(
            f.state_dir,
            t.join("state").join(CRI_DIR).join("sandboxes/p1")
        );
        assert!(PodFiles::locate(&bundle, "default", "p1").is_err());
        assert!(PodFiles::locate(&bundle, "k8s.io", "p2").is_err());
        let _ = std::fs::remove_dir_all(&t);
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let c = PodConfig {
            dns: Some(super::super::podconfig::Dns {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["a.svc".into(), "svc".into()],
                options: vec!["ndots:5".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(resolv_conf(&c)).expect("utf8"),
            "search a.svc svc\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
    }
}
