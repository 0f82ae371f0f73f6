//! The Debian package (`scripts/build-deb.sh`): it installs and removes cleanly with dpkg, the
//! installed binaries run, a private containerd runs a container through the *installed*
//! shim, and neither install nor removal touches `/etc/containerd`.
//!
//! This installs the package system-wide (that is what is tested). A package `tender` already
//! installed (a previous run that died) is purged first; a guard purges it again however the
//! test ends. Needs root, dpkg and what the end-to-end tests need: SKIP without, fail under
//! CI=true.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{notice, run_cmd, sha256_hex, CmdOutput};

const SHIM: &str = "/usr/bin/containerd-shim-tender-v2";
const INSTALLER: &str = "/usr/bin/tender-install";
const ETC_CONTAINERD: &str = "/etc/containerd";

fn cmd(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args);
    c
}

fn run(prog: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    run_cmd(cmd(prog, args), timeout)
}

fn run_ok(prog: &str, args: &[&str], timeout: Duration) -> CmdOutput {
    let out = run(prog, args, timeout);
    assert!(out.success(), "{prog} {args:?} failed\n{out}");
    out
}

fn installed() -> bool {
    let out = run(
        "dpkg-query",
        &["-W", "-f=${Status}", "tender"],
        Duration::from_secs(30),
    );
    out.success() && out.stdout_str().contains("installed")
}

fn purge() -> CmdOutput {
    run("dpkg", &["--purge", "tender"], Duration::from_secs(120))
}

/// Purges the package when dropped, unless the test already removed it.
struct PurgeGuard;

impl Drop for PurgeGuard {
    fn drop(&mut self) {
        if installed() {
            let out = purge();
            if !out.success() {
                notice(&format!("deb test: cannot purge tender\n{out}"));
            }
        }
    }
}

/// Every entry under `dir` (recursively, symlinks not followed): path, type, mode, owner and
/// the sha256 of file contents / link targets; "absent" if `dir` does not exist.
fn tree_digest(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, out: &mut Vec<String>) {
        let Ok(md) = fs::symlink_metadata(p) else {
            out.push(format!("{} unreadable", p.display()));
            return;
        };
        let what = if md.file_type().is_symlink() {
            let t = fs::read_link(p).unwrap_or_default();
            format!("link {}", t.display())
        } else if md.is_file() {
            let data = fs::read(p).unwrap_or_default();
            format!("file {}", sha256_hex(&data))
        } else if md.is_dir() {
            "dir".to_string()
        } else {
            "other".to_string()
        };
        out.push(format!(
            "{} {what} {:o} {}:{}",
            p.display(),
            md.mode(),
            md.uid(),
            md.gid()
        ));
        if md.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            children.sort();
            for c in children {
                walk(&c, out);
            }
        }
    }
    if !dir.exists() {
        return "absent".to_string();
    }
    let mut lines = Vec::new();
    walk(dir, &mut lines);
    lines.join("\n")
}

/// Builds the package with `scripts/build-deb.sh` (the static release build is incremental).
fn build_deb() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let outdir = repo.join("target/deb");
    let script = repo.join("scripts/build-deb.sh");
    let out = run_cmd(
        cmd(&script.to_string_lossy(), &[&outdir.to_string_lossy()]),
        Duration::from_secs(1200),
    );
    assert!(out.success(), "scripts/build-deb.sh failed\n{out}");
    let deb = outdir.join(format!("tender_{}_amd64.deb", env!("CARGO_PKG_VERSION")));
    assert!(
        deb.is_file(),
        "{} missing after build-deb.sh\n{out}",
        deb.display()
    );
    assert_eq!(
        out.stdout_str().trim(),
        deb.to_string_lossy(),
        "build-deb.sh prints the package's path"
    );
    deb
}

fn check_package_metadata(deb: &str) {
    let info = run_ok("dpkg-deb", &["-I", deb], Duration::from_secs(30)).stdout_str();
    for want in [
        "Package: tender",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Architecture: amd64",
        "Maintainer: ",
        "Depends: runc | crun",
        "Recommends: containerd",
        "Description: ",
    ] {
        assert!(info.contains(want), "dpkg-deb -I lacks {want:?}\n{info}");
    }
    for script in ["preinst", "postinst", "prerm", "postrm", "conffiles"] {
        assert!(
            !info.contains(script),
            "the package must have no {script}\n{info}"
        );
    }
    let contents = run_ok("dpkg-deb", &["-c", deb], Duration::from_secs(30)).stdout_str();
    for want in [
        "./usr/bin/containerd-shim-tender-v2",
        "./usr/bin/tender-install",
        "./usr/share/doc/tender/copyright",
        "./usr/share/doc/tender/README.md.gz",
        "./usr/share/man/man8/containerd-shim-tender-v2.8.gz",
        "./usr/share/man/man8/tender-install.8.gz",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(want)),
            "dpkg-deb -c lacks {want}\n{contents}"
        );
    }
    for l in contents.lines() {
        assert!(l.contains(" root/root "), "not owned by root: {l}");
        assert!(!l.contains("./etc"), "the package must not ship /etc: {l}");
    }
    // lintian is optional (not in `make deps`): when present, it has nothing to say.
    if Path::new("/usr/bin/lintian").is_file() {
        let out = run("lintian", &[deb], Duration::from_secs(300));
        let tags: Vec<&str> = out
            .stdout
            .split(|b| *b == b'\n')
            .filter_map(|l| std::str::from_utf8(l).ok())
            .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
            .collect();
        assert!(
            out.success() && tags.is_empty(),
            "lintian {deb}: {tags:?}\n{out}"
        );
    } else {
        notice("deb test: lintian not installed, not run");
    }
}

#[test]
fn deb_installs_runs_a_container_and_removes_cleanly() {
    let have_dpkg = ["dpkg", "dpkg-deb", "dpkg-query"]
        .iter()
        .all(|b| Path::new("/usr/bin").join(b).is_file());
    if !common::e2e_enabled_with(
        "deb_installs_runs_a_container_and_removes_cleanly",
        &[("dpkg, dpkg-deb and dpkg-query", have_dpkg)],
    ) {
        return;
    }
    if installed() {
        notice("deb test: package tender already installed (an earlier run?); purging it first");
        let out = purge();
        assert!(out.success(), "cannot purge the leftover package\n{out}");
    }
    assert!(
        !Path::new(SHIM).exists() && !Path::new(INSTALLER).exists(),
        "{SHIM} or {INSTALLER} exists without the package: refusing to overwrite"
    );

    let deb = build_deb();
    let deb = deb.to_string_lossy().into_owned();
    check_package_metadata(&deb);

    let etc_before = tree_digest(Path::new(ETC_CONTAINERD));
    let _guard = PurgeGuard;
    run_ok("dpkg", &["-i", &deb], Duration::from_secs(120));
    assert!(installed(), "dpkg -i succeeded but tender is not installed");
    let files: Vec<String> = run_ok("dpkg", &["-L", "tender"], Duration::from_secs(30))
        .stdout_str()
        .lines()
        .map(str::to_string)
        .collect();
    for want in [SHIM, INSTALLER, "/usr/share/doc/tender/copyright"] {
        assert!(
            files.iter().any(|f| f == want),
            "dpkg -L tender lacks {want}: {files:?}"
        );
    }

    let v = run_ok(SHIM, &["-v"], Duration::from_secs(10)).stdout_str();
    assert!(
        v.contains("Version:") && v.contains(env!("CARGO_PKG_VERSION")),
        "{SHIM} -v does not name version {}:\n{v}",
        env!("CARGO_PKG_VERSION")
    );
    let help = run_ok(INSTALLER, &["--help"], Duration::from_secs(10));
    let help = help.stdout_str() + &help.stderr_str();
    assert!(
        help.contains("install") && help.contains("uninstall"),
        "tender-install --help:\n{help}"
    );
    assert_eq!(
        tree_digest(Path::new(ETC_CONTAINERD)),
        etc_before,
        "dpkg -i changed /etc/containerd"
    );

    // A container through a private containerd whose PATH finds the installed shim.
    {
        let cd = common::Containerd::start_with_shim(Path::new(SHIM));
        let c = cd.client("deb");
        let id = common::unique_id("deb");
        c.start_running(&id, &["sleep", "60"]);
        let shims = cd.shim_processes();
        assert!(!shims.is_empty(), "no shim process{}", c.log());
        for (pid, argv) in &shims {
            let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            assert_eq!(
                exe,
                Path::new(SHIM),
                "shim {pid} ({argv}) does not run the installed binary"
            );
        }
        c.kill(&id, "SIGKILL");
        c.wait_task_status(&id, "STOPPED", Duration::from_secs(15));
        c.delete_task(&id);
        c.delete_container(&id);

        let id = common::unique_id("deb-echo");
        let (code, stdout) = c.run(&id, &["echo", "from-the-package"]);
        assert_eq!(code, 0, "ctr run exited {code}{}", c.log());
        assert_eq!(String::from_utf8_lossy(&stdout).trim(), "from-the-package");
    }

    run_ok("dpkg", &["-r", "tender"], Duration::from_secs(120));
    assert!(!installed(), "tender still installed after dpkg -r");
    for f in &files {
        let p = Path::new(f);
        // dpkg -L lists the parent directories too; only ours must go.
        if p.is_dir() && !f.contains("tender") {
            continue;
        }
        assert!(!p.exists(), "{f} left behind by dpkg -r");
    }
    run_ok("dpkg", &["--purge", "tender"], Duration::from_secs(120));
    let status = run(
        "dpkg-query",
        &["-W", "-f=${Status}", "tender"],
        Duration::from_secs(30),
    );
    assert!(
        !status.stdout_str().contains("installed") || status.stdout_str().contains("not-installed"),
        "dpkg still knows tender after --purge: {status}"
    );
    assert_eq!(
        tree_digest(Path::new(ETC_CONTAINERD)),
        etc_before,
        "installing or removing the package changed /etc/containerd"
    );
}
