//! Vectors as replicated data and nearest neighbours over HTTP: vectors stored through any node
//! reach every replica bit for bit, every node ranks the same neighbours with the same scores
//! (those of a brute-force cosine computed here), `type` filters and `atom_id` queries leave
//! what they should out, a deleted atom's vector leaves every index, bad requests get 4xx
//! without changing anything, and a search sees every vector acknowledged before it began.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{wait_until, Cluster};

const DIM: usize = 8;
const MODEL: &str = "planted";

/// A fixed, spread-out vector for atom number `i` (no two rank alike against the probe).
fn planted(i: usize) -> Vec<f32> {
    (0..DIM).map(|j| ((i as f32 + 1.0) * 0.731 + j as f32 * 1.618).sin()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The ids of one result list.
fn hit_ids(list: &Value) -> Vec<u64> {
    list.as_array().expect("a result list").iter().map(|h| h["id"].as_u64().unwrap()).collect()
}

/// The first result list of `/v1/similar` on `node`, once its index holds `expect`.
fn neighbours(c: &Cluster, node: u64, query: Value, expect: &[u64]) -> Value {
    wait_until(&format!("node {node} to rank {expect:?}"), Duration::from_secs(30), || {
        let reply = c.post(node, "/v1/similar?space=vec", query.clone());
        (reply.status == 200 && hit_ids(&reply.body["results"][0]) == expect)
            .then(|| reply.body["results"][0].clone())
    })
}

#[test]
fn stored_vectors_replicate_and_every_node_ranks_the_same_neighbours() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader();
    let mut ops: Vec<Value> = (0..30)
        .map(|i| json!({ "op": "add_node", "type": "ConceptNode", "name": format!("w{i}") }))
        .collect();
    ops.push(json!({ "op": "add_node", "type": "PredicateNode", "name": "p" }));
    let batch = c.post(leader, "/v1/batch?space=vec", json!({ "ops": ops }));
    assert_eq!(batch.status, 200, "{batch:?}");
    let ids: Vec<u64> =
        batch.body["results"].as_array().unwrap().iter().map(|r| r["atom"]["id"].as_u64().unwrap()).collect();
    // Vectors through every node (followers forward the write), the predicate's among them.
    for (i, id) in ids.iter().enumerate() {
        let put = c.call(
            1 + (i as u64 % 3),
            Method::PUT,
            &format!("/v1/atoms/{id}/embedding?space=vec"),
            Some(json!({ "model": MODEL, "vector": planted(i) })),
            None,
        );
        assert_eq!(put.status, 200, "vector of w{i}: {put:?}");
        assert_eq!(put.body["dim"], DIM as u64, "{put:?}");
    }

    // The expected ranking, by brute force over what was stored.
    let probe: Vec<f32> = (0..DIM).map(|j| (j as f32 * 0.9).cos()).collect();
    let mut scored: Vec<(f64, usize)> = (0..ids.len()).map(|i| (cosine(&probe, &planted(i)), i)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<u64> = scored.iter().take(5).map(|(_, i)| ids[*i]).collect();
    let query = json!({ "vector": probe, "model": MODEL, "top_k": 5 });
    let answers: Vec<Value> = (1..=3).map(|n| neighbours(&c, n, query.clone(), &top)).collect();
    for (n, answer) in answers.iter().enumerate().skip(1) {
        assert_eq!(answer, &answers[0], "node {} ranks differently from node 1", n + 1);
    }
    for (hit, (score, _)) in answers[0].as_array().unwrap().iter().zip(&scored) {
        let got = hit["score"].as_f64().unwrap();
        assert!((got - score).abs() < 1e-5, "score {got} where the brute force has {score}");
    }
    // Stored bits are the bits sent, on a follower too.
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let stored = c.get(follower, &format!("/v1/atoms/{}/embeddings?space=vec", ids[4]));
    let bits: Vec<f32> = stored.body["embeddings"][0]["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(bits, planted(4));
    let models = c.get(follower, "/v1/embeddings/models?space=vec");
    assert_eq!(models.body["models"], json!([{ "model": MODEL, "dim": DIM, "vectors": ids.len() }]));

    // `type` keeps only the predicate; an atom's own vector is left out of its neighbours.
    let typed = c.post(
        leader,
        "/v1/similar?space=vec",
        json!({ "vector": probe, "model": MODEL, "type": "PredicateNode" }),
    );
    assert_eq!(hit_ids(&typed.body["results"][0]), vec![ids[30]], "{typed:?}");
    let own =
        c.post(leader, "/v1/similar?space=vec", json!({ "atom_id": top[0], "model": MODEL, "top_k": 4 }));
    assert_eq!(own.status, 200, "{own:?}");
    assert!(!hit_ids(&own.body["results"][0]).contains(&top[0]), "{own:?}");

    // Bad requests: 4xx, nothing changes.
    let digest = c.converged(&[1, 2, 3]);
    for (body, status) in [
        (json!({ "vector": [1.0, 0.0], "model": MODEL }), 400),
        (json!({ "vector": probe, "model": MODEL, "top_k": 0 }), 400),
        (json!({ "vector": probe, "atom_id": ids[0], "model": MODEL }), 400),
        (json!({ "vector": probe, "model": "no-such-model" }), 404),
        (json!({ "vector": probe, "model": MODEL, "top_k": 5, "extra": 1 }), 400),
    ] {
        let reply = c.post(follower, "/v1/similar?space=vec", body.clone());
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        assert!(reply.body["error"].is_string() && reply.body["detail"].is_string(), "{reply:?}");
    }
    let put = |vector: Value| {
        c.call(
            leader,
            Method::PUT,
            &format!("/v1/atoms/{}/embedding?space=vec", ids[0]),
            Some(json!({ "model": MODEL, "vector": vector })),
            None,
        )
    };
    let wrong_dim = put(json!([1.0, 2.0]));
    assert_eq!(wrong_dim.status, 422, "{wrong_dim:?}");
    assert_eq!(wrong_dim.body["error"], "dimension_mismatch");
    assert_eq!(put(json!([])).status, 400);
    assert_eq!(c.converged(&[1, 2, 3]), digest, "a refused request changed the state");

    // A deleted atom's vector leaves every node's index.
    let gone = c.call(leader, Method::DELETE, &format!("/v1/atoms/{}?space=vec", top[0]), None, None);
    assert!(gone.status < 300, "{gone:?}");
    let after: Vec<u64> = scored.iter().skip(1).take(5).map(|(_, i)| ids[*i]).collect();
    for n in 1..=3 {
        neighbours(&c, n, query.clone(), &after);
    }

    // A search is linearizable by default: a vector acknowledged before it began is in its
    // answer, on a follower too, with no waiting on the client's side.
    for k in 0..10 {
        let added = c.add_atom(leader, &format!("fresh{k}"));
        let id = added.body["id"].as_u64().unwrap();
        let v = planted(100 + k);
        let put = c.call(
            leader,
            Method::PUT,
            &format!("/v1/atoms/{id}/embedding?space=default"),
            Some(json!({ "model": MODEL, "vector": v })),
            None,
        );
        assert_eq!(put.status, 200, "{put:?}");
        let found =
            c.post(follower, "/v1/similar?space=default", json!({ "vector": v, "model": MODEL, "top_k": 1 }));
        assert_eq!(found.status, 200, "search {k}: {found:?}");
        assert_eq!(
            hit_ids(&found.body["results"][0]),
            vec![id],
            "search {k} missed the vector written before it"
        );
        assert!(found.body["applied_index"].as_u64().unwrap() >= put.body["index"].as_u64().unwrap_or(0));
    }
    let stale = c.post(
        follower,
        "/v1/similar?space=default&consistency=stale",
        json!({ "vector": planted(100), "model": MODEL }),
    );
    assert_eq!(stale.status, 200, "{stale:?}");
    let bad = c.post(
        follower,
        "/v1/similar?space=default&consistency=eventual",
        json!({ "vector": planted(100), "model": MODEL }),
    );
    assert_eq!(bad.status, 400, "{bad:?}");
}
