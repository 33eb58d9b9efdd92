//! Faults in the simulated world: which are in effect, and applying or reverting each one on
//! the turmoil `Sim` and the shared switches between simulation steps. Overlapping faults on the
//! same thing are counted or stacked, so an effect is reverted when the last fault holding it
//! ends (the live mode's `live/fault_state.rs` keeps the same rules for real processes).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use turmoil::Sim;

use super::{LINK_LATENCY_MAX, LINK_LATENCY_MIN, Shared};
use crate::models::proxy::ProxyMode;
use crate::models::server::Broken;
use crate::scenario::{Action, ApiRoute, Direction, Fault, Fleet, Scenario, Target};
use crate::trace::{SimEvent, TraceEvent};

/// Which faults are in effect, so that overlapping faults on the same thing end together:
/// an effect is reverted when the last fault holding it ends.
pub(super) struct FaultState {
    /// Directed links cut, with how many faults cut them.
    cuts: BTreeMap<(String, String), u32>,
    /// Links with extra latency: the faults holding them, latest last.
    latency: BTreeMap<(String, String), Vec<(usize, Duration)>>,
    loss: BTreeMap<(String, String), Vec<(usize, f64)>>,
    /// Proxy modes and server modes in effect, latest last.
    proxy_modes: Vec<(usize, ProxyMode)>,
    server_status: Vec<(usize, (u16, Option<u64>))>,
    slow: Vec<(usize, Duration)>,
    setup: Vec<usize>,
    revoke: Vec<usize>,
    broken_routes: Vec<(usize, ApiRoute, Broken)>,
    fleet: Fleet,
}

impl FaultState {
    pub(super) fn new(scenario: &Scenario) -> Self {
        FaultState {
            cuts: BTreeMap::new(),
            latency: BTreeMap::new(),
            loss: BTreeMap::new(),
            proxy_modes: Vec::new(),
            server_status: Vec::new(),
            slow: Vec::new(),
            setup: Vec::new(),
            revoke: Vec::new(),
            broken_routes: Vec::new(),
            fleet: scenario.fleet,
        }
    }

    /// Every (target host, peer host) pair of a network fault.
    fn pairs(&self, target: Target, peer: Target) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for a in target.host_names(&self.fleet) {
            for b in peer.host_names(&self.fleet) {
                out.push((a.clone(), b));
            }
        }
        out
    }

    /// The one-way links a partition cuts: (from, to) host pairs.
    fn directed_links(&self, target: Target, peer: Target, direction: Direction) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (a, b) in self.pairs(target, peer) {
            match direction {
                Direction::Both => {
                    out.push((a.clone(), b.clone()));
                    out.push((b, a));
                }
                Direction::To => out.push((a, b)),
                Direction::From => out.push((b, a)),
            }
        }
        out
    }

    fn record(world: &Shared, t_ms: u64, fault: &Fault, applied: bool) {
        let action = fault.action.name().to_string();
        let target = fault.target.to_string();
        let event = if applied {
            SimEvent::FaultApplied { fault: fault.index, action, target }
        } else {
            SimEvent::FaultEnded { fault: fault.index, action, target }
        };
        world.trace.record_at(t_ms, &world.names.harness, None, TraceEvent::Sim(event));
    }

    pub(super) fn apply(&mut self, sim: &mut Sim<'_>, world: &Rc<Shared>, fault: &Fault, t_ms: u64) {
        Self::record(world, t_ms, fault, true);
        match &fault.action {
            Action::Crash => {
                for host in fault.target.host_names(&self.fleet) {
                    let newly = {
                        let mut down = world.down.borrow_mut();
                        let n = down.entry(host.clone()).or_insert(0);
                        *n += 1;
                        *n == 1
                    };
                    if newly {
                        // Kill the software, then boot the host into its dead-process state.
                        sim.crash(host.as_str());
                        sim.bounce(host.as_str());
                        world.trace.record_at(t_ms, &Arc::from(host.as_str()), None, TraceEvent::Sim(SimEvent::HostCrashed));
                    }
                }
            }
            Action::Restart => {
                for host in fault.target.host_names(&self.fleet) {
                    let name: Arc<str> = Arc::from(host.as_str());
                    world.trace.record_at(t_ms, &name, None, TraceEvent::Sim(SimEvent::HostCrashed));
                    sim.crash(host.as_str());
                    sim.bounce(host.as_str());
                    if !world.is_down(&host) {
                        world.trace.record_at(t_ms, &name, None, TraceEvent::Sim(SimEvent::HostRestarted));
                    }
                }
            }
            Action::Partition { peer, direction } => {
                for (from, to) in self.directed_links(fault.target, *peer, *direction) {
                    let n = self.cuts.entry((from.clone(), to.clone())).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        sim.partition_oneway(from.as_str(), to.as_str());
                    }
                }
            }
            Action::Latency { peer, delay } => {
                for pair in self.pairs(fault.target, *peer) {
                    self.latency.entry(pair.clone()).or_default().push((fault.index, *delay));
                    sim.set_link_latency(pair.0.as_str(), pair.1.as_str(), *delay);
                }
            }
            Action::Loss { peer, rate } => {
                for pair in self.pairs(fault.target, *peer) {
                    self.loss.entry(pair.clone()).or_default().push((fault.index, *rate));
                    sim.set_link_fail_rate(pair.0.as_str(), pair.1.as_str(), *rate);
                }
            }
            Action::HttpStatus { status, retry_after_seconds } => match fault.target {
                Target::Server => {
                    self.server_status.push((fault.index, (*status, *retry_after_seconds)));
                    world.modes.set_http_status(Some((*status, *retry_after_seconds)));
                }
                _ => {
                    let mode = ProxyMode::HttpStatus { status: *status, retry_after_seconds: *retry_after_seconds };
                    self.proxy_modes.push((fault.index, mode.clone()));
                    world.proxy.set_mode(mode);
                }
            },
            Action::Slow { delay } => {
                self.slow.push((fault.index, *delay));
                world.modes.set_slow(Some(*delay));
            }
            Action::SetupMode => {
                // The server restarts into setup mode: a fresh process, unconfigured.
                self.setup.push(fault.index);
                world.modes.set_setup_mode(true);
                if !world.is_down("server") {
                    sim.crash("server");
                    sim.bounce("server");
                    world.trace.record_at(t_ms, &world.names.server, None, TraceEvent::Sim(SimEvent::HostCrashed));
                    world.trace.record_at(t_ms, &world.names.server, None, TraceEvent::Sim(SimEvent::HostRestarted));
                }
            }
            Action::ExpireTokens => world.db.expire_all_tokens(),
            Action::RevokeRefresh => {
                self.revoke.push(fault.index);
                world.modes.set_revoke_refresh(true);
            }
            Action::BrokenRoute { route, status, delay } => {
                let broken = Broken { status: *status, delay: *delay };
                self.broken_routes.push((fault.index, *route, broken));
                world.modes.set_broken(*route, Some(broken));
            }
        }
    }

    pub(super) fn end(&mut self, sim: &mut Sim<'_>, world: &Rc<Shared>, fault: &Fault, t_ms: u64) {
        match &fault.action {
            Action::Crash => {
                for host in fault.target.host_names(&self.fleet) {
                    let revived = {
                        let mut down = world.down.borrow_mut();
                        match down.get_mut(&host) {
                            Some(n) if *n > 1 => {
                                *n -= 1;
                                false
                            }
                            Some(_) => {
                                down.remove(&host);
                                true
                            }
                            None => false,
                        }
                    };
                    if revived {
                        sim.bounce(host.as_str());
                        world.trace.record_at(t_ms, &Arc::from(host.as_str()), None, TraceEvent::Sim(SimEvent::HostRestarted));
                    }
                }
            }
            Action::Restart | Action::ExpireTokens => {}
            Action::Partition { peer, direction } => {
                for link in self.directed_links(fault.target, *peer, *direction) {
                    if let Some(n) = self.cuts.get_mut(&link) {
                        *n -= 1;
                        if *n == 0 {
                            self.cuts.remove(&link);
                            sim.repair_oneway(link.0.as_str(), link.1.as_str());
                        }
                    }
                }
            }
            Action::Latency { peer, .. } => {
                for pair in self.pairs(fault.target, *peer) {
                    let held = self.latency.entry(pair.clone()).or_default();
                    held.retain(|(i, _)| *i != fault.index);
                    match held.last() {
                        Some((_, d)) => sim.set_link_latency(pair.0.as_str(), pair.1.as_str(), *d),
                        None => {
                            sim.set_link_latency(pair.0.as_str(), pair.1.as_str(), LINK_LATENCY_MIN);
                            sim.set_link_max_message_latency(pair.0.as_str(), pair.1.as_str(), LINK_LATENCY_MAX);
                        }
                    }
                }
            }
            Action::Loss { peer, .. } => {
                for pair in self.pairs(fault.target, *peer) {
                    let held = self.loss.entry(pair.clone()).or_default();
                    held.retain(|(i, _)| *i != fault.index);
                    let rate = held.last().map_or(0.0, |(_, r)| *r);
                    sim.set_link_fail_rate(pair.0.as_str(), pair.1.as_str(), rate);
                }
            }
            Action::HttpStatus { .. } => match fault.target {
                Target::Server => {
                    self.server_status.retain(|(i, _)| *i != fault.index);
                    world.modes.set_http_status(self.server_status.last().map(|(_, s)| *s));
                }
                _ => {
                    self.proxy_modes.retain(|(i, _)| *i != fault.index);
                    world.proxy.set_mode(self.proxy_modes.last().map_or(ProxyMode::Pass, |(_, m)| m.clone()));
                }
            },
            Action::Slow { .. } => {
                self.slow.retain(|(i, _)| *i != fault.index);
                world.modes.set_slow(self.slow.last().map(|(_, d)| *d));
            }
            Action::SetupMode => {
                self.setup.retain(|i| *i != fault.index);
                world.modes.set_setup_mode(!self.setup.is_empty());
            }
            Action::RevokeRefresh => {
                self.revoke.retain(|i| *i != fault.index);
                world.modes.set_revoke_refresh(!self.revoke.is_empty());
            }
            Action::BrokenRoute { route, .. } => {
                self.broken_routes.retain(|(i, _, _)| *i != fault.index);
                let latest = self.broken_routes.iter().rev().find(|(_, r, _)| r == route).map(|(_, _, b)| *b);
                world.modes.set_broken(*route, latest);
            }
        }
        Self::record(world, t_ms, fault, false);
    }
}
