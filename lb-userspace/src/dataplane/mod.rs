//! Loading the XDP object, attaching it to interfaces and reading its maps.

mod caps;
mod flows;
pub mod health;
mod pins;
mod reader;
mod rings;
pub mod services;
mod stats;

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

pub use caps::check_privileges;
pub use services::{
    AffinitySpec, BackendSpec, DirectorSettings, NextHop, Protocol, ServiceSpec, SpecError,
};
pub use stats::Counters;

use rings::Rings;
use services::{Installed, Slot};

pub use flows::{FlowCounts, FlowCountsBySlot, FlowEntry, FlowTable, Walk, WalkError};
pub use reader::{Layout, Reader};

/// The compiled `lb-ebpf` object, built by this crate's build script.
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AttachMode {
    /// In the driver, before any socket buffer is allocated (fastest).
    #[default]
    Native,
    /// In the kernel stack, for drivers without XDP support (slower).
    Generic,
}

impl AttachMode {
    /// "native" or "generic".
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }

    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
    /// `xlb_tx_floor`, a bare XDP_TX: the benchmarks' floor.
    TxFloor,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::Balancer => maps::PROG_XLB,
            Program::Decap => maps::PROG_DECAP,
            Program::TxFloor => maps::PROG_TX_FLOOR,
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
    pub ring_size: u32,
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
            ring_size: maps::DEFAULT_RING_SIZE,
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
            ring_size: 2,
            max_services: 1,
            max_backends: 2,
            flow_entries: 1,
            affinity_entries: 1,
        }
    }

    fn check(&self) -> Result<(), DataplaneError> {
        if !is_prime(self.ring_size) {
            return Err(DataplaneError::Options(format!(
                "Maglev ring size {} is not prime",
                self.ring_size
            )));
        }
        let ring_entries = self.max_services as u64 * 2 * self.ring_size as u64;
        if ring_entries > u32::MAX as u64 || self.max_services == 0 {
            return Err(DataplaneError::Options(format!(
                "{} services with rings of {} slots do not fit one map",
                self.max_services, self.ring_size
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

/// What [`Dataplane::adopt_pins`] found.
struct AdoptedPins {
    maps: std::collections::HashMap<&'static str, Map>,
    sizes: std::collections::HashMap<&'static str, u32>,
    program: Xdp,
    attachments: Vec<(Attachment, Link)>,
}

impl AdoptedPins {
    fn into_dataplane(self, dir: &Path, options: LoadOptions) -> Dataplane {
        Dataplane {
            ebpf: None,
            adopted: Some(self.program),
            maps: self.maps,
            rings: None,
            options,
            attachments: self.attachments,
            installed: Default::default(),
            retired: Default::default(),
            maglev_builds: 0,
            resync: false,
            pinned: Some(dir.to_path_buf()),
        }
    }
}

/// How an attachment is held: dropping an owned or unpinned link detaches;
/// a pinned one stays until its pin is removed.
enum Link {
    Owned(XdpLinkId),
    Pinned(PinnedLink),
    Unpinned { _held: FdLink },
}

impl Dataplane {
    /// Loads the embedded object, sized by `options`, and its program.
    pub fn load(options: &LoadOptions) -> Result<Self, DataplaneError> {
        let rings = options.max_services * 2 * options.ring_size;
        let mut ebpf = load_object(options)?;
        let program = xdp_program(&mut ebpf, options.program)?;
        program.load().map_err(|e| load_error(Box::new(e)))?;
        if options.program == Program::Balancer {
            load_forwarders(&mut ebpf)?;
        }
        let mut map_table = std::collections::HashMap::new();
        for name in AGENT_MAPS {
            let map = ebpf
                .take_map(name)
                .ok_or(DataplaneError::Missing { kind: "map", name })?;
            map_table.insert(name, map);
        }
        let mut dataplane = Dataplane {
            ebpf: Some(ebpf),
            adopted: None,
            maps: map_table,
            rings: None,
            options: options.clone(),
            attachments: Vec::new(),
            installed: Default::default(),
            retired: Default::default(),
            maglev_builds: 0,
            resync: false,
            pinned: None,
        };
        dataplane.map_rings(rings)?;
        Ok(dataplane)
    }

    /// Takes over the program, maps and links pinned under `dir` by an
    /// agent that is gone, with the bookkeeping that wrote the maps, so that
    /// the next [`Dataplane::apply`] keeps every flow. `None` if nothing is
    /// pinned there.
    pub fn adopt(dir: &Path) -> Result<Option<Self>, DataplaneError> {
        let Some(parts) = Self::adopt_pins(dir, Program::Balancer)? else {
            return Ok(None);
        };
        let sizes = &parts.sizes;
        let max_services = sizes[maps::MAP_SERVICES];
        let options = LoadOptions {
            ring_size: sizes[maps::MAP_RINGS] / max_services,
            max_services,
            max_backends: sizes[maps::MAP_BACKENDS],
            flow_entries: sizes[maps::MAP_FLOWS_SHARED],
            affinity_entries: sizes[maps::MAP_AFFINITY],
            ..LoadOptions::default()
        };
        let rings = sizes[maps::MAP_RINGS] * 2;
        let mut dataplane = parts.into_dataplane(dir, options);
        dataplane.map_rings(rings)?;
        let installed = services::recover(dataplane.read_contents()?, max_services)
            .map_err(|e| DataplaneError::Pins(format!("adopting {}: {e}", dir.display())))?;
        dataplane.installed = std::sync::Arc::new(installed);
        Ok(Some(dataplane))
    }

    /// Takes over the decapsulator (`xlb_decap`) pinned under `dir` by an
    /// earlier `xlb decap`: its program, maps and links. `None` if no
    /// decapsulator is pinned there.
    pub fn adopt_decap(dir: &Path) -> Result<Option<Self>, DataplaneError> {
        let Some(parts) = Self::adopt_pins(dir, Program::Decap)? else {
            return Ok(None);
        };
        let rings = parts.sizes[maps::MAP_RINGS] * 2;
        let mut dataplane = parts.into_dataplane(dir, LoadOptions::decap(LevelFilter::Info));
        dataplane.map_rings(rings)?;
        Ok(Some(dataplane))
    }

    /// The maps, `which` program and links pinned under `dir`, if `which`
    /// is pinned there.
    fn adopt_pins(dir: &Path, which: Program) -> Result<Option<AdoptedPins>, DataplaneError> {
        // The program is pinned last: a directory without it is half made.
        let marker = match which {
            Program::Balancer => dir.join(maps::MAP_SERVICES),
            _ => dir.join(which.name()),
        };
        if !marker.exists() {
            return Ok(None);
        }
        check_privileges()?;
        raise_memlock_limit();
        let pin_err = |what: &Path, e: &dyn fmt::Display| {
            DataplaneError::Pins(format!("adopting {}: {e}", what.display()))
        };
        let mut maps = std::collections::HashMap::new();
        let mut sizes = std::collections::HashMap::new();
        for name in AGENT_MAPS {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| pin_err(&path, &e))?;
            let info = data.info().map_err(|e| pin_err(&path, &e))?;
            sizes.insert(name, info.max_entries());
            maps.insert(
                name,
                Map::from_map_data(data).map_err(|e| pin_err(&path, &e))?,
            );
        }
        let path = dir.join(which.name());
        let program =
            Xdp::from_pin(&path, XdpAttachType::Interface).map_err(|e| pin_err(&path, &e))?;
        let mut attachments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| pin_err(dir, &e))? {
            let entry = entry.map_err(|e| pin_err(dir, &e))?;
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((mode, iface)) = link_pin_name(&file) else {
                continue;
            };
            let link =
                PinnedLink::from_pin(entry.path()).map_err(|e| pin_err(&entry.path(), &e))?;
            let Ok(ifindex) = ifindex(&iface) else {
                // The interface went away, and the link with it.
                log::warn!("{iface} is gone: dropping its pinned XDP link");
                link.unpin().map_err(|e| pin_err(&entry.path(), &e))?;
                continue;
            };
            let attachment = Attachment {
                ifindex,
                iface,
                mode,
            };
            attachments.push((attachment, Link::Pinned(link)));
        }
        Ok(Some(AdoptedPins {
            maps,
            sizes,
            program,
            attachments,
        }))
    }

    fn map_rings(&mut self, entries: u32) -> Result<(), DataplaneError> {
        let Some(Map::Array(data)) = self.maps.get(maps::MAP_RINGS) else {
            return Err(RINGS_MISSING);
        };
        let rings = Rings::map(data, entries)
            .map_err(|e| DataplaneError::Options(format!("mapping {}: {e}", maps::MAP_RINGS)))?;
        self.rings = Some(rings);
        Ok(())
    }

    /// Makes `dir` a directory on a bpffs (see [`Dataplane::pin`]), or
    /// says why it cannot be one, before anything is loaded.
    pub fn prepare_pins(dir: &Path) -> Result<(), DataplaneError> {
        pins::prepare(dir)
    }

    /// Pins the maps, the program and its links under `dir` (a bpffs,
    /// mounted at /sys/fs/bpf if it is not yet), so that they outlive this
    /// process until [`Dataplane::unpin`].
    pub fn pin(&mut self, dir: &Path) -> Result<(), DataplaneError> {
        pins::prepare(dir)?;
        // Set first, so that unpinning after a failure removes what was pinned.
        self.pinned = Some(dir.to_path_buf());
        for (name, map) in &self.maps {
            map.pin(dir.join(name)).map_err(|e| pin_error(name, &e))?;
        }
        for at in 0..self.attachments.len() {
            self.pin_link(dir, at)?;
        }
        // Last: adopting looks for the program's pin.
        let name = self.options.program.name();
        self.program()
            .pin(dir.join(name))
            .map_err(|e| pin_error(name, &e))?;
        Ok(())
    }

    /// Pins the link of attachment `at` if this process owns it.
    fn pin_link(&mut self, dir: &Path, at: usize) -> Result<(), DataplaneError> {
        if !matches!(self.attachments[at].1, Link::Owned(_)) {
            return Ok(());
        }
        let (attachment, Link::Owned(id)) = self.attachments.remove(at) else {
            unreachable!("checked above")
        };
        let name = link_pin_file(&attachment);
        let pinned = self
            .program()
            .take_link(id)
            .map_err(|e| pin_error(&name, &e))
            .and_then(|link| FdLink::try_from(link).map_err(|e| pin_error(&name, &e)))
            .and_then(|link| link.pin(dir.join(&name)).map_err(|e| pin_error(&name, &e)));
        // On an error the link is dropped, which detaches it.
        self.attachments
            .insert(at, (attachment, Link::Pinned(pinned?)));
        Ok(())
    }

    /// Removes the pins: the program detaches when this value drops or
    /// [`Dataplane::detach`] runs, and the maps go with it.
    pub fn unpin(&mut self) -> Result<(), DataplaneError> {
        let Some(dir) = self.pinned.take() else {
            return Ok(());
        };
        let unpin_err = |e: &dyn fmt::Display| {
            DataplaneError::Pins(format!("removing the pins in {}: {e}", dir.display()))
        };
        let mut first_error = None;
        for (attachment, link) in std::mem::take(&mut self.attachments) {
            let link = match link {
                Link::Pinned(pinned) => match pinned.unpin() {
                    Ok(fd_link) => Link::Unpinned { _held: fd_link },
                    Err(e) => {
                        first_error.get_or_insert(unpin_err(&e));
                        continue;
                    }
                },
                held => held,
            };
            self.attachments.push((attachment, link));
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        pins::remove(&dir).map_err(|e| unpin_err(&e))
    }

    /// Where the maps are pinned, if they are.
    pub fn pinned(&self) -> Option<&Path> {
        self.pinned.as_deref()
    }

    /// The loaded XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut Xdp {
        match (&mut self.ebpf, &mut self.adopted) {
            (Some(ebpf), _) => {
                xdp_program(ebpf, self.options.program).expect("checked by Dataplane::load")
            }
            (None, Some(program)) => program,
            (None, None) => unreachable!("a data plane is loaded or adopted"),
        }
    }

    /// Forwards the program's aya-log records to the `log` crate until the
    /// returned task is aborted. Needs a running tokio runtime.
    pub fn spawn_log_forwarder(&mut self) -> io::Result<tokio::task::JoinHandle<()>> {
        let logger = match &mut self.ebpf {
            Some(ebpf) => EbpfLogger::init(ebpf),
            None => {
                let id = self.program().info().map_err(io::Error::other)?.id();
                EbpfLogger::init_from_id(id)
            }
        }
        .map_err(io::Error::other)?;
        // SAFETY: the logger owns its ring buffer fd for its whole life and
        // always returns that fd.
        let mut logger =
            unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        Ok(tokio::spawn(async move {
            loop {
                let Ok(mut guard) = logger.readable_mut().await else {
                    return;
                };
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }))
    }

    /// Attaches the program to `iface` (pinning the link if the data plane
    /// is pinned).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&Attachment, DataplaneError> {
        let ifindex = ifindex(iface)?;
        let mac = interface_mac(iface)?;
        let link = self
            .program()
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| attach_error(iface, mode, source))?;
        let attachment = Attachment {
            iface: iface.to_string(),
            ifindex,
            mode,
        };
        self.attachments.push((attachment, Link::Owned(link)));
        let at = self.attachments.len() - 1;
        // Frames are balanced once the interface's MAC is known; until then
        // (and if this fails, after the detach) they pass to the kernel.
        let known = match mac {
            Some(mac) => self.set_interface(ifindex, mac),
            None => Err(DataplaneError::Interface {
                iface: iface.to_string(),
                problem: "not an Ethernet interface: XDP balancing needs one".into(),
            }),
        };
        if let Err(e) = known {
            self.detach_from(iface)?;
            return Err(e);
        }
        if let Some(dir) = self.pinned.clone() {
            self.pin_link(&dir, at)?;
        }
        Ok(&self.attachments[at].0)
    }

    pub fn attachments(&self) -> impl Iterator<Item = &Attachment> {
        self.attachments.iter().map(|(a, _)| a)
    }

    /// Removes the program from `iface`; a no-op when not attached there.
    pub fn detach_from(&mut self, iface: &str) -> Result<Option<Attachment>, DataplaneError> {
        let Some(at) = self.attachments.iter().position(|(a, _)| a.iface == iface) else {
            return Ok(None);
        };
        let (attachment, link) = self.attachments.remove(at);
        // Gone with the interface, or left for a later attach: either way
        // harmless, so a failure here does not stop the detach.
        if let Ok(mut ifaces) = self.array::<maps::Iface>(maps::MAP_IFACES) {
            let slot = maps::iface_slot(attachment.ifindex);
            if ifaces
                .get(&slot, 0)
                .is_ok_and(|i| i.ifindex == attachment.ifindex)
            {
                let _ = ifaces.set(slot, maps::Iface::default(), 0);
            }
        }
        match link {
            Link::Owned(id) => {
                self.program()
                    .detach(id)
                    .map_err(|source| DataplaneError::Attach {
                        iface: attachment.iface.clone(),
                        source,
                    })?;
            }
            Link::Pinned(pinned) => {
                pinned.unpin().map_err(|e| {
                    DataplaneError::Pins(format!("unpinning the link on {iface}: {e}"))
                })?;
            }
            Link::Unpinned { .. } => {}
        }
        Ok(Some(attachment))
    }

    /// Removes the program from every interface it is attached to.
    pub fn detach(&mut self) -> Result<Vec<Attachment>, DataplaneError> {
        let ifaces: Vec<String> = self.attachments().map(|a| a.iface.clone()).collect();
        let mut detached = Vec::new();
        for iface in ifaces {
            detached.extend(self.detach_from(&iface)?);
        }
        Ok(detached)
    }

    /// Whether the maps answer: one read of a counter.
    pub fn maps_answer(&self) -> bool {
        self.map(maps::MAP_STATS)
            .ok()
            .and_then(|map| PerCpuArray::<_, StatsRecord>::try_from(map).ok())
            .is_some_and(|stats| stats.get(&0, 0).is_ok())
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let stats = PerCpuArray::<_, StatsRecord>::try_from(self.map(maps::MAP_STATS)?).map_err(
            |source| DataplaneError::Map {
                map: maps::MAP_STATS,
                source,
            },
        )?;
        reader::counters(&stats)
    }
}

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

    /// Makes the maps serve exactly `services`, after checking all of them:
    /// a rejected set changes nothing. Unchanged rings are not rewritten.
    pub fn apply(
        &mut self,
        services: &[ServiceSpec],
        settings: &DirectorSettings,
    ) -> Result<(), DataplaneError> {
        let opts = self.options.clone();
        services::validate(services, settings, opts.max_services, opts.max_backends)?;
        let plan = services::plan(
            services,
            &self.installed,
            opts.max_services,
            opts.max_backends,
            opts.ring_size,
        );
        // Never hand out a generation twice, even if a write below fails.
        std::sync::Arc::make_mut(&mut self.installed).last_generation =
            plan.installed.last_generation;
        let retired = self.retired_after(&plan.installed)?;
        if let Err(e) = self.write(settings, &plan) {
            // The maps may hold some of the plan: write whole rings and
            // every entry next time.
            for service in std::sync::Arc::make_mut(&mut self.installed)
                .services
                .values_mut()
            {
                service.idle_table = services::Table::default();
            }
            self.resync = true;
            return Err(e);
        }
        self.resync = false;
        log::debug!(
            "applied {} services, {} new backends",
            services.len(),
            plan.fresh_backends.len()
        );
        self.installed = std::sync::Arc::new(plan.installed);
        self.retired = retired;
        self.maglev_builds += u64::from(plan.rings_built);
        Ok(())
    }

    /// Maglev tables built so far: an apply builds one for each service
    /// whose backends, their ids or their weights changed, and no other.
    pub fn maglev_builds(&self) -> u64 {
        self.maglev_builds
    }

    /// The traffic each service's removed backends carried once `next` is
    /// installed: what it was, plus the backends `next` takes away (read
    /// now, before their slots are cleared or reused), for services `next`
    /// still has.
    fn retired_after(
        &self,
        next: &services::Installed,
    ) -> Result<std::collections::HashMap<maps::ServiceKey, TrafficStats>, DataplaneError> {
        let mut retired = self.retired.clone();
        for (key, slot) in &self.installed.backends {
            if next.backends.get(key) != Some(slot) {
                *retired.entry(key.0).or_default() += self.traffic(Some(slot.id))?;
            }
        }
        retired.retain(|service, _| next.services.contains_key(service));
        Ok(retired)
    }

    /// Writes `plan`: removed services, NAT replies and VIPs first, then
    /// backends, NAT replies and VIPs, then each service's idle ring and its
    /// entry, which flips to that ring; last the backends no ring holds any
    /// more are cleared.
    fn write(
        &mut self,
        settings: &DirectorSettings,
        plan: &services::Plan,
    ) -> Result<(), DataplaneError> {
        let map_err = |map: &'static str| move |source| DataplaneError::Map { map, source };
        let (old, new) = (&self.installed, &plan.installed);
        // The address filter lets the old and the new addresses through
        // while the maps change, then only the new ones.
        let (old_filter, new_filter) = (services::addr_filter(old), services::addr_filter(new));
        let both: Vec<u64> = old_filter
            .iter()
            .zip(&new_filter)
            .map(|(o, n)| o | n)
            .collect();
        let gone_services: Vec<_> = old
            .services
            .keys()
            .filter(|k| !new.services.contains_key(k))
            .copied()
            .collect();
        let gone_nat: Vec<_> = old
            .nat
            .keys()
            .filter(|k| !new.nat.contains_key(k))
            .copied()
            .collect();
        let gone_vips: Vec<_> = old
            .vips
            .keys()
            .filter(|v| !new.vips.contains_key(v))
            .copied()
            .collect();
        // Only entries that change are written (all after a failed write).
        let all = self.resync;
        let changed_nat: Vec<_> = new
            .nat
            .iter()
            .filter(|(key, target)| all || old.nat.get(key) != Some(target))
            .map(|(key, target)| (*key, *target))
            .collect();
        let changed_vips: Vec<_> = new
            .vips
            .iter()
            .filter(|(vip, flags)| all || old.vips.get(vip) != Some(flags))
            .map(|(vip, flags)| (*vip, *flags))
            .collect();
        let backend_entries: Vec<(u32, Backend)> = match all {
            true => new
                .entries
                .iter()
                .map(|(id, entry)| (*id, *entry))
                .collect(),
            false => plan.backend_entries.clone(),
        };
        let kept: std::collections::HashSet<u32> = new.backends.values().map(|s| s.id).collect();
        let gone_backends: Vec<u32> = old
            .backends
            .values()
            .map(|s| s.id)
            .filter(|id| !kept.contains(id))
            .collect();

        self.array::<maps::Settings>(maps::MAP_SETTINGS)?
            .set(0, services::settings_entry(settings, new), 0)
            .map_err(map_err(maps::MAP_SETTINGS))?;
        self.write_filter(&old_filter, &both)?;

        let mut service_map = self.hash::<maps::ServiceKey, maps::Service>(maps::MAP_SERVICES)?;
        for key in &gone_services {
            service_map
                .remove(key)
                .map_err(map_err(maps::MAP_SERVICES))?;
        }
        let mut nat_map = self.hash::<maps::NatKey, maps::NatTarget>(maps::MAP_NAT_REVERSE)?;
        for key in &gone_nat {
            nat_map
                .remove(key)
                .map_err(map_err(maps::MAP_NAT_REVERSE))?;
        }
        let mut vip_map = self.hash::<VipKey, u8>(maps::MAP_VIPS)?;
        for vip in &gone_vips {
            vip_map.remove(vip).map_err(map_err(maps::MAP_VIPS))?;
        }
        self.zero_traffic(maps::MAP_BACKEND_STATS, &plan.fresh_backends)?;
        let mut backend_map = self.array::<Backend>(maps::MAP_BACKENDS)?;
        for (id, entry) in &backend_entries {
            backend_map
                .set(*id, entry, 0)
                .map_err(map_err(maps::MAP_BACKENDS))?;
        }
        let mut nat_map = self.hash::<maps::NatKey, maps::NatTarget>(maps::MAP_NAT_REVERSE)?;
        for (key, target) in &changed_nat {
            nat_map
                .insert(key, target, 0)
                .map_err(map_err(maps::MAP_NAT_REVERSE))?;
        }
        let mut vip_map = self.hash::<VipKey, u8>(maps::MAP_VIPS)?;
        for (vip, flags) in &changed_vips {
            vip_map
                .insert(vip, flags, 0)
                .map_err(map_err(maps::MAP_VIPS))?;
        }

        let ring_size = self.options.ring_size;
        for (key, service) in &new.services {
            let previous = self.installed.services.get(key).cloned();
            if previous.as_ref().is_none_or(|p| p.table != service.table) {
                // The slot being written is the one that was idle: only the
                // slots where its table differs from the new one change.
                let written = previous.as_ref().map_or(&[][..], |p| &p.idle_table[..]);
                self.rings_mut()?
                    .write(service.ring * ring_size, &service.table, written);
            }
            if previous.is_none_or(|p| p.entry != service.entry) {
                self.hash::<maps::ServiceKey, maps::Service>(maps::MAP_SERVICES)?
                    .insert(key, service.entry, 0)
                    .map_err(map_err(maps::MAP_SERVICES))?;
            }
        }
        // Last, once no ring points to them: zeroed, so flows and
        // affinities on them pick again.
        let mut backend_map = self.array::<Backend>(maps::MAP_BACKENDS)?;
        for id in &gone_backends {
            backend_map
                .set(*id, Backend::default(), 0)
                .map_err(map_err(maps::MAP_BACKENDS))?;
        }
        self.write_filter(&both, &new_filter)
    }

    /// Marks every address in the address filter, so that the program
    /// parses every IP frame (until the next [`Dataplane::apply`]): for
    /// tests of the parser.
    pub fn parse_every_frame(&mut self) -> Result<(), DataplaneError> {
        let words = maps::ADDR_FILTER_WORDS as usize;
        self.write_filter(&vec![0; words], &vec![u64::MAX; words])
    }

    /// Writes the address-filter words of `to` that differ from `from`,
    /// what the map holds.
    fn write_filter(&mut self, from: &[u64], to: &[u64]) -> Result<(), DataplaneError> {
        let mut filter = self.array::<u64>(maps::MAP_ADDR_FILTER)?;
        for (index, (was, word)) in (0u32..).zip(from.iter().zip(to)) {
            if was != word {
                filter
                    .set(index, word, 0)
                    .map_err(|source| DataplaneError::Map {
                        map: maps::MAP_ADDR_FILTER,
                        source,
                    })?;
            }
        }
        Ok(())
    }

    fn rings(&self) -> Result<&Rings, DataplaneError> {
        self.rings.as_ref().ok_or(RINGS_MISSING)
    }

    fn rings_mut(&mut self) -> Result<&mut Rings, DataplaneError> {
        self.rings.as_mut().ok_or(RINGS_MISSING)
    }

    /// Everything [`services::recover`] needs, read from the maps.
    fn read_contents(&self) -> Result<services::MapContents, DataplaneError> {
        let map_err = |map: &'static str| move |source| DataplaneError::Map { map, source };
        let service_map =
            HashMap::<_, maps::ServiceKey, maps::Service>::try_from(self.map(maps::MAP_SERVICES)?)
                .map_err(map_err(maps::MAP_SERVICES))?;
        let services = service_map
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(maps::MAP_SERVICES))?;
        let backend_map = Array::<_, Backend>::try_from(self.map(maps::MAP_BACKENDS)?)
            .map_err(map_err(maps::MAP_BACKENDS))?;
        let mut backends = Vec::new();
        for id in 1..self.options.max_backends {
            let backend = backend_map
                .get(&id, 0)
                .map_err(map_err(maps::MAP_BACKENDS))?;
            if backend.family != 0 {
                backends.push((id, backend));
            }
        }
        let rings = self.rings()?;
        let size = self.options.ring_size;
        // `recover` refuses the entries whose ring is out of range.
        let rings = services
            .iter()
            .filter(|(_, s)| s.ring < 2 * self.options.max_services)
            .map(|(_, s)| (s.ring, rings.read(s.ring * size, size)))
            .collect();
        let nat =
            HashMap::<_, maps::NatKey, maps::NatTarget>::try_from(self.map(maps::MAP_NAT_REVERSE)?)
                .map_err(map_err(maps::MAP_NAT_REVERSE))?
                .iter()
                .collect::<Result<_, _>>()
                .map_err(map_err(maps::MAP_NAT_REVERSE))?;
        let vips = HashMap::<_, VipKey, u8>::try_from(self.map(maps::MAP_VIPS)?)
            .map_err(map_err(maps::MAP_VIPS))?
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(maps::MAP_VIPS))?;
        let settings = Array::<_, maps::Settings>::try_from(self.map(maps::MAP_SETTINGS)?)
            .map_err(map_err(maps::MAP_SETTINGS))?
            .get(&0, 0)
            .map_err(map_err(maps::MAP_SETTINGS))?;
        Ok(services::MapContents {
            settings,
            services,
            backends,
            rings,
            nat,
            vips,
        })
    }

    /// Up to `limit` live flows, of `service` only if given, from the first
    /// `16 * limit` entries of the shared flow table (65536 at least).
    pub fn flows(
        &self,
        limit: usize,
        service: Option<maps::ServiceKey>,
    ) -> Result<Vec<FlowEntry>, DataplaneError> {
        let table = HashMap::<_, lb_common::flow::FlowKey, maps::Flow>::try_from(
            self.map(maps::MAP_FLOWS_SHARED)?,
        )
        .map_err(|source| DataplaneError::Map {
            map: maps::MAP_FLOWS_SHARED,
            source,
        })?;
        reader::flows(&table, &self.installed, limit, service)
    }

    /// Handles of its own on the shared flow table (and the backends its
    /// entries name), to walk it on another thread while this data plane
    /// goes on serving.
    pub fn flow_table(&self) -> Result<FlowTable, DataplaneError> {
        let flows = maps::MAP_FLOWS_SHARED;
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        let table = || HashMap::try_from(self.own_map(flows)?).map_err(map_err(flows));
        let backends = Array::try_from(self.own_map(maps::MAP_BACKENDS)?)
            .map_err(map_err(maps::MAP_BACKENDS))?;
        Ok(FlowTable::new(
            table()?,
            table()?,
            backends,
            self.options.flow_entries,
        ))
    }

    /// The map `name` through a new file descriptor.
    fn own_map(&self, name: &'static str) -> Result<Map, DataplaneError> {
        let map_err = |source| DataplaneError::Map { map: name, source };
        let (Map::LruHashMap(data) | Map::Array(data) | Map::PerCpuArray(data)) = self.map(name)?
        else {
            return Err(DataplaneError::Missing {
                kind: "LRU hash map or array",
                name,
            });
        };
        let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
            map_err(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "dup",
                io_error,
            }))
        })?;
        let data = MapData::from_fd(fd).map_err(map_err)?;
        Map::from_map_data(data).map_err(map_err)
    }

    /// CPU `cpu`'s own entry for `key` in its flow cache, if it has one.
    pub fn cpu_flow(
        &self,
        key: &lb_common::flow::FlowKey,
        cpu: usize,
    ) -> Result<Option<maps::CachedFlow>, DataplaneError> {
        let name = maps::MAP_FLOW_CACHE;
        let map_err = |source| DataplaneError::Map { map: name, source };
        let cache = Array::<_, maps::FlowBucket>::try_from(self.map(name)?).map_err(map_err)?;
        let settings = Array::<_, maps::Settings>::try_from(self.map(maps::MAP_SETTINGS)?)
            .map_err(|source| DataplaneError::Map {
                map: maps::MAP_SETTINGS,
                source,
            })?
            .get(&0, 0)
            .map_err(|source| DataplaneError::Map {
                map: maps::MAP_SETTINGS,
                source,
            })?;
        let buckets = flow_buckets_per_cpu(&self.options)?;
        let index = lb_common::flow::cache_bucket(key, &settings.cache_keys, buckets);
        let bucket = cache
            .get(&(cpu as u32 * buckets + index), 0)
            .map_err(map_err)?;
        Ok(bucket.ways.into_iter().find(|way| way.key == *key))
    }

    /// The slot (id and generation) of a service's backend in the last
    /// applied set, which its flows carry.
    pub fn backend_slot(
        &self,
        service: &maps::ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Option<Slot> {
        self.installed.backend_slot(service, addr, port)
    }

    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    pub fn installed_service_count(&self) -> usize {
        self.installed.services.len()
    }

    /// The backends (address, port) of a service in the last applied set.
    pub fn installed_backends(
        &self,
        service: &maps::ServiceKey,
    ) -> std::collections::HashSet<(IpAddr, u16)> {
        self.installed.backends_of(service)
    }

    /// What the last apply installed, for readers that do not share this
    /// data plane (see [`Reader`]).
    pub fn layout(&self) -> Layout {
        Layout {
            installed: self.installed.clone(),
            retired: self.retired.clone(),
            max_backends: self.options.max_backends,
            attachments: self.attachments().cloned().collect(),
            maglev_builds: self.maglev_builds,
        }
    }

    /// Handles of its own on the counters, the backends' traffic and the
    /// shared flow table (see [`Reader`]).
    pub fn reader(&self) -> Result<Reader, DataplaneError> {
        let map_err = |map| move |source| DataplaneError::Map { map, source };
        let stats = maps::MAP_STATS;
        let traffic = maps::MAP_BACKEND_STATS;
        let flows = maps::MAP_FLOWS_SHARED;
        Ok(Reader::new(
            PerCpuArray::try_from(self.own_map(stats)?).map_err(map_err(stats))?,
            PerCpuArray::try_from(self.own_map(traffic)?).map_err(map_err(traffic))?,
            HashMap::try_from(self.own_map(flows)?).map_err(map_err(flows))?,
        ))
    }

    /// Clears the per-CPU traffic counters of ids being given to new owners.
    fn zero_traffic(&mut self, name: &'static str, ids: &[u32]) -> Result<(), DataplaneError> {
        let map_err = |source| DataplaneError::Map { map: name, source };
        let mut map =
            PerCpuArray::<_, TrafficStats>::try_from(self.map_mut(name)?).map_err(map_err)?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Options(e.to_string()))?;
        let zeros = vec![TrafficStats::default(); cpus];
        for id in ids {
            let values = aya::maps::PerCpuValues::try_from(zeros.clone())
                .map_err(|e| DataplaneError::Options(e.to_string()))?;
            map.set(*id, values, 0).map_err(map_err)?;
        }
        Ok(())
    }

    /// Balances frames to `mac` arriving on interface `ifindex` (the
    /// program's only source MAC out of it); [`Dataplane::attach`] does
    /// this for the interface's own MAC.
    pub fn set_interface(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), DataplaneError> {
        let map_err = |source| DataplaneError::Map {
            map: maps::MAP_IFACES,
            source,
        };
        let slot = maps::iface_slot(ifindex);
        let mut ifaces = self.array::<maps::Iface>(maps::MAP_IFACES)?;
        let held = ifaces.get(&slot, 0).map_err(map_err)?.ifindex;
        if held != 0 && held != ifindex {
            return Err(DataplaneError::Options(format!(
                "interface index {ifindex} shares slot {slot} of {} with the attached interface \
                 {held}; detach that one first",
                maps::MAP_IFACES
            )));
        }
        let iface = maps::Iface {
            mac,
            _pad: [0; 2],
            ifindex,
        };
        ifaces.set(slot, iface, 0).map_err(map_err)
    }

    /// Adds VIPs that `xlb_decap` strips IP-in-IP for.
    pub fn set_decap_vips(&mut self, vips: &[IpAddr]) -> Result<(), DataplaneError> {
        self.add_addresses(maps::MAP_DECAP_VIPS, vips)
    }

    /// Adds the directors `xlb_decap` accepts IP-in-IP from.
    pub fn set_decap_sources(&mut self, sources: &[IpAddr]) -> Result<(), DataplaneError> {
        self.add_addresses(maps::MAP_DECAP_SOURCES, sources)
    }

    /// Makes the VIPs `xlb_decap` strips IP-in-IP for exactly `vips`.
    pub fn replace_decap_vips(&mut self, vips: &[IpAddr]) -> Result<(), DataplaneError> {
        self.replace_addresses(maps::MAP_DECAP_VIPS, vips)
    }

    /// Makes the directors `xlb_decap` accepts IP-in-IP from exactly `sources`.
    pub fn replace_decap_sources(&mut self, sources: &[IpAddr]) -> Result<(), DataplaneError> {
        self.replace_addresses(maps::MAP_DECAP_SOURCES, sources)
    }

    /// The VIPs `xlb_decap` strips IP-in-IP for, sorted.
    pub fn decap_vips(&mut self) -> Result<Vec<IpAddr>, DataplaneError> {
        self.addresses(maps::MAP_DECAP_VIPS)
    }

    /// The directors `xlb_decap` accepts IP-in-IP from, sorted.
    pub fn decap_sources(&mut self) -> Result<Vec<IpAddr>, DataplaneError> {
        self.addresses(maps::MAP_DECAP_SOURCES)
    }

    fn addresses(&mut self, name: &'static str) -> Result<Vec<IpAddr>, DataplaneError> {
        let map = self.hash::<VipKey, u8>(name)?;
        let mut addrs = Vec::new();
        for key in map.keys() {
            let key = key.map_err(|source| DataplaneError::Map { map: name, source })?;
            addrs.push(services::addr_from_words(key.addr, key.family));
        }
        addrs.sort();
        Ok(addrs)
    }

    /// Adds the new addresses first, then removes the stale ones, so an
    /// address in both sets is never missing.
    fn replace_addresses(
        &mut self,
        name: &'static str,
        addrs: &[IpAddr],
    ) -> Result<(), DataplaneError> {
        self.add_addresses(name, addrs)?;
        let stale: Vec<IpAddr> = self
            .addresses(name)?
            .into_iter()
            .filter(|a| !addrs.contains(a))
            .collect();
        let mut map = self.hash::<VipKey, u8>(name)?;
        for addr in stale {
            map.remove(&services::vip_key(addr))
                .map_err(|source| DataplaneError::Map { map: name, source })?;
        }
        Ok(())
    }

    fn add_addresses(
        &mut self,
        name: &'static str,
        addrs: &[IpAddr],
    ) -> Result<(), DataplaneError> {
        let mut map = self.hash::<VipKey, u8>(name)?;
        for addr in addrs {
            map.insert(services::vip_key(*addr), 1, 0)
                .map_err(|source| DataplaneError::Map { map: name, source })?;
        }
        Ok(())
    }

    /// Traffic of a service in the last applied set, summed over CPUs: its
    /// backends', and what the backends it no longer has carried.
    pub fn service_stats(
        &self,
        service: &maps::ServiceKey,
    ) -> Result<TrafficStats, DataplaneError> {
        let name = maps::MAP_BACKEND_STATS;
        let map = PerCpuArray::<_, TrafficStats>::try_from(self.map(name)?)
            .map_err(|source| DataplaneError::Map { map: name, source })?;
        reader::service_traffic(&map, &self.installed, &self.retired, service)
    }

    /// Traffic of one service's backend in the last applied set.
    pub fn service_backend_stats(
        &self,
        service: &maps::ServiceKey,
        addr: IpAddr,
        port: u16,
    ) -> Result<TrafficStats, DataplaneError> {
        let id = self.backend_slot(service, addr, port).map(|slot| slot.id);
        self.traffic(id)
    }

    /// Traffic to a backend (address, port) in the last applied set, over
    /// all the services it serves.
    pub fn backend_stats(&self, addr: IpAddr, port: u16) -> Result<TrafficStats, DataplaneError> {
        let mut total = TrafficStats::default();
        for (&(_, a, p), slot) in &self.installed.backends {
            if (a, p) == (addr, port) {
                total += self.traffic(Some(slot.id))?;
            }
        }
        Ok(total)
    }

    /// Backend slot `id`'s traffic, summed over CPUs.
    fn traffic(&self, id: Option<u32>) -> Result<TrafficStats, DataplaneError> {
        let name = maps::MAP_BACKEND_STATS;
        let map = PerCpuArray::<_, TrafficStats>::try_from(self.map(name)?)
            .map_err(|source| DataplaneError::Map { map: name, source })?;
        reader::traffic(&map, id)
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

/// Loads the object (its maps, sized by `options`), not yet its programs.
fn load_object(options: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    options.check()?;
    check_privileges()?;
    raise_memlock_limit();
    let level = options.bpf_log as u8;
    // Two ring slots to an element.
    let rings = options.max_services * options.ring_size;
    let cpus = possible_cpus()?;
    let buckets = flow_buckets_per_cpu(options)?;
    EbpfLoader::new()
        .override_global(aya_log::LEVEL, &level, true)
        .override_global(maps::GLOBAL_RING_SIZE, &options.ring_size, true)
        .override_global(maps::GLOBAL_FLOW_BUCKETS, &buckets, true)
        .map_max_entries(maps::MAP_RINGS, rings)
        .map_max_entries(maps::MAP_SERVICES, options.max_services)
        .map_max_entries(maps::MAP_VIPS, options.max_services)
        .map_max_entries(maps::MAP_BACKENDS, options.max_backends)
        .map_max_entries(maps::MAP_BACKEND_STATS, options.max_backends)
        .map_max_entries(maps::MAP_NAT_REVERSE, options.max_backends)
        .map_max_entries(maps::MAP_FLOW_CACHE, cpus * buckets)
        .map_max_entries(maps::MAP_SYN_STAMPS, buckets)
        .map_max_entries(maps::MAP_FLOWS_SHARED, options.flow_entries)
        .map_max_entries(maps::MAP_AFFINITY, options.affinity_entries)
        .load(BPF_OBJECT)
        .map_err(|e| load_error(Box::new(e)))
}

/// Loads the forwarders and puts them in the program array `xlb` jumps through.
fn load_forwarders(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let mut fds = Vec::new();
    for (index, name) in maps::FORWARDERS {
        let program = xdp_by_name(ebpf, name)?;
        program.load().map_err(|e| load_error(Box::new(e)))?;
        let fd = program
            .fd()
            .map_err(|e| load_error(Box::new(e)))?
            .try_clone();
        fds.push((index, fd.map_err(|e| load_error(Box::new(e)))?));
    }
    let map_err = |source| DataplaneError::Map {
        map: maps::MAP_JUMPS,
        source,
    };
    let map = ebpf
        .map_mut(maps::MAP_JUMPS)
        .ok_or(DataplaneError::Missing {
            kind: "map",
            name: maps::MAP_JUMPS,
        })?;
    let mut jumps = aya::maps::ProgramArray::try_from(map).map_err(map_err)?;
    for (index, fd) in &fds {
        jumps.set(*index, fd, 0).map_err(map_err)?;
    }
    Ok(())
}

fn xdp_program(ebpf: &mut Ebpf, which: Program) -> Result<&mut Xdp, DataplaneError> {
    xdp_by_name(ebpf, which.name())
}

fn xdp_by_name<'e>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut Xdp, DataplaneError> {
    let missing = DataplaneError::Missing {
        kind: "program",
        name,
    };
    let program = ebpf.program_mut(name).ok_or(missing)?;
    program.try_into().map_err(|e| load_error(Box::new(e)))
}

fn load_error(e: Box<dyn std::error::Error + Send + Sync>) -> DataplaneError {
    DataplaneError::Load(e)
}

fn ifindex(iface: &str) -> Result<u32, DataplaneError> {
    crate::net::ifindex(iface).ok_or_else(|| DataplaneError::NoSuchInterface(iface.to_string()))
}

/// The interface's own MAC, by rtnetlink (in this thread's namespace);
/// `None` for an interface that is not Ethernet.
fn interface_mac(iface: &str) -> Result<Option<[u8; 6]>, DataplaneError> {
    let link = crate::net::rtnl::Rtnl::open()
        .and_then(|mut rtnl| rtnl.link(iface))
        .map_err(|e| DataplaneError::Interface {
            iface: iface.to_string(),
            problem: format!("reading its link: {e}"),
        })?;
    Ok(crate::net::rtnl::ether_mac(&link))
}

fn attach_error(iface: &str, mode: AttachMode, source: ProgramError) -> DataplaneError {
    let errno = match &source {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        ProgramError::XdpError(aya::programs::xdp::XdpError::NetlinkError(e)) => e.raw_os_error(),
        _ => None,
    };
    let iface = iface.to_string();
    match errno {
        Some(libc::EBUSY | libc::EEXIST) => DataplaneError::AlreadyAttached { iface },
        Some(libc::EOPNOTSUPP) => DataplaneError::ModeNotSupported { iface, mode },
        Some(libc::EPERM | libc::EACCES) => DataplaneError::NotPermitted {
            missing: "CAP_NET_ADMIN".into(),
        },
        _ => DataplaneError::Attach { iface, source },
    }
}

fn pin_error(what: &str, e: &dyn fmt::Display) -> DataplaneError {
    DataplaneError::Pins(format!("pinning {what}: {e}"))
}

/// A link's pin file: `link-MODE-IFACE`.
fn link_pin_file(attachment: &Attachment) -> String {
    format!("link-{}-{}", attachment.mode, attachment.iface)
}

/// The mode and interface a link pin file names.
fn link_pin_name(file: &str) -> Option<(AttachMode, String)> {
    let (mode, iface) = file.strip_prefix("link-")?.split_once('-')?;
    let mode = match mode {
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        _ => return None,
    };
    Some((mode, iface.to_string()))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        );
    }
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
