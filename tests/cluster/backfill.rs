//! The embedding backfill with the real all-MiniLM-L6-v2 model on three nodes: turning a
//! space's `auto_embed` on embeds the names of the nodes it already holds and of those added
//! later, on every replica alike and as `/v1/embed` would; an operator's backfill fills a space
//! without the setting, on the leader only (421 naming it elsewhere); a leader killed with most
//! of a large batch still unembedded leaves it to the next leader, which embeds every name.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::embeddings::{cosine, model_file, vector};
use crate::harness::{wait_until, Cluster};

/// The count of `space`'s vectors of its one model on `node` (0 when it has none yet).
fn vectors(c: &Cluster, node: u64, space: &str) -> u64 {
    let models = c.get(node, &format!("/v1/embeddings/models?space={space}")).body;
    models["models"].as_array().unwrap().iter().map(|m| m["vectors"].as_u64().unwrap()).sum()
}

fn wait_for_vectors(c: &Cluster, nodes: &[u64], space: &str, count: u64, patience: Duration) {
    for node in nodes {
        wait_until(&format!("{count} vectors in {space} on node {node}"), patience, || {
            (vectors(c, *node, space) == count).then_some(())
        });
    }
}

fn add_nodes(c: &Cluster, node: u64, space: &str, names: &[String]) -> Vec<u64> {
    let ops: Vec<Value> =
        names.iter().map(|n| json!({ "op": "add_node", "type": "ConceptNode", "name": n })).collect();
    let reply = c.post(node, &format!("/v1/batch?space={space}"), json!({ "ops": ops }));
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body["results"].as_array().unwrap().iter().map(|r| r["atom"]["id"].as_u64().unwrap()).collect()
}

fn names(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn node_names_are_embedded_on_every_replica_and_a_new_leader_finishes_the_work() {
    let model = model_file("all-minilm-l6-v2.gguf");
    let mut c = Cluster::start(3, &[("COGRAFT__INFERENCE__EMBEDDING_MODEL", &model)]);
    let leader = c.leader();
    let follower = (1..=3).find(|n| *n != leader).unwrap();

    // A space whose nodes exist before the setting; a link among them has no name to embed.
    let zoo = add_nodes(&c, follower, "zoo", &names(&["cat", "dog", "horse", "car", "truck", "apple"]));
    let link =
        c.post(leader, "/v1/links?space=zoo", json!({ "type": "ListLink", "outgoing": [zoo[0], zoo[1]] }));
    assert_eq!(link.status, 201, "{link:?}");
    c.converged(&[1, 2, 3]);
    assert_eq!(vectors(&c, leader, "zoo"), 0, "nothing is embedded before the space asks for it");

    let on = c.call(follower, Method::PATCH, "/v1/spaces/zoo", Some(json!({ "auto_embed": true })), None);
    assert_eq!(on.status, 200, "{on:?}");
    wait_for_vectors(&c, &[1, 2, 3], "zoo", 6, Duration::from_secs(60));
    // Nodes added later are embedded from the announcements.
    let kitten = add_nodes(&c, leader, "zoo", &names(&["kitten", "automobile"]))[0];
    wait_for_vectors(&c, &[1, 2, 3], "zoo", 8, Duration::from_secs(60));
    let digest = c.converged(&[1, 2, 3]);
    assert!(!digest.is_empty());

    // The stored vector is the model's embedding of the name, the same on every replica.
    let embed = c.post(follower, "/v1/embed", json!({ "texts": ["kitten"] }));
    let mut stored = Vec::new();
    for node in 1..=3 {
        let got = c.get(node, &format!("/v1/atoms/{kitten}/embeddings?space=zoo")).body;
        assert_eq!(got["embeddings"][0]["model"], embed.body["model"], "{got}");
        stored.push(got["embeddings"][0]["vector"].clone());
    }
    assert!(stored.windows(2).all(|w| w[0] == w[1]), "replicas hold different bits");
    let sim = cosine(&vector(&stored[0]), &vector(&embed.body["embeddings"][0]));
    assert!(sim > 0.9999, "the backfilled vector and /v1/embed of the name: cosine {sim}");
    // And it recalls by meaning: a kitten's nearest is the cat, an automobile's the car.
    let near = c.post(follower, "/v1/similar?space=zoo", json!({ "atom_id": kitten, "top_k": 1 }));
    assert_eq!(near.body["results"][0][0]["name"], "cat", "{near:?}");
    let text = c.post(leader, "/v1/similar?space=zoo", json!({ "text": "a car", "top_k": 2 }));
    let top: Vec<&str> =
        text.body["results"][0].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(top.iter().filter(|n| ["car", "automobile"].contains(n)).count(), 2, "{text:?}");

    // An operator's backfill of a space without the setting: on the leader only.
    let plain = add_nodes(&c, leader, "plain", &names(&["oak", "pine", "birch"]));
    let elsewhere = c.post(follower, "/admin/embeddings/backfill?space=plain", json!({}));
    assert_eq!(elsewhere.status, 421, "{elsewhere:?}");
    assert_eq!(elsewhere.body["leader_id"], leader, "{elsewhere:?}");
    let asked = c.post(leader, "/admin/embeddings/backfill?space=plain", json!({}));
    assert_eq!(asked.status, 202, "{asked:?}");
    wait_for_vectors(&c, &[1, 2, 3], "plain", plain.len() as u64, Duration::from_secs(60));
    let status = c.get(leader, "/admin/embeddings").body;
    assert_eq!(status["backfill"]["active"], true, "{status}");
    assert!(status["backfill"]["stored"].as_u64().unwrap() >= 11, "{status}");
    assert_eq!(c.get(follower, "/admin/embeddings").body["backfill"]["active"], false);
    let metrics = c.http.get(format!("http://{}/metrics", c.addr(leader))).send().unwrap().text().unwrap();
    let stored_series = metrics
        .lines()
        .find(|l| l.starts_with("cograft_embedding_backfill_vectors_total{outcome=\"stored\"}"))
        .unwrap_or_else(|| panic!("no stored-vectors series in:\n{metrics}"));
    let counted: f64 = stored_series.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(counted as u64, status["backfill"]["stored"].as_u64().unwrap(), "{stored_series}");

    // A leader killed with most of a large batch unembedded: the next one embeds every name.
    let many: Vec<String> = (0..400).map(|i| format!("item number {i}")).collect();
    add_nodes(&c, leader, "zoo", &many);
    c.kill9(leader);
    let next = c.leader();
    assert_ne!(next, leader);
    let survivors: Vec<u64> = c.running();
    wait_for_vectors(&c, &survivors, "zoo", 408, Duration::from_secs(120));
    let status = c.get(next, "/admin/embeddings").body;
    assert_eq!(status["backfill"]["active"], true, "{status}");
    assert!(status["backfill"]["stored"].as_u64().unwrap() > 0, "the new leader stored nothing: {status}");
    eprintln!("after the failover: {status}");
}
