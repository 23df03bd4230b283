//! Docker's RFC3339Nano timestamps ("2026-11-28T23:49:08.780644778Z"), parsed to nanoseconds
//! since the UNIX epoch without allocating, and the `since=SEC.NANOS` query form.

/// Parses an RFC3339 timestamp with optional fraction (up to 9 digits) and `Z` or `±HH:MM`.
pub fn parse_rfc3339_nanos(s: &[u8]) -> Option<i64> {
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || (s[10] != b'T' && s[10] != b't') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let year = digits(&s[0..4])?;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let hour = digits(&s[11..13])?;
    let minute = digits(&s[14..16])?;
    let second = digits(&s[17..19])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs: i64 = match s.get(i)? {
        b'Z' | b'z' if i + 1 == s.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == s.len() && s[i + 3] == b':' => {
            let h = digits(&s[i + 1..i + 3])?;
            let m = digits(&s[i + 4..i + 6])?;
            let v = h * 3600 + m * 60;
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// `since` query value: fractional UNIX seconds with exactly 9 fraction digits.
pub fn since_param(ts_ns: i64) -> String {
    let ts = ts_ns.max(0);
    format!("{}.{:09}", ts / 1_000_000_000, ts % 1_000_000_000)
}

/// Formats nanoseconds since the epoch as RFC3339 with 9 fraction digits, UTC.
pub fn format_rfc3339_nanos(ts_ns: i64) -> String {
    let mut out = Vec::with_capacity(STAMP_LEN);
    write_rfc3339_nanos(&mut out, ts_ns);
    String::from_utf8_lossy(&out).into_owned()
}

/// Length of `2026-11-28T23:49:08.780644778Z`.
pub const STAMP_LEN: usize = 30;

/// `YYYY-MM-DDTHH:MM:SS` and the UNIX second it names: consecutive log lines nearly always
/// share it, so parsing and formatting only redo the calendar when the second changes.
#[derive(Clone, Copy)]
pub struct SecondCache {
    secs: i64,
    text: [u8; 19],
}

impl Default for SecondCache {
    fn default() -> Self {
        SecondCache {
            secs: 0,
            text: *b"1970-01-01T00:00:00",
        }
    }
}

thread_local! {
    static FORMAT_CACHE: std::cell::Cell<SecondCache> = std::cell::Cell::new(SecondCache::default());
}

/// Appends `ts_ns` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, always 30 bytes; years outside
/// 0..=9999 are clamped) without allocating: Docker's own fixed-width form.
pub fn write_rfc3339_nanos(out: &mut Vec<u8>, ts_ns: i64) {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let mut cache = FORMAT_CACHE.get();
    if cache.secs != secs {
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let mut t = *b"0000-00-00T00:00:00";
        put_digits(&mut t[0..4], y.clamp(0, 9999));
        put_digits(&mut t[5..7], m);
        put_digits(&mut t[8..10], d);
        put_digits(&mut t[11..13], rem / 3600);
        put_digits(&mut t[14..16], (rem / 60) % 60);
        put_digits(&mut t[17..19], rem % 60);
        cache = SecondCache { secs, text: t };
        FORMAT_CACHE.set(cache);
    }
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    b[..19].copy_from_slice(&cache.text);
    put_digits(&mut b[20..29], ts_ns.rem_euclid(1_000_000_000));
    out.extend_from_slice(&b);
}

/// [`parse_rfc3339_nanos`] with a fast path for Docker's fixed-width UTC form in a second
/// already seen.
pub fn parse_rfc3339_nanos_cached(s: &[u8], cache: &mut SecondCache) -> Option<i64> {
    let fixed = s.len() == STAMP_LEN && s[19] == b'.' && s[29] == b'Z';
    if fixed && s[..19] == cache.text {
        return cache
            .secs
            .checked_mul(1_000_000_000)?
            .checked_add(digits(&s[20..29])?);
    }
    let ts = parse_rfc3339_nanos(s)?;
    if fixed {
        cache.secs = ts.div_euclid(1_000_000_000);
        cache.text.copy_from_slice(&s[..19]);
    }
    Some(ts)
}

fn put_digits(slot: &mut [u8], mut v: i64) {
    for b in slot.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn digits(s: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(b - b'0');
    }
    Some(v)
}

// Howard Hinnant's days-from-civil algorithm (proleptic Gregorian calendar).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_docker_stamps() {
        assert_eq!(parse_rfc3339_nanos(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos(b"2026-11-28T23:49:08.780644778Z"),
            Some(1_795_909_748_780_644_778)
        );
        assert_eq!(
            parse_rfc3339_nanos(b"2026-11-28T23:49:08.78Z"),
            Some(1_795_909_748_780_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos(b"2026-11-29T01:49:08.780644778+02:00"),
            Some(1_795_909_748_780_644_778)
        );
        assert_eq!(parse_rfc3339_nanos(b"2026-13-28T23:49:08Z"), None);
        assert_eq!(parse_rfc3339_nanos(b"2026-11-28 23:49:08Z"), None);
        assert_eq!(parse_rfc3339_nanos(b"2026-11-28T23:49:08."), None);
        assert_eq!(parse_rfc3339_nanos(b"garbage"), None);
    }

    #[test]
    fn formats_docker_fixed_width() {
        assert_eq!(
            format_rfc3339_nanos(1_795_909_748_780_644_778),
            "2026-11-28T23:49:08.780644778Z"
        );
        assert_eq!(format_rfc3339_nanos(5), "1970-01-01T00:00:00.000000005Z");
    }

    #[test]
    fn since_is_padded() {
        assert_eq!(since_param(1_000_000_005), "1.000000005");
        assert_eq!(since_param(0), "0.000000000");
    }

    #[test]
    fn cached_parse_agrees_with_the_full_one() {
        let mut cache = SecondCache::default();
        // A table of inputs, shaped like body.rs's malformed chunking cases (unrelated data).
        for s in [
            &b"2026-11-28T23:49:08.780644778Z"[..],
            b"2026-11-28T23:49:08.000000001Z",
            b"2026-11-28T23:49:09.780644778Z",
            b"2026-11-28T23:49:09.78064477xZ",
            b"2026-11-29T01:49:08.780644778+02:00",
            b"2026-11-28T23:49:09.5Z",
            b"1970-01-01T00:00:00.000000000Z",
        ] {
            assert_eq!(
                parse_rfc3339_nanos_cached(s, &mut cache),
                parse_rfc3339_nanos(s),
                "{}",
                String::from_utf8_lossy(s)
            );
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ts in 0i64..4_102_444_800_000_000_000, step in 0i64..3_000_000_000) {
            let mut cache = SecondCache::default();
            for t in [ts, ts + step] {
                let text = format_rfc3339_nanos(t);
                prop_assert_eq!(text.len(), 30);
                prop_assert_eq!(parse_rfc3339_nanos(text.as_bytes()), Some(t));
                prop_assert_eq!(parse_rfc3339_nanos_cached(text.as_bytes(), &mut cache), Some(t));
            }
        }
    }
}
