//! Structural embeddings and clusters over HTTP: the leader builds FastRP vectors of a graph
//! with two planted communities and proposes them, every replica then holds the same vectors
//! and finds a node's community as its structural neighbours, a rebuild clears the vector of
//! an atom left without structure, bad requests get 4xx; k-means over the vectors splits the
//! communities and writes each cluster back as a concept with its members' links on every
//! node.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{wait_until, Cluster};

const SPACE: &str = "graph";
const SIZE: usize = 10;

/// Two communities of [`SIZE`] nodes, each pair inside one linked with probability about 1/2
/// (a fixed draw), two links between them, and two lone nodes, the second linked to the
/// first node of community a. Answers the batch's ops.
fn planted_graph() -> Vec<Value> {
    let mut ops: Vec<Value> = ["a", "b"]
        .iter()
        .flat_map(|c| (0..SIZE).map(move |i| format!("{c}{i}")))
        .chain(["lone".to_string(), "tail".to_string()])
        .map(|name| json!({ "op": "add_node", "type": "ConceptNode", "name": name }))
        .collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for base in [0, SIZE] {
        for i in 0..SIZE {
            for j in i + 1..SIZE {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Every node gets at least its ring neighbour, so none is weakly attached.
                if x % 2 == 0 || j == i + 1 {
                    let outgoing = [format!("${}", base + i), format!("${}", base + j)];
                    ops.push(json!({ "op": "add_link", "type": "SimilarityLink", "outgoing": outgoing }));
                }
            }
        }
    }
    for (a, b) in [(0, SIZE + 1), (2, SIZE + 3)] {
        ops.push(json!({ "op": "add_link", "type": "SimilarityLink", "outgoing": [format!("${a}"), format!("${b}")] }));
    }
    let tail = 2 * SIZE + 1;
    ops.push(json!({ "op": "add_link", "type": "ListLink", "outgoing": ["$0", format!("${tail}")] }));
    ops
}

/// The structural build's report on `node` once it ended.
fn finished_build(c: &Cluster, node: u64) -> Value {
    wait_until("the structural build to end", Duration::from_secs(60), || {
        let state = c.get(node, "/admin/embeddings");
        let build = state.body["structural"].clone();
        matches!(build["phase"].as_str(), Some("done" | "failed")).then_some(build)
    })
}

#[test]
fn structural_embeddings_find_communities_and_clusters_write_them_back() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader();
    let follower = (1..=3).find(|n| *n != leader).unwrap();
    let ops = planted_graph();
    let batch = c.post(leader, &format!("/v1/batch?space={SPACE}"), json!({ "ops": ops }));
    assert_eq!(batch.status, 200, "{batch:?}");
    let ids: Vec<u64> =
        batch.body["results"].as_array().unwrap().iter().map(|r| r["atom"]["id"].as_u64().unwrap()).collect();
    let community_a: BTreeSet<u64> = ids[..SIZE].iter().copied().collect();
    let community_b: BTreeSet<u64> = ids[SIZE..2 * SIZE].iter().copied().collect();
    let (lone, tail) = (ids[2 * SIZE], ids[2 * SIZE + 1]);
    let tail_link = *ids.last().unwrap();

    // Builds run on the leader; bad parameters and empty spaces are refused before anything runs.
    let build = |node: u64, space: &str, body: Value| {
        c.post(node, &format!("/admin/embeddings/build?space={space}"), body)
    };
    let elsewhere = build(follower, SPACE, json!({ "dim": 32 }));
    assert_eq!(elsewhere.status, 421, "{elsewhere:?}");
    for bad in [
        json!({ "dim": 1 }),
        json!({ "dim": 32, "weights": [] }),
        json!({ "dim": 32, "weights": [0.0] }),
        json!({}),
    ] {
        let refused = build(leader, SPACE, bad.clone());
        assert_eq!(refused.status, 400, "{bad}: {refused:?}");
        assert!(refused.body["detail"].is_string(), "{refused:?}");
    }
    let empty = build(leader, "nothing_here", json!({ "dim": 32 }));
    assert_eq!(empty.status, 404, "{empty:?}");
    let none_yet = c.post(
        leader,
        &format!("/v1/similar?space={SPACE}"),
        json!({ "atom_id": ids[0], "kind": "structural" }),
    );
    assert_eq!(none_yet.status, 404, "{none_yet:?}");
    assert!(none_yet.body["detail"].as_str().unwrap().contains("/admin/embeddings/build"), "{none_yet:?}");

    let started = build(leader, SPACE, json!({ "dim": 32 }));
    assert_eq!(started.status, 202, "{started:?}");
    assert_eq!(started.body["build"]["model"], "fastrp-32");
    let report = finished_build(&c, leader);
    assert_eq!(report["phase"], "done", "{report}");
    let atoms = ids.len() as u64 - 1; // every atom but the lone node
    assert_eq!(report["atoms"], atoms, "{report}");
    assert_eq!(report["isolated"], 1, "{report}");
    assert_eq!(report["stored"], atoms, "{report}");

    // Every node holds the vectors (replicated, not recomputed) and ranks alike: a node of
    // community a (not one joined to b) has only its community as its nearest nodes.
    let query = json!({ "atom_id": ids[5], "kind": "structural", "type": "ConceptNode", "top_k": 5 });
    let answers: Vec<Value> = (1..=3)
        .map(|n| {
            let reply = c.post(n, &format!("/v1/similar?space={SPACE}"), query.clone());
            assert_eq!(reply.status, 200, "node {n}: {reply:?}");
            assert_eq!(reply.body["model"], "fastrp-32");
            reply.body["results"][0].clone()
        })
        .collect();
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
    let nearest: Vec<u64> =
        answers[0].as_array().unwrap().iter().map(|h| h["id"].as_u64().unwrap()).collect();
    assert_eq!(nearest.len(), 5);
    assert!(
        nearest.iter().all(|id| community_a.contains(id)),
        "a5's structural neighbours {nearest:?} leave its community"
    );

    // A rebuild after the tail's only link went: the tail lost its structure, so its vector.
    let vectors_of = |id: u64| c.get(leader, &format!("/v1/atoms/{id}/embeddings?space={SPACE}"));
    assert!(vectors_of(tail).body["embeddings"].to_string().contains("fastrp-32"));
    let delete =
        c.call(leader, reqwest::Method::DELETE, &format!("/v1/atoms/{tail_link}?space={SPACE}"), None, None);
    assert_eq!(delete.status, 200, "{delete:?}");
    let again = build(leader, SPACE, json!({ "dim": 32 }));
    assert_eq!(again.status, 202, "{again:?}");
    let report = finished_build(&c, leader);
    assert_eq!(report["phase"], "done", "{report}");
    assert_eq!(report["cleared"], 1, "{report}");
    assert_eq!(report["isolated"], 2, "{report}");
    let atoms = atoms - 2; // the tail's link is gone, and the tail has no structure left
    assert!(!vectors_of(tail).body["embeddings"].to_string().contains("fastrp-32"), "{:?}", vectors_of(tail));
    assert!(!vectors_of(lone).body["embeddings"].to_string().contains("fastrp-32"));
    c.converged(&[1, 2, 3]);

    // k-means over the structure splits the communities; written back on any node.
    let clustered = c.post(
        follower,
        &format!("/v1/cluster?space={SPACE}"),
        json!({ "k": 2, "embedding_kind": "structural", "write_back": true, "name": "community" }),
    );
    assert_eq!(clustered.status, 200, "{clustered:?}");
    let body = &clustered.body;
    assert_eq!(body["points"], atoms, "{body}");
    let clusters = body["clusters"].as_array().unwrap();
    let members = |i: usize| -> BTreeSet<u64> {
        clusters[i]["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect()
    };
    let (first, second) = (members(0), members(1));
    let (with_a, with_b) = if first.contains(&ids[5]) { (&first, &second) } else { (&second, &first) };
    assert!(community_a.is_subset(with_a), "community a split: {with_a:?} / {with_b:?}");
    assert!(community_b.is_subset(with_b), "community b split: {with_a:?} / {with_b:?}");
    let written = &body["write_back"];
    assert_eq!(written["links"], atoms, "{written}");
    assert_eq!(written["skipped_members"], 0, "{written}");
    let concepts = written["concepts"].as_array().unwrap();
    assert_eq!(concepts.len(), 2);
    let concept_of_a = concepts
        .iter()
        .find(|k| {
            k["index"]
                == clusters
                    .iter()
                    .position(|x| x["members"].as_array().unwrap().iter().any(|m| m["id"] == ids[5]))
                    .unwrap()
        })
        .unwrap();
    assert!(concept_of_a["name"].as_str().unwrap().starts_with("community-"), "{concept_of_a}");
    let concept_id = concept_of_a["id"].as_u64().unwrap();
    c.converged(&[1, 2, 3]);
    for n in 1..=3 {
        let incoming = c.get(n, &format!("/v1/atoms/{concept_id}/incoming?space={SPACE}&limit=1000"));
        assert_eq!(incoming.status, 200, "{incoming:?}");
        let links = incoming.body["incoming"].as_array().unwrap();
        assert_eq!(links.len(), with_a.len(), "node {n}: the concept's memberships");
        assert!(links.iter().all(|l| l["type"] == "MemberLink"), "node {n}: {links:?}");
    }

    // Bad cluster requests.
    for (bad, status) in [
        (json!({ "k": 0, "embedding_kind": "structural" }), 400),
        (json!({ "k": 5000, "embedding_kind": "structural" }), 400),
        (json!({ "k": 999, "embedding_kind": "structural" }), 400),
        (json!({ "k": 2, "embedding_kind": "structural", "model": "planted" }), 400),
        (json!({ "k": 2, "embedding_kind": "structural", "max_iterations": 0 }), 400),
        (json!({ "k": 2, "embedding_kind": "sideways" }), 400),
        (json!({ "k": 2, "embedding_kind": "structural", "deadline_ms": 0 }), 400),
        (json!({ "k": 2, "embedding_kind": "structural", "deadline_ms": 3_600_000 }), 400),
        (json!({ "k": 2, "embedding_kind": "structural", "write_back": true, "name": " " }), 400),
        (json!({ "k": 2, "embedding_kind": "structural", "write_back": true, "name": "x".repeat(300) }), 400),
        (json!({ "k": 2, "model": "no-such-model" }), 404),
    ] {
        let refused = c.post(leader, &format!("/v1/cluster?space={SPACE}"), bad.clone());
        assert_eq!(refused.status, status, "{bad}: {refused:?}");
    }
    let text =
        c.post(leader, &format!("/v1/similar?space={SPACE}"), json!({ "text": "x", "kind": "structural" }));
    assert_eq!(text.status, 400, "{text:?}");
}
