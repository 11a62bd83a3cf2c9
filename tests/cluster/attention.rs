//! ECAN attention on a live cluster: stimulation raises an atom into the focus, the leader's
//! steps diffuse it to its neighbours, every node answers the same focus and the same digest
//! at the same applied index (bit-identical attention values), only the leader proposes steps,
//! the focus keeps to its space, and bad focus requests get a 400 naming the parameter.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{wait_until, Cluster};

fn focus(c: &Cluster, node: u64, query: &str) -> Value {
    let reply = c.get(node, &format!("/v1/attention/focus?consistency=stale&{query}"));
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body
}

fn focus_ids(body: &Value) -> Vec<u64> {
    body["focus"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect()
}

/// This node's count of attention steps it proposed and saw committed.
fn steps_committed(c: &Cluster, node: u64) -> u64 {
    let text = c.get(node, "/metrics").body.as_str().unwrap_or_default().to_string();
    text.lines()
        .find(|l| l.starts_with("cograft_attention_steps_total{outcome=\"committed\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn attention_diffuses_and_is_identical_on_every_node() {
    let c = Cluster::start(3, &[("COGRAFT__ATTENTION__INTERVAL_MS", "200")]);
    let leader = c.leader();
    let follower = *c.running().iter().find(|id| **id != leader).unwrap();
    let ops = json!({ "ops": [
        { "op": "add_node", "type": "ConceptNode", "name": "cat" },
        { "op": "add_node", "type": "ConceptNode", "name": "dog" },
        { "op": "add_node", "type": "ConceptNode", "name": "mouse" },
        { "op": "add_link", "type": "SimilarityLink", "outgoing": ["$0", "$1"], "tv": { "strength": 0.8, "confidence": 0.5 } }
    ]});
    let reply = c.post(follower, "/v1/batch", ops);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let ids: Vec<u64> =
        reply.body["results"].as_array().unwrap().iter().map(|r| r["atom"]["id"].as_u64().unwrap()).collect();
    let (cat, dog, mouse) = (ids[0], ids[1], ids[2]);
    assert!(focus_ids(&focus(&c, leader, "")).is_empty(), "nothing holds attention yet");

    // Through a follower: stimulation is an ordinary, forwarded write.
    let r = c.post(follower, &format!("/v1/atoms/{cat}/stimulate"), json!({ "sti": 100.0 }));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["av"]["sti"], 100.0);

    // The leader's steps pass some of cat's STI to dog through the link; mouse gets none.
    let body = wait_until("dog to enter the focus by diffusion", Duration::from_secs(30), || {
        let body = focus(&c, leader, "top_k=10");
        focus_ids(&body).contains(&dog).then_some(body)
    });
    assert_eq!(body["boundary"], 1.0);
    assert!(!focus_ids(&body).contains(&mouse));
    let cat_sti = body["focus"].as_array().unwrap().iter().find(|a| a["id"] == cat).unwrap()["av"]["sti"]
        .as_f64()
        .unwrap();
    assert!(cat_sti < 100.0, "cat paid no rent and passed nothing on: {body}");

    // Every node answers the same focus, to the last bit, at the same applied index.
    wait_until("three nodes to answer one focus at one index", Duration::from_secs(30), || {
        let answers: Vec<Value> = (1..=3).map(|n| focus(&c, n, "top_k=10")).collect();
        let same = answers.windows(2).all(|w| w[0] == w[1]);
        (same && !focus_ids(&answers[0]).is_empty()).then_some(())
    });
    // And the same digest (the atoms' attention values are in it) while attention moves.
    wait_until("three nodes to report one digest at one index", Duration::from_secs(30), || {
        let digests: Vec<(u64, String)> = (1..=3).map(|n| c.digest(n)).collect();
        digests.windows(2).all(|w| w[0] == w[1]).then_some(())
    });

    // Only the leader proposes steps.
    assert!(steps_committed(&c, leader) > 0, "the leader counted no committed step");
    for node in c.running().into_iter().filter(|n| *n != leader) {
        assert_eq!(steps_committed(&c, node), 0, "follower {node} proposed attention steps");
    }

    // The focus keeps to its space.
    let other = c.post(leader, "/v1/atoms?space=other", json!({ "type": "ConceptNode", "name": "owl" }));
    let owl = other.body["id"].as_u64().unwrap();
    let r = c.post(leader, &format!("/v1/atoms/{owl}/stimulate?space=other"), json!({ "sti": 500.0 }));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(!focus_ids(&focus(&c, leader, "top_k=10")).contains(&owl));
    assert_eq!(focus_ids(&focus(&c, leader, "top_k=1&space=other")), vec![owl]);

    // Bad requests name the parameter and change nothing.
    for query in ["top_k=0", "top_k=100000000", "top_k=many"] {
        let r = c.get(leader, &format!("/v1/attention/focus?{query}"));
        assert_eq!(r.status, 400, "{query}: {:?}", r.body);
        assert!(r.body["detail"].as_str().unwrap_or_default().contains("top_k"), "{query}: {:?}", r.body);
    }
    let r = c.post(leader, "/v1/atoms/999999/stimulate", json!({ "sti": 1.0 }));
    assert_eq!(r.status, 404, "{:?}", r.body);
}

fn ids_of(list: &Value) -> Vec<u64> {
    list.as_array().unwrap().iter().map(|a| a.as_u64().or_else(|| a["id"].as_u64()).unwrap()).collect()
}

#[test]
fn forgetting_lists_first_removes_through_raft_and_never_cascades() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader();
    let ops = json!({ "ops": [
        { "op": "add_node", "type": "ConceptNode", "name": "keep" },
        { "op": "add_node", "type": "ConceptNode", "name": "loose" },
        { "op": "add_node", "type": "ConceptNode", "name": "member" },
        { "op": "add_link", "type": "ListLink", "outgoing": ["$2", "$0"] },
        { "op": "stimulate", "id": "$0", "vlti": true }
    ]});
    let reply = c.post(leader, "/v1/batch", ops);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let ids: Vec<u64> =
        reply.body["results"].as_array().unwrap().iter().map(|r| r["atom"]["id"].as_u64().unwrap()).collect();
    let (keep, loose, member, link) = (ids[0], ids[1], ids[2], ids[3]);
    let before = c.converged(&[1, 2, 3]);

    // A dry run (the default) lists what could go and changes nothing.
    let dry = c.post(leader, "/admin/forget", json!({}));
    assert_eq!(dry.status, 200, "{:?}", dry.body);
    assert_eq!(dry.body["dry_run"], true);
    assert_eq!(ids_of(&dry.body["forgettable"]), vec![loose, link], "{:?}", dry.body);
    assert_eq!(c.converged(&[1, 2, 3]), before, "a dry run changed the state");

    // Through a follower: forgetting is replicated like any write.
    let follower = *c.running().iter().find(|id| **id != leader).unwrap();
    let done = c.post(follower, "/admin/forget", json!({ "dry_run": false }));
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(ids_of(&done.body["removed"]), vec![loose, link], "{:?}", done.body);
    c.converged(&[1, 2, 3]);
    for node in 1..=3 {
        assert_eq!(c.get(node, &format!("/v1/atoms/{loose}?consistency=stale")).status, 404);
        assert_eq!(c.get(node, &format!("/v1/atoms/{keep}?consistency=stale")).status, 200);
    }
    // The link is gone, so its member is free now; keep (vlti) never is.
    let dry = c.post(leader, "/admin/forget", json!({ "dry_run": true }));
    assert_eq!(ids_of(&dry.body["forgettable"]), vec![member], "{:?}", dry.body);

    // Bad requests name the problem and change nothing.
    let state = c.converged(&[1, 2, 3]);
    for (body, needle) in [
        (json!({ "limit": 0 }), "limit"),
        (json!({ "lti_below": "low" }), "\"low\", expected f64"),
        (json!({ "dry_run": false, "bogus": 1 }), "bogus"),
        (json!({ "dry_run": false, "after": "not-a-cursor" }), "cursor"),
    ] {
        let r = c.post(leader, "/admin/forget", body.clone());
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert!(r.body["detail"].as_str().unwrap_or_default().contains(needle), "{body}: {:?}", r.body);
    }
    assert_eq!(c.converged(&[1, 2, 3]), state);
}
