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
use std::time::Duration;

use common::shim_binary_name;
use cri::api::{self, ContainerState};
use cri::config::Start;
use cri::{is_state, CriNode};

const WAIT: Duration = Duration::from_secs(15);

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

/// A pod on `handler` ("" = the default) runs a container that exits 3, served by a shim
/// whose command line contains `expect_shim`.
fn pod_on_handler_runs(node: &CriNode, handler: &str, expect_shim: &str) {
    let cri = &node.cri;
    let diag = || node.log_tail(40);
    let name = if handler.is_empty() {
        "default"
    } else {
        handler
    };
    let pod_cfg = node.pod_config(&format!("installed-{name}"));
    let pod = cri
        .run_pod_sandbox(&pod_cfg, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox(handler={handler:?}): {e}\n{}", diag()));
    let cfg = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "hello".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: common::IMAGE_REF.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        log_path: "hello.log".into(),
        ..Default::default()
    };
    let id = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .unwrap_or_else(|e| panic!("CreateContainer({handler:?}): {e}\n{}", diag()));
    let shims: Vec<String> = node
        .cd
        .shim_processes()
        .into_iter()
        .map(|(_, cmd)| cmd)
        .filter(|cmd| cmd.contains(&pod))
        .collect();
    assert!(
        !shims.is_empty() && shims.iter().all(|c| c.contains(expect_shim)),
        "handler {handler:?}: pod {pod} must be served by {expect_shim}; shims: {shims:?}"
    );
    cri.start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer({handler:?}): {e}\n{}", diag()));
    let (done, st) = cri.wait_container(&id, WAIT, |s| is_state(s, ContainerState::Exited));
    assert!(
        done,
        "handler {handler:?}: container did not exit: {st:?}\n{}",
        diag()
    );
    assert_eq!(st.map(|s| s.exit_code), Some(3), "handler {handler:?}");
    cri.stop_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", diag()));
    cri.remove_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", diag()));
}

fn cri_plugin_ok(node: &CriNode, what: &str, report: &str) {
    let out = node.ctr().ctr_ok(&["plugins", "ls"]);
    let text = out.stdout_str();
    let line = text
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.split_whitespace().nth(1) == Some("cri"))
        .unwrap_or_else(|| panic!("no CRI plugin in `ctr plugins ls`:\n{text}"));
    assert!(
        line.split_whitespace().last() == Some("ok"),
        "{what} + tender-install on containerd {}: CRI plugin not ok: {line}\ninstaller said:\n{report}",
        node.cd.build.minor_label(),
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
    pod_on_handler_runs(&node, cri::HANDLER, &shim_binary_name(&node.cd.runtime));
    pod_on_handler_runs(&node, "", "containerd-shim-runc-v2");
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
    pod_on_handler_runs(&node, cri::HANDLER, &shim_binary_name(&node.cd.runtime));
}
