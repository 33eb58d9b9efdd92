//! Where `server_url` points, for the plain-`http://` rule: the Bearer token and the refresh token
//! travel with every request, so over plain http anyone on the path can read them.
//!
//! * **This machine** (`127.0.0.0/8`, `::1`, `localhost`): plain http never crosses a network;
//!   allowed silently.
//! * **A private or link-local address**, written as an IP literal: RFC 1918 (`10/8`,
//!   `172.16/12`, `192.168/16`), IPv6 unique local (`fc00::/7`), link-local (`169.254/16`,
//!   `fe80::/10`), and the same behind an IPv4-mapped IPv6 literal. RedFlag's documented
//!   deployment is `http://IP:8080` on a LAN, and a Go agent's config says exactly that:
//!   refusing it would make a migrated host go dark. Allowed, with an `INSECURE` warning at
//!   every start and in `check-config`.
//! * **Anything else** (a public address, or a host name, whose address is not known until it
//!   is resolved and may change): refused unless the config sets `allow_insecure_http`, and
//!   then warned about.
//!
//! Pure: no resolution, no I/O. What is not here: the rest of `server_url`'s validation
//! (`config/mod.rs`).

use std::net::IpAddr;

use reqwest::Url;

/// What kind of network a `server_url`'s host is on, as far as its text tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressScope {
    /// This machine: loopback addresses and `localhost` names.
    Loopback,
    /// A private address: RFC 1918 IPv4 or IPv6 unique local (`fc00::/7`).
    Private,
    /// A link-local address: `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
    /// A public address, or a host name (not resolved here).
    Other,
}

impl AddressScope {
    /// In words, for warnings: "a private address (RFC 1918)".
    pub fn describe(self) -> &'static str {
        match self {
            AddressScope::Loopback => "this machine",
            AddressScope::Private => "a private address (RFC 1918 or fc00::/7)",
            AddressScope::LinkLocal => "a link-local address",
            AddressScope::Other => "neither this machine nor a private or link-local address",
        }
    }
}

/// The scope of `url`'s host.
pub fn address_scope(url: &Url) -> AddressScope {
    let Some(host) = url.host_str() else { return AddressScope::Other };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip_scope(ip),
        Err(_) => {
            let h = host.to_ascii_lowercase();
            let h = h.trim_end_matches('.');
            if h == "localhost" || h.ends_with(".localhost") { AddressScope::Loopback } else { AddressScope::Other }
        }
    }
}

/// The scope of one address. An IPv4-mapped IPv6 address (`::ffff:192.168.1.10`) has the scope
/// of the IPv4 address inside it.
pub fn ip_scope(ip: IpAddr) -> AddressScope {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                AddressScope::Loopback
            } else if v4.is_private() {
                AddressScope::Private
            } else if v4.is_link_local() {
                AddressScope::LinkLocal
            } else {
                AddressScope::Other
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return ip_scope(IpAddr::V4(v4));
            }
            if v6.is_loopback() {
                AddressScope::Loopback
            } else if v6.is_unique_local() {
                AddressScope::Private
            } else if v6.is_unicast_link_local() {
                AddressScope::LinkLocal
            } else {
                AddressScope::Other
            }
        }
    }
}

/// Whether `url` points at this machine (plain http there never crosses a network).
pub fn is_loopback(url: &Url) -> bool {
    address_scope(url) == AddressScope::Loopback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(url: &str) -> AddressScope {
        address_scope(&Url::parse(url).unwrap())
    }

    #[test]
    fn loopback() {
        for u in ["http://127.0.0.1:8080", "http://127.9.9.9", "http://[::1]:8080", "http://localhost", "http://LOCALHOST:1", "http://a.localhost", "http://[::ffff:127.0.0.1]"] {
            assert_eq!(scope(u), AddressScope::Loopback, "{u}");
        }
    }

    #[test]
    fn private_addresses_of_rfc_1918_and_fc00() {
        for u in [
            "http://10.0.0.1:8080",
            "http://10.255.255.255",
            "http://172.16.0.1",
            "http://172.31.255.254",
            "http://192.168.1.10:8080",
            "http://[fd12:3456::1]:8080",
            "http://[fc00::1]",
            "http://[::ffff:192.168.0.5]",
        ] {
            assert_eq!(scope(u), AddressScope::Private, "{u}");
        }
    }

    #[test]
    fn link_local() {
        for u in ["http://169.254.1.1", "http://[fe80::1]:8080", "http://[febf::1]"] {
            assert_eq!(scope(u), AddressScope::LinkLocal, "{u}");
        }
    }

    #[test]
    fn public_addresses_and_names_are_other() {
        for u in [
            "http://172.15.255.255",
            "http://172.32.0.1",
            "http://192.169.0.1",
            "http://11.0.0.1",
            "http://100.64.0.1", // shared address space (CGNAT): crosses a provider's network
            "http://192.0.2.10",
            "http://8.8.8.8",
            "http://[2001:db8::1]",
            "http://[fec0::1]",
            "http://redflag.example.com",
            "http://redflag",
            "http://192.168.1.10.example.com",
        ] {
            assert_eq!(scope(u), AddressScope::Other, "{u}");
        }
    }
}
