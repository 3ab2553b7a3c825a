//! Segments: changes of one key group's counting state (a commit's, or a sweep's rewrite of
//! what is left), as one blob for TypeScript to store (RocksDB) and to hand back to
//! `CountKernel.loadSegment()`. A group's state is the ordered sequence of its segments;
//! loading them in the order they were written rebuilds it, later records overriding earlier.
//! The kernel writes a group's counters and totals and the rest as two segments of this one
//! format, each with the other's sections empty.
//!
//! `encode` writes version 2; `Segment::parse` reads versions 2 and 1 (a data dir or a
//! checkpoint written before version 2 keeps its segments, which are never rewritten).
//!
//! # Format, version 2
//!
//! Segments are the whole persisted state of the native engine, and most of a segment is
//! markers and dedup records, so version 2 spends bytes only where the information is:
//! small numbers are LEB128 varints (7 bits a byte, low group first), numbers that follow
//! a predictable one are stored as the difference, and 128-bit fingerprints, which are
//! random, stay 16 raw little-endian bytes.
//!
//! ```text
//! header:
//!   [0..4)   magic    b"ABSG"
//!   [4..6)   version  u16 LE = 2
//!   [6..8)   flags    u16 LE (bit 0: account level; informative)
//!   [8..12)  group    u32 LE   the key group (0..65535); must equal loadSegment's argument
//!   [12..16) length   u32 LE   of the whole segment, trailer included
//!   seven varint counts: customers, counters, dedup, buckets, markers, totals, idBytes
//! sections, in this order:
//!   customers  count × { fp 16 B, local z }          a new customer and its local number
//!   counters   count × { fp 16 B, local z, shared v, suffix v, suffix bytes }
//!              a new counter, its local number and its id: the first `shared` bytes of the
//!              previous counter's id (none before the first), then the suffix
//!   dedup      count × { fp 16 B, first z }         a dedup identity set to its first ingest
//!   buckets    count × { fp 16 B, hour z, epoch v }  a bucket record (last ingest hour, epoch)
//!   markers    runs × { customer v, epoch v, n v, counter v, (n - 1) × counter step v }
//!              n ≥ 1 markers (counter, customer, epoch), counters ascending within a run;
//!              as many runs as it takes to hold `markers` markers
//!   totals     count × { counter step v, count t, uniques t }, counters ascending
//! trailer, 8 bytes:
//!   xxh3_64 LE of every byte before it
//!
//! v: an unsigned varint.
//! z: a varint of the zigzag-coded difference from a predicted value: a local number's
//!    prediction is the previous record's plus 1 (0 for the first), a first ingest's or an
//!    hour's the previous record's (0 for the first).
//! step: the difference from the previous counter of the run or section (0 for the first).
//! t: a total: varint(2x) when x is a whole number in [0, 2^53) (+0.0 included, -0.0 not),
//!    else varint(1) followed by the f64's 8 bytes LE.
//! ```
//!
//! Runs are why markers are cheap: an event sets its new markers together, all of one
//! customer and, per granularity, of one epoch, and counters made by the same events have
//! nearby local numbers, so a marker mostly takes one byte. The encoder starts a new run
//! wherever (customer, epoch) changes and sorts the counters within a run; that cannot
//! change what loading the segment does, because two records of one run with the same
//! counter are the same record, and no record moves past a record of another run.
//! A segment lists a counter's total once (read when written: a repeat would be equal), so
//! the order of totals is free. Sharing at most `MAX_SHARED` (1024) bytes of the previous id
//! bounds what a segment can expand to when loaded.
//!
//! Every count is checked against the bytes there are before anything is allocated, every
//! number against the width it decodes to, and every byte of the body must be read:
//! anything else is an Err naming the section and record.
//!
//! # Format, version 1 (read only; all integers little-endian, no padding)
//!
//! ```text
//! header, 40 bytes:
//!   [0..4)   magic    b"ABSG"
//!   [4..6)   version  u16 = 1
//!   [6..8)   flags    u16
//!   [8..12)  group    u32
//!   [12..40) seven u32 counts, in this order:
//!            customers, counters, dedup, buckets, markers, totals, idBytes
//! sections, in this order, each `count` fixed-width records:
//!   customers  20 B: fp u128, local u32
//!   counters   24 B: fp u128, local u32, len u32 (id length)
//!   dedup      20 B: fp u128, first u32
//!   buckets    24 B: fp u128, hour u32, epoch u32
//!   markers    12 B: counter u32, customer u32, epoch u32
//!   totals     20 B: counter u32, count f64, uniques f64
//!   ids        idBytes bytes: the new counters' ids (UTF-8), concatenated in counter order
//! trailer, 8 bytes:
//!   xxh3_64 of every byte before it
//! ```
//!
//! # Both versions
//!
//! Group-local numbers are handed out per group in order of creation, from 0 (counters and
//! customers separately): the n-th new-counter record of a group's whole segment sequence
//! has local number n, so a loader checks each new record's number against the group's next
//! one. Markers and totals refer to counters and customers by local number, which keeps
//! segments independent of the process's own (global, renumbered on `dropGroups`)
//! numbering. Epochs are below 2^31. Except where said above, records are in the order the
//! changes were made; a later record of the same key (in the same or a later segment)
//! overrides an earlier one.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_64;

pub const MAGIC: &[u8; 4] = b"ABSG";
/// The version `encode` writes.
pub const VERSION: u16 = 2;
pub const TRAILER: usize = 8;
/// Epochs (buckets and markers) stay below this, so that epoch + 1 never wraps.
pub const EPOCH_LIMIT: u32 = 1 << 31;
/// The most bytes a counter's id takes from the previous id (version 2).
const MAX_SHARED: usize = 1024;

pub const FLAG_ACCOUNT: u16 = 1;

/// Magic, version, flags, group, length.
const V2_FIXED: usize = 16;
const V2_COUNTS: usize = 7;
const V1_HEADER: usize = 40;
/// Record sizes of version 1, in section order (ids count in bytes).
const V1_RECORDS: [usize; 7] = [20, 24, 20, 24, 12, 20, 1];

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

    /// The header's seven counts, in section order, with the ids' total length last.
    pub fn section_counts(&self, id_bytes: usize) -> [usize; 7] {
        [
            self.customers.len(),
            self.counters.len(),
            self.dedup.len(),
            self.buckets.len(),
            self.markers.len(),
            self.totals.len(),
            id_bytes,
        ]
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

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// `v` as the zigzag-coded difference from `predicted`: small either side of it is short.
fn put_diff(b: &mut Vec<u8>, v: u32, predicted: i64) {
    let d = v as i64 - predicted;
    put_varint(b, ((d << 1) ^ (d >> 63)) as u64);
}

/// A count or uniques: whole numbers (what counts are) as a varint, anything else exactly.
fn put_number(b: &mut Vec<u8>, x: f64) {
    let n = x as u64; // saturates; the bit comparison below rejects what does not round-trip
    if n < 1 << 53 && (n as f64).to_bits() == x.to_bits() {
        put_varint(b, n << 1);
    } else {
        b.push(1);
        b.extend_from_slice(&x.to_le_bytes());
    }
}

/// Where (customer, epoch) changes, a run of markers ends.
fn same_run(a: &[u32; 3], b: &[u32; 3]) -> bool {
    a[1] == b[1] && a[2] == b[2]
}

/// Encodes `ch` as a version-2 segment of `group`. `id(local)` is a new counter's id,
/// `total(local)` a counter's total (count, uniques).
pub fn encode<'a>(
    group: u32,
    flags: u16,
    ch: &Changes,
    id: impl Fn(u32) -> &'a [u8],
    total: impl Fn(u32) -> (f64, f64),
) -> Vec<u8> {
    let id_bytes: usize = ch.counters.iter().map(|&(_, l)| id(l).len()).sum();
    // Typical sizes, so that the buffer rarely grows.
    let mut b = Vec::with_capacity(
        64 + 18 * (ch.customers.len() + ch.dedup.len() + ch.buckets.len())
            + 20 * ch.counters.len()
            + id_bytes / 2
            + 2 * ch.markers.len()
            + 5 * ch.totals.len(),
    );
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&group.to_le_bytes());
    b.extend_from_slice(&[0; 4]); // the length, known at the end
    for n in ch.section_counts(id_bytes) {
        put_varint(&mut b, n as u64);
    }

    let mut next = 0i64;
    for &(fp, local) in &ch.customers {
        b.extend_from_slice(&fp.to_le_bytes());
        put_diff(&mut b, local, next);
        next = local as i64 + 1;
    }
    let (mut next, mut prev): (i64, &[u8]) = (0, &[]);
    for &(fp, local) in &ch.counters {
        b.extend_from_slice(&fp.to_le_bytes());
        put_diff(&mut b, local, next);
        next = local as i64 + 1;
        let this = id(local);
        let shared = prev
            .iter()
            .zip(this)
            .take(MAX_SHARED)
            .take_while(|(x, y)| x == y)
            .count();
        put_varint(&mut b, shared as u64);
        put_varint(&mut b, (this.len() - shared) as u64);
        b.extend_from_slice(&this[shared..]);
        prev = this;
    }
    let mut last = 0i64;
    for &(fp, first) in &ch.dedup {
        b.extend_from_slice(&fp.to_le_bytes());
        put_diff(&mut b, first, last);
        last = first as i64;
    }
    let mut last = 0i64;
    for &(fp, hour, epoch) in &ch.buckets {
        b.extend_from_slice(&fp.to_le_bytes());
        put_diff(&mut b, hour, last);
        put_varint(&mut b, epoch as u64);
        last = hour as i64;
    }
    let mut run: Vec<u32> = Vec::new();
    for ms in ch.markers.chunk_by(same_run) {
        run.clear();
        run.extend(ms.iter().map(|m| m[0]));
        run.sort_unstable();
        put_varint(&mut b, ms[0][1] as u64);
        put_varint(&mut b, ms[0][2] as u64);
        put_varint(&mut b, run.len() as u64);
        let mut prev = 0;
        for &c in &run {
            put_varint(&mut b, (c - prev) as u64);
            prev = c;
        }
    }
    // Read every total before encoding any: the reads miss the cache, and a loop that does
    // nothing else with them lets the misses overlap.
    let mut totals: Vec<(u32, f64, f64)> = ch
        .totals
        .iter()
        .map(|&local| {
            let (count, uniques) = total(local);
            (local, count, uniques)
        })
        .collect();
    totals.sort_unstable_by_key(|t| t.0);
    let mut prev = 0;
    for &(local, count, uniques) in &totals {
        put_varint(&mut b, (local - prev) as u64);
        put_number(&mut b, count);
        put_number(&mut b, uniques);
        prev = local;
    }

    // A segment's base64 must fit in one JS string, far below 4 GiB; were it ever longer,
    // the saturated length makes loading it fail loudly rather than misread it.
    let length = u32::try_from(b.len() + TRAILER).unwrap_or(u32::MAX);
    b[12..16].copy_from_slice(&length.to_le_bytes());
    let sum = xxh3_64(&b);
    b.extend_from_slice(&sum.to_le_bytes());
    b
}

/// What a read of a malformed record says, completed with the section and record.
type Read<T> = Result<T, &'static str>;

/// Reads the body of a version-2 segment; every read checks the bytes left.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn take(&mut self, n: usize) -> Read<&'a [u8]> {
        if n > self.left() {
            return Err("runs past the end of the segment");
        }
        self.at += n;
        Ok(&self.b[self.at - n..self.at])
    }

    fn fp(&mut self) -> Read<u128> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16)?);
        Ok(u128::from_le_bytes(a))
    }

    fn varint(&mut self) -> Read<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let &byte = self
                .b
                .get(self.at)
                .ok_or("runs past the end of the segment")?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err("has a number wider than 64 bits");
            }
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    fn u32(&mut self) -> Read<u32> {
        u32::try_from(self.varint()?).map_err(|_| "has a number above 2^32 - 1")
    }

    /// The inverse of `put_diff`.
    fn diff(&mut self, predicted: i64) -> Read<u32> {
        let z = self.varint()?;
        let d = (z >> 1) as i64 ^ -((z & 1) as i64);
        predicted
            .checked_add(d)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or("has a number outside 0..2^32")
    }

    /// `prev` plus a step.
    fn step(&mut self, prev: u32) -> Read<u32> {
        let s = self.u32()?;
        prev.checked_add(s).ok_or("has a number above 2^32 - 1")
    }

    /// The inverse of `put_number`.
    fn number(&mut self) -> Read<f64> {
        match self.varint()? {
            1 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(self.take(8)?);
                Ok(f64::from_le_bytes(a))
            }
            v if v & 1 == 0 && v >> 1 < 1 << 53 => Ok((v >> 1) as f64),
            _ => Err("has a malformed number"),
        }
    }
}

/// A segment of either version, checked and decoded whole: framing (magic, version, group,
/// length, checksum) and encoding. The accessors read its records; what they mean (local
/// numbers, ids, epochs) is checked by the loader.
pub struct Segment<'a> {
    pub flags: u16,
    pub customers: usize,
    pub counters: usize,
    pub dedup: usize,
    pub buckets: usize,
    pub markers: usize,
    pub totals: usize,
    pub id_bytes: usize,
    /// Bytes of each section as stored (customers, counters with their ids, dedup, buckets,
    /// markers, totals): what each kind of state costs on disk.
    pub section_bytes: [usize; 6],
    customer_recs: Vec<(u128, u32)>,
    counter_recs: Vec<(u128, u32, u32)>,
    dedup_recs: Vec<(u128, u32)>,
    bucket_recs: Vec<(u128, u32, u32)>,
    marker_recs: Vec<[u32; 3]>,
    total_recs: Vec<(u32, f64, f64)>,
    /// The new counters' ids, concatenated: decoded from version 2, borrowed from version 1.
    id_arena: Cow<'a, [u8]>,
}

impl<'a> Segment<'a> {
    /// Checks and decodes `bytes` as a segment of `group`; Err says what is wrong.
    pub fn parse(bytes: &'a [u8], group: u32) -> Result<Self, String> {
        if bytes.len() < 12 {
            return Err(format!(
                "segment of key group {group} is truncated: {} bytes, a segment has at least {}",
                bytes.len(),
                V2_FIXED + V2_COUNTS + TRAILER
            ));
        }
        if &bytes[0..4] != MAGIC {
            return Err(format!(
                "segment of key group {group} does not start with the magic ABSG"
            ));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != 1 && version != VERSION {
            return Err(format!("segment of key group {group} has version {version}; this kernel reads versions 1 and {VERSION}"));
        }
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        let own = u32_at(bytes, 8);
        if own != group {
            return Err(format!(
                "segment of key group {own} was loaded as key group {group}"
            ));
        }
        if version == 1 {
            parse_v1(bytes, group, flags)
        } else {
            parse_v2(bytes, group, flags)
        }
    }

    /// (fingerprint, local number) of new customer i.
    pub fn customer(&self, i: usize) -> (u128, u32) {
        self.customer_recs[i]
    }

    /// (fingerprint, local number, id length) of new counter i.
    pub fn counter(&self, i: usize) -> (u128, u32, u32) {
        self.counter_recs[i]
    }

    /// The id bytes [from, to) of the ids section (callers check the bounds against id_bytes).
    pub fn ids(&self, from: usize, to: usize) -> &[u8] {
        &self.id_arena[from..to]
    }

    pub fn dedup_rec(&self, i: usize) -> (u128, u32) {
        self.dedup_recs[i]
    }

    pub fn bucket(&self, i: usize) -> (u128, u32, u32) {
        self.bucket_recs[i]
    }

    /// (local counter, local customer, epoch) of marker i.
    pub fn marker(&self, i: usize) -> (u32, u32, u32) {
        let [c, cu, epoch] = self.marker_recs[i];
        (c, cu, epoch)
    }

    /// (local counter, count, uniques) of total i.
    pub fn total(&self, i: usize) -> (u32, f64, f64) {
        self.total_recs[i]
    }
}

/// The framing shared by both versions: the length announced against the length there is,
/// then the checksum.
fn check_frame(bytes: &[u8], group: u32, expected: u64) -> Result<(), String> {
    if expected != bytes.len() as u64 {
        let what = if (bytes.len() as u64) < expected {
            "truncated"
        } else {
            "too long"
        };
        return Err(format!("segment of key group {group} is {what}: its header announces {expected} bytes, it has {}", bytes.len()));
    }
    let body = bytes.len() - TRAILER;
    let mut stored = [0u8; 8];
    stored.copy_from_slice(&bytes[body..]);
    if xxh3_64(&bytes[..body]) != u64::from_le_bytes(stored) {
        return Err(format!(
            "segment of key group {group} is corrupt: its checksum does not match its contents"
        ));
    }
    Ok(())
}

fn parse_v2(bytes: &[u8], group: u32, flags: u16) -> Result<Segment<'_>, String> {
    let min = V2_FIXED + V2_COUNTS + TRAILER;
    if bytes.len() < V2_FIXED {
        return Err(format!(
            "segment of key group {group} is truncated: {} bytes, a segment has at least {min}",
            bytes.len()
        ));
    }
    let length = u32_at(bytes, 12) as usize;
    if length < min {
        return Err(format!("segment of key group {group} is corrupt: its header announces {length} bytes, a segment has at least {min}"));
    }
    check_frame(bytes, group, length as u64)?;
    let bad = |what: String| format!("segment of key group {group} is corrupt: {what}");
    let mut r = Reader {
        b: &bytes[V2_FIXED..bytes.len() - TRAILER],
        at: 0,
    };
    let mut n = [0usize; V2_COUNTS];
    for v in &mut n {
        *v = r
            .varint()
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| bad("its header's counts are malformed".to_string()))?;
    }
    let [customers, counters, dedup, buckets, markers, totals, id_bytes] = n;
    // Each record takes at least this many bytes, so the counts cannot make us allocate
    // more than the segment's bytes justify.
    let least = [17, 19, 17, 18, 1, 3]
        .iter()
        .zip(&n)
        .map(|(&size, &count)| size as u128 * count as u128)
        .sum::<u128>();
    if least > r.left() as u128 {
        return Err(bad(format!(
            "its counts announce at least {least} bytes of records, it has {}",
            r.left()
        )));
    }
    if id_bytes as u128 > r.left() as u128 + counters as u128 * MAX_SHARED as u128 {
        return Err(bad(format!(
            "it announces {id_bytes} id bytes, more than its counter records can hold"
        )));
    }
    let at = |what: &'static str, i: usize| move |e: &str| bad(format!("{what} {i} {e}"));

    let records_from = r.at;
    let mut ends = [0usize; 6];
    let mut customer_recs = Vec::with_capacity(customers);
    let mut next = 0i64;
    for i in 0..customers {
        let rec =
            (|| -> Read<_> { Ok((r.fp()?, r.diff(next)?)) })().map_err(at("new customer", i))?;
        next = rec.1 as i64 + 1;
        customer_recs.push(rec);
    }
    ends[0] = r.at;
    let mut counter_recs = Vec::with_capacity(counters);
    let mut ids: Vec<u8> = Vec::with_capacity(id_bytes);
    let (mut next, mut prev) = (0i64, 0..0);
    for i in 0..counters {
        let (fp, local, shared, suffix) = (|| -> Read<_> {
            let fp = r.fp()?;
            let local = r.diff(next)?;
            let shared = r.varint()?;
            if shared > prev.len() as u64 || shared > MAX_SHARED as u64 {
                return Err("shares more of the previous id than it can");
            }
            let len = r.varint()?;
            let suffix = r.take(usize::try_from(len).unwrap_or(usize::MAX))?;
            if shared as u128 + len as u128 > (id_bytes - ids.len()) as u128 {
                return Err("has an id past the announced id bytes");
            }
            if shared + len > u32::MAX as u64 {
                return Err("has an id of 2^32 bytes or more");
            }
            Ok((fp, local, shared as usize, suffix))
        })()
        .map_err(at("new counter", i))?;
        let start = ids.len();
        ids.extend_from_within(prev.start..prev.start + shared);
        ids.extend_from_slice(suffix);
        prev = start..ids.len();
        next = local as i64 + 1;
        counter_recs.push((fp, local, prev.len() as u32));
    }
    if ids.len() != id_bytes {
        return Err(bad(format!(
            "its new counters' ids take {} of its {id_bytes} id bytes",
            ids.len()
        )));
    }
    ends[1] = r.at;
    let mut dedup_recs = Vec::with_capacity(dedup);
    let mut last = 0i64;
    for i in 0..dedup {
        let rec =
            (|| -> Read<_> { Ok((r.fp()?, r.diff(last)?)) })().map_err(at("dedup record", i))?;
        last = rec.1 as i64;
        dedup_recs.push(rec);
    }
    ends[2] = r.at;
    let mut bucket_recs = Vec::with_capacity(buckets);
    let mut last = 0i64;
    for i in 0..buckets {
        let rec = (|| -> Read<_> { Ok((r.fp()?, r.diff(last)?, r.u32()?)) })()
            .map_err(at("bucket record", i))?;
        last = rec.1 as i64;
        bucket_recs.push(rec);
    }
    ends[3] = r.at;
    let mut marker_recs = Vec::with_capacity(markers);
    let mut run = 0;
    while marker_recs.len() < markers {
        (|| -> Read<_> {
            let (customer, epoch, len) = (r.u32()?, r.u32()?, r.varint()?);
            if len == 0 || len > (markers - marker_recs.len()) as u64 {
                return Err("has a number of markers that is 0 or past the announced markers");
            }
            let mut c = 0;
            for _ in 0..len {
                c = r.step(c)?;
                marker_recs.push([c, customer, epoch]);
            }
            Ok(())
        })()
        .map_err(at("marker run", run))?;
        run += 1;
    }
    ends[4] = r.at;
    let mut total_recs = Vec::with_capacity(totals);
    let mut prev = 0;
    for i in 0..totals {
        let rec = (|| -> Read<_> { Ok((r.step(prev)?, r.number()?, r.number()?)) })()
            .map_err(at("total", i))?;
        prev = rec.0;
        total_recs.push(rec);
    }
    ends[5] = r.at;
    if r.left() != 0 {
        return Err(bad(format!("{} bytes follow its last record", r.left())));
    }
    Ok(Segment {
        flags,
        customers,
        counters,
        dedup,
        buckets,
        markers,
        totals,
        id_bytes,
        section_bytes: std::array::from_fn(|k| ends[k] - if k == 0 { records_from } else { ends[k - 1] }),
        customer_recs,
        counter_recs,
        dedup_recs,
        bucket_recs,
        marker_recs,
        total_recs,
        id_arena: Cow::Owned(ids),
    })
}

fn parse_v1(bytes: &[u8], group: u32, flags: u16) -> Result<Segment<'_>, String> {
    if bytes.len() < V1_HEADER + TRAILER {
        return Err(format!(
            "segment of key group {group} is truncated: {} bytes, a version 1 segment has at least {}",
            bytes.len(),
            V1_HEADER + TRAILER
        ));
    }
    let n: Vec<usize> = (0..7).map(|i| u32_at(bytes, 12 + 4 * i) as usize).collect();
    let mut at = [0usize; 7];
    let mut end = V1_HEADER as u64;
    for i in 0..7 {
        at[i] = end as usize;
        end += n[i] as u64 * V1_RECORDS[i] as u64;
    }
    check_frame(bytes, group, end + TRAILER as u64)?;
    let fp = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&bytes[at..at + 16]);
        u128::from_le_bytes(a)
    };
    let u32_ = |at: usize| u32_at(bytes, at);
    let f64_ = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[at..at + 8]);
        f64::from_le_bytes(a)
    };
    // The first byte of each record of section k.
    let recs = |k: usize| (0..n[k]).map(move |i| at[k] + i * V1_RECORDS[k]);
    Ok(Segment {
        flags,
        customers: n[0],
        counters: n[1],
        dedup: n[2],
        buckets: n[3],
        markers: n[4],
        totals: n[5],
        id_bytes: n[6],
        // The ids (section 6) belong to the counters.
        section_bytes: std::array::from_fn(|k| n[k] * V1_RECORDS[k] + if k == 1 { n[6] } else { 0 }),
        customer_recs: recs(0).map(|a| (fp(a), u32_(a + 16))).collect(),
        counter_recs: recs(1).map(|a| (fp(a), u32_(a + 16), u32_(a + 20))).collect(),
        dedup_recs: recs(2).map(|a| (fp(a), u32_(a + 16))).collect(),
        bucket_recs: recs(3).map(|a| (fp(a), u32_(a + 16), u32_(a + 20))).collect(),
        marker_recs: recs(4).map(|a| [u32_(a), u32_(a + 4), u32_(a + 8)]).collect(),
        total_recs: recs(5).map(|a| (u32_(a), f64_(a + 4), f64_(a + 12))).collect(),
        id_arena: Cow::Borrowed(&bytes[at[6]..at[6] + n[6]]),
    })
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn fp(&mut self) -> u128 {
            (self.next() as u128) << 64 | self.next() as u128
        }
    }

    /// What encode is handed: the changes, and the ids and totals it reads by local number.
    #[derive(Default)]
    struct Case {
        ch: Changes,
        ids: HashMap<u32, Vec<u8>>,
        totals: HashMap<u32, (f64, f64)>,
    }

    impl Case {
        fn encode(&self, group: u32) -> Vec<u8> {
            encode(
                group,
                FLAG_ACCOUNT,
                &self.ch,
                |l| self.ids[&l].as_slice(),
                |l| self.totals[&l],
            )
        }

        fn encode_v1(&self, group: u32) -> Vec<u8> {
            encode_v1(
                group,
                &self.ch,
                |l| self.ids[&l].as_slice(),
                |l| self.totals[&l],
            )
        }

        /// Ids and totals by local number, as the kernel keeps them (for timing).
        fn dense(&self) -> (Vec<&[u8]>, Vec<(f64, f64)>) {
            let keys = self.ids.keys().chain(self.totals.keys());
            let top = keys.max().map_or(0, |&l| l as usize + 1);
            let mut ids = vec![&[][..]; top];
            let mut totals = vec![(0.0, 0.0); top];
            self.ids.iter().for_each(|(&l, id)| ids[l as usize] = id);
            self.totals
                .iter()
                .for_each(|(&l, &t)| totals[l as usize] = t);
            (ids, totals)
        }
    }

    /// A segment's records, f64s as bits so that NaN compares.
    #[derive(Debug, PartialEq)]
    struct Records {
        customers: Vec<(u128, u32)>,
        counters: Vec<(u128, u32, Vec<u8>)>,
        dedup: Vec<(u128, u32)>,
        buckets: Vec<(u128, u32, u32)>,
        markers: Vec<[u32; 3]>,
        totals: Vec<(u32, u64, u64)>,
    }

    fn records(s: &Segment) -> Records {
        let mut at = 0;
        let counters = (0..s.counters)
            .map(|i| {
                let (fp, local, len) = s.counter(i);
                at += len as usize;
                (fp, local, s.ids(at - len as usize, at).to_vec())
            })
            .collect();
        assert_eq!(at, s.id_bytes);
        Records {
            customers: (0..s.customers).map(|i| s.customer(i)).collect(),
            counters,
            dedup: (0..s.dedup).map(|i| s.dedup_rec(i)).collect(),
            buckets: (0..s.buckets).map(|i| s.bucket(i)).collect(),
            markers: (0..s.markers)
                .map(|i| {
                    let (c, cu, e) = s.marker(i);
                    [c, cu, e]
                })
                .collect(),
            totals: (0..s.totals)
                .map(|i| {
                    let (c, n, u) = s.total(i);
                    (c, n.to_bits(), u.to_bits())
                })
                .collect(),
        }
    }

    /// What a version-2 segment of `c` decodes to: runs' counters and totals sorted.
    fn expected(c: &Case, sorted: bool) -> Records {
        let mut markers = Vec::new();
        for run in c.ch.markers.chunk_by(same_run) {
            let mut run = run.to_vec();
            if sorted {
                run.sort_unstable();
            }
            markers.extend(run);
        }
        let mut totals: Vec<(u32, u64, u64)> =
            c.ch.totals
                .iter()
                .map(|&l| (l, c.totals[&l].0.to_bits(), c.totals[&l].1.to_bits()))
                .collect();
        if sorted {
            totals.sort_unstable_by_key(|t| t.0);
        }
        Records {
            customers: c.ch.customers.clone(),
            counters: c
                .ch
                .counters
                .iter()
                .map(|&(fp, l)| (fp, l, c.ids[&l].clone()))
                .collect(),
            dedup: c.ch.dedup.clone(),
            buckets: c.ch.buckets.clone(),
            markers,
            totals,
        }
    }

    /// The records as a case, when encode can express them (one id and total per local).
    fn case_of(r: &Records) -> Option<Case> {
        let mut c = Case::default();
        c.ch.customers = r.customers.clone();
        c.ch.dedup = r.dedup.clone();
        c.ch.buckets = r.buckets.clone();
        c.ch.markers = r.markers.clone();
        for (fp, l, id) in &r.counters {
            c.ch.counters.push((*fp, *l));
            if c.ids.insert(*l, id.clone()).is_some() {
                return None;
            }
        }
        for &(l, n, u) in &r.totals {
            c.ch.totals.push(l);
            let t = (f64::from_bits(n), f64::from_bits(u));
            if c.totals.insert(l, t).is_some() {
                return None;
            }
        }
        Some(c)
    }

    /// A version-1 segment, as the kernel wrote them before version 2.
    fn encode_v1<'a>(
        group: u32,
        ch: &Changes,
        id: impl Fn(u32) -> &'a [u8],
        total: impl Fn(u32) -> (f64, f64),
    ) -> Vec<u8> {
        let id_bytes: usize = ch.counters.iter().map(|&(_, l)| id(l).len()).sum();
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&FLAG_ACCOUNT.to_le_bytes());
        b.extend_from_slice(&group.to_le_bytes());
        for n in ch.section_counts(id_bytes) {
            b.extend_from_slice(&(n as u32).to_le_bytes());
        }
        let put = |b: &mut Vec<u8>, fp: u128, xs: &[u32]| {
            b.extend_from_slice(&fp.to_le_bytes());
            xs.iter()
                .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        };
        ch.customers
            .iter()
            .for_each(|&(fp, l)| put(&mut b, fp, &[l]));
        for &(fp, l) in &ch.counters {
            put(&mut b, fp, &[l, id(l).len() as u32]);
        }
        ch.dedup.iter().for_each(|&(fp, f)| put(&mut b, fp, &[f]));
        ch.buckets
            .iter()
            .for_each(|&(fp, h, e)| put(&mut b, fp, &[h, e]));
        for m in &ch.markers {
            m.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        }
        for &l in &ch.totals {
            let (count, uniques) = total(l);
            b.extend_from_slice(&l.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(&uniques.to_le_bytes());
        }
        for &(_, l) in &ch.counters {
            b.extend_from_slice(id(l));
        }
        let sum = xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// The changes of `events` events of one group after `before` events, made the way the
    /// kernel makes them: Zipf-like customers, 3 granularities × 7 tokens an event.
    fn realistic(seed: u64, before: usize, events: usize) -> Case {
        let mut r = Rng(seed);
        let mut c = Case::default();
        let (mut counters, mut customers) = (HashMap::new(), 0u32);
        let (mut marks, mut buckets) = (HashSet::new(), HashMap::new());
        let t0 = 1_790_000_000u32;
        for e in 0..before + events {
            if e == before {
                c = Case::default();
            }
            let ingest = t0 + e as u32 / 50;
            c.ch.dedup.push((r.fp(), ingest));
            // Zipf-like: mostly recent or popular customers, a third new ones.
            let cu = match r.below(3) {
                0 => customers,
                _ => {
                    let popular = r.below(customers as u64 + 1) + 1;
                    r.below(popular) as u32
                }
            };
            if cu == customers {
                c.ch.customers.push((r.fp(), cu));
                customers += 1;
            }
            let companies = r.below(300) + 1;
            let company = r.below(companies);
            let statistic = ["email_open", "click", "purchase"][r.below(3) as usize];
            for (g, unit) in [(0, 3600), (1, 86400), (2, 2_592_000)] {
                let bucket = ingest - ingest % unit;
                let stem = format!("{company}:co{company}{statistic}{g}{bucket}|");
                let epoch = match buckets.get(&stem) {
                    None => {
                        c.ch.buckets.push((r.fp(), bucket, 0));
                        buckets.insert(stem.clone(), 0);
                        0
                    }
                    // Now and then the bucket's markers expire: a new epoch.
                    Some(&e) if r.below(2000) == 0 => {
                        c.ch.buckets.push((r.fp(), bucket, e + 1));
                        buckets.insert(stem.clone(), e + 1);
                        e + 1
                    }
                    Some(&e) => e,
                };
                let mut tokens = vec!["*".to_string()];
                for (f, values) in [("campaign", 40), ("country", 20), ("plan", 3)] {
                    let popular = r.below(values) + 1;
                    tokens.push(format!("={f}{}", r.below(popular)));
                }
                for (f, values) in [("device", 3), ("channel", 4), ("list", 12)] {
                    tokens.push(format!("={f}{}", r.below(values)));
                }
                for t in tokens {
                    let id = format!("{stem}{t}");
                    let next = counters.len() as u32;
                    let local = *counters.entry(id.clone()).or_insert_with(|| {
                        c.ch.counters.push((r.fp(), next));
                        c.ids.insert(next, id.into_bytes());
                        next
                    });
                    if marks.insert((local, cu, epoch)) {
                        c.ch.markers.push([local, cu, epoch]);
                    }
                    if e >= before && !c.totals.contains_key(&local) {
                        let n = r.below(5000) as f64;
                        c.totals.insert(local, (n, (n / 3.0).floor()));
                        c.ch.totals.push(local);
                    }
                }
            }
        }
        // Ids of counters made before the segment are not needed by encode.
        c
    }

    /// Changes at the edges of what the format holds: extreme and out-of-order numbers,
    /// totals that are not whole, long and shared ids, repeated markers within a run.
    fn edges(seed: u64) -> Case {
        let mut r = Rng(seed);
        let mut c = Case::default();
        let num = |r: &mut Rng| match r.below(8) {
            0 => u32::MAX,
            1 => 0,
            2 => r.below(100) as u32,
            _ => r.next() as u32,
        };
        for _ in 0..r.below(6) {
            let l = num(&mut r);
            c.ch.customers.push((r.fp(), l));
        }
        let long = vec![b'x'; MAX_SHARED + 300];
        let mut locals = HashSet::new();
        for _ in 0..r.below(8) {
            let l = num(&mut r);
            if !locals.insert(l) {
                continue;
            }
            c.ch.counters.push((r.fp(), l));
            let mut id = match r.below(4) {
                0 => Vec::new(),
                1 => long[..r.below(long.len() as u64) as usize].to_vec(),
                _ => "é/ü".as_bytes().to_vec(),
            };
            id.extend((0..r.below(5)).map(|_| r.next() as u8));
            c.ids.insert(l, id);
        }
        for _ in 0..r.below(6) {
            let (fp, f) = (r.fp(), num(&mut r));
            c.ch.dedup.push((fp, f));
        }
        for _ in 0..r.below(6) {
            let (fp, h, e) = (r.fp(), num(&mut r), num(&mut r));
            c.ch.buckets.push((fp, h, e));
        }
        for _ in 0..r.below(12) {
            let m = [num(&mut r), r.below(3) as u32, r.below(2) as u32 * u32::MAX];
            for _ in 0..1 + r.below(2) {
                c.ch.markers.push(m);
            }
        }
        let values = [
            0.0,
            -0.0,
            1.0,
            0.5,
            -3.0,
            9007199254740991.0,
            9007199254740992.0,
            1e300,
            f64::INFINITY,
            f64::NAN,
        ];
        for _ in 0..r.below(6) {
            let l = num(&mut r);
            let t = (values[r.below(10) as usize], values[r.below(10) as usize]);
            c.totals.entry(l).or_insert(t);
            c.ch.totals.push(l);
        }
        c
    }

    fn parse(b: &[u8], group: u32) -> Result<Records, String> {
        Segment::parse(b, group).map(|s| records(&s))
    }

    #[test]
    fn round_trip() {
        for seed in 0..40 {
            let c = realistic(seed, seed as usize * 50, 1 + seed as usize * 7);
            assert_eq!(parse(&c.encode(3), 3).unwrap(), expected(&c, true));
            let c = edges(seed);
            assert_eq!(
                parse(&c.encode(65_535), 65_535).unwrap(),
                expected(&c, true)
            );
        }
        let empty = Case::default().encode(0);
        let s = Segment::parse(&empty, 0).unwrap();
        assert_eq!((s.flags, s.markers, s.id_bytes), (FLAG_ACCOUNT, 0, 0));
    }

    /// The sections' bytes add up to the segment's body: everything but the fixed header,
    /// the counts and the trailer (version 2), or the header and the trailer (version 1).
    #[test]
    fn section_bytes_cover_the_body() {
        for seed in 0..20 {
            let c = realistic(seed, 200, 40);
            let v2 = c.encode(3);
            let s = Segment::parse(&v2, 3).unwrap();
            let mut counts = Vec::new();
            for n in [s.customers, s.counters, s.dedup, s.buckets, s.markers, s.totals, s.id_bytes] {
                put_varint(&mut counts, n as u64);
            }
            assert_eq!(s.section_bytes.iter().sum::<usize>(), v2.len() - V2_FIXED - counts.len() - TRAILER);
            assert!(s.section_bytes[4] >= s.markers.min(1), "markers take bytes");
            let v1 = c.encode_v1(3);
            let s = Segment::parse(&v1, 3).unwrap();
            assert_eq!(s.section_bytes.iter().sum::<usize>(), v1.len() - V1_HEADER - TRAILER);
            assert_eq!(s.section_bytes[2], s.dedup * 20);
        }
    }

    #[test]
    fn reads_version_1() {
        for seed in 0..20 {
            for c in [realistic(seed, 100, 30), edges(seed)] {
                let v1 = c.encode_v1(5);
                assert_eq!(parse(&v1, 5).unwrap(), expected(&c, false));
                assert!(parse(&v1, 6).unwrap_err().contains("loaded as key group 6"));
                let msg = parse(&v1[..v1.len() - 1], 5).unwrap_err();
                assert!(msg.contains("truncated"), "{msg}");
                let mut bad = v1.clone();
                bad[v1.len() / 2] ^= 1;
                assert!(parse(&bad, 5).unwrap_err().contains("checksum"));
            }
        }
    }

    #[test]
    fn several_times_smaller_than_version_1() {
        let c = realistic(7, 20_000, 1_500);
        let (v1, v2) = (c.encode_v1(1).len(), c.encode(1).len());
        assert!(v2 * 3 < v1, "version 2: {v2} bytes, version 1: {v1}");
    }

    #[test]
    fn framing_errors() {
        let c = realistic(1, 500, 40);
        let b = c.encode(7);
        let err = |b: &[u8]| parse(b, 7).unwrap_err();
        assert!(err(&b[..0]).contains("truncated"));
        for len in 1..b.len() {
            let msg = err(&b[..len]);
            assert!(msg.contains("key group 7"), "{len}: {msg}");
            assert!(
                len < 12
                    || len >= 16 && !msg.contains("truncated")
                    || msg.contains("truncated")
                    || msg.contains("magic"),
                "{len}: {msg}"
            );
        }
        for len in 16..b.len() {
            assert!(err(&b[..len]).contains("truncated"));
        }
        let mut longer = b.clone();
        longer.push(0);
        assert!(err(&longer).contains("too long"));
        assert!(parse(&b, 8)
            .unwrap_err()
            .contains("key group 7 was loaded as key group 8"));
        let mut bad = b.clone();
        bad[4] = 3;
        assert!(err(&bad).contains("version 3"));
        bad = b.clone();
        bad[1] = b'C';
        assert!(err(&bad).contains("magic"));
        // Every bit flip is caught, by the framing or by the checksum.
        for at in 0..b.len() {
            for bit in 0..8 {
                let mut bad = b.clone();
                bad[at] ^= 1 << bit;
                let msg = err(&bad);
                assert!(!msg.is_empty());
            }
        }
    }

    /// A version-2 segment of group 1 with these counts and body, its framing valid.
    fn seal(counts: [u64; 7], body: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&FLAG_ACCOUNT.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        counts.iter().for_each(|&n| put_varint(&mut b, n));
        b.extend_from_slice(body);
        let length = (b.len() + TRAILER) as u32;
        b[12..16].copy_from_slice(&length.to_le_bytes());
        let sum = xxh3_64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn malformed_bodies() {
        let fp = [7u8; 16];
        let with = |parts: &[&[u8]]| parts.concat();
        // (counts, body, what the error says)
        #[rustfmt::skip]
        let cases: Vec<([u64; 7], Vec<u8>, &str)> = vec![
            ([0; 7], vec![0], "1 bytes follow its last record"),
            ([1, 0, 0, 0, 0, 0, 0], with(&[&fp]), "at least 17 bytes"),
            ([1 << 60, 0, 0, 0, 0, 0, 0], vec![0; 40], "counts announce"),
            ([1, 0, 0, 0, 0, 0, 0], with(&[&fp, &[0x80]]), "new customer 0 runs past the end"),
            ([1, 0, 0, 0, 0, 0, 0], with(&[&fp, &[0x80, 0x80, 0x80, 0x80, 0x20]]), "new customer 0 has a number outside"),
            ([1, 0, 0, 0, 0, 0, 0], with(&[&fp, &[0xff; 9], &[2]]), "wider than 64 bits"),
            ([0, 1, 0, 0, 0, 0, 1], with(&[&fp, &[0, 1, 1, b'a']]), "new counter 0 shares more"),
            ([0, 1, 0, 0, 0, 0, 2], with(&[&fp, &[0, 0, 1, b'a']]), "ids take 1 of its 2"),
            ([0, 1, 0, 0, 0, 0, 1], with(&[&fp, &[0, 0, 2, b'a', b'b']]), "past the announced id bytes"),
            ([0, 1, 0, 0, 0, 0, 0], with(&[&fp, &[0, 0, 9, b'a']]), "new counter 0 runs past"),
            ([0, 0, 0, 0, 2, 0, 0], vec![0, 0, 0, 0, 0, 0], "marker run 0 has a number of markers"),
            ([0, 0, 0, 0, 1, 0, 0], vec![0, 0, 2, 0, 0, 0], "marker run 0 has a number of markers"),
            ([0, 0, 0, 0, 3, 0, 0], vec![0, 0, 1, 0, 0, 0, 3, 0, 0, 0], "marker run 1 has a number of markers"),
            ([0, 0, 0, 0, 2, 0, 0], vec![0, 0, 1, 0], "marker run 1 runs past the end"),
            ([0, 0, 0, 0, 2, 0, 0], vec![0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f, 1], "marker run 0 has a number above"),
            ([0, 0, 0, 0, 1, 0, 0], vec![0x80, 0x80, 0x80, 0x80, 0x10, 0, 1, 0], "marker run 0 has a number above"),
            ([0, 0, 0, 0, 0, 1, 0], vec![0, 3, 0], "total 0 has a malformed number"),
            ([0, 0, 0, 0, 0, 1, 0], vec![0, 1, 0, 0], "total 0 runs past"),
            ([0, 0, 0, 0, 0, 1, 0], with(&[&[0], &[0x80; 7], &[0x20], &[0]]), "malformed number"),
            ([0, 0, 0, 0, 0, 2, 0], vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 1, 0, 0], "total 1 has a number above"),
            ([0, 0, 0, 1, 0, 0, 0], with(&[&fp, &[0, 0x80, 0x80, 0x80, 0x80, 0x10]]), "bucket record 0 has a number above"),
            ([0, 0, 1, 0, 0, 0, 0], with(&[&fp, &[1]]), "dedup record 0 has a number outside"),
        ];
        for (counts, body, what) in cases {
            let msg = parse(&seal(counts, &body), 1).unwrap_err();
            assert!(
                msg.contains("key group 1 is corrupt") && msg.contains(what),
                "{counts:?} {body:?}: {msg}"
            );
        }
        // Longer ids than the previous one, or sharing more than MAX_SHARED, are refused.
        let long = vec![b'x'; MAX_SHARED + 1];
        let mut body = with(&[&fp, &[0], &[0]]);
        put_varint(&mut body, long.len() as u64);
        body.extend_from_slice(&long);
        body.extend_from_slice(&fp);
        body.push(0);
        put_varint(&mut body, MAX_SHARED as u64 + 1);
        body.push(0);
        let counts = [0, 2, 0, 0, 0, 0, 2 * long.len() as u64];
        assert!(parse(&seal(counts, &body), 1)
            .unwrap_err()
            .contains("new counter 1 shares more"));
        // The header's counts themselves.
        let mut b = seal([0; 7], &[]);
        let n = b.len();
        b[n - 9] = 0x80;
        let sum = xxh3_64(&b[..n - 8]);
        b[n - 8..].copy_from_slice(&sum.to_le_bytes());
        assert!(parse(&b, 1).unwrap_err().contains("counts are malformed"));
        let mut b = seal([0; 7], &[]);
        b[12..16].copy_from_slice(&20u32.to_le_bytes());
        assert!(parse(&b[..20], 1)
            .unwrap_err()
            .contains("announces 20 bytes"));
    }

    /// Random mutations and truncations: an Err, or (when the bytes did not change) the
    /// same records; with the framing repaired, an Err or records that encode again.
    #[test]
    fn mutations_never_panic() {
        let mut r = Rng(2024);
        let cases: Vec<Case> = (0..12)
            .map(|s| {
                if s % 2 == 0 {
                    realistic(s, 200, 20)
                } else {
                    edges(s)
                }
            })
            .collect();
        let segs: Vec<Vec<u8>> = cases.iter().map(|c| c.encode(4)).collect();
        let mut decoded = 0;
        for round in 0..30_000 {
            let i = r.below(segs.len() as u64) as usize;
            let mut b = segs[i].clone();
            match r.below(4) {
                0 => b.truncate(r.below(b.len() as u64) as usize),
                1 => b.extend((0..1 + r.below(4)).map(|_| r.next() as u8)),
                _ => {
                    for _ in 0..1 + r.below(3) {
                        let at = r.below(b.len() as u64) as usize;
                        b[at] = r.next() as u8;
                    }
                }
            }
            match parse(&b, 4) {
                Ok(got) => {
                    assert_eq!(b, segs[i], "round {round}: a changed segment was accepted");
                    assert_eq!(got, expected(&cases[i], true));
                }
                Err(msg) => assert!(msg.contains("key group"), "{msg}"),
            }
            // Repair the length and checksum so that the body's checks are what is tested.
            if b.len() >= V2_FIXED + TRAILER && b[..4] == *MAGIC {
                let n = b.len();
                b[4..6].copy_from_slice(&VERSION.to_le_bytes());
                b[8..12].copy_from_slice(&4u32.to_le_bytes());
                b[12..16].copy_from_slice(&(n as u32).to_le_bytes());
                let sum = xxh3_64(&b[..n - TRAILER]);
                b[n - TRAILER..].copy_from_slice(&sum.to_le_bytes());
                if let Ok(got) = parse(&b, 4) {
                    decoded += 1;
                    if let Some(c) = case_of(&got) {
                        assert_eq!(parse(&c.encode(4), 4).unwrap(), expected(&c, true));
                    }
                }
            }
        }
        assert!(decoded > 0);
    }

    /// The best of many timings of `f` (short, so that some run without being preempted
    /// on a busy machine), in ns per marker.
    fn ns_per_marker(markers: usize, f: &dyn Fn() -> usize) -> f64 {
        (0..200)
            .map(|_| {
                let t = std::time::Instant::now();
                std::hint::black_box(f());
                t.elapsed().as_nanos() as f64 / markers as f64
            })
            .fold(f64::MAX, f64::min)
    }

    /// Sizes and speed on realistic changes: `cargo test --release cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cost() {
        let c = realistic(11, 200_000, 1_500);
        let (ids, totals) = c.dense();
        let id = |l: u32| ids[l as usize];
        let total = |l: u32| totals[l as usize];
        let (v1, v2) = (
            encode_v1(1, &c.ch, id, total),
            encode(1, 1, &c.ch, id, total),
        );
        let markers = c.ch.markers.len();
        println!(
            "1500 events, {} markers, {} new counters: version 1 {} bytes, version 2 {} bytes",
            c.ch.markers.len(),
            c.ch.counters.len(),
            v1.len(),
            v2.len()
        );
        let e1 = ns_per_marker(markers, &|| encode_v1(1, &c.ch, id, total).len());
        let e2 = ns_per_marker(markers, &|| encode(1, 1, &c.ch, id, total).len());
        let p1 = ns_per_marker(markers, &|| Segment::parse(&v1, 1).unwrap().markers);
        let p2 = ns_per_marker(markers, &|| Segment::parse(&v2, 1).unwrap().markers);
        println!("ns a marker: encode v1 {e1:.1}, v2 {e2:.1}; parse v1 {p1:.1}, v2 {p2:.1}");
    }
}
