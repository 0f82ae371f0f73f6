//! The binary's command line outside the start protocol: `-h`, `-v` and `-info` (containerd
//! 2.x's runtime introspection), run as processes. The last test asks a private containerd
//! 2.1 (`ctr plugins inspect-runtime`) when scripts/fetch-matrix.sh has unpacked one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_protos::types::introspection::RuntimeInfo;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-tender-v2");
/// What build.rs recorded for this build (the binary under test was built with it).
const REVISION: &str = env!("TENDER_GIT_COMMIT");
const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

fn run(args: &[&str], stdin: &[u8], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(SHIM);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().expect("spawn shim");
    if let Some(mut s) = child.stdin.take() {
        // The shim may exit without reading (e.g. -h): a broken pipe is fine.
        let _ = s.write_all(stdin);
    }
    child.wait_with_output().expect("wait shim")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A directory of fake OCI runtimes (shell scripts), installed by `install` so that no fd of
/// ours that is open for writing can leak into a concurrently forked child (ETXTBSY).
struct FakeRuntimes(PathBuf);

impl FakeRuntimes {
    fn new(tag: &str) -> FakeRuntimes {
        let dir = std::env::temp_dir().join(format!("tender-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let f = FakeRuntimes(dir);
        f.add(
            "runc",
            r#"[ "$1" = features ] || exit 2; printf '{"ociVersionMin":"1.0.0","ociVersionMax":"1.1.0","hooks":["prestart"]}\n'"#,
        );
        f.add("crun", "echo 'unknown command features' >&2; exit 1");
        f
    }

    fn add(&self, name: &str, body: &str) {
        let src = self.0.join(format!("{name}.src"));
        std::fs::write(&src, format!("#!/bin/sh\n{body}\n")).expect("write script");
        let ok = Command::new("install")
            .args(["-m", "0755"])
            .arg(&src)
            .arg(self.0.join(name))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "install {name}");
    }
}

impl Drop for FakeRuntimes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options_any(type_url: &str, value: Vec<u8>) -> Vec<u8> {
    let mut a = Any::new();
    a.type_url = type_url.into();
    a.value = value;
    a.write_to_bytes().expect("encode Any")
}

fn runc_options(binary_name: &str) -> Vec<u8> {
    let mut o = RuncOptions::new();
    o.binary_name = binary_name.into();
    options_any(
        "containerd.runc.v1.Options",
        o.write_to_bytes().expect("encode"),
    )
}

#[test]
fn help_prints_usage_to_stdout_and_exits_zero() {
    for flag in ["-h", "-help", "--help"] {
        let out = run(&[flag], b"", None);
        assert_eq!(out.status.code(), Some(0), "{flag}: {out:?}");
        let usage = text(&out.stdout);
        for word in [
            "Usage:",
            "start",
            "delete",
            "-namespace",
            "-id",
            "-address",
            "-bundle",
            "-socket",
            "-debug",
            "-info",
            "-v",
        ] {
            assert!(
                usage.contains(word),
                "{flag}: usage lacks {word:?}:\n{usage}"
            );
        }
        assert!(out.stderr.is_empty(), "{flag}: {}", text(&out.stderr));
    }
    // Still an error: a flag nobody knows.
    let out = run(&["-bogus"], b"", None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown flag -bogus"));
}

#[test]
fn version_has_the_go_shims_shape_and_the_commit() {
    for flag in ["-v", "--version"] {
        let out = run(&[flag], b"", None);
        assert_eq!(out.status.code(), Some(0), "{flag}: {out:?}");
        let v = text(&out.stdout);
        let lines: Vec<&str> = v.lines().collect();
        assert_eq!(lines.first(), Some(&"containerd-shim-tender-v2:"), "{v}");
        assert_eq!(
            lines.get(1).copied(),
            Some(format!("  Version:  {}", env!("CARGO_PKG_VERSION")).as_str()),
            "{v}"
        );
        let revision = lines
            .get(2)
            .and_then(|l| l.strip_prefix("  Revision: "))
            .unwrap_or_else(|| panic!("no Revision line:\n{v}"));
        assert_eq!(revision, REVISION);
        assert!(
            revision == "unknown" || revision.bytes().all(|b| b.is_ascii_hexdigit()),
            "{revision:?}"
        );
        assert!(
            lines
                .get(3)
                .is_some_and(|l| l.starts_with("  Rust version: ")),
            "{v}"
        );
    }
    // Built in a git checkout without an override: the commit is HEAD's.
    if std::env::var_os("TENDER_GIT_COMMIT").is_none() {
        let head = Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| text(&o.stdout).trim().to_string());
        if let Some(head) = head {
            assert!(
                head.starts_with(REVISION),
                "revision {REVISION} is not HEAD {head}"
            );
        }
    }
}

fn decode_info(out: &Output) -> RuntimeInfo {
    assert_eq!(
        out.status.code(),
        Some(0),
        "-info failed: {}",
        text(&out.stderr)
    );
    RuntimeInfo::parse_from_bytes(&out.stdout).expect("stdout is a RuntimeInfo protobuf")
}

#[test]
fn info_reports_name_version_and_runtime_features() {
    let fake = FakeRuntimes::new("features");
    let info = decode_info(&run(&["-info"], b"", Some(&fake.0)));
    assert_eq!(info.name, "io.containerd.tender.v2");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.version.revision, REVISION);
    assert!(info.options.is_none(), "no options in, none out");
    assert!(info.annotations.is_empty());
    let features = info.features.as_ref().expect("runc has `features`");
    assert_eq!(features.type_url, FEATURES_TYPE_URL);
    let json: serde_json::Value = serde_json::from_slice(&features.value).expect("JSON value");
    assert_eq!(json["ociVersionMax"], "1.1.0");
    assert_eq!(json["hooks"][0], "prestart");
}

#[test]
fn info_follows_binary_name_in_options() {
    let fake = FakeRuntimes::new("binary");
    // runc's Options, BinaryName = crun (no `features`, like crun 1.8): no features, no error.
    let info = decode_info(&run(&["-info"], &runc_options("crun"), Some(&fake.0)));
    assert!(info.features.is_none());
    let opts = info.options.as_ref().expect("options echoed");
    assert_eq!(opts.type_url, "containerd.runc.v1.Options");
    let o = RuncOptions::parse_from_bytes(&opts.value).expect("runc Options");
    assert_eq!(o.binary_name, "crun");

    // CRI's TOML options (runtimeoptions.v1.Options, config_path = 2) naming a file.
    let toml = fake.0.join("opts.toml");
    std::fs::write(&toml, "BinaryName = \"crun\"\nSystemdCgroup = true\n").expect("toml");
    let path = toml.to_string_lossy().into_owned();
    let mut ro = vec![0x12, path.len() as u8];
    ro.extend_from_slice(path.as_bytes());
    let stdin = options_any("runtimeoptions.v1.Options", ro);
    let info = decode_info(&run(&["-info"], &stdin, Some(&fake.0)));
    let o = RuncOptions::parse_from_bytes(&info.options.value).expect("runc Options");
    assert_eq!((o.binary_name.as_str(), o.systemd_cgroup), ("crun", true));
    assert!(info.features.is_none());

    // An absolute BinaryName needs no PATH.
    let abs = fake.0.join("runc").to_string_lossy().into_owned();
    let info = decode_info(&run(
        &["-info"],
        &runc_options(&abs),
        Some(Path::new("/nowhere")),
    ));
    assert!(info.features.is_some());
}

#[test]
fn info_with_the_hosts_runc() {
    let Some(runc) = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        eprintln!("SKIP info_with_the_hosts_runc: no runc");
        return;
    };
    let info = decode_info(&run(&["-info"], &runc_options(runc), None));
    // runc has had `features` since 1.1.0.
    if let Some(f) = info.features.as_ref() {
        let json: serde_json::Value = serde_json::from_slice(&f.value).expect("JSON");
        assert!(json["ociVersionMin"].is_string(), "{json}");
    }
}

#[test]
fn info_refuses_garbage_without_panicking() {
    let fake = FakeRuntimes::new("garbage");
    let cases: [(&str, Vec<u8>); 4] = [
        ("text", b"BinaryName = \"crun\"\n".to_vec()),
        ("bad varint", vec![0xff; 12]),
        ("unknown type", options_any("example.Unknown", vec![1, 2])),
        (
            "bad runc Options",
            options_any("containerd.runc.v1.Options", vec![0xff, 0xff]),
        ),
    ];
    for (what, stdin) in cases {
        let out = run(&["-info"], &stdin, Some(&fake.0));
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(out.stdout.is_empty(), "{what}: wrote {:?}", out.stdout);
        let err = text(&out.stderr);
        assert!(
            err.starts_with("containerd-shim-tender-v2: -info: "),
            "{what}: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
    }
    let out = run(&["-info"], &runc_options("no-such-runtime"), Some(&fake.0));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("\"no-such-runtime\" not found"));
}

// ---------------------------------------------------------------------------
// containerd 2.1: `ctr plugins inspect-runtime` runs `-info` through the introspection service
// ---------------------------------------------------------------------------

fn matrix_bin(version: &str, name: &str) -> PathBuf {
    let dir = std::env::var_os("TENDER_MATRIX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tender-matrix"));
    dir.join(format!("containerd-{version}/usr/bin/{name}"))
}

/// A private containerd 2.1 (no CRI, own root/state/sockets) whose PATH starts with a
/// directory holding `containerd-shim-tender-v2` (a symlink to the binary under test).
struct Containerd2 {
    dir: PathBuf,
    socket: PathBuf,
    ctr: PathBuf,
    child: Child,
}

impl Containerd2 {
    fn start(containerd: &Path, ctr: &Path) -> Containerd2 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = PathBuf::from(format!("/tmp/tender-cli-{}-{nanos:x}", std::process::id()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::os::unix::fs::symlink(SHIM, bin.join("containerd-shim-tender-v2")).expect("symlink");
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 3\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n\
             [debug]\n  level = \"debug\"\n",
            d = dir.display(),
            s = socket.display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        let mut path = vec![bin];
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        path.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new(containerd)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", std::env::join_paths(path).expect("PATH"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start containerd 2.1");
        let mut cd = Containerd2 {
            dir,
            socket,
            ctr: ctr.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if cd.ctr(&["version"]).status.success() {
                return cd;
            }
            if let Ok(Some(status)) = cd.child.try_wait() {
                panic!("containerd 2.1 exited ({status}):\n{}", cd.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd 2.1 not ready in 30 s:\n{}",
                cd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn containerd_2_1_inspect_runtime_runs_info() {
    let (containerd, ctr) = (matrix_bin("2.1", "containerd"), matrix_bin("2.1", "ctr"));
    if !containerd.is_file() || !ctr.is_file() {
        eprintln!(
            "SKIP containerd_2_1_inspect_runtime_runs_info: no {} (scripts/fetch-matrix.sh)",
            containerd.display()
        );
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "needs root and CI=true forbids skipping"
        );
        eprintln!("SKIP containerd_2_1_inspect_runtime_runs_info: needs root");
        return;
    }
    let cd = Containerd2::start(&containerd, &ctr);
    let inspect = |extra: &[&str]| {
        let mut args = vec![
            "plugins",
            "inspect-runtime",
            "--runtime",
            "io.containerd.tender.v2",
        ];
        args.extend_from_slice(extra);
        cd.ctr(&args)
    };

    // No options: runc from containerd's PATH, its features (runc >= 1.1 has the command).
    let out = inspect(&[]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), cd.log());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ctr prints JSON");
    assert_eq!(json["Name"], "io.containerd.tender.v2", "{json}");
    assert_eq!(json["Version"]["Version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(json["Version"]["Revision"], REVISION);
    assert!(json["Options"].is_null(), "{json}");
    assert!(
        json["Features"]["ociVersionMin"].is_string(),
        "containerd did not decode the features: {json}"
    );

    // CRI-style TOML options through --runtime-config-path: BinaryName is followed.
    let toml = cd.dir.join("tender.toml");
    let crun = ["/usr/bin/crun", "/usr/sbin/crun", "/usr/local/bin/crun"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    if let Some(crun) = crun {
        std::fs::write(&toml, format!("BinaryName = \"{crun}\"\n")).expect("toml");
        let out = inspect(&["--runtime-config-path", &toml.to_string_lossy()]);
        assert!(out.status.success(), "{}\n{}", text(&out.stderr), cd.log());
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ctr prints JSON");
        assert_eq!(json["Options"]["binary_name"], crun, "{json}");
        // crun 1.8 has no `features` (null); newer ones report theirs.
        let features = &json["Features"];
        assert!(
            features.is_null() || features["ociVersionMin"].is_string(),
            "{json}"
        );
    }

    // A runtime that does not exist: containerd passes our error on.
    std::fs::write(&toml, "BinaryName = \"tender-no-such-runtime\"\n").expect("toml");
    let out = inspect(&["--runtime-config-path", &toml.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("tender-no-such-runtime"),
        "{}",
        text(&out.stderr)
    );
}

/// Tender's `-info` and containerd 2.1's own runc shim's, same options, same runtime: the
/// same features (type URL and JSON content) and the same options shape.
#[test]
fn info_matches_containerd_2_1_runc_shim() {
    let go_shim = matrix_bin("2.1", "containerd-shim-runc-v2");
    let Some(runc) = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
    else {
        eprintln!("SKIP info_matches_containerd_2_1_runc_shim: no runc");
        return;
    };
    if !go_shim.is_file() {
        eprintln!(
            "SKIP info_matches_containerd_2_1_runc_shim: no {} (scripts/fetch-matrix.sh)",
            go_shim.display()
        );
        return;
    }
    let stdin = runc_options(runc);
    let go = Command::new(&go_shim)
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut s) = c.stdin.take() {
                s.write_all(&stdin)?;
            }
            c.wait_with_output()
        })
        .expect("run the Go shim");
    assert!(go.status.success(), "Go shim: {}", text(&go.stderr));
    let go = RuntimeInfo::parse_from_bytes(&go.stdout).expect("Go shim's RuntimeInfo");
    let ours = decode_info(&run(&["-info"], &stdin, None));

    assert_eq!(ours.options.type_url, go.options.type_url);
    let (o, g) = (
        RuncOptions::parse_from_bytes(&ours.options.value).expect("ours"),
        RuncOptions::parse_from_bytes(&go.options.value).expect("Go's"),
    );
    assert_eq!(o.binary_name, g.binary_name);
    assert_eq!(ours.features.is_some(), go.features.is_some());
    if let (Some(f), Some(g)) = (ours.features.as_ref(), go.features.as_ref()) {
        assert_eq!(f.type_url, g.type_url);
        let f: serde_json::Value = serde_json::from_slice(&f.value).expect("our JSON");
        let g: serde_json::Value = serde_json::from_slice(&g.value).expect("Go's JSON");
        assert_eq!(f, g);
    }
    assert!(go.annotations.is_empty() && ours.annotations.is_empty());
}
