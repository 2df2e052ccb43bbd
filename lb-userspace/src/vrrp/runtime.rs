//! Runs the VRRP instances of a director: one task owns every instance, its
//! sockets and timers, feeds the state machines what arrives and what
//! tracking sees, and carries out what they decide (advertisements,
//! addresses, announcements, notify hooks). Sync groups are kept here: an
//! instance's change of state is forced on the rest of its group.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};

use super::{
    net::{self, Family, VrrpSocket},
    packet::{self, Advert},
    state::{Action, Input, Instance, Params},
    State, Version, GROUP_V4, GROUP_V6, TTL,
};
use crate::model::{SyncGroup, Tracked, VrrpInstance};

/// How often tracked interfaces are looked at.
const TRACK_POLL: Duration = Duration::from_millis(100);

/// What the agent reports of the objects instances track.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    /// The program is attached and its maps answer.
    pub dataplane_ok: bool,
    /// Services with at least one backend taking new flows.
    pub services_up: Vec<String>,
}

/// An instance as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: Version,
    pub state: State,
    /// After tracking.
    pub priority: u8,
    pub configured_priority: u8,
    pub advert_interval_ms: f64,
    pub master_down_interval_ms: f64,
    /// The master as last heard (this director when master).
    #[schema(value_type = Option<String>)]
    pub master: Option<IpAddr>,
    #[schema(value_type = Vec<String>)]
    pub virtual_addresses: Vec<IpAddr>,
    pub sync_group: Option<String>,
    pub transitions: u64,
    pub last_change_unix_ms: Option<u64>,
    pub last_reason: Option<String>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Advertisements for this instance dropped: TTL, version,
    /// authentication, interval or sender not as configured.
    pub adverts_discarded: u64,
}

/// The running instances; dropping it stops them without releasing
/// anything (as a crash would), [`Vrrp::shutdown`] stops them cleanly.
pub struct Vrrp {
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    stop: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    changes: mpsc::UnboundedSender<Change>,
    task: JoinHandle<()>,
}

/// New settings for running instances, and who waits for them to apply.
type Change = (Vec<VrrpInstance>, oneshot::Sender<()>);

impl Vrrp {
    /// Opens the sockets, removes virtual addresses a previous run may have
    /// left, and starts every instance. Must run in the director's network
    /// namespace, within a tokio runtime.
    pub async fn start(
        instances: &[VrrpInstance],
        groups: &[SyncGroup],
        tracking: watch::Receiver<Tracking>,
    ) -> anyhow::Result<Vrrp> {
        let mut sockets: HashMap<(String, Family), Arc<VrrpSocket>> = HashMap::new();
        let mut runs = Vec::new();
        for config in instances {
            let family = family_of(config);
            let key = (config.interface.clone(), family);
            let socket = match sockets.get(&key) {
                Some(socket) => socket.clone(),
                None => {
                    let socket =
                        Arc::new(VrrpSocket::open(&config.interface, family).map_err(|e| {
                            anyhow::anyhow!(
                                "vrrp.instance[{}]: opening the VRRP socket on {}: {e}",
                                config.name,
                                config.interface
                            )
                        })?);
                    sockets.insert(key, socket.clone());
                    socket
                }
            };
            for addr in &config.virtual_addresses {
                net::remove_address(&config.interface, *addr).await?;
            }
            let group = groups
                .iter()
                .find(|g| g.instances.contains(&config.name))
                .map(|g| g.name.clone());
            runs.push(Run::new(config.clone(), socket, group));
        }
        let status = Arc::new(Mutex::new(runs.iter().map(Run::status).collect()));
        let (stop, stopped) = oneshot::channel();
        let (changes, changed) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(runs, tracking, status.clone(), stopped, changed));
        Ok(Vrrp {
            status,
            stop: Mutex::new(Some(stop)),
            changes,
            task,
        })
    }

    /// Gives the running instances of the same names their new settings,
    /// in place: only those [`super::reload_plan`] applies live may differ.
    /// A master adds and announces new virtual addresses and removes
    /// dropped ones, and the priority follows at once, without a failover.
    pub async fn reconfigure(&self, instances: Vec<VrrpInstance>) -> anyhow::Result<()> {
        let (done, applied) = oneshot::channel();
        self.changes
            .send((instances, done))
            .map_err(|_| anyhow::anyhow!("VRRP has stopped"))?;
        applied
            .await
            .map_err(|_| anyhow::anyhow!("VRRP stopped while changing"))
    }

    pub fn status(&self) -> Vec<InstanceStatus> {
        lock(&self.status).clone()
    }

    /// Masters resign (priority 0) and release their addresses; then the
    /// task ends.
    pub async fn shutdown(&self) {
        let Some(stop) = lock(&self.stop).take() else {
            return;
        };
        let (done, finished) = oneshot::channel();
        if stop.send(done).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), finished).await;
        }
    }
}

impl Drop for Vrrp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn family_of(config: &VrrpInstance) -> Family {
    if config.virtual_addresses[0].is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// One instance with what it needs to act.
struct Run {
    config: VrrpInstance,
    machine: Instance,
    socket: Arc<VrrpSocket>,
    group: Option<String>,
    status: InstanceStatus,
    /// The last fault state given to the machine.
    fault: bool,
    /// When a lower-priority master was last answered.
    reannounced: Option<Duration>,
    /// When the addresses were last announced again (`garp_refresh`).
    refreshed: Option<Duration>,
}

impl Run {
    fn new(config: VrrpInstance, socket: Arc<VrrpSocket>, group: Option<String>) -> Run {
        let machine = Instance::new(Params {
            vrid: config.vrid,
            priority: config.priority,
            version: config.version,
            advert_interval: config.advert_interval,
            preempt: config.preempt,
            preempt_delay: config.preempt_delay,
            local_address: socket.local_address(),
        });
        let status = InstanceStatus {
            name: config.name.clone(),
            interface: config.interface.clone(),
            vrid: config.vrid,
            version: config.version,
            state: State::Initialize,
            priority: config.priority,
            configured_priority: config.priority,
            advert_interval_ms: config.advert_interval.as_secs_f64() * 1e3,
            master_down_interval_ms: 0.0,
            master: None,
            virtual_addresses: config.virtual_addresses.clone(),
            sync_group: group.clone(),
            transitions: 0,
            last_change_unix_ms: None,
            last_reason: None,
            adverts_sent: 0,
            adverts_received: 0,
            adverts_discarded: 0,
        };
        Run {
            config,
            machine,
            socket,
            group,
            status,
            fault: false,
            reannounced: None,
            refreshed: None,
        }
    }

    fn status(&self) -> InstanceStatus {
        let mut status = self.status.clone();
        status.state = self.machine.state();
        status.priority = self.machine.priority();
        status.master_down_interval_ms = self.machine.master_down_interval().as_secs_f64() * 1e3;
        status.master = match self.machine.state() {
            State::Master => Some(self.socket.local_address()),
            _ => self.machine.master(),
        };
        status
    }

    /// The priority tracking gives, or `None` for a fault: always while the
    /// instance's own interface is down, as with keepalived.
    fn tracked_priority(&self, tracking: &Tracking, links: &HashMap<String, bool>) -> Option<u8> {
        if links.get(&self.config.interface) == Some(&false) {
            return None;
        }
        let mut priority = i32::from(self.config.priority);
        for track in &self.config.track {
            let up = match &track.object {
                Tracked::Interface(name) => links.get(name).copied().unwrap_or(false),
                Tracked::Dataplane => tracking.dataplane_ok,
                Tracked::Service(name) => tracking.services_up.contains(name),
            };
            match (track.weight, up) {
                (0, false) => return None,
                (w, true) if w > 0 => priority += w,
                (w, false) if w < 0 => priority += w,
                _ => {}
            }
        }
        // An owner's priority stays 255; only a fault takes it down.
        if self.config.priority == 255 {
            return Some(255);
        }
        Some(priority.clamp(1, 254) as u8)
    }

    fn destination(&self) -> Vec<IpAddr> {
        if !self.config.unicast_peers.is_empty() {
            return self.config.unicast_peers.clone();
        }
        vec![match family_of(&self.config) {
            Family::V4 => IpAddr::V4(GROUP_V4),
            Family::V6 => IpAddr::V6(GROUP_V6),
        }]
    }

    async fn send_advert(&mut self, priority: u8) {
        let advert = Advert {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            interval: self.config.advert_interval,
            addresses: self.config.virtual_addresses.clone(),
            auth: self
                .config
                .auth_pass
                .as_ref()
                .map(|p| p.as_bytes().to_vec()),
        };
        let src = self.socket.local_address();
        for dst in self.destination() {
            let bytes = match packet::encode(&advert, src, dst, self.config.v3_checksum) {
                Ok(bytes) => bytes,
                Err(e) => {
                    log::error!("vrrp {}: encoding an advertisement: {e}", self.config.name);
                    return;
                }
            };
            match self.socket.send(&bytes, dst).await {
                Ok(()) => self.status.adverts_sent += 1,
                Err(e) => log::warn!(
                    "vrrp {}: sending an advertisement to {dst}: {e}",
                    self.config.name
                ),
            }
        }
    }

    async fn take_over(&mut self) {
        self.add_addresses(&self.config.virtual_addresses.clone())
            .await;
        self.announce(self.config.garp_count);
    }

    async fn add_addresses(&self, addresses: &[IpAddr]) {
        for addr in addresses {
            if let Err(e) = net::add_address(&self.config.interface, *addr).await {
                log::error!("vrrp {}: {e}", self.config.name);
            }
        }
    }

    async fn remove_addresses(&self, addresses: &[IpAddr]) {
        for addr in addresses {
            if let Err(e) = net::remove_address(&self.config.interface, *addr).await {
                log::error!("vrrp {}: {e}", self.config.name);
            }
        }
    }

    /// Takes the new settings of a reload. A master serves the new address
    /// list at once; the priority is the caller's to retrack.
    async fn reconfigure(&mut self, config: VrrpInstance) {
        if config == self.config {
            return;
        }
        let old = std::mem::replace(&mut self.config, config);
        let added: Vec<IpAddr> = self
            .config
            .virtual_addresses
            .iter()
            .filter(|a| !old.virtual_addresses.contains(a))
            .copied()
            .collect();
        let dropped: Vec<IpAddr> = old
            .virtual_addresses
            .iter()
            .filter(|a| !self.config.virtual_addresses.contains(a))
            .copied()
            .collect();
        if self.machine.state() == State::Master {
            self.remove_addresses(&dropped).await;
            self.add_addresses(&added).await;
            self.announce_addresses(added.clone(), self.config.garp_count);
        }
        self.status.configured_priority = self.config.priority;
        self.status.virtual_addresses = self.config.virtual_addresses.clone();
        log::info!(
            "vrrp {}: reloaded{}{}",
            self.config.name,
            list(" adding ", &added),
            list(" dropping ", &dropped)
        );
    }

    /// Gratuitous ARPs / unsolicited NAs for every address, `count` rounds.
    fn announce(&self, count: u32) {
        self.announce_addresses(self.config.virtual_addresses.clone(), count);
    }

    /// Gratuitous ARPs / unsolicited NAs for `addresses`, `count` rounds.
    fn announce_addresses(&self, addresses: Vec<IpAddr>, count: u32) {
        let (ifname, interval, name) = (
            self.config.interface.clone(),
            self.config.garp_interval,
            self.config.name.clone(),
        );
        tokio::spawn(async move {
            for round in 0..count {
                if round > 0 {
                    tokio::time::sleep(interval).await;
                }
                for addr in &addresses {
                    let sent = match addr {
                        IpAddr::V4(a) => net::gratuitous_arp(&ifname, *a),
                        IpAddr::V6(a) => net::unsolicited_na(&ifname, *a),
                    };
                    if let Err(e) = sent {
                        log::warn!("vrrp {name}: announcing {addr}: {e}");
                    }
                }
            }
        });
    }

    async fn release(&mut self) {
        self.remove_addresses(&self.config.virtual_addresses.clone())
            .await;
    }

    fn changed(&mut self, from: State, to: State, reason: &str) {
        let level = if to == State::Master || from == State::Master {
            log::Level::Warn
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "vrrp {}: {from:?} -> {to:?} ({reason}), priority {}",
            self.config.name,
            self.machine.priority()
        );
        self.status.transitions += 1;
        self.status.last_reason = Some(reason.to_string());
        self.status.last_change_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        if let Some(command) = &self.config.notify {
            notify(command, &self.config.name, to, self.machine.priority());
        }
    }
}

/// `" adding a, b"`, or nothing for no addresses.
fn list(what: &str, addresses: &[IpAddr]) -> String {
    if addresses.is_empty() {
        return String::new();
    }
    let names: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    format!("{what}{}", names.join(", "))
}

/// Runs the notify hook like keepalived's: `COMMAND... INSTANCE NAME STATE PRIORITY`.
fn notify(command: &[String], name: &str, state: State, priority: u8) {
    let state = match state {
        State::Initialize => "STOP",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
        State::Fault => "FAULT",
    };
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..])
        .args(["INSTANCE", name, state, &priority.to_string()])
        .stdin(std::process::Stdio::null());
    let name = name.to_string();
    match cmd.spawn() {
        Ok(mut child) => {
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(status) if !status.success() => {
                        log::warn!("vrrp {name}: the notify hook exited with {status}")
                    }
                    Err(e) => log::warn!("vrrp {name}: waiting for the notify hook: {e}"),
                    Ok(_) => {}
                }
            });
        }
        Err(e) => log::warn!("vrrp {name}: running the notify hook {}: {e}", command[0]),
    }
}

/// A forced change for the rest of a sync group.
struct Force {
    group: String,
    except: usize,
    state: State,
}

async fn drive(
    mut runs: Vec<Run>,
    mut tracking: watch::Receiver<Tracking>,
    status: Arc<Mutex<Vec<InstanceStatus>>>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let origin = Instant::now();
    let now = || Instant::now().duration_since(origin);
    let mut links = link_states(interface_names(&runs));
    let current = tracking.borrow().clone();
    for at in 0..runs.len() {
        match runs[at].tracked_priority(&current, &links) {
            None => {
                runs[at].fault = true;
                step(&mut runs, at, now(), Input::Fault(true)).await;
            }
            Some(priority) => {
                if priority != runs[at].config.priority {
                    step(&mut runs, at, now(), Input::Priority(priority)).await;
                }
                step(&mut runs, at, now(), Input::Startup).await;
            }
        }
    }
    let mut poll = tokio::time::interval(TRACK_POLL);
    let mut tracking_open = true;
    let receivers: Vec<Arc<VrrpSocket>> = unique_sockets(&runs);
    let (packets_tx, mut packets) = mpsc::channel(256);
    let readers: Vec<JoinHandle<()>> = receivers
        .into_iter()
        .map(|socket| {
            let tx = packets_tx.clone();
            tokio::spawn(async move {
                loop {
                    let received = tokio::select! {
                        received = socket.recv() => received,
                        () = tx.closed() => return,
                    };
                    match received {
                        Ok(received) => {
                            if tx.send((socket.clone(), received)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            log::warn!("vrrp: receiving: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        })
        .collect();
    loop {
        *lock(&status) = runs.iter().map(Run::status).collect();
        let deadline = runs
            .iter()
            .filter_map(|r| r.machine.next_deadline())
            .min()
            .map(|d| origin + d);
        tokio::select! {
            done = &mut stop => {
                for at in 0..runs.len() {
                    step(&mut runs, at, now(), Input::Shutdown).await;
                }
                *lock(&status) = runs.iter().map(Run::status).collect();
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                break;
            }
            Some((configs, done)) = changes.recv() => {
                for config in configs {
                    if let Some(run) = runs.iter_mut().find(|r| r.config.name == config.name) {
                        run.reconfigure(config).await;
                    }
                }
                // Interfaces newly tracked are read before they count.
                let names = interface_names(&runs);
                links = tokio::task::spawn_blocking(move || link_states(names))
                    .await
                    .unwrap_or_default();
                let current = tracking.borrow().clone();
                retrack(&mut runs, &current, &links, now()).await;
                let _ = done.send(());
            }
            Some((socket, received)) = packets.recv() => {
                receive(&mut runs, &socket, received, now()).await;
            }
            _ = sleep_until(deadline) => {
                let t = now();
                for at in 0..runs.len() {
                    if runs[at].machine.next_deadline().is_some_and(|d| d <= t) {
                        let actions = runs[at].machine.tick(t);
                        act(&mut runs, at, actions, t).await;
                    }
                }
            }
            _ = poll.tick() => {
                let names = interface_names(&runs);
                links = tokio::task::spawn_blocking(move || link_states(names))
                    .await
                    .unwrap_or_default();
                let current = tracking.borrow().clone();
                retrack(&mut runs, &current, &links, now()).await;
                refresh_announcements(&mut runs, now());
            }
            changed = tracking.changed(), if tracking_open => {
                // Without a sender the last report stands.
                tracking_open = changed.is_ok();
                let current = tracking.borrow().clone();
                retrack(&mut runs, &current, &links, now()).await;
            }
        }
    }
    for reader in readers {
        reader.abort();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn unique_sockets(runs: &[Run]) -> Vec<Arc<VrrpSocket>> {
    let mut sockets: Vec<Arc<VrrpSocket>> = Vec::new();
    for run in runs {
        if !sockets.iter().any(|s| Arc::ptr_eq(s, &run.socket)) {
            sockets.push(run.socket.clone());
        }
    }
    sockets
}

/// Every interface an instance runs on or tracks.
fn interface_names(runs: &[Run]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        let tracked = run.config.track.iter().filter_map(|t| match &t.object {
            Tracked::Interface(name) => Some(name),
            _ => None,
        });
        for name in tracked.chain([&run.config.interface]) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// The link state of each interface (down when it cannot be read).
fn link_states(names: Vec<String>) -> HashMap<String, bool> {
    names
        .into_iter()
        .map(|name| {
            let up = net::link_up(&name).unwrap_or(false);
            (name, up)
        })
        .collect()
}

/// Masters announce their addresses again every `garp_refresh`.
fn refresh_announcements(runs: &mut [Run], now: Duration) {
    for run in runs.iter_mut() {
        let Some(every) = run.config.garp_refresh else {
            continue;
        };
        if run.machine.state() != State::Master {
            run.refreshed = None;
            continue;
        }
        let last = *run.refreshed.get_or_insert(now);
        if now >= last + every {
            run.refreshed = Some(now);
            run.announce(1);
        }
    }
}

/// Gives each machine the priority or fault tracking now implies. An
/// instance faults with any faulted member of its sync group, as in
/// keepalived, so the group never splits between directors.
async fn retrack(
    runs: &mut [Run],
    tracking: &Tracking,
    links: &HashMap<String, bool>,
    now: Duration,
) {
    let priorities: Vec<Option<u8>> = runs
        .iter()
        .map(|r| r.tracked_priority(tracking, links))
        .collect();
    let faulted_groups: Vec<String> = runs
        .iter()
        .zip(&priorities)
        .filter(|(_, p)| p.is_none())
        .filter_map(|(r, _)| r.group.clone())
        .collect();
    for (at, priority) in priorities.into_iter().enumerate() {
        let group_fault = runs[at]
            .group
            .as_ref()
            .is_some_and(|g| faulted_groups.contains(g));
        match (priority, group_fault) {
            (None, _) | (Some(_), true) if !runs[at].fault => {
                runs[at].fault = true;
                step(runs, at, now, Input::Fault(true)).await;
            }
            (Some(p), false) if runs[at].fault => {
                runs[at].fault = false;
                // The priority first, so the instance starts from the current one.
                if p != runs[at].machine.priority() {
                    step(runs, at, now, Input::Priority(p)).await;
                }
                step(runs, at, now, Input::Fault(false)).await;
            }
            (Some(p), false) if p != runs[at].machine.priority() => {
                step(runs, at, now, Input::Priority(p)).await;
            }
            _ => {}
        }
    }
}

/// Checks an advertisement and hands it to its instance.
async fn receive(
    runs: &mut [Run],
    socket: &Arc<VrrpSocket>,
    received: net::Received,
    now: Duration,
) {
    let decoded = match packet::decode(&received.payload, received.src, received.dst) {
        Ok(decoded) => decoded,
        Err(e) => {
            log::debug!("vrrp: dropping a packet from {}: {e}", received.src);
            return;
        }
    };
    let advert = decoded.advert;
    let Some(at) = runs
        .iter()
        .position(|r| Arc::ptr_eq(&r.socket, socket) && r.config.vrid == advert.vrid)
    else {
        return;
    };
    let run = &mut runs[at];
    let problem = if received.ttl != TTL {
        Some(format!("TTL {} (must be 255)", received.ttl))
    } else if advert.version != run.config.version {
        Some(format!(
            "{:?}, configured {:?}",
            advert.version, run.config.version
        ))
    } else if advert.version == Version::V2
        && advert.auth.as_deref() != run.config.auth_pass.as_ref().map(|p| p.as_bytes())
    {
        Some("authentication does not match".to_string())
    } else if advert.version == Version::V2 && advert.interval != run.config.advert_interval {
        Some(format!(
            "interval {:?}, configured {:?}",
            advert.interval, run.config.advert_interval
        ))
    } else if !run.config.unicast_peers.is_empty()
        && !run.config.unicast_peers.contains(&received.src)
    {
        Some(format!("{} is not a configured peer", received.src))
    } else {
        None
    };
    if let Some(problem) = problem {
        run.status.adverts_discarded += 1;
        log::debug!(
            "vrrp {}: discarding an advertisement from {}: {problem}",
            run.config.name,
            received.src
        );
        return;
    }
    run.status.adverts_received += 1;
    // Another master of lower priority: a partition has healed. It backs
    // off on our next advertisement; announcing again points the segment's
    // ARP caches back at us (as keepalived's garp_lower_prio does).
    let ours = (run.machine.priority(), run.socket.local_address());
    let lower_master = run.machine.state() == State::Master
        && advert.priority != 0
        && (advert.priority, received.src) < ours;
    let input = Input::Advert {
        from: received.src,
        priority: advert.priority,
        interval: advert.interval,
    };
    step(runs, at, now, input).await;
    let run = &mut runs[at];

    if lower_master
        && run.machine.state() == State::Master
        && run
            .reannounced
            .is_none_or(|last| now >= last + run.config.advert_interval)
    {
        run.reannounced = Some(now);
        let priority = run.machine.priority();
        run.send_advert(priority).await;
        run.announce(1);
    }
}

/// Feeds one input to instance `at` and carries out what follows.
async fn step(runs: &mut [Run], at: usize, now: Duration, input: Input) {
    let actions = runs[at].machine.handle(now, input);
    act(runs, at, actions, now).await;
}

/// Carries out `actions` of instance `at`, then forces the state it
/// reached on the rest of its sync group.
async fn act(runs: &mut [Run], at: usize, actions: Vec<Action>, now: Duration) {
    let mut pending = vec![(at, actions)];
    while let Some((at, actions)) = pending.pop() {
        let mut force = None;
        for action in actions {
            let run = &mut runs[at];
            match action {
                Action::SendAdvert { priority } => run.send_advert(priority).await,
                Action::TakeOver => run.take_over().await,
                Action::Release => run.release().await,
                Action::Changed { from, to, reason } => {
                    run.changed(from, to, &reason);
                    // Taking over, or yielding as master, carries the group;
                    // starting as backup does not demote a member that is
                    // master already. Faults spread through tracking.
                    let carries =
                        to == State::Master || (from == State::Master && to == State::Backup);
                    if let (Some(group), true) = (&run.group, carries) {
                        force = Some(Force {
                            group: group.clone(),
                            except: at,
                            state: to,
                        });
                    }
                }
            }
        }
        if let Some(force) = force {
            for (other, run) in runs.iter_mut().enumerate() {
                if other != force.except
                    && run.group.as_deref() == Some(force.group.as_str())
                    && run.machine.state() != force.state
                {
                    pending.push((other, run.machine.handle(now, Input::Force(force.state))));
                }
            }
        }
    }
}
