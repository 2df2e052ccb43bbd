//! `xlb realserver`: the real-server side of DR and IP-in-IP. What is to
//! change is worked out from the host's state first ([`plan`]), then made
//! and printed, so a second run finds nothing to do.

use std::{collections::BTreeMap, fmt, net::IpAddr, path::PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use log::LevelFilter;

use super::{
    block_on,
    decap::{self, DecapArgs, SourcePrefix, DEFAULT_PIN_PATH},
};
use crate::{
    dataplane::AttachMode,
    net::rtnl::{self, Rtnl},
    sysctl, vrrp,
};

/// The interface that holds the VIPs.
const LO: &str = "lo";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RealserverMode {
    /// Direct routing: the director sends the frame to this host's MAC.
    Dr,
    /// IP-in-IP: the director tunnels the packet to this host's address.
    Ipip,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    xlb realserver --mode dr --vip 198.18.0.100 --vip fd00::100\n  \
    xlb realserver --mode ipip --vip 198.18.0.100 --iface eth0 --from 198.18.1.2\n  \
    xlb realserver --mode dr --vip 198.18.0.100 --remove")]
pub struct RealserverArgs {
    #[arg(long, value_enum)]
    pub mode: RealserverMode,

    /// A VIP this server answers for (repeat for several).
    #[arg(long = "vip", value_name = "ADDR", required = true)]
    pub vips: Vec<IpAddr>,

    /// The interface facing the directors: it gets the ARP settings too,
    /// and for IP-in-IP the decapsulator (required there).
    #[arg(short, long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// IP-in-IP: a director's tunnel source, as `xlb decap --from` takes it
    /// (repeat for each director).
    #[arg(long = "from", value_name = "ADDR[/LEN]")]
    pub sources: Vec<SourcePrefix>,

    /// IP-in-IP: where the decapsulator is pinned, as `xlb decap --pin-path`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    /// Undo: detach the decapsulator from --iface, remove the VIPs from lo,
    /// and, once lo holds no other IPv4 address than loopback ones, put
    /// arp_ignore and arp_announce back to the kernel's default, 0 (a loose
    /// rp_filter stays).
    #[arg(long)]
    pub remove: bool,

    /// Print what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One change to the host.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    Sysctl {
        key: String,
        from: String,
        to: &'static str,
    },
    AddAddress(IpAddr),
    RemoveAddress(IpAddr),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = |addr: &IpAddr| if addr.is_ipv4() { 32 } else { 128 };
        match self {
            Change::Sysctl { key, from, to } => write!(f, "set {key} {from} -> {to}"),
            Change::AddAddress(addr @ IpAddr::V4(_)) => {
                write!(f, "add {addr}/{} to {LO}", prefix(addr))
            }
            Change::AddAddress(addr) => write!(f, "add {addr}/{} to {LO} (nodad)", prefix(addr)),
            Change::RemoveAddress(addr) => write!(f, "remove {addr}/{} from {LO}", prefix(addr)),
        }
    }
}

/// What the plan depends on: the settings by sysctl key, and lo's addresses.
#[derive(Debug, Default)]
struct HostState {
    sysctls: BTreeMap<String, String>,
    lo: Vec<IpAddr>,
}

/// What the mode wants of the host.
struct Wanted<'a> {
    mode: RealserverMode,
    vips: &'a [IpAddr],
    iface: Option<&'a str>,
    remove: bool,
}

impl Wanted<'_> {
    /// The interfaces whose ARP settings count: `all` (the kernel takes the
    /// larger of it and the interface's), lo and --iface.
    fn arp_interfaces(&self) -> Vec<&str> {
        let mut names = vec!["all", LO];
        names.extend(self.iface);
        names
    }

    /// Every setting the plan reads.
    fn keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        for name in self.arp_interfaces() {
            keys.push(sysctl::conf_key("ipv4", name, "arp_ignore"));
            keys.push(sysctl::conf_key("ipv4", name, "arp_announce"));
        }
        if self.mode == RealserverMode::Ipip {
            keys.extend(self.rp_filter_keys());
        }
        keys
    }

    fn rp_filter_keys(&self) -> Vec<String> {
        std::iter::once("all")
            .chain(self.iface)
            .map(|name| sysctl::conf_key("ipv4", name, "rp_filter"))
            .collect()
    }
}

/// The changes that make the host what `wanted` says, in the order to make
/// them: on setup the ARP settings before the VIPs (so the host never
/// announces one), on removal after them.
fn plan(wanted: &Wanted, host: &HostState) -> Vec<Change> {
    let value = |key: &str| host.sysctls.get(key).cloned().unwrap_or_default();
    let set = |key: String, to: &'static str, changes: &mut Vec<Change>| {
        let from = value(&key);
        if from != to {
            changes.push(Change::Sysctl { key, from, to });
        }
    };
    let v4 = wanted.vips.iter().any(IpAddr::is_ipv4);
    let mut changes = Vec::new();
    if wanted.remove {
        changes.extend(
            wanted
                .vips
                .iter()
                .filter(|v| host.lo.contains(v))
                .map(|v| Change::RemoveAddress(*v)),
        );
        // Other VIPs still on lo keep their ARP settings.
        let others = host
            .lo
            .iter()
            .any(|a| a.is_ipv4() && !a.is_loopback() && !wanted.vips.contains(a));
        if v4 && !others {
            for name in wanted.arp_interfaces() {
                set(
                    sysctl::conf_key("ipv4", name, "arp_ignore"),
                    "0",
                    &mut changes,
                );
                set(
                    sysctl::conf_key("ipv4", name, "arp_announce"),
                    "0",
                    &mut changes,
                );
            }
        }
        return changes;
    }
    if v4 {
        for name in wanted.arp_interfaces() {
            // 1 answers only for addresses of the interface asked on; higher is stricter still.
            let key = sysctl::conf_key("ipv4", name, "arp_ignore");
            if value(&key) == "0" {
                set(key, "1", &mut changes);
            }
            set(
                sysctl::conf_key("ipv4", name, "arp_announce"),
                "2",
                &mut changes,
            );
        }
    }
    if wanted.mode == RealserverMode::Ipip {
        // The decapsulated packets come from the clients, whatever route leads back to them.
        for key in wanted.rp_filter_keys() {
            if value(&key) == "1" {
                set(key, "2", &mut changes);
            }
        }
    }
    changes.extend(
        wanted
            .vips
            .iter()
            .filter(|v| !host.lo.contains(v))
            .map(|v| Change::AddAddress(*v)),
    );
    changes
}

fn read_state(wanted: &Wanted) -> anyhow::Result<HostState> {
    let mut sysctls = BTreeMap::new();
    for key in wanted.keys() {
        sysctls.insert(key.clone(), sysctl::read(&key)?);
    }
    let mut rtnl = Rtnl::open().context("opening a route socket")?;
    let index = rtnl.link(LO).context("reading lo")?.header.index;
    let lo = rtnl
        .addresses(index)
        .context("reading lo's addresses")?
        .iter()
        .filter_map(rtnl::local_address)
        .collect();
    Ok(HostState { sysctls, lo })
}

fn make(change: &Change) -> anyhow::Result<()> {
    match change {
        Change::Sysctl { key, to, .. } => sysctl::write(key, to)?,
        Change::AddAddress(addr) => block_on(async {
            vrrp::net::add_address(LO, *addr).await?;
            Ok(())
        })?,
        Change::RemoveAddress(addr) => block_on(async {
            vrrp::net::remove_address(LO, *addr).await?;
            Ok(())
        })?,
    }
    Ok(())
}

pub fn run(args: RealserverArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    let ipip = args.mode == RealserverMode::Ipip;
    if ipip && args.iface.is_none() {
        bail!("--mode ipip needs --iface, the interface the tunnelled packets arrive on");
    }
    if !ipip && !args.sources.is_empty() {
        bail!("--from is for --mode ipip: a DR real server gets no tunnel");
    }
    if ipip && !args.remove && args.sources.is_empty() {
        bail!("--mode ipip needs --from, each director's tunnel source");
    }
    let wanted = Wanted {
        mode: args.mode,
        vips: &args.vips,
        iface: args.iface.as_deref(),
        remove: args.remove,
    };
    let changes = plan(&wanted, &read_state(&wanted)?);
    let decap = if ipip { decap_change(&args)? } else { None };
    let verb = if args.dry_run { "would " } else { "" };
    // Removal detaches the decapsulator first, setup attaches it last.
    if args.remove {
        run_decap(&args, decap, verb, log_level)?;
    }
    for change in &changes {
        if !args.dry_run {
            make(change)?;
        }
        println!("{verb}{change}");
    }
    if !args.remove {
        run_decap(&args, decap, verb, log_level)?;
    }
    if changes.is_empty() && decap.is_none() {
        let state = if args.remove { "not set up" } else { "set up" };
        println!("nothing to change: already {state}");
    }
    Ok(())
}

/// What the decapsulator needs, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecapChange {
    Attach,
    /// Attached, with other VIPs or directors.
    Update,
    Remove,
}

fn decap_change(args: &RealserverArgs) -> anyhow::Result<Option<DecapChange>> {
    let iface = args.iface.as_deref().expect("checked by run");
    let current = decap::attached(&args.pin_path, iface)?;
    Ok(match (current, args.remove) {
        (Some(_), true) => Some(DecapChange::Remove),
        (None, true) => None,
        (Some((vips, sources)), false)
            if vips == decap::normalized(&args.vips)
                && sources == decap::normalized(&decap::expanded(&args.sources)) =>
        {
            None
        }
        (Some(_), false) => Some(DecapChange::Update),
        (None, false) => Some(DecapChange::Attach),
    })
}

fn run_decap(
    args: &RealserverArgs,
    change: Option<DecapChange>,
    verb: &str,
    log_level: LevelFilter,
) -> anyhow::Result<()> {
    let iface = args.iface.clone().unwrap_or_default();
    match change {
        None => Ok(()),
        Some(DecapChange::Remove) => {
            println!("{verb}detach xlb decap from {iface}");
            if args.dry_run {
                return Ok(());
            }
            decap::remove(&iface, &args.pin_path)
        }
        Some(change @ (DecapChange::Attach | DecapChange::Update)) => {
            if change == DecapChange::Attach {
                println!("{verb}attach xlb decap to {iface}");
            } else {
                println!("{verb}update the VIPs and directors of xlb decap on {iface}");
            }
            if args.dry_run {
                return Ok(());
            }
            let decap_args = DecapArgs {
                iface,
                vips: args.vips.clone(),
                sources: args.sources.clone(),
                mode: AttachMode::Native,
                pin_path: args.pin_path.clone(),
                remove: false,
            };
            decap::install(&decap_args, log_level)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP4: &str = "198.18.0.100";
    const VIP6: &str = "fd00::100";

    fn addr(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    /// A host with every setting of `wanted` at `value`, and `lo` holding `addresses`.
    fn host(wanted: &Wanted, value: &str, addresses: &[&str]) -> HostState {
        HostState {
            sysctls: wanted
                .keys()
                .into_iter()
                .map(|k| (k, value.to_string()))
                .collect(),
            lo: addresses.iter().map(|a| addr(a)).collect(),
        }
    }

    fn wanted<'a>(
        mode: RealserverMode,
        vips: &'a [IpAddr],
        iface: Option<&'a str>,
        remove: bool,
    ) -> Wanted<'a> {
        Wanted {
            mode,
            vips,
            iface,
            remove,
        }
    }

    fn lines(changes: &[Change]) -> Vec<String> {
        changes.iter().map(Change::to_string).collect()
    }

    #[test]
    fn dr_silences_arp_before_adding_the_vips() {
        let vips = [addr(VIP4), addr(VIP6)];
        let wanted = wanted(RealserverMode::Dr, &vips, Some("eth0"), false);
        let fresh = host(&wanted, "0", &["127.0.0.1", "::1"]);
        assert_eq!(
            lines(&plan(&wanted, &fresh)),
            [
                "set net.ipv4.conf.all.arp_ignore 0 -> 1",
                "set net.ipv4.conf.all.arp_announce 0 -> 2",
                "set net.ipv4.conf.lo.arp_ignore 0 -> 1",
                "set net.ipv4.conf.lo.arp_announce 0 -> 2",
                "set net.ipv4.conf.eth0.arp_ignore 0 -> 1",
                "set net.ipv4.conf.eth0.arp_announce 0 -> 2",
                "add 198.18.0.100/32 to lo",
                "add fd00::100/128 to lo (nodad)",
            ]
        );
        // Done: nothing left. A stricter arp_ignore stays.
        let mut done = host(&wanted, "2", &["127.0.0.1", VIP4, VIP6]);
        done.sysctls
            .insert("net.ipv4.conf.lo.arp_ignore".into(), "1".into());
        assert_eq!(plan(&wanted, &done), []);
    }

    #[test]
    fn ipv6_vips_need_no_arp_settings() {
        let vips = [addr(VIP6)];
        let wanted = wanted(RealserverMode::Dr, &vips, None, false);
        assert_eq!(
            lines(&plan(&wanted, &host(&wanted, "0", &[]))),
            ["add fd00::100/128 to lo (nodad)"]
        );
    }

    #[test]
    fn ipip_makes_a_strict_rp_filter_loose() {
        let vips = [addr(VIP4)];
        let wanted = wanted(RealserverMode::Ipip, &vips, Some("eth0"), false);
        let mut state = host(&wanted, "2", &[]);
        state
            .sysctls
            .insert("net.ipv4.conf.eth0.rp_filter".into(), "1".into());
        state
            .sysctls
            .insert("net.ipv4.conf.all.rp_filter".into(), "0".into());
        assert_eq!(
            lines(&plan(&wanted, &state)),
            [
                "set net.ipv4.conf.eth0.rp_filter 1 -> 2",
                "add 198.18.0.100/32 to lo",
            ]
        );
    }

    #[test]
    fn removal_keeps_arp_settings_while_other_vips_remain() {
        let vips = [addr(VIP4)];
        let wanted = wanted(RealserverMode::Dr, &vips, None, true);
        let state = host(&wanted, "1", &["127.0.0.1", VIP4, "198.18.0.101"]);
        assert_eq!(
            lines(&plan(&wanted, &state)),
            ["remove 198.18.0.100/32 from lo"]
        );
        let state = host(&wanted, "1", &["127.0.0.1", VIP4]);
        assert_eq!(
            lines(&plan(&wanted, &state)),
            [
                "remove 198.18.0.100/32 from lo",
                "set net.ipv4.conf.all.arp_ignore 1 -> 0",
                "set net.ipv4.conf.all.arp_announce 1 -> 0",
                "set net.ipv4.conf.lo.arp_ignore 1 -> 0",
                "set net.ipv4.conf.lo.arp_announce 1 -> 0",
            ]
        );
        // Removed already: nothing to do.
        assert_eq!(plan(&wanted, &host(&wanted, "0", &["127.0.0.1"])), []);
    }
}
