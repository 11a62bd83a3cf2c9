//! [`Reached`]: the applied index an in-memory index built from the state machine reflects,
//! published so that a read which must see a given index (a linearizable read after its
//! barrier, a build that must include every acknowledged write) can wait for it.

use std::time::Duration;

use tokio::sync::watch;

/// The applied index an index reflects; 0 until its first build.
pub struct Reached(watch::Sender<u64>);

impl Default for Reached {
    fn default() -> Self {
        Reached(watch::Sender::new(0))
    }
}

impl Reached {
    /// Waits until the index reflects applied index `index` or later; answers the index it
    /// reflects then, or `Err` with where it stands after `patience`.
    pub async fn reaches(&self, index: u64, patience: Duration) -> Result<u64, u64> {
        let mut rx = self.0.subscribe();
        let reached = match tokio::time::timeout(patience, rx.wait_for(|at| *at >= index)).await {
            Ok(Ok(at)) => Some(*at),
            _ => None,
        };
        reached.ok_or_else(|| *self.0.borrow())
    }

    /// The index now reflects applied index `at` (it may go back, after a rebuild from an
    /// installed snapshot).
    pub fn set(&self, at: u64) {
        self.0.send_if_modified(|now| {
            let moved = *now != at;
            *now = at;
            moved
        });
    }

    pub fn get(&self) -> u64 {
        *self.0.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_the_index_arrives_or_patience_runs_out() {
        let reached = std::sync::Arc::new(Reached::default());
        assert_eq!(reached.reaches(0, Duration::ZERO).await, Ok(0));
        assert_eq!(reached.reaches(3, Duration::from_millis(20)).await, Err(0));
        let setter = reached.clone();
        let waiting = tokio::spawn(async move { setter.reaches(5, Duration::from_secs(30)).await });
        reached.set(4);
        reached.set(7);
        assert_eq!(waiting.await.unwrap(), Ok(7));
        assert_eq!(reached.get(), 7);
    }
}
