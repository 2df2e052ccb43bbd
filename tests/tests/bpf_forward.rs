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
struct Lab {
    dataplane: Dataplane,
    /// The counters every case pins.
    watched: &'static [Counter],
    checks: usize,
    failures: Vec<String>,
}

impl Lab {
    fn load(options: &LoadOptions, watched: &'static [Counter]) -> Lab {
        isolate_thread();
        let mut dataplane = Dataplane::load(options).expect("loading the XDP program");
        accept_test_frames(&mut dataplane).unwrap();
        Lab {
            dataplane,
            watched,
            checks: 0,
            failures: Vec::new(),
        }
    }

    /// The load balancer, serving `services`.
    fn balancer(services: &[ServiceSpec]) -> Lab {
        let options = LoadOptions {
            bpf_log: log::LevelFilter::Off,
            ring_size: 1009,
            ..LoadOptions::default()
        };
        let mut lab = Lab::load(&options, OUTCOMES);
        lab.apply(services);
        lab
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

#[test]
fn bpf_forward_modes() {
    require_privileged!();
    // One single-backend service per mode, family and protocol.
    let lanes = [
        (Mode::Dr, "198.18.0.100", "198.18.1.10"),
        (Mode::Dr, "fd00::100", "fd00:1::10"),
        (Mode::Ipip, "198.18.0.101", "198.18.2.10"),
        (Mode::Ipip, "fd00::101", "fd00:2::10"),
        (Mode::Nat, "198.18.0.102", "198.18.3.10"),
        (Mode::Nat, "fd00::102", "fd00:3::10"),
    ];
    let mut services = Vec::new();
    let mut cases = Vec::new();
    let mut traffic = Vec::new();
    for (n, (mode, vip, addr)) in (1..).zip(lanes) {
        let (vip, addr, mac) = (ip(vip), ip(addr), mac(n));
        let client = client_of(vip);
        for (protocol, vport, nat_port) in [(Protocol::Tcp, 80, 8080), (Protocol::Udp, 53, 5353)] {
            let port = if mode == Mode::Nat { nat_port } else { vport };
            let spec = service(vip, vport, protocol, mode, vec![backend(addr, port, mac)]);
            // A TCP connection begins with a SYN, a UDP flow with a datagram.
            let packet = |frame: Frame, dport, syn| {
                if syn {
                    frame.tcp_syn(CLIENT_PORT, dport)
                } else {
                    segment(frame, protocol, CLIENT_PORT, dport)
                }
            };
            let opening = protocol == Protocol::Tcp;
            let forwarded = |syn: bool| {
                let input = packet(frame(client, vip), vport, syn);
                let output = match mode {
                    Mode::Dr => dr(&input, mac),
                    Mode::Ipip => ipip(&input, addr, mac),
                    Mode::Nat => {
                        let translated = frame(client, addr).ttl(63).macs(DIRECTOR_MAC, mac);
                        packet(translated, port, syn)
                    }
                };
                (input, output)
            };
            let (first, first_out) = forwarded(opening);
            let (input, output) = forwarded(false);
            let name = format!("{mode:?} {}", spec.name());
            let ip_bytes = (first.len() + input.len()) as u64 - 2 * 14;
            cases.push(sent(
                format!("{name}: new flow"),
                first,
                first_out,
                &[FlowMiss, Tx],
            ));
            cases.push(sent(
                format!("{name}: flow-table hit"),
                input,
                output,
                &[FlowHit, Tx],
            ));
            traffic.push((spec.clone(), port, ip_bytes));
            services.push(spec);
        }
    }

    let (dr4, dr6, ipip4) = (ip("198.18.0.100"), ip("fd00::100"), ip("198.18.0.101"));
    let (nat4, nat6) = (ip("198.18.0.102"), ip("fd00::102"));
    let (ipip4_backend, nat4_backend) = (ip("198.18.2.10"), ip("198.18.3.10"));
    let (v4_over_v6, v6_backend) = (ip("198.18.0.103"), ip("fd00:2::20"));
    services.push(service(
        v4_over_v6,
        80,
        Protocol::Tcp,
        Mode::Ipip,
        vec![backend(v6_backend, 80, mac(7))],
    ));
    let redirecting = ip("198.18.0.104");
    let mut elsewhere = backend(ip("198.18.1.40"), 80, mac(8));
    elsewhere.next_hop.ifindex = 7;
    elsewhere.next_hop.src_mac = EGRESS_MAC;
    services.push(service(
        redirecting,
        80,
        Protocol::Tcp,
        Mode::Dr,
        vec![elsewhere],
    ));

    let mut lab = Lab::balancer(&services);
    lab.check(cases);
    for (spec, port, ip_bytes) in &traffic {
        let two_packets_one_flow = TrafficStats {
            packets: 2,
            bytes: *ip_bytes,
            new_flows: 1,
        };
        let of_service = lab
            .dataplane
            .service_stats(&service_key(spec))
            .expect("service stats");
        let of_backend = lab
            .dataplane
            .backend_stats(spec.backends[0].addr, *port)
            .expect("backend stats");
        let name = spec.name();
        lab.expect_eq(
            format!("{name}: service stats"),
            of_service,
            two_packets_one_flow,
        );
        lab.expect_eq(
            format!("{name}: backend stats"),
            of_backend,
            two_packets_one_flow,
        );
    }
    // A service's traffic is its backends' and what its removed backends
    // carried: replacing every backend, then putting them back (in fresh
    // slots), changes no service's count.
    let replaced: Vec<ServiceSpec> = (1..)
        .zip(&services)
        .map(|(n, spec)| {
            let port = spec.backends[0].port;
            // Of the old backend's family (IP-in-IP may cross families).
            let addr = match spec.backends[0].addr {
                IpAddr::V4(_) => ip(&format!("198.18.9.{n}")),
                IpAddr::V6(_) => ip(&format!("fd00::9:{n}")),
            };
            ServiceSpec {
                backends: vec![backend(addr, port, mac(99))],
                ..spec.clone()
            }
        })
        .collect();
    for step in [&replaced, &services] {
        lab.apply(step);
        for (spec, _, ip_bytes) in &traffic {
            let of_service = lab
                .dataplane
                .service_stats(&service_key(spec))
                .expect("service stats");
            lab.expect_eq(
                format!("{}: service stats after its backends changed", spec.name()),
                (of_service.packets, of_service.bytes, of_service.new_flows),
                (2, *ip_bytes, 1),
            );
        }
    }

    let tcp = |frame: Frame, sport: u16| segment(frame, Protocol::Tcp, sport, 80);
    let over_v6 = tcp(frame(CLIENT4, v4_over_v6), CLIENT_PORT);
    let dscp_ef = with_tos(tcp(frame(CLIENT4, ipip4), 40001), 0xb8);
    let tagged4 = tcp(frame(CLIENT4, dr4).vlan(10), 40002);
    let tagged6 = tcp(frame(CLIENT6, dr6).vlan(100).vlan(200), 40002);
    let tagged_ipip = tcp(frame(CLIENT4, ipip4).vlan(10), 40003);
    let redirected = tcp(frame(CLIENT4, redirecting), CLIENT_PORT);
    let udp_nat = |frame: Frame, dport: u16| segment(frame, Protocol::Udp, 40005, dport);
    let cases = vec![
        sent(
            "IP-in-IP: an IPv4 VIP to an IPv6 backend (IPv4-in-IPv6)",
            over_v6.clone(),
            ipip(&over_v6, v6_backend, mac(7)),
            &[FlowMiss, Tx],
        ),
        sent(
            "IP-in-IP: the outer IPv4 header copies the inner TOS",
            dscp_ef.clone(),
            ipip(&dscp_ef, ipip4_backend, mac(3)),
            &[FlowMiss, Tx],
        ),
        sent(
            "DR: an 802.1Q frame keeps its tag",
            tagged4.clone(),
            dr(&tagged4, mac(1)),
            &[FlowMiss, Tx],
        ),
        sent(
            "DR: an 802.1ad+802.1Q IPv6 frame keeps both tags",
            tagged6.clone(),
            dr(&tagged6, mac(2)),
            &[FlowMiss, Tx],
        ),
        sent(
            "IP-in-IP: an 802.1Q frame keeps its tag before the outer header",
            tagged_ipip.clone(),
            ipip(&tagged_ipip, ipip4_backend, mac(3)),
            &[FlowMiss, Tx],
        ),
        case(
            "DR: a backend behind another interface is redirected there, from our MAC on it",
            redirected.clone(),
            XdpAction::Redirect,
            with_macs(&redirected, mac(8), EGRESS_MAC),
            &[FlowMiss, Redirect],
        ),
        unchanged(
            "NAT: TTL 1 is left to the kernel, untranslated",
            tcp(frame(CLIENT4, nat4).ttl(1), 40004),
            &[FlowMiss],
        ),
        unchanged(
            "NAT: hop limit 1 is left to the kernel, untranslated",
            tcp(frame(CLIENT6, nat6).ttl(1), 40004),
            &[FlowMiss],
        ),
        sent(
            "NAT: an IPv4 UDP datagram without checksum keeps none",
            without_udp_checksum(udp_nat(frame(CLIENT4, nat4), 53)),
            without_udp_checksum(udp_nat(
                frame(CLIENT4, nat4_backend)
                    .ttl(63)
                    .macs(DIRECTOR_MAC, mac(5)),
                5353,
            )),
            &[FlowMiss, Tx],
        ),
    ];
    lab.check(cases);
    lab.finish();
}

#[test]
fn bpf_forward_backend_choice() {
    require_privileged!();
    let two = ip("198.18.0.110");
    let solo = ip("198.18.0.111");
    let (empty4, empty6) = (ip("198.18.0.112"), ip("fd00::112"));
    let (affinity32, affinity24, affinity64) =
        (ip("198.18.0.113"), ip("198.18.0.114"), ip("fd00::114"));
    let (any4, split, any6) = (ip("198.18.0.115"), ip("198.18.0.116"), ip("fd00::115"));
    let a = backend(ip("198.18.1.1"), 80, mac(1));
    let b = backend(ip("198.18.1.2"), 80, mac(2));
    let c = backend(ip("198.18.1.3"), 80, mac(3));
    let pool4 = pool("198.18.4.", 40);
    let pool6 = pool("fd00:4::", 50);
    let services = |a: BackendSpec, c: BackendSpec| {
        let dr_service =
            |vip, port, protocol, backends| service(vip, port, protocol, Mode::Dr, backends);
        vec![
            dr_service(two, 80, Protocol::Tcp, vec![a, b.clone()]),
            dr_service(solo, 80, Protocol::Tcp, vec![c]),
            dr_service(empty4, 80, Protocol::Tcp, vec![]),
            dr_service(empty6, 53, Protocol::Udp, vec![]),
            with_affinity(dr_service(affinity32, 80, Protocol::Tcp, pool4.clone()), 32),
            with_affinity(dr_service(affinity24, 80, Protocol::Tcp, pool4.clone()), 24),
            with_affinity(dr_service(affinity64, 80, Protocol::Tcp, pool6.clone()), 64),
            dr_service(
                any4,
                0,
                Protocol::Tcp,
                vec![backend(ip("198.18.1.20"), 0, mac(20))],
            ),
            dr_service(
                split,
                80,
                Protocol::Tcp,
                vec![backend(ip("198.18.1.21"), 80, mac(21))],
            ),
            dr_service(
                split,
                0,
                Protocol::Tcp,
                vec![backend(ip("198.18.1.22"), 0, mac(22))],
            ),
            dr_service(
                any6,
                0,
                Protocol::Udp,
                vec![backend(ip("fd00:1::20"), 0, mac(23))],
            ),
        ]
    };
    // No new flows for the backend: by the drain flag, or by weight 0.
    let drain = |mut spec: BackendSpec, by_flag: bool| {
        if by_flag {
            spec.drain = true;
        } else {
            spec.weight = 0;
        }
        spec
    };
    let tcp = |client: IpAddr, vip: IpAddr, sport: u16| {
        segment(frame(client, vip), Protocol::Tcp, sport, 80)
    };
    let mut lab = Lab::balancer(&services(a.clone(), c.clone()));

    let to_any = |client: IpAddr, vip: IpAddr, protocol: Protocol, dport: u16| {
        segment(frame(client, vip), protocol, CLIENT_PORT, dport)
    };
    let mut cases = vec![
        sent(
            "a single backend takes a new flow",
            tcp(CLIENT4, solo, CLIENT_PORT),
            dr(&tcp(CLIENT4, solo, CLIENT_PORT), mac(3)),
            &[FlowMiss, Tx],
        ),
        dropped(
            "no backends: IPv4 TCP dropped",
            tcp(CLIENT4, empty4, CLIENT_PORT),
            &[FlowMiss, DropNoBackend],
        ),
        dropped(
            "no backends: IPv6 UDP dropped",
            to_any(CLIENT6, empty6, Protocol::Udp, 53),
            &[FlowMiss, DropNoBackend],
        ),
        unchanged(
            "a port-0 TCP service: UDP to its VIP passes",
            to_any(CLIENT4, any4, Protocol::Udp, 53),
            &[],
        ),
        sent(
            "port 80 and port 0 services: port 80 has its own",
            to_any(CLIENT4, split, Protocol::Tcp, 80),
            dr(&to_any(CLIENT4, split, Protocol::Tcp, 80), mac(21)),
            &[FlowMiss, Tx],
        ),
        sent(
            "port 80 and port 0 services: port 8080 goes to port 0's",
            to_any(CLIENT4, split, Protocol::Tcp, 8080),
            dr(&to_any(CLIENT4, split, Protocol::Tcp, 8080), mac(22)),
            &[FlowMiss, Tx],
        ),
        sent(
            "an IPv6 port-0 UDP service takes port 5000",
            to_any(CLIENT6, any6, Protocol::Udp, 5000),
            dr(&to_any(CLIENT6, any6, Protocol::Udp, 5000), mac(23)),
            &[FlowMiss, Tx],
        ),
    ];
    for dport in [1, 443, 65535] {
        let input = to_any(CLIENT4, any4, Protocol::Tcp, dport);
        cases.push(sent(
            format!("a port-0 TCP service takes port {dport}"),
            input.clone(),
            dr(&input, mac(20)),
            &[FlowMiss, Tx],
        ));
    }
    // Affinity: the first flow's backend, then other flows of the client
    // (or of its prefix) must all go there too.
    let pool4_macs = macs(&pool4);
    let pool6_macs = macs(&pool6);
    let first = lab.backend_of(&tcp(CLIENT4, affinity32, CLIENT_PORT), &pool4_macs);
    for sport in 40001..=40006 {
        let input = tcp(CLIENT4, affinity32, sport);
        cases.push(sent(
            format!("affinity /32: the client's flow from port {sport} joins its first"),
            input.clone(),
            dr(&input, pool4_macs[first]),
            &[FlowMiss, Tx],
        ));
    }
    let first = lab.backend_of(&tcp(CLIENT4, affinity24, CLIENT_PORT), &pool4_macs);
    for (sport, client) in (40001..).zip(["198.18.0.77", "198.18.0.200", "198.18.0.254"]) {
        let input = tcp(ip(client), affinity24, sport);
        cases.push(sent(
            format!("affinity /24: {client} joins 198.18.0.1"),
            input.clone(),
            dr(&input, pool4_macs[first]),
            &[FlowMiss, Tx],
        ));
    }
    let first = lab.backend_of(&tcp(CLIENT6, affinity64, CLIENT_PORT), &pool6_macs);
    for (sport, client) in (40001..).zip(["fd00::abcd:1", "fd00::ffff:ffff:ffff:fffe"]) {
        let input = tcp(ip(client), affinity64, sport);
        cases.push(sent(
            format!("affinity /64: {client} joins fd00::1"),
            input.clone(),
            dr(&input, pool6_macs[first]),
            &[FlowMiss, Tx],
        ));
    }
    lab.check(cases);

    // Drain, by the flag and by weight 0: a flow already on the backend
    // stays there, new flows never go to it.
    let ab = [a.next_hop.mac, b.next_hop.mac];
    for (how, ports, by_flag) in [("drain=true", 41000, true), ("weight 0", 42000, false)] {
        lab.apply(&services(a.clone(), c.clone()));
        let on = |lab: &mut Lab, which| {
            (ports..ports + 100)
                .find(|&port| lab.backend_of(&tcp(CLIENT4, two, port), &ab) == which)
                .expect("a flow for each backend")
        };
        let (on_a, on_b) = (on(&mut lab, 0), on(&mut lab, 1));
        lab.apply(&services(
            drain(a.clone(), by_flag),
            drain(c.clone(), by_flag),
        ));
        let mut cases = vec![
            sent(
                format!("{how}: a flow already on the drained backend stays"),
                tcp(CLIENT4, two, on_a),
                dr(&tcp(CLIENT4, two, on_a), ab[0]),
                &[FlowHit, Tx],
            ),
            sent(
                format!("{how}: a flow on the other backend stays"),
                tcp(CLIENT4, two, on_b),
                dr(&tcp(CLIENT4, two, on_b), ab[1]),
                &[FlowHit, Tx],
            ),
            sent(
                format!("{how}: a drained sole backend keeps its flow"),
                tcp(CLIENT4, solo, CLIENT_PORT),
                dr(&tcp(CLIENT4, solo, CLIENT_PORT), mac(3)),
                &[FlowHit, Tx],
            ),
            dropped(
                format!("{how}: a drained sole backend takes no new flow"),
                tcp(CLIENT4, solo, ports),
                &[FlowMiss, DropNoBackend],
            ),
        ];
        for port in ports + 500..ports + 508 {
            let input = tcp(CLIENT4, two, port);
            cases.push(sent(
                format!("{how}: new flow from port {port} goes to the other backend"),
                input.clone(),
                dr(&input, ab[1]),
                &[FlowMiss, Tx],
            ));
        }
        lab.check(cases);
    }
    lab.finish();
}

/// The IP packet `vip`:`vport` sent to the client's `cport`, as an ICMP
/// error quotes it.
fn from_vip(vip: IpAddr, protocol: Protocol, vport: u16, cport: u16) -> Vec<u8> {
    segment(frame(vip, client_of(vip)), protocol, vport, cport)[14..].to_vec()
}

#[test]
fn bpf_forward_icmp() {
    require_privileged!();
    let (dr4, dr6, dr_udp) = (ip("198.18.0.120"), ip("fd00::120"), ip("198.18.0.124"));
    let (ipip4, ipip6, v4_over_v6) = (ip("198.18.0.121"), ip("fd00::121"), ip("198.18.0.123"));
    let (ipip4_backend, ipip6_backend, v6_backend) =
        (ip("198.18.2.10"), ip("fd00:2::10"), ip("fd00:2::20"));
    let nat4 = ip("198.18.0.122");
    let pool4 = pool("198.18.4.", 40);
    let pool6 = pool("fd00:4::", 50);
    let tcp80 = |vip, mode, backends| service(vip, 80, Protocol::Tcp, mode, backends);
    let mut lab = Lab::balancer(&[
        tcp80(dr4, Mode::Dr, pool4.clone()),
        tcp80(dr6, Mode::Dr, pool6.clone()),
        service(
            dr_udp,
            53,
            Protocol::Udp,
            Mode::Dr,
            vec![backend(ip("198.18.1.24"), 53, mac(24))],
        ),
        tcp80(ipip4, Mode::Ipip, vec![backend(ipip4_backend, 80, mac(3))]),
        tcp80(ipip6, Mode::Ipip, vec![backend(ipip6_backend, 80, mac(4))]),
        tcp80(
            v4_over_v6,
            Mode::Ipip,
            vec![backend(v6_backend, 80, mac(7))],
        ),
        tcp80(
            nat4,
            Mode::Nat,
            vec![backend(ip("198.18.3.10"), 8080, mac(5))],
        ),
    ]);
    let tcp = |client, vip, sport| segment(frame(client, vip), Protocol::Tcp, sport, 80);
    let mut cases = Vec::new();

    // DR to several backends: each error goes to the backend of its flow.
    let v4_error = ("frag needed", FRAG_NEEDED);
    let v6_error = ("packet too big", PACKET_TOO_BIG);
    for (vip, backends, (what, kind)) in [(dr4, &pool4, v4_error), (dr6, &pool6, v6_error)] {
        let macs = macs(backends);
        for cport in 40000..40004 {
            let owner = lab.backend_of(&tcp(client_of(vip), vip, cport), &macs);
            let error = icmp_error(vip, kind, &from_vip(vip, Protocol::Tcp, 80, cport));
            cases.push(sent(
                format!("DR {vip}: {what} about the flow from port {cport} goes to its backend"),
                error.clone(),
                dr(&error, macs[owner]),
                &[FlowHit, Tx],
            ));
        }
    }
    let pool4_macs = macs(&pool4);
    let owner = lab.backend_of(&tcp(CLIENT4, dr4, CLIENT_PORT), &pool4_macs);
    let error = icmp_error(
        dr4,
        TIME_EXCEEDED,
        &from_vip(dr4, Protocol::Tcp, 80, CLIENT_PORT),
    );
    cases.push(sent(
        "DR: time exceeded about a flow goes to its backend",
        error.clone(),
        dr(&error, pool4_macs[owner]),
        &[FlowHit, Tx],
    ));
    let query = segment(frame(CLIENT4, dr_udp), Protocol::Udp, CLIENT_PORT, 53);
    let error = icmp_error(
        dr_udp,
        PORT_UNREACHABLE,
        &from_vip(dr_udp, Protocol::Udp, 53, CLIENT_PORT),
    );
    cases.push(sent(
        "DR UDP: new flow",
        query.clone(),
        dr(&query, mac(24)),
        &[FlowMiss, Tx],
    ));
    cases.push(sent(
        "DR UDP: port unreachable about the flow goes to its backend",
        error.clone(),
        dr(&error, mac(24)),
        &[FlowHit, Tx],
    ));

    // IP-in-IP: the error is tunnelled like the flow's packets.
    for (vip, addr, mac, (what, kind)) in [
        (ipip4, ipip4_backend, mac(3), v4_error),
        (ipip6, ipip6_backend, mac(4), v6_error),
    ] {
        let syn = tcp(client_of(vip), vip, CLIENT_PORT);
        let error = icmp_error(vip, kind, &from_vip(vip, Protocol::Tcp, 80, CLIENT_PORT));
        cases.push(sent(
            format!("IP-in-IP {vip}: new flow"),
            syn.clone(),
            ipip(&syn, addr, mac),
            &[FlowMiss, Tx],
        ));
        cases.push(sent(
            format!("IP-in-IP {vip}: {what} about the flow is tunnelled to its backend"),
            error.clone(),
            ipip(&error, addr, mac),
            &[FlowHit, Tx],
        ));
    }

    let elsewhere = ip("198.18.0.200");
    cases.extend([
        unchanged(
            "NAT: an error about a NAT flow is the kernel's",
            icmp_error(
                nat4,
                FRAG_NEEDED,
                &from_vip(nat4, Protocol::Tcp, 80, CLIENT_PORT),
            ),
            &[],
        ),
        unchanged(
            "an error about a packet of no VIP passes",
            icmp_error(
                elsewhere,
                FRAG_NEEDED,
                &from_vip(elsewhere, Protocol::Tcp, 80, CLIENT_PORT),
            ),
            &[],
        ),
        unchanged(
            "an ICMP echo request to a VIP passes",
            frame(CLIENT4, dr4).echo_request(1, 1, b"ping"),
            &[],
        ),
        unchanged(
            "an ICMPv6 echo request to a VIP passes",
            frame(CLIENT6, dr6).echo_request(1, 1, b"ping"),
            &[],
        ),
    ]);

    // Too big to tunnel at MTU 1320: the client is told the MTU inside.
    for (vip, addr, mac, mtu) in [
        (ipip4, ipip4_backend, mac(3), 1300),
        (ipip6, ipip6_backend, mac(4), 1280),
        (v4_over_v6, v6_backend, mac(7), 1280),
    ] {
        let client = client_of(vip);
        let fits = sized(client, vip, 40001, usize::from(mtu));
        let over = sized(client, vip, 40002, usize::from(mtu) + 1);
        cases.push(sent(
            format!("IP-in-IP {vip} to {addr}: a {mtu}-byte packet fits the tunnel"),
            fits.clone(),
            ipip(&fits, addr, mac),
            &[FlowMiss, Tx],
        ));
        cases.push(sent(
            format!(
                "IP-in-IP {vip} to {addr}: a {}-byte packet is answered 'too big', MTU {mtu}",
                mtu + 1
            ),
            over.clone(),
            too_big(&over, client, vip, mtu),
            &[FlowMiss, IcmpTooBig, Tx],
        ));
    }
    let tagged = frame(CLIENT4, ipip4)
        .vlan(10)
        .tcp_data(40003, 80, 1, 1, &[b'x'; 1301 - 40]);
    cases.push(sent(
        "IP-in-IP: an 802.1Q frame too big is answered with its tag",
        tagged.clone(),
        too_big(&tagged, CLIENT4, ipip4, 1300),
        &[FlowMiss, IcmpTooBig, Tx],
    ));
    lab.check(cases);
    lab.finish();
}

#[test]
fn bpf_forward_nat_replies() {
    require_privileged!();
    let (vip4, vip6) = (ip("198.18.0.102"), ip("fd00::102"));
    let (real4, real6) = (ip("198.18.3.10"), ip("fd00:3::10"));
    let dr_backend = ip("198.18.1.10");
    let nat = |vip, protocol, vport, addr, port| {
        service(
            vip,
            vport,
            protocol,
            Mode::Nat,
            vec![backend(addr, port, mac(5))],
        )
    };
    let tcp4 = nat(vip4, Protocol::Tcp, 80, real4, 8080);
    let others = vec![
        nat(vip4, Protocol::Udp, 53, real4, 5353),
        nat(vip6, Protocol::Tcp, 80, real6, 8080),
        nat(vip6, Protocol::Udp, 53, real6, 5353),
        service(
            ip("198.18.0.100"),
            80,
            Protocol::Tcp,
            Mode::Dr,
            vec![backend(dr_backend, 80, mac(1))],
        ),
    ];
    let mut lab = Lab::balancer(&[vec![tcp4], others.clone()].concat());
    // Clients on-link with no neighbour entry yet, so the kernel forwards;
    // and an unreachable range.
    nat_director(&["route add unreachable 198.19.0.0/16"]);
    // A reply from `src`:`sport` to `dst`, as it reaches the director.
    let reply_to = |src: IpAddr, dst: IpAddr, protocol, sport| {
        let frame = frame(src, dst).macs(mac(5), DIRECTOR_MAC);
        segment(frame, protocol, sport, CLIENT_PORT)
    };
    let reply = |src: IpAddr, protocol, sport| reply_to(src, client_of(src), protocol, sport);
    let translated = |vip, real, protocol, vport, port| {
        passed(
            format!("NAT reply {real}:{port} becomes {vip}:{vport}, routed by the kernel"),
            reply(real, protocol, port),
            reply(vip, protocol, vport),
            &[NatReply, FibPass],
        )
    };
    let mut cases = Vec::new();
    for (vip, real) in [(vip4, real4), (vip6, real6)] {
        cases.push(translated(vip, real, Protocol::Tcp, 80, 8080));
        cases.push(translated(vip, real, Protocol::Udp, 53, 5353));
    }
    cases.extend([
        passed(
            "NAT reply: IPv4 UDP without checksum keeps none",
            without_udp_checksum(reply(real4, Protocol::Udp, 5353)),
            without_udp_checksum(reply(vip4, Protocol::Udp, 53)),
            &[NatReply, FibPass],
        ),
        unchanged(
            "a NAT backend's other port sends no NAT reply",
            reply(real4, Protocol::Tcp, 8081),
            &[],
        ),
        unchanged(
            "a NAT backend's port in the other protocol sends no NAT reply",
            reply(real4, Protocol::Udp, 8080),
            &[],
        ),
        unchanged(
            "a DR backend's reply passes",
            reply(dr_backend, Protocol::Tcp, 80),
            &[],
        ),
        unchanged(
            "a NAT backend's answer to the director itself (a health check) passes untouched",
            reply_to(real4, ip("198.18.3.2"), Protocol::Tcp, 8080),
            &[NatToDirector],
        ),
        unchanged(
            "an IPv6 NAT backend's answer to the director itself passes untouched",
            reply_to(real6, ip("fd00:3::2"), Protocol::Tcp, 8080),
            &[NatToDirector],
        ),
        unchanged(
            "a NAT backend's packet to an unreachable address passes untouched",
            reply_to(real4, ip("198.19.0.1"), Protocol::Tcp, 8080),
            &[NatNoRoute],
        ),
    ]);
    lab.check(cases);

    lab.apply(&others);
    lab.check(vec![
        unchanged(
            "once its service is removed, the backend's reply passes",
            reply(real4, Protocol::Tcp, 8080),
            &[],
        ),
        translated(vip4, real4, Protocol::Udp, 53, 5353),
    ]);
    lab.finish();
}

/// A NAT reply is routed by the kernel's FIB once per client, then by this
/// CPU's copy of the result: for packets no longer than one the FIB passed,
/// and until the copy is a few jiffies old, after which a neighbour change
/// shows.
#[test]
fn bpf_forward_nat_reply_routes_are_remembered_briefly() {
    require_privileged!();
    const OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xee, 0x02];
    let mut services = Vec::new();
    let pairs = [
        (ip("198.18.0.102"), ip("198.18.3.10"), ip("198.18.0.7")),
        (ip("fd00::102"), ip("fd00:3::10"), ip("fd00::7")),
    ];
    for (vip, real, _) in pairs {
        let backends = vec![backend(real, 8080, mac(5))];
        services.push(service(vip, 80, Protocol::Tcp, Mode::Nat, backends));
    }
    let mut lab = Lab::balancer(&services);
    nat_director(&["link set d0 address 02:00:00:00:ee:02"]);
    let neighbour = |verb: &str, addr: IpAddr, lladdr: [u8; 6]| {
        let lladdr = lladdr.map(|b| format!("{b:02x}")).join(":");
        ip_in_this_thread(&format!(
            "neigh {verb} {addr} lladdr {lladdr} dev d0 nud permanent"
        ));
    };
    for (_, _, other) in pairs {
        for client in [client_of(other), other] {
            neighbour("add", client, mac(9));
        }
    }
    // A reply of `len` bytes of IP packet from `src`:`sport` to `client`.
    let reply = |src: IpAddr, sport: u16, client: IpAddr, len: usize| {
        let headers = if src.is_ipv4() { 40 } else { 60 };
        frame(src, client).macs(mac(5), DIRECTOR_MAC).tcp_data(
            sport,
            CLIENT_PORT,
            1000,
            2000,
            &vec![b'x'; len - headers],
        )
    };
    let routed = |description: String, (vip, real): (IpAddr, IpAddr), client, len, to, counted| {
        let output = frame(vip, client).ttl(63).macs(OUT_MAC, to).tcp_data(
            80,
            CLIENT_PORT,
            1000,
            2000,
            &vec![b'x'; len - if vip.is_ipv4() { 40 } else { 60 }],
        );
        case(
            description,
            reply(real, 8080, client, len),
            XdpAction::Redirect,
            output,
            counted,
        )
    };
    const LOOKED_UP: &[Counter] = &[NatReply, Redirect];
    const REMEMBERED: &[Counter] = &[NatReply, NatRouteCached, Redirect];
    for (vip, real, other) in pairs {
        let client = client_of(vip);
        let nat = (vip, real);
        lab.check(vec![
            routed(
                format!("{vip}: the first reply is routed by the FIB"),
                nat,
                client,
                100,
                mac(9),
                LOOKED_UP,
            ),
            routed(
                format!("{vip}: the next by the CPU's copy"),
                nat,
                client,
                100,
                mac(9),
                REMEMBERED,
            ),
            routed(
                format!("{vip}: a longer one by the FIB (the MTU check)"),
                nat,
                client,
                1400,
                mac(9),
                LOOKED_UP,
            ),
            routed(
                format!("{vip}: then the longer by the copy"),
                nat,
                client,
                1400,
                mac(9),
                REMEMBERED,
            ),
            routed(
                format!("{vip}: and a shorter by the copy"),
                nat,
                client,
                100,
                mac(9),
                REMEMBERED,
            ),
            routed(
                format!("{vip}: another client's by the FIB"),
                nat,
                other,
                100,
                mac(9),
                LOOKED_UP,
            ),
            unchanged(
                format!("{vip}: one over the MTU is the kernel's, untranslated"),
                reply(real, 8080, client, 1600),
                &[NatNoRoute],
            ),
        ]);
        neighbour("replace", client, mac(10));
        // Past the copy's life (REPLY_ROUTE_JIFFIES, 100 ms at HZ 100).
        std::thread::sleep(Duration::from_millis(300));
        lab.check(vec![
            routed(
                format!("{vip}: after a while, the FIB's new neighbour"),
                nat,
                client,
                100,
                mac(10),
                LOOKED_UP,
            ),
            routed(
                format!("{vip}: and the copy of it"),
                nat,
                client,
                100,
                mac(10),
                REMEMBERED,
            ),
        ]);
    }
    lab.finish();
}

/// `frame` with `bytes` written at `at`.
fn edited(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

#[test]
fn bpf_forward_drops_and_passes() {
    require_privileged!();
    let (vip4, vip6) = (ip("198.18.0.100"), ip("fd00::100"));
    let (other4, other6) = (ip("198.18.0.200"), ip("fd00::200"));
    let mut services = Vec::new();
    for (vip, addr) in [(vip4, ip("198.18.1.10")), (vip6, ip("fd00:1::10"))] {
        for (protocol, port) in [(Protocol::Tcp, 80), (Protocol::Udp, 53)] {
            let backends = vec![backend(addr, port, mac(1))];
            services.push(service(vip, port, protocol, Mode::Dr, backends));
        }
    }
    let mut lab = Lab::balancer(&services);
    let first_fragment = |frame: Frame| frame.fragment(0, true).udp(CLIENT_PORT, 53, &[7; 64]);
    let later_fragment =
        |frame: Frame, offset| frame.fragment(offset, false).proto(IPPROTO_UDP, &[7; 64]);
    let tcp = |frame: Frame, dport| segment(frame, Protocol::Tcp, CLIENT_PORT, dport);
    let udp = |frame: Frame, dport| segment(frame, Protocol::Udp, CLIENT_PORT, dport);
    let tcp4 = tcp(frame(CLIENT4, vip4), 80);
    let udp6 = udp(frame(CLIENT6, vip6), 53);
    let mut vrrp = vec![0x31, 51, 150, 1, 0x00, 100, 0, 0];
    vrrp.extend_from_slice(&[198, 18, 0, 100]);
    let cases = vec![
        dropped(
            "IPv4 first fragment to a VIP",
            first_fragment(frame(CLIENT4, vip4)),
            &[DropFragment],
        ),
        dropped(
            "IPv4 later fragment to a VIP",
            later_fragment(frame(CLIENT4, vip4), 1480),
            &[DropFragment],
        ),
        dropped(
            "IPv6 first fragment to a VIP",
            first_fragment(frame(CLIENT6, vip6)),
            &[DropFragment],
        ),
        dropped(
            "IPv6 later fragment to a VIP",
            later_fragment(frame(CLIENT6, vip6), 1448),
            &[DropFragment],
        ),
        unchanged(
            "IPv4 first fragment to another address",
            first_fragment(frame(CLIENT4, other4)),
            &[],
        ),
        unchanged(
            "IPv6 later fragment to another address",
            later_fragment(frame(CLIENT6, other6), 1448),
            &[],
        ),
        dropped(
            "IPv4 options to a VIP",
            tcp(frame(CLIENT4, vip4).ipv4_options(&[0x94, 0x04, 0, 0]), 80),
            &[DropIpOptions],
        ),
        dropped(
            "IPv6 hop-by-hop options to a VIP",
            udp(frame(CLIENT6, vip6).hop_by_hop(8), 53),
            &[DropIpOptions],
        ),
        dropped(
            "IPv6 destination options to a VIP",
            udp(frame(CLIENT6, vip6).destination_options(16), 53),
            &[DropIpOptions],
        ),
        unchanged(
            "IPv4 options to another address",
            tcp(frame(CLIENT4, other4).ipv4_options(&[0x94, 0x04, 0, 0]), 80),
            &[],
        ),
        unchanged(
            "IPv4 TCP to a VIP, cut short of its total length",
            tcp4[..tcp4.len() - 2].to_vec(),
            &[Truncated],
        ),
        unchanged(
            "IPv4 to a VIP, cut inside the IP header",
            tcp4[..14 + 12].to_vec(),
            &[Truncated],
        ),
        unchanged(
            "IPv6 UDP to a VIP, cut short of its payload length",
            udp6[..udp6.len() - 1].to_vec(),
            &[Truncated],
        ),
        unchanged(
            "TCP to a VIP with a 16-byte data offset",
            edited(tcp4.clone(), 14 + 20 + 12, &[0x40]),
            &[Malformed],
        ),
        unchanged(
            "UDP to a VIP with UDP length 4",
            edited(udp(frame(CLIENT4, vip4), 53), 14 + 20 + 4, &[0, 4]),
            &[Malformed],
        ),
        unchanged(
            "IPv4 TCP to another address",
            tcp(frame(CLIENT4, other4), 80),
            &[],
        ),
        unchanged(
            "IPv6 UDP to another address",
            udp(frame(CLIENT6, other6), 53),
            &[],
        ),
        unchanged(
            "TCP to a VIP port without a service",
            tcp(frame(CLIENT4, vip4), 8080),
            &[],
        ),
        unchanged(
            "UDP to a VIP's TCP-only port",
            udp(frame(CLIENT4, vip4), 80),
            &[],
        ),
        unchanged(
            "IPv6 TCP to a VIP port without a service",
            tcp(frame(CLIENT6, vip6), 443),
            &[],
        ),
        unchanged(
            "ARP request for a VIP",
            arp_request(
                CLIENT_MAC,
                Ipv4Addr::new(198, 18, 0, 1),
                Ipv4Addr::new(198, 18, 0, 100),
            ),
            &[],
        ),
        unchanged(
            "VRRP advert to 224.0.0.18",
            frame(ip("198.18.0.3"), ip("224.0.0.18"))
                .ttl(255)
                .proto(IPPROTO_VRRP, &vrrp),
            &[],
        ),
        unchanged(
            "VRRP to a VIP",
            frame(ip("198.18.0.3"), vip4)
                .ttl(255)
                .proto(IPPROTO_VRRP, &vrrp),
            &[],
        ),
        unchanged(
            "GRE to a VIP",
            frame(CLIENT4, vip4).proto(IPPROTO_GRE, &[0, 0, 0x08, 0x00]),
            &[],
        ),
    ];
    lab.check(cases);
    lab.finish();
}

#[test]
fn bpf_forward_decap() {
    require_privileged!();
    let (vip4, vip6) = (ip("198.18.0.100"), ip("fd00::100"));
    let (other4, other6) = (ip("198.18.0.200"), ip("fd00::200"));
    let (real4, real6) = (ip("198.18.2.10"), ip("fd00:2::10"));
    let mut lab = Lab::load(
        &LoadOptions::decap(log::LevelFilter::Off),
        &[Decap, DecapForeign],
    );
    lab.dataplane
        .set_decap_vips(&[vip4, vip6])
        .expect("setting the decap VIPs");
    lab.dataplane
        .set_decap_sources(&[IpAddr::V4(TUNNEL_SRC4), IpAddr::V6(TUNNEL_SRC6)])
        .expect("setting the directors");
    let tcp = |frame: Frame| segment(frame, Protocol::Tcp, CLIENT_PORT, 80);
    let ours4 = tcp(frame(CLIENT4, vip4));
    let ours6 = tcp(frame(CLIENT6, vip6));
    let tagged = tcp(frame(CLIENT4, vip4).vlan(10));
    let stripped = |what: &str, inner: &[u8], outer: IpAddr| {
        passed(
            format!("{what} for a local VIP: the inner packet"),
            ipip(inner, outer, mac(3)),
            dr(inner, mac(3)),
            &[Decap],
        )
    };
    let cases = vec![
        stripped("IPv4-in-IPv4", &ours4, real4),
        stripped("IPv4-in-IPv6", &ours4, real6),
        stripped("IPv6-in-IPv6", &ours6, real6),
        stripped("802.1Q IPv4-in-IPv4", &tagged, real4),
        unchanged(
            "IPv4-in-IPv4 for another address",
            ipip(&tcp(frame(CLIENT4, other4)), real4, mac(3)),
            &[],
        ),
        unchanged(
            "IPv4-in-IPv6 for another address",
            ipip(&tcp(frame(CLIENT4, other4)), real6, mac(3)),
            &[],
        ),
        unchanged(
            "IPv6-in-IPv6 for another address",
            ipip(&tcp(frame(CLIENT6, other6)), real6, mac(3)),
            &[],
        ),
        unchanged("plain TCP to a local VIP", ours4.clone(), &[]),
        // The outer source (at 14 + 12, or 14 + 8 in IPv6) is no director's.
        unchanged(
            "IPv4-in-IPv4 for a local VIP from a foreign source",
            edited(ipip(&ours4, real4, mac(3)), 26, &[198, 18, 9, 9]),
            &[DecapForeign],
        ),
        unchanged(
            "IPv6-in-IPv6 for a local VIP from a foreign source",
            edited(ipip(&ours6, real6, mac(3)), 22 + 15, &[9]),
            &[DecapForeign],
        ),
    ];
    lab.check(cases);
    lab.finish();
}

#[test]
fn bpf_forward_map_sync() {
    require_privileged!();
    let (two, sticky) = (ip("198.18.0.130"), ip("198.18.0.131"));
    let (gone, newcomer) = (ip("198.18.0.132"), ip("198.18.0.133"));
    let a = backend(ip("198.18.1.1"), 80, mac(1));
    let b = backend(ip("198.18.1.2"), 80, mac(2));
    let c = backend(ip("198.18.1.3"), 80, mac(3));
    let sticky_a = backend(ip("198.18.1.4"), 80, mac(4));
    let sticky_b = backend(ip("198.18.1.5"), 80, mac(5));
    let dr_service = |vip, backends| service(vip, 80, Protocol::Tcp, Mode::Dr, backends);
    let tcp = |client, vip, sport| segment(frame(client, vip), Protocol::Tcp, sport, 80);
    let mut lab = Lab::balancer(&[
        dr_service(two, vec![a.clone(), b.clone()]),
        with_affinity(
            dr_service(sticky, vec![sticky_a.clone(), sticky_b.clone()]),
            32,
        ),
        dr_service(gone, vec![c]),
    ]);
    let ab = [a.next_hop.mac, b.next_hop.mac];
    let mut flows_on_a = (CLIENT_PORT..CLIENT_PORT + 200)
        .filter(|&port| lab.backend_of(&tcp(CLIENT4, two, port), &ab) == 0);
    let (moved, idle) = (
        flows_on_a.next().expect("a flow on A"),
        flows_on_a.next().expect("a second flow on A"),
    );
    let sticky_ab = [sticky_a.next_hop.mac, sticky_b.next_hop.mac];
    let client_on_a = (10..100)
        .map(|n| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)))
        .find(|&client| lab.backend_of(&tcp(client, sticky, CLIENT_PORT), &sticky_ab) == 0)
        .expect("a client with affinity to A");
    lab.check(vec![sent(
        "the service about to go: new flow",
        tcp(CLIENT4, gone, CLIENT_PORT),
        dr(&tcp(CLIENT4, gone, CLIENT_PORT), mac(3)),
        &[FlowMiss, Tx],
    )]);

    // Both A backends removed from their services, the third service removed.
    let remaining = [
        dr_service(two, vec![b]),
        with_affinity(dr_service(sticky, vec![sticky_b]), 32),
    ];
    lab.apply(&remaining);
    lab.check(vec![
        sent(
            "a flow on a removed backend picks again",
            tcp(CLIENT4, two, moved),
            dr(&tcp(CLIENT4, two, moved), mac(2)),
            &[FlowMiss, Tx],
        ),
        sent(
            "then keeps its new backend",
            tcp(CLIENT4, two, moved),
            dr(&tcp(CLIENT4, two, moved), mac(2)),
            &[FlowHit, Tx],
        ),
        unchanged(
            "a removed service's VIP: TCP passes",
            tcp(CLIENT4, gone, CLIENT_PORT),
            &[],
        ),
        unchanged(
            "a removed service's VIP: fragments pass",
            frame(CLIENT4, gone)
                .fragment(1480, false)
                .proto(IPPROTO_UDP, &[7; 64]),
            &[],
        ),
    ]);

    // A new service whose backends are as many as were freed: whatever
    // slots they take, they start with no traffic, and no flow or client
    // of the other services is sent to them.
    let fresh = dr_service(newcomer, pool("198.18.5.", 50)[..3].to_vec());
    lab.apply(&[remaining.to_vec(), vec![fresh.clone()]].concat());
    let none = TrafficStats::default();
    let of_service = lab
        .dataplane
        .service_stats(&service_key(&fresh))
        .expect("service stats");
    lab.expect_eq("a new service's stats".into(), of_service, none);
    for new in &fresh.backends {
        let of_backend = lab
            .dataplane
            .backend_stats(new.addr, new.port)
            .expect("backend stats");
        lab.expect_eq(
            format!("new backend {}'s stats", new.addr),
            of_backend,
            none,
        );
    }
    lab.check(vec![
        sent(
            "a flow idle since its backend was removed picks again among its service's",
            tcp(CLIENT4, two, idle),
            dr(&tcp(CLIENT4, two, idle), mac(2)),
            &[FlowMiss, Tx],
        ),
        sent(
            "a client whose affinity backend was removed picks again among its service's",
            tcp(client_on_a, sticky, CLIENT_PORT + 1),
            dr(&tcp(client_on_a, sticky, CLIENT_PORT + 1), mac(5)),
            &[FlowMiss, Tx],
        ),
    ]);
    lab.finish();
}

/// Backend ids are reused once every id has been handed out. A flow made
/// for the id's earlier backend must not count as a flow-table hit on the
/// backend that holds the id now (it is a new flow, picked from the ring).
#[test]
fn bpf_forward_reused_backend_ids_start_new_flows() {
    require_privileged!();
    let vip = ip("198.18.0.140");
    let first = backend(ip("198.18.1.40"), 80, mac(40));
    let second = backend(ip("198.18.1.41"), 80, mac(41));
    let third = backend(ip("198.18.1.42"), 80, mac(42));
    let dr_service = |b: &BackendSpec| service(vip, 80, Protocol::Tcp, Mode::Dr, vec![b.clone()]);
    // Two backend ids in all, so the third backend gets the first's id.
    let options = LoadOptions {
        bpf_log: log::LevelFilter::Off,
        ring_size: 1009,
        max_backends: 3,
        ..LoadOptions::default()
    };
    let mut lab = Lab::load(&options, OUTCOMES);
    let syn = segment(frame(CLIENT4, vip), Protocol::Tcp, CLIENT_PORT, 80);
    lab.apply(&[dr_service(&first)]);
    lab.check(vec![sent(
        "the flow starts on the first backend",
        syn.clone(),
        dr(&syn, mac(40)),
        &[FlowMiss, Tx],
    )]);
    lab.apply(&[dr_service(&second)]);
    lab.apply(&[dr_service(&third)]);
    lab.check(vec![
        sent(
            "its id now belongs to the third backend: a new flow there",
            syn.clone(),
            dr(&syn, mac(42)),
            &[FlowMiss, Tx],
        ),
        sent(
            "then a flow-table hit",
            syn.clone(),
            dr(&syn, mac(42)),
            &[FlowHit, Tx],
        ),
    ]);
    lab.finish();
}

/// Ring updates write only the slots that differ from what the idle ring
/// holds: after three tables in a row (the third written over the first),
/// every new flow must land on a backend of the latest set.
#[test]
fn bpf_forward_successive_rings_hold_the_latest_table() {
    require_privileged!();
    let vip = ip("198.18.0.150");
    let [b1, b2, b3] = [50, 51, 52].map(|n| backend(ip(&format!("198.18.1.{n}")), 80, mac(n)));
    let dr_service = |backends: &[&BackendSpec]| {
        let backends = backends.iter().map(|b| (*b).clone()).collect();
        service(vip, 80, Protocol::Tcp, Mode::Dr, backends)
    };
    let mut lab = Lab::balancer(&[dr_service(&[&b1, &b2])]);
    lab.apply(&[dr_service(&[&b1, &b2, &b3])]);
    lab.apply(&[dr_service(&[&b1, &b3])]);
    let latest = [b1.next_hop.mac, b3.next_hop.mac];
    let mut on = [0; 2];
    for port in CLIENT_PORT..CLIENT_PORT + 300 {
        let syn = segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
        on[lab.backend_of(&syn, &latest)] += 1;
    }
    assert!(on[0] > 0 && on[1] > 0, "new flows per backend: {on:?}");
    lab.finish();
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

/// The flow table is per CPU, with a shared table behind it: a flow that
/// started on one CPU and then shows up on another keeps its backend even
/// after the ring changed (here: its backend drained).
#[test]
fn bpf_forward_flows_keep_their_backend_on_another_cpu() {
    require_privileged!();
    let vip = ip("198.18.0.160");
    let [b1, b2] = [60, 61].map(|n| backend(ip(&format!("198.18.1.{n}")), 80, mac(n)));
    let mut lab = Lab::balancer(&[service(
        vip,
        80,
        Protocol::Tcp,
        Mode::Dr,
        vec![b1.clone(), b2.clone()],
    )]);
    let (first, other) = this_and_another_cpu();
    let tcp = |port| segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
    let macs = [b1.next_hop.mac, b2.next_hop.mac];
    let port = (CLIENT_PORT..CLIENT_PORT + 200)
        .find(|&port| lab.backend_of(&tcp(port), &macs) == 0)
        .expect("a flow on b1");
    let drained = BackendSpec {
        drain: true,
        ..b1.clone()
    };
    lab.apply(&[service(vip, 80, Protocol::Tcp, Mode::Dr, vec![drained, b2])]);
    move_to_cpu(other);
    lab.check(vec![sent(
        format!("the flow, first seen on CPU {first}, now on CPU {other}: still b1"),
        tcp(port),
        dr(&tcp(port), mac(60)),
        &[FlowHit, Tx],
    )]);
    lab.finish();
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

/// A bare SYN makes a flow half-open (`FLOW_OPENING`) in this CPU's cache
/// only; the client's next segment without SYN clears it and writes the
/// flow to the shared table (lazily: a SYN flood never reaches it); a FIN
/// or RST marks it closing; a SYN on a known flow, its port reused, starts
/// a new connection and drops the shared entry. Each change stamps the
/// time (the agent counts the flow inactive from then). Segments that
/// change nothing write nothing, and every one is forwarded as before.
#[test]
fn bpf_forward_syn_ack_fin_and_rst_mark_a_flow() {
    require_privileged!();
    let vip = ip("198.18.0.170");
    let b = backend(ip("198.18.1.70"), 80, mac(70));
    let mut lab = Lab::balancer(&[service(vip, 80, Protocol::Tcp, Mode::Dr, vec![b])]);
    let table = lab.dataplane.flow_table().expect("the shared flow table");
    let key = tcp_flow_key(CLIENT4, vip, CLIENT_PORT);
    let cpu = sched_getcpu().expect("sched_getcpu");
    pin_to_cpu(cpu).expect("staying on one CPU");
    // The shared entry, if any, and this CPU's.
    let entries = |lab: &Lab| {
        let own = lab
            .dataplane
            .cpu_flow(&key, cpu)
            .expect("reading XLB_FLOW_CACHE");
        (table.get(&key), own.expect("this CPU's entry"))
    };
    let client = || frame(CLIENT4, vip);
    let syn = client().tcp_syn(CLIENT_PORT, 80);
    let ack = segment(client(), Protocol::Tcp, CLIENT_PORT, 80);
    let fin = client().tcp_fin(CLIENT_PORT, 80, 1018, 2000);
    let rst = client().tcp_rst(CLIENT_PORT, 80, 1019);
    let forwarded =
        |what: &str, input: &[u8], counted| sent(what, input.to_vec(), dr(input, mac(70)), counted);
    let shared_agrees = |lab: &mut Lab, what: &str| {
        let (shared, own) = entries(lab);
        let agreed = shared.is_some_and(|shared| agree(&own, &shared));
        lab.expect_eq(format!("{what}: the shared entry agrees"), agreed, true);
    };

    lab.check(vec![forwarded(
        "a SYN starts the flow",
        &syn,
        &[FlowMiss, Tx],
    )]);
    let opening = entries(&lab);
    lab.expect_eq("flags of a new flow".into(), opening.1.flags, FLOW_OPENING);
    lab.expect_eq("no shared entry for a SYN".into(), opening.0, None);

    std::thread::sleep(CLOCK_STEP);
    lab.check(vec![forwarded(
        "the ACK that completes the handshake",
        &ack,
        &[FlowHit, Tx],
    )]);
    let established = entries(&lab);
    lab.expect_eq("flags after an ACK".into(), established.1.flags, 0);
    lab.expect_eq(
        "the ACK stamped the entry".into(),
        established.1.last_seen_ns > opening.1.last_seen_ns,
        true,
    );
    shared_agrees(&mut lab, "after the handshake");

    std::thread::sleep(CLOCK_STEP);
    lab.check(vec![
        forwarded("an ACK of an established flow", &ack, &[FlowHit, Tx]),
        forwarded(
            "a SYN on an established flow: the port reused, a new connection",
            &syn,
            &[FlowMiss, ResetFlow, Tx],
        ),
    ]);
    let reopened = entries(&lab);
    lab.expect_eq("flags after the SYN".into(), reopened.1.flags, FLOW_OPENING);
    lab.expect_eq(
        "the old connection's shared entry, dropped".into(),
        reopened.0,
        None,
    );
    lab.check(vec![forwarded(
        "the new handshake's ACK",
        &ack,
        &[FlowHit, Tx],
    )]);
    lab.expect_eq(
        "flags after the new handshake".into(),
        entries(&lab).1.flags,
        0,
    );
    shared_agrees(&mut lab, "after the new handshake");
    let established = entries(&lab);

    std::thread::sleep(CLOCK_STEP);
    lab.check(vec![forwarded("the client's FIN", &fin, &[FlowHit, Tx])]);
    let closing = entries(&lab);
    lab.expect_eq("flags after the FIN".into(), closing.1.flags, FLOW_CLOSING);
    lab.expect_eq(
        "the FIN stamped the entry".into(),
        closing.1.last_seen_ns > established.1.last_seen_ns,
        true,
    );
    shared_agrees(&mut lab, "after the FIN");
    std::thread::sleep(CLOCK_STEP);
    lab.check(vec![
        forwarded("the FIN again", &fin, &[FlowHit, Tx]),
        forwarded("an ACK of the server's FIN", &ack, &[FlowHit, Tx]),
    ]);
    lab.expect_eq(
        "both entries after a second FIN and an ACK".into(),
        entries(&lab),
        closing,
    );

    lab.check(vec![forwarded(
        "a SYN reusing the port of a closing flow",
        &syn,
        &[FlowMiss, ResetFlow, Tx],
    )]);
    let reused = entries(&lab);
    lab.expect_eq("flags after the SYN".into(), reused.1.flags, FLOW_OPENING);
    lab.check(vec![forwarded(
        "the same SYN retransmitted",
        &syn,
        &[FlowHit, Tx],
    )]);
    // The retransmission restamps this CPU's entry with the jiffies of its
    // arrival, which may have ticked since the first SYN.
    let retried = entries(&lab);
    lab.expect_eq(
        "both entries after the retransmission, the stamp aside".into(),
        (
            retried.0,
            CachedFlow {
                seen_jiffies: reused.1.seen_jiffies,
                ..retried.1
            },
        ),
        reused,
    );
    lab.expect_eq(
        "the retransmission's stamp is no older".into(),
        retried.1.seen_jiffies.wrapping_sub(reused.1.seen_jiffies) < 1000,
        true,
    );
    lab.check(vec![forwarded(
        "a RST during the handshake",
        &rst,
        &[FlowHit, Tx],
    )]);
    lab.expect_eq(
        "a RST during the handshake leaves it half-open, for the SYN it retries".into(),
        entries(&lab).1.flags,
        FLOW_OPENING,
    );
    shared_agrees(&mut lab, "after a RST, which writes the shared entry");
    lab.check(vec![
        forwarded("the same SYN again", &syn, &[FlowHit, Tx]),
        forwarded("the handshake's ACK", &ack, &[FlowHit, Tx]),
        forwarded("a RST", &rst, &[FlowHit, Tx]),
    ]);
    lab.expect_eq(
        "flags after the RST".into(),
        entries(&lab).1.flags,
        FLOW_CLOSING,
    );
    shared_agrees(&mut lab, "after the RST");
    lab.finish();
}

/// A FIN on another CPU than the flow's first marks the shared entry
/// (found there, not in that CPU's table), and a SYN back on the first
/// CPU starts a new connection that no CPU's stale copy contradicts.
#[test]
fn bpf_forward_closing_marks_follow_a_flow_across_cpus() {
    require_privileged!();
    let vip = ip("198.18.0.171");
    let b = backend(ip("198.18.1.71"), 80, mac(71));
    let mut lab = Lab::balancer(&[service(vip, 80, Protocol::Tcp, Mode::Dr, vec![b])]);
    let table = lab.dataplane.flow_table().expect("the shared flow table");
    let key = tcp_flow_key(CLIENT4, vip, CLIENT_PORT);
    let flags = |table: &FlowTable| table.get(&key).expect("the flow's shared entry").flags;
    let own = |lab: &Lab, cpu| {
        lab.dataplane
            .cpu_flow(&key, cpu)
            .expect("reading XLB_FLOW_CACHE")
    };
    let syn = frame(CLIENT4, vip).tcp_syn(CLIENT_PORT, 80);
    let ack = segment(frame(CLIENT4, vip), Protocol::Tcp, CLIENT_PORT, 80);
    let fin = frame(CLIENT4, vip).tcp_fin(CLIENT_PORT, 80, 1018, 2000);
    let (first, other) = this_and_another_cpu();
    let sent_on = |cpu, what: &str, input: &[u8], counted| {
        move_to_cpu(cpu);
        let output = dr(input, mac(71));
        sent(
            format!("{what} on CPU {cpu}"),
            input.to_vec(),
            output,
            counted,
        )
    };
    lab.check(vec![
        sent_on(first, "a SYN", &syn, &[FlowMiss, Tx]),
        sent_on(first, "an ACK", &ack, &[FlowHit, Tx]),
    ]);
    lab.expect_eq(
        format!("CPU {other}'s own entry before its first segment"),
        own(&lab, other),
        None,
    );
    lab.check(vec![sent_on(other, "a FIN", &fin, &[FlowHit, Tx])]);
    lab.expect_eq(
        format!("flags after a FIN on CPU {other}"),
        flags(&table),
        FLOW_CLOSING,
    );
    lab.expect_eq(
        format!("CPU {other}'s own entry after the FIN"),
        own(&lab, other).map(|f| f.flags),
        Some(FLOW_CLOSING),
    );
    // The port reused on the first CPU: a new connection, which drops the
    // old one's shared entry and stamps the flow's bucket.
    // (Some jiffies later: a SYN stamps its bucket in jiffies.)
    std::thread::sleep(CLOCK_STEP);
    lab.check(vec![sent_on(
        first,
        "a SYN back",
        &syn,
        &[FlowMiss, ResetFlow, Tx],
    )]);
    lab.expect_eq(
        format!("the shared entry after a SYN on CPU {first}"),
        table.get(&key),
        None,
    );
    lab.expect_eq(
        format!("CPU {first}'s own entry after the SYN"),
        own(&lab, first).map(|f| f.flags),
        Some(FLOW_OPENING),
    );
    lab.expect_eq(
        format!("CPU {other}'s copy of the old connection after the SYN"),
        own(&lab, other).map(|f| f.flags),
        Some(FLOW_CLOSING),
    );
    // That copy is older than the SYN's stamp, so not trusted; the new
    // connection is not shared yet: the other CPU finds its backend by the
    // ring, as its SYN did, and caches it in place of the old copy.
    lab.check(vec![sent_on(
        other,
        "the new handshake's ACK",
        &ack,
        &[FlowMiss, Tx],
    )]);
    lab.expect_eq(
        format!("CPU {other}'s entry after the ACK"),
        own(&lab, other).map(|f| f.flags),
        Some(0),
    );
    lab.check(vec![sent_on(first, "an ACK", &ack, &[FlowHit, Tx])]);
    lab.expect_eq(
        format!("flags after the ACK on CPU {first}"),
        flags(&table),
        0,
    );
    lab.finish();
}

/// A walk of the shared flow table counts each backend's active and
/// inactive flows, and deletes the entries of removed backends and expired
/// UDP flows, keeping established, half-open and closing ones.
#[test]
fn bpf_forward_a_walk_counts_flows_and_prunes_the_dead() {
    require_privileged!();
    let (tcp_vip, udp_vip, gone_vip) = (ip("198.18.0.172"), ip("198.18.0.173"), ip("198.18.0.174"));
    let b = backend(ip("198.18.1.72"), 80, mac(72));
    let u = backend(ip("198.18.1.73"), 80, mac(73));
    let g = backend(ip("198.18.1.74"), 80, mac(74));
    let g2 = backend(ip("198.18.1.75"), 80, mac(75));
    let services = |gone: &BackendSpec| {
        [
            service(tcp_vip, 80, Protocol::Tcp, Mode::Dr, vec![b.clone()]),
            service(udp_vip, 80, Protocol::Udp, Mode::Dr, vec![u.clone()]),
            service(gone_vip, 80, Protocol::Tcp, Mode::Dr, vec![gone.clone()]),
        ]
    };
    let mut lab = Lab::balancer(&services(&g));
    let mut table = lab.dataplane.flow_table().expect("the shared flow table");
    let client = |vip| frame(CLIENT4, vip);
    let syn = |vip, port| client(vip).tcp_syn(port, 80);
    let ack = |vip, port| segment(client(vip), Protocol::Tcp, port, 80);
    let fin = |vip, port| client(vip).tcp_fin(port, 80, 1018, 2000);
    let rst = |vip, port| client(vip).tcp_rst(port, 80, 1019);
    let datagram = || segment(client(udp_vip), Protocol::Udp, CLIENT_PORT, 80);
    // The shared table gets a flow once it is more than a SYN or a single
    // datagram: a completed handshake, a FIN or RST, a refresh.
    let frames = [
        // Established, half-open (a RST during its handshake, the SYN to be
        // retried) and closing flows to b.
        syn(tcp_vip, CLIENT_PORT),
        ack(tcp_vip, CLIENT_PORT),
        syn(tcp_vip, CLIENT_PORT + 1),
        rst(tcp_vip, CLIENT_PORT + 1),
        syn(tcp_vip, CLIENT_PORT + 2),
        ack(tcp_vip, CLIENT_PORT + 2),
        fin(tcp_vip, CLIENT_PORT + 2),
        // A UDP flow to u, an established one to g.
        datagram(),
        syn(gone_vip, CLIENT_PORT),
        ack(gone_vip, CLIENT_PORT),
    ];
    pin_to_cpu(sched_getcpu().expect("sched_getcpu")).expect("staying on one CPU");
    for frame in &frames {
        let (action, _) = run(lab.dataplane.program(), frame).expect("test run");
        assert_eq!(action, XdpAction::Tx, "{}", hex(frame));
    }
    // The UDP flow's refresh, past 100 jiffies (a second at HZ=100).
    std::thread::sleep(Duration::from_millis(1100));
    let (action, _) = run(lab.dataplane.program(), &datagram()).expect("test run");
    assert_eq!(action, XdpAction::Tx);

    let slot = |vip, protocol, b: &BackendSpec| {
        let spec = service(vip, 80, protocol, Mode::Dr, vec![b.clone()]);
        lab.dataplane
            .backend_slot(&service_key(&spec), b.addr, b.port)
            .expect("a slot")
    };
    let (tcp_slot, udp_slot, gone_slot) = (
        slot(tcp_vip, Protocol::Tcp, &b),
        slot(udp_vip, Protocol::Udp, &u),
        slot(gone_vip, Protocol::Tcp, &g),
    );
    let counts = |active, inactive| FlowCounts { active, inactive };
    let go_on = AtomicBool::new(false);
    let udp_timeout = Duration::from_secs(30);
    let walk = table.walk(udp_timeout, &go_on).expect("a walk");
    lab.expect_eq(
        "the first walk".into(),
        walk,
        Walk {
            counts: FlowCountsBySlot::from([
                (tcp_slot, counts(1, 2)),
                (udp_slot, counts(1, 0)),
                (gone_slot, counts(1, 0)),
            ]),
            entries: 5,
            pruned: 0,
        },
    );

    // The gone service's backend replaced; the UDP flow's timeout passed.
    lab.apply(&services(&g2));
    let walk = table.walk(Duration::ZERO, &go_on).expect("a walk");
    lab.expect_eq(
        "the walk that prunes".into(),
        walk,
        Walk {
            counts: FlowCountsBySlot::from([(tcp_slot, counts(1, 2))]),
            entries: 5,
            pruned: 2,
        },
    );
    let walk = table.walk(Duration::ZERO, &go_on).expect("a walk");
    lab.expect_eq("entries left".into(), walk.entries, 3);
    lab.expect_eq("pruned again".into(), walk.pruned, 0);
    for (vip, what) in [
        (udp_vip, "the UDP flow"),
        (gone_vip, "the gone backend's flow"),
    ] {
        let key = FlowKey {
            proto: if vip == udp_vip { PROTO_UDP } else { PROTO_TCP },
            ..tcp_flow_key(CLIENT4, vip, CLIENT_PORT)
        };
        lab.expect_eq(format!("{what}, pruned"), table.get(&key), None);
    }

    let stop = AtomicBool::new(true);
    lab.expect_eq(
        "a walk told to stop".into(),
        matches!(table.walk(udp_timeout, &stop), Err(WalkError::Stopped)),
        true,
    );
    lab.finish();
}

/// With a tunnel source prefix, the outer source of IP-in-IP varies per
/// flow over the prefix's host bits (so backends' NICs spread tunnels over
/// their queues), stays the same for a flow, and the outer IPv4 header's
/// checksum holds; IPv4 and IPv6.
#[test]
fn bpf_forward_tunnel_sources_spread_per_flow() {
    require_privileged!();
    let (vip4, vip6) = (ip("198.18.0.190"), ip("fd00::190"));
    let services = [
        service(
            vip4,
            80,
            Protocol::Tcp,
            Mode::Ipip,
            vec![backend(ip("198.18.1.90"), 80, mac(90))],
        ),
        service(
            vip6,
            80,
            Protocol::Tcp,
            Mode::Ipip,
            vec![backend(ip("fd00::1:90"), 80, mac(91))],
        ),
    ];
    let mut lab = Lab::balancer(&[]);
    let spread = DirectorSettings {
        tunnel_spread_v4: 2,
        tunnel_spread_v6: 2,
        ..settings()
    };
    lab.apply_with(&services, &spread);
    // The outer source of a flow's packet, and whether its checksums hold.
    let outer_source = |lab: &mut Lab, client: IpAddr, vip: IpAddr, port: u16| {
        let input = segment(frame(client, vip), Protocol::Tcp, port, 80);
        let (action, out) = run(lab.dataplane.program(), &input).expect("test run");
        assert_eq!(action, XdpAction::Tx, "{}", hex(&input));
        verify_checksums(&out).expect("the outer header's checksum");
        match vip {
            IpAddr::V4(_) => IpAddr::from(<[u8; 4]>::try_from(&out[26..30]).unwrap()),
            IpAddr::V6(_) => IpAddr::from(<[u8; 16]>::try_from(&out[22..38]).unwrap()),
        }
    };
    for (client, vip, tunnel) in [
        (CLIENT4, vip4, IpAddr::V4(TUNNEL_SRC4)),
        (CLIENT6, vip6, IpAddr::V6(TUNNEL_SRC6)),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for port in 40000..40032 {
            let source = outer_source(&mut lab, client, vip, port);
            let again = outer_source(&mut lab, client, vip, port);
            lab.expect_eq(format!("flow {port}: the same source twice"), again, source);
            seen.insert(source);
        }
        // The prefix of the tunnel source with its last two bits free.
        let within = |a: &IpAddr| match (a, tunnel) {
            (IpAddr::V4(a), IpAddr::V4(t)) => u32::from(*a) >> 2 == u32::from(t) >> 2,
            (IpAddr::V6(a), IpAddr::V6(t)) => u128::from(*a) >> 2 == u128::from(t) >> 2,
            _ => false,
        };
        let outside: Vec<_> = seen.iter().filter(|a| !within(a)).collect();
        lab.expect_eq(format!("{tunnel}/..: sources outside"), outside.len(), 0);
        lab.expect_eq(
            format!("{tunnel}/..: distinct sources of 32 flows"),
            seen.len(),
            4,
        );
    }
    lab.finish();
}

/// Only frames addressed to the interface's own MAC are balanced: a VIP's
/// packet to another host's MAC, to broadcast or to multicast is the
/// kernel's, untouched.
#[test]
fn bpf_forward_only_frames_for_our_mac() {
    require_privileged!();
    let (vip4, vip6) = (ip("198.18.0.180"), ip("fd00::180"));
    let mut lab = Lab::balancer(&[
        service(
            vip4,
            80,
            Protocol::Tcp,
            Mode::Dr,
            vec![backend(ip("198.18.1.80"), 80, mac(80))],
        ),
        service(
            vip6,
            80,
            Protocol::Tcp,
            Mode::Dr,
            vec![backend(ip("fd00:1::80"), 80, mac(81))],
        ),
    ]);
    let to = |vip: IpAddr, dst_mac| {
        frame(client_of(vip), vip)
            .macs(CLIENT_MAC, dst_mac)
            .tcp_syn(CLIENT_PORT, 80)
    };
    let syn4 = frame(CLIENT4, vip4).tcp_syn(CLIENT_PORT, 80);
    lab.check(vec![
        unchanged(
            "a VIP's SYN to another host's MAC",
            to(vip4, mac(99)),
            &[ForeignMac],
        ),
        unchanged(
            "a VIP's SYN to broadcast",
            to(vip4, [0xff; 6]),
            &[ForeignMac],
        ),
        unchanged(
            "a VIP's SYN to an IPv4 multicast MAC",
            to(vip4, [0x01, 0x00, 0x5e, 0, 0, 1]),
            &[ForeignMac],
        ),
        unchanged(
            "an IPv6 VIP's SYN to an IPv6 multicast MAC",
            to(vip6, [0x33, 0x33, 0, 0, 0, 1]),
            &[ForeignMac],
        ),
        unchanged(
            "an IPv6 VIP's SYN to another host's MAC",
            to(vip6, mac(99)),
            &[ForeignMac],
        ),
        // The frame leaves from the interface's own MAC.
        sent(
            "the same SYN to our MAC",
            syn4.clone(),
            dr(&syn4, mac(80)),
            &[FlowMiss, Tx],
        ),
    ]);
    lab.finish();
}

/// A RST or FIN that finds no flow is forwarded by the ring and leaves no
/// state; a bare ACK that finds none is forwarded and recorded.
#[test]
fn bpf_forward_misses_of_closing_segments_keep_no_state() {
    require_privileged!();
    let vip = ip("198.18.0.181");
    let mut lab = Lab::balancer(&[service(
        vip,
        80,
        Protocol::Tcp,
        Mode::Dr,
        vec![backend(ip("198.18.1.81"), 80, mac(81))],
    )]);
    let table = lab.dataplane.flow_table().expect("the shared flow table");
    let rst = frame(CLIENT4, vip).tcp_rst(40001, 80, 7);
    let fin = frame(CLIENT4, vip).tcp_fin(40002, 80, 7, 9);
    let ack = segment(frame(CLIENT4, vip), Protocol::Tcp, 40003, 80);
    lab.check(vec![
        sent(
            "a RST of no flow",
            rst.clone(),
            dr(&rst, mac(81)),
            &[FlowMiss, StatelessMiss, Tx],
        ),
        sent(
            "a FIN of no flow",
            fin.clone(),
            dr(&fin, mac(81)),
            &[FlowMiss, StatelessMiss, Tx],
        ),
        sent(
            "an ACK of no flow",
            ack.clone(),
            dr(&ack, mac(81)),
            &[FlowMiss, Tx],
        ),
    ]);
    for (port, recorded) in [(40001, false), (40002, false), (40003, true)] {
        lab.expect_eq(
            format!("an entry for port {port}"),
            table.get(&tcp_flow_key(CLIENT4, vip, port)).is_some(),
            recorded,
        );
    }
    lab.finish();
}

/// Over its new-flow rate a CPU forwards new flows by the ring alone;
/// established flows keep their entries. With the guard off (0) every
/// new flow is recorded.
#[test]
fn bpf_forward_flood_guard() {
    require_privileged!();
    let vip = ip("198.18.0.182");
    let services = [service(
        vip,
        80,
        Protocol::Tcp,
        Mode::Dr,
        vec![backend(ip("198.18.1.82"), 80, mac(82))],
    )];
    let syn = |port| frame(CLIENT4, vip).tcp_syn(port, 80);
    let ack = |port| segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
    let forwarded = |what: String, input: Vec<u8>, counted| {
        let output = dr(&input, mac(82));
        sent(what, input, output, counted)
    };
    for (cap, recorded) in [(2, [true, true, false]), (0, [true, true, true])] {
        let mut lab = Lab::balancer(&[]);
        let guarded = DirectorSettings {
            new_flows_per_cpu: cap,
            ..settings()
        };
        lab.apply_with(&services, &guarded);
        let cpu = sched_getcpu().expect("sched_getcpu");
        pin_to_cpu(cpu).expect("staying on one CPU");
        // New flows are recorded in this CPU's cache (the shared table
        // gets them later, lazily).
        let cached = |lab: &Lab, port| {
            lab.dataplane
                .cpu_flow(&tcp_flow_key(CLIENT4, vip, port), cpu)
                .expect("reading XLB_FLOW_CACHE")
                .is_some()
        };
        let mut cases = Vec::new();
        for (n, port) in (40001..=40003).enumerate() {
            let counted: &'static [Counter] = if recorded[n] {
                &[FlowMiss, Tx]
            } else {
                &[FlowMiss, FloodStateless, Tx]
            };
            cases.push(forwarded(
                format!("cap {cap}: new flow {}", n + 1),
                syn(port),
                counted,
            ));
        }
        cases.push(forwarded(
            format!("cap {cap}: the first flow's ACK, over the cap"),
            ack(40001),
            &[FlowHit, Tx],
        ));
        // The first flow's port reused: over the cap the old entries go and
        // the ring alone forwards the new connection.
        cases.push(forwarded(
            format!("cap {cap}: a SYN reusing the first flow's port"),
            syn(40001),
            if cap == 0 {
                &[FlowMiss, ResetFlow, Tx]
            } else {
                &[FlowMiss, ResetFlow, FloodStateless, Tx]
            },
        ));
        lab.check(cases);
        lab.expect_eq(
            format!("cap {cap}: an entry for the reused port"),
            cached(&lab, 40001),
            cap == 0,
        );
        for (n, port) in (40002..=40003).enumerate().map(|(n, p)| (n + 1, p)) {
            lab.expect_eq(
                format!("cap {cap}: an entry for new flow {}", n + 1),
                cached(&lab, port),
                recorded[n],
            );
        }
        lab.finish();
    }
}

/// ICMP errors are forwarded only to the VIP they quote; what may not be
/// answered with ICMP is dropped; generated ICMP is rate-limited; lengths
/// come from the IP header; a NAT VIP's packet needs a good checksum.
#[test]
fn bpf_forward_icmp_and_length_rules() {
    require_privileged!();
    let (dr4, ipip4, nat4, dr6) = (
        ip("198.18.0.183"),
        ip("198.18.0.184"),
        ip("198.18.0.185"),
        ip("fd00::183"),
    );
    let ipip_backend = ip("198.18.2.84");
    let services = [
        service(
            dr4,
            80,
            Protocol::Tcp,
            Mode::Dr,
            vec![backend(ip("198.18.1.83"), 80, mac(83))],
        ),
        service(
            dr4,
            53,
            Protocol::Udp,
            Mode::Dr,
            vec![backend(ip("198.18.1.83"), 53, mac(83))],
        ),
        service(
            ipip4,
            80,
            Protocol::Tcp,
            Mode::Ipip,
            vec![backend(ipip_backend, 80, mac(84))],
        ),
        service(
            nat4,
            80,
            Protocol::Tcp,
            Mode::Nat,
            vec![backend(ip("198.18.3.85"), 8080, mac(85))],
        ),
        service(
            dr6,
            53,
            Protocol::Udp,
            Mode::Dr,
            vec![backend(ip("fd00:1::83"), 53, mac(86))],
        ),
    ];
    let mut lab = Lab::balancer(&[]);
    lab.apply_with(
        &services,
        &DirectorSettings {
            icmp_per_cpu: 1,
            ..settings()
        },
    );
    let director = ip("198.18.0.2");
    let router = ip("198.18.9.1");
    let about_dr = from_vip(dr4, Protocol::Tcp, 80, CLIENT_PORT);
    let error_to = |dst: IpAddr| {
        let message = icmp(router, dst, 3, 4, [0, 0, 5, 0], &about_dr);
        frame(router, dst).proto(IPPROTO_ICMP, &message)
    };
    // Not DF, and too big to tunnel at MTU 1320.
    let fragmentable =
        frame(CLIENT4, ipip4)
            .may_fragment()
            .tcp_data(40010, 80, 1, 1, &[b'x'; 1301 - 40]);
    // An ICMP error about an IP-in-IP flow, itself too big to tunnel.
    let syn = frame(CLIENT4, ipip4).tcp_syn(40011, 80);
    let big_quote = frame(ipip4, CLIENT4).tcp_data(80, 40011, 1, 1, &[b'y'; 1300])[14..].to_vec();
    let big_error = icmp_error(ipip4, FRAG_NEEDED, &big_quote);
    let too_big_df = |port| sized(CLIENT4, ipip4, port, 1301);
    let (first, second) = (too_big_df(40012), too_big_df(40013));
    // An IPv4 packet of 20 bytes with UDP as its protocol, then Ethernet
    // padding that looks like ports.
    let mut padded = frame(CLIENT4, dr4).proto(IPPROTO_UDP, &[]);
    padded.extend_from_slice(&[0x9c, 0x40, 0x00, 0x35, 0x00, 0x08, 0, 0]);
    padded.resize(60, 0);
    let mut zero_payload = segment(frame(CLIENT6, dr6), Protocol::Udp, CLIENT_PORT, 53);
    zero_payload[18..20].copy_from_slice(&[0, 0]);
    let bad_checksum = {
        let mut f = segment(frame(CLIENT4, nat4), Protocol::Tcp, CLIENT_PORT, 80);
        f[24] ^= 0xff;
        f
    };
    lab.check(vec![
        unchanged(
            "an ICMP error quoting a VIP's packet, to another VIP",
            error_to(nat4),
            &[IcmpMismatch],
        ),
        unchanged(
            "an ICMP error quoting a VIP's packet, to the director: the kernel's at once",
            error_to(director),
            &[],
        ),
        dropped(
            "IP-in-IP: too big without DF is dropped, not answered",
            fragmentable,
            &[FlowMiss, DropTooBig],
        ),
        sent(
            "IP-in-IP: a new flow",
            syn.clone(),
            ipip(&syn, ipip_backend, mac(84)),
            &[FlowMiss, Tx],
        ),
        dropped(
            "IP-in-IP: an ICMP error too big to tunnel is never answered with ICMP",
            big_error,
            &[FlowHit, DropTooBig],
        ),
        sent(
            "IP-in-IP: too big with DF is answered",
            first.clone(),
            too_big(&first, CLIENT4, ipip4, 1300),
            &[FlowMiss, IcmpTooBig, Tx],
        ),
        dropped(
            "IP-in-IP: the next answer in the same second is over the ICMP rate",
            second,
            &[FlowMiss, IcmpRateLimited],
        ),
        unchanged(
            "Ethernet padding past the IP length is no UDP header",
            padded,
            &[Malformed],
        ),
        dropped(
            "IPv6 with payload length 0 and no hop-by-hop header",
            zero_payload,
            &[DropZeroPayload],
        ),
        dropped(
            "NAT: a bad IPv4 header checksum",
            bad_checksum,
            &[DropBadChecksum],
        ),
    ]);
    lab.finish();
}

/// The flow hash takes the director's seed: the same seed picks the same
/// backends on every director, another seed other ones.
#[test]
fn bpf_forward_hash_seed() {
    require_privileged!();
    let vip = ip("198.18.0.186");
    let pool = pool("198.18.4.", 60);
    let macs = macs(&pool);
    let services = [service(vip, 80, Protocol::Tcp, Mode::Dr, pool)];
    let choices = |seed: u32| {
        let mut lab = Lab::balancer(&[]);
        lab.apply_with(
            &services,
            &DirectorSettings {
                hash_seed: seed,
                ..settings()
            },
        );
        let choice: Vec<usize> = (0..64)
            .map(|n| lab.backend_of(&frame(CLIENT4, vip).tcp_syn(41000 + n, 80), &macs))
            .collect();
        lab.finish();
        choice
    };
    let seed = 0x5eed_1234;
    let (plain, seeded, again) = (choices(0), choices(seed), choices(seed));
    assert_eq!(seeded, again, "one seed, one choice per flow");
    let moved = plain.iter().zip(&seeded).filter(|(a, b)| a != b).count();
    // Four backends: a quarter of flows stay by chance.
    assert!(moved >= 32, "only {moved} of 64 flows moved with the seed");
}

/// After a drain, a SYN that reuses the port of a flow to the drained
/// backend is a new connection for another backend, while the old flow's
/// segments still reach the drained one; a client stuck to a drained
/// backend by affinity keeps it.
#[test]
fn bpf_forward_a_drained_backend_gets_no_reused_port() {
    require_privileged!();
    let (vip, sticky) = (ip("198.18.0.187"), ip("198.18.0.188"));
    let a = backend(ip("198.18.1.87"), 80, mac(87));
    let b = backend(ip("198.18.1.88"), 80, mac(88));
    let macs = [mac(87), mac(88)];
    let drained = |spec: &BackendSpec, drain: bool| BackendSpec {
        drain,
        ..spec.clone()
    };
    // Which backend is drained: none, or `a` for the ring's service and the
    // client's sticky one for the affinity service.
    let services = |drain: Option<usize>| {
        let mut sticky_pool = vec![a.clone(), b.clone()];
        if let Some(n) = drain {
            sticky_pool[n].drain = true;
        }
        vec![
            service(
                vip,
                80,
                Protocol::Tcp,
                Mode::Dr,
                vec![drained(&a, drain.is_some()), b.clone()],
            ),
            with_affinity(
                service(sticky, 80, Protocol::Tcp, Mode::Dr, sticky_pool),
                32,
            ),
        ]
    };
    let mut lab = Lab::balancer(&services(None));
    let syn = |vip, port| frame(CLIENT4, vip).tcp_syn(port, 80);
    let ack = |vip, port| segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
    // A port whose flow the ring gives to `a`, and the client's sticky backend.
    let port = (42000..42100)
        .find(|&port| lab.backend_of(&syn(vip, port), &macs) == 0)
        .expect("a port for the first backend");
    let stuck = lab.backend_of(&syn(sticky, 43000), &macs);
    lab.backend_of(&ack(vip, port), &macs);

    lab.apply(&services(Some(stuck)));
    let to = |what: &str, input: Vec<u8>, to: usize, counted| {
        let output = dr(&input, macs[to]);
        sent(what, input, output, counted)
    };
    lab.check(vec![
        to(
            "the drained backend's established flow goes on",
            ack(vip, port),
            0,
            &[FlowHit, Tx],
        ),
        to(
            "a SYN reusing its port goes to the other backend",
            syn(vip, port),
            1,
            &[FlowMiss, ResetFlow, Tx],
        ),
        to(
            "the new connection's ACK follows it",
            ack(vip, port),
            1,
            &[FlowHit, Tx],
        ),
        to(
            "a client stuck to a drained backend keeps it for a new connection",
            syn(sticky, 43001),
            stuck,
            &[FlowMiss, Tx],
        ),
    ]);
    lab.finish();
}
