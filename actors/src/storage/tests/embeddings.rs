//! Embeddings as data: one vector per atom and model, one dimension per model and space, the
//! vectors go with their atom, apply announces them, and the vector index built from storage
//! equals the one folded from announcements.

use tempfile::TempDir;

use super::{at, node, result, store};
use crate::command::{AtomRef, Command, CommandResult, Rejection};
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
