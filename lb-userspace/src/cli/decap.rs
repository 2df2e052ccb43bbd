//! `xlb decap`: the real-server side of IP-in-IP. The decapsulator is
//! pinned, like the director's data plane: it stays attached after this
//! command exits, until `xlb decap --remove`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::Args;
use log::LevelFilter;

use lb_common::maps::MAX_TUNNEL_SPREAD_BITS;

use crate::dataplane::{AttachMode, Dataplane, LoadOptions};

/// Where `xlb decap` pins its program, maps and links by default.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/xlb-decap";

#[derive(Debug, Args)]
#[command(
    after_help = "Real-server setup for IP-in-IP (the VIP on lo, not answering ARP for it):\n  \
    ip addr add 198.18.0.100/32 dev lo\n  \
    sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2\n  \
    xlb decap --iface eth0 --vip 198.18.0.100 --from 198.18.1.2 (or --from 198.18.1.0/28, \
    for a director whose tunnel_source_v4 is a /28)\n\n\
    The program stays attached (pinned under --pin-path) after the command exits. Run it again \
    with other --vip/--from to change them in place; `xlb decap --remove --iface eth0` detaches \
    it and removes the pins."
)]
pub struct DecapArgs {
    /// Interface the tunnelled packets arrive on.
    #[arg(short, long, value_name = "IFACE")]
    pub iface: String,

    /// A VIP this server answers for (repeat for several). Replaces the
    /// VIPs of a decapsulator already pinned at --pin-path.
    #[arg(long = "vip", value_name = "ADDR", required_unless_present = "remove")]
    pub vips: Vec<IpAddr>,

    /// A director's tunnel source (its `tunnel_source_v4`/`_v6`, with its
    /// prefix length if it has one: ADDR/LEN accepts every address of the
    /// prefix, at most 256) to accept IP-in-IP from (repeat for several);
    /// tunnelled packets from any other source pass untouched. Replaces the
    /// sources of a decapsulator already pinned at --pin-path.
    #[arg(
        long = "from",
        value_name = "ADDR[/LEN]",
        required_unless_present = "remove"
    )]
    pub sources: Vec<SourcePrefix>,

    /// Where the program runs: in the driver (native) or in the kernel stack (generic).
    #[arg(short, long, value_enum, default_value_t = AttachMode::Native)]
    pub mode: AttachMode,

    /// The directory on a BPF filesystem where the program, its maps and
    /// its links are pinned (one decapsulator per directory; its VIPs and
    /// sources are shared by every interface it is attached to).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_PATH)]
    pub pin_path: PathBuf,

    /// Detach the decapsulator from --iface; once it is attached nowhere,
    /// remove its pins.
    #[arg(long, conflicts_with_all = ["vips", "sources"])]
    pub remove: bool,
}

pub fn run(args: DecapArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    if args.remove {
        return remove(&args.iface, &args.pin_path);
    }
    install(&args, log_level)
}

/// A tunnel source as `--from` takes it: an address, or a prefix of at
/// most [`MAX_TUNNEL_SPREAD_BITS`] host bits, whose every address a
/// director may send from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourcePrefix {
    addr: IpAddr,
    len: u8,
}

impl std::str::FromStr for SourcePrefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, len) = text.split_once('/').unwrap_or((text, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if len.is_empty() {
            return Ok(SourcePrefix { addr, len: bits });
        }
        let shortest = bits - MAX_TUNNEL_SPREAD_BITS;
        match len.parse::<u8>() {
            Ok(len) if (shortest..=bits).contains(&len) => Ok(SourcePrefix { addr, len }),
            _ => Err(format!(
                "{text:?}: the prefix length must be {shortest} to {bits} (at most {} addresses)",
                1u32 << MAX_TUNNEL_SPREAD_BITS
            )),
        }
    }
}

impl SourcePrefix {
    /// Every address of the prefix.
    fn addresses(self) -> impl Iterator<Item = IpAddr> {
        let host_bits = if self.addr.is_ipv4() { 32 } else { 128 } - self.len;
        let hosts: u128 = (1 << host_bits) - 1;
        let (base, bits) = match self.addr {
            IpAddr::V4(a) => (u32::from(a) as u128, 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        };
        let network = base & !hosts;
        (0..=hosts).map(move |host| match bits {
            32 => IpAddr::V4(((network | host) as u32).into()),
            _ => IpAddr::V6((network | host).into()),
        })
    }
}

/// The addresses of `prefixes`.
pub(super) fn expanded(prefixes: &[SourcePrefix]) -> Vec<IpAddr> {
    prefixes.iter().flat_map(|p| p.addresses()).collect()
}

fn list(addrs: &[IpAddr]) -> String {
    // A prefix's hundreds of addresses, in brief.
    if let [first, .., last] = addrs {
        if addrs.len() > 8 {
            return format!("{} addresses, {first} to {last}", addrs.len());
        }
    }
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sorted and without repeats, as the maps list them.
pub(super) fn normalized(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let mut addrs = addrs.to_vec();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// The VIPs and sources of the decapsulator pinned at `dir`, if it is
/// attached to `iface`.
pub(super) fn attached(
    dir: &Path,
    iface: &str,
) -> anyhow::Result<Option<(Vec<IpAddr>, Vec<IpAddr>)>> {
    let adopted = Dataplane::adopt_decap(dir)
        .with_context(|| format!("reading the decapsulator pinned at {}", dir.display()))?;
    let Some(mut dataplane) = adopted.filter(|d| d.attachments().any(|a| a.iface == iface)) else {
        return Ok(None);
    };
    Ok(Some((dataplane.decap_vips()?, dataplane.decap_sources()?)))
}

/// Attaches and pins a new decapsulator, or updates the pinned one in place.
pub(super) fn install(args: &DecapArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    let dir = &args.pin_path;
    let vips = normalized(&args.vips);
    let sources = normalized(&expanded(&args.sources));
    let adopted = Dataplane::adopt_decap(dir)
        .with_context(|| format!("reading the decapsulator pinned at {}", dir.display()))?;
    let Some(mut dataplane) = adopted else {
        let made = !dir.exists();
        Dataplane::prepare_pins(dir)?;
        let attached = Dataplane::load(&LoadOptions::decap(log_level)).and_then(|mut dataplane| {
            dataplane.set_decap_vips(&vips)?;
            dataplane.set_decap_sources(&sources)?;
            dataplane.attach(&args.iface, args.mode)?;
            Ok(dataplane)
        });
        let mut dataplane = match attached {
            Ok(dataplane) => dataplane,
            Err(e) => {
                if made {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e.into());
            }
        };
        if let Err(e) = dataplane.pin(dir) {
            // Dropping the data plane detaches it; leave no pins behind.
            if let Err(unpin) = dataplane.unpin() {
                log::warn!("{unpin}");
            }
            return Err(e.into());
        }
        println!(
            "xlb decap: attached to {} ({} mode), pinned at {}; decapsulating IP-in-IP for {} from {}",
            args.iface,
            args.mode,
            dir.display(),
            list(&vips),
            list(&sources),
        );
        println!(
            "it stays attached after this command; `xlb decap --remove --iface {}{}` detaches it",
            args.iface,
            pin_path_flag(dir)
        );
        return Ok(());
    };
    // Checked before anything changes.
    let existing = dataplane
        .attachments()
        .find(|a| a.iface == args.iface)
        .cloned();
    if let Some(existing) = &existing {
        if existing.mode != args.mode {
            bail!(
                "the decapsulator pinned at {} is attached to {} in {} mode, not {}: \
                 run `xlb decap --remove --iface {}{}` first",
                dir.display(),
                existing.iface,
                existing.mode,
                args.mode,
                existing.iface,
                pin_path_flag(dir)
            );
        }
    }
    let old_vips = dataplane.decap_vips()?;
    let old_sources = dataplane.decap_sources()?;
    if existing.is_none() {
        dataplane.attach(&args.iface, args.mode)?;
        println!(
            "xlb decap: attached to {} ({} mode), pinned at {}",
            args.iface,
            args.mode,
            dir.display()
        );
    } else {
        println!(
            "xlb decap: already attached to {} ({} mode), pinned at {}",
            args.iface,
            args.mode,
            dir.display()
        );
    }
    dataplane.replace_decap_vips(&vips)?;
    dataplane.replace_decap_sources(&sources)?;
    let changed = |what: &str, old: &[IpAddr], new: &[IpAddr]| {
        if old == new {
            println!("{what}: {} (unchanged)", list(new));
        } else {
            println!("{what}: {} (were {})", list(new), list(old));
        }
    };
    changed("VIPs", &old_vips, &vips);
    changed("directors", &old_sources, &sources);
    let attached: Vec<String> = dataplane
        .attachments()
        .map(|a| format!("{} ({})", a.iface, a.mode))
        .collect();
    println!("attached to: {}", attached.join(", "));
    Ok(())
}

/// `xlb decap --remove`: detaches from `iface`; the pins go with the last
/// attachment.
pub(super) fn remove(iface: &str, dir: &Path) -> anyhow::Result<()> {
    let Some(mut dataplane) = Dataplane::adopt_decap(dir)
        .with_context(|| format!("reading the decapsulator pinned at {}", dir.display()))?
    else {
        bail!("no decapsulator is pinned at {}", dir.display());
    };
    let others: Vec<String> = dataplane.attachments().map(|a| a.iface.clone()).collect();
    if !others.iter().any(|i| i == iface) {
        bail!(
            "the decapsulator pinned at {} is not attached to {iface} (it is attached to: {})",
            dir.display(),
            if others.is_empty() {
                "nothing".to_string()
            } else {
                others.join(", ")
            }
        );
    }
    let decapsulated = dataplane.counters()?.get(lb_common::stats::Counter::Decap);
    dataplane.detach_from(iface)?;
    println!("xlb decap: detached from {iface}");
    if dataplane.attachments().next().is_none() {
        dataplane.unpin()?;
        println!(
            "removed the pins at {} ({decapsulated} packets were decapsulated)",
            dir.display()
        );
    } else {
        let left: Vec<&str> = dataplane.attachments().map(|a| a.iface.as_str()).collect();
        println!(
            "still attached to {}, pinned at {}",
            left.join(", "),
            dir.display()
        );
    }
    Ok(())
}

/// ` --pin-path DIR` unless `dir` is the default.
fn pin_path_flag(dir: &Path) -> String {
    if dir == Path::new(DEFAULT_PIN_PATH) {
        String::new()
    } else {
        format!(" --pin-path {}", dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_sorted_once() {
        let a: IpAddr = "198.18.0.100".parse().unwrap();
        let b: IpAddr = "198.18.0.7".parse().unwrap();
        let c: IpAddr = "fd00::100".parse().unwrap();
        assert_eq!(normalized(&[c, a, b, a]), vec![b, a, c]);
    }

    #[test]
    fn a_prefix_accepts_each_of_its_addresses() {
        let prefix: SourcePrefix = "198.18.1.2/30".parse().unwrap();
        let four: Vec<IpAddr> = (0..4).map(|n| IpAddr::from([198, 18, 1, n])).collect();
        assert_eq!(expanded(&[prefix]), four);
        let prefix: SourcePrefix = "fd00:1::102/127".parse().unwrap();
        let two = ["fd00:1::102", "fd00:1::103"].map(|a| a.parse::<IpAddr>().unwrap());
        assert_eq!(expanded(&[prefix]), two);
        let one: SourcePrefix = "198.18.1.2".parse().unwrap();
        assert_eq!(expanded(&[one]), vec![IpAddr::from([198, 18, 1, 2])]);
        assert_eq!(expanded(&["198.18.1.9/24".parse().unwrap()]).len(), 256);
        assert_eq!(
            "198.18.1.2/23".parse::<SourcePrefix>(),
            Err(
                "\"198.18.1.2/23\": the prefix length must be 24 to 32 (at most 256 addresses)"
                    .into()
            )
        );
        assert_eq!(
            "fd00::1/119".parse::<SourcePrefix>(),
            Err(
                "\"fd00::1/119\": the prefix length must be 120 to 128 (at most 256 addresses)"
                    .into()
            )
        );
        assert_eq!(
            "director/32".parse::<SourcePrefix>(),
            Err("\"director\" is not an IP address".into())
        );
        assert_eq!(
            list(&expanded(&["198.18.1.0/28".parse().unwrap()])),
            "16 addresses, 198.18.1.0 to 198.18.1.15"
        );
    }

    #[test]
    fn the_default_pin_path_goes_unsaid() {
        assert_eq!(pin_path_flag(Path::new(DEFAULT_PIN_PATH)), "");
        assert_eq!(
            pin_path_flag(Path::new("/sys/fs/bpf/other")),
            " --pin-path /sys/fs/bpf/other"
        );
    }
}
