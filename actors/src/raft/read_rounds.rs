//! Batched read-index rounds: one leadership confirmation (on the leader a quorum round of
//! heartbeats, openraft's `get_read_log_id`; on a follower one read-index call to the leader)
//! answers every linearizable read that was waiting when it started, as etcd batches its
//! ReadIndex requests. Without it each read paid its own round: two peer RPCs per read on the
//! leader, three for a read on a follower.
//!
//! A read that arrives while a round is running waits for the next one, which starts after the
//! read arrived: a round already under way may have been answered by a quorum before the read
//! arrived, and a newer leader could have committed writes since, which the read must see.
//! Rounds run one at a time, in a task of their own (on the Raft Arbiter, where the peer client
//! lives), so a reader that gives up does not cancel a round others wait for.

use std::future::Future;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

/// Where one reader waits for its round's answer.
type Reply<T> = oneshot::Sender<T>;

/// The rounds of one kind of confirmation.
pub struct Rounds<T> {
    state: Mutex<RoundsState<T>>,
    sizes: Histogram,
}

struct RoundsState<T> {
    running: bool,
    waiting: Vec<Reply<T>>,
}

impl<T: Clone + 'static> Rounds<T> {
    pub fn new(sizes: Histogram) -> Arc<Self> {
        Arc::new(Rounds { state: Mutex::new(RoundsState { running: false, waiting: Vec::new() }), sizes })
    }

    /// Waits for the next round to start and answers what it confirmed; `confirm` runs the
    /// round when none is running. `None` when the round ended without an answer (its task
    /// was dropped with the Arbiter: Raft is stopping).
    pub async fn join<F, Fut>(self: &Arc<Self>, confirm: F) -> Option<T>
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.waiting.push(reply);
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            let rounds = self.clone();
            actix::spawn(async move { rounds.run(confirm).await });
        }
        answer.await.ok()
    }

    /// Runs rounds until no reader waits.
    async fn run<F, Fut>(self: Arc<Self>, confirm: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut reset = Reset { state: &self.state, armed: true };
        loop {
            let readers = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if s.waiting.is_empty() {
                    s.running = false;
                    // Under the lock: a reader that comes next starts a round of its own.
                    reset.armed = false;
                    return;
                }
                std::mem::take(&mut s.waiting)
            };
            // Readers that gave up (their deadline passed) need no round.
            let readers: Vec<Reply<T>> = readers.into_iter().filter(|r| !r.is_closed()).collect();
            if readers.is_empty() {
                continue;
            }
            self.sizes.observe(readers.len() as f64);
            let answer = confirm().await;
            for reader in readers {
                let _ = reader.send(answer.clone());
            }
        }
    }
}

/// Resets the rounds however the running task ends (a panic in `confirm` included): readers
/// still waiting are let go (their `join` answers `None`), and the next reader starts a round.
struct Reset<'a, T> {
    state: &'a Mutex<RoundsState<T>>,
    armed: bool,
}

impl<T> Drop for Reset<'_, T> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.running = false;
        s.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    fn local<F: Future>(f: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, f)
    }

    /// A confirmation that counts its rounds and finishes when the test lets it.
    fn gated(rounds: Rc<Cell<u32>>, gate: Rc<tokio::sync::Notify>) -> impl Fn() -> BoxedRound + 'static {
        move || {
            let (rounds, gate) = (rounds.clone(), gate.clone());
            Box::pin(async move {
                rounds.set(rounds.get() + 1);
                let n = rounds.get();
                gate.notified().await;
                n
            })
        }
    }

    type BoxedRound = std::pin::Pin<Box<dyn Future<Output = u32>>>;

    #[test]
    fn readers_that_arrive_during_a_round_share_the_next_one() {
        local(async {
            let rounds = Rounds::new(Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0].into_iter()));
            let (count, gate) = (Rc::new(Cell::new(0)), Rc::new(tokio::sync::Notify::new()));
            let first = tokio::task::spawn_local({
                let (rounds, confirm) = (rounds.clone(), gated(count.clone(), gate.clone()));
                async move { rounds.join(confirm).await }
            });
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            assert_eq!(count.get(), 1, "the first reader started a round");
            let later: Vec<_> = (0..10)
                .map(|_| {
                    let (rounds, confirm) = (rounds.clone(), gated(count.clone(), gate.clone()));
                    tokio::task::spawn_local(async move { rounds.join(confirm).await })
                })
                .collect();
            tokio::task::yield_now().await;
            assert_eq!(count.get(), 1, "no second round while the first runs");
            gate.notify_one();
            assert_eq!(first.await.unwrap(), Some(1));
            tokio::task::yield_now().await;
            assert_eq!(count.get(), 2, "one round for the ten that waited");
            gate.notify_one();
            for reader in later {
                assert_eq!(reader.await.unwrap(), Some(2), "a reader got a round that began before it came");
            }
            let again = gated(count.clone(), gate.clone());
            gate.notify_one(); // a permit: the next round finishes at once
            assert_eq!(rounds.join(again).await, Some(3), "an idle rounds starts afresh");
        });
    }

    #[test]
    fn readers_that_gave_up_before_their_round_cost_no_round() {
        local(async {
            let rounds = Rounds::new(Histogram::new([1.0].into_iter()));
            let (count, gate) = (Rc::new(Cell::new(0)), Rc::new(tokio::sync::Notify::new()));
            let first = tokio::task::spawn_local({
                let (rounds, confirm) = (rounds.clone(), gated(count.clone(), gate.clone()));
                async move { rounds.join(confirm).await }
            });
            tokio::task::yield_now().await;
            let impatient = rounds.join(gated(count.clone(), gate.clone()));
            let gave_up = tokio::time::timeout(std::time::Duration::from_millis(10), impatient).await;
            assert!(gave_up.is_err(), "the second reader waited for the next round and gave up");
            gate.notify_one();
            assert_eq!(first.await.unwrap(), Some(1));
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            assert_eq!(count.get(), 1, "no round ran for a reader that had left");
        });
    }

    #[test]
    fn a_round_that_panics_lets_its_readers_go_and_the_next_reader_starts_anew() {
        local(async {
            let rounds: Arc<Rounds<u32>> = Rounds::new(Histogram::new([1.0].into_iter()));
            let panicking = || async { panic!("a confirmation that fails hard") };
            assert_eq!(rounds.join(panicking).await, None);
            assert_eq!(rounds.join(|| async { 7 }).await, Some(7));
        });
    }
}
