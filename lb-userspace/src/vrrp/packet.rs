//! VRRP advertisements on the wire: VRRPv3 (RFC 5798, clarified by RFC
//! 9568) over IPv4 and IPv6, VRRPv2 (RFC 3768) over IPv4 with no
//! authentication or RFC 2338's simple text password (keepalived's PASS).
//! Only the VRRP message, the payload of an IP packet of protocol 112: the
//! kernel writes and reads the IP header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::{V3Checksum, Version, IPPROTO_VRRP};

/// The only VRRP message type.
const ADVERTISEMENT: u8 = 1;
/// Version/type, VRID, priority, count, then v2: auth type and interval,
/// v3: 4 reserved bits and the 12-bit interval; then the checksum.
const HEADER_LEN: usize = 8;
/// Where the checksum sits in the header.
const CHECKSUM: std::ops::Range<usize> = 6..8;
/// VRRPv2's authentication data, after the addresses, whatever its type.
const AUTH_LEN: usize = 8;
const AUTH_NONE: u8 = 0;
const AUTH_PASSWORD: u8 = 1;
/// v3's Max Advertise Interval is in centiseconds, 12 bits.
const V3_UNIT: Duration = Duration::from_millis(10);
const V3_MAX_INTERVAL: u16 = 0x0fff;
/// v2's Advertisement Interval is in seconds, 8 bits.
const V2_UNIT: Duration = Duration::from_secs(1);
const V2_MAX_INTERVAL: u16 = 0xff;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// v3: Max Advertise Interval (12-bit centiseconds); v2: Advertisement
    /// Interval (8-bit seconds). Kept as a Duration; `encode` fails if not
    /// representable exactly (v3: multiple of 10 ms, 10 ms..=40.95 s; v2:
    /// whole seconds 1..=255).
    pub interval: Duration,
    /// All of the packet's family (IPv4 for v2).
    pub addresses: Vec<IpAddr>,
    /// v2 only: `Some(password)` for auth type 1 (<= 8 bytes), `None` for
    /// type 0. The password is zero-padded on the wire, so decoding drops
    /// its trailing zero bytes.
    pub auth: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub advert: Advert,
    /// v3 over IPv4: which checksum form matched (None otherwise).
    pub v3_checksum: Option<V3Checksum>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("source {src} and destination {dst} are of different families")]
    MixedEndpoints { src: IpAddr, dst: IpAddr },
    #[error("truncated: {0} bytes, shorter than the 8-byte header")]
    TooShort(usize),
    #[error("truncated: {len} bytes, the header says {needed}")]
    Truncated { len: usize, needed: usize },
    #[error("trailing bytes: {len} bytes, the header says {needed}")]
    TrailingBytes { len: usize, needed: usize },
    #[error("address count {count} but room for {room}")]
    CountMismatch { count: u8, room: usize },
    #[error("version {0} is not VRRP 2 or 3")]
    Version(u8),
    #[error("IPv6 advertisement with version 2")]
    V2OverIpv6,
    #[error("bad checksum {got:#06x} (expected {expected:#06x})")]
    Checksum { got: u16, expected: u16 },
    #[error("type {0} is not ADVERTISEMENT")]
    Type(u8),
    #[error("vrid 0")]
    VridZero,
    #[error("authentication type {0} is not supported")]
    AuthType(u8),
    #[error("authentication with version 3 (VRRPv2 only)")]
    AuthWithV3,
    #[error("password of {0} bytes, 8 at most")]
    PasswordTooLong(usize),
    #[error("interval 0")]
    IntervalZero,
    #[error("interval {interval:?} is not a multiple of {unit:?}")]
    IntervalUnit { interval: Duration, unit: Duration },
    #[error("interval {interval:?} is over {max:?}")]
    IntervalTooLong { interval: Duration, max: Duration },
    #[error("no addresses")]
    NoAddresses,
    #[error("{0} addresses, 255 at most")]
    TooManyAddresses(usize),
    #[error("address {addr} in an {family} advertisement")]
    WrongFamily { addr: IpAddr, family: &'static str },
}

/// The bytes to send from `src` to `dst` (the checksum needs them).
/// `v3_checksum` only matters for VRRPv3 over IPv4.
pub fn encode(
    advert: &Advert,
    src: IpAddr,
    dst: IpAddr,
    v3_checksum: V3Checksum,
) -> Result<Vec<u8>, PacketError> {
    let ends = Endpoints::new(src, dst)?;
    let v2 = advert.version == Version::V2;
    if v2 && !ends.is_v4() {
        return Err(PacketError::V2OverIpv6);
    }
    if advert.vrid == 0 {
        return Err(PacketError::VridZero);
    }
    // RFC 5798 §5.2.5: at least one address.
    if advert.addresses.is_empty() {
        return Err(PacketError::NoAddresses);
    }
    let count = u8::try_from(advert.addresses.len())
        .map_err(|_| PacketError::TooManyAddresses(advert.addresses.len()))?;
    if let Some(&addr) = advert
        .addresses
        .iter()
        .find(|a| a.is_ipv4() != ends.is_v4())
    {
        return Err(PacketError::WrongFamily {
            addr,
            family: ends.family(),
        });
    }
    let (version, fields) = if v2 {
        let auth_type = match &advert.auth {
            None => AUTH_NONE,
            Some(password) if password.len() <= AUTH_LEN => AUTH_PASSWORD,
            Some(password) => return Err(PacketError::PasswordTooLong(password.len())),
        };
        let secs = to_units(advert.interval, V2_UNIT, V2_MAX_INTERVAL)?;
        (2, [auth_type, secs.to_be_bytes()[1]])
    } else {
        if advert.auth.is_some() {
            return Err(PacketError::AuthWithV3);
        }
        // At most 12 bits, so the reserved bits stay zero.
        (
            3,
            to_units(advert.interval, V3_UNIT, V3_MAX_INTERVAL)?.to_be_bytes(),
        )
    };

    let mut msg = Vec::with_capacity(
        HEADER_LEN + advert.addresses.len() * ends.addr_len() + if v2 { AUTH_LEN } else { 0 },
    );
    msg.extend([
        version << 4 | ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        count,
    ]);
    msg.extend(fields);
    msg.extend([0, 0]);
    for addr in &advert.addresses {
        match addr {
            IpAddr::V4(a) => msg.extend(a.octets()),
            IpAddr::V6(a) => msg.extend(a.octets()),
        }
    }
    if v2 {
        let mut data = [0; AUTH_LEN];
        if let Some(password) = &advert.auth {
            data[..password.len()].copy_from_slice(password);
        }
        msg.extend(data);
    }
    let pseudo = !v2 && (!ends.is_v4() || v3_checksum == V3Checksum::PseudoHeader);
    let sum = checksum(&msg, pseudo.then_some(&ends));
    msg[CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    Ok(msg)
}

/// Parses and checks an advertisement received from `src` to `dst`.
/// Checks: version 2 or 3, type 1, vrid != 0, the count vs the length, the
/// checksum (v3/IPv4: either form), v2 only over IPv4, addresses of the
/// packet's family. Does NOT check TTL or authentication against
/// configuration (the caller does). The checksum is checked before any
/// field but the version, which says how to compute it.
pub fn decode(bytes: &[u8], src: IpAddr, dst: IpAddr) -> Result<Decoded, PacketError> {
    let ends = Endpoints::new(src, dst)?;
    if bytes.len() < HEADER_LEN {
        return Err(PacketError::TooShort(bytes.len()));
    }
    let version = match bytes[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        other => return Err(PacketError::Version(other)),
    };
    let v2 = version == Version::V2;
    if v2 && !ends.is_v4() {
        return Err(PacketError::V2OverIpv6);
    }

    let got = u16::from_be_bytes([bytes[CHECKSUM.start], bytes[CHECKSUM.start + 1]]);
    let expected = checksum(bytes, (!v2).then_some(&ends));
    let v3_over_v4 = !v2 && ends.is_v4();
    let v3_checksum = if got == expected {
        v3_over_v4.then_some(V3Checksum::PseudoHeader)
    } else if v3_over_v4 && got == checksum(bytes, None) {
        Some(V3Checksum::MessageOnly)
    } else {
        return Err(PacketError::Checksum { got, expected });
    };

    let (kind, vrid, priority, count) = (bytes[0] & 0x0f, bytes[1], bytes[2], bytes[3]);
    if kind != ADVERTISEMENT {
        return Err(PacketError::Type(kind));
    }
    if vrid == 0 {
        return Err(PacketError::VridZero);
    }
    let auth_len = if v2 { AUTH_LEN } else { 0 };
    check_length(bytes.len(), count, ends.addr_len(), auth_len)?;

    let (interval, auth) = if v2 {
        let auth = match bytes[4] {
            // RFC 2338 and 3768: the data is ignored on reception.
            AUTH_NONE => None,
            AUTH_PASSWORD => {
                let data = &bytes[bytes.len() - AUTH_LEN..];
                let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                Some(data[..end].to_vec())
            }
            other => return Err(PacketError::AuthType(other)),
        };
        (V2_UNIT * u32::from(bytes[5]), auth)
    } else {
        // The top 4 bits are reserved, ignored on reception.
        let centis = u16::from_be_bytes([bytes[4], bytes[5]]) & V3_MAX_INTERVAL;
        (V3_UNIT * u32::from(centis), None)
    };
    if interval.is_zero() {
        return Err(PacketError::IntervalZero);
    }

    let body = &bytes[HEADER_LEN..bytes.len() - auth_len];
    let addresses = if ends.is_v4() {
        body.chunks_exact(4)
            .map(|c| IpAddr::from([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.chunks_exact(16)
            .map(|c| {
                let mut octets = [0; 16];
                octets.copy_from_slice(c);
                IpAddr::from(octets)
            })
            .collect()
    };
    Ok(Decoded {
        advert: Advert {
            version,
            vrid,
            priority,
            interval,
            addresses,
            auth,
        },
        v3_checksum,
    })
}

/// The source and destination, of one family.
enum Endpoints {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl Endpoints {
    fn new(src: IpAddr, dst: IpAddr) -> Result<Self, PacketError> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Ok(Self::V4(s, d)),
            (IpAddr::V6(s), IpAddr::V6(d)) => Ok(Self::V6(s, d)),
            _ => Err(PacketError::MixedEndpoints { src, dst }),
        }
    }

    fn is_v4(&self) -> bool {
        matches!(self, Self::V4(..))
    }

    fn family(&self) -> &'static str {
        if self.is_v4() {
            "IPv4"
        } else {
            "IPv6"
        }
    }

    fn addr_len(&self) -> usize {
        if self.is_v4() {
            4
        } else {
            16
        }
    }

    /// The checksum's pseudo-header (IPv4: laid out as UDP's, RFC 768;
    /// IPv6: RFC 8200 §8.1) for a VRRP message of `len` bytes. Lengths beyond the fields' range cannot
    /// be valid advertisements and fail the length check anyway.
    fn pseudo_header(&self, len: usize) -> Vec<u8> {
        let mut header = Vec::with_capacity(40);
        match self {
            Self::V4(src, dst) => {
                header.extend(src.octets());
                header.extend(dst.octets());
                header.extend([0, IPPROTO_VRRP]);
                header.extend((len as u16).to_be_bytes());
            }
            Self::V6(src, dst) => {
                header.extend(src.octets());
                header.extend(dst.octets());
                header.extend((len as u32).to_be_bytes());
                header.extend([0, 0, 0, IPPROTO_VRRP]);
            }
        }
        header
    }
}

/// The checksum of `msg` (at least a header long) as if its checksum field
/// were zero, with the pseudo-header of `pseudo` if given.
fn checksum(msg: &[u8], pseudo: Option<&Endpoints>) -> u16 {
    let header = pseudo
        .map(|ends| ends.pseudo_header(msg.len()))
        .unwrap_or_default();
    !ones_complement_sum(&[&header, &msg[..CHECKSUM.start], &msg[CHECKSUM.end..]])
}

/// RFC 1071: the ones' complement sum of big-endian 16-bit words, the parts
/// taken as one byte string. All parts but the last must be of even length.
fn ones_complement_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        sum += words
            .by_ref()
            .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u64>();
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// `interval` in whole `unit`s, 1..=`max`.
fn to_units(interval: Duration, unit: Duration, max: u16) -> Result<u16, PacketError> {
    if interval.is_zero() {
        return Err(PacketError::IntervalZero);
    }
    if !interval.as_nanos().is_multiple_of(unit.as_nanos()) {
        return Err(PacketError::IntervalUnit { interval, unit });
    }
    u16::try_from(interval.as_nanos() / unit.as_nanos())
        .ok()
        .filter(|&n| n <= max)
        .ok_or(PacketError::IntervalTooLong {
            interval,
            max: unit * u32::from(max),
        })
}

/// The length must be the header, `count` addresses and the authentication
/// data, exactly.
fn check_length(
    len: usize,
    count: u8,
    addr_len: usize,
    auth_len: usize,
) -> Result<(), PacketError> {
    let fixed = HEADER_LEN + auth_len;
    let needed = fixed + usize::from(count) * addr_len;
    match len.checked_sub(fixed) {
        _ if len == needed => Ok(()),
        Some(room) if room.is_multiple_of(addr_len) => Err(PacketError::CountMismatch {
            count,
            room: room / addr_len,
        }),
        _ if len < needed => Err(PacketError::Truncated { len, needed }),
        _ => Err(PacketError::TrailingBytes { len, needed }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const V4_SRC: &str = "192.168.1.1";
    const V4_DST: &str = "224.0.0.18";
    const V6_SRC: &str = "fe80::1";
    const V6_DST: &str = "ff02::12";

    /// VRRPv3 from 192.168.1.1 to 224.0.0.18 with the pseudo-header checksum
    /// (keepalived's form): vrid 51, priority 100, 100 cs, 192.168.1.10.
    /// By hand, the pseudo-header c0a8 0101 e000 0012 0070 000c plus the
    /// message 3133 6401 0064 c0a8 010a sum to 0x2f981, folded 0xf983,
    /// complemented 0x067c.
    const V3_PSEUDO: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x06, 0x7c, 0xc0, 0xa8, 0x01, 0x0a,
    ];
    /// The same over the message alone: 0x1574a, folded 0x574b, 0xa8b4.
    const V3_MESSAGE_ONLY: [u8; 12] = [
        0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0xa8, 0xb4, 0xc0, 0xa8, 0x01, 0x0a,
    ];
    /// VRRPv3 from fe80::1 to ff02::12: vrid 10, priority 200, 100 cs,
    /// fe80::a and 2001:db8::a.
    const V3_IPV6: [u8; 40] = [
        0x31, 0x0a, 0xc8, 0x02, 0x00, 0x64, 0xdc, 0x11, //
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
    ];
    /// VRRPv2 with `V3_PSEUDO`'s fields (1 s), auth type 1 "secret": 2133 6401
    /// 0101 c0a8 010a 7365 6372 6574 0000 sum to 0x28432, 0x8434, 0x7bcb.
    const V2_PASSWORD: [u8; 20] = [
        0x21, 0x33, 0x64, 0x01, 0x01, 0x01, 0x7b, 0xcb, 0xc0, 0xa8, 0x01, 0x0a, //
        b's', b'e', b'c', b'r', b'e', b't', 0, 0,
    ];
    /// The same with auth type 0: 2133 6401 0001 c0a8 010a sum to 0x146e7,
    /// 0x46e8, 0xb917.
    const V2_NONE: [u8; 20] = [
        0x21, 0x33, 0x64, 0x01, 0x00, 0x01, 0xb9, 0x17, 0xc0, 0xa8, 0x01, 0x0a, //
        0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// RFC 1071 written out, independent of the code under test.
    fn rfc1071(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for i in (0..data.len()).step_by(2) {
            let lo = data.get(i + 1).copied().unwrap_or(0);
            sum += u32::from(data[i]) << 8 | u32::from(lo);
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => [
                &s.octets()[..],
                &d.octets(),
                &[0, 112],
                &(len as u16).to_be_bytes(),
            ]
            .concat(),
            (IpAddr::V6(s), IpAddr::V6(d)) => [
                &s.octets()[..],
                &d.octets(),
                &(len as u32).to_be_bytes(),
                &[0, 0, 0, 112],
            ]
            .concat(),
            _ => panic!("mixed families"),
        }
    }

    /// `msg` with a correct checksum, over the pseudo-header of `pseudo` if given.
    fn seal(mut msg: Vec<u8>, pseudo: Option<(&str, &str)>) -> Vec<u8> {
        msg[6..8].fill(0);
        let header = pseudo.map_or(vec![], |(s, d)| pseudo_header(ip(s), ip(d), msg.len()));
        let sum = rfc1071(&[header, msg.clone()].concat());
        msg[6..8].copy_from_slice(&sum.to_be_bytes());
        msg
    }

    fn keepalived_v3() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 51,
            priority: 100,
            interval: Duration::from_secs(1),
            addresses: vec![ip("192.168.1.10")],
            auth: None,
        }
    }

    fn v2(auth: Option<&[u8]>) -> Advert {
        Advert {
            version: Version::V2,
            auth: auth.map(<[u8]>::to_vec),
            ..keepalived_v3()
        }
    }

    fn v3_ipv6() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 10,
            priority: 200,
            interval: Duration::from_secs(1),
            addresses: vec![ip("fe80::a"), ip("2001:db8::a")],
            auth: None,
        }
    }

    fn decode4(bytes: &[u8]) -> Result<Decoded, PacketError> {
        decode(bytes, ip(V4_SRC), ip(V4_DST))
    }

    fn encode4(advert: &Advert) -> Result<Vec<u8>, PacketError> {
        encode(advert, ip(V4_SRC), ip(V4_DST), V3Checksum::PseudoHeader)
    }

    fn err(result: Result<impl std::fmt::Debug, PacketError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn golden_v3_ipv4_pseudo_header() {
        let pseudo = pseudo_header(ip(V4_SRC), ip(V4_DST), V3_PSEUDO.len());
        assert_eq!(rfc1071(&[&pseudo[..], &V3_PSEUDO].concat()), 0);
        assert_eq!(encode4(&keepalived_v3()).unwrap(), V3_PSEUDO);
        assert_eq!(
            decode4(&V3_PSEUDO).unwrap(),
            Decoded {
                advert: keepalived_v3(),
                v3_checksum: Some(V3Checksum::PseudoHeader)
            }
        );
    }

    #[test]
    fn golden_v3_ipv4_message_only() {
        assert_eq!(rfc1071(&V3_MESSAGE_ONLY), 0);
        let bytes = encode(
            &keepalived_v3(),
            ip(V4_SRC),
            ip(V4_DST),
            V3Checksum::MessageOnly,
        )
        .unwrap();
        assert_eq!(bytes, V3_MESSAGE_ONLY);
        assert_eq!(
            decode4(&V3_MESSAGE_ONLY).unwrap(),
            Decoded {
                advert: keepalived_v3(),
                v3_checksum: Some(V3Checksum::MessageOnly)
            }
        );
    }

    #[test]
    fn golden_v3_ipv6() {
        let (src, dst) = (ip(V6_SRC), ip(V6_DST));
        let pseudo = pseudo_header(src, dst, V3_IPV6.len());
        assert_eq!(rfc1071(&[&pseudo[..], &V3_IPV6].concat()), 0);
        for form in [V3Checksum::PseudoHeader, V3Checksum::MessageOnly] {
            assert_eq!(
                encode(&v3_ipv6(), src, dst, form).unwrap(),
                V3_IPV6,
                "{form:?}"
            );
        }
        assert_eq!(
            decode(&V3_IPV6, src, dst).unwrap(),
            Decoded {
                advert: v3_ipv6(),
                v3_checksum: None
            }
        );
        // IPv6 has no message-only form.
        let message_only = seal(V3_IPV6.to_vec(), None);
        assert!(matches!(
            decode(&message_only, src, dst),
            Err(PacketError::Checksum { .. })
        ));
    }

    #[test]
    fn golden_v2() {
        for (golden, auth) in [(V2_PASSWORD, Some(&b"secret"[..])), (V2_NONE, None)] {
            assert_eq!(rfc1071(&golden), 0);
            assert_eq!(encode4(&v2(auth)).unwrap(), golden);
            assert_eq!(
                decode4(&golden).unwrap(),
                Decoded {
                    advert: v2(auth),
                    v3_checksum: None
                }
            );
        }
        // v2 never takes the pseudo-header.
        let pseudo = seal(V2_NONE.to_vec(), Some((V4_SRC, V4_DST)));
        assert!(matches!(
            decode4(&pseudo),
            Err(PacketError::Checksum { .. })
        ));
    }

    #[test]
    fn v2_auth_data_ignored_with_type_0() {
        let mut bytes = V2_NONE.to_vec();
        bytes[12..].copy_from_slice(b"junkjunk");
        assert_eq!(decode4(&seal(bytes, None)).unwrap().advert, v2(None));
    }

    #[test]
    fn v3_reserved_bits_ignored() {
        let mut bytes = V3_PSEUDO.to_vec();
        bytes[4] = 0xf0;
        let bytes = seal(bytes, Some((V4_SRC, V4_DST)));
        assert_eq!(decode4(&bytes).unwrap().advert, keepalived_v3());
    }

    #[test]
    fn round_trips() {
        let many_v6: Vec<IpAddr> = (0..255u16)
            .map(|i| IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, i]))
            .collect();
        let cases = [
            (
                Advert {
                    priority: 0,
                    ..keepalived_v3()
                },
                V4_SRC,
                V4_DST,
            ),
            (
                Advert {
                    priority: 255,
                    interval: Duration::from_millis(10),
                    ..keepalived_v3()
                },
                V4_SRC,
                V4_DST,
            ),
            (
                Advert {
                    interval: Duration::from_millis(40_950),
                    ..keepalived_v3()
                },
                V4_SRC,
                V4_DST,
            ),
            (
                Advert {
                    addresses: many_v6,
                    ..v3_ipv6()
                },
                V6_SRC,
                V6_DST,
            ),
            (
                Advert {
                    interval: Duration::from_secs(255),
                    ..v2(Some(b"12345678"))
                },
                V4_SRC,
                V4_DST,
            ),
            (v2(Some(b"")), V4_SRC, V4_DST),
            (
                Advert {
                    addresses: vec![ip("10.0.0.1"), ip("10.0.0.2")],
                    ..v2(None)
                },
                "10.0.0.9",
                V4_DST,
            ),
        ];
        for (advert, src, dst) in cases {
            for form in [V3Checksum::PseudoHeader, V3Checksum::MessageOnly] {
                let bytes = encode(&advert, ip(src), ip(dst), form).unwrap();
                let decoded = decode(&bytes, ip(src), ip(dst)).unwrap();
                assert_eq!(decoded.advert, advert);
                let v3_over_v4 = advert.version == Version::V3 && ip(src).is_ipv4();
                assert_eq!(decoded.v3_checksum, v3_over_v4.then_some(form));
            }
        }
    }

    #[test]
    fn a_flipped_byte_fails() {
        let goldens: [(&[u8], &str, &str); 5] = [
            (&V3_PSEUDO, V4_SRC, V4_DST),
            (&V3_MESSAGE_ONLY, V4_SRC, V4_DST),
            (&V3_IPV6, V6_SRC, V6_DST),
            (&V2_PASSWORD, V4_SRC, V4_DST),
            (&V2_NONE, V4_SRC, V4_DST),
        ];
        for (golden, src, dst) in goldens {
            for i in 0..golden.len() {
                for mask in [0x01, 0x08, 0x10, 0x80, 0xff] {
                    let mut bytes = golden.to_vec();
                    bytes[i] ^= mask;
                    let result = decode(&bytes, ip(src), ip(dst));
                    if i == 0 && mask & 0xf0 != 0 {
                        // The version changed: rejected for it or for the checksum.
                        assert!(result.is_err(), "{golden:02x?} byte {i} ^ {mask:#04x}");
                    } else {
                        assert!(
                            matches!(result, Err(PacketError::Checksum { .. })),
                            "{golden:02x?} byte {i} ^ {mask:#04x}: {result:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn decode_errors() {
        let sealed = |bytes: &[u8]| seal(bytes.to_vec(), Some((V4_SRC, V4_DST)));
        let sealed_v2 = |bytes: &[u8]| seal(bytes.to_vec(), None);

        let mut bad = V3_PSEUDO;
        bad[6..8].copy_from_slice(&[0x12, 0x34]);
        assert_eq!(err(decode4(&bad)), "bad checksum 0x1234 (expected 0x067c)");

        assert_eq!(
            err(decode4(&V3_PSEUDO[..3])),
            "truncated: 3 bytes, shorter than the 8-byte header"
        );
        assert_eq!(
            err(decode4(&sealed_v2(&V2_NONE[..12]))),
            "truncated: 12 bytes, the header says 20"
        );
        assert_eq!(
            err(decode4(&sealed(&V3_PSEUDO[..10]))),
            "truncated: 10 bytes, the header says 12"
        );
        assert_eq!(
            err(decode4(&sealed(&[&V3_PSEUDO[..], &[0]].concat()))),
            "trailing bytes: 13 bytes, the header says 12"
        );
        let three = [
            &[0x31, 0x33, 0x64, 0x03, 0x00, 0x64, 0, 0][..],
            &[10, 0, 0, 1, 10, 0, 0, 2],
        ]
        .concat();
        assert_eq!(
            err(decode4(&sealed(&three))),
            "address count 3 but room for 2"
        );
        let extra = [&V3_PSEUDO[..], &[10, 0, 0, 2]].concat();
        assert_eq!(
            err(decode4(&sealed(&extra))),
            "address count 1 but room for 2"
        );

        let with = |i: usize, value: u8, golden: &[u8]| {
            let mut bytes = golden.to_vec();
            bytes[i] = value;
            bytes
        };
        assert_eq!(
            err(decode4(&sealed(&with(0, 0x41, &V3_PSEUDO)))),
            "version 4 is not VRRP 2 or 3"
        );
        assert_eq!(
            err(decode4(&sealed(&with(0, 0x32, &V3_PSEUDO)))),
            "type 2 is not ADVERTISEMENT"
        );
        assert_eq!(err(decode4(&sealed(&with(1, 0, &V3_PSEUDO)))), "vrid 0");
        assert_eq!(err(decode4(&sealed(&with(5, 0, &V3_PSEUDO)))), "interval 0");
        assert_eq!(
            err(decode4(&sealed_v2(&with(5, 0, &V2_NONE)))),
            "interval 0"
        );
        assert_eq!(
            err(decode4(&sealed_v2(&with(4, 2, &V2_NONE)))),
            "authentication type 2 is not supported"
        );
        assert_eq!(
            err(decode(&V2_NONE, ip(V6_SRC), ip(V6_DST))),
            "IPv6 advertisement with version 2"
        );
        assert_eq!(
            err(decode(&V3_PSEUDO, ip(V4_SRC), ip(V6_DST))),
            "source 192.168.1.1 and destination ff02::12 are of different families"
        );
    }

    #[test]
    fn encode_errors() {
        let interval = |ms: u64, advert: Advert| {
            encode4(&Advert {
                interval: Duration::from_millis(ms),
                ..advert
            })
        };
        assert_eq!(
            err(interval(25, keepalived_v3())),
            "interval 25ms is not a multiple of 10ms"
        );
        assert_eq!(
            err(interval(40_960, keepalived_v3())),
            "interval 40.96s is over 40.95s"
        );
        assert_eq!(err(interval(0, keepalived_v3())), "interval 0");
        assert_eq!(
            err(interval(1_500, v2(None))),
            "interval 1.5s is not a multiple of 1s"
        );
        assert_eq!(
            err(interval(256_000, v2(None))),
            "interval 256s is over 255s"
        );
        assert_eq!(err(interval(0, v2(None))), "interval 0");

        assert_eq!(
            err(encode4(&Advert {
                vrid: 0,
                ..keepalived_v3()
            })),
            "vrid 0"
        );
        assert_eq!(
            err(encode4(&Advert {
                addresses: vec![],
                ..keepalived_v3()
            })),
            "no addresses"
        );
        let many = vec![ip("10.0.0.1"); 256];
        assert_eq!(
            err(encode4(&Advert {
                addresses: many,
                ..keepalived_v3()
            })),
            "256 addresses, 255 at most"
        );
        let mixed = vec![ip("10.0.0.1"), ip("fe80::1")];
        assert_eq!(
            err(encode4(&Advert {
                addresses: mixed,
                ..keepalived_v3()
            })),
            "address fe80::1 in an IPv4 advertisement"
        );
        assert_eq!(
            err(encode4(&Advert {
                auth: Some(b"secret".to_vec()),
                ..keepalived_v3()
            })),
            "authentication with version 3 (VRRPv2 only)"
        );
        assert_eq!(
            err(encode4(&v2(Some(b"123456789")))),
            "password of 9 bytes, 8 at most"
        );
        let v2_v6 = Advert {
            addresses: vec![ip("fe80::a")],
            ..v2(None)
        };
        assert_eq!(
            err(encode(
                &v2_v6,
                ip(V6_SRC),
                ip(V6_DST),
                V3Checksum::PseudoHeader
            )),
            "IPv6 advertisement with version 2"
        );
        assert_eq!(
            err(encode(
                &keepalived_v3(),
                ip(V6_SRC),
                ip(V4_DST),
                V3Checksum::PseudoHeader
            )),
            "source fe80::1 and destination 224.0.0.18 are of different families"
        );
    }
}
