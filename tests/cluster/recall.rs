//! Hybrid recall with the real all-MiniLM-L6-v2 model: an exact name match comes first, the
//! graph's neighbours of the match come before an atom close only in meaning once the spread
//! counts, every result's score is the weighted sum of its two parts, the similarity part is
//! the cosine `/v1/similar` answers, the same query answers alike on every node, and bad
//! requests get 4xx.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::embeddings::model_file;
use crate::harness::{wait_until, Cluster};

const SPACE: &str = "kb";

fn names(results: &Value) -> Vec<String> {
    results.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn exact_matches_lead_and_hybrid_scores_are_their_parts() {
    let model = model_file("all-minilm-l6-v2.gguf");
    let c = Cluster::start(3, &[("COGRAFT__INFERENCE__EMBEDDING_MODEL", &model)]);
    let leader = c.leader();
    let on = c.call(
        leader,
        Method::PATCH,
        &format!("/v1/spaces/{SPACE}"),
        Some(json!({ "auto_embed": true })),
        None,
    );
    assert_eq!(on.status, 200, "{on:?}");
    let words =
        ["raft consensus", "leader election", "log replication", "rubber raft", "inflatable boat", "river"];
    let mut ops: Vec<Value> =
        words.iter().map(|w| json!({ "op": "add_node", "type": "ConceptNode", "name": w })).collect();
    for (a, b) in [(0, 1), (0, 2), (1, 2), (3, 4), (4, 5)] {
        ops.push(json!({ "op": "add_link", "type": "SimilarityLink", "outgoing": [format!("${a}"), format!("${b}")],
                         "tv": { "strength": 0.9, "confidence": 0.9 } }));
    }
    let batch = c.post(leader, &format!("/v1/batch?space={SPACE}"), json!({ "ops": ops }));
    assert_eq!(batch.status, 200, "{batch:?}");
    for node in 1..=3 {
        wait_until(&format!("six names embedded on node {node}"), Duration::from_secs(60), || {
            let models = c.get(node, &format!("/v1/embeddings/models?space={SPACE}")).body;
            (models["models"][0]["vectors"] == 6).then_some(())
        });
    }
    let recall = |node: u64, body: Value| c.post(node, &format!("/v1/recall?space={SPACE}"), body);

    // Meaning alone: the exact match first, then by cosine; "rubber raft" is close in meaning.
    let meaning = recall(
        leader,
        json!({ "text": "raft consensus", "weights": { "spread": 0.0, "similarity": 1.0 }, "top_k": 6 }),
    );
    assert_eq!(meaning.status, 200, "{meaning:?}");
    let results = &meaning.body["results"];
    assert_eq!(results[0]["name"], "raft consensus");
    assert_eq!(results[0]["exact"], true);
    assert_eq!(meaning.body["exact_matches"].as_array().unwrap().len(), 1);
    // Each similarity part is the cosine /v1/similar answers for that atom.
    let similar = c.post(
        leader,
        &format!("/v1/similar?space={SPACE}"),
        json!({ "text": "raft consensus", "top_k": 6 }),
    );
    assert_eq!(similar.status, 200, "{similar:?}");
    for hit in similar.body["results"][0].as_array().unwrap() {
        let ours = results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == hit["id"])
            .expect("every neighbour is a candidate");
        let (part, cosine) =
            (ours["parts"]["similarity"].as_f64().unwrap(), hit["score"].as_f64().unwrap().max(0.0));
        assert!((part - cosine).abs() < 1e-5, "{}: part {part}, cosine {cosine}", hit["name"]);
    }

    // Association alone: after the match, its graph neighbours; the raft of rubber is not reached.
    let association = recall(
        leader,
        json!({ "text": "raft consensus", "weights": { "spread": 1.0, "similarity": 0.0 }, "top_k": 3 }),
    );
    assert_eq!(association.status, 200, "{association:?}");
    let ranked = names(&association.body["results"]);
    assert_eq!(ranked[0], "raft consensus");
    let mut neighbours = ranked[1..].to_vec();
    neighbours.sort();
    assert_eq!(neighbours, ["leader election", "log replication"], "{ranked:?}");

    // The default weights: every score is the weighted sum of its parts, best first, and every
    // node answers the same.
    let hybrid = recall(leader, json!({ "text": "raft consensus", "top_k": 6 }));
    assert_eq!(hybrid.status, 200, "{hybrid:?}");
    let weights = &hybrid.body["weights"];
    let (ws, wm) = (weights["spread"].as_f64().unwrap(), weights["similarity"].as_f64().unwrap());
    let list = hybrid.body["results"].as_array().unwrap();
    assert_eq!(list.len(), 6);
    for r in list {
        let want =
            ws * r["parts"]["spread"].as_f64().unwrap() + wm * r["parts"]["similarity"].as_f64().unwrap();
        assert!((r["score"].as_f64().unwrap() - want).abs() < 1e-9, "{r}");
    }
    for pair in list[1..].windows(2) {
        assert!(pair[0]["score"].as_f64() >= pair[1]["score"].as_f64(), "not best first: {list:?}");
    }
    let election = list.iter().find(|r| r["name"] == "leader election").unwrap();
    assert!(
        election["parts"]["spread"].as_f64().unwrap() > 0.0,
        "the match's neighbour got no spread part: {election}"
    );
    assert!(list.iter().all(|r| r["name"].is_string()), "links are left out without a type filter: {list:?}");
    let indexes = &hybrid.body["indexes"];
    for part in ["storage", "graph", "vectors"] {
        assert!(
            indexes[part].as_u64().unwrap() >= hybrid.body["applied_index"].as_u64().unwrap(),
            "{indexes}"
        );
    }
    for node in (1..=3).filter(|n| *n != leader) {
        let again = recall(node, json!({ "text": "raft consensus", "top_k": 6 }));
        assert_eq!(again.body["results"], hybrid.body["results"], "node {node} ranks differently");
    }

    // Sources without text: spreading only (there is no text to compare), the sources left out.
    let id = list[0]["id"].as_u64().unwrap();
    let from = recall(leader, json!({ "sources": [id], "top_k": 5 }));
    assert_eq!(from.status, 200, "{from:?}");
    let reached = names(&from.body["results"]);
    assert!(!reached.contains(&"raft consensus".to_string()), "{reached:?}");
    assert!(
        reached.starts_with(&["leader election".to_string()])
            || reached.starts_with(&["log replication".to_string()]),
        "{reached:?}"
    );

    for bad in [
        json!({}),
        json!({ "text": "   " }),
        json!({ "text": "x", "top_k": 0 }),
        json!({ "text": "x", "weights": { "spread": 0.0, "similarity": 0.0 } }),
        json!({ "text": "x", "weights": { "spread": -1.0, "similarity": 1.0 } }),
        json!({ "text": "x", "filters": { "min_confidence": 2.0 } }),
        json!({ "text": "x", "spread": { "sources": [1] } }),
        json!({ "text": "x", "spread": { "max_hops": 0 } }),
        json!({ "text": "x", "spread": 7 }),
        json!({ "text": "x", "colour": "blue" }),
        json!({ "sources": [1], "weights": { "spread": 0.0, "similarity": 1.0 } }),
        json!({ "text": "x", "filters": { "types": [] } }),
        json!({ "text": "x", "match_types": ["not a type"] }),
    ] {
        let refused = recall(leader, bad.clone());
        assert_eq!(refused.status, 400, "{bad}: {refused:?}");
        assert!(refused.body["detail"].is_string(), "{refused:?}");
    }
}
