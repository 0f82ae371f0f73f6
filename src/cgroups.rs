//! cgroup helpers: placing the shim (ShimCgroup).

use std::io;
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Every hierarchy a path can be joined to: the v2 root on a unified host, or each v1
/// controller mount (plus the v2 mount of a hybrid host).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let p = e.path();
            if p.join("cgroup.procs").exists()
                && !std::fs::symlink_metadata(&p)
                    .map(|m| m.file_type().is_symlink())
                    .unwrap_or(true)
            {
                out.push(p);
            }
        }
    }
    out
}

/// Moves `pid` into the cgroup `path` (relative to each hierarchy's root).
pub fn move_to(path: &str, pid: u32) -> io::Result<()> {
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") || path.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cgroup path must not contain '..'",
        ));
    }
    let mut moved = false;
    for h in hierarchies() {
        let dir = h.join(rel);
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        if std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok() {
            moved = true;
        }
    }
    if moved {
        Ok(())
    } else {
        Err(io::Error::other("no cgroup hierarchy accepted the shim"))
    }
}
