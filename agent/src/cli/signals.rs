//! The signals `redflag-agent run` handles: SIGTERM and SIGINT stop it (exit 0), SIGHUP asks
//! it to reload its config (a daemon must not die on HUP), SIGPIPE is ignored (a closed log
//! pipe is an error code for `log_writer`, never a reason to die).
//!
//! Handlers can only be installed once the async runtime exists; a SIGTERM that arrived before
//! that used to kill the process. So `run` first blocks the three signals ([`block_early`]),
//! builds the runtime, installs the handlers ([`Signals::install`]) and only then unblocks them
//! ([`EarlyMask::release`]): a signal that came in between was held pending by the kernel and
//! now reaches the handler. The release unblocks them even when the agent was started with
//! them blocked (an inherited signal mask), so a supervisor can always stop it.
//!
//! What a reload does is `run.rs`'s business; this file only says which signal came.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM, SIGINT and SIGHUP, blocked in this thread until [`EarlyMask::release`].
#[must_use = "release the mask once the handlers are installed"]
pub struct EarlyMask {
    set: libc::sigset_t,
}

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (call it first thing, before any
/// other thread exists, so every thread inherits the mask).
pub fn block_early() -> EarlyMask {
    let set = handled_set();
    // SAFETY: pthread_sigmask with a valid set; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    EarlyMask { set }
}

impl EarlyMask {
    /// Unblocks the three signals; one that is pending is delivered now.
    pub fn release(self) {
        // SAFETY: pthread_sigmask with a valid set.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}

/// Ignores SIGPIPE (Rust's runtime does so before `main`; this makes it independent of that).
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// A signal that matters to the running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGTERM or SIGINT (named): stop, exit 0.
    Stop(&'static str),
    /// SIGHUP: reload the config.
    Reload,
}

/// The installed handlers, as streams.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers. Must run inside the tokio runtime (with its signal driver).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Stopping wins over a reload that came at the same time.
    pub async fn next(&mut self) -> Received {
        tokio::select! {
            biased;
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hup.recv() => Received::Reload,
        }
    }
}
