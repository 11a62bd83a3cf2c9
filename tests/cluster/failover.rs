//! Leader failure: kill -9 of the leader elects a new one, writes go on, nothing acknowledged
//! is lost, and the killed node catches up, from the log or (once purged) by snapshot.

use std::time::Duration;

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
