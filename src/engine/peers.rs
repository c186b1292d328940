//! The peer servers this engine trusts: their ServerIDs, base URLs, how their certificates
//! are recognised (pinned, or issued by a trusted CA for a given name) and the policy for
//! their incoming requests. The peer endpoint asks [`PeerDirectory::identify`] which peer a
//! verified client certificate belongs to.

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::tls::{cert_fingerprint_sha256, cert_is_valid_for_name};

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
    /// The word used in configuration files and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Accept => "accept",
            Policy::Decline => "decline",
            Policy::Operator => "operator",
        }
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
}

/// The configured peers.
#[derive(Debug, Clone, Default)]
pub struct PeerDirectory {
    peers: Vec<PeerInfo>,
}

impl PeerDirectory {
    /// A directory of `peers`.
    pub fn new(peers: Vec<PeerInfo>) -> PeerDirectory {
        PeerDirectory { peers }
    }

    /// The peer a client certificate belongs to. A certificate that matches several peers
    /// (a misconfiguration) belongs to none, so no peer can speak for another.
    pub fn identify(&self, cert: &CertificateDer<'_>) -> Option<&PeerInfo> {
        let mut found = self.peers.iter().filter(|p| p.owns(cert));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }

    /// The peer with this ServerID.
    pub fn get(&self, server_id: &str) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.server_id == server_id)
    }

    /// Every peer.
    pub fn all(&self) -> &[PeerInfo] {
        &self.peers
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
        assert_eq!(dir.identify(&b_cert).unwrap().server_id, "dms3.example");
        let c = pki.issue("other.example", &["other.example"]).unwrap();
        assert!(dir.identify(&c.chain()[0]).is_none());
        // A directory where one certificate fits two peers names neither.
        let mut twice = dir.all().to_vec();
        twice.push(PeerInfo {
            server_id: "dms4.example".into(),
            auth: PeerAuth::Name("dms2.example".into()),
            ..twice[0].clone()
        });
        assert!(PeerDirectory::new(twice).identify(&a_cert).is_none());
    }
}
