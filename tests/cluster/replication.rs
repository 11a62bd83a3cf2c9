//! Writes through the leader and through followers; every write is immediately readable
//! (linearizably) from every node.

use serde_json::Value;

use crate::harness::Cluster;

#[test]
fn writes_through_any_node_are_read_linearizably_from_every_node() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader();
    let mut written: Vec<(u64, String)> = Vec::new();
    for round in 0..4 {
        for via in 1..=3 {
            let name = format!("concept-{round}-via-{via}");
            let r = c.add_atom(via, &name);
            assert_eq!(r.status, 201, "write via node {via}: {r:?}");
            assert_eq!(r.body["leader_id"].as_u64(), Some(leader), "the reply names the leader");
            let id = r.body["id"].as_u64().unwrap();
            // Read it back at once from every node, the writer's peers included.
            for node in 1..=3 {
                let got = c.get(node, &format!("/v1/atoms/{id}"));
                assert_eq!(got.status, 200, "read of atom {id} on node {node}: {got:?}");
                assert_eq!(got.body["name"], Value::from(name.clone()), "node {node} answered another atom");
                assert!(got.body["applied_index"].as_u64().unwrap() >= r.body["index"].as_u64().unwrap());
            }
            written.push((id, name));
        }
    }
    // Lookups by (type, name) agree too, and a stale read reports the index it reflects.
    for (id, name) in &written {
        for node in 1..=3 {
            let found = c.get(node, &format!("/v1/atoms?type=ConceptNode&name={name}"));
            assert_eq!(found.body["atoms"][0]["id"].as_u64(), Some(*id), "{found:?}");
        }
    }
    // A list capped by `limit` says so.
    let page = c.get(3, "/v1/atoms?type=ConceptNode&limit=5");
    assert_eq!(page.body["atoms"].as_array().map(Vec::len), Some(5));
    assert_eq!((page.body["limit"].as_u64(), page.body["truncated"].as_bool()), (Some(5), Some(true)));
    let all = c.get(3, "/v1/atoms?type=ConceptNode&limit=1000");
    assert_eq!(all.body["atoms"].as_array().map(Vec::len), Some(written.len()));
    assert_eq!(all.body["truncated"], false);
    let stale = c.get(2, &format!("/v1/atoms/{}?consistency=stale", written[0].0));
    assert_eq!(stale.status, 200);
    assert!(stale.body["applied_index"].as_u64().is_some());
    c.converged(&[1, 2, 3]);
}
