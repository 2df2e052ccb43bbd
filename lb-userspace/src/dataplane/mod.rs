//! Loading the XDP object, attaching it to interfaces and reading its maps.

mod caps;
mod stats;

use std::{fmt, io};

use aya::{
    maps::PerCpuArray,
    programs::{ProgramError, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use lb_common::{maps, stats::Counter};
use log::LevelFilter;
use tokio::io::unix::AsyncFd;

pub use caps::check_privileges;
pub use stats::Counters;

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
    #[error("reading map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
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
    attachment: Option<(Attachment, aya::programs::xdp::XdpLinkId)>,
}

impl Dataplane {
    /// Loads the embedded object and the `xlb` program into the kernel.
    /// `bpf_log` is the most verbose level the BPF side emits; records above
    /// it are filtered in the kernel and cost one load each.
    pub fn load(bpf_log: LevelFilter) -> Result<Self, DataplaneError> {
        check_privileges()?;
        raise_memlock_limit();
        let level = bpf_log as u8;
        let mut ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, true)
            .load(BPF_OBJECT)
            .map_err(|e| load_error(Box::new(e)))?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|e| load_error(Box::new(e)))?;
        Ok(Dataplane {
            ebpf,
            attachment: None,
        })
    }

    /// The `xlb` XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> &mut Xdp {
        xdp_program(&mut self.ebpf).expect("checked by Dataplane::load")
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

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    let missing = DataplaneError::Missing {
        kind: "program",
        name: maps::PROG_XLB,
    };
    let program = ebpf.program_mut(maps::PROG_XLB).ok_or(missing)?;
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
