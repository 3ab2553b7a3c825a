//! One event, read in one pass by a serde visitor (serde_json or simd-json underneath):
//! the reserved fields borrowed from the input where it has no escapes, the counted facets'
//! texts written into a reusable arena, no map built. Validation follows semantics.md.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::civil::iso_seconds;

/// 10000-01-01T00:00:00Z in seconds: timestamps must be before it.
const YEAR_10000: f64 = 253_402_300_800.0;

pub struct Event<'a> {
    pub company: Cow<'a, str>,
    pub statistic: Cow<'a, str>,
    pub customer: Cow<'a, str>,
    /// The producer's id as canonical text, or None (the whole second stands in).
    pub event_id: Option<Cow<'a, str>>,
    pub second: i64,
}

/// The counted facets of the event being read: names and values in one arena.
#[derive(Default)]
pub struct Scratch {
    text: String,
    /// Per facet: (name start, value start, value end) in `text`.
    ranges: Vec<(u32, u32, u32)>,
    number: ryu_js::Buffer,
}

impl Scratch {
    pub fn facets(&self) -> usize {
        self.ranges.len()
    }

    pub fn facet(&self, i: usize) -> (&str, &str) {
        let (n, v, e) = self.ranges[i];
        (
            &self.text[n as usize..v as usize],
            &self.text[v as usize..e as usize],
        )
    }

    fn push_facet(&mut self, name: &str, value: &str) {
        let n = self.text.len() as u32;
        self.text.push_str(name);
        let v = self.text.len() as u32;
        self.text.push_str(value);
        self.ranges.push((n, v, self.text.len() as u32));
    }
}

enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    /// null, arrays and objects: never a facet value nor a valid required field.
    Other,
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v))
    }
    // JavaScript reads every JSON number as a double, so do the same.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Num(v as f64))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match d.deserialize_str(ScalarVisitor)? {
            Scalar::Str(s) => Ok(s),
            _ => Err(de::Error::custom("object keys are strings")),
        }
    }
}

struct Raw<'a> {
    company: Option<Scalar<'a>>,
    statistic: Option<Scalar<'a>>,
    customer: Option<Scalar<'a>>,
    timestamp: Option<Scalar<'a>>,
    event_id: Option<Scalar<'a>>,
}

struct EventSeed<'s> {
    scratch: &'s mut Scratch,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Raw<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = Raw<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = Raw {
            company: None,
            statistic: None,
            customer: None,
            timestamp: None,
            event_id: None,
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value_seed(ScalarSeed)?;
            // A repeated field: JSON.parse keeps the last value, so does this.
            match &*key {
                "company_id" => raw.company = Some(value),
                "statistic_id" => raw.statistic = Some(value),
                "customer_id" => raw.customer = Some(value),
                "timestamp" => raw.timestamp = Some(value),
                "event_id" => raw.event_id = Some(value),
                name => match value {
                    Scalar::Str(s) if !s.is_empty() => self.scratch.push_facet(name, &s),
                    Scalar::Num(n) if n.is_finite() => {
                        let mut number = std::mem::take(&mut self.scratch.number);
                        self.scratch.push_facet(name, number.format_finite(n));
                        self.scratch.number = number;
                    }
                    Scalar::Bool(b) => self
                        .scratch
                        .push_facet(name, if b { "true" } else { "false" }),
                    _ => {}
                },
            }
        }
        Ok(raw)
    }
}

fn required(v: Option<Scalar>) -> Option<Cow<str>> {
    match v {
        Some(Scalar::Str(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

fn validate(raw: Raw) -> Option<Event> {
    let seconds = match raw.timestamp {
        Some(Scalar::Num(n)) => n,
        Some(Scalar::Str(s)) => iso_seconds(&s)?,
        _ => return None,
    };
    if !(0.0..YEAR_10000).contains(&seconds) {
        return None;
    }
    let event_id = match raw.event_id {
        Some(Scalar::Str(s)) if !s.is_empty() => Some(s),
        Some(Scalar::Num(n)) if n.is_finite() => Some(Cow::Owned(
            ryu_js::Buffer::new().format_finite(n).to_owned(),
        )),
        _ => None,
    };
    Some(Event {
        company: required(raw.company)?,
        statistic: required(raw.statistic)?,
        customer: required(raw.customer)?,
        event_id,
        second: seconds.floor() as i64,
    })
}

/// Reads one line with serde_json; None when it is not a valid event.
pub fn parse_serde<'a>(line: &'a [u8], scratch: &mut Scratch) -> Option<Event<'a>> {
    scratch.text.clear();
    scratch.ranges.clear();
    let mut de = serde_json::Deserializer::from_slice(line);
    let raw = EventSeed { scratch }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    validate(raw)
}

/// Reads one line with simd-json (which unescapes in place, hence the mutable copy).
pub fn parse_simd<'a>(
    line: &'a mut [u8],
    buffers: &mut simd_json::Buffers,
    scratch: &mut Scratch,
) -> Option<Event<'a>> {
    scratch.text.clear();
    scratch.ranges.clear();
    let mut de = simd_json::Deserializer::from_slice_with_buffers(line, buffers).ok()?;
    let raw = EventSeed { scratch }.deserialize(&mut de).ok()?;
    validate(raw)
}
