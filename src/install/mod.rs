//! `tender-install`: adds Tender's runtime handler to containerd's `config.toml` (and removes it
//! again), keeping the rest of the file byte for byte. The text decisions are in [`merge`]; this
//! module reads and writes the files: atomic replacement, a backup of the original bytes and a
//! record of what was written (so uninstall can restore the original exactly).

pub mod diff;
pub mod merge;
pub mod restart;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use merge::{Installed, OptionsSource, Removed};

/// The default containerd config.
pub const DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";

/// `--help`.
pub const USAGE: &str = "\
tender-install: add Tender's runtime handler to containerd's config.toml, or remove it

Usage:
  tender-install install   [--config PATH] [--options-file PATH] [--restart MODE] [--dry-run]
  tender-install uninstall [--config PATH] [--restart MODE] [--dry-run]
  tender-install --help

  --config PATH        containerd's config (default /etc/containerd/config.toml)
  --options-file PATH  Tender's options file the handler points at (absolute; default
                       /etc/containerd/tender.toml for `version = 2` configs; `version = 3`
                       configs get the options inline unless this is given). Written with
                       `BinaryName = \"runc\"` only if it does not exist.
  --restart MODE       after a change: `none` (default) prints how to restart containerd;
                       `auto` runs `systemctl restart containerd` in PID 1's namespaces
                       (nsenter -t 1 -m -u -i -n -p) where PID 1 is systemd and prints
                       what to do otherwise; `systemd` is auto that fails without systemd.
                       A run that changes nothing restarts nothing, unless an earlier
                       restart failed (PATH.tender-restart-pending).
  --dry-run            print the change as a diff and change nothing

install appends the `tender` runtime (and `runc`, where a `version = 2` config would
otherwise lose containerd 1.x's built-in runtime) to the CRI plugin's runtimes table, keeps
a backup of the original as PATH.tender-backup and a record as PATH.tender-install. Running
it again changes nothing. uninstall restores the backup when the config is still exactly what
install wrote, otherwise removes only what install added. Neither restarts containerd unless
--restart says so.
";

/// Exit status of a refusal or failure (the config is unchanged).
pub const EXIT_REFUSED: i32 = 1;
/// Exit status of a bad command line.
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Install,
    Uninstall,
}

#[derive(Debug)]
struct Args {
    command: Command,
    config: PathBuf,
    options_file: Option<String>,
    restart: restart::Mode,
    dry_run: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut command = None;
    let mut config = None;
    let mut options_file = None;
    let mut dry_run = false;
    let mut restart = restart::Mode::None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone().or_else(|| it.next().cloned()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(format!("{name} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" | "help" => command = Some(Command::Help),
            "--dry-run" if inline.is_none() => dry_run = true,
            "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--options-file" => options_file = Some(value("--options-file")?),
            "--restart" => restart = value("--restart")?.parse()?,
            "install" | "uninstall" if command.is_none() => {
                command = Some(if flag == "install" {
                    Command::Install
                } else {
                    Command::Uninstall
                })
            }
            _ => return Err(format!("unexpected argument `{a}`")),
        }
    }
    let command = command.ok_or("no command (install or uninstall)")?;
    if command == Command::Uninstall && options_file.is_some() {
        return Err("--options-file is for install only".into());
    }
    if let Some(p) = &options_file {
        if !p.starts_with('/') {
            return Err(format!(
                "--options-file must be an absolute path (containerd reads it from its own \
                 working directory): `{p}`"
            ));
        }
    }
    Ok(Args {
        command,
        config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
        options_file,
        restart,
        dry_run,
    })
}

/// Runs `tender-install` with `args` (without the program name); returns the exit status.
pub fn main_with_args(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "tender-install: {e}\n\n{USAGE}");
            return EXIT_USAGE;
        }
    };
    let result = match args.command {
        Command::Help => {
            let _ = write!(out, "{USAGE}");
            return 0;
        }
        Command::Install => install(&args, out, err),
        Command::Uninstall => uninstall(&args, out),
    };
    let result = result.and_then(|changed| match changed {
        Some((config, changed)) if !args.dry_run => restart::after(
            args.restart,
            changed,
            &config,
            restart::pid1_name().as_deref(),
            out,
            restart::restart_through_systemd,
        ),
        _ => Ok(()),
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "tender-install: {e}");
            EXIT_REFUSED
        }
    }
}

/// The config as read: its resolved path (symlinks followed), text and metadata.
struct Config {
    path: PathBuf,
    text: String,
    meta: fs::Metadata,
}

fn read_config(path: &Path) -> Result<Config, String> {
    let resolved = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "{} does not exist. containerd's config must exist before a runtime is added to \
                 it: create one with `containerd config default > {}` (containerd 1.6/1.7 write \
                 `version = 2`, 2.x `version = 3`), review it, restart containerd, and run \
                 tender-install again",
                path.display(),
                path.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let meta = fs::metadata(&resolved).map_err(|e| format!("{}: {e}", resolved.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", resolved.display()));
    }
    let bytes = fs::read(&resolved).map_err(|e| format!("read {}: {e}", resolved.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{} is not UTF-8 text; left alone", resolved.display()))?;
    Ok(Config {
        path: resolved,
        text,
        meta,
    })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn backup_path(config: &Path) -> PathBuf {
    with_suffix(config, ".tender-backup")
}

fn record_path(config: &Path) -> PathBuf {
    with_suffix(config, ".tender-install")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What install wrote, as kept next to the config.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    installed_sha256: String,
    original_sha256: String,
    backup: PathBuf,
}

impl Record {
    fn render(&self, config: &Path) -> String {
        let q = |s: &str| toml_edit::Value::from(s).to_string().trim().to_string();
        format!(
            "# tender-install's record of what it wrote to {} (read by `tender-install uninstall`).\n\
             installed_sha256 = {}\noriginal_sha256 = {}\nbackup = {}\n",
            config.display().to_string().replace(['\n', '\r'], "?"),
            q(&self.installed_sha256),
            q(&self.original_sha256),
            q(&self.backup.to_string_lossy()),
        )
    }

    /// The record, if it exists and makes sense (anything else is treated as no record).
    fn read(path: &Path) -> Option<Record> {
        let text = fs::read_to_string(path).ok()?;
        let doc = text.parse::<toml_edit::DocumentMut>().ok()?;
        let s = |k: &str| doc.get(k).and_then(|i| i.as_str()).map(str::to_string);
        Some(Record {
            installed_sha256: s("installed_sha256")?,
            original_sha256: s("original_sha256")?,
            backup: PathBuf::from(s("backup")?),
        })
    }
}

/// Replaces `path` with `bytes`: a temporary file in the same directory, written, given
/// `mode` and `owner`, fsynced, renamed over `path`, and the directory fsynced.
fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tender-install.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!(
            "cannot write {} (in {}): {e}",
            path.display(),
            dir.display()
        )
    })
}

fn check_writable(c: &Config) -> Result<(), String> {
    let mode = c.meta.permissions().mode();
    if mode & 0o222 == 0 {
        return Err(format!(
            "{} is read-only (mode {:04o}); left unchanged. Make it writable (`chmod u+w`) if it \
             is meant to be edited, or change it where it is generated",
            c.path.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

fn config_owner(c: &Config) -> Option<(u32, u32)> {
    Some((c.meta.uid(), c.meta.gid()))
}

fn cri_disabled(text: &str) -> bool {
    let Ok(doc) = text.parse::<toml_edit::DocumentMut>() else {
        return false;
    };
    doc.get("disabled_plugins")
        .and_then(|i| i.as_array())
        .is_some_and(|a| {
            a.iter().any(|v| {
                matches!(
                    v.as_str(),
                    Some("cri" | "io.containerd.grpc.v1.cri" | "io.containerd.cri.v1.runtime")
                )
            })
        })
}

/// Warns when an existing options file is one Tender would refuse (pods on the handler would
/// fail to start; the node's other handlers are not affected).
fn check_options_file(path: &Path, err: &mut dyn Write) {
    let problem = match fs::read_to_string(path) {
        Ok(text) => crate::options::Options::from_toml(&text).err(),
        Err(e) => Some(e.to_string()),
    };
    if let Some(p) = problem {
        let _ = writeln!(
            err,
            "tender-install: warning: Tender would refuse its options file {}: {p}",
            path.display()
        );
    }
}

/// What a command did to the config: its resolved path and whether it changed (`None` for a
/// dry run).
type Outcome = Result<Option<(PathBuf, bool)>, String>;

fn install(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Outcome {
    let c = read_config(&args.config)?;
    let schema = merge::check(&c.text).map_err(|r| format!("{}: {r}", c.path.display()))?;
    let source = merge::options_source(schema, args.options_file.as_deref());
    let options_path = match &source {
        OptionsSource::File(p) => Some(PathBuf::from(p)),
        OptionsSource::Inline => None,
    };
    let write_options = options_path.as_ref().filter(|p| !p.exists());
    let result = merge::install(&c.text, args.options_file.as_deref())
        .map_err(|r| format!("{}: {r}", c.path.display()))?;
    if cri_disabled(&c.text) {
        let _ = writeln!(
            err,
            "tender-install: warning: {} disables the CRI plugin (disabled_plugins); the handler \
             has no effect until it is enabled",
            c.path.display()
        );
    }
    let p = c.path.display();
    match result {
        Installed::Already => {
            if let Some(o) = write_options {
                if args.dry_run {
                    let _ = writeln!(out, "would write {} (BinaryName = \"runc\")", o.display());
                } else {
                    write_atomic(o, merge::OPTIONS_FILE_TEXT.as_bytes(), 0o644, None)?;
                    let _ = writeln!(out, "wrote {} (BinaryName = \"runc\")", o.display());
                }
            } else if let Some(o) = &options_path {
                check_options_file(o, err);
            }
            let _ = writeln!(out, "{p}: tender is already installed; nothing changed");
            Ok(Some((c.path.clone(), false)))
        }
        Installed::Changed { text, added_runc } => {
            if args.dry_run {
                let _ = write!(out, "{}", diff::unified(&c.text, &text, &p.to_string()));
                if let Some(o) = write_options {
                    let _ = writeln!(out, "would write {} (BinaryName = \"runc\")", o.display());
                }
                let _ = writeln!(out, "dry run: nothing changed");
                return Ok(None);
            }
            check_writable(&c)?;
            let mode = c.meta.permissions().mode() & 0o7777;
            let backup = backup_path(&c.path);
            write_atomic(&backup, c.text.as_bytes(), mode, config_owner(&c))?;
            write_atomic(&c.path, text.as_bytes(), mode, config_owner(&c))?;
            let record = Record {
                installed_sha256: sha256_hex(text.as_bytes()),
                original_sha256: sha256_hex(c.text.as_bytes()),
                backup: backup.clone(),
            };
            let rp = record_path(&c.path);
            if let Err(e) = write_atomic(&rp, record.render(&c.path).as_bytes(), 0o644, None) {
                let _ = writeln!(
                    err,
                    "tender-install: warning: {e}; uninstall will remove the added block \
                     instead of restoring the backup"
                );
            }
            let _ = writeln!(
                out,
                "{p}: added the `tender` runtime (runtime_type io.containerd.tender.v2) to [{}]{}",
                schema.runtimes_header(),
                if added_runc {
                    ", and `runc` (io.containerd.runc.v2): defining any runtime replaces \
                     containerd 1.x's built-in table, which would leave the default runtime \
                     undefined and CRI unloaded"
                } else {
                    ""
                }
            );
            let _ = writeln!(out, "original kept in {}", backup.display());
            if let Some(o) = write_options {
                write_atomic(o, merge::OPTIONS_FILE_TEXT.as_bytes(), 0o644, None)?;
                let _ = writeln!(out, "wrote {} (BinaryName = \"runc\")", o.display());
            } else if let Some(o) = &options_path {
                let _ = writeln!(out, "{} exists; left as it is", o.display());
                check_options_file(o, err);
            }
            Ok(Some((c.path.clone(), true)))
        }
    }
}

fn uninstall(args: &Args, out: &mut dyn Write) -> Outcome {
    let c = read_config(&args.config)?;
    merge::check(&c.text).map_err(|r| format!("{}: {r}", c.path.display()))?;
    let p = c.path.display();
    let rp = record_path(&c.path);
    // The config is exactly what install wrote, and the backup (where install keeps it) is the
    // original: restore it.
    let backup = backup_path(&c.path);
    let original = Record::read(&rp)
        .filter(|r| r.installed_sha256 == sha256_hex(c.text.as_bytes()) && r.backup == backup)
        .and_then(|r| {
            let bytes = fs::read(&backup).ok()?;
            (sha256_hex(&bytes) == r.original_sha256).then_some(bytes)
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let restored = original.is_some();
    let (new, message) = match original {
        Some(original) => (
            original,
            format!("restored the original from {}", backup.display()),
        ),
        None => match merge::uninstall(&c.text).map_err(|r| format!("{p}: {r}"))? {
            Removed::NotInstalled => {
                let _ = writeln!(
                    out,
                    "{p}: tender-install's runtime is not there; nothing changed"
                );
                return Ok(Some((c.path.clone(), false)));
            }
            Removed::Changed(t) => (
                t,
                "the config changed since install (or install's record or backup is gone): \
                 removed only the tables tender-install added and kept the rest"
                    .to_string(),
            ),
        },
    };
    if args.dry_run {
        let _ = write!(out, "{}", diff::unified(&c.text, &new, &p.to_string()));
        let _ = writeln!(out, "dry run: nothing changed (would have {message})");
        return Ok(None);
    }
    check_writable(&c)?;
    let mode = c.meta.permissions().mode() & 0o7777;
    write_atomic(&c.path, new.as_bytes(), mode, config_owner(&c))?;
    let _ = fs::remove_file(&rp);
    let _ = writeln!(out, "{p}: {message}");
    if restored {
        let _ = fs::remove_file(&backup);
    } else if backup.exists() {
        let _ = writeln!(
            out,
            "the config as it was before install is still in {}",
            backup.display()
        );
    }
    let _ = writeln!(
        out,
        "Tender's options file (if any) is left in place. Drain the node's Tender pods before \
         removing the shim binary."
    );
    Ok(Some((c.path.clone(), true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_options_file_written_is_one_tender_accepts() {
        let o = crate::options::Options::from_toml(merge::OPTIONS_FILE_TEXT).unwrap();
        assert_eq!(o.binary(), "runc");
    }

    #[test]
    fn command_line() {
        let a = args(&["install", "--config", "/x", "--dry-run"]).unwrap();
        assert_eq!(a.command, Command::Install);
        assert_eq!(a.config, PathBuf::from("/x"));
        assert!(a.dry_run);
        let a = args(&["uninstall"]).unwrap();
        assert_eq!(a.config, PathBuf::from(DEFAULT_CONFIG));
        let a = args(&["install", "--options-file=/o.toml"]).unwrap();
        assert_eq!(a.options_file.as_deref(), Some("/o.toml"));
        assert_eq!(args(&["--help"]).unwrap().command, Command::Help);
        assert!(args(&[]).is_err());
        assert!(args(&["install", "--config"]).is_err());
        assert!(args(&["install", "--bogus"]).is_err());
        assert!(args(&["install", "uninstall"]).is_err());
        assert!(args(&["install", "--options-file", "rel.toml"]).is_err());
        assert!(args(&["uninstall", "--options-file", "/o.toml"]).is_err());
        assert_eq!(args(&["install"]).unwrap().restart, restart::Mode::None);
        let a = args(&["uninstall", "--restart", "auto"]).unwrap();
        assert_eq!(a.restart, restart::Mode::Auto);
        let a = args(&["install", "--restart=systemd"]).unwrap();
        assert_eq!(a.restart, restart::Mode::Systemd);
        assert!(args(&["install", "--restart", "always"]).is_err());
        assert!(args(&["install", "--restart"]).is_err());
    }

    #[test]
    fn record_round_trip_and_garbage() {
        let dir = std::env::temp_dir().join(format!("tender-install-rec-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let r = Record {
            installed_sha256: "ab".into(),
            original_sha256: "cd".into(),
            backup: dir.join("c.toml.tender-backup"),
        };
        let p = dir.join("rec");
        fs::write(&p, r.render(Path::new("/c.toml"))).unwrap();
        assert_eq!(Record::read(&p), Some(r));
        fs::write(&p, "\u{0}garbage = [").unwrap();
        assert_eq!(Record::read(&p), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
