//! `xlb run`: start (or adopt) the data plane, serve the API, follow the
//! health checks, reload on SIGHUP, and stop cleanly on SIGTERM; under
//! systemd, with readiness, reload and watchdog notifications.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, PoisonError,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use log::LevelFilter;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch, Mutex},
};

use lb_common::stats::Counter;

use crate::agent::{
    self,
    flood::{FloodChange, FloodState, FloodWatch},
    resolve_next_hops, Agent, AgentHandle, Files, FlowCount, Resolve,
};
use crate::{
    api::{self, ApiState},
    config,
    dataplane::{self, Dataplane, FlowTable, LoadOptions, WalkError},
    health::{Monitor, Transition},
    model::Model,
    nat_routes, systemd,
    vrrp::Vrrp,
};

/// How often next hops that failed to resolve are tried again.
const RETRY_NEXT_HOPS: Duration = Duration::from_secs(5);
/// How often every next hop is resolved again, to follow MAC changes.
const REFRESH_NEXT_HOPS: Duration = Duration::from_secs(60);
/// The shortest pause between two walks of the flow table.
const MIN_COUNT_PAUSE: Duration = Duration::from_secs(2);
/// The pause after a walk of the flow table, in walks: counting takes at
/// most 1/21 of a CPU however large the table.
const COUNT_PAUSE_WALKS: u32 = 20;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config: PathBuf,
    /// On SIGTERM, leave the program attached and the maps pinned, for the
    /// next agent to adopt.
    pub keep_dataplane: bool,
    pub bpf_log: LevelFilter,
}

pub fn run(options: RunOptions) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(options))
}

/// The API token from its file, required off loopback.
pub(crate) fn read_token(model: &Model) -> anyhow::Result<Option<Arc<str>>> {
    let Some(path) = &model.agent.api_token_file else {
        if !model.agent.api_listen.ip().is_loopback() {
            bail!(
                "the API listens on {} and so needs a token: set agent.api_token_file",
                model.agent.api_listen
            );
        }
        return Ok(None);
    };
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("reading the API token from {}", path.display()))?;
    let token = token.trim();
    if token.len() < 16 {
        bail!(
            "the API token in {} is {} characters; use at least 16",
            path.display(),
            token.len()
        );
    }
    Ok(Some(token.into()))
}

/// The pinned data plane if there is one (checked against the config's
/// tables), else a new one.
fn data_plane(model: &Model, bpf_log: LevelFilter) -> anyhow::Result<(Dataplane, bool)> {
    let pins = &model.agent.pin_path;
    if let Some(dataplane) = Dataplane::adopt(pins)? {
        let found = dataplane.options();
        let wanted = LoadOptions::of(&model.tables);
        let sizes = |o: &LoadOptions| {
            (
                o.maglev_size,
                o.max_services,
                o.max_backends,
                o.flow_entries,
                o.affinity_entries,
            )
        };
        if sizes(found) != sizes(&wanted) {
            bail!(
                "the data plane pinned at {} has other table sizes than [tables] asks for: \
                 restore them, or remove the pins to start afresh (which drops established flows)",
                pins.display()
            );
        }
        log::info!(
            "adopted the data plane pinned at {} ({} services, attached to {})",
            pins.display(),
            dataplane.installed_service_count(),
            dataplane
                .attachments()
                .map(|a| a.iface.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok((dataplane, true));
    }
    // Refused before anything is loaded or attached.
    let (existing, on_bpffs) = dataplane::on_bpffs(pins)
        .with_context(|| format!("checking the pin path {}", pins.display()))?;
    if !on_bpffs {
        bail!(
            "cannot pin the data plane at {}: {}",
            pins.display(),
            dataplane::not_on_bpffs(&existing, pins)
        );
    }
    let options = LoadOptions {
        bpf_log,
        ..LoadOptions::of(&model.tables)
    };
    Ok((Dataplane::load(&options)?, false))
}

async fn serve(options: RunOptions) -> anyhow::Result<()> {
    let (file, applied) = config::load_effective(&options.config)?;
    for note in &applied.notes {
        log::warn!("a change made through the API no longer applies: {note}");
    }
    let model = applied.model;
    // Before touching the kernel: NAT backends behind an interface not
    // attached would never have their replies translated.
    nat_routes::check(&model, None)?;
    let token = read_token(&model)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let listener = tokio::net::TcpListener::bind(model.agent.api_listen)
        .await
        .with_context(|| format!("listening on {} for the API", model.agent.api_listen))?;

    let (mut dataplane, adopted) = data_plane(&model, options.bpf_log)?;
    let log_forwarder = dataplane
        .spawn_log_forwarder()
        .map_err(|e| log::warn!("not forwarding the XDP program's log: {e}"))
        .ok();
    let (events, transitions) = mpsc::unbounded_channel();
    let (flow_count_tx, flow_count) = watch::channel(FlowCount::default());
    let (flood_tx, flood) = watch::channel(FloodState::default());
    let mut agent = Agent::new(
        model.clone(),
        dataplane,
        Monitor::new(events),
        Files {
            state: config::state_path(&options.config, &file),
            config: options.config.clone(),
            file: Arc::new(file),
        },
        flow_count,
        flood,
    )?;
    if adopted {
        agent.start_from_adopted();
    }
    let table = agent.dataplane().flow_table();
    let tracking = agent.tracking_updates();
    // From here the agent lives in its own task; the API answers from the
    // start (/ready says when the data plane serves).
    let (agent, owner) = agent::spawn(agent);
    let ready = Arc::new(AtomicBool::new(false));
    let vrrp_slot = Arc::new(Mutex::new(None));
    let state = ApiState {
        agent: agent.clone(),
        token,
        ready: ready.clone(),
        vrrp: vrrp_slot.clone(),
    };
    let api = tokio::spawn(async move {
        if let Err(e) = axum::serve(
            listener,
            api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        {
            log::error!("the API server stopped: {e}");
        }
    });
    let first = model.clone();
    let started = agent
        .run(move |a: &mut Agent| Box::pin(async move { start(a, &first, adopted).await }))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .and_then(|started| started);
    if let Err(e) = started {
        api.abort();
        // An adopted data plane stays as it was found.
        finish(&agent, adopted).await;
        return Err(e);
    }
    let vrrp = if model.vrrp.is_empty() {
        None
    } else {
        match Vrrp::start(&model.vrrp, &model.sync_groups, tracking).await {
            Ok(vrrp) => Some(Arc::new(vrrp)),
            Err(e) => {
                api.abort();
                finish(&agent, adopted).await;
                return Err(e.context("starting VRRP"));
            }
        }
    };
    if let Some(vrrp) = &vrrp {
        let vrrp = vrrp.clone();
        agent
            .run(move |a: &mut Agent| Box::pin(async move { a.set_vrrp(vrrp) }))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    *vrrp_slot.lock().await = vrrp.clone();
    ready.store(true, Ordering::Release);
    let serving = format!(
        "serving {} services; API on http://{}",
        model.services.len(),
        model.agent.api_listen
    );
    log::info!("{serving}");
    systemd::ready(&serving);
    let watchdog = systemd::watchdog_interval().map(|every| {
        let alive = agent.clone();
        tokio::spawn(systemd::keep_watchdog(
            every,
            move || {
                let alive = alive.clone();
                async move { alive.run(|_: &mut Agent| Box::pin(async {})).await.is_ok() }
            },
            systemd::watchdog_ping,
        ))
    });

    let follower = tokio::spawn(follow_health(agent.clone(), transitions));
    let resolver = tokio::spawn(follow_next_hops(agent.clone()));
    let flood_watch = tokio::spawn(watch_flood(agent.clone(), flood_tx));
    // Set on the way out: a walk under way stops within a few ms.
    let stop_walks = Arc::new(AtomicBool::new(false));
    let counter = match table {
        Ok(table) => Some(tokio::spawn(count_flows(
            agent.clone(),
            table,
            flow_count_tx,
            stop_walks.clone(),
        ))),
        Err(e) => {
            log::warn!("not counting active and inactive flows: {e}");
            None
        }
    };

    let mut owner = owner;
    let lost = loop {
        tokio::select! {
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            // Only a panic in a job ends it while this handle lives.
            ended = &mut owner => break Some(ended.err()),
            _ = sighup.recv() => {
                let reloaded = agent.run(|a: &mut Agent| Box::pin(a.reload())).await;
                if let Err(e) = reloaded.and_then(|reloaded| reloaded) {
                    log::error!("reload: {e}{}",
                        e.field.as_ref().map(|f| format!(" ({f})")).unwrap_or_default());
                }
            }
        }
    };
    stop_walks.store(true, Ordering::Relaxed);
    // A restart by systemd keeps the data plane for the next agent to adopt.
    let keep = options.keep_dataplane || (lost.is_none() && systemd::restarting());
    systemd::stopping(if keep {
        "stopping; the data plane stays for the next agent"
    } else {
        "stopping"
    });
    if let Some(vrrp) = &vrrp {
        vrrp.shutdown().await;
    }
    for task in [api, follower, resolver, flood_watch]
        .into_iter()
        .chain(log_forwarder)
        .chain(counter)
        .chain(watchdog)
    {
        task.abort();
    }
    if let Some(failure) = lost {
        let why = failure.map_or_else(|| "it returned".to_string(), |e| e.to_string());
        bail!(
            "the agent's task ended ({why}); the data plane is left forwarding, pinned at {}, \
             for the next `xlb run` to adopt",
            model.agent.pin_path.display()
        );
    }
    finish(&agent, keep).await;
    drop(agent);
    // The owner ends once the last handle is gone (the aborted tasks' go
    // as they wind down).
    let _ = tokio::time::timeout(Duration::from_secs(1), owner).await;
    Ok(())
}

/// [`stop`], as the agent's last job.
async fn finish(agent: &AgentHandle, keep: bool) {
    let stopped = agent
        .run(move |a: &mut Agent| Box::pin(async move { stop(a, keep) }))
        .await;
    if let Err(e) = stopped {
        log::error!("stopping: {e}");
    }
}

/// The first apply, then attaching and pinning; on a new data plane the
/// services are in place before the first packet arrives.
async fn start(agent: &mut Agent, model: &Model, adopted: bool) -> anyhow::Result<()> {
    agent
        .install(model.clone())
        .await
        .map_err(|e| anyhow::anyhow!("applying the configuration: {e}"))?;
    agent
        .attach_interfaces(model)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !adopted {
        agent.dataplane().pin(&model.agent.pin_path)?;
    }
    Ok(())
}

/// Stops the checks, and unless `keep`, detaches and removes the pins.
fn stop(agent: &mut Agent, keep: bool) {
    agent.stop_checks();
    let pins = agent.model().agent.pin_path.clone();
    if keep {
        log::info!(
            "leaving the data plane running, pinned at {}; the next `xlb run` adopts it",
            pins.display()
        );
        return;
    }
    stop_dataplane(agent.dataplane(), &pins);
}

fn stop_dataplane(dataplane: &mut Dataplane, pins: &Path) {
    if let Err(e) = dataplane.unpin() {
        log::error!("removing the pins in {}: {e}", pins.display());
    }
    match dataplane.detach() {
        Ok(detached) => {
            for attachment in detached {
                log::info!("detached from {}", attachment.iface);
            }
        }
        Err(e) => log::error!("detaching: {e}"),
    }
}

/// Applies health transitions as they come, several at once when they
/// arrive together.
async fn follow_health(agent: AgentHandle, mut transitions: mpsc::UnboundedReceiver<Transition>) {
    while let Some(first) = transitions.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = transitions.try_recv() {
            batch.push(next);
        }
        let applied = agent
            .run(move |a: &mut Agent| Box::pin(async move { a.on_transitions(&batch).await }))
            .await;
        if applied.is_err() {
            return;
        }
    }
}

/// Resolves failed next hops again every [`RETRY_NEXT_HOPS`] and all of them
/// every [`REFRESH_NEXT_HOPS`], here: the agent goes on with other jobs
/// while a neighbour that does not answer is waited for.
async fn follow_next_hops(agent: AgentHandle) {
    let mut retry = tokio::time::interval(RETRY_NEXT_HOPS);
    let mut refresh = tokio::time::interval(REFRESH_NEXT_HOPS);
    retry.tick().await;
    refresh.tick().await;
    loop {
        let which = tokio::select! {
            _ = retry.tick() => Resolve::Failed,
            _ = refresh.tick() => Resolve::All,
        };
        let planned = agent
            .run(move |a: &mut Agent| Box::pin(async move { a.next_hops_to_resolve(which) }))
            .await;
        let Ok(todo) = planned else {
            return;
        };
        if todo.is_empty() {
            continue;
        }
        let results = resolve_next_hops(&todo).await;
        let recorded = agent
            .run(move |a: &mut Agent| Box::pin(async move { a.next_hops_resolved(results).await }))
            .await;
        if recorded.is_err() {
            return;
        }
    }
}

/// How often the flood guard's counter is read.
const FLOOD_WATCH_EVERY: Duration = Duration::from_secs(1);

/// Follows the flood guard, logging when it starts and stops forwarding
/// new flows without state.
async fn watch_flood(agent: AgentHandle, state: watch::Sender<FloodState>) {
    let mut every = tokio::time::interval(FLOOD_WATCH_EVERY);
    let mut watch = FloodWatch::default();
    loop {
        every.tick().await;
        let snapshot = agent.snapshot();
        let (counters, cap) = (snapshot.reader().counters(), snapshot.flood_guard());
        let Ok(counters) = counters else { continue };
        match watch.observe(counters.get(Counter::FloodStateless), SystemTime::now()) {
            Some(FloodChange::Started) => log::warn!(
                "flood guard: over {cap} new flows/s on a CPU; new flows are forwarded \
                 without flow state, established ones keep theirs"
            ),
            Some(FloodChange::Ended) => log::info!(
                "flood guard: new flows are recorded again ({} forwarded without state so far)",
                watch.state().stateless_flows
            ),
            None => {}
        }
        state.send_replace(watch.state());
    }
}

/// Walks the flow table for each backend's active and inactive flows, and
/// prunes it, over and over, on a blocking thread. A failed walk leaves
/// the last counts and their time as they were; the next is tried after
/// the usual pause.
async fn count_flows(
    agent: AgentHandle,
    table: FlowTable,
    counts: watch::Sender<FlowCount>,
    stop: Arc<AtomicBool>,
) {
    let table = Arc::new(std::sync::Mutex::new(table));
    let mut failing = false;
    loop {
        let udp_timeout = agent.snapshot().model().agent.udp_timeout;
        let (walked, stop) = (table.clone(), stop.clone());
        let started = Instant::now();
        let walk = tokio::task::spawn_blocking(move || {
            // The table is the kernel's: a walk that panicked left it whole.
            let mut table = walked.lock().unwrap_or_else(PoisonError::into_inner);
            table.walk(udp_timeout, &stop)
        })
        .await;
        let took = started.elapsed();
        let failure = match walk {
            Ok(Ok(walk)) => {
                log::debug!(
                    "walked the flow table in {took:?}: {} entries, {} pruned",
                    walk.entries,
                    walk.pruned
                );
                counts.send_replace(FlowCount {
                    walk,
                    at: Some(SystemTime::now()),
                    took,
                });
                None
            }
            Ok(Err(WalkError::Stopped)) => return,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the walk of the flow table failed: {e}")),
        };
        match &failure {
            Some(e) if !failing => {
                log::warn!("counting flows: {e}; the counts stay as last taken, trying again");
            }
            None if failing => log::info!("counting flows again"),
            _ => {}
        }
        failing = failure.is_some();
        tokio::time::sleep(count_pause(took)).await;
    }
}

/// The pause before the next walk of the flow table after one that `took`.
fn count_pause(took: Duration) -> Duration {
    (took * COUNT_PAUSE_WALKS).max(MIN_COUNT_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_pause_twenty_times_as_long_as_they_took_and_2s_at_least() {
        assert_eq!(count_pause(Duration::ZERO), MIN_COUNT_PAUSE);
        assert_eq!(count_pause(Duration::from_millis(100)), MIN_COUNT_PAUSE);
        assert_eq!(
            count_pause(Duration::from_millis(150)),
            Duration::from_secs(3)
        );
    }
}
