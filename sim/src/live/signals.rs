//! Ctrl-C and SIGTERM for the live orchestrator: a flag its loops poll, so that an interrupted
//! run still stops every process it started and removes what it created.
//!
//! The handler only stores to an atomic (async-signal-safe); all the work happens in the
//! orchestrator's normal unwinding. A second signal while stopping is ignored the same way;
//! the cleanup is bounded in time.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: libc::c_int) {
    RECEIVED.store(signal, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() -> Result<(), String> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a plain handler and an empty mask is valid; the
        // handler only touches an atomic.
        let ok = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut()) == 0
        };
        if !ok {
            return Err(format!("cannot install a handler for signal {signal}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The signal received, if any (SIGINT or SIGTERM).
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
