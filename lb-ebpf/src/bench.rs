//! The load benchmarks' own programs: `xlb_gen`, the load generator that
//! BPF_PROG_TEST_RUN runs in live-frames mode on the client's veth, and
//! `xlb_count`, the backends' counter.
//!
//! Both work at constant offsets: `xlb_gen` takes only untagged Ethernet +
//! IPv4 without options + UDP (the `udp` benchmark's flows), or + TCP
//! without options (the `flood` benchmark's spoofed SYNs), the frame its
//! caller built.

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_get_prandom_u32, macros::map, maps::PerCpuArray,
    programs::XdpContext, Global,
};
use lb_common::maps::{COUNT_BYTES, COUNT_PACKETS, DEFAULT_GEN_FLOWS, GEN_FIRST_PORT};

use crate::consts::{ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP};

/// Source ports `xlb_gen` cycles through; set by the loader.
#[no_mangle]
static GEN_FLOWS: Global<u32> = Global::new(DEFAULT_GEN_FLOWS);

/// Frames `xlb_gen` has sent on this CPU, at index 0; also its flow sequence.
#[map(name = "XLB_GEN_SENT")]
static GEN_SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What `xlb_count` has seen on this CPU: packets and bytes.
#[map(name = "XLB_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

const ETHERTYPE: usize = 12;
const IP_VERSION_IHL: usize = 14;
const IP_PROTO: usize = 23;
const IP_START: usize = 14;
const IP_CSUM: usize = 24;
const IP_SRC: usize = 26;
const IP_SRC_LOW: usize = 28;
const IP_DST_END: usize = 34;
const L4_START: usize = 34;
const UDP_SPORT: usize = 34;
const UDP_CSUM: usize = 40;
const UDP_END: usize = 42;
const TCP_SPORT: usize = 34;
const TCP_SEQ: usize = 38;
const TCP_OFFSET: usize = 46;
const TCP_CSUM: usize = 50;
/// A TCP header without options.
const TCP_LEN: usize = 20;
const TCP_END: usize = L4_START + TCP_LEN;

/// UDP (a 60-byte frame): gives the frame the next source port of the
/// cycle and a zero UDP checksum (none, which IPv4 allows). TCP (a bare
/// header: the SYN flood): gives the frame a random source address in its
/// /16, a random source port from 32768 up and a random sequence number,
/// with both checksums recomputed. Then XDP_TX; drops anything but
/// Ethernet + IPv4 (no options) + UDP or TCP without options or payload.
#[inline(always)]
pub fn generate(ctx: &XdpContext) -> u32 {
    let start = ctx.data();
    if start + UDP_END > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    let Some(sent) = GEN_SENT.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    let bytes = start as *mut u8;
    // SAFETY: every offset is below UDP_END, checked against the frame's end.
    unsafe {
        let ethertype = (bytes.add(ETHERTYPE) as *const [u8; 2]).read_unaligned();
        if u16::from_be_bytes(ethertype) != ETH_P_IP || *bytes.add(IP_VERSION_IHL) != 0x45 {
            return xdp_action::XDP_DROP;
        }
        let proto = *bytes.add(IP_PROTO);
        if proto == IPPROTO_TCP {
            // The loader sends TCP frames of exactly TCP_END bytes.
            if start + TCP_END > ctx.data_end() {
                return xdp_action::XDP_DROP;
            }
            // SAFETY: the frame holds TCP_END bytes at least.
            spoof_syn(bytes);
            *sent += 1;
            return xdp_action::XDP_TX;
        }
        if proto != IPPROTO_UDP {
            return xdp_action::XDP_DROP;
        }
        // The loader keeps flows in 1..=GEN_MAX_FLOWS; checked_rem spares a
        // panic path the verifier would refuse.
        let flow = (*sent)
            .checked_rem(u64::from(GEN_FLOWS.load()))
            .unwrap_or(0);
        let sport = GEN_FIRST_PORT.wrapping_add(flow as u16);
        (bytes.add(UDP_SPORT) as *mut [u8; 2]).write_unaligned(sport.to_be_bytes());
        (bytes.add(UDP_CSUM) as *mut [u8; 2]).write_unaligned([0, 0]);
        // Per-CPU slot: no other writer while this program runs here.
        *sent += 1;
    }
    xdp_action::XDP_TX
}

/// Rewrites a TCP frame of [`TCP_END`] bytes (checked by the caller) as a SYN from a random address and port: see [`generate`].
#[inline(always)]
unsafe fn spoof_syn(bytes: *mut u8) {
    let random = bpf_get_prandom_u32();
    let seq = bpf_get_prandom_u32();
    let [a, b, c, d] = random.to_be_bytes();
    (bytes.add(IP_SRC_LOW) as *mut [u8; 2]).write_unaligned([a, b]);
    (bytes.add(TCP_SPORT) as *mut [u8; 2]).write_unaligned([c | 0x80, d]);
    (bytes.add(TCP_SEQ) as *mut [u8; 4]).write_unaligned(seq.to_be_bytes());
    // SYN only, no options: data offset 5.
    (bytes.add(TCP_OFFSET) as *mut [u8; 2]).write_unaligned([0x50, 0x02]);
    (bytes.add(IP_CSUM) as *mut [u8; 2]).write_unaligned([0, 0]);
    let ip = fold(sum_words(bytes, IP_START, L4_START));
    (bytes.add(IP_CSUM) as *mut [u8; 2]).write_unaligned((!ip).to_be_bytes());
    (bytes.add(TCP_CSUM) as *mut [u8; 2]).write_unaligned([0, 0]);
    // The pseudo-header: addresses, protocol and TCP length.
    let pseudo = sum_words(bytes, IP_SRC, IP_DST_END) + u32::from(IPPROTO_TCP) + TCP_LEN as u32;
    let tcp = fold(pseudo + sum_words(bytes, L4_START, TCP_END));
    (bytes.add(TCP_CSUM) as *mut [u8; 2]).write_unaligned((!tcp).to_be_bytes());
}

/// The big-endian 16-bit words of `bytes[from..to]` summed (`to - from`
/// even, at most a few dozen words, so no overflow).
#[inline(always)]
unsafe fn sum_words(bytes: *const u8, from: usize, to: usize) -> u32 {
    let mut sum = 0u32;
    let mut at = from;
    while at < to {
        let word = (bytes.add(at) as *const [u8; 2]).read_unaligned();
        sum += u32::from(u16::from_be_bytes(word));
        at += 2;
    }
    sum
}

/// A ones'-complement sum folded to 16 bits.
#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Counts the frame and drops it.
#[inline(always)]
pub fn count(ctx: &XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let (Some(packets), Some(bytes)) = (
        COUNT.get_ptr_mut(COUNT_PACKETS),
        COUNT.get_ptr_mut(COUNT_BYTES),
    ) {
        // Per-CPU slots: no other writer while this program runs here.
        unsafe {
            *packets += 1;
            *bytes += len;
        }
    }
    xdp_action::XDP_DROP
}
