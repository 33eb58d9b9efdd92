//! The child processes of a live run: starting them so they cannot outlive the run, killing
//! them, noticing when one exits on its own, and stopping every one of them at the end.
//!
//! Rules this file keeps:
//! * Only processes it started are ever signalled, by the PID of a `Child` it still owns and
//!   has not reaped (so the PID cannot have been reused by another process).
//! * Every child gets its own process group (a Ctrl-C in the terminal reaches the orchestrator
//!   alone, which then stops the children in order) and `PR_SET_PDEATHSIG` = SIGKILL (should
//!   the orchestrator itself be killed with SIGKILL, the kernel ends its children).
//! * [`Processes::stop_all`] runs on drop too, so a failure, a panic or an interrupt still
//!   stops everything: SIGTERM, a grace period, then SIGKILL, and every child is reaped.

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How long stopped children get between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// How often waits poll for an exit.
const POLL: Duration = Duration::from_millis(20);

/// What a child process is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Server,
    Proxy,
    /// Agent number N.
    Agent(u32),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Server => f.write_str("server"),
            Role::Proxy => f.write_str("proxy"),
            Role::Agent(i) => write!(f, "agent-{i}"),
        }
    }
}

/// One process this run started (kept after it ended, for the report and the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub role: Role,
    pub pid: u32,
}

struct Running {
    role: Role,
    pid: u32,
    child: Child,
}

/// Every child of the run.
pub struct Processes {
    running: Vec<Running>,
    started: Vec<Started>,
}

impl Default for Processes {
    fn default() -> Self {
        Self::new()
    }
}

impl Processes {
    pub fn new() -> Self {
        Processes { running: Vec::new(), started: Vec::new() }
    }

    /// Starts `cmd` as `role` (stdio as the caller set it up); the running `Child` is kept here,
    /// and returned by reference for taking its pipes.
    pub fn spawn(&mut self, role: Role, mut cmd: Command) -> io::Result<&mut Child> {
        let parent = std::process::id() as libc::pid_t;
        cmd.process_group(0);
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls (prctl, getppid); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                // The orchestrator died before prctl took effect: do not run orphaned.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id();
        self.started.push(Started { role, pid });
        self.running.push(Running { role, pid, child });
        Ok(&mut self.running.last_mut().expect("just pushed").child)
    }

    /// Every process this run started, in start order.
    pub fn started(&self) -> &[Started] {
        &self.started
    }

    /// PIDs of the running processes with this role.
    pub fn pids(&self, role: Role) -> Vec<u32> {
        self.running.iter().filter(|r| r.role == role).map(|r| r.pid).collect()
    }

    pub fn is_running(&self, role: Role) -> bool {
        self.running.iter().any(|r| r.role == role)
    }

    /// SIGKILLs every running process with this role and reaps it: `kill -9`.
    pub fn kill(&mut self, role: Role) {
        let (victims, rest): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running).into_iter().partition(|r| r.role == role);
        self.running = rest;
        for mut v in victims {
            let _ = v.child.kill();
            let _ = v.child.wait();
        }
    }

    /// Processes that exited by themselves since the last call (reaped and forgotten).
    pub fn reap_exited(&mut self) -> Vec<(Role, u32, ExitStatus)> {
        let mut out = Vec::new();
        self.running.retain_mut(|r| match r.child.try_wait() {
            Ok(Some(status)) => {
                out.push((r.role, r.pid, status));
                false
            }
            Ok(None) => true,
            Err(_) => true,
        });
        out
    }

    /// Stops every running child: SIGTERM, up to `grace` to exit, then SIGKILL; all reaped.
    pub fn stop_all(&mut self, grace: Duration) {
        for r in &self.running {
            // SAFETY: plain kill(2) on the PID of a child we own and have not reaped.
            unsafe {
                libc::kill(r.pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while !self.running.is_empty() && Instant::now() < deadline {
            self.running.retain_mut(|r| !matches!(r.child.try_wait(), Ok(Some(_))));
            if !self.running.is_empty() {
                std::thread::sleep(POLL);
            }
        }
        for mut r in std::mem::take(&mut self.running) {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop_all(STOP_GRACE);
    }
}

/// A process's resident set size in KiB (`VmRSS` in `/proc/PID/status`), if it is running.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `12.3 MiB (12595 KiB)`.
pub fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB ({kib} KiB)", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        assert_eq!(parse_vm_rss("Name:\tx\nVmRSS:\t    5120 kB\nVmData: 1 kB\n"), Some(5120));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn stops_and_reaps_what_it_started() {
        let mut p = Processes::new();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let pid = p.spawn(Role::Agent(0), cmd).unwrap().id();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; exec sleep 30"]);
        p.spawn(Role::Server, cmd).unwrap();
        let mut cmd = Command::new("true");
        cmd.arg("x");
        p.spawn(Role::Proxy, cmd).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(p.reap_exited().iter().map(|(r, _, _)| *r).collect::<Vec<_>>(), [Role::Proxy]);
        assert_eq!(p.pids(Role::Agent(0)), [pid]);
        p.stop_all(Duration::from_millis(300));
        assert!(!p.is_running(Role::Server) && !p.is_running(Role::Agent(0)));
        assert_eq!(p.started().len(), 3);
        for s in p.started() {
            assert!(!std::path::Path::new(&format!("/proc/{}", s.pid)).exists(), "{s:?} still there");
        }
    }
}
