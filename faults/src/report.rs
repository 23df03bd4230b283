//! The run's table: `report.md` for people, `report.json` for tools, both naming the commit.

use std::path::Path;

use crate::scenario::Outcome;
use log_capturer_testkit::unix_time;

pub struct Row {
    pub name: &'static str,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// `git rev-parse HEAD` where the runner is started; `None` outside a checkout.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A table cell: one line, no `|`.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(rows: &[Row], commit: Option<&str>, command: &str) -> String {
    let mut text = format!(
        "# log-capturer fault suite\n\ncommit: {}\nunix time: {}\ncommand: `{command}`\n\n\
         | scenario | result | counts | seconds | note |\n| --- | --- | --- | --- | --- |\n",
        commit.unwrap_or("unknown"),
        unix_time()
    );
    for r in rows {
        text.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} |\n",
            r.name,
            if r.outcome.pass { "PASS" } else { "FAIL" },
            cell(&r.outcome.counts_text()),
            r.seconds,
            cell(&r.outcome.note)
        ));
    }
    let failed = rows.iter().filter(|r| !r.outcome.pass).count();
    text.push_str(&format!(
        "\n{} scenarios, {} passed, {failed} failed\n",
        rows.len(),
        rows.len() - failed
    ));
    text
}

pub fn json(rows: &[Row], commit: Option<&str>, command: &str) -> serde_json::Value {
    let scenarios: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let counts: serde_json::Map<String, serde_json::Value> = r
                .outcome
                .counts
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::json!({
                "scenario": r.name,
                "result": if r.outcome.pass { "PASS" } else { "FAIL" },
                "counts": counts,
                "seconds": (r.seconds * 10.0).round() / 10.0,
                "note": r.outcome.note,
            })
        })
        .collect();
    serde_json::json!({
        "commit": commit,
        "unix_time": unix_time(),
        "command": command,
        "passed": rows.iter().all(|r| r.outcome.pass),
        "scenarios": scenarios,
    })
}

pub fn write(out: &Path, rows: &[Row], command: &str) -> Result<(), String> {
    let commit = git_commit();
    let md = markdown(rows, commit.as_deref(), command);
    let js = json(rows, commit.as_deref(), command);
    let text = serde_json::to_string_pretty(&js).map_err(|e| e.to_string())?;
    std::fs::write(out.join("report.md"), md).map_err(|e| format!("report.md: {e}"))?;
    std::fs::write(out.join("report.json"), text + "\n").map_err(|e| format!("report.json: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_one_row_per_scenario_and_escapes_pipes() {
        let rows = vec![
            Row {
                name: "a",
                outcome: Outcome::pass("fine").count("lost", 0),
                seconds: 1.0,
            },
            Row {
                name: "b",
                outcome: Outcome::fail("x | y\nz"),
                seconds: 2.0,
            },
        ];
        let md = markdown(&rows, Some("abc"), "cmd");
        assert!(md.contains("| a | PASS | lost=0 | 1 | fine |"), "{md}");
        assert!(md.contains("| b | FAIL |  | 2 | x \\| y z |"), "{md}");
        assert!(md.contains("2 scenarios, 1 passed, 1 failed"));
        let js = json(&rows, Some("abc"), "cmd");
        assert_eq!(js["passed"], false);
        assert_eq!(js["scenarios"][0]["counts"]["lost"], "0");
        assert_eq!(js["commit"], "abc");
    }
}
