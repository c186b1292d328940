//! One engine: a DM server identity with its device endpoint, its peer endpoint (mutual TLS),
//! its bootstrap endpoint, its store and the delegation driver, started together and driven
//! through this handle: operator commands in, immutable summaries out. The console and the
//! headless `serve` both run this; neither blocks on it.
//!
//! Peers can be added and removed while the engine runs ([`Engine::add_peer`],
//! [`Engine::remove_peer`]): an added peer is stored with its pinned certificate, pinned in the
//! [`PeerTrust`] that both the peer endpoint and the peer client check handshakes with, and
//! listed in the [`PeerDirectory`] the driver and the endpoint read, so it takes part from the
//! next handshake on, and again after a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::bootstrap::{self, BootstrapEndpoint, BootstrapTokens};
use super::device_endpoint::DeviceEndpointConfig;
use super::dm_server::{DmServer, DmServerConfig, DmServerError};
use super::driver::{
    Board, Command, CommandRefused, DelegationSummary, Driver, Internal, Parts, StartRequest,
};
use super::notifier::HttpPush;
use super::peer_client::PeerClient;
use super::peer_endpoint::{self, PeerEndpoint};
use super::peers::{
    NewPeer, PeerDirectory, PeerEntry, PeerError, PeerInfo, PeerOrigin, Policy, parse_certificate,
};
use crate::delegation::machine::{Deadlines, OperatorAction, Role, State};
use crate::delegation::messages::DeviceInfo;
use crate::store::delegations::AuditRow;
use crate::store::peers::PeerRow;
use crate::store::{Store, StoreError};
use crate::tls::PeerTrust;

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The DM server could not start.
    #[error(transparent)]
    DmServer(#[from] DmServerError),
    /// A socket could not be opened.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The thread of an engine started on a thread of its own could not be started, or
    /// ended before the engine was up.
    #[error("cannot start the engine's thread: {0}")]
    Thread(String),
}

/// The peer side: where peers reach this engine and how it reaches them.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// Where the peer endpoint listens.
    pub listen: SocketAddr,
    /// What the peer side trusts; `server_tls` and `client` must check handshakes with it
    /// ([`crate::tls::mtls_server_config_with`], [`crate::tls::peer_client_builder`]), so the
    /// peers added at run time are pinned where both look.
    pub trust: Arc<PeerTrust>,
    /// Its mutual-TLS configuration ([`crate::tls::mtls_server_config_with`]).
    pub server_tls: Arc<rustls::ServerConfig>,
    /// The client for sending (this server's identity, trusting as `trust` does).
    pub client: reqwest::Client,
    /// The configured peers.
    pub peers: Vec<PeerInfo>,
}

/// The bootstrap endpoint's settings.
#[derive(Debug, Clone)]
pub struct BootstrapSetup {
    /// Where it listens.
    pub listen: SocketAddr,
    /// HTTPS with this configuration, else plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long a bootstrap URL's token lives.
    pub token_ttl_ms: i64,
    /// The base URL given to devices, when not `http(s)://` plus the listening address.
    pub public_url: Option<String>,
}

/// Everything an engine needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This server's ServerID.
    pub server_id: String,
    /// The SQLite file.
    pub store_path: PathBuf,
    /// Where devices reach the engine.
    pub devices_listen: SocketAddr,
    /// The device endpoint's settings.
    pub device_endpoint: DeviceEndpointConfig,
    /// HTTPS for devices, when given.
    pub device_tls: Option<Arc<rustls::ServerConfig>>,
    /// The peer side (none: this engine takes part in no delegation).
    pub peer: Option<PeerSetup>,
    /// The bootstrap endpoint (needed to be the delegated server in the bootstrap approach).
    pub bootstrap: Option<BootstrapSetup>,
    /// Step deadlines.
    pub deadlines: Deadlines,
    /// The HTTP client Package #0 pushes go through.
    pub push_client: reqwest::Client,
}

/// An audit line for an operator's change to the peers.
fn peer_audit(at_ms: i64, action: &str, peer: &str, detail: String) -> AuditRow {
    AuditRow {
        at_ms,
        actor: "operator".into(),
        action: action.into(),
        delegation_id: None,
        dev_id: None,
        peer: Some(peer.to_owned()),
        outcome: Some("done".into()),
        detail,
    }
}

/// Puts the peers added in earlier runs back: listed and pinned again. A stored peer whose
/// ServerID the configuration now uses, or whose certificate cannot be read, is left out (and
/// logged); one whose certificate has expired is listed, and its handshakes fail until it is
/// replaced.
async fn restore_peers(
    store: &Store,
    peers: &PeerDirectory,
    trust: &PeerTrust,
) -> Result<(), EngineError> {
    let rows = store.call(crate::store::peers::peers).await?;
    for row in rows {
        let Some(pem) = &row.cert_pem else {
            continue;
        };
        if peers.get(&row.server_id).is_some() {
            tracing::warn!(
                peer = %row.server_id,
                "a peer added earlier has the ServerID of a configured one: the configured one is used"
            );
            continue;
        }
        let origin = std::path::Path::new("(the store)");
        let cert = match parse_certificate(pem.as_bytes(), origin, None) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(peer = %row.server_id, "a stored peer is left out: {e}");
                continue;
            }
        };
        let host = url::Url::parse(&row.base_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let info = PeerInfo {
            server_id: row.server_id.clone(),
            base_url: row.base_url.clone(),
            auth: super::peers::PeerAuth::Pinned(cert.fingerprint.clone()),
            policy: Policy::parse(&row.policy).unwrap_or_default(),
        };
        if let Err(e) = trust.pin(&row.server_id, cert.leaf.clone(), &host) {
            tracing::warn!(peer = %row.server_id, "a stored peer is left out: {e}");
            continue;
        }
        let entry = PeerEntry {
            info: Arc::new(info),
            origin: PeerOrigin::Added {
                added_ms: row.added_ms,
                not_after_ms: cert.not_after_ms,
            },
        };
        if peers.insert(entry).is_err() {
            trust.unpin(&row.server_id);
        }
    }
    Ok(())
}

/// A running engine.
pub struct Engine {
    server_id: String,
    dm: Arc<DmServer>,
    peer_endpoint: Option<PeerEndpoint>,
    bootstrap: Option<BootstrapEndpoint>,
    internal: mpsc::UnboundedSender<Internal>,
    peers: Arc<PeerDirectory>,
    trust: Option<Arc<PeerTrust>>,
    /// One peer change at a time (a check and its store write are not interleaved).
    peer_edits: tokio::sync::Mutex<()>,
    board: Arc<Mutex<Board>>,
    version: watch::Receiver<u64>,
    store: Store,
    driver: tokio::task::JoinHandle<()>,
    recovered: usize,
    /// Set when the engine runs on a thread of its own ([`Engine::start_on_own_thread`]).
    own_thread: Option<OwnThread>,
}

/// Waits until `thread` has exited (not only its runtime), joining it off the caller's
/// runtime, which may have no other thread.
async fn join_thread(thread: std::thread::JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
}

/// The thread an engine started by [`Engine::start_on_own_thread`] runs on, with a
/// single-threaded runtime that holds every task of the engine.
struct OwnThread {
    /// Dropped, it lets the thread end: its runtime stops and every task of the engine goes
    /// with it.
    release: oneshot::Sender<()>,
    /// The thread itself: joined, its runtime and every task of the engine are gone.
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("server_id", &self.server_id)
            .field("devices", &self.dm.url())
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, EngineError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| EngineError::Listen {
            addr,
            reason: e.to_string(),
        })
}

impl Engine {
    /// Opens the store, starts the endpoints, resumes every live delegation and starts the
    /// driver.
    pub async fn start(cfg: EngineConfig) -> Result<Engine, EngineError> {
        crate::tls::install_crypto_provider();
        let store = Store::start(&cfg.store_path)?;
        let listener = bind(cfg.devices_listen).await?;
        let dm = DmServer::start_with_tls(
            DmServerConfig {
                server_id: cfg.server_id.clone(),
                endpoint: cfg.device_endpoint.clone(),
            },
            listener,
            Some(store.clone()),
            Arc::new(HttpPush::new(cfg.push_client.clone())),
            cfg.device_tls.clone(),
        )
        .await?;
        let dm = Arc::new(dm);
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let (dev_tx, mut dev_rx) = mpsc::unbounded_channel();
        dm.set_observer(dev_tx);
        {
            let tx = internal_tx.clone();
            tokio::spawn(async move {
                while let Some(e) = dev_rx.recv().await {
                    if tx.send(Internal::Device(e)).is_err() {
                        break;
                    }
                }
            });
        }
        let tokens = Arc::new(Mutex::new(BootstrapTokens::new()));
        let mut bootstrap_base = None;
        let bootstrap = match &cfg.bootstrap {
            Some(b) => {
                let listener = bind(b.listen).await?;
                let (served_tx, mut served_rx) = mpsc::unbounded_channel();
                let ep = bootstrap::spawn(listener, b.tls.clone(), tokens.clone(), served_tx)
                    .await
                    .map_err(|e| EngineError::Listen {
                        addr: b.listen,
                        reason: e.to_string(),
                    })?;
                bootstrap_base = Some(b.public_url.clone().unwrap_or_else(|| ep.url.clone()));
                let tx = internal_tx.clone();
                tokio::spawn(async move {
                    while let Some(s) = served_rx.recv().await {
                        if tx.send(Internal::Served(s)).is_err() {
                            break;
                        }
                    }
                });
                Some(ep)
            }
            None => None,
        };
        let peers = Arc::new(PeerDirectory::new(
            cfg.peer
                .as_ref()
                .map(|p| p.peers.clone())
                .unwrap_or_default(),
        ));
        let trust = cfg.peer.as_ref().map(|p| p.trust.clone());
        if let Some(trust) = &trust {
            restore_peers(&store, &peers, trust).await?;
        }
        let (inbox_tx, inbox_rx) = mpsc::channel(4096);
        let peer_endpoint = match &cfg.peer {
            Some(p) => {
                let listener = bind(p.listen).await?;
                Some(
                    peer_endpoint::spawn(listener, p.server_tls.clone(), peers.clone(), inbox_tx)
                        .await,
                )
            }
            None => None,
        };
        let board = Arc::new(Mutex::new(Board::default()));
        let (version_tx, version_rx) = watch::channel(0u64);
        let parts = Parts {
            me: cfg.server_id.clone(),
            store: store.clone(),
            dm: dm.clone(),
            peers,
            client: cfg.peer.as_ref().map(|p| PeerClient::new(p.client.clone())),
            tokens,
            bootstrap_base,
            token_ttl_ms: cfg
                .bootstrap
                .as_ref()
                .map_or(bootstrap::DEFAULT_TTL_MS, |b| b.token_ttl_ms),
            deadlines: cfg.deadlines,
            board: board.clone(),
            version: version_tx,
        };
        let peers = parts.peers.clone();
        let mut driver = Driver::new(parts, internal_tx.clone());
        let recovered = driver.recover().await?;
        let driver = tokio::spawn(driver.run(inbox_rx, internal_rx));
        tracing::info!(
            server = %cfg.server_id,
            devices = %dm.url(),
            peers = peer_endpoint.as_ref().map_or("-", |p| p.url.as_str()),
            bootstrap = bootstrap.as_ref().map_or("-", |b| b.url.as_str()),
            resumed = recovered,
            "engine started"
        );
        Ok(Engine {
            server_id: cfg.server_id,
            dm,
            peer_endpoint,
            bootstrap,
            internal: internal_tx,
            peers,
            trust,
            peer_edits: tokio::sync::Mutex::new(()),
            board,
            version: version_rx,
            store,
            driver,
            recovered,
            own_thread: None,
        })
    }

    /// [`Engine::start`] on a thread of its own, with a single-threaded runtime that runs
    /// every task of the engine (endpoints, driver, sends), as if the engine had a process
    /// of its own. The lab runs its two engines so, beside the fleet on the caller's runtime:
    /// with no work stealing, an engine's data stays on one thread and in one allocator heap.
    /// On the 2-core VM, `demo --devices 10000` (LTO, eleven alternating pairs) took 3.11 ms
    /// of CPU per delegation against 3.60 with everything on one work-stealing runtime, and
    /// 236–252 MB against 249–265 at its peak. The thread ends when the engine is stopped or
    /// dropped.
    pub async fn start_on_own_thread(cfg: EngineConfig) -> Result<Engine, EngineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        let (started_tx, started_rx) = oneshot::channel();
        let (release, release_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            // The system shows its first 15 bytes; panics name it whole.
            .name(format!("engine {}", cfg.server_id))
            .spawn(move || {
                runtime.block_on(async move {
                    let started = Engine::start(cfg).await;
                    let up = started.is_ok();
                    if started_tx.send(started).is_ok() && up {
                        // Until the engine is stopped or dropped (the sender with it).
                        let _ = release_rx.await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .map_err(|e| EngineError::Thread(e.to_string()))?;
        let started = started_rx.await.unwrap_or_else(|_| {
            Err(EngineError::Thread(
                "the thread ended before the engine started".to_owned(),
            ))
        });
        match started {
            Ok(mut engine) => {
                engine.own_thread = Some(OwnThread { release, thread });
                Ok(engine)
            }
            Err(e) => {
                // Nothing of a failed start outlives the call.
                join_thread(thread).await;
                Err(e)
            }
        }
    }

    /// This server's ServerID.
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The DM server (devices, enrolment, queues).
    pub fn dm(&self) -> &DmServer {
        &self.dm
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The peer endpoint's base URL.
    pub fn peer_url(&self) -> Option<&str> {
        self.peer_endpoint.as_ref().map(|p| p.url.as_str())
    }

    /// Failed TLS handshakes on the peer endpoint.
    pub fn peer_handshake_failures(&self) -> u64 {
        self.peer_endpoint
            .as_ref()
            .map_or(0, |p| p.tls.handshake_failure_count())
    }

    /// The bootstrap endpoint, when running.
    pub fn bootstrap_endpoint(&self) -> Option<&BootstrapEndpoint> {
        self.bootstrap.as_ref()
    }

    /// The peers: configured ones first, then those added at run time.
    pub fn peers(&self) -> Vec<PeerEntry> {
        self.peers.entries()
    }

    /// Adds a peer from its certificate file, at once and for good: checked (ServerID, https
    /// URL, a certificate valid now that no other peer has), stored, then pinned, so the peer
    /// endpoint accepts its client certificate and the peer client its server certificate from
    /// the next handshake on, whoever issued it. Returns the peer as listed.
    pub async fn add_peer(&self, new: NewPeer) -> Result<PeerEntry, PeerError> {
        new.check_fields(&self.server_id, &self.peers)?;
        let path = new.cert_path.clone();
        let pem = tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the read was interrupted")))
            .map_err(|source| PeerError::Unreadable {
                path: new.cert_path.clone(),
                source,
            })?;
        self.add_peer_pem(new, &pem).await
    }

    /// [`Engine::add_peer`] with the certificate file's content read by the caller (an
    /// operator's command line, which may read files the engine's user cannot);
    /// `new.cert_path` only names it in errors.
    pub async fn add_peer_pem(&self, new: NewPeer, pem: &[u8]) -> Result<PeerEntry, PeerError> {
        let trust = self.trust.clone().ok_or(PeerError::NoPeerEndpoint)?;
        let _edit = self.peer_edits.lock().await;
        let now = super::driver::now_ms();
        let checked = new.check(&self.server_id, &self.peers, pem, now)?;
        let entry = PeerEntry {
            info: Arc::new(checked.info.clone()),
            origin: PeerOrigin::Added {
                added_ms: now,
                not_after_ms: checked.cert.not_after_ms,
            },
        };
        let row = PeerRow {
            server_id: checked.info.server_id.clone(),
            base_url: checked.info.base_url.clone(),
            cert_fingerprint: Some(checked.cert.fingerprint.clone()),
            policy: checked.info.policy.as_str().to_owned(),
            added_ms: now,
            cert_pem: Some(checked.cert.pem.clone()),
        };
        let audit = peer_audit(
            now,
            "add peer",
            &checked.info.server_id,
            format!(
                "added {} at {}, pinned to the certificate SHA-256 {}, policy {}",
                checked.info.server_id,
                checked.info.base_url,
                checked.cert.fingerprint,
                checked.info.policy.as_str()
            ),
        );
        // Stored before it takes effect: a peer that works is a peer that comes back.
        self.store
            .call(move |c| {
                crate::store::peers::upsert_peer(c, &row)?;
                crate::store::delegations::append_audit(c, &[audit])
            })
            .await?;
        trust.pin(
            &checked.info.server_id,
            checked.cert.leaf.clone(),
            &checked.host,
        )?;
        self.peers.insert(entry.clone())?;
        tracing::info!(
            peer = %checked.info.server_id,
            url = %checked.info.base_url,
            fingerprint = %checked.cert.fingerprint,
            policy = checked.info.policy.as_str(),
            "peer added"
        );
        Ok(entry)
    }

    /// Removes a peer added at run time (configured ones stay in their file), once no
    /// delegation with it is in flight: forgotten by the store, the directory and the trust.
    pub async fn remove_peer(&self, server_id: &str) -> Result<(), PeerError> {
        let trust = self.trust.clone().ok_or(PeerError::NoPeerEndpoint)?;
        let _edit = self.peer_edits.lock().await;
        let entry = self
            .peers
            .entry(server_id)
            .ok_or_else(|| PeerError::NotFound(server_id.to_owned()))?;
        if entry.origin == PeerOrigin::Configured {
            return Err(PeerError::Configured(server_id.to_owned()));
        }
        let count = self
            .summaries()
            .iter()
            .filter(|s| s.peer == server_id)
            .filter(|s| !s.is_over())
            .count();
        if count > 0 {
            return Err(PeerError::InFlight {
                server_id: server_id.to_owned(),
                count,
            });
        }
        let now = super::driver::now_ms();
        let id = server_id.to_owned();
        let audit = peer_audit(
            now,
            "remove peer",
            server_id,
            format!("removed {server_id}"),
        );
        self.store
            .call(move |c| {
                crate::store::peers::delete_peer(c, &id)?;
                crate::store::delegations::append_audit(c, &[audit])
            })
            .await?;
        self.peers.remove(server_id);
        trust.unpin(server_id);
        tracing::info!(peer = %server_id, "peer removed");
        Ok(())
    }

    /// How many live delegations were resumed at start.
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    async fn command<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CommandRefused>>) -> Command,
    ) -> Result<T, CommandRefused> {
        let (tx, rx) = oneshot::channel();
        self.internal
            .send(Internal::Command(make(tx)))
            .map_err(|_| CommandRefused::Stopped)?;
        rx.await.map_err(|_| CommandRefused::Stopped)?
    }

    /// Starts a delegation; returns its DelegationID once it is stored.
    pub async fn start_delegation(&self, req: StartRequest) -> Result<String, CommandRefused> {
        self.command(|tx| Command::Start(req, tx)).await
    }

    /// Accepts an incoming request.
    pub async fn accept(&self, id: &str) -> Result<(), CommandRefused> {
        self.command(|tx| Command::Operator(id.to_owned(), OperatorAction::Accept, tx))
            .await
    }

    /// Declines an incoming request.
    pub async fn decline(&self, id: &str, reason: &str) -> Result<(), CommandRefused> {
        self.command(|tx| {
            Command::Operator(
                id.to_owned(),
                OperatorAction::Decline(reason.to_owned()),
                tx,
            )
        })
        .await
    }

    /// Aborts a running delegation: FAILURE 1001 to the peer and the device rolled back.
    pub async fn abort(&self, id: &str) -> Result<(), CommandRefused> {
        self.command(|tx| Command::Operator(id.to_owned(), OperatorAction::Abort, tx))
            .await
    }

    /// Un-enrols a device that is in no delegation: its credentials and tree leave the store
    /// and the registry (the history that names it stays). Refused (1003 Busy) while a
    /// delegation of it runs, including one whose undo is still pending.
    pub async fn remove_device(&self, dev_id: &str) -> Result<(), CommandRefused> {
        self.command(|tx| Command::RemoveDevice(dev_id.to_owned(), tx))
            .await
    }

    /// Starts a failed or aborted delegation again, as a new attempt linked to the old one.
    pub async fn retry(&self, id: &str) -> Result<String, CommandRefused> {
        let key = id.to_owned();
        let row = self
            .store
            .call(move |c| crate::store::delegations::load(c, &key))
            .await
            .map_err(|e| CommandRefused::Store(e.to_string()))?
            .ok_or_else(|| CommandRefused::NotFound(id.to_owned()))?;
        if row.state != "Failed" && row.state != "Aborted" {
            return Err(CommandRefused::NotNow(format!(
                "only a failed or aborted delegation can be retried; this one is {}",
                row.state
            )));
        }
        let role = if row.role == "Delegating" {
            Role::Delegating
        } else {
            Role::Delegated
        };
        let device = (role == Role::Delegated).then(|| {
            let d: Option<crate::delegation::machine::Delegation> =
                serde_json::from_str(&row.machine).ok();
            DeviceInfo {
                dev_id: row.dev_id.clone(),
                man: d.as_ref().map(|d| d.man.clone()).unwrap_or_default(),
                model: d.as_ref().map(|d| d.model.clone()).unwrap_or_default(),
                notify: d.and_then(|d| d.notify),
            }
        });
        let lease = serde_json::from_str::<crate::delegation::machine::Delegation>(&row.machine)
            .ok()
            .and_then(|d| d.lease);
        self.start_delegation(StartRequest {
            peer: row.peer,
            dev_id: row.dev_id,
            role,
            full: row.full,
            paths: if row.full { Vec::new() } else { row.paths },
            bootstrap: row.bootstrap,
            lease,
            device,
            retry_of: Some(row.id),
        })
        .await
    }

    /// A copy of one delegation's summary.
    pub fn summary(&self, id: &str) -> Option<DelegationSummary> {
        self.board.lock().ok()?.delegations.get(id).cloned()
    }

    /// Copies of every summary.
    pub fn summaries(&self) -> Vec<DelegationSummary> {
        self.board
            .lock()
            .map(|b| b.delegations.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The shared board itself (the console reads it each frame, briefly).
    pub fn board(&self) -> Arc<Mutex<Board>> {
        self.board.clone()
    }

    /// A receiver that changes whenever the board does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.clone()
    }

    /// Waits until `pred` holds for delegation `id`, or `timeout` passes; returns the last
    /// summary seen.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&DelegationSummary) -> bool,
    ) -> Option<DelegationSummary> {
        let mut rx = self.version.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.summary(id);
            if s.as_ref().is_some_and(&pred) {
                return s;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.summary(id);
            }
        }
    }

    /// Waits for a delegation to end (Completed, Failed or Aborted; a leased one counts once
    /// it reverted).
    ///
    /// The driver tells the waiter when the delegation leaves it, so waiting costs nothing
    /// while other delegations move (unlike [`Engine::wait_for`], which looks at every change
    /// of the board).
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Option<DelegationSummary> {
        let ended = {
            // The check and the registration under one lock: the end cannot slip between.
            let mut board = self.board.lock().ok()?;
            if let Some(s) = board.delegations.get(id).filter(|s| s.is_over()) {
                return Some(s.clone());
            }
            board.wait_ended(id)
        };
        let told = tokio::time::timeout(timeout, ended).await;
        let mut board = self.board.lock().ok()?;
        if told.is_err() {
            board.forget_gone_waiters(id);
        }
        board.delegations.get(id).cloned()
    }

    /// The delegations waiting for an operator's decision.
    pub fn requests(&self) -> Vec<DelegationSummary> {
        self.summaries()
            .into_iter()
            .filter(|s| s.state == State::AwaitingOperator)
            .collect()
    }

    /// Stops the driver after its current batch (every transition it took is stored) and the
    /// endpoints. An engine on a thread of its own returns once that thread has exited.
    pub async fn stop(mut self) {
        self.shutdown().await;
        if let Some(OwnThread { release, thread }) = self.own_thread.take() {
            drop(release);
            join_thread(thread).await;
        }
    }

    /// [`Engine::stop`] for a holder that shares the engine: the driver stops after its
    /// current batch and the store's log is folded into its file. Calls after the first do
    /// nothing more.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .internal
            .send(Internal::Command(Command::Stop(tx)))
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        self.driver.abort();
        // The database file alone then holds everything (what a backup copies).
        match self.store.checkpoint().await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the store's write-ahead log could not be folded into the database file (a \
                 reader held it); it stays beside the file and is read on the next start"
            ),
            Err(e) => tracing::warn!("the store's write-ahead log was not folded in: {e}"),
        }
    }
}
