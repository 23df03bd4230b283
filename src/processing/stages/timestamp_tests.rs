use super::*;
use crate::docker::timestamp::format_rfc3339_nanos;
use crate::processing::FieldValue;
use crate::processing::tests::{TS_NS, build, cx_meta, line, run};
use proptest::prelude::*;

fn stage(yaml: &str) -> (TimestampStage, StageMetrics) {
    build(yaml, "timestamp[0]", TimestampStage::build)
}

fn with_time(value: &str) -> LogLine {
    let mut l = line("m");
    l.extra_mut()
        .fields
        .set("time".into(), FieldValue::Str(value.into()));
    l
}

fn event(st: &mut TimestampStage, value: &str) -> Option<i64> {
    let l = run(|l, cx| st.apply(l, cx), with_time(value));
    assert_eq!(l.ts_ns, TS_NS, "Docker's timestamp never changes");
    l.extra.and_then(|e| e.event_ns)
}

const SEC: i64 = 1_000_000_000;
/// 2026-12-01T06:00:00Z
const DEC1: i64 = 1_796_104_800 * SEC;

#[test]
fn rfc3339_forms() {
    let (mut st, m) = stage("{source: time}");
    assert_eq!(event(&mut st, "2026-12-01T06:00:00Z"), Some(DEC1));
    assert_eq!(
        event(&mut st, " 2026-12-01 06:00:00.5Z "),
        Some(DEC1 + SEC / 2)
    );
    assert_eq!(
        event(&mut st, "2026-12-01T07:00:00.123456789123+01:00"),
        Some(DEC1 + 123_456_789)
    );
    assert_eq!(
        event(&mut st, "2026-12-01T06:00:00.000000001Z"),
        Some(DEC1 + 1)
    );
    assert_eq!(m.parse_failures.get(), 0);
    for bad in [
        "2026-12-01",
        "yesterday",
        "2026-12-01T06:00:00",
        "2026-12-01T06:00:00+0100",
        "",
    ] {
        assert_eq!(event(&mut st, bad), None, "{bad}");
    }
    assert_eq!(m.parse_failures.get(), 5);
}

#[test]
fn unix_forms() {
    let (mut st, m) = stage("{source: time, format: unix}");
    assert_eq!(event(&mut st, "1796104800"), Some(DEC1));
    assert_eq!(event(&mut st, "1796104800.25"), Some(DEC1 + SEC / 4));
    assert_eq!(event(&mut st, "1796104800.0000000019"), Some(DEC1 + 1));
    assert_eq!(event(&mut st, "-1.5"), Some(-SEC - SEC / 2));
    let (mut ms, _) = stage("{source: time, format: unix_ms}");
    assert_eq!(event(&mut ms, "1796104800123"), Some(DEC1 + 123_000_000));
    assert_eq!(
        event(&mut ms, "1796104800123.4567"),
        Some(DEC1 + 123_456_700)
    );
    let (mut us, _) = stage("{source: time, format: unix_us}");
    assert_eq!(event(&mut us, "1796104800123456"), Some(DEC1 + 123_456_000));
    let (mut ns, _) = stage("{source: time, format: unix_ns}");
    assert_eq!(
        event(&mut ns, "1796104800123456789"),
        Some(DEC1 + 123_456_789)
    );
    assert_eq!(
        event(&mut ns, "1796104800123456789.9"),
        Some(DEC1 + 123_456_789)
    );
    assert_eq!(m.parse_failures.get(), 0);
    for bad in [
        "",
        "-",
        ".",
        "1.",
        "1e9",
        "1,5",
        "99999999999999999999",
        "0x10",
        "+1",
    ] {
        assert_eq!(event(&mut st, bad), None, "{bad}");
    }
    assert_eq!(m.parse_failures.get(), 9);
}

#[test]
fn layouts() {
    let cases = [
        ("%d/%b/%Y:%H:%M:%S %z", "01/Dec/2026:07:30:00 +0130", DEC1),
        (
            "%Y-%m-%d %H:%M:%S.%f",
            "2026-12-01 06:00:00.25",
            DEC1 + SEC / 4,
        ),
        ("%F %T", "2026-12-01 06:00:00", DEC1),
        ("%a, %d %b %Y %T %z", "Tue, 01 Dec 2026 06:00:00 Z", DEC1),
        ("%A %e %B %Y %H:%M", "tuesday  1 DECEMBER 2026 06:00", DEC1),
        (
            "%m/%d/%Y %H:%M:%S%z",
            "12/1/2026 6:00:00-01",
            DEC1 + 3600 * SEC,
        ),
        ("%Y%m%dT%H%M%S", "20261201T060000", DEC1),
        (
            "[%Y-%m-%d %H:%M:%S,%f] 100%%",
            "[2026-12-01 06:00:00,5] 100%",
            DEC1 + SEC / 2,
        ),
    ];
    for (layout, value, want) in cases {
        let (mut st, m) = stage(&format!("{{source: time, format: '{layout}'}}"));
        assert_eq!(event(&mut st, value), Some(want), "{layout} {value}");
        assert_eq!(m.parse_failures.get(), 0);
    }
    let (mut st, m) = stage("{source: time, format: '%d/%b/%Y:%H:%M:%S %z'}");
    for bad in [
        "01/Dec/2026:07:30:00",
        "01/Dex/2026:07:30:00 +0000",
        "32/Dec/2026:07:30:00 +0000",
        "01/Dec/2026:24:30:00 +0000",
        "01/Dec/2026:07:30:00 +0000 extra",
        "01/Dec/26:07:30:00 +0000",
    ] {
        assert_eq!(event(&mut st, bad), None, "{bad}");
    }
    assert_eq!(m.parse_failures.get(), 6);
}

#[test]
fn missing_field_is_a_parse_failure_and_changes_nothing() {
    let (mut st, m) = stage("{source: time}");
    let mut l = line("m");
    l.extra_mut().event_ns = Some(5);
    let l = run(|l, cx| st.apply(l, cx), l);
    assert_eq!(l.extra.and_then(|e| e.event_ns), Some(5));
    assert_eq!(l.ts_ns, TS_NS);
    assert_eq!(m.parse_failures.get(), 1);
}

#[test]
fn bad_configs_name_their_key() {
    let metrics = StageMetrics::detached("p", "timestamp[0]");
    for (yaml, key, says) in [
        ("{format: unix}", "source", "required"),
        ("{source: t, format: unixtime}", "format", "neither rfc3339"),
        ("{source: t, format: '%Y-%m-%d %Q'}", "format", "`%Q`"),
        ("{source: t, format: '%H:%M:%S'}", "format", "needs %Y"),
        (
            "{source: t, format: '%Y-%m-%d %H:%M %'}",
            "format",
            "lone %",
        ),
    ] {
        let config: TimestampConfig = serde_saphyr::from_str(yaml).expect(yaml);
        let e = TimestampStage::build(&config, &metrics).expect_err(yaml);
        assert_eq!(e.key, key, "{yaml}");
        assert!(e.message.contains(says), "{yaml}: {}", e.message);
    }
}

fn bounded(policy: &str) -> (TimestampStage, StageMetrics) {
    stage(&format!(
        "{{source: time, format: unix_ns, max_age: 1h, max_future: 10s, out_of_bounds: {policy}}}"
    ))
}

#[test]
fn out_of_bounds_clamp_keep_drop() {
    let old = TS_NS - 2 * 3600 * SEC;
    let ahead = TS_NS + 11 * SEC;
    let inside = TS_NS - 3600 * SEC;
    let (mut clamp, m) = bounded("clamp");
    assert_eq!(event(&mut clamp, &inside.to_string()), Some(inside));
    assert_eq!(
        event(&mut clamp, &old.to_string()),
        Some(TS_NS - 3600 * SEC)
    );
    assert_eq!(
        event(&mut clamp, &ahead.to_string()),
        Some(TS_NS + 10 * SEC)
    );
    assert_eq!(m.event("timestamp_clamped").get(), 2);
    assert_eq!(m.event("timestamp_kept_out_of_bounds").get(), 0);

    let (mut keep, m) = bounded("keep");
    assert_eq!(event(&mut keep, &old.to_string()), Some(old));
    assert_eq!(event(&mut keep, &ahead.to_string()), Some(ahead));
    assert_eq!(event(&mut keep, &inside.to_string()), Some(inside));
    assert_eq!(m.event("timestamp_kept_out_of_bounds").get(), 2);
    assert_eq!(m.event("timestamp_clamped").get(), 0);

    let (mut drop, m) = bounded("drop");
    let (meta, now_ns) = cx_meta();
    let cx = StageContext {
        container: &meta,
        now_ns,
    };
    for (value, verdict) in [
        (old, Verdict::Drop),
        (ahead, Verdict::Drop),
        (inside, Verdict::Pass),
    ] {
        let mut l = with_time(&value.to_string());
        assert_eq!(drop.apply(&mut l, &cx), verdict, "{value}");
        assert_eq!(l.ts_ns, TS_NS);
    }
    assert_eq!(m.parse_failures.get(), 0);
}

#[test]
fn unbounded_by_default() {
    let (mut st, m) = stage("{source: time, format: unix}");
    assert_eq!(event(&mut st, "0"), Some(0));
    assert_eq!(event(&mut st, "4102444800"), Some(4_102_444_800 * SEC));
    assert_eq!(m.event("timestamp_clamped").get(), 0);
}

proptest! {
    #[test]
    fn rfc3339_round_trips(ns in 0i64..4_102_444_800_000_000_000, offset_min in -(23 * 60 + 59)..(23 * 60 + 59i64)) {
        let (mut st, m) = stage("{source: time}");
        let utc = format_rfc3339_nanos(ns);
        prop_assert_eq!(event(&mut st, &utc), Some(ns));
        // The same instant written in another zone.
        let local = format_rfc3339_nanos(ns + offset_min * 60 * SEC);
        let sign = if offset_min < 0 { '-' } else { '+' };
        let zoned = format!("{}{sign}{:02}:{:02}", &local[..29], offset_min.abs() / 60, offset_min.abs() % 60);
        prop_assert_eq!(event(&mut st, &zoned), Some(ns), "{}", zoned);
        // And through a layout.
        let (mut lay, _) = stage("{source: time, format: '%Y-%m-%dT%H:%M:%S.%f%z'}");
        prop_assert_eq!(event(&mut lay, &zoned), Some(ns), "{}", zoned);
        prop_assert_eq!(m.parse_failures.get(), 0);
    }

    #[test]
    fn clamp_lands_within_bounds(delta in any::<i64>(), age_s in 0u64..1_000_000, future_s in 0u64..1_000_000) {
        let (mut st, m) = stage(&format!(
            "{{source: time, format: unix_ns, max_age: {age_s}s, max_future: {future_s}s}}"
        ));
        let value = TS_NS.saturating_add(delta);
        let got = event(&mut st, &value.to_string()).expect("parsed");
        let (lo, hi) = (TS_NS - age_s as i64 * SEC, TS_NS + future_s as i64 * SEC);
        prop_assert!(lo <= got && got <= hi);
        let inside = (lo..=hi).contains(&value);
        prop_assert_eq!(got == value, inside);
        prop_assert_eq!(m.event("timestamp_clamped").get(), u64::from(!inside));
    }

    #[test]
    fn arbitrary_values_never_panic(value in ".{0,40}", layout in prop::sample::select(vec!["rfc3339", "unix", "unix_ms", "%d/%b/%Y:%H:%M:%S %z", "%a %e %B %Y %T.%f"])) {
        let (mut st, _) = stage(&format!("{{source: time, format: '{layout}'}}"));
        event(&mut st, &value);
    }
}
