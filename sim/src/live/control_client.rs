//! The orchestrator's side of the control APIs: one blocking HTTP/1.1 request over a plain
//! `std::net::TcpStream`, with a deadline on every step.
//!
//! The live orchestrator is ordinary synchronous code (it sleeps, spawns and kills processes),
//! so a small blocking client is simpler than an async runtime for the few requests a run
//! makes. It speaks only to the loopback control addresses the orchestrator chose itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest control answer read.
const ANSWER_MAX_BYTES: u64 = 1024 * 1024;

/// Sends `method path` with an optional JSON body to `addr`; the status and body of the answer.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, timeout: Duration) -> Result<(u16, String), String> {
    let what = || format!("{method} http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{}: {e}", what()))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| format!("{}: {e}", what()))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| format!("{}: {e}", what()))?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes())).map_err(|e| format!("{}: {e}", what()))?;
    let mut answer = Vec::new();
    stream.take(ANSWER_MAX_BYTES).read_to_end(&mut answer).map_err(|e| format!("{}: {e}", what()))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{}: the answer has no complete head", what()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{}: not an HTTP answer: {:?}", what(), head.lines().next().unwrap_or("")))?;
    Ok((status, body.trim().to_string()))
}

/// Like [`request`], but any status other than 200 is an error carrying the answer's body.
pub fn request_ok(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, timeout: Duration) -> Result<String, String> {
    match request(addr, method, path, body, timeout)? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("{method} http://{addr}{path} answered {status}: {body}")),
    }
}
