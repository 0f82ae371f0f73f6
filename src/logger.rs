//! The shim's log goes to the `log` FIFO containerd creates in the bundle (containerd copies
//! it into its own log). Writes never block: a full FIFO drops the line rather than stall
//! the shim.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

struct FifoLogger {
    out: Mutex<Option<File>>,
    level: log::LevelFilter,
}

impl log::Log for FifoLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(out) = guard.as_mut() {
            let now = crate::events::timestamp(std::time::SystemTime::now());
            let line = format!(
                "time=\"{}.{:09}\" level={} msg=\"{}\" runtime=io.containerd.tender.v2 pid={}\n",
                now.seconds,
                now.nanos,
                record.level().as_str().to_ascii_lowercase(),
                record.args().to_string().replace('"', "\\\""),
                std::process::id()
            );
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

pub fn init(fifo: &Path, debug: bool) {
    let out = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(fifo)
        .ok();
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger = Box::new(FifoLogger {
        out: Mutex::new(out),
        level,
    });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}
