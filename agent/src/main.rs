//! The `redflag-agent` command line: register with a server, run the agent, validate its
//! config, or show its status.
//!
//! Exit codes: 0 on success (and after SIGTERM/SIGINT), 1 when `register`, `check-config` or
//! `status` fails, 2 for command-line usage errors (clap), 78 (EX_CONFIG) when `run` cannot
//! start because of its config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use rand::SeedableRng;
use rand::rngs::StdRng;

use redflag_agent::checkin::{CheckinLoop, Settings, SystemHost};
use redflag_agent::config::{self, Config};
use redflag_agent::events::NoObserver;
use redflag_agent::logging::{self, LogFormat};
use redflag_agent::register::{self, RegisterOptions};
use redflag_agent::secret::Secret;
use redflag_agent::store::{self, FileStore};
use redflag_agent::transport::ReqwestTransport;

const EX_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(name = "redflag-agent", version, about = "RedFlag agent check-in loop that never gives up")]
struct Cli {
    /// The agent's JSON config file.
    #[arg(long, short = 'c', global = true, default_value = config::DEFAULT_CONFIG_PATH, value_name = "FILE")]
    config: PathBuf,

    /// Log output format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides it).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    log_level: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the default).
    Run,
    /// Validate the config and print the effective settings.
    CheckConfig,
    /// Print the last successful check-in, consecutive failures and breaker state.
    Status,
    /// Register this host with a RedFlag server and write the config file (mode 0600).
    Register {
        /// The server's URL, e.g. http://redflag.example:8080; written to the config as given.
        #[arg(long, value_name = "URL")]
        server: String,
        /// A registration token from the RedFlag dashboard (or REDFLAG_REGISTRATION_TOKEN, which
        /// keeps it out of the process list).
        #[arg(long, value_name = "TOKEN", env = "REDFLAG_REGISTRATION_TOKEN", hide_env_values = true)]
        registration_token: String,
        /// Replace a config file that already holds a registered agent.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => check_config(&cli.config),
        Command::Status => status(&cli.config),
        Command::Register { server, registration_token, force } => {
            let opts = RegisterOptions { server, registration_token: Secret::new(registration_token), config_path: cli.config, force };
            register_host(&opts)
        }
        Command::Run => run(&cli.config, cli.log_format, &cli.log_level),
    }
}

fn register_host(opts: &RegisterOptions) -> ExitCode {
    match register::register(opts) {
        Ok(r) => {
            println!("registered with {} as agent {}", r.server_url, r.agent_id);
            println!("config written to {} (mode 0600)", r.config_path.display());
            println!("start the agent: redflag-agent --config {}", r.config_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            println!("{}: valid\n", path.display());
            print!("{}", config.describe());
            for w in &config.warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match store::read_status(&config.state_dir) {
        Ok(None) => {
            println!(
                "agent {}: no status recorded yet in {} (the agent has not completed an attempt)",
                config.agent_id,
                config.state_dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(Some(s)) => {
            let ago = |t: &Option<String>| match t {
                None => "never".to_string(),
                Some(t) => match humantime::parse_rfc3339_weak(t).ok().and_then(|at| SystemTime::now().duration_since(at).ok()) {
                    Some(d) => format!("{t} ({} ago)", humantime::format_duration(Duration::from_secs(d.as_secs()))),
                    None => t.clone(),
                },
            };
            println!("agent:                    {}", s.agent_id);
            println!("last successful check-in: {}", ago(&s.last_success));
            println!("last attempt:             {}", ago(&s.last_attempt));
            println!("consecutive failures:     {}", s.consecutive_failures);
            println!("circuit breaker:          {}", s.breaker);
            println!("last error:               {}", s.last_error.as_deref().unwrap_or("none"));
            println!("agent version:            {}", s.agent_version);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path, format: LogFormat, level: &str) -> ExitCode {
    if let Err(e) = logging::init(format, level) {
        eprintln!("error: {e}");
        return ExitCode::from(EX_CONFIG);
    }
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    for w in &config.warnings {
        tracing::warn!("config: {w}");
    }
    let transport = match ReqwestTransport::new(&config) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Err(e) = FileStore::prepare(&config.state_dir) {
        tracing::warn!("{e}; `redflag-agent status` will have nothing to show");
    }
    let store = FileStore::new(path, &config.state_dir);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = match shutdown_signal() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let agent = CheckinLoop::new(
            Settings::from_config(&config),
            transport,
            store,
            SystemHost::new(),
            NoObserver,
            StdRng::from_os_rng(),
        );
        agent.run(shutdown).await;
        ExitCode::SUCCESS
    })
}

/// Completes on SIGTERM or SIGINT. Handlers are installed before the loop starts, so a signal
/// that arrives during the first request is not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            biased;
            _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
            _ = int.recv() => tracing::info!("SIGINT received; stopping"),
        }
    })
}
