//! `--restart`: what `tender-install` does about containerd once the config changed.
//!
//! containerd reads its config only at start. Where PID 1 is systemd, the restart is
//! `systemctl restart containerd` run in PID 1's namespaces (`nsenter -t 1 -m -u -i -n -p`),
//! which from a pod with `hostPID: true` is the host's systemd, and on the host itself is a
//! plain `systemctl`. Anywhere else the operator is told what to do and nothing fails.
//!
//! containerd is restarted only when this run changed the config, or when an earlier run
//! changed it and its restart failed: a marker file (`CONFIG.tender-restart-pending`) is
//! written before the restart and removed once it succeeded, so a DaemonSet pod that failed
//! on the restart retries it when it runs again, although the config is already installed.
//! A run that changes nothing does not restart containerd (a DaemonSet pod rescheduled on a
//! node must not restart the node's containerd each time).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `--restart MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Print what to run (the default on the command line).
    None,
    /// Restart through systemd where PID 1 is systemd, otherwise print what to do.
    Auto,
    /// Restart through systemd; fail when PID 1 is not systemd.
    Systemd,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "none" => Ok(Mode::None),
            "auto" => Ok(Mode::Auto),
            "systemd" => Ok(Mode::Systemd),
            _ => Err(format!(
                "--restart must be auto, systemd or none, not `{s}`"
            )),
        }
    }
}

/// The PATH `systemctl` is looked up in, in PID 1's mount namespace (the host's, not the
/// installer image's).
pub const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What restarts containerd: `nsenter` with these arguments.
pub const NSENTER_ARGS: &[&str] = &[
    "-t",
    "1",
    "-m",
    "-u",
    "-i",
    "-n",
    "-p",
    "--",
    "systemctl",
    "restart",
    "containerd",
];

/// The marker of a restart that is due (see the module's documentation).
pub fn pending_path(config: &Path) -> PathBuf {
    let mut s = config.as_os_str().to_os_string();
    s.push(".tender-restart-pending");
    PathBuf::from(s)
}

/// PID 1's name (`/proc/1/comm`), if it can be read.
pub fn pid1_name() -> Option<String> {
    fs::read_to_string("/proc/1/comm")
        .ok()
        .map(|s| s.trim().to_string())
}

/// What to do after install or uninstall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing changed and no restart is due: say nothing more.
    Nothing,
    /// Nothing changed and no restart is due, though a restart was asked for: say so.
    NotNeeded,
    /// Tell the operator to restart containerd (the text says how).
    Instructions(String),
    /// Restart containerd through systemd.
    Restart,
}

/// The instructions when containerd is not restarted by this run.
pub fn instructions(pid1: Option<&str>) -> String {
    let how = match pid1 {
        Some("systemd") => "run `systemctl restart containerd` (or tender-install with \
                            `--restart auto`)"
            .to_string(),
        Some(name) => format!(
            "PID 1 here is `{name}`, not systemd, so restart containerd however this node \
             supervises it (in a pod, the host's systemd is only seen with `hostPID: true`)"
        ),
        None => "PID 1 cannot be read, so restart containerd however this node supervises it"
            .to_string(),
    };
    format!(
        "containerd has not been restarted and reads its config only at start: {how}. \
         Running containers are not touched: their shims keep them and containerd reconnects."
    )
}

/// Decides what to do: `changed` = this run changed the config, `pending` = an earlier run's
/// restart is still due, `pid1` = PID 1's name.
pub fn plan(mode: Mode, changed: bool, pending: bool, pid1: Option<&str>) -> Result<Plan, String> {
    let due = changed || pending;
    let systemd = pid1 == Some("systemd");
    Ok(match mode {
        Mode::None if changed => Plan::Instructions(instructions(pid1)),
        Mode::None => Plan::Nothing,
        _ if !due => Plan::NotNeeded,
        Mode::Auto if !systemd => Plan::Instructions(instructions(pid1)),
        Mode::Systemd if !systemd => {
            return Err(format!(
                "--restart systemd: PID 1 is {}, not systemd (in a pod, the host's systemd is \
                 only seen with `hostPID: true`); containerd was not restarted. {}",
                pid1.map_or("unreadable".to_string(), |n| format!("`{n}`")),
                if changed {
                    "The config change is written: restart containerd by hand."
                } else {
                    ""
                }
            ))
        }
        Mode::Auto | Mode::Systemd => Plan::Restart,
    })
}

/// Runs `nsenter` (found on this process's PATH) with [`NSENTER_ARGS`]; `systemctl` is looked
/// up on [`HOST_PATH`] in PID 1's mount namespace.
pub fn restart_through_systemd() -> Result<String, String> {
    let nsenter = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nsenter"))
                .find(|f| f.is_file())
        })
        .ok_or("no `nsenter` on PATH (util-linux, or busybox's applet)")?;
    let out = Command::new(&nsenter)
        .args(NSENTER_ARGS)
        .env("PATH", HOST_PATH)
        .output()
        .map_err(|e| format!("{}: {e}", nsenter.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "`nsenter {}` failed ({}): {}",
            NSENTER_ARGS.join(" "),
            out.status,
            text.trim()
        ))
    }
}

/// Applies [`plan`] for `config` (the resolved path of containerd's config) after a run that
/// `changed` it (or not); `restart` performs the restart. A failed restart leaves the marker
/// and is an error.
pub fn after(
    mode: Mode,
    changed: bool,
    config: &Path,
    pid1: Option<&str>,
    out: &mut dyn Write,
    restart: impl FnOnce() -> Result<String, String>,
) -> Result<(), String> {
    let marker = pending_path(config);
    let pending = marker.exists();
    match plan(mode, changed, pending, pid1)? {
        Plan::Nothing => Ok(()),
        Plan::NotNeeded => {
            let _ = writeln!(
                out,
                "containerd not restarted: nothing changed and no restart is due"
            );
            Ok(())
        }
        Plan::Instructions(text) => {
            let _ = writeln!(out, "{text}");
            Ok(())
        }
        Plan::Restart => {
            fs::write(
                &marker,
                "containerd must be restarted for the config to take effect; tender-install \
                 retries while this file exists\n",
            )
            .map_err(|e| format!("write {}: {e}", marker.display()))?;
            let _ = writeln!(
                out,
                "restarting containerd: nsenter {} (PID 1 is systemd)",
                NSENTER_ARGS.join(" ")
            );
            match restart() {
                Ok(said) => {
                    if !said.trim().is_empty() {
                        let _ = writeln!(out, "{}", said.trim_end());
                    }
                    let _ = fs::remove_file(&marker);
                    let _ = writeln!(out, "restarted containerd");
                    Ok(())
                }
                Err(e) => Err(format!(
                    "{e}\nthe config is written but containerd was not restarted: run \
                     `systemctl restart containerd` on the node; the next run of tender-install \
                     with --restart retries ({} marks it)",
                    marker.display()
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse::<Mode>(), Ok(Mode::Auto));
        assert_eq!("systemd".parse::<Mode>(), Ok(Mode::Systemd));
        assert_eq!("none".parse::<Mode>(), Ok(Mode::None));
        assert!("yes".parse::<Mode>().is_err());
    }

    #[test]
    fn plans() {
        let sd = Some("systemd");
        let sh = Some("sh");
        // none: instructions after a change, silence otherwise, never a restart.
        assert!(matches!(
            plan(Mode::None, true, false, sd),
            Ok(Plan::Instructions(_))
        ));
        assert_eq!(plan(Mode::None, false, true, sd), Ok(Plan::Nothing));
        // auto: restart on systemd when a restart is due, instructions elsewhere.
        assert_eq!(plan(Mode::Auto, true, false, sd), Ok(Plan::Restart));
        assert_eq!(plan(Mode::Auto, false, true, sd), Ok(Plan::Restart));
        assert_eq!(plan(Mode::Auto, false, false, sd), Ok(Plan::NotNeeded));
        match plan(Mode::Auto, true, false, sh) {
            Ok(Plan::Instructions(t)) => assert!(t.contains("`sh`, not systemd"), "{t}"),
            p => panic!("{p:?}"),
        }
        assert!(matches!(
            plan(Mode::Auto, true, false, None),
            Ok(Plan::Instructions(_))
        ));
        // systemd: a restart, or an error when PID 1 is something else.
        assert_eq!(plan(Mode::Systemd, true, false, sd), Ok(Plan::Restart));
        assert!(plan(Mode::Systemd, true, false, sh).is_err());
        assert_eq!(plan(Mode::Systemd, false, false, sh), Ok(Plan::NotNeeded));
    }

    #[test]
    fn a_failed_restart_is_retried_by_the_next_run() {
        let dir = std::env::temp_dir().join(format!("tender-restart-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        let mut out = Vec::new();
        let mut calls = 0;
        let r = after(Mode::Auto, true, &config, Some("systemd"), &mut out, || {
            calls += 1;
            Err("boom".into())
        });
        assert!(r.is_err() && pending_path(&config).exists(), "{r:?}");
        // Nothing changed this time, but the restart is still due.
        let r = after(
            Mode::Auto,
            false,
            &config,
            Some("systemd"),
            &mut out,
            || {
                calls += 1;
                Ok(String::new())
            },
        );
        assert_eq!(r, Ok(()));
        assert_eq!(calls, 2);
        assert!(!pending_path(&config).exists());
        // And then it is not.
        let r = after(
            Mode::Auto,
            false,
            &config,
            Some("systemd"),
            &mut out,
            || panic!("no restart is due"),
        );
        assert_eq!(r, Ok(()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
