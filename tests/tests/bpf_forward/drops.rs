//! What is dropped and what is passed to the kernel untouched; the decapsulator.

use super::*;

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
    let mut checker = Checker::balancer(&services);
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
    checker.check(cases);
    checker.finish();
}

#[test]
fn bpf_forward_decap() {
    require_privileged!();
    let (vip4, vip6) = (ip("198.18.0.100"), ip("fd00::100"));
    let (other4, other6) = (ip("198.18.0.200"), ip("fd00::200"));
    let (real4, real6) = (ip("198.18.2.10"), ip("fd00:2::10"));
    let mut checker = Checker::load(
        &LoadOptions::decap(log::LevelFilter::Off),
        &[Decap, DecapForeign],
    );
    checker
        .dataplane
        .set_decap_vips(&[vip4, vip6])
        .expect("setting the decap VIPs");
    checker
        .dataplane
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
    checker.check(cases);
    checker.finish();
}
