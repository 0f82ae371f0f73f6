//! The shim's exit never loses an answer: a request it accepted is answered before it goes.
//!
//! containerd closes its connection to a shim as soon as the shim answers Shutdown, failing
//! every call still pending on it with `ttrpc: closed`. CRI's StopPodSandbox sends Kill(SIGKILL)
//! to the pause container; the pause dies the moment `runc kill` signals it, the TaskExit makes
//! CRI send Delete and Shutdown — while the Kill itself may still be waiting for `runc kill` to
//! exit. Here the runtime is a wrapper around runc that answers `kill` 1 s late, which makes
//! that window wide and the test deterministic.
//!
//! The daemon is run as the `start` action runs it (listener on fd 3, TTRPC_ADDRESS for
//! events) and spoken to in raw ttrpc frames, so the order of the answers is seen exactly as a
//! client reads them. Needs root, runc and /bin/busybox; skips otherwise (fails when CI=true).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
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

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-tender-v2");
const TASK_V3: &str = "containerd.task.v3.Task";
/// How late the wrapper answers `kill`.
const KILL_DELAY: &str = "1";

static SEQ: AtomicU64 = AtomicU64::new(0);

fn enabled(test: &str) -> bool {
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

/// Everything of one test under `/tmp/tender-inflight-<pid>-<n>`.
struct Sandbox {
    dir: PathBuf,
    namespace: String,
    ids: Mutex<Vec<String>>,
}

impl Sandbox {
    fn new() -> Sandbox {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/tender-inflight-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sandbox dir");
        Sandbox {
            dir,
            namespace: format!("inflight-{}-{n}", std::process::id()),
            ids: Mutex::new(Vec::new()),
        }
    }

    fn cgroup_parent(&self) -> String {
        format!("/tender-{}", self.namespace)
    }

    fn runc_root(&self) -> PathBuf {
        Path::new(tender::options::DEFAULT_ROOT).join(&self.namespace)
    }

    /// A bundle whose rootfs is a plain directory with busybox (no mounts needed).
    fn bundle(&self, id: &str, args: &[&str]) -> PathBuf {
        self.ids.lock().unwrap().push(id.to_string());
        let b = self.dir.join(id);
        let bin = b.join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("rootfs");
        for d in ["proc", "dev", "sys", "tmp"] {
            std::fs::create_dir_all(b.join("rootfs").join(d)).expect("rootfs dirs");
        }
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for applet in ["sh", "sleep"] {
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

    /// A runtime that forwards to runc but answers `kill` [`KILL_DELAY`] seconds after runc
    /// did (the signal itself is sent at once).
    fn slow_kill_runtime(&self) -> PathBuf {
        let runc = tender::runtime::resolve_binary("runc").expect("runc");
        let path = self.dir.join("slow-kill-runc");
        let script = format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do\n\
             \x20 if [ \"$a\" = kill ]; then {runc} \"$@\"; rc=$?; sleep {KILL_DELAY}; exit $rc; fi\n\
             done\n\
             exec {runc} \"$@\"\n",
            runc = runc.display()
        );
        std::fs::write(&path, script).expect("write wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
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

/// Collects the topics the shim publishes (it dials TTRPC_ADDRESS like containerd's).
#[derive(Default)]
struct Sink {
    topics: Mutex<Vec<String>>,
}

#[async_trait]
impl Events for Sink {
    async fn forward(
        &self,
        _ctx: &TtrpcContext,
        req: api::ForwardRequest,
    ) -> ttrpc::Result<api::Empty> {
        if let Some(env) = req.envelope.as_ref() {
            self.topics.lock().unwrap().push(env.topic.clone());
        }
        Ok(api::Empty::new())
    }
}

impl Sink {
    fn wait_for(&self, topic: &str, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        while Instant::now() < deadline {
            if self.topics.lock().unwrap().iter().any(|t| t == topic) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }
}

/// Serves `Events` on `path` from its own thread and runtime for the rest of the process.
fn start_sink(path: &Path) -> Arc<Sink> {
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

/// The serving daemon, started the way the `start` action starts it.
struct ShimProc {
    child: Child,
    socket: PathBuf,
    stderr: PathBuf,
}

impl ShimProc {
    fn spawn(sb: &Sandbox, id: &str, cwd: &Path, events: &Path) -> ShimProc {
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

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_exit(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
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

/// One ttrpc connection in raw frames: requests are sent without waiting, answers are read in
/// the order the shim wrote them.
struct Conn {
    s: UnixStream,
    next_stream: u32,
    /// (stream, method, outcome) of every answer read, in order.
    answers: Vec<(u32, String, String)>,
    methods: Vec<(u32, String)>,
}

impl Conn {
    fn open(socket: &Path) -> Conn {
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
    fn send(&mut self, method: &str, payload: &impl Message) -> u32 {
        let mut r = ttrpc::Request::new();
        r.service = TASK_V3.into();
        r.method = method.into();
        r.payload = payload.write_to_bytes().expect("encode");
        r.timeout_nano = Duration::from_secs(20).as_nanos() as i64;
        let body = r.write_to_bytes().expect("encode request");
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut f = Vec::with_capacity(10 + body.len());
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(&stream.to_be_bytes());
        f.push(1); // request
        f.push(0);
        f.extend_from_slice(&body);
        // A connection the shim closed: `answer` then says "closed".
        let _ = self.s.write_all(&f);
        self.methods.push((stream, method.to_string()));
        stream
    }

    /// Reads answers until the one for `stream`; returns its outcome ("OK", a status code
    /// name, or "closed"/"no answer") and its payload.
    fn answer(&mut self, stream: u32, bound: Duration) -> (String, Vec<u8>) {
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

    /// The methods answered so far, in order.
    fn order(&self) -> Vec<String> {
        self.answers
            .iter()
            .map(|(_, m, o)| format!("{m}={o}"))
            .collect()
    }
}

fn create_req(id: &str, bundle: &Path, runtime: &Path) -> api::CreateTaskRequest {
    let mut o = RuncOptions::new();
    o.binary_name = runtime.display().to_string();
    let mut a = Any::new();
    a.type_url = "containerd.runc.v1.Options".into();
    a.value = o.write_to_bytes().expect("options");
    let mut r = api::CreateTaskRequest::new();
    r.id = id.into();
    r.bundle = bundle.display().to_string();
    r.options = MessageField::some(a);
    r
}

fn kill_req(id: &str) -> api::KillRequest {
    let mut r = api::KillRequest::new();
    r.id = id.into();
    r.signal = libc::SIGKILL as u32;
    r
}

fn delete_req(id: &str) -> api::DeleteRequest {
    let mut r = api::DeleteRequest::new();
    r.id = id.into();
    r
}

fn shutdown_req(id: &str) -> api::ShutdownRequest {
    let mut r = api::ShutdownRequest::new();
    r.id = id.into();
    r
}

/// A shim serving one running container `id` (sleep) whose runtime answers `kill` late.
fn running_shim(sb: &Sandbox, id: &str) -> (ShimProc, Arc<Sink>, Conn) {
    let events = sb.dir.join("events.sock");
    let sink = start_sink(&events);
    let bundle = sb.bundle(id, &["sleep", "1000"]);
    let runtime = sb.slow_kill_runtime();
    let shim = ShimProc::spawn(sb, id, &bundle, &events);
    let mut conn = Conn::open(&shim.socket);
    let s = conn.send("Create", &create_req(id, &bundle, &runtime));
    let (got, _) = conn.answer(s, Duration::from_secs(20));
    assert_eq!(got, "OK", "Create\n{}", shim.stderr_text());
    let mut start = api::StartRequest::new();
    start.id = id.into();
    let s = conn.send("Start", &start);
    let (got, _) = conn.answer(s, Duration::from_secs(20));
    assert_eq!(got, "OK", "Start\n{}", shim.stderr_text());
    (shim, sink, conn)
}

/// containerd's sequence on its one connection: Kill(SIGKILL) in flight, then — on the
/// TaskExit it causes — Delete and Shutdown. containerd closes the connection on Shutdown's
/// answer, so the Kill must be answered first; and the shim then exits.
#[test]
fn kill_in_flight_is_answered_before_shutdown() {
    if !enabled("kill_in_flight_is_answered_before_shutdown") {
        return;
    }
    let sb = Sandbox::new();
    let id = "pause";
    let (mut shim, sink, mut conn) = running_shim(&sb, id);

    let kill = conn.send("Kill", &kill_req(id));
    assert!(
        sink.wait_for("/tasks/exit", Duration::from_secs(10)),
        "no TaskExit after Kill\n{}",
        shim.stderr_text()
    );
    let delete = conn.send("Delete", &delete_req(id));
    let (got, _) = conn.answer(delete, Duration::from_secs(20));
    assert_eq!(got, "OK", "Delete\n{}", shim.stderr_text());
    let shutdown = conn.send("Shutdown", &shutdown_req(id));
    let (got, _) = conn.answer(shutdown, Duration::from_secs(20));
    assert_eq!(got, "OK", "Shutdown\n{}", shim.stderr_text());
    // What containerd sees: everything read up to Shutdown's answer, then it closes.
    let before_close = conn.order();
    let answered = before_close.contains(&"Kill=OK".to_string());
    // (Diagnostics only: whether the Kill's answer would have come at all.)
    let after = match answered {
        true => String::new(),
        false => conn.answer(kill, Duration::from_secs(5)).0,
    };
    drop(conn);
    assert!(
        answered,
        "the Kill in flight (stream {kill}) was not answered before Shutdown: containerd, \
         which closes the connection on Shutdown's answer, fails it with `ttrpc: closed`; \
         answers in order: {before_close:?}; had the connection stayed open, the Kill would \
         have got: {after}\n{}",
        shim.stderr_text()
    );
    assert!(
        shim.wait_exit(Duration::from_secs(10)).is_some(),
        "the shim did not exit after Shutdown\n{}",
        shim.stderr_text()
    );
}

/// Kill in flight on one connection, Delete and Shutdown on another (which closes on
/// Shutdown's answer), and a Create racing the exit on a third: the Kill is answered OK, the
/// Create gets a clean answer (refused with UNAVAILABLE once the shim has decided to exit, or
/// served when it came first — then the shim stays), never a dropped connection.
#[test]
fn requests_racing_the_exit_are_answered() {
    if !enabled("requests_racing_the_exit_are_answered") {
        return;
    }
    let sb = Sandbox::new();
    let id = "pause";
    let (mut shim, sink, mut conn) = running_shim(&sb, id);
    let late_bundle = sb.bundle("late", &["sleep", "1000"]);
    let runtime = sb.slow_kill_runtime();
    let mut killer = Conn::open(&shim.socket);
    let mut racer = Conn::open(&shim.socket);

    let kill = killer.send("Kill", &kill_req(id));
    assert!(
        sink.wait_for("/tasks/exit", Duration::from_secs(10)),
        "no TaskExit after Kill\n{}",
        shim.stderr_text()
    );
    let delete = conn.send("Delete", &delete_req(id));
    let (got, _) = conn.answer(delete, Duration::from_secs(20));
    assert_eq!(got, "OK", "Delete\n{}", shim.stderr_text());
    let shutdown = conn.send("Shutdown", &shutdown_req(id));
    // The Kill is still in flight (its runtime answers 1 s late); a Create comes meanwhile.
    std::thread::sleep(Duration::from_millis(200));
    let create = racer.send("Create", &create_req("late", &late_bundle, &runtime));

    let (got, _) = conn.answer(shutdown, Duration::from_secs(20));
    assert_eq!(got, "OK", "Shutdown\n{}", shim.stderr_text());
    drop(conn);
    let (kill_got, _) = killer.answer(kill, Duration::from_secs(20));
    assert_eq!(
        kill_got,
        "OK",
        "the Kill in flight when the shim decided to exit\n{}",
        shim.stderr_text()
    );
    let (create_got, _) = racer.answer(create, Duration::from_secs(20));
    match create_got.as_str() {
        "UNAVAILABLE" => {
            eprintln!("the racing Create was refused: the shim had decided to exit");
        }
        "OK" => {
            eprintln!("the racing Create came first: the shim stays");
            assert!(shim.wait_exit(Duration::from_millis(500)).is_none());
            let d = racer.send("Delete", &delete_req("late"));
            assert_eq!(racer.answer(d, Duration::from_secs(20)).0, "OK");
            let s = racer.send("Shutdown", &shutdown_req("late"));
            assert_eq!(racer.answer(s, Duration::from_secs(20)).0, "OK");
        }
        other => panic!(
            "the Create racing the exit got {other}, not an answer\n{}",
            shim.stderr_text()
        ),
    }
    drop((killer, racer));
    assert!(
        shim.wait_exit(Duration::from_secs(10)).is_some(),
        "the shim did not exit\n{}",
        shim.stderr_text()
    );
}
