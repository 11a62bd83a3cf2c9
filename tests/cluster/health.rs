//! The health monitor on a live node: `/admin/health` reports every check (the components'
//! too) and the metrics carry each verdict; a spreading index that stops following the state
//! machine (a fault hook stalls its thread, so the `failpoints` feature is needed) is reported
//! Unhealthy within 30 s while `/readyz` keeps answering 200; a slow probe spread is Degraded.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{wait_until, Cluster};

/// The named check of a node's health report, once the monitor ran it.
fn check(c: &Cluster, node: u64, name: &str) -> Option<Value> {
    let reply = c.get(node, "/admin/health");
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.body["checks"].as_array()?.iter().find(|ch| ch["name"] == name).cloned()
}

fn metrics(c: &Cluster, node: u64) -> String {
    c.get(node, "/metrics").body.as_str().unwrap_or_default().to_string()
}

#[test]
fn a_healthy_node_reports_every_check_healthy_with_its_probe() {
    let c = Cluster::start(3, &[("COGRAFT__HEALTH__INTERVAL_MS", "200")]);
    let leader = c.leader();
    c.add_atom(leader, "cat");
    let report = wait_until("the monitor to find the leader healthy", Duration::from_secs(20), || {
        let body = c.get(leader, "/admin/health").body;
        (body["status"] == "healthy" && body["history"].as_array().is_some_and(|h| h.len() >= 2))
            .then_some(body)
    });
    let names: Vec<&str> =
        report["checks"].as_array().unwrap().iter().map(|ch| ch["name"].as_str().unwrap()).collect();
    for name in [
        "raft_actor",
        "storage_actor",
        "serving",
        "leader_known",
        "storage_writable",
        "applied_caught_up",
        "spreading",
        "quorum_contact",
        "replication_lag",
        "disk_space",
    ] {
        assert!(names.contains(&name), "{name} missing from {report}");
    }
    assert_eq!(report["score"], 1.0, "{report}");
    // The first run may have come before the election: the trend can only rise from there.
    assert!(["unknown", "steady", "improving"].contains(&report["trend"].as_str().unwrap()), "{report}");
    let spreading = check(&c, leader, "spreading").unwrap();
    assert_eq!(spreading["probe"], "report", "{spreading}");
    assert!(spreading["detail"].as_str().unwrap().contains("probe spread"), "{spreading}");
    let quorum = check(&c, leader, "quorum_contact").unwrap();
    assert!(quorum["detail"].as_str().unwrap().contains("a quorum acknowledged"), "{quorum}");
    let lag = check(&c, leader, "replication_lag").unwrap();
    assert!(lag["detail"].as_str().unwrap().contains("2 followers within"), "{lag}");
    let follower = c.running().into_iter().find(|n| *n != leader).unwrap();
    let theirs =
        wait_until("a follower's report", Duration::from_secs(20), || check(&c, follower, "quorum_contact"));
    assert_eq!(theirs["detail"], "not the leader", "{theirs}");
    let m = metrics(&c, leader);
    assert!(m.contains("cograft_health_check_status{check=\"spreading\"} 0"), "{m}");
    assert!(m.contains("cograft_health_status 0"), "{m}");
    assert!(m.contains("cograft_health_score 1.0"), "{m}");
}

#[test]
fn a_spreading_index_that_stops_following_is_unhealthy_within_30_s_and_readiness_holds() {
    // The index thread stalls at the first announcement it folds: from then on the index stays
    // where its build left it while the node goes on applying.
    let c = Cluster::start(
        1,
        &[
            ("COGRAFT_FAILPOINTS", "spreading_index_follow=sleep:600"),
            ("COGRAFT__HEALTH__INTERVAL_MS", "500"),
            ("COGRAFT__SPREADING__INDEX_STALL_MS", "3000"),
        ],
    );
    assert_eq!(c.add_atom(1, "cat").status, 201);
    let written = Instant::now();
    let mut saw_degraded = false;
    let unhealthy = wait_until("spreading to be reported unhealthy", Duration::from_secs(30), || {
        assert_eq!(c.get(1, "/readyz").status, 200, "a spreading problem never fails readiness");
        let spreading = check(&c, 1, "spreading")?;
        saw_degraded |= spreading["status"] == "degraded";
        (spreading["status"] == "unhealthy").then_some(spreading)
    });
    println!("spreading unhealthy {:.1} s after the write: {unhealthy}", written.elapsed().as_secs_f64());
    assert!(saw_degraded, "a first failure is Degraded, repeated ones Unhealthy");
    let detail = unhealthy["detail"].as_str().unwrap();
    assert!(detail.contains("no longer follows the state machine"), "{detail}");
    assert_eq!(c.get(1, "/admin/health").body["status"], "unhealthy");
    assert!(metrics(&c, 1).contains("cograft_health_check_status{check=\"spreading\"} 2"));
    assert_eq!(c.get(1, "/healthz").status, 200, "nor liveness");
}

#[test]
fn a_slow_probe_spread_is_degraded_and_never_unhealthy() {
    let c = Cluster::start(
        1,
        &[("COGRAFT_FAILPOINTS", "spread_walk=sleep:0.08"), ("COGRAFT__HEALTH__INTERVAL_MS", "200")],
    );
    let first = wait_until("a slow probe to be reported", Duration::from_secs(20), || {
        check(&c, 1, "spreading").filter(|s| s["status"] == "degraded")
    });
    assert!(first["detail"].as_str().unwrap().contains("limit 50 ms"), "{first}");
    let later = wait_until("more slow probes", Duration::from_secs(20), || {
        check(&c, 1, "spreading").filter(|s| s["runs"].as_u64().unwrap_or(0) >= 4)
    });
    assert_eq!(later["status"], "degraded", "slowness alone never escalates: {later}");
    assert_eq!(c.get(1, "/readyz").status, 200);
}

#[test]
fn a_leader_cut_off_from_its_quorum_reports_it_and_the_score_and_trend_fall() {
    let mut c = Cluster::start(3, &[("COGRAFT__HEALTH__INTERVAL_MS", "200")]);
    let leader = c.leader();
    wait_until("the leader's score to settle at 1", Duration::from_secs(20), || {
        let body = c.get(leader, "/admin/health").body;
        (body["score"] == 1.0 && body["history"].as_array().is_some_and(|h| h.len() >= 10)).then_some(())
    });
    for follower in c.running().into_iter().filter(|n| *n != leader) {
        c.kill9(follower);
    }
    let quorum = wait_until("the leader to report its lost quorum", Duration::from_secs(30), || {
        check(&c, leader, "quorum_contact").filter(|q| q["status"] == "unhealthy")
    });
    assert!(quorum["detail"].as_str().unwrap().contains("no quorum acknowledged"), "{quorum}");
    let report = c.get(leader, "/admin/health").body;
    assert!(report["score"].as_f64().unwrap() < 1.0, "{report}");
    assert_eq!(report["trend"], "worsening", "{report}");
}
