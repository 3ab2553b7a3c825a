//! Uniqueness markers of epoch 0, kept per customer: for each customer (its dense global
//! number), the set of counters (dense global numbers) it was counted in.
//!
//! Why per customer: an event marks its customer in every one of its ~21 counters. In one
//! table keyed by (counter, customer) those ~21 slots are scattered over hundreds of MiB, so
//! each is a cache miss and a TLB miss; in the customer's own set they sit in a few adjacent
//! cache lines. A slot is 4 bytes (the counter) instead of 12 (counter, customer, epoch).
//!
//! Why only epoch 0: a marker says "this customer was counted in this counter's bucket in
//! its current epoch". A bucket's epoch only grows (the kernel bumps it when an event comes
//! after the uniques horizon, and segments are loaded in the order they were written), so
//! while a bucket is at epoch 0 no marker of a later epoch exists for its counters, and once
//! it is past 0 its epoch-0 markers never count again. The rare markers of later epochs live
//! in a `PairTable` with their epoch; these sets hold the rest, without one.

const EMPTY: u32 = u32::MAX;
const MIN_SLOTS: usize = 8;

/// One customer's counters: open addressing, linear probing, power-of-two capacity, grows
/// (doubles) at 3/4 load. No slots until its first marker.
#[derive(Default)]
struct Set {
    slots: Box<[u32]>,
    len: u32,
}

impl Set {
    #[inline]
    fn home(&self, c: u32) -> usize {
        // Fibonacci hashing: the high bits of the product, as many as the capacity needs.
        let bits = self.slots.len().trailing_zeros();
        ((c as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    /// Adds c; true when it was absent. The set has room (see `reserve_one`).
    #[inline]
    fn insert(&mut self, c: u32) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = self.home(c);
        loop {
            let s = self.slots[i];
            if s == c {
                return false;
            }
            if s == EMPTY {
                self.slots[i] = c;
                self.len += 1;
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Makes room for one more counter; returns the slots added.
    #[inline]
    fn reserve_one(&mut self) -> usize {
        if (self.len as usize + 1) * 4 <= self.slots.len() * 3 {
            return 0;
        }
        let cap = (self.slots.len() * 2).max(MIN_SLOTS);
        let added = cap - self.slots.len();
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap].into_boxed_slice());
        self.len = 0;
        for c in old.iter().copied().filter(|&c| c != EMPTY) {
            self.insert(c);
        }
        added
    }

    fn counters(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().copied().filter(|&c| c != EMPTY)
    }
}

#[derive(Default)]
pub struct CustomerMarkers {
    sets: Vec<Set>,
    len: usize,
    slots: usize,
}

impl CustomerMarkers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Markers held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the sets' slots and headers (not the allocator's own overhead).
    pub fn bytes(&self) -> usize {
        self.sets.capacity() * std::mem::size_of::<Set>() + self.slots * 4
    }

    /// Starts loading customer cu's set header, which `prefetch` and `insert` read first.
    #[inline]
    pub fn prefetch_customer(&self, cu: u32) {
        if let Some(set) = self.sets.get(cu as usize) {
            prefetch_ptr(set as *const Set as *const i8);
        }
    }

    /// Starts loading the slot where (cu, c) would be found.
    #[inline]
    pub fn prefetch(&self, cu: u32, c: u32) {
        if let Some(set) = self.sets.get(cu as usize) {
            if !set.slots.is_empty() {
                prefetch_ptr(&set.slots[set.home(c)] as *const u32 as *const i8);
            }
        }
    }

    /// Marks customer cu in counter c; true when it was not marked yet (a new unique).
    #[inline]
    pub fn insert(&mut self, cu: u32, c: u32) -> bool {
        debug_assert!(c != EMPTY);
        let i = cu as usize;
        if i >= self.sets.len() {
            self.sets.resize_with(i + 1, Set::default);
        }
        let set = &mut self.sets[i];
        self.slots += set.reserve_one();
        let new = set.insert(c);
        self.len += new as usize;
        new
    }

    /// Rebuilds every set with customers and counters renumbered by the maps (GONE = u32::MAX:
    /// dropped, with all its markers). O(markers).
    pub fn renumber(&mut self, cu_map: &[u32], c_map: &[u32]) {
        let old = std::mem::take(&mut self.sets);
        self.len = 0;
        self.slots = 0;
        for (cu, set) in old.into_iter().enumerate() {
            let to = cu_map.get(cu).copied().unwrap_or(EMPTY);
            if to == EMPTY || set.len == 0 {
                continue;
            }
            for c in set.counters() {
                let c = c_map.get(c as usize).copied().unwrap_or(EMPTY);
                if c != EMPTY {
                    self.insert(to, c);
                }
            }
        }
    }

    /// Keeps only the counters of customer cu's set for which `keep` holds; returns how many
    /// markers were removed. A set that loses any is rebuilt at the size its survivors need.
    pub fn retain(&mut self, cu: u32, mut keep: impl FnMut(u32) -> bool) -> usize {
        let Some(set) = self.sets.get_mut(cu as usize) else {
            return 0;
        };
        if set.len == 0 || set.counters().all(&mut keep) {
            return 0;
        }
        let kept: Vec<u32> = set.counters().filter(|&c| keep(c)).collect();
        let removed = set.len as usize - kept.len();
        self.slots -= set.slots.len();
        *set = Set::default();
        for c in kept {
            self.slots += set.reserve_one();
            set.insert(c);
        }
        self.len -= removed;
        removed
    }

    /// Removes customer cu's set, freeing its slots; returns its counters.
    pub fn take(&mut self, cu: u32) -> Vec<u32> {
        let Some(set) = self.sets.get_mut(cu as usize) else {
            return Vec::new();
        };
        let set = std::mem::take(set);
        self.slots -= set.slots.len();
        self.len -= set.len as usize;
        set.counters().collect()
    }

    /// The bytes of customer cu's slots.
    pub fn set_bytes(&self, cu: u32) -> usize {
        self.sets.get(cu as usize).map_or(0, |s| s.slots.len() * 4)
    }

    /// Bytes of the slots alone (what evicting every set would free).
    pub fn slot_bytes(&self) -> usize {
        self.slots * 4
    }

    /// Customer cu's counters, in slot order.
    pub fn of(&self, cu: u32) -> impl Iterator<Item = u32> + '_ {
        self.sets.get(cu as usize).into_iter().flat_map(Set::counters)
    }

    /// Every marker (customer, counter), customers ascending.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn entries(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.sets
            .iter()
            .enumerate()
            .flat_map(|(cu, set)| set.counters().map(move |c| (cu as u32, c)))
    }
}

#[inline]
fn prefetch_ptr(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch(p, _MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A small deterministic generator (xorshift), so failures reproduce.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn insert_answers_as_a_set_of_pairs_does() {
        let mut m = CustomerMarkers::new();
        let mut model = BTreeSet::new();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200_000 {
            // Few customers with many counters and many with few, as a Zipf workload has.
            let cu = (next(&mut rng) % 5_000) as u32 % (1 + (next(&mut rng) % 5_000) as u32);
            let c = (next(&mut rng) % 50_000) as u32;
            assert_eq!(m.insert(cu, c), model.insert((cu, c)), "insert({cu}, {c})");
        }
        assert_eq!(m.len(), model.len());
        assert_eq!(m.entries().collect::<BTreeSet<_>>(), model);
        assert!(m.bytes() >= model.len() * 4);
    }

    #[test]
    fn renumber_keeps_the_survivors_under_their_new_numbers() {
        let mut m = CustomerMarkers::new();
        for cu in 0..100u32 {
            for c in 0..(cu % 13) * 7 {
                m.insert(cu, c * 3 + cu % 3);
            }
        }
        // Customers and counters with an odd number are dropped; the rest are halved.
        let map = |n: usize| (0..n as u32).map(|x| if x % 2 == 1 { EMPTY } else { x / 2 }).collect::<Vec<_>>();
        let expected: BTreeSet<(u32, u32)> = m
            .entries()
            .filter(|&(cu, c)| cu % 2 == 0 && c % 2 == 0)
            .map(|(cu, c)| (cu / 2, c / 2))
            .collect();
        m.renumber(&map(100), &map(400));
        assert_eq!(m.entries().collect::<BTreeSet<_>>(), expected);
        assert_eq!(m.len(), expected.len());
        // Still a working set after the rebuild.
        let (cu, c) = *expected.iter().next().unwrap();
        assert!(!m.insert(cu, c));
        assert!(m.insert(cu, 1_000_000));
    }
}
