//! End-to-end tests of how soon an exit is reported when nobody reads the output, through a
//! private containerd and `ctr` (see `tests/common/mod.rs`).
//!
//! - a detached container (`ctr run -d`: its FIFOs have no reader once ctr is gone) that
//!   prints a line and exits 5: the TaskExit (status 5) arrives within 0.5 s of the exit
//! - the same for a detached exec (`ctr task exec -d`)
//! - `ctr task kill` followed at once by `ctr task delete` succeeds, with unread output in
//!   the FIFO (or, if the delete beats the kernel's delivery of the kill by a few ms, the task
//!   is stopped well within a second of the kill)
//!
//! The 0.5 s bound is a requirement (containerd's Go shim reports such an exit at once), not a
//! speed target: it is measured from the `exited_at` the shim reports to the moment the
//! TaskExit event shows up in `ctr events`, so the container's start-up and `ctr`'s own time
//! are not part of it.
//!
//! `TENDER_E2E_RUNTIME=io.containerd.runc.v2` runs the same tests against containerd's Go
//! shim.

#[macro_use]
mod common;

use common::{Ctr, Events};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How late an exit may be reported after it happened.
const BOUND: Duration = Duration::from_millis(500);
const SHORT: Duration = Duration::from_secs(15);

/// Seconds since the epoch of an RFC 3339 time as `ctr events` prints it
/// (`2026-12-06T00:00:01.123456789Z`, or with a `+hh:mm` / `-hh:mm` offset).
fn parse_rfc3339(s: &str) -> Option<f64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let zone_at = rest.find(['Z', 'z', '+', '-'])?;
    let (clock, zone) = rest.split_at(zone_at);
    let mut t = clock.split(':');
    let hour: f64 = t.next()?.parse().ok()?;
    let minute: f64 = t.next()?.parse().ok()?;
    let second: f64 = t.next()?.parse().ok()?;
    let offset = match zone.chars().next()? {
        'Z' | 'z' => 0.0,
        sign => {
            let (h, m) = zone.get(1..)?.split_once(':')?;
            let v = h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0;
            if sign == '-' {
                -v
            } else {
                v
            }
        }
    };
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hour * 3600.0 + minute * 60.0 + second - offset)
}

/// The string value of `"key":"..."` in a JSON payload, or the bare number of `"key":123`.
fn json_field(payload: &str, key: &str) -> Option<String> {
    let at = payload.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = payload.get(at..)?;
    if let Some(quoted) = rest.strip_prefix('"') {
        return Some(quoted.split('"').next()?.to_string());
    }
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What a TaskExit said and how long after its `exited_at` the test saw it.
struct SeenExit {
    status: u32,
    late: Duration,
    payload: String,
}

/// The `exited_at` of a TaskExit as `ctr events` prints it: an RFC 3339 string (ctr 1.6) or
/// a protobuf JSON timestamp object `{"seconds":…,"nanos":…}` (ctr 1.7, 2.x).
fn exited_at(payload: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    match v.get("exited_at")? {
        serde_json::Value::String(s) => parse_rfc3339(s),
        serde_json::Value::Object(o) => {
            let secs = o.get("seconds").and_then(|s| s.as_f64()).unwrap_or(0.0);
            let nanos = o.get("nanos").and_then(|n| n.as_f64()).unwrap_or(0.0);
            (secs > 0.0).then_some(secs + nanos / 1e9)
        }
        _ => None,
    }
}

/// Polls `ctr events` until the TaskExit of process `process_id` in container `id` shows up;
/// returns its status and its lateness (arrival here minus the reported `exited_at`).
fn wait_exit(c: &Ctr<'_>, ev: &Events, id: &str, process_id: &str) -> SeenExit {
    let deadline = Instant::now() + SHORT;
    loop {
        let found = ev.all().into_iter().find(|e| {
            e.topic == "/tasks/exit"
                && e.is_for_container(id)
                && json_field(&e.payload, "id").as_deref() == Some(process_id)
        });
        if let Some(e) = found {
            let seen = now_secs();
            let exited_at = exited_at(&e.payload)
                .unwrap_or_else(|| panic!("no exited_at in the TaskExit: {}", e.payload));
            let status = json_field(&e.payload, "exit_status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return SeenExit {
                status,
                late: Duration::from_secs_f64((seen - exited_at).max(0.0)),
                payload: e.payload,
            };
        }
        assert!(
            Instant::now() < deadline,
            "no TaskExit for {id}/{process_id} within {SHORT:?}; events:\n{}{}",
            ev.raw(),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn exited_at_in_both_ctr_formats() {
    assert_eq!(
        exited_at(r#"{"id":"a","exited_at":"2000-03-01T00:00:01.5Z"}"#),
        Some(951_868_801.5)
    );
    assert_eq!(
        exited_at(r#"{"id":"a","exited_at":{"seconds":951868801,"nanos":500000000}}"#),
        Some(951_868_801.5)
    );
    assert_eq!(exited_at(r#"{"id":"a"}"#), None);
}

#[test]
fn rfc3339_parses() {
    assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
    assert_eq!(
        parse_rfc3339("2000-03-01T01:00:01.5+01:00"),
        Some(951_868_801.5)
    );
    assert_eq!(
        parse_rfc3339("2000-02-29T23:00:01.5-01:00"),
        Some(951_868_801.5)
    );
    assert_eq!(
        json_field(r#"{"id":"a","exit_status":5,"x":1}"#, "exit_status").as_deref(),
        Some("5")
    );
}

#[test]
fn detached_exit_is_reported_within_half_a_second() {
    let cd = setup!("detached_exit_is_reported_within_half_a_second");
    let c = cd.client("exitlat");
    let ev = c.events();

    // init: `ctr run -d` returns after Start, so nobody reads "bye".
    let id = common::unique_id("late");
    c.run_detached(&id, &["sh", "-c", "sleep 1; echo bye; exit 5"]);
    let exit = wait_exit(&c, &ev, &id, &id);
    common::notice(&format!(
        "detached_exit_is_reported_within_half_a_second: init exit seen {:?} after exited_at ({})",
        exit.late, c.runtime
    ));
    assert_eq!(exit.status, 5, "{}", exit.payload);
    assert!(
        exit.late < BOUND,
        "the init's exit was reported {:?} after it happened (bound {BOUND:?}): {}{}",
        exit.late,
        exit.payload,
        c.log()
    );
    let del = c.delete_task(&id);
    assert!(del.success(), "{}", c.diag(&del));
    c.delete_container(&id);

    // exec: `ctr task exec -d` returns after Start as well.
    let id = common::unique_id("late-host");
    c.start_running(&id, &["sleep", "1000"]);
    let out = c.ctr(&[
        "task",
        "exec",
        "-d",
        "--fifo-dir",
        &cd.dir.join("fifo").display().to_string(),
        "--exec-id",
        "late",
        &id,
        "sh",
        "-c",
        "sleep 1; echo bye; exit 7",
    ]);
    assert!(out.success(), "{}", c.diag(&out));
    let exit = wait_exit(&c, &ev, &id, "late");
    common::notice(&format!(
        "detached_exit_is_reported_within_half_a_second: exec exit seen {:?} after exited_at ({})",
        exit.late, c.runtime
    ));
    assert_eq!(exit.status, 7, "{}", exit.payload);
    assert!(
        exit.late < BOUND,
        "the exec's exit was reported {:?} after it happened (bound {BOUND:?}): {}{}",
        exit.late,
        exit.payload,
        c.log()
    );
    common::kill_and_delete(&c, &id);
}

#[test]
fn kill_then_delete_at_once_succeeds() {
    let cd = setup!("kill_then_delete_at_once_succeeds");
    let c = cd.client("killdel");
    for round in 0..3 {
        let id = common::unique_id("killdel");
        // Written after `ctr run -d` has returned (and closed its end of the FIFO): nobody
        // will ever read it.
        let info = c.start_running(&id, &["sh", "-c", "sleep 1; echo unread; exec sleep 1000"]);
        // The output has reached the FIFO once the shell has become `sleep 1000`.
        let exec_done = common::wait_until(SHORT, Duration::from_millis(10), || {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", info.pid)).ok()?;
            (cmdline == b"sleep\x001000\x00").then_some(())
        });
        assert!(
            exec_done.is_some(),
            "round {round}: the shell never became sleep"
        );
        let killed = Instant::now();
        c.kill(&id, "SIGKILL");
        let del = c.delete_task(&id);
        if !del.success() {
            // The one race no shim can close: signal delivery and reaping against ctr's start-up
            // (a few ms; seen on a loaded host with the Go shim too). The exit must then follow
            // at once: a shim that holds it back (2 s before this test) fails here.
            assert!(
                del.stderr_str().contains("must be stopped"),
                "round {round}: `ctr task delete` right after `ctr task kill` failed{}",
                c.diag(&del)
            );
            c.wait_task_status(&id, "STOPPED", SHORT);
            let took = killed.elapsed();
            common::notice(&format!(
                "kill_then_delete_at_once_succeeds: round {round}: delete raced the exit; \
                 STOPPED {took:?} after the kill"
            ));
            assert!(
                took < Duration::from_secs(1),
                "round {round}: the killed task was reported stopped only {took:?} after the \
                 kill; the delete right after it failed{}",
                c.diag(&del)
            );
            let del = c.delete_task(&id);
            assert!(del.success(), "{}", c.diag(&del));
        }
        c.delete_container(&id);
    }
}
