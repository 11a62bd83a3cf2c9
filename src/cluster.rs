//! `cograft cluster up`: runs N local nodes as child processes (node i on 127.0.0.1:(P+i-1),
//! data in D/i), writes each node's settings into its data directory (with one generated
//! cluster secret), initialises the cluster once, and stops every node with SIGTERM.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::config::{Overrides, Settings};

/// The settings file `cluster up` writes into each node's data directory.
pub const NODE_CONFIG: &str = "cograft.toml";

/// One running child node.
pub struct LocalNode {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    settings: Settings,
    child: Child,
    /// Killed on purpose (kill9); `stop` leaves it out.
    killed: bool,
}

/// Set in a node's environment by `cluster up`: the node asks the kernel to SIGTERM it when its
/// parent dies (`PR_SET_PDEATHSIG`), then checks the parent is still this pid, so even a kill -9
/// of `cluster up` leaves no node behind.
pub const DIE_WITH_PARENT_ENV: &str = "COGRAFT_DIE_WITH_PARENT";

/// A set of local nodes this process started.
#[derive(Default)]
pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
}

impl LocalCluster {
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// A client that knows every node.
    pub fn client(&self) -> anyhow::Result<Client> {
        Client::new(self.addrs())
    }

    /// Starts a node killed by `kill9` again, on its directory, and waits until it is live.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.iter_mut().find(|n| n.id == id).context("no such node")?;
        anyhow::ensure!(node.killed, "node {id} is still running");
        let fresh = spawn_node(&std::env::current_exe()?, &node.settings)?;
        *node = fresh;
        wait_healthy(&node.addr, Duration::from_secs(60)).await
    }

    /// kill -9 of one node (for failover measurements); it stays down.
    pub fn kill9(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.nodes.iter_mut().find(|n| n.id == id).context("no such node")?;
        node.child.kill()?;
        node.child.wait()?;
        node.killed = true;
        Ok(())
    }

    /// Sends SIGTERM to every node and waits for each to exit (SIGKILL after `grace`).
    pub fn stop(mut self, grace: Duration) -> anyhow::Result<()> {
        self.nodes.retain(|n| !n.killed);
        for node in &self.nodes {
            let _ = kill(Pid::from_raw(node.child.id() as i32), Signal::SIGTERM);
        }
        let mut failures = Vec::new();
        for node in &mut self.nodes {
            let deadline = Instant::now() + grace;
            let status = loop {
                if let Some(status) = node.child.try_wait()? {
                    break status;
                }
                if Instant::now() > deadline {
                    let _ = node.child.kill();
                    failures.push(format!("node {} did not stop within {grace:?} and was killed", node.id));
                    break node.child.wait()?;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            println!("node {} stopped ({status})", node.id);
            if !status.success() {
                failures.push(format!(
                    "node {} exited with {status}; see {}",
                    node.id,
                    node.dir.join("node.log").display()
                ));
            }
        }
        if !failures.is_empty() {
            bail!(failures.join("; "));
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    /// Never leaves nodes behind, also when the caller fails early.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if matches!(node.child.try_wait(), Ok(None)) {
                let _ = node.child.kill();
                let _ = node.child.wait();
            }
        }
    }
}

/// Writes (first run) or reads back (later runs) each node's settings under `dir`.
pub fn prepare(nodes: u64, base_port: u16, dir: &Path) -> anyhow::Result<Vec<Settings>> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if u64::from(base_port) + nodes > 65535 {
        bail!("--base-port {base_port} leaves no room for {nodes} nodes");
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let existing_secret = (1..=nodes)
        .map(|i| dir.join(i.to_string()).join(NODE_CONFIG))
        .find(|p| p.exists())
        .map(|p| Settings::load(Some(&p), &Overrides::default()).map(|s| s.cluster.secret))
        .transpose()?;
    let secret = existing_secret.unwrap_or_else(|| format!("{:032x}", rand::thread_rng().gen::<u128>()));
    let mut all = Vec::new();
    for i in 1..=nodes {
        let node_dir = dir.join(i.to_string());
        fs::create_dir_all(&node_dir)?;
        let file = node_dir.join(NODE_CONFIG);
        let overrides = Overrides {
            id: Some(i),
            listen: Some(format!("127.0.0.1:{}", u64::from(base_port) + i - 1)),
            data_dir: Some(node_dir.canonicalize()?),
        };
        let existing = file.exists().then_some(file.as_path());
        let mut settings = Settings::load(existing, &overrides)?;
        settings.cluster.secret = secret.clone();
        fs::write(&file, settings.to_toml(true)).with_context(|| format!("writing {}", file.display()))?;
        all.push(settings);
    }
    Ok(all)
}

/// Starts one node process from its settings file; its output goes to `DIR/node.log`.
pub fn spawn_node(exe: &Path, settings: &Settings) -> anyhow::Result<LocalNode> {
    let dir = settings.node.data_dir.clone();
    let log = fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log"))?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(dir.join(NODE_CONFIG))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env(DIE_WITH_PARENT_ENV, std::process::id().to_string())
        // Own process group: a terminal's Ctrl-C reaches only `cluster up`, which stops the nodes in order.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    Ok(LocalNode {
        id: settings.node.id,
        addr: settings.advertise(),
        dir,
        settings: settings.clone(),
        child,
        killed: false,
    })
}

/// Starts every node, initialises the cluster if it is new, and waits for a leader.
pub async fn up(nodes: u64, base_port: u16, dir: &Path) -> anyhow::Result<(LocalCluster, u64, Duration)> {
    let mut cluster = LocalCluster::default();
    let (leader, took) = start(&mut cluster, nodes, base_port, dir).await?;
    Ok((cluster, leader, took))
}

/// Starts every node into `cluster` (so a caller that gives up half-way can still stop the
/// ones already running), initialises the cluster if it is new, and waits for a leader.
pub async fn start(
    cluster: &mut LocalCluster,
    nodes: u64,
    base_port: u16,
    dir: &Path,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let settings = prepare(nodes, base_port, dir)?;
    let exe = std::env::current_exe()?;
    for s in &settings {
        cluster.nodes.push(spawn_node(&exe, s)?);
    }
    for node in &cluster.nodes {
        wait_healthy(&node.addr, Duration::from_secs(30)).await.with_context(|| {
            format!("node {} did not come up; see {}", node.id, node.dir.join("node.log").display())
        })?;
    }
    let client = Client::new(vec![cluster.nodes[0].addr.clone()])?;
    let status = client.call(Method::GET, "/admin/status", None).await?;
    let voters = status["membership"]["voters"].as_array().map(Vec::len).unwrap_or(0);
    if voters == 0 {
        let members: BTreeMap<String, String> =
            cluster.nodes.iter().map(|n| (n.id.to_string(), n.addr.clone())).collect();
        client.call(Method::POST, "/admin/init", Some(&json!({ "members": members }))).await?;
    }
    let leader = wait_for_leader(&cluster.addrs(), Duration::from_secs(30)).await?;
    Ok((leader, started.elapsed()))
}

/// In a node started by `cluster up`: die with the parent. Answers an error when the parent is
/// already gone (the node must not run on as an orphan).
pub fn die_with_parent() -> anyhow::Result<()> {
    let Some(parent) = std::env::var(DIE_WITH_PARENT_ENV).ok() else { return Ok(()) };
    let parent: i32 =
        parent.parse().with_context(|| format!("{DIE_WITH_PARENT_ENV}={parent} is not a pid"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
    // The parent may have died before the line above: then this node was reparented already.
    if nix::unistd::getppid().as_raw() != parent {
        bail!("the `cluster up` that started this node (pid {parent}) is gone; not starting");
    }
    Ok(())
}

/// Polls `/healthz` until it answers 200.
pub async fn wait_healthy(addr: &str, patience: Duration) -> anyhow::Result<()> {
    let client = Client::new(vec![addr.to_string()])?;
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(a) = client.send_once(addr, Method::GET, "/healthz", None, None).await {
            if a.status.is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{addr} was not healthy within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the nodes' status until one reports itself leader; answers its id.
pub async fn wait_for_leader(addrs: &[String], patience: Duration) -> anyhow::Result<u64> {
    let client = Client::new(addrs.to_vec())?;
    let deadline = Instant::now() + patience;
    loop {
        for addr in addrs {
            if let Ok(a) = client.send_once(addr, Method::GET, "/admin/status", None, None).await {
                if a.body["role"] == "leader" {
                    return a.body["node_id"].as_u64().context("status without node_id");
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no leader was elected within {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The highest Raft term any of `addrs` reports: it grows by at least one per election, so
/// its growth over a run counts the elections in it.
pub async fn max_term(addrs: &[String]) -> anyhow::Result<u64> {
    let client = Client::new(addrs.to_vec())?;
    let mut term = None;
    for addr in addrs {
        if let Ok(a) = client.send_once(addr, Method::GET, "/admin/status", None, None).await {
            term = term.max(a.body["term"].as_u64());
        }
    }
    term.context("no node answered its status")
}

/// Prints each node's address and role.
pub async fn print_status(cluster: &LocalCluster) -> anyhow::Result<()> {
    let client = cluster.client()?;
    for node in &cluster.nodes {
        let s: Value = client.send_once(&node.addr, Method::GET, "/admin/status", None, None).await?.body;
        println!(
            "  node {} at {:<16} {:<9} term {} applied {} data {}",
            node.id,
            node.addr,
            s["role"].as_str().unwrap_or("?"),
            s["term"],
            s["last_applied_index"],
            node.dir.display()
        );
    }
    Ok(())
}
