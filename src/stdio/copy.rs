//! Moving bytes between file descriptors without blocking the (single) runtime thread.
//!
//! Pipe to pipe (container pipe → containerd FIFO) uses `splice(2)`: the bytes never enter
//! user space. Anything else (a pty master) falls back to read/write through one buffer.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

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

/// Bytes waiting in a pipe.
fn pending(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 && n > 0 {
        n as usize
    } else {
        0
    }
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
    if is_pipe(src.get_ref()) && is_pipe(dst.get_ref()) {
        splice_loop(src, dst, drain_only).await
    } else {
        buffered_loop(src, dst, drain_only).await
    }
}

async fn splice_loop(
    src: &AsyncFd<OwnedFd>,
    dst: &AsyncFd<OwnedFd>,
    drain_only: bool,
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
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                // EAGAIN means either side: data waiting in src means dst is full.
                if pending(src.get_ref()) > 0 {
                    dst.writable().await?.clear_ready();
                } else if drain_only {
                    return Ok(Stop::Drained);
                } else {
                    src.readable().await?.clear_ready();
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
}
