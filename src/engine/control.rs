//! The operator's control socket of a headless engine (`dmdeleg serve`): a Unix socket, by
//! default `control.sock` in the data directory, through which `dmdeleg delegations start |
//! accept | decline | abort | retry` (and `show --wait`), `dmdeleg peers` and `dmdeleg
//! devices import` reach the running engine. Without it an engine run as a service could
//! neither start a delegation, decide a request that waits for an operator nor change its
//! peers, and devices enrolled into its database behind its back stayed unknown to it until
//! a restart (and their updated credentials could be overwritten by its next save).
//!
//! The protocol is one JSON object per line: a client connects, writes one
//! [`ControlRequest`] and reads one [`ControlReply`]. Only the engine's own user (and root)
//! may use it: the socket file is made `0600`, and the server checks each connection's peer
//! credentials as well. A socket file left by an engine that died is replaced; one that an
//! engine still listens on makes the second engine refuse to start, which also keeps two
//! engines off one database.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::delegation::machine::Role;
use crate::delegation::messages::DeviceInfo;
use crate::engine::driver::{DelegationSummary, StartRequest};
use crate::engine::peers::{NewPeer, PeerEntry, PeerOrigin, Policy};
use crate::engine::service::Engine;

/// The file name of the socket in the data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// Longest request line the server reads: an import of 100,000 devices fits.
const MAX_REQUEST: u64 = 64 * 1024 * 1024;

/// Longest answer the command line reads.
const MAX_REPLY: u64 = 16 * 1024 * 1024;

/// How long the server waits for a client to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait a `show --wait` may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Another engine answers on the socket.
    #[error(
        "another dmdeleg engine is already running on {0} (its control socket answers); stop it first"
    )]
    InUse(PathBuf),
    /// No engine listens on the socket.
    #[error(
        "no engine is running here: nothing listens on {0}; start it with `dmdeleg serve --config FILE`"
    )]
    NotRunning(PathBuf),
    /// The path is too long for a Unix socket (108 bytes on Linux).
    #[error(
        "the control socket path {0} is too long for a Unix socket; set control_socket to a shorter path"
    )]
    PathTooLong(PathBuf),
    /// Reading, writing or binding failed.
    #[error("control socket {path}: {reason}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The other side sent something that is not a reply.
    #[error("the engine's answer could not be read: {0}")]
    BadReply(String),
}

/// What an operator asks the running engine to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Start a delegation of `device` with `peer`: hand it over (this server delegates) or,
    /// with `ask`, ask the peer to hand it to this server.
    Start {
        /// The device's DevId.
        device: String,
        /// The peer's ServerID.
        peer: String,
        /// Subtrees of a Partial delegation; none for Full.
        #[serde(default)]
        paths: Vec<String>,
        /// The Bootstrap Server URL approach instead of DMAcc.
        #[serde(default)]
        bootstrap: bool,
        /// A lease in seconds (the delegation reverts by itself when it ends).
        #[serde(default)]
        lease: Option<u64>,
        /// Ask the peer for a device it manages (this server is the delegated one).
        #[serde(default)]
        ask: Option<AskedDevice>,
    },
    /// Accept an incoming request that waits for an operator.
    Accept {
        /// The DelegationID.
        id: String,
    },
    /// Decline an incoming request that waits for an operator.
    Decline {
        /// The DelegationID.
        id: String,
        /// Told to the peer.
        reason: String,
    },
    /// Abort a running delegation: DELEGATION_FAILURE 1001 and the device rolled back.
    Abort {
        /// The DelegationID.
        id: String,
    },
    /// Start a failed or aborted delegation again, as a new attempt linked to the old one.
    Retry {
        /// The DelegationID of the failed attempt.
        id: String,
    },
    /// Enrol devices (from an import file) in the running engine; see
    /// [`crate::engine::dm_server::DmServer::import`].
    Import {
        /// The devices.
        devices: Vec<crate::store::devices::Enrolment>,
    },
    /// Un-enrol a device that is in no delegation (see [`Engine::remove_device`]).
    RemoveDevice {
        /// Its DevId.
        device: String,
    },
    /// The peers, configured and added.
    Peers,
    /// Add a peer, pinned to its certificate (see [`Engine::add_peer`]).
    AddPeer {
        /// Its ServerID.
        server_id: String,
        /// Its peer endpoint (`https://host:port`).
        url: String,
        /// The certificate file's name, for messages.
        cert_file: PathBuf,
        /// The certificate file's content (PEM), read by the command line.
        cert_pem: String,
        /// What to do with its requests.
        #[serde(default)]
        policy: Policy,
    },
    /// Remove a peer added at run time (see [`Engine::remove_peer`]).
    RemovePeer {
        /// Its ServerID.
        server_id: String,
    },
    /// Where a delegation stands; with `wait_secs`, once it has ended (or that time passed).
    Show {
        /// The DelegationID.
        id: String,
        /// Wait up to this long for it to end.
        #[serde(default)]
        wait_secs: Option<u64>,
    },
}

/// What this server says about a device it asks the peer for (the peer knows the device;
/// this server does not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskedDevice {
    /// The manufacturer.
    #[serde(default)]
    pub man: String,
    /// The model.
    #[serde(default)]
    pub model: String,
    /// The device's push address, to wake it for this server's session.
    #[serde(default)]
    pub push: Option<String>,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ControlReply {
    /// Why the request was refused, in plain words; none when it was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The delegation the request made or concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where it stands now (none when the engine no longer holds it: then the store's
    /// history has it, `dmdeleg delegations list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<DelegationView>,
    /// For an import: how many devices were new and how many were updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<(usize, usize)>,
    /// For the peer requests: the peers as they now stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<PeerView>>,
}

/// A peer as the control socket lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// Its ServerID.
    pub server_id: String,
    /// Its peer endpoint.
    pub url: String,
    /// What happens to its requests: accept, decline or operator.
    pub policy: String,
    /// How its certificate is recognised, in words.
    pub auth: String,
    /// The pinned certificate's SHA-256 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Added at run time (and removable), rather than configured.
    pub added: bool,
    /// When an added peer's pinned certificate expires, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

impl PeerView {
    fn of(e: &PeerEntry) -> PeerView {
        let p = &e.info;
        PeerView {
            server_id: p.server_id.clone(),
            url: p.base_url.clone(),
            policy: p.policy.as_str().to_owned(),
            auth: p.auth.describe(),
            fingerprint: p.auth.fingerprint().map(str::to_owned),
            added: matches!(e.origin, PeerOrigin::Added { .. }),
            expires_ms: e.origin.expires_ms(),
        }
    }
}

fn peer_list(engine: &Engine) -> Vec<PeerView> {
    let mut all: Vec<PeerView> = engine.peers().iter().map(PeerView::of).collect();
    all.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    all
}

/// A delegation as the control socket reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegationView {
    /// The DelegationID.
    pub id: String,
    /// `Delegating` or `Delegated`.
    pub role: String,
    /// The peer.
    pub peer: String,
    /// The device.
    pub device: String,
    /// Running, AwaitingOperator, RollingBack, Completed, Failed or Aborted.
    pub state: String,
    /// The step, 1 to 8.
    pub step: u8,
    /// What it waits for, in plain words.
    pub waiting_for: String,
    /// The failure reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<u16>,
    /// The failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DelegationView {
    fn of(s: &DelegationSummary) -> DelegationView {
        DelegationView {
            id: s.id.clone(),
            role: format!("{:?}", s.role),
            peer: s.peer.clone(),
            device: s.dev_id.clone(),
            state: format!("{:?}", s.state),
            step: s.step,
            waiting_for: s.waiting_for.clone(),
            reason_code: s.reason.as_ref().map(|r| r.0),
            reason: s.reason.as_ref().map(|r| r.1.clone()),
        }
    }

    /// True once it is Completed, Failed or Aborted.
    pub fn is_over(&self) -> bool {
        matches!(self.state.as_str(), "Completed" | "Failed" | "Aborted")
    }
}

/// The listening control socket; [`ControlServer::stop`] stops it and removes its file
/// (dropping it stops accepting too, but leaves the file).
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    /// The socket file's identity when bound, so that stopping removes this socket's file
    /// and never one a later engine bound at the same path.
    file_id: Option<(u64, u64)>,
    task: JoinHandle<()>,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The device and inode of the file at `path`.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The control socket bound, before the engine is there to serve it: bind first, so a second
/// engine on the same data directory is refused before it touches anything.
#[derive(Debug)]
pub struct ControlListener {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlListener {
    /// Binds `path`. Refuses when another engine answers there; replaces a file left by one
    /// that died.
    pub async fn bind(path: &Path) -> Result<ControlListener, ControlError> {
        Ok(ControlListener {
            path: path.to_owned(),
            listener: listen(path).await?,
        })
    }

    /// Serves the engine's operator commands until stopped.
    pub fn serve(self, engine: Arc<Engine>) -> ControlServer {
        let ControlListener { path, listener } = self;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors or the like: try again shortly.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let engine = engine.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_one(&engine, stream).await {
                        tracing::debug!("control connection: {e}");
                    }
                });
            }
        });
        let file_id = file_id(&path);
        ControlServer {
            path,
            file_id,
            task,
        }
    }
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket file (if it is still this socket's).
    pub fn stop(&self) {
        self.task.abort();
        if self.file_id.is_some() && file_id(&self.path) == self.file_id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the socket, `0600`, replacing a file nobody listens on.
async fn listen(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |e: std::io::Error| ControlError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    check_length(path)?;
    if path.exists() {
        match UnixStream::connect(path).await {
            Ok(_) => return Err(ControlError::InUse(path.to_owned())),
            // Nobody listens: a file left by an engine that died.
            Err(_) => std::fs::remove_file(path).map_err(io)?,
        }
    }
    bind_private(path).map_err(io)
}

fn check_length(path: &Path) -> Result<(), ControlError> {
    // sockaddr_un's sun_path: 108 bytes on Linux, with the terminating NUL.
    if path.as_os_str().len() >= 108 {
        return Err(ControlError::PathTooLong(path.to_owned()));
    }
    Ok(())
}

/// Binds with a umask that leaves the socket `0600` from its first moment, then makes sure.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The umask is process-wide; binding is quick and nothing else here creates files
        // that depend on it meanwhile (the store's file sets its own mode).
        // SAFETY: umask only swaps the process's file mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the mask.
        unsafe { libc::umask(old) };
        let listener = bound?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }
    #[cfg(not(unix))]
    {
        UnixListener::bind(path)
    }
}

/// True when the connecting process runs as this process's user or as root.
fn trusted(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        // SAFETY: geteuid cannot fail and has no side effects.
        Ok(cred) => cred.uid() == 0 || cred.uid() == unsafe { libc::geteuid() },
        Err(_) => false,
    }
}

async fn serve_one(engine: &Engine, stream: UnixStream) -> std::io::Result<()> {
    let trusted = trusted(&stream);
    let (read, mut write) = stream.into_split();
    let reply = if trusted {
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST);
        let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
        match read {
            Err(_) => refused("no whole request came within 10 seconds"),
            Ok(Err(e)) => refused(&format!("the request could not be read: {e}")),
            Ok(Ok(_)) if !line.ends_with('\n') => {
                refused("the request must be one line of JSON, at most 64 MiB, ended by a newline")
            }
            Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
                Ok(req) => handle(engine, req).await,
                Err(e) => refused(&format!("not a request this engine knows: {e}")),
            },
        }
    } else {
        // Nothing of a stranger's is read.
        refused("only the engine's own user or root may use its control socket")
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

fn refused(why: &str) -> ControlReply {
    ControlReply {
        error: Some(why.to_owned()),
        ..ControlReply::default()
    }
}

/// Carries out one request on the engine.
pub async fn handle(engine: &Engine, req: ControlRequest) -> ControlReply {
    let (id, done) = match req {
        ControlRequest::Start {
            device,
            peer,
            paths,
            bootstrap,
            lease,
            ask,
        } => {
            let role = if ask.is_some() {
                Role::Delegated
            } else {
                Role::Delegating
            };
            let info = ask.map(|a| DeviceInfo {
                dev_id: device.clone(),
                man: a.man,
                model: a.model,
                notify: a.push,
            });
            let started = engine
                .start_delegation(StartRequest {
                    peer,
                    dev_id: device,
                    role,
                    full: paths.is_empty(),
                    paths,
                    bootstrap,
                    lease,
                    device: info,
                    retry_of: None,
                })
                .await;
            match started {
                Ok(id) => (id, Ok(())),
                Err(e) => return refused(&e.to_string()),
            }
        }
        ControlRequest::Accept { id } => {
            let r = engine.accept(&id).await;
            (id, r)
        }
        ControlRequest::Decline { id, reason } => {
            let r = engine.decline(&id, &reason).await;
            (id, r)
        }
        ControlRequest::Abort { id } => {
            let r = engine.abort(&id).await;
            (id, r)
        }
        ControlRequest::Retry { id } => match engine.retry(&id).await {
            Ok(new) => (new, Ok(())),
            Err(e) => return refused(&e.to_string()),
        },
        ControlRequest::Import { devices } => {
            return match engine.dm().import(&devices).await {
                Ok(counts) => ControlReply {
                    enrolled: Some(counts),
                    ..ControlReply::default()
                },
                Err(e) => refused(&format!("nothing was enrolled: {e}")),
            };
        }
        ControlRequest::RemoveDevice { device } => {
            return match engine.remove_device(&device).await {
                Ok(()) => ControlReply::default(),
                Err(e) => refused(&e.to_string()),
            };
        }
        ControlRequest::Peers => {
            return ControlReply {
                peers: Some(peer_list(engine)),
                ..ControlReply::default()
            };
        }
        ControlRequest::AddPeer {
            server_id,
            url,
            cert_file,
            cert_pem,
            policy,
        } => {
            let new = NewPeer {
                server_id,
                base_url: url,
                cert_path: cert_file,
                policy,
            };
            return match engine.add_peer_pem(new, cert_pem.as_bytes()).await {
                Ok(_) => ControlReply {
                    peers: Some(peer_list(engine)),
                    ..ControlReply::default()
                },
                Err(e) => refused(&e.to_string()),
            };
        }
        ControlRequest::RemovePeer { server_id } => {
            return match engine.remove_peer(&server_id).await {
                Ok(()) => ControlReply {
                    peers: Some(peer_list(engine)),
                    ..ControlReply::default()
                },
                Err(e) => refused(&e.to_string()),
            };
        }
        ControlRequest::Show { id, wait_secs } => {
            let summary = match wait_secs {
                // Nothing to wait for: say so now, not after the whole wait.
                Some(_) if engine.summary(&id).is_none() => None,
                Some(s) => {
                    let wait = Duration::from_secs(s).min(MAX_WAIT);
                    engine.wait_done(&id, wait).await
                }
                None => engine.summary(&id),
            };
            return ControlReply {
                error: summary.is_none().then(|| {
                    format!(
                        "the engine holds no delegation {id} (an old one is in the store: \
                         `dmdeleg delegations list`)"
                    )
                }),
                delegation: summary.as_ref().map(DelegationView::of),
                id: Some(id),
                ..ControlReply::default()
            };
        }
    };
    ControlReply {
        error: done.err().map(|e| e.to_string()),
        delegation: engine.summary(&id).as_ref().map(DelegationView::of),
        id: Some(id),
        ..ControlReply::default()
    }
}

/// Sends one request to the engine listening on `path` and returns its answer (blocking; for
/// the command line). `wait` is how long the answer may take beyond the usual few seconds.
pub fn request(
    path: &Path,
    req: &ControlRequest,
    wait: Duration,
) -> Result<ControlReply, ControlError> {
    let io = |e: std::io::Error| ControlError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    check_length(path)?;
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(path.to_owned()));
        }
        Err(e) => return Err(io(e)),
    };
    stream
        .set_read_timeout(Some(wait + Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::BadReply(e.to_string()))?;
    line.push(b'\n');
    // An engine that refuses the request may answer before reading all of it and close:
    // its answer is what to show, not the broken pipe.
    let sent = stream.write_all(&line);
    let mut answer = String::new();
    let read = BufReader::new(stream.take(MAX_REPLY)).read_line(&mut answer);
    if answer.is_empty() {
        sent.map_err(io)?;
        read.map_err(io)?;
    }
    if answer.is_empty() {
        return Err(ControlError::BadReply(
            "the engine closed the connection".into(),
        ));
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::BadReply(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: ControlRequest = serde_json::from_str(
            r#"{"command":"start","device":"IMEI:1","peer":"dms2.example","paths":["./Vendor"]}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            ControlRequest::Start {
                device: "IMEI:1".into(),
                peer: "dms2.example".into(),
                paths: vec!["./Vendor".into()],
                bootstrap: false,
                lease: None,
                ask: None,
            }
        );
        let r: ControlRequest =
            serde_json::from_str(r#"{"command":"decline","id":"x","reason":"not ours"}"#).unwrap();
        assert_eq!(
            r,
            ControlRequest::Decline {
                id: "x".into(),
                reason: "not ours".into()
            }
        );
        for bad in [
            r#"{"command":"format_disk"}"#,
            r#"{"command":"abort"}"#,
            r#"{"command":"abort","id":"x","force":true}"#,
        ] {
            assert!(
                serde_json::from_str::<ControlRequest>(bad).is_err(),
                "{bad}"
            );
        }
        let back: ControlRequest =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_path_too_long_for_a_socket_is_named() {
        let long = PathBuf::from(format!("/tmp/{}/control.sock", "d".repeat(120)));
        let e = request(
            &long,
            &ControlRequest::Abort { id: "x".into() },
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(e, ControlError::PathTooLong(_)), "{e}");
        assert!(e.to_string().contains("control_socket"));
    }

    #[tokio::test]
    async fn the_socket_is_private_a_dead_one_is_replaced_a_live_one_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::store::TempDir::new("control-listen");
        let path = dir.file(SOCKET_FILE);
        // A file left by an engine that died: bound once, never listened on again.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = listen(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = listen(&path).await.unwrap_err();
        assert!(matches!(e, ControlError::InUse(_)), "{e}");
        assert!(e.to_string().contains("already running"), "{e}");
        // The refusal left the live socket alone.
        assert!(path.exists());
        drop(live);
    }

    #[tokio::test]
    async fn stopping_removes_its_own_file_only() {
        let dir = crate::store::TempDir::new("control-stop");
        let path = dir.file(SOCKET_FILE);
        let listener = listen(&path).await.unwrap();
        let server = ControlServer {
            file_id: file_id(&path),
            path: path.clone(),
            task: tokio::spawn(async move {
                let _keep = listener;
                std::future::pending::<()>().await
            }),
        };
        // Another engine took the path since (the file was replaced).
        std::fs::remove_file(&path).unwrap();
        let other = listen(&path).await.unwrap();
        server.stop();
        assert!(path.exists(), "the later engine's socket stays");
        let ours = ControlServer {
            file_id: file_id(&path),
            path: path.clone(),
            task: tokio::spawn(async move {
                let _keep = other;
                std::future::pending::<()>().await
            }),
        };
        ours.stop();
        assert!(!path.exists(), "its own file is removed");
    }

    #[test]
    fn nothing_listening_says_how_to_start_the_engine() {
        let dir = crate::store::TempDir::new("control-none");
        let path = dir.file(SOCKET_FILE);
        let e = request(
            &path,
            &ControlRequest::Abort { id: "x".into() },
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(matches!(e, ControlError::NotRunning(_)), "{e}");
        assert!(e.to_string().contains("dmdeleg serve"), "{e}");
    }
}
