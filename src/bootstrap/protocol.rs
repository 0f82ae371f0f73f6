//! What containerd says on the start action's stdin, and what we answer on stdout.
//!
//! * containerd 1.6 – 2.2: stdin holds the runtime options as a serialized `google.protobuf.Any`
//!   (or nothing); stdout is read back as the plain socket address (task API v2).
//! * containerd ≥ 2.3: stdin holds a `BootstrapParams` protobuf; we answer with a
//!   `BootstrapResult` protobuf (version 3, address, protocol "ttrpc").
//!
//! There is no marker telling the two apart, and an `Any` can happen to parse as
//! `BootstrapParams`. So the bytes count as `BootstrapParams` only when they parse *and* name
//! the same instance (`-id`) and namespace (`-namespace`) as our command line — what
//! containerd's own shims check.

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

/// Upper bound on what we read from stdin (containerd's shims use the same 10 MB cap).
pub const STDIN_LIMIT: u64 = 10 << 20;

#[derive(Debug)]
pub enum StartProtocol {
    /// containerd 1.6 – 2.2.
    Legacy,
    /// containerd ≥ 2.3.
    Bootstrap(Box<BootstrapParams>),
}

#[derive(Debug)]
pub struct StartInput {
    pub protocol: StartProtocol,
    pub options: Option<Any>,
}

const OPTION_TYPES: [&str; 3] = [
    "containerd.runc.v1.Options",
    "containerd.linux.runc.CreateOptions",
    "runtimeoptions.v1.Options",
];

fn is_options(any: &Any) -> bool {
    let name = any.type_url.rsplit('/').next().unwrap_or("");
    OPTION_TYPES.contains(&name)
}

pub fn detect(stdin: &[u8], id: &str, namespace: &str) -> Result<StartInput, String> {
    if stdin.is_empty() {
        return Ok(StartInput {
            protocol: StartProtocol::Legacy,
            options: None,
        });
    }
    if let Ok(params) = BootstrapParams::parse_from_bytes(stdin) {
        if params.instance_id == id && params.namespace == namespace {
            let options = params
                .extensions
                .iter()
                .filter_map(|e| e.value.as_ref())
                .find(|a| is_options(a))
                .cloned();
            return Ok(StartInput {
                protocol: StartProtocol::Bootstrap(Box::new(params)),
                options,
            });
        }
    }
    let any = Any::parse_from_bytes(stdin)
        .map_err(|e| format!("start: stdin is neither BootstrapParams nor an options Any: {e}"))?;
    Ok(StartInput {
        protocol: StartProtocol::Legacy,
        options: Some(any),
    })
}

/// The bytes printed on stdout for containerd.
pub fn reply(protocol: &StartProtocol, address: &str) -> Vec<u8> {
    match protocol {
        StartProtocol::Legacy => address.as_bytes().to_vec(),
        StartProtocol::Bootstrap(_) => {
            let mut r = BootstrapResult::new();
            r.version = 3;
            r.address = address.to_string();
            r.protocol = "ttrpc".to_string();
            r.write_to_bytes().unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends a length-delimited field.
    fn ld(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
        out.push(field << 3 | 2);
        assert!(bytes.len() < 128);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }

    /// A BootstrapParams as containerd 2.3 writes it, encoded by hand from the field numbers
    /// (instance_id=1, namespace=2, log_level=3, containerd_version=4, ttrpc=5, grpc=6,
    /// binary=7, extensions=8 { value=1: Any { type_url=1, value=2 } }).
    fn captured_bootstrap_params() -> Vec<u8> {
        let mut runc_opts = Vec::new();
        ld(&mut runc_opts, 6, b"crun"); // containerd.runc.v1.Options.binary_name = 6
        let mut any = Vec::new();
        ld(&mut any, 1, b"containerd.runc.v1.Options");
        ld(&mut any, 2, &runc_opts);
        let mut ext = Vec::new();
        ld(&mut ext, 1, &any);
        let mut p = Vec::new();
        ld(&mut p, 1, b"pod-1");
        ld(&mut p, 2, b"k8s.io");
        // log_level = DEBUG (-4): a negative enum is a 10-byte varint.
        p.extend_from_slice(&[
            0x18, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        ld(&mut p, 4, b"v2.3.0");
        ld(&mut p, 5, b"/run/containerd/containerd.sock.ttrpc");
        ld(&mut p, 6, b"/run/containerd/containerd.sock");
        ld(&mut p, 7, b"/usr/bin/containerd");
        ld(&mut p, 8, &ext);
        p
    }

    #[test]
    fn bootstrap_params_are_recognised() {
        let input = detect(&captured_bootstrap_params(), "pod-1", "k8s.io").expect("detect");
        let StartProtocol::Bootstrap(params) = &input.protocol else {
            panic!("expected the 2.3 protocol, got {:?}", input.protocol);
        };
        assert_eq!(
            params.containerd_ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        assert_eq!(params.containerd_version, "v2.3.0");
        let opts = crate::options::Options::from_any(input.options.as_ref()).expect("options");
        assert_eq!(opts.binary_name, "crun");

        let out = reply(&input.protocol, "unix:///run/containerd/s/abc");
        // BootstrapResult: version=1 (3), address=2, protocol=3 ("ttrpc").
        let mut expected = vec![0x08, 0x03];
        ld(&mut expected, 2, b"unix:///run/containerd/s/abc");
        ld(&mut expected, 3, b"ttrpc");
        assert_eq!(out, expected);
    }

    #[test]
    fn params_for_another_instance_are_not_bootstrap() {
        // Same bytes, different -id: must not be mistaken for our BootstrapParams, and they
        // are not a valid Any either (field 3 is a varint) — so this is a clear error.
        let err = detect(&captured_bootstrap_params(), "other", "k8s.io");
        assert!(
            err.is_err() || matches!(err.as_ref().map(|i| &i.protocol), Ok(StartProtocol::Legacy))
        );
    }

    #[test]
    fn legacy_options_any_and_plain_address() {
        // What containerd 1.6 writes: Any { type_url = "containerd.runc.v1.Options",
        // value = Options { binary_name = "crun", root = "/r" } }.
        let mut opts = Vec::new();
        ld(&mut opts, 6, b"crun");
        ld(&mut opts, 7, b"/r");
        let mut any = Vec::new();
        ld(&mut any, 1, b"containerd.runc.v1.Options");
        ld(&mut any, 2, &opts);
        let input = detect(&any, "c1", "default").expect("detect");
        assert!(matches!(input.protocol, StartProtocol::Legacy));
        let o = crate::options::Options::from_any(input.options.as_ref()).expect("options");
        assert_eq!((o.binary_name.as_str(), o.root.as_str()), ("crun", "/r"));
        assert_eq!(reply(&input.protocol, "unix:///x"), b"unix:///x");

        let empty = detect(b"", "c1", "default").expect("empty stdin");
        assert!(matches!(empty.protocol, StartProtocol::Legacy) && empty.options.is_none());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(detect(&[0xff, 0xff, 0xff, 0xff], "c1", "default").is_err());
        assert!(detect(&[0x0a, 0x7f, 0x01], "c1", "default").is_err());
    }
}
