//! Embeddings as data: one vector per atom and model, one dimension per model and space, the
//! vectors go with their atom, apply announces them, and the vector index built from storage
//! equals the one folded from announcements; a backfill stores only what is still unembedded, and
//! space settings persist until the space is deleted.

use tempfile::TempDir;

use super::{at, link, node, result, store};
use crate::command::{AtomRef, AtomVector, Command, CommandResult, Rejection};
use crate::similarity::follow::build;
use crate::storage::reads::GraphReader;

fn embed(id: u64, model: &str, vector: Option<Vec<f32>>) -> Command {
    Command::SetEmbedding { id: AtomRef::Id(id), model: model.into(), vector }
}

#[test]
fn vectors_keep_their_model_and_dimension_and_go_with_their_atom() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let reader = GraphReader::new(core.clone());
    let rx = reader.subscribe();
    let mut feed = crate::storage::events::ChangeFeed::new(rx, 0);
    let CommandResult::Atom { atom: cat, .. } =
        result(core.apply(vec![at(1, "s", "a", node("cat"))]).unwrap())
    else {
        panic!()
    };
    let CommandResult::Atom { atom: dog, .. } =
        result(core.apply(vec![at(2, "s", "b", node("dog"))]).unwrap())
    else {
        panic!()
    };
    let stored =
        result(core.apply(vec![at(3, "s", "c", embed(cat.id, "m", Some(vec![1.0, 0.0, 0.0])))]).unwrap());
    assert_eq!(stored, CommandResult::Embedded { id: cat.id, model: "m".into(), dim: Some(3) });
    let mismatch =
        result(core.apply(vec![at(4, "s", "d", embed(dog.id, "m", Some(vec![1.0, 0.0])))]).unwrap());
    assert_eq!(
        mismatch,
        CommandResult::Rejected {
            error: Rejection::DimensionMismatch { model: "m".into(), expected: 3, got: 2 }
        }
    );
    // Another model may have another dimension; another space may use the same model name.
    result(core.apply(vec![at(5, "s", "e", embed(dog.id, "m2", Some(vec![0.5, 0.5])))]).unwrap());
    result(core.apply(vec![at(6, "s", "f", embed(dog.id, "m", Some(vec![0.0, 1.0, 0.0])))]).unwrap());
    let models = reader.with(|v| v.embedding_models("s")).unwrap();
    let summary: Vec<(&str, u32, u64)> =
        models.iter().map(|m| (m.model.as_str(), m.dim, m.vectors)).collect();
    assert_eq!(summary, vec![("m", 3, 2), ("m2", 2, 1)]);
    assert_eq!(reader.with(|v| v.embedding("s", dog.id, "m2")).unwrap(), vec![0.5, 0.5]);
    assert!(reader.with(|v| v.embedding("other", dog.id, "m2")).is_err(), "another space's atom");

    // The index folded from announcements equals one built from storage, after removals too.
    let mut folded = build(&reader).unwrap();
    assert_eq!(folded.vectors(), 3);
    result(core.apply(vec![at(7, "s", "g", embed(cat.id, "m", None))]).unwrap());
    result(core.apply(vec![at(8, "s", "h", Command::DeleteAtom { id: AtomRef::Id(dog.id) })]).unwrap());
    assert!(
        reader.with(|v| v.embedding_models("s")).unwrap().is_empty(),
        "no model keeps a count of nothing"
    );
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut vectors_announced = 0;
    loop {
        match runtime.block_on(feed.next()) {
            crate::storage::events::Feed::Changes { index, changes } => {
                for (space, c) in &changes.spaces {
                    for id in &c.removed {
                        folded.remove_atom(space, *id);
                    }
                    for (id, models) in &c.vectors {
                        vectors_announced += models.len();
                        for (model, v) in models {
                            folded.set(space, model, *id, "ConceptNode", v.as_deref()).unwrap();
                        }
                    }
                }
                if index == 8 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(vectors_announced, 4, "three stored, one removed; the deleted atom's go unlisted");
    assert_eq!(folded.vectors(), 0);
    assert_eq!(build(&reader).unwrap().vectors(), 0);
}

fn backfill(model: &str, vectors: Vec<(u64, Vec<f32>)>) -> Command {
    let vectors = vectors.into_iter().map(|(id, vector)| AtomVector { id, vector }).collect();
    Command::Backfill { model: model.into(), vectors }
}

/// The atom ids a batch of node and link additions answered, in op order.
fn batch_ids(answer: CommandResult) -> Vec<u64> {
    let CommandResult::Batch { results } = answer else { panic!("not a batch: {answer:?}") };
    results
        .iter()
        .map(|r| match r {
            CommandResult::Atom { atom, .. } => atom.id,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn configure(auto_embed: bool) -> Command {
    Command::ConfigureSpace { auto_embed }
}

#[test]
fn a_backfill_stores_only_what_is_still_unembedded_and_never_overwrites() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let reader = GraphReader::new(core.clone());
    let ops =
        vec![node("cat"), node("dog"), node("eel"), node("gone"), link(vec![AtomRef::Op(0), AtomRef::Op(1)])];
    let ids = batch_ids(result(core.apply(vec![at(1, "s", "a", Command::Batch { ops })]).unwrap()));
    let (cat, dog, eel, gone, link_id) = (ids[0], ids[1], ids[2], ids[3], ids[4]);
    result(core.apply(vec![at(2, "s", "b", embed(dog, "m", Some(vec![0.0, 1.0, 0.0])))]).unwrap());
    result(core.apply(vec![at(3, "s", "c", Command::DeleteAtom { id: AtomRef::Id(gone) })]).unwrap());

    let filled = result(
        core.apply(vec![at(
            4,
            "s",
            "",
            backfill(
                "m",
                vec![
                    (cat, vec![1.0, 0.0, 0.0]),
                    (dog, vec![9.0, 9.0, 9.0]), // embedded meanwhile: kept as it was
                    (gone, vec![1.0, 1.0, 0.0]), // deleted meanwhile
                    (link_id, vec![0.0, 0.0, 1.0]), // a link has no name to embed
                    (eel, vec![1.0, 0.0]),      // another dimension than the model's
                    (9_999, vec![1.0, 0.0, 0.0]), // never existed
                    (cat, vec![0.0, 0.0, 1.0]), // twice in one entry: the first stands
                ],
            ),
        )])
        .unwrap(),
    );
    assert_eq!(filled, CommandResult::Backfilled { stored: 1, skipped: 6 });
    assert_eq!(reader.with(|v| v.embedding("s", cat, "m")).unwrap(), vec![1.0, 0.0, 0.0]);
    assert_eq!(reader.with(|v| v.embedding("s", dog, "m")).unwrap(), vec![0.0, 1.0, 0.0]);
    assert!(reader.with(|v| v.embedding("s", eel, "m")).is_err());
    assert!(reader.with(|v| v.embedding("s", link_id, "m")).is_err());
    let models = reader.with(|v| v.embedding_models("s")).unwrap();
    assert_eq!(models.iter().map(|m| (m.model.as_str(), m.vectors)).collect::<Vec<_>>(), vec![("m", 2)]);

    // What the backfill would look at next: only eel is a node without a vector of m.
    let page = reader.with(|v| v.unembedded_nodes("s", "m", None, 100, 100)).unwrap();
    assert_eq!(page.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), vec!["eel"]);
    assert_eq!(page.next, None, "the scan reached the end of the space");
    let among = reader.with(|v| v.unembedded_among("s", "m", &[cat, eel, link_id, gone])).unwrap();
    assert_eq!(among.iter().map(|n| n.id).collect::<Vec<_>>(), vec![eel]);
    // A scan in steps: a budget of one node per step walks the space one name at a time.
    let mut at_key = None;
    let mut steps = 0;
    loop {
        let page = reader.with(|v| v.unembedded_nodes("s", "m", at_key.as_deref(), 1, 10)).unwrap();
        steps += 1;
        match page.next {
            Some(next) => at_key = Some(next),
            None => break,
        }
        assert!(steps < 10, "the scan does not end");
    }
    assert_eq!(steps, 4, "three live nodes, one step each, and the step that finds the end");
    assert!(reader.with(|v| v.unembedded_nodes("other", "m", None, 10, 10)).unwrap().nodes.is_empty());
}

#[test]
fn space_settings_persist_in_an_empty_space_and_go_with_its_deletion() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let reader = GraphReader::new(core.clone());
    let set = result(core.apply(vec![at(1, "fresh", "a", configure(true))]).unwrap());
    assert_eq!(set, CommandResult::SpaceConfigured { name: "fresh".into(), auto_embed: true });
    let listed = reader.with(|v| v.spaces(None, 10)).unwrap();
    assert_eq!(
        listed.items.iter().map(|s| (s.name.as_str(), s.atoms(), s.auto_embed)).collect::<Vec<_>>(),
        vec![("fresh", 0, true)],
        "a space with settings is listed though it holds nothing"
    );
    assert_eq!(reader.with(|v| v.auto_embed_spaces()).unwrap(), vec!["fresh".to_string()]);
    // Turning the setting off leaves nothing: an empty space with defaults has no row.
    result(core.apply(vec![at(2, "fresh", "b", configure(false))]).unwrap());
    assert!(reader.with(|v| v.spaces(None, 10)).unwrap().items.is_empty());

    result(core.apply(vec![at(3, "doomed", "c", node("x"))]).unwrap());
    result(core.apply(vec![at(4, "doomed", "d", configure(true))]).unwrap());
    result(core.apply(vec![at(5, "doomed", "e", Command::DeleteSpace { name: "doomed".into() })]).unwrap());
    assert!(
        reader.with(|v| v.auto_embed_spaces()).unwrap().is_empty(),
        "a space being deleted is not embedded"
    );
    let refused = result(core.apply(vec![at(6, "doomed", "f", configure(true))]).unwrap());
    assert_eq!(
        refused,
        CommandResult::Rejected { error: Rejection::SpaceDeleting { name: "doomed".into() } }
    );
}

#[test]
fn the_content_digest_holds_vectors_whatever_order_the_atoms_were_made_in() {
    // p has a named value; q a named value and a vector. Made p first, q is both the last atom
    // with values and the first with a vector; made q first, it is neither: the digest must
    // fold q's record alike both ways.
    let digest = |order: [&str; 2], vector: [f32; 2]| {
        let dir = TempDir::new().unwrap();
        let core = store(&dir).core;
        let reader = GraphReader::new(core.clone());
        let mut index = 0;
        let mut apply = |command: Command| {
            index += 1;
            result(core.apply(vec![at(index, "s", "", command)]).unwrap())
        };
        let mut ids = std::collections::HashMap::new();
        for name in order {
            let CommandResult::Atom { atom, .. } = apply(node(name)) else { panic!() };
            ids.insert(name, atom.id);
        }
        for name in ["p", "q"] {
            let value = Command::SetValue {
                id: AtomRef::Id(ids[name]),
                key: "k".into(),
                value: serde_json::json!(name),
                expect: None,
            };
            apply(value);
        }
        apply(embed(ids["q"], "m", Some(vector.to_vec())));
        let d = reader.content_digest("s").unwrap();
        assert_eq!((d.atoms, d.values, d.vectors), (2, 2, 1));
        d.digest
    };
    let made_p_first = digest(["p", "q"], [1.0, 0.5]);
    assert_eq!(digest(["q", "p"], [1.0, 0.5]), made_p_first, "the digest depends on the ids");
    assert_ne!(digest(["p", "q"], [1.0, 0.25]), made_p_first, "a vector is not content");
}

#[test]
fn a_set_of_embeddings_replaces_clears_and_skips_what_is_gone() {
    let dir = TempDir::new().unwrap();
    let core = store(&dir).core;
    let reader = GraphReader::new(core.clone());
    let ops = vec![node("cat"), node("dog"), node("gone"), link(vec![AtomRef::Op(0), AtomRef::Op(1)])];
    let ids = batch_ids(result(core.apply(vec![at(1, "s", "a", Command::Batch { ops })]).unwrap()));
    let (cat, dog, gone, link_id) = (ids[0], ids[1], ids[2], ids[3]);
    result(core.apply(vec![at(2, "s", "b", embed(dog, "fastrp-2", Some(vec![1.0, 0.0])))]).unwrap());
    result(core.apply(vec![at(3, "s", "c", embed(cat, "fastrp-2", Some(vec![0.0, 1.0])))]).unwrap());
    result(core.apply(vec![at(4, "s", "d", Command::DeleteAtom { id: AtomRef::Id(gone) })]).unwrap());

    let vectors =
        [(dog, vec![0.5, 0.5]), (link_id, vec![0.0, 2.0]), (gone, vec![1.0, 1.0]), (cat, vec![1.0])];
    let command = Command::SetEmbeddings {
        model: "fastrp-2".into(),
        vectors: vectors.into_iter().map(|(id, vector)| AtomVector { id, vector }).collect(),
        cleared: vec![cat, 9_999],
    };
    command.validate().unwrap();
    let set = result(core.apply(vec![at(5, "s", "", command)]).unwrap());
    // dog replaced, the link stored (structure covers links); gone, the 1-d vector for cat and
    // the never-existing atom skipped; cat's old vector cleared.
    assert_eq!(set, CommandResult::EmbeddingsSet { stored: 2, cleared: 1, skipped: 3 });
    assert_eq!(reader.with(|v| v.embedding("s", dog, "fastrp-2")).unwrap(), vec![0.5, 0.5]);
    assert_eq!(reader.with(|v| v.embedding("s", link_id, "fastrp-2")).unwrap(), vec![0.0, 2.0]);
    assert!(reader.with(|v| v.embedding("s", cat, "fastrp-2")).is_err());
    let models = reader.with(|v| v.embedding_models("s")).unwrap();
    assert_eq!(
        models.iter().map(|m| (m.model.as_str(), m.vectors)).collect::<Vec<_>>(),
        vec![("fastrp-2", 2)]
    );
    assert_eq!(build(&reader).unwrap().vectors(), 2, "the index built from storage agrees");

    let empty = Command::SetEmbeddings { model: "fastrp-2".into(), vectors: vec![], cleared: vec![] };
    assert!(empty.validate().unwrap_err().contains("1..="));
}
