//! A stale pooled connection never wedges the agent. The server here keeps connections alive,
//! answers the first request on each one, and then goes silent on that connection for good
//! (a half-dead keep-alive connection, as a NAT timeout or a server that lost the socket
//! leaves behind), while new connections are served normally. The agent's next check-in is
//! sent on the pooled connection and hangs; the request timeout must fire and a later attempt
//! must use a fresh connection and succeed, again and again.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;

/// Reads one HTTP/1.1 request (head and Content-Length body); `false` at EOF.
fn read_request(reader: &mut BufReader<TcpStream>) -> bool {
    let mut content_length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if first {
            first = false;
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).is_ok()
}

/// Serves one connection: answers its first request, then reads on and never answers again.
fn serve(stream: TcpStream, answered: Arc<AtomicUsize>) {
    let Ok(write_half) = stream.try_clone() else { return };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    if !read_request(&mut reader) {
        return;
    }
    let body = br#"{"commands":[],"rapid_polling":null}"#;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
        body.len()
    );
    if writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(body)).is_err() {
        return;
    }
    answered.fetch_add(1, Ordering::SeqCst);
    // Silent from now on: swallow whatever arrives until the client gives up on us.
    let mut sink = [0u8; 4096];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}

#[test]
fn a_stale_pooled_connection_times_out_and_a_fresh_one_is_used() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    {
        let (answered, connections) = (answered.clone(), connections.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                connections.fetch_add(1, Ordering::SeqCst);
                let answered = answered.clone();
                std::thread::spawn(move || serve(stream, answered));
            }
        });
    }

    let mut h = Harness::new("stale");
    h.config["server_url"] = serde_json::json!(format!("http://127.0.0.1:{port}"));
    // No health probe, so every recovery attempt is a check-in that may land on a pooled
    // connection.
    h.config["resilience"]["health_check"] = serde_json::json!(false);
    let agent = h.spawn(LogFormat::Json);

    // Each success needs a fresh connection, because the previous one went silent: four
    // successes mean the agent came out of at least three stale connections by itself.
    assert!(
        wait_until(Duration::from_secs(60), || answered.load(Ordering::SeqCst) >= 4),
        "the agent did not get past a stale pooled connection ({} answered on {} connections)\n{}",
        answered.load(Ordering::SeqCst),
        connections.load(Ordering::SeqCst),
        agent.tail()
    );
    let timeouts = agent.events_named("attempt_failed").iter().filter(|e| e.str("class") == "timeout").count();
    assert!(timeouts >= 1, "the stale connection should have timed out at least once\n{}", agent.tail());
    assert!(connections.load(Ordering::SeqCst) >= 4);
}
