//! `cograft bench scale`: figures at WordNet size (~1.2M atoms) on a fresh 3-node cluster, in
//! one run: load time through `/v1/batch` (one client), disk and memory per atom on each node
//! (sled's files, the snapshot, RSS), then the longest any write or read waited while the
//! leader built a snapshot, and while a follower that fell behind installed one (with the
//! install's switch time from its log). With `--attach` it loads and sizes a cluster someone
//! else started (e.g. an older build's `cluster up`) and skips the snapshot phases.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

use super::wordnet::{AtomSpec, WordNet};
use crate::client::Client;
use crate::cluster::{self, LocalCluster};

pub struct ScaleArgs {
    pub dir: PathBuf,
    pub base_port: u16,
    pub wordnet: PathBuf,
    /// Nodes of a running cluster to load instead of starting one.
    pub attach: Vec<String>,
    /// Operations per `/v1/batch` request.
    pub batch_ops: usize,
}

const NODE_OPS: &str = "add_node";

/// Sends one batch to the leader and answers its results.
async fn batch(client: &Client, ops: Vec<Value>) -> anyhow::Result<Vec<Value>> {
    let answer = client.request(Method::POST, "/v1/batch", Some(&json!({ "ops": ops }))).await?;
    if !answer.status.is_success() {
        bail!("a batch answered {}: {}", answer.status, answer.body);
    }
    Ok(answer.body["results"].as_array().cloned().unwrap_or_default())
}

/// Sends one batch and reports progress every 100k atoms.
async fn send(
    client: &Client,
    ops: Vec<Value>,
    written: &mut usize,
    started: Instant,
) -> anyhow::Result<Vec<Value>> {
    let before = *written / 100_000;
    *written += ops.len();
    let results = batch(client, ops).await?;
    if *written / 100_000 > before {
        let rate = *written as f64 / started.elapsed().as_secs_f64();
        eprintln!("  {} atoms written, {rate:.0} atoms/s", *written);
    }
    Ok(results)
}

/// Loads the graph (`WordNet::atoms`, in its order) in batches of `batch_ops`; answers the
/// atoms written. A link names a member committed earlier by its id, and one made earlier in
/// the same batch as `"$N"`.
async fn load(client: &Client, wn: &WordNet, batch_ops: usize) -> anyhow::Result<usize> {
    let started = Instant::now();
    let atoms = wn.atoms();
    let mut ids: Vec<u64> = Vec::with_capacity(atoms.len());
    let mut written = 0;
    let (mut ops, mut first) = (Vec::with_capacity(batch_ops), 0);
    for (position, atom) in atoms.iter().enumerate() {
        if ops.len() == batch_ops {
            for result in send(client, std::mem::take(&mut ops), &mut written, started).await? {
                ids.push(result["atom"]["id"].as_u64().context("a result without an atom id")?);
            }
            first = position;
        }
        ops.push(match atom {
            AtomSpec::Node { atom_type, name } => json!({ "op": NODE_OPS, "type": atom_type, "name": name }),
            AtomSpec::Link { atom_type, members } => {
                let outgoing: Vec<Value> = members
                    .iter()
                    .map(|m| if *m >= first { json!(format!("${}", m - first)) } else { json!(ids[*m]) })
                    .collect();
                json!({ "op": "add_link", "type": atom_type, "outgoing": outgoing })
            }
        });
    }
    if !ops.is_empty() {
        send(client, ops, &mut written, started).await?;
    }
    Ok(written)
}

/// Bytes under `path`.
fn du(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A process's resident memory now (`VmRSS`) or at its peak (`VmHWM`), from `/proc`.
fn memory_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Pids of the `serve` processes whose command line names a directory under `root`.
fn serving_pids(root: &Path) -> Vec<(u32, PathBuf)> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> =
            cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
        if args.iter().any(|a| a == "serve") {
            if let Some(dir) = args.iter().map(PathBuf::from).find(|a| a.starts_with(&root)) {
                let node_dir =
                    if dir.is_file() { dir.parent().map(Path::to_path_buf).unwrap_or(dir) } else { dir };
                out.push((pid, node_dir));
            }
        }
    }
    out
}

/// Latencies of one kind of request, during one window.
#[derive(Default)]
struct Window {
    samples: Vec<f64>,
}

impl Window {
    fn describe(&mut self) -> String {
        self.samples.sort_by(f64::total_cmp);
        let max = self.samples.last().copied().unwrap_or(f64::NAN);
        let p99 = super::percentile(&self.samples, 0.99);
        format!("{} requests, p99 {p99:.1} ms, max {max:.1} ms", self.samples.len())
    }
}

/// Sends `path` to `addr` in a loop until `stop`; answers the latencies of the answered ones.
async fn probe(addr: String, method: Method, path: String, stop: Arc<AtomicBool>) -> Window {
    let client = Client::new(vec![addr.clone()]).expect("one address");
    let mut window = Window::default();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let body = (method == Method::POST)
            .then(|| json!({ "type": "ConceptNode", "name": format!("probe-{i}-{}", std::process::id()) }));
        let started = Instant::now();
        if let Ok(answer) = client.send_once(&addr, method.clone(), &path, body.as_ref(), None).await {
            if answer.status.is_success() {
                window.samples.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    window
}

/// Writes to the leader, linearizable reads on `reader` and stale reads on `stale` while
/// `during` runs; answers the three windows' summaries.
async fn measure_during<F: std::future::Future<Output = anyhow::Result<()>>>(
    leader: &str,
    reader: &str,
    stale: &str,
    during: F,
) -> anyhow::Result<[String; 3]> {
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn(probe(leader.into(), Method::POST, "/v1/atoms".into(), stop.clone()));
    let reads = tokio::spawn(probe(reader.into(), Method::GET, "/v1/atoms/1".into(), stop.clone()));
    let stale_reads =
        tokio::spawn(probe(stale.into(), Method::GET, "/v1/atoms/1?consistency=stale".into(), stop.clone()));
    let outcome = during.await;
    stop.store(true, Ordering::Relaxed);
    let (mut w, mut r, mut s) = (writes.await?, reads.await?, stale_reads.await?);
    outcome?;
    Ok([w.describe(), r.describe(), s.describe()])
}

/// One node's lock-wait histogram (`cograft_storage_<family>_bucket`), scraped from `/metrics`:
/// cumulative count per bucket edge (seconds), `+Inf` as infinity.
#[derive(Default)]
struct Waits {
    buckets: Vec<(f64, f64)>,
}

impl Waits {
    async fn scrape(client: &Client, addr: &str, family: &str) -> anyhow::Result<Waits> {
        let answer = client.send_once(addr, Method::GET, "/metrics", None, None).await?;
        let Value::String(text) = answer.body else { bail!("{addr}/metrics did not answer text") };
        let prefix = format!("cograft_storage_{family}_bucket{{le=\"");
        let mut buckets = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else { continue };
            let Some((edge, count)) = rest.split_once("\"} ") else { continue };
            let edge = if edge == "+Inf" { f64::INFINITY } else { edge.parse()? };
            buckets.push((edge, count.trim().parse()?));
        }
        anyhow::ensure!(!buckets.is_empty(), "{addr}/metrics has no {family}");
        Ok(Waits { buckets })
    }

    /// What was observed between `self` (the earlier scrape) and `later`: the number of
    /// waits, how many exceeded `bound` seconds, and the smallest edge all of them stayed under.
    fn since(&self, later: &Waits, bound: f64) -> String {
        let delta: Vec<(f64, f64)> = later
            .buckets
            .iter()
            .map(|(edge, n)| {
                let before = self.buckets.iter().find(|(e, _)| e == edge).map_or(0.0, |(_, b)| *b);
                (*edge, n - before)
            })
            .collect();
        let total = delta.last().map_or(0.0, |(_, n)| *n);
        let within = delta.iter().filter(|(e, _)| *e <= bound).map(|(_, n)| *n).fold(0.0, f64::max);
        let worst = delta.iter().find(|(_, n)| *n >= total).map_or(f64::INFINITY, |(e, _)| *e);
        format!(
            "{total:.0} waits, {:.0} over {:.0} ms, all under {} ms",
            total - within,
            bound * 1000.0,
            if worst.is_finite() { format!("{:.1}", worst * 1000.0) } else { "+Inf".into() }
        )
    }
}

/// Over `during`: the apply-lock waits, apply times and log flushes on `writer`, and the
/// read-gate waits on `readers`, each against the 100 ms bound.
async fn waits_during<T>(
    client: &Client,
    writer: &str,
    readers: &[&str],
    during: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(T, String)> {
    const BOUND: f64 = 0.1;
    // The apply lock is the bound; apply's own time and the log's fsyncs say where the rest of a
    // write's time went.
    const WRITER: [(&str, &str); 3] = [
        ("apply_lock_wait_seconds", "apply lock"),
        ("apply_seconds", "apply (whole run)"),
        ("log_flush_seconds", "log flush + fdatasync"),
    ];
    let mut writer_before = Vec::new();
    for (family, _) in WRITER {
        writer_before.push(Waits::scrape(client, writer, family).await?);
    }
    let mut reads_before = Vec::new();
    for addr in readers {
        reads_before.push(Waits::scrape(client, addr, "read_gate_wait_seconds").await?);
    }
    let out = during.await?;
    let mut lines = String::new();
    for ((family, what), before) in WRITER.iter().zip(&writer_before) {
        let after = Waits::scrape(client, writer, family).await?;
        lines.push_str(&format!("  {what} on {writer}: {}\n", before.since(&after, BOUND)));
    }
    for (addr, before) in readers.iter().zip(&reads_before) {
        let after = Waits::scrape(client, addr, "read_gate_wait_seconds").await?;
        lines.push_str(&format!("  read gate on {addr}: {}\n", before.since(&after, BOUND)));
    }
    Ok((out, lines.trim_end().to_string()))
}

async fn status(client: &Client, addr: &str) -> anyhow::Result<Value> {
    Ok(client.send_once(addr, Method::GET, "/admin/status", None, None).await?.body)
}

async fn wait_for<T>(
    what: &str,
    patience: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<()> {
    let wn = WordNet::load(&args.wordnet)?;
    println!(
        "WordNet 3.0: {} synsets, {} words, {} atoms to write",
        wn.synsets.len(),
        wn.words().len(),
        wn.atom_count()
    );
    let mut own: Option<LocalCluster> = None;
    let addrs = if args.attach.is_empty() {
        if args.dir.exists() {
            std::fs::remove_dir_all(&args.dir).with_context(|| format!("clearing {}", args.dir.display()))?;
        }
        let (cluster, _, _) = cluster::up(3, args.base_port, &args.dir).await?;
        let addrs = cluster.addrs();
        own = Some(cluster);
        addrs
    } else {
        args.attach.clone()
    };
    let client = Client::new(addrs.clone())?;
    let started = Instant::now();
    let written = load(&client, &wn, args.batch_ops).await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "loaded {written} atoms in {took:.1} s = {:.0} atoms/s (one client, {} ops per batch)",
        written as f64 / took,
        args.batch_ops
    );
    // Every node has applied the whole load (the digest of 1.2M atoms takes seconds, and the
    // ticks move the index meanwhile, so the indexes are compared instead).
    let mut last = 0;
    for addr in &addrs {
        last = last.max(status(&client, addr).await?["last_log_index"].as_u64().unwrap_or(0));
    }
    wait_for("every node to apply the load", Duration::from_secs(600), async || {
        for addr in &addrs {
            let s = status(&client, addr).await.ok()?;
            if s["last_applied_index"].as_u64().unwrap_or(0) < last {
                return None;
            }
        }
        Some(())
    })
    .await?;
    for (pid, dir) in serving_pids(&args.dir) {
        let (sled, snapshots, rss) =
            (du(&dir.join("sled")), du(&dir.join("snapshots")), memory_bytes(pid, "VmRSS:"));
        println!(
            "{}: sled {:.0} MB ({:.0} B/atom), snapshots {:.1} MB ({:.1} B/atom), RSS {:.0} MB ({:.0} B/atom)",
            dir.display(),
            sled as f64 / 1e6,
            sled as f64 / written as f64,
            snapshots as f64 / 1e6,
            snapshots as f64 / written as f64,
            rss as f64 / 1e6,
            rss as f64 / written as f64
        );
    }
    let Some(mut cluster) = own else { return Ok(()) };

    // A snapshot build on the leader while writes and reads go on.
    let leader = cluster::wait_for_leader(&addrs, Duration::from_secs(30)).await?;
    let leader_addr = addrs[(leader - 1) as usize].clone();
    let follower = (1..=3u64).find(|id| *id != leader).expect("3 nodes");
    let follower_addr = addrs[(follower - 1) as usize].clone();
    let other = (1..=3u64).find(|id| *id != leader && *id != follower).expect("3 nodes");
    let other_addr = addrs[(other - 1) as usize].clone();
    let before = status(&client, &leader_addr).await?["snapshot_index"].as_u64().unwrap_or(0);
    let build_started = Instant::now();
    let building = async {
        client.call(Method::POST, "/admin/snapshot", None).await?;
        wait_for("the snapshot build", Duration::from_secs(600), async || {
            let s = status(&client, &leader_addr).await.ok()?;
            (s["snapshot_index"].as_u64().unwrap_or(0) > before).then_some(())
        })
        .await
    };
    let measured = measure_during(&leader_addr, &follower_addr, &other_addr, building);
    let ([w, r, s], waits) =
        waits_during(&client, &leader_addr, &[&leader_addr, &follower_addr, &other_addr], measured).await?;
    println!("snapshot build on the leader: {:.1} s", build_started.elapsed().as_secs_f64());
    println!("  meanwhile writes to the leader: {w}\n  linearizable reads on a follower: {r}\n  stale reads on a follower: {s}");
    println!("{waits}");

    // A follower falls behind the purged log and installs the leader's snapshot.
    let behind = status(&client, &follower_addr).await?["last_log_index"].as_u64().unwrap_or(0);
    cluster.kill9(follower)?;
    for i in 0..1100 {
        let body = json!({ "type": "ConceptNode", "name": format!("while-down-{i}") });
        client.call(Method::POST, "/v1/atoms", Some(&body)).await?;
    }
    client.call(Method::POST, "/admin/snapshot", None).await?;
    wait_for("the leader to purge past the follower", Duration::from_secs(600), async || {
        let s = status(&client, &leader_addr).await.ok()?;
        (s["purged_index"].as_u64().unwrap_or(0) > behind).then_some(())
    })
    .await?;
    let install_started = Instant::now();
    cluster.restart(follower).await?;
    let target = status(&client, &leader_addr).await?["snapshot_index"].as_u64().unwrap_or(0);
    let installing = async {
        wait_for("the follower's install", Duration::from_secs(900), async || {
            let s = status(&client, &follower_addr).await.ok()?;
            (s["snapshot_index"].as_u64().unwrap_or(0) >= target).then_some(())
        })
        .await
    };
    let measured = measure_during(&leader_addr, &other_addr, &follower_addr, installing);
    let ([w, r, s], waits) =
        waits_during(&client, &follower_addr, &[&follower_addr, &other_addr], measured).await?;
    let log =
        std::fs::read_to_string(args.dir.join(follower.to_string()).join("node.log")).unwrap_or_default();
    // The node's log is coloured: drop the escape sequences before reading its fields.
    let log = strip_ansi(&log);
    let switch = log
        .lines()
        .rev()
        .find(|l| l.contains("snapshot installed"))
        .and_then(|l| l.split("switch_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    println!(
        "snapshot install on a follower: {:.1} s from its restart; trees switched in {switch} ms",
        install_started.elapsed().as_secs_f64()
    );
    println!("  meanwhile writes to the leader: {w}\n  linearizable reads on the other follower: {r}\n  stale reads on the installing follower: {s}");
    println!("{waits}");
    for (pid, dir) in serving_pids(&args.dir) {
        println!("{}: peak RSS {:.0} MB", dir.display(), memory_bytes(pid, "VmHWM:") as f64 / 1e6);
    }
    cluster.stop(Duration::from_secs(60))
}
