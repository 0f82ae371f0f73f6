//! The ttrpc server: one Task implementation under both service names containerd may dial,
//! and the Sandbox service (containerd 2.x `sandboxer = "shim"`) beside it.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;

use containerd_shim_protos::sandbox_async::create_sandbox;
use containerd_shim_protos::shim_async::create_task;
use ttrpc::asynchronous::{MethodHandler, Server, Service, TtrpcContext};
use ttrpc::{Request, Response};

use crate::sandbox::task_bridge::{self, Bridge};
use crate::sandbox::SandboxService;
use crate::service::Shim;

pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// The service map: the Task API registered as v2 and v3 (its Connect/State/Pids also answer
/// for the sandbox id, see `sandbox::task_bridge`), and the Sandbox API.
pub fn services(shim: Arc<Shim>, sandboxes: Arc<SandboxService>) -> HashMap<String, Service> {
    // The generated code registers the v3 name; the v2 API is the same messages and methods.
    let mut map = create_task(shim.clone());
    let mut v2 = create_task(shim);
    if let Some(svc) = v2.remove(TASK_V3) {
        map.insert(TASK_V2.to_string(), svc);
    }
    for svc in map.values_mut() {
        for name in task_bridge::METHODS {
            if let Some(inner) = svc.methods.remove(name) {
                let bridge = Bridge {
                    inner,
                    sandboxes: sandboxes.clone(),
                };
                svc.methods.insert(name.to_string(), Box::new(bridge));
            }
        }
    }
    map.extend(create_sandbox(sandboxes));
    for svc in map.values_mut() {
        let methods = std::mem::take(&mut svc.methods);
        svc.methods = methods
            .into_iter()
            .map(|(name, handler)| {
                let handler: Box<dyn MethodHandler + Send + Sync> =
                    if name == "Wait" || name == "WaitSandbox" {
                        handler // only waits: safe to drop when the caller gives up
                    } else {
                        Box::new(RunToCompletion(Arc::from(handler)))
                    };
                (name, handler)
            })
            .collect();
    }
    map
}

/// Runs a request to its end even when the caller stops waiting.
///
/// ttrpc drops the handler's future when the request's deadline (`timeout_nano`, from the
/// caller's context) passes. Dropped halfway, a Create would leave its ID reserved forever, a
/// mounted rootfs and a runtime container nobody tracks; a Start would leave the process
/// "starting" for good (neither startable nor deletable). So every handler but Wait runs in its
/// own task: the caller still gets DEADLINE_EXCEEDED, and the shim's state stays whole — the
/// container exists or it does not, and the follow-up Delete works. A handler that panics
/// becomes an INTERNAL error instead of a request that is never answered.
struct RunToCompletion(Arc<dyn MethodHandler + Send + Sync>);

#[async_trait::async_trait]
impl MethodHandler for RunToCompletion {
    async fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        let inner = self.0.clone();
        let started = std::time::Instant::now();
        let method = log::log_enabled!(log::Level::Debug).then(|| req.method.clone());
        let joined = tokio::spawn(async move { inner.handler(ctx, req).await }).await;
        if let Some(method) = method {
            log::debug!("{method} took {:?}", started.elapsed());
        }
        match joined {
            Ok(result) => result,
            Err(e) => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INTERNAL,
                format!("request handler failed: {e}"),
            ))),
        }
    }
}

pub fn build(
    shim: Arc<Shim>,
    sandboxes: Arc<SandboxService>,
    listener_fd: RawFd,
) -> Result<Server, String> {
    // SAFETY: the start action handed us this listening socket as fd 3 and nothing else in
    // this process uses it.
    let server = unsafe { Server::new().add_unix_listener(listener_fd) }
        .map_err(|e| format!("listener fd {listener_fd}: {e}"))?;
    Ok(server.register_service(services(shim, sandboxes)))
}
