//! The Kubernetes manifests in deploy/kubernetes/ (and deploy/kubernetes/uninstall/) parse
//! with kubectl and hold exactly the objects the README describes; the installer image does
//! what the DaemonSets rely on (install, restart containerd, label the node, uninstall).
//!
//! `kubectl create --dry-run=client` still asks an API server for discovery (to map kinds to
//! resources), so it runs against the mock API server of tests/apiserver; `kubectl label
//! --local -f DIR` decodes every object without any server. Neither checks fields against the
//! OpenAPI schema (the mock serves none); the fields that matter are asserted on the text.
//!
//! kubectl: `TENDER_KUBECTL`, else the one `scripts/fetch-matrix.sh` unpacks
//! (`/var/cache/tender-matrix/kubectl/usr/bin/kubectl`), else `kubectl` on PATH. Without one
//! the test prints SKIP and passes, unless `CI=true`.

mod apiserver;
#[macro_use]
mod common;
mod cri;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn skip(what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} (required under CI=true)");
    }
    eprintln!("SKIP deploy: {what}");
}

/// `kind/name` of every object in `dir` (recursively), as kubectl decodes them offline.
fn objects(kubectl: &Path, dir: &Path) -> Vec<String> {
    let tmp = std::env::temp_dir().join(format!("tender-deploy-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let kubeconfig = tmp.join("kubeconfig");
    fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
    )
    .unwrap();
    let out = Command::new(kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(["label", "--local", "-R", "-f"])
        .arg(dir)
        .args(["tender-test=parsed", "-o", "name"])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", kubectl.display()));
    let _ = fs::remove_dir_all(&tmp);
    assert!(
        out.status.success(),
        "kubectl could not decode {}:\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_manifest_decodes_and_the_objects_are_the_expected_ones() {
    let Some(k) = common::kubectl() else {
        return skip("no kubectl (scripts/fetch-matrix.sh, or set TENDER_KUBECTL)");
    };
    let install = objects(&k, &Path::new(ROOT).join("deploy/kubernetes"));
    assert_eq!(
        install,
        [
            "namespace/tender-system",
            "serviceaccount/tender-installer",
            "clusterrole.rbac.authorization.k8s.io/tender-installer",
            "clusterrolebinding.rbac.authorization.k8s.io/tender-installer",
            "daemonset.apps/tender-installer",
            "runtimeclass.node.k8s.io/tender",
            // -R: the uninstaller is in a subdirectory, which `kubectl apply -f
            // deploy/kubernetes/` (not recursive) does not apply.
            "daemonset.apps/tender-uninstaller",
        ]
    );
    let uninstall = objects(&k, &Path::new(ROOT).join("deploy/kubernetes/uninstall"));
    assert_eq!(uninstall, ["daemonset.apps/tender-uninstaller"]);
}

fn read(rel: &str) -> String {
    fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Lines without comments, trimmed.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap().trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn rbac_allows_only_get_and_patch_on_nodes() {
    let l = lines(&read("deploy/kubernetes/10-rbac.yaml"));
    assert!(l.contains(&r#"resources: ["nodes"]"#.to_string()), "{l:?}");
    assert!(
        l.contains(&r#"verbs: ["get", "patch"]"#.to_string()),
        "{l:?}"
    );
    assert_eq!(l.iter().filter(|x| x.starts_with("verbs:")).count(), 1);
    assert_eq!(l.iter().filter(|x| x.starts_with("resources:")).count(), 1);
}

#[test]
fn daemonsets_mount_only_the_binary_and_containerd_config_dirs() {
    for f in [
        "deploy/kubernetes/20-installer.yaml",
        "deploy/kubernetes/uninstall/tender-uninstaller.yaml",
    ] {
        let l = lines(&read(f));
        let host_paths: Vec<&String> = l
            .iter()
            .filter(|x| x.starts_with("path:"))
            .collect::<Vec<_>>();
        assert_eq!(
            host_paths,
            ["path: /usr/local/bin", "path: /etc/containerd"],
            "{f}"
        );
        for want in [
            "mountPath: /host/bin",
            "mountPath: /host/etc/containerd",
            "hostPID: true",
            "- name: RESTART_CONTAINERD",
            "privileged: true",
            "imagePullPolicy: IfNotPresent",
            "fieldPath: spec.nodeName",
            "serviceAccountName: tender-installer",
        ] {
            assert!(l.iter().any(|x| x == want), "{f}: no `{want}`");
        }
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            l.contains(&format!("image: tender-installer:{version}")),
            "{f}: the image tag must be the crate version {version}"
        );
    }
}

#[test]
fn namespace_admits_the_privileged_host_pid_pods() {
    let l = lines(&read("deploy/kubernetes/00-namespace.yaml"));
    assert!(
        l.iter()
            .any(|x| x == "pod-security.kubernetes.io/enforce: privileged"),
        "{l:?}"
    );
}

#[test]
fn runtimeclass_selects_labelled_nodes() {
    let l = lines(&read("deploy/kubernetes/30-runtimeclass.yaml"));
    for want in [
        "handler: tender",
        "nodeSelector:",
        r#"tender-runtime: "installed""#,
    ] {
        assert!(l.iter().any(|x| x == want), "no `{want}`: {l:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The installer image: built by scripts/build-installer-image.sh, imported into a private
// containerd, run with `ctr run` against a temporary host tree.
// ---------------------------------------------------------------------------------------------

/// Containerd's reference of `image: tender-installer:VERSION`.
const INSTALLER_REF: &str = concat!(
    "docker.io/library/tender-installer:",
    env!("CARGO_PKG_VERSION")
);

/// Builds the image archive into `dir` with scripts/build-installer-image.sh (which runs the
/// static release builds; `TENDER_DEPLOY_NO_BUILD=1` reuses target/release/ instead).
///
/// One build at a time: the tests of this file run in parallel, and two concurrent runs of
/// build-release.sh race on the same `target/release/.tender-install.new`.
fn installer_image(dir: &Path) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let out = dir.join("tender-installer.tar");
    let mut cmd = Command::new(Path::new(ROOT).join("scripts/build-installer-image.sh"));
    cmd.arg(&out);
    if std::env::var("TENDER_DEPLOY_NO_BUILD").as_deref() == Ok("1") {
        cmd.env("NO_BUILD", "1");
    }
    let o = cmd.output().expect("scripts/build-installer-image.sh");
    assert!(
        o.status.success(),
        "build-installer-image.sh failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn run_installer(c: &common::Ctr<'_>, id: &str, host: &Path, env: &[&str]) -> common::CmdOutput {
    run_installer_with(c, id, host, env, &[])
}

/// [`run_installer`] with more `ctr run` flags (`--privileged`, `--with-ns`, mounts, ...).
fn run_installer_with(
    c: &common::Ctr<'_>,
    id: &str,
    host: &Path,
    env: &[&str],
    flags: &[String],
) -> common::CmdOutput {
    let bin = format!(
        "type=bind,src={},dst=/host/bin,options=rbind:rw",
        host.join("usr/local/bin").display()
    );
    let etc = format!(
        "type=bind,src={},dst=/host/etc/containerd,options=rbind:rw",
        host.join("etc/containerd").display()
    );
    let rt = c.runtime.clone();
    let mut args: Vec<String> = vec!["run".into(), "--rm".into(), "--runtime".into(), rt.clone()];
    args.extend(c.runtime_binary_args(&rt));
    args.extend(["--mount".into(), bin, "--mount".into(), etc]);
    args.extend(flags.iter().cloned());
    // Later --env values win: the defaults first.
    for e in [
        "TENDER_SKIP_LABEL=1",
        "TENDER_NO_SLEEP=1",
        "NODE_NAME=test-node",
        "RESTART_CONTAINERD=auto",
    ]
    .iter()
    .chain(env)
    {
        args.extend(["--env".into(), e.to_string()]);
    }
    args.extend([
        INSTALLER_REF.into(),
        id.into(),
        "/tender-entrypoint.sh".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ctr_timeout(&args, std::time::Duration::from_secs(60))
}

#[test]
fn installer_image_installs_into_the_host_tree_and_uninstalls() {
    let cd = setup!("installer_image_installs_into_the_host_tree_and_uninstalls");
    let debian = common::matrix_dir().join("containerd-1.7/etc/containerd/config.toml");
    let Ok(original) = fs::read_to_string(&debian) else {
        return skip(&format!(
            "no {} (scripts/fetch-matrix.sh)",
            debian.display()
        ));
    };
    let host = cd.dir.join("host");
    fs::create_dir_all(host.join("usr/local/bin")).unwrap();
    fs::create_dir_all(host.join("etc/containerd")).unwrap();
    let config = host.join("etc/containerd/config.toml");
    fs::write(&config, &original).unwrap();

    let image = installer_image(&cd.dir);
    let c = cd.client("deploy");
    c.ctr_ok(&["images", "import", &image.to_string_lossy()]);
    let ls = c.ctr_ok(&["images", "ls", "-q"]);
    assert!(
        ls.stdout_str().lines().any(|l| l.trim() == INSTALLER_REF),
        "ctr images import did not name the image {INSTALLER_REF}:\n{ls}"
    );

    let out = run_installer(&c, "tender-installer", &host, &[]);
    assert!(out.success(), "installer failed{}", c.diag(&out));
    let log = out.stdout_str();
    assert!(log.contains("label step skipped"), "{log}");
    // The container's own PID 1 is the entrypoint, not systemd: instructions, no failure.
    assert!(
        log.contains("containerd has not been restarted") && log.contains("not systemd"),
        "{log}"
    );
    for b in ["containerd-shim-tender-v2", "tender-install"] {
        let copied = fs::read(host.join("usr/local/bin").join(b)).unwrap();
        let built = fs::read(Path::new(ROOT).join("target/release").join(b)).unwrap();
        assert!(
            copied == built,
            "{b} in the host tree is not the release build"
        );
    }
    let installed = fs::read_to_string(&config).unwrap();
    assert!(installed.starts_with(&original), "{installed}");
    for want in [
        "runtime_type = \"io.containerd.tender.v2\"",
        "runtime_type = \"io.containerd.runc.v2\"",
        // The host's path, not the container's /host/etc/containerd/...
        "ConfigPath = \"/etc/containerd/tender.toml\"",
    ] {
        assert!(installed.contains(want), "no `{want}` in:\n{installed}");
    }
    let options = fs::read_to_string(host.join("etc/containerd/tender.toml"))
        .expect("the options file must be written on the host");
    assert!(options.contains("BinaryName = \"runc\""), "{options}");

    // Again: nothing changes.
    let out = run_installer(&c, "tender-installer-2", &host, &[]);
    assert!(out.success(), "second install failed{}", c.diag(&out));
    assert_eq!(fs::read_to_string(&config).unwrap(), installed);

    let out = run_installer(
        &c,
        "tender-uninstaller",
        &host,
        &["TENDER_MODE=uninstall", "TENDER_REMOVE_BINARIES=1"],
    );
    assert!(out.success(), "uninstaller failed{}", c.diag(&out));
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        original,
        "uninstall must restore the original config"
    );
    for b in ["containerd-shim-tender-v2", "tender-install"] {
        assert!(!host.join("usr/local/bin").join(b).exists(), "{b} left");
    }
}

/// The host tree of a test (`host/usr/local/bin`, `host/etc/containerd/config.toml` = Debian's
/// packaged config), the image imported into `c`; returns the host dir and the original
/// config, or `None` (skipped) without the matrix's Debian config.
fn prepare(cd: &common::Containerd, c: &common::Ctr<'_>) -> Option<(PathBuf, String)> {
    let debian = common::matrix_dir().join("containerd-1.7/etc/containerd/config.toml");
    let Ok(original) = fs::read_to_string(&debian) else {
        skip(&format!(
            "no {} (scripts/fetch-matrix.sh)",
            debian.display()
        ));
        return None;
    };
    let host = cd.dir.join("host");
    fs::create_dir_all(host.join("usr/local/bin")).unwrap();
    fs::create_dir_all(host.join("etc/containerd")).unwrap();
    fs::write(host.join("etc/containerd/config.toml"), &original).unwrap();
    let image = installer_image(&cd.dir);
    c.ctr_ok(&["images", "import", &image.to_string_lossy()]);
    Some((host, original))
}

// ---------------------------------------------------------------------------------------------
// Restarting containerd (RESTART_CONTAINERD, tender-install --restart), against a fake host:
// a private PID namespace whose PID 1 is a process named `systemd` (or `init`), in a private
// mount namespace where `systemctl` is a script that records how it was called. The installer
// container joins that PID namespace (`ctr run --with-ns pid:...`, what `hostPID: true` does).
// ---------------------------------------------------------------------------------------------

/// The fake host: `unshare` (ours) and its child, the fake PID 1.
struct FakeHost {
    unshare: std::process::Child,
    pid1: u32,
    record: PathBuf,
}

impl FakeHost {
    /// PID 1 is a copy of `sleep` named `init_name`; `/usr/local/sbin` (first on the PATH
    /// tender-install gives systemctl) is a directory whose `systemctl` appends its arguments
    /// and its mount and PID namespaces to `record`, and exits with the status in
    /// `dir/systemctl-status` if that file exists.
    fn start(dir: &Path, init_name: &str) -> FakeHost {
        let bin = dir.join("fake-host-sbin");
        fs::create_dir_all(&bin).unwrap();
        let record = dir.join("systemctl-calls");
        let status = dir.join("systemctl-status");
        let systemctl = bin.join("systemctl");
        fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$* mnt=$(readlink /proc/self/ns/mnt) pid=$(readlink /proc/self/ns/pid)\" >> {}\n\
                 [ -f {s} ] && exit \"$(cat {s})\"\nexit 0\n",
                record.display(),
                s = status.display()
            ),
        )
        .unwrap();
        let sleep = ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("sleep");
        let init = dir.join(init_name);
        fs::copy(sleep, &init).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for f in [&systemctl, &init] {
            fs::set_permissions(f, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--kill-child",
                "--mount",
                "--propagation",
                "private",
                "--mount-proc",
                "sh",
                "-c",
            ])
            .arg(format!(
                "mount --bind {} /usr/local/sbin && exec {} infinity",
                bin.display(),
                init.display()
            ))
            .spawn()
            .expect("unshare");
        // The fake PID 1: unshare's child once it runs as `init_name`.
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let pid1 = common::wait_until(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis(20),
            || {
                let pid: u32 = fs::read_to_string(&children)
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                (comm.trim() == init_name).then_some(pid)
            },
        )
        .unwrap_or_else(|| panic!("the fake host's PID 1 `{init_name}` did not start"));
        FakeHost {
            unshare,
            pid1,
            record,
        }
    }

    /// `ctr run` flags: privileged, in the fake host's PID namespace.
    fn flags(&self) -> Vec<String> {
        vec![
            "--privileged".into(),
            "--with-ns".into(),
            format!("pid:/proc/{}/ns/pid", self.pid1),
        ]
    }

    /// The recorded systemctl calls.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// What a call made in the fake host's mount and PID namespaces records.
    fn expected_call(&self, args: &str) -> String {
        let ns = |t: &str| {
            fs::read_link(format!("/proc/{}/ns/{t}", self.pid1))
                .unwrap()
                .display()
                .to_string()
        };
        format!("{args} mnt={} pid={}", ns("mnt"), ns("pid"))
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        // Both are ours: the fake PID 1 (its namespace goes with it) and unshare.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid1 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

#[test]
fn installer_restarts_containerd_through_the_hosts_systemd_once_per_change() {
    let cd = setup!("installer_restarts_containerd_through_the_hosts_systemd_once_per_change");
    let c = cd.client("restart");
    let Some((host, original)) = prepare(&cd, &c) else {
        return;
    };
    let config = host.join("etc/containerd/config.toml");
    let fake = FakeHost::start(&cd.dir, "systemd");
    let restart = fake.expected_call("restart containerd");

    let out = run_installer_with(&c, "install-1", &host, &[], &fake.flags());
    assert!(out.success(), "installer failed{}", c.diag(&out));
    let log = out.stdout_str();
    assert!(log.contains("restarted containerd"), "{log}");
    // Once, in PID 1's mount and PID namespaces (the host's, with hostPID: true).
    assert_eq!(fake.calls(), std::slice::from_ref(&restart), "{log}");
    let installed = fs::read_to_string(&config).unwrap();
    assert!(installed.contains("io.containerd.tender.v2"), "{installed}");
    assert!(
        !host
            .join("etc/containerd/config.toml.tender-restart-pending")
            .exists(),
        "the pending-restart marker must be gone after a restart"
    );

    // A second run changes nothing, so it does not restart containerd again.
    let out = run_installer_with(&c, "install-2", &host, &[], &fake.flags());
    assert!(out.success(), "second install failed{}", c.diag(&out));
    assert!(
        out.stdout_str()
            .contains("containerd not restarted: nothing changed"),
        "{out}"
    );
    assert_eq!(fake.calls().len(), 1, "{:?}", fake.calls());

    // Uninstall restores the config and restarts once more.
    let out = run_installer_with(
        &c,
        "uninstall",
        &host,
        &["TENDER_MODE=uninstall"],
        &fake.flags(),
    );
    assert!(out.success(), "uninstaller failed{}", c.diag(&out));
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
    assert_eq!(fake.calls(), [restart.clone(), restart], "{out}");
}

#[test]
fn installer_retries_a_failed_restart_and_never_restarts_with_none() {
    let cd = setup!("installer_retries_a_failed_restart_and_never_restarts_with_none");
    let c = cd.client("retry");
    let Some((host, _)) = prepare(&cd, &c) else {
        return;
    };
    let fake = FakeHost::start(&cd.dir, "systemd");
    let restart = fake.expected_call("restart containerd");

    // RESTART_CONTAINERD=none: instructions only.
    let out = run_installer_with(
        &c,
        "install-none",
        &host,
        &["RESTART_CONTAINERD=none"],
        &fake.flags(),
    );
    assert!(out.success(), "installer failed{}", c.diag(&out));
    assert!(
        out.stdout_str()
            .contains("run `systemctl restart containerd`"),
        "{out}"
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());

    // Uninstall with a failing systemctl: the pod fails (the DaemonSet runs it again)...
    fs::write(cd.dir.join("systemctl-status"), "1").unwrap();
    let env = ["TENDER_MODE=uninstall"];
    let out = run_installer_with(&c, "uninstall-1", &host, &env, &fake.flags());
    assert!(!out.success(), "a failed restart must fail the pod: {out}");
    assert!(
        out.stderr_str().contains("containerd was not restarted"),
        "{out}"
    );
    // ...and the next run restarts although the config has nothing left to change.
    fs::remove_file(cd.dir.join("systemctl-status")).unwrap();
    let out = run_installer_with(&c, "uninstall-2", &host, &env, &fake.flags());
    assert!(out.success(), "uninstaller failed{}", c.diag(&out));
    assert!(out.stdout_str().contains("restarted containerd"), "{out}");
    assert_eq!(fake.calls(), [restart.clone(), restart], "{out}");
}

#[test]
fn installer_without_systemd_prints_what_to_do_and_succeeds() {
    let cd = setup!("installer_without_systemd_prints_what_to_do_and_succeeds");
    let c = cd.client("nosystemd");
    let Some((host, original)) = prepare(&cd, &c) else {
        return;
    };
    let config = host.join("etc/containerd/config.toml");
    let fake = FakeHost::start(&cd.dir, "init");

    let out = run_installer_with(&c, "install", &host, &[], &fake.flags());
    assert!(out.success(), "installer failed{}", c.diag(&out));
    let log = out.stdout_str();
    assert!(
        log.contains("containerd has not been restarted")
            && log.contains("PID 1 here is `init`, not systemd")
            && log.contains("restart containerd however this node supervises it"),
        "{log}"
    );
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    assert!(fs::read_to_string(&config)
        .unwrap()
        .contains("io.containerd.tender.v2"));

    // RESTART_CONTAINERD=systemd insists: the uninstall is written, the pod fails loudly.
    let out = run_installer_with(
        &c,
        "uninstall",
        &host,
        &["TENDER_MODE=uninstall", "RESTART_CONTAINERD=systemd"],
        &fake.flags(),
    );
    assert!(!out.success(), "{out}");
    assert!(out.stderr_str().contains("not systemd"), "{out}");
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
}

// ---------------------------------------------------------------------------------------------
// The node label, through the image's kubectl, against a mock API server (tests/apiserver).
// In a cluster kubectl uses the pod's service account (in-cluster config, HTTPS); here
// KUBECONFIG points it at the mock over HTTP on the host's loopback (`--net-host`).
// ---------------------------------------------------------------------------------------------

/// A kubeconfig for `api` in `dir/kube/config`; `ctr run` flags mounting it and sharing the
/// host's network.
fn kube_flags(dir: &Path, api: &apiserver::ApiServer) -> Vec<String> {
    let kube = dir.join("kube");
    fs::create_dir_all(&kube).unwrap();
    fs::write(kube.join("config"), api.kubeconfig()).unwrap();
    vec![
        "--net-host".into(),
        "--mount".into(),
        format!(
            "type=bind,src={},dst=/run/tender-test-kube,options=rbind:ro",
            kube.display()
        ),
    ]
}

/// The PATCH requests the mock saw, as (content type, body as JSON).
fn patches(api: &apiserver::ApiServer) -> Vec<(String, serde_json::Value)> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            assert_eq!(r.path(), "/api/v1/nodes/test-node", "{r:?}");
            let body = serde_json::from_str(&r.body)
                .unwrap_or_else(|e| panic!("PATCH body is not JSON ({e}): {r:?}"));
            (r.content_type, body)
        })
        .collect()
}

#[test]
fn installer_labels_its_own_node_and_the_uninstaller_removes_the_label() {
    let cd = setup!("installer_labels_its_own_node_and_the_uninstaller_removes_the_label");
    if common::kubectl().is_none() {
        return skip("no kubectl to put in the image (scripts/fetch-matrix.sh)");
    }
    let c = cd.client("label");
    let Some((host, _)) = prepare(&cd, &c) else {
        return;
    };
    let api = apiserver::ApiServer::start(
        "test-node",
        serde_json::json!({"kubernetes.io/hostname": "test-node"}),
    );
    let flags = kube_flags(&cd.dir, &api);
    let env = [
        "TENDER_SKIP_LABEL=0",
        "KUBECONFIG=/run/tender-test-kube/config",
        "RESTART_CONTAINERD=none",
    ];

    let out = run_installer_with(&c, "install", &host, &env, &flags);
    assert!(out.success(), "installer failed{}", c.diag(&out));
    let p = patches(&api);
    assert_eq!(p.len(), 1, "one PATCH of the node: {p:?}\n{out}");
    assert_eq!(
        p[0].1,
        serde_json::json!({"metadata": {"labels": {"tender-runtime": "installed"}}}),
        "{out}"
    );
    assert!(p[0].0.contains("patch+json"), "{p:?}");
    assert_eq!(
        api.labels(),
        serde_json::json!({"kubernetes.io/hostname": "test-node", "tender-runtime": "installed"})
    );
    // Beyond API discovery (which every authenticated client may read), kubectl read and
    // patched the node: what RBAC allows (get, patch on nodes), and nothing else.
    node_requests_are_get_then_patch(&api, 1, &out);

    let out = run_installer_with(
        &c,
        "uninstall",
        &host,
        &[&env[..], &["TENDER_MODE=uninstall"]].concat(),
        &flags,
    );
    assert!(out.success(), "uninstaller failed{}", c.diag(&out));
    let p = patches(&api);
    assert_eq!(p.len(), 2, "{p:?}\n{out}");
    assert_eq!(
        p[1].1,
        serde_json::json!({"metadata": {"labels": {"tender-runtime": null}}}),
        "{out}"
    );
    assert_eq!(
        api.labels(),
        serde_json::json!({"kubernetes.io/hostname": "test-node"})
    );
    node_requests_are_get_then_patch(&api, 2, &out);

    // Again (the DaemonSet's pod restarted): removing a label that is gone is not an error.
    let out = run_installer_with(
        &c,
        "uninstall-again",
        &host,
        &[&env[..], &["TENDER_MODE=uninstall"]].concat(),
        &flags,
    );
    assert!(out.success(), "second uninstall failed{}", c.diag(&out));
    assert_eq!(
        api.labels(),
        serde_json::json!({"kubernetes.io/hostname": "test-node"})
    );
    node_requests_are_get_then_patch(&api, 3, &out);
}

/// Every request `api` saw is API discovery or, `runs` times, a GET then a PATCH of the node.
fn node_requests_are_get_then_patch(
    api: &apiserver::ApiServer,
    runs: usize,
    out: &common::CmdOutput,
) {
    let requests = api.requests();
    let node: Vec<String> = requests
        .iter()
        .filter(|r| {
            let discovery = r.method == "GET"
                && (matches!(r.path(), "/api" | "/apis" | "/api/v1")
                    || r.path().starts_with("/apis/") && r.path().matches('/').count() == 3);
            !discovery
        })
        .map(|r| format!("{} {}", r.method, r.path()))
        .collect();
    let one = [
        "GET /api/v1/nodes/test-node",
        "PATCH /api/v1/nodes/test-node",
    ];
    assert_eq!(node, one.repeat(runs), "{requests:#?}\n{out}");
}

/// The issue's check, `kubectl create --dry-run=client -f deploy/kubernetes/`, against the
/// mock's discovery (kubectl maps kinds to resources through the server even for a client
/// dry run). `--validate=false`: the mock serves no OpenAPI schema.
#[test]
fn kubectl_create_dry_run_accepts_the_manifests() {
    let Some(k) = common::kubectl() else {
        return skip("no kubectl (scripts/fetch-matrix.sh, or set TENDER_KUBECTL)");
    };
    let api = apiserver::ApiServer::start("test-node", serde_json::json!({}));
    let tmp = std::env::temp_dir().join(format!("tender-deploy-dry-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    let kubeconfig = tmp.join("kubeconfig");
    fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let create = |dir: &str| {
        let out = Command::new(&k)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &tmp)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args([
                "create",
                "--dry-run=client",
                "--validate=false",
                "-o",
                "name",
                "-f",
            ])
            .arg(Path::new(ROOT).join(dir))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", k.display()));
        assert!(
            out.status.success(),
            "kubectl create --dry-run=client -f {dir}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        create("deploy/kubernetes"),
        [
            "namespace/tender-system",
            "serviceaccount/tender-installer",
            "clusterrole.rbac.authorization.k8s.io/tender-installer",
            "clusterrolebinding.rbac.authorization.k8s.io/tender-installer",
            "daemonset.apps/tender-installer",
            "runtimeclass.node.k8s.io/tender",
        ]
    );
    assert_eq!(
        create("deploy/kubernetes/uninstall"),
        ["daemonset.apps/tender-uninstaller"]
    );
    // A client dry run: kubectl only read discovery.
    let requests = api.requests();
    assert!(!requests.is_empty(), "kubectl did not ask the mock server");
    for r in requests {
        assert_eq!(r.method, "GET", "{r:?}");
    }
    let _ = fs::remove_dir_all(&tmp);
}

/// The config the image wrote into the host tree is one containerd runs pods from: a private
/// CRI node started on it (only its private paths set on top, tests/cri/config.rs) loads CRI,
/// and pods run on the `tender` handler and on the default one.
#[test]
fn installer_image_result_loads_cri_and_runs_pods() {
    const TEST: &str = "installer_image_result_loads_cri_and_runs_pods";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    let cd = common::Containerd::start(&[]);
    let c = cd.client("cri");
    let Some((host, original)) = prepare(&cd, &c) else {
        return;
    };
    let config = host.join("etc/containerd/config.toml");
    let out = run_installer(&c, "install", &host, &["RESTART_CONTAINERD=none"]);
    assert!(out.success(), "installer failed{}", c.diag(&out));
    let installed = fs::read_to_string(&config).unwrap();

    let node = cri::CriNode::start_from_user(|_| installed.clone());
    assert!(
        cri::cri_plugin_ok(&node.cd),
        "CRI plugin not ok on the image's config: {}",
        cri::cri_plugin_line(&node.cd)
    );
    cri::pod_on_handler_runs(
        &node,
        cri::HANDLER,
        &common::shim_binary_name(&node.cd.runtime),
    );
    cri::pod_on_handler_runs(&node, "", "containerd-shim-runc-v2");
    drop(node);

    let out = run_installer(&c, "uninstall", &host, &["TENDER_MODE=uninstall"]);
    assert!(out.success(), "uninstaller failed{}", c.diag(&out));
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
}
