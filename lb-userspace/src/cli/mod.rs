//! The `xlb` command line.

mod attach;
mod client;
mod decap;
mod doctor;
mod import;
mod realserver;
mod run;

use clap::{Parser, Subcommand};
use log::LevelFilter;

pub use attach::AttachArgs;
pub use client::ClientCommand;
pub use decap::DecapArgs;
pub use doctor::DoctorArgs;
pub use import::ImportArgs;
pub use realserver::RealserverArgs;
pub use run::{CheckArgs, RunArgs};

#[derive(Debug, Parser)]
#[command(
    name = "xlb",
    version,
    about = "An XDP layer-4 load balancer: direct routing, IP-in-IP and NAT at driver speed",
    long_about = "xlb forwards packets for virtual IPs to real servers from an XDP program, \
                  before the kernel allocates a socket buffer. The xlb agent loads that program, \
                  health-checks the real servers, keeps the program's maps current and fails \
                  virtual IPs over between directors.\n\n\
                  Loading and attaching XDP programs needs root, or CAP_BPF and CAP_NET_ADMIN."
)]
pub struct Cli {
    /// Most verbose log level shown, for the agent and for its XDP program
    /// (whose records above this level are dropped in the kernel).
    #[arg(
        long,
        global = true,
        env = "XLB_LOG",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: LevelFilter,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: load (or adopt) the data plane, health-check the
    /// backends, keep the maps current and serve the HTTP API.
    ///
    /// SIGHUP reloads the file and applies only what changed. SIGTERM makes
    /// a VRRP master resign, then detaches and removes the pins, unless
    /// --keep-dataplane is given or systemd is restarting the unit: then
    /// forwarding goes on and the next `xlb run` adopts the pinned data
    /// plane without moving a flow, as it does after the agent dies. Under
    /// systemd (Type=notify) it reports readiness, reloads, a status line
    /// and feeds the watchdog.
    Run(RunArgs),
    /// Validate a configuration file without touching the kernel.
    ///
    /// It also looks up the routes to NAT backends (changing nothing):
    /// each must be reached through an interface of `[agent] interfaces`,
    /// or its replies are never translated. --skip-routes leaves that out,
    /// for a file meant for another machine.
    Check(CheckArgs),
    /// Check that this host can run the configuration as a director.
    ///
    /// One line per check, ok, WARN or FAIL, with the fix: native XDP and
    /// VLAN offload of each interface, a veth's peer, the kernel's version,
    /// rp_filter, forwarding, accept_local and ICMP redirects for NAT, the
    /// pin path on a BPF filesystem in this mount namespace, the routes to
    /// NAT backends, and the API's bind and token. Exits non-zero if any
    /// check fails. Run it as the agent runs (same namespaces).
    Doctor(DoctorArgs),
    /// Attach the XDP program to an interface and print what it sees.
    ///
    /// The program parses every frame (Ethernet, VLAN, IPv4, IPv6 with
    /// extension headers, TCP, UDP, ICMP, ICMPv6, VRRP), counts it and passes
    /// it to the kernel unchanged. Counters print every interval until
    /// SIGINT or SIGTERM, then xlb detaches and prints the totals.
    Attach(AttachArgs),
    /// Strip IP-in-IP for this real server's VIPs (the real-server side of `mode = ipip`).
    ///
    /// An XDP program that removes the outer IPv4 or IPv6 header from
    /// packets whose inner destination is one of the given VIPs and hands
    /// the inner packet to the kernel, so no ipip or ip6_tunnel module is
    /// needed. Everything else passes untouched.
    ///
    /// The program, its maps and its link are pinned (--pin-path, by
    /// default /sys/fs/bpf/xlb-decap) and stay attached after the command
    /// exits. Running it again changes the VIPs and directors in place,
    /// without detaching; `xlb decap --remove --iface IF` detaches it and,
    /// once it is attached nowhere, removes the pins.
    Decap(DecapArgs),
    /// Set up this host as a real server of DR or IP-in-IP VIPs.
    ///
    /// Adds the VIPs to lo (/32, /128 without duplicate address
    /// detection); for IPv4 VIPs, stops this host answering ARP for them
    /// (arp_ignore=1, arp_announce=2); for IP-in-IP also attaches `xlb
    /// decap` and makes rp_filter loose. Prints each change; a second run
    /// changes nothing and says so. --remove undoes it.
    Realserver(RealserverArgs),
    /// Print a new random flow-hash seed as an `[agent]` line for the
    /// configuration (`hash_seed = "0x…"`).
    ///
    /// Give every director of a cluster the same seed, so they pick the
    /// same backend for a flow; keep it secret, so clients cannot choose
    /// ports that all land on one backend.
    Keygen,
    /// Convert keepalived.conf, haproxy.cfg or `ipvsadm -Sn` rules to an xlb configuration.
    ///
    /// Prints the TOML on stdout and, on stderr, every input line that is
    /// not carried over as it was (FILE:LINE: TEXT: reason): dropped, or
    /// mapped with a change of behaviour. Fails if the result does not
    /// pass `xlb check`.
    Import(ImportArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

/// Runs a command's future to completion on a single-threaded runtime.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(command)
}

/// SIGINT or SIGTERM, whichever comes first. Create it before attaching
/// anything, so that a signal during start-up still ends in a clean detach.
struct Shutdown {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn new() -> anyhow::Result<Self> {
        use anyhow::Context;
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Shutdown {
            sigint: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            sigterm: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.sigint.recv() => {}
            _ = self.sigterm.recv() => {}
        }
    }
}

/// `xlb keygen`: four bytes from the kernel's random source.
fn keygen() -> anyhow::Result<()> {
    use std::io::Read;

    use anyhow::Context;
    let mut seed = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut seed))
        .context("reading /dev/urandom")?;
    let seed = crate::config::format_hash_seed(u32::from_ne_bytes(seed));
    println!("hash_seed = \"{seed}\"");
    Ok(())
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args, cli.log_level),
        Command::Check(args) => run::check(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Attach(args) => attach::run(args, cli.log_level),
        Command::Decap(args) => decap::run(args, cli.log_level),
        Command::Realserver(args) => realserver::run(args, cli.log_level),
        Command::Keygen => keygen(),
        Command::Import(args) => import::run(args),
        Command::Client(command) => client::run(command),
    }
}
