//! The checker against known-good and known-bad histories.

use std::time::Duration;

use super::{check_history, check_key, Budget, CheckResult};
use crate::history::{Entry, History, Op, Outcome};
use crate::rng::Rng;

const BUDGET: Budget = Budget { max_states: 10_000_000, deadline: Duration::from_secs(30) };

fn op(id: usize, key: &str, op: Op, invoke: u64, complete: Option<u64>, outcome: Outcome) -> Entry {
    Entry { id, client: id as u64, key: key.into(), op, invoke_us: invoke, complete_us: complete, outcome }
}

fn check(entries: &[Entry]) -> CheckResult {
    check_key("k", entries, BUDGET).result
}

fn ok() -> Outcome {
    Outcome::Ok(None)
}

fn read(v: Option<i64>) -> Outcome {
    Outcome::Ok(v)
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    for seen in [Some(1), Some(2)] {
        let h = [
            op(0, "k", Op::Write(1), 0, Some(10), ok()),
            op(1, "k", Op::Write(2), 20, Some(40), ok()),
            op(2, "k", Op::Read, 25, Some(35), read(seen)),
        ];
        assert_eq!(check(&h), CheckResult::Linearizable, "read {seen:?}");
    }
}

#[test]
fn a_stale_read_is_rejected() {
    let h = [
        op(0, "k", Op::Write(1), 0, Some(10), ok()),
        op(1, "k", Op::Write(2), 20, Some(30), ok()),
        op(2, "k", Op::Read, 40, Some(50), read(Some(1))),
    ];
    assert!(matches!(check(&h), CheckResult::NotLinearizable { .. }), "{:?}", check(&h));
}

#[test]
fn a_lost_write_is_rejected() {
    // Write 2 was acknowledged; a later read still sees 1 and nothing else could explain it.
    let h = [
        op(0, "k", Op::Write(1), 0, Some(10), ok()),
        op(1, "k", Op::Write(2), 15, Some(20), ok()),
        op(2, "k", Op::Read, 30, Some(40), read(Some(1))),
        op(3, "k", Op::Read, 50, Some(60), read(Some(1))),
    ];
    let result = check(&h);
    let CheckResult::NotLinearizable { explanation } = result else {
        panic!("accepted a lost write: {result:?}")
    };
    assert!(explanation.contains("key k"), "{explanation}");
}

#[test]
fn a_read_of_a_value_never_written_is_rejected() {
    let h = [op(0, "k", Op::Write(1), 0, Some(10), ok()), op(1, "k", Op::Read, 20, Some(30), read(Some(7)))];
    assert!(matches!(check(&h), CheckResult::NotLinearizable { .. }));
    let empty = [op(0, "k", Op::Read, 0, Some(5), read(Some(3)))];
    assert!(matches!(check(&empty), CheckResult::NotLinearizable { .. }));
    let absent = [op(0, "k", Op::Read, 0, Some(5), read(None))];
    assert_eq!(check(&absent), CheckResult::Linearizable);
}

#[test]
fn unknown_writes_may_or_may_not_have_applied() {
    let observed = [
        op(0, "k", Op::Write(1), 0, Some(10), ok()),
        op(1, "k", Op::Write(2), 20, None, Outcome::Unknown),
        op(2, "k", Op::Read, 100, Some(110), read(Some(2))),
        op(3, "k", Op::Read, 120, Some(130), read(Some(2))),
    ];
    assert_eq!(check(&observed), CheckResult::Linearizable);
    let never = [
        op(0, "k", Op::Write(1), 0, Some(10), ok()),
        op(1, "k", Op::Write(2), 20, None, Outcome::Unknown),
        op(2, "k", Op::Read, 100, Some(110), read(Some(1))),
    ];
    assert_eq!(check(&never), CheckResult::Linearizable);
    // But an unknown write cannot take effect before it was invoked.
    let too_early = [
        op(0, "k", Op::Write(1), 0, Some(10), ok()),
        op(1, "k", Op::Read, 20, Some(30), read(Some(2))),
        op(2, "k", Op::Write(2), 40, None, Outcome::Unknown),
    ];
    assert!(matches!(check(&too_early), CheckResult::NotLinearizable { .. }));
}

#[test]
fn compare_and_set() {
    let good = [
        op(0, "k", Op::Cas { expect: None, new: 1 }, 0, Some(10), ok()),
        op(1, "k", Op::Cas { expect: Some(1), new: 2 }, 20, Some(30), ok()),
        op(2, "k", Op::Cas { expect: Some(1), new: 3 }, 40, Some(50), Outcome::Fail),
        op(3, "k", Op::Read, 60, Some(70), read(Some(2))),
    ];
    assert_eq!(check(&good), CheckResult::Linearizable);
    let impossible = [
        op(0, "k", Op::Write(1), 0, Some(10), ok()),
        op(1, "k", Op::Cas { expect: Some(5), new: 2 }, 20, Some(30), ok()),
    ];
    assert!(matches!(check(&impossible), CheckResult::NotLinearizable { .. }));
}

#[test]
fn keys_are_checked_separately() {
    let mut entries = vec![
        op(0, "good", Op::Write(1), 0, Some(10), ok()),
        op(1, "good", Op::Read, 20, Some(30), read(Some(1))),
        op(2, "bad", Op::Write(1), 0, Some(10), ok()),
        op(3, "bad", Op::Read, 20, Some(30), read(Some(9))),
    ];
    entries.sort_by_key(|e| e.invoke_us);
    let report = check_history(&History { entries }, BUDGET);
    assert!(!report.valid);
    let verdict = |k: &str| report.verdicts.iter().find(|v| v.key == k).unwrap().passed();
    assert!(verdict("good"));
    assert!(!verdict("bad"));
}

#[test]
fn running_out_of_budget_is_a_failure() {
    // Many concurrent writes with reads that force deep backtracking.
    let mut entries: Vec<Entry> =
        (0..40).map(|i| op(i, "k", Op::Write(i as i64), 0, Some(1000), ok())).collect();
    entries.push(op(40, "k", Op::Read, 2000, Some(2001), read(Some(-1))));
    let tiny = Budget { max_states: 2000, deadline: Duration::from_secs(5) };
    let verdict = check_key("k", &entries, tiny);
    assert!(matches!(verdict.result, CheckResult::Timeout { .. }), "{:?}", verdict.result);
    assert!(!verdict.passed());
}

/// Simulates a real linearizable register under concurrent clients: each op takes effect at a
/// random instant inside its interval; some outcomes are lost (unknown).
fn simulated(seed: u64, clients: usize, ops: usize) -> Vec<Entry> {
    let mut rng = Rng::new(seed);
    // (linearization time, client, op) generated per client, then applied in time order.
    let mut planned = Vec::new();
    for client in 0..clients {
        let mut t = rng.below(50);
        for n in 0..ops / clients {
            let invoke = t;
            let point = invoke + 1 + rng.below(40);
            let complete = point + 1 + rng.below(40);
            let value = (client * 1_000_000 + n) as i64;
            let kind = match rng.below(10) {
                0..=3 => Op::Read,
                4..=7 => Op::Write(value),
                _ => Op::Cas { expect: None, new: value },
            };
            planned.push((point, client, invoke, complete, kind));
            t = complete + rng.below(20);
        }
    }
    planned.sort_by_key(|p| p.0);
    let mut state: Option<i64> = None;
    let mut entries = Vec::new();
    for (id, (_, client, invoke, complete, kind)) in planned.into_iter().enumerate() {
        let lost = rng.below(20) == 0;
        let outcome = match &kind {
            Op::Read => read(state),
            Op::Write(v) => {
                state = Some(*v);
                ok()
            }
            Op::Cas { expect, new } => {
                if *expect == state {
                    state = Some(*new);
                    ok()
                } else {
                    Outcome::Fail
                }
            }
        };
        let (complete, outcome) = if lost && outcome != Outcome::Fail {
            (None, Outcome::Unknown)
        } else {
            (Some(complete), outcome)
        };
        entries.push(Entry {
            id,
            client: client as u64,
            key: "k".into(),
            op: kind,
            invoke_us: invoke,
            complete_us: complete,
            outcome,
        });
    }
    entries
}

#[test]
fn a_large_simulated_linearizable_history_is_accepted() {
    let entries = simulated(7, 16, 4000);
    let started = std::time::Instant::now();
    let verdict = check_key("k", &entries, BUDGET);
    assert!(verdict.passed(), "{:?}", verdict.result);
    eprintln!(
        "checked {} ops in {:?}, {} states",
        verdict.ops_checked,
        started.elapsed(),
        verdict.states_explored
    );
}

#[test]
fn a_simulated_history_with_one_corrupted_read_is_rejected() {
    let mut entries = simulated(11, 8, 600);
    let victim =
        entries.iter().position(|e| e.op == Op::Read && matches!(e.outcome, Outcome::Ok(Some(_)))).unwrap();
    entries[victim].outcome = Outcome::Ok(Some(-42));
    assert!(matches!(check_key("k", &entries, BUDGET).result, CheckResult::NotLinearizable { .. }));
}

#[test]
fn many_unobserved_unknown_writes_do_not_blow_up_the_search() {
    let mut entries: Vec<Entry> =
        (0..5000).map(|i| op(i, "k", Op::Write(i as i64 + 10), 0, None, Outcome::Unknown)).collect();
    entries.push(op(5000, "k", Op::Write(1), 0, Some(10), ok()));
    entries.push(op(5001, "k", Op::Read, 20, Some(30), read(Some(1))));
    entries.push(op(5002, "k", Op::Read, 40, Some(50), read(Some(17))));
    let verdict = check_key("k", &entries, BUDGET);
    assert!(verdict.passed(), "{:?}", verdict.result);
    assert!(verdict.ops_checked < 10, "unobserved unknown writes were not left out: {}", verdict.ops_checked);
}

#[test]
fn an_unknown_write_needed_by_an_unknown_cas_is_kept() {
    // Only if the unknown write of 5 applied can the unknown CAS 5 -> 6 explain the read of 6.
    let h = [
        op(0, "k", Op::Write(5), 0, None, Outcome::Unknown),
        op(1, "k", Op::Cas { expect: Some(5), new: 6 }, 10, None, Outcome::Unknown),
        op(2, "k", Op::Read, 100, Some(110), read(Some(6))),
    ];
    assert_eq!(check(&h), CheckResult::Linearizable);
    let without_the_write = [
        op(1, "k", Op::Cas { expect: Some(5), new: 6 }, 10, None, Outcome::Unknown),
        op(2, "k", Op::Read, 100, Some(110), read(Some(6))),
    ];
    assert!(matches!(check(&without_the_write), CheckResult::NotLinearizable { .. }));
}
