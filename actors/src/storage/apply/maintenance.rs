//! Housekeeping, always bounded per entry so a catch-up never meets an unbounded transaction:
//! before each proposal, sessions whose deadline passed move on ([`PER_PROPOSAL_EXPIRY`] at
//! most) and expired idempotency keys go ([`PER_PROPOSAL_EVICTION`] at most); with each
//! `Tick`, the leader's [`Maintenance`] budget is spent on deleting spaces marked for deletion,
//! then on observation retention by age, then by count per subject.

use super::super::apply::atoms::remove_atom;
use super::super::keys::{observation_key, pair_key, session_key, space_prefix, split_space};
use super::super::staged::Staged;
use super::super::{be, decode, encode, from_be, Table};
use super::agents::{advance, remove_observation, trim_subject};
use super::{load, space_info, Outcome, META_MAINTENANCE, META_RETENTION_CURSOR};
use crate::command::{CommandResult, Maintenance, Rejection};
use crate::model::{Atom, Observation, Session, SubjectTotals};

/// Sessions a proposal may move on before it applies.
pub const PER_PROPOSAL_EXPIRY: usize = 64;
/// Idempotency keys a proposal may evict.
pub const PER_PROPOSAL_EVICTION: usize = 8;
/// In Meta: the spaces being deleted, oldest first.
const META_DELETING: &[u8] = b"deleting_spaces";

/// Moves on the sessions whose deadline passed by `now`, at most `budget`.
pub fn expire_sessions(st: &mut Staged, now: u64, budget: usize) -> sled::Result<()> {
    let due = st.take_front(Table::SessionDeadlines, &pair_key(now, u64::MAX), budget)?;
    for (key, space) in due {
        let (deadline, id) = (from_be(&key[..8]), from_be(&key[8..]));
        let space = String::from_utf8_lossy(&space).to_string();
        let Some(mut session) = load::<Session>(st, Table::Sessions, &session_key(&space, id))? else {
            continue;
        };
        if session.expires_ms == Some(deadline) {
            advance(st, &mut session, now);
        }
    }
    Ok(())
}

/// Forgets idempotency keys applied at or before `cutoff`, at most `budget`.
pub fn evict_idempotency(st: &mut Staged, cutoff: u64, budget: usize) -> sled::Result<()> {
    for (key, _) in st.take_front(Table::IdempotencyOrder, &be(cutoff.saturating_add(1)), budget)? {
        st.remove(Table::Idempotency, key[8..].to_vec());
    }
    Ok(())
}

/// Marks a space for deletion: from now on it refuses writes and reads find nothing in it.
pub fn begin_space_deletion(st: &mut Staged, name: &str) -> sled::Result<Outcome> {
    let mut info = space_info(st, name)?;
    if info.is_empty() && !info.deleting {
        return Ok(Err(Rejection::UnknownSpace { name: name.to_string() }));
    }
    if !info.deleting {
        info.deleting = true;
        // Its settings go with it: a space made again later starts from the defaults.
        info.auto_embed = false;
        st.put(Table::Spaces, name.as_bytes().to_vec(), encode(&info));
        let mut deleting: Vec<String> = load(st, Table::Meta, META_DELETING)?.unwrap_or_default();
        deleting.push(name.to_string());
        st.put(Table::Meta, META_DELETING.to_vec(), encode(&deleting));
    }
    Ok(Ok(CommandResult::SpaceDeleting { name: name.to_string() }))
}

/// One tick's housekeeping, within `m.budget` removed rows.
pub fn tick(st: &mut Staged, now: u64, m: &Maintenance) -> sled::Result<()> {
    st.put(Table::Meta, META_MAINTENANCE.to_vec(), encode(m));
    let mut budget = m.budget as usize;
    budget -= purge_spaces(st, budget)?;
    if m.observation_max_age_ms > 0 && budget > 0 {
        let cutoff = now.saturating_sub(m.observation_max_age_ms);
        budget -= expire_observations(st, cutoff, budget)?;
    }
    if m.observations_per_subject > 0 && budget > 0 {
        trim_subjects(st, m.observations_per_subject, budget)?;
    }
    Ok(())
}

/// Removes what the spaces being deleted still hold, oldest deletion first; answers the rows.
fn purge_spaces(st: &mut Staged, budget: usize) -> sled::Result<usize> {
    let mut deleting: Vec<String> = load(st, Table::Meta, META_DELETING)?.unwrap_or_default();
    let mut spent = 0;
    while let Some(name) = deleting.first().cloned() {
        if spent >= budget {
            break;
        }
        let prefix = space_prefix(&name);
        let left = budget - spent;
        let atoms = st.scan_prefix(Table::TypeIndex, &prefix, left)?;
        for (key, _) in &atoms {
            let id = from_be(&key[key.len() - 8..]);
            match load::<Atom>(st, Table::Atoms, &be(id))? {
                Some(atom) => remove_atom(st, &atom)?,
                None => st.remove(Table::TypeIndex, key.clone()),
            }
        }
        spent += atoms.len();
        let left = budget - spent;
        let sessions = st.scan_prefix(Table::Sessions, &prefix, left)?;
        for (key, bytes) in &sessions {
            let session: Session = decode(bytes, "session")?;
            if let Some(deadline) = session.expires_ms {
                st.remove(Table::SessionDeadlines, pair_key(deadline, session.id));
            }
            st.remove(Table::Sessions, key.clone());
        }
        spent += sessions.len();
        let left = budget - spent;
        let observations = st.scan_prefix(Table::Observations, &prefix, left)?;
        for (key, bytes) in &observations {
            remove_observation(st, &decode::<Observation>(bytes, "observation")?, key)?;
        }
        spent += observations.len();
        let left = budget - spent;
        let keys = st.scan_prefix(Table::Idempotency, &prefix, left)?;
        for (key, _) in &keys {
            st.remove(Table::Idempotency, key.clone());
        }
        spent += keys.len();
        if atoms.is_empty() && sessions.is_empty() && observations.is_empty() && keys.is_empty() {
            // Nothing left: the space is gone and its name free again.
            st.remove(Table::Spaces, name.as_bytes().to_vec());
            deleting.remove(0);
        }
    }
    st.put(Table::Meta, META_DELETING.to_vec(), encode(&deleting));
    Ok(spent.min(budget))
}

/// Removes observations recorded before `cutoff` (the order is by id, and ids follow apply
/// time); answers how many.
fn expire_observations(st: &mut Staged, cutoff: u64, budget: usize) -> sled::Result<usize> {
    let old = st.take_front_while(Table::ObservationOrder, budget, |_, value| {
        value.len() >= 8 && from_be(&value[..8]) < cutoff
    })?;
    for (key, value) in &old {
        let Some((space, subject)) = split_space(&value[8..]) else { continue };
        let okey = observation_key(space, &String::from_utf8_lossy(subject), from_be(key));
        if let Some(o) = load::<Observation>(st, Table::Observations, &okey)? {
            remove_observation(st, &o, &okey)?;
        }
    }
    Ok(old.len())
}

/// Trims subjects over `max`, going round the subjects a bounded number per tick.
fn trim_subjects(st: &mut Staged, max: u64, budget: usize) -> sled::Result<()> {
    let cursor: Vec<u8> = load(st, Table::Meta, META_RETENTION_CURSOR)?.unwrap_or_default();
    let subjects = st.scan_after(Table::SubjectTotals, &cursor, budget)?;
    let mut spent = 0;
    let mut last = Vec::new();
    for (key, bytes) in &subjects {
        let totals: SubjectTotals = decode(bytes, "subject totals")?;
        last = key.clone();
        if totals.count > max {
            let Some((space, subject)) = split_space(key) else { continue };
            let excess = (totals.count - max) as usize;
            spent += trim_subject(st, space, &String::from_utf8_lossy(subject), excess.min(budget - spent))?;
        }
        spent += 1;
        if spent >= budget {
            break;
        }
    }
    // Wrap round at the end of the table.
    let next = if subjects.len() < budget && spent < budget { Vec::new() } else { last };
    st.put(Table::Meta, META_RETENTION_CURSOR.to_vec(), encode(&next));
    Ok(())
}
