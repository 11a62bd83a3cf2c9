//! Leader failure: kill -9 of the leader elects a new one, writes go on, nothing acknowledged
//! is lost, and the killed node catches up, from the log or (once purged) by snapshot.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::{wait_until, Cluster};

#[test]
fn kill9_of_the_leader_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, &[]);
    let old = c.leader();
    let mut acked = Vec::new();
    for i in 0..20 {
        let r = c.add_atom(1 + i % 3, &format!("before-{i}"));
        assert_eq!(r.status, 201, "{r:?}");
        acked.push(r.body["id"].as_u64().unwrap());
    }
    c.kill9(old);
    let survivors: Vec<u64> = c.running();
    // The first write after the kill is accepted once a new leader is elected (the node retries
    // through the election within its write timeout).
    for i in 0..20 {
        let r = c.add_atom(survivors[i % survivors.len()], &format!("after-{i}"));
        assert_eq!(r.status, 201, "write {i} after the leader was killed: {r:?}");
        acked.push(r.body["id"].as_u64().unwrap());
    }
    let new = c.leader();
    assert_ne!(new, old, "the killed node cannot lead");
    for id in &acked {
        for node in &survivors {
            let r = c.get(*node, &format!("/v1/atoms/{id}"));
            assert_eq!(r.status, 200, "acknowledged atom {id} missing on node {node}: {r:?}");
        }
    }
    c.restart(old);
    c.converged(&[1, 2, 3]);
    let r = c.get(old, &format!("/v1/atoms/{}?consistency=stale", acked.last().unwrap()));
    assert_eq!(r.status, 200, "the restarted node did not catch up: {r:?}");
}

#[test]
fn a_node_behind_the_purged_log_catches_up_by_snapshot() {
    let mut c = Cluster::start(
        3,
        &[
            ("COGRAFT__RAFT__SNAPSHOT_AFTER_ENTRIES", "20"),
            ("COGRAFT__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT", "5"),
        ],
    );
    let leader = c.leader();
    let lagging = *c.running().iter().find(|id| **id != leader).unwrap();
    c.add_atom(leader, "seen-by-all");
    c.converged(&[1, 2, 3]);
    let behind = c.status(lagging)["last_log_index"].as_u64().unwrap();
    c.kill9(lagging);
    let mut acked = Vec::new();
    for i in 0..120 {
        let r = c.add_atom(leader, &format!("while-down-{i}"));
        assert_eq!(r.status, 201, "{r:?}");
        acked.push(r.body["id"].as_u64().unwrap());
    }
    // The leader must have purged entries the lagging node still needs: only a snapshot helps it.
    let purged = wait_until("the leader to purge its log", Duration::from_secs(30), || {
        c.status(leader)["purged_index"].as_u64().filter(|p| *p > behind + 1)
    });
    assert!(purged > behind, "purged {purged} <= {behind}: the test would not prove a snapshot catch-up");
    c.restart(lagging);
    c.converged(&[1, 2, 3]);
    let s = c.status(lagging);
    assert!(s["snapshot_index"].as_u64().is_some(), "no snapshot on the caught-up node: {s}");
    for id in acked.iter().step_by(10) {
        let r = c.get(lagging, &format!("/v1/atoms/{id}?consistency=stale"));
        assert_eq!(r.status, 200, "atom {id} missing after snapshot catch-up: {r:?}");
    }
}

/// Regression (chaos suite, 5 nodes, seed 1795392444): openraft 0.9.25 lets a leader resume
/// leadership on restart with a read index taken from the commit index it recovered, which can
/// lag what was acknowledged; a linearizable read served in that window after every node was
/// killed missed an acknowledged write. The window is too short to hit reliably here, so this
/// test pins the mechanism: a restarted leader must not lead again before winning an election
/// (which appends a fresh no-op that the read index then covers), and reads after the restart
/// see every acknowledged write.
#[test]
fn a_restarted_leader_wins_a_new_election_before_it_serves() {
    let mut c = Cluster::start(3, &[("COGRAFT__RAFT__TICK_INTERVAL_MS", "600000")]);
    let atom = c.add_atom(1, "register").body["id"].as_u64().unwrap();
    let path = format!("/v1/atoms/{atom}/values/v");
    for round in 0..3 {
        let leader = c.leader();
        let term = c.status(leader)["term"].as_u64().unwrap();
        let value = json!(round * 10 + 7);
        let w = c.call(leader, Method::PUT, &path, Some(json!({ "value": value })), None);
        assert_eq!(w.status, 200, "{w:?}");
        for id in c.running() {
            c.kill9(id);
        }
        c.restart(leader);
        let alone = c.status(leader);
        assert_ne!(
            alone["role"], "leader",
            "round {round}: the old leader resumed leadership alone: {alone}"
        );
        for id in [1, 2, 3].into_iter().filter(|id| *id != leader) {
            c.restart(id);
        }
        let r = c.get(leader, &path);
        assert_eq!(
            r.body["value"], value,
            "round {round}: a read after the restart missed an acknowledged write: {r:?}"
        );
        let now = c.status(c.leader())["term"].as_u64().unwrap();
        assert!(now > term, "round {round}: no new election after the restart (term {now})");
    }
}
