//! `cograft cluster up` never orphans its nodes: stopped during start-up (a new user's Ctrl-C
//! as soon as the leader is reported, or a SIGTERM), or killed with -9, it leaves no node
//! running and every port free for the next `cluster up`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{bin, exclusive, wait_until};

/// Pids of the `cograft serve` processes whose settings live under `dir`.
fn nodes_of(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" serve ") && cmdline.contains(&needle) {
            pids.push(pid);
        }
    }
    pids
}

/// Kills whatever this test left behind (the assertions come first; this is the safety net).
struct Cleanup<'a>(&'a Path, Option<Child>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.1.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in nodes_of(self.0) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Starts `cluster up` and reads its output until a line contains `until`. The caller waits
/// for the child it gets back; on failure the [`Cleanup`] guard kills what is left.
#[allow(clippy::zombie_processes)]
fn start_until(dir: &Path, base_port: u16, until: &str) -> Child {
    let mut child = Command::new(bin())
        .args(["cluster", "up", "--nodes", "3", "--base-port", &base_port.to_string(), "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cluster up ended before printing {until:?}: {seen:?}");
        }
        seen.push(line.clone());
        if line.contains(until) {
            std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
            return child;
        }
    }
}

fn wait_exit(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "cluster up did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_nothing_left(dir: &Path, base_port: u16) {
    wait_until("every node of the stopped cluster to exit", Duration::from_secs(30), || {
        nodes_of(dir).is_empty().then_some(())
    });
    for port in base_port..base_port + 3 {
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is still taken");
    }
}

#[test]
fn cluster_up_stopped_during_start_up_or_killed_leaves_no_node_behind() {
    let _one_at_a_time = exclusive();
    let dir = tempfile::tempdir().unwrap();
    let base = 24_000 + (std::process::id() % 1500) as u16 * 3;
    let mut guard = Cleanup(dir.path(), None);

    // SIGTERM while the nodes are still starting (before any leader exists).
    #[allow(clippy::zombie_processes)] // waited for by `wait_exit`
    let mut child = Command::new(bin())
        .args(["cluster", "up", "--nodes", "3", "--base-port", &base.to_string(), "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the first node to be spawned", Duration::from_secs(30), || {
        (!nodes_of(dir.path()).is_empty()).then_some(())
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    wait_exit(&mut child);
    assert_nothing_left(dir.path(), base);

    // Ctrl-C (SIGINT to `cluster up` alone) as soon as the leader is reported.
    let mut child = start_until(dir.path(), base, "leads");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    wait_exit(&mut child);
    assert_nothing_left(dir.path(), base);

    // kill -9 of `cluster up`: the nodes die with it.
    let child = start_until(dir.path(), base, "Ctrl-C");
    assert_eq!(nodes_of(dir.path()).len(), 3);
    guard.1 = Some(child);
    let child = guard.1.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_nothing_left(dir.path(), base);
}
