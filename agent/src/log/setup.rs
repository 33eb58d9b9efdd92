//! Log output for the agent binary: human-readable text (default) or JSON lines, on stderr.
//!
//! The JSON form flattens each event's fields to the top level next to `timestamp`, `level`,
//! `target` and `message`, so `{"event":"attempt_failed","attempt":2,...}` is directly
//! machine-readable; the live chaos harness relies on that. Every JSON line carries `event`:
//! the agent's own lines name theirs, and any other line (a library's) gets `"event":"log"`.
//!
//! The level comes from `--log-level` unless `RUST_LOG` is set. Both are checked: a level that
//! is not one (`verbose`) is refused with the list of valid ones, instead of being taken as a
//! module name that silences everything; `warning` is accepted as `warn`. Lines are written
//! through `writer.rs`, so a closed stderr drops lines instead of killing the agent. Start-up
//! errors are written with [`fatal`], which no filter can silence.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::log::format::LogFormat;
use crate::log::writer::{self, LogOutput};


/// The levels `--log-level` and `RUST_LOG` take, as said in error messages.
pub const LEVELS: &str = "error, warn (or warning), info, debug, trace, off";

/// The `event` of JSON lines that do not name one (library lines).
pub const DEFAULT_EVENT: &str = "log";

/// A level name as the filter spells it; `warning` is `warn`. Case does not matter.
fn level_name(s: &str) -> Option<&'static str> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        "off" => "off",
        _ => return None,
    })
}

/// `--log-level`'s value parser (clap reports an error with exit code 2).
pub fn parse_level(s: &str) -> Result<String, String> {
    level_name(s).map(str::to_string).ok_or_else(|| format!("{s:?} is not a log level; use one of: {LEVELS}"))
}

/// `RUST_LOG` as a filter: comma-separated `level`, `module=level` or `module::path`. A level
/// alias is normalised; a bare word that is neither a level nor a module path (`verbose`,
/// `warnings`) is refused, because the filter would take it as a module name and show nothing.
pub fn rust_log_filter(spec: &str) -> Result<EnvFilter, String> {
    let refuse = |why: String| format!("RUST_LOG={spec:?} is not a valid log filter: {why}; use a level ({LEVELS}) or module=level, e.g. RUST_LOG=info or RUST_LOG=hyper=debug,info");
    let mut directives = Vec::new();
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.rsplit_once('=') {
            Some((target, level)) => match level_name(level) {
                Some(l) => directives.push(format!("{target}={l}")),
                None => return Err(refuse(format!("{level:?} is not a log level"))),
            },
            None => match level_name(d) {
                Some(l) => directives.push(l.to_string()),
                None if d.contains("::") || d.contains('[') => directives.push(d.to_string()),
                None => return Err(refuse(format!("{d:?} is not a log level"))),
            },
        }
    }
    EnvFilter::try_new(directives.join(",")).map_err(|e| refuse(e.to_string()))
}

/// The filter from `RUST_LOG` (when set and not empty) or else `level`.
pub fn filter(level: &str) -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => rust_log_filter(&spec),
        _ => {
            let level = parse_level(level).map_err(|e| format!("--log-level: {e}"))?;
            EnvFilter::try_new(level).map_err(|e| format!("--log-level: {e}"))
        }
    }
}

/// Installs the global subscriber. Returns an error message for an invalid level or
/// `RUST_LOG` (the caller exits with the usage code, 2).
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = filter(level)?;
    let writer = LogOutput { format };
    let result = match format {
        LogFormat::Text => {
            // Colour codes only on a terminal: under systemd, stderr goes to the journal.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(ansi)
                .with_target(false)
                .log_internal_errors(false)
                .try_init()
        }
        LogFormat::Json => {
            let json = format::format().json().flatten_event(true).with_current_span(false).with_span_list(false);
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(writer)
                .with_ansi(false)
                .log_internal_errors(false)
                .fmt_fields(JsonFields::new())
                .event_format(WithDefaultEvent(json))
                .try_init()
        }
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}

/// Writes a start-up error (bad config, ...) whatever the level filter says: one line, in the
/// log's format, with `event` (e.g. `config_error`).
pub fn fatal(format: LogFormat, event: &str, message: &str) {
    writer::write_line(format, writer::line_in_format(format, "ERROR", event, message, &[]).as_bytes());
}

/// The JSON formatter, plus `"event":"log"` on lines whose call site has no `event` field.
struct WithDefaultEvent<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithDefaultEvent<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &tracing::Event<'_>) -> std::fmt::Result {
        if event.metadata().fields().field("event").is_some() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"event\":\"{DEFAULT_EVENT}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_their_aliases() {
        assert_eq!(parse_level("warning").unwrap(), "warn");
        assert_eq!(parse_level("INFO").unwrap(), "info");
        let e = parse_level("verbose").unwrap_err();
        assert!(e.contains("verbose") && e.contains(LEVELS), "{e}");
    }

    #[test]
    fn rust_log_words_that_are_not_levels_are_refused() {
        assert!(rust_log_filter("warning").is_ok());
        assert!(rust_log_filter("info,hyper=debug").is_ok());
        assert!(rust_log_filter("hyper::proto=trace").is_ok());
        assert!(rust_log_filter("redflag_agent=warning").is_ok());
        for bad in ["verbose", "warnings", "hyper=loud"] {
            let e = rust_log_filter(bad).unwrap_err();
            assert!(e.contains("RUST_LOG") && e.contains(LEVELS), "{bad}: {e}");
        }
    }
}
