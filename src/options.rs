//! Runtime options in every shape containerd sends, folded into one struct.
//!
//! * `containerd.runc.v1.Options` — runtimes named `io.containerd.runc*`, and CRI when the
//!   runtime_type is exactly io.containerd.runc.v2.
//! * `containerd.linux.runc.CreateOptions` — what containerd's client sends other runtimes.
//! * `runtimeoptions.v1.Options` — CRI's TOML (`config_body` / `config_path`).

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, Message};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub shim_cgroup: String,
    pub io_uid: u32,
    pub io_gid: u32,
    pub criu_image_path: String,
    pub criu_work_path: String,
}

pub const DEFAULT_RUNTIME: &str = "runc";
pub const DEFAULT_ROOT: &str = "/run/containerd/runc";

/// The bare message name of a type URL (`type.googleapis.com/x.y` → `x.y`).
fn type_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl Options {
    pub fn binary(&self) -> &str {
        if self.binary_name.is_empty() {
            DEFAULT_RUNTIME
        } else {
            &self.binary_name
        }
    }

    /// The runtime's state root for a namespace, as containerd's runc shim lays it out.
    pub fn runtime_root(&self, namespace: &str) -> std::path::PathBuf {
        let root = if self.root.is_empty() {
            DEFAULT_ROOT
        } else {
            &self.root
        };
        std::path::Path::new(root).join(namespace)
    }

    /// Decodes an options `Any`. An absent/empty Any means defaults.
    pub fn from_any(any: Option<&Any>) -> Result<Self, String> {
        let Some(any) = any else {
            return Ok(Self::default());
        };
        if any.type_url.is_empty() && any.value.is_empty() {
            return Ok(Self::default());
        }
        match type_name(&any.type_url) {
            "containerd.runc.v1.Options" => {
                let o = RuncOptions::parse_from_bytes(&any.value)
                    .map_err(|e| format!("bad containerd.runc.v1.Options: {e}"))?;
                Ok(Self {
                    binary_name: o.binary_name,
                    root: o.root,
                    systemd_cgroup: o.systemd_cgroup,
                    no_pivot_root: o.no_pivot_root,
                    no_new_keyring: o.no_new_keyring,
                    shim_cgroup: o.shim_cgroup,
                    io_uid: o.io_uid,
                    io_gid: o.io_gid,
                    criu_image_path: o.criu_image_path,
                    criu_work_path: o.criu_work_path,
                })
            }
            "containerd.linux.runc.CreateOptions" => decode_create_options(&any.value),
            "runtimeoptions.v1.Options" => decode_runtimeoptions(&any.value),
            other => Err(format!("unknown runtime options type {other:?}")),
        }
        .and_then(Self::validated)
    }

    fn validated(self) -> Result<Self, String> {
        if self.binary_name.contains('\0')
            || self.root.contains('\0')
            || self.shim_cgroup.contains('\0')
        {
            return Err("runtime options contain NUL".into());
        }
        if !self.root.is_empty() && !self.root.starts_with('/') {
            return Err(format!(
                "Root must be an absolute path, got {:?}",
                self.root
            ));
        }
        Ok(self)
    }

    /// Overlays options given at Create on top of those the shim was started with.
    pub fn merged_with(&self, later: &Options) -> Options {
        let pick = |a: &String, b: &String| if b.is_empty() { a.clone() } else { b.clone() };
        Options {
            binary_name: pick(&self.binary_name, &later.binary_name),
            root: pick(&self.root, &later.root),
            systemd_cgroup: self.systemd_cgroup || later.systemd_cgroup,
            no_pivot_root: self.no_pivot_root || later.no_pivot_root,
            no_new_keyring: self.no_new_keyring || later.no_new_keyring,
            shim_cgroup: pick(&self.shim_cgroup, &later.shim_cgroup),
            io_uid: if later.io_uid != 0 {
                later.io_uid
            } else {
                self.io_uid
            },
            io_gid: if later.io_gid != 0 {
                later.io_gid
            } else {
                self.io_gid
            },
            criu_image_path: pick(&self.criu_image_path, &later.criu_image_path),
            criu_work_path: pick(&self.criu_work_path, &later.criu_work_path),
        }
    }
}

/// `containerd.linux.runc.CreateOptions` (linux/runctypes): no_pivot_root=1, open_tcp=2,
/// external_unix_sockets=3, terminal=4, file_locks=5, empty_namespaces=6, cgroups_mode=7,
/// no_new_keyring=8, shim_cgroup=9, io_uid=10, io_gid=11, criu_work_path=12, criu_image_path=13.
fn decode_create_options(bytes: &[u8]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut is = CodedInputStream::from_bytes(bytes);
    let bad = |e: containerd_shim_protos::protobuf::Error| {
        format!("bad containerd.linux.runc.CreateOptions: {e}")
    };
    while !is.eof().map_err(bad)? {
        let tag = is.read_raw_varint32().map_err(bad)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match (field, wire) {
            (1, 0) => o.no_pivot_root = is.read_bool().map_err(bad)?,
            (8, 0) => o.no_new_keyring = is.read_bool().map_err(bad)?,
            (9, 2) => o.shim_cgroup = is.read_string().map_err(bad)?,
            (10, 0) => o.io_uid = is.read_uint32().map_err(bad)?,
            (11, 0) => o.io_gid = is.read_uint32().map_err(bad)?,
            (12, 2) => o.criu_work_path = is.read_string().map_err(bad)?,
            (13, 2) => o.criu_image_path = is.read_string().map_err(bad)?,
            (0, _) => return Err("bad containerd.linux.runc.CreateOptions: field 0".into()),
            (_, w) => {
                let wire =
                    containerd_shim_protos::protobuf::rt::WireType::new(w).ok_or_else(|| {
                        format!("bad containerd.linux.runc.CreateOptions: wire type {w}")
                    })?;
                is.skip_field(wire).map_err(bad)?;
            }
        }
    }
    Ok(o)
}

/// `runtimeoptions.v1.Options`: type_url=1, config_path=2, config_body=3 (TOML).
fn decode_runtimeoptions(bytes: &[u8]) -> Result<Options, String> {
    let mut is = CodedInputStream::from_bytes(bytes);
    let bad =
        |e: containerd_shim_protos::protobuf::Error| format!("bad runtimeoptions.v1.Options: {e}");
    let (mut path, mut body) = (String::new(), String::new());
    while !is.eof().map_err(bad)? {
        let tag = is.read_raw_varint32().map_err(bad)?;
        match (tag >> 3, tag & 7) {
            (2, 2) => path = is.read_string().map_err(bad)?,
            (3, 2) => body = is.read_string().map_err(bad)?,
            (0, _) => return Err("bad runtimeoptions.v1.Options: field 0".into()),
            (_, w) => {
                let wire = containerd_shim_protos::protobuf::rt::WireType::new(w)
                    .ok_or_else(|| format!("bad runtimeoptions.v1.Options: wire type {w}"))?;
                is.skip_field(wire).map_err(bad)?;
            }
        }
    }
    // containerd ≥ 1.7 also sends the whole options table as `config_body` — including the
    // `ConfigPath` key itself. When a path is given, the file is the options.
    if !path.is_empty() {
        body = std::fs::read_to_string(&path)
            .map_err(|e| format!("read options file {path:?}: {e}"))?;
    }
    Options::from_toml(&body)
}

impl Options {
    /// CRI's TOML options, with the same field names as runc's Options (BinaryName, Root, …).
    pub fn from_toml(body: &str) -> Result<Options, String> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Toml {
            #[serde(rename = "BinaryName", default)]
            binary_name: String,
            #[serde(rename = "Root", default)]
            root: String,
            #[serde(rename = "SystemdCgroup", default)]
            systemd_cgroup: bool,
            #[serde(rename = "NoPivotRoot", default)]
            no_pivot_root: bool,
            #[serde(rename = "NoNewKeyring", default)]
            no_new_keyring: bool,
            #[serde(rename = "ShimCgroup", default)]
            shim_cgroup: String,
            #[serde(rename = "IoUid", default)]
            io_uid: u32,
            #[serde(rename = "IoGid", default)]
            io_gid: u32,
            #[serde(rename = "CriuImagePath", default)]
            criu_image_path: String,
            #[serde(rename = "CriuWorkPath", default)]
            criu_work_path: String,
            #[serde(rename = "CriuPath", default)]
            _criu_path: String,
            /// Present in `config_body` when the table names a file (read instead, above).
            #[serde(rename = "ConfigPath", default)]
            _config_path: String,
        }
        if body.trim().is_empty() {
            return Ok(Options::default());
        }
        let t: Toml = toml::from_str(body).map_err(|e| format!("bad runtime options TOML: {e}"))?;
        Ok(Options {
            binary_name: t.binary_name,
            root: t.root,
            systemd_cgroup: t.systemd_cgroup,
            no_pivot_root: t.no_pivot_root,
            no_new_keyring: t.no_new_keyring,
            shim_cgroup: t.shim_cgroup,
            io_uid: t.io_uid,
            io_gid: t.io_gid,
            criu_image_path: t.criu_image_path,
            criu_work_path: t.criu_work_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_options_any() {
        let mut o = RuncOptions::new();
        o.binary_name = "crun".into();
        o.root = "/run/x".into();
        o.io_uid = 1000;
        let mut any = Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = o.write_to_bytes().expect("encode");
        let parsed = Options::from_any(Some(&any)).expect("decode");
        assert_eq!(parsed.binary_name, "crun");
        assert_eq!(parsed.root, "/run/x");
        assert_eq!(parsed.io_uid, 1000);
        any.type_url = "type.googleapis.com/containerd.runc.v1.Options".into();
        assert_eq!(Options::from_any(Some(&any)).expect("decode"), parsed);
    }

    #[test]
    fn create_options_by_field_number() {
        // no_pivot_root=1 (true), shim_cgroup=9 "/x", io_uid=10 (7), unknown field 7 string "v1"
        let bytes = [
            0x08, 0x01, 0x4a, 0x02, b'/', b'x', 0x50, 0x07, 0x3a, 0x02, b'v', b'1',
        ];
        let mut any = Any::new();
        any.type_url = "containerd.linux.runc.CreateOptions".into();
        any.value = bytes.to_vec();
        let o = Options::from_any(Some(&any)).expect("decode");
        assert!(o.no_pivot_root);
        assert_eq!(o.shim_cgroup, "/x");
        assert_eq!(o.io_uid, 7);
    }

    #[test]
    fn config_path_file_wins_over_the_body() {
        let file = std::env::temp_dir().join(format!("tender-opts-{}.toml", std::process::id()));
        std::fs::write(&file, "BinaryName = \"crun\"\n").expect("write");
        // runtimeoptions.v1.Options: config_path = 2, config_body = 3.
        let path = file.to_string_lossy().into_owned();
        let body = format!("ConfigPath = \"{path}\"\nBinaryName = \"runc\"\n");
        let mut bytes = vec![0x12, path.len() as u8];
        bytes.extend_from_slice(path.as_bytes());
        bytes.push(0x1a);
        bytes.push(body.len() as u8);
        bytes.extend_from_slice(body.as_bytes());
        let mut any = Any::new();
        any.type_url = "runtimeoptions.v1.Options".into();
        any.value = bytes;
        let o = Options::from_any(Some(&any));
        let _ = std::fs::remove_file(&file);
        assert_eq!(o.expect("options").binary_name, "crun");
        // The body alone (no path) is read as it is, ConfigPath key and all.
        let o = Options::from_toml("ConfigPath = \"\"\nBinaryName = \"runc\"").expect("toml");
        assert_eq!(o.binary_name, "runc");
    }

    #[test]
    fn toml_options_and_errors() {
        let o = Options::from_toml("BinaryName = \"crun\"\nSystemdCgroup = false\nIoUid = 5\n")
            .expect("toml");
        assert_eq!(o.binary_name, "crun");
        assert_eq!(o.io_uid, 5);
        assert!(Options::from_toml("Bogus = 1").is_err());
        assert!(Options::from_toml("BinaryName = 3").is_err());
        let mut any = Any::new();
        any.type_url = "example.Unknown".into();
        any.value = vec![1];
        assert!(Options::from_any(Some(&any)).is_err());
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = vec![0xff, 0xff, 0xff];
        assert!(Options::from_any(Some(&any)).is_err());
        any.type_url = "containerd.runc.v1.Options".into();
        let mut o = RuncOptions::new();
        o.root = "relative".into();
        any.value = o.write_to_bytes().expect("encode");
        assert!(Options::from_any(Some(&any)).is_err());
    }
}
