//! The UDP benchmark's generator and counters for real: `xlb_gen` sends
//! live frames from one namespace, `xlb_count` counts them in another.

use std::{
    collections::BTreeSet,
    io, mem,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{bail, ensure, Context};
use lb_common::maps::GEN_FIRST_PORT;
use xlb_tests::{
    livegen::{Counter, Generator, Sent},
    netns::{Netns, Topology},
    packet::Frame,
    require_privileged,
};

const SENDS: u64 = 500_000;
const LIMIT: Duration = Duration::from_secs(60);
/// At most this share of the frames may be lost on the way.
const LOSS: f64 = 0.05;
/// Ethernet + IPv4 + UDP + 18 bytes: the shortest Ethernet frame, less its FCS.
const PAYLOAD: &[u8] = b"xlb live frames 18";

/// A namespace that sends nothing of its own (no IPv6, so no link-local
/// address, no router or multicast listener traffic), for exact counts.
fn quiet_ns(topology: &mut Topology, role: &str) -> anyhow::Result<Netns> {
    let ns = topology.add_ns(role)?;
    ns.set_sysctls(&[
        ("net.ipv6.conf.all.disable_ipv6", "1"),
        ("net.ipv6.conf.default.disable_ipv6", "1"),
    ])?;
    Ok(ns)
}

fn frame(from: &Netns, to: &Netns) -> anyhow::Result<Vec<u8>> {
    Ok(
        Frame::ipv4(Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 100))
            .macs(from.mac("eth0")?, to.mac("eth0")?)
            .udp(40000, 80, PAYLOAD),
    )
}

/// Checks that `counter` saw what was sent, less a little loss, and no more.
fn check_counted(
    what: &str,
    sent: &Sent,
    counter: &Counter,
    frame_len: usize,
) -> anyhow::Result<()> {
    let seen = counter.packets()?;
    println!(
        "{what}: sent {} frames in {:.3} s, {:.2} Mpps; counted {seen} ({:.2}%); \
         {} refused by the veth",
        sent.packets,
        sent.elapsed.as_secs_f64(),
        sent.rate() / 1e6,
        100.0 * seen as f64 / sent.packets as f64,
        sent.tx_dropped,
    );
    ensure!(
        seen <= sent.packets,
        "{what}: counted {seen} of {} sent",
        sent.packets
    );
    ensure!(
        seen as f64 >= sent.packets as f64 * (1.0 - LOSS),
        "{what}: counted only {seen} of {} sent",
        sent.packets
    );
    let bytes = counter.bytes()?;
    ensure!(
        bytes == seen * frame_len as u64,
        "{what}: {bytes} bytes counted in {seen} frames of {frame_len}"
    );
    Ok(())
}

/// Two namespaces on a veth with a queue per CPU; the receiver's XDP
/// counter is what gives its end the NAPI the frames need. One thread, then
/// one per CPU.
#[test]
fn the_counter_sees_what_the_generator_sends() -> anyhow::Result<()> {
    require_privileged!();
    let mut generator = Generator::load(1024)?;
    let cpus = generator.threads();
    let mut topology = Topology::new("livegen")?;
    let client = quiet_ns(&mut topology, "client")?;
    let sink = quiet_ns(&mut topology, "sink")?;
    // A queue per generator thread each way, as live frames land in the peer's queue of the
    // sending CPU.
    topology.link_queues(&client, "eth0", &sink, "eth0", cpus)?;
    let frame = frame(&client, &sink)?;

    let runs = if cpus > 1 { vec![1, cpus] } else { vec![1] };
    for threads in runs {
        generator.set_threads(threads)?;
        let counter = Counter::attach(&sink, "eth0")?;
        let sent = generator.send(&client, "eth0", &frame, SENDS, LIMIT)?;
        ensure!(
            sent.packets == SENDS,
            "{threads} threads sent {} of {SENDS} frames within {LIMIT:?}",
            sent.packets
        );
        check_counted(
            &format!("{threads} thread(s)"),
            &sent,
            &counter,
            frame.len(),
        )?;
    }
    Ok(())
}

/// Through a switch, as in the lab: the generator's switch port has GRO on
/// and no XDP program. Frames captured on that port carry the flows'
/// source ports and no UDP checksum, and are otherwise the frame given.
#[test]
fn frames_cross_a_switch_in_many_flows() -> anyhow::Result<()> {
    require_privileged!();
    const FLOWS: u32 = 16;
    const COUNT: u64 = 4096;
    let mut topology = Topology::new("livegen")?;
    let mut switch = topology.add_switch("sw")?;
    let client = quiet_ns(&mut topology, "client")?;
    let sink = quiet_ns(&mut topology, "sink")?;
    let port = switch.connect(&mut topology, &client, "eth0")?;
    switch.connect(&mut topology, &sink, "eth0")?;
    let counter = Counter::attach(&sink, "eth0")?;
    let capture = capture(switch.netns(), &port)?;
    let frame = frame(&client, &sink)?;

    let sent = Generator::load(FLOWS)?.send(&client, "eth0", &frame, COUNT, LIMIT)?;
    ensure!(
        sent.packets == COUNT,
        "sent {} of {COUNT} frames",
        sent.packets
    );
    check_counted("through a switch", &sent, &counter, frame.len())?;

    let captured = receive_all(&capture)?;
    ensure!(!captured.is_empty(), "captured nothing on {port}");
    let mut ports = BTreeSet::new();
    for got in &captured {
        let sport = u16::from_be_bytes([got[34], got[35]]);
        ensure!(
            (GEN_FIRST_PORT..GEN_FIRST_PORT + FLOWS as u16).contains(&sport),
            "source port {sport} is none of the {FLOWS} flows'"
        );
        let mut expected = frame.clone();
        expected[34..36].copy_from_slice(&sport.to_be_bytes());
        expected[40..42].copy_from_slice(&[0, 0]);
        ensure!(
            *got == expected,
            "captured {got:02x?}, expected {expected:02x?}"
        );
        ports.insert(sport);
    }
    println!(
        "captured {} frames on {port} in {} flows",
        captured.len(),
        ports.len()
    );
    ensure!(ports.len() > 1, "every captured frame is of one flow");
    Ok(())
}

/// A packet socket on `ifname` in `ns`, non-blocking, taking every frame.
fn capture(ns: &Netns, ifname: &str) -> anyhow::Result<OwnedFd> {
    let ifindex = i32::try_from(ns.ifindex(ifname)?)?;
    ns.run(move || -> io::Result<OwnedFd> {
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain system calls; the fd is owned as soon as it exists.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(all),
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = all;
            addr.sll_ifindex = ifindex;
            let bound = libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if bound < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(fd)
        }
    })?
    .context("opening a packet socket")
}

/// Every frame queued on the socket (as many as its buffer held).
fn receive_all(fd: &OwnedFd) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: `buf` outlives the call and its length is passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Ok(frames);
            }
            bail!("receiving captured frames: {err}");
        }
        frames.push(buf[..n as usize].to_vec());
    }
}
