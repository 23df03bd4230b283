//! `timestamp`: the record's event time from the field `source`, within bounds.
//!
//! `format` (the field's value is read with surrounding spaces ignored):
//! - `rfc3339`: `2026-12-01T06:00:00Z`, any fraction (digits past the 9th ignored), `Z` or
//!   `±HH:MM`; a space instead of the `T` is accepted (RFC 3339 §5.6 allows it).
//! - `unix`, `unix_ms`, `unix_us`, `unix_ns`: seconds / milliseconds / microseconds /
//!   nanoseconds since the epoch, an integer or a decimal (`1764568800.25`), optionally
//!   negative; digits finer than a nanosecond are ignored.
//! - anything else is a strftime-style layout of these directives: `%Y` (4 digits), `%m`,
//!   `%d`, `%H`, `%M`, `%S` (1 or 2 digits), `%e` (day, space-padded), `%b` (English month
//!   name, `Dec` or `December`, any case), `%a` (English weekday name, skipped), `%f` (the
//!   digits of a fraction of a second: `%S.%f`), `%z` (`Z`, `+0100`, `+01:00` or `+01`),
//!   `%T` (`%H:%M:%S`), `%F` (`%Y-%m-%d`), `%%`. A space in the layout matches one or more
//!   spaces; any other character matches itself. `%Y`, `%m` or `%b`, `%d` or `%e`, `%H` and
//!   `%M` are required; without `%z` the time is UTC. Anything else is a config error at
//!   `format`. Example: nginx's `%d/%b/%Y:%H:%M:%S %z`.
//!
//! Bounds are against the record's Docker timestamp (`ts`): an event time before
//! `ts - max_age` or after `ts + max_future` is out of bounds, and `out_of_bounds` says what
//! happens: `clamp` (the default) uses the nearest bound and counts the stage event
//! `timestamp_clamped`; `keep` uses the parsed time and counts `timestamp_kept_out_of_bounds`;
//! `drop` drops the record (counted by the engine as a drop of this stage).
//!
//! A missing field or a value that does not parse leaves the event time as it was and counts
//! a parse failure. Docker's timestamp is never changed: it stays the resume cursor.

use prometheus_client::metrics::counter::Counter;
use std::time::Duration;

use crate::docker::timestamp::{days_from_civil, parse_rfc3339_nanos};
use crate::pipeline::LogLine;
use crate::processing::config::{OutOfBounds, TimestampConfig};
use crate::processing::metrics::StageMetrics;
use crate::processing::record::lookup;
use crate::processing::stage::{BuildError, StageContext, Verdict};

#[derive(Clone, Debug)]
pub struct TimestampStage {
    source: String,
    format: Format,
    max_age_ns: Option<i64>,
    max_future_ns: Option<i64>,
    out_of_bounds: OutOfBounds,
    /// The event counter of `out_of_bounds` (none for `drop`: the engine counts drops).
    out_of_bounds_events: Option<Counter>,
    parse_failures: Counter,
}

#[derive(Clone, Debug, PartialEq)]
enum Format {
    Rfc3339,
    /// Unix time in units of this many ns.
    Unix(i64),
    Layout(Vec<Item>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Item {
    Literal(u8),
    Spaces,
    Year,
    Month,
    MonthName,
    Day,
    DaySpacePadded,
    WeekdayName,
    Hour,
    Minute,
    Second,
    Fraction,
    Zone,
}

impl TimestampStage {
    pub fn build(config: &TimestampConfig, metrics: &StageMetrics) -> Result<Self, BuildError> {
        if config.source.trim().is_empty() {
            return Err(BuildError::at(
                "source",
                "required: the field holding the event time (e.g. `time`, set by a json stage)",
            ));
        }
        let format = match config.format.as_str() {
            "rfc3339" => Format::Rfc3339,
            "unix" => Format::Unix(1_000_000_000),
            "unix_ms" => Format::Unix(1_000_000),
            "unix_us" => Format::Unix(1_000),
            "unix_ns" => Format::Unix(1),
            layout => Format::Layout(
                compile_layout(layout).map_err(|e| BuildError::at("format", e.to_string()))?,
            ),
        };
        let out_of_bounds_events = match config.out_of_bounds {
            OutOfBounds::Clamp => Some(metrics.event("timestamp_clamped")),
            OutOfBounds::Keep => Some(metrics.event("timestamp_kept_out_of_bounds")),
            OutOfBounds::Drop => None,
        };
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        Ok(TimestampStage {
            source: config.source.clone(),
            format,
            max_age_ns: config.max_age.map(|d| nanos(d.0)),
            max_future_ns: config.max_future.map(|d| nanos(d.0)),
            out_of_bounds: config.out_of_bounds,
            out_of_bounds_events,
            parse_failures: metrics.parse_failures.clone(),
        })
    }

    pub fn apply(&mut self, line: &mut LogLine, cx: &StageContext<'_>) -> Verdict {
        let parsed = lookup(line, cx.container, &self.source).and_then(|v| self.parse(v.trim()));
        let Some(event_ns) = parsed else {
            self.parse_failures.inc();
            return Verdict::Pass;
        };
        let ts = line.ts_ns;
        let bound = match (self.max_age_ns, self.max_future_ns) {
            (Some(age), _) if event_ns < ts.saturating_sub(age) => Some(ts.saturating_sub(age)),
            (_, Some(ahead)) if event_ns > ts.saturating_add(ahead) => {
                Some(ts.saturating_add(ahead))
            }
            _ => None,
        };
        let event_ns = match (bound, self.out_of_bounds) {
            (None, _) => event_ns,
            (Some(_), OutOfBounds::Drop) => return Verdict::Drop,
            (Some(bound), policy) => {
                if let Some(counter) = &self.out_of_bounds_events {
                    counter.inc();
                }
                if policy == OutOfBounds::Clamp {
                    bound
                } else {
                    event_ns
                }
            }
        };
        line.extra_mut().event_ns = Some(event_ns);
        Verdict::Pass
    }

    fn parse(&self, text: &str) -> Option<i64> {
        match &self.format {
            Format::Rfc3339 => parse_rfc3339(text.as_bytes()),
            Format::Unix(unit) => parse_unix(text.as_bytes(), *unit),
            Format::Layout(items) => parse_layout(items, text.as_bytes()),
        }
    }
}

/// RFC 3339, also with a space between date and time.
fn parse_rfc3339(text: &[u8]) -> Option<i64> {
    if text.get(10) != Some(&b' ') {
        return parse_rfc3339_nanos(text);
    }
    let mut buf = [0u8; 64];
    let copy = buf.get_mut(..text.len())?;
    copy.copy_from_slice(text);
    copy[10] = b'T';
    parse_rfc3339_nanos(copy)
}

/// `[-]INT[.FRACTION]` in units of `unit` ns.
fn parse_unix(text: &[u8], unit: i64) -> Option<i64> {
    let (negative, text) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let (int, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &text[text.len()..]),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.iter().chain(frac).all(u8::is_ascii_digit)
        || (text.len() > int.len() && frac.is_empty())
    {
        return None;
    }
    let mut ns: i64 = 0;
    for &d in int {
        ns = ns.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    ns = ns.checked_mul(unit)?;
    let mut place = unit;
    for &d in frac {
        place /= 10;
        if place == 0 {
            break;
        }
        ns = ns.checked_add(i64::from(d - b'0') * place)?;
    }
    Some(if negative { -ns } else { ns })
}

const SUPPORTED: &str = "%Y %m %b %d %e %a %H %M %S %f %z %T %F %%";

/// Why a `format` layout does not compile (the layout is quoted).
#[derive(Debug, thiserror::Error)]
enum LayoutError {
    #[error(
        "`{0}` is neither rfc3339, unix, unix_ms, unix_us, unix_ns nor a layout with % \
         directives (supported: {SUPPORTED})"
    )]
    NoDirective(String),
    #[error("`{0}` ends in a lone %")]
    LonePercent(String),
    /// The directive (escaped) and the layout.
    #[error("`%{directive}` in `{layout}` is not supported (supported: {SUPPORTED})")]
    Unsupported { directive: String, layout: String },
    #[error(
        "`{0}` does not name a full time: a layout needs %Y, %m (or %b), %d (or %e), %H and %M"
    )]
    NotFullTime(String),
}

fn compile_layout(layout: &str) -> Result<Vec<Item>, LayoutError> {
    if !layout.contains('%') {
        return Err(LayoutError::NoDirective(layout.to_string()));
    }
    let mut items = Vec::new();
    let mut bytes = layout.bytes();
    while let Some(b) = bytes.next() {
        if b == b' ' {
            if items.last() != Some(&Item::Spaces) {
                items.push(Item::Spaces);
            }
            continue;
        }
        if b != b'%' {
            items.push(Item::Literal(b));
            continue;
        }
        let directive = bytes
            .next()
            .ok_or_else(|| LayoutError::LonePercent(layout.to_string()))?;
        match directive {
            b'Y' => items.push(Item::Year),
            b'm' => items.push(Item::Month),
            b'b' | b'h' | b'B' => items.push(Item::MonthName),
            b'd' => items.push(Item::Day),
            b'e' => items.push(Item::DaySpacePadded),
            b'a' | b'A' => items.push(Item::WeekdayName),
            b'H' => items.push(Item::Hour),
            b'M' => items.push(Item::Minute),
            b'S' => items.push(Item::Second),
            b'f' => items.push(Item::Fraction),
            b'z' => items.push(Item::Zone),
            // %T and %F: strftime's shorthands for %H:%M:%S and %Y-%m-%d (alike in shape only).
            b'T' => items.extend([
                Item::Hour,
                Item::Literal(b':'),
                Item::Minute,
                Item::Literal(b':'),
                Item::Second,
            ]),
            b'F' => items.extend([
                Item::Year,
                Item::Literal(b'-'),
                Item::Month,
                Item::Literal(b'-'),
                Item::Day,
            ]),
            b'%' => items.push(Item::Literal(b'%')),
            other => {
                return Err(LayoutError::Unsupported {
                    directive: char::from(other).escape_default().to_string(),
                    layout: layout.to_string(),
                });
            }
        }
    }
    let has = |wanted: &[Item]| items.iter().any(|i| wanted.contains(i));
    if !(has(&[Item::Year])
        && has(&[Item::Month, Item::MonthName])
        && has(&[Item::Day, Item::DaySpacePadded])
        && has(&[Item::Hour])
        && has(&[Item::Minute]))
    {
        return Err(LayoutError::NotFullTime(layout.to_string()));
    }
    Ok(items)
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Reads `text` by `items`; the whole text must be used.
fn parse_layout(items: &[Item], text: &[u8]) -> Option<i64> {
    let mut s = Scanner { text, at: 0 };
    let (mut year, mut month, mut day) = (None, None, None);
    let (mut hour, mut minute, mut second, mut nanos, mut offset) = (0, 0, 0, 0, 0);
    for item in items {
        match *item {
            Item::Literal(b) => s.byte(b)?,
            Item::Spaces => {
                let start = s.at;
                while s.peek() == Some(b' ') {
                    s.at += 1;
                }
                if s.at == start {
                    return None;
                }
            }
            Item::Year => year = Some(s.digits(4, 4)?),
            Item::Month => month = Some(s.digits(1, 2)?),
            Item::MonthName => month = Some(s.name(&MONTHS)? + 1),
            Item::Day => day = Some(s.digits(1, 2)?),
            Item::DaySpacePadded => {
                if s.peek() == Some(b' ') {
                    s.at += 1;
                }
                day = Some(s.digits(1, 2)?);
            }
            Item::WeekdayName => {
                s.name(&WEEKDAYS)?;
            }
            Item::Hour => hour = s.digits(1, 2)?,
            Item::Minute => minute = s.digits(1, 2)?,
            Item::Second => second = s.digits(1, 2)?,
            Item::Fraction => {
                let start = s.at;
                let mut place = 100_000_000;
                while let Some(d) = s.peek().filter(u8::is_ascii_digit) {
                    nanos += i64::from(d - b'0') * place;
                    place /= 10;
                    s.at += 1;
                }
                if s.at == start {
                    return None;
                }
            }
            Item::Zone => offset = s.zone()?,
        }
    }
    let (year, month, day) = (year?, month?, day?);
    if s.at != text.len()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn byte(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// `min..=max` digits (as many as there are, up to `max`).
    fn digits(&mut self, min: usize, max: usize) -> Option<i64> {
        let mut v = 0i64;
        let mut n = 0;
        while n < max
            && let Some(d) = self.peek().filter(u8::is_ascii_digit)
        {
            v = v * 10 + i64::from(d - b'0');
            self.at += 1;
            n += 1;
        }
        (n >= min).then_some(v)
    }

    /// An English name, abbreviated to 3 letters or in full (any case): its index.
    fn name(&mut self, names: &[&str]) -> Option<i64> {
        let rest = &self.text[self.at..];
        let len = rest
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let word = &rest[..len];
        let i = names.iter().position(|n| {
            (word.len() == 3 || word.len() == n.len())
                && n.as_bytes()
                    .get(..word.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(word))
        })?;
        self.at += word.len();
        i64::try_from(i).ok()
    }

    /// `Z`, `±HHMM`, `±HH:MM` or `±HH`: seconds east of UTC.
    fn zone(&mut self) -> Option<i64> {
        let sign = match self.peek()? {
            b'Z' | b'z' => {
                self.at += 1;
                return Some(0);
            }
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.at += 1;
        let hours = self.digits(2, 2)?;
        if self.peek() == Some(b':') {
            self.at += 1;
        }
        let minutes = if self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.digits(2, 2)?
        } else {
            0
        };
        (hours <= 23 && minutes <= 59).then_some(sign * (hours * 3600 + minutes * 60))
    }
}

#[cfg(test)]
#[path = "timestamp_tests.rs"]
mod tests;
