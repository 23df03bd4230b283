//! The two text formats `/metrics` speaks, chosen from the request's `Accept` header:
//! OpenMetrics 1.0.0 for clients that ask for it (Prometheus does, by default), and the
//! Prometheus text format 0.0.4 for everyone else (`curl`, `promtool check metrics`, older
//! scrapers, which read a counter's `# TYPE x counter` without `_total` as a family with no
//! samples).
//!
//! prometheus-client only encodes OpenMetrics, so the 0.0.4 answer is converted from it, line
//! by line. What differs:
//! - a counter family is named with its `_total` suffix (`# HELP`/`# TYPE x_total counter`),
//!   and its `_created` samples are dropped (0.0.4 has no such sample; a histogram's too);
//! - an `info` family `x` becomes the gauge `x_info`; `stateset` a gauge, `unknown` `untyped`;
//! - `# UNIT` and `# EOF` lines are dropped; `\"` in a HELP text is unescaped (0.0.4 escapes
//!   only `\\` and `\n` there);
//! - exemplars (` # {…} v`) are dropped and a sample timestamp in seconds becomes milliseconds.

/// The exposition format of one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    /// OpenMetrics when `Accept` names `application/openmetrics-text` (any version) with a
    /// quality at least that of `text/plain` or `*/*`; the 0.0.4 text format otherwise
    /// (also without an `Accept` header).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::PrometheusText;
        };
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let mut q = 1.0f32;
            for param in parts {
                if let Some((key, value)) = param.split_once('=')
                    && key.trim().eq_ignore_ascii_case("q")
                {
                    q = value.trim().parse().unwrap_or(0.0);
                }
            }
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The family being converted: its OpenMetrics name and type.
struct Family<'a> {
    name: &'a str,
    kind: &'a str,
}

/// Converts an OpenMetrics exposition (as prometheus-client writes it) to the Prometheus text
/// format 0.0.4 (see the module doc for what changes).
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len() + openmetrics.len() / 16);
    // prometheus-client writes HELP before TYPE, and the 0.0.4 name depends on the type: the
    // HELP line waits for the TYPE line that follows it.
    let mut help: Option<(&str, &str)> = None;
    let mut family: Option<Family> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut out, help.take());
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (exported, exported_kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), "counter"),
                "counter" => (name.to_string(), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_string(), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            match help.take() {
                Some((help_name, text)) if help_name == name => {
                    flush_help(&mut out, Some((&exported, text)))
                }
                other => flush_help(&mut out, other),
            }
            out.push_str("# TYPE ");
            out.push_str(&exported);
            out.push(' ');
            out.push_str(exported_kind);
            out.push('\n');
            family = Some(Family { name, kind });
            continue;
        }
        flush_help(&mut out, help.take());
        if line.starts_with('#') || line.trim().is_empty() {
            // `# UNIT`, `# EOF` and any other comment: not part of the 0.0.4 format.
            continue;
        }
        let Some((name, labels, value, timestamp)) = split_sample(line) else {
            continue;
        };
        if let Some(f) = &family
            && matches!(f.kind, "counter" | "histogram" | "summary")
            && name.strip_suffix("_created") == Some(f.name)
        {
            continue;
        }
        out.push_str(name);
        out.push_str(labels);
        out.push(' ');
        out.push_str(value);
        if let Some(ms) = timestamp.and_then(seconds_to_millis) {
            out.push(' ');
            out.push_str(&ms.to_string());
        }
        out.push('\n');
    }
    flush_help(&mut out, help.take());
    out
}

/// Writes a pending HELP line (under `name` as given), with OpenMetrics' `\"` unescaped.
fn flush_help(out: &mut String, help: Option<(&str, &str)>) {
    let Some((name, text)) = help else {
        return;
    };
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('"') => out.push('"'),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out.push('\n');
}

/// A sample line's name, label set (`{…}` or empty), value and optional timestamp; the
/// exemplar (after ` # `) is left out. None for a line that is not a sample.
fn split_sample(line: &str) -> Option<(&str, &str, &str, Option<&str>)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = "";
    if rest.starts_with('{') {
        // Find the closing brace outside quoted label values (which may hold `}` or `\"`).
        let (mut quoted, mut escaped, mut end) = (false, false, None);
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        labels = &rest[..=end];
        rest = &rest[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next()?;
    let timestamp = fields.next().filter(|t| *t != "#");
    Some((name, labels, value, timestamp))
}

fn seconds_to_millis(seconds: &str) -> Option<i64> {
    let s: f64 = seconds.parse().ok()?;
    s.is_finite().then(|| (s * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_accept() {
        use Format::*;
        assert_eq!(Format::negotiate(None), PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), PrometheusText);
        assert_eq!(Format::negotiate(Some("text/plain")), PrometheusText);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")),
            PrometheusText
        );
        // What Prometheus 2.x sends by default.
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            )),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text; version=1.0.0")),
            OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.5, text/plain")),
            PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            PrometheusText
        );
    }

    #[test]
    fn converts_every_openmetrics_difference() {
        // The expected text repeats most of the input on purpose: each rewrite is shown whole.
        let om = "# HELP lc_lines Lines \\\"seen\\\" \\\\ here.\n\
                  # TYPE lc_lines counter\n\
                  lc_lines_total{name=\"a}b\\\"c\"} 3\n\
                  lc_lines_created{name=\"a}b\\\"c\"} 1700000000.5\n\
                  # HELP lc_cpu_seconds CPU.\n\
                  # TYPE lc_cpu_seconds counter\n\
                  # UNIT lc_cpu_seconds seconds\n\
                  lc_cpu_seconds_total 1.5 # {trace=\"x\"} 1.0 1700000000\n\
                  # HELP lc_build Build.\n\
                  # TYPE lc_build info\n\
                  lc_build_info{version=\"1\"} 1\n\
                  # HELP lc_age_seconds Age.\n\
                  # TYPE lc_age_seconds histogram\n\
                  lc_age_seconds_sum 2.0\n\
                  lc_age_seconds_count 1\n\
                  lc_age_seconds_bucket{le=\"+Inf\"} 1\n\
                  lc_age_seconds_created 1700000000.0\n\
                  # HELP lc_queue Queue.\n\
                  # TYPE lc_queue gauge\n\
                  lc_queue 7 1700000000.25\n\
                  # TYPE lc_other unknown\n\
                  lc_other 1\n\
                  # EOF\n";
        let expected = "# HELP lc_lines_total Lines \"seen\" \\\\ here.\n\
                        # TYPE lc_lines_total counter\n\
                        lc_lines_total{name=\"a}b\\\"c\"} 3\n\
                        # HELP lc_cpu_seconds_total CPU.\n\
                        # TYPE lc_cpu_seconds_total counter\n\
                        lc_cpu_seconds_total 1.5\n\
                        # HELP lc_build_info Build.\n\
                        # TYPE lc_build_info gauge\n\
                        lc_build_info{version=\"1\"} 1\n\
                        # HELP lc_age_seconds Age.\n\
                        # TYPE lc_age_seconds histogram\n\
                        lc_age_seconds_sum 2.0\n\
                        lc_age_seconds_count 1\n\
                        lc_age_seconds_bucket{le=\"+Inf\"} 1\n\
                        # HELP lc_queue Queue.\n\
                        # TYPE lc_queue gauge\n\
                        lc_queue 7 1700000000250\n\
                        # TYPE lc_other untyped\n\
                        lc_other 1\n";
        assert_eq!(openmetrics_to_prometheus_text(om), expected);
    }
}
