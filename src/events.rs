//! Events to containerd, in order, never silently dropped.
//!
//! One queue, one delivery task: events leave in exactly the order they were published, so the
//! ordering invariants enforced by the process state machines (TaskStart before TaskExit, exec
//! exits before the init exit) hold on the wire. While containerd is away (restarting) delivery
//! keeps retrying with a capped backoff; the queue simply grows until it is back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
    TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::shim_async::EventsClient;
use tokio::sync::{mpsc, Notify};

/// containerd answered but refused the event: retry a few times, then give up on that one
/// event rather than block every later event behind it.
const REJECT_LIMIT: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

struct Queued {
    topic: &'static str,
    event: Any,
    at: SystemTime,
}

#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Queued>,
    pending: Arc<(AtomicUsize, Notify)>,
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = d.as_secs() as i64;
    ts.nanos = d.subsec_nanos() as i32;
    ts
}

/// A message's full protobuf name, as a constant.
///
/// Asking protobuf for it (`MessageFull::descriptor()`) would build the whole reflection index
/// — descriptor.proto with its comments included — and keep ~0.5 MB alive in every shim for
/// one string. The names are checked against the descriptors in the tests.
pub trait TypeName: Message {
    const TYPE_NAME: &'static str;
}

macro_rules! type_names {
    ($($t:ty => $name:literal),* $(,)?) => {
        $(impl TypeName for $t { const TYPE_NAME: &'static str = $name; })*
    };
}

type_names! {
    TaskCreate => "containerd.events.TaskCreate",
    TaskStart => "containerd.events.TaskStart",
    TaskDelete => "containerd.events.TaskDelete",
    TaskIO => "containerd.events.TaskIO",
    TaskExit => "containerd.events.TaskExit",
    TaskOOM => "containerd.events.TaskOOM",
    TaskExecAdded => "containerd.events.TaskExecAdded",
    TaskExecStarted => "containerd.events.TaskExecStarted",
    TaskPaused => "containerd.events.TaskPaused",
    TaskResumed => "containerd.events.TaskResumed",
    TaskCheckpointed => "containerd.events.TaskCheckpointed",
    ProcessDetails => "containerd.runc.v1.ProcessDetails",
}

/// Packs a message the way containerd's typeurl does: the bare full name, no URL prefix.
pub fn pack<M: TypeName>(msg: &M) -> Any {
    let mut any = Any::new();
    any.type_url = M::TYPE_NAME.to_string();
    any.value = msg.write_to_bytes().unwrap_or_default();
    any
}

impl Publisher {
    /// Starts the delivery task. `ttrpc_address` is containerd's TTRPC_ADDRESS (a socket path).
    pub fn start(ttrpc_address: String, namespace: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new((AtomicUsize::new(0), Notify::new()));
        tokio::spawn(deliver(rx, ttrpc_address, namespace, pending.clone()));
        Self { tx, pending }
    }

    pub fn publish<M: TypeName>(&self, topic: &'static str, msg: &M) {
        self.pending.0.fetch_add(1, Ordering::SeqCst);
        let queued = Queued {
            topic,
            event: pack(msg),
            at: SystemTime::now(),
        };
        if self.tx.send(queued).is_err() {
            self.pending.0.fetch_sub(1, Ordering::SeqCst);
            log::error!("event queue closed; dropped {topic}");
        }
    }

    /// Waits until every published event was delivered, at most `bound`.
    pub async fn flush(&self, bound: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.pending.1.notified();
                if self.pending.0.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(bound, wait).await.is_ok()
    }
}

fn socket_url(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("unix://{address}")
    }
}

async fn deliver(
    mut rx: mpsc::UnboundedReceiver<Queued>,
    address: String,
    namespace: String,
    pending: Arc<(AtomicUsize, Notify)>,
) {
    let url = socket_url(&address);
    let mut client: Option<EventsClient> = None;
    while let Some(item) = rx.recv().await {
        // Events are published from inside RPC handlers; let the handler's reply go out
        // first (it is queued behind this task when the handler ends), the caller is waiting
        // on it. Order among events is untouched: this task still sends them one by one.
        tokio::task::yield_now().await;
        let mut req = ForwardRequest::new();
        let mut env = Envelope::new();
        env.timestamp = Some(timestamp(item.at)).into();
        env.namespace = namespace.clone();
        env.topic = item.topic.to_string();
        env.event = Some(item.event).into();
        req.envelope = Some(env).into();

        let mut backoff = Duration::from_millis(10);
        let mut rejected = 0;
        loop {
            if client.is_none() {
                match ttrpc::asynchronous::Client::connect(&url).await {
                    Ok(c) => client = Some(EventsClient::new(c)),
                    Err(e) => log::debug!("events: connect {url}: {e}"),
                }
            }
            if let Some(c) = &client {
                let ctx = ttrpc::context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
                match c.forward(ctx, &req).await {
                    Ok(_) => break,
                    Err(ttrpc::Error::RpcStatus(status)) => {
                        rejected += 1;
                        log::warn!("events: containerd refused {}: {status:?}", item.topic);
                        if rejected >= REJECT_LIMIT {
                            log::error!(
                                "events: dropping {} after {rejected} refusals",
                                item.topic
                            );
                            break;
                        }
                    }
                    Err(e) => {
                        log::debug!("events: forward {}: {e}; reconnecting", item.topic);
                        client = None;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        pending.0.fetch_sub(1, Ordering::SeqCst);
        pending.1.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;

    fn check<M: TypeName + MessageFull>() {
        assert_eq!(M::TYPE_NAME, M::descriptor().full_name());
    }

    #[test]
    fn constant_names_match_the_descriptors() {
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskDelete>();
        check::<TaskIO>();
        check::<TaskExit>();
        check::<TaskOOM>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
        check::<TaskCheckpointed>();
        check::<ProcessDetails>();
    }
}
