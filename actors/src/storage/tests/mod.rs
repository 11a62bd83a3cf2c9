//! Storage tests: openraft's contract suite over the sled store, plus apply and snapshot
//! behaviour that the suite does not cover.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, LeaderId, LogId};
use tempfile::TempDir;

use super::{open, LogStore, StateMachine};
use crate::command::{
    AtomRef, BatchResults, Command, CommandResult, Expect, Proposal, ProposalBatch, Rejection,
};
use crate::model::Merge;
use crate::storage::metrics::StorageMetrics;
use crate::typ::{Entry, StorageError};

mod attention;
mod embeddings;
mod evidence;
mod snapshots;
mod spaces;

pub(super) fn store(dir: &TempDir) -> super::Stores {
    open(dir.path(), Default::default(), Arc::new(StorageMetrics::register(&mut crate::metrics::registry())))
        .unwrap()
}

/// An entry of one proposal in `space` at `index` (time = index ms).
pub(super) fn at(index: u64, space: &str, key: &str, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ProposalBatch {
            proposals: vec![Proposal { key: key.into(), time_ms: index, space: space.into(), command }],
        }),
    }
}

/// The result of the only proposal of the only entry applied.
pub(super) fn result(mut r: Vec<BatchResults>) -> CommandResult {
    r.remove(0).results.remove(0)
}

struct SledBuilder;

impl StoreBuilder<crate::TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let stores = open(
            dir.path(),
            Default::default(),
            Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
        )
        .expect("open store");
        Ok((dir, stores.log, stores.state_machine))
    }
}

#[test]
fn sled_store_passes_openraft_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage suite");
}

pub(super) fn entry(index: u64, key: &str, command: Command) -> Entry {
    Entry {
        log_id: LogId::new(LeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ProposalBatch {
            proposals: vec![Proposal {
                key: key.into(),
                time_ms: 1000 + index,
                space: "default".into(),
                command,
            }],
        }),
    }
}

/// The result of each entry's only proposal.
fn only(results: Vec<BatchResults>) -> Vec<CommandResult> {
    results.into_iter().map(|mut r| r.results.remove(0)).collect()
}

pub(super) fn node(name: &str) -> Command {
    Command::AddNode { atom_type: "ConceptNode".into(), name: name.into(), tv: None, merge: Merge::Latest }
}

pub(super) fn link(outgoing: Vec<AtomRef>) -> Command {
    Command::AddLink { atom_type: "ListLink".into(), outgoing, tv: None, merge: Merge::Latest }
}

#[test]
fn rejected_batch_writes_nothing_and_replayed_keys_apply_once() {
    let dir = TempDir::new().unwrap();
    let stores = open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .unwrap();
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
    let core = open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .unwrap()
    .core;
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
    assert_eq!(r[0], CommandResult::Deleted { removed: vec![1, 3, 4], removed_count: 3 });
    let reader = super::reads::GraphReader::new(core.clone());
    assert!(reader.with(|v| v.atom("default", 2)).is_ok());
    assert!(reader.with(|v| v.atom("default", 3)).is_err());
    assert!(
        reader.with(|v| v.incoming("default", 2, None, 100)).unwrap().items.is_empty(),
        "incoming entries of deleted links remain"
    );
}

#[test]
fn snapshot_round_trips_into_an_empty_store() {
    let (src_dir, dst_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = open(
        src_dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .unwrap();
    let entries: Vec<Entry> = (1..=50).map(|i| entry(i, &format!("k{i}"), node(&format!("n{i}")))).collect();
    src.core.apply(entries).unwrap();
    let (meta, path) = src.core.build_snapshot().unwrap();
    assert_eq!(super::snapshot::verify(&path).unwrap(), meta);
    let dst = open(
        dst_dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .unwrap();
    dst.core.install(&meta, &path).unwrap();
    assert_eq!(src.core.digest().unwrap(), dst.core.digest().unwrap());
    // The idempotency table travels with the snapshot.
    let replay = only(dst.core.apply(vec![entry(51, "k7", node("other"))]).unwrap());
    assert!(matches!(&replay[0], CommandResult::Atom { atom, .. } if atom.id == 7), "{replay:?}");
}

#[test]
fn proposals_sharing_an_entry_apply_independently() {
    let dir = TempDir::new().unwrap();
    let core = open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .unwrap()
    .core;
    let p = |key: &str, command| Proposal { key: key.into(), time_ms: 5, space: "default".into(), command };
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

/// sled writes a page to a separate, never-synced blob file when its encoding exceeds a
/// quarter of a segment. With cograft's segment size and key and value bounds no page gets
/// near that: near-limit log entries, long names, big named values and wide links write none.
#[test]
fn near_limit_entries_write_no_blob_files() {
    let dir = TempDir::new().unwrap();
    let stores = open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .unwrap();
    let long = |i: usize, j: usize| format!("{i}-{j}-{}", "n".repeat(crate::command::MAX_NAME_LEN - 16));
    for i in 0..120u64 {
        // What `append` writes: one ~100 KiB entry per index.
        let batch = Command::Batch { ops: (0..6).map(|j| node(&long(i as usize, j))).collect() };
        let e = entry(i + 1, &format!("k{i}"), batch);
        let bytes = super::encode(&e);
        assert!(bytes.len() > 90 * 1024, "entries must be near the limit: {}", bytes.len());
        stores.db.log.insert(super::be(e.log_id.index), bytes).unwrap();
        stores.core.apply(vec![e]).unwrap();
        let value = serde_json::json!("v".repeat(90 * 1024));
        let set = Command::SetValue { id: AtomRef::Id(i * 6 + 1), key: "big".into(), value, expect: None };
        stores.core.apply(vec![entry(i + 1, &format!("v{i}"), set)]).unwrap();
        let members = (1..=(i * 6 + 1).min(4096)).map(AtomRef::Id).collect();
        stores.core.apply(vec![entry(i + 1, &format!("l{i}"), link(members))]).unwrap();
        super::flush_durably(&stores.db).unwrap();
    }
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("sled").join("blobs")).unwrap().collect();
    assert!(blobs.is_empty(), "sled wrote {} blob files", blobs.len());
}

/// Writes blob-sized values with 512 KiB segments (cograft's first format) and dies without
/// closing sled, as a crash would. Runs in a child process of the test below.
fn write_blobs_then_abort(dir: &std::path::Path) -> ! {
    let db = super::Db::open_with(dir, 512 * 1024, 64 << 20).unwrap();
    for round in 0..6u64 {
        for i in 0..40u64 {
            let value = vec![(round * 40 + i) as u8; 150 * 1024];
            db.table(super::Table::Atoms).insert(super::be(i), value).unwrap();
            db.log.insert(super::be(round * 40 + i), vec![1u8; 90 * 1024]).unwrap();
        }
        super::flush_durably(&db).unwrap();
    }
    std::process::abort()
}

/// sled 0.34 panics at open on some damaged directories (missing blobs: "tried to serialize
/// Uninitialized" in `read_snapshot_or_default`). The node must refuse to start, naming the
/// directory and the recovery, instead of dying of the panic.
#[test]
fn a_panic_inside_sled_at_open_becomes_a_refusal() {
    const WRITER: &str = "COGRAFT_TEST_SLED_WRITER";
    if let Some(dir) = std::env::var_os(WRITER) {
        write_blobs_then_abort(std::path::Path::new(&dir));
    }
    let dir = TempDir::new().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "storage::tests::a_panic_inside_sled_at_open_becomes_a_refusal", "--nocapture"])
        .env(WRITER, dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the writer aborts");
    let blobs = dir.path().join("sled").join("blobs");
    let mut removed = 0;
    for blob in std::fs::read_dir(&blobs).unwrap() {
        std::fs::remove_file(blob.unwrap().path()).unwrap();
        removed += 1;
    }
    assert!(removed > 0, "the writer must have made blobs");
    let err = super::Db::open_with(dir.path(), 512 * 1024, 64 << 20)
        .err()
        .expect("sled must not open this directory");
    let text = err.to_string();
    assert!(matches!(err, crate::Error::Corrupted { .. }), "{text}");
    assert!(text.contains("panicked"), "{text}");
    assert!(text.contains(&dir.path().join("sled").display().to_string()), "names the directory: {text}");
    assert!(text.contains("add-learner"), "names the recovery: {text}");
}

/// Opens `dir` again once the previous instance (and its flusher thread) has let go of it.
pub(super) fn reopen(dir: &std::path::Path) -> crate::Result<super::Stores> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match open(
            dir,
            Default::default(),
            Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
        ) {
            Err(crate::Error::Storage { cause, .. })
                if cause.contains("lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            other => return other,
        }
    }
}

/// The manifest records how far the log was durable, so a node whose sled lost acknowledged
/// entries it had not applied yet refuses to start instead of rejoining with a hole; a
/// truncation lowers it first, so a legitimately shorter log still opens.
#[test]
fn a_node_that_lost_durable_log_entries_refuses_to_start() {
    let dir = TempDir::new().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    {
        let stores = open(
            dir.path(),
            Default::default(),
            Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
        )
        .unwrap();
        for i in 1..=10 {
            stores.db.log.insert(super::be(i), super::encode(&entry(i, "", node(&format!("n{i}"))))).unwrap();
        }
        rt.block_on(stores.log.sync()).unwrap();
        let m = super::manifest::read(dir.path()).unwrap().unwrap();
        assert_eq!(m.log_index, 10, "{m:?}");
        // openraft truncates a follower's conflicting tail: the manifest follows.
        let mut log = stores.log.clone();
        rt.block_on(openraft::storage::RaftLogStorage::truncate(
            &mut log,
            LogId::new(LeaderId::new(1, 1), 8),
        ))
        .unwrap();
        assert_eq!(super::manifest::read(dir.path()).unwrap().unwrap().log_index, 7);
    }
    drop(reopen(dir.path()).expect("a truncated log is not a loss"));
    {
        // While the node is down, sled loses entries 6 and 7, which had been made durable.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match super::Db::open(dir.path()) {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() > deadline => panic!("reopening sled: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        db.log.remove(super::be(7)).unwrap();
        db.log.remove(super::be(6)).unwrap();
        super::flush_durably(&db).unwrap();
    }
    let err = reopen(dir.path()).err().expect("the node must refuse a log with a hole");
    assert!(matches!(err, crate::Error::Corrupted { .. }), "{err}");
    assert!(err.to_string().contains("log up to index 5 but index 7"), "{err}");
}

/// A directory written in another data format is refused before sled touches it, with a
/// message naming both formats; a directory with sled files but no manifest is refused too.
#[test]
fn a_directory_of_another_format_is_refused_with_its_version() {
    let dir = TempDir::new().unwrap();
    std::fs::create_dir_all(dir.path().join("sled")).unwrap();
    let err = open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .err()
    .expect("no manifest");
    assert!(err.to_string().contains("no MANIFEST.json"), "{err}");
    std::fs::write(dir.path().join("MANIFEST.json"), r#"{"format": 1, "applied_index": 12, "vote_term": 2}"#)
        .unwrap();
    let err = open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .err()
    .expect("format 1");
    let text = err.to_string();
    assert!(matches!(err, crate::Error::Format { .. }), "{text}");
    assert!(
        text.contains("format 1") && text.contains(&format!("format {}", super::manifest::FORMAT)),
        "{text}"
    );
    assert!(std::fs::read_dir(dir.path().join("sled")).unwrap().next().is_none(), "sled was not opened");
}

/// openraft purges a follower's log as soon as it hands a received snapshot to the state
/// machine, before the install is durable. While one is received or installed the purge stops
/// at what is applied (or published as a snapshot), so a crash in between still finds the
/// entries it must replay.
#[test]
fn a_purge_never_passes_what_is_applied_or_in_a_published_snapshot() {
    let dir = TempDir::new().unwrap();
    let (stores, entries) = store_with_log(&dir, 60);
    stores.core.apply(entries[..10].to_vec()).unwrap();
    // A snapshot from the leader is being received.
    stores.db.set_receiving_snapshot(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut log = stores.log.clone();
    rt.block_on(openraft::storage::RaftLogStorage::purge(&mut log, entries[49].log_id)).unwrap();
    stores.log.settle_purges();
    assert_eq!(stored_purge(&stores), Some(10), "purged past the applied index");
    assert!(stores.db.log.get(super::be(11)).unwrap().is_some(), "entry 11 is needed for a replay");
    // For openraft (in this process) the log is purged as far as it asked.
    let state = rt.block_on(openraft::storage::RaftLogStorage::get_log_state(&mut log)).unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(50));
    // Once a snapshot covering 55 is published, the next purge goes all the way.
    stores.db.note_published_snapshot(55);
    rt.block_on(openraft::storage::RaftLogStorage::purge(&mut log, entries[54].log_id)).unwrap();
    stores.log.settle_purges();
    assert_eq!(stored_purge(&stores), Some(55));
    assert!(stores.db.log.get(super::be(55)).unwrap().is_none());
    assert!(stores.db.log.get(super::be(56)).unwrap().is_some());
}

/// A fresh store whose log holds entries 1..=`count` (none applied).
fn store_with_log(dir: &TempDir, count: u64) -> (super::Stores, Vec<Entry>) {
    let stores = open(
        dir.path(),
        Default::default(),
        Arc::new(StorageMetrics::register(&mut crate::metrics::registry())),
    )
    .unwrap();
    let entries: Vec<Entry> = (1..=count).map(|i| entry(i, "", node(&format!("n{i}")))).collect();
    for e in &entries {
        stores.db.log.insert(super::be(e.log_id.index), super::encode(e)).unwrap();
    }
    (stores, entries)
}

fn stored_purge(stores: &super::Stores) -> Option<u64> {
    super::manifest::last_purged(&stores.db).unwrap().map(|l| l.index)
}

/// openraft 0.9 awaits `purge` on its core task, where it holds back every heartbeat, append and
/// commit: a purge must not wait for a flush of the state machine or for the removal.
#[test]
fn a_purge_marks_at_once_and_leaves_the_removal_without_waiting_for_a_flush() {
    let dir = TempDir::new().unwrap();
    let (stores, entries) = store_with_log(&dir, 60);
    stores.core.apply(entries[..50].to_vec()).unwrap();
    let (done, returned) = std::sync::mpsc::channel();
    {
        // A flush in progress (flush_durably holds this lock for its whole length).
        let _flushing = stores.db.sync_failed.lock().unwrap();
        let mut log = stores.log.clone();
        let upto = entries[39].log_id;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(openraft::storage::RaftLogStorage::purge(&mut log, upto)).unwrap();
            let left = rt.block_on(openraft::RaftLogReader::try_get_log_entries(&mut log, 1..=60)).unwrap();
            let _ = done.send(left.first().map(|e| e.log_id.index));
        });
        let first = returned.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(first, Ok(Some(41)), "the purge waited for the flush, or its entries were still read");
        // The marker is written before the purge returns, so no append after it can reach the
        // disk without it (a marker written later could leave a hole at restart).
        assert_eq!(stored_purge(&stores), Some(40), "the marker was not written by the purge itself");
    }
    stores.log.settle_purges();
    assert_eq!(stored_purge(&stores), Some(40));
    assert!(stores.db.log.get(super::be(40)).unwrap().is_none());
}

/// openraft purges a follower's log up to a received snapshot once, as it hands it over; the
/// purge is limited to what was applied while the install runs, and the entries the follower
/// never had are followed by new ones past the snapshot. At the next start openraft loads every
/// log id from the marker on: the gap must be closed first.
#[test]
fn a_restart_after_an_install_finds_no_gap_behind_the_snapshot() {
    let (src_dir, dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let metrics = || Arc::new(StorageMetrics::register(&mut crate::metrics::registry()));
    let src = open(src_dir.path(), Default::default(), metrics()).unwrap();
    let entries: Vec<Entry> = (1..=40).map(|i| entry(i, "", node(&format!("n{i}")))).collect();
    src.core.apply(entries[..30].to_vec()).unwrap();
    let (meta, path) = src.core.build_snapshot().unwrap();
    {
        let stores = open(dir.path(), Default::default(), metrics()).unwrap();
        for e in &entries[..10] {
            stores.db.log.insert(super::be(e.log_id.index), super::encode(e)).unwrap();
        }
        stores.core.apply(entries[..10].to_vec()).unwrap();
        // The leader's snapshot (through 30) arrives; the purge openraft asks for meanwhile
        // stops at what is applied (10).
        stores.db.set_receiving_snapshot(true);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut log = stores.log.clone();
        rt.block_on(openraft::storage::RaftLogStorage::purge(&mut log, entries[29].log_id)).unwrap();
        let copy = dir.path().join("received.snap");
        std::fs::copy(&path, &copy).unwrap();
        let published = stores.core.files.adopt(&copy, &meta).unwrap();
        stores.core.install(&meta, &published).unwrap();
        stores.db.set_receiving_snapshot(false);
        // New entries past the snapshot are appended and made durable.
        for e in &entries[30..] {
            stores.db.log.insert(super::be(e.log_id.index), super::encode(e)).unwrap();
        }
        rt.block_on(stores.log.sync()).unwrap();
        stores.log.settle_purges();
    }
    let stores = reopen(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut log = stores.log.clone();
    let state = rt.block_on(openraft::storage::RaftLogStorage::get_log_state(&mut log)).unwrap();
    let from = state.last_purged_log_id.map_or(1, |l| l.index + 1);
    let last = state.last_log_id.unwrap().index;
    assert_eq!(last, 40);
    let present = rt.block_on(openraft::RaftLogReader::try_get_log_entries(&mut log, from..=last)).unwrap();
    assert_eq!(
        present.len() as u64,
        last - from + 1,
        "a gap in the log after {:?}",
        state.last_purged_log_id
    );
}
