//! Types shared by the XDP programs (`lb-ebpf`) and the agent (`xlb`).
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]` and
//! defined here once, so both sides agree on layout and numbering.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod flow;
#[cfg(feature = "user")]
pub mod maglev;
pub mod maps;
pub mod stats;
