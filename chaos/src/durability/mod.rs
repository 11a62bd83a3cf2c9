//! The durability audit (`cograft-chaos durability`): runs one real node under `strace -f`,
//! writes near-limit batches with snapshots through two lives of the node (a clean stop, then a
//! restart, which is when sled writes its own `snap.*` file, then kill -9), and checks from the
//! syscall trace that every acknowledged write found everything it depended on synced
//! ([`audit`]). Then it simulates the power cut the trace describes: every file that was never
//! synced, or whose directory entry never was, is deleted, the node is started again, and every
//! acknowledged write must still be there.

pub mod audit;
pub mod trace;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{json, Value};

use audit::{Model, Violation};

/// What to run.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub bin: PathBuf,
    pub strace: PathBuf,
    /// Working directory (wiped first).
    pub dir: PathBuf,
    /// Batches written in the node's first and second life.
    pub batches: (usize, usize),
    /// Nodes per batch and bytes per node name: 6 x 15 KiB makes entries near the 100 KiB limit.
    pub nodes_per_batch: usize,
    pub name_bytes: usize,
    /// A snapshot is requested after every this many batches.
    pub snapshot_every: usize,
}

/// What one audit found.
#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub acks_checked: usize,
    pub files_traced: usize,
    pub violations: usize,
    /// Violations by path pattern.
    pub violation_groups: BTreeMap<String, usize>,
    pub first_violations: Vec<Violation>,
    /// Files the power-cut simulation deleted (never synced).
    pub power_cut_deleted: Vec<PathBuf>,
    /// Why the node did not start after the power cut (empty: it started).
    pub restart_failure: String,
    pub acknowledged_atoms: usize,
    pub missing_atoms: usize,
    pub valid: bool,
}

impl AuditReport {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "durability audit: {} acknowledged writes checked, {} files traced, {} violations",
            self.acks_checked, self.files_traced, self.violations
        );
        for (group, count) in &self.violation_groups {
            out.push_str(&format!("\n  not durable at an acknowledgement: {group}: {count}"));
        }
        out.push_str(&format!(
            "\npower cut: {} never-synced files deleted; restart: {}; {} of {} acknowledged atoms missing\nverdict: {}",
            self.power_cut_deleted.len(),
            if self.restart_failure.is_empty() { "started" } else { &self.restart_failure },
            self.missing_atoms,
            self.acknowledged_atoms,
            if self.valid { "PASS" } else { "FAIL" }
        ));
        out
    }
}

/// One life of the node, possibly under strace.
struct Life {
    /// The process we started (strace, or the node itself).
    child: Child,
    /// The node's own pid (strace's child when traced).
    node: Pid,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The audited node and its client.
struct Subject {
    cfg: AuditConfig,
    data: PathBuf,
    port: u16,
    http: reqwest::Client,
    /// Acknowledged atoms: id -> name.
    acked: BTreeMap<u64, String>,
}

impl Subject {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&self, life: usize, trace: Option<&Path>) -> anyhow::Result<Life> {
        let log = std::fs::File::create(self.cfg.dir.join(format!("node-{life}.log")))?;
        let mut cmd = match trace {
            Some(out) => {
                let mut c = Command::new(&self.cfg.strace);
                c.args(["-f", "-y", "-yy", "-qq", "-s", "96", "-e"])
                    .arg(format!("trace={}", trace::TRACED))
                    .arg("-o")
                    .arg(out)
                    .arg("--")
                    .arg(&self.cfg.bin);
                c
            }
            None => Command::new(&self.cfg.bin),
        };
        cmd.args(["serve", "--node-id", "1", "--listen", &self.addr(), "--data-dir"])
            .arg(&self.data)
            .current_dir(&self.cfg.dir)
            // Snapshots and log purges during the workload; no idle ticks between requests.
            .env("COGRAFT__RAFT__SNAPSHOT_AFTER_ENTRIES", "40")
            .env("COGRAFT__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT", "5")
            .env("COGRAFT__CLUSTER__SECRET", "durability-audit")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", self.cfg.bin.display()))?;
        let node = if trace.is_some() { traced_child(&mut child)? } else { Pid::from_raw(child.id() as i32) };
        Ok(Life { child, node })
    }

    async fn wait_ready(&self, life: &mut Life, init: bool) -> anyhow::Result<()> {
        self.wait_healthy(life).await?;
        self.wait_leading(init, Duration::from_secs(60)).await
    }

    async fn wait_healthy(&self, life: &mut Life) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = format!("http://{}", self.addr());
        loop {
            if let Some(status) = life.child.try_wait()? {
                bail!("the node exited at start with {status}");
            }
            if let Ok(r) = self.http.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the node was not healthy within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn wait_leading(&self, init: bool, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        let base = format!("http://{}", self.addr());
        if init {
            let r = self.http.post(format!("{base}/admin/init")).json(&json!({})).send().await?;
            anyhow::ensure!(r.status().is_success(), "init answered {}", r.status());
        }
        loop {
            let status: Value = match self.http.get(format!("{base}/admin/status")).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Value::Null,
            };
            if status["role"] == "leader" {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "the node did not lead within {patience:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a write until it is acknowledged (503s while a leader is elected are retried).
    async fn write(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let key = format!("audit-{}-{}", path.len(), rand_key());
        loop {
            let r = self
                .http
                .post(format!("http://{}{path}", self.addr()))
                .header("Idempotency-Key", &key)
                .json(&body)
                .send()
                .await?;
            let status = r.status();
            let answer: Value = r.json().await.unwrap_or_default();
            if status.is_success() {
                return Ok(answer);
            }
            if status.as_u16() != 503 || Instant::now() > deadline {
                bail!("{path} answered {status}: {answer}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Near-limit batches, small writes and snapshots; records every acknowledged atom.
    async fn workload(&mut self, life: usize, batches: usize) -> anyhow::Result<()> {
        for b in 0..batches {
            let ops: Vec<Value> = (0..self.cfg.nodes_per_batch)
                .map(|i| {
                    let name = format!("life{life}-batch{b}-node{i}-{}", "x".repeat(self.cfg.name_bytes));
                    json!({ "op": "add_node", "type": "ConceptNode", "name": name })
                })
                .collect();
            let answer = self.write("/v1/batch", json!({ "ops": ops })).await?;
            for result in answer["results"].as_array().context("a batch answer without results")? {
                let atom = &result["atom"];
                let id = atom["id"].as_u64().context("a batch result without an atom id")?;
                self.acked.insert(id, atom["name"].as_str().unwrap_or_default().to_string());
            }
            let small = self
                .write("/v1/atoms", json!({ "type": "ConceptNode", "name": format!("life{life}-small{b}") }))
                .await?;
            let id = small["id"].as_u64().context("an atom answer without an id")?;
            self.acked.insert(id, small["name"].as_str().unwrap_or_default().to_string());
            if (b + 1) % self.cfg.snapshot_every == 0 {
                let r = self.http.post(format!("http://{}/admin/snapshot", self.addr())).send().await?;
                anyhow::ensure!(r.status().is_success(), "snapshot answered {}", r.status());
            }
        }
        Ok(())
    }

    /// Reads back every acknowledged atom; answers how many are missing or wrong.
    async fn missing(&self) -> anyhow::Result<usize> {
        let mut missing = 0;
        for (id, name) in &self.acked {
            let r = self
                .http
                .get(format!("http://{}/v1/atoms/{id}?consistency=stale", self.addr()))
                .send()
                .await?;
            let ok = r.status().is_success() && r.json::<Value>().await?["name"].as_str() == Some(name);
            missing += usize::from(!ok);
        }
        Ok(missing)
    }
}

fn rand_key() -> u128 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() ^ u128::from(std::process::id())
}

/// The pid of strace's traced child (the node), from /proc.
fn traced_child(strace: &mut Child) -> anyhow::Result<Pid> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let children = format!("/proc/{0}/task/{0}/children", strace.id());
    loop {
        if let Some(pid) = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        {
            return Ok(Pid::from_raw(pid));
        }
        if let Some(status) = strace.try_wait()? {
            bail!("strace exited with {status} before it started the node");
        }
        anyhow::ensure!(Instant::now() < deadline, "strace did not start the node within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signals the node and waits for the process we started to exit (SIGKILL after 30 s).
fn end(life: &mut Life, signal: Signal) -> anyhow::Result<()> {
    let _ = kill(life.node, signal);
    let deadline = Instant::now() + Duration::from_secs(30);
    while life.child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let state = std::fs::read_to_string(format!("/proc/{}/stat", life.node)).unwrap_or_default();
            let _ = kill(life.node, Signal::SIGKILL);
            let _ = life.child.kill();
            let _ = life.child.wait();
            bail!("the node (pid {}, /proc stat {state:?}) did not exit within 30 s of {signal}", life.node);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Kills the node when its life ends early (an error half-way, or the audit moving on).
struct Guard(Option<Life>);

impl Guard {
    fn set(&mut self, life: Option<Life>) {
        self.stop();
        self.0 = life;
    }

    fn life(&mut self) -> &mut Life {
        self.0.as_mut().expect("a node is running")
    }

    fn stop(&mut self) {
        if let Some(mut life) = self.0.take() {
            let _ = kill(life.node, Signal::SIGKILL);
            let _ = life.child.kill();
            let _ = life.child.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the audit and the power-cut simulation.
pub async fn run(cfg: AuditConfig) -> anyhow::Result<AuditReport> {
    anyhow::ensure!(
        cfg.strace.exists(),
        "{} not found: install Debian's strace (`make durability-audit` does)",
        cfg.strace.display()
    );
    if cfg.dir.exists() {
        std::fs::remove_dir_all(&cfg.dir).with_context(|| format!("wiping {}", cfg.dir.display()))?;
    }
    std::fs::create_dir_all(&cfg.dir)?;
    let dir = cfg.dir.canonicalize()?;
    let cfg = AuditConfig { dir: dir.clone(), bin: cfg.bin.canonicalize()?, ..cfg };
    let mut subject = Subject {
        data: dir.join("data"),
        port: free_port()?,
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?,
        acked: BTreeMap::new(),
        cfg: cfg.clone(),
    };
    let traces = [dir.join("trace-1.txt"), dir.join("trace-2.txt")];

    let mut guard = Guard(Some(subject.start(1, Some(&traces[0]))?));
    subject.wait_ready(guard.life(), true).await?;
    subject.workload(1, cfg.batches.0).await?;
    end(guard.life(), Signal::SIGTERM)?;
    guard.set(Some(subject.start(2, Some(&traces[1]))?));
    subject.wait_ready(guard.life(), false).await?;
    subject.workload(2, cfg.batches.1).await?;
    end(guard.life(), Signal::SIGKILL)?;
    guard.set(None);

    let mut model = Model::new(&subject.data, subject.port);
    for path in &traces {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let events = trace::parse(&text, &dir, model.end() + 1);
        model.apply(&events);
    }
    let violations = model.violations();
    let deleted = model.power_cut();
    for path in &deleted {
        let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        if let Err(e) = removed {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e).with_context(|| format!("deleting {}", path.display()));
            }
        }
    }

    // After the power cut: the node must start, lead again and answer every acknowledged write.
    let mut restart_failure = String::new();
    let mut missing = subject.acked.len();
    guard.set(Some(subject.start(3, None)?));
    match subject.wait_healthy(guard.life()).await {
        Ok(()) => {
            if let Err(e) = subject.wait_leading(false, Duration::from_secs(20)).await {
                restart_failure = e.to_string();
            }
            missing = subject.missing().await?;
            end(guard.life(), Signal::SIGTERM)?;
        }
        Err(e) => {
            let log = std::fs::read_to_string(dir.join("node-3.log")).unwrap_or_default();
            let reason = log
                .lines()
                .find(|l| l.contains("panicked") || l.contains("error"))
                .unwrap_or("(no error line in its log)");
            restart_failure = format!("{e}: {reason}");
        }
    }
    guard.set(None);
    let files_traced = model.files();
    let valid = violations.is_empty() && restart_failure.is_empty() && missing == 0;
    Ok(AuditReport {
        acks_checked: model.acks.len(),
        files_traced,
        violations: violations.len(),
        violation_groups: Model::summarize(&violations),
        first_violations: violations.into_iter().take(20).collect(),
        power_cut_deleted: deleted,
        restart_failure,
        acknowledged_atoms: subject.acked.len(),
        missing_atoms: missing,
        valid,
    })
}
