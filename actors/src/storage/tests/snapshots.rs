//! Snapshot builds, installs and files under concurrency and damage: a build is exact while
//! apply goes on, readers never see a half-installed state, damaged files are refused before
//! anything changes, and a late older snapshot never removes a newer one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{entry, link, node};
use crate::command::{AtomRef, Command};
use crate::storage::metrics::StorageMetrics;
use crate::storage::reads::GraphReader;
use crate::storage::{open, snapshot, Stores};
use crate::typ::Entry;

fn store(dir: &TempDir) -> Stores {
    open(dir.path(), Default::default(), Arc::new(StorageMetrics::register(&mut crate::metrics::registry())))
        .unwrap()
}

/// `count` entries from `first` on, each adding 100 nodes and linking pairs of them.
fn graph_entries(first: u64, count: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|i| {
            let mut ops: Vec<Command> = (0..100).map(|j| node(&format!("n{i}-{j}"))).collect();
            ops.extend((0..50).map(|j| link(vec![AtomRef::Op(2 * j), AtomRef::Op(2 * j + 1)])));
            entry(i, &format!("g{i}"), Command::Batch { ops })
        })
        .collect()
}

/// Entries that change what exists: deletes (with their cascades), values, new atoms.
fn churn_entries(first: u64, count: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|i| {
            let command = match i % 3 {
                0 => Command::DeleteAtom { id: AtomRef::Id(i * 7 % 20_000 + 1) },
                1 => Command::SetValue {
                    id: AtomRef::Id(i * 13 % 20_000 + 1),
                    key: "churn".into(),
                    value: serde_json::json!(i),
                    expect: None,
                },
                _ => node(&format!("late-{i}")),
            };
            entry(i, &format!("c{i}"), command)
        })
        .collect()
}

#[test]
fn a_build_is_exact_while_apply_goes_on_and_apply_never_waits_for_it() {
    let (src_dir, dst_dir, ref_dir) =
        (TempDir::new().unwrap(), TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = store(&src_dir);
    for chunk in graph_entries(1, 200).chunks(20) {
        src.core.apply(chunk.to_vec()).unwrap();
    }
    let core = src.core.clone();
    let build = std::thread::spawn(move || core.build_snapshot().unwrap());
    let opened = Instant::now();
    while src.core.views.open_count() == 0 {
        assert!(opened.elapsed() < Duration::from_secs(10), "the build never opened its view");
        std::thread::yield_now();
    }
    // Apply goes on during the build; each run is timed.
    let mut slowest = Duration::ZERO;
    let mut applied_during = 0;
    for e in churn_entries(201, 3000) {
        let started = Instant::now();
        src.core.apply(vec![e]).unwrap();
        slowest = slowest.max(started.elapsed());
        applied_during += usize::from(src.core.views.open_count() > 0);
    }
    let (meta, path) = build.join().unwrap();
    assert_eq!(meta.last_log_id.map(|l| l.index), Some(200), "the view opened before the churn");
    assert!(applied_during > 0, "no apply overlapped the build");
    eprintln!("apply during the build: {applied_during} entries overlapped it, slowest took {slowest:?}");

    // The snapshot is exactly the state at index 200: a store replayed to 200 has its digest.
    let reference = store(&ref_dir);
    for chunk in graph_entries(1, 200).chunks(20) {
        reference.core.apply(chunk.to_vec()).unwrap();
    }
    let dst = store(&dst_dir);
    dst.core.install(&snapshot::verify(&path).unwrap(), &path).unwrap();
    assert_eq!(dst.core.digest().unwrap(), reference.core.digest().unwrap());
    assert_ne!(src.core.digest().unwrap(), reference.core.digest().unwrap(), "the churn changed the source");
}

#[test]
fn reads_never_see_a_half_installed_snapshot() {
    let (src_dir, dst_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = store(&src_dir);
    let dst = store(&dst_dir);
    // Both hold the same first 100 entries; the snapshot has 100 more.
    for chunk in graph_entries(1, 100).chunks(20) {
        src.core.apply(chunk.to_vec()).unwrap();
        dst.core.apply(chunk.to_vec()).unwrap();
    }
    for chunk in graph_entries(101, 100).chunks(20) {
        src.core.apply(chunk.to_vec()).unwrap();
    }
    let (meta, path) = src.core.build_snapshot().unwrap();
    let reader = GraphReader::new(dst.core.clone());
    let (done, reads, misses) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (reader, done, reads, misses) = (reader.clone(), done.clone(), reads.clone(), misses.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let ok = reader.with(|v| {
                        let atom = v.atom("default", 1).is_ok();
                        let found = v.find_node("default", "ConceptNode", "n50-7").ok().flatten().is_some();
                        let listed = v
                            .of_type("default", "ConceptNode", None, 20_000)
                            .map(|a| a.items.len())
                            .unwrap_or(0)
                            >= 10_000;
                        atom && found && listed
                    });
                    reads.fetch_add(1, Ordering::SeqCst);
                    misses.fetch_add(u64::from(!ok), Ordering::SeqCst);
                }
            })
        })
        .collect();
    while reads.load(Ordering::SeqCst) < 2 {
        std::thread::yield_now();
    }
    let before = reads.load(Ordering::SeqCst);
    dst.core.install(&meta, &path).unwrap();
    let during = reads.load(Ordering::SeqCst) - before;
    done.store(true, Ordering::SeqCst);
    readers.into_iter().for_each(|r| r.join().unwrap());
    assert!(during > 0, "no read ran during the install");
    assert_eq!(
        misses.load(Ordering::SeqCst),
        0,
        "a read saw a half-installed state ({during} reads during it)"
    );
    assert_eq!(dst.core.digest().unwrap(), src.core.digest().unwrap());
    assert!(reader.with(|v| v.find_node("default", "ConceptNode", "n150-3")).unwrap().is_some());
}

#[test]
fn a_damaged_or_truncated_snapshot_is_refused_before_anything_changes() {
    let (src_dir, dst_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = store(&src_dir);
    src.core.apply(graph_entries(1, 30)).unwrap();
    let (meta, path) = src.core.build_snapshot().unwrap();
    let dst = store(&dst_dir);
    dst.core.apply(graph_entries(1, 3)).unwrap();
    let before = dst.core.digest().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let body_middle = bytes.len() / 2;
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("truncated in the body", bytes[..body_middle].to_vec()),
        ("truncated before the trailer", bytes[..bytes.len() - 40].to_vec()),
        ("one byte flipped", {
            let mut b = bytes.clone();
            b[body_middle] ^= 0x40;
            b
        }),
    ];
    for (what, content) in damaged {
        let received = dst_dir.path().join("received.tmp");
        std::fs::write(&received, content).unwrap();
        let files = snapshot::SnapshotFiles::open(dst_dir.path().join("snapshots")).unwrap();
        let err = files.adopt(&received, &meta).expect_err(what);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{what}: {err}");
        assert!(!received.exists(), "{what}: a refused file is removed");
        assert_eq!(dst.core.digest().unwrap(), before, "{what} changed the state");
    }
    // Reading rows bounds every length before allocating it.
    let huge = dst_dir.path().join("huge.snap");
    let mut forged = bytes[..13 + u32::from_be_bytes(bytes[9..13].try_into().unwrap()) as usize].to_vec();
    let mut body = zstd::Encoder::new(Vec::new(), 1).unwrap();
    std::io::Write::write_all(&mut body, &[1, 0xFF, 0xFF, 0xFF, 0xF0]).unwrap();
    forged.extend(body.finish().unwrap());
    forged.extend([0u8; 40]);
    std::fs::write(&huge, forged).unwrap();
    let err = snapshot::read_rows(&huge, |_, _, _| Ok(())).unwrap_err();
    assert!(err.to_string().contains("claims"), "{err}");
}

#[test]
fn a_late_older_snapshot_never_removes_a_newer_one() {
    let dir = TempDir::new().unwrap();
    let s = store(&dir);
    s.core.apply(graph_entries(1, 2)).unwrap();
    let (older_meta, _) = s.core.build_snapshot().unwrap();
    s.core.apply(graph_entries(3, 2)).unwrap();
    let (newer_meta, newer) = s.core.build_snapshot().unwrap();
    // An older build publishing late (as a build racing an install used to).
    let files = snapshot::SnapshotFiles::open(dir.path().join("snapshots")).unwrap();
    let mut late = files.writer(&older_meta).unwrap();
    late.row(crate::storage::Table::Meta, b"k", b"v").unwrap();
    late.finish(&files).unwrap();
    assert!(newer.exists(), "the late older snapshot removed the newer one");
    assert_eq!(files.current().unwrap().unwrap().0, newer_meta);
    // Someone else removed a file first: publishing is not an error.
    std::fs::remove_file(&newer).unwrap();
    s.core.apply(graph_entries(5, 1)).unwrap();
    assert!(s.core.build_snapshot().is_ok());
}

#[test]
fn a_digest_does_not_stop_apply_and_reflects_its_index() {
    let (src_dir, ref_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = store(&src_dir);
    let reference = store(&ref_dir);
    for chunk in graph_entries(1, 200).chunks(20) {
        src.core.apply(chunk.to_vec()).unwrap();
        reference.core.apply(chunk.to_vec()).unwrap();
    }
    let core = src.core.clone();
    let digest = std::thread::spawn(move || core.digest().unwrap());
    let opened = Instant::now();
    while src.core.views.open_count() == 0 && !digest.is_finished() {
        assert!(opened.elapsed() < Duration::from_secs(10), "the digest never opened its view");
        std::thread::yield_now();
    }
    let mut overlapped = 0;
    for e in churn_entries(201, 2000) {
        src.core.apply(vec![e]).unwrap();
        overlapped += usize::from(src.core.views.open_count() > 0);
    }
    let (index, hash) = digest.join().unwrap();
    assert_eq!((index, hash), reference.core.digest().unwrap(), "the digest is the state at its index");
    assert!(overlapped > 0, "no apply overlapped the digest");
}

#[test]
fn a_snapshot_sent_again_after_its_install_is_not_installed_twice() {
    use openraft::storage::RaftStateMachine;
    let (src_dir, dst_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = store(&src_dir);
    src.core.apply(graph_entries(1, 20)).unwrap();
    let (meta, path) = src.core.build_snapshot().unwrap();
    let mut dst = store(&dst_dir);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The leader resends a snapshot whose answer outlasted its timeout: the second copy arrives
    // after the first install finished.
    let mut generations = Vec::new();
    for _ in 0..2 {
        let file = rt.block_on(tokio::fs::File::open(&path)).unwrap();
        rt.block_on(dst.state_machine.install_snapshot(&meta, Box::new(file))).unwrap();
        generations.push(dst.db.tables().generation);
    }
    assert_eq!(generations[0], generations[1], "the same snapshot was installed a second time");
    assert_eq!(src.core.digest().unwrap(), dst.core.digest().unwrap());
}

#[test]
fn an_install_leaves_the_old_trees_to_a_background_drop_that_never_touches_a_newer_state() {
    let generation_trees = |s: &Stores, g: u64| {
        s.db.sled.tree_names().iter().filter(|n| n.ends_with(format!("@{g}").as_bytes())).count()
    };
    let (src_dir, dst_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let src = store(&src_dir);
    let dst = store(&dst_dir);
    dst.core.apply(graph_entries(1, 20)).unwrap();
    src.core.apply(graph_entries(1, 30)).unwrap();
    let (first, first_path) = src.core.build_snapshot().unwrap();
    let copy = src_dir.path().join("first.snap");
    std::fs::copy(&first_path, &copy).unwrap();
    src.core.apply(churn_entries(31, 300)).unwrap();
    let (second, second_path) = src.core.build_snapshot().unwrap();
    {
        // A drop of older trees is under way: installs go on without waiting for it.
        let _dropping = dst.db.dropping.lock().unwrap();
        dst.core.install(&first, &copy).unwrap();
        assert!(generation_trees(&dst, 0) > 0, "the install dropped the old trees itself");
        dst.core.install(&second, &second_path).unwrap();
        assert_eq!(dst.db.tables().generation, 2);
    }
    // The drop queued by the first install (everything below 1) runs after the second switched
    // to generation 2, and must leave it alone.
    let started = Instant::now();
    while generation_trees(&dst, 0) + generation_trees(&dst, 1) > 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the older trees were never dropped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _settled = dst.db.dropping.lock().unwrap();
    assert!(generation_trees(&dst, 2) > 0);
    assert_eq!(src.core.digest().unwrap(), dst.core.digest().unwrap());
}
