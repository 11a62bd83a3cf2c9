//! `cograft bench compare` measures both systems for real: a short run against Debian's etcd
//! 3.4 (make installs it) and a 3-node cograft acknowledges writes on both, finds every
//! preloaded key on both, and times a leader kill on each. The figures themselves are for
//! `make bench`; here only that each was measured and is sane.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{bin, exclusive};

#[test]
fn bench_compare_measures_etcd_and_cograft_in_one_run() {
    let _one_at_a_time = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let base = 27_000 + (std::process::id() % 1000) as u16 * 3;
    let mut child = Command::new(bin())
        .args(["bench", "--base-port", &base.to_string(), "--dir"])
        .arg(dir.path())
        .args(["compare", "--seconds", "1", "--load-seconds", "2", "--clients", "8", "--keys", "200"])
        .args(["--kills", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bench stops both clusters itself, also when it fails; past the deadline it is killed
    // (its nodes die with it: they were started with the parent-death signal).
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bench compare did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench compare failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("cograft/etcd"), "no comparison table: {text}");

    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("compare.json")).unwrap()).unwrap();
    for system in ["etcd", "cograft"] {
        let m = &report[system];
        for phase in ["writes_one_client", "writes_many_clients", "reads_leader", "reads_follower"] {
            let f = &m[phase];
            assert!(f["ok"].as_u64().unwrap() > 0, "{system} {phase}: nothing acknowledged: {f}");
            let (p50, p99) = (f["p50_ms"].as_f64().unwrap(), f["p99_ms"].as_f64().unwrap());
            assert!(p50 > 0.0 && p50 <= p99, "{system} {phase}: latencies {p50} / {p99}");
        }
        for phase in ["reads_leader", "reads_follower"] {
            // Every read asks for a preloaded key: a miss would mean the reads measure nothing.
            assert_eq!(m[phase]["errors"], 0, "{system} {phase}: {}", m[phase]);
        }
        assert_eq!(m["writes_many_clients"]["clients"], 8);
        assert!(m["elections_during_load"].is_u64(), "{system}: {m}");
        let failover = m["failover_ms"].as_array().unwrap();
        assert_eq!(failover.len(), 1, "{system}: {m}");
        let ms = failover[0].as_f64().unwrap();
        assert!(ms > 0.0 && ms < 30_000.0, "{system}: failover {ms} ms");
    }
}
