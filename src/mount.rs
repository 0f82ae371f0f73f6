//! Mounting the container's rootfs from the `Mount` list containerd sends with Create.
//!
//! A container in a user namespace gets its rootfs from containerd 2.x with two options that
//! are not kernel options, `uidmap=<ctr>:<host>:<len>[,...]` and `gidmap=...`: the rootfs must
//! show the host ids as the container's. They are handled here as containerd's own mount code
//! does (see [`idmap`]): an overlay is mounted over idmapped bind mounts of its lower layers,
//! any other mount is itself made idmapped.

use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub mod idmap;

/// A mount as containerd describes it.
pub struct MountSpec<'a> {
    pub kind: &'a str,
    pub source: &'a str,
    pub options: &'a [String],
}

/// Splits mount options into flags and the filesystem-specific data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, false),
            "rw" => (MsFlags::MS_RDONLY, true),
            "nosuid" => (MsFlags::MS_NOSUID, false),
            "suid" => (MsFlags::MS_NOSUID, true),
            "nodev" => (MsFlags::MS_NODEV, false),
            "dev" => (MsFlags::MS_NODEV, true),
            "noexec" => (MsFlags::MS_NOEXEC, false),
            "exec" => (MsFlags::MS_NOEXEC, true),
            "sync" => (MsFlags::MS_SYNCHRONOUS, false),
            "async" => (MsFlags::MS_SYNCHRONOUS, true),
            "remount" => (MsFlags::MS_REMOUNT, false),
            "bind" => (MsFlags::MS_BIND, false),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, false),
            "noatime" => (MsFlags::MS_NOATIME, false),
            "atime" => (MsFlags::MS_NOATIME, true),
            "nodiratime" => (MsFlags::MS_NODIRATIME, false),
            "relatime" => (MsFlags::MS_RELATIME, false),
            "strictatime" => (MsFlags::MS_STRICTATIME, false),
            "mand" => (MsFlags::MS_MANDLOCK, false),
            "nomand" => (MsFlags::MS_MANDLOCK, true),
            "defaults" => (MsFlags::empty(), false),
            // Not kernel options: see `idmap` (they name the user namespace to map through).
            o if o.starts_with(idmap::UIDMAP) || o.starts_with(idmap::GIDMAP) => continue,
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        if clear {
            flags.remove(set);
        } else {
            flags.insert(set);
        }
    }
    (flags, data.join(","))
}

/// Mounts `m` on `target`. A mount with `uidmap=`/`gidmap=` options needs the user namespace
/// made from them ([`idmap::userns_for`]) as `userns`; without one it is refused.
pub fn mount_one(
    m: &MountSpec<'_>,
    target: &Path,
    userns: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Result<()> {
    check_fields(m)?;
    match (idmap::IdMapping::from_options(m.options)?, userns) {
        (None, _) => mount_plain(m, target),
        (Some(_), Some(ns)) if m.kind == "overlay" => idmap::mount_overlay(m, target, ns),
        (Some(_), Some(ns)) => {
            mount_plain(m, target)?;
            idmap::idmap_in_place(m, target, ns).inspect_err(|_| {
                // Leave nothing half done: the plain mount goes too.
                let _ = umount2(target, MntFlags::MNT_DETACH);
            })
        }
        (Some(_), None) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a mount with uidmap=/gidmap= options needs its user namespace",
        )),
    }
}

fn check_fields(m: &MountSpec<'_>) -> io::Result<()> {
    if m.source.contains('\0')
        || m.kind.contains('\0')
        || m.options.iter().any(|o| o.contains('\0'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "mount field contains NUL",
        ));
    }
    Ok(())
}

/// The mount as the kernel takes it (uidmap=/gidmap= are left out).
pub(crate) fn mount_plain(m: &MountSpec<'_>, target: &Path) -> io::Result<()> {
    let (flags, data) = parse_options(m.options);
    let kind = if m.kind == "bind" { "none" } else { m.kind };
    let data_opt = if data.is_empty() {
        None
    } else {
        Some(data.as_str())
    };
    let base = flags & !MsFlags::MS_RDONLY;
    let bind = flags.contains(MsFlags::MS_BIND);
    mount(
        Some(m.source),
        target,
        Some(kind),
        if bind { base } else { flags },
        data_opt,
    )
    .map_err(|e| {
        // The options name the layers (lowerdir=…), which is what tells an operator which
        // one is broken; bounded, since overlay option strings can be long.
        let shown: String = data.chars().take(512).collect();
        io::Error::other(format!(
            "mount {} ({}) on {} with options {shown:?}: {e}",
            m.source,
            m.kind,
            target.display()
        ))
    })?;
    // A read-only bind mount needs a second, remounting call.
    if bind && flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("remount {} read-only: {e}", target.display())))?;
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (lazily if busy), and whatever an interrupted
/// idmapped mount left next to it (see [`idmap::scratch_dir`]). Missing or unmounted is fine.
pub fn unmount_all(target: &Path) -> io::Result<()> {
    let stacked = unmount_stack(target);
    let scratch = idmap::remove_scratch(target);
    stacked.and(scratch)
}

fn unmount_stack(target: &Path) -> io::Result<()> {
    for _ in 0..64 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH)
                    .map_err(|e| io::Error::other(format!("unmount {}: {e}", target.display())))?;
            }
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "unmount {}: {e}",
                    target.display()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["ro", "nosuid", "lowerdir=/a:/b", "upperdir=/u", "rbind"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = parse_options(&opts);
        assert!(flags.contains(
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_BIND | MsFlags::MS_REC
        ));
        assert_eq!(data, "lowerdir=/a:/b,upperdir=/u");
        let (flags, _) = parse_options(&["ro".to_string(), "rw".to_string()]);
        assert!(!flags.contains(MsFlags::MS_RDONLY));
        // Not kernel options: left to the idmapped mount code.
        let (_, data) = parse_options(&[
            "uidmap=0:1:2".to_string(),
            "gidmap=0:1:2".to_string(),
            "lowerdir=/a".to_string(),
        ]);
        assert_eq!(data, "lowerdir=/a");
    }
}
