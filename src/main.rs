//! `log-capturer run | validate | process | …` — see the README.

use clap::{CommandFactory, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use log_capturer::agent::Outcome;
use log_capturer::config::{Config, ConfigError, LogFormat, Overrides};
use log_capturer::reload::{
    ConfigSource, Control, LogLevelError, LogLevelSetter, ReloadRequest, ReloadSender,
};

/// How `--state-dir` and the environment override the config file (also in the README).
const OVERRIDES_HELP: &str = "\
Per-host overrides (flag > environment > config file > default; an empty variable is unset):
  checkpoint.state_dir  --state-dir DIR, LOG_CAPTURER_STATE_DIR
  http.listen           LOG_CAPTURER_HTTP_LISTEN
  docker.host           LOG_CAPTURER_DOCKER_HOST
  log.level             LOG_CAPTURER_LOG_LEVEL, else RUST_LOG";

#[derive(Parser)]
#[command(
    name = "log-capturer",
    version,
    about = "Captures Docker container logs, exactly once",
    after_help = OVERRIDES_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (with the embedded default config when no -c is given).
    #[command(after_help = OVERRIDES_HELP)]
    Run {
        /// Config file (YAML; see examples/config.yaml). Without it: the embedded default
        /// (`log-capturer default-config`).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// State directory (checkpoints, lock, Loki buffer and dead letters); overrides
        /// checkpoint.state_dir and LOG_CAPTURER_STATE_DIR.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Check a config file (with the LOG_CAPTURER_* overrides `run` would apply) and report
    /// the first problem with its key path.
    #[command(after_help = OVERRIDES_HELP)]
    Validate {
        /// Config file to check.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the embedded default config.
    DefaultConfig,
    /// Run sample lines (stdin, one message a line; a `docker logs --timestamps` prefix is
    /// taken as the line's timestamp) through a processing pipeline and print what each
    /// becomes: records (as the NDJSON the sinks write), drops and multiline groups. Exit 0:
    /// done; 1: an I/O error; 2: a config or usage error.
    Process {
        /// Config file whose processing.pipelines to try.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The pipeline to run, by name (default: the one whose match selects --container,
        /// --image and --label; without those, the first).
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
        /// The container the lines come from (for match and the records).
        #[arg(long, value_name = "NAME")]
        container: Option<String>,
        /// Its image (for match and the records).
        #[arg(long, value_name = "IMAGE")]
        image: Option<String>,
        /// One of its labels, KEY=VALUE (for match and processing.container_labels); repeatable.
        #[arg(long, value_name = "KEY=VALUE")]
        label: Vec<String>,
        /// The stream the lines come from.
        #[arg(long, value_enum, default_value = "stdout")]
        stream: ProcessStream,
        /// The lines are a host file's at this path: records as for sources.files (file,
        /// host, the fields of the first group that takes the path), through that group's
        /// pipeline (default; --pipeline overrides).
        #[arg(long, value_name = "PATH", conflicts_with_all = ["container", "image", "label", "stream"])]
        file: Option<String>,
        /// A field of the file's group, KEY=VALUE (added to or replacing the group's fields);
        /// repeatable; with --file.
        #[arg(long, value_name = "KEY=VALUE", requires = "file")]
        field: Vec<String>,
        /// text: `3: {record}`, `4: dropped by drop[1]`, `5-9: {record}` (a group);
        /// ndjson: `{"input":[5,9],"record":{...}}`, `{"input":[4,4],"dropped_by":"drop[1]"}`.
        #[arg(long, value_enum, default_value = "text")]
        format: ProcessFormat,
    },
    /// Show a running agent's containers (by lag) and sinks. Exit 0: healthy; 1: a sink is
    /// failing or a stream has not rotated for twice its interval; 3: no answer from the agent.
    Status {
        /// Print the raw JSON: {"containers": [...], "sinks": [...]}.
        #[arg(long)]
        json: bool,
        /// The agent's HTTP address, e.g. http://127.0.0.1:8001 (default: http.listen of the
        /// config given with -c, else of the embedded default config).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The agent's config file (for its http.listen).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Manage the dead letters of the Loki or Kafka sink (what Loki or the brokers refused). Run
    /// with the agent stopped.
    #[command(after_help = OVERRIDES_HELP)]
    Dlq {
        /// Config file of the agent whose dead letters these are (before or after the action:
        /// `dlq -c FILE list` and `dlq list -c FILE` both work).
        #[arg(short, long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        /// State directory holding the dead letters; overrides checkpoint.state_dir and
        /// LOG_CAPTURER_STATE_DIR.
        #[arg(long, value_name = "DIR", global = true)]
        state_dir: Option<PathBuf>,
        /// Whose dead letters: loki or kafka (default: the only network sink the config has).
        #[arg(long, value_enum, value_name = "SINK", global = true)]
        sink: Option<DlqSinkArg>,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProcessStream {
    Stdout,
    Stderr,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProcessFormat {
    Text,
    Ndjson,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DlqSinkArg {
    Loki,
    Kafka,
}

impl From<DlqSinkArg> for log_capturer::dlq::DlqSink {
    fn from(s: DlqSinkArg) -> Self {
        match s {
            DlqSinkArg::Loki => log_capturer::dlq::DlqSink::Loki,
            DlqSinkArg::Kafka => log_capturer::dlq::DlqSink::Kafka,
        }
    }
}

#[derive(Subcommand)]
enum DlqAction {
    /// One line per dead letter: id, when, entries (messages), the reason.
    List,
    /// The entries of one dead letter.
    Show {
        /// The dead letter's id, as `dlq list` prints it.
        id: String,
    },
    /// Send every dead letter again; accepted ones are removed.
    Replay,
    /// Delete every dead letter.
    Purge,
}

/// The overrides of this process: `--state-dir` (if given) over the `LOG_CAPTURER_*`
/// environment.
fn overrides(state_dir: Option<PathBuf>) -> Result<Overrides, ConfigError> {
    let mut overrides = Overrides::from_env()?;
    overrides.state_dir_flag(state_dir)?;
    Ok(overrides)
}

/// The config file (or the embedded default) with the overrides applied, and those overrides
/// (what a config reload must apply again); config errors are printed here, once.
fn load_config(
    path: Option<&Path>,
    state_dir: Option<PathBuf>,
) -> Result<(Config, Overrides), ExitCode> {
    overrides(state_dir)
        .and_then(|o| Ok((Config::load_with(path, &o)?, o)))
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config: path } => match load_config(Some(&path), None) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Dlq {
            config,
            state_dir,
            sink,
            action,
        } => {
            let sink = sink.map(log_capturer::dlq::DlqSink::from);
            let Some(path) = config else {
                // A usage error like clap's own (exit code 2), with `dlq`'s usage line.
                let mut cli = Cli::command();
                cli.build();
                let mut dlq = cli.find_subcommand("dlq").cloned().unwrap_or(cli);
                dlq.error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "dlq needs -c FILE, the config of the agent whose dead letters these are",
                )
                .exit();
            };
            let config = match load_config(Some(&path), state_dir) {
                Ok((c, _)) => c,
                Err(code) => return code,
            };
            let result = match action {
                DlqAction::List => log_capturer::dlq::list(&config, sink),
                DlqAction::Show { id } => log_capturer::dlq::show(&config, sink, &id),
                DlqAction::Purge => log_capturer::dlq::purge(&config, sink),
                DlqAction::Replay => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(log_capturer::dlq::DlqError::Runtime)
                    .and_then(|rt| rt.block_on(log_capturer::dlq::replay(&config, sink))),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { json, url, config } => {
            let url = match url {
                Some(url) => url,
                // The http.listen the agent runs with: the file (or the embedded default) and
                // the LOG_CAPTURER_* overrides.
                None => match load_config(config.as_deref(), None) {
                    Ok((c, _)) => c.http.listen,
                    Err(code) => return code,
                },
            };
            if url.is_empty() {
                eprintln!("error: http.listen is empty (the HTTP server is off): nothing to ask");
                return ExitCode::from(log_capturer::observability::status_client::EXIT_NO_STATUS);
            }
            ExitCode::from(log_capturer::observability::status_client::run(&url, json))
        }
        Command::Process {
            config,
            pipeline,
            container,
            image,
            label,
            stream,
            file,
            field,
            format,
        } => {
            use log_capturer::processing::try_run;
            let options = try_run::Options {
                pipeline,
                container,
                image,
                labels: label,
                stream: Some(match stream {
                    ProcessStream::Stdout => log_capturer::pipeline::StreamKind::Stdout,
                    ProcessStream::Stderr => log_capturer::pipeline::StreamKind::Stderr,
                }),
                format: match format {
                    ProcessFormat::Text => try_run::Format::Text,
                    ProcessFormat::Ndjson => try_run::Format::Ndjson,
                },
                file,
                fields: field,
            };
            let stdin = std::io::stdin().lock();
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let mut note = |n: &str| eprintln!("note: {n}");
            match try_run::run(&config, &options, stdin, stdout, &mut note) {
                Ok(summary) => {
                    eprintln!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(failure) => {
                    eprintln!("error: {}", failure.message);
                    ExitCode::from(failure.code)
                }
            }
        }
        Command::DefaultConfig => {
            print!("{}", log_capturer::config::DEFAULT_CONFIG_YAML);
            ExitCode::SUCCESS
        }
        Command::Run { config, state_dir } => {
            let (loaded, overrides) = match load_config(config.as_deref(), state_dir) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            // The loader the start used, kept for reloads (SIGHUP, POST /-/reload): the file
            // is read again and the same overrides are applied again.
            let source = ConfigSource {
                name: config.as_ref().map_or_else(
                    || "embedded default config".to_string(),
                    |path| path.display().to_string(),
                ),
                fixed: config.is_none(),
                load: {
                    let overrides = overrides.clone();
                    Box::new(move || Config::load_with(config.as_deref(), &overrides))
                },
            };
            let set_log_level = init_logging(&loaded);
            for (key, o) in overrides.iter() {
                tracing::info!(key, value = %o.value, from = %o.origin, "config key overridden");
            }
            run(loaded, source, set_log_level)
        }
    }
}

/// Installs the log subscriber; returns what a reload calls to change `log.level` at once.
fn init_logging(config: &Config) -> LogLevelSetter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `log.level` already holds LOG_CAPTURER_LOG_LEVEL or RUST_LOG (see `config::Overrides`;
    // a reload applies them again) and was validated with the config.
    let filter = log_capturer::config::log_filter(&config.log.level)
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Diagnostics go to stderr: stdout belongs to the stdout sink. Colours only on a terminal:
    // a file, journald or `docker logs` would keep the escape codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match config.log.format {
        LogFormat::Json => registry.with(layer.json()).init(),
        LogFormat::Text => registry.with(layer).init(),
    }
    Box::new(move |level: &str| {
        let filter = log_capturer::config::log_filter(level)
            .ok_or_else(|| LogLevelError::NotAFilter(level.to_string()))?;
        handle
            .reload(filter)
            .map_err(|e| LogLevelError::Reload(e.to_string()))?;
        Ok(None)
    })
}

/// Exit code of a run that stopped but left something behind (see `agent::Outcome`).
const EXIT_INCOMPLETE: u8 = 3;

/// How long the runtime waits, at exit, for blocking threads still running. A sink thread
/// blocked in a write that cannot be cancelled (a stdout nobody reads, a hung file system) was
/// abandoned at `pipeline.shutdown_timeout`; waiting for it would undo that deadline.
const RUNTIME_EXIT_GRACE: Duration = Duration::from_millis(500);

fn run(config: Config, source: ConfigSource, set_log_level: LogLevelSetter) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("log-capturer")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let (requester, requests) = log_capturer::reload::channel();
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                eprintln!("error: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let signals = tokio::spawn(wait_for_signal(signals, shutdown.clone(), requester.clone()));
        let control = Control {
            source,
            set_log_level: Some(set_log_level),
            requests,
            requester,
        };
        let result = log_capturer::agent::run(config, control, shutdown.clone()).await;
        shutdown.cancel();
        let _ = signals.await;
        match result {
            Ok(Outcome::Clean) => ExitCode::SUCCESS,
            Ok(Outcome::Incomplete(problems)) => {
                for problem in &problems {
                    tracing::error!(%problem, "stopped incompletely");
                }
                tracing::error!(
                    exit_code = EXIT_INCOMPLETE,
                    "stopped; what was not acknowledged or not checkpointed is read again at the next start"
                );
                ExitCode::from(EXIT_INCOMPLETE)
            }
            Err(e) => {
                // Once: through the log (its format, e.g. JSON), or on stderr if the log
                // filter drops errors.
                if tracing::enabled!(tracing::Level::ERROR) {
                    tracing::error!(error = %e, "agent failed to start");
                } else {
                    eprintln!("error: {e}");
                }
                ExitCode::FAILURE
            }
        }
    });
    runtime.shutdown_timeout(RUNTIME_EXIT_GRACE);
    code
}

/// The signals the agent handles, installed before anything else runs: a SIGHUP (`systemctl
/// reload`) that came while they were not yet installed would kill the process.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT and asks for a config reload on SIGHUP (or returns
/// when `shutdown` is cancelled otherwise).
async fn wait_for_signal(mut signals: Signals, shutdown: CancellationToken, reload: ReloadSender) {
    loop {
        tokio::select! {
            _ = signals.term.recv() => tracing::info!("SIGTERM received"),
            _ = signals.int.recv() => tracing::info!("SIGINT received"),
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP received: reloading the configuration");
                let request = ReloadRequest { origin: "SIGHUP", reply: None };
                if reload.try_send(request).is_err() {
                    // Full: reloads are already queued, and they read the file as it is then.
                    tracing::debug!("a reload is already pending; this SIGHUP joins it");
                }
                continue;
            }
            _ = shutdown.cancelled() => return,
        }
        break;
    }
    shutdown.cancel();
}
