//! The transport conformance table: one list of server behaviours, each with the observation an
//! agent must make of it, run against both transports the agent can use:
//!
//! * (a) `ReqwestTransport` (production) against a raw server on real loopback sockets
//!   (`TokioNet`);
//! * (b) `HyperTransport<TurmoilNet>` (simulation) against the same raw server inside a turmoil
//!   simulation (`TurmoilNet`).
//!
//! The behaviours are written once, as a small raw-TCP server generic over `Net` that writes
//! canned HTTP bytes (or hangs, closes, resets, or is absent). An observation is what the
//! check-in loop would conclude: the `Outcome` (2xx is `Success` only if the body reads as a
//! check-in answer, its first MiB when it is longer; else `Malformed`, or `BodyTooLarge` when it
//! was cut; an error is its `outcome()`; the caller's timeout is `Timeout`) plus the raw
//! `Retry-After`. If the two transports ever classify a behaviour
//! differently, the simulation would be proving something about a different agent, so both must
//! match the table's expected column exactly.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redflag_agent::config::Config;
use redflag_agent::server::checkin_answer::{BodyEnd, read_checkin_answer};
use redflag_agent::server::protocol::commands_path;
use redflag_agent::resilience::Outcome;
use redflag_agent::server::secret::Secret;
use redflag_agent::server::transport::{Method, Request, ReqwestTransport, Response, Transport, TransportError};
use redflag_sim::net::hyper_transport::HyperTransport;
use redflag_sim::net::{Net, TokioNet, TurmoilNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the raw server does with a connection.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Reads the request, writes these bytes, closes.
    Respond(Vec<u8>),
    /// Reads the request, writes these bytes, then holds the connection open forever.
    RespondThenHang(Vec<u8>),
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and closes without answering (FIN).
    Close,
    /// Reads one byte of the request and drops the connection with an RST.
    Reset,
    /// Nothing listens.
    Refused,
}

/// One row: a behaviour and what an agent must observe of it.
struct Row {
    name: &'static str,
    behaviour: Behaviour,
    outcome: Outcome,
    retry_after: Option<&'static str>,
}

/// What a transport's caller concluded.
type Observation = (Outcome, Option<String>);

const TWO_MIB: usize = 2 * 1024 * 1024;
const CHECKIN_JSON: &str = r#"{"commands":[{"id":"c1","type":"scan_updates","params":{}}],"rapid_polling":null}"#;
const RFC_DATE: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

/// A complete HTTP/1.1 answer with a Content-Length.
fn http(status_line: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status_line}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A 2 MiB body sent chunked (no Content-Length: the limit must be enforced while reading).
fn chunked_two_mib(status_line: &str) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 {status_line}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..TWO_MIB / chunk.len() {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// `body` sent chunked, 64 KiB a chunk.
fn chunked(body: Vec<u8>) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in body.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A check-in answer of about 2 MiB: a queue of commands no agent reads whole.
fn two_mib_of_commands() -> Vec<u8> {
    let one = |n: usize| format!(r#"{{"id":"3f1c2a9e-7b4d-4e2a-9c1f-{n:012}","type":"scan_updates","params":{{"a":"b"}}}}"#);
    let entries: Vec<String> = (0..TWO_MIB / one(0).len() + 1).map(one).collect();
    format!(r#"{{"commands":[{}],"rapid_polling":null}}"#, entries.join(",")).into_bytes()
}

/// A 2 MiB body delimited by the connection closing (neither length nor chunks).
fn close_delimited_two_mib() -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    out.extend(std::iter::repeat_n(b' ', TWO_MIB));
    out
}

/// Content-Length promises 100 bytes; 10 arrive.
fn truncated_head() -> Vec<u8> {
    let mut out =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
            .to_vec();
    out.extend_from_slice(b"{\"commands");
    out
}

fn table() -> Vec<Row> {
    use Behaviour as B;
    use Outcome as O;
    let json = [("Content-Type", "application/json")];
    let big_json = {
        let mut v = br#"{"commands":[],"pad":""#.to_vec();
        v.extend(std::iter::repeat_n(b'x', TWO_MIB));
        v.extend_from_slice(br#""}"#);
        v
    };
    let row = |name, behaviour, outcome, retry_after| Row { name, behaviour, outcome, retry_after };
    vec![
        row("200 valid JSON", B::Respond(http("200 OK", &json, CHECKIN_JSON.as_bytes())), O::Success, None),
        row("200 malformed (HTML)", B::Respond(http("200 OK", &[], b"<html>hello</html>")), O::Malformed, None),
        row("200 empty body", B::Respond(http("200 OK", &json, b"")), O::Malformed, None),
        row("200 JSON that is not an object", B::Respond(http("200 OK", &json, b"[1,2]")), O::Malformed, None),
        // Read up to 1 MiB: an answer whose commands end within it is an answer (cut short).
        row(
            "200 with a 2 MiB answer (Content-Length)",
            B::Respond(http("200 OK", &json, &big_json)),
            O::Success,
            None,
        ),
        row("200 with a 2 MiB answer of commands (chunked)", B::Respond(chunked(two_mib_of_commands())), O::Success, None),
        row("200 with a 2 MiB body (chunked)", B::Respond(chunked_two_mib("200 OK")), O::BodyTooLarge, None),
        row("200 with a 2 MiB body (close-delimited)", B::Respond(close_delimited_two_mib()), O::BodyTooLarge, None),
        row("502 with a 2 MiB body", B::Respond(http("502 Bad Gateway", &[], &big_json)), O::Status(502), None),
        row("500", B::Respond(http("500 Internal Server Error", &[], b"oops")), O::Status(500), None),
        row("502", B::Respond(http("502 Bad Gateway", &[], b"<html>502 Bad Gateway</html>")), O::Status(502), None),
        row("503", B::Respond(http("503 Service Unavailable", &[], b"")), O::Status(503), None),
        row("504", B::Respond(http("504 Gateway Timeout", &[], b"")), O::Status(504), None),
        row(
            "503 + Retry-After: 7",
            B::Respond(http("503 Service Unavailable", &[("Retry-After", "7")], b"")),
            O::Status(503),
            Some("7"),
        ),
        row(
            "429 + HTTP-date Retry-After",
            B::Respond(http(
                "429 Too Many Requests",
                &[("Retry-After", RFC_DATE), ("Date", "Wed, 21 Oct 2015 07:27:00 GMT")],
                b"",
            )),
            O::Status(429),
            Some(RFC_DATE),
        ),
        row("401", B::Respond(http("401 Unauthorized", &json, br#"{"error":"invalid token"}"#)), O::Status(401), None),
        row("404", B::Respond(http("404 Not Found", &[], b"404 page not found")), O::Status(404), None),
        row("not HTTP at all", B::Respond(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()), O::Network, None),
        row("head, then the body stops short and the server closes", B::Respond(truncated_head()), O::Reset, None),
        row("head, then the body stalls forever", B::RespondThenHang(truncated_head()), O::Timeout, None),
        row("accepts and never answers (hang)", B::Hang, O::Timeout, None),
        row("accepts and closes without answering", B::Close, O::Reset, None),
        row("accepts and resets", B::Reset, O::Reset, None),
        row("nothing listening (refused)", B::Refused, O::Refused, None),
    ]
}

// ---- the behaviour server, written once for both worlds ---------------------------------------

/// The largest request head the server reads.
const REQUEST_HEAD_MAX_BYTES: usize = 64 * 1024;

/// Reads one request: the head, then as many body bytes as its Content-Length says.
async fn read_request<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > REQUEST_HEAD_MAX_BYTES {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        .min(REQUEST_HEAD_MAX_BYTES);
    let mut have = buf.len() - head_end;
    while have < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}

async fn handle_connection<N: Net>(mut stream: N::Stream, behaviour: Behaviour) {
    if let Behaviour::Reset = behaviour {
        let mut first = [0u8; 1];
        let _ = stream.read(&mut first).await;
        N::abort(stream);
        return;
    }
    read_request(&mut stream).await;
    match behaviour {
        Behaviour::Respond(bytes) => {
            // The client may stop reading (oversized bodies); a failed write is expected then.
            if stream.write_all(&bytes).await.is_ok() {
                let _ = stream.shutdown().await;
            }
        }
        Behaviour::RespondThenHang(bytes) => {
            let _ = stream.write_all(&bytes).await;
            std::future::pending::<()>().await;
        }
        Behaviour::Hang => std::future::pending::<()>().await,
        Behaviour::Close => drop(stream),
        Behaviour::Reset | Behaviour::Refused => unreachable!("handled above / never accepted"),
    }
}

/// Serves one behaviour on `listener` until the test ends.
async fn behaviour_server<N: Net>(listener: N::Listener, behaviour: Behaviour) {
    while let Ok((stream, _)) = N::accept(&listener).await {
        tokio::task::spawn_local(handle_connection::<N>(stream, behaviour.clone()));
    }
}

// ---- observing a transport --------------------------------------------------------------------

fn checkin_request() -> Request {
    Request {
        method: Method::Get,
        path: commands_path("conformance-agent"),
        bearer: Some(Secret::new("token-1")),
        json_body: Some(br#"{"version":"0.1.0"}"#.to_vec()),
    }
}

/// Sends one check-in under `timeout` and concludes what the loop would.
async fn observe<T: Transport>(transport: &mut T, timeout: Duration) -> Observation {
    let result: Result<Result<Response, TransportError>, _> =
        tokio::time::timeout(timeout, transport.send(&checkin_request())).await;
    match result {
        Err(_elapsed) => (Outcome::Timeout, None),
        Ok(Err(e)) => (e.outcome(), None),
        Ok(Ok(resp)) if (200..300).contains(&resp.status) => {
            let end = if resp.body_truncated { BodyEnd::CutAtLimit } else { BodyEnd::Complete };
            match (read_checkin_answer(&resp.body, end), resp.body_truncated) {
                (Ok(_), _) => (Outcome::Success, resp.retry_after),
                (Err(_), true) => (Outcome::BodyTooLarge, resp.retry_after),
                (Err(_), false) => (Outcome::Malformed, resp.retry_after),
            }
        }
        Ok(Ok(resp)) => (Outcome::Status(resp.status), resp.retry_after),
    }
}

/// Compares observations with the table; lists every mismatch.
fn assert_table(transport: &str, rows: &[Row], observed: &[Observation]) {
    assert_eq!(rows.len(), observed.len(), "{transport}: one observation per row");
    let mismatches: Vec<String> = rows
        .iter()
        .zip(observed)
        .filter(|(row, obs)| (row.outcome, row.retry_after.map(str::to_string)) != **obs)
        .map(|(row, obs)| {
            format!(
                "  {}: expected {:?} / {:?}, observed {:?} / {:?}",
                row.name, row.outcome, row.retry_after, obs.0, obs.1
            )
        })
        .collect();
    assert!(mismatches.is_empty(), "{transport} does not match the conformance table:\n{}", mismatches.join("\n"));
}

// ---- (a) reqwest on real loopback -------------------------------------------------------------

/// Real time: only the rows that hang wait this long.
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(2);

fn reqwest_transport(port: u16) -> ReqwestTransport {
    let json = format!(
        r#"{{"server_url":"http://127.0.0.1:{port}","agent_id":"conformance-agent","token":"token-1","refresh_token":"refresh-1"}}"#
    );
    let config = Config::from_json_str(&json, "conformance config").expect("valid config");
    ReqwestTransport::new(&config.transport_options().expect("transport options")).expect("reqwest client")
}

#[tokio::test]
async fn reqwest_over_loopback_matches_the_table() {
    let rows = table();
    let local = tokio::task::LocalSet::new();
    let observed = local
        .run_until(async {
            let mut observed = Vec::new();
            for row in &rows {
                let listener = TokioNet::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.expect("bind loopback");
                let port = <TokioNet as Net>::local_addr(&listener).unwrap().port();
                let server = match &row.behaviour {
                    Behaviour::Refused => {
                        drop(listener); // the port is now closed: connections are refused
                        None
                    }
                    b => Some(tokio::task::spawn_local(behaviour_server::<TokioNet>(listener, b.clone()))),
                };
                observed.push(observe(&mut reqwest_transport(port), LOOPBACK_TIMEOUT).await);
                if let Some(server) = server {
                    server.abort();
                }
            }
            observed
        })
        .await;
    assert_table("ReqwestTransport (loopback)", &rows, &observed);
}

// ---- (b) hyper over turmoil -------------------------------------------------------------------

/// Simulated time: generous, it costs nothing.
const SIM_TIMEOUT: Duration = Duration::from_secs(10);
const ROW_PORT_BASE: u16 = 9000;

#[test]
fn hyper_over_turmoil_matches_the_table() {
    let rows = table();
    let mut sim = turmoil::Builder::new()
        .epoch(redflag_sim::clock::sim_epoch())
        .rng_seed(7)
        .simulation_duration(Duration::from_secs(600))
        .build();

    let behaviours: Vec<Behaviour> = rows.iter().map(|r| r.behaviour.clone()).collect();
    sim.host("server", move || {
        let behaviours = behaviours.clone();
        async move {
            for (i, b) in behaviours.into_iter().enumerate() {
                if let Behaviour::Refused = b {
                    continue;
                }
                let listener = TurmoilNet::bind(ROW_PORT_BASE + i as u16).await?;
                tokio::task::spawn_local(behaviour_server::<TurmoilNet>(listener, b));
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });

    let observed = Arc::new(Mutex::new(Vec::new()));
    let sink = observed.clone();
    let count = rows.len();
    sim.client("agent", async move {
        for i in 0..count {
            let url = format!("http://server:{}", ROW_PORT_BASE + i as u16);
            let mut transport = HyperTransport::<TurmoilNet>::new(&url)?;
            let obs = observe(&mut transport, SIM_TIMEOUT).await;
            sink.lock().unwrap().push(obs);
        }
        Ok(())
    });
    sim.run().expect("simulation runs");
    let observed = observed.lock().unwrap().clone();
    assert_table("HyperTransport<TurmoilNet> (simulation)", &rows, &observed);
}
