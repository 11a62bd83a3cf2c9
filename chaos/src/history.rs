//! The operation history of the register workload: what each client asked of which key, when it
//! was invoked and when it completed, and how it ended (ok with the value read / fail: certainly no
//! effect / unknown: may or may not have taken effect). Owns the thread-safe [`Recorder`] the
//! workloads write into and the [`History`] the linearizability checker reads.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client asked of one register. A register holds `Option<i64>`: `None` until written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Read,
    Write(i64),
    /// Set the register to `new` only if it holds `expect` (`None`: only if never written).
    Cas {
        expect: Option<i64>,
        new: i64,
    },
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect. Reads carry the value they saw; writes and CAS carry `None`.
    Ok(Option<i64>),
    /// It certainly took no effect: a refused request, a CAS whose expectation did not hold.
    Fail,
    /// Timed out or the connection was lost: it may or may not have taken effect, at any time
    /// after its invocation.
    Unknown,
}

/// Names one invoked operation, to complete it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId(pub usize);

/// One recorded operation. Times are nanoseconds on the monotonic clock since the recorder was
/// created; an invocation is stamped before the request leaves and a completion after the answer
/// arrived, so the recorded interval always contains the real one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: OpId,
    pub client: u64,
    pub key: String,
    pub op: Op,
    pub invoke_ns: u64,
    /// When the client learned the outcome; for `Unknown`, when it gave up (`None`: it never
    /// did). Only [`Entry::returned_ns`] bounds when the operation took effect.
    pub complete_ns: Option<u64>,
    pub outcome: Outcome,
}

impl Entry {
    /// The time by which this operation had certainly taken effect or certainly never would:
    /// `None` for `Unknown` outcomes, whose effect may land at any later time (+infinity).
    pub fn returned_ns(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Unknown => None,
            Outcome::Ok(_) | Outcome::Fail => self.complete_ns,
        }
    }
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
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder { base: Instant::now(), entries: Mutex::new(Vec::new()) }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records that `client` is about to send `op` on `key`; call it before sending.
    pub fn invoke(&self, client: u64, key: &str, op: Op) -> OpId {
        let invoke_ns = self.now_ns();
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = OpId(entries.len());
        entries.push(Entry {
            id,
            client,
            key: key.to_string(),
            op,
            invoke_ns,
            complete_ns: None,
            outcome: Outcome::Unknown,
        });
        id
    }

    /// Records how operation `id` ended; call it after the answer arrived. Only the first
    /// completion of an operation counts.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let complete_ns = self.now_ns();
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = entries.get_mut(id.0).filter(|e| e.complete_ns.is_none()) {
            entry.complete_ns = Some(complete_ns);
            entry.outcome = outcome;
        }
    }

    /// The history so far. Operations not completed yet stay `Unknown` with no completion time.
    pub fn finish(&self) -> History {
        History { entries: self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone() }
    }
}

/// Counts over a history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub offered: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

/// Every recorded operation, in invocation order of the recorder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<Entry>,
}

impl History {
    /// The operations of each key (registers are independent, so each is checked alone).
    pub fn by_key(&self) -> BTreeMap<String, Vec<Entry>> {
        let mut keys: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for entry in &self.entries {
            keys.entry(entry.key.clone()).or_default().push(entry.clone());
        }
        keys
    }

    pub fn summary(&self) -> Summary {
        let mut summary = Summary { offered: self.entries.len() as u64, ..Summary::default() };
        for entry in &self.entries {
            match entry.outcome {
                Outcome::Ok(_) => summary.ok += 1,
                Outcome::Fail => summary.fail += 1,
                Outcome::Unknown => summary.unknown += 1,
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn records_outcomes_counts_them_and_splits_by_key() {
        let recorder = Recorder::new();
        let write = recorder.invoke(1, "x", Op::Write(5));
        let read = recorder.invoke(2, "y", Op::Read);
        let cas = recorder.invoke(3, "x", Op::Cas { expect: Some(5), new: 6 });
        let refused = recorder.invoke(4, "y", Op::Write(7));
        recorder.complete(write, Outcome::Ok(None));
        recorder.complete(read, Outcome::Ok(Some(5)));
        recorder.complete(cas, Outcome::Unknown);
        recorder.complete(refused, Outcome::Fail);
        let never_answered = recorder.invoke(5, "x", Op::Read);
        let history = recorder.finish();

        assert_eq!(history.summary(), Summary { offered: 5, ok: 2, fail: 1, unknown: 2 });
        let keys = history.by_key();
        let x: Vec<OpId> = keys["x"].iter().map(|e| e.id).collect();
        let y: Vec<OpId> = keys["y"].iter().map(|e| e.id).collect();
        assert_eq!(x, vec![write, cas, never_answered]);
        assert_eq!(y, vec![read, refused]);
        assert_eq!(keys["y"][0].outcome, Outcome::Ok(Some(5)));
    }

    #[test]
    fn only_definite_outcomes_bound_when_an_operation_took_effect() {
        let recorder = Recorder::new();
        let ok = recorder.invoke(1, "x", Op::Write(1));
        let gave_up = recorder.invoke(2, "x", Op::Write(2));
        recorder.complete(ok, Outcome::Ok(None));
        recorder.complete(gave_up, Outcome::Unknown);
        recorder.invoke(3, "x", Op::Write(3));
        let history = recorder.finish();
        let [ok, gave_up, open] = &history.entries[..] else { panic!("three entries") };

        assert!(ok.returned_ns().unwrap() >= ok.invoke_ns);
        assert!(gave_up.complete_ns.is_some(), "the give-up time is kept for the record");
        assert_eq!(gave_up.returned_ns(), None, "an unknown outcome may take effect at any later time");
        assert_eq!((open.complete_ns, &open.outcome), (None, &Outcome::Unknown));
    }

    #[test]
    fn a_second_completion_does_not_rewrite_the_first() {
        let recorder = Recorder::new();
        let id = recorder.invoke(1, "x", Op::Read);
        recorder.complete(id, Outcome::Ok(Some(1)));
        recorder.complete(id, Outcome::Fail);
        assert_eq!(recorder.finish().entries[0].outcome, Outcome::Ok(Some(1)));
    }

    #[test]
    fn concurrent_clients_get_distinct_ids_and_ordered_times() {
        let recorder = Arc::new(Recorder::new());
        let threads: Vec<_> = (0..8u64)
            .map(|client| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for n in 0..100 {
                        let id = recorder.invoke(client, &format!("k{}", n % 3), Op::Write(n));
                        recorder.complete(id, Outcome::Ok(None));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().expect("client thread"));
        let history = recorder.finish();

        assert_eq!(history.summary(), Summary { offered: 800, ok: 800, fail: 0, unknown: 0 });
        for (index, entry) in history.entries.iter().enumerate() {
            assert_eq!(entry.id, OpId(index));
            assert!(entry.complete_ns.unwrap() >= entry.invoke_ns);
        }
        assert_eq!(history.by_key().values().map(Vec::len).sum::<usize>(), 800);
    }

    #[test]
    fn a_history_survives_a_json_round_trip() {
        let recorder = Recorder::new();
        let cas = recorder.invoke(1, "x", Op::Cas { expect: None, new: 3 });
        recorder.complete(cas, Outcome::Ok(None));
        let read = recorder.invoke(2, "x", Op::Read);
        recorder.complete(read, Outcome::Ok(Some(3)));
        recorder.invoke(3, "x", Op::Write(4));
        let history = recorder.finish();

        let json = serde_json::to_string(&history).expect("serialise");
        assert!(json.contains(r#""cas":{"expect":null,"new":3}"#), "{json}");
        let back: History = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, history);
    }
}
