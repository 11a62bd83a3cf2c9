//! The run's JSON report and its human summary: seed, duration, faults by kind, operations
//! offered / ok / failed / unknown, acknowledged writes lost, verdict per key, nodes that
//! refused to restart, convergence, and leader-kill to next-acknowledged-write times.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::History;
use crate::linearizability;
use crate::nemesis::{FaultEvent, FaultKind};
use crate::run::RunConfig;
use crate::workload::SetTally;

#[derive(Debug, Serialize)]
pub struct SetReport {
    pub offered: u64,
    pub acknowledged: usize,
    pub failed: u64,
    pub unknown: usize,
    /// Acknowledged adds missing after healing: must be 0.
    pub lost: usize,
    pub lost_examples: Vec<String>,
    /// Elements present that no client ever tried to add: must be 0.
    pub unexpected: usize,
    /// Unknown adds that turned out to have applied.
    pub unknown_present: usize,
    pub read_error: Option<String>,
}

impl SetReport {
    pub fn new(tally: &SetTally, present: anyhow::Result<BTreeSet<String>>) -> SetReport {
        let (present, read_error) = match present {
            Ok(p) => (p, None),
            Err(e) => (BTreeSet::new(), Some(e.to_string())),
        };
        let lost: Vec<String> = tally.acked.difference(&present).cloned().collect();
        let unexpected =
            present.iter().filter(|p| !tally.acked.contains(*p) && !tally.unknown.contains(*p)).count();
        SetReport {
            offered: tally.offered,
            acknowledged: tally.acked.len(),
            failed: tally.failed,
            unknown: tally.unknown.len(),
            lost: lost.len(),
            lost_examples: lost.into_iter().take(10).collect(),
            unexpected,
            unknown_present: tally.unknown.intersection(&present).count(),
            read_error,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Failover {
    pub samples: Vec<u64>,
    pub median_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

/// For each leader kill, the time to the first acknowledged write invoked after it.
pub fn failover_times(kills: &[Instant], acks: &[(Instant, Instant)]) -> Failover {
    let mut samples: Vec<u64> = kills
        .iter()
        .filter_map(|k| {
            acks.iter().filter(|(invoked, _)| invoked >= k).map(|(_, done)| done.duration_since(*k)).min()
        })
        .map(|d| d.as_millis() as u64)
        .collect();
    samples.sort_unstable();
    Failover { median_ms: samples.get(samples.len() / 2).copied(), max_ms: samples.last().copied(), samples }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub seed: u64,
    pub nodes: u64,
    pub duration_s: f64,
    pub faults_by_kind: BTreeMap<FaultKind, u64>,
    pub faults: Vec<FaultEvent>,
    pub register: RegisterReport,
    pub set: SetReport,
    pub refused_to_start: Vec<String>,
    pub unclean_shutdowns: Vec<u64>,
    pub converged: Result<u64, String>,
    pub leader_kill_to_next_ack: Failover,
    pub offered_ops_per_sec: f64,
    pub valid: bool,
    pub replay: String,
    /// Where the operations of failing keys were written, if any failed.
    pub history_file: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RegisterReport {
    pub offered: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub keys: Vec<linearizability::Verdict>,
    pub linearizable: bool,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &RunConfig,
        elapsed: Duration,
        faults_by_kind: BTreeMap<FaultKind, u64>,
        faults: Vec<FaultEvent>,
        history: &History,
        checked: linearizability::Report,
        set: SetReport,
        refused_to_start: Vec<String>,
        unclean_shutdowns: Vec<u64>,
        converged: Result<Duration, String>,
        leader_kill_to_next_ack: Failover,
    ) -> Report {
        let counts = history.summary();
        let register = RegisterReport {
            offered: counts.offered,
            ok: counts.ok,
            failed: counts.fail,
            unknown: counts.unknown,
            linearizable: checked.valid,
            keys: checked.verdicts,
        };
        let valid = register.linearizable
            && set.lost == 0
            && set.unexpected == 0
            && set.read_error.is_none()
            && refused_to_start.is_empty()
            && converged.is_ok();
        Report {
            seed: cfg.seed,
            nodes: cfg.nodes,
            duration_s: elapsed.as_secs_f64(),
            faults_by_kind,
            faults,
            offered_ops_per_sec: (register.offered + set.offered) as f64 / elapsed.as_secs_f64().max(1e-9),
            register,
            set,
            refused_to_start,
            unclean_shutdowns,
            converged: converged.map(|d| d.as_millis() as u64),
            leader_kill_to_next_ack,
            valid,
            replay: cfg.replay.clone(),
            history_file: None,
        }
    }

    /// A few lines for a person.
    pub fn summary(&self) -> String {
        let faults: Vec<String> = self.faults_by_kind.iter().map(|(k, n)| format!("{k:?}x{n}")).collect();
        let failed_keys: Vec<String> = self
            .register
            .keys
            .iter()
            .filter(|v| !v.passed())
            .map(|v| format!("{} ({:?})", v.key, v.result))
            .collect();
        let mut out = format!(
            "chaos run: {} nodes, {:.0} s, seed {}\n  faults: {}\n  register: {} offered ({:.0} ops/s with the set), {} ok, {} failed, {} unknown; {} keys, {}\n  set: {} offered, {} acknowledged, {} unknown ({} applied), acknowledged writes lost: {}\n  nodes that refused to restart: {}; converged: {}\n  leader kill -> next acknowledged write: median {:?} ms, max {:?} ms ({} kills)\n  verdict: {}",
            self.nodes,
            self.duration_s,
            self.seed,
            if faults.is_empty() { "none".into() } else { faults.join(", ") },
            self.register.offered,
            self.offered_ops_per_sec,
            self.register.ok,
            self.register.failed,
            self.register.unknown,
            self.register.keys.len(),
            if failed_keys.is_empty() { "all linearizable".to_string() } else { format!("NOT linearizable: {}", failed_keys.join(", ")) },
            self.set.offered,
            self.set.acknowledged,
            self.set.unknown,
            self.set.unknown_present,
            self.set.lost,
            self.refused_to_start.len(),
            match &self.converged { Ok(ms) => format!("yes, in {ms} ms"), Err(e) => format!("NO: {e}") },
            self.leader_kill_to_next_ack.median_ms,
            self.leader_kill_to_next_ack.max_ms,
            self.leader_kill_to_next_ack.samples.len(),
            if self.valid { "PASS" } else { "FAIL" },
        );
        if !self.valid {
            out.push_str(&format!("\n  replay: {}", self.replay));
        }
        if let Some(file) = &self.history_file {
            out.push_str(&format!("\n  failing keys' operations: {file} (cograft-chaos check {file})"));
        }
        out
    }
}
