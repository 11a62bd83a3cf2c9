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
    let c = Cluster::start(1, &[("COGRAFT__HEALTH__INTERVAL_MS", "200")]);
    c.add_atom(1, "cat");
    let report = wait_until("the monitor to find the node healthy", Duration::from_secs(20), || {
        let body = c.get(1, "/admin/health").body;
        (body["status"] == "healthy").then_some(body)
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
    ] {
        assert!(names.contains(&name), "{name} missing from {report}");
    }
    let spreading = check(&c, 1, "spreading").unwrap();
    assert_eq!(spreading["probe"], "report", "{spreading}");
    assert!(spreading["detail"].as_str().unwrap().contains("probe spread"), "{spreading}");
    let m = metrics(&c, 1);
    assert!(m.contains("cograft_health_check_status{check=\"spreading\"} 0"), "{m}");
    assert!(m.contains("cograft_health_status 0"), "{m}");
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
