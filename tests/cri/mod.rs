//! Support for the CRI end-to-end tests: a private containerd with its built-in CRI plugin
//! (`io.containerd.grpc.v1.cri`) and a runtime handler `tender`, a CRI gRPC client over the
//! unix socket, a locally built pause image, a private CNI bridge network, a client for the
//! streaming Exec (websocket, `v4.channel.k8s.io`) and a parser for CRI log files.
#![allow(dead_code)]

pub mod api;
pub mod config;

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{
    self, busybox_image, kill_and_remove_cgroup_tree, mounts_containing, run_cmd, Containerd,
    ContainerdLayout, Ctr,
};

/// The runtime handler name (`runtime_handler` in RunPodSandbox, `handler` of a RuntimeClass).
pub const HANDLER: &str = "tender";
/// CRI's containerd namespace.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The sandbox ("pause") image, built locally from the busybox image.
pub const PAUSE_REF: &str = "registry.k8s.io/pause:tender";
/// Where Debian's containernetworking-plugins installs the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Per-call deadline of a CRI RPC (StopContainer adds its own grace period).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// What the CRI tests need on top of the harness's prerequisites, as `(what, present)`.
pub fn prerequisites() -> Vec<(&'static str, bool)> {
    let cni = ["bridge", "host-local", "loopback"]
        .iter()
        .all(|p| Path::new(CNI_BIN_DIR).join(p).is_file());
    vec![(
        "CNI plugins bridge, host-local, loopback in /usr/lib/cni (containernetworking-plugins)",
        cni,
    )]
}

// ---------------------------------------------------------------------------
// CRI client
// ---------------------------------------------------------------------------

/// A blocking CRI client (RuntimeService + ImageService, `runtime.v1`) over a unix socket.
pub struct CriClient {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

impl CriClient {
    pub fn connect(socket: &Path) -> Result<CriClient, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let channel = rt
            .block_on(common::unix_channel(socket.to_path_buf()))
            .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
        Ok(CriClient { rt, channel })
    }

    /// One unary call of `runtime.v1.<service>/<method>`.
    pub fn call<Req, Resp>(
        &self,
        service: &str,
        method: &str,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let path = format!("/runtime.v1.{service}/{method}");
        let path = tonic::codegen::http::uri::PathAndQuery::try_from(path)
            .map_err(|e| tonic::Status::internal(format!("bad path: {e}")))?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        self.rt.block_on(async move {
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
                let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                grpc.unary(tonic::Request::new(req), path, codec)
                    .await
                    .map(|r| r.into_inner())
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                    "{service}/{method}: no answer within {timeout:?}"
                ))),
            }
        })
    }

    pub fn runtime<Req, Resp>(&self, method: &str, req: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.call("RuntimeService", method, req, RPC_TIMEOUT)
    }

    pub fn version(&self) -> Result<api::VersionResponse, tonic::Status> {
        self.runtime(
            "Version",
            api::VersionRequest {
                version: "v1".into(),
            },
        )
    }

    pub fn status(&self) -> Result<api::StatusResponse, tonic::Status> {
        self.runtime("Status", api::StatusRequest { verbose: false })
    }

    pub fn image_status(&self, image: &str) -> Result<api::ImageStatusResponse, tonic::Status> {
        self.call(
            "ImageService",
            "ImageStatus",
            api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            },
            RPC_TIMEOUT,
        )
    }

    pub fn run_pod_sandbox(
        &self,
        config: &api::PodSandboxConfig,
        handler: &str,
    ) -> Result<String, tonic::Status> {
        let r: api::RunPodSandboxResponse = self.runtime(
            "RunPodSandbox",
            api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            },
        )?;
        Ok(r.pod_sandbox_id)
    }

    pub fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<api::PodSandboxStatusResponse, tonic::Status> {
        self.runtime(
            "PodSandboxStatus",
            api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose,
            },
        )
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        let _: api::StopPodSandboxResponse = self.runtime(
            "StopPodSandbox",
            api::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), tonic::Status> {
        let _: api::RemovePodSandboxResponse = self.runtime(
            "RemovePodSandbox",
            api::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            },
        )?;
        Ok(())
    }

    pub fn create_container(
        &self,
        pod_id: &str,
        config: &api::ContainerConfig,
        sandbox_config: &api::PodSandboxConfig,
    ) -> Result<String, tonic::Status> {
        let r: api::CreateContainerResponse = self.runtime(
            "CreateContainer",
            api::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config.clone()),
                sandbox_config: Some(sandbox_config.clone()),
            },
        )?;
        Ok(r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        let _: api::StartContainerResponse = self.runtime(
            "StartContainer",
            api::StartContainerRequest {
                container_id: id.into(),
            },
        )?;
        Ok(())
    }

    /// StopContainer with a grace period of `timeout_s` seconds.
    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<(), tonic::Status> {
        let _: api::StopContainerResponse = self.call(
            "RuntimeService",
            "StopContainer",
            api::StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_s,
            },
            RPC_TIMEOUT + Duration::from_secs(timeout_s.max(0) as u64),
        )?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<(), tonic::Status> {
        let _: api::RemoveContainerResponse = self.runtime(
            "RemoveContainer",
            api::RemoveContainerRequest {
                container_id: id.into(),
            },
        )?;
        Ok(())
    }

    pub fn container_status(&self, id: &str) -> Result<api::ContainerStatus, tonic::Status> {
        let r: api::ContainerStatusResponse = self.runtime(
            "ContainerStatus",
            api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            },
        )?;
        r.status
            .ok_or_else(|| tonic::Status::internal("ContainerStatus without status"))
    }

    pub fn list_containers(&self, pod_id: &str) -> Result<Vec<api::Container>, tonic::Status> {
        let r: api::ListContainersResponse = self.runtime(
            "ListContainers",
            api::ListContainersRequest {
                filter: Some(api::ContainerFilter {
                    pod_sandbox_id: pod_id.into(),
                    ..Default::default()
                }),
            },
        )?;
        Ok(r.containers)
    }

    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> Result<api::ExecSyncResponse, tonic::Status> {
        self.call(
            "RuntimeService",
            "ExecSync",
            api::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_s,
            },
            RPC_TIMEOUT + Duration::from_secs(timeout_s.max(0) as u64),
        )
    }

    /// The Exec RPC: returns the streaming server's URL for this exec.
    pub fn exec_url(&self, id: &str, cmd: &[&str]) -> Result<String, tonic::Status> {
        let r: api::ExecResponse = self.runtime(
            "Exec",
            api::ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            },
        )?;
        Ok(r.url)
    }

    /// Polls ContainerStatus until `pred` holds; returns the last status either way.
    pub fn wait_container(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&api::ContainerStatus) -> bool,
    ) -> (bool, Option<api::ContainerStatus>) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(s) = self.container_status(id) {
                let ok = pred(&s);
                last = Some(s);
                if ok {
                    return (true, last);
                }
            }
            if Instant::now() >= deadline {
                return (false, last);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The namespaces as the kubelet sends them: the pod's network and IPC, a PID namespace of the
/// container's own.
pub fn kubelet_namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        target_id: String::new(),
        userns_options: None,
    }
}

/// A container of the test image running `command`, logging to `<name>.log`, with the
/// kubelet's namespaces and `resources`.
pub fn container_config(
    name: &str,
    command: &[&str],
    resources: Option<api::LinuxContainerResources>,
) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: common::IMAGE_REF.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(api::LinuxContainerConfig {
            resources,
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

pub fn is_state(s: &api::ContainerStatus, state: api::ContainerState) -> bool {
    s.state == state as i32
}

// ---------------------------------------------------------------------------
// The private CRI node
// ---------------------------------------------------------------------------

/// What a [`CriNode`] runs: the containerd build, the binary behind `io.containerd.tender.v2`,
/// the `runtime_type` of the `tender` handler and extra directories on containerd's PATH
/// (searched after the Tender symlink, before the normal PATH: e.g. another Go shim).
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub build: common::ContainerdBuild,
    pub shim: PathBuf,
    pub runtime: String,
    pub runtime_dirs: Vec<PathBuf>,
}

impl NodeOptions {
    /// The suite's: the containerd under test, cargo's shim, `TENDER_E2E_RUNTIME`.
    pub fn for_suite() -> NodeOptions {
        NodeOptions {
            build: common::containerd_version(),
            shim: PathBuf::from(common::SHIM_BIN),
            runtime: common::runtime(),
            runtime_dirs: Vec::new(),
        }
    }
}

/// A private containerd with the CRI plugin, a `tender` runtime handler, a private CNI bridge
/// network and the busybox + pause images in `k8s.io`. Dropping it removes what the pods may
/// have left (pods through CRI, cgroups under the private parent, network namespaces, the
/// bridge), then the containerd itself.
pub struct CriNode {
    pub cd: Containerd,
    pub cri: CriClient,
    /// `linux.cgroup_parent` for the pods (unique, so cleanup can kill the whole tree).
    pub cgroup_parent: String,
    /// The CNI bridge in the host's network namespace (has no address).
    pub bridge: String,
    pub subnet: String,
    /// runc's `--root` given to the shim through the handler's options (`Root`).
    pub runc_root: PathBuf,
    /// Pod log directories live under here.
    pub logs: PathBuf,
    netns: Mutex<Vec<PathBuf>>,
}

impl CriNode {
    /// A node whose config starts as the CRI suite's does for the containerd under test
    /// ([`config::Start::for_suite`]).
    pub fn start() -> CriNode {
        CriNode::start_from(config::Start::for_suite(&common::containerd_version()))
    }

    /// A node whose config is `start` plus the README's snippets for it.
    pub fn start_from(start: config::Start) -> CriNode {
        CriNode::start_from_user(|l| config::user_config(start, &l.build))
    }

    /// A node whose user config (before the private overrides of
    /// [`config::private_config`]) is what `user` returns for the instance's layout.
    pub fn start_from_user(user: impl FnOnce(&ContainerdLayout) -> String) -> CriNode {
        CriNode::start_custom(NodeOptions::for_suite(), user, |_, text| text)
    }

    /// A node on `opts`' containerd build and shim binary, whose user config is what `user`
    /// returns for the instance's layout, and whose final config (user config plus the private
    /// overrides) `finish` may still change (the pod benchmark turns debug logging off).
    pub fn start_custom(
        opts: NodeOptions,
        user: impl FnOnce(&ContainerdLayout) -> String,
        finish: impl FnOnce(&ContainerdLayout, String) -> String,
    ) -> CriNode {
        let pid = std::process::id();
        let uniq = common::unique_id("cri");
        let cgroup_parent = format!("/tender-e2e-{uniq}");
        // Unique per node: nodes of one test process run side by side, and each removes its
        // bridge when it is dropped.
        static NODES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let bridge = format!("tndr{:x}n{}", pid & 0xf_ffff, n % 1000);
        let subnet = format!(
            "10.213.{}.0/24",
            (pid.wrapping_mul(7).wrapping_add(n)) % 250
        );
        let runtime = opts.runtime;
        let pause = pause_image();
        let mut runc_root = PathBuf::new();
        let mut logs = PathBuf::new();
        let (b, s) = (bridge.clone(), subnet.clone());
        let dirs: Vec<&Path> = opts.runtime_dirs.iter().map(PathBuf::as_path).collect();
        let cd = Containerd::start_build_with_shim(opts.build, &opts.shim, &dirs, |l| {
            runc_root = l.dir.join("runc");
            logs = l.dir.join("pods");
            let text = cri_config(l, user(l), &runtime, &b, &s);
            finish(l, text)
        });
        let cri = match CriClient::connect(&cd.socket) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{}", cd.log_tail(40)),
        };
        let node = CriNode {
            cd,
            cri,
            cgroup_parent,
            bridge,
            subnet,
            runc_root,
            logs,
            netns: Mutex::new(Vec::new()),
        };
        node.wait_cri_ready();
        node.import_images(&pause);
        node
    }

    /// CRI is served and reports RuntimeReady and NetworkReady (the CNI config is loaded).
    fn wait_cri_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last: String;
        loop {
            match self.cri.status() {
                Ok(s) => {
                    let conds = s.status.map(|s| s.conditions).unwrap_or_default();
                    let ready = |t: &str| conds.iter().any(|c| c.r#type == t && c.status);
                    if ready("RuntimeReady") && ready("NetworkReady") {
                        return;
                    }
                    last = format!("conditions: {conds:?}");
                }
                Err(e) => {
                    let log = self.cd.log_text();
                    if let Some(l) = log
                        .lines()
                        .find(|l| l.contains("failed to load plugin io.containerd.grpc.v1.cri"))
                    {
                        panic!("containerd did not load its CRI plugin: {l}");
                    }
                    last = format!("Status: {e}");
                }
            }
            if Instant::now() >= deadline {
                panic!("the CRI plugin did not become ready within 30s; {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ctr` bound to `k8s.io` of this containerd.
    pub fn ctr(&self) -> Ctr<'_> {
        Ctr {
            cd: &self.cd,
            namespace: K8S_NAMESPACE.into(),
            runtime: self.cd.runtime.clone(),
        }
    }

    fn import_images(&self, pause: &Path) {
        let c = self.ctr();
        let busybox = busybox_image();
        for (base, archive) in [
            ("docker.io/library/busybox", busybox.as_path()),
            ("registry.k8s.io/pause", pause),
        ] {
            let archive = archive.to_string_lossy().into_owned();
            c.ctr_ok(&["images", "import", "--base-name", base, &archive]);
        }
        // The CRI plugin learns about imported images from containerd's events.
        for image in [common::IMAGE_REF, PAUSE_REF] {
            let seen =
                common::wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
                    self.cri
                        .image_status(image)
                        .ok()
                        .and_then(|r| r.image)
                        .map(|_| ())
                });
            if seen.is_none() {
                panic!("CRI does not see image {image} after `ctr -n k8s.io images import`");
            }
        }
    }

    /// The last `n` lines of containerd's log, each cut to 300 characters (CRI logs whole
    /// OCI specs at debug level).
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.cd.log_text();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.contains("loading plugin"))
            .map(|l| {
                let mut cut = l.len().min(300);
                while !l.is_char_boundary(cut) {
                    cut -= 1;
                }
                if cut < l.len() {
                    format!("{}…", &l[..cut])
                } else {
                    l.to_string()
                }
            })
            .collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "----- containerd log tail ({}) -----\n{}\n----- end of containerd log -----",
            self.cd.log_path.display(),
            lines[start..].join("\n")
        )
    }

    /// The shim address containerd recorded for task `id` (bundle `address` file).
    pub fn shim_address(&self, id: &str) -> Option<String> {
        let bundle = self
            .cd
            .state
            .join("io.containerd.runtime.v2.task")
            .join(K8S_NAMESPACE)
            .join(id);
        fs::read_to_string(bundle.join("address"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Remembers a pod network namespace so that teardown removes it if the test fails.
    pub fn track_netns(&self, path: &Path) {
        if let Ok(mut v) = self.netns.lock() {
            v.push(path.to_path_buf());
        }
    }

    /// A pod sandbox config: private cgroup parent, its own log directory, pod network
    /// namespace, container PID namespaces.
    pub fn pod_config(&self, name: &str) -> api::PodSandboxConfig {
        let uid = common::unique_id(name);
        let log_directory = self.logs.join(&uid);
        if let Err(e) = fs::create_dir_all(&log_directory) {
            panic!("mkdir {}: {e}", log_directory.display());
        }
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid,
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.display().to_string(),
            dns_config: None,
            labels: HashMap::from([("app".to_string(), name.to_string())]),
            annotations: HashMap::new(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                sysctls: HashMap::new(),
            }),
        }
    }

    /// Teardown that must happen whether or not the test passed.
    fn cleanup(&self) {
        // 1. Pods still known to CRI: stop and remove (kills their containers, frees netns).
        if let Ok(r) = self.cri.call::<_, ListPodSandboxResponse>(
            "RuntimeService",
            "ListPodSandbox",
            ListPodSandboxRequest {},
            Duration::from_secs(5),
        ) {
            for p in r.items {
                let _ = self.cri.call::<_, api::StopPodSandboxResponse>(
                    "RuntimeService",
                    "StopPodSandbox",
                    api::StopPodSandboxRequest {
                        pod_sandbox_id: p.id.clone(),
                    },
                    Duration::from_secs(10),
                );
                let _ = self.cri.call::<_, api::RemovePodSandboxResponse>(
                    "RuntimeService",
                    "RemovePodSandbox",
                    api::RemovePodSandboxRequest {
                        pod_sandbox_id: p.id,
                    },
                    Duration::from_secs(10),
                );
            }
        }
        // 2. Whatever still runs under the pods' cgroup parent.
        for root in cgroup_roots(&self.cgroup_parent) {
            kill_and_remove_cgroup_tree(&root);
        }
        // 3. Network namespaces CRI did not remove.
        let netns = self.netns.lock().map(|v| v.clone()).unwrap_or_default();
        for ns in netns {
            if ns.exists() {
                let _ = Command::new("umount").arg(&ns).status();
                let _ = fs::remove_file(&ns);
            }
        }
        // 4. The bridge the CNI plugin created in the host namespace.
        let mut ip = Command::new("ip");
        ip.args(["link", "delete", &self.bridge]);
        let _ = run_cmd(ip, Duration::from_secs(5));
    }
}

impl Drop for CriNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(150));
        }
        self.cleanup();
        // `cd` (the containerd) is dropped after this: stops it, unmounts, removes its dir.
    }
}

/// Empty `ListPodSandboxRequest` (no filter) — only teardown lists pods.
#[derive(Clone, PartialEq, prost::Message)]
struct ListPodSandboxRequest {}

#[derive(Clone, PartialEq, prost::Message)]
struct PodSandboxItem {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListPodSandboxResponse {
    #[prost(message, repeated, tag = "1")]
    items: Vec<PodSandboxItem>,
}

/// The cgroup directories of `parent` in every hierarchy (v1: one per controller; v2: one).
pub fn cgroup_roots(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let mut roots = vec![Path::new("/sys/fs/cgroup").join(rel)];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                roots.push(e.path().join(rel));
            }
        }
    }
    roots.into_iter().filter(|r| r.is_dir()).collect()
}

/// The node's config: the user's config for `start` (README snippets included, see
/// [`config`]) plus the private overrides, and the CNI network it names.
fn cri_config(
    l: &ContainerdLayout,
    user: String,
    runtime: &str,
    bridge: &str,
    subnet: &str,
) -> String {
    let cni_conf = l.dir.join("cni").join("net.d");
    let ipam = l.dir.join("cni").join("ipam");
    for d in [&cni_conf, &ipam] {
        if let Err(e) = fs::create_dir_all(d) {
            panic!("mkdir {}: {e}", d.display());
        }
    }
    // A bridge without an address in the host namespace (isGateway=false): pods get a 10.x
    // address on a link that exists only on this machine. containerd itself sets up `lo`
    // in every pod namespace with the loopback plugin from bin_dir.
    let conflist = format!(
        r#"{{
  "cniVersion": "0.4.0",
  "name": "tender-e2e",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {{
        "type": "host-local",
        "ranges": [[{{ "subnet": "{subnet}" }}]],
        "dataDir": "{ipam}"
      }}
    }}
  ]
}}
"#,
        ipam = ipam.display()
    );
    let conf_path = cni_conf.join("10-tender-e2e.conflist");
    if let Err(e) = fs::write(&conf_path, conflist) {
        panic!("write {}: {e}", conf_path.display());
    }
    let text = config::private_config(
        &user,
        &config::Private {
            layout: l,
            runtime,
            cni_conf_dir: &cni_conf,
            pause_ref: PAUSE_REF,
            cni_bin_dir: CNI_BIN_DIR,
            runc_root: &l.dir.join("runc"),
        },
    );
    let _ = fs::write(l.dir.join("config.user.toml"), user);
    text
}

// ---------------------------------------------------------------------------
// Pause image
// ---------------------------------------------------------------------------

/// An OCI archive of the sandbox image: the busybox layer with `sleep` as its entrypoint
/// (PID 1 of the sandbox; CRI stops sandboxes with SIGKILL, so ignoring SIGTERM is fine).
/// Built once, cached under `target/` next to the busybox archive.
pub fn pause_image() -> PathBuf {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match IMAGE.get_or_init(build_pause_image) {
        Ok(p) => p.clone(),
        Err(e) => panic!("building the pause image failed: {e}"),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn build_pause_image() -> Result<PathBuf, String> {
    let busybox = busybox_image();
    let name = busybox
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = busybox.with_file_name(format!("pause-{name}"));
    if out.is_file() {
        return Ok(out);
    }
    let work = out.with_extension(format!("work.{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("mkdir {}: {e}", work.display()))?;
    let result = (|| {
        let mut tar = Command::new("tar");
        tar.arg("-xf").arg(&busybox).arg("-C").arg(&work);
        let o = run_cmd(tar, Duration::from_secs(60));
        if !o.success() {
            return Err(format!("{o}"));
        }
        let blobs = work.join("blobs").join("sha256");
        let read_json = |p: &Path| -> Result<serde_json::Value, String> {
            let b = fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
            serde_json::from_slice(&b).map_err(|e| format!("parse {}: {e}", p.display()))
        };
        let blob = |digest: &serde_json::Value| -> Result<PathBuf, String> {
            let d = digest.as_str().ok_or("digest is not a string")?;
            Ok(blobs.join(d.trim_start_matches("sha256:")))
        };
        let index = read_json(&work.join("index.json"))?;
        let mut manifest = read_json(&blob(&index["manifests"][0]["digest"])?)?;
        let mut config = read_json(&blob(&manifest["config"]["digest"])?)?;
        config["config"]["Entrypoint"] = serde_json::json!(["/bin/sleep"]);
        config["config"]["Cmd"] = serde_json::json!(["2147483647"]);
        let write_blob = |v: &serde_json::Value| -> Result<(String, usize), String> {
            let bytes = serde_json::to_vec(v).map_err(|e| e.to_string())?;
            let hex = sha256_hex(&bytes);
            fs::write(blobs.join(&hex), &bytes).map_err(|e| format!("write blob: {e}"))?;
            Ok((format!("sha256:{hex}"), bytes.len()))
        };
        let (config_digest, config_size) = write_blob(&config)?;
        manifest["config"]["digest"] = serde_json::json!(config_digest);
        manifest["config"]["size"] = serde_json::json!(config_size);
        let (manifest_digest, manifest_size) = write_blob(&manifest)?;
        let mut entry = index["manifests"][0].clone();
        entry["digest"] = serde_json::json!(manifest_digest);
        entry["size"] = serde_json::json!(manifest_size);
        entry["annotations"] = serde_json::json!({
            "io.containerd.image.name": PAUSE_REF,
            "org.opencontainers.image.ref.name": PAUSE_REF,
        });
        let mut new_index = index.clone();
        new_index["manifests"] = serde_json::json!([entry]);
        fs::write(
            work.join("index.json"),
            serde_json::to_vec(&new_index).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("write index.json: {e}"))?;
        let tmp = out.with_extension(format!("tmp.{}", std::process::id()));
        let mut tar = Command::new("tar");
        tar.arg("-cf")
            .arg(&tmp)
            .arg("-C")
            .arg(&work)
            .args(["oci-layout", "index.json", "blobs"]);
        let o = run_cmd(tar, Duration::from_secs(60));
        if !o.success() {
            return Err(format!("{o}"));
        }
        fs::rename(&tmp, &out).map_err(|e| format!("rename: {e}"))?;
        Ok(out.clone())
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

// ---------------------------------------------------------------------------
// CRI log files
// ---------------------------------------------------------------------------

/// One line of a CRI log file: `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: String,
    /// `F` (full line) or `P` (partial: the line continues in the next entry).
    pub tag: String,
    pub content: Vec<u8>,
}

/// Parses a CRI log file strictly (every line must have the format).
pub fn parse_cri_log(bytes: &[u8]) -> Result<Vec<LogLine>, String> {
    let mut out = Vec::new();
    if bytes.is_empty() {
        return Ok(out);
    }
    if !bytes.ends_with(b"\n") {
        return Err("log does not end with a newline".into());
    }
    for (n, line) in bytes[..bytes.len() - 1].split(|b| *b == b'\n').enumerate() {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let ts = parts.next().unwrap_or_default();
        let stream = parts.next().unwrap_or_default();
        let tag = parts.next().unwrap_or_default();
        let content = parts
            .next()
            .ok_or_else(|| format!("line {n}: fewer than 4 fields: {:?}", lossy(line)))?;
        let ts = String::from_utf8_lossy(ts).into_owned();
        let ts_ok = ts.len() >= 20
            && ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b'T'
            && (ts.ends_with('Z') || ts[19..].contains(['+', '-']));
        if !ts_ok {
            return Err(format!("line {n}: bad timestamp {ts:?}"));
        }
        let stream = String::from_utf8_lossy(stream).into_owned();
        if stream != "stdout" && stream != "stderr" {
            return Err(format!("line {n}: bad stream {stream:?}"));
        }
        let tag = String::from_utf8_lossy(tag).into_owned();
        if tag != "F" && tag != "P" {
            return Err(format!("line {n}: bad tag {tag:?}"));
        }
        out.push(LogLine {
            timestamp: ts,
            stream,
            tag,
            content: content.to_vec(),
        });
    }
    Ok(out)
}

/// The bytes a stream carried, rebuilt from log lines (`P` entries join the next one, `F`
/// entries end a line with `\n`).
pub fn stream_bytes(lines: &[LogLine], stream: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines.iter().filter(|l| l.stream == stream) {
        out.extend_from_slice(&l.content);
        if l.tag == "F" {
            out.push(b'\n');
        }
    }
    out
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------
// Streaming Exec (websocket, v4.channel.k8s.io)
// ---------------------------------------------------------------------------

/// What a streamed exec produced.
#[derive(Clone, Debug, Default)]
pub struct StreamedExec {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The v4 status document from the error channel (3).
    pub status: String,
    /// From the status: 0 on Success, the ExitCode cause on NonZeroExitCode.
    pub exit_code: Option<i32>,
}

/// Runs the exec behind `url` (from the Exec RPC) over containerd's streaming server with the
/// websocket variant of the Kubernetes remotecommand protocol: every binary message starts
/// with its channel (1 stdout, 2 stderr, 3 status).
pub fn stream_exec(url: &str, timeout: Duration) -> Result<StreamedExec, String> {
    use tungstenite::client::IntoClientRequest;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("unexpected exec URL {url:?} (TLS streaming is off)"))?;
    let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let stream = TcpStream::connect(hostport).map_err(|e| format!("connect {hostport}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("ws://{hostport}{path}")
        .into_client_request()
        .map_err(|e| format!("request: {e}"))?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let (mut ws, resp) =
        tungstenite::client(req, stream).map_err(|e| format!("websocket handshake: {e}"))?;
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if proto != "v4.channel.k8s.io" {
        return Err(format!("server chose protocol {proto:?}"));
    }
    let mut out = StreamedExec::default();
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() >= deadline {
            return Err(format!("exec stream still open after {timeout:?}: {out:?}"));
        }
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => {
                let Some((&ch, data)) = b.split_first() else {
                    continue;
                };
                match ch {
                    1 => out.stdout.extend_from_slice(data),
                    2 => out.stderr.extend_from_slice(data),
                    3 => out.status.push_str(&String::from_utf8_lossy(data)),
                    _ => {}
                }
            }
            Ok(tungstenite::Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                break
            }
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => break,
            Err(e) => return Err(format!("websocket: {e} (so far: {out:?})")),
        }
    }
    out.exit_code = exit_code_of_status(&out.status);
    Ok(out)
}

/// `{"status":"Success"}` → 0; `{"reason":"NonZeroExitCode","details":{"causes":
/// [{"reason":"ExitCode","message":"3"}]}}` → 3.
pub fn exit_code_of_status(status: &str) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(status).ok()?;
    if v["status"] == "Success" {
        return Some(0);
    }
    v["details"]["causes"]
        .as_array()?
        .iter()
        .find(|c| c["reason"] == "ExitCode")?["message"]
        .as_str()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// Leftovers
// ---------------------------------------------------------------------------

/// mountinfo entries (mount points) that mention any of `ids`.
pub fn mounts_mentioning(ids: &[&str]) -> Vec<String> {
    ids.iter().flat_map(|id| mounts_containing(id)).collect()
}

/// The pod's network namespace path from a verbose PodSandboxStatus (`info["info"]`:
/// `runtimeSpec.linux.namespaces[type=network].path`, else `netNamespacePath`).
pub fn netns_path(status: &api::PodSandboxStatusResponse) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    let from_spec = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|ns| {
            ns.iter()
                .find(|n| n["type"] == "network")
                .and_then(|n| n["path"].as_str())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
    from_spec.or_else(|| {
        info["netNamespacePath"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    })
}

// ---------------------------------------------------------------------------
// Checks shared by the install tests (README snippets, tender-install)
// ---------------------------------------------------------------------------

/// The CRI plugin's line in `ctr plugins ls` (`io.containerd.grpc.v1  cri  …  ok|error`).
pub fn cri_plugin_line(cd: &Containerd) -> String {
    let mut cmd = Command::new(&cd.build.ctr);
    cmd.arg("-a").arg(&cd.socket).args(["plugins", "ls"]);
    let out = run_cmd(cmd, Duration::from_secs(30));
    let text = out.stdout_str();
    text.lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.split_whitespace().nth(1) == Some("cri"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no CRI plugin in `ctr plugins ls`:\n{out}"))
}

/// True when the CRI plugin's status is `ok`.
pub fn cri_plugin_ok(cd: &Containerd) -> bool {
    cri_plugin_line(cd).split_whitespace().last() == Some("ok")
}

/// Runs one pod on `handler` ("" = the default runtime) with a container that prints a line
/// and exits 3; checks its exit code, its CRI log and that every shim serving the pod has
/// `expect_shim` in its command line, then removes the pod.
pub fn pod_on_handler_runs(node: &CriNode, handler: &str, expect_shim: &str) {
    const WAIT: Duration = Duration::from_secs(15);
    let cri = &node.cri;
    let diag = || node.log_tail(40);
    let name = if handler.is_empty() {
        "default"
    } else {
        handler
    };
    let pod_cfg = node.pod_config(&format!("handler-{name}"));
    let log_dir = PathBuf::from(&pod_cfg.log_directory);
    let pod = cri
        .run_pod_sandbox(&pod_cfg, handler)
        .unwrap_or_else(|e| panic!("RunPodSandbox(handler={handler:?}): {e}\n{}", diag()));
    let line = format!("hello from the {name} handler");
    let cfg = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "hello".into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: common::IMAGE_REF.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), format!("echo '{line}'; exit 3")],
        log_path: "hello.log".into(),
        ..Default::default()
    };
    let id = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .unwrap_or_else(|e| panic!("CreateContainer({handler:?}): {e}\n{}", diag()));
    let shims: Vec<String> = node
        .cd
        .shim_processes()
        .into_iter()
        .map(|(_, cmd)| cmd)
        .filter(|cmd| cmd.contains(&pod))
        .collect();
    assert!(
        !shims.is_empty() && shims.iter().all(|c| c.contains(expect_shim)),
        "handler {handler:?}: pod {pod} must be served by {expect_shim}; shims: {shims:?}"
    );
    cri.start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer({handler:?}): {e}\n{}", diag()));
    let (done, st) = cri.wait_container(&id, WAIT, |s| is_state(s, api::ContainerState::Exited));
    assert!(
        done,
        "handler {handler:?}: container did not exit: {st:?}\n{}",
        diag()
    );
    assert_eq!(st.map(|s| s.exit_code), Some(3), "handler {handler:?}");
    let want = format!("{line}\n");
    let log = log_dir.join("hello.log");
    let got = common::wait_until(WAIT, Duration::from_millis(50), || {
        let lines = parse_cri_log(&fs::read(&log).unwrap_or_default()).ok()?;
        (stream_bytes(&lines, "stdout") == want.as_bytes()).then_some(())
    });
    assert!(
        got.is_some(),
        "handler {handler:?}: log {:?}",
        String::from_utf8_lossy(&fs::read(&log).unwrap_or_default())
    );
    cri.stop_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", diag()));
    cri.remove_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", diag()));
}
