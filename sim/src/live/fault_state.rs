//! Which faults are in effect in a live run, and what must be done to real processes when one
//! begins or ends: the live twin of `world/faults.rs`'s `FaultState`, with the same semantics.
//!
//! This file decides, it does not act: [`LiveFaults::apply`] and [`LiveFaults::end`] return
//! [`Effect`]s (kill this, start that, switch the proxy to this mode, record that event) and
//! the orchestrator carries them out in order. That keeps the overlap rules testable without
//! processes, and identical to the simulation's:
//!
//! * overlapping faults on the same thing are counted or stacked; an effect is reverted when
//!   the last fault holding it ends (a crashed process restarts when its last crash ends; the
//!   proxy returns to the mode of the latest fault still in effect, or `pass`);
//! * switches live outside the processes (as the simulation keeps `ServerModes` and
//!   `ProxyControl` outside its hosts): a restarted server or proxy comes back with the modes
//!   in effect, and a mode changed while it is down is applied when it restarts;
//! * `setup_mode` restarts the server into setup mode; `expire_tokens` edits the database file
//!   directly while the server is down, as the simulation edits its database.
//!
//! How each action maps onto real things: `crash`/`restart` kill processes with SIGKILL;
//! `partition` is the proxy's `blackhole` mode, or with `--netns` a DROP rule inside the
//! agents' namespace (per direction); `latency`, `loss` and `http_status` are proxy modes (an
//! `http_status` on the server is the server's own switch); `slow`, `setup_mode`,
//! `expire_tokens` and `revoke_refresh` go through the server's chaos API. Network faults can
//! only act on the one link a live run has, between the agents and the proxy
//! ([`check_supported`]).

use std::collections::BTreeMap;

use super::modes::{ProxyModeSpec, RouteSpec, ServerModesSpec, StatusSpec};
use crate::scenario::{Action, ApiRoute, Direction, Fault, Fleet, Scenario, Target};
use crate::trace::SimEvent;

/// A process (or group of processes) faults act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proc {
    Server,
    Proxy,
    /// Every agent process on agent host N.
    AgentHost(u32),
}

impl Proc {
    /// The trace host name.
    pub fn host_name(self) -> String {
        match self {
            Proc::Server => "server".into(),
            Proc::Proxy => "proxy".into(),
            Proc::AgentHost(h) => Fleet::host_name(h),
        }
    }

    fn of(target: Target, fleet: &Fleet) -> Vec<Proc> {
        match target {
            Target::Server => vec![Proc::Server],
            Target::Proxy => vec![Proc::Proxy],
            Target::Agents => (0..fleet.hosts).map(Proc::AgentHost).collect(),
            Target::AgentHost(h) => vec![Proc::AgentHost(h)],
        }
    }
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Record this event for this trace host (`harness`, `server`, `proxy`, `agents-N`).
    Record { host: String, event: SimEvent },
    /// SIGKILL the process(es).
    Kill(Proc),
    /// Start the process(es) again (a server or proxy with the modes then in effect).
    Start(Proc),
    /// Switch the running server's modes to this.
    ServerModes(ServerModesSpec),
    /// Switch the running proxy's mode to this.
    ProxyMode(ProxyModeSpec),
    /// Invalidate every access token: through the server's API when it runs, else in its
    /// database file.
    ExpireTokens { server_running: bool },
    /// Set the DROP rules in the agents' namespace (`--netns`).
    Firewall { to_proxy: bool, from_proxy: bool },
}

/// Whether the link of a network fault is the agents ↔ proxy link covering every agent host;
/// `Some(agents → proxy is target → peer)`.
fn agents_proxy_link(target: Target, peer: Target, fleet: &Fleet) -> Option<bool> {
    let all_agents = |t: Target| t == Target::Agents || (matches!(t, Target::AgentHost(_)) && fleet.hosts == 1);
    if all_agents(target) && peer == Target::Proxy {
        Some(true)
    } else if target == Target::Proxy && all_agents(peer) {
        Some(false)
    } else {
        None
    }
}

/// `Err` naming the first fault a live run cannot apply, and why.
pub fn check_supported(scenario: &Scenario) -> Result<(), String> {
    for f in &scenario.faults {
        let peer = match &f.action {
            Action::Partition { peer, .. } | Action::Latency { peer, .. } | Action::Loss { peer, .. } => *peer,
            _ => continue,
        };
        if agents_proxy_link(f.target, peer, &scenario.fleet).is_none() {
            let hint = if matches!(f.target, Target::AgentHost(_)) || matches!(peer, Target::AgentHost(_)) {
                "; in live mode every agent host shares one proxy (and one namespace), so a network fault must cover all of them: use target = \"agents\""
            } else {
                ""
            };
            return Err(format!(
                "{}:{}: fault #{} ({}) cannot run live: live mode has one network link to break, between the agents and the proxy (target = \"agents\", peer = \"proxy\", or the reverse), and this fault is between {} and {}{hint}",
                scenario.path.display(),
                f.line,
                f.index,
                f.describe(),
                f.target,
                peer
            ));
        }
    }
    Ok(())
}

/// The faults in effect and the switches they hold.
#[derive(Debug)]
pub struct LiveFaults {
    fleet: Fleet,
    /// Partitions are firewall rules (`--netns`) rather than a proxy mode.
    netns: bool,
    /// Crashed processes, with how many faults hold them down.
    down: BTreeMap<Proc, u32>,
    /// Partitions in effect per direction: agents → proxy, proxy → agents (`--netns`).
    cuts_to_proxy: u32,
    cuts_from_proxy: u32,
    /// Proxy modes in effect, latest last.
    proxy_modes: Vec<(usize, ProxyModeSpec)>,
    server_status: Vec<(usize, StatusSpec)>,
    slow: Vec<(usize, u64)>,
    setup: Vec<usize>,
    revoke: Vec<usize>,
    broken_routes: Vec<(usize, ApiRoute, RouteSpec)>,
}

const HARNESS: &str = "harness";

fn record(host: impl Into<String>, event: SimEvent) -> Effect {
    Effect::Record { host: host.into(), event }
}

impl LiveFaults {
    pub fn new(fleet: Fleet, netns: bool) -> Self {
        LiveFaults {
            fleet,
            netns,
            down: BTreeMap::new(),
            cuts_to_proxy: 0,
            cuts_from_proxy: 0,
            proxy_modes: Vec::new(),
            server_status: Vec::new(),
            slow: Vec::new(),
            setup: Vec::new(),
            revoke: Vec::new(),
            broken_routes: Vec::new(),
        }
    }

    pub fn is_down(&self, p: Proc) -> bool {
        self.down.get(&p).is_some_and(|n| *n > 0)
    }

    /// The server switches in effect.
    pub fn server_modes(&self) -> ServerModesSpec {
        ServerModesSpec {
            slow_ms: self.slow.last().map(|(_, ms)| *ms),
            setup_mode: !self.setup.is_empty(),
            revoke_refresh: !self.revoke.is_empty(),
            http_status: self.server_status.last().map(|(_, s)| *s),
            // The latest fault on each route wins.
            broken_routes: self.broken_routes.iter().map(|(_, r, spec)| (r.name().to_string(), *spec)).collect(),
        }
    }

    /// The proxy mode in effect.
    pub fn proxy_mode(&self) -> ProxyModeSpec {
        self.proxy_modes.last().map_or(ProxyModeSpec::Pass {}, |(_, m)| m.clone())
    }

    fn push_server_modes(&self, out: &mut Vec<Effect>) {
        if !self.is_down(Proc::Server) {
            out.push(Effect::ServerModes(self.server_modes()));
        }
    }

    fn push_proxy_mode(&self, out: &mut Vec<Effect>) {
        if !self.is_down(Proc::Proxy) {
            out.push(Effect::ProxyMode(self.proxy_mode()));
        }
    }

    fn fault_record(fault: &Fault, applied: bool) -> Effect {
        let (action, target) = (fault.action.name().to_string(), fault.target.to_string());
        let event = if applied {
            SimEvent::FaultApplied { fault: fault.index, action, target }
        } else {
            SimEvent::FaultEnded { fault: fault.index, action, target }
        };
        record(HARNESS, event)
    }

    /// Directions a partition cuts, as (agents → proxy, proxy → agents).
    fn partition_directions(&self, fault: &Fault, peer: Target, direction: Direction) -> (bool, bool) {
        let agents_first = agents_proxy_link(fault.target, peer, &self.fleet).unwrap_or(true);
        let (fwd, back) = match direction {
            Direction::Both => (true, true),
            Direction::To => (true, false),
            Direction::From => (false, true),
        };
        if agents_first { (fwd, back) } else { (back, fwd) }
    }

    /// Fault `fault` begins.
    pub fn apply(&mut self, fault: &Fault) -> Vec<Effect> {
        let mut out = vec![Self::fault_record(fault, true)];
        let idx = fault.index;
        match &fault.action {
            Action::Crash => {
                for p in Proc::of(fault.target, &self.fleet) {
                    let n = self.down.entry(p).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        out.push(Effect::Kill(p));
                        out.push(record(p.host_name(), SimEvent::HostCrashed));
                    }
                }
            }
            Action::Restart => {
                for p in Proc::of(fault.target, &self.fleet) {
                    out.push(record(p.host_name(), SimEvent::HostCrashed));
                    if !self.is_down(p) {
                        out.push(Effect::Kill(p));
                        out.push(Effect::Start(p));
                        out.push(record(p.host_name(), SimEvent::HostRestarted));
                    }
                }
            }
            Action::Partition { peer, direction } => {
                if self.netns {
                    let (to, from) = self.partition_directions(fault, *peer, *direction);
                    self.cuts_to_proxy += u32::from(to);
                    self.cuts_from_proxy += u32::from(from);
                    out.push(Effect::Firewall { to_proxy: self.cuts_to_proxy > 0, from_proxy: self.cuts_from_proxy > 0 });
                } else {
                    self.proxy_modes.push((idx, ProxyModeSpec::Blackhole {}));
                    self.push_proxy_mode(&mut out);
                }
            }
            Action::Latency { delay, .. } => {
                self.proxy_modes.push((idx, ProxyModeSpec::Latency { delay_ms: delay.as_millis() as u64 }));
                self.push_proxy_mode(&mut out);
            }
            Action::Loss { rate, .. } => {
                self.proxy_modes.push((idx, ProxyModeSpec::Loss { rate: *rate }));
                self.push_proxy_mode(&mut out);
            }
            Action::HttpStatus { status, retry_after_seconds } => {
                let spec = StatusSpec { status: *status, retry_after: *retry_after_seconds };
                if fault.target == Target::Server {
                    self.server_status.push((idx, spec));
                    self.push_server_modes(&mut out);
                } else {
                    self.proxy_modes.push((idx, ProxyModeSpec::HttpStatus { status: spec.status, retry_after: spec.retry_after }));
                    self.push_proxy_mode(&mut out);
                }
            }
            Action::Slow { delay } => {
                self.slow.push((idx, delay.as_millis() as u64));
                self.push_server_modes(&mut out);
            }
            Action::SetupMode => {
                // The server restarts into setup mode: a fresh process, unconfigured.
                self.setup.push(idx);
                if !self.is_down(Proc::Server) {
                    out.push(Effect::Kill(Proc::Server));
                    out.push(record("server", SimEvent::HostCrashed));
                    out.push(Effect::Start(Proc::Server));
                    out.push(record("server", SimEvent::HostRestarted));
                }
            }
            Action::ExpireTokens => out.push(Effect::ExpireTokens { server_running: !self.is_down(Proc::Server) }),
            Action::RevokeRefresh => {
                self.revoke.push(idx);
                self.push_server_modes(&mut out);
            }
            Action::BrokenRoute { route, status, delay } => {
                let spec = RouteSpec { status: *status, delay_ms: delay.map(|d| d.as_millis() as u64) };
                self.broken_routes.push((idx, *route, spec));
                self.push_server_modes(&mut out);
            }
        }
        out
    }

    /// Fault `fault`'s duration ends (or, for an instant fault, right after it began).
    pub fn end(&mut self, fault: &Fault) -> Vec<Effect> {
        // The end is recorded before anything is reverted: reverting takes real time (a server
        // binding its port, `nft` deleting a rule), and an agent request that gets through in
        // the meantime must not appear to have crossed a fault that was still in the trace.
        let mut out = vec![Self::fault_record(fault, false)];
        let idx = fault.index;
        match &fault.action {
            Action::Crash => {
                for p in Proc::of(fault.target, &self.fleet) {
                    let revived = match self.down.get_mut(&p) {
                        Some(n) if *n > 1 => {
                            *n -= 1;
                            false
                        }
                        Some(_) => {
                            self.down.remove(&p);
                            true
                        }
                        None => false,
                    };
                    if revived {
                        out.push(Effect::Start(p));
                        out.push(record(p.host_name(), SimEvent::HostRestarted));
                    }
                }
            }
            Action::Restart | Action::ExpireTokens => {}
            Action::Partition { peer, direction } => {
                if self.netns {
                    let (to, from) = self.partition_directions(fault, *peer, *direction);
                    self.cuts_to_proxy = self.cuts_to_proxy.saturating_sub(u32::from(to));
                    self.cuts_from_proxy = self.cuts_from_proxy.saturating_sub(u32::from(from));
                    out.push(Effect::Firewall { to_proxy: self.cuts_to_proxy > 0, from_proxy: self.cuts_from_proxy > 0 });
                } else {
                    self.proxy_modes.retain(|(i, _)| *i != idx);
                    self.push_proxy_mode(&mut out);
                }
            }
            Action::Latency { .. } | Action::Loss { .. } => {
                self.proxy_modes.retain(|(i, _)| *i != idx);
                self.push_proxy_mode(&mut out);
            }
            Action::HttpStatus { .. } => {
                if fault.target == Target::Server {
                    self.server_status.retain(|(i, _)| *i != idx);
                    self.push_server_modes(&mut out);
                } else {
                    self.proxy_modes.retain(|(i, _)| *i != idx);
                    self.push_proxy_mode(&mut out);
                }
            }
            Action::Slow { .. } => {
                self.slow.retain(|(i, _)| *i != idx);
                self.push_server_modes(&mut out);
            }
            Action::SetupMode => {
                self.setup.retain(|i| *i != idx);
                self.push_server_modes(&mut out);
            }
            Action::RevokeRefresh => {
                self.revoke.retain(|i| *i != idx);
                self.push_server_modes(&mut out);
            }
            Action::BrokenRoute { .. } => {
                self.broken_routes.retain(|(i, _, _)| *i != idx);
                self.push_server_modes(&mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(faults: &str, hosts: u32) -> Scenario {
        let text = format!("name = \"t\"\nduration = \"1m\"\nlive = true\n[fleet]\nagents = 2\nhosts = {hosts}\n{faults}");
        Scenario::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn kinds(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Record { host, event } => format!("{host}:{}", event.name()),
                Effect::Kill(p) => format!("kill {}", p.host_name()),
                Effect::Start(p) => format!("start {}", p.host_name()),
                Effect::ServerModes(m) => format!("server {}", serde_json::to_string(m).unwrap()),
                Effect::ProxyMode(m) => format!("proxy {}", serde_json::to_string(m).unwrap()),
                Effect::ExpireTokens { server_running } => format!("expire api={server_running}"),
                Effect::Firewall { to_proxy, from_proxy } => format!("drop {to_proxy} {from_proxy}"),
            })
            .collect()
    }

    #[test]
    fn overlapping_crashes_restart_once_when_the_last_ends() {
        let s = scenario(
            "[[faults]]\nat = \"1s\"\naction = \"crash\"\ntarget = \"server\"\nduration = \"10s\"\n[[faults]]\nat = \"2s\"\naction = \"crash\"\ntarget = \"server\"\nduration = \"20s\"\n[[faults]]\nat = \"3s\"\naction = \"expire_tokens\"\ntarget = \"server\"\n[[faults]]\nat = \"4s\"\naction = \"slow\"\ntarget = \"server\"\ndelay = \"2s\"\nduration = \"30s\"\n",
            1,
        );
        let mut f = LiveFaults::new(s.fleet, false);
        assert_eq!(kinds(&f.apply(&s.faults[0])), ["harness:fault_applied", "kill server", "server:host_crashed"]);
        assert_eq!(kinds(&f.apply(&s.faults[1])), ["harness:fault_applied"]);
        assert_eq!(kinds(&f.apply(&s.faults[2])), ["harness:fault_applied", "expire api=false"]);
        assert_eq!(kinds(&f.apply(&s.faults[3])), ["harness:fault_applied"], "the server is down: applied when it restarts");
        assert_eq!(f.server_modes().slow_ms, Some(2000));
        assert_eq!(kinds(&f.end(&s.faults[0])), ["harness:fault_ended"]);
        assert_eq!(kinds(&f.end(&s.faults[1])), ["harness:fault_ended", "start server", "server:host_restarted"]);
        assert_eq!(
            kinds(&f.end(&s.faults[3])),
            ["harness:fault_ended", "server {\"slow_ms\":null,\"setup_mode\":false,\"revoke_refresh\":false,\"http_status\":null}"]
        );
    }

    #[test]
    fn proxy_modes_stack_and_partitions_follow_the_mode() {
        let s = scenario(
            "[[faults]]\nat = \"1s\"\naction = \"http_status\"\ntarget = \"proxy\"\nstatus = 502\nduration = \"10s\"\n[[faults]]\nat = \"2s\"\naction = \"partition\"\ntarget = \"agents\"\nduration = \"3s\"\n",
            2,
        );
        let mut f = LiveFaults::new(s.fleet, false);
        assert_eq!(kinds(&f.apply(&s.faults[0]))[1], "proxy {\"mode\":\"http_status\",\"status\":502,\"retry_after\":null}");
        assert_eq!(kinds(&f.apply(&s.faults[1]))[1], "proxy {\"mode\":\"blackhole\"}");
        assert_eq!(kinds(&f.end(&s.faults[1]))[1], "proxy {\"mode\":\"http_status\",\"status\":502,\"retry_after\":null}");
        assert_eq!(kinds(&f.end(&s.faults[0]))[1], "proxy {\"mode\":\"pass\"}");

        let mut f = LiveFaults::new(s.fleet, true);
        assert_eq!(kinds(&f.apply(&s.faults[1]))[1], "drop true true");
        assert_eq!(kinds(&f.end(&s.faults[1]))[1], "drop false false");
    }

    #[test]
    fn one_way_partitions_pick_their_direction() {
        let s = scenario(
            "[[faults]]\nat = \"1s\"\naction = \"partition\"\ntarget = \"agents\"\ndirection = \"to\"\nduration = \"10s\"\n[[faults]]\nat = \"2s\"\naction = \"partition\"\ntarget = \"proxy\"\npeer = \"agents\"\ndirection = \"to\"\nduration = \"3s\"\n",
            1,
        );
        let mut f = LiveFaults::new(s.fleet, true);
        assert_eq!(kinds(&f.apply(&s.faults[0]))[1], "drop true false");
        assert_eq!(kinds(&f.apply(&s.faults[1]))[1], "drop true true");
        assert_eq!(kinds(&f.end(&s.faults[0]))[1], "drop false true");
    }

    #[test]
    fn setup_mode_restarts_the_server_and_agent_restarts_are_instant() {
        let s = scenario(
            "[[faults]]\nat = \"1s\"\naction = \"setup_mode\"\ntarget = \"server\"\nduration = \"10s\"\n[[faults]]\nat = \"2s\"\naction = \"restart\"\ntarget = \"agents\"\n",
            2,
        );
        let mut f = LiveFaults::new(s.fleet, false);
        assert_eq!(kinds(&f.apply(&s.faults[0])), ["harness:fault_applied", "kill server", "server:host_crashed", "start server", "server:host_restarted"]);
        assert!(f.server_modes().setup_mode);
        assert_eq!(
            kinds(&f.apply(&s.faults[1])),
            [
                "harness:fault_applied",
                "agents-0:host_crashed",
                "kill agents-0",
                "start agents-0",
                "agents-0:host_restarted",
                "agents-1:host_crashed",
                "kill agents-1",
                "start agents-1",
                "agents-1:host_restarted"
            ]
        );
    }

    #[test]
    fn network_faults_off_the_agent_proxy_link_are_refused() {
        let s = scenario("[[faults]]\nat = \"1s\"\naction = \"partition\"\ntarget = \"server\"\nduration = \"10s\"\n", 1);
        let e = check_supported(&s).unwrap_err();
        assert!(e.contains("t.toml:") && e.contains("between server and proxy"), "{e}");
        let s = scenario("[[faults]]\nat = \"1s\"\naction = \"latency\"\ntarget = \"agents-1\"\ndelay = \"1s\"\nduration = \"10s\"\n", 2);
        assert!(check_supported(&s).unwrap_err().contains("use target = \"agents\""));
        let s = scenario("[[faults]]\nat = \"1s\"\naction = \"loss\"\ntarget = \"agents-0\"\nrate = 0.5\nduration = \"10s\"\n", 1);
        assert!(check_supported(&s).is_ok(), "one host: agents-0 is every agent");
    }
}
