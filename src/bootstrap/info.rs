//! `containerd-shim-tender-v2 -info`: what containerd 2.x learns about a runtime without
//! starting a shim (its introspection service, e.g. `ctr plugins inspect-runtime`).
//!
//! containerd runs the binary with `-info` and nothing else, the runtime options on stdin (the
//! serialized options `Any`, or nothing at all), and reads stdout as a
//! `containerd.types.RuntimeInfo` protobuf (stderr only ends up in its error message).
//! Like containerd's runc shim, the answer carries:
//!
//! * `name`: the runtime name (`io.containerd.tender.v2`);
//! * `version`: the crate version and the git commit it was built from;
//! * `options`: only when options were given, the options as Tender understood them, as a
//!   `containerd.runc.v1.Options` (the shape containerd decodes; the TOML and CreateOptions
//!   shapes are folded into it);
//! * `features`: the OCI runtime's `features` JSON (OCI runtime-spec features.md) as an
//!   `Any` of type [`FEATURES_TYPE_URL`], its value the JSON itself, which is how containerd
//!   marshals and unmarshals that Go struct. A runtime without a `features` command
//!   (crun 1.8, youki), or one that prints something other than a JSON object, leaves
//!   `features` out; that is not an error (the Go shim does the same).
//!
//! Options that cannot be decoded, and a runtime binary that is not found, are errors (exit
//! status 1, message on stderr), as in the Go shim.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::options::Options;

/// The name containerd knows this runtime by.
pub const RUNTIME_NAME: &str = "io.containerd.tender.v2";
/// The type URL containerd registers for the runtime-spec `features.Features` Go struct
/// (`types.containerd.io/opencontainers/runtime-spec/<major>/features/Features`).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
/// The type URL of runc's options, as containerd's runc shim reports them.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
/// The crate version, as `-v` and `-info` report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a checkout; see build.rs).
pub const REVISION: &str = env!("TENDER_GIT_COMMIT");
/// The compiler that built the binary (`rustc 1.x.y (…)`).
pub const RUSTC_VERSION: &str = env!("TENDER_RUSTC_VERSION");

/// How long `<runtime> features` may take, and how much it may print.
const FEATURES_TIMEOUT: Duration = Duration::from_secs(10);
const FEATURES_LIMIT: u64 = 4 << 20;

/// What `-v` prints; the shape of containerd's shims (`Version:`, `Revision:`, toolchain).
pub fn version_text() -> String {
    format!(
        "containerd-shim-tender-v2:\n  Version:  {VERSION}\n  Revision: {REVISION}\n  Rust version: {RUSTC_VERSION}\n\n"
    )
}

/// The `RuntimeInfo` for the options bytes containerd wrote on stdin. `path` is the `PATH` the
/// runtime binary is looked up in (containerd's own, which it passes on).
pub fn runtime_info(stdin: &[u8], path: Option<&std::ffi::OsStr>) -> Result<RuntimeInfo, String> {
    let mut info = RuntimeInfo::new();
    info.name = RUNTIME_NAME.to_string();
    let mut version = RuntimeVersion::new();
    version.version = VERSION.to_string();
    version.revision = REVISION.to_string();
    info.version = MessageField::some(version);

    let options = if stdin.is_empty() {
        None
    } else {
        let any = Any::parse_from_bytes(stdin)
            .map_err(|e| format!("runtime options on stdin are not a protobuf Any: {e}"))?;
        let options = Options::from_any(Some(&any))?;
        info.options = MessageField::some(runc_options_any(&options)?);
        Some(options)
    };
    let binary = options
        .as_ref()
        .map_or(crate::options::DEFAULT_RUNTIME, |o| o.binary());
    let absolute = look_path(binary, path)
        .ok_or_else(|| format!("runtime binary {binary:?} not found in PATH"))?;
    if let Some(json) = features(&absolute) {
        let mut any = Any::new();
        any.type_url = FEATURES_TYPE_URL.to_string();
        any.value = json;
        info.features = MessageField::some(any);
    }
    Ok(info)
}

/// The options in the shape containerd's runc shim reports (and containerd decodes).
fn runc_options_any(o: &Options) -> Result<Any, String> {
    let mut r = RuncOptions::new();
    r.binary_name = o.binary_name.clone();
    r.root = o.root.clone();
    r.systemd_cgroup = o.systemd_cgroup;
    r.no_pivot_root = o.no_pivot_root;
    r.no_new_keyring = o.no_new_keyring;
    r.shim_cgroup = o.shim_cgroup.clone();
    r.io_uid = o.io_uid;
    r.io_gid = o.io_gid;
    r.criu_image_path = o.criu_image_path.clone();
    r.criu_work_path = o.criu_work_path.clone();
    let mut any = Any::new();
    any.type_url = RUNC_OPTIONS_TYPE_URL.to_string();
    any.value = r
        .write_to_bytes()
        .map_err(|e| format!("encode options: {e}"))?;
    Ok(any)
}

/// Go's `exec.LookPath`: a name with a slash is used as it is, else the first executable
/// regular file of that name in `PATH`.
pub fn look_path(binary: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.is_empty() {
        return None;
    }
    if binary.contains('/') {
        let p = PathBuf::from(binary);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path?)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".").join(binary)
            } else {
                dir.join(binary)
            }
        })
        .find(|p| executable(p))
}

/// `<runtime> features`, when it exits 0 within [`FEATURES_TIMEOUT`] and prints a JSON object;
/// the object re-encoded compactly (containerd unmarshals it into runtime-spec's Go struct).
fn features(runtime: &Path) -> Option<Vec<u8>> {
    let mut child = Command::new(runtime)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|s| s.take(FEATURES_LIMIT).read_to_end(&mut out));
    // The pipe is at its end (or over the limit): the runtime has exited or is about to.
    let deadline = Instant::now() + FEATURES_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    if !status?.success() || !matches!(read, Some(Ok(_))) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(&out).ok()?;
    if !value.is_object() {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// `-info`: reads the options from stdin, writes the `RuntimeInfo` to stdout.
pub fn run() -> Result<(), String> {
    use std::io::Write;
    let mut stdin = Vec::new();
    std::io::stdin()
        .take(super::protocol::STDIN_LIMIT)
        .read_to_end(&mut stdin)
        .map_err(|e| format!("-info: read stdin: {e}"))?;
    let info = runtime_info(&stdin, std::env::var_os("PATH").as_deref())
        .map_err(|e| format!("-info: {e}"))?;
    let bytes = info
        .write_to_bytes()
        .map_err(|e| format!("-info: encode: {e}"))?;
    let mut stdout = std::io::stdout();
    stdout
        .write_all(&bytes)
        .and_then(|_| stdout.flush())
        .map_err(|e| format!("-info: write: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Vec<u8> {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value;
        a.write_to_bytes().expect("encode")
    }

    /// A directory holding fake runtimes (shell scripts).
    fn fake_runtimes(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tender-info-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Written by `install` (a child process), not by this process: a test thread forking
        // while we held the script open for writing would make exec fail with ETXTBSY.
        let script = |name: &str, body: &str| {
            let src = dir.join(format!("{name}.src"));
            std::fs::write(&src, format!("#!/bin/sh\n{body}\n")).expect("write");
            let ok = Command::new("install")
                .arg("-m")
                .arg("0755")
                .arg(&src)
                .arg(dir.join(name))
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "install {name}");
        };
        script(
            "runc",
            r#"[ "$1" = features ] && printf '{ "ociVersionMin": "1.0.0",\n "hooks": ["prestart"] }\n'"#,
        );
        script("crun", "echo 'unknown command features' >&2; exit 1");
        script("garbage", "echo not json");
        script("array", "echo '[1,2]'");
        dir
    }

    #[test]
    fn defaults_runc_and_its_features() {
        let dir = fake_runtimes("defaults");
        let info = runtime_info(b"", Some(dir.as_os_str())).expect("info");
        assert_eq!(info.name, RUNTIME_NAME);
        assert_eq!(info.version.version, VERSION);
        assert!(info.options.is_none(), "no options given, none reported");
        let f = info.features.as_ref().expect("features");
        assert_eq!(f.type_url, FEATURES_TYPE_URL);
        // Compact JSON, same content.
        assert!(!f.value.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&f.value).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"ociVersionMin": "1.0.0", "hooks": ["prestart"]})
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn binary_name_in_every_option_shape() {
        let dir = fake_runtimes("shapes");
        let path = Some(dir.as_os_str());
        let mut r = RuncOptions::new();
        r.binary_name = "crun".into();
        let runc = any(
            "containerd.runc.v1.Options",
            r.write_to_bytes().expect("encode"),
        );
        // runtimeoptions.v1.Options { config_body (3) = TOML }
        let toml = b"BinaryName = \"crun\"\n";
        let mut ro = vec![0x1a, toml.len() as u8];
        ro.extend_from_slice(toml);
        let cri = any("runtimeoptions.v1.Options", ro);
        for stdin in [runc, cri] {
            let info = runtime_info(&stdin, path).expect("info");
            // crun 1.8 has no `features`: left out, not an error.
            assert!(info.features.is_none());
            let opts = info.options.as_ref().expect("options echoed");
            assert_eq!(opts.type_url, RUNC_OPTIONS_TYPE_URL);
            let back = RuncOptions::parse_from_bytes(&opts.value).expect("decode");
            assert_eq!(back.binary_name, "crun");
        }
        // CreateOptions carry no binary name: runc, with its features.
        let create = any("containerd.linux.runc.CreateOptions", vec![0x08, 0x01]);
        let info = runtime_info(&create, path).expect("info");
        assert!(info.features.is_some());
        let back = RuncOptions::parse_from_bytes(&info.options.value).expect("decode");
        assert!(back.no_pivot_root);

        for name in ["garbage", "array"] {
            r.binary_name = dir.join(name).to_string_lossy().into_owned();
            let stdin = any(
                "containerd.runc.v1.Options",
                r.write_to_bytes().expect("encode"),
            );
            let info = runtime_info(&stdin, None).expect("absolute path needs no PATH");
            assert!(info.features.is_none(), "{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_input_is_an_error() {
        let dir = fake_runtimes("bad");
        let path = Some(dir.as_os_str());
        assert!(runtime_info(b"garbage\n", path).is_err());
        assert!(runtime_info(&[0xff, 0xff, 0xff], path).is_err());
        assert!(runtime_info(&any("example.Unknown", vec![1]), path).is_err());
        let mut r = RuncOptions::new();
        r.binary_name = "no-such-runtime".into();
        let stdin = any(
            "containerd.runc.v1.Options",
            r.write_to_bytes().expect("encode"),
        );
        let err = runtime_info(&stdin, path).expect_err("missing runtime");
        assert!(err.contains("no-such-runtime"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
