//! The data model: atoms (nodes and links) with truth and attention values, named values,
//! agent sessions and observations, each in a memory space. Everything here is plain data,
//! persisted with named fields.

use serde::{Deserialize, Serialize};

/// An atom's id: assigned from the state machine's counter, never reused.
pub type AtomId = u64;

/// Longest accepted type name, in bytes.
pub const MAX_TYPE_LEN: usize = 64;

/// The space a request without `?space=` or `X-Cograft-Space` uses.
pub const DEFAULT_SPACE: &str = "default";

/// PLN-style truth value: how true (`strength`) and how sure (`confidence`), both in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TruthValue {
    pub strength: f64,
    pub confidence: f64,
}

impl Default for TruthValue {
    /// OpenCog's default truth value: fully true, no confidence.
    fn default() -> Self {
        Self { strength: 1.0, confidence: 0.0 }
    }
}

impl TruthValue {
    /// Checks both components are finite and within [0, 1].
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("strength", self.strength), ("confidence", self.confidence)] {
            if !v.is_finite() || !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} must be a number in [0, 1], got {v}"));
            }
        }
        Ok(())
    }

    /// Combines the stored value with an incoming one according to `merge`.
    pub fn merge(self, incoming: TruthValue, merge: Merge) -> TruthValue {
        match merge {
            Merge::Latest => incoming,
            Merge::HighestConfidence => {
                if incoming.confidence >= self.confidence {
                    incoming
                } else {
                    self
                }
            }
            Merge::Revision => self.revise(incoming),
        }
    }

    /// PLN revision: weights each strength by its evidence count `n = k*c/(1-c)`, k = 800.
    fn revise(self, other: TruthValue) -> TruthValue {
        const K: f64 = 800.0;
        // Confidence 1 means infinite evidence; cap just below it so counts stay finite.
        let count = |c: f64| K * c.min(0.9999) / (1.0 - c.min(0.9999));
        let (n1, n2) = (count(self.confidence), count(other.confidence));
        let n = n1 + n2;
        if n == 0.0 {
            return TruthValue { strength: (self.strength + other.strength) / 2.0, confidence: 0.0 };
        }
        TruthValue {
            strength: (self.strength * n1 + other.strength * n2) / n,
            confidence: (n / (n + K)).clamp(0.0, 1.0),
        }
    }
}

/// How a repeated add combines truth values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// The incoming value replaces the stored one.
    #[default]
    Latest,
    /// Keep whichever has the higher confidence (ties go to the incoming one).
    HighestConfidence,
    /// PLN revision: pool the evidence of both.
    Revision,
}

/// ECAN attention value: short-term, long-term and very-long-term importance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttentionValue {
    pub sti: f64,
    pub lti: f64,
    pub vlti: bool,
}

/// Whether an atom is a node (named) or a link (ordered outgoing set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AtomKind {
    Node { name: String },
    Link { outgoing: Vec<AtomId> },
}

/// One atom of the hypergraph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Atom {
    pub id: AtomId,
    /// The memory space it belongs to (links join atoms of one space only).
    pub space: String,
    #[serde(rename = "type")]
    pub atom_type: String,
    #[serde(flatten)]
    pub kind: AtomKind,
    pub tv: TruthValue,
    pub av: AttentionValue,
    /// Apply time (ms since the epoch) of the command that created the atom.
    pub created_ms: u64,
    /// Apply time of the last command that changed it.
    pub updated_ms: u64,
}

impl Atom {
    /// A node's name (`None` for links).
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            AtomKind::Node { name } => Some(name),
            AtomKind::Link { .. } => None,
        }
    }

    /// The ids this atom points to (empty for nodes).
    pub fn outgoing(&self) -> &[AtomId] {
        match &self.kind {
            AtomKind::Node { .. } => &[],
            AtomKind::Link { outgoing } => outgoing,
        }
    }
}

/// Checks a type name is an identifier: `[A-Za-z][A-Za-z0-9_]{0,63}`.
pub fn validate_type_name(name: &str) -> Result<(), String> {
    validate_identifier("type", name)
}

/// Checks a space name: the same rules as a type name.
pub fn validate_space_name(name: &str) -> Result<(), String> {
    validate_identifier("space", name)
}

fn validate_identifier(what: &str, name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || name.len() > MAX_TYPE_LEN || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{what} {name:?} is not an identifier: it must match [A-Za-z][A-Za-z0-9_]{{0,63}}"
        ));
    }
    Ok(())
}

/// What the state machine keeps about one memory space: how much it holds, whether it is
/// being deleted (its atoms are removed a bounded number per entry; writes are refused), and
/// its settings. Quotas per space will live here too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceInfo {
    pub name: String,
    pub nodes: u64,
    pub links: u64,
    pub sessions: u64,
    pub observations: u64,
    pub deleting: bool,
    /// The leader embeds the names of the space's nodes that have no vector of its embedding
    /// model (asynchronously, after commit). Off by default.
    #[serde(default)]
    pub auto_embed: bool,
}

impl SpaceInfo {
    pub fn atoms(&self) -> u64 {
        self.nodes + self.links
    }

    /// Holds nothing and has only default settings: such a space has no row.
    pub fn is_empty(&self) -> bool {
        self.atoms() == 0 && self.sessions == 0 && self.observations == 0 && !self.auto_embed
    }
}

/// Lifecycle of an agent session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    Active,
    Idle,
    Closed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Idle => "idle",
            SessionStatus::Closed => "closed",
        }
    }
}

/// An agent session: a conversation or task whose state the cluster keeps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub id: u64,
    pub space: String,
    pub status: SessionStatus,
    /// An idle session closes this long after its last update.
    pub ttl_ms: u64,
    pub metadata: serde_json::Value,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// When the session next changes status by itself: active -> idle after `ttl_ms` without
    /// an update, idle -> closed one more `ttl_ms` later. `None` once closed.
    pub expires_ms: Option<u64>,
}

/// One recorded outcome, for later learning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub id: u64,
    pub space: String,
    pub subject: String,
    pub success: bool,
    pub duration_ms: u64,
    pub bytes: u64,
    pub features: serde_json::Value,
    pub message: String,
    pub recorded_ms: u64,
}

/// Aggregates over a subject's retained observations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservationStats {
    pub subject: String,
    pub count: u64,
    pub successes: u64,
    pub success_rate: f64,
    pub mean_duration_ms: f64,
    pub total_bytes: u64,
}

/// The running sums the state machine keeps per (space, subject), so stats and retention need
/// no scan of the subject's observations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTotals {
    pub count: u64,
    pub successes: u64,
    pub total_bytes: u64,
    pub total_duration_ms: u64,
}

impl SubjectTotals {
    pub fn add(&mut self, o: &Observation, sign: i8) {
        let apply =
            |v: &mut u64, d: u64| *v = if sign > 0 { v.saturating_add(d) } else { v.saturating_sub(d) };
        apply(&mut self.count, 1);
        apply(&mut self.successes, u64::from(o.success));
        apply(&mut self.total_bytes, o.bytes);
        apply(&mut self.total_duration_ms, o.duration_ms);
    }

    pub fn stats(&self, subject: &str) -> ObservationStats {
        let n = self.count.max(1) as f64;
        ObservationStats {
            subject: subject.to_string(),
            count: self.count,
            successes: self.successes,
            success_rate: if self.count == 0 { 0.0 } else { self.successes as f64 / n },
            mean_duration_ms: if self.count == 0 { 0.0 } else { self.total_duration_ms as f64 / n },
            total_bytes: self.total_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_pools_evidence() {
        let a = TruthValue { strength: 0.9, confidence: 0.5 };
        let b = TruthValue { strength: 0.1, confidence: 0.5 };
        let r = a.merge(b, Merge::Revision);
        assert!((r.strength - 0.5).abs() < 1e-9);
        assert!(r.confidence > 0.5, "pooled evidence is more confident: {r:?}");
    }

    #[test]
    fn highest_confidence_keeps_the_surer_value() {
        let a = TruthValue { strength: 0.9, confidence: 0.8 };
        let b = TruthValue { strength: 0.1, confidence: 0.2 };
        assert_eq!(a.merge(b, Merge::HighestConfidence), a);
        assert_eq!(b.merge(a, Merge::HighestConfidence), a);
    }

    #[test]
    fn type_names_are_identifiers() {
        assert!(validate_type_name("ConceptNode").is_ok());
        assert!(validate_type_name("a_1").is_ok());
        for bad in ["", "1abc", "with space", "é", &"x".repeat(65)] {
            assert!(validate_type_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn truth_values_outside_unit_interval_are_rejected() {
        assert!(TruthValue { strength: 1.5, confidence: 0.1 }.validate().is_err());
        assert!(TruthValue { strength: f64::NAN, confidence: 0.1 }.validate().is_err());
    }
}
