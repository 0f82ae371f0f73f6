//! OOM notifications.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through `cgroup.event_control`;
//! the kernel signals it on every OOM in the cgroup and once more when the cgroup is removed.
//! cgroup v2: inotify on `memory.events` (and `cgroup.events`); each change re-reads the
//! `oom_kill` counter. Both fds are driven by tokio's reactor (`AsyncFd`), never blocking.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{Layout, ProcessCgroup};

/// Upper bound on the events one wake-up yields (a counter jump is reported one by one).
const MAX_EVENTS_PER_WAKE: u64 = 64;

impl ProcessCgroup {
    /// Starts watching for OOM kills: returns a receiver that yields `()` once per OOM event
    /// (v1: per eventfd notification count; v2: per increase of `memory.events` `oom_kill`).
    ///
    /// Must be called from within a Tokio runtime (it spawns the watching task there; an error,
    /// not a panic, otherwise). The stream ends (recv() returns None) when the cgroup is removed
    /// (v1), or when the cgroup is removed or has no processes left (`cgroup.events`
    /// `populated 0`, as containerd does) (v2). Dropping the receiver stops the watcher at its
    /// next wake-up and closes its fds.
    pub fn watch_oom(&self) -> io::Result<UnboundedReceiver<()>> {
        match &self.layout {
            Layout::V1(dirs) => match &dirs.memory {
                Some(dir) => watch_v1(dir),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "process has no v1 memory cgroup",
                )),
            },
            Layout::V2(dir) => watch_v2(dir),
        }
    }
}

fn runtime() -> io::Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(io::Error::other)
}

/// Registers `fd` with the reactor for readability.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd is open, owned by the AsyncFd from here on and never replaced.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// Takes ownership of a raw fd a syscall returned (-1 → the errno).
fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn read_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits until `fd` is readable and reads it once. None: stop watching (receiver dropped or
/// an unrecoverable error).
async fn next_read(
    afd: &AsyncFd<OwnedFd>,
    tx: &UnboundedSender<()>,
    buf: &mut [u8],
) -> Option<usize> {
    loop {
        let mut guard = tokio::select! {
            _ = tx.closed() => return None,
            r = afd.readable() => match r {
                Ok(g) => g,
                Err(e) => {
                    log::warn!("oom watch: poll failed: {e}");
                    return None;
                }
            },
        };
        match guard.try_io(|fd| read_fd(fd.get_ref(), buf)) {
            Ok(Ok(n)) => return Some(n),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(e)) => {
                log::warn!("oom watch: read failed: {e}");
                return None;
            }
            Err(_would_block) => continue,
        }
    }
}

/// Sends `n` (capped) events; false when the receiver is gone.
fn send_n(tx: &UnboundedSender<()>, n: u64) -> bool {
    (0..n.min(MAX_EVENTS_PER_WAKE)).all(|_| tx.send(()).is_ok())
}

// ---------------------------------------------------------------------------------------------
// cgroup v1.

/// Registers an eventfd on `<mem_dir>/memory.oom_control` and watches it.
pub(super) fn watch_v1(mem_dir: &Path) -> io::Result<UnboundedReceiver<()>> {
    let rt = runtime()?;
    // SAFETY: plain syscall.
    let efd = owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    let control = mem_dir.join("cgroup.event_control");
    {
        // The kernel keeps its own reference: the file can be closed once registered.
        let oom_control = std::fs::File::open(mem_dir.join("memory.oom_control"))?;
        std::fs::write(
            &control,
            format!("{} {}", efd.as_raw_fd(), oom_control.as_raw_fd()),
        )?;
    }
    let afd = register(efd)?;
    let (tx, rx) = unbounded_channel();
    rt.spawn(run_v1(afd, control, tx));
    Ok(rx)
}

async fn run_v1(afd: AsyncFd<OwnedFd>, control: PathBuf, tx: UnboundedSender<()>) {
    let mut buf = [0u8; 8];
    while let Some(n) = next_read(&afd, &tx, &mut buf).await {
        if n != buf.len() {
            continue;
        }
        // Removing the cgroup signals the eventfd too: then the control file is gone.
        if matches!(std::fs::symlink_metadata(&control), Err(e) if e.kind() == io::ErrorKind::NotFound)
        {
            return;
        }
        if !send_n(&tx, u64::from_ne_bytes(buf)) {
            return;
        }
    }
    // Dropping afd closes the eventfd, which unregisters the event in the kernel.
}

// ---------------------------------------------------------------------------------------------
// cgroup v2.

fn add_watch(ino: &OwnedFd, path: &Path, mask: u32) -> io::Result<i32> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c is a valid NUL-terminated string.
    let wd = unsafe { libc::inotify_add_watch(ino.as_raw_fd(), c.as_ptr(), mask) };
    if wd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(wd)
    }
}

/// (wd, mask) of each `struct inotify_event` in `buf`; a truncated tail is ignored.
fn parse_inotify(buf: &[u8]) -> Vec<(i32, u32)> {
    const HDR: usize = 16; // wd, mask, cookie, len
    let mut out = Vec::new();
    let mut off = 0usize;
    while let Some(hdr) = buf.get(off..off + HDR) {
        let word = |i: usize| [hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]];
        let wd = i32::from_ne_bytes(word(0));
        let mask = u32::from_ne_bytes(word(4));
        let len = u32::from_ne_bytes(word(12)) as usize;
        out.push((wd, mask));
        off = match off.checked_add(HDR).and_then(|o| o.checked_add(len)) {
            Some(o) => o,
            None => break,
        };
    }
    out
}

/// `oom_kill` from memory.events contents.
pub(super) fn oom_kill_count(content: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == "oom_kill").then_some(())?;
        it.next()?.parse().ok()
    })
}

/// cgroup.events says `populated 0`.
fn unpopulated(content: &str) -> bool {
    content.lines().any(|l| {
        let mut it = l.split_whitespace();
        it.next() == Some("populated") && it.next() == Some("0")
    })
}

/// Watches `<dir>/memory.events` for `oom_kill` increases (the cgroup v2 directory).
pub(super) fn watch_v2(dir: &Path) -> io::Result<UnboundedReceiver<()>> {
    let rt = runtime()?;
    // SAFETY: plain syscall.
    let ino = owned(unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) })?;
    let events = dir.join("memory.events");
    let mem_wd = add_watch(&ino, &events, libc::IN_MODIFY)?;
    let cgroup_events = dir.join("cgroup.events");
    let cg_wd = add_watch(&ino, &cgroup_events, libc::IN_MODIFY).ok();
    // Read after the watch exists, so no increase can fall between the two.
    let baseline = oom_kill_count(&std::fs::read_to_string(&events)?).unwrap_or(0);
    let afd = register(ino)?;
    let (tx, rx) = unbounded_channel();
    let w = V2Watch {
        events,
        cgroup_events,
        mem_wd,
        cg_wd,
        last: baseline,
    };
    rt.spawn(w.run(afd, tx));
    Ok(rx)
}

struct V2Watch {
    events: PathBuf,
    cgroup_events: PathBuf,
    mem_wd: i32,
    cg_wd: Option<i32>,
    last: u64,
}

impl V2Watch {
    async fn run(mut self, afd: AsyncFd<OwnedFd>, tx: UnboundedSender<()>) {
        const GONE: u32 = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_UNMOUNT;
        let mut buf = vec![0u8; 4096];
        while let Some(n) = next_read(&afd, &tx, &mut buf).await {
            let evs = parse_inotify(buf.get(..n).unwrap_or_default());
            let removed = evs.iter().any(|&(wd, mask)| {
                mask & GONE != 0 && (wd == self.mem_wd || Some(wd) == self.cg_wd)
            });
            // Always re-read the counter first: a kill precedes the exit it causes.
            let content = match std::fs::read_to_string(&self.events) {
                Ok(c) => c,
                Err(_) => return,
            };
            if let Some(count) = oom_kill_count(&content) {
                if count > self.last && !send_n(&tx, count - self.last) {
                    return;
                }
                self.last = count;
            }
            if removed {
                return;
            }
            if self.cg_wd.is_some() {
                match std::fs::read_to_string(&self.cgroup_events) {
                    Ok(c) if unpopulated(&c) => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::stats::tests::TempDir;
    use super::*;
    use std::io::{BufRead, Write};
    use std::time::Duration;

    #[test]
    fn parses_inotify_buffer() {
        let mut b = Vec::new();
        for (wd, mask, len) in [(1i32, libc::IN_MODIFY, 0u32), (2, libc::IN_IGNORED, 16)] {
            b.extend_from_slice(&wd.to_ne_bytes());
            b.extend_from_slice(&mask.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&len.to_ne_bytes());
            b.extend(std::iter::repeat_n(0, len as usize));
        }
        b.extend_from_slice(&[1, 2, 3]); // truncated
        assert_eq!(
            parse_inotify(&b),
            vec![(1, libc::IN_MODIFY), (2, libc::IN_IGNORED)]
        );
        assert!(parse_inotify(&[]).is_empty());
        // A huge len must not overflow or panic.
        let mut b = vec![0u8; 12];
        b.extend_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(parse_inotify(&b).len(), 1);
    }

    #[test]
    fn parses_events_files() {
        assert_eq!(
            oom_kill_count("low 0\noom 3\noom_kill 2\noom_group_kill 0\n"),
            Some(2)
        );
        assert_eq!(oom_kill_count("oom_kill x\n"), None);
        assert_eq!(oom_kill_count(""), None);
        assert!(unpopulated("populated 0\nfrozen 0\n"));
        assert!(!unpopulated("populated 1\nfrozen 0\n"));
        assert!(!unpopulated(""));
    }

    async fn recv(rx: &mut UnboundedReceiver<()>) -> Option<()> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("oom watch: no event/end within 10s")
    }

    fn events(oom_kill: u64) -> String {
        format!("low 0\nhigh 0\nmax 3\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n")
    }

    #[tokio::test]
    async fn v2_watch_counts_and_ends_when_unpopulated() {
        let t = TempDir::new("oom2");
        t.write("memory.events", &events(5));
        t.write("cgroup.events", "populated 1\nfrozen 0\n");
        let mut rx = watch_v2(&t.0).unwrap();
        t.write("memory.events", &events(6));
        assert_eq!(recv(&mut rx).await, Some(()));
        t.write("memory.events", &events(8));
        assert_eq!(recv(&mut rx).await, Some(()));
        assert_eq!(recv(&mut rx).await, Some(()));
        // The last process exits right after a kill: the kill is still reported, then the end.
        std::fs::write(t.0.join("memory.events"), events(9)).unwrap();
        t.write("cgroup.events", "populated 0\nfrozen 0\n");
        assert_eq!(recv(&mut rx).await, Some(()));
        assert_eq!(recv(&mut rx).await, None);
    }

    #[tokio::test]
    async fn v2_watch_ends_when_removed() {
        let t = TempDir::new("oom2rm");
        t.write("memory.events", &events(0));
        let mut rx = watch_v2(&t.0).unwrap();
        std::fs::remove_file(t.0.join("memory.events")).unwrap();
        assert_eq!(recv(&mut rx).await, None);
        // No memory.events at all: an error, not a stream.
        assert!(watch_v2(&t.0).is_err());
    }

    #[test]
    fn watch_needs_a_runtime() {
        let t = TempDir::new("oom2rt");
        t.write("memory.events", &events(0));
        assert!(watch_v2(&t.0).is_err());
    }

    /// Real cgroup v1 memory controller: limit 8 MiB, a child that grows past it gets
    /// OOM-killed; stats report usage and limit; the stream ends when the cgroup is removed.
    #[tokio::test]
    async fn v1_real_oom() {
        // Held until the shell is waited for, so the reaper test cannot reap it.
        let _children = crate::CHILD_PROCESS_TESTS.lock().await;
        let mem_root = Path::new("/sys/fs/cgroup/memory");
        if !nix::unistd::geteuid().is_root() {
            println!("skipping v1_real_oom: not root");
            return;
        }
        if super::super::is_unified() || !mem_root.join("cgroup.event_control").exists() {
            println!("skipping v1_real_oom: no cgroup v1 memory controller");
            return;
        }
        let cg = mem_root.join(format!("tender-test-{}", std::process::id()));
        let _ = std::fs::remove_dir(&cg);
        std::fs::create_dir(&cg).unwrap();
        struct Cleanup(PathBuf, Option<std::process::Child>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                if let Some(mut c) = self.1.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                for _ in 0..100 {
                    if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                eprintln!("could not remove {}", self.0.display());
            }
        }
        let mut cleanup = Cleanup(cg.clone(), None);

        const LIMIT: u64 = 8 << 20;
        std::fs::write(cg.join("memory.limit_in_bytes"), LIMIT.to_string()).unwrap();
        if cg.join("memory.memsw.limit_in_bytes").exists() {
            std::fs::write(cg.join("memory.memsw.limit_in_bytes"), LIMIT.to_string()).unwrap();
        }
        let _ = std::fs::write(cg.join("memory.swappiness"), "0");

        // Waits for a line, touches 1 MiB, says ok, waits again, then grows to 64 MiB.
        let script = "read a; x=$(head -c 1048576 /dev/zero | tr '\\0' a); echo ok; \
                      read b; y=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived";
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        cleanup.1 = Some(child);
        std::fs::write(cg.join("cgroup.procs"), pid.to_string()).unwrap();

        let pc = ProcessCgroup::of_pid(pid as i32).unwrap();
        let Layout::V1(dirs) = &pc.layout else {
            panic!("expected v1 layout")
        };
        assert_eq!(dirs.memory.as_deref(), Some(cg.as_path()));
        let mut rx = pc.watch_oom().unwrap();

        writeln!(stdin, "go").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");

        use containerd_shim_protos::cgroups::metrics::Metrics;
        use containerd_shim_protos::protobuf::Message;
        let any = pc.stats().unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = Metrics::parse_from_bytes(&any.value).unwrap();
        assert!(m.memory.usage.usage > 0, "{:?}", m.memory);
        assert_eq!(m.memory.usage.limit, LIMIT);
        assert_eq!(m.memory.hierarchical_memory_limit, LIMIT);
        assert_eq!(m.memory_oom_control.oom_kill, 0);

        writeln!(stdin, "go").unwrap();
        assert_eq!(recv(&mut rx).await, Some(()));

        // The shell was killed.
        let mut child = cleanup.1.take().unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        let m = Metrics::parse_from_bytes(&pc.stats().unwrap().value).unwrap();
        assert!(
            m.memory_oom_control.oom_kill >= 1,
            "{:?}",
            m.memory_oom_control
        );
        // (failcnt is not asserted: recent kernels leave it at 0.)
        assert_eq!(m.memory.usage.max, LIMIT, "{:?}", m.memory);

        // Removing the cgroup ends the stream (after any further OOM events).
        drop(cleanup);
        while let Some(()) = recv(&mut rx).await {}
        let m = Metrics::parse_from_bytes(&pc.stats().unwrap().value).unwrap();
        assert!(m.memory.is_none());
    }
}
