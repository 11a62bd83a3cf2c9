//! Applying commands to the hypergraph, sessions and observations through a [`Staged`]
//! overlay: atoms (`atoms`), their vectors (`embeddings`), sessions and observations (`agents`), and bounded housekeeping
//! (`maintenance`: session expiry, idempotency eviction, observation retention, space
//! deletion). Apply is deterministic: ids come from counters in the Meta table, time only from
//! the proposal (`now` is max(last time, proposal time)), limits only from the command or the
//! replicated state, and every loop is bounded per entry.

mod agents;
mod atoms;
pub mod attention;
pub mod embeddings;
mod evidence;
pub mod maintenance;

use super::staged::Staged;
use super::{be, decode, encode, from_be, Table};
use crate::command::{AtomRef, Command, CommandResult, Rejection};
use crate::model::SpaceInfo;

/// Meta keys.
pub const META_LAST_APPLIED: &[u8] = b"last_applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
pub const META_CLOCK: &[u8] = b"clock";
pub const META_NEXT_ATOM: &[u8] = b"next_atom_id";
pub const META_NEXT_SESSION: &[u8] = b"next_session_id";
pub const META_NEXT_OBSERVATION: &[u8] = b"next_observation_id";
/// The maintenance limits of the last tick (observation retention applies them on insert too).
pub const META_MAINTENANCE: &[u8] = b"maintenance";
/// Where the tick's per-subject retention pass goes on next.
pub const META_RETENTION_CURSOR: &[u8] = b"retention_cursor";

type Outcome = Result<CommandResult, Rejection>;

/// Applies one command of `space` at time `now`. On `Err` the caller discards its writes.
pub fn apply(st: &mut Staged, now: u64, space: &str, command: &Command) -> sled::Result<Outcome> {
    Applier { st, now, space }.command(command, &[])
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

/// The space's bookkeeping (a fresh, empty one if it holds nothing yet).
fn space_info(st: &Staged, space: &str) -> sled::Result<SpaceInfo> {
    Ok(load(st, Table::Spaces, space.as_bytes())?
        .unwrap_or_else(|| SpaceInfo { name: space.into(), ..Default::default() }))
}

/// Stores the space's bookkeeping; a space that holds nothing and is not being deleted has none.
fn put_space(st: &mut Staged, info: &SpaceInfo) {
    if info.is_empty() {
        st.remove(Table::Spaces, info.name.as_bytes().to_vec());
    } else {
        st.put(Table::Spaces, info.name.as_bytes().to_vec(), encode(info));
    }
}

/// Changes one space's counts.
fn count(st: &mut Staged, space: &str, change: impl FnOnce(&mut SpaceInfo)) -> sled::Result<()> {
    let mut info = space_info(st, space)?;
    change(&mut info);
    put_space(st, &info);
    Ok(())
}

struct Applier<'s, 'a> {
    st: &'s mut Staged<'a>,
    now: u64,
    space: &'s str,
}

impl Applier<'_, '_> {
    fn command(&mut self, command: &Command, batch: &[CommandResult]) -> sled::Result<Outcome> {
        if !matches!(command, Command::Tick { .. } | Command::Attention { .. } | Command::DeleteSpace { .. })
            && space_info(self.st, self.space)?.deleting
        {
            return Ok(Err(Rejection::SpaceDeleting { name: self.space.to_string() }));
        }
        let resolve = |r: &AtomRef| resolve(r, batch);
        Ok(match command {
            Command::AddNode { atom_type, name, tv, merge } => self.add_node(atom_type, name, *tv, *merge)?,
            Command::AddLink { atom_type, outgoing, tv, merge } => {
                match outgoing.iter().map(resolve).collect::<Result<Vec<_>, _>>() {
                    Ok(ids) => self.add_link(atom_type, ids, *tv, *merge)?,
                    Err(e) => Err(e),
                }
            }
            Command::DeleteAtom { id } => match resolve(id) {
                Ok(id) => self.delete(id)?,
                Err(e) => Err(e),
            },
            Command::SetTruth { id, tv } => self.update_atom(resolve(id), |a| a.tv = *tv)?,
            Command::Stimulate { id, sti, lti, vlti } => self.update_atom(resolve(id), |a| {
                a.av.sti = attention::bounded(a.av.sti + sti);
                a.av.lti = attention::bounded(a.av.lti + lti);
                a.av.vlti = vlti.unwrap_or(a.av.vlti);
            })?,
            Command::SetValue { id, key, value, expect } => match resolve(id) {
                Ok(id) => self.set_value(id, key, value, expect.as_ref())?,
                Err(e) => Err(e),
            },
            Command::Batch { ops } => self.batch(ops)?,
            Command::CreateSession { ttl_ms, metadata } => self.create_session(*ttl_ms, metadata)?,
            Command::UpdateSession { id, status, metadata } => {
                self.update_session(*id, *status, metadata.as_ref())?
            }
            Command::Observe { subject, success, duration_ms, bytes, features, message } => {
                self.observe(subject, *success, *duration_ms, *bytes, features, message)?
            }
            Command::DeleteSpace { name } => maintenance::begin_space_deletion(self.st, name)?,
            Command::Tick { maintenance } => {
                maintenance::tick(self.st, self.now, maintenance)?;
                Ok(CommandResult::Ticked { time_ms: self.now })
            }
            Command::Attention { step } => Ok(attention::step(self.st, step)?),
            Command::Forget { ids, lti_below } => self.forget(ids, *lti_below)?,
            Command::SetEmbedding { id, model, vector } => match resolve(id) {
                Ok(id) => self.set_embedding(id, model, vector.as_deref())?,
                Err(e) => Err(e),
            },
            Command::Backfill { model, vectors } => self.backfill(model, vectors)?,
            Command::SetEmbeddings { model, vectors, cleared } => {
                self.set_embeddings(model, vectors, cleared)?
            }
            Command::AddEvidence { id, tv, key, source, entry, limit } => match resolve(id) {
                Ok(id) => self.add_evidence(id, *tv, key, source, entry, *limit)?,
                Err(e) => Err(e),
            },
            Command::ConfigureSpace { auto_embed } => {
                let mut info = space_info(self.st, self.space)?;
                info.auto_embed = *auto_embed;
                put_space(self.st, &info);
                Ok(CommandResult::SpaceConfigured { name: self.space.to_string(), auto_embed: *auto_embed })
            }
        })
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
}

fn resolve(r: &AtomRef, batch: &[CommandResult]) -> Result<u64, Rejection> {
    match r {
        AtomRef::Id(id) => Ok(*id),
        AtomRef::Op(n) => match batch.get(*n) {
            Some(CommandResult::Atom { atom, .. }) => Ok(atom.id),
            _ => Err(Rejection::BadReference { op: batch.len(), target: *n }),
        },
    }
}
