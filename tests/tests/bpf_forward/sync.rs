//! The maps as the agent writes them: service changes, reused backend ids, successive rings.

use super::*;

#[test]
fn bpf_forward_map_sync() {
    require_privileged!();
    let (two, sticky) = (ip("198.18.0.130"), ip("198.18.0.131"));
    let (gone, newcomer) = (ip("198.18.0.132"), ip("198.18.0.133"));
    let a = backend(ip("198.18.1.1"), 80, mac(1));
    let b = backend(ip("198.18.1.2"), 80, mac(2));
    let c = backend(ip("198.18.1.3"), 80, mac(3));
    let sticky_a = backend(ip("198.18.1.4"), 80, mac(4));
    let sticky_b = backend(ip("198.18.1.5"), 80, mac(5));
    let dr_service = |vip, backends| service(vip, 80, Protocol::Tcp, Mode::Dr, backends);
    let tcp = |client, vip, sport| segment(frame(client, vip), Protocol::Tcp, sport, 80);
    let mut checker = Checker::balancer(&[
        dr_service(two, vec![a.clone(), b.clone()]),
        with_affinity(
            dr_service(sticky, vec![sticky_a.clone(), sticky_b.clone()]),
            32,
        ),
        dr_service(gone, vec![c]),
    ]);
    let ab = [a.next_hop.mac, b.next_hop.mac];
    let mut flows_on_a = (CLIENT_PORT..CLIENT_PORT + 200)
        .filter(|&port| checker.backend_of(&tcp(CLIENT4, two, port), &ab) == 0);
    let (moved, idle) = (
        flows_on_a.next().expect("a flow on A"),
        flows_on_a.next().expect("a second flow on A"),
    );
    let sticky_ab = [sticky_a.next_hop.mac, sticky_b.next_hop.mac];
    let client_on_a = (10..100)
        .map(|n| IpAddr::V4(Ipv4Addr::new(198, 18, 0, n)))
        .find(|&client| checker.backend_of(&tcp(client, sticky, CLIENT_PORT), &sticky_ab) == 0)
        .expect("a client with affinity to A");
    checker.check(vec![sent(
        "the service about to go: new flow",
        tcp(CLIENT4, gone, CLIENT_PORT),
        dr(&tcp(CLIENT4, gone, CLIENT_PORT), mac(3)),
        &[FlowMiss, Tx],
    )]);

    // Both A backends removed from their services, the third service removed.
    let remaining = [
        dr_service(two, vec![b]),
        with_affinity(dr_service(sticky, vec![sticky_b]), 32),
    ];
    checker.apply(&remaining);
    checker.check(vec![
        sent(
            "a flow on a removed backend picks again",
            tcp(CLIENT4, two, moved),
            dr(&tcp(CLIENT4, two, moved), mac(2)),
            &[FlowMiss, Tx],
        ),
        sent(
            "then keeps its new backend",
            tcp(CLIENT4, two, moved),
            dr(&tcp(CLIENT4, two, moved), mac(2)),
            &[FlowHit, Tx],
        ),
        unchanged(
            "a removed service's VIP: TCP passes",
            tcp(CLIENT4, gone, CLIENT_PORT),
            &[],
        ),
        unchanged(
            "a removed service's VIP: fragments pass",
            frame(CLIENT4, gone)
                .fragment(1480, false)
                .proto(IPPROTO_UDP, &[7; 64]),
            &[],
        ),
    ]);

    // A new service whose backends are as many as were freed: whatever
    // slots they take, they start with no traffic, and no flow or client
    // of the other services is sent to them.
    let fresh = dr_service(newcomer, pool("198.18.5.", 50)[..3].to_vec());
    checker.apply(&[remaining.to_vec(), vec![fresh.clone()]].concat());
    let none = TrafficStats::default();
    let of_service = checker
        .dataplane
        .service_stats(&service_key(&fresh))
        .expect("service stats");
    checker.expect_eq("a new service's stats".into(), of_service, none);
    for new in &fresh.backends {
        let of_backend = checker
            .dataplane
            .backend_stats(new.addr, new.port)
            .expect("backend stats");
        checker.expect_eq(
            format!("new backend {}'s stats", new.addr),
            of_backend,
            none,
        );
    }
    checker.check(vec![
        sent(
            "a flow idle since its backend was removed picks again among its service's",
            tcp(CLIENT4, two, idle),
            dr(&tcp(CLIENT4, two, idle), mac(2)),
            &[FlowMiss, Tx],
        ),
        sent(
            "a client whose affinity backend was removed picks again among its service's",
            tcp(client_on_a, sticky, CLIENT_PORT + 1),
            dr(&tcp(client_on_a, sticky, CLIENT_PORT + 1), mac(5)),
            &[FlowMiss, Tx],
        ),
    ]);
    checker.finish();
}

/// Backend ids are reused once every id has been handed out. A flow made
/// for the id's earlier backend must not count as a flow-table hit on the
/// backend that holds the id now (it is a new flow, picked from the ring).
#[test]
fn bpf_forward_reused_backend_ids_start_new_flows() {
    require_privileged!();
    let vip = ip("198.18.0.140");
    let first = backend(ip("198.18.1.40"), 80, mac(40));
    let second = backend(ip("198.18.1.41"), 80, mac(41));
    let third = backend(ip("198.18.1.42"), 80, mac(42));
    let dr_service = |b: &BackendSpec| service(vip, 80, Protocol::Tcp, Mode::Dr, vec![b.clone()]);
    // Two backend ids in all, so the third backend gets the first's id.
    let options = LoadOptions {
        bpf_log: log::LevelFilter::Off,
        maglev_size: 1009,
        max_backends: 3,
        ..LoadOptions::default()
    };
    let mut checker = Checker::load(&options, OUTCOMES);
    let syn = segment(frame(CLIENT4, vip), Protocol::Tcp, CLIENT_PORT, 80);
    checker.apply(&[dr_service(&first)]);
    checker.check(vec![sent(
        "the flow starts on the first backend",
        syn.clone(),
        dr(&syn, mac(40)),
        &[FlowMiss, Tx],
    )]);
    checker.apply(&[dr_service(&second)]);
    checker.apply(&[dr_service(&third)]);
    checker.check(vec![
        sent(
            "its id now belongs to the third backend: a new flow there",
            syn.clone(),
            dr(&syn, mac(42)),
            &[FlowMiss, Tx],
        ),
        sent(
            "then a flow-table hit",
            syn.clone(),
            dr(&syn, mac(42)),
            &[FlowHit, Tx],
        ),
    ]);
    checker.finish();
}

/// Ring updates write only the slots that differ from what the idle ring
/// holds: after three tables in a row (the third written over the first),
/// every new flow must land on a backend of the latest set.
#[test]
fn bpf_forward_successive_rings_hold_the_latest_table() {
    require_privileged!();
    let vip = ip("198.18.0.150");
    let [b1, b2, b3] = [50, 51, 52].map(|n| backend(ip(&format!("198.18.1.{n}")), 80, mac(n)));
    let dr_service = |backends: &[&BackendSpec]| {
        let backends = backends.iter().map(|b| (*b).clone()).collect();
        service(vip, 80, Protocol::Tcp, Mode::Dr, backends)
    };
    let mut checker = Checker::balancer(&[dr_service(&[&b1, &b2])]);
    checker.apply(&[dr_service(&[&b1, &b2, &b3])]);
    checker.apply(&[dr_service(&[&b1, &b3])]);
    let latest = [b1.next_hop.mac, b3.next_hop.mac];
    let mut on = [0; 2];
    for port in CLIENT_PORT..CLIENT_PORT + 300 {
        let syn = segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
        on[checker.backend_of(&syn, &latest)] += 1;
    }
    assert!(on[0] > 0 && on[1] > 0, "new flows per backend: {on:?}");
    checker.finish();
}
