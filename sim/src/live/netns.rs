//! `redflag-sim live --netns`: the agents in a network namespace of their own, behind a veth
//! pair, so that a `partition` is a real packet-dropping firewall rule, like the seed
//! document's manual test 3 (`iptables -A OUTPUT -d SERVER -j DROP`).
//!
//! Layout: namespace `rfsim-<pid>`; veth `rfh<pid>` (host side, `10.203.X.Y+1/30`) and
//! `rfa<pid>` (moved into the namespace, `10.203.X.Y+2/30`); the proxy listens on the host-side
//! address; agents are started with `ip netns exec rfsim-<pid> redflag-agent …`. The /30 is
//! chosen so that no address or route on the host already falls in it, under a lock file, so
//! parallel runs do not pick the same one.
//!
//! What is touched: only what this file created. Rules are added inside the namespace alone
//! (its own empty firewall, so flushing it touches nothing else); the host's firewall, routes
//! and interfaces are never changed. [`Netns`]'s drop deletes the namespace (which takes the
//! agent-side veth, and with it the pair, and the rules) and the host-side veth if it is still
//! there, also after a failure half-way through [`Netns::create`].
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables) or `iptables`.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The /16 the /30s are taken from.
const SUBNET_BASE: [u8; 2] = [10, 203];
/// Held while choosing and configuring a /30, so parallel runs pick different ones.
const LOCK_FILE: &str = "/run/redflag-sim-netns.lock";
/// Longest a configuration command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest output of a configuration command read.
const OUTPUT_MAX_BYTES: usize = 1024 * 1024;

/// Which firewall tool sets the DROP rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firewall {
    Nft,
    Iptables,
}

impl Firewall {
    pub fn name(self) -> &'static str {
        match self {
            Firewall::Nft => "nft",
            Firewall::Iptables => "iptables",
        }
    }
}

/// A namespace with its veth pair, removed on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    pub veth_host: String,
    pub veth_agent: String,
    /// The host-side address: the proxy listens here.
    pub host_ip: Ipv4Addr,
    /// The agents' address inside the namespace.
    pub agent_ip: Ipv4Addr,
    pub firewall: Firewall,
    ip_bin: PathBuf,
    firewall_bin: PathBuf,
    /// What is currently dropped: (agents → proxy, proxy → agents).
    dropping: (bool, bool),
}

/// Why `--netns` cannot run here (not root, tools missing), for exit code 2.
pub fn preflight() -> Result<(PathBuf, Firewall, PathBuf), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("--netns needs root: it creates a network namespace, a veth pair and firewall rules inside that namespace. Run as root, or leave out --netns".into());
    }
    let ip = find_in_path("ip").ok_or("--netns needs the `ip` command (Debian package iproute2)")?;
    let (firewall, bin) = match (find_in_path("nft"), find_in_path("iptables")) {
        (Some(nft), _) => (Firewall::Nft, nft),
        (None, Some(ipt)) => (Firewall::Iptables, ipt),
        (None, None) => return Err("--netns needs `nft` (Debian package nftables) or `iptables` (package iptables) to drop packets in a partition".into()),
    };
    Ok((ip, firewall, bin))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a configuration command to completion (bounded in time and output); its stdout, or an
/// error naming the command and its stderr.
fn run(bin: &Path, args: &[&str]) -> Result<String, String> {
    let shown = format!("{} {}", bin.display(), args.join(" "));
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut o = Vec::new();
        let mut e = Vec::new();
        if let Some(s) = out.as_mut() {
            let _ = s.take(OUTPUT_MAX_BYTES as u64).read_to_end(&mut o);
        }
        if let Some(s) = err.as_mut() {
            let _ = s.take(OUTPUT_MAX_BYTES as u64).read_to_end(&mut e);
        }
        (o, e)
    });
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{shown}` did not finish within {}s", COMMAND_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(format!("`{shown}`: {e}")),
        }
    };
    let (o, e) = reader.join().unwrap_or_default();
    if status.success() {
        Ok(String::from_utf8_lossy(&o).into_owned())
    } else {
        Err(format!("`{shown}` failed ({status}): {}", String::from_utf8_lossy(&e).trim()))
    }
}

/// An exclusive lock on [`LOCK_FILE`], released on drop.
struct Lock(File);

impl Lock {
    fn take() -> Result<Lock, String> {
        let f = File::options()
            .create(true)
            .append(true)
            .open(LOCK_FILE)
            .map_err(|e| format!("cannot open the lock file {LOCK_FILE}: {e}"))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("cannot lock {LOCK_FILE}: {}", std::io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// The /30 blocks (third and fourth octet of their base) that some address or route on the
/// host already uses, from `ip -4 -o addr` and `ip -4 route` output.
fn used_blocks(text: &str) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let addr = word.split('/').next().unwrap_or("");
        let Ok(ip) = addr.parse::<Ipv4Addr>() else { continue };
        let o = ip.octets();
        if o[0] != SUBNET_BASE[0] || o[1] != SUBNET_BASE[1] {
            continue;
        }
        let prefix: u8 = word.split('/').nth(1).and_then(|p| p.parse().ok()).unwrap_or(32);
        if prefix < 30 {
            // A wider route covering part of 10.203/16: treat its whole span as used.
            let span = 1u32 << (32 - u32::from(prefix.max(16)));
            let base = u32::from(ip) & !(span - 1);
            let mut b = base;
            while b < base + span {
                let oo = Ipv4Addr::from(b).octets();
                out.push((oo[2], oo[3]));
                b += 4;
            }
        } else {
            out.push((o[2], o[3] & !3));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The first free /30 from a starting point derived from `pid`.
fn pick_block(pid: u32, used: &[(u8, u8)]) -> Option<(u8, u8)> {
    const BLOCKS: u32 = 256 * 64;
    (0..BLOCKS).map(|i| (pid.wrapping_mul(2_654_435_761) + i) % BLOCKS).map(|n| ((n / 64) as u8, ((n % 64) * 4) as u8)).find(|b| !used.contains(b))
}

impl Netns {
    /// Creates the namespace and veth pair for this process, after [`preflight`].
    pub fn create(ip_bin: PathBuf, firewall: Firewall, firewall_bin: PathBuf) -> Result<Netns, String> {
        let pid = std::process::id();
        let _lock = Lock::take()?;
        let mut seen = run(&ip_bin, &["-4", "-o", "addr", "show"])?;
        seen.push('\n');
        seen.push_str(&run(&ip_bin, &["-4", "route", "show", "table", "all"])?);
        let (third, fourth) = pick_block(pid, &used_blocks(&seen)).ok_or("no free /30 left in 10.203.0.0/16")?;
        let host_ip = Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], third, fourth + 1);
        let agent_ip = Ipv4Addr::new(SUBNET_BASE[0], SUBNET_BASE[1], third, fourth + 2);
        let ns = Netns {
            name: format!("rfsim-{pid}"),
            veth_host: format!("rfh{pid}"),
            veth_agent: format!("rfa{pid}"),
            host_ip,
            agent_ip,
            firewall,
            ip_bin,
            firewall_bin,
            dropping: (false, false),
        };
        // From here on, dropping `ns` cleans up whatever was made.
        ns.setup()?;
        Ok(ns)
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(&self.ip_bin, args)
    }

    fn setup(&self) -> Result<(), String> {
        let (n, vh, va) = (self.name.as_str(), self.veth_host.as_str(), self.veth_agent.as_str());
        let host_cidr = format!("{}/30", self.host_ip);
        let agent_cidr = format!("{}/30", self.agent_ip);
        self.ip(&["netns", "add", n])?;
        self.ip(&["link", "add", vh, "type", "veth", "peer", "name", va])?;
        self.ip(&["link", "set", va, "netns", n])?;
        self.ip(&["addr", "add", &host_cidr, "dev", vh])?;
        self.ip(&["link", "set", vh, "up"])?;
        self.ip(&["-n", n, "addr", "add", &agent_cidr, "dev", va])?;
        self.ip(&["-n", n, "link", "set", va, "up"])?;
        self.ip(&["-n", n, "link", "set", "lo", "up"])?;
        if self.firewall == Firewall::Nft {
            self.in_ns(&["nft", "add", "table", "inet", "rfsim"])?;
            self.in_ns(&["nft", "add", "chain", "inet", "rfsim", "out", "{ type filter hook output priority 0 ; }"])?;
            self.in_ns(&["nft", "add", "chain", "inet", "rfsim", "in", "{ type filter hook input priority 0 ; }"])?;
        }
        Ok(())
    }

    /// Runs the firewall tool inside the namespace (`args[0]` names it; the path found by
    /// [`preflight`] is used).
    fn in_ns(&self, args: &[&str]) -> Result<String, String> {
        let bin = self.firewall_bin.to_string_lossy().into_owned();
        let mut full: Vec<&str> = vec!["netns", "exec", &self.name, &bin];
        full.extend_from_slice(&args[1..]);
        self.ip(&full)
    }

    /// The command that starts `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(&self.ip_bin);
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Drops (or stops dropping) packets between the agents and the proxy's address, inside
    /// the namespace: `to_proxy` on output, `from_proxy` on input.
    pub fn set_drop(&mut self, to_proxy: bool, from_proxy: bool) -> Result<(), String> {
        if self.dropping == (to_proxy, from_proxy) {
            return Ok(());
        }
        let host = self.host_ip.to_string();
        match self.firewall {
            Firewall::Nft => {
                self.in_ns(&["nft", "flush", "chain", "inet", "rfsim", "out"])?;
                self.in_ns(&["nft", "flush", "chain", "inet", "rfsim", "in"])?;
                if to_proxy {
                    self.in_ns(&["nft", "add", "rule", "inet", "rfsim", "out", "ip", "daddr", &host, "drop"])?;
                }
                if from_proxy {
                    self.in_ns(&["nft", "add", "rule", "inet", "rfsim", "in", "ip", "saddr", &host, "drop"])?;
                }
            }
            Firewall::Iptables => {
                self.in_ns(&["iptables", "-w", "-F", "OUTPUT"])?;
                self.in_ns(&["iptables", "-w", "-F", "INPUT"])?;
                if to_proxy {
                    self.in_ns(&["iptables", "-w", "-A", "OUTPUT", "-d", &host, "-j", "DROP"])?;
                }
                if from_proxy {
                    self.in_ns(&["iptables", "-w", "-A", "INPUT", "-s", &host, "-j", "DROP"])?;
                }
            }
        }
        self.dropping = (to_proxy, from_proxy);
        Ok(())
    }

    /// `rfsim-123 (10.203.4.9/30 via rfh123, nft)`.
    pub fn describe(&self) -> String {
        format!("{} (agents at {} behind {}, proxy at {}, partitions with {})", self.name, self.agent_ip, self.veth_host, self.host_ip, self.firewall.name())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys the agent-side veth, its peer and every rule in it.
        if let Err(e) = self.ip(&["netns", "delete", &self.name]) {
            if !e.contains("No such file") {
                eprintln!("warning: cleaning up network namespace {}: {e}", self.name);
            }
        }
        let exists = self.ip(&["link", "show", "dev", &self.veth_host]).is_ok();
        if exists {
            if let Err(e) = self.ip(&["link", "delete", "dev", &self.veth_host]) {
                eprintln!("warning: cleaning up veth {}: {e}", self.veth_host);
            }
        }
    }
}

/// Whether a namespace with this name exists (for tests of the cleanup).
pub fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_used_blocks() {
        let text = "1: lo inet 127.0.0.1/8 scope host lo\n7: rfh1 inet 10.203.4.9/30 scope global rfh1\n10.203.8.0/30 dev x\n10.203.16.0/23 via 1.2.3.4\n";
        let used = used_blocks(text);
        assert!(used.contains(&(4, 8)));
        assert!(used.contains(&(8, 0)));
        assert!(used.contains(&(16, 0)) && used.contains(&(17, 252)) && !used.contains(&(18, 0)));
        let b = pick_block(1, &used).unwrap();
        assert!(!used.contains(&b) && b.1 % 4 == 0);
        let all: Vec<(u8, u8)> = (0..=255u8).flat_map(|t| (0..64u8).map(move |f| (t, f * 4))).collect();
        assert_eq!(pick_block(1, &all), None);
    }

    /// Root only (skipped otherwise): a namespace is made, each installed firewall tool adds and
    /// removes the DROP rules inside it, and the drop removes the namespace and both veths.
    #[test]
    fn namespace_lifecycle_with_each_firewall() {
        let ip = match preflight() {
            Ok((ip, _, _)) => ip,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        for firewall in [Firewall::Nft, Firewall::Iptables] {
            let Some(bin) = find_in_path(firewall.name()) else {
                eprintln!("{} not installed; not tested", firewall.name());
                continue;
            };
            let mut ns = Netns::create(ip.clone(), firewall, bin).unwrap();
            let list: &[&str] = match firewall {
                Firewall::Nft => &["nft", "list", "ruleset"],
                Firewall::Iptables => &["iptables", "-w", "-S"],
            };
            let host = ns.host_ip.to_string();
            ns.set_drop(true, false).unwrap();
            let rules = ns.in_ns(list).unwrap();
            assert_eq!(rules.matches(host.as_str()).count(), 1, "{rules}");
            ns.set_drop(true, true).unwrap();
            assert_eq!(ns.in_ns(list).unwrap().matches(host.as_str()).count(), 2);
            ns.set_drop(false, false).unwrap();
            assert!(!ns.in_ns(list).unwrap().contains(host.as_str()));
            let (name, veth) = (ns.name.clone(), ns.veth_host.clone());
            drop(ns);
            assert!(!namespace_exists(&name));
            assert!(run(&ip, &["link", "show", "dev", &veth]).is_err(), "{veth} left behind");
        }
    }
}
