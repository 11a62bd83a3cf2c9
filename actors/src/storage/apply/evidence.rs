//! Evidence lists: [`Command::AddEvidence`] revises an atom's truth value once per source and
//! keeps where the evidence came from in a bounded named value, so a fact extracted twice from
//! the same text is counted once and a user can ask where it came from.

use super::super::events::ChangeKind;
use super::super::keys::value_key;
use super::super::{be, Table};
use super::atoms::MAX_VALUES_PER_ATOM;
use super::{Applier, Outcome};
use crate::command::{CommandResult, Rejection, MAX_EVIDENCE_SOURCES};
use crate::model::{AtomId, Merge, TruthValue};

impl Applier<'_, '_> {
    /// [`Command::AddEvidence`]: the list is `{"sources": [entry..], "seen": [source..],
    /// "total": n}` under the named value `key`.
    pub(super) fn add_evidence(
        &mut self,
        id: AtomId,
        tv: TruthValue,
        key: &str,
        source: &str,
        entry: &serde_json::Value,
        limit: u32,
    ) -> sled::Result<Outcome> {
        let Some(mut atom) = self.atom(id)? else {
            return Ok(Err(Rejection::UnknownAtom { id }));
        };
        let vkey = value_key(id, key);
        let mut list: serde_json::Value = match self.st.get(Table::Values, &vkey)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            None => {
                let present = self.st.scan_prefix(Table::Values, &be(id), MAX_VALUES_PER_ATOM)?.len();
                if present >= MAX_VALUES_PER_ATOM {
                    return Ok(Err(Rejection::TooManyValues { id, limit: MAX_VALUES_PER_ATOM }));
                }
                serde_json::json!({ "sources": [], "seen": [], "total": 0 })
            }
        };
        if !list.is_object() {
            return Ok(Err(Rejection::NotEvidence { id, key: key.to_string() }));
        }
        let seen: Vec<&str> = list["seen"]
            .as_array()
            .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let count = seen.len() as u64;
        if seen.contains(&source) {
            return Ok(Ok(CommandResult::Evidence { id, added: false, sources: count, full: false }));
        }
        if seen.len() >= MAX_EVIDENCE_SOURCES {
            return Ok(Ok(CommandResult::Evidence { id, added: false, sources: count, full: true }));
        }
        let mut kept = entry.clone();
        kept["source"] = source.into();
        kept["time_ms"] = self.now.into();
        match list.get_mut("seen").and_then(|s| s.as_array_mut()) {
            Some(seen) => seen.push(source.into()),
            None => list["seen"] = serde_json::json!([source]),
        }
        match list.get_mut("sources").and_then(|s| s.as_array_mut()) {
            Some(sources) => {
                sources.push(kept);
                let over = sources.len().saturating_sub(limit as usize);
                sources.drain(..over);
            }
            None => list["sources"] = serde_json::json!([kept]),
        }
        list["total"] = (list["total"].as_u64().unwrap_or(0) + 1).into();
        let bytes = serde_json::to_vec(&list).map_err(std::io::Error::other)?;
        self.st.put(Table::Values, vkey, bytes);
        atom.tv = atom.tv.merge(tv, Merge::Revision);
        atom.updated_ms = self.now;
        self.put_atom(&atom);
        self.report(id, ChangeKind::Updated);
        Ok(Ok(CommandResult::Evidence { id, added: true, sources: count + 1, full: false }))
    }
}
