//! The XDP program's parser, one frame at a time through BPF_PROG_TEST_RUN:
//! every frame is passed unchanged and counted in exactly the right slots.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::stats::Counter::{self, *};
use xlb::dataplane::{Counters, Dataplane, LoadOptions};
use xlb_tests::{
    packet::{arp_request, ethertype_frame, verify_checksums, Frame, CLIENT_MAC},
    require_privileged,
    testrun::{accept_test_frames, check, Fixture},
};

const C4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const D4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const D6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

const IPPROTO_GRE: u8 = 47;
const IPPROTO_VRRP: u8 = 112;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_UDP: u8 = 17;

fn v4() -> Frame {
    Frame::ipv4(C4, D4)
}

fn v6() -> Frame {
    Frame::ipv6(C6, D6)
}

/// A VRRPv3 advert body: version/type, VRID, priority, count, interval, checksum, one address.
fn vrrp_advert() -> Vec<u8> {
    let mut body = vec![0x31, 51, 150, 1, 0x00, 100, 0, 0];
    body.extend_from_slice(&D4.octets());
    body
}

/// An IPv6 frame whose UDP packet sits behind `n` destination-options headers.
fn ipv6_ext_chain(n: usize) -> Vec<u8> {
    let mut udp = [0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00];
    let mut pseudo = [C6.octets(), D6.octets()].concat();
    pseudo.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, IPPROTO_UDP]);
    let sum = xlb_tests::packet::ones_complement_sum(&[&pseudo, &udp]);
    udp[6..8].copy_from_slice(&(!sum).to_be_bytes());
    let mut payload = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n {
            IPPROTO_UDP
        } else {
            IPPROTO_DSTOPTS
        };
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    payload.extend_from_slice(&udp);
    v6().proto(IPPROTO_DSTOPTS, &payload)
}

/// Cuts an IPv4 frame's transport part to `l4_len` bytes, keeping the IP
/// total length and header checksum consistent, so only the transport
/// header's own bounds can fail.
fn ipv4_with_l4_len(frame: Vec<u8>, l4_len: usize) -> Vec<u8> {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    let mut out = frame[..14 + ihl + l4_len].to_vec();
    out[16..18].copy_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
    fix_ipv4_checksum(&mut out);
    out
}

fn fix_ipv4_checksum(frame: &mut [u8]) {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    frame[24..26].fill(0);
    let sum = xlb_tests::packet::ones_complement_sum(&[&frame[14..14 + ihl]]);
    frame[24..26].copy_from_slice(&(!sum).to_be_bytes());
}

/// Same for IPv6: payload length set to what is left.
fn ipv6_with_payload_len(frame: Vec<u8>, payload_len: usize) -> Vec<u8> {
    let mut out = frame[..14 + 40 + payload_len].to_vec();
    out[18..20].copy_from_slice(&(payload_len as u16).to_be_bytes());
    out
}

fn edit(mut frame: Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    f(&mut frame);
    frame
}

/// Runs each (description, frame, counters) case: the frame must come back
/// PASS and byte-identical, and the counters must move by exactly one in
/// the listed slots (plus rx_packets, pass, and rx_bytes by the length).
fn assert_cases(cases: Vec<(&str, Vec<u8>, &[Counter])>) {
    assert_cases_parsed(true, cases)
}

/// As [`assert_cases`]; `parsed` false leaves the address filter empty, as
/// a director with no service has it.
fn assert_cases_parsed(parsed: bool, cases: Vec<(&str, Vec<u8>, &[Counter])>) {
    let options = LoadOptions {
        bpf_log: log::LevelFilter::Off,
        ..LoadOptions::default()
    };
    let mut dataplane = Dataplane::load(&options).expect("loading the XDP program");
    accept_test_frames(&mut dataplane).unwrap();
    // Else the address filter passes IP frames before the parser sees them.
    if parsed {
        dataplane.parse_every_frame().unwrap();
    }
    let mut failures = Vec::new();
    for (description, frame, counted) in cases {
        let before = dataplane.counters().unwrap();
        let fixture = Fixture::pass_unchanged(description, frame.clone());
        if let Err(mismatch) = check(dataplane.program(), &fixture).expect("test run") {
            failures.push(mismatch.to_string());
            continue;
        }
        let after = dataplane.counters().unwrap();
        if let Some(wrong) = counter_mismatch(&before, &after, frame.len(), counted) {
            failures.push(format!("{description}: {wrong}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn counter_mismatch(
    before: &Counters,
    after: &Counters,
    len: usize,
    counted: &[Counter],
) -> Option<String> {
    let wrong: Vec<String> = Counter::ALL
        .iter()
        .filter_map(|&c| {
            let delta = after.get(c) - before.get(c);
            let expected = match c {
                RxBytes => len as u64,
                RxPackets | Pass => 1,
                c if counted.contains(&c) => 1,
                _ => 0,
            };
            (delta != expected)
                .then(|| format!("{} moved by {delta}, expected {expected}", c.name()))
        })
        .collect();
    (!wrong.is_empty()).then(|| wrong.join(", "))
}

/// With no service, an untagged IP frame passes before the parser sees it,
/// counted by its family and IP protocol field alone: options, fragments
/// and bad headers are not told apart, and cost nothing to tell.
#[test]
fn bpf_parse_frames_that_concern_no_service_pass_unparsed() {
    require_privileged!();
    let mut bad_version = v4().udp(40000, 53, b"query");
    bad_version[14] = 0x65;
    let cases: Vec<(&str, Vec<u8>, &[Counter])> = vec![
        ("IPv4 UDP", v4().udp(40000, 53, b"query"), &[Ipv4, Udp]),
        ("IPv4 TCP SYN", v4().tcp_syn(40000, 80), &[Ipv4, Tcp]),
        ("IPv6 TCP SYN", v6().tcp_syn(40000, 80), &[Ipv6, Tcp]),
        ("IPv4 with version 6", bad_version, &[Ipv4, Udp]),
    ];
    assert_cases_parsed(false, cases);
}

#[test]
fn bpf_parse_well_formed_frames_pass_unchanged() {
    require_privileged!();
    let cases: Vec<(&str, Vec<u8>, &[Counter])> = vec![
        ("IPv4 UDP", v4().udp(40000, 53, b"query"), &[Ipv4, Udp]),
        ("IPv4 TCP SYN", v4().tcp_syn(40000, 80), &[Ipv4, Tcp]),
        (
            "IPv4 TCP data",
            v4().tcp_data(40000, 80, 1, 1, b"GET / HTTP/1.0\r\n\r\n"),
            &[Ipv4, Tcp],
        ),
        (
            "IPv4 ICMP echo",
            v4().echo_request(1, 1, b"ping"),
            &[Ipv4, Icmp],
        ),
        (
            "IPv4 options + UDP",
            v4().ipv4_options(&[0x94, 0x04, 0, 0]).udp(1, 2, b"ra"),
            &[Ipv4, IpOptions, Udp],
        ),
        (
            "IPv4 VRRP",
            v4().ttl(255).proto(IPPROTO_VRRP, &vrrp_advert()),
            &[Ipv4, Vrrp],
        ),
        (
            "IPv4 GRE",
            v4().proto(IPPROTO_GRE, &[0, 0, 0x08, 0x00]),
            &[Ipv4, OtherProto],
        ),
        (
            "IPv4 first fragment",
            v4().fragment(0, true).udp(1, 2, &[7; 64]),
            &[Ipv4, Udp],
        ),
        (
            "IPv4 later fragment",
            v4().fragment(1480, false).proto(IPPROTO_UDP, &[7; 64]),
            &[Ipv4, Fragment],
        ),
        (
            "IPv4 with Ethernet padding",
            edit(v4().udp(1, 2, b""), |f| f.extend([0; 18])),
            &[Ipv4, Udp],
        ),
        ("IPv6 UDP", v6().udp(40000, 53, b"query"), &[Ipv6, Udp]),
        ("IPv6 TCP SYN", v6().tcp_syn(40000, 443), &[Ipv6, Tcp]),
        (
            "IPv6 ICMPv6 echo",
            v6().echo_request(1, 1, b"ping"),
            &[Ipv6, Icmpv6],
        ),
        (
            "IPv6 VRRP",
            v6().ttl(255).proto(IPPROTO_VRRP, &vrrp_advert()),
            &[Ipv6, Vrrp],
        ),
        (
            "IPv6 hop-by-hop + dest opts + UDP",
            v6().hop_by_hop(8).destination_options(16).udp(1, 2, b"x"),
            &[Ipv6, IpOptions, Udp],
        ),
        (
            "IPv6 first fragment",
            v6().fragment(0, true).udp(1, 2, &[7; 64]),
            &[Ipv6, IpOptions, Udp],
        ),
        (
            "IPv6 later fragment",
            v6().fragment(1448, false).proto(IPPROTO_UDP, &[7; 64]),
            &[Ipv6, IpOptions, Fragment],
        ),
        (
            "IPv6 six extension headers",
            ipv6_ext_chain(6),
            &[Ipv6, IpOptions, Udp],
        ),
        (
            "IPv6 seven extension headers (not followed)",
            ipv6_ext_chain(7),
            &[Ipv6, IpOptions, OtherProto],
        ),
        (
            "802.1Q IPv4 UDP",
            v4().vlan(10).udp(1, 2, b"x"),
            &[Vlan, Ipv4, Udp],
        ),
        (
            "802.1ad+802.1Q IPv6 TCP",
            v6().vlan(100).vlan(200).tcp_syn(1, 2),
            &[Vlan, Ipv6, Tcp],
        ),
        ("ARP request", arp_request(CLIENT_MAC, C4, D4), &[Arp]),
        (
            "LLDP",
            ethertype_frame(0x88cc, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1]),
            &[OtherEthertype],
        ),
    ];
    for (description, frame, _) in &cases {
        verify_checksums(frame).unwrap_or_else(|e| panic!("{description}: bad input: {e}"));
    }
    assert_cases(cases);
}

#[test]
fn bpf_parse_truncated_frames_pass_unchanged() {
    require_privileged!();
    let udp4 = v4().udp(40000, 53, b"query");
    let tcp4 = v4().tcp_syn(40000, 80);
    let udp6 = v6().udp(40000, 53, b"query");
    let cases: Vec<(&str, Vec<u8>, &[Counter])> = vec![
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header,
        // so the shortest frame tested is the header alone.
        ("Ethernet header only", udp4[..14].to_vec(), &[Truncated]),
        (
            "VLAN tag cut",
            v4().vlan(10).udp(1, 2, b"")[..16].to_vec(),
            &[Truncated],
        ),
        ("IPv4 header cut", udp4[..14 + 12].to_vec(), &[Truncated]),
        (
            "IPv4 total length past the frame",
            udp4[..udp4.len() - 2].to_vec(),
            &[Truncated],
        ),
        (
            "IPv4 options cut",
            v4().ipv4_options(&[1; 8]).udp(1, 2, b"")[..14 + 24].to_vec(),
            &[Truncated],
        ),
        (
            "TCP header cut",
            ipv4_with_l4_len(tcp4.clone(), 12),
            &[Truncated],
        ),
        (
            "TCP data offset past the frame",
            ipv4_with_l4_len(edit(tcp4, |f| f[14 + 20 + 12] = 0xf0), 20),
            &[Truncated],
        ),
        (
            "UDP header cut",
            ipv4_with_l4_len(udp4.clone(), 6),
            &[Truncated],
        ),
        (
            "ICMP header cut",
            ipv4_with_l4_len(v4().echo_request(1, 1, b""), 4),
            &[Truncated],
        ),
        (
            "VRRP header cut",
            ipv4_with_l4_len(v4().proto(IPPROTO_VRRP, &vrrp_advert()), 6),
            &[Truncated],
        ),
        ("IPv6 header cut", udp6[..14 + 30].to_vec(), &[Truncated]),
        (
            "IPv6 payload length past the frame",
            udp6[..udp6.len() - 1].to_vec(),
            &[Truncated],
        ),
        (
            "IPv6 UDP header cut",
            ipv6_with_payload_len(udp6, 4),
            &[Truncated],
        ),
        (
            "IPv6 extension header longer than the frame",
            ipv6_with_payload_len(v6().hop_by_hop(16).udp(1, 2, b""), 8),
            &[Truncated],
        ),
        (
            "ICMPv6 header cut",
            ipv6_with_payload_len(v6().echo_request(1, 1, b""), 2),
            &[Truncated],
        ),
    ];
    assert_cases(cases);
}

#[test]
fn bpf_parse_malformed_frames_pass_unchanged() {
    require_privileged!();
    let with_checksum = |mut f: Vec<u8>| {
        fix_ipv4_checksum(&mut f);
        f
    };
    let udp4 = v4().udp(40000, 53, b"query");
    let cases: Vec<(&str, Vec<u8>, &[Counter])> = vec![
        (
            "IPv4 ethertype, version 6",
            edit(udp4.clone(), |f| f[14] = 0x65),
            &[Malformed],
        ),
        (
            "IPv4 header length 16",
            with_checksum(edit(udp4.clone(), |f| f[14] = 0x44)),
            &[Malformed],
        ),
        (
            "IPv4 total length below header",
            with_checksum(edit(udp4.clone(), |f| f[16..18].copy_from_slice(&[0, 19]))),
            &[Malformed],
        ),
        (
            "IPv6 ethertype, version 4",
            edit(v6().udp(1, 2, b""), |f| f[14] = 0x40),
            &[Malformed],
        ),
        (
            "TCP data offset 16 bytes",
            edit(v4().tcp_syn(1, 2), |f| f[14 + 20 + 12] = 0x40),
            &[Malformed],
        ),
        (
            "UDP length 4",
            edit(udp4, |f| {
                f[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&[0, 4])
            }),
            &[Malformed],
        ),
    ];
    assert_cases(cases);
}
