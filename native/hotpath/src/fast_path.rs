//! The native engine's fast path: a raw JSON line in, the batch encoding of count_kernel.rs
//! out (one event: group, ingest second, ids, identity, per granularity the bucket end and
//! counter stem, the tokens), byte for byte what TypeScript writes for the same line through
//! `parseEvent` (worker/engine/event.ts) → `keyGroupOf(routingKey(…), K)`
//! (common/keygroups.ts) → `encodeEvent` (worker/engine/native-state.ts, which
//! `NativeState.add` uses). TypeScript stays the authority: for every line this module is
//! not certain about it returns nothing (the line is *deferred*) and TypeScript parses it,
//! dead-letters it or encodes it itself. Deferring more is always correct; encoding a line
//! differently is a defect. test/unit/native-fastpath.test.ts compares the two on a large
//! hostile corpus.
//!
//! # The shape handled
//!
//! A line (a record's bytes, without its line end: worker/io/jsonl.ts strips LF and one CR,
//! Kafka values and the generator's records carry none) is encoded only when all of this
//! holds; anything else is deferred:
//!
//! - at most `maxEventBytes` bytes (parseEvent's `too_large` check is on the same bytes; the
//!   caller defers a record whose `value` holds only the head of a longer line) and valid
//!   UTF-8 (`std::str::from_utf8` and Node's `isUtf8` both implement RFC 3629: no overlong
//!   forms, no encoded surrogates, nothing above U+10FFFF);
//! - JSON whitespace (space, tab, LF, CR: exactly what JSON.parse skips), then ONE flat
//!   object, then only whitespace. Member values are strings, numbers, `true`, `false`,
//!   `null`, or an array or object (`nested_at`: checked to be JSON as JSON.parse reads it,
//!   with the same rules for its numbers and literals, no escape in its strings, at most
//!   MAX_NESTING deep; anything else in it defers). An array or object is never a facet
//!   value (event.ts's facetValue), and one in a reserved member defers the line. A nested
//!   member named `timestamp` does not change the top-level one's whole second: event.ts
//!   reads a fractional timestamp's text with topLevelMemberText, which skips nested values;
//! - every string (names and values) is written without any escape and without control
//!   characters (< 0x20, which JSON.parse rejects unescaped). So the string JSON.parse builds
//!   is exactly the UTF-8 text of its bytes: its UTF-8 encoding (what TextEncoder and
//!   NativeState's writer produce) is those bytes, it is well-formed (no lone surrogate can
//!   come from valid UTF-8, so every `isWellFormed()` of event.ts holds), and its JS `length`
//!   (UTF-16 code units, what `lp()` prefixes) is the number of UTF-8 lead bytes plus one
//!   more per 4-byte sequence (an astral character is two UTF-16 units);
//! - numbers follow the JSON grammar exactly (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`;
//!   a leading zero such as `01` leaves a digit where a delimiter must be, and defers);
//! - no name appears twice (JSON.parse would keep the last value at the first position);
//!   no name consists of ASCII digits only (an array index, which `Object.keys` lists
//!   before the other names, changing the facet order); no name is `__proto__`. Any number
//!   of members (a wide event of 60,000 facets too: the duplicate check compares the first
//!   LINEAR_MEMBERS names directly and hashes the names beyond, see `read_object`), but at
//!   most u16::MAX - 1 counted facets (the batch's token count is a u16);
//! - `company_id`, `statistic_id`, `customer_id`: non-empty strings; `statistic_id` and the
//!   scope (company at account level, customer at customer level) hold at most 16,384 bytes
//!   (MAX_KEY_ID_BYTES: longer is `id_too_long`);
//! - `timestamp`:
//!   - a non-negative number without exponent whose integer part has at most 12 digits,
//!     with or without a fraction: the whole second is the integer part. event.ts gets the
//!     same: a double that is not an integer floors to it exactly (an integer between the
//!     double and the written value would be the nearer double); a double that IS an integer
//!     is either the written integer, or the text has a fraction, and then FRACTIONAL_TIMESTAMP
//!     (`timestamp"\s*:\s*-?\d+[.eE]`) matches the member — its name has no escape — and
//!     floorOfNumberText of the only `timestamp` member's text is the integer part too;
//!   - or a string matching time.ts's ISO_DATE_TIME, parsed here from the same parts with the
//!     same calendar checks (month 1-12, day within the month, hour ≤ 23, minute ≤ 59,
//!     second ≤ 59, offset ≤ 23:59), fractional digits ignored;
//!   - and the whole second is in [0, 253402300800) (1970 through 9999; outside it is
//!     `timestamp_out_of_range`);
//! - `event_id` absent, `null`, `true`, `false` or `""` (canonicalEventId: absent, identity
//!   `t<second>`), a non-empty string (identity `i<text>`), or an integer of at most 15
//!   digits without fraction or exponent: below 2^53 the double is exact and JSON.stringify
//!   writes the same digits (JSON allows no leading zero), `-0` becoming `0`. Other numbers
//!   (fractions, exponents, more digits) defer: their canonical text needs the shortest
//!   round-trip form of a double;
//! - every other member is a facet candidate, in the line's order (= `Object.keys` order
//!   once array-index names are excluded). The job's selection decides first, as in
//!   collectFacets: with an include list only names in it, else every name not in the
//!   exclude list (names compared as UTF-8 bytes; TypeScript drops names that are not
//!   well-formed Unicode before handing the lists over, and those can never equal a name
//!   accepted here). Then the value: a string (`""` is no facet), an integer as for
//!   `event_id`, `true`/`false`; `null` is no facet; other numbers defer (excluded facets may
//!   hold any number: it is only validated). A counted facet whose name and value together
//!   pass MAX_FACET_BYTES defers (event.ts drops it).
//!
//! # What is derived, and why it is identical
//!
//! - key group: murmur3_x86_32 (seed 0) of the routing key's UTF-8 bytes — company `\0`
//!   statistic at account level, customer at customer level — modulo K: the same bytes
//!   TextEncoder gives for the same well-formed strings, the same hash (golden vectors of
//!   test/unit/keygroups.test.ts in this module's tests);
//! - identity: `i` + the event id's canonical text, or `t` + the whole second in decimal;
//! - per granularity (in the job's order): bucketStart/bucketEnd of time.ts on a
//!   non-negative second (hour and day by remainder; month from the proleptic Gregorian
//!   calendar JS Dates use), the end written as an f64; the stem `lp(scope) lp(statistic)`
//!   code bucket `|` with lp(s) = `<UTF-16 length>:<s>`;
//! - tokens: `*`, then per counted facet `=` lp(facetColumn(name)) value, facetColumn adding
//!   one `*` to a name made only of asterisks.

use crate::civil::{days_from_civil, year_month_of_days};
use std::collections::HashSet;
use xxhash_rust::xxh3::xxh3_64;

/// event.ts's MAX_KEY_ID_BYTES and MAX_FACET_BYTES.
pub const MAX_KEY_ID_BYTES: usize = 16_384;
pub const MAX_FACET_BYTES: usize = 32_000;
/// time.ts's MAX_EVENT_SECONDS_EXCLUSIVE: 10000-01-01T00:00:00Z.
pub const MAX_EVENT_SECONDS_EXCLUSIVE: i64 = 253_402_300_800;
/// Non-reserved members whose names are checked for a duplicate by comparing them with each
/// earlier name: the usual event has a handful, for which that beats hashing. From this many
/// on, names are checked by their hashes (`FastPath::names`), so a wide event costs linear
/// time instead of quadratic.
const LINEAR_MEMBERS: usize = 16;
/// Integer digits up to which a number's text is its canonical text (10^15 < 2^53).
const MAX_EXACT_DIGITS: usize = 15;
/// Integer digits of a numeric timestamp (its range ends at a 12-digit number).
const MAX_TIMESTAMP_DIGITS: usize = 12;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// worker/engine/time.ts's granularities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

impl Granularity {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            "month" => Some(Granularity::Month),
            _ => None,
        }
    }

    /// counter-id.ts's granularityCode.
    fn code(self) -> u8 {
        match self {
            Granularity::Hour => b'h',
            Granularity::Day => b'd',
            Granularity::Month => b'm',
        }
    }
}

/// What the fast path needs of the job (see `CountKernel::configure_fast_path`).
pub struct Config {
    pub account: bool,
    /// In the order of the job's `granularities` (the order of the stems in the batch).
    pub granularities: Vec<Granularity>,
    pub key_groups: u32,
    pub max_event_bytes: usize,
    /// Only these names are facets (the job's `facets.include`), or every name but `exclude`.
    pub include: Option<Vec<Vec<u8>>>,
    pub exclude: Vec<Vec<u8>>,
    /// Per key group (K entries): whether this task counts it; None: every group. A line of
    /// a group it does not count is deferred (TypeScript rejects it).
    pub owned: Option<Vec<bool>>,
}

/// Names compared as bytes: a list for the usual few, a set for many.
struct NameSet {
    list: Vec<Vec<u8>>,
    set: Option<HashSet<Vec<u8>>>,
}

impl NameSet {
    fn new(names: Vec<Vec<u8>>) -> Self {
        let set = (names.len() > 16).then(|| names.iter().cloned().collect());
        NameSet { list: names, set }
    }

    fn contains(&self, name: &[u8]) -> bool {
        match &self.set {
            Some(set) => set.contains(name),
            None => self.list.iter().any(|n| n == name),
        }
    }
}

/// A member value, as byte ranges of the line.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    /// A string without escapes: its content [from, to).
    Str(usize, usize),
    /// An integer written without fraction or exponent, with at most MAX_EXACT_DIGITS digits,
    /// not `-0`: its text [from, to), sign included, is its canonical text.
    Int(usize, usize),
    /// `-0`, whose canonical text is `0`.
    NegZero,
    /// A non-negative number with a fraction and no exponent: its integer digits [from, to).
    Fraction(usize, usize),
    /// Any other JSON number: valid, never used here.
    OtherNumber,
    True,
    False,
    Null,
    /// An array or object, checked to be valid JSON and skipped: never a facet value.
    Nested,
}

/// The reserved fields, in RESERVED_SLOTS order.
const COMPANY: usize = 0;
const STATISTIC: usize = 1;
const CUSTOMER: usize = 2;
const TIMESTAMP: usize = 3;
const EVENT_ID: usize = 4;

fn reserved_slot(name: &[u8]) -> Option<usize> {
    match name {
        b"company_id" => Some(COMPANY),
        b"statistic_id" => Some(STATISTIC),
        b"customer_id" => Some(CUSTOMER),
        b"timestamp" => Some(TIMESTAMP),
        b"event_id" => Some(EVENT_ID),
        _ => None,
    }
}

pub struct FastPath {
    account: bool,
    granularities: Vec<Granularity>,
    key_groups: u32,
    owned: Option<Vec<bool>>,
    max_event_bytes: usize,
    include: Option<NameSet>,
    exclude: NameSet,
    // Scratch of the line being read.
    reserved: [Option<Value>; 5],
    /// Non-reserved members in line order: (name from, name to, value).
    members: Vec<(usize, usize, Value)>,
    /// xxh3_64 of the member names once a line has LINEAR_MEMBERS of them (read_object).
    names: HashSet<u64>,
    routing: Vec<u8>,
}

#[inline]
fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t' || c == b'\n' || c == b'\r'
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

#[inline]
fn is_digit(b: &[u8], i: usize) -> bool {
    i < b.len() && b[i].is_ascii_digit()
}

/// The content [from, to) of the string whose opening quote is at `at`; None for an escape,
/// a control character or a missing closing quote.
#[inline]
fn string_at(b: &[u8], at: usize) -> Option<(usize, usize)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let from = at + 1;
    let mut i = from;
    // Eight bytes at a time (strings are most of a line): a byte's high bit is set in `special`
    // where the byte is `"` or `\` (x ^ c is 0 there) or below 0x20. Borrows only run upwards,
    // so the lowest flagged byte of each term, hence of their union, is a true match.
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ]);
        let quote = x ^ (ONES * b'"' as u64);
        let backslash = x ^ (ONES * b'\\' as u64);
        let special = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if special != 0 {
            i += (special.trailing_zeros() / 8) as usize;
            return if b[i] == b'"' { Some((from, i)) } else { None };
        }
        i += 8;
    }
    loop {
        let c = *b.get(i)?;
        if c == b'"' {
            return Some((from, i));
        }
        if c == b'\\' || c < 0x20 {
            return None;
        }
        i += 1;
    }
}

/// The number starting at `at` (a `-` or a digit) and the index after it; None when it does
/// not follow the JSON grammar.
fn number_at(b: &[u8], at: usize) -> Option<(Value, usize)> {
    let mut i = at;
    let negative = b[i] == b'-';
    if negative {
        i += 1;
    }
    let int_from = i;
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while is_digit(b, i) {
                i += 1;
            }
        }
        _ => return None,
    }
    let int_to = i;
    let mut fraction = false;
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !is_digit(b, i) {
            return None;
        }
        while is_digit(b, i) {
            i += 1;
        }
        fraction = true;
    }
    let mut exponent = false;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !is_digit(b, i) {
            return None;
        }
        while is_digit(b, i) {
            i += 1;
        }
        exponent = true;
    }
    let digits = int_to - int_from;
    let value = if exponent || digits > MAX_EXACT_DIGITS || (fraction && negative) {
        Value::OtherNumber
    } else if fraction {
        Value::Fraction(int_from, int_to)
    } else if negative && &b[int_from..int_to] == b"0" {
        Value::NegZero
    } else {
        Value::Int(at, int_to)
    };
    Some((value, i))
}

/// Nesting deeper than this defers the line (deferring is always correct; real events nest
/// a few levels, and a bounded depth keeps the recursion's stack small).
const MAX_NESTING: usize = 32;

/// The index after the array or object starting at `at` (its `[` or `{`), checked to be
/// JSON that JSON.parse accepts; None when it is not, when a string in it has an escape (not
/// checked here) or when it nests deeper than MAX_NESTING.
fn nested_at(b: &[u8], at: usize, depth: usize) -> Option<usize> {
    if depth >= MAX_NESTING {
        return None;
    }
    let (object, close) = match b[at] {
        b'{' => (true, b'}'),
        _ => (false, b']'),
    };
    let mut i = skip_ws(b, at + 1);
    if b.get(i) == Some(&close) {
        return Some(i + 1);
    }
    loop {
        if object {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (_, to) = string_at(b, i)?;
            i = skip_ws(b, to + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
        }
        i = match *b.get(i)? {
            b'"' => string_at(b, i)?.1 + 1,
            b'-' | b'0'..=b'9' => number_at(b, i)?.1,
            b't' if b[i..].starts_with(b"true") => i + 4,
            b'f' if b[i..].starts_with(b"false") => i + 5,
            b'n' if b[i..].starts_with(b"null") => i + 4,
            b'[' | b'{' => nested_at(b, i, depth + 1)?,
            _ => return None,
        };
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(&c) if c == close => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The decimal value of ASCII digits (at most 18, which the callers guarantee).
fn decimal(digits: &[u8]) -> i64 {
    digits.iter().fold(0i64, |v, &c| v * 10 + (c - b'0') as i64)
}

/// `n` ASCII digits at `at` as a number.
fn digits_at(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let d = s.get(at..at + n)?;
    if d.iter().all(u8::is_ascii_digit) {
        Some(decimal(d))
    } else {
        None
    }
}

fn is_leap_year(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// time.ts's bucketStart and bucketEnd, for a second in [0, MAX_EVENT_SECONDS_EXCLUSIVE).
fn bucket(g: Granularity, seconds: i64) -> (i64, i64) {
    match g {
        Granularity::Hour => {
            let start = seconds - seconds % HOUR;
            (start, start + HOUR)
        }
        Granularity::Day => {
            let start = seconds - seconds % DAY;
            (start, start + DAY)
        }
        Granularity::Month => {
            let (y, m) = year_month_of_days(seconds.div_euclid(DAY));
            let start = days_from_civil(y, m, 1) * DAY;
            let end = if m == 12 {
                days_from_civil(y + 1, 1, 1)
            } else {
                days_from_civil(y, m + 1, 1)
            } * DAY;
            (start, end)
        }
    }
}

/// time.ts's parseIsoSeconds: the whole seconds of
/// `^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)$`
/// with its calendar checks; None where it gives NaN. The pattern has no ambiguity (the
/// optional seconds start with `:`, the zone with `Z`, `z`, `+` or `-`, and the fraction's
/// digits cannot start a zone), so reading it left to right decides as the regex does.
pub fn iso_seconds(s: &[u8]) -> Option<i64> {
    if s.len() < 17
        || s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't' | b' ')
        || s[13] != b':'
    {
        return None;
    }
    let year = digits_at(s, 0, 4)?;
    let month = digits_at(s, 5, 2)?;
    let day = digits_at(s, 8, 2)?;
    let hour = digits_at(s, 11, 2)?;
    let minute = digits_at(s, 14, 2)?;
    let mut i = 16;
    let mut second = 0;
    if s[i] == b':' {
        second = digits_at(s, i + 1, 2)?;
        i += 3;
        if s.get(i) == Some(&b'.') {
            i += 1;
            if !is_digit(s, i) {
                return None;
            }
            while is_digit(s, i) {
                i += 1;
            }
        }
    }
    let offset = match *s.get(i)? {
        b'Z' | b'z' if i + 1 == s.len() => 0,
        sign @ (b'+' | b'-') => {
            let oh = digits_at(s, i + 1, 2)?;
            let j = i + 3;
            let om = match s.len() - j.min(s.len()) {
                0 => 0,
                2 => digits_at(s, j, 2)?,
                3 if s[j] == b':' => digits_at(s, j + 1, 2)?,
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            (if sign == b'-' { -1 } else { 1 }) * (oh * HOUR + om * 60)
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    const DAYS: [i64; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let days_in_month = DAYS[(month - 1) as usize]
        - if month == 2 && !is_leap_year(year) {
            1
        } else {
            0
        };
    if day < 1 || day > days_in_month {
        return None;
    }
    Some(days_from_civil(year, month, day) * DAY + hour * HOUR + minute * 60 + second - offset)
}

/// MurmurHash3 x86 32-bit, as common/keygroups.ts's murmur3_32.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut k = 0u32;
        for (i, &b) in tail.iter().enumerate() {
            k ^= (b as u32) << (8 * i);
        }
        h ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// JS `string.length` of valid UTF-8: one UTF-16 unit per character, two for an astral one.
#[inline]
fn utf16_len(s: &[u8]) -> usize {
    if s.is_ascii() {
        return s.len();
    }
    s.iter()
        .map(|&c| ((c & 0xc0) != 0x80) as usize + (c >= 0xf0) as usize)
        .sum()
}

#[inline]
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` in decimal, as JS writes a non-negative integer below 10^21.
#[inline]
fn put_decimal(out: &mut Vec<u8>, v: u64) {
    // Lengths (most calls) are one or two digits.
    if v < 10 {
        out.push(b'0' + v as u8);
    } else if v < 100 {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
    } else {
        put_long_decimal(out, v);
    }
}

fn put_long_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut n = digits.len();
    loop {
        n -= 1;
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[n..]);
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s);
}

/// Starts a `str` whose bytes are appended next; `end_str` writes its length.
#[inline]
fn begin_str(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

#[inline]
fn end_str(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// counter-id.ts's lp(): `<UTF-16 length>:<s>`.
#[inline]
fn put_lp(out: &mut Vec<u8>, s: &[u8], utf16: usize) {
    put_decimal(out, utf16 as u64);
    out.push(b':');
    out.extend_from_slice(s);
}

impl FastPath {
    pub fn new(cfg: Config) -> Self {
        FastPath {
            account: cfg.account,
            granularities: cfg.granularities,
            key_groups: cfg.key_groups,
            owned: cfg.owned,
            max_event_bytes: cfg.max_event_bytes,
            include: cfg.include.map(NameSet::new),
            exclude: NameSet::new(cfg.exclude),
            reserved: [None; 5],
            members: Vec::new(),
            names: HashSet::new(),
            routing: Vec::new(),
        }
    }

    /// Appends the batch encoding of `line` counted at `ingest` to `out` and returns its key
    /// group; or defers it: None, `out` unchanged.
    pub fn encode(&mut self, line: &[u8], ingest: u32, out: &mut Vec<u8>) -> Option<u32> {
        let start = out.len();
        let group = self.encode_inner(line, ingest, out);
        if group.is_none() {
            out.truncate(start);
        }
        group
    }

    /// Reads the line's members into the scratch; None for any line outside the handled shape.
    fn read_object(&mut self, b: &[u8]) -> Option<()> {
        self.reserved = [None; 5];
        self.members.clear();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = skip_ws(b, i + 1);
        loop {
            if b.get(i) != Some(&b'"') {
                return None; // also `{}` and a `,` before `}`: neither is a valid event here
            }
            let (name_from, name_to) = string_at(b, i)?;
            i = skip_ws(b, name_to + 1);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            let (value, next) = match *b.get(i)? {
                b'"' => {
                    let (from, to) = string_at(b, i)?;
                    (Value::Str(from, to), to + 1)
                }
                b'-' | b'0'..=b'9' => number_at(b, i)?,
                b't' if b[i..].starts_with(b"true") => (Value::True, i + 4),
                b'f' if b[i..].starts_with(b"false") => (Value::False, i + 5),
                b'n' if b[i..].starts_with(b"null") => (Value::Null, i + 4),
                b'[' | b'{' => (Value::Nested, nested_at(b, i, 0)?),
                _ => return None, // anything JSON.parse rejects
            };
            let name = &b[name_from..name_to];
            if let Some(slot) = reserved_slot(name) {
                // A reserved field holding an array or object: TypeScript says what it means.
                if self.reserved[slot].is_some() || matches!(value, Value::Nested) {
                    return None;
                }
                self.reserved[slot] = Some(value);
            } else {
                if name == b"__proto__" || (!name.is_empty() && name.iter().all(u8::is_ascii_digit)) {
                    return None;
                }
                let n = self.members.len();
                if n < LINEAR_MEMBERS {
                    if self.members.iter().any(|&(f, t, _)| &b[f..t] == name) {
                        return None;
                    }
                } else {
                    if n == LINEAR_MEMBERS {
                        self.names.clear();
                        for &(f, t, _) in &self.members {
                            self.names.insert(xxh3_64(&b[f..t]));
                        }
                    }
                    // A hash seen before is a duplicate name, or (about once in 2^64 / n
                    // names) two names with one hash: either way the line is deferred,
                    // which is always correct, so the names need not be compared.
                    if !self.names.insert(xxh3_64(name)) {
                        return None;
                    }
                }
                self.members.push((name_from, name_to, value));
            }
            i = skip_ws(b, next);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
        if skip_ws(b, i) != b.len() {
            return None;
        }
        Some(())
    }

    /// A required id: a non-empty string.
    fn id<'a>(&self, b: &'a [u8], slot: usize) -> Option<&'a [u8]> {
        match self.reserved[slot]? {
            Value::Str(from, to) if to > from => Some(&b[from..to]),
            _ => None,
        }
    }

    fn whole_seconds(&self, b: &[u8]) -> Option<i64> {
        let seconds = match self.reserved[TIMESTAMP]? {
            Value::Str(from, to) => iso_seconds(&b[from..to])?,
            Value::Int(from, to) if b[from] != b'-' && to - from <= MAX_TIMESTAMP_DIGITS => {
                decimal(&b[from..to])
            }
            Value::Fraction(from, to) if to - from <= MAX_TIMESTAMP_DIGITS => decimal(&b[from..to]),
            _ => return None,
        };
        (0..MAX_EVENT_SECONDS_EXCLUSIVE)
            .contains(&seconds)
            .then_some(seconds)
    }

    /// A facet value's text (event.ts's facetValue); Some(None) when the member is no facet.
    fn facet_value<'a>(b: &'a [u8], v: Value) -> Option<Option<&'a [u8]>> {
        match v {
            Value::Str(from, to) => Some((to > from).then(|| &b[from..to])),
            Value::Int(from, to) => Some(Some(&b[from..to])),
            Value::NegZero => Some(Some(b"0")),
            Value::True => Some(Some(b"true")),
            Value::False => Some(Some(b"false")),
            Value::Null | Value::Nested => Some(None),
            Value::Fraction(..) | Value::OtherNumber => None,
        }
    }

    fn encode_inner(&mut self, b: &[u8], ingest: u32, out: &mut Vec<u8>) -> Option<u32> {
        if b.len() > self.max_event_bytes || std::str::from_utf8(b).is_err() {
            return None;
        }
        self.read_object(b)?;
        let company = self.id(b, COMPANY)?;
        let statistic = self.id(b, STATISTIC)?;
        let customer = self.id(b, CUSTOMER)?;
        let scope = if self.account { company } else { customer };
        if statistic.len() > MAX_KEY_ID_BYTES || scope.len() > MAX_KEY_ID_BYTES {
            return None;
        }
        let seconds = self.whole_seconds(b)?;

        self.routing.clear();
        if self.account {
            self.routing.extend_from_slice(company);
            self.routing.push(0);
            self.routing.extend_from_slice(statistic);
        } else {
            self.routing.extend_from_slice(customer);
        }
        let group = murmur3_32(&self.routing, 0) % self.key_groups;
        if let Some(owned) = &self.owned {
            if !owned.get(group as usize).copied().unwrap_or(false) {
                return None;
            }
        }

        put_u32(out, group);
        put_u32(out, ingest);
        let tokens_at = out.len();
        out.extend_from_slice(&[0, 0]);
        put_str(out, company);
        put_str(out, statistic);
        put_str(out, customer);
        let at = begin_str(out);
        match self.reserved[EVENT_ID] {
            None | Some(Value::Null | Value::True | Value::False) => {
                out.push(b't');
                put_decimal(out, seconds as u64);
            }
            Some(Value::Str(from, to)) if from == to => {
                out.push(b't');
                put_decimal(out, seconds as u64);
            }
            Some(Value::Str(from, to) | Value::Int(from, to)) => {
                out.push(b'i');
                out.extend_from_slice(&b[from..to]);
            }
            Some(Value::NegZero) => out.extend_from_slice(b"i0"),
            Some(Value::Fraction(..) | Value::OtherNumber | Value::Nested) => return None,
        }
        end_str(out, at);

        let (scope16, statistic16) = (utf16_len(scope), utf16_len(statistic));
        for &g in &self.granularities {
            let (start, end) = bucket(g, seconds);
            out.extend_from_slice(&(end as f64).to_le_bytes());
            let at = begin_str(out);
            put_lp(out, scope, scope16);
            put_lp(out, statistic, statistic16);
            out.push(g.code());
            put_decimal(out, start as u64);
            out.push(b'|');
            end_str(out, at);
        }

        put_str(out, b"*");
        let mut tokens: usize = 1;
        for k in 0..self.members.len() {
            let (from, to, value) = self.members[k];
            let name = &b[from..to];
            let selected = match &self.include {
                Some(include) => include.contains(name),
                None => !self.exclude.contains(name),
            };
            if !selected {
                continue;
            }
            let Some(value) = Self::facet_value(b, value)? else {
                continue;
            };
            if name.len() + value.len() > MAX_FACET_BYTES {
                return None;
            }
            // facetColumn: a name of asterisks only gets one more.
            let stars = !name.is_empty() && name.iter().all(|&c| c == b'*');
            let at = begin_str(out);
            out.push(b'=');
            put_decimal(out, (utf16_len(name) + stars as usize) as u64);
            out.push(b':');
            out.extend_from_slice(name);
            if stars {
                out.push(b'*');
            }
            out.extend_from_slice(value);
            end_str(out, at);
            tokens += 1;
        }
        // More tokens than the u16 count holds: TypeScript decides (its writer refuses too).
        let tokens = u16::try_from(tokens).ok()?;
        out[tokens_at..tokens_at + 2].copy_from_slice(&tokens.to_le_bytes());
        Some(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(account: bool, include: Option<&[&str]>, exclude: &[&str]) -> FastPath {
        FastPath::new(Config {
            account,
            granularities: vec![Granularity::Hour, Granularity::Day, Granularity::Month],
            key_groups: 128,
            max_event_bytes: 1 << 20,
            include: include.map(|l| l.iter().map(|s| s.as_bytes().to_vec()).collect()),
            exclude: exclude.iter().map(|s| s.as_bytes().to_vec()).collect(),
            owned: None,
        })
    }

    fn enc(f: &mut FastPath, line: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        f.encode(line.as_bytes(), 1_700_000_000, &mut out)
            .map(|_| out)
    }

    /// The strings of an encoding, after the 10-byte head and the f64s before each stem.
    fn strings(e: &[u8], g: usize) -> (u32, Vec<String>, Vec<f64>) {
        let group = u32::from_le_bytes(e[0..4].try_into().unwrap());
        let t = u16::from_le_bytes(e[8..10].try_into().unwrap()) as usize;
        let mut pos = 10;
        let mut out = Vec::new();
        let mut ends = Vec::new();
        let read = |pos: &mut usize| {
            let len = u32::from_le_bytes(e[*pos..*pos + 4].try_into().unwrap()) as usize;
            let s = String::from_utf8(e[*pos + 4..*pos + 4 + len].to_vec()).unwrap();
            *pos += 4 + len;
            s
        };
        for _ in 0..4 {
            out.push(read(&mut pos));
        }
        for _ in 0..g {
            ends.push(f64::from_le_bytes(e[pos..pos + 8].try_into().unwrap()));
            pos += 8;
            out.push(read(&mut pos));
        }
        for _ in 0..t {
            out.push(read(&mut pos));
        }
        assert_eq!(pos, e.len());
        (group, out, ends)
    }

    const HEAD: &str = r#""company_id":"c","statistic_id":"s","customer_id":"u""#;

    #[test]
    fn murmur_golden_vectors() {
        // test/unit/keygroups.test.ts's vectors (Python mmh3).
        let v: &[(&[u8], u32, u32)] = &[
            (b"", 0, 0),
            (b"", 1, 0x514e28b7),
            (b"", 0xffffffff, 0x81f16f39),
            (b"\0\0\0\0", 0, 0x2362f9de),
            (b"aaaa", 0x9747b28c, 0x5a97808a),
            (b"abc", 0, 0xb3dd93fa),
            (b"Hello, world!", 0x9747b28c, 0x24884cba),
            (
                b"The quick brown fox jumps over the lazy dog",
                0x9747b28c,
                0x2fa826cd,
            ),
            (b"hello", 0, 0x248bfa47),
            (b"company-1\0email open", 0, 0xe828586e),
            ("ünïcödé".as_bytes(), 0, 0x7b5af2c4),
        ];
        for &(data, seed, want) in v {
            assert_eq!(murmur3_32(data, seed), want, "{data:?}");
        }
    }

    #[test]
    fn a_common_event() {
        let mut f = fast(true, None, &[]);
        let line = r#"{"company_id":"acme","statistic_id":"open","customer_id":"cust-1","timestamp":1764223199.123,"event_id":"e-1","country":"DE","vip":true,"n":-12,"z":-0,"gone":null,"empty":""}"#;
        let e = enc(&mut f, line).unwrap();
        let (group, s, ends) = strings(&e, 3);
        assert_eq!(group, murmur3_32(b"acme\0open", 0) % 128);
        assert_eq!(
            u32::from_le_bytes(e[4..8].try_into().unwrap()),
            1_700_000_000
        );
        // 1764223199 = 2025-11-27T05:59:59Z
        assert_eq!(
            s,
            [
                "acme",
                "open",
                "cust-1",
                "ie-1",
                "4:acme4:openh1764219600|",
                "4:acme4:opend1764201600|",
                "4:acme4:openm1761955200|",
                "*",
                "=7:countryDE",
                "=3:viptrue",
                "=1:n-12",
                "=1:z0",
            ]
        );
        assert_eq!(ends, [1764223200.0, 1764288000.0, 1764547200.0]);
    }

    #[test]
    fn identity_lengths_and_columns() {
        let mut f = fast(false, None, &[]);
        let line = format!(
            r#"{{{HEAD},"timestamp":"2024-02-29 23:59:59.999+01","*":"x","**":"y","é😀":"z","":"e"}}"#
        );
        let (group, s, _) = strings(&enc(&mut f, &line).unwrap(), 3);
        assert_eq!(group, murmur3_32(b"u", 0) % 128);
        // 2024-02-29T22:59:59Z = 1709247599
        assert_eq!(s[3], "t1709247599");
        assert_eq!(s[4], "1:u1:sh1709244000|");
        assert_eq!(&s[7..], ["*", "=2:**x", "=3:***y", "=3:é😀z", "=0:e"]);
    }

    #[test]
    fn numeric_event_ids_and_timestamps() {
        let mut f = fast(true, None, &[]);
        for (ts, id, want) in [
            ("0", "123456789012345", "i123456789012345"),
            ("0.5", "-7", "i-7"),
            ("253402300799.999", "-0", "i0"),
            ("12", "null", "t12"),
            ("12", "false", "t12"),
            ("12", r#""""#, "t12"),
        ] {
            let line = format!(r#"{{{HEAD},"timestamp":{ts},"event_id":{id}}}"#);
            let (_, s, _) = strings(&enc(&mut f, &line).unwrap(), 3);
            assert_eq!(s[3], want, "{line}");
        }
    }

    #[test]
    fn deferred_shapes() {
        let mut f = fast(true, None, &[]);
        let lines = [
            String::new(),
            "[]".into(),
            "{}".into(),
            format!(r#"{{{HEAD},"timestamp":1}} x"#),
            format!(r#"{{{HEAD},"timestamp":1,}}"#),
            format!(r#"{{{HEAD},"timestamp":-1}}"#),
            format!(r#"{{{HEAD},"timestamp":-0}}"#),
            format!(r#"{{{HEAD},"timestamp":1e3}}"#),
            format!(r#"{{{HEAD},"timestamp":01}}"#),
            format!(r#"{{{HEAD},"timestamp":1.}}"#),
            format!(r#"{{{HEAD},"timestamp":253402300800}}"#),
            format!(r#"{{{HEAD},"timestamp":"2024-02-30T00:00:00Z"}}"#),
            format!(r#"{{{HEAD},"timestamp":"2023-02-29T00:00:00Z"}}"#),
            format!(r#"{{{HEAD},"timestamp":"2024-01-01T24:00:00Z"}}"#),
            format!(r#"{{{HEAD},"timestamp":"2024-01-01T00:00:60Z"}}"#),
            format!(r#"{{{HEAD},"timestamp":"2024-01-01T00:00:00"}}"#),
            format!(r#"{{{HEAD},"timestamp":"2024-01-01T00:00:00+05:"}}"#),
            format!(r#"{{{HEAD},"timestamp":"2024-01-01T00:00:00+24:00"}}"#),
            format!(r#"{{{HEAD},"timestamp":"2024-01-01T00:00:00.Z"}}"#),
            format!(r#"{{{HEAD},"timestamp":"1970-01-01T00:30:00+01:00"}}"#),
            format!(r#"{{{HEAD},"timestamp":"２024-01-01T00:00:00Z"}}"#),
            format!(r#"{{{HEAD},"timestamp":true}}"#),
            format!(r#"{{{HEAD}}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"event_id":1.5}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"event_id":1234567890123456}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"a":2.5}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"a":{{"b":"\n"}}}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"a":[1,]}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"a":"\n"}}"#),
            format!("{{{HEAD},\"timestamp\":1,\"a\":\"\t\"}}"),
            format!(r#"{{{HEAD},"timestamp":1,"a":1,"a":2}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"timestamp":2}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"12":"x"}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"__proto__":"x"}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"a":tru}}"#),
            format!(r#"{{{HEAD},"timestamp":1,"a":truex}}"#),
            r#"{"company_id":"","statistic_id":"s","customer_id":"u","timestamp":1}"#.into(),
            r#"{"company_id":1,"statistic_id":"s","customer_id":"u","timestamp":1}"#.into(),
            format!("\u{feff}{{{HEAD},\"timestamp\":1}}"),
            format!("{{{HEAD},\"timestamp\":1}}\u{0c}"),
        ];
        for line in &lines {
            assert!(enc(&mut f, line).is_none(), "{line}");
        }
        let mut bad = format!(r#"{{{HEAD},"timestamp":1,"a":"x"}}"#).into_bytes();
        let at = bad.len() - 3;
        bad[at] = 0xff;
        assert!(
            f.encode(&bad, 0, &mut Vec::new()).is_none(),
            "invalid UTF-8"
        );
        // Wide events: a duplicate name is found among the first LINEAR_MEMBERS names, across
        // them and the hashed ones, and among the hashed ones; the token count fits a u16.
        let wide = |n: usize, dup: Option<(usize, usize)>| -> String {
            let members: String = (0..n)
                .map(|k| match dup {
                    Some((at, of)) if k == at => format!(r#","f{of}":{k}"#),
                    _ => format!(r#","f{k}":{k}"#),
                })
                .collect();
            format!(r#"{{{HEAD},"timestamp":1{members}}}"#)
        };
        let (_, s, _) = strings(&enc(&mut f, &wide(70_000 - 5_000, None)).unwrap(), 3);
        assert_eq!(s.len(), 4 + 3 + 1 + 65_000);
        assert_eq!(s[8 + 64_999], "=6:f6499964999");
        assert!(enc(&mut f, &wide(65_534, None)).is_some(), "u16::MAX tokens");
        assert!(enc(&mut f, &wide(65_535, None)).is_none(), "more tokens than a u16 holds");
        for dup in [(3, 1), (LINEAR_MEMBERS - 1, 0), (LINEAR_MEMBERS, 2), (LINEAR_MEMBERS + 1, LINEAR_MEMBERS), (5_000, 4_999), (9_999, 17)] {
            assert!(enc(&mut f, &wide(10_000, Some(dup))).is_none(), "duplicate {dup:?}");
        }
        // The hashed names of one line do not leak into the next.
        assert!(enc(&mut f, &wide(LINEAR_MEMBERS + 5, None)).is_some());
        assert!(enc(&mut f, &wide(LINEAR_MEMBERS + 5, None)).is_some());
        let long = "x".repeat(MAX_KEY_ID_BYTES + 1);
        assert!(enc(
            &mut f,
            &format!(
                r#"{{"company_id":"{long}","statistic_id":"s","customer_id":"u","timestamp":1}}"#
            )
        )
        .is_none());
        assert!(enc(&mut fast(false, None, &[]), &format!(r#"{{"company_id":"{long}","statistic_id":"s","customer_id":"u","timestamp":1}}"#)).is_some(), "the company is no scope at customer level");
        let big = "y".repeat(MAX_FACET_BYTES);
        assert!(enc(&mut f, &format!(r#"{{{HEAD},"timestamp":1,"a":"{big}"}}"#)).is_none());
        let mut small = FastPath::new(Config {
            account: true,
            granularities: vec![],
            key_groups: 1,
            max_event_bytes: 10,
            include: None,
            exclude: vec![],
            owned: None,
        });
        assert!(
            enc(&mut small, &format!(r#"{{{HEAD},"timestamp":1}}"#)).is_none(),
            "too large"
        );
        // The output is left as it was.
        let mut out = vec![7u8];
        assert!(f
            .encode(
                format!(r#"{{{HEAD},"timestamp":1,"a":1.5}}"#).as_bytes(),
                0,
                &mut out
            )
            .is_none());
        assert_eq!(out, [7]);
    }

    #[test]
    fn whitespace_and_selection() {
        let line = " \t{ \"company_id\" : \"c\" ,\r\n\"statistic_id\":\"s\",\"customer_id\":\"u\",\"timestamp\":\"2018-12-07t22:15z\",\"a\":\"1\",\"b\":2.5,\"c\":{\"x\":1}} \r\n";
        let mut f = fast(true, None, &[]);
        assert!(enc(&mut f, line).is_none(), "a counted fraction defers");
        let mut f = fast(true, None, &["b"]);
        let nested = enc(&mut f, line).unwrap();
        let line = line.replace(r#","c":{"x":1}"#, "");
        assert_eq!(nested, enc(&mut f, &line).unwrap(), "a nested value is no facet");
        let (_, s, _) = strings(&enc(&mut f, &line).unwrap(), 3);
        assert_eq!(s[3], "t1544220900");
        assert_eq!(&s[7..], ["*", "=1:a1"]);
        let mut f = fast(true, Some(&["b"]), &[]);
        assert!(enc(&mut f, &line).is_none());
        let mut f = fast(true, Some(&["a", "zz"]), &[]);
        let (_, s, _) = strings(&enc(&mut f, &line).unwrap(), 3);
        assert_eq!(&s[7..], ["*", "=1:a1"]);
        let mut f = fast(true, Some(&[]), &[]);
        let (_, s, _) = strings(&enc(&mut f, &line).unwrap(), 3);
        assert_eq!(&s[7..], ["*"]);
    }

    #[test]
    fn nested_values_are_skipped_when_valid_and_defer_otherwise() {
        const HEAD: &str = r#""company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1544220000,"d":"x""#;
        let mut f = fast(true, None, &[]);
        let plain = enc(&mut f, &format!("{{{HEAD}}}")).unwrap();
        let deep_ok = format!("{}1{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        for v in [
            "[]", "{}", "[ ]", "{ }", "[1,-0.5e+3,\"x\",true,false,null,[],{}]", r#"{"a":{"b":[1,{"c":null}]},"a":2}"#,
            r#"{"timestamp":1.5,"company_id":"other","__proto__":1,"0":1}"#, "[ 1 , [ 2 ] , { \"k\" : \"v\" } ]", &deep_ok,
        ] {
            for at in ["first", "last"] {
                let line = if at == "first" { format!(r#"{{"n":{v},{HEAD}}}"#) } else { format!(r#"{{{HEAD},"n":{v}}}"#) };
                assert_eq!(enc(&mut f, &line), Some(plain.clone()), "{line}");
            }
        }
        let too_deep = format!("{}1{}", "[".repeat(MAX_NESTING + 1), "]".repeat(MAX_NESTING + 1));
        for v in [
            "[", "{", "[1,]", "{\"a\":1,}", "[,1]", "{\"a\"}", "{\"a\":}", "{1:2}", "[01]", "[1.]", "[-]", "[tru]", "[nul]", "[True]",
            "[\"\\n\"]", "{\"\\u0061\":1}", "[\"\u{1}\"]", "[1 2]", "{\"a\":1 \"b\":2}", "[}", "{]", "[1]]", &too_deep,
        ] {
            let line = format!(r#"{{{HEAD},"n":{v}}}"#);
            assert_eq!(enc(&mut f, &line), None, "{line}");
        }
        // In a reserved member, TypeScript decides (an event_id object is no id there).
        for name in ["event_id", "timestamp", "company_id"] {
            let line = format!(r#"{{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1544220000,"{name}":[1]}}"#);
            assert_eq!(enc(&mut f, &line), None, "{line}");
        }
        // A duplicate name is a duplicate whatever its value.
        assert_eq!(enc(&mut f, &format!(r#"{{{HEAD},"d":[1]}}"#)), None);
    }

    #[test]
    fn iso_forms() {
        let base = 1544220900; // 2018-12-07T22:15:00Z
        for (text, want) in [
            ("2018-12-07T22:15Z", Some(base)),
            ("2018-12-07T22:15:00Z", Some(base)),
            ("2018-12-07T22:15:00.999999999Z", Some(base)),
            ("2018-12-07 22:15:00z", Some(base)),
            ("2018-12-07T23:15:00+01", Some(base)),
            ("2018-12-07T23:15:00+0100", Some(base)),
            ("2018-12-07T23:45:00+01:30", Some(base)),
            ("2018-12-07T20:15:00-02:00", Some(base)),
            ("2018-12-07T22:15:00+01:0", None),
            ("2018-12-07T22:15:00+010", None),
            ("2018-12-07T22:15:00+01:000", None),
            ("2018-12-07T22:15:00ZZ", None),
            ("2018-12-07T22:15:0Z", None),
            ("2018-12-07X22:15:00Z", None),
            ("20181207T221500Z", None),
            ("2000-02-29T00:00:00Z", Some(951782400)),
            ("1900-02-29T00:00:00Z", None),
            ("9999-12-31T23:59:59Z", Some(253402300799)),
            ("0000-01-01T00:00:00Z", Some(-62167219200)),
        ] {
            assert_eq!(iso_seconds(text.as_bytes()), want, "{text}");
        }
    }

    #[test]
    fn months() {
        // Every month start from 1970 through 9999 against the day count of the calendar.
        let mut start = 0i64;
        for y in 1970..10000 {
            for m in 1..=12 {
                let days = days_from_civil(y, m, 1);
                assert_eq!(days * DAY, start);
                let (_, end) = bucket(Granularity::Month, start);
                assert_eq!(bucket(Granularity::Month, start), (start, end));
                assert_eq!(bucket(Granularity::Month, end - 1), (start, end));
                start = end;
            }
        }
        assert_eq!(start, MAX_EVENT_SECONDS_EXCLUSIVE);
        assert_eq!(bucket(Granularity::Hour, 7199), (3600, 7200));
        assert_eq!(bucket(Granularity::Day, 86_400), (86_400, 172_800));
    }

    #[test]
    fn string_scan_at_every_offset() {
        // Each special byte at every position of strings long enough for the word-wise scan.
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|k| b'a' + (k % 26) as u8).collect();
            let mut line = vec![b'"'];
            line.extend_from_slice(&plain);
            line.push(b'"');
            line.extend_from_slice(b"xxxxxxxxxx");
            assert_eq!(string_at(&line, 0), Some((1, 1 + len)));
            let mut unterminated = vec![b'"'];
            unterminated.extend_from_slice(&plain);
            assert_eq!(string_at(&unterminated, 0), None);
            for at in 0..len {
                for (special, want) in [
                    (b'"', Some((1, 1 + at))),
                    (b'\\', None),
                    (0x00, None),
                    (0x1f, None),
                    (b'\n', None),
                ] {
                    let mut l = line.clone();
                    l[1 + at] = special;
                    assert_eq!(
                        string_at(&l, 0),
                        want,
                        "len {len} at {at} byte {special:#x}"
                    );
                }
                for ok in [0x20u8, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff] {
                    let mut l = line.clone();
                    l[1 + at] = ok;
                    assert_eq!(
                        string_at(&l, 0),
                        Some((1, 1 + len)),
                        "len {len} at {at} byte {ok:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn decimals() {
        for v in [
            0u64,
            1,
            9,
            10,
            42,
            99,
            100,
            101,
            999,
            1000,
            1764219600,
            253402300799,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_decimal(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn utf16_lengths() {
        for s in ["", "abc", "é", "€", "😀", "a😀é€"] {
            assert_eq!(utf16_len(s.as_bytes()), s.encode_utf16().count(), "{s}");
        }
    }
}
