//! The closed-loop load generator `bench compare` drives both databases with: N clients, each
//! sending its next request when its last one answered, for a fixed time. A write puts a key
//! no other write uses; a read asks for a preloaded key by name, linearizably (both systems'
//! default). Success is a 2xx (and, for a read, the key found); everything else is an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::percentile;

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the requests go: the same operations in each system's own API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// etcd's v3 JSON gateway: `/v3/kv/put`, `/v3/kv/range`.
    Etcd,
    /// cograft's `/v1/atoms`: a ConceptNode named by the key.
    Cograft,
}

/// One system's client endpoints (node i = `bases[i]`, e.g. `http://127.0.0.1:2379`).
#[derive(Clone)]
pub struct Target {
    pub system: System,
    bases: Arc<Vec<String>>,
    http: reqwest::Client,
}

/// What one load phase measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub clients: usize,
    pub seconds: f64,
    pub ok: u64,
    pub errors: u64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Target {
    pub fn new(system: System, bases: Vec<String>) -> anyhow::Result<Target> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .build()?;
        Ok(Target { system, bases: Arc::new(bases), http })
    }

    pub fn nodes(&self) -> usize {
        self.bases.len()
    }

    /// Writes `key` through node `node`; true when it was acknowledged.
    pub async fn write(&self, node: usize, key: &str) -> bool {
        let base = &self.bases[node];
        let request = match self.system {
            System::Etcd => self
                .http
                .post(format!("{base}/v3/kv/put"))
                .json(&json!({ "key": B64.encode(key), "value": B64.encode("1") })),
            System::Cograft => self
                .http
                .post(format!("{base}/v1/atoms"))
                .json(&json!({ "type": "ConceptNode", "name": key })),
        };
        let Ok(response) = request.send().await else { return false };
        response.status().is_success() && response.bytes().await.is_ok()
    }

    /// Reads `key` through node `node`; true when it answered and found it.
    pub async fn read(&self, node: usize, key: &str) -> bool {
        let base = &self.bases[node];
        let request = match self.system {
            System::Etcd => {
                self.http.post(format!("{base}/v3/kv/range")).json(&json!({ "key": B64.encode(key) }))
            }
            System::Cograft => {
                self.http.get(format!("{base}/v1/atoms")).query(&[("type", "ConceptNode"), ("name", key)])
            }
        };
        let Ok(response) = request.send().await else { return false };
        if !response.status().is_success() {
            return false;
        }
        let Ok(body) = response.json::<Value>().await else { return false };
        let found = match self.system {
            System::Etcd => &body["kvs"],
            System::Cograft => &body["atoms"],
        };
        found.as_array().is_some_and(|items| !items.is_empty())
    }
}

/// What each client does per request.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// A write of a fresh key `{prefix}-{client}-{n}`.
    Write { prefix: &'static str },
    /// A read of one of the keys `k0 .. k{keys-1}`, chosen at random.
    Read { keys: usize },
}

/// Runs `clients` closed loops against node `node` for `duration`.
pub async fn closed_loop(
    target: &Target,
    node: usize,
    clients: usize,
    duration: Duration,
    op: Op,
) -> Figures {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let target = target.clone();
        tasks.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let ok = match op {
                    Op::Write { prefix } => target.write(node, &format!("{prefix}-{client}-{n}")).await,
                    Op::Read { keys } => {
                        let key = format!("k{}", rand::thread_rng().gen_range(0..keys));
                        target.read(node, &key).await
                    }
                };
                n += 1;
                if ok {
                    latencies.push(sent.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                    // An error can answer at once: do not spin on a node that is refusing.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (latencies, errors)
        });
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done.expect("a load client panicked");
        latencies.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms: Vec<f64> = latencies.iter().map(|us| f64::from(*us) / 1000.0).collect();
    Figures {
        clients,
        seconds,
        ok: ms.len() as u64,
        errors,
        per_sec: ms.len() as f64 / seconds,
        p50_ms: percentile(&ms, 0.5),
        p99_ms: percentile(&ms, 0.99),
    }
}

/// Writes the keys `k0 .. k{keys-1}` the read phases ask for, with `clients` writers; fails
/// unless every one was acknowledged.
pub async fn preload(target: &Target, node: usize, keys: usize, clients: usize) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let target = target.clone();
        tasks.spawn(async move {
            for k in (client..keys).step_by(clients) {
                let key = format!("k{k}");
                let mut attempts = 0;
                while !target.write(node, &key).await {
                    attempts += 1;
                    anyhow::ensure!(attempts < 5, "preloading {key} failed 5 times");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
