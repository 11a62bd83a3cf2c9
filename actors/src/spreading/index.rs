//! The in-memory incidence index spreading activation walks: per memory space, which links
//! contain each atom and which members each link has, in compressed sparse rows (CSR), with
//! each atom's type, truth value and STI. Atoms are numbered densely in id order within their
//! space (ids only grow, so a new atom always takes the next number); a number is found from an
//! id by binary search. Links of one space join atoms of that space only, so a walk over one
//! space's index never leaves it.
//!
//! After the build the rows are sealed; atoms added later append their members, and the links
//! that come to contain an older atom go to a small per-atom side list. Removed atoms are
//! flagged, not moved. When side lists and removals grow past a fraction of the sealed rows,
//! [`SpaceIndex::compacted`] rebuilds the rows from memory (amortised, never per write). Every
//! walk order is id order, before and after a compaction, so two replicas that applied the same
//! entries walk identically and sum activation in the same order.

use std::collections::HashMap;

use crate::model::{Atom, AtomId, AtomKind};

/// An atom's number within its space's index.
pub type Dense = u32;

const LINK: u8 = 1;
const REMOVED: u8 = 2;

/// Why the index cannot follow a change (the caller rebuilds it from storage).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IndexError {
    #[error("atom {id} arrived after atom {last}: ids must only grow")]
    OutOfOrder { id: AtomId, last: AtomId },
    #[error("link {link} contains atom {member}, which the index does not hold")]
    MissingMember { link: AtomId, member: AtomId },
    #[error("the space holds more than {} atoms or memberships", u32::MAX)]
    TooLarge,
}

/// What a walk reads of one atom, together in 20 bytes, so a link's weight, type and flags
/// cost one cache miss, not one per field.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Row {
    strength: f32,
    confidence: f32,
    sti: f32,
    type_id: u32,
    flags: u8,
}

/// One atom as [`SpaceIndex::canonical`] lists it.
#[cfg(test)]
pub type CanonicalRow = (AtomId, String, Vec<AtomId>, f32, f32, f32, Vec<AtomId>);

/// One space's incidence index.
#[derive(Clone, Debug, Default)]
pub struct SpaceIndex {
    /// Dense number -> atom id, ascending.
    ids: Vec<AtomId>,
    rows: Vec<Row>,
    /// Members of atom `d` (links only; sorted, without repeats): `out[out_off[d]..out_off[d+1]]`.
    out_off: Vec<u32>,
    out: Vec<Dense>,
    /// Links containing atom `d` for `d < sealed`, in id order: `inc[inc_off[d]..inc_off[d+1]]`.
    inc_off: Vec<u32>,
    inc: Vec<Dense>,
    /// Links that came to contain an atom after the seal, in id order.
    inc_more: HashMap<Dense, Vec<Dense>>,
    more_len: usize,
    /// Atoms numbered when the rows were sealed.
    sealed: usize,
    /// Set while a build pushes atoms: their links are indexed at once by [`Self::seal`].
    building: bool,
    removed: usize,
    type_names: Vec<String>,
    type_ids: HashMap<String, u32>,
}

impl SpaceIndex {
    /// An empty index for a build: push every atom in id order, then [`seal`](Self::seal).
    /// (An index from `default()` indexes each pushed link's members at once.)
    pub fn building() -> SpaceIndex {
        SpaceIndex { building: true, ..Default::default() }
    }

    /// Atoms held, removed ones included until the next compaction.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Atoms not removed.
    pub fn live(&self) -> usize {
        self.ids.len() - self.removed
    }

    /// The number of the live atom `id`.
    pub fn dense_of(&self, id: AtomId) -> Option<Dense> {
        let d = self.ids.binary_search(&id).ok()? as Dense;
        (!self.is_removed(d)).then_some(d)
    }

    pub fn id(&self, d: Dense) -> AtomId {
        self.ids[d as usize]
    }

    pub fn is_link(&self, d: Dense) -> bool {
        self.rows[d as usize].flags & LINK != 0
    }

    pub fn is_removed(&self, d: Dense) -> bool {
        self.rows[d as usize].flags & REMOVED != 0
    }

    pub fn type_id(&self, d: Dense) -> u32 {
        self.rows[d as usize].type_id
    }

    pub fn type_name(&self, type_id: u32) -> &str {
        self.type_names.get(type_id as usize).map(String::as_str).unwrap_or("")
    }

    /// The number of a type name in this space, if any atom ever had it.
    pub fn type_named(&self, name: &str) -> Option<u32> {
        self.type_ids.get(name).copied()
    }

    pub fn strength(&self, d: Dense) -> f32 {
        self.rows[d as usize].strength
    }

    pub fn confidence(&self, d: Dense) -> f32 {
        self.rows[d as usize].confidence
    }

    pub fn sti(&self, d: Dense) -> f32 {
        self.rows[d as usize].sti
    }

    /// Whether any atom is flagged removed (until the next compaction): while none is, a walk
    /// can take degrees and arities from the row offsets without filtering.
    pub fn has_removed(&self) -> bool {
        self.removed > 0
    }

    /// How many links contain `d`, removed ones included.
    pub fn degree(&self, d: Dense) -> usize {
        let sealed = if (d as usize) < self.sealed {
            (self.inc_off[d as usize + 1] - self.inc_off[d as usize]) as usize
        } else {
            0
        };
        sealed + self.inc_more.get(&d).map_or(0, Vec::len)
    }

    /// A link's members (empty for nodes), removed ones included.
    pub fn members(&self, d: Dense) -> &[Dense] {
        let d = d as usize;
        &self.out[self.out_off[d] as usize..self.out_off[d + 1] as usize]
    }

    /// The links containing `d`, in id order, removed ones included.
    pub fn incident(&self, d: Dense) -> impl Iterator<Item = Dense> + '_ {
        let sealed: &[Dense] = if (d as usize) < self.sealed {
            &self.inc[self.inc_off[d as usize] as usize..self.inc_off[d as usize + 1] as usize]
        } else {
            &[]
        };
        let more = self.inc_more.get(&d).map(Vec::as_slice).unwrap_or(&[]);
        sealed.iter().chain(more).copied()
    }

    /// Adds a new atom (its id above every id held). During a build the links an atom belongs
    /// to are indexed by the seal; otherwise they go to the side lists at once.
    pub fn push(&mut self, atom: &Atom) -> Result<(), IndexError> {
        if let Some(&last) = self.ids.last() {
            if atom.id <= last {
                return Err(IndexError::OutOfOrder { id: atom.id, last });
            }
        }
        let mut members = Vec::with_capacity(atom.outgoing().len());
        for member in atom.outgoing() {
            let d =
                self.dense_of(*member).ok_or(IndexError::MissingMember { link: atom.id, member: *member })?;
            members.push(d);
        }
        members.sort_unstable();
        members.dedup();
        let d = Dense::try_from(self.ids.len()).map_err(|_| IndexError::TooLarge)?;
        if d == Dense::MAX || self.out.len() + members.len() >= u32::MAX as usize {
            return Err(IndexError::TooLarge);
        }
        let type_id = self.intern(&atom.atom_type);
        self.ids.push(atom.id);
        self.rows.push(Row {
            strength: atom.tv.strength as f32,
            confidence: atom.tv.confidence as f32,
            sti: atom.av.sti as f32,
            type_id,
            flags: if matches!(atom.kind, AtomKind::Link { .. }) { LINK } else { 0 },
        });
        if self.out_off.is_empty() {
            self.out_off.push(0);
        }
        if !self.building {
            for m in &members {
                self.inc_more.entry(*m).or_default().push(d);
                self.more_len += 1;
            }
        }
        self.out.extend_from_slice(&members);
        self.out_off.push(self.out.len() as u32);
        Ok(())
    }

    /// Indexes every atom's links in sealed rows (after a build or a compaction).
    pub fn seal(&mut self) {
        let n = self.ids.len();
        let mut degree = vec![0u32; n + 1];
        for &m in &self.out {
            degree[m as usize + 1] += 1;
        }
        for d in 0..n {
            degree[d + 1] += degree[d];
        }
        let mut fill = degree.clone();
        let mut inc = vec![0; self.out.len()];
        // Links in id order, so every row comes out in id order.
        for link in 0..n {
            for &m in self.members(link as Dense) {
                inc[fill[m as usize] as usize] = link as Dense;
                fill[m as usize] += 1;
            }
        }
        self.inc_off = degree;
        self.inc = inc;
        self.inc_more = HashMap::new();
        self.more_len = 0;
        self.sealed = n;
        self.building = false;
    }

    /// Takes a new truth value and STI for `id` (type and members never change).
    pub fn update(&mut self, atom: &Atom) {
        if let Some(d) = self.dense_of(atom.id) {
            let row = &mut self.rows[d as usize];
            row.strength = atom.tv.strength as f32;
            row.confidence = atom.tv.confidence as f32;
            row.sti = atom.av.sti as f32;
        }
    }

    /// Marks `id` removed (the links containing it are removed by the same delete).
    pub fn remove(&mut self, id: AtomId) {
        if let Some(d) = self.dense_of(id) {
            self.rows[d as usize].flags |= REMOVED;
            self.removed += 1;
        }
    }

    /// Whether side lists and removals have grown enough that a compaction pays.
    pub fn wants_compaction(&self) -> bool {
        let rows = self.ids.len() + self.inc.len();
        self.removed + self.more_len > (rows / 4).max(1024)
    }

    /// A copy without removed atoms, renumbered, with every row sealed.
    pub fn compacted(&self) -> SpaceIndex {
        let mut renumber = vec![Dense::MAX; self.ids.len()];
        let mut next = SpaceIndex {
            building: true,
            type_names: self.type_names.clone(),
            type_ids: self.type_ids.clone(),
            out_off: vec![0],
            ..Default::default()
        };
        for d in 0..self.ids.len() {
            if self.rows[d].flags & REMOVED != 0 {
                continue;
            }
            renumber[d] = next.ids.len() as Dense;
            next.ids.push(self.ids[d]);
            next.rows.push(self.rows[d]);
            // A delete removes the links containing an atom, but a space's deletion spreads
            // over several entries, so a live link may briefly hold a removed member: drop it.
            // Renumbering keeps the members' order.
            next.out.extend(
                self.members(d as Dense).iter().map(|m| renumber[*m as usize]).filter(|m| *m != Dense::MAX),
            );
            next.out_off.push(next.out.len() as u32);
        }
        next.seal();
        next
    }

    /// Bytes the index holds on the heap (capacities, so what the allocator gave it).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let more: usize =
            self.inc_more.values().map(|v| v.capacity() * 4 + size_of::<Vec<Dense>>() + 8).sum();
        self.ids.capacity() * 8
            + self.rows.capacity() * size_of::<Row>()
            + (self.out_off.capacity() + self.out.capacity() + self.inc_off.capacity() + self.inc.capacity())
                * 4
            + more
            + self.type_names.iter().map(|t| t.capacity() * 2 + 40).sum::<usize>()
    }

    /// Releases spare capacity (after a build, where vectors grew by doubling).
    pub fn shrink(&mut self) {
        for v in [&mut self.out_off, &mut self.out, &mut self.inc_off, &mut self.inc] {
            v.shrink_to_fit();
        }
        self.ids.shrink_to_fit();
        self.rows.shrink_to_fit();
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.type_ids.get(name) {
            return *id;
        }
        let id = self.type_names.len() as u32;
        self.type_names.push(name.to_string());
        self.type_ids.insert(name.to_string(), id);
        id
    }

    /// Every live atom's (id, type, members' ids, strength, confidence, sti, links containing
    /// it by id): what two indexes over the same state must agree on, however they were built.
    #[cfg(test)]
    pub fn canonical(&self) -> Vec<CanonicalRow> {
        (0..self.ids.len() as Dense)
            .filter(|d| !self.is_removed(*d))
            .map(|d| {
                (
                    self.id(d),
                    self.type_names[self.type_id(d) as usize].clone(),
                    self.members(d).iter().map(|m| self.id(*m)).collect(),
                    self.strength(d),
                    self.confidence(d),
                    self.sti(d),
                    self.incident(d).filter(|l| !self.is_removed(*l)).map(|l| self.id(l)).collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
