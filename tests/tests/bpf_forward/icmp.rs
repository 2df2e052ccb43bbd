//! ICMP errors about VIP flows, and the length rules that answer with ICMP.

use super::*;

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
    let mut checker = Checker::balancer(&[
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
            let owner = checker.backend_of(&tcp(client_of(vip), vip, cport), &macs);
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
    let owner = checker.backend_of(&tcp(CLIENT4, dr4, CLIENT_PORT), &pool4_macs);
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
    checker.check(cases);
    checker.finish();
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
    let mut checker = Checker::balancer(&[]);
    checker.apply_with(
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
    checker.check(vec![
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
    checker.finish();
}
