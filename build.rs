//! Records what `containerd-shim-tender-v2 -v` and `-info` report besides the crate version:
//! the git commit the binary was built from and the compiler that built it.
//!
//! The commit comes from, in order: `TENDER_GIT_COMMIT` (packagers building from a tarball),
//! `git rev-parse --short HEAD` in the source tree, the `.cargo_vcs_info.json` that
//! `cargo package` writes into a packaged crate, else `unknown`. Nothing here fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=TENDER_GIT_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());

    let commit = std::env::var("TENDER_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| is_commit(c))
        .or_else(|| git_commit(&dir))
        .or_else(|| vcs_info_commit(&dir))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TENDER_GIT_COMMIT={commit}");

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains('\n'))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TENDER_RUSTC_VERSION={rustc_version}");
}

/// Hex digits only: whatever ends up in the binary must be a plain commit id.
fn is_commit(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The short commit of HEAD, when the crate is built inside its git checkout (also a
/// worktree). Rebuilds when HEAD moves: HEAD itself, the branch it points at, packed refs.
fn git_commit(dir: &Path) -> Option<String> {
    // Only the repository this crate is the top of (or a subdirectory of): a packaged crate
    // unpacked inside some other repository must not report that repository's commit.
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let (top, here) = (
        std::fs::canonicalize(top).ok()?,
        std::fs::canonicalize(dir).ok()?,
    );
    if !here.starts_with(&top) || here.join(".cargo_vcs_info.json").exists() {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"]).filter(|c| is_commit(c))?;
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    // Cargo reruns a build script on every build when a watched file is missing: only
    // watch the files that exist.
    let watch = |p: PathBuf| {
        if p.is_file() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    };
    if let Some(git_dir) = git(dir, &["rev-parse", "--git-dir"]).map(absolute) {
        watch(git_dir.join("HEAD"));
    }
    if let Some(common) = git(dir, &["rev-parse", "--git-common-dir"]).map(absolute) {
        watch(common.join("packed-refs"));
        if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
            watch(common.join(branch));
        }
    }
    Some(commit)
}

/// `cargo package` records the commit it packaged in `.cargo_vcs_info.json`
/// (`{"git": {"sha1": "…"}, …}`); a plain scan is enough for that one field.
fn vcs_info_commit(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let rest = &text[text.find("\"sha1\"")? + "\"sha1\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let sha = &rest[..rest.find('"')?];
    is_commit(sha).then(|| sha.chars().take(7).collect())
}
