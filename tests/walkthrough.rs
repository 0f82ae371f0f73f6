//! The README's walk-through ("From a fresh Debian node to a pod on Tender, and back"), taken
//! out of the README block by block (`<!-- snippet: walk-... -->`) and run as far as this
//! machine allows, with private paths:
//! - the `tender-install`, `install` and `rm` lines of ways A and B, in order, under a
//!   temporary root (absolute paths are moved under it; `--config` and `--options-file` name
//!   the root's `/etc/containerd`), in a private PID namespace whose PID 1 is not systemd;
//!   in and out again gives Debian's `config.toml` back byte for byte;
//! - the `ctr run` line against a private containerd;
//! - the `kubectl` lines against a mock API server (tests/apiserver): `apply`/`delete`/
//!   `create` as client dry runs, `label` for real on the mock's node;
//! - the lines that cannot run here (`apt-get`, `make`, the build scripts, `dpkg`, `ctr images
//!   pull/import`, `kubectl logs/get/wait`): what they name (files, package, image, objects,
//!   labels) must be what the build and the manifests produce.
//!
//! A line of a form the tests do not know fails them, and so does a `walk-` block that no test
//! reads.

mod apiserver;
#[macro_use]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
const TENDER_INSTALL: &str = env!("CARGO_BIN_EXE_tender-install");
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-tender-v2");
const BINARIES: [&str; 2] = ["containerd-shim-tender-v2", "tender-install"];
const DEBIAN: &str = include_str!("../src/install/fixtures/debian-12.toml");

/// Every `walk-` block, and the test that reads it.
const BLOCKS: &[&str] = &[
    "walk-node",
    "walk-build",
    "walk-in-deb",
    "walk-in-binary",
    "walk-in-daemonset",
    "walk-label",
    "walk-check-ctr",
    "walk-pod",
    "walk-check-pod",
    "walk-out-deb",
    "walk-out-binary",
    "walk-unlabel",
    "walk-out-daemonset",
];

fn skip(what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} (required under CI=true)");
    }
    eprintln!("SKIP walkthrough: {what}");
}

/// The commands of README block `name`: one per line, trailing comments removed, split on
/// blanks. The blocks hold no shell syntax (checked), so that split is what the shell does.
fn commands(name: &str) -> Vec<Vec<String>> {
    common::readme_snippet(name)
        .lines()
        .map(|l| l.split(" #").next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            assert!(
                !l.contains(['\'', '"', '$', '|', '>', '<', ';', '&', '\\', '`', '*']),
                "README {name}: `{l}` has shell syntax this test does not interpret"
            );
            l.split_whitespace().map(str::to_string).collect()
        })
        .collect()
}

fn unknown(block: &str, cmd: &[String]) -> ! {
    panic!(
        "README {block}: `{}` is not a command tests/walkthrough.rs knows; teach it",
        cmd.join(" ")
    )
}

fn deb_name() -> String {
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "amd64".into());
    format!("tender_{VERSION}_{arch}.deb")
}

/// The file `scripts/build-installer-image.sh` writes in walk-build.
fn image_archive() -> String {
    for c in commands("walk-build") {
        if c[0] == "scripts/build-installer-image.sh" {
            assert_eq!(c.len(), 2, "{c:?}");
            return c[1].clone();
        }
    }
    panic!("README walk-build: no scripts/build-installer-image.sh line");
}

// ---------------------------------------------------------------------------------------------
// Ways A and B under a temporary root
// ---------------------------------------------------------------------------------------------

struct Node {
    /// The node's `/`.
    root: PathBuf,
    /// Where the user has the files they copied to the node (the commands' working directory).
    download: PathBuf,
}

impl Node {
    fn new(name: &str) -> Node {
        let base = std::env::temp_dir().join(format!("tender-walk-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("root");
        let download = base.join("download");
        for d in ["etc/containerd", "usr/bin", "usr/local/bin"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::create_dir_all(&download).unwrap();
        fs::write(root.join("etc/containerd/config.toml"), DEBIAN).unwrap();
        for (b, src) in BINARIES.iter().zip([SHIM, TENDER_INSTALL]) {
            fs::copy(src, download.join(b)).unwrap();
        }
        Node { root, download }
    }

    /// `path` on the node (absolute paths under the root, others in the download directory).
    fn path(&self, path: &str) -> PathBuf {
        match path.strip_prefix('/') {
            Some(rel) => self.root.join(rel),
            None => self.download.join(path),
        }
    }

    fn config(&self) -> PathBuf {
        self.root.join("etc/containerd/config.toml")
    }

    /// The binary the node's PATH finds first (Debian's order).
    fn which(&self, prog: &str) -> Option<PathBuf> {
        ["usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin"]
            .iter()
            .map(|d| self.root.join(d).join(prog))
            .find(|p| p.is_file())
    }

    /// Runs the block's lines; returns what tender-install printed.
    fn run_block(&self, block: &str) -> String {
        let mut said = String::new();
        for c in commands(block) {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            match args.as_slice() {
                ["dpkg", "-i", file] => {
                    assert_eq!(*file, deb_name(), "README {block}: not the package built");
                    // tests/deb.rs runs dpkg; here the package's two files land in /usr/bin.
                    for (b, src) in BINARIES.iter().zip([SHIM, TENDER_INSTALL]) {
                        fs::copy(src, self.root.join("usr/bin").join(b)).unwrap();
                    }
                }
                ["dpkg", "--purge", "tender"] => {
                    for b in BINARIES {
                        fs::remove_file(self.root.join("usr/bin").join(b)).unwrap();
                    }
                }
                ["install", "-m", "0755", rest @ ..] => {
                    let (dest, srcs) = rest.split_last().expect("install needs files");
                    let mut srcs: Vec<&str> = srcs.to_vec();
                    srcs.sort_unstable();
                    assert_eq!(
                        srcs, BINARIES,
                        "README {block}: install what make build makes"
                    );
                    assert_eq!(
                        *dest, "/usr/local/bin/",
                        "README {block}: on containerd's PATH"
                    );
                    let out = Command::new("install")
                        .current_dir(&self.download)
                        .args(["-m", "0755"])
                        .args(&srcs)
                        .arg(self.path(dest))
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{block}: install: {out:?}");
                }
                ["rm", "-f", paths @ ..] => {
                    for p in paths {
                        let name = Path::new(p).file_name().and_then(|n| n.to_str());
                        assert!(
                            p.starts_with("/usr/local/bin/")
                                && name.is_some_and(|n| BINARIES.contains(&n)),
                            "README {block}: rm -f {p}"
                        );
                        fs::remove_file(self.path(p))
                            .unwrap_or_else(|e| panic!("README {block}: rm {p}: {e}"));
                    }
                }
                ["tender-install", cmd @ ("install" | "uninstall"), rest @ ..] => {
                    let bin = self.which("tender-install").unwrap_or_else(|| {
                        panic!("README {block}: no tender-install on the node's PATH")
                    });
                    let mut a: Vec<String> = vec![cmd.to_string()];
                    a.extend(rest.iter().map(|s| s.to_string()));
                    assert!(
                        !rest.iter().any(|r| r.starts_with("--config")),
                        "the default config path is what the walk-through uses"
                    );
                    a.extend(["--config".into(), self.config().display().to_string()]);
                    if *cmd == "install" {
                        let options = self.root.join("etc/containerd/tender.toml");
                        a.extend(["--options-file".into(), options.display().to_string()]);
                    }
                    // PID 1 of a private PID namespace is tender-install itself, not systemd.
                    let out = Command::new("unshare")
                        .args(["--pid", "--fork", "--mount-proc"])
                        .arg(&bin)
                        .args(&a)
                        .output()
                        .unwrap_or_else(|e| panic!("unshare: {e}"));
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert!(
                        out.status.success(),
                        "README {block}: {c:?} failed:\n{text}"
                    );
                    said.push_str(&text);
                }
                _ => unknown(block, &c),
            }
        }
        said
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(base) = self.root.parent() {
            let _ = fs::remove_dir_all(base);
        }
    }
}

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    skip(&format!("{test}: needs root (unshare --pid)"));
    false
}

fn way_in_and_out(name: &str, block_in: &str, block_out: &str, bins: &str) {
    let node = Node::new(name);
    let said = node.run_block(block_in);
    let installed = fs::read_to_string(node.config()).unwrap();
    assert!(
        installed.starts_with(DEBIAN) && installed.contains("io.containerd.tender.v2"),
        "{installed}"
    );
    assert!(
        said.contains("containerd has not been restarted") && said.contains("not systemd"),
        "--restart auto without systemd must say what to do:\n{said}"
    );
    for b in BINARIES {
        assert!(node.root.join(bins).join(b).is_file(), "{bins}/{b} missing");
    }
    assert!(node.root.join("etc/containerd/tender.toml").is_file());

    let said = node.run_block(block_out);
    assert_eq!(
        fs::read_to_string(node.config()).unwrap(),
        DEBIAN,
        "out again must restore the original bytes:\n{said}"
    );
    for b in BINARIES {
        assert!(!node.root.join(bins).join(b).exists(), "{bins}/{b} left");
    }
}

#[test]
fn way_a_the_debian_package_in_and_out() {
    if root_or_skip("way_a_the_debian_package_in_and_out") {
        way_in_and_out("deb", "walk-in-deb", "walk-out-deb", "usr/bin");
    }
}

#[test]
fn way_b_the_binaries_in_and_out() {
    if root_or_skip("way_b_the_binaries_in_and_out") {
        way_in_and_out("bin", "walk-in-binary", "walk-out-binary", "usr/local/bin");
    }
}

// ---------------------------------------------------------------------------------------------
// The container check, against a private containerd
// ---------------------------------------------------------------------------------------------

#[test]
fn check_with_ctr_runs_a_container_on_tender() {
    let cd = setup!("check_with_ctr_runs_a_container_on_tender");
    let c = cd.client("walk");
    let mut pulled = None;
    let mut ran = false;
    for cmd in commands("walk-check-ctr") {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["ctr", "images", "pull", image] => {
                // Nothing is pulled here: the locally built busybox takes the name.
                c.ctr_ok(&["images", "tag", common::IMAGE_REF, image]);
                pulled = Some(image.to_string());
            }
            ["ctr", run @ ("run" | "r"), rest @ ..] => {
                assert!(
                    rest.windows(2)
                        .any(|w| w == ["--runtime", common::TENDER_RUNTIME]),
                    "{args:?}"
                );
                let image = pulled.as_deref().expect("ctr run before ctr images pull");
                assert!(rest.contains(&image), "ctr run must run the image pulled");
                let mut a = vec![*run];
                a.extend(rest);
                let out = c.ctr(&a);
                assert!(
                    out.success(),
                    "README walk-check-ctr: {args:?}{}",
                    c.diag(&out)
                );
                assert_eq!(out.stdout_str(), "hello from tender\n", "{out}");
                ran = true;
            }
            _ => unknown("walk-check-ctr", &cmd),
        }
    }
    assert!(ran, "README walk-check-ctr runs no container");
}

// ---------------------------------------------------------------------------------------------
// kubectl, against the mock API server
// ---------------------------------------------------------------------------------------------

fn manifests() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for dir in ["deploy/kubernetes", "deploy/kubernetes/uninstall"] {
        for e in fs::read_dir(Path::new(ROOT).join(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "yaml") {
                v.push((
                    e.path().display().to_string(),
                    fs::read_to_string(e.path()).unwrap(),
                ));
            }
        }
    }
    v
}

/// `key: value` (value maybe quoted) is a line of `text`.
fn has_pair(text: &str, key: &str, value: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim().trim_start_matches("- ");
        l == format!("{key}: {value}") || l == format!("{key}: \"{value}\"")
    })
}

struct Kube {
    bin: PathBuf,
    dir: PathBuf,
    api: apiserver::ApiServer,
    pod_file: PathBuf,
    pod_name: String,
}

impl Drop for Kube {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Kube {
    fn run(&self, args: &[String]) -> String {
        let out = Command::new(&self.bin)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env("HOME", &self.dir)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.bin.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kubectl {args:?}:\n{text}");
        text
    }

    /// `-f` arguments: the Pod file, or paths of this repository that must exist.
    fn files(&self, block: &str, args: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if *a == "-f" {
                let f = it.next().expect("-f needs a value");
                let p = if *f == "hello-tender.yaml" {
                    self.pod_file.clone()
                } else {
                    Path::new(ROOT).join(f)
                };
                assert!(p.exists(), "README {block}: -f {f} does not exist");
                out.extend(["-f".to_string(), p.display().to_string()]);
            } else {
                out.push(a.to_string());
            }
        }
        out
    }

    fn run_block(&self, block: &str) {
        for cmd in commands(block) {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            match args.as_slice() {
                ["kubectl", verb @ ("apply" | "delete"), rest @ ..] => {
                    let mut a = vec![verb.to_string(), "--dry-run=client".into()];
                    if *verb == "apply" {
                        a.push("--validate=false".into());
                    }
                    a.extend(self.files(block, rest));
                    let said = self.run(&a);
                    assert!(said.contains("(dry run)"), "{said}");
                }
                ["kubectl", "label", "node", "NODE", rest @ ..] => {
                    let mut a = vec!["label".to_string(), "node".into(), "test-node".into()];
                    a.extend(rest.iter().map(|s| s.to_string()));
                    self.run(&a);
                }
                ["kubectl", "-n", ns, "logs", "-l", selector] => {
                    let (k, v) = selector.split_once('=').expect("key=value");
                    assert!(
                        manifests().iter().any(|(_, t)| has_pair(t, "namespace", ns)
                            && has_pair(t, "kind", "DaemonSet")
                            && has_pair(t, k, v)),
                        "README {block}: no DaemonSet in namespace {ns} labels its pods {selector}"
                    );
                }
                ["kubectl", "get", "nodes", "-l", selector] => {
                    let (k, v) = selector.split_once('=').expect("key=value");
                    let rc = fs::read_to_string(
                        Path::new(ROOT).join("deploy/kubernetes/30-runtimeclass.yaml"),
                    )
                    .unwrap();
                    assert!(
                        has_pair(&rc, k, v),
                        "README {block}: not the RuntimeClass's selector"
                    );
                    assert!(
                        fs::read_to_string(
                            Path::new(ROOT).join("deploy/image/tender-entrypoint.sh")
                        )
                        .unwrap()
                        .contains(&format!("label={k}")),
                        "README {block}: not the label the installer sets"
                    );
                }
                ["kubectl", "wait", "--for=condition=Ready", pod] => {
                    assert_eq!(*pod, format!("pod/{}", self.pod_name), "README {block}");
                }
                ["kubectl", "logs", pod] => {
                    assert_eq!(*pod, self.pod_name, "README {block}");
                }
                ["ctr", "-n", "k8s.io", "images", "import", archive] => {
                    assert_eq!(
                        *archive,
                        image_archive(),
                        "README {block}: not the image built"
                    );
                }
                _ => unknown(block, &cmd),
            }
        }
    }
}

#[test]
fn kubectl_lines_work_against_a_mock_api_server() {
    let Some(bin) = common::kubectl() else {
        return skip("no kubectl (scripts/fetch-matrix.sh, or set TENDER_KUBECTL)");
    };
    let dir = std::env::temp_dir().join(format!("tender-walk-kube-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let api = apiserver::ApiServer::start(
        "test-node",
        serde_json::json!({"kubernetes.io/hostname": "test-node"}),
    );
    fs::write(dir.join("kubeconfig"), api.kubeconfig()).unwrap();
    let pod = common::readme_snippet("walk-pod");
    let pod_file = dir.join("hello-tender.yaml");
    fs::write(&pod_file, &pod).unwrap();
    let pod_name = pod
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .expect("the Pod has a name")
        .to_string();
    let k = Kube {
        bin,
        dir: dir.clone(),
        api,
        pod_file,
        pod_name,
    };

    // The Pod decodes, selects the RuntimeClass of deploy/kubernetes/.
    let said = k.run(&[
        "create".into(),
        "--dry-run=client".into(),
        "--validate=false".into(),
        "-o".into(),
        "name".into(),
        "-f".into(),
        k.pod_file.display().to_string(),
    ]);
    assert_eq!(said.trim(), format!("pod/{}", k.pod_name));
    let rc =
        fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/30-runtimeclass.yaml")).unwrap();
    assert!(has_pair(&pod, "runtimeClassName", "tender") && has_pair(&rc, "name", "tender"));

    k.run_block("walk-in-daemonset");
    k.run_block("walk-label");
    assert_eq!(k.api.labels()["tender-runtime"], "installed");
    k.run_block("walk-check-pod");
    k.run_block("walk-unlabel");
    assert_eq!(
        k.api.labels(),
        serde_json::json!({"kubernetes.io/hostname": "test-node"})
    );
    k.run_block("walk-out-daemonset");
    // Dry runs wrote nothing: the only writes were the two label PATCHes of the node.
    let writes: Vec<_> = k
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {} {}", r.method, r.path(), r.content_type))
        .collect();
    let patch = "PATCH /api/v1/nodes/test-node application/merge-patch+json";
    assert_eq!(writes, [patch, patch]);
}

// ---------------------------------------------------------------------------------------------
// What cannot run here
// ---------------------------------------------------------------------------------------------

#[test]
fn node_and_build_lines_name_what_the_build_produces() {
    for cmd in commands("walk-node") {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["apt-get", "install", "-y", pkgs @ ..] => {
                let mut p = pkgs.to_vec();
                p.sort_unstable();
                // What the package depends on (runc | crun) and recommends (containerd).
                assert_eq!(p, ["containerd", "runc"]);
            }
            _ => unknown("walk-node", &cmd),
        }
    }
    let makefile = fs::read_to_string(Path::new(ROOT).join("Makefile")).unwrap();
    let deb_script = fs::read_to_string(Path::new(ROOT).join("scripts/build-deb.sh")).unwrap();
    for cmd in commands("walk-build") {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        match args.as_slice() {
            ["make", "build"] => assert!(makefile.lines().any(|l| l.starts_with("build:"))),
            ["scripts/build-deb.sh"] => {
                assert!(deb_script.contains("deb=$outdir/tender_${version}_${arch}.deb"));
                assert!(deb_script.contains("Package: tender"));
                assert!(deb_script.contains("outdir=${1:-$repo/target/deb}"));
            }
            ["scripts/build-installer-image.sh", _] => {}
            _ => unknown("walk-build", &cmd),
        }
        let script = Path::new(ROOT).join(args[0]);
        if args[0].starts_with("scripts/") {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&script).unwrap().permissions().mode();
            assert!(mode & 0o111 != 0, "{} is not executable", script.display());
        }
    }
    // walk-build's comment names the package file that walk-in-deb installs.
    let build = common::readme_snippet("walk-build");
    assert!(
        build.contains(&format!("target/deb/{}", deb_name())),
        "{build}"
    );
}

#[test]
fn every_walk_through_block_is_read_by_a_test() {
    let readme = common::readme();
    let found: Vec<&str> = readme
        .match_indices("<!-- snippet: walk-")
        .map(|(i, m)| {
            let rest = &readme[i + m.len() - "walk-".len()..];
            rest.split_whitespace().next().unwrap_or_default()
        })
        .collect();
    assert_eq!(found, BLOCKS, "README walk-through blocks (in order)");
}
