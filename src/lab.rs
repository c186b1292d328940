//! The lab (DESIGN.md section 7): two engines on loopback, DMS-1 and DMS-2, each with its
//! own SQLite file, certificates from a lab CA made on first run, mutual TLS between them,
//! and a fleet of simulated devices enrolled to DMS-1. `dmdeleg demo`, the console's default
//! and the end-to-end tests all start it. Each engine runs on a thread of its own
//! ([`Engine::start_on_own_thread`]), as it would in a process of its own; the fleet runs on
//! the caller's runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::delegation::machine::Deadlines;
use crate::engine::bootstrap::DEFAULT_TTL_MS;
use crate::engine::device_endpoint::DeviceEndpointConfig;
use crate::engine::peers::{PeerAuth, PeerInfo, Policy};
use crate::engine::service::{BootstrapSetup, Engine, EngineConfig, EngineError, PeerSetup};
use crate::sim::device::SimError;
use crate::sim::fleet::{Fleet, FleetConfig};
use crate::tls::{self, TlsError};

/// DMS-1's ServerID in the lab.
pub const DMS1: &str = "dms1.example";
/// DMS-2's ServerID in the lab.
pub const DMS2: &str = "dms2.example";

/// Why the lab could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// Certificates could not be made or read.
    #[error("lab certificates: {0}")]
    Tls(#[from] TlsError),
    /// An engine did not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The device fleet did not start.
    #[error("simulated devices: {0}")]
    Fleet(#[from] SimError),
    /// A file or directory could not be made.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |e| LabError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// The three listening addresses of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnginePorts {
    /// Device endpoint.
    pub devices: SocketAddr,
    /// Peer endpoint (mutual TLS).
    pub peer: SocketAddr,
    /// Bootstrap endpoint.
    pub bootstrap: SocketAddr,
}

impl EnginePorts {
    /// Whether all three ports can be bound right now.
    pub fn available(&self) -> bool {
        [self.devices, self.peer, self.bootstrap]
            .iter()
            .all(|a| std::net::TcpListener::bind(a).is_ok())
    }

    /// Three free loopback ports, chosen now.
    pub fn free() -> Result<EnginePorts, LabError> {
        Ok(EnginePorts {
            devices: free_port()?,
            peer: free_port()?,
            bootstrap: free_port()?,
        })
    }
}

/// Forgets the ports of earlier runs, so the next plan picks new ones.
fn forget_ports(opts: &LabOptions) {
    // Without the file the plan picks free ports anyway.
    let _ = std::fs::remove_file(opts.dir.join("lab-ports.json"));
}

/// A loopback address with a port free right now.
pub fn free_port() -> Result<SocketAddr, LabError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
    l.local_addr().map_err(io(Path::new("127.0.0.1:0")))
}

/// A loopback address where nothing listens and nothing else can: a socket bound for the
/// life of the process and never put to listen, so a connection to it is refused at once.
/// (A port merely free when chosen can be taken by a later listener of a test running
/// alongside, which then answers in the unreachable peer's place.)
pub fn unreachable_port() -> Result<SocketAddr, LabError> {
    static HELD: std::sync::OnceLock<Result<(tokio::net::TcpSocket, SocketAddr), String>> =
        std::sync::OnceLock::new();
    let here = Path::new("127.0.0.1:0");
    let held = HELD.get_or_init(|| {
        let bind = || -> std::io::Result<(tokio::net::TcpSocket, SocketAddr)> {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            let addr = socket.local_addr()?;
            Ok((socket, addr))
        };
        bind().map_err(|e| e.to_string())
    });
    match held {
        Ok((_, addr)) => Ok(*addr),
        Err(reason) => Err(LabError::Io {
            path: here.to_owned(),
            reason: reason.clone(),
        }),
    }
}

/// Makes the lab CA and both servers' certificates in `dir` unless they exist.
pub fn ensure_certs(dir: &Path) -> Result<(), LabError> {
    if dir.join("ca.pem").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    tls::init_dir(dir, &[DMS1, DMS2])?;
    Ok(())
}

/// One engine of the lab, as its configuration.
#[derive(Debug, Clone)]
pub struct LabEngine {
    /// Its ServerID.
    pub server_id: String,
    /// Its listening addresses.
    pub ports: EnginePorts,
    /// The other engine's ServerID and peer endpoint URL.
    pub peer: (String, String),
    /// The policy for the other engine's requests.
    pub policy: Policy,
    /// Its SQLite file.
    pub store_path: PathBuf,
    /// Where `ca.pem` and `<server_id>.pem/.key` are.
    pub certs: PathBuf,
    /// Step deadlines.
    pub deadlines: Deadlines,
    /// How long bootstrap URLs live.
    pub token_ttl_ms: i64,
}

impl LabEngine {
    /// The engine configuration: HTTP device endpoint, mutual-TLS peer endpoint and client
    /// with the lab certificates, HTTPS bootstrap endpoint.
    pub fn config(&self) -> Result<EngineConfig, LabError> {
        tls::install_crypto_provider();
        let ca = tls::load_certs_file(&self.certs.join("ca.pem"))?;
        let cert_path = self.certs.join(format!("{}.pem", self.server_id));
        let key_path = self.certs.join(format!("{}.key", self.server_id));
        let chain = tls::load_certs_file(&cert_path)?;
        let key = tls::load_key_file(&key_path)?;
        let cert_pem = std::fs::read(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read(&key_path).map_err(io(&key_path))?;
        let trust = tls::PeerTrust::new(&ca)?;
        let server_tls = tls::mtls_server_config_with(chain.clone(), key.clone_key(), &trust)?;
        let client = tls::peer_client_builder(&trust, &cert_pem, &key_pem)?
            .pool_max_idle_per_host(64)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(TlsError::from)?;
        let bootstrap_tls = tls::server_config(chain, key)?;
        let push_client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(TlsError::from)?;
        Ok(EngineConfig {
            server_id: self.server_id.clone(),
            store_path: self.store_path.clone(),
            devices_listen: self.ports.devices,
            device_endpoint: DeviceEndpointConfig::default(),
            device_tls: None,
            peer: Some(PeerSetup {
                listen: self.ports.peer,
                trust,
                server_tls,
                client,
                peers: vec![PeerInfo {
                    server_id: self.peer.0.clone(),
                    base_url: self.peer.1.clone(),
                    auth: PeerAuth::Name(self.peer.0.clone()),
                    policy: self.policy,
                }],
            }),
            bootstrap: Some(BootstrapSetup {
                listen: self.ports.bootstrap,
                tls: Some(bootstrap_tls),
                token_ttl_ms: self.token_ttl_ms,
                public_url: None,
            }),
            deadlines: self.deadlines,
            push_client,
        })
    }
}

/// How to build the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The lab's directory (certificates, databases, device states).
    pub dir: PathBuf,
    /// How many simulated devices.
    pub devices: usize,
    /// Step deadlines of both engines.
    pub deadlines: Deadlines,
    /// DMS-1's policy for DMS-2's requests.
    pub dms1_policy: Policy,
    /// DMS-2's policy for DMS-1's requests.
    pub dms2_policy: Policy,
    /// Keep device trees in files under the lab directory.
    pub persist_devices: bool,
    /// How long DMS-2's bootstrap URLs live.
    pub token_ttl_ms: i64,
    /// Point DMS-1 at a port where nothing listens instead of DMS-2 (the peer unreachable).
    pub dms2_unreachable: bool,
}

impl LabOptions {
    /// A lab in `dir` with `devices` devices, both policies "accept".
    pub fn new(dir: &Path, devices: usize) -> LabOptions {
        LabOptions {
            dir: dir.to_owned(),
            devices,
            deadlines: Deadlines::default(),
            dms1_policy: Policy::Accept,
            dms2_policy: Policy::Accept,
            persist_devices: false,
            token_ttl_ms: DEFAULT_TTL_MS,
            dms2_unreachable: false,
        }
    }
}

/// The running lab.
pub struct Lab {
    /// DMS-1 (the devices' manager).
    pub dms1: Engine,
    /// DMS-2.
    pub dms2: Engine,
    /// The simulated devices.
    pub fleet: Fleet,
    /// The engines' configurations (to restart one).
    pub engines: [LabEngine; 2],
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("dms1", &self.dms1)
            .field("dms2", &self.dms2)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// The two engines' configurations for a lab in `opts.dir` (fresh ports).
    pub fn plan(opts: &LabOptions) -> Result<[LabEngine; 2], LabError> {
        let certs = opts.dir.join("certs");
        ensure_certs(&certs)?;
        // The ports of an earlier run, while they are free: a delegation left in flight
        // resumes with its peer where it was.
        let saved = opts.dir.join("lab-ports.json");
        let previous: Option<[EnginePorts; 2]> = std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|p: &[EnginePorts; 2]| p.iter().all(EnginePorts::available));
        let [p1, p2] = match previous {
            Some(p) => p,
            None => [EnginePorts::free()?, EnginePorts::free()?],
        };
        if let Ok(text) = serde_json::to_vec(&[p1, p2]) {
            // Without the file the next run picks new ports; nothing else depends on it.
            let _ = std::fs::create_dir_all(&opts.dir).and_then(|()| std::fs::write(&saved, text));
        }
        let mk =
            |id: &str, ports: EnginePorts, peer: (&str, EnginePorts), policy: Policy| LabEngine {
                server_id: id.to_owned(),
                ports,
                peer: (peer.0.to_owned(), format!("https://{}", peer.1.peer)),
                policy,
                store_path: opts.dir.join(id).join("dmdeleg.db"),
                certs: certs.clone(),
                deadlines: opts.deadlines,
                token_ttl_ms: opts.token_ttl_ms,
            };
        let mut seen_by_dms1 = p2;
        if opts.dms2_unreachable {
            seen_by_dms1.peer = unreachable_port()?;
        }
        Ok([
            mk(DMS1, p1, (DMS2, seen_by_dms1), opts.dms1_policy),
            mk(DMS2, p2, (DMS1, p1), opts.dms2_policy),
        ])
    }

    /// Starts both engines and the fleet, enrols every device to DMS-1 and runs one session
    /// per device so DMS-1 knows its DevInfo and tree.
    pub async fn start(opts: &LabOptions) -> Result<Lab, LabError> {
        // The engines' ports are picked free and bound a moment later, so a test or process
        // running alongside can take one in between (for a connection of its own). An engine
        // that cannot listen therefore makes the lab start again on new ports, a few times.
        const ATTEMPTS: usize = 3;
        let mut attempt = 0;
        let (engines, dms1, dms2) = loop {
            attempt += 1;
            let engines = Lab::plan(opts)?;
            for e in &engines {
                if let Some(parent) = e.store_path.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
            }
            let retry =
                |e: &EngineError| attempt < ATTEMPTS && matches!(e, EngineError::Listen { .. });
            let dms1 = match Engine::start_on_own_thread(engines[0].config()?).await {
                Err(e) if retry(&e) => {
                    forget_ports(opts);
                    continue;
                }
                started => started?,
            };
            match Engine::start_on_own_thread(engines[1].config()?).await {
                Err(e) if retry(&e) => {
                    dms1.stop().await;
                    forget_ports(opts);
                }
                started => break (engines, dms1, started?),
            }
        };
        let mut fc = FleetConfig::new(DMS1, dms1.dm().url(), opts.devices);
        if opts.persist_devices {
            let d = opts.dir.join("devices");
            std::fs::create_dir_all(&d).map_err(io(&d))?;
            fc.state_dir = Some(d);
        }
        let http = crate::tls::reqwest_client_builder(
            &tls::load_certs_file(&engines[0].certs.join("ca.pem"))?,
            None,
        )?
        .pool_max_idle_per_host(256)
        .build()
        .map_err(TlsError::from)?;
        let push: SocketAddr = "127.0.0.1:0".parse().map_err(|_| LabError::Io {
            path: PathBuf::from("127.0.0.1:0"),
            reason: "bad address".into(),
        })?;
        let fleet = Fleet::start_with_client(fc.clone(), Some(push), http).await?;
        let push_base = fleet.push_base();
        for e in fc.enrolments(push_base.as_deref()) {
            dms1.dm()
                .enrol(e.to_record())
                .await
                .map_err(EngineError::from)?;
        }
        Ok(Lab {
            dms1,
            dms2,
            fleet,
            engines,
        })
    }

    /// Every device opens one session with DMS-1 (its inventory), `concurrency` at a time.
    /// Returns how many sessions failed.
    pub async fn inventory(&self, concurrency: usize) -> usize {
        self.fleet
            .session_all(concurrency)
            .await
            .iter()
            .filter(|r| r.is_err())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unreachable_port_refuses_connections_and_cannot_be_taken() {
        let addr = unreachable_port().unwrap();
        assert_eq!(
            unreachable_port().unwrap(),
            addr,
            "one port for the process"
        );
        // No listener of a test running alongside can take it and answer in its place.
        assert!(std::net::TcpListener::bind(addr).is_err());
        let with_reuse = tokio::net::TcpSocket::new_v4().unwrap();
        with_reuse.set_reuseaddr(true).unwrap();
        assert!(with_reuse.bind(addr).is_err(), "not even with SO_REUSEADDR");
        let err = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
