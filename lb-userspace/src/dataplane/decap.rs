//! The decapsulator's maps: the VIPs it takes tunnels for and the
//! sources allowed to send them.

use super::*;

impl Dataplane {
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

    pub(super) fn addresses(&mut self, name: &'static str) -> Result<Vec<IpAddr>, DataplaneError> {
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
    pub(super) fn replace_addresses(
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

    pub(super) fn add_addresses(
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
}
