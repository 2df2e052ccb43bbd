//! Forwarding in each mode, and which backend a flow gets.

use super::*;

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

    let mut checker = Checker::balancer(&services);
    checker.check(cases);
    for (spec, port, ip_bytes) in &traffic {
        let two_packets_one_flow = TrafficStats {
            packets: 2,
            bytes: *ip_bytes,
            new_flows: 1,
        };
        let of_service = checker
            .dataplane
            .service_stats(&service_key(spec))
            .expect("service stats");
        let of_backend = checker
            .dataplane
            .backend_stats(spec.backends[0].addr, *port)
            .expect("backend stats");
        let name = spec.name();
        checker.expect_eq(
            format!("{name}: service stats"),
            of_service,
            two_packets_one_flow,
        );
        checker.expect_eq(
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
        checker.apply(step);
        for (spec, _, ip_bytes) in &traffic {
            let of_service = checker
                .dataplane
                .service_stats(&service_key(spec))
                .expect("service stats");
            checker.expect_eq(
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
    checker.check(cases);
    checker.finish();
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
    let mut checker = Checker::balancer(&services(a.clone(), c.clone()));

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
    let first = checker.backend_of(&tcp(CLIENT4, affinity32, CLIENT_PORT), &pool4_macs);
    for sport in 40001..=40006 {
        let input = tcp(CLIENT4, affinity32, sport);
        cases.push(sent(
            format!("affinity /32: the client's flow from port {sport} joins its first"),
            input.clone(),
            dr(&input, pool4_macs[first]),
            &[FlowMiss, Tx],
        ));
    }
    let first = checker.backend_of(&tcp(CLIENT4, affinity24, CLIENT_PORT), &pool4_macs);
    for (sport, client) in (40001..).zip(["198.18.0.77", "198.18.0.200", "198.18.0.254"]) {
        let input = tcp(ip(client), affinity24, sport);
        cases.push(sent(
            format!("affinity /24: {client} joins 198.18.0.1"),
            input.clone(),
            dr(&input, pool4_macs[first]),
            &[FlowMiss, Tx],
        ));
    }
    let first = checker.backend_of(&tcp(CLIENT6, affinity64, CLIENT_PORT), &pool6_macs);
    for (sport, client) in (40001..).zip(["fd00::abcd:1", "fd00::ffff:ffff:ffff:fffe"]) {
        let input = tcp(ip(client), affinity64, sport);
        cases.push(sent(
            format!("affinity /64: {client} joins fd00::1"),
            input.clone(),
            dr(&input, pool6_macs[first]),
            &[FlowMiss, Tx],
        ));
    }
    checker.check(cases);

    // Drain, by the flag and by weight 0: a flow already on the backend
    // stays there, new flows never go to it.
    let ab = [a.next_hop.mac, b.next_hop.mac];
    for (how, ports, by_flag) in [("drain=true", 41000, true), ("weight 0", 42000, false)] {
        checker.apply(&services(a.clone(), c.clone()));
        let on = |checker: &mut Checker, which| {
            (ports..ports + 100)
                .find(|&port| checker.backend_of(&tcp(CLIENT4, two, port), &ab) == which)
                .expect("a flow for each backend")
        };
        let (on_a, on_b) = (on(&mut checker, 0), on(&mut checker, 1));
        checker.apply(&services(
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
        checker.check(cases);
    }
    checker.finish();
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
    let mut checker = Checker::balancer(&[]);
    let spread = DirectorSettings {
        tunnel_spread_v4: 2,
        tunnel_spread_v6: 2,
        ..settings()
    };
    checker.apply_with(&services, &spread);
    // The outer source of a flow's packet, and whether its checksums hold.
    let outer_source = |checker: &mut Checker, client: IpAddr, vip: IpAddr, port: u16| {
        let input = segment(frame(client, vip), Protocol::Tcp, port, 80);
        let (action, out) = run(checker.dataplane.program(), &input).expect("test run");
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
            let source = outer_source(&mut checker, client, vip, port);
            let again = outer_source(&mut checker, client, vip, port);
            checker.expect_eq(format!("flow {port}: the same source twice"), again, source);
            seen.insert(source);
        }
        // The prefix of the tunnel source with its last two bits free.
        let within = |a: &IpAddr| match (a, tunnel) {
            (IpAddr::V4(a), IpAddr::V4(t)) => u32::from(*a) >> 2 == u32::from(t) >> 2,
            (IpAddr::V6(a), IpAddr::V6(t)) => u128::from(*a) >> 2 == u128::from(t) >> 2,
            _ => false,
        };
        let outside: Vec<_> = seen.iter().filter(|a| !within(a)).collect();
        checker.expect_eq(format!("{tunnel}/..: sources outside"), outside.len(), 0);
        checker.expect_eq(
            format!("{tunnel}/..: distinct sources of 32 flows"),
            seen.len(),
            4,
        );
    }
    checker.finish();
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
        let mut checker = Checker::balancer(&[]);
        checker.apply_with(
            &services,
            &DirectorSettings {
                hash_seed: seed,
                ..settings()
            },
        );
        let choice: Vec<usize> = (0..64)
            .map(|n| checker.backend_of(&frame(CLIENT4, vip).tcp_syn(41000 + n, 80), &macs))
            .collect();
        checker.finish();
        choice
    };
    let seed = 0x5eed_1234;
    let (plain, seeded, again) = (choices(0), choices(seed), choices(seed));
    assert_eq!(seeded, again, "one seed, one choice per flow");
    let moved = plain.iter().zip(&seeded).filter(|(a, b)| a != b).count();
    // Four backends: a quarter of flows stay by chance.
    assert!(moved >= 32, "only {moved} of 64 flows moved with the seed");
}

/// Only frames addressed to the interface's own MAC are balanced: a VIP's
/// packet to another host's MAC, to broadcast or to multicast is the
/// kernel's, untouched.
#[test]
fn bpf_forward_only_frames_for_our_mac() {
    require_privileged!();
    let (vip4, vip6) = (ip("198.18.0.180"), ip("fd00::180"));
    let mut checker = Checker::balancer(&[
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
    checker.check(vec![
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
    checker.finish();
}
