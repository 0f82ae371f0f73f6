//! Idmapped rootfs mounts for containers in a user namespace.
//!
//! containerd 2.x sends such a container's rootfs with `uidmap=<ctr>:<host>:<len>[,...]` and
//! `gidmap=...` options (ranges separated by commas inside the one option). They name a user
//! namespace through which the mount is to be seen, so that files owned by the host ids show
//! as the container's ids. What is done with them is what containerd's own mount code does:
//!
//! * a user namespace with those mappings is made ([`userns_for`]): a short-lived child cloned
//!   into a new user namespace, whose maps the shim writes and whose namespace the shim opens;
//!   the child is then killed and its exit collected through the shim's reaper;
//! * an overlay ([`mount_overlay`]) is mounted over idmapped, read-only bind mounts of its
//!   lower layers, made in a scratch directory next to the target (see [`scratch_dir`]).
//!   The overlay holds private clones of its layers, so the scratch mounts are detached and
//!   their directories removed right after the overlay is mounted (or failed);
//! * any other mount (a bind, typically) is mounted as usual and then replaced in place by an
//!   idmapped clone of itself ([`idmap_in_place`]).
//!
//! The bind mounts use the new mount API: `open_tree(OPEN_TREE_CLONE)`,
//! `mount_setattr(MOUNT_ATTR_IDMAP)` with the user namespace's fd, `move_mount`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use tokio::sync::oneshot;

use super::{mount_plain, MountSpec};
use crate::reaper::{Exit, Reaper};

/// The option prefixes (containerd's spelling).
pub const UIDMAP: &str = "uidmap=";
pub const GIDMAP: &str = "gidmap=";
/// The kernel takes at most this many ranges per map (since Linux 4.15).
const MAX_RANGES: usize = 340;
/// Overlay takes at most this many lower layers.
const MAX_LOWER: usize = 500;

/// One `container:host:length` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub len: u32,
}

/// The uid and gid mappings of a mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// At most 80 characters of untrusted text, for error messages.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

impl IdMapping {
    /// The mapping a mount's options ask for: None without `uidmap=`/`gidmap=`; an error for
    /// a malformed one, for only one of the two, or for either given twice.
    pub fn from_options(options: &[String]) -> io::Result<Option<IdMapping>> {
        let (mut uid, mut gid) = (None, None);
        for o in options {
            let (slot, name) = if let Some(v) = o.strip_prefix(UIDMAP) {
                (uid.replace(v), "uidmap=")
            } else if let Some(v) = o.strip_prefix(GIDMAP) {
                (gid.replace(v), "gidmap=")
            } else {
                continue;
            };
            if slot.is_some() {
                return Err(invalid(format!("mount option {name} given more than once")));
            }
        }
        match (uid, gid) {
            (None, None) => Ok(None),
            (Some(u), Some(g)) => Ok(Some(IdMapping {
                uids: parse_ranges("uidmap", u)?,
                gids: parse_ranges("gidmap", g)?,
            })),
            (Some(_), None) => Err(invalid(
                "mount option uidmap= without gidmap= (an idmapped mount needs both)".into(),
            )),
            (None, Some(_)) => Err(invalid(
                "mount option gidmap= without uidmap= (an idmapped mount needs both)".into(),
            )),
        }
    }

    /// A map as `/proc/<pid>/uid_map` takes it: one `container host length` line per range.
    fn proc_text(ranges: &[IdRange]) -> String {
        ranges
            .iter()
            .map(|r| format!("{} {} {}\n", r.container, r.host, r.len))
            .collect()
    }
}

/// A decimal id or length: digits only (no sign, no spaces), fitting in 32 bits.
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `c:h:l[,c:h:l...]`, checked the way the kernel checks a map (so that a bad one is refused
/// here with a clear message rather than with EINVAL from a /proc write).
fn parse_ranges(name: &str, value: &str) -> io::Result<Vec<IdRange>> {
    let bad = |why: &str| invalid(format!("mount option {name}={:?}: {why}", shown(value)));
    if value.is_empty() {
        return Err(bad("empty"));
    }
    let mut ranges = Vec::new();
    for part in value.split(',') {
        if ranges.len() == MAX_RANGES {
            return Err(bad(&format!("more than {MAX_RANGES} ranges")));
        }
        let fields: Vec<&str> = part.split(':').collect();
        let [c, h, l] = fields[..] else {
            return Err(bad(&format!(
                "{:?} is not container-id:host-id:length",
                shown(part)
            )));
        };
        let (Some(container), Some(host), Some(len)) = (parse_id(c), parse_id(h), parse_id(l))
        else {
            return Err(bad(&format!(
                "{:?}: ids and length must be decimal numbers below 2^32",
                shown(part)
            )));
        };
        if len == 0 {
            return Err(bad(&format!("{:?}: zero length", shown(part))));
        }
        // The kernel refuses a range whose end wraps (id 4294967295 is never mapped).
        let limit = u64::from(u32::MAX);
        if u64::from(container) + u64::from(len) > limit || u64::from(host) + u64::from(len) > limit
        {
            return Err(bad(&format!(
                "{:?}: range ends past id 4294967294",
                shown(part)
            )));
        }
        ranges.push(IdRange {
            container,
            host,
            len,
        });
    }
    for (side, key) in [
        (
            "container",
            (|r: &IdRange| r.container) as fn(&IdRange) -> u32,
        ),
        ("host", |r: &IdRange| r.host),
    ] {
        let mut sorted = ranges.clone();
        sorted.sort_unstable_by_key(key);
        for w in sorted.windows(2) {
            if u64::from(key(&w[0])) + u64::from(w[0].len) > u64::from(key(&w[1])) {
                return Err(bad(&format!("overlapping {side} id ranges")));
            }
        }
    }
    Ok(ranges)
}

// ---------------------------------------------------------------------------------------------
// The user namespace
// ---------------------------------------------------------------------------------------------

/// How long the killed helper may take to be reaped before we stop waiting (the reaper still
/// collects it; only our wait ends).
const HELPER_EXIT_WAIT: Duration = Duration::from_secs(5);

/// A user namespace with `map`'s mappings, as an open `/proc/<pid>/ns/user`.
///
/// A helper child is cloned straight into a new user namespace and only waits (raw system
/// calls only: the shim is multi-threaded); the shim writes its `uid_map` and `gid_map` (as
/// root of the parent namespace, no `setgroups` denial is needed), opens its namespace,
/// kills it and waits for the reaper to hand over its exit.
pub async fn userns_for(map: &IdMapping, reaper: &Reaper) -> io::Result<OwnedFd> {
    let uid_map = IdMapping::proc_text(&map.uids);
    let gid_map = IdMapping::proc_text(&map.gids);
    let (pid, exit) = clone_waiting_child(reaper)?;
    let ns = open_userns(pid, &uid_map, &gid_map);
    // Our own unreaped child: the pid cannot have been recycled.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    if tokio::time::timeout(HELPER_EXIT_WAIT, exit).await.is_err() {
        log::warn!("user namespace helper {pid}: no exit within {HELPER_EXIT_WAIT:?}");
    }
    ns
}

/// Clones the helper into a new user namespace and subscribes to its exit, with nothing in
/// between that could await (so the reaper cannot see the exit first).
fn clone_waiting_child(reaper: &Reaper) -> io::Result<(i32, oneshot::Receiver<Exit>)> {
    let parent = std::process::id() as libc::pid_t;
    let not_before = Instant::now();
    // SAFETY: clone without CLONE_VM and without a new stack is a fork. The child makes only
    // async-signal-safe system calls (prctl, getppid, pause, _exit) and never returns into
    // Rust code that could take a lock another thread held.
    let pid =
        unsafe { crate::clone_like_fork((libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong) };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            loop {
                libc::pause();
            }
        }
    }
    if pid < 0 {
        return Err(io::Error::other(format!(
            "clone a user namespace for an idmapped mount: {}",
            io::Error::last_os_error()
        )));
    }
    let pid = pid as i32;
    Ok((pid, reaper.subscribe(pid, not_before)))
}

fn open_userns(pid: i32, uid_map: &str, gid_map: &str) -> io::Result<OwnedFd> {
    for (file, text) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        // One write: the kernel takes a map only whole.
        std::fs::write(&path, text).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("idmapped mount: write {file} of its user namespace: {e}"),
            )
        })?;
    }
    let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| io::Error::new(e.kind(), format!("open the mount's user namespace: {e}")))?;
    Ok(OwnedFd::from(f))
}

// ---------------------------------------------------------------------------------------------
// Idmapped bind mounts (new mount API)
// ---------------------------------------------------------------------------------------------

// <linux/mount.h>, defined here so that an older libc does not matter.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("path {:?} contains NUL", p.display())))
}

/// A detached copy of the mount (tree, if `recursive`) at `path`.
fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: a NUL-terminated path that outlives the call; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Makes the detached mount `tree` idmapped through `userns` (plus `extra` attributes).
fn set_idmap(
    tree: &OwnedFd,
    userns: BorrowedFd<'_>,
    extra: u64,
    recursive: bool,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | extra,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `attr` is a valid mount_attr of the size passed; the path is an empty C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches the detached mount `tree` on `dest`.
fn move_to(tree: &OwnedFd, dest: &Path) -> io::Result<()> {
    let c = cpath(dest)?;
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An idmapped bind mount of `source` on `dest`.
fn bind_idmapped(
    source: &Path,
    dest: &Path,
    userns: BorrowedFd<'_>,
    extra: u64,
    recursive: bool,
) -> io::Result<()> {
    let tree = open_tree_clone(source, recursive).map_err(|e| ctx("open_tree", source, e))?;
    set_idmap(&tree, userns, extra, recursive).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EPERM) => {
                " (does the kernel support idmapped mounts of this filesystem?)"
            }
            _ => "",
        };
        let e = io::Error::new(e.kind(), format!("{e}{hint}"));
        ctx("mount_setattr(IDMAP)", source, e)
    })?;
    move_to(&tree, dest).map_err(|e| ctx("move_mount", dest, e))
}

fn ctx(call: &str, p: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{call} {}: {e}", p.display()))
}

/// Replaces the mount just made on `target` by an idmapped clone of itself (its whole tree
/// for an `rbind`), as containerd does for anything but an overlay.
pub(crate) fn idmap_in_place(
    m: &MountSpec<'_>,
    target: &Path,
    userns: BorrowedFd<'_>,
) -> io::Result<()> {
    let recursive = m.options.iter().any(|o| o == "rbind");
    bind_idmapped(target, target, userns, 0, recursive)
        .map_err(|e| io::Error::new(e.kind(), format!("idmapped mount of {}: {e}", m.source)))
}

// ---------------------------------------------------------------------------------------------
// Overlay
// ---------------------------------------------------------------------------------------------

/// Where the idmapped copies of an overlay's lower layers are attached while the overlay is
/// mounted on `target`: `<target>.idmapped/<n>` (in the bundle, next to `rootfs`).
pub fn scratch_dir(target: &Path) -> Option<PathBuf> {
    let name = target.file_name()?;
    let mut scratch = name.to_os_string();
    scratch.push(".idmapped");
    Some(target.with_file_name(scratch))
}

/// Detaches whatever is mounted in [`scratch_dir`] and removes its (empty) directories.
/// Nothing there is fine. Only empty directories are removed: a mount that would not go
/// away leaves its directory, never a deleted layer.
pub fn remove_scratch(target: &Path) -> io::Result<()> {
    let Some(dir) = scratch_dir(target) else {
        return Ok(());
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ctx("read", &dir, e)),
    };
    let mut first_err = None;
    for entry in entries.flatten() {
        let p = entry.path();
        // Possibly stacked (a retried mount); no symlink is followed.
        for _ in 0..64 {
            if umount2(&p, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).is_err() {
                break;
            }
        }
        if let Err(e) = std::fs::remove_dir(&p) {
            first_err.get_or_insert(ctx("remove", &p, e));
        }
    }
    if let Err(e) = std::fs::remove_dir(&dir) {
        first_err.get_or_insert(ctx("remove", &dir, e));
    }
    first_err.map_or(Ok(()), Err)
}

/// Mounts the overlay `m` on `target` over idmapped (read-only) bind mounts of its lower
/// layers. The lower layers are named relative to the scratch directory (`lowerdir=0:1:...`,
/// from a thread with its own working directory), so that many layers cannot exceed the
/// kernel's one page of mount options.
pub(crate) fn mount_overlay(
    m: &MountSpec<'_>,
    target: &Path,
    userns: BorrowedFd<'_>,
) -> io::Result<()> {
    const LOWER: &str = "lowerdir=";
    let mut found = m
        .options
        .iter()
        .enumerate()
        .filter(|(_, o)| o.starts_with(LOWER));
    let (idx, lowerdir) = match (found.next(), found.next()) {
        (Some(f), None) => f,
        (None, _) => return Err(invalid("idmapped overlay without lowerdir=".into())),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "idmapped overlay with more than one lowerdir=".into(),
            ))
        }
    };
    let lowers: Vec<&str> = lowerdir[LOWER.len()..].split(':').collect();
    if lowers.len() > MAX_LOWER {
        return Err(invalid(format!(
            "idmapped overlay with {} lower layers (at most {MAX_LOWER})",
            lowers.len()
        )));
    }
    if let Some(bad) = lowers.iter().find(|l| !l.starts_with('/')) {
        return Err(invalid(format!(
            "idmapped overlay: lower layer {:?} is not an absolute path",
            shown(bad)
        )));
    }
    let target = std::path::absolute(target)?;
    let scratch = scratch_dir(&target)
        .ok_or_else(|| invalid(format!("no place next to {}", target.display())))?;
    // Leftovers of an attempt the shim did not live to clean up.
    remove_scratch(&target)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&scratch)
        .map_err(|e| ctx("create", &scratch, e))?;
    let mounted = (|| {
        for (i, lower) in lowers.iter().enumerate() {
            let dir = scratch.join(i.to_string());
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| ctx("create", &dir, e))?;
            bind_idmapped(Path::new(lower), &dir, userns, MOUNT_ATTR_RDONLY, false)
                .map_err(|e| io::Error::new(e.kind(), format!("idmap lower layer {lower}: {e}")))?;
        }
        let relative: Vec<String> = (0..lowers.len()).map(|i| i.to_string()).collect();
        let mut options = m.options.to_vec();
        options[idx] = format!("{LOWER}{}", relative.join(":"));
        let (kind, source) = (m.kind.to_string(), m.source.to_string());
        let (cwd, on) = (scratch.clone(), target.clone());
        let worker = std::thread::Builder::new()
            .name("idmap-overlay".into())
            .spawn(move || -> io::Result<()> {
                // This thread's working directory only; the thread ends after the mount.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                    .map_err(|e| io::Error::other(format!("unshare(CLONE_FS): {e}")))?;
                std::env::set_current_dir(&cwd).map_err(|e| ctx("chdir", &cwd, e))?;
                let spec = MountSpec {
                    kind: &kind,
                    source: &source,
                    options: &options,
                };
                mount_plain(&spec, &on)
            })?;
        worker
            .join()
            .map_err(|_| io::Error::other("idmapped overlay mount thread panicked"))?
    })();
    // The overlay holds private clones of its layers: the scratch mounts go either way.
    let cleaned = remove_scratch(&target);
    mounted.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("idmapped overlay (lower layers {:?}): {e}", shown(lowerdir)),
        )
    })?;
    if let Err(e) = cleaned {
        log::warn!("idmapped overlay on {}: cleanup: {e}", target.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mappings_parse() {
        let m = IdMapping::from_options(&opts(&[
            "uidmap=0:3014656:65536",
            "gidmap=0:3014656:1,1:4000000:10",
            "lowerdir=/a",
        ]))
        .expect("valid")
        .expect("some");
        assert_eq!(
            m.uids,
            vec![IdRange {
                container: 0,
                host: 3014656,
                len: 65536
            }]
        );
        assert_eq!(m.gids.len(), 2);
        assert_eq!(IdMapping::proc_text(&m.gids), "0 3014656 1\n1 4000000 10\n");
        assert_eq!(
            IdMapping::from_options(&opts(&["ro", "lowerdir=/a"])).ok(),
            Some(None)
        );
    }

    #[test]
    fn bad_mappings_are_refused() {
        for (uid, gid, why) in [
            ("uidmap=0:100000", "gidmap=0:100000:1", "not container-id"),
            (
                "uidmap=0:100000:1:2",
                "gidmap=0:100000:1",
                "not container-id",
            ),
            ("uidmap=", "gidmap=0:100000:1", "empty"),
            ("uidmap=0:100000:0", "gidmap=0:100000:1", "zero length"),
            ("uidmap=-1:100000:1", "gidmap=0:100000:1", "decimal"),
            ("uidmap=+1:100000:1", "gidmap=0:100000:1", "decimal"),
            ("uidmap=0: 100000:1", "gidmap=0:100000:1", "decimal"),
            ("uidmap=0:x:1", "gidmap=0:100000:1", "decimal"),
            ("uidmap=0:4294967296:1", "gidmap=0:100000:1", "decimal"),
            ("uidmap=0:4294967295:1", "gidmap=0:100000:1", "past id"),
            (
                "uidmap=0:100000:65536",
                "gidmap=4294967000:0:1000",
                "past id",
            ),
            (
                "uidmap=0:100000:10,5:200000:10",
                "gidmap=0:1:1",
                "overlapping container",
            ),
            (
                "uidmap=0:100000:10,10:100005:10",
                "gidmap=0:1:1",
                "overlapping host",
            ),
            ("uidmap=0:100000:10,", "gidmap=0:1:1", "not container-id"),
        ] {
            let e = IdMapping::from_options(&opts(&[uid, gid])).expect_err(uid);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains(why), "{uid} {gid}: {e}");
        }
        let many: Vec<String> = (0..341).map(|i| format!("{i}:{}:1", 100000 + i)).collect();
        let e = IdMapping::from_options(&opts(&[
            &format!("uidmap={}", many.join(",")),
            "gidmap=0:1:1",
        ]))
        .expect_err("too many");
        assert!(e.to_string().contains("more than 340"), "{e}");
        for o in [
            &["uidmap=0:1:1"][..],
            &["gidmap=0:1:1"],
            &["uidmap=0:1:1", "gidmap=0:1:1", "uidmap=0:1:1"],
        ] {
            let e = IdMapping::from_options(&opts(o)).expect_err("refused");
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{o:?}: {e}");
        }
        // Adjacent ranges are fine.
        let ok = IdMapping::from_options(&opts(&[
            "uidmap=0:100000:10,10:100010:10",
            "gidmap=0:4294967294:1",
        ]));
        assert!(ok.is_ok_and(|m| m.is_some()));
    }

    #[test]
    fn scratch_dir_is_next_to_the_target() {
        assert_eq!(
            scratch_dir(Path::new("/run/b/rootfs")),
            Some(PathBuf::from("/run/b/rootfs.idmapped"))
        );
        assert_eq!(scratch_dir(Path::new("/")), None);
    }

    fn mount_points_under(p: &Path) -> Vec<String> {
        let needle = p.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&needle))
            .collect()
    }

    /// Children of this process that nobody reaped (all threads).
    fn children() -> Vec<String> {
        let mut out = Vec::new();
        for t in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(text.split_whitespace().map(String::from));
        }
        out
    }

    struct Scratch(PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let mut mps = mount_points_under(&self.0);
            mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mps {
                let _ = umount2(m.as_str(), MntFlags::MNT_DETACH);
            }
            if mount_points_under(&self.0).is_empty() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn file_owned(p: &Path, uid: u32, gid: u32) {
        std::fs::write(p, b"x").expect("write");
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    }

    fn ids(p: &Path) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        (md.uid(), md.gid())
    }

    /// Root only (skips otherwise): an overlay and a bind with `uidmap=0:100000:65536` over
    /// temp dirs show a file owned by 0 on disk as owned by 100000 (the container's root); no scratch mount, directory or zombie is left;
    /// a failing idmapped overlay leaves nothing either.
    #[tokio::test(flavor = "current_thread")]
    async fn idmapped_overlay_and_bind_mounts() {
        let _children = crate::CHILD_PROCESS_TESTS.lock().await;
        if !nix::unistd::geteuid().is_root() {
            println!("skipping idmapped_overlay_and_bind_mounts: not root");
            return;
        }
        let reaper = Reaper::new();
        let reaping = tokio::spawn(reaper.clone().run());
        let base = std::env::temp_dir().join(format!(
            "tender-idmap-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        let _cleanup = Scratch(base.clone());
        for d in ["l1", "l2", "upper", "work", "bundle/rootfs", "src"] {
            std::fs::create_dir_all(base.join(d)).expect("mkdir");
        }
        // An image's files, owned by the container's ids on disk (as unpacked, unshifted).
        file_owned(&base.join("l1/owned"), 0, 0);
        file_owned(&base.join("l2/other"), 5, 7);
        file_owned(&base.join("l1/unmapped"), 100000, 100000);
        file_owned(&base.join("src/owned"), 0, 1);
        let rootfs = base.join("bundle/rootfs");
        let scratch = base.join("bundle/rootfs.idmapped");
        let p = |s: &str| base.join(s).display().to_string();
        let options = opts(&[
            "uidmap=0:100000:65536",
            "gidmap=0:100000:65536",
            &format!("lowerdir={}:{}", p("l1"), p("l2")),
            &format!("upperdir={}", p("upper")),
            &format!("workdir={}", p("work")),
        ]);
        let map = IdMapping::from_options(&options)
            .expect("valid")
            .expect("some");
        let ns = userns_for(&map, &reaper).await.expect("user namespace");
        let spec = MountSpec {
            kind: "overlay",
            source: "overlay",
            options: &options,
        };
        // Without the namespace it is refused, not passed to the kernel.
        let e = super::super::mount_one(&spec, &rootfs, None).expect_err("needs userns");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        use std::os::fd::AsFd;
        super::super::mount_one(&spec, &rootfs, Some(ns.as_fd())).expect("idmapped overlay");
        // Seen from the node: the container's ids shifted to the host's (0 → 100000), which
        // the container's user namespace (0:100000:65536) shows as its own again.
        assert_eq!(ids(&rootfs.join("owned")), (100000, 100000));
        assert_eq!(ids(&rootfs.join("other")), (100005, 100007));
        // An id outside the mapping's container range shows as the overflow id.
        assert_eq!(ids(&rootfs.join("unmapped")), (65534, 65534));
        assert!(!scratch.exists(), "scratch dir left after the mount");
        assert_eq!(mount_points_under(&scratch), Vec::<String>::new());
        assert_eq!(mount_points_under(&rootfs).len(), 1);
        super::super::unmount_all(&rootfs).expect("unmount");
        assert_eq!(
            mount_points_under(&base.join("bundle")),
            Vec::<String>::new()
        );

        // A bind (read-only): the bind itself is idmapped.
        let bind_opts = opts(&[
            "rbind",
            "ro",
            "uidmap=0:100000:65536",
            "gidmap=0:100000:65536",
        ]);
        let bind = MountSpec {
            kind: "bind",
            source: &p("src"),
            options: &bind_opts,
        };
        super::super::mount_one(&bind, &rootfs, Some(ns.as_fd())).expect("idmapped bind");
        assert_eq!(ids(&rootfs.join("owned")), (100000, 100001));
        let w = std::fs::write(rootfs.join("new"), b"x").expect_err("read-only");
        assert_eq!(w.raw_os_error(), Some(libc::EROFS));
        super::super::unmount_all(&rootfs).expect("unmount bind");
        assert_eq!(
            mount_points_under(&base.join("bundle")),
            Vec::<String>::new()
        );
        assert_eq!(ids(&base.join("src/owned")), (0, 1));

        // A missing lower layer: an error naming it, nothing mounted, no scratch left.
        let broken = opts(&[
            "uidmap=0:100000:65536",
            "gidmap=0:100000:65536",
            &format!("lowerdir={}:{}", p("l1"), p("missing")),
            &format!("upperdir={}", p("upper")),
            &format!("workdir={}", p("work")),
        ]);
        let spec = MountSpec {
            kind: "overlay",
            source: "overlay",
            options: &broken,
        };
        let e = super::super::mount_one(&spec, &rootfs, Some(ns.as_fd())).expect_err("missing");
        assert!(e.to_string().contains("missing"), "{e}");
        assert!(!scratch.exists(), "scratch dir left after a failure");
        assert_eq!(
            mount_points_under(&base.join("bundle")),
            Vec::<String>::new()
        );

        // Leftovers of a crashed shim go with unmount_all.
        std::fs::create_dir_all(scratch.join("0")).expect("mkdir");
        bind_idmapped(
            &base.join("l1"),
            &scratch.join("0"),
            ns.as_fd(),
            MOUNT_ATTR_RDONLY,
            false,
        )
        .expect("bind");
        super::super::unmount_all(&rootfs).expect("unmount leftovers");
        assert!(!scratch.exists());
        assert_eq!(
            mount_points_under(&base.join("bundle")),
            Vec::<String>::new()
        );
        assert!(base.join("l1/owned").exists(), "a lower layer lost files");

        // The helpers were reaped by the reaper: no child left.
        drop(ns);
        assert_eq!(children(), Vec::<String>::new());
        reaping.abort();
    }
}
