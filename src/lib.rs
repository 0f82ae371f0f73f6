//! Tender: a containerd shim v2. The binary is `src/main.rs`; this library holds the whole
//! shim so that tests, fuzz targets and benchmarks can reach its parts.

pub mod bootstrap;
pub mod cgroups;
pub mod container;
pub mod events;
pub mod logger;
pub mod mount;
pub mod options;
pub mod process;
pub mod reaper;
pub mod runtime;
pub mod server;
pub mod service;
pub mod stdio;

/// Locks a mutex, also when a thread panicked while holding it. Every mutex in the shim guards
/// plain bookkeeping that each holder leaves consistent before anything can panic, so a poisoned
/// lock is still usable, and a running shim must keep serving its other containers.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a file once the RPC being served has sent its reply. Unlinking a file that was just
/// written (a runtime's pid file, an exec's process spec) costs ~0.3 ms on ext4 because of
/// delayed allocation; none of those files is read again, so the reply need not wait for it.
/// One yield is enough: the reply is queued for the connection's writer before this task runs
/// again. Must be called from inside the shim's runtime.
pub(crate) fn remove_file_soon(path: std::path::PathBuf) {
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        let _ = std::fs::remove_file(&path);
    });
}
