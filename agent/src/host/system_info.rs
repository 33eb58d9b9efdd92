//! What the server's agent card shows about the machine, collected as RedFlag 0.1.18's Go agent
//! collects it: CPU model and logical CPUs, memory, the root filesystem, the process count, the
//! uptime and the primary address. It goes to the server twice, in the Go agent's two shapes:
//!
//! * at registration, as string `metadata` ([`SystemInfo::registration_metadata`]: the server
//!   binds `map[string]string`): `cpu_model`, `cpu_cores`, `memory_total`, `processes`,
//!   `uptime`, `disk_mount`, `disk_total`, `disk_used` and `installation_time`;
//! * in `POST /system-info` ([`SystemInfo::report`]), with numbers as numbers.
//!
//! Differences from the Go agent, each deliberate: sizes come from `statvfs` and
//! `/proc/meminfo` in exact bytes (the Go agent parses `df -h`'s rounded "252G"); the disk is the
//! root filesystem (the Go agent takes `df`'s first real filesystem, `/` on ordinary hosts);
//! processes are the numeric entries of `/proc` (the Go agent counts `ps -e` lines, one too
//! many); nothing is run as a subprocess.
//!
//! The parsers are pure functions over file contents and unit-tested; [`collect`] does the
//! reads (bounded) and never fails: what cannot be read is left out. Nothing here is reached
//! from inside the simulation.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use serde_json::Value;

use super::{Identity, disk_usage, format_uptime, memory_from_meminfo, read_bounded, read_bounded_up_to, uptime_seconds};
use crate::server::protocol::{AGENT_VERSION, BUILD_VERSION_KEY, IMPLEMENTATION, IMPLEMENTATION_KEY, SystemInfoReport};

/// The filesystem reported as the disk.
pub const ROOT_MOUNT: &str = "/";
/// `/proc/cpuinfo` is about 1.5 KiB per CPU: this covers a few thousand CPUs.
const CPUINFO_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Longest CPU model or filesystem source kept (text from the kernel, but bounded all the same).
const TEXT_MAX_CHARS: usize = 256;
/// Entries of `/proc` looked at, at most (Linux's `pid_max` is at most 4,194,304).
const PROC_ENTRIES_MAX: usize = 4_194_304 + 1024;
/// Interface addresses looked at, at most.
const INTERFACE_ADDRESSES_MAX: usize = 4096;

/// The machine, as far as it could be read; `None` where it could not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemInfo {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Logical CPUs (`processor` entries of `/proc/cpuinfo`).
    pub cpu_cores: Option<u32>,
    pub memory_total_bytes: Option<u64>,
    /// The root filesystem's device (`/dev/vda1`), from `/proc/self/mounts`.
    pub disk_filesystem: Option<String>,
    pub disk_total_bytes: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    pub processes: Option<u64>,
    /// `uptime -p` text.
    pub uptime: Option<String>,
    /// The first address of an interface that is up, not loopback and not link-local, IPv4
    /// first (what `hostname -I` prints first, which the Go agent sends).
    pub ip_address: Option<IpAddr>,
}

impl SystemInfo {
    /// The Go agent's registration metadata: every value a string, `installation_time` RFC 3339.
    pub fn registration_metadata(&self, now: SystemTime) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("installation_time".to_string(), rfc3339(now));
        let mut put = |key: &str, value: Option<String>| {
            if let Some(v) = value {
                m.insert(key.to_string(), v);
            }
        };
        put("cpu_model", self.cpu_model.clone());
        put("cpu_cores", self.cpu_cores.map(|n| n.to_string()));
        put("memory_total", self.memory_total_bytes.map(|n| n.to_string()));
        put("processes", self.processes.map(|n| n.to_string()));
        put("uptime", self.uptime.clone());
        if self.disk_total_bytes.is_some() {
            put("disk_mount", Some(ROOT_MOUNT.to_string()));
            put("disk_total", self.disk_total_bytes.map(|n| n.to_string()));
            put("disk_used", self.disk_used_bytes.map(|n| n.to_string()));
        }
        m
    }

    /// The `POST /system-info` body, as the Go agent fills it, plus this agent's build.
    pub fn report(&self, identity: &Identity, now: SystemTime) -> SystemInfoReport {
        let mut metadata = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            metadata.insert(key.to_string(), Value::String(value));
        };
        if self.disk_total_bytes.is_some() {
            put("disk_mount", ROOT_MOUNT.to_string());
        }
        if let Some(fs) = &self.disk_filesystem {
            put("disk_filesystem", fs.clone());
        }
        put("collected_at", rfc3339(now));
        put("hostname", identity.hostname.clone());
        put("os_type", identity.os_type.clone());
        put("os_version", identity.os_version.clone());
        put("os_architecture", identity.os_architecture.clone());
        put(BUILD_VERSION_KEY, AGENT_VERSION.to_string());
        put(IMPLEMENTATION_KEY, IMPLEMENTATION.to_string());
        SystemInfoReport {
            timestamp: rfc3339(now),
            cpu_model: self.cpu_model.clone(),
            cpu_cores: self.cpu_cores,
            cpu_threads: self.cpu_cores,
            memory_total_bytes: self.memory_total_bytes,
            disk_total_bytes: self.disk_total_bytes,
            disk_used_bytes: self.disk_used_bytes,
            ip_address: self.ip_address.map(|ip| ip.to_string()),
            processes: self.processes,
            uptime: self.uptime.clone(),
            metadata,
        }
    }
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Reads the machine. Never fails; each part that cannot be read is `None`.
pub fn collect() -> SystemInfo {
    let (cpu_model, cpu_cores) = read_bounded_up_to("/proc/cpuinfo", CPUINFO_MAX_BYTES).as_deref().map(cpu_from_cpuinfo).unwrap_or_default();
    let disk = disk_usage(ROOT_MOUNT);
    SystemInfo {
        cpu_model,
        cpu_cores,
        memory_total_bytes: read_bounded("/proc/meminfo").as_deref().and_then(memory_from_meminfo).map(|m| m.total_bytes),
        disk_filesystem: read_bounded("/proc/self/mounts").as_deref().and_then(|t| mount_source(t, ROOT_MOUNT)),
        disk_total_bytes: disk.map(|d| d.total_bytes).filter(|&n| n > 0),
        disk_used_bytes: disk.map(|d| d.used_bytes),
        processes: std::fs::read_dir("/proc")
            .ok()
            .map(|entries| count_processes(entries.take(PROC_ENTRIES_MAX).filter_map(Result::ok).map(|e| e.file_name()))),
        uptime: read_bounded("/proc/uptime").as_deref().and_then(uptime_seconds).map(format_uptime),
        ip_address: primary_address(&interface_addresses()),
    }
}

// ---- CPU -----------------------------------------------------------------------------------

/// `model name` (the last one, as the Go agent keeps it; they are all the same on x86) and the
/// number of `processor` entries, from `/proc/cpuinfo`. A file without `model name` (most ARM
/// kernels) gives no model; one without `processor` lines gives no count.
pub fn cpu_from_cpuinfo(text: &str) -> (Option<String>, Option<u32>) {
    let mut model = None;
    let mut count: u32 = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        match key.trim() {
            "processor" => count = count.saturating_add(1),
            "model name" => {
                let v = value.trim();
                if !v.is_empty() {
                    model = Some(v.chars().take(TEXT_MAX_CHARS).collect());
                }
            }
            _ => {}
        }
    }
    (model, (count > 0).then_some(count))
}

// ---- disk ----------------------------------------------------------------------------------

/// The device mounted at `mount_point`, from `/proc/self/mounts` text (`source target fstype
/// options 0 0`, octal escapes for spaces). The last entry wins: a later mount hides an
/// earlier one at the same place.
pub fn mount_source(text: &str, mount_point: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (source, target) = (fields.next()?, fields.next()?);
            (unescape_mount_field(target) == mount_point).then(|| unescape_mount_field(source))
        })
        .last()
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(TEXT_MAX_CHARS).collect())
}

/// `/proc/self/mounts` writes a space as `\040`, a tab as `\011`, a newline as `\012` and a
/// backslash as `\134`.
fn unescape_mount_field(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).filter(|c| c.bytes().all(|b| (b'0'..=b'7').contains(&b)));
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---- processes -----------------------------------------------------------------------------

/// The number of processes: the entries of `/proc` whose names are all digits.
pub fn count_processes<S: AsRef<OsStr>>(names: impl IntoIterator<Item = S>) -> u64 {
    names.into_iter().filter(|n| n.as_ref().to_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))).count() as u64
}

// ---- address -------------------------------------------------------------------------------

/// One address of one network interface, as `getifaddrs(3)` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub up: bool,
    pub loopback: bool,
    pub ip: IpAddr,
}

/// The address to report: the first IPv4 address, else the first IPv6 one, of an interface that
/// is up, leaving out loopback and link-local addresses (as `hostname -I` does).
pub fn primary_address(addresses: &[InterfaceAddress]) -> Option<IpAddr> {
    let usable = |a: &&InterfaceAddress| {
        a.up && !a.loopback
            && !a.ip.is_loopback()
            && !a.ip.is_unspecified()
            && match a.ip {
                IpAddr::V4(v4) => !v4.is_link_local(),
                IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            }
    };
    let first = |v4: bool| addresses.iter().filter(usable).find(|a| a.ip.is_ipv4() == v4).map(|a| a.ip);
    first(true).or_else(|| first(false))
}

/// Every IPv4 and IPv6 address of every interface, in `getifaddrs(3)` order (at most
/// [`INTERFACE_ADDRESSES_MAX`]); empty when the call fails.
fn interface_addresses() -> Vec<InterfaceAddress> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) writes a pointer to a list it allocated into `head`; the list is read
    // below only while it is alive and freed once with freeifaddrs(3).
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cursor = head;
    while !cursor.is_null() && out.len() < INTERFACE_ADDRESSES_MAX {
        // SAFETY: `cursor` is a non-null node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points at a sockaddr whose family says its real
        // type; the C library allocates it with the alignment of that type.
        let ip = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        if let Some(ip) = ip {
            let flags = entry.ifa_flags;
            out.push(InterfaceAddress {
                up: flags & libc::IFF_UP as u32 != 0,
                loopback: flags & libc::IFF_LOOPBACK as u32 != 0,
                ip,
            });
        }
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn identity() -> Identity {
        Identity { hostname: "vm".into(), os_type: "linux".into(), os_version: "Debian GNU/Linux 12 (bookworm)".into(), os_architecture: "amd64".into() }
    }

    fn sample() -> SystemInfo {
        SystemInfo {
            cpu_model: Some("AMD EPYC".into()),
            cpu_cores: Some(2),
            memory_total_bytes: Some(25_276_182_528),
            disk_filesystem: Some("/dev/vda".into()),
            disk_total_bytes: Some(270_582_939_648),
            disk_used_bytes: Some(31_138_512_896),
            processes: Some(95),
            uptime: Some("up 42 minutes".into()),
            ip_address: Some("192.0.2.2".parse().unwrap()),
        }
    }

    #[test]
    fn cpuinfo_model_and_logical_cpus() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu: x\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n";
        assert_eq!(cpu_from_cpuinfo(text), (Some("AMD EPYC".into()), Some(2)));
        // ARM: no model name.
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n\nprocessor\t: 1\nBogoMIPS\t: 50.00\n";
        assert_eq!(cpu_from_cpuinfo(arm), (None, Some(2)));
        assert_eq!(cpu_from_cpuinfo(""), (None, None));
        let long = format!("model name\t: {}\n", "x".repeat(10_000));
        assert_eq!(cpu_from_cpuinfo(&long).0.unwrap().len(), TEXT_MAX_CHARS);
    }

    #[test]
    fn the_root_filesystem_source() {
        let mounts = "sysfs /sys sysfs rw 0 0\n/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n";
        assert_eq!(mount_source(mounts, "/").as_deref(), Some("/dev/vda"));
        let stacked = "/dev/sda1 / ext4 rw 0 0\noverlay / overlay rw 0 0\n";
        assert_eq!(mount_source(stacked, "/").as_deref(), Some("overlay"));
        assert_eq!(mount_source("my\\040disk /mnt\\040x ext4 rw 0 0\n", "/mnt x").as_deref(), Some("my disk"));
        assert_eq!(mount_source("proc /proc proc rw 0 0\n", "/"), None);
        assert_eq!(unescape_mount_field("a\\134b\\9\\"), "a\\b\\9\\");
    }

    #[test]
    fn processes_are_the_numeric_entries_of_proc() {
        let names = ["1", "42", "self", "thread-self", "sys", "1234567", "", "12a"];
        assert_eq!(count_processes(names), 3);
    }

    #[test]
    fn the_primary_address_is_the_first_usable_ipv4_then_ipv6() {
        let a = |up, loopback, ip: &str| InterfaceAddress { up, loopback, ip: ip.parse().unwrap() };
        let list = [
            a(true, true, "127.0.0.1"),
            a(false, false, "10.9.9.9"),
            a(true, false, "169.254.3.3"),
            a(true, false, "fe80::1"),
            a(true, false, "2001:db8::7"),
            a(true, false, "192.0.2.2"),
            a(true, false, "198.51.100.1"),
        ];
        assert_eq!(primary_address(&list), Some("192.0.2.2".parse().unwrap()));
        assert_eq!(primary_address(&list[..5]), Some("2001:db8::7".parse().unwrap()));
        assert_eq!(primary_address(&list[..4]), None);
        assert_eq!(primary_address(&[]), None);
    }

    #[test]
    fn registration_metadata_is_the_go_agents_keys_as_strings() {
        let m = sample().registration_metadata(at("2026-12-06T18:06:20Z"));
        let want: BTreeMap<String, String> = [
            ("cpu_cores", "2"),
            ("cpu_model", "AMD EPYC"),
            ("disk_mount", "/"),
            ("disk_total", "270582939648"),
            ("disk_used", "31138512896"),
            ("installation_time", "2026-12-06T18:06:20Z"),
            ("memory_total", "25276182528"),
            ("processes", "95"),
            ("uptime", "up 42 minutes"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(m, want);
        // Nothing known: only the installation time, as the Go agent sends then.
        let m = SystemInfo::default().registration_metadata(at("2026-12-06T18:06:20Z"));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["installation_time"]);
    }

    #[test]
    fn the_report_fills_the_go_agents_fields_and_metadata() {
        let r = sample().report(&identity(), at("2026-12-06T18:06:54Z"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["timestamp"], "2026-12-06T18:06:54Z");
        assert_eq!((v["cpu_cores"].as_u64(), v["cpu_threads"].as_u64()), (Some(2), Some(2)));
        assert_eq!(v["memory_total"], 25_276_182_528u64);
        assert_eq!((v["disk_total"].as_u64(), v["disk_used"].as_u64()), (Some(270_582_939_648), Some(31_138_512_896)));
        assert_eq!((v["ip_address"].as_str(), v["processes"].as_u64()), (Some("192.0.2.2"), Some(95)));
        for (key, want) in [
            ("disk_mount", "/"),
            ("disk_filesystem", "/dev/vda"),
            ("collected_at", "2026-12-06T18:06:54Z"),
            ("hostname", "vm"),
            ("os_type", "linux"),
            ("os_architecture", "amd64"),
            (BUILD_VERSION_KEY, AGENT_VERSION),
        ] {
            assert_eq!(v["metadata"][key], want, "{key}: {v}");
        }
    }

    #[test]
    fn this_machine_is_collected() {
        let info = collect();
        assert!(info.cpu_cores.is_some_and(|n| n >= 1), "{info:?}");
        assert!(info.memory_total_bytes.is_some_and(|n| n > 0), "{info:?}");
        assert!(info.disk_total_bytes.is_some() && info.disk_filesystem.is_some(), "{info:?}");
        assert!(info.processes.is_some_and(|n| n >= 1), "{info:?}");
        assert!(info.uptime.as_deref().is_some_and(|u| u.starts_with("up ")), "{info:?}");
    }
}
