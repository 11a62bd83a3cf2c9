//! The index against the real state machine: folded from apply's announcements after random
//! writes, truth-value changes and cascading deletes (with compactions on the way), it equals a
//! fresh build from storage; and the follower thread rebuilds after a snapshot install.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{EntryPayload, LeaderId, LogId};
use tempfile::TempDir;

use super::*;
use crate::command::{AtomRef, Command, Proposal, ProposalBatch};
use crate::model::{AttentionValue, Merge, TruthValue};
use crate::spreading::follow::{self, SharedIndex};
use crate::spreading::indexes::GraphIndex;
use crate::spreading::metrics::SpreadingMetrics;
use crate::storage::events::{ChangeFeed, Feed};
use crate::storage::metrics::StorageMetrics;
use crate::storage::reads::GraphReader;
use crate::storage::{open, Stores};
use crate::typ::Entry;

fn store(dir: &TempDir) -> Stores {
    open(dir.path(), Default::default(), Arc::new(StorageMetrics::register(&mut crate::metrics::registry())))
        .unwrap()
}

fn entry(index: u64, space: &str, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ProposalBatch {
            proposals: vec![Proposal {
                key: format!("k{index}"),
                time_ms: 1000 + index,
                space: space.into(),
                command,
            }],
        }),
    }
}

/// xorshift: the same "random" workload on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Entry `i` of a workload over two spaces: new nodes, links among existing atoms (links of
/// links too), truth-value changes, stimulation and deletes (cascading through links).
fn random_entry(i: u64, rng: &mut Rng, next_id: u64) -> Entry {
    let space = if rng.below(4) == 0 { "other" } else { "default" };
    let existing = || AtomRef::Id(1 + (i * 7919 + next_id * 31) % next_id.max(1));
    let command = match rng.below(10) {
        0..=3 => Command::Batch {
            ops: (0..1 + rng.below(5))
                .map(|j| Command::AddNode {
                    atom_type: if j % 2 == 0 { "ConceptNode" } else { "WordNode" }.into(),
                    name: format!("n{i}-{j}"),
                    tv: None,
                    merge: Merge::Latest,
                })
                .collect(),
        },
        4..=6 => Command::AddLink {
            atom_type: ["ListLink", "InheritanceLink"][rng.below(2) as usize].into(),
            outgoing: (0..2 + rng.below(3))
                .map(|k| AtomRef::Id(1 + (rng.below(next_id) + k) % next_id.max(1)))
                .collect(),
            tv: Some(TruthValue { strength: 0.5, confidence: 0.25 }),
            merge: Merge::Latest,
        },
        7 => Command::SetTruth {
            id: existing(),
            tv: TruthValue { strength: rng.below(100) as f64 / 100.0, confidence: 0.5 },
        },
        8 => Command::Stimulate { id: existing(), sti: 3.0, lti: 1.0, vlti: None },
        _ => Command::DeleteAtom { id: AtomRef::Id(1 + rng.below(next_id)) },
    };
    entry(i, space, command)
}

fn canonical(graph: &GraphIndex, spaces: &[&str]) -> BTreeMap<String, Vec<String>> {
    spaces
        .iter()
        .map(|s| {
            let rows = graph.space(s).map(|x| x.canonical()).unwrap_or_default();
            (s.to_string(), rows.into_iter().map(|r| format!("{r:?}")).collect())
        })
        .collect()
}

#[tokio::test]
async fn the_index_folded_from_announcements_equals_a_fresh_build_after_random_writes_and_deletes() {
    let dir = TempDir::new().unwrap();
    let stores = store(&dir);
    let reader = GraphReader::new(stores.core.clone());
    let mut feed = ChangeFeed::new(reader.subscribe(), 0);
    let mut graph = follow::build(&reader).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compactions = 0;
    for i in 1..=3000u64 {
        // Ids are global; ~2 atoms per entry is a fair bound for picking existing ones.
        stores.core.apply(vec![random_entry(i, &mut rng, 2 * i)]).unwrap();
        let Feed::Changes { index, changes } = feed.next().await else { panic!("the feed broke at {i}") };
        let mut wanted = graph.apply(index, &changes).unwrap();
        if i % 700 == 0 {
            // Compactions also in the middle of the stream, not only where the threshold says.
            wanted.extend(["default".to_string(), "other".to_string()]);
        }
        for name in wanted {
            let compacted = graph.space(&name).unwrap().compacted();
            graph.replace(&name, compacted);
            compactions += 1;
        }
    }
    let fresh = follow::build(&reader).unwrap();
    assert_eq!(graph.at(), 3000);
    assert_eq!(fresh.at(), 3000);
    assert!(fresh.atoms() > 1000, "the workload built a graph: {} atoms", fresh.atoms());
    assert!(compactions >= 8, "compactions happened along the way: {compactions}");
    assert_eq!(canonical(&graph, &["default", "other"]), canonical(&fresh, &["default", "other"]));
}

#[test]
fn the_follower_thread_rebuilds_after_a_snapshot_install() {
    let (a_dir, b_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (a, b) = (store(&a_dir), store(&b_dir));
    let mut rng = Rng(42);
    for i in 1..=400u64 {
        a.core.apply(vec![random_entry(i, &mut rng, 2 * i)]).unwrap();
    }
    let mut rng = Rng(7);
    for i in 1..=50u64 {
        b.core.apply(vec![random_entry(i, &mut rng, 2 * i)]).unwrap();
    }
    let shared = Arc::new(SharedIndex::default());
    let metrics = SpreadingMetrics::register(&mut crate::metrics::registry());
    follow::start(GraphReader::new(b.core.clone()), shared.clone(), metrics).unwrap();
    let at = |shared: &SharedIndex| shared.read().as_ref().map(|g| g.at());
    wait_for(|| at(&shared) == Some(50));

    let (meta, path) = a.core.build_snapshot().unwrap();
    b.core.install(&meta, &path).unwrap();
    wait_for(|| at(&shared) == Some(400));
    let expected = follow::build(&GraphReader::new(a.core.clone())).unwrap();
    let got = canonical(shared.read().as_ref().unwrap(), &["default", "other"]);
    assert_eq!(got, canonical(&expected, &["default", "other"]));
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "not within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rows_stay_in_id_order_through_side_lists_and_compaction() {
    let atom = |id, outgoing: Vec<u64>| crate::model::Atom {
        id,
        space: "s".into(),
        atom_type: if outgoing.is_empty() { "ConceptNode" } else { "ListLink" }.into(),
        kind: if outgoing.is_empty() {
            crate::model::AtomKind::Node { name: format!("n{id}") }
        } else {
            crate::model::AtomKind::Link { outgoing }
        },
        tv: TruthValue::default(),
        av: AttentionValue::default(),
        created_ms: 0,
        updated_ms: 0,
    };
    let mut index = SpaceIndex::building();
    for a in [atom(1, vec![]), atom(2, vec![]), atom(3, vec![1, 2]), atom(5, vec![2, 2, 1])] {
        index.push(&a).unwrap();
    }
    index.seal();
    index.push(&atom(8, vec![1, 2])).unwrap();
    index.push(&atom(9, vec![8, 1])).unwrap();
    let ids = |index: &SpaceIndex, id| -> Vec<u64> {
        index
            .incident(index.dense_of(id).unwrap())
            .filter(|l| !index.is_removed(*l))
            .map(|l| index.id(l))
            .collect()
    };
    assert_eq!(ids(&index, 1), vec![3, 5, 8, 9]);
    assert_eq!(index.members(index.dense_of(5).unwrap()).len(), 2, "repeated members count once");
    assert_eq!(index.push(&atom(7, vec![])), Err(IndexError::OutOfOrder { id: 7, last: 9 }));
    assert_eq!(index.push(&atom(10, vec![4])), Err(IndexError::MissingMember { link: 10, member: 4 }));
    index.remove(5);
    let compacted = index.compacted();
    assert_eq!(ids(&compacted, 1), vec![3, 8, 9]);
    assert_eq!(ids(&compacted, 8), vec![9]);
    assert_eq!(compacted.canonical(), index.canonical());
    assert_eq!(compacted.live(), compacted.len());
}
