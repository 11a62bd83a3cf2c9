//! Fault hooks for tests, compiled in only with the `failpoints` feature (as sled's and TiKV's
//! are). A test names the hooks to fire in `COGRAFT_FAILPOINTS` (comma-separated); a hook that
//! fires aborts the process on the spot, as a crash would. Without the feature `hit` is empty.

/// The environment variable listing the hooks to fire.
pub const ENV: &str = "COGRAFT_FAILPOINTS";

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let armed = std::env::var(ENV).is_ok_and(|v| v.split(',').any(|n| n.trim() == name));
    if armed {
        eprintln!("failpoint {name} fired: aborting");
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
