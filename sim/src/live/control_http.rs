//! The HTTP side of the chaos control APIs that `redflag-sim serve` and `redflag-sim proxy`
//! open on a separate, loopback-only address.
//!
//! Two guards keep it local: the command lines refuse a `--control` address that is not a
//! loopback address ([`require_loopback`]), and every connection from a peer that is not on
//! loopback is answered 403 whatever it asks (belt and braces, should the socket ever be
//! reachable otherwise). What the APIs *do* is the caller's [`Handler`]; this file only moves
//! bytes: bounded bodies, bounded connections, JSON answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Largest control request body (a mode is a few dozen bytes).
pub const CONTROL_BODY_MAX_BYTES: usize = 64 * 1024;
/// Control connections served at once; beyond this a new one is closed.
pub const CONTROL_CONNECTIONS_MAX: usize = 64;
/// How long a control client may take to send its request head.
const CONTROL_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one control request: method, path and body in; status and JSON body out.
pub type Handler = Rc<dyn Fn(&Method, &str, &[u8]) -> (StatusCode, serde_json::Value)>;

/// `Err` with the reason when `addr` is not a loopback address.
pub fn require_loopback(addr: &SocketAddr, flag: &str) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!("{flag} {addr} is not a loopback address; the chaos control API only listens on loopback (127.0.0.1 or [::1])"))
    }
}

/// A JSON error body.
pub fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, serde_json::Value) {
    (status, serde_json::json!({ "error": message.into() }))
}

/// Serves the control API on `listener` forever. Must run inside a tokio `LocalSet`.
pub async fn serve_control(listener: tokio::net::TcpListener, handler: Handler) -> std::io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = listener.accept().await?;
        while connections.try_join_next().is_some() {}
        if connections.len() >= CONTROL_CONNECTIONS_MAX {
            tracing::warn!("control: {CONTROL_CONNECTIONS_MAX} connections open; closing a new one");
            continue;
        }
        let local_peer = peer.ip().is_loopback();
        let handler = handler.clone();
        connections.spawn_local(async move {
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let handler = handler.clone();
                async move {
                    let (status, body) = if local_peer {
                        answer(&handler, req).await
                    } else {
                        error(StatusCode::FORBIDDEN, "the control API answers loopback peers only")
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
                    *resp.status_mut() = status;
                    resp.headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(resp)
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CONTROL_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "control: connection ended with an error");
            }
        });
    }
}

async fn answer(handler: &Handler, req: http::Request<hyper::body::Incoming>) -> (StatusCode, serde_json::Value) {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), CONTROL_BODY_MAX_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("cannot read the body (at most {CONTROL_BODY_MAX_BYTES} bytes): {e}")),
    };
    handler(&method, &path, &body)
}
