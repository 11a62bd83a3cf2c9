//! Evidence lists: a source counts once (a repeat changes neither the truth value nor the
//! list), new sources revise the truth value by PLN revision and append with the apply time,
//! the list keeps the newest `limit` entries but remembers every source, and an atom of another
//! space is unknown.

use serde_json::json;
use tempfile::TempDir;

use super::{at, node, result, store};
use crate::command::{AtomRef, Command, CommandResult, Rejection};
use crate::model::TruthValue;
use crate::storage::reads::GraphReader;

fn evidence(source: &str, confidence: f64, limit: u32) -> Command {
    Command::AddEvidence {
        id: AtomRef::Id(1),
        tv: TruthValue { strength: 1.0, confidence },
        key: "provenance".into(),
        source: source.into(),
        entry: json!({ "model": "m@1" }),
        limit,
    }
}

#[test]
fn a_source_counts_once_and_the_newest_entries_are_kept() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let reader = GraphReader::new(core.clone());
    result(core.apply(vec![at(1, "s", "n", node("paris"))]).unwrap());
    let tv = |reader: &GraphReader| reader.with(|v| v.atom("s", 1)).unwrap().tv;
    let list = |reader: &GraphReader| reader.with(|v| v.value("s", 1, "provenance")).unwrap().unwrap();

    let r = result(core.apply(vec![at(2, "s", "e1", evidence("text-a", 0.5, 2))]).unwrap());
    assert_eq!(r, CommandResult::Evidence { id: 1, added: true, sources: 1, full: false });
    let first = tv(&reader);
    assert_eq!(
        first,
        TruthValue { strength: 1.0, confidence: 0.5 },
        "revised from the default (no evidence)"
    );
    let l = list(&reader);
    assert_eq!(l["sources"], json!([{ "model": "m@1", "source": "text-a", "time_ms": 2 }]));
    assert_eq!(l["total"], 1);

    // The same source again, under a new idempotency key: nothing changes.
    let r = result(core.apply(vec![at(3, "s", "e2", evidence("text-a", 0.9, 2))]).unwrap());
    assert_eq!(r, CommandResult::Evidence { id: 1, added: false, sources: 1, full: false });
    assert_eq!(tv(&reader), first, "a repeated source was counted twice");
    assert_eq!(list(&reader), l);

    // Two more sources: each revises (confidence grows), the list keeps the newest two.
    for (i, source) in ["text-b", "text-c"].iter().enumerate() {
        let r = result(core.apply(vec![at(4 + i as u64, "s", source, evidence(source, 0.5, 2))]).unwrap());
        assert!(matches!(r, CommandResult::Evidence { added: true, .. }), "{r:?}");
    }
    let three = tv(&reader);
    assert!(three.confidence > 0.5 && three.confidence < 1.0, "{three:?}");
    let l = list(&reader);
    let kept: Vec<&str> =
        l["sources"].as_array().unwrap().iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(kept, ["text-b", "text-c"]);
    assert_eq!(l["seen"], json!(["text-a", "text-b", "text-c"]));
    assert_eq!(l["total"], 3);
    // The dropped entry's source is still remembered.
    let r = result(core.apply(vec![at(6, "s", "e6", evidence("text-a", 0.9, 2))]).unwrap());
    assert!(matches!(r, CommandResult::Evidence { added: false, sources: 3, .. }), "{r:?}");
    assert_eq!(tv(&reader), three);

    // Another space's command does not see the atom.
    let r = result(core.apply(vec![at(7, "other", "e7", evidence("text-d", 0.9, 2))]).unwrap());
    assert_eq!(r, CommandResult::Rejected { error: Rejection::UnknownAtom { id: 1 } });
}

#[test]
fn a_value_set_by_hand_under_the_key_is_refused_not_a_panic() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    result(core.apply(vec![at(1, "s", "n", node("paris"))]).unwrap());
    for (i, value) in [json!(5), json!("text"), json!([1, 2])].into_iter().enumerate() {
        let set = Command::SetValue { id: AtomRef::Id(1), key: "provenance".into(), value, expect: None };
        let index = 2 + 2 * i as u64;
        result(core.apply(vec![at(index, "s", &format!("set{i}"), set)]).unwrap());
        let r = result(
            core.apply(vec![at(index + 1, "s", &format!("e{i}"), evidence("text-a", 0.5, 2))]).unwrap(),
        );
        assert_eq!(
            r,
            CommandResult::Rejected { error: Rejection::NotEvidence { id: 1, key: "provenance".into() } }
        );
    }
    // An object set by hand is taken as a list to extend.
    let set = Command::SetValue {
        id: AtomRef::Id(1),
        key: "provenance".into(),
        value: json!({ "note": "kept" }),
        expect: None,
    };
    result(core.apply(vec![at(20, "s", "obj", set)]).unwrap());
    let r = result(core.apply(vec![at(21, "s", "e-obj", evidence("text-a", 0.5, 2))]).unwrap());
    assert!(matches!(r, CommandResult::Evidence { added: true, sources: 1, .. }), "{r:?}");
}

#[test]
fn evidence_is_validated() {
    let bad = |c: Command| c.validate().unwrap_err();
    assert!(bad(evidence("", 0.5, 2)).contains("source"));
    assert!(bad(evidence("a", 1.5, 2)).contains("confidence"));
    assert!(bad(evidence("a", 0.5, 0)).contains("limit"));
    let Command::AddEvidence { id, tv, key, source, limit, .. } = evidence("a", 0.5, 2) else { panic!() };
    let not_object = Command::AddEvidence { id, tv, key, source, entry: json!([1]), limit };
    assert!(bad(not_object).contains("JSON object"));
}
