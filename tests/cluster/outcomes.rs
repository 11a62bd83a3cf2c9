//! Anomalies in the outcome history, through a 3-node cluster: observations written on the
//! leader, with a slow run, a nearly empty one and a failure streak planted among ordinary ones;
//! every node (a follower too, linearizably) names exactly the planted ones, with reasons; bad
//! parameters get 400.

use serde_json::{json, Value};

use crate::harness::Cluster;

#[test]
fn planted_anomalies_are_found_on_every_node_and_inliers_are_not() {
    let c = Cluster::start(3, &[]);
    let leader = c.leader();
    let mut planted = Vec::new();
    for i in 1..=60u64 {
        let (mut success, mut duration, mut bytes) = (i % 7 != 0, 100 + (i * 13) % 40, 1000 + (i * 7) % 20);
        match i {
            10 => duration = 5000,
            30 => bytes = 1,
            41..=44 => success = false,
            _ => {}
        }
        let body = json!({ "subject": "nightly.backup", "success": success, "duration_ms": duration, "bytes": bytes });
        let reply = c.post(leader, "/v1/observations?space=ops", body);
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        if [10, 30, 41, 42, 43, 44].contains(&i) {
            planted.push(reply.body["id"].as_u64().unwrap());
        }
    }
    // Another subject's outliers are not this one's.
    c.post(
        leader,
        "/v1/observations?space=ops",
        json!({ "subject": "other", "success": false, "duration_ms": 99999 }),
    );
    for node in 1..=3 {
        let reply = c.get(node, "/v1/anomalies?space=ops&subject=nightly.backup");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let b = &reply.body;
        assert_eq!(b["observations"], 60, "node {node}: {b}");
        let mut ids: Vec<u64> =
            b["anomalies"].as_array().unwrap().iter().map(|a| a["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids, planted, "node {node}: {b}");
        let first = &b["anomalies"][0];
        assert_eq!(first["duration_ms"], 5000, "the slow run ranks first: {b}");
        let reason = first["reasons"][0].as_str().unwrap();
        assert_eq!(reason, "duration 5000 ms is 313.4 robust deviations above the median 121.5 ms");
        let second_of_streak =
            b["anomalies"].as_array().unwrap().iter().find(|a| a["id"] == planted[3]).unwrap();
        let reason = second_of_streak["reasons"][0].as_str().unwrap();
        let expected =
            format!("failure 2 of a streak of 4 failures in a row (from observation {})", planted[2]);
        assert_eq!(reason, expected, "{second_of_streak}");
        assert!(b["applied_index"].as_u64().unwrap() > 0);
    }
    // A stricter threshold and a longer streak find only the slow and the empty run.
    let strict = c.get(leader, "/v1/anomalies?space=ops&subject=nightly.backup&min_streak=5");
    let n = strict.body["anomalies"].as_array().unwrap().len();
    assert_eq!(n, 2, "{:?}", strict.body);
    for (query, needle) in [
        ("subject=nightly.backup&window=0", "window"),
        ("subject=nightly.backup&window=10001", "window"),
        ("subject=nightly.backup&threshold=-1", "threshold"),
        ("subject=nightly.backup&min_streak=1", "min_streak"),
        ("window=5", "subject"),
    ] {
        let reply = c.get(leader, &format!("/v1/anomalies?space=ops&{query}"));
        assert_eq!(reply.status, 400, "{query} -> {:?}", reply.body);
        assert!(
            reply.body["detail"].as_str().unwrap_or_default().contains(needle),
            "{query} -> {:?}",
            reply.body
        );
    }
    let empty: Value = c.get(leader, "/v1/anomalies?space=ops&subject=never.seen").body;
    assert_eq!(empty["anomalies"], json!([]));
    assert!(empty["note"].as_str().unwrap().contains("at least 8"), "{empty}");
}
