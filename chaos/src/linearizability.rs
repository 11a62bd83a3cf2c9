//! The linearizability checker for the register workload: Wing & Gong's search with Lowe's
//! memoisation, run on each key separately (registers are independent). Owns how a history is
//! read, the per-key [`Budget`], the verdicts and the explanations of failures; the search itself
//! lives in `search`.
//!
//! How a key's history is read (the register starts absent, `None`):
//! - A `Read` that returned `v` must take effect while the register holds `v`; `Write(v)` sets it;
//!   a `Cas` that returned `Ok` must take effect while the register holds `expect`, and sets `new`.
//! - `Fail` operations took no effect and are dropped. A failed CAS is not taken as evidence of
//!   what the register held: the check stays sound (no false alarms) and loses only the power to
//!   catch a CAS refused although its expectation held.
//! - `Unknown` reads carry no information and are dropped. `Unknown` writes and CAS may take effect
//!   at any time after their invocation, or never: they have a call but no return, so they never
//!   force the search back, and once every operation with a return is placed the search succeeds.
//! - Two rewrites spare the search from guessing about unknowns; both keep exactly the same set
//!   of valid orders. (1) An unknown write or CAS whose value no read and no CAS expectation
//!   mentions is dropped: in a valid order only writes can follow it, so leaving it out keeps the
//!   order valid. (2) If an unknown write or CAS is the only writer of its value and an operation
//!   that returned saw that value, it certainly took effect, before that return: it gets a return
//!   there. The workload writes unique values, so few unknowns stay optional; an optional one
//!   that is placed too early would otherwise double the search until the point that refutes it.
//! - The search also drops every order that overwrites a value some pending operation with a
//!   return must still see while nothing pending can write it back (such an order can never
//!   finish); this keeps the search near-linear on valid histories (see `search`).
//! - At equal timestamps calls come before returns: the recorder stamps a call before the request
//!   leaves and a return after the answer arrives, but two equal stamps cannot tell which came
//!   first, so such operations are treated as concurrent. This can only admit more orders, so a
//!   reported violation is always real.
//! - A search that exhausts its [`Budget`] ends in [`CheckResult::Timeout`], which is a failure.

mod memo;
mod search;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{Entry, History, Op, Outcome};
use search::{linearize, Call, Frontier, Search, State, Step};

/// How much work the search may do on one key: distinct (placed set, state) configurations
/// tried, and wall time. A key that runs out is reported as [`CheckResult::Timeout`] and counts
/// as a failure, never a pass. Memory grows with the states explored (roughly 100 bytes each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub max_states: u64,
    pub deadline: Duration,
}

/// What the search concluded about one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum CheckResult {
    Linearizable,
    /// No order of the operations explains what the clients saw.
    NotLinearizable {
        explanation: String,
    },
    /// The budget ran out before an answer: unproven, so the caller must count it as a FAILURE.
    Timeout {
        explanation: String,
    },
}

/// The verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub key: String,
    pub result: CheckResult,
    /// Operations that entered the search (after dropping those that carry no information).
    pub ops_checked: usize,
    /// (placed set, state) configurations the search tried.
    pub states_explored: u64,
}

impl Verdict {
    /// True only for a key proven linearizable; a timeout is not a pass.
    pub fn passed(&self) -> bool {
        self.result == CheckResult::Linearizable
    }
}

/// The verdicts on every key of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    /// Every key passed.
    pub valid: bool,
}

/// Checks every key of `history` on its own, each within `budget`.
pub fn check_history(history: &History, budget: Budget) -> Report {
    let verdicts: Vec<Verdict> =
        history.by_key().into_iter().map(|(key, entries)| check_key(&key, &entries, budget)).collect();
    let valid = verdicts.iter().all(Verdict::passed);
    Report { verdicts, valid }
}

/// Checks the operations of one key (entries of other keys must not be mixed in).
pub fn check_key(key: &str, entries: &[Entry], budget: Budget) -> Verdict {
    let checked = informative(entries);
    let calls: Vec<Call> = checked.iter().map(|(_, call)| *call).collect();
    let started = Instant::now();
    let (result, states_explored) = match linearize(&calls, budget) {
        Search::Linearizable { states } => (CheckResult::Linearizable, states),
        Search::NotLinearizable { states, frontier } => {
            (CheckResult::NotLinearizable { explanation: explain(key, &checked, &frontier) }, states)
        }
        Search::OutOfBudget { states, deepest } => {
            let explanation = format!(
                "key {key}: gave up after {states} states in {:.1?} (budget {} states, {:?}) over {} ops; \
                 the longest consistent order placed {deepest} ops. Unproven counts as a failure.",
                started.elapsed(),
                budget.max_states,
                budget.deadline,
                calls.len()
            );
            (CheckResult::Timeout { explanation }, states)
        }
    };
    Verdict { key: key.to_string(), result, ops_checked: calls.len(), states_explored }
}

/// The operations that constrain the register, as the search sees them, sorted by invocation.
fn informative(entries: &[Entry]) -> Vec<(&Entry, Call)> {
    let mut kept: Vec<(&Entry, Call)> = entries
        .iter()
        .filter_map(|entry| {
            let step = match (&entry.op, &entry.outcome) {
                (_, Outcome::Fail) | (Op::Read, Outcome::Unknown) => return None,
                (Op::Read, Outcome::Ok(seen)) => Step::Read(*seen),
                (Op::Write(value), _) => Step::Write(*value),
                (Op::Cas { expect, new }, _) => Step::Cas { expect: *expect, new: *new },
            };
            // An `Ok` without a completion time (only from a hand-made history) must still take
            // effect, at some unknown time: its return goes last.
            let return_ns = match entry.outcome {
                Outcome::Unknown => None,
                _ => Some(entry.returned_ns().unwrap_or(u64::MAX)),
            };
            Some((entry, Call { step, invoke_ns: entry.invoke_ns, return_ns }))
        })
        .collect();
    // Per value: how many operations write it, whether anything reads or expects it, and the
    // earliest return of an operation that certainly saw it.
    let mut writers: HashMap<i64, usize> = HashMap::new();
    let mut mentioned: HashSet<i64> = HashSet::new();
    let mut seen_by: HashMap<i64, u64> = HashMap::new();
    for (_, call) in &kept {
        let (wrote, saw) = match call.step {
            Step::Write(value) => (Some(value), None),
            Step::Cas { expect, new } => (Some(new), expect),
            Step::Read(seen) => (None, seen),
        };
        if let Some(value) = wrote {
            *writers.entry(value).or_default() += 1;
        }
        if let Some(value) = saw {
            mentioned.insert(value);
            if let Some(returned) = call.return_ns {
                let earliest = seen_by.entry(value).or_insert(returned);
                *earliest = returned.min(*earliest);
            }
        }
    }
    kept.retain_mut(|(_, call)| {
        let (Step::Write(value) | Step::Cas { new: value, .. }) = call.step else { return true };
        if call.return_ns.is_none() && writers[&value] == 1 {
            // The only writer of a value something certainly saw took effect before that returned.
            call.return_ns = seen_by.get(&value).copied();
        }
        call.return_ns.is_some() || mentioned.contains(&value)
    });
    kept.sort_by_key(|(entry, _)| (entry.invoke_ns, entry.id));
    kept
}

const OVERLAPPING_SHOWN: usize = 6;

/// Names the operation the longest consistent order could not place, where that order ended,
/// and the operations running at the same time (the ones any other order could rearrange).
fn explain(key: &str, checked: &[(&Entry, Call)], frontier: &Frontier) -> String {
    let (blocker, _) = checked[frontier.blocker];
    let tail: Vec<String> = frontier.tail.iter().map(|&op| brief(checked[op].0)).collect();
    let states: Vec<String> = frontier.states.iter().map(|s| show(*s)).collect();
    let placed = if tail.is_empty() {
        "No order can place even one op before it".to_string()
    } else {
        format!(
            "The longest consistent order places {}, ending with {}",
            count(frontier.depth),
            tail.join(", ")
        )
    };
    let end = blocker.returned_ns().unwrap_or(u64::MAX);
    let overlapping: Vec<String> = checked
        .iter()
        .filter(|(e, _)| e.id != blocker.id && e.invoke_ns <= end)
        .filter(|(e, _)| e.returned_ns().is_none_or(|r| r >= blocker.invoke_ns))
        .map(|(e, _)| brief(e))
        .collect();
    let mut shown = overlapping.iter().take(OVERLAPPING_SHOWN).cloned().collect::<Vec<_>>().join("; ");
    if overlapping.len() > OVERLAPPING_SHOWN {
        shown.push_str(&format!("; and {} more", overlapping.len() - OVERLAPPING_SHOWN));
    }
    let stranded: Vec<String> = frontier
        .stranded
        .iter()
        .map(|&(value, needer)| {
            format!("{} (which {} must still see)", show(value), detailed(checked[needer].0))
        })
        .collect();
    let because = if stranded.is_empty() {
        String::new()
    } else {
        format!(
            ": every way there overwrites {}, and nothing pending writes it again",
            stranded.join(", or ")
        )
    };
    format!(
        "key {key}: not linearizable ({}). {placed}; the register then holds {}. {} must take effect \
         before it returned, but no order of the ops pending then lets it{because}. Concurrent with it: {}.",
        count(checked.len()),
        states.join(" or "),
        detailed(blocker),
        if shown.is_empty() { "nothing".to_string() } else { shown }
    )
}

fn count(ops: usize) -> String {
    if ops == 1 {
        "1 op".to_string()
    } else {
        format!("{ops} ops")
    }
}

fn show(state: State) -> String {
    state.map_or_else(|| "nothing".to_string(), |v| v.to_string())
}

/// `#12 read saw 5` and the like.
fn brief(entry: &Entry) -> String {
    let what = match (&entry.op, &entry.outcome) {
        (Op::Read, Outcome::Ok(seen)) => format!("read saw {}", show(*seen)),
        (Op::Read, _) => "read".to_string(),
        (Op::Write(value), _) => format!("write {value}"),
        (Op::Cas { expect, new }, _) => format!("cas {} -> {new}", show(*expect)),
    };
    let unknown = if entry.outcome == Outcome::Unknown { " (unknown outcome)" } else { "" };
    format!("#{} {what}{unknown}", entry.id.0)
}

/// [`brief`] with the client and the times, in seconds since the recorder started.
fn detailed(entry: &Entry) -> String {
    let seconds = |ns: u64| format!("{}.{:09} s", ns / 1_000_000_000, ns % 1_000_000_000);
    let returned = entry
        .returned_ns()
        .map_or_else(|| "never returned".to_string(), |r| format!("returned at {}", seconds(r)));
    format!(
        "{} by client {} (invoked at {}, {returned})",
        brief(entry),
        entry.client,
        seconds(entry.invoke_ns)
    )
}

#[cfg(test)]
mod tests;
