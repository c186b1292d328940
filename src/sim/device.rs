//! A simulated device that is a real DM client: its own DM tree (DevInfo, DevDetail, a DMAcc
//! per server, the bootstrap config root, and the enterprise and operator subtrees of the
//! spec's example), ACLs enforced by [`crate::dm`], and DM sessions over HTTP driven by the
//! sans-IO [`ClientSession`]. It checks the server's credentials before acting, keeps the
//! nonces it is given, and only ever talks to loopback addresses.
//!
//! Like a real device it follows its bootstrap config: when a server wrote
//! `./BootConfig/<x>/ServerURL`, [`SimDevice::follow_bootstrap`] fetches the account there and
//! installs it (docs/PROTOCOL.md section 7, "Bootstrap config").

use std::net::IpAddr;

use crate::dm::acl::{Acl, AclCmd};
use crate::dm::mo::{AuthLevel, AuthType, BootConfigEntry, DevDetail, DevInfo, DmAcc, MoError};
use crate::dm::props::Format;
use crate::dm::tree::{DmTree, NodeProps};
use crate::dm::uri::{NodeUri, UriLimits};
use crate::syncml::StatusCode;
use crate::syncml::auth::{AuthScheme, HMAC_HEADER, Nonce, Password};
use crate::syncml::session::SessionError;
use crate::syncml::session::client::{ClientConfig, ClientEvent, ClientSession};
use crate::syncml::session::creds::Credentials;

/// Why a simulated session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The device has no account for this server.
    #[error("no DM account for server {0}")]
    NoAccount(String),
    /// The account is dormant and no valid trigger asked for the session.
    #[error("the account for {0} is dormant: the device does not call it on its own")]
    Dormant(String),
    /// A Package #0 was refused (bad digest, unknown server, malformed).
    #[error("the notification was ignored: {0}")]
    BadTrigger(String),
    /// The account cannot be read.
    #[error("the DM account is unusable: {0}")]
    Account(#[from] MoError),
    /// A URL is not on loopback: the simulator never leaves this machine.
    #[error("refusing to contact {0}: simulated devices only talk to loopback addresses")]
    NotLoopback(String),
    /// The session was dropped on purpose (fault injection).
    #[error("the session was dropped (injected fault)")]
    Dropped,
    /// The device state file could not be read or written.
    #[error("device state file {path}: {reason}")]
    State {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The simulated device could not be set up (a bad name or account).
    #[error("the simulated device cannot be set up: {0}")]
    Setup(String),
    /// HTTP failed.
    #[error("HTTP request to the DM server failed: {0}")]
    Http(String),
    /// The server answered with an HTTP error.
    #[error("the DM server answered HTTP {0}")]
    HttpStatus(u16),
    /// A bootstrap was served but cannot be installed (not a TNDS account, a name already
    /// taken, an account for another server than the entry names).
    #[error("the bootstrap cannot be installed: {0}")]
    Bootstrap(String),
    /// The session broke.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// What a session did, for tests and the fleet's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionReport {
    /// Messages the device sent.
    pub messages: usize,
    /// (command, target, status) for every command executed.
    pub executed: Vec<(String, String, StatusCode)>,
    /// True when the server proved itself.
    pub server_authenticated: bool,
    /// True when the session ended normally.
    pub completed: bool,
    /// Set when the server refused the device's credentials.
    pub rejected: Option<StatusCode>,
    /// Exec requests that passed the ACL check: (target, data).
    pub execs: Vec<(String, Option<String>)>,
    /// Bytes of the messages the device sent.
    pub bytes_sent: usize,
    /// Bytes of the replies it received.
    pub bytes_received: usize,
}

/// An error with its causes, in plain words (reqwest's own message names only the request).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = c.source();
    }
    text
}

/// True when `url`'s host is a loopback address or `localhost`.
pub fn is_loopback_url(url: &str) -> bool {
    loopback_url(url).is_some()
}

/// `url` parsed, when its host is a loopback address or `localhost`: what a device sends a
/// request to (parsed once, for the check and for the request).
fn loopback_url(url: &str) -> Option<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    loopback.then_some(parsed)
}

/// How a simulated device is set up for one server.
#[derive(Debug, Clone)]
pub struct SimAccount {
    /// The server's ServerID.
    pub server_id: String,
    /// The server's device endpoint URL.
    pub server_url: String,
    /// The scheme both sides use.
    pub scheme: AuthScheme,
    /// The device's user name and secret (CLCRED).
    pub client: (String, String),
    /// The server's name and secret (SRVCRED).
    pub server: (String, String),
}

/// A simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// `./DevInfo/DevId`.
    pub dev_id: String,
    /// The device's DM tree.
    pub tree: DmTree,
    /// The largest message it accepts.
    pub max_msg_size: u64,
    /// When false, the first message of a session carries no credentials (407 first).
    pub cred_before_challenge: bool,
    /// Injected faults.
    pub faults: DeviceFaults,
    /// Whether the device understands TNDS (some real clients do not).
    pub tnds: bool,
    /// XML or WBXML on the wire.
    pub encoding: crate::syncml::session::Encoding,
    /// Bootstrap URLs already fetched (successfully or not): each is tried once, as a token
    /// is good for one use only. Kept by the device, not in its tree.
    bootstraps_tried: Vec<String>,
}

/// Faults a simulated device can be told to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFaults {
    /// Stop answering after this many messages of a session (the session is dropped).
    pub drop_after_messages: Option<usize>,
    /// Wait this long before sending each message (a slow device or network).
    pub delay: Option<std::time::Duration>,
    /// Commands on nodes under these URIs fail with 500 and change nothing.
    pub fail_paths: Vec<NodeUri>,
}

fn aauth_type(scheme: AuthScheme) -> AuthType {
    match scheme {
        AuthScheme::Basic => AuthType::Basic,
        AuthScheme::Md5 => AuthType::Digest,
        AuthScheme::Hmac => AuthType::Hmac,
    }
}

fn scheme_of(t: AuthType) -> Option<AuthScheme> {
    match t {
        AuthType::Basic => Some(AuthScheme::Basic),
        AuthType::Digest => Some(AuthScheme::Md5),
        AuthType::Hmac => Some(AuthScheme::Hmac),
        _ => None,
    }
}

impl SimDevice {
    /// A device with the standard MOs, an account for `account.server_id` that manages
    /// `./Vendor/Enterprise` and `./Vendor/Operator`, and an empty `./BootConfig`.
    pub fn new(dev_id: &str, account: &SimAccount) -> Result<SimDevice, SimError> {
        let mut tree = DmTree::new();
        DevInfo {
            dev_id: dev_id.to_owned(),
            man: "dmdeleg".to_owned(),
            model: "SimPhone".to_owned(),
            dmv: "1.2".to_owned(),
            lang: "en-US".to_owned(),
        }
        .install(&mut tree)?;
        DevDetail {
            uri_limits: UriLimits::ANDROID,
            dev_typ: "smartphone".to_owned(),
            oem: "dmdeleg".to_owned(),
            fwv: "1.0".to_owned(),
            swv: "1.0".to_owned(),
            hwv: "1.0".to_owned(),
            lrg_obj: true,
        }
        .install(&mut tree)?;
        let mut dev = SimDevice {
            dev_id: dev_id.to_owned(),
            tree,
            max_msg_size: 16_384,
            cred_before_challenge: true,
            faults: DeviceFaults::default(),
            tnds: true,
            encoding: crate::syncml::session::Encoding::Xml,
            bootstraps_tried: Vec::new(),
        };
        dev.add_account("dms", account)?;
        let sid = &account.server_id;
        let all = Acl::parse(&format!(
            "Add={sid}&Delete={sid}&Exec={sid}&Get={sid}&Replace={sid}"
        ))
        .map_err(|e| SimError::Setup(e.to_string()))?;
        let setup = |tree: &mut DmTree| -> Result<(), crate::dm::tree::TreeError> {
            let uri = |s: &str| NodeUri::parse(s).unwrap_or_default();
            tree.ensure_interior(
                &uri("./Vendor"),
                NodeProps::interior().with_acl(all.clone()),
            )?;
            tree.ensure_interior(&uri("./Vendor/Enterprise/Apps/Mail"), NodeProps::interior())?;
            tree.put_leaf(
                &uri("./Vendor/Enterprise/Apps/Mail/Server"),
                "imap.enterprise.example",
                NodeProps::leaf(Format::Chr, "text/plain"),
            )?;
            tree.put_leaf(
                &uri("./Vendor/Enterprise/Policy"),
                "strict",
                NodeProps::leaf(Format::Chr, "text/plain"),
            )?;
            tree.ensure_interior(
                &uri("./Vendor/Operator/Connectivity/APN"),
                NodeProps::interior(),
            )?;
            tree.put_leaf(
                &uri("./Vendor/Operator/Connectivity/APN/Name"),
                "internet",
                NodeProps::leaf(Format::Chr, "text/plain"),
            )?;
            tree.ensure_interior(
                &BootConfigEntry::default_root(),
                NodeProps::interior().with_acl(all.clone()),
            )?;
            tree.set_acl(
                &uri("./DMAcc"),
                Acl::parse(&format!("Add={sid}&Get={sid}&Replace={sid}")).unwrap_or_default(),
            )?;
            Ok(())
        };
        setup(&mut dev.tree).map_err(|e| SimError::Setup(e.to_string()))?;
        dev.tree.shrink_to_fit();
        Ok(dev)
    }

    /// Checks a Package #0 that reached the device: the trigger must name a server the device
    /// has an account for, and its digest must verify with that account's SRVCRED secret and
    /// the nonce the device issued (or, failing that, the resync nonce). Returns the ServerID
    /// and the session id to open; anything else is refused and the device does nothing.
    pub fn verify_trigger(&self, bytes: &[u8]) -> Result<(String, u16), SimError> {
        let (trigger, _) =
            crate::syncml::pkg0::parse(bytes).map_err(|e| SimError::BadTrigger(e.to_string()))?;
        let acc = DmAcc::find_by_server_id(&self.tree, &trigger.server_id)
            .ok_or_else(|| SimError::NoAccount(trigger.server_id.clone()))?;
        let sv = acc
            .server_cred()
            .ok_or_else(|| SimError::NoAccount(trigger.server_id.clone()))?;
        let secret = Password::new(sv.secret.as_ref().map(|s| s.expose()).unwrap_or(""));
        let stored = sv.data.clone().unwrap_or_default();
        let [resync, legacy] = Nonce::resync_candidates();
        let candidates: [&[u8]; 3] = [&stored, resync.as_bytes(), legacy.as_bytes()];
        crate::syncml::pkg0::verify(bytes, &secret, &candidates)
            .map_err(|e| SimError::BadTrigger(e.to_string()))?;
        Ok((trigger.server_id, trigger.session_id))
    }

    /// Installs a DMAcc for a server, as a bootstrap would.
    pub fn add_account(&mut self, name: &str, account: &SimAccount) -> Result<(), SimError> {
        let mut acc = DmAcc::new_digest(
            name,
            &account.server_id,
            &account.server_url,
            (&account.client.0, &account.client.1),
            (&account.server.0, &account.server.1),
        );
        let t = aauth_type(account.scheme);
        acc.aauth_pref = Some(t);
        for a in &mut acc.app_auth {
            a.auth_type = t;
        }
        let sid = &account.server_id;
        let acl = Acl::for_server(sid, &[AclCmd::Get, AclCmd::Replace, AclCmd::Delete])
            .map_err(|e| SimError::Setup(e.to_string()))?;
        acc.install(&mut self.tree, Some(acl))?;
        Ok(())
    }

    fn client_config(&self, acc: &DmAcc) -> Result<ClientConfig, SimError> {
        let missing = || SimError::NoAccount(acc.server_id.clone());
        let cl = acc.client_cred().ok_or_else(missing)?;
        let sv = acc.server_cred().ok_or_else(missing)?;
        let scheme = scheme_of(cl.auth_type).ok_or_else(missing)?;
        let server_scheme = scheme_of(sv.auth_type).unwrap_or(scheme);
        let nonce = |d: &Option<Vec<u8>>| d.clone().map_or_else(Nonce::resync, Nonce::from_bytes);
        Ok(ClientConfig {
            dev_id: self.dev_id.clone(),
            server_id: acc.server_id.clone(),
            server_uri: acc.server_uri().ok_or_else(missing)?.to_owned(),
            client: Credentials {
                scheme,
                name: cl.auth_name.clone().unwrap_or_default(),
                secret: Password::new(cl.secret.as_ref().map(|s| s.expose()).unwrap_or("")),
            },
            client_nonce: nonce(&cl.data),
            server: Credentials {
                scheme: server_scheme,
                name: sv.auth_name.clone().unwrap_or_default(),
                secret: Password::new(sv.secret.as_ref().map(|s| s.expose()).unwrap_or("")),
            },
            server_nonce: nonce(&sv.data),
            max_msg_size: self.max_msg_size,
            max_obj_size: 1 << 20,
            cred_before_challenge: self.cred_before_challenge,
            fail_paths: self.faults.fail_paths.clone(),
            tnds: self.tnds,
            encoding: self.encoding,
        })
    }

    /// Runs one DM session with the server `server_id`. `trigger` is the session id of a
    /// verified Package #0 (a server-initiated session); without it the session is the
    /// device's own, which a dormant account never gets.
    pub async fn session(
        &mut self,
        http: &reqwest::Client,
        server_id: &str,
        trigger: Option<u16>,
        session_id: u16,
    ) -> Result<SessionReport, SimError> {
        let acc = DmAcc::find_by_server_id(&self.tree, server_id)
            .ok_or_else(|| SimError::NoAccount(server_id.to_owned()))?;
        if acc.dormant && trigger.is_none() {
            return Err(SimError::Dormant(server_id.to_owned()));
        }
        let cfg = self.client_config(&acc)?;
        let devinfo = DevInfo::read(&self.tree)?;
        let mut session = ClientSession::new(
            cfg,
            devinfo,
            trigger.unwrap_or(session_id),
            trigger.is_some(),
        );
        let mut report = SessionReport::default();
        let mut result = Ok(());
        while let Some(tx) = session.poll_transmit() {
            let Some(url) = loopback_url(&tx.uri) else {
                result = Err(SimError::NotLoopback(tx.uri.clone()));
                break;
            };
            if self
                .faults
                .drop_after_messages
                .is_some_and(|n| report.messages >= n)
            {
                result = Err(SimError::Dropped);
                break;
            }
            if let Some(d) = self.faults.delay {
                tokio::time::sleep(d).await;
            }
            report.messages += 1;
            report.bytes_sent += tx.body.len();
            let mut req = http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, self.encoding.mime())
                .body(tx.body);
            if let Some(h) = &tx.hmac {
                req = req.header(HMAC_HEADER, h);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    result = Err(SimError::Http(error_chain(&e)));
                    break;
                }
            };
            if !resp.status().is_success() {
                result = Err(SimError::HttpStatus(resp.status().as_u16()));
                break;
            }
            let hmac = resp
                .headers()
                .get(HMAC_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    result = Err(SimError::Http(error_chain(&e)));
                    break;
                }
            };
            report.bytes_received += body.len();
            let mut fresh = [0u8; 16];
            // A failed OS generator only weakens this one nonce.
            let _ = crate::random::fill(&mut fresh);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .ok();
            if let Err(e) =
                session.handle_response(&mut self.tree, &body, hmac.as_deref(), fresh, now)
            {
                result = Err(e.into());
                break;
            }
            self.absorb(&acc, &mut session, &mut report);
        }
        self.absorb(&acc, &mut session, &mut report);
        result.map(|()| report)
    }

    /// The bootstrap URLs this device has fetched (or tried to), oldest first.
    pub fn bootstraps_tried(&self) -> &[String] {
        &self.bootstraps_tried
    }

    /// Follows the bootstrap config, as a device does when a DM session ends: takes the first
    /// entry under `./BootConfig` with a ServerURL not tried yet and whose ServerID (when
    /// given) has no account on the device yet, fetches that URL (loopback only) naming itself
    /// with the `X-DM-DevId` header, and adds the TNDS account it gets under `./DMAcc` as its
    /// own change, with the ACL the document carries and its secrets marked "No Get". The
    /// account is not dormant unless the document says so. Returns the new account's
    /// ServerID, or `None` when there was nothing to follow. The URL counts as tried whatever
    /// the outcome; on any failure nothing is installed.
    pub async fn follow_bootstrap(
        &mut self,
        http: &reqwest::Client,
    ) -> Result<Option<String>, SimError> {
        let entry = BootConfigEntry::all(&self.tree, &BootConfigEntry::default_root())
            .into_iter()
            .flatten()
            .find(|e| {
                !self.bootstraps_tried.contains(&e.server_url)
                    && e.server_id
                        .as_deref()
                        .is_none_or(|id| DmAcc::find_by_server_id(&self.tree, id).is_none())
            });
        let Some(entry) = entry else {
            return Ok(None);
        };
        self.bootstraps_tried.push(entry.server_url.clone());
        let Some(url) = loopback_url(&entry.server_url) else {
            return Err(SimError::NotLoopback(entry.server_url));
        };
        // The error text of a request names its URL, which carries the token: leave it out.
        let resp = http
            .get(url)
            .header(crate::engine::bootstrap::DEV_ID_HEADER, &self.dev_id)
            .send()
            .await
            .map_err(|e| SimError::Http(error_chain(&e.without_url())))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(SimError::HttpStatus(resp.status().as_u16()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| SimError::Http(error_chain(&e.without_url())))?;
        let bad = |why: String| SimError::Bootstrap(why);
        let doc = crate::dm::tnds::TndsDocument::from_xml(&body)
            .map_err(|e| bad(format!("not a TNDS document: {e}")))?;
        let [node] = doc.nodes.as_slice() else {
            return Err(bad(format!(
                "the document holds {} top nodes, not one account",
                doc.nodes.len()
            )));
        };
        let name = node.name.clone();
        let root = NodeUri::parse(crate::dm::mo::dmacc::DMACC_ROOT).unwrap_or_default();
        let mut work = self.tree.clone();
        if !work.exists(&root) {
            work.ensure_interior(&root, NodeProps::interior())
                .map_err(|e| bad(e.to_string()))?;
        }
        work.apply_tnds(
            crate::dm::tree::Principal::Device,
            &root,
            &doc,
            crate::dm::tree_tnds::TndsMode::Add,
            None,
        )
        .map_err(|e| bad(e.to_string()))?;
        DmAcc::protect_secrets(&mut work, &name);
        let acc = DmAcc::read(&work, &name)?;
        if let Some(id) = &entry.server_id
            && acc.server_id != *id
        {
            return Err(bad(format!(
                "the entry is for {id} but the account is for {}",
                acc.server_id
            )));
        }
        self.tree = work;
        Ok(Some(acc.server_id))
    }

    /// Writes the device (its whole tree, secrets included: it is the device's own storage) to
    /// `path` as TNDS.
    pub fn save(&self, path: &std::path::Path) -> Result<(), SimError> {
        let xml = self
            .tree
            .export_tnds_xml(
                crate::dm::tree::Principal::Device,
                &NodeUri::root(),
                &NodeUri::root(),
                &crate::dm::uri::TndsSelection::ALL,
            )
            .map_err(|e| SimError::State {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, xml)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| SimError::State {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Reads a device saved with [`SimDevice::save`].
    pub fn load(path: &std::path::Path) -> Result<SimDevice, SimError> {
        let err = |reason: String| SimError::State {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let doc =
            crate::dm::tnds::TndsDocument::from_xml(&bytes).map_err(|e| err(e.to_string()))?;
        let mut tree = DmTree::from_tnds(&doc, crate::dm::tree::TreeLimits::default())
            .map_err(|e| err(e.to_string()))?;
        // The root's ACL is not part of the document; a device's default applies.
        let detail = DevDetail::read(&tree)?;
        let mut limits = *tree.limits();
        limits.uri = detail.uri_limits;
        tree.set_limits(limits);
        let dev_id = DevInfo::read(&tree)?.dev_id;
        Ok(SimDevice {
            dev_id,
            tree,
            max_msg_size: 16_384,
            cred_before_challenge: true,
            faults: DeviceFaults::default(),
            tnds: true,
            encoding: crate::syncml::session::Encoding::Xml,
            bootstraps_tried: Vec::new(),
        })
    }

    /// Applies the session's events: nonces to the account, outcomes to the report.
    fn absorb(&mut self, acc: &DmAcc, session: &mut ClientSession, report: &mut SessionReport) {
        // A message may bring both sides' nonces: the account is read once for them.
        let mut nonces: Vec<(AuthLevel, Nonce)> = Vec::new();
        while let Some(e) = session.poll_event() {
            match e {
                ClientEvent::ClientNonce(n) => nonces.push((AuthLevel::ClCred, n)),
                ClientEvent::ServerNonce(n) => nonces.push((AuthLevel::SrvCred, n)),
                ClientEvent::ServerAuthenticated => report.server_authenticated = true,
                ClientEvent::ClientRejected(c) => report.rejected = Some(c),
                ClientEvent::Executed {
                    cmd,
                    target,
                    status,
                } => report.executed.push((cmd.to_owned(), target, status)),
                ClientEvent::Exec { target, data } => report.execs.push((target, data)),
                ClientEvent::Ended { aborted } => report.completed = !aborted,
                ClientEvent::ServerRejected(_) | ClientEvent::Redirected(_) => {}
            }
        }
        if !nonces.is_empty() {
            let nonces: Vec<(AuthLevel, &[u8])> =
                nonces.iter().map(|(l, n)| (*l, n.as_bytes())).collect();
            // The account may have been deleted by this very session.
            let _ = DmAcc::store_nonces(&mut self.tree, &acc.name, &nonces);
        }
    }
}
