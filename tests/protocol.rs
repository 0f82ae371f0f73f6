//! Protocol-level tests of the start/serve/shutdown cycle without containerd: the binary's
//! `start` action is run the way containerd 1.6–2.2 and 2.3+ run it, and the daemon it leaves
//! behind is spoken to over ttrpc under both Task service names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::api;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-tender-v2");

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn skip(test: &str) -> bool {
    if is_root() {
        return false;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root (socket dir /run/containerd/s) and CI=true forbids skipping"
    );
    eprintln!("SKIP {test}: needs root");
    true
}

struct Bundle {
    dir: PathBuf,
    namespace: String,
    id: String,
}

impl Bundle {
    fn new(tag: &str) -> Bundle {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let id = format!("{tag}-{}-{nanos}", std::process::id());
        let dir = std::env::temp_dir().join(format!("tender-proto-{id}"));
        std::fs::create_dir_all(&dir).expect("bundle dir");
        std::fs::write(
            dir.join("config.json"),
            br#"{"ociVersion":"1.0.2","annotations":{}}"#,
        )
        .expect("config.json");
        Bundle {
            dir,
            namespace: format!("proto-{}", std::process::id()),
            id,
        }
    }

    /// Runs `start` with `stdin` as containerd would; returns (exit ok, stdout, stderr).
    fn start(&self, stdin: &[u8]) -> (bool, Vec<u8>, String) {
        let mut child = Command::new(SHIM)
            .args([
                "-namespace",
                &self.namespace,
                "-address",
                "/run/tender-proto-test/containerd.sock",
                "-publish-binary",
                "/bin/true",
                "-id",
                &self.id,
                "start",
            ])
            .current_dir(&self.dir)
            .env(
                "TTRPC_ADDRESS",
                "/run/tender-proto-test/containerd.sock.ttrpc",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shim start");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        let out = child.wait_with_output().expect("shim start");
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn call(
    client: &ttrpc::asynchronous::Client,
    service: &str,
    method: &str,
    payload: Vec<u8>,
) -> ttrpc::Result<Vec<u8>> {
    let req = ttrpc::Request {
        service: service.to_string(),
        method: method.to_string(),
        payload,
        timeout_nano: Duration::from_secs(5).as_nanos() as i64,
        ..Default::default()
    };
    let resp = client.request(req).await?;
    Ok(resp.payload)
}

fn socket_of(address: &str) -> PathBuf {
    PathBuf::from(address.trim_start_matches("unix://"))
}

/// The processes holding the listening socket bound at `socket` (the daemon's command line
/// does not name its socket, as with containerd's own shims).
fn shim_pids_for(socket: &Path) -> Vec<u32> {
    let needle = socket.to_string_lossy().into_owned();
    // /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; listening = St 01.
    let inodes: Vec<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[7] == needle && f[5] == "01").then(|| format!("socket:[{}]", f[6]))
        })
        .collect();
    let mut pids = Vec::new();
    if inodes.is_empty() {
        return pids;
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .map(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
                .unwrap_or(false)
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

fn wait_gone(socket: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if shim_pids_for(socket).is_empty() && !socket.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Connect (under both names) and Shutdown of an empty shim.
async fn exercise_and_shutdown(address: &str) {
    let client = ttrpc::asynchronous::Client::connect(address)
        .await
        .expect("connect to shim");
    for service in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
        let payload = call(
            &client,
            service,
            "Connect",
            api::ConnectRequest::new().write_to_bytes().expect("encode"),
        )
        .await
        .unwrap_or_else(|e| panic!("{service}/Connect: {e}"));
        let resp = api::ConnectResponse::parse_from_bytes(&payload).expect("ConnectResponse");
        assert!(resp.shim_pid > 0, "{service}: shim_pid");
        assert!(!resp.version.is_empty(), "{service}: version");
    }
    // An unknown container is a NotFound error under either name, not a crash.
    let mut state = api::StateRequest::new();
    state.id = "nope".into();
    let err = call(
        &client,
        "containerd.task.v2.Task",
        "State",
        state.write_to_bytes().expect("encode"),
    )
    .await
    .expect_err("State of unknown container");
    match err {
        ttrpc::Error::RpcStatus(s) => assert_eq!(s.code(), ttrpc::Code::NOT_FOUND, "{s:?}"),
        e => panic!("unexpected error {e:?}"),
    }
    let _ = call(
        &client,
        "containerd.task.v3.Task",
        "Shutdown",
        api::ShutdownRequest::new()
            .write_to_bytes()
            .expect("encode"),
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn legacy_start_serves_v2_and_v3_and_reuses_the_group_shim() {
    if skip("legacy_start") {
        return;
    }
    let bundle = Bundle::new("legacy");
    // containerd 1.6 writes no options for a runtime without options: empty stdin.
    let (ok, out, err) = bundle.start(b"");
    assert!(ok, "start failed: {err}");
    let address = String::from_utf8(out).expect("utf-8 address");
    assert!(
        address.starts_with("unix:///run/containerd/s/") && !address.contains('\n'),
        "plain address expected, got {address:?}"
    );
    let socket = socket_of(&address);
    let meta = std::fs::metadata(&socket).expect("socket exists");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(
        std::fs::read_to_string(bundle.dir.join("address")).expect("address file"),
        address
    );
    let first = shim_pids_for(&socket);
    assert_eq!(first.len(), 1, "one daemon: {first:?}");
    // The daemon is forked from the start action; `ps` must not show it as a start.
    let argv = std::fs::read(format!("/proc/{}/cmdline", first[0])).expect("daemon cmdline");
    let words: Vec<String> = argv
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    assert!(
        words.iter().any(|w| w == "-id") && !words.iter().any(|w| w == "start"),
        "daemon command line: {words:?}"
    );

    // A second start for the same group reuses the live shim.
    let (ok, out2, err) = bundle.start(b"");
    assert!(ok, "second start failed: {err}");
    assert_eq!(String::from_utf8_lossy(&out2), address);
    assert_eq!(shim_pids_for(&socket), first, "no second daemon");

    exercise_and_shutdown(&address).await;
    assert!(wait_gone(&socket), "shim and socket gone after Shutdown");
}

#[tokio::test(flavor = "current_thread")]
async fn bootstrap_params_start_answers_bootstrap_result() {
    if skip("bootstrap_start") {
        return;
    }
    let bundle = Bundle::new("boot");
    let mut params = BootstrapParams::new();
    params.instance_id = bundle.id.clone();
    params.namespace = bundle.namespace.clone();
    params.containerd_version = "v2.3.0".into();
    params.containerd_ttrpc_address = "/run/tender-proto-test/containerd.sock.ttrpc".into();
    params.containerd_grpc_address = "/run/tender-proto-test/containerd.sock".into();
    params.containerd_binary = "/bin/true".into();
    let (ok, out, err) = bundle.start(&params.write_to_bytes().expect("encode"));
    assert!(ok, "start failed: {err}");
    let result = BootstrapResult::parse_from_bytes(&out).expect("BootstrapResult on stdout");
    assert_eq!(result.version, 3);
    assert_eq!(result.protocol, "ttrpc");
    assert!(result.address.starts_with("unix:///run/containerd/s/"));
    exercise_and_shutdown(&result.address).await;
    assert!(wait_gone(&socket_of(&result.address)));
}

#[test]
fn garbage_on_start_stdin_is_a_clear_error() {
    if skip("garbage_start") {
        return;
    }
    let bundle = Bundle::new("garbage");
    let (ok, out, err) = bundle.start(&[0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(!ok, "garbage must fail");
    assert!(out.is_empty(), "nothing on stdout: {out:?}");
    assert!(err.contains("stdin"), "error names the cause: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
}

#[test]
fn bad_ids_are_refused_by_start() {
    let mut bundle = Bundle::new("badid");
    for id in ["../etc", "a/b", ""] {
        bundle.id = id.to_string();
        let (ok, out, err) = bundle.start(b"");
        assert!(!ok && out.is_empty(), "id {id:?} must be refused");
        assert!(err.contains("id"), "{err}");
    }
}
