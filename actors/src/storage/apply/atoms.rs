//! Atoms: adding nodes and links (unique per space by (type, name) and (type, outgoing); a
//! repeated add merges truth values), updates, named values with compare-and-set, and the
//! bounded cascading delete. An atom of another space is, to a command, an atom that does not
//! exist.

use std::collections::BTreeSet;

use super::super::events::{Change, ChangeKind};
use super::super::keys::{attention_key, link_key, node_key, pair_key, type_index_key, value_key};
use super::super::staged::Staged;
use super::super::{be, encode, from_be, Table};
use super::attention::{holds_attention, index_attention, is_forgettable};
use super::{count, load, next_id, Applier, Outcome, META_NEXT_ATOM};
use crate::command::{CommandResult, Expect, Rejection, MAX_LISTED_REMOVED};
use crate::model::{Atom, AtomId, AtomKind, AttentionValue, Merge, TruthValue};

/// Most named values one atom may carry (so removing an atom is bounded work).
pub const MAX_VALUES_PER_ATOM: usize = 256;

/// Most atoms one delete may remove (the atom and the links that contain it, transitively):
/// a delete is one transaction, so it stays bounded.
pub const MAX_CASCADE: usize = 10_000;

impl Applier<'_, '_> {
    /// The atom `id` if it exists in this command's space.
    pub(super) fn atom(&self, id: AtomId) -> sled::Result<Option<Atom>> {
        Ok(load::<Atom>(self.st, Table::Atoms, &be(id))?.filter(|a| a.space == self.space))
    }

    pub(super) fn put_atom(&mut self, atom: &Atom) {
        self.st.put(Table::Atoms, be(atom.id), encode(atom));
    }

    pub(super) fn report(&mut self, id: AtomId, kind: ChangeKind) {
        self.st.changed(Change { space: self.space.to_string(), id, kind });
    }

    pub(super) fn add_node(
        &mut self,
        atom_type: &str,
        name: &str,
        tv: Option<TruthValue>,
        merge: Merge,
    ) -> sled::Result<Outcome> {
        let key = node_key(self.space, atom_type, name);
        self.add(Table::NodeIndex, key, atom_type, AtomKind::Node { name: name.to_string() }, tv, merge)
    }

    pub(super) fn add_link(
        &mut self,
        atom_type: &str,
        outgoing: Vec<AtomId>,
        tv: Option<TruthValue>,
        merge: Merge,
    ) -> sled::Result<Outcome> {
        for id in &outgoing {
            if self.atom(*id)?.is_none() {
                return Ok(Err(Rejection::UnknownAtom { id: *id }));
            }
        }
        let key = link_key(self.space, atom_type, &outgoing);
        self.add(Table::LinkIndex, key, atom_type, AtomKind::Link { outgoing }, tv, merge)
    }

    fn add(
        &mut self,
        index: Table,
        key: Vec<u8>,
        atom_type: &str,
        kind: AtomKind,
        tv: Option<TruthValue>,
        merge: Merge,
    ) -> sled::Result<Outcome> {
        if let Some(existing) = self.st.get(index, &key)? {
            let id = from_be(&existing);
            let mut atom = self.atom(id)?.ok_or_else(|| {
                std::io::Error::other(format!(
                    "the index of space {} points to a missing atom {id}",
                    self.space
                ))
            })?;
            if atom.kind != kind {
                // Two different long names (or member lists) with one BLAKE3 hash.
                return Err(std::io::Error::other(format!("index key collision with atom {id}")).into());
            }
            if let Some(tv) = tv {
                atom.tv = atom.tv.merge(tv, merge);
                atom.updated_ms = self.now;
                self.put_atom(&atom);
                self.report(id, ChangeKind::Updated);
            }
            return Ok(Ok(CommandResult::Atom { atom, created: false }));
        }
        let id = next_id(self.st, META_NEXT_ATOM)?;
        let atom = Atom {
            id,
            space: self.space.to_string(),
            atom_type: atom_type.to_string(),
            kind,
            tv: tv.unwrap_or_default(),
            av: AttentionValue::default(),
            created_ms: self.now,
            updated_ms: self.now,
        };
        self.st.put(index, key, be(id));
        self.st.put(Table::TypeIndex, type_index_key(self.space, atom_type, id), []);
        for target in atom.outgoing().iter().collect::<BTreeSet<_>>() {
            self.st.put(Table::Incoming, pair_key(*target, id), []);
        }
        self.put_atom(&atom);
        let is_link = matches!(atom.kind, AtomKind::Link { .. });
        count(self.st, self.space, |s| if is_link { s.links += 1 } else { s.nodes += 1 })?;
        self.report(id, ChangeKind::Added);
        Ok(Ok(CommandResult::Atom { atom, created: true }))
    }

    pub(super) fn update_atom(
        &mut self,
        id: Result<AtomId, Rejection>,
        change: impl FnOnce(&mut Atom),
    ) -> sled::Result<Outcome> {
        let id = match id {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        };
        let Some(mut atom) = self.atom(id)? else { return Ok(Err(Rejection::UnknownAtom { id })) };
        let attention = atom.av;
        change(&mut atom);
        atom.updated_ms = self.now;
        self.put_atom(&atom);
        if atom.av != attention {
            index_attention(self.st, &atom);
        }
        self.report(id, ChangeKind::Updated);
        Ok(Ok(CommandResult::Atom { atom, created: false }))
    }

    /// Removes the atom and every link that contains it, transitively, up to [`MAX_CASCADE`].
    pub(super) fn delete(&mut self, id: AtomId) -> sled::Result<Outcome> {
        if self.atom(id)?.is_none() {
            return Ok(Err(Rejection::UnknownAtom { id }));
        }
        let mut doomed = BTreeSet::new();
        let mut pending = vec![id];
        while let Some(next) = pending.pop() {
            if !doomed.insert(next) {
                continue;
            }
            if doomed.len() > MAX_CASCADE {
                return Ok(Err(Rejection::CascadeTooLarge { id, limit: MAX_CASCADE }));
            }
            let links = self.st.scan_prefix(Table::Incoming, &be(next), MAX_CASCADE + 1)?;
            pending.extend(links.iter().map(|(key, _)| from_be(&key[8..])));
        }
        for atom_id in &doomed {
            if let Some(atom) = self.atom(*atom_id)? {
                remove_atom(self.st, &atom)?;
            }
        }
        let removed_count = doomed.len() as u64;
        let removed = doomed.into_iter().take(MAX_LISTED_REMOVED).collect();
        Ok(Ok(CommandResult::Deleted { removed, removed_count }))
    }

    /// Removes each named atom of this space that is still forgettable (see
    /// [`is_forgettable`]) and has no link containing it, in id order; the rest are kept.
    pub(super) fn forget(&mut self, ids: &[AtomId], lti_below: f64) -> sled::Result<Outcome> {
        let (mut removed, mut kept) = (Vec::new(), Vec::new());
        for id in ids.iter().copied().collect::<BTreeSet<_>>() {
            let atom = self.atom(id)?.filter(|a| is_forgettable(a, lti_below));
            let contained = !self.st.scan_prefix(Table::Incoming, &be(id), 1)?.is_empty();
            match atom {
                Some(atom) if !contained => {
                    remove_atom(self.st, &atom)?;
                    removed.push(id);
                }
                _ => kept.push(id),
            }
        }
        Ok(Ok(CommandResult::Forgotten { removed, kept }))
    }

    pub(super) fn set_value(
        &mut self,
        id: AtomId,
        key: &str,
        value: &serde_json::Value,
        expect: Option<&Expect>,
    ) -> sled::Result<Outcome> {
        if self.atom(id)?.is_none() {
            return Ok(Err(Rejection::UnknownAtom { id }));
        }
        let vkey = value_key(id, key);
        let current: Option<serde_json::Value> = match self.st.get(Table::Values, &vkey)? {
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(std::io::Error::other)?),
            None => None,
        };
        let matches = match expect {
            None => true,
            Some(Expect::Absent) => current.is_none(),
            Some(Expect::Equals(v)) => current.as_ref() == Some(v),
        };
        if !matches {
            return Ok(Err(Rejection::CasFailed { current }));
        }
        if current.is_none() && !value.is_null() {
            let present = self.st.scan_prefix(Table::Values, &be(id), MAX_VALUES_PER_ATOM)?.len();
            if present >= MAX_VALUES_PER_ATOM {
                return Ok(Err(Rejection::TooManyValues { id, limit: MAX_VALUES_PER_ATOM }));
            }
        }
        if value.is_null() {
            self.st.remove(Table::Values, vkey);
        } else {
            let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
            self.st.put(Table::Values, vkey, bytes);
        }
        self.report(id, ChangeKind::Updated);
        Ok(Ok(CommandResult::Value { id, key: key.to_string(), value: value.clone() }))
    }
}

/// Removes one atom and everything keyed by it (its index entries, its attention row, its
/// incoming entries in its members, its named values and vectors), counts it out of its space
/// and reports it removed. The caller has made sure no link still contains it, or removes
/// those links in the same layer.
pub(super) fn remove_atom(st: &mut Staged, atom: &Atom) -> sled::Result<()> {
    let (index, key) = match &atom.kind {
        AtomKind::Node { name } => (Table::NodeIndex, node_key(&atom.space, &atom.atom_type, name)),
        AtomKind::Link { outgoing } => (Table::LinkIndex, link_key(&atom.space, &atom.atom_type, outgoing)),
    };
    st.remove(index, key);
    st.remove(Table::TypeIndex, type_index_key(&atom.space, &atom.atom_type, atom.id));
    if holds_attention(&atom.av) {
        st.remove(Table::Attention, attention_key(&atom.space, atom.id));
    }
    for target in atom.outgoing() {
        st.remove(Table::Incoming, pair_key(*target, atom.id));
    }
    for (key, _) in st.scan_prefix(Table::Values, &be(atom.id), MAX_VALUES_PER_ATOM)? {
        st.remove(Table::Values, key);
    }
    super::embeddings::remove_embeddings(st, atom)?;
    st.remove(Table::Atoms, be(atom.id));
    let is_link = matches!(atom.kind, AtomKind::Link { .. });
    count(st, &atom.space, |s| {
        if is_link {
            s.links = s.links.saturating_sub(1)
        } else {
            s.nodes = s.nodes.saturating_sub(1)
        }
    })?;
    st.changed(Change { space: atom.space.clone(), id: atom.id, kind: ChangeKind::Removed });
    Ok(())
}
