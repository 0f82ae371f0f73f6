//! The CRI nodes' `config.toml`, built the way a user builds theirs: a starting config
//! (Debian's packaged file, or `containerd config default` of the version under test) with the
//! README's snippets appended **as text**, exactly as the README says. The README is the
//! source: the snippets are taken out of it between `<!-- snippet: NAME -->` and the fenced
//! block that follows, so a README snippet that stops working fails these tests.
//!
//! Only what keeps the instance private and runnable on this machine is set on top (through
//! `toml_edit`, on the parsed result): root, state, sockets, debug, CNI and log paths, the
//! locally built pause image, `restrict_oom_score_adj` (no CAP_SYS_RESOURCE here), NRI off
//! (2.x enables it, with a socket under the host's /var/run), the handler's `ConfigPath` (to
//! the test's own copy of the README's options file) and runc's `Root` (runtime state in
//! the test's directory). These overrides never create a runtime: a snippet that loses the
//! default `runc` runtime still fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use toml_edit::{DocumentMut, Item, Table};

use crate::common::{self, ContainerdBuild, ContainerdLayout};

pub use crate::common::{readme_snippet, snippet_in};

/// What a user starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The `config.toml` Debian's containerd package installs (`version = 2`, no runtimes).
    DebianDefault,
    /// `containerd config default` of the version under test.
    ConfigDefault,
}

impl Start {
    /// What the CRI suite uses for a build: Debian's file for 1.x, a `version = 3` file from
    /// `containerd config default` for 2.x.
    pub fn for_suite(build: &ContainerdBuild) -> Start {
        if build.version.0 >= 2 {
            Start::ConfigDefault
        } else {
            Start::DebianDefault
        }
    }

    /// The README snippets this start takes, in order (as the README's install section says).
    pub fn snippets(self, build: &ContainerdBuild) -> &'static [&'static str] {
        match self {
            Start::DebianDefault => &["v2-runc", "v2-tender"],
            Start::ConfigDefault if build.version.0 >= 2 => &["v3-tender"],
            Start::ConfigDefault => &["v2-tender"],
        }
    }

    /// The starting file's text.
    pub fn text(self, build: &ContainerdBuild) -> String {
        match self {
            Start::DebianDefault => debian_default_config(build),
            Start::ConfigDefault => {
                let out = Command::new(&build.containerd)
                    .args(["config", "default"])
                    .output()
                    .unwrap_or_else(|e| {
                        panic!("{} config default: {e}", build.containerd.display())
                    });
                assert!(
                    out.status.success(),
                    "{} config default: {}",
                    build.containerd.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        }
    }
}

/// The `/etc/containerd/config.toml` of the Debian package the build came from: the unpacked
/// package's copy for the matrix builds, the host's file for the host's containerd (checked
/// against dpkg's record of the packaged file, so a hand-edited host file is not taken for it).
pub fn debian_default_config(build: &ContainerdBuild) -> String {
    // <pkg>/usr/bin/containerd -> <pkg>/etc/containerd/config.toml
    let unpacked = build
        .containerd
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|p| p.join("etc/containerd/config.toml"));
    if let Some(p) = unpacked.filter(|p| p.is_file() && !p.starts_with("/etc")) {
        return fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    }
    let host = Path::new("/etc/containerd/config.toml");
    let text = fs::read(host).unwrap_or_else(|e| panic!("read {}: {e}", host.display()));
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Conffiles}", "containerd"])
        .output()
        .unwrap_or_else(|e| panic!("dpkg-query: {e}"));
    let conffiles = String::from_utf8_lossy(&out.stdout).into_owned();
    let md5 = conffiles
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("/etc/containerd/config.toml")).then(|| w.next())?
        })
        .unwrap_or_else(|| panic!("dpkg does not list /etc/containerd/config.toml: {conffiles}"));
    let out = Command::new("md5sum")
        .arg(host)
        .output()
        .unwrap_or_else(|e| panic!("md5sum: {e}"));
    let actual = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        actual, md5,
        "/etc/containerd/config.toml differs from the packaged file; the tests need Debian's"
    );
    String::from_utf8_lossy(&text).into_owned()
}

/// The starting config with the README's snippets appended as text (what the user's file
/// becomes), checked to be valid TOML.
pub fn user_config(start: Start, build: &ContainerdBuild) -> String {
    let mut text = start.text(build);
    for name in start.snippets(build) {
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&readme_snippet(name));
    }
    if let Err(e) = text.parse::<DocumentMut>() {
        panic!(
            "{start:?} + README snippets {:?} is not valid TOML: {e}\n{text}",
            start.snippets(build)
        );
    }
    text
}

/// What the test sets on top of the user's config.
pub struct Private<'a> {
    pub layout: &'a ContainerdLayout,
    /// `runtime_type` of the `tender` handler (the runtime under test; the Go shim when the
    /// suite is checked against it).
    pub runtime: &'a str,
    pub cni_conf_dir: &'a Path,
    pub pause_ref: &'a str,
    pub cni_bin_dir: &'a str,
    /// runc's `--root` for every handler.
    pub runc_root: &'a Path,
}

/// The schema of a config text: its `version` (1 when absent).
pub fn schema(doc: &DocumentMut) -> i64 {
    doc.get("version").and_then(Item::as_integer).unwrap_or(1)
}

/// The user's config with the private overrides: the text containerd is started with.
pub fn private_config(user: &str, p: &Private<'_>) -> String {
    let mut doc: DocumentMut = user
        .parse()
        .unwrap_or_else(|e| panic!("user config is not TOML: {e}"));
    let version = schema(&doc);
    assert!(
        version == 2 || version == 3,
        "unexpected config version {version}"
    );
    // The harness's private instance (root, state, sockets, debug, opt, gc), in the file's
    // schema: a `version = 2` file stays one on containerd 2.x (which migrates it).
    let mut base_layout = p.layout.clone();
    base_layout.build.version = if version == 3 { (2, 0, 0) } else { (1, 0, 0) };
    let base: DocumentMut = common::base_config(&base_layout, true)
        .parse()
        .unwrap_or_else(|e| panic!("base config: {e}"));
    merge(doc.as_table_mut(), base.as_table());

    let cri = if version == 3 {
        format!(
            r#"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dir = ""
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
[plugins."io.containerd.nri.v1.nri"]
  disable = true
"#,
            pause = p.pause_ref,
            cni_bin = p.cni_bin_dir,
            cni_conf = p.cni_conf_dir.display(),
        )
    } else {
        format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
[plugins."io.containerd.nri.v1.nri"]
  disable = true
"#,
            pause = p.pause_ref,
            cni_bin = p.cni_bin_dir,
            cni_conf = p.cni_conf_dir.display(),
        )
    };
    let cri: DocumentMut = cri.parse().unwrap_or_else(|e| panic!("CRI overrides: {e}"));
    merge(doc.as_table_mut(), cri.as_table());

    let runtimes_path: &[&str] = if version == 3 {
        &[
            "plugins",
            "io.containerd.cri.v1.runtime",
            "containerd",
            "runtimes",
        ]
    } else {
        &[
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "runtimes",
        ]
    };
    if let Some(runtimes) = table_at(doc.as_table_mut(), runtimes_path) {
        // runc's state of every handler in the test's directory.
        if let Some(Item::Table(runc)) = runtimes.get_mut("runc") {
            options_table(runc).insert("Root", toml_edit::value(p.runc_root.display().to_string()));
        }
        // Every handler of the runtime under test (`tender`, and `tender-shim` with
        // `sandboxer = "shim"` where a test adds it) gets the same private overrides.
        let handlers: Vec<String> = runtimes
            .iter()
            .filter(|(name, item)| {
                *name == crate::cri::HANDLER
                    || (item.get("runtime_type").and_then(Item::as_str)
                        == Some(common::TENDER_RUNTIME)
                        && item.get("sandboxer").and_then(Item::as_str) != Some("shim"))
            })
            .map(|(name, _)| name.to_string())
            .collect();
        for handler in handlers {
            let Some(Item::Table(tender)) = runtimes.get_mut(&handler) else {
                continue;
            };
            if p.runtime != common::TENDER_RUNTIME {
                // Checking the suite against containerd's Go shim: runc's own options.
                tender.insert("runtime_type", toml_edit::value(p.runtime));
                let opts = options_table(tender);
                opts.clear();
                opts.insert("BinaryName", toml_edit::value("runc"));
                opts.insert("Root", toml_edit::value(p.runc_root.display().to_string()));
            } else {
                let opts = options_table(tender);
                if opts.contains_key("ConfigPath") {
                    let file = options_file(p.layout, p.runc_root);
                    opts.insert("ConfigPath", toml_edit::value(file.display().to_string()));
                } else {
                    opts.insert("Root", toml_edit::value(p.runc_root.display().to_string()));
                }
            }
        }
    }
    doc.to_string()
}

/// The test's copy of the README's options file, plus runc's `Root`.
fn options_file(l: &ContainerdLayout, runc_root: &Path) -> PathBuf {
    let path = l.dir.join("tender.toml");
    let text = format!(
        "{}Root = \"{}\"\n",
        readme_snippet("tender-options"),
        runc_root.display()
    );
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn options_table(runtime: &mut Table) -> &mut Table {
    if !matches!(runtime.get("options"), Some(Item::Table(_))) {
        runtime.insert("options", Item::Table(Table::new()));
    }
    match runtime.get_mut("options") {
        Some(Item::Table(t)) => t,
        _ => unreachable!("options was just made a table"),
    }
}

fn table_at<'t>(mut t: &'t mut Table, path: &[&str]) -> Option<&'t mut Table> {
    for key in path {
        t = match t.get_mut(key) {
            Some(Item::Table(next)) => next,
            _ => return None,
        };
    }
    Some(t)
}

/// Sets every key of `src` in `dst`, descending into tables present in both.
pub fn merge(dst: &mut Table, src: &Table) {
    for (k, v) in src.iter() {
        match (dst.get_mut(k), v) {
            (Some(Item::Table(d)), Item::Table(s)) => merge(d, s),
            _ => {
                dst.insert(k, v.clone());
            }
        }
    }
}

#[test]
fn snippets_are_found_and_parse() {
    for name in [
        "v2-runc",
        "v2-tender",
        "v3-tender",
        "v3-tender-sandboxer",
        "tender-options",
    ] {
        let s = readme_snippet(name);
        assert!(s.ends_with('\n') && !s.contains("```"), "{name}: {s:?}");
        if let Err(e) = s.parse::<DocumentMut>() {
            panic!("README snippet {name} is not TOML: {e}\n{s}");
        }
    }
    assert!(snippet_in("x", "v2-runc").is_err());
    assert!(snippet_in("<!-- snippet: a -->\n```toml\nb = 1\n", "a").is_err());
    assert_eq!(
        snippet_in("<!-- snippet: a -->\n\n```toml\nb = 1\n```\n", "a").as_deref(),
        Ok("b = 1\n")
    );
}
