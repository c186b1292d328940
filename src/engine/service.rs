//! One engine: a DM server identity with its device endpoint, its peer endpoint (mutual TLS),
//! its bootstrap endpoint, its store and the delegation driver, started together and driven
//! through this handle: operator commands in, immutable summaries out. The console and the
//! headless `serve` both run this; neither blocks on it.

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
use super::peers::{PeerDirectory, PeerInfo};
use crate::delegation::machine::{Deadlines, OperatorAction, Role, State};
use crate::delegation::messages::DeviceInfo;
use crate::store::{Store, StoreError};

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
}

/// The peer side: where peers reach this engine and how it reaches them.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// Where the peer endpoint listens.
    pub listen: SocketAddr,
    /// Its mutual-TLS configuration ([`crate::tls::mtls_server_config`]).
    pub server_tls: Arc<rustls::ServerConfig>,
    /// The client for sending (this server's identity, trusting the peers' CAs).
    pub client: reqwest::Client,
    /// The peers.
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

/// A running engine.
pub struct Engine {
    server_id: String,
    dm: Arc<DmServer>,
    peer_endpoint: Option<PeerEndpoint>,
    bootstrap: Option<BootstrapEndpoint>,
    internal: mpsc::UnboundedSender<Internal>,
    board: Arc<Mutex<Board>>,
    version: watch::Receiver<u64>,
    store: Store,
    driver: tokio::task::JoinHandle<()>,
    recovered: usize,
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
            board,
            version: version_rx,
            store,
            driver,
            recovered,
        })
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
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Option<DelegationSummary> {
        self.wait_for(id, timeout, |s| {
            s.state.is_terminal() && s.waiting_for == "nothing" && s.unsent == 0
        })
        .await
    }

    /// The delegations waiting for an operator's decision.
    pub fn requests(&self) -> Vec<DelegationSummary> {
        self.summaries()
            .into_iter()
            .filter(|s| s.state == State::AwaitingOperator)
            .collect()
    }

    /// Stops the driver after its current batch (every transition it took is stored) and the
    /// endpoints.
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self
            .internal
            .send(Internal::Command(Command::Stop(tx)))
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        self.driver.abort();
    }
}
