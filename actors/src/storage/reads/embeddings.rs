//! Reads of embeddings: one atom's vectors, and the models a space holds vectors of.

use serde::Serialize;

use super::{storage, GraphView};
use crate::error::{Error, Result};
use crate::model::AtomId;
use crate::storage::apply::embeddings::{vector_from_bytes, ModelVectors};
use crate::storage::keys::{embedding_key, embeddings_prefix, space_prefix};
use crate::storage::{decode, Table};

/// One stored vector.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredVector {
    pub model: String,
    pub dim: u32,
    pub vector: Vec<f32>,
}

/// The vectors of one model in a space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelSummary {
    pub model: String,
    pub dim: u32,
    pub vectors: u64,
}

impl GraphView<'_> {
    /// Every vector of atom `id`, by model name.
    pub fn embeddings(&self, space: &str, id: AtomId) -> Result<Vec<StoredVector>> {
        self.atom(space, id)?;
        let prefix = embeddings_prefix(space, id);
        let mut vectors = Vec::new();
        for item in self.tables.get(Table::Embeddings).scan_prefix(&prefix) {
            let (key, value) = item.map_err(|e| storage(self.dir)(e.into()))?;
            let model = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let vector = vector_from_bytes(&value);
            vectors.push(StoredVector { model, dim: vector.len() as u32, vector });
        }
        Ok(vectors)
    }

    /// Atom `id`'s vector under `model`; not found when the atom has none.
    pub fn embedding(&self, space: &str, id: AtomId, model: &str) -> Result<Vec<f32>> {
        self.atom(space, id)?;
        match self.tables.get(Table::Embeddings).get(embedding_key(space, id, model)) {
            Ok(Some(bytes)) => Ok(vector_from_bytes(&bytes)),
            Ok(None) => Err(Error::NotFound { what: format!("a vector of model {model:?} on atom {id}") }),
            Err(e) => Err(storage(self.dir)(e.into())),
        }
    }

    /// The models `space` holds vectors of, by name.
    pub fn embedding_models(&self, space: &str) -> Result<Vec<ModelSummary>> {
        self.live(space)?;
        let prefix = space_prefix(space);
        let mut models = Vec::new();
        for item in self.tables.get(Table::EmbeddingModels).scan_prefix(&prefix) {
            let (key, value) = item.map_err(|e| storage(self.dir)(e.into()))?;
            let info: ModelVectors =
                decode(&value, Table::EmbeddingModels.name()).map_err(storage(self.dir))?;
            let model = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            models.push(ModelSummary { model, dim: info.dim, vectors: info.count });
        }
        Ok(models)
    }
}
