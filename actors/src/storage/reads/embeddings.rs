//! Reads of embeddings: one atom's vectors, the models a space holds vectors of, and what the
//! backfill embeds next (nodes without a vector of a model, the spaces that want them).

use serde::Serialize;

use super::{storage, GraphView};
use crate::error::{Error, Result};
use crate::model::{Atom, AtomId, SpaceInfo};
use crate::storage::apply::embeddings::{vector_from_bytes, ModelVectors};
use crate::storage::keys::{embedding_key, embeddings_prefix, space_prefix};
use crate::storage::{decode, from_be, Table};

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

/// A node the backfill should embed: its id and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unembedded {
    pub id: AtomId,
    pub name: String,
}

/// One step of a scan for nodes without a vector of a model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnembeddedPage {
    pub nodes: Vec<Unembedded>,
    /// Where the next step starts (a node index key, exclusive); `None` when the space is done.
    pub next: Option<Vec<u8>>,
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

impl GraphView<'_> {
    /// The spaces whose settings ask for their node names to be embedded (none being deleted).
    pub fn auto_embed_spaces(&self) -> Result<Vec<String>> {
        let mut spaces = Vec::new();
        for item in self.tables.get(Table::Spaces).iter() {
            let (_, value) = item.map_err(|e| storage(self.dir)(e.into()))?;
            let info: SpaceInfo = decode(&value, Table::Spaces.name()).map_err(storage(self.dir))?;
            if info.auto_embed && !info.deleting {
                spaces.push(info.name);
            }
        }
        Ok(spaces)
    }

    /// Nodes of `space` without a vector of `model`, in node index order after the key
    /// `after`: at most `want` of them, looking at no more than `budget` nodes.
    pub fn unembedded_nodes(
        &self,
        space: &str,
        model: &str,
        after: Option<&[u8]>,
        budget: usize,
        want: usize,
    ) -> Result<UnembeddedPage> {
        self.live(space)?;
        let prefix = space_prefix(space);
        let start = match after {
            Some(key) => [key, &[0u8][..]].concat(),
            None => prefix.clone(),
        };
        let mut page = UnembeddedPage::default();
        let mut looked = 0;
        for item in self.tables.get(Table::NodeIndex).range(start..) {
            let (key, id) = item.map_err(|e| storage(self.dir)(e.into()))?;
            if !key.starts_with(&prefix) {
                return Ok(page);
            }
            looked += 1;
            if let Some(node) = self.unembedded(space, from_be(&id), model)? {
                page.nodes.push(node);
            }
            if looked >= budget || page.nodes.len() >= want {
                page.next = Some(key.to_vec());
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// Of `ids`, the nodes of `space` that have no vector of `model`.
    pub fn unembedded_among(&self, space: &str, model: &str, ids: &[AtomId]) -> Result<Vec<Unembedded>> {
        self.live(space)?;
        ids.iter().filter_map(|id| self.unembedded(space, *id, model).transpose()).collect()
    }

    fn unembedded(&self, space: &str, id: AtomId, model: &str) -> Result<Option<Unembedded>> {
        let embedded = self.tables.get(Table::Embeddings).contains_key(embedding_key(space, id, model));
        if embedded.map_err(|e| storage(self.dir)(e.into()))? {
            return Ok(None);
        }
        let atom: Option<Atom> = self.get(Table::Atoms, &crate::storage::be(id))?;
        Ok(atom.filter(|a| a.space == space).and_then(|a| {
            let name = a.name()?.to_string();
            Some(Unembedded { id, name })
        }))
    }
}
