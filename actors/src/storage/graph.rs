//! Applying commands to the hypergraph, sessions and observations, through a [`Staged`]
//! overlay, and the key layout of every table. Apply is deterministic: ids come from counters
//! in the Meta table and time only from the proposal (`now` is max(last time, proposal time)).

use std::collections::BTreeSet;

use super::staged::Staged;
use super::{be, decode, encode, from_be, Table};
use crate::command::{AtomRef, Command, CommandResult, Expect, Rejection};
use crate::model::{
    Atom, AtomId, AtomKind, AttentionValue, Merge, Observation, Session, SessionStatus, TruthValue,
};

/// Meta keys.
pub const META_LAST_APPLIED: &[u8] = b"last_applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
pub const META_CLOCK: &[u8] = b"clock";
pub const META_NEXT_ATOM: &[u8] = b"next_atom_id";
pub const META_NEXT_SESSION: &[u8] = b"next_session_id";
pub const META_NEXT_OBSERVATION: &[u8] = b"next_observation_id";

/// Names longer than this are indexed by their BLAKE3 hash, so no key outgrows [`MAX_KEY_LEN`].
const MAX_PLAIN_NAME: usize = 256;
/// Links with more members than this are indexed by the hash of their outgoing ids.
const MAX_PLAIN_OUTGOING: usize = 64;
/// Marks a hashed name: UTF-8 never contains the byte 0xFF, so no plain name starts with it.
const HASHED_NAME: u8 = 0xFF;
const PLAIN_OUTGOING: u8 = 0;
const HASHED_OUTGOING: u8 = 1;

/// `type \0 name`, or `type \0 0xFF blake3(name)` for a long name.
pub fn node_key(atom_type: &str, name: &str) -> Vec<u8> {
    if name.len() <= MAX_PLAIN_NAME {
        [atom_type.as_bytes(), &[0], name.as_bytes()].concat()
    } else {
        [atom_type.as_bytes(), &[0, HASHED_NAME], blake3::hash(name.as_bytes()).as_bytes()].concat()
    }
}

/// `type \0 0 ids...`, or `type \0 1 blake3(ids)` for a link with many members.
pub fn link_key(atom_type: &str, outgoing: &[AtomId]) -> Vec<u8> {
    let ids: Vec<u8> = outgoing.iter().flat_map(|id| be(*id)).collect();
    if outgoing.len() <= MAX_PLAIN_OUTGOING {
        [atom_type.as_bytes(), &[0, PLAIN_OUTGOING], &ids].concat()
    } else {
        [atom_type.as_bytes(), &[0, HASHED_OUTGOING], blake3::hash(&ids).as_bytes()].concat()
    }
}

pub fn pair_key(a: u64, b: u64) -> Vec<u8> {
    [be(a), be(b)].concat()
}

pub fn value_key(id: AtomId, key: &str) -> Vec<u8> {
    [&be(id)[..], key.as_bytes()].concat()
}

pub fn observation_key(subject: &str, id: u64) -> Vec<u8> {
    [subject.as_bytes(), &[0], &be(id)].concat()
}

type Outcome = Result<CommandResult, Rejection>;

/// Most atoms one delete may remove (the atom and the links that contain it, transitively):
/// a delete is one transaction and its result is kept for idempotency, so both stay bounded.
pub const MAX_CASCADE: usize = 10_000;

/// Applies one command at time `now`. On `Err` the caller discards the command's writes.
pub fn apply(st: &mut Staged, now: u64, command: &Command) -> sled::Result<Outcome> {
    Applier { st, now }.command(command, &[])
}

/// Closes or idles sessions whose deadline has passed at `now`.
pub fn expire_sessions(st: &mut Staged, now: u64) -> sled::Result<()> {
    for (key, _) in st.scan_up_to(Table::SessionDeadlines, &pair_key(now, u64::MAX))? {
        st.remove(Table::SessionDeadlines, key.clone());
        let (deadline, id) = (from_be(&key[..8]), from_be(&key[8..]));
        let Some(mut session) = load::<Session>(st, Table::Sessions, &be(id))? else { continue };
        if session.expires_ms != Some(deadline) {
            continue;
        }
        (session.status, session.expires_ms) = match session.status {
            SessionStatus::Active => {
                let next = deadline.saturating_add(session.ttl_ms);
                st.put(Table::SessionDeadlines, pair_key(next, id), []);
                (SessionStatus::Idle, Some(next))
            }
            _ => (SessionStatus::Closed, None),
        };
        st.put(Table::Sessions, be(id), encode(&session));
    }
    Ok(())
}

fn load<T: serde::de::DeserializeOwned>(st: &Staged, t: Table, key: &[u8]) -> sled::Result<Option<T>> {
    match st.get(t, key)? {
        Some(bytes) => Ok(Some(decode(&bytes, t.name())?)),
        None => Ok(None),
    }
}

/// Takes the next id from a counter (ids start at 1).
fn next_id(st: &mut Staged, counter: &[u8]) -> sled::Result<u64> {
    let id = st.get(Table::Meta, counter)?.map(|v| from_be(&v)).unwrap_or(1);
    st.put(Table::Meta, counter.to_vec(), be(id + 1));
    Ok(id)
}

struct Applier<'s, 'a> {
    st: &'s mut Staged<'a>,
    now: u64,
}

impl Applier<'_, '_> {
    fn command(&mut self, command: &Command, batch: &[CommandResult]) -> sled::Result<Outcome> {
        let resolve = |r: &AtomRef| resolve(r, batch);
        Ok(match command {
            Command::AddNode { atom_type, name, tv, merge } => {
                let key = node_key(atom_type, name);
                let kind = AtomKind::Node { name: name.clone() };
                self.add(Table::NodeIndex, key, atom_type, kind, *tv, *merge)?
            }
            Command::AddLink { atom_type, outgoing, tv, merge } => {
                let ids = match outgoing.iter().map(resolve).collect::<Result<Vec<_>, _>>() {
                    Ok(ids) => ids,
                    Err(e) => return Ok(Err(e)),
                };
                for id in &ids {
                    if self.atom(*id)?.is_none() {
                        return Ok(Err(Rejection::UnknownAtom { id: *id }));
                    }
                }
                let key = link_key(atom_type, &ids);
                let kind = AtomKind::Link { outgoing: ids };
                self.add(Table::LinkIndex, key, atom_type, kind, *tv, *merge)?
            }
            Command::DeleteAtom { id } => match resolve(id) {
                Ok(id) => self.delete(id)?,
                Err(e) => Err(e),
            },
            Command::SetTruth { id, tv } => self.update_atom(resolve(id), |a| a.tv = *tv)?,
            Command::Stimulate { id, sti, lti } => self.update_atom(resolve(id), |a| {
                a.av.sti += sti;
                a.av.lti += lti;
            })?,
            Command::SetValue { id, key, value, expect } => match resolve(id) {
                Ok(id) => self.set_value(id, key, value, expect.as_ref())?,
                Err(e) => Err(e),
            },
            Command::Batch { ops } => self.batch(ops)?,
            Command::CreateSession { ttl_ms, metadata } => {
                let id = next_id(self.st, META_NEXT_SESSION)?;
                let session = Session {
                    id,
                    status: SessionStatus::Active,
                    ttl_ms: *ttl_ms,
                    metadata: metadata.clone(),
                    created_ms: self.now,
                    updated_ms: self.now,
                    expires_ms: Some(self.now.saturating_add(*ttl_ms)),
                };
                self.store_session(&session, None);
                Ok(CommandResult::Session { session })
            }
            Command::UpdateSession { id, status, metadata } => {
                self.update_session(*id, *status, metadata.as_ref())?
            }
            Command::Observe { subject, success, duration_ms, bytes, features, message } => {
                let id = next_id(self.st, META_NEXT_OBSERVATION)?;
                let observation = Observation {
                    id,
                    subject: subject.clone(),
                    success: *success,
                    duration_ms: *duration_ms,
                    bytes: *bytes,
                    features: features.clone(),
                    message: message.clone(),
                    recorded_ms: self.now,
                };
                self.st.put(Table::Observations, observation_key(subject, id), encode(&observation));
                Ok(CommandResult::Observation { observation })
            }
            Command::Tick => Ok(CommandResult::Ticked { time_ms: self.now }),
        })
    }

    fn atom(&self, id: AtomId) -> sled::Result<Option<Atom>> {
        load(self.st, Table::Atoms, &be(id))
    }

    fn put_atom(&mut self, atom: &Atom) {
        self.st.put(Table::Atoms, be(atom.id), encode(atom));
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
            let mut atom = self.atom(from_be(&existing))?.expect("index points to a stored atom");
            if atom.kind != kind {
                // Two different long names (or member lists) with one BLAKE3 hash.
                return Err(std::io::Error::other(format!(
                    "index key collision between atom {} and a new {atom_type}",
                    atom.id
                ))
                .into());
            }
            if let Some(tv) = tv {
                atom.tv = atom.tv.merge(tv, merge);
                atom.updated_ms = self.now;
                self.put_atom(&atom);
            }
            return Ok(Ok(CommandResult::Atom { atom, created: false }));
        }
        let id = next_id(self.st, META_NEXT_ATOM)?;
        let atom = Atom {
            id,
            atom_type: atom_type.to_string(),
            kind,
            tv: tv.unwrap_or_default(),
            av: AttentionValue::default(),
            created_ms: self.now,
            updated_ms: self.now,
        };
        self.st.put(index, key, be(id));
        for target in atom.outgoing().iter().collect::<BTreeSet<_>>() {
            self.st.put(Table::Incoming, pair_key(*target, id), []);
        }
        self.put_atom(&atom);
        Ok(Ok(CommandResult::Atom { atom, created: true }))
    }

    fn update_atom(
        &mut self,
        id: Result<AtomId, Rejection>,
        change: impl FnOnce(&mut Atom),
    ) -> sled::Result<Outcome> {
        let id = match id {
            Ok(id) => id,
            Err(e) => return Ok(Err(e)),
        };
        let Some(mut atom) = self.atom(id)? else { return Ok(Err(Rejection::UnknownAtom { id })) };
        change(&mut atom);
        atom.updated_ms = self.now;
        self.put_atom(&atom);
        Ok(Ok(CommandResult::Atom { atom, created: false }))
    }

    /// Removes the atom and every link that contains it, transitively.
    fn delete(&mut self, id: AtomId) -> sled::Result<Outcome> {
        if self.atom(id)?.is_none() {
            return Ok(Err(Rejection::UnknownAtom { id }));
        }
        let mut removed = Vec::new();
        let mut pending = vec![id];
        let mut seen = BTreeSet::new();
        while let Some(next) = pending.pop() {
            if !seen.insert(next) {
                continue;
            }
            if seen.len() > MAX_CASCADE {
                return Ok(Err(Rejection::CascadeTooLarge { id, limit: MAX_CASCADE }));
            }
            for (key, _) in self.st.scan_prefix(Table::Incoming, &be(next))? {
                pending.push(from_be(&key[8..]));
            }
            let Some(atom) = self.atom(next)? else { continue };
            let index_key = match &atom.kind {
                AtomKind::Node { name } => (Table::NodeIndex, node_key(&atom.atom_type, name)),
                AtomKind::Link { outgoing } => (Table::LinkIndex, link_key(&atom.atom_type, outgoing)),
            };
            self.st.remove(index_key.0, index_key.1);
            for target in atom.outgoing() {
                self.st.remove(Table::Incoming, pair_key(*target, next));
            }
            for (key, _) in self.st.scan_prefix(Table::Values, &be(next))? {
                self.st.remove(Table::Values, key);
            }
            self.st.remove(Table::Atoms, be(next));
            removed.push(next);
        }
        removed.sort_unstable();
        Ok(Ok(CommandResult::Deleted { removed }))
    }

    fn set_value(
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
        if value.is_null() {
            self.st.remove(Table::Values, vkey);
        } else {
            let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
            self.st.put(Table::Values, vkey, bytes);
        }
        Ok(Ok(CommandResult::Value { id, key: key.to_string(), value: value.clone() }))
    }

    fn batch(&mut self, ops: &[Command]) -> sled::Result<Outcome> {
        let mut results = Vec::with_capacity(ops.len());
        for (op, command) in ops.iter().enumerate() {
            match self.command(command, &results)? {
                Ok(result) => results.push(result),
                Err(cause) => return Ok(Err(Rejection::InBatch { op, cause: Box::new(cause) })),
            }
        }
        Ok(Ok(CommandResult::Batch { results }))
    }

    /// Stores a session and moves its deadline entry (`previous` = its old `expires_ms`).
    fn store_session(&mut self, session: &Session, previous: Option<u64>) {
        if let Some(old) = previous {
            self.st.remove(Table::SessionDeadlines, pair_key(old, session.id));
        }
        if let Some(deadline) = session.expires_ms {
            self.st.put(Table::SessionDeadlines, pair_key(deadline, session.id), []);
        }
        self.st.put(Table::Sessions, be(session.id), encode(session));
    }

    fn update_session(
        &mut self,
        id: u64,
        status: Option<SessionStatus>,
        metadata: Option<&serde_json::Value>,
    ) -> sled::Result<Outcome> {
        let Some(mut session) = load::<Session>(self.st, Table::Sessions, &be(id))? else {
            return Ok(Err(Rejection::UnknownSession { id }));
        };
        if session.status == SessionStatus::Closed {
            return Ok(Err(Rejection::SessionClosed { id }));
        }
        let previous = session.expires_ms;
        if let Some(status) = status {
            session.status = status;
        }
        if let Some(metadata) = metadata {
            session.metadata = metadata.clone();
        }
        session.updated_ms = self.now;
        session.expires_ms = match session.status {
            SessionStatus::Closed => None,
            _ => Some(self.now.saturating_add(session.ttl_ms)),
        };
        self.store_session(&session, previous);
        Ok(Ok(CommandResult::Session { session }))
    }
}

fn resolve(r: &AtomRef, batch: &[CommandResult]) -> Result<AtomId, Rejection> {
    match r {
        AtomRef::Id(id) => Ok(*id),
        AtomRef::Op(n) => match batch.get(*n) {
            Some(CommandResult::Atom { atom, .. }) => Ok(atom.id),
            _ => Err(Rejection::BadReference { op: batch.len(), target: *n }),
        },
    }
}
