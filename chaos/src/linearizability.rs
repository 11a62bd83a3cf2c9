//! A linearizability checker for registers: the Wing & Gong search with Lowe's memoisation
//! (a cache of (set of linearized operations, register state) already explored), run per key.
//!
//! Semantics of the history:
//! - `Fail` operations took no effect and are dropped; reads that did not complete carry no
//!   information and are dropped too.
//! - `Unknown` writes and CAS have an invocation but no completion: the search may linearize
//!   them at any point after their invocation, or never.
//! - At equal timestamps, invocations are ordered before completions: two operations touching
//!   the same instant are treated as concurrent, which can only allow more orders (never report
//!   a false violation).
//! - A search that exceeds its [`Budget`] ends in `Timeout`, which counts as a failure.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{Entry, History, Op, Outcome};

/// How much work one key's search may do. Exceeding it is a failure, never a pass.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_states: u64,
    pub deadline: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict")]
pub enum CheckResult {
    Linearizable,
    NotLinearizable {
        explanation: String,
    },
    /// The budget ran out: counts as a failure.
    Timeout {
        explanation: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub key: String,
    pub result: CheckResult,
    pub ops_checked: usize,
    pub states_explored: u64,
}

impl Verdict {
    /// True only for a proven linearizable history.
    pub fn passed(&self) -> bool {
        self.result == CheckResult::Linearizable
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub verdicts: Vec<Verdict>,
    /// Every key passed.
    pub valid: bool,
}

/// Checks every key of `history` separately.
pub fn check_history(history: &History, budget: Budget) -> Report {
    let verdicts: Vec<Verdict> =
        history.by_key().into_iter().map(|(key, ops)| check_key(&key, &ops, budget)).collect();
    let valid = verdicts.iter().all(Verdict::passed);
    Report { verdicts, valid }
}

/// An operation the search considers.
struct Call<'a> {
    entry: &'a Entry,
    /// `Some` for reads that completed: the value they saw.
    read: Option<Option<i64>>,
}

impl Call<'_> {
    /// The state after this operation, or `None` if it cannot happen in `state`.
    fn step(&self, state: Option<i64>) -> Option<Option<i64>> {
        match (&self.entry.op, self.read) {
            (Op::Read, Some(seen)) => (seen == state).then_some(state),
            (Op::Read, None) => None,
            (Op::Write(v), _) => Some(Some(*v)),
            (Op::Cas { expect, new }, _) => (*expect == state).then_some(Some(*new)),
        }
    }
}

#[derive(Clone, Copy)]
enum Event {
    Invoke(usize),
    Complete(usize),
}

/// A doubly linked list over `events`; node 0 is the head sentinel.
struct List {
    prev: Vec<usize>,
    next: Vec<usize>,
}

const END: usize = usize::MAX;

impl List {
    fn new(n: usize) -> List {
        // Nodes 1..=n are the events; 0 is the sentinel.
        let next = (0..=n).map(|i| if i < n { i + 1 } else { END }).collect();
        let prev = (0..=n).map(|i| i.saturating_sub(1)).collect();
        List { prev, next }
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != END {
            self.prev[n] = node;
        }
    }
}

fn describe(e: &Entry) -> String {
    let done = e.complete_us.map_or("never completed".to_string(), |c| format!("completed at {c} us"));
    format!(
        "op #{} by client {}: {:?} -> {:?}, invoked at {} us, {done}",
        e.id, e.client, e.op, e.outcome, e.invoke_us
    )
}

/// Values some operation depends on: what completed reads saw and what CAS operations expect.
fn observed_values(entries: &[Entry]) -> HashSet<i64> {
    entries
        .iter()
        .filter_map(|e| match (&e.op, &e.outcome) {
            (Op::Read, Outcome::Ok(Some(v))) => Some(*v),
            (Op::Cas { expect: Some(v), .. }, Outcome::Ok(_) | Outcome::Unknown) => Some(*v),
            _ => None,
        })
        .collect()
}

/// Checks one key's operations.
///
/// An unknown write (or CAS) whose value no read saw and no CAS expects is left out: written
/// values are unique, so if it took effect nothing happened between it and the next write that
/// could tell, and leaving it out is always allowed. This keeps the search small when faults
/// leave thousands of operations unknown.
pub fn check_key(key: &str, entries: &[Entry], budget: Budget) -> Verdict {
    let observed = observed_values(entries);
    let calls: Vec<Call> = entries
        .iter()
        .filter_map(|e| match (&e.op, &e.outcome) {
            (_, Outcome::Fail) => None,
            (Op::Read, Outcome::Ok(seen)) => Some(Call { entry: e, read: Some(*seen) }),
            (Op::Read, Outcome::Unknown) => None,
            (Op::Write(v) | Op::Cas { new: v, .. }, Outcome::Unknown) if !observed.contains(v) => None,
            (_, Outcome::Ok(_)) | (_, Outcome::Unknown) => Some(Call { entry: e, read: None }),
        })
        .collect();
    let mut events: Vec<(u64, u8, Event)> = Vec::with_capacity(calls.len() * 2);
    for (i, c) in calls.iter().enumerate() {
        events.push((c.entry.invoke_us, 0, Event::Invoke(i)));
        if let Some(done) = c.entry.complete_us {
            events.push((done, 1, Event::Complete(i)));
        }
    }
    events.sort_by_key(|(t, order, _)| (*t, *order));
    let n = events.len();
    let mut list = List::new(n);
    // For each call: its invoke node and its completion node (1-based list nodes).
    let mut invoke_node = vec![0; calls.len()];
    let mut complete_node = vec![None; calls.len()];
    for (pos, (_, _, ev)) in events.iter().enumerate() {
        match ev {
            Event::Invoke(i) => invoke_node[*i] = pos + 1,
            Event::Complete(i) => complete_node[*i] = Some(pos + 1),
        }
    }
    let event_of = |node: usize| events[node - 1].2;
    let words = calls.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut state: Option<i64> = None;
    let mut pending_completions = complete_node.iter().filter(|c| c.is_some()).count();
    let mut explored = 0u64;
    let started = Instant::now();
    let mut deepest = (0usize, 0usize);
    let mut node = list.next[0];
    let verdict = |result, explored| Verdict {
        key: key.to_string(),
        result,
        ops_checked: calls.len(),
        states_explored: explored,
    };

    loop {
        if pending_completions == 0 {
            return verdict(CheckResult::Linearizable, explored);
        }
        explored += 1;
        if explored % 1024 == 0 && (explored > budget.max_states || started.elapsed() > budget.deadline) {
            let explanation = format!(
                "key {key}: gave up after {explored} steps and {:?} ({} ops); this counts as a failure",
                started.elapsed(),
                calls.len()
            );
            return verdict(CheckResult::Timeout { explanation }, explored);
        }
        if node == END {
            // Only never-completed operations are left: leaving them out is a valid choice.
            return verdict(CheckResult::Linearizable, explored);
        }
        match event_of(node) {
            Event::Invoke(i) => {
                let next_state = calls[i].step(state);
                let mut advanced = false;
                if let Some(next_state) = next_state {
                    linearized[i / 64] |= 1 << (i % 64);
                    if cache.insert((linearized.clone(), next_state)) {
                        stack.push((i, state));
                        state = next_state;
                        list.unlink(invoke_node[i]);
                        if let Some(c) = complete_node[i] {
                            list.unlink(c);
                            pending_completions -= 1;
                        }
                        if stack.len() > deepest.0 {
                            deepest = (stack.len(), i);
                        }
                        node = list.next[0];
                        advanced = true;
                    } else {
                        linearized[i / 64] &= !(1 << (i % 64));
                    }
                }
                if !advanced {
                    node = list.next[node];
                }
            }
            Event::Complete(i) => {
                // Operation i must have taken effect by now, but no order found so far allows
                // it: undo the last choice and try the next one.
                let Some((last, previous)) = stack.pop() else {
                    let prefix = calls.get(deepest.1).map(|c| describe(c.entry)).unwrap_or_default();
                    let explanation = format!(
                        "key {key}: no linearization of its {} operations: {} cannot take effect in any \
                         order; the longest valid prefix had {} operations, ending with {prefix}",
                        calls.len(),
                        describe(calls[i].entry),
                        deepest.0
                    );
                    return verdict(CheckResult::NotLinearizable { explanation }, explored);
                };
                state = previous;
                linearized[last / 64] &= !(1 << (last % 64));
                if let Some(c) = complete_node[last] {
                    list.relink(c);
                    pending_completions += 1;
                }
                list.relink(invoke_node[last]);
                node = list.next[invoke_node[last]];
            }
        }
    }
}

#[cfg(test)]
mod tests;
