//! Kubernetes end to end: a real containerd 1.6 with its built-in CRI plugin, a runtime
//! handler `tender` (`runtime_type = "io.containerd.tender.v2"` plus an `options` table that
//! reaches the shim as CRI's runtimeoptions TOML), driven through the CRI gRPC API exactly as
//! the kubelet drives it: a pod sandbox, containers in it, exec, logs, OOM, stop with grace
//! periods, pod teardown. One Tender shim must serve the whole pod and leave nothing behind.
//!
//! Needs root, containerd, runc and the CNI plugins (`make deps`); skips otherwise, fails when
//! `CI=true`.

mod common;
mod cri;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::shim_binary_name;
use cri::api::{self, ContainerState};
use cri::{is_state, CriNode};

const WAIT: Duration = Duration::from_secs(15);

fn container(name: &str, command: &[&str], memory_limit: i64) -> api::ContainerConfig {
    let resources = api::LinuxContainerResources {
        memory_limit_in_bytes: memory_limit,
        ..Default::default()
    };
    cri::container_config(name, command, Some(resources))
}

/// Shim processes of the runtime under test serving this containerd (argv[0] ends with the
/// shim binary's name and argv mentions the private containerd's socket).
fn pod_shims(node: &CriNode) -> Vec<(u32, String)> {
    let bin = shim_binary_name(&node.cd.runtime);
    node.cd
        .shim_processes()
        .into_iter()
        .filter(|(_, cmd)| {
            cmd.split(' ')
                .next()
                .is_some_and(|argv0| argv0.ends_with(&bin))
        })
        .collect()
}

fn read_log(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_default()
}

#[test]
fn pod_lifecycle_through_cri_with_one_shim_per_pod() {
    const TEST: &str = "pod_lifecycle_through_cri_with_one_shim_per_pod";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    let started = Instant::now();
    let node = CriNode::start();
    let cri = &node.cri;
    let diag = || node.log_tail(60);

    let v = cri.version().expect("CRI Version");
    assert_eq!(v.runtime_name, "containerd", "{v:?}");
    assert_eq!(v.runtime_api_version, "v1", "{v:?}");

    // ---- the pod -------------------------------------------------------------------------
    let pod_cfg = node.pod_config("tender-pod");
    let pod = cri
        .run_pod_sandbox(&pod_cfg, cri::HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox(handler=tender): {e}\n{}", diag()));
    let st = cri
        .pod_sandbox_status(&pod, true)
        .unwrap_or_else(|e| panic!("PodSandboxStatus: {e}\n{}", diag()));
    let status = st.status.clone().expect("sandbox status");
    assert_eq!(
        status.state,
        api::PodSandboxState::Ready as i32,
        "{status:?}"
    );
    let ip = status.network.clone().map(|n| n.ip).unwrap_or_default();
    let prefix = node.subnet.trim_end_matches("0/24");
    assert!(
        ip.starts_with(prefix),
        "pod IP {ip:?} is not from the private CNI subnet {}",
        node.subnet
    );
    let netns = cri::netns_path(&st).unwrap_or_else(|| {
        panic!(
            "no network namespace path in the verbose sandbox status: {:?}",
            st.info
        )
    });
    node.track_netns(&netns);
    assert!(netns.exists(), "pod netns {} missing", netns.display());
    let log_dir = Path::new(&pod_cfg.log_directory).to_path_buf();

    // ---- two long-running containers -----------------------------------------------------
    let sleeper = cri
        .create_container(&pod, &container("sleeper", &["sleep", "1000"], 0), &pod_cfg)
        .unwrap_or_else(|e| panic!("CreateContainer sleeper: {e}\n{}", diag()));
    // What `talker` prints on stdout: ordinary lines, an empty line, a tab, and one line
    // longer than max_container_log_line_size (16 KiB), which CRI splits into P + F entries.
    let talker_script = "echo 'line 1'; echo 'line 2 with  two spaces'; echo; \
                         printf 'tab\\there\\n'; head -c 20000 /dev/zero | tr '\\0' a; echo; \
                         echo 'to stderr' >&2; echo 'last line'; exec sleep 1000";
    let mut expected_stdout = b"line 1\nline 2 with  two spaces\n\ntab\there\n".to_vec();
    expected_stdout.extend(std::iter::repeat_n(b'a', 20000));
    expected_stdout.extend_from_slice(b"\nlast line\n");
    let talker = cri
        .create_container(
            &pod,
            &container("talker", &["sh", "-c", talker_script], 0),
            &pod_cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer talker: {e}\n{}", diag()));
    for id in [&sleeper, &talker] {
        cri.start_container(id)
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}\n{}", diag()));
    }
    for id in [&sleeper, &talker] {
        let (ok, last) = cri.wait_container(id, WAIT, |s| is_state(s, ContainerState::Running));
        assert!(ok, "{id} not RUNNING: {last:?}\n{}", diag());
    }

    // One shim serves the sandbox and both containers.
    let shims = pod_shims(&node);
    assert_eq!(
        shims.len(),
        1,
        "expected exactly one {} process for the pod, found {shims:#?}",
        shim_binary_name(&node.cd.runtime)
    );
    let shim_pid = shims[0].0;
    let pod_address = node
        .shim_address(&pod)
        .unwrap_or_else(|| panic!("no shim address recorded for the sandbox {pod}"));
    let same_shim = |id: &str| {
        assert_eq!(
            node.shim_address(id).as_deref(),
            Some(pod_address.as_str()),
            "container {id} is not served by the pod's shim"
        );
    };
    same_shim(&sleeper);
    same_shim(&talker);
    // The handler's options table reached the shim: runc runs with Root = <dir>/runc.
    for id in [&pod, &sleeper, &talker] {
        let state = node.runc_root.join(cri::K8S_NAMESPACE).join(id);
        assert!(
            state.join("state.json").is_file(),
            "runc state of {id} is not under the Root of the handler's options ({})",
            state.display()
        );
    }

    // ---- ExecSync ------------------------------------------------------------------------
    let r = cri
        .exec_sync(
            &sleeper,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            10,
        )
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", diag()));
    assert_eq!(r.stdout, b"out\n", "ExecSync stdout");
    assert_eq!(r.stderr, b"err\n", "ExecSync stderr");
    assert_eq!(r.exit_code, 3, "ExecSync exit code");
    // A command that does not exist (a broken exec probe): a clear error, promptly. CRI's
    // cleanup of the failed exec waits for its Wait, which must be answered although the
    // process never ran.
    let t = Instant::now();
    let r = cri.exec_sync(&sleeper, &["/no/such/binary"], 10);
    let took = t.elapsed();
    match &r {
        Err(e) => assert!(
            e.message().contains("/no/such/binary"),
            "the error should name the missing command: {e:?}"
        ),
        Ok(resp) => assert_ne!(
            resp.exit_code, 0,
            "a missing command cannot succeed: {resp:?}"
        ),
    }
    assert!(
        took < Duration::from_secs(8),
        "ExecSync of a missing command took {took:?}: {r:?}\n{}",
        diag()
    );
    // RUNNING says nothing about how far the talker's script got: poll until its shell has
    // exec'd `sleep` (ExecSync errors or other output mean "not yet").
    let mut last = None;
    let pid1_is_sleep = common::wait_until(WAIT, Duration::from_millis(50), || {
        let r = cri.exec_sync(&talker, &["cat", "/proc/1/cmdline"], 10);
        let done = matches!(&r, Ok(r) if r.exit_code == 0 && r.stdout == b"sleep\x001000\x00");
        last = Some(r);
        done.then_some(())
    });
    assert!(
        pid1_is_sleep.is_some(),
        "the talker's pid 1 never became `sleep 1000`; last ExecSync: {last:?}\n{}",
        diag()
    );

    // ---- streaming Exec (containerd's streaming server, websocket) ----------------------
    let url = cri
        .exec_url(
            &sleeper,
            &["sh", "-c", "echo streamed; echo oops >&2; exit 5"],
        )
        .unwrap_or_else(|e| panic!("Exec: {e}\n{}", diag()));
    let ex = cri::stream_exec(&url, WAIT).unwrap_or_else(|e| panic!("{e}\n{}", diag()));
    assert_eq!(ex.stdout, b"streamed\n", "streamed stdout: {ex:?}");
    assert_eq!(ex.stderr, b"oops\n", "streamed stderr: {ex:?}");
    assert_eq!(ex.exit_code, Some(5), "streamed exit status: {ex:?}");

    // ---- container logs: CRI format, byte-exact ------------------------------------------
    let talker_log = log_dir.join("talker.log");
    let complete = common::wait_until(WAIT, Duration::from_millis(50), || {
        let lines = cri::parse_cri_log(&read_log(&talker_log)).ok()?;
        (cri::stream_bytes(&lines, "stdout") == expected_stdout
            && cri::stream_bytes(&lines, "stderr") == b"to stderr\n")
            .then_some(lines)
    });
    let Some(lines) = complete else {
        let raw = read_log(&talker_log);
        panic!(
            "talker's CRI log {} is not exactly what it printed; parse: {:?}\nraw ({} bytes): {:?}",
            talker_log.display(),
            cri::parse_cri_log(&raw).map(|l| l.len()),
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(600)])
        );
    };
    let long: Vec<&cri::LogLine> = lines
        .iter()
        .filter(|l| l.content.first() == Some(&b'a'))
        .collect();
    assert!(
        long.len() >= 2
            && long[..long.len() - 1].iter().all(|l| l.tag == "P")
            && long[long.len() - 1].tag == "F",
        "the 20000-byte line must be split into P entries and a final F entry: {:?}",
        long.iter()
            .map(|l| (l.tag.clone(), l.content.len()))
            .collect::<Vec<_>>()
    );
    assert!(
        lines
            .iter()
            .any(|l| l.stream == "stdout" && l.tag == "F" && l.content.is_empty()),
        "the empty line must be logged as an empty F entry"
    );

    // ---- exits: OOMKilled / Completed / Error --------------------------------------------
    let hog = cri
        .create_container(
            &pod,
            &container(
                "hog",
                &["sh", "-c", "x=aaaaaaaa; while :; do x=$x$x; done"],
                32 << 20,
            ),
            &pod_cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer hog: {e}\n{}", diag()));
    let done = cri
        .create_container(
            &pod,
            &container("done", &["sh", "-c", "echo bye"], 0),
            &pod_cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer done: {e}\n{}", diag()));
    let fail = cri
        .create_container(
            &pod,
            &container("fail", &["sh", "-c", "exit 2"], 0),
            &pod_cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer fail: {e}\n{}", diag()));
    for id in [&hog, &done, &fail] {
        cri.start_container(id)
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}\n{}", diag()));
        same_shim(id);
    }
    let exited = |id: &str| {
        let (ok, last) = cri.wait_container(id, WAIT, |s| is_state(s, ContainerState::Exited));
        assert!(ok, "{id} did not exit: {last:?}\n{}", diag());
        last.expect("status")
    };
    let s = exited(&hog);
    assert_eq!(
        (s.reason.as_str(), s.exit_code),
        ("OOMKilled", 137),
        "a container over its memory limit: {s:?}"
    );
    let s = exited(&done);
    assert_eq!((s.reason.as_str(), s.exit_code), ("Completed", 0), "{s:?}");
    let s = exited(&fail);
    assert_eq!((s.reason.as_str(), s.exit_code), ("Error", 2), "{s:?}");

    // ---- StopContainer with a grace period -----------------------------------------------
    let termer = cri
        .create_container(
            &pod,
            &container(
                "termer",
                &[
                    "sh",
                    "-c",
                    "trap 'exit 143' TERM; echo ready; sleep 1000 & wait",
                ],
                0,
            ),
            &pod_cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer termer: {e}\n{}", diag()));
    let stubborn = cri
        .create_container(
            &pod,
            &container(
                "stubborn",
                &["sh", "-c", "trap '' TERM; echo ready; sleep 1000 & wait"],
                0,
            ),
            &pod_cfg,
        )
        .unwrap_or_else(|e| panic!("CreateContainer stubborn: {e}\n{}", diag()));
    for (id, name) in [(&termer, "termer"), (&stubborn, "stubborn")] {
        cri.start_container(id)
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", diag()));
        same_shim(id);
        // The trap is set once `ready` is logged.
        let log = log_dir.join(format!("{name}.log"));
        let ready = common::wait_until(WAIT, Duration::from_millis(25), || {
            let lines = cri::parse_cri_log(&read_log(&log)).ok()?;
            (cri::stream_bytes(&lines, "stdout") == b"ready\n").then_some(())
        });
        assert!(ready.is_some(), "{name} never logged `ready`\n{}", diag());
    }
    let t = Instant::now();
    cri.stop_container(&termer, 10)
        .unwrap_or_else(|e| panic!("StopContainer termer: {e}\n{}", diag()));
    let took = t.elapsed();
    let s = cri.container_status(&termer).expect("status termer");
    assert!(is_state(&s, ContainerState::Exited), "{s:?}");
    assert_eq!(
        s.exit_code, 143,
        "TERM trap exits 143 within the grace period: {s:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "termer exited on TERM, StopContainer should not wait out the grace period ({took:?})"
    );
    let t = Instant::now();
    cri.stop_container(&stubborn, 2)
        .unwrap_or_else(|e| panic!("StopContainer stubborn: {e}\n{}", diag()));
    let took = t.elapsed();
    let s = cri.container_status(&stubborn).expect("status stubborn");
    assert!(is_state(&s, ContainerState::Exited), "{s:?}");
    assert_eq!(
        s.exit_code, 137,
        "TERM ignored → SIGKILL after the grace period: {s:?}"
    );
    assert!(
        took >= Duration::from_millis(1900),
        "SIGKILL came before the 2 s grace period ended ({took:?})"
    );

    // ---- RemoveContainer -----------------------------------------------------------------
    let removed = [&hog, &done, &fail, &termer, &stubborn];
    for id in removed {
        cri.remove_container(id)
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}\n{}", diag()));
    }
    let listed: Vec<String> = cri
        .list_containers(&pod)
        .expect("ListContainers")
        .into_iter()
        .map(|c| c.id)
        .collect();
    for id in removed {
        assert!(
            !listed.contains(id),
            "{id} still listed after RemoveContainer"
        );
        let m = cri::mounts_mentioning(&[id]);
        assert!(
            m.is_empty(),
            "mounts of removed container {id} remain: {m:?}"
        );
    }
    let shims = pod_shims(&node);
    assert_eq!(
        shims.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![shim_pid],
        "the pod's one shim must have served every container: {shims:#?}"
    );

    // ---- StopPodSandbox kills every container of the pod; RemovePodSandbox --------------
    cri.stop_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", diag()));
    for id in [&sleeper, &talker] {
        let s = cri
            .container_status(id)
            .expect("status after StopPodSandbox");
        assert!(
            is_state(&s, ContainerState::Exited),
            "{id} still alive after StopPodSandbox: {s:?}"
        );
    }
    let st = cri
        .pod_sandbox_status(&pod, false)
        .expect("PodSandboxStatus");
    assert_eq!(
        st.status.map(|s| s.state),
        Some(api::PodSandboxState::NotReady as i32)
    );
    cri.remove_pod_sandbox(&pod)
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", diag()));
    let err = cri
        .pod_sandbox_status(&pod, false)
        .expect_err("sandbox still known after RemovePodSandbox");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(cri
        .list_containers(&pod)
        .expect("ListContainers")
        .is_empty());

    // Nothing of the pod is left: no shim, no mount, no network namespace.
    let gone = common::wait_until(WAIT, Duration::from_millis(50), || {
        pod_shims(&node).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "shim still running after the pod was removed: {:#?}\n{}",
        pod_shims(&node),
        diag()
    );
    let m = cri::mounts_mentioning(&[&pod, &sleeper, &talker]);
    assert!(m.is_empty(), "mounts of the pod remain: {m:?}");
    let ns = netns.display().to_string();
    assert!(!netns.exists(), "pod network namespace {ns} remains");
    let m = common::mounts_containing(&ns);
    assert!(m.is_empty(), "pod network namespace still mounted: {m:?}");
    let cg: Vec<_> = cri::cgroup_roots(&node.cgroup_parent)
        .into_iter()
        .flat_map(|r| fs::read_dir(r).into_iter().flatten().flatten())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    assert!(cg.is_empty(), "container cgroups remain: {cg:?}");

    common::notice(&format!("{TEST}: {:?}", started.elapsed()));
}

/// The CRI log parser and the exec status decoding the e2e test relies on (no root needed).
#[test]
fn cri_log_format_parser() {
    let log = b"2024-05-01T10:00:00.000000001Z stdout F line 1\n\
                2024-05-01T10:00:00.000000002Z stdout P par\n\
                2024-05-01T10:00:00.000000003Z stdout F tial\n\
                2024-05-01T10:00:00.000000004+02:00 stderr F \n\
                2024-05-01T10:00:00.000000005Z stdout F two  spaces\n";
    let lines = cri::parse_cri_log(log).expect("valid CRI log");
    assert_eq!(lines.len(), 5);
    assert_eq!(
        cri::stream_bytes(&lines, "stdout"),
        b"line 1\npartial\ntwo  spaces\n"
    );
    assert_eq!(cri::stream_bytes(&lines, "stderr"), b"\n");
    assert!(cri::parse_cri_log(b"2024-05-01T10:00:00Z stdout F no newline").is_err());
    assert!(cri::parse_cri_log(b"2024-05-01T10:00:00Z stdin F x\n").is_err());
    assert!(cri::parse_cri_log(b"2024-05-01T10:00:00Z stdout X x\n").is_err());
    assert!(cri::parse_cri_log(b"yesterday stdout F x\n").is_err());
    assert!(cri::parse_cri_log(b"2024-05-01T10:00:00Z stdout F\n").is_err());

    // v4.channel.k8s.io status documents.
    assert_eq!(
        cri::exit_code_of_status(r#"{"metadata":{},"status":"Success"}"#),
        Some(0)
    );
    let failure = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"5"}]}}"#;
    assert_eq!(cri::exit_code_of_status(failure), Some(5));
    assert_eq!(cri::exit_code_of_status(""), None);
}

/// The README's install snippets, appended to the starting configs it names, load CRI and keep
/// the default runtime: a pod runs on `tender` and one on the default handler (runc's Go shim).
fn install_snippets(start: cri::config::Start) {
    let node = CriNode::start_from(start);
    assert!(
        cri::cri_plugin_ok(&node.cd),
        "CRI plugin not ok: {}",
        cri::cri_plugin_line(&node.cd)
    );
    let tender_shim = shim_binary_name(&node.cd.runtime);
    cri::pod_on_handler_runs(&node, cri::HANDLER, &tender_shim);
    cri::pod_on_handler_runs(&node, "", "containerd-shim-runc-v2");
}

#[test]
fn install_snippets_on_debians_default_config() {
    const TEST: &str = "install_snippets_on_debians_default_config";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    install_snippets(cri::config::Start::DebianDefault);
}

#[test]
fn install_snippets_on_containerd_config_default() {
    const TEST: &str = "install_snippets_on_containerd_config_default";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    install_snippets(cri::config::Start::ConfigDefault);
}

/// Why the README's first snippet exists: on containerd 1.x, Debian's config plus a `tender`
/// runtime alone loses `runc`, and CRI refuses to load (the node would be down).
#[test]
fn tender_alone_on_debians_config_breaks_cri_on_1x() {
    const TEST: &str = "tender_alone_on_debians_config_breaks_cri_on_1x";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    let build = common::containerd_version();
    if build.version.0 >= 2 {
        common::notice(&format!(
            "{TEST}: containerd {} keeps its built-in runc runtime; nothing to check",
            build.minor_label()
        ));
        return;
    }
    let cd = common::Containerd::start_with_config(&[], |l| {
        let mut user = cri::config::debian_default_config(&l.build);
        user.push('\n');
        user.push_str(&cri::config::readme_snippet("v2-tender"));
        cri::config::private_config(
            &user,
            &cri::config::Private {
                layout: l,
                runtime: common::TENDER_RUNTIME,
                cni_conf_dir: &l.dir.join("cni"),
                pause_ref: cri::PAUSE_REF,
                cni_bin_dir: cri::CNI_BIN_DIR,
                runc_root: &l.dir.join("runc"),
            },
        )
    });
    let line = cri::cri_plugin_line(&cd);
    assert!(
        line.split_whitespace().last() == Some("error"),
        "expected CRI to fail without runc on containerd {}: {line}",
        build.minor_label()
    );
    assert!(
        cd.log_text().contains("default_runtime_name"),
        "containerd's log does not name the missing default runtime"
    );
}

/// A number for `sleep N` that no other process on the machine uses: the test finds its
/// background process by argv alone.
fn unique_sleep(base: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    format!("{}", base + (nanos ^ std::process::id() as u64) % 100_000)
}

/// A pod whose containers have no PID namespace of their own — `shareProcessNamespace`
/// (`pid` = [`api::NamespaceMode::Pod`]: the containers join the pause container's) or
/// `hostPID` (`pid` = [`api::NamespaceMode::Node`]), set on the sandbox and on the container
/// as the kubelet sends them — runs a container whose shell leaves a background `sleep`
/// behind and exits 3. Like containerd's Go shim, the shim kills what the init left in the
/// container before it reports the exit: the container is EXITED with 3, the `sleep` is gone,
/// and StopPodSandbox and RemovePodSandbox each finish within [`WAIT`], leaving no shim. (On
/// containerd 2.x's CRI such a pod never finished stopping while the `sleep` lived on.)
fn pod_without_own_pid_namespace(test: &str, pid_mode: api::NamespaceMode) {
    let started = Instant::now();
    let node = CriNode::start();
    let cri = &node.cri;
    let diag = || node.log_tail(60);

    let name = match pid_mode {
        api::NamespaceMode::Node => "host-pid",
        _ => "shared-pid",
    };
    let mut pod_cfg = node.pod_config(name);
    if let Some(ns) = pod_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = pid_mode as i32;
    }
    let pod = cri
        .run_pod_sandbox(&pod_cfg, cri::HANDLER)
        .unwrap_or_else(|e| panic!("RunPodSandbox({pid_mode:?}): {e}\n{}", diag()));
    if let Some(netns) = cri
        .pod_sandbox_status(&pod, true)
        .ok()
        .and_then(|st| cri::netns_path(&st))
    {
        node.track_netns(&netns);
    }

    let secs = unique_sleep(1000);
    let leftover = ["sleep", secs.as_str()];
    let script = format!("sleep {secs} & sleep 2; exit 3");
    let mut cfg = container("leaver", &["sh", "-c", &script], 0);
    if let Some(ns) = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = pid_mode as i32;
    }
    let id = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .unwrap_or_else(|e| panic!("CreateContainer({pid_mode:?}): {e}\n{}", diag()));
    cri.start_container(&id)
        .unwrap_or_else(|e| panic!("StartContainer({pid_mode:?}): {e}\n{}", diag()));

    // The background sleep runs while the shell waits (else the test would prove nothing).
    let seen = common::wait_until(WAIT, Duration::from_millis(20), || {
        let p = common::processes_with_argv(&leftover);
        (!p.is_empty()).then_some(p)
    });
    assert!(
        seen.is_some(),
        "{pid_mode:?}: `sleep {secs}` never ran\n{}",
        diag()
    );

    let (done, st) = cri.wait_container(&id, WAIT, |s| is_state(s, ContainerState::Exited));
    assert!(
        done,
        "{pid_mode:?}: container did not reach EXITED within {WAIT:?}: {st:?}; \
         `sleep {secs}`: {:?}\n{}",
        common::processes_with_argv(&leftover),
        diag()
    );
    assert_eq!(
        st.as_ref().map(|s| s.exit_code),
        Some(3),
        "{pid_mode:?}: {st:?}"
    );
    // Killed before the exit was reported; allow the kernel a moment to finish the SIGKILL.
    let gone = common::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        common::processes_with_argv(&leftover)
            .is_empty()
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "{pid_mode:?}: the init's background `sleep {secs}` outlived the container: {:?}",
        common::processes_with_argv(&leftover)
    );

    let t = Instant::now();
    cri.stop_pod_sandbox(&pod).unwrap_or_else(|e| {
        panic!(
            "StopPodSandbox({pid_mode:?}) after {:?}: {e}\n{}",
            t.elapsed(),
            diag()
        )
    });
    assert!(
        t.elapsed() < WAIT,
        "{pid_mode:?}: StopPodSandbox took {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    cri.remove_pod_sandbox(&pod).unwrap_or_else(|e| {
        panic!(
            "RemovePodSandbox({pid_mode:?}) after {:?}: {e}\n{}",
            t.elapsed(),
            diag()
        )
    });
    assert!(
        t.elapsed() < WAIT,
        "{pid_mode:?}: RemovePodSandbox took {:?}",
        t.elapsed()
    );
    let err = cri
        .pod_sandbox_status(&pod, false)
        .expect_err("sandbox still known after RemovePodSandbox");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // Nothing of the pod is left: no shim, no mount, no process in its cgroups.
    let no_shim = common::wait_until(WAIT, Duration::from_millis(50), || {
        pod_shims(&node).is_empty().then_some(())
    });
    assert!(
        no_shim.is_some(),
        "{pid_mode:?}: shim still running after the pod was removed: {:#?}\n{}",
        pod_shims(&node),
        diag()
    );
    let m = cri::mounts_mentioning(&[&pod, &id]);
    assert!(
        m.is_empty(),
        "{pid_mode:?}: mounts of the pod remain: {m:?}"
    );
    assert!(
        common::processes_with_argv(&leftover).is_empty(),
        "{pid_mode:?}: `sleep {secs}` is back?"
    );
    common::notice(&format!("{test}: {:?}", started.elapsed()));
}

#[test]
fn share_process_namespace_pod_kills_what_the_init_leaves_and_stops() {
    const TEST: &str = "share_process_namespace_pod_kills_what_the_init_leaves_and_stops";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    pod_without_own_pid_namespace(TEST, api::NamespaceMode::Pod);
}

#[test]
fn host_pid_pod_kills_what_the_init_leaves_and_stops() {
    const TEST: &str = "host_pid_pod_kills_what_the_init_leaves_and_stops";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    pod_without_own_pid_namespace(TEST, api::NamespaceMode::Node);
}

/// StopPodSandbox while the pause container's `runc kill` is slow to answer: the pause dies at
/// the signal, its TaskExit makes containerd delete the task and shut the shim down while the
/// Kill is still running, and containerd closes its connection on Shutdown's answer. The Kill
/// must have been answered first ("failed to kill pod sandbox container: ttrpc: closed", 2 in
/// ~600 pods of the pod benchmark, when `runc kill` happened to lag). `runc` on containerd's
/// PATH is a wrapper that answers `kill` 1 s late.
#[test]
fn stop_pod_sandbox_with_a_slow_runtime_kill_succeeds() {
    const TEST: &str = "stop_pod_sandbox_with_a_slow_runtime_kill_succeeds";
    if !common::e2e_enabled_with(TEST, &cri::prerequisites()) {
        return;
    }
    if common::runtime_binary_override().is_some() {
        common::notice(&format!(
            "SKIP {TEST}: wraps runc (runtime binary overridden)"
        ));
        return;
    }
    let wrapper_dir = std::env::temp_dir().join(common::unique_id("tender-slow-kill"));
    fs::create_dir_all(&wrapper_dir).expect("wrapper dir");
    let runc = common::runtime_binary_path();
    let wrapper = wrapper_dir.join("runc");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do\n\
             \x20 if [ \"$a\" = kill ]; then {runc} \"$@\"; rc=$?; sleep 1; exit $rc; fi\n\
             done\n\
             exec {runc} \"$@\"\n",
            runc = runc.display()
        ),
    )
    .expect("write wrapper");
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod wrapper");
    let mut opts = cri::NodeOptions::for_suite();
    opts.runtime_dirs = vec![wrapper_dir.clone()];
    let node = CriNode::start_custom(
        opts,
        |l| cri::config::user_config(cri::config::Start::for_suite(&l.build), &l.build),
        |_, text| text,
    );
    let cri = &node.cri;
    let diag = || node.log_tail(60);
    for round in 0..3 {
        let pod = cri
            .run_pod_sandbox(
                &node.pod_config(&format!("slow-kill-{round}")),
                cri::HANDLER,
            )
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", diag()));
        let started = Instant::now();
        cri.stop_pod_sandbox(&pod)
            .unwrap_or_else(|e| panic!("StopPodSandbox (round {round}): {e}\n{}", diag()));
        eprintln!("round {round}: StopPodSandbox took {:?}", started.elapsed());
        cri.remove_pod_sandbox(&pod)
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", diag()));
    }
    drop(node);
    let _ = fs::remove_dir_all(&wrapper_dir);
}
