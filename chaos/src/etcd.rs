//! The control: the same register workload and checker against etcd 3.4 (Debian's
//! `etcd-server`, three processes on loopback) under kill -9 and pause faults. It must PASS,
//! which shows the harness and checker are sound before they judge cograft. The three-member
//! cluster (start, kill -9, restore, leader and term) is also what `cograft bench compare`
//! measures cograft against.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{json, Value};

use crate::history::{Outcome, Recorder};
use crate::linearizability::{check_history, Budget, Verdict};
use crate::rng::Rng;
use crate::workload::{run_registers, Register, RegisterLoad};

struct Member {
    name: String,
    client: String,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

/// Three etcd members on loopback; killed on drop.
pub struct EtcdCluster {
    bin: PathBuf,
    members: Vec<Member>,
    dir: PathBuf,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    pub async fn start(bin: &Path, dir: &Path, n: usize) -> anyhow::Result<EtcdCluster> {
        std::fs::create_dir_all(dir)?;
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}")).collect();
        let members = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let name = format!("e{i}");
                let client = format!("http://127.0.0.1:{client}");
                let peer = format!("http://127.0.0.1:{peer}");
                let args = vec![
                    "--name".into(),
                    name.clone(),
                    "--data-dir".into(),
                    dir.join(&name).display().to_string(),
                    "--listen-client-urls".into(),
                    client.clone(),
                    "--advertise-client-urls".into(),
                    client.clone(),
                    "--listen-peer-urls".into(),
                    peer.clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer,
                    "--initial-cluster".into(),
                    initial.join(","),
                    "--initial-cluster-state".into(),
                    "new".into(),
                    "--initial-cluster-token".into(),
                    "cograft-control".into(),
                ];
                Member { name, client, args, child: None, paused: false }
            })
            .collect();
        let mut cluster = EtcdCluster { bin: bin.to_path_buf(), members, dir: dir.to_path_buf() };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))?;
        let child = Command::new(&self.bin)
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    async fn wait_healthy(&self, patience: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + patience;
        for m in &self.members {
            loop {
                let ok = match http.get(format!("{}/health", m.client)).send().await {
                    Ok(r) => r.json::<Value>().await.map(|v| v["health"] == "true").unwrap_or(false),
                    Err(_) => false,
                };
                if ok {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "etcd member {} not healthy within {patience:?}",
                    m.name
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    pub fn clients(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    fn pid(&self, i: usize) -> Option<Pid> {
        self.members[i].child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// kill -9 of member `i`; it stays down until [`EtcdCluster::restore`].
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Member `i`'s view from `/v3/maintenance/status`; `None` when it does not answer.
    pub async fn status(&self, http: &reqwest::Client, i: usize) -> Option<MemberStatus> {
        let url = format!("{}/v3/maintenance/status", self.members[i].client);
        let v: Value = http.post(url).json(&json!({})).send().await.ok()?.json().await.ok()?;
        let number = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        Some(MemberStatus {
            member_id: number(&v["header"]["member_id"])?,
            leader: number(&v["leader"]).unwrap_or(0),
            raft_term: number(&v["raftTerm"]).unwrap_or(0),
        })
    }

    /// The highest Raft term an answering member reports (it grows by one or more per election).
    pub async fn max_term(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let mut term = None;
        for i in 0..self.members.len() {
            if let Some(status) = self.status(http, i).await {
                term = term.max(Some(status.raft_term));
            }
        }
        term.ok_or_else(|| anyhow::anyhow!("no etcd member answered its status"))
    }

    /// The index of the member every answering member names as leader, once they agree.
    pub async fn leader(&self, http: &reqwest::Client, patience: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + patience;
        loop {
            let mut views = Vec::new();
            for i in 0..self.members.len() {
                if self.members[i].child.is_some() {
                    views.push((i, self.status(http, i).await));
                }
            }
            let named: Vec<u64> = views.iter().filter_map(|(_, s)| s.as_ref().map(|s| s.leader)).collect();
            if let Some(&leader) = named.first() {
                if leader != 0 && views.iter().all(|(_, s)| s.is_some()) && named.iter().all(|l| *l == leader)
                {
                    let found = views.iter().find(|(_, s)| s.as_ref().is_some_and(|s| s.member_id == leader));
                    if let Some((i, _)) = found {
                        return Ok(*i);
                    }
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "etcd elected no leader within {patience:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Heals everything (resumes paused members, restarts killed ones) and waits until every
    /// member reports healthy.
    pub async fn restore_and_wait(&mut self, patience: Duration) -> anyhow::Result<()> {
        self.restore()?;
        self.wait_healthy(patience).await
    }

    /// Heals everything: resumes paused members and restarts killed ones.
    fn restore(&mut self) -> anyhow::Result<()> {
        for i in 0..self.members.len() {
            if self.members[i].paused {
                if let Some(pid) = self.pid(i) {
                    let _ = kill(pid, Signal::SIGCONT);
                }
                self.members[i].paused = false;
            }
            if self.members[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What one member says of itself and the cluster.
#[derive(Clone, Copy, Debug)]
pub struct MemberStatus {
    pub member_id: u64,
    /// The leader's member id; 0 while there is none.
    pub leader: u64,
    pub raft_term: u64,
}

/// etcd's v3 JSON gateway as a [`Register`]: linearizable range reads, puts, and txn for CAS.
#[derive(Clone)]
pub struct EtcdRegisters {
    clients: Arc<Vec<String>>,
    http: reqwest::Client,
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

impl EtcdRegisters {
    async fn post(&self, node: usize, path: &str, body: Value) -> Option<Value> {
        let r = self.http.post(format!("{}{path}", self.clients[node])).json(&body).send().await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        r.json().await.ok()
    }
}

impl Register for EtcdRegisters {
    fn nodes(&self) -> usize {
        self.clients.len()
    }

    async fn read(&self, node: usize, key: &str) -> Outcome {
        match self.post(node, "/v3/kv/range", json!({ "key": b64(key) })).await {
            Some(v) => match v["kvs"].as_array().and_then(|kvs| kvs.first()) {
                None => Outcome::Ok(None),
                Some(kv) => kv["value"]
                    .as_str()
                    .and_then(|s| B64.decode(s).ok())
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse().ok())
                    .map_or(Outcome::Fail, |x| Outcome::Ok(Some(x))),
            },
            None => Outcome::Fail,
        }
    }

    async fn write(&self, node: usize, key: &str, value: i64) -> Outcome {
        let body = json!({ "key": b64(key), "value": b64(&value.to_string()) });
        match self.post(node, "/v3/kv/put", body).await {
            Some(_) => Outcome::Ok(None),
            None => Outcome::Unknown,
        }
    }

    async fn cas(&self, node: usize, key: &str, expect: Option<i64>, new: i64) -> Outcome {
        let compare = match expect {
            Some(e) => {
                json!({ "key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(&e.to_string()) })
            }
            None => json!({ "key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0" }),
        };
        let body = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": b64(key), "value": b64(&new.to_string()) } }],
        });
        match self.post(node, "/v3/kv/txn", body).await {
            Some(v) if v["succeeded"] == true => Outcome::Ok(None),
            Some(_) => Outcome::Fail,
            None => Outcome::Unknown,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ControlReport {
    pub seed: u64,
    pub duration_s: f64,
    pub faults: Vec<String>,
    pub offered: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub keys: Vec<Verdict>,
    pub valid: bool,
}

/// Runs the register workload against etcd with kill -9 and pause faults.
pub async fn control(
    bin: &Path,
    dir: &Path,
    duration: Duration,
    seed: u64,
    clients: usize,
    keys: usize,
) -> anyhow::Result<ControlReport> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let mut cluster = EtcdCluster::start(bin, dir, 3).await?;
    let store = EtcdRegisters {
        clients: Arc::new(cluster.clients()),
        http: reqwest::Client::builder().timeout(Duration::from_secs(6)).build()?,
    };
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let load = RegisterLoad { clients, keys, seed };
    let workload = tokio::spawn(run_registers(store, load, recorder.clone(), stop.clone()));
    let started = Instant::now();
    let mut rng = Rng::new(seed ^ 0xe7cd);
    let mut faults = Vec::new();
    while started.elapsed() + Duration::from_secs(8) < duration {
        tokio::time::sleep(rng.millis(1500, 3000)).await;
        let i = rng.below(cluster.members.len() as u64) as usize;
        if rng.below(2) == 0 {
            cluster.kill9(i);
            faults.push(format!("kill -9 {}", cluster.members[i].name));
        } else {
            if let Some(pid) = cluster.pid(i) {
                let _ = kill(pid, Signal::SIGSTOP);
                cluster.members[i].paused = true;
            }
            faults.push(format!("SIGSTOP {}", cluster.members[i].name));
        }
        tokio::time::sleep(rng.millis(2000, 4000)).await;
        cluster.restore()?;
    }
    tokio::time::sleep(duration.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    workload.await?;
    let history = recorder.finish();
    let checked =
        check_history(&history, Budget { max_states: 50_000_000, deadline: Duration::from_secs(60) });
    let counts = history.summary();
    Ok(ControlReport {
        seed,
        duration_s: started.elapsed().as_secs_f64(),
        faults,
        offered: counts.offered,
        ok: counts.ok,
        failed: counts.fail,
        unknown: counts.unknown,
        valid: checked.valid,
        keys: checked.verdicts,
    })
}
