//! Bounded traffic sources run inside a namespace: every loop stops at its
//! count or its deadline, whichever comes first.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::netns::Netns;

/// How much to send and how fast.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub count: u64,
    pub per_second: u64,
    /// Hard stop, even if `count` was not reached.
    pub max_duration: Duration,
}

/// Sends up to `load.count` UDP datagrams of `payload_len` bytes to `dst`
/// from inside `ns`; returns how many the kernel accepted.
pub fn udp(ns: &Netns, dst: SocketAddr, payload_len: usize, load: Load) -> anyhow::Result<u64> {
    ns.run(move || -> anyhow::Result<u64> {
        let bind: SocketAddr = match dst {
            SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
            SocketAddr::V6(_) => "[::]:0".parse()?,
        };
        let socket = UdpSocket::bind(bind).context("binding the UDP sender")?;
        let payload = vec![0x5a; payload_len];
        paced(load, || Ok(socket.send_to(&payload, dst).is_ok()))
    })?
}

/// Opens up to `load.count` TCP connections to `dst` from inside `ns`
/// (refused ones count: the SYN went out); returns the attempts made.
pub fn tcp_connects(ns: &Netns, dst: SocketAddr, load: Load) -> anyhow::Result<u64> {
    ns.run(move || -> anyhow::Result<u64> {
        paced(load, || {
            match TcpStream::connect_timeout(&dst, Duration::from_secs(1)) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
                Err(e) => Err(e).with_context(|| format!("connecting to {dst}")),
            }
        })
    })?
}

/// Calls `send` at `per_second` until `count` successes or `max_duration`.
fn paced(load: Load, mut send: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<u64> {
    let start = Instant::now();
    let deadline = start + load.max_duration;
    let gap = Duration::from_secs_f64(1.0 / load.per_second.max(1) as f64);
    let mut sent = 0;
    while sent < load.count && Instant::now() < deadline {
        if send()? {
            sent += 1;
        }
        let next = start + gap * sent as u32;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(sent)
}
