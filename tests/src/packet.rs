//! Test frames with correct lengths and checksums, and a checksum verifier.
//!
//! Frames are built with etherparse; [`verify_checksums`] re-checks them with
//! an independent RFC 1071 sum, so a test of a rewritten frame does not trust
//! the same code that built its input.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Context};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpFragOffset, IpHeaders, IpNumber,
    Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
    NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket, TransportSlice, VlanId,
};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

/// An Ethernet frame under construction: addresses, tags and IP header
/// options first, then one of the transport methods writes the frame.
#[derive(Clone, Debug)]
pub struct Frame {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: Vec<u16>,
    ip: IpHeaders,
}

impl Frame {
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        let header = Ipv4Header::new(0, 64, IpNumber::UDP, src.octets(), dst.octets())
            .expect("zero payload length fits");
        Self::with_ip(IpHeaders::Ipv4(header, Ipv4Extensions::default()))
    }

    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        let header = Ipv6Header {
            hop_limit: 64,
            source: src.octets(),
            destination: dst.octets(),
            ..Default::default()
        };
        Self::with_ip(IpHeaders::Ipv6(header, Ipv6Extensions::default()))
    }

    fn with_ip(ip: IpHeaders) -> Self {
        Frame {
            src_mac: CLIENT_MAC,
            dst_mac: DIRECTOR_MAC,
            vlans: Vec::new(),
            ip,
        }
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Adds an 802.1Q tag; a second call makes the frame double-tagged
    /// (the first tag is the outer one).
    pub fn vlan(mut self, id: u16) -> Self {
        assert!(self.vlans.len() < 2, "at most two VLAN tags");
        self.vlans.push(id);
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        match &mut self.ip {
            IpHeaders::Ipv4(h, _) => h.time_to_live = ttl,
            IpHeaders::Ipv6(h, _) => h.hop_limit = ttl,
        }
        self
    }

    /// IPv4 options (a multiple of 4 bytes, at most 40).
    pub fn ipv4_options(mut self, options: &[u8]) -> Self {
        let IpHeaders::Ipv4(h, _) = &mut self.ip else {
            panic!("IPv4 options on an IPv6 frame")
        };
        h.options = options
            .try_into()
            .expect("options are a multiple of 4 bytes, at most 40");
        self
    }

    /// Marks the packet a fragment at `offset` bytes (a multiple of 8): IPv4
    /// header fields, or an IPv6 fragment header.
    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        assert_eq!(offset % 8, 0, "fragment offsets are multiples of 8");
        let offset = IpFragOffset::try_new(offset / 8).expect("offset below 65528");
        match &mut self.ip {
            IpHeaders::Ipv4(h, _) => {
                h.fragment_offset = offset;
                h.more_fragments = more;
                h.dont_fragment = false;
                h.identification = 0x1234;
            }
            IpHeaders::Ipv6(_, ext) => {
                ext.fragment = Some(Ipv6FragmentHeader::new(IpNumber::UDP, offset, more, 0x1234));
            }
        }
        self
    }

    /// IPv4 without Don't Fragment: routers may fragment it.
    pub fn may_fragment(mut self) -> Self {
        if let IpHeaders::Ipv4(h, _) = &mut self.ip {
            h.dont_fragment = false;
        }
        self
    }

    /// Adds an IPv6 hop-by-hop options header of `len` bytes (8, 16, ...),
    /// padded with PadN.
    pub fn hop_by_hop(mut self, len: usize) -> Self {
        let IpHeaders::Ipv6(_, ext) = &mut self.ip else {
            panic!("hop-by-hop options on an IPv4 frame")
        };
        ext.hop_by_hop_options = Some(padded_ext_header(len));
        self
    }

    /// Adds an IPv6 destination options header of `len` bytes.
    pub fn destination_options(mut self, len: usize) -> Self {
        let IpHeaders::Ipv6(_, ext) = &mut self.ip else {
            panic!("destination options on an IPv4 frame")
        };
        ext.destination_options = Some(padded_ext_header(len));
        self
    }

    fn ip_step(&self) -> PacketBuilderStep<IpHeaders> {
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let vlan = |id: u16| VlanId::try_new(id).expect("VLAN id below 4096");
        match self.vlans[..] {
            [] => eth.ip(self.ip.clone()),
            [id] => eth.single_vlan(vlan(id)).ip(self.ip.clone()),
            [outer, inner] => eth
                .double_vlan(vlan(outer), vlan(inner))
                .ip(self.ip.clone()),
            _ => unreachable!("vlan() allows two tags"),
        }
    }

    pub fn udp(self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let step = self.ip_step().udp(sport, dport);
        step.write_to_vec(&mut out, payload)
            .expect("UDP frame fits");
        out
    }

    /// A TCP SYN.
    pub fn tcp_syn(self, sport: u16, dport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let step = self.ip_step().tcp(sport, dport, 1000, 64240).syn();
        step.write_to_vec(&mut out, &[]).expect("TCP frame fits");
        out
    }

    /// A TCP segment with ACK and PSH set.
    pub fn tcp_data(self, sport: u16, dport: u16, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let step = self.ip_step().tcp(sport, dport, seq, 64240).ack(ack).psh();
        step.write_to_vec(&mut out, payload)
            .expect("TCP frame fits");
        out
    }

    /// A TCP FIN with ACK set, as a side that closes sends it.
    pub fn tcp_fin(self, sport: u16, dport: u16, seq: u32, ack: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let step = self.ip_step().tcp(sport, dport, seq, 64240).ack(ack).fin();
        step.write_to_vec(&mut out, &[]).expect("TCP frame fits");
        out
    }

    /// A TCP RST.
    pub fn tcp_rst(self, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let step = self.ip_step().tcp(sport, dport, seq, 0).rst();
        step.write_to_vec(&mut out, &[]).expect("TCP frame fits");
        out
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) echo request.
    pub fn echo_request(self, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let written = match self.ip {
            IpHeaders::Ipv4(..) => self
                .ip_step()
                .icmpv4_echo_request(id, seq)
                .write_to_vec(&mut out, payload),
            IpHeaders::Ipv6(..) => self
                .ip_step()
                .icmpv6_echo_request(id, seq)
                .write_to_vec(&mut out, payload),
        };
        written.expect("ICMP frame fits");
        out
    }

    /// Any IP protocol with a raw payload (VRRP, GRE, a non-first fragment).
    pub fn proto(self, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.ip_step()
            .write_to_vec(&mut out, IpNumber(proto), payload)
            .expect("IP frame fits");
        out
    }
}

fn padded_ext_header(len: usize) -> Ipv6RawExtHeader {
    assert!(
        len >= 8 && len.is_multiple_of(8),
        "extension headers are 8n bytes"
    );
    // PadN option filling the header after next-header and length.
    let mut options = vec![0u8; len - 2];
    options[0] = 1;
    options[1] = (len - 4) as u8;
    Ipv6RawExtHeader::new_raw(IpNumber::UDP, &options).expect("valid extension length")
}

/// An ARP who-has request for `target` from `sender`.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &sender_mac,
        &sender.octets(),
        &[0; 6],
        &target.octets(),
    )
    .expect("Ethernet/IPv4 ARP lengths");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(sender_mac, [0xff; 6])
        .arp(arp)
        .write_to_vec(&mut out)
        .expect("ARP frame fits");
    out
}

/// A frame of any ethertype with a raw payload.
pub fn ethertype_frame(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.extend_from_slice(&DIRECTOR_MAC);
    out.extend_from_slice(&CLIENT_MAC);
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// RFC 1071 ones' complement sum of `chunks`, folded to 16 bits (not inverted).
pub fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in chunks {
        let mut words = chunk.chunks_exact(2);
        for w in &mut words {
            sum += u16::from_be_bytes([w[0], w[1]]) as u64;
        }
        if let [last] = words.remainder() {
            sum += (*last as u64) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Checks the IPv4 header checksum and the TCP, UDP, ICMP or ICMPv6
/// checksum (with its pseudo-header) of an Ethernet frame. Non-first
/// fragments carry no transport header and only get the IP check.
pub fn verify_checksums(frame: &[u8]) -> anyhow::Result<()> {
    let packet = SlicedPacket::from_ethernet(frame).context("frame does not parse")?;
    let (pseudo, segment, fragmented): (Vec<u8>, &[u8], bool) = match &packet.net {
        Some(NetSlice::Ipv4(ip)) => {
            let header = ip.header();
            if ones_complement_sum(&[header.slice()]) != 0xffff {
                bail!(
                    "IPv4 header checksum {:#06x} is wrong",
                    header.header_checksum()
                );
            }
            let payload = ip.payload();
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&header.source());
            pseudo.extend_from_slice(&header.destination());
            pseudo.extend_from_slice(&[0, payload.ip_number.0]);
            pseudo.extend_from_slice(&(payload.payload.len() as u16).to_be_bytes());
            (pseudo, payload.payload, payload.fragmented)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let header = ip.header();
            let payload = ip.payload();
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&header.source());
            pseudo.extend_from_slice(&header.destination());
            pseudo.extend_from_slice(&(payload.payload.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, payload.ip_number.0]);
            (pseudo, payload.payload, payload.fragmented)
        }
        _ => return Ok(()),
    };
    if fragmented {
        return Ok(());
    }
    let with_pseudo = |what: &str| -> anyhow::Result<()> {
        if ones_complement_sum(&[&pseudo, segment]) != 0xffff {
            bail!("{what} checksum is wrong");
        }
        Ok(())
    };
    match &packet.transport {
        Some(TransportSlice::Tcp(_)) => with_pseudo("TCP"),
        Some(TransportSlice::Udp(udp)) => {
            let ipv4 = matches!(packet.net, Some(NetSlice::Ipv4(_)));
            if ipv4 && udp.checksum() == 0 {
                return Ok(()); // No checksum, allowed over IPv4 only.
            }
            with_pseudo("UDP")
        }
        Some(TransportSlice::Icmpv6(_)) => with_pseudo("ICMPv6"),
        Some(TransportSlice::Icmpv4(_)) => {
            if ones_complement_sum(&[segment]) != 0xffff {
                bail!("ICMP checksum is wrong");
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071, section 3.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&[&data]), 0xddf2);
    }

    #[test]
    fn built_frames_verify() {
        let frames = [
            Frame::ipv4(SRC4, DST4).udp(1000, 53, b"query"),
            Frame::ipv4(SRC4, DST4).tcp_syn(1000, 80),
            Frame::ipv4(SRC4, DST4)
                .ipv4_options(&[1, 1, 1, 0])
                .tcp_data(1, 2, 3, 4, b"x"),
            Frame::ipv4(SRC4, DST4).echo_request(7, 1, b"ping"),
            Frame::ipv6(SRC6, DST6).udp(1000, 53, b"query"),
            Frame::ipv6(SRC6, DST6).hop_by_hop(8).tcp_syn(1000, 80),
            Frame::ipv6(SRC6, DST6).echo_request(7, 1, b"ping"),
            Frame::ipv4(SRC4, DST4)
                .vlan(10)
                .vlan(20)
                .udp(1, 2, b"tagged"),
        ];
        for frame in frames {
            verify_checksums(&frame).unwrap();
        }
    }

    #[test]
    fn detects_corruption_in_each_checksum() {
        let cases = [
            (
                Frame::ipv4(SRC4, DST4).udp(1000, 53, b"query"),
                14 + 10,
                "IPv4 header",
            ),
            (
                Frame::ipv4(SRC4, DST4).udp(1000, 53, b"query"),
                14 + 20 + 8,
                "UDP",
            ),
            (
                Frame::ipv4(SRC4, DST4).tcp_syn(1000, 80),
                14 + 20 + 4,
                "TCP",
            ),
            (
                Frame::ipv4(SRC4, DST4).echo_request(1, 1, b"p"),
                14 + 20 + 8,
                "ICMP",
            ),
            (
                Frame::ipv6(SRC6, DST6).echo_request(1, 1, b"p"),
                14 + 40 + 8,
                "ICMPv6",
            ),
            (Frame::ipv6(SRC6, DST6).udp(1, 2, b"p"), 14 + 8, "UDP"),
        ];
        for (mut frame, at, what) in cases {
            frame[at] ^= 0x40;
            let err = verify_checksums(&frame).expect_err(what).to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }

    #[test]
    fn ipv4_header_layout() {
        let frame = Frame::ipv4(SRC4, DST4)
            .ttl(9)
            .fragment(1480, true)
            .proto(112, &[0; 8]);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(frame[14], 0x45);
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 20 + 8);
        assert_eq!(
            u16::from_be_bytes([frame[20], frame[21]]),
            0x2000 | (1480 / 8)
        );
        assert_eq!(frame[22], 9);
        assert_eq!(frame[23], 112);
        assert_eq!(&frame[26..30], &SRC4.octets());
    }

    #[test]
    fn ipv6_extension_chain_layout() {
        let frame = Frame::ipv6(SRC6, DST6)
            .hop_by_hop(8)
            .destination_options(16)
            .udp(1, 2, b"");
        assert_eq!(&frame[12..14], &[0x86, 0xdd]);
        assert_eq!(frame[14 + 6], 0, "hop-by-hop first");
        assert_eq!(frame[54], 60, "then destination options");
        assert_eq!(frame[55], 0, "8 bytes");
        assert_eq!(frame[62], 17, "then UDP");
        assert_eq!(frame[63], 1, "16 bytes");
        assert_eq!(frame.len(), 14 + 40 + 8 + 16 + 8);
    }

    #[test]
    fn vlan_tags_in_order() {
        let frame = Frame::ipv4(SRC4, DST4).vlan(100).vlan(200).udp(1, 2, b"");
        assert_eq!(&frame[12..14], &[0x88, 0xa8], "outer 802.1ad");
        assert_eq!(u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff, 100);
        assert_eq!(&frame[16..18], &[0x81, 0x00], "inner 802.1Q");
        assert_eq!(u16::from_be_bytes([frame[18], frame[19]]) & 0x0fff, 200);
        assert_eq!(&frame[20..22], &[0x08, 0x00]);
    }

    #[test]
    fn arp_frame() {
        let frame = arp_request(CLIENT_MAC, SRC4, DST4);
        assert_eq!(&frame[..6], &[0xff; 6]);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(frame.len(), 14 + 28);
        assert_eq!(&frame[14 + 24..14 + 28], &DST4.octets());
    }
}
