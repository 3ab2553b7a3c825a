//! Prototype of the per-micro-batch counting kernel of issue 9, in Rust behind napi-rs.
//!
//! Same rules and the same state design as bench/hotpath/ts-kernel.ts: 128-bit
//! fingerprints (XXH3-128 here) of identities built from the fingerprints of their parts,
//! open-addressing tables in flat vectors, one call per micro-batch that returns the
//! batch's counter deltas as typed arrays. Parsing is serde_json or simd-json through the
//! same serde visitor, which reads an event's fields in one pass without building a map.
//!
//! Not part of the build: see docs/adr/0007-hot-path.md. The production kernel built on the
//! same tables is `CountKernel` (src/count_kernel.rs, segments in src/segment.rs).

#[macro_use]
extern crate napi_derive;

mod civil;
mod count_kernel;
mod customer_markers;
mod event;
mod fast_path;
mod fingerprint;
#[cfg(feature = "rocks")]
mod rocks;
mod segment;
mod spill;
mod table;

use napi::bindgen_prelude::{Buffer, Int32Array, Uint32Array};
use napi::{Error, Result, Status};

use crate::fingerprint::{fp, fp_of};
use event::{parse_serde, parse_simd, Event, Scratch};
use table::{FpTable, PairTable};

// Fingerprint domains (seeds); equal inputs under different seeds are unrelated.
const S_STRING: u64 = 0x51a7e;
const S_ID_SECOND: u64 = 0x5ec0d;
const S_TOKEN: u64 = 0x70ce2;
const S_DEDUP: u64 = 0xdedf9;
const S_STEM: u64 = 0x57e33;
const S_COUNTER: u64 = 0xc0a27;
const S_MARKER: u64 = 0x3a4ce;

#[napi(object)]
pub struct BatchDeltas {
    pub index: Uint32Array,
    pub count: Uint32Array,
    pub uniques: Uint32Array,
    pub new_counters: String,
}

#[napi(object)]
pub struct KernelStats {
    pub counted: f64,
    pub duplicates: f64,
    pub invalid: f64,
    pub beyond_horizon: f64,
    pub identities: f64,
    pub markers: f64,
    pub buckets: f64,
    pub state_bytes: f64,
}

#[napi]
pub struct Kernel {
    account: bool,
    granularities: Vec<u32>,
    dedup_retention: u64,
    uniques_retention: u64,
    simd: bool,
    /// Markers keyed by (counter index, customer index) in 12-byte slots, instead of fingerprints in 24-byte ones.
    compact: bool,
    customers: FpTable,
    customer_count: u32,
    pair_markers: PairTable,
    event_counters: Vec<u32>,
    dedup: FpTable,
    buckets: FpTable,
    markers: FpTable,
    counter_index: FpTable,
    counters: u32,
    /// Per counter: this batch's deltas; `touched` lists the counters with any.
    batch_count: Vec<u32>,
    batch_uniques: Vec<u32>,
    touched: Vec<u32>,
    new_counters: String,
    scratch: Scratch,
    simd_buffers: simd_json::Buffers,
    line: Vec<u8>,
    tokens: Vec<u128>,
    /// Per event, per granularity: stem fingerprint and bucket start; per (granularity, token): counter and marker fingerprints.
    stems: Vec<(u128, i64)>,
    counter_fps: Vec<u128>,
    marker_fps: Vec<u128>,
    counted: u64,
    duplicates: u64,
    invalid: u64,
    beyond_horizon: u64,
}

#[napi]
impl Kernel {
    #[napi(constructor)]
    pub fn new(
        level: String,
        granularities: Vec<u32>,
        dedup_retention_sec: f64,
        uniques_retention_sec: f64,
        simd: bool,
        compact_markers: bool,
        marker_slots: f64,
    ) -> Result<Self> {
        if level != "account" && level != "customer" {
            return Err(Error::new(
                Status::InvalidArg,
                format!("level must be account or customer, got {level}"),
            ));
        }
        Ok(Kernel {
            account: level == "account",
            granularities,
            dedup_retention: dedup_retention_sec as u64,
            uniques_retention: uniques_retention_sec as u64,
            simd,
            compact: compact_markers,
            customers: FpTable::new(if compact_markers { 1 << 16 } else { 0 }),
            customer_count: 0,
            pair_markers: PairTable::new(if !compact_markers {
                0
            } else if marker_slots > 0.0 {
                marker_slots as usize
            } else {
                1 << 23
            }),
            event_counters: Vec::new(),
            dedup: FpTable::new(1 << 20),
            buckets: FpTable::new(1 << 10),
            markers: FpTable::new(if compact_markers { 0 } else { 1 << 22 }),
            counter_index: FpTable::new(1 << 16),
            counters: 0,
            batch_count: Vec::new(),
            batch_uniques: Vec::new(),
            touched: Vec::new(),
            new_counters: String::new(),
            scratch: Scratch::default(),
            simd_buffers: simd_json::Buffers::new(4096),
            line: Vec::new(),
            tokens: Vec::new(),
            stems: Vec::new(),
            counter_fps: Vec::new(),
            marker_fps: Vec::new(),
            counted: 0,
            duplicates: 0,
            invalid: 0,
            beyond_horizon: 0,
        })
    }

    /// Counts lines [starts[i], ends[i]) of `buf`, i < n, with their ingest seconds.
    #[napi]
    pub fn count_batch(
        &mut self,
        buf: Buffer,
        starts: Int32Array,
        ends: Int32Array,
        ingest: Uint32Array,
        n: u32,
    ) -> Result<BatchDeltas> {
        let bytes: &[u8] = &buf;
        let n = n as usize;
        if n > starts.len() || n > ends.len() || n > ingest.len() {
            return Err(Error::new(
                Status::InvalidArg,
                "starts, ends and ingest must hold n entries".to_string(),
            ));
        }
        self.new_counters.clear();
        for i in 0..n {
            let (s, e) = (starts[i] as usize, ends[i] as usize);
            if s > e || e > bytes.len() {
                return Err(Error::new(
                    Status::InvalidArg,
                    format!("line {i} [{s}, {e}) is outside the buffer"),
                ));
            }
            self.count_line(&bytes[s..e], ingest[i] as u64);
        }
        let k = self.touched.len();
        let (mut index, mut count, mut uniques) = (
            Vec::with_capacity(k),
            Vec::with_capacity(k),
            Vec::with_capacity(k),
        );
        for &c in &self.touched {
            index.push(c);
            count.push(self.batch_count[c as usize]);
            uniques.push(self.batch_uniques[c as usize]);
            self.batch_count[c as usize] = 0;
            self.batch_uniques[c as usize] = 0;
        }
        self.touched.clear();
        let new_counters = if self.new_counters.is_empty() {
            String::new()
        } else {
            format!("[{}]", &self.new_counters[1..])
        };
        Ok(BatchDeltas {
            index: index.into(),
            count: count.into(),
            uniques: uniques.into(),
            new_counters,
        })
    }

    #[napi]
    pub fn stats(&self) -> KernelStats {
        KernelStats {
            counted: self.counted as f64,
            duplicates: self.duplicates as f64,
            invalid: self.invalid as f64,
            beyond_horizon: self.beyond_horizon as f64,
            identities: self.dedup.len() as f64,
            markers: (self.markers.len() + self.pair_markers.len()) as f64,
            buckets: self.buckets.len() as f64,
            state_bytes: (self.dedup.bytes()
                + self.buckets.bytes()
                + self.markers.bytes()
                + self.pair_markers.bytes()
                + self.customers.bytes()
                + self.counter_index.bytes()
                + self.batch_count.len() * 8) as f64,
        }
    }
}

impl Kernel {
    fn count_line(&mut self, line: &[u8], ingest: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let parsed = if self.simd {
            self.line.clear();
            self.line.extend_from_slice(line);
            let mut copy = std::mem::take(&mut self.line);
            let r = parse_simd(&mut copy, &mut self.simd_buffers, &mut scratch)
                .map(|ev| self.count_event(&ev, &scratch, ingest));
            self.line = copy;
            r
        } else {
            parse_serde(line, &mut scratch).map(|ev| self.count_event(&ev, &scratch, ingest))
        };
        if parsed.is_none() {
            self.invalid += 1;
        }
        self.scratch = scratch;
    }

    fn count_event(&mut self, ev: &Event, scratch: &Scratch, ingest: u64) {
        let company = fp(ev.company.as_bytes(), S_STRING);
        let statistic = fp(ev.statistic.as_bytes(), S_STRING);
        let customer = fp(ev.customer.as_bytes(), S_STRING);
        let id = match &ev.event_id {
            Some(id) => fp(id.as_bytes(), S_STRING),
            None => fp(&ev.second.to_le_bytes(), S_ID_SECOND),
        };
        let d = fp_of(&[company, statistic, customer, id], &[], S_DEDUP);
        self.dedup.prefetch(d);
        if self.compact {
            self.customers.prefetch(customer);
        }

        // Every fingerprint of the event first, with a prefetch of its home slot, so the
        // cache misses of the lookups below overlap (for duplicates this work is wasted).
        self.tokens.clear();
        self.tokens.push(fp(b"*", S_TOKEN));
        for t in 0..scratch.facets() {
            let (name, value) = scratch.facet(t);
            self.tokens.push(fp_of(
                &[
                    fp(name.as_bytes(), S_STRING),
                    fp(value.as_bytes(), S_STRING),
                ],
                &[],
                S_TOKEN,
            ));
        }
        let scope = if self.account { company } else { customer };
        self.stems.clear();
        self.counter_fps.clear();
        self.marker_fps.clear();
        for &g in &self.granularities {
            let bucket = civil::bucket_start(g, ev.second);
            let stem = fp_of(&[scope, statistic], &[g as u64, bucket as u64], S_STEM);
            self.stems.push((stem, bucket));
            if self.account {
                self.buckets.prefetch(stem);
            }
            for &token in &self.tokens {
                let cfp = fp_of(&[stem, token], &[], S_COUNTER);
                self.counter_index.prefetch(cfp);
                self.counter_fps.push(cfp);
                if self.account && !self.compact {
                    let m = fp_of(&[cfp, customer], &[], S_MARKER);
                    self.markers.prefetch(m);
                    self.marker_fps.push(m);
                }
            }
        }

        match self.dedup.find(d) {
            Ok(slot) => {
                if ingest.saturating_sub(self.dedup.val(slot) as u64 - 1) <= self.dedup_retention {
                    self.duplicates += 1;
                    return;
                }
                self.dedup.set(slot, ingest as u32 + 1, 0);
            }
            Err(miss) => {
                self.dedup.insert(miss, d, ingest as u32 + 1, 0);
            }
        }
        self.counted += 1;

        let tokens = self.tokens.len();
        if self.compact && self.account {
            self.count_compact(ev, scratch, ingest, customer);
            return;
        }
        for gi in 0..self.granularities.len() {
            let g = self.granularities[gi];
            let (stem, bucket) = self.stems[gi];
            let epoch = if self.account {
                self.touch_bucket(stem, g, bucket, ingest)
            } else {
                0
            };
            for t in 0..tokens {
                let cfp = self.counter_fps[gi * tokens + t];
                let c = self.counter_of(cfp, ev, scratch, g, bucket, t);
                let mut is_new = 0;
                if self.account {
                    let m = self.marker_fps[gi * tokens + t];
                    match self.markers.find(m) {
                        Err(miss) => {
                            self.markers.insert(miss, m, epoch + 1, 0);
                            is_new = 1;
                        }
                        Ok(slot) if self.markers.val(slot) != epoch + 1 => {
                            self.markers.set(slot, epoch + 1, 0);
                            is_new = 1;
                        }
                        Ok(_) => {}
                    }
                }
                self.add_to_batch(c, is_new, epoch);
            }
        }
    }

    /// count_event's second half with markers keyed by (counter index, customer index): the
    /// counters are resolved first, then every marker slot prefetched, then judged.
    fn count_compact(&mut self, ev: &Event, scratch: &Scratch, ingest: u64, customer: u128) {
        let cu = match self.customers.find(customer) {
            Ok(slot) => self.customers.val(slot) - 1,
            Err(miss) => {
                self.customer_count += 1;
                self.customers
                    .insert(miss, customer, self.customer_count, 0);
                self.customer_count - 1
            }
        };
        let tokens = self.tokens.len();
        self.event_counters.clear();
        for gi in 0..self.granularities.len() {
            let (g, (_, bucket)) = (self.granularities[gi], self.stems[gi]);
            for t in 0..tokens {
                let c =
                    self.counter_of(self.counter_fps[gi * tokens + t], ev, scratch, g, bucket, t);
                self.pair_markers.prefetch(c, cu);
                self.event_counters.push(c);
            }
        }
        for gi in 0..self.granularities.len() {
            let (g, (stem, bucket)) = (self.granularities[gi], self.stems[gi]);
            let epoch = self.touch_bucket(stem, g, bucket, ingest);
            for t in 0..tokens {
                let c = self.event_counters[gi * tokens + t];
                let is_new = u32::from(self.pair_markers.mark(c, cu, epoch + 1));
                self.add_to_batch(c, is_new, epoch);
            }
        }
    }

    /// One counter update of a counted event into the batch's deltas.
    #[inline]
    fn add_to_batch(&mut self, c: u32, is_new: u32, epoch: u32) {
        if is_new == 1 && epoch > 0 {
            self.beyond_horizon += 1;
        }
        let ci = c as usize;
        if self.batch_count[ci] == 0 {
            self.touched.push(c);
        }
        self.batch_count[ci] += 1;
        self.batch_uniques[ci] += is_new;
    }

    fn counter_of(
        &mut self,
        cfp: u128,
        ev: &Event,
        scratch: &Scratch,
        g: u32,
        bucket: i64,
        t: usize,
    ) -> u32 {
        match self.counter_index.find(cfp) {
            Ok(slot) => self.counter_index.val(slot) - 1,
            Err(miss) => {
                let c = self.counters;
                self.counters += 1;
                self.counter_index.insert(miss, cfp, c + 1, 0);
                if self.batch_count.len() <= c as usize {
                    let n = (c as usize + 1).next_power_of_two().max(1024);
                    self.batch_count.resize(n, 0);
                    self.batch_uniques.resize(n, 0);
                }
                let scope: &str = if self.account {
                    &ev.company
                } else {
                    &ev.customer
                };
                let (facet, value) = if t == 0 {
                    ("*", "*")
                } else {
                    scratch.facet(t - 1)
                };
                self.new_counters.push(',');
                self.new_counters.push_str(
                    &serde_json::to_string(&(scope, &*ev.statistic, g, bucket, facet, value))
                        .expect("strings serialise"),
                );
                c
            }
        }
    }

    /// The rule of touchBucket in worker/engine/counting.ts; returns the marker epoch in force.
    fn touch_bucket(&mut self, stem: u128, g: u32, bucket: i64, ingest: u64) -> u32 {
        let hour = (ingest - ingest % 3600) as u32;
        match self.buckets.find(stem) {
            Err(miss) => {
                self.buckets.insert(miss, stem, hour + 1, 0);
                0
            }
            Ok(slot) => {
                let last = (self.buckets.val(slot) - 1) as i64;
                let epoch = self.buckets.val2(slot);
                if ingest as i64
                    > civil::bucket_end(g, bucket).max(last) + self.uniques_retention as i64
                {
                    self.buckets.set(slot, hour + 1, epoch + 1);
                    return epoch + 1;
                }
                if hour as i64 > last {
                    self.buckets.set(slot, hour + 1, epoch);
                }
                epoch
            }
        }
    }
}
