//! The checker against histories whose verdict is known: hand-written anomalies, and long
//! histories simulated from a real linearizable register under concurrent clients.

mod simulated;

use std::time::Duration;

use super::{check_history, check_key, Budget, CheckResult, Verdict};
use crate::history::{Entry, History, Op, OpId, Outcome};

const BUDGET: Budget = Budget { max_states: 5_000_000, deadline: Duration::from_secs(60) };

/// One history written by hand; times are nanoseconds, operations are on key "k" unless named.
#[derive(Default)]
struct Script {
    entries: Vec<Entry>,
}

impl Script {
    fn on(mut self, key: &str, op: Op, invoke: u64, complete: Option<u64>, outcome: Outcome) -> Script {
        let id = OpId(self.entries.len());
        let client = id.0 as u64;
        self.entries.push(Entry {
            id,
            client,
            key: key.into(),
            op,
            invoke_ns: invoke,
            complete_ns: complete,
            outcome,
        });
        self
    }

    fn write(self, value: i64, invoke: u64, complete: u64) -> Script {
        self.on("k", Op::Write(value), invoke, Some(complete), Outcome::Ok(None))
    }

    fn read(self, seen: Option<i64>, invoke: u64, complete: u64) -> Script {
        self.on("k", Op::Read, invoke, Some(complete), Outcome::Ok(seen))
    }

    fn cas(self, expect: Option<i64>, new: i64, invoke: u64, complete: u64, outcome: Outcome) -> Script {
        self.on("k", Op::Cas { expect, new }, invoke, Some(complete), outcome)
    }

    /// An operation whose answer never came.
    fn unknown(self, op: Op, invoke: u64) -> Script {
        self.on("k", op, invoke, None, Outcome::Unknown)
    }

    fn check(&self) -> Verdict {
        check_key("k", &self.entries, BUDGET)
    }
}

fn assert_passes(script: &Script) {
    let verdict = script.check();
    assert!(verdict.passed(), "expected linearizable: {:?}", verdict.result);
}

/// Asserts the verdict is a violation and answers its explanation.
fn assert_rejected(script: &Script) -> String {
    match script.check().result {
        CheckResult::NotLinearizable { explanation } => explanation,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn a_read_overlapping_a_write_may_see_the_old_or_the_new_value() {
    for seen in [Some(1), Some(2)] {
        assert_passes(&Script::default().write(1, 0, 10).write(2, 20, 40).read(seen, 25, 35));
    }
    assert_rejected(&Script::default().write(1, 0, 10).write(2, 20, 40).read(Some(3), 25, 35));
}

#[test]
fn a_stale_read_is_rejected_and_explained() {
    let explanation =
        assert_rejected(&Script::default().write(1, 0, 10).write(2, 20, 30).read(Some(1), 40, 50));
    assert!(explanation.starts_with("key k: not linearizable"), "{explanation}");
    // Write 2 returned before the read began, so it cannot wait until after the read.
    assert!(explanation.contains("ending with #0 write 1; the register then holds 1"), "{explanation}");
    assert!(explanation.contains("#1 write 2 by client 1 (invoked at 0.000000020 s"), "{explanation}");
    assert!(explanation.contains("overwrites 1 (which #2 read saw 1 by client 2"), "{explanation}");
}

#[test]
fn a_lost_write_is_rejected() {
    // Write 2 was acknowledged; reads during it may still see 1, reads after it may not.
    let lost = Script::default().write(1, 0, 10).write(2, 20, 30).read(Some(1), 22, 28).read(Some(1), 40, 50);
    assert_rejected(&lost);
    // Only another write of 1 in flight could explain that read.
    assert_passes(&lost.unknown(Op::Write(1), 35));
}

#[test]
fn a_read_of_a_value_never_written_is_rejected() {
    assert_rejected(&Script::default().write(1, 0, 10).read(Some(7), 20, 30));
    assert_rejected(&Script::default().read(Some(3), 0, 5));
    assert_rejected(&Script::default().write(1, 0, 10).read(None, 20, 30));
    assert_passes(&Script::default().read(None, 0, 5).write(1, 10, 20).read(Some(1), 30, 40));
}

#[test]
fn an_unknown_write_may_take_effect_late_or_never() {
    let observed_late = Script::default()
        .write(1, 0, 10)
        .unknown(Op::Write(2), 20)
        .read(Some(1), 100, 110)
        .read(Some(2), 200, 210)
        .read(Some(2), 300, 310);
    assert_passes(&observed_late);
    assert_passes(&Script::default().write(1, 0, 10).unknown(Op::Write(2), 20).read(Some(1), 100, 110));
    // Once seen it has happened: the old value cannot come back.
    assert_rejected(&observed_late.read(Some(1), 400, 410));
    // And it cannot take effect before it was invoked.
    assert_rejected(&Script::default().write(1, 0, 10).read(Some(2), 20, 30).unknown(Op::Write(2), 40));
}

#[test]
fn unknown_writes_nobody_observed_are_left_out_of_the_search() {
    let script = Script::default().write(1, 0, 10).unknown(Op::Write(2), 5).unknown(Op::Write(3), 6).read(
        Some(3),
        20,
        30,
    );
    let verdict = script.check();
    assert!(verdict.passed(), "{:?}", verdict.result);
    assert_eq!(verdict.ops_checked, 3, "the write of 2 is never observed, so it cannot matter");
}

#[test]
fn a_cas_must_find_its_expectation_and_failed_ones_are_ignored() {
    let chain = Script::default()
        .cas(None, 1, 0, 10, Outcome::Ok(None))
        .cas(Some(1), 2, 20, 30, Outcome::Ok(None))
        .cas(Some(1), 3, 40, 50, Outcome::Fail)
        .read(Some(2), 60, 70);
    assert_passes(&chain);
    // A successful CAS whose expectation the register never held.
    assert_rejected(&Script::default().write(1, 0, 10).cas(Some(5), 2, 20, 30, Outcome::Ok(None)));
    // "Only if absent" after the register was written.
    assert_rejected(&Script::default().write(5, 0, 10).cas(None, 2, 20, 30, Outcome::Ok(None)));
    // A failed CAS took no effect, and is no evidence even when its expectation did hold.
    let refused =
        Script::default().write(1, 0, 10).cas(Some(1), 2, 20, 30, Outcome::Fail).read(Some(1), 40, 50);
    assert_passes(&refused);
    assert_eq!(refused.check().ops_checked, 2);
    // An unknown CAS may have applied, but only where its expectation held.
    let maybe = Script::default().write(1, 0, 10).unknown(Op::Cas { expect: Some(1), new: 2 }, 20);
    assert_passes(&maybe.read(Some(2), 30, 40));
    let impossible = Script::default().write(1, 0, 10).unknown(Op::Cas { expect: Some(7), new: 2 }, 20);
    assert_rejected(&impossible.read(Some(2), 30, 40));
}

#[test]
fn calls_and_returns_at_the_same_instant_count_as_concurrent() {
    // Equal stamps cannot tell whether the read left before the write was acknowledged.
    assert_passes(&Script::default().write(1, 0, 10).read(None, 10, 20));
    assert_rejected(&Script::default().write(1, 0, 10).read(None, 11, 20));
}

#[test]
fn an_anomaly_on_one_key_is_reported_for_that_key_only() {
    let entries = Script::default()
        .on("good", Op::Write(1), 0, Some(10), Outcome::Ok(None))
        .on("bad", Op::Write(1), 0, Some(10), Outcome::Ok(None))
        .on("good", Op::Read, 20, Some(30), Outcome::Ok(Some(1)))
        .on("bad", Op::Write(2), 20, Some(30), Outcome::Ok(None))
        .on("other", Op::Read, 40, Some(50), Outcome::Ok(None))
        .on("bad", Op::Read, 40, Some(50), Outcome::Ok(Some(1)))
        .entries;
    let report = check_history(&History { entries }, BUDGET);
    assert!(!report.valid);
    let keys: Vec<(&str, bool)> = report.verdicts.iter().map(|v| (v.key.as_str(), v.passed())).collect();
    assert_eq!(keys, vec![("bad", false), ("good", true), ("other", true)]);
    let CheckResult::NotLinearizable { explanation } = &report.verdicts[0].result else {
        panic!("bad fails")
    };
    assert!(explanation.starts_with("key bad:"), "{explanation}");
}

/// `writers` concurrent writes of distinct values, then a read of a value none wrote: proving
/// that no order works means trying every subset of the writes.
fn hopeless(writers: i64) -> Script {
    (0..writers).fold(Script::default(), |s, v| s.write(v, 0, 1000)).read(Some(-1), 2000, 2001)
}

#[test]
fn running_out_of_budget_is_a_failure_not_a_pass() {
    let tiny = Budget { max_states: 1000, deadline: Duration::from_secs(5) };
    let verdict = check_key("k", &hopeless(30).entries, tiny);
    let CheckResult::Timeout { explanation } = &verdict.result else { panic!("{:?}", verdict.result) };
    assert!(explanation.contains("counts as a failure"), "{explanation}");
    assert!(!verdict.passed());
    assert!(verdict.states_explored <= tiny.max_states + 1);
    assert!(!check_history(&History { entries: hopeless(30).entries }, tiny).valid);
    let no_time = Budget { max_states: u64::MAX, deadline: Duration::ZERO };
    assert!(matches!(check_key("k", &hopeless(30).entries, no_time).result, CheckResult::Timeout { .. }));
    // Given room, the same kind of history is proven wrong rather than given up on.
    assert_rejected(&hopeless(10));
}
