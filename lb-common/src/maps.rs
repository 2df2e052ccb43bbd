//! Names of the BPF maps and programs, as the loader looks them up.

/// The load balancer's XDP entry point.
pub const PROG_XLB: &str = "xlb";

/// Per-CPU array of `u64`, indexed by [`crate::stats::Counter`].
pub const MAP_STATS: &str = "XLB_STATS";
