//! The test harness: starts real `cograft serve` processes on free loopback ports in a temp
//! dir, talks to them over HTTP, kills or stops them, and always cleans up (Drop kills every
//! node it started). Cluster tests hold a global lock so only one cluster runs at a time.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::blocking::{Client, Response};
use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::links::Links;

static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());
pub const SECRET: &str = "test-cluster-secret";

pub struct Node {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub dir: TempDir,
    pub nodes: BTreeMap<u64, Node>,
    env: Vec<(String, String)>,
    /// Settings for one node only (e.g. its peer address overrides).
    node_env: BTreeMap<u64, Vec<(String, String)>>,
    pub http: Client,
    _lock: MutexGuard<'static, ()>,
}

/// A reply: status and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// Holds the one-cluster-at-a-time lock for tests that start nodes without [`Cluster`].
pub fn exclusive() -> MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn wait_until<T>(what: &str, patience: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {patience:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The binary under test: `COGRAFT_TEST_BIN` when set (to run a scenario against another
/// build, e.g. to see a regression test fail on the code before its fix), else this build's.
pub fn bin() -> PathBuf {
    std::env::var_os("COGRAFT_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_cograft").into())
}

impl Cluster {
    /// Starts `n` nodes with extra `COGRAFT__...` settings, initialises them, waits for a leader.
    pub fn start(n: u64, env: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::empty(env);
        for id in 1..=n {
            cluster.add_node(id);
        }
        cluster.init();
        cluster
    }

    /// Like `start`, with every peer link going through a cuttable [`Links`] forwarder.
    pub fn start_linked(n: u64, env: &[(&str, &str)]) -> (Cluster, Links) {
        let mut cluster = Cluster::empty(env);
        for id in 1..=n {
            let dir = cluster.dir.path().join(id.to_string());
            let addr = format!("127.0.0.1:{}", free_port());
            cluster.nodes.insert(id, Node { id, addr, dir, child: None });
        }
        let addrs = cluster.nodes.values().map(|n| (n.id, n.addr.clone())).collect();
        let links = Links::new(&addrs);
        for id in 1..=n {
            cluster.node_env.insert(id, links.env_for(id));
            cluster.restart(id);
        }
        cluster.init();
        (cluster, links)
    }

    fn empty(env: &[(&str, &str)]) -> Cluster {
        let lock = exclusive();
        Cluster {
            dir: TempDir::new().unwrap(),
            nodes: BTreeMap::new(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            node_env: BTreeMap::new(),
            http: Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
            _lock: lock,
        }
    }

    /// Initialises the cluster with every node as a voter and waits for a leader.
    fn init(&mut self) {
        let cluster = self;
        let members: BTreeMap<String, String> =
            cluster.nodes.values().map(|n| (n.id.to_string(), n.addr.clone())).collect();
        let r = cluster.call(1, Method::POST, "/admin/init", Some(json!({ "members": members })), None);
        assert_eq!(r.status, 200, "init failed: {r:?}");
        cluster.leader();
    }

    /// Creates and starts a new node (not yet a member).
    pub fn add_node(&mut self, id: u64) -> &Node {
        let dir = self.dir.path().join(id.to_string());
        let addr = format!("127.0.0.1:{}", free_port());
        self.nodes.insert(id, Node { id, addr, dir, child: None });
        self.restart(id);
        &self.nodes[&id]
    }

    /// Starts (again) node `id` on its address and data directory, and waits until it is live.
    pub fn restart(&mut self, id: u64) {
        self.restart_with(id, &[]);
    }

    /// Like `restart`, with extra environment (e.g. `COGRAFT_FAILPOINTS`).
    pub fn restart_with(&mut self, id: u64, extra: &[(&str, &str)]) {
        let child = self.spawn_with(id, extra);
        self.nodes.get_mut(&id).unwrap().child = Some(child);
        let addr = self.addr(id);
        wait_until(&format!("node {id} healthy"), Duration::from_secs(30), || {
            self.http.get(format!("http://{addr}/healthz")).send().ok().filter(|r| r.status().is_success())
        });
    }

    /// Spawns node `id` with extra environment (e.g. `COGRAFT_FAILPOINTS`).
    pub fn spawn_with(&self, id: u64, extra: &[(&str, &str)]) -> Child {
        let node = &self.nodes[&id];
        std::fs::create_dir_all(&node.dir).unwrap();
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("node.log")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--node-id", &id.to_string(), "--listen", &node.addr, "--data-dir"])
            .arg(&node.dir)
            .env("COGRAFT__CLUSTER__SECRET", SECRET)
            .env("COGRAFT__LOG__FILTER", "info,openraft=info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in self.env.iter().chain(self.node_env.get(&id).into_iter().flatten()) {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().expect("start cograft")
    }

    /// Starts node `id` expecting it to exit by itself; answers its exit status (kills it and
    /// fails the test if it is still running after `patience`).
    pub fn start_expecting_exit(&self, id: u64, patience: Duration) -> ExitStatus {
        self.start_expecting_exit_with(id, &[], patience)
    }

    /// Like `start_expecting_exit`, with extra environment.
    pub fn start_expecting_exit_with(
        &self,
        id: u64,
        extra: &[(&str, &str)],
        patience: Duration,
    ) -> ExitStatus {
        let mut child = self.spawn_with(id, extra);
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("node {id} was expected to exit but still ran after {patience:?}");
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    pub fn pid(&self, id: u64) -> Pid {
        Pid::from_raw(self.nodes[&id].child.as_ref().expect("node running").id() as i32)
    }

    /// kill -9.
    pub fn kill9(&mut self, id: u64) {
        let mut child = self.nodes.get_mut(&id).unwrap().child.take().expect("node running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM; answers the exit status.
    pub fn sigterm(&mut self, id: u64) -> ExitStatus {
        let pid = self.pid(id);
        let mut child = self.nodes.get_mut(&id).unwrap().child.take().unwrap();
        kill(pid, Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("node {id} did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    /// Sends one request to node `id`.
    pub fn call(&self, id: u64, method: Method, path: &str, body: Option<Value>, key: Option<&str>) -> Reply {
        let mut req = self.http.request(method, format!("http://{}{}", self.addr(id), path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        to_reply(req.send().unwrap_or_else(|e| panic!("node {id} {path}: {e}")))
    }

    pub fn get(&self, id: u64, path: &str) -> Reply {
        self.call(id, Method::GET, path, None, None)
    }

    pub fn post(&self, id: u64, path: &str, body: Value) -> Reply {
        self.call(id, Method::POST, path, Some(body), None)
    }

    /// Sends raw bytes with a content type.
    pub fn raw(&self, id: u64, method: Method, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let req = self
            .http
            .request(method, format!("http://{}{}", self.addr(id), path))
            .header("content-type", content_type);
        to_reply(req.body(body).send().unwrap())
    }

    pub fn status(&self, id: u64) -> Value {
        self.get(id, "/admin/status").body
    }

    /// Waits until the running nodes agree on one leader; answers it.
    pub fn leader(&self) -> u64 {
        wait_until("a leader all running nodes agree on", Duration::from_secs(30), || {
            let running = self.running();
            let statuses: Vec<Value> = running
                .iter()
                .filter_map(|id| self.http.get(format!("http://{}/admin/status", self.addr(*id))).send().ok())
                .filter_map(|r| r.json::<Value>().ok())
                .collect();
            let leader = statuses.iter().find(|s| s["role"] == "leader")?["node_id"].as_u64()?;
            statuses.iter().all(|s| s["leader_id"].as_u64() == Some(leader)).then_some(leader)
        })
    }

    /// Adds a ConceptNode through node `id`; answers the reply.
    pub fn add_atom(&self, id: u64, name: &str) -> Reply {
        self.post(id, "/v1/atoms", json!({ "type": "ConceptNode", "name": name }))
    }

    /// (applied index, digest) of node `id`.
    pub fn digest(&self, id: u64) -> (u64, String) {
        let d = self.get(id, "/admin/digest").body;
        (d["applied_index"].as_u64().unwrap(), d["digest"].as_str().unwrap().to_string())
    }

    /// Waits until all `ids` report the same applied index and digest; answers the digest.
    pub fn converged(&self, ids: &[u64]) -> String {
        wait_until("the nodes to converge on one digest", Duration::from_secs(30), || {
            let digests: Vec<(u64, String)> = ids.iter().map(|id| self.digest(*id)).collect();
            digests.windows(2).all(|w| w[0] == w[1]).then(|| digests[0].1.clone())
        })
    }

    pub fn log_of(&self, id: u64) -> String {
        std::fs::read_to_string(self.nodes[&id].dir.join("node.log")).unwrap_or_default()
    }
}

fn to_reply(r: Response) -> Reply {
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, body }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            for node in self.nodes.values() {
                let log = std::fs::read_to_string(node.dir.join("node.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- node {} log (last 30 lines, newest first) ---\n{}", node.id, tail.join("\n"));
            }
        }
    }
}
