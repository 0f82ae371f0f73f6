//! Task API calls about the sandbox id itself. The sandbox has no container (no pause), so the
//! Task service does not know its id; containerd still asks `Connect` (the shim's and the
//! "task's" pid, e.g. when it reloads shims after a restart), and tools may ask `State`/`Pids`.
//! Those three are answered here, from the sandbox, for the sandbox id only; everything else
//! goes to the Task service untouched.

use std::sync::Arc;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use ttrpc::asynchronous::{MethodHandler, TtrpcContext};
use ttrpc::proto::ResponseInit;
use ttrpc::{Code, Request, Response};

use super::state::Phase;
use super::SandboxService;

/// Task methods that get a sandbox answer for the sandbox id.
pub const METHODS: [&str; 3] = ["Connect", "State", "Pids"];

pub struct Bridge {
    pub inner: Box<dyn MethodHandler + Send + Sync>,
    pub sandboxes: Arc<SandboxService>,
}

fn reply(msg: &impl Message) -> ttrpc::Result<Response> {
    let payload = msg
        .write_to_bytes()
        .map_err(|e| ttrpc::Error::Others(format!("encode: {e}")))?;
    let mut res = Response::init_status(ttrpc::get_status(Code::OK, String::new()));
    res.set_payload(payload);
    Ok(res)
}

impl Bridge {
    fn answer(&self, req: &Request) -> Option<ttrpc::Result<Response>> {
        let pod_of = |id: &str| self.sandboxes.pod(id);
        match req.method.as_str() {
            "Connect" => {
                let r = api::ConnectRequest::parse_from_bytes(&req.payload).ok()?;
                let pod = pod_of(&r.id)?;
                let mut resp = api::ConnectResponse::new();
                resp.shim_pid = std::process::id();
                resp.task_pid = pod.holder_pid().unwrap_or(0) as u32;
                resp.version = env!("CARGO_PKG_VERSION").to_string();
                Some(reply(&resp))
            }
            "State" => {
                let r = api::StateRequest::parse_from_bytes(&req.payload).ok()?;
                if !r.exec_id.is_empty() {
                    return None;
                }
                let pod = pod_of(&r.id)?;
                let mut resp = api::StateResponse::new();
                resp.id = r.id.clone();
                use containerd_shim_protos::api::Status;
                match pod.machine.phase() {
                    Phase::Ready { pid } => {
                        resp.pid = pid as u32;
                        resp.status = Status::RUNNING.into();
                    }
                    Phase::Stopped { pid, exit } => {
                        resp.pid = pid as u32;
                        resp.status = Status::STOPPED.into();
                        resp.exit_status = exit.status;
                        resp.exited_at = Some(crate::events::timestamp(exit.at)).into();
                    }
                    Phase::Created | Phase::Starting => resp.status = Status::CREATED.into(),
                }
                Some(reply(&resp))
            }
            "Pids" => {
                let r = api::PidsRequest::parse_from_bytes(&req.payload).ok()?;
                let pod = pod_of(&r.id)?;
                let mut resp = api::PidsResponse::new();
                if let Some(pid) = pod.holder_pid() {
                    let mut info = api::ProcessInfo::new();
                    info.pid = pid as u32;
                    resp.processes.push(info);
                }
                Some(reply(&resp))
            }
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl MethodHandler for Bridge {
    async fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
        match self.answer(&req) {
            Some(r) => r,
            None => self.inner.handler(ctx, req).await,
        }
    }
}
