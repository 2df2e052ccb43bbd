//! Attaching the program to interfaces and detaching it.

use super::*;

impl Dataplane {
    /// Attaches the program to `iface` (pinning the link if the data plane
    /// is pinned).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&Attachment, DataplaneError> {
        let ifindex = ifindex(iface)?;
        let mac = interface_mac(iface)?;
        let link = self
            .program()
            .attach_to_if_index(ifindex, super::xdp_mode(mode))
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
}

pub(super) fn ifindex(iface: &str) -> Result<u32, DataplaneError> {
    crate::net::ifindex(iface).ok_or_else(|| DataplaneError::NoSuchInterface(iface.to_string()))
}

/// The interface's own MAC, by rtnetlink (in this thread's namespace);
/// `None` for an interface that is not Ethernet.
pub(super) fn interface_mac(iface: &str) -> Result<Option<[u8; 6]>, DataplaneError> {
    let link = crate::net::rtnl::Rtnl::open()
        .and_then(|mut rtnl| rtnl.link(iface))
        .map_err(|e| DataplaneError::Interface {
            iface: iface.to_string(),
            problem: format!("reading its link: {e}"),
        })?;
    Ok(crate::net::rtnl::ether_mac(&link))
}

pub(super) fn attach_error(iface: &str, mode: AttachMode, source: ProgramError) -> DataplaneError {
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
