//! The ttrpc server: one Task implementation under both service names containerd may dial.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;

use containerd_shim_protos::shim_async::create_task;
use ttrpc::asynchronous::{Server, Service};

use crate::service::Shim;

pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// The service map with the Task API registered as v2 and v3.
pub fn services(shim: Arc<Shim>) -> HashMap<String, Service> {
    // The generated code registers the v3 name; the v2 API is the same messages and methods.
    let mut map = create_task(shim.clone());
    let mut v2 = create_task(shim);
    if let Some(svc) = v2.remove(TASK_V3) {
        map.insert(TASK_V2.to_string(), svc);
    }
    map
}

pub fn build(shim: Arc<Shim>, listener_fd: RawFd) -> Result<Server, String> {
    // SAFETY: the start action handed us this listening socket as fd 3 and nothing else in
    // this process uses it.
    let server = unsafe { Server::new().add_unix_listener(listener_fd) }
        .map_err(|e| format!("listener fd {listener_fd}: {e}"))?;
    Ok(server.register_service(services(shim)))
}
