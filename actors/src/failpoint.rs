//! Fault hooks for tests, compiled in only with the `failpoints` feature (as sled's and TiKV's
//! are). A test names the hooks to fire in `COGRAFT_FAILPOINTS` (comma-separated): `name` aborts
//! the process on the spot, as a crash would; `name=sleep:SECS` stalls the thread that reached
//! it for that long (an install at a million atoms; fractions allowed). Without the feature
//! `hit` is empty.

/// The environment variable listing the hooks to fire.
pub const ENV: &str = "COGRAFT_FAILPOINTS";

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    let Ok(armed) = std::env::var(ENV) else { return };
    for hook in armed.split(',').map(str::trim) {
        let (hook, action) = hook.split_once('=').unwrap_or((hook, "abort"));
        if hook != name {
            continue;
        }
        let secs = action.strip_prefix("sleep:").and_then(|secs| secs.parse::<f64>().ok());
        match secs.filter(|s| s.is_finite() && *s >= 0.0) {
            Some(secs) => {
                eprintln!("failpoint {name} fired: sleeping {secs} s");
                std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            }
            None => {
                eprintln!("failpoint {name} fired: aborting");
                std::process::abort();
            }
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
