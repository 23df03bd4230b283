//! What the Kafka end-to-end tests check in what they read back: the numbered lines of each
//! container, the crash window after a SIGKILL, and what a process's descriptors are.

use std::collections::{BTreeMap, BTreeSet};

use log_capturer_testkit::kafka::Consumed;
use log_capturer_testkit::status_field;

/// The `message` of a consumed NDJSON record.
pub fn message(c: &Consumed) -> String {
    let v: serde_json::Value = serde_json::from_slice(&c.value).unwrap_or_else(|e| {
        panic!(
            "not an NDJSON record {:?}: {e}",
            String::from_utf8_lossy(&c.value)
        )
    });
    v["message"].as_str().unwrap_or_default().to_string()
}

/// One container's numbered lines as consumed (partition order), and its partitions.
#[derive(Default, Debug)]
pub struct Seen {
    pub partitions: BTreeSet<i32>,
    pub seqs: Vec<u64>,
}

pub fn by_container(consumed: &[Consumed]) -> BTreeMap<String, Seen> {
    let mut out: BTreeMap<String, Seen> = BTreeMap::new();
    for c in consumed {
        let m = message(c);
        let (name, seq) = m
            .rsplit_once(' ')
            .and_then(|(n, s)| Some((n.to_string(), s.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("not a numbered line: {m:?}"));
        let seen = out.entry(name).or_default();
        seen.partitions.insert(c.partition);
        seen.seqs.push(seq);
    }
    out
}

/// Every container in `names` has each of its lines 1..=n at least once.
pub fn complete(consumed: &[Consumed], names: &[String], n: u64) -> bool {
    let seen = by_container(consumed);
    names.iter().all(|name| {
        seen.get(name)
            .is_some_and(|s| s.seqs.iter().collect::<BTreeSet<_>>().len() as u64 == n)
    })
}

/// Every container in `names` has at least `n` messages.
pub fn at_least(consumed: &[Consumed], names: &[String], n: usize) -> bool {
    let seen = by_container(consumed);
    names
        .iter()
        .all(|name| seen.get(name).is_some_and(|s| s.seqs.len() >= n))
}

/// What a process's descriptors are: TCP sockets by state (`tcp:01` established, `tcp:02`
/// connecting, …), other sockets, pipes, anonymous inodes, files by path; and its threads.
pub fn fd_profile(pid: u32) -> String {
    let mut tcp = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if let (Some(state), Some(inode)) = (cols.get(3), cols.get(9)) {
                tcp.insert(inode.to_string(), state.to_string());
            }
        }
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten();
    for entry in entries.flatten() {
        let target = std::fs::read_link(entry.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let kind = match target.strip_prefix("socket:[") {
            Some(inode) => match tcp.get(inode.trim_end_matches(']')) {
                Some(state) => format!("tcp:{state}"),
                None => "socket".to_string(),
            },
            None if target.starts_with("pipe:") => "pipe".to_string(),
            None => target,
        };
        *kinds.entry(kind).or_default() += 1;
    }
    format!("{kinds:?}, {} threads", status_field(pid, "Threads:"))
}

/// The crash window after a SIGKILL, for one container's lines in partition order (`seqs`):
/// every line 1..=n present; first occurrences in increasing order without gaps; a line seen
/// again is a line the killed agent had read (seq <= `printed_at_kill`), and the lines seen again
/// form at most two contiguous replays — the lines acknowledged after the last checkpoint write
/// (read again from Docker), and the messages purged into the buffer whose produce request the
/// broker had already taken when the outage cut the connection (sent again from the buffer).
/// Returns (duplicates, the runs of consecutive seqs).
pub fn check_crash_window(
    name: &str,
    seqs: &[u64],
    n: u64,
    printed_at_kill: u64,
) -> Result<(usize, Vec<(u64, u64)>), String> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match runs.last_mut() {
            Some(run) if s == run.1 + 1 => run.1 = s,
            _ => runs.push((s, s)),
        }
    }
    let (mut max, mut duplicates) = (0u64, 0usize);
    for &s in seqs {
        if s == max + 1 {
            max = s;
        } else if s > max {
            return Err(format!(
                "{name}: line {} missing or out of order (runs {runs:?})",
                max + 1
            ));
        } else if s > printed_at_kill {
            return Err(format!(
                "{name}: line {s} duplicated but printed after the kill (at {printed_at_kill}); runs {runs:?}"
            ));
        } else {
            duplicates += 1;
        }
    }
    if max != n {
        return Err(format!("{name}: lines after {max} missing (runs {runs:?})"));
    }
    if runs.len() > 3 {
        return Err(format!(
            "{name}: more replays than the crash window allows: runs {runs:?}"
        ));
    }
    Ok((duplicates, runs))
}

/// The crash-window check itself rejects what the outage test must catch: a lost line, a line
/// out of order, a duplicate of a line printed after the kill, and a third replay.
#[test]
fn crash_window_check_rejects_loss_reordering_and_late_duplicates() {
    let rejects = |seqs: Vec<u64>| check_crash_window("c", &seqs, 10, 6).is_err();
    let run = |a: u64, b: u64| (a..=b).collect::<Vec<u64>>();
    assert_eq!(
        check_crash_window("c", &run(1, 10), 10, 6),
        Ok((0, vec![(1, 10)]))
    );
    let replay = [run(1, 6), run(4, 10)].concat();
    assert_eq!(
        check_crash_window("c", &replay, 10, 6),
        Ok((3, vec![(1, 6), (4, 10)]))
    );
    assert!(rejects([run(1, 4), run(6, 10)].concat()), "a lost line");
    assert!(rejects(run(1, 9)), "the last line lost");
    assert!(
        rejects([run(1, 3), vec![5, 4], run(6, 10)].concat()),
        "reordered"
    );
    assert!(
        rejects([run(1, 8), run(7, 10)].concat()),
        "a duplicate printed after the kill"
    );
    let three = [run(1, 5), run(4, 5), run(3, 5), run(5, 10)].concat();
    assert!(rejects(three), "more replays than the window");
}
