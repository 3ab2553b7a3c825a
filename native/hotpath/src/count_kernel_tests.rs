//! Tests of `Core` (the CountKernel without napi): the rules of worker/engine/counting.ts,
//! checked against a string-keyed reference model written from the rules, segment round
//! trips, and malformed input.

use std::collections::{BTreeMap, HashMap};

use super::*;

#[derive(Clone)]
struct Ev {
    group: u32,
    ingest: u32,
    company: String,
    statistic: String,
    customer: String,
    identity: String,
    /// Per granularity: (bucketEnd, stem).
    buckets: Vec<(f64, String)>,
    /// After "*".
    tokens: Vec<String>,
}

impl Ev {
    fn all_tokens(&self) -> Vec<String> {
        let mut t = vec!["*".to_string()];
        t.extend(self.tokens.iter().cloned());
        t
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn encode(evs: &[Ev]) -> Vec<u8> {
    let mut b = Vec::new();
    for e in evs {
        b.extend_from_slice(&e.group.to_le_bytes());
        b.extend_from_slice(&e.ingest.to_le_bytes());
        let tokens = e.all_tokens();
        b.extend_from_slice(&(tokens.len() as u16).to_le_bytes());
        for s in [&e.company, &e.statistic, &e.customer, &e.identity] {
            put_str(&mut b, s);
        }
        for (end, stem) in &e.buckets {
            b.extend_from_slice(&end.to_le_bytes());
            put_str(&mut b, stem);
        }
        for t in &tokens {
            put_str(&mut b, t);
        }
    }
    b
}

const HOUR: u32 = 3600;
const DAY: u32 = 86_400;

/// The counter stem TypeScript builds (counter-id.ts) for company `co`, statistic "st",
/// granularity code `g` and bucket start `bucket` (ASCII `co`).
fn stem(co: &str, g: char, bucket: u32) -> String {
    format!("{}:{co}2:st{g}{bucket}|", co.len())
}

/// An event of company `co` in the hour and day buckets of `second`.
fn ev(
    group: u32,
    ingest: u32,
    second: u32,
    co: &str,
    customer: &str,
    id: &str,
    tokens: &[&str],
) -> Ev {
    let hour = second - second % HOUR;
    let day = second - second % DAY;
    Ev {
        group,
        ingest,
        company: co.to_string(),
        statistic: "st".to_string(),
        customer: customer.to_string(),
        identity: id.to_string(),
        buckets: vec![
            ((hour + HOUR) as f64, stem(co, 'h', hour)),
            ((day + DAY) as f64, stem(co, 'd', day)),
        ],
        tokens: tokens.iter().map(|s| s.to_string()).collect(),
    }
}

fn count(core: &mut Core, evs: &[Ev]) -> Tally {
    core.count_batch(&encode(evs), evs.len())
        .expect("valid batch")
}

fn ids(f: &Final) -> Vec<String> {
    let mut from = 0;
    f.id_ends
        .iter()
        .map(|&end| {
            let id = std::str::from_utf8(&f.ids[from..end as usize]).expect("ids are UTF-8");
            from = end as usize;
            id.to_string()
        })
        .collect()
}

/// A `changes()` or sweep's segments in the order they are loaded (a group's counters
/// before the rest), without the empty ones.
fn flat(list: Vec<(u32, Parts)>) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    for (g, p) in list {
        for seg in [p.counters, p.state] {
            if !seg.is_empty() {
                out.push((g, seg));
            }
        }
    }
    out
}

fn load_all(core: &mut Core, segments: &[(u32, Vec<u8>)]) {
    for (g, s) in segments {
        core.load_segment(*g, s).unwrap();
    }
}

/// (id → (count, uniques)) of a finalise.
fn totals(f: &Final) -> HashMap<String, (f64, f64)> {
    ids(f)
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, (f.counts[i], f.uniques[i])))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The reference: the rules as stated, on strings.

#[derive(Default, Clone)]
struct Reference {
    account: bool,
    dedup_retention: i64,
    uniques_retention: i64,
    dedup: HashMap<(u32, String, String, String, String), i64>,
    buckets: HashMap<(u32, String), (i64, u32)>,
    markers: HashMap<(u32, String, String), u32>,
    totals: HashMap<(u32, String), (f64, f64)>,
    window: Vec<(u32, String)>,
    deltas: HashMap<(u32, String), (f64, f64)>,
    tally: Tally,
}

impl Reference {
    fn new(account: bool, dedup_retention: i64, uniques_retention: i64) -> Self {
        Reference {
            account,
            dedup_retention,
            uniques_retention,
            ..Default::default()
        }
    }

    fn count(&mut self, e: &Ev) {
        let ingest = e.ingest as i64;
        let dk = (
            e.group,
            e.company.clone(),
            e.statistic.clone(),
            e.customer.clone(),
            e.identity.clone(),
        );
        if let Some(&f) = self.dedup.get(&dk) {
            if ingest - f <= self.dedup_retention {
                self.tally.duplicates += 1;
                return;
            }
        }
        self.dedup.insert(dk, ingest);
        self.tally.counted += 1;
        for (end, stem) in &e.buckets {
            let mut epoch = 0;
            if self.account {
                let hour = ingest - ingest % 3600;
                let bk = (e.group, stem.clone());
                epoch = match self.buckets.get(&bk).copied() {
                    None => {
                        self.buckets.insert(bk, (hour, 0));
                        0
                    }
                    Some((last, ep)) => {
                        if ingest > (*end as i64).max(last) + self.uniques_retention {
                            self.buckets.insert(bk, (hour, ep + 1));
                            ep + 1
                        } else {
                            if hour > last {
                                self.buckets.insert(bk, (hour, ep));
                            }
                            ep
                        }
                    }
                };
            }
            for t in e.all_tokens() {
                let id = format!("{stem}{t}");
                let mut is_new = 0.0;
                if self.account {
                    let mk = (e.group, id.clone(), e.customer.clone());
                    if self.markers.get(&mk) != Some(&epoch) {
                        self.markers.insert(mk, epoch);
                        is_new = 1.0;
                        if epoch > 0 {
                            self.tally.beyond_horizon += 1;
                        }
                    }
                }
                let key = (e.group, id);
                let d = self.deltas.entry(key.clone()).or_insert_with(|| {
                    self.window.push(key.clone());
                    (0.0, 0.0)
                });
                d.0 += 1.0;
                d.1 += is_new;
            }
        }
    }

    /// (group, id, count, uniques, fresh) in id order, then group.
    fn finalise(&mut self) -> Vec<(u32, String, f64, f64, u8)> {
        let mut out = Vec::new();
        let mut window = std::mem::take(&mut self.window);
        window.sort_by(|a, b| (&a.1, a.0).cmp(&(&b.1, b.0)));
        for key in window {
            let d = self.deltas.remove(&key).unwrap();
            let fresh = !self.totals.contains_key(&key);
            let t = self.totals.entry(key.clone()).or_insert((0.0, 0.0));
            t.0 += d.0;
            t.1 += d.1;
            out.push((key.0, key.1, t.0, t.1, fresh as u8));
        }
        out
    }

    fn drop_group(&mut self, g: u32) {
        self.dedup.retain(|k, _| k.0 != g);
        self.buckets.retain(|k, _| k.0 != g);
        self.markers.retain(|k, _| k.0 != g);
        self.totals.retain(|k, _| k.0 != g);
        self.deltas.retain(|k, _| k.0 != g);
        self.window.retain(|k| k.0 != g);
    }
}

fn same_final(core: &Final, reference: &[(u32, String, f64, f64, u8)], what: &str) {
    let ids = ids(core);
    assert_eq!(ids.len(), reference.len(), "{what}: number of counters");
    for (i, r) in reference.iter().enumerate() {
        assert_eq!(
            (
                core.groups[i],
                ids[i].as_str(),
                core.counts[i],
                core.uniques[i],
                core.fresh[i]
            ),
            (r.0, r.1.as_str(), r.2, r.3, r.4),
            "{what}: counter {i}"
        );
    }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random workload with duplicates, late events, quiet buckets coming back past their
/// horizon, several groups and companies, repeated and varied facet tokens.
fn workload(seed: u64, n: usize) -> Vec<Ev> {
    let mut r = Rng(seed);
    let mut ingest = 1_700_000_000u32;
    let mut out: Vec<Ev> = Vec::new();
    for i in 0..n {
        ingest += r.below(400) as u32;
        if r.below(500) == 0 {
            ingest += 5 * DAY; // a long pause: buckets pass their horizon
        }
        if r.below(10) == 0 && !out.is_empty() {
            // a re-sent event, possibly much later
            let mut e = out[r.below(out.len() as u64) as usize].clone();
            e.ingest = ingest;
            out.push(e);
            continue;
        }
        let late = if r.below(5) == 0 {
            r.below(20 * DAY as u64) as u32
        } else {
            r.below(3 * HOUR as u64) as u32
        };
        let second = ingest - late;
        let co = format!("co{}", r.below(3));
        let group = (co.as_bytes()[2] as u32 * 7) % 5;
        let customer = format!("cu{}", r.below(40));
        let mut tokens = Vec::new();
        for f in 0..r.below(4) {
            tokens.push(format!("f{f}={}", r.below(3)));
        }
        if r.below(20) == 0 {
            tokens.push("f0=0".to_string()); // a repeated token
        }
        let t: Vec<&str> = tokens.iter().map(|s| s.as_str()).collect();
        out.push(ev(
            group,
            ingest,
            second,
            &co,
            &customer,
            &format!("id{i}"),
            &t,
        ));
    }
    out
}

fn run_against_reference(account: bool, seed: u64) {
    let evs = workload(seed, 6000);
    let (dr, ur) = (2 * DAY as i64, DAY as i64);
    let mut core = Core::new(2, account, dr as f64, ur as f64).unwrap();
    let mut reference = Reference::new(account, dr, ur);
    let mut segments: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut tally = Tally::default();
    for (w, window) in evs.chunks(500).enumerate() {
        for batch in window.chunks(77) {
            let t = count(&mut core, batch);
            tally.counted += t.counted;
            tally.duplicates += t.duplicates;
            tally.beyond_horizon += t.beyond_horizon;
            for e in batch {
                reference.count(e);
            }
        }
        assert_eq!(tally, reference.tally, "window {w}: tally");
        let f = core.finalise().unwrap();
        same_final(&f, &reference.finalise(), &format!("window {w}"));
        let ch = core.changes();
        assert!(ch.windows(2).all(|p| p[0].0 < p[1].0), "groups ascending");
        segments.extend(flat(ch));
        if w % 4 == 3 {
            // A restart: a new kernel loads every segment written so far and takes over.
            let mut next = Core::new(2, account, dr as f64, ur as f64).unwrap();
            for (g, s) in &segments {
                next.load_segment(*g, s).unwrap();
            }
            let (a, b) = (core.stats(), next.stats());
            assert_eq!(
                (a.identities, a.buckets, a.markers, a.counters, a.customers),
                (b.identities, b.buckets, b.markers, b.counters, b.customers),
                "window {w}: state after loading"
            );
            assert_eq!(next.changes().len(), 0, "loaded segments are not changes");
            core = next;
        }
    }
    assert!(
        tally.duplicates > 100,
        "the workload has duplicates: {tally:?}"
    );
    if account {
        assert!(
            tally.beyond_horizon > 0,
            "the workload passes horizons: {tally:?}"
        );
    }
}

#[test]
fn account_level_matches_the_reference_across_restarts() {
    for seed in [1, 2, 3] {
        run_against_reference(true, seed);
    }
}

#[test]
fn customer_level_matches_the_reference_across_restarts() {
    for seed in [4, 5] {
        run_against_reference(false, seed);
    }
}

#[test]
fn duplicates_within_and_after_retention() {
    let mut core = Core::new(2, true, 100.0, 3600.0).unwrap();
    let t0 = 1_700_000_000;
    let e = ev(3, t0, t0, "co", "cu", "id1", &["a=1"]);
    assert_eq!(
        count(&mut core, &[e.clone()]),
        Tally {
            counted: 1,
            duplicates: 0,
            beyond_horizon: 0
        }
    );
    // Within one batch, in order: the second copy is a duplicate.
    let mut e2 = e.clone();
    e2.ingest = t0 + 100;
    assert_eq!(
        count(&mut core, &[e2.clone(), e2.clone()]),
        Tally {
            counted: 0,
            duplicates: 2,
            beyond_horizon: 0
        }
    );
    // 101 s after the first copy: counted again (and the first-ingest is now t0 + 101).
    let mut e3 = e.clone();
    e3.ingest = t0 + 101;
    let mut e4 = e.clone();
    e4.ingest = t0 + 201;
    assert_eq!(
        count(&mut core, &[e3, e4]),
        Tally {
            counted: 1,
            duplicates: 1,
            beyond_horizon: 0
        }
    );
    let f = core.finalise().unwrap();
    let t = totals(&f);
    // Counted twice, same customer and bucket: 2 counts, 1 unique per counter.
    assert_eq!(t.len(), 4);
    for (count, uniques) in t.values() {
        assert_eq!((*count, *uniques), (2.0, 1.0));
    }
    assert_eq!(f.fresh, vec![1, 1, 1, 1]);
    // A different identity, customer or group is a different event.
    let others = [
        ev(3, t0 + 5, t0, "co", "cu", "id2", &[]),
        ev(3, t0 + 5, t0, "co", "cu2", "id1", &[]),
        ev(4, t0 + 5, t0, "co", "cu", "id1", &[]),
    ];
    assert_eq!(count(&mut core, &others).counted, 3);
}

#[test]
fn horizon_bump_counts_beyond_horizon() {
    // uniques retention 1 day; hour bucket [t0, t0 + 3600).
    let mut core = Core::new(1, true, 10.0, 86_400.0).unwrap();
    let t0 = 1_699_999_200; // a whole hour
    let one = |ingest: u32, cu: &str, id: &str| Ev {
        buckets: vec![((t0 + 3600) as f64, "co/st/h/".to_string())],
        ..ev(0, ingest, t0 + 10, "co", cu, id, &["x=1"])
    };
    // Customer A at t0, again within the horizon: one unique.
    assert_eq!(
        count(
            &mut core,
            &[one(t0 + 10, "A", "1"), one(t0 + 7200, "A", "2")]
        )
        .beyond_horizon,
        0
    );
    let f = totals(&core.finalise().unwrap());
    assert_eq!(f["co/st/h/*"], (2.0, 1.0));
    // The last ingest hour is now t0 + 7200, so the horizon is t0 + 7200 + 86400.
    let horizon = t0 + 7200 + 86_400;
    assert_eq!(
        count(&mut core, &[one(horizon, "A", "3")]),
        Tally {
            counted: 1,
            duplicates: 0,
            beyond_horizon: 0
        }
    );
    let f = totals(&core.finalise().unwrap());
    assert_eq!(
        f["co/st/h/*"],
        (3.0, 1.0),
        "at the horizon the markers still count"
    );
    // The horizon moved to the hour of `horizon` + 1 day; one second past it: new epoch.
    let h2 = horizon - horizon % 3600 + 86_400 + 1;
    assert_eq!(
        count(
            &mut core,
            &[
                one(h2, "A", "4"),
                one(h2 + 1, "A", "5"),
                one(h2 + 2, "B", "6")
            ]
        ),
        Tally {
            counted: 3,
            duplicates: 0,
            beyond_horizon: 4
        }
    );
    let f = totals(&core.finalise().unwrap());
    assert_eq!(
        f["co/st/h/*"],
        (6.0, 3.0),
        "A counted again once in the new epoch, B once"
    );
    assert_eq!(f["co/st/h/x=1"], (6.0, 3.0));
    // Segments carry the epoch: a reloaded kernel still knows A and B in epoch 1.
    let mut again = Core::new(1, true, 10.0, 86_400.0).unwrap();
    // The first segments hold everything: changes() was not called before.
    load_all(&mut again, &flat(core.changes()));
    assert_eq!(
        count(
            &mut again,
            &[one(h2 + 10, "A", "7"), one(h2 + 10, "B", "8")]
        )
        .beyond_horizon,
        0
    );
    let f = again.finalise().unwrap();
    assert_eq!(totals(&f)["co/st/h/*"], (8.0, 3.0));
    assert_eq!(f.fresh, vec![0, 0]);
}

#[test]
fn back_fill_into_an_unseen_bucket_is_exact() {
    let mut core = Core::new(2, true, 10.0, 3600.0).unwrap();
    let now = 1_700_000_000;
    // An event about a month-old second: its buckets are new, so epoch 0, nothing beyond the horizon.
    let t = count(
        &mut core,
        &[
            ev(1, now, now - 30 * DAY, "co", "A", "1", &[]),
            ev(1, now + 1, now - 30 * DAY, "co", "A", "2", &[]),
        ],
    );
    assert_eq!(
        t,
        Tally {
            counted: 2,
            duplicates: 0,
            beyond_horizon: 0
        }
    );
    let f = totals(&core.finalise().unwrap());
    assert!(f.values().all(|&v| v == (2.0, 1.0)));
    // An event more than the retention after the last ingest hour bumps the epoch.
    let t = count(
        &mut core,
        &[ev(1, now + 7200, now - 30 * DAY, "co", "A", "3", &[])],
    );
    assert_eq!(t.beyond_horizon, 2);
}

#[test]
fn customer_level_counts_without_uniques() {
    let mut core = Core::new(2, false, 100.0, 3600.0).unwrap();
    let t0 = 1_700_000_000;
    let t = count(
        &mut core,
        &[
            ev(2, t0, t0, "co", "cu", "1", &["a=1", "b=2"]),
            ev(2, t0, t0, "co", "cu", "2", &["a=1"]),
            ev(2, t0 + 1, t0, "co", "cu", "1", &[]),
        ],
    );
    assert_eq!(
        t,
        Tally {
            counted: 2,
            duplicates: 1,
            beyond_horizon: 0
        }
    );
    let f = core.finalise().unwrap();
    let t = totals(&f);
    assert_eq!(t.len(), 6);
    let hour = t0 - t0 % HOUR;
    let h = stem("co", 'h', hour);
    assert_eq!(t[&format!("{h}*")], (2.0, 0.0));
    assert_eq!(t[&format!("{h}a=1")], (2.0, 0.0));
    assert_eq!(t[&format!("{h}b=2")], (1.0, 0.0));
    let s = core.stats();
    assert_eq!((s.markers, s.buckets, s.customers), (0.0, 0.0, 0.0));
}

#[test]
fn finalise_order_fresh_and_rebase() {
    let mut core = Core::new(1, true, 10.0, 3600.0).unwrap();
    let t0 = 1_700_000_000;
    let one = |id: &str, tok: &[&str]| Ev {
        buckets: vec![(2e9, "s/".to_string())],
        ..ev(9, t0, t0, "co", "cu", id, tok)
    };
    count(&mut core, &[one("1", &["b"]), one("2", &["a", "b"])]);
    let f = core.finalise().unwrap();
    assert_eq!(ids(&f), vec!["s/*", "s/a", "s/b"], "id order");
    assert_eq!(f.fresh, vec![1, 1, 1]);
    assert_eq!(f.groups, vec![9, 9, 9]);
    // The sink had s/a = (10, 4) and s/* = (1, 1) already.
    core.rebase(&[1, 0], &[10.0, 1.0], &[4.0, 1.0]).unwrap();
    assert!(core.rebase(&[3], &[1.0], &[1.0]).is_err());
    assert!(core.rebase(&[0], &[1.0, 2.0], &[1.0]).is_err());
    assert!(core.rebase(&[0], &[f64::NAN], &[1.0]).is_err());
    let ch = core.changes();
    assert_eq!(ch.iter().map(|c| c.0).collect::<Vec<_>>(), vec![9]);
    let mut again = Core::new(1, true, 10.0, 3600.0).unwrap();
    load_all(&mut again, &flat(ch));
    count(&mut again, &[one("3", &["a"])]);
    let f = again.finalise().unwrap();
    assert_eq!(ids(&f), vec!["s/*", "s/a"]);
    assert_eq!(
        (f.counts.clone(), f.uniques.clone(), f.fresh.clone()),
        (vec![4.0, 12.0], vec![2.0, 5.0], vec![0, 0])
    );
    // A rebase after changes() is written by the next changes().
    again.changes();
    again.rebase(&[1], &[1.0], &[0.0]).unwrap();
    let ch = again.changes();
    assert_eq!(ch.len(), 1);
    let (group, parts) = &ch[0];
    assert_eq!((*group, parts.state.len()), (9, 0), "a total alone is a counter segment");
    let seg = Segment::parse(&parts.counters, 9).unwrap();
    assert_eq!(
        (seg.totals, seg.dedup, seg.markers, seg.counters),
        (1, 0, 0, 0)
    );
    assert_eq!(seg.total(0), (2, 13.0, 5.0));
    // Nothing changed: no segments.
    assert_eq!(again.changes().len(), 0);
}

#[test]
fn ids_keep_any_utf8() {
    let mut core = Core::new(1, false, 10.0, 3600.0).unwrap();
    let t0 = 1_700_000_000;
    let stem = "q\"\\\n\u{1}é/";
    let e = Ev {
        buckets: vec![(2e9, stem.to_string())],
        ..ev(0, t0, t0, "co", "cu", "1", &["ü=\t"])
    };
    count(&mut core, &[e]);
    let f = core.finalise().unwrap();
    assert_eq!(ids(&f), vec![format!("{stem}*"), format!("{stem}ü=\t")]);
}

#[test]
fn segment_round_trip_and_corruption() {
    let mut core = Core::new(2, true, 100.0, 3600.0).unwrap();
    let t0 = 1_700_000_000;
    count(
        &mut core,
        &[
            ev(7, t0, t0, "co", "A", "1", &["x=1", "y=2"]),
            ev(7, t0, t0, "co", "B", "2", &["x=1"]),
            ev(8, t0, t0, "co2", "A", "3", &[]),
        ],
    );
    core.finalise().unwrap();
    let ch = core.changes();
    assert_eq!(ch.iter().map(|c| c.0).collect::<Vec<_>>(), vec![7, 8]);
    // Group 7's counters and totals, then the rest.
    let (c7, s7) = (&ch[0].1.counters, &ch[0].1.state);
    let (c, st) = (Segment::parse(c7, 7).unwrap(), Segment::parse(s7, 7).unwrap());
    let sections = |s: &Segment| (s.customers, s.counters, s.dedup, s.buckets, s.markers, s.totals);
    assert_eq!(sections(&c), (0, 6, 0, 0, 0, 6));
    assert_eq!(sections(&st), (2, 0, 2, 2, 6 + 4, 0));
    assert_eq!(c.counter(0).1, 0);
    assert_eq!(c.counter(5).1, 5);
    assert_eq!(st.customer(1).1, 1);
    // The markers refer to the counters: alone, the state segment is refused.
    let msg = Core::new(2, true, 100.0, 3600.0).unwrap().load_segment(7, s7).unwrap_err();
    assert!(msg.contains("marker 0") && msg.contains("out of range"), "{msg}");
    let segs = vec![c7.clone()];

    let load = |g: u32, bytes: &[u8]| {
        Core::new(2, true, 100.0, 3600.0)
            .unwrap()
            .load_segment(g, bytes)
    };
    load(7, &segs[0]).unwrap();
    let msg = load(8, &segs[0]).unwrap_err();
    assert!(
        msg.contains("key group 7") && msg.contains("key group 8"),
        "{msg}"
    );
    let msg = load(7, &segs[0][..segs[0].len() - 3]).unwrap_err();
    assert!(
        msg.contains("key group 7") && msg.contains("truncated"),
        "{msg}"
    );
    let msg = load(7, &segs[0][..20]).unwrap_err();
    assert!(msg.contains("truncated"), "{msg}");
    for at in [0, 4, 50, segs[0].len() / 2, segs[0].len() - 1] {
        let mut bad = segs[0].clone();
        bad[at] ^= 0x40;
        let msg = load(7, &bad).unwrap_err();
        assert!(msg.contains("key group 7"), "byte {at}: {msg}");
    }
    let mut longer = segs[0].clone();
    longer.push(0);
    assert!(load(7, &longer).unwrap_err().contains("too long"));
    // A customer-level kernel refuses account-level segments.
    assert!(Core::new(2, false, 100.0, 3600.0)
        .unwrap()
        .load_segment(7, &segs[0])
        .unwrap_err()
        .contains("account level"));
    // Loading the same segments twice is harmless; loading out of order is refused.
    let mut twice = Core::new(2, true, 100.0, 3600.0).unwrap();
    for seg in [c7, c7, s7, s7] {
        twice.load_segment(7, seg).unwrap();
    }
    assert_eq!(twice.stats().counters, 6.0);
    count(&mut core, &[ev(7, t0 + 1, t0, "co", "C", "4", &["z=1"])]);
    core.finalise().unwrap();
    let later = flat(core.changes());
    let msg = Core::new(2, true, 100.0, 3600.0)
        .unwrap()
        .load_segment(7, &later[0].1)
        .unwrap_err();
    assert!(msg.contains("expected 0"), "{msg}");
    load_all(&mut twice, &later);
    assert_eq!(twice.stats().counters, 8.0);
    assert_eq!(twice.stats().customers, 3.0);
}

#[test]
fn numbering_continues_after_a_load() {
    let mut core = Core::new(2, true, 100.0, 3600.0).unwrap();
    let t0 = 1_700_000_000;
    count(&mut core, &[ev(1, t0, t0, "co", "A", "1", &["x"])]);
    core.finalise().unwrap();
    let first = flat(core.changes());
    let mut next = Core::new(2, true, 100.0, 3600.0).unwrap();
    load_all(&mut next, &first);
    count(&mut next, &[ev(1, t0 + 1, t0, "co", "B", "2", &["y"])]);
    next.finalise().unwrap();
    let second = next.changes();
    let (c, st) = (Segment::parse(&second[0].1.counters, 1).unwrap(), Segment::parse(&second[0].1.state, 1).unwrap());
    assert_eq!((st.customer(0).1, c.counter(0).1, c.counter(1).1), (1, 4, 5));
    // All segments in order rebuild the whole group.
    let mut third = Core::new(2, true, 100.0, 3600.0).unwrap();
    load_all(&mut third, &first);
    load_all(&mut third, &flat(second));
    let t = count(
        &mut third,
        &[
            ev(1, t0 + 2, t0, "co", "A", "1", &[]),
            ev(1, t0 + 2, t0, "co", "B", "3", &["x", "y"]),
        ],
    );
    assert_eq!(
        t,
        Tally {
            counted: 1,
            duplicates: 1,
            beyond_horizon: 0
        }
    );
    let f = totals(&third.finalise().unwrap());
    let hour = t0 - t0 % HOUR;
    let h = stem("co", 'h', hour);
    assert_eq!(f[&format!("{h}*")], (3.0, 2.0));
    assert_eq!(f[&format!("{h}x")], (2.0, 2.0));
    assert_eq!(f[&format!("{h}y")], (2.0, 1.0));
}

#[test]
fn drop_groups_forgets_and_reload_restores() {
    let evs = workload(11, 3000);
    let (first, second) = evs.split_at(2000);
    let mut core = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
    let mut reference = Reference::new(true, 2 * DAY as i64, DAY as i64);
    let mut segments: Vec<(u32, Vec<u8>)> = Vec::new();
    for w in first.chunks(500) {
        count(&mut core, w);
        w.iter().for_each(|e| reference.count(e));
        same_final(
            &core.finalise().unwrap(),
            &reference.finalise(),
            "before the drop",
        );
        segments.extend(flat(core.changes()));
    }
    let groups: Vec<u32> = segments.iter().map(|s| s.0).collect();
    assert!(groups.contains(&0) && groups.iter().any(|&g| g != 0));
    // Drop group 0 with a window open: its deltas go too.
    count(&mut core, &second[..100]);
    second[..100].iter().for_each(|e| reference.count(e));
    let before = core.stats();
    core.drop_groups(&[0, 999]).unwrap();
    reference.drop_group(0);
    let after = core.stats();
    assert!(
        after.counters < before.counters
            && after.identities < before.identities
            && after.markers < before.markers
    );
    same_final(
        &core.finalise().unwrap(),
        &reference.finalise(),
        "after the drop",
    );
    // The other groups continue; group 0 starts from nothing.
    count(&mut core, &second[100..400]);
    second[100..400].iter().for_each(|e| reference.count(e));
    same_final(
        &core.finalise().unwrap(),
        &reference.finalise(),
        "counting after the drop",
    );
    core.changes();
    assert!(core.drop_groups(&[70_000]).is_err());

    // Dropping a group and loading its segments back gives the state it had.
    let mut a = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
    for (g, s) in &segments {
        a.load_segment(*g, s).unwrap();
    }
    let mut b = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
    for (g, s) in &segments {
        b.load_segment(*g, s).unwrap();
    }
    b.drop_groups(&[0]).unwrap();
    for (g, s) in segments.iter().filter(|s| s.0 == 0) {
        b.load_segment(*g, s).unwrap();
    }
    count(&mut a, &second[400..]);
    count(&mut b, &second[400..]);
    let (fa, fb) = (a.finalise().unwrap(), b.finalise().unwrap());
    assert_eq!((totals(&fa), &fa.fresh), (totals(&fb), &fb.fresh));
    assert_eq!(a.changes(), b.changes());
}

#[test]
fn malformed_batches_are_errors_and_change_nothing() {
    let mut core = Core::new(2, true, 10.0, 3600.0).unwrap();
    let t0 = 1_700_000_000;
    let good = ev(1, t0, t0, "co", "cu", "1", &["a"]);
    let b = encode(&[good.clone(), good.clone()]);
    let err = |core: &mut Core, bytes: &[u8], n: usize| core.count_batch(bytes, n).unwrap_err();
    for cut in [1, 5, 9, 11, 20, b.len() / 2 - 1] {
        let msg = err(&mut core, &b[..b.len() - cut], 2);
        assert!(
            msg.contains("event 1") && msg.contains("past the end"),
            "{msg}"
        );
    }
    assert!(err(&mut core, &b, 1).contains("after its 1 events"));
    assert!(err(&mut core, &b, 3).contains("event 2"));
    let mut bad = good.clone();
    bad.group = 65_536;
    assert!(err(&mut core, &encode(&[good.clone(), bad]), 2).contains("key group 65536"));
    let mut bad = encode(&[good.clone()]);
    let star = bad.iter().rposition(|&c| c == b'*').unwrap();
    bad[star] = b'+';
    assert!(err(&mut core, &bad, 1).contains("first token"));
    let mut bad = good.clone();
    bad.buckets[1].0 = f64::NAN;
    assert!(err(&mut core, &encode(&[bad]), 1).contains("bucketEnd"));
    let mut bad = good.clone();
    bad.buckets[0].0 = 1.5;
    assert!(err(&mut core, &encode(&[bad]), 1).contains("bucketEnd"));
    let mut bytes = encode(&[good.clone()]);
    let a = bytes.iter().rposition(|&c| c == b'a').unwrap(); // the token "a"
    bytes[a] = 0xff;
    assert!(err(&mut core, &bytes, 1).contains("UTF-8"));
    // A zero-token event.
    let mut z = Vec::new();
    z.extend_from_slice(&1u32.to_le_bytes());
    z.extend_from_slice(&t0.to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    assert!(err(&mut core, &z, 1).contains("no tokens"));
    // Nothing was counted by any of these.
    let s = core.stats();
    assert_eq!((s.counted, s.identities, s.counters), (0.0, 0.0, 0.0));
    assert_eq!(
        core.count_batch(&b, 2).unwrap(),
        Tally {
            counted: 1,
            duplicates: 1,
            beyond_horizon: 0
        }
    );
    assert_eq!(core.count_batch(&[], 0).unwrap(), Tally::default());
    assert!(Core::new(17, true, 1.0, 1.0).is_err());
    assert!(Core::new(1, true, -1.0, 1.0).is_err());
}

#[test]
fn tables_filter_and_iterate() {
    let mut t: TagTable<u32> = TagTable::new(0);
    for i in 0..5000u128 {
        let miss = t.find(i * 7919).unwrap_err();
        t.insert(miss, i * 7919, (i % 3) as u32 + 1, i as u32);
    }
    t.retain_map(|_, tag, v| if tag == 2 { None } else { Some(v + 1) });
    assert_eq!(t.len(), t.entries().count());
    assert!(t
        .entries()
        .all(|(k, tag, v)| tag != 2 && k == (v as u128 - 1) * 7919));
    let mut p = PairTable::new(0);
    for i in 0..3000u32 {
        let miss = p.find(i, i * 3).unwrap_err();
        p.insert(miss, i, i * 3, 1);
    }
    p.retain_map(|a, b, v| {
        if a % 2 == 0 {
            Some((a / 2, b, v))
        } else {
            None
        }
    });
    assert_eq!(p.len(), 1500);
    assert!(p.entries().all(|(a, b, _)| b == a * 6));
}

#[test]
fn stems_are_read_from_counter_ids() {
    assert_eq!(stem_of_id(b"2:co2:sth3600|*"), Some((14, 0, 3600)));
    assert_eq!(stem_of_id(b"2:co2:std-86400|=1:xv"), Some((16, 1, -86_400)));
    // Lengths count UTF-16 code units: "é" is one (2 bytes), "😀" two (4 bytes); ':' and '|' may occur inside.
    let id = "3:é:|4:😀|:m1700000000|*";
    assert_eq!(stem_of_id(id.as_bytes()), Some((id.len() - 1, 2, 1_700_000_000)));
    for bad in ["", "2:co", "2:co2:stx1|*", "2:co2:sth1*", "9:co2:sth1|*", "2:co2:sth|*", "x:co2:sth1|*"] {
        assert_eq!(stem_of_id(bad.as_bytes()), None, "{bad:?}");
    }
}

/// The expiry step and cutoff of worker/state/expiry.ts.
fn sweep_cutoff(watermark: u32, dr: i64, ur: i64) -> f64 {
    let step = (dr.min(ur) / 7).clamp(1, DAY as i64);
    ((watermark as i64 / step - 1) * step) as f64
}

/// A kernel swept after every window decides exactly as one never swept (and as the
/// reference) for events at or after the cutoffs; its state, reloaded from each group's
/// sweep segment and the change segments after it, is the same state; and the sweeps delete
/// identities and markers.
#[test]
fn sweeps_delete_only_what_decides_nothing() {
    for account in [true, false] {
        let evs = workload(7, 8000);
        let (dr, ur) = (2 * DAY as i64, DAY as i64);
        let make = || Core::new(2, account, dr as f64, ur as f64).unwrap();
        let (mut swept, mut kept) = (make(), make());
        let mut reference = Reference::new(account, dr, ur);
        // Per group: its counter segments and its state segments, each with the sequence
        // number it was written at; a sweep replaces the state segments (and, in full, the
        // counter segments). Loading merges the two by sequence number, as the task does.
        let mut log: HashMap<u32, (Vec<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>)> = HashMap::new();
        let mut seq = 0u64;
        let (mut dedup_deleted, mut markers_deleted) = (0, 0);
        for (w, window) in evs.chunks(400).enumerate() {
            for batch in window.chunks(61) {
                let a = count(&mut swept, batch);
                assert_eq!(a, count(&mut kept, batch), "window {w}: tally");
                for e in batch {
                    reference.count(e);
                }
            }
            let f = swept.finalise().unwrap();
            same_final(&f, &reference.finalise(), &format!("window {w}"));
            kept.finalise().unwrap();
            kept.changes();
            let (groups, marks) = swept.watermarks();
            let cutoffs: Vec<f64> = marks.iter().map(|&m| sweep_cutoff(m, dr, ur)).collect();
            // Every other window, so that change segments also follow a sweep segment.
            if w % 2 == 1 {
                // Every fourth sweep compacts the counters too.
                let full = vec![u8::from(w % 8 == 7); groups.len()];
                let out = swept.sweep(&groups, &cutoffs, &full).unwrap();
                assert_eq!(out.groups, groups, "window {w}: every held group is swept");
                for (g, parts) in out.groups.iter().zip(out.parts) {
                    let (counters, state) = log.entry(*g).or_default();
                    state.clear();
                    if w % 8 == 7 {
                        counters.clear();
                    }
                    // Written in this order: the counter segment, then the state segment.
                    for (list, seg) in [(&mut *counters, parts.counters), (&mut *state, parts.state)] {
                        if !seg.is_empty() {
                            list.push((seq, seg));
                            seq += 1;
                        }
                    }
                }
                dedup_deleted += out.dedup;
                markers_deleted += out.markers;
            }
            for (g, parts) in swept.changes() {
                let (counters, state) = log.entry(g).or_default();
                for (list, seg) in [(&mut *counters, parts.counters), (&mut *state, parts.state)] {
                    if !seg.is_empty() {
                        list.push((seq, seg));
                        seq += 1;
                    }
                }
            }
            if w % 5 == 4 {
                let mut next = make();
                for (&g, (counters, state)) in &log {
                    let mut all: Vec<&(u64, Vec<u8>)> = counters.iter().chain(state).collect();
                    all.sort_by_key(|s| s.0);
                    for (_, seg) in all {
                        next.load_segment(g, seg).unwrap();
                    }
                }
                let (a, b) = (swept.stats(), next.stats());
                assert_eq!(
                    (a.identities, a.buckets, a.markers, a.counters, a.customers),
                    (b.identities, b.buckets, b.markers, b.counters, b.customers),
                    "window {w}: state after loading the sweep segments"
                );
                swept = next;
            }
        }
        let (a, b) = (swept.stats(), kept.stats());
        assert!(dedup_deleted > 1000, "identities deleted: {dedup_deleted}");
        // (Not equality: an identity deleted and later sent again is stored again.)
        assert!(a.identities <= b.identities - 1000.0, "identities: {} swept, {} kept", a.identities, b.identities);
        assert_eq!((a.counters, a.buckets), (b.counters, b.buckets), "counters and buckets stay");
        if account {
            assert!(markers_deleted > 1000, "markers deleted: {markers_deleted}");
            assert!(a.markers < b.markers - 1000.0, "markers: {} swept, {} kept", a.markers, b.markers);
        } else {
            assert_eq!(markers_deleted, 0);
        }
    }
}

#[test]
fn sweep_arguments_are_checked() {
    let mut core = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
    count(&mut core, &workload(3, 50));
    assert!(core.sweep(&[0, 1], &[1.0], &[0, 0]).unwrap_err().contains("2 groups but 1 cutoffs"));
    assert!(core.sweep(&[0], &[1.0], &[]).unwrap_err().contains("0 full flags"));
    assert!(core.sweep(&[70_000], &[1.0], &[0]).unwrap_err().contains("not in 0..65535"));
    assert!(core.sweep(&[1, 1], &[1.0, 1.0], &[0, 0]).unwrap_err().contains("listed twice"));
    assert!(core.sweep(&[1], &[f64::NAN], &[0]).unwrap_err().contains("not a number"));
    // A group the kernel does not hold is skipped; -Infinity deletes nothing.
    let held = core.watermarks().0;
    let out = core.sweep(&[4000], &[f64::INFINITY], &[1]).unwrap();
    assert!(out.groups.is_empty());
    let before = core.stats();
    let out = core.sweep(&held, &vec![f64::NEG_INFINITY; held.len()], &vec![1; held.len()]).unwrap();
    assert_eq!((out.groups, out.dedup, out.markers), (held, 0, 0));
    assert_eq!(core.stats().identities, before.identities);
}

#[test]
fn mutated_input_never_panics() {
    let evs = workload(21, 400);
    let batch = encode(&evs);
    let mut core = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
    count(&mut core, &evs);
    core.finalise().unwrap();
    let (groups, segs): (Vec<u32>, Vec<Vec<u8>>) = flat(core.changes()).into_iter().unzip();
    let mut r = Rng(99);
    for _ in 0..3000 {
        let mut b = batch.clone();
        for _ in 0..1 + r.below(3) {
            let at = r.below(b.len() as u64) as usize;
            b[at] = r.next() as u8;
        }
        let mut k = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
        let _ = k.count_batch(&b, evs.len());
        let _ = k.count_batch(&b[..r.below(b.len() as u64) as usize], evs.len());
    }
    for _ in 0..3000 {
        let i = r.below(segs.len() as u64) as usize;
        let mut s = segs[i].clone();
        let body = s.len() - segment::TRAILER;
        for _ in 0..1 + r.below(3) {
            let at = r.below(body as u64) as usize;
            s[at] = r.next() as u8;
        }
        // With a valid checksum, so that the record checks are exercised.
        let sum = xxhash_rust::xxh3::xxh3_64(&s[..body]);
        s[body..].copy_from_slice(&sum.to_le_bytes());
        let mut k = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
        if k.load_segment(groups[i], &s).is_ok() {
            let _ = k.count_batch(&batch, evs.len());
            let _ = k.finalise();
            let _ = k.changes();
            let _ = k.drop_groups(&[groups[i]]);
        }
    }
}

fn fast_path(account: bool) -> FastPath {
    FastPath::new(fast_path::Config {
        account,
        granularities: vec![Granularity::Hour, Granularity::Month],
        key_groups: 16,
        max_event_bytes: 1 << 16,
        include: None,
        exclude: vec![],
        owned: None,
    })
}

/// A worker's fast path defers exactly the lines of the key groups it does not count.
#[test]
fn lines_of_groups_not_owned_are_deferred() {
    let line = |co: &str| format!(r#"{{"company_id":"{co}","statistic_id":"s","customer_id":"u","timestamp":3600,"event_id":"a"}}"#);
    let group = |co: &str| fast_path::murmur3_32(format!("{co}\0s").as_bytes(), 0) % 16;
    let cos: Vec<String> = (0..40).map(|i| format!("co{i}")).collect();
    let owned: Vec<bool> = (0..16).map(|g| g % 3 == 0).collect();
    let mut fast = FastPath::new(fast_path::Config {
        account: true,
        granularities: vec![Granularity::Hour],
        key_groups: 16,
        max_event_bytes: 1 << 16,
        include: None,
        exclude: vec![],
        owned: Some(owned.clone()),
    });
    let mut all = fast_path(true);
    let (mut kept, mut deferred) = (0, 0);
    for co in &cos {
        let mut out = Vec::new();
        let encoded = fast.encode(line(co).as_bytes(), 7, &mut out);
        if owned[group(co) as usize] {
            assert_eq!(encoded, Some(group(co)), "{co}");
            kept += 1;
        } else {
            assert_eq!((encoded, out.len()), (None, 0), "{co}: deferred, nothing written");
            assert!(all.encode(line(co).as_bytes(), 7, &mut out).is_some(), "{co}: encoded when every group is counted");
            deferred += 1;
        }
    }
    assert!(kept > 0 && deferred > 0, "{kept} kept, {deferred} deferred");
}

#[test]
fn encode_lines_stops_at_the_first_deferred_line() {
    let lines = [
        r#"{"company_id":"c","statistic_id":"s","customer_id":"u1","timestamp":3600,"event_id":"a"}"#,
        r#"{"company_id":"c","statistic_id":"s","customer_id":"u2","timestamp":3600,"event_id":"b"}"#,
        r#"{"company_id":"c","statistic_id":"s","customer_id":"u3","timestamp":3600,"event_id":1.5}"#,
        r#"{"company_id":"c","statistic_id":"s","customer_id":"u1","timestamp":3600,"event_id":"a"}"#,
    ];
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        ends.push(buf.len() as u32);
    }
    let ingest = [10u32, 11, 12, 13];
    let mut fast = fast_path(true);
    let mut batch = Vec::new();
    let (next, encoded) = encode_lines(&mut fast, &buf, &ends, &ingest, 0, 4, &mut batch).unwrap();
    assert_eq!((next, encoded), (2, 2));
    // Each event's encoding starts with its key group.
    let group = fast_path::murmur3_32(b"c\0s", 0) % 16;
    assert_eq!(u32::from_le_bytes(batch[0..4].try_into().unwrap()), group);
    // The batch is what encode() gives line by line, and counts.
    let mut one = Vec::new();
    for (i, l) in lines[..2].iter().enumerate() {
        fast.encode(l.as_bytes(), ingest[i], &mut one).unwrap();
    }
    assert_eq!(batch, one);
    let mut core = Core::new(2, true, 100.0, 100.0).unwrap();
    assert_eq!(core.count_batch(&batch, encoded).unwrap().counted, 2);
    // From the line after the deferred one: the copy of the first event is a duplicate.
    batch.clear();
    let (next, encoded) = encode_lines(&mut fast, &buf, &ends, &ingest, 3, 4, &mut batch).unwrap();
    assert_eq!((next, encoded), (4, 1));
    assert_eq!(core.count_batch(&batch, encoded).unwrap().duplicates, 1);
    // An empty range, and a range that starts at the deferred line.
    assert_eq!(
        encode_lines(&mut fast, &buf, &ends, &ingest, 4, 4, &mut batch).unwrap(),
        (4, 0)
    );
    assert_eq!(
        encode_lines(&mut fast, &buf, &ends, &ingest, 2, 4, &mut batch).unwrap(),
        (2, 0)
    );
}

#[test]
fn encode_lines_refuses_malformed_arguments() {
    let mut fast = fast_path(false);
    let mut batch = Vec::new();
    let buf = br#"{"company_id":"c","statistic_id":"s","customer_id":"u","timestamp":1}"#;
    let n = buf.len() as u32;
    for (ends, ingest, from, n) in [
        (vec![n], vec![1], 0, 2),
        (vec![n, n], vec![1], 0, 2),
        (vec![n], vec![1], 2, 1),
        (vec![n + 1], vec![1], 0, 1),
        (vec![n, 3], vec![1, 1], 0, 2),
    ] {
        let r = encode_lines(&mut fast, buf, &ends, &ingest, from, n, &mut batch);
        assert!(r.is_err(), "{ends:?} {ingest:?} {from} {n}");
    }
}

/// finalise's sort_by_id against a comparison sort of the id slices, then key group, on ids
/// built to make an eight-bytes-at-a-time sort go wrong: long shared prefixes (of every
/// length around a multiple of eight), ids that are prefixes of others, zero bytes (the
/// key's padding), bytes ≥ 0x80, equal ids in several groups, runs above and below the
/// size that is compared whole.
#[test]
fn sort_by_id_orders_as_a_comparison_sort() {
    let mut r = Rng(0x5eed);
    for case in 0..300 {
        let n = [0, 1, 2, 3, 16, 17, 40, 200, 3000][case % 9];
        let shared: Vec<u8> = (0..r.below(40)).map(|_| b'a' + r.below(3) as u8).collect();
        let mut ids: Vec<Vec<u8>> = Vec::new();
        for _ in 0..n {
            let id = if !ids.is_empty() && r.below(4) == 0 {
                // A prefix of, or an extension of, an earlier id.
                let mut other = ids[r.below(ids.len() as u64) as usize].clone();
                if r.below(2) == 0 {
                    other.truncate(r.below(other.len() as u64 + 1) as usize);
                } else {
                    for _ in 0..r.below(12) {
                        other.push([0u8, 1, b'a', 0xff][r.below(4) as usize]);
                    }
                }
                other
            } else {
                let mut id = shared.clone();
                for _ in 0..r.below(24) {
                    id.push([0u8, 1, b'a', b'b', 0x7f, 0x80, 0xff][r.below(7) as usize]);
                }
                id
            };
            ids.push(id);
        }
        let mut scratch = Vec::new();
        let mut order = Vec::new();
        let mut groups = Vec::new();
        for (c, id) in ids.iter().enumerate() {
            let from = scratch.len() as u32;
            scratch.extend_from_slice(id);
            order.push((from, scratch.len() as u32, c as u32));
            groups.push(r.below(3) as u16);
        }
        let mut want = order.clone();
        let slice = |&(f, t, _): &(u32, u32, u32)| &scratch[f as usize..t as usize];
        want.sort_by(|a, b| slice(a).cmp(slice(b)).then_with(|| groups[a.2 as usize].cmp(&groups[b.2 as usize])));
        let got = sort_by_id(&scratch, order, |c| groups[c as usize]);
        // Entries with the same id and group may come in either order: compare what decides.
        let view = |o: &[(u32, u32, u32)]| o.iter().map(|e| (slice(e).to_vec(), groups[e.2 as usize])).collect::<Vec<_>>();
        assert_eq!(view(&got), view(&want), "case {case}");
        let mut seen: Vec<u32> = got.iter().map(|e| e.2).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "case {case}: a permutation");
    }
}

/// The store as the task keeps it for the kernel: each group's segment logs (a sweep
/// replaces the state log, as in `sweeps_delete_only_what_decides_nothing`) and the spill
/// records by (kind, group, fingerprint).
#[derive(Default)]
struct SpillStore {
    log: HashMap<u32, (Vec<(u64, Vec<u8>)>, Vec<(u64, Vec<u8>)>)>,
    records: BTreeMap<(u8, u32, u128), Vec<u8>>,
    seq: u64,
}

impl SpillStore {
    fn append(&mut self, g: u32, parts: Parts, replace_state: bool) {
        let (counters, state) = self.log.entry(g).or_default();
        if replace_state {
            state.clear();
        }
        for (list, seg) in [(&mut *counters, parts.counters), (&mut *state, parts.state)] {
            if !seg.is_empty() {
                list.push((self.seq, seg));
                self.seq += 1;
            }
        }
    }

    /// What the task does at a commit after `changes()`: evict, and write the records.
    fn evict(&mut self, core: &mut Core, limit: f64) -> (u64, u64) {
        let s = core.evict(limit);
        for i in 0..s.ends.len() {
            let (kind, group, fp) = spill::need(&s.keys, i);
            let from = if i == 0 { 0 } else { s.ends[i - 1] as usize };
            self.records.insert((kind, group, fp), s.values[from..s.ends[i] as usize].to_vec());
        }
        (s.identities, s.customers)
    }

    /// A new kernel loaded from the store, as the task opens its groups.
    fn load(&self, make: &dyn Fn() -> Core) -> Core {
        let mut core = make();
        for (&g, (counters, state)) in &self.log {
            let mut all: Vec<&(u64, Vec<u8>)> = counters.iter().chain(state).collect();
            all.sort_by_key(|s| s.0);
            for (_, seg) in all {
                core.load_segment(g, seg).unwrap();
            }
            for kind in [spill::KIND_IDENTITY, spill::KIND_MARKERS] {
                let fps: Vec<u8> = self
                    .records
                    .keys()
                    .filter(|k| k.0 == kind && k.1 == g)
                    .flat_map(|k| k.2.to_le_bytes())
                    .collect();
                core.load_spilled(g, kind, &fps).unwrap();
            }
        }
        core
    }

    /// Counts a batch as NativeState does: its needs read and restored first. Returns the
    /// tally and the records restored.
    fn count(&self, core: &mut Core, evs: &[Ev]) -> (Tally, usize) {
        let b = encode(evs);
        let needs = core.needs_of(&b, evs.len());
        let k = needs.len() / spill::NEED_BYTES;
        if k > 0 {
            let (mut found, mut values, mut ends) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..k {
                let (kind, group, fp) = spill::need(&needs, i);
                let v = self.records.get(&(kind, group, fp));
                found.push(u8::from(v.is_some()));
                values.extend_from_slice(v.map_or(&[][..], |v| v));
                ends.push(values.len() as u32);
            }
            core.restore(&needs, &found, &values, &ends).unwrap();
            // What was found is in memory now; only identities whose tag misled are asked again.
            let again = core.needs_of(&b, evs.len());
            for i in 0..again.len() / spill::NEED_BYTES {
                let (kind, group, fp) = spill::need(&again, i);
                assert!(kind == spill::KIND_IDENTITY && !self.records.contains_key(&(kind, group, fp)), "asked again for a restored record");
            }
        }
        (core.count_batch(&b, evs.len()).unwrap(), k)
    }

    /// The task's sweep of a group's spill records at `cutoff`: expired identity records are
    /// deleted (worker/state/expiry.ts's rule), marker records swept by the kernel.
    fn sweep_records(&mut self, core: &mut Core, g: u32, cutoff: f64, dr: i64) -> u64 {
        let expired: Vec<u128> = self
            .records
            .iter()
            .filter(|(k, v)| k.0 == spill::KIND_IDENTITY && k.1 == g && (u32::from_le_bytes(v[..4].try_into().unwrap()) as i64 + dr) < cutoff as i64)
            .map(|(k, _)| k.2)
            .collect();
        for &fp in &expired {
            self.records.remove(&(spill::KIND_IDENTITY, g, fp));
        }
        let fps: Vec<u8> = expired.iter().flat_map(|fp| fp.to_le_bytes()).collect();
        core.forget_identities(g, &fps).unwrap();
        let marker_keys: Vec<u128> = self.records.keys().filter(|k| k.0 == spill::KIND_MARKERS && k.1 == g).map(|k| k.2).collect();
        let (mut values, mut ends) = (Vec::new(), Vec::new());
        for fp in &marker_keys {
            values.extend_from_slice(&self.records[&(spill::KIND_MARKERS, g, *fp)]);
            ends.push(values.len() as u32);
        }
        let fps: Vec<u8> = marker_keys.iter().flat_map(|fp| fp.to_le_bytes()).collect();
        let (actions, out, out_ends, removed) = core.sweep_marker_records(g, cutoff, &fps, &values, &ends).unwrap();
        let mut r = 0;
        for (i, fp) in marker_keys.iter().enumerate() {
            match actions[i] {
                0 => {}
                1 => {
                    let from = if r == 0 { 0 } else { out_ends[r - 1] as usize };
                    self.records.insert((spill::KIND_MARKERS, g, *fp), out[from..out_ends[r] as usize].to_vec());
                    r += 1;
                }
                _ => {
                    self.records.remove(&(spill::KIND_MARKERS, g, *fp));
                }
            }
        }
        expired.len() as u64 + removed
    }
}

/// Under a state limit (0: spill everything it can after every window; and one that spills
/// part), with sweeps of the segments and the spill records and restarts from the store,
/// every window's totals equal the reference's; identities and marker sets are spilled and
/// come back; a restarted kernel holds only what its segments hold in memory.
#[test]
fn spilling_under_a_limit_matches_the_reference() {
    for (account, limit) in [(true, 0.0), (true, 60_000.0), (false, 0.0)] {
        let evs = workload(21, 8000);
        let (dr, ur) = (2 * DAY as i64, DAY as i64);
        let make = || Core::new(2, account, dr as f64, ur as f64).unwrap();
        let mut core = make();
        let mut reference = Reference::new(account, dr, ur);
        let mut store = SpillStore::default();
        let (mut spilled, mut restored, mut swept) = ((0, 0), 0, 0);
        for (w, window) in evs.chunks(400).enumerate() {
            for batch in window.chunks(61) {
                let (t, r) = store.count(&mut core, batch);
                restored += r;
                let before = reference.tally;
                for e in batch {
                    reference.count(e);
                }
                let want = Tally {
                    counted: reference.tally.counted - before.counted,
                    duplicates: reference.tally.duplicates - before.duplicates,
                    beyond_horizon: reference.tally.beyond_horizon - before.beyond_horizon,
                };
                assert_eq!(t, want, "window {w}: tally ({account}, {limit})");
            }
            let f = core.finalise().unwrap();
            same_final(&f, &reference.finalise(), &format!("window {w} ({account}, {limit})"));
            if w % 2 == 1 {
                let (groups, marks) = core.watermarks();
                let cutoffs: Vec<f64> = marks.iter().map(|&m| sweep_cutoff(m, dr, ur)).collect();
                let out = core.sweep(&groups, &cutoffs, &vec![0; groups.len()]).unwrap();
                for (g, parts) in out.groups.iter().zip(out.parts) {
                    store.append(*g, parts, true);
                }
                for (&g, &cutoff) in groups.iter().zip(&cutoffs) {
                    swept += store.sweep_records(&mut core, g, cutoff, dr);
                }
            }
            for (g, parts) in core.changes() {
                store.append(g, parts, false);
            }
            let (i, c) = store.evict(&mut core, limit);
            spilled = (spilled.0 + i, spilled.1 + c);
            if w % 5 == 4 {
                core = store.load(&make);
            }
        }
        if limit == 0.0 {
            assert!(spilled.0 > 1000, "identities spilled: {spilled:?} ({account}, {limit})");
        }
        assert!(restored > 20, "records restored: {restored} ({account}, {limit}, {spilled:?})");
        assert!(swept > 100, "spilled records swept: {swept}");
        if account {
            assert!(spilled.1 > 100, "customers spilled: {spilled:?} ({limit})");
        } else {
            assert_eq!(spilled.1, 0);
        }
    }
}

#[test]
fn restore_checks_before_it_changes_anything() {
    let mut core = Core::new(2, true, 2.0 * DAY as f64, DAY as f64).unwrap();
    count(&mut core, &workload(3, 200));
    core.finalise().unwrap();
    core.changes();
    let s = core.evict(0.0);
    assert!(s.customers > 0);
    let before = core.stats();
    let (kind, group, fp) = spill::need(&s.keys, s.ends.len() - 1);
    assert_eq!(kind, spill::KIND_MARKERS);
    let mut need = Vec::new();
    spill::push_need(&mut need, kind, group, fp);
    assert!(core.restore(&need, &[0], &[], &[0]).unwrap_err().contains("missing from the store"));
    assert!(core.restore(&need, &[1], &[1, 0x80], &[2]).unwrap_err().contains("corrupt"));
    assert!(core.restore(&need, &[1], &[1, 200, 1], &[3]).unwrap_err().contains("does not exist"));
    assert!(core.restore(&need, &[1, 1], &[], &[0]).unwrap_err().contains("found flags"));
    spill::push_need(&mut need, b'X', group, fp);
    assert!(core.restore(&need, &[1, 1], &[1, 1], &[1, 2]).unwrap_err().contains("kind"));
    let after = core.stats();
    assert_eq!((before.markers, before.spilled_customers), (after.markers, after.spilled_customers));
    assert!(core.load_spilled(group, spill::KIND_MARKERS, &[7; 16]).unwrap_err().contains("do not hold"));
}
