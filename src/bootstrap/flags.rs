//! containerd's command line for a shim, Go `flag` style: `-name value`, `-name=value`,
//! `--name value`, boolean `-debug`, `-v`, `-info` and `-h`, then the action (`start`,
//! `delete`; none = serve).

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    /// `-info`: print the `RuntimeInfo` protobuf (containerd 2.x asks for it) and exit.
    pub info: bool,
    /// `-h`, `-help`: print [`USAGE`] and exit.
    pub help: bool,
    pub action: Option<String>,
}

/// What `-h` prints (stdout, exit status 0).
pub const USAGE: &str = "\
Usage: containerd-shim-tender-v2 [flags] [start | delete]

containerd runs this binary; it is not meant to be run by hand.

Actions:
  start     start a shim (or reuse the pod's) and print the address containerd dials
            (options or BootstrapParams on stdin; run in the bundle directory)
  delete    clean up after a shim that died: force-delete the container, print a
            DeleteResponse
  (none)    serve the task API on the listening socket passed as fd 3 (-socket names it)

Flags (Go style: -name value, -name=value or --name value):
  -namespace string        namespace that owns the shim
  -id string               id of the task
  -address string          grpc address back to main containerd
  -publish-binary string   path to publish binary (accepted; events go to TTRPC_ADDRESS)
  -bundle string           path to the bundle if not the working directory (delete)
  -socket string           socket path to serve (serve)
  -debug                   enable debug output in logs
  -info                    read runtime options from stdin, print the RuntimeInfo
                           protobuf to stdout, and exit
  -v, -version             show the shim version and exit
  -h, -help                show this help and exit
";

/// A Go `flag` boolean: bare (`-debug`) or with a value (`-debug=false`).
fn bool_value(name: &str, inline: Option<&str>) -> Result<bool, String> {
    match inline {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(format!("bad value for -{name}: {v:?}")),
    }
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with('-') || arg == "-" {
            if f.action.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            f.action = Some(arg);
            continue;
        }
        let body = arg.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        match name {
            "debug" => f.debug = bool_value(name, inline.as_deref())?,
            "v" | "version" => f.version = true,
            "info" => f.info = bool_value(name, inline.as_deref())?,
            "h" | "help" => f.help = true,
            "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .ok_or_else(|| format!("flag -{name} needs a value"))?,
                };
                let slot = match name {
                    "namespace" => &mut f.namespace,
                    "id" => &mut f.id,
                    "address" => &mut f.address,
                    "publish-binary" => &mut f.publish_binary,
                    "bundle" => &mut f.bundle,
                    _ => &mut f.socket,
                };
                *slot = value;
            }
            other => return Err(format!("unknown flag -{other}")),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn containerd_16_start_line() {
        let f = parse(v("-namespace k8s.io -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id abc -debug start")).expect("parse");
        assert_eq!(f.namespace, "k8s.io");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "abc");
        assert!(f.debug);
        assert_eq!(f.action.as_deref(), Some("start"));
    }

    #[test]
    fn delete_line_with_bundle_and_equals() {
        let f = parse(v("--namespace=default -address=/a -id x -bundle /b delete")).expect("parse");
        assert_eq!(f.namespace, "default");
        assert_eq!(f.bundle, "/b");
        assert_eq!(f.action.as_deref(), Some("delete"));
        assert!(!f.debug);
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse(v("-id")).is_err());
        assert!(parse(v("-bogus 1 start")).is_err());
        assert!(parse(v("start delete")).is_err());
        assert!(parse(v("-debug=maybe")).is_err());
        assert!(parse(v("-info=sometimes")).is_err());
    }

    #[test]
    fn info_help_and_version_flags() {
        assert!(parse(v("-info")).expect("parse").info);
        assert!(!parse(v("-info=false")).expect("parse").info);
        for h in ["-h", "-help", "--help", "--h"] {
            assert!(parse(v(h)).expect("parse").help, "{h}");
        }
        for ver in ["-v", "--version", "-version"] {
            assert!(parse(v(ver)).expect("parse").version, "{ver}");
        }
    }
}
