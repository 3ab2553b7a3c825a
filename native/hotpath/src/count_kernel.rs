//! `CountKernel`: the production counting kernel (docs/adr/0007-hot-path.md). TypeScript
//! parses and validates events, encodes a micro-batch in the binary layout below and calls
//! `countBatch` once per micro-batch; the kernel owns the whole counting state in memory,
//! in key groups, applies the rules of worker/engine/counting.ts, and hands the state's
//! changes back as segments (src/segment.rs: per key group one of its counters and totals,
//! one of the rest) for TypeScript to store, and can load them back; `sweep` deletes what
//! expired and rewrites a group's segments.
//!
//! The fast path (`countLines`, src/fast_path.rs) skips TypeScript for the common shape of
//! event: the kernel reads the raw lines itself, encodes each in the layout below exactly as
//! TypeScript would, and counts the run of lines up to the first one it defers, which
//! TypeScript then parses (and counts or dead-letters) before calling it again.
//!
//! # Batch layout (little-endian), n events back to back
//!
//! ```text
//! u32 group, u32 ingestSec, u16 T,
//! str company, str statistic, str customer, str identity     (str = u32 length + UTF-8)
//! G × (f64 bucketEnd, str stem), T × str token               (the first token is "*")
//! ```
//!
//! The counter of (granularity i, token t) has the id `stem_i ++ token_t`.
//!
//! # State keys
//!
//! Every key is an XXH3-128 fingerprint in its own seed domain, built from the fingerprints of
//! its parts, and every key includes the key group (as TypeScript's state keys start with
//! the group prefix), so that a group's state is self-contained:
//!
//! - dedup identity: fp(company, statistic, customer, identity; group)
//! - customer: fp(customer; group)
//! - stem key (also the bucket record's key): fp(fp(stem); group)
//! - counter: fp(stem key, fp(token))
//!
//! Counters and customers get a dense in-memory (global) number, used to index the
//! per-counter arrays and as the marker key (counter, customer) in a `PairTable`, and a
//! group-local number (order of creation in the group) that segments use.
//!
//! Nothing in here panics on input: every malformed batch, argument or segment is an Error
//! naming the problem, found before any state is changed.

use std::collections::HashSet;

use napi::bindgen_prelude::{Buffer, Float64Array, Int32Array, Uint32Array, Uint8Array};
use napi::{Error, Result, Status};

use crate::civil::bucket_end;
use crate::fast_path::{self, FastPath, Granularity};
use crate::fingerprint::{fp, fp_of};
use crate::segment::{self, Changes, Segment, EPOCH_LIMIT, FLAG_ACCOUNT};
use crate::customer_markers::CustomerMarkers;
use crate::spill::{self, TagBag, KIND_IDENTITY, KIND_MARKERS, NEED_BYTES};
use crate::table::{PairTable, TagTable};

// Fingerprint domains (seeds) of the persisted state keys; never change them for existing state.
const S_PART: u64 = 0x51a7e;
const S_DEDUP: u64 = 0xdedf9;
const S_CUSTOMER: u64 = 0xc0575;
const S_STEM: u64 = 0x57e33;
const S_STEM_KEY: u64 = 0x57e34;
const S_TOKEN: u64 = 0x70ce2;
const S_COUNTER: u64 = 0xc0a27;

const GROUPS: usize = 65_536;
const NO_GROUP: u32 = u32::MAX;
/// A counter or customer number that no longer exists (its group was dropped).
const GONE: u32 = u32::MAX;
/// Counter flags: it has a stored total (so it is not fresh); its total is in its group's change list.
const HAS_TOTAL: u8 = 1;
const TOTAL_LISTED: u8 = 2;
/// Customer flags: its marker record may hold markers that memory does not (it was evicted,
/// or the record was found when its group was loaded); listed in the needs being built.
const CU_SPILLED: u8 = 1;
const CU_ASKED: u8 = 2;
/// The largest G accepted.
const MAX_GRANULARITIES: usize = 16;
/// |bucketEnd| must be below this (integral seconds, exactly representable).
const MAX_SECONDS: f64 = 9_007_199_254_740_992.0;

/// One key group's bookkeeping.
#[derive(Default)]
struct Group {
    id: u32,
    /// Group-local number → global number.
    counters: Vec<u32>,
    customers: Vec<u32>,
    ch: Changes,
    /// Listed in `Core::dirty`.
    dirty: bool,
    /// The newest ingest second of an event counted (or found a duplicate) in the group since
    /// it was loaded or created; 0 when none. It moves the group's expiry cutoff (`sweep`).
    watermark: u32,
    /// Tags of the group's dedup identities that have a spill record (src/spill.rs).
    spilled: TagBag,
}

type Span = (usize, usize);

/// One event's fields as byte ranges of the batch.
#[derive(Default)]
struct View {
    group: u32,
    ingest: u32,
    /// company, statistic, customer, identity
    parts: [Span; 4],
    ends: Vec<i64>,
    stems: Vec<Span>,
    tokens: Vec<Span>,
}

/// One event's fields and state keys.
#[derive(Default)]
struct Keys {
    view: View,
    dedup: u128,
    customer: u128,
    /// Per granularity: the stem key (bucket record key).
    stems: Vec<u128>,
    tokens: Vec<u128>,
    /// Per (granularity, token), granularity-major: the counter key.
    counters: Vec<u128>,
}

#[inline]
fn read_u32(b: &[u8], pos: &mut usize, i: usize, what: &str) -> std::result::Result<u32, String> {
    match b.get(*pos..*pos + 4) {
        Some(s) => {
            *pos += 4;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        }
        None => Err(format!(
            "event {i}: {what} at byte {} runs past the end of the batch ({} bytes)",
            *pos,
            b.len()
        )),
    }
}

#[inline]
fn read_str(b: &[u8], pos: &mut usize, i: usize, what: &str) -> std::result::Result<Span, String> {
    let len = read_u32(b, pos, i, what)? as usize;
    let from = *pos;
    if b.len() - from < len {
        return Err(format!("event {i}: {what} of {len} bytes at byte {from} runs past the end of the batch ({} bytes)", b.len()));
    }
    *pos += len;
    Ok((from, from + len))
}

/// Reads the event at `pos` into `v` and advances `pos`; `check` also validates what the
/// counting pass relies on (ranges, the first token, UTF-8 of stems and tokens).
fn parse_event(
    b: &[u8],
    pos: &mut usize,
    g: usize,
    i: usize,
    v: &mut View,
    check: bool,
) -> std::result::Result<(), String> {
    v.group = read_u32(b, pos, i, "group")?;
    v.ingest = read_u32(b, pos, i, "ingestSec")?;
    let t = match b.get(*pos..*pos + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]) as usize,
        None => {
            return Err(format!(
                "event {i}: token count at byte {} runs past the end of the batch ({} bytes)",
                *pos,
                b.len()
            ))
        }
    };
    *pos += 2;
    if check {
        if v.group as usize >= GROUPS {
            return Err(format!(
                "event {i}: key group {} is not in 0..65535",
                v.group
            ));
        }
        if t == 0 {
            return Err(format!(
                "event {i}: it has no tokens (the first must be \"*\")"
            ));
        }
    }
    for (k, what) in ["company", "statistic", "customer", "identity"]
        .iter()
        .enumerate()
    {
        v.parts[k] = read_str(b, pos, i, what)?;
    }
    v.ends.clear();
    v.stems.clear();
    for gi in 0..g {
        let end = match b.get(*pos..*pos + 8) {
            Some(s) => f64::from_le_bytes(s.try_into().map_err(|_| format!("event {i}: bucketEnd"))?),
            None => return Err(format!("event {i}: bucketEnd of granularity {gi} at byte {} runs past the end of the batch ({} bytes)", *pos, b.len())),
        };
        if check && !(end.is_finite() && end.fract() == 0.0 && end.abs() < MAX_SECONDS) {
            return Err(format!(
                "event {i}: bucketEnd of granularity {gi} is {end}, not a whole number of seconds"
            ));
        }
        *pos += 8;
        v.ends.push(end as i64);
        let stem = read_str(b, pos, i, "stem")?;
        if check && std::str::from_utf8(&b[stem.0..stem.1]).is_err() {
            return Err(format!(
                "event {i}: the stem of granularity {gi} is not valid UTF-8"
            ));
        }
        v.stems.push(stem);
    }
    v.tokens.clear();
    for ti in 0..t {
        let token = read_str(b, pos, i, "token")?;
        if check {
            if ti == 0 && &b[token.0..token.1] != b"*" {
                return Err(format!("event {i}: its first token is not \"*\""));
            }
            if std::str::from_utf8(&b[token.0..token.1]).is_err() {
                return Err(format!("event {i}: token {ti} is not valid UTF-8"));
            }
        }
        v.tokens.push(token);
    }
    Ok(())
}

/// Starts loading `v[i]`'s cache line (a no-op where there is no prefetch instruction).
#[inline]
fn prefetch<T>(v: &[T], i: u32) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = v.get(i as usize) {
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch(x as *const T as *const i8, _MM_HINT_T0);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, i);
}

#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct Tally {
    pub counted: u64,
    pub duplicates: u64,
    pub beyond_horizon: u64,
}

/// The result of `finalise`, in plain Rust.
#[derive(Default, Debug)]
pub struct Final {
    /// The counters' ids (UTF-8) back to back; id i ends at byte `id_ends[i]`.
    pub ids: Vec<u8>,
    pub id_ends: Vec<u32>,
    pub groups: Vec<u32>,
    pub counts: Vec<f64>,
    pub uniques: Vec<f64>,
    pub fresh: Vec<u8>,
}

/// A group's changes or state as two segments (`Core::encode_parts`): its counters and
/// their totals, then everything else; an empty Vec is no segment.
#[derive(Default, Debug, PartialEq)]
pub struct Parts {
    pub counters: Vec<u8>,
    pub state: Vec<u8>,
}

/// The result of `sweep`.
#[derive(Default, Debug)]
pub struct Swept {
    /// The groups swept (those the kernel holds), ascending, and their segments: `state` is
    /// the group's whole remaining state but its counters, replacing its earlier state
    /// segments; `counters` all its counters and totals when compacted in full (replacing
    /// its earlier counter segments), else the counters and totals of its pending changes.
    pub groups: Vec<u32>,
    pub parts: Vec<Parts>,
    /// Dedup identities and uniqueness markers deleted.
    pub dedup: u64,
    pub markers: u64,
}

/// What `sweep` decides for a counter's markers: kept whatever their epoch (its bucket is
/// unknown or its group is not swept), all deleted, or kept only at the bucket's epoch
/// (any other value: that epoch, below EPOCH_LIMIT).
const MARKERS_KEPT: u32 = u32::MAX;
const MARKERS_EXPIRED: u32 = u32::MAX - 1;

/// Calls `f` with `ch`'s counters and totals apart from the rest of it (moved out and back:
/// no copy).
fn counters_apart<R>(ch: &mut Changes, f: impl FnOnce(&Changes, &Changes) -> R) -> R {
    let mut counters = Changes::default();
    std::mem::swap(&mut counters.counters, &mut ch.counters);
    std::mem::swap(&mut counters.totals, &mut ch.totals);
    let out = f(&counters, ch);
    std::mem::swap(&mut counters.counters, &mut ch.counters);
    std::mem::swap(&mut counters.totals, &mut ch.totals);
    out
}

/// The stem of a counter id (counter-id.ts: `lp(scope) lp(statistic) g bucket '|' token`, where
/// lp(s) = `${s.length}:${s}` counts UTF-16 code units): the stem's length in bytes (up to and
/// including the '|'), the granularity (0 hour, 1 day, 2 month) and the bucket's start second.
/// None for anything else.
fn stem_of_id(id: &[u8]) -> Option<(usize, u32, i64)> {
    let mut pos = 0;
    for _ in 0..2 {
        let colon = pos + id.get(pos..)?.iter().position(|&c| c == b':')?;
        let units: usize = std::str::from_utf8(&id[pos..colon]).ok()?.parse().ok()?;
        pos = colon + 1;
        let mut seen = 0;
        while seen < units {
            let lead = *id.get(pos)?;
            let (bytes, n) = match lead {
                0x00..=0x7f => (1, 1),
                0xc0..=0xdf => (2, 1),
                0xe0..=0xef => (3, 1),
                0xf0..=0xf7 => (4, 2),
                _ => return None,
            };
            pos += bytes;
            seen += n;
        }
        if seen != units {
            return None;
        }
    }
    let g = match id.get(pos)? {
        b'h' => 0,
        b'd' => 1,
        b'm' => 2,
        _ => return None,
    };
    let bar = pos + 1 + id.get(pos + 1..)?.iter().position(|&c| c == b'|')?;
    let start: i64 = std::str::from_utf8(&id[pos + 1..bar]).ok()?.parse().ok()?;
    Some((bar + 1, g, start))
}

/// The kernel without napi types (the napi class wraps it; the tests drive it directly).
pub struct Core {
    g: usize,
    account: bool,
    dedup_retention: i64,
    uniques_retention: i64,

    /// Dedup identity → first ingest second.
    dedup: TagTable<u32>,
    /// Stem key → [last ingest hour, epoch].
    buckets: TagTable<[u32; 2]>,
    /// Customer key → global customer number.
    customers: TagTable<u32>,
    /// Counter key → global counter number.
    counter_index: TagTable<u32>,
    /// Markers of epoch 0: per customer, the counters it was counted in.
    customer_markers: CustomerMarkers,
    /// Markers of later epochs: (global counter, global customer) → epoch + 1.
    markers: PairTable,

    // Per counter (global number).
    c_group: Vec<u16>,
    c_local: Vec<u32>,
    /// End of the counter's id in `ids` (it starts where the previous one ends).
    c_id_end: Vec<u64>,
    ids: Vec<u8>,
    /// Stored totals (count, uniques).
    c_total: Vec<[f64; 2]>,
    /// This window's deltas (count, uniques).
    c_win: Vec<[u32; 2]>,
    c_flags: Vec<u8>,

    // Per customer (global number).
    cu_group: Vec<u16>,
    cu_local: Vec<u32>,
    /// CU_SPILLED, CU_ASKED.
    cu_flags: Vec<u8>,
    /// The window (`stamp`) in which the customer was last counted: eviction takes the oldest.
    cu_used: Vec<u32>,
    /// Moves at each `finalise`.
    stamp: u32,
    /// Customers flagged CU_SPILLED, and tags in the groups' bags.
    spilled_customers: usize,
    spilled_identities: usize,

    /// Key group → index in `gs`, or NO_GROUP.
    group_slot: Vec<u32>,
    gs: Vec<Group>,
    /// Groups with changes since the last `changes()`.
    dirty: Vec<u32>,

    /// Counters touched in this window, in first-touched order.
    touched: Vec<u32>,
    /// The counters of the last `finalise()`, by position (GONE once dropped).
    last_final: Vec<u32>,

    keys: [Keys; 2],
    event_counters: Vec<u32>,

    counted: u64,
    duplicates: u64,
    beyond_horizon: u64,
}

impl Core {
    pub fn new(
        granularities: usize,
        account: bool,
        dedup_retention_sec: f64,
        uniques_retention_sec: f64,
    ) -> std::result::Result<Self, String> {
        if granularities > MAX_GRANULARITIES {
            return Err(format!(
                "granularities must be 0..{MAX_GRANULARITIES}, got {granularities}"
            ));
        }
        for (name, v) in [
            ("dedupRetentionSec", dedup_retention_sec),
            ("uniquesRetentionSec", uniques_retention_sec),
        ] {
            if v.is_nan() || v < 0.0 {
                return Err(format!("{name} must be a number of seconds >= 0, got {v}"));
            }
        }
        Ok(Core {
            g: granularities,
            account,
            // Saturating: a retention beyond i64 (e.g. Infinity) never expires.
            dedup_retention: dedup_retention_sec.floor() as i64,
            uniques_retention: uniques_retention_sec.floor() as i64,
            dedup: TagTable::new(1 << 16),
            buckets: TagTable::new(1 << 10),
            customers: TagTable::new(if account { 1 << 14 } else { 0 }),
            counter_index: TagTable::new(1 << 14),
            customer_markers: CustomerMarkers::new(),
            // Markers past epoch 0 are rare (a bucket touched again after the uniques horizon).
            markers: PairTable::new(if account { 1 << 10 } else { 0 }),
            c_group: Vec::new(),
            c_local: Vec::new(),
            c_id_end: Vec::new(),
            ids: Vec::new(),
            c_total: Vec::new(),
            c_win: Vec::new(),
            c_flags: Vec::new(),
            cu_group: Vec::new(),
            cu_local: Vec::new(),
            cu_flags: Vec::new(),
            cu_used: Vec::new(),
            stamp: 0,
            spilled_customers: 0,
            spilled_identities: 0,
            group_slot: vec![NO_GROUP; GROUPS],
            gs: Vec::new(),
            dirty: Vec::new(),
            touched: Vec::new(),
            last_final: Vec::new(),
            keys: Default::default(),
            event_counters: Vec::new(),
            counted: 0,
            duplicates: 0,
            beyond_horizon: 0,
        })
    }

    /// The index in `gs` of `group`, created if absent.
    fn group_index(&mut self, group: u32) -> usize {
        let slot = self.group_slot[group as usize];
        if slot != NO_GROUP {
            return slot as usize;
        }
        let gi = self.gs.len();
        self.gs.push(Group {
            id: group,
            ..Default::default()
        });
        self.group_slot[group as usize] = gi as u32;
        gi
    }

    #[inline]
    fn mark_dirty(&mut self, gi: usize) {
        let grp = &mut self.gs[gi];
        if !grp.dirty {
            grp.dirty = true;
            self.dirty.push(grp.id);
        }
    }

    fn id_of(&self, c: u32) -> &[u8] {
        let c = c as usize;
        let from = if c == 0 {
            0
        } else {
            self.c_id_end[c - 1] as usize
        };
        &self.ids[from..self.c_id_end[c] as usize]
    }

    /// Counts the n events of `b`; the batch is checked whole before anything is counted.
    pub fn count_batch(&mut self, b: &[u8], n: usize) -> std::result::Result<Tally, String> {
        self.count_encoded(b, n, true)
    }

    /// count_batch, with the check of the whole batch first only when `check`: the fast
    /// path's batches are valid by construction (its encoder is tested byte for byte against
    /// TypeScript's), and the check took ~1.5 % of a run. Unchecked, reading stays bounded.
    fn count_encoded(&mut self, b: &[u8], n: usize, check: bool) -> std::result::Result<Tally, String> {
        let mut keys = std::mem::take(&mut self.keys);
        let mut pos = 0;
        for i in 0..if check { n } else { 0 } {
            if let Err(e) = parse_event(b, &mut pos, self.g, i, &mut keys[0].view, true) {
                self.keys = keys;
                return Err(e);
            }
        }
        if check && pos != b.len() {
            self.keys = keys;
            return Err(format!(
                "the batch has {} bytes after its {n} events (it holds {} bytes)",
                b.len() - pos,
                b.len()
            ));
        }
        let mut tally = Tally::default();
        let mut pos = 0;
        let mut result = Ok(());
        if n > 0 {
            result = parse_event(b, &mut pos, self.g, 0, &mut keys[0].view, false)
                .map(|_| self.event_keys(b, &mut keys[0]));
        }
        // The keys of event i + 1 are built (and their home slots prefetched) before event i
        // is counted, so that their cache misses overlap with its work. (Also looking up event
        // i + 1's customer and counters early, to prefetch its marker slots one event ahead,
        // measured 10-20 % slower on test/bench.js: the extra lookups cost more than they hide.)
        for i in 0..n {
            if result.is_err() {
                break;
            }
            let (a, z) = keys.split_at_mut(1);
            let (cur, next) = if i % 2 == 0 {
                (&mut a[0], &mut z[0])
            } else {
                (&mut z[0], &mut a[0])
            };
            if i + 1 < n {
                result = parse_event(b, &mut pos, self.g, i + 1, &mut next.view, false)
                    .map(|_| self.event_keys(b, next));
            }
            self.count_event(b, cur, &mut tally);
        }
        self.keys = keys;
        result?;
        self.counted += tally.counted;
        self.duplicates += tally.duplicates;
        self.beyond_horizon += tally.beyond_horizon;
        Ok(tally)
    }

    /// Every state key of the event, each with a prefetch of its home slot.
    fn event_keys(&self, b: &[u8], k: &mut Keys) {
        let v = &k.view;
        let group = v.group as u64;
        let part = |i: usize| fp(&b[v.parts[i].0..v.parts[i].1], S_PART);
        let customer = part(2);
        k.dedup = fp_of(&[part(0), part(1), customer, part(3)], &[group], S_DEDUP);
        self.dedup.prefetch(k.dedup);
        if self.account {
            k.customer = fp_of(&[customer], &[group], S_CUSTOMER);
            self.customers.prefetch(k.customer);
        }
        k.tokens.clear();
        for &(from, to) in &v.tokens {
            k.tokens.push(fp(&b[from..to], S_TOKEN));
        }
        k.stems.clear();
        k.counters.clear();
        for &(from, to) in &v.stems {
            let stem = fp_of(&[fp(&b[from..to], S_STEM)], &[group], S_STEM_KEY);
            k.stems.push(stem);
            if self.account {
                self.buckets.prefetch(stem);
            }
            for &token in &k.tokens {
                let c = fp_of(&[stem, token], &[], S_COUNTER);
                self.counter_index.prefetch(c);
                k.counters.push(c);
            }
        }
    }

    fn count_event(&mut self, b: &[u8], k: &Keys, tally: &mut Tally) {
        let v = &k.view;
        let tag = v.group + 1;
        let ingest = v.ingest;
        let gi = self.group_index(v.group);
        let grp = &mut self.gs[gi];
        grp.watermark = grp.watermark.max(ingest);

        match self.dedup.find(k.dedup) {
            Ok(slot) => {
                if ingest as i64 - self.dedup.val(slot) as i64 <= self.dedup_retention {
                    tally.duplicates += 1;
                    return;
                }
                self.dedup.set(slot, ingest);
            }
            Err(miss) => {
                self.dedup.insert(miss, k.dedup, tag, ingest);
            }
        }
        self.gs[gi].ch.dedup.push((k.dedup, ingest));
        self.mark_dirty(gi);
        tally.counted += 1;

        let tokens = v.tokens.len();
        if !self.account {
            for s in 0..self.g {
                for t in 0..tokens {
                    let c = self.counter_of(b, k, gi, s, t);
                    self.add_to_window(c, 0);
                }
            }
            return;
        }

        let cu = self.customer_of(k.customer, gi);
        self.customer_markers.prefetch_customer(cu);
        self.cu_used[cu as usize] = self.stamp;
        let mut event_counters = std::mem::take(&mut self.event_counters);
        event_counters.clear();
        for s in 0..self.g {
            for t in 0..tokens {
                let c = self.counter_of(b, k, gi, s, t);
                // The per-counter arrays the marking loop reads are as far apart as the marker slots.
                prefetch(&self.c_win, c);
                prefetch(&self.c_local, c);
                event_counters.push(c);
            }
        }
        for &c in &event_counters {
            self.customer_markers.prefetch(cu, c);
        }
        let cu_local = self.cu_local[cu as usize];
        for s in 0..self.g {
            let epoch = self.touch_bucket(k.stems[s], v.ends[s], ingest, gi);
            for t in 0..tokens {
                let c = event_counters[s * tokens + t];
                let is_new = u32::from(if epoch == 0 {
                    self.customer_markers.insert(cu, c)
                } else {
                    self.markers.mark(c, cu, epoch + 1)
                });
                if is_new == 1 {
                    let local = self.c_local[c as usize];
                    self.gs[gi].ch.markers.push([local, cu_local, epoch]);
                    if epoch > 0 {
                        tally.beyond_horizon += 1;
                    }
                }
                self.add_to_window(c, is_new);
            }
        }
        self.event_counters = event_counters;
    }

    #[inline]
    fn add_to_window(&mut self, c: u32, is_new: u32) {
        let w = &mut self.c_win[c as usize];
        if w[0] == 0 {
            self.touched.push(c);
        }
        w[0] += 1;
        w[1] += is_new;
    }

    fn customer_of(&mut self, key: u128, gi: usize) -> u32 {
        match self.customers.find(key) {
            Ok(slot) => self.customers.val(slot),
            Err(miss) => {
                let cu = self.cu_local.len() as u32;
                let grp = &mut self.gs[gi];
                let local = grp.customers.len() as u32;
                grp.customers.push(cu);
                grp.ch.customers.push((key, local));
                self.cu_group.push(grp.id as u16);
                self.cu_local.push(local);
                self.cu_flags.push(0);
                self.cu_used.push(self.stamp);
                self.customers.insert(miss, key, grp.id + 1, cu);
                cu
            }
        }
    }

    /// The global number of counter (granularity s, token t) of the event, created if new.
    fn counter_of(&mut self, b: &[u8], k: &Keys, gi: usize, s: usize, t: usize) -> u32 {
        let key = k.counters[s * k.tokens.len() + t];
        match self.counter_index.find(key) {
            Ok(slot) => self.counter_index.val(slot),
            Err(miss) => {
                let c = self.c_group.len() as u32;
                let grp = &mut self.gs[gi];
                let local = grp.counters.len() as u32;
                grp.counters.push(c);
                grp.ch.counters.push((key, local));
                let (stem, token) = (k.view.stems[s], k.view.tokens[t]);
                self.ids.extend_from_slice(&b[stem.0..stem.1]);
                self.ids.extend_from_slice(&b[token.0..token.1]);
                self.c_group.push(grp.id as u16);
                self.c_local.push(local);
                self.c_id_end.push(self.ids.len() as u64);
                self.c_total.push([0.0, 0.0]);
                self.c_win.push([0, 0]);
                self.c_flags.push(0);
                self.counter_index.insert(miss, key, grp.id + 1, c);
                c
            }
        }
    }

    /// The rule of touchBucket in worker/engine/counting.ts; returns the marker epoch in force.
    fn touch_bucket(&mut self, stem: u128, end: i64, ingest: u32, gi: usize) -> u32 {
        let hour = ingest - ingest % 3600;
        match self.buckets.find(stem) {
            Err(miss) => {
                self.buckets
                    .insert(miss, stem, self.gs[gi].id + 1, [hour, 0]);
                self.gs[gi].ch.buckets.push((stem, hour, 0));
                0
            }
            Ok(slot) => {
                let [last, epoch] = self.buckets.val(slot);
                if ingest as i64 > end.max(last as i64).saturating_add(self.uniques_retention) {
                    // Below 2^31 bumps (one per horizon passed) the epoch cannot reach its limit.
                    let next = if epoch + 1 < EPOCH_LIMIT {
                        epoch + 1
                    } else {
                        epoch
                    };
                    self.buckets.set(slot, [hour, next]);
                    self.gs[gi].ch.buckets.push((stem, hour, next));
                    return next;
                }
                if hour > last {
                    self.buckets.set(slot, [hour, epoch]);
                    self.gs[gi].ch.buckets.push((stem, hour, epoch));
                }
                epoch
            }
        }
    }

    /// Lists counter c's total in its group's changes (once until the next `changes()`).
    fn list_total(&mut self, c: u32) {
        let ci = c as usize;
        if self.c_flags[ci] & TOTAL_LISTED == 0 {
            self.c_flags[ci] |= TOTAL_LISTED;
            let gi = self.group_slot[self.c_group[ci] as usize] as usize;
            self.gs[gi].ch.totals.push(self.c_local[ci]);
            self.mark_dirty(gi);
        }
    }

    /// Ends the window: the touched counters' new totals, in id order (UTF-8 bytes, then key group).
    pub fn finalise(&mut self) -> std::result::Result<Final, String> {
        // (Infallible today; the Result keeps room for a check without changing callers.)
        let touched = std::mem::take(&mut self.touched);
        let n = touched.len();
        // The ids are copied out in touched order first (one pass over the id arena, which is
        // far larger than the cache), then sorted where they sit side by side.
        let mut scratch = Vec::with_capacity(n * 48);
        let mut order: Vec<(u32, u32, u32)> = Vec::with_capacity(n);
        for &c in &touched {
            let from = scratch.len() as u32;
            scratch.extend_from_slice(self.id_of(c));
            order.push((from, scratch.len() as u32, c));
        }
        // In id order, so that a sink that keys rows by id (the embedded sink's RocksDB)
        // inserts them in key order: its memtable then appends instead of searching its skip
        // list from the top for every row.
        let c_group = &self.c_group;
        let order = sort_by_id(&scratch, order, |c| c_group[c as usize]);
        let id = |&(from, to, _): &(u32, u32, u32)| &scratch[from as usize..to as usize];
        let mut out = Final {
            ids: Vec::with_capacity(scratch.len()),
            id_ends: Vec::with_capacity(n),
            groups: Vec::with_capacity(n),
            counts: Vec::with_capacity(n),
            uniques: Vec::with_capacity(n),
            fresh: Vec::with_capacity(n),
        };
        let mut sorted = touched;
        for (k, span) in order.iter().enumerate() {
            let c = span.2;
            sorted[k] = c;
            out.ids.extend_from_slice(id(span));
            // Below 4 GiB: ids are at most maxEventBytes each and a window holds far fewer.
            out.id_ends.push(out.ids.len() as u32);
            let ci = c as usize;
            let [wc, wu] = self.c_win[ci];
            self.c_win[ci] = [0, 0];
            let total = &mut self.c_total[ci];
            total[0] += wc as f64;
            total[1] += wu as f64;
            out.groups.push(self.c_group[ci] as u32);
            out.counts.push(total[0]);
            out.uniques.push(total[1]);
            out.fresh.push(if self.c_flags[ci] & HAS_TOTAL == 0 {
                1
            } else {
                0
            });
            self.c_flags[ci] |= HAS_TOTAL;
            self.list_total(c);
        }
        self.last_final = sorted;
        self.touched = Vec::with_capacity(n);
        self.stamp = self.stamp.wrapping_add(1);
        Ok(out)
    }

    /// Adds amounts to the stored totals of counters of the last `finalise()` (by position).
    pub fn rebase(
        &mut self,
        positions: &[u32],
        counts: &[f64],
        uniques: &[f64],
    ) -> std::result::Result<(), String> {
        if counts.len() != positions.len() || uniques.len() != positions.len() {
            return Err(format!("rebase: positions, counts and uniques must have the same length, got {}, {} and {}", positions.len(), counts.len(), uniques.len()));
        }
        for (i, &p) in positions.iter().enumerate() {
            if p as usize >= self.last_final.len() {
                return Err(format!(
                    "rebase: position {p} (entry {i}) is outside the last finalise ({} counters)",
                    self.last_final.len()
                ));
            }
            if self.last_final[p as usize] == GONE {
                return Err(format!(
                    "rebase: position {p} (entry {i}) is a counter of a dropped key group"
                ));
            }
            if !counts[i].is_finite() || !uniques[i].is_finite() {
                return Err(format!(
                    "rebase: entry {i} has a count or uniques that is not a finite number"
                ));
            }
        }
        for (i, &p) in positions.iter().enumerate() {
            let c = self.last_final[p as usize];
            let total = &mut self.c_total[c as usize];
            total[0] += counts[i];
            total[1] += uniques[i];
            self.list_total(c);
        }
        Ok(())
    }

    /// The changes of each group changed since the last call, groups ascending, as its two
    /// segments (`encode_parts`); clears the changes.
    pub fn changes(&mut self) -> Vec<(u32, Parts)> {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        let mut out = Vec::new();
        for &group in &dirty {
            let gi = self.group_slot[group as usize] as usize;
            if !self.gs[gi].ch.is_empty() {
                let mut ch = std::mem::take(&mut self.gs[gi].ch);
                out.push((group, self.encode_parts(gi, &mut ch)));
                self.gs[gi].ch = ch;
            }
            self.forget_changes(gi);
        }
        dirty.clear();
        self.dirty = dirty;
        out
    }

    /// `ch` as a group's two segments: its counters and their totals, then the rest, whose
    /// markers refer to those counters (so a loader applies them in that order). Keeping
    /// counters apart lets a sweep rewrite only what expires. Either is empty when it holds
    /// no record.
    fn encode_parts(&self, gi: usize, ch: &mut Changes) -> Parts {
        counters_apart(ch, |counters, rest| Parts {
            counters: self.encode_nonempty(gi, counters),
            state: self.encode_nonempty(gi, rest),
        })
    }

    /// The counter segment of `ch` alone (see `encode_parts`).
    fn encode_counters(&self, gi: usize, ch: &mut Changes) -> Vec<u8> {
        counters_apart(ch, |counters, _| self.encode_nonempty(gi, counters))
    }

    /// `ch` as a segment, or no bytes when it holds no record.
    fn encode_nonempty(&self, gi: usize, ch: &Changes) -> Vec<u8> {
        if ch.is_empty() {
            Vec::new()
        } else {
            self.encode(gi, ch)
        }
    }

    /// `ch` (changes of group `gs[gi]`) as a segment.
    fn encode(&self, gi: usize, ch: &Changes) -> Vec<u8> {
        let grp = &self.gs[gi];
        let flags = if self.account { FLAG_ACCOUNT } else { 0 };
        segment::encode(
            grp.id,
            flags,
            ch,
            |local| self.id_of(grp.counters[local as usize]),
            |local| {
                let t = self.c_total[grp.counters[local as usize] as usize];
                (t[0], t[1])
            },
        )
    }

    /// Clears group `gs[gi]`'s changes (written, or superseded by a sweep's segment); the
    /// caller takes it off `dirty`.
    fn forget_changes(&mut self, gi: usize) {
        let grp = &mut self.gs[gi];
        for &local in &grp.ch.totals {
            self.c_flags[grp.counters[local as usize] as usize] &= !TOTAL_LISTED;
        }
        grp.ch.clear();
        grp.dirty = false;
    }

    /// Per counter (global number), what `sweep` keeps of its markers (MARKERS_KEPT,
    /// MARKERS_EXPIRED or the epoch whose markers are live), for the counters of the listed
    /// groups: the bucket's horizon is the later of its end and its last ingest hour plus the
    /// uniques retention (touch_bucket's rule), and its end comes from the counter's id.
    fn marker_rules(&self, list: &[(u32, usize, i64, bool)]) -> Vec<u32> {
        let mut rule = vec![MARKERS_KEPT; self.c_group.len()];
        for &(group, gi, cutoff, _) in list {
            // A stem's counters were mostly made together: the last stem's rule is reused.
            let mut last: (&[u8], u32) = (&[], MARKERS_KEPT);
            for &c in &self.gs[gi].counters {
                let id = self.id_of(c);
                if !last.0.is_empty() && id.starts_with(last.0) {
                    rule[c as usize] = last.1;
                    continue;
                }
                let Some((stem_len, g, start)) = stem_of_id(id) else {
                    continue;
                };
                let stem = &id[..stem_len];
                let key = fp_of(&[fp(stem, S_STEM)], &[group as u64], S_STEM_KEY);
                let r = match self.buckets.find(key) {
                    Err(_) => MARKERS_KEPT,
                    Ok(slot) => {
                        let [hour, epoch] = self.buckets.val(slot);
                        let horizon = bucket_end(g, start)
                            .max(hour as i64)
                            .saturating_add(self.uniques_retention);
                        if horizon < cutoff {
                            MARKERS_EXPIRED
                        } else {
                            epoch
                        }
                    }
                };
                rule[c as usize] = r;
                last = (stem, r);
            }
        }
        rule
    }

    /// Every group the kernel holds that has a watermark, with it (see `Group::watermark`).
    pub fn watermarks(&self) -> (Vec<u32>, Vec<u32>) {
        let mut held: Vec<(u32, u32)> = self
            .gs
            .iter()
            .filter(|g| g.watermark > 0)
            .map(|g| (g.id, g.watermark))
            .collect();
        held.sort_unstable();
        held.into_iter().unzip()
    }

    /// Expires and compacts key groups. For each of `groups` that the kernel holds, deletes
    /// what no event of ingest second `cutoffs[i]` or later can decide on (the rules of
    /// worker/state/expiry.ts): dedup identities first counted more than the dedup retention
    /// before the cutoff, and uniqueness markers of buckets whose horizon is before it or
    /// whose epoch has moved past the markers'. Counters (the output), their buckets and the
    /// customers stay. Returns each group's remaining state as its two segments (`Swept`):
    /// the state segment replaces the group's earlier state segments, and, where `full[i]` is
    /// set, the counter segment (all its counters and totals) its earlier counter segments;
    /// elsewhere the counter segment holds the pending counters and totals, which the state
    /// segment's markers may refer to. Its pending changes are in them, so the next
    /// `changes()` does not list them. A cutoff of -Infinity deletes nothing: the segments
    /// only compact the group's logs. One pass over each table, whatever the number of groups.
    pub fn sweep(&mut self, groups: &[u32], cutoffs: &[f64], full: &[u8]) -> std::result::Result<Swept, String> {
        if groups.len() != cutoffs.len() || groups.len() != full.len() {
            return Err(format!("sweep: {} groups but {} cutoffs and {} full flags", groups.len(), cutoffs.len(), full.len()));
        }
        // The groups the kernel holds: (group, index in gs, cutoff, full), groups ascending.
        let mut seen = vec![false; GROUPS];
        let mut list: Vec<(u32, usize, i64, bool)> = Vec::new();
        for (i, (&group, &cutoff)) in groups.iter().zip(cutoffs).enumerate() {
            if group as usize >= GROUPS {
                return Err(format!("sweep: key group {group} is not in 0..65535"));
            }
            if cutoff.is_nan() {
                return Err(format!("sweep: the cutoff of key group {group} (entry {i}) is not a number"));
            }
            if std::mem::replace(&mut seen[group as usize], true) {
                return Err(format!("sweep: key group {group} is listed twice"));
            }
            let slot = self.group_slot[group as usize];
            if slot != NO_GROUP {
                // Saturating: -Infinity deletes nothing, +Infinity everything that can expire.
                list.push((group, slot as usize, cutoff.floor() as i64, full[i] != 0));
            }
        }
        let mut out = Swept::default();
        if list.is_empty() {
            return Ok(out);
        }
        list.sort_unstable_by_key(|&(group, ..)| group);
        // Per key group: its index in `list`, or NO_GROUP.
        let mut at = vec![NO_GROUP; GROUPS];
        for (k, &(group, ..)) in list.iter().enumerate() {
            at[group as usize] = k as u32;
        }
        let listed = |tag: u32| at[(tag - 1) as usize];
        let full_at = |k: u32| list.get(k as usize).is_some_and(|l| l.3);
        // The remaining state of each group, as the records of its segments.
        let mut snaps: Vec<Changes> = (0..list.len()).map(|_| Changes::default()).collect();

        // One pass over the dedup table deletes and lists the survivors (each entry is seen once).
        let retention = self.dedup_retention;
        out.dedup = self.dedup.remove_where(|key, tag, first| {
            let k = listed(tag);
            if k == NO_GROUP {
                return false;
            }
            let expired = (first as i64).saturating_add(retention) < list[k as usize].2;
            if !expired {
                snaps[k as usize].dedup.push((key, first));
            }
            expired
        }) as u64;

        if self.account {
            let rule = self.marker_rules(&list);
            let live = |c: u32, epoch: u32| {
                let r = rule[c as usize];
                r == MARKERS_KEPT || r == epoch
            };
            for &(_, gi, ..) in &list {
                for &cu in &self.gs[gi].customers {
                    out.markers += self.customer_markers.retain(cu, |c| live(c, 0)) as u64;
                }
            }
            let mut removed = 0;
            self.markers.retain_map(|c, cu, v| {
                if live(c, v - 1) {
                    Some((c, cu, v))
                } else {
                    removed += 1;
                    None
                }
            });
            out.markers += removed;
        }

        for (key, tag, cu) in self.customers.entries() {
            if let Some(ch) = snaps.get_mut(listed(tag) as usize) {
                ch.customers.push((key, self.cu_local[cu as usize]));
            }
        }
        // The counters (a pass over their table) only for a full sweep.
        if list.iter().any(|l| l.3) {
            for (key, tag, c) in self.counter_index.entries() {
                let k = listed(tag);
                if full_at(k) {
                    snaps[k as usize].counters.push((key, self.c_local[c as usize]));
                }
            }
        }
        for (key, tag, [hour, epoch]) in self.buckets.entries() {
            if let Some(ch) = snaps.get_mut(listed(tag) as usize) {
                ch.buckets.push((key, hour, epoch));
            }
        }
        for (k, &(_, gi, _, full)) in list.iter().enumerate() {
            let ch = &mut snaps[k];
            for &cu in &self.gs[gi].customers {
                let lcu = self.cu_local[cu as usize];
                ch.markers.extend(self.customer_markers.of(cu).map(|c| [self.c_local[c as usize], lcu, 0]));
            }
            if full {
                for (local, &c) in self.gs[gi].counters.iter().enumerate() {
                    if self.c_flags[c as usize] & HAS_TOTAL != 0 {
                        ch.totals.push(local as u32);
                    }
                }
            }
        }
        // Markers of later epochs (few) after those of epoch 0, which are already in runs of
        // one customer. The order of runs is free: a sweep keeps at most one epoch's marker
        // of a (counter, customer), so no two records of the segment have the same pair.
        let mut later: Vec<(usize, [u32; 3])> = self
            .markers
            .entries()
            .filter_map(|(c, cu, v)| {
                let k = at[self.c_group[c as usize] as usize];
                (k != NO_GROUP).then(|| (k as usize, [self.c_local[c as usize], self.cu_local[cu as usize], v - 1]))
            })
            .collect();
        later.sort_unstable_by_key(|&(k, m)| (k, m[1], m[2], m[0]));
        for (k, m) in later {
            snaps[k].markers.push(m);
        }
        for (k, ch) in snaps.iter_mut().enumerate() {
            // Loading checks local numbers in order; the rest is sorted as the encoding
            // stores it most compactly (delta-coded seconds).
            ch.customers.sort_unstable_by_key(|r| r.1);
            ch.counters.sort_unstable_by_key(|r| r.1);
            ch.dedup.sort_unstable_by_key(|r| (r.1, r.0));
            ch.buckets.sort_unstable_by_key(|r| (r.1, r.0));
            let (group, gi, _, full) = list[k];
            let mut parts = self.encode_parts(gi, ch);
            if !full {
                // The counters stay in their own segments: only the pending ones are written.
                let mut pending = std::mem::take(&mut self.gs[gi].ch);
                parts.counters = self.encode_counters(gi, &mut pending);
                self.gs[gi].ch = pending;
            }
            out.groups.push(group);
            out.parts.push(parts);
            self.forget_changes(gi);
        }
        self.dirty.retain(|&g| at[g as usize] == NO_GROUP);
        Ok(out)
    }


    /// Applies a segment of `group` written by `changes()` or `sweep()`; checked whole before
    /// it is applied. Returns whether it held counters or totals (a state segment written
    /// before counters had segments of their own does, and must not be replaced by a sweep
    /// that leaves the counters out).
    pub fn load_segment(&mut self, group: u32, bytes: &[u8]) -> std::result::Result<bool, String> {
        if group as usize >= GROUPS {
            return Err(format!("loadSegment: key group {group} is not in 0..65535"));
        }
        let seg = Segment::parse(bytes, group)?;
        if (seg.flags & FLAG_ACCOUNT != 0) != self.account {
            let (was, is) = if self.account {
                ("customer", "account")
            } else {
                ("account", "customer")
            };
            return Err(format!("segment of key group {group} was written at {was} level; this kernel counts at {is} level"));
        }
        let tag = group + 1;
        let slot = self.group_slot[group as usize];
        let (have_counters, have_customers) = if slot == NO_GROUP {
            (0, 0)
        } else {
            (
                self.gs[slot as usize].counters.len(),
                self.gs[slot as usize].customers.len(),
            )
        };
        let bad = |what: String| Err(format!("segment of key group {group} is corrupt: {what}"));

        // Check everything first.
        let mut next = have_customers;
        let mut fresh = HashSet::new();
        let mut new_customers = Vec::with_capacity(seg.customers);
        for i in 0..seg.customers {
            let (key, local) = seg.customer(i);
            match self.customers.find(key) {
                Ok(s) if self.customers.tag(s) == tag && self.cu_local[self.customers.val(s) as usize] == local => continue,
                Ok(_) => return bad(format!("new customer {i} (local number {local}) is already known under another number or group")),
                Err(_) => {}
            }
            if local as usize != next {
                return bad(format!(
                    "new customer {i} has local number {local}, expected {next}"
                ));
            }
            if !fresh.insert(key) {
                return bad(format!("new customer {i} repeats an earlier one"));
            }
            next += 1;
            new_customers.push(i);
        }
        let customers_after = next;
        let mut next = have_counters;
        fresh.clear();
        let mut new_counters = Vec::with_capacity(seg.counters);
        let mut id_at = 0usize;
        for i in 0..seg.counters {
            let (key, local, len) = seg.counter(i);
            let from = id_at;
            id_at += len as usize;
            if id_at > seg.id_bytes {
                return bad(format!(
                    "the ids of its new counters overrun the {} id bytes",
                    seg.id_bytes
                ));
            }
            match self.counter_index.find(key) {
                Ok(s) if self.counter_index.tag(s) == tag && self.c_local[self.counter_index.val(s) as usize] == local => continue,
                Ok(_) => return bad(format!("new counter {i} (local number {local}) is already known under another number or group")),
                Err(_) => {}
            }
            if local as usize != next {
                return bad(format!(
                    "new counter {i} has local number {local}, expected {next}"
                ));
            }
            if std::str::from_utf8(seg.ids(from, id_at)).is_err() {
                return bad(format!("the id of new counter {i} is not valid UTF-8"));
            }
            if !fresh.insert(key) {
                return bad(format!("new counter {i} repeats an earlier one"));
            }
            next += 1;
            new_counters.push((i, from, id_at));
        }
        if id_at != seg.id_bytes {
            return bad(format!(
                "its new counters' ids take {id_at} of its {} id bytes",
                seg.id_bytes
            ));
        }
        let counters_after = next;
        for i in 0..seg.buckets {
            let (_, _, epoch) = seg.bucket(i);
            if epoch >= EPOCH_LIMIT {
                return bad(format!("bucket record {i} has epoch {epoch}"));
            }
        }
        if seg.markers > 0 && !self.account {
            return bad("it has markers, which the customer level does not keep".to_string());
        }
        for i in 0..seg.markers {
            let (c, cu, epoch) = seg.marker(i);
            if c as usize >= counters_after
                || cu as usize >= customers_after
                || epoch >= EPOCH_LIMIT
            {
                return bad(format!("marker {i} (counter {c}, customer {cu}, epoch {epoch}) is out of range ({counters_after} counters, {customers_after} customers)"));
            }
        }
        for i in 0..seg.totals {
            let (c, count, uniques) = seg.total(i);
            if c as usize >= counters_after {
                return bad(format!(
                    "total {i} is of counter {c}, which does not exist ({counters_after} counters)"
                ));
            }
            if !count.is_finite() || !uniques.is_finite() {
                return bad(format!("total {i} (counter {c}) is not a finite number"));
            }
        }

        // Apply.
        let gi = self.group_index(group);
        for i in new_customers {
            let (key, local) = seg.customer(i);
            let cu = self.cu_local.len() as u32;
            self.gs[gi].customers.push(cu);
            self.cu_group.push(group as u16);
            self.cu_local.push(local);
            self.cu_flags.push(0);
            self.cu_used.push(self.stamp);
            let miss = self.customers.find(key).expect_err("checked absent");
            self.customers.insert(miss, key, tag, cu);
        }
        for (i, from, to) in new_counters {
            let (key, local, _) = seg.counter(i);
            let c = self.c_group.len() as u32;
            self.gs[gi].counters.push(c);
            self.ids.extend_from_slice(seg.ids(from, to));
            self.c_group.push(group as u16);
            self.c_local.push(local);
            self.c_id_end.push(self.ids.len() as u64);
            self.c_total.push([0.0, 0.0]);
            self.c_win.push([0, 0]);
            self.c_flags.push(HAS_TOTAL);
            let miss = self.counter_index.find(key).expect_err("checked absent");
            self.counter_index.insert(miss, key, tag, c);
        }
        // Records hit random slots: prefetch a few records ahead so the misses overlap.
        const AHEAD: usize = 16;
        for i in 0..seg.dedup {
            if i + AHEAD < seg.dedup {
                self.dedup.prefetch(seg.dedup_rec(i + AHEAD).0);
            }
            let (key, first) = seg.dedup_rec(i);
            self.dedup.upsert(key, tag, first);
        }
        for i in 0..seg.buckets {
            let (key, hour, epoch) = seg.bucket(i);
            self.buckets.upsert(key, tag, [hour, epoch]);
        }
        let grp = &self.gs[gi];
        let global = |i: usize| {
            let (lc, lcu, _) = seg.marker(i);
            (grp.counters[lc as usize], grp.customers[lcu as usize])
        };
        let mut pairs = Vec::with_capacity(seg.markers);
        for i in 0..seg.markers {
            pairs.push(global(i));
        }
        for i in 0..seg.markers {
            if i + AHEAD < seg.markers {
                self.markers
                    .prefetch(pairs[i + AHEAD].0, pairs[i + AHEAD].1);
            }
            let (c, cu) = pairs[i];
            let epoch = seg.marker(i).2;
            if epoch == 0 {
                self.customer_markers.insert(cu, c);
                continue;
            }
            match self.markers.find(c, cu) {
                Ok(s) => self.markers.set(s, epoch + 1),
                Err(miss) => self.markers.insert(miss, c, cu, epoch + 1),
            }
        }
        for i in 0..seg.totals {
            let (lc, count, uniques) = seg.total(i);
            let c = self.gs[gi].counters[lc as usize] as usize;
            self.c_total[c] = [count, uniques];
            self.c_flags[c] |= HAS_TOTAL;
        }
        Ok(seg.counters > 0 || seg.totals > 0)
    }

    /// Forgets every key group of `groups`: O(state), the numbering of what stays is compacted.
    pub fn drop_groups(&mut self, groups: &[u32]) -> std::result::Result<(), String> {
        let mut dropped = vec![false; GROUPS];
        let mut any = false;
        for &g in groups {
            if g as usize >= GROUPS {
                return Err(format!("dropGroups: key group {g} is not in 0..65535"));
            }
            dropped[g as usize] = true;
            any |= self.group_slot[g as usize] != NO_GROUP;
        }
        if !any {
            return Ok(());
        }
        // Counters: new numbers in the old order, arrays and ids compacted.
        let n = self.c_group.len();
        let mut c_map = vec![GONE; n];
        let mut kept = 0u32;
        let mut ids = Vec::new();
        let mut from = 0usize;
        let mut w = 0usize;
        for c in 0..n {
            let to = self.c_id_end[c] as usize;
            if !dropped[self.c_group[c] as usize] {
                c_map[c] = kept;
                kept += 1;
                ids.extend_from_slice(&self.ids[from..to]);
                self.c_group[w] = self.c_group[c];
                self.c_local[w] = self.c_local[c];
                self.c_id_end[w] = ids.len() as u64;
                self.c_total[w] = self.c_total[c];
                self.c_win[w] = self.c_win[c];
                self.c_flags[w] = self.c_flags[c];
                w += 1;
            }
            from = to;
        }
        self.ids = ids;
        self.c_local.truncate(w);
        self.c_group.truncate(w);
        self.c_id_end.truncate(w);
        self.c_total.truncate(w);
        self.c_win.truncate(w);
        self.c_flags.truncate(w);
        // Customers.
        let n = self.cu_group.len();
        let mut cu_map = vec![GONE; n];
        let mut w = 0usize;
        for cu in 0..n {
            if !dropped[self.cu_group[cu] as usize] {
                cu_map[cu] = w as u32;
                self.cu_group[w] = self.cu_group[cu];
                self.cu_local[w] = self.cu_local[cu];
                self.cu_flags[w] = self.cu_flags[cu];
                self.cu_used[w] = self.cu_used[cu];
                w += 1;
            } else if self.cu_flags[cu] & CU_SPILLED != 0 {
                self.spilled_customers -= 1;
            }
        }
        self.cu_group.truncate(w);
        self.cu_local.truncate(w);
        self.cu_flags.truncate(w);
        self.cu_used.truncate(w);
        // Tables.
        let gone = |tag: u32| dropped[(tag - 1) as usize];
        self.dedup
            .retain_map(|_, tag, v| if gone(tag) { None } else { Some(v) });
        self.buckets
            .retain_map(|_, tag, v| if gone(tag) { None } else { Some(v) });
        self.customers.retain_map(|_, tag, v| {
            if gone(tag) {
                None
            } else {
                Some(cu_map[v as usize])
            }
        });
        self.counter_index.retain_map(|_, tag, v| {
            if gone(tag) {
                None
            } else {
                Some(c_map[v as usize])
            }
        });
        self.customer_markers.renumber(&cu_map, &c_map);
        self.markers.retain_map(|c, cu, v| {
            let (c, cu) = (c_map[c as usize], cu_map[cu as usize]);
            if c == GONE || cu == GONE {
                None
            } else {
                Some((c, cu, v))
            }
        });
        // Groups.
        let gs = std::mem::take(&mut self.gs);
        self.group_slot.iter_mut().for_each(|s| *s = NO_GROUP);
        for mut grp in gs {
            if dropped[grp.id as usize] {
                self.spilled_identities -= grp.spilled.len();
                continue;
            }
            grp.counters
                .iter_mut()
                .for_each(|c| *c = c_map[*c as usize]);
            grp.customers
                .iter_mut()
                .for_each(|c| *c = cu_map[*c as usize]);
            self.group_slot[grp.id as usize] = self.gs.len() as u32;
            self.gs.push(grp);
        }
        self.dirty.retain(|&g| !dropped[g as usize]);
        let touched: Vec<u32> = self
            .touched
            .iter()
            .map(|&c| c_map[c as usize])
            .filter(|&c| c != GONE)
            .collect();
        self.touched = touched;
        self.last_final
            .iter_mut()
            .for_each(|c| *c = if *c == GONE { GONE } else { c_map[*c as usize] });
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let vecs = self.c_group.capacity() * 2
            + self.c_local.capacity() * 4
            + self.c_id_end.capacity() * 8
            + self.ids.capacity()
            + self.c_total.capacity() * 16
            + self.c_win.capacity() * 8
            + self.c_flags.capacity()
            + self.cu_group.capacity() * 2
            + self.cu_local.capacity() * 4
            + self
                .gs
                .iter()
                .map(|g| g.counters.capacity() * 4 + g.customers.capacity() * 4 + g.ch.bytes())
                .sum::<usize>()
            + self.group_slot.len() * 4;
        Stats {
            counted: self.counted as f64,
            duplicates: self.duplicates as f64,
            beyond_horizon: self.beyond_horizon as f64,
            identities: self.dedup.len() as f64,
            buckets: self.buckets.len() as f64,
            markers: (self.customer_markers.len() + self.markers.len()) as f64,
            counters: self.c_group.len() as f64,
            customers: self.cu_group.len() as f64,
            state_bytes: (self.dedup.bytes()
                + self.buckets.bytes()
                + self.customers.bytes()
                + self.counter_index.bytes()
                + self.customer_markers.bytes()
                + self.markers.bytes()
                + self.cu_flags.capacity()
                + self.cu_used.capacity() * 4
                + self.gs.iter().map(|g| g.spilled.bytes()).sum::<usize>()
                + vecs) as f64,
            spilled_customers: self.spilled_customers as f64,
            spilled_identities: self.spilled_identities as f64,
        }
    }
}

/// What `Core::evict` spilled: one record per entry, its key as a need (src/spill.rs) and its
/// value `values[ends[i-1]..ends[i]]`.
#[derive(Default, Debug)]
pub struct Spilled {
    pub keys: Vec<u8>,
    pub values: Vec<u8>,
    pub ends: Vec<u32>,
    pub identities: u64,
    pub customers: u64,
}

impl Spilled {
    fn push(&mut self, kind: u8, group: u32, fp: u128, value: &[u8]) {
        spill::push_need(&mut self.keys, kind, group, fp);
        self.values.extend_from_slice(value);
        self.ends.push(self.values.len() as u32);
    }
}

/// What `sweep_marker_records` returns: per record its action, the rewritten values and
/// their ends, and the markers removed.
type SweptMarkerRecords = (Vec<u8>, Vec<u8>, Vec<u32>, u64);

/// The share of the state limit that the dedup table may take (`Core::evict`): the rest is
/// for the counters, customers and buckets, which stay in memory, and the marker sets.
const DEDUP_SHARE: f64 = 0.3;
/// The marker sets may always take this share of the limit, even when what stays in memory
/// leaves less: evicting every set after every window would read one back for nearly every
/// event, and RSS would not fall below what stays anyway.
const MIN_MARKER_SHARE: f64 = 0.15;
/// Marker sets are evicted down to this fraction of their room, so that eviction (a pass over
/// the customers) is rare: the next windows' markers fit before the room is full again.
const MARKER_LOW_WATER: f64 = 0.7;

/// The memory budget's side of the kernel (ADR 7, "As built (session 16)"): the dedup table
/// and the customers' marker sets are bounded by spilling their least recently needed
/// entries to records that TypeScript commits; a micro-batch whose events need spilled
/// records gets them back first (`needs_of`, then `restore`).
impl Core {
    /// Whether anything is spilled (otherwise no micro-batch needs a record).
    pub fn has_spilled(&self) -> bool {
        self.spilled_customers > 0 || self.spilled_identities > 0
    }

    /// The spill records that the n events of `b` need and memory lacks, as needs (each once):
    /// the record of a dedup identity absent from memory whose tag its group's bag holds, and
    /// that of a customer flagged spilled. Nothing is counted or changed. A malformed batch
    /// lists what precedes the damage; counting it reports the damage.
    pub fn needs_of(&mut self, b: &[u8], n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.has_spilled() {
            return out;
        }
        let mut view = View::default();
        let mut pos = 0;
        let mut asked: HashSet<u128> = HashSet::new();
        let mut flagged: Vec<u32> = Vec::new();
        for i in 0..n {
            if parse_event(b, &mut pos, self.g, i, &mut view, true).is_err() {
                break;
            }
            let group = view.group;
            let part = |k: usize| fp(&b[view.parts[k].0..view.parts[k].1], S_PART);
            let customer = part(2);
            let slot = self.group_slot[group as usize];
            if slot != NO_GROUP && self.gs[slot as usize].spilled.len() > 0 {
                let dedup = fp_of(&[part(0), part(1), customer, part(3)], &[group as u64], S_DEDUP);
                if self.dedup.find(dedup).is_err()
                    && self.gs[slot as usize].spilled.contains(spill::tag_of(dedup))
                    && asked.insert(dedup)
                {
                    spill::push_need(&mut out, KIND_IDENTITY, group, dedup);
                }
            }
            if self.account && self.spilled_customers > 0 {
                let key = fp_of(&[customer], &[group as u64], S_CUSTOMER);
                if let Ok(s) = self.customers.find(key) {
                    let cu = self.customers.val(s);
                    let flags = &mut self.cu_flags[cu as usize];
                    if *flags & (CU_SPILLED | CU_ASKED) == CU_SPILLED {
                        *flags |= CU_ASKED;
                        flagged.push(cu);
                        spill::push_need(&mut out, KIND_MARKERS, group, key);
                    }
                }
            }
        }
        for cu in flagged {
            self.cu_flags[cu as usize] &= !CU_ASKED;
        }
        out
    }

    /// Brings spilled records back into memory: `needs` as `needs_of` listed them, with
    /// `found[i]` whether record i exists and its value `values[ends[i-1]..ends[i]]`. A
    /// missing identity record was a tag of another identity (nothing to restore); a missing
    /// marker record, or any damaged one, is an error, found before anything changes.
    pub fn restore(&mut self, needs: &[u8], found: &[u8], values: &[u8], ends: &[u32]) -> std::result::Result<(), String> {
        if !needs.len().is_multiple_of(NEED_BYTES) {
            return Err(format!("restore: the needs take {} bytes, not a multiple of {NEED_BYTES}", needs.len()));
        }
        let k = needs.len() / NEED_BYTES;
        if found.len() != k || ends.len() != k {
            return Err(format!("restore: {k} needs but {} found flags and {} value ends", found.len(), ends.len()));
        }
        let value = |i: usize| -> std::result::Result<&[u8], String> {
            let from = if i == 0 { 0 } else { ends[i - 1] as usize };
            let to = ends[i] as usize;
            values.get(from..to).ok_or_else(|| format!("restore: value {i} ({from}..{to}) is outside the {} value bytes", values.len()))
        };
        // Check everything first; keep the markers' global numbers.
        let mut markers: Vec<(u32, Vec<u32>)> = Vec::new();
        for i in 0..k {
            let (kind, group, key) = spill::need(needs, i);
            let v = value(i)?;
            let bad = |what: String| format!("the spill record {i} of key group {group} is corrupt: {what}");
            match kind {
                KIND_IDENTITY => {
                    if found[i] != 0 && v.len() != 4 {
                        return Err(bad(format!("an identity record holds {} bytes, expected 4", v.len())));
                    }
                }
                KIND_MARKERS => {
                    let cu = match self.customers.find(key) {
                        Ok(s) if self.customers.tag(s) == group + 1 => self.customers.val(s),
                        _ => return Err(bad("its customer is not in memory".to_string())),
                    };
                    if found[i] == 0 {
                        return Err(format!("the marker record of a customer of key group {group} is missing from the store although the kernel spilled it: restore the state from a checkpoint"));
                    }
                    let gi = self.group_slot[group as usize] as usize;
                    let counters = &self.gs[gi].counters;
                    let locals = spill::decode_markers(v).map_err(bad)?;
                    let global = locals
                        .iter()
                        .map(|&l| counters.get(l as usize).copied().ok_or_else(|| bad(format!("counter {l} does not exist ({} counters)", counters.len()))))
                        .collect::<std::result::Result<Vec<u32>, String>>()?;
                    markers.push((cu, global));
                }
                other => return Err(format!("restore: need {i} has kind {other}, expected I or M")),
            }
        }
        for i in 0..k {
            let (kind, group, key) = spill::need(needs, i);
            if kind == KIND_IDENTITY && found[i] != 0 {
                let first = u32::from_le_bytes(value(i)?.try_into().unwrap());
                if let Err(miss) = self.dedup.find(key) {
                    self.dedup.insert(miss, key, group + 1, first);
                }
            }
        }
        for (cu, counters) in markers {
            for c in counters {
                self.customer_markers.insert(cu, c);
            }
            let flags = &mut self.cu_flags[cu as usize];
            if *flags & CU_SPILLED != 0 {
                *flags &= !CU_SPILLED;
                self.spilled_customers -= 1;
            }
        }
        Ok(())
    }

    /// Keeps the state within `limit` bytes (`stats().state_bytes`) where it can, by spilling:
    /// dedup identities, oldest first ingest second first, once the dedup table passes 5/8
    /// of the capacity that DEDUP_SHARE of the limit allows (down to half of it, so that the
    /// next windows' identities fit before it would grow); then customers' marker sets, least
    /// recently counted first, once their slots pass their room (the limit less everything
    /// else, at least MIN_MARKER_SHARE of it), down to MARKER_LOW_WATER of it. Counters,
    /// buckets, customers and markers of later epochs stay: when they alone pass the limit,
    /// the state does too (`stats()` says by how much). Call with no pending changes (after
    /// `changes()`), and commit the records with the window.
    pub fn evict(&mut self, limit: f64) -> Spilled {
        let mut out = Spilled::default();
        if limit.is_nan() || limit < 0.0 {
            return out;
        }
        // The largest table DEDUP_SHARE allows (0: none, every identity is spilled).
        let slot_bytes = self.dedup.bytes() / self.dedup.capacity().max(1);
        let mut cap = 0usize;
        while (((cap.max(512) * 2) * slot_bytes) as f64) <= limit * DEDUP_SHARE {
            cap = cap.max(512) * 2;
        }
        if self.dedup.len() > cap * 5 / 8 {
            self.evict_identities(self.dedup.len() - cap / 2, &mut out);
        }
        let smallest = cap.max(1024);
        if self.dedup.capacity() > smallest && self.dedup.len() < smallest * 5 / 8 {
            self.dedup.resize(smallest);
        }
        let sets = self.customer_markers.slot_bytes() as f64;
        let room = (limit - (self.stats().state_bytes - sets)).max(limit * MIN_MARKER_SHARE);
        if sets > room {
            self.evict_customers((sets - room * MARKER_LOW_WATER) as usize, &mut out);
        }
        out
    }

    /// Spills `n` dedup identities with the oldest first ingest seconds.
    fn evict_identities(&mut self, n: usize, out: &mut Spilled) {
        let mut firsts: Vec<u32> = self.dedup.entries().map(|(_, _, first)| first).collect();
        if n == 0 || firsts.is_empty() {
            return;
        }
        let n = n.min(firsts.len());
        let (_, &mut threshold, _) = firsts.select_nth_unstable(n - 1);
        drop(firsts);
        // All below the threshold, and as many at it as make n.
        let below = self.dedup.entries().filter(|&(_, _, f)| f < threshold).count();
        let mut at_threshold = n - below;
        let mut spilled: Vec<(u128, u32, u32)> = Vec::with_capacity(n);
        self.dedup.remove_where(|key, tag, first| {
            let go = first < threshold || (first == threshold && at_threshold > 0);
            if go {
                if first == threshold {
                    at_threshold -= 1;
                }
                spilled.push((key, tag, first));
            }
            go
        });
        spilled.sort_unstable_by_key(|&(key, tag, _)| (tag, key));
        for (key, tag, first) in spilled {
            let group = tag - 1;
            out.push(KIND_IDENTITY, group, key, &first.to_le_bytes());
            let gi = self.group_slot[group as usize] as usize;
            self.gs[gi].spilled.insert(spill::tag_of(key));
            self.spilled_identities += 1;
            out.identities += 1;
        }
    }

    /// Spills whole marker sets of customers not flagged spilled, least recently counted
    /// first, until about `bytes` of slots are freed.
    fn evict_customers(&mut self, bytes: usize, out: &mut Spilled) {
        if bytes == 0 {
            return;
        }
        // Bytes of sets by age in windows (capped): the oldest ages are taken whole until the
        // bytes are reached, then the customers of the last age taken until they are. Linear
        // in the customers, with no sort.
        const AGES: usize = 1 << 16;
        let age = |cu: usize| (self.stamp.wrapping_sub(self.cu_used[cu]) as usize).min(AGES - 1);
        let evictable = |cu: usize| self.cu_flags[cu] & CU_SPILLED == 0 && self.customer_markers.set_bytes(cu as u32) > 0;
        let mut by_age = vec![0usize; AGES];
        for cu in 0..self.cu_used.len() {
            if evictable(cu) {
                by_age[age(cu)] += self.customer_markers.set_bytes(cu as u32);
            }
        }
        let mut threshold = AGES;
        let mut whole = 0;
        while threshold > 0 && whole < bytes {
            threshold -= 1;
            whole += by_age[threshold];
        }
        // Ages above the threshold go whole; at the threshold, only what the bytes still need.
        let mut at_threshold = bytes.saturating_sub(whole - by_age[threshold]);
        let mut chosen = vec![false; self.cu_used.len()];
        for cu in 0..self.cu_used.len() {
            if !evictable(cu) || age(cu) < threshold {
                continue;
            }
            if age(cu) == threshold {
                if at_threshold == 0 {
                    continue;
                }
                at_threshold = at_threshold.saturating_sub(self.customer_markers.set_bytes(cu as u32));
            }
            chosen[cu] = true;
        }
        let mut keys: Vec<(u32, u128, u32)> = self
            .customers
            .entries()
            .filter(|&(_, _, cu)| chosen[cu as usize])
            .map(|(key, tag, cu)| (tag - 1, key, cu))
            .collect();
        keys.sort_unstable();
        for (group, key, cu) in keys {
            let locals: Vec<u32> = self.customer_markers.take(cu).into_iter().map(|c| self.c_local[c as usize]).collect();
            out.push(KIND_MARKERS, group, key, &spill::encode_markers(locals));
            self.cu_flags[cu as usize] |= CU_SPILLED;
            self.spilled_customers += 1;
            out.customers += 1;
        }
    }

    /// A loaded group's spill records, by their fingerprints (16 bytes each, little-endian):
    /// identity records go into its bag, and marker records flag their customers, which its
    /// segments must have created.
    pub fn load_spilled(&mut self, group: u32, kind: u8, fps: &[u8]) -> std::result::Result<(), String> {
        if group as usize >= GROUPS {
            return Err(format!("loadSpilled: key group {group} is not in 0..65535"));
        }
        if !fps.len().is_multiple_of(16) {
            return Err(format!("loadSpilled: {} bytes of fingerprints, not a multiple of 16", fps.len()));
        }
        let keys = fps.chunks_exact(16).map(|b| u128::from_le_bytes(b.try_into().unwrap()));
        match kind {
            KIND_IDENTITY => {
                let gi = self.group_index(group);
                for key in keys {
                    self.gs[gi].spilled.insert(spill::tag_of(key));
                    self.spilled_identities += 1;
                }
            }
            KIND_MARKERS => {
                let mut cus = Vec::with_capacity(fps.len() / 16);
                for key in keys {
                    match self.customers.find(key) {
                        Ok(s) if self.customers.tag(s) == group + 1 => cus.push(self.customers.val(s)),
                        _ => return Err(format!("key group {group} has a spilled marker record of a customer its segments do not hold: restore the state from a checkpoint")),
                    }
                }
                for cu in cus {
                    let flags = &mut self.cu_flags[cu as usize];
                    if *flags & CU_SPILLED == 0 {
                        *flags |= CU_SPILLED;
                        self.spilled_customers += 1;
                    }
                }
            }
            other => return Err(format!("loadSpilled: kind {other} is not I or M")),
        }
        Ok(())
    }

    /// Identity records of `group` deleted from the store (expired): their tags leave its bag.
    pub fn forget_identities(&mut self, group: u32, fps: &[u8]) -> std::result::Result<(), String> {
        if !fps.len().is_multiple_of(16) {
            return Err(format!("forgetIdentities: {} bytes of fingerprints, not a multiple of 16", fps.len()));
        }
        let slot = *self.group_slot.get(group as usize).ok_or_else(|| format!("forgetIdentities: key group {group} is not in 0..65535"))?;
        if slot == NO_GROUP {
            return Ok(());
        }
        for b in fps.chunks_exact(16) {
            let key = u128::from_le_bytes(b.try_into().unwrap());
            if self.gs[slot as usize].spilled.remove_one(spill::tag_of(key)) {
                self.spilled_identities -= 1;
            }
        }
        Ok(())
    }

    /// Applies `sweep`'s marker rule at `cutoff` to a group's marker records (customer
    /// fingerprints, values as in `restore`): per record 0 kept as is, 1 rewritten (its new
    /// value in the output), 2 deleted (nothing left; its customer is no longer flagged).
    /// Returns the actions, the new values, their ends, and the markers removed.
    pub fn sweep_marker_records(&mut self, group: u32, cutoff: f64, fps: &[u8], values: &[u8], ends: &[u32]) -> std::result::Result<SweptMarkerRecords, String> {
        let slot = *self.group_slot.get(group as usize).ok_or_else(|| format!("sweepMarkerRecords: key group {group} is not in 0..65535"))?;
        let k = fps.len() / 16;
        if !fps.len().is_multiple_of(16) || ends.len() != k {
            return Err(format!("sweepMarkerRecords: {} bytes of fingerprints and {} value ends", fps.len(), ends.len()));
        }
        if slot == NO_GROUP || cutoff.is_nan() {
            return Err(format!("sweepMarkerRecords: key group {group} is not loaded, or the cutoff is not a number"));
        }
        let gi = slot as usize;
        let rule = self.marker_rules(&[(group, gi, cutoff.floor() as i64, false)]);
        let (mut actions, mut out, mut out_ends, mut removed) = (Vec::with_capacity(k), Vec::new(), Vec::new(), 0u64);
        for i in 0..k {
            let from = if i == 0 { 0 } else { ends[i - 1] as usize };
            let v = values.get(from..ends[i] as usize).ok_or_else(|| format!("sweepMarkerRecords: value {i} is outside the value bytes"))?;
            let locals = spill::decode_markers(v).map_err(|e| format!("a spilled marker record of key group {group} is corrupt: {e}"))?;
            let counters = &self.gs[gi].counters;
            let kept: Vec<u32> = locals
                .iter()
                .copied()
                .filter(|&l| counters.get(l as usize).is_none_or(|&c| matches!(rule[c as usize], MARKERS_KEPT | 0)))
                .collect();
            removed += (locals.len() - kept.len()) as u64;
            if kept.len() == locals.len() {
                actions.push(0);
            } else if kept.is_empty() {
                actions.push(2);
                let key = u128::from_le_bytes(fps[i * 16..i * 16 + 16].try_into().unwrap());
                if let Ok(s) = self.customers.find(key) {
                    let flags = &mut self.cu_flags[self.customers.val(s) as usize];
                    if *flags & CU_SPILLED != 0 {
                        *flags &= !CU_SPILLED;
                        self.spilled_customers -= 1;
                    }
                }
            } else {
                actions.push(1);
                out.extend_from_slice(&spill::encode_markers(kept));
                out_ends.push(out.len() as u32);
            }
        }
        Ok((actions, out, out_ends, removed))
    }
}

/// The fast path over lines [from, n) of `buf` (line i is `buf[ends[i-1]..ends[i]]`,
/// `ends[-1]` = 0), in order: appends each line's encoding to `batch` until the first line
/// the fast path defers. Returns the index of that line (n when none was deferred) and the
/// number of lines encoded. Nothing is counted here, and an Err (malformed arguments) is
/// found before anything is.
pub fn encode_lines(
    fast: &mut FastPath,
    buf: &[u8],
    ends: &[u32],
    ingest: &[u32],
    from: usize,
    n: usize,
    batch: &mut Vec<u8>,
) -> std::result::Result<(usize, usize), String> {
    if n > ends.len() || n > ingest.len() {
        return Err(format!(
            "countLines: n = {n} but there are {} ends and {} ingest seconds",
            ends.len(),
            ingest.len()
        ));
    }
    if from > n {
        return Err(format!("countLines: from = {from} is after n = {n}"));
    }
    let mut i = from;
    let mut encoded = 0;
    while i < n {
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        let end = ends[i] as usize;
        if start > end || end > buf.len() {
            return Err(format!(
                "countLines: line {i} spans bytes {start}..{end} of a buffer of {} bytes",
                buf.len()
            ));
        }
        if fast.encode(&buf[start..end], ingest[i], batch).is_none() {
            break;
        }
        encoded += 1;
        i += 1;
    }
    Ok((i, encoded))
}

// ---------------------------------------------------------------------------------------
// The napi class.

#[napi(object)]
pub struct CountTally {
    pub counted: f64,
    pub duplicates: f64,
    pub beyond_horizon: f64,
    /// When not empty, nothing was counted: the spill records the events need (src/spill.rs
    /// layout), to read and hand to `restore` before counting the same input again.
    pub needs: Buffer,
}

#[napi(object)]
pub struct CountLinesResult {
    /// The first line not counted: the one the fast path deferred, or n.
    pub next: f64,
    pub counted: f64,
    pub duplicates: f64,
    pub beyond_horizon: f64,
    /// As `CountTally::needs` (then `next` is `from`).
    pub needs: Buffer,
}

/// What `evict` spilled (`Spilled`): record i's key as a need and its value.
#[napi(object)]
pub struct SpillRecords {
    pub keys: Buffer,
    pub values: Buffer,
    pub ends: Uint32Array,
    pub identities: f64,
    pub customers: f64,
    /// `stats().stateBytes` after the eviction: above the limit when what stays in memory
    /// (counters, customers, buckets, the dedup table's share, the marker sets' least room)
    /// passes it.
    pub state_bytes: f64,
}

/// What `sweepMarkerRecords` decided per record (0 kept, 1 rewritten, 2 deleted), the
/// rewritten values in order, and the markers removed.
#[napi(object)]
pub struct SweptRecords {
    pub actions: Uint8Array,
    pub values: Buffer,
    pub ends: Uint32Array,
    pub removed: f64,
}

/// What `configureFastPath` is given: the job's settings that decide how a line is encoded.
#[napi(object)]
pub struct FastPathOptions {
    /// `account` or `customer`; must match the constructor's `account`.
    pub level: String,
    /// The job's granularities in its order (`hour`, `day`, `month`); as many as the constructor's.
    pub granularities: Vec<String>,
    /// K, the job's key group count (1..32768).
    pub key_groups: f64,
    pub max_event_bytes: f64,
    /// `facets.include` (only these are facets) when set; else every name not in `exclude`.
    /// Names that are not well-formed Unicode must be left out (they match no line here).
    pub include: Option<Vec<String>>,
    pub exclude: Vec<String>,
    /// The key groups this task counts (a worker's); absent: every group (local mode). Lines
    /// of other groups are deferred, for TypeScript to reject.
    pub owned_groups: Option<Vec<u32>>,
}

#[napi(object)]
pub struct Finalised {
    /// The counter ids (UTF-8) back to back: id i is `ids[idEnds[i - 1] ?? 0 .. idEnds[i]]`.
    pub ids: Buffer,
    pub id_ends: Uint32Array,
    pub groups: Uint32Array,
    pub counts: Float64Array,
    pub uniques: Float64Array,
    pub fresh: Uint8Array,
}

/// Per group, its two segments (`Parts`; an empty Buffer is none): `counters` is applied first.
#[napi(object)]
pub struct Segments {
    pub groups: Uint32Array,
    pub counters: Vec<Buffer>,
    pub state: Vec<Buffer>,
}

fn segments(list: Vec<(u32, Parts)>) -> Segments {
    let mut out = Segments {
        groups: Uint32Array::new(list.iter().map(|(g, _)| *g).collect()),
        counters: Vec::with_capacity(list.len()),
        state: Vec::with_capacity(list.len()),
    };
    for (_, p) in list {
        out.counters.push(p.counters.into());
        out.state.push(p.state.into());
    }
    out
}

#[napi(object)]
pub struct SweepResult {
    /// The groups swept, ascending, and their segments (see Core::sweep).
    pub segments: Segments,
    /// Dedup identities and uniqueness markers deleted.
    pub dedup: f64,
    pub markers: f64,
}

#[napi(object)]
pub struct Watermarks {
    pub groups: Uint32Array,
    /// Per group: the newest ingest second counted in it since it was loaded.
    pub seconds: Uint32Array,
}

#[napi(object)]
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub counted: f64,
    pub duplicates: f64,
    pub beyond_horizon: f64,
    pub identities: f64,
    pub buckets: f64,
    pub markers: f64,
    pub counters: f64,
    pub customers: f64,
    pub state_bytes: f64,
    /// Customers whose marker set is spilled (in whole or in part), and tags of spilled dedup identities.
    pub spilled_customers: f64,
    pub spilled_identities: f64,
}

/// What a segment holds: per section (customers, counters, dedup, buckets, markers, totals), its records and its bytes.
#[napi(object)]
#[cfg_attr(test, allow(dead_code))]
pub struct SegmentSections {
    pub records: Vec<f64>,
    pub bytes: Vec<f64>,
}

/// The sections of a segment of key group `group` (a benchmark's and an operator's view of
/// what the state is made of); an Error when it is not a valid segment.
#[napi]
#[cfg_attr(test, allow(dead_code))]
pub fn segment_sections(segment: Buffer, group: f64) -> Result<SegmentSections> {
    let group = whole("group", group, (GROUPS - 1) as f64)?;
    let seg = Segment::parse(&segment, group).map_err(invalid)?;
    Ok(SegmentSections {
        records: [seg.customers, seg.counters, seg.dedup, seg.buckets, seg.markers, seg.totals]
            .map(|n| n as f64)
            .to_vec(),
        bytes: seg.section_bytes.map(|n| n as f64).to_vec(),
    })
}

fn invalid(message: String) -> Error {
    Error::new(Status::InvalidArg, message)
}

/// A JS number that must be a whole number in 0..=max.
fn whole(name: &str, v: f64, max: f64) -> Result<u32> {
    if !(v.is_finite() && v.fract() == 0.0 && v >= 0.0 && v <= max) {
        return Err(invalid(format!(
            "{name} must be a whole number in 0..{max}, got {v}"
        )));
    }
    Ok(v as u32)
}

#[napi]
pub struct CountKernel {
    core: Core,
    /// Set by `configureFastPath`.
    fast: Option<FastPath>,
    /// The encoded lines of the current `countLines` call (kept for its capacity).
    lines: Vec<u8>,
}

#[napi]
impl CountKernel {
    #[napi(constructor)]
    pub fn new(
        granularities: f64,
        account: bool,
        dedup_retention_sec: f64,
        uniques_retention_sec: f64,
    ) -> Result<Self> {
        let g = whole("granularities", granularities, MAX_GRANULARITIES as f64)?;
        Ok(CountKernel {
            core: Core::new(
                g as usize,
                account,
                dedup_retention_sec,
                uniques_retention_sec,
            )
            .map_err(invalid)?,
            fast: None,
            lines: Vec::new(),
        })
    }

    /// Enables `countLines` and `encodeLine` with the job's settings (src/fast_path.rs); a
    /// later call replaces them.
    #[napi]
    pub fn configure_fast_path(&mut self, options: FastPathOptions) -> Result<()> {
        let account = match options.level.as_str() {
            "account" => true,
            "customer" => false,
            other => {
                return Err(invalid(format!(
                    "level must be account or customer, got {other:?}"
                )))
            }
        };
        if account != self.core.account {
            return Err(invalid(format!(
                "level {} does not match the kernel's (constructed with account = {})",
                options.level, self.core.account
            )));
        }
        let granularities = options
            .granularities
            .iter()
            .map(|g| {
                Granularity::parse(g)
                    .ok_or_else(|| invalid(format!("granularity {g:?} is not hour, day or month")))
            })
            .collect::<Result<Vec<_>>>()?;
        if granularities.len() != self.core.g {
            return Err(invalid(format!(
                "{} granularities given, the kernel was constructed with {}",
                granularities.len(),
                self.core.g
            )));
        }
        let key_groups = whole("keyGroups", options.key_groups, 32_768.0)?;
        if key_groups == 0 {
            return Err(invalid("keyGroups must be at least 1".to_string()));
        }
        if !(options.max_event_bytes.is_finite()
            && options.max_event_bytes.fract() == 0.0
            && options.max_event_bytes >= 0.0)
        {
            return Err(invalid(format!(
                "maxEventBytes must be a whole number of bytes, got {}",
                options.max_event_bytes
            )));
        }
        let bytes = |names: Vec<String>| {
            names
                .into_iter()
                .map(String::into_bytes)
                .collect::<Vec<_>>()
        };
        let owned = match options.owned_groups {
            None => None,
            Some(groups) => {
                let mut owned = vec![false; key_groups as usize];
                for g in groups {
                    *owned.get_mut(g as usize).ok_or_else(|| {
                        invalid(format!("ownedGroups: key group {g} is not below keyGroups ({key_groups})"))
                    })? = true;
                }
                Some(owned)
            }
        };
        self.fast = Some(FastPath::new(fast_path::Config {
            account,
            granularities,
            key_groups,
            max_event_bytes: options.max_event_bytes.min(usize::MAX as f64) as usize,
            include: options.include.map(bytes),
            exclude: bytes(options.exclude),
            owned,
        }));
        Ok(())
    }

    /// Counts lines [from, n) of `buf` (line i = `buf[ends[i-1]..ends[i]]`, `ends[-1]` = 0,
    /// counted at ingest second `ingest[i]`) in order, up to the first line the fast path
    /// defers; returns its index as `next` (n when none) and the tally of the lines counted.
    /// The caller handles line `next` itself and calls again from `next + 1`.
    #[napi]
    pub fn count_lines(
        &mut self,
        buf: Buffer,
        ends: Uint32Array,
        ingest: Uint32Array,
        from: f64,
        n: f64,
        resolved: bool,
    ) -> Result<CountLinesResult> {
        let from = whole("from", from, u32::MAX as f64)? as usize;
        let n = whole("n", n, u32::MAX as f64)? as usize;
        let fast = self
            .fast
            .as_mut()
            .ok_or_else(|| invalid("countLines: call configureFastPath first".to_string()))?;
        self.lines.clear();
        let (next, encoded) =
            encode_lines(fast, &buf, &ends, &ingest, from, n, &mut self.lines).map_err(invalid)?;
        if !resolved {
            let needs = self.core.needs_of(&self.lines, encoded);
            if !needs.is_empty() {
                return Ok(CountLinesResult {
                    next: from as f64,
                    counted: 0.0,
                    duplicates: 0.0,
                    beyond_horizon: 0.0,
                    needs: needs.into(),
                });
            }
        }
        let t = self
            .core
            .count_encoded(&self.lines, encoded, false)
            .map_err(invalid)?;
        Ok(CountLinesResult {
            next: next as f64,
            counted: t.counted as f64,
            duplicates: t.duplicates as f64,
            beyond_horizon: t.beyond_horizon as f64,
            needs: Vec::new().into(),
        })
    }

    /// The batch encoding of one line counted at `ingestSec`, as `countLines` counts it, or
    /// null when the fast path defers the line (the differential test's hook).
    #[napi]
    pub fn encode_line(&mut self, line: Buffer, ingest_sec: f64) -> Result<Option<Buffer>> {
        let ingest = whole("ingestSec", ingest_sec, u32::MAX as f64)?;
        let fast = self
            .fast
            .as_mut()
            .ok_or_else(|| invalid("encodeLine: call configureFastPath first".to_string()))?;
        let mut out = Vec::new();
        Ok(fast
            .encode(&line, ingest, &mut out)
            .map(|_| Buffer::from(out)))
    }

    /// The key group of each line [0, n) of `buf` (laid out as for `countLines`) that the fast
    /// path reads, or -1 for a line it defers (the route stage: TypeScript validates those).
    /// A line the fast path reads is valid and its group is `keyGroupOf(routingKey(…), K)`,
    /// so the route stage needs no parse of its own for it. Nothing is counted.
    #[napi]
    pub fn key_groups_of(&mut self, buf: Buffer, ends: Uint32Array, n: f64) -> Result<Int32Array> {
        let n = whole("n", n, u32::MAX as f64)? as usize;
        let fast = self
            .fast
            .as_mut()
            .ok_or_else(|| invalid("keyGroupsOf: call configureFastPath first".to_string()))?;
        if n > ends.len() {
            return Err(invalid(format!("keyGroupsOf: n = {n} but there are {} ends", ends.len())));
        }
        let mut groups = vec![-1i32; n];
        let mut start = 0usize;
        for (i, group) in groups.iter_mut().enumerate() {
            let end = ends[i] as usize;
            if start > end || end > buf.len() {
                return Err(invalid(format!("keyGroupsOf: line {i} spans bytes {start}..{end} of a buffer of {} bytes", buf.len())));
            }
            self.lines.clear();
            if let Some(g) = fast.encode(&buf[start..end], 0, &mut self.lines) {
                *group = g as i32;
            }
            start = end;
        }
        self.lines.clear();
        Ok(groups.into())
    }

    /// Counts the n events encoded in `batch`; returns this batch's tally. Unless `resolved`
    /// (the spill records it needed were just restored), a batch that needs spill records is
    /// not counted: the tally lists them.
    #[napi]
    pub fn count_batch(&mut self, batch: Buffer, n: f64, resolved: bool) -> Result<CountTally> {
        let n = whole("n", n, u32::MAX as f64)? as usize;
        if !resolved {
            let needs = self.core.needs_of(&batch, n);
            if !needs.is_empty() {
                return Ok(CountTally {
                    counted: 0.0,
                    duplicates: 0.0,
                    beyond_horizon: 0.0,
                    needs: needs.into(),
                });
            }
        }
        let t = self.core.count_batch(&batch, n).map_err(invalid)?;
        Ok(CountTally {
            counted: t.counted as f64,
            duplicates: t.duplicates as f64,
            beyond_horizon: t.beyond_horizon as f64,
            needs: Vec::new().into(),
        })
    }

    /// Core::restore: the records a count listed as its needs, read from the store.
    #[napi]
    pub fn restore(&mut self, needs: Buffer, found: Uint8Array, values: Buffer, ends: Uint32Array) -> Result<()> {
        self.core.restore(&needs, &found, &values, &ends).map_err(invalid)
    }

    /// Core::evict: spills what keeps the state above `limit` bytes; the records go into the commit.
    #[napi]
    pub fn evict(&mut self, limit: f64) -> SpillRecords {
        let s = self.core.evict(limit);
        SpillRecords {
            keys: s.keys.into(),
            values: s.values.into(),
            ends: s.ends.into(),
            identities: s.identities as f64,
            customers: s.customers as f64,
            state_bytes: self.core.stats().state_bytes,
        }
    }

    /// Core::load_spilled: a loaded group's spill records of `kind` ("I" or "M"), by fingerprint.
    #[napi]
    pub fn load_spilled(&mut self, group: f64, kind: String, fps: Buffer) -> Result<()> {
        let group = whole("group", group, (GROUPS - 1) as f64)?;
        let kind = match kind.as_str() {
            "I" => KIND_IDENTITY,
            "M" => KIND_MARKERS,
            other => return Err(invalid(format!("loadSpilled: kind {other:?} is not I or M"))),
        };
        self.core.load_spilled(group, kind, &fps).map_err(invalid)
    }

    /// Core::forget_identities: identity records of `group` that the store no longer holds.
    #[napi]
    pub fn forget_identities(&mut self, group: f64, fps: Buffer) -> Result<()> {
        let group = whole("group", group, (GROUPS - 1) as f64)?;
        self.core.forget_identities(group, &fps).map_err(invalid)
    }

    /// Core::sweep_marker_records.
    #[napi]
    pub fn sweep_marker_records(&mut self, group: f64, cutoff: f64, fps: Buffer, values: Buffer, ends: Uint32Array) -> Result<SweptRecords> {
        let group = whole("group", group, (GROUPS - 1) as f64)?;
        let (actions, out, out_ends, removed) = self.core.sweep_marker_records(group, cutoff, &fps, &values, &ends).map_err(invalid)?;
        Ok(SweptRecords {
            actions: actions.into(),
            values: out.into(),
            ends: out_ends.into(),
            removed: removed as f64,
        })
    }

    #[napi]
    pub fn finalise(&mut self) -> Result<Finalised> {
        let f = self
            .core
            .finalise()
            .map_err(|e| Error::new(Status::GenericFailure, e))?;
        Ok(Finalised {
            ids: f.ids.into(),
            id_ends: f.id_ends.into(),
            groups: f.groups.into(),
            counts: f.counts.into(),
            uniques: f.uniques.into(),
            fresh: f.fresh.into(),
        })
    }

    #[napi]
    pub fn rebase(
        &mut self,
        positions: Uint32Array,
        counts: Float64Array,
        uniques: Float64Array,
    ) -> Result<()> {
        self.core
            .rebase(&positions, &counts, &uniques)
            .map_err(invalid)
    }

    #[napi]
    pub fn changes(&mut self) -> Segments {
        segments(self.core.changes())
    }

    /// Core::load_segment; true when the segment held counters or totals.
    #[napi]
    pub fn load_segment(&mut self, group: f64, segment: Buffer) -> Result<bool> {
        let group = whole("group", group, (GROUPS - 1) as f64)?;
        self.core.load_segment(group, &segment).map_err(invalid)
    }

    /// Core::sweep: deletes what expired before each group's cutoff (ingest seconds; -Infinity: nothing) and compacts its logs.
    #[napi]
    pub fn sweep(&mut self, groups: Uint32Array, cutoffs: Float64Array, full: Uint8Array) -> Result<SweepResult> {
        let out = self.core.sweep(&groups, &cutoffs, &full).map_err(invalid)?;
        Ok(SweepResult {
            segments: segments(out.groups.into_iter().zip(out.parts).collect()),
            dedup: out.dedup as f64,
            markers: out.markers as f64,
        })
    }

    #[napi]
    pub fn watermarks(&self) -> Watermarks {
        let (groups, seconds) = self.core.watermarks();
        Watermarks {
            groups: groups.into(),
            seconds: seconds.into(),
        }
    }

    #[napi]
    pub fn drop_groups(&mut self, groups: Uint32Array) -> Result<()> {
        self.core.drop_groups(&groups).map_err(invalid)
    }

    #[napi]
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}

/// `order` (id from, id to, counter) sorted by the id bytes `scratch[from..to]`, then by the
/// counter's key group: what a comparison sort of the slices gives (finalise used one), at a
/// fraction of its cost on a heavy customer's or a wide event's window, whose hundreds of
/// thousands of ids share long prefixes (stem, facet name): comparing two of them read both
/// from the scratch (cache misses: it is larger than the cache) and compared them byte by byte
/// from the start, about 2 log2 n times per id. Here the ids are sorted seven bytes at a time
/// (most significant first): each entry carries its next seven bytes as a number, runs of
/// equal bytes are sorted by the following seven, so an id is read about length / 7 times and
/// the sorts compare numbers held in the entries. The bytes all ids share are skipped.
fn sort_by_id(scratch: &[u8], order: Vec<(u32, u32, u32)>, group: impl Fn(u32) -> u16) -> Vec<(u32, u32, u32)> {
    const STEP: usize = 7;
    let n = order.len();
    if n < 2 {
        return order;
    }
    let id = |k: u32| {
        let (from, to, _) = order[k as usize];
        &scratch[from as usize..to as usize]
    };
    // The STEP bytes of `id` from `at` (zero-padded) in the high bytes, how many there are in
    // the low byte: ordering by this key orders by those bytes, an id ending within them
    // before any id that goes on (also one going on with zero bytes).
    let key = |id: &[u8], at: usize| -> u64 {
        let rest = id.get(at..).unwrap_or(&[]);
        if rest.len() >= 8 {
            let w = u64::from_be_bytes(rest[..8].try_into().unwrap());
            return (w & !0xff) | STEP as u64;
        }
        let k = rest.len().min(STEP);
        let mut w = 0u64;
        for (i, &b) in rest[..k].iter().enumerate() {
            w |= (b as u64) << (56 - 8 * i);
        }
        w | k as u64
    };
    let first = id(0);
    let mut shared = first.len();
    for k in 1..n as u32 {
        shared = first[..shared].iter().zip(id(k)).take_while(|(a, b)| a == b).count();
        if shared == 0 {
            break;
        }
    }
    let mut entries: Vec<(u64, u32)> = (0..n as u32).map(|k| (key(id(k), shared), k)).collect();
    // Runs [from, to) of entries whose ids agree before `at`, still to be sorted from `at` on.
    let mut runs = vec![(0, n, shared)];
    while let Some((from, to, at)) = runs.pop() {
        let run = &mut entries[from..to];
        if run.len() <= 16 {
            // A few ids: compared whole (from `at`) rather than keyed a few bytes at a time.
            run.sort_unstable_by(|a, b| {
                id(a.1)[at..]
                    .cmp(&id(b.1)[at..])
                    .then_with(|| group(order[a.1 as usize].2).cmp(&group(order[b.1 as usize].2)))
            });
            continue;
        }
        // Stable: within a run of equal keys the entries stay in scratch order, so the next
        // bytes of its ids are read front to back (the reads, not the sorts, took most of the
        // time when an unstable sort left them in random order).
        run.sort_by_key(|e| e.0);
        let mut i = 0;
        while i < run.len() {
            let k = run[i].0;
            let mut j = i + 1;
            while j < run.len() && run[j].0 == k {
                j += 1;
            }
            if j - i > 1 {
                if k & 0xff == STEP as u64 {
                    // STEP equal bytes: the ids may differ further on.
                    for e in &mut run[i..j] {
                        e.0 = key(id(e.1), at + STEP);
                    }
                    runs.push((from + i, from + j, at + STEP));
                } else {
                    // Equal ids (they end within these bytes): by key group.
                    run[i..j].sort_unstable_by_key(|e| group(order[e.1 as usize].2));
                }
            }
            i = j;
        }
    }
    entries.iter().map(|e| order[e.1 as usize]).collect()
}

#[cfg(test)]
#[path = "count_kernel_tests.rs"]
mod tests;
