//! The two clusters `bench compare` runs, behind one face: find the leader, read the term (how
//! many elections there were), kill -9 a node and bring it back. And the failover figure: kill
//! -9 of the leader, then the time until a survivor acknowledges a write.

use std::time::{Duration, Instant};

use cograft_chaos::etcd::EtcdCluster;

use super::load::Target;
use crate::cluster::{self, LocalCluster};

/// How long a cluster may take to elect a leader or bring a node back.
const PATIENCE: Duration = Duration::from_secs(60);
/// Write probes start this often after the kill, each on its own, so the figure does not
/// depend on how long a failed attempt takes to fail.
const PROBE_EVERY: Duration = Duration::from_millis(20);
/// No failover takes longer than this; past it the run fails.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

/// A running three-node cluster this process started; node i serves `Target` node i.
pub enum Peer {
    Etcd(EtcdCluster, reqwest::Client),
    Cograft(LocalCluster),
}

impl Peer {
    pub fn etcd(cluster: EtcdCluster) -> anyhow::Result<Peer> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        Ok(Peer::Etcd(cluster, http))
    }

    /// The leader's index, once the live nodes agree on one.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        match self {
            Peer::Etcd(cluster, http) => cluster.leader(http, PATIENCE).await,
            Peer::Cograft(cluster) => {
                Ok(cluster::wait_for_leader(&cluster.addrs(), PATIENCE).await? as usize - 1)
            }
        }
    }

    /// The highest Raft term a live node reports: it grows by one (at least) per election.
    pub async fn term(&self) -> anyhow::Result<u64> {
        match self {
            Peer::Etcd(cluster, http) => cluster.max_term(http).await,
            Peer::Cograft(cluster) => cluster::max_term(&cluster.addrs()).await,
        }
    }

    pub fn kill9(&mut self, node: usize) -> anyhow::Result<()> {
        match self {
            Peer::Etcd(cluster, _) => cluster.kill9(node),
            Peer::Cograft(cluster) => cluster.kill9(node as u64 + 1)?,
        }
        Ok(())
    }

    /// Starts a killed node again and waits until it serves.
    pub async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        match self {
            Peer::Etcd(cluster, _) => cluster.restore_and_wait(PATIENCE).await,
            Peer::Cograft(cluster) => cluster.restart(node as u64 + 1).await,
        }
    }

    /// Stops the cluster (etcd members are killed: their data is scratch).
    pub fn stop(self) -> anyhow::Result<()> {
        match self {
            Peer::Etcd(cluster, _) => {
                drop(cluster);
                Ok(())
            }
            Peer::Cograft(cluster) => cluster.stop(Duration::from_secs(30)),
        }
    }
}

/// `kills` times: kill -9 of the leader, the milliseconds until a survivor acknowledged a
/// write, then the node restarted and the cluster settled before the next kill.
pub async fn failovers(peer: &mut Peer, target: &Target, kills: usize) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::new();
    for kill in 0..kills {
        // Let the cluster settle (a restarted node catches up) before the next kill.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = peer.leader().await?;
        peer.kill9(leader)?;
        took.push(next_ack(target, leader, kill).await?.as_secs_f64() * 1000.0);
        peer.restart(leader).await?;
    }
    Ok(took)
}

/// Starts a write probe through a survivor every [`PROBE_EVERY`] until one is acknowledged;
/// answers the time from the kill to that acknowledgement.
async fn next_ack(target: &Target, killed: usize, kill: usize) -> anyhow::Result<Duration> {
    let survivors: Vec<usize> = (0..target.nodes()).filter(|n| *n != killed).collect();
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut probes = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    let mut attempt = 0usize;
    loop {
        tokio::select! {
            Some(at) = rx.recv() => {
                probes.abort_all();
                return Ok(at);
            }
            _ = tick.tick() => {
                anyhow::ensure!(
                    started.elapsed() < FAILOVER_LIMIT,
                    "no write was acknowledged within {FAILOVER_LIMIT:?} of killing the leader"
                );
                let (target, tx) = (target.clone(), tx.clone());
                let node = survivors[attempt % survivors.len()];
                probes.spawn(async move {
                    if target.write(node, &format!("failover-{kill}-{attempt}")).await {
                        let _ = tx.send(started.elapsed());
                    }
                });
                attempt += 1;
            }
        }
    }
}
