//! What the state machine announces after each apply and install, for in-memory indexes
//! (spreading activation's graph, vectors) that are built only from these announcements.
//!
//! `Applied { first, index, changes }` covers the entries `first..=index` and lists, per
//! space, the atoms added, updated (truth or attention value, named values, vectors) and
//! removed.
//! `SnapshotInstalled { index }` says the whole state was replaced. A subscriber builds its
//! index from storage at some applied index B, ignores events up to B, and must rebuild when
//! it lags (the channel dropped events) or sees a gap (`first` is not its last index + 1):
//! [`ChangeFeed`] does that bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::AtomId;

/// One atom change, as apply reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub space: String,
    pub id: AtomId,
    pub kind: ChangeKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Updated,
    Removed,
}

/// The atoms one space gained, changed and lost over a run of entries. An atom appears in at
/// most one set: removed wins, then added (a new atom changed again is still new).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceChanges {
    pub added: BTreeSet<AtomId>,
    pub updated: BTreeSet<AtomId>,
    pub removed: BTreeSet<AtomId>,
    /// The encoded atom record (`Table::Atoms` value) as the run left it, for every added or
    /// updated atom whose record the run wrote (a change to named values alone leaves the
    /// record as it was). A subscriber reads the state as of `index` from here, never from
    /// storage, which apply may already have moved past.
    pub records: BTreeMap<AtomId, Vec<u8>>,
    /// Every vector the run stored (`Some`, encoded as in `Table::Embeddings`) or removed
    /// (`None`), by atom and model, as the run left it. A removed atom's vectors go with it
    /// and are not listed.
    pub vectors: BTreeMap<AtomId, BTreeMap<String, Option<Vec<u8>>>>,
}

/// Per space, what a run of entries changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub spaces: BTreeMap<String, SpaceChanges>,
}

impl Changes {
    /// Folds apply's log of changes, in order.
    pub fn from_log(log: Vec<Change>) -> Changes {
        let mut changes = Changes::default();
        for Change { space, id, kind } in log {
            let s = changes.spaces.entry(space).or_default();
            match kind {
                ChangeKind::Removed => {
                    s.added.remove(&id);
                    s.updated.remove(&id);
                    s.removed.insert(id);
                }
                ChangeKind::Added => {
                    s.removed.remove(&id);
                    s.updated.remove(&id);
                    s.added.insert(id);
                }
                ChangeKind::Updated if s.added.contains(&id) || s.removed.contains(&id) => {}
                ChangeKind::Updated => {
                    s.updated.insert(id);
                }
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.spaces.is_empty()
    }
}

/// What the state machine announces to in-memory indexes and waiters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    /// Entries `first..=index` are applied, with the atom changes they made.
    Applied { first: u64, index: u64, changes: Arc<Changes> },
    /// The whole state was replaced by a snapshot ending at `index`.
    SnapshotInstalled { index: u64 },
}

/// What a [`ChangeFeed`] hands its subscriber next.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// Apply these changes; the index now reflects `index`.
    Changes { index: u64, changes: Arc<Changes> },
    /// The index cannot be kept current from events: rebuild it from storage.
    Rebuild { reason: String },
    /// The state machine is gone.
    Closed,
}

/// A subscription that turns lag, gaps and installs into "rebuild".
pub struct ChangeFeed {
    rx: broadcast::Receiver<StateEvent>,
    /// The index the subscriber's state reflects.
    at: u64,
}

impl ChangeFeed {
    /// Follows `rx` for a subscriber whose state reflects `built_at` (subscribe before reading
    /// storage, so no event between the read and the subscription is missed).
    pub fn new(rx: broadcast::Receiver<StateEvent>, built_at: u64) -> ChangeFeed {
        ChangeFeed { rx, at: built_at }
    }

    /// After a rebuild from storage at `index`.
    pub fn rebuilt_at(&mut self, index: u64) {
        self.at = index;
    }

    pub async fn next(&mut self) -> Feed {
        loop {
            match self.rx.recv().await {
                Ok(StateEvent::Applied { index, .. }) if index <= self.at => continue,
                Ok(StateEvent::Applied { first, index, changes }) => {
                    if first > self.at + 1 {
                        return Feed::Rebuild {
                            reason: format!("entries {}..{} were applied unseen", self.at + 1, first),
                        };
                    }
                    self.at = index;
                    return Feed::Changes { index, changes };
                }
                Ok(StateEvent::SnapshotInstalled { index }) => {
                    return Feed::Rebuild { reason: format!("a snapshot up to {index} replaced the state") }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Feed::Rebuild {
                        reason: format!("{n} announcements were dropped while it lagged"),
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Feed::Closed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: AtomId, kind: ChangeKind) -> Change {
        Change { space: "s".into(), id, kind }
    }

    #[test]
    fn an_atom_lands_in_one_set() {
        let c = Changes::from_log(vec![
            change(1, ChangeKind::Added),
            change(1, ChangeKind::Updated),
            change(2, ChangeKind::Updated),
            change(3, ChangeKind::Added),
            change(3, ChangeKind::Removed),
        ]);
        let s = &c.spaces["s"];
        assert_eq!(s.added, BTreeSet::from([1]));
        assert_eq!(s.updated, BTreeSet::from([2]));
        assert_eq!(s.removed, BTreeSet::from([3]));
    }

    #[tokio::test]
    async fn a_feed_skips_old_events_and_asks_for_a_rebuild_on_gaps_lag_and_installs() {
        let (tx, rx) = broadcast::channel(2);
        let mut feed = ChangeFeed::new(rx, 10);
        let applied = |first, index| StateEvent::Applied { first, index, changes: Arc::default() };
        tx.send(applied(9, 10)).unwrap();
        tx.send(applied(11, 12)).unwrap();
        assert_eq!(feed.next().await, Feed::Changes { index: 12, changes: Arc::default() });
        tx.send(applied(14, 15)).unwrap();
        assert!(matches!(feed.next().await, Feed::Rebuild { reason } if reason.contains("13..14")));
        feed.rebuilt_at(15);
        for i in 16..20 {
            tx.send(applied(i, i)).unwrap();
        }
        assert!(matches!(feed.next().await, Feed::Rebuild { reason } if reason.contains("dropped")));
        tx.send(StateEvent::SnapshotInstalled { index: 40 }).unwrap();
        // After the lag report the feed reads on; the install asks for a rebuild too.
        loop {
            match feed.next().await {
                Feed::Rebuild { reason } if reason.contains("snapshot") => break,
                Feed::Closed => panic!("closed"),
                _ => {}
            }
        }
        drop(tx);
        assert_eq!(feed.next().await, Feed::Closed);
    }
}
