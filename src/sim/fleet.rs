//! A fleet of simulated devices in one process: each device is a tokio task, not a thread,
//! and all share one HTTP client and one push listener that routes Package #0 by device
//! (`POST /push/{DevId}`), so 100,000 devices do not need 100,000 sockets.
//!
//! Devices are "bootstrapped" from a seed: their credentials derive from it, and
//! [`Fleet::enrolments`] gives the list a server imports to know them. Each device opens a
//! session when a valid trigger reaches it and, optionally, on a timer; faults can be
//! injected (dropped sessions, 500 on a path, offline periods, slow answers).
//!
//! After every session a device follows its bootstrap config
//! ([`SimDevice::follow_bootstrap`]): when a server wrote a `./BootConfig` entry, the device
//! fetches the account it points to and at once opens a session of its own with that new
//! server, as a real device does after a bootstrap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode as HttpStatus;
use axum::routing::post;
use md5::{Digest, Md5};
use tokio::sync::{Mutex, mpsc};

use super::device::{DeviceFaults, SessionReport, SimAccount, SimDevice, SimError};
use crate::dm::uri::NodeUri;
use crate::store::devices::Enrolment;
use crate::syncml::auth::AuthScheme;

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The server's ServerID.
    pub server_id: String,
    /// The server's device endpoint URL.
    pub server_url: String,
    /// How many devices.
    pub count: usize,
    /// First device number (DevIds are `IMEI:` and 15 digits).
    pub first: u64,
    /// The authentication scheme.
    pub scheme: AuthScheme,
    /// The seed credentials derive from.
    pub seed: String,
    /// Open a session every so often, besides triggers.
    pub interval: Option<Duration>,
    /// The largest message devices accept.
    pub max_msg_size: u64,
    /// Faults every device shows.
    pub faults: DeviceFaults,
    /// Drop every Nth session of each device (0: never).
    pub drop_every: u32,
    /// Devices ignore everything for this long after start (offline).
    pub offline_for: Option<Duration>,
    /// Where device trees are kept, so they survive restarts.
    pub state_dir: Option<PathBuf>,
    /// XML or WBXML; with `mixed_encoding`, odd-numbered devices use the other one.
    pub encoding: crate::syncml::session::Encoding,
    /// Alternate the encoding device by device.
    pub mixed_encoding: bool,
}

impl FleetConfig {
    /// A fleet of `count` devices for the server at `server_url`.
    pub fn new(server_id: &str, server_url: &str, count: usize) -> FleetConfig {
        FleetConfig {
            server_id: server_id.to_owned(),
            server_url: server_url.to_owned(),
            count,
            first: 350_000_000_000_000,
            scheme: AuthScheme::Md5,
            seed: "dmdeleg-lab".to_owned(),
            interval: None,
            max_msg_size: 16_384,
            faults: DeviceFaults::default(),
            drop_every: 0,
            offline_for: None,
            state_dir: None,
            encoding: crate::syncml::session::Encoding::Xml,
            mixed_encoding: false,
        }
    }

    /// The encoding device `i` uses.
    pub fn encoding_of(&self, i: usize) -> crate::syncml::session::Encoding {
        use crate::syncml::session::Encoding;
        match (self.mixed_encoding && i % 2 == 1, self.encoding) {
            (false, e) => e,
            (true, Encoding::Xml) => Encoding::Wbxml,
            (true, Encoding::Wbxml) => Encoding::Xml,
        }
    }

    /// The DevId of device `i`.
    pub fn dev_id(&self, i: usize) -> String {
        format!("IMEI:{:015}", self.first + i as u64)
    }

    fn secret(&self, dev_id: &str, side: &str) -> String {
        let mut h = Md5::new();
        h.update(self.seed.as_bytes());
        h.update(b"/");
        h.update(dev_id.as_bytes());
        h.update(b"/");
        h.update(side.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The account device `i` is bootstrapped with.
    pub fn account(&self, i: usize) -> SimAccount {
        let dev_id = self.dev_id(i);
        SimAccount {
            server_id: self.server_id.clone(),
            server_url: self.server_url.clone(),
            scheme: self.scheme,
            // No `:` in user names: basic credentials could not carry it.
            client: (
                dev_id.to_ascii_lowercase().replace(':', "-"),
                self.secret(&dev_id, "client"),
            ),
            server: (self.server_id.clone(), self.secret(&dev_id, "server")),
        }
    }

    /// What the server must enrol to know the fleet (`dmdeleg devices import`).
    pub fn enrolments(&self, push_base: Option<&str>) -> Vec<Enrolment> {
        (0..self.count)
            .map(|i| {
                let acc = self.account(i);
                let dev_id = self.dev_id(i);
                Enrolment {
                    push: push_base.map(|b| format!("{b}/push/{dev_id}")),
                    dev_id,
                    auth_type: self.scheme.aauth_type().to_owned(),
                    client_name: acc.client.0,
                    client_secret: acc.client.1,
                    server_name: acc.server.0,
                    server_secret: acc.server.1,
                }
            })
            .collect()
    }

    /// The enrolments as CSV, with a header row.
    pub fn enrolment_csv(&self, push_base: Option<&str>) -> String {
        let mut out = String::from(
            "dev_id,auth_type,client_name,client_secret,server_name,server_secret,push\n",
        );
        for e in self.enrolments(push_base) {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}\n",
                e.dev_id,
                e.auth_type,
                e.client_name,
                e.client_secret,
                e.server_name,
                e.server_secret,
                e.push.unwrap_or_default()
            ));
        }
        out
    }
}

/// Counters of what the fleet did.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Sessions that completed.
    pub sessions_ok: AtomicU64,
    /// Sessions that failed (including dropped ones).
    pub sessions_failed: AtomicU64,
    /// Valid triggers received.
    pub triggers_ok: AtomicU64,
    /// Triggers ignored (bad digest, unknown device or server, offline).
    pub triggers_ignored: AtomicU64,
    /// Messages devices sent in completed sessions (each an HTTP round trip).
    pub messages: AtomicU64,
    /// Bytes devices sent.
    pub bytes_sent: AtomicU64,
    /// Bytes devices received.
    pub bytes_received: AtomicU64,
    /// Bootstraps a device fetched and installed.
    pub bootstraps_ok: AtomicU64,
    /// Bootstraps that failed (refused, unreachable, not installable).
    pub bootstraps_failed: AtomicU64,
}

/// A plain copy of [`FleetStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Sessions that completed.
    pub sessions_ok: u64,
    /// Sessions that failed.
    pub sessions_failed: u64,
    /// Valid triggers received.
    pub triggers_ok: u64,
    /// Triggers ignored.
    pub triggers_ignored: u64,
    /// Messages devices sent in completed sessions.
    pub messages: u64,
    /// Bytes devices sent.
    pub bytes_sent: u64,
    /// Bytes devices received.
    pub bytes_received: u64,
    /// Bootstraps a device fetched and installed.
    pub bootstraps_ok: u64,
    /// Bootstraps that failed.
    pub bootstraps_failed: u64,
}

struct Member {
    device: Mutex<SimDevice>,
    sessions: AtomicU64,
}

/// A running fleet.
pub struct Fleet {
    cfg: FleetConfig,
    members: Arc<HashMap<String, Arc<Member>>>,
    order: Vec<String>,
    http: reqwest::Client,
    stats: Arc<FleetStats>,
    push_addr: Option<SocketAddr>,
    started: tokio::time::Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("devices", &self.order.len())
            .field("push_addr", &self.push_addr)
            .finish()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Clone)]
struct PushState {
    tx: mpsc::Sender<(String, Bytes)>,
}

async fn push_handler(
    State(st): State<PushState>,
    Path(dev_id): Path<String>,
    body: Bytes,
) -> HttpStatus {
    // The listener only hands the package on; the device decides whether it is valid.
    match st.tx.try_send((dev_id, body)) {
        Ok(()) => HttpStatus::ACCEPTED,
        Err(_) => HttpStatus::SERVICE_UNAVAILABLE,
    }
}

impl Fleet {
    /// Builds the devices (or loads them from `state_dir`) and, when `push_listen` is given,
    /// starts the shared push listener there (a loopback address).
    pub async fn start(
        cfg: FleetConfig,
        push_listen: Option<SocketAddr>,
    ) -> Result<Fleet, SimError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| SimError::Http(e.to_string()))?;
        Fleet::start_with_client(cfg, push_listen, http).await
    }

    /// As [`Fleet::start`], with the HTTP client to use (e.g. one trusting a lab CA for an
    /// HTTPS server).
    pub async fn start_with_client(
        cfg: FleetConfig,
        push_listen: Option<SocketAddr>,
        http: reqwest::Client,
    ) -> Result<Fleet, SimError> {
        let mut members = HashMap::new();
        let mut order = Vec::new();
        for i in 0..cfg.count {
            let dev_id = cfg.dev_id(i);
            let saved = cfg
                .state_dir
                .as_ref()
                .map(|d| d.join(format!("{}.tnds.xml", dev_id.replace(':', "_"))));
            let mut device = match &saved {
                Some(p) if p.exists() => SimDevice::load(p)?,
                _ => SimDevice::new(&dev_id, &cfg.account(i))?,
            };
            device.max_msg_size = cfg.max_msg_size;
            device.faults = cfg.faults.clone();
            device.encoding = cfg.encoding_of(i);
            members.insert(
                dev_id.clone(),
                Arc::new(Member {
                    device: Mutex::new(device),
                    sessions: AtomicU64::new(0),
                }),
            );
            order.push(dev_id);
        }
        let mut fleet = Fleet {
            cfg,
            members: Arc::new(members),
            order,
            http,
            stats: Arc::new(FleetStats::default()),
            push_addr: None,
            started: tokio::time::Instant::now(),
            tasks: Vec::new(),
        };
        if let Some(addr) = push_listen {
            if !addr.ip().is_loopback() {
                return Err(SimError::NotLoopback(addr.to_string()));
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| SimError::Http(e.to_string()))?;
            fleet.push_addr = listener.local_addr().ok();
            let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(4096);
            let app = Router::new()
                .route("/push/{dev_id}", post(push_handler))
                .with_state(PushState { tx });
            fleet.tasks.push(tokio::spawn(async move {
                // Serves until the fleet is dropped.
                let _ = axum::serve(listener, app).await;
            }));
            let ctx = fleet.context();
            fleet.tasks.push(tokio::spawn(async move {
                while let Some((dev_id, bytes)) = rx.recv().await {
                    let ctx = ctx.clone();
                    tokio::spawn(async move { ctx.on_trigger(&dev_id, &bytes).await });
                }
            }));
        }
        if let Some(every) = fleet.cfg.interval {
            let ctx = fleet.context();
            let ids = fleet.order.clone();
            fleet.tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    for id in &ids {
                        let ctx = ctx.clone();
                        let id = id.clone();
                        tokio::spawn(async move { ctx.run(&id, None).await });
                    }
                }
            }));
        }
        Ok(fleet)
    }

    fn context(&self) -> Ctx {
        Ctx {
            cfg: Arc::new(self.cfg.clone()),
            members: self.members.clone(),
            http: self.http.clone(),
            stats: self.stats.clone(),
            started: self.started,
        }
    }

    /// The base URL of the push listener (`http://addr`), when running.
    pub fn push_base(&self) -> Option<String> {
        self.push_addr.map(|a| format!("http://{a}"))
    }

    /// The DevIds, in order.
    pub fn dev_ids(&self) -> &[String] {
        &self.order
    }

    /// Every device opens one session now, at most `concurrency` at a time. Returns the
    /// reports in device order.
    pub async fn session_all(&self, concurrency: usize) -> Vec<Result<SessionReport, SimError>> {
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut handles = Vec::with_capacity(self.order.len());
        for id in &self.order {
            let ctx = self.context();
            let id = id.clone();
            let sem = sem.clone();
            handles.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                ctx.run(&id, None).await
            }));
        }
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(
                h.await
                    .unwrap_or_else(|e| Err(SimError::Http(format!("device task failed: {e}")))),
            );
        }
        out
    }

    /// One device's session now.
    pub async fn session(&self, dev_id: &str) -> Result<SessionReport, SimError> {
        self.context().run(dev_id, None).await
    }

    /// A copy of one device's tree.
    pub async fn tree(&self, dev_id: &str) -> Option<crate::dm::tree::DmTree> {
        let m = self.members.get(dev_id)?;
        Some(m.device.lock().await.tree.clone())
    }

    /// The counters so far.
    pub fn counts(&self) -> FleetCounts {
        let s = &self.stats;
        FleetCounts {
            sessions_ok: s.sessions_ok.load(Ordering::Relaxed),
            sessions_failed: s.sessions_failed.load(Ordering::Relaxed),
            triggers_ok: s.triggers_ok.load(Ordering::Relaxed),
            triggers_ignored: s.triggers_ignored.load(Ordering::Relaxed),
            messages: s.messages.load(Ordering::Relaxed),
            bytes_sent: s.bytes_sent.load(Ordering::Relaxed),
            bytes_received: s.bytes_received.load(Ordering::Relaxed),
            bootstraps_ok: s.bootstraps_ok.load(Ordering::Relaxed),
            bootstraps_failed: s.bootstraps_failed.load(Ordering::Relaxed),
        }
    }

    /// Sets the faults of one device (tests inject them one device at a time).
    pub async fn set_faults(&self, dev_id: &str, faults: DeviceFaults) {
        if let Some(m) = self.members.get(dev_id) {
            m.device.lock().await.faults = faults;
        }
    }

    /// Commands under `path` fail with 500 on every device.
    pub async fn fail_path_everywhere(&self, path: NodeUri) {
        for m in self.members.values() {
            m.device.lock().await.faults.fail_paths.push(path.clone());
        }
    }
}

/// How many bootstraps one run of a device follows at most.
const MAX_BOOTSTRAPS_PER_RUN: usize = 4;

#[derive(Clone)]
struct Ctx {
    cfg: Arc<FleetConfig>,
    members: Arc<HashMap<String, Arc<Member>>>,
    http: reqwest::Client,
    stats: Arc<FleetStats>,
    started: tokio::time::Instant,
}

impl Ctx {
    fn offline(&self) -> bool {
        self.cfg
            .offline_for
            .is_some_and(|d| self.started.elapsed() < d)
    }

    async fn on_trigger(&self, dev_id: &str, bytes: &[u8]) {
        let Some(m) = self.members.get(dev_id) else {
            self.stats.triggers_ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.offline() {
            self.stats.triggers_ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let verified = m.device.lock().await.verify_trigger(bytes);
        match verified {
            Ok((server_id, session_id)) => {
                self.stats.triggers_ok.fetch_add(1, Ordering::Relaxed);
                // The session's outcome is counted in the fleet's statistics by run_for.
                let _ = self.run_for(dev_id, &server_id, Some(session_id)).await;
            }
            Err(e) => {
                tracing::debug!(
                    device = dev_id,
                    "simulated device ignored a Package #0: {e}"
                );
                self.stats.triggers_ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn run(&self, dev_id: &str, trigger: Option<u16>) -> Result<SessionReport, SimError> {
        let server_id = self.cfg.server_id.clone();
        self.run_for(dev_id, &server_id, trigger).await
    }

    /// One session of the device with `server_id`, then the bootstraps it leads to, each
    /// followed by a session with the new server; the device's state is saved at the end.
    /// Returns the first session's result.
    async fn run_for(
        &self,
        dev_id: &str,
        server_id: &str,
        trigger: Option<u16>,
    ) -> Result<SessionReport, SimError> {
        let m = self
            .members
            .get(dev_id)
            .ok_or_else(|| SimError::NoAccount(dev_id.to_owned()))?;
        if self.offline() {
            return Err(SimError::Http("the device is offline".into()));
        }
        let mut device = m.device.lock().await;
        let result = self.one_session(m, &mut device, server_id, trigger).await;
        // Each bootstrap URL is tried once, so this ends; the bound only guards against a
        // chain of servers that bootstrap one another.
        for _ in 0..MAX_BOOTSTRAPS_PER_RUN {
            match device.follow_bootstrap(&self.http).await {
                Ok(None) => break,
                Ok(Some(new_server)) => {
                    self.stats.bootstraps_ok.fetch_add(1, Ordering::Relaxed);
                    // The device calls its new server at once (the account is not dormant);
                    // the outcome is counted in the fleet's statistics.
                    let _ = self.one_session(m, &mut device, &new_server, None).await;
                }
                Err(_) => {
                    self.stats.bootstraps_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(dir) = &self.cfg.state_dir {
            let path = dir.join(format!("{}.tnds.xml", dev_id.replace(':', "_")));
            device.save(&path)?;
        }
        result
    }

    /// Runs one session with the fleet's faults and counts it.
    async fn one_session(
        &self,
        m: &Member,
        device: &mut SimDevice,
        server_id: &str,
        trigger: Option<u16>,
    ) -> Result<SessionReport, SimError> {
        let n = m.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let saved_faults = device.faults.clone();
        if self.cfg.drop_every != 0 && n.is_multiple_of(u64::from(self.cfg.drop_every)) {
            device.faults.drop_after_messages = Some(1);
        }
        let session_id = (n & 0xFFFF) as u16;
        let result = device
            .session(&self.http, server_id, trigger, session_id)
            .await;
        device.faults = saved_faults;
        match &result {
            Ok(r) if r.completed => {
                self.stats.sessions_ok.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .messages
                    .fetch_add(r.messages as u64, Ordering::Relaxed);
                self.stats
                    .bytes_sent
                    .fetch_add(r.bytes_sent as u64, Ordering::Relaxed);
                self.stats
                    .bytes_received
                    .fetch_add(r.bytes_received as u64, Ordering::Relaxed);
            }
            _ => {
                self.stats.sessions_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
}
