//! The API's JSON: its answers and the bodies the CLI sends. The agent
//! writes these types (built in [`super::views`]; flow counts, check
//! statuses and VRRP instances as the modules that keep them do) and the
//! CLI reads the same ones. Answers are read without
//! `deny_unknown_fields`, so an agent with more to say still works.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_common::{
    maps::{Mode, TrafficStats},
    stats::Counter,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    config::{BackendHealthConfig, HealthConfig, PersistenceConfig, RuntimeState},
    dataplane,
    health::CheckStatus,
    model::{AdminState, OperState, Protocol},
};
pub use crate::{dataplane::FlowCounts, vrrp::InstanceStatus};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl From<TrafficStats> for Traffic {
    fn from(s: TrafficStats) -> Self {
        Traffic {
            packets: s.packets,
            bytes: s.bytes,
            new_flows: s.new_flows,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Service {
    pub name: String,
    #[schema(value_type = String)]
    pub vip: IpAddr,
    pub port: u16,
    #[serde(with = "crate::model::spelled")]
    #[schema(schema_with = crate::model::spelled::schema::<Protocol>)]
    pub protocol: Protocol,
    #[serde(with = "crate::model::spelled")]
    #[schema(schema_with = crate::model::spelled::schema::<Mode>)]
    pub mode: Mode,
    pub scheduler: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<PersistenceConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub fallback: Option<SocketAddr>,
    /// The fallback takes the traffic: no backend takes new flows.
    pub fallback_active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthConfig>,
    pub backends: Vec<Backend>,
    /// The sum over its backends; zero from an agent that does not count flows.
    #[serde(default)]
    pub flows: FlowCounts,
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
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Backend {
    #[schema(value_type = String)]
    pub address: IpAddr,
    pub port: u16,
    pub weight: u16,
    pub admin_state: AdminState,
    pub oper_state: OperState,
    /// In the data plane: takes new flows by its weight, or (drained) keeps
    /// its established ones.
    pub serving: bool,
    /// Its share of the Maglev ring, 0 to 1.
    pub ring_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<NextHop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop_error: Option<String>,
    /// Its own health-check target, as configured (`[service.backend.health]`);
    /// `check.target` says where the probes go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<BackendHealthConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckStatus>,
    /// Milliseconds since its last check completed: null before the first
    /// (or without a check). Growing past the interval, the checker is stuck.
    pub last_check_age_ms: Option<u64>,
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
        self.serving && self.admin_state == AdminState::Ready && self.weight > 0
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct NextHop {
    pub mac: String,
    pub ifindex: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Flow {
    pub service: String,
    #[serde(with = "crate::model::spelled")]
    #[schema(schema_with = crate::model::spelled::schema::<Protocol>)]
    pub protocol: Protocol,
    #[schema(value_type = String)]
    pub client: SocketAddr,
    #[schema(value_type = String)]
    pub vip: SocketAddr,
    #[schema(value_type = String)]
    pub backend: SocketAddr,
    #[serde(rename = "idle_ms", with = "millis")]
    #[schema(value_type = u64)]
    pub idle: Duration,
}

/// The flood guard: its cap and whether it is forwarding new flows without
/// state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FloodGuard {
    /// New flows per second one CPU records (0: no limit).
    pub new_flows_per_cpu: u32,
    pub active: bool,
    /// Since when it has been active; null while it is not.
    pub active_since_unix_ms: Option<u64>,
    /// New flows forwarded without state since the data plane was loaded.
    pub stateless_flows: u64,
}

/// The last walk of the flow table, which the flow counts come from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FlowWalk {
    /// When it ended; null before the first.
    pub at_unix_ms: Option<u64>,
    #[serde(rename = "took_ms", with = "millis_f64")]
    #[schema(value_type = f64)]
    pub took: Duration,
    /// Entries read.
    pub entries: u64,
    /// Entries deleted: done, expired, or of removed backends.
    pub pruned: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub version: String,
    #[serde(rename = "uptime_s", with = "secs_f64")]
    #[schema(value_type = f64)]
    pub uptime: Duration,
    pub interfaces: Vec<String>,
    pub health_transitions: u64,
    pub applies: u64,
    /// Maglev tables built since the agent started.
    pub maglev_builds: u64,
    pub counters: Counters,
    pub flow_count: FlowWalk,
    pub flood_guard: FloodGuard,
    pub services: Vec<ServiceStats>,
    /// Changes need the API token (the status page offers its admin
    /// actions by that).
    pub changes_need_token: bool,
    /// Changes made through the API that the agent keeps over its file
    /// (`GET /api/v1/state` lists them).
    #[serde(default)]
    pub api_changes: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceStats {
    pub name: String,
    pub stats: Traffic,
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BackendStats {
    #[schema(value_type = String)]
    pub address: SocketAddr,
    pub stats: Traffic,
}

/// The data plane's counters by name, in [`Counter::ALL`]'s order. A
/// reader keeps those it knows of the ones it was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(Vec<(Counter, u64)>);

impl Counters {
    pub fn get(&self, counter: Counter) -> Option<u64> {
        self.iter().find(|(c, _)| *c == counter).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        self.0.iter().copied()
    }
}

impl From<&dataplane::Counters> for Counters {
    fn from(counters: &dataplane::Counters) -> Self {
        Counters(
            Counter::ALL
                .iter()
                .map(|c| (*c, counters.get(*c)))
                .collect(),
        )
    }
}

/// An object of every counter, by name.
impl utoipa::PartialSchema for Counters {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        Counter::ALL
            .iter()
            .fold(ObjectBuilder::new(), |object, counter| {
                let count = ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    )))
                    .minimum(Some(0));
                object
                    .property(counter.name(), count)
                    .required(counter.name())
            })
            .into()
    }
}

impl ToSchema for Counters {}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|(c, value)| (c.name(), value)))
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let sent = std::collections::BTreeMap::<String, u64>::deserialize(d)?;
        Ok(Counters(
            Counter::ALL
                .iter()
                .filter_map(|c| Some((*c, *sent.get(c.name())?)))
                .collect(),
        ))
    }
}

/// What `PATCH /api/v1/services/{name}/backends/{addr}` may change.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 65535)]
    pub weight: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_state: Option<AdminState>,
}

/// The answer to `POST /api/v1/reload`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Reloaded {
    /// What changed.
    pub reloaded: String,
}

/// The body of a 4xx or 5xx answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// The configuration field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A duration as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A duration as fractional milliseconds.
mod millis_f64 {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::secs_f64::from(d, 1000.0)
    }
}

/// A duration as fractional seconds.
mod secs_f64 {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        from(d, 1.0)
    }

    /// A number of `per_second`ths of a second.
    pub fn from<'de, D: Deserializer<'de>>(d: D, per_second: f64) -> Result<Duration, D::Error> {
        let value = f64::deserialize(d)?;
        Duration::try_from_secs_f64(value / per_second)
            .map_err(|e| D::Error::custom(format!("{value} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn durations_and_counters_read_back_as_written() {
        let walk = FlowWalk {
            at_unix_ms: None,
            took: Duration::from_micros(1500),
            entries: 3,
            pruned: 1,
        };
        let json = serde_json::to_value(walk).unwrap();
        assert_eq!(
            json,
            json!({"at_unix_ms": null, "took_ms": 1.5, "entries": 3, "pruned": 1})
        );
        assert_eq!(serde_json::from_value::<FlowWalk>(json).unwrap(), walk);

        let mut totals = dataplane::Counters::default();
        totals.set(Counter::Tx, 7);
        let counters = Counters::from(&totals);
        let json = serde_json::to_string(&counters).unwrap();
        assert!(json.starts_with(r#"{"rx_packets":0,"#), "{json}");
        assert_eq!(serde_json::from_str::<Counters>(&json).unwrap(), counters);
        // Counters this reader does not know are left out.
        let newer: Counters = serde_json::from_str(r#"{"tx": 7, "warp_drive": 1}"#).unwrap();
        assert_eq!(newer.iter().collect::<Vec<_>>(), [(Counter::Tx, 7)]);
    }
}

/// `GET /api/v1/state`: the changes made through the API that the agent
/// keeps over its configuration file; `DELETE /api/v1/state` answers with
/// those it dropped.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateView {
    /// The state file.
    pub path: String,
    /// In the state file's spelling; empty when the file runs as written.
    pub changes: RuntimeState,
}
