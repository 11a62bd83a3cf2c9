//! Reads of the state machine's tables (blocking: run them from the storage actor). A read runs
//! as one [`GraphView`]: the read gate held and one generation of trees, so the several keys a
//! read touches (an index entry and its atom, a list) come from one state, never from half a
//! transaction or half an installed snapshot.

use std::path::Path;
use std::sync::Arc;

use super::graph::{node_key, observation_key, value_key, META_LAST_APPLIED};
use super::{be, decode, from_be, StateMachineCore, Table, Tables};
use crate::error::{Error, Result};
use crate::model::{Atom, AtomId, Observation, ObservationStats, Session, SessionStatus};
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

    /// The digest, from a point-in-time view (it does not hold the read gate: see `whole_state`).
    pub fn digest(&self) -> Result<(u64, String)> {
        self.core.digest().map_err(|e| Error::Storage { dir: self.core.db.dir.clone(), cause: e.to_string() })
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

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(sled::IVec, sled::IVec)>> + '_ {
        self.tables
            .get(table)
            .scan_prefix(prefix)
            .map(move |item| item.map_err(|e| storage(self.dir)(e.into())))
    }

    /// The index the state reflects.
    pub fn applied_index(&self) -> Result<u64> {
        let applied: Option<Option<LogId>> = self.get(Table::Meta, META_LAST_APPLIED)?;
        Ok(applied.flatten().map(|l| l.index).unwrap_or(0))
    }

    pub fn atom(&self, id: AtomId) -> Result<Atom> {
        self.get(Table::Atoms, &be(id))?.ok_or_else(|| Error::NotFound { what: format!("atom {id}") })
    }

    fn by_index(&self, table: Table, key: &[u8]) -> Result<Option<Atom>> {
        match self.tables.get(table).get(key).map_err(|e| storage(self.dir)(e.into()))? {
            Some(id) => self.atom(from_be(&id)).map(Some),
            None => Ok(None),
        }
    }

    pub fn find_node(&self, atom_type: &str, name: &str) -> Result<Option<Atom>> {
        self.by_index(Table::NodeIndex, &node_key(atom_type, name))
    }

    /// Atoms of one type, in id order of their index keys, at most `limit`.
    pub fn of_type(&self, atom_type: &str, limit: usize) -> Result<Vec<Atom>> {
        let prefix = [atom_type.as_bytes(), &[0]].concat();
        let mut atoms = Vec::new();
        for table in [Table::NodeIndex, Table::LinkIndex] {
            for item in self.scan(table, &prefix).take(limit.saturating_sub(atoms.len())) {
                atoms.push(self.atom(from_be(&item?.1))?);
            }
        }
        Ok(atoms)
    }

    /// The links that contain `id`.
    pub fn incoming(&self, id: AtomId) -> Result<Vec<Atom>> {
        self.atom(id)?;
        self.scan(Table::Incoming, &be(id)).map(|item| self.atom(from_be(&item?.0[8..]))).collect()
    }

    /// A named value; `None` when the atom exists but has no value under `key`.
    pub fn value(&self, id: AtomId, key: &str) -> Result<Option<serde_json::Value>> {
        self.atom(id)?;
        let err = storage(self.dir);
        match self.tables.get(Table::Values).get(value_key(id, key)).map_err(|e| err(e.into()))? {
            Some(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| err(std::io::Error::other(e)))?))
            }
            None => Ok(None),
        }
    }

    pub fn session(&self, id: u64) -> Result<Session> {
        self.get(Table::Sessions, &be(id))?.ok_or_else(|| Error::NotFound { what: format!("session {id}") })
    }

    pub fn sessions(&self, status: Option<SessionStatus>, limit: usize) -> Result<Vec<Session>> {
        let mut out = Vec::new();
        for item in self.scan(Table::Sessions, &[]) {
            let session: Session = decode(&item?.1, "session").map_err(storage(self.dir))?;
            if status.is_none_or(|s| s == session.status) {
                out.push(session);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The newest `limit` observations of a subject, newest first.
    pub fn observations(&self, subject: &str, limit: usize) -> Result<Vec<Observation>> {
        let prefix = observation_key(subject, 0)[..subject.len() + 1].to_vec();
        self.scan(Table::Observations, &prefix)
            .rev()
            .take(limit)
            .map(|item| decode(&item?.1, "observation").map_err(storage(self.dir)))
            .collect()
    }

    pub fn observation_stats(&self, subject: &str) -> Result<ObservationStats> {
        let prefix = observation_key(subject, 0)[..subject.len() + 1].to_vec();
        let mut stats = ObservationStats { subject: subject.to_string(), ..Default::default() };
        let mut total_duration = 0u128;
        for item in self.scan(Table::Observations, &prefix) {
            let o: Observation = decode(&item?.1, "observation").map_err(storage(self.dir))?;
            stats.count += 1;
            stats.successes += u64::from(o.success);
            stats.total_bytes = stats.total_bytes.saturating_add(o.bytes);
            total_duration += u128::from(o.duration_ms);
        }
        if stats.count > 0 {
            stats.success_rate = stats.successes as f64 / stats.count as f64;
            stats.mean_duration_ms = total_duration as f64 / stats.count as f64;
        }
        Ok(stats)
    }
}
