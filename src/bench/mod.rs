//! `cograft bench`: figures from a real local cluster, measured in one run: launch to first
//! leader, single-client write latency (median, p99), throughput and mean group-commit batch
//! at N concurrent writers, and time from kill -9 of the leader to the next acknowledged write.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::cluster;

pub mod compare;
pub mod embed;
pub mod generate;
pub mod import;
pub mod recall;
pub mod scale;
pub mod similar;
pub mod spread;
pub mod wordnet;

pub struct BenchArgs {
    pub dir: PathBuf,
    pub base_port: u16,
    pub nodes: u64,
    pub writes: usize,
    pub concurrency: usize,
    pub concurrent_writes: usize,
}

/// The median of `v` (0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Starts a fresh 1-node cluster in `dir` (cleared first), runs `work` with a client of it, and
/// stops it whatever `work` answered.
async fn on_fresh_node<F, Fut>(dir: &std::path::Path, base_port: u16, work: F) -> anyhow::Result<()>
where
    F: FnOnce(crate::client::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| anyhow::anyhow!("clearing {}: {e}", dir.display()))?;
    }
    let (cluster, _, _) = crate::cluster::up(1, base_port, dir).await?;
    let result = work(cluster.client()?).await;
    cluster.stop(std::time::Duration::from_secs(30))?;
    result
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Sum and count of a histogram family in an OpenMetrics exposition.
fn histogram_totals(metrics: &str, family: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{family}_{suffix} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

async fn metrics_text(client: &Client, addr: &str) -> anyhow::Result<String> {
    let answer = client.send_once(addr, Method::GET, "/metrics", None, None).await?;
    Ok(answer.body.as_str().map(str::to_string).unwrap_or_default())
}

async fn write(client: &Client, addr: &str, name: String) -> anyhow::Result<()> {
    let body = json!({ "type": "ConceptNode", "name": name });
    let answer = client.send_once(addr, Method::POST, "/v1/atoms", Some(&body), None).await?;
    if !answer.status.is_success() {
        bail!("write answered {}: {}", answer.status, answer.body);
    }
    Ok(())
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("clearing {}", args.dir.display()))?;
    }
    let (mut cluster, leader, to_leader) = cluster::up(args.nodes, args.base_port, &args.dir).await?;
    let addrs = cluster.addrs();
    let leader_addr = addrs[(leader - 1) as usize].clone();
    let client = Client::new(addrs.clone())?;

    // Single client, sequential writes to the leader.
    let mut latencies = Vec::with_capacity(args.writes);
    for i in 0..args.writes {
        let started = Instant::now();
        write(&client, &leader_addr, format!("seq-{i}")).await?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);

    // Concurrent writers; group commit shows in the flush batch histogram's delta.
    let before = metrics_text(&client, &leader_addr).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_writer = args.concurrent_writes / args.concurrency.max(1);
    for w in 0..args.concurrency {
        let (client, addr) = (client.clone(), leader_addr.clone());
        tasks.spawn(async move {
            for i in 0..per_writer {
                write(&client, &addr, format!("conc-{w}-{i}")).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let concurrent_secs = started.elapsed().as_secs_f64();
    let after = metrics_text(&client, &leader_addr).await?;
    let (sum0, count0) = histogram_totals(&before, "cograft_storage_log_flush_batch_writes");
    let (sum1, count1) = histogram_totals(&after, "cograft_storage_log_flush_batch_writes");
    let mean_batch = (sum1 - sum0) / (count1 - count0).max(1.0);
    let throughput = (per_writer * args.concurrency) as f64 / concurrent_secs;

    // kill -9 of the leader, then write through a survivor until one is acknowledged.
    let survivor = addrs.iter().find(|a| **a != leader_addr).cloned().context("need 2+ nodes")?;
    cluster.kill9(leader)?;
    let killed = Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        if write(&client, &survivor, format!("after-kill-{attempt}")).await.is_ok() {
            break;
        }
        if killed.elapsed() > Duration::from_secs(30) {
            bail!("no write was acknowledged within 30 s of killing the leader");
        }
    }
    let failover_ms = killed.elapsed().as_secs_f64() * 1000.0;

    let report = json!({
        "nodes": args.nodes,
        "launch_to_leader_ms": to_leader.as_secs_f64() * 1000.0,
        "single_client_writes": args.writes,
        "write_latency_ms": { "median": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0) },
        "concurrent_writers": args.concurrency,
        "concurrent_writes": per_writer * args.concurrency,
        "concurrent_writes_per_sec": throughput,
        "mean_writes_per_fsync": mean_batch,
        "leader_kill_to_next_ack_ms": failover_ms,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    summary(&report);
    cluster.stop(Duration::from_secs(30))
}

fn summary(r: &Value) {
    println!(
        "\n{} nodes: leader {:.0} ms after launch; single-client write median {:.2} ms, p99 {:.2} ms; \
         {} writers: {:.0} writes/s, mean group commit {:.1} writes per fsync; kill -9 of the leader to next \
         acknowledged write {:.0} ms",
        r["nodes"],
        r["launch_to_leader_ms"].as_f64().unwrap_or(0.0),
        r["write_latency_ms"]["median"].as_f64().unwrap_or(0.0),
        r["write_latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        r["concurrent_writers"],
        r["concurrent_writes_per_sec"].as_f64().unwrap_or(0.0),
        r["mean_writes_per_fsync"].as_f64().unwrap_or(0.0),
        r["leader_kill_to_next_ack_ms"].as_f64().unwrap_or(0.0),
    );
}
