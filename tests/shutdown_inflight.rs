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

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

// The scratch dir, the shim daemon, the event sink, the raw-frame client and request builders.
mod shimproc;

use shimproc::{
    create_req_with_runtime, delete_req, enabled, kill_req, shutdown_req, start_req, start_sink,
    Conn, Sandbox, ShimProc, Sink,
};

/// How late the wrapper answers `kill`.
const KILL_DELAY: &str = "1";

/// A runtime that forwards to runc but answers `kill` [`KILL_DELAY`] seconds after runc did
/// (the signal itself is sent at once).
fn slow_kill_runtime(sb: &Sandbox) -> PathBuf {
    let runc = tender::runtime::resolve_binary("runc").expect("runc");
    let path = sb.dir.join("slow-kill-runc");
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

/// A shim serving one running container `id` (sleep) whose runtime answers `kill` late.
fn running_shim(sb: &Sandbox, id: &str) -> (ShimProc, Arc<Sink>, Conn) {
    let events = sb.dir.join("events.sock");
    let sink = start_sink(&events);
    let bundle = sb.bundle(id, &["sleep", "1000"]);
    let runtime = slow_kill_runtime(sb);
    let shim = ShimProc::spawn(sb, id, &bundle, &events);
    let mut conn = Conn::open(&shim.socket);
    let got = conn.call("Create", &create_req_with_runtime(id, &bundle, &runtime));
    assert_eq!(got, "OK", "Create\n{}", shim.stderr_text());
    let got = conn.call("Start", &start_req(id));
    assert_eq!(got, "OK", "Start\n{}", shim.stderr_text());
    (shim, sink, conn)
}

/// What containerd does on the TaskExit a Kill causes: waits for it, then deletes `id`.
fn delete_on_exit(conn: &mut Conn, sink: &Sink, shim: &ShimProc, id: &str) {
    assert!(
        sink.wait_for("/tasks/exit", Duration::from_secs(10)),
        "no TaskExit after Kill\n{}",
        shim.stderr_text()
    );
    let got = conn.call("Delete", &delete_req(id));
    assert_eq!(got, "OK", "Delete\n{}", shim.stderr_text());
}

/// containerd's sequence on its one connection: Kill(SIGKILL) in flight, then — on the
/// TaskExit it causes — Delete and Shutdown. containerd closes the connection on Shutdown's
/// answer, so the Kill must be answered first; and the shim then exits.
#[test]
fn kill_in_flight_is_answered_before_shutdown() {
    if !enabled("kill_in_flight_is_answered_before_shutdown") {
        return;
    }
    let sb = Sandbox::new("inflight");
    let id = "pause";
    let (mut shim, sink, mut conn) = running_shim(&sb, id);

    let kill = conn.send("Kill", &kill_req(id));
    delete_on_exit(&mut conn, &sink, &shim, id);
    let got = conn.call("Shutdown", &shutdown_req(id));
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
    let sb = Sandbox::new("inflight");
    let id = "pause";
    let (mut shim, sink, mut conn) = running_shim(&sb, id);
    let late_bundle = sb.bundle("late", &["sleep", "1000"]);
    let runtime = slow_kill_runtime(&sb);
    let mut killer = Conn::open(&shim.socket);
    let mut racer = Conn::open(&shim.socket);

    let kill = killer.send("Kill", &kill_req(id));
    delete_on_exit(&mut conn, &sink, &shim, id);
    let shutdown = conn.send("Shutdown", &shutdown_req(id));
    // The Kill is still in flight (its runtime answers 1 s late); a Create comes meanwhile.
    std::thread::sleep(Duration::from_millis(200));
    let create = racer.send(
        "Create",
        &create_req_with_runtime("late", &late_bundle, &runtime),
    );

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
            assert_eq!(racer.call("Delete", &delete_req("late")), "OK");
            assert_eq!(racer.call("Shutdown", &shutdown_req("late")), "OK");
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
