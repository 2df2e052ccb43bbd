//! Which VRRP changes a reload applies to running instances, and which
//! only a restart can: those that change who the virtual router is on the
//! wire (its interface, VRID, version, family, timers, preemption, owner
//! status) or which instances exist and move together.

use crate::model::{SyncGroup, VrrpInstance};

/// The priority of an address owner, which never follows tracking.
const OWNER: u8 = 255;

/// What a reload from `running` to `next` changes in each instance, as
/// `NAME: field, field`; or, if any change needs a restart, the key path
/// of each such change.
pub fn plan(
    running: &[VrrpInstance],
    running_groups: &[SyncGroup],
    next: &[VrrpInstance],
    next_groups: &[SyncGroup],
) -> Result<Vec<String>, Vec<String>> {
    let mut restart = Vec::new();
    let mut live = Vec::new();
    for old in running {
        if !next.iter().any(|n| n.name == old.name) {
            restart.push(format!("vrrp.instance[{}] (removed)", old.name));
        }
    }
    for new in next {
        let at = |key: &str| format!("vrrp.instance[{}].{key}", new.name);
        let Some(old) = running.iter().find(|o| o.name == new.name) else {
            restart.push(format!("vrrp.instance[{}] (added)", new.name));
            continue;
        };
        let fixed = [
            ("interface", old.interface != new.interface),
            ("vrid", old.vrid != new.vrid),
            ("version", old.version != new.version),
            (
                "advert_interval",
                old.advert_interval != new.advert_interval,
            ),
            ("preempt", old.preempt != new.preempt),
            ("preempt_delay", old.preempt_delay != new.preempt_delay),
            ("v3_checksum", old.v3_checksum != new.v3_checksum),
            (
                "priority",
                old.priority != new.priority && (old.priority == OWNER || new.priority == OWNER),
            ),
            (
                "virtual_addresses",
                old.virtual_addresses[0].is_ipv4() != new.virtual_addresses[0].is_ipv4(),
            ),
        ];
        restart.extend(fixed.iter().filter(|(_, c)| *c).map(|(key, _)| at(key)));
        let applied = [
            (
                "virtual_addresses",
                old.virtual_addresses != new.virtual_addresses,
            ),
            ("priority", old.priority != new.priority),
            ("auth_pass", old.auth_pass != new.auth_pass),
            ("unicast_peers", old.unicast_peers != new.unicast_peers),
            ("garp_count", old.garp_count != new.garp_count),
            ("garp_interval", old.garp_interval != new.garp_interval),
            ("garp_refresh", old.garp_refresh != new.garp_refresh),
            ("track", old.track != new.track),
            ("notify", old.notify != new.notify),
        ];
        let changed: Vec<&str> = applied
            .iter()
            .filter(|(_, c)| *c)
            .map(|(key, _)| *key)
            .collect();
        if !changed.is_empty() {
            live.push(format!("{}: {}", new.name, changed.join(", ")));
        }
    }
    if running_groups != next_groups {
        restart.push("vrrp.sync_group".to_owned());
    }
    if restart.is_empty() {
        Ok(live)
    } else {
        Err(restart)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::tests::valid,
        model::{Track, Tracked},
    };

    const FILE: &str = r#"
[agent]
interfaces = ["eth0"]

[[vrrp.instance]]
name = "outside"
interface = "eth0"
vrid = 51
priority = 150
virtual_addresses = ["198.18.0.10"]

[[vrrp.instance]]
name = "inside"
interface = "eth1"
vrid = 52
priority = 150
virtual_addresses = ["198.18.2.1"]

[[vrrp.sync_group]]
name = "director"
instances = ["outside", "inside"]
"#;

    fn running() -> (Vec<VrrpInstance>, Vec<SyncGroup>) {
        let model = valid(FILE);
        (model.vrrp, model.sync_groups)
    }

    fn plan_of(
        change: impl FnOnce(&mut Vec<VrrpInstance>, &mut Vec<SyncGroup>),
    ) -> Result<Vec<String>, Vec<String>> {
        let (instances, groups) = running();
        let (mut next, mut next_groups) = (instances.clone(), groups.clone());
        change(&mut next, &mut next_groups);
        plan(&instances, &groups, &next, &next_groups)
    }

    #[test]
    fn addresses_priorities_tracking_and_hooks_apply_live() {
        let planned = plan_of(|next, _| {
            next[0]
                .virtual_addresses
                .push("198.18.0.11".parse().unwrap());
            next[0].priority = 100;
            next[1].track.push(Track {
                object: Tracked::Dataplane,
                weight: -20,
            });
            next[1].notify = Some(vec!["/usr/local/bin/hook".into()]);
            next[1].auth_pass = Some("secret".into());
            next[1].garp_refresh = Some(Duration::from_secs(60));
        });
        assert_eq!(
            planned,
            Ok(vec![
                "outside: virtual_addresses, priority".to_owned(),
                "inside: auth_pass, garp_refresh, track, notify".to_owned(),
            ])
        );
        assert_eq!(plan_of(|_, _| {}), Ok(vec![]));
    }

    #[test]
    fn what_changes_the_router_on_the_wire_needs_a_restart_and_each_is_named() {
        let planned = plan_of(|next, groups| {
            next[0].vrid = 61;
            next[0].advert_interval = Duration::from_secs(2);
            next[0].priority = 255;
            next[1].virtual_addresses = vec!["fd00::1".parse().unwrap()];
            next[1].preempt = false;
            // A live change beside them is not applied either.
            next[1].notify = Some(vec!["/bin/true".into()]);
            groups.clear();
        });
        assert_eq!(
            planned,
            Err(vec![
                "vrrp.instance[outside].vrid".to_owned(),
                "vrrp.instance[outside].advert_interval".to_owned(),
                "vrrp.instance[outside].priority".to_owned(),
                "vrrp.instance[inside].preempt".to_owned(),
                "vrrp.instance[inside].virtual_addresses".to_owned(),
                "vrrp.sync_group".to_owned(),
            ])
        );
    }

    #[test]
    fn instances_added_or_removed_need_a_restart() {
        let planned = plan_of(|next, groups| {
            let mut third = next[1].clone();
            third.name = "third".into();
            third.vrid = 53;
            next.remove(1);
            next.push(third);
            groups[0].instances = vec!["outside".into()];
        });
        assert_eq!(
            planned,
            Err(vec![
                "vrrp.instance[inside] (removed)".to_owned(),
                "vrrp.instance[third] (added)".to_owned(),
                "vrrp.sync_group".to_owned(),
            ])
        );
    }
}
