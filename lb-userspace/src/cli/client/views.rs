//! The API's answers as the tables read them (`crate::agent::view` writes
//! them): fields the tables do not show are left out, and unknown ones are
//! ignored, so an agent with more to say still works.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

use super::format;

pub use crate::agent::{FlowCountView as FlowCounts, TrafficView as Traffic};

#[derive(Debug, Deserialize)]
pub struct Service {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub mode: String,
    pub scheduler: String,
    pub persistence: Option<Value>,
    pub fallback: Option<SocketAddr>,
    pub fallback_active: bool,
    pub health: Option<Value>,
    pub backends: Vec<Backend>,
    pub stats: Traffic,
}

impl Service {
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.vip, self.port)
    }

    /// How many backends take new flows.
    pub fn in_service(&self) -> usize {
        self.backends.iter().filter(|b| b.takes_new_flows()).count()
    }

    /// `up/total` backends, with `*` when the fallback takes the traffic.
    pub fn backends_cell(&self) -> String {
        let marker = if self.fallback_active { "*" } else { "" };
        format!("{}/{}{marker}", self.in_service(), self.backends.len())
    }
}

#[derive(Debug, Deserialize)]
pub struct Backend {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u16,
    pub admin_state: String,
    pub oper_state: String,
    pub serving: bool,
    pub ring_share: f64,
    pub next_hop: Option<NextHop>,
    pub next_hop_error: Option<String>,
    pub check: Option<Check>,
    /// Zero from an agent that does not count flows.
    #[serde(default)]
    pub flows: FlowCounts,
    pub stats: Traffic,
}

impl Backend {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// In the data plane, ready and weighted: new flows come to it.
    pub fn takes_new_flows(&self) -> bool {
        self.serving && self.admin_state == "ready" && self.weight > 0
    }
}

#[derive(Debug, Deserialize)]
pub struct NextHop {
    pub mac: String,
    pub ifindex: u32,
}

#[derive(Debug, Deserialize)]
pub struct Check {
    pub last: Option<LastProbe>,
    /// The streak toward the other state: "1 of 3 failures".
    pub progress: String,
}

#[derive(Debug, Deserialize)]
pub struct LastProbe {
    pub ok: bool,
    pub detail: String,
    pub at_unix_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct Flow {
    pub service: String,
    pub protocol: String,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub backend: SocketAddr,
    pub idle_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct Stats {
    pub version: String,
    pub uptime_s: f64,
    pub interfaces: Vec<String>,
    pub health_transitions: u64,
    pub applies: u64,
    pub counters: BTreeMap<String, u64>,
    pub services: Vec<ServiceStats>,
}

impl Stats {
    /// `xlb VERSION, up UPTIME, interfaces: NAME, ...`: the first line of
    /// `xlb stats` and `xlb status`.
    pub fn headline(&self) -> String {
        format!(
            "xlb {}, up {}, interfaces: {}",
            self.version,
            format::duration(Duration::from_secs_f64(self.uptime_s.max(0.0))),
            self.interfaces.join(", ")
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct ServiceStats {
    pub name: String,
    pub stats: Traffic,
    pub backends: Vec<BackendStats>,
}

#[derive(Debug, Deserialize)]
pub struct BackendStats {
    pub address: SocketAddr,
    pub stats: Traffic,
}

/// `value` read as `T`, or an error that says what the agent sent instead.
pub fn read<T: DeserializeOwned>(value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("unexpected answer from the agent: {e}"))
}
