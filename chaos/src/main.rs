//! cograft-chaos: runs the chaos suite against a local cograft cluster (`run`) or the same
//! register workload against etcd as a control (`etcd-control`), prints a summary, writes the
//! JSON report, and exits non-zero when a check fails.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cograft_chaos::linearizability::Budget;
use cograft_chaos::nemesis::FaultKind;
use cograft_chaos::run::{run, RunConfig};

#[derive(Parser)]
#[command(name = "cograft-chaos", about = "Fault injection and linearizability checking for cograft")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run workloads against a local cograft cluster while injecting faults.
    Run {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Seconds of faults and load.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Schedule seed (default: the current time); a failing run prints it.
        #[arg(long)]
        seed: Option<u64>,
        /// Comma-separated: kill, pause, partition, delay, drop, membership, kill-all, all.
        #[arg(long, default_value = "all", value_delimiter = ',')]
        faults: Vec<String>,
        /// The cograft binary to test.
        #[arg(long, default_value = "target/debug/cograft")]
        bin: PathBuf,
        /// Working directory (wiped first).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 12)]
        register_clients: usize,
        #[arg(long, default_value_t = 4)]
        keys: usize,
        #[arg(long, default_value_t = 4)]
        set_clients: usize,
        /// Client request timeout, in milliseconds.
        #[arg(long, default_value_t = 6000)]
        timeout_ms: u64,
        /// Where to write the JSON report.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Re-checks a recorded history (JSON `{entries: [...]}`) for linearizability.
    Check {
        file: PathBuf,
        /// Most (placed set, state) configurations per key.
        #[arg(long, default_value_t = 50_000_000)]
        max_states: u64,
    },
    /// Runs one node under strace with near-limit batches and snapshots, checks that every
    /// acknowledged write found what it depended on synced, then simulates the power cut the
    /// trace describes (never-synced files deleted) and checks every acknowledged write survived.
    Durability {
        #[arg(long, default_value = "target/debug/cograft")]
        bin: PathBuf,
        #[arg(long, default_value = "/usr/bin/strace")]
        strace: PathBuf,
        /// Working directory (wiped first).
        #[arg(long, default_value = "target/chaos/durability")]
        dir: PathBuf,
        /// Batches written before the clean restart.
        #[arg(long, default_value_t = 150)]
        batches: usize,
        /// Batches written after it, before the kill -9.
        #[arg(long, default_value_t = 75)]
        batches_after_restart: usize,
        #[arg(long, default_value_t = 6)]
        nodes_per_batch: usize,
        #[arg(long, default_value_t = 15 * 1024)]
        name_bytes: usize,
        #[arg(long, default_value_t = 20)]
        snapshot_every: usize,
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// The control: the same register workload and checker against a 3-member etcd under
    /// kill -9 and pause faults. Must PASS.
    EtcdControl {
        #[arg(long, default_value_t = 60)]
        duration: u64,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "/usr/bin/etcd")]
        etcd: PathBuf,
        #[arg(long, default_value = "target/chaos/etcd-control")]
        dir: PathBuf,
        #[arg(long, default_value_t = 12)]
        clients: usize,
        #[arg(long, default_value_t = 4)]
        keys: usize,
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

fn seed_or_now(seed: Option<u64>) -> u64 {
    seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1)
    })
}

fn write_report(path: Option<PathBuf>, report: &impl serde::Serialize) {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(report).expect("report serialises");
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("error: writing {}: {e}", path.display());
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match cli.command {
        Cmd::Run {
            nodes,
            duration,
            seed,
            faults,
            bin,
            dir,
            register_clients,
            keys,
            set_clients,
            timeout_ms,
            report,
        } => {
            let seed = seed_or_now(seed);
            let mut kinds = Vec::new();
            for name in &faults {
                match FaultKind::parse(name) {
                    Some(k) => kinds.extend(k),
                    None => {
                        eprintln!("error: unknown fault {name:?}; use kill, pause, partition, delay, drop, membership, kill-all or all");
                        std::process::exit(2);
                    }
                }
            }
            kinds.sort();
            kinds.dedup();
            let replay = format!(
                "cargo run -p cograft-chaos -- run --nodes {nodes} --duration {duration} --seed {seed} --faults {} --bin {}",
                faults.join(","),
                bin.display()
            );
            let cfg = RunConfig {
                dir: dir.unwrap_or_else(|| PathBuf::from(format!("target/chaos/run-{nodes}-{seed}"))),
                bin,
                nodes,
                duration: Duration::from_secs(duration),
                seed,
                faults: kinds,
                register_clients,
                keys,
                set_clients,
                request_timeout: Duration::from_millis(timeout_ms),
                checker_budget: Budget { max_states: 50_000_000, deadline: Duration::from_secs(60) },
                replay: replay.clone(),
            };
            match runtime.block_on(run(cfg)) {
                Ok(r) => {
                    println!("{}", r.summary());
                    write_report(report, &r);
                    i32::from(!r.valid)
                }
                Err(e) => {
                    eprintln!("error: the chaos run could not complete: {e:#}\nreplay: {replay}");
                    1
                }
            }
        }
        Cmd::Check { file, max_states } => {
            let history: cograft_chaos::history::History = match std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: reading {}: {e}", file.display());
                    std::process::exit(2);
                }
            };
            let report = cograft_chaos::linearizability::check_history(
                &history,
                Budget { max_states, deadline: Duration::from_secs(600) },
            );
            for v in &report.verdicts {
                println!("{}: {} ops, {} states: {:?}", v.key, v.ops_checked, v.states_explored, v.result);
            }
            i32::from(!report.valid)
        }
        Cmd::Durability {
            bin,
            strace,
            dir,
            batches,
            batches_after_restart,
            nodes_per_batch,
            name_bytes,
            snapshot_every,
            report,
        } => {
            let cfg = cograft_chaos::durability::AuditConfig {
                bin,
                strace,
                dir,
                batches: (batches, batches_after_restart),
                nodes_per_batch,
                name_bytes,
                snapshot_every: snapshot_every.max(1),
            };
            match runtime.block_on(cograft_chaos::durability::run(cfg)) {
                Ok(r) => {
                    println!("{}", r.summary());
                    for v in r.first_violations.iter().take(5) {
                        println!(
                            "  e.g. {} ({}) written at trace line {}, not synced before the answer to {:?} at line {}",
                            v.path.display(),
                            v.what,
                            v.written_at,
                            v.ack.request,
                            v.ack.answered_at
                        );
                    }
                    write_report(report, &r);
                    i32::from(!r.valid)
                }
                Err(e) => {
                    eprintln!("error: the durability audit could not complete: {e:#}");
                    1
                }
            }
        }
        Cmd::EtcdControl { duration, seed, etcd, dir, clients, keys, report } => {
            let seed = seed_or_now(seed);
            let run =
                cograft_chaos::etcd::control(&etcd, &dir, Duration::from_secs(duration), seed, clients, keys);
            match runtime.block_on(run) {
                Ok(r) => {
                    let bad: Vec<String> = r
                        .keys
                        .iter()
                        .filter(|v| !v.passed())
                        .map(|v| format!("{} {:?}", v.key, v.result))
                        .collect();
                    println!(
                        "etcd control: {:.0} s, seed {}, {} faults; {} offered, {} ok, {} failed, {} unknown; {}; verdict: {}",
                        r.duration_s,
                        r.seed,
                        r.faults.len(),
                        r.offered,
                        r.ok,
                        r.failed,
                        r.unknown,
                        if bad.is_empty() { "all keys linearizable".to_string() } else { bad.join(", ") },
                        if r.valid { "PASS" } else { "FAIL" }
                    );
                    write_report(report, &r);
                    i32::from(!r.valid)
                }
                Err(e) => {
                    eprintln!("error: the etcd control could not complete: {e:#}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
