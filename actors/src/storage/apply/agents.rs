//! Agent sessions (active -> idle -> closed by time, per space) and observations (outcome
//! history per (space, subject), with running totals and retention).

use super::super::keys::{observation_key, pair_key, session_key, subject_key, subject_prefix};
use super::super::staged::Staged;
use super::super::{be, encode, Table};
use super::{
    count, load, next_id, Applier, Outcome, META_MAINTENANCE, META_NEXT_OBSERVATION, META_NEXT_SESSION,
};
use crate::command::{CommandResult, Maintenance, Rejection};
use crate::model::{Observation, Session, SessionStatus, SubjectTotals};

impl Applier<'_, '_> {
    pub(super) fn create_session(
        &mut self,
        ttl_ms: u64,
        metadata: &serde_json::Value,
    ) -> sled::Result<Outcome> {
        let id = next_id(self.st, META_NEXT_SESSION)?;
        let session = Session {
            id,
            space: self.space.to_string(),
            status: SessionStatus::Active,
            ttl_ms,
            metadata: metadata.clone(),
            created_ms: self.now,
            updated_ms: self.now,
            expires_ms: Some(self.now.saturating_add(ttl_ms)),
        };
        store_session(self.st, &session, None);
        count(self.st, self.space, |s| s.sessions += 1)?;
        Ok(Ok(CommandResult::Session { session }))
    }

    pub(super) fn update_session(
        &mut self,
        id: u64,
        status: Option<SessionStatus>,
        metadata: Option<&serde_json::Value>,
    ) -> sled::Result<Outcome> {
        let Some(mut session) = load::<Session>(self.st, Table::Sessions, &session_key(self.space, id))?
        else {
            return Ok(Err(Rejection::UnknownSession { id }));
        };
        // Expiry is applied to this session now, whether or not housekeeping reached it yet.
        advance(self.st, &mut session, self.now);
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
        store_session(self.st, &session, previous);
        Ok(Ok(CommandResult::Session { session }))
    }

    pub(super) fn observe(
        &mut self,
        subject: &str,
        success: bool,
        duration_ms: u64,
        bytes: u64,
        features: &serde_json::Value,
        message: &str,
    ) -> sled::Result<Outcome> {
        let id = next_id(self.st, META_NEXT_OBSERVATION)?;
        let observation = Observation {
            id,
            space: self.space.to_string(),
            subject: subject.to_string(),
            success,
            duration_ms,
            bytes,
            features: features.clone(),
            message: message.to_string(),
            recorded_ms: self.now,
        };
        self.st.put(Table::Observations, observation_key(self.space, subject, id), encode(&observation));
        let order = [&be(self.now)[..], &subject_key(self.space, subject)].concat();
        self.st.put(Table::ObservationOrder, be(id), order);
        let totals_key = subject_key(self.space, subject);
        let mut totals: SubjectTotals = load(self.st, Table::SubjectTotals, &totals_key)?.unwrap_or_default();
        totals.add(&observation, 1);
        self.st.put(Table::SubjectTotals, totals_key, encode(&totals));
        count(self.st, self.space, |s| s.observations += 1)?;
        // The per-subject limit of the last tick holds at every insert: the oldest goes.
        let policy: Maintenance = load(self.st, Table::Meta, META_MAINTENANCE)?.unwrap_or_default();
        if policy.observations_per_subject > 0 && totals.count > policy.observations_per_subject {
            trim_subject(self.st, self.space, subject, 1)?;
        }
        Ok(Ok(CommandResult::Observation { observation }))
    }
}

/// Moves a session through the statuses its deadlines passed by `now`.
pub(super) fn advance(st: &mut Staged, session: &mut Session, now: u64) {
    while let Some(deadline) = session.expires_ms.filter(|d| *d <= now) {
        let previous = session.expires_ms;
        (session.status, session.expires_ms) = match session.status {
            SessionStatus::Active => (SessionStatus::Idle, Some(deadline.saturating_add(session.ttl_ms))),
            _ => (SessionStatus::Closed, None),
        };
        store_session(st, session, previous);
    }
}

/// Stores a session and moves its deadline entry (`previous` = its old `expires_ms`).
pub(super) fn store_session(st: &mut Staged, session: &Session, previous: Option<u64>) {
    if let Some(old) = previous {
        st.remove(Table::SessionDeadlines, pair_key(old, session.id));
    }
    if let Some(deadline) = session.expires_ms {
        st.put(Table::SessionDeadlines, pair_key(deadline, session.id), session.space.as_bytes().to_vec());
    }
    st.put(Table::Sessions, session_key(&session.space, session.id), encode(session));
}

/// Removes a subject's `n` oldest observations (fewer if it has fewer); answers how many went.
pub(super) fn trim_subject(st: &mut Staged, space: &str, subject: &str, n: usize) -> sled::Result<usize> {
    let oldest = st.scan_prefix(Table::Observations, &subject_prefix(space, subject), n)?;
    for (key, bytes) in &oldest {
        let o: Observation = super::super::decode(bytes, "observation")?;
        remove_observation(st, &o, key)?;
    }
    Ok(oldest.len())
}

/// Removes one observation and takes it out of its subject's totals and its space's count.
pub(super) fn remove_observation(st: &mut Staged, o: &Observation, key: &[u8]) -> sled::Result<()> {
    st.remove(Table::Observations, key.to_vec());
    st.remove(Table::ObservationOrder, be(o.id));
    let totals_key = subject_key(&o.space, &o.subject);
    let mut totals: SubjectTotals = load(st, Table::SubjectTotals, &totals_key)?.unwrap_or_default();
    totals.add(o, -1);
    if totals.count == 0 {
        st.remove(Table::SubjectTotals, totals_key);
    } else {
        st.put(Table::SubjectTotals, totals_key, encode(&totals));
    }
    count(st, &o.space, |s| s.observations = s.observations.saturating_sub(1))
}
