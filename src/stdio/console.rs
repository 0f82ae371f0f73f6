//! Terminals: the OCI runtime creates the pty inside the container and sends the master end
//! over a unix socket (`--console-socket`) as SCM_RIGHTS.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::net::UnixListener;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// How long the runtime may take to send the pty master after `create`/`exec` returned.
const RECEIVE_BOUND: Duration = Duration::from_secs(10);

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Private directory created for the socket when the preferred one gave too long a path.
    temp_dir: Option<PathBuf>,
}

/// `sun_path` holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

impl ConsoleSocket {
    /// Binds the socket in `dir` (the bundle) when the path fits in a `sockaddr_un`, else in a
    /// fresh 0700 directory under the temp dir (bundles of 64-character container ids under
    /// `/run/containerd/io.containerd.runtime.v2.task/<namespace>/` are too long).
    pub fn new(dir: &Path) -> io::Result<Self> {
        let name = format!(
            "pty-{}-{}.sock",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(&name);
        if path.as_os_str().len() <= SUN_PATH_MAX {
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            return Ok(Self {
                listener,
                path,
                temp_dir: None,
            });
        }
        let mut last_err = None;
        for base in [std::env::temp_dir(), PathBuf::from("/tmp")] {
            let Ok(temp) = make_private_dir(&base) else {
                continue;
            };
            let path = temp.join("pty.sock");
            if path.as_os_str().len() > SUN_PATH_MAX {
                let _ = std::fs::remove_dir(&temp);
                continue;
            }
            match UnixListener::bind(&path) {
                Ok(listener) => {
                    return Ok(Self {
                        listener,
                        path,
                        temp_dir: Some(temp),
                    })
                }
                Err(e) => {
                    let _ = std::fs::remove_dir(&temp);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "no directory gives a console socket path shorter than {} bytes (tried {})",
                    SUN_PATH_MAX + 1,
                    path.display()
                ),
            )
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the runtime's connection and takes the pty master fd out of it.
    pub async fn receive_master(self) -> io::Result<OwnedFd> {
        let fut = async {
            let (stream, _) = self.listener.accept().await?;
            loop {
                stream.readable().await?;
                match recv_fd(stream.as_raw_fd()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        };
        tokio::time::timeout(RECEIVE_BOUND, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "runtime sent no terminal"))?
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `mkdtemp(<base>/tender-pty-XXXXXX)`: a new directory only this user can enter.
fn make_private_dir(base: &Path) -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let template = base.join("tender-pty-XXXXXX");
    let mut bytes = template.as_os_str().as_bytes().to_vec();
    bytes.push(0);
    // SAFETY: `bytes` is a NUL-terminated, writable buffer that mkdtemp edits in place.
    let rc = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    if rc.is_null() {
        return Err(io::Error::last_os_error());
    }
    bytes.pop();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut received: Option<OwnedFd> = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this fd in our table; we own it now.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if received.is_none() {
                    received = Some(owned);
                }
            }
        }
    }
    received.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no fd on console socket"))
}

/// Sets the terminal size (TIOCSWINSZ on the master).
pub fn resize(master: RawFd, width: u32, height: u32) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: u16::try_from(height)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "height out of range"))?,
        ws_col: u16::try_from(width)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "width out of range"))?,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize struct through the pointer.
    let rc = unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
