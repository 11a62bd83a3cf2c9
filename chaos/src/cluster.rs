//! The cluster under test: real `cograft` processes on loopback whose every peer link i -> j
//! goes through its own [`FaultProxy`] (via `[cluster.peer_addr_override]`), so the nemesis can
//! cut, delay or drop each direction of each link. Clients talk to the nodes directly. Owns the
//! processes: kill -9, SIGSTOP/SIGCONT, restart, SIGTERM, and always kills what it started.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::proxy::{Direction, Fault, FaultProxy, LinkControl};

pub const SECRET: &str = "chaos-cluster-secret";

pub struct ChaosNode {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    child: Option<Child>,
    pub paused: bool,
}

pub struct ChaosCluster {
    bin: PathBuf,
    pub nodes: BTreeMap<u64, ChaosNode>,
    /// (from, to) -> the proxy `from` dials to reach `to`.
    links: BTreeMap<(u64, u64), LinkControl>,
    proxies: Vec<FaultProxy>,
    pub http: reqwest::Client,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ChaosCluster {
    /// Starts `n` nodes in `dir` with proxied peer links, initialises them, waits for a leader.
    pub async fn start(bin: &Path, dir: &Path, n: u64, seed: u64) -> anyhow::Result<ChaosCluster> {
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let addr = format!("127.0.0.1:{}", free_port()?);
            nodes.insert(
                id,
                ChaosNode { id, addr, dir: dir.join(id.to_string()), child: None, paused: false },
            );
        }
        let mut links = BTreeMap::new();
        let mut proxies = Vec::new();
        let mut overrides: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
        for from in 1..=n {
            for to in (1..=n).filter(|t| *t != from) {
                let target: SocketAddr = nodes[&to].addr.parse()?;
                let proxy = FaultProxy::start(target, seed ^ (from << 32) ^ to).await?;
                overrides.entry(from).or_default().push((to, proxy.local_addr().to_string()));
                links.insert((from, to), proxy.control());
                proxies.push(proxy);
            }
        }
        for node in nodes.values() {
            std::fs::create_dir_all(&node.dir)?;
            let table: String =
                overrides[&node.id].iter().map(|(to, addr)| format!("\"{to}\" = \"{addr}\"\n")).collect();
            let config = format!(
                "[node]\nid = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\n\n[cluster]\nsecret = \"{SECRET}\"\n\n\
                 [cluster.peer_addr_override]\n{table}\n[api]\nmax_list = 100000000\n\n\
                 [log]\nfilter = \"info,openraft=info\"\n",
                node.id,
                node.addr,
                node.dir.display()
            );
            std::fs::write(node.dir.join("chaos.toml"), config)?;
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let mut cluster = ChaosCluster { bin: bin.to_path_buf(), nodes, links, proxies, http };
        for id in 1..=n {
            cluster.restart(id).await?;
        }
        let members: BTreeMap<String, String> =
            cluster.nodes.values().map(|n| (n.id.to_string(), n.addr.clone())).collect();
        let r = cluster
            .http
            .post(format!("http://{}/admin/init", cluster.nodes[&1].addr))
            .json(&json!({ "members": members }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "init failed: {}", r.text().await?);
        cluster.wait_for_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes[&id].child.is_some()
    }

    fn pid(&self, id: u64) -> Option<Pid> {
        self.nodes[&id].child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// Starts node `id` (again) and waits until it answers `/healthz`; an error means the node
    /// refused to start (its log says why).
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.dir.join("node.log"))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(node.dir.join("chaos.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        node.child = Some(child);
        node.paused = false;
        let (addr, deadline) = (node.addr.clone(), Instant::now() + Duration::from_secs(30));
        loop {
            if let Ok(r) = self.http.get(format!("http://{addr}/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            let node = self.nodes.get_mut(&id).expect("known node");
            if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                node.child = None;
                anyhow::bail!(
                    "node {id} exited at start with {status}; see {}",
                    node.dir.join("node.log").display()
                );
            }
            anyhow::ensure!(Instant::now() < deadline, "node {id} did not become healthy within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`pause = true`) or SIGCONT.
    pub fn pause(&mut self, id: u64, pause: bool) {
        if let Some(pid) = self.pid(id) {
            let _ = kill(pid, if pause { Signal::SIGSTOP } else { Signal::SIGCONT });
            self.nodes.get_mut(&id).expect("known node").paused = pause;
        }
    }

    /// Sets a fault on both directions of every link between `a` and `b`.
    pub fn fault_between(&self, a: u64, b: u64, fault: Fault) {
        for link in [(a, b), (b, a)] {
            if let Some(control) = self.links.get(&link) {
                control.set(Direction::Up, fault.clone());
                control.set(Direction::Down, fault.clone());
            }
        }
    }

    /// Cuts every link between different groups.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        for (i, g) in groups.iter().enumerate() {
            for other in groups.iter().skip(i + 1) {
                for a in g {
                    for b in other {
                        self.fault_between(*a, *b, Fault::Cut);
                    }
                }
            }
        }
    }

    /// Sets `fault` on every link.
    pub fn fault_all(&self, fault: Fault) {
        for control in self.links.values() {
            control.set(Direction::Up, fault.clone());
            control.set(Direction::Down, fault.clone());
        }
    }

    pub fn heal(&self) {
        self.links.values().for_each(LinkControl::heal);
    }

    /// Makes every node run and every link clean again (restarting killed nodes).
    pub async fn restore(&mut self) -> Vec<String> {
        self.heal();
        let mut refused = Vec::new();
        for id in self.ids() {
            if self.nodes[&id].paused {
                self.pause(id, false);
            }
            if !self.is_running(id) {
                if let Err(e) = self.restart(id).await {
                    refused.push(e.to_string());
                }
            }
        }
        refused
    }

    pub async fn status(&self, id: u64) -> Option<Value> {
        let r = self
            .http
            .get(format!("http://{}/admin/status", self.nodes[&id].addr))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The node that calls itself leader, if a running one does.
    pub async fn leader(&self) -> Option<u64> {
        for id in self.ids().into_iter().filter(|id| self.is_running(*id) && !self.nodes[id].paused) {
            if let Some(s) = self.status(id).await {
                if s["role"] == "leader" {
                    return s["node_id"].as_u64();
                }
            }
        }
        None
    }

    pub async fn wait_for_leader(&self, patience: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            anyhow::ensure!(Instant::now() < deadline, "no leader within {patience:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn digest(&self, id: u64) -> Option<(u64, String)> {
        let r = self.http.get(format!("http://{}/admin/digest", self.nodes[&id].addr)).send().await.ok()?;
        let v: Value = r.json().await.ok()?;
        Some((v["applied_index"].as_u64()?, v["digest"].as_str()?.to_string()))
    }

    /// Waits until every node reports the same applied index and digest; answers how long it took.
    pub async fn converge(&self, patience: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut last = Vec::new();
        while started.elapsed() < patience {
            let mut digests = Vec::new();
            for id in self.ids() {
                digests.push(self.digest(id).await);
            }
            if digests.iter().all(Option::is_some) && digests.windows(2).all(|w| w[0] == w[1]) {
                return Ok(started.elapsed());
            }
            last = digests;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("nodes did not converge within {patience:?}: {last:?}")
    }

    /// Removes `id` from the voters and members, then adds it back as a learner and promotes it.
    pub async fn cycle_membership(&self, id: u64) -> anyhow::Result<()> {
        let admin = |path: &'static str, body: Value| async move {
            let leader = self.wait_for_leader(Duration::from_secs(10)).await?;
            let r = self
                .http
                .post(format!("http://{}{path}", self.nodes[&leader].addr))
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "{path} answered {}: {}", r.status(), r.text().await?);
            anyhow::Ok(())
        };
        admin("/admin/remove-node", json!({ "id": id })).await?;
        admin("/admin/add-learner", json!({ "id": id, "addr": self.nodes[&id].addr })).await?;
        admin("/admin/change-membership", json!({ "voters": self.ids() })).await
    }

    /// SIGTERM to every node; answers the ids that did not exit 0.
    pub fn stop(&mut self) -> Vec<u64> {
        let mut unclean = Vec::new();
        for id in self.ids() {
            self.pause(id, false);
            if let Some(pid) = self.pid(id) {
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let deadline = Instant::now() + Duration::from_secs(20);
                let clean = loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break status.success(),
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break false;
                        }
                    }
                };
                if !clean {
                    unclean.push(node.id);
                }
            }
        }
        unclean
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for proxy in self.proxies.drain(..) {
            proxy.shutdown();
        }
    }
}
