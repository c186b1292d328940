//! The engine's configuration file (TOML), checked at start: an unknown key, a missing one or
//! a bad value is reported with its key and line, and nothing starts. [`Config::load`] checks
//! the text; [`Config::engine_config`] then reads the certificates and keys it names (a file
//! that is missing or unusable is reported with its key, its line and its path) and builds the
//! [`EngineConfig`] that `dmdeleg serve` starts.
//!
//! ```toml
//! server_id = "dms1.example"              # this server's ServerID
//! data_dir = "/var/lib/dmdeleg"           # optional; the platform's data directory otherwise
//! control_socket = "/run/dmdeleg/control.sock"  # optional; control.sock in data_dir otherwise
//!
//! [devices]                               # the device endpoint
//! listen = "0.0.0.0:8443"
//! path = "/dm"                            # optional, default /dm
//! max_msg_size = 65536                    # optional
//! tls_cert = "/etc/dmdeleg/dms1.pem"      # optional: HTTPS when both are given
//! tls_key = "/etc/dmdeleg/dms1.key"
//!
//! [peer_endpoint]                         # optional; needed to delegate
//! listen = "0.0.0.0:7443"
//! cert = "/etc/dmdeleg/dms1.example.pem"  # this server's certificate, TLS server and client
//! key = "/etc/dmdeleg/dms1.example.key"
//! ca = ["/etc/dmdeleg/ca.pem"]            # the CAs peers' certificates chain to
//!
//! [bootstrap]                             # optional; the delegated side of the bootstrap approach
//! listen = "0.0.0.0:7444"
//! public_url = "https://dms1.example:7444"  # optional
//! token_ttl_secs = 900                    # optional
//! tls = true                              # optional, default true (peer_endpoint's cert and key)
//!
//! [deadlines]                             # optional, seconds
//! peer_secs = 60
//!
//! [[peers]]
//! server_id = "dms2.example"
//! url = "https://dms2.example:7443"
//! name = "dms2.example"                   # the name its certificate carries; or
//! # cert = "/etc/dmdeleg/dms2.example.pem"  # its pinned certificate
//! policy = "accept"                       # accept | decline | operator (default)
//! ```
//!
//! Relative paths in a file read by [`Config::load`] are relative to the file's directory.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::delegation::machine::Deadlines;
use crate::engine::bootstrap::DEFAULT_TTL_MS;
use crate::engine::device_endpoint::DeviceEndpointConfig;
use crate::engine::peers::{PeerAuth, PeerInfo, Policy};
use crate::engine::service::{BootstrapSetup, EngineConfig, PeerSetup};
use crate::tls;

/// The database's file name inside the data directory.
pub const DB_FILE: &str = "dmdeleg.db";

/// How long the peer client waits for a whole exchange.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a Package #0 push may take.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting may take, for either client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The TOML is invalid, or a key is unknown, missing or of the wrong type, or a value
    /// breaks a rule (the message names the key and the line).
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What and where.
        reason: String,
    },
    /// A key names a file that is missing or unusable (a certificate that is not PEM, a key
    /// that does not fit its certificate).
    #[error("{}{key}{}: {reason}", file_prefix(.file), line_suffix(.line))]
    Unusable {
        /// The configuration file, when the configuration came from one.
        file: Option<PathBuf>,
        /// The key, e.g. `peers[0].cert`.
        key: String,
        /// Its line in the configuration file.
        line: Option<usize>,
        /// What is wrong (names the path of the file the key gives).
        reason: String,
    },
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

fn line_suffix(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// The device endpoint's settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DevicesSection {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// URL path devices post to.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest message accepted.
    #[serde(default = "default_max_msg")]
    pub max_msg_size: u64,
    /// Server certificate (PEM) for HTTPS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn default_path() -> String {
    "/dm".to_owned()
}

fn default_max_msg() -> u64 {
    65_536
}

/// The peer endpoint: where peers reach this server over mutual TLS, and the identity this
/// server presents to them.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerEndpointSection {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// This server's certificate chain (PEM, leaf first): the TLS server certificate of the
    /// peer endpoint and the client certificate presented to peers.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CAs (PEM files) whose certificates peers present, and whose servers this server
    /// trusts when it calls a peer.
    pub ca: Vec<PathBuf>,
}

/// The bootstrap endpoint (the delegated side of the bootstrap approach).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSection {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// The base URL given to devices, when not `https://` plus the listening address (behind
    /// a proxy, or a wildcard address).
    #[serde(default)]
    pub public_url: Option<String>,
    /// How long a bootstrap URL stays valid.
    #[serde(default = "default_token_ttl")]
    pub token_ttl_secs: u64,
    /// HTTPS with the peer endpoint's certificate and key (default); plain HTTP when false.
    #[serde(default = "yes")]
    pub tls: bool,
}

fn default_token_ttl() -> u64 {
    (DEFAULT_TTL_MS / 1000) as u64
}

fn yes() -> bool {
    true
}

/// Step deadlines in seconds; a missing one keeps its default ([`Deadlines::default`]).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeadlinesSection {
    /// For the peer to answer a message.
    #[serde(default)]
    pub peer_secs: Option<u64>,
    /// For a device to answer commands.
    #[serde(default)]
    pub device_secs: Option<u64>,
    /// For a device to fetch its bootstrap and the delegated server to confirm.
    #[serde(default)]
    pub bootstrap_secs: Option<u64>,
    /// For an operator to decide on a request.
    #[serde(default)]
    pub decision_secs: Option<u64>,
    /// Between retries of an undo the device did not take.
    #[serde(default)]
    pub undo_retry_secs: Option<u64>,
}

impl DeadlinesSection {
    fn entries(&self) -> [(&'static str, Option<u64>); 5] {
        [
            ("peer_secs", self.peer_secs),
            ("device_secs", self.device_secs),
            ("bootstrap_secs", self.bootstrap_secs),
            ("decision_secs", self.decision_secs),
            ("undo_retry_secs", self.undo_retry_secs),
        ]
    }

    /// The deadlines, defaults filled in.
    pub fn to_deadlines(&self) -> Deadlines {
        let d = Deadlines::default();
        let ms = |secs: Option<u64>, default: i64| {
            secs.map_or(default, |s| {
                i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
            })
        };
        Deadlines {
            peer_ms: ms(self.peer_secs, d.peer_ms),
            device_ms: ms(self.device_secs, d.device_ms),
            bootstrap_ms: ms(self.bootstrap_secs, d.bootstrap_ms),
            decision_ms: ms(self.decision_secs, d.decision_ms),
            undo_retry_ms: ms(self.undo_retry_secs, d.undo_retry_ms),
        }
    }
}

/// One peer server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Its ServerID.
    pub server_id: String,
    /// Its peer endpoint's base URL (`https://host:port`).
    pub url: String,
    /// The DNS name or IP address its certificate (issued by a CA of `peer_endpoint.ca`)
    /// must carry. When neither `name` nor `cert` is given, its ServerID.
    #[serde(default)]
    pub name: Option<String>,
    /// Its certificate (PEM), pinned: only this exact certificate is the peer's (it must still
    /// chain to a CA of `peer_endpoint.ca`).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// What happens to its requests.
    #[serde(default)]
    pub policy: Policy,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This server's ServerID.
    pub server_id: String,
    /// Where the database lives.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The operator's control socket of `dmdeleg serve` (default: [`SOCKET_FILE`] in the
    /// data directory).
    ///
    /// [`SOCKET_FILE`]: crate::engine::control::SOCKET_FILE
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// The device endpoint.
    pub devices: DevicesSection,
    /// The peer endpoint (none: this server takes part in no delegation).
    #[serde(default)]
    pub peer_endpoint: Option<PeerEndpointSection>,
    /// The bootstrap endpoint.
    #[serde(default)]
    pub bootstrap: Option<BootstrapSection>,
    /// Step deadlines.
    #[serde(default)]
    pub deadlines: DeadlinesSection,
    /// The peer servers.
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// Where the text came from, to name lines in later errors.
    #[serde(skip)]
    origin: Origin,
}

/// The file a configuration was read from and the line of each key in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Origin {
    file: Option<PathBuf>,
    /// `devices.listen`, `peers[0].url`, `peers[0]`, ... to the line (from 1).
    lines: BTreeMap<String, usize>,
}

/// The line of each key (and of each array item) in TOML text.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    use toml::de::{DeTable, DeValue};
    fn line(text: &str, offset: usize) -> usize {
        text.get(..offset)
            .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count())
            + 1
    }
    fn walk(text: &str, prefix: &str, v: &DeValue<'_>, out: &mut BTreeMap<String, usize>) {
        match v {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    let key = if prefix.is_empty() {
                        k.get_ref().to_string()
                    } else {
                        format!("{prefix}.{}", k.get_ref())
                    };
                    out.entry(key.clone())
                        .or_insert_with(|| line(text, k.span().start));
                    walk(text, &key, v.get_ref(), out);
                }
            }
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    let key = format!("{prefix}[{i}]");
                    out.insert(key.clone(), line(text, item.span().start));
                    walk(text, &key, item.get_ref(), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(doc) = DeTable::parse(text) {
        walk(text, "", &DeValue::Table(doc.into_inner()), &mut out);
    }
    out
}

impl Origin {
    /// The line of `key`, else of the nearest enclosing key given.
    fn line(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(l) = self.lines.get(k) {
                return Some(*l);
            }
            k = &k[..k.rfind(['.', '['])?];
        }
    }

    /// "`key` (line N): why".
    fn at(&self, key: &str, why: impl std::fmt::Display) -> String {
        format!("{key}{}: {why}", line_suffix(&self.line(key)))
    }

    fn unusable(&self, key: &str, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError::Unusable {
            file: self.file.clone(),
            key: key.to_owned(),
            line: self.line(key),
            reason: reason.to_string(),
        }
    }
}

/// Checks a peer base URL: absolute, https, with a host, nothing after the path.
fn check_https_url(url: &str) -> Result<(), String> {
    let u = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if u.scheme() != "https" {
        return Err(format!(
            "`{url}` must be https (peers talk over mutual TLS)"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{url}` has no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("`{url}` must not have a query or fragment"));
    }
    Ok(())
}

impl Config {
    /// Reads and checks a configuration file. Relative paths in it are taken relative to the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let mut cfg = Config::parse(&text).map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        cfg.origin.file = Some(path.to_owned());
        if let Some(base) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    /// Makes every relative path in the configuration relative to `base`.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(d) = &mut self.data_dir {
            fix(d);
        }
        if let Some(c) = &mut self.control_socket {
            fix(c);
        }
        if let Some(c) = &mut self.devices.tls_cert {
            fix(c);
        }
        if let Some(k) = &mut self.devices.tls_key {
            fix(k);
        }
        if let Some(pe) = &mut self.peer_endpoint {
            fix(&mut pe.cert);
            fix(&mut pe.key);
            pe.ca.iter_mut().for_each(fix);
        }
        for p in &mut self.peers {
            if let Some(c) = &mut p.cert {
                fix(c);
            }
        }
    }

    /// Parses and checks configuration text (paths are kept as written).
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.origin.lines = key_lines(text);
        cfg.check()?;
        Ok(cfg)
    }

    /// The rules a value can break beyond its type.
    fn check(&self) -> Result<(), String> {
        let o = &self.origin;
        if self.server_id.trim().is_empty() || !crate::dm::acl::is_valid_server_id(&self.server_id)
        {
            return Err(o.at(
                "server_id",
                format_args!(
                    "`{}` is not a valid ServerID (no spaces or = & * +)",
                    self.server_id
                ),
            ));
        }
        if !self.devices.path.starts_with('/') {
            return Err(o.at(
                "devices.path",
                format_args!("`{}` must start with /", self.devices.path),
            ));
        }
        if self.devices.tls_cert.is_some() != self.devices.tls_key.is_some() {
            let given = if self.devices.tls_cert.is_some() {
                "devices.tls_cert"
            } else {
                "devices.tls_key"
            };
            return Err(o.at(given, "devices.tls_cert and devices.tls_key go together"));
        }
        if let Some(pe) = &self.peer_endpoint
            && pe.ca.is_empty()
        {
            return Err(o.at(
                "peer_endpoint.ca",
                "give at least one CA (PEM file) that peers' certificates chain to",
            ));
        }
        if let Some(b) = &self.bootstrap {
            if let Some(u) = &b.public_url {
                let ok = url::Url::parse(u)
                    .is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.has_host());
                if !ok {
                    return Err(o.at(
                        "bootstrap.public_url",
                        format_args!("`{u}` is not an http(s) URL with a host"),
                    ));
                }
            }
            if b.token_ttl_secs == 0 {
                return Err(o.at("bootstrap.token_ttl_secs", "must be at least 1"));
            }
            if b.tls && self.peer_endpoint.is_none() {
                return Err(o.at(
                    "bootstrap.tls",
                    "HTTPS uses [peer_endpoint]'s cert and key: add [peer_endpoint] or set tls = false",
                ));
            }
        }
        for (name, secs) in self.deadlines.entries() {
            if secs == Some(0) {
                return Err(o.at(&format!("deadlines.{name}"), "must be at least 1"));
            }
        }
        let mut listens = vec![("devices.listen", self.devices.listen)];
        if let Some(pe) = &self.peer_endpoint {
            listens.push(("peer_endpoint.listen", pe.listen));
        }
        if let Some(b) = &self.bootstrap {
            listens.push(("bootstrap.listen", b.listen));
        }
        for (i, (key, addr)) in listens.iter().enumerate() {
            if addr.port() == 0 {
                continue;
            }
            if let Some((other, _)) = listens[..i].iter().find(|(_, a)| a == addr) {
                return Err(o.at(key, format_args!("{addr} is already {other}")));
            }
        }
        if !self.peers.is_empty() && self.peer_endpoint.is_none() {
            return Err(o.at(
                "peers",
                "peers need [peer_endpoint] (its certificate, key and CAs)",
            ));
        }
        let mut seen = HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            let key = |k: &str| format!("peers[{i}].{k}");
            if p.server_id.trim().is_empty() || !crate::dm::acl::is_valid_server_id(&p.server_id) {
                return Err(o.at(
                    &key("server_id"),
                    format_args!(
                        "`{}` is not a valid ServerID (no spaces or = & * +)",
                        p.server_id
                    ),
                ));
            }
            if p.server_id == self.server_id {
                return Err(o.at(
                    &key("server_id"),
                    format_args!("`{}` is this server's own ServerID", p.server_id),
                ));
            }
            if !seen.insert(p.server_id.as_str()) {
                return Err(o.at(
                    &key("server_id"),
                    format_args!("peer `{}` is configured twice", p.server_id),
                ));
            }
            check_https_url(&p.url).map_err(|e| o.at(&key("url"), e))?;
            if p.name.is_some() && p.cert.is_some() {
                return Err(o.at(
                    &format!("peers[{i}]"),
                    "give `name` (a certificate from a trusted CA for that name) or `cert` (a pinned certificate), not both",
                ));
            }
            if p.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(o.at(&key("name"), "must not be empty"));
            }
        }
        Ok(())
    }

    /// The data directory: the configured one, else the platform's (e.g.
    /// `~/.local/share/dmdeleg`).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// Where `dmdeleg serve` listens for operator commands, and where the command line
    /// finds it.
    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| self.data_dir().join(crate::engine::control::SOCKET_FILE))
    }

    /// The database file: [`DB_FILE`] in the data directory.
    pub fn database(&self) -> PathBuf {
        self.data_dir().join(DB_FILE)
    }

    /// Settings that work but are likely not what was meant, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(b) = &self.bootstrap
            && b.public_url.is_none()
            && b.listen.ip().is_unspecified()
        {
            out.push(self.origin.at(
                "bootstrap.listen",
                format_args!(
                    "devices will be sent bootstrap URLs with host {}, which they cannot reach: set bootstrap.public_url",
                    b.listen.ip()
                ),
            ));
        }
        if self.peer_endpoint.is_some() && self.peers.is_empty() {
            out.push(self.origin.at(
                "peer_endpoint",
                "no [[peers]]: every peer's request will be refused",
            ));
        }
        out
    }

    /// The line of a key in the file (`peers[0].cert`), when known.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.origin.line(key)
    }

    /// The peers as the engine knows them (pinned certificates are read and fingerprinted).
    pub fn peer_infos(&self) -> Result<Vec<PeerInfo>, ConfigError> {
        let mut out = Vec::with_capacity(self.peers.len());
        for (i, p) in self.peers.iter().enumerate() {
            let auth = match (&p.name, &p.cert) {
                (_, Some(cert)) => {
                    let key = format!("peers[{i}].cert");
                    let certs =
                        tls::load_certs_file(cert).map_err(|e| self.origin.unusable(&key, e))?;
                    PeerAuth::Pinned(tls::cert_fingerprint_sha256(&certs[0]))
                }
                (Some(name), None) => PeerAuth::Name(name.clone()),
                (None, None) => PeerAuth::Name(p.server_id.clone()),
            };
            out.push(PeerInfo {
                server_id: p.server_id.clone(),
                base_url: p.url.trim_end_matches('/').to_owned(),
                auth,
                policy: p.policy,
            });
        }
        Ok(out)
    }

    /// Reads every certificate and key the configuration names and builds the engine's
    /// configuration: HTTPS for devices when configured, the mutual-TLS peer endpoint and
    /// client, the bootstrap endpoint, the store at [`Config::database`].
    pub fn engine_config(&self) -> Result<EngineConfig, ConfigError> {
        tls::install_crypto_provider();
        let o = &self.origin;
        let device_tls = match (&self.devices.tls_cert, &self.devices.tls_key) {
            (Some(cert), Some(key)) => {
                let chain =
                    tls::load_certs_file(cert).map_err(|e| o.unusable("devices.tls_cert", e))?;
                let k = tls::load_key_file(key).map_err(|e| o.unusable("devices.tls_key", e))?;
                Some(tls::server_config(chain, k).map_err(|e| {
                    o.unusable(
                        "devices.tls_key",
                        format_args!(
                            "{} and {} do not make a TLS identity: {e}",
                            cert.display(),
                            key.display()
                        ),
                    )
                })?)
            }
            _ => None,
        };
        let mut identity = None;
        let peer = match &self.peer_endpoint {
            Some(pe) => {
                let chain = tls::load_certs_file(&pe.cert)
                    .map_err(|e| o.unusable("peer_endpoint.cert", e))?;
                let key =
                    tls::load_key_file(&pe.key).map_err(|e| o.unusable("peer_endpoint.key", e))?;
                let mut roots = Vec::new();
                for (i, ca) in pe.ca.iter().enumerate() {
                    let certs = tls::load_certs_file(ca)
                        .map_err(|e| o.unusable(&format!("peer_endpoint.ca[{i}]"), e))?;
                    roots.extend(certs);
                }
                let mismatch = |e: tls::TlsError| {
                    o.unusable(
                        "peer_endpoint.key",
                        format_args!(
                            "{} and {} do not make a TLS identity: {e}",
                            pe.cert.display(),
                            pe.key.display()
                        ),
                    )
                };
                let trust =
                    tls::PeerTrust::new(&roots).map_err(|e| o.unusable("peer_endpoint.ca", e))?;
                let server_tls =
                    tls::mtls_server_config_with(chain.clone(), key.clone_key(), &trust)
                        .map_err(mismatch)?;
                let cert_pem = std::fs::read(&pe.cert).map_err(|e| {
                    o.unusable(
                        "peer_endpoint.cert",
                        format_args!("could not read {}: {e}", pe.cert.display()),
                    )
                })?;
                let key_pem = std::fs::read(&pe.key).map_err(|e| {
                    o.unusable(
                        "peer_endpoint.key",
                        format_args!("could not read {}: {e}", pe.key.display()),
                    )
                })?;
                let client = tls::peer_client_builder(&trust, &cert_pem, &key_pem)
                    .map_err(mismatch)?
                    .pool_max_idle_per_host(64)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(PEER_TIMEOUT)
                    .build()
                    .map_err(|e| mismatch(e.into()))?;
                identity = Some((chain, key));
                Some(PeerSetup {
                    listen: pe.listen,
                    trust,
                    server_tls,
                    client,
                    peers: self.peer_infos()?,
                })
            }
            None => None,
        };
        let bootstrap = match &self.bootstrap {
            Some(b) => {
                let tls = match (&identity, b.tls) {
                    (Some((chain, key)), true) => Some(
                        tls::server_config(chain.clone(), key.clone_key())
                            .map_err(|e| o.unusable("peer_endpoint.key", e))?,
                    ),
                    _ => None,
                };
                Some(BootstrapSetup {
                    listen: b.listen,
                    tls,
                    token_ttl_ms: i64::try_from(b.token_ttl_secs.saturating_mul(1000))
                        .unwrap_or(i64::MAX),
                    public_url: b
                        .public_url
                        .as_ref()
                        .map(|u| u.trim_end_matches('/').to_owned()),
                })
            }
            None => None,
        };
        let push_client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(PUSH_TIMEOUT)
            .build()
            .map_err(|e| o.unusable("devices", format_args!("the push client: {e}")))?;
        Ok(EngineConfig {
            server_id: self.server_id.clone(),
            store_path: self.database(),
            devices_listen: self.devices.listen,
            device_endpoint: DeviceEndpointConfig {
                path: self.devices.path.clone(),
                max_msg_size: self.devices.max_msg_size,
                ..DeviceEndpointConfig::default()
            },
            device_tls,
            peer,
            bootstrap,
            deadlines: self.deadlines.to_deadlines(),
            push_client,
        })
    }
}

/// The platform's data directory for dmdeleg, or `./dmdeleg-data` when none is known.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("org", "dmdeleg", "dmdeleg")
        .map(|d| d.data_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from("dmdeleg-data"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_parses_and_errors_name_the_key_and_line() {
        let good = "server_id = \"dms1.example\"\n[devices]\nlisten = \"127.0.0.1:8080\"\n";
        let cfg = Config::parse(good).unwrap();
        assert_eq!(cfg.devices.path, "/dm");
        let unknown = format!("{good}colour = \"blue\"\n");
        let err = Config::parse(&unknown).unwrap_err();
        assert!(err.contains("colour") && err.contains("line 4"), "{err}");
        let bad_addr = "server_id = \"x\"\n[devices]\nlisten = \"nowhere\"\n";
        let err = Config::parse(bad_addr).unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let missing = "server_id = \"x\"\n";
        assert!(Config::parse(missing).unwrap_err().contains("devices"));
        let bad_id = "server_id = \"a b\"\n[devices]\nlisten = \"127.0.0.1:1\"\n";
        assert!(Config::parse(bad_id).unwrap_err().contains("server_id"));
    }

    const FULL: &str = r#"server_id = "dms1.example"
data_dir = "/var/lib/dmdeleg"

[devices]
listen = "0.0.0.0:8443"

[peer_endpoint]
listen = "0.0.0.0:7443"
cert = "/etc/dmdeleg/dms1.example.pem"
key = "/etc/dmdeleg/dms1.example.key"
ca = ["/etc/dmdeleg/ca.pem"]

[bootstrap]
listen = "0.0.0.0:7444"
public_url = "https://dms1.example:7444"
token_ttl_secs = 900
tls = true

[deadlines]
peer_secs = 60
device_secs = 300
bootstrap_secs = 600
decision_secs = 86400
undo_retry_secs = 30

[[peers]]
server_id = "dms2.example"
url = "https://dms2.example:7443"
name = "dms2.example"
policy = "accept"

[[peers]]
server_id = "dms3.example"
url = "https://dms3.example:7443"
cert = "/etc/dmdeleg/dms3.example.pem"

[[peers]]
server_id = "dms4.example"
url = "https://dms4.example:7443/"
policy = "decline"
"#;

    /// FULL with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(FULL.contains(from), "{from}");
        FULL.replacen(from, to, 1)
    }

    #[test]
    fn a_full_file_parses_with_every_key() {
        let cfg = Config::parse(FULL).unwrap();
        let pe = cfg.peer_endpoint.as_ref().unwrap();
        assert_eq!(pe.listen.port(), 7443);
        assert_eq!(pe.ca, vec![PathBuf::from("/etc/dmdeleg/ca.pem")]);
        let b = cfg.bootstrap.as_ref().unwrap();
        assert_eq!(b.public_url.as_deref(), Some("https://dms1.example:7444"));
        assert!(b.tls);
        assert_eq!(cfg.deadlines.to_deadlines(), Deadlines::default());
        assert_eq!(cfg.peers.len(), 3);
        assert_eq!(cfg.peers[0].policy, Policy::Accept);
        assert_eq!(cfg.peers[1].policy, Policy::Operator, "the default");
        assert_eq!(cfg.peers[2].policy, Policy::Decline);
        assert_eq!(cfg.database(), PathBuf::from("/var/lib/dmdeleg/dmdeleg.db"));
        assert_eq!(cfg.line_of("peers[1].cert"), Some(35));
        assert_eq!(cfg.line_of("peer_endpoint.ca"), Some(11));
        assert!(cfg.warnings().is_empty());
        let wild =
            Config::parse(&edit("public_url = \"https://dms1.example:7444\"\n", "")).unwrap();
        let w = wild.warnings();
        assert!(
            w.len() == 1 && w[0].contains("bootstrap.listen (line 14)"),
            "{w:?}"
        );
        // Names: given, or the ServerID when there is no pinned certificate.
        let mut named = cfg.clone();
        named.peers.remove(1);
        let infos = named.peer_infos().unwrap();
        assert_eq!(infos[0].auth, PeerAuth::Name("dms2.example".into()));
        assert_eq!(infos[1].auth, PeerAuth::Name("dms4.example".into()));
        assert_eq!(infos[1].base_url, "https://dms4.example:7443");
    }

    #[test]
    fn deadlines_default_one_by_one() {
        let text = edit("peer_secs = 60\ndevice_secs = 300\n", "device_secs = 5\n");
        let d = Config::parse(&text).unwrap().deadlines.to_deadlines();
        assert_eq!(d.device_ms, 5_000);
        assert_eq!(d.peer_ms, Deadlines::default().peer_ms);
        let minimal = "server_id = \"a\"\n[devices]\nlisten = \"127.0.0.1:1\"\n";
        let cfg = Config::parse(minimal).unwrap();
        assert_eq!(cfg.deadlines.to_deadlines(), Deadlines::default());
        assert!(cfg.peer_endpoint.is_none() && cfg.bootstrap.is_none() && cfg.peers.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_in_every_section() {
        for (after, line) in [
            ("ca = [\"/etc/dmdeleg/ca.pem\"]\n", 12),
            ("tls = true\n", 18),
            ("undo_retry_secs = 30\n", 25),
            ("policy = \"accept\"\n", 31),
        ] {
            let text = edit(after, &format!("{after}colour = \"blue\"\n"));
            let err = Config::parse(&text).unwrap_err();
            assert!(
                err.contains("colour") && err.contains(&format!("line {line}")),
                "{err}"
            );
        }
    }

    /// Each broken file, the key its error must name and the line.
    #[test]
    fn rule_breaks_name_the_key_and_line() {
        let no_endpoint = {
            let start = FULL.find("[peer_endpoint]").unwrap();
            let end = FULL.find("[bootstrap]").unwrap();
            format!("{}{}", &FULL[..start], &FULL[end..]).replace("tls = true", "tls = false")
        };
        let cases = [
            (
                edit(
                    "url = \"https://dms2.example:7443\"",
                    "url = \"http://dms2.example:7443\"",
                ),
                "peers[0].url",
                28,
            ),
            (
                edit("url = \"https://dms3.example:7443\"", "url = \"not a url\""),
                "peers[1].url",
                34,
            ),
            (
                edit(
                    "server_id = \"dms3.example\"",
                    "server_id = \"dms2.example\"",
                ),
                "peers[1].server_id",
                33,
            ),
            (
                edit(
                    "server_id = \"dms4.example\"",
                    "server_id = \"dms1.example\"",
                ),
                "peers[2].server_id",
                38,
            ),
            (
                edit("server_id = \"dms4.example\"", "server_id = \"dms 4\""),
                "peers[2].server_id",
                38,
            ),
            (
                edit(
                    "cert = \"/etc/dmdeleg/dms3.example.pem\"",
                    "cert = \"/etc/dmdeleg/dms3.example.pem\"\nname = \"dms3.example\"",
                ),
                "peers[1]",
                32,
            ),
            (no_endpoint, "peers", 20),
            (
                edit("ca = [\"/etc/dmdeleg/ca.pem\"]", "ca = []"),
                "peer_endpoint.ca",
                11,
            ),
            (
                edit("listen = \"0.0.0.0:7444\"", "listen = \"0.0.0.0:7443\""),
                "bootstrap.listen",
                14,
            ),
            (
                edit(
                    "public_url = \"https://dms1.example:7444\"",
                    "public_url = \"dms1\"",
                ),
                "bootstrap.public_url",
                15,
            ),
            (
                edit("peer_secs = 60", "peer_secs = 0"),
                "deadlines.peer_secs",
                20,
            ),
            (
                edit("policy = \"accept\"", "policy = \"maybe\""),
                "policy",
                30,
            ),
        ];
        for (text, key, line) in cases {
            let err = Config::parse(&text).unwrap_err();
            assert!(
                err.contains(key) && err.contains(&format!("line {line}")),
                "want {key} at line {line}: {err}"
            );
        }
    }

    #[test]
    fn missing_files_name_the_key_the_line_and_the_path() {
        let cfg = Config::parse(FULL).unwrap();
        let err = cfg.engine_config().unwrap_err().to_string();
        assert!(
            err.contains("peer_endpoint.cert")
                && err.contains("line 9")
                && err.contains("/etc/dmdeleg/dms1.example.pem"),
            "{err}"
        );
    }

    #[test]
    fn load_builds_an_engine_config_with_paths_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("dmdeleg-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        tls::init_dir(&dir.join("pki"), &["dms1.example", "dms2.example"]).unwrap();
        let text = FULL
            .replace("/etc/dmdeleg/", "pki/")
            .replace("/var/lib/dmdeleg", "data")
            .replace("dms3.example.pem", "dms2.example.pem");
        let file = dir.join("dms1.toml");
        std::fs::write(&file, &text).unwrap();
        let cfg = Config::load(&file).unwrap();
        assert_eq!(cfg.database(), dir.join("data").join(DB_FILE));
        assert_eq!(
            cfg.control_socket(),
            dir.join("data").join(crate::engine::control::SOCKET_FILE),
            "by default beside the database"
        );
        let moved = dir.join("moved.toml");
        std::fs::write(&moved, format!("control_socket = \"run/ctl.sock\"\n{text}")).unwrap();
        assert_eq!(
            Config::load(&moved).unwrap().control_socket(),
            dir.join("run/ctl.sock"),
            "relative to the file"
        );
        let ec = cfg.engine_config().unwrap();
        let peer = ec.peer.as_ref().unwrap();
        assert!(matches!(&peer.peers[1].auth, PeerAuth::Pinned(fp) if fp.len() == 95));
        assert!(ec.bootstrap.as_ref().unwrap().tls.is_some());
        assert_eq!(ec.bootstrap.as_ref().unwrap().token_ttl_ms, 900_000);
        // A pinned certificate that is not there: its key, line and path.
        std::fs::remove_file(dir.join("pki/dms2.example.pem")).unwrap();
        let err = Config::load(&file)
            .unwrap()
            .engine_config()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dms1.toml")
                && err.contains("peers[1].cert")
                && err.contains("line 35")
                && err.contains("dms2.example.pem"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
