//! Open-addressing table keyed by 128-bit fingerprints. A slot holds the key and its two
//! values side by side (24 bytes), so a probe costs one cache miss, not one per array;
//! linear probing from the low bits; a value of 0 marks an empty slot (callers store
//! value + 1); doubles at 3/4 load. `prefetch` starts loading a key's home slot early so
//! the misses of one event's ~45 lookups overlap instead of queueing.

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Slot {
    k0: u64,
    k1: u64,
    v: u32,
    v2: u32,
}

/// A slot of a table keyed by 128-bit fingerprints: its key, and whether it holds one.
trait FpSlot {
    fn key(&self) -> (u64, u64);
    fn occupied(&self) -> bool;
}

impl FpSlot for Slot {
    #[inline]
    fn key(&self) -> (u64, u64) {
        (self.k0, self.k1)
    }
    #[inline]
    fn occupied(&self) -> bool {
        self.v != 0
    }
}

/// The capacity (a power of two, at least 1,024) that holds `entries` below 3/4 load.
fn power_of_two_capacity(entries: usize) -> usize {
    let mut cap = 1024;
    while cap * 3 / 4 < entries {
        cap *= 2;
    }
    cap
}

/// Starts loading fp's home slot, so that the misses of one event's lookups overlap.
#[inline]
fn prefetch_home<S>(slots: &[S], mask: usize, fp: u128) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let slot = (fp as u64 as usize) & mask;
        _mm_prefetch(slots.as_ptr().add(slot) as *const i8, _MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slots, mask, fp);
}

/// Linear probing from the low bits: Ok(slot holding fp), or Err(empty slot where it would go).
#[inline]
fn probe<S: FpSlot>(slots: &[S], mask: usize, fp: u128) -> Result<usize, usize> {
    let key = (fp as u64, (fp >> 64) as u64);
    let mut slot = (key.0 as usize) & mask;
    loop {
        let s = &slots[slot];
        if !s.occupied() {
            return Err(slot);
        }
        if s.key() == key {
            return Ok(slot);
        }
        slot = (slot + 1) & mask;
    }
}

pub struct FpTable {
    slots: Vec<Slot>,
    mask: usize,
    size: usize,
}

impl FpTable {
    pub fn new(capacity_hint: usize) -> Self {
        let cap = power_of_two_capacity(capacity_hint);
        FpTable {
            slots: vec![Slot::default(); cap],
            mask: cap - 1,
            size: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.size
    }

    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    #[inline]
    pub fn prefetch(&self, fp: u128) {
        prefetch_home(&self.slots, self.mask, fp);
    }

    /// Ok(slot holding fp), or Err(empty slot where it would go).
    #[inline]
    pub fn find(&self, fp: u128) -> Result<usize, usize> {
        probe(&self.slots, self.mask, fp)
    }

    #[inline]
    pub fn val(&self, slot: usize) -> u32 {
        self.slots[slot].v
    }

    #[inline]
    pub fn val2(&self, slot: usize) -> u32 {
        self.slots[slot].v2
    }

    #[inline]
    pub fn set(&mut self, slot: usize, v: u32, v2: u32) {
        self.slots[slot].v = v;
        self.slots[slot].v2 = v2;
    }

    /// Inserts fp, known absent (`miss` from find), with its values; returns its slot.
    pub fn insert(&mut self, mut miss: usize, fp: u128, value: u32, value2: u32) -> usize {
        if (self.size + 1) * 4 > self.slots.len() * 3 {
            self.grow();
            miss = self.find(fp).expect_err("absent before growing");
        }
        self.slots[miss] = Slot {
            k0: fp as u64,
            k1: (fp >> 64) as u64,
            v: value,
            v2: value2,
        };
        self.size += 1;
        miss
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); cap]);
        self.mask = cap - 1;
        for s in old {
            if s.v == 0 {
                continue;
            }
            let to = self
                .find(s.k0 as u128 | (s.k1 as u128) << 64)
                .expect_err("keys are distinct");
            self.slots[to] = s;
        }
    }
}

/// Uniqueness markers keyed by two dense local indexes (counter, customer) instead of a
/// fingerprint: 12 bytes a slot (counter, customer, value), exact without any collision bound
/// because the indexes come from fingerprint tables that are exact up to theirs. Value 0
/// marks an empty slot. Any number of slots (not only powers of two: the home slot is the
/// hash scaled to the capacity), so a table can be sized to a memory budget; it grows by half
/// at 3/4 load.
pub struct PairTable {
    slots: Vec<[u32; 3]>,
    size: usize,
}

#[inline]
fn pair_home(a: u32, b: u32, capacity: usize) -> usize {
    let x = ((a as u64) << 32 | b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (((x ^ (x >> 29)) as u128 * capacity as u128) >> 64) as usize
}

impl PairTable {
    /// `slots`: the capacity (at least 1,024); it holds 3/4 of that before it grows.
    pub fn new(slots: usize) -> Self {
        PairTable {
            slots: vec![[0; 3]; slots.max(1024)],
            size: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.size
    }

    pub fn bytes(&self) -> usize {
        self.slots.len() * 12
    }

    #[inline]
    pub fn prefetch(&self, a: u32, b: u32) {
        #[cfg(target_arch = "x86_64")]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch(
                self.slots.as_ptr().add(pair_home(a, b, self.slots.len())) as *const i8,
                _MM_HINT_T0,
            );
        }
    }

    #[inline]
    pub fn find(&self, a: u32, b: u32) -> Result<usize, usize> {
        let cap = self.slots.len();
        let mut slot = pair_home(a, b, cap);
        loop {
            let s = &self.slots[slot];
            if s[2] == 0 {
                return Err(slot);
            }
            if s[0] == a && s[1] == b {
                return Ok(slot);
            }
            slot += 1;
            if slot == cap {
                slot = 0;
            }
        }
    }

    #[inline]
    pub fn val(&self, slot: usize) -> u32 {
        self.slots[slot][2]
    }

    #[inline]
    pub fn set(&mut self, slot: usize, v: u32) {
        self.slots[slot][2] = v;
    }

    /// Stores v for (a, b); true when the pair was absent or held another value (a marker
    /// that was not set for this epoch yet: the rule of a new unique).
    #[inline]
    pub fn mark(&mut self, a: u32, b: u32, v: u32) -> bool {
        match self.find(a, b) {
            Err(miss) => {
                self.insert(miss, a, b, v);
                true
            }
            Ok(slot) if self.val(slot) != v => {
                self.set(slot, v);
                true
            }
            Ok(_) => false,
        }
    }

    pub fn insert(&mut self, mut miss: usize, a: u32, b: u32, v: u32) {
        if (self.size + 1) * 4 > self.slots.len() * 3 {
            // Grows by half, not double: markers are most of the state (10-13 per counted
            // event), and while the table grows the old and the new one live together. At
            // 53.6 M markers doubling peaked at 0.8 + 1.6 GB; by half, 0.7 + 1.05 GB.
            let cap = self.slots.len() + self.slots.len() / 2;
            let old = std::mem::replace(&mut self.slots, vec![[0; 3]; cap]);
            for s in old {
                if s[2] != 0 {
                    let to = self.find(s[0], s[1]).expect_err("pairs are distinct");
                    self.slots[to] = s;
                }
            }
            miss = self.find(a, b).expect_err("absent before growing");
        }
        self.slots[miss] = [a, b, v];
        self.size += 1;
    }
}

impl PairTable {
    /// Rebuilds the table (same capacity, or larger if needed) keeping the entries for which
    /// `f(a, b, v)` returns Some((a', b', v')), stored as that; O(capacity).
    pub fn retain_map(&mut self, mut f: impl FnMut(u32, u32, u32) -> Option<(u32, u32, u32)>) {
        let cap = self.slots.len();
        let old = std::mem::replace(&mut self.slots, vec![[0; 3]; cap]);
        self.size = 0;
        for s in old {
            if s[2] != 0 {
                if let Some((a, b, v)) = f(s[0], s[1], s[2]) {
                    let miss = self.find(a, b).expect_err("pairs stay distinct");
                    self.insert(miss, a, b, v);
                }
            }
        }
    }

    /// Every entry (a, b, v), in slot order.
    pub fn entries(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.slots
            .iter()
            .filter(|s| s[2] != 0)
            .map(|s| (s[0], s[1], s[2]))
    }
}

/// A value of a `TagTable` slot.
pub trait SlotValue: Copy + Default {}
impl SlotValue for u32 {}
impl SlotValue for [u32; 2] {}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct TagSlot<V> {
    k0: u64,
    k1: u64,
    /// 0: empty; otherwise the owner's tag (the CountKernel stores key group + 1).
    tag: u32,
    v: V,
}

impl<V> FpSlot for TagSlot<V> {
    #[inline]
    fn key(&self) -> (u64, u64) {
        (self.k0, self.k1)
    }
    #[inline]
    fn occupied(&self) -> bool {
        self.tag != 0
    }
}

/// Like `FpTable`, but a slot carries a non-zero tag (its owner, e.g. key group + 1) next to
/// its value, so every value (including 0) can be stored and the table can be filtered by
/// owner. 24 bytes a slot for a u32 value, 32 for two. Linear probing, doubles at 3/4 load.
pub struct TagTable<V: SlotValue> {
    slots: Vec<TagSlot<V>>,
    mask: usize,
    size: usize,
}

impl<V: SlotValue> TagTable<V> {
    pub fn new(capacity_hint: usize) -> Self {
        let cap = power_of_two_capacity(capacity_hint);
        TagTable {
            slots: vec![TagSlot::default(); cap],
            mask: cap - 1,
            size: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.size
    }

    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<TagSlot<V>>()
    }

    #[inline]
    pub fn prefetch(&self, fp: u128) {
        prefetch_home(&self.slots, self.mask, fp);
    }

    /// Ok(slot holding fp), or Err(empty slot where it would go).
    #[inline]
    pub fn find(&self, fp: u128) -> Result<usize, usize> {
        probe(&self.slots, self.mask, fp)
    }

    #[inline]
    pub fn tag(&self, slot: usize) -> u32 {
        self.slots[slot].tag
    }

    #[inline]
    pub fn val(&self, slot: usize) -> V {
        self.slots[slot].v
    }

    #[inline]
    pub fn set(&mut self, slot: usize, v: V) {
        self.slots[slot].v = v;
    }

    /// Sets fp's tag and value, inserting it if absent.
    pub fn upsert(&mut self, fp: u128, tag: u32, v: V) {
        match self.find(fp) {
            Ok(slot) => {
                self.slots[slot].tag = tag;
                self.slots[slot].v = v;
            }
            Err(miss) => {
                self.insert(miss, fp, tag, v);
            }
        }
    }

    /// Inserts fp, known absent (`miss` from find), with a non-zero tag; returns its slot.
    pub fn insert(&mut self, mut miss: usize, fp: u128, tag: u32, v: V) -> usize {
        debug_assert!(tag != 0);
        if (self.size + 1) * 4 > self.slots.len() * 3 {
            self.rehash(self.slots.len() * 2, |_, _, v| Some(v));
            miss = self.find(fp).expect_err("absent before growing");
        }
        self.slots[miss] = TagSlot {
            k0: fp as u64,
            k1: (fp >> 64) as u64,
            tag,
            v,
        };
        self.size += 1;
        miss
    }

    /// Slots (a power of two).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Moves the entries into a table of `cap` slots (a power of two that holds them below
    /// 3/4 load): how a table that spilled entries gives their memory back.
    pub fn resize(&mut self, cap: usize) {
        assert!(cap.is_power_of_two() && self.size * 4 <= cap * 3, "resize to {cap} slots with {} entries", self.size);
        self.rehash(cap, |_, _, v| Some(v));
    }

    /// Rebuilds the table keeping the entries for which `f(fp, tag, v)` returns Some(v'),
    /// stored with v'; O(capacity). The capacity stays.
    pub fn retain_map(&mut self, f: impl FnMut(u128, u32, V) -> Option<V>) {
        self.rehash(self.slots.len(), f);
    }

    /// Deletes every entry for which `doomed(fp, tag, v)` holds, in place; returns how many.
    /// `doomed` is called once for each entry.
    /// O(capacity), with no second table: a sweep of a table of hundreds of MiB must not
    /// need as much again. Deletion shifts the rest of the entry's cluster back (no
    /// tombstones), and the scan starts just after an empty slot so that no cluster wraps
    /// around its start: every entry is then looked at exactly once, because entries only
    /// move back into the slot being looked at or into slots the scan has not reached.
    pub fn remove_where(&mut self, mut doomed: impl FnMut(u128, u32, V) -> bool) -> usize {
        let cap = self.slots.len();
        let mask = self.mask;
        let Some(empty) = self.slots.iter().position(|s| s.tag == 0) else {
            return 0; // cannot happen below 3/4 load
        };
        let mut removed = 0;
        let mut k = 1;
        while k <= cap {
            let i = (empty + k) & mask;
            let s = self.slots[i];
            if s.tag == 0 || !doomed(s.k0 as u128 | (s.k1 as u128) << 64, s.tag, s.v) {
                k += 1;
                continue;
            }
            removed += 1;
            self.size -= 1;
            let mut hole = i;
            let mut j = (i + 1) & mask;
            while self.slots[j].tag != 0 {
                let home = self.slots[j].k0 as usize & mask;
                // The entry at j may fill the hole unless its home lies after the hole.
                if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                    self.slots[hole] = self.slots[j];
                    hole = j;
                }
                j = (j + 1) & mask;
            }
            self.slots[hole] = TagSlot::default();
            // Slot i is looked at again: it may hold an entry moved back into it.
        }
        removed
    }

    /// Moves every kept entry into a table of `cap` slots, which must hold them all.
    fn rehash(&mut self, cap: usize, mut f: impl FnMut(u128, u32, V) -> Option<V>) {
        let old = std::mem::replace(&mut self.slots, vec![TagSlot::default(); cap]);
        self.mask = cap - 1;
        self.size = 0;
        for s in old {
            if s.tag == 0 {
                continue;
            }
            if let Some(v) = f(s.k0 as u128 | (s.k1 as u128) << 64, s.tag, s.v) {
                let to = self
                    .find(s.k0 as u128 | (s.k1 as u128) << 64)
                    .expect_err("keys are distinct");
                self.slots[to] = TagSlot {
                    k0: s.k0,
                    k1: s.k1,
                    tag: s.tag,
                    v,
                };
                self.size += 1;
            }
        }
    }

    /// Every entry (fp, tag, value), in slot order.
    pub fn entries(&self) -> impl Iterator<Item = (u128, u32, V)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.tag != 0)
            .map(|s| (s.k0 as u128 | (s.k1 as u128) << 64, s.tag, s.v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// remove_where against a model, with long clusters that wrap around the table's end
    /// (keys whose home slots are few and near the last slot), removing a different share
    /// each round, until the table is empty; every survivor must still be found.
    #[test]
    fn remove_where_keeps_every_survivor_findable() {
        let mut t: TagTable<u32> = TagTable::new(0);
        let cap = t.slots.len() as u128;
        let mut model = BTreeMap::new();
        for i in 0..700u128 {
            // Homes: cap - 3 .. cap + 2 (mod cap), so clusters straddle slot 0.
            let key = (i << 64) | ((cap - 3 + i % 6) % cap) | ((i / 6) * cap);
            let miss = t.find(key).unwrap_err();
            t.insert(miss, key, (i % 5) as u32 + 1, i as u32);
            model.insert(key, i as u32);
        }
        for round in 2..12u32 {
            let removed = t.remove_where(|_, _, v| v % round == 0);
            let before = model.len();
            model.retain(|_, v| *v % round != 0);
            assert_eq!(removed, before - model.len(), "round {round}");
            assert_eq!(t.len(), model.len());
            for (&key, &v) in &model {
                let slot = t.find(key).unwrap_or_else(|_| panic!("key {key:x} lost in round {round}"));
                assert_eq!(t.val(slot), v);
            }
            assert_eq!(t.entries().count(), model.len());
        }
        assert_eq!(t.remove_where(|_, _, _| true), model.len());
        assert_eq!(t.len(), 0);
    }
}
