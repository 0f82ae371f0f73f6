//! Tender: a containerd shim v2. The binary is `src/main.rs`; this library holds the whole
//! shim so that tests, fuzz targets and benchmarks can reach its parts.

pub mod bootstrap;
pub mod cgroups;
pub mod container;
pub mod events;
pub mod install;
pub mod logger;
pub mod mount;
pub mod options;
pub mod process;
pub mod reaper;
pub mod runtime;
pub mod sandbox;
pub mod sealed_runtime;
pub mod server;
pub mod service;
pub mod stdio;

/// Locks a mutex, also when a thread panicked while holding it. Every mutex in the shim guards
/// plain bookkeeping that each holder leaves consistent before anything can panic, so a poisoned
/// lock is still usable, and a running shim must keep serving its other containers.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `clone(2)` with fork semantics (a copy of this process, no new stack) and `flags`: the
/// exit signal (`SIGCHLD`) and any new namespaces or `CLONE_PARENT`: returns 0 in the child, the child's pid in
/// the parent, -1 with errno set on failure.
///
/// # Safety
/// The process is multi-threaded: the child may only make async-signal-safe system calls on
/// memory prepared before the call, and must end in `execve` or `_exit`.
pub(crate) unsafe fn clone_like_fork(flags: libc::c_ulong) -> libc::c_long {
    libc::syscall(
        libc::SYS_clone,
        flags,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    )
}

/// Runs `work` once the RPC being served has queued its reply: for work the reply does not
/// depend on. One yield is enough: when the handler ends, its reply is queued for the
/// connection's writer ahead of this task's next turn. Must be called from inside the shim's
/// runtime.
pub(crate) fn after_reply(work: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        work.await;
    });
}

/// Removes a file after the reply (see [`after_reply`]): an exec's process spec and pid file,
/// which nothing reads again once the exec is deleted (see `Container::remove_exec_files_soon`).
pub(crate) fn remove_file_soon(path: std::path::PathBuf) {
    after_reply(async move {
        let _ = std::fs::remove_file(&path);
    });
}

/// Unit tests that create child processes hold this for as long as their children live: a
/// running [`reaper::Reaper`] reaps with `waitpid(-1)` and would steal another test's child
/// (whose `wait()` then fails with ECHILD). Test threads share one process.
#[cfg(test)]
pub(crate) static CHILD_PROCESS_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
