//! `xlb decap`: the real-server side of IP-in-IP.

use std::net::IpAddr;

use clap::Args;
use log::LevelFilter;

use crate::dataplane::{AttachMode, Dataplane, LoadOptions};

#[derive(Debug, Args)]
#[command(
    after_help = "Real-server setup for IP-in-IP (the VIP on lo, not answering ARP for it):\n  \
    ip addr add 198.18.0.100/32 dev lo\n  \
    sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2\n  \
    xlb decap --iface eth0 --vip 198.18.0.100 --from 198.18.1.2"
)]
pub struct DecapArgs {
    /// Interface the tunnelled packets arrive on.
    #[arg(short, long, value_name = "IFACE")]
    pub iface: String,

    /// A VIP this server answers for (repeat for several).
    #[arg(long = "vip", value_name = "ADDR", required = true)]
    pub vips: Vec<IpAddr>,

    /// A director's tunnel source address (its `tunnel_source_v4`/`_v6`)
    /// to accept IP-in-IP from (repeat for several); tunnelled packets
    /// from any other source pass untouched.
    #[arg(long = "from", value_name = "ADDR", required = true)]
    pub sources: Vec<IpAddr>,

    /// Where the program runs: in the driver (native) or in the kernel stack (generic).
    #[arg(short, long, value_enum, default_value_t = AttachMode::Native)]
    pub mode: AttachMode,
}

pub fn run(args: DecapArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    super::block_on(decap(args, log_level))
}

async fn decap(args: DecapArgs, log_level: LevelFilter) -> anyhow::Result<()> {
    let mut shutdown = super::Shutdown::new()?;
    let mut dataplane = Dataplane::load(&LoadOptions::decap(log_level))?;
    dataplane.set_decap_vips(&args.vips)?;
    dataplane.set_decap_sources(&args.sources)?;
    let attachment = dataplane.attach(&args.iface, args.mode)?.clone();
    let list = |addrs: &[IpAddr]| {
        addrs
            .iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    log::info!(
        "decapsulating IP-in-IP for {} from {} on {} ({} mode); Ctrl-C detaches",
        list(&args.vips),
        list(&args.sources),
        attachment.iface,
        attachment.mode
    );
    shutdown.recv().await;
    dataplane.detach()?;
    let decapsulated = dataplane.counters()?.get(lb_common::stats::Counter::Decap);
    log::info!(
        "detached from {}; {decapsulated} packets decapsulated",
        attachment.iface
    );
    Ok(())
}
