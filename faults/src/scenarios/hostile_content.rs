//! Scenario 10, hostile content: each container prints one kind of awkward output, and each
//! record must come out as the README's "Records" section says: a line is merged from Docker's
//! 16 KiB pieces up to `capture.max_line_bytes` (256 KiB) and cut there with
//! `"truncated": true`; invalid UTF-8 becomes U+FFFD and the line is kept; a TTY container's
//! `\r\n` is stripped and its stream is `tty`; a line without a final newline is written when
//! the container stops; each stream's pieces merge on their own even with the other stream's
//! lines between them. Everything else (NUL, a lone `\r`, ANSI escapes) is kept byte for byte.

use std::time::Duration;

use crate::ctx::{AgentYaml, Ctx};
use crate::scenario::{Outcome, Scenario};

pub const SCENARIO: Scenario = Scenario {
    name: "hostile-content",
    what: "1 MiB, 16 384 and 16 385-byte lines, bad UTF-8, NUL, lone CR, ANSI, no final newline, TTY, interleaved pieces",
    quick: true,
    run,
};

/// `capture.max_line_bytes` default (README).
const MAX_LINE: usize = 256 * 1024;

/// `n` copies of `c`, as the busybox shell makes them.
fn repeat_sh(n: usize, c: char) -> String {
    format!("head -c {n} /dev/zero | tr '\\0' {c}")
}

/// One expected record: stream, message, truncated.
type Want = (&'static str, String, bool);

struct Case {
    name: &'static str,
    docker: &'static [&'static str],
    script: String,
    want: Vec<Want>,
}

fn cases() -> Vec<Case> {
    let s = |m: &str| ("stdout", m.to_string(), false);
    vec![
        Case {
            name: "line-1mib",
            docker: &[],
            script: format!("{}; echo; echo after", repeat_sh(1 << 20, 'a')),
            want: vec![("stdout", "a".repeat(MAX_LINE), true), s("after")],
        },
        Case {
            name: "line-16384",
            docker: &[],
            script: format!("{}; echo; echo after", repeat_sh(16_384, 'b')),
            want: vec![s(&"b".repeat(16_384)), s("after")],
        },
        Case {
            name: "line-16385",
            docker: &[],
            script: format!("{}; echo; echo after", repeat_sh(16_385, 'c')),
            want: vec![s(&"c".repeat(16_385)), s("after")],
        },
        Case {
            name: "invalid-utf8",
            docker: &[],
            script: r"printf 'ok \377\376 end\n'; printf 'cut \342\202\n'; echo after".into(),
            want: vec![s("ok \u{FFFD}\u{FFFD} end"), s("cut \u{FFFD}"), s("after")],
        },
        Case {
            name: "nul-bytes",
            docker: &[],
            script: r"printf 'a\000b\000\n'; echo after".into(),
            want: vec![s("a\0b\0"), s("after")],
        },
        Case {
            name: "lone-cr",
            docker: &[],
            script: r"printf 'one\rtwo\n'; printf 'three\r\n'; echo after".into(),
            want: vec![s("one\rtwo"), s("three\r"), s("after")],
        },
        Case {
            name: "ansi-escapes",
            docker: &[],
            script: r"printf '\033[31mred\033[0m \033]0;title\007\n'; echo after".into(),
            want: vec![s("\u{1b}[31mred\u{1b}[0m \u{1b}]0;title\u{7}"), s("after")],
        },
        Case {
            name: "no-final-newline",
            docker: &[],
            script: "echo first; printf 'last without newline'".into(),
            want: vec![s("first"), s("last without newline")],
        },
        Case {
            name: "tty",
            docker: &["-t"],
            script: r"printf 'tty one\ntty two\n'; printf 'tty cr\rmid\n'".into(),
            want: vec![
                ("tty", "tty one".into(), false),
                ("tty", "tty two".into(), false),
                ("tty", "tty cr\rmid".into(), false),
            ],
        },
        Case {
            // 20 000 bytes of stdout (one 16 KiB piece goes out, the rest waits), a stderr
            // line, more stdout, another stderr line, the end of the stdout line.
            name: "interleaved-pieces",
            docker: &[],
            script: format!(
                "{a}; usleep 200000; echo err1 >&2; usleep 200000; {b}; usleep 200000; \
                 echo err2 >&2; usleep 200000; echo end",
                a = repeat_sh(20_000, 'x'),
                b = repeat_sh(20_000, 'y'),
            ),
            want: vec![
                ("stderr", "err1".into(), false),
                ("stderr", "err2".into(), false),
                s(&format!("{}{}end", "x".repeat(20_000), "y".repeat(20_000))),
            ],
        },
    ]
}

fn run(ctx: &Ctx) -> Outcome {
    check(ctx).unwrap_or_else(Outcome::fail)
}

fn check(ctx: &Ctx) -> Result<Outcome, String> {
    let mut agent = ctx.start_agent("agent", &AgentYaml::default())?;
    let cases = cases();
    let mut names = Vec::new();
    for c in &cases {
        names.push(ctx.run_container(c.name, c.docker, &c.script)?);
    }
    for name in &names {
        ctx.wait_exited(name, Duration::from_secs(60))?;
    }
    let mut problems = Vec::new();
    for (c, name) in cases.iter().zip(&names) {
        if !agent.wait_records(name, c.want.len(), Duration::from_secs(60)) {
            problems.push(format!(
                "{}: fewer than {} records after 60 s",
                c.name,
                c.want.len()
            ));
        }
    }
    let exit = agent.terminate(Duration::from_secs(40))?;
    if !exit.success() {
        problems.push(format!("SIGTERM: {exit}"));
    }
    if agent.log().contains("panicked") {
        problems.push("the agent panicked".into());
    }
    let mut exact = 0;
    for (c, name) in cases.iter().zip(&names) {
        let records = agent.records(name)?;
        let got: Vec<(String, String, bool)> = records
            .iter()
            .map(|r| {
                (
                    r["stream"].as_str().unwrap_or("?").to_string(),
                    one_replacement(r["message"].as_str().unwrap_or("<no message>")),
                    r["truncated"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        // Order matters within a stream only: the other stream's lines may come between.
        let per_stream = |v: &[(String, String, bool)], stream: &str| -> Vec<(String, bool)> {
            v.iter()
                .filter(|r| r.0 == stream)
                .map(|r| (r.1.clone(), r.2))
                .collect()
        };
        let want: Vec<(String, String, bool)> = c
            .want
            .iter()
            .map(|(s, m, t)| (s.to_string(), one_replacement(m), *t))
            .collect();
        let same = ["stdout", "stderr", "tty"]
            .iter()
            .all(|s| per_stream(&got, s) == per_stream(&want, s))
            && got.len() == want.len();

        if same {
            exact += 1;
        } else {
            problems.push(format!(
                "{}: got {}, want {}",
                c.name,
                show(&got),
                show(&want)
            ));
        }
    }
    let note = "every record as the README says (truncation at 256 KiB, U+FFFD, tty CRLF stripped, pieces merged per stream)";
    Ok(Outcome::judge(problems, note)
        .count("cases", cases.len())
        .count("exact", exact))
}

/// The README promises U+FFFD for invalid UTF-8, not how many: one per bad byte and one per
/// maximal bad sequence both keep it, so runs of U+FFFD compare as one.
fn one_replacement(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for c in m.chars() {
        if !(c == '\u{FFFD}' && out.ends_with('\u{FFFD}')) {
            out.push(c);
        }
    }
    out
}

/// Records, short: long messages by length and first character.
fn show(records: &[(String, String, bool)]) -> String {
    let items: Vec<String> = records
        .iter()
        .map(|(s, m, t)| {
            let m = if m.len() > 40 {
                format!("{}x{}", m.chars().next().unwrap_or(' '), m.len())
            } else {
                format!("{m:?}")
            };
            format!("{s}:{m}{}", if *t { "(truncated)" } else { "" })
        })
        .collect();
    format!("[{}]", items.join(", "))
}
