//! `xlb import`: keepalived.conf, haproxy.cfg and `ipvsadm -S` rules turned into an
//! xlb [`Config`], with every input line not carried over as it was
//! reported (never silently dropped).

pub mod haproxy;
pub mod ipvsadm;
pub mod keepalived;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use crate::config::{BackendHealthConfig, Config, HealthConfig};

/// A converted file: the configuration, and the lines it leaves out or
/// carries over with a change of behaviour.
#[derive(Debug, Default)]
pub struct Imported {
    pub config: Config,
    pub reported: Vec<Reported>,
}

/// One input line (numbered from 1) not carried over as it was, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

impl Imported {
    fn report(&mut self, line: usize, text: &str, reason: impl Into<String>) {
        self.reported.push(Reported {
            line,
            text: text.trim().to_owned(),
            reason: reason.into(),
        });
    }

    /// The reports as `FILE:LINE: TEXT: reason` lines, in input order.
    pub fn report_lines(&self, file: &str) -> Vec<String> {
        self.report_lines_at(|line| format!("{file}:{line}"))
    }

    /// The reports as `PLACE: TEXT: reason` lines, in input order, each
    /// line's place told by `place` (`FILE:LINE` of an included file).
    pub fn report_lines_at(&self, place: impl Fn(usize) -> String) -> Vec<String> {
        let mut reported = self.reported.clone();
        reported.sort_by_key(|r| r.line);
        reported
            .iter()
            .map(|r| format!("{}: {}: {}", place(r.line), r.text, r.reason))
            .collect()
    }

    /// Sets what the inputs do not say: the interfaces to attach to and
    /// the IP-in-IP tunnel sources (one per family at most).
    pub fn set_agent(&mut self, interfaces: &[String], tunnel_sources: &[IpAddr]) {
        let agent = &mut self.config.agent;
        agent.interfaces = interfaces.to_vec();
        for source in tunnel_sources {
            let slot = match source {
                IpAddr::V4(_) => &mut agent.tunnel_source_v4,
                IpAddr::V6(_) => &mut agent.tunnel_source_v6,
            };
            *slot = Some(source.to_string());
        }
    }
}

/// A service's name from its endpoint, like `tcp-10.0.2.210-80` (an IPv6
/// address's colons become dots: names have no colons).
fn service_name(protocol: &str, vip: IpAddr, port: u16) -> String {
    format!("{protocol}-{}-{port}", vip.to_string().replace(':', "."))
}

/// An IPVS scheduler as xlb runs it (always Maglev with the weights):
/// `None` when that is the same, else the difference to report.
fn scheduler_change(scheduler: &str) -> Option<String> {
    match scheduler {
        "mh" => None,
        "sh" => Some(
            "scheduler sh mapped to maglev, which hashes each connection, not only the client \
             address: add persistence to keep a client on one server"
                .into(),
        ),
        other => Some(format!(
            "scheduler {other} mapped to maglev with the weights: connections are spread by \
             hash, not by {}",
            match other {
                "rr" | "wrr" => "turn",
                "lc" | "wlc" | "sed" | "nq" | "lblc" | "lblcr" | "twos" | "ovf" => {
                    "the servers' connection counts"
                }
                _ => "that scheduler",
            }
        )),
    }
}

/// A check less where it probes: servers whose checks are alike but for
/// that share the service's check, each with its own target.
fn without_target(check: &HealthConfig) -> HealthConfig {
    HealthConfig {
        address: None,
        port: None,
        ..check.clone()
    }
}

/// Where a server's check (`own`) probes, when not where the service's
/// check (`service_check`) does: `None` when alike; a part `own` leaves
/// unset is the server's own `address` or `port`, and an error when that
/// port is not known (a HAProxy server without one).
fn own_target(
    service_check: &HealthConfig,
    own: &HealthConfig,
    address: &str,
    port: Option<i64>,
) -> Result<Option<BackendHealthConfig>, ()> {
    let own_address = (own.address != service_check.address)
        .then(|| own.address.clone().unwrap_or_else(|| address.to_owned()));
    let own_port = match (own.port, service_check.port) {
        (own, service) if own == service => None,
        (Some(own), _) => Some(own),
        (None, _) => Some(port.ok_or(())?),
    };
    Ok(
        (own_address.is_some() || own_port.is_some()).then_some(BackendHealthConfig {
            address: own_address,
            port: own_port,
        }),
    )
}

/// Whether a backend's check probes an address of its own, which only a
/// check with `via = "direct"` takes.
fn own_addresses(backends: &[crate::config::BackendConfig]) -> bool {
    backends
        .iter()
        .any(|b| b.health.as_ref().is_some_and(|h| h.address.is_some()))
}

/// A netmask (`255.255.255.0`) or prefix length (`24`) as a prefix length.
fn prefix_len(mask: &str) -> Option<i64> {
    if let Ok(len) = mask.parse::<u8>() {
        return (1..=128).contains(&len).then_some(len.into());
    }
    let mask: std::net::Ipv4Addr = mask.parse().ok()?;
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (len > 0 && bits.checked_shl(len).unwrap_or(0) == 0).then_some(len.into())
}
