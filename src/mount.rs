//! Mounting the container's rootfs from the `Mount` list containerd sends with Create.

use std::io;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

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

pub fn mount_one(m: &MountSpec<'_>, target: &Path) -> io::Result<()> {
    if m.source.contains('\0')
        || m.kind.contains('\0')
        || m.options.iter().any(|o| o.contains('\0'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "mount field contains NUL",
        ));
    }
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

/// Unmounts everything stacked on `target` (lazily if busy). Missing or unmounted is fine.
pub fn unmount_all(target: &Path) -> io::Result<()> {
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
    }
}
