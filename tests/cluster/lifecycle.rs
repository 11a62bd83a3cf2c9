//! Node lifecycle: SIGTERM exits 0 without losing acknowledged writes, the whole cluster
//! restarts from its directories with every atom, a node whose data file was damaged refuses
//! to start, naming the directory and the recovery, and one whose address is taken stops before
//! it opens anything, naming the address and the fix, without a panic.

use std::time::Duration;

use crate::harness::Cluster;

#[test]
fn sigterm_exits_zero_and_the_restarted_cluster_keeps_every_atom() {
    let mut c = Cluster::start(3, &[]);
    let mut acked = Vec::new();
    for i in 0..30 {
        let r = c.add_atom(1 + i % 3, &format!("durable-{i}"));
        assert_eq!(r.status, 201, "{r:?}");
        acked.push(r.body["id"].as_u64().unwrap());
    }
    let leader = c.leader();
    let follower = c.running().into_iter().find(|id| *id != leader).unwrap();
    for id in [follower, leader] {
        let status = c.sigterm(id);
        assert_eq!(status.code(), Some(0), "node {id} exited with {status}");
        assert!(c.log_of(id).contains("shutdown complete"), "node {id} did not log its shutdown phases");
    }
    // The last node has no quorum left; it must still stop cleanly.
    let last = c.running()[0];
    assert_eq!(c.sigterm(last).code(), Some(0));

    for id in 1..=3 {
        c.restart(id);
    }
    c.leader();
    for id in &acked {
        for node in 1..=3 {
            let r = c.get(node, &format!("/v1/atoms/{id}"));
            assert_eq!(r.status, 200, "atom {id} lost on node {node} after a full restart: {r:?}");
        }
    }
    assert_eq!(c.add_atom(2, "after-restart").status, 201);
    c.converged(&[1, 2, 3]);
}

#[test]
fn a_node_with_a_damaged_data_file_refuses_to_start() {
    let mut c = Cluster::start(3, &[]);
    for i in 0..40 {
        assert_eq!(c.add_atom(1, &format!("before-damage-{i}")).status, 201);
    }
    c.converged(&[1, 2, 3]);
    let victim = c.running().into_iter().find(|id| *id != c.leader()).unwrap();
    assert_eq!(c.sigterm(victim).code(), Some(0));
    let dir = c.nodes[&victim].dir.clone();
    let data_file = dir.join("sled").join("db");
    let mut bytes = std::fs::read(&data_file).unwrap();
    let (third, len) = (bytes.len() / 3, bytes.len());
    bytes[third..(third + 4096).min(len)].fill(0xff);
    std::fs::write(&data_file, bytes).unwrap();

    let status = c.start_expecting_exit(victim, Duration::from_secs(30));
    assert!(!status.success(), "a node on a damaged directory started");
    let log = c.log_of(victim);
    assert!(log.contains("is damaged"), "no damage message in the log:\n{log}");
    assert!(log.contains(&dir.display().to_string()), "the message does not name the directory");
    assert!(log.contains("re-add it as a learner"), "the message does not name the recovery");
    // The rest of the cluster keeps serving.
    assert_eq!(c.add_atom(c.leader(), "after-damage").status, 201);
}

#[test]
fn a_node_whose_address_is_taken_refuses_to_start_naming_it_without_a_panic() {
    let mut c = Cluster::start(1, &[]);
    assert_eq!(c.add_atom(1, "kept").status, 201);
    assert_eq!(c.sigterm(1).code(), Some(0));
    let addr = c.addr(1);
    let squatter = std::net::TcpListener::bind(&addr).expect("the node's address is free after it stopped");
    let log_before = c.log_of(1).len();

    let status = c.start_expecting_exit(1, Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "a node without its address exited with {status}");
    let log = c.log_of(1)[log_before..].to_string();
    assert!(
        log.contains(&format!("binding {addr} (node.listen)")),
        "the error does not name the address:\n{log}"
    );
    assert!(log.contains("COGRAFT__NODE__LISTEN"), "the error does not name the fix:\n{log}");
    assert!(!log.contains("panicked"), "the node panicked on its way out:\n{log}");
    assert!(!log.contains("node started"), "the node got as far as starting:\n{log}");

    // With the address free again it starts on its data.
    drop(squatter);
    c.restart(1);
    c.leader();
    let found = c.get(1, "/v1/atoms?type=ConceptNode&name=kept");
    assert_eq!(found.body["atoms"].as_array().map(Vec::len), Some(1), "{found:?}");
}
