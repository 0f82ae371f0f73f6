//! The part of CRI's `runtime.v1.PodSandboxConfig` the namespace holder and the pod files need,
//! decoded from the `options` Any of `CreateSandbox`.
//!
//! Field numbers are CRI's (`k8s.io/cri-api` `api.proto`): PodSandboxConfig {2 hostname,
//! 4 dns_config, 8 linux}; DNSConfig {1 servers, 2 searches, 3 options};
//! LinuxPodSandboxConfig {1 cgroup_parent, 2 security_context, 3 sysctls};
//! LinuxSandboxSecurityContext {1 namespace_options}; NamespaceOption {1 network, 2 pid,
//! 3 ipc, 5 userns_options}; NamespaceMode POD = 0, CONTAINER = 1, NODE = 2, TARGET = 3.

use super::wire::{self, Value};

/// The `Any` type containerd's CRI packs the pod config as.
pub const TYPE_NAME: &str = "runtime.v1.PodSandboxConfig";

const MODE_NODE: u64 = 2;

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
    /// A user namespace was asked for (`userns_options` present with mode POD): refused,
    /// Tender's holder does not create user namespaces.
    pub userns: bool,
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
                5 => {
                    // UserNamespace {1 mode}: POD (0) asks for a pod user namespace.
                    let mut mode = 0;
                    for (n, v) in wire::fields(wire::message(v, "userns_options")?)? {
                        if n == 1 {
                            mode = wire::varint_value(v, "userns mode")?;
                        }
                    }
                    self.userns = mode != MODE_NODE;
                }
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
        if self.userns {
            return Err("pod user namespaces are not supported by Tender's sandboxer".into());
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
        let mut v = vec![(field << 3) | 2, body.len() as u8];
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
