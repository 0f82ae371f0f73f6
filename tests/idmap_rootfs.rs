//! A container in a user namespace whose rootfs comes the way containerd 2.x sends it: an
//! overlay with `uidmap=`/`gidmap=` options. Without containerd: the serving daemon is run as
//! the `start` action runs it (listener on fd 3, TTRPC_ADDRESS for events) and driven over
//! ttrpc; the container is a real runc one (spec with a user namespace and the same mappings).
//!
//! The image layer's files are owned by the container's ids on disk (0, 5, ...), as unpacked;
//! through the idmapped layer the node sees them shifted (0 → 100000) and the container, whose
//! user namespace maps 0 → 100000, sees them as its own again: `stat -c %u` says 0.
//!
//! Needs root, runc and /bin/busybox; skips otherwise (fails instead when CI=true).

use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::shim_async::{create_events, Events, TaskClient};
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-tender-v2");
const HOST_BASE: u32 = 100000;

fn enabled(test: &str) -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root");
    }
    if tender::runtime::resolve_binary("runc").is_err() {
        missing.push("runc");
    }
    if !Path::new("/bin/busybox").is_file() {
        missing.push("/bin/busybox");
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("SKIP {test}: needs {}", missing.join(", "));
    assert!(
        !matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")),
        "{msg} — failing because CI=true"
    );
    eprintln!("{msg}");
    false
}

fn mount_points_under(p: &Path) -> Vec<String> {
    let needle = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m.starts_with(&needle))
        .collect()
}

/// The test's directory, runc state and cgroup; all removed on drop.
struct Sandbox {
    dir: PathBuf,
    namespace: String,
    id: String,
}

impl Sandbox {
    fn runc_root(&self) -> PathBuf {
        Path::new(tender::options::DEFAULT_ROOT).join(&self.namespace)
    }
    fn cgroup_parent(&self) -> String {
        format!("/tender-{}", self.namespace)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.runc_root())
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        let mut mps = mount_points_under(&self.dir);
        mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mps {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = std::fs::remove_dir_all(self.runc_root());
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            let rel = self.cgroup_parent();
            for e in rd.flatten() {
                let root = e.path().join(rel.trim_start_matches('/'));
                if let Ok(children) = std::fs::read_dir(&root) {
                    for c in children.flatten() {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
                let _ = std::fs::remove_dir(&root);
            }
        }
        if mount_points_under(&self.dir).is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Accepts the shim's events (it dials TTRPC_ADDRESS like containerd's) and drops them.
struct Sink;

#[async_trait]
impl Events for Sink {
    async fn forward(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ForwardRequest,
    ) -> ttrpc::Result<api::Empty> {
        Ok(api::Empty::new())
    }
}

fn start_sink(path: &Path) {
    let addr = format!("unix://{}", path.display());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("sink runtime");
        rt.block_on(async move {
            let mut server = ttrpc::r#async::Server::new()
                .bind(&addr)
                .expect("bind sink")
                .register_service(create_events(Arc::new(Sink)));
            server.start().await.expect("start sink");
            let _ = tx.send(());
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("event sink did not start");
}

struct ShimProc {
    child: Child,
    socket: PathBuf,
    stderr: PathBuf,
}

impl ShimProc {
    fn spawn(sb: &Sandbox, cwd: &Path, events: &Path) -> ShimProc {
        let socket = sb.dir.join("shim.sock");
        let stderr = sb.dir.join("shim.stderr");
        let listener = UnixListener::bind(&socket).expect("bind shim socket");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let mut cmd = Command::new(SHIM);
        cmd.args(["-namespace", &sb.namespace, "-id", &sb.id, "-address"])
            .arg(sb.dir.join("containerd.sock"))
            .arg("-socket")
            .arg(&socket)
            .arg("-debug")
            .current_dir(cwd)
            .env("TTRPC_ADDRESS", events)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn shim daemon");
        drop(listener);
        ShimProc {
            child,
            socket,
            stderr,
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for ShimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(20).as_nanos() as i64)
}

fn owned_file(p: &Path, uid: u32, gid: u32) {
    std::fs::write(p, b"x").expect("write");
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
}

#[tokio::test(flavor = "current_thread")]
async fn userns_container_sees_its_idmapped_overlay_rootfs_as_its_own() {
    let test = "userns_container_sees_its_idmapped_overlay_rootfs_as_its_own";
    if !enabled(test) {
        return;
    }
    let pid = std::process::id();
    let sb = Sandbox {
        dir: PathBuf::from(format!("/tmp/tender-idmap-{pid}")),
        namespace: format!("idmap-{pid}"),
        id: "idmapped".into(),
    };
    let _ = std::fs::remove_dir_all(&sb.dir);
    // The image layer: busybox and files owned by container ids, as unpacked on disk.
    let lower = sb.dir.join("layer");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(lower.join(d)).expect("layer dirs");
    }
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "stat", "cat"] {
        std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).expect("symlink");
    }
    owned_file(&lower.join("etc/owned-by-root"), 0, 0);
    owned_file(&lower.join("etc/owned-by-5"), 5, 7);
    // The container's writable layer belongs to its root on the node (containerd's
    // snapshotter does the same for a user namespace).
    let (upper, work) = (sb.dir.join("upper"), sb.dir.join("work"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).expect("upper/work");
    }
    std::os::unix::fs::chown(&upper, Some(HOST_BASE), Some(HOST_BASE)).expect("chown upper");

    let bundle = sb.dir.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).expect("bundle");
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .expect("runc spec");
    assert!(out.status.success(), "runc spec: {out:?}");
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read spec")).expect("spec");
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "stat -c '%u %g' /etc/owned-by-root /etc/owned-by-5 / > /tmp/result; \
         cat /proc/self/uid_map >> /tmp/result"
    ]);
    spec["root"]["readonly"] = false.into();
    spec["linux"]["cgroupsPath"] = format!("{}/{}", sb.cgroup_parent(), sb.id).into();
    let map = serde_json::json!([{"containerID": 0, "hostID": HOST_BASE, "size": 65536}]);
    spec["linux"]["uidMappings"] = map.clone();
    spec["linux"]["gidMappings"] = map;
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .push(serde_json::json!({"type": "user"}));
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write");

    let events = sb.dir.join("events.sock");
    start_sink(&events);
    let shim = ShimProc::spawn(&sb, &bundle, &events);
    let client = TaskClient::new(
        ttrpc::r#async::Client::connect(&format!("unix://{}", shim.socket.display()))
            .await
            .expect("connect to the shim"),
    );

    let rootfs_mount = |options: Vec<String>| {
        let mut m = api::Mount::new();
        m.type_ = "overlay".into();
        m.source = "overlay".into();
        m.options = options;
        m
    };
    let layer_opts = vec![
        format!("lowerdir={}", lower.display()),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ];
    let mut req = api::CreateTaskRequest::new();
    req.id = sb.id.clone();
    req.bundle = bundle.display().to_string();

    // A malformed mapping is refused with a clear error, nothing mounted.
    let mut bad = layer_opts.clone();
    bad.insert(0, "uidmap=0:100000".into());
    bad.insert(1, "gidmap=0:100000:65536".into());
    req.rootfs = vec![rootfs_mount(bad)];
    let e = client.create(ctx(), &req).await.expect_err("bad uidmap");
    assert!(
        format!("{e:?}").contains("container-id:host-id:length"),
        "{e:?}"
    );
    assert_eq!(mount_points_under(&sb.dir), Vec::<String>::new());

    // containerd 2.1.9's order: uidmap, gidmap, then the layers.
    let mut good = vec![
        format!("uidmap=0:{HOST_BASE}:65536"),
        format!("gidmap=0:{HOST_BASE}:65536"),
    ];
    good.extend(layer_opts);
    req.rootfs = vec![rootfs_mount(good)];
    client
        .create(ctx(), &req)
        .await
        .unwrap_or_else(|e| panic!("create: {e}\n{}", shim.stderr_text()));
    assert!(
        !bundle.join("rootfs.idmapped").exists(),
        "scratch mounts left after Create"
    );
    let mut start = api::StartRequest::new();
    start.id = sb.id.clone();
    client
        .start(ctx(), &start)
        .await
        .unwrap_or_else(|e| panic!("start: {e}\n{}", shim.stderr_text()));
    let mut wait = api::WaitRequest::new();
    wait.id = sb.id.clone();
    let waited = client.wait(ctx(), &wait).await.expect("wait");
    assert_eq!(waited.exit_status, 0, "{}", shim.stderr_text());
    let result = std::fs::read_to_string(upper.join("tmp/result")).expect("result");
    println!("inside the container (stat -c '%u %g', uid_map):\n{result}");
    let lines: Vec<&str> = result.lines().collect();
    assert_eq!(lines.first().copied(), Some("0 0"), "{result}");
    assert_eq!(lines.get(1).copied(), Some("5 7"), "{result}");
    assert_eq!(lines.get(2).copied(), Some("0 0"), "rootfs root: {result}");
    assert!(
        lines
            .get(3)
            .is_some_and(|l| l.split_whitespace().eq(["0", "100000", "65536"])),
        "the container runs in its user namespace: {result}"
    );

    let mut del = api::DeleteRequest::new();
    del.id = sb.id.clone();
    client.delete(ctx(), &del).await.expect("delete");
    assert_eq!(
        mount_points_under(&sb.dir),
        Vec::<String>::new(),
        "mounts left after Delete"
    );
    assert!(!bundle.join("rootfs.idmapped").exists());
    // The layer itself is untouched.
    assert!(lower.join("etc/owned-by-root").exists());
    let mut sd = api::ShutdownRequest::new();
    sd.id = sb.id.clone();
    let _ = client.shutdown(ctx(), &sd).await;
    let err = shim.stderr_text();
    assert!(!err.contains("panicked"), "{err}");
}
