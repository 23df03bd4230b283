//! `log-capturer process --file PATH`: what the agent makes of a host file's lines. The record
//! is the file's (`ContainerMeta::for_file`: `file`, `host`, the group's fields); the group is
//! the first of `sources.files` whose `include` globs take the path and whose `exclude` globs
//! do not, with `*` not crossing `/` and `**` any depth (the globs' meaning in `sources.files`).

use std::collections::BTreeMap;

use super::{Failure, Options, config_error, parse_pairs, processor_named};
use crate::config::{Config, SourcesConfig};
use crate::pipeline::ContainerMeta;
use crate::processing::{Pipelines, ProcessingMetrics, Processor};

/// The file's metadata and the processor its lines go through (None: unchanged).
pub(super) fn choose(
    config: &Config,
    pipelines: &Pipelines,
    options: &Options,
    path: &str,
    metrics: &ProcessingMetrics,
    notes: &mut dyn FnMut(&str),
) -> Result<(ContainerMeta, Option<Processor>), Failure> {
    let group = group_for(&config.sources, path)?;
    let mut fields: BTreeMap<String, String> = group
        .map(|i| config.sources.files[i].fields.clone())
        .unwrap_or_default();
    fields.extend(parse_pairs("--field", &options.fields)?);
    let meta = ContainerMeta::for_file(
        String::new(),
        path.to_string(),
        crate::sinks::loki::encode::this_hostname(),
        fields.into_iter().collect(),
    );
    if let Some(wanted) = &options.pipeline {
        let processor =
            processor_named(pipelines, wanted, &format!("--pipeline {wanted}"), metrics)?;
        return Ok((meta, processor));
    }
    let processor = match group {
        None => {
            notes(&format!(
                "no group of sources.files takes {path:?} (the agent would not read it): its \
                 lines pass unchanged"
            ));
            None
        }
        Some(i) => match &config.sources.files[i].pipeline {
            Some(name) => processor_named(
                pipelines,
                name,
                &format!("sources.files[{i}].pipeline {name}"),
                metrics,
            )?,
            None => {
                notes(&format!(
                    "sources.files[{i}] takes {path:?} and has no pipeline: its lines pass \
                     unchanged"
                ));
                None
            }
        },
    };
    Ok((meta, processor))
}

/// The first group of `sources.files` that takes `path`: the file source's own matcher
/// (include minus exclude globs; a compressed rotated file only with `include_compressed`).
fn group_for(sources: &SourcesConfig, path: &str) -> Result<Option<usize>, Failure> {
    let matcher = crate::sources::files::matcher::Matcher::new(sources)
        .map_err(|e| config_error(e.to_string()))?;
    Ok(matcher.group_of(std::path::Path::new(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(yaml: &str) -> SourcesConfig {
        Config::parse(&format!("sources:\n  files:\n{yaml}"), "t")
            .expect("config")
            .sources
    }

    #[test]
    fn the_first_group_that_takes_the_path_wins() {
        let s = sources(
            "    - include: ['/var/log/**/*.log']\n      exclude: ['/var/log/nginx/*']\n\
             \x20   - include: ['/var/log/*', '/var/log/nginx/*.log', '/srv/{a,b}/*.txt']\n",
        );
        let group = |p: &str| group_for(&s, p).expect("globs");
        assert_eq!(group("/var/log/app.log"), Some(0));
        assert_eq!(group("/var/log/x/y/app.log"), Some(0));
        assert_eq!(
            group("/var/log/nginx/access.log"),
            Some(1),
            "excluded from 0"
        );
        assert_eq!(group("/var/log/syslog"), Some(1));
        assert_eq!(group("/var/log/nginx/old/x.gz"), None, "* does not cross /");
        assert_eq!(group("/srv/b/notes.txt"), Some(1));
        assert_eq!(group("/srv/c/notes.txt"), None);
        assert_eq!(group("/var/log/syslog.2.gz"), None, "compressed");
        let s = sources("    - include: ['/var/log/*']\n      include_compressed: true\n");
        assert_eq!(
            group_for(&s, "/var/log/syslog.2.gz").expect("globs"),
            Some(0)
        );
    }

    #[test]
    fn a_bad_glob_is_an_error_naming_it() {
        // Built directly: the config's own check refuses such a glob at load, naming its key
        // (`sources.files[0].include[0]`, tested with the config).
        let s = SourcesConfig {
            files: vec![crate::config::FileGroupConfig {
                include: vec!["/var/log/[x".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = group_for(&s, "/var/log/x").expect_err("bad glob");
        assert!(err.message.contains("/var/log/[x"), "{}", err.message);
    }
}
