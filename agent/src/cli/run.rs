//! The `run` command as a service: start-up checks, the check-in loop, signals and reloads.
//!
//! * [`prepare`] is everything `run` checks before its first request (the config file, the TLS
//!   CA file, the proxy URLs: building the HTTP client). `check-config` calls the same function,
//!   so it cannot say "valid" about a config `run` would refuse.
//! * [`run`] blocks the handled signals, installs the logger and the signal handlers, then
//!   prepares and runs the check-in loop until SIGTERM or SIGINT (exit 0).
//! * SIGHUP reloads: the file is read and checked again; if it is invalid, the error is logged
//!   and the agent carries on with the config it has; if nothing changed, that is logged; if it
//!   changed, the loop is restarted with the new config (its first attempt goes out at once).
//!
//! Start-up errors are written with `setup::fatal`, in the log's format, whatever the level.

use std::path::Path;
use std::process::ExitCode;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::checkin::{CheckinLoop, Io, Settings, SystemHost};
use crate::config::Config;
use crate::log::events::NoObserver;
use crate::log::format::LogFormat;
use crate::log::setup;
use crate::commands::runner::{ProductionRunner, TEST_COMMAND_DELAY_ENV};
use crate::cli::signals::{self, Received, Signals};
use crate::store::{FileStore, STATE_DIR_UNUSABLE};
use crate::server::transport::ReqwestTransport;

/// `run` could not start because of its config (EX_CONFIG).
pub const EX_CONFIG: u8 = 78;
/// Command-line usage: an invalid `--log-level` or `RUST_LOG` (EX_USAGE is 64; clap's is 2).
pub const EX_USAGE: u8 = 2;

/// Loads and checks the config at `path` and builds the HTTP client from it: every check `run`
/// makes before its first request.
pub fn prepare(path: &Path) -> Result<(Config, ReqwestTransport), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let transport = ReqwestTransport::new(&config.transport_options()?)?;
    Ok((config, transport))
}

/// `redflag-agent run`. Returns only on SIGTERM/SIGINT (0) or a start-up error.
pub fn run(path: &Path, format: LogFormat, level: &str) -> ExitCode {
    // First of all, so that a signal arriving while we start is held, not fatal.
    let mask = signals::block_early();
    signals::ignore_sigpipe();
    if let Err(e) = setup::init(format, level) {
        mask.release();
        setup::fatal(format, "usage_error", &e);
        return ExitCode::from(EX_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            mask.release();
            setup::fatal(format, "start_failed", &format!("cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let signals = {
        let _in_runtime = runtime.enter();
        Signals::install()
    };
    // Handlers are in place: a SIGTERM held since the start is delivered to them now.
    mask.release();
    let signals = match signals {
        Ok(s) => s,
        Err(e) => {
            setup::fatal(format, "start_failed", &format!("cannot install signal handlers: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let (config, transport) = match prepare(path) {
        Ok(ok) => ok,
        Err(e) => {
            setup::fatal(format, "config_error", &e);
            return ExitCode::from(EX_CONFIG);
        }
    };
    let runner = match ProductionRunner::from_env() {
        Ok(r) => r,
        Err(e) => {
            setup::fatal(format, "config_error", &e);
            return ExitCode::from(EX_CONFIG);
        }
    };
    log_warnings(&config);
    if !runner.test_delay.is_zero() {
        tracing::warn!(
            event = "config_warning",
            "{TEST_COMMAND_DELAY_ENV} is set: every command waits {} ms before it runs (a test hook)",
            runner.test_delay.as_millis()
        );
    }
    runtime.block_on(serve(path, config, transport, runner, signals))
}

fn log_warnings(config: &Config) {
    for w in &config.warnings {
        tracing::warn!(event = "config_warning", "config: {w}");
    }
    if let Err(e) = FileStore::prepare(&config.state_dir) {
        tracing::warn!(event = "state_dir_unavailable", "{e}: {STATE_DIR_UNUSABLE}");
    }
}

/// What ends one run of the check-in loop.
enum Next {
    Stop,
    Reload(Box<Config>, ReqwestTransport),
}

/// Runs the check-in loop, restarting it after a reload, until a stop signal.
async fn serve(
    path: &Path,
    mut config: Config,
    mut transport: ReqwestTransport,
    runner: ProductionRunner,
    mut signals: Signals,
) -> ExitCode {
    loop {
        let io = Io {
            transport,
            store: FileStore::new(path, &config.state_dir),
            host: SystemHost::new(),
            observer: NoObserver,
            runner: runner.clone(),
        };
        let agent = CheckinLoop::production(Settings::from_config(&config), io, StdRng::from_os_rng());
        let mut next = Next::Stop;
        agent.run(async { next = stop_or_reload(&mut signals, path, &config).await }).await;
        match next {
            Next::Stop => return ExitCode::SUCCESS,
            Next::Reload(new, new_transport) => {
                config = *new;
                transport = new_transport;
                log_warnings(&config);
            }
        }
    }
}

/// Waits for SIGTERM/SIGINT, or a SIGHUP that brings a valid, changed config.
async fn stop_or_reload(signals: &mut Signals, path: &Path, current: &Config) -> Next {
    loop {
        match signals.next().await {
            Received::Stop(name) => {
                tracing::info!(event = "signal", signal = name, "{name} received; stopping");
                return Next::Stop;
            }
            Received::Reload => match prepare(path) {
                Err(e) => tracing::error!(
                    event = "config_reload_failed",
                    signal = "SIGHUP",
                    "SIGHUP: not reloading, the config is invalid: {e}; the agent keeps running with the config it has"
                ),
                Ok((new, _)) if new == *current => tracing::info!(
                    event = "config_reloaded",
                    signal = "SIGHUP",
                    changed = false,
                    "SIGHUP: {} reloaded; nothing changed",
                    path.display()
                ),
                Ok((new, transport)) => {
                    tracing::info!(
                        event = "config_reloaded",
                        signal = "SIGHUP",
                        changed = true,
                        "SIGHUP: {} reloaded; the check-in loop restarts with the new config",
                        path.display()
                    );
                    return Next::Reload(Box::new(new), transport);
                }
            },
        }
    }
}
