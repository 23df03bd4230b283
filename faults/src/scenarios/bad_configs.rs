//! Scenario 8, bad configs: every case must stop the agent with exit 2 (a config the loader
//! refuses) or 1 (a config that loads but cannot start), a message on stderr naming the key
//! (or the file), and never a panic or a backtrace. No case may get as far as running.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::ctx::Ctx;
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "bad-configs",
    what: "37 broken configs: exit 2 (or 1 when it cannot start) naming the key, no panic",
    quick: true,
    run,
};

/// A valid config with places to edit: each `#MARKER` line is replaced by a case's text.
const BASE: &str = "capture:
  include:
    labels: [\"LABEL\"]
#CAPTURE
sinks:
  file:
    path: OUT/{container_name}.log
#FILE
#SINKS
#PIPELINE
checkpoint:
  state_dir: STATE
#CHECKPOINT
http:
  listen: LISTEN
#TOP
";

enum Input {
    /// The base with these (marker, text) edits.
    Edit(&'static [(&'static str, &'static str)]),
    /// This text as the whole file.
    Raw(&'static str),
    /// `-c` names a path that does not exist.
    Missing,
    /// `-c` names a directory.
    Directory,
    /// The base, listening on a port something else holds.
    PortInUse,
}

struct Case {
    name: &'static str,
    input: Input,
    exit: i32,
    /// What stderr must name (the key, or the file).
    names: &'static str,
}

const fn case(name: &'static str, input: Input, exit: i32, names: &'static str) -> Case {
    Case {
        name,
        input,
        exit,
        names,
    }
}

use Input::{Directory, Edit, Missing, PortInUse, Raw};

const CASES: &[Case] = &[
    // Wrong types.
    case(
        "duration-not-a-duration",
        Edit(&[("#CAPTURE", "  rotation_interval: soon")]),
        2,
        "capture.rotation_interval",
    ),
    case(
        "size-not-a-size",
        Edit(&[("#PIPELINE", "pipeline:\n  queue_bytes: lots")]),
        2,
        "pipeline.queue_bytes",
    ),
    case(
        "list-given-a-string",
        Edit(&[("#CAPTURE", "  exclude:\n    names: web-*")]),
        2,
        "capture.exclude.names",
    ),
    case(
        "number-given-a-string",
        Edit(&[("#FILE", "    max_open_files: many")]),
        2,
        "sinks.file.max_open_files",
    ),
    case(
        "map-given-a-list",
        Edit(&[("#TOP", "log: [info]")]),
        2,
        "log",
    ),
    case(
        "bad-enum",
        Edit(&[("#FILE", "    fsync: sometimes")]),
        2,
        "sinks.file.fsync",
    ),
    // Zero, negative and huge durations and sizes.
    case(
        "rotation-zero",
        Edit(&[("#CAPTURE", "  rotation_interval: 0s")]),
        2,
        "capture.rotation_interval",
    ),
    case(
        "rotation-negative",
        Edit(&[("#CAPTURE", "  rotation_interval: -5s")]),
        2,
        "capture.rotation_interval",
    ),
    case(
        "rotation-huge",
        Edit(&[("#CAPTURE", "  rotation_interval: 99999999999999999999h")]),
        2,
        "capture.rotation_interval",
    ),
    case(
        "shutdown-timeout-zero",
        Edit(&[("#PIPELINE", "pipeline:\n  shutdown_timeout: 0s")]),
        2,
        "pipeline.shutdown_timeout",
    ),
    case(
        "flush-interval-zero",
        Edit(&[("#PIPELINE", "pipeline:\n  flush_interval: 0ms")]),
        2,
        "pipeline.flush_interval",
    ),
    case(
        "checkpoint-interval-zero",
        Edit(&[("#CHECKPOINT", "  interval: 0ms")]),
        2,
        "checkpoint.interval",
    ),
    case(
        "max-line-zero",
        Edit(&[("#CAPTURE", "  max_line_bytes: 0")]),
        2,
        "capture.max_line_bytes",
    ),
    case(
        "max-line-negative",
        Edit(&[("#CAPTURE", "  max_line_bytes: -1")]),
        2,
        "capture.max_line_bytes",
    ),
    case(
        "max-line-huge",
        Edit(&[("#CAPTURE", "  max_line_bytes: 100TiB")]),
        2,
        "capture.max_line_bytes",
    ),
    case(
        "queue-too-small",
        Edit(&[("#PIPELINE", "pipeline:\n  queue_bytes: 1")]),
        2,
        "pipeline.queue_bytes",
    ),
    // Unknown keys.
    case(
        "unknown-top-key",
        Edit(&[("#TOP", "captur:\n  rotation_interval: 1s")]),
        2,
        "captur",
    ),
    case(
        "unknown-nested-key",
        Edit(&[("#CAPTURE", "  rotaton_interval: 1s")]),
        2,
        "rotaton_interval",
    ),
    case(
        "duplicate-key",
        Edit(&[("#TOP", "http:\n  listen: 127.0.0.1:1")]),
        2,
        "http",
    ),
    // The file itself.
    case("empty-file", Raw(""), 2, "empty"),
    case("only-comments", Raw("# nothing here\n\n"), 2, "empty"),
    case("missing-file", Missing, 2, "does-not-exist.yaml"),
    case("a-directory", Directory, 2, "a-directory"),
    // YAML syntax.
    case("unclosed-flow", Raw("capture: [unclosed\n"), 2, "line"),
    case(
        "bad-indentation",
        Raw("capture:\n  include:\n labels: [x]\n"),
        2,
        "line",
    ),
    case(
        "tab-indentation",
        Raw("capture:\n\trotation_interval: 1s\n"),
        2,
        "line",
    ),
    case("not-a-map", Raw("- just\n- a list\n"), 2, "map"),
    // Listen addresses and URLs.
    case(
        "listen-not-an-address",
        Edit(&[("#TOP", "#LISTEN")]),
        2,
        "http.listen",
    ),
    case(
        "listen-port-out-of-range",
        Edit(&[("#TOP", "#LISTEN99999")]),
        2,
        "http.listen",
    ),
    case("listen-port-in-use", PortInUse, 1, "address"),
    case(
        "loki-url-not-a-url",
        Edit(&[("#SINKS", "  loki:\n    url: not a url")]),
        2,
        "sinks.loki.url",
    ),
    case(
        "loki-url-bad-scheme",
        Edit(&[("#SINKS", "  loki:\n    url: ftp://127.0.0.1:3100/push")]),
        2,
        "sinks.loki.url",
    ),
    case(
        "docker-host-bad-scheme",
        Edit(&[("#TOP", "docker:\n  host: bogus://x")]),
        2,
        "docker.host",
    ),
    // Filters. Globs know only `*` and `?` (every other character is literal), so no glob is
    // malformed and the config holds no regular expression: label rules are what can be wrong.
    case(
        "empty-label",
        Edit(&[("#CAPTURE", "  exclude:\n    labels: [\"\"]")]),
        2,
        "capture.exclude.labels",
    ),
    case(
        "bad-label",
        Edit(&[("#CAPTURE", "  exclude:\n    labels: [\"=x\"]")]),
        2,
        "capture.exclude.labels",
    ),
    case(
        "bad-log-filter",
        Edit(&[("#TOP", "log:\n  level: \"info,[[\"")]),
        2,
        "log.level",
    ),
    case(
        "file-mode-too-wide",
        Edit(&[("#FILE", "    mode: \"7777\"")]),
        2,
        "sinks.file.mode",
    ),
];

fn run(ctx: &Ctx) -> Outcome {
    // The control: the base itself must be valid, or every case would fail for its sake.
    if let Err(e) = control(ctx) {
        return Outcome::fail(format!("the base config is not valid: {e}"));
    }
    let mut failures = Vec::new();
    let mut exit1 = 0;
    for (i, c) in CASES.iter().enumerate() {
        match check(ctx, i, c) {
            Ok(code) => exit1 += usize::from(code == 1),
            Err(e) => failures.push(format!("{}: {e}", c.name)),
        }
    }
    let passed = CASES.len() - failures.len();
    let note = if failures.is_empty() {
        format!(
            "every case refused as expected; messages in {}/*/stderr",
            ctx.out_dir.display()
        )
    } else {
        failures.join("; ")
    };
    Outcome {
        pass: failures.is_empty(),
        counts: Vec::new(),
        note,
    }
    .count("cases", CASES.len())
    .count("as_expected", passed)
    .count("exit_1", exit1)
}

/// `log-capturer validate` accepts the unedited base.
fn control(ctx: &Ctx) -> Result<(), String> {
    let dir = ctx.out_dir.join("control");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = log_capturer_testkit::free_port().map_err(|e| e.to_string())?;
    let config = dir.join("agent.yaml");
    write(
        &config,
        &fill(BASE, ctx, &dir, &format!("127.0.0.1:{port}")),
    )?;
    let out = Command::new(&ctx.agent_binary)
        .args(["validate", "-c"])
        .arg(&config)
        .output()
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs one case; its exit code when it behaved, the reason otherwise.
fn check(ctx: &Ctx, index: usize, c: &Case) -> Result<i32, String> {
    let dir = ctx.out_dir.join(format!("{index:02}-{}", c.name));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = log_capturer_testkit::free_port().map_err(|e| e.to_string())?;
    let mut listen = format!("127.0.0.1:{port}");
    // Held until the agent has exited: the port-in-use case.
    let mut _holder = None;
    let config = dir.join("agent.yaml");
    match &c.input {
        Edit(edits) => {
            let mut text = BASE.to_string();
            for (marker, with) in edits.iter() {
                if let Some(rest) = with.strip_prefix("#LISTEN") {
                    // Replaces the listen address itself.
                    listen = if rest.is_empty() {
                        "localhost-ish".into()
                    } else {
                        format!("127.0.0.1:{rest}")
                    };
                    continue;
                }
                text = text.replace(marker, with);
            }
            write(&config, &fill(&text, ctx, &dir, &listen))?;
        }
        Raw(text) => write(&config, text)?,
        Missing => {}
        Directory => std::fs::create_dir_all(dir.join("a-directory")).map_err(|e| e.to_string())?,
        PortInUse => {
            let held = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            listen = held.local_addr().map_err(|e| e.to_string())?.to_string();
            _holder = Some(held);
            write(&config, &fill(BASE, ctx, &dir, &listen))?;
        }
    }
    let path = match &c.input {
        Missing => dir.join("does-not-exist.yaml"),
        Directory => dir.join("a-directory"),
        _ => config,
    };
    let stderr_path = dir.join("stderr");
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(&ctx.agent_binary)
        .args(["run", "-c"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("still running after 20 s: the config was accepted".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let mut problems = Vec::new();
    if status.code() != Some(c.exit) {
        problems.push(format!("{status}, expected exit {}", c.exit));
    }
    if text.contains("panicked") || text.contains("stack backtrace") {
        problems.push("a panic".into());
    }
    let names = if c.names == "address" {
        listen.as_str()
    } else {
        c.names
    };
    if !text.contains(names) {
        problems.push(format!("stderr does not name {names:?}"));
    }
    if problems.is_empty() {
        Ok(c.exit)
    } else {
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no stderr)");
        Err(format!("{} (stderr: {:?})", problems.join(", "), last))
    }
}

fn fill(text: &str, ctx: &Ctx, dir: &Path, listen: &str) -> String {
    text.replace("LABEL", &ctx.label())
        .replace("OUT", &dir.join("out").display().to_string())
        .replace("STATE", &dir.join("state").display().to_string())
        .replace("LISTEN", listen)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
