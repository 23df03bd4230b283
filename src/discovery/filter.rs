//! Which containers to capture: include/exclude by name, label and image.

use std::collections::HashMap;

use crate::config::FilterConfig;
use crate::docker::types::ContainerSummary;

/// `*` matches any run of characters, `?` any one character; everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut star_t) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            star_t = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            star_t += 1;
            ti = star_t;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// What the filters look at.
pub struct Candidate<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub labels: &'a HashMap<String, String>,
}

/// What a start event or a listing said about a container: enough to name it, and to apply
/// the filters, when it is gone before it can be inspected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
}

impl Seen {
    /// From a container event's attributes: `name`, `image`, and the container's labels, which
    /// Docker puts among them. None without a name.
    pub fn from_event_attributes(attributes: &HashMap<String, String>) -> Option<Seen> {
        let name = attributes.get("name")?.trim_start_matches('/').to_string();
        let image = attributes.get("image").cloned().unwrap_or_default();
        let labels = attributes
            .iter()
            .filter(|(k, _)| *k != "name" && *k != "image")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Some(Seen {
            name,
            image,
            labels,
        })
    }

    /// From a container listing entry. None without a name.
    pub fn from_summary(c: &ContainerSummary) -> Option<Seen> {
        Some(Seen {
            name: c.name()?.to_string(),
            image: c.image.clone(),
            labels: c.labels.clone().unwrap_or_default(),
        })
    }

    pub fn candidate(&self) -> Candidate<'_> {
        Candidate {
            name: &self.name,
            image: &self.image,
            labels: &self.labels,
        }
    }
}

fn label_matches(rule: &str, labels: &HashMap<String, String>) -> bool {
    match rule.split_once('=') {
        None => labels.contains_key(rule),
        Some((key, pattern)) => labels.get(key).is_some_and(|v| glob_match(pattern, v)),
    }
}

impl FilterConfig {
    fn is_empty(&self) -> bool {
        self.names.is_empty() && self.labels.is_empty() && self.images.is_empty()
    }
    fn name_hit(&self, c: &Candidate) -> bool {
        self.names.iter().any(|p| glob_match(p, c.name))
    }
    fn label_hit(&self, c: &Candidate) -> bool {
        self.labels.iter().any(|r| label_matches(r, c.labels))
    }
    fn image_hit(&self, c: &Candidate) -> bool {
        self.images.iter().any(|p| glob_match(p, c.image))
    }
}

/// Include: every non-empty list must have a match. Exclude: any match excludes.
pub fn selected(include: &FilterConfig, exclude: &FilterConfig, c: &Candidate) -> bool {
    let included = include.is_empty()
        || ((include.names.is_empty() || include.name_hit(c))
            && (include.labels.is_empty() || include.label_hit(c))
            && (include.images.is_empty() || include.image_hit(c)));
    let excluded = exclude.name_hit(c) || exclude.label_hit(c) || exclude.image_hit(c);
    included && !excluded
}

/// The id of the container this process runs in, if any (from the mount table Docker sets up).
pub fn own_container_id() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    find_container_id(&mountinfo)
}

fn find_container_id(mountinfo: &str) -> Option<String> {
    for line in mountinfo.lines() {
        // e.g. ".../docker/containers/<64 hex>/hostname /etc/hostname ..."
        if let Some(pos) = line.find("/containers/") {
            let rest = &line[pos + "/containers/".len()..];
            let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            if id.len() == 64 {
                return Some(id);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*-db-*", "prod-db-7"));
        assert!(!glob_match("web", "web-1"));
    }

    #[test]
    fn include_exclude() {
        let labels: HashMap<String, String> = [("team".to_string(), "core".to_string())]
            .into_iter()
            .collect();
        let c = Candidate {
            name: "web-1",
            image: "nginx:1.27",
            labels: &labels,
        };
        let none = FilterConfig::default();
        assert!(selected(&none, &none, &c));
        let inc = FilterConfig {
            names: vec!["web-*".into()],
            labels: vec!["team=co*".into()],
            images: vec![],
        };
        assert!(selected(&inc, &none, &c));
        let inc_bad = FilterConfig {
            labels: vec!["team=ops".into()],
            ..FilterConfig::default()
        };
        assert!(!selected(&inc_bad, &none, &c));
        let exc = FilterConfig {
            images: vec!["nginx:*".into()],
            ..FilterConfig::default()
        };
        assert!(!selected(&none, &exc, &c));
        let exc_label = FilterConfig {
            labels: vec!["team".into()],
            ..FilterConfig::default()
        };
        assert!(!selected(&none, &exc_label, &c));
    }

    #[test]
    fn seen_from_event_attributes() {
        let attributes: HashMap<String, String> =
            [("name", "web-1"), ("image", "nginx:1.27"), ("team", "core")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let seen = Seen::from_event_attributes(&attributes).expect("named");
        assert_eq!(
            (seen.name.as_str(), seen.image.as_str()),
            ("web-1", "nginx:1.27")
        );
        assert_eq!(seen.labels.len(), 1);
        let core = FilterConfig {
            labels: vec!["team=core".into()],
            ..FilterConfig::default()
        };
        let ops = FilterConfig {
            labels: vec!["team=ops".into()],
            ..FilterConfig::default()
        };
        let none = FilterConfig::default();
        assert!(selected(&core, &none, &seen.candidate()));
        assert!(!selected(&ops, &none, &seen.candidate()));
        assert_eq!(Seen::from_event_attributes(&HashMap::new()), None);
    }

    #[test]
    fn finds_own_container_id() {
        let id = "a".repeat(64);
        let line = format!(
            "612 600 0:30 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda rw"
        );
        assert_eq!(find_container_id(&line), Some(id));
        assert_eq!(find_container_id("1 2 0:1 / / rw - ext4 /dev/vda rw"), None);
    }
}
