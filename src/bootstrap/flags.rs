//! containerd's command line for a shim, Go `flag` style: `-name value`, `-name=value`,
//! `--name value`, boolean `-debug`, then the action (`start`, `delete`; none = serve).

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
    pub action: Option<String>,
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
            "debug" => {
                f.debug = match inline.as_deref() {
                    None | Some("true") | Some("1") => true,
                    Some("false") | Some("0") => false,
                    Some(v) => return Err(format!("bad value for -debug: {v:?}")),
                }
            }
            "v" | "version" => f.version = true,
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
    }
}
