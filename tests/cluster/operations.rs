//! What operators use: `cograft cluster up` (and its restart on the same directory), a node
//! restarted by hand with `serve --data-dir`, the admin CLI, /metrics, /healthz and /readyz.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::harness::{wait_until, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_cograft");

/// A process this test started: SIGTERM on drop (so `cluster up` stops its nodes), also when
/// the test fails; SIGKILL if it does not exit within 30 s.
struct Proc(Child);

impl Proc {
    /// SIGTERM and wait; answers whether it exited successfully.
    fn stop(&mut self) -> bool {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let exited = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if std::time::Instant::now() < exited => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.0.kill();
                    let _ = self.0.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Runs `cluster up` until it prints the Ctrl-C hint; answers the process and what it printed.
fn cluster_up(dir: &std::path::Path, base_port: u16) -> (Proc, Vec<String>) {
    let child = Command::new(BIN)
        .args(["cluster", "up", "--nodes", "3", "--base-port", &base_port.to_string(), "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Proc(child);
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("cluster up ended early: {lines:?}");
        }
        let done = line.contains("Ctrl-C");
        lines.push(line.trim_end().to_string());
        if done {
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return (child, lines);
        }
    }
}

fn stop(mut child: Proc) {
    assert!(child.stop(), "cluster up did not exit cleanly on SIGTERM");
}

#[test]
fn cluster_up_restarts_with_its_data_and_nodes_rejoin_by_hand() {
    let _one_at_a_time = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let base = 21_000 + (std::process::id() % 2000) as u16 * 3;
    let http = Client::new();
    let (child, lines) = cluster_up(dir.path(), base);
    assert!(lines[0].contains("node") && lines[0].contains("leads"), "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.contains(&format!("127.0.0.1:{base}"))).count(), 1, "{lines:?}");
    let addr = |i: u16| format!("http://127.0.0.1:{}", base + i - 1);
    let r: Value = http
        .post(format!("{}/v1/atoms", addr(2)))
        .json(&json!({ "type": "ConceptNode", "name": "kept" }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = r["id"].as_u64().unwrap();
    stop(child);

    // The same directory brings the same cluster back, with its data and without a new init.
    let (child, _) = cluster_up(dir.path(), base);
    let got = http.get(format!("{}/v1/atoms/{id}", addr(3))).send().unwrap();
    assert_eq!(got.status().as_u16(), 200);
    stop(child);

    // One node restarted by hand from its directory rejoins with its persisted settings.
    let node_dir = dir.path().join("1");
    let mut node = Proc(
        Command::new(BIN)
            .args(["serve", "--node-id", "1", "--listen", &format!("127.0.0.1:{base}"), "--data-dir"])
            .arg(&node_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status: Value = wait_until("node 1 to answer", Duration::from_secs(30), || {
        http.get(format!("{}/admin/status", addr(1))).send().ok()?.json().ok()
    });
    assert_eq!(status["membership"]["voters"], json!([1, 2, 3]), "{status}");
    let stale = http.get(format!("{}/v1/atoms/{id}?consistency=stale", addr(1))).send().unwrap();
    assert_eq!(stale.status().as_u16(), 200);
    assert!(node.stop(), "the hand-started node did not exit cleanly");
}

#[test]
fn probes_metrics_and_admin_cli() {
    let c = Cluster::start(3, &[]);
    c.add_atom(1, "measured");
    for node in 1..=3 {
        let ready = c.get(node, "/readyz");
        assert_eq!(ready.status, 200, "{ready:?}");
        assert_eq!(c.get(node, "/healthz").status, 200);
    }
    let metrics =
        c.http.get(format!("http://{}/metrics", c.addr(c.leader()))).send().unwrap().text().unwrap();
    for family in [
        "cograft_raft_term",
        "cograft_raft_role{role=\"leader\"} 1",
        "cograft_raft_last_applied_index",
        "cograft_raft_elections_total",
        "cograft_storage_log_append_seconds_count",
        "cograft_storage_log_flush_seconds_count",
        "cograft_storage_log_flush_batch_writes_count",
        "cograft_storage_apply_seconds_count",
        "cograft_storage_committed_index",
        "cograft_storage_snapshot_install_seconds_count",
        "cograft_raft_writes_queued",
        "cograft_http_requests_total{method=\"POST\",route=\"/v1/atoms\",status=\"201\"} 1",
        "# EOF",
    ] {
        assert!(metrics.contains(family), "/metrics lacks {family}:\n{metrics}");
    }

    // The admin CLI against a follower.
    let follower = c.running().into_iter().find(|id| *id != c.leader()).unwrap();
    let out = Command::new(BIN).args(["admin", "status", "--addr", &c.addr(follower)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["role"], "follower");
    let out = Command::new(BIN).args(["admin", "digest", "--addr", &c.addr(1)]).output().unwrap();
    let digest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(digest["digest"].as_str().map(str::len), Some(64));
    let out = Command::new(BIN)
        .args(["atom", "add", "--type", "ConceptNode", "--name", "from-cli", "--addr", &c.addr(follower)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let atom: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(atom["name"], "from-cli");
    let out = Command::new(BIN).args(["admin", "status", "--addr", "127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success(), "a CLI call to a closed port succeeded");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"),
        "the error does not name the address"
    );
}

#[test]
fn an_uninitialised_node_is_live_but_not_ready() {
    let _one_at_a_time = crate::harness::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut node = Proc(
        Command::new(BIN)
            .args(["serve", "--node-id", "9", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = Client::new();
    let health = wait_until("the node to answer", Duration::from_secs(30), || {
        http.get(format!("http://127.0.0.1:{port}/healthz")).send().ok()
    });
    assert_eq!(health.status().as_u16(), 200);
    let ready = http.get(format!("http://127.0.0.1:{port}/readyz")).send().unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().unwrap();
    let failing: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(failing, vec!["leader_known"], "{body}");
    // A misspelled init body is refused, not read as "this node alone".
    let r = http
        .post(format!("http://127.0.0.1:{port}/admin/init"))
        .json(&json!({ "membrs": { "9": format!("127.0.0.1:{port}") } }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().unwrap();
    assert!(body["detail"].as_str().unwrap_or_default().contains("membrs"), "{body}");
    // A write without a cluster fails clearly instead of hanging.
    let r = http
        .post(format!("http://127.0.0.1:{port}/v1/atoms"))
        .json(&json!({ "type": "T", "name": "n" }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(node.stop(), "the node did not exit cleanly");

    // Invalid configuration is refused at start, naming the key.
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("COGRAFT__RAFT__HEARTBEAT_MS", "900")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("raft.election_timeout_min_ms") && err.contains("raft.heartbeat_ms"), "{err}");
}
