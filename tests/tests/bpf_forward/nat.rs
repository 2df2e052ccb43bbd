//! NAT replies: translated back to the VIP, routed by the FIB or by the CPU's copy of its answer.

use super::*;

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
    let mut checker = Checker::balancer(&[vec![tcp4], others.clone()].concat());
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
    checker.check(cases);

    checker.apply(&others);
    checker.check(vec![
        unchanged(
            "once its service is removed, the backend's reply passes",
            reply(real4, Protocol::Tcp, 8080),
            &[],
        ),
        translated(vip4, real4, Protocol::Udp, 53, 5353),
    ]);
    checker.finish();
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
    let mut checker = Checker::balancer(&services);
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
        checker.check(vec![
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
        checker.check(vec![
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
    checker.finish();
}
