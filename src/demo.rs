//! `dmdeleg demo`: the lab ([`crate::lab::Lab`]: DMS-1 and DMS-2 on loopback with mutual TLS,
//! a fleet of simulated devices enrolled to DMS-1) delegates every device from DMS-1 to DMS-2
//! and reports what it measured: how many delegations passed each of the eight steps and how
//! long each step took (from DMS-1's stored timeline), the outcomes, the throughput and the
//! peak memory. Every device's DM tree is checked afterwards, so a delegation only counts as
//! delegated when the device really is in the state the delegation promised.
//!
//! [`run`] does the work and returns a [`DemoReport`]; the binary prints it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{OpenFlags, params};
use tokio::sync::Semaphore;

use crate::delegation::machine::{Role, State, Step};
use crate::delegation::messages::DeviceInfo;
use crate::dm::mo::DmAcc;
use crate::engine::driver::{DelegationSummary, StartRequest, now_ms};
use crate::engine::service::Engine;
use crate::lab::{DMS1, DMS2, Lab, LabError, LabOptions};
use crate::sim::fleet::FleetCounts;

/// The event text the delegating server records once a device's changes are undone.
pub const ROLLED_BACK_TEXT: &str = "the device is back as it was";

/// A DelegationID no delegation has, for a command that only waits for the driver.
const BARRIER_ID: &str = "demo-barrier";

/// How many problems a report keeps word for word.
const PROBLEMS_KEPT: usize = 10;

/// The eight steps, in order, with the names the report prints.
pub const STEPS: [(Step, &str); 8] = [
    (Step::Notification, "notification"),
    (Step::MutualAuth, "mutual authentication"),
    (Step::AccountTransfer, "account transfer"),
    (Step::ClientPreparation, "client preparation"),
    (Step::Prepared, "prepared"),
    (Step::DelegatedSession, "delegated session"),
    (Step::Confirm, "confirm"),
    (Step::DeleteAccount, "delete account"),
];

/// Why the demo could not run (a delegation that fails is not an error: it is counted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The options make no demo.
    #[error("{0}")]
    Options(String),
    /// The lab did not start.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// DMS-1's timeline could not be read.
    #[error("cannot read DMS-1's events from {path}: {reason}")]
    Events {
        /// The database.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How many simulated devices (each is delegated once).
    pub devices: usize,
    /// Partial delegation of these subtrees; Full when empty.
    pub paths: Vec<String>,
    /// The Bootstrap Server URL approach instead of DMAcc.
    pub bootstrap: bool,
    /// Which server starts each delegation: DMS-1 (Delegating) or DMS-2 (Delegated).
    pub initiator: Role,
    /// The lab's directory, reused (its certificates are made on the first run). None: a
    /// fresh temporary directory, removed afterwards when every delegation succeeded.
    pub dir: Option<PathBuf>,
    /// Most delegations in flight at once.
    pub concurrency: usize,
    /// How long one delegation may take before it counts as failed.
    pub timeout: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            devices: 10,
            paths: Vec::new(),
            bootstrap: false,
            initiator: Role::Delegating,
            dir: None,
            concurrency: 128,
            timeout: Duration::from_secs(300),
        }
    }
}

/// One step's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFigures {
    /// The step.
    pub step: Step,
    /// Its name.
    pub name: &'static str,
    /// Delegations that passed it: they reached a later step, or completed.
    pub passed: usize,
    /// Median duration, milliseconds (none when no delegation passed it).
    pub p50_ms: Option<i64>,
    /// 99th percentile duration, milliseconds.
    pub p99_ms: Option<i64>,
}

/// Something that went wrong with one device's delegation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The device.
    pub dev_id: String,
    /// The delegation, when one was started.
    pub id: Option<String>,
    /// What happened.
    pub what: String,
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The lab's directory.
    pub dir: PathBuf,
    /// Whether the directory was removed afterwards.
    pub dir_removed: bool,
    /// How many devices.
    pub devices: usize,
    /// DMS-1's device endpoint and both peer endpoints.
    pub urls: Vec<(String, String)>,
    /// Starting the lab (certificates, engines, fleet, enrolment).
    pub lab_start: Duration,
    /// The inventory: one session per device with DMS-1.
    pub inventory: Duration,
    /// Resident memory once the lab stands and every device is inventoried, before any
    /// delegation (MB).
    pub setup_rss_mb: u64,
    /// Devices whose inventory session failed.
    pub inventory_failures: usize,
    /// Per step, from DMS-1's events.
    pub steps: Vec<StepFigures>,
    /// Completed on both servers.
    pub completed: usize,
    /// Failed (on either server).
    pub failed: usize,
    /// Aborted (on either server).
    pub aborted: usize,
    /// Refused at start, or not over within the timeout.
    pub unfinished: usize,
    /// Completed, but the device's tree does not show it.
    pub violations: usize,
    /// Failed or aborted, and DMS-1 recorded that the device is back as it was.
    pub rolled_back: usize,
    /// The delegation phase: from the first start to the last end.
    pub wall: Duration,
    /// Peak resident memory of this process, MB (VmHWM).
    pub peak_rss_mb: u64,
    /// CPU time the process (both engines, the devices, the demo) used during the
    /// delegation phase.
    pub cpu: CpuTime,
    /// The cores this process may run on.
    pub cores: usize,
    /// What the devices did during the delegation phase.
    pub traffic: FleetCounts,
    /// The first problems, word for word.
    pub problems: Vec<Problem>,
}

impl DemoReport {
    /// Completed on both servers and checked on the device.
    pub fn delegated(&self) -> usize {
        self.completed - self.violations
    }

    /// Every delegation that did not end as delegated.
    pub fn failed_total(&self) -> usize {
        self.devices - self.delegated()
    }

    /// Completed delegations per second of the delegation phase.
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// What the devices did, per delegation started: DM sessions, pushes (Package #0),
    /// messages (HTTP round trips) and bytes each way.
    pub fn traffic_line(&self) -> String {
        let started = (self.devices - self.unfinished).max(1) as f64;
        let t = &self.traffic;
        format!(
            "devices, per delegation: {:.1} DM sessions, {:.1} pushes, {:.1} messages, {:.1} KB sent, {:.1} KB received",
            t.sessions_ok as f64 / started,
            t.triggers_ok as f64 / started,
            t.messages as f64 / started,
            t.bytes_sent as f64 / started / 1024.0,
            t.bytes_received as f64 / started / 1024.0
        )
    }

    /// CPU time per delegation started, and how many cores the phase kept busy: a steadier
    /// measure than delegations per second on a machine whose speed drifts.
    pub fn cpu_line(&self) -> String {
        let started = (self.devices - self.unfinished).max(1) as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0 / started;
        let total = self.cpu.user + self.cpu.system;
        format!(
            "cpu, per delegation: {:.2} ms (user {:.2}, system {:.2}); the process kept {:.2} of {} cores busy",
            ms(total),
            ms(self.cpu.user),
            ms(self.cpu.system),
            total.as_secs_f64() / self.wall.as_secs_f64().max(1e-9),
            self.cores
        )
    }

    /// The report's last line:
    /// `demo: N delegated, F failed, R rolled back; X delegations/s; peak RSS M MB`.
    pub fn summary_line(&self) -> String {
        format!(
            "demo: {} delegated, {} failed, {} rolled back; {:.1} delegations/s; peak RSS {} MB",
            self.delegated(),
            self.failed_total(),
            self.rolled_back,
            self.per_second(),
            self.peak_rss_mb
        )
    }
}

/// CPU time a process used: in user space and in the kernel on its behalf.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// In user space.
    pub user: Duration,
    /// In the kernel.
    pub system: Duration,
}

impl CpuTime {
    /// What was used between `earlier` and `self` (zero where a reading went backwards).
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// The CPU time this process (all its threads) has used so far; zero where unknown.
pub fn cpu_time() -> CpuTime {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given, which lives for the call; a
    // zeroed rusage is a valid value of it (plain integers).
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return CpuTime::default();
    }
    // SAFETY: zeroed, then filled by a successful getrusage.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    CpuTime {
        user: time(usage.ru_utime),
        system: time(usage.ru_stime),
    }
}

/// The peak resident memory of this process in MB (`VmHWM` of `/proc/self/status`); 0 where
/// there is no such file.
pub fn peak_rss_mb() -> u64 {
    proc_status_mb("VmHWM:")
}

/// The resident memory of this process now in MB (`VmRSS`); 0 where unknown.
pub fn current_rss_mb() -> u64 {
    proc_status_mb("VmRSS:")
}

/// A `kB` figure of `/proc/self/status`, in MB (rounded); 0 where unknown.
fn proc_status_mb(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| (kb + 512) / 1024)
}

/// A fresh directory under the system's temporary directory.
fn fresh_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("dmdeleg-demo-{}-{nanos:09}", std::process::id()))
}

/// One delegation's end, as both servers saw it.
struct Outcome {
    dev_id: String,
    id: Option<String>,
    refused: Option<String>,
    /// How the initiator ended, then the other server.
    ends: [Option<End>; 2],
}

/// How one server ended a delegation: all the report needs, not the whole summary (the lab
/// keeps one per delegation, and its memory is part of what the demo measures).
struct End {
    /// The state, once the server is done with the delegation (None: not over).
    over: Option<State>,
    /// The summary in words (see [`describe`]), kept unless the delegation completed.
    words: Option<String>,
}

impl End {
    fn of(s: &DelegationSummary, server: &str) -> End {
        End {
            over: s.is_over().then_some(s.state),
            words: (s.state != State::Completed).then(|| describe(s, server)),
        }
    }
}

/// Starts one delegation on the initiating engine and waits until both engines are done with
/// it.
async fn delegate_one(lab: &Lab, opts: &DemoOptions, dev_id: String) -> Outcome {
    let (initiator, other, req) = match opts.initiator {
        Role::Delegating => (
            &lab.dms1,
            &lab.dms2,
            request(opts, DMS2, &dev_id, Role::Delegating, None),
        ),
        Role::Delegated => {
            let leaf = |name: &str, default: &str| {
                lab.dms1
                    .dm()
                    .device(&dev_id)
                    .and_then(|r| {
                        r.devinfo
                            .iter()
                            .find(|(k, _)| k.ends_with(name))
                            .map(|(_, v)| v.clone())
                    })
                    .unwrap_or_else(|| default.to_owned())
            };
            let device = DeviceInfo {
                dev_id: dev_id.clone(),
                man: leaf("Man", "dmdeleg"),
                model: leaf("Mod", "SimPhone"),
                notify: lab
                    .fleet
                    .push_base()
                    .map(|base| format!("{base}/push/{dev_id}")),
            };
            (
                &lab.dms2,
                &lab.dms1,
                request(opts, DMS1, &dev_id, Role::Delegated, Some(device)),
            )
        }
    };
    let id = match initiator.start_delegation(req).await {
        Ok(id) => id,
        Err(e) => {
            return Outcome {
                dev_id,
                id: None,
                refused: Some(e.to_string()),
                ends: [None, None],
            };
        }
    };
    let first = initiator.wait_done(&id, opts.timeout).await;
    // The other server may never have heard of a delegation that failed early; one that it
    // knows, it must finish too.
    let second = match (&first, other.summary(&id)) {
        (Some(f), None) if f.state != State::Completed && f.is_over() => None,
        _ => other.wait_done(&id, opts.timeout).await,
    };
    let [a, b] = servers(opts.initiator);
    Outcome {
        dev_id,
        id: Some(id),
        refused: None,
        ends: [
            first.as_ref().map(|s| End::of(s, a)),
            second.as_ref().map(|s| End::of(s, b)),
        ],
    }
}

/// The initiator's name in the report, then the other server's.
fn servers(initiator: Role) -> [&'static str; 2] {
    match initiator {
        Role::Delegating => ["DMS-1", "DMS-2"],
        Role::Delegated => ["DMS-2", "DMS-1"],
    }
}

fn request(
    opts: &DemoOptions,
    peer: &str,
    dev_id: &str,
    role: Role,
    device: Option<DeviceInfo>,
) -> StartRequest {
    StartRequest {
        peer: peer.to_owned(),
        dev_id: dev_id.to_owned(),
        role,
        full: opts.paths.is_empty(),
        paths: opts.paths.clone(),
        bootstrap: opts.bootstrap,
        lease: None,
        device,
        retry_of: None,
    }
}

/// One stored event of DMS-1.
struct EventLite {
    at_ms: i64,
    step: u8,
    rolled_back: bool,
}

/// DMS-1's events since `since_ms` for the delegations in `ids`, in the order written, with
/// one query on a connection of its own (the engine's writer is not disturbed).
fn read_events(
    db: &Path,
    since_ms: i64,
    ids: &HashSet<String>,
) -> Result<HashMap<String, Vec<EventLite>>, DemoError> {
    let err = |e: rusqlite::Error| DemoError::Events {
        path: db.to_owned(),
        reason: e.to_string(),
    };
    let conn = rusqlite::Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    let mut stmt = conn
        .prepare(
            "SELECT delegation_id, at_ms, step, text = ?2 FROM events
             WHERE at_ms >= ?1 ORDER BY seq",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map(params![since_ms, ROLLED_BACK_TEXT], |r| {
            Ok((
                r.get::<_, String>(0)?,
                EventLite {
                    at_ms: r.get(1)?,
                    step: r.get(2)?,
                    rolled_back: r.get(3)?,
                },
            ))
        })
        .map_err(err)?;
    let mut out: HashMap<String, Vec<EventLite>> = HashMap::with_capacity(ids.len());
    for row in rows {
        let (id, e) = row.map_err(err)?;
        if ids.contains(&id) {
            out.entry(id).or_default().push(e);
        }
    }
    Ok(out)
}

/// The `p`th percentile (0 to 1) of sorted values, nearest rank.
/// The fleet's counters between two readings.
fn traffic_between(before: FleetCounts, after: FleetCounts) -> FleetCounts {
    FleetCounts {
        sessions_ok: after.sessions_ok - before.sessions_ok,
        sessions_failed: after.sessions_failed - before.sessions_failed,
        triggers_ok: after.triggers_ok - before.triggers_ok,
        triggers_ignored: after.triggers_ignored - before.triggers_ignored,
        messages: after.messages - before.messages,
        bytes_sent: after.bytes_sent - before.bytes_sent,
        bytes_received: after.bytes_received - before.bytes_received,
        bootstraps_ok: after.bootstraps_ok - before.bootstraps_ok,
        bootstraps_failed: after.bootstraps_failed - before.bootstraps_failed,
    }
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Per step: how many delegations passed it and how long it took. A step's duration runs from
/// its first event to the first event of the next step present in the timeline; the last step
/// present runs to the delegation's last event, and counts as passed only when the delegation
/// completed.
fn step_figures(
    timelines: &HashMap<String, Vec<EventLite>>,
    completed: &HashSet<String>,
) -> Vec<StepFigures> {
    let mut durations: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
    for (id, events) in timelines {
        let mut first: BTreeMap<u8, i64> = BTreeMap::new();
        for e in events {
            first.entry(e.step).or_insert(e.at_ms);
        }
        let end = events.iter().map(|e| e.at_ms).max().unwrap_or(0);
        let steps: Vec<(u8, i64)> = first.into_iter().collect();
        for (i, (step, start)) in steps.iter().enumerate() {
            let until = match steps.get(i + 1) {
                Some((_, next)) => *next,
                None if completed.contains(id) => end,
                None => continue,
            };
            durations
                .entry(*step)
                .or_default()
                .push((until - start).max(0));
        }
    }
    STEPS
        .iter()
        .map(|(step, name)| {
            let mut d = durations.remove(&(*step as u8)).unwrap_or_default();
            d.sort_unstable();
            StepFigures {
                step: *step,
                name,
                passed: d.len(),
                p50_ms: percentile(&d, 0.50),
                p99_ms: percentile(&d, 0.99),
            }
        })
        .collect()
}

/// Whether a device's tree shows a finished delegation: Full, DMS-1's account gone and
/// DMS-2's active; Partial, DMS-2's account there.
async fn check_device(lab: &Lab, dev_id: &str, full: bool) -> Result<(), String> {
    let tree = lab
        .fleet
        .tree(dev_id)
        .await
        .ok_or_else(|| "the device is not in the fleet".to_owned())?;
    let dms2 = DmAcc::find_by_server_id(&tree, DMS2);
    if full && DmAcc::find_by_server_id(&tree, DMS1).is_some() {
        return Err("completed Full, but DMS-1's account is still on the device".into());
    }
    match dms2 {
        None => Err("completed, but DMS-2 has no account on the device".into()),
        Some(acc) if full && acc.dormant => {
            Err("completed Full, but DMS-2's account is dormant".into())
        }
        Some(_) => Ok(()),
    }
}

/// Whether a device's tree looks as before a delegation: DMS-1's account there and active,
/// none of DMS-2's.
async fn check_restored(lab: &Lab, dev_id: &str) -> Result<(), String> {
    let tree = lab
        .fleet
        .tree(dev_id)
        .await
        .ok_or_else(|| "the device is not in the fleet".to_owned())?;
    match DmAcc::find_by_server_id(&tree, DMS1) {
        None => return Err("DMS-1's account is gone from the device".into()),
        Some(acc) if acc.dormant => return Err("DMS-1's account is dormant".into()),
        Some(_) => {}
    }
    if DmAcc::find_by_server_id(&tree, DMS2).is_some() {
        return Err("DMS-2's account is on the device".into());
    }
    Ok(())
}

fn describe(s: &DelegationSummary, server: &str) -> String {
    let reason = s
        .reason
        .as_ref()
        .map(|(code, text)| format!(" ({code} {text})"))
        .unwrap_or_default();
    format!(
        "{server}: {:?} at step {}{reason}, waiting for {}",
        s.state, s.step, s.waiting_for
    )
}

/// Runs the lab, delegates every device, checks every device and measures.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, DemoError> {
    if opts.devices == 0 {
        return Err(DemoError::Options("--devices must be at least 1".into()));
    }
    for p in &opts.paths {
        crate::dm::uri::NodeUri::parse(p)
            .map_err(|e| DemoError::Options(format!("--partial {p}: {e}")))?;
    }
    let concurrency = opts.concurrency.max(1);
    let (dir, temporary) = match &opts.dir {
        Some(d) => (d.clone(), false),
        None => (fresh_dir(), true),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        DemoError::Lab(LabError::Io {
            path: dir.clone(),
            reason: e.to_string(),
        })
    })?;

    let started = Instant::now();
    let lab = Lab::start(&LabOptions::new(&dir, opts.devices)).await?;
    let lab_start = started.elapsed();
    let urls = vec![
        ("DMS-1 devices".to_owned(), lab.dms1.dm().url().to_owned()),
        (
            "DMS-1 peers".to_owned(),
            lab.dms1.peer_url().unwrap_or("-").to_owned(),
        ),
        (
            "DMS-2 peers".to_owned(),
            lab.dms2.peer_url().unwrap_or("-").to_owned(),
        ),
    ];
    let started = Instant::now();
    let inventory_failures = lab.inventory(concurrency).await;
    let inventory = started.elapsed();
    let setup_rss_mb = current_rss_mb();

    // The delegation phase: at most `concurrency` in flight; a permit is held from the start
    // until both servers are done, so the next delegation starts when one ends.
    let lab = Arc::new(lab);
    let opts = Arc::new(opts);
    let since_ms = now_ms() - 1_000;
    let phase = Instant::now();
    let cpu_before = cpu_time();
    let traffic_before = lab.fleet.counts();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for dev_id in lab.fleet.dev_ids().to_vec() {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break; // never closed
        };
        let lab = lab.clone();
        let opts = opts.clone();
        tasks.spawn(async move {
            let out = delegate_one(&lab, &opts, dev_id).await;
            drop(permit);
            out
        });
    }
    let mut outcomes = Vec::with_capacity(opts.devices);
    while let Some(done) = tasks.join_next().await {
        if let Ok(o) = done {
            outcomes.push(o);
        }
    }
    let wall = phase.elapsed();
    let cpu = cpu_time().since(cpu_before);
    let traffic = traffic_between(traffic_before, lab.fleet.counts());
    // An engine shows a transition on its board a moment before the batch holding it is
    // committed, so a delegation can look over while its last events are not yet stored. The
    // driver takes commands in order, after every batch before them: once it has answered one
    // (this one is refused, as there is no such delegation), everything it showed is stored.
    let _ = tokio::join!(lab.dms1.accept(BARRIER_ID), lab.dms2.accept(BARRIER_ID));

    let mut report = DemoReport {
        dir: dir.clone(),
        dir_removed: false,
        devices: opts.devices,
        urls,
        lab_start,
        inventory,
        inventory_failures,
        setup_rss_mb,
        steps: Vec::new(),
        completed: 0,
        failed: 0,
        aborted: 0,
        unfinished: opts.devices.saturating_sub(outcomes.len()),
        violations: 0,
        rolled_back: 0,
        wall,
        peak_rss_mb: 0,
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        traffic,
        problems: Vec::new(),
    };
    let ids: HashSet<String> = outcomes.iter().filter_map(|o| o.id.clone()).collect();
    let timelines = read_events(&lab.engines[0].store_path, since_ms, &ids)?;
    let full = opts.paths.is_empty();
    let servers = servers(opts.initiator);
    let mut completed = HashSet::new();
    let mut problems = Vec::new();
    for o in &outcomes {
        let Some(id) = &o.id else {
            report.unfinished += 1;
            problems.push(Problem {
                dev_id: o.dev_id.clone(),
                id: None,
                what: format!("refused: {}", o.refused.clone().unwrap_or_default()),
            });
            continue;
        };
        let states: Vec<Option<State>> = o
            .ends
            .iter()
            .map(|e| e.as_ref().and_then(|e| e.over))
            .collect();
        let any = |st: State| states.contains(&Some(st));
        let words = || {
            o.ends
                .iter()
                .zip(servers)
                .map(|(e, server)| match e {
                    Some(End { words: Some(w), .. }) => w.clone(),
                    Some(End { words: None, .. }) => format!("{server}: Completed"),
                    None => format!("{server}: never heard of it"),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        if states.iter().all(|s| *s == Some(State::Completed)) {
            report.completed += 1;
            completed.insert(id.clone());
            if let Err(what) = check_device(&lab, &o.dev_id, full).await {
                report.violations += 1;
                problems.push(Problem {
                    dev_id: o.dev_id.clone(),
                    id: Some(id.clone()),
                    what,
                });
            }
            continue;
        }
        if any(State::Aborted) {
            report.aborted += 1;
        } else if any(State::Failed) {
            report.failed += 1;
        } else {
            report.unfinished += 1;
            problems.push(Problem {
                dev_id: o.dev_id.clone(),
                id: Some(id.clone()),
                what: format!("not over after {} s: {}", opts.timeout.as_secs(), words()),
            });
            continue;
        }
        let back = timelines
            .get(id)
            .is_some_and(|t| t.iter().any(|e| e.rolled_back));
        let mut what = words();
        if back {
            report.rolled_back += 1;
            what.push_str("; rolled back");
            if let Err(why) = check_restored(&lab, &o.dev_id).await {
                what.push_str(&format!(", but {why}"));
            }
        }
        problems.push(Problem {
            dev_id: o.dev_id.clone(),
            id: Some(id.clone()),
            what,
        });
    }
    report.problems = problems.into_iter().take(PROBLEMS_KEPT).collect();
    report.steps = step_figures(&timelines, &completed);
    report.peak_rss_mb = peak_rss_mb();

    if let Ok(lab) = Arc::try_unwrap(lab) {
        let Lab { dms1, dms2, .. } = lab;
        stop_both(dms1, dms2).await;
    }
    if temporary && report.failed_total() == 0 && std::fs::remove_dir_all(&dir).is_ok() {
        report.dir_removed = true;
    }
    Ok(report)
}

async fn stop_both(a: Engine, b: Engine) {
    tokio::join!(a.stop(), b.stop());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at_ms: i64, step: u8) -> EventLite {
        EventLite {
            at_ms,
            step,
            rolled_back: false,
        }
    }

    #[test]
    fn steps_run_to_the_next_step_present() {
        let mut t = HashMap::new();
        // Completed, step 2 missing: step 1 runs to step 3's first event.
        t.insert(
            "a".to_owned(),
            vec![
                ev(100, 1),
                ev(110, 1),
                ev(130, 3),
                ev(170, 4),
                ev(175, 3),
                ev(200, 4),
            ],
        );
        // Failed in step 3: steps 1 and 2 passed, step 3 did not.
        t.insert("b".to_owned(), vec![ev(0, 1), ev(20, 2), ev(50, 3)]);
        let completed = HashSet::from(["a".to_owned()]);
        let f = step_figures(&t, &completed);
        assert_eq!(f.len(), 8);
        assert_eq!(
            (f[0].passed, f[0].p50_ms, f[0].p99_ms),
            (2, Some(20), Some(30))
        );
        assert_eq!((f[1].passed, f[1].p50_ms), (1, Some(30)));
        assert_eq!((f[2].passed, f[2].p50_ms), (1, Some(40)));
        assert_eq!(
            (f[3].passed, f[3].p50_ms),
            (1, Some(30)),
            "to the last event"
        );
        assert_eq!((f[4].passed, f[4].p50_ms), (0, None));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_summary_line_has_its_fixed_shape() {
        let r = DemoReport {
            dir: PathBuf::new(),
            dir_removed: true,
            devices: 10,
            urls: Vec::new(),
            lab_start: Duration::ZERO,
            inventory: Duration::ZERO,
            inventory_failures: 0,
            setup_rss_mb: 40,
            steps: Vec::new(),
            completed: 9,
            failed: 1,
            aborted: 0,
            unfinished: 0,
            violations: 1,
            rolled_back: 1,
            wall: Duration::from_millis(5000),
            peak_rss_mb: 42,
            cpu: CpuTime {
                user: Duration::from_millis(8_000),
                system: Duration::from_millis(2_500),
            },
            cores: 2,
            traffic: FleetCounts {
                sessions_ok: 30,
                triggers_ok: 30,
                messages: 80,
                bytes_sent: 10 * 31 * 1024,
                bytes_received: 10 * 15 * 1024 + 512,
                ..FleetCounts::default()
            },
            problems: Vec::new(),
        };
        assert_eq!(
            r.summary_line(),
            "demo: 8 delegated, 2 failed, 1 rolled back; 1.8 delegations/s; peak RSS 42 MB"
        );
        assert_eq!(
            r.traffic_line(),
            "devices, per delegation: 3.0 DM sessions, 3.0 pushes, 8.0 messages, 31.0 KB sent, 15.1 KB received"
        );
        assert_eq!(
            r.cpu_line(),
            "cpu, per delegation: 1050.00 ms (user 800.00, system 250.00); the process kept 2.10 of 2 cores busy"
        );
        assert!(peak_rss_mb() > 0);
    }

    #[test]
    fn cpu_time_grows_with_work_and_differences_do_not_go_negative() {
        let before = cpu_time();
        let mut x = 0u64;
        // Busy until the reading shows 30 ms more (or 10 s have passed: a reading stuck at
        // zero fails below).
        let give_up = Instant::now() + Duration::from_secs(10);
        while cpu_time().since(before).user < Duration::from_millis(30) && Instant::now() < give_up
        {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let used = cpu_time().since(before);
        assert!(used.user >= Duration::from_millis(30), "{used:?}");
        assert_eq!(before.since(cpu_time()), CpuTime::default());
    }

    #[test]
    fn traffic_counts_only_what_happened_between_the_readings() {
        let before = FleetCounts {
            sessions_ok: 5,
            messages: 12,
            bytes_sent: 100,
            ..FleetCounts::default()
        };
        let after = FleetCounts {
            sessions_ok: 8,
            messages: 20,
            bytes_sent: 350,
            triggers_ok: 3,
            ..FleetCounts::default()
        };
        let t = traffic_between(before, after);
        assert_eq!(
            (t.sessions_ok, t.messages, t.bytes_sent, t.triggers_ok),
            (3, 8, 250, 3)
        );
    }
}
