//! VRRP: the virtual IPs float between directors (RFC 5798 VRRPv3 for IPv4
//! and IPv6, RFC 3768 VRRPv2 with PASS authentication, for keepalived
//! peers). [`packet`] encodes and checks advertisements, [`state`] is the
//! protocol's state machine with an explicit clock, [`net`] does the
//! interface work (sockets, addresses, gratuitous ARP / unsolicited NA).

pub mod net;
pub mod packet;
mod reload;
mod runtime;
pub mod state;

pub use crate::model::{V3Checksum, Version};
pub use reload::plan as reload_plan;
pub use runtime::{InstanceStatus, Tracking, Vrrp};

use serde::{Deserialize, Serialize};

/// VRRP's IP protocol number.
pub const IPPROTO_VRRP: u8 = 112;
/// Where advertisements go: 224.0.0.18 and ff02::12.
pub const GROUP_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(224, 0, 0, 18);
pub const GROUP_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The TTL / hop limit advertisements are sent with and must arrive with.
pub const TTL: u8 = 255;

/// An instance's protocol state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Initialize,
    Backup,
    Master,
    /// A tracked object with weight 0 is down: the instance cannot serve
    /// and does not take part (keepalived's FAULT).
    Fault,
}

impl State {
    /// Its spelling in the API and the metrics (as serde spells it).
    pub const fn name(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

impl crate::model::Spelled for State {
    const SPELLINGS: &'static [(&'static str, Self)] = &[
        (State::Initialize.name(), State::Initialize),
        (State::Backup.name(), State::Backup),
        (State::Master.name(), State::Master),
        (State::Fault.name(), State::Fault),
    ];
}
