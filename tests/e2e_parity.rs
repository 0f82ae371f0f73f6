//! Behaviours where Tender matches containerd's Go shim (`containerd-shim-runc-v2`), end to end:
//! a private containerd, real runc, and containerd's own Tasks API (gRPC) where `ctr` cannot
//! make the request (a task created but not started, an exec created but not started, an
//! exec whose spec and request disagree on the terminal, ResizePty).
//!
//! `TENDER_E2E_RUNTIME=io.containerd.runc.v2` runs the same tests against the Go shim, which
//! behaves as they assert.

#[macro_use]
mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{process_alive, processes, wait_until, Ctr, IMAGE_REF};

const SHORT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------
// containerd's Tasks API (containerd.services.tasks.v1), the messages the tests use
// ---------------------------------------------------------------------------

mod tasks {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mount {
        #[prost(string, tag = "1")]
        pub r#type: String,
        #[prost(string, tag = "2")]
        pub source: String,
        #[prost(string, repeated, tag = "4")]
        pub options: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateTaskRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(message, repeated, tag = "3")]
        pub rootfs: Vec<Mount>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateTaskResponse {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(uint32, tag = "2")]
        pub pid: u32,
    }

    /// StartRequest, GetRequest, WaitRequest, DeleteProcessRequest (same two fields).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProcessRef {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(string, tag = "2")]
        pub exec_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StartResponse {
        #[prost(uint32, tag = "1")]
        pub pid: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeleteTaskRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DeleteResponse {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(uint32, tag = "2")]
        pub pid: u32,
        #[prost(uint32, tag = "3")]
        pub exit_status: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Process {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(string, tag = "2")]
        pub id: String,
        #[prost(uint32, tag = "3")]
        pub pid: u32,
        /// containerd.v1.types.Status: 1 created, 2 running, 3 stopped, 4 paused.
        #[prost(int32, tag = "4")]
        pub status: i32,
        #[prost(uint32, tag = "9")]
        pub exit_status: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetResponse {
        #[prost(message, optional, tag = "1")]
        pub process: Option<Process>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExecProcessRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(string, tag = "2")]
        pub stdin: String,
        #[prost(string, tag = "3")]
        pub stdout: String,
        #[prost(string, tag = "4")]
        pub stderr: String,
        #[prost(bool, tag = "5")]
        pub terminal: bool,
        #[prost(message, optional, tag = "6")]
        pub spec: Option<Any>,
        #[prost(string, tag = "7")]
        pub exec_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResizePtyRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(string, tag = "2")]
        pub exec_id: String,
        #[prost(uint32, tag = "3")]
        pub width: u32,
        #[prost(uint32, tag = "4")]
        pub height: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WaitResponse {
        #[prost(uint32, tag = "1")]
        pub exit_status: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
}

const CREATED: i32 = 1;
const RUNNING: i32 = 2;
const STOPPED: i32 = 3;

/// A blocking client of containerd's Tasks service in one namespace.
struct Tasks {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    namespace: String,
}

impl Tasks {
    fn connect(c: &Ctr<'_>) -> Tasks {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let channel = rt
            .block_on(common::unix_channel(c.cd.socket.clone()))
            .expect("connect to containerd");
        Tasks {
            rt,
            channel,
            namespace: c.namespace.clone(),
        }
    }

    fn call<Req, Resp>(&self, method: &str, req: Req, timeout: Duration) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = format!("/containerd.services.tasks.v1.Tasks/{method}");
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(path)
            .map_err(|e| format!("bad path: {e}"))?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let mut request = tonic::Request::new(req);
        let ns = self
            .namespace
            .parse()
            .map_err(|e| format!("namespace: {e}"))?;
        request.metadata_mut().insert("containerd-namespace", ns);
        self.rt.block_on(async move {
            let call = async {
                grpc.ready().await.map_err(|e| format!("not ready: {e}"))?;
                let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                grpc.unary(request, path, codec)
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(format!("{method}: no answer within {timeout:?}")),
            }
        })
    }

    fn process_ref(&self, id: &str, exec_id: &str) -> tasks::ProcessRef {
        tasks::ProcessRef {
            container_id: id.into(),
            exec_id: exec_id.into(),
        }
    }

    fn create(&self, id: &str, rootfs: Vec<tasks::Mount>) -> Result<u32, String> {
        let req = tasks::CreateTaskRequest {
            container_id: id.into(),
            rootfs,
        };
        let resp: tasks::CreateTaskResponse = self.call("Create", req, SHORT * 3)?;
        Ok(resp.pid)
    }

    fn start(&self, id: &str, exec_id: &str) -> Result<u32, String> {
        let resp: tasks::StartResponse =
            self.call("Start", self.process_ref(id, exec_id), SHORT * 3)?;
        Ok(resp.pid)
    }

    fn get(&self, id: &str, exec_id: &str) -> Result<tasks::Process, String> {
        let resp: tasks::GetResponse = self.call("Get", self.process_ref(id, exec_id), SHORT)?;
        resp.process.ok_or_else(|| "Get without a process".into())
    }

    fn wait(&self, id: &str, exec_id: &str, timeout: Duration) -> Result<u32, String> {
        let resp: tasks::WaitResponse =
            self.call("Wait", self.process_ref(id, exec_id), timeout)?;
        Ok(resp.exit_status)
    }

    fn exec(&self, req: tasks::ExecProcessRequest) -> Result<(), String> {
        self.call::<_, tasks::Empty>("Exec", req, SHORT).map(drop)
    }

    fn resize(&self, id: &str, exec_id: &str) -> Result<(), String> {
        let req = tasks::ResizePtyRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            width: 100,
            height: 30,
        };
        self.call::<_, tasks::Empty>("ResizePty", req, SHORT)
            .map(drop)
    }

    fn delete(&self, id: &str) -> Result<tasks::DeleteResponse, String> {
        let req = tasks::DeleteTaskRequest {
            container_id: id.into(),
        };
        self.call("Delete", req, SHORT * 3)
    }

    fn delete_process(&self, id: &str, exec_id: &str) -> Result<tasks::DeleteResponse, String> {
        self.call("DeleteProcess", self.process_ref(id, exec_id), SHORT)
    }
}

/// An exec's process spec (what `ctr task exec` sends, with `terminal` as given).
fn exec_spec(args: &[&str], terminal: bool) -> tasks::Any {
    let spec = serde_json::json!({
        "terminal": terminal,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "cwd": "/",
    });
    tasks::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&spec).expect("json"),
    }
}

/// `ctr container create` (no task): the container and its snapshot, whose mounts are
/// returned for a Tasks Create.
fn create_container(c: &Ctr<'_>, id: &str, cmd: &[&str]) -> Vec<tasks::Mount> {
    let mut args: Vec<String> = vec!["container".into(), "create".into()];
    args.push("--runtime".into());
    args.push(c.runtime.clone());
    // `ctr container create` has no --runc-binary; a runtime config path it does have.
    let extra = c.runtime_binary_args(&c.runtime);
    if extra.first().is_some_and(|a| a == "--runtime-config-path") {
        args.extend(extra);
    }
    args.push(IMAGE_REF.into());
    args.push(id.into());
    args.extend(cmd.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ctr_ok(&args);
    let target = c.cd.dir.join("unused-mount-target");
    let target = target.display().to_string();
    let out = c.ctr_ok(&["snapshots", "mounts", &target, id]);
    // One `mount -t <type> <source> <target> -o <options>` line per mount.
    out.stdout_str()
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let kind = words
                .iter()
                .position(|w| *w == "-t")
                .map(|i| words[i + 1])?;
            let source = words
                .iter()
                .position(|w| *w == "-t")
                .map(|i| words[i + 2])?;
            let options = match words.iter().position(|w| *w == "-o") {
                Some(i) => words[i + 1].split(',').map(String::from).collect(),
                None => Vec::new(),
            };
            Some(tasks::Mount {
                r#type: kind.into(),
                source: source.into(),
                options,
            })
        })
        .collect()
}

/// Removes what a test made through the Tasks API, whatever state it is in.
fn cleanup(c: &Ctr<'_>, id: &str) {
    let _ = c.ctr(&["task", "kill", "-s", "KILL", id]);
    let _ = wait_until(SHORT, POLL, || {
        let t = c.task(id)?;
        (t.status == "STOPPED" || t.status == "CREATED").then_some(())
    });
    let _ = c.ctr(&["task", "delete", "-f", id]);
    let _ = c.ctr(&["containers", "delete", id]);
}

/// pids of processes whose argv is exactly `argv`.
fn pids_running(argv: &[&str]) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, a)| a.iter().map(String::as_str).eq(argv.iter().copied()))
        .map(|(pid, _)| pid)
        .collect()
}

// ---------------------------------------------------------------------------
// 1. No PID namespace of its own: nothing survives the init
// ---------------------------------------------------------------------------

/// A container that joins another container's PID namespace (a pod's, by path) has nothing of
/// its own to end its processes when its init exits: the shim kills them (`kill --all`) before
/// the exit is reported, as containerd's runc shim does (`ShouldKillAllOnExit`). Checked at
/// the moment Wait returns, before any Delete (whose `runc delete --force` would kill them
/// anyway).
#[test]
fn init_exit_kills_what_it_left_in_a_joined_pid_namespace() {
    let cd = setup!("init_exit_kills_what_it_left_in_a_joined_pid_namespace");
    let c = cd.client("pidns");
    let holder = common::unique_id("holder");
    let info = c.start_running(&holder, &["sleep", "1000"]);
    let id = common::unique_id("joiner");
    // A number no other test uses, to find the orphan from the host.
    let marker = format!("{}", 40_000 + std::process::id() % 10_000);
    let ns = format!("pid:/proc/{}/ns/pid", info.pid);
    let script = format!("sleep {marker} & sleep 1; exit 3");
    let out = c.run_detached_extra(&["--with-ns", &ns], &id, &["sh", "-c", &script]);
    assert!(out.success(), "ctr run --with-ns failed{}", c.diag(&out));
    let orphan = wait_until(SHORT, POLL, || {
        pids_running(&["sleep", &marker]).first().copied()
    })
    .unwrap_or_else(|| panic!("`sleep {marker}` never ran{}", c.log()));

    let tasks = Tasks::connect(&c);
    let status = tasks.wait(&id, "", SHORT * 3);
    // Right when the exit is reported: the orphan must be dead already. Tender waits for the
    // killed processes to be gone; containerd's Go shim only has the signal queued, so it gets
    // a moment for the kernel to finish them.
    let grace = if common::runtime() == common::TENDER_RUNTIME {
        Duration::ZERO
    } else {
        Duration::from_millis(200)
    };
    let orphan_alive = wait_until(grace, POLL, || (!process_alive(orphan)).then_some(())).is_none();
    assert_eq!(
        status,
        Ok(3),
        "Wait must report the init's exit code{}",
        c.log()
    );
    assert!(
        !orphan_alive,
        "`sleep {marker}` (pid {orphan}) outlived its container's init: a container sharing a \
         PID namespace must leave nothing running once its exit is reported{}",
        c.log()
    );
    let t = c.task(&id).map(|t| t.status);
    assert_eq!(t.as_deref(), Some("STOPPED"));
    // The holder, whose namespace it was, is untouched.
    assert!(process_alive(info.pid), "the namespace's owner was killed");

    cleanup(&c, &id);
    cleanup(&c, &holder);
}

// ---------------------------------------------------------------------------
// 2. ResizePty without a terminal
// ---------------------------------------------------------------------------

/// ResizePty on a process that has no terminal (an init, a created exec, a running exec) is
/// accepted and does nothing, as in containerd's runc shim.
#[test]
fn resize_pty_without_a_terminal_is_a_no_op() {
    let cd = setup!("resize_pty_without_a_terminal_is_a_no_op");
    let c = cd.client("resize");
    let id = common::unique_id("resize");
    c.start_running(&id, &["sleep", "1000"]);
    let tasks = Tasks::connect(&c);
    assert_eq!(tasks.resize(&id, ""), Ok(()), "init without a terminal");
    tasks
        .exec(tasks::ExecProcessRequest {
            container_id: id.clone(),
            exec_id: "plain".into(),
            spec: Some(exec_spec(&["sleep", "1000"], false)),
            ..Default::default()
        })
        .expect("exec");
    assert_eq!(tasks.resize(&id, "plain"), Ok(()), "created exec");
    tasks.start(&id, "plain").expect("start exec");
    assert_eq!(tasks.resize(&id, "plain"), Ok(()), "running exec");
    let p = tasks.get(&id, "").expect("get");
    assert_eq!(p.status, RUNNING, "the container is unaffected");
    cleanup(&c, &id);
}

// ---------------------------------------------------------------------------
// 3. An exec's terminal: the request decides
// ---------------------------------------------------------------------------

/// An ExecProcessRequest with `terminal: true` gets a terminal even when its process spec says
/// `terminal: false` (the runc shim writes the request's choice into the spec it hands runc).
#[test]
fn exec_terminal_is_what_the_request_says() {
    let cd = setup!("exec_terminal_is_what_the_request_says");
    let c = cd.client("exectty");
    let id = common::unique_id("exectty");
    c.start_running(&id, &["sleep", "1000"]);
    let fifo = c.cd.dir.join(format!("{id}-exec-stdout"));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // Opened for reading before the shim opens it for writing (non-blocking open).
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open fifo");
    let tasks = Tasks::connect(&c);
    tasks
        .exec(tasks::ExecProcessRequest {
            container_id: id.clone(),
            exec_id: "tty".into(),
            stdout: fifo.display().to_string(),
            terminal: true,
            spec: Some(exec_spec(&["sh", "-c", "tty; sleep 0.2"], false)),
            ..Default::default()
        })
        .expect("exec");
    let started = tasks.start(&id, "tty");
    assert!(
        started.is_ok(),
        "an exec asking for a terminal must get one whatever its spec says: {started:?}{}",
        c.log()
    );
    let status = tasks.wait(&id, "tty", SHORT);
    let output = read_available(&mut reader, SHORT);
    assert_eq!(
        status,
        Ok(0),
        "`tty` must find a terminal; output {output:?}"
    );
    assert!(
        output.contains("/dev/pts/"),
        "`tty` must print its terminal, got {output:?}"
    );
    let _ = tasks.delete_process(&id, "tty");
    cleanup(&c, &id);
}

/// Reads a non-blocking FIFO until the writer closes it (or `timeout`).
fn read_available(reader: &mut std::fs::File, timeout: Duration) -> String {
    use std::io::Read;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut had_writer = false;
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) if had_writer || !out.is_empty() => break,
            Ok(0) => std::thread::sleep(POLL),
            Ok(n) => {
                had_writer = true;
                out.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                had_writer = true;
                std::thread::sleep(POLL);
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// 4. An init that dies between Create and Start
// ---------------------------------------------------------------------------

/// An init killed after Create and before Start (by a hook, the OOM killer, a signal): Start
/// fails, the task reads STOPPED, Wait returns its status (137) and Delete reports it.
#[test]
fn an_init_killed_before_start_is_stopped_and_waitable() {
    let cd = setup!("an_init_killed_before_start_is_stopped_and_waitable");
    let c = cd.client("earlydeath");
    let id = common::unique_id("early");
    let rootfs = create_container(&c, &id, &["sleep", "1000"]);
    assert!(!rootfs.is_empty(), "no rootfs mounts for {id}");
    let tasks = Tasks::connect(&c);
    let pid = tasks
        .create(&id, rootfs)
        .unwrap_or_else(|e| panic!("create task: {e}{}", c.log()));
    assert!(pid > 0);
    assert!(common::send_signal(pid, common::SIGKILL), "kill {pid}");
    let gone = wait_until(SHORT, POLL, || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert!(gone.is_some(), "init {pid} was not reaped");

    let started = tasks.start(&id, "");
    assert!(
        started.is_err(),
        "Start of a dead init must fail: {started:?}"
    );
    let status = tasks.wait(&id, "", SHORT);
    assert_eq!(
        status,
        Ok(137),
        "Wait on an init killed before Start must return its status{}",
        c.log()
    );
    let p = tasks.get(&id, "").expect("get");
    assert_eq!(p.status, STOPPED, "task status: {p:?}");
    assert_eq!(p.exit_status, 137, "task: {p:?}");
    let deleted = tasks.delete(&id);
    assert_eq!(
        deleted.map(|d| d.exit_status),
        Ok(137),
        "Delete's exit status"
    );
    cleanup(&c, &id);
}

// ---------------------------------------------------------------------------
// 5. An exec that was never started when its init died
// ---------------------------------------------------------------------------

/// An exec created but never started keeps the status `created` when its container's init
/// dies (containerd's runc shim never moves it), cannot be started any more, and can be
/// deleted.
#[test]
fn an_unstarted_exec_stays_created_when_its_init_dies() {
    let cd = setup!("an_unstarted_exec_stays_created_when_its_init_dies");
    let c = cd.client("orphanexec");
    let id = common::unique_id("orphanexec");
    c.start_running(&id, &["sleep", "1000"]);
    let tasks = Tasks::connect(&c);
    tasks
        .exec(tasks::ExecProcessRequest {
            container_id: id.clone(),
            exec_id: "later".into(),
            spec: Some(exec_spec(&["true"], false)),
            ..Default::default()
        })
        .expect("exec");
    assert_eq!(tasks.get(&id, "later").map(|p| p.status), Ok(CREATED));
    c.kill(&id, "KILL");
    assert_eq!(tasks.wait(&id, "", SHORT), Ok(137), "init's exit");
    let p = tasks.get(&id, "later").expect("get exec");
    assert_eq!(
        p.status, CREATED,
        "an exec never started must still read created once its init died: {p:?}"
    );
    assert!(
        tasks.start(&id, "later").is_err(),
        "an exec cannot start in a dead container"
    );
    let p = tasks.get(&id, "later").expect("get exec");
    assert_eq!(
        p.status, CREATED,
        "a refused Start leaves the exec created: {p:?}"
    );
    assert!(
        tasks.wait(&id, "later", SHORT).is_ok(),
        "Wait on an exec that will never run is answered"
    );
    assert_eq!(tasks.get(&id, "later").map(|p| p.status), Ok(CREATED));
    let deleted = tasks.delete_process(&id, "later");
    assert_eq!(
        deleted.map(|d| d.exit_status),
        Ok(0),
        "Delete: no exit to report"
    );
    cleanup(&c, &id);
}
