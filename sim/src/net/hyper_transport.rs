//! The agent's [`Transport`] over hyper, generic over the socket layer: [`HyperTransport`] with
//! [`TurmoilNet`](crate::net::TurmoilNet) is how simulated agents reach the proxy; with
//! [`TokioNet`](crate::net::TokioNet) it speaks to real sockets.
//!
//! It must classify every failure exactly as the production `ReqwestTransport` does, so it maps
//! errors *only* through `TransportError::from_io` / `TransportError::from_hyper`, reads bodies
//! with the same `BoundedBody` and limit (a longer body cut there, `body_truncated`), exactly as
//! the production transport does. `sim/tests/conformance.rs` runs one table of server behaviours against both transports
//! to prove it.
//!
//! One connection per request: connect, HTTP/1 handshake, send, read the answer, close. There is
//! no pool, so no stale pooled connection can make the simulation differ from itself. The
//! request timeout is not applied here: the check-in loop wraps every call in
//! `tokio::time::timeout`, and the future below is cancel-safe (dropping it at any await point
//! aborts the connection task and closes the socket).

use std::marker::PhantomData;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, DATE, HOST, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use redflag_agent::server::protocol::{AGENT_VERSION, RESPONSE_BODY_MAX_BYTES};
use redflag_agent::server::transport::{BoundedBody, Method, Request, Response, Transport, TransportError};

use crate::net::Net;

/// A server URL longer than this is not one we wrote.
const SERVER_URL_MAX_BYTES: usize = 2048;

/// Sends agent requests over hyper on `N`'s sockets. Build with [`HyperTransport::new`].
pub struct HyperTransport<N: Net> {
    /// Host name (or IP literal) to connect to.
    host: String,
    port: u16,
    /// The `Host` header value: `host` or `host:port`.
    host_header: String,
    /// A path prefix from the server URL (`http://proxy/redflag` -> `/redflag`), without a
    /// trailing slash; empty for most URLs.
    base_path: String,
    net: PhantomData<fn() -> N>,
}

impl<N: Net> HyperTransport<N> {
    /// `server_url` is `http://host[:port][/path]`: `"http://proxy"` connects to host `proxy`,
    /// port 80. `https` is refused: there is no TLS in the simulation.
    pub fn new(server_url: &str) -> Result<Self, String> {
        if server_url.len() > SERVER_URL_MAX_BYTES {
            return Err(format!("server_url is longer than {SERVER_URL_MAX_BYTES} bytes"));
        }
        let rest = server_url.strip_prefix("http://").ok_or_else(|| {
            format!("server_url must start with http:// (no TLS in the simulation), got {server_url:?}")
        })?;
        if rest.contains(['?', '#']) {
            return Err(format!("server_url must not have a query or fragment, got {server_url:?}"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!("server_url must not carry credentials, got {server_url:?}"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal ("[::1]") without a port has colons but ends in ']'.
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("server_url has an invalid port {p:?}, got {server_url:?}"))?;
                (h, port)
            }
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("server_url has no host, got {server_url:?}"));
        }
        let host_header =
            if port == 80 { authority.trim_end_matches(":80").to_string() } else { authority.to_string() };
        Ok(HyperTransport {
            host: host.to_string(),
            port,
            host_header,
            base_path: path.trim_end_matches('/').to_string(),
            net: PhantomData,
        })
    }

    /// The host this transport connects to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port this transport connects to.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn build(&self, request: &Request) -> Result<http::Request<Full<Bytes>>, TransportError> {
        let method = match request.method {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
        };
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base_path, request.path))
            .header(HOST, &self.host_header)
            .header(USER_AGENT, format!("redflag-agent/{AGENT_VERSION}"));
        if let Some(token) = &request.bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {}", token.expose()));
        }
        let body = match &request.json_body {
            Some(json) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::copy_from_slice(json))
            }
            None => Full::new(Bytes::new()),
        };
        // An invalid path or token is a bug in the caller, not a network failure; report it as
        // "other" so it is logged with its reason (reqwest does the same for a bad URL).
        builder.body(body).map_err(|e| TransportError::Other(format!("cannot build the request: {e}")))
    }
}

/// Aborts the connection task when the request is finished or abandoned, so a dropped `send`
/// future (the loop's timeout) never leaves a connection open behind it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<N: Net> Transport for HyperTransport<N> {
    async fn send(&mut self, request: &Request) -> Result<Response, TransportError> {
        let req = self.build(request)?;
        let stream = N::connect(&self.host, self.port).await.map_err(|e| TransportError::from_io(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| TransportError::from_hyper(&e))?;
        // The connection is driven on its own task; the guard ends it when this future ends.
        let _conn = AbortOnDrop(
            tokio::task::spawn_local(async move {
                // Its errors surface through `send_request` and the body; nothing to do here.
                let _ = conn.await;
            })
            .abort_handle(),
        );
        let resp = sender.send_request(req).await.map_err(|e| TransportError::from_hyper(&e))?;

        let status = resp.status().as_u16();
        let header =
            |name: http::header::HeaderName| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = header(RETRY_AFTER);
        let date = header(DATE);
        let mut incoming = resp.into_body();
        let mut body = BoundedBody::new(RESPONSE_BODY_MAX_BYTES);
        if let Some(n) = incoming.size_hint().exact() {
            body.announced(n);
        }
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| TransportError::from_hyper(&e))?;
            let Ok(chunk) = frame.into_data() else { continue }; // trailers carry nothing we use
            if !body.push(&chunk) {
                // Stop reading; the guard closes the connection.
                break;
            }
        }
        Ok(body.into_response(status, retry_after, date))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::TurmoilNet;

    #[test]
    fn parses_server_urls() {
        let t = HyperTransport::<TurmoilNet>::new("http://proxy").unwrap();
        assert_eq!((t.host(), t.port(), t.host_header.as_str(), t.base_path.as_str()), ("proxy", 80, "proxy", ""));
        let t = HyperTransport::<TurmoilNet>::new("http://server:8080/").unwrap();
        assert_eq!(
            (t.host(), t.port(), t.host_header.as_str(), t.base_path.as_str()),
            ("server", 8080, "server:8080", "")
        );
        let t = HyperTransport::<TurmoilNet>::new("http://127.0.0.1:9/base/").unwrap();
        assert_eq!((t.host(), t.port(), t.base_path.as_str()), ("127.0.0.1", 9, "/base"));
        let t = HyperTransport::<TurmoilNet>::new("http://[::1]").unwrap();
        assert_eq!((t.host(), t.port()), ("::1", 80));
        for bad in ["https://proxy", "proxy", "http://", "http://proxy:x", "http://proxy?a=1", "http://u@proxy"] {
            assert!(HyperTransport::<TurmoilNet>::new(bad).is_err(), "{bad}");
        }
    }
}
