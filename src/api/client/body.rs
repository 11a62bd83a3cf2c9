//! JSON request bodies of the client API and their conversion into `Command`s.

use cograft_actors::command::{AtomRef, Command, Expect};
use cograft_actors::model::{Merge, SessionStatus, TruthValue};
use serde::{Deserialize, Deserializer};

/// Deserialises a present field as `Some`, even when it is `null` (absent stays `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// An atom reference: an id, or `"$N"` for the atom produced by batch op N.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum RefBody {
    Id(u64),
    Op(String),
}

impl RefBody {
    pub fn to_ref(&self) -> Result<AtomRef, String> {
        match self {
            RefBody::Id(id) => Ok(AtomRef::Id(*id)),
            RefBody::Op(s) => s
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .map(AtomRef::Op)
                .ok_or_else(|| format!("{s:?} is neither an atom id nor a \"$N\" batch reference")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBody {
    #[serde(rename = "type")]
    pub atom_type: String,
    pub name: String,
    pub tv: Option<TruthValue>,
    pub merge: Option<Merge>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    #[serde(rename = "type")]
    pub atom_type: String,
    pub outgoing: Vec<RefBody>,
    pub tv: Option<TruthValue>,
    pub merge: Option<Merge>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StimulusBody {
    #[serde(default)]
    pub sti: f64,
    #[serde(default)]
    pub lti: f64,
    /// Sets the keep-forever flag (never forgotten) when given.
    #[serde(default)]
    pub vlti: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueBody {
    pub value: serde_json::Value,
    /// Absent: unconditional. `null`: only if no value is set. Anything else: only if equal.
    #[serde(default, deserialize_with = "present")]
    pub expect: Option<serde_json::Value>,
}

impl ValueBody {
    pub fn expect(&self) -> Option<Expect> {
        self.expect.as_ref().map(|v| if v.is_null() { Expect::Absent } else { Expect::Equals(v.clone()) })
    }
}

/// One operation of `POST /v1/batch`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpBody {
    AddNode {
        #[serde(rename = "type")]
        atom_type: String,
        name: String,
        tv: Option<TruthValue>,
        merge: Option<Merge>,
    },
    AddLink {
        #[serde(rename = "type")]
        atom_type: String,
        outgoing: Vec<RefBody>,
        tv: Option<TruthValue>,
        merge: Option<Merge>,
    },
    Delete {
        id: RefBody,
    },
    SetTv {
        id: RefBody,
        tv: TruthValue,
    },
    Stimulate {
        id: RefBody,
        #[serde(default)]
        sti: f64,
        #[serde(default)]
        lti: f64,
        #[serde(default)]
        vlti: Option<bool>,
    },
    SetValue {
        id: RefBody,
        key: String,
        value: serde_json::Value,
        #[serde(default, deserialize_with = "present")]
        expect: Option<serde_json::Value>,
    },
    /// The atom's vector under `model`; `null` removes it.
    SetEmbedding {
        id: RefBody,
        model: String,
        vector: Option<Vec<f32>>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub ops: Vec<OpBody>,
}

impl OpBody {
    pub fn into_command(self, default_merge: Merge) -> Result<Command, String> {
        Ok(match self {
            OpBody::AddNode { atom_type, name, tv, merge } => {
                Command::AddNode { atom_type, name, tv, merge: merge.unwrap_or(default_merge) }
            }
            OpBody::AddLink { atom_type, outgoing, tv, merge } => Command::AddLink {
                atom_type,
                outgoing: outgoing.iter().map(RefBody::to_ref).collect::<Result<_, _>>()?,
                tv,
                merge: merge.unwrap_or(default_merge),
            },
            OpBody::Delete { id } => Command::DeleteAtom { id: id.to_ref()? },
            OpBody::SetTv { id, tv } => Command::SetTruth { id: id.to_ref()?, tv },
            OpBody::Stimulate { id, sti, lti, vlti } => {
                Command::Stimulate { id: id.to_ref()?, sti, lti, vlti }
            }
            OpBody::SetValue { id, key, value, expect } => {
                let body = ValueBody { value, expect };
                Command::SetValue { id: id.to_ref()?, key, expect: body.expect(), value: body.value }
            }
            OpBody::SetEmbedding { id, model, vector } => {
                Command::SetEmbedding { id: id.to_ref()?, model, vector }
            }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    pub ttl_ms: Option<u64>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionPatch {
    pub status: Option<SessionStatus>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationBody {
    pub subject: String,
    pub success: bool,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub features: serde_json::Value,
    #[serde(default)]
    pub message: String,
}
