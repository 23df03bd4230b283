/// The commented-out sink `name` of examples/config.yaml: its commented block (what it
/// documents) and the same lines uncommented, as a config (`sinks:\n  {name}: …`).
pub(super) fn example_sink(name: &str) -> (&'static str, String) {
    let text = include_str!("../../examples/config.yaml");
    let start =
        (text.find(&format!("  # {name}:\n"))).unwrap_or_else(|| panic!("{name} sink section"));
    let block_len: usize = (text[start..].lines())
        .take_while(|l| l.starts_with("  #"))
        .map(|l| l.len() + 1)
        .sum();
    let block = &text[start..(start + block_len).min(text.len())];
    let section: String = (block.lines())
        .map(|l| format!("{}\n", l.replacen("# ", "", 1)))
        .collect();
    (block, format!("sinks:\n{section}"))
}

#[test]
fn log_filters_with_blanks_and_multibyte_text_are_parsed_without_panic() {
    assert!(super::log_filter("info").is_some());
    assert!(super::log_filter(" warn, log_capturer=debug ").is_some());
    assert!(super::log_filter("info, log_capturer[capture]=trace").is_some());
    // Panicked inside tracing-subscriber before the directives were trimmed.
    assert!(super::log_filter(" é=info").is_none());
    assert!(super::log_filter("info,  ß[x]=debug").is_none());
    // Field filters: a regex blow-up, and a failed ordering invariant (a debug panic).
    assert!(super::log_filter("x[s{f=1}]=debug").is_none());
    let crash = String::from_utf8_lossy(include_bytes!(
        "../../fuzz/corpus/config_yaml/log-level-field-filter-ordering"
    ));
    assert!(crate::config::Config::parse(&crash, "crash.yaml").is_err());
    assert!(super::log_filter("info=nonsense=").is_none());
    // Compiled as a regex, this field value took minutes and more than 2 GiB.
    let hostile = String::from_utf8_lossy(include_bytes!(
        "../../fuzz/corpus/config_yaml/log-level-regex-blowup"
    ));
    let level = hostile
        .lines()
        .find_map(|l| l.trim().strip_prefix("level: "));
    let _ = super::log_filter(level.expect("level line"));
}

use super::*;

fn err(yaml: &str) -> String {
    match Config::parse(yaml, "test.yaml") {
        Ok(_) => panic!("expected an error for {yaml:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn embedded_default_parses() {
    let c = Config::parse(DEFAULT_CONFIG_YAML, "default").expect("default config");
    assert!(c.sinks.stdout.is_some());
    assert_eq!(c.http.listen, "127.0.0.1:8001");
}

#[test]
fn example_config_parses() {
    let text = include_str!("../../examples/config.yaml");
    Config::parse(text, "examples/config.yaml").expect("example config");
}

#[test]
fn more_labels_than_loki_takes_are_refused() {
    let yaml = |n: usize| {
        let fields: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
        format!(
            "sinks:\n  loki:\n    url: http://127.0.0.1:3100\n    labels: [container_name, stream]\n\
             processing:\n  pipelines:\n    - name: p\n      stages:\n        - labels: {{ fields: [{}] }}\n",
            fields.join(", ")
        )
    };
    assert!(Config::parse(&yaml(13), "test.yaml").is_ok());
    let e = err(&yaml(14));
    assert!(e.contains("processing.pipelines[0]"), "{e}");
    assert!(e.contains("at most 15"), "{e}");
}

/// The streams of host files carry `filename` besides the sink's labels: counted when
/// `sources.files` has groups (and for the pipelines they use), unless `labels` names the
/// path itself.
#[test]
fn the_filename_label_of_host_files_counts() {
    let yaml = |labels: &[&str], files: &str| {
        format!(
            "sinks:\n  loki:\n    url: http://127.0.0.1:3100\n    labels: [{}]\n{files}",
            labels.join(", ")
        )
    };
    let names: Vec<String> = (0..15).map(|i| format!("f{i}")).collect();
    let fifteen: Vec<&str> = names.iter().map(String::as_str).collect();
    let files = "sources:\n  files:\n    - include: [/var/log/*.log]\n";
    assert!(Config::parse(&yaml(&fifteen, ""), "test.yaml").is_ok());
    let e = err(&yaml(&fifteen, files));
    assert!(e.contains("sinks.loki") && e.contains("filename"), "{e}");
    let mut with_file = fifteen.clone();
    with_file[14] = "file";
    assert!(Config::parse(&yaml(&with_file, files), "test.yaml").is_ok());
    // A pipeline of a file group: its labels stages, the sink's and filename.
    let piped = |stage_fields: usize, group_pipeline: &str| {
        let fields: Vec<String> = (0..stage_fields).map(|i| format!("s{i}")).collect();
        format!(
            "{}sources:\n  files:\n    - include: [/var/log/*.log]\n      {group_pipeline}\n\
             processing:\n  pipelines:\n    - name: p\n      stages:\n        \
             - labels: {{ fields: [{}] }}\n",
            yaml(&["container_name", "stream"], ""),
            fields.join(", ")
        )
    };
    assert!(Config::parse(&piped(13, "pipeline: p"), "test.yaml").is_err());
    assert!(Config::parse(&piped(12, "pipeline: p"), "test.yaml").is_ok());
    assert!(Config::parse(&piped(13, "fields: { job: x }"), "test.yaml").is_ok());
}

#[test]
fn bad_duration_names_key_and_value() {
    let e = err("capture:\n  rotation_interval: 5x\n");
    assert!(e.contains("capture.rotation_interval"), "{e}");
    assert!(e.contains("\"5x\" is not a duration"), "{e}");
}

#[test]
fn unknown_key_is_rejected_with_path() {
    let e = err("capture:\n  rotation_intervl: 5s\n");
    assert!(e.contains("capture"), "{e}");
    assert!(e.contains("rotation_intervl"), "{e}");
}

#[test]
fn semantic_errors_name_key() {
    assert!(err("capture:\n  rotation_interval: 500ms\n").contains("capture.rotation_interval"));
    assert!(err("http:\n  listen: nope\n").contains("http.listen"));
    assert!(err("docker:\n  host: ftp://x\n").contains("docker.host"));
    assert!(
        err("capture:\n  include:\n    labels: ['=x']\n").contains("capture.include.labels[0]")
    );
    assert!(err("capture:\n  max_line_bytes: 12XB\n").contains("capture.max_line_bytes"));
    assert!(err("sinks: {}\n").contains("at least one sink"));
}

#[test]
fn file_sink_keys() {
    let c = Config::parse("sinks:\n  file: {}\n", "t").expect("defaults");
    let f = c.sinks.file.expect("file sink");
    assert_eq!(f.fsync, FileFsync::Interval);
    assert_eq!(f.fsync_interval.0, Duration::from_secs(1));
    assert_eq!((f.file_mode(), f.directory_mode()), (Ok(0o640), Ok(0o750)));
    assert_eq!(f.max_open_files, 1024);
    let c = Config::parse(
        "sinks:\n  file:\n    fsync: always\n    mode: \"0600\"\n    dir_mode: \"700\"\n",
        "t",
    )
    .expect("valid");
    let f = c.sinks.file.expect("file sink");
    assert_eq!(f.fsync, FileFsync::Always);
    assert_eq!((f.file_mode(), f.directory_mode()), (Ok(0o600), Ok(0o700)));
    assert!(err("sinks:\n  file:\n    fsync: sometimes\n").contains("sinks.file.fsync"));
    assert!(err("sinks:\n  file:\n    mode: \"0648\"\n").contains("sinks.file.mode"));
    assert!(err("sinks:\n  file:\n    mode: \"4755\"\n").contains("sinks.file.mode"));
    assert!(err("sinks:\n  file:\n    max_open_files: 0\n").contains("max_open_files"));
    let long = format!(
        "sinks:\n  file:\n    path: /x/{}{{container_name}}\n",
        "p".repeat(240)
    );
    assert!(err(&long).contains("sinks.file.path"));
}

#[test]
fn initial_position_values() {
    let c = Config::parse(
        "capture:\n  initial_position: beginning\nsinks:\n  stdout: {}\n",
        "t",
    )
    .expect("valid");
    assert_eq!(c.capture.initial_position, InitialPosition::Beginning);
    assert!(err("capture:\n  initial_position: middle\n").contains("capture.initial_position"));
}

#[test]
fn empty_file_is_refused() {
    for text in ["", "\n  \n", "# only a comment\n\n# another\n"] {
        let e = err(text);
        assert!(e.contains("test.yaml: the config file is empty"), "{e}");
    }
}

#[test]
fn duplicate_key_names_its_path() {
    let e = err("capture:\n  include:\n    names: [a]\n    names: [b]\n");
    assert!(e.starts_with("test.yaml: capture.include.names: "), "{e}");
    assert!(e.contains("duplicate mapping key"), "{e}");
    let e = err("sinks:\n  stdout: {}\nsinks:\n  stdout: {}\n");
    assert!(e.starts_with("test.yaml: sinks: "), "{e}");
    assert!(!e.contains('?'), "{e}");
}

#[test]
fn lifecycle_keys_have_defaults_and_limits() {
    let c = Config::parse("sinks:\n  stdout: {}\n", "t").expect("valid");
    assert_eq!(c.pipeline.shutdown_timeout.0, Duration::from_secs(20));
    assert_eq!(c.http.header_read_timeout.0, Duration::from_secs(10));
    assert_eq!(c.http.max_connections, 64);
    assert!(err("pipeline:\n  shutdown_timeout: 10ms\n").contains("pipeline.shutdown_timeout"));
    assert!(err("http:\n  max_connections: 0\n").contains("http.max_connections"));
    assert!(err("http:\n  header_read_timeout: 1ms\n").contains("http.header_read_timeout"));
}

#[test]
fn debug_output_shows_no_secret() {
    let yaml = "sinks:\n  loki:\n    url: http://127.0.0.1:3100/loki/api/v1/push\n    \
                basic_auth: { username: u, password: pw-s3cret-1 }\n    \
                headers: { Authorization: tok-s3cret-2, X-Api-Key: key-s3cret-3 }\n";
    let c = Config::parse(yaml, "t").expect("valid");
    let loki = c.sinks.loki.as_ref().expect("loki");
    assert_eq!(
        loki.basic_auth.as_ref().map(|a| a.password.expose()),
        Some("pw-s3cret-1")
    );
    let shown = format!("{c:?} {c:#?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        shown.contains("X-Api-Key"),
        "header names stay visible: {shown}"
    );

    let yaml = "sinks:\n  loki:\n    bearer_token: tok-s3cret-4\n";
    let c = Config::parse(yaml, "t").expect("valid");
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn listen_accepts_host_names() {
    for ok in [
        "",
        "127.0.0.1:8001",
        "[::1]:8001",
        "0.0.0.0:0",
        "localhost:8001",
        "metrics.example-host.internal:9100",
    ] {
        let c = Config::parse(
            &format!("sinks:\n  stdout: {{}}\nhttp:\n  listen: \"{ok}\"\n"),
            "t",
        );
        assert!(c.is_ok(), "{ok}: {:?}", c.err());
    }
    for bad in [
        "nope",
        "localhost",
        ":8001",
        "localhost:",
        "localhost:99999",
        "local host:80",
        "a..b:80",
        "http://x:80",
    ] {
        let e = err(&format!("http:\n  listen: \"{bad}\"\n"));
        assert!(e.starts_with("test.yaml: http.listen: "), "{bad}: {e}");
    }
}

#[test]
fn log_level_accepts_aliases_and_refuses_bare_non_levels() {
    for level in [
        "warning",
        "WARN",
        "err",
        "critical",
        "fatal",
        "information",
        "warn,log_capturer=debug",
    ] {
        let c = Config::parse(&format!("log:\n  level: \"{level}\"\n"), "t");
        assert!(c.is_ok(), "{level}: {:?}", c.err());
    }
    let e = err("log:\n  level: verbose\n");
    assert!(e.starts_with("test.yaml: log.level: \"verbose\": "), "{e}");
    assert!(e.contains("not a level"), "{e}");
    // `warning` used to pass as a target and silence every line: it must now enable warn.
    use tracing::level_filters::LevelFilter;
    let filter = log_filter("warning").expect("alias");
    assert_eq!(filter.max_level_hint(), Some(LevelFilter::WARN));
}

#[test]
fn yaml_errors_show_the_file_name_and_say_error_once() {
    let e = err("capture:\n  rotation_interval: 5x\n");
    assert!(e.contains("--> test.yaml:2:22"), "{e}");
    assert!(!e.contains("<input>"), "{e}");
    assert!(!e.contains("error:"), "{e}");
}
