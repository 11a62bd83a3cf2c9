//! Snapshot installs under crashes and stalls: a follower that dies in the middle of installing
//! the leader's snapshot restarts on the state it had before (its manifest check passes) and
//! catches up with a fresh install; one whose install takes long while writes go on does not
//! keep the calls the leader gave up on. Needs the `failpoints` feature (`make cluster-tests`).

use std::time::Duration;

use crate::harness::{wait_until, Cluster};

/// A 3-node cluster with a follower, down, that missed entries the leader purged: its restart
/// catches up by snapshot. Answers the cluster, the follower and its log index before.
fn follower_behind_a_purge() -> (Cluster, u64, u64) {
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
    (c, follower, behind)
}

#[test]
fn a_follower_killed_mid_install_restarts_and_catches_up() {
    let (mut c, follower, behind) = follower_behind_a_purge();

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

/// While a follower installs a snapshot, openraft 0.9 holds back its answers to the leader's
/// appends of the entries after it, and actix kept each handler (and its socket) running after
/// the leader gave up on it (after 100 ms): at WordNet size the install took minutes and the
/// follower ran out of file descriptors (19,979 sockets, ~11,000 in CLOSE-WAIT), then its next
/// sync failed for good. Peer calls now carry their deadline and the follower lets go of a call
/// the leader stopped waiting for.
#[test]
fn a_long_install_does_not_keep_the_calls_the_leader_gave_up_on() {
    let (mut c, follower, behind) = follower_behind_a_purge();
    let leader = c.leader();
    c.restart_with(follower, &[("COGRAFT_FAILPOINTS", "snapshot_install_midway=sleep:20")]);
    wait_until("the install to stall", Duration::from_secs(60), || {
        c.log_of(follower).contains("failpoint snapshot_install_midway fired").then_some(())
    });
    // Writes go on meanwhile, so the leader sends the follower entries after the snapshot.
    let started = std::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(12) {
        assert_eq!(c.add_atom(leader, &format!("during-install-{i}")).status, 201);
        i += 1;
    }
    let fds = std::fs::read_dir(format!("/proc/{}/fd", c.pid(follower))).unwrap();
    let sockets = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count();
    assert!(sockets < 40, "{sockets} sockets open on the follower while its install stalls");
    let target = c.status(leader)["last_log_index"].as_u64().unwrap();
    wait_until("the follower to finish its install and catch up", Duration::from_secs(90), || {
        (c.status(follower)["last_applied_index"].as_u64()? >= target).then_some(())
    });
    assert!(c.status(follower)["snapshot_index"].as_u64().unwrap_or(0) > behind);
}
