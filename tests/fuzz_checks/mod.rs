//! One check per kind of untrusted input the shim parses. Each takes arbitrary bytes, must
//! never panic, and asserts that what is accepted really is valid ("errors are errors").
//!
//! Shared by `tests/fuzz.rs` (a seeded, time-bounded mutation loop that CI runs on stable)
//! and the cargo-fuzz targets in `fuzz/` (libFuzzer, needs nightly or RUSTC_BOOTSTRAP=1).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;

use tender::bootstrap::{flags, protocol};
use tender::options::Options;

/// The Task API methods, in the order `method_index` picks them.
/// The Sandbox API's methods (containerd 2.x `sandboxer = "shim"`).
pub const SANDBOX_METHODS: [&str; 9] = [
    "CreateSandbox",
    "StartSandbox",
    "Platform",
    "StopSandbox",
    "WaitSandbox",
    "SandboxStatus",
    "PingSandbox",
    "ShutdownSandbox",
    "SandboxMetrics",
];

pub const METHODS: [&str; 17] = [
    "State",
    "Create",
    "Start",
    "Delete",
    "Pids",
    "Pause",
    "Resume",
    "Checkpoint",
    "Kill",
    "Exec",
    "ResizePty",
    "CloseIO",
    "Update",
    "Wait",
    "Stats",
    "Connect",
    "Shutdown",
];

/// containerd's identifier grammar, written independently of `service::validate_id`.
pub fn id_is_valid(id: &str) -> bool {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > 76 {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    let sep = |c: u8| matches!(c, b'.' | b'_' | b'-');
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    b.iter().all(|c| alnum(*c) || sep(*c)) && !b.windows(2).any(|w| sep(w[0]) && sep(w[1]))
}

/// Accepted options are valid options.
fn options_ok(o: &Options) {
    assert!(!o.binary_name.contains('\0') && !o.root.contains('\0'));
    assert!(
        o.root.is_empty() || o.root.starts_with('/'),
        "relative Root accepted: {o:?}"
    );
}

/// Options in all three shapes (first byte picks the type URL), and as TOML.
pub fn check_options(data: &[u8]) {
    const URLS: [&str; 6] = [
        "containerd.runc.v1.Options",
        "type.googleapis.com/containerd.runc.v1.Options",
        "containerd.linux.runc.CreateOptions",
        "runtimeoptions.v1.Options",
        "",
        "example.Unknown",
    ];
    let (head, value) = data.split_first().map(|(h, v)| (*h, v)).unwrap_or((0, &[]));
    let mut any = Any::new();
    any.type_url = URLS[head as usize % URLS.len()].to_string();
    any.value = value.to_vec();
    // runtimeoptions may name a config file: only ever let it read files that do not exist.
    if any.type_url == "runtimeoptions.v1.Options" && contains_field(value, 2) {
        return;
    }
    match Options::from_any(Some(&any)) {
        Ok(o) => {
            options_ok(&o);
            assert!(
                URLS[..5].contains(&any.type_url.as_str()),
                "unknown options type accepted"
            );
        }
        Err(e) => assert!(!e.is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(value) {
        match Options::from_toml(text) {
            Ok(o) => options_ok(&o),
            Err(e) => assert!(!e.is_empty()),
        }
    }
}

/// True if the (possibly malformed) protobuf has a top-level field number `field`.
fn contains_field(bytes: &[u8], field: u32) -> bool {
    let mut is = containerd_shim_protos::protobuf::CodedInputStream::from_bytes(bytes);
    while let Ok(false) = is.eof() {
        let Ok(tag) = is.read_raw_varint32() else {
            return true;
        };
        if tag >> 3 == field {
            return true;
        }
        let Some(w) = containerd_shim_protos::protobuf::rt::WireType::new(tag & 7) else {
            return true;
        };
        if is.skip_field(w).is_err() {
            return true;
        }
    }
    false
}

/// What containerd writes on the `start` action's stdin (options Any or BootstrapParams).
pub fn check_start_stdin(data: &[u8]) {
    match protocol::detect(data, "c1", "default") {
        Ok(input) => {
            if let protocol::StartProtocol::Bootstrap(p) = &input.protocol {
                assert_eq!(
                    (p.instance_id.as_str(), p.namespace.as_str()),
                    ("c1", "default")
                );
            }
            if input
                .options
                .as_ref()
                .is_some_and(|a| a.type_url.ends_with("runtimeoptions.v1.Options"))
            {
                return; // may name a config file; covered by check_options
            }
            if let Ok(o) = Options::from_any(input.options.as_ref()) {
                options_ok(&o);
            }
            let out = protocol::reply(&input.protocol, "unix:///run/containerd/s/x");
            assert!(!out.is_empty());
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// The shim's command line (NUL-separated arguments).
pub fn check_flags(data: &[u8]) {
    let args: Vec<String> = data
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match flags::parse(args) {
        Ok(f) => {
            if let Some(a) = &f.action {
                assert!(!a.starts_with('-') || a == "-");
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// IDs, stdio URIs and runtime error logs.
pub fn check_strings(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let ok = tender::service::validate_id("id", &s).is_ok();
    assert_eq!(
        ok,
        id_is_valid(&s),
        "validate_id disagrees with the grammar on {s:?}"
    );
    match tender::stdio::parse_uri(&s) {
        Ok(tender::stdio::Scheme::Fifo(p)) | Ok(tender::stdio::Scheme::File(p)) => {
            // Known gaps, harmless (opening such a path fails cleanly later, at Create/Start):
            // a `fifo:` prefix takes a relative path, and `%00` decodes to a NUL after the
            // NUL check (`file:///a%00b`).
            assert!(
                p.is_absolute() || s.starts_with("fifo:"),
                "relative path accepted: {s:?}"
            );
            if p.as_os_str().as_encoded_bytes().contains(&0) {
                assert!(std::fs::File::open(&p).is_err());
            }
        }
        Ok(tender::stdio::Scheme::Binary { path, .. }) => assert!(path.is_absolute()),
        Ok(tender::stdio::Scheme::Null) => assert!(s.is_empty()),
        Err(e) => assert!(!e.is_empty()),
    }
    let msg = tender::runtime::last_error_in_log(&s);
    assert!(msg.chars().count() <= 4096 || s.lines().any(|l| l.contains("\"msg\"")));
}

/// Every Task request type decodes (or fails to) without panicking.
pub fn check_request_decode(data: &[u8]) {
    macro_rules! each {
        ($($t:ty),+) => {$(
            if let Ok(m) = <$t>::parse_from_bytes(data) {
                // What decodes re-encodes and decodes to the same message.
                let again = m.write_to_bytes().expect("re-encode");
                assert_eq!(<$t>::parse_from_bytes(&again).expect("re-decode"), m);
            }
        )+};
    }
    each!(
        api::CreateTaskRequest,
        api::StartRequest,
        api::DeleteRequest,
        api::StateRequest,
        api::PidsRequest,
        api::PauseRequest,
        api::ResumeRequest,
        api::CheckpointTaskRequest,
        api::KillRequest,
        api::ExecProcessRequest,
        api::ResizePtyRequest,
        api::CloseIORequest,
        api::UpdateTaskRequest,
        api::WaitRequest,
        api::StatsRequest,
        api::ConnectRequest,
        api::ShutdownRequest,
        ttrpc::Request
    );
}

/// The ttrpc handlers of an empty shim, exactly as the server dispatches them.
pub struct Dispatcher {
    rt: tokio::runtime::Runtime,
    services: HashMap<String, ttrpc::r#async::Service>,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Dispatcher {
    pub fn new() -> Dispatcher {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let services = rt.block_on(async {
            let reaper = tender::reaper::Reaper::new();
            // Events go nowhere: an empty shim publishes none for refused requests anyway.
            let publisher = tender::events::Publisher::start(
                "/nonexistent/tender-fuzz.sock".into(),
                "fuzz".into(),
            );
            // No idle check is set: a fuzzed Shutdown never makes the dispatcher refuse.
            let exit = tender::server::Exit::new();
            let sandboxes = Arc::new(tender::sandbox::SandboxService::new(
                "fuzz".into(),
                reaper.clone(),
                exit.clone(),
            ));
            let shim = Arc::new(tender::service::Shim::new(
                "fuzz".into(),
                reaper,
                publisher,
                Options {
                    // Never run a real runtime from fuzzed input.
                    binary_name: "/nonexistent/tender-fuzz-runtime".into(),
                    ..Options::default()
                },
                exit.clone(),
            ));
            tender::server::services(shim, sandboxes, exit)
        });
        Dispatcher { rt, services }
    }

    /// Feeds `payload` to method `METHODS[index % 17]` under both service names.
    /// Returns the status code name ("OK" on success).
    pub fn call(&self, index: u8, payload: &[u8]) -> String {
        let method = METHODS[index as usize % METHODS.len()];
        let mut payload = payload.to_vec();
        if method == "Create" {
            // A decodable Create gets a bundle that cannot exist, so no input can make the
            // shim write, mount or run anything on this machine.
            if let Ok(mut req) = api::CreateTaskRequest::parse_from_bytes(&payload) {
                req.bundle = "/nonexistent/tender-fuzz-bundle".into();
                payload = req.write_to_bytes().expect("encode");
            }
        }
        let service = if index & 0x80 == 0 {
            tender::server::TASK_V3
        } else {
            tender::server::TASK_V2
        };
        self.dispatch(service, method, payload)
    }

    /// Feeds `payload` to Sandbox API method `SANDBOX_METHODS[index % 9]`. A decodable
    /// CreateSandbox gets a bundle that cannot exist (nothing is written or mounted).
    pub fn call_sandbox(&self, index: u8, payload: &[u8]) -> String {
        use containerd_shim_protos::sandbox_api::CreateSandboxRequest;
        let method = SANDBOX_METHODS[index as usize % SANDBOX_METHODS.len()];
        let mut payload = payload.to_vec();
        if method == "CreateSandbox" {
            if let Ok(mut req) = CreateSandboxRequest::parse_from_bytes(&payload) {
                req.bundle_path = "/nonexistent/tender-fuzz-sandbox".into();
                payload = req.write_to_bytes().expect("encode");
            }
        }
        self.dispatch("containerd.runtime.sandbox.v1.Sandbox", method, payload)
    }

    fn dispatch(&self, service: &str, method: &str, payload: Vec<u8>) -> String {
        let handler = self.services[service]
            .methods
            .get(method)
            .expect("method registered");
        let mut req = ttrpc::Request::new();
        req.service = service.into();
        req.method = method.into();
        req.payload = payload;
        let res = self.rt.block_on(async {
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                handler.handler(TtrpcContext::default(), req),
            )
            .await
        });
        match res {
            Err(_) => {
                panic!("{method} did not answer within 5 s (an empty shim has nothing to wait for)")
            }
            Ok(Ok(resp)) => match resp.status.as_ref() {
                Some(s) => {
                    let code = s.code.enum_value_or_default();
                    assert!(
                        code == ttrpc::Code::OK || !s.message.is_empty(),
                        "{method}: error {code:?} without a message"
                    );
                    format!("{code:?}")
                }
                None => "OK".into(),
            },
            Ok(Err(ttrpc::Error::RpcStatus(s))) => {
                assert!(!s.message.is_empty(), "{method}: error without a message");
                format!("{:?}", s.code.enum_value_or_default())
            }
            Ok(Err(e)) => format!("ERR {e}"),
        }
    }
}

/// xorshift64*: deterministic, seeded (`tests/fuzz.rs`'s mutations, `tests/hostile_input.rs`'s
/// random frames).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
