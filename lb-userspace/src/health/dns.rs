//! Just enough of the DNS wire format (RFC 1035) for a health check: one
//! question out, the header of the answer back.

use thiserror::Error;

const HEADER_LEN: usize = 12;
const FLAG_QR: u16 = 0x8000;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const CLASS_IN: u16 = 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty label in DNS name {0:?}")]
    EmptyLabel(String),
    #[error("label longer than 63 bytes in DNS name {0:?}")]
    LongLabel(String),
    #[error("DNS name {0:?} is longer than 255 bytes")]
    LongName(String),
}

/// A standard query for `name` (dotted, trailing dot optional; "." is the
/// root) of type `qtype`, class IN, recursion desired.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, NameError> {
    let mut packet = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&FLAG_RD.to_be_bytes());
    // QDCOUNT 1, ANCOUNT, NSCOUNT, ARCOUNT 0
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    let relative = name.strip_suffix('.').unwrap_or(name);
    if !relative.is_empty() {
        for label in relative.split('.') {
            match label.len() {
                0 => return Err(NameError::EmptyLabel(name.to_owned())),
                len @ 1..=63 => packet.push(len as u8),
                _ => return Err(NameError::LongLabel(name.to_owned())),
            }
            packet.extend_from_slice(label.as_bytes());
        }
    }
    packet.push(0);
    if packet.len() - HEADER_LEN > 255 {
        return Err(NameError::LongName(name.to_owned()));
    }
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(packet)
}

/// `message` as sent over TCP: after its length in two bytes (RFC 1035
/// 4.2.2). A query is far shorter than 64 KiB.
pub fn tcp_message(message: &[u8]) -> Vec<u8> {
    let length = u16::try_from(message.len()).expect("a DNS query fits 64 KiB");
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The parts of a message's header a health check looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// A response, not a query.
    pub response: bool,
    pub truncated: bool,
    pub rcode: u8,
    pub answers: u16,
}

/// The header of `message`, or `None` if it is too short to have one.
pub fn decode_header(message: &[u8]) -> Option<Header> {
    let header = message.get(..HEADER_LEN)?;
    let word = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let flags = word(2);
    Some(Header {
        id: word(0),
        response: flags & FLAG_QR != 0,
        truncated: flags & FLAG_TC != 0,
        rcode: (flags & 0x000f) as u8,
        answers: word(6),
    })
}

/// The mnemonic of a response code (RFC 1035, RFC 2136).
pub fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        other => return format!("RCODE {other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_golden_bytes() {
        let query = encode_query(0xabcd, "example.com", 1).unwrap();
        let expected: &[u8] = &[
            0xab, 0xcd, // id
            0x01, 0x00, // RD
            0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // counts
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, //
            0x00, 0x01, // A
            0x00, 0x01, // IN
        ];
        assert_eq!(query, expected);
        assert_eq!(encode_query(0xabcd, "example.com.", 1).unwrap(), expected);
    }

    #[test]
    fn tcp_messages_carry_their_length() {
        let query = encode_query(0xabcd, "example.com", 1).unwrap();
        let framed = tcp_message(&query);
        assert_eq!(&framed[..2], &[0x00, 29]);
        assert_eq!(&framed[2..], &query[..]);
        assert_eq!(tcp_message(&[7; 300])[..2], [0x01, 0x2c]);
    }

    #[test]
    fn root_query() {
        let query = encode_query(1, ".", 2).unwrap();
        assert_eq!(&query[HEADER_LEN..], &[0, 0x00, 0x02, 0x00, 0x01]);
        assert_eq!(encode_query(1, "", 2).unwrap(), query);
    }

    #[test]
    fn bad_names() {
        assert_eq!(
            encode_query(1, "a..b", 1),
            Err(NameError::EmptyLabel("a..b".into()))
        );
        let long_label = "x".repeat(64);
        assert_eq!(
            encode_query(1, &long_label, 1),
            Err(NameError::LongLabel(long_label.clone()))
        );
        assert!(encode_query(1, &"x".repeat(63), 1).is_ok());
        let long_name = vec!["x".repeat(63); 4].join(".");
        assert_eq!(
            encode_query(1, &long_name, 1),
            Err(NameError::LongName(long_name.clone()))
        );
    }

    #[test]
    fn response_header_golden_bytes() {
        // NXDOMAIN, QR RD RA, one question, no answers
        let nxdomain = [0x12, 0x34, 0x81, 0x83, 0, 1, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            decode_header(&nxdomain),
            Some(Header {
                id: 0x1234,
                response: true,
                truncated: false,
                rcode: 3,
                answers: 0
            })
        );
        // NOERROR, QR TC RD, two answers
        let truncated = [0x00, 0x07, 0x83, 0x00, 0, 1, 0, 2, 0, 0, 0, 0, 0xff];
        assert_eq!(
            decode_header(&truncated),
            Some(Header {
                id: 7,
                response: true,
                truncated: true,
                rcode: 0,
                answers: 2
            })
        );
        // our own query
        let query = encode_query(9, "a", 1).unwrap();
        assert_eq!(decode_header(&query).map(|h| h.response), Some(false));
        assert_eq!(decode_header(&nxdomain[..11]), None);
    }

    #[test]
    fn rcode_names() {
        assert_eq!(rcode_name(0), "NOERROR");
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(5), "REFUSED");
        assert_eq!(rcode_name(15), "RCODE 15");
    }
}
