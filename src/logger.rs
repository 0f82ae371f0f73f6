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
        let mut guard = crate::lock(&self.out);
        if let Some(out) = guard.as_mut() {
            let line = format!(
                "time=\"{}\" level={} msg=\"{}\" runtime=io.containerd.tender.v2 pid={}\n",
                rfc3339(std::time::SystemTime::now()),
                record.level().as_str().to_ascii_lowercase(),
                record.args().to_string().replace('"', "\\\""),
                std::process::id()
            );
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// UTC time as RFC 3339 with nanoseconds (what containerd's own log lines carry).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_318_693, 5);
        assert_eq!(super::rfc3339(t), "2026-11-22T03:38:13.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(super::rfc3339(leap), "2000-02-29T00:00:00.000000000Z");
    }
}
