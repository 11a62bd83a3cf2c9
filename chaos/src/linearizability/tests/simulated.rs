//! Long histories simulated from a real linearizable register under concurrent clients, and small
//! random histories (valid or not) on which the checker must agree with an exhaustive search.

use std::time::Instant;

use super::BUDGET;
use crate::history::{Entry, Op, OpId, Outcome};
use crate::linearizability::{check_key, CheckResult};

/// A tiny xorshift64 generator, so simulated histories are reproducible from their seed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// An operation planned by the simulation, before the register decides its outcome.
struct Planned {
    client: usize,
    op: Op,
    invoke: u64,
    /// When it takes effect; `None` for a request lost on the way.
    point: Option<u64>,
    /// When the answer arrives; `None` when it is lost (the outcome is then unknown).
    complete: Option<u64>,
}

/// A real linearizable register used by `clients` clients with `per_client` operations each:
/// every operation takes effect at one instant inside its interval (late, for some whose answer is
/// lost, or never, for requests lost on the way), and each outcome is what the register did.
fn simulate(seed: u64, clients: usize, per_client: usize) -> Vec<Entry> {
    let mut rng = XorShift(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let mut planned = Vec::new();
    for client in 0..clients {
        let mut now = rng.below(100);
        for n in 0..per_client {
            let value = (client as i64 + 1) * 1_000_000 + n as i64;
            let op = match rng.below(10) {
                0..=3 => Op::Read,
                4..=6 => Op::Write(value),
                _ => Op::Cas { expect: None, new: value },
            };
            let (invoke, point) = (now, now + 1 + rng.below(50));
            let (point, complete) = match rng.below(100) {
                0..=3 => (Some(point + rng.below(2000)), None),
                4..=6 => (None, None),
                _ => (Some(point), Some(point + 1 + rng.below(50))),
            };
            now = complete.unwrap_or(invoke + 300) + rng.below(30);
            planned.push(Planned { client, op, invoke, point, complete });
        }
    }
    let mut order: Vec<usize> = (0..planned.len()).filter(|&i| planned[i].point.is_some()).collect();
    order.sort_by_key(|&i| planned[i].point);
    let mut outcomes = vec![Outcome::Unknown; planned.len()];
    let (mut state, mut written): (Option<i64>, Vec<i64>) = (None, Vec::new());
    for i in order {
        let outcome = match &mut planned[i].op {
            Op::Read => Outcome::Ok(state),
            Op::Write(value) => {
                state = Some(*value);
                written.push(*value);
                Outcome::Ok(None)
            }
            Op::Cas { expect, new } => {
                // The client's expectation: mostly what the register holds, sometimes stale.
                let stale = written.get(rng.below(written.len() as u64 + 1) as usize).copied();
                *expect = if rng.below(3) == 0 { stale } else { state };
                if *expect == state {
                    state = Some(*new);
                    written.push(*new);
                    Outcome::Ok(None)
                } else {
                    Outcome::Fail
                }
            }
        };
        if planned[i].complete.is_some() {
            outcomes[i] = outcome;
        }
    }
    let mut entries: Vec<Entry> = planned
        .into_iter()
        .zip(outcomes)
        .map(|(p, outcome)| Entry {
            id: OpId(0),
            client: p.client as u64,
            key: "k".into(),
            op: p.op,
            invoke_ns: p.invoke,
            // A client that lost the answer gives up after a timeout, as the recorder notes it.
            complete_ns: p.complete.or(Some(p.invoke + 300)),
            outcome,
        })
        .collect();
    entries.sort_by_key(|e| e.invoke_ns);
    entries.iter_mut().enumerate().for_each(|(i, e)| e.id = OpId(i));
    entries
}

#[test]
fn a_large_simulated_linearizable_history_is_accepted() {
    for (seed, clients, per_client) in [(7, 20, 250), (11, 30, 334)] {
        let entries = simulated_with_all_outcomes(seed, clients, per_client);
        let started = Instant::now();
        let verdict = check_key("k", &entries, BUDGET);
        let elapsed = started.elapsed();
        assert!(verdict.passed(), "{:?}", verdict.result);
        eprintln!(
            "{clients} clients, {} ops ({} checked): linearizable in {elapsed:.2?}, {} states",
            entries.len(),
            verdict.ops_checked,
            verdict.states_explored
        );
    }
}

fn simulated_with_all_outcomes(seed: u64, clients: usize, per_client: usize) -> Vec<Entry> {
    let entries = simulate(seed, clients, per_client);
    let count = |f: fn(&Entry) -> bool| entries.iter().filter(|e| f(e)).count();
    assert!(count(|e| e.outcome == Outcome::Fail) > 0, "some CAS fail");
    assert!(
        count(|e| matches!(e.op, Op::Cas { .. }) && matches!(e.outcome, Outcome::Ok(_))) > 0,
        "some succeed"
    );
    assert!(count(|e| e.outcome == Outcome::Unknown) > entries.len() / 20, "some answers are lost");
    entries
}

#[test]
fn one_stale_read_in_a_long_simulated_history_is_found() {
    let mut entries = simulate(3, 20, 100);
    let done = |e: &Entry| e.returned_ns().filter(|_| matches!(e.outcome, Outcome::Ok(_)));
    // A read that began after write `old` and then write `newer` had both returned: seeing `old`
    // is stale, since every value is written once.
    let writes: Vec<(i64, u64, u64)> = entries
        .iter()
        .filter_map(|e| match e.op {
            Op::Write(v) => done(e).map(|r| (v, e.invoke_ns, r)),
            _ => None,
        })
        .collect();
    let (victim, old) = (entries.len() / 2..entries.len())
        .find_map(|i| {
            let read = &entries[i];
            let invoked = read.invoke_ns;
            let newer = writes.iter().filter(|w| w.2 < invoked).max_by_key(|w| w.1)?;
            let old = writes.iter().find(|w| w.2 < newer.1)?;
            (read.op == Op::Read && done(read).is_some()).then_some((i, old.0))
        })
        .expect("a read to corrupt");
    entries[victim].outcome = Outcome::Ok(Some(old));
    let explanation = match check_key("k", &entries, BUDGET).result {
        CheckResult::NotLinearizable { explanation } => explanation,
        other => panic!("missed a stale read: {other:?}"),
    };
    assert!(explanation.contains(&format!("#{victim} read saw {old}")), "{explanation}");
}

/// Whether some order of `entries` explains them, by trying every order of every subset of the
/// unknown operations: the definition itself, with none of the checker's shortcuts.
fn exhaustively_linearizable(entries: &[Entry]) -> bool {
    let ops: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.outcome != Outcome::Fail && !(e.op == Op::Read && e.outcome == Outcome::Unknown))
        .collect();
    fn extend(ops: &[&Entry], placed: &mut Vec<bool>, state: Option<i64>) -> bool {
        let must_place = |e: &Entry| e.outcome != Outcome::Unknown;
        if ops.iter().zip(placed.iter()).all(|(e, &p)| p || !must_place(e)) {
            return true;
        }
        for i in 0..ops.len() {
            // Next only if no unplaced operation returned before this one was invoked.
            let blocked = (0..ops.len())
                .any(|j| !placed[j] && ops[j].returned_ns().is_some_and(|r| r < ops[i].invoke_ns));
            if placed[i] || blocked {
                continue;
            }
            let after = match (&ops[i].op, &ops[i].outcome) {
                (Op::Read, Outcome::Ok(seen)) => (*seen == state).then_some(state),
                (Op::Read, _) => None,
                (Op::Write(v), _) => Some(Some(*v)),
                (Op::Cas { expect, new }, _) => (*expect == state).then_some(Some(*new)),
            };
            if let Some(after) = after {
                placed[i] = true;
                if extend(ops, placed, after) {
                    return true;
                }
                placed[i] = false;
            }
        }
        false
    }
    extend(&ops, &mut vec![false; ops.len()], None)
}

/// A small history of random operations, outcomes and overlaps; values repeat on purpose.
fn random_history(rng: &mut XorShift, len: usize) -> Vec<Entry> {
    let value = |rng: &mut XorShift| rng.below(3) as i64 + 1;
    let maybe = |rng: &mut XorShift| (rng.below(4) != 0).then(|| rng.below(3) as i64 + 1);
    let mut entries: Vec<Entry> = (0..len)
        .map(|_| {
            let op = match rng.below(3) {
                0 => Op::Read,
                1 => Op::Write(value(rng)),
                _ => Op::Cas { expect: maybe(rng), new: value(rng) },
            };
            let outcome = match (rng.below(6), &op) {
                (0, _) => Outcome::Unknown,
                (1, _) => Outcome::Fail,
                (_, Op::Read) => Outcome::Ok(maybe(rng)),
                _ => Outcome::Ok(None),
            };
            let invoke = rng.below(20);
            let complete = invoke + rng.below(8);
            let complete = (outcome != Outcome::Unknown || rng.below(2) == 0).then_some(complete);
            Entry {
                id: OpId(0),
                client: 0,
                key: "k".into(),
                op,
                invoke_ns: invoke,
                complete_ns: complete,
                outcome,
            }
        })
        .collect();
    entries.iter_mut().enumerate().for_each(|(i, e)| (e.id, e.client) = (OpId(i), i as u64));
    entries
}

#[test]
fn agrees_with_an_exhaustive_search_on_small_random_histories() {
    let mut rng = XorShift(0x5eed_cafe);
    let (mut valid, mut invalid) = (0, 0);
    for round in 0..20_000 {
        let entries = random_history(&mut rng, 3 + round % 6);
        let expected = exhaustively_linearizable(&entries);
        let verdict = check_key("k", &entries, BUDGET);
        assert_eq!(verdict.passed(), expected, "{:?} on {entries:#?}", verdict.result);
        assert!(matches!(verdict.result, CheckResult::Linearizable | CheckResult::NotLinearizable { .. }));
        (valid, invalid) = if expected { (valid + 1, invalid) } else { (valid, invalid + 1) };
    }
    assert!(valid > 2_000 && invalid > 2_000, "both verdicts exercised: {valid} valid, {invalid} invalid");
}

#[test]
fn real_threads_on_a_locked_register_record_a_linearizable_history() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use crate::history::Recorder;
    use crate::linearizability::check_history;

    let recorder = Arc::new(Recorder::new());
    let store: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let threads: Vec<_> = (0..8u64)
        .map(|client| {
            let (recorder, store) = (recorder.clone(), store.clone());
            std::thread::spawn(move || {
                let mut rng = XorShift(client * 7919 + 1);
                for n in 0..300 {
                    let key = format!("r{}", rng.below(3));
                    let value = (client as i64 + 1) * 1_000_000 + n;
                    let op = match rng.below(3) {
                        0 => Op::Read,
                        1 => Op::Write(value),
                        _ => Op::Cas { expect: store.lock().unwrap().get(&key).copied(), new: value },
                    };
                    let id = recorder.invoke(client, &key, op.clone());
                    let lost = rng.below(20);
                    // A request lost on the way never applies; a lost answer leaves it unknown.
                    let outcome = if lost == 0 {
                        Outcome::Unknown
                    } else {
                        let mut registers = store.lock().unwrap();
                        let current = registers.get(&key).copied();
                        let outcome = match op {
                            Op::Read => Outcome::Ok(current),
                            Op::Write(v) => {
                                registers.insert(key, v);
                                Outcome::Ok(None)
                            }
                            Op::Cas { expect, new } if expect == current => {
                                registers.insert(key, new);
                                Outcome::Ok(None)
                            }
                            Op::Cas { .. } => Outcome::Fail,
                        };
                        if lost == 1 {
                            Outcome::Unknown
                        } else {
                            outcome
                        }
                    };
                    recorder.complete(id, outcome);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().expect("client thread"));
    let history = recorder.finish();
    let report = check_history(&history, BUDGET);
    assert_eq!(report.verdicts.len(), 3);
    assert!(report.valid, "{:?}", report.verdicts);
}
