//! A mock Kubernetes API server for kubectl, over plain HTTP on 127.0.0.1 (std only): API
//! discovery for the groups of deploy/kubernetes/ (core v1, apps/v1, rbac/v1, node.k8s.io/v1),
//! one Node whose labels `GET` and `PATCH` (JSON merge patch) read and change, and a record of
//! every request. Enough for `kubectl label node` and `kubectl create --dry-run=client`; no
//! authentication, no TLS, no OpenAPI (kubectl runs with `--validate=false` against it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub content_type: String,
    pub body: String,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

struct State {
    node_name: String,
    node: Value,
    requests: Vec<Request>,
}

/// The server; stops when dropped.
pub struct ApiServer {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Starts a server knowing one node `node_name` with `labels`.
    pub fn start(node_name: &str, labels: Value) -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(Mutex::new(State {
            node_name: node_name.to_string(),
            node: json!({
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {
                    "name": node_name,
                    "uid": "6d1b4b4e-0000-4000-8000-000000000001",
                    "resourceVersion": "1",
                    "labels": labels,
                },
                "spec": {},
                "status": {},
            }),
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve(conn, port, &s));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ApiServer {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig naming this server (no credentials).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\n\
             contexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\n\
             current-context: mock\nusers:\n- name: mock\n  user: {{}}\n",
            self.url()
        )
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// The node's labels now.
    pub fn labels(&self) -> Value {
        self.lock().node["metadata"]["labels"].clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn resources(group_version: &str, list: &[(&str, &str, bool, &[&str])]) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list.iter().map(|(name, kind, namespaced, verbs)| json!({
            "name": name,
            "singularName": kind.to_lowercase(),
            "namespaced": namespaced,
            "kind": kind,
            "verbs": verbs,
        })).collect::<Vec<_>>(),
    })
}

const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// The answer to a request: status and JSON body.
fn answer(req: &Request, port: u16, state: &Mutex<State>) -> (u16, Value) {
    let group = |name: &str, version: &str| {
        json!({
            "name": name,
            "versions": [{"groupVersion": format!("{name}/{version}"), "version": version}],
            "preferredVersion": {"groupVersion": format!("{name}/{version}"), "version": version},
        })
    };
    let not_found = || {
        (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": format!("{} not found", req.target), "reason": "NotFound", "code": 404}),
        )
    };
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let node_path = format!("/api/v1/nodes/{}", s.node_name);
    match (req.method.as_str(), req.path()) {
        ("GET", "/version") => (
            200,
            json!({"major": "1", "minor": "36", "gitVersion": "v1.36.0-mock", "platform": "linux/amd64"}),
        ),
        ("GET", "/api") => (
            200,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs":
                   [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}]}),
        ),
        ("GET", "/apis") => (
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                group("apps", "v1"),
                group("rbac.authorization.k8s.io", "v1"),
                group("node.k8s.io", "v1"),
            ]}),
        ),
        ("GET", "/api/v1") => (
            200,
            resources(
                "v1",
                &[
                    ("nodes", "Node", false, VERBS),
                    ("namespaces", "Namespace", false, VERBS),
                    ("serviceaccounts", "ServiceAccount", true, VERBS),
                    ("pods", "Pod", true, VERBS),
                ],
            ),
        ),
        ("GET", "/apis/apps/v1") => (
            200,
            resources("apps/v1", &[("daemonsets", "DaemonSet", true, VERBS)]),
        ),
        ("GET", "/apis/rbac.authorization.k8s.io/v1") => (
            200,
            resources(
                "rbac.authorization.k8s.io/v1",
                &[
                    ("clusterroles", "ClusterRole", false, VERBS),
                    ("clusterrolebindings", "ClusterRoleBinding", false, VERBS),
                ],
            ),
        ),
        ("GET", "/apis/node.k8s.io/v1") => (
            200,
            resources(
                "node.k8s.io/v1",
                &[("runtimeclasses", "RuntimeClass", false, VERBS)],
            ),
        ),
        ("GET", p) if p == node_path => (200, s.node.clone()),
        ("PATCH", p) if p == node_path => match serde_json::from_str::<Value>(&req.body) {
            Ok(patch) => {
                merge_patch(&mut s.node, &patch);
                let rv = s.node["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                s.node["metadata"]["resourceVersion"] = json!((rv + 1).to_string());
                (200, s.node.clone())
            }
            Err(e) => (
                400,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": format!("bad patch: {e}"), "reason": "BadRequest", "code": 400}),
            ),
        },
        _ => not_found(),
    }
}

fn serve(conn: TcpStream, port: u16, state: &Mutex<State>) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut writer = write_half;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut length = 0usize;
        let mut content_type = String::new();
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => content_type = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Request {
            method,
            target,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .push(req.clone());
        let (status, value) = answer(&req, port, state);
        let text = value.to_string();
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            _ => "Not Found",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn merge_patch_sets_and_removes() {
    let mut v = json!({"metadata": {"labels": {"a": "1"}}});
    merge_patch(&mut v, &json!({"metadata": {"labels": {"b": "2"}}}));
    assert_eq!(v, json!({"metadata": {"labels": {"a": "1", "b": "2"}}}));
    merge_patch(&mut v, &json!({"metadata": {"labels": {"a": null}}}));
    assert_eq!(v, json!({"metadata": {"labels": {"b": "2"}}}));
}
