//! The server model and the proxy, exercised inside turmoil through the simulation's own
//! transport (`HyperTransport<TurmoilNet>`): token expiry and renewal, `expire_all_tokens`,
//! setup mode, revoked refresh tokens, the slow mode, the rate limiter forgetting a crash while
//! the database survives it, and the proxy's answers (502 when nothing listens upstream, 504 on
//! a stalled link or a slow upstream, injected statuses, blackhole, reset, refuse, latency,
//! deterministic loss, streamed bodies).
//!
//! Each test builds its own small world: `server` (and `proxy`, `origin` where needed) as
//! turmoil hosts, and one client host `agent` that plays the agent step by step and records
//! what it saw. Faults the world would apply between steps (a bounce) are applied the same way.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redflag_agent::server::protocol::{
    Command, CommandsResponse, HEALTH_PATH, RENEW_PATH, commands_path, logs_path, parse_renew_answer,
};
use redflag_agent::server::secret::Secret;
use redflag_agent::server::transport::{Method, Request, Response, Transport, TransportError};
use redflag_sim::clock;
use redflag_sim::net::hyper_transport::HyperTransport;
use redflag_sim::net::{Net, TurmoilNet};
use redflag_sim::models::proxy::{
    PROXY_PORT, ProxyControl, ProxyMode, UPSTREAM_CONNECT_TIMEOUT, UPSTREAM_READ_TIMEOUT, run_proxy,
};
use redflag_sim::models::server::{
    Broken, RATE_LIMIT_CHECKINS_MAX, RATE_LIMIT_WINDOW, SERVER_PORT, ServerDb, ServerModes, TOKEN_TTL, run_server,
};
use redflag_sim::scenario::ApiRoute;
use redflag_sim::trace::{Record, SimEvent, TraceSink};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const AGENT: &str = "agent-0";
const TOKEN: &str = "token-0";
const REFRESH: &str = "refresh-0";

// ---- a small world --------------------------------------------------------------------------

fn sim(seed: u64, tick: Duration, duration: Duration) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .epoch(clock::sim_epoch())
        .rng_seed(seed)
        .tick_duration(tick)
        .max_message_latency(Duration::from_millis(10))
        .simulation_duration(duration)
        .build()
}

fn trace_sink() -> TraceSink {
    TraceSink::new(clock::SIM_EPOCH_UNIX_SECONDS * 1000)
}

fn add_server(sim: &mut turmoil::Sim<'static>, db: &ServerDb, modes: &ServerModes, trace: &TraceSink) {
    let (db, modes, trace) = (db.clone(), modes.clone(), trace.clone());
    sim.host("server", move || {
        let (db, modes, trace) = (db.clone(), modes.clone(), trace.clone());
        async move {
            let listener = TurmoilNet::bind(SERVER_PORT).await?;
            run_server::<TurmoilNet>(listener, db, modes, trace, "server".into()).await
        }
    });
}

fn add_proxy(sim: &mut turmoil::Sim<'static>, upstream: &str, port: u16, control: &ProxyControl, trace: &TraceSink) {
    let (upstream, control, trace) = (upstream.to_string(), control.clone(), trace.clone());
    sim.host("proxy", move || {
        let (upstream, control, trace) = (upstream.clone(), control.clone(), trace.clone());
        async move {
            let listener = TurmoilNet::bind(PROXY_PORT).await?;
            run_proxy::<TurmoilNet>(listener, upstream, port, control, trace, "proxy".into()).await
        }
    });
}

fn registered_db() -> ServerDb {
    let db = ServerDb::new(42);
    db.register(AGENT, TOKEN, REFRESH);
    db
}

fn checkin_req(token: &str) -> Request {
    Request {
        method: Method::Get,
        path: commands_path(AGENT),
        bearer: Some(Secret::new(token)),
        json_body: Some(br#"{"version":"test"}"#.to_vec()),
    }
}

fn renew_req(refresh: &str) -> Request {
    let body = format!(r#"{{"agent_id":"{AGENT}","refresh_token":"{refresh}"}}"#);
    Request { method: Method::Post, path: RENEW_PATH.into(), bearer: None, json_body: Some(body.into_bytes()) }
}

fn health_req() -> Request {
    Request { method: Method::Get, path: HEALTH_PATH.into(), bearer: None, json_body: None }
}

/// Sends under a timeout; a timeout is `TransportError::Timeout`, as in the check-in loop.
async fn send<T: Transport>(t: &mut T, req: &Request, timeout: Duration) -> Result<Response, TransportError> {
    tokio::time::timeout(timeout, t.send(req)).await.unwrap_or(Err(TransportError::Timeout))
}

fn status(r: &Result<Response, TransportError>) -> Result<u16, TransportError> {
    r.as_ref().map(|r| r.status).map_err(Clone::clone)
}

const T: Duration = Duration::from_secs(10);

fn direct() -> HyperTransport<TurmoilNet> {
    HyperTransport::new(&format!("http://server:{SERVER_PORT}")).unwrap()
}

fn via_proxy() -> HyperTransport<TurmoilNet> {
    HyperTransport::new("http://proxy").unwrap()
}

fn server_requests(records: &[Record]) -> Vec<(Option<String>, String, String, u16)> {
    records
        .iter()
        .filter_map(|r| match r.sim_event()? {
            SimEvent::ServerRequest { method, path, status } => {
                Some((r.agent.as_deref().map(str::to_string), method.clone(), path.clone(), *status))
            }
            _ => None,
        })
        .collect()
}

fn proxy_requests(records: &[Record]) -> Vec<(u16, String)> {
    records
        .iter()
        .filter_map(|r| match r.sim_event()? {
            SimEvent::ProxyRequest { status, upstream, .. } => Some((*status, upstream.clone())),
            _ => None,
        })
        .collect()
}

// ---- the server model -----------------------------------------------------------------------

#[test]
fn tokens_expire_after_their_ttl_and_renewal_issues_a_fresh_one() {
    // One-second ticks: a simulated day is 86,400 steps.
    let mut sim = sim(1, Duration::from_secs(1), TOKEN_TTL + Duration::from_secs(3600));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    let db2 = db.clone();
    sim.client("agent", async move {
        let mut t = direct();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200), "the registered token works");
        tokio::time::sleep(TOKEN_TTL - Duration::from_secs(60)).await;
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200), "still valid just before the TTL");
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(401), "expired after the TTL");

        assert_eq!(status(&send(&mut t, &renew_req("not-the-refresh-token"), T).await), Ok(401));
        let renewed = send(&mut t, &renew_req(REFRESH), T).await.unwrap();
        assert_eq!(renewed.status, 200);
        let fresh = parse_renew_answer(&renewed.body).unwrap();
        assert_ne!(fresh, TOKEN);
        assert_eq!(db2.access_token(AGENT).as_deref(), Some(fresh.as_str()));
        assert_eq!(status(&send(&mut t, &checkin_req(&fresh), T).await), Ok(200), "the fresh token works");
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(401), "the old one does not");

        let bad = Request { json_body: Some(b"{\"agent_id\":1}".to_vec()), ..renew_req(REFRESH) };
        assert_eq!(status(&send(&mut t, &bad, T).await), Ok(400), "a bad renewal body is a 400");
        let no_auth = Request { bearer: None, ..checkin_req(&fresh) };
        assert_eq!(status(&send(&mut t, &no_auth, T).await), Ok(401), "no bearer token");
        Ok(())
    });
    sim.run().unwrap();

    let seen = server_requests(&trace.take());
    // Every request names its agent (from the path, or the renewal body), except the renewal
    // whose body could not be read.
    let named: Vec<bool> = seen.iter().map(|(agent, ..)| agent.as_deref() == Some(AGENT)).collect();
    assert_eq!(named, [true, true, true, true, true, true, true, false, true], "{seen:?}");
    let statuses: Vec<u16> = seen.iter().map(|s| s.3).collect();
    assert_eq!(statuses, [200, 200, 401, 401, 200, 200, 401, 400, 401]);
    assert_eq!(seen[3], (Some(AGENT.into()), "POST".into(), RENEW_PATH.into(), 401));
}

#[test]
fn expire_all_tokens_forces_a_renewal_that_works() {
    let mut sim = sim(2, Duration::from_millis(1), Duration::from_secs(60));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    sim.client("agent", async move {
        let mut t = direct();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        db.expire_all_tokens();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(401));
        let fresh = parse_renew_answer(&send(&mut t, &renew_req(REFRESH), T).await.unwrap().body).unwrap();
        assert_eq!(status(&send(&mut t, &checkin_req(&fresh), T).await), Ok(200));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn revoke_refresh_answers_401_to_renewals_while_on() {
    let mut sim = sim(3, Duration::from_millis(1), Duration::from_secs(60));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    sim.client("agent", async move {
        let mut t = direct();
        modes.set_revoke_refresh(true);
        assert_eq!(status(&send(&mut t, &renew_req(REFRESH), T).await), Ok(401));
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200), "access tokens are untouched");
        modes.set_revoke_refresh(false);
        assert_eq!(status(&send(&mut t, &renew_req(REFRESH), T).await), Ok(200));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn setup_mode_404s_agent_routes_but_not_health() {
    let mut sim = sim(4, Duration::from_millis(1), Duration::from_secs(60));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    sim.client("agent", async move {
        let mut t = direct();
        modes.set_setup_mode(true);
        // No agent routes at all: gin's plain-text 404, a *bare* 404 to the agent.
        let checkin = send(&mut t, &checkin_req(TOKEN), T).await.unwrap();
        assert_eq!((checkin.status, checkin.body.as_slice()), (404, &b"404 page not found"[..]));
        assert_eq!(status(&send(&mut t, &renew_req(REFRESH), T).await), Ok(404));
        let health = send(&mut t, &health_req(), T).await.unwrap();
        // What RedFlag's unconfigured welcome mode answers, and what the agent calls not ready.
        assert_eq!((health.status, health.body.as_slice()), (200, &br#"{"status":"waiting for configuration"}"#[..]));
        assert!(redflag_agent::server::protocol::health_not_ready(&health.body));
        modes.set_setup_mode(false);
        let health = send(&mut t, &health_req(), T).await.unwrap();
        assert_eq!((health.status, health.body.as_slice()), (200, &br#"{"status":"healthy"}"#[..]));
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn system_info_is_accepted_with_a_token_and_refused_without() {
    let mut sim = sim(6, Duration::from_millis(1), Duration::from_secs(60));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    let records = trace.clone();
    sim.client("agent", async move {
        let mut t = direct();
        // What RedFlag 0.1.18's Go agent posts (`client.SystemInfoReport`), abridged.
        let report = br#"{"timestamp":"2025-11-13T10:00:00Z","cpu_model":"Xeon","cpu_cores":4,"memory_total":8589934592,
            "uptime":"up 2 days","metadata":{"hostname":"h","os_type":"linux"}}"#;
        let post = |token: Option<&str>, body: &[u8]| Request {
            method: Method::Post,
            path: format!("/api/v1/agents/{AGENT}/system-info"),
            bearer: token.map(Secret::new),
            json_body: Some(body.to_vec()),
        };
        let ok = send(&mut t, &post(Some(TOKEN), report), T).await.unwrap();
        assert_eq!((ok.status, ok.body.as_slice()), (200, &br#"{"message":"system info updated successfully"}"#[..]));
        assert_eq!(status(&send(&mut t, &post(None, report), T).await), Ok(401));
        assert_eq!(status(&send(&mut t, &post(Some("wrong"), report), T).await), Ok(401));
        assert_eq!(status(&send(&mut t, &post(Some(TOKEN), b"[1,2]"), T).await), Ok(400));
        assert_eq!(status(&send(&mut t, &post(Some(TOKEN), br#"{"timestamp":5}"#), T).await), Ok(400));
        Ok(())
    });
    sim.run().unwrap();
    let seen = server_requests(&records.take());
    assert_eq!(seen[0], (Some(AGENT.to_string()), "POST".into(), format!("/api/v1/agents/{AGENT}/system-info"), 200));
}

#[test]
fn a_broken_route_fails_alone_while_the_rest_of_the_api_works() {
    let mut sim = sim(12, Duration::from_millis(1), Duration::from_secs(900));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    sim.client("agent", async move {
        let mut t = direct();
        let logs = Request {
            method: Method::Post,
            path: logs_path(AGENT),
            bearer: Some(Secret::new(TOKEN)),
            json_body: Some(br#"{"command_id":"c1","action":"scan_updates","result":"success"}"#.to_vec()),
        };
        modes.set_broken(ApiRoute::Logs, Some(Broken::status(500)));
        assert_eq!(status(&send(&mut t, &logs, T).await), Ok(500));
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200), "check-ins work");
        assert_eq!(status(&send(&mut t, &health_req(), T).await), Ok(200));
        assert!(db.result(AGENT, "c1").is_none(), "a broken route does no work");
        // Hanging: no answer within any client's timeout; other routes unaffected meanwhile.
        modes.set_broken(ApiRoute::Logs, Some(Broken::HANG));
        modes.set_broken(ApiRoute::Health, Some(Broken::status(503)));
        assert_eq!(status(&send(&mut t, &logs, T).await), Err(TransportError::Timeout));
        assert_eq!(status(&send(&mut t, &health_req(), T).await), Ok(503));
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        // Slow: the work is done and the answer held; a short timeout gives up on it.
        modes.set_broken(ApiRoute::Logs, Some(Broken { status: None, delay: Some(Duration::from_secs(3)) }));
        assert_eq!(status(&send(&mut t, &logs, Duration::from_secs(1)).await), Err(TransportError::Timeout));
        assert!(db.result(AGENT, "c1").is_some(), "a slow route does the work");
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &logs, T).await), Ok(200));
        assert!(started.elapsed() >= Duration::from_secs(3));
        modes.set_broken(ApiRoute::Logs, None);
        assert_eq!(status(&send(&mut t, &logs, T).await), Ok(200));
        modes.set_broken(ApiRoute::Renew, Some(Broken::status(502)));
        assert_eq!(status(&send(&mut t, &renew_req(REFRESH), T).await), Ok(502));
        modes.set_broken(ApiRoute::Renew, None);
        assert_eq!(status(&send(&mut t, &renew_req(REFRESH), T).await), Ok(200));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn http_status_mode_answers_agent_routes_with_retry_after() {
    let mut sim = sim(5, Duration::from_millis(1), Duration::from_secs(60));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    sim.client("agent", async move {
        let mut t = direct();
        modes.set_http_status(Some((503, Some(7))));
        let r = send(&mut t, &checkin_req(TOKEN), T).await.unwrap();
        assert_eq!((r.status, r.retry_after.as_deref()), (503, Some("7")));
        assert_eq!(status(&send(&mut t, &health_req(), T).await), Ok(200));
        modes.set_http_status(None);
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn slow_mode_holds_responses_and_trips_short_timeouts() {
    let mut sim = sim(6, Duration::from_millis(1), Duration::from_secs(120));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    sim.client("agent", async move {
        let mut t = direct();
        modes.set_slow(Some(Duration::from_secs(15)));
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Err(TransportError::Timeout));
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &health_req(), Duration::from_secs(30)).await), Ok(200));
        assert!(started.elapsed() >= Duration::from_secs(15), "held for {:?}", started.elapsed());
        modes.set_slow(None);
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        assert!(started.elapsed() < Duration::from_secs(1));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn queued_commands_are_delivered_once_with_the_agent_api_shape() {
    let mut sim = sim(7, Duration::from_millis(1), Duration::from_secs(60));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    db.queue_command(AGENT, Command { id: "c1".into(), kind: "scan_updates".into(), params: serde_json::json!({}) });
    add_server(&mut sim, &db, &modes, &trace);
    sim.client("agent", async move {
        let mut t = direct();
        let first = send(&mut t, &checkin_req(TOKEN), T).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"commands":[{"id":"c1","type":"scan_updates","params":{}}],"rapid_polling":null})
        );
        let second: CommandsResponse =
            serde_json::from_slice(&send(&mut t, &checkin_req(TOKEN), T).await.unwrap().body).unwrap();
        assert!(second.commands.is_empty());
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn rate_limit_resets_when_the_server_crashes_but_the_database_survives() {
    let mut sim = sim(8, Duration::from_millis(1), Duration::from_secs(120));
    let (db, modes, trace) = (registered_db(), ServerModes::default(), trace_sink());
    add_server(&mut sim, &db, &modes, &trace);
    // 0: running, 1: the client asks for a bounce, 2: bounced.
    let phase = Rc::new(Cell::new(0u8));
    let p = phase.clone();
    sim.client("agent", async move {
        let mut t = direct();
        let fresh = parse_renew_answer(&send(&mut t, &renew_req(REFRESH), T).await.unwrap().body).unwrap();
        for i in 0..RATE_LIMIT_CHECKINS_MAX {
            assert_eq!(status(&send(&mut t, &checkin_req(&fresh), T).await), Ok(200), "check-in {i}");
        }
        let limited = send(&mut t, &checkin_req(&fresh), T).await.unwrap();
        assert_eq!(limited.status, 429);
        let wait: u64 = limited.retry_after.as_deref().unwrap().parse().unwrap();
        assert!((1..=RATE_LIMIT_WINDOW.as_secs()).contains(&wait), "Retry-After {wait}");

        p.set(1);
        while p.get() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // let the server listen again
        // Still inside the window, yet admitted: the limiter died with the process. The token
        // renewed before the crash still works: the database did not.
        assert_eq!(status(&send(&mut t, &checkin_req(&fresh), T).await), Ok(200));
        Ok(())
    });
    while !sim.step().unwrap() {
        if phase.get() == 1 {
            sim.bounce("server");
            phase.set(2);
        }
    }
    assert_eq!(phase.get(), 2);
}

// ---- the proxy ------------------------------------------------------------------------------

/// server + proxy in front of it, the client talking to the proxy.
fn proxied(seed: u64, duration: Duration) -> (turmoil::Sim<'static>, ServerDb, ServerModes, ProxyControl, TraceSink) {
    let mut s = sim(seed, Duration::from_millis(1), duration);
    let (db, modes, control, trace) = (registered_db(), ServerModes::default(), ProxyControl::new(seed), trace_sink());
    add_server(&mut s, &db, &modes, &trace);
    add_proxy(&mut s, "server", SERVER_PORT, &control, &trace);
    (s, db, modes, control, trace)
}

#[test]
fn proxy_passes_requests_through() {
    let (mut sim, _db, _modes, _control, trace) = proxied(10, Duration::from_secs(60));
    sim.client("agent", async move {
        let mut t = via_proxy();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        assert_eq!(status(&send(&mut t, &checkin_req("wrong"), T).await), Ok(401));
        Ok(())
    });
    sim.run().unwrap();
    let records = trace.take();
    assert_eq!(proxy_requests(&records), [(200, "ok".to_string()), (401, "ok".to_string())]);
    let proxy_lines: Vec<_> = records.iter().filter(|r| r.host.as_ref() == "proxy").collect();
    assert!(proxy_lines.iter().all(|r| r.agent.as_deref() == Some(AGENT)), "the proxy names the agent from the path");
}

/// The server process is killed (its `run_server` future dropped) while its host stays up:
/// the host's network stack refuses connections, and the proxy answers 502, as nginx does.
#[test]
fn proxy_answers_502_when_the_server_process_is_not_listening() {
    let mut sim = sim(11, Duration::from_millis(1), Duration::from_secs(60));
    let (db, modes, control, trace) = (registered_db(), ServerModes::default(), ProxyControl::new(11), trace_sink());
    let kill = Arc::new(tokio::sync::Notify::new());
    let (db2, modes2, trace2, kill2) = (db.clone(), modes.clone(), trace.clone(), kill.clone());
    sim.host("server", move || {
        let (db, modes, trace, kill) = (db2.clone(), modes2.clone(), trace2.clone(), kill2.clone());
        async move {
            let listener = TurmoilNet::bind(SERVER_PORT).await?;
            tokio::select! {
                biased;
                _ = kill.notified() => {}
                r = run_server::<TurmoilNet>(listener, db, modes, trace, "server".into()) => r?,
            }
            // The machine is up, the process is gone: nothing listens on the port.
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    add_proxy(&mut sim, "server", SERVER_PORT, &control, &trace);
    sim.client("agent", async move {
        let mut t = via_proxy();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        kill.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let r = send(&mut t, &checkin_req(TOKEN), T).await.unwrap();
        assert_eq!(r.status, 502);
        assert!(String::from_utf8_lossy(&r.body).contains("502 Bad Gateway"));
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once, not timed out");
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(proxy_requests(&trace.take()), [(200, "ok".to_string()), (502, "refused".to_string())]);
}

/// `turmoil::Sim::crash` takes the whole machine away: nothing delivers to it, so there is no
/// RST either, and the proxy waits out its connect timeout and answers 504.
#[test]
fn proxy_answers_504_when_the_server_host_is_down() {
    let (mut sim, _db, _modes, _control, trace) = proxied(15, Duration::from_secs(60));
    let phase = Rc::new(Cell::new(0u8));
    let p = phase.clone();
    sim.client("agent", async move {
        let mut t = via_proxy();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        p.set(1);
        while p.get() != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(504));
        assert!(started.elapsed() >= UPSTREAM_CONNECT_TIMEOUT);
        Ok(())
    });
    while !sim.step().unwrap() {
        if phase.get() == 1 {
            sim.crash("server");
            phase.set(2);
        }
    }
    assert_eq!(proxy_requests(&trace.take()), [(200, "ok".to_string()), (504, "timeout".to_string())]);
}

#[test]
fn proxy_answers_504_when_the_upstream_link_stalls_or_the_upstream_is_slow() {
    let (mut sim, _db, modes, _control, trace) = proxied(12, Duration::from_secs(300));
    sim.client("agent", async move {
        let mut t = via_proxy();
        // A link that delivers nothing (turmoil `hold`): the SYN never arrives, connect times out.
        turmoil::hold("proxy", "server");
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), Duration::from_secs(90)).await), Ok(504));
        let waited = started.elapsed();
        assert!(
            waited >= UPSTREAM_CONNECT_TIMEOUT && waited < UPSTREAM_CONNECT_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        turmoil::release("proxy", "server");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200), "healed");

        // An upstream that accepts but answers after the read timeout.
        modes.set_slow(Some(UPSTREAM_READ_TIMEOUT + Duration::from_secs(30)));
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), Duration::from_secs(120)).await), Ok(504));
        let waited = started.elapsed();
        assert!(
            waited >= UPSTREAM_READ_TIMEOUT && waited < UPSTREAM_READ_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        modes.set_slow(None);
        Ok(())
    });
    sim.run().unwrap();
    let seen = proxy_requests(&trace.take());
    assert_eq!(seen, [(504, "timeout".to_string()), (200, "ok".to_string()), (504, "timeout".to_string())]);
}

/// A partition drops SYNs. Turmoil alone would report that as *refused* at once; `TurmoilNet`
/// makes it what a real network does (no answer, SYN retransmissions), so the proxy times out
/// and answers 504, and the agent, partitioned from the proxy, times out too.
#[test]
fn partitions_time_out_instead_of_refusing() {
    let (mut sim, _db, _modes, _control, trace) = proxied(13, Duration::from_secs(120));
    sim.client("agent", async move {
        let mut t = via_proxy();
        turmoil::partition("proxy", "server");
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(504));
        let waited = started.elapsed();
        assert!(
            waited >= UPSTREAM_CONNECT_TIMEOUT && waited < UPSTREAM_CONNECT_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        turmoil::repair("proxy", "server");

        turmoil::partition("agent", "proxy");
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Err(TransportError::Timeout));
        turmoil::repair("agent", "proxy");
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(proxy_requests(&trace.take()), [(504, "timeout".to_string())]);
}

/// SYNs are retransmitted (after 1 s, then 2 s more, ...): a partition that heals while a
/// connect is still trying lets the connect through, as on a real network.
#[test]
fn a_connect_survives_a_partition_that_heals_in_time() {
    let (mut sim, _db, _modes, _control, trace) = proxied(16, Duration::from_secs(60));
    sim.client("agent", async move {
        turmoil::partition("agent", "proxy");
        tokio::task::spawn_local(async {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            turmoil::repair("agent", "proxy");
        });
        let mut t = via_proxy();
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        // SYNs at 0 s, 1 s (lost) and 3 s (through).
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(3) && waited < Duration::from_secs(4), "{waited:?}");
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(proxy_requests(&trace.take()), [(200, "ok".to_string())]);
}

/// With nobody to stop it, a connect into a partition gives up like Linux: `TimedOut` after
/// 127 s (7 SYNs), which the agent classifies as a timeout.
#[test]
fn a_connect_into_a_lasting_partition_times_out_like_linux() {
    let mut sim = sim(17, Duration::from_millis(1), Duration::from_secs(300));
    sim.host("server", || async {
        let _listener = TurmoilNet::bind(SERVER_PORT).await?;
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client("agent", async {
        turmoil::partition("agent", "server");
        let started = Instant::now();
        let err = <TurmoilNet as Net>::connect("server", SERVER_PORT).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(TransportError::from_io(&err), TransportError::Timeout);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(127) && waited < Duration::from_secs(128), "{waited:?}");
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn proxy_modes_inject_status_blackhole_reset_refuse_and_delay() {
    let (mut sim, _db, _modes, control, trace) = proxied(14, Duration::from_secs(120));
    sim.client("agent", async move {
        let mut t = via_proxy();
        let settle = || tokio::time::sleep(Duration::from_millis(100));

        control.set_mode(ProxyMode::HttpStatus { status: 429, retry_after_seconds: Some(30) });
        settle().await;
        let r = send(&mut t, &checkin_req(TOKEN), T).await.unwrap();
        assert_eq!((r.status, r.retry_after.as_deref()), (429, Some("30")));

        control.set_mode(ProxyMode::Blackhole);
        settle().await;
        assert_eq!(
            status(&send(&mut t, &checkin_req(TOKEN), Duration::from_secs(3)).await),
            Err(TransportError::Timeout)
        );

        control.set_mode(ProxyMode::Reset);
        settle().await;
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Err(TransportError::Reset));

        control.set_mode(ProxyMode::Refuse);
        settle().await;
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Err(TransportError::Refused));

        control.set_mode(ProxyMode::Latency(Duration::from_secs(3)));
        settle().await;
        let started = Instant::now();
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200), "listening again after refuse");
        assert!(started.elapsed() >= Duration::from_secs(3));

        control.set_mode(ProxyMode::Pass);
        assert_eq!(control.mode(), ProxyMode::Pass);
        settle().await;
        assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
        Ok(())
    });
    sim.run().unwrap();
    let records = trace.take();
    // Only answered requests are recorded; the server saw neither the injected one nor the
    // blackholed, reset or refused ones.
    assert_eq!(
        proxy_requests(&records),
        [(429, "injected".to_string()), (200, "ok".to_string()), (200, "ok".to_string())]
    );
    assert_eq!(server_requests(&records).len(), 2);
}

/// Which of `n` requests a `Loss(rate)` proxy seeded with `seed` lost (timed out).
fn loss_pattern(seed: u64, rate: f64, n: usize) -> Vec<bool> {
    let (mut sim, _db, _modes, control, _trace) = proxied(seed, Duration::from_secs(600));
    let lost = Arc::new(Mutex::new(Vec::new()));
    let sink = lost.clone();
    sim.client("agent", async move {
        control.set_mode(ProxyMode::Loss(rate));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut t = via_proxy();
        for _ in 0..n {
            let r = send(&mut t, &checkin_req(TOKEN), Duration::from_secs(2)).await;
            sink.lock().unwrap().push(match status(&r) {
                Ok(200) => false,
                Err(TransportError::Timeout) => true,
                other => panic!("unexpected {other:?}"),
            });
        }
        Ok(())
    });
    sim.run().unwrap();
    lost.lock().unwrap().clone()
}

#[test]
fn loss_is_deterministic_per_seed() {
    let a = loss_pattern(21, 0.5, 24);
    assert_eq!(a, loss_pattern(21, 0.5, 24), "same seed, same losses");
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
    assert_ne!(a, loss_pattern(22, 0.5, 24), "another seed loses other connections");
    assert!(!loss_pattern(23, 0.0, 5).contains(&true));
    assert!(!loss_pattern(24, 1.0, 5).contains(&false));
}

// ---- the proxy streams bodies ---------------------------------------------------------------

const ORIGIN_PORT: u16 = 8081;

/// An upstream that writes `head` and `chunks`, then never finishes.
fn add_origin(sim: &mut turmoil::Sim<'static>, head: &'static [u8], chunks: usize, chunk_bytes: usize) {
    sim.host("origin", move || async move {
        let listener = TurmoilNet::bind(ORIGIN_PORT).await?;
        loop {
            let (mut s, _) = <TurmoilNet as Net>::accept(&listener).await?;
            tokio::task::spawn_local(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(head).await;
                let chunk = vec![b'x'; chunk_bytes];
                for _ in 0..chunks {
                    let framed = [format!("{chunk_bytes:x}\r\n").as_bytes(), &chunk, b"\r\n"].concat();
                    if s.write_all(&framed).await.is_err() {
                        return;
                    }
                }
                std::future::pending::<()>().await;
            });
        }
    });
}

#[test]
fn proxy_streams_an_unending_body_instead_of_buffering_it() {
    let mut sim = sim(30, Duration::from_millis(1), Duration::from_secs(300));
    let (control, trace) = (ProxyControl::new(30), trace_sink());
    // 2 MiB in 64 KiB chunks, then silence: the answer never ends.
    add_origin(&mut sim, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 32, 64 * 1024);
    add_proxy(&mut sim, "origin", ORIGIN_PORT, &control, &trace);
    sim.client("agent", async move {
        let mut t = via_proxy();
        let started = Instant::now();
        // A buffering proxy would answer nothing until the read timeout; a streaming one hands
        // the agent more than it accepts at once.
        let r = send(&mut t, &checkin_req(TOKEN), Duration::from_secs(120)).await.unwrap();
        assert!(r.body_truncated && r.body.len() == redflag_agent::server::protocol::RESPONSE_BODY_MAX_BYTES, "{}", r.body.len());
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(proxy_requests(&trace.take()), [(200, "ok".to_string())]);
}

#[test]
fn proxy_cuts_a_body_that_stalls_longer_than_the_read_timeout() {
    let mut sim = sim(31, Duration::from_millis(1), Duration::from_secs(300));
    let (control, trace) = (ProxyControl::new(31), trace_sink());
    add_origin(&mut sim, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 1, 10);
    add_proxy(&mut sim, "origin", ORIGIN_PORT, &control, &trace);
    sim.client("agent", async move {
        let mut t = via_proxy();
        let started = Instant::now();
        let r = send(&mut t, &checkin_req(TOKEN), Duration::from_secs(120)).await;
        assert_eq!(status(&r), Err(TransportError::Reset), "the head went through, the body was cut");
        let waited = started.elapsed();
        assert!(
            waited >= UPSTREAM_READ_TIMEOUT && waited < UPSTREAM_READ_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        Ok(())
    });
    sim.run().unwrap();
}

/// The models do not depend on the simulation: the same proxy and server on real loopback
/// sockets (what the live mode runs).
#[tokio::test]
async fn proxy_and_server_on_real_sockets() {
    use redflag_sim::net::TokioNet;
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let (db, modes, control, trace) =
                (registered_db(), ServerModes::default(), ProxyControl::new(1), TraceSink::new(0));
            let server = TokioNet::bind(loopback).await.unwrap();
            let server_port = <TokioNet as Net>::local_addr(&server).unwrap().port();
            let proxy = TokioNet::bind(loopback).await.unwrap();
            let proxy_port = <TokioNet as Net>::local_addr(&proxy).unwrap().port();
            tokio::task::spawn_local(run_server::<TokioNet>(server, db, modes, trace.clone(), "server".into()));
            tokio::task::spawn_local(run_proxy::<TokioNet>(
                proxy,
                "127.0.0.1".into(),
                server_port,
                control.clone(),
                trace.clone(),
                "proxy".into(),
            ));
            let mut t = HyperTransport::<TokioNet>::new(&format!("http://127.0.0.1:{proxy_port}")).unwrap();
            assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));

            control.set_mode(ProxyMode::Refuse);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Err(TransportError::Refused));
            control.set_mode(ProxyMode::Reset);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(
                status(&send(&mut t, &checkin_req(TOKEN), T).await),
                Err(TransportError::Reset),
                "rebound, then RST"
            );
            control.set_mode(ProxyMode::Pass);
            assert_eq!(status(&send(&mut t, &checkin_req(TOKEN), T).await), Ok(200));
            assert_eq!(proxy_requests(&trace.take()), [(200, "ok".to_string()), (200, "ok".to_string())]);
        })
        .await;
}
