//! The console's backend: the engines (the two-engine lab, or one engine from a
//! configuration file) run on a tokio runtime in a thread of their own. The UI sends
//! [`UiCommand`]s with `try_send` and never waits; the backend answers with
//! [`BackendEvent`]s and publishes an immutable [`Snapshot`] over a `watch` channel (latest
//! wins), at most every 150 ms, then asks egui to repaint.
//!
//! It builds what the engine does not keep in one place, from the engine's public API only:
//! device rows with their managers (from each cached tree's DMAcc ServerIDs), delegations from
//! the board merged with the store's history, a delegation's timeline from its events,
//! messages, journal and audit lines, peers with their certificates (read from a TLS
//! handshake), the change preview (from `delegation::plan` on the cached tree), the audit
//! chart, bulk delegation and exports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};

use super::certinfo;
use super::model::*;
use super::tree::TreeModel;
use crate::delegation::machine::{State, StoredCommand};
use crate::delegation::plan::{self, account_name};
use crate::dm::mo::{BootConfigEntry, DmAcc};
use crate::dm::tree::DmTree;
use crate::dm::uri::NodeUri;
use crate::engine::control::{ControlListener, ControlServer};
use crate::engine::driver::{StartRequest, now_ms};
use crate::engine::peers::{PeerEntry, PeerOrigin};
use crate::engine::service::{Engine, EngineConfig};
use crate::lab::{Lab, LabOptions};
use crate::store::delegations::{self as sd, AuditFilter, AuditRow, HistoryFilter};
use crate::syncml::session::DeviceCommand;

/// What the console runs on.
#[derive(Debug)]
pub enum Launch {
    /// The two-engine lab with simulated devices (DESIGN.md section 7).
    Lab(LabOptions),
    /// One engine of a real deployment.
    Engine {
        /// Its configuration.
        config: Box<EngineConfig>,
        /// Where it takes operator commands from the command line, as `dmdeleg serve` does
        /// (bound before the engine starts, so a `serve` already running on the same data
        /// directory keeps the console from starting a second engine on it).
        control: Option<PathBuf>,
    },
}

/// The running engines.
pub enum Deployment {
    /// The lab: DMS-1, DMS-2 and the devices.
    Lab(Box<Lab>),
    /// One engine, and its control socket.
    Engine(Arc<Engine>, Option<ControlServer>),
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deployment::Lab(l) => l.fmt(f),
            Deployment::Engine(e, _) => e.fmt(f),
        }
    }
}

impl Deployment {
    /// The engines, DMS-1 first in the lab.
    pub fn engines(&self) -> Vec<&Engine> {
        match self {
            Deployment::Lab(l) => vec![&l.dms1, &l.dms2],
            Deployment::Engine(e, _) => vec![e],
        }
    }

    /// Engine `i`.
    pub fn engine(&self, i: usize) -> Option<&Engine> {
        self.engines().get(i).copied()
    }

    /// The lab, when it is one.
    pub fn lab(&self) -> Option<&Lab> {
        match self {
            Deployment::Lab(l) => Some(l),
            Deployment::Engine(..) => None,
        }
    }
}

/// Shared between the handle and the backend thread.
#[derive(Default)]
struct Shared {
    runtime: OnceLock<tokio::runtime::Handle>,
    deployment: OnceLock<Arc<Deployment>>,
}

/// The UI's handle on the backend.
pub struct Backend {
    cmd_tx: mpsc::Sender<UiCommand>,
    events: std::sync::mpsc::Receiver<BackendEvent>,
    snap: watch::Receiver<Arc<Snapshot>>,
    shared: Arc<Shared>,
    /// Keeps a fixed snapshot's channel open; commands to it are dropped.
    _fixed: Option<(watch::Sender<Arc<Snapshot>>, mpsc::Receiver<UiCommand>)>,
    fixed: bool,
    /// Hears when the backend thread has stopped the engines and ended.
    finished: Option<std::sync::mpsc::Receiver<()>>,
}

/// How long closing the console waits for the engines to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);

impl Drop for Backend {
    /// Closing the console stops the engines before the process ends: the command channel
    /// closes, the backend stops each engine (its batch finished, its store's log folded in)
    /// and this waits for that, at most [`STOP_WAIT`].
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.cmd_tx, closed));
        if let Some(finished) = self.finished.take() {
            // Ended or gone: either way there is nothing more to wait for.
            let _ = finished.recv_timeout(STOP_WAIT);
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

/// Sends events to the UI and wakes it.
#[derive(Clone)]
struct Sink {
    tx: std::sync::mpsc::Sender<BackendEvent>,
    ctx: egui::Context,
}

impl Sink {
    fn send(&self, ev: BackendEvent) {
        // The UI is gone when this fails; then nobody needs the answer.
        let _ = self.tx.send(ev);
        self.ctx.request_repaint();
    }

    fn notice(&self, severity: Severity, text: impl Into<String>) {
        self.send(BackendEvent::Notice(Notice {
            severity,
            text: text.into(),
            at_ms: now_ms(),
        }));
    }
}

impl Backend {
    /// Starts the backend thread; the engines start in it (the UI shows "starting" meanwhile).
    pub fn start(launch: Launch, ctx: egui::Context) -> Backend {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (ev_tx, events) = std::sync::mpsc::channel();
        let (snap_tx, snap) = watch::channel(Arc::new(Snapshot::default()));
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let sink = Sink { tx: ev_tx, ctx };
        let (finished_tx, finished) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("dmdeleg-console-backend".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("dmdeleg-engine")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        publish_failed(&snap_tx, &sink, format!("cannot start the runtime: {e}"));
                        return;
                    }
                };
                let _ = sh.runtime.set(rt.handle().clone());
                rt.block_on(run(launch, cmd_rx, sink, snap_tx, sh));
                rt.shutdown_timeout(Duration::from_secs(2));
                let _ = finished_tx.send(());
            });
        if let Err(e) = spawned {
            // Without the thread nothing runs; the snapshot says why.
            let (tx, rx) = watch::channel(Arc::new(Snapshot {
                phase: Phase::Failed(format!("cannot start the backend thread: {e}")),
                ..Snapshot::default()
            }));
            let (_, cmd_rx) = mpsc::channel(1);
            return Backend {
                cmd_tx,
                events,
                snap: rx,
                shared,
                _fixed: Some((tx, cmd_rx)),
                fixed: true,
                finished: None,
            };
        }
        Backend {
            cmd_tx,
            events,
            snap,
            shared,
            _fixed: None,
            fixed: false,
            finished: Some(finished),
        }
    }

    /// A backend with no engines that always shows `snapshot` (benchmarks, view tests).
    pub fn fixed(snapshot: Snapshot) -> Backend {
        let (cmd_tx, cmd_rx) = mpsc::channel(256);
        let (_ev_tx, events) = std::sync::mpsc::channel();
        let (snap_tx, snap) = watch::channel(Arc::new(snapshot));
        Backend {
            cmd_tx,
            events,
            snap,
            shared: Arc::new(Shared::default()),
            _fixed: Some((snap_tx, cmd_rx)),
            fixed: true,
            finished: None,
        }
    }

    /// Queues a command; a full queue is refused at once ("engine busy"), never waited on.
    pub fn send(&self, cmd: UiCommand) -> Result<(), String> {
        if self.fixed {
            return Ok(());
        }
        self.cmd_tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                "the engine is busy; try again in a moment".to_owned()
            }
            mpsc::error::TrySendError::Closed(_) => "the engine has stopped".to_owned(),
        })
    }

    /// The latest snapshot (a brief read lock and an `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.borrow().clone()
    }

    /// The next event, if one is waiting.
    pub fn try_event(&self) -> Option<BackendEvent> {
        self.events.try_recv().ok()
    }

    /// The running engines, once started (tests reach the lab's devices through it).
    pub fn deployment(&self) -> Option<Arc<Deployment>> {
        self.shared.deployment.get().cloned()
    }

    /// The backend's runtime, once started.
    pub fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.shared.runtime.get().cloned()
    }
}

fn publish_failed(tx: &watch::Sender<Arc<Snapshot>>, sink: &Sink, why: String) {
    tx.send_replace(Arc::new(Snapshot {
        version: 1,
        phase: Phase::Failed(why),
        ..Snapshot::default()
    }));
    sink.ctx.request_repaint();
}

/// One engine's state in the backend.
struct ServerState {
    items: HashMap<String, DelegationItem>,
    view: ServerView,
    devices_key: Option<(u64, usize)>,
    watched: Option<String>,
    peers: Arc<Mutex<Vec<PeerView>>>,
}

struct Core {
    dep: Arc<Deployment>,
    sink: Sink,
    servers: Vec<ServerState>,
    bulk: Arc<Mutex<Option<BulkProgress>>>,
    bulk_stop: Arc<AtomicBool>,
    dirty_tx: mpsc::UnboundedSender<()>,
    snap_tx: watch::Sender<Arc<Snapshot>>,
    version: u64,
    lab: bool,
    journals: Journals,
    snooping: Vec<Arc<AtomicBool>>,
}

/// The device journal of each delegation as last seen while it ran: (changes, undo). The
/// engine empties a journal as the device takes it (changes once applied, undo once done or
/// no longer needed), so the console keeps what it saw to show the commands afterwards.
type Journals = Arc<Mutex<HashMap<String, (Vec<sd::JournalEntry>, Vec<sd::JournalEntry>)>>>;

/// Remembers the longest change and undo lists seen for each delegation.
fn remember(journals: &Journals, id: &str, entries: &[sd::JournalEntry]) {
    if entries.is_empty() {
        return;
    }
    let (changes, undo): (Vec<_>, Vec<_>) = entries
        .iter()
        .cloned()
        .partition(|e| e.kind == sd::JournalKind::Change);
    if let Ok(mut j) = journals.lock() {
        if j.len() > 50_000 {
            j.clear();
        }
        let e = j.entry(id.to_owned()).or_default();
        if changes.len() > e.0.len() {
            e.0 = changes;
        }
        if undo.len() > e.1.len() {
            e.1 = undo;
        }
    }
}

async fn start_deployment(launch: Launch) -> Result<Deployment, String> {
    match launch {
        Launch::Lab(opts) => {
            std::fs::create_dir_all(&opts.dir)
                .map_err(|e| format!("cannot create {}: {e}", opts.dir.display()))?;
            let lab = Lab::start(&opts).await.map_err(|e| e.to_string())?;
            let failed = lab.inventory(16).await;
            if failed > 0 {
                tracing_warn(&format!(
                    "{failed} simulated devices missed their first session"
                ));
            }
            Ok(Deployment::Lab(Box::new(lab)))
        }
        Launch::Engine { config, control } => {
            let control = match control {
                Some(path) => Some(
                    ControlListener::bind(&path)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
                None => None,
            };
            let engine = Arc::new(Engine::start(*config).await.map_err(|e| e.to_string())?);
            let control = control.map(|c| c.serve(engine.clone()));
            Ok(Deployment::Engine(engine, control))
        }
    }
}

fn tracing_warn(text: &str) {
    eprintln!("dmdeleg: {text}");
}

async fn run(
    launch: Launch,
    mut cmd_rx: mpsc::Receiver<UiCommand>,
    sink: Sink,
    snap_tx: watch::Sender<Arc<Snapshot>>,
    shared: Arc<Shared>,
) {
    let lab = matches!(launch, Launch::Lab(_));
    snap_tx.send_replace(Arc::new(Snapshot {
        version: 1,
        phase: Phase::Starting,
        lab,
        ..Snapshot::default()
    }));
    sink.ctx.request_repaint();
    let dep = match start_deployment(launch).await {
        Ok(d) => Arc::new(d),
        Err(why) => {
            publish_failed(&snap_tx, &sink, why);
            // Answer commands with the reason until the UI goes away.
            while cmd_rx.recv().await.is_some() {
                sink.notice(Severity::Error, "the engines did not start");
            }
            return;
        }
    };
    let _ = shared.deployment.set(dep.clone());
    let (dirty_tx, mut dirty_rx) = mpsc::unbounded_channel();
    let mut core = Core {
        dep: dep.clone(),
        sink: sink.clone(),
        servers: Vec::new(),
        bulk: Arc::new(Mutex::new(None)),
        bulk_stop: Arc::new(AtomicBool::new(false)),
        dirty_tx: dirty_tx.clone(),
        snap_tx,
        version: 1,
        lab,
        journals: Arc::new(Mutex::new(HashMap::new())),
        snooping: Vec::new(),
    };
    let (change_tx, mut change_rx) = mpsc::unbounded_channel::<usize>();
    for (i, engine) in dep.engines().into_iter().enumerate() {
        let history = engine
            .store()
            .call(|c| {
                sd::history(
                    c,
                    &HistoryFilter {
                        limit: Some(100_000),
                        ..HistoryFilter::default()
                    },
                )
            })
            .await
            .unwrap_or_default();
        let items = history
            .iter()
            .filter_map(DelegationItem::from_row)
            .map(|d| (d.id.clone(), d))
            .collect();
        let peers = engine.peers().iter().map(peer_view).collect();
        let label = if lab {
            format!("DMS-{}", i + 1)
        } else {
            engine.server_id().to_owned()
        };
        core.servers.push(ServerState {
            items,
            view: ServerView {
                server_id: engine.server_id().to_owned(),
                label,
                devices_url: engine.dm().url().to_owned(),
                peer_url: engine.peer_url().map(str::to_owned),
                ..ServerView::default()
            },
            devices_key: None,
            watched: None,
            peers: Arc::new(Mutex::new(peers)),
        });
        let mut rx = engine.changes();
        let tx = change_tx.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if tx.send(i).is_err() {
                    break;
                }
            }
        });
        core.check_peers(i);
        core.snooping.push(Arc::new(AtomicBool::new(false)));
    }
    drop(change_tx);
    for i in 0..core.servers.len() {
        core.refresh_delegations(i);
        core.refresh_devices(i, true);
        core.refresh_peers(i);
    }
    core.publish();
    let mut tick = tokio::time::interval(Duration::from_millis(1000));
    let mut board_dirty = vec![false; core.servers.len()];
    let mut other_dirty = false;
    let mut due: Option<tokio::time::Instant> = None;
    let throttle = Duration::from_millis(150);
    loop {
        tokio::select! {
            cmd = cmd_rx.recv() => match cmd {
                Some(cmd) => core.handle(cmd),
                None => break,
            },
            Some(i) = change_rx.recv() => {
                if let Some(d) = board_dirty.get_mut(i) {
                    *d = true;
                }
                core.snoop_journals(i);
                due.get_or_insert_with(|| tokio::time::Instant::now() + throttle);
            }
            Some(()) = dirty_rx.recv() => {
                other_dirty = true;
                due.get_or_insert_with(|| tokio::time::Instant::now() + throttle);
            }
            _ = tick.tick() => {
                let mut changed = false;
                for i in 0..core.servers.len() {
                    changed |= core.refresh_devices(i, false);
                }
                if changed {
                    due.get_or_insert_with(tokio::time::Instant::now);
                }
            }
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() => {
                due = None;
                for (i, d) in board_dirty.iter_mut().enumerate() {
                    if std::mem::take(d) {
                        core.refresh_delegations(i);
                        core.reload_watched(i);
                    }
                }
                if std::mem::take(&mut other_dirty) {
                    for i in 0..core.servers.len() {
                        core.refresh_peers(i);
                    }
                }
                core.publish();
            }
        }
    }
    core.bulk_stop.store(true, Ordering::Relaxed);
    drop(core);
    // Stop the engines cleanly: each driver finishes its batch and each store's log is
    // folded into its file (tasks still holding them end with the runtime).
    match &*dep {
        Deployment::Lab(lab) => {
            lab.dms2.shutdown().await;
            lab.dms1.shutdown().await;
        }
        Deployment::Engine(e, control) => {
            if let Some(c) = control {
                c.stop();
            }
            e.shutdown().await
        }
    }
}

impl Core {
    fn publish(&mut self) {
        self.version += 1;
        let snap = Snapshot {
            version: self.version,
            phase: Phase::Ready,
            servers: self.servers.iter().map(|s| s.view.clone()).collect(),
            bulk: self.bulk.lock().ok().and_then(|b| b.clone()),
            lab: self.lab,
        };
        self.snap_tx.send_replace(Arc::new(snap));
        self.sink.ctx.request_repaint();
    }
}

/// How many delegations the console lists (the newest; every one that has not ended stays):
/// as many as it reads from the history at start. Older ones are in the Audit view.
const LISTED: usize = 100_000;

/// Trims `list` (newest first) to `keep` entries by dropping the oldest that ended, from
/// `items` too; a delegation still running is never dropped.
fn keep_newest(
    list: &mut Vec<DelegationItem>,
    items: &mut HashMap<String, DelegationItem>,
    keep: usize,
) {
    let mut excess = list.len().saturating_sub(keep);
    if excess == 0 {
        return;
    }
    let mut kept = Vec::with_capacity(keep);
    for item in list.drain(..).rev() {
        if excess > 0 && item.state.is_terminal() {
            excess -= 1;
            items.remove(&item.id);
        } else {
            kept.push(item);
        }
    }
    kept.reverse();
    *list = kept;
}

impl Core {
    /// Merges the board into the known delegations and republishes the list.
    fn refresh_delegations(&mut self, i: usize) {
        let Some(engine) = self.dep.engine(i) else {
            return;
        };
        let summaries = engine.summaries();
        let Some(st) = self.servers.get_mut(i) else {
            return;
        };
        for s in &summaries {
            st.items.insert(s.id.clone(), DelegationItem::from(s));
        }
        let mut list: Vec<DelegationItem> = st.items.values().cloned().collect();
        list.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(b.id.cmp(&a.id)));
        keep_newest(&mut list, &mut st.items, LISTED);
        st.view.delegations = Arc::new(list.into());
    }

    /// Rebuilds the device rows when a session completed or a device was enrolled (or when
    /// `force`); returns whether it did.
    fn refresh_devices(&mut self, i: usize, force: bool) -> bool {
        let Some(engine) = self.dep.engine(i) else {
            return false;
        };
        let dm = engine.dm();
        let ids = dm.device_ids();
        let key = (dm.stats().sessions_completed, ids.len());
        let Some(st) = self.servers.get_mut(i) else {
            return false;
        };
        if !force && st.devices_key == Some(key) {
            return false;
        }
        st.devices_key = Some(key);
        let rows = ids
            .iter()
            .filter_map(|id| dm.device(id))
            .map(|rec| {
                let leaf = |name: &str| {
                    rec.devinfo
                        .iter()
                        .find(|(k, _)| k.ends_with(name))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let managers = rec
                    .summary
                    .as_ref()
                    .map(|t| {
                        t.accounts
                            .iter()
                            .map(|(server_id, dormant)| {
                                if *dormant {
                                    format!("{server_id} (dormant)")
                                } else {
                                    server_id.clone()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                DeviceRow {
                    dev_id: rec.dev_id.clone(),
                    man: leaf("Man"),
                    model: leaf("Mod"),
                    last_seen_ms: rec.last_seen.and_then(system_ms),
                    managers,
                    nodes: rec.summary.as_ref().map_or(0, |t| t.nodes),
                }
            })
            .collect();
        st.view.devices = Arc::new(super::table::DeviceTable::new(rows));
        true
    }

    fn refresh_peers(&mut self, i: usize) {
        if let Some(st) = self.servers.get_mut(i)
            && let Ok(p) = st.peers.lock()
        {
            st.view.peers = Arc::new(p.clone());
        }
    }

    fn reload_watched(&self, i: usize) {
        if let Some(id) = self.servers.get(i).and_then(|s| s.watched.clone()) {
            self.load_detail(i, id);
        }
    }

    /// Reads the journals of the engine's running delegations (one store call), so their
    /// commands can still be shown once the engine has emptied them.
    fn snoop_journals(&self, i: usize) {
        let Some(flag) = self.snooping.get(i).cloned() else {
            return;
        };
        if flag.swap(true, Ordering::AcqRel) {
            return;
        }
        let dep = self.dep.clone();
        let journals = self.journals.clone();
        tokio::spawn(async move {
            if let Some(engine) = dep.engine(i) {
                let live: Vec<String> = engine
                    .summaries()
                    .into_iter()
                    .filter(|s| !s.state.is_terminal())
                    .take(200)
                    .map(|s| s.id)
                    .collect();
                if !live.is_empty() {
                    let read = engine
                        .store()
                        .call(move |c| {
                            let mut out = Vec::new();
                            for id in live {
                                let j = sd::journal(c, &id)?;
                                out.push((id, j));
                            }
                            Ok(out)
                        })
                        .await;
                    for (id, j) in read.unwrap_or_default() {
                        remember(&journals, &id, &j);
                    }
                }
            }
            flag.store(false, Ordering::Release);
        });
    }

    fn load_detail(&self, server: usize, id: String) {
        let dep = self.dep.clone();
        let sink = self.sink.clone();
        let journals = self.journals.clone();
        tokio::spawn(async move {
            let Some(engine) = dep.engine(server) else {
                return;
            };
            match detail(engine, &id, &journals).await {
                Ok(Some(d)) => sink.send(BackendEvent::Detail {
                    server,
                    detail: Arc::new(d),
                }),
                Ok(None) => {}
                Err(e) => sink.notice(
                    Severity::Error,
                    format!("Could not read the timeline of {id}: {e}"),
                ),
            }
        });
    }

    fn check_peers(&self, server: usize) {
        let Some(st) = self.servers.get(server) else {
            return;
        };
        probe_peers(&st.peers, None, &self.dirty_tx);
    }

    fn handle(&mut self, cmd: UiCommand) {
        let dep = self.dep.clone();
        let sink = self.sink.clone();
        match cmd {
            UiCommand::Delegate { server, req } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    let dev = req.dev_id.clone();
                    let peer = req.peer.clone();
                    match engine.start_delegation(req).await {
                        Ok(id) => {
                            sink.notice(
                                Severity::Info,
                                format!("Delegation of {dev} to {peer} started ({id})"),
                            );
                            sink.send(BackendEvent::Started {
                                server,
                                id,
                                dev_id: dev,
                            });
                        }
                        Err(e) => {
                            sink.notice(Severity::Error, format!("{dev} was not delegated: {e}"))
                        }
                    }
                });
            }
            UiCommand::Bulk {
                server,
                dev_ids,
                template,
                concurrency,
                max_failures,
            } => {
                let running = self
                    .bulk
                    .lock()
                    .ok()
                    .is_some_and(|b| b.as_ref().is_some_and(|b| !b.finished));
                if running {
                    sink.notice(
                        Severity::Error,
                        "A bulk delegation is running; stop it or wait for it to end",
                    );
                    return;
                }
                self.bulk_stop.store(false, Ordering::Relaxed);
                let progress = BulkProgress {
                    server,
                    total: dev_ids.len(),
                    concurrency: concurrency.max(1),
                    max_failures: max_failures.max(1),
                    ..BulkProgress::default()
                };
                if let Ok(mut b) = self.bulk.lock() {
                    *b = Some(progress);
                }
                tokio::spawn(bulk(
                    dep,
                    server,
                    dev_ids,
                    template,
                    self.bulk.clone(),
                    self.bulk_stop.clone(),
                    self.dirty_tx.clone(),
                    sink,
                ));
                let _ = self.dirty_tx.send(());
            }
            UiCommand::StopBulk => {
                self.bulk_stop.store(true, Ordering::Relaxed);
                if let Ok(mut b) = self.bulk.lock()
                    && let Some(b) = b.as_mut().filter(|b| !b.finished)
                {
                    b.stopped = Some("stopped by the operator".into());
                }
                let _ = self.dirty_tx.send(());
            }
            UiCommand::Accept { server, id } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    match engine.accept(&id).await {
                        Ok(()) => sink.notice(Severity::Info, format!("Accepted {id}")),
                        Err(e) => sink.notice(Severity::Error, format!("Could not accept: {e}")),
                    }
                });
            }
            UiCommand::Decline { server, id, reason } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    match engine.decline(&id, &reason).await {
                        Ok(()) => sink.notice(Severity::Info, format!("Declined {id}")),
                        Err(e) => sink.notice(Severity::Error, format!("Could not decline: {e}")),
                    }
                });
            }
            UiCommand::Abort { server, id } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    match engine.abort(&id).await {
                        Ok(()) => sink.notice(
                            Severity::Info,
                            format!("Aborting {id}: the device is being put back as it was"),
                        ),
                        Err(e) => sink.notice(Severity::Error, format!("Could not abort: {e}")),
                    }
                });
            }
            UiCommand::Retry { server, id } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    match engine.retry(&id).await {
                        Ok(new_id) => {
                            let dev_id = engine
                                .summary(&new_id)
                                .map(|s| s.dev_id)
                                .unwrap_or_default();
                            sink.notice(
                                Severity::Info,
                                format!("Retrying {id} as a new attempt, {new_id}"),
                            );
                            sink.send(BackendEvent::Started {
                                server,
                                id: new_id,
                                dev_id,
                            });
                        }
                        Err(e) => sink.notice(Severity::Error, format!("Could not retry: {e}")),
                    }
                });
            }
            UiCommand::LoadTree { server, dev_id } => {
                // The engine keeps trees in its store, not in memory: read it there, then
                // build the view model off the runtime's worker threads.
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    let tree = match engine.dm().device(&dev_id) {
                        None => Err(format!("{dev_id} is not enrolled on this server")),
                        Some(rec) => match handle.block_on(engine.dm().device_tree(&dev_id)) {
                            Err(e) => Err(format!("Could not read the tree of {dev_id}: {e}")),
                            Ok(None) => Err(format!(
                                "{dev_id} has not had a session yet: its tree is not known"
                            )),
                            Ok(Some(t)) => Ok(Arc::new(TreeModel::build(
                                &dev_id,
                                &t,
                                rec.last_seen.and_then(system_ms),
                            ))),
                        },
                    };
                    sink.send(BackendEvent::Tree {
                        server,
                        dev_id,
                        tree,
                    });
                });
            }
            UiCommand::Preview(key) => {
                let handle = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let result = match dep.engine(key.server) {
                        None => Err("no such server".to_owned()),
                        Some(engine) => match handle.block_on(engine.dm().device_tree(&key.dev_id))
                        {
                            Err(e) => {
                                Err(format!("Could not read the tree of {}: {e}", key.dev_id))
                            }
                            Ok(None) => Err(format!("the tree of {} is not known yet", key.dev_id)),
                            Ok(Some(tree)) => preview(&tree, engine.server_id(), &key),
                        },
                    };
                    sink.send(BackendEvent::Preview { key, result });
                });
            }
            UiCommand::Watch { server, id } => {
                if let Some(st) = self.servers.get_mut(server) {
                    st.watched = id.clone();
                }
                if let Some(id) = id {
                    self.load_detail(server, id);
                }
            }
            UiCommand::Audit { server, filter } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    match audit_and_chart(engine, filter).await {
                        Ok((rows, chart)) => sink.send(BackendEvent::Audit {
                            server,
                            rows: Arc::new(rows),
                            chart: Arc::new(chart),
                        }),
                        Err(e) => sink.notice(
                            Severity::Error,
                            format!("Could not read the audit log: {e}"),
                        ),
                    }
                });
            }
            UiCommand::Export {
                server,
                filter,
                format,
                path,
            } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    let rows = engine.store().call(move |c| sd::audit(c, &filter)).await;
                    let rows = match rows {
                        Ok(r) => r,
                        Err(e) => {
                            sink.notice(Severity::Error, format!("Nothing exported: {e}"));
                            return;
                        }
                    };
                    let (text, name) = match format {
                        ExportFormat::Csv => (sd::audit_csv(&rows), "CSV"),
                        ExportFormat::Json => (sd::audit_json(&rows), "JSON"),
                    };
                    let written = tokio::task::spawn_blocking({
                        let path = path.clone();
                        move || std::fs::write(&path, text)
                    })
                    .await;
                    match written {
                        Ok(Ok(())) => sink.notice(
                            Severity::Info,
                            format!(
                                "Exported {} audit lines as {name} to {}",
                                rows.len(),
                                path.display()
                            ),
                        ),
                        Ok(Err(e)) => sink.notice(
                            Severity::Error,
                            format!("Could not write {}: {e}", path.display()),
                        ),
                        Err(_) => sink.notice(Severity::Error, "The export was interrupted"),
                    }
                });
            }
            UiCommand::CheckPeers { server } => self.check_peers(server),
            UiCommand::LabFault { dev_id, fail_path } => {
                tokio::spawn(async move {
                    let Some(lab) = dep.lab() else {
                        sink.notice(Severity::Error, "Faults can only be set on lab devices");
                        return;
                    };
                    let paths: Vec<NodeUri> = fail_path
                        .iter()
                        .filter_map(|p| NodeUri::parse(p).ok())
                        .collect();
                    let text = match &fail_path {
                        Some(p) => format!("Lab: {dev_id} now refuses commands under {p}"),
                        None => format!("Lab: {dev_id} behaves again"),
                    };
                    lab.fleet
                        .set_faults(
                            &dev_id,
                            crate::sim::device::DeviceFaults {
                                fail_paths: paths,
                                ..Default::default()
                            },
                        )
                        .await;
                    sink.notice(Severity::Info, text);
                });
            }
            UiCommand::ReadPeerCert { server, path } => {
                tokio::task::spawn_blocking(move || {
                    let result = crate::engine::peers::read_certificate(&path, now_ms())
                        .map(|c| CertSummary {
                            fingerprint: c.fingerprint,
                            expires: time_text(c.not_after_ms),
                            expires_ms: c.not_after_ms,
                            in_file: c.in_file,
                        })
                        .map_err(|e| e.to_string());
                    sink.send(BackendEvent::PeerCert {
                        server,
                        path,
                        result,
                    });
                });
            }
            UiCommand::AddPeer { server, peer } => {
                let Some(views) = self.servers.get(server).map(|s| s.peers.clone()) else {
                    return;
                };
                let dirty = self.dirty_tx.clone();
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    let result = match engine.add_peer(peer).await {
                        Ok(entry) => {
                            let id = entry.info.server_id.clone();
                            sync_peer_views(engine, &views);
                            probe_peers(&views, Some(&id), &dirty);
                            let fp = entry.info.auth.fingerprint().unwrap_or_default();
                            sink.notice(
                                Severity::Info,
                                format!("Peer {id} added, pinned to the certificate SHA-256 {fp}"),
                            );
                            Ok(id)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    sink.send(BackendEvent::PeerAdded { server, result });
                });
            }
            UiCommand::RemoveDevice { server, dev_id } => {
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    match engine.remove_device(&dev_id).await {
                        Ok(()) => sink.notice(
                            Severity::Info,
                            format!(
                                "{dev_id} removed from {}: its credentials and tree are gone, its history stays",
                                engine.server_id()
                            ),
                        ),
                        Err(e) => {
                            sink.notice(Severity::Error, format!("{dev_id} was not removed: {e}"))
                        }
                    }
                });
            }
            UiCommand::RemovePeer { server, server_id } => {
                let Some(views) = self.servers.get(server).map(|s| s.peers.clone()) else {
                    return;
                };
                let dirty = self.dirty_tx.clone();
                tokio::spawn(async move {
                    let Some(engine) = dep.engine(server) else {
                        return;
                    };
                    let result = match engine.remove_peer(&server_id).await {
                        Ok(()) => {
                            sync_peer_views(engine, &views);
                            // The backend loop is gone when this fails; nothing to show then.
                            let _ = dirty.send(());
                            sink.notice(Severity::Info, format!("Peer {server_id} removed"));
                            Ok(server_id)
                        }
                        Err(e) => {
                            sink.notice(
                                Severity::Error,
                                format!("{server_id} was not removed: {e}"),
                            );
                            Err(e.to_string())
                        }
                    };
                    sink.send(BackendEvent::PeerRemoved { server, result });
                });
            }
        }
    }
}

/// How the Peers view shows a peer, before any reachability check.
fn peer_view(e: &PeerEntry) -> PeerView {
    let p = &e.info;
    let expires_ms = e.origin.expires_ms();
    PeerView {
        server_id: p.server_id.clone(),
        url: p.base_url.clone(),
        policy: p.policy.as_str().to_owned(),
        auth: p.auth.describe(),
        fingerprint: p.auth.fingerprint().map(str::to_owned),
        expires_ms,
        expires: expires_ms.map(time_text),
        reach: Reach::Unknown,
        removable: matches!(e.origin, PeerOrigin::Added { .. }),
    }
}

/// Makes the list of peer views follow the engine's peers (added or removed), keeping what
/// the reachability checks found for the peers that stay.
fn sync_peer_views(engine: &Engine, views: &Arc<Mutex<Vec<PeerView>>>) {
    let fresh: Vec<PeerView> = engine.peers().iter().map(peer_view).collect();
    if let Ok(mut g) = views.lock() {
        let old = std::mem::take(&mut *g);
        *g = fresh
            .into_iter()
            .map(|mut v| {
                if let Some(o) = old.iter().find(|o| o.server_id == v.server_id) {
                    v.reach = o.reach.clone();
                    v.fingerprint = v.fingerprint.or_else(|| o.fingerprint.clone());
                    if v.expires_ms.is_none() {
                        v.expires_ms = o.expires_ms;
                        v.expires = o.expires.clone();
                    }
                }
                v
            })
            .collect();
    }
}

/// Checks that peers answer (all of them, or only `only`), each in a task of its own, and
/// records what each check found in `views` (by ServerID: the list may change meanwhile).
fn probe_peers(
    views: &Arc<Mutex<Vec<PeerView>>>,
    only: Option<&str>,
    dirty: &mpsc::UnboundedSender<()>,
) {
    let list: Vec<PeerView> = views
        .lock()
        .map(|g| {
            g.iter()
                .filter(|p| only.is_none_or(|id| p.server_id == id))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    for p in list {
        let views = views.clone();
        let dirty = dirty.clone();
        let update = move |f: &mut dyn FnMut(&mut PeerView)| {
            if let Ok(mut g) = views.lock()
                && let Some(v) = g.iter_mut().find(|v| v.server_id == p.server_id)
            {
                f(v);
            }
        };
        update(&mut |v| v.reach = Reach::Checking);
        let url = p.url.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let outcome = probe(&url).await;
            update(&mut |v| match &outcome {
                Ok((fp, expires)) => {
                    let pinned = v.auth.starts_with("its pinned certificate");
                    if pinned
                        && v.fingerprint
                            .as_deref()
                            .is_some_and(|f| !f.eq_ignore_ascii_case(fp))
                    {
                        v.reach = Reach::Down(format!(
                            "answers with another certificate than the pinned one ({fp})"
                        ));
                    } else {
                        v.reach = Reach::Up(started.elapsed().as_millis() as u64);
                        v.fingerprint = Some(fp.clone());
                    }
                    v.expires_ms = *expires;
                    v.expires = expires.map(time_text);
                }
                Err(why) => v.reach = Reach::Down(why.clone()),
            });
            // The backend loop is gone when this fails; nothing to update then.
            let _ = dirty.send(());
        });
    }
    // As above: nothing to update without the loop.
    let _ = dirty.send(());
}

fn system_ms(t: std::time::SystemTime) -> Option<i64> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as i64)
}

/// A device command in words.
pub fn command_words(c: &StoredCommand) -> String {
    match c {
        StoredCommand::ReplaceAcl { uri, acl } if acl.is_empty() => {
            format!("Clear the ACL of {uri} (it inherits its parent's again)")
        }
        StoredCommand::ReplaceAcl { uri, acl } => {
            format!("Replace the ACL of {uri} with {}", acl.replace('&', " & "))
        }
        StoredCommand::Delete { uri } => format!("Delete {uri}"),
        StoredCommand::ReplaceText { uri, value } => format!("Replace {uri} with \"{value}\""),
        StoredCommand::AddTnds { target, xml } => {
            let what = crate::dm::tnds::TndsDocument::from_xml(xml.as_bytes())
                .ok()
                .map(|d| {
                    let names: Vec<String> = d.nodes.iter().map(|n| n.name.clone()).collect();
                    format!("{} ({} nodes)", names.join(", "), d.node_count())
                })
                .unwrap_or_else(|| "a subtree".into());
            format!("Add {what} under {target}")
        }
        StoredCommand::Get { target } => format!("Get {target}"),
    }
}

fn device_command_words(c: &DeviceCommand) -> String {
    StoredCommand::from_command(c)
        .map(|s| command_words(&s))
        .unwrap_or_else(|| "a device command".into())
}

/// What a delegation would change on the device, computed as the engine will at step 4, with
/// a placeholder account named as the peer's will be.
pub fn preview(tree: &DmTree, me: &str, key: &PreviewKey) -> Result<PreviewView, String> {
    let mut paths = Vec::new();
    if !key.full {
        if key.paths.is_empty() {
            return Err("tick at least one subtree for a Partial delegation".into());
        }
        for p in &key.paths {
            paths.push(NodeUri::parse(p).map_err(|e| format!("{p} is not a node URI: {e}"))?);
        }
    }
    let peer = &key.peer;
    let plan = if key.bootstrap {
        let entry = BootConfigEntry {
            name: account_name(peer),
            server_url: format!("https://{peer}/bootstrap/<one-time token>"),
            server_id: Some(peer.clone()),
        };
        plan::prepare_bootstrap(
            tree,
            me,
            peer,
            key.full,
            &paths,
            &entry,
            &BootConfigEntry::default_root(),
        )
    } else {
        let account = DmAcc::new_digest(
            &account_name(peer),
            peer,
            &format!("https://{peer}/dm"),
            ("<device name>", "<secret>"),
            (peer, "<secret>"),
        )
        .to_tnds_node(None);
        plan::prepare_dmacc(tree, me, peer, key.full, &paths, &account)
    }
    .map_err(|e| e.to_string())?;
    Ok(PreviewView {
        added: plan.added.clone(),
        acls: plan
            .acls
            .iter()
            .map(|a| (a.uri.clone(), a.before.clone(), a.after.clone()))
            .collect(),
        changes: plan.changes.iter().map(device_command_words).collect(),
        undo: plan.undo.iter().map(device_command_words).collect(),
        note: key.full.then(|| {
            format!(
                "After {peer} confirms, step 8 removes {me} from every ACL and deletes its own \
                 account; that part is not undone."
            )
        }),
    })
}

/// The eight steps' names.
pub const STEP_NAMES: [&str; 8] = [
    "Notification",
    "Mutual authentication",
    "Account transfer",
    "Client preparation",
    "Prepared",
    "Delegated session",
    "Confirm",
    "Delete account",
];

fn who_acts(step: u8, delegating: &str, delegated: &str, bootstrap: bool) -> String {
    match step {
        1 => format!("{delegating} and {delegated} (notification and answer)"),
        2 => format!("{delegating} and {delegated} (mutual TLS)"),
        3 if bootstrap => format!("{delegated} sends a bootstrap URL"),
        3 => format!("{delegated} sends its account"),
        4 => format!("{delegating} changes the device"),
        5 if bootstrap => "the device fetches its bootstrap".to_owned(),
        5 => format!("{delegating} tells {delegated}"),
        6 => format!("{delegated} and the device"),
        7 => format!("{delegated} confirms to {delegating}"),
        _ => format!("{delegating} removes its account from the device"),
    }
}

fn status_in(text: &str) -> Option<String> {
    let i = text.find("status ")?;
    let code: String = text[i + 7..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!code.is_empty()).then_some(code)
}

async fn detail(engine: &Engine, id: &str, journals: &Journals) -> Result<Option<Detail>, String> {
    let key = id.to_owned();
    let loaded = engine
        .store()
        .call(move |c| {
            let Some(row) = sd::load(c, &key)? else {
                return Ok(None);
            };
            let events = sd::events(c, &key)?;
            let messages = sd::messages(c, &key)?;
            let journal = sd::journal(c, &key)?;
            let audit: Vec<AuditRow> = sd::audit(
                c,
                &AuditFilter {
                    dev_id: Some(row.dev_id.clone()),
                    ..AuditFilter::default()
                },
            )?
            .into_iter()
            .filter(|a| a.delegation_id.as_deref() == Some(key.as_str()))
            .collect();
            Ok(Some((row, events, messages, journal, audit)))
        })
        .await
        .map_err(|e| e.to_string())?;
    let Some((row, events, messages, journal, audit)) = loaded else {
        return Ok(None);
    };
    remember(journals, id, &journal);
    let journal: Vec<sd::JournalEntry> = match journals.lock().ok().and_then(|j| j.get(id).cloned())
    {
        Some((mut changes, undo)) => {
            changes.extend(undo);
            changes
        }
        None => journal,
    };
    let me = engine.server_id().to_owned();
    let (delegating, delegated) = if row.role == "Delegated" {
        (row.peer.clone(), me.clone())
    } else {
        (me.clone(), row.peer.clone())
    };
    let firsts: Vec<Option<i64>> = (1..=8u8)
        .map(|s| events.iter().find(|e| e.step == s).map(|e| e.at_ms))
        .collect();
    let last = events.iter().map(|e| e.at_ms).max();
    let mut steps = Vec::new();
    for s in 1..=8u8 {
        let started = firsts[usize::from(s - 1)];
        let next = firsts[usize::from(s)..].iter().flatten().next().copied();
        let duration = started.map(|t| next.or(last).unwrap_or(t) - t);
        steps.push(TimelineStep {
            step: s,
            name: STEP_NAMES[usize::from(s - 1)],
            who: who_acts(s, &delegating, &delegated, row.bootstrap),
            started_ms: started,
            duration_ms: duration,
            events: events.iter().filter(|e| e.step == s).cloned().collect(),
        });
    }
    let has = |t: &str| events.iter().any(|e| e.text.contains(t));
    let taken = has("account installed dormant")
        || has("rights granted and bootstrap config written")
        || has("the device had taken the changes");
    let refused = events
        .iter()
        .filter(|e| e.text.contains("refused"))
        .find_map(|e| status_in(&e.text));
    let undone = has("the device is back as it was");
    let undoing = has("undoing the changes");
    let terminal = parse_state(&row.state).is_some_and(State::is_terminal);
    let commands = journal
        .iter()
        .map(|j| {
            let parsed: Option<StoredCommand> = serde_json::from_str(&j.command).ok();
            let text = parsed
                .as_ref()
                .map(command_words)
                .unwrap_or_else(|| j.command.clone());
            let change = j.kind == sd::JournalKind::Change;
            let status = if change {
                if taken {
                    "200 OK".to_owned()
                } else if let Some(code) = &refused {
                    format!("{code}: refused; none of the changes stayed")
                } else if terminal {
                    "not applied".to_owned()
                } else {
                    "pending".to_owned()
                }
            } else if undone {
                "200 OK: undone".to_owned()
            } else if undoing {
                "in progress".to_owned()
            } else if row.state == "Completed" {
                "not needed".to_owned()
            } else {
                "kept for a rollback".to_owned()
            };
            CommandLine {
                kind: if change { "change" } else { "undo" },
                text,
                status,
            }
        })
        .collect();
    let messages = messages
        .into_iter()
        .map(|m| MessageView {
            at_ms: m.at_ms,
            outgoing: m.outgoing,
            seq: m.msg_seq,
            msg_type: m.msg_type,
            xml: super::xml::pretty(&m.xml),
        })
        .collect();
    Ok(Some(Detail {
        id: row.id.clone(),
        steps,
        messages,
        commands,
        audit,
        journal,
        state: row.state,
    }))
}

async fn audit_and_chart(
    engine: &Engine,
    filter: AuditFilter,
) -> Result<(Vec<AuditRow>, ChartData), String> {
    engine
        .store()
        .call(move |c| {
            let rows = sd::audit(c, &filter)?;
            let states: Vec<String> = match &filter.outcome {
                Some(o) => parse_state(o)
                    .map(|s| vec![format!("{s:?}")])
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let history = sd::history(
                c,
                &HistoryFilter {
                    dev_id: filter.dev_id.clone(),
                    peer: filter.peer.clone(),
                    states,
                    from_ms: filter.from_ms,
                    to_ms: filter.to_ms,
                    limit: Some(5000),
                },
            )?;
            let mut events = Vec::new();
            for d in history.iter().take(300) {
                events.push((d.created_ms, sd::events(c, &d.id)?));
            }
            Ok((rows, chart(&history, &events)))
        })
        .await
        .map_err(|e| e.to_string())
}

/// Outcomes per time bucket and step durations over time.
pub fn chart(history: &[sd::DelegationRow], events: &[(i64, Vec<sd::EventRow>)]) -> ChartData {
    let ended: Vec<&sd::DelegationRow> = history
        .iter()
        .filter(|d| parse_state(&d.state).is_some_and(State::is_terminal))
        .collect();
    let Some(min) = history.iter().map(|d| d.created_ms).min() else {
        return ChartData::default();
    };
    let max = history.iter().map(|d| d.updated_ms).max().unwrap_or(min);
    let span_min = ((max - min) as f64 / 60_000.0).max(1.0);
    let bucket = (span_min / 40.0).ceil().max(1.0);
    // Every outcome gets a bar in every bucket that has any (zero where it has none): the
    // chart stacks them by position.
    let bucket_of =
        |d: &sd::DelegationRow| ((d.updated_ms - min) as f64 / 60_000.0 / bucket).floor() as i64;
    let buckets: std::collections::BTreeSet<i64> = ended.iter().map(|d| bucket_of(d)).collect();
    let mut outcomes: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for state in ["Completed", "Failed", "Aborted"] {
        let mut counts: std::collections::BTreeMap<i64, f64> =
            buckets.iter().map(|b| (*b, 0.0)).collect();
        for d in ended.iter().filter(|d| d.state == state) {
            *counts.entry(bucket_of(d)).or_default() += 1.0;
        }
        outcomes.push((
            state.to_owned(),
            counts
                .into_iter()
                .map(|(b, n)| (b as f64 * bucket, n))
                .collect(),
        ));
    }
    let mut steps: Vec<(u8, Vec<(f64, f64)>)> = (1..=8).map(|s| (s, Vec::new())).collect();
    for (created, evs) in events {
        let x = (*created - min) as f64 / 60_000.0;
        let firsts: Vec<Option<i64>> = (1..=8u8)
            .map(|s| evs.iter().find(|e| e.step == s).map(|e| e.at_ms))
            .collect();
        let last = evs.iter().map(|e| e.at_ms).max();
        for s in 0..8 {
            if let Some(t) = firsts[s] {
                let next = firsts[s + 1..].iter().flatten().next().copied().or(last);
                if let Some(n) = next {
                    steps[s].1.push((x, (n - t) as f64));
                }
            }
        }
    }
    ChartData {
        outcomes,
        step_durations: steps,
        origin_ms: min,
        bucket_minutes: bucket,
    }
}

#[allow(clippy::too_many_arguments)] // one task's whole context, passed once
async fn bulk(
    dep: Arc<Deployment>,
    server: usize,
    dev_ids: Vec<String>,
    template: StartRequest,
    progress: Arc<Mutex<Option<BulkProgress>>>,
    stop: Arc<AtomicBool>,
    dirty: mpsc::UnboundedSender<()>,
    sink: Sink,
) {
    let (concurrency, max_failures) = progress
        .lock()
        .ok()
        .and_then(|p| p.as_ref().map(|p| (p.concurrency, p.max_failures)))
        .unwrap_or((1, 1));
    let update = |f: &dyn Fn(&mut BulkProgress)| {
        if let Ok(mut p) = progress.lock()
            && let Some(p) = p.as_mut()
        {
            f(p);
        }
        // The backend loop is gone when this fails; nothing to update then.
        let _ = dirty.send(());
    };
    let failed = || {
        progress
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.failed))
            .unwrap_or(0)
    };
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for dev in dev_ids {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if failed() >= max_failures {
            update(&|p| {
                p.stopped = Some(format!(
                    "stopped: {} failures reached the limit of {}",
                    p.failed, p.max_failures
                ))
            });
            break;
        }
        update(&|p| p.started += 1);
        let dep = dep.clone();
        let req = StartRequest {
            dev_id: dev.clone(),
            retry_of: None,
            ..template.clone()
        };
        let progress = progress.clone();
        let dirty = dirty.clone();
        set.spawn(async move {
            let outcome = one_delegation(&dep, server, req).await;
            if let Ok(mut p) = progress.lock()
                && let Some(p) = p.as_mut()
            {
                match outcome {
                    Ok(()) => p.completed += 1,
                    Err(e) => {
                        p.failed += 1;
                        if p.errors.len() < 20 {
                            p.errors.push(e);
                        }
                    }
                }
            }
            let _ = dirty.send(());
            drop(permit);
        });
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    update(&|p| p.finished = true);
    let summary = progress
        .lock()
        .ok()
        .and_then(|p| p.clone())
        .map(|p| {
            format!(
                "Bulk delegation over: {} completed, {} failed, {} not started{}",
                p.completed,
                p.failed,
                p.total - p.started,
                p.stopped.map(|s| format!(" ({s})")).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    sink.notice(Severity::Info, summary);
}

async fn one_delegation(dep: &Deployment, server: usize, req: StartRequest) -> Result<(), String> {
    let engine = dep.engine(server).ok_or("no such server")?;
    let dev = req.dev_id.clone();
    let id = engine
        .start_delegation(req)
        .await
        .map_err(|e| format!("{dev}: {e}"))?;
    match engine.wait_done(&id, Duration::from_secs(900)).await {
        Some(s) if s.state == State::Completed => Ok(()),
        Some(s) if s.state.is_terminal() => Err(format!(
            "{dev}: {}{}",
            state_words(s.state),
            s.reason
                .map(|(c, t)| format!(", {c} {t}"))
                .unwrap_or_default()
        )),
        _ => Err(format!("{dev}: not over after 15 minutes")),
    }
}

/// Connects to a peer's endpoint and completes a TLS handshake, to see it answer and read its
/// certificate: (fingerprint, notAfter). The certificate is read, not trusted: delegation
/// traffic goes through the engine's own verified client.
async fn probe(base_url: &str) -> Result<(String, Option<i64>), String> {
    let url = url::Url::parse(base_url).map_err(|e| format!("{base_url} is not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("{base_url} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let seen = Arc::new(Mutex::new(None));
    let verifier = Arc::new(Capture {
        seen: seen.clone(),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
    });
    let config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| format!("{host} is not a host name"))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("no answer at {host}:{port}: {e}"))?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("the TLS handshake failed: {e}"))
    };
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Err(_) => Err(format!("no answer from {host}:{port} within 5 s")),
        Ok(Err(e)) => Err(e),
        Ok(Ok(_stream)) => {
            let cert = seen.lock().ok().and_then(|s| s.clone());
            cert.map(|c: rustls::pki_types::CertificateDer<'static>| certinfo::describe(&c))
                .ok_or_else(|| "it presented no certificate".to_owned())
        }
    }
}

/// Records the server's certificate; checks the handshake signatures, not the chain.
#[derive(Debug)]
struct Capture {
    seen: Arc<Mutex<Option<rustls::pki_types::CertificateDer<'static>>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(end_entity.clone().into_owned());
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_drops_the_oldest_ended_delegations_and_never_a_running_one() {
        let item = |id: &str, state: State, at: i64| {
            DelegationItem::from(&crate::engine::driver::DelegationSummary::sample(
                id, state, at,
            ))
        };
        // Newest first, as the list is sorted.
        let mut list = vec![
            item("new", State::Completed, 50),
            item("mid", State::Failed, 40),
            item("stuck", State::Running, 30),
            item("old", State::Completed, 20),
            item("oldest", State::Aborted, 10),
        ];
        let mut items: HashMap<String, DelegationItem> =
            list.iter().map(|d| (d.id.clone(), d.clone())).collect();
        keep_newest(&mut list, &mut items, 2);
        let ids: Vec<&str> = list.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["new", "stuck"]);
        let mut kept: Vec<&str> = items.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["new", "stuck"]);
        // Within the limit nothing moves.
        keep_newest(&mut list, &mut items, 5);
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn every_outcome_has_a_bar_in_every_bucket_so_they_stack() {
        let row = |id: &str, state: &str, at: i64| sd::DelegationRow {
            id: id.into(),
            role: "Delegating".into(),
            initiator: "Delegating".into(),
            peer: "p".into(),
            dev_id: "d".into(),
            full: true,
            bootstrap: false,
            paths: Vec::new(),
            state: state.into(),
            step: 8,
            live: false,
            created_ms: at,
            updated_ms: at,
            reason_code: None,
            reason_text: None,
            retry_of: None,
            machine: String::new(),
            outbox: String::new(),
            account: None,
        };
        let h = vec![
            row("a", "Completed", 0),
            row("b", "Failed", 0),
            row("c", "Completed", 600_000),
        ];
        let c = chart(&h, &[]);
        let lens: Vec<usize> = c.outcomes.iter().map(|(_, v)| v.len()).collect();
        assert_eq!(lens, vec![2, 2, 2]);
        assert_eq!(c.outcomes[0].1.iter().map(|p| p.1).sum::<f64>(), 2.0);
        assert_eq!(c.outcomes[1].1[0].1, 1.0);
    }

    #[test]
    fn status_codes_are_read_from_event_text() {
        assert_eq!(
            status_in("the device refused a change with status 500").as_deref(),
            Some("500")
        );
        assert_eq!(status_in("no code here"), None);
    }

    #[test]
    fn a_preview_of_a_partial_delegation_names_the_account_and_each_acl() {
        let fc = crate::sim::fleet::FleetConfig::new("dms1.example", "http://127.0.0.1:1/dm", 1);
        let tree = crate::sim::device::SimDevice::new(&fc.dev_id(0), &fc.account(0))
            .unwrap()
            .tree;
        let key = PreviewKey {
            server: 0,
            dev_id: "d".into(),
            peer: "dms2.example".into(),
            full: false,
            paths: vec!["./Vendor".into()],
            bootstrap: false,
        };
        let p = preview(&tree, "dms1.example", &key).unwrap();
        assert_eq!(p.added, vec!["./DMAcc/dms2.example".to_owned()]);
        assert!(
            p.acls
                .iter()
                .any(|(u, _, after)| u == "./Vendor" && after.contains("dms2.example"))
        );
        assert_eq!(p.undo.len(), p.changes.len());
    }
}
