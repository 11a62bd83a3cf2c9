//! Memory spaces and bounded housekeeping: spaces keep their own uniqueness, links and
//! idempotency keys; a deleted space goes a bounded number of rows per tick; observation
//! retention holds by count and age; expired idempotency keys go; apply announces the atoms
//! each run changed, per space.

use tempfile::TempDir;

use super::{at, link, node, result, store};
use crate::command::{AtomRef, Command, CommandResult, Maintenance, Rejection};
use crate::storage::reads::GraphReader;
use crate::typ::Entry;

fn tick(budget: u64, per_subject: u64, max_age_ms: u64) -> Command {
    Command::Tick {
        maintenance: Maintenance {
            observations_per_subject: per_subject,
            observation_max_age_ms: max_age_ms,
            budget,
        },
    }
}

fn observe(subject: &str) -> Command {
    Command::Observe {
        subject: subject.into(),
        success: true,
        duration_ms: 10,
        bytes: 100,
        features: serde_json::Value::Null,
        message: String::new(),
    }
}

#[test]
fn spaces_keep_their_own_atoms_links_and_keys() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let CommandResult::Atom { atom: a, created: true } =
        result(core.apply(vec![at(1, "alice", "k", node("cat"))]).unwrap())
    else {
        panic!()
    };
    // The same (type, name) in another space is another atom; the same key applies there.
    let CommandResult::Atom { atom: b, created: true } =
        result(core.apply(vec![at(2, "bob", "k", node("cat"))]).unwrap())
    else {
        panic!("the same key in another space is another write")
    };
    assert_ne!(a.id, b.id);
    assert_eq!((a.space.as_str(), b.space.as_str()), ("alice", "bob"));
    // A link may only join atoms of its own space.
    let cross = result(
        core.apply(vec![at(3, "alice", "", link(vec![AtomRef::Id(a.id), AtomRef::Id(b.id)]))]).unwrap(),
    );
    assert_eq!(cross, CommandResult::Rejected { error: Rejection::UnknownAtom { id: b.id } });
    let reader = GraphReader::new(core.clone());
    assert!(reader.with(|v| v.atom("alice", b.id)).is_err(), "bob's atom is not alice's");
    assert_eq!(reader.with(|v| v.find_node("bob", "ConceptNode", "cat")).unwrap().map(|x| x.id), Some(b.id));
    let spaces = reader.with(|v| v.spaces(None, 10)).unwrap();
    let names: Vec<(&str, u64)> = spaces.items.iter().map(|s| (s.name.as_str(), s.nodes)).collect();
    assert_eq!(names, vec![("alice", 1), ("bob", 1)]);
}

#[test]
fn a_deleted_space_goes_a_bounded_number_of_rows_per_tick() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let mut index = 0;
    let mut next = || {
        index += 1;
        index
    };
    for chunk in 0..25 {
        let mut ops: Vec<Command> = (0..100).map(|j| node(&format!("n{chunk}-{j}"))).collect();
        ops.push(link(vec![AtomRef::Op(0), AtomRef::Op(1)]));
        core.apply(vec![at(next(), "doomed", "", Command::Batch { ops })]).unwrap();
    }
    core.apply(vec![at(
        next(),
        "doomed",
        "",
        Command::CreateSession { ttl_ms: 60_000, metadata: serde_json::Value::Null },
    )])
    .unwrap();
    core.apply(vec![at(next(), "doomed", "", observe("job"))]).unwrap();
    core.apply(vec![at(next(), "kept", "", node("survivor"))]).unwrap();
    let reader = GraphReader::new(core.clone());
    let atoms = |r: &GraphReader| {
        r.with(|v| v.spaces(None, 10)).unwrap().items.iter().find(|s| s.name == "doomed").map(|s| s.atoms())
    };
    assert_eq!(atoms(&reader), Some(2525));

    let deleting = result(
        core.apply(vec![at(next(), "doomed", "", Command::DeleteSpace { name: "doomed".into() })]).unwrap(),
    );
    assert_eq!(deleting, CommandResult::SpaceDeleting { name: "doomed".into() });
    assert!(reader.with(|v| v.atom("doomed", 1)).is_err(), "a space being deleted answers no reads");
    let write = result(core.apply(vec![at(next(), "doomed", "", node("late"))]).unwrap());
    assert_eq!(write, CommandResult::Rejected { error: Rejection::SpaceDeleting { name: "doomed".into() } });

    let mut ticks = 0;
    while let Some(left) = atoms(&reader) {
        let before = left;
        core.apply(vec![at(next(), "default", "", tick(1000, 0, 0))]).unwrap();
        ticks += 1;
        let after = atoms(&reader).unwrap_or(0);
        assert!(before - after <= 1000, "one tick removed {} atoms, more than its budget", before - after);
        assert!(ticks < 10, "the deletion does not finish");
    }
    assert_eq!(ticks, 3, "2525 atoms and the rest at 1000 rows a tick");
    // The other space is untouched, and the name is free again.
    assert!(reader.with(|v| v.find_node("kept", "ConceptNode", "survivor")).unwrap().is_some());
    let again = result(core.apply(vec![at(next(), "doomed", "", node("n0-0"))]).unwrap());
    assert!(matches!(again, CommandResult::Atom { created: true, .. }), "{again:?}");
}

#[test]
fn observations_are_kept_by_count_and_age() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let reader = GraphReader::new(core.clone());
    let count = |subject: &str| reader.with(|v| v.observation_stats("s", subject)).unwrap().count;
    // A limit of 5 per subject, set by a tick: inserts keep each subject at it.
    core.apply(vec![at(1, "default", "", tick(100, 5, 0))]).unwrap();
    for i in 0..8 {
        core.apply(vec![at(10 + i, "s", "", observe("a"))]).unwrap();
    }
    assert_eq!(count("a"), 5);
    let page = reader.with(|v| v.observations("s", "a", None, 100)).unwrap();
    assert_eq!(page.items.len(), 5);
    assert_eq!(page.items[0].recorded_ms, 17, "newest first, the oldest went");
    // A lower limit from a later tick trims on the tick.
    core.apply(vec![at(100, "default", "", tick(100, 2, 0))]).unwrap();
    assert_eq!(count("a"), 2);
    // By age: observations recorded before now - max_age go with a tick.
    for i in 0..3 {
        core.apply(vec![at(200 + i, "s", "", observe("b"))]).unwrap();
    }
    core.apply(vec![at(1_000, "default", "", tick(100, 0, 799))]).unwrap();
    assert_eq!(count("b"), 2, "the one recorded at 200 is older than 1000 - 799");
    assert_eq!(count("a"), 0, "a's were all older");
}

#[test]
fn expired_idempotency_keys_go_and_a_late_replay_applies_again() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let window = crate::storage::state_machine::IDEMPOTENCY_WINDOW;
    for i in 1..=50 {
        core.apply(vec![at(i, "default", &format!("key-{i}"), node(&format!("n{i}")))]).unwrap();
    }
    // Within the window a replay answers the first result.
    let replay = result(core.apply(vec![at(60, "default", "key-3", node("other"))]).unwrap());
    assert!(matches!(replay, CommandResult::Atom { created: true, atom } if atom.name() == Some("n3")));
    // One run far past the window: each proposal evicts a bounded few, together all of them.
    let run: Vec<Entry> =
        (0..20).map(|i| at(window + 100 + i, "default", "", node(&format!("later{i}")))).collect();
    core.apply(run).unwrap();
    let late = result(core.apply(vec![at(window + 200, "default", "key-3", node("again"))]).unwrap());
    assert!(
        matches!(&late, CommandResult::Atom { created: true, atom } if atom.name() == Some("again")),
        "{late:?}"
    );
}

#[test]
fn apply_announces_the_atoms_each_run_changed_per_space() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let mut events = core.subscribe();
    let batch =
        Command::Batch { ops: vec![node("a"), node("b"), link(vec![AtomRef::Op(0), AtomRef::Op(1)])] };
    core.apply(vec![at(1, "x", "", batch), at(2, "y", "", node("c"))]).unwrap();
    let crate::storage::StateEvent::Applied { first, index, changes } = events.try_recv().unwrap() else {
        panic!()
    };
    assert_eq!((first, index), (1, 2));
    assert_eq!(changes.spaces["x"].added.iter().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(changes.spaces["y"].added.len(), 1);
    let set = Command::SetTruth {
        id: AtomRef::Id(1),
        tv: crate::model::TruthValue { strength: 0.5, confidence: 0.5 },
    };
    core.apply(vec![at(3, "x", "", set), at(4, "x", "", Command::DeleteAtom { id: AtomRef::Id(2) })])
        .unwrap();
    let crate::storage::StateEvent::Applied { changes, .. } = events.try_recv().unwrap() else { panic!() };
    let x = &changes.spaces["x"];
    assert_eq!(x.updated.iter().copied().collect::<Vec<_>>(), vec![1]);
    assert_eq!(x.removed.iter().copied().collect::<Vec<_>>(), vec![2, 3], "the link went with its member");
    // A rejected command announces nothing.
    core.apply(vec![at(5, "x", "", Command::DeleteAtom { id: AtomRef::Id(99) })]).unwrap();
    let crate::storage::StateEvent::Applied { changes, .. } = events.try_recv().unwrap() else { panic!() };
    assert!(changes.is_empty(), "{changes:?}");
}
