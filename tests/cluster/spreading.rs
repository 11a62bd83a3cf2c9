//! Spreading activation on a live cluster: every node answers the same spread identically at
//! the same applied index (a follower that caught up by snapshot included), deletes leave the
//! index, a spread never leaves its space, bad requests get a 4xx naming the field, and the
//! spreading breaker opens on repeated deadline overruns and closes again (the overruns come
//! from a fault hook, so the `failpoints` feature is needed: `make cluster-tests`).

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{wait_until, Cluster};

/// A small taxonomy in one batch: `animal <- mammal <- {cat, dog}`, `cat ~ pet`, and ListLinks
/// of three. Answers the reply's ids in op order.
fn load_taxonomy(c: &Cluster, node: u64, space: &str) -> Vec<u64> {
    let ops = json!({ "ops": [
        { "op": "add_node", "type": "ConceptNode", "name": "animal" },
        { "op": "add_node", "type": "ConceptNode", "name": "mammal" },
        { "op": "add_node", "type": "ConceptNode", "name": "cat" },
        { "op": "add_node", "type": "ConceptNode", "name": "dog" },
        { "op": "add_node", "type": "ConceptNode", "name": "pet" },
        { "op": "add_link", "type": "InheritanceLink", "outgoing": ["$1", "$0"], "tv": { "strength": 1.0, "confidence": 0.9 } },
        { "op": "add_link", "type": "InheritanceLink", "outgoing": ["$2", "$1"], "tv": { "strength": 1.0, "confidence": 0.9 } },
        { "op": "add_link", "type": "InheritanceLink", "outgoing": ["$3", "$1"], "tv": { "strength": 0.9, "confidence": 0.8 } },
        { "op": "add_link", "type": "SimilarityLink", "outgoing": ["$2", "$4"], "tv": { "strength": 0.6, "confidence": 0.5 } },
        { "op": "add_link", "type": "ListLink", "outgoing": ["$2", "$3", "$4"] }
    ]});
    let reply = c.post(node, &format!("/v1/batch?space={space}"), ops);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["results"].as_array().unwrap().iter().map(|r| r["atom"]["id"].as_u64().unwrap()).collect()
}

/// Spreads on `node` until its index reflects `at` or later; answers the reply.
fn spread_at(c: &Cluster, node: u64, space: &str, body: &Value, at: u64) -> Value {
    wait_until(&format!("node {node}'s index to reach {at}"), Duration::from_secs(30), || {
        let reply = c.post(node, &format!("/v1/spread?space={space}"), body.clone());
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        (reply.body["applied_index"].as_u64().unwrap_or(0) >= at).then_some(reply.body)
    })
}

fn result_ids(reply: &Value) -> Vec<u64> {
    reply["results"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect()
}

#[test]
fn every_node_answers_a_spread_identically_also_after_catching_up_by_snapshot() {
    let mut c = Cluster::start(
        3,
        &[
            ("COGRAFT__RAFT__SNAPSHOT_AFTER_ENTRIES", "20"),
            ("COGRAFT__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT", "0"),
        ],
    );
    let leader = c.leader();
    let ids = load_taxonomy(&c, leader, "default");
    let (cat, dog) = (ids[2], ids[3]);
    let follower = *c.running().iter().find(|id| **id != leader).unwrap();
    c.converged(&[1, 2, 3]);
    let behind = c.status(follower)["last_log_index"].as_u64().unwrap_or(0);
    c.kill9(follower);
    // While it is down: more of the graph, a delete, and enough entries for a purge.
    for i in 0..40 {
        let node = c.add_atom(leader, &format!("breed-{i}")).body["id"].as_u64().unwrap();
        let link = json!({ "type": "InheritanceLink", "outgoing": [node, cat], "tv": { "strength": 0.7, "confidence": 0.6 } });
        assert_eq!(c.post(leader, "/v1/links", link).status, 201);
    }
    let gone = c.call(leader, reqwest::Method::DELETE, &format!("/v1/atoms/{dog}"), None, None);
    assert_eq!(gone.status, 200, "{:?}", gone.body);
    wait_until("the leader to purge", Duration::from_secs(30), || {
        (c.status(leader)["purged_index"].as_u64().unwrap_or(0) > behind).then_some(())
    });
    c.restart(follower);
    c.converged(&[1, 2, 3]);
    let at = c.status(leader)["last_applied_index"].as_u64().unwrap();

    let body = json!({ "sources": [{ "type": "ConceptNode", "name": "mammal" }], "top_k": 100 });
    let replies: Vec<Value> = [1, 2, 3].iter().map(|n| spread_at(&c, *n, "default", &body, at)).collect();
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply["applied_index"], json!(at), "node {}", n + 1);
        assert_eq!(reply["results"], replies[0]["results"], "node {} ranks differently", n + 1);
    }
    let found = result_ids(&replies[0]);
    assert!(found.contains(&cat), "cat is one hop from mammal: {found:?}");
    assert!(!found.contains(&dog), "the deleted dog is gone from every index: {found:?}");
    let log = c.log_of(follower);
    assert!(
        log.contains("rebuilding the spreading index") && log.contains("replaced the state"),
        "the install rebuilt the index: {log}"
    );
    let stats = &replies[0]["stats"];
    assert_eq!(stats["parameters"]["max_hops"], json!(3), "{stats}");
    assert_eq!(stats["deadline_hit"], json!(false));
}

#[test]
fn a_spread_never_leaves_its_space() {
    let c = Cluster::start(1, &[]);
    let default_ids = load_taxonomy(&c, 1, "default");
    let other_ids = load_taxonomy(&c, 1, "other");
    let at = c.status(1)["last_applied_index"].as_u64().unwrap();
    let body = json!({ "sources": [{ "type": "ConceptNode", "name": "cat" }], "max_hops": 5, "top_k": 100 });
    let in_other = spread_at(&c, 1, "other", &body, at);
    let found = result_ids(&in_other);
    assert!(!found.is_empty());
    assert!(found.iter().all(|id| other_ids.contains(id)), "{found:?} has atoms outside space other");
    // An id of another space is, to this space, an atom that does not exist.
    let wrong = c.post(1, "/v1/spread?space=other", json!({ "sources": [default_ids[2]] }));
    assert_eq!(wrong.status, 404, "{:?}", wrong.body);
    assert!(wrong.body["detail"].as_str().unwrap().contains("sources[0]"), "{:?}", wrong.body);
}

#[test]
fn bad_spreads_get_a_4xx_naming_the_field() {
    let c = Cluster::start(1, &[]);
    load_taxonomy(&c, 1, "default");
    let cases = [
        (json!({ "sources": [] }), 400, "sources"),
        (json!({ "sources": [1], "decay": -0.5 }), 400, "decay"),
        (json!({ "sources": [1], "max_hops": 0 }), 400, "max_hops"),
        (json!({ "sources": [1], "max_hops": 17 }), 400, "max_hops"),
        (json!({ "sources": [1], "top_k": 0 }), 400, "top_k"),
        (json!({ "sources": [1], "top_k": 100_000_000u64 }), 400, "top_k"),
        (json!({ "sources": [1], "deadline_ms": 0 }), 400, "deadline_ms"),
        (json!({ "sources": [1], "max_hop": 2 }), 400, "max_hop"),
        (json!({ "sources": [{ "type": "ConceptNode", "name": "unicorn" }] }), 404, "sources[0]"),
        (json!({ "sources": [1, 999_999] }), 404, "sources[1]"),
    ];
    for (body, status, field) in cases {
        let reply = c.post(1, "/v1/spread", body.clone());
        assert_eq!(reply.status, status, "{body}: {:?}", reply.body);
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{body}: {detail:?} does not name {field}");
    }
    assert_eq!(c.get(1, "/healthz").status, 200, "the node is still up");
}

#[test]
fn the_spreading_breaker_opens_on_repeated_overruns_and_closes_after_trial_successes() {
    // Every spread stalls 50 ms before it walks; a 10 ms deadline is then always overrun.
    let c = Cluster::start(
        1,
        &[
            ("COGRAFT_FAILPOINTS", "spread_walk=sleep:0.05"),
            ("COGRAFT__SPREADING__BREAKER_FAILURES", "3"),
            ("COGRAFT__SPREADING__BREAKER_OPEN_MS", "1500"),
            ("COGRAFT__SPREADING__BREAKER_SUCCESSES", "2"),
        ],
    );
    load_taxonomy(&c, 1, "default");
    let at = c.status(1)["last_applied_index"].as_u64().unwrap();
    let relaxed = json!({ "sources": [{ "type": "ConceptNode", "name": "cat" }], "deadline_ms": 5000 });
    spread_at(&c, 1, "default", &relaxed, at);
    let hurried = json!({ "sources": [{ "type": "ConceptNode", "name": "cat" }], "deadline_ms": 10 });
    for _ in 0..3 {
        let reply = c.post(1, "/v1/spread", hurried.clone());
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body["stats"]["deadline_hit"], json!(true), "{:?}", reply.body);
    }
    let refused = c.post(1, "/v1/spread", relaxed.clone());
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(
        refused.body["detail"].as_str().unwrap().contains("circuit breaker is open"),
        "{:?}",
        refused.body
    );
    let metrics = c.get(1, "/metrics").body.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains("cograft_breaker_state{component=\"spreading\"} 1"), "{metrics}");

    // Once open_ms passed, trial spreads that meet their deadline close it again.
    std::thread::sleep(Duration::from_millis(1600));
    for _ in 0..2 {
        let reply = c.post(1, "/v1/spread", relaxed.clone());
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    let metrics = c.get(1, "/metrics").body.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains("cograft_breaker_state{component=\"spreading\"} 0"), "{metrics}");
    assert!(
        metrics.contains("cograft_breaker_transitions_total{component=\"spreading\",to=\"closed\"} 1"),
        "{metrics}"
    );
}
