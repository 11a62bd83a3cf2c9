//! Write semantics: idempotency keys apply once, compare-and-set answers 409 on mismatch,
//! batches with "$N" references are all or nothing, oversized entries get 413, deletes
//! cascade, sessions and observations round-trip.

use reqwest::Method;
use serde_json::json;

use crate::harness::Cluster;

#[test]
fn idempotency_cas_batches_and_limits() {
    let c = Cluster::start(3, &[]);

    // A replayed Idempotency-Key applies once, through any node, and answers the first result.
    let body = json!({ "type": "ConceptNode", "name": "once" });
    let first = c.call(2, Method::POST, "/v1/atoms", Some(body.clone()), Some("key-1"));
    assert_eq!(first.status, 201, "{first:?}");
    let (_, digest) = c.digest(c.leader());
    let other = json!({ "type": "ConceptNode", "name": "twice?" });
    let again = c.call(3, Method::POST, "/v1/atoms", Some(other), Some("key-1"));
    assert_eq!(again.body["id"], first.body["id"], "the replay answered a different result: {again:?}");
    assert_eq!(again.body["name"], "once");
    c.converged(&[1, 2, 3]);
    assert_eq!(c.digest(1).1, digest, "a replayed key changed the state");
    let missing = c.get(1, "/v1/atoms?type=ConceptNode&name=twice%3F");
    assert_eq!(missing.body["atoms"].as_array().map(Vec::len), Some(0));

    // Compare-and-set on a named value.
    let id = first.body["id"].as_u64().unwrap();
    let path = format!("/v1/atoms/{id}/values/counter");
    let set = |value, expect| {
        c.call(1, Method::PUT, &path, Some(json!({ "value": value, "expect": expect })), None)
    };
    assert_eq!(set(json!(1), json!(null)).status, 200);
    let conflict = set(json!(2), json!(null));
    assert_eq!(conflict.status, 409, "{conflict:?}");
    assert_eq!(conflict.body["current"], json!(1));
    assert_eq!(conflict.body["error"], "cas_failed");
    assert_eq!(set(json!(2), json!(1)).status, 200);
    assert_eq!(set(json!(3), json!(1)).status, 409);
    assert_eq!(c.get(3, &path).body["value"], json!(2));
    let unconditional = c.call(2, Method::PUT, &path, Some(json!({ "value": 7 })), None);
    assert_eq!(unconditional.status, 200);
    assert_eq!(c.get(1, &path).body["value"], json!(7));

    // A batch with "$N" references is one entry: all of it, or none of it.
    let ok = c.post(3, "/v1/batch", json!({ "ops": [
        { "op": "add_node", "type": "ConceptNode", "name": "socrates" },
        { "op": "add_node", "type": "ConceptNode", "name": "man" },
        { "op": "add_link", "type": "InheritanceLink", "outgoing": ["$0", "$1"], "tv": { "strength": 0.95, "confidence": 0.9 } },
        { "op": "set_value", "id": "$2", "key": "source", "value": "syllogism" }
    ]}));
    assert_eq!(ok.status, 200, "{ok:?}");
    let link = &ok.body["results"][2]["atom"];
    assert_eq!(
        link["outgoing"],
        json!([ok.body["results"][0]["atom"]["id"], ok.body["results"][1]["atom"]["id"]])
    );
    let before = c.digest(c.leader()).1;
    let bad = c.post(
        2,
        "/v1/batch",
        json!({ "ops": [
            { "op": "add_node", "type": "ConceptNode", "name": "plato" },
            { "op": "add_link", "type": "InheritanceLink", "outgoing": ["$0", 999999] }
        ]}),
    );
    assert_eq!(bad.status, 404, "{bad:?}");
    assert_eq!(bad.body["op"], 1);
    assert!(bad.body["detail"].as_str().unwrap().contains("999999"), "{bad:?}");
    c.converged(&[1, 2, 3]);
    assert_eq!(c.digest(1).1, before, "a failed batch wrote something");
    assert_eq!(
        c.get(1, "/v1/atoms?type=ConceptNode&name=plato").body["atoms"].as_array().map(Vec::len),
        Some(0)
    );

    // A link to a missing atom is rejected, naming the id.
    let r = c.post(1, "/v1/links", json!({ "type": "ListLink", "outgoing": [id, 424242] }));
    assert_eq!(r.status, 404);
    assert!(r.body["detail"].as_str().unwrap().contains("424242"));

    // A 200 KiB atom name gets 413 naming the limit, and changes nothing.
    let huge = "x".repeat(200 * 1024);
    let r = c.post(1, "/v1/atoms", json!({ "type": "ConceptNode", "name": huge }));
    assert_eq!(r.status, 413, "{:?}", r.status);
    assert!(r.body["detail"].as_str().unwrap().contains("102400"), "{:?}", r.body);
    assert_eq!(c.digest(1).1, before);

    // Deleting an atom removes the links that contain it.
    let socrates = ok.body["results"][0]["atom"]["id"].as_u64().unwrap();
    let link_id = link["id"].as_u64().unwrap();
    let del = c.call(1, Method::DELETE, &format!("/v1/atoms/{socrates}"), None, None);
    assert_eq!(del.status, 200, "{del:?}");
    assert_eq!(del.body["removed"], json!([socrates, link_id]));
    assert_eq!(c.get(2, &format!("/v1/atoms/{link_id}")).status, 404);

    // Truth and attention values.
    let tv = c.call(
        1,
        Method::PUT,
        &format!("/v1/atoms/{id}/tv"),
        Some(json!({ "strength": 0.2, "confidence": 0.4 })),
        None,
    );
    assert_eq!(tv.body["tv"], json!({ "strength": 0.2, "confidence": 0.4 }));
    assert_eq!(c.post(2, &format!("/v1/atoms/{id}/stimulate"), json!({ "sti": 5.0 })).status, 200);
    let av =
        c.post(3, &format!("/v1/atoms/{id}/stimulate"), json!({ "sti": 2.5, "lti": 1.0 })).body["av"].clone();
    assert_eq!(av, json!({ "sti": 7.5, "lti": 1.0, "vlti": false }));
    let merged = c.post(1, "/v1/atoms", json!({ "type": "ConceptNode", "name": "once", "tv": { "strength": 1.0, "confidence": 0.9 }, "merge": "highest_confidence" }));
    assert_eq!((merged.status, merged.body["tv"]["confidence"].as_f64()), (200, Some(0.9)));
}

#[test]
fn sessions_expire_and_observations_aggregate() {
    let c = Cluster::start(3, &[("COGRAFT__RAFT__TICK_INTERVAL_MS", "200")]);
    let s = c.post(2, "/v1/sessions", json!({ "ttl_ms": 600, "metadata": { "agent": "a" } }));
    assert_eq!(s.status, 201, "{s:?}");
    let id = s.body["id"].as_u64().unwrap();
    let keep = c.post(1, "/v1/sessions", json!({ "ttl_ms": 3_600_000 })).body["id"].as_u64().unwrap();
    let patched = c.call(
        3,
        Method::PATCH,
        &format!("/v1/sessions/{keep}"),
        Some(json!({ "metadata": { "step": 2 } })),
        None,
    );
    assert_eq!(patched.body["metadata"], json!({ "step": 2 }));
    // Active -> idle after one TTL without updates, idle -> closed after another, by the leader's ticks.
    let closed =
        crate::harness::wait_until("the session to expire", std::time::Duration::from_secs(20), || {
            let r = c.get(1, &format!("/v1/sessions/{id}"));
            (r.body["status"] == "closed").then_some(r)
        });
    assert!(closed.body["expires_ms"].is_null());
    let active = c.get(3, "/v1/sessions?status=active").body["sessions"].clone();
    assert_eq!(
        active.as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![keep]
    );
    assert_eq!(
        c.call(1, Method::PATCH, &format!("/v1/sessions/{id}"), Some(json!({ "status": "active" })), None)
            .status,
        409
    );
    assert_eq!(
        c.call(2, Method::DELETE, &format!("/v1/sessions/{keep}"), None, None).body["status"],
        "closed"
    );

    for (i, ok) in [true, true, false, true].iter().enumerate() {
        let r = c.post(
            1 + i as u64 % 3,
            "/v1/observations",
            json!({ "subject": "tool.search", "success": ok, "duration_ms": 10 * (i + 1), "bytes": 100 }),
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let stats = c.get(2, "/v1/observations/stats?subject=tool.search").body;
    assert_eq!(stats["count"], 4);
    assert_eq!(stats["success_rate"], 0.75);
    assert_eq!(stats["mean_duration_ms"], 25.0);
    assert_eq!(stats["total_bytes"], 400);
    let newest = c.get(3, "/v1/observations?subject=tool.search&limit=1").body;
    assert_eq!(newest["observations"][0]["duration_ms"], 40);
}
