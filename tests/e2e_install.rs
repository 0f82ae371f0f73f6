//! `tender-install` on the starting configs of the README (Debian's packaged file and
//! `containerd config default` of the containerd under test), then a private containerd of that
//! version started on the result: its CRI plugin must load (`ctr plugins ls` says `ok`) and pods
//! run on the `tender` handler and on the default one (runc); then `tender-install uninstall`
//! gives the original bytes back. On containerd 1.x that fails without the `runc` runtime the
//! installer adds to Debian's file (see `tender_alone_on_debians_config_breaks_cri_on_1x` in
//! tests/e2e_cri.rs).
//!
//! Also from a hand-written config with comments and custom runtimes (`runc` with options and a
//! second handler `runc-debug` with its own options, in the schema of the containerd under
//! test, and as `version = 2` on 2.x too): the comments and runtimes survive, every handler
//! runs a pod (`runc-debug` with its own `Root`), and uninstall gives the original bytes back.
//!
//! Only the private paths (and the CNI network of tests/cri) are set on top of the installed file, as for the README's snippets
//! (tests/cri/config.rs `private_config`). Needs what tests/e2e_cri.rs needs; skips otherwise.

mod common;
mod cri;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::shim_binary_name;
use cri::config::Start;
use cri::CriNode;

/// One CRI node at a time: nodes of one test process share the CNI bridge's name and subnet
/// (tests/cri), and a node's teardown deletes the bridge.
static NODE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_node_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    NODE.lock().unwrap_or_else(|e| e.into_inner())
}

const BIN: &str = env!("CARGO_BIN_EXE_tender-install");

/// The file `installed` writes the user's config to, in the node's directory.
fn user_config_path(dir: &Path) -> std::path::PathBuf {
    dir.join("user-config.toml")
}

/// Runs `tender-install install` on `user` in `dir`; returns the installed text and the
/// installer's output.
fn installed(dir: &Path, user: &str) -> (String, String) {
    let config = user_config_path(dir);
    fs::write(&config, user).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
    let out = Command::new(BIN)
        .arg("install")
        .arg("--config")
        .arg(&config)
        .arg("--options-file")
        .arg(dir.join("user-tender.toml"))
        .output()
        .unwrap_or_else(|e| panic!("{BIN}: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "tender-install install failed:\n{report}"
    );
    let text = fs::read_to_string(&config).unwrap_or_else(|e| panic!("read config: {e}"));
    assert!(
        text.starts_with(user),
        "the user's config must be kept:\n{text}"
    );
    (text, report)
}

fn cri_plugin_ok(node: &CriNode, what: &str, report: &str) {
    assert!(
        cri::cri_plugin_ok(&node.cd),
        "{what} + tender-install on containerd {}: CRI plugin not ok: {}\ninstaller said:\n{report}",
        node.cd.build.minor_label(),
        cri::cri_plugin_line(&node.cd),
    );
}

fn cri_loads_on_installed(start: Start) {
    let _one = one_node_at_a_time();
    let mut report = String::new();
    let mut original = String::new();
    let node = CriNode::start_from_user(|l| {
        original = start.text(&l.build);
        let (text, r) = installed(&l.dir, &original);
        report = r;
        text
    });
    cri_plugin_ok(&node, &format!("{start:?}"), &report);
    // Both handlers run pods: the installed `tender` and the default (runc's Go shim).
    cri::pod_on_handler_runs(&node, cri::HANDLER, &shim_binary_name(&node.cd.runtime));
    cri::pod_on_handler_runs(&node, "", "containerd-shim-runc-v2");
    uninstall_restores(&node, &original);
}

/// `tender-install uninstall` on the node's user config gives `original` back byte for byte
/// and removes the backup and the record.
fn uninstall_restores(node: &CriNode, original: &str) {
    let label = node.cd.build.minor_label();
    let config = user_config_path(&node.cd.dir);
    let out = Command::new(BIN)
        .arg("uninstall")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{BIN}: {e}"));
    assert!(
        out.status.success(),
        "tender-install uninstall failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = fs::read(&config).unwrap_or_else(|e| panic!("read config: {e}"));
    assert!(
        restored == original.as_bytes(),
        "containerd {label}: uninstall did not restore the original bytes:\n{}",
        String::from_utf8_lossy(&restored)
    );
    for leftover in [".tender-backup", ".tender-install"] {
        let p = node.cd.dir.join(format!("user-config.toml{leftover}"));
        assert!(!p.exists(), "{} left after uninstall", p.display());
    }
}

#[test]
fn tender_install_on_debians_default_config_loads_cri_and_runs_pods() {
    const TEST: &str = "tender_install_on_debians_default_config_loads_cri_and_runs_pods";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    cri_loads_on_installed(Start::DebianDefault);
}

#[test]
fn tender_install_on_containerd_config_default_loads_cri_and_runs_pods() {
    const TEST: &str = "tender_install_on_containerd_config_default_loads_cri_and_runs_pods";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    cri_loads_on_installed(Start::ConfigDefault);
}

/// A `version = 3` file that defines no runtime: the installer adds only `tender`, because
/// containerd 2.x keeps its built-in `runc` next to the file's runtimes.
#[test]
fn tender_install_on_a_bare_v3_config_keeps_cri_loading_on_2x() {
    const TEST: &str = "tender_install_on_a_bare_v3_config_keeps_cri_loading_on_2x";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    let build = common::containerd_version();
    if build.version.0 < 2 {
        common::notice(&format!(
            "{TEST}: containerd {} does not read version 3 configs; nothing to check",
            build.minor_label()
        ));
        return;
    }
    let _one = one_node_at_a_time();
    let mut report = String::new();
    let node = CriNode::start_from_user(|l| {
        let (text, r) = installed(&l.dir, "version = 3\n");
        assert!(
            !text.contains(".runc]"),
            "no runc table on version 3:\n{text}"
        );
        report = r;
        text
    });
    cri_plugin_ok(&node, "version = 3", &report);
    cri::pod_on_handler_runs(&node, cri::HANDLER, &shim_binary_name(&node.cd.runtime));
}

/// A hand-written config in `schema` (`version = 2`: 1.x, and 2.x which migrates it;
/// `version = 3`: 2.x): comments everywhere, the default `runc` with options, and a second runc handler
/// `runc-debug` with its own options (its own state directory `debug_root`, so the test can
/// see that its options reached the shim).
fn custom_config(schema: i64, debug_root: &Path) -> String {
    let (version, cri, q) = if schema == 3 {
        (3, "'io.containerd.cri.v1.runtime'", '\'')
    } else {
        (2, "\"io.containerd.grpc.v1.cri\"", '"')
    };
    let rt = format!("plugins.{cri}.containerd.runtimes");
    format!(
        r#"# containerd config of node-7, edited by hand.   (comment before the version)
# Keep these comments: tender-install must not touch them.
version = {version}

[plugins]
  # The CRI plugin (Kubernetes).
  [plugins.{cri}]
    [plugins.{cri}.containerd]
      default_runtime_name = {q}runc{q}   # pods without a RuntimeClass
      # The default runtime, with its options.
      [{rt}.runc]
        runtime_type = {q}io.containerd.runc.v2{q}
        [{rt}.runc.options]
          SystemdCgroup = false   # cgroupfs driver, as the kubelet here
          NoNewKeyring = true

      # A second handler for debugging: runc again, with its own state directory.
      [{rt}.runc-debug]
        runtime_type = {q}io.containerd.runc.v2{q}
        [{rt}.runc-debug.options]
          BinaryName = {q}runc{q}
          Root = {q}{debug_root}{q}
          NoNewKeyring = true
# end of the hand-written part
"#,
        debug_root = debug_root.display(),
    )
}

/// The lines of `text` that are comments or carry one.
fn comment_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains('#')).collect()
}

fn custom_runtimes_survive(schema: Option<i64>) {
    let _one = one_node_at_a_time();
    let mut report = String::new();
    let mut original = String::new();
    let mut debug_root = std::path::PathBuf::new();
    let node = CriNode::start_from_user(|l| {
        debug_root = l.dir.join("runc-debug");
        // The version's own schema unless one is given.
        let schema = schema.unwrap_or(if l.build.version.0 >= 2 { 3 } else { 2 });
        original = custom_config(schema, &debug_root);
        let (text, r) = installed(&l.dir, &original);
        report = r;
        // Every comment of the user's file is still there, unchanged and in place (the
        // installer appends; `installed` checked the whole original is a prefix).
        let before = comment_lines(&original);
        let after = comment_lines(&text);
        assert!(
            before.len() == 8 && after.starts_with(&before),
            "comments lost or moved:\nbefore {before:#?}\nafter {after:#?}"
        );
        // Nothing but tender is added: the file defines runc, so no second runc table.
        assert_eq!(text.matches(".runc]").count(), 1, "{text}");
        assert_eq!(text.matches(".tender]").count(), 1, "{text}");
        text
    });
    cri_plugin_ok(&node, "a config with comments and custom runtimes", &report);
    let label = node.cd.build.minor_label();

    cri::pod_on_handler_runs(&node, cri::HANDLER, &shim_binary_name(&node.cd.runtime));
    cri::pod_on_handler_runs(&node, "", "containerd-shim-runc-v2");
    cri::pod_on_handler_runs(&node, "runc-debug", "containerd-shim-runc-v2");
    // runc-debug's own options reached its shim: runc kept the pod's state under its `Root`
    // (the Go shim adds the namespace), not under the default handler's.
    assert!(
        debug_root.join(cri::K8S_NAMESPACE).is_dir(),
        "containerd {label}: runc-debug's Root {} was not used",
        debug_root.display()
    );

    uninstall_restores(&node, &original);
}

#[test]
fn tender_install_on_a_config_with_comments_and_custom_runtimes_keeps_them_all() {
    const TEST: &str =
        "tender_install_on_a_config_with_comments_and_custom_runtimes_keeps_them_all";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    custom_runtimes_survive(None);
}

/// containerd 2.x still reads `version = 2` files (it migrates them in memory): a node
/// upgraded from 1.x keeps its hand-written file, custom runtimes included.
#[test]
fn tender_install_on_a_v2_config_with_custom_runtimes_keeps_them_all_on_2x() {
    const TEST: &str = "tender_install_on_a_v2_config_with_custom_runtimes_keeps_them_all_on_2x";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    let build = common::containerd_version();
    if build.version.0 < 2 {
        common::notice(&format!(
            "{TEST}: containerd {} reads version 2 natively; the other test covers it",
            build.minor_label()
        ));
        return;
    }
    custom_runtimes_survive(Some(2));
}
