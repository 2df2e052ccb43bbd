//! The object: loading it, adopting and pinning what a running agent left,
//! and its programs and their log.

use super::{attach::ifindex, *};

impl Dataplane {
    /// Loads the embedded object, sized by `options`, and its program.
    pub fn load(options: &LoadOptions) -> Result<Self, DataplaneError> {
        let rings = options.max_services * 2 * options.maglev_size;
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
            maglev_size: sizes[maps::MAP_RINGS] / max_services,
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
    pub(super) fn adopt_pins(
        dir: &Path,
        which: Program,
    ) -> Result<Option<AdoptedPins>, DataplaneError> {
        // The program is pinned last: a directory without it is half made.
        let marker = match which {
            Program::Balancer => dir.join(maps::MAP_SERVICES),
            _ => dir.join(which.name()),
        };
        if !marker.exists() {
            return Ok(None);
        }
        let ours = pins::stamp(BPF_OBJECT)?;
        let found = pins::stamp_of(dir)
            .map_err(|e| DataplaneError::Pins(format!("adopting {}: {e}", dir.display())))?;
        if found.as_deref() != Some(ours.as_str()) {
            return Err(DataplaneError::Pins(format!(
                "the data plane pinned at {dir} has another map layout ({found}) than this \
                 xlb's ({ours}), so it was not adopted and is left forwarding as it is; run \
                 the xlb that pinned it, or replace it: `rm -r {dir}` detaches it (dropping \
                 established flows), then start xlb again",
                dir = dir.display(),
                found = found.as_deref().unwrap_or("none: pinned by an older xlb"),
            )));
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

    pub(super) fn map_rings(&mut self, entries: u32) -> Result<(), DataplaneError> {
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

    /// Pins the maps, the program and its links under `dir` (on a bpffs),
    /// so that they outlive this process until [`Dataplane::unpin`].
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
        pins::write_stamp(dir, &pins::stamp(BPF_OBJECT)?)
            .map_err(|e| pin_error("the layout stamp", &e))?;
        // Last: adopting looks for the program's pin.
        let name = self.options.program.name();
        self.program()
            .pin(dir.join(name))
            .map_err(|e| pin_error(name, &e))?;
        Ok(())
    }

    /// Pins the link of attachment `at` if this process owns it.
    pub(super) fn pin_link(&mut self, dir: &Path, at: usize) -> Result<(), DataplaneError> {
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

    /// Everything [`services::recover`] needs, read from the maps.
    pub(super) fn read_contents(&self) -> Result<services::MapContents, DataplaneError> {
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
        let size = self.options.maglev_size;
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
}

/// What [`Dataplane::adopt_pins`] found.
pub(super) struct AdoptedPins {
    maps: std::collections::HashMap<&'static str, Map>,
    sizes: std::collections::HashMap<&'static str, u32>,
    program: Xdp,
    attachments: Vec<(Attachment, Link)>,
}

impl AdoptedPins {
    pub(super) fn into_dataplane(self, dir: &Path, options: LoadOptions) -> Dataplane {
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

/// Loads the object (its maps, sized by `options`), not yet its programs.
pub(super) fn load_object(options: &LoadOptions) -> Result<Ebpf, DataplaneError> {
    options.check()?;
    check_privileges()?;
    raise_memlock_limit();
    let level = options.bpf_log as u8;
    // Two ring slots to an element.
    let rings = options.max_services * options.maglev_size;
    let cpus = possible_cpus()?;
    let buckets = flow_buckets_per_cpu(options)?;
    EbpfLoader::new()
        .override_global(aya_log::LEVEL, &level, true)
        .override_global(maps::GLOBAL_RING_SIZE, &options.maglev_size, true)
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
pub(super) fn load_forwarders(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
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

pub(super) fn xdp_program(ebpf: &mut Ebpf, which: Program) -> Result<&mut Xdp, DataplaneError> {
    xdp_by_name(ebpf, which.name())
}

pub(super) fn xdp_by_name<'e>(
    ebpf: &'e mut Ebpf,
    name: &'static str,
) -> Result<&'e mut Xdp, DataplaneError> {
    let missing = DataplaneError::Missing {
        kind: "program",
        name,
    };
    let program = ebpf.program_mut(name).ok_or(missing)?;
    program.try_into().map_err(|e| load_error(Box::new(e)))
}

pub(super) fn load_error(e: Box<dyn std::error::Error + Send + Sync>) -> DataplaneError {
    DataplaneError::Load(e)
}

pub(super) fn pin_error(what: &str, e: &dyn fmt::Display) -> DataplaneError {
    DataplaneError::Pins(format!("pinning {what}: {e}"))
}

/// A link's pin file: `link-MODE-IFACE`.
pub(super) fn link_pin_file(attachment: &Attachment) -> String {
    format!("link-{}-{}", attachment.mode, attachment.iface)
}

/// The mode and interface a link pin file names.
pub(super) fn link_pin_name(file: &str) -> Option<(AttachMode, String)> {
    let (mode, iface) = file.strip_prefix("link-")?.split_once('-')?;
    let mode = match mode {
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        _ => return None,
    };
    Some((mode, iface.to_string()))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
pub(super) fn raise_memlock_limit() {
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
