//! The UDP benchmark's own programs: `xlb_gen`, the load generator that
//! BPF_PROG_TEST_RUN runs in live-frames mode on the client's veth, and
//! `xlb_count`, the backends' counter.
//!
//! Both work at constant offsets: `xlb_gen` takes only untagged Ethernet +
//! IPv4 without options + UDP, the frame its caller built.

use aya_ebpf::{
    bindings::xdp_action, macros::map, maps::PerCpuArray, programs::XdpContext, Global,
};
use lb_common::maps::{COUNT_BYTES, COUNT_PACKETS, DEFAULT_GEN_FLOWS, GEN_FIRST_PORT};

use crate::consts::{ETH_P_IP, IPPROTO_UDP};

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
const UDP_SPORT: usize = 34;
const UDP_CSUM: usize = 40;
const UDP_END: usize = 42;

/// Gives the frame the next source port of the cycle and a zero UDP
/// checksum (none, which IPv4 allows), then XDP_TX; drops anything but
/// Ethernet + IPv4 (no options) + UDP.
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
        if u16::from_be_bytes(ethertype) != ETH_P_IP
            || *bytes.add(IP_VERSION_IHL) != 0x45
            || *bytes.add(IP_PROTO) != IPPROTO_UDP
        {
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
