//! VRRP failover between directors in the lab: three directors (priorities 150, 100 and 90)
//! on one segment with a client and three backends, each running `xlb run` with the same
//! services, the client's traffic going through the VIP throughout.

use std::time::{Duration, Instant};

use lb_common::maps::Mode;
use serde_json::Value;
use xlb_tests::{
    agent::{outage, AgentTestbed, Prober, SteadyLoad},
    keepalived,
    lab::Family,
    require_privileged,
    servers::{tcp_spread, LongLived},
};

const PRIORITIES: [u8; 3] = [150, 100, 90];
/// VRRP's advertisement interval in these tests.
const ADVERT: Duration = Duration::from_millis(100);
/// Scheduling and start-up slack on top of the protocol's own times.
const MARGIN: Duration = Duration::from_millis(300);

/// The services of every director, and a VRRP instance for the VIP with `extra` lines.
fn config(priority: u8, extra: &str) -> String {
    let mut text = String::new();
    for (name, protocol) in [("web", "tcp"), ("web-udp", "udp")] {
        text += &format!(
            "[[service]]\nname = \"{name}\"\nvip = \"198.18.0.100\"\nport = 80\n\
             protocol = \"{protocol}\"\n"
        );
        for n in 0..3 {
            text += &format!("[[service.backend]]\naddress = \"198.18.1.{}\"\n", 10 + n);
        }
    }
    text + &format!(
        "\n[[vrrp.instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\n\
         priority = {priority}\nadvert_interval = \"{}ms\"\n\
         virtual_addresses = [\"198.18.0.100\"]\n{extra}\n",
        ADVERT.as_millis()
    )
}

/// Three directors, each started with its config, `extra` lines in every VRRP instance.
fn lab(tag: &str, extra: [&str; 3]) -> AgentTestbed {
    let mut lab = AgentTestbed::with_directors(tag, Mode::Dr, Family::V4, 3, 3).unwrap();
    for k in 0..3 {
        lab.write_config_of(k, &config(PRIORITIES[k], extra[k]))
            .unwrap();
    }
    for k in 0..3 {
        lab.start_of(k, &[]).unwrap();
    }
    lab
}

/// Director `k`'s view of VI_1.
fn instance(lab: &AgentTestbed, k: usize) -> Value {
    let all = lab.agents[k].get("/api/v1/vrrp").unwrap();
    all.as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "VI_1").cloned())
        .unwrap_or_else(|| panic!("no VI_1 on director {}: {all}", k + 1))
}

/// Waits until director `k` is in `state`; the time it took.
fn wait_state(lab: &AgentTestbed, k: usize, state: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let seen = instance(lab, k);
        if seen["state"] == state {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "director {} not {state} within {within:?}: {seen}\n{}",
            k + 1,
            lab.agents[k].logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether director `k` holds the VIP on its interface.
fn holds_vip(lab: &AgentTestbed, k: usize) -> bool {
    holds(lab, k, "eth0", "198.18.0.100")
}

/// The first director becomes master, the others backups.
fn settled(lab: &AgentTestbed) {
    wait_state(lab, 0, "master", Duration::from_secs(5));
    for k in 1..3 {
        wait_state(lab, k, "backup", Duration::from_secs(1));
        assert!(!holds_vip(lab, k), "backup {} holds the VIP", k + 1);
    }
    assert!(holds_vip(lab, 0), "the master holds the VIP");
}

#[test]
fn the_backup_takes_over_from_a_killed_master_and_no_connection_breaks() {
    require_privileged!();
    let mut lab = lab("vrkill", ["", "", ""]);
    settled(&lab);
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), 20).unwrap();
    let load = SteadyLoad::start(&lab.testbed.client, lab.vip(), Duration::from_secs(30));
    let prober = Prober::start(&lab.testbed.client, lab.vip(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));

    let killed = Instant::now();
    lab.agents[0].kill().unwrap();
    let down = Duration::from_millis(3 * 100 + 100 * (256 - 100) / 256);
    let took = wait_state(&lab, 1, "master", down + MARGIN);
    println!("director 2 master {took:?} after the kill (bound {down:?} + {MARGIN:?})");
    assert_eq!(
        instance(&lab, 2)["state"],
        "backup",
        "priority 90 stays backup"
    );
    assert!(holds_vip(&lab, 1));
    std::thread::sleep(Duration::from_millis(500));

    let probes = prober.finish().unwrap();
    let seen = outage(&probes, killed).unwrap();
    println!("outage: {:?}, {} requests lost", seen.gap, seen.lost);
    let batches = load.finish().unwrap();
    let sum = xlb_tests::agent::total(&batches);
    assert_eq!(
        sum.failed, 0,
        "new connections failed across the failover: {sum:?}"
    );
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "established connections broke"
    );
}

#[test]
fn a_clean_stop_hands_over_within_the_skew_time() {
    require_privileged!();
    let mut lab = lab("vrstop", ["", "", ""]);
    settled(&lab);
    let xlb = xlb_tests::xlb_bin().unwrap();
    let out = lab.agents[0]
        .director_ns
        .exec(xlb.to_str().unwrap(), &["vrrp"])
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let row = shown
        .lines()
        .find(|l| l.starts_with("VI_1"))
        .unwrap_or_default();
    assert!(
        row.contains("MASTER") && row.contains("150"),
        "xlb vrrp:\n{shown}"
    );
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), 20).unwrap();
    let prober = Prober::start(&lab.testbed.client, lab.vip(), Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));

    let stopped = Instant::now();
    let logs = lab.agents[0].stop().unwrap();
    let skew = ADVERT * (256 - 100) / 256;
    let took = wait_state(&lab, 1, "master", skew + MARGIN);
    println!("director 2 master {took:?} after SIGTERM (skew {skew:?})");
    assert!(
        !holds_vip(&lab, 0),
        "the stopped master released the VIP\n{logs}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = outage(&prober.finish().unwrap(), stopped).unwrap();
    println!("outage: {:?}, {} requests lost", seen.gap, seen.lost);
    assert_eq!(long_lived.check().unwrap(), vec![]);
}

/// A master tracking a service hands over when the service has no backend
/// taking new flows (here: all drained through the API), and takes the
/// VIP back when one is ready again: the agent publishes what instances
/// track as it changes.
#[test]
fn a_master_hands_over_while_its_tracked_service_takes_no_new_flows() {
    require_privileged!();
    let track = "track = [{ service = \"web\", weight = -60 }]";
    let lab = lab("vrtrack", [track, "", ""]);
    settled(&lab);
    assert_eq!(instance(&lab, 0)["priority"], 150);
    let set_all = |state: &str| {
        for n in 0..3 {
            let path = format!("/api/v1/services/web/backends/198.18.1.{}:80", 10 + n);
            let body = format!("{{\"admin_state\": \"{state}\"}}");
            let (status, text) = lab.agents[0]
                .request("PATCH", &path, Some(&body), None)
                .unwrap();
            assert_eq!(status, 200, "PATCH {path}: {text}");
        }
    };
    set_all("drain");
    wait_state(&lab, 1, "master", MARGIN * 2);
    wait_state(&lab, 0, "backup", MARGIN);
    assert_eq!(instance(&lab, 0)["priority"], 90, "150 less the tracked 60");
    assert!(holds_vip(&lab, 1) && !holds_vip(&lab, 0));

    set_all("ready");
    wait_state(&lab, 0, "master", MARGIN * 2);
    wait_state(&lab, 1, "backup", MARGIN);
    assert_eq!(instance(&lab, 0)["priority"], 150);
    assert!(holds_vip(&lab, 0) && !holds_vip(&lab, 1));
}

#[test]
fn the_old_master_preempts_on_return_unless_told_not_to() {
    require_privileged!();
    let mut lab = lab("vrpre", ["", "", ""]);
    settled(&lab);
    lab.agents[0].stop().unwrap();
    wait_state(&lab, 1, "master", MARGIN * 2);
    lab.start_of(0, &[]).unwrap();
    wait_state(&lab, 0, "master", Duration::from_secs(2));
    wait_state(&lab, 1, "backup", Duration::from_secs(1));
    assert!(holds_vip(&lab, 0) && !holds_vip(&lab, 1));

    // With preempt = false it comes back as backup.
    lab.agents[0].stop().unwrap();
    wait_state(&lab, 1, "master", MARGIN * 2);
    lab.write_config_of(0, &config(PRIORITIES[0], "preempt = false"))
        .unwrap();
    lab.start_of(0, &[]).unwrap();
    wait_state(&lab, 0, "backup", Duration::from_secs(2));
    std::thread::sleep(ADVERT * 10);
    assert_eq!(instance(&lab, 0)["state"], "backup", "no preemption");
    assert_eq!(instance(&lab, 1)["state"], "master");
}

#[test]
fn a_healed_partition_leaves_one_master_and_fresh_arp_caches() {
    require_privileged!();
    // Announcing periodically, the master puts the client's ARP entry right
    // whichever director hears the other first when the partition heals.
    let refresh = "garp_refresh = \"200ms\"";
    let lab = lab("vrpart", [refresh, refresh, refresh]);
    settled(&lab);
    let mac_of = |k: usize| xlb::net::mac(&lab.agents[k].director_ns.mac("eth0").unwrap());
    // The client's ARP entry for the VIP follows the master.
    let client_entry_is = |k: usize| {
        let want = mac_of(k);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let neigh = lab
                .testbed
                .client
                .ip(&["-j", "neigh", "show", "198.18.0.100"])
                .unwrap();
            if neigh.contains(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the client's ARP entry is stale: {neigh}, want director {} ({want})",
                k + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let spread = tcp_spread(&lab.testbed.client, lab.vip(), 5).unwrap();
    assert_eq!(spread.failed, 0, "{spread:?}");
    client_entry_is(0);
    // Cut director 1 off the segment, its link still up (its port leaves the bridge): it stays
    // master, and director 2 becomes one too.
    let port = &lab.testbed.director_ports[0];
    lab.testbed
        .switch
        .ip(&["link", "set", "dev", port, "nomaster"])
        .unwrap();
    wait_state(&lab, 1, "master", Duration::from_secs(2));
    assert_eq!(
        instance(&lab, 0)["state"],
        "master",
        "two masters while partitioned"
    );
    client_entry_is(1);

    lab.testbed
        .switch
        .ip(&["link", "set", "dev", port, "master", "br0"])
        .unwrap();
    wait_state(&lab, 1, "backup", Duration::from_secs(2));
    assert_eq!(instance(&lab, 0)["state"], "master");
    assert!(!holds_vip(&lab, 1));
    // The client's ARP entry for the VIP points at director 1 again.
    client_entry_is(0);
}

/// keepalived in director 2's namespace, in the foreground, with `instance` as its VRRP
/// instance; stopped with the topology at the latest.
fn keepalived(
    lab: &mut AgentTestbed,
    version: u8,
    instance: &str,
) -> xlb_tests::netns::ChildHandle {
    let agent = &lab.agents[1];
    let global = format!("router_id director2\nvrrp_version {version}");
    keepalived::spawn(
        &mut lab.testbed.topology,
        &agent.director_ns,
        &agent.dir,
        &global,
        instance,
    )
    .unwrap()
}

/// Waits until director `k` does (or does not) hold the VIP.
fn wait_vip(lab: &AgentTestbed, k: usize, held: bool, within: Duration) -> Duration {
    let started = Instant::now();
    while holds_vip(lab, k) != held {
        assert!(
            started.elapsed() < within,
            "director {} {} the VIP after {within:?}",
            k + 1,
            if held { "does not hold" } else { "still holds" }
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

/// xlb (director 1) and keepalived (director 2) in one virtual router: the higher priority is
/// master, and each takes over when the other dies, both ways.
fn interop(tag: &str, version: u8, xlb_extra: &str, advert: &str, advert_ms: u64, auth: &str) {
    let mut lab = AgentTestbed::with_directors(tag, Mode::Dr, Family::V4, 3, 2).unwrap();
    let xlb_config = |priority: u8| {
        config(priority, xlb_extra).replace(
            &format!("advert_interval = \"{}ms\"", ADVERT.as_millis()),
            &format!("advert_interval = \"{advert_ms}ms\""),
        )
    };
    let down =
        |priority: u64| Duration::from_millis(3 * advert_ms + advert_ms * (256 - priority) / 256);
    let margin = Duration::from_millis(advert_ms) + MARGIN;

    // xlb 150 is master over keepalived 100.
    lab.write_config_of(0, &xlb_config(150)).unwrap();
    lab.start_of(0, &[]).unwrap();
    if xlb_extra.contains("auth_pass") {
        // The running configuration leaves the password out for a caller without the token.
        let (status, dump) = lab.agents[0]
            .request("GET", "/api/v1/config", None, None)
            .unwrap();
        assert_eq!(status, 200, "{dump}");
        assert!(
            !dump.contains("secret")
                && dump.contains("auth_pass of the VRRP instances is left out"),
            "{dump}"
        );
    }
    let keepalived_backup = keepalived(&mut lab, version, &keepalived::instance(100, advert, auth));
    wait_state(&lab, 0, "master", down(150) + margin);
    std::thread::sleep(Duration::from_millis(3 * advert_ms));
    assert!(
        !holds_vip(&lab, 1),
        "keepalived (100) must stay backup under xlb (150)"
    );
    assert_eq!(instance(&lab, 0)["state"], "master");
    assert!(
        instance(&lab, 0)["adverts_discarded"].as_u64() == Some(0),
        "{}",
        instance(&lab, 0)
    );

    // xlb dies: keepalived takes over.
    lab.agents[0].kill().unwrap();
    let took = wait_vip(&lab, 1, true, down(100) + margin);
    println!("v{version}: keepalived master {took:?} after xlb was killed");
    // xlb returns and preempts.
    lab.start_of(0, &[]).unwrap();
    wait_state(&lab, 0, "master", down(150) + margin);
    wait_vip(&lab, 1, false, margin * 2);
    keepalived_backup
        .signal(nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    keepalived_backup
        .wait_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("keepalived stops on SIGTERM");

    // keepalived 150 is master over xlb 100; it dies and xlb takes over.
    lab.agents[0].stop().unwrap();
    lab.write_config_of(0, &xlb_config(100)).unwrap();
    let keepalived_master = keepalived(&mut lab, version, &keepalived::instance(150, advert, auth));
    wait_vip(&lab, 1, true, down(150) + margin * 2);
    lab.start_of(0, &[]).unwrap();
    wait_state(&lab, 0, "backup", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(3 * advert_ms));
    assert_eq!(
        instance(&lab, 0)["state"],
        "backup",
        "xlb (100) stays backup under keepalived (150)"
    );
    keepalived_master
        .signal(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let took = wait_state(&lab, 0, "master", down(100) + margin);
    println!("v{version}: xlb master {took:?} after keepalived was killed");
}

#[test]
fn interoperates_with_keepalived_over_vrrp_v2_with_pass_authentication() {
    require_privileged!();
    interop(
        "vrka2",
        2,
        "version = 2\nauth_pass = \"secret\"",
        "1",
        1000,
        "  authentication {\n    auth_type PASS\n    auth_pass secret\n  }",
    );
}

#[test]
fn interoperates_with_keepalived_over_vrrp_v3() {
    require_privileged!();
    interop("vrka3", 3, "", "0.1", 100, "");
}

/// Whether director `k` holds `addr` on `ifname`.
fn holds(lab: &AgentTestbed, k: usize, ifname: &str, addr: &str) -> bool {
    lab.agents[k].director_ns.has_addr(ifname, addr).unwrap()
}

#[test]
fn a_sync_group_moves_the_outer_and_the_gateway_vip_as_one() {
    require_privileged!();
    let mut lab = AgentTestbed::with_directors("vrsync", Mode::Dr, Family::V4, 3, 2).unwrap();
    let notified = lab.agents[1].dir.join("notified");
    for (k, priority) in [150u8, 100].into_iter().enumerate() {
        let notify = if k == 1 {
            format!(
                "notify = [\"/bin/sh\", \"-c\", \"echo \\\"$*\\\" >> {}\", \"notify\"]",
                notified.display()
            )
        } else {
            String::new()
        };
        let text = config(priority, &notify)
            + &format!(
                "[[vrrp.instance]]\nname = \"VI_2\"\ninterface = \"eth1\"\nvrid = 52\n\
                 priority = {priority}\nadvert_interval = \"100ms\"\n\
                 virtual_addresses = [\"198.18.2.1\"]\n\n\
                 [[vrrp.sync_group]]\nname = \"SG1\"\ninstances = [\"VI_1\", \"VI_2\"]\n"
            );
        lab.write_config_of(k, &text).unwrap();
        lab.start_of(k, &[]).unwrap();
    }
    let both_on = |k: usize, within: Duration| {
        let other = 1 - k;
        let started = Instant::now();
        loop {
            let here =
                holds(&lab, k, "eth0", "198.18.0.100") && holds(&lab, k, "eth1", "198.18.2.1");
            let there = holds(&lab, other, "eth0", "198.18.0.100")
                || holds(&lab, other, "eth1", "198.18.2.1");
            if here && !there {
                return;
            }
            assert!(
                started.elapsed() < within,
                "the VIPs are not both on director {} alone",
                k + 1
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    both_on(0, Duration::from_secs(3));

    // Director 1 loses its inner link: VI_2 there faults, and VI_1 with it.
    let inner = lab.testbed.inner_switch.clone().unwrap();
    let port = lab.testbed.inner_ports[0].clone();
    inner.ip(&["link", "set", "dev", &port, "down"]).unwrap();
    both_on(1, Duration::from_secs(2));
    let vi1 = instance(&lab, 0);
    assert_eq!(vi1["state"], "fault", "VI_1 follows its group: {vi1}");

    // The link returns: both come back to director 1 (preemption).
    inner.ip(&["link", "set", "dev", &port, "up"]).unwrap();
    both_on(0, Duration::from_secs(3));

    // Director 2's notify hook saw it become master, then backup.
    let lines = std::fs::read_to_string(&notified).unwrap_or_default();
    assert!(lines.contains("INSTANCE VI_1 MASTER 100"), "{lines}");
    assert!(lines.contains("INSTANCE VI_1 BACKUP 100"), "{lines}");
    let (_, metrics) = lab.agents[1]
        .request("GET", "/metrics", None, None)
        .unwrap();
    assert!(
        metrics.contains("xlb_vrrp_state{vrrp_instance=\"VI_2\",state=\"backup\"} 1"),
        "{metrics}"
    );
}

/// Director `k`'s transitions of VI_1 so far.
fn transitions(lab: &AgentTestbed, k: usize) -> u64 {
    instance(lab, k)["transitions"].as_u64().unwrap()
}

#[test]
fn a_reload_adds_and_drops_a_vip_and_changes_a_priority_without_a_failover() {
    require_privileged!();
    let lab = lab("vrreload", ["", "", ""]);
    settled(&lab);
    let before: Vec<u64> = (0..3).map(|k| transitions(&lab, k)).collect();
    let mut long_lived = LongLived::open(&lab.testbed.client, lab.vip(), 20).unwrap();
    let load = SteadyLoad::start(&lab.testbed.client, lab.vip(), Duration::from_secs(30));
    let reload = |k: usize| {
        let (status, body) = lab.agents[k]
            .request("POST", "/api/v1/reload", None, None)
            .unwrap();
        assert_eq!(status, 200, "director {}: {body}", k + 1);
        body
    };

    // One more VIP in every director's file, the master's reloaded first.
    let two = "virtual_addresses = [\"198.18.0.100\"]";
    let more = "virtual_addresses = [\"198.18.0.100\", \"198.18.0.101\"]";
    for (k, priority) in PRIORITIES.into_iter().enumerate() {
        let text = config(priority, "").replace(two, more);
        lab.write_config_of(k, &text).unwrap();
        let said = reload(k);
        assert!(said.contains("vrrp VI_1: virtual_addresses"), "{said}");
    }
    assert!(
        holds(&lab, 0, "eth0", "198.18.0.101"),
        "the master serves the new VIP"
    );
    for k in 1..3 {
        assert!(
            !holds(&lab, k, "eth0", "198.18.0.101"),
            "backup {} took it",
            k + 1
        );
        assert_eq!(instance(&lab, k)["state"], "backup");
    }
    assert_eq!(
        instance(&lab, 0)["virtual_addresses"],
        serde_json::json!(["198.18.0.100", "198.18.0.101"])
    );

    // A backup's priority rises below the master's: applied, still backup.
    let text = config(120, "").replace(two, more);
    lab.write_config_of(1, &text).unwrap();
    assert!(reload(1).contains("vrrp VI_1: priority"));
    let seen = instance(&lab, 1);
    assert_eq!(
        (
            seen["priority"].as_u64(),
            seen["configured_priority"].as_u64()
        ),
        (Some(120), Some(120)),
        "{seen}"
    );

    // The VIP dropped again from the master.
    lab.write_config_of(0, &config(PRIORITIES[0], "")).unwrap();
    reload(0);
    assert!(
        !holds(&lab, 0, "eth0", "198.18.0.101"),
        "the dropped VIP stayed"
    );
    assert!(holds_vip(&lab, 0));

    // A change of what the router is on the wire needs a restart: refused, named, nothing changed.
    let text = config(PRIORITIES[0], "").replace("vrid = 51", "vrid = 61");
    lab.write_config_of(0, &text).unwrap();
    let error = lab.agents[0].refused_reload().unwrap();
    assert_eq!(error["field"], "vrrp.instance[VI_1].vrid", "{error}");
    assert_eq!(instance(&lab, 0)["vrid"], 51);

    let after: Vec<u64> = (0..3).map(|k| transitions(&lab, k)).collect();
    assert_eq!(after, before, "a reload changed a VRRP state");
    assert_eq!(instance(&lab, 0)["state"], "master");
    let batches = load.finish().unwrap();
    let sum = xlb_tests::agent::total(&batches);
    assert_eq!(
        sum.failed, 0,
        "new connections failed across the reloads: {sum:?}"
    );
    assert_eq!(
        long_lived.check().unwrap(),
        vec![],
        "established connections broke"
    );
}
