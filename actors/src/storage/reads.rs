//! Reads of the state machine's tables (blocking: run them from the storage actor). A read runs
//! as one [`GraphView`]: the read gate held and one generation of trees, so the several keys a
//! read touches (an index entry and its atom, a list) come from one state, never from half a
//! transaction or half an installed snapshot.

use std::path::Path;
use std::sync::Arc;

mod attention;
mod embeddings;

pub use embeddings::{ModelSummary, StoredVector, Unembedded, UnembeddedPage};

use super::apply::META_LAST_APPLIED;
use super::keys::{
    node_key, observation_key, pair_key, session_key, space_prefix, subject_key, subject_prefix,
    type_index_key, type_prefix, value_key,
};
use super::{be, decode, from_be, StateMachineCore, Table, Tables};
use crate::error::{Error, Result};
use crate::model::{
    Atom, AtomId, Observation, ObservationStats, Session, SessionStatus, SpaceInfo, SubjectTotals,
};
use crate::typ::LogId;

/// Read access to a node's state machine.
#[derive(Clone)]
pub struct GraphReader {
    core: Arc<StateMachineCore>,
}

impl GraphReader {
    pub fn new(core: Arc<StateMachineCore>) -> Self {
        GraphReader { core }
    }

    /// Runs `read` as one consistent view.
    pub fn with<T>(&self, read: impl FnOnce(&GraphView) -> T) -> T {
        self.core.read(|tables| read(&GraphView { tables, dir: &self.core.db.dir }))
    }

    /// Every atom, in id order, as of the applied index it answers (from a point-in-time view,
    /// so apply goes on; for building in-memory indexes).
    pub fn scan_atoms(&self, mut each: impl FnMut(Atom)) -> Result<u64> {
        let err = |e: std::io::Error| self.storage_error(e);
        self.core
            .scan_atoms(|bytes| {
                each(decode(bytes, "atom")?);
                Ok(())
            })
            .map_err(err)
    }

    /// Every row of each of `tables` in turn (key and value as stored), from one
    /// point-in-time view, so apply goes on; answers the applied index they reflect (for
    /// building in-memory indexes that need more than the atoms).
    pub fn scan_tables(
        &self,
        tables: &[Table],
        each: impl FnMut(Table, &[u8], &[u8]) -> std::io::Result<()>,
    ) -> Result<u64> {
        self.core.scan_tables(tables, each).map_err(|e| self.storage_error(e))
    }

    /// Subscribes to what apply and installs announce (subscribe before a scan, so nothing
    /// between the two is missed).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<super::StateEvent> {
        self.core.subscribe()
    }

    /// The digest, from a point-in-time view (it does not hold the read gate: see `whole_state`).
    pub fn digest(&self) -> Result<(u64, String)> {
        self.core.digest().map_err(|e| self.storage_error(e))
    }

    /// The content digest of one space (see `content`).
    pub fn content_digest(&self, space: &str) -> Result<super::content::ContentDigest> {
        self.core
            .content_digest(space)
            .map_err(|e| self.storage_error(e))?
            .ok_or_else(|| being_deleted(space))
    }

    /// Every atom of `space`, then every named value of them, then every vector of them, from a
    /// point-in-time view (see `content`); answers the applied index it reflects.
    pub fn walk_space(
        &self,
        space: &str,
        atom: impl FnMut(&Atom) -> std::io::Result<()>,
        value: impl FnMut(AtomId, &str, &[u8]) -> std::io::Result<()>,
        vector: impl FnMut(AtomId, &str, &[u8]) -> std::io::Result<()>,
    ) -> Result<u64> {
        self.core
            .walk_space(space, atom, value, vector)
            .map_err(|e| self.storage_error(e))?
            .ok_or_else(|| being_deleted(space))
    }

    /// Not found when `space` is being deleted (a read that streams checks before it starts).
    pub fn ensure_live(&self, space: &str) -> Result<()> {
        self.with(|r| r.live(space))
    }

    fn storage_error(&self, e: std::io::Error) -> Error {
        Error::Storage { dir: self.core.db.dir.clone(), cause: e.to_string() }
    }
}

/// One consistent read of the state machine.
pub struct GraphView<'a> {
    tables: &'a Tables,
    dir: &'a Path,
}

fn storage(dir: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Storage { dir: dir.to_path_buf(), cause: e.to_string() }
}

impl GraphView<'_> {
    fn get<T: serde::de::DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>> {
        let err = storage(self.dir);
        match self.tables.get(table).get(key).map_err(|e| err(e.into()))? {
            Some(bytes) => Ok(Some(decode(&bytes, table.name()).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// The index the state reflects.
    pub fn applied_index(&self) -> Result<u64> {
        let applied: Option<Option<LogId>> = self.get(Table::Meta, META_LAST_APPLIED)?;
        Ok(applied.flatten().map(|l| l.index).unwrap_or(0))
    }

    /// Refuses reads of a space that is being deleted (it holds nothing any more, to clients).
    fn live(&self, space: &str) -> Result<()> {
        let info: Option<SpaceInfo> = self.get(Table::Spaces, space.as_bytes())?;
        match info {
            Some(info) if info.deleting => Err(being_deleted(space)),
            _ => Ok(()),
        }
    }

    /// The atom `id`, if it is in `space`.
    pub fn atom(&self, space: &str, id: AtomId) -> Result<Atom> {
        self.live(space)?;
        self.atom_in(space, id)
    }

    fn atom_in(&self, space: &str, id: AtomId) -> Result<Atom> {
        let atom: Option<Atom> = self.get(Table::Atoms, &be(id))?;
        atom.filter(|a| a.space == space)
            .ok_or_else(|| Error::NotFound { what: format!("atom {id} in space {space:?}") })
    }

    pub fn find_node(&self, space: &str, atom_type: &str, name: &str) -> Result<Option<Atom>> {
        self.live(space)?;
        let key = node_key(space, atom_type, name);
        match self.tables.get(Table::NodeIndex).get(key).map_err(|e| storage(self.dir)(e.into()))? {
            // A hashed long name is checked against the stored one.
            Some(id) => Ok(Some(self.atom_in(space, from_be(&id))?).filter(|a| a.name() == Some(name))),
            None => Ok(None),
        }
    }

    /// Atoms of one type in id order, after the atom `after`, at most `limit`.
    pub fn of_type(
        &self,
        space: &str,
        atom_type: &str,
        after: Option<AtomId>,
        limit: usize,
    ) -> Result<Page<Atom>> {
        self.live(space)?;
        let prefix = type_prefix(space, atom_type);
        let start = match after {
            Some(id) => type_index_key(space, atom_type, id.saturating_add(1)),
            None => prefix.clone(),
        };
        let mut atoms = Vec::new();
        let mut more = false;
        for item in self.tables.get(Table::TypeIndex).range(start..) {
            let (key, _) = item.map_err(|e| storage(self.dir)(e.into()))?;
            if !key.starts_with(&prefix) {
                break;
            }
            if atoms.len() == limit {
                more = true;
                break;
            }
            atoms.push(self.atom_in(space, from_be(&key[key.len() - 8..]))?);
        }
        Ok(Page::of(atoms, more, |a| a.id))
    }

    /// The links that contain `id`, in link id order after `after`, at most `limit`.
    pub fn incoming(
        &self,
        space: &str,
        id: AtomId,
        after: Option<AtomId>,
        limit: usize,
    ) -> Result<Page<Atom>> {
        self.atom(space, id)?;
        let start = pair_key(id, after.map(|a| a.saturating_add(1)).unwrap_or(0));
        let mut links = Vec::new();
        let mut more = false;
        for item in self.tables.get(Table::Incoming).range(start..) {
            let (key, _) = item.map_err(|e| storage(self.dir)(e.into()))?;
            if !key.starts_with(&be(id)) {
                break;
            }
            if links.len() == limit {
                more = true;
                break;
            }
            links.push(self.atom_in(space, from_be(&key[8..]))?);
        }
        Ok(Page::of(links, more, |a| a.id))
    }

    /// A named value; `None` when the atom exists but has no value under `key`.
    pub fn value(&self, space: &str, id: AtomId, key: &str) -> Result<Option<serde_json::Value>> {
        self.atom(space, id)?;
        let err = storage(self.dir);
        match self.tables.get(Table::Values).get(value_key(id, key)).map_err(|e| err(e.into()))? {
            Some(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| err(std::io::Error::other(e)))?))
            }
            None => Ok(None),
        }
    }

    pub fn session(&self, space: &str, id: u64) -> Result<Session> {
        self.live(space)?;
        self.get(Table::Sessions, &session_key(space, id))?
            .ok_or_else(|| Error::NotFound { what: format!("session {id} in space {space:?}") })
    }

    /// Sessions in id order after `after`, optionally of one status, at most `limit`. A scan
    /// looks at most [`MAX_SCANNED`] sessions, so a rare status answers a short page with a
    /// cursor rather than walking every session.
    pub fn sessions(
        &self,
        space: &str,
        status: Option<SessionStatus>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Page<Session>> {
        self.live(space)?;
        let prefix = space_prefix(space);
        let start = match after {
            Some(id) => session_key(space, id.saturating_add(1)),
            None => prefix.clone(),
        };
        let (mut out, mut scanned, mut last, mut more) = (Vec::new(), 0usize, None, false);
        for item in self.tables.get(Table::Sessions).range(start..) {
            let (key, bytes) = item.map_err(|e| storage(self.dir)(e.into()))?;
            if !key.starts_with(&prefix) {
                break;
            }
            if out.len() == limit || scanned == MAX_SCANNED {
                more = true;
                break;
            }
            scanned += 1;
            let session: Session = decode(&bytes, "session").map_err(storage(self.dir))?;
            last = Some(session.id);
            if status.is_none_or(|s| s == session.status) {
                out.push(session);
            }
        }
        Ok(Page { items: out, next: if more { last.map(encode_cursor) } else { None } })
    }

    /// A subject's observations, newest first, older than `before`, at most `limit`.
    pub fn observations(
        &self,
        space: &str,
        subject: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page<Observation>> {
        self.live(space)?;
        let prefix = subject_prefix(space, subject);
        let end = observation_key(space, subject, before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        let mut more = false;
        for item in self.tables.get(Table::Observations).range(prefix.clone()..end).rev() {
            let (_, bytes) = item.map_err(|e| storage(self.dir)(e.into()))?;
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(decode::<Observation>(&bytes, "observation").map_err(storage(self.dir))?);
        }
        Ok(Page::of(out, more, |o| o.id))
    }

    /// Aggregates over a subject's retained observations (kept as running totals).
    pub fn observation_stats(&self, space: &str, subject: &str) -> Result<ObservationStats> {
        self.live(space)?;
        let totals: SubjectTotals =
            self.get(Table::SubjectTotals, &subject_key(space, subject))?.unwrap_or_default();
        Ok(totals.stats(subject))
    }

    /// The spaces that hold anything, in name order after `after`, at most `limit`.
    pub fn spaces(&self, after: Option<&str>, limit: usize) -> Result<Page<SpaceInfo>> {
        let start = after.map(|a| [a.as_bytes(), &[0]].concat()).unwrap_or_default();
        let mut out = Vec::new();
        let mut more = false;
        for item in self.tables.get(Table::Spaces).range(start..) {
            let (_, bytes) = item.map_err(|e| storage(self.dir)(e.into()))?;
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(decode::<SpaceInfo>(&bytes, "space").map_err(storage(self.dir))?);
        }
        let next = if more { out.last().map(|s| s.name.clone()) } else { None };
        Ok(Page { items: out, next })
    }
}

/// Most rows a filtered list looks at before it answers a (possibly short) page.
pub const MAX_SCANNED: usize = 10_000;

/// One page of a list, and the cursor that continues it (absent at the end).
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    fn of(items: Vec<T>, more: bool, id: impl Fn(&T) -> u64) -> Page<T> {
        let next = if more { items.last().map(|i| encode_cursor(id(i))) } else { None };
        Page { items, next }
    }
}

/// An opaque list cursor: the last id of a page.
pub fn encode_cursor(id: u64) -> String {
    format!("{id:x}")
}

/// Reads a cursor back; a malformed one is the client's mistake.
pub fn decode_cursor(cursor: &str) -> Result<u64> {
    u64::from_str_radix(cursor, 16).map_err(|_| {
        Error::Invalid(format!("cursor {cursor:?} is not one this API handed out (use the `next` of a page)"))
    })
}

/// What every read of a space being deleted answers: it holds nothing any more, to clients.
fn being_deleted(space: &str) -> Error {
    Error::NotFound { what: format!("space {space:?} (it is being deleted)") }
}
