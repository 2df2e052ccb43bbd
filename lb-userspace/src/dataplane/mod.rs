//! Loading the XDP object, attaching it to interfaces and reading its maps.

mod caps;
pub mod services;
mod stats;

use std::{fmt, io, net::IpAddr};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
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

use services::Installed;

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
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("no such network interface: {0}")]
    NoSuchInterface(String),
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

/// The loaded XDP object and, once attached, where it runs.
pub struct Dataplane {
    ebpf: Ebpf,
    options: LoadOptions,
    attachment: Option<(Attachment, aya::programs::xdp::XdpLinkId)>,
    installed: Installed,
}

impl Dataplane {
    /// Loads the embedded object, sized by `options`, and its program.
    pub fn load(options: &LoadOptions) -> Result<Self, DataplaneError> {
        options.check()?;
        check_privileges()?;
        raise_memlock_limit();
        let level = options.bpf_log as u8;
        let rings = options.max_services * 2 * options.ring_size;
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, true)
            .override_global(maps::GLOBAL_RING_SIZE, &options.ring_size, true)
            .map_max_entries(maps::MAP_RINGS, rings)
            .map_max_entries(maps::MAP_SERVICES, options.max_services)
            .map_max_entries(maps::MAP_VIPS, options.max_services)
            .map_max_entries(maps::MAP_SERVICE_STATS, options.max_services)
            .map_max_entries(maps::MAP_BACKENDS, options.max_backends)
            .map_max_entries(maps::MAP_BACKEND_STATS, options.max_backends)
            .map_max_entries(maps::MAP_NAT_REVERSE, options.max_backends)
            .map_max_entries(maps::MAP_FLOWS, options.flow_entries)
            .map_max_entries(maps::MAP_FLOWS_SHARED, options.flow_entries)
            .map_max_entries(maps::MAP_AFFINITY, options.affinity_entries)
            .load(BPF_OBJECT)
            .map_err(|e| load_error(Box::new(e)))?;
        let program = xdp_program(&mut ebpf, options.program)?;
        program.load().map_err(|e| load_error(Box::new(e)))?;
        if options.program == Program::Balancer {
            load_forwarders(&mut ebpf)?;
        }
        Ok(Dataplane {
            ebpf,
            options: options.clone(),
            attachment: None,
            installed: Installed::default(),
        })
    }

    /// The loaded XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut Xdp {
        xdp_program(&mut self.ebpf, self.options.program).expect("checked by Dataplane::load")
    }

    /// Forwards the program's aya-log records to the `log` crate until the
    /// returned task is aborted. Needs a running tokio runtime.
    pub fn spawn_log_forwarder(&mut self) -> io::Result<tokio::task::JoinHandle<()>> {
        let logger = EbpfLogger::init(&mut self.ebpf).map_err(io::Error::other)?;
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

    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&Attachment, DataplaneError> {
        let ifindex = ifindex(iface)?;
        let link = self
            .program()
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|source| attach_error(iface, mode, source))?;
        let attachment = Attachment {
            iface: iface.to_string(),
            ifindex,
            mode,
        };
        Ok(&self.attachment.insert((attachment, link)).0)
    }

    /// Removes the program from its interface; a no-op when not attached.
    pub fn detach(&mut self) -> Result<Option<Attachment>, DataplaneError> {
        let Some((attachment, link)) = self.attachment.take() else {
            return Ok(None);
        };
        self.program()
            .detach(link)
            .map_err(|source| DataplaneError::Attach {
                iface: attachment.iface.clone(),
                source,
            })?;
        Ok(Some(attachment))
    }

    /// Sums the per-CPU counters.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let map = self
            .ebpf
            .map(maps::MAP_STATS)
            .ok_or(DataplaneError::Missing {
                kind: "map",
                name: maps::MAP_STATS,
            })?;
        let map_err = |source| DataplaneError::Map {
            map: maps::MAP_STATS,
            source,
        };
        let stats = PerCpuArray::<_, u64>::try_from(map).map_err(map_err)?;
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            let per_cpu = stats.get(&counter.index(), 0).map_err(map_err)?;
            counters.set(counter, per_cpu.iter().sum());
        }
        Ok(counters)
    }
}

/// Map access for [`Dataplane::apply`] and the stats readers.
impl Dataplane {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
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
        self.installed.last_generation = plan.installed.last_generation;
        self.write(settings, &plan)?;
        log::debug!(
            "applied {} services, {} new backends",
            services.len(),
            plan.fresh_backends.len()
        );
        self.installed = plan.installed;
        Ok(())
    }

    /// Writes `plan`: removals first (freeing capacity, and nothing reads
    /// what they free), then backends, NAT replies and VIPs, then each
    /// service's idle ring and last its entry, which flips to that ring.
    fn write(
        &mut self,
        settings: &DirectorSettings,
        plan: &services::Plan,
    ) -> Result<(), DataplaneError> {
        let map_err = |map: &'static str| move |source| DataplaneError::Map { map, source };
        let (old, new) = (&self.installed, &plan.installed);
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
        let kept: std::collections::HashSet<u32> = new.backends.values().map(|s| s.id).collect();
        let gone_backends: Vec<u32> = old
            .backends
            .values()
            .map(|s| s.id)
            .filter(|id| !kept.contains(id))
            .collect();

        self.array::<maps::Settings>(maps::MAP_SETTINGS)?
            .set(
                0,
                services::settings_entry(settings, new.nat.len() as u32),
                0,
            )
            .map_err(map_err(maps::MAP_SETTINGS))?;

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
        // Zeroed, so flows and affinities on them pick again.
        let mut backend_map = self.array::<Backend>(maps::MAP_BACKENDS)?;
        for id in &gone_backends {
            backend_map
                .set(*id, Backend::default(), 0)
                .map_err(map_err(maps::MAP_BACKENDS))?;
        }

        self.zero_traffic(maps::MAP_BACKEND_STATS, &plan.fresh_backends)?;
        let mut backend_map = self.array::<Backend>(maps::MAP_BACKENDS)?;
        for (id, entry) in &plan.backend_entries {
            backend_map
                .set(*id, entry, 0)
                .map_err(map_err(maps::MAP_BACKENDS))?;
        }
        let mut nat_map = self.hash::<maps::NatKey, maps::NatTarget>(maps::MAP_NAT_REVERSE)?;
        for (key, target) in &new.nat {
            nat_map
                .insert(key, target, 0)
                .map_err(map_err(maps::MAP_NAT_REVERSE))?;
        }
        let mut vip_map = self.hash::<VipKey, u8>(maps::MAP_VIPS)?;
        for (vip, flags) in &new.vips {
            vip_map
                .insert(vip, flags, 0)
                .map_err(map_err(maps::MAP_VIPS))?;
        }

        let ring_size = self.options.ring_size;
        for (key, service) in &new.services {
            let previous = self.installed.services.get(key).cloned();
            if previous.is_none() {
                self.zero_traffic(maps::MAP_SERVICE_STATS, &[service.id])?;
            }
            if previous.as_ref().is_none_or(|p| p.table != service.table) {
                // The slot being written is the one that was idle: only the
                // slots where its table differs from the new one change.
                let written = previous.as_ref().map_or(&[][..], |p| &p.idle_table[..]);
                let mut rings = self.array::<u32>(maps::MAP_RINGS)?;
                let base = service.ring * ring_size;
                for (slot, backend) in service.table.iter().enumerate() {
                    if written.get(slot) != Some(backend) {
                        rings
                            .set(base + slot as u32, *backend, 0)
                            .map_err(map_err(maps::MAP_RINGS))?;
                    }
                }
            }
            if previous.is_none_or(|p| p.entry != service.entry) {
                self.hash::<maps::ServiceKey, maps::Service>(maps::MAP_SERVICES)?
                    .insert(key, service.entry, 0)
                    .map_err(map_err(maps::MAP_SERVICES))?;
            }
        }
        Ok(())
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

    /// Adds VIPs that `xlb_decap` strips IP-in-IP for.
    pub fn set_decap_vips(&mut self, vips: &[IpAddr]) -> Result<(), DataplaneError> {
        let mut map = self.hash::<VipKey, u8>(maps::MAP_DECAP_VIPS)?;
        for vip in vips {
            map.insert(services::vip_key(*vip), 1, 0)
                .map_err(|source| DataplaneError::Map {
                    map: maps::MAP_DECAP_VIPS,
                    source,
                })?;
        }
        Ok(())
    }

    /// Traffic of a service in the last applied set, summed over CPUs.
    pub fn service_stats(&self, spec: &ServiceSpec) -> Result<TrafficStats, DataplaneError> {
        let key = services::service_key(spec);
        let id = self.installed.services.get(&key).map(|s| s.id);
        self.traffic(maps::MAP_SERVICE_STATS, id)
    }

    /// Traffic to a backend (address, port) in the last applied set, over
    /// all the services it serves.
    pub fn backend_stats(&self, addr: IpAddr, port: u16) -> Result<TrafficStats, DataplaneError> {
        let mut total = TrafficStats::default();
        for (&(_, a, p), slot) in &self.installed.backends {
            if (a, p) == (addr, port) {
                total += self.traffic(maps::MAP_BACKEND_STATS, Some(slot.id))?;
            }
        }
        Ok(total)
    }

    fn traffic(&self, name: &'static str, id: Option<u32>) -> Result<TrafficStats, DataplaneError> {
        let Some(id) = id else {
            return Ok(TrafficStats::default());
        };
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::Missing { kind: "map", name })?;
        let map_err = |source| DataplaneError::Map { map: name, source };
        let per_cpu = PerCpuArray::<_, TrafficStats>::try_from(map).map_err(map_err)?;
        let values = per_cpu.get(&id, 0).map_err(map_err)?;
        let mut total = TrafficStats::default();
        for value in values.iter() {
            total += *value;
        }
        Ok(total)
    }
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
    let name = std::ffi::CString::new(iface)
        .map_err(|_| DataplaneError::NoSuchInterface(iface.to_string()))?;
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(DataplaneError::NoSuchInterface(iface.to_string())),
        index => Ok(index),
    }
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
