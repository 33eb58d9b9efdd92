//! What the two long-running harness processes, `redflag-sim serve` and `redflag-sim proxy`,
//! share: their logging, their runtime, binding a port that a killed predecessor just left,
//! and running until SIGTERM/SIGINT with the trace flushed on the way out.
//!
//! Both run the harness's models (written against `net::Net`) on real sockets with
//! [`TokioNet`](crate::net::TokioNet): a current-thread runtime and a `LocalSet`, because the
//! models drive connections on `spawn_local` tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::trace_file;
use crate::trace::TraceSink;

/// How long a restarted process keeps trying to bind the port its killed predecessor held.
pub const BIND_RETRY_FOR: Duration = Duration::from_secs(10);
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Exit codes of the service commands (as for `run`: 2 bad input, 3 the harness failed).
pub use crate::exit::{HARNESS as EXIT_HARNESS, INVALID as EXIT_INVALID, OK as EXIT_OK};

/// Logs warnings (or `RUST_LOG`) to stderr. A second call is harmless.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_ansi(false).try_init();
}

/// Binds `addr`, retrying for [`BIND_RETRY_FOR`] while it is still in use.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener, String> {
    let started = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() < BIND_RETRY_FOR => {
                tokio::time::sleep(BIND_RETRY_PAUSE).await;
            }
            Err(e) => return Err(format!("cannot listen on {addr} ({what}): {e}")),
        }
    }
}

/// Runs `body` on a current-thread runtime inside a `LocalSet` until it ends or SIGTERM/SIGINT
/// arrives, then writes the trace lines not yet flushed. `body` gets the trace sink (Unix-ms
/// `t_ms`). Returns the exit code.
pub fn run<F, Fut>(trace_path: Option<PathBuf>, body: F) -> u8
where
    F: FnOnce(TraceSink) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_HARNESS;
        }
    };
    let local = tokio::task::LocalSet::new();
    let sink = TraceSink::new(0);
    let code = local.block_on(&runtime, async {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return EXIT_HARNESS;
            }
        };
        let flusher = match trace_file::spawn_flusher(sink.clone(), trace_path.clone()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_INVALID;
            }
        };
        let code = tokio::select! {
            biased;
            _ = term.recv() => EXIT_OK,
            _ = int.recv() => EXIT_OK,
            ended = body(sink.clone()) => match ended {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_HARNESS
                }
            },
        };
        flusher.abort();
        code
    });
    if let Some(path) = &trace_path {
        let written = trace_file::open_append(path).and_then(|mut f| trace_file::flush(&sink, &mut f));
        if let Err(e) = written {
            eprintln!("error: {e}");
            return EXIT_HARNESS;
        }
    }
    code
}
