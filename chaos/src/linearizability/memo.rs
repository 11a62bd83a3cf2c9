//! The search's bookkeeping: the set of placed operations as a bitset, the compact exact key
//! under which a (placed set, register state) configuration is remembered, and a fast hasher.

use std::hash::Hasher;

use super::search::State;

/// A fixed-size set of operation numbers.
pub(super) struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    pub(super) fn new(bits: usize) -> Bitset {
        Bitset { words: vec![0; bits.div_ceil(64)] }
    }

    pub(super) fn insert(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    pub(super) fn contains(&self, bit: usize) -> bool {
        self.words[bit / 64] & (1 << (bit % 64)) != 0
    }

    pub(super) fn remove(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }
}

/// A configuration already explored: the set of placed operations and the register state.
///
/// The set is stored exactly but compactly. Every operation below `first_unplaced` is placed
/// and none at or above `high` is, so the words before `lo_word` are all ones, the words from
/// `high` on are all zeros, and only the window between them (a few words: about as many
/// operations as ran concurrently) needs keeping. Given the set, the window is unique.
#[derive(Hash, PartialEq, Eq)]
pub(super) struct MemoKey {
    lo_word: usize,
    state: State,
    window: Box<[u64]>,
}

impl MemoKey {
    pub(super) fn new(placed: &Bitset, first_unplaced: usize, high: usize, state: State) -> MemoKey {
        let lo_word = first_unplaced / 64;
        let end_word = high.div_ceil(64).max(lo_word);
        MemoKey { lo_word, state, window: placed.words[lo_word..end_word].into() }
    }
}

/// A fast multiply-rotate hasher for memo keys (no adversary chooses them, so no need for SipHash).
#[derive(Default)]
pub(super) struct MixHasher(u64);

impl MixHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.mix(word);
    }

    fn write_usize(&mut self, word: usize) {
        self.mix(word as u64);
    }

    fn finish(&self) -> u64 {
        // The table indexes by the low bits: fold the well-mixed high bits down.
        let x = self.0 ^ (self.0 >> 29);
        x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
    }
}
