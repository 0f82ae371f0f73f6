//! `tender-install` on the starting configs of the README (Debian's packaged file and
//! `containerd config default` of the containerd under test), then a private containerd of that
//! version started on the result: its CRI plugin must load (`ctr plugins ls` says `ok`) and pods
//! run on the `tender` handler and on the default one (runc). On
//! containerd 1.x that fails without the `runc` runtime the installer adds to Debian's file
//! (see `tender_alone_on_debians_config_breaks_cri_on_1x` in tests/e2e_cri.rs).
//!
//! Only the private paths (and the CNI network of tests/cri) are set on top of the installed file, as for the README's snippets
//! (tests/cri/config.rs `private_config`). Needs what tests/e2e_cri.rs needs; skips otherwise.

mod common;
mod cri;

use std::fs;
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

/// Runs `tender-install install` on `user` in `dir`; returns the installed text and the
/// installer's output.
fn installed(dir: &std::path::Path, user: &str) -> (String, String) {
    let config = dir.join("user-config.toml");
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
    let node = CriNode::start_from_user(|l| {
        let (text, r) = installed(&l.dir, &start.text(&l.build));
        report = r;
        text
    });
    cri_plugin_ok(&node, &format!("{start:?}"), &report);
    // Both handlers run pods: the installed `tender` and the default (runc's Go shim).
    cri::pod_on_handler_runs(&node, cri::HANDLER, &shim_binary_name(&node.cd.runtime));
    cri::pod_on_handler_runs(&node, "", "containerd-shim-runc-v2");
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
