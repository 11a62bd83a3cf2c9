//! Membership changes: a 4th node joins as learner, is promoted, a voter is removed, and the
//! cluster keeps serving throughout.

use serde_json::{json, Value};

use crate::harness::Cluster;

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

#[test]
fn learner_added_promoted_and_a_voter_removed_while_serving() {
    let mut c = Cluster::start(3, &[]);
    for i in 0..10 {
        assert_eq!(c.add_atom(1, &format!("early-{i}")).status, 201);
    }
    // Asked before node 4 starts: a node outside the membership knows no leader.
    let leader = c.leader();
    let addr4 = c.add_node(4).addr.clone();
    let r = c.post(leader, "/admin/add-learner", json!({ "id": 4, "addr": addr4 }));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ids(&c.status(leader)["membership"]["learners"]), vec![4]);
    // The learner serves linearizable reads of everything written before it joined.
    let early = c.get(4, "/v1/atoms?type=ConceptNode&name=early-9");
    assert_eq!(early.body["atoms"].as_array().map(Vec::len), Some(1), "{early:?}");

    let r = c.post(leader, "/admin/change-membership", json!({ "voters": [1, 2, 3, 4] }));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ids(&c.status(leader)["membership"]["voters"]), vec![1, 2, 3, 4]);

    let leader = c.leader();
    let victim = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let r = c.post(leader, "/admin/remove-node", json!({ "id": victim }));
    assert_eq!(r.status, 200, "{r:?}");
    let membership = c.status(leader)["membership"].clone();
    assert!(!ids(&membership["voters"]).contains(&victim), "{membership}");
    assert!(!ids(&membership["learners"]).contains(&victim), "{membership}");
    assert_eq!(c.sigterm(victim).code(), Some(0));

    let remaining: Vec<u64> = c.running();
    for i in 0..10 {
        let r = c.add_atom(remaining[i % remaining.len()], &format!("late-{i}"));
        assert_eq!(r.status, 201, "write after removing node {victim}: {r:?}");
    }
    let late = c.get(4, "/v1/atoms?type=ConceptNode&name=late-9");
    assert_eq!(late.body["atoms"].as_array().map(Vec::len), Some(1), "{late:?}");
    c.converged(&remaining);

    // Removing a node that is not a member is a clear 404.
    let r = c.post(c.leader(), "/admin/remove-node", json!({ "id": 77 }));
    assert_eq!(r.status, 404, "{r:?}");
}
