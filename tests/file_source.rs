//! The host-file source (`sources.files`) end to end, through the real agent and its NDJSON
//! file sink: lines written before and after the start are read once, a rename rotation in
//! the middle of a stream loses nothing, and a restart (SIGTERM) resumes exactly. The heavy
//! cases (real logrotate, SIGKILL, inode reuse, descriptor baseline) are in their own tests.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::agent::{Agent, AgentOptions};
use support::{assert_run, wait_until};

/// The agent reads the host files under `logs` and no container (a label nothing carries).
fn start(dir: &Path, logs: &Path) -> Agent {
    Agent::start(
        dir,
        AgentOptions {
            capture: "  include:\n    labels: [\"lc-file-source-test=none\"]\n".to_string(),
            sources: format!(
                "  files:\n    - include: [\"{}/app.log*\"]\n      fields: {{job: app}}\n  file_settings:\n    poll_interval: 50ms\n    rescan_interval: 500ms\n    flush_partial_after: 500ms\n",
                logs.display()
            ),
            ..AgentOptions::default()
        },
    )
}

/// The NDJSON output of a host file (named by its path, `/` as `%2F`).
fn output_name(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

/// The output files the sink wrote.
fn outputs(agent: &Agent) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(agent.dir.join("out"))
        .expect("out dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn append(path: &Path, from: usize, to: usize) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    let mut text = String::new();
    for i in from..=to {
        text.push_str(&format!("line {i}\n"));
    }
    f.write_all(text.as_bytes()).expect("write");
}

/// Waits until the records under `path`'s name are `line 1 ..= line to`, then checks them
/// exactly: once each (lines of two files — a rotated one and its successor — may interleave,
/// so they are compared in number order; each file's own order is checked by the sink test).
fn expect_lines(agent: &Agent, path: &Path, to: usize, context: &str) {
    let name = output_name(path);
    let complete = wait_until(Duration::from_secs(30), || {
        agent.messages(&name).len() >= to
    });
    assert!(
        complete,
        "{context}: {} of {to} lines; log:\n{}",
        agent.messages(&name).len(),
        agent.log()
    );
    // A moment more: nothing is delivered twice afterwards either.
    std::thread::sleep(Duration::from_millis(700));
    let mut messages = agent.messages(&name);
    messages.sort_by_key(|m| {
        m.strip_prefix("line ")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    assert_run(&messages, "line ", 1, to, context);
}

#[test]
fn lines_before_and_after_start_rotation_and_restart_are_read_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    fs::create_dir_all(&logs).expect("mkdir");
    let live = logs.join("app.log");
    append(&live, 1, 500);
    let mut agent = start(&dir.path().join("agent"), &logs);
    append(&live, 501, 1000);
    expect_lines(&agent, &live, 1000, "before and after start");
    let records = agent.records(&output_name(&live));
    assert_eq!(
        records[0]["file"],
        live.display().to_string(),
        "{:?}",
        records[0]
    );
    // The group's fields (where the NDJSON rendering puts them is the sink's business).
    assert!(
        records[0]["job"] == "app" || records[0]["fields"]["job"] == "app",
        "{:?}",
        records[0]
    );

    // Rename rotation while the writer still holds the old descriptor: what it writes to the
    // renamed file after the rename is read from it, the new file from its start. Both are
    // named by the path they were found at, so their records share one output file.
    let mut old = OpenOptions::new().append(true).open(&live).expect("open");
    old.write_all(b"line 1001\n").expect("write");
    fs::rename(&live, logs.join("app.log.1")).expect("rename");
    old.write_all(b"line 1002\nline 1003\n").expect("write");
    append(&live, 1004, 1200);
    old.write_all(b"line 1201\n").expect("write");
    drop(old);
    append(&live, 1202, 1300);
    expect_lines(&agent, &live, 1300, "rename rotation mid-stream");
    // The renamed file is still the same file: followed under its new name, never read again
    // as a new one (which would write its lines a second time, under app.log.1's name).
    std::thread::sleep(Duration::from_secs(1)); // a few rescans (500ms)
    assert_eq!(outputs(&agent), [format!("{}.log", output_name(&live))]);

    // A restart resumes exactly: what is written while it is down is read once, after.
    let status = agent.terminate();
    assert!(status.success(), "exit: {status:?}; log:\n{}", agent.log());
    append(&live, 1301, 1600);
    agent.restart();
    append(&live, 1601, 1700);
    expect_lines(&agent, &live, 1700, "after the restart");
    assert_eq!(outputs(&agent), [format!("{}.log", output_name(&live))]);
    assert_eq!(
        agent.metric("log_capturer_files_watched"),
        2.0,
        "app.log and app.log.1"
    );
    // The status API: both files, everything acknowledged.
    let caught_up = wait_until(Duration::from_secs(30), || {
        let Some((200, body)) = agent.get("/api/v1/files") else {
            return false;
        };
        let files: Vec<serde_json::Value> = serde_json::from_str(&body).expect("json");
        files.len() == 2 && files.iter().all(|f| f["lag_bytes"] == 0)
    });
    assert!(caught_up, "{:?}", agent.get("/api/v1/files"));
}
