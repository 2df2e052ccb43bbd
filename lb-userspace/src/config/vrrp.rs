//! The `[vrrp]` section: instances (keepalived's `vrrp_instance`) and sync
//! groups, as written and as validated.

use std::{net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    fields::{choice, duration_in, integer, ip, is_interface_name},
    format_duration, unless_default, ConfigError,
};
use crate::model::{
    rules::is_service_name, SyncGroup, Track, Tracked, V3Checksum, Version, VrrpInstance,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpConfig {
    #[serde(default, rename = "instance", skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceConfig>,
    #[serde(default, rename = "sync_group", skip_serializing_if = "Vec::is_empty")]
    pub sync_groups: Vec<SyncGroupConfig>,
}

impl VrrpConfig {
    pub(super) fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.sync_groups.is_empty()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub name: String,
    pub interface: String,
    pub vrid: i64,
    pub priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advert_interval: Option<String>,
    #[serde(default)]
    pub virtual_addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preempt_delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_pass: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v3_checksum: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub garp_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub garp_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub garp_refresh: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track: Vec<TrackConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<Vec<String>>,
}

/// One of `interface`, `dataplane` or `service`, with a weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncGroupConfig {
    pub name: String,
    pub instances: Vec<String>,
}

pub(super) const VERSIONS: &[(i64, Version)] = &[(3, Version::V3), (2, Version::V2)];
pub(super) const CHECKSUMS: &[(&str, V3Checksum)] = &[
    ("pseudo_header", V3Checksum::PseudoHeader),
    ("message_only", V3Checksum::MessageOnly),
];
pub(super) const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);
pub(super) const DEFAULT_GARP_COUNT: u32 = 3;
pub(super) const DEFAULT_GARP_INTERVAL: Duration = Duration::from_millis(100);

pub(super) fn validate(
    raw: &VrrpConfig,
) -> Result<(Vec<VrrpInstance>, Vec<SyncGroup>), ConfigError> {
    let mut instances: Vec<VrrpInstance> = Vec::new();
    for (index, raw) in raw.instances.iter().enumerate() {
        let instance = self::instance(raw, index)?;
        let path = format!("vrrp.instance[{}]", instance.name);
        if instances.iter().any(|i| i.name == instance.name) {
            return Err(ConfigError::new(
                format!("vrrp.instance[{index}].name"),
                format!("{:?} names two instances", instance.name),
            ));
        }
        let family = instance.virtual_addresses[0].is_ipv4();
        if let Some(other) = instances.iter().find(|i| {
            i.interface == instance.interface
                && i.vrid == instance.vrid
                && i.virtual_addresses[0].is_ipv4() == family
        }) {
            return Err(ConfigError::new(
                format!("{path}.vrid"),
                format!(
                    "{} on {} is already vrrp.instance[{}]",
                    instance.vrid, instance.interface, other.name
                ),
            ));
        }
        for addr in &instance.virtual_addresses {
            if let Some(other) = instances
                .iter()
                .find(|i| i.virtual_addresses.contains(addr))
            {
                return Err(ConfigError::new(
                    format!("{path}.virtual_addresses"),
                    format!(
                        "{addr} is already an address of vrrp.instance[{}]",
                        other.name
                    ),
                ));
            }
        }
        instances.push(instance);
    }
    let mut groups: Vec<SyncGroup> = Vec::new();
    for (index, raw) in raw.sync_groups.iter().enumerate() {
        let field = format!("vrrp.sync_group[{index}].name");
        check_name(&field, &raw.name)?;
        if groups.iter().any(|g| g.name == raw.name) {
            return Err(ConfigError::new(
                field,
                format!("{:?} names two sync groups", raw.name),
            ));
        }
        let path = format!("vrrp.sync_group[{}]", raw.name);
        if raw.instances.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.instances"),
                "a sync group needs at least one instance",
            ));
        }
        for (i, name) in raw.instances.iter().enumerate() {
            let field = format!("{path}.instances[{i}]");
            if !instances.iter().any(|inst| &inst.name == name) {
                return Err(ConfigError::new(
                    field,
                    format!("no instance is named {name:?}"),
                ));
            }
            if raw.instances[..i].contains(name) {
                return Err(ConfigError::new(field, format!("{name:?} is listed twice")));
            }
            if let Some(other) = groups.iter().find(|g| g.instances.contains(name)) {
                return Err(ConfigError::new(
                    field,
                    format!("{name:?} is already in sync group {:?}", other.name),
                ));
            }
        }
        groups.push(SyncGroup {
            name: raw.name.clone(),
            instances: raw.instances.clone(),
        });
    }
    Ok((instances, groups))
}

fn instance(raw: &InstanceConfig, index: usize) -> Result<VrrpInstance, ConfigError> {
    check_name(&format!("vrrp.instance[{index}].name"), &raw.name)?;
    let path = format!("vrrp.instance[{}]", raw.name);
    let at = |key: &str| format!("{path}.{key}");
    if !is_interface_name(&raw.interface) {
        return Err(ConfigError::new(
            at("interface"),
            format!(
                "{:?} is not an interface name (1-15 characters, no '/', ':' or whitespace)",
                raw.interface
            ),
        ));
    }
    let vrid: u8 = integer(&at("vrid"), Some(raw.vrid), 0, 1..=255)?;
    let priority: u8 = integer(&at("priority"), Some(raw.priority), 0, 1..=255)?;
    let version = match raw.version {
        None => Version::V3,
        Some(v) => VERSIONS
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(_, v)| *v)
            .ok_or_else(|| ConfigError::new(at("version"), format!("{v} is not one of: 3, 2")))?,
    };
    // v3 counts the interval in centiseconds on the wire, v2 in seconds.
    let (range, unit, units) = match version {
        Version::V3 => (
            Duration::from_millis(10)..=Duration::from_millis(40_950),
            Duration::from_millis(10),
            "centiseconds",
        ),
        Version::V2 => (
            Duration::from_secs(1)..=Duration::from_secs(255),
            Duration::from_secs(1),
            "seconds (VRRPv2)",
        ),
    };
    let advert_interval = duration_in(
        &at("advert_interval"),
        raw.advert_interval.as_deref(),
        DEFAULT_ADVERT_INTERVAL,
        range,
    )?;
    if !advert_interval.as_nanos().is_multiple_of(unit.as_nanos()) {
        return Err(ConfigError::new(
            at("advert_interval"),
            format!(
                "{} is not a whole number of {units}",
                format_duration(advert_interval)
            ),
        ));
    }
    if raw.virtual_addresses.is_empty() {
        return Err(ConfigError::new(
            at("virtual_addresses"),
            "at least one virtual address is required",
        ));
    }
    if raw.virtual_addresses.len() > 255 {
        return Err(ConfigError::new(
            at("virtual_addresses"),
            format!(
                "{} addresses: an advertisement carries 255 at most",
                raw.virtual_addresses.len()
            ),
        ));
    }
    let mut virtual_addresses: Vec<IpAddr> = Vec::new();
    for (i, text) in raw.virtual_addresses.iter().enumerate() {
        let field = format!("{path}.virtual_addresses[{i}]");
        let addr = ip(&field, text)?;
        if let Some(first) = virtual_addresses.first() {
            if first.is_ipv4() != addr.is_ipv4() {
                return Err(ConfigError::new(
                    field,
                    format!("{addr} is not of the family of {first}: one instance, one family"),
                ));
            }
        }
        if addr.is_ipv6() && version == Version::V2 {
            return Err(ConfigError::new(
                field,
                format!("{addr}: VRRPv2 carries IPv4 only"),
            ));
        }
        if virtual_addresses.contains(&addr) {
            return Err(ConfigError::new(field, format!("{addr} is listed twice")));
        }
        virtual_addresses.push(addr);
    }
    let v4 = virtual_addresses[0].is_ipv4();
    if let Some(pass) = &raw.auth_pass {
        if version != Version::V2 {
            return Err(ConfigError::new(
                at("auth_pass"),
                "authentication is VRRPv2's (set version = 2); VRRPv3 has none",
            ));
        }
        if pass.is_empty() || pass.len() > 8 {
            return Err(ConfigError::new(
                at("auth_pass"),
                format!("{} bytes: a VRRPv2 password has 1 to 8", pass.len()),
            ));
        }
    }
    if raw.v3_checksum.is_some() && version == Version::V2 {
        return Err(ConfigError::new(
            at("v3_checksum"),
            "applies to VRRPv3 only",
        ));
    }
    let v3_checksum = choice(&at("v3_checksum"), raw.v3_checksum.as_deref(), CHECKSUMS)?;
    let mut unicast_peers = Vec::new();
    for (i, text) in raw.unicast_peers.iter().enumerate() {
        let field = format!("{path}.unicast_peers[{i}]");
        let peer = ip(&field, text)?;
        if peer.is_ipv4() != v4 {
            return Err(ConfigError::new(
                field,
                format!("{peer} is not of the virtual addresses' family"),
            ));
        }
        if unicast_peers.contains(&peer) || virtual_addresses.contains(&peer) {
            return Err(ConfigError::new(
                field,
                format!("{peer} is listed twice, or is a virtual address"),
            ));
        }
        unicast_peers.push(peer);
    }
    let mut track = Vec::new();
    for (i, raw) in raw.track.iter().enumerate() {
        track.push(tracked(raw, &format!("{path}.track[{i}]"))?);
    }
    let notify = match &raw.notify {
        None => None,
        Some(command) if command.first().is_some_and(|c| c.starts_with('/')) => {
            Some(command.clone())
        }
        Some(_) => {
            return Err(ConfigError::new(
                at("notify"),
                "the command must start with an absolute path",
            ))
        }
    };
    Ok(VrrpInstance {
        name: raw.name.clone(),
        interface: raw.interface.clone(),
        vrid,
        priority,
        version,
        advert_interval,
        virtual_addresses,
        preempt: raw.preempt.unwrap_or(true),
        preempt_delay: duration_in(
            &at("preempt_delay"),
            raw.preempt_delay.as_deref(),
            Duration::ZERO,
            Duration::ZERO..=Duration::from_secs(3600),
        )?,
        auth_pass: raw.auth_pass.clone(),
        unicast_peers,
        v3_checksum,
        garp_count: integer(
            &at("garp_count"),
            raw.garp_count,
            DEFAULT_GARP_COUNT,
            0..=100,
        )?,
        garp_interval: duration_in(
            &at("garp_interval"),
            raw.garp_interval.as_deref(),
            DEFAULT_GARP_INTERVAL,
            Duration::ZERO..=Duration::from_secs(60),
        )?,
        garp_refresh: raw
            .garp_refresh
            .as_deref()
            .map(|text| {
                duration_in(
                    &at("garp_refresh"),
                    Some(text),
                    Duration::ZERO,
                    Duration::from_millis(100)..=Duration::from_secs(3600),
                )
            })
            .transpose()?,
        track,
        notify,
    })
}

/// An instance's or a sync group's name: as a service's.
fn check_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if is_service_name(name) {
        return Ok(());
    }
    Err(ConfigError::new(
        field,
        format!("{name:?} is not a valid name (1-64 characters of A-Z a-z 0-9 _ . -)"),
    ))
}

fn tracked(raw: &TrackConfig, path: &str) -> Result<Track, ConfigError> {
    let object =
        match (&raw.interface, raw.dataplane, &raw.service) {
            (Some(ifname), None, None) => {
                if !is_interface_name(ifname) {
                    return Err(ConfigError::new(
                        format!("{path}.interface"),
                        format!("{ifname:?} is not an interface name"),
                    ));
                }
                Tracked::Interface(ifname.clone())
            }
            (None, Some(true), None) => Tracked::Dataplane,
            (None, None, Some(name)) => Tracked::Service(name.clone()),
            _ => return Err(ConfigError::new(
                path,
                "track exactly one of: interface = \"NAME\", dataplane = true, service = \"NAME\"",
            )),
        };
    let weight = integer(&format!("{path}.weight"), raw.weight, 0, -254..=254)?;
    Ok(Track { object, weight })
}

pub(super) fn from_model(instances: &[VrrpInstance], groups: &[SyncGroup]) -> VrrpConfig {
    VrrpConfig {
        instances: instances.iter().map(instance_config).collect(),
        sync_groups: groups
            .iter()
            .map(|g| SyncGroupConfig {
                name: g.name.clone(),
                instances: g.instances.clone(),
            })
            .collect(),
    }
}

fn instance_config(i: &VrrpInstance) -> InstanceConfig {
    InstanceConfig {
        name: i.name.clone(),
        interface: i.interface.clone(),
        vrid: i.vrid.into(),
        priority: i.priority.into(),
        version: unless_default(i.version, Version::V3)
            .and_then(|v| VERSIONS.iter().find(|(_, x)| *x == v).map(|(n, _)| *n)),
        advert_interval: unless_default(i.advert_interval, DEFAULT_ADVERT_INTERVAL)
            .map(format_duration),
        virtual_addresses: i.virtual_addresses.iter().map(IpAddr::to_string).collect(),
        preempt: unless_default(i.preempt, true),
        preempt_delay: unless_default(i.preempt_delay, Duration::ZERO).map(format_duration),
        auth_pass: i.auth_pass.clone(),
        unicast_peers: i.unicast_peers.iter().map(IpAddr::to_string).collect(),
        v3_checksum: unless_default(i.v3_checksum, V3Checksum::PseudoHeader)
            .map(|_| "message_only".to_string()),
        garp_count: unless_default(i.garp_count, DEFAULT_GARP_COUNT).map(i64::from),
        garp_interval: unless_default(i.garp_interval, DEFAULT_GARP_INTERVAL).map(format_duration),
        garp_refresh: i.garp_refresh.map(format_duration),
        track: i
            .track
            .iter()
            .map(|t| {
                let mut raw = TrackConfig {
                    weight: unless_default(t.weight, 0).map(i64::from),
                    ..TrackConfig::default()
                };
                match &t.object {
                    Tracked::Interface(name) => raw.interface = Some(name.clone()),
                    Tracked::Dataplane => raw.dataplane = Some(true),
                    Tracked::Service(name) => raw.service = Some(name.clone()),
                }
                raw
            })
            .collect(),
        notify: i.notify.clone(),
    }
}
