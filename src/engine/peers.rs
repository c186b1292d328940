//! The peer servers this engine trusts: their ServerIDs, base URLs, how their certificates
//! are recognised (pinned, or issued by a trusted CA for a given name) and the policy for
//! their incoming requests. The peer endpoint asks [`PeerDirectory::identify`] which peer a
//! verified client certificate belongs to; the driver looks peers up by ServerID.
//!
//! The directory is shared and changes while the engine runs: peers from the configuration
//! are there from the start, and an operator adds others from their certificate file
//! ([`NewPeer`], checked by [`NewPeer::check`] and [`read_certificate`] with a [`PeerError`] in
//! plain words for each refusal). An added peer is recognised by its pinned certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::tls::{cert_fingerprint_sha256, cert_is_valid_for_name, cert_validity_ms};

/// How a peer's certificate is recognised (after the TLS handshake verified its chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAuth {
    /// This exact certificate: its SHA-256 fingerprint (`AB:CD:...`).
    Pinned(String),
    /// Any certificate from a trusted CA that names this DNS name or IP address.
    Name(String),
}

/// What happens to a peer's DELEGATION_NOTIF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Accepted at once.
    Accept,
    /// Declined at once.
    Decline,
    /// Waits for an operator's decision.
    #[default]
    Operator,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 3] = [Policy::Accept, Policy::Decline, Policy::Operator];

    /// The word used in configuration files and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Accept => "accept",
            Policy::Decline => "decline",
            Policy::Operator => "operator",
        }
    }

    /// The policy named by [`Policy::as_str`]'s word.
    pub fn parse(word: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.as_str() == word)
    }
}

/// One peer server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its ServerID.
    pub server_id: String,
    /// Its peer endpoint's base URL (`https://host:port`).
    pub base_url: String,
    /// How its certificate is recognised.
    pub auth: PeerAuth,
    /// What to do with its requests.
    pub policy: Policy,
}

impl PeerInfo {
    /// Whether `cert` (already verified against the trusted CAs) is this peer's.
    pub fn owns(&self, cert: &CertificateDer<'_>) -> bool {
        match &self.auth {
            PeerAuth::Pinned(fp) => cert_fingerprint_sha256(cert).eq_ignore_ascii_case(fp),
            PeerAuth::Name(name) => cert_is_valid_for_name(cert, name),
        }
    }

    fn owns_with(&self, cert: &CertificateDer<'_>, fingerprint: &mut Option<String>) -> bool {
        match &self.auth {
            PeerAuth::Pinned(fp) => fingerprint
                .get_or_insert_with(|| cert_fingerprint_sha256(cert))
                .eq_ignore_ascii_case(fp),
            PeerAuth::Name(name) => cert_is_valid_for_name(cert, name),
        }
    }
}

impl PeerAuth {
    /// How the certificate is recognised, in words (what the console and the command line
    /// show).
    pub fn describe(&self) -> String {
        match self {
            PeerAuth::Name(n) => format!("a certificate from a trusted CA that names {n}"),
            PeerAuth::Pinned(_) => "its pinned certificate (exact match)".to_owned(),
        }
    }

    /// The pinned certificate's SHA-256 fingerprint, if pinned.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            PeerAuth::Pinned(fp) => Some(fp),
            PeerAuth::Name(_) => None,
        }
    }
}

impl PeerOrigin {
    /// When an added peer's pinned certificate expires; `None` for a configured one.
    pub fn expires_ms(self) -> Option<i64> {
        match self {
            PeerOrigin::Added { not_after_ms, .. } => Some(not_after_ms),
            PeerOrigin::Configured => None,
        }
    }
}

/// Where a peer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOrigin {
    /// The configuration (or the lab's set-up): there from the start, changed only there.
    Configured,
    /// Added by an operator while the engine ran, and kept in the store.
    Added {
        /// When, Unix milliseconds.
        added_ms: i64,
        /// When its pinned certificate expires, Unix milliseconds.
        not_after_ms: i64,
    },
}

/// A peer and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The peer.
    pub info: Arc<PeerInfo>,
    /// Where it comes from.
    pub origin: PeerOrigin,
}

/// The engine's peers, shared by the driver, the peer endpoint and the engine's handle, and
/// changed while they run. Reads take a read lock for a few comparisons, never across an
/// `.await`; lookups hand out `Arc`s.
#[derive(Debug, Default)]
pub struct PeerDirectory {
    entries: RwLock<Vec<PeerEntry>>,
}

impl PeerDirectory {
    /// A directory of configured `peers`.
    pub fn new(peers: Vec<PeerInfo>) -> PeerDirectory {
        PeerDirectory {
            entries: RwLock::new(
                peers
                    .into_iter()
                    .map(|p| PeerEntry {
                        info: Arc::new(p),
                        origin: PeerOrigin::Configured,
                    })
                    .collect(),
            ),
        }
    }

    fn read<T>(&self, f: impl FnOnce(&[PeerEntry]) -> T) -> T {
        match self.entries.read() {
            Ok(g) => f(&g),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut Vec<PeerEntry>) -> T) -> T {
        match self.entries.write() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The peer a client certificate belongs to. A certificate that matches several peers
    /// (a misconfiguration) belongs to none, so no peer can speak for another.
    pub fn identify(&self, cert: &CertificateDer<'_>) -> Option<Arc<PeerInfo>> {
        let mut fingerprint = None;
        self.read(|entries| {
            let mut found = entries
                .iter()
                .filter(|e| e.info.owns_with(cert, &mut fingerprint));
            let first = found.next()?;
            found.next().is_none().then(|| first.info.clone())
        })
    }

    /// The peer with this ServerID.
    pub fn get(&self, server_id: &str) -> Option<Arc<PeerInfo>> {
        self.read(|entries| {
            entries
                .iter()
                .find(|e| e.info.server_id == server_id)
                .map(|e| e.info.clone())
        })
    }

    /// The peer with this ServerID and where it comes from.
    pub fn entry(&self, server_id: &str) -> Option<PeerEntry> {
        self.read(|entries| {
            entries
                .iter()
                .find(|e| e.info.server_id == server_id)
                .cloned()
        })
    }

    /// Every peer, in the order they were added.
    pub fn entries(&self) -> Vec<PeerEntry> {
        self.read(<[PeerEntry]>::to_vec)
    }

    /// Every peer.
    pub fn all(&self) -> Vec<PeerInfo> {
        self.read(|entries| entries.iter().map(|e| (*e.info).clone()).collect())
    }

    /// Adds a peer; refused when its ServerID is taken.
    pub fn insert(&self, entry: PeerEntry) -> Result<(), PeerError> {
        self.write(|entries| {
            if entries
                .iter()
                .any(|e| e.info.server_id == entry.info.server_id)
            {
                return Err(PeerError::Duplicate(entry.info.server_id.clone()));
            }
            entries.push(entry);
            Ok(())
        })
    }

    /// Removes the peer with this ServerID; it, if it was there.
    pub fn remove(&self, server_id: &str) -> Option<PeerEntry> {
        self.write(|entries| {
            let i = entries.iter().position(|e| e.info.server_id == server_id)?;
            Some(entries.remove(i))
        })
    }
}

/// Why a peer was not added or removed, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The ServerID is empty or has characters a ServerID cannot have.
    #[error("`{0}` is not a valid ServerID (no spaces, and none of = & * +)")]
    BadServerId(String),
    /// The ServerID is this server's own.
    #[error("{0} is this server's own ServerID")]
    OwnServerId(String),
    /// A peer with this ServerID exists already.
    #[error("a peer with the ServerID {0} exists already")]
    Duplicate(String),
    /// The URL cannot be parsed or has no host.
    #[error("`{url}` is not a usable URL: {why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The URL is not https.
    #[error("`{0}` must be an https URL: peers talk over mutual TLS")]
    NotHttps(String),
    /// The certificate file cannot be read.
    #[error("cannot read the certificate file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable certificate.
    #[error("{path} is not a certificate: {why}")]
    NotACertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The certificate has expired.
    #[error("the certificate in {path} expired on {when} UTC")]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its notAfter (`YYYY-MM-DD HH:MM`).
        when: String,
    },
    /// The certificate is not valid yet.
    #[error("the certificate in {path} is not valid before {when} UTC")]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Its notBefore (`YYYY-MM-DD HH:MM`).
        when: String,
    },
    /// The certificate is already another peer's (one certificate, one peer).
    #[error("this certificate is already the one of peer {0}")]
    CertificateInUse(String),
    /// The engine has no peer endpoint, so it has no peers.
    #[error("this server has no peer endpoint, so it takes no peers")]
    NoPeerEndpoint,
    /// No peer has this ServerID.
    #[error("there is no peer {0}")]
    NotFound(String),
    /// The peer comes from the configuration file, which stays its source.
    #[error("{0} comes from the configuration file: remove it there")]
    Configured(String),
    /// Delegations with this peer are not over yet.
    #[error("{count} delegation(s) with {server_id} are not over yet; remove it once they are")]
    InFlight {
        /// The peer.
        server_id: String,
        /// How many.
        count: usize,
    },
    /// The store refused the change.
    #[error("the change could not be saved: {0}")]
    Store(#[from] StoreError),
    /// The trust settings refused the certificate.
    #[error("{0}")]
    Trust(#[from] crate::tls::TlsError),
}

/// A peer's certificate as read from its file: the first certificate (the leaf, pinned) of
/// a PEM file that may hold a chain.
#[derive(Clone)]
pub struct PeerCertificate {
    /// The leaf, DER.
    pub leaf: CertificateDer<'static>,
    /// The leaf, PEM (what the store keeps).
    pub pem: String,
    /// Certificates in the file (the leaf first).
    pub in_file: usize,
    /// The leaf's SHA-256 fingerprint (`AB:CD:...`).
    pub fingerprint: String,
    /// Its notBefore, Unix milliseconds.
    pub not_before_ms: i64,
    /// Its notAfter, Unix milliseconds.
    pub not_after_ms: i64,
}

impl std::fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("fingerprint", &self.fingerprint)
            .field("not_after_ms", &self.not_after_ms)
            .finish_non_exhaustive()
    }
}

/// `YYYY-MM-DD HH:MM` (UTC).
fn minutes_utc(ms: i64) -> String {
    let s = crate::store::delegations::rfc3339_utc(ms);
    s.get(..16).map_or(s.clone(), |t| t.replace('T', " "))
}

/// Reads a peer's certificate file (PEM; a chain is fine, its first certificate is the
/// peer's) and checks it is a certificate valid at `now_ms`.
pub fn read_certificate(path: &Path, now_ms: i64) -> Result<PeerCertificate, PeerError> {
    let bytes = std::fs::read(path).map_err(|source| PeerError::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    parse_certificate(&bytes, path, Some(now_ms))
}

/// [`read_certificate`] of PEM text already read from `path`; without `now_ms` the validity
/// dates are read but not checked.
pub fn parse_certificate(
    pem: &[u8],
    path: &Path,
    now_ms: Option<i64>,
) -> Result<PeerCertificate, PeerError> {
    use rustls::pki_types::pem::PemObject;
    let not_cert = |why: &str| PeerError::NotACertificate {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| not_cert("it is not readable PEM text"))?;
    let Some(leaf) = certs.first().cloned() else {
        return Err(not_cert(
            "it holds no `BEGIN CERTIFICATE` section (a key, or another kind of file?)",
        ));
    };
    if rustls::server::ParsedCertificate::try_from(&leaf).is_err() {
        return Err(not_cert(
            "its first certificate is not a valid X.509 certificate",
        ));
    }
    let Some((not_before_ms, not_after_ms)) = cert_validity_ms(leaf.as_ref()) else {
        return Err(not_cert(
            "the validity dates of its first certificate cannot be read",
        ));
    };
    if now_ms.is_some_and(|now| now > not_after_ms) {
        return Err(PeerError::Expired {
            path: path.to_owned(),
            when: minutes_utc(not_after_ms),
        });
    }
    if now_ms.is_some_and(|now| now < not_before_ms) {
        return Err(PeerError::NotYetValid {
            path: path.to_owned(),
            when: minutes_utc(not_before_ms),
        });
    }
    Ok(PeerCertificate {
        fingerprint: cert_fingerprint_sha256(&leaf),
        in_file: certs.len(),
        pem: pem_of(&leaf),
        leaf,
        not_before_ms,
        not_after_ms,
    })
}

/// A certificate as one PEM section.
fn pem_of(cert: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut out = String::with_capacity(b64.len() + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A peer to add, as the operator gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPeer {
    /// Its ServerID.
    pub server_id: String,
    /// Its peer endpoint (`https://host:port`).
    pub base_url: String,
    /// Its certificate file (PEM, possibly a chain: the first certificate is pinned).
    pub cert_path: PathBuf,
    /// What to do with its requests.
    pub policy: Policy,
}

/// A [`NewPeer`] that passed every check: what the engine stores, pins and lists.
#[derive(Debug, Clone)]
pub struct CheckedPeer {
    /// The peer, pinned to its certificate.
    pub info: PeerInfo,
    /// Its certificate.
    pub cert: PeerCertificate,
    /// The host its URL names (where its pinned certificate is accepted from).
    pub host: String,
}

impl NewPeer {
    /// Checks everything but the certificate file: the ServerID (valid, not `me`, not taken
    /// in `peers`) and the URL (https, with a host). Trims both.
    pub fn check_fields(
        &self,
        me: &str,
        peers: &PeerDirectory,
    ) -> Result<(String, String, String), PeerError> {
        let id = self.server_id.trim();
        if !crate::dm::acl::is_valid_server_id(id) {
            return Err(PeerError::BadServerId(id.to_owned()));
        }
        if id == me {
            return Err(PeerError::OwnServerId(id.to_owned()));
        }
        if peers.get(id).is_some() {
            return Err(PeerError::Duplicate(id.to_owned()));
        }
        let raw = self.base_url.trim();
        let url = url::Url::parse(raw).map_err(|e| PeerError::BadUrl {
            url: raw.to_owned(),
            why: e.to_string(),
        })?;
        if url.scheme() != "https" {
            return Err(PeerError::NotHttps(raw.to_owned()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| PeerError::BadUrl {
                url: raw.to_owned(),
                why: "it names no host".into(),
            })?
            .to_owned();
        Ok((id.to_owned(), raw.trim_end_matches('/').to_owned(), host))
    }

    /// Every check: [`NewPeer::check_fields`], then that `pem` (read from
    /// [`NewPeer::cert_path`]) holds a certificate valid at `now_ms` ([`parse_certificate`])
    /// that no other peer is recognised by.
    pub fn check(
        &self,
        me: &str,
        peers: &PeerDirectory,
        pem: &[u8],
        now_ms: i64,
    ) -> Result<CheckedPeer, PeerError> {
        let (server_id, base_url, host) = self.check_fields(me, peers)?;
        let cert = parse_certificate(pem, &self.cert_path, Some(now_ms))?;
        if let Some(other) = peers.identify(&cert.leaf) {
            return Err(PeerError::CertificateInUse(other.server_id.clone()));
        }
        Ok(CheckedPeer {
            info: PeerInfo {
                server_id,
                base_url,
                auth: PeerAuth::Pinned(cert.fingerprint.clone()),
                policy: self.policy,
            },
            cert,
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::LabPki;

    #[test]
    fn certificates_map_to_one_peer_only() {
        let pki = LabPki::generate("test CA").unwrap();
        let a = pki.issue("dms2.example", &["dms2.example"]).unwrap();
        let b = pki.issue("dms3.example", &["dms3.example"]).unwrap();
        let a_cert = a.chain()[0].clone();
        let b_cert = b.chain()[0].clone();
        let dir = PeerDirectory::new(vec![
            PeerInfo {
                server_id: "dms2.example".into(),
                base_url: "https://127.0.0.1:1".into(),
                auth: PeerAuth::Name("dms2.example".into()),
                policy: Policy::Accept,
            },
            PeerInfo {
                server_id: "dms3.example".into(),
                base_url: "https://127.0.0.1:2".into(),
                auth: PeerAuth::Pinned(cert_fingerprint_sha256(&b_cert)),
                policy: Policy::Operator,
            },
        ]);
        assert_eq!(dir.identify(&a_cert).unwrap().server_id, "dms2.example");
        assert_eq!(dir.get("dms3.example").unwrap().policy, Policy::Operator);
        assert_eq!(dir.identify(&b_cert).unwrap().server_id, "dms3.example");
        let c = pki.issue("other.example", &["other.example"]).unwrap();
        assert!(dir.identify(&c.chain()[0]).is_none());
        // A directory where one certificate fits two peers names neither.
        let mut twice = dir.all();
        twice.push(PeerInfo {
            server_id: "dms4.example".into(),
            auth: PeerAuth::Name("dms2.example".into()),
            ..twice[0].clone()
        });
        assert!(PeerDirectory::new(twice).identify(&a_cert).is_none());
    }

    fn new(id: &str, url: &str) -> NewPeer {
        NewPeer {
            server_id: id.into(),
            base_url: url.into(),
            cert_path: "peer.pem".into(),
            policy: Policy::Accept,
        }
    }

    #[test]
    fn a_new_peer_needs_a_valid_free_server_id_and_an_https_url() {
        let dir = PeerDirectory::new(vec![PeerInfo {
            server_id: "dms2.example".into(),
            base_url: "https://127.0.0.1:1".into(),
            auth: PeerAuth::Name("dms2.example".into()),
            policy: Policy::Accept,
        }]);
        let me = "dms1.example";
        let ok = new(" dms3.example ", "https://[::1]:7443/").check_fields(me, &dir);
        assert_eq!(
            ok.unwrap(),
            (
                "dms3.example".to_owned(),
                "https://[::1]:7443".to_owned(),
                "[::1]".to_owned()
            )
        );
        let err = |p: NewPeer| p.check_fields(me, &dir).unwrap_err();
        assert!(matches!(
            err(new("", "https://a")),
            PeerError::BadServerId(_)
        ));
        assert!(matches!(
            err(new("a*b", "https://a")),
            PeerError::BadServerId(_)
        ));
        assert!(matches!(
            err(new(me, "https://a")),
            PeerError::OwnServerId(_)
        ));
        assert!(matches!(
            err(new("dms2.example", "https://a")),
            PeerError::Duplicate(_)
        ));
        assert!(matches!(err(new("x", "http://a")), PeerError::NotHttps(_)));
        assert!(matches!(
            err(new("x", "not a url")),
            PeerError::BadUrl { .. }
        ));
        let text = err(new("x", "ftp://a")).to_string();
        assert_eq!(
            text,
            "`ftp://a` must be an https URL: peers talk over mutual TLS"
        );
    }

    #[test]
    fn certificate_files_are_read_with_plain_reasons() {
        let path = Path::new("peer.pem");
        let now = crate::engine::driver::now_ms();
        let why = |pem: &str| match parse_certificate(pem.as_bytes(), path, Some(now)) {
            Err(PeerError::NotACertificate { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert!(why("hello").contains("no `BEGIN CERTIFICATE` section"));
        let issued = crate::tls::self_signed("dms3.example", &[]).unwrap();
        assert!(why(&issued.key_pem).contains("no `BEGIN CERTIFICATE` section"));
        assert!(
            why("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .contains("not a valid X.509 certificate")
        );
        let c = parse_certificate(issued.cert_pem.as_bytes(), path, Some(now)).unwrap();
        assert_eq!(c.leaf, issued.cert_der);
        assert_eq!(c.in_file, 1);
        // The PEM kept is the leaf's own, byte for byte once decoded.
        let again = parse_certificate(c.pem.as_bytes(), path, Some(now)).unwrap();
        assert_eq!(again.leaf, issued.cert_der);
        // Not valid yet a year before, expired a year after.
        let year = 366 * 86_400_000;
        assert!(matches!(
            parse_certificate(issued.cert_pem.as_bytes(), path, Some(now - year)),
            Err(PeerError::NotYetValid { .. })
        ));
        assert!(matches!(
            parse_certificate(issued.cert_pem.as_bytes(), path, Some(now + year)),
            Err(PeerError::Expired { .. })
        ));
        // Without a time the dates are not checked (peers restored from the store).
        assert!(parse_certificate(issued.cert_pem.as_bytes(), path, None).is_ok());
    }

    #[test]
    fn peers_come_and_go_in_the_shared_directory() {
        let issued = crate::tls::self_signed("dms3.example", &[]).unwrap();
        let dir = PeerDirectory::default();
        let entry = PeerEntry {
            info: Arc::new(PeerInfo {
                server_id: "dms3.example".into(),
                base_url: "https://127.0.0.1:3".into(),
                auth: PeerAuth::Pinned(cert_fingerprint_sha256(&issued.cert_der)),
                policy: Policy::Accept,
            }),
            origin: PeerOrigin::Added {
                added_ms: 1,
                not_after_ms: 2,
            },
        };
        assert!(dir.identify(&issued.cert_der).is_none());
        dir.insert(entry.clone()).unwrap();
        assert!(matches!(
            dir.insert(entry.clone()),
            Err(PeerError::Duplicate(_))
        ));
        assert_eq!(
            dir.identify(&issued.cert_der).unwrap().server_id,
            "dms3.example"
        );
        assert_eq!(dir.entry("dms3.example"), Some(entry.clone()));
        assert_eq!(dir.remove("dms3.example"), Some(entry));
        assert!(dir.identify(&issued.cert_der).is_none());
        assert_eq!(Policy::parse("decline"), Some(Policy::Decline));
        assert_eq!(Policy::parse("ask"), None);
    }
}
