//! [`GraphIndex`]: every memory space's [`SpaceIndex`] and the applied index they reflect,
//! built from one scan of the atoms and kept current from the state machine's `Applied`
//! announcements (whose atom records are the state as of the announced index).

use std::collections::HashMap;

use super::index::{IndexError, SpaceIndex};
use crate::model::Atom;
use crate::storage::events::Changes;

/// The index of every space at one applied index.
#[derive(Clone, Debug, Default)]
pub struct GraphIndex {
    spaces: HashMap<String, SpaceIndex>,
    at: u64,
}

/// Builds a [`GraphIndex`] from atoms handed over one at a time in id order.
#[derive(Default)]
pub struct Builder {
    spaces: HashMap<String, SpaceIndex>,
}

impl Builder {
    pub fn push(&mut self, atom: &Atom) -> Result<(), FollowError> {
        let space = match self.spaces.get_mut(&atom.space) {
            Some(space) => space,
            None => self.spaces.entry(atom.space.clone()).or_insert_with(SpaceIndex::building),
        };
        space.push(atom).map_err(|source| FollowError::Index { space: atom.space.clone(), source })
    }

    /// The index, as of applied index `at`.
    pub fn finish(mut self, at: u64) -> GraphIndex {
        for space in self.spaces.values_mut() {
            space.seal();
            space.shrink();
        }
        GraphIndex { spaces: self.spaces, at }
    }
}

/// Why an announcement could not be applied: the caller rebuilds from storage.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("space {space:?}: {source}")]
    Index { space: String, source: IndexError },
    #[error("atom {id}: {cause}")]
    Record { id: u64, cause: String },
    #[error("atom {id} was announced as added or updated without its record")]
    NoRecord { id: u64 },
}

impl GraphIndex {
    /// An index of `atoms`, which must come in id order (the atoms table's key order), as of
    /// applied index `at`.
    pub fn build(atoms: impl IntoIterator<Item = Atom>, at: u64) -> Result<GraphIndex, FollowError> {
        let mut builder = Builder::default();
        for atom in atoms {
            builder.push(&atom)?;
        }
        Ok(builder.finish(at))
    }

    /// The applied index the index reflects.
    pub fn at(&self) -> u64 {
        self.at
    }

    pub fn space(&self, name: &str) -> Option<&SpaceIndex> {
        self.spaces.get(name)
    }

    /// Live atoms over every space.
    pub fn atoms(&self) -> usize {
        self.spaces.values().map(SpaceIndex::live).sum()
    }

    pub fn memory_bytes(&self) -> usize {
        self.spaces.values().map(SpaceIndex::memory_bytes).sum()
    }

    /// Applies what the entries up to `index` changed; answers the spaces that now want a
    /// compaction. On an error the index is part-way and must be rebuilt.
    pub fn apply(&mut self, index: u64, changes: &Changes) -> Result<Vec<String>, FollowError> {
        let mut compact = Vec::new();
        for (name, change) in &changes.spaces {
            let space = self.spaces.entry(name.clone()).or_default();
            let index_err = |source| FollowError::Index { space: name.clone(), source };
            for id in &change.added {
                space.push(&record(change, *id)?).map_err(index_err)?;
            }
            for id in &change.updated {
                if change.records.contains_key(id) {
                    space.update(&record(change, *id)?);
                }
            }
            for id in &change.removed {
                space.remove(*id);
            }
            if space.wants_compaction() {
                compact.push(name.clone());
            }
        }
        self.at = index;
        Ok(compact)
    }

    /// Puts a compacted copy of a space in place (dropping it when nothing in it lives).
    pub fn replace(&mut self, name: &str, space: SpaceIndex) {
        if space.is_empty() {
            self.spaces.remove(name);
        } else {
            self.spaces.insert(name.to_string(), space);
        }
    }
}

fn record(change: &crate::storage::events::SpaceChanges, id: u64) -> Result<Atom, FollowError> {
    let bytes = change.records.get(&id).ok_or(FollowError::NoRecord { id })?;
    crate::storage::decode(bytes, "atom record").map_err(|e| FollowError::Record { id, cause: e.to_string() })
}
