//! `xlb import`: another balancer's configuration as an xlb file.

use std::{net::IpAddr, path::PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::import::{haproxy, ipvsadm, keepalived};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// keepalived.conf: vrrp_instance, vrrp_sync_group, virtual_server.
    Keepalived,
    /// haproxy.cfg: frontend, backend and listen sections, served as NAT.
    Haproxy,
    /// The rules `ipvsadm -Sn` saves.
    Ipvsadm,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What FILE is.
    #[arg(value_enum)]
    pub format: Format,
    /// The file to convert.
    pub file: PathBuf,
    /// An interface for `[agent] interfaces` (repeat for several).
    #[arg(long = "interface", value_name = "IF", required = true)]
    pub interfaces: Vec<String>,
    /// The IP-in-IP tunnel source, needed by ipip services (at most one
    /// IPv4 and one IPv6 address).
    #[arg(long = "tunnel-source", value_name = "ADDR")]
    pub tunnel_sources: Vec<IpAddr>,
}

/// Prints the TOML, and on stderr each line not carried over as it was.
/// Fails if the result does not validate (after printing both).
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut imported = match args.format {
        Format::Keepalived => keepalived::convert(&text),
        Format::Haproxy => haproxy::convert(&text),
        Format::Ipvsadm => ipvsadm::convert(&text),
    };
    imported.set_agent(&args.interfaces, &args.tunnel_sources);
    let toml = imported.config.to_toml();
    print!("{toml}");
    for line in imported.report_lines(&args.file.display().to_string()) {
        eprintln!("{line}");
    }
    if let Err(e) = crate::config::Config::parse(&toml).and_then(|c| c.validate()) {
        bail!("the converted configuration does not validate: {e}; edit it before use");
    }
    Ok(())
}
