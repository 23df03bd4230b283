//! Turns samples and tallies into the verdict: a table, criteria, exit status.

use std::fmt::Write;

use crate::agent::Sample;
use log_capturer_testkit::verify::Tally;

/// Least-squares slope of y over t (per second); 0 with fewer than 2 points.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

pub struct Criteria {
    pub max_task_growth_per_min: f64,
    pub max_fd_growth_per_min: f64,
    pub max_rss_growth_mib_per_10min: f64,
}

pub struct Inputs<'a> {
    pub command: String,
    pub commit: Option<String>,
    pub containers: usize,
    pub churn_containers: usize,
    pub duration_s: f64,
    pub rotation_s: f64,
    pub warmup_s: f64,
    pub samples: &'a [Sample],
    /// Rotations of each long-lived container.
    pub rotations: Vec<(String, f64)>,
    pub errors: Vec<(String, f64)>,
    pub tally: Tally,
    pub churn_tally: Tally,
    pub shutdown_ok: bool,
    pub shutdown_s: f64,
    pub harness_errors: Vec<String>,
}

pub struct Verdict {
    pub text: String,
    pub passed: bool,
}

pub fn evaluate(i: &Inputs, c: &Criteria) -> Verdict {
    let after: Vec<&Sample> = i.samples.iter().filter(|s| s.t >= i.warmup_s).collect();
    let fit = |f: fn(&Sample) -> f64| slope(&after.iter().map(|s| (s.t, f(s))).collect::<Vec<_>>());
    let task_growth = fit(|s| s.tasks) * 60.0;
    let fd_growth = fit(|s| s.fds) * 60.0;
    // RSS: the growth rate over the window after warm-up, expressed per 10 minutes; windows
    // shorter than 10 minutes are judged as if they lasted 10 (allocator steps are not trends).
    let window =
        after.last().map(|s| s.t).unwrap_or(0.0) - after.first().map(|s| s.t).unwrap_or(0.0);
    let rss_growth_10min = if window >= 600.0 {
        fit(|s| s.rss_mib) * 600.0
    } else {
        after.last().map(|s| s.rss_mib).unwrap_or(0.0)
            - after.first().map(|s| s.rss_mib).unwrap_or(0.0)
    };
    let expected = (i.duration_s / i.rotation_s).floor();
    let floor_rot = (expected - 1.0).max(0.0);
    let mut rot: Vec<f64> = i.rotations.iter().map(|r| r.1).collect();
    let rot_min = rot.iter().copied().fold(f64::INFINITY, f64::min);
    let rot_max = rot.iter().copied().fold(0.0, f64::max);
    let rot_med = median(&mut rot);
    let laggards: Vec<&String> = i
        .rotations
        .iter()
        .filter(|r| r.1 < floor_rot)
        .map(|r| &r.0)
        .collect();
    let unexpected_errors: f64 = i
        .errors
        .iter()
        .filter(|(reason, _)| reason != "unreadable_log_driver")
        .map(|e| e.1)
        .sum::<f64>()
        + 0.0; // an empty f64 sum is -0.0
    let first = i.samples.first().cloned().unwrap_or_default();
    let last = i.samples.last().cloned().unwrap_or_default();
    let peak_rss = i.samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max);
    let total = {
        let mut t = i.tally;
        t.add(i.churn_tally);
        t
    };

    let mut checks: Vec<(String, bool)> = vec![
        (
            format!("rotations per long-lived container >= {floor_rot} (floor(D/R) - 1)"),
            laggards.is_empty() && !i.rotations.is_empty(),
        ),
        (
            format!(
                "task growth {task_growth:+.3}/min < {}/min",
                c.max_task_growth_per_min
            ),
            task_growth < c.max_task_growth_per_min,
        ),
        (
            format!(
                "FD growth {fd_growth:+.3}/min < {}/min",
                c.max_fd_growth_per_min
            ),
            fd_growth < c.max_fd_growth_per_min,
        ),
        (
            format!(
                "RSS growth {rss_growth_10min:+.2} MiB per 10 min < {} MiB",
                c.max_rss_growth_mib_per_10min
            ),
            rss_growth_10min < c.max_rss_growth_mib_per_10min,
        ),
        (format!("lost lines {} == 0", total.lost), total.lost == 0),
        (
            format!("duplicated lines {} == 0", total.duplicated),
            total.duplicated == 0,
        ),
        (
            format!("out-of-order lines {} == 0", total.out_of_order),
            total.out_of_order == 0,
        ),
        (
            format!("errors other than unreadable_log_driver {unexpected_errors} == 0"),
            unexpected_errors == 0.0,
        ),
        (
            format!("clean shutdown (exit 0) in {:.2} s", i.shutdown_s),
            i.shutdown_ok,
        ),
        (
            format!("harness errors {} == 0", i.harness_errors.len()),
            i.harness_errors.is_empty(),
        ),
    ];
    if !laggards.is_empty() {
        checks[0].0.push_str(&format!(" — below: {laggards:?}"));
    }
    let passed = checks.iter().all(|c| c.1);

    // One writeln per table row, each with its own figures and formats; a row helper would
    // only move the format! strings, and the report must stay byte-identical.
    let mut t = String::new();
    let _ = writeln!(t, "# Soak report\n");
    let _ = writeln!(t, "Command: `{}`\n", i.command);
    if let Some(commit) = &i.commit {
        let _ = writeln!(t, "Agent built from commit `{commit}`.\n");
    }
    let _ = writeln!(t, "| measure | value |\n|---|---|");
    let _ = writeln!(
        t,
        "| containers (long-running + churn) | {} + {} |",
        i.containers, i.churn_containers
    );
    let _ = writeln!(
        t,
        "| duration D / rotation R / warm-up | {:.0} s / {:.0} s / {:.0} s |",
        i.duration_s, i.rotation_s, i.warmup_s
    );
    let _ = writeln!(
        t,
        "| rotations per long-lived container min / median / max (expected D/R = {expected}) | {rot_min:.0} / {rot_med:.0} / {rot_max:.0} |"
    );
    let _ = writeln!(
        t,
        "| tasks alive start → end (growth after warm-up) | {:.0} → {:.0} ({task_growth:+.3}/min) |",
        first.tasks, last.tasks
    );
    let _ = writeln!(
        t,
        "| FDs open start → end (growth after warm-up) | {:.0} → {:.0} ({fd_growth:+.3}/min) |",
        first.fds, last.fds
    );
    let _ = writeln!(
        t,
        "| RSS start / end / peak | {:.1} / {:.1} / {:.1} MiB |",
        first.rss_mib, last.rss_mib, peak_rss
    );
    let _ = writeln!(
        t,
        "| threads start → end | {:.0} → {:.0} |",
        first.threads, last.threads
    );
    let errors: Vec<String> = i.errors.iter().map(|(r, v)| format!("{r}={v}")).collect();
    let _ = writeln!(
        t,
        "| stream errors by reason | {} |",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    let _ = writeln!(
        t,
        "| lines served by the daemon / captured | {} / {} |",
        total.served, total.captured
    );
    let _ = writeln!(
        t,
        "| lines lost / duplicated / out of order | {} / {} / {} |",
        total.lost, total.duplicated, total.out_of_order
    );
    let _ = writeln!(
        t,
        "| of which churn containers: served / captured / lost / duplicated | {} / {} / {} / {} |",
        i.churn_tally.served, i.churn_tally.captured, i.churn_tally.lost, i.churn_tally.duplicated
    );
    let _ = writeln!(
        t,
        "| shutdown (SIGTERM → exit) | {:.2} s, {} |",
        i.shutdown_s,
        if i.shutdown_ok { "exit 0" } else { "FAILED" }
    );
    let _ = writeln!(t, "\n## Criteria\n");
    for (what, ok) in &checks {
        let _ = writeln!(t, "- {} {what}", if *ok { "PASS" } else { "FAIL" });
    }
    for e in &i.harness_errors {
        let _ = writeln!(t, "- harness error: {e}");
    }
    let _ = writeln!(t, "\nResult: **{}**", if passed { "PASS" } else { "FAIL" });
    Verdict { text: t, passed }
}

/// The commit the harness (and the agent built beside it) was built from.
pub fn git_commit() -> Option<String> {
    Some(env!("SOAK_GIT_COMMIT").to_string()).filter(|c| c != "unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        assert!((slope(&pts) - 2.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), 0.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
