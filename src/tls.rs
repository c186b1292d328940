//! TLS plumbing: lab certificates, PEM loading, rustls server and client configurations, and an
//! HTTPS server for axum routers that shows handlers the peer's certificate.
//!
//! DESIGN.md sections 1 and 3 ask for two kinds of endpoint:
//! - the **device endpoint**, HTTP or HTTPS with a server certificate only ([`server_config`]);
//! - the **peer endpoint**, HTTPS with mutual TLS 1.3, where the client certificate is required and
//!   must chain to a configured root or be one of the pinned peer certificates
//!   ([`mtls_server_config_with`]). The handler finds the authenticated peer's chain in the request
//!   extensions as [`PeerCertificates`] and checks it against the configured peer, for example
//!   with [`cert_fingerprint_sha256`] or [`cert_is_valid_for_name`].
//!
//! What the peer side trusts is one [`PeerTrust`], shared by the peer endpoint (client
//! certificates) and the peer client (server certificates, [`peer_client_builder`]) and changed
//! while both run: a peer added at run time is pinned there and both ends accept it at the next
//! handshake, even when no configured CA issued its certificate.
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
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
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
    /// A certificate that cannot be used as asked.
    #[error("{what} is unusable: {detail}")]
    BadCertificate {
        /// Which certificate.
        what: String,
        /// Why, in plain words.
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

/// A self-signed certificate for `common_name` (its own issuer: no CA vouches for it), usable
/// by a server and by a client, valid like the lab certificates. `sans` as in
/// [`LabPki::issue`]. For peers that are trusted by their pinned certificate alone.
pub fn self_signed(common_name: &str, sans: &[&str]) -> Result<Issued, TlsError> {
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
    set_validity(&mut params)?;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().clone(),
    })
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
/// chains to one of `client_roots` is required (a [`PeerTrust`] of those roots, which nothing
/// else can change: use [`mtls_server_config_with`] to add peers at run time).
///
/// Which peer a valid certificate belongs to is the handler's question: see [`PeerCertificates`].
pub fn mtls_server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsError> {
    mtls_server_config_with(cert_chain, key, &PeerTrust::new(client_roots)?)
}

/// A server configuration for the peer endpoint: TLS 1.3 only, and a client certificate is
/// required that `trust` accepts now (at each handshake: a certificate pinned later is
/// accepted from then on, one unpinned later is refused from then on).
///
/// Sessions are not resumed: a resumed handshake would skip the client certificate check,
/// so a peer removed (or whose certificate expired) since its last connection could come
/// back in. Connections are kept alive instead, so full handshakes stay rare.
pub fn mtls_server_config_with(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    trust: &Arc<PeerTrust>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(trust.client_verifier())
        .with_single_cert(cert_chain, key)?;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
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

/// A reqwest client builder for talking to peers: it presents this server's certificate
/// (`cert_pem`, a chain, and `key_pem`) and trusts the peers' servers as `trust` does at each
/// handshake (a CA root, or a certificate pinned for the host it is reached at).
///
/// ALPN offers HTTP/2 and HTTP/1.1, as reqwest's own configuration does. Add timeouts or pool
/// settings, then build.
pub fn peer_client_builder(
    trust: &Arc<PeerTrust>,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<reqwest::ClientBuilder, TlsError> {
    install_crypto_provider();
    let what = "the client identity";
    let chain = certs_from(cert_pem, what)?;
    let key = key_from(key_pem, what)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(trust.server_verifier())
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder().tls_backend_preconfigured(config))
}

// ---------------------------------------------------------------------------------------------
// Peer trust: CA roots and pinned certificates, changed at run time
// ---------------------------------------------------------------------------------------------

/// What the peer side trusts: certificates that chain to the CA roots, and pinned peer
/// certificates (the exact DER, whoever issued it: another CA, or the peer itself).
///
/// One `PeerTrust` backs both the peer endpoint's client-certificate check
/// ([`PeerTrust::client_verifier`]) and the peer client's server-certificate check
/// ([`PeerTrust::server_verifier`]). Changes ([`PeerTrust::pin`], [`PeerTrust::unpin`],
/// [`PeerTrust::set_roots`]) apply from the next handshake on; connections already open keep
/// going. Chains are verified by rustls' WebPki verifiers; a pinned certificate is compared
/// byte for byte and must be within its validity dates, and the handshake signature is checked
/// against it as for any other certificate.
pub struct PeerTrust {
    provider: Arc<CryptoProvider>,
    /// Swapped whole on every change, so a handshake reads one consistent state without
    /// holding the lock while it verifies.
    state: RwLock<Arc<TrustState>>,
}

struct TrustState {
    roots: Vec<CertificateDer<'static>>,
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
    pins: Vec<Pin>,
}

/// A pinned peer certificate.
#[derive(Clone)]
struct Pin {
    /// Whose it is (the peer's ServerID).
    owner: String,
    cert: CertificateDer<'static>,
    /// The host the peer is reached at (its URL's), lowercase, without IPv6 brackets: when
    /// this server connects, the pinned certificate is accepted from that host only.
    host: String,
    /// Validity, Unix seconds.
    not_before: u64,
    not_after: u64,
}

impl fmt::Debug for PeerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.snapshot();
        f.debug_struct("PeerTrust")
            .field("roots", &st.roots.len())
            .field(
                "pinned",
                &st.pins.iter().map(|p| p.owner.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A URL host as [`PeerTrust`] compares it: lowercase, IPv6 without brackets.
fn normal_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

fn unix_secs(ms: i64) -> u64 {
    u64::try_from(ms.div_euclid(1000)).unwrap_or(0)
}

impl PeerTrust {
    /// Trusts certificates that chain to `roots` (at least one), and none pinned yet.
    pub fn new(roots: &[CertificateDer<'static>]) -> Result<Arc<PeerTrust>, TlsError> {
        let provider = provider();
        let state = TrustState::new(&provider, roots.to_vec(), Vec::new())?;
        Ok(Arc::new(PeerTrust {
            provider,
            state: RwLock::new(Arc::new(state)),
        }))
    }

    fn snapshot(&self) -> Arc<TrustState> {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(
        &self,
        f: impl FnOnce(&TrustState) -> Result<TrustState, TlsError>,
    ) -> Result<(), TlsError> {
        let mut guard = match self.state.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = f(&guard)?;
        *guard = Arc::new(next);
        Ok(())
    }

    /// Pins `cert` for the peer `owner`, reached at `host` (replacing `owner`'s earlier pin).
    /// Refused when its validity dates cannot be read.
    pub fn pin(
        &self,
        owner: &str,
        cert: CertificateDer<'static>,
        host: &str,
    ) -> Result<(), TlsError> {
        let (not_before, not_after) =
            cert_validity_ms(cert.as_ref()).ok_or_else(|| TlsError::BadCertificate {
                what: format!("the certificate of {owner}"),
                detail: "its validity dates cannot be read".into(),
            })?;
        let pin = Pin {
            owner: owner.to_owned(),
            cert,
            host: normal_host(host),
            not_before: unix_secs(not_before),
            not_after: unix_secs(not_after),
        };
        self.replace(|st| {
            let mut pins: Vec<Pin> = st
                .pins
                .iter()
                .filter(|p| p.owner != owner)
                .cloned()
                .collect();
            pins.push(pin);
            Ok(st.with_pins(pins))
        })
    }

    /// Forgets `owner`'s pinned certificate; whether there was one.
    pub fn unpin(&self, owner: &str) -> bool {
        let mut found = false;
        // Keeping the roots cannot fail.
        let _ = self.replace(|st| {
            found = st.pins.iter().any(|p| p.owner == owner);
            Ok(st.with_pins(
                st.pins
                    .iter()
                    .filter(|p| p.owner != owner)
                    .cloned()
                    .collect(),
            ))
        });
        found
    }

    /// Trusts chains to `roots` (at least one) instead of the earlier roots; pins stay.
    pub fn set_roots(&self, roots: &[CertificateDer<'static>]) -> Result<(), TlsError> {
        let provider = self.provider.clone();
        self.replace(|st| TrustState::new(&provider, roots.to_vec(), st.pins.clone()))
    }

    /// The owners of the pinned certificates.
    pub fn pinned(&self) -> Vec<String> {
        self.snapshot()
            .pins
            .iter()
            .map(|p| p.owner.clone())
            .collect()
    }

    /// The peer endpoint's check of client certificates, following this trust's changes.
    pub fn client_verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(PeerClientVerifier(self.clone()))
    }

    /// The peer client's check of server certificates, following this trust's changes.
    pub fn server_verifier(self: &Arc<Self>) -> Arc<dyn ServerCertVerifier> {
        Arc::new(PeerServerVerifier(self.clone()))
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl TrustState {
    fn new(
        provider: &Arc<CryptoProvider>,
        roots: Vec<CertificateDer<'static>>,
        pins: Vec<Pin>,
    ) -> Result<TrustState, TlsError> {
        let store = Arc::new(root_store(&roots)?);
        let clients =
            WebPkiClientVerifier::builder_with_provider(store.clone(), provider.clone()).build()?;
        let servers =
            WebPkiServerVerifier::builder_with_provider(store, provider.clone()).build()?;
        Ok(TrustState {
            roots,
            clients,
            servers,
            pins,
        })
    }

    fn with_pins(&self, pins: Vec<Pin>) -> TrustState {
        TrustState {
            roots: self.roots.clone(),
            clients: self.clients.clone(),
            servers: self.servers.clone(),
            pins,
        }
    }

    /// The pin of exactly this certificate (and, when connecting, for this host), if any:
    /// `Ok(true)` when it is pinned and valid now, an error when pinned but out of its dates.
    fn pinned(
        &self,
        cert: &CertificateDer<'_>,
        host: Option<&str>,
        now: UnixTime,
    ) -> Result<bool, rustls::Error> {
        let Some(pin) = self
            .pins
            .iter()
            .find(|p| p.cert.as_ref() == cert.as_ref() && host.is_none_or(|h| p.host == h))
        else {
            return Ok(false);
        };
        let now = now.as_secs();
        if now > pin.not_after {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Expired));
        }
        if now < pin.not_before {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet,
            ));
        }
        Ok(true)
    }
}

/// [`PeerTrust`] as the peer endpoint's client-certificate verifier.
#[derive(Debug)]
struct PeerClientVerifier(Arc<PeerTrust>);

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: a peer with a pinned certificate from a CA we do not list would otherwise be
    /// told its certificate is not wanted, and could send none.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let st = self.0.snapshot();
        if st.pinned(end_entity, None, now)? {
            return Ok(ClientCertVerified::assertion());
        }
        st.clients
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
}

/// [`PeerTrust`] as the peer client's server-certificate verifier.
#[derive(Debug)]
struct PeerServerVerifier(Arc<PeerTrust>);

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let st = self.0.snapshot();
        let host = normal_host(&server_name.to_str());
        if st.pinned(end_entity, Some(&host), now)? {
            return Ok(ServerCertVerified::assertion());
        }
        st.servers
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.schemes()
    }
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

/// A certificate's validity, `(notBefore, notAfter)` as Unix milliseconds, read with a small DER
/// walk of the X.509 structure (UTCTime or GeneralizedTime); `None` when it is not there.
pub fn cert_validity_ms(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = der_element(der)?; // Certificate
    let (_, tbs, _) = der_element(cert)?; // TBSCertificate
    let (tag, _, mut rest) = der_element(tbs)?;
    if tag == 0xa0 {
        // [0] version; the serial number follows
        let (_, _, r) = der_element(rest)?;
        rest = r;
    }
    let (_, _, r) = der_element(rest)?; // signature algorithm
    let (_, _, r) = der_element(r)?; // issuer
    let (_, validity, _) = der_element(r)?;
    let (tag_b, before, r) = der_element(validity)?;
    let (tag_a, after, _) = der_element(r)?;
    Some((
        der_time(tag_b, std::str::from_utf8(before).ok()?)?,
        der_time(tag_a, std::str::from_utf8(after).ok()?)?,
    ))
}

/// One DER element at the start of `b`: (tag, contents, rest).
fn der_element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &x in &b[..n] {
            len = (len << 8) | usize::from(x);
        }
        b = &b[n..];
        len
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

/// UTCTime (`YYMMDDHHMMSSZ`, tag 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, tag 0x18), as
/// Unix milliseconds.
fn der_time(tag: u8, s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, min, sec) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400_000 + (hour * 3600 + min * 60 + sec) * 1000)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn validity_dates_are_read_from_the_der() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            der_time(0x17, "240229120000Z"),
            Some(days_from_civil(2024, 2, 29) * 86_400_000 + 12 * 3_600_000)
        );
        assert_eq!(der_time(0x18, "20500101000000Z"), Some(2_524_608_000_000));
        assert_eq!(der_time(0x17, "241301000000Z"), None);
        let pki = LabPki::generate("test CA").unwrap();
        let leaf = pki.issue("dms2.example", &[]).unwrap();
        let (before, after) = cert_validity_ms(leaf.cert_der.as_ref()).unwrap();
        assert_eq!(after - before, LAB_VALIDITY.as_millis() as i64);
        assert_eq!(cert_validity_ms(b"not DER"), None);
    }

    /// Runs a TLS handshake in memory between the two configurations.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        server: Arc<ServerConfig>,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            s.process_new_packets()?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err(rustls::Error::General(
            "the handshake did not finish".into(),
        ))
    }

    fn client_config(trust: &Arc<PeerTrust>, me: &Issued) -> Arc<rustls::ClientConfig> {
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(trust.server_verifier())
                .with_client_auth_cert(me.chain(), me.key_der().unwrap())
                .unwrap(),
        )
    }

    #[test]
    fn pinned_certificates_are_trusted_both_ways_from_the_next_handshake() {
        let pki = LabPki::generate("test CA").unwrap();
        let server = pki
            .issue("dms1.example", &["dms1.example", "127.0.0.1"])
            .unwrap();
        let stranger = self_signed("dms3.example", &["dms3.example", "127.0.0.1"]).unwrap();
        let server_trust = PeerTrust::new(&[pki.ca_cert_der()]).unwrap();
        let server_cfg =
            mtls_server_config_with(server.chain(), server.key_der().unwrap(), &server_trust)
                .unwrap();
        // The stranger trusts the server by its pinned certificate, for the address it calls.
        let other = LabPki::generate("other CA").unwrap();
        let client_trust = PeerTrust::new(&[other.ca_cert_der()]).unwrap();
        let client = client_config(&client_trust, &stranger);
        assert!(handshake(client.clone(), server_cfg.clone(), "127.0.0.1").is_err());
        client_trust
            .pin("dms1.example", server.cert_der.clone(), "127.0.0.1")
            .unwrap();
        // Known to the client now, but not to the server: its certificate is refused.
        let err = handshake(client.clone(), server_cfg.clone(), "127.0.0.1").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
            ),
            "{err:?}"
        );
        server_trust
            .pin("dms3.example", stranger.cert_der.clone(), "127.0.0.1")
            .unwrap();
        handshake(client.clone(), server_cfg.clone(), "127.0.0.1").unwrap();
        // A pinned server certificate counts only at the address it was pinned for.
        assert!(handshake(client.clone(), server_cfg.clone(), "dms1.example").is_err());
        // CA-issued certificates keep working beside the pins.
        let dms2 = pki.issue("dms2.example", &[]).unwrap();
        let ca_client = client_config(&PeerTrust::new(&[pki.ca_cert_der()]).unwrap(), &dms2);
        handshake(ca_client.clone(), server_cfg.clone(), "dms1.example").unwrap();
        // Unpinned: refused again at the next handshake.
        assert!(server_trust.unpin("dms3.example"));
        assert!(!server_trust.unpin("dms3.example"));
        assert!(handshake(client, server_cfg.clone(), "127.0.0.1").is_err());
        assert_eq!(server_trust.pinned(), Vec::<String>::new());
        // New roots replace the old ones; the CA-issued client is a stranger then.
        server_trust.set_roots(&[other.ca_cert_der()]).unwrap();
        assert!(handshake(ca_client, server_cfg, "dms1.example").is_err());
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
