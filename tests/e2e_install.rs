//! `tender-install` on the starting configs of the README (Debian's packaged file and
//! `containerd config default` of the containerd under test), then a private containerd of that
//! version started on the result: its CRI plugin must load (`ctr plugins ls` says `ok`). On
//! containerd 1.x that fails without the `runc` runtime the installer adds to Debian's file
//! (see `tender_alone_on_debians_config_breaks_cri_on_1x` in tests/e2e_cri.rs).
//!
//! Only the private paths are set on top of the installed file, as for the README's snippets
//! (tests/cri/config.rs `private_config`). Needs what tests/e2e_cri.rs needs; skips otherwise.

mod common;
mod cri;

use std::fs;
use std::process::Command;
use std::time::Duration;

use cri::config::Start;

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

fn cri_loads_on_installed(start: Start) {
    let build = common::containerd_version();
    let mut report = String::new();
    let cd = common::Containerd::start_with_config(&[], |l| {
        let (text, r) = installed(&l.dir, &start.text(&l.build));
        report = r;
        cri::config::private_config(
            &text,
            &cri::config::Private {
                layout: l,
                runtime: common::TENDER_RUNTIME,
                cni_conf_dir: &l.dir.join("cni"),
                pause_ref: cri::PAUSE_REF,
                cni_bin_dir: cri::CNI_BIN_DIR,
                runc_root: &l.dir.join("runc"),
            },
        )
    });
    let mut cmd = Command::new(&cd.build.ctr);
    cmd.arg("-a").arg(&cd.socket).args(["plugins", "ls"]);
    let out = common::run_cmd(cmd, Duration::from_secs(30));
    let text = out.stdout_str();
    let line = text
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.split_whitespace().nth(1) == Some("cri"))
        .unwrap_or_else(|| panic!("no CRI plugin in `ctr plugins ls`:\n{text}"));
    assert!(
        line.split_whitespace().last() == Some("ok"),
        "{start:?} + tender-install on containerd {}: CRI plugin not ok: {line}\ninstaller said:\n{report}\n{}",
        build.minor_label(),
        cd.log_tail(40)
    );
}

#[test]
fn tender_install_on_debians_default_config_keeps_cri_loading() {
    const TEST: &str = "tender_install_on_debians_default_config_keeps_cri_loading";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    cri_loads_on_installed(Start::DebianDefault);
}

#[test]
fn tender_install_on_containerd_config_default_keeps_cri_loading() {
    const TEST: &str = "tender_install_on_containerd_config_default_keeps_cri_loading";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    cri_loads_on_installed(Start::ConfigDefault);
}
