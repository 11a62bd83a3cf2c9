//! Spreading's health check. Each run (1) sends a probe spread over a small built-in graph with
//! a known answer to the spreading pool (so a stuck or saturated pool, a slow walk or a wrong
//! answer shows), and (2) watches the live index follow the state machine: an index that stays
//! behind the applied index without moving for `index_stall` is broken (its thread died or
//! hangs). A failure or a probe slower than `probe_max` is Degraded; failures in a row are
//! Unhealthy. It gates no probe (`Probe::Report`): reads and writes work without spreading.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Addr, Message};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::activation::{spread, Outcome, Scratch, Spread};
use super::actor::SpreadingActor;
use super::follow::SharedIndex;
use super::index::SpaceIndex;
use super::params::Parameters;
use crate::health::{Check, Health, Probe};
use crate::model::{Atom, AtomId, AtomKind, AttentionValue, TruthValue};
use crate::typ::RaftMetrics;

/// Failures in a row after which spreading is Unhealthy rather than Degraded.
pub const FAILURES_UNHEALTHY: u32 = 3;

/// How long the pool may take to answer the probe before it counts as stuck.
const POOL_ANSWER: Duration = Duration::from_secs(1);

/// Runs the probe spread on a pool thread and checks its answer.
pub struct ProbeSpread;

impl Message for ProbeSpread {
    type Result = Result<(), String>;
}

/// The built-in graph's nodes, by id: a cat that is a pet, like a dog, eats a mouse; the mouse
/// lives in a house.
const NAMES: [&str; 5] = ["cat", "dog", "pet", "mouse", "house"];

/// What a spread from the cat must rank, best first: the dog (the strongest link), the pet, the
/// mouse (the weakest of the cat's links), and the house two hops out, through the mouse.
const EXPECTED: [AtomId; 4] = [2, 3, 4, 5];

/// The built-in graph: nodes 1..=5, then its links.
pub fn probe_graph() -> SpaceIndex {
    let mut atoms: Vec<Atom> = NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            atom(i as AtomId + 1, "ConceptNode", AtomKind::Node { name: (*name).into() }, 1.0, 1.0)
        })
        .collect();
    let links: [(&str, [AtomId; 2], f64, f64); 5] = [
        ("SimilarityLink", [1, 2], 0.9, 0.9),
        ("InheritanceLink", [1, 3], 0.8, 0.9),
        ("InheritanceLink", [2, 3], 0.8, 0.9),
        ("EvaluationLink", [1, 4], 0.6, 0.8),
        ("MemberLink", [4, 5], 0.7, 0.7),
    ];
    for (i, (ty, members, strength, confidence)) in links.into_iter().enumerate() {
        let kind = AtomKind::Link { outgoing: members.to_vec() };
        atoms.push(atom((NAMES.len() + i) as AtomId + 1, ty, kind, strength, confidence));
    }
    let mut index = SpaceIndex::building();
    for a in &atoms {
        index.push(a).expect("the built-in graph is well formed");
    }
    index.seal();
    index
}

fn atom(id: AtomId, ty: &str, kind: AtomKind, strength: f64, confidence: f64) -> Atom {
    Atom {
        id,
        space: "probe".into(),
        atom_type: ty.into(),
        kind,
        tv: TruthValue { strength, confidence },
        av: AttentionValue::default(),
        created_ms: 0,
        updated_ms: 0,
    }
}

/// Spreads from the cat with the default parameters (no deadline: the caller times it).
pub fn run_probe(graph: &SpaceIndex, scratch: &mut Scratch) -> Outcome {
    let cat = graph.dense_of(1).expect("the built-in graph has its cat");
    let walk = Spread::new(vec![(cat, 1.0)], &Parameters::default(), None, None);
    spread(graph, &walk, scratch)
}

/// The probe's answer against the known one.
pub fn verify(outcome: &Outcome) -> Result<(), String> {
    let nodes: Vec<AtomId> =
        outcome.hits.iter().map(|h| h.id).filter(|id| *id as usize <= NAMES.len()).collect();
    if nodes != EXPECTED {
        return Err(format!("the probe spread ranked nodes {nodes:?}, expected {EXPECTED:?}"));
    }
    let ordered = outcome.hits.windows(2).all(|w| w[0].activation >= w[1].activation);
    let sane = outcome.hits.iter().all(|h| h.activation.is_finite() && h.activation > 0.0);
    if !ordered || !sane {
        return Err("the probe spread's activations are not positive, finite and descending".into());
    }
    Ok(())
}

/// The bounds a probe is judged by.
#[derive(Clone, Copy, Debug)]
pub struct ProbeLimits {
    /// A probe spread slower than this is Degraded.
    pub probe_max: Duration,
    /// An index behind the applied index and not moving for this long is broken.
    pub index_stall: Duration,
}

/// The health check spreading registers.
pub struct SpreadingHealth {
    pool: Addr<SpreadingActor>,
    index: Arc<SharedIndex>,
    raft: watch::Receiver<RaftMetrics>,
    limits: ProbeLimits,
    state: Mutex<Watch>,
}

/// What the check remembers between runs.
struct Watch {
    started: Instant,
    /// The index's applied index when it was last seen behind, and since when it is there.
    behind: Option<(u64, Instant)>,
    failures: u32,
}

impl SpreadingHealth {
    pub fn new(
        pool: Addr<SpreadingActor>,
        index: Arc<SharedIndex>,
        raft: watch::Receiver<RaftMetrics>,
        limits: ProbeLimits,
    ) -> SpreadingHealth {
        let state = Watch { started: Instant::now(), behind: None, failures: 0 };
        SpreadingHealth { pool, index, raft, limits, state: Mutex::new(state) }
    }

    /// How long the pool took to answer the probe, queueing included (a saturated pool is slow
    /// spreading too).
    async fn probe_verdict(&self) -> Result<Duration, String> {
        let started = Instant::now();
        match tokio::time::timeout(POOL_ANSWER, self.pool.send(ProbeSpread)).await {
            Err(_) => Err(format!("the spreading pool did not answer a probe within {POOL_ANSWER:?}")),
            Ok(Err(e)) => Err(format!("the spreading pool is gone: {e}")),
            Ok(Ok(answer)) => answer.map(|()| started.elapsed()),
        }
    }
}

impl Watch {
    /// The live index (`at`, `None` while the first build runs) against the applied index.
    fn follow(
        &mut self,
        applied: u64,
        at: Option<u64>,
        now: Instant,
        stall: Duration,
    ) -> Result<String, String> {
        match at {
            None if now.duration_since(self.started) > stall => Err(format!(
                "no spreading index {:.0} s after the start (its build fails or hangs)",
                now.duration_since(self.started).as_secs_f64()
            )),
            None => Ok("the index is being built".into()),
            Some(at) if at >= applied => {
                self.behind = None;
                Ok(format!("index at applied index {at}"))
            }
            Some(at) => {
                let since = match self.behind {
                    Some((seen, since)) if seen == at => since,
                    _ => {
                        self.behind = Some((at, now));
                        now
                    }
                };
                let stuck = now.duration_since(since);
                if stuck > stall {
                    Err(format!(
                        "the index has stayed at applied index {at} for {:.0} s while the node applied up to \
                         {applied}: it no longer follows the state machine",
                        stuck.as_secs_f64()
                    ))
                } else {
                    Ok(format!("index at {at}, following applied index {applied}"))
                }
            }
        }
    }

    /// The verdict from the probe spread's answer and the index's.
    fn judge(
        &mut self,
        probe: Result<Duration, String>,
        follow: Result<String, String>,
        max: Duration,
    ) -> Health {
        let problems: Vec<String> =
            [probe.as_ref().err().cloned(), follow.as_ref().err().cloned()].into_iter().flatten().collect();
        if !problems.is_empty() {
            self.failures += 1;
            let why = format!("{} ({} failed runs in a row)", problems.join("; "), self.failures);
            return if self.failures >= FAILURES_UNHEALTHY {
                Health::Unhealthy(why)
            } else {
                Health::Degraded(why)
            };
        }
        self.failures = 0;
        let took = probe.unwrap_or_default();
        let follow = follow.unwrap_or_default();
        let ms = took.as_secs_f64() * 1e3;
        if took > max {
            Health::Degraded(format!("probe spread took {ms:.1} ms (limit {} ms); {follow}", max.as_millis()))
        } else {
            Health::Healthy(format!("probe spread {ms:.2} ms; {follow}"))
        }
    }
}

impl Check for SpreadingHealth {
    fn name(&self) -> &str {
        "spreading"
    }
    fn probe(&self) -> Probe {
        Probe::Report
    }
    fn run(&self) -> BoxFuture<'_, Health> {
        Box::pin(async move {
            let probe = self.probe_verdict().await;
            let applied = self.raft.borrow().last_applied.map(|l| l.index).unwrap_or(0);
            let at = self.index.read().as_ref().map(|g| g.at());
            let limits = self.limits;
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let follow = state.follow(applied, at, Instant::now(), limits.index_stall);
            state.judge(probe, follow, limits.probe_max)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_graph_gives_the_known_answer() {
        let graph = probe_graph();
        let outcome = run_probe(&graph, &mut Scratch::default());
        verify(&outcome).unwrap();
    }

    #[test]
    fn a_wrong_answer_is_named() {
        let graph = probe_graph();
        let mut outcome = run_probe(&graph, &mut Scratch::default());
        outcome.hits.swap(0, 2);
        let err = verify(&outcome).unwrap_err();
        assert!(err.contains("ranked") || err.contains("descending"), "{err}");
    }

    const STALL: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_millis(50);

    fn watch(started: Instant) -> Watch {
        Watch { started, behind: None, failures: 0 }
    }

    #[test]
    fn an_index_that_lags_but_moves_is_healthy_and_one_that_stops_is_broken_after_the_stall() {
        let t0 = Instant::now();
        let mut w = watch(t0);
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(w.follow(10, Some(10), s(1), STALL).is_ok());
        // Behind but moving: every run sees a newer index.
        for (i, at) in [11u64, 15, 19, 23].into_iter().enumerate() {
            assert!(w.follow(at + 5, Some(at), s(2 + 8 * i as u64), STALL).is_ok());
        }
        // Stuck at 23 since second 26 (when it was last seen moving).
        assert!(w.follow(40, Some(23), s(35), STALL).is_ok());
        let err = w.follow(41, Some(23), s(37), STALL).unwrap_err();
        assert!(err.contains("stayed at applied index 23 for 11 s"), "{err}");
        // Caught up again: healthy at once.
        assert!(w.follow(41, Some(41), s(38), STALL).is_ok());
    }

    #[test]
    fn a_build_that_never_finishes_is_broken_after_the_stall() {
        let t0 = Instant::now();
        let mut w = watch(t0);
        assert!(w.follow(5, None, t0 + Duration::from_secs(9), STALL).is_ok());
        assert!(w
            .follow(5, None, t0 + Duration::from_secs(11), STALL)
            .unwrap_err()
            .contains("no spreading index"));
    }

    #[test]
    fn failures_degrade_then_make_unhealthy_slowness_only_degrades_and_success_resets() {
        let mut w = watch(Instant::now());
        let fast = || Ok(Duration::from_millis(1));
        let fine = || Ok::<_, String>("index at 3".to_string());
        assert_eq!(w.judge(fast(), fine(), MAX).level(), 0);
        assert_eq!(w.judge(Ok(Duration::from_millis(80)), fine(), MAX).level(), 1);
        assert_eq!(
            w.judge(Ok(Duration::from_millis(80)), fine(), MAX).level(),
            1,
            "slowness never escalates"
        );
        for run in 1..=4 {
            let h = w.judge(fast(), Err("stuck".into()), MAX);
            let want = if run < FAILURES_UNHEALTHY { 1 } else { 2 };
            assert_eq!(h.level(), want, "run {run}: {h:?}");
            assert!(h.detail().contains(&format!("{run} failed runs in a row")), "{h:?}");
        }
        assert_eq!(w.judge(fast(), fine(), MAX).level(), 0);
        assert_eq!(w.judge(Err("no answer".into()), fine(), MAX).level(), 1, "the count starts over");
    }
}
