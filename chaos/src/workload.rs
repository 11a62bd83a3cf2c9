//! The workloads: concurrent clients on random nodes with bounded request timeouts.
//! - register: per key, writes of unique values, linearizable reads and compare-and-set, on
//!   named values of a few atoms (any [`Register`] store: cograft, or etcd for the control);
//! - set: adds of unique atoms, read back in full after healing.
//!
//! Every operation is recorded (invoke, complete, ok / fail / unknown) for the checker.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::history::{Op, Outcome, Recorder};
use crate::rng::Rng;

/// A store holding integer registers by key, as the register workload sees it.
pub trait Register: Clone + Send + Sync + 'static {
    /// How many nodes a client may pick from.
    fn nodes(&self) -> usize;
    fn read(&self, node: usize, key: &str) -> impl Future<Output = Outcome> + Send;
    fn write(&self, node: usize, key: &str, value: i64) -> impl Future<Output = Outcome> + Send;
    fn cas(
        &self,
        node: usize,
        key: &str,
        expect: Option<i64>,
        new: i64,
    ) -> impl Future<Output = Outcome> + Send;
}

/// The register workload's knobs.
#[derive(Clone, Debug)]
pub struct RegisterLoad {
    pub clients: usize,
    pub keys: usize,
    pub seed: u64,
}

/// Runs register clients until `stop` is set; every op goes into `recorder`.
pub async fn run_registers<R: Register>(
    store: R,
    load: RegisterLoad,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..load.clients {
        let (store, recorder, stop) = (store.clone(), recorder.clone(), stop.clone());
        let keys = load.keys.max(1);
        let mut rng = Rng::new(load.seed ^ (client as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        clients.spawn(async move {
            let mut counter = 0i64;
            let mut last_seen: Option<i64> = None;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("r{}", rng.below(keys as u64));
                let node = rng.below(store.nodes() as u64) as usize;
                counter += 1;
                // Unique across clients and runs of this client.
                let value = (client as i64 + 1) * 1_000_000_000 + counter;
                let roll = rng.below(100);
                let op = if roll < 45 {
                    Op::Read
                } else if roll < 80 {
                    Op::Write(value)
                } else {
                    Op::Cas { expect: if rng.below(4) == 0 { None } else { last_seen }, new: value }
                };
                let id = recorder.invoke(client as u64, &key, op.clone());
                let outcome = match op {
                    Op::Read => store.read(node, &key).await,
                    Op::Write(v) => store.write(node, &key, v).await,
                    Op::Cas { expect, new } => store.cas(node, &key, expect, new).await,
                };
                if let Outcome::Ok(Some(v)) = outcome {
                    last_seen = Some(v);
                }
                let failed = !matches!(outcome, Outcome::Ok(_));
                recorder.complete(id, outcome);
                if failed {
                    // Back off a little so a dead node does not turn into a hot loop of refusals.
                    tokio::time::sleep(rng.millis(20, 100)).await;
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
}

/// cograft as a [`Register`]: key `rN` is the named value `v` of the atom created for it.
#[derive(Clone)]
pub struct CograftRegisters {
    pub addrs: Arc<Vec<String>>,
    /// key -> atom id.
    pub atoms: Arc<std::collections::BTreeMap<String, u64>>,
    pub http: reqwest::Client,
    /// Idempotency keys are `nonce-counter`: unique per operation and per run.
    nonce: u64,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl CograftRegisters {
    /// Creates one atom per key (retrying until the cluster answers).
    pub async fn prepare(
        addrs: Vec<String>,
        keys: usize,
        timeout: Duration,
    ) -> anyhow::Result<CograftRegisters> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        let mut atoms = std::collections::BTreeMap::new();
        for k in 0..keys {
            let key = format!("r{k}");
            let body = json!({ "type": "ChaosRegister", "name": key });
            let deadline = Instant::now() + Duration::from_secs(30);
            let id = loop {
                let sent =
                    http.post(format!("http://{}/v1/atoms", addrs[k % addrs.len()])).json(&body).send().await;
                if let Ok(r) = sent {
                    if r.status().is_success() {
                        let v: Value = r.json().await?;
                        break v["id"].as_u64().ok_or_else(|| anyhow::anyhow!("no id in {v}"))?;
                    }
                }
                anyhow::ensure!(Instant::now() < deadline, "could not create register atom {key}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            atoms.insert(key, id);
        }
        let nonce = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
        Ok(CograftRegisters {
            addrs: Arc::new(addrs),
            atoms: Arc::new(atoms),
            http,
            nonce,
            sent: Arc::default(),
        })
    }

    fn url(&self, node: usize, key: &str) -> String {
        format!("http://{}/v1/atoms/{}/values/v", self.addrs[node], self.atoms[key])
    }

    async fn put(&self, node: usize, key: &str, body: Value) -> Outcome {
        let sent = self
            .http
            .put(self.url(node, key))
            .header(
                "Idempotency-Key",
                format!("{}-{}", self.nonce, self.sent.fetch_add(1, Ordering::Relaxed)),
            )
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Outcome::Ok(None),
            // 4xx: the request was refused before or at apply (409: the CAS did not match).
            Ok(r) if r.status().is_client_error() => Outcome::Fail,
            // No connection: the request never reached a node.
            Err(e) if e.is_connect() => Outcome::Fail,
            // Timeouts, 5xx, 503 no leader: the write may or may not have applied.
            _ => Outcome::Unknown,
        }
    }
}

impl Register for CograftRegisters {
    fn nodes(&self) -> usize {
        self.addrs.len()
    }

    async fn read(&self, node: usize, key: &str) -> Outcome {
        match self.http.get(self.url(node, key)).send().await {
            Ok(r) if r.status() == StatusCode::OK => match r.json::<Value>().await {
                Ok(v) => v["value"].as_i64().map_or(Outcome::Fail, |x| Outcome::Ok(Some(x))),
                Err(_) => Outcome::Fail,
            },
            Ok(r) if r.status() == StatusCode::NOT_FOUND => match r.json::<Value>().await {
                Ok(v) if v["error"] == "no_value" => Outcome::Ok(None),
                _ => Outcome::Fail,
            },
            // A read that did not answer had no effect: it is dropped from the history.
            _ => Outcome::Fail,
        }
    }

    async fn write(&self, node: usize, key: &str, value: i64) -> Outcome {
        self.put(node, key, json!({ "value": value })).await
    }

    async fn cas(&self, node: usize, key: &str, expect: Option<i64>, new: i64) -> Outcome {
        self.put(node, key, json!({ "value": new, "expect": expect })).await
    }
}

/// What the set workload saw.
#[derive(Debug, Default)]
pub struct SetTally {
    pub offered: u64,
    pub acked: BTreeSet<String>,
    pub unknown: BTreeSet<String>,
    pub failed: u64,
    /// (invoke, complete) of acknowledged adds, for failover times.
    pub ack_times: Vec<(Instant, Instant)>,
}

/// Runs set clients (unique atom adds) until `stop` is set.
pub async fn run_set(
    addrs: Vec<String>,
    clients: usize,
    timeout: Duration,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<SetTally> {
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let tally = Arc::new(Mutex::new(SetTally::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let (http, addrs, tally, stop) = (http.clone(), addrs.clone(), tally.clone(), stop.clone());
        let mut rng = Rng::new(seed ^ 0x5e7 ^ client as u64);
        tasks.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("s-{client}-{n}");
                let node = &addrs[rng.below(addrs.len() as u64) as usize];
                let invoked = Instant::now();
                let sent = http
                    .post(format!("http://{node}/v1/atoms"))
                    .json(&json!({ "type": "ChaosElement", "name": name }))
                    .send()
                    .await;
                let acked = {
                    let mut t = tally.lock().expect("set tally lock");
                    t.offered += 1;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            t.acked.insert(name);
                            t.ack_times.push((invoked, Instant::now()));
                            true
                        }
                        Ok(r) if r.status().is_client_error() => {
                            t.failed += 1;
                            false
                        }
                        Err(e) if e.is_connect() => {
                            t.failed += 1;
                            false
                        }
                        _ => {
                            t.unknown.insert(name);
                            false
                        }
                    }
                };
                if !acked {
                    tokio::time::sleep(rng.millis(20, 100)).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let tally = std::mem::take(&mut *tally.lock().expect("set tally lock"));
    Ok(tally)
}

/// Reads every set element back (linearizably, page by page) from one node after healing.
pub async fn read_set(addr: &str, timeout: Duration) -> anyhow::Result<BTreeSet<String>> {
    let http = reqwest::Client::builder().timeout(timeout).build()?;
    let mut names = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("http://{addr}/v1/atoms?type=ChaosElement&limit=10000");
        if let Some(cursor) = &after {
            url.push_str(&format!("&after={cursor}"));
        }
        let r = http.get(url).send().await?;
        anyhow::ensure!(r.status().is_success(), "set read answered {}", r.status());
        let v: Value = r.json().await?;
        names.extend(
            v["atoms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["name"].as_str().map(str::to_string)),
        );
        match v["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(names),
        }
    }
}
