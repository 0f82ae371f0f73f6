//! One sealed in-memory copy of the runtime binary, shared by every Tender shim on the node.
//!
//! Why: runc (and crun, which carries the same code) defends against CVE-2019-5736 by making
//! sure that `runc init`, the process that enters the container, never runs from the host's
//! binary file: unless `/proc/self/exe` is already a fully sealed memfd, it makes a private
//! read-only handle (runc 1.1 and crun 1.8: a bind mount, a remount and an unmount; other
//! versions: an 8–10 MB memfd copy) and executes itself again from it. That is done on every
//! `create` and every `exec`: about 1.7 ms of a 24 ms `runc exec` here, plus mount-table churn
//! that every mount namespace on the node sees. runc documents the alternative: run it from a
//! sealed memfd (its `memfd-bind` tool does that node-wide), which it accepts without further
//! checks because nobody can write to it.
//!
//! Tender keeps that copy itself. The first shim that needs one copies the binary into a memfd,
//! seals it against any change, and publishes a record in [`DEFAULT_DIR`]; later shims open the
//! same memfd through `/proc/<pid>/fd/<n>` of a live holder and publish their own record, so the
//! copy lives exactly as long as some shim holds it and the node has one copy per runtime
//! binary, not one per pod. Runtimes are started through `/proc/self/fd/<n>`.
//!
//! Guards, each falling back to running the binary by its path (the behaviour without this):
//! - Only binaries that carry runc's cloned-binary defence ([`MARKER`]) are copied: any other
//!   runtime may locate its own files through its executable's path.
//! - The copy is keyed by the binary's device, inode, size and change times, checked before
//!   every use, so an upgraded runtime is used from its new file at once.
//! - A record is trusted only in a directory owned by us and writable by no one else, and
//!   only while its process (pid and start time) is alive; the opened file must be a memfd with
//!   all four seals and the binary's size.
//! - Creation happens under an exclusive lock, so shims started together make one copy; a
//!   shim that finds the lock taken uses the path this time and does not wait.
//! - `TENDER_RUNTIME_COPY=off` in the shim's environment disables it.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where the records live: one empty file per holder, named
/// `<key>.<pid namespace>.<pid>.<start>.<fd>` (see [`record_prefix`]).
pub const DEFAULT_DIR: &str = "/run/tender/runtime-copies";

/// Present in runc's and crun's binaries: the environment variable their cloned-binary
/// defence sets. A runtime without it gains nothing from a sealed copy.
pub const MARKER: &[u8] = b"_LIBCONTAINER_CLONED_BINARY";

/// The seals runc and crun require of a memfd before they trust it as their own copy.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Identity of one version of a binary file: a new file, or a rewrite in place, changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key(String);

impl Key {
    fn of(meta: &std::fs::Metadata) -> Self {
        Key(format!(
            "{:x}-{:x}-{:x}-{:x}-{:x}-{:x}-{:x}",
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        ))
    }

    fn size(&self) -> Option<u64> {
        self.0
            .split('-')
            .nth(2)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
    }
}

struct Entry {
    binary: PathBuf,
    key: Key,
    /// None: this version of the binary is run by its path (not a runc-like runtime, or no
    /// usable records directory).
    copy: Option<OwnedFd>,
    /// Our record of holding `copy`, removed when the shim exits.
    record: Option<PathBuf>,
}

/// The copies held by this process.
pub struct SealedCopies {
    dir: PathBuf,
    entries: Mutex<Vec<Entry>>,
}

/// What to execute for `binary`, and where the copy came from (for tests and logs).
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// Run by its path.
    Path,
    /// Our own copy, made now.
    Made,
    /// Another shim's copy, opened now.
    Adopted,
    /// Held since an earlier call.
    Held,
}

impl SealedCopies {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The program to execute for `binary`: `/proc/self/fd/<n>` of a sealed copy, or `binary`.
    ///
    /// A copy held by another shim is always taken (it costs a few small reads). Making one
    /// costs more than one runtime start saves (reading and writing ~9 MB: 5–10 ms), so it is
    /// made only when `may_copy`: when this shim already started a container process, i.e.
    /// when copies are likely to be used again (a pod's second container, repeated execs).
    pub fn program(&self, binary: &Path, may_copy: bool) -> (PathBuf, Source) {
        let Ok(meta) = std::fs::metadata(binary) else {
            return (binary.to_path_buf(), Source::Path);
        };
        let key = Key::of(&meta);
        let mut entries = crate::lock(&self.entries);
        if let Some(i) = entries.iter().position(|e| e.binary == binary) {
            if entries[i].key == key {
                return match &entries[i].copy {
                    Some(fd) => (fd_path(fd), Source::Held),
                    None => (binary.to_path_buf(), Source::Path),
                };
            }
            // The binary changed (an upgrade): let go of the old copy.
            let old = entries.swap_remove(i);
            if let Some(record) = old.record {
                let _ = std::fs::remove_file(record);
            }
        }
        match self.obtain(binary, &key, may_copy) {
            Obtained::Copy(fd, source) => {
                // Once per node and runtime version: worth a line in the log.
                if source == Source::Made {
                    log::info!(
                        "made a sealed copy of {} for its container processes",
                        binary.display()
                    );
                }
                let record = self.publish(&key, &fd);
                let path = fd_path(&fd);
                entries.push(Entry {
                    binary: binary.to_path_buf(),
                    key,
                    copy: Some(fd),
                    record,
                });
                (path, source)
            }
            Obtained::Never(why) => {
                log::debug!("running {} by its path: {why}", binary.display());
                entries.push(Entry {
                    binary: binary.to_path_buf(),
                    key,
                    copy: None,
                    record: None,
                });
                (binary.to_path_buf(), Source::Path)
            }
            Obtained::NotNow => (binary.to_path_buf(), Source::Path),
        }
    }

    /// Removes this process's records (at exit; the copies themselves go with the last fd).
    pub fn withdraw(&self) {
        for e in crate::lock(&self.entries).drain(..) {
            if let Some(record) = e.record {
                let _ = std::fs::remove_file(record);
            }
        }
    }

    fn obtain(&self, binary: &Path, key: &Key, may_copy: bool) -> Obtained {
        if let Err(e) = self.usable_dir() {
            return Obtained::Never(format!("{}: {e}", self.dir.display()));
        }
        let plain = self.dir.join(format!("{}.plain", key.0));
        if plain.exists() {
            return Obtained::Never("no cloned-binary defence to serve".into());
        }
        if let Some(fd) = self.adopt(key) {
            return Obtained::Copy(fd, Source::Adopted);
        }
        if !may_copy {
            return Obtained::NotNow;
        }
        let Ok(lock) = File::create(self.dir.join(".lock")) else {
            return Obtained::Never("cannot open the lock file".into());
        };
        // Never wait: a shim stuck while holding the lock must not stall the others.
        let Ok(_locked) =
            nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        else {
            return Obtained::NotNow;
        };
        // Another shim may have made it while we looked.
        if let Some(fd) = self.adopt(key) {
            return Obtained::Copy(fd, Source::Adopted);
        }
        match make_copy(binary, key) {
            Ok(Some(fd)) => Obtained::Copy(fd, Source::Made),
            Ok(None) => {
                // Spares the other shims reading the whole binary to learn the same.
                let _ = File::create(&plain);
                Obtained::Never("no cloned-binary defence to serve".into())
            }
            Err(e) => Obtained::Never(format!("copy failed: {e}")),
        }
        // The lock is released when `_locked` is dropped here.
    }

    /// Ours alone: created if missing, owned by our user, writable by nobody else.
    fn usable_dir(&self) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let meta = std::fs::symlink_metadata(&self.dir)?;
        if !meta.is_dir()
            || meta.uid() != nix::unistd::geteuid().as_raw()
            || meta.mode() & 0o022 != 0
        {
            return Err(std::io::Error::other("not a private directory"));
        }
        Ok(())
    }

    /// Opens the copy of a live holder of `key`, removing records of holders that are gone.
    fn adopt(&self, key: &Key) -> Option<OwnedFd> {
        let size = key.size()?;
        let prefix = record_prefix(key);
        for entry in std::fs::read_dir(&self.dir).ok()?.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let Some(holder) = Holder::parse(rest) else {
                continue;
            };
            if !holder.alive() {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Ok(file) = File::open(format!("/proc/{}/fd/{}", holder.pid, holder.fd)) else {
                continue;
            };
            // Checked again after the open: the pid may have been reused in between.
            if holder.alive() && is_sealed_copy(&file, size) {
                return Some(file.into());
            }
        }
        None
    }

    fn publish(&self, key: &Key, fd: &OwnedFd) -> Option<PathBuf> {
        let pid = std::process::id();
        let start = start_time(pid)?;
        let record = self.dir.join(format!(
            "{}{pid}.{start}.{}",
            record_prefix(key),
            fd.as_raw_fd()
        ));
        File::create(&record).ok()?;
        Some(record)
    }
}

enum Obtained {
    Copy(OwnedFd, Source),
    /// Not for this version of the binary.
    Never(String),
    /// Another shim is making the copy: ask again at the next call.
    NotNow,
}

struct Holder {
    pid: u32,
    start: u64,
    fd: i32,
}

impl Holder {
    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('.');
        let holder = Holder {
            pid: parts.next()?.parse().ok()?,
            start: parts.next()?.parse().ok()?,
            fd: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(holder)
    }

    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Records name pids, which mean something only in the pid namespace they were written in: a
/// shim in another one (sharing this /run) must neither use them nor take them for dead.
fn record_prefix(key: &Key) -> String {
    let pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            let inode = l.strip_prefix("pid:[")?.strip_suffix(']')?;
            inode.parse::<u64>().ok()
        })
        .unwrap_or(0);
    format!("{}.{pid_ns}.", key.0)
}

/// The process's start time (field 22 of /proc/<pid>/stat): with the pid, it names one process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn is_sealed_copy(file: &File, size: u64) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    // SAFETY: F_GET_SEALS only reads the seals of the open file.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    meta.is_file() && meta.len() == size && seals == SEALS
}

/// Copies `binary` into a sealed memfd if it is a runc-like runtime; Ok(None) if it is not.
fn make_copy(binary: &Path, key: &Key) -> std::io::Result<Option<OwnedFd>> {
    let bytes = std::fs::read(binary)?;
    // A copy taken while the file was being replaced would be torn: check it did not change.
    if Key::of(&std::fs::metadata(binary)?) != *key || Some(bytes.len() as u64) != key.size() {
        return Err(std::io::Error::other("the binary changed while being read"));
    }
    if memchr::memmem::find(&bytes, MARKER).is_none() {
        return Ok(None);
    }
    let name = c"tender-sealed-runtime";
    // SAFETY: memfd_create takes a NUL-terminated name and flags, and returns a new fd or -1.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new fd that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(raw) };
    file.write_all(&bytes)?;
    // SAFETY: F_ADD_SEALS only adds seals to the open memfd.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some(file.into()))
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The shim's copies, in [`DEFAULT_DIR`]; None when `TENDER_RUNTIME_COPY=off`.
pub fn shared() -> Option<&'static SealedCopies> {
    static SHARED: OnceLock<Option<SealedCopies>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let off = std::env::var_os("TENDER_RUNTIME_COPY").is_some_and(|v| v == "off");
            (!off).then(|| SealedCopies::new(PathBuf::from(DEFAULT_DIR)))
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    /// A private scratch directory; `records` inside it is for the SealedCopies under test.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tender-sealed-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn records(&self) -> PathBuf {
            self.0.join("records")
        }

        fn record_names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.records())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n != ".lock")
                .collect();
            names.sort();
            names
        }

        /// An executable that prints its arguments (`echo`), with or without runc's marker.
        fn runtime(&self, name: &str, marker: bool, extra: &[u8]) -> PathBuf {
            let mut bytes = std::fs::read("/bin/echo").unwrap();
            if marker {
                bytes.extend_from_slice(MARKER);
            }
            bytes.extend_from_slice(extra);
            let path = self.0.join(name);
            std::fs::write(&path, &bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ino(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    fn run(program: &Path, binary: &Path) -> String {
        let _children = crate::CHILD_PROCESS_TESTS.blocking_lock();
        let out = std::process::Command::new(program)
            .arg0(binary)
            .arg("hello")
            .output()
            .unwrap();
        assert!(out.status.success(), "{program:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_runc_like_binary_is_copied_once_sealed_and_shared() {
        let s = Scratch::new("share");
        let binary = s.runtime("runc", true, b"");
        let first = SealedCopies::new(s.records());
        let (program, source) = first.program(&binary, true);
        assert_eq!(source, Source::Made);
        assert!(program.starts_with("/proc/self/fd/"), "{program:?}");
        assert_eq!(
            std::fs::read(&program).unwrap(),
            std::fs::read(&binary).unwrap()
        );
        assert!(is_sealed_copy(
            &File::open(&program).unwrap(),
            std::fs::metadata(&binary).unwrap().len()
        ));
        // Sealed: not even the holder can change it.
        assert!(std::fs::OpenOptions::new()
            .write(true)
            .open(&program)
            .and_then(|mut f| f.write_all(b"x"))
            .is_err());
        assert_eq!(run(&program, &binary), "hello\n");
        assert_eq!(
            first.program(&binary, true),
            (program.clone(), Source::Held)
        );
        assert_eq!(s.record_names().len(), 1);

        // Another shim opens the same copy instead of making its own.
        let second = SealedCopies::new(s.records());
        let (adopted, source) = second.program(&binary, true);
        assert_eq!(source, Source::Adopted);
        assert_ne!(adopted, program, "its own fd");
        assert_eq!(ino(&adopted), ino(&program), "the same memfd");
        assert_eq!(s.record_names().len(), 2);

        // The first holder leaves: the copy is still found through the second.
        first.withdraw();
        assert_eq!(s.record_names().len(), 1);
        let third = SealedCopies::new(s.records());
        let (program3, source) = third.program(&binary, true);
        assert_eq!((source, ino(&program3)), (Source::Adopted, ino(&adopted)));
        second.withdraw();
        third.withdraw();
        assert!(s.record_names().is_empty());
    }

    #[test]
    fn other_runtimes_run_by_their_path() {
        let s = Scratch::new("plain");
        let binary = s.runtime("youki", false, b"");
        let copies = SealedCopies::new(s.records());
        assert_eq!(
            copies.program(&binary, true),
            (binary.clone(), Source::Path)
        );
        assert_eq!(
            copies.program(&binary, true),
            (binary.clone(), Source::Path)
        );
        // What was learnt is shared: other shims need not read the binary again.
        let key = Key::of(&std::fs::metadata(&binary).unwrap());
        assert_eq!(s.record_names(), vec![format!("{}.plain", key.0)]);
        let other = SealedCopies::new(s.records());
        assert_eq!(other.program(&binary, true), (binary.clone(), Source::Path));
        let missing = s.0.join("missing");
        assert_eq!(
            copies.program(&missing, true),
            (missing.clone(), Source::Path)
        );
    }

    #[test]
    fn a_copy_is_made_only_when_asked_but_always_adopted() {
        let s = Scratch::new("may");
        let binary = s.runtime("runc", true, b"");
        let first = SealedCopies::new(s.records());
        assert_eq!(
            first.program(&binary, false),
            (binary.clone(), Source::Path)
        );
        assert!(s.record_names().is_empty(), "no copy made");
        assert_eq!(first.program(&binary, true).1, Source::Made);
        let second = SealedCopies::new(s.records());
        assert_eq!(second.program(&binary, false).1, Source::Adopted);
        first.withdraw();
        second.withdraw();
    }

    #[test]
    fn an_upgraded_binary_gets_a_new_copy() {
        let s = Scratch::new("upgrade");
        let binary = s.runtime("runc", true, b"");
        let copies = SealedCopies::new(s.records());
        let (old, _) = copies.program(&binary, true);
        let old_ino = ino(&old);
        let old_records = s.record_names();
        // A new version replaces the file (as a package upgrade does: new inode).
        let new = s.runtime("runc.new", true, b"version 2");
        std::fs::rename(&new, &binary).unwrap();
        let (program, source) = copies.program(&binary, true);
        assert_eq!(source, Source::Made);
        assert_ne!(ino(&program), old_ino);
        assert_eq!(
            std::fs::read(&program).unwrap(),
            std::fs::read(&binary).unwrap()
        );
        let records = s.record_names();
        assert_eq!(records.len(), 1);
        assert_ne!(records, old_records, "the old version's record is gone");
        copies.withdraw();
    }

    #[test]
    fn records_of_gone_or_foreign_holders_are_not_trusted() {
        let s = Scratch::new("stale");
        let binary = s.runtime("runc", true, b"");
        let key = Key::of(&std::fs::metadata(&binary).unwrap());
        std::fs::create_dir_all(s.records()).unwrap();
        std::fs::set_permissions(s.records(), std::fs::Permissions::from_mode(0o700)).unwrap();
        // A holder that exited.
        let gone = {
            let _children = crate::CHILD_PROCESS_TESTS.blocking_lock();
            let mut child = std::process::Command::new("true").spawn().unwrap();
            let pid = child.id();
            child.wait().unwrap();
            pid
        };
        let stale = s
            .records()
            .join(format!("{}{gone}.1.3", record_prefix(&key)));
        File::create(&stale).unwrap();
        // A live process whose fd is not a sealed copy (its stdin), and one whose start time
        // does not match (a reused pid).
        let me = std::process::id();
        let start = start_time(me).unwrap();
        let foreign = s
            .records()
            .join(format!("{}{me}.{start}.0", record_prefix(&key)));
        File::create(&foreign).unwrap();
        let reused = s
            .records()
            .join(format!("{}{me}.{}.0", record_prefix(&key), start + 1));
        // A record from another pid namespace: its pid means nothing here (in this one it is
        // gone), so it is neither used nor removed.
        let elsewhere = s.records().join(format!("{}.1.{gone}.1.3", key.0));
        File::create(&elsewhere).unwrap();
        File::create(&reused).unwrap();

        let copies = SealedCopies::new(s.records());
        let (program, source) = copies.program(&binary, true);
        assert_eq!(source, Source::Made);
        assert_eq!(
            std::fs::read(&program).unwrap(),
            std::fs::read(&binary).unwrap()
        );
        assert!(
            !stale.exists() && !reused.exists(),
            "dead holders' records are removed"
        );
        assert!(foreign.exists(), "a live holder's record stays");
        assert!(elsewhere.exists(), "another pid namespace's record stays");
        copies.withdraw();
    }

    #[test]
    fn a_directory_others_can_write_is_not_used() {
        let s = Scratch::new("shared");
        let binary = s.runtime("runc", true, b"");
        std::fs::create_dir_all(s.records()).unwrap();
        std::fs::set_permissions(s.records(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let copies = SealedCopies::new(s.records());
        assert_eq!(
            copies.program(&binary, true),
            (binary.clone(), Source::Path)
        );
        assert!(s.record_names().is_empty());
    }

    #[test]
    fn a_busy_lock_means_the_path_now_and_a_copy_later() {
        let s = Scratch::new("lock");
        let binary = s.runtime("runc", true, b"");
        let copies = SealedCopies::new(s.records());
        copies.usable_dir().unwrap();
        // flock conflicts between open files, also within one process.
        let other = File::create(s.records().join(".lock")).unwrap();
        let held = nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusive).unwrap();
        assert_eq!(
            copies.program(&binary, true),
            (binary.clone(), Source::Path)
        );
        drop(held);
        assert_eq!(copies.program(&binary, true).1, Source::Made);
        copies.withdraw();
    }
}
