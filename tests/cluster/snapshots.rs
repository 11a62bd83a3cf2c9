//! Snapshot installs under crashes: a follower that dies in the middle of installing the
//! leader's snapshot restarts on the state it had before (its manifest check passes) and
//! catches up with a fresh install. Needs the `failpoints` feature (`make cluster-tests`).

use std::time::Duration;

use crate::harness::{wait_until, Cluster};

#[test]
fn a_follower_killed_mid_install_restarts_and_catches_up() {
    let mut c = Cluster::start(
        3,
        &[
            ("COGRAFT__RAFT__SNAPSHOT_AFTER_ENTRIES", "20"),
            ("COGRAFT__RAFT__KEEP_ENTRIES_AFTER_SNAPSHOT", "0"),
        ],
    );
    let leader = c.leader();
    let follower = *c.running().iter().find(|id| **id != leader).unwrap();
    for i in 0..10 {
        assert_eq!(c.add_atom(leader, &format!("before-{i}")).status, 201);
    }
    c.converged(&[1, 2, 3]);
    let behind = c.status(follower)["last_log_index"].as_u64().unwrap();
    c.kill9(follower);
    for i in 0..80 {
        assert_eq!(c.add_atom(leader, &format!("while-down-{i}")).status, 201);
    }
    wait_until("the leader to purge past the follower's log", Duration::from_secs(30), || {
        (c.status(leader)["purged_index"].as_u64().unwrap_or(0) > behind).then_some(())
    });

    // The follower receives the snapshot and dies with every row written to its new trees,
    // before it switches to them.
    let status = c.start_expecting_exit_with(
        follower,
        &[("COGRAFT_FAILPOINTS", "snapshot_install_midway")],
        Duration::from_secs(60),
    );
    assert!(!status.success(), "the failpoint aborts the node: {status}");
    assert!(c.log_of(follower).contains("failpoint snapshot_install_midway fired"), "{}", c.log_of(follower));

    // It restarts (not refused: its old state is whole), redoes the install from the snapshot
    // file it had received, and converges.
    c.restart(follower);
    let log = c.log_of(follower);
    assert!(!log.contains("refuses to start"), "{log}");
    assert!(log.contains("redoing the snapshot install a crash interrupted"), "{log}");
    c.converged(&[1, 2, 3]);
    let s = c.status(follower);
    assert!(s["snapshot_index"].as_u64().unwrap_or(0) > behind, "{s}");
}
