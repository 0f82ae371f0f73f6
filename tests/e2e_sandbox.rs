//! Pods without a pause container: containerd 2.x's CRI with a runtime handler
//! `tender-shim` (`sandboxer = "shim"`, the README's `v3-tender-sandboxer` snippet) hands the
//! pod to Tender's Sandbox API, and Tender holds the pod's namespaces with its own tiny
//! holder process. Driven through the CRI gRPC API as the kubelet drives it.
//!
//! The CRI tests run on containerd 2.x (`TENDER_E2E_CONTAINERD=2.1`, `make test`'s matrix
//! pass). On 1.x, which has no Sandbox API, they print why and pass even under `CI=true`:
//! `make test` first runs every test on the host's 1.6, and the 2.1 pass is where they count.
//! The protocol-level test needs no containerd and runs everywhere. Needs root, containerd,
//! runc and the CNI plugins (`make deps`); skips otherwise, fails when `CI=true`.

mod common;
mod cri;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri::api;
use cri::config::{self, Start};
use cri::{is_state, CriNode};

const WAIT: Duration = Duration::from_secs(15);
/// The handler of the README's `v3-tender-sandboxer` snippet.
const SHIM_HANDLER: &str = "tender-shim";
/// argv[0] of Tender's namespace holder (src/sandbox/holder.rs).
const HOLDER_NAME: &str = "tender-pod-holder";

/// A node whose config is `containerd config default` plus the README's `v3-tender` and
/// `v3-tender-sandboxer` snippets; None (after saying why) when the test cannot run here.
fn sandbox_node(test: &str) -> Option<CriNode> {
    if !common::e2e_enabled_with(test, &cri::prerequisites()) {
        return None;
    }
    if !common::runtime_is_tender() {
        common::notice(&format!(
            "{test}: the runtime under test ({}) has no Sandbox API; nothing to check",
            common::runtime()
        ));
        return None;
    }
    let build = common::containerd_version();
    if build.version.0 < 2 {
        common::notice(&format!(
            "{test}: containerd {} has no Sandbox API (sandboxer = \"shim\" needs 2.x); \
             run with TENDER_E2E_CONTAINERD=2.1",
            build.minor_label()
        ));
        return None;
    }
    Some(CriNode::start_from_user(|l| {
        let mut text = config::user_config(Start::ConfigDefault, &l.build);
        text.push('\n');
        text.push_str(&config::readme_snippet("v3-tender-sandboxer"));
        text
    }))
}

fn ns_opts(pid: api::NamespaceMode) -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: api::NamespaceMode::Pod as i32,
        target_id: String::new(),
        userns_options: None,
    }
}

fn container(name: &str, command: &[&str], pid: api::NamespaceMode) -> api::ContainerConfig {
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
            resources: None,
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(ns_opts(pid)),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Holder processes (pid, argv) of sandbox `pod`.
fn holders(pod: &str) -> Vec<(u32, Vec<String>)> {
    common::processes()
        .into_iter()
        .filter(|(_, argv)| {
            argv.first().is_some_and(|a| a == HOLDER_NAME) && argv.iter().any(|a| a == pod)
        })
        .collect()
}

/// Processes whose argv mentions `needle` (pause containers show up as `/pause`).
fn processes_mentioning(needle: &str) -> Vec<(u32, Vec<String>)> {
    common::processes()
        .into_iter()
        .filter(|(_, argv)| argv.iter().any(|a| a.contains(needle)))
        .collect()
}

fn ns_link(pid: &str, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Runs `cmd` in container `id` and returns its stdout (panics on a non-zero exit).
fn exec_ok(node: &CriNode, id: &str, cmd: &[&str]) -> String {
    let r = node
        .cri
        .exec_sync(id, cmd, 10)
        .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e}\n{}", node.log_tail(40)));
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?} in {id}: stdout {:?} stderr {:?}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// CRI's per-pod directories (root: hostname, hosts, resolv.conf; state: shm).
fn pod_dirs(node: &CriNode, pod: &str) -> (PathBuf, PathBuf) {
    let sub = |base: &Path| base.join("io.containerd.grpc.v1.cri/sandboxes").join(pod);
    (sub(&node.cd.root), sub(&node.cd.state))
}

fn start(
    node: &CriNode,
    pod: &str,
    c: &api::ContainerConfig,
    cfg: &api::PodSandboxConfig,
) -> String {
    let id = node
        .cri
        .create_container(pod, c, cfg)
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", node.log_tail(60)));
    node.cri
        .start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", node.log_tail(60)));
    id
}

/// Stops and removes the pod, then checks nothing of it is left: holder, shim, mounts, CRI
/// pod directories, the holder's cgroup.
fn remove_and_check_clean(node: &CriNode, pod: &str) {
    node.cri
        .stop_pod_sandbox(pod)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", node.log_tail(60)));
    node.cri
        .remove_pod_sandbox(pod)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", node.log_tail(60)));
    let gone = common::wait_until(WAIT, Duration::from_millis(100), || {
        (holders(pod).is_empty()
            && node
                .cd
                .shim_processes()
                .iter()
                .all(|(_, c)| !c.contains(pod)))
        .then_some(())
    });
    assert!(
        gone.is_some(),
        "holder or shim of {pod} left: {:?} {:?}",
        holders(pod),
        node.cd.shim_processes()
    );
    let mounts = cri::mounts_mentioning(&[pod]);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let (root, state) = pod_dirs(node, pod);
    assert!(
        !root.exists() && !state.exists(),
        "pod dirs left: {root:?} {state:?}"
    );
    for r in cri::cgroup_roots(&node.cgroup_parent) {
        assert!(
            !r.join(pod).exists(),
            "holder cgroup left: {}",
            r.join(pod).display()
        );
    }
}

/// The central case: a pod on `tender-shim` runs with no pause container and no runc call for
/// the sandbox; its containers share the holder's network, IPC and UTS namespaces, see the
/// pod's hostname, resolv.conf and a shared /dev/shm; the pod IP answers from another pod;
/// stop + remove leave nothing behind.
#[test]
fn pod_runs_without_pause_container() {
    const TEST: &str = "pod_runs_without_pause_container";
    let Some(node) = sandbox_node(TEST) else {
        return;
    };
    let cri = &node.cri;
    let diag = || node.log_tail(80);
    let mut cfg = node.pod_config("shimpod");
    cfg.hostname = "shim-host".into();
    cfg.dns_config = Some(api::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let t0 = Instant::now();
    let pod = cri
        .run_pod_sandbox(&cfg, SHIM_HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox({SHIM_HANDLER}): {e}\n{}", diag()));
    eprintln!("{TEST}: RunPodSandbox took {:?}", t0.elapsed());
    let st = cri
        .pod_sandbox_status(&pod, true)
        .unwrap_or_else(|e| panic!("PodSandboxStatus: {e}\n{}", diag()));
    let status = st.status.clone().expect("status");
    assert_eq!(
        status.state,
        api::PodSandboxState::Ready as i32,
        "{status:?}"
    );
    let ip = status.network.clone().map(|n| n.ip).unwrap_or_default();
    assert!(
        ip.starts_with(node.subnet.trim_end_matches("0/24")),
        "pod IP {ip:?} not from {}",
        node.subnet
    );

    // No pause: no process runs /pause, runc has no state for the sandbox id, one holder.
    assert!(
        processes_mentioning("/pause")
            .iter()
            .all(|(_, a)| !a.iter().any(|x| x.contains(&pod))),
        "a pause process serves {pod}"
    );
    let runc_state = node.runc_root.join(cri::K8S_NAMESPACE).join(&pod);
    assert!(
        !runc_state.exists(),
        "runc has a container for the sandbox: {runc_state:?}"
    );
    let h = holders(&pod);
    assert_eq!(h.len(), 1, "one holder for {pod}: {h:?}");
    let holder = h[0].0.to_string();

    let a = start(
        &node,
        &pod,
        &container(
            "a",
            &["sh", "-c", "echo hello from a shim pod; exec sleep 1000"],
            api::NamespaceMode::Container,
        ),
        &cfg,
    );
    let b = start(
        &node,
        &pod,
        &container("b", &["sleep", "1000"], api::NamespaceMode::Container),
        &cfg,
    );
    // The containers are served by the sandbox's shim (no other shim for the pod).
    let shims: Vec<_> = node
        .cd
        .shim_processes()
        .into_iter()
        .filter(|(_, c)| c.contains(&pod) || c.contains(&a) || c.contains(&b))
        .collect();
    assert_eq!(
        shims.len(),
        1,
        "one shim for the pod and its containers: {shims:?}"
    );

    // The container's output reaches its CRI log.
    let log = Path::new(&cfg.log_directory).join("a.log");
    let logged = common::wait_until(WAIT, Duration::from_millis(50), || {
        let lines = cri::parse_cri_log(&fs::read(&log).unwrap_or_default()).ok()?;
        (cri::stream_bytes(&lines, "stdout") == b"hello from a shim pod\n").then_some(())
    });
    assert!(logged.is_some(), "log {:?}", fs::read_to_string(&log));
    // Streaming exec (the kubectl exec path) through the sandbox's shim.
    let url = cri
        .exec_url(&b, &["sh", "-c", "echo streamed; exit 4"])
        .unwrap_or_else(|e| panic!("Exec: {e}"));
    let streamed = cri::stream_exec(&url, WAIT).unwrap_or_else(|e| panic!("stream exec: {e}"));
    assert_eq!(streamed.stdout, b"streamed\n", "{streamed:?}");
    assert_eq!(streamed.exit_code, Some(4), "{streamed:?}");
    // Namespaces: the holder's net/ipc/uts.
    for id in [&a, &b] {
        let pid = exec_ok(&node, id, &["sh", "-c", "echo $$"]);
        let _ = pid;
        for ns in ["net", "ipc", "uts"] {
            let inside = exec_ok(&node, id, &["readlink", &format!("/proc/self/ns/{ns}")]);
            assert_eq!(
                inside.trim(),
                ns_link(&holder, ns),
                "{ns} namespace of {id}"
            );
        }
    }
    assert_ne!(
        ns_link(&holder, "uts"),
        ns_link("self", "uts"),
        "holder has its own UTS"
    );
    assert_ne!(
        ns_link(&holder, "ipc"),
        ns_link("self", "ipc"),
        "holder has its own IPC"
    );
    assert_eq!(exec_ok(&node, &a, &["hostname"]).trim(), "shim-host");
    assert_eq!(
        exec_ok(&node, &b, &["cat", "/etc/hostname"]).trim(),
        "shim-host"
    );
    let resolv = exec_ok(&node, &a, &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 10.96.0.10")
            && resolv.contains("search default.svc.cluster.local")
            && resolv.contains("options ndots:5"),
        "resolv.conf: {resolv:?}"
    );
    assert!(exec_ok(&node, &a, &["busybox", "ip", "-o", "-4", "addr"]).contains(&format!("{ip}/")));
    // /dev/shm is the pod's tmpfs, shared.
    exec_ok(&node, &a, &["sh", "-c", "echo shared > /dev/shm/x"]);
    assert_eq!(exec_ok(&node, &b, &["cat", "/dev/shm/x"]).trim(), "shared");
    let df = exec_ok(&node, &b, &["sh", "-c", "grep ' /dev/shm ' /proc/mounts"]);
    assert!(
        df.contains("tmpfs") && df.contains("size=65536k"),
        "/dev/shm: {df:?}"
    );

    // The pod IP answers: a container of a second (classic) pod pings it over the bridge.
    let other_cfg = node.pod_config("pinger");
    let t1 = Instant::now();
    let other = cri
        .run_pod_sandbox(&other_cfg, cri::HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox(pinger): {e}\n{}", diag()));
    // For information (one sample, debug build): the same call with a pause container.
    eprintln!(
        "{TEST}: RunPodSandbox with a pause container (handler {}) took {:?}",
        cri::HANDLER,
        t1.elapsed()
    );
    let pinger = start(
        &node,
        &other,
        &container("p", &["sleep", "1000"], api::NamespaceMode::Container),
        &other_cfg,
    );
    let r = cri
        .exec_sync(&pinger, &["busybox", "ping", "-c", "1", "-W", "3", &ip], 10)
        .expect("exec ping");
    assert_eq!(
        r.exit_code,
        0,
        "ping {ip}: {}",
        String::from_utf8_lossy(&r.stdout)
    );

    remove_and_check_clean(&node, &pod);
    let (done, _) = cri.wait_container(&a, Duration::from_millis(1), |s| {
        is_state(s, api::ContainerState::Exited)
    });
    let _ = done;
}

/// Zombie processes (state Z) in the PID namespace of `holder`.
fn zombies_in_pid_ns_of(holder: &str) -> Vec<u32> {
    let ns = ns_link(holder, "pid");
    common::processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| ns_link(&pid.to_string(), "pid") == ns)
        .filter(|pid| common::process_state(*pid) == Some('Z'))
        .collect()
}

/// `shareProcessNamespace`: containers with PID mode POD share the holder's PID namespace,
/// where the holder is PID 1, so they see each other and orphans are reaped. Namespaced
/// sysctls of the pod are set inside the pod and nowhere else.
#[test]
fn shared_pid_namespace_reaps_orphans_and_sysctls_apply() {
    const TEST: &str = "shared_pid_namespace_reaps_orphans_and_sysctls_apply";
    let Some(node) = sandbox_node(TEST) else {
        return;
    };
    let mut cfg = node.pod_config("sharedpid");
    if let Some(linux) = cfg.linux.as_mut() {
        linux.sysctls.insert("kernel.msgmax".into(), "12345".into());
        linux
            .sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "1000".into());
        if let Some(ns) = linux
            .security_context
            .as_mut()
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.pid = api::NamespaceMode::Pod as i32;
        }
    }
    let host_msgmax = fs::read_to_string("/proc/sys/kernel/msgmax").unwrap_or_default();
    let pod = node
        .cri
        .run_pod_sandbox(&cfg, SHIM_HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.log_tail(60)));
    let holder = holders(&pod)
        .first()
        .map(|(p, _)| p.to_string())
        .expect("holder");
    let a = start(
        &node,
        &pod,
        &container("a", &["sleep", "1000"], api::NamespaceMode::Pod),
        &cfg,
    );
    let b = start(
        &node,
        &pod,
        &container("b", &["sleep", "2000"], api::NamespaceMode::Pod),
        &cfg,
    );
    // PID 1 of the pod is the holder; each container sees the other's process.
    let init = exec_ok(&node, &a, &["cat", "/proc/1/cmdline"]);
    assert!(init.starts_with(HOLDER_NAME), "PID 1 in the pod: {init:?}");
    let ps = exec_ok(&node, &a, &["ps", "-o", "args"]);
    assert!(
        ps.contains("sleep 2000"),
        "container a does not see b: {ps}"
    );
    let ps = exec_ok(&node, &b, &["ps", "-o", "args"]);
    assert!(
        ps.contains("sleep 1000"),
        "container b does not see a: {ps}"
    );
    assert_eq!(
        exec_ok(&node, &a, &["readlink", "/proc/self/ns/pid"]).trim(),
        ns_link(&holder, "pid")
    );
    // Orphans: the subshell exits at once, its `sleep` is reparented to PID 1 (the holder)
    // and must be reaped when it ends.
    for _ in 0..5 {
        exec_ok(&node, &b, &["sh", "-c", "(sleep 0.3 &) ; true"]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let z = zombies_in_pid_ns_of(&holder);
    assert!(
        z.is_empty(),
        "zombies left in the pod's PID namespace: {z:?}"
    );
    // Sysctls: set in the pod, not on the node.
    assert_eq!(
        exec_ok(&node, &a, &["cat", "/proc/sys/kernel/msgmax"]).trim(),
        "12345"
    );
    assert_eq!(
        exec_ok(
            &node,
            &a,
            &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]
        )
        .trim(),
        "1000"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/msgmax").unwrap_or_default(),
        host_msgmax,
        "the node's kernel.msgmax changed"
    );
    // A node-wide sysctl is refused with a clear error, and leaves nothing behind.
    let mut bad = node.pod_config("badsysctl");
    if let Some(linux) = bad.linux.as_mut() {
        linux.sysctls.insert("kernel.domainname".into(), "x".into());
    }
    let err = node
        .cri
        .run_pod_sandbox(&bad, SHIM_HANDLER)
        .expect_err("a pod with a node-wide sysctl must not start");
    assert!(
        err.message().contains("not namespaced"),
        "unclear error for a node-wide sysctl: {err}"
    );
    remove_and_check_clean(&node, &pod);
}

/// hostIPC + hostPID: the holder stays in the node's IPC and PID namespaces (containers join
/// them through it), CRI uses the node's /dev/shm (no pod tmpfs), the pod still has its own
/// network and UTS namespaces.
#[test]
fn host_ipc_and_host_pid_pod() {
    const TEST: &str = "host_ipc_and_host_pid_pod";
    let Some(node) = sandbox_node(TEST) else {
        return;
    };
    let mut cfg = node.pod_config("hostipcpid");
    if let Some(ns) = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = api::NamespaceMode::Node as i32;
        ns.ipc = api::NamespaceMode::Node as i32;
    }
    let pod = node
        .cri
        .run_pod_sandbox(&cfg, SHIM_HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.log_tail(60)));
    let holder = holders(&pod)
        .first()
        .map(|(p, _)| p.to_string())
        .expect("holder");
    for ns in ["ipc", "pid"] {
        assert_eq!(
            ns_link(&holder, ns),
            ns_link("self", ns),
            "holder {ns} namespace"
        );
    }
    assert_ne!(
        ns_link(&holder, "net"),
        ns_link("self", "net"),
        "holder network namespace"
    );
    let mut c = container("a", &["sleep", "1000"], api::NamespaceMode::Node);
    if let Some(ns) = c
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.ipc = api::NamespaceMode::Node as i32;
    }
    let a = start(&node, &pod, &c, &cfg);
    for ns in ["ipc", "pid"] {
        let inside = exec_ok(&node, &a, &["readlink", &format!("/proc/self/ns/{ns}")]);
        assert_eq!(
            inside.trim(),
            ns_link("self", ns),
            "container {ns} namespace"
        );
    }
    let (_, state) = pod_dirs(&node, &pod);
    let shm_mounts = common::mounts_containing(&state.join("shm").display().to_string());
    assert!(
        shm_mounts.is_empty(),
        "a pod shm tmpfs with hostIPC: {shm_mounts:?}"
    );
    remove_and_check_clean(&node, &pod);
}

/// containerd restarts under a running pod: the holder, the shim and the container keep
/// running, CRI reconnects and finds the pod ready, the pod files CRI removed come back, and
/// a new container still joins the pod.
#[test]
fn pod_survives_containerd_restart() {
    const TEST: &str = "pod_survives_containerd_restart";
    let Some(node) = sandbox_node(TEST) else {
        return;
    };
    let mut cfg = node.pod_config("restart");
    cfg.hostname = "restart-host".into();
    let pod = node
        .cri
        .run_pod_sandbox(&cfg, SHIM_HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.log_tail(60)));
    let holder = holders(&pod).first().map(|(p, _)| *p).expect("holder");
    let a = start(
        &node,
        &pod,
        &container("a", &["sleep", "1000"], api::NamespaceMode::Container),
        &cfg,
    );

    exec_ok(
        &node,
        &a,
        &["sh", "-c", "echo before-restart > /dev/shm/mark"],
    );
    node.cd.restart();
    let ready = common::wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let st = node.cri.pod_sandbox_status(&pod, false).ok()?;
        (st.status?.state == api::PodSandboxState::Ready as i32).then_some(())
    });
    assert!(
        ready.is_some(),
        "pod not ready after the restart\n{}",
        node.log_tail(80)
    );
    assert!(
        common::process_alive(holder),
        "holder {holder} died with containerd"
    );
    let (done, st) = node.cri.wait_container(&a, Duration::from_secs(5), |s| {
        is_state(s, api::ContainerState::Running)
    });
    assert!(done, "container a not running after the restart: {st:?}");
    assert_eq!(exec_ok(&node, &a, &["hostname"]).trim(), "restart-host");
    // The pod files are there again (CRI removes them for shim pods when it starts).
    let (root, _) = pod_dirs(&node, &pod);
    let back = common::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        root.join("hostname").is_file().then_some(())
    });
    assert!(
        back.is_some(),
        "{} not recreated after the restart",
        root.display()
    );
    // Whatever removed them, the next status query puts them back.
    fs::remove_dir_all(&root).unwrap_or_else(|e| panic!("rm {}: {e}", root.display()));
    node.cri
        .pod_sandbox_status(&pod, false)
        .unwrap_or_else(|e| panic!("PodSandboxStatus: {e}"));
    for f in ["hostname", "hosts", "resolv.conf"] {
        assert!(root.join(f).is_file(), "{f} not recreated by SandboxStatus");
    }
    let b = start(
        &node,
        &pod,
        &container("b", &["sleep", "1000"], api::NamespaceMode::Container),
        &cfg,
    );
    assert_eq!(
        exec_ok(&node, &b, &["cat", "/etc/hostname"]).trim(),
        "restart-host"
    );
    // The pod's /dev/shm is still the one tmpfs: written before the restart by a, read by b.
    assert_eq!(
        exec_ok(&node, &b, &["cat", "/dev/shm/mark"]).trim(),
        "before-restart"
    );
    assert_eq!(
        exec_ok(&node, &b, &["readlink", "/proc/self/ns/net"]).trim(),
        ns_link(&holder.to_string(), "net")
    );
    // The restarted containerd watches the pod again: the holder's death still reaches CRI.
    assert!(
        common::send_signal(holder, libc_sigkill()),
        "kill -9 holder"
    );
    let not_ready = common::wait_until(WAIT, Duration::from_millis(50), || {
        let st = node.cri.pod_sandbox_status(&pod, false).ok()?;
        (st.status?.state == api::PodSandboxState::NotReady as i32).then_some(())
    });
    assert!(
        not_ready.is_some(),
        "after the restart, the holder's death does not make the pod NOTREADY\n{}",
        node.log_tail(60)
    );
    remove_and_check_clean(&node, &pod);
}

/// The shim is SIGKILLed: the holder dies with it, CRI reports the pod NOTREADY, and stopping
/// and removing the pod leaves nothing behind (the `delete` action cleans up).
#[test]
fn shim_killed_pod_not_ready_and_cleaned() {
    const TEST: &str = "shim_killed_pod_not_ready_and_cleaned";
    let Some(node) = sandbox_node(TEST) else {
        return;
    };
    let cfg = node.pod_config("shimkill");
    let pod = node
        .cri
        .run_pod_sandbox(&cfg, SHIM_HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.log_tail(60)));
    let holder = holders(&pod).first().map(|(p, _)| *p).expect("holder");
    let _a = start(
        &node,
        &pod,
        &container("a", &["sleep", "1000"], api::NamespaceMode::Container),
        &cfg,
    );
    let shim = node
        .cd
        .shim_processes()
        .into_iter()
        .find(|(_, c)| c.contains(&pod))
        .map(|(p, _)| p)
        .expect("the pod's shim");
    assert!(
        common::send_signal(shim, libc_sigkill()),
        "kill -9 shim {shim}"
    );
    let gone = common::wait_until(WAIT, Duration::from_millis(50), || {
        (!common::process_alive(holder)).then_some(())
    });
    assert!(gone.is_some(), "holder {holder} outlived its shim");
    let not_ready = common::wait_until(WAIT, Duration::from_millis(100), || {
        let st = node.cri.pod_sandbox_status(&pod, false).ok()?;
        (st.status?.state == api::PodSandboxState::NotReady as i32).then_some(())
    });
    assert!(
        not_ready.is_some(),
        "pod still ready after its shim died\n{}",
        node.log_tail(60)
    );
    // The container died too (containerd ran the `delete` action for it: runc delete --force).
    let dead = common::wait_until(WAIT, Duration::from_millis(100), || {
        processes_mentioning("sleep")
            .iter()
            .all(|(p, a)| !(a.iter().any(|x| x == "1000") && in_cgroup_of(*p, &node.cgroup_parent)))
            .then_some(())
    });
    assert!(dead.is_some(), "the pod's container outlived its shim");
    // The `delete` action removed the pod files, the shm mount and the holder's cgroup.
    let (root, state) = pod_dirs(&node, &pod);
    let cleaned = common::wait_until(WAIT, Duration::from_millis(100), || {
        (!root.exists() && !state.exists() && cri::mounts_mentioning(&[&pod]).is_empty())
            .then_some(())
    });
    assert!(
        cleaned.is_some(),
        "pod files or mounts left after the shim died: {root:?} {state:?} {:?}",
        cri::mounts_mentioning(&[&pod])
    );
    for r in cri::cgroup_roots(&node.cgroup_parent) {
        assert!(
            !r.join(&pod).exists(),
            "holder cgroup left: {}",
            r.join(&pod).display()
        );
    }
    // CRI stops and removes the pod. containerd 2.1.9 needs retries: right after the shim's
    // death its TaskExit handler still deletes the container's task through the dead shim's
    // closed connection (`failed to delete task: ttrpc: closed`) and RemovePodSandbox answers
    // "container is still running" until a later retry of that handler succeeds.
    let removed = common::wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        node.cri.stop_pod_sandbox(&pod).ok()?;
        node.cri.remove_pod_sandbox(&pod).ok()
    });
    assert!(
        removed.is_some(),
        "CRI cannot remove the pod after its shim died\n{}",
        node.log_tail(60)
    );
    let left = node.cd.shim_processes();
    assert!(
        left.iter().all(|(_, c)| !c.contains(&pod)),
        "shim left: {left:?}"
    );
}

/// Whether `pid` is in a cgroup under `parent`.
fn in_cgroup_of(pid: u32, parent: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| c.contains(parent))
        .unwrap_or(false)
}

fn libc_sigkill() -> i32 {
    9
}

// ---------------------------------------------------------------------------
// Protocol level: the Sandbox API without containerd
// ---------------------------------------------------------------------------

mod proto {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    use containerd_shim_protos::api as task;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::protobuf::Message;
    use containerd_shim_protos::sandbox_api as sb;

    pub const SERVICE: &str = "containerd.runtime.sandbox.v1.Sandbox";

    /// containerd's shim sandbox controller layout in a private directory.
    pub struct Layout {
        pub dir: PathBuf,
        pub namespace: String,
        pub id: String,
        pub bundle: PathBuf,
    }

    impl Layout {
        pub fn new(tag: &str) -> Layout {
            let id = crate::common::unique_id(tag);
            let dir = std::env::temp_dir().join(format!("tender-sbx-{id}"));
            let namespace = "sbx-proto".to_string();
            let ctl = "io.containerd.sandbox.controller.v1.shim";
            let bundle = dir.join("state").join(ctl).join(&namespace).join(&id);
            let work = dir.join("root").join(ctl).join(&namespace).join(&id);
            for d in [&bundle, &work] {
                std::fs::create_dir_all(d).expect("mkdir");
            }
            std::os::unix::fs::symlink(&work, bundle.join("work")).expect("work link");
            Layout {
                dir,
                namespace,
                id,
                bundle,
            }
        }

        pub fn cri_root_dir(&self) -> PathBuf {
            self.dir
                .join("root/io.containerd.grpc.v1.cri/sandboxes")
                .join(&self.id)
        }

        pub fn cri_state_dir(&self) -> PathBuf {
            self.dir
                .join("state/io.containerd.grpc.v1.cri/sandboxes")
                .join(&self.id)
        }

        /// The shim's `start` action in the bundle (no config.json): the address.
        pub fn start_shim(&self) -> String {
            let out = Command::new(crate::common::SHIM_BIN)
                .args([
                    "-namespace",
                    &self.namespace,
                    "-address",
                    "/run/tender-sbx-test/containerd.sock",
                    "-publish-binary",
                    "/bin/true",
                    "-id",
                    &self.id,
                    "start",
                ])
                .current_dir(&self.bundle)
                .env(
                    "TTRPC_ADDRESS",
                    "/run/tender-sbx-test/containerd.sock.ttrpc",
                )
                .stdin(Stdio::null())
                .output()
                .expect("shim start");
            assert!(
                out.status.success(),
                "start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }

    impl Drop for Layout {
        /// Also after a failed test: the shim (its holder dies with it), its socket, mounts.
        fn drop(&mut self) {
            for (pid, argv) in crate::common::processes() {
                let ours = argv.first().map(String::as_str) == Some(crate::common::SHIM_BIN)
                    && argv.windows(2).any(|w| w[0] == "-id" && w[1] == self.id);
                if ours {
                    crate::common::send_signal(pid, 9);
                }
            }
            if let Ok(address) = std::fs::read_to_string(self.bundle.join("address")) {
                let _ = std::fs::remove_file(address.trim().trim_start_matches("unix://"));
            }
            for shm in [self.cri_state_dir().join("shm"), self.bundle.join("shm")] {
                let _ = Command::new("umount").arg("-l").arg(&shm).status();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub fn pod_any(cfg: &crate::cri::api::PodSandboxConfig) -> Any {
        use prost::Message as _;
        let mut any = Any::new();
        any.type_url = "runtime.v1.PodSandboxConfig".into();
        any.value = cfg.encode_to_vec();
        any
    }

    pub async fn call<M: Message>(
        client: &ttrpc::asynchronous::Client,
        service: &str,
        method: &str,
        req: &impl Message,
    ) -> Result<M, ttrpc::Error> {
        let r = ttrpc::Request {
            service: service.into(),
            method: method.into(),
            payload: req.write_to_bytes().expect("encode"),
            timeout_nano: Duration::from_secs(10).as_nanos() as i64,
            ..Default::default()
        };
        let resp = client.request(r).await?;
        Ok(M::parse_from_bytes(&resp.payload).expect("decode response"))
    }

    pub fn code(e: &ttrpc::Error) -> ttrpc::Code {
        match e {
            ttrpc::Error::RpcStatus(s) => s.code(),
            _ => ttrpc::Code::UNKNOWN,
        }
    }

    pub fn create_req(l: &Layout, netns: &str, options: Option<Any>) -> sb::CreateSandboxRequest {
        let mut r = sb::CreateSandboxRequest::new();
        r.sandbox_id = l.id.clone();
        r.bundle_path = l.bundle.display().to_string();
        r.netns_path = netns.into();
        r.options = options.into();
        r
    }

    pub fn id_req<T: Message + Default>(set: impl FnOnce(&mut T)) -> T {
        let mut r = T::default();
        set(&mut r);
        r
    }

    pub fn connect_req(id: &str) -> task::ConnectRequest {
        let mut r = task::ConnectRequest::new();
        r.id = id.into();
        r
    }

    pub fn is_mountpoint(p: &Path) -> bool {
        crate::common::mounts_containing(&p.display().to_string())
            .iter()
            .any(|m| Path::new(m) == p)
    }
}

/// hostNetwork at the protocol level: containerd 2.1.9 panics before it starts the shim for
/// such a pod (nil pointer in `core/runtime/v2.NewBundle` from the shim sandbox controller's
/// Create), so Tender's side is driven directly, as containerd 2.3 drives it: an empty
/// `netns_path`, the holder in the node's network and UTS namespaces, its own IPC and PID
/// namespaces, the pod files, Task `Connect` for the sandbox id, Stop → Wait (137) → NOTREADY,
/// Shutdown → the shim exits and removes everything. Bad requests get clear errors.
#[test]
fn host_network_pod_at_protocol_level() {
    const TEST: &str = "host_network_pod_at_protocol_level";
    if !common::e2e_enabled(TEST) {
        return;
    }
    use containerd_shim_protos::api as task;
    use containerd_shim_protos::sandbox_api as sb;
    use proto::*;

    let l = Layout::new("hostnet");
    let address = l.start_shim();
    let mut cfg = api::PodSandboxConfig {
        hostname: "hostnet-pod".into(),
        dns_config: Some(api::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec![],
            options: vec!["ndots:2".into()],
        }),
        ..Default::default()
    };
    cfg.linux = Some(api::LinuxPodSandboxConfig {
        security_context: Some(api::LinuxSandboxSecurityContext {
            namespace_options: Some(api::NamespaceOption {
                network: api::NamespaceMode::Node as i32,
                pid: api::NamespaceMode::Pod as i32,
                ipc: api::NamespaceMode::Pod as i32,
                target_id: String::new(),
                userns_options: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = ttrpc::asynchronous::Client::connect(&address)
            .await
            .expect("connect");
        // Refused: options of another type, garbage, a netns for a hostNetwork pod, a bad id.
        let mut wrong = pod_any(&cfg);
        wrong.type_url = "containerd.runc.v1.Options".into();
        let mut garbage = pod_any(&cfg);
        garbage.value = vec![0x42, 0xff, 0x01];
        for (what, req) in [
            ("wrong type", create_req(&l, "", Some(wrong))),
            ("garbage", create_req(&l, "", Some(garbage))),
            (
                "netns with host network",
                create_req(&l, "/proc/self/ns/net", Some(pod_any(&cfg))),
            ),
        ] {
            let e = call::<sb::CreateSandboxResponse>(&c, SERVICE, "CreateSandbox", &req)
                .await
                .expect_err(what);
            assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{what}: {e:?}");
        }
        let mut bad_id = create_req(&l, "", Some(pod_any(&cfg)));
        bad_id.sandbox_id = "../x".into();
        let e = call::<sb::CreateSandboxResponse>(&c, SERVICE, "CreateSandbox", &bad_id)
            .await
            .expect_err("bad id");
        assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");

        let req = create_req(&l, "", Some(pod_any(&cfg)));
        call::<sb::CreateSandboxResponse>(&c, SERVICE, "CreateSandbox", &req)
            .await
            .expect("CreateSandbox");
        let e = call::<sb::CreateSandboxResponse>(&c, SERVICE, "CreateSandbox", &req)
            .await
            .expect_err("twice");
        assert_eq!(code(&e), ttrpc::Code::ALREADY_EXISTS, "{e:?}");
        let id = l.id.clone();
        let started: sb::StartSandboxResponse = call(
            &c,
            SERVICE,
            "StartSandbox",
            &id_req(|r: &mut sb::StartSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("StartSandbox");
        let pid = started.pid.to_string();
        assert!(started.pid > 0);
        for ns in ["net", "uts"] {
            assert_eq!(
                ns_link(&pid, ns),
                ns_link("self", ns),
                "holder {ns}: the node's"
            );
        }
        for ns in ["ipc", "pid"] {
            assert_ne!(
                ns_link(&pid, ns),
                ns_link("self", ns),
                "holder {ns}: its own"
            );
        }
        let root = l.cri_root_dir();
        // As containerd's pause controller writes it: the pod's hostname, also with hostNetwork
        // (the UTS namespace, and so `hostname`, stays the node's).
        assert_eq!(
            fs::read_to_string(root.join("hostname")).expect("hostname file"),
            "hostnet-pod\n"
        );
        assert_eq!(
            fs::read_to_string(root.join("resolv.conf")).expect("resolv.conf"),
            "nameserver 10.0.0.10\noptions ndots:2\n"
        );
        assert!(root.join("hosts").is_file());
        assert!(is_mountpoint(&l.cri_state_dir().join("shm")), "shm tmpfs");

        let st: sb::SandboxStatusResponse = call(
            &c,
            SERVICE,
            "SandboxStatus",
            &id_req(|r: &mut sb::SandboxStatusRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("SandboxStatus");
        assert_eq!((st.state.as_str(), st.pid), ("SANDBOX_READY", started.pid));
        assert_eq!(st.sandbox_id, id);
        let conn: task::ConnectResponse =
            call(&c, "containerd.task.v2.Task", "Connect", &connect_req(&id))
                .await
                .expect("Task Connect");
        assert_eq!(
            conn.task_pid, started.pid,
            "Connect answers the holder's pid"
        );
        let state: task::StateResponse = call(
            &c,
            "containerd.task.v3.Task",
            "State",
            &id_req(|r: &mut task::StateRequest| r.id = id.clone()),
        )
        .await
        .expect("Task State of the sandbox id");
        assert_eq!(state.pid, started.pid);
        assert_eq!(state.status.value(), task::Status::RUNNING as i32);
        let pids: task::PidsResponse = call(
            &c,
            "containerd.task.v2.Task",
            "Pids",
            &id_req(|r: &mut task::PidsRequest| r.id = id.clone()),
        )
        .await
        .expect("Task Pids of the sandbox id");
        let listed: Vec<u32> = pids.processes.iter().map(|p| p.pid).collect();
        assert_eq!(listed, vec![started.pid]);
        let platform: sb::PlatformResponse = call(
            &c,
            SERVICE,
            "Platform",
            &id_req(|r: &mut sb::PlatformRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("Platform");
        assert_eq!(platform.platform.os, "linux");

        // Stop: the holder is killed, reaped once, Wait returns, status NOTREADY.
        let waiter = {
            let c = c.clone();
            let id = id.clone();
            tokio::spawn(async move {
                call::<sb::WaitSandboxResponse>(
                    &c,
                    SERVICE,
                    "WaitSandbox",
                    &id_req(|r: &mut sb::WaitSandboxRequest| r.sandbox_id = id),
                )
                .await
            })
        };
        call::<sb::StopSandboxResponse>(
            &c,
            SERVICE,
            "StopSandbox",
            &id_req(|r: &mut sb::StopSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("StopSandbox");
        let waited = waiter.await.expect("join").expect("WaitSandbox");
        assert_eq!(waited.exit_status, 137);
        assert!(
            !common::process_alive(started.pid),
            "holder alive after Stop"
        );
        let st: sb::SandboxStatusResponse = call(
            &c,
            SERVICE,
            "SandboxStatus",
            &id_req(|r: &mut sb::SandboxStatusRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("SandboxStatus");
        assert_eq!(st.state, "SANDBOX_NOTREADY");

        call::<sb::ShutdownSandboxResponse>(
            &c,
            SERVICE,
            "ShutdownSandbox",
            &id_req(|r: &mut sb::ShutdownSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("ShutdownSandbox answers before the shim exits");
    });
    let socket = PathBuf::from(address.trim_start_matches("unix://"));
    let gone = common::wait_until(WAIT, Duration::from_millis(50), || {
        (!socket.exists()).then_some(())
    });
    assert!(
        gone.is_some(),
        "the shim did not exit after ShutdownSandbox"
    );
    assert!(
        !l.cri_root_dir().exists() && !l.cri_state_dir().exists(),
        "pod files left"
    );
    assert!(
        common::mounts_containing(&l.id).is_empty(),
        "mounts left: {:?}",
        common::mounts_containing(&l.id)
    );
}

/// The holder dies on its own (here: SIGKILL, as an OOM kill would): its exit is the pod's
/// exit — CRI sees the pod NOTREADY — and the pod is still stopped and removed cleanly.
#[test]
fn holder_death_is_the_pods_exit() {
    const TEST: &str = "holder_death_is_the_pods_exit";
    let Some(node) = sandbox_node(TEST) else {
        return;
    };
    let cfg = node.pod_config("holderdeath");
    let pod = node
        .cri
        .run_pod_sandbox(&cfg, SHIM_HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.log_tail(60)));
    let holder = holders(&pod).first().map(|(p, _)| *p).expect("holder");
    assert!(
        common::send_signal(holder, libc_sigkill()),
        "kill -9 holder"
    );
    let not_ready = common::wait_until(WAIT, Duration::from_millis(50), || {
        let st = node.cri.pod_sandbox_status(&pod, false).ok()?;
        (st.status?.state == api::PodSandboxState::NotReady as i32).then_some(())
    });
    assert!(
        not_ready.is_some(),
        "pod still ready after its holder died\n{}",
        node.log_tail(60)
    );
    // The shim is still there (the pod is not removed yet) and reaped the holder.
    assert_eq!(common::process_state(holder), None, "holder not reaped");
    assert!(
        node.cd
            .shim_processes()
            .iter()
            .any(|(_, c)| c.contains(&pod)),
        "the shim left before the pod was removed"
    );
    remove_and_check_clean(&node, &pod);
    // Reaped and reported once (the shim's log, forwarded into containerd's).
    let line = format!("sandbox {pod}: holder {holder} exited");
    assert_eq!(
        node.cd.log_text().matches(&line).count(),
        1,
        "holder exit not reported exactly once"
    );
}

/// A holder that cannot set the pod up fails StartSandbox with an error saying why (here: a
/// "network namespace" that is not one, a namespaced sysctl the kernel does not have); the
/// pod stays NOTREADY and ShutdownSandbox still removes everything.
#[test]
fn holder_failures_are_clear_errors() {
    const TEST: &str = "holder_failures_are_clear_errors";
    if !common::e2e_enabled(TEST) {
        return;
    }
    use containerd_shim_protos::sandbox_api as sb;
    use proto::*;

    let pod_cfg = |sysctl: Option<(&str, &str)>| api::PodSandboxConfig {
        linux: Some(api::LinuxPodSandboxConfig {
            sysctls: sysctl
                .map(|(k, v)| [(k.to_string(), v.to_string())].into_iter().collect())
                .unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases = [
        // An IPC namespace file where a network namespace is expected: setns fails.
        ("/proc/self/ns/ipc", pod_cfg(None), "network namespace"),
        (
            "/proc/self/ns/net",
            pod_cfg(Some(("kernel.shm_tender_no_such_key", "1"))),
            "sysctl kernel.shm_tender_no_such_key=1",
        ),
    ];
    for (netns, cfg, want) in cases {
        let l = Layout::new("holderfail");
        let address = l.start_shim();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let c = ttrpc::asynchronous::Client::connect(&address)
                .await
                .expect("connect");
            call::<sb::CreateSandboxResponse>(
                &c,
                SERVICE,
                "CreateSandbox",
                &create_req(&l, netns, Some(pod_any(&cfg))),
            )
            .await
            .expect("CreateSandbox");
            let id = l.id.clone();
            let e = call::<sb::StartSandboxResponse>(
                &c,
                SERVICE,
                "StartSandbox",
                &id_req(|r: &mut sb::StartSandboxRequest| r.sandbox_id = id.clone()),
            )
            .await
            .expect_err("StartSandbox must fail");
            assert!(format!("{e:?}").contains(want), "{want:?} not in {e:?}");
            let no_holder = common::wait_until(WAIT, Duration::from_millis(20), || {
                holders(&id).is_empty().then_some(())
            });
            assert!(no_holder.is_some(), "a holder is left: {:?}", holders(&id));
            let st: sb::SandboxStatusResponse = call(
                &c,
                SERVICE,
                "SandboxStatus",
                &id_req(|r: &mut sb::SandboxStatusRequest| r.sandbox_id = id.clone()),
            )
            .await
            .expect("SandboxStatus");
            assert_eq!(st.state, "SANDBOX_NOTREADY");
            call::<sb::ShutdownSandboxResponse>(
                &c,
                SERVICE,
                "ShutdownSandbox",
                &id_req(|r: &mut sb::ShutdownSandboxRequest| r.sandbox_id = id.clone()),
            )
            .await
            .expect("ShutdownSandbox");
        });
        let socket = PathBuf::from(address.trim_start_matches("unix://"));
        let gone = common::wait_until(WAIT, Duration::from_millis(50), || {
            (!socket.exists()).then_some(())
        });
        assert!(
            gone.is_some(),
            "the shim did not exit after ShutdownSandbox"
        );
        assert!(
            !l.cri_root_dir().exists() && common::mounts_containing(&l.id).is_empty(),
            "pod files or mounts left"
        );
    }
}

/// The systemd cgroup driver's parent, a slice name (`kubepods-besteffort-pod<uid>.slice` from
/// the kubelet), at the protocol level on a node without systemd: the holder sits in
/// `<expanded slice>/tender-sandbox-<id>.scope` in every cgroup hierarchy; an invalid slice
/// name fails CreateSandbox. Three times: with the slice missing (Tender makes it and every
/// missing parent, and removes them at Shutdown); with the slice made beforehand, as the
/// kubelet does (Tender removes its scope and leaves the slice); and with the slice missing
/// and the shim SIGKILLed, where the `delete` action removes what Tender made.
#[test]
fn systemd_slice_parent_at_protocol_level() {
    const TEST: &str = "systemd_slice_parent_at_protocol_level";
    if !common::e2e_enabled(TEST) {
        return;
    }
    use containerd_shim_protos::sandbox_api as sb;
    use proto::*;

    // A slice name's dashes open parent slices: the random part has none.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let pod = format!("pod{:x}{nanos:x}", std::process::id());
    let slice = format!("tender-test-{pod}.slice");
    let chain = [
        "/tender.slice".to_string(),
        "/tender.slice/tender-test.slice".to_string(),
        format!("/tender.slice/tender-test.slice/{slice}"),
    ];
    // Every hierarchy the shim handles: the v2 root, or each v1/hybrid mount.
    let hierarchies: Vec<PathBuf> = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec![PathBuf::from("/sys/fs/cgroup")]
    } else {
        fs::read_dir("/sys/fs/cgroup")
            .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !p.is_symlink() && p.join("cgroup.procs").exists())
            .collect()
    };
    assert!(!hierarchies.is_empty(), "no cgroup hierarchy");
    let dirs = |rel: &str| -> Vec<PathBuf> {
        hierarchies
            .iter()
            .map(|h| h.join(rel.trim_start_matches('/')))
            .collect()
    };
    let cgroup_parent_cfg = |parent: &str| api::PodSandboxConfig {
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    };

    for (kubelet_made_slice, kill_shim) in [(false, false), (true, false), (false, true)] {
        // What existed before (another run may share tender.slice / tender-test.slice).
        let existed: Vec<(PathBuf, bool)> = chain
            .iter()
            .flat_map(|c| dirs(c))
            .map(|d| {
                let e = d.is_dir();
                (d, e)
            })
            .collect();
        let mut made_here = Vec::new();
        if kubelet_made_slice {
            for c in &chain {
                for d in dirs(c) {
                    if fs::create_dir(&d).is_ok() {
                        made_here.push(d);
                    }
                }
            }
            // A fresh v1 cpuset takes no process until it has CPUs and memory nodes.
            for d in &made_here {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    if let (Ok(mine), Some(parent)) = (fs::read_to_string(d.join(f)), d.parent()) {
                        if mine.trim().is_empty() {
                            let theirs = fs::read_to_string(parent.join(f)).unwrap_or_default();
                            let _ = fs::write(d.join(f), theirs.trim());
                        }
                    }
                }
            }
        }
        let l = Layout::new("slice");
        let scope = format!("{}/tender-sandbox-{}.scope", chain[2], l.id);
        let address = l.start_shim();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let holder = rt.block_on(async {
            let c = ttrpc::asynchronous::Client::connect(&address)
                .await
                .expect("connect");
            for bad in ["tender--bad.slice", "-tender.slice", "tender/x.slice"] {
                let req = create_req(
                    &l,
                    "/proc/self/ns/net",
                    Some(pod_any(&cgroup_parent_cfg(bad))),
                );
                let e = call::<sb::CreateSandboxResponse>(&c, SERVICE, "CreateSandbox", &req)
                    .await
                    .expect_err(bad);
                assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{bad}: {e:?}");
                assert!(
                    format!("{e:?}").contains("invalid systemd slice name"),
                    "{bad}: {e:?}"
                );
            }
            let req = create_req(
                &l,
                "/proc/self/ns/net",
                Some(pod_any(&cgroup_parent_cfg(&slice))),
            );
            call::<sb::CreateSandboxResponse>(&c, SERVICE, "CreateSandbox", &req)
                .await
                .expect("CreateSandbox");
            let id = l.id.clone();
            let started: sb::StartSandboxResponse = call(
                &c,
                SERVICE,
                "StartSandbox",
                &id_req(|r: &mut sb::StartSandboxRequest| r.sandbox_id = id.clone()),
            )
            .await
            .expect("StartSandbox");
            // Every hierarchy shows the holder in its scope under the expanded slice.
            let proc_cgroup =
                fs::read_to_string(format!("/proc/{}/cgroup", started.pid)).expect("cgroup");
            let lines: Vec<&str> = proc_cgroup.lines().collect();
            assert!(!lines.is_empty());
            for line in &lines {
                let mut parts = line.splitn(3, ':');
                let (_, ctrl, path) = (parts.next(), parts.next().unwrap_or(""), parts.next());
                let dir = if ctrl.is_empty() {
                    ["unified", ""]
                        .iter()
                        .map(|m| Path::new("/sys/fs/cgroup").join(m))
                        .find(|d| hierarchies.contains(d))
                } else {
                    let name = ctrl.strip_prefix("name=").unwrap_or(ctrl);
                    Some(Path::new("/sys/fs/cgroup").join(name)).filter(|d| hierarchies.contains(d))
                };
                if dir.is_none() {
                    continue; // a hierarchy not mounted where the shim looks
                }
                assert_eq!(path, Some(scope.as_str()), "{line}\n{proc_cgroup}");
            }
            for d in dirs(&scope) {
                assert!(d.is_dir(), "{} missing", d.display());
            }
            if kill_shim {
                return started.pid;
            }
            call::<sb::ShutdownSandboxResponse>(
                &c,
                SERVICE,
                "ShutdownSandbox",
                &id_req(|r: &mut sb::ShutdownSandboxRequest| r.sandbox_id = id.clone()),
            )
            .await
            .expect("ShutdownSandbox");
            started.pid
        });
        if kill_shim {
            // containerd's part after a shim died: the `delete` action in the bundle.
            for (pid, argv) in common::processes() {
                if argv.first().map(String::as_str) == Some(common::SHIM_BIN)
                    && argv.windows(2).any(|w| w[0] == "-id" && w[1] == l.id)
                {
                    common::send_signal(pid, libc_sigkill());
                }
            }
            let dead = common::wait_until(WAIT, Duration::from_millis(20), || {
                (!common::process_alive(holder)).then_some(())
            });
            assert!(dead.is_some(), "holder outlived its shim");
            let out = std::process::Command::new(common::SHIM_BIN)
                .args(["-namespace", &l.namespace, "-id", &l.id, "-bundle"])
                .arg(&l.bundle)
                .arg("delete")
                .current_dir(&l.bundle)
                .output()
                .expect("shim delete");
            assert!(
                out.status.success(),
                "delete: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            let socket = PathBuf::from(address.trim_start_matches("unix://"));
            let gone = common::wait_until(WAIT, Duration::from_millis(50), || {
                (!socket.exists()).then_some(())
            });
            assert!(
                gone.is_some(),
                "the shim did not exit after ShutdownSandbox"
            );
        }
        assert!(!common::process_alive(holder), "holder alive");
        // The scope is gone everywhere.
        for d in dirs(&scope) {
            assert!(!d.exists(), "holder cgroup left: {}", d.display());
        }
        if kubelet_made_slice {
            // Not Tender's: left as it was (then removed by the test).
            for d in dirs(&chain[2]) {
                assert!(
                    d.is_dir(),
                    "the kubelet's slice was removed: {}",
                    d.display()
                );
            }
            for d in made_here.iter().rev() {
                let _ = fs::remove_dir(d);
            }
        } else {
            // Made by Tender: gone, unless it existed before or another run uses it now.
            for (d, before) in &existed {
                let in_use = fs::read_dir(d)
                    .map(|rd| rd.flatten().any(|e| e.path().is_dir()))
                    .unwrap_or(false);
                assert!(
                    *before || !d.exists() || in_use,
                    "cgroup made by Tender left: {}",
                    d.display()
                );
            }
        }
    }
}

/// A network namespace inside a fresh user namespace with the given mappings, bound to a file:
/// what containerd 2.x's CRI makes for a userns pod before it calls CreateSandbox
/// (`setupNetnsWithinUserns`). Unmounted and removed on drop.
struct UsernsNetns {
    dir: PathBuf,
    path: PathBuf,
}

impl UsernsNetns {
    fn new(tag: &str, uid_map: &str, gid_map: &str) -> UsernsNetns {
        let dir = std::env::temp_dir().join(common::unique_id(tag));
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("net");
        fs::write(&path, "").expect("netns file");
        let mut child = std::process::Command::new("unshare")
            .args(["--user", "--net", "sleep", "60"])
            .spawn()
            .expect("unshare");
        let pid = child.id().to_string();
        let entered = common::wait_until(WAIT, Duration::from_millis(10), || {
            (ns_link(&pid, "user") != ns_link("self", "user")).then_some(())
        });
        assert!(entered.is_some(), "unshare --user did not happen");
        fs::write(format!("/proc/{pid}/uid_map"), uid_map).expect("uid_map");
        fs::write(format!("/proc/{pid}/gid_map"), gid_map).expect("gid_map");
        let st = std::process::Command::new("mount")
            .arg("--bind")
            .arg(format!("/proc/{pid}/ns/net"))
            .arg(&path)
            .status()
            .expect("mount");
        assert!(st.success(), "bind the netns");
        let _ = child.kill();
        let _ = child.wait();
        UsernsNetns { dir, path }
    }

    fn path(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for UsernsNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `ioctl(NS_GET_USERNS)`: the (device, inode) of the user namespace owning the namespace
/// at `path`.
fn owner_of(path: &str) -> (u64, u64) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: NS_GET_USERNS (_IO(0xb7, 1)) takes no argument and returns a new fd.
    let fd = unsafe { libc::ioctl(f.as_raw_fd(), 0xb701 as _) };
    assert!(
        fd >= 0,
        "NS_GET_USERNS {path}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd of ours.
    let owner = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let m = owner.metadata().expect("fstat");
    (m.dev(), m.ino())
}

fn ns_id(path: &str) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.dev(), m.ino())
}

fn id_map(container_id: u32, host_id: u32, length: u32) -> api::IdMapping {
    api::IdMapping {
        host_id,
        container_id,
        length,
    }
}

fn userns_pod_config(
    hostname: &str,
    network: api::NamespaceMode,
    uids: Vec<api::IdMapping>,
    gids: Vec<api::IdMapping>,
) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        hostname: hostname.into(),
        linux: Some(api::LinuxPodSandboxConfig {
            sysctls: [(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "80".to_string(),
            )]
            .into_iter()
            .collect(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: network as i32,
                    pid: api::NamespaceMode::Pod as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    target_id: String::new(),
                    userns_options: Some(api::UserNamespace {
                        mode: api::NamespaceMode::Pod as i32,
                        uids,
                        gids,
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A userns pod (Kubernetes `hostUsers: false`) at the protocol level, as containerd 2.1.9's
/// CRI drives it: the network namespace it passes was made inside a user namespace with the
/// pod's mappings. The holder joins that user namespace (uid/gid 0 there, mapped to the pod's
/// host range) and its UTS, IPC and PID namespaces belong to it; a process joining the pod
/// the way runc does for a container (user namespace first, then ipc, uts, net, pid) gets in
/// and is root in the pod, mapped. Bad mappings are INVALID_ARGUMENT, a network namespace of
/// the node's user namespace FAILED_PRECONDITION, mappings other than the namespace's a clear
/// StartSandbox error.
#[test]
fn userns_pod_at_protocol_level() {
    const TEST: &str = "userns_pod_at_protocol_level";
    if !common::e2e_enabled(TEST) {
        return;
    }
    use containerd_shim_protos::sandbox_api as sb;
    use proto::*;

    const UID_BASE: u32 = 1_000_000;
    const GID_BASE: u32 = 1_200_000;
    let netns = UsernsNetns::new(
        "usernsnet",
        &format!("0 {UID_BASE} 65536\n"),
        &format!("0 {GID_BASE} 65536\n"),
    );
    let good = |hostname: &str| {
        userns_pod_config(
            hostname,
            api::NamespaceMode::Pod,
            vec![id_map(0, UID_BASE, 65536)],
            vec![id_map(0, GID_BASE, 65536)],
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let l = Layout::new("userns");
    let address = l.start_shim();
    let id = l.id.clone();
    let pid = rt.block_on(async {
        let c = ttrpc::asynchronous::Client::connect(&address)
            .await
            .expect("connect");
        let m = |c, h, n| vec![id_map(c, h, n)];
        let many: Vec<api::IdMapping> = (0..341).map(|i| id_map(i, UID_BASE + i, 1)).collect();
        let bad = [
            ("no uid mapping", vec![], m(0, GID_BASE, 65536)),
            ("no gid mapping", m(0, UID_BASE, 65536), vec![]),
            ("length 0", m(0, UID_BASE, 0), m(0, GID_BASE, 65536)),
            ("host overflow", m(0, u32::MAX, 2), m(0, GID_BASE, 65536)),
            (
                "container overflow",
                m(u32::MAX - 1, UID_BASE, 3),
                m(0, GID_BASE, 65536),
            ),
            ("341 lines", many, m(0, GID_BASE, 65536)),
            (
                "overlap",
                vec![id_map(0, UID_BASE, 100), id_map(50, UID_BASE + 1000, 100)],
                m(0, GID_BASE, 65536),
            ),
        ];
        for (what, uids, gids) in bad {
            let cfg = userns_pod_config("u", api::NamespaceMode::Pod, uids, gids);
            let e = call::<sb::CreateSandboxResponse>(
                &c,
                SERVICE,
                "CreateSandbox",
                &create_req(&l, &netns.path(), Some(pod_any(&cfg))),
            )
            .await
            .expect_err(what);
            assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{what}: {e:?}");
        }
        let mut host_net = good("u");
        if let Some(ns) = host_net
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.network = api::NamespaceMode::Node as i32;
        }
        host_net.linux.as_mut().expect("linux").sysctls.clear();
        let e = call::<sb::CreateSandboxResponse>(
            &c,
            SERVICE,
            "CreateSandbox",
            &create_req(&l, "", Some(pod_any(&host_net))),
        )
        .await
        .expect_err("userns with host network");
        assert_eq!(code(&e), ttrpc::Code::INVALID_ARGUMENT, "{e:?}");
        // A network namespace of the node's user namespace: containers could not join it.
        let e = call::<sb::CreateSandboxResponse>(
            &c,
            SERVICE,
            "CreateSandbox",
            &create_req(&l, "/proc/self/ns/net", Some(pod_any(&good("u")))),
        )
        .await
        .expect_err("netns of the node's user namespace");
        assert_eq!(code(&e), ttrpc::Code::FAILED_PRECONDITION, "{e:?}");
        assert!(format!("{e:?}").contains("user namespace"), "{e:?}");

        call::<sb::CreateSandboxResponse>(
            &c,
            SERVICE,
            "CreateSandbox",
            &create_req(&l, &netns.path(), Some(pod_any(&good("userns-pod")))),
        )
        .await
        .expect("CreateSandbox");
        let started: sb::StartSandboxResponse = call(
            &c,
            SERVICE,
            "StartSandbox",
            &id_req(|r: &mut sb::StartSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("StartSandbox");
        let st: sb::SandboxStatusResponse = call(
            &c,
            SERVICE,
            "SandboxStatus",
            &id_req(|r: &mut sb::SandboxStatusRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("SandboxStatus");
        assert_eq!((st.state.as_str(), st.pid), ("SANDBOX_READY", started.pid));
        started.pid
    });
    let p = pid.to_string();
    assert_eq!(holders(&id).len(), 1, "one holder: {:?}", holders(&id));
    assert_eq!(
        holders(&id)[0].0,
        pid,
        "StartSandbox answers the holder's pid"
    );
    // The holder's user namespace: the one owning CRI's netns, with the pod's mappings.
    let maps = |f: &str| {
        fs::read_to_string(format!("/proc/{p}/{f}"))
            .expect("map")
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(maps("uid_map"), ["0", &UID_BASE.to_string(), "65536"]);
    assert_eq!(maps("gid_map"), ["0", &GID_BASE.to_string(), "65536"]);
    let userns = ns_id(&format!("/proc/{p}/ns/user"));
    assert_eq!(
        userns,
        owner_of(&netns.path()),
        "holder in the netns's userns"
    );
    assert_ne!(userns, ns_id("/proc/self/ns/user"));
    assert_eq!(
        ns_id(&format!("/proc/{p}/ns/net")),
        ns_id(&netns.path()),
        "holder in CRI's netns"
    );
    for ns in ["uts", "ipc", "pid"] {
        let path = format!("/proc/{p}/ns/{ns}");
        assert_ne!(
            ns_id(&path),
            ns_id(&format!("/proc/self/ns/{ns}")),
            "{ns}: own"
        );
        assert_eq!(owner_of(&path), userns, "{ns} owned by the pod's userns");
    }
    // uid/gid 0 in the pod, the range's first id on the node; PID 1 of the pod.
    let status = fs::read_to_string(format!("/proc/{p}/status")).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), vec![UID_BASE.to_string(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![GID_BASE.to_string(); 4], "{status}");
    assert_eq!(field("NSpid:"), [p.clone(), "1".into()], "{status}");
    // The pod's sysctl, written from inside as the pod's root.
    let out = std::process::Command::new("nsenter")
        .args([
            &format!("--net=/proc/{p}/ns/net"),
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        ])
        .output()
        .expect("nsenter");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "80");

    // Join the pod as runc joins a container to it: the user namespace first, then the others.
    let joined = {
        use std::os::unix::process::CommandExt;
        let files: Vec<fs::File> = ["user", "ipc", "uts", "net", "pid"]
            .iter()
            .map(|ns| fs::File::open(format!("/proc/{p}/ns/{ns}")).expect("ns"))
            .collect();
        let fds: Vec<i32> = files.iter().map(std::os::fd::AsRawFd::as_raw_fd).collect();
        let mut cmd = std::process::Command::new("sh");
        cmd.args([
            "-c",
            "id -u; id -g; cat /proc/self/uid_map; hostname; readlink /proc/self/ns/user",
        ]);
        // SAFETY: only system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    if libc::setns(*fd, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("join the pod (user namespace first)");
        drop(files);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    eprintln!("{TEST}: holder {p}; a process joining the pod sees:\n{joined}");
    let lines: Vec<&str> = joined.lines().collect();
    assert_eq!(lines.len(), 5, "{joined}");
    assert_eq!(
        (lines[0], lines[1]),
        ("0", "0"),
        "root in the pod: {joined}"
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["0", &UID_BASE.to_string(), "65536"]
    );
    assert_eq!(lines[3], "userns-pod");
    assert_eq!(
        lines[4],
        fs::read_link(format!("/proc/{p}/ns/user"))
            .expect("link")
            .display()
            .to_string()
    );

    rt.block_on(async {
        let c = ttrpc::asynchronous::Client::connect(&address)
            .await
            .expect("connect");
        call::<sb::StopSandboxResponse>(
            &c,
            SERVICE,
            "StopSandbox",
            &id_req(|r: &mut sb::StopSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("StopSandbox");
        call::<sb::ShutdownSandboxResponse>(
            &c,
            SERVICE,
            "ShutdownSandbox",
            &id_req(|r: &mut sb::ShutdownSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("ShutdownSandbox");
    });
    assert!(!common::process_alive(pid), "holder alive after Stop");

    // Mappings other than the network namespace's user namespace has: StartSandbox says so.
    let l = Layout::new("usernsmis");
    let address = l.start_shim();
    let id = l.id.clone();
    rt.block_on(async {
        let c = ttrpc::asynchronous::Client::connect(&address)
            .await
            .expect("connect");
        let cfg = userns_pod_config(
            "u",
            api::NamespaceMode::Pod,
            vec![id_map(0, UID_BASE + 65536, 65536)],
            vec![id_map(0, GID_BASE, 65536)],
        );
        call::<sb::CreateSandboxResponse>(
            &c,
            SERVICE,
            "CreateSandbox",
            &create_req(&l, &netns.path(), Some(pod_any(&cfg))),
        )
        .await
        .expect("CreateSandbox");
        let e = call::<sb::StartSandboxResponse>(
            &c,
            SERVICE,
            "StartSandbox",
            &id_req(|r: &mut sb::StartSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect_err("StartSandbox with other mappings");
        assert!(format!("{e:?}").contains("uid_map"), "{e:?}");
        let no_holder = common::wait_until(WAIT, Duration::from_millis(20), || {
            holders(&id).is_empty().then_some(())
        });
        assert!(no_holder.is_some(), "a holder is left: {:?}", holders(&id));
        call::<sb::ShutdownSandboxResponse>(
            &c,
            SERVICE,
            "ShutdownSandbox",
            &id_req(|r: &mut sb::ShutdownSandboxRequest| r.sandbox_id = id.clone()),
        )
        .await
        .expect("ShutdownSandbox");
    });
}

/// The pod user namespace config CRI gets from the kubelet for `hostUsers: false`, for the pod
/// and (the same) for each container.
fn with_userns(mut ns: api::NamespaceOption, uid: u32, gid: u32) -> api::NamespaceOption {
    ns.userns_options = Some(api::UserNamespace {
        mode: api::NamespaceMode::Pod as i32,
        uids: vec![id_map(0, uid, 65536)],
        gids: vec![id_map(0, gid, 65536)],
    });
    ns
}

/// A userns pod (`hostUsers: false`) through containerd 2.x's CRI on `tender-shim`: CRI makes
/// the pod's network namespace inside a user namespace with the pod's mappings; the holder is
/// in that user namespace (its `uid_map` the pod's), its UTS, IPC and PID namespaces belong to
/// it, and the pod is READY. Its container: root in that user namespace, mapped — when the
/// node can run one at all. A userns container needs idmapped mounts: containerd 2.1.9's CRI
/// refuses it unless runc's `features` lists `mountExtensions.idmap` (runc >= 1.2; the test
/// machine has 1.1.5). Then the test says so and checks the rest. (Its rootfs comes as an
/// overlay with `uidmap=`/`gidmap=` options, which Tender mounts idmapped: tested without
/// containerd in tests/idmap_rootfs.rs.)
/// (On the test machine even the classic `runc` handler fails a userns pod: containerd
/// 2.1.9's Go shim cannot mount the pause container's idmapped rootfs, EINVAL.)
#[test]
fn userns_pod_through_cri() {
    const TEST: &str = "userns_pod_through_cri";
    let Some(node) = sandbox_node(TEST) else {
        return;
    };
    const UID: u32 = 3_014_656; // 46 * 65536, as the kubelet allocates
    const GID: u32 = 3_080_192;
    let mut cfg = node.pod_config("usernscri");
    let ns = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .expect("namespace options");
    *ns = with_userns(ns.clone(), UID, GID);
    let pod = node
        .cri
        .run_pod_sandbox(&cfg, SHIM_HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.log_tail(60)));
    let st = node.cri.pod_sandbox_status(&pod, false).expect("status");
    assert_eq!(
        st.status.map(|s| s.state),
        Some(api::PodSandboxState::Ready as i32)
    );
    let holder = holders(&pod)
        .first()
        .map(|(p, _)| p.to_string())
        .expect("holder");
    let map = |f: &str| {
        fs::read_to_string(format!("/proc/{holder}/{f}"))
            .expect("map")
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(map("uid_map"), ["0", &UID.to_string(), "65536"]);
    assert_eq!(map("gid_map"), ["0", &GID.to_string(), "65536"]);
    let userns = ns_id(&format!("/proc/{holder}/ns/user"));
    assert_ne!(userns, ns_id("/proc/self/ns/user"));
    for ns in ["net", "uts", "ipc", "pid"] {
        assert_eq!(
            owner_of(&format!("/proc/{holder}/ns/{ns}")),
            userns,
            "holder's {ns} namespace owned by the pod's user namespace"
        );
    }

    let mut c = container("u", &["sleep", "3600"], api::NamespaceMode::Container);
    if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.namespace_options = Some(with_userns(
            ns_opts(api::NamespaceMode::Container),
            UID,
            GID,
        ));
    }
    let started = node
        .cri
        .create_container(&pod, &c, &cfg)
        .and_then(|id| node.cri.start_container(&id).map(|_| id));
    match started {
        Ok(id) => {
            let out = exec_ok(
                &node,
                &id,
                &[
                    "sh",
                    "-c",
                    "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user",
                ],
            );
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.first(), Some(&"0"), "{out}");
            assert_eq!(
                lines
                    .get(1)
                    .map(|l| l.split_whitespace().collect::<Vec<_>>()),
                Some(vec!["0", &UID.to_string(), "65536"])
            );
            let holder_ns = fs::read_link(format!("/proc/{holder}/ns/user")).expect("link");
            assert_eq!(lines.get(2).copied(), holder_ns.to_str(), "{out}");
        }
        Err(e) if e.message().contains("idmap") => common::notice(&format!(
            "{TEST}: the container of the userns pod did not start (idmapped mounts): {}",
            e.message()
        )),
        Err(e) => panic!("container of a userns pod: {e}\n{}", node.log_tail(40)),
    }
    remove_and_check_clean(&node, &pod);
}
