//! What `xlb doctor` judges, read from the kernel: nothing here decides.

use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
    RouteNetlinkMessage,
};

use crate::{
    dataplane,
    model::Model,
    nat_routes::{self, NatRoutes},
    net::{
        ethtool,
        rtnl::{self, Rtnl},
    },
    run, sysctl,
};

/// The state of this host that the checks need, in the calling thread's
/// network and mount namespaces.
#[derive(Debug)]
pub struct Facts {
    /// The kernel's release, as `uname -r` prints it.
    pub kernel: String,
    /// Each of the configured interfaces, or why it could not be read.
    pub links: BTreeMap<String, Result<Link, String>>,
    /// The settings the checks read, by sysctl key; one that could not be
    /// read is missing.
    pub sysctls: BTreeMap<String, String>,
    /// The pin path's nearest existing directory, and whether it is on a
    /// BPF filesystem.
    pub pin_dir: Result<(PathBuf, bool), String>,
    /// The routes to NAT backends, or why one is wrong.
    pub nat_routes: Result<NatRoutes, String>,
    /// Whether the API has a token, or why the token cannot be read.
    pub token: Result<bool, String>,
}

/// An interface the program is attached to.
#[derive(Clone, Debug, Default)]
pub struct Link {
    pub driver: Option<String>,
    /// Whether it strips VLAN tags on receive; `None` if unknown.
    pub rx_vlan_offload: Option<bool>,
    /// The VLAN devices on top of it.
    pub vlans: Vec<String>,
    pub addresses: Vec<IpAddr>,
    /// For a veth, its peer (in whatever namespace), or why it could not be
    /// read.
    pub veth_peer: Option<Result<Peer, String>>,
}

impl Link {
    pub fn is_veth(&self) -> bool {
        self.driver.as_deref() == Some("veth")
    }
}

/// A veth's other end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// Whether a native (driver mode) XDP program is attached to it.
    pub xdp: bool,
}

/// Reads what the checks of `model` need.
pub fn gather(model: &Model) -> Facts {
    let mut rtnl = Rtnl::open();
    let links = model
        .agent
        .interfaces
        .iter()
        .map(|name| {
            let link = match &mut rtnl {
                Ok(rtnl) => link(rtnl, name).map_err(|e| format!("reading {name}: {e}")),
                Err(e) => Err(format!("opening a route socket: {e}")),
            };
            (name.clone(), link)
        })
        .collect();
    let mut keys = vec![
        "net.ipv4.ip_forward".to_string(),
        "net.ipv6.conf.all.forwarding".to_string(),
    ];
    for name in std::iter::once("all").chain(model.agent.interfaces.iter().map(String::as_str)) {
        for setting in ["rp_filter", "accept_local", "send_redirects", "forwarding"] {
            keys.push(sysctl::conf_key("ipv4", name, setting));
        }
        keys.push(sysctl::conf_key("ipv6", name, "forwarding"));
    }
    let sysctls = keys
        .into_iter()
        .filter_map(|key| sysctl::read(&key).ok().map(|value| (key, value)))
        .collect();
    Facts {
        kernel: sysctl::read("kernel.osrelease").unwrap_or_else(|e| e.to_string()),
        links,
        sysctls,
        pin_dir: dataplane::on_bpffs(&model.agent.pin_path).map_err(|e| e.to_string()),
        nat_routes: nat_routes::check(model, None).map_err(|e| e.to_string()),
        token: run::read_token(model)
            .map(|token| token.is_some())
            .map_err(|e| format!("{e:#}")),
    }
}

fn link(rtnl: &mut Rtnl, name: &str) -> io::Result<Link> {
    let message = rtnl.link(name)?;
    let index = message.header.index;
    let driver = ethtool::driver(name).ok().or_else(|| sysfs_driver(name));
    let addresses = rtnl
        .addresses(index)?
        .iter()
        .filter_map(rtnl::local_address)
        .collect();
    let veth_peer = (driver.as_deref() == Some("veth"))
        .then(|| peer(rtnl, &message).map_err(|e| e.to_string()));
    Ok(Link {
        driver,
        rx_vlan_offload: ethtool::rx_vlan_offload(name).ok(),
        vlans: vlans(name),
        addresses,
        veth_peer,
    })
}

/// The driver /sys names, for an interface ethtool does not answer for.
fn sysfs_driver(name: &str) -> Option<String> {
    let target = std::fs::read_link(format!("/sys/class/net/{name}/device/driver")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The VLAN devices whose lower device is `name`.
fn vlans(name: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(Path::new("/sys/class/net").join(name)) else {
        return Vec::new();
    };
    let mut vlans: Vec<String> = entries
        .filter_map(|e| {
            let file = e.ok()?.file_name().to_string_lossy().into_owned();
            let upper = file.strip_prefix("upper_")?.to_string();
            let uevent = std::fs::read_to_string(format!("/sys/class/net/{upper}/uevent")).ok()?;
            uevent.lines().any(|l| l == "DEVTYPE=vlan").then_some(upper)
        })
        .collect();
    vlans.sort();
    vlans
}

/// A veth's peer, asked of the kernel in the peer's namespace (by its id
/// as this namespace knows it, IFLA_TARGET_NETNSID).
fn peer(rtnl: &mut Rtnl, veth: &LinkMessage) -> io::Result<Peer> {
    let mut index = None;
    let mut netns = None;
    for attribute in &veth.attributes {
        match attribute {
            LinkAttribute::Link(peer) => index = Some(*peer),
            LinkAttribute::LinkNetNsId(id) => netns = Some(*id),
            _ => {}
        }
    }
    let index = index.ok_or_else(|| io::Error::other("the kernel names no peer"))?;
    let mut request = LinkMessage::default();
    request.header.index = index;
    if let Some(id) = netns {
        request.attributes.push(LinkAttribute::IfNetnsId(id));
    }
    let RouteNetlinkMessage::NewLink(peer) = rtnl.get(RouteNetlinkMessage::GetLink(request))?
    else {
        return Err(io::Error::other("the kernel's answer is not a link"));
    };
    let mut found = Peer {
        name: format!("ifindex {index}"),
        xdp: false,
    };
    for attribute in &peer.attributes {
        match attribute {
            LinkAttribute::IfName(name) => found.name = name.clone(),
            LinkAttribute::Xdp(xdp) => {
                found.xdp = xdp.iter().any(|x| {
                    matches!(
                        x,
                        LinkXdp::Attached(XdpAttached::Driver) | LinkXdp::DrvProgId(_)
                    )
                })
            }
            _ => {}
        }
    }
    Ok(found)
}
