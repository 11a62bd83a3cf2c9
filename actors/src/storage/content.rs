//! One memory space's content, independent of ids and times: walked from a point-in-time view
//! (for export), and hashed into the **content digest**, equal on two clusters that hold the
//! same atoms (types, names, outgoing sets by content), truth values, named values and vectors
//! (by model), whatever ids and times they were given. Attention values, creation times and ids are left out: an
//! export carries none of them. A space being deleted has no content to walk: both answer
//! `None`, as every other read of it answers not found.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;

use super::keys::split_embedding_key;
use super::state_machine::StateMachineCore;
use super::view::View;
use super::{decode, from_be, Table};
use crate::model::{Atom, AtomId, AtomKind, SpaceInfo};

/// What the content digest answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentDigest {
    pub applied_index: u64,
    pub atoms: u64,
    pub values: u64,
    pub vectors: u64,
    pub digest: String,
}

impl StateMachineCore {
    /// Hands `atom` every atom of `space` in id order (so a link comes after its members), then
    /// `value` every named value of those atoms (by atom id, then key), then `vector` every
    /// stored vector of them (by atom id, then model; the stored little-endian f32 bytes), all
    /// as of the applied index it answers; apply goes on meanwhile, snapshot builds and
    /// installs wait (the walk reads one generation of trees, which an install would drop).
    pub fn walk_space(
        &self,
        space: &str,
        mut atom: impl FnMut(&Atom) -> io::Result<()>,
        mut value: impl FnMut(AtomId, &str, &[u8]) -> io::Result<()>,
        mut vector: impl FnMut(AtomId, &str, &[u8]) -> io::Result<()>,
    ) -> io::Result<Option<u64>> {
        let _one = super::state_machine::locked(&self.snapshot_lock);
        let (view, applied, _) = self.open_view()?;
        if deleting_in(&view, space)? {
            return Ok(None);
        }
        let mut ids = HashSet::new();
        view.scan(Table::Atoms, |_, bytes| {
            let a: Atom = decode(bytes, "atom")?;
            if a.space == space {
                ids.insert(a.id);
                atom(&a)?;
            }
            Ok(())
        })?;
        view.scan(Table::Values, |key, bytes| {
            let id = from_be(&key[..8]);
            if !ids.contains(&id) {
                return Ok(());
            }
            let name = std::str::from_utf8(&key[8..]).map_err(io::Error::other)?;
            value(id, name, bytes)
        })?;
        view.scan(Table::Embeddings, |key, bytes| match split_embedding_key(key) {
            Some((s, id, model)) if s == space && ids.contains(&id) => vector(id, model, bytes),
            Some(_) => Ok(()),
            None => Err(io::Error::other("an embedding key that does not split into space, atom and model")),
        })?;
        Ok(Some(applied.map(|l| l.index).unwrap_or(0)))
    }

    /// The content digest of `space` (see the module's comment).
    pub fn content_digest(&self, space: &str) -> io::Result<Option<ContentDigest>> {
        // Per atom: the hash of what it is (type and name, or type and its members' hashes),
        // and the hash of that with its truth value, then with its named values, then with its
        // vectors (values and vectors arrive after every atom, each in atom order, so one
        // hasher at a time gathers an atom's; the vectors' first finishes the values' last, so
        // how an atom's record is folded never depends on its neighbours' ids).
        let mut identity: HashMap<AtomId, [u8; 32]> = HashMap::new();
        let records: RefCell<HashMap<AtomId, [u8; 32]>> = RefCell::default();
        let (mut values, mut vectors) = (0, 0);
        let current: RefCell<Option<(AtomId, blake3::Hasher)>> = RefCell::default();
        let mut in_vectors = false;
        let finish = |current: Option<(AtomId, blake3::Hasher)>| {
            if let Some((id, hasher)) = current {
                let mut records = records.borrow_mut();
                if let Some(record) = records.get_mut(&id) {
                    let with_values =
                        blake3::Hasher::new().update(record).update(hasher.finalize().as_bytes()).finalize();
                    *record = *with_values.as_bytes();
                }
            }
        };
        let Some(applied) = self.walk_space(
            space,
            |atom| {
                let mut h = blake3::Hasher::new();
                match &atom.kind {
                    AtomKind::Node { name } => {
                        h.update(b"node\0").update(atom.atom_type.as_bytes()).update(b"\0");
                        h.update(name.as_bytes());
                    }
                    AtomKind::Link { outgoing } => {
                        h.update(b"link\0").update(atom.atom_type.as_bytes()).update(b"\0");
                        for member in outgoing {
                            let member = identity.get(member).ok_or_else(|| {
                                io::Error::other(format!("link {} names a missing member {member}", atom.id))
                            })?;
                            h.update(member);
                        }
                    }
                }
                let id = *h.finalize().as_bytes();
                identity.insert(atom.id, id);
                let mut r = blake3::Hasher::new();
                r.update(&id);
                r.update(&atom.tv.strength.to_bits().to_be_bytes());
                r.update(&atom.tv.confidence.to_bits().to_be_bytes());
                records.borrow_mut().insert(atom.id, *r.finalize().as_bytes());
                Ok(())
            },
            |id, key, bytes| {
                values += 1;
                fold(&current, &finish, id, b"", key, bytes);
                Ok(())
            },
            |id, model, bytes| {
                vectors += 1;
                if !in_vectors {
                    in_vectors = true;
                    finish(current.borrow_mut().take());
                }
                fold(&current, &finish, id, b"vector", model, bytes);
                Ok(())
            },
        )?
        else {
            return Ok(None);
        };
        finish(current.borrow_mut().take());
        let mut records: Vec<[u8; 32]> = records.into_inner().into_values().collect();
        records.sort_unstable();
        let mut all = blake3::Hasher::new();
        all.update(&(records.len() as u64).to_be_bytes());
        for r in &records {
            all.update(r);
        }
        Ok(Some(ContentDigest {
            applied_index: applied,
            atoms: records.len() as u64,
            values,
            vectors,
            digest: all.finalize().to_hex().to_string(),
        }))
    }
}

/// Hashes one named value or vector of atom `id` into the atom's hasher, finishing the previous
/// atom's first. Named values carry no `kind` tag (their digests stay what they were before
/// vectors were content); vectors carry `vector`.
fn fold(
    current: &RefCell<Option<(AtomId, blake3::Hasher)>>,
    finish: &impl Fn(Option<(AtomId, blake3::Hasher)>),
    id: AtomId,
    kind: &[u8],
    name: &str,
    bytes: &[u8],
) {
    let mut current = current.borrow_mut();
    if current.as_ref().is_some_and(|(at, _)| *at != id) {
        finish(current.take());
    }
    let (_, h) = current.get_or_insert_with(|| (id, blake3::Hasher::new()));
    h.update(kind).update(&(name.len() as u64).to_be_bytes()).update(name.as_bytes());
    h.update(&(bytes.len() as u64).to_be_bytes()).update(bytes);
}

/// Whether `space` was being deleted when `view` opened: its atoms are then going away a
/// housekeeping budget at a time, members and links in no order a walk could rely on.
fn deleting_in(view: &View, space: &str) -> io::Result<bool> {
    let mut deleting = false;
    view.scan(Table::Spaces, |key, bytes| {
        if key == space.as_bytes() {
            deleting = decode::<SpaceInfo>(bytes, "space")?.deleting;
        }
        Ok(())
    })?;
    Ok(deleting)
}
