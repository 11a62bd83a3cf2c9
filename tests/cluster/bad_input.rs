//! Bad input never panics a node nor changes state: malformed JSON and MessagePack, wrong
//! types, unknown ids and routes, oversized bodies, unicode edge cases. Each answers a JSON
//! `{error, detail}` and leaves the state digest unchanged.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Cluster, Reply, SECRET};

fn assert_json_error(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(r.body["error"].is_string(), "{what}: no error field: {r:?}");
    assert!(r.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}: no detail: {r:?}");
}

#[test]
fn bad_input_gets_a_json_error_and_changes_nothing() {
    let c = Cluster::start(3, &[]);
    let atom = c.add_atom(1, "anchor").body["id"].as_u64().unwrap();
    let before = c.converged(&[1, 2, 3]);

    let json_type = "application/json";
    let cases: Vec<(Reply, u16, &str)> = vec![
        (
            c.raw(
                2,
                Method::POST,
                "/v1/atoms",
                json_type,
                b"{\"type\": \"ConceptNode\", \"name\": ".to_vec(),
            ),
            400,
            "truncated JSON",
        ),
        (c.raw(2, Method::POST, "/v1/atoms", json_type, vec![0xff, 0xfe, 0x00]), 400, "binary garbage"),
        (
            c.raw(
                2,
                Method::POST,
                "/v1/atoms",
                json_type,
                b"{\"type\":\"ConceptNode\",\"name\":\"\xc3\x28\"}".to_vec(),
            ),
            400,
            "invalid UTF-8",
        ),
        (c.raw(2, Method::POST, "/v1/atoms", "text/plain", b"hello".to_vec()), 415, "wrong content type"),
        (c.post(1, "/v1/atoms", json!({ "type": 5, "name": "x" })), 400, "number as type"),
        (c.post(1, "/v1/atoms", json!({ "type": "ConceptNode", "name": ["x"] })), 400, "array as name"),
        (
            c.post(
                1,
                "/v1/atoms",
                json!({ "type": "ConceptNode", "name": "x", "tv": { "strength": 2.0, "confidence": 0.1 } }),
            ),
            400,
            "strength out of range",
        ),
        (
            c.post(1, "/v1/atoms", json!({ "type": "Concept Node", "name": "x" })),
            400,
            "type not an identifier",
        ),
        (c.post(1, "/v1/atoms", json!({ "type": "ConceptNode", "name": "" })), 400, "empty name"),
        (
            c.post(1, "/v1/atoms", json!({ "type": "ConceptNode", "name": "x", "colour": "red" })),
            400,
            "unknown field",
        ),
        (
            c.post(1, "/v1/atoms", json!({ "type": "ConceptNode", "name": "x", "merge": "average" })),
            400,
            "unknown merge",
        ),
        (c.post(3, "/v1/links", json!({ "type": "ListLink", "outgoing": [] })), 400, "empty link"),
        (
            c.post(3, "/v1/links", json!({ "type": "ListLink", "outgoing": [atom, 987654] })),
            404,
            "link to unknown id",
        ),
        (
            c.post(3, "/v1/links", json!({ "type": "ListLink", "outgoing": ["$0"] })),
            400,
            "reference outside a batch",
        ),
        (c.post(3, "/v1/batch", json!({ "ops": [] })), 400, "empty batch"),
        (
            c.post(
                3,
                "/v1/batch",
                json!({ "ops": [{ "op": "add_link", "type": "ListLink", "outgoing": ["$1"] }] }),
            ),
            400,
            "forward reference",
        ),
        (c.post(3, "/v1/batch", json!({ "ops": [{ "op": "explode" }] })), 400, "unknown op"),
        (c.get(1, "/v1/atoms/987654"), 404, "unknown id"),
        (c.get(1, "/v1/atoms/abc"), 400, "non-numeric id"),
        (c.get(1, "/v1/atoms/-1"), 400, "negative id"),
        (c.get(1, "/v1/atoms/99999999999999999999999"), 400, "id overflow"),
        (c.get(1, &format!("/v1/atoms/{atom}/values/none")), 404, "missing value"),
        (c.get(1, &format!("/v1/atoms/{atom}?consistency=sometimes")), 400, "bad consistency"),
        (c.get(1, "/v1/atoms?type=ConceptNode&limit=many"), 400, "bad limit"),
        (c.call(1, Method::DELETE, "/v1/atoms/987654", None, None), 404, "delete unknown"),
        (
            c.call(
                1,
                Method::PUT,
                "/v1/atoms/987654/tv",
                Some(json!({ "strength": 0.5, "confidence": 0.5 })),
                None,
            ),
            404,
            "tv of unknown",
        ),
        (
            c.call(
                1,
                Method::PUT,
                &format!("/v1/atoms/{atom}/tv"),
                Some(json!({ "strength": "high" })),
                None,
            ),
            400,
            "tv wrong type",
        ),
        (c.post(1, &format!("/v1/atoms/{atom}/stimulate"), json!({ "sti": "lots" })), 400, "sti wrong type"),
        (
            c.call(1, Method::PATCH, "/v1/sessions/424242", Some(json!({ "status": "idle" })), None),
            404,
            "unknown session",
        ),
        (c.post(1, "/v1/sessions", json!({ "ttl_ms": -5 })), 400, "negative ttl"),
        (c.post(1, "/v1/observations", json!({ "subject": "", "success": true })), 400, "empty subject"),
        (
            c.post(1, "/v1/observations", json!({ "subject": "s", "success": "yes" })),
            400,
            "success not a bool",
        ),
        (
            c.call(
                1,
                Method::POST,
                "/v1/atoms",
                Some(json!({ "type": "ConceptNode", "name": "k" })),
                Some(&"k".repeat(200)),
            ),
            400,
            "long idempotency key",
        ),
        (c.get(1, "/v1/nothing-here"), 404, "unknown route"),
        (c.call(1, Method::PATCH, "/v1/atoms", None, None), 404, "unknown method"),
        (
            c.raw(1, Method::POST, "/v1/atoms", json_type, vec![b' '; 2 * 1024 * 1024]),
            413,
            "body over the limit",
        ),
        (
            c.raw(1, Method::POST, "/raft/append", "application/msgpack", vec![0xc1, 0x00]),
            401,
            "raft without the secret",
        ),
        (c.post(1, "/admin/add-learner", json!({ "id": "four" })), 400, "admin wrong type"),
        (c.post(1, "/admin/init", json!({ "members": { "1": "127.0.0.1:1" } })), 409, "init twice"),
    ];
    for (reply, status, what) in &cases {
        assert_json_error(reply, *status, what);
    }

    // A peer of another data format is refused, naming both formats.
    let r = c
        .http
        .post(format!("http://{}/raft/append", c.addr(2)))
        .header("x-cograft-cluster-secret", SECRET)
        .header("x-cograft-format", "1")
        .body(vec![0x90])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["error"], "format_mismatch", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("format 1"), "{body}");

    // Malformed MessagePack with the right secret and format.
    let format = c.status(2)["format"].to_string();
    let r = c
        .http
        .post(format!("http://{}/raft/append", c.addr(2)))
        .header("x-cograft-cluster-secret", SECRET)
        .header("x-cograft-format", format)
        .body(vec![0x93, 0xc1, 0xff, 0x00])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().unwrap();
    assert!(body["detail"].as_str().unwrap().contains("MessagePack"), "{body}");

    c.converged(&[1, 2, 3]);
    for node in 1..=3 {
        assert_eq!(c.digest(node).1, before, "bad input changed node {node}'s state");
    }

    // Unicode edge cases are data, not errors: stored and found exactly.
    for name in ["猫", "🐈‍⬛", "e\u{301}", "\u{202e}reversed", "zero\u{200b}width", "nul\u{0}byte"] {
        let r = c.add_atom(2, name);
        assert_eq!(r.status, 201, "{name:?}: {r:?}");
        let got = c.get(3, &format!("/v1/atoms/{}", r.body["id"]));
        assert_eq!(got.body["name"], name);
    }
    // Every node is still healthy.
    for node in 1..=3 {
        assert_eq!(c.get(node, "/healthz").status, 200);
    }
}

#[test]
fn without_models_embed_backfill_and_the_chat_routes_answer_503_naming_the_setting() {
    let c = Cluster::start(1, &[]);
    let reply = c.post(1, "/v1/embed", json!({ "texts": ["hello"] }));
    assert_eq!(reply.status, 503, "{:?}", reply.body);
    assert!(reply.body["detail"].as_str().unwrap().contains("inference.embedding_model"), "{:?}", reply.body);
    assert_eq!(c.get(1, "/admin/inference").body["embedding"], Value::Null);
    // Nor a chat model: generation, extraction and classification say which setting to set.
    for (path, body) in [
        ("/v1/generate", json!({ "prompt": "hello" })),
        ("/v1/extract", json!({ "text": "Paris is in France." })),
        ("/v1/classify", json!({ "text": "hello", "labels": ["a", "b"] })),
    ] {
        let reply = c.post(1, path, body);
        assert_eq!(reply.status, 503, "{path} -> {:?}", reply.body);
        assert!(
            reply.body["detail"].as_str().unwrap().contains("inference.generation_model"),
            "{:?}",
            reply.body
        );
    }
    assert_eq!(c.get(1, "/admin/inference").body["generation"], Value::Null);
    // Nothing to backfill with either; a space's settings still change, and bad ones do not.
    let backfill = c.post(1, "/admin/embeddings/backfill?space=zoo", json!({}));
    assert_eq!(backfill.status, 503, "{backfill:?}");
    assert!(backfill.body["detail"].as_str().unwrap().contains("inference.embedding_model"), "{backfill:?}");
    let patch = |space: &str, body: Value| {
        c.call(1, reqwest::Method::PATCH, &format!("/v1/spaces/{space}"), Some(body), None)
    };
    for (space, body) in [
        ("zoo", json!({ "auto_embed": "yes" })),
        ("zoo", json!({ "auto_embed": true, "colour": "red" })),
        ("zoo", json!({})),
        ("not a name", json!({ "auto_embed": true })),
    ] {
        let reply = patch(space, body.clone());
        assert_eq!(reply.status, 400, "{space} {body}: {reply:?}");
    }
    assert_eq!(c.get(1, "/v1/spaces").body["spaces"], json!([]), "a refused change made a space");
    let set = patch("zoo", json!({ "auto_embed": true }));
    assert_eq!(set.status, 200, "{set:?}");
    let spaces = c.get(1, "/v1/spaces").body;
    assert_eq!(spaces["spaces"][0]["name"], "zoo", "{spaces}");
    assert_eq!(spaces["spaces"][0]["auto_embed"], true, "{spaces}");
    assert_eq!(c.get(1, "/admin/embeddings").body["backfill"]["model"], Value::Null);

    // Recall without a model: the default weights rank by the spread alone (the exact match
    // first, then what it reaches); weights the client set with a similarity part need the model.
    let ops = json!({ "ops": [
        { "op": "add_node", "type": "ConceptNode", "name": "cat" },
        { "op": "add_node", "type": "ConceptNode", "name": "kitten" },
        { "op": "add_link", "type": "SimilarityLink", "outgoing": ["$0", "$1"] },
    ] });
    assert_eq!(c.post(1, "/v1/batch?space=zoo", ops).status, 200);
    let recall = c.post(1, "/v1/recall?space=zoo", json!({ "text": "cat" }));
    assert_eq!(recall.status, 200, "{recall:?}");
    assert_eq!(recall.body["model"], Value::Null, "{recall:?}");
    assert_eq!(recall.body["weights"], json!({ "spread": 1.0, "similarity": 0.0 }), "{recall:?}");
    let names: Vec<&str> =
        recall.body["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cat", "kitten"], "the link has no name and is left out: {recall:?}");
    let asks = c.post(
        1,
        "/v1/recall?space=zoo",
        json!({ "text": "cat", "weights": { "spread": 0.5, "similarity": 0.5 } }),
    );
    assert_eq!(asks.status, 503, "{asks:?}");
    assert!(asks.body["detail"].as_str().unwrap().contains("inference.embedding_model"), "{asks:?}");
}
