//! `redflag-sim proxy`: the nginx-like fault proxy on real sockets, switched over HTTP like
//! toxiproxy through a control API on a separate loopback address.
//!
//! The proxy itself is `models/proxy.rs`, unchanged: 502 when the upstream refuses or resets, 504
//! when it does not answer in time, one request per connection, and the fault modes. This file
//! only gives it a command line, a control API and a trace file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;

use http::{Method, StatusCode};

use super::control_http::{self, Handler, error, require_loopback};
use super::modes::{self, ProxyModeSpec};
use super::service::{self, EXIT_INVALID};
use crate::net::TokioNet;
use crate::models::proxy::{ProxyControl, run_proxy};

const CONTROL_HELP: &str = "\
Control API (on --control, which must be a loopback address; peers that are not on loopback
are answered 403):
  GET  /mode    the mode in effect, as JSON
  PUT  /mode    switch mode; takes effect for the next connection:
                {\"mode\":\"pass\"}        forward, nginx style (502 refused upstream, 504 timeout)
                {\"mode\":\"refuse\"}      stop listening: connections are refused
                {\"mode\":\"blackhole\"}   accept connections and never answer
                {\"mode\":\"reset\"}       drop connections without an answer (RST)
                {\"mode\":\"latency\",\"delay_ms\":1500}
                {\"mode\":\"loss\",\"rate\":0.3}   blackhole that share of connections
                {\"mode\":\"http_status\",\"status\":502,\"retry_after\":5}
Requests answered on --listen are traced as JSON Lines to --trace (t_ms in Unix ms).";

/// `redflag-sim proxy`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = CONTROL_HELP)]
pub struct ProxyArgs {
    /// Address the proxy listens on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The server behind it, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: String,
    /// Loopback address of the control API.
    #[arg(long, value_name = "ADDR")]
    pub control: SocketAddr,
    /// Append a JSON Lines trace of every answered request here.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<PathBuf>,
    /// Seed of the `loss` mode's choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mode to start in, as the JSON `PUT /mode` takes.
    #[arg(long, value_name = "JSON")]
    pub mode: Option<String>,
}

/// `host:port` (a bracketed IPv6 host loses its brackets).
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || port == 0 {
        return Err(format!("{text:?} is not HOST:PORT"));
    }
    Ok((host.to_string(), port))
}

/// Runs `redflag-sim proxy` until SIGTERM/SIGINT; the exit code.
pub fn main(args: ProxyArgs) -> u8 {
    service::init_logging();
    if let Err(e) = require_loopback(&args.control, "--control") {
        eprintln!("error: {e}");
        return EXIT_INVALID;
    }
    let (host, port) = match parse_host_port(&args.upstream) {
        Ok(hp) => hp,
        Err(e) => {
            eprintln!("error: --upstream {e}");
            return EXIT_INVALID;
        }
    };
    let control = ProxyControl::new(args.seed);
    if let Some(json) = &args.mode {
        match modes::parse::<ProxyModeSpec>(json.as_bytes(), ProxyModeSpec::validate) {
            Ok(m) => control.set_mode(m.to_mode()),
            Err(e) => {
                eprintln!("error: --mode: {e}");
                return EXIT_INVALID;
            }
        }
    }
    service::run(args.trace.clone(), move |trace| async move {
        let listener = service::bind(args.listen, "proxy").await?;
        let control_listener = service::bind(args.control, "control API").await?;
        eprintln!("redflag-sim proxy: listening on {}, upstream {host}:{port}, control API on {}", args.listen, args.control);
        let handler = control_handler(control.clone());
        let control_task = tokio::task::spawn_local(control_http::serve_control(control_listener, handler));
        let served = run_proxy::<TokioNet>(listener, host, port, control, trace, "proxy".into()).await;
        control_task.abort();
        served.map_err(|e| format!("proxy: {e}"))
    })
}

fn control_handler(control: ProxyControl) -> Handler {
    Rc::new(move |method: &Method, path: &str, body: &[u8]| match (method.as_str(), path) {
        ("GET", "/mode") => (StatusCode::OK, json(&ProxyModeSpec::from_mode(&control.mode()))),
        ("PUT", "/mode") => match modes::parse::<ProxyModeSpec>(body, ProxyModeSpec::validate) {
            Ok(spec) => {
                control.set_mode(spec.to_mode());
                (StatusCode::OK, json(&ProxyModeSpec::from_mode(&control.mode())))
            }
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        },
        (_, "/mode") => error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on /mode")),
        _ => error(StatusCode::NOT_FOUND, format!("no {path}; try GET or PUT /mode")),
    })
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(parse_host_port("127.0.0.1:8080").unwrap(), ("127.0.0.1".into(), 8080));
        assert_eq!(parse_host_port("[::1]:80").unwrap(), ("::1".into(), 80));
        assert_eq!(parse_host_port("server:80").unwrap(), ("server".into(), 80));
        assert!(parse_host_port("server").is_err());
        assert!(parse_host_port(":80").is_err());
        assert!(parse_host_port("x:0").is_err());
        assert!(parse_host_port("x:99999").is_err());
    }
}
