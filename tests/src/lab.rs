//! A load-balancing lab in network namespaces, shared by the end-to-end
//! tests and `cargo xtask demo`: a client, a director running xlb on its
//! `eth0`, and real servers b1, b2, … running identity servers, all on one
//! switch.
//!
//! Addresses (`eth0` everywhere):
//!
//! - client: 198.18.0.1/24, fd00::1/64;
//! - director: 198.18.0.2/24, 198.18.1.2/24, fd00::2/64, fd00:1::2/64, and the VIPs 198.18.0.100
//!   and fd00::100, as a VRRP master holds them, so it answers ARP and neighbour discovery for
//!   them; it forwards IPv4 and IPv6;
//! - backend b{n}: 198.18.1.{9+n}/24, fd00:1::{9+n}/64. For direct routing and IP-in-IP it holds
//!   the VIPs on `lo` and reaches the client's subnet on-link, so it answers the client directly;
//!   for IP-in-IP it also runs `xlb_decap` on `eth0`. For NAT it routes the client's subnet via
//!   the director, which translates the replies back to the VIP.
//!
//! The services are VIP:80 over TCP and over UDP. Backends listen on port 80, or on 8080 for NAT
//! so that the port translation shows.
//!
//! Two adjustments make the veths behave like wires: the director's port on the switch runs a
//! pass-through XDP program, without which the frames the director sends with XDP_TX are never
//! delivered ([`pass_through`]), and the client and backends send complete checksums
//! ([`full_checksums`]).
//!
//! [`Testbed::new`] pins the calling thread to CPU 0 once the programs are loaded, so that a flow
//! meets the director on one CPU, as NIC RSS arranges in production (on veth the XDP program runs
//! on the CPU that sends the frame; the director's shared flow table covers packets that stray).
//! The threads a test starts inherit the pin: the identity servers' threads, and the namespace
//! threads the client drivers run on. So the client's packets, and the ACKs its kernel sends on the
//! CPU the replies arrive on, all meet the director on CPU 0. Timers are not pinned: an idle CPU's
//! timers may fire on another one, so the client's route to the VIP has `quickack`, and its ACKs
//! leave at once rather than from a delayed-ACK timer.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use anyhow::{anyhow, ensure, Context};
use lb_common::{maps::Mode, stats::Counter};
use log::LevelFilter;
use nix::{
    sched::{sched_setaffinity, CpuSet},
    unistd::Pid,
};
use xlb::dataplane::{
    AttachMode, BackendSpec, Dataplane, DirectorSettings, LoadOptions, NextHop, Program, Protocol,
    ServiceSpec,
};

use crate::{
    netns::{Netns, Topology},
    servers::{tcp_spread, udp_spread, within, IdentityServer, Spread},
};

/// The services' port, for TCP and UDP alike.
pub const VIP_PORT: u16 = 80;
/// Where NAT backends listen.
pub const NAT_PORT: u16 = 8080;
/// How far each backend's share may be from its weight's share, relatively.
pub const TOLERANCE: f64 = 0.15;
/// Exchanges of each protocol that [`InProcessTestbed::probe`] makes.
const PROBES: u64 = 5;

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// The director's addresses on the backends' subnet: their NAT gateway and the tunnels' source.
pub const DIRECTOR_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const DIRECTOR_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);

#[derive(Clone, Copy, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn vip(self) -> IpAddr {
        match self {
            Family::V4 => VIP_V4.into(),
            Family::V6 => VIP_V6.into(),
        }
    }

    /// Backend `n` (0 for b1).
    pub fn backend(self, n: usize) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::new(198, 18, 1, 10 + n as u8).into(),
            Family::V6 => Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 0x10 + n as u16).into(),
        }
    }
}

/// A backend in a service set.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    /// The backend's index: 0 for b1.
    pub backend: usize,
    pub weight: u16,
    pub drain: bool,
}

impl Member {
    /// Backend `backend` (0 for b1) at `weight`, not drained.
    pub const fn new(backend: usize, weight: u16) -> Member {
        Member {
            backend,
            weight,
            drain: false,
        }
    }

    /// This member, drained.
    pub const fn drained(self) -> Member {
        Member {
            drain: true,
            ..self
        }
    }
}

/// The namespaces and links, with an identity server on every backend and the decapsulators of
/// IP-in-IP, but no load balancer yet: [`InProcessTestbed`] runs one in this process,
/// [`AgentTestbed`](crate::agent::AgentTestbed) runs `xlb run` in the directors' namespaces.
pub struct Testbed {
    // Fields drop in order: the servers stop, the programs detach, then the namespaces go.
    pub servers: Vec<IdentityServer>,
    pub decaps: Vec<Dataplane>,
    _port_pass: Dataplane,
    pub client: Netns,
    /// The first of `director_nss`.
    pub director_ns: Netns,
    pub director_nss: Vec<Netns>,
    pub backends: Vec<Netns>,
    /// The switch's namespace, and each director's port on it.
    pub switch: Netns,
    pub director_ports: Vec<String>,
    /// With several directors, the switch of their inner segment (198.18.2.0/24 on their
    /// `eth1`), and each one's port on it.
    pub inner_switch: Option<Netns>,
    pub inner_ports: Vec<String>,
    pub macs: Vec<[u8; 6]>,
    pub mode: Mode,
    pub topology: Topology,
}

/// Whether directors hold the VIPs from the start, or leave them to VRRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vips {
    Static,
    Vrrp,
}

/// A testbed whose director balances with a data plane loaded in this process.
pub struct InProcessTestbed {
    /// The data plane attached to the director's `eth0`.
    pub balancer: Dataplane,
    pub testbed: Testbed,
    pub family: Family,
    /// What [`InProcessTestbed::apply`] gives the balancer besides the tunnel sources and the MTU.
    pub settings: DirectorSettings,
}

/// Pins the calling thread, and so every thread it starts afterwards, to `cpu` (the lab pins to
/// CPU 0: see the module docs for why).
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut cpus = CpuSet::new();
    cpus.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &cpus)
        .with_context(|| format!("pinning the thread to CPU {cpu}"))
}

impl Testbed {
    /// Builds the testbed with `backends` backends (b1, b2, …) for `mode`, and pins the calling
    /// thread to CPU 0 (see the module docs).
    pub fn new(tag: &str, mode: Mode, backends: usize) -> anyhow::Result<Testbed> {
        Testbed::with_directors(tag, mode, backends, 1, Vips::Static)
    }

    /// [`Testbed::new`] with `directors` directors on the switch: `director`, `director2`, … at
    /// 198.18.0.2, .3, … (and 198.18.1.2, …, fd00::2, …, fd00:1::2, …), holding the VIPs as
    /// `vips` says.
    pub fn with_directors(
        tag: &str,
        mode: Mode,
        backends: usize,
        directors: usize,
        vips: Vips,
    ) -> anyhow::Result<Testbed> {
        let mut port_pass = pass_through()?;
        pin_to_cpu(0)?;
        let mut topology = Topology::new(tag)?;
        let mut switch = topology.add_switch("sw")?;
        let client = topology.add_ns("client")?;
        switch.connect(&mut topology, &client, "eth0")?;
        full_checksums(&client)?;
        client.add_addr("eth0", &format!("{CLIENT_V4}/24"))?;
        client.add_addr("eth0", &format!("{CLIENT_V6}/64"))?;
        // No delayed ACKs toward the VIP (see the module docs).
        client.ip(&[
            "route",
            "add",
            &format!("{VIP_V4}/32"),
            "dev",
            "eth0",
            "quickack",
            "1",
        ])?;
        client.ip(&[
            "-6",
            "route",
            "add",
            &format!("{VIP_V6}/128"),
            "dev",
            "eth0",
            "quickack",
            "1",
        ])?;
        let client_mac = client.mac("eth0")?;
        let mut director_nss = Vec::new();
        let mut director_ports = Vec::new();
        let mut inner_switch = None;
        for k in 0..directors {
            let role = match k {
                0 => "director".to_string(),
                k => format!("director{}", k + 1),
            };
            let director_ns = topology.add_ns(&role)?;
            let director_port = switch.connect(&mut topology, &director_ns, "eth0")?;
            switch
                .netns()
                .run(|| {
                    port_pass
                        .attach(&director_port, AttachMode::Native)
                        .map(|_| ())
                })?
                .context("attaching the switch port's pass-through program")?;
            let host = 2 + k as u8;
            for cidr in [
                format!("198.18.0.{host}/24"),
                format!("198.18.1.{host}/24"),
                format!("fd00::{host}/64"),
                format!("fd00:1::{host}/64"),
            ] {
                director_ns.add_addr("eth0", &cidr)?;
            }
            if vips == Vips::Static {
                director_ns.add_addr("eth0", &format!("{VIP_V4}/32"))?;
                director_ns.add_addr("eth0", &format!("{VIP_V6}/128"))?;
            }
            director_ns.set_sysctls(&[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                // A NAT reply xlb leaves to the kernel (no neighbour yet) already
                // has the VIP, a local address, as source: without this IPv4
                // drops it as a martian.
                ("net.ipv4.conf.all.accept_local", "1"),
                ("net.ipv4.conf.eth0.accept_local", "1"),
            ])?;
            // NAT replies are routed to the client with bpf_fib_lookup, which needs the director
            // to know the client's MAC already.
            director_ns.add_neigh("eth0", &CLIENT_V4.to_string(), client_mac)?;
            director_ns.add_neigh("eth0", &CLIENT_V6.to_string(), client_mac)?;
            director_nss.push(director_ns);
            director_ports.push(director_port);
        }
        // Several directors also share an inner segment, for a second VIP (a gateway).
        let mut inner_ports = Vec::new();
        if directors > 1 {
            let mut inner = topology.add_switch("in")?;
            for (k, director_ns) in director_nss.iter().enumerate() {
                inner_ports.push(inner.connect(&mut topology, director_ns, "eth1")?);
                director_ns.add_addr("eth1", &format!("198.18.2.{}/24", 2 + k))?;
            }
            inner_switch = Some(inner.netns().clone());
        }

        let port = backend_port(mode);
        let mut servers = Vec::new();
        let mut decaps = Vec::new();
        let mut macs = Vec::new();
        let mut backend_nss = Vec::new();
        for n in 0..backends {
            let name = format!("b{}", n + 1);
            let ns = topology.add_ns(&name)?;
            switch.connect(&mut topology, &ns, "eth0")?;
            full_checksums(&ns)?;
            ns.add_addr("eth0", &format!("{}/24", Family::V4.backend(n)))?;
            ns.add_addr("eth0", &format!("{}/64", Family::V6.backend(n)))?;
            if mode == Mode::Nat {
                ns.add_route("198.18.0.0/24", &DIRECTOR_V4.to_string())?;
                ns.add_route("fd00::/64", &DIRECTOR_V6.to_string())?;
            } else {
                ns.add_lo_addr(&format!("{VIP_V4}/32"))?;
                ns.add_lo_addr(&format!("{VIP_V6}/128"))?;
                ns.ip(&["route", "add", "198.18.0.0/24", "dev", "eth0"])?;
                ns.ip(&["-6", "route", "add", "fd00::/64", "dev", "eth0"])?;
            }
            if mode == Mode::Ipip {
                decaps.push(decapsulator(&ns).with_context(|| format!("decap on {name}"))?);
            }
            macs.push(ns.mac("eth0")?);
            servers.push(IdentityServer::start(
                &ns,
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port),
                &name,
            )?);
            backend_nss.push(ns);
        }

        Ok(Testbed {
            servers,
            decaps,
            _port_pass: port_pass,
            client,
            director_ns: director_nss[0].clone(),
            director_nss,
            backends: backend_nss,
            switch: switch.netns().clone(),
            director_ports,
            inner_switch,
            inner_ports,
            macs,
            mode,
            topology,
        })
    }
}

impl InProcessTestbed {
    /// Builds the testbed with `backends` backends (b1, b2, …) and serves `members` in `mode`
    /// over `family`.
    pub fn new(
        tag: &str,
        mode: Mode,
        family: Family,
        backends: usize,
        members: &[Member],
    ) -> anyhow::Result<InProcessTestbed> {
        let options = LoadOptions {
            bpf_log: LevelFilter::Off,
            max_services: 4,
            max_backends: 16,
            ..LoadOptions::default()
        };
        InProcessTestbed::tuned(
            tag,
            mode,
            family,
            backends,
            members,
            &options,
            DirectorSettings::default(),
        )
    }

    /// [`InProcessTestbed::new`] with the balancer loaded with `options` (table sizes) and given
    /// `settings` (the flood guard, say); the tunnel sources and the MTU are the testbed's.
    pub fn tuned(
        tag: &str,
        mode: Mode,
        family: Family,
        backends: usize,
        members: &[Member],
        options: &LoadOptions,
        settings: DirectorSettings,
    ) -> anyhow::Result<InProcessTestbed> {
        // Verifying the balancer takes about a second of CPU, so it happens before the pin, on
        // whichever CPU is free.
        let balancer = Dataplane::load(options).context("loading the director's program")?;
        let testbed = Testbed::new(tag, mode, backends)?;
        let mut lb = InProcessTestbed {
            balancer,
            testbed,
            family,
            settings,
        };
        lb.apply(members)?;
        let director_ns = lb.testbed.director_ns.clone();
        director_ns
            .run(|| lb.balancer.attach("eth0", AttachMode::Native).map(|_| ()))?
            .context("attaching the director's program")?;
        Ok(lb)
    }

    /// Makes the balancer serve exactly `members`, over TCP and UDP.
    pub fn apply(&mut self, members: &[Member]) -> anyhow::Result<()> {
        let backends: Vec<BackendSpec> = members
            .iter()
            .map(|member| BackendSpec {
                addr: self.family.backend(member.backend),
                port: backend_port(self.testbed.mode),
                weight: member.weight,
                drain: member.drain,
                next_hop: NextHop {
                    mac: self.testbed.macs[member.backend],
                    ifindex: 0,
                    src_mac: [0; 6],
                },
            })
            .collect();
        let services: Vec<ServiceSpec> = [Protocol::Tcp, Protocol::Udp]
            .into_iter()
            .map(|protocol| ServiceSpec {
                vip: self.family.vip(),
                port: VIP_PORT,
                protocol,
                mode: self.testbed.mode,
                affinity: None,
                backends: backends.clone(),
            })
            .collect();
        let settings = DirectorSettings {
            tunnel_src_v4: Some(DIRECTOR_V4),
            tunnel_src_v6: Some(DIRECTOR_V6),
            mtu: 1500,
            ..self.settings
        };
        self.balancer
            .apply(&services, &settings)
            .context("applying the services")
    }

    pub fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.family.vip(), VIP_PORT)
    }

    /// A few exchanges of each protocol, which must all be answered: fails fast when the VIP
    /// does not answer at all, rather than after a whole spread's time budget.
    pub fn probe(&self) -> anyhow::Result<()> {
        let tcp = tcp_spread(&self.testbed.client, self.vip(), PROBES)?;
        let udp = udp_spread(&self.testbed.client, self.vip(), PROBES)?;
        ensure!(
            tcp.failed == 0 && udp.failed == 0,
            "the VIP does not answer: TCP {tcp:?}, UDP {udp:?}"
        );
        Ok(())
    }

    /// Checks the director's counters after traffic went through it: frames sent back out, flow
    /// table hits, NAT replies exactly in NAT mode, and nothing dropped, redirected or handed to
    /// the kernel for lack of a neighbour. With IP-in-IP, every decapsulator must have worked.
    pub fn check_counters(&self) -> anyhow::Result<()> {
        let counters = self.balancer.counters()?;
        let mut wrong = Vec::new();
        let mut expect = |counter: Counter, ok: fn(u64) -> bool, what: &str| {
            let value = counters.get(counter);
            if !ok(value) {
                wrong.push(format!("{} is {value}, expected {what}", counter.name()));
            }
        };
        let positive: fn(u64) -> bool = |v| v > 0;
        let zero: fn(u64) -> bool = |v| v == 0;
        expect(Counter::Tx, positive, "> 0");
        expect(Counter::FlowHit, positive, "> 0");
        let nat = if self.testbed.mode == Mode::Nat {
            positive
        } else {
            zero
        };
        expect(Counter::NatReply, nat, "> 0 exactly in NAT mode");
        for counter in [
            Counter::DropNoBackend,
            Counter::DropFragment,
            Counter::DropEncap,
            Counter::DropIpOptions,
            Counter::Truncated,
            Counter::Malformed,
            Counter::IcmpTooBig,
            Counter::Redirect,
            Counter::FibPass,
        ] {
            expect(counter, zero, "0");
        }
        ensure!(
            wrong.is_empty(),
            "director counters: {}\nall: {}",
            wrong.join("; "),
            serde_json::to_string(&counters)?
        );
        for (n, decap) in self.testbed.decaps.iter().enumerate() {
            let decapsulated = decap.counters()?.get(Counter::Decap);
            ensure!(decapsulated > 0, "b{} decapsulated nothing", n + 1);
        }
        Ok(())
    }

    /// Checks that every one of `count` exchanges was answered, by the backends in proportion
    /// to `weights`, and that the director counted at least that many new flows per backend.
    pub fn check_spread(
        &self,
        what: &str,
        spread: &Spread,
        count: u64,
        weights: &[u16],
    ) -> anyhow::Result<()> {
        ensure!(
            spread.failed == 0 && spread.answered() == count,
            "{what}: {} of {count} exchanges answered, {} failed; errors: {:?}",
            spread.answered(),
            spread.failed,
            spread.errors
        );
        let weights: BTreeMap<String, u64> = weights
            .iter()
            .enumerate()
            .map(|(n, &w)| (self.testbed.servers[n].name().to_owned(), w.into()))
            .collect();
        within(spread, &weights, TOLERANCE).map_err(|e| anyhow!("{what}: {e}"))?;
        for (n, server) in self.testbed.servers.iter().enumerate() {
            let answered = spread.by_backend.get(server.name()).copied().unwrap_or(0);
            let stats = self
                .balancer
                .backend_stats(self.family.backend(n), backend_port(self.testbed.mode))?;
            ensure!(
                stats.new_flows >= answered,
                "{what}: {} answered {answered} exchanges, but the director counted {} new flows \
                 to it",
                server.name(),
                stats.new_flows
            );
        }
        Ok(())
    }
}

/// Turns off transmit checksum offload on `ns`'s `eth0`, so its packets leave with complete
/// checksums, as from a real NIC. A veth otherwise hands on a partial checksum with a note to
/// finish it, and a frame the director sends back out with XDP_TX loses that note, so its
/// receiver would find the checksum wrong and drop it.
pub fn full_checksums(ns: &Netns) -> anyhow::Result<()> {
    ns.ethtool(&["-K", "eth0", "tx", "off"]).map(|_| ())
}

pub fn backend_port(mode: Mode) -> u16 {
    match mode {
        Mode::Nat => NAT_PORT,
        Mode::Dr | Mode::Ipip => VIP_PORT,
    }
}

/// A program that passes every frame, for the director's port on the switch: xlb with no
/// services.
///
/// The director sends its frames back out with XDP_TX, which puts them in the ring of its veth's
/// peer, the switch port. The port's NAPI (on thanks to GRO) drains that ring, but the veth driver
/// (`veth_xdp_flush`) only schedules it after XDP_TX when the peer has an XDP program of its own:
/// without one, the frames wait in the ring until some other frame happens to wake it, which
/// nothing on this switch port does.
pub fn pass_through() -> anyhow::Result<Dataplane> {
    Dataplane::load(&LoadOptions {
        program: Program::Balancer,
        ..LoadOptions::decap(LevelFilter::Off)
    })
    .context("loading the switch port's pass-through program")
}

/// Directors a lab may have: their tunnel sources are 198.18.1.2, .3, … and fd00:1::2, ….
const MAX_DIRECTORS: u8 = 3;

/// Loads `xlb_decap` for both VIPs, accepting tunnels from every director of the lab, and
/// attaches it to `ns`'s `eth0`.
pub fn decapsulator(ns: &Netns) -> anyhow::Result<Dataplane> {
    let mut decap = Dataplane::load(&LoadOptions::decap(LevelFilter::Off))?;
    decap.set_decap_vips(&[Family::V4.vip(), Family::V6.vip()])?;
    let sources: Vec<IpAddr> = (0..MAX_DIRECTORS)
        .flat_map(|k| {
            let [a, b, c, d] = DIRECTOR_V4.octets();
            let v6 = DIRECTOR_V6.segments();
            [
                IpAddr::V4(Ipv4Addr::new(a, b, c, d + k)),
                IpAddr::V6(Ipv6Addr::new(
                    v6[0],
                    v6[1],
                    0,
                    0,
                    0,
                    0,
                    0,
                    v6[7] + u16::from(k),
                )),
            ]
        })
        .collect();
    decap.set_decap_sources(&sources)?;
    ns.run(|| decap.attach("eth0", AttachMode::Native).map(|_| ()))??;
    Ok(decap)
}
