//! Hostile input on a Tender shim's own socket, without containerd: the serving daemon is run
//! exactly as the `start` action runs it (listener on fd 3, TTRPC_ADDRESS for events), a real
//! runc container runs inside it, and the test speaks ttrpc itself — typed requests through
//! `TaskClient`, and raw frames for what no well-behaved client sends.
//!
//! After every hostile request the shim must answer a valid request (Connect), the container
//! must still be RUNNING with the same pid, and the daemon's stderr must show no panic. Counts
//! are printed (`--nocapture`).
//!
//! Needs root and runc; skips otherwise (fails instead when CI=true).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_protos::shim_async::TaskClient;
use containerd_shim_protos::ttrpc;
use ttrpc::Code;

// The e2e harness, for one helper (the shim's fd count).
mod common;
// The Task API's method list, shared with the fuzz targets (the rest is theirs).
#[path = "fuzz_checks/mod.rs"]
mod fuzz_checks;
// The scratch dir, the shim daemon, the event sink, raw frames and request builders.
mod shimproc;

use fuzz_checks::Rng;
use shimproc::{
    any, create_req, enabled, frame, request_bytes, start_sink, state_req, Sandbox, ShimProc,
    MSG_REQUEST, SHIM, TASK_V3,
};

const RPC_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(RPC_TIMEOUT.as_nanos() as i64)
}

fn ctx_ms(ms: u64) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_millis(ms).as_nanos() as i64)
}

/// "OK", the status code name, or "TRANSPORT: …" (no answer: a hang, a panic, a reset).
fn outcome<T>(r: &ttrpc::Result<T>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(ttrpc::Error::RpcStatus(s)) => format!("{:?}", s.code.enum_value_or_default()),
        // The client's own timer: the caller gave up at its deadline.
        Err(ttrpc::Error::Others(m)) if m.contains("deadline") => "DEADLINE_EXCEEDED".into(),
        Err(e) => format!("TRANSPORT: {e}"),
    }
}

fn message<T>(r: &ttrpc::Result<T>) -> String {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => s.message.clone(),
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    }
}

fn exec_spec(args: &[&str]) -> MessageField<Any> {
    let spec = serde_json::json!({
        "args": args,
        "cwd": "/",
        "env": ["PATH=/bin"],
        "user": {"uid": 0, "gid": 0},
    });
    any(
        "types.containerd.io/opencontainers/runtime-spec/1/Process",
        serde_json::to_vec(&spec).unwrap(),
    )
}

fn mount(kind: &str, source: &str, options: &[&str]) -> api::Mount {
    let mut m = api::Mount::new();
    m.type_ = kind.into();
    m.source = source.into();
    m.options = options.iter().map(|s| s.to_string()).collect();
    m
}

/// The shim's open fds, besides the shared sealed runtime copy (see the common helper).
fn shim_fds(shim: &ShimProc) -> usize {
    common::fd_count_besides_runtime_copy(shim.pid())
}

/// The client, the shim, the reference container and the tally of hostile requests.
struct Harness {
    client: TaskClient,
    shim: ShimProc,
    good: String,
    good_pid: u32,
    tally: BTreeMap<String, usize>,
    failures: Vec<String>,
    requests: usize,
}

impl Harness {
    /// Records one hostile request's outcome (must be one of `allowed`), then checks the shim
    /// is unharmed.
    async fn expect(&mut self, what: &str, got: String, msg: String, allowed: &[Code]) {
        self.requests += 1;
        *self.tally.entry(got.clone()).or_default() += 1;
        let ok = allowed.iter().any(|c| format!("{c:?}") == got);
        if !ok {
            self.failures.push(format!(
                "{what}: got {got} ({msg:?}), expected one of {allowed:?}"
            ));
        }
        self.healthy(what).await;
    }

    /// The shim answers Connect, the reference container is RUNNING with its pid, no panic.
    async fn healthy(&mut self, after: &str) {
        assert!(
            self.shim.alive(),
            "shim died after {after}\n{}",
            self.shim.stderr_text()
        );
        let c = self
            .client
            .connect(ctx(), &api::ConnectRequest::new())
            .await;
        assert!(
            c.as_ref().is_ok_and(|r| r.shim_pid == self.shim.pid()),
            "Connect failed after {after}: {}\n{}",
            outcome(&c),
            self.shim.stderr_text()
        );
        let mut sr = api::StateRequest::new();
        sr.id = self.good.clone();
        let st = self
            .client
            .state(ctx(), &sr)
            .await
            .unwrap_or_else(|e| panic!("State of the reference container after {after}: {e}"));
        assert_eq!(
            (st.status.enum_value_or_default(), st.pid),
            (
                containerd_shim_protos::types::task::Status::RUNNING,
                self.good_pid
            ),
            "reference container disturbed by {after}"
        );
        let err = self.shim.stderr_text();
        assert!(
            !err.contains("panicked"),
            "the shim panicked after {after}:\n{err}"
        );
    }
}

macro_rules! hostile {
    ($h:expr, $what:expr, $call:expr, [$($code:ident),+ $(,)?]) => {{
        let r = $call.await;
        let (got, msg) = (outcome(&r), message(&r));
        $h.expect(&$what, got, msg, &[$(Code::$code),+]).await;
    }};
}

// ---------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------

/// Sends raw bytes on a fresh connection; returns the first response frame's status code
/// name if one arrives within `wait` ("closed" if the shim hung up, "none" if it said nothing).
fn raw_exchange(socket: &Path, bytes: &[u8], wait: Duration) -> String {
    let mut s = UnixStream::connect(socket).expect("connect raw");
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    if s.write_all(bytes).is_err() {
        return "closed".into();
    }
    s.set_read_timeout(Some(wait)).ok();
    let mut head = [0u8; 10];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return "closed".into(),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return "none".into()
        }
        Err(_) => return "closed".into(),
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut body = vec![0u8; len.min(8 << 20)];
    if s.read_exact(&mut body).is_err() {
        return "truncated-response".into();
    }
    match ttrpc::Response::parse_from_bytes(&body) {
        Ok(r) => match r.status.as_ref() {
            Some(st) => {
                let code = format!("{:?}", st.code.enum_value_or_default());
                if code != "OK" {
                    LAST_RAW_MESSAGE.with(|m| *m.borrow_mut() = st.message.clone());
                }
                code
            }
            None => "OK".into(),
        },
        Err(_) => "unparsable-response".into(),
    }
}

thread_local! {
    /// Message of the last error status `raw_exchange` received (for diagnostics).
    static LAST_RAW_MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

fn last_raw_message() -> String {
    LAST_RAW_MESSAGE.with(|m| std::mem::take(&mut *m.borrow_mut()))
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn hostile_requests_get_clear_errors_and_harm_nothing() {
    if !enabled("hostile_requests_get_clear_errors_and_harm_nothing") {
        return;
    }
    let sb = Sandbox::new("hostile");
    let events_path = sb.dir.join("events.sock");
    let sink = start_sink(&events_path);
    let good = "good";
    let good_bundle = sb.bundle(good, &["sleep", "1000"]);
    let shim = ShimProc::spawn(&sb, good, &good_bundle, &events_path);
    let client = TaskClient::new(
        ttrpc::r#async::Client::connect(&format!("unix://{}", shim.socket.display()))
            .await
            .expect("connect to the shim"),
    );
    let created = client
        .create(ctx(), &create_req(good, &good_bundle))
        .await
        .unwrap_or_else(|e| panic!("create reference container: {e}\n{}", shim.stderr_text()));
    let mut start = api::StartRequest::new();
    start.id = good.into();
    client.start(ctx(), &start).await.expect("start reference");
    let mut h = Harness {
        client,
        shim,
        good: good.into(),
        good_pid: created.pid,
        tally: BTreeMap::new(),
        failures: Vec::new(),
        requests: 0,
    };
    h.healthy("setup").await;
    let fds_before = shim_fds(&h.shim);

    // --- IDs: '/', '..', NUL, control characters, empty, huge -------------------------------
    let huge = "x".repeat(1 << 20);
    let bad_ids: Vec<String> = [
        "",
        "a/b",
        "../x",
        "..",
        ".",
        "/etc/passwd",
        "a\0b",
        "a\nb",
        "-a",
        "a b",
        "é",
        "x/../..",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["y".repeat(77), huge.clone()])
    .collect();
    let spare_bundle = sb.bundle("spare", &["true"]);
    for id in &bad_ids {
        let short: String = id.chars().take(16).collect();
        let tag = |rpc: &str| format!("{rpc}(id={short:?}, len {})", id.len());
        hostile!(
            h,
            tag("State"),
            h.client.state(ctx(), &state_req(id, "")),
            [INVALID_ARGUMENT]
        );
        hostile!(
            h,
            tag("Create"),
            h.client.create(ctx(), &create_req(id, &spare_bundle)),
            [INVALID_ARGUMENT]
        );
        let mut r = api::StartRequest::new();
        r.id = id.clone();
        hostile!(
            h,
            tag("Start"),
            h.client.start(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::DeleteRequest::new();
        r.id = id.clone();
        hostile!(
            h,
            tag("Delete"),
            h.client.delete(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::KillRequest::new();
        r.id = id.clone();
        r.signal = 9;
        hostile!(h, tag("Kill"), h.client.kill(ctx(), &r), [INVALID_ARGUMENT]);
        let mut r = api::ExecProcessRequest::new();
        r.id = id.clone();
        r.exec_id = "e1".into();
        r.spec = exec_spec(&["true"]);
        hostile!(h, tag("Exec"), h.client.exec(ctx(), &r), [INVALID_ARGUMENT]);
        let mut r = api::PidsRequest::new();
        r.id = id.clone();
        hostile!(h, tag("Pids"), h.client.pids(ctx(), &r), [INVALID_ARGUMENT]);
        let mut r = api::PauseRequest::new();
        r.id = id.clone();
        hostile!(
            h,
            tag("Pause"),
            h.client.pause(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::ResumeRequest::new();
        r.id = id.clone();
        hostile!(
            h,
            tag("Resume"),
            h.client.resume(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::ResizePtyRequest::new();
        r.id = id.clone();
        r.width = 80;
        r.height = 24;
        hostile!(
            h,
            tag("ResizePty"),
            h.client.resize_pty(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::CloseIORequest::new();
        r.id = id.clone();
        r.stdin = true;
        hostile!(
            h,
            tag("CloseIO"),
            h.client.close_io(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::UpdateTaskRequest::new();
        r.id = id.clone();
        r.resources = any("x", b"{}".to_vec());
        hostile!(
            h,
            tag("Update"),
            h.client.update(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::WaitRequest::new();
        r.id = id.clone();
        hostile!(h, tag("Wait"), h.client.wait(ctx(), &r), [INVALID_ARGUMENT]);
        let mut r = api::StatsRequest::new();
        r.id = id.clone();
        hostile!(
            h,
            tag("Stats"),
            h.client.stats(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::CheckpointTaskRequest::new();
        r.id = id.clone();
        r.path = "/tmp/ckpt".into();
        hostile!(
            h,
            tag("Checkpoint"),
            h.client.checkpoint(ctx(), &r),
            [INVALID_ARGUMENT]
        );
        let mut r = api::ConnectRequest::new();
        r.id = id.clone();
        hostile!(h, tag("Connect"), h.client.connect(ctx(), &r), [OK]);
        // Bad exec IDs on the real container ("" means the init, so it is not hostile).
        if !id.is_empty() {
            hostile!(
                h,
                format!("State(exec_id={short:?})"),
                h.client.state(ctx(), &state_req(good, id)),
                [INVALID_ARGUMENT]
            );
            let mut r = api::ExecProcessRequest::new();
            r.id = good.into();
            r.exec_id = id.clone();
            r.spec = exec_spec(&["true"]);
            hostile!(
                h,
                format!("Exec(exec_id={short:?})"),
                h.client.exec(ctx(), &r),
                [INVALID_ARGUMENT]
            );
            let mut r = api::KillRequest::new();
            r.id = good.into();
            r.exec_id = id.clone();
            r.signal = 9;
            hostile!(
                h,
                format!("Kill(exec_id={short:?})"),
                h.client.kill(ctx(), &r),
                [INVALID_ARGUMENT]
            );
        }
    }
    // Nothing was created in the spare bundle by any of those.
    assert!(
        !spare_bundle
            .join(tender::service::BUNDLE_OPTIONS_FILE)
            .exists(),
        "a Create with a bad id touched the bundle"
    );

    // --- Unknown container and exec IDs -----------------------------------------------------
    for (id, exec_id) in [("ghost", ""), (good, "nope"), (good, "e-404")] {
        let tag = |rpc: &str| format!("{rpc}({id}/{exec_id})");
        hostile!(
            h,
            tag("State"),
            h.client.state(ctx(), &state_req(id, exec_id)),
            [NOT_FOUND]
        );
        let mut r = api::StartRequest::new();
        (r.id, r.exec_id) = (id.into(), exec_id.into());
        hostile!(h, tag("Start"), h.client.start(ctx(), &r), [NOT_FOUND]);
        let mut r = api::DeleteRequest::new();
        (r.id, r.exec_id) = (id.into(), exec_id.into());
        hostile!(h, tag("Delete"), h.client.delete(ctx(), &r), [NOT_FOUND]);
        let mut r = api::KillRequest::new();
        (r.id, r.exec_id, r.signal) = (id.into(), exec_id.into(), 15);
        hostile!(h, tag("Kill"), h.client.kill(ctx(), &r), [NOT_FOUND]);
        let mut r = api::WaitRequest::new();
        (r.id, r.exec_id) = (id.into(), exec_id.into());
        hostile!(h, tag("Wait"), h.client.wait(ctx(), &r), [NOT_FOUND]);
        let mut r = api::ResizePtyRequest::new();
        (r.id, r.exec_id, r.width, r.height) = (id.into(), exec_id.into(), 80, 24);
        hostile!(
            h,
            tag("ResizePty"),
            h.client.resize_pty(ctx(), &r),
            [NOT_FOUND]
        );
        let mut r = api::CloseIORequest::new();
        (r.id, r.exec_id, r.stdin) = (id.into(), exec_id.into(), true);
        hostile!(h, tag("CloseIO"), h.client.close_io(ctx(), &r), [NOT_FOUND]);
    }

    // --- Signals out of range ---------------------------------------------------------------
    for sig in [0u32, 65, 128, 4096, u32::MAX] {
        for exec_id in ["", "nope"] {
            let mut r = api::KillRequest::new();
            (r.id, r.exec_id, r.signal) = (good.into(), exec_id.into(), sig);
            hostile!(
                h,
                format!("Kill(signal={sig}, exec={exec_id:?})"),
                h.client.kill(ctx(), &r),
                [INVALID_ARGUMENT]
            );
        }
    }

    // --- Terminal sizes: out of range, or no terminal at all (a no-op, as in containerd's
    // runc shim: see e2e_parity) -----------------------------------------------------------
    for (w, hgt, allowed) in [
        (u32::MAX, 24, Code::INVALID_ARGUMENT),
        (80, u32::MAX, Code::INVALID_ARGUMENT),
        (65536, 1, Code::INVALID_ARGUMENT),
        (0, 0, Code::OK),
        (80, 24, Code::OK),
    ] {
        let mut r = api::ResizePtyRequest::new();
        (r.id, r.width, r.height) = (good.into(), w, hgt);
        let res = h.client.resize_pty(ctx(), &r).await;
        let (got, msg) = (outcome(&res), message(&res));
        h.expect(&format!("ResizePty({w}x{hgt})"), got, msg, &[allowed])
            .await;
    }

    // --- Bad Exec requests on the real container --------------------------------------------
    let mut r = api::ExecProcessRequest::new();
    (r.id, r.exec_id) = (good.into(), "nospec".into());
    hostile!(
        h,
        "Exec(no spec)",
        h.client.exec(ctx(), &r),
        [INVALID_ARGUMENT]
    );
    for (what, value) in [
        ("not JSON", b"\xff\xfe not json".to_vec()),
        ("JSON array", b"[1,2,3]".to_vec()),
        ("JSON null", b"null".to_vec()),
        ("empty", Vec::new()),
    ] {
        let mut r = api::ExecProcessRequest::new();
        (r.id, r.exec_id) = (good.into(), "badspec".into());
        r.spec = any("x", value);
        hostile!(
            h,
            format!("Exec(spec {what})"),
            h.client.exec(ctx(), &r),
            [INVALID_ARGUMENT]
        );
    }
    for (what, stdin, stdout) in [
        ("tcp stdout", "", "tcp://127.0.0.1:1"),
        ("relative stdin", "relative/fifo", ""),
        ("NUL stdout", "", "/tmp/a\0b"),
        ("bad escape", "", "file:///tmp/%zz"),
        ("file stdin", "file:///etc/passwd", ""),
    ] {
        let mut r = api::ExecProcessRequest::new();
        (r.id, r.exec_id) = (good.into(), "badio".into());
        r.spec = exec_spec(&["true"]);
        (r.stdin, r.stdout) = (stdin.into(), stdout.into());
        let res = h.client.exec(ctx(), &r).await;
        let (got, msg) = (outcome(&res), message(&res));
        if got == "OK" {
            // Accepted at Exec; then Start must refuse it cleanly and Delete must clean up.
            let mut s = api::StartRequest::new();
            (s.id, s.exec_id) = (good.into(), "badio".into());
            let started = h.client.start(ctx(), &s).await;
            let mut d = api::DeleteRequest::new();
            (d.id, d.exec_id) = (good.into(), "badio".into());
            let _ = h.client.delete(ctx(), &d).await;
            h.expect(
                &format!("Exec+Start({what})"),
                outcome(&started),
                message(&started),
                &[Code::INVALID_ARGUMENT],
            )
            .await;
        } else {
            h.expect(
                &format!("Exec({what})"),
                got,
                msg,
                &[Code::INVALID_ARGUMENT],
            )
            .await;
        }
    }
    // A duplicate exec id, and a process spec the runtime refuses.
    let mut r = api::ExecProcessRequest::new();
    (r.id, r.exec_id) = (good.into(), "dup".into());
    r.spec = exec_spec(&["sleep", "1"]);
    hostile!(h, "Exec(dup #1)", h.client.exec(ctx(), &r), [OK]);
    hostile!(
        h,
        "Exec(dup #2)",
        h.client.exec(ctx(), &r),
        [ALREADY_EXISTS]
    );
    let mut d = api::DeleteRequest::new();
    (d.id, d.exec_id) = (good.into(), "dup".into());
    hostile!(
        h,
        "Delete(never started exec)",
        h.client.delete(ctx(), &d),
        [OK]
    );
    // A Delete and a new Exec under the same id, back to back on one connection, then Start:
    // the new exec must not lose its files to the old one's cleanup (done after the reply).
    let mut r = api::ExecProcessRequest::new();
    (r.id, r.exec_id) = (good.into(), "again".into());
    r.spec = exec_spec(&["true"]);
    let mut s = api::StartRequest::new();
    (s.id, s.exec_id) = (good.into(), "again".into());
    let mut w = api::WaitRequest::new();
    (w.id, w.exec_id) = (good.into(), "again".into());
    let mut d = api::DeleteRequest::new();
    (d.id, d.exec_id) = (good.into(), "again".into());
    hostile!(h, "Exec(again #1)", h.client.exec(ctx(), &r), [OK]);
    hostile!(h, "Start(again #1)", h.client.start(ctx(), &s), [OK]);
    hostile!(h, "Wait(again #1)", h.client.wait(ctx(), &w), [OK]);
    let (deleted, added) = tokio::join!(h.client.delete(ctx(), &d), h.client.exec(ctx(), &r));
    let (got, msg) = (outcome(&deleted), message(&deleted));
    h.expect("Delete(again #1, pipelined)", got, msg, &[Code::OK])
        .await;
    eprintln!(
        "PIPELINED: delete={} exec={}",
        outcome(&deleted),
        outcome(&added)
    );
    if outcome(&added) == "ALREADY_EXISTS" {
        // The shim took the Exec first: legal, just not the case under test. Plain reuse.
        hostile!(h, "Exec(again #2)", h.client.exec(ctx(), &r), [OK]);
    } else {
        let (got, msg) = (outcome(&added), message(&added));
        h.expect("Exec(again #2, pipelined)", got, msg, &[Code::OK])
            .await;
    }
    hostile!(h, "Start(again #2)", h.client.start(ctx(), &s), [OK]);
    let waited = h.client.wait(ctx(), &w).await;
    if let Ok(resp) = &waited {
        assert_eq!(resp.exit_status, 0, "the second `again` exec ran `true`");
    }
    let (got, msg) = (outcome(&waited), message(&waited));
    h.expect("Wait(again #2)", got, msg, &[Code::OK]).await;
    hostile!(h, "Delete(again #2)", h.client.delete(ctx(), &d), [OK]);
    let mut r = api::ExecProcessRequest::new();
    (r.id, r.exec_id) = (good.into(), "noargs".into());
    r.spec = any("x", br#"{"args":[],"cwd":"/"}"#.to_vec());
    let _ = h.client.exec(ctx(), &r).await;
    let mut s = api::StartRequest::new();
    (s.id, s.exec_id) = (good.into(), "noargs".into());
    hostile!(
        h,
        "Start(exec without args)",
        h.client.start(ctx(), &s),
        [UNKNOWN, INVALID_ARGUMENT, FAILED_PRECONDITION]
    );
    let mut d = api::DeleteRequest::new();
    (d.id, d.exec_id) = (good.into(), "noargs".into());
    hostile!(h, "Delete(failed exec)", h.client.delete(ctx(), &d), [OK]);
    // An exec whose binary does not exist (a broken exec probe), with a Wait sent before the
    // Start as containerd's clients do: the failed Start must answer that Wait, not leave it
    // pending for good.
    let mut r = api::ExecProcessRequest::new();
    (r.id, r.exec_id) = (good.into(), "missing".into());
    r.spec = exec_spec(&["/no/such/binary"]);
    hostile!(h, "Exec(missing binary)", h.client.exec(ctx(), &r), [OK]);
    let mut s = api::StartRequest::new();
    (s.id, s.exec_id) = (good.into(), "missing".into());
    let mut w = api::WaitRequest::new();
    (w.id, w.exec_id) = (good.into(), "missing".into());
    let (waited, started) =
        tokio::join!(h.client.wait(ctx_ms(20_000), &w), h.client.start(ctx(), &s));
    let (got, msg) = (outcome(&started), message(&started));
    h.expect(
        "Start(missing binary)",
        got,
        msg,
        &[Code::UNKNOWN, Code::INVALID_ARGUMENT],
    )
    .await;
    match &waited {
        Ok(resp) => assert_eq!(resp.exit_status, 255, "Wait after a failed Start: {resp:?}"),
        Err(e) => panic!("Wait pending across a failed Start was not answered: {e:?}"),
    }
    hostile!(
        h,
        "Start(missing binary, again)",
        h.client.start(ctx(), &s),
        [FAILED_PRECONDITION]
    );
    let mut d = api::DeleteRequest::new();
    (d.id, d.exec_id) = (good.into(), "missing".into());
    hostile!(
        h,
        "Delete(exec that never ran)",
        h.client.delete(ctx(), &d),
        [OK]
    );

    // --- Illegal moves on the running container ---------------------------------------------
    let mut r = api::DeleteRequest::new();
    r.id = good.into();
    hostile!(
        h,
        "Delete(running)",
        h.client.delete(ctx(), &r),
        [FAILED_PRECONDITION]
    );
    let mut r = api::StartRequest::new();
    r.id = good.into();
    hostile!(
        h,
        "Start(running)",
        h.client.start(ctx(), &r),
        [FAILED_PRECONDITION]
    );
    let mut r = api::ResumeRequest::new();
    r.id = good.into();
    hostile!(
        h,
        "Resume(not paused)",
        h.client.resume(ctx(), &r),
        [FAILED_PRECONDITION]
    );
    hostile!(
        h,
        "Create(existing id)",
        h.client.create(ctx(), &create_req(good, &spare_bundle)),
        [ALREADY_EXISTS]
    );
    for (what, res) in [
        ("not JSON", any("x", b"{{{".to_vec())),
        ("absent", MessageField::none()),
    ] {
        let mut r = api::UpdateTaskRequest::new();
        r.id = good.into();
        r.resources = res;
        hostile!(
            h,
            format!("Update(resources {what})"),
            h.client.update(ctx(), &r),
            [INVALID_ARGUMENT]
        );
    }
    let mut r = api::CheckpointTaskRequest::new();
    r.id = good.into();
    r.path = sb.dir.join("ckpt").display().to_string();
    r.options = any("bogus.CheckpointOptions", vec![1, 2, 3]);
    hostile!(
        h,
        "Checkpoint(bogus options)",
        h.client.checkpoint(ctx(), &r),
        [INVALID_ARGUMENT]
    );

    // --- Create: bad bundles, bad options, rootfs mount failures ----------------------------
    let c2 = "c2";
    let c2_bundle = sb.bundle(c2, &["true"]);
    let c2_rootfs = c2_bundle.join("rootfs");
    for (what, bundle) in [
        ("empty", ""),
        ("relative", "relative/bundle"),
        ("missing", "/nonexistent-tender-bundle"),
        ("a file", "/etc/hostname"),
        ("NUL", "/tmp\0/x"),
    ] {
        let mut r = create_req(c2, Path::new("/"));
        r.bundle = bundle.into();
        hostile!(
            h,
            format!("Create(bundle {what})"),
            h.client.create(ctx(), &r),
            [INVALID_ARGUMENT]
        );
    }
    let mut bad_root = RuncOptions::new();
    bad_root.root = "relative/root".into();
    let mut missing_bin = RuncOptions::new();
    missing_bin.binary_name = "/nonexistent/runc-missing".into();
    let option_cases: Vec<(&str, MessageField<Any>, Code, &str)> = vec![
        (
            "unknown type",
            any("bogus.Options", vec![1]),
            Code::INVALID_ARGUMENT,
            "bogus.Options",
        ),
        (
            "garbage runc options",
            any("containerd.runc.v1.Options", vec![0xff; 7]),
            Code::INVALID_ARGUMENT,
            "containerd.runc.v1.Options",
        ),
        (
            "relative Root",
            any(
                "containerd.runc.v1.Options",
                bad_root.write_to_bytes().unwrap(),
            ),
            Code::INVALID_ARGUMENT,
            "Root",
        ),
        (
            "missing runtime binary",
            any(
                "containerd.runc.v1.Options",
                missing_bin.write_to_bytes().unwrap(),
            ),
            Code::FAILED_PRECONDITION,
            "/nonexistent/runc-missing",
        ),
        (
            "bad TOML",
            any("runtimeoptions.v1.Options", {
                let mut v = vec![0x1a, 9];
                v.extend_from_slice(b"Bogus = 1");
                v
            }),
            Code::INVALID_ARGUMENT,
            "Bogus",
        ),
    ];
    for (what, opts, code, needle) in option_cases {
        let mut r = create_req(c2, &c2_bundle);
        r.options = opts;
        r.rootfs = vec![mount("tmpfs", "tmpfs", &["size=1m"])];
        let res = h.client.create(ctx(), &r).await;
        let (got, msg) = (outcome(&res), message(&res));
        if !msg.contains(needle) {
            h.failures.push(format!(
                "Create({what}): message {msg:?} does not name {needle:?}"
            ));
        }
        h.expect(&format!("Create({what})"), got, msg, &[code])
            .await;
        assert!(
            sb.mounts_under(&c2_rootfs).is_empty(),
            "mount left after Create({what})"
        );
    }
    let mount_cases: Vec<(&str, Vec<api::Mount>, &str)> = vec![
        (
            "overlay with a missing lowerdir",
            vec![mount(
                "overlay",
                "overlay",
                &[
                    "lowerdir=/nonexistent-tender-lower",
                    "upperdir=/nonexistent-u",
                    "workdir=/nonexistent-w",
                ],
            )],
            "rootfs",
        ),
        (
            "second mount fails after the first",
            vec![
                mount("tmpfs", "tmpfs", &["size=1m"]),
                mount("bind", "/nonexistent-tender-src", &["rbind", "ro"]),
            ],
            "/nonexistent-tender-src",
        ),
        (
            "unknown filesystem",
            vec![mount("tenderfs", "none", &[])],
            "tenderfs",
        ),
        (
            "NUL in an option",
            vec![mount("tmpfs", "tmpfs", &["size=1m\0x"])],
            "NUL",
        ),
        (
            "malformed uidmap",
            vec![mount(
                "tmpfs",
                "tmpfs",
                &["uidmap=0:100000:-1", "gidmap=0:100000:65536"],
            )],
            "uidmap",
        ),
        (
            "uidmap without gidmap",
            vec![mount("tmpfs", "tmpfs", &["uidmap=0:100000:65536"])],
            "gidmap",
        ),
        (
            "overlapping mappings",
            vec![mount(
                "tmpfs",
                "tmpfs",
                &["uidmap=0:100000:10,5:200000:10", "gidmap=0:1:1"],
            )],
            "overlapping",
        ),
        (
            "idmapped overlay over a missing layer",
            vec![mount(
                "overlay",
                "overlay",
                &[
                    "uidmap=0:100000:65536",
                    "gidmap=0:100000:65536",
                    "lowerdir=/nonexistent-tender-idmapped-lower",
                    "upperdir=/nonexistent-u",
                    "workdir=/nonexistent-w",
                ],
            )],
            "/nonexistent-tender-idmapped-lower",
        ),
    ];
    for (what, mounts, needle) in mount_cases {
        let mut r = create_req(c2, &c2_bundle);
        r.rootfs = mounts;
        let res = h.client.create(ctx(), &r).await;
        let (got, msg) = (outcome(&res), message(&res));
        if !msg.contains(needle) {
            h.failures.push(format!(
                "Create({what}): message {msg:?} does not name {needle:?}"
            ));
        }
        h.expect(
            &format!("Create({what})"),
            got,
            msg,
            &[Code::UNKNOWN, Code::INVALID_ARGUMENT],
        )
        .await;
        assert!(
            sb.mounts_under(&c2_rootfs).is_empty(),
            "mounts left after Create({what}): {:?}",
            sb.mounts_under(&c2_rootfs)
        );
        assert!(
            !c2_rootfs.with_file_name("rootfs.idmapped").exists(),
            "idmapped scratch dir left after Create({what})"
        );
    }
    // The rootfs mounted fine but stdio is refused: the mount must be undone.
    let mut r = create_req(c2, &c2_bundle);
    r.rootfs = vec![mount("tmpfs", "tmpfs", &["size=1m"])];
    r.stdout = "tcp://127.0.0.1:1".into();
    hostile!(
        h,
        "Create(mounted, then bad stdio)",
        h.client.create(ctx(), &r),
        [INVALID_ARGUMENT]
    );
    assert!(
        sb.mounts_under(&c2_rootfs).is_empty(),
        "mount left after a refused stdio"
    );
    hostile!(
        h,
        "State(c2 after failed creates)",
        h.client.state(ctx(), &state_req(c2, "")),
        [NOT_FOUND]
    );

    // --- Callers that give up: deadlines shorter than the work ------------------------------
    // Wait on a running process with a 5 ms deadline.
    let mut r = api::WaitRequest::new();
    r.id = good.into();
    hostile!(
        h,
        "Wait(5 ms deadline)",
        h.client.wait(ctx_ms(5), &r),
        [DEADLINE_EXCEEDED]
    );
    // Create with a 1 ms deadline: the shim must end up consistent — the container either
    // exists (and can be deleted) or is gone without leftovers.
    let c3 = "c3";
    let c3_bundle = sb.bundle(c3, &["sleep", "1000"]);
    let res = h
        .client
        .create(ctx_ms(1), &create_req(c3, &c3_bundle))
        .await;
    let first = outcome(&res);
    h.expect(
        "Create(1 ms deadline)",
        first.clone(),
        message(&res),
        &[Code::DEADLINE_EXCEEDED, Code::OK],
    )
    .await;
    let settled = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = h.client.state(ctx(), &state_req(c3, "")).await;
            let o = outcome(&st);
            if o == "OK" || (o == "NOT_FOUND" && !c3_bundle.join("init.pid").exists()) {
                break o;
            }
            if Instant::now() > deadline {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Whatever happened, a retried Create must not be refused forever and Delete must clean up.
    let retry = h.client.create(ctx(), &create_req(c3, &c3_bundle)).await;
    let retried = outcome(&retry);
    if !matches!(retried.as_str(), "OK" | "ALREADY_EXISTS") {
        h.failures.push(format!(
            "Create(c3) retried after a 1 ms deadline: {retried} {:?}",
            message(&retry)
        ));
    }
    let mut d = api::DeleteRequest::new();
    d.id = c3.into();
    let del = h.client.delete(ctx(), &d).await;
    if outcome(&del) != "OK" {
        h.failures.push(format!(
            "Delete(c3) after a cancelled Create (state was {settled}, retry {retried}): {} {:?}",
            outcome(&del),
            message(&del)
        ));
    }
    // Start with a 1 ms deadline: the container must still end up running (or refusable)
    // and be killable and deletable.
    let c4 = "c4";
    let c4_bundle = sb.bundle(c4, &["sleep", "1000"]);
    h.client
        .create(ctx(), &create_req(c4, &c4_bundle))
        .await
        .expect("create c4");
    let mut s = api::StartRequest::new();
    s.id = c4.into();
    let res = h.client.start(ctx_ms(1), &s).await;
    h.expect(
        "Start(1 ms deadline)",
        outcome(&res),
        message(&res),
        &[Code::DEADLINE_EXCEEDED, Code::OK],
    )
    .await;
    let c4_state = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = h
                .client
                .state(ctx(), &state_req(c4, ""))
                .await
                .expect("state c4");
            let s = st.status.enum_value_or_default();
            if s == containerd_shim_protos::types::task::Status::RUNNING
                || Instant::now() > deadline
            {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if c4_state != containerd_shim_protos::types::task::Status::RUNNING {
        h.failures.push(format!(
            "c4 stuck in {c4_state:?} after a Start whose caller gave up"
        ));
    }
    let mut k = api::KillRequest::new();
    (k.id, k.signal) = (c4.into(), 9);
    let _ = h.client.kill(ctx(), &k).await;
    let mut w = api::WaitRequest::new();
    w.id = c4.into();
    let _ = h.client.wait(ctx_ms(5000), &w).await;
    let mut d = api::DeleteRequest::new();
    d.id = c4.into();
    let res = h.client.delete(ctx_ms(1), &d).await;
    h.expect(
        "Delete(1 ms deadline)",
        outcome(&res),
        message(&res),
        &[Code::DEADLINE_EXCEEDED, Code::OK],
    )
    .await;
    let gone = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = h.client.delete(ctx(), &d).await;
            let o = outcome(&r);
            if o == "OK" || o == "NOT_FOUND" || Instant::now() > deadline {
                break o;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if !matches!(gone.as_str(), "OK" | "NOT_FOUND") {
        h.failures.push(format!(
            "c4 not deletable after a Delete whose caller gave up: {gone}"
        ));
    }
    for id in [c3, c4] {
        if sb.runc_root().join(id).exists() {
            h.failures
                .push(format!("runc still knows {id} after it was deleted"));
        }
    }

    // --- Raw frames --------------------------------------------------------------------------
    let socket = h.shim.socket.clone();
    let connect = request_bytes(TASK_V3, "Connect", &[], 0);
    let mut resize_neg = Vec::new();
    resize_neg.extend_from_slice(&[0x0a, 4]);
    resize_neg.extend_from_slice(good.as_bytes());
    // width = 3, height = 4 as 10-byte varints of -1 (what a negative int would encode as).
    for field in [3u8, 4] {
        resize_neg.push(field << 3);
        resize_neg.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }
    let raw_cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "5-byte header, then hang-up",
            vec![0, 0, 0, 9, 0],
            &["none", "closed"],
        ),
        (
            "header promising 100 bytes, 10 sent",
            {
                let mut f = frame(100, 1, MSG_REQUEST, 0, &[]);
                f.extend_from_slice(&[7; 10]);
                f
            },
            &["none", "closed"],
        ),
        (
            "length 0xffffffff",
            frame(u32::MAX, 1, MSG_REQUEST, 0, &[]),
            &["none", "closed", "INVALID_ARGUMENT"],
        ),
        (
            "oversized 5 MiB frame",
            frame(5 << 20, 1, MSG_REQUEST, 0, &vec![0x0a; 5 << 20]),
            &["INVALID_ARGUMENT", "closed", "RESOURCE_EXHAUSTED"],
        ),
        (
            "payload not a Request",
            frame(20, 1, MSG_REQUEST, 0, &[0xff; 20]),
            &["INVALID_ARGUMENT", "closed"],
        ),
        (
            "unknown service",
            {
                let p = request_bytes("evil.Service", "State", &[], 0);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["INVALID_ARGUMENT", "UNIMPLEMENTED", "NOT_FOUND"],
        ),
        (
            "unknown method",
            {
                let p = request_bytes(TASK_V3, "Format", &[], 0);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["UNIMPLEMENTED", "NOT_FOUND", "INVALID_ARGUMENT"],
        ),
        (
            "State with a garbage payload",
            {
                let p = request_bytes(TASK_V3, "State", &[0xff, 0xff, 0xff, 0xff], 0);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["INVALID_ARGUMENT", "UNKNOWN"],
        ),
        (
            "State with a truncated string",
            {
                let p = request_bytes(TASK_V3, "State", &[0x0a, 0x7f, b'a'], 0);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["INVALID_ARGUMENT", "UNKNOWN"],
        ),
        (
            "ResizePty with negative sizes",
            {
                let p = request_bytes(TASK_V3, "ResizePty", &resize_neg, 0);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["INVALID_ARGUMENT", "UNKNOWN"],
        ),
        (
            "Connect with timeout -1",
            {
                let p = request_bytes(TASK_V3, "Connect", &[], -1);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["OK"],
        ),
        (
            "Connect with timeout i64::MIN",
            {
                let p = request_bytes(TASK_V3, "Connect", &[], i64::MIN);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["OK"],
        ),
        (
            "Connect with timeout i64::MAX",
            {
                let p = request_bytes(TASK_V3, "Connect", &[], i64::MAX);
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["OK"],
        ),
        (
            "a response frame sent to the server",
            frame(connect.len() as u32, 1, 2, 0, &connect),
            &["none", "closed"],
        ),
        (
            "unknown frame type 0x7f",
            frame(connect.len() as u32, 1, 0x7f, 0, &connect),
            &["none", "closed"],
        ),
        (
            "all flags set",
            frame(connect.len() as u32, 1, MSG_REQUEST, 0xff, &connect),
            &["OK", "none", "closed", "INVALID_ARGUMENT"],
        ),
        (
            "stream id 0",
            frame(connect.len() as u32, 0, MSG_REQUEST, 0, &connect),
            &["OK", "none", "closed", "INVALID_ARGUMENT"],
        ),
        (
            "even stream id",
            frame(connect.len() as u32, 2, MSG_REQUEST, 0, &connect),
            &["OK", "none", "closed", "INVALID_ARGUMENT"],
        ),
        (
            "10 000 metadata entries",
            {
                let mut r = ttrpc::Request::new();
                r.service = TASK_V3.into();
                r.method = "Connect".into();
                for i in 0..10_000 {
                    let mut kv = ttrpc::proto::KeyValue::new();
                    kv.key = format!("k{}", i % 7);
                    kv.value = "v".repeat(32);
                    r.metadata.push(kv);
                }
                let p = r.write_to_bytes().unwrap();
                frame(p.len() as u32, 1, MSG_REQUEST, 0, &p)
            },
            &["OK"],
        ),
    ];
    let mut raw_checked = 0;
    let mut raw_count = 0;
    for (what, bytes, allowed) in raw_cases {
        // Where an answer is required, a slow runner gets time to give it.
        let patience = if allowed.contains(&"none") { 500 } else { 5000 };
        let got = raw_exchange(&socket, &bytes, Duration::from_millis(patience));
        raw_count += 1;
        raw_checked += 1;
        h.requests += 1;
        *h.tally.entry(format!("raw:{got}")).or_default() += 1;
        let msg = last_raw_message();
        if !allowed.contains(&got.as_str()) {
            h.failures.push(format!(
                "raw frame ({what}): got {got} ({msg:?}), expected one of {allowed:?}"
            ));
        }
        h.healthy(&format!("raw frame ({what})")).await;
    }
    // Two requests on one stream id at once: a Wait that blocks, then a State.
    {
        let mut wr = api::WaitRequest::new();
        wr.id = good.into();
        let w = request_bytes(TASK_V3, "Wait", &wr.write_to_bytes().unwrap(), 0);
        let s = request_bytes(
            TASK_V3,
            "State",
            &state_req(good, "").write_to_bytes().unwrap(),
            0,
        );
        let mut bytes = frame(w.len() as u32, 5, MSG_REQUEST, 0, &w);
        bytes.extend(frame(s.len() as u32, 5, MSG_REQUEST, 0, &s));
        let got = raw_exchange(&socket, &bytes, Duration::from_millis(500));
        h.requests += 1;
        raw_count += 1;
        raw_checked += 1;
        *h.tally.entry(format!("raw:{got}")).or_default() += 1;
        h.healthy("two requests on one stream id").await;
    }
    // Many half-open connections, then all gone.
    {
        let mut conns = Vec::new();
        for _ in 0..200 {
            let mut s = UnixStream::connect(&socket).expect("connect");
            let _ = s.write_all(&[0, 0, 0, 50, 0, 0]);
            conns.push(s);
        }
        h.healthy("200 half-open connections").await;
        drop(conns);
        raw_count += 200;
    }
    // Seeded random frames: random headers, random or mutated request payloads.
    let mut rng = Rng::new(0x007e_4de2_5eed);
    let methods = fuzz_checks::METHODS;
    let random_frames: usize = 400;
    for i in 0..random_frames {
        let bytes = match rng.below(4) {
            0 => {
                let n = rng.below(64);
                let payload = rng.bytes(n);
                frame(
                    rng.next() as u32 % 128,
                    rng.next() as u32,
                    rng.below(4) as u8,
                    rng.next() as u8,
                    &payload,
                )
            }
            _ => {
                let method = methods[rng.below(methods.len())];
                // Unknown containers only: random input must never hit the reference one.
                let mut payload = vec![0x0a, 5];
                payload.extend_from_slice(b"ghost");
                let extra = rng.below(48);
                payload.extend(rng.bytes(extra));
                if method == "Shutdown" || method == "Kill" {
                    continue;
                }
                let p = request_bytes(
                    TASK_V3,
                    method,
                    &payload,
                    rng.below(3) as i64 * 1_000_000_000,
                );
                let mut f = frame(
                    p.len() as u32,
                    (rng.below(1000) * 2 + 1) as u32,
                    MSG_REQUEST,
                    0,
                    &p,
                );
                // Sometimes corrupt a byte of the frame after the header.
                if rng.below(3) == 0 && f.len() > 10 {
                    let at = 10 + rng.below(f.len() - 10);
                    f[at] = rng.next() as u8;
                }
                f
            }
        };
        let _ = raw_exchange(&socket, &bytes, Duration::from_millis(20));
        raw_count += 1;
        if i % 50 == 0 {
            h.healthy(&format!("random frame #{i}")).await;
        }
    }
    h.healthy("random frames").await;

    // --- The shim's file descriptors are back where they were -------------------------------
    let fds_after = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = shim_fds(&h.shim);
            if n == fds_before || Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if fds_after != fds_before {
        h.failures.push(format!(
            "shim fds: {fds_before} before the hostile input, {fds_after} after"
        ));
    }

    // --- The reference container was never touched: its normal life still works ------------
    // (with one exec created and never started: its Wait must be answered at the Delete)
    let mut r = api::ExecProcessRequest::new();
    (r.id, r.exec_id) = (good.into(), "orphan".into());
    r.spec = exec_spec(&["true"]);
    h.client.exec(ctx(), &r).await.expect("exec orphan");
    let mut k = api::KillRequest::new();
    (k.id, k.signal) = (good.into(), 9);
    h.client.kill(ctx(), &k).await.expect("kill reference");
    let mut w = api::WaitRequest::new();
    w.id = good.into();
    let waited = h.client.wait(ctx(), &w).await.expect("wait reference");
    assert_eq!(waited.exit_status, 137);
    let mut ow = api::WaitRequest::new();
    (ow.id, ow.exec_id) = (good.into(), "orphan".into());
    let mut d = api::DeleteRequest::new();
    d.id = good.into();
    // The Delete goes out a moment after the Wait, so the Wait is surely pending by then.
    let (orphan_wait, deleted) = tokio::join!(h.client.wait(ctx_ms(20_000), &ow), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.client.delete(ctx(), &d).await
    });
    let deleted = deleted.expect("delete reference");
    assert_eq!(deleted.exit_status, 137);
    let orphan_wait =
        orphan_wait.expect("a Wait for a never-started exec is answered at the container's Delete");
    assert_eq!(orphan_wait.exit_status, 255);
    let _ = h.client.shutdown(ctx(), &api::ShutdownRequest::new()).await;
    let exit = h.shim.wait_exit(Duration::from_secs(15));
    let stderr = h.shim.stderr_text();
    assert!(!stderr.contains("panicked"), "shim panicked:\n{stderr}");

    let topics = sink.topics();
    let creates = topics.iter().filter(|t| *t == "/tasks/create").count();
    println!(
        "hostile input: {} requests ({} typed, {raw_count} raw/random frames): {:?}; {} \
         unexpected; shim fds {fds_before} -> {fds_after}; events seen {}, TaskCreate {creates}; \
         shim exit after Shutdown: {exit:?}",
        h.requests - raw_checked + raw_count,
        h.requests - raw_checked,
        h.tally,
        h.failures.len(),
        topics.len(),
    );
    assert!(
        h.failures.is_empty(),
        "{} hostile requests were handled wrongly:\n  {}",
        h.failures.len(),
        h.failures.join("\n  ")
    );
    assert!(
        exit.is_some(),
        "the shim did not exit after its last container was deleted and Shutdown was called \
         (a cancelled request left state behind?)"
    );
}

/// The `start` and `delete` actions with garbage: a clear message and a non-zero exit, never
/// a panic (101 in a debug build, SIGABRT with the release profile's panic=abort).
#[test]
fn start_and_delete_actions_reject_garbage_without_panicking() {
    if !enabled("start_and_delete_actions_reject_garbage_without_panicking") {
        return;
    }
    let sb = Sandbox::new("hostile");
    let mut rng = Rng::new(0x05ee_d0f5_7a27);
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..48 {
        let n = [1usize, 3, 17, 256, 4096, 65536][i % 6];
        inputs.push((format!("random #{i} ({n} bytes)"), rng.bytes(n)));
    }
    let any_bytes = |url: &str, value: &[u8]| {
        let mut a = Any::new();
        a.type_url = url.into();
        a.value = value.to_vec();
        a.write_to_bytes().unwrap()
    };
    inputs.push((
        "unknown options type".into(),
        any_bytes("evil.Options", b"x"),
    ));
    inputs.push((
        "garbage runc options".into(),
        any_bytes("containerd.runc.v1.Options", &[0xff; 9]),
    ));
    inputs.push((
        "runtimeoptions with a missing config file".into(),
        any_bytes("runtimeoptions.v1.Options", &{
            let mut v = vec![0x12, 22];
            v.extend_from_slice(b"/nonexistent/tender.tm");
            v
        }),
    ));
    inputs.push(("10 MiB + 1 of 0x0a".into(), vec![0x0a; (10 << 20) + 1]));
    inputs.push(("deeply nested length prefixes".into(), {
        let mut v = Vec::new();
        for _ in 0..2000 {
            v.extend_from_slice(&[0x42, 0x80, 0x80, 0x01]);
        }
        v
    }));
    let cwd = sb.dir.join("startcwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("config.json"), b"{}").unwrap();
    let sockets_before = std::fs::read_dir(tender::bootstrap::SOCKET_DIR)
        .map(|d| d.count())
        .unwrap_or(0);
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(SHIM)
            .args(args)
            .current_dir(&cwd)
            .env("TTRPC_ADDRESS", sb.dir.join("nowhere.sock"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn start");
        let mut sin = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = sin.write_all(&data);
        });
        let out = child.wait_with_output().expect("wait start");
        let _ = writer.join();
        out
    };
    let addr = sb.dir.join("containerd.sock").display().to_string();
    for (what, stdin) in &inputs {
        let out = run(
            &[
                "-namespace",
                &sb.namespace,
                "-address",
                &addr,
                "-id",
                "garbage",
                "start",
            ],
            stdin,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        *codes.entry(code).or_default() += 1;
        if code != 1
            || !stderr.contains("containerd-shim-tender-v2:")
            || stderr.contains("panicked")
        {
            bad.push(format!(
                "start with {what}: status {:?}, stderr {stderr:?}",
                out.status
            ));
        }
    }
    // Bad command lines for start and delete.
    let huge_id = "x".repeat(5000);
    let flag_cases: Vec<(&str, Vec<&str>, i32)> = vec![
        (
            "start with a '/' id",
            vec!["-namespace", "ns", "-id", "../x", "start"],
            1,
        ),
        ("start without namespace", vec!["-id", "x", "start"], 1),
        (
            "start with a huge id",
            vec!["-namespace", "ns", "-id", &huge_id, "start"],
            1,
        ),
        ("unknown flag", vec!["-bogus", "1", "start"], 2),
        ("flag without value", vec!["-id"], 2),
        ("two actions", vec!["start", "delete"], 2),
        ("unknown action", vec!["-id", "x", "explode"], 1),
        (
            "delete with a NUL-free '..' id",
            vec!["-namespace", "ns", "-id", "..", "delete"],
            1,
        ),
    ];
    for (what, args, want) in flag_cases {
        let out = run(&args, b"");
        let code = out.status.code().unwrap_or(-1);
        *codes.entry(code).or_default() += 1;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if code != want || stderr.trim().is_empty() || stderr.contains("panicked") {
            bad.push(format!(
                "{what}: status {:?} (want {want}), stderr {stderr:?}",
                out.status
            ));
        }
    }
    // delete of a bundle that never ran: answers a DeleteResponse, exits 0.
    let out = run(
        &[
            "-namespace",
            &sb.namespace,
            "-address",
            &addr,
            "-id",
            "never",
            "-bundle",
            &cwd.display().to_string(),
            "delete",
        ],
        b"",
    );
    if !out.status.success() || api::DeleteResponse::parse_from_bytes(&out.stdout).is_err() {
        bad.push(format!("delete of an unknown container: {out:?}"));
    }
    let sockets_after = std::fs::read_dir(tender::bootstrap::SOCKET_DIR)
        .map(|d| d.count())
        .unwrap_or(0);
    println!(
        "start/delete actions: {} garbage inputs + 9 bad command lines; exit codes {codes:?}; \
         {} wrong; shim sockets {sockets_before} -> {sockets_after}",
        inputs.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "badly handled:\n  {}", bad.join("\n  "));
}
