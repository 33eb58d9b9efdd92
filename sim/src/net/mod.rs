//! The socket layer the harness's models are generic over: [`Net`], with [`TurmoilNet`]
//! (simulated sockets inside a turmoil host) and [`TokioNet`] (real sockets, for the live chaos
//! mode and the conformance test's loopback half).
//!
//! The server model, the proxy and the hyper transport are written once against [`Net`], so the
//! code judged in simulation is the code that later runs on real sockets. This file holds only
//! the socket operations those models need (bind, accept, connect, abort); HTTP lives in the
//! models themselves.
//!
//! Everything here is single-threaded friendly: streams need not be `Send`, because the models
//! drive each connection on a `tokio::task::spawn_local` task (turmoil hosts run inside a
//! `LocalSet`; the live mode must run the models inside one too).

pub mod hyper_transport;

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// Sockets, as the models use them. Every method is an associated function (there is no `Net`
/// value): the implementing type only selects the world.
pub trait Net: 'static {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    /// A bound TCP listener. Dropping it stops listening (new connections are refused).
    type Listener: 'static;

    /// Binds a listener. In turmoil only `0.0.0.0` (or loopback) addresses are accepted.
    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>>;

    /// Waits for the next connection.
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;

    /// The address the listener is bound to (the port chosen when binding port 0).
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Connects to `host:port`; `host` is a host name (a turmoil host, or DNS) or an IP literal.
    fn connect(host: &str, port: u16) -> impl Future<Output = io::Result<Self::Stream>>;

    /// Drops the connection as abruptly as the platform allows: an RST on real sockets
    /// (`SO_LINGER` 0). In turmoil there is no such switch; dropping a stream that holds unread
    /// bytes sends an RST there too, so callers read part of the request first.
    fn abort(stream: Self::Stream);
}

/// Connections a server-side model (the server, the proxy) holds open at once.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Accept errors in a row after which a model gives up (its host "crashes").
const ACCEPT_ERRORS_MAX: u32 = 1000;
/// Pause after an accept error (EMFILE and friends), so a failing accept does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The accept-loop bookkeeping both server-side models share: the open connections (owned,
/// so that dropping the model's future aborts them all, like `kill -9`), a bound on how many,
/// and a bound on consecutive accept errors.
pub struct Connections {
    tasks: tokio::task::JoinSet<()>,
    accept_errors: u32,
    who: &'static str,
}

impl Connections {
    /// `who` names the model in logs and errors (`server`, `proxy`).
    pub fn new(who: &'static str) -> Self {
        Connections { tasks: tokio::task::JoinSet::new(), accept_errors: 0, who }
    }

    /// Takes one accept's result: `Ok(Some(stream))` to serve it, `Ok(None)` to accept again
    /// (an error was paused over, or the connection was closed at once because too many are
    /// open), `Err` after [`ACCEPT_ERRORS_MAX`] errors in a row.
    pub async fn admit<S>(&mut self, accepted: io::Result<(S, SocketAddr)>) -> Result<Option<S>, Box<dyn std::error::Error>> {
        while self.tasks.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => {
                self.accept_errors = 0;
                stream
            }
            Err(e) => {
                self.accept_errors += 1;
                if self.accept_errors >= ACCEPT_ERRORS_MAX {
                    return Err(format!("{}: {} accept errors in a row, last: {e}", self.who, self.accept_errors).into());
                }
                tracing::warn!(error = %e, "{}: accept failed", self.who);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                return Ok(None);
            }
        };
        if self.tasks.len() >= CONNECTIONS_MAX {
            tracing::warn!("{}: {CONNECTIONS_MAX} connections open; closing a new one", self.who);
            drop(stream);
            return Ok(None);
        }
        Ok(Some(stream))
    }

    /// Serves an admitted connection on a local task owned by this set.
    pub fn spawn(&mut self, serve: impl std::future::Future<Output = ()> + 'static) {
        self.tasks.spawn_local(serve);
    }
}

/// Turmoil's simulated network (`turmoil::net`). Must be used from inside a turmoil host.
///
/// One correction to turmoil's TCP: when the network drops a SYN (a `partition`, or a link's
/// random loss), turmoil 0.7.2 reports the connect as *refused* at once, because the dropped
/// SYN carries the handshake's reply channel with it. A real network gives no answer at all,
/// and the kernel retransmits the SYN. [`TurmoilNet::connect`] tells the two apart (a real
/// refusal needs the SYN to reach the other host, so it can never be known on the connect's
/// first poll; a dropped SYN always is) and retransmits like Linux: after [`SYN_RTO_INITIAL`],
/// doubling, [`SYN_RETRIES_MAX`] times, then `TimedOut` (127 s in all). So a partition looks
/// like a partition: connects hang until the caller's timeout, and succeed if it heals first.
///
/// Cost: turmoil never frees the socket (and its ephemeral port) of a failed connect, so each
/// dropped SYN leaks one port on the connecting host; a caller that gives up after 10 s sends
/// 4 SYNs. Worlds with long partitions widen the ephemeral port range.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilNet;

/// Linux's initial SYN retransmission timeout (RFC 6298 §2.1's one second).
pub const SYN_RTO_INITIAL: Duration = Duration::from_secs(1);
/// Linux's `net.ipv4.tcp_syn_retries` default: retransmissions before the connect times out.
pub const SYN_RETRIES_MAX: u32 = 6;

/// One turmoil connect. `Ok(None)`: the network dropped the SYN (see [`TurmoilNet`]).
async fn turmoil_connect_once(host: &str, port: u16) -> io::Result<Option<turmoil::net::TcpStream>> {
    let mut connect = pin!(turmoil::net::TcpStream::connect((host, port)));
    let first = std::future::poll_fn(|cx| Poll::Ready(connect.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
        Poll::Ready(result) => result.map(Some),
        Poll::Pending => connect.await.map(Some),
    }
}

impl TurmoilNet {
    /// Binds `0.0.0.0:port` in the current turmoil host, the usual way a simulated server
    /// listens. (`<TurmoilNet as Net>::bind` takes a full address.)
    pub async fn bind(port: u16) -> io::Result<turmoil::net::TcpListener> {
        turmoil::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))).await
    }
}

impl Net for TurmoilNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> {
        turmoil::net::TcpListener::bind(addr)
    }

    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> {
        listener.accept()
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn connect(host: &str, port: u16) -> io::Result<Self::Stream> {
        let mut rto = SYN_RTO_INITIAL;
        for _ in 0..=SYN_RETRIES_MAX {
            if let Some(stream) = turmoil_connect_once(host, port).await? {
                return Ok(stream);
            }
            tokio::time::sleep(rto).await;
            rto *= 2;
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {host}:{port}: no answer to {} SYNs", SYN_RETRIES_MAX + 1),
        ))
    }

    fn abort(stream: Self::Stream) {
        drop(stream);
    }
}

/// Real sockets (`tokio::net`), for the live chaos mode and loopback tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNet;

impl TokioNet {
    /// Binds a real listener (same as `<TokioNet as Net>::bind`).
    pub async fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(addr).await
    }
}

impl Net for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> {
        tokio::net::TcpListener::bind(addr)
    }

    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> {
        listener.accept()
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn connect(host: &str, port: u16) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect((host, port)).await?;
        // Requests are small and answered at once; do not let Nagle delay them.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn abort(stream: Self::Stream) {
        // With a zero linger, close() sends an RST instead of a FIN. If the option cannot be
        // set, a plain close is the next best thing.
        if let Err(e) = stream.set_zero_linger() {
            tracing::debug!(error = %e, "cannot set SO_LINGER 0; closing normally");
        }
        drop(stream);
    }
}
