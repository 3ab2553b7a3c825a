//! Calendar arithmetic of worker/engine/time.ts (shared by the fast path), and the
//! prototype's buckets and strict ISO-8601 timestamps of semantics.md (a zone is required,
//! impossible dates rejected).

const DAY: i64 = 86_400;

/// time.ts's daysFromCivil (H. Hinnant's days_from_civil).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month) of a day number (H. Hinnant's civil_from_days), as a JS Date's
/// getUTCFullYear and getUTCMonth + 1 give them.
pub fn year_month_of_days(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if month <= 2 { 1 } else { 0 }, month)
}

/// Granularity codes: 0 hour, 1 day, 2 month.
pub fn bucket_start(g: u32, s: i64) -> i64 {
    match g {
        0 => s - s.rem_euclid(3600),
        1 => s - s.rem_euclid(DAY),
        _ => {
            let (y, m) = year_month_of_days(s.div_euclid(DAY));
            days_from_civil(y, m, 1) * DAY
        }
    }
}

pub fn bucket_end(g: u32, start: i64) -> i64 {
    match g {
        0 => start + 3600,
        1 => start + DAY,
        _ => {
            let (y, m) = year_month_of_days(start.div_euclid(DAY));
            if m == 12 {
                days_from_civil(y + 1, 1, 1) * DAY
            } else {
                days_from_civil(y, m + 1, 1) * DAY
            }
        }
    }
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<i64> {
    let mut v = 0i64;
    for &c in s.get(at..at + n)? {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(v)
}

/// `YYYY-MM-DDTHH:MM[:SS[.fff…]](Z|±hh:mm)` → seconds since the epoch, fractions kept.
pub fn iso_seconds(text: &str) -> Option<f64> {
    let s = text.as_bytes();
    if s.len() < 17 || s[4] != b'-' || s[7] != b'-' || s[10] != b'T' || s[13] != b':' {
        return None;
    }
    let (year, month, day) = (digits(s, 0, 4)?, digits(s, 5, 2)?, digits(s, 8, 2)?);
    let (hour, minute) = (digits(s, 11, 2)?, digits(s, 14, 2)?);
    if !(1..=12).contains(&month) || day < 1 || hour > 23 || minute > 59 {
        return None;
    }
    let dim = if month == 12 {
        31
    } else {
        days_from_civil(year, month + 1, 1) - days_from_civil(year, month, 1)
    };
    if day > dim {
        return None;
    }
    let mut i = 16;
    let mut second = 0;
    let mut fraction = 0.0;
    if s.get(i) == Some(&b':') {
        second = digits(s, i + 1, 2)?;
        if second > 59 {
            return None;
        }
        i += 3;
        if s.get(i) == Some(&b'.') {
            let from = i;
            i += 1;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            if i == from + 1 {
                return None;
            }
            fraction = text[from..i].parse::<f64>().ok()?;
        }
    }
    let offset = match s.get(i) {
        Some(b'Z') if i + 1 == s.len() => 0,
        Some(&z @ (b'+' | b'-')) if i + 6 == s.len() && s[i + 3] == b':' => {
            let (oh, om) = (digits(s, i + 1, 2)?, digits(s, i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            (if z == b'-' { -1 } else { 1 }) * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    Some(
        (days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second - offset)
            as f64
            + fraction,
    )
}
