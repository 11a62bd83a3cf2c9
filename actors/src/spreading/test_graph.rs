//! Hand-built graphs for tests: nodes and links with ids in the order they are added, all in
//! space "s", and the sealed index of them.

use super::index::SpaceIndex;
use crate::model::{Atom, AtomId, AtomKind, AttentionValue, TruthValue};

/// A graph under construction: nodes and links get ids in the order they are added.
#[derive(Default)]
pub struct Graph {
    pub atoms: Vec<Atom>,
}

impl Graph {
    pub fn node(&mut self, name: &str) -> AtomId {
        self.add(
            "ConceptNode",
            AtomKind::Node { name: name.into() },
            TruthValue { strength: 1.0, confidence: 1.0 },
        )
    }

    pub fn link(&mut self, ty: &str, members: &[AtomId], strength: f64, confidence: f64) -> AtomId {
        self.add(ty, AtomKind::Link { outgoing: members.to_vec() }, TruthValue { strength, confidence })
    }

    pub fn add(&mut self, ty: &str, kind: AtomKind, tv: TruthValue) -> AtomId {
        let id = self.atoms.len() as AtomId + 1;
        let av = AttentionValue::default();
        self.atoms.push(Atom {
            id,
            space: "s".into(),
            atom_type: ty.into(),
            kind,
            tv,
            av,
            created_ms: 0,
            updated_ms: 0,
        });
        id
    }

    pub fn sti(&mut self, id: AtomId, sti: f64) {
        self.atoms[id as usize - 1].av.sti = sti;
    }

    pub fn index(&self) -> SpaceIndex {
        let mut index = SpaceIndex::building();
        for a in &self.atoms {
            index.push(a).unwrap();
        }
        index.seal();
        index
    }
}
