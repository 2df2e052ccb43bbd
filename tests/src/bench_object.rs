//! The benchmarks' own XDP object, `lb-ebpf`'s `lb-ebpf-bench` built by this
//! crate's build script: `xlb_tx_floor`, the floor of `micro`, and
//! `xlb_gen` and `xlb_count` for [`crate::livegen`]. The `xlb` binary does
//! not carry them.

use anyhow::Context;
use aya::{programs::Xdp, Ebpf, EbpfLoader};
use lb_common::maps::GLOBAL_GEN_FLOWS;

pub static BENCH_BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf-bench.o"));

/// Loads the object, with `xlb_gen` set to spread its frames over `flows`
/// flows; its programs are not yet loaded into the kernel.
pub fn load(flows: u32) -> anyhow::Result<Ebpf> {
    EbpfLoader::new()
        .override_global(GLOBAL_GEN_FLOWS, &flows, true)
        .load(BENCH_BPF_OBJECT)
        .context("loading the benchmarks' BPF object")
}

/// The XDP program `name` of the loaded object.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("the BPF object has no {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}
