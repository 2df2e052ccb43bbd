//! The load balancer's forwarding, one frame at a time through
//! BPF_PROG_TEST_RUN: for every case the verdict, the exact frame that
//! leaves (built here independently of the program), valid checksums on
//! any frame the program rewrote, and the outcome counters that moved.

use std::{
    fmt::Debug,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::AtomicBool,
    time::Duration,
};

use lb_common::{
    flow::FlowKey,
    maps::{
        CachedFlow, Flow, Mode, TrafficStats, FLOW_CLOSING, FLOW_OPENING, PROTO_TCP, PROTO_UDP,
    },
    stats::Counter::{self, *},
};
use nix::sched::{sched_getcpu, unshare, CloneFlags};
use xlb::dataplane::{
    services::{family, service_key, words},
    AffinitySpec, BackendSpec, Dataplane, DirectorSettings, FlowCounts, FlowCountsBySlot,
    FlowTable, LoadOptions, NextHop, Protocol, ServiceSpec, Walk, WalkError,
};
use xlb_tests::{
    lab::pin_to_cpu,
    packet::{arp_request, ones_complement_sum, verify_checksums, Frame, CLIENT_MAC, DIRECTOR_MAC},
    require_privileged,
    testrun::{accept_test_frames, check, hex, run, Fixture, XdpAction},
};

mod drops;
mod flows;
mod icmp;
mod modes;
mod nat;
mod sync;

const CLIENT4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const CLIENT6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
const CLIENT_PORT: u16 = 40000;
const TUNNEL_SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const TUNNEL_SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// The path MTU toward backends: an IPv4 packet over 1300 bytes (an IPv6
/// one over 1280) does not fit once wrapped in an outer header.
const TUNNEL_MTU: u32 = 1320;
/// Our MAC on the interface a redirecting backend is behind.
const EGRESS_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xee, 0x01];

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6: u8 = 41;
const IPPROTO_GRE: u8 = 47;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_VRRP: u8 = 112;
const IPV4_DF: u16 = 0x4000;

/// The counters that tell what became of a frame. Each case names those
/// that move (by one); the others must stay. `pass` moves with every
/// XDP_PASS without being named.
const OUTCOMES: &[Counter] = &[
    Pass,
    FlowHit,
    FlowMiss,
    Tx,
    Redirect,
    IcmpTooBig,
    NatReply,
    DropNoBackend,
    DropFragment,
    DropEncap,
    FibPass,
    Decap,
    DropIpOptions,
    Truncated,
    Malformed,
    ForeignMac,
    NatToDirector,
    NatNoRoute,
    StatelessMiss,
    FloodStateless,
    IcmpMismatch,
    IcmpRateLimited,
    DropTooBig,
    DropZeroPayload,
    DropBadChecksum,
    ResetFlow,
    NatRouteCached,
];

/// A frame, what must become of it, and the outcome counters it moves.
struct Case {
    fixture: Fixture,
    counted: &'static [Counter],
}

fn case(
    description: impl Into<String>,
    input: Vec<u8>,
    action: XdpAction,
    output: Vec<u8>,
    counted: &'static [Counter],
) -> Case {
    Case {
        fixture: Fixture {
            description: description.into(),
            input,
            action,
            output,
        },
        counted,
    }
}

fn sent(
    description: impl Into<String>,
    input: Vec<u8>,
    output: Vec<u8>,
    counted: &'static [Counter],
) -> Case {
    case(description, input, XdpAction::Tx, output, counted)
}

fn passed(
    description: impl Into<String>,
    input: Vec<u8>,
    output: Vec<u8>,
    counted: &'static [Counter],
) -> Case {
    case(description, input, XdpAction::Pass, output, counted)
}

fn unchanged(description: impl Into<String>, input: Vec<u8>, counted: &'static [Counter]) -> Case {
    let output = input.clone();
    passed(description, input, output, counted)
}

fn dropped(description: impl Into<String>, input: Vec<u8>, counted: &'static [Counter]) -> Case {
    let output = input.clone();
    case(description, input, XdpAction::Drop, output, counted)
}

/// A loaded program and the failures seen so far, all reported at the end.
struct Checker {
    dataplane: Dataplane,
    /// The counters every case pins.
    watched: &'static [Counter],
    checks: usize,
    failures: Vec<String>,
}

impl Checker {
    fn load(options: &LoadOptions, watched: &'static [Counter]) -> Checker {
        isolate_thread();
        let mut dataplane = Dataplane::load(options).expect("loading the XDP program");
        accept_test_frames(&mut dataplane).unwrap();
        Checker {
            dataplane,
            watched,
            checks: 0,
            failures: Vec::new(),
        }
    }

    /// The load balancer, serving `services`.
    fn balancer(services: &[ServiceSpec]) -> Checker {
        let options = LoadOptions {
            bpf_log: log::LevelFilter::Off,
            maglev_size: 1009,
            ..LoadOptions::default()
        };
        let mut checker = Checker::load(&options, OUTCOMES);
        checker.apply(services);
        checker
    }

    fn apply(&mut self, services: &[ServiceSpec]) {
        self.apply_with(services, &settings())
    }

    fn apply_with(&mut self, services: &[ServiceSpec], settings: &DirectorSettings) {
        self.dataplane
            .apply(services, settings)
            .expect("applying the services");
    }

    /// Sends `frame`, which must go out again, and says which of `macs` it
    /// went to.
    fn backend_of(&mut self, frame: &[u8], macs: &[[u8; 6]]) -> usize {
        let (action, out) = run(self.dataplane.program(), frame).expect("test run");
        assert_eq!(action, XdpAction::Tx, "probe {}", hex(frame));
        macs.iter()
            .position(|mac| out[..6] == mac[..])
            .unwrap_or_else(|| panic!("probe {} went to {}", hex(frame), hex(&out[..6])))
    }

    fn check(&mut self, cases: Vec<Case>) {
        for case in cases {
            self.check_case(case);
        }
    }

    fn check_case(&mut self, case: Case) {
        let Case { fixture, counted } = case;
        self.checks += 1;
        let before = self.dataplane.counters().expect("reading the counters");
        let outcome = check(self.dataplane.program(), &fixture).expect("test run");
        let after = self.dataplane.counters().expect("reading the counters");
        let mut problems = Vec::new();
        match outcome {
            Err(mismatch) => problems.push(mismatch.detail),
            // The output matched: these are the bytes the program wrote.
            Ok(()) if fixture.action != XdpAction::Drop && fixture.output != fixture.input => {
                if let Err(e) = verify_checksums(&fixture.output) {
                    problems.push(format!("output checksums: {e:#}"));
                }
            }
            Ok(()) => {}
        }
        for &counter in self.watched {
            let named = counted.contains(&counter)
                || (counter == Pass && fixture.action == XdpAction::Pass);
            let expected = u64::from(named);
            let delta = after.get(counter) - before.get(counter);
            if delta != expected {
                problems.push(format!(
                    "{} moved by {delta}, expected {expected}",
                    counter.name()
                ));
            }
        }
        if !problems.is_empty() {
            let problems = problems.join("; ");
            self.failures
                .push(format!("{}: {problems}", fixture.description));
        }
    }

    fn expect_eq<T: PartialEq + Debug>(&mut self, what: String, got: T, expected: T) {
        self.checks += 1;
        if got != expected {
            self.failures
                .push(format!("{what}: {got:?}, expected {expected:?}"));
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} of {} checks failed:\n{}",
            self.failures.len(),
            self.checks,
            self.failures.join("\n")
        );
    }
}

/// Keeps the calling test's thread on one CPU, so that the per-CPU flow
/// table a first frame fills is the one the next frames read, and in a
/// network namespace of its own, where a NAT reply's route lookup fails
/// whatever the host's routes.
fn isolate_thread() {
    move_to_cpu(sched_getcpu().expect("sched_getcpu"));
    unshare(CloneFlags::CLONE_NEWNET).expect("a network namespace for the test thread");
}

/// The director's settings for every case: tunnels at [`TUNNEL_MTU`], no
/// rate limits, hash seed 0.
fn settings() -> DirectorSettings {
    DirectorSettings {
        tunnel_src_v4: Some(TUNNEL_SRC4),
        tunnel_src_v6: Some(TUNNEL_SRC6),
        mtu: TUNNEL_MTU,
        ..DirectorSettings::default()
    }
}

/// Runs `ip COMMAND` in the test thread's own network namespace.
fn ip_in_this_thread(command: &str) {
    let netns = format!(
        "--net=/proc/{}/task/{}/ns/net",
        std::process::id(),
        nix::unistd::gettid()
    );
    let status = std::process::Command::new("nsenter")
        .arg(netns)
        .arg("ip")
        .args(command.split_whitespace())
        .status()
        .expect("running nsenter ip");
    assert!(status.success(), "ip {command}: {status}");
}

/// The test thread's namespace as a NAT director's: forwarding on, and a
/// link `d0` with its addresses on the clients' and the backends' subnets,
/// after `extra` commands.
fn nat_director(extra: &[&str]) {
    ip_in_this_thread("link set lo up");
    ip_in_this_thread("link add d0 type veth peer name d1");
    for command in extra {
        ip_in_this_thread(command);
    }
    for command in [
        "link set d1 up",
        "link set d0 up",
        "addr add 198.18.0.2/24 dev d0",
        "addr add 198.18.3.2/24 dev d0",
        "addr add fd00::2/64 dev d0 nodad",
        "addr add fd00:3::2/64 dev d0 nodad",
    ] {
        ip_in_this_thread(command);
    }
    wait_for_carrier("d0");
    for sysctl in ["ipv4/conf/all/forwarding", "ipv6/conf/all/forwarding"] {
        std::fs::write(format!("/proc/sys/net/{sysctl}"), "1").expect(sysctl);
    }
}

/// Waits until `link` in the test thread's namespace has its carrier, so
/// that its IPv6 addresses and routes are in place: a veth's carrier comes
/// from the kernel's link watch, up to a second late while other tests
/// make links.
fn wait_for_carrier(link: &str) {
    let netns = format!(
        "--net=/proc/{}/task/{}/ns/net",
        std::process::id(),
        nix::unistd::gettid()
    );
    for _ in 0..250 {
        let out = std::process::Command::new("nsenter")
            .args([
                netns.as_str(),
                "ip",
                "-6",
                "route",
                "show",
                "table",
                "local",
                "dev",
                link,
            ])
            .output()
            .expect("running nsenter ip");
        if String::from_utf8_lossy(&out.stdout).contains("local") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{link} got no IPv6 local route in 5 s");
}

fn ip(addr: &str) -> IpAddr {
    addr.parse().expect("an IP address")
}

const fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x10, n]
}

fn client_of(vip: IpAddr) -> IpAddr {
    if vip.is_ipv4() {
        CLIENT4
    } else {
        CLIENT6
    }
}

fn backend(addr: IpAddr, port: u16, mac: [u8; 6]) -> BackendSpec {
    BackendSpec {
        addr,
        port,
        weight: 100,
        drain: false,
        next_hop: NextHop {
            mac,
            ..NextHop::default()
        },
    }
}

/// Four DR backends on port 80: `prefix` 1 to 4, MACs `mac(first)` on.
fn pool(prefix: &str, first: u8) -> Vec<BackendSpec> {
    (0..4)
        .map(|i| backend(ip(&format!("{prefix}{}", i + 1)), 80, mac(first + i)))
        .collect()
}

fn macs(backends: &[BackendSpec]) -> Vec<[u8; 6]> {
    backends.iter().map(|b| b.next_hop.mac).collect()
}

fn service(
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    mode: Mode,
    backends: Vec<BackendSpec>,
) -> ServiceSpec {
    ServiceSpec {
        vip,
        port,
        protocol,
        mode,
        affinity: None,
        backends,
    }
}

fn with_affinity(mut spec: ServiceSpec, prefix_len: u8) -> ServiceSpec {
    spec.affinity = Some(AffinitySpec {
        timeout: Duration::from_secs(300),
        prefix_len,
    });
    spec
}

fn frame(src: IpAddr, dst: IpAddr) -> Frame {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Frame::ipv4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => Frame::ipv6(s, d),
        _ => panic!("{src} and {dst} are of different families"),
    }
}

/// A TCP data segment or a UDP datagram.
fn segment(frame: Frame, protocol: Protocol, sport: u16, dport: u16) -> Vec<u8> {
    match protocol {
        Protocol::Tcp => frame.tcp_data(sport, dport, 1000, 2000, b"GET / HTTP/1.1\r\n\r\n"),
        Protocol::Udp => frame.udp(sport, dport, b"query"),
    }
}

/// A TCP segment from `client` to `vip`:80 of `ip_len` bytes of IP packet.
fn sized(client: IpAddr, vip: IpAddr, sport: u16, ip_len: usize) -> Vec<u8> {
    let headers = if vip.is_ipv4() { 40 } else { 60 };
    frame(client, vip).tcp_data(sport, 80, 1, 1, &vec![b'x'; ip_len - headers])
}

/// The Ethernet header plus VLAN tags.
fn l2_len(frame: &[u8]) -> usize {
    let mut len = 14;
    while matches!(frame[len - 2..len], [0x81, 0x00] | [0x88, 0xa8]) {
        len += 4;
    }
    len
}

fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    [&dst[..], &src, &frame[12..]].concat()
}

/// `frame` as DR sends it: the same bytes, to `mac`, from the director.
fn dr(frame: &[u8], mac: [u8; 6]) -> Vec<u8> {
    with_macs(frame, mac, DIRECTOR_MAC)
}

/// An IPv4 header without options: id 0, TTL 64, its checksum.
fn ipv4_header(
    tos: u8,
    flags: u16,
    payload_len: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Vec<u8> {
    let total = ((20 + payload_len) as u16).to_be_bytes();
    let flags = flags.to_be_bytes();
    let mut header = [
        &[
            0x45, tos, total[0], total[1], 0, 0, flags[0], flags[1], 64, proto, 0, 0,
        ][..],
        &src.octets(),
        &dst.octets(),
    ]
    .concat();
    let sum = !ones_complement_sum(&[&header]);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header
}

/// An IPv6 header, traffic class and flow label 0.
fn ipv6_header(
    payload_len: usize,
    next: u8,
    hop_limit: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
) -> Vec<u8> {
    let [l0, l1] = (payload_len as u16).to_be_bytes();
    let fixed = [0x60, 0, 0, 0, l0, l1, next, hop_limit];
    [&fixed[..], &src.octets(), &dst.octets()].concat()
}

/// `frame` as the director tunnels it to `backend` behind `mac`: its link
/// header with the outer family's ethertype, the outer header, then the
/// untouched IP packet.
fn ipip(frame: &[u8], backend: IpAddr, mac: [u8; 6]) -> Vec<u8> {
    let l2 = l2_len(frame);
    let inner = &frame[l2..];
    let next = if inner[0] >> 4 == 6 {
        IPPROTO_IPV6
    } else {
        IPPROTO_IPIP
    };
    let (ether_type, outer) = match backend {
        IpAddr::V4(dst) => {
            // The inner packet is IPv4: IPv6 is never tunnelled in IPv4.
            let tos = inner[1];
            let header = ipv4_header(tos, IPV4_DF, inner.len(), next, TUNNEL_SRC4, dst);
            (0x0800u16, header)
        }
        IpAddr::V6(dst) => {
            let header = ipv6_header(inner.len(), next, 64, TUNNEL_SRC6, dst);
            (0x86dd, header)
        }
    };
    [
        &mac[..],
        &DIRECTOR_MAC,
        &frame[12..l2 - 2],
        &ether_type.to_be_bytes(),
        &outer,
        inner,
    ]
    .concat()
}

/// An ICMP (IPv4) or ICMPv6 message with its checksum: type, code, the
/// rest of the header, then `data`.
fn icmp(src: IpAddr, dst: IpAddr, kind: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut message = [&[kind, code, 0, 0][..], &rest, data].concat();
    let sum = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ones_complement_sum(&[&message]),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = (message.len() as u32).to_be_bytes();
            let next = [0, 0, 0, IPPROTO_ICMPV6];
            ones_complement_sum(&[&s.octets(), &d.octets(), &len, &next, &message])
        }
        _ => panic!("{src} and {dst} are of different families"),
    };
    message[2..4].copy_from_slice(&(!sum).to_be_bytes());
    message
}

/// An ICMP error's type, code and rest of header.
type ErrorKind = (u8, u8, [u8; 4]);
/// IPv4 "fragmentation needed", next-hop MTU 1280.
const FRAG_NEEDED: ErrorKind = (3, 4, [0, 0, 0x05, 0x00]);
/// ICMPv6 "packet too big", MTU 1280.
const PACKET_TOO_BIG: ErrorKind = (2, 0, [0, 0, 0x05, 0x00]);
const TIME_EXCEEDED: ErrorKind = (11, 0, [0; 4]);
const PORT_UNREACHABLE: ErrorKind = (3, 3, [0; 4]);

/// An ICMP error from a router to `vip` about `quoted`, an IP packet the
/// VIP sent.
fn icmp_error(vip: IpAddr, (kind, code, rest): ErrorKind, quoted: &[u8]) -> Vec<u8> {
    let (router, proto) = if vip.is_ipv4() {
        (ip("198.18.9.1"), IPPROTO_ICMP)
    } else {
        (ip("fd00:9::1"), IPPROTO_ICMPV6)
    };
    frame(router, vip).proto(proto, &icmp(router, vip, kind, code, rest, quoted))
}

/// The director's answer to `input`, too big to tunnel: "fragmentation
/// needed" (IPv4) or "packet too big" (IPv6) from the VIP to the client,
/// announcing `mtu` and quoting the first 64 (128) bytes of the packet,
/// back where the frame came from.
fn too_big(input: &[u8], client: IpAddr, vip: IpAddr, mtu: u16) -> Vec<u8> {
    let l2 = l2_len(input);
    let packet = &input[l2..];
    let (header, message) = match (vip, client) {
        (IpAddr::V4(v), IpAddr::V4(c)) => {
            let [m0, m1] = mtu.to_be_bytes();
            let message = icmp(vip, client, 3, 4, [0, 0, m0, m1], &packet[..64]);
            let header = ipv4_header(0, 0, message.len(), IPPROTO_ICMP, v, c);
            (header, message)
        }
        (IpAddr::V6(v), IpAddr::V6(c)) => {
            let rest = u32::from(mtu).to_be_bytes();
            let message = icmp(vip, client, 2, 0, rest, &packet[..128]);
            let header = ipv6_header(message.len(), IPPROTO_ICMPV6, 255, v, c);
            (header, message)
        }
        _ => panic!("{vip} and {client} are of different families"),
    };
    // The link header (tags and ethertype) stays; the MACs swap.
    [
        &CLIENT_MAC[..],
        &DIRECTOR_MAC,
        &input[12..l2],
        &header,
        &message,
    ]
    .concat()
}

/// An untagged IPv4 frame (no options) with its TOS set.
fn with_tos(mut frame: Vec<u8>, tos: u8) -> Vec<u8> {
    frame[15] = tos;
    frame[24..26].fill(0);
    let sum = !ones_complement_sum(&[&frame[14..34]]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// An IPv4 UDP frame (no options) with "no checksum".
fn without_udp_checksum(mut frame: Vec<u8>) -> Vec<u8> {
    frame[14 + 20 + 6..14 + 20 + 8].fill(0);
    frame
}

/// The IP packet `vip`:`vport` sent to the client's `cport`, as an ICMP
/// error quotes it.
fn from_vip(vip: IpAddr, protocol: Protocol, vport: u16, cport: u16) -> Vec<u8> {
    segment(frame(vip, client_of(vip)), protocol, vport, cport)[14..].to_vec()
}

/// `frame` with `bytes` written at `at`.
fn edited(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// Runs the rest of the calling thread on `cpu` only.
fn move_to_cpu(cpu: usize) {
    pin_to_cpu(cpu).expect("pinning the test thread");
}

/// The CPU the test thread runs on, and another one.
fn this_and_another_cpu() -> (usize, usize) {
    let this = sched_getcpu().expect("sched_getcpu");
    (this, 1 - this.min(1))
}

/// The shared flow table's key for a TCP flow from `client`:`sport` to `vip`:80.
fn tcp_flow_key(client: IpAddr, vip: IpAddr, sport: u16) -> FlowKey {
    FlowKey {
        src: words(client),
        dst: words(vip),
        sport,
        dport: 80,
        proto: PROTO_TCP,
        family: family(vip),
        _pad: [0; 2],
    }
}

/// Longer than a tick of the coarse clock the program stamps entries with,
/// shorter than the refresh of an entry's last-seen time (100 jiffies).
const CLOCK_STEP: Duration = Duration::from_millis(50);

/// Whether this CPU's cached entry and the shared one agree.
fn agree(own: &CachedFlow, shared: &Flow) -> bool {
    (own.backend, own.generation, own.flags, own.last_seen_ns)
        == (
            shared.backend,
            shared.generation,
            shared.flags,
            shared.last_seen_ns,
        )
}
