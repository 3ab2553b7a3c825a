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

pub struct FpTable {
    slots: Vec<Slot>,
    mask: usize,
    size: usize,
}

impl FpTable {
    pub fn new(capacity_hint: usize) -> Self {
        let mut cap = 1024;
        while cap * 3 / 4 < capacity_hint {
            cap *= 2;
        }
        FpTable { slots: vec![Slot::default(); cap], mask: cap - 1, size: 0 }
    }

    pub fn len(&self) -> usize {
        self.size
    }

    pub fn bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }

    #[inline]
    pub fn prefetch(&self, fp: u128) {
        #[cfg(target_arch = "x86_64")]
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let slot = (fp as u64 as usize) & self.mask;
            _mm_prefetch(self.slots.as_ptr().add(slot) as *const i8, _MM_HINT_T0);
        }
    }

    /// Ok(slot holding fp), or Err(empty slot where it would go).
    #[inline]
    pub fn find(&self, fp: u128) -> Result<usize, usize> {
        let (k0, k1) = (fp as u64, (fp >> 64) as u64);
        let mut slot = (k0 as usize) & self.mask;
        loop {
            let s = &self.slots[slot];
            if s.v == 0 {
                return Err(slot);
            }
            if s.k0 == k0 && s.k1 == k1 {
                return Ok(slot);
            }
            slot = (slot + 1) & self.mask;
        }
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
        self.slots[miss] = Slot { k0: fp as u64, k1: (fp >> 64) as u64, v: value, v2: value2 };
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
            let to = self.find(s.k0 as u128 | (s.k1 as u128) << 64).expect_err("keys are distinct");
            self.slots[to] = s;
        }
    }
}

/// Uniqueness markers keyed by two dense local indexes (counter, customer) instead of a
/// fingerprint: 12 bytes a slot (counter, customer, value), exact without any collision bound
/// because the indexes come from fingerprint tables that are exact up to theirs. Value 0
/// marks an empty slot. Any number of slots (not only powers of two: the home slot is the
/// hash scaled to the capacity), so a table can be sized to a memory budget; it doubles at
/// 3/4 load only if it was sized too small.
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
        PairTable { slots: vec![[0; 3]; slots.max(1024)], size: 0 }
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
            _mm_prefetch(self.slots.as_ptr().add(pair_home(a, b, self.slots.len())) as *const i8, _MM_HINT_T0);
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

    pub fn insert(&mut self, mut miss: usize, a: u32, b: u32, v: u32) {
        if (self.size + 1) * 4 > self.slots.len() * 3 {
            let cap = self.slots.len() * 2;
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
