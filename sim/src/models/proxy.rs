//! The reverse proxy in front of the server model, behaving as nginx does, with fault modes
//! ([`ProxyMode`]) switched through a [`ProxyControl`].
//!
//! In [`ProxyMode::Pass`] each request is forwarded upstream on a fresh connection:
//!
//! * the upstream refuses (nothing listens, the server host crashed) or resets: **502**;
//! * no connection within [`UPSTREAM_CONNECT_TIMEOUT`]: **504**;
//! * no answer within [`UPSTREAM_READ_TIMEOUT`] (nginx's `proxy_read_timeout`): **504**;
//! * otherwise status, headers and body are passed through, the body streamed (a 64 MiB answer
//!   is never buffered; a stall longer than the read timeout mid-body closes the connection).
//!
//! The other modes replace that: [`ProxyMode::Refuse`] stops listening, [`ProxyMode::Blackhole`]
//! accepts and never answers, [`ProxyMode::Reset`] drops the connection without an answer,
//! [`ProxyMode::Latency`] waits before forwarding, [`ProxyMode::Loss`] blackholes a seeded-random
//! fraction of connections, [`ProxyMode::HttpStatus`] answers a status without asking upstream.
//!
//! Each connection carries one request (keep-alive off, like nginx with `keepalive_timeout 0`),
//! so a mode decided when a connection is accepted is the mode its request meets, and a mode
//! change takes effect on the very next request even for a client with a connection pool.
//!
//! Every answered request is recorded in the trace as `proxy_request` with `upstream` one of
//! `ok`, `refused`, `reset`, `timeout`, `invalid` (the upstream's answer was not HTTP),
//! `injected` (a mode answered) or `rejected` (the request body was too large).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::{Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redflag_agent::server::transport::TransportError;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::net::{Connections, Net};
use crate::models::server::{agent_id_from_path, set_date_header};
use crate::trace::{SimEvent, TraceEvent, TraceSink};

/// The port the proxy listens on in simulation.
pub const PROXY_PORT: u16 = 80;
/// nginx's `proxy_connect_timeout` default; 504 when it passes.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// nginx's `proxy_read_timeout` default (between two reads from upstream); 504 when it passes
/// before the answer's head, a closed connection when it passes mid-body.
pub const UPSTREAM_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's `client_max_body_size` default; a larger request body is answered 413.
pub const CLIENT_BODY_MAX_BYTES: usize = 1024 * 1024;
/// nginx's `client_header_timeout` default.
pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a blackholed connection is held open (the client has long given up by then).
pub const BLACKHOLE_HOLD_MAX: Duration = Duration::from_secs(60 * 60);
/// The longest [`ProxyMode::Latency`] delay.
pub const LATENCY_MAX: Duration = Duration::from_secs(60 * 60);
/// How long a reset connection waits for the first request byte before it is dropped (reading
/// part of the request first makes the close an RST in turmoil too).
pub const RESET_WAIT_MAX: Duration = Duration::from_secs(10);
/// Rebinding after [`ProxyMode::Refuse`]: attempts and the pause between them.
const REBIND_ATTEMPTS_MAX: u32 = 100;
const REBIND_PAUSE: Duration = Duration::from_millis(100);

/// What the proxy does with the next connection.
#[derive(Debug, Clone, PartialEq)]
pub enum ProxyMode {
    /// Forward to the upstream, nginx style.
    Pass,
    /// Stop listening: connections are refused.
    Refuse,
    /// Accept connections and never answer.
    Blackhole,
    /// Accept connections and drop them without an answer (RST where possible).
    Reset,
    /// Wait this long (at most [`LATENCY_MAX`]) before forwarding.
    Latency(Duration),
    /// Blackhole this fraction (0.0..=1.0) of connections, chosen by the seeded RNG.
    Loss(f64),
    /// Answer this status (and Retry-After) without contacting the upstream.
    HttpStatus { status: u16, retry_after_seconds: Option<u64> },
}

/// The proxy's mode switch and its loss RNG. Cheap to clone (shared).
#[derive(Clone)]
pub struct ProxyControl(Arc<ControlShared>);

struct ControlShared {
    mode: watch::Sender<ProxyMode>,
    /// Draws for [`ProxyMode::Loss`], one per connection accepted in that mode, in accept
    /// order, so the same seed loses the same connections.
    rng: Mutex<StdRng>,
}

impl ProxyControl {
    /// Starts in [`ProxyMode::Pass`].
    pub fn new(seed: u64) -> Self {
        let (mode, _) = watch::channel(ProxyMode::Pass);
        ProxyControl(Arc::new(ControlShared { mode, rng: Mutex::new(StdRng::seed_from_u64(seed)) }))
    }

    /// Switches the mode; takes effect for the next connection. Out-of-range values are clamped
    /// (a loss rate to 0..=1, a latency to [`LATENCY_MAX`]).
    pub fn set_mode(&self, mode: ProxyMode) {
        let mode = match mode {
            ProxyMode::Loss(rate) => ProxyMode::Loss(if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) }),
            ProxyMode::Latency(d) => ProxyMode::Latency(d.min(LATENCY_MAX)),
            other => other,
        };
        self.0.mode.send_replace(mode);
    }

    pub fn mode(&self) -> ProxyMode {
        self.0.mode.borrow().clone()
    }

    /// Whether a connection accepted under `Loss(rate)` is lost.
    fn lose(&self, rate: f64) -> bool {
        self.0.rng.lock().unwrap_or_else(|p| p.into_inner()).random_bool(rate)
    }
}

/// What one accepted connection gets, decided when it is accepted.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    Blackhole,
    Reset,
    Forward { delay: Option<Duration> },
    Inject { status: u16, retry_after_seconds: Option<u64> },
}

impl ProxyControl {
    fn plan(&self) -> Plan {
        match self.mode() {
            // A connection accepted a moment before the listener closed is simply forwarded.
            ProxyMode::Pass | ProxyMode::Refuse => Plan::Forward { delay: None },
            ProxyMode::Blackhole => Plan::Blackhole,
            ProxyMode::Reset => Plan::Reset,
            ProxyMode::Latency(d) => Plan::Forward { delay: Some(d) },
            ProxyMode::Loss(rate) => match self.lose(rate) {
                true => Plan::Blackhole,
                false => Plan::Forward { delay: None },
            },
            ProxyMode::HttpStatus { status, retry_after_seconds } => Plan::Inject { status, retry_after_seconds },
        }
    }
}

/// Everything a connection task needs to forward and record.
struct Upstream {
    host: String,
    port: u16,
    /// `Host` header sent upstream (nginx's default `$proxy_host`).
    host_header: HeaderValue,
    trace: TraceSink,
    me: Arc<str>,
}

/// Runs the proxy on `listener`, forwarding to `upstream_host:upstream_port`, until the host
/// dies. Must run inside a tokio `LocalSet` (connections are `spawn_local` tasks, owned by this
/// future: dropping it closes them all).
pub async fn run_proxy<N: Net>(
    listener: N::Listener,
    upstream_host: String,
    upstream_port: u16,
    control: ProxyControl,
    trace: TraceSink,
    host: Arc<str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let addr = N::local_addr(&listener)?;
    let host_header = HeaderValue::from_str(&if upstream_port == 80 {
        upstream_host.clone()
    } else {
        format!("{upstream_host}:{upstream_port}")
    })
    .map_err(|e| format!("proxy: invalid upstream host {upstream_host:?}: {e}"))?;
    let upstream = Rc::new(Upstream { host: upstream_host, port: upstream_port, host_header, trace, me: host });
    // Owned here, so that dropping this future aborts every connection with it.
    let mut connections = Connections::new("proxy");
    let mut modes = control.0.mode.subscribe();
    let mut listener = Some(listener);
    loop {
        let refuse = matches!(*modes.borrow_and_update(), ProxyMode::Refuse);
        let Some(bound) = &listener else {
            if refuse {
                // Nothing listens until the mode changes. The sender lives in `control`, which
                // this function holds, so `changed` cannot fail.
                let _ = modes.changed().await;
            } else {
                listener = Some(rebind::<N>(addr).await?);
            }
            continue;
        };
        if refuse {
            listener = None;
            continue;
        }
        let accepted = tokio::select! {
            biased;
            _ = modes.changed() => continue,
            accepted = N::accept(bound) => accepted,
        };
        let Some(stream) = connections.admit(accepted).await? else { continue };
        let plan = control.plan();
        let upstream = upstream.clone();
        connections.spawn(async move {
            match plan {
                Plan::Blackhole => blackhole(stream).await,
                Plan::Reset => reset::<N>(stream).await,
                Plan::Forward { .. } | Plan::Inject { .. } => serve::<N>(stream, plan, upstream).await,
            }
        });
    }
}

async fn rebind<N: Net>(addr: SocketAddr) -> Result<N::Listener, Box<dyn std::error::Error>> {
    let mut attempt = 0;
    loop {
        match N::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if attempt + 1 < REBIND_ATTEMPTS_MAX => {
                attempt += 1;
                tracing::warn!(error = %e, %addr, attempt, "proxy: cannot listen again yet");
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            Err(e) => {
                return Err(
                    format!("proxy: cannot listen on {addr} again after {REBIND_ATTEMPTS_MAX} attempts: {e}").into()
                );
            }
        }
    }
}

/// Holds the connection without answering: reads and discards what the client sends until it
/// gives up (EOF or error; then there is nobody left to be silent to) or [`BLACKHOLE_HOLD_MAX`]
/// passes.
async fn blackhole<S: tokio::io::AsyncRead + Unpin>(mut stream: S) {
    let hold = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(BLACKHOLE_HOLD_MAX, hold).await;
}

/// Drops the connection without an answer, after the first request byte arrived (or
/// [`RESET_WAIT_MAX`] passed), so the unread rest of the request makes the close an RST.
async fn reset<N: Net>(mut stream: N::Stream) {
    let mut first = [0u8; 1];
    let _ = tokio::time::timeout(RESET_WAIT_MAX, stream.read(&mut first)).await;
    N::abort(stream);
}

/// Serves the connection's one request with hyper.
async fn serve<N: Net>(stream: N::Stream, plan: Plan, upstream: Rc<Upstream>) {
    let service = hyper::service::service_fn(move |req| {
        let (plan, upstream) = (plan.clone(), upstream.clone());
        async move { Ok::<_, Infallible>(handle::<N>(req, plan, &upstream).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_HEADER_TIMEOUT)
        .keep_alive(false)
        .auto_date_header(false)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "proxy: connection ended with an error");
    }
}

/// Answers one request according to the connection's plan, and records it.
async fn handle<N: Net>(req: http::Request<Incoming>, plan: Plan, upstream: &Upstream) -> http::Response<ProxyBody> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let agent: Option<Arc<str>> = agent_id_from_path(&path).map(Arc::from);
    let (resp, outcome) = match plan {
        Plan::Inject { status, retry_after_seconds } => (nginx_page(status, retry_after_seconds), "injected"),
        Plan::Forward { delay } => {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            forward::<N>(req, upstream).await
        }
        // Never served by hyper; see `run_proxy`.
        Plan::Blackhole | Plan::Reset => (nginx_page(500, None), "injected"),
    };
    let status = resp.status().as_u16();
    upstream.trace.record(
        &upstream.me,
        agent.as_ref(),
        TraceEvent::Sim(SimEvent::ProxyRequest { method, path, status, upstream: outcome.to_string() }),
    );
    resp
}

/// Headers that describe one hop, not the message; never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Forwards one request upstream; the answer and what happened behind the proxy.
async fn forward<N: Net>(
    req: http::Request<Incoming>,
    upstream: &Upstream,
) -> (http::Response<ProxyBody>, &'static str) {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > CLIENT_BODY_MAX_BYTES as u64) {
        return (nginx_page(413, None), "rejected");
    }

    let connect = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, N::connect(&upstream.host, upstream.port)).await;
    let stream = match connect {
        Err(_elapsed) => return (nginx_page(504, None), "timeout"),
        Ok(Err(e)) => {
            return match TransportError::from_io(&e) {
                TransportError::Refused => (nginx_page(502, None), "refused"),
                TransportError::Timeout => (nginx_page(504, None), "timeout"),
                _ => (nginx_page(502, None), "reset"),
            };
        }
        Ok(Ok(stream)) => stream,
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(_) => return (nginx_page(502, None), "reset"),
    };
    // The upstream connection lives as long as the answer's body is being streamed.
    let conn = ConnectionGuard(
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        })
        .abort_handle(),
    );

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, upstream.host_header.clone());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    match path.parse::<http::Uri>() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return (nginx_page(400, None), "rejected"),
    }
    let upstream_req = http::Request::from_parts(parts, Limited::new(body, CLIENT_BODY_MAX_BYTES));

    let answer = tokio::time::timeout(UPSTREAM_READ_TIMEOUT, sender.send_request(upstream_req)).await;
    let resp = match answer {
        Err(_elapsed) => return (nginx_page(504, None), "timeout"),
        Ok(Err(e)) => {
            return match TransportError::from_hyper(&e) {
                TransportError::Timeout => (nginx_page(504, None), "timeout"),
                TransportError::Refused | TransportError::Reset => (nginx_page(502, None), "reset"),
                _ => (nginx_page(502, None), "invalid"),
            };
        }
        Ok(Ok(resp)) => resp,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = ProxyBody::Upstream { body, idle: Box::pin(tokio::time::sleep(UPSTREAM_READ_TIMEOUT)), _conn: conn };
    (http::Response::from_parts(parts, body), "ok")
}

/// An answer in nginx's words: its HTML error page, with a Retry-After when given.
fn nginx_page(status: u16, retry_after_seconds: Option<u64>) -> http::Response<ProxyBody> {
    let code = http::StatusCode::from_u16(status)
        .ok()
        .filter(|s| (100..600).contains(&s.as_u16()))
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let title = format!("{} {}", code.as_u16(), code.canonical_reason().unwrap_or(""));
    let html = format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut resp = http::Response::new(ProxyBody::Page(Full::new(Bytes::from(html))));
    *resp.status_mut() = code;
    let headers = resp.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("nginx"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    set_date_header(headers);
    if let Some(s) = retry_after_seconds {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

/// Ends the upstream connection task when the answer is done with (or abandoned).
struct ConnectionGuard(tokio::task::AbortHandle);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A proxy answer's body: one of nginx's pages, or the upstream's body streamed through with
/// the read timeout applied between chunks.
enum ProxyBody {
    Page(Full<Bytes>),
    Upstream { body: Incoming, idle: Pin<Box<Sleep>>, _conn: ConnectionGuard },
}

#[derive(Debug)]
struct UpstreamStalled;

impl std::fmt::Display for UpstreamStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream sent nothing for {}s mid-answer", UPSTREAM_READ_TIMEOUT.as_secs())
    }
}

impl StdError for UpstreamStalled {}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Page(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            ProxyBody::Upstream { body, idle, .. } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    idle.as_mut().reset(Instant::now() + UPSTREAM_READ_TIMEOUT);
                    Poll::Ready(frame.map(|f| f.map_err(Into::into)))
                }
                // Aborting the body makes hyper close the client connection mid-answer, as
                // nginx does when proxy_read_timeout passes after the head was sent.
                Poll::Pending => idle.as_mut().poll(cx).map(|()| Some(Err(UpstreamStalled.into()))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Page(full) => full.is_end_stream(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Page(full) => full.size_hint(),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}
