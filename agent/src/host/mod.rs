//! The machine the agent runs on: the [`Host`] trait the check-in loop asks for wall-clock time
//! and system metrics, [`SystemHost`] (production: `/proc` and `statvfs`), the [`Identity`]
//! that `redflag-agent register` reports, and (`system_info.rs`) the description of the machine
//! that registration and `POST /system-info` send.
//!
//! Metrics are what RedFlag 0.1.18's server stores and shows for an agent, in the units its Go
//! agent sends: CPU, memory and root-disk use (percent, and used/total in GiB), and the system
//! uptime as `uptime -p` text. Every reader here fails soft: a missing `/proc` file leaves its
//! fields out of the check-in, it never fails a check-in. The simulation has its own `Host`
//! (no metrics, a simulated clock); nothing here is reached from inside turmoil.
//!
//! The text parsers are pure functions over the file contents, so they are unit-tested on
//! fixed inputs; only [`SystemHost`] and [`identity`] read the real files.

pub mod system_info;

use std::ffi::CString;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::server::protocol::{Metrics, SystemInfoReport};

/// The machine the agent runs on, as far as the loop cares.
pub trait Host {
    /// Wall-clock time, for HTTP-date Retry-After values, rapid-polling deadlines and the
    /// status file. (Scheduling never uses it: that is `tokio::time`.)
    fn wall_clock(&self) -> SystemTime;
    /// System metrics for the check-in body; fields left `None` are not sent.
    fn metrics(&self, _into: &mut Metrics) {}
    /// Log lines that could not be written (a closed stderr), for the status file.
    fn log_lines_dropped(&self) -> u64 {
        0
    }
    /// The `POST /system-info` body describing this machine, collected `now`; `None` when this
    /// host has nothing to describe (the simulation's hosts).
    fn system_info(&self, _now: SystemTime) -> Option<SystemInfoReport> {
        None
    }
}

/// Production: the system clock, and metrics from `/proc` and `statvfs("/")`.
///
/// CPU use is the busy share of all CPU time *between two check-ins* (the first check-in after
/// start sends none), from `/proc/stat`'s counters: cheap, no sampling thread.
#[derive(Debug, Default)]
pub struct SystemHost {
    last_cpu: Mutex<Option<CpuTimes>>,
}

impl SystemHost {
    pub fn new() -> Self {
        SystemHost::default()
    }
}

impl Host for SystemHost {
    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn log_lines_dropped(&self) -> u64 {
        crate::log::writer::dropped_lines()
    }

    fn system_info(&self, now: SystemTime) -> Option<SystemInfoReport> {
        Some(system_info::collect().report(&identity(), now))
    }

    fn metrics(&self, into: &mut Metrics) {
        if let Some(mem) = read_bounded("/proc/meminfo").as_deref().and_then(memory_from_meminfo) {
            into.memory_percent = Some(round2(mem.used_percent()));
            into.memory_used_gb = Some(round2(gib(mem.used_bytes())));
            into.memory_total_gb = Some(round2(gib(mem.total_bytes)));
        }
        if let Some(disk) = disk_usage("/") {
            into.disk_used_gb = Some(round2(gib(disk.used_bytes)));
            into.disk_total_gb = Some(round2(gib(disk.total_bytes)));
            into.disk_percent = Some(round2(disk.used_percent()));
        }
        if let Some(secs) = read_bounded("/proc/uptime").as_deref().and_then(uptime_seconds) {
            into.uptime = Some(format_uptime(secs));
        }
        if let Some(now) = read_bounded("/proc/stat").as_deref().and_then(cpu_times) {
            let mut last = self.last_cpu.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(before) = last.replace(now) {
                into.cpu_percent = cpu_percent(before, now).map(round2);
            }
        }
    }
}

/// `/proc` files are small; read at most this much of one.
const PROC_FILE_MAX_BYTES: u64 = 256 * 1024;

fn read_bounded(path: &str) -> Option<String> {
    read_bounded_up_to(path, PROC_FILE_MAX_BYTES)
}

/// At most `max_bytes` of the text file at `path`; `None` when it cannot be read.
fn read_bounded_up_to(path: &str, max_bytes: u64) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(max_bytes).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---- memory --------------------------------------------------------------------------------

/// Memory from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl Memory {
    /// In use: total minus what is available without swapping (the Go agent's "used").
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }

    pub fn used_percent(&self) -> f64 {
        if self.total_bytes == 0 { 0.0 } else { self.used_bytes() as f64 / self.total_bytes as f64 * 100.0 }
    }
}

/// `MemTotal` and `MemAvailable` (kB in the file).
pub fn memory_from_meminfo(text: &str) -> Option<Memory> {
    let kib = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse::<u64>().ok()?.checked_mul(1024)
    };
    let total_bytes = kib("MemTotal:")?;
    let available_bytes = kib("MemAvailable:")?;
    (total_bytes > 0).then_some(Memory { total_bytes, available_bytes })
}

// ---- disk ----------------------------------------------------------------------------------

/// One filesystem's size and use, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disk {
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// Free for unprivileged users (excludes the root reserve).
    pub available_bytes: u64,
}

impl Disk {
    /// `df`'s Use%: used / (used + available), so the root reserve counts as neither.
    pub fn used_percent(&self) -> f64 {
        let denominator = self.used_bytes.saturating_add(self.available_bytes);
        if denominator == 0 { 0.0 } else { self.used_bytes as f64 / denominator as f64 * 100.0 }
    }
}

/// `statvfs(path)`, or `None` when it fails.
pub fn disk_usage(path: &str) -> Option<Disk> {
    let c_path = CString::new(path).ok()?;
    // SAFETY: statvfs(3) writes only into the zeroed struct we pass, and reads the
    // NUL-terminated path we own for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = u64::from(st.f_frsize);
    let blocks = |n| u64::from(n).saturating_mul(unit);
    let total_bytes = blocks(st.f_blocks);
    let free_bytes = blocks(st.f_bfree);
    let available_bytes = blocks(st.f_bavail);
    Some(Disk { total_bytes, used_bytes: total_bytes.saturating_sub(free_bytes), available_bytes })
}

// ---- uptime --------------------------------------------------------------------------------

/// The first number of `/proc/uptime`, whole seconds.
pub fn uptime_seconds(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
}

/// `uptime -p` (procps-ng) text: "up 1 year, 2 weeks, 3 days, 4 hours, 5 minutes", leaving out
/// zero units, "up 0 minutes" in the first minute. This is what the Go agent sends.
pub fn format_uptime(seconds: u64) -> String {
    const UNITS: [(&str, u64); 5] = [("year", 365 * 86_400), ("week", 7 * 86_400), ("day", 86_400), ("hour", 3_600), ("minute", 60)];
    let mut rest = seconds;
    let mut parts = Vec::new();
    for (name, size) in UNITS {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if parts.is_empty() {
        return "up 0 minutes".into();
    }
    format!("up {}", parts.join(", "))
}

// ---- CPU -----------------------------------------------------------------------------------

/// The aggregate `cpu` line of `/proc/stat`: busy and total jiffies since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// Reads the first line (`cpu  user nice system idle iowait irq softirq steal ...`). Idle and
/// iowait are idle; guest time is already inside user and nice, so it is not added again.
pub fn cpu_times(text: &str) -> Option<CpuTimes> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if values.len() < 4 {
        return None;
    }
    let total = values.iter().try_fold(0u64, |a, v| a.checked_add(*v))?;
    let idle = values[3].checked_add(values.get(4).copied().unwrap_or(0))?;
    Some(CpuTimes { busy: total.checked_sub(idle)?, total })
}

/// The busy share between two readings, in percent; `None` when no time passed or the
/// counters went backwards.
pub fn cpu_percent(before: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(before.total)?;
    let busy = now.busy.checked_sub(before.busy)?;
    (total > 0).then(|| (busy as f64 / total as f64 * 100.0).min(100.0))
}

// ---- identity (registration) ---------------------------------------------------------------

/// Who this machine is, in the terms of RedFlag's registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub hostname: String,
    /// `linux`, as Go's `runtime.GOOS` says.
    pub os_type: String,
    /// `/etc/os-release`'s `PRETTY_NAME`, e.g. "Debian GNU/Linux 13 (trixie)".
    pub os_version: String,
    /// Go's `runtime.GOARCH` spelling: `amd64`, `arm64`, ...
    pub os_architecture: String,
}

/// Longest hostname kept (a Linux hostname is at most 64 bytes).
const HOSTNAME_MAX_LEN: usize = 253;

/// This machine's identity. Never fails: unknown parts are "unknown" / "Linux".
pub fn identity() -> Identity {
    let hostname = read_bounded("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.len() <= HOSTNAME_MAX_LEN)
        .unwrap_or_else(|| "unknown".into());
    let os_version = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| read_bounded(p).as_deref().and_then(os_release_name))
        .unwrap_or_else(|| "Linux".into());
    Identity {
        hostname,
        os_type: std::env::consts::OS.to_string(),
        os_version,
        os_architecture: go_arch(std::env::consts::ARCH).to_string(),
    }
}

/// `PRETTY_NAME`, else `NAME VERSION_ID`, from os-release text.
pub fn os_release_name(text: &str) -> Option<String> {
    let value = |key: &str| -> Option<String> {
        let line = text.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with('='))?;
        let v = line[key.len() + 1..].trim().trim_matches(|c| c == '"' || c == '\'').trim();
        (!v.is_empty()).then(|| v.to_string())
    };
    value("PRETTY_NAME").or_else(|| {
        let name = value("NAME")?;
        Some(match value("VERSION_ID") {
            Some(v) => format!("{name} {v}"),
            None => name,
        })
    })
}

/// Rust's `std::env::consts::ARCH` in Go's `GOARCH` spelling, which the Go agent (and so the
/// server's dashboard) uses.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n";
        let m = memory_from_meminfo(text).unwrap();
        assert_eq!(m.total_bytes, 16_000_000 * 1024);
        assert_eq!(m.used_bytes(), 12_000_000 * 1024);
        assert_eq!(m.used_percent(), 75.0);
        assert_eq!(memory_from_meminfo("MemTotal: x kB\n"), None);
        assert_eq!(memory_from_meminfo("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }

    #[test]
    fn uptime_text_is_what_uptime_p_prints() {
        assert_eq!(uptime_seconds("350735.47 234388.90\n"), Some(350_735));
        assert_eq!(uptime_seconds("nan 1"), None);
        assert_eq!(format_uptime(0), "up 0 minutes");
        assert_eq!(format_uptime(59), "up 0 minutes");
        assert_eq!(format_uptime(60), "up 1 minute");
        assert_eq!(format_uptime(2 * 3600 + 5 * 60), "up 2 hours, 5 minutes");
        assert_eq!(format_uptime(350_735), "up 4 days, 1 hour, 25 minutes");
        assert_eq!(format_uptime(400 * 86_400 + 60), "up 1 year, 5 weeks, 1 minute");
    }

    #[test]
    fn cpu_share_between_two_readings() {
        let a = cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(a, CpuTimes { busy: 200, total: 1000 });
        let b = cpu_times("cpu  200 0 200 1300 300 0 0 0 0 0\n").unwrap();
        assert_eq!(cpu_percent(a, b), Some(20.0));
        assert_eq!(cpu_percent(a, a), None);
        assert_eq!(cpu_percent(b, a), None);
        assert_eq!(cpu_times("intr 1 2 3"), None);
    }

    #[test]
    fn disk_of_the_root_filesystem() {
        let d = disk_usage("/").expect("statvfs /");
        assert!(d.total_bytes > 0 && d.used_bytes <= d.total_bytes, "{d:?}");
        assert!((0.0..=100.0).contains(&d.used_percent()));
        assert_eq!(disk_usage("/no/such/dir"), None);
        assert_eq!(disk_usage("a\0b"), None);
    }

    #[test]
    fn os_release_and_arch() {
        let text = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n";
        assert_eq!(os_release_name(text).as_deref(), Some("Debian GNU/Linux 13 (trixie)"));
        assert_eq!(os_release_name("NAME=Alpine\nVERSION_ID=3.20\n").as_deref(), Some("Alpine 3.20"));
        assert_eq!(os_release_name("PRETTY_NAMES=x\n"), None);
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
        assert_eq!(go_arch("riscv64"), "riscv64");
    }

    #[test]
    fn system_host_fills_the_fields_the_server_stores() {
        let host = SystemHost::new();
        let mut m = Metrics::default();
        host.metrics(&mut m);
        assert!(m.memory_percent.is_some() && m.memory_total_gb.is_some() && m.disk_total_gb.is_some(), "{m:?}");
        assert!(m.uptime.as_deref().is_some_and(|u| u.starts_with("up ")), "{m:?}");
        assert_eq!(m.cpu_percent, None, "no CPU share before a second reading");
        host.metrics(&mut m);
        // The second reading may be in the same jiffy; when it is not, it is a share.
        assert!(m.cpu_percent.is_none_or(|c| (0.0..=100.0).contains(&c)), "{m:?}");
    }
}
