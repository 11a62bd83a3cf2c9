//! One chaos run against cograft: start a proxied cluster, run the register and set workloads
//! while the nemesis injects faults, heal, check convergence, read the set back, check every
//! register history for linearizability, and report.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::ChaosCluster;
use crate::history::{History, Recorder};
use crate::linearizability::{check_history, Budget};
use crate::nemesis::{count_by_kind, FaultKind, Nemesis};
use crate::report::{failover_times, Report, SetReport};
use crate::workload::{read_set, run_registers, run_set, CograftRegisters, RegisterLoad};

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub nodes: u64,
    pub duration: Duration,
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    pub register_clients: usize,
    pub keys: usize,
    pub set_clients: usize,
    pub request_timeout: Duration,
    pub checker_budget: Budget,
    /// How the run is replayed (printed when it fails).
    pub replay: String,
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<Report> {
    if cfg.dir.exists() {
        std::fs::remove_dir_all(&cfg.dir)?;
    }
    std::fs::create_dir_all(&cfg.dir)?;
    let mut cluster = ChaosCluster::start(&cfg.bin, &cfg.dir, cfg.nodes, cfg.seed).await?;
    let addrs = cluster.addrs();
    let registers = CograftRegisters::prepare(addrs.clone(), cfg.keys, cfg.request_timeout).await?;
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let load = RegisterLoad { clients: cfg.register_clients, keys: cfg.keys, seed: cfg.seed };
    let register_task = tokio::spawn(run_registers(registers, load, recorder.clone(), stop.clone()));
    let set_task =
        tokio::spawn(run_set(addrs.clone(), cfg.set_clients, cfg.request_timeout, cfg.seed, stop.clone()));

    let run_start = Instant::now();
    let deadline = run_start + cfg.duration;
    let mut nemesis = Nemesis::new(cfg.seed, cfg.faults.clone());
    let (events, mut refused) = nemesis.run(&mut cluster, run_start, deadline).await;
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
    stop.store(true, Ordering::Relaxed);
    register_task.await?;
    let tally = set_task.await??;
    let elapsed = run_start.elapsed();

    refused.extend(cluster.restore().await);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let converged = cluster.converge(Duration::from_secs(10)).await;
    let present = match leader {
        Ok(l) => read_set(&cluster.nodes[&l].addr, Duration::from_secs(30)).await,
        Err(e) => Err(e),
    };
    let history = recorder.finish();
    let checked = check_history(&history, cfg.checker_budget);
    // The operations of every key that failed, so the verdict can be re-checked offline
    // (`cograft-chaos check FILE`).
    let failing: Vec<&str> =
        checked.verdicts.iter().filter(|v| !v.passed()).map(|v| v.key.as_str()).collect();
    let history_file = if failing.is_empty() {
        None
    } else {
        let path = cfg.dir.join("history-failing-keys.json");
        let kept = History {
            entries: history.entries.iter().filter(|e| failing.contains(&e.key.as_str())).cloned().collect(),
        };
        std::fs::write(&path, serde_json::to_vec(&kept)?)?;
        Some(path.display().to_string())
    };
    let unclean = cluster.stop();

    let set = SetReport::new(&tally, present);
    let kills: Vec<Instant> =
        events.iter().filter(|e| e.kind == FaultKind::KillLeader).filter_map(|e| e.started).collect();
    let mut report = Report::new(
        &cfg,
        elapsed,
        count_by_kind(&events),
        events,
        &history,
        checked,
        set,
        refused,
        unclean,
        converged.map_err(|e| e.to_string()),
        failover_times(&kills, &tally.ack_times),
    );
    report.history_file = history_file;
    Ok(report)
}
