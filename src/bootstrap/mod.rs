//! The shim's life outside the Task API: the `start` action (pick or reuse the pod's socket,
//! fork the serving daemon, tell containerd where it is), the `delete` action (clean up after
//! a dead shim), and `serve` (the daemon itself).

pub mod flags;
pub mod info;
pub mod protocol;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use sha2::{Digest, Sha256};

use crate::options::Options;
use flags::Flags;

/// Where containerd's shims put their sockets.
pub const SOCKET_DIR: &str = "/run/containerd/s";
/// The listening socket is handed to the daemon as this fd.
const LISTENER_FD: RawFd = 3;
/// Annotations that group containers into one shim (per pod), in order of precedence.
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Go's `filepath.Join` for the absolute, clean inputs containerd gives us.
fn path_join(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    out
}

/// The socket of a shim group: `<dir>/<sha256(address/namespace/group)>`, as containerd's own
/// shims compute it (so tools that look for shim sockets find ours).
pub fn socket_path(dir: &Path, containerd_address: &str, namespace: &str, group: &str) -> PathBuf {
    let digest = Sha256::digest(path_join(&[containerd_address, namespace, group]).as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(hex)
}

/// The group a container belongs to: its pod (or an explicit group), else itself.
pub fn group_id(bundle: &Path, id: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let spec: Option<Spec> = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(spec) = spec {
        for key in GROUP_ANNOTATIONS {
            if let Some(g) = spec.annotations.get(key) {
                if crate::service::validate_id("group", g).is_ok() {
                    return g.clone();
                }
            }
        }
    }
    id.to_string()
}

enum Bound {
    New(UnixListener),
    /// A live shim already serves this group.
    Existing,
}

fn bind(path: &Path) -> Result<Bound, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    for _ in 0..2 {
        match UnixListener::bind(path) {
            Ok(l) => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| format!("chmod {}: {e}", path.display()))?;
                return Ok(Bound::New(l));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                // Bound and listening means a shim (or a concurrent start) owns it: reuse.
                if UnixStream::connect(path).is_ok() {
                    return Ok(Bound::Existing);
                }
                let _ = std::fs::remove_file(path);
            }
            Err(e) => return Err(format!("listen on {}: {e}", path.display())),
        }
    }
    Err(format!("socket {} stays in use", path.display()))
}

fn read_stdin() -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = std::io::stdin()
        .take(protocol::STDIN_LIMIT)
        .read_to_end(&mut buf);
    buf
}

/// `containerd-shim-tender-v2 … start`: prints the address containerd should dial.
pub fn start(flags: &Flags) -> Result<(), String> {
    crate::service::validate_id("id", &flags.id).map_err(|e| e.to_string())?;
    if flags.namespace.is_empty() {
        return Err("start: -namespace is required".into());
    }
    let input = protocol::detect(&read_stdin(), &flags.id, &flags.namespace)?;
    let options = Options::from_any(input.options.as_ref())?;
    let bundle = std::env::current_dir().map_err(|e| format!("cwd: {e}"))?;
    let group = group_id(&bundle, &flags.id);

    let (dir, containerd_address) = match &input.protocol {
        protocol::StartProtocol::Bootstrap(p) => (
            p.socket_dir
                .clone()
                .filter(|d| d.starts_with('/'))
                .unwrap_or_else(|| SOCKET_DIR.into()),
            if p.containerd_grpc_address.is_empty() {
                flags.address.clone()
            } else {
                p.containerd_grpc_address.clone()
            },
        ),
        protocol::StartProtocol::Legacy => (SOCKET_DIR.to_string(), flags.address.clone()),
    };
    let path = socket_path(
        Path::new(&dir),
        &containerd_address,
        &flags.namespace,
        &group,
    );
    let address = format!("unix://{}", path.display());

    if let Bound::New(listener) = bind(&path)? {
        let ttrpc_address = match &input.protocol {
            protocol::StartProtocol::Bootstrap(p) if !p.containerd_ttrpc_address.is_empty() => {
                Some(p.containerd_ttrpc_address.clone())
            }
            _ => None,
        };
        let daemon = Daemon {
            namespace: flags.namespace.clone(),
            debug: flags.debug,
            socket: path.clone(),
            ttrpc_address: ttrpc_address.unwrap_or_else(|| default_ttrpc_address(flags)),
            options: options.clone(),
        };
        if let Err(e) = fork_daemon(daemon, listener, &options) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    }
    // containerd 1.6 re-attaches to shims after a restart through this file.
    let _ = std::fs::write(bundle.join("address"), &address);
    let out = protocol::reply(&input.protocol, &address);
    let mut stdout = std::io::stdout();
    stdout
        .write_all(&out)
        .and_then(|_| stdout.flush())
        .map_err(|e| format!("write address: {e}"))
}

/// Starts the serving daemon as a forked child of the start action, without an exec: one
/// program load fewer on every pod's critical path, and the daemon is serving as soon as the
/// start action has answered. Safe because the start action is single-threaded (no runtime and
/// no helper threads exist yet), so the child may run any code after `fork`.
fn fork_daemon(daemon: Daemon, listener: UnixListener, options: &Options) -> Result<(), String> {
    // Blanked before the fork, so the child's copy is clean from its first instant: blanking it
    // in the child raced the start action's reply (a `ps` right after could still see `start`).
    // The start action's own flags were parsed already and it exits right after replying.
    hide_start_action();
    // SAFETY: see above: one thread, no locks held, so the child's copy of the process is whole.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = match become_daemon(&listener) {
                Ok(()) => match run_daemon(daemon) {
                    Ok(()) => 0,
                    Err(e) => {
                        log::error!("shim daemon: {e}");
                        1
                    }
                },
                Err(_) => 1,
            };
            // Never return into the start action's code (it would answer containerd twice).
            std::process::exit(code);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(listener);
            let pid = child.as_raw() as u32;
            adjust_oom_score(pid);
            if !options.shim_cgroup.is_empty() {
                if let Err(e) = crate::cgroups::move_to(&options.shim_cgroup, pid) {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    return Err(format!("ShimCgroup {:?}: {e}", options.shim_cgroup));
                }
            }
            Ok(())
        }
        Err(e) => Err(format!("fork shim daemon: {e}")),
    }
}

/// In the forked child: its own session, stdio on /dev/null (containerd reads the start
/// action's stdout until end of file, so the daemon must not keep it), the listener on
/// [`LISTENER_FD`] (close-on-exec: runtime CLIs and containers must not inherit it), and the
/// `start` word already gone from its command line (see [`fork_daemon`]).
fn become_daemon(listener: &UnixListener) -> std::io::Result<()> {
    nix::unistd::setsid()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..=2 {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    drop(null);
    let fd = listener.as_raw_fd();
    if fd != LISTENER_FD {
        nix::unistd::dup2(fd, LISTENER_FD)?;
        nix::fcntl::fcntl(
            LISTENER_FD,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
    }
    Ok(())
}

/// Blanks a trailing `start` in this process's argument area, so `ps` shows a serving shim
/// (`… -id X`, like a Go shim's daemon) and not a start action that never ended.
fn hide_start_action() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name's closing parenthesis start at field 3 (state);
    // arg_start and arg_end are fields 48 and 49 (proc(5)).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let addr = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    let (Some(start), Some(end)) = (addr(48), addr(49)) else {
        return;
    };
    const WORD: &[u8] = b"\0start\0";
    if end < start + WORD.len() {
        return;
    }
    let tail = (end - WORD.len()) as *mut u8;
    // SAFETY: [arg_start, arg_end) is this process's own argument area as the kernel reports
    // it: mapped and writable (it is on the initial stack), and no Rust reference points into
    // it (std copies argv when asked for it; the flags were parsed before the fork).
    unsafe {
        if std::slice::from_raw_parts(tail, WORD.len()) == WORD {
            std::ptr::write_bytes(tail, 0, WORD.len());
        }
    }
}

/// The daemon gets containerd's oom_score_adj + 1: under memory pressure the kernel picks
/// the shim before containerd, but never before the containers (which CRI scores higher).
fn adjust_oom_score(pid: u32) {
    let parent = std::os::unix::process::parent_id();
    let score = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let target = (score + 1).min(1000);
    if let Err(e) = std::fs::write(format!("/proc/{pid}/oom_score_adj"), target.to_string()) {
        // Lowering needs CAP_SYS_RESOURCE; raising never fails. Not fatal either way.
        log::warn!("set oom_score_adj of shim to {target}: {e}");
    }
}

/// `containerd-shim-tender-v2 … delete`: containerd's cleanup after a shim died. Prints a
/// `DeleteResponse` (exit status 137, now) on stdout.
pub fn delete(flags: &Flags) -> Result<(), String> {
    crate::service::validate_id("id", &flags.id).map_err(|e| e.to_string())?;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| format!("cwd: {e}"))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let options: Options = std::fs::read(bundle.join(crate::service::BUNDLE_OPTIONS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    // containerd runs this after *every* shim exit, also after a clean Delete, and waits for
    // it: when the runtime keeps no state for the container any more (runc, crun and youki all
    // keep `<root>/<id>`), there is nothing to force-delete and no runtime call to wait for.
    let state_dir = options.runtime_root(&flags.namespace).join(&flags.id);
    if state_dir.exists() {
        force_delete(&options, &flags.namespace, &flags.id, &bundle)?;
    }
    if let Err(e) = crate::mount::unmount_all(&bundle.join("rootfs")) {
        eprintln!("tender: {e}");
    }
    remove_dead_socket(&bundle);
    crate::sandbox::cleanup_dead(&bundle);
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let mut resp = containerd_shim_protos::api::DeleteResponse::new();
    resp.pid = pid;
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = Some(crate::events::timestamp(std::time::SystemTime::now())).into();
    let bytes = resp.write_to_bytes().map_err(|e| format!("encode: {e}"))?;
    let mut stdout = std::io::stdout();
    stdout
        .write_all(&bytes)
        .and_then(|_| stdout.flush())
        .map_err(|e| format!("write: {e}"))
}

/// `<runtime> delete --force <id>`; failures are warnings (containerd prints our stderr).
fn force_delete(options: &Options, namespace: &str, id: &str, bundle: &Path) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let reaper = crate::reaper::Reaper::new();
        tokio::spawn(reaper.clone().run());
        match crate::runtime::Runtime::new(
            options.binary(),
            options.runtime_root(namespace),
            options.systemd_cgroup,
            bundle.to_path_buf(),
            reaper,
        ) {
            Ok(runtime) => {
                if let Err(e) = runtime.delete(id, true).await {
                    if !e.not_found {
                        eprintln!("tender: delete {id}: {e}");
                    }
                }
            }
            Err(e) => eprintln!("tender: {e}"),
        }
    });
    Ok(())
}

/// A shim killed with SIGKILL cannot remove its socket; its `delete` action does. The path
/// comes from the bundle's `address` file (written by `start`); only a socket nobody listens
/// on any more is removed, so a live shim of the same group keeps its socket.
fn remove_dead_socket(bundle: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let address = address.trim();
    let path = Path::new(address.strip_prefix("unix://").unwrap_or(address));
    if !path.is_absolute() {
        return; // abstract (`@…`) or malformed: nothing on disk to clean up
    }
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    match UnixStream::connect(path) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            if let Err(e) = std::fs::remove_file(path) {
                eprintln!("tender: remove dead shim socket {}: {e}", path.display());
            }
        }
        _ => {}
    }
}

fn default_ttrpc_address(flags: &Flags) -> String {
    std::env::var("TTRPC_ADDRESS").unwrap_or_else(|_| format!("{}.ttrpc", flags.address))
}

/// What the serving daemon needs, however it was started.
struct Daemon {
    namespace: String,
    debug: bool,
    /// Removed when the daemon exits.
    socket: PathBuf,
    /// containerd's ttrpc address, where events go.
    ttrpc_address: String,
    /// Options given to the start action (Create's options take precedence).
    options: Options,
}

/// The daemon started by hand (tests, debugging): the listening socket must be on fd 3 and
/// `-socket` names it. The start action forks the daemon instead (see [`fork_daemon`]).
pub fn serve(flags: &Flags) -> Result<(), String> {
    run_daemon(Daemon {
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        socket: PathBuf::from(&flags.socket),
        ttrpc_address: default_ttrpc_address(flags),
        options: Options::default(),
    })
}

/// The daemon: serves the Task API on the socket at [`LISTENER_FD`] until the last container
/// is gone.
fn run_daemon(d: Daemon) -> Result<(), String> {
    crate::logger::init(Path::new("log"), d.debug);
    crate::reaper::become_subreaper().map_err(|e| format!("subreaper: {e}"))?;
    let socket = d.socket;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let result = rt.block_on(async {
        let reaper = crate::reaper::Reaper::new();
        tokio::spawn({
            let reaper = reaper.clone();
            async move {
                if let Err(e) = reaper.run().await {
                    log::error!("reaper stopped: {e}");
                }
            }
        });
        let publisher = crate::events::Publisher::start(d.ttrpc_address, d.namespace.clone());
        let exit = crate::server::Exit::new();
        let namespace = d.namespace.clone();
        let shim = Arc::new(crate::service::Shim::new(
            d.namespace,
            reaper.clone(),
            publisher.clone(),
            d.options,
            exit.clone(),
        ));
        let sandboxes = Arc::new(crate::sandbox::SandboxService::new(
            namespace,
            reaper.clone(),
            exit.clone(),
        ));
        // A shim-sandboxed pod's shim stays while the sandbox does (ShutdownSandbox ends it).
        exit.set_idle_check({
            let (shim, sandboxes) = (Arc::downgrade(&shim), Arc::downgrade(&sandboxes));
            move || {
                shim.upgrade().is_some_and(|s| s.is_empty())
                    && sandboxes.upgrade().is_some_and(|s| s.is_idle())
            }
        });
        let mut server = crate::server::build(shim, sandboxes, exit.clone(), LISTENER_FD)?;
        server
            .start()
            .await
            .map_err(|e| format!("ttrpc server: {e}"))?;
        log::info!("serving on {}", socket.display());
        // Decided by Shutdown or ShutdownSandbox once the shim is idle and every other request
        // is answered; later requests are refused (see `server::Exit`).
        exit.exiting().await;
        // Let the last events (TaskExit, TaskDelete) reach containerd before going away.
        if !publisher.flush(Duration::from_secs(5)).await {
            log::warn!("exiting with undelivered events");
        }
        let _ = std::fs::remove_file(&socket);
        // Graceful: waits until every connection's handlers have queued their replies (the
        // Shutdown's among them) and its writer has written them, so no answer is lost when the
        // runtime is dropped below. Bounded: a peer that stops reading cannot keep us here.
        let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
        Ok::<(), String>(())
    });
    let _ = std::fs::remove_file(&socket);
    if let Some(copies) = crate::sealed_runtime::shared() {
        copies.withdraw();
    }
    result
}
