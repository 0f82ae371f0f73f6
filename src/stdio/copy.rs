//! Moving bytes between file descriptors without blocking the (single) runtime thread.
//!
//! Pipe to pipe (container pipe → containerd FIFO) uses `splice(2)`: the bytes never enter
//! user space. Anything else (a pty master) falls back to read/write through one buffer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use tokio::io::unix::AsyncFd;

/// Largest chunk moved by one splice call; the kernel caps it at the pipe size anyway.
const SPLICE_CHUNK: usize = 1 << 20;
const BUF_SIZE: usize = 64 * 1024;

pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
    Ok(())
}

pub fn is_pipe(fd: &impl AsRawFd) -> bool {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFIFO)
        .unwrap_or(false)
}

/// Capacity asked for the pipes on the output path (the default `pipe-max-size`).
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Grows a pipe or FIFO's buffer (best effort: a smaller `pipe-max-size` or a
/// non-pipe just keeps the default). Pages are only allocated as data arrives.
pub fn grow_pipe(fd: &impl AsRawFd) {
    if is_pipe(fd) {
        // SAFETY: F_SETPIPE_SZ takes an int argument and touches no memory of ours.
        let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
    }
}

/// Level-triggered readiness of one descriptor right now (`poll(2)` with a zero timeout):
/// true if any of `events` (or an error / hang-up) is reported.
fn poll_now(fd: &impl AsRawFd, events: libc::c_short) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        if rc >= 0 {
            return rc > 0 && pfd.revents != 0;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // Cannot tell: report "ready" so the caller retries instead of sleeping forever.
            return true;
        }
    }
}

/// Data (or end of file) is waiting in `src`.
fn readable_now(src: &impl AsRawFd) -> bool {
    poll_now(src, libc::POLLIN)
}

/// `dst` has room (or its reader is gone, which the next write reports).
fn writable_now(dst: &impl AsRawFd) -> bool {
    poll_now(dst, libc::POLLOUT)
}

pub fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and unchanged for
    // the AsyncFd's whole life.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Why a copy loop stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The source reached end of file.
    Eof,
    /// The source had nothing more to give right now and `drain_only` was set.
    Drained,
}

/// Copies from `src` to `dst` until `src` ends. With `drain_only`, stops as soon as `src` has
/// nothing buffered (used to flush stdin on CloseIO).
pub async fn copy(
    src: &AsyncFd<OwnedFd>,
    dst: &AsyncFd<OwnedFd>,
    drain_only: bool,
) -> io::Result<Stop> {
    copy_counted(src, dst, drain_only, &AtomicU64::new(0)).await
}

/// [`copy`], adding every byte moved to `progress` (so a waiter can tell a slow reader from
/// a stalled one).
pub async fn copy_counted(
    src: &AsyncFd<OwnedFd>,
    dst: &AsyncFd<OwnedFd>,
    drain_only: bool,
    progress: &AtomicU64,
) -> io::Result<Stop> {
    if is_pipe(src.get_ref()) && is_pipe(dst.get_ref()) {
        splice_loop(src, dst, drain_only, progress).await
    } else {
        buffered_loop(src, dst, drain_only, progress).await
    }
}

async fn splice_loop(
    src: &AsyncFd<OwnedFd>,
    dst: &AsyncFd<OwnedFd>,
    drain_only: bool,
    progress: &AtomicU64,
) -> io::Result<Stop> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        match splice(
            src.get_ref().as_fd(),
            None,
            dst.get_ref().as_fd(),
            None,
            SPLICE_CHUNK,
            flags,
        ) {
            Ok(0) => return Ok(Stop::Eof),
            Ok(n) => {
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                // EAGAIN means either side: an empty source or a full destination. Ask the
                // kernel which one (level-triggered) instead of guessing: waiting for `dst` to
                // become writable while it has room never ends, since pipes only signal
                // EPOLLOUT when a read frees space in a full pipe.
                if !readable_now(src.get_ref()) {
                    if drain_only {
                        return Ok(Stop::Drained);
                    }
                    // Clear, then retry: an event after the guard was taken keeps the readiness.
                    src.readable().await?.clear_ready();
                } else if !writable_now(dst.get_ref()) {
                    dst.writable().await?.clear_ready();
                } else {
                    // The state changed under us (data or room arrived): retry, but let other
                    // tasks run so that a kernel disagreeing with poll(2) cannot starve them.
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn buffered_loop(
    src: &AsyncFd<OwnedFd>,
    dst: &AsyncFd<OwnedFd>,
    drain_only: bool,
    progress: &AtomicU64,
) -> io::Result<Stop> {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match nix::unistd::read(src.get_ref().as_raw_fd(), &mut buf) {
            Ok(0) => return Ok(Stop::Eof),
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            // A pty master reports EIO once the slave side is closed: that is its end of file.
            Err(Errno::EIO) => return Ok(Stop::Eof),
            Err(Errno::EAGAIN) => {
                if drain_only {
                    return Ok(Stop::Drained);
                }
                src.readable().await?.clear_ready();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        write_all(dst, &buf[..n]).await?;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Bytes written into a pipe or FIFO that its reader has not taken yet (`FIONREAD` works on
/// either end of a pipe). `None` when the descriptor cannot tell.
fn unread_bytes(fd: &impl AsRawFd) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    (rc == 0).then_some(n.max(0) as u64)
}

/// The FIFO or pipe whose write end is `dst` has no reader left (`poll(2)` reports an error
/// on a write end without readers).
pub fn no_reader(dst: &impl AsRawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: dst.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc > 0 && pfd.revents & libc::POLLERR != 0
}

/// Waits until the reader of the FIFO `dst` (a write-only end) has taken everything written
/// into it, until it has no reader (any more), or until the reader made no progress for
/// `bound`. Counts what it takes as progress.
///
/// Why: the output FIFOs are large (1 MiB) so the copy finishes long before the client has read
/// it all, and some clients (ctr 1.6) stop reading once the exit is reported, so the exit
/// waits for this (see [`super::EXIT_REPORT_BOUND`]). Without a reader nothing will be taken:
/// a detached client, or containerd away. The caller must hold no read end of the FIFO itself.
/// There is no readiness event for "pipe became empty", so this polls with a backoff, only at
/// exit and only while bytes are left.
pub async fn wait_consumed(dst: &impl AsRawFd, progress: &AtomicU64, bound: std::time::Duration) {
    let Some(mut left) = unread_bytes(dst) else {
        return;
    };
    let mut delay = std::time::Duration::from_micros(200);
    let mut since_progress = std::time::Duration::ZERO;
    while left > 0 && since_progress < bound && !no_reader(dst) {
        tokio::time::sleep(delay).await;
        let now = unread_bytes(dst).unwrap_or(0);
        if now < left {
            progress.fetch_add(left - now, Ordering::Relaxed);
            since_progress = std::time::Duration::ZERO;
            delay = std::time::Duration::from_micros(200);
        } else {
            since_progress += delay;
            delay = (delay * 2).min(std::time::Duration::from_millis(50));
        }
        left = now;
    }
}

/// Keeps the write end `dst` of a FIFO (and with it the bytes in the FIFO) until a reader has
/// taken everything: for output that nobody reads right now, but a reader may come for later
/// (containerd back from a restart). Checks four times a second; the caller aborts it when
/// the process is deleted.
pub async fn hold_until_taken(dst: &impl AsRawFd) {
    while unread_bytes(dst).is_some_and(|n| n > 0) {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

pub async fn write_all(dst: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(dst.get_ref(), data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => dst.writable().await?.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::unistd::pipe2;

    #[tokio::test(flavor = "current_thread")]
    async fn splice_copies_every_byte_and_sees_eof() {
        let (a_r, a_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (b_r, b_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(a_w);
            std::io::Write::write_all(&mut f, &payload).expect("write");
        });
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(b_r);
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut out).expect("read");
            out
        });
        let src = async_fd(a_r).expect("src");
        let dst = async_fd(b_w).expect("dst");
        assert_eq!(copy(&src, &dst, false).await.expect("copy"), Stop::Eof);
        drop(dst);
        writer.join().expect("writer");
        assert_eq!(reader.join().expect("reader"), expected);
    }

    /// The exit of a process is reported only once its reader took the output out of the FIFO
    /// (a client that stops reading at the exit must still get every byte).
    #[tokio::test(flavor = "current_thread")]
    async fn wait_consumed_returns_once_the_reader_took_everything() {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let mut wf = std::fs::File::from(w);
        std::io::Write::write_all(&mut wf, &[1u8; 60_000]).expect("write");
        assert_eq!(unread_bytes(&wf), Some(60_000));
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(r);
            let mut buf = [0u8; 4096];
            let mut got = 0;
            while got < 60_000 {
                std::thread::sleep(std::time::Duration::from_millis(2));
                got += std::io::Read::read(&mut f, &mut buf).expect("read");
            }
            f
        });
        let progress = AtomicU64::new(0);
        wait_consumed(&wf, &progress, std::time::Duration::from_secs(10)).await;
        assert_eq!(unread_bytes(&wf), Some(0));
        assert_eq!(progress.load(Ordering::Relaxed), 60_000);
        drop(reader.join().expect("reader"));
    }

    /// A reader that never reads does not hold the exit forever: `bound` without progress.
    #[tokio::test(flavor = "current_thread")]
    async fn wait_consumed_gives_up_on_a_reader_that_stopped() {
        let (_r, w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let mut wf = std::fs::File::from(w);
        std::io::Write::write_all(&mut wf, &[1u8; 1000]).expect("write");
        let progress = AtomicU64::new(0);
        let started = std::time::Instant::now();
        let bound = std::time::Duration::from_millis(300);
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            wait_consumed(&wf, &progress, bound),
        )
        .await
        .expect("wait_consumed ignored its bound");
        assert!(started.elapsed() >= bound);
        assert_eq!(unread_bytes(&wf), Some(1000));
        assert_eq!(progress.load(Ordering::Relaxed), 0);
    }

    /// A FIFO that nobody reads (the client is gone) does not hold the exit: no waiting at all.
    #[tokio::test(flavor = "current_thread")]
    async fn wait_consumed_returns_at_once_without_a_reader() {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let mut wf = std::fs::File::from(w);
        std::io::Write::write_all(&mut wf, &[1u8; 1000]).expect("write");
        assert!(!no_reader(&wf));
        drop(r);
        assert!(no_reader(&wf));
        let progress = AtomicU64::new(0);
        let started = std::time::Instant::now();
        wait_consumed(&wf, &progress, std::time::Duration::from_secs(10)).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(progress.load(Ordering::Relaxed), 0);
    }

    /// Output a process wrote, and then went quiet without closing its end, arrives at once:
    /// no byte waits in the pipe for a further write or for the end of file. Covers a short write, a
    /// write bigger than the pipe (the writer blocks half-way), and a reader that starts late
    /// and takes little at a time.
    #[tokio::test(flavor = "current_thread")]
    async fn bytes_written_before_a_pause_are_delivered_without_a_further_write() {
        // (bytes, reader's start delay, reader's read size): small reads keep the destination
        // nearly full, so splices leave bytes behind in the source.
        for (size, reader_delay_ms, read_size) in [
            (100usize, 0u64, 65536usize),
            (3 << 20, 0, 65536),
            (5 << 20, 30, 4096),
        ] {
            let (a_r, a_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
            let (b_r, b_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let writer = std::thread::spawn(move || {
                let mut f = std::fs::File::from(a_w);
                let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
                std::io::Write::write_all(&mut f, &data).expect("write");
                // Quiet but still open, like a process waiting for input.
                let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
                drop(f);
            });
            let delay = std::time::Duration::from_millis(reader_delay_ms);
            let reader = spawn_reader(b_r, size, read_size, delay);
            copy_until_read(a_r, b_w, &reader).await;
            assert!(
                reader.is_finished(),
                "{size} bytes written before a pause were not all delivered"
            );
            let got = reader.join().expect("reader");
            assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));
            assert_eq!(got.len(), size);
            done_tx.send(()).expect("writer gone");
            writer.join().expect("writer");
        }
    }

    /// A writer that grows its pipe while the copy runs still gets every byte through. (A copy
    /// that waits for writers' end-of-write signals must not trust the pipe size it saw at
    /// the start: 75c45ea did so, with a bound, and this test hangs without that bound.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_pipe_grown_by_its_writer_loses_nothing() {
        const SIZE: usize = 3 << 20;
        let (a_r, a_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (b_r, b_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            // After the copy started (and read the pipe's size).
            std::thread::sleep(std::time::Duration::from_millis(50));
            // SAFETY: F_SETPIPE_SZ takes an int and touches no memory of ours.
            let rc = unsafe { libc::fcntl(a_w.as_raw_fd(), libc::F_SETPIPE_SZ, 256 * 1024) };
            assert!(rc >= 256 * 1024, "could not grow the pipe");
            let mut f = std::fs::File::from(a_w);
            std::io::Write::write_all(&mut f, &vec![9u8; SIZE]).expect("write");
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
        });
        let reader = spawn_reader(b_r, SIZE, 4096, std::time::Duration::ZERO);
        copy_until_read(a_r, b_w, &reader).await;
        assert!(
            reader.is_finished(),
            "bytes stuck in a pipe its writer grew"
        );
        assert_eq!(reader.join().expect("reader").len(), SIZE);
        done_tx.send(()).expect("writer gone");
        writer.join().expect("writer");
    }

    /// A thread that waits `delay`, then reads `size` bytes from `r`, `read_size` at a time.
    fn spawn_reader(
        r: OwnedFd,
        size: usize,
        read_size: usize,
        delay: std::time::Duration,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut f = std::fs::File::from(r);
            let mut got = Vec::with_capacity(size);
            let mut buf = vec![0u8; read_size];
            while got.len() < size {
                let n = std::io::Read::read(&mut f, &mut buf).expect("read");
                assert!(n > 0, "early end of file");
                got.extend_from_slice(&buf[..n]);
            }
            got
        })
    }

    /// Copies `src` to `dst` until `reader` has finished, or for 10 s at most. The writer
    /// keeps its end open, so a copy that ends by itself is a failure.
    async fn copy_until_read<T>(src: OwnedFd, dst: OwnedFd, reader: &std::thread::JoinHandle<T>) {
        let src = async_fd(src).expect("src");
        let dst = async_fd(dst).expect("dst");
        let delivered = async {
            while !reader.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::select! {
            res = copy(&src, &dst, false) => panic!("copy ended while the writer was open: {res:?}"),
            _ = tokio::time::timeout(std::time::Duration::from_secs(10), delivered) => {}
        }
    }

    /// A bursty writer and a reader that sometimes lets the destination fill up: EAGAIN from
    /// an empty source must never be mistaken for a full destination (that wait never ends,
    /// since a pipe with room signals nothing).
    #[tokio::test(flavor = "current_thread")]
    async fn splice_never_waits_on_a_destination_with_room() {
        // The race is narrow: several rounds make a regression show up reliably.
        for _ in 0..10 {
            bursty_round().await;
        }
    }

    async fn bursty_round() {
        let (a_r, a_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        let (b_r, b_w) = pipe2(OFlag::O_CLOEXEC).expect("pipe");
        const TOTAL: usize = 8 << 20;
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(a_w);
            let chunk = vec![7u8; 512];
            let mut sent = 0;
            let mut i = 0u32;
            while sent < TOTAL {
                let n = chunk.len().min(TOTAL - sent);
                std::io::Write::write_all(&mut f, &chunk[..n]).expect("write");
                sent += n;
                i = i.wrapping_add(1);
                // Keep the source flipping between empty and non-empty.
                if i.is_multiple_of(8) {
                    std::thread::yield_now();
                }
            }
        });
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(b_r);
            let mut buf = vec![0u8; 16384];
            let mut got = 0;
            let mut i = 0u32;
            loop {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) => return got,
                    Ok(n) => got += n,
                    Err(e) => panic!("read: {e}"),
                }
                i = i.wrapping_add(1);
                if i.is_multiple_of(50) {
                    // Let the destination fill up now and then.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        });
        let src = async_fd(a_r).expect("src");
        let dst = async_fd(b_w).expect("dst");
        let res =
            tokio::time::timeout(std::time::Duration::from_secs(10), copy(&src, &dst, false)).await;
        assert_eq!(
            res.expect("copy stalled: waited on a side that was not blocking")
                .expect("copy"),
            Stop::Eof
        );
        drop(dst);
        writer.join().expect("writer");
        assert_eq!(reader.join().expect("reader"), TOTAL);
    }
}
