//! The data plane behind one facade, [`Dataplane`], split by job: the
//! object, its pins and programs ([`object`]), attaching ([`attach`]), the
//! services as specs and their pure plan ([`services`]), the ordered write
//! of a plan ([`sync`]), what it counts and holds ([`telemetry`],
//! [`reader`]), the decapsulator's maps ([`decap`]), health probes through
//! the data path ([`health`]).

mod attach;
mod caps;
mod decap;
mod flows;
pub mod health;
mod object;
mod pins;
mod reader;
mod rings;
pub mod services;
mod spec;
mod stats;
mod sync;
mod telemetry;

use std::{
    fmt, io,
    net::IpAddr,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLinkId,
        ProgramError, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use aya_obj::programs::XdpAttachType;
use lb_common::{
    maglev::is_prime,
    maps::{self, Backend, TrafficStats, VipKey},
    stats::Counter,
};
use log::LevelFilter;
use tokio::io::unix::AsyncFd;

pub use crate::model::{AttachMode, Protocol};
pub use caps::check_privileges;
pub use pins::{mount_bpffs_fix, not_on_bpffs, on_bpffs};
pub use spec::{AffinitySpec, BackendSpec, DirectorSettings, NextHop, ServiceSpec, SpecError};
pub use stats::Counters;

use rings::Rings;
use services::{Installed, Slot};

pub use flows::{FlowCounts, FlowCountsBySlot, FlowEntry, FlowTable, Walk, WalkError};
pub use reader::{Layout, Reader};

/// The compiled `lb-ebpf` object, built by this crate's build script.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// The kernel's attach mode for `mode`.
fn xdp_mode(mode: AttachMode) -> XdpMode {
    match mode {
        AttachMode::Native => XdpMode::Driver,
        AttachMode::Generic => XdpMode::Skb,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("no such network interface: {0}")]
    NoSuchInterface(String),
    #[error("{iface}: {problem}")]
    Interface { iface: String, problem: String },
    #[error(
        "xlb needs root, or CAP_BPF and CAP_NET_ADMIN, to load XDP programs \
         (this process lacks {missing})"
    )]
    NotPermitted { missing: String },
    #[error(
        "an XDP program is already attached to {iface}; remove it with \
         `ip link set dev {iface} xdp off` (or stop the xlb that owns it)"
    )]
    AlreadyAttached { iface: String },
    #[error("{iface} does not support {mode} XDP; try --mode generic")]
    ModeNotSupported { iface: String, mode: AttachMode },
    #[error("the kernel refused the XDP program: {0}")]
    Load(Box<dyn std::error::Error + Send + Sync>),
    #[error("attaching to {iface}: {source}")]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error("the BPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("{0}")]
    Options(String),
    #[error("{0}")]
    Pins(String),
}

/// Which of the object's programs to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Program {
    /// `xlb`, the load balancer.
    #[default]
    Balancer,
    /// `xlb_decap`, for real servers behind IP-in-IP.
    Decap,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Balancer => maps::PROG_XLB,
            Program::Decap => maps::PROG_DECAP,
        }
    }
}

/// What to load and how large to make the maps.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub program: Program,
    /// The most verbose level the BPF side logs at; records above it are
    /// filtered in the kernel and cost one load each.
    pub bpf_log: LevelFilter,
    /// Slots per Maglev ring, a prime: 4 bytes each, two rings per service.
    pub maglev_size: u32,
    pub max_services: u32,
    pub max_backends: u32,
    pub flow_entries: u32,
    pub affinity_entries: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            program: Program::Balancer,
            bpf_log: LevelFilter::Info,
            maglev_size: maps::DEFAULT_RING_SIZE,
            max_services: maps::DEFAULT_MAX_SERVICES,
            max_backends: maps::DEFAULT_MAX_BACKENDS,
            flow_entries: maps::DEFAULT_FLOW_ENTRIES,
            affinity_entries: maps::DEFAULT_AFFINITY_ENTRIES,
        }
    }
}

impl LoadOptions {
    /// A decapsulator: no rings or flow tables worth the memory.
    pub fn decap(bpf_log: LevelFilter) -> Self {
        LoadOptions {
            program: Program::Decap,
            bpf_log,
            maglev_size: 2,
            max_services: 1,
            max_backends: 2,
            flow_entries: 1,
            affinity_entries: 1,
        }
    }

    fn check(&self) -> Result<(), DataplaneError> {
        if !is_prime(self.maglev_size) {
            return Err(DataplaneError::Options(format!(
                "Maglev ring size {} is not prime",
                self.maglev_size
            )));
        }
        let ring_entries = self.max_services as u64 * 2 * self.maglev_size as u64;
        if ring_entries > u32::MAX as u64 || self.max_services == 0 {
            return Err(DataplaneError::Options(format!(
                "{} services with rings of {} slots do not fit one map",
                self.max_services, self.maglev_size
            )));
        }
        if self.max_backends < 2 {
            return Err(DataplaneError::Options(format!(
                "room for {} backends leaves none (id 0 is never used)",
                self.max_backends
            )));
        }
        Ok(())
    }
}

/// An attached program, detached by [`Dataplane::detach`] or on drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub ifindex: u32,
    pub mode: AttachMode,
}

/// The error for a data plane without its rings mapped.
const RINGS_MISSING: DataplaneError = DataplaneError::Missing {
    kind: "array map",
    name: maps::MAP_RINGS,
};

/// One CPU's global counters: a `u64` per [`Counter`], by index.
type StatsRecord = [u64; Counter::COUNT as usize];

/// The maps the agent reads and writes, and pins.
const AGENT_MAPS: [&str; 16] = [
    maps::MAP_STATS,
    maps::MAP_SERVICES,
    maps::MAP_BACKENDS,
    maps::MAP_RINGS,
    maps::MAP_FLOW_CACHE,
    maps::MAP_FLOWS_SHARED,
    maps::MAP_AFFINITY,
    maps::MAP_NAT_REVERSE,
    maps::MAP_BACKEND_STATS,
    maps::MAP_SETTINGS,
    maps::MAP_VIPS,
    maps::MAP_DECAP_VIPS,
    maps::MAP_DECAP_SOURCES,
    maps::MAP_IFACES,
    maps::MAP_ADDR_FILTER,
    maps::MAP_JUMPS,
];

/// The XDP program and its maps, loaded by this process or adopted from
/// pins a previous agent left, and where the program is attached.
pub struct Dataplane {
    /// The object as loaded; `None` when adopted.
    ebpf: Option<Ebpf>,
    /// The program when adopted (a loaded one lives in `ebpf`).
    adopted: Option<Xdp>,
    maps: std::collections::HashMap<&'static str, Map>,
    rings: Option<Rings>,
    options: LoadOptions,
    attachments: Vec<(Attachment, Link)>,
    /// Shared with the layouts readers hold: replaced, not changed.
    installed: std::sync::Arc<Installed>,
    /// Per service, the traffic of backends it no longer has (from this
    /// process's changes: an adopting agent starts from its backends').
    retired: std::collections::HashMap<maps::ServiceKey, TrafficStats>,
    /// Maglev tables built by this process's applies.
    maglev_builds: u64,
    /// A write failed part way: the next writes every entry, not only
    /// those that differ from what was installed.
    resync: bool,
    pinned: Option<PathBuf>,
}

/// How an attachment is held: dropping an owned or unpinned link detaches;
/// a pinned one stays until its pin is removed.
enum Link {
    Owned(XdpLinkId),
    Pinned(PinnedLink),
    Unpinned { _held: FdLink },
}

impl Dataplane {}

/// Map access for [`Dataplane::apply`] and the stats readers.
impl Dataplane {
    fn map(&self, name: &'static str) -> Result<&Map, DataplaneError> {
        self.maps
            .get(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DataplaneError> {
        self.maps
            .get_mut(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })
    }

    fn array<V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<Array<&mut MapData, V>, DataplaneError> {
        Array::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { map: name, source })
    }

    fn hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, DataplaneError> {
        HashMap::try_from(self.map_mut(name)?)
            .map_err(|source| DataplaneError::Map { map: name, source })
    }

    fn rings(&self) -> Result<&Rings, DataplaneError> {
        self.rings.as_ref().ok_or(RINGS_MISSING)
    }

    fn rings_mut(&mut self) -> Result<&mut Rings, DataplaneError> {
        self.rings.as_mut().ok_or(RINGS_MISSING)
    }

    pub fn options(&self) -> &LoadOptions {
        &self.options
    }
}

/// The CPUs the kernel may run the program on.
fn possible_cpus() -> Result<u32, DataplaneError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(_, e)| DataplaneError::Options(format!("counting the CPUs: {e}")))
}

/// Buckets per CPU in the flow cache for `options`.
fn flow_buckets_per_cpu(options: &LoadOptions) -> Result<u32, DataplaneError> {
    Ok(maps::flow_buckets(options.flow_entries, possible_cpus()?))
}

#[cfg(test)]
mod object_tests {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

    /// The library routines BPF links as byte-at-a-time loops.
    const BYTE_LOOPS: [&str; 4] = ["memset", "memcpy", "memmove", "memcmp"];

    #[test]
    fn no_program_calls_a_byte_loop() {
        let file = object::File::parse(super::BPF_OBJECT).expect("the embedded BPF object");
        let mut calls = Vec::new();
        for section in file.sections() {
            for (offset, relocation) in section.relocations() {
                let RelocationTarget::Symbol(index) = relocation.target() else {
                    continue;
                };
                let name = file
                    .symbol_by_index(index)
                    .and_then(|symbol| symbol.name())
                    .unwrap_or_default();
                if BYTE_LOOPS.contains(&name) {
                    let section = section.name().unwrap_or_default();
                    calls.push(format!("{section}+{offset:#x} calls {name}"));
                }
            }
        }
        assert!(calls.is_empty(), "{calls:#?}");
    }

    /// Nor does the object carry them: aya-ebpf defines them, and the
    /// linker wrapper (`lb-ebpf/tools/bpf-linker-filtered`) keeps them
    /// from being exported, so they are dropped.
    #[test]
    fn the_object_holds_no_byte_loop() {
        let file = object::File::parse(super::BPF_OBJECT).expect("the embedded BPF object");
        let held: Vec<&str> = file
            .symbols()
            .filter_map(|symbol| symbol.name().ok())
            .filter(|name| BYTE_LOOPS.contains(name))
            .collect();
        assert!(held.is_empty(), "{held:?}");
    }

    /// `bpf_tail_call`'s helper number.
    const TAIL_CALL: i32 = 12;

    /// The entry program jumps to each forwarder by a constant index (its
    /// instruction before the call loads r3 with an immediate), which the
    /// kernel patches into a direct jump; a computed one would go through
    /// a retpoline.
    #[test]
    fn the_entry_program_tail_calls_by_constant_index() {
        let file = object::File::parse(super::BPF_OBJECT).expect("the embedded BPF object");
        let xlb = file
            .symbols()
            .find(|s| s.name() == Ok(lb_common::maps::PROG_XLB))
            .expect("the xlb program");
        let section = file
            .section_by_index(xlb.section_index().expect("in a section"))
            .expect("its section");
        let code = section.data().expect("its code");
        let start = xlb.address() as usize;
        let program = &code[start..start + xlb.size() as usize];
        let instructions: Vec<&[u8]> = program.chunks_exact(8).collect();
        let mut calls = 0;
        for (i, insn) in instructions.iter().enumerate() {
            let imm = i32::from_le_bytes(insn[4..8].try_into().unwrap());
            // BPF_JMP | BPF_CALL to a helper (src register 0).
            if insn[0] != 0x85 || insn[1] >> 4 != 0 || imm != TAIL_CALL {
                continue;
            }
            calls += 1;
            let before = instructions[i - 1];
            // BPF_ALU64 | BPF_MOV | BPF_K into r3.
            assert!(
                before[0] == 0xb7 && before[1] & 0x0f == 3,
                "the tail call at instruction {i} has a computed index"
            );
        }
        let forwarders = lb_common::maps::FORWARDERS.len();
        assert_eq!(calls, forwarders, "one tail call per forwarder");
    }
}
