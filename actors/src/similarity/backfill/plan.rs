//! The backfill's bookkeeping, apart from its I/O so it is tested alone: the new nodes waiting
//! per space, the spaces being scanned whole and where each scan stands, the batch to try
//! again, and which of them the next run takes.
//!
//! Nothing that enters is lost unless the plan says where it went: new ids wait until a run
//! looks at them (a run that could not is handed back with [`Plan::put_back`]); a scan asked
//! for while one of the space is under way runs again from the start once the current pass
//! ends; a batch dropped after its attempts schedules a scan of its space. Work is taken a
//! batch at a time and in turns (new nodes, then a scan step; spaces round-robin), so no space
//! and no kind of work waits behind another.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::AtomId;
use crate::storage::reads::Unembedded;

/// Times one batch is tried before it is dropped (and its space scanned again).
pub const MAX_ATTEMPTS: u32 = 3;
/// New node ids remembered across all spaces; past it a space's ids give way to a scan of it.
pub const MAX_FRESH: usize = 100_000;

/// A batch taken for embedding, and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    pub space: String,
    pub nodes: Vec<Unembedded>,
    pub attempts: u32,
}

/// What the next run does.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// A batch that failed before.
    Retry(Work),
    /// New ids of one space (at most a batch), to be looked up and embedded.
    Fresh { space: String, ids: Vec<AtomId> },
    /// One step of a whole-space scan, after the node index key `after`.
    Scan { space: String, after: Option<Vec<u8>> },
}

/// What became of a failed batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Kept, to be tried again after a pause.
    Retried { attempt: u32 },
    /// Given up; its space is scanned again, which finds what it held.
    Dropped { nodes: usize },
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Scan {
    /// Where the next step starts; `None`: at the start of the space.
    cursor: Option<Vec<u8>>,
    /// A step of this pass was taken (it may have read the index before what came since).
    started: bool,
    /// Asked for again during this pass: start over when it ends.
    again: bool,
}

#[derive(Debug)]
pub struct Plan {
    batch: usize,
    fresh: BTreeMap<String, BTreeSet<AtomId>>,
    fresh_total: usize,
    scans: BTreeMap<String, Scan>,
    retry: Option<Work>,
    /// The space served last of each kind, so the next turn goes to the one after it.
    last_fresh: Option<String>,
    last_scan: Option<String>,
    /// Whether a scan step has the next turn when new nodes wait too.
    scan_turn: bool,
}

impl Plan {
    /// A plan taking at most `batch` nodes a run.
    pub fn new(batch: usize) -> Plan {
        Plan {
            batch: batch.max(1),
            fresh: BTreeMap::new(),
            fresh_total: 0,
            scans: BTreeMap::new(),
            retry: None,
            last_fresh: None,
            last_scan: None,
            scan_turn: false,
        }
    }

    /// Forgets everything (this node no longer leads: the next leader scans again).
    pub fn clear(&mut self) {
        *self = Plan::new(self.batch);
    }

    pub fn is_idle(&self) -> bool {
        self.retry.is_none() && self.fresh.is_empty() && self.scans.is_empty()
    }

    /// New nodes waiting, all spaces.
    pub fn pending(&self) -> usize {
        self.fresh_total
    }

    /// The spaces being scanned whole.
    pub fn scanning(&self) -> Vec<String> {
        self.scans.keys().cloned().collect()
    }

    /// Nodes added in `space`. They wait even while the space is scanned: a scan walks the
    /// node index in key order, so a node whose key sorts before its cursor would be missed.
    pub fn added(&mut self, space: &str, ids: impl IntoIterator<Item = AtomId>) {
        let waiting = self.fresh.entry(space.to_string()).or_default();
        let before = waiting.len();
        waiting.extend(ids);
        self.fresh_total += waiting.len() - before;
        if self.fresh_total > MAX_FRESH {
            if let Some(dropped) = self.fresh.remove(space) {
                self.fresh_total -= dropped.len();
            }
            self.rescan(space);
        }
    }

    /// Scans `space` whole: from its start, or again once a pass under way ends.
    pub fn rescan(&mut self, space: &str) {
        match self.scans.get_mut(space) {
            Some(scan) if scan.started => scan.again = true,
            Some(_) => {}
            None => {
                self.scans.insert(space.to_string(), Scan::default());
            }
        }
    }

    /// Keeps only the new nodes of spaces `keep` says are still wanted.
    pub fn retain_fresh(&mut self, keep: impl Fn(&str) -> bool) {
        self.fresh.retain(|space, _| keep(space));
        self.fresh_total = self.fresh.values().map(BTreeSet::len).sum();
    }

    /// The next run's work, taken out of the plan; `None` when there is nothing to do.
    pub fn take_next(&mut self) -> Option<Next> {
        if let Some(work) = self.retry.take() {
            return Some(Next::Retry(work));
        }
        let scan_first = self.scan_turn || self.fresh.is_empty();
        if scan_first && !self.scans.is_empty() {
            self.scan_turn = false;
            let space = after_last(&self.scans, self.last_scan.as_deref());
            self.last_scan = Some(space.clone());
            let scan = self.scans.get_mut(&space).expect("a space just chosen from the map");
            scan.started = true;
            let after = scan.cursor.clone();
            return Some(Next::Scan { space, after });
        }
        if self.fresh.is_empty() {
            return None;
        }
        self.scan_turn = !self.scans.is_empty();
        let space = after_last(&self.fresh, self.last_fresh.as_deref());
        self.last_fresh = Some(space.clone());
        let waiting = self.fresh.get_mut(&space).expect("a space just chosen from the map");
        let ids: Vec<AtomId> = std::iter::from_fn(|| waiting.pop_first()).take(self.batch).collect();
        if waiting.is_empty() {
            self.fresh.remove(&space);
        }
        self.fresh_total -= ids.len();
        Some(Next::Fresh { space, ids })
    }

    /// Work a run took but could not start (no model, storage busy): it waits again as it was.
    pub fn put_back(&mut self, next: Next) {
        match next {
            Next::Retry(work) => self.retry = Some(work),
            Next::Fresh { space, ids } => self.added(&space, ids),
            // The cursor only moves with a step's answer: an unstarted step is simply taken again.
            Next::Scan { .. } => {}
        }
    }

    /// A scan step of `space` ended before the key `next` (`None`: at the end of the space).
    /// A space deleted meanwhile ends its scan with `None` too.
    pub fn scanned(&mut self, space: &str, next: Option<Vec<u8>>) -> ScanProgress {
        let Some(scan) = self.scans.get_mut(space) else {
            return ScanProgress::Gone;
        };
        match next {
            Some(cursor) => {
                scan.cursor = Some(cursor);
                ScanProgress::Continues
            }
            None if scan.again => {
                *scan = Scan::default();
                ScanProgress::Restarted
            }
            None => {
                self.scans.remove(space);
                ScanProgress::Finished
            }
        }
    }

    /// A batch the model or Raft did not take: kept for another attempt, or dropped after
    /// [`MAX_ATTEMPTS`] with a scan of its space scheduled.
    pub fn failed(&mut self, mut work: Work) -> Failure {
        work.attempts += 1;
        if work.attempts < MAX_ATTEMPTS {
            let attempt = work.attempts;
            self.retry = Some(work);
            return Failure::Retried { attempt };
        }
        self.rescan(&work.space);
        Failure::Dropped { nodes: work.nodes.len() }
    }
}

/// What a scan step's answer did to its scan.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanProgress {
    Continues,
    /// Reached the end, and was asked for again meanwhile: it starts over.
    Restarted,
    Finished,
    /// The scan was cleared meanwhile (leadership lost).
    Gone,
}

/// The first key after `last` in `map`, round-robin (the map is not empty).
fn after_last<V>(map: &BTreeMap<String, V>, last: Option<&str>) -> String {
    let later = last.and_then(|last| {
        map.range::<str, _>((std::ops::Bound::Excluded(last), std::ops::Bound::Unbounded)).next()
    });
    later.or_else(|| map.iter().next()).map(|(k, _)| k.clone()).expect("a map that is not empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: AtomId) -> Unembedded {
        Unembedded { id, name: format!("n{id}") }
    }

    fn fresh(space: &str, ids: &[AtomId]) -> Next {
        Next::Fresh { space: space.into(), ids: ids.to_vec() }
    }

    fn scan(space: &str, after: Option<&[u8]>) -> Next {
        Next::Scan { space: space.into(), after: after.map(<[u8]>::to_vec) }
    }

    #[test]
    fn new_nodes_go_a_batch_at_a_time_and_wait_while_their_space_is_scanned() {
        let mut plan = Plan::new(2);
        plan.rescan("s");
        plan.added("s", [5, 3, 9]);
        assert_eq!(plan.pending(), 3, "a scan under way does not swallow new nodes");
        // Both kinds wait: new nodes, then a scan step, in turns.
        assert_eq!(plan.take_next(), Some(fresh("s", &[3, 5])));
        assert_eq!(plan.take_next(), Some(scan("s", None)));
        assert_eq!(plan.scanned("s", Some(b"k1".to_vec())), ScanProgress::Continues);
        assert_eq!(plan.take_next(), Some(fresh("s", &[9])));
        assert_eq!(plan.pending(), 0);
        assert_eq!(plan.take_next(), Some(scan("s", Some(b"k1"))));
        assert_eq!(plan.scanned("s", None), ScanProgress::Finished);
        assert_eq!(plan.take_next(), None);
        assert!(plan.is_idle());
    }

    #[test]
    fn spaces_take_turns() {
        let mut plan = Plan::new(1);
        plan.added("a", [1, 2]);
        plan.added("b", [10, 11]);
        let spaces: Vec<String> = std::iter::from_fn(|| plan.take_next())
            .map(|n| match n {
                Next::Fresh { space, .. } => space,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(spaces, vec!["a", "b", "a", "b"]);
        plan.rescan("x");
        plan.rescan("y");
        assert_eq!(plan.take_next(), Some(scan("x", None)));
        assert_eq!(plan.take_next(), Some(scan("y", None)));
        assert_eq!(plan.take_next(), Some(scan("x", None)), "a step not answered is taken again");
    }

    #[test]
    fn a_scan_asked_for_during_a_pass_runs_again_after_it() {
        let mut plan = Plan::new(8);
        plan.rescan("s");
        assert_eq!(plan.take_next(), Some(scan("s", None)));
        assert_eq!(plan.scanned("s", Some(b"m".to_vec())), ScanProgress::Continues);
        // Asked again mid-pass (announcements lost, an operator): the pass goes on, then again.
        plan.rescan("s");
        assert_eq!(plan.take_next(), Some(scan("s", Some(b"m"))));
        assert_eq!(plan.scanned("s", None), ScanProgress::Restarted);
        assert_eq!(plan.take_next(), Some(scan("s", None)));
        // Asked for while the first step runs: that step may have read before, so again too.
        plan.rescan("s");
        assert_eq!(plan.scanned("s", None), ScanProgress::Restarted);
        // Asked for before any step was taken: the pass to come covers it.
        plan.rescan("s");
        assert_eq!(plan.take_next(), Some(scan("s", None)));
        assert_eq!(plan.scanned("s", None), ScanProgress::Finished);
        assert!(plan.is_idle());
        plan.clear();
        assert_eq!(plan.scanned("s", None), ScanProgress::Gone);
    }

    #[test]
    fn work_not_started_waits_again_and_a_dropped_batch_rescans_its_space() {
        let mut plan = Plan::new(4);
        plan.added("s", [1, 2, 3]);
        let taken = plan.take_next().unwrap();
        plan.put_back(taken.clone());
        assert_eq!(plan.take_next(), Some(taken), "nothing of an unstarted run is lost");

        let work = Work { space: "s".into(), nodes: vec![node(1), node(2)], attempts: 0 };
        assert_eq!(plan.failed(work.clone()), Failure::Retried { attempt: 1 });
        let Some(Next::Retry(again)) = plan.take_next() else { panic!("the failed batch comes first") };
        assert_eq!(plan.failed(again), Failure::Retried { attempt: 2 });
        let Some(Next::Retry(last)) = plan.take_next() else { panic!() };
        assert_eq!(plan.failed(last), Failure::Dropped { nodes: 2 });
        assert_eq!(plan.scanning(), vec!["s".to_string()], "a dropped batch is found again by a scan");
    }

    #[test]
    fn too_many_new_nodes_become_a_scan_of_their_space() {
        let mut plan = Plan::new(32);
        plan.added("big", 0..=MAX_FRESH as AtomId);
        plan.added("small", [1]);
        assert_eq!(plan.pending(), 1, "the big space's ids gave way");
        assert_eq!(plan.scanning(), vec!["big".to_string()]);
        plan.retain_fresh(|space| space != "small");
        assert_eq!(plan.pending(), 0);
    }
}
