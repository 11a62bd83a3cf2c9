//! `cograft bench compare`: the same closed-loop load against a fresh three-member etcd 3.4
//! (Debian's `etcd-server`) and then a fresh three-node cograft, in one run on this machine:
//! writes with 1 and N clients (the long N-client run also counts the elections it saw, which
//! under a steady load are all spurious), linearizable reads on the leader and on a follower,
//! and failover (kill -9 of the leader to the next acknowledged write, median of several).
//! Both clusters run throughout and each phase measures one right after the other, in
//! alternating order. Prints both and the ratio, and writes the figures as JSON next to the
//! clusters' data.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cograft_chaos::etcd::EtcdCluster;
use serde::Serialize;

use crate::cluster::{self, LocalCluster};
use failover::{failovers, Peer};
use load::{closed_loop, preload, Figures, Op, System, Target};

mod failover;
mod load;

pub struct CompareArgs {
    pub dir: PathBuf,
    pub base_port: u16,
    /// The etcd binary (a name is looked up in PATH).
    pub etcd: PathBuf,
    /// Length of the 1-client write and the read phases.
    pub seconds: u64,
    /// Length of the N-client write phase, the one elections are counted over.
    pub load_seconds: u64,
    pub clients: usize,
    /// Keys preloaded for the read phases.
    pub keys: usize,
    pub kills: usize,
}

/// Everything measured on one system.
#[derive(Debug, Default, Serialize)]
struct Measured {
    writes_one_client: Figures,
    writes_many_clients: Figures,
    /// Terms the cluster went through during the N-client write phase: elections, none of
    /// which a steady load should cause.
    elections_during_load: u64,
    reads_leader: Figures,
    reads_follower: Figures,
    failover_ms: Vec<f64>,
    failover_median_ms: f64,
}

/// One system under test: its cluster, its endpoints and what was measured on it.
struct Side {
    peer: Peer,
    target: Target,
    measured: Measured,
}

/// The measurements, each run on both systems back to back.
#[derive(Clone, Copy, Debug)]
enum Phase {
    WritesOneClient,
    WritesManyClients,
    Preload,
    ReadsLeader,
    ReadsFollower,
    Failover,
}

const PHASES: [Phase; 6] = [
    Phase::WritesOneClient,
    Phase::WritesManyClients,
    Phase::Preload,
    Phase::ReadsLeader,
    Phase::ReadsFollower,
    Phase::Failover,
];

pub async fn run(args: CompareArgs) -> anyhow::Result<()> {
    let version = std::process::Command::new(&args.etcd).arg("--version").output().with_context(|| {
        format!("cannot run {}: install Debian's etcd-server (make bench-etcd does)", args.etcd.display())
    })?;
    let etcd_version =
        String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or("etcd ?").to_string();
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir).with_context(|| format!("clearing {}", args.dir.display()))?;
    }

    // Both clusters run for the whole comparison (an idle one costs its heartbeats only), so
    // each phase measures the two systems minutes apart at most.
    println!("{etcd_version} and cograft {}: 3 nodes each on loopback", env!("CARGO_PKG_VERSION"));
    let etcd_cluster = EtcdCluster::start(&args.etcd, &args.dir.join("etcd"), 3).await?;
    let etcd_target = Target::new(System::Etcd, etcd_cluster.clients())?;
    let mut cograft_cluster = LocalCluster::default();
    cluster::start(&mut cograft_cluster, 3, args.base_port, &args.dir.join("cograft")).await?;
    let bases = cograft_cluster.addrs().iter().map(|a| format!("http://{a}")).collect();
    let cograft_target = Target::new(System::Cograft, bases)?;
    let mut sides = [
        Side { peer: Peer::etcd(etcd_cluster)?, target: etcd_target, measured: Measured::default() },
        Side { peer: Peer::Cograft(cograft_cluster), target: cograft_target, measured: Measured::default() },
    ];
    for (n, phase) in PHASES.into_iter().enumerate() {
        // ABBA: whichever system a slowing machine would favour by going first alternates.
        let order = if n % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            measure(&mut sides[i], phase, &args).await?;
        }
    }
    let [etcd, cograft] = sides;
    etcd.peer.stop()?;
    cograft.peer.stop()?;

    let report = serde_json::json!({
        "etcd_version": etcd_version,
        "clients": args.clients,
        "etcd": etcd.measured,
        "cograft": cograft.measured,
    });
    let file = args.dir.join("compare.json");
    std::fs::write(&file, serde_json::to_string_pretty(&report)?)?;
    print_table(&etcd.measured, &cograft.measured, &args);
    println!("\nfigures as JSON in {}", file.display());
    Ok(())
}

/// Runs one phase on one system and keeps its figures.
async fn measure(side: &mut Side, phase: Phase, args: &CompareArgs) -> anyhow::Result<()> {
    let (short, long) = (Duration::from_secs(args.seconds), Duration::from_secs(args.load_seconds));
    let (peer, target, m) = (&mut side.peer, &side.target, &mut side.measured);
    let leader = peer.leader().await?;
    let name = format!("{:?}", target.system).to_lowercase();
    match phase {
        Phase::WritesOneClient => {
            m.writes_one_client = closed_loop(target, leader, 1, short, Op::Write { prefix: "one" }).await;
            println!("  {name}: 1 client writes {:.0}/s", m.writes_one_client.per_sec);
        }
        Phase::WritesManyClients => {
            let term_before = peer.term().await?;
            let write = Op::Write { prefix: "many" };
            m.writes_many_clients = closed_loop(target, leader, args.clients, long, write).await;
            m.elections_during_load = peer.term().await? - term_before;
            println!(
                "  {name}: {} client writes {:.0}/s, {} elections",
                args.clients, m.writes_many_clients.per_sec, m.elections_during_load
            );
        }
        Phase::Preload => preload(target, leader, args.keys, args.clients).await?,
        Phase::ReadsLeader => {
            m.reads_leader =
                closed_loop(target, leader, args.clients, short, Op::Read { keys: args.keys }).await;
            println!("  {name}: reads on the leader {:.0}/s", m.reads_leader.per_sec);
        }
        Phase::ReadsFollower => {
            let follower = (leader + 1) % target.nodes();
            let reads = Op::Read { keys: args.keys };
            m.reads_follower = closed_loop(target, follower, args.clients, short, reads).await;
            println!("  {name}: reads on a follower {:.0}/s", m.reads_follower.per_sec);
        }
        Phase::Failover => {
            m.failover_ms = failovers(peer, target, args.kills).await?;
            let mut sorted = m.failover_ms.clone();
            sorted.sort_by(f64::total_cmp);
            m.failover_median_ms = crate::bench::percentile(&sorted, 0.5);
            println!("  {name}: failover {:.0?} ms", m.failover_ms);
        }
    }
    Ok(())
}

fn print_table(etcd: &Measured, cograft: &Measured, args: &CompareArgs) {
    let row = |what: String, e: String, c: String, ratio: String| {
        println!("{what:<44} {e:>16} {c:>16} {ratio:>12}")
    };
    let ratio = |c: f64, e: f64| format!("{:.2}x", c / e);
    let latency = |f: &Figures| format!("{:.2} / {:.2}", f.p50_ms, f.p99_ms);
    println!();
    row("".into(), "etcd".into(), "cograft".into(), "cograft/etcd".into());
    let throughput = |what: String, e: &Figures, c: &Figures| {
        row(what, format!("{:.0}", e.per_sec), format!("{:.0}", c.per_sec), ratio(c.per_sec, e.per_sec));
        row("  p50 / p99 ms".into(), latency(e), latency(c), ratio(c.p50_ms, e.p50_ms) + " p50");
        if e.errors + c.errors > 0 {
            row("  errors".into(), e.errors.to_string(), c.errors.to_string(), String::new());
        }
    };
    throughput("writes/s, 1 client".into(), &etcd.writes_one_client, &cograft.writes_one_client);
    throughput(
        format!("writes/s, {} clients, {} s", args.clients, args.load_seconds),
        &etcd.writes_many_clients,
        &cograft.writes_many_clients,
    );
    row(
        "  elections during that run".into(),
        etcd.elections_during_load.to_string(),
        cograft.elections_during_load.to_string(),
        String::new(),
    );
    throughput(
        format!("linearizable reads/s, {} clients, leader", args.clients),
        &etcd.reads_leader,
        &cograft.reads_leader,
    );
    throughput(
        format!("linearizable reads/s, {} clients, follower", args.clients),
        &etcd.reads_follower,
        &cograft.reads_follower,
    );
    row(
        format!("kill -9 leader -> next ack, ms (median of {})", args.kills),
        format!("{:.0}", etcd.failover_median_ms),
        format!("{:.0}", cograft.failover_median_ms),
        ratio(cograft.failover_median_ms, etcd.failover_median_ms),
    );
}
