//! Support for the tests that run a Tender shim without containerd (`tests/hostile_input.rs`,
//! `tests/shutdown_inflight.rs`): a scratch directory with busybox bundles and cleanup, an
//! event sink the shim publishes to, the serving daemon started exactly as the `start` action
//! starts it (listener on fd 3, TTRPC_ADDRESS for events), raw ttrpc frames and a raw-frame
//! client, and Task API request builders.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_protos::shim_async::{create_events, Events};
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-tender-v2");
pub const TASK_V3: &str = "containerd.task.v3.Task";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Whether the test can run here (root, runc, /bin/busybox); prints `SKIP …` when not, and
/// fails instead when CI=true.
pub fn enabled(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root");
    }
    if tender::runtime::resolve_binary("runc").is_err() {
        missing.push("runc");
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox");
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("SKIP {test}: needs {}", missing.join(", "));
    assert!(
        !matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")),
        "{msg} — failing because CI=true"
    );
    eprintln!("{msg}");
    false
}

// ---------------------------------------------------------------------------
// Sandbox: bundles, cleanup
// ---------------------------------------------------------------------------

/// Everything of one test under `/tmp/tender-<tag>-<pid>-<n>`, in namespace `<tag>-<pid>-<n>`.
pub struct Sandbox {
    pub dir: PathBuf,
    pub namespace: String,
    ids: Mutex<Vec<String>>,
}

impl Sandbox {
    pub fn new(tag: &str) -> Sandbox {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/tender-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sandbox dir");
        Sandbox {
            dir,
            namespace: format!("{tag}-{}-{n}", std::process::id()),
            ids: Mutex::new(Vec::new()),
        }
    }

    pub fn cgroup_parent(&self) -> String {
        format!("/tender-{}", self.namespace)
    }

    pub fn runc_root(&self) -> PathBuf {
        Path::new(tender::options::DEFAULT_ROOT).join(&self.namespace)
    }

    /// A bundle whose rootfs is a plain directory with busybox (no mounts needed).
    pub fn bundle(&self, id: &str, args: &[&str]) -> PathBuf {
        self.ids.lock().unwrap().push(id.to_string());
        let b = self.dir.join(id);
        let bin = b.join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("rootfs");
        for d in ["proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(b.join("rootfs").join(d)).expect("rootfs dirs");
        }
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for applet in ["sh", "sleep", "true", "cat"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
        }
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(&b)
            .output()
            .expect("runc spec");
        assert!(out.status.success(), "runc spec: {out:?}");
        let path = b.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read spec")).expect("spec");
        spec["process"]["terminal"] = false.into();
        spec["process"]["args"] = args.iter().map(|a| a.to_string()).collect();
        spec["linux"]["cgroupsPath"] = format!("{}/{id}", self.cgroup_parent()).into();
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write");
        b
    }

    /// Mount points at or below `p` (this process's mount namespace).
    pub fn mounts_under(&self, p: &Path) -> Vec<String> {
        let needle = p.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(String::from))
            .filter(|m| m.starts_with(&needle))
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let ids = self.ids.lock().map(|v| v.clone()).unwrap_or_default();
        for id in ids {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(self.runc_root())
                .args(["delete", "--force", &id])
                .stderr(Stdio::null())
                .status();
        }
        let mut mps = self.mounts_under(&self.dir);
        mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mps {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = std::fs::remove_dir_all(self.runc_root());
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            let rel = self.cgroup_parent();
            for e in rd.flatten() {
                let root = e.path().join(rel.trim_start_matches('/'));
                if let Ok(children) = std::fs::read_dir(&root) {
                    for c in children.flatten() {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
                let _ = std::fs::remove_dir(&root);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// The event sink
// ---------------------------------------------------------------------------

/// Collects what the shim publishes (it dials TTRPC_ADDRESS like containerd's): each event's
/// topic and payload, in order.
#[derive(Default)]
pub struct Sink {
    pub events: Mutex<Vec<(String, Vec<u8>)>>,
}

#[async_trait]
impl Events for Sink {
    async fn forward(
        &self,
        _ctx: &TtrpcContext,
        req: api::ForwardRequest,
    ) -> ttrpc::Result<api::Empty> {
        if let Some(env) = req.envelope.as_ref() {
            let payload = env
                .event
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            self.events
                .lock()
                .unwrap()
                .push((env.topic.clone(), payload));
        }
        Ok(api::Empty::new())
    }
}

impl Sink {
    /// The topics published so far, in order.
    pub fn topics(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether `topic` is published within `bound`.
    pub fn wait_for(&self, topic: &str, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.events.lock().unwrap().iter().any(|(t, _)| t == topic) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// Serves `Events` on `path` from its own thread and runtime for the rest of the process.
pub fn start_sink(path: &Path) -> Arc<Sink> {
    let sink = Arc::new(Sink::default());
    let s = sink.clone();
    let addr = format!("unix://{}", path.display());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("sink runtime");
        rt.block_on(async move {
            let mut server = ttrpc::r#async::Server::new()
                .bind(&addr)
                .expect("bind sink")
                .register_service(create_events(s));
            server.start().await.expect("start sink");
            let _ = tx.send(());
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("event sink did not start");
    sink
}

// ---------------------------------------------------------------------------
// The shim daemon
// ---------------------------------------------------------------------------

/// The serving daemon, started the way the `start` action starts it.
pub struct ShimProc {
    pub child: Child,
    pub socket: PathBuf,
    pub stderr: PathBuf,
}

impl ShimProc {
    pub fn spawn(sb: &Sandbox, id: &str, cwd: &Path, events: &Path) -> ShimProc {
        let socket = sb.dir.join("shim.sock");
        let stderr = sb.dir.join("shim.stderr");
        let listener = UnixListener::bind(&socket).expect("bind shim socket");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let mut cmd = Command::new(SHIM);
        cmd.args(["-namespace", &sb.namespace, "-id", id, "-address"])
            .arg(sb.dir.join("containerd.sock"))
            .arg("-socket")
            .arg(&socket)
            .arg("-debug")
            .current_dir(cwd)
            .env("TTRPC_ADDRESS", events)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn shim daemon");
        drop(listener);
        ShimProc {
            child,
            socket,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ShimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

// ---------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------

pub const MSG_REQUEST: u8 = 1;

/// A ttrpc frame: 10-byte header (length, stream, type, flags), then `payload` as is.
pub fn frame(len: u32, stream: u32, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(10 + payload.len());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&stream.to_be_bytes());
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(payload);
    f
}

/// An encoded `ttrpc::Request`.
pub fn request_bytes(service: &str, method: &str, payload: &[u8], timeout_nano: i64) -> Vec<u8> {
    let mut r = ttrpc::Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = payload.to_vec();
    r.timeout_nano = timeout_nano;
    r.write_to_bytes().expect("encode request")
}

/// One ttrpc connection in raw frames: requests are sent without waiting, answers are read in
/// the order the shim wrote them.
pub struct Conn {
    s: UnixStream,
    next_stream: u32,
    /// (stream, method, outcome) of every answer read, in order.
    answers: Vec<(u32, String, String)>,
    methods: Vec<(u32, String)>,
}

impl Conn {
    pub fn open(socket: &Path) -> Conn {
        let s = UnixStream::connect(socket).expect("connect to the shim");
        s.set_write_timeout(Some(Duration::from_secs(10))).ok();
        Conn {
            s,
            next_stream: 1,
            answers: Vec::new(),
            methods: Vec::new(),
        }
    }

    /// Sends a Task API request; returns its stream id.
    pub fn send(&mut self, method: &str, payload: &impl Message) -> u32 {
        let body = request_bytes(
            TASK_V3,
            method,
            &payload.write_to_bytes().expect("encode"),
            Duration::from_secs(20).as_nanos() as i64,
        );
        let stream = self.next_stream;
        self.next_stream += 2;
        let f = frame(body.len() as u32, stream, MSG_REQUEST, 0, &body);
        // A connection the shim closed: `answer` then says "closed".
        let _ = self.s.write_all(&f);
        self.methods.push((stream, method.to_string()));
        stream
    }

    /// Sends a Task API request and reads up to its answer (20 s at most); returns its outcome
    /// as [`Conn::answer`] does.
    pub fn call(&mut self, method: &str, payload: &impl Message) -> String {
        let stream = self.send(method, payload);
        self.answer(stream, Duration::from_secs(20)).0
    }

    /// Reads answers until the one for `stream`; returns its outcome ("OK", a status code
    /// name, or "closed"/"no answer") and its payload.
    pub fn answer(&mut self, stream: u32, bound: Duration) -> (String, Vec<u8>) {
        let deadline = Instant::now() + bound;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ("no answer".into(), Vec::new());
            }
            self.s.set_read_timeout(Some(left)).ok();
            let mut head = [0u8; 10];
            match self.s.read_exact(&mut head) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return ("no answer".into(), Vec::new())
                }
                Err(_) => return ("closed".into(), Vec::new()),
            }
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let id = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            let mut body = vec![0u8; len];
            if self.s.read_exact(&mut body).is_err() {
                return ("closed".into(), Vec::new());
            }
            let resp = ttrpc::Response::parse_from_bytes(&body).expect("parse response");
            let outcome = match resp.status.as_ref() {
                Some(st) if st.code.enum_value_or_default() != ttrpc::Code::OK => {
                    format!("{:?}", st.code.enum_value_or_default())
                }
                _ => "OK".to_string(),
            };
            let method = self
                .methods
                .iter()
                .find(|(s, _)| *s == id)
                .map(|(_, m)| m.clone())
                .unwrap_or_default();
            self.answers.push((id, method, outcome.clone()));
            if id == stream {
                return (outcome, resp.payload);
            }
        }
    }

    /// The methods answered so far, in order (`Method=outcome`).
    pub fn order(&self) -> Vec<String> {
        self.answers
            .iter()
            .map(|(_, m, o)| format!("{m}={o}"))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

pub fn any(type_url: &str, value: Vec<u8>) -> MessageField<Any> {
    let mut a = Any::new();
    a.type_url = type_url.into();
    a.value = value;
    MessageField::some(a)
}

/// Create without options (the shim's defaults: runc).
pub fn create_req(id: &str, bundle: &Path) -> api::CreateTaskRequest {
    let mut r = api::CreateTaskRequest::new();
    r.id = id.into();
    r.bundle = bundle.display().to_string();
    r
}

/// Create with runc options naming `runtime` as the runtime binary.
pub fn create_req_with_runtime(id: &str, bundle: &Path, runtime: &Path) -> api::CreateTaskRequest {
    let mut o = RuncOptions::new();
    o.binary_name = runtime.display().to_string();
    let mut r = create_req(id, bundle);
    r.options = any(
        "containerd.runc.v1.Options",
        o.write_to_bytes().expect("options"),
    );
    r
}

pub fn start_req(id: &str) -> api::StartRequest {
    let mut r = api::StartRequest::new();
    r.id = id.into();
    r
}

pub fn state_req(id: &str, exec_id: &str) -> api::StateRequest {
    let mut r = api::StateRequest::new();
    r.id = id.into();
    r.exec_id = exec_id.into();
    r
}

pub fn kill_req(id: &str) -> api::KillRequest {
    let mut r = api::KillRequest::new();
    r.id = id.into();
    r.signal = libc::SIGKILL as u32;
    r
}

pub fn delete_req(id: &str) -> api::DeleteRequest {
    let mut r = api::DeleteRequest::new();
    r.id = id.into();
    r
}

pub fn shutdown_req(id: &str) -> api::ShutdownRequest {
    let mut r = api::ShutdownRequest::new();
    r.id = id.into();
    r
}
