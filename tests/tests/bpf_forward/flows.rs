//! Flow state: across CPUs, marks from SYN/ACK/FIN/RST, the agent's walk, the flood guard, drained backends and reused ports.

use super::*;

/// The flow table is per CPU, with a shared table behind it: a flow that
/// started on one CPU and then shows up on another keeps its backend even
/// after the ring changed (here: its backend drained).
#[test]
fn bpf_forward_flows_keep_their_backend_on_another_cpu() {
    require_privileged!();
    let vip = ip("198.18.0.160");
    let [b1, b2] = [60, 61].map(|n| backend(ip(&format!("198.18.1.{n}")), 80, mac(n)));
    let mut checker = Checker::balancer(&[service(
        vip,
        80,
        Protocol::Tcp,
        Mode::Dr,
        vec![b1.clone(), b2.clone()],
    )]);
    let (first, other) = this_and_another_cpu();
    let tcp = |port| segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
    let macs = [b1.next_hop.mac, b2.next_hop.mac];
    let port = (CLIENT_PORT..CLIENT_PORT + 200)
        .find(|&port| checker.backend_of(&tcp(port), &macs) == 0)
        .expect("a flow on b1");
    let drained = BackendSpec {
        drain: true,
        ..b1.clone()
    };
    checker.apply(&[service(vip, 80, Protocol::Tcp, Mode::Dr, vec![drained, b2])]);
    move_to_cpu(other);
    checker.check(vec![sent(
        format!("the flow, first seen on CPU {first}, now on CPU {other}: still b1"),
        tcp(port),
        dr(&tcp(port), mac(60)),
        &[FlowHit, Tx],
    )]);
    checker.finish();
}

/// A bare SYN makes a flow half-open (`FLOW_OPENING`) in this CPU's cache
/// only; the client's next segment without SYN clears it and writes the
/// flow to the shared table (lazily: a SYN flood never reaches it); a FIN
/// or RST marks it closing; a SYN on a known flow, its port reused, starts
/// a new connection and drops the shared entry. Each change stamps the
/// time (the agent counts the flow inactive from then). Segments that
/// change nothing write nothing, and every one is forwarded as before.
#[test]
fn bpf_forward_syn_ack_fin_and_rst_mark_a_flow() {
    require_privileged!();
    let vip = ip("198.18.0.170");
    let b = backend(ip("198.18.1.70"), 80, mac(70));
    let mut checker = Checker::balancer(&[service(vip, 80, Protocol::Tcp, Mode::Dr, vec![b])]);
    let table = checker
        .dataplane
        .flow_table()
        .expect("the shared flow table");
    let key = tcp_flow_key(CLIENT4, vip, CLIENT_PORT);
    let cpu = sched_getcpu().expect("sched_getcpu");
    pin_to_cpu(cpu).expect("staying on one CPU");
    // The shared entry, if any, and this CPU's.
    let entries = |checker: &Checker| {
        let own = checker
            .dataplane
            .cpu_flow(&key, cpu)
            .expect("reading XLB_FLOW_CACHE");
        (table.get(&key), own.expect("this CPU's entry"))
    };
    let client = || frame(CLIENT4, vip);
    let syn = client().tcp_syn(CLIENT_PORT, 80);
    let ack = segment(client(), Protocol::Tcp, CLIENT_PORT, 80);
    let fin = client().tcp_fin(CLIENT_PORT, 80, 1018, 2000);
    let rst = client().tcp_rst(CLIENT_PORT, 80, 1019);
    let forwarded =
        |what: &str, input: &[u8], counted| sent(what, input.to_vec(), dr(input, mac(70)), counted);
    let shared_agrees = |checker: &mut Checker, what: &str| {
        let (shared, own) = entries(checker);
        let agreed = shared.is_some_and(|shared| agree(&own, &shared));
        checker.expect_eq(format!("{what}: the shared entry agrees"), agreed, true);
    };

    checker.check(vec![forwarded(
        "a SYN starts the flow",
        &syn,
        &[FlowMiss, Tx],
    )]);
    let opening = entries(&checker);
    checker.expect_eq("flags of a new flow".into(), opening.1.flags, FLOW_OPENING);
    checker.expect_eq("no shared entry for a SYN".into(), opening.0, None);

    std::thread::sleep(CLOCK_STEP);
    checker.check(vec![forwarded(
        "the ACK that completes the handshake",
        &ack,
        &[FlowHit, Tx],
    )]);
    let established = entries(&checker);
    checker.expect_eq("flags after an ACK".into(), established.1.flags, 0);
    checker.expect_eq(
        "the ACK stamped the entry".into(),
        established.1.last_seen_ns > opening.1.last_seen_ns,
        true,
    );
    shared_agrees(&mut checker, "after the handshake");

    std::thread::sleep(CLOCK_STEP);
    checker.check(vec![
        forwarded("an ACK of an established flow", &ack, &[FlowHit, Tx]),
        forwarded(
            "a SYN on an established flow: the port reused, a new connection",
            &syn,
            &[FlowMiss, ResetFlow, Tx],
        ),
    ]);
    let reopened = entries(&checker);
    checker.expect_eq("flags after the SYN".into(), reopened.1.flags, FLOW_OPENING);
    checker.expect_eq(
        "the old connection's shared entry, dropped".into(),
        reopened.0,
        None,
    );
    checker.check(vec![forwarded(
        "the new handshake's ACK",
        &ack,
        &[FlowHit, Tx],
    )]);
    checker.expect_eq(
        "flags after the new handshake".into(),
        entries(&checker).1.flags,
        0,
    );
    shared_agrees(&mut checker, "after the new handshake");
    let established = entries(&checker);

    std::thread::sleep(CLOCK_STEP);
    checker.check(vec![forwarded("the client's FIN", &fin, &[FlowHit, Tx])]);
    let closing = entries(&checker);
    checker.expect_eq("flags after the FIN".into(), closing.1.flags, FLOW_CLOSING);
    checker.expect_eq(
        "the FIN stamped the entry".into(),
        closing.1.last_seen_ns > established.1.last_seen_ns,
        true,
    );
    shared_agrees(&mut checker, "after the FIN");
    std::thread::sleep(CLOCK_STEP);
    checker.check(vec![
        forwarded("the FIN again", &fin, &[FlowHit, Tx]),
        forwarded("an ACK of the server's FIN", &ack, &[FlowHit, Tx]),
    ]);
    checker.expect_eq(
        "both entries after a second FIN and an ACK".into(),
        entries(&checker),
        closing,
    );

    checker.check(vec![forwarded(
        "a SYN reusing the port of a closing flow",
        &syn,
        &[FlowMiss, ResetFlow, Tx],
    )]);
    let reused = entries(&checker);
    checker.expect_eq("flags after the SYN".into(), reused.1.flags, FLOW_OPENING);
    checker.check(vec![forwarded(
        "the same SYN retransmitted",
        &syn,
        &[FlowHit, Tx],
    )]);
    // The retransmission restamps this CPU's entry with the jiffies of its
    // arrival, which may have ticked since the first SYN.
    let retried = entries(&checker);
    checker.expect_eq(
        "both entries after the retransmission, the stamp aside".into(),
        (
            retried.0,
            CachedFlow {
                seen_jiffies: reused.1.seen_jiffies,
                ..retried.1
            },
        ),
        reused,
    );
    checker.expect_eq(
        "the retransmission's stamp is no older".into(),
        retried.1.seen_jiffies.wrapping_sub(reused.1.seen_jiffies) < 1000,
        true,
    );
    checker.check(vec![forwarded(
        "a RST during the handshake",
        &rst,
        &[FlowHit, Tx],
    )]);
    checker.expect_eq(
        "a RST during the handshake leaves it half-open, for the SYN it retries".into(),
        entries(&checker).1.flags,
        FLOW_OPENING,
    );
    shared_agrees(&mut checker, "after a RST, which writes the shared entry");
    checker.check(vec![
        forwarded("the same SYN again", &syn, &[FlowHit, Tx]),
        forwarded("the handshake's ACK", &ack, &[FlowHit, Tx]),
        forwarded("a RST", &rst, &[FlowHit, Tx]),
    ]);
    checker.expect_eq(
        "flags after the RST".into(),
        entries(&checker).1.flags,
        FLOW_CLOSING,
    );
    shared_agrees(&mut checker, "after the RST");
    checker.finish();
}

/// A FIN on another CPU than the flow's first marks the shared entry
/// (found there, not in that CPU's table), and a SYN back on the first
/// CPU starts a new connection that no CPU's stale copy contradicts.
#[test]
fn bpf_forward_closing_marks_follow_a_flow_across_cpus() {
    require_privileged!();
    let vip = ip("198.18.0.171");
    let b = backend(ip("198.18.1.71"), 80, mac(71));
    let mut checker = Checker::balancer(&[service(vip, 80, Protocol::Tcp, Mode::Dr, vec![b])]);
    let table = checker
        .dataplane
        .flow_table()
        .expect("the shared flow table");
    let key = tcp_flow_key(CLIENT4, vip, CLIENT_PORT);
    let flags = |table: &FlowTable| table.get(&key).expect("the flow's shared entry").flags;
    let own = |checker: &Checker, cpu| {
        checker
            .dataplane
            .cpu_flow(&key, cpu)
            .expect("reading XLB_FLOW_CACHE")
    };
    let syn = frame(CLIENT4, vip).tcp_syn(CLIENT_PORT, 80);
    let ack = segment(frame(CLIENT4, vip), Protocol::Tcp, CLIENT_PORT, 80);
    let fin = frame(CLIENT4, vip).tcp_fin(CLIENT_PORT, 80, 1018, 2000);
    let (first, other) = this_and_another_cpu();
    let sent_on = |cpu, what: &str, input: &[u8], counted| {
        move_to_cpu(cpu);
        let output = dr(input, mac(71));
        sent(
            format!("{what} on CPU {cpu}"),
            input.to_vec(),
            output,
            counted,
        )
    };
    checker.check(vec![
        sent_on(first, "a SYN", &syn, &[FlowMiss, Tx]),
        sent_on(first, "an ACK", &ack, &[FlowHit, Tx]),
    ]);
    checker.expect_eq(
        format!("CPU {other}'s own entry before its first segment"),
        own(&checker, other),
        None,
    );
    checker.check(vec![sent_on(other, "a FIN", &fin, &[FlowHit, Tx])]);
    checker.expect_eq(
        format!("flags after a FIN on CPU {other}"),
        flags(&table),
        FLOW_CLOSING,
    );
    checker.expect_eq(
        format!("CPU {other}'s own entry after the FIN"),
        own(&checker, other).map(|f| f.flags),
        Some(FLOW_CLOSING),
    );
    // The port reused on the first CPU: a new connection, which drops the
    // old one's shared entry and stamps the flow's bucket.
    // (Some jiffies later: a SYN stamps its bucket in jiffies.)
    std::thread::sleep(CLOCK_STEP);
    checker.check(vec![sent_on(
        first,
        "a SYN back",
        &syn,
        &[FlowMiss, ResetFlow, Tx],
    )]);
    checker.expect_eq(
        format!("the shared entry after a SYN on CPU {first}"),
        table.get(&key),
        None,
    );
    checker.expect_eq(
        format!("CPU {first}'s own entry after the SYN"),
        own(&checker, first).map(|f| f.flags),
        Some(FLOW_OPENING),
    );
    checker.expect_eq(
        format!("CPU {other}'s copy of the old connection after the SYN"),
        own(&checker, other).map(|f| f.flags),
        Some(FLOW_CLOSING),
    );
    // That copy is older than the SYN's stamp, so not trusted; the new
    // connection is not shared yet: the other CPU finds its backend by the
    // ring, as its SYN did, and caches it in place of the old copy.
    checker.check(vec![sent_on(
        other,
        "the new handshake's ACK",
        &ack,
        &[FlowMiss, Tx],
    )]);
    checker.expect_eq(
        format!("CPU {other}'s entry after the ACK"),
        own(&checker, other).map(|f| f.flags),
        Some(0),
    );
    checker.check(vec![sent_on(first, "an ACK", &ack, &[FlowHit, Tx])]);
    checker.expect_eq(
        format!("flags after the ACK on CPU {first}"),
        flags(&table),
        0,
    );
    checker.finish();
}

/// A walk of the shared flow table counts each backend's active and
/// inactive flows, and deletes the entries of removed backends and expired
/// UDP flows, keeping established, half-open and closing ones.
#[test]
fn bpf_forward_a_walk_counts_flows_and_prunes_the_dead() {
    require_privileged!();
    let (tcp_vip, udp_vip, gone_vip) = (ip("198.18.0.172"), ip("198.18.0.173"), ip("198.18.0.174"));
    let b = backend(ip("198.18.1.72"), 80, mac(72));
    let u = backend(ip("198.18.1.73"), 80, mac(73));
    let g = backend(ip("198.18.1.74"), 80, mac(74));
    let g2 = backend(ip("198.18.1.75"), 80, mac(75));
    let services = |gone: &BackendSpec| {
        [
            service(tcp_vip, 80, Protocol::Tcp, Mode::Dr, vec![b.clone()]),
            service(udp_vip, 80, Protocol::Udp, Mode::Dr, vec![u.clone()]),
            service(gone_vip, 80, Protocol::Tcp, Mode::Dr, vec![gone.clone()]),
        ]
    };
    let mut checker = Checker::balancer(&services(&g));
    let mut table = checker
        .dataplane
        .flow_table()
        .expect("the shared flow table");
    let client = |vip| frame(CLIENT4, vip);
    let syn = |vip, port| client(vip).tcp_syn(port, 80);
    let ack = |vip, port| segment(client(vip), Protocol::Tcp, port, 80);
    let fin = |vip, port| client(vip).tcp_fin(port, 80, 1018, 2000);
    let rst = |vip, port| client(vip).tcp_rst(port, 80, 1019);
    let datagram = || segment(client(udp_vip), Protocol::Udp, CLIENT_PORT, 80);
    // The shared table gets a flow once it is more than a SYN or a single
    // datagram: a completed handshake, a FIN or RST, a refresh.
    let frames = [
        // Established, half-open (a RST during its handshake, the SYN to be
        // retried) and closing flows to b.
        syn(tcp_vip, CLIENT_PORT),
        ack(tcp_vip, CLIENT_PORT),
        syn(tcp_vip, CLIENT_PORT + 1),
        rst(tcp_vip, CLIENT_PORT + 1),
        syn(tcp_vip, CLIENT_PORT + 2),
        ack(tcp_vip, CLIENT_PORT + 2),
        fin(tcp_vip, CLIENT_PORT + 2),
        // A UDP flow to u, an established one to g.
        datagram(),
        syn(gone_vip, CLIENT_PORT),
        ack(gone_vip, CLIENT_PORT),
    ];
    pin_to_cpu(sched_getcpu().expect("sched_getcpu")).expect("staying on one CPU");
    for frame in &frames {
        let (action, _) = run(checker.dataplane.program(), frame).expect("test run");
        assert_eq!(action, XdpAction::Tx, "{}", hex(frame));
    }
    // The UDP flow's refresh, past 100 jiffies (a second at HZ=100).
    std::thread::sleep(Duration::from_millis(1100));
    let (action, _) = run(checker.dataplane.program(), &datagram()).expect("test run");
    assert_eq!(action, XdpAction::Tx);

    let slot = |vip, protocol, b: &BackendSpec| {
        let spec = service(vip, 80, protocol, Mode::Dr, vec![b.clone()]);
        checker
            .dataplane
            .backend_slot(&service_key(&spec), b.addr, b.port)
            .expect("a slot")
    };
    let (tcp_slot, udp_slot, gone_slot) = (
        slot(tcp_vip, Protocol::Tcp, &b),
        slot(udp_vip, Protocol::Udp, &u),
        slot(gone_vip, Protocol::Tcp, &g),
    );
    let counts = |active, inactive| FlowCounts { active, inactive };
    let go_on = AtomicBool::new(false);
    let udp_timeout = Duration::from_secs(30);
    let walk = table.walk(udp_timeout, &go_on).expect("a walk");
    checker.expect_eq(
        "the first walk".into(),
        walk,
        Walk {
            counts: FlowCountsBySlot::from([
                (tcp_slot, counts(1, 2)),
                (udp_slot, counts(1, 0)),
                (gone_slot, counts(1, 0)),
            ]),
            entries: 5,
            pruned: 0,
        },
    );

    // The gone service's backend replaced; the UDP flow's timeout passed.
    checker.apply(&services(&g2));
    let walk = table.walk(Duration::ZERO, &go_on).expect("a walk");
    checker.expect_eq(
        "the walk that prunes".into(),
        walk,
        Walk {
            counts: FlowCountsBySlot::from([(tcp_slot, counts(1, 2))]),
            entries: 5,
            pruned: 2,
        },
    );
    let walk = table.walk(Duration::ZERO, &go_on).expect("a walk");
    checker.expect_eq("entries left".into(), walk.entries, 3);
    checker.expect_eq("pruned again".into(), walk.pruned, 0);
    for (vip, what) in [
        (udp_vip, "the UDP flow"),
        (gone_vip, "the gone backend's flow"),
    ] {
        let key = FlowKey {
            proto: if vip == udp_vip { PROTO_UDP } else { PROTO_TCP },
            ..tcp_flow_key(CLIENT4, vip, CLIENT_PORT)
        };
        checker.expect_eq(format!("{what}, pruned"), table.get(&key), None);
    }

    let stop = AtomicBool::new(true);
    checker.expect_eq(
        "a walk told to stop".into(),
        matches!(table.walk(udp_timeout, &stop), Err(WalkError::Stopped)),
        true,
    );
    checker.finish();
}

/// A RST or FIN that finds no flow is forwarded by the ring and leaves no
/// state; a bare ACK that finds none is forwarded and recorded.
#[test]
fn bpf_forward_misses_of_closing_segments_keep_no_state() {
    require_privileged!();
    let vip = ip("198.18.0.181");
    let mut checker = Checker::balancer(&[service(
        vip,
        80,
        Protocol::Tcp,
        Mode::Dr,
        vec![backend(ip("198.18.1.81"), 80, mac(81))],
    )]);
    let table = checker
        .dataplane
        .flow_table()
        .expect("the shared flow table");
    let rst = frame(CLIENT4, vip).tcp_rst(40001, 80, 7);
    let fin = frame(CLIENT4, vip).tcp_fin(40002, 80, 7, 9);
    let ack = segment(frame(CLIENT4, vip), Protocol::Tcp, 40003, 80);
    checker.check(vec![
        sent(
            "a RST of no flow",
            rst.clone(),
            dr(&rst, mac(81)),
            &[FlowMiss, StatelessMiss, Tx],
        ),
        sent(
            "a FIN of no flow",
            fin.clone(),
            dr(&fin, mac(81)),
            &[FlowMiss, StatelessMiss, Tx],
        ),
        sent(
            "an ACK of no flow",
            ack.clone(),
            dr(&ack, mac(81)),
            &[FlowMiss, Tx],
        ),
    ]);
    for (port, recorded) in [(40001, false), (40002, false), (40003, true)] {
        checker.expect_eq(
            format!("an entry for port {port}"),
            table.get(&tcp_flow_key(CLIENT4, vip, port)).is_some(),
            recorded,
        );
    }
    checker.finish();
}

/// Over its new-flow rate a CPU forwards new flows by the ring alone;
/// established flows keep their entries. With the guard off (0) every
/// new flow is recorded.
#[test]
fn bpf_forward_flood_guard() {
    require_privileged!();
    let vip = ip("198.18.0.182");
    let services = [service(
        vip,
        80,
        Protocol::Tcp,
        Mode::Dr,
        vec![backend(ip("198.18.1.82"), 80, mac(82))],
    )];
    let syn = |port| frame(CLIENT4, vip).tcp_syn(port, 80);
    let ack = |port| segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
    let forwarded = |what: String, input: Vec<u8>, counted| {
        let output = dr(&input, mac(82));
        sent(what, input, output, counted)
    };
    for (cap, recorded) in [(2, [true, true, false]), (0, [true, true, true])] {
        let mut checker = Checker::balancer(&[]);
        let guarded = DirectorSettings {
            new_flows_per_cpu: cap,
            ..settings()
        };
        checker.apply_with(&services, &guarded);
        let cpu = sched_getcpu().expect("sched_getcpu");
        pin_to_cpu(cpu).expect("staying on one CPU");
        // New flows are recorded in this CPU's cache (the shared table
        // gets them later, lazily).
        let cached = |checker: &Checker, port| {
            checker
                .dataplane
                .cpu_flow(&tcp_flow_key(CLIENT4, vip, port), cpu)
                .expect("reading XLB_FLOW_CACHE")
                .is_some()
        };
        let mut cases = Vec::new();
        for (n, port) in (40001..=40003).enumerate() {
            let counted: &'static [Counter] = if recorded[n] {
                &[FlowMiss, Tx]
            } else {
                &[FlowMiss, FloodStateless, Tx]
            };
            cases.push(forwarded(
                format!("cap {cap}: new flow {}", n + 1),
                syn(port),
                counted,
            ));
        }
        cases.push(forwarded(
            format!("cap {cap}: the first flow's ACK, over the cap"),
            ack(40001),
            &[FlowHit, Tx],
        ));
        // The first flow's port reused: over the cap the old entries go and
        // the ring alone forwards the new connection.
        cases.push(forwarded(
            format!("cap {cap}: a SYN reusing the first flow's port"),
            syn(40001),
            if cap == 0 {
                &[FlowMiss, ResetFlow, Tx]
            } else {
                &[FlowMiss, ResetFlow, FloodStateless, Tx]
            },
        ));
        checker.check(cases);
        checker.expect_eq(
            format!("cap {cap}: an entry for the reused port"),
            cached(&checker, 40001),
            cap == 0,
        );
        for (n, port) in (40002..=40003).enumerate().map(|(n, p)| (n + 1, p)) {
            checker.expect_eq(
                format!("cap {cap}: an entry for new flow {}", n + 1),
                cached(&checker, port),
                recorded[n],
            );
        }
        checker.finish();
    }
}

/// After a drain, a SYN that reuses the port of a flow to the drained
/// backend is a new connection for another backend, while the old flow's
/// segments still reach the drained one; a client stuck to a drained
/// backend by affinity keeps it.
#[test]
fn bpf_forward_a_drained_backend_gets_no_reused_port() {
    require_privileged!();
    let (vip, sticky) = (ip("198.18.0.187"), ip("198.18.0.188"));
    let a = backend(ip("198.18.1.87"), 80, mac(87));
    let b = backend(ip("198.18.1.88"), 80, mac(88));
    let macs = [mac(87), mac(88)];
    let drained = |spec: &BackendSpec, drain: bool| BackendSpec {
        drain,
        ..spec.clone()
    };
    // Which backend is drained: none, or `a` for the ring's service and the
    // client's sticky one for the affinity service.
    let services = |drain: Option<usize>| {
        let mut sticky_pool = vec![a.clone(), b.clone()];
        if let Some(n) = drain {
            sticky_pool[n].drain = true;
        }
        vec![
            service(
                vip,
                80,
                Protocol::Tcp,
                Mode::Dr,
                vec![drained(&a, drain.is_some()), b.clone()],
            ),
            with_affinity(
                service(sticky, 80, Protocol::Tcp, Mode::Dr, sticky_pool),
                32,
            ),
        ]
    };
    let mut checker = Checker::balancer(&services(None));
    let syn = |vip, port| frame(CLIENT4, vip).tcp_syn(port, 80);
    let ack = |vip, port| segment(frame(CLIENT4, vip), Protocol::Tcp, port, 80);
    // A port whose flow the ring gives to `a`, and the client's sticky backend.
    let port = (42000..42100)
        .find(|&port| checker.backend_of(&syn(vip, port), &macs) == 0)
        .expect("a port for the first backend");
    let stuck = checker.backend_of(&syn(sticky, 43000), &macs);
    checker.backend_of(&ack(vip, port), &macs);

    checker.apply(&services(Some(stuck)));
    let to = |what: &str, input: Vec<u8>, to: usize, counted| {
        let output = dr(&input, macs[to]);
        sent(what, input, output, counted)
    };
    checker.check(vec![
        to(
            "the drained backend's established flow goes on",
            ack(vip, port),
            0,
            &[FlowHit, Tx],
        ),
        to(
            "a SYN reusing its port goes to the other backend",
            syn(vip, port),
            1,
            &[FlowMiss, ResetFlow, Tx],
        ),
        to(
            "the new connection's ACK follows it",
            ack(vip, port),
            1,
            &[FlowHit, Tx],
        ),
        to(
            "a client stuck to a drained backend keeps it for a new connection",
            syn(sticky, 43001),
            stuck,
            &[FlowMiss, Tx],
        ),
    ]);
    checker.finish();
}
