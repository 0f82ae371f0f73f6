//! The part of CRI's `runtime.v1.PodSandboxConfig` the namespace holder and the pod files need,
//! decoded from the `options` Any of `CreateSandbox`.
//!
//! Field numbers are CRI's (`k8s.io/cri-api` `api.proto`): PodSandboxConfig {2 hostname,
//! 4 dns_config, 8 linux}; DNSConfig {1 servers, 2 searches, 3 options};
//! LinuxPodSandboxConfig {1 cgroup_parent, 2 security_context, 3 sysctls};
//! LinuxSandboxSecurityContext {1 namespace_options}; NamespaceOption {1 network, 2 pid,
//! 3 ipc, 5 userns_options}; UserNamespace {1 mode, 2 uids, 3 gids}; IDMapping {1 host_id,
//! 2 container_id, 3 length}; NamespaceMode POD = 0, CONTAINER = 1, NODE = 2, TARGET = 3.

use super::wire::{self, Value};

/// The `Any` type containerd's CRI packs the pod config as.
pub const TYPE_NAME: &str = "runtime.v1.PodSandboxConfig";

const MODE_POD: u64 = 0;
const MODE_NODE: u64 = 2;
/// The kernel's limit on the lines of a `uid_map` / `gid_map` (`man 7 user_namespaces`).
pub const MAX_ID_MAPPINGS: usize = 340;

/// One line of a `uid_map` / `gid_map`: `container_id host_id length`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// A pod user namespace (CRI `userns_options` with mode POD, Kubernetes `hostUsers: false`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserNs {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodConfig {
    pub hostname: String,
    pub dns: Option<Dns>,
    pub cgroup_parent: String,
    /// In the node's namespace (CRI `NODE`) rather than the pod's own.
    pub host_network: bool,
    pub host_pid: bool,
    pub host_ipc: bool,
    /// The pod's user namespace (`userns_options` with mode POD); None = the node's.
    pub userns: Option<UserNs>,
    pub sysctls: Vec<(String, String)>,
}

impl PodConfig {
    /// Decodes the `options` of CreateSandbox. No options at all is an empty config (every
    /// namespace the pod's own); options of another type are an error.
    pub fn from_any(type_url: &str, value: &[u8]) -> Result<PodConfig, String> {
        if type_url.is_empty() && value.is_empty() {
            return Ok(PodConfig::default());
        }
        let name = type_url.rsplit('/').next().unwrap_or_default();
        if name != TYPE_NAME {
            return Err(format!(
                "sandbox options of type {name:?}: expected {TYPE_NAME}"
            ));
        }
        Self::decode(value)
    }

    pub fn decode(buf: &[u8]) -> Result<PodConfig, String> {
        let mut c = PodConfig::default();
        for (n, v) in wire::fields(buf)? {
            match n {
                2 => c.hostname = wire::string(v, "hostname")?,
                4 => c.dns = Some(dns(wire::message(v, "dns_config")?)?),
                8 => c.linux(wire::message(v, "linux")?)?,
                _ => {}
            }
        }
        c.validate()?;
        Ok(c)
    }

    fn linux(&mut self, buf: &[u8]) -> Result<(), String> {
        for (n, v) in wire::fields(buf)? {
            match n {
                1 => self.cgroup_parent = wire::string(v, "cgroup_parent")?,
                2 => {
                    for (n, v) in wire::fields(wire::message(v, "security_context")?)? {
                        if n == 1 {
                            self.namespaces(wire::message(v, "namespace_options")?)?;
                        }
                    }
                }
                3 => self.sysctls.push(wire::map_entry(v, "sysctls")?),
                _ => {}
            }
        }
        Ok(())
    }

    fn namespaces(&mut self, buf: &[u8]) -> Result<(), String> {
        for (n, v) in wire::fields(buf)? {
            let node = |v: Value<'_>, what| wire::varint_value(v, what).map(|m| m == MODE_NODE);
            match n {
                1 => self.host_network = node(v, "network")?,
                2 => self.host_pid = node(v, "pid")?,
                3 => self.host_ipc = node(v, "ipc")?,
                5 => self.userns = userns(wire::message(v, "userns_options")?)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// What the holder could not honour safely is refused here, before anything is created.
    fn validate(&self) -> Result<(), String> {
        if self.hostname.len() > 64 || self.hostname.contains(['\0', '/', '\n']) {
            return Err(format!("invalid hostname {:?}", self.hostname));
        }
        if self.cgroup_parent.contains('\0') || self.cgroup_parent.split('/').any(|c| c == "..") {
            return Err(format!("invalid cgroup_parent {:?}", self.cgroup_parent));
        }
        if let Some(u) = &self.userns {
            if self.host_network || self.host_pid || self.host_ipc {
                return Err(
                    "a pod with its own user namespace cannot use the node's network, PID or \
                     IPC namespace"
                        .into(),
                );
            }
            check_mappings("uid", &u.uids)?;
            check_mappings("gid", &u.gids)?;
        }
        for (k, v) in &self.sysctls {
            self.check_sysctl(k, v)?;
        }
        if let Some(d) = &self.dns {
            for s in d.servers.iter().chain(&d.searches).chain(&d.options) {
                if s.contains(['\n', '\0']) || s.is_empty() {
                    return Err(format!("invalid DNS entry {s:?}"));
                }
            }
        }
        Ok(())
    }

    /// Only sysctls the pod's own namespaces isolate: written from inside the holder, any other
    /// would change the node. Network ones need the pod's network namespace, IPC ones its IPC
    /// namespace (as runc checks for containers).
    fn check_sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        let bad_key = key.is_empty()
            || key.starts_with('.')
            || key.contains("..")
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if bad_key || value.contains(['\0', '\n']) {
            return Err(format!("invalid sysctl {key:?}={value:?}"));
        }
        let ipc = key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.");
        let net = key.starts_with("net.");
        match (ipc, net) {
            (true, _) if self.host_ipc => Err(format!(
                "sysctl {key}: not allowed with the host's IPC namespace"
            )),
            (_, true) if self.host_network => Err(format!(
                "sysctl {key}: not allowed with the host's network namespace"
            )),
            (true, _) | (_, true) => Ok(()),
            _ => Err(format!("sysctl {key} is not namespaced: refused")),
        }
    }
}

/// `UserNamespace`: None for mode NODE, the mappings for POD; other modes are refused.
fn userns(buf: &[u8]) -> Result<Option<UserNs>, String> {
    let mut mode = MODE_POD;
    let mut u = UserNs::default();
    for (n, v) in wire::fields(buf)? {
        match n {
            1 => mode = wire::varint_value(v, "userns mode")?,
            2 => u.uids.push(id_mapping(wire::message(v, "uid mapping")?)?),
            3 => u.gids.push(id_mapping(wire::message(v, "gid mapping")?)?),
            _ => {}
        }
        if u.uids.len() > MAX_ID_MAPPINGS || u.gids.len() > MAX_ID_MAPPINGS {
            return Err(format!(
                "more than {MAX_ID_MAPPINGS} user namespace id mappings"
            ));
        }
    }
    match mode {
        MODE_NODE => Ok(None),
        MODE_POD => Ok(Some(u)),
        m => Err(format!(
            "user namespace mode {m}: only POD (0) and NODE (2) are supported"
        )),
    }
}

fn id_mapping(buf: &[u8]) -> Result<IdMapping, String> {
    let mut m = IdMapping::default();
    for (n, v) in wire::fields(buf)? {
        let field = match n {
            1 => &mut m.host_id,
            2 => &mut m.container_id,
            3 => &mut m.length,
            _ => continue,
        };
        *field = u32::try_from(wire::varint_value(v, "id mapping")?)
            .map_err(|_| "id mapping: value out of the uint32 range".to_string())?;
    }
    Ok(m)
}

/// What the kernel would refuse in a `uid_map`/`gid_map`, refused first with a clear message:
/// no mapping, an empty range, a range past 2^32, more than 340 lines, overlapping ranges.
pub fn check_mappings(what: &str, maps: &[IdMapping]) -> Result<(), String> {
    if maps.is_empty() {
        return Err(format!("pod user namespace: no {what} mapping"));
    }
    if maps.len() > MAX_ID_MAPPINGS {
        return Err(format!(
            "pod user namespace: {} {what} mappings, at most {MAX_ID_MAPPINGS}",
            maps.len()
        ));
    }
    const END: u64 = 1 << 32;
    for m in maps {
        let (c, h, l) = (
            u64::from(m.container_id),
            u64::from(m.host_id),
            u64::from(m.length),
        );
        if l == 0 || c + l > END || h + l > END {
            return Err(format!(
                "pod user namespace: invalid {what} mapping {}:{}:{} (container:host:length)",
                m.container_id, m.host_id, m.length
            ));
        }
    }
    let overlap = |key: fn(&IdMapping) -> u32| {
        let mut r: Vec<(u64, u64)> = maps
            .iter()
            .map(|m| (u64::from(key(m)), u64::from(key(m)) + u64::from(m.length)))
            .collect();
        r.sort_unstable();
        r.windows(2).any(|w| w[1].0 < w[0].1)
    };
    if overlap(|m| m.container_id) || overlap(|m| m.host_id) {
        return Err(format!("pod user namespace: overlapping {what} mappings"));
    }
    Ok(())
}

/// The `uid_map` text of `maps` (one `container host length` line each).
pub fn map_text(maps: &[IdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
        .collect()
}

fn dns(buf: &[u8]) -> Result<Dns, String> {
    let mut d = Dns::default();
    for (n, v) in wire::fields(buf)? {
        match n {
            1 => d.servers.push(wire::string(v, "dns server")?),
            2 => d.searches.push(wire::string(v, "dns search")?),
            3 => d.options.push(wire::string(v, "dns option")?),
            _ => {}
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, body: &[u8]) -> Vec<u8> {
        // The key, then the length as a varint (varint() writes a wire-type-0 key first).
        let mut v = vec![(field << 3) | 2];
        v.extend_from_slice(&varint(0, body.len() as u64)[1..]);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_the_fields_it_needs() {
        let ns = [0x08, 0x02, 0x10, 0x00, 0x18, 0x02]; // network NODE, pid POD, ipc NODE
        let sc = ld(1, &ns);
        let mut linux = ld(1, b"/pods/p1");
        linux.extend(ld(2, &sc));
        let mut entry = ld(1, b"kernel.shmmax");
        entry.extend(ld(2, b"1000"));
        linux.extend(ld(3, &entry));
        let mut dns = ld(1, b"10.0.0.10");
        dns.extend(ld(2, b"svc.local"));
        dns.extend(ld(3, b"ndots:5"));
        let mut buf = ld(2, b"web-0");
        buf.extend(ld(4, &dns));
        buf.extend(ld(8, &linux));
        // host IPC: the IPC sysctl is refused
        assert!(PodConfig::decode(&buf).is_err());
        let ns = [0x08, 0x00, 0x10, 0x02, 0x18, 0x00];
        let mut linux = ld(1, b"/pods/p1");
        linux.extend(ld(2, &ld(1, &ns)));
        linux.extend(ld(3, &entry));
        let mut buf = ld(2, b"web-0");
        buf.extend(ld(4, &dns));
        buf.extend(ld(8, &linux));
        let c = PodConfig::decode(&buf).expect("valid");
        assert_eq!(c.hostname, "web-0");
        assert_eq!(c.cgroup_parent, "/pods/p1");
        assert!(!c.host_network && c.host_pid && !c.host_ipc);
        assert_eq!(c.sysctls, vec![("kernel.shmmax".into(), "1000".into())]);
        let d = c.dns.expect("dns");
        assert_eq!(d.options, vec!["ndots:5".to_string()]);
    }

    /// Arbitrary bytes never panic the decoder (a simple LCG, so the test is repeatable).
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..2000usize {
            let buf: Vec<u8> = (0..len % 64)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 56) as u8
                })
                .collect();
            let _ = PodConfig::decode(&buf);
        }
    }

    fn varint(field: u8, v: u64) -> Vec<u8> {
        let mut out = vec![field << 3];
        let mut v = v;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn mapping(host: u64, container: u64, len: u64) -> Vec<u8> {
        let mut m = varint(1, host);
        m.extend(varint(2, container));
        m.extend(varint(3, len));
        m
    }

    /// A pod config with `userns_options` {mode, uids, gids} and the given network mode.
    fn userns_pod(mode: u64, uids: &[Vec<u8>], gids: &[Vec<u8>], network: u64) -> Vec<u8> {
        let mut u = varint(1, mode);
        for m in uids {
            u.extend(ld(2, m));
        }
        for m in gids {
            u.extend(ld(3, m));
        }
        let mut ns = varint(1, network);
        ns.extend(ld(5, &u));
        ld(8, &ld(2, &ld(1, &ns)))
    }

    #[test]
    fn decodes_and_checks_user_namespaces() {
        let good = [mapping(65536, 0, 65536)];
        let c = PodConfig::decode(&userns_pod(0, &good, &good, 0)).expect("valid userns pod");
        let want = IdMapping {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        let u = c.userns.expect("userns");
        assert_eq!((u.uids, u.gids), (vec![want], vec![want]));
        assert_eq!(map_text(&[want]), "0 65536 65536\n");
        // NODE: no pod user namespace.
        let c = PodConfig::decode(&userns_pod(2, &[], &[], 0)).expect("node userns");
        assert_eq!(c.userns, None);
        let too_many: Vec<Vec<u8>> = (0..341).map(|i| mapping(100_000 + i, i, 1)).collect();
        let max: Vec<Vec<u8>> = (0..340).map(|i| mapping(100_000 + i, i, 1)).collect();
        assert!(PodConfig::decode(&userns_pod(0, &max, &good, 0)).is_ok());
        for (what, buf) in [
            ("no uids", userns_pod(0, &[], &good, 0)),
            ("no gids", userns_pod(0, &good, &[], 0)),
            ("length 0", userns_pod(0, &[mapping(1000, 0, 0)], &good, 0)),
            (
                "container overflow",
                userns_pod(0, &[mapping(0, 0xffff_ffff, 2)], &good, 0),
            ),
            (
                "host overflow",
                userns_pod(0, &good, &[mapping(0xffff_0000, 0, 0x1_0000 + 1)], 0),
            ),
            (
                "over u32",
                userns_pod(0, &[mapping(1 << 32, 0, 1)], &good, 0),
            ),
            (
                "overlap",
                userns_pod(
                    0,
                    &[mapping(100_000, 0, 10), mapping(200_000, 5, 10)],
                    &good,
                    0,
                ),
            ),
            (
                "host overlap",
                userns_pod(
                    0,
                    &[mapping(100_000, 0, 10), mapping(100_005, 100, 10)],
                    &good,
                    0,
                ),
            ),
            ("341 lines", userns_pod(0, &too_many, &good, 0)),
            ("mode CONTAINER", userns_pod(1, &good, &good, 0)),
            ("host network", userns_pod(0, &good, &good, 2)),
        ] {
            assert!(PodConfig::decode(&buf).is_err(), "{what}: accepted");
        }
    }

    #[test]
    fn refuses_node_wide_sysctls_and_bad_types() {
        let mut entry = ld(1, b"kernel.hostname");
        entry.extend(ld(2, b"x"));
        let buf = ld(8, &ld(3, &entry));
        assert!(PodConfig::decode(&buf).is_err());
        assert!(PodConfig::from_any("containerd.Other", b"").is_err());
        assert_eq!(PodConfig::from_any("", b""), Ok(PodConfig::default()));
        assert!(PodConfig::decode(&[0x42, 0x05, 0x0a]).is_err());
    }
}
