//! The operation history: what each client asked of a register, when it was invoked and when
//! it completed, and how (ok with the value read / fail: certainly no effect / unknown: may or
//! may not have taken effect). Shared by the workloads (recording) and the checker (reading).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// What a client asked of one register (a register holds `Option<i64>`, `None` = never written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Read,
    Write(i64),
    /// Set to `new` only if the register holds `expect` (`None`: only if never written).
    Cas {
        expect: Option<i64>,
        new: i64,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect; reads carry the value they saw.
    Ok(Option<i64>),
    /// It certainly took no effect (a refused request, a CAS that did not match).
    Fail,
    /// Timed out or lost: it may or may not have taken effect.
    Unknown,
}

/// One recorded operation. Times are microseconds since the recorder started: the invocation
/// is stamped before the request leaves and the completion after the answer arrived, so the
/// recorded interval always contains the real one.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub id: usize,
    pub client: u64,
    pub key: String,
    pub op: Op,
    pub invoke_us: u64,
    /// `None` for operations that never completed (always with [`Outcome::Unknown`]).
    pub complete_us: Option<u64>,
    pub outcome: Outcome,
}

/// Records operations from many concurrent clients; share it behind an `Arc`.
pub struct Recorder {
    base: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder { base: Instant::now(), entries: Mutex::new(Vec::new()) }
    }

    fn now_us(&self) -> u64 {
        self.base.elapsed().as_micros() as u64
    }

    /// Records an invocation; answers the id to complete it with.
    pub fn invoke(&self, client: u64, key: &str, op: Op) -> usize {
        let invoke_us = self.now_us();
        let mut entries = self.entries.lock().expect("history lock");
        let id = entries.len();
        entries.push(Entry {
            id,
            client,
            key: key.to_string(),
            op,
            invoke_us,
            complete_us: None,
            outcome: Outcome::Unknown,
        });
        id
    }

    /// Records how operation `id` ended. An `Unknown` outcome keeps the operation open forever.
    pub fn complete(&self, id: usize, outcome: Outcome) {
        let complete_us = self.now_us();
        let mut entries = self.entries.lock().expect("history lock");
        if let Some(e) = entries.get_mut(id) {
            e.complete_us = (outcome != Outcome::Unknown).then_some(complete_us);
            e.outcome = outcome;
        }
    }

    /// The history so far; operations never completed count as unknown.
    pub fn finish(&self) -> History {
        History { entries: self.entries.lock().expect("history lock").clone() }
    }
}

/// Counts over a history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub offered: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    pub entries: Vec<Entry>,
}

impl History {
    /// The operations of each key, in invocation order (registers are independent).
    pub fn by_key(&self) -> BTreeMap<String, Vec<Entry>> {
        let mut keys: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in &self.entries {
            keys.entry(e.key.clone()).or_default().push(e.clone());
        }
        keys
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary { offered: self.entries.len() as u64, ..Summary::default() };
        for e in &self.entries {
            match e.outcome {
                Outcome::Ok(_) => s.ok += 1,
                Outcome::Fail => s.fail += 1,
                Outcome::Unknown => s.unknown += 1,
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_splits_by_key() {
        let r = Recorder::new();
        let a = r.invoke(1, "x", Op::Write(5));
        let b = r.invoke(2, "y", Op::Read);
        let c = r.invoke(3, "x", Op::Cas { expect: Some(5), new: 6 });
        r.complete(a, Outcome::Ok(None));
        r.complete(b, Outcome::Ok(None));
        r.complete(c, Outcome::Unknown);
        r.invoke(4, "x", Op::Read);
        let h = r.finish();
        assert_eq!(h.summary(), Summary { offered: 4, ok: 2, fail: 0, unknown: 2 });
        let keys = h.by_key();
        assert_eq!(keys["x"].len(), 3);
        assert_eq!(keys["y"].len(), 1);
        assert!(keys["x"][1].complete_us.is_none(), "an unknown op stays open");
        assert!(keys["x"][0].complete_us.unwrap() >= keys["x"][0].invoke_us);
    }
}
