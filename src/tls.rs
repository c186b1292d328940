//! TLS plumbing: lab certificates, PEM loading, rustls server and client configurations, and an
//! HTTPS server for axum routers that shows handlers the peer's certificate.
//!
//! DESIGN.md sections 1 and 3 ask for two kinds of endpoint:
//! - the **device endpoint**, HTTP or HTTPS with a server certificate only ([`server_config`]);
//! - the **peer endpoint**, HTTPS with mutual TLS 1.3, where the client certificate is required and
//!   must chain to a configured root ([`mtls_server_config`]). The handler finds the authenticated
//!   peer's chain in the request extensions as [`PeerCertificates`] and checks it against the
//!   configured peer, for example with [`cert_fingerprint_sha256`] or [`cert_is_valid_for_name`].
//!
//! One crypto provider is compiled in: ring (STACK.md, "One crypto provider"). Every configuration
//! built here names it explicitly, and [`install_crypto_provider`] makes it the process default
//! for the code that asks for the default (reqwest does).
//!
//! The lab PKI ([`LabPki`], [`init_dir`]) issues ECDSA P-256 certificates valid for about a year
//! and usable both as server and as client certificates, for `dmdeleg certs init DIR` and tests.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete the TLS handshake before the server gives up.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the lab certificates are valid, from the day before they are issued.
const LAB_VALIDITY: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// Everything that can go wrong in this module.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("could not read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file or directory could not be written.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// [`init_dir`] refuses to replace a file.
    #[error("{0} already exists; remove it first or choose another directory")]
    AlreadyExists(PathBuf),
    /// PEM text that could not be decoded.
    #[error("{what} is not valid PEM: {detail}")]
    BadPem {
        /// Where the text came from (a file name, or "PEM input").
        what: String,
        /// What the decoder said.
        detail: String,
    },
    /// PEM text without any `CERTIFICATE` section.
    #[error("no certificate found in {0}")]
    NoCertificate(String),
    /// PEM text without any private key section.
    #[error("no private key found in {0}")]
    NoPrivateKey(String),
    /// A certificate that cannot be used as a trusted root.
    #[error("trusted root certificate number {index} is unusable: {detail}")]
    BadRoot {
        /// Position in the list given, from 1.
        index: usize,
        /// Why.
        detail: String,
    },
    /// No trusted roots were given where some are needed.
    #[error("no trusted root certificates were given")]
    NoRoots,
    /// A name that cannot be used for a lab certificate or its files.
    #[error("{0:?} cannot be used as a certificate name")]
    BadName(String),
    /// The certificate generator failed.
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate, key or settings.
    #[error("the TLS settings were refused: {0}")]
    Config(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("could not set up client certificate checking: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// reqwest refused the roots or the identity, or could not build the client.
    #[error("could not set up the HTTPS client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The one crypto provider of this crate: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default rustls crypto provider.
///
/// Call it first thing in `main` and in test setup. Calling it again, or after another part of
/// the process installed a provider, does nothing.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Another thread may win the race; that is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

// ---------------------------------------------------------------------------------------------
// Lab certificates
// ---------------------------------------------------------------------------------------------

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, one `CERTIFICATE` PEM section.
    pub cert_pem: String,
    /// The private key, one PKCS#8 `PRIVATE KEY` PEM section.
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

impl Issued {
    /// The private key, DER, for [`server_config`] and [`mtls_server_config`].
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        load_key(self.key_pem.as_bytes())
    }

    /// The certificate chain (this one certificate), for [`server_config`].
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert_der.clone()]
    }

    /// Certificate then key, the PEM form [`reqwest_client`] takes as an identity.
    pub fn identity_pem(&self) -> (&[u8], &[u8]) {
        (self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("fingerprint", &cert_fingerprint_sha256(&self.cert_der))
            .finish_non_exhaustive()
    }
}

/// A throwaway certificate authority for the lab and for tests.
pub struct LabPki {
    /// The CA certificate, PEM: what clients and servers trust.
    pub ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    ca_key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for LabPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabPki")
            .field(
                "ca_fingerprint",
                &cert_fingerprint_sha256(&self.ca_cert_der),
            )
            .finish_non_exhaustive()
    }
}

impl LabPki {
    /// Creates a new CA with a fresh key whose subject common name is `ca_name`.
    pub fn generate(ca_name: &str) -> Result<LabPki, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, ca_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params)?;
        let cert = params.self_signed(&key)?;
        let ca_key_pem = key.serialize_pem();
        Ok(LabPki {
            ca_cert_pem: cert.pem(),
            ca_cert_der: cert.der().clone(),
            ca_key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, DER: the root to trust.
    pub fn ca_cert_der(&self) -> CertificateDer<'static> {
        self.ca_cert_der.clone()
    }

    /// Issues a certificate for `common_name`, usable by a server and by a client.
    ///
    /// `sans` become the subject alternative names: strings that parse as IP addresses become IP
    /// SANs, the others DNS names. With no `sans`, `common_name` is the only SAN (TLS checks the
    /// SANs, never the common name).
    pub fn issue(&self, common_name: &str, sans: &[&str]) -> Result<Issued, TlsError> {
        let sans: Vec<String> = if sans.is_empty() {
            vec![common_name.to_owned()]
        } else {
            sans.iter().map(|s| (*s).to_owned()).collect()
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        })
    }
}

/// Valid from the start of yesterday (some slack for clocks) for about a year; random serial.
fn set_validity(params: &mut CertificateParams) -> Result<(), TlsError> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let day = 24 * 60 * 60;
    let yesterday = Duration::from_secs((since_epoch.as_secs() / day).saturating_sub(1) * day);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + yesterday;
    params.not_after = epoch + yesterday + LAB_VALIDITY;
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] &= 0x7f; // a positive number
    serial[0] |= 0x01; // of full length
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

/// Creates a lab CA and one certificate per name in `dir` (created if missing).
///
/// Writes `ca.pem`, `ca.key`, and `<name>.pem`, `<name>.key` for each name; private keys get mode
/// 0600 on unix. Each name is the certificate's common name and first SAN, followed by
/// `localhost`, `127.0.0.1` and `::1` so the lab works on one host. Nothing is written if any of
/// the files exists already. Returns the paths written, in that order.
pub fn init_dir(dir: &Path, names: &[&str]) -> Result<Vec<PathBuf>, TlsError> {
    for name in names {
        let bad = name.is_empty()
            || *name == "ca"
            || name.starts_with('.')
            || name.contains(['/', '\\', '\0'])
            || names.iter().filter(|n| *n == name).count() > 1;
        if bad {
            return Err(TlsError::BadName((*name).to_owned()));
        }
    }
    let mut files: Vec<(PathBuf, bool)> =
        vec![(dir.join("ca.pem"), false), (dir.join("ca.key"), true)];
    for name in names {
        files.push((dir.join(format!("{name}.pem")), false));
        files.push((dir.join(format!("{name}.key")), true));
    }
    for (path, _) in &files {
        if fs::symlink_metadata(path).is_ok() {
            return Err(TlsError::AlreadyExists(path.clone()));
        }
    }

    let pki = LabPki::generate("dmdeleg lab CA")?;
    let mut contents = vec![pki.ca_cert_pem.clone(), pki.ca_key_pem.clone()];
    for name in names {
        let issued = pki.issue(name, &[name, "localhost", "127.0.0.1", "::1"])?;
        contents.push(issued.cert_pem);
        contents.push(issued.key_pem);
    }

    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::with_capacity(files.len());
    for ((path, private), text) in files.into_iter().zip(contents) {
        write_new(&path, text.as_bytes(), private)?;
        written.push(path);
    }
    Ok(written)
}

/// Creates `path` (failing if it exists) with `bytes`; mode 0600 when `private`, on unix.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AlreadyExists {
            TlsError::AlreadyExists(path.to_path_buf())
        } else {
            TlsError::Write {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

const PEM_INPUT: &str = "PEM input";

fn bad_pem(what: &str, err: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::BadPem {
        what: what.to_owned(),
        detail: err.to_string(),
    }
}

fn certs_from(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(what, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(what.to_owned()));
    }
    Ok(certs)
}

fn key_from(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            Err(TlsError::NoPrivateKey(what.to_owned()))
        }
        Err(e) => Err(bad_pem(what, e)),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in PEM text, in order (a chain: leaf first). At least one is required.
pub fn load_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from(pem, PEM_INPUT)
}

/// The first private key in PEM text: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_from(pem, PEM_INPUT)
}

/// [`load_certs`] from a file; errors name the file.
pub fn load_certs_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_from(&read(path)?, &path.display().to_string())
}

/// [`load_key`] from a file; errors name the file.
pub fn load_key_file(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    key_from(&read(path)?, &path.display().to_string())
}

// ---------------------------------------------------------------------------------------------
// Server configurations
// ---------------------------------------------------------------------------------------------

/// ALPN for both endpoints: HTTP/2 and HTTP/1.1 (the server speaks both; the client chooses).
fn set_alpn(config: &mut ServerConfig) {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
}

/// A server configuration without client authentication, for the device endpoint.
///
/// TLS 1.2 and 1.3 (devices are often old). `cert_chain` is leaf first.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    set_alpn(&mut config);
    Ok(Arc::new(config))
}

/// A server configuration for the peer endpoint: TLS 1.3 only, and a client certificate that
/// chains to one of `client_roots` is required.
///
/// Which peer a valid certificate belongs to is the handler's question: see [`PeerCertificates`].
pub fn mtls_server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = root_store(client_roots)?;
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)?;
    set_alpn(&mut config);
    Ok(Arc::new(config))
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    if roots.is_empty() {
        return Err(TlsError::NoRoots);
    }
    let mut store = RootCertStore::empty();
    for (i, root) in roots.iter().enumerate() {
        store.add(root.clone()).map_err(|e| TlsError::BadRoot {
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(store)
}

// ---------------------------------------------------------------------------------------------
// Client configuration (reqwest)
// ---------------------------------------------------------------------------------------------

/// A reqwest client builder that trusts exactly `roots` (never the system's) and, with an
/// `identity` (certificate chain PEM, private key PEM), presents that client certificate.
///
/// Use it to add timeouts or pool settings; [`reqwest_client`] builds it as is. The builder
/// uses the rustls backend with ring, installed as the process default first.
pub fn reqwest_client_builder(
    roots: &[CertificateDer<'static>],
    identity: Option<(&[u8], &[u8])>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    install_crypto_provider();
    // Check here, with clearer messages than reqwest's.
    root_store(roots)?;
    let certs = roots
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = reqwest::Client::builder()
        .tls_backend_rustls()
        .tls_certs_only(certs);
    if let Some((cert_pem, key_pem)) = identity {
        let what = "the client identity";
        certs_from(cert_pem, what)?;
        key_from(key_pem, what)?;
        let mut pem = Vec::with_capacity(cert_pem.len() + key_pem.len() + 1);
        pem.extend_from_slice(cert_pem);
        pem.push(b'\n');
        pem.extend_from_slice(key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(builder)
}

/// [`reqwest_client_builder`], built.
pub fn reqwest_client(
    roots: &[CertificateDer<'static>],
    identity: Option<(&[u8], &[u8])>,
) -> Result<reqwest::Client, TlsError> {
    Ok(reqwest_client_builder(roots, identity)?.build()?)
}

// ---------------------------------------------------------------------------------------------
// Certificates as seen by handlers
// ---------------------------------------------------------------------------------------------

/// The certificate chain the TLS client presented, leaf first, as verified by the server
/// configuration. [`serve_tls`] puts it in every request's extensions when the client presented
/// one; read it with `axum::Extension<PeerCertificates>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificates(pub Vec<CertificateDer<'static>>);

impl PeerCertificates {
    /// The peer's own certificate.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// The SHA-256 fingerprint of a certificate's DER: upper-case hex pairs joined by colons, as
/// `openssl x509 -fingerprint -sha256` prints it.
pub fn cert_fingerprint_sha256(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = String::with_capacity(digest.as_ref().len() * 3);
    for (i, byte) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// Whether `cert` names `name` (a DNS name or an IP address) among its subject alternative names,
/// as a TLS client would check a server. Says nothing about who issued it: use it on a chain the
/// server configuration already verified. False if the certificate or the name cannot be parsed.
pub fn cert_is_valid_for_name(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = ServerName::try_from(name) else {
        return false;
    };
    let Ok(parsed) = rustls::server::ParsedCertificate::try_from(cert) else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

// ---------------------------------------------------------------------------------------------
// HTTPS server
// ---------------------------------------------------------------------------------------------

/// A running [`serve_tls`] server. Dropping it stops the server and its connections.
#[derive(Debug)]
pub struct TlsServerHandle {
    /// How many connections failed before or during the TLS handshake.
    pub handshake_failures: Arc<AtomicU64>,
    last_failure: Arc<Mutex<Option<String>>>,
    local_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl TlsServerHandle {
    /// The number of failed handshakes so far.
    pub fn handshake_failure_count(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// Why the latest handshake failed, in plain words (e.g. "client sent no certificate").
    pub fn last_handshake_failure(&self) -> Option<String> {
        match self.last_failure.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Whether the accept loop has ended (it only ends when aborted).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops accepting and closes every connection.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for TlsServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` over TLS on `listener`, in a task of the current tokio runtime.
///
/// Each connection's handshake runs in its own task (bounded by [`HANDSHAKE_TIMEOUT`]), then the
/// connection is served as HTTP/1.1 or HTTP/2. Every request carries, in its extensions, the
/// client's [`PeerCertificates`] (when it presented any) and `axum::extract::ConnectInfo<SocketAddr>`
/// with its address. Failed handshakes are counted in the returned handle with the last reason.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
) -> TlsServerHandle {
    let handshake_failures = Arc::new(AtomicU64::new(0));
    let last_failure = Arc::new(Mutex::new(None));
    let local_addr = listener.local_addr().ok();
    let failures = Failures {
        count: handshake_failures.clone(),
        last: last_failure.clone(),
    };
    let task = tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(config),
        router,
        failures,
    ));
    TlsServerHandle {
        handshake_failures,
        last_failure,
        local_addr,
        task,
    }
}

#[derive(Clone)]
struct Failures {
    count: Arc<AtomicU64>,
    last: Arc<Mutex<Option<String>>>,
}

impl Failures {
    fn record(&self, reason: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        match self.last.lock() {
            Ok(mut guard) => *guard = Some(reason),
            Err(poisoned) => *poisoned.into_inner() = Some(reason),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: axum::Router,
    failures: Failures,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1().timer(TokioTimer::new());
    http.http2().timer(TokioTimer::new());
    let http = Arc::new(http);
    // Owned by this task: aborting it drops the set, which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    connections.spawn(serve_connection(
                        tcp,
                        remote,
                        acceptor.clone(),
                        router.clone(),
                        http.clone(),
                        failures.clone(),
                    ));
                }
                // Out of file descriptors and the like: let some connections finish.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    router: axum::Router,
    http: Arc<auto::Builder<TokioExecutor>>,
    failures: Failures,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            failures.record(describe_handshake_error(&err));
            return;
        }
        Err(_) => {
            failures.record("the client did not finish the handshake in time".to_owned());
            return;
        }
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .filter(|certs| !certs.is_empty())
        .map(|certs| PeerCertificates(certs.iter().map(|c| c.clone().into_owned()).collect()));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(remote));
        tower_service::Service::call(&mut router.clone(), req)
    });
    // Errors here are the client going away or speaking bad HTTP: nothing to do about them.
    let _ = http.serve_connection(TokioIo::new(tls), service).await;
}

/// The reason a server-side handshake failed, in plain words.
fn describe_handshake_error(err: &io::Error) -> String {
    use rustls::{AlertDescription, CertificateError, Error as E};
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
        return match err.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the client closed the connection during the handshake".to_owned()
            }
            io::ErrorKind::ConnectionReset => {
                "the client reset the connection during the handshake".to_owned()
            }
            _ => format!("connection error during the handshake: {err}"),
        };
    };
    match tls {
        E::NoCertificatesPresented => "client sent no certificate".to_owned(),
        E::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                "client certificate is not issued by a trusted authority".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "client certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "client certificate is not valid yet".to_owned()
            }
            CertificateError::Revoked => "client certificate is revoked".to_owned(),
            CertificateError::BadSignature => "client certificate has a bad signature".to_owned(),
            other => format!("client certificate refused: {other}"),
        },
        E::AlertReceived(AlertDescription::UnknownCA | AlertDescription::BadCertificate) => {
            "the client does not trust our certificate".to_owned()
        }
        E::AlertReceived(AlertDescription::CertificateExpired) => {
            "the client says our certificate has expired".to_owned()
        }
        E::AlertReceived(AlertDescription::ProtocolVersion) => {
            "the client does not support our TLS version".to_owned()
        }
        E::AlertReceived(alert) => format!("the client ended the handshake with alert {alert:?}"),
        E::PeerIncompatible(
            rustls::PeerIncompatible::SupportedVersionsExtensionRequired
            | rustls::PeerIncompatible::Tls12NotOffered
            | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled,
        ) => "the client does not offer a TLS version we accept".to_owned(),
        E::PeerIncompatible(why) => format!("the client's TLS settings are incompatible: {why:?}"),
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "the client did not speak TLS (plain HTTP?)".to_owned()
        }
        E::InvalidMessage(why) => format!("the client sent a malformed TLS message: {why:?}"),
        other => format!("handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_format() {
        let fp = cert_fingerprint_sha256(&CertificateDer::from(b"abc".to_vec()));
        assert_eq!(
            fp,
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }

    #[test]
    fn pem_errors_are_plain() {
        assert!(matches!(
            load_certs(b"nothing here"),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(load_key(b""), Err(TlsError::NoPrivateKey(_))));
        let err = load_certs_file(Path::new("/nonexistent/peer.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/peer.pem"), "{err}");
    }

    #[test]
    fn issued_names() {
        let pki = LabPki::generate("test CA").unwrap();
        let leaf = pki
            .issue("dms1.example", &["dms1.example", "127.0.0.1"])
            .unwrap();
        assert!(cert_is_valid_for_name(&leaf.cert_der, "dms1.example"));
        assert!(cert_is_valid_for_name(&leaf.cert_der, "127.0.0.1"));
        assert!(!cert_is_valid_for_name(&leaf.cert_der, "dms2.example"));
        let bare = pki.issue("dms2.example", &[]).unwrap();
        assert!(cert_is_valid_for_name(&bare.cert_der, "dms2.example"));
        assert!(leaf.key_der().is_ok());
    }
}
