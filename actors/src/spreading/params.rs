//! What a caller may ask of a spread (`POST /v1/spread`), the defaults of what it leaves out,
//! and the checks that answer a bad value with the field's name. Defaults are what a caller who
//! sends only sources gets; the reply's `parameters` says every value used.

use serde::{Deserialize, Serialize};

use crate::model::{validate_type_name, AtomId};

/// Most sources one spread may start from.
pub const MAX_SOURCES: usize = 1000;
/// Deepest spread.
pub const MAX_HOPS: u32 = 16;
/// Most results one spread may answer.
pub const MAX_TOP_K: usize = 10_000;
/// Longest deadline.
pub const MAX_DEADLINE_MS: u64 = 60_000;
/// Largest initial activation of one source.
pub const MAX_ACTIVATION: f64 = 1e6;

/// One source: an atom id, or a node by type and name, with its initial activation.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Source {
    Id(AtomId),
    Atom {
        #[serde(default)]
        id: Option<AtomId>,
        #[serde(default, rename = "type")]
        atom_type: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        activation: Option<f64>,
    },
}

/// Which atom a source names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceRef {
    Id(AtomId),
    Node { atom_type: String, name: String },
}

/// The body of `POST /v1/spread`; every field but `sources` is optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpreadRequest {
    pub sources: Vec<Source>,
    pub max_hops: Option<u32>,
    pub decay: Option<f64>,
    pub threshold: Option<f64>,
    pub top_k: Option<usize>,
    pub deadline_ms: Option<u64>,
    pub fan_normalization: Option<bool>,
    pub lateral_inhibition: Option<f64>,
    pub link_types: Option<Vec<String>>,
    pub min_confidence: Option<f64>,
    pub cycle_penalty: Option<f64>,
    pub sti_weight: Option<f64>,
    pub unknown_confidence: Option<f64>,
    pub frontier_cap: Option<usize>,
    #[serde(default)]
    pub explain: bool,
}

/// Every value one spread used (the reply's `stats.parameters`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Parameters {
    pub max_hops: u32,
    pub decay: f64,
    pub threshold: f64,
    pub top_k: usize,
    pub deadline_ms: u64,
    pub fan_normalization: bool,
    pub lateral_inhibition: f64,
    pub link_types: Option<Vec<String>>,
    pub min_confidence: f64,
    pub cycle_penalty: f64,
    pub sti_weight: f64,
    pub unknown_confidence: f64,
    pub frontier_cap: usize,
    pub explain: bool,
}

impl Default for Parameters {
    fn default() -> Self {
        Parameters {
            max_hops: 3,
            decay: 0.5,
            threshold: 0.01,
            top_k: 20,
            deadline_ms: 100,
            fan_normalization: true,
            lateral_inhibition: 0.0,
            link_types: None,
            min_confidence: 0.0,
            cycle_penalty: 1.0,
            sti_weight: 0.0,
            unknown_confidence: 0.5,
            frontier_cap: 10_000,
            explain: false,
        }
    }
}

/// A bad field: its name and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct BadField {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> BadField {
    BadField { field: field.into(), problem: problem.into() }
}

fn unit(field: &str, v: Option<f64>, default: f64) -> Result<f64, BadField> {
    match v {
        None => Ok(default),
        Some(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        Some(v) => Err(bad(field, format!("must be a number in [0, 1], got {v}"))),
    }
}

impl SpreadRequest {
    /// Checks every field and fills in the defaults; answers the sources and the parameters.
    pub fn resolve(&self) -> Result<(Vec<(SourceRef, f64)>, Parameters), BadField> {
        let d = Parameters::default();
        if self.sources.is_empty() {
            return Err(bad("sources", "give at least one source: an atom id or {\"type\", \"name\"}"));
        }
        if self.sources.len() > MAX_SOURCES {
            return Err(bad("sources", format!("at most {MAX_SOURCES}, got {}", self.sources.len())));
        }
        let sources = self.sources.iter().enumerate().map(|(i, s)| source(i, s)).collect::<Result<_, _>>()?;
        let max_hops = self.max_hops.unwrap_or(d.max_hops);
        if !(1..=MAX_HOPS).contains(&max_hops) {
            return Err(bad("max_hops", format!("must be in 1..={MAX_HOPS}, got {max_hops}")));
        }
        let top_k = self.top_k.unwrap_or(d.top_k);
        if !(1..=MAX_TOP_K).contains(&top_k) {
            return Err(bad("top_k", format!("must be in 1..={MAX_TOP_K}, got {top_k}")));
        }
        let deadline_ms = self.deadline_ms.unwrap_or(d.deadline_ms);
        if !(1..=MAX_DEADLINE_MS).contains(&deadline_ms) {
            return Err(bad("deadline_ms", format!("must be in 1..={MAX_DEADLINE_MS}, got {deadline_ms}")));
        }
        let threshold = self.threshold.unwrap_or(d.threshold);
        if !threshold.is_finite() || threshold < 0.0 {
            return Err(bad("threshold", format!("must be a finite number >= 0, got {threshold}")));
        }
        let sti_weight = self.sti_weight.unwrap_or(d.sti_weight);
        if !sti_weight.is_finite() || !(0.0..=100.0).contains(&sti_weight) {
            return Err(bad("sti_weight", format!("must be a number in [0, 100], got {sti_weight}")));
        }
        let frontier_cap = self.frontier_cap.unwrap_or(d.frontier_cap);
        if frontier_cap == 0 {
            return Err(bad("frontier_cap", "must be at least 1"));
        }
        if let Some(types) = &self.link_types {
            for (i, t) in types.iter().enumerate() {
                validate_type_name(t).map_err(|e| bad(format!("link_types[{i}]"), e))?;
            }
        }
        let params = Parameters {
            max_hops,
            decay: unit("decay", self.decay, d.decay)?,
            threshold,
            top_k,
            deadline_ms,
            fan_normalization: self.fan_normalization.unwrap_or(d.fan_normalization),
            lateral_inhibition: unit("lateral_inhibition", self.lateral_inhibition, d.lateral_inhibition)?,
            link_types: self.link_types.clone(),
            min_confidence: unit("min_confidence", self.min_confidence, d.min_confidence)?,
            cycle_penalty: unit("cycle_penalty", self.cycle_penalty, d.cycle_penalty)?,
            sti_weight,
            unknown_confidence: unit("unknown_confidence", self.unknown_confidence, d.unknown_confidence)?,
            frontier_cap,
            explain: self.explain,
        };
        Ok((sources, params))
    }
}

fn source(i: usize, s: &Source) -> Result<(SourceRef, f64), BadField> {
    let field = format!("sources[{i}]");
    let (reference, activation) = match s {
        Source::Id(id) => (SourceRef::Id(*id), None),
        Source::Atom { id: Some(id), atom_type: None, name: None, activation } => {
            (SourceRef::Id(*id), *activation)
        }
        Source::Atom { id: None, atom_type: Some(t), name: Some(n), activation } => {
            validate_type_name(t).map_err(|e| bad(format!("{field}.type"), e))?;
            (SourceRef::Node { atom_type: t.clone(), name: n.clone() }, *activation)
        }
        Source::Atom { .. } => {
            return Err(bad(field, "name a source by \"id\", or by \"type\" and \"name\" together"));
        }
    };
    let activation = activation.unwrap_or(1.0);
    if !activation.is_finite() || activation <= 0.0 || activation > MAX_ACTIVATION {
        return Err(bad(
            format!("{field}.activation"),
            format!("must be a number in (0, {MAX_ACTIVATION}], got {activation}"),
        ));
    }
    Ok((reference, activation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: serde_json::Value) -> Result<SpreadRequest, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn only_sources_gives_the_defaults() {
        let r = request(
            serde_json::json!({"sources": [7, {"type": "ConceptNode", "name": "cat", "activation": 2.0}]}),
        )
        .unwrap();
        let (sources, params) = r.resolve().unwrap();
        assert_eq!(sources[0], (SourceRef::Id(7), 1.0));
        assert_eq!(
            sources[1],
            (SourceRef::Node { atom_type: "ConceptNode".into(), name: "cat".into() }, 2.0)
        );
        assert_eq!(params, Parameters::default());
    }

    #[test]
    fn every_bad_value_names_its_field() {
        let cases = [
            (serde_json::json!({"sources": []}), "sources"),
            (serde_json::json!({"sources": [1], "decay": -0.1}), "decay"),
            (serde_json::json!({"sources": [1], "max_hops": 0}), "max_hops"),
            (serde_json::json!({"sources": [1], "max_hops": 17}), "max_hops"),
            (serde_json::json!({"sources": [1], "top_k": 0}), "top_k"),
            (serde_json::json!({"sources": [1], "top_k": 1_000_000}), "top_k"),
            (serde_json::json!({"sources": [1], "deadline_ms": 0}), "deadline_ms"),
            (serde_json::json!({"sources": [1], "threshold": -1.0}), "threshold"),
            (serde_json::json!({"sources": [1], "lateral_inhibition": 2.0}), "lateral_inhibition"),
            (serde_json::json!({"sources": [1], "min_confidence": 1.5}), "min_confidence"),
            (serde_json::json!({"sources": [1], "cycle_penalty": -1.0}), "cycle_penalty"),
            (serde_json::json!({"sources": [1], "frontier_cap": 0}), "frontier_cap"),
            (serde_json::json!({"sources": [1], "link_types": ["bad type"]}), "link_types[0]"),
            (serde_json::json!({"sources": [{"id": 1, "activation": 0.0}]}), "sources[0].activation"),
            (serde_json::json!({"sources": [1, {"type": "ConceptNode"}]}), "sources[1]"),
        ];
        for (json, field) in cases {
            let err = request(json.clone()).unwrap().resolve().expect_err(&json.to_string());
            assert_eq!(err.field, field, "{json}: {err}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = request(serde_json::json!({"sources": [1], "max_hop": 2})).unwrap_err();
        assert!(err.to_string().contains("max_hop"), "{err}");
    }
}
