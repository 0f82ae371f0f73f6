//! Mutation fuzzing that runs on stable Rust, in CI: a deterministic, seeded, time-bounded
//! loop per kind of untrusted input (Task requests — decoded and dispatched to the service
//! exactly as the ttrpc server does —, runtime options, the start action's stdin, the command
//! line, IDs / stdio URIs / runtime logs). Every input goes through the checks in
//! `fuzz_checks`, which assert no panic and that whatever is accepted is valid.
//!
//! * `TENDER_FUZZ_SECS` — total time budget, split between the targets (default 10).
//! * `TENDER_FUZZ_SEED` — base seed (default fixed, so runs are reproducible). A failure
//!   prints the seed, the iteration and the input (hex) to replay it.
//!
//! The same checks run under libFuzzer with `cargo fuzz` (see `fuzz/`).

#[path = "fuzz_checks/mod.rs"]
mod fuzz_checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use fuzz_checks::Rng;

const TARGETS: u64 = 5;

fn budget() -> Duration {
    let total: f64 = std::env::var("TENDER_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    Duration::from_secs_f64((total / TARGETS as f64).max(0.2))
}

fn seed() -> u64 {
    std::env::var("TENDER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7e4d_e2f0_2215)
}

const INTERESTING: [u8; 10] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, b'/', b'.', b'\n', b'%'];

/// A mutated copy of a random seed: bit flips, interesting bytes, inserts, deletes,
/// duplicated ranges, splices with other seeds, overlong varints and length prefixes.
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(20) == 0 {
        let n = rng.below(64);
        return (0..n).map(|_| rng.next() as u8).collect();
    }
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(6) {
        let len = d.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                d.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let chunk = d[i..i + n].to_vec();
                let at = rng.below(len + 1);
                d.splice(at..at, chunk);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let i = rng.below(other.len());
                    let n = 1 + rng.below(other.len() - i);
                    let at = rng.below(len + 1);
                    d.splice(at..at, other[i..i + n].iter().copied());
                }
            }
            6 => d.truncate(rng.below(len + 1)),
            7 => {
                // A field with an overlong or huge varint.
                let at = rng.below(len + 1);
                let tag = (rng.below(20) as u8) << 3 | rng.below(6) as u8;
                let mut v = vec![tag];
                v.extend(std::iter::repeat_n(0xff, 1 + rng.below(10)));
                v.push(rng.next() as u8 & 0x7f);
                d.splice(at..at, v);
            }
            _ => {
                // A length-delimited field claiming more than is there.
                let at = rng.below(len + 1);
                let tag = (1 + rng.below(15) as u8) << 3 | 2;
                d.splice(at..at, [tag, 0xf0, 0xff, 0xff, 0x0f]);
            }
        }
    }
    d
}

/// Runs `check` on mutated seeds until the budget is spent; returns the iteration count.
fn fuzz(name: &str, seeds: &[Vec<u8>], mut check: impl FnMut(&[u8]) -> String) -> usize {
    let mut rng = Rng::new(
        seed()
            ^ name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31) ^ b as u64),
    );
    let deadline = Instant::now() + budget();
    let mut n = 0;
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    // Every seed as-is first, then mutations.
    let mut pending: Vec<Vec<u8>> = seeds.to_vec();
    while Instant::now() < deadline || !pending.is_empty() {
        let input = pending.pop().unwrap_or_else(|| mutate(&mut rng, seeds));
        match catch_unwind(AssertUnwindSafe(|| check(&input))) {
            Ok(outcome) => *outcomes.entry(outcome).or_default() += 1,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                panic!(
                    "fuzz target {name}: panic at iteration {n} (TENDER_FUZZ_SEED={}): {msg}\n\
                     input ({} bytes): {hex}",
                    seed(),
                    input.len()
                );
            }
        }
        n += 1;
    }
    println!(
        "fuzz {name}: {n} inputs in {:?}, 0 panics; outcomes {outcomes:?}",
        budget()
    );
    n
}

fn any(url: &str, value: Vec<u8>) -> MessageField<Any> {
    let mut a = Any::new();
    a.type_url = url.into();
    a.value = value;
    MessageField::some(a)
}

fn runc_options() -> Vec<u8> {
    let mut o = RuncOptions::new();
    o.binary_name = "runc".into();
    o.root = "/run/containerd/runc".into();
    o.systemd_cgroup = true;
    o.io_uid = 1000;
    o.write_to_bytes().unwrap()
}

/// One valid, encoded instance of every Task request (what containerd sends).
fn request_seeds() -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut m = api::StateRequest::new();
    (m.id, m.exec_id) = ("c1".into(), "e1".into());
    out.push((0, m.write_to_bytes().unwrap()));
    let mut m = api::CreateTaskRequest::new();
    m.id = "c1".into();
    m.bundle = "/run/containerd/io.containerd.runtime.v2.task/default/c1".into();
    let mut mnt = api::Mount::new();
    mnt.type_ = "overlay".into();
    mnt.source = "overlay".into();
    mnt.options = vec![
        "lowerdir=/a:/b".into(),
        "upperdir=/u".into(),
        "workdir=/w".into(),
    ];
    m.rootfs.push(mnt);
    (m.stdin, m.stdout, m.stderr) = ("/f/0".into(), "/f/1".into(), "binary:///bin/log?x=1".into());
    m.options = any("containerd.runc.v1.Options", runc_options());
    m.checkpoint = "/ckpt".into();
    out.push((1, m.write_to_bytes().unwrap()));
    let mut m = api::StartRequest::new();
    (m.id, m.exec_id) = ("c1".into(), "e1".into());
    out.push((2, m.write_to_bytes().unwrap()));
    let mut m = api::DeleteRequest::new();
    m.id = "c1".into();
    out.push((3, m.write_to_bytes().unwrap()));
    let mut m = api::PidsRequest::new();
    m.id = "c1".into();
    out.push((4, m.write_to_bytes().unwrap()));
    let mut m = api::PauseRequest::new();
    m.id = "c1".into();
    out.push((5, m.write_to_bytes().unwrap()));
    let mut m = api::ResumeRequest::new();
    m.id = "c1".into();
    out.push((6, m.write_to_bytes().unwrap()));
    let mut m = api::CheckpointTaskRequest::new();
    (m.id, m.path) = ("c1".into(), "/ckpt".into());
    m.options = any(
        "containerd.runc.v1.CheckpointOptions",
        vec![0x08, 0x01, 0x3a, 0x02, b'/', b'w'],
    );
    out.push((7, m.write_to_bytes().unwrap()));
    let mut m = api::KillRequest::new();
    (m.id, m.exec_id, m.signal, m.all) = ("c1".into(), "e1".into(), 9, true);
    out.push((8, m.write_to_bytes().unwrap()));
    let mut m = api::ExecProcessRequest::new();
    (m.id, m.exec_id, m.terminal) = ("c1".into(), "e1".into(), true);
    m.stdout = "/f/e1-1".into();
    m.spec = any(
        "types.containerd.io/opencontainers/runtime-spec/1/Process",
        br#"{"args":["sh"],"cwd":"/","terminal":true,"consoleSize":{"height":24,"width":80}}"#
            .to_vec(),
    );
    out.push((9, m.write_to_bytes().unwrap()));
    let mut m = api::ResizePtyRequest::new();
    (m.id, m.exec_id, m.width, m.height) = ("c1".into(), "e1".into(), 80, 24);
    out.push((10, m.write_to_bytes().unwrap()));
    let mut m = api::CloseIORequest::new();
    (m.id, m.stdin) = ("c1".into(), true);
    out.push((11, m.write_to_bytes().unwrap()));
    let mut m = api::UpdateTaskRequest::new();
    m.id = "c1".into();
    m.resources = any("x", br#"{"memory":{"limit":1048576}}"#.to_vec());
    out.push((12, m.write_to_bytes().unwrap()));
    let mut m = api::WaitRequest::new();
    m.id = "c1".into();
    out.push((13, m.write_to_bytes().unwrap()));
    let mut m = api::StatsRequest::new();
    m.id = "c1".into();
    out.push((14, m.write_to_bytes().unwrap()));
    let mut m = api::ConnectRequest::new();
    m.id = "c1".into();
    out.push((15, m.write_to_bytes().unwrap()));
    out.push((16, api::ShutdownRequest::new().write_to_bytes().unwrap()));
    out
}

#[test]
fn fuzz_task_requests_decode_and_dispatch() {
    let seeds = request_seeds();
    let dispatcher = fuzz_checks::Dispatcher::new();
    let mut rng = Rng::new(seed());
    // Input = [method selector] ++ payload; seeds pair each payload with its own method.
    let framed: Vec<Vec<u8>> = seeds
        .iter()
        .map(|(i, b)| {
            let mut v = vec![*i];
            v.extend_from_slice(b);
            v
        })
        .collect();
    fuzz("task requests", &framed, |input| {
        let (sel, payload) = input
            .split_first()
            .map(|(s, p)| (*s, p))
            .unwrap_or((0, &[]));
        fuzz_checks::check_request_decode(payload);
        // Sometimes a payload meant for another method.
        let sel = if rng.below(8) == 0 {
            rng.next() as u8
        } else {
            sel
        };
        dispatcher.call(sel, payload)
    });
}

/// Sandbox API requests: every decodable or garbage payload gets an answer (no panic, no
/// hang, errors with a message); no sandbox can be created (the bundle never exists), so
/// WaitSandbox cannot block.
#[test]
fn fuzz_sandbox_requests_dispatch() {
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::sandbox_api as sb;
    let dispatcher = fuzz_checks::Dispatcher::new();
    let mut create = sb::CreateSandboxRequest::new();
    create.sandbox_id = "p1".into();
    create.bundle_path = "/x".into();
    create.netns_path = "/var/run/netns/x".into();
    let mut any = Any::new();
    any.type_url = "runtime.v1.PodSandboxConfig".into();
    // hostname "h", linux { sysctls { "net.a": "1" } }
    any.value = vec![
        0x12, 0x01, b'h', 0x42, 0x0d, 0x1a, 0x0b, 0x0a, 0x05, b'n', b'e', b't', b'.', b'a', 0x12,
        0x02, b'1', b'2',
    ];
    create.options = Some(any).into();
    let mut seeds = vec![{
        let mut v = vec![0u8];
        v.extend(create.write_to_bytes().unwrap());
        v
    }];
    for sel in 1..9u8 {
        let mut r = sb::StartSandboxRequest::new();
        r.sandbox_id = "p1".into();
        let mut v = vec![sel];
        v.extend(r.write_to_bytes().unwrap());
        seeds.push(v);
    }
    fuzz("sandbox requests", &seeds, |input| {
        let (sel, payload) = input
            .split_first()
            .map(|(s, p)| (*s, p))
            .unwrap_or((0, &[]));
        dispatcher.call_sandbox(sel, payload)
    });
}

#[test]
fn fuzz_runtime_options() {
    let mut toml = vec![3u8];
    toml.extend_from_slice(
        b"BinaryName = \"crun\"\nRoot = \"/run/x\"\nSystemdCgroup = true\nIoUid = 7\nShimCgroup = \"/s\"\n",
    );
    let mut runc = vec![0u8];
    runc.extend(runc_options());
    let create_opts = vec![
        2u8, 0x08, 0x01, 0x4a, 0x02, b'/', b'x', 0x50, 0x07, 0x3a, 0x02, b'v', b'1',
    ];
    let mut runtimeoptions = vec![3u8, 0x1a, 19];
    runtimeoptions.extend_from_slice(b"BinaryName = \"crun\"");
    let seeds = vec![toml, runc, create_opts, runtimeoptions, vec![4]];
    fuzz("runtime options", &seeds, |input| {
        fuzz_checks::check_options(input);
        "checked".into()
    });
}

#[test]
fn fuzz_start_stdin() {
    use containerd_shim_protos::bootstrap_api::BootstrapParams;
    let mut p = BootstrapParams::new();
    p.instance_id = "c1".into();
    p.namespace = "default".into();
    p.containerd_ttrpc_address = "/run/containerd/containerd.sock.ttrpc".into();
    p.containerd_grpc_address = "/run/containerd/containerd.sock".into();
    p.containerd_version = "v2.3.0".into();
    let bootstrap = p.write_to_bytes().unwrap();
    let mut a = Any::new();
    a.type_url = "containerd.runc.v1.Options".into();
    a.value = runc_options();
    let legacy = a.write_to_bytes().unwrap();
    let seeds = vec![bootstrap, legacy, Vec::new()];
    fuzz("start stdin", &seeds, |input| {
        fuzz_checks::check_start_stdin(input);
        "checked".into()
    });
}

#[test]
fn fuzz_command_line_ids_uris_logs() {
    let seeds: Vec<Vec<u8>> = vec![
        b"-namespace\0k8s.io\0-address\0/run/containerd/containerd.sock\0-publish-binary\0/usr/bin/containerd\0-id\0abc\0-debug\0start".to_vec(),
        b"--namespace=default\0-id=x\0-bundle\0/b\0delete".to_vec(),
        b"-v".to_vec(),
        b"pod-1.a_b-c".to_vec(),
        b"binary:///usr/bin/logger?-level=debug&x=%20y".to_vec(),
        b"file:///var/log/a%20b.log".to_vec(),
        b"/run/containerd/fifo/abc/c1-stdout".to_vec(),
        br#"{"level":"error","msg":"exec: \"nope\": executable file not found","time":"x"}"#.to_vec(),
    ];
    fuzz(
        "command line, ids, stdio URIs, runtime logs",
        &seeds,
        |input| {
            fuzz_checks::check_flags(input);
            fuzz_checks::check_strings(input);
            "checked".into()
        },
    );
}

#[test]
fn fuzz_ttrpc_envelope() {
    let mut r = containerd_shim_protos::ttrpc::Request::new();
    r.service = "containerd.task.v3.Task".into();
    r.method = "State".into();
    r.payload = vec![0x0a, 2, b'c', b'1'];
    r.timeout_nano = 1_000_000_000;
    let seeds = vec![r.write_to_bytes().unwrap()];
    fuzz("ttrpc request envelope", &seeds, |input| {
        fuzz_checks::check_request_decode(input);
        "checked".into()
    });
}
