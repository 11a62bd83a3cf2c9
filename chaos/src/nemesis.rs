//! The nemesis: on a seeded schedule, injects one fault at a time into a [`ChaosCluster`],
//! holds it, heals it, and logs what it did and when.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::ChaosCluster;
use crate::proxy::Fault;
use crate::rng::Rng;

/// Every fault the nemesis knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9 of the leader, restarted after the hold.
    KillLeader,
    /// kill -9 of a follower, restarted after the hold.
    KillFollower,
    /// SIGSTOP of the leader for the hold, then SIGCONT.
    PauseLeader,
    /// The leader cut off with a minority (alone), the rest in a majority.
    IsolateLeader,
    /// A random split into two groups.
    Partition,
    /// 75 ± 50 ms on every link, each direction.
    Delay,
    /// Each link aborts connections on 10% of its messages.
    Drop,
    /// Remove a voter, add it back as learner, promote it.
    Membership,
    /// kill -9 of every node at once, then all restarted.
    KillAll,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::Partition,
        FaultKind::Delay,
        FaultKind::Drop,
        FaultKind::Membership,
        FaultKind::KillAll,
    ];

    pub fn parse(name: &str) -> Option<Vec<FaultKind>> {
        Some(match name {
            "all" => Self::ALL.to_vec(),
            "kill" => vec![FaultKind::KillLeader, FaultKind::KillFollower],
            "pause" => vec![FaultKind::PauseLeader],
            "partition" => vec![FaultKind::IsolateLeader, FaultKind::Partition],
            "delay" => vec![FaultKind::Delay],
            "drop" => vec![FaultKind::Drop],
            "membership" => vec![FaultKind::Membership],
            "kill-all" => vec![FaultKind::KillAll],
            _ => return None,
        })
    }
}

/// One injected fault, as the report shows it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    pub kind: FaultKind,
    pub target: Vec<u64>,
    /// Milliseconds since the run started.
    pub start_ms: u64,
    pub end_ms: u64,
    pub note: String,
    #[serde(skip)]
    pub started: Option<Instant>,
}

pub struct Nemesis {
    rng: Rng,
    kinds: Vec<FaultKind>,
    pub quiet: (u64, u64),
    pub hold: (u64, u64),
}

impl Nemesis {
    pub fn new(seed: u64, kinds: Vec<FaultKind>) -> Nemesis {
        Nemesis { rng: Rng::new(seed ^ 0x6e6d), kinds, quiet: (1500, 3000), hold: (2000, 5000) }
    }

    /// Injects faults until `deadline`; answers what it did and the nodes that refused to restart.
    pub async fn run(
        &mut self,
        cluster: &mut ChaosCluster,
        run_start: Instant,
        deadline: Instant,
    ) -> (Vec<FaultEvent>, Vec<String>) {
        let mut events = Vec::new();
        let mut refused = Vec::new();
        while Instant::now() + Duration::from_millis(self.hold.1 + self.quiet.1) < deadline
            && !self.kinds.is_empty()
        {
            tokio::time::sleep(self.rng.millis(self.quiet.0, self.quiet.1)).await;
            let kind = self.kinds[self.rng.below(self.kinds.len() as u64) as usize];
            let hold = self.rng.millis(self.hold.0, self.hold.1);
            let started = Instant::now();
            let (target, note) = self.inject(cluster, kind).await;
            tokio::time::sleep(hold).await;
            refused.extend(cluster.restore().await);
            let since = |t: Instant| t.duration_since(run_start).as_millis() as u64;
            events.push(FaultEvent {
                kind,
                target,
                start_ms: since(started),
                end_ms: since(Instant::now()),
                note,
                started: Some(started),
            });
        }
        (events, refused)
    }

    async fn inject(&mut self, c: &mut ChaosCluster, kind: FaultKind) -> (Vec<u64>, String) {
        let ids = c.ids();
        let leader = c.leader().await;
        let pick = |rng: &mut Rng, from: &[u64]| from[rng.below(from.len() as u64) as usize];
        match kind {
            FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::IsolateLeader if leader.is_none() => {
                (vec![], "skipped: no leader known".into())
            }
            FaultKind::KillLeader => {
                let l = leader.unwrap_or_default();
                c.kill9(l);
                (vec![l], "kill -9".into())
            }
            FaultKind::KillFollower => {
                let followers: Vec<u64> = ids.iter().copied().filter(|id| Some(*id) != leader).collect();
                let f = pick(&mut self.rng, &followers);
                c.kill9(f);
                (vec![f], "kill -9".into())
            }
            FaultKind::PauseLeader => {
                let l = leader.unwrap_or_default();
                c.pause(l, true);
                (vec![l], "SIGSTOP".into())
            }
            FaultKind::IsolateLeader => {
                let l = leader.unwrap_or_default();
                let rest: Vec<u64> = ids.iter().copied().filter(|id| *id != l).collect();
                c.partition(&[vec![l], rest]);
                (vec![l], "leader alone in a minority".into())
            }
            FaultKind::Partition => {
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, self.rng.below(i as u64 + 1) as usize);
                }
                let cut = 1 + self.rng.below(shuffled.len() as u64 - 1) as usize;
                let (a, b) = shuffled.split_at(cut);
                c.partition(&[a.to_vec(), b.to_vec()]);
                (a.to_vec(), format!("{a:?} | {b:?}"))
            }
            FaultKind::Delay => {
                c.fault_all(Fault::Delay {
                    mean: Duration::from_millis(75),
                    jitter: Duration::from_millis(50),
                });
                (ids, "75±50 ms".into())
            }
            FaultKind::Drop => {
                c.fault_all(Fault::Drop { probability: 0.1 });
                (ids, "10% of messages abort their connection".into())
            }
            FaultKind::Membership => {
                let f = pick(
                    &mut self.rng,
                    &ids.iter().copied().filter(|id| Some(*id) != leader).collect::<Vec<_>>(),
                );
                match c.cycle_membership(f).await {
                    Ok(()) => (vec![f], "removed, re-added as learner, promoted".into()),
                    Err(e) => (vec![f], format!("membership change did not complete: {e}")),
                }
            }
            FaultKind::KillAll => {
                for id in &ids {
                    c.kill9(*id);
                }
                (ids, "kill -9 of every node".into())
            }
        }
    }
}

/// Faults injected, by kind.
pub fn count_by_kind(events: &[FaultEvent]) -> BTreeMap<FaultKind, u64> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e.kind).or_insert(0) += 1;
    }
    counts
}
