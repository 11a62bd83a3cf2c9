//! Availability of the write path: a deposed leader whose proposals openraft never answers
//! still serves writes, and a write's error says whether it may still apply.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{wait_until, Cluster};

/// openraft 0.9 never answers the `client_write`s of a leader that is cut off, deposed, and
/// then catches up by snapshot with a log shorter than the snapshot (it skips the truncation
/// that would fail them). Two such writes used to hold both of the batcher's in-flight slots
/// forever, and the node never proposed or forwarded a write again while `/readyz` stayed green.
#[test]
fn a_deposed_leader_that_catches_up_by_snapshot_still_serves_writes() {
    let (c, links) = Cluster::start_linked(
        3,
        &[
            ("COGRAFT__RAFT__SNAPSHOT_AFTER_ENTRIES", "20"),
            ("COGRAFT__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT", "0"),
            ("COGRAFT__RAFT__WRITE_TIMEOUT_MS", "3000"),
        ],
    );
    let old = c.leader();
    assert_eq!(c.add_atom(old, "before-the-cut").status, 201);
    links.isolate(old, true);

    // Two writes the isolated leader proposes and can never commit (raft.max_in_flight = 2).
    let stuck: Vec<_> = (0..2)
        .map(|i| {
            let url = format!("http://{}/v1/atoms", c.addr(old));
            std::thread::spawn(move || {
                let http =
                    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
                let body = json!({ "type": "ConceptNode", "name": format!("lost-with-the-old-leader-{i}") });
                http.post(url).json(&body).send().map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();

    let others: Vec<u64> = c.running().into_iter().filter(|id| *id != old).collect();
    let new = wait_until("a new leader among the others", Duration::from_secs(30), || {
        others.iter().copied().find(|id| c.status(*id)["role"] == "leader")
    });
    for i in 0..60 {
        let r = c.add_atom(new, &format!("while-cut-{i}"));
        assert_eq!(r.status, 201, "{r:?}");
    }
    let old_last = c.status(old)["last_log_index"].as_u64().unwrap();
    wait_until("the new leader to purge past the old leader's log", Duration::from_secs(30), || {
        (c.status(new)["purged_index"].as_u64().unwrap_or(0) > old_last).then_some(())
    });

    links.isolate(old, false);
    wait_until("the old leader to install the new leader's snapshot", Duration::from_secs(30), || {
        let s = c.status(old);
        (s["role"] == "follower" && s["snapshot_index"].as_u64().unwrap_or(0) > old_last).then_some(())
    });
    for handle in stuck {
        let status = handle.join().unwrap();
        assert!(matches!(status, 503 | 504), "the cut-off writes answer 503 or 504, got {status}");
    }

    // The deposed leader forwards new writes to the new leader, again and again.
    for i in 0..5 {
        let r = c.add_atom(old, &format!("after-the-heal-{i}"));
        assert_eq!(r.status, 201, "write {i} through the deposed leader: {r:?}");
    }
    c.converged(&[1, 2, 3]);
}

/// A write that reached a leader but was not committed in time may still commit, so it answers
/// 504 and tells the client to retry with the same key; a write no leader ever took answers 503.
#[test]
fn a_write_that_may_still_apply_answers_504_and_one_that_cannot_503() {
    let mut c = Cluster::start(3, &[("COGRAFT__RAFT__WRITE_TIMEOUT_MS", "2000")]);
    let leader = c.leader();
    let followers: Vec<u64> = c.running().into_iter().filter(|id| *id != leader).collect();
    for f in &followers {
        c.kill9(*f);
    }
    let body = json!({ "type": "ConceptNode", "name": "proposed-without-a-quorum" });
    let r = c.call(leader, Method::POST, "/v1/atoms", Some(body.clone()), Some("quorum-lost-key"));
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body["error"], "timeout");
    assert!(r.body["detail"].as_str().unwrap().contains("same Idempotency-Key"), "{r:?}");

    // The quorum returns: the same key applies the write once.
    for f in &followers {
        c.restart(*f);
    }
    let leader = c.leader();
    let again = c.call(leader, Method::POST, "/v1/atoms", Some(body), Some("quorum-lost-key"));
    assert!(matches!(again.status, 200 | 201), "{again:?}");
    let found = c.get(leader, "/v1/atoms?type=ConceptNode&name=proposed-without-a-quorum");
    assert_eq!(found.body["atoms"].as_array().map(Vec::len), Some(1), "{found:?}");

    // A node alone knows no reachable leader: nothing was proposed, so 503.
    let lone = followers[0];
    for id in c.running().into_iter().filter(|id| *id != lone) {
        c.kill9(id);
    }
    let r = c.post(lone, "/v1/atoms", json!({ "type": "ConceptNode", "name": "nobody-leads" }));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.body["error"], "no_leader", "{r:?}");
}
