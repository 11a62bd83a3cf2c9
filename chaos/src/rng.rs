//! A tiny seeded PRNG (xorshift64*), so every run is replayable from its seed.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with `probability`: always at >= 1, never at <= 0 or NaN.
    pub fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// `mean` ± uniform `jitter`, floored at zero.
    pub fn jittered(
        &mut self,
        mean: std::time::Duration,
        jitter: std::time::Duration,
    ) -> std::time::Duration {
        use std::time::Duration;
        let jitter_nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX / 2).min(u64::MAX / 2);
        let offset = match jitter_nanos {
            0 => 0,
            j => self.next_u64() % (2 * j + 1),
        };
        mean.saturating_add(Duration::from_nanos(offset)).saturating_sub(Duration::from_nanos(jitter_nanos))
    }

    /// Uniform in lo..=hi milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> std::time::Duration {
        std::time::Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}
