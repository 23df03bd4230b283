//! `log-capturer run | validate` — see the README.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use log_capturer::agent::Outcome;
use log_capturer::config::{Config, LogFormat};
use log_capturer::reload::{ConfigSource, Control, LogLevelSetter, ReloadRequest, ReloadSender};

#[derive(Parser)]
#[command(
    name = "log-capturer",
    version,
    about = "Captures Docker container logs, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (with the embedded default config when no -c is given).
    Run {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a config file and report the first problem with its key path.
    Validate {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the embedded default config.
    DefaultConfig,
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
    /// Manage the Loki sink's dead letters (batches Loki rejected). Run with the agent stopped.
    Dlq {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// One line per dead letter: id, when, entries, Loki's reason.
    List,
    /// The entries of one dead letter.
    Show { id: String },
    /// Send every dead letter again; accepted ones are removed.
    Replay,
    /// Delete every dead letter.
    Purge,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Dlq { config, action } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let result = match action {
                DlqAction::List => log_capturer::dlq::list(&config),
                DlqAction::Show { id } => log_capturer::dlq::show(&config, &id),
                DlqAction::Purge => log_capturer::dlq::purge(&config),
                DlqAction::Replay => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| rt.block_on(log_capturer::dlq::replay(&config))),
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
            let url = match (url, config) {
                (Some(url), _) => url,
                (None, Some(path)) => match Config::load(&path) {
                    Ok(c) => c.http.listen,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                },
                (None, None) => Config::embedded_default().http.listen,
            };
            if url.is_empty() {
                eprintln!("error: http.listen is empty (the HTTP server is off): nothing to ask");
                return ExitCode::from(log_capturer::observability::status_client::EXIT_NO_STATUS);
            }
            ExitCode::from(log_capturer::observability::status_client::run(&url, json))
        }
        Command::DefaultConfig => {
            print!("{}", log_capturer::config::DEFAULT_CONFIG_YAML);
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            // The loader the start uses, kept for reloads (SIGHUP, POST /-/reload): whatever
            // it applies is applied again at each reload.
            let source = match config {
                Some(path) => ConfigSource {
                    name: path.display().to_string(),
                    load: Box::new(move || Config::load(&path).map_err(|e| e.to_string())),
                    fixed: false,
                },
                None => ConfigSource {
                    name: "embedded default config".to_string(),
                    load: Box::new(|| Ok(Config::embedded_default())),
                    fixed: true,
                },
            };
            let config = match (source.load)() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let set_log_level = init_logging(&config);
            run(config, source, set_log_level)
        }
    }
}

/// Installs the log subscriber; returns what a reload calls to change `log.level` at once.
fn init_logging(config: &Config) -> LogLevelSetter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| log_capturer::config::log_filter(&spec));
    let overridden = from_env.is_some();
    let filter = from_env
        .or_else(|| log_capturer::config::log_filter(&config.log.level))
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
        if overridden {
            return Ok(Some("RUST_LOG is set and overrides it".to_string()));
        }
        let filter = log_capturer::config::log_filter(level)
            .ok_or_else(|| format!("{level:?} is not a log filter"))?;
        handle.reload(filter).map_err(|e| e.to_string())?;
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
        let signals = tokio::spawn(wait_for_signal(shutdown.clone(), requester.clone()));
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
                tracing::error!(error = %e, "agent failed to start");
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    });
    runtime.shutdown_timeout(RUNTIME_EXIT_GRACE);
    code
}

/// Cancels `shutdown` on SIGTERM or SIGINT (or returns when it is cancelled otherwise); asks
/// for a config reload on SIGHUP.
async fn wait_for_signal(shutdown: CancellationToken, reload: ReloadSender) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(t), Ok(i), Ok(h)) => (t, i, h),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            shutdown.cancelled().await;
            return;
        }
    };
    loop {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = hup.recv() => {
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
