//! The in-memory vector index: per memory space and model, every atom's vector normalised to
//! unit length in one contiguous row-major matrix (so a scan is matrix products over it), with
//! each row's atom id and type. Built from one scan of the stored vectors, kept current from
//! `Applied` announcements; a removed row is filled by the last one (row order is not part of
//! any answer: ties rank by atom id).

use std::collections::HashMap;

use super::scan::{normalised, Scored, TopK};
use super::{product, Matrix};
use crate::model::AtomId;
use crate::storage::apply::embeddings::vector_from_bytes;

/// Rows one matrix product covers: bounds the scores held at once to `ROWS x queries`.
pub const CHUNK_ROWS: usize = 8192;

/// One model's vectors in one space.
#[derive(Clone, Debug, Default)]
pub struct ModelIndex {
    dim: usize,
    ids: Vec<AtomId>,
    types: Vec<u32>,
    data: Vec<f32>,
    rows: HashMap<AtomId, usize>,
}

impl ModelIndex {
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Sets atom `id`'s vector (normalised here); a vector of another dimension is refused
    /// (apply never stores one).
    fn upsert(&mut self, id: AtomId, atom_type: u32, vector: &[f32]) -> Result<(), String> {
        if self.ids.is_empty() && self.dim == 0 {
            self.dim = vector.len();
        }
        if vector.len() != self.dim || self.dim == 0 {
            return Err(format!("atom {id}: a {}-d vector in a {}-d model", vector.len(), self.dim));
        }
        let unit = normalised(vector);
        match self.rows.get(&id) {
            Some(&row) => {
                self.data[row * self.dim..(row + 1) * self.dim].copy_from_slice(&unit);
                self.types[row] = atom_type;
            }
            None => {
                self.rows.insert(id, self.ids.len());
                self.ids.push(id);
                self.types.push(atom_type);
                self.data.extend_from_slice(&unit);
            }
        }
        Ok(())
    }

    fn remove(&mut self, id: AtomId) {
        let Some(row) = self.rows.remove(&id) else { return };
        let last = self.ids.len() - 1;
        if row != last {
            let moved = self.ids[last];
            self.ids[row] = moved;
            self.types[row] = self.types[last];
            self.data.copy_within(last * self.dim..(last + 1) * self.dim, row * self.dim);
            self.rows.insert(moved, row);
        }
        self.ids.pop();
        self.types.pop();
        self.data.truncate(last * self.dim);
    }

    /// The type of atom `id`, if it has a row.
    fn type_of(&self, id: AtomId) -> Option<u32> {
        self.rows.get(&id).map(|row| self.types[*row])
    }

    /// The atom ids and unit vectors of every row, in atom id order (the order a result that
    /// depends on the rows' order, such as a clustering, must see them in on every replica).
    pub fn rows_by_id(&self) -> (Vec<AtomId>, Vec<f32>) {
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_unstable_by_key(|row| self.ids[*row]);
        let ids = order.iter().map(|row| self.ids[*row]).collect();
        let mut data = Vec::with_capacity(self.data.len());
        for row in order {
            data.extend_from_slice(&self.data[row * self.dim..(row + 1) * self.dim]);
        }
        (ids, data)
    }

    /// The unit vector of atom `id`, if it has a row.
    pub fn vector(&self, id: AtomId) -> Option<&[f32]> {
        self.rows.get(&id).map(|row| &self.data[row * self.dim..(row + 1) * self.dim])
    }

    /// For each query (unit vectors, `dim` each), its `top_k` rows by cosine, best first,
    /// among rows of type `only` (all when `None`), leaving out the atoms of `exclude`.
    pub fn search(
        &self,
        queries: &[Vec<f32>],
        top_k: usize,
        only: Option<u32>,
        exclude: &[AtomId],
        threads: usize,
    ) -> Result<Vec<Vec<Scored>>, String> {
        let mut tops: Vec<TopK> = queries.iter().map(|_| TopK::new(top_k)).collect();
        if self.ids.is_empty() || queries.is_empty() {
            return Ok(tops.into_iter().map(TopK::into_sorted).collect());
        }
        let flat: Vec<f32> = queries.iter().flat_map(|q| q.iter().copied()).collect();
        let q = Matrix { data: &flat, rows: queries.len(), cols: self.dim };
        let mut out = Vec::new();
        for start in (0..self.ids.len()).step_by(CHUNK_ROWS) {
            let rows = CHUNK_ROWS.min(self.ids.len() - start);
            let base = Matrix {
                data: &self.data[start * self.dim..(start + rows) * self.dim],
                rows,
                cols: self.dim,
            };
            out.resize(rows * queries.len(), 0.0);
            product(base, q, threads, &mut out)?;
            for (qi, top) in tops.iter_mut().enumerate() {
                let scores = &out[qi * rows..(qi + 1) * rows];
                let mut floor = top.floor();
                for (r, score) in scores.iter().enumerate() {
                    // Most rows score below the kept ones: skipped before any other check.
                    if *score < floor {
                        continue;
                    }
                    let row = start + r;
                    if only.is_some_and(|t| self.types[row] != t) || exclude.contains(&self.ids[row]) {
                        continue;
                    }
                    top.offer(Scored { score: *score, id: self.ids[row] });
                    floor = top.floor();
                }
            }
        }
        Ok(tops.into_iter().map(TopK::into_sorted).collect())
    }

    fn memory_bytes(&self) -> usize {
        self.data.capacity() * 4
            + self.ids.capacity() * 8
            + self.types.capacity() * 4
            + self.rows.capacity() * 24
    }
}

/// Every space's and model's vectors, as of applied index `at`.
#[derive(Debug, Default)]
pub struct VectorIndex {
    at: u64,
    spaces: HashMap<String, HashMap<String, ModelIndex>>,
    type_ids: HashMap<String, u32>,
    type_names: Vec<String>,
}

impl VectorIndex {
    pub fn at(&self) -> u64 {
        self.at
    }

    pub fn set_at(&mut self, at: u64) {
        self.at = at;
    }

    pub fn model(&self, space: &str, model: &str) -> Option<&ModelIndex> {
        self.spaces.get(space)?.get(model)
    }

    /// The models the space holds vectors of, by name.
    pub fn models(&self, space: &str) -> Vec<&str> {
        let mut models: Vec<&str> = self
            .spaces
            .get(space)
            .map(|m| m.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.as_str()).collect())
            .unwrap_or_default();
        models.sort_unstable();
        models
    }

    /// The id of a type name, if any row has that type.
    pub fn type_id(&self, atom_type: &str) -> Option<u32> {
        self.type_ids.get(atom_type).copied()
    }

    fn intern(&mut self, atom_type: &str) -> u32 {
        if let Some(id) = self.type_ids.get(atom_type) {
            return *id;
        }
        let id = self.type_names.len() as u32;
        self.type_names.push(atom_type.to_string());
        self.type_ids.insert(atom_type.to_string(), id);
        id
    }

    /// Sets (`Some` f32 bytes) or removes (`None`) atom `id`'s vector under `model`.
    pub fn set(
        &mut self,
        space: &str,
        model: &str,
        id: AtomId,
        atom_type: &str,
        vector: Option<&[u8]>,
    ) -> Result<(), String> {
        match vector {
            Some(bytes) => {
                let t = self.intern(atom_type);
                let models = self.spaces.entry(space.to_string()).or_default();
                models.entry(model.to_string()).or_default().upsert(id, t, &vector_from_bytes(bytes))
            }
            None => {
                self.remove_vector(space, model, id);
                Ok(())
            }
        }
    }

    fn remove_vector(&mut self, space: &str, model: &str, id: AtomId) {
        let Some(models) = self.spaces.get_mut(space) else { return };
        if let Some(m) = models.get_mut(model) {
            m.remove(id);
            if m.is_empty() {
                models.remove(model);
            }
        }
        if models.is_empty() {
            self.spaces.remove(space);
        }
    }

    /// Removes every vector of atom `id`.
    pub fn remove_atom(&mut self, space: &str, id: AtomId) {
        let models: Vec<String> = match self.spaces.get(space) {
            Some(models) => models.keys().cloned().collect(),
            None => return,
        };
        for model in models {
            self.remove_vector(space, &model, id);
        }
    }

    /// The type of atom `id` as some model of its space recorded it.
    pub fn known_type(&self, space: &str, id: AtomId) -> Option<&str> {
        let t = self.spaces.get(space)?.values().find_map(|m| m.type_of(id))?;
        Some(self.type_names[t as usize].as_str())
    }

    /// Rows in every space and model.
    pub fn vectors(&self) -> usize {
        self.spaces.values().flat_map(|m| m.values()).map(ModelIndex::len).sum()
    }

    pub fn memory_bytes(&self) -> usize {
        self.spaces.values().flat_map(|m| m.values()).map(ModelIndex::memory_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::apply::embeddings::vector_bytes;

    #[test]
    fn rows_follow_sets_and_removals_and_search_ranks_by_cosine_then_id() {
        let mut index = VectorIndex::default();
        let put = |index: &mut VectorIndex, id, v: &[f32]| {
            index.set("s", "m", id, "ConceptNode", Some(&vector_bytes(v)))
        };
        put(&mut index, 1, &[1.0, 0.0]).unwrap();
        put(&mut index, 2, &[0.0, 2.0]).unwrap();
        put(&mut index, 3, &[1.0, 1.0]).unwrap();
        put(&mut index, 4, &[3.0, 0.0]).unwrap();
        index.set("s", "m", 5, "WordNode", Some(&vector_bytes(&[1.0, 0.1]))).unwrap();
        assert!(put(&mut index, 6, &[1.0, 0.0, 0.0]).is_err(), "another dimension");
        let m = index.model("s", "m").unwrap();
        let q = vec![normalised(&[1.0, 0.0])];
        let ids = |hits: &[Scored]| hits.iter().map(|s| s.id).collect::<Vec<_>>();
        // 1 and 4 point the same way: the tie goes to the lower id.
        assert_eq!(ids(&m.search(&q, 3, None, &[], 1).unwrap()[0]), vec![1, 4, 5]);
        let concept = index.type_id("ConceptNode");
        assert_eq!(ids(&m.search(&q, 3, concept, &[1], 1).unwrap()[0]), vec![4, 3, 2]);
        // Removing a middle row moves the last one into it; answers stay the same.
        index.set("s", "m", 2, "ConceptNode", None).unwrap();
        index.remove_atom("s", 1);
        let m = index.model("s", "m").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(ids(&m.search(&q, 5, None, &[], 1).unwrap()[0]), vec![4, 5, 3]);
        assert_eq!(index.known_type("s", 5), Some("WordNode"));
        for id in [3, 4, 5] {
            index.remove_atom("s", id);
        }
        assert!(index.model("s", "m").is_none());
        assert_eq!(index.vectors(), 0);
    }

    #[test]
    fn a_search_over_many_chunks_equals_one_over_a_single_scan() {
        let mut index = VectorIndex::default();
        let n = CHUNK_ROWS * 2 + 17;
        for id in 0..n as u64 {
            let v = [((id * 37) % 101) as f32 - 50.0, ((id * 11) % 7) as f32 + 0.5, 1.0];
            index.set("s", "m", id, "T", Some(&vector_bytes(&v))).unwrap();
        }
        let m = index.model("s", "m").unwrap();
        let queries = vec![normalised(&[1.0, 0.2, 0.0]), normalised(&[-1.0, 1.0, 1.0])];
        let got = m.search(&queries, 10, None, &[], 2).unwrap();
        for (q, hits) in queries.iter().zip(&got) {
            let mut all: Vec<Scored> = (0..n as u64)
                .map(|id| {
                    let v = m.vector(id).unwrap();
                    Scored { score: v.iter().zip(q).map(|(a, b)| a * b).sum(), id }
                })
                .collect();
            all.sort();
            let want: Vec<AtomId> = all.iter().take(10).map(|s| s.id).collect();
            assert_eq!(hits.iter().map(|s| s.id).collect::<Vec<_>>(), want);
        }
    }
}
