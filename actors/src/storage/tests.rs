//! Storage tests: openraft's contract suite over the sled store, plus apply and snapshot
//! behaviour that the suite does not cover.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, LeaderId, LogId, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::{open, LogStore, StateMachine};
use crate::command::{
    AtomRef, BatchResults, Command, CommandResult, Expect, Proposal, ProposalBatch, Rejection,
};
use crate::health::Metrics;
use crate::model::Merge;
use crate::typ::{Entry, StorageError};

struct SledBuilder;

impl StoreBuilder<crate::TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let stores = open(dir.path(), Arc::new(Metrics::new())).expect("open store");
        Ok((dir, stores.log, stores.state_machine))
    }
}

#[test]
fn sled_store_passes_openraft_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}

fn entry(index: u64, key: &str, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ProposalBatch {
            proposals: vec![Proposal { key: key.into(), time_ms: 1000 + index, command }],
        }),
    }
}

/// The result of each entry's only proposal.
fn only(results: Vec<BatchResults>) -> Vec<CommandResult> {
    results.into_iter().map(|mut r| r.results.remove(0)).collect()
}

fn node(name: &str) -> Command {
    Command::AddNode { atom_type: "ConceptNode".into(), name: name.into(), tv: None, merge: Merge::Latest }
}

fn link(outgoing: Vec<AtomRef>) -> Command {
    Command::AddLink { atom_type: "ListLink".into(), outgoing, tv: None, merge: Merge::Latest }
}

#[test]
fn rejected_batch_writes_nothing_and_replayed_keys_apply_once() {
    let dir = TempDir::new().unwrap();
    let stores = open(dir.path(), Arc::new(Metrics::new())).unwrap();
    let core = stores.core;
    let results = only(core.apply(vec![entry(1, "a", node("cat"))]).unwrap());
    assert!(matches!(&results[0], CommandResult::Atom { created: true, .. }));
    let (_, before) = core.digest().unwrap();

    let bad_batch = Command::Batch { ops: vec![node("dog"), link(vec![AtomRef::Op(0), AtomRef::Id(99)])] };
    let results = only(core.apply(vec![entry(2, "b", bad_batch)]).unwrap());
    let CommandResult::Rejected { error: Rejection::InBatch { op: 1, cause } } = &results[0] else {
        panic!("expected a rejected batch, got {results:?}");
    };
    assert_eq!(**cause, Rejection::UnknownAtom { id: 99 });
    assert_eq!(core.digest().unwrap().1, before, "a rejected batch changed the state");

    let again = only(core.apply(vec![entry(3, "a", node("cat-renamed"))]).unwrap());
    assert!(matches!(&again[0], CommandResult::Atom { atom, created: true } if atom.id == 1), "{again:?}");
    assert_eq!(core.digest().unwrap().1, before, "a replayed key applied twice");
}

#[test]
fn compare_and_set_and_cascading_delete() {
    let dir = TempDir::new().unwrap();
    let core = open(dir.path(), Arc::new(Metrics::new())).unwrap().core;
    let batch = Command::Batch {
        ops: vec![
            node("a"),
            node("b"),
            link(vec![AtomRef::Op(0), AtomRef::Op(1)]),
            link(vec![AtomRef::Op(2)]),
        ],
    };
    core.apply(vec![entry(1, "k1", batch)]).unwrap();
    let set = |expect, value: i64| Command::SetValue {
        id: AtomRef::Id(1),
        key: "n".into(),
        value: serde_json::json!(value),
        expect,
    };
    let r = only(core.apply(vec![entry(2, "k2", set(Some(Expect::Absent), 1))]).unwrap());
    assert!(matches!(r[0], CommandResult::Value { .. }), "{r:?}");
    let r = only(core.apply(vec![entry(3, "k3", set(Some(Expect::Absent), 2))]).unwrap());
    assert_eq!(
        r[0],
        CommandResult::Rejected { error: Rejection::CasFailed { current: Some(serde_json::json!(1)) } }
    );
    let r = only(core.apply(vec![entry(4, "k4", Command::DeleteAtom { id: AtomRef::Id(1) })]).unwrap());
    assert_eq!(r[0], CommandResult::Deleted { removed: vec![1, 3, 4] });
    let reader = super::reads::GraphReader::new(core.clone());
    assert!(reader.atom(2).is_ok());
    assert!(reader.atom(3).is_err());
    assert!(reader.incoming(2).unwrap().is_empty(), "incoming entries of deleted links remain");
}

#[test]
fn snapshot_round_trips_into_an_empty_store() {
    let (src_dir, dst_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = open(src_dir.path(), Arc::new(Metrics::new())).unwrap();
    let entries: Vec<Entry> = (1..=50).map(|i| entry(i, &format!("k{i}"), node(&format!("n{i}")))).collect();
    src.core.apply(entries).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let snapshot = rt.block_on(src.state_machine.clone().build_snapshot()).unwrap();
    let dst = open(dst_dir.path(), Arc::new(Metrics::new())).unwrap();
    dst.core.install(&snapshot.meta, snapshot.snapshot.get_ref()).unwrap();
    assert_eq!(src.core.digest().unwrap(), dst.core.digest().unwrap());
    // The idempotency table travels with the snapshot.
    let replay = only(dst.core.apply(vec![entry(51, "k7", node("other"))]).unwrap());
    assert!(matches!(&replay[0], CommandResult::Atom { atom, .. } if atom.id == 7), "{replay:?}");
}

#[test]
fn proposals_sharing_an_entry_apply_independently() {
    let dir = TempDir::new().unwrap();
    let core = open(dir.path(), Arc::new(Metrics::new())).unwrap().core;
    let p = |key: &str, command| Proposal { key: key.into(), time_ms: 5, command };
    let entry = Entry {
        log_id: LogId::new(LeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(ProposalBatch {
            proposals: vec![
                p("x", node("kept")),
                p("y", Command::DeleteAtom { id: AtomRef::Id(404) }),
                p("x", node("not-applied")),
                p("z", node("also-kept")),
            ],
        }),
    };
    let results = core.apply(vec![entry]).unwrap().remove(0).results;
    assert!(
        matches!(&results[0], CommandResult::Atom { atom, created: true } if atom.id == 1),
        "{results:?}"
    );
    assert_eq!(results[1], CommandResult::Rejected { error: Rejection::UnknownAtom { id: 404 } });
    assert_eq!(results[2], results[0], "a repeated key in the same entry applied twice");
    assert!(
        matches!(&results[3], CommandResult::Atom { atom, created: true } if atom.id == 2),
        "{results:?}"
    );
}
