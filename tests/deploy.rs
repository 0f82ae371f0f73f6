//! The Kubernetes manifests in deploy/kubernetes/ (and deploy/kubernetes/uninstall/) parse
//! with kubectl, offline, and hold exactly the objects the README describes.
//!
//! `kubectl create --dry-run=client` is not usable offline: it still asks the API server
//! for discovery (to map kinds to resources) and fails with "unable to recognize ...".
//! `kubectl label --local -f DIR` decodes every object (apiVersion, kind, metadata) without a
//! server, so that is what runs here, with an empty kubeconfig so no real cluster is touched.
//! It does not check fields against the OpenAPI schema (that needs a server); the fields that
//! matter are asserted on the text below.
//!
//! kubectl: `TENDER_KUBECTL`, else the one `scripts/fetch-matrix.sh` unpacks
//! (`/var/cache/tender-matrix/kubectl/usr/bin/kubectl`), else `kubectl` on PATH. Without one
//! the test prints SKIP and passes, unless `CI=true`.

#[macro_use]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn kubectl() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("TENDER_KUBECTL").filter(|k| !k.is_empty()) {
        return Some(PathBuf::from(k));
    }
    let matrix = std::env::var_os("TENDER_MATRIX_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tender-matrix"));
    let k = matrix.join("kubectl/usr/bin/kubectl");
    if k.is_file() {
        return Some(k);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("kubectl"))
            .find(|k| k.is_file())
    })
}

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
    let Some(k) = kubectl() else {
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
            "hostPID: false",
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
fn installer_image(dir: &Path) -> PathBuf {
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
    for e in [
        "TENDER_SKIP_LABEL=1",
        "TENDER_NO_SLEEP=1",
        "NODE_NAME=test-node",
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
    assert!(log.contains("containerd must now be restarted"), "{log}");
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
