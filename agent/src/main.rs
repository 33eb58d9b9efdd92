//! The `redflag-agent` command line: register with a server, run the agent, validate its
//! config, or show its status.
//!
//! Exit codes: 0 on success (and after SIGTERM/SIGINT), 1 when `register`, `check-config` or
//! `status` fails, 2 for command-line usage errors (clap, an invalid `--log-level` or
//! `RUST_LOG`), 78 (EX_CONFIG) when `run` cannot start because of its config. `run` itself
//! (signals, reloads, start-up checks) lives in `cli/run.rs`, `register` in `cli/register.rs`.
//! Output to a closed stdout or stderr is dropped, never a panic.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

use redflag_agent::config::{self, Config};
use redflag_agent::log::format::LogFormat;
use redflag_agent::log::setup;
use redflag_agent::cli::register::{self, RegisterOptions};
use redflag_agent::server::protocol::{AGENT_VERSION, PROTOCOL_VERSION};
use redflag_agent::server::secret::{Secret, redact_userinfo};
use redflag_agent::cli::run;
use redflag_agent::store;

/// `--version`: this build, and the RedFlag agent API it speaks (what it reports to the server
/// as its version: see `server/protocol.rs`).
static VERSION_TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("{AGENT_VERSION} (RedFlag agent API {PROTOCOL_VERSION})")
});

#[derive(Parser, Debug)]
#[command(name = "redflag-agent", version = VERSION_TEXT.as_str(), about = "RedFlag agent check-in loop that never gives up")]
struct Cli {
    /// The agent's JSON config file.
    #[arg(long, short = 'c', global = true, default_value = config::DEFAULT_CONFIG_PATH, value_name = "FILE")]
    config: PathBuf,

    /// Log output format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log level: error, warn (or warning), info, debug, trace or off (RUST_LOG overrides it).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL", value_parser = setup::parse_level)]
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
        Command::Run => run::run(&cli.config, cli.log_format, &cli.log_level),
    }
}

/// Prints to stdout; a closed stdout (`| head -1`) loses the text instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{ let _ = writeln!(std::io::stdout().lock(), $($arg)*); }};
}

/// Prints to stderr, the same way.
macro_rules! err {
    ($($arg:tt)*) => {{ let _ = writeln!(std::io::stderr().lock(), $($arg)*); }};
}

fn register_host(opts: &RegisterOptions) -> ExitCode {
    match register::register(opts) {
        Ok(r) => {
            out!("registered with {} as agent {}", redact_userinfo(&r.server_url), r.agent_id);
            out!("config written to {} (mode 0600)", r.config_path.display());
            out!("start the agent: redflag-agent --config {}", r.config_path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every check `run` makes before its first request (config, CA file, proxies), then the
/// effective settings and the warnings.
fn check_config(path: &std::path::Path) -> ExitCode {
    match run::prepare(path) {
        Ok((config, _transport)) => {
            out!("{}: valid\n", path.display());
            out!("{}", config.describe().trim_end());
            for w in config.warnings.iter().cloned().chain(store::state_dir_problem(&config.state_dir)) {
                out!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn status(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            err!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match store::read_status(&config.state_dir) {
        Ok(None) => {
            out!(
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
            out!("agent:                    {}", s.agent_id);
            out!("last successful check-in: {}", ago(&s.last_success));
            out!("last attempt:             {}", ago(&s.last_attempt));
            out!("consecutive failures:     {}", s.consecutive_failures);
            out!("circuit breaker:          {}", s.breaker);
            out!("last error:               {}", s.last_error.as_deref().unwrap_or("none"));
            out!("agent version:            {}", s.agent_version);
            if s.log_lines_dropped > 0 {
                out!("log lines dropped:        {} (the agent's stderr was closed or failing)", s.log_lines_dropped);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
