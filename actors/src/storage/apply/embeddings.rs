//! Embeddings: an atom's vectors, one per model, stored as data (replicated, never recomputed
//! by a replica). Every vector of one model in a space has the model's dimension, recorded
//! with the model's vector count in `EmbeddingModels`, so vectors of different models (or
//! shapes) never mix. An atom's vectors go with the atom.

use serde::{Deserialize, Serialize};

use super::super::events::ChangeKind;
use super::super::keys::{embedding_key, embedding_model_key, embeddings_prefix};
use super::super::staged::Staged;
use super::super::{encode, Table};
use super::{load, Applier, Outcome};
use crate::command::{AtomVector, CommandResult, Rejection};
use crate::model::{Atom, AtomId};

/// Most models one atom may carry vectors of (so removing an atom is bounded work).
pub const MAX_EMBEDDINGS_PER_ATOM: usize = 16;

/// One model's vectors in one space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVectors {
    pub dim: u32,
    pub count: u64,
}

/// A vector as stored: its components as little-endian f32, in order.
pub fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The components of a stored vector.
pub fn vector_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

impl Applier<'_, '_> {
    pub(super) fn set_embedding(
        &mut self,
        id: AtomId,
        model: &str,
        vector: Option<&[f32]>,
    ) -> sled::Result<Outcome> {
        if self.atom(id)?.is_none() {
            return Ok(Err(Rejection::UnknownAtom { id }));
        }
        let key = embedding_key(self.space, id, model);
        let present = self.st.get(Table::Embeddings, &key)?.is_some();
        let model_key = embedding_model_key(self.space, model);
        let info: Option<ModelVectors> = load(self.st, Table::EmbeddingModels, &model_key)?;
        let Some(vector) = vector else {
            if present {
                self.st.remove(Table::Embeddings, key);
                uncount(self.st, model_key, info);
                self.report(id, ChangeKind::Updated);
            }
            return Ok(Ok(CommandResult::Embedded { id, model: model.to_string(), dim: None }));
        };
        let dim = vector.len() as u32;
        let info = match info {
            Some(info) if info.dim != dim => {
                return Ok(Err(Rejection::DimensionMismatch {
                    model: model.into(),
                    expected: info.dim,
                    got: dim,
                }))
            }
            Some(info) => info,
            None => ModelVectors { dim, count: 0 },
        };
        if !present {
            let carried = self.st.scan_prefix(
                Table::Embeddings,
                &embeddings_prefix(self.space, id),
                MAX_EMBEDDINGS_PER_ATOM,
            )?;
            if carried.len() >= MAX_EMBEDDINGS_PER_ATOM {
                return Ok(Err(Rejection::TooManyEmbeddings { id, limit: MAX_EMBEDDINGS_PER_ATOM }));
            }
            let counted = ModelVectors { count: info.count + 1, ..info };
            self.st.put(Table::EmbeddingModels, model_key, encode(&counted));
        }
        self.st.put(Table::Embeddings, key, vector_bytes(vector));
        self.report(id, ChangeKind::Updated);
        Ok(Ok(CommandResult::Embedded { id, model: model.to_string(), dim: Some(dim) }))
    }
}

impl Applier<'_, '_> {
    /// Stores each backfilled vector whose atom is still a node without a vector of `model`;
    /// skips the rest (a rejected one wrote nothing, so the others stand).
    pub(super) fn backfill(&mut self, model: &str, vectors: &[AtomVector]) -> sled::Result<Outcome> {
        let (mut stored, mut skipped) = (0, 0);
        for AtomVector { id, vector } in vectors {
            let wanted = match self.atom(*id)? {
                Some(atom) => {
                    atom.name().is_some()
                        && self.st.get(Table::Embeddings, &embedding_key(self.space, *id, model))?.is_none()
                }
                None => false,
            };
            if wanted && self.set_embedding(*id, model, Some(vector))?.is_ok() {
                stored += 1;
            } else {
                skipped += 1;
            }
        }
        Ok(Ok(CommandResult::Backfilled { stored, skipped }))
    }
}

impl Applier<'_, '_> {
    /// Stores each vector whose atom still exists (replacing its vector of `model`) and
    /// removes `model`'s vector from the atoms of `cleared`; skips gone atoms and refused
    /// vectors (a rejected one wrote nothing, so the others stand).
    pub(super) fn set_embeddings(
        &mut self,
        model: &str,
        vectors: &[AtomVector],
        cleared: &[AtomId],
    ) -> sled::Result<Outcome> {
        let (mut stored, mut removed, mut skipped) = (0, 0, 0);
        for AtomVector { id, vector } in vectors {
            if self.set_embedding(*id, model, Some(vector))?.is_ok() {
                stored += 1;
            } else {
                skipped += 1;
            }
        }
        for id in cleared {
            let had = self.st.get(Table::Embeddings, &embedding_key(self.space, *id, model))?.is_some();
            if had && self.set_embedding(*id, model, None)?.is_ok() {
                removed += 1;
            } else {
                skipped += 1;
            }
        }
        Ok(Ok(CommandResult::EmbeddingsSet { stored, cleared: removed, skipped }))
    }
}

/// One vector fewer of a model; a model with none left has no row.
fn uncount(st: &mut Staged, model_key: Vec<u8>, info: Option<ModelVectors>) {
    match info {
        Some(info) if info.count > 1 => {
            st.put(Table::EmbeddingModels, model_key, encode(&ModelVectors { count: info.count - 1, ..info }))
        }
        _ => st.remove(Table::EmbeddingModels, model_key),
    }
}

/// Removes every vector of `atom` (called when the atom goes).
pub(super) fn remove_embeddings(st: &mut Staged, atom: &Atom) -> sled::Result<()> {
    let prefix = embeddings_prefix(&atom.space, atom.id);
    for (key, _) in st.scan_prefix(Table::Embeddings, &prefix, MAX_EMBEDDINGS_PER_ATOM)? {
        let model = std::str::from_utf8(&key[prefix.len()..]).map_err(std::io::Error::other)?;
        let model_key = embedding_model_key(&atom.space, model);
        let info: Option<ModelVectors> = load(st, Table::EmbeddingModels, &model_key)?;
        uncount(st, model_key, info);
        st.remove(Table::Embeddings, key);
    }
    Ok(())
}
