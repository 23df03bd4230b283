//! Accounts for every line: what the agent wrote against what the daemon served.

use std::collections::HashMap;
use std::path::Path;

use crate::docker::Served;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub served: usize,
    pub captured: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Captured lines of a stream not in the served order.
    pub out_of_order: usize,
}

impl Tally {
    pub fn add(&mut self, o: Tally) {
        self.served += o.served;
        self.captured += o.captured;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
    }
}

/// Compares one stream: `served` and `captured` are the messages in order.
pub fn compare(served: &[String], captured: &[String]) -> Tally {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for s in served {
        *counts.entry(s).or_default() += 1;
    }
    for c in captured {
        *counts.entry(c).or_default() -= 1;
    }
    let lost = counts
        .values()
        .filter(|v| **v > 0)
        .map(|v| *v as usize)
        .sum();
    let duplicated = counts
        .values()
        .filter(|v| **v < 0)
        .map(|v| (-*v) as usize)
        .sum();
    // Order: the captured lines that also were served must appear in served order.
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (i, s) in served.iter().enumerate() {
        position.entry(s).or_insert(i);
    }
    let mut last = None;
    let mut out_of_order = 0;
    for c in captured {
        if let Some(&p) = position.get(c.as_str()) {
            if last.is_some_and(|l| p < l) {
                out_of_order += 1;
            }
            last = Some(p);
        }
    }
    Tally {
        served: served.len(),
        captured: captured.len(),
        lost,
        duplicated,
        out_of_order,
    }
}

/// The agent's records for a container, split by stream (`stdout`+`tty` vs `stderr`).
pub fn captured(out_dir: &Path, container: &str) -> Result<(Vec<String>, Vec<String>), String> {
    let path = out_dir.join(format!("{container}.log"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{}: bad record: {e}", path.display()))?;
        let message = v["message"].as_str().unwrap_or_default().to_string();
        if v["stream"] == "stderr" {
            err.push(message);
        } else {
            out.push(message);
        }
    }
    Ok((out, err))
}

pub fn tally(out_dir: &Path, container: &str, served: &Served) -> Result<Tally, String> {
    let (out, err) = captured(out_dir, container)?;
    let mut t = compare(&served.stdout, &out);
    t.add(compare(&served.stderr, &err));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn counts_loss_duplicates_and_order() {
        let served = v(&["a", "b", "c", "d"]);
        assert_eq!(
            compare(&served, &served).lost + compare(&served, &served).duplicated,
            0
        );
        let t = compare(&served, &v(&["a", "b", "b", "d"]));
        assert_eq!((t.lost, t.duplicated, t.out_of_order), (1, 1, 0));
        let t = compare(&served, &v(&["a", "c", "b", "d"]));
        assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 0, 1));
    }
}
