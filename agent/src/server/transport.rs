//! How requests reach the server: the [`Transport`] trait, and [`ReqwestTransport`], the
//! production implementation.
//!
//! A transport does HTTP and nothing else: it sends one [`Request`], reads at most
//! [`RESPONSE_BODY_MAX_BYTES`] of the answer *while* reading (a 64 MiB answer is cut at 1 MiB
//! and the rest never read, never buffered: the [`Response`] says `body_truncated`), and maps
//! every failure to a [`TransportError`] whose [`TransportError::outcome`] is the shared
//! vocabulary of `resilience::classify`. Whether a cut body is still an answer is the caller's
//! rule, not the transport's: a check-in answer's first MiB holds commands worth taking, a
//! renewal cut short is nothing ([`Response::whole`]). The request
//! timeout is *not* the transport's job: the check-in loop wraps every call in
//! `tokio::time::timeout`, so both transports (this one and the simulation's hyper-over-turmoil
//! one) time out identically.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::server::protocol::{AGENT_VERSION, RESPONSE_BODY_MAX_BYTES};
use crate::resilience::Outcome;
use crate::server::secret::{Secret, redact_userinfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One request, relative to the server URL the transport was built with.
#[derive(Clone)]
pub struct Request {
    pub method: Method,
    /// Absolute path, starting with `/` (e.g. `/api/v1/agents/{id}/commands`).
    pub path: String,
    pub bearer: Option<Secret>,
    /// A JSON body, sent with `Content-Type: application/json`.
    pub json_body: Option<Vec<u8>>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("bearer", &self.bearer)
            .field("json_body_bytes", &self.json_body.as_ref().map(Vec::len))
            .finish()
    }
}

/// An answer: its status, the headers the agent reads, and its body, read up to
/// [`RESPONSE_BODY_MAX_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// The raw `Date` header, if any (the reference for HTTP-date Retry-After values).
    pub date: Option<String>,
    /// The body, or its first [`RESPONSE_BODY_MAX_BYTES`] when `body_truncated`.
    pub body: Vec<u8>,
    /// The body went on past [`RESPONSE_BODY_MAX_BYTES`]; the rest was not read (the
    /// connection is closed, not drained).
    pub body_truncated: bool,
}

impl Response {
    /// This answer if its body is whole. A 2xx whose body was cut is
    /// [`TransportError::BodyTooLarge`] (no RedFlag answer but a check-in's is that long); a
    /// non-2xx keeps its status and loses the cut body (the status is what matters).
    pub fn whole(self) -> Result<Response, TransportError> {
        match (self.body_truncated, (200..300).contains(&self.status)) {
            (false, _) => Ok(self),
            (true, true) => Err(TransportError::BodyTooLarge),
            (true, false) => Ok(Response { body: Vec::new(), body_truncated: false, ..self }),
        }
    }
}

/// Why no complete answer arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    Refused,
    Reset,
    Timeout,
    /// A 2xx answer's body passed [`RESPONSE_BODY_MAX_BYTES`] where a whole one was needed
    /// ([`Response::whole`]). Transports never return it themselves: they return the cut body.
    BodyTooLarge,
    /// DNS, TLS, protocol errors: anything else, with a description for the log.
    Other(String),
}

impl TransportError {
    pub fn outcome(&self) -> Outcome {
        match self {
            TransportError::Refused => Outcome::Refused,
            TransportError::Reset => Outcome::Reset,
            TransportError::Timeout => Outcome::Timeout,
            TransportError::BodyTooLarge => Outcome::BodyTooLarge,
            TransportError::Other(_) => Outcome::Network,
        }
    }

    /// Maps an I/O error the way every transport must: refused, reset/aborted/broken pipe/EOF
    /// are themselves, a timed-out socket is a timeout, the rest is a network error.
    pub fn from_io(e: &io::Error) -> TransportError {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => TransportError::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected => TransportError::Reset,
            io::ErrorKind::TimedOut => TransportError::Timeout,
            _ => TransportError::Other(e.to_string()),
        }
    }

    /// Maps a hyper error (directly, or found in a reqwest error's source chain).
    pub fn from_hyper(e: &hyper::Error) -> TransportError {
        if let Some(io) = find_source::<io::Error>(e) {
            return TransportError::from_io(io);
        }
        if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
            TransportError::Reset
        } else if e.is_timeout() {
            TransportError::Timeout
        } else {
            TransportError::Other(e.to_string())
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Other(msg) => write!(f, "{}: {msg}", self.outcome().class()),
            _ => write!(f, "{}", self.outcome().class()),
        }
    }
}

/// `e` and every error beneath it, as `outer: inner: innermost`, without repeating a message a
/// wrapper already quoted, URL passwords redacted. (reqwest's own message is often just "error
/// sending request"; the cause is at the bottom.)
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    crate::server::secret::redact_userinfo(&parts.join(": "))
}

/// Finds the first error of type `E` in `e`'s source chain, `e` itself included.
pub fn find_source<'a, E: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(hit) = err.downcast_ref::<E>() {
            return Some(hit);
        }
        cur = err.source();
    }
    None
}

/// Sends requests to the RedFlag server. Implementations: [`ReqwestTransport`] (production) and
/// the simulation harness's hyper-over-turmoil transport.
pub trait Transport {
    /// Sends one request and reads its answer, the body up to [`RESPONSE_BODY_MAX_BYTES`]
    /// (beyond it: cut there, `body_truncated`, the rest unread). Must be cancel-safe: the loop
    /// drops the future on timeout or shutdown.
    fn send(&mut self, request: &Request) -> impl Future<Output = Result<Response, TransportError>>;
}

/// Accumulates a response body up to a limit, so that transports stop reading (and drop the
/// connection) the moment an answer passes it, keeping exactly its first `limit` bytes.
#[derive(Debug)]
pub struct BoundedBody {
    buf: Vec<u8>,
    limit: usize,
    truncated: bool,
}

impl BoundedBody {
    pub fn new(limit: usize) -> Self {
        BoundedBody { buf: Vec::new(), limit, truncated: false }
    }

    /// Appends what fits of a chunk; `false` once the body passed the limit (stop reading).
    #[must_use]
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        let room = self.limit - self.buf.len();
        if chunk.len() > room {
            self.buf.extend_from_slice(&chunk[..room]);
            self.truncated = true;
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    /// A body announced longer than the limit (`Content-Length`): it will be cut.
    pub fn announced(&mut self, length: u64) {
        if length > self.limit as u64 {
            self.truncated = true;
        }
    }

    /// The response with this body: status and headers as read.
    pub fn into_response(self, status: u16, retry_after: Option<String>, date: Option<String>) -> Response {
        Response { status, retry_after, date, body: self.buf, body_truncated: self.truncated }
    }
}

/// What the production transport is built from. `config/` fills it in from the config file
/// (`server_url`, `tls`, `proxy`, the request timeout), reading `tls.ca_file` itself.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// `server_url` without a trailing slash; request paths are appended to it.
    pub base_url: String,
    /// The request timeout; the connect timeout is this, at most [`CONNECT_TIMEOUT_MAX`].
    pub request_timeout: Duration,
    /// Extra CA certificates to trust (PEM), and the file they came from (for errors).
    pub ca_pem: Option<(PathBuf, Vec<u8>)>,
    /// Skip certificate verification entirely (lab setups only).
    pub insecure_skip_verify: bool,
    pub proxy: Option<Proxy>,
}

#[derive(Clone, PartialEq)]
pub struct Proxy {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

impl Proxy {
    /// The proxy settings as printed: passwords in the URLs redacted.
    pub fn redacted(&self) -> String {
        let show = |v: &Option<String>| v.as_deref().map_or("(none)".to_string(), redact_userinfo);
        format!(
            "http={} https={} no_proxy={}",
            show(&self.http),
            show(&self.https),
            self.no_proxy.as_deref().unwrap_or("(none)")
        )
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The production transport: reqwest with rustls (ring), connection pooling with a short idle
/// timeout so a stale pooled connection is dropped rather than reused for long, no redirects
/// (a moved server is a configuration error, and following redirects could carry the token to
/// another host), and no environment proxy unless the config's `proxy` says so.
pub struct ReqwestTransport {
    client: reqwest::Client,
    base: String,
}

/// How long an idle pooled connection is kept. Short, so that a connection to a server that
/// restarted (or a NAT entry that expired) is rarely reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(10);

impl ReqwestTransport {
    pub fn new(options: &TransportOptions) -> Result<Self, String> {
        // reqwest is built without a default crypto provider (to use ring rather than
        // aws-lc); install ring once per process. A second call fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.request_timeout.min(CONNECT_TIMEOUT_MAX))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(1)
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(format!("redflag-agent/{AGENT_VERSION}"))
            .http1_only();

        if let Some((ca, pem)) = &options.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("tls.ca_file {} is not a PEM certificate bundle: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("tls.ca_file {} holds no certificates", ca.display()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if options.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        match &options.proxy {
            None => builder = builder.no_proxy(),
            Some(p) => {
                let no_proxy = p.no_proxy.as_deref().and_then(reqwest::NoProxy::from_string);
                if let Some(url) = &p.http {
                    let proxy = reqwest::Proxy::http(url).map_err(|e| format!("proxy.http: {}", error_chain(&e)))?;
                    builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
                }
                if let Some(url) = &p.https {
                    let proxy = reqwest::Proxy::https(url).map_err(|e| format!("proxy.https: {}", error_chain(&e)))?;
                    builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
                }
            }
        }
        let client = builder.build().map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(ReqwestTransport { client, base: options.base_url.clone() })
    }

    fn map_error(e: reqwest::Error) -> TransportError {
        if e.is_timeout() {
            return TransportError::Timeout;
        }
        let mapped = if let Some(h) = find_source::<hyper::Error>(&e) {
            TransportError::from_hyper(h)
        } else if let Some(io) = find_source::<io::Error>(&e) {
            TransportError::from_io(io)
        } else {
            TransportError::Other(String::new())
        };
        match mapped {
            // DNS, TLS, protocol errors: the class alone ("network_error") cannot tell a
            // certificate problem from a typo in the host name, so keep the whole chain.
            TransportError::Other(_) => TransportError::Other(error_chain(&e.without_url())),
            other => other,
        }
    }
}

impl Transport for ReqwestTransport {
    async fn send(&mut self, request: &Request) -> Result<Response, TransportError> {
        let url = format!("{}{}", self.base, request.path);
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut req = self.client.request(method, url);
        if let Some(token) = &request.bearer {
            req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        if let Some(body) = &request.json_body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let mut resp = req.send().await.map_err(Self::map_error)?;
        let status = resp.status().as_u16();
        let header = |name: reqwest::header::HeaderName| {
            resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
        };
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let date = header(reqwest::header::DATE);
        let mut body = BoundedBody::new(RESPONSE_BODY_MAX_BYTES);
        if let Some(n) = resp.content_length() {
            body.announced(n);
        }
        while let Some(chunk) = resp.chunk().await.map_err(Self::map_error)? {
            if !body.push(&chunk) {
                // Stop reading; dropping `resp` closes the connection.
                break;
            }
        }
        Ok(body.into_response(status, retry_after, date))
    }
}
