//! What the kernel keeps of state it has spilled to the store (the memory budget, ADR 7): a
//! per-group multiset of short tags of the dedup identities spilled, the layout of a spill
//! request, and the value of a customer's spilled marker set.
//!
//! Spilled state lives in ordinary records of the key group (TypeScript stores them, in the
//! commit that evicts them): `gggg I <fp>` holds an identity's first ingest second, `gggg M
//! <fp>` a customer's epoch-0 markers as group-local counter numbers. A record is never
//! deleted when its entry comes back into memory, so the store's state is the union of the
//! segments and the spill records: a customer's markers are the union of both (markers only
//! ever come and go as a whole bucket expires, and an expired marker is never consulted
//! again), and an identity found in memory wins over its record (a spilled identity can only
//! change after it came back, and its change is then written in a segment).

/// Kind byte of a spilled dedup identity's record.
pub const KIND_IDENTITY: u8 = b'I';
/// Kind byte of a spilled customer's marker set.
pub const KIND_MARKERS: u8 = b'M';
/// A request for one record: kind, key group (u32 LE), fingerprint (u128 LE).
pub const NEED_BYTES: usize = 21;

pub fn push_need(out: &mut Vec<u8>, kind: u8, group: u32, fp: u128) {
    out.push(kind);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&fp.to_le_bytes());
}

/// Request i of `needs` (whose length is a multiple of NEED_BYTES).
pub fn need(needs: &[u8], i: usize) -> (u8, u32, u128) {
    let r = &needs[i * NEED_BYTES..(i + 1) * NEED_BYTES];
    (
        r[0],
        u32::from_le_bytes(r[1..5].try_into().unwrap()),
        u128::from_le_bytes(r[5..21].try_into().unwrap()),
    )
}

/// The tag of an identity fingerprint in a `TagBag` (never 0, the empty slot).
#[inline]
pub fn tag_of(fp: u128) -> u32 {
    ((fp >> 96) as u32).max(1)
}

/// A multiset of non-zero u32 tags: open addressing, linear probing, power-of-two capacity,
/// doubling at 3/4 load; 4 bytes a tag. `contains` may answer yes for an identity that is not
/// spilled (another's tag, 2^-32 per spilled identity): that costs a read that finds
/// nothing. It never answers no for one that is: a tag leaves only when a record of its
/// identity is deleted, once per deletion, and a record written twice has two.
#[derive(Default)]
pub struct TagBag {
    slots: Vec<u32>,
    len: usize,
}

impl TagBag {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn bytes(&self) -> usize {
        self.slots.len() * 4
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        let bits = self.slots.len().trailing_zeros();
        ((tag as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    pub fn insert(&mut self, tag: u32) {
        debug_assert!(tag != 0);
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let cap = (self.slots.len() * 2).max(64);
            let old = std::mem::replace(&mut self.slots, vec![0; cap]);
            self.len = 0;
            for t in old.into_iter().filter(|&t| t != 0) {
                self.insert(t);
            }
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(tag);
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = tag;
        self.len += 1;
    }

    /// The slot of an instance of `tag`, if any.
    #[inline]
    fn find(&self, tag: u32) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(tag);
        loop {
            match self.slots[i] {
                0 => return None,
                t if t == tag => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    #[inline]
    pub fn contains(&self, tag: u32) -> bool {
        self.find(tag).is_some()
    }

    /// Removes one instance of `tag`; false when there was none.
    pub fn remove_one(&mut self, tag: u32) -> bool {
        let Some(i) = self.find(tag) else {
            return false;
        };
        let mask = self.slots.len() - 1;
        // Backward-shift deletion: no tombstones.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.slots[j] != 0 {
            let home = self.home(self.slots[j]);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte < 0x80 {
            return u32::try_from(v).ok();
        }
    }
    None
}

/// A customer's marker record: a version byte, then its counters' local numbers ascending,
/// the first as is and each next as the gap from the one before, in varints.
pub fn encode_markers(mut locals: Vec<u32>) -> Vec<u8> {
    locals.sort_unstable();
    locals.dedup();
    let mut out = Vec::with_capacity(1 + locals.len() * 2);
    out.push(1);
    let mut last = 0;
    for (i, &l) in locals.iter().enumerate() {
        put_varint(&mut out, if i == 0 { l } else { l - last });
        last = l;
    }
    out
}

/// The local numbers of a marker record, or why it is not one.
pub fn decode_markers(b: &[u8]) -> Result<Vec<u32>, String> {
    if b.first() != Some(&1) {
        return Err(format!("a spilled marker record starts with version {:?}, expected 1", b.first()));
    }
    let mut pos = 1;
    let mut out = Vec::new();
    let mut last: u32 = 0;
    while pos < b.len() {
        let v = read_varint(b, &mut pos).ok_or("a spilled marker record ends inside a number")?;
        let l = if out.is_empty() {
            v
        } else {
            last.checked_add(v).filter(|_| v > 0).ok_or("a spilled marker record's counters are not ascending")?
        };
        out.push(l);
        last = l;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn tag_bag_counts_instances_and_never_loses_one() {
        let mut bag = TagBag::default();
        let mut model: HashMap<u32, usize> = HashMap::new();
        // Few distinct tags, so that clusters are long and instances repeat.
        let mut x: u64 = 7;
        for round in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let tag = ((x >> 33) % 997) as u32 + 1;
            if round % 3 == 2 {
                let had = model.get(&tag).copied().unwrap_or(0) > 0;
                assert_eq!(bag.remove_one(tag), had);
                if had {
                    *model.get_mut(&tag).unwrap() -= 1;
                }
            } else {
                bag.insert(tag);
                *model.entry(tag).or_default() += 1;
            }
            if round % 997 == 0 {
                for t in 1..=997 {
                    assert_eq!(bag.contains(t), model.get(&t).copied().unwrap_or(0) > 0, "tag {t}");
                }
            }
        }
        assert_eq!(bag.len(), model.values().sum::<usize>());
    }

    #[test]
    fn marker_records_round_trip_and_refuse_damage() {
        for locals in [vec![], vec![0], vec![5, 3, 3, 1_000_000, 127, 128]] {
            let mut want = locals.clone();
            want.sort_unstable();
            want.dedup();
            assert_eq!(decode_markers(&encode_markers(locals)).unwrap(), want);
        }
        assert!(decode_markers(&[]).is_err());
        assert!(decode_markers(&[2, 1]).is_err());
        assert!(decode_markers(&[1, 0x80]).is_err());
        assert!(decode_markers(&[1, 3, 0]).is_err(), "a zero gap repeats a counter");
    }

    #[test]
    fn needs_round_trip() {
        let mut b = Vec::new();
        push_need(&mut b, KIND_MARKERS, 70_000, u128::MAX - 5);
        push_need(&mut b, KIND_IDENTITY, 3, 42);
        assert_eq!(b.len(), 2 * NEED_BYTES);
        assert_eq!(need(&b, 0), (KIND_MARKERS, 70_000, u128::MAX - 5));
        assert_eq!(need(&b, 1), (KIND_IDENTITY, 3, 42));
        assert_ne!(tag_of(0), 0);
    }
}
