//! containerd-shim-tender-v2: a containerd shim v2.
//!
//! `start` and `delete` are the actions containerd runs; without an action the binary is the
//! daemon started by hand (the listening socket on fd 3; `start` forks its daemon instead).
//! `-info` (containerd 2.x's runtime introspection), `-v` and `-h` answer and exit.
//! See `bootstrap` for each.
//!
//! The entry point is the C `main`, not Rust's: containerd runs this binary twice per shim
//! (`start`, then `delete` after the shim exits) and waits for both, and Rust's runtime setup
//! (finding the main thread's stack guard by parsing /proc/self/maps, an alternate signal
//! stack) costs about a quarter of a millisecond of each run. What of it matters is done here:
//! SIGPIPE ignored (a vanished reader must be an EPIPE error, never a dead shim), fds 0-2
//! open, stdout flushed before returning. `std::env::args` still works (glibc hands argv to
//! std's initialiser).

#![no_main]

use std::io::Write;

use tender::bootstrap;

#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal to SIG_IGN installs no handler code; fcntl/open on fds 0-2
    // touch no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        // A closed 0, 1 or 2 would be handed to the next open (e.g. the listening socket)
        // and later clobbered as stdio: park /dev/null there, as Rust's runtime would.
        for fd in 0..=2 {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
    let code = run();
    let _ = std::io::stdout().flush();
    code
}

fn run() -> libc::c_int {
    // The pod's namespace holder (sandbox::holder) is this binary re-executed by the shim.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(tender::sandbox::holder::HOLDER_ARG))
    {
        let args: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return tender::sandbox::holder::main(&args);
    }
    let flags = match bootstrap::flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-tender-v2: {e}");
            return 2;
        }
    };
    if flags.help {
        print!("{}", bootstrap::flags::USAGE);
        return 0;
    }
    if flags.version {
        print!("{}", bootstrap::info::version_text());
        return 0;
    }
    let result = match flags.action.as_deref() {
        // Before the action, as in containerd's shims: `-info` ignores any action given.
        _ if flags.info => bootstrap::info::run(),
        Some("start") => bootstrap::start(&flags),
        Some("delete") => bootstrap::delete(&flags),
        None => bootstrap::serve(&flags),
        Some(other) => Err(format!("unknown action {other:?}")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-tender-v2: {e}");
            1
        }
    }
}
