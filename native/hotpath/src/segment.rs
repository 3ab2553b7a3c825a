//! Segments: the changes of one key group's counting state since the previous
//! `CountKernel.changes()`, as one blob for TypeScript to store (RocksDB) and to hand back to
//! `CountKernel.loadSegment()`. A group's state is the ordered sequence of its segments;
//! loading them in the order they were written rebuilds it, later records overriding earlier.
//!
//! # Format, version 1 (all integers little-endian, no padding, no alignment required)
//!
//! ```text
//! header, 40 bytes:
//!   [0..4)   magic    b"ABSG"
//!   [4..6)   version  u16 = 1
//!   [6..8)   flags    u16 = 0 (bit 0: account level; informative)
//!   [8..12)  group    u32   the key group (0..65535); must equal loadSegment's argument
//!   [12..40) seven u32 counts, in this order:
//!            customers, counters, dedup, buckets, markers, totals, idBytes
//! sections, in this order, each `count` fixed-width records:
//!   customers  20 B: fp u128, local u32          a new customer and its group-local number
//!   counters   24 B: fp u128, local u32, len u32 a new counter, its group-local number, id length
//!   dedup      20 B: fp u128, first u32          a dedup identity set to its first ingest second
//!   buckets    24 B: fp u128, hour u32, epoch u32 a bucket record set (last ingest hour, epoch)
//!   markers    12 B: counter u32, customer u32, epoch u32  (group-local numbers) marker set
//!   totals     20 B: counter u32, count f64, uniques f64    (group-local number) total set
//!   ids        idBytes bytes: the new counters' ids (UTF-8), concatenated in counter order
//! trailer, 8 bytes:
//!   xxh3_64 of every byte before it
//! ```
//!
//! A u128 fingerprint is written as its 16 little-endian bytes. Group-local numbers are
//! handed out per group in order of creation, from 0 (counters and customers separately):
//! the n-th new-counter record of a group's whole segment sequence has local number n, so a
//! loader checks each new record's number against the group's next one. Markers and totals
//! refer to counters and customers by local number, which keeps a marker at 12 bytes instead
//! of two 128-bit fingerprints and keeps segments independent of the process's own (global,
//! renumbered on `dropGroups`) numbering. Epochs are below 2^31.
//!
//! Within a section records are in the order the changes were made; a later record of the
//! same key (in the same or a later segment) overrides an earlier one.

use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: &[u8; 4] = b"ABSG";
pub const VERSION: u16 = 1;
pub const HEADER: usize = 40;
pub const TRAILER: usize = 8;
pub const CUSTOMER_REC: usize = 20;
pub const COUNTER_REC: usize = 24;
pub const DEDUP_REC: usize = 20;
pub const BUCKET_REC: usize = 24;
pub const MARKER_REC: usize = 12;
pub const TOTAL_REC: usize = 20;
/// Epochs (buckets and markers) stay below this, so that epoch + 1 never wraps.
pub const EPOCH_LIMIT: u32 = 1 << 31;

pub const FLAG_ACCOUNT: u16 = 1;

/// The changes of one group, in the order they were made.
#[derive(Default)]
pub struct Changes {
    pub customers: Vec<(u128, u32)>,
    /// (fingerprint, local number); the id comes from the kernel's id arena when written.
    pub counters: Vec<(u128, u32)>,
    pub dedup: Vec<(u128, u32)>,
    pub buckets: Vec<(u128, u32, u32)>,
    pub markers: Vec<[u32; 3]>,
    /// Local numbers of counters whose total was set (each once); values read when written.
    pub totals: Vec<u32>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
            && self.counters.is_empty()
            && self.dedup.is_empty()
            && self.buckets.is_empty()
            && self.markers.is_empty()
            && self.totals.is_empty()
    }

    pub fn clear(&mut self) {
        self.customers.clear();
        self.counters.clear();
        self.dedup.clear();
        self.buckets.clear();
        self.markers.clear();
        self.totals.clear();
    }

    pub fn bytes(&self) -> usize {
        self.customers.capacity() * 32
            + self.counters.capacity() * 32
            + self.dedup.capacity() * 32
            + self.buckets.capacity() * 32
            + self.markers.capacity() * 12
            + self.totals.capacity() * 4
    }
}

/// Encodes `ch` as a segment of `group`. `id(local)` is a new counter's id, `total(local)`
/// a counter's total (count, uniques).
pub fn encode<'a>(
    group: u32,
    flags: u16,
    ch: &Changes,
    id: impl Fn(u32) -> &'a [u8],
    total: impl Fn(u32) -> (f64, f64),
) -> Vec<u8> {
    let id_bytes: usize = ch.counters.iter().map(|&(_, l)| id(l).len()).sum();
    let size = HEADER
        + ch.customers.len() * CUSTOMER_REC
        + ch.counters.len() * COUNTER_REC
        + ch.dedup.len() * DEDUP_REC
        + ch.buckets.len() * BUCKET_REC
        + ch.markers.len() * MARKER_REC
        + ch.totals.len() * TOTAL_REC
        + id_bytes
        + TRAILER;
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&group.to_le_bytes());
    for n in [
        ch.customers.len(),
        ch.counters.len(),
        ch.dedup.len(),
        ch.buckets.len(),
        ch.markers.len(),
        ch.totals.len(),
        id_bytes,
    ] {
        b.extend_from_slice(&(n as u32).to_le_bytes());
    }
    for &(fp, local) in &ch.customers {
        b.extend_from_slice(&fp.to_le_bytes());
        b.extend_from_slice(&local.to_le_bytes());
    }
    for &(fp, local) in &ch.counters {
        b.extend_from_slice(&fp.to_le_bytes());
        b.extend_from_slice(&local.to_le_bytes());
        b.extend_from_slice(&(id(local).len() as u32).to_le_bytes());
    }
    for &(fp, first) in &ch.dedup {
        b.extend_from_slice(&fp.to_le_bytes());
        b.extend_from_slice(&first.to_le_bytes());
    }
    for &(fp, hour, epoch) in &ch.buckets {
        b.extend_from_slice(&fp.to_le_bytes());
        b.extend_from_slice(&hour.to_le_bytes());
        b.extend_from_slice(&epoch.to_le_bytes());
    }
    for m in &ch.markers {
        for v in m {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    for &local in &ch.totals {
        let (count, uniques) = total(local);
        b.extend_from_slice(&local.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&uniques.to_le_bytes());
    }
    for &(_, local) in &ch.counters {
        b.extend_from_slice(id(local));
    }
    let sum = xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    debug_assert_eq!(b.len(), size);
    b
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
fn u128_at(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

#[inline]
fn f64_at(b: &[u8], at: usize) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    f64::from_le_bytes(a)
}

/// A segment whose framing (magic, version, group, lengths, checksum) has been checked; the
/// accessors read its records. Record contents (numbers, ids) are checked by the loader.
pub struct Segment<'a> {
    bytes: &'a [u8],
    pub flags: u16,
    pub customers: usize,
    pub counters: usize,
    pub dedup: usize,
    pub buckets: usize,
    pub markers: usize,
    pub totals: usize,
    pub id_bytes: usize,
    at_customers: usize,
    at_counters: usize,
    at_dedup: usize,
    at_buckets: usize,
    at_markers: usize,
    at_totals: usize,
    at_ids: usize,
}

impl<'a> Segment<'a> {
    /// Checks the framing of `bytes` as a segment of `group`; Err says what is wrong.
    pub fn parse(bytes: &'a [u8], group: u32) -> Result<Self, String> {
        if bytes.len() < HEADER + TRAILER {
            return Err(format!(
                "segment of key group {group} is truncated: {} bytes, a segment has at least {}",
                bytes.len(),
                HEADER + TRAILER
            ));
        }
        if &bytes[0..4] != MAGIC {
            return Err(format!(
                "segment of key group {group} does not start with the magic ABSG"
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(format!("segment of key group {group} has version {version}; this kernel reads version {VERSION}"));
        }
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        let own = u32_at(bytes, 8);
        if own != group {
            return Err(format!(
                "segment of key group {own} was loaded as key group {group}"
            ));
        }
        let n: Vec<usize> = (0..7).map(|i| u32_at(bytes, 12 + 4 * i) as usize).collect();
        let sizes = [
            CUSTOMER_REC,
            COUNTER_REC,
            DEDUP_REC,
            BUCKET_REC,
            MARKER_REC,
            TOTAL_REC,
            1,
        ];
        let mut at = [0usize; 7];
        let mut end = HEADER as u64;
        for i in 0..7 {
            at[i] = end as usize;
            end += n[i] as u64 * sizes[i] as u64;
        }
        let expected = end + TRAILER as u64;
        if expected != bytes.len() as u64 {
            let what = if (bytes.len() as u64) < expected {
                "truncated"
            } else {
                "too long"
            };
            return Err(format!("segment of key group {group} is {what}: its header announces {expected} bytes, it has {}", bytes.len()));
        }
        let body = bytes.len() - TRAILER;
        let stored = u64::from_le_bytes(bytes[body..].try_into().expect("8 bytes"));
        if xxh3_64(&bytes[..body]) != stored {
            return Err(format!(
                "segment of key group {group} is corrupt: its checksum does not match its contents"
            ));
        }
        Ok(Segment {
            bytes,
            flags,
            customers: n[0],
            counters: n[1],
            dedup: n[2],
            buckets: n[3],
            markers: n[4],
            totals: n[5],
            id_bytes: n[6],
            at_customers: at[0],
            at_counters: at[1],
            at_dedup: at[2],
            at_buckets: at[3],
            at_markers: at[4],
            at_totals: at[5],
            at_ids: at[6],
        })
    }

    /// (fingerprint, local number) of new customer i.
    pub fn customer(&self, i: usize) -> (u128, u32) {
        let at = self.at_customers + i * CUSTOMER_REC;
        (u128_at(self.bytes, at), u32_at(self.bytes, at + 16))
    }

    /// (fingerprint, local number, id length) of new counter i.
    pub fn counter(&self, i: usize) -> (u128, u32, u32) {
        let at = self.at_counters + i * COUNTER_REC;
        (
            u128_at(self.bytes, at),
            u32_at(self.bytes, at + 16),
            u32_at(self.bytes, at + 20),
        )
    }

    /// The id bytes [from, to) of the ids section (callers check the bounds against id_bytes).
    pub fn ids(&self, from: usize, to: usize) -> &'a [u8] {
        &self.bytes[self.at_ids + from..self.at_ids + to]
    }

    pub fn dedup_rec(&self, i: usize) -> (u128, u32) {
        let at = self.at_dedup + i * DEDUP_REC;
        (u128_at(self.bytes, at), u32_at(self.bytes, at + 16))
    }

    pub fn bucket(&self, i: usize) -> (u128, u32, u32) {
        let at = self.at_buckets + i * BUCKET_REC;
        (
            u128_at(self.bytes, at),
            u32_at(self.bytes, at + 16),
            u32_at(self.bytes, at + 20),
        )
    }

    /// (local counter, local customer, epoch) of marker i.
    pub fn marker(&self, i: usize) -> (u32, u32, u32) {
        let at = self.at_markers + i * MARKER_REC;
        (
            u32_at(self.bytes, at),
            u32_at(self.bytes, at + 4),
            u32_at(self.bytes, at + 8),
        )
    }

    /// (local counter, count, uniques) of total i.
    pub fn total(&self, i: usize) -> (u32, f64, f64) {
        let at = self.at_totals + i * TOTAL_REC;
        (
            u32_at(self.bytes, at),
            f64_at(self.bytes, at + 4),
            f64_at(self.bytes, at + 12),
        )
    }
}
