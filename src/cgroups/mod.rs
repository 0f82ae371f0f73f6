//! cgroup helpers: placing the shim (`move_to`), and reading a process's cgroup:
//! metrics (`ProcessCgroup::stats`, see `stats.rs`) and OOM notifications
//! (`ProcessCgroup::watch_oom`, see `oom.rs`).

use std::io;
use std::path::{Path, PathBuf};

mod oom;
mod stats;

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

/// Expands a systemd slice unit name into its cgroup path, as systemd and runc's
/// `ExpandSlice` do: `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`, `-.slice` → `/` (the
/// root slice). Each dash opens a parent slice, so a name with `/`, an empty component
/// (`a--b.slice`, `-a.slice`, `a-.slice`, `.slice`), a character systemd does not allow in a
/// unit name, or more than 255 characters is refused.
pub fn expand_slice(name: &str) -> Result<String, String> {
    const SUFFIX: &str = ".slice";
    let bad = |why: &str| Err(format!("invalid systemd slice name {name:?}: {why}"));
    let Some(stem) = name.strip_suffix(SUFFIX) else {
        return bad("it must end with \".slice\"");
    };
    if name.contains('/') {
        return bad("a slice name has no '/' (its parents are named by its dashes)");
    }
    if name.len() > 255 {
        return bad("longer than 255 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\')))
    {
        return bad(&format!("{c:?} is not allowed in a systemd unit name"));
    }
    if stem == "-" {
        return Ok("/".into());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in stem.split('-') {
        if component.is_empty() {
            return bad("empty component (a leading, trailing or doubled '-')");
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(component);
        path.push_str(SUFFIX);
        prefix.push_str(component);
        prefix.push('-');
    }
    Ok(path)
}

/// What [`create`] did.
#[derive(Debug, Default)]
pub struct Created {
    /// The directories this call made (absolute, in every hierarchy; parents before their
    /// children). Only these may later be removed as ancestors, see [`remove_created`].
    pub dirs: Vec<PathBuf>,
    /// Hierarchies where the path could not be made.
    pub errors: Vec<String>,
}

/// Makes the cgroup `path` (relative to each hierarchy's root) and its missing parents in
/// every hierarchy, one `mkdir` at a time so that what already existed (made by the kubelet,
/// systemd, runc or another pod) is told apart from what this call made. A cpuset directory
/// made here gets its parent's `cpuset.cpus`/`cpuset.mems` (v1 leaves them empty, and an
/// empty cpuset takes no process), as runc does.
pub fn create(path: &str) -> Created {
    let mut out = Created::default();
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") || path.contains('\0') {
        out.errors
            .push(format!("cgroup path {path:?} must not contain '..'"));
        return out;
    }
    for h in hierarchies() {
        let cpuset_v1 = h.join("cpuset.cpus").exists();
        let mut dir = h.clone();
        for component in rel.split('/').filter(|c| !c.is_empty()) {
            let parent = dir.clone();
            dir.push(component);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    if cpuset_v1 {
                        inherit_cpuset(&parent, &dir);
                    }
                    out.dirs.push(dir.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    out.errors.push(format!("mkdir {}: {e}", dir.display()));
                    break;
                }
            }
        }
    }
    out
}

/// Copies the parent's CPUs and memory nodes into a fresh v1 cpuset directory.
fn inherit_cpuset(parent: &Path, dir: &Path) {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mine = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if mine.trim().is_empty() {
            if let Ok(theirs) = std::fs::read_to_string(parent.join(file)) {
                let _ = std::fs::write(dir.join(file), theirs.trim());
            }
        }
    }
}

/// Removes the directories [`create`] made, deepest first, each only while it is empty: the
/// kernel's `rmdir` refuses a cgroup with a process or a child cgroup in it (EBUSY), so a
/// directory someone else started using after Tender made it is left alone. Paths outside
/// the cgroup mounts (a tampered record) are ignored. Returns the directories left.
pub fn remove_created(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let roots = hierarchies();
    let mut dirs: Vec<&PathBuf> = dirs
        .iter()
        .filter(|d| {
            d.is_absolute()
                && d.starts_with(ROOT)
                && d.as_path() != Path::new(ROOT)
                && !roots.contains(d)
                && !d
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
        })
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    dirs.into_iter()
        .filter(|d| match std::fs::remove_dir(d) {
            Ok(()) => false,
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        })
        .cloned()
        .collect()
}

/// Removes the (empty) cgroup `path` from every hierarchy; true when none is left.
pub fn remove(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") || path.contains('\0') {
        return false;
    }
    let mut gone = true;
    for h in hierarchies() {
        let dir = h.join(rel);
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => gone = false,
            _ => {}
        }
    }
    gone
}

/// True on a pure cgroup v2 (unified) host: `/sys/fs/cgroup` itself is a cgroup2 mount.
/// A hybrid host (v1 controllers plus a cgroup2 mount at `/sys/fs/cgroup/unified`) is not.
pub fn is_unified() -> bool {
    match nix::sys::statfs::statfs(ROOT) {
        Ok(st) => st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC,
        Err(_) => Path::new(ROOT).join("cgroup.controllers").exists(),
    }
}

/// The cgroup(s) of a running process, resolved from /proc/<pid>/cgroup.
///
/// Resolution happens once, in [`ProcessCgroup::of_pid`]; the process may exit afterwards, the
/// directories stay valid until the cgroup is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessCgroup {
    layout: Layout,
}

/// Where a process's cgroup files live.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// v1 or hybrid host: one directory per controller.
    V1(V1Dirs),
    /// Unified host: the process's cgroup directory.
    V2(PathBuf),
}

/// The process's directory in each v1 controller hierarchy it is attached to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct V1Dirs {
    memory: Option<PathBuf>,
    cpu: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    pids: Option<PathBuf>,
    blkio: Option<PathBuf>,
    hugetlb: Option<PathBuf>,
    /// On a hybrid host: the process's directory in the cgroup2 mount (controllers such as
    /// hugetlb may be bound there instead of to a v1 hierarchy).
    unified: Option<PathBuf>,
}

impl V1Dirs {
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        [
            &self.memory,
            &self.cpu,
            &self.cpuacct,
            &self.pids,
            &self.blkio,
            &self.hugetlb,
        ]
        .into_iter()
        .flatten()
    }
}

impl ProcessCgroup {
    /// Resolves the cgroup(s) of `pid` from `/proc/<pid>/cgroup` and the cgroup mounts in
    /// `/proc/self/mountinfo`. Fails with the error of reading `/proc/<pid>/cgroup` (NotFound
    /// when the process is gone), or NotFound when no cgroup of the process could be located.
    pub fn of_pid(pid: i32) -> io::Result<ProcessCgroup> {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        resolve(&cgroup, &mountinfo, is_unified()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no cgroup found for pid {pid}"),
            )
        })
    }

    /// True once no live process is left in the cgroup (`cgroup.procs` lists no exited
    /// process); `None` when that cannot be read (the cgroup is gone, say).
    pub fn is_empty(&self) -> Option<bool> {
        let dir = match &self.layout {
            Layout::V1(dirs) => dirs.all().chain(dirs.unified.as_ref()).next()?,
            Layout::V2(dir) => dir,
        };
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
        Some(procs.trim().is_empty())
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup so far
    /// (`oom_kill` of memory.oom_control on v1, of memory.events on v2).
    pub fn oom_kills(&self) -> Option<u64> {
        let (file, key) = match &self.layout {
            Layout::V1(dirs) => (dirs.memory.as_ref()?.join("memory.oom_control"), "oom_kill"),
            Layout::V2(dir) => (dir.join("memory.events"), "oom_kill"),
        };
        let content = std::fs::read_to_string(file).ok()?;
        content.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == key).then_some(())?;
            it.next()?.parse().ok()
        })
    }
}

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controller,list:/path`.
#[derive(Debug, PartialEq, Eq)]
struct CgroupLine<'a> {
    controllers: Vec<&'a str>,
    path: &'a str,
}

/// Parses `/proc/<pid>/cgroup`; malformed lines are skipped. The v2 line (`0::/path`) has no
/// controllers.
fn parse_proc_cgroup(content: &str) -> Vec<CgroupLine<'_>> {
    content
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            if !path.starts_with('/') {
                return None;
            }
            let controllers = controllers.split(',').filter(|c| !c.is_empty()).collect();
            Some(CgroupLine { controllers, path })
        })
        .collect()
}

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, PartialEq, Eq)]
struct CgroupMount {
    /// The cgroup mounted there (field 4), usually "/".
    root: String,
    mount_point: PathBuf,
    /// cgroup2 rather than a v1 hierarchy.
    v2: bool,
    /// v1: the super options, which name the hierarchy's controllers (and `name=...`).
    options: Vec<String>,
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup and cgroup2 mounts listed in a mountinfo file; other lines are skipped.
fn parse_mountinfo(content: &str) -> Vec<CgroupMount> {
    content
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            if sep < 6 {
                return None;
            }
            let fstype = *fields.get(sep + 1)?;
            let v2 = match fstype {
                "cgroup" => false,
                "cgroup2" => true,
                _ => return None,
            };
            let options = fields
                .get(sep + 3)
                .map(|o| o.split(',').map(str::to_string).collect())
                .unwrap_or_default();
            Some(CgroupMount {
                root: unescape_mountinfo(fields[3]),
                mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
                v2,
                options,
            })
        })
        .collect()
}

/// `path` (from /proc/<pid>/cgroup) inside the mount, if the mount shows it.
fn dir_in_mount(mount: &CgroupMount, path: &str) -> Option<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let rel = path.strip_prefix(root)?;
    if !(rel.is_empty() || rel.starts_with('/')) {
        return None;
    }
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    })
}

/// Finds where a /proc/<pid>/cgroup path lives: in the first matching mount that shows it,
/// else under `fallback` (the conventional mount point) when mountinfo has nothing.
fn locate<'m>(
    mut mounts: impl Iterator<Item = &'m CgroupMount>,
    path: &str,
    fallback: &Path,
    any_mount: bool,
) -> Option<PathBuf> {
    if let Some(dir) = mounts.find_map(|m| dir_in_mount(m, path)) {
        return Some(dir);
    }
    if any_mount {
        return None;
    }
    let rel = path.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        fallback.to_path_buf()
    } else {
        fallback.join(rel)
    })
}

/// Builds the layout from the contents of /proc/<pid>/cgroup and /proc/self/mountinfo.
fn resolve(proc_cgroup: &str, mountinfo: &str, unified: bool) -> Option<ProcessCgroup> {
    let lines = parse_proc_cgroup(proc_cgroup);
    let mounts = parse_mountinfo(mountinfo);
    let have_v2_mount = mounts.iter().any(|m| m.v2);
    let have_v1_mount = mounts.iter().any(|m| !m.v2);
    let v2_path = lines
        .iter()
        .find(|l| l.controllers.is_empty())
        .map(|l| l.path);

    if unified {
        let path = v2_path?;
        let fallback = Path::new(ROOT);
        let dir = locate(
            mounts.iter().filter(|m| m.v2),
            path,
            fallback,
            have_v2_mount,
        )?;
        return Some(ProcessCgroup {
            layout: Layout::V2(dir),
        });
    }

    let mut dirs = V1Dirs::default();
    for line in lines.iter().filter(|l| !l.controllers.is_empty()) {
        for &controller in &line.controllers {
            let slot = match controller {
                "memory" => &mut dirs.memory,
                "cpu" => &mut dirs.cpu,
                "cpuacct" => &mut dirs.cpuacct,
                "pids" => &mut dirs.pids,
                "blkio" => &mut dirs.blkio,
                "hugetlb" => &mut dirs.hugetlb,
                _ => continue,
            };
            let candidates = mounts
                .iter()
                .filter(|m| !m.v2 && m.options.iter().any(|o| o == controller));
            let fallback = Path::new(ROOT).join(controller);
            *slot = locate(candidates, line.path, &fallback, have_v1_mount);
        }
    }
    if let Some(path) = v2_path {
        let fallback = Path::new(ROOT).join("unified");
        dirs.unified = locate(
            mounts.iter().filter(|m| m.v2),
            path,
            &fallback,
            have_v2_mount,
        );
    }
    dirs.all().next()?;
    Some(ProcessCgroup {
        layout: Layout::V1(dirs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
garbage line
";

    #[test]
    fn expands_slice_names_as_systemd_does() {
        for (name, path) in [
            ("-.slice", "/"),
            ("a.slice", "/a.slice"),
            ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
            (
                "kubepods-besteffort-pod0a1b_c2.slice",
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b_c2.slice",
            ),
            (
                "tender-test-pod7f.slice",
                "/tender.slice/tender-test.slice/tender-test-pod7f.slice",
            ),
            ("a.b-c:d.slice", "/a.b.slice/a.b-c:d.slice"),
        ] {
            assert_eq!(expand_slice(name).as_deref(), Ok(path), "{name}");
        }
    }

    #[test]
    fn refuses_invalid_slice_names() {
        for (name, why) in [
            ("", "end with"),
            ("a.scope", "end with"),
            ("a.slice.x", "end with"),
            (".slice", "empty component"),
            ("a--b.slice", "empty component"),
            ("-a.slice", "empty component"),
            ("a-.slice", "empty component"),
            ("--.slice", "empty component"),
            ("a/b.slice", "'/'"),
            ("/a.slice", "'/'"),
            ("a/../b.slice", "'/'"),
            ("a b.slice", "not allowed"),
            ("a\nb.slice", "not allowed"),
        ] {
            let e = expand_slice(name).expect_err(name);
            assert!(e.contains(why), "{name:?}: {e}");
            assert!(e.contains("invalid systemd slice name"), "{e}");
        }
        let long = format!("{}.slice", "a".repeat(250));
        assert!(expand_slice(&long).is_err());
    }

    #[test]
    fn remove_created_ignores_paths_outside_the_cgroup_mounts() {
        let tmp = std::env::temp_dir().join(format!("tender-rmcreated-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let left = remove_created(&[
            tmp.clone(),
            PathBuf::from("/sys/fs/cgroup"),
            PathBuf::from("/sys/fs/cgroup/memory"),
            PathBuf::from("/sys/fs/cgroup/memory/../memory/x"),
        ]);
        assert!(left.is_empty(), "{left:?}");
        assert!(tmp.is_dir(), "outside /sys/fs/cgroup: not removed");
        std::fs::remove_dir(&tmp).unwrap();
    }

    #[test]
    fn parses_proc_cgroup() {
        let lines =
            parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/a\n0::/x\nbad\n1:name=systemd:/s\n");
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].controllers, vec!["memory"]);
        assert_eq!(lines[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(
            lines[2],
            CgroupLine {
                controllers: vec![],
                path: "/x"
            }
        );
    }

    #[test]
    fn parses_mountinfo() {
        let m = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[0].mount_point,
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert!(m[0].options.contains(&"cpuacct".to_string()));
        assert!(m[4].v2);
        assert_eq!(unescape_mountinfo(r"/a\040b\"), "/a b\\");
        assert_eq!(unescape_mountinfo(r"\04"), r"\04");
    }

    #[test]
    fn resolves_hybrid() {
        let pc = resolve(
            "5:memory:/ctr/one\n2:cpu,cpuacct:/ctr/one\n8:pids:/\n0::/ctr/one\n",
            HYBRID_MOUNTINFO,
            false,
        )
        .unwrap();
        let Layout::V1(d) = pc.layout else {
            panic!("not v1")
        };
        assert_eq!(
            d.memory.unwrap(),
            PathBuf::from("/sys/fs/cgroup/memory/ctr/one")
        );
        assert_eq!(
            d.cpu.unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/ctr/one")
        );
        assert_eq!(
            d.cpuacct.unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/ctr/one")
        );
        assert_eq!(d.pids.unwrap(), PathBuf::from("/sys/fs/cgroup/pids"));
        assert_eq!(d.blkio, None);
        assert_eq!(
            d.unified.unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/ctr/one")
        );
    }

    #[test]
    fn resolves_unified_with_mount_root() {
        let mi = "30 23 0:26 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let pc = resolve("0::/kubepods/pod1/ctr\n", mi, true).unwrap();
        assert_eq!(
            pc.layout,
            Layout::V2(PathBuf::from("/sys/fs/cgroup/pod1/ctr"))
        );
        // Not visible through the mount: unresolvable.
        assert!(resolve("0::/other\n", mi, true).is_none());
        // Without mountinfo the conventional mount point is used.
        let pc = resolve("0::/a\n", "", true).unwrap();
        assert_eq!(pc.layout, Layout::V2(PathBuf::from("/sys/fs/cgroup/a")));
        assert!(resolve("0::/../etc\n", "", true).is_none());
        assert!(resolve("", "", false).is_none());
    }

    #[test]
    fn of_pid_self() {
        let me = ProcessCgroup::of_pid(std::process::id() as i32).unwrap();
        match (&me.layout, is_unified()) {
            (Layout::V2(d), true) => assert!(d.exists()),
            (Layout::V1(d), false) => assert!(d.all().all(|p| p.exists()), "{d:?}"),
            (l, u) => panic!("layout {l:?} with unified={u}"),
        }
        assert_eq!(
            ProcessCgroup::of_pid(i32::MAX).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
