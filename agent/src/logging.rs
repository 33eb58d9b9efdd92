//! Log output for the agent binary: human-readable text (default) or JSON lines, on stderr.
//!
//! The JSON form flattens each event's fields to the top level next to `timestamp`, `level`,
//! `target` and `message`, so `{"event":"attempt_failed","attempt":2,...}` is directly
//! machine-readable; the live chaos harness relies on that. The level comes from `--log-level`
//! unless `RUST_LOG` is set.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. Returns an error message for an invalid `RUST_LOG`.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(&spec).map_err(|e| format!("RUST_LOG={spec:?} is not a valid log filter: {e}"))?
        }
        _ => EnvFilter::try_new(level).map_err(|e| format!("--log-level {level:?} is not a valid level: {e}"))?,
    };
    // Colour codes only on a terminal: under systemd, stderr goes to the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let result = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
