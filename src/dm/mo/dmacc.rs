//! DMAcc 1.2 (`./DMAcc/<X>`, `urn:oma:mo:oma-dm-dmacc:1.0`): one account per DM server the
//! device trusts, with the server's address and the credentials each side presents
//! (`AAuthLevel` CLCRED: what the client sends; SRVCRED: what the server must send).
//!
//! The delegation extension `Ext/Delegation/Dormant` (DESIGN.md section 3) marks an account the
//! device must not open sessions to on its own.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use base64::Engine as _;

use super::{
    MoError, child_uri, entries_below, interior, required_below, text_below, text_leaf, typed_leaf,
};
use crate::dm::acl::Acl;
use crate::dm::ops::OpError;
use crate::dm::props::{AccessKind, AccessSet, Format};
use crate::dm::tnds::{TndsDocument, TndsNode};
use crate::dm::tree::{DmTree, NodeId, NodeProps, Principal};
use crate::dm::tree_tnds::TndsMode;
use crate::dm::uri::NodeUri;

/// The DMAcc MO identifier.
pub const DMACC_URN: &str = "urn:oma:mo:oma-dm-dmacc:1.0";
/// The older DDF name some devices use for DMAcc.
pub const DMACC_W7_DDF: &str = "org.openmobilealliance/1.0/w7";
/// Where accounts live.
pub const DMACC_ROOT: &str = "./DMAcc";
/// The leaf, relative to an account, that marks it dormant.
pub const DORMANT_LEAF: &str = "Ext/Delegation/Dormant";

/// A secret (AAuthSecret). Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for computing credentials.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $t:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// The value as the tree holds it.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $t),+ }
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                match s { $($t => Ok($name::$v),)+ _ => Err(()) }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// `AAuthType`: how a side authenticates.
    AuthType {
        /// HTTP basic authentication.
        HttpBasic => "HTTP-BASIC",
        /// HTTP digest authentication.
        HttpDigest => "HTTP-DIGEST",
        /// syncml:auth-basic.
        Basic => "BASIC",
        /// syncml:auth-md5.
        Digest => "DIGEST",
        /// syncml:auth-MAC (x-syncml-hmac header).
        Hmac => "HMAC",
        /// syncml:auth-X509.
        X509 => "X509",
        /// syncml:auth-securid.
        SecurId => "SECURID",
        /// syncml:auth-safeword.
        SafeWord => "SAFEWORD",
        /// syncml:auth-digipass.
        DigiPass => "DIGIPASS",
        /// The transport authenticates.
        Transport => "TRANSPORT",
    }
);

text_enum!(
    /// `AAuthLevel`: whose credentials an AppAuth entry holds.
    AuthLevel {
        /// What the client sends to the server.
        ClCred => "CLCRED",
        /// What the server must present to the client.
        SrvCred => "SRVCRED",
        /// OBEX transport.
        Obex => "OBEX",
        /// HTTP transport.
        Http => "HTTP",
    }
);

text_enum!(
    /// `AddrType` of an AppAddr.
    AddrType {
        /// A URI (the default).
        Uri => "URI",
        /// An IPv4 address.
        IPv4 => "IPv4",
        /// An IPv6 address.
        IPv6 => "IPv6",
    }
);

/// One `AppAddr/<X>` entry: where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAddr {
    /// The entry's node name.
    pub name: String,
    /// The address.
    pub addr: String,
    /// How to read it.
    pub addr_type: AddrType,
    /// `Port/<X>/PortNbr` entries: (node name, port).
    pub ports: Vec<(String, u16)>,
}

/// One `AppAuth/<X>` entry: one side's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAuth {
    /// The entry's node name.
    pub name: String,
    /// Whose credentials these are.
    pub level: AuthLevel,
    /// The authentication scheme.
    pub auth_type: AuthType,
    /// The user or server name.
    pub auth_name: Option<String>,
    /// The password or key.
    pub secret: Option<Secret>,
    /// The nonce (raw bytes; base64 in the tree).
    pub data: Option<Vec<u8>>,
}

/// A DMAcc account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmAcc {
    /// The account's node name under `./DMAcc`.
    pub name: String,
    /// `AppID`, `w7` for DM.
    pub app_id: String,
    /// `ServerID`: the server's identifier in ACLs and Package #0.
    pub server_id: String,
    /// `Name`: a display name.
    pub display_name: Option<String>,
    /// `PrefConRef`: the preferred connectivity reference.
    pub pref_con_ref: Option<String>,
    /// `ToConRef/<X>/ConRef` entries: (node name, reference).
    pub to_con_ref: Vec<(String, String)>,
    /// `AppAddr/<X>` entries.
    pub app_addr: Vec<AppAddr>,
    /// `AAuthPref`: the preferred scheme.
    pub aauth_pref: Option<AuthType>,
    /// `AppAuth/<X>` entries.
    pub app_auth: Vec<AppAuth>,
    /// `Ext/Delegation/Dormant`: the device must not open sessions to this server on its own.
    pub dormant: bool,
}

fn invalid(uri: &NodeUri, value: &str, reason: &'static str) -> MoError {
    MoError::Invalid {
        uri: uri.to_string(),
        value: value.chars().take(80).collect(),
        reason,
    }
}

impl DmAcc {
    /// A minimal account: one URI address and DIGEST credentials both ways.
    pub fn new_digest(
        name: &str,
        server_id: &str,
        addr: &str,
        client: (&str, &str),
        server: (&str, &str),
    ) -> DmAcc {
        let auth = |entry: &str, level, (n, s): (&str, &str)| AppAuth {
            name: entry.to_owned(),
            level,
            auth_type: AuthType::Digest,
            auth_name: Some(n.to_owned()),
            secret: Some(Secret::new(s)),
            data: None,
        };
        DmAcc {
            name: name.to_owned(),
            app_id: "w7".to_owned(),
            server_id: server_id.to_owned(),
            display_name: None,
            pref_con_ref: None,
            to_con_ref: Vec::new(),
            app_addr: vec![AppAddr {
                name: "1".to_owned(),
                addr: addr.to_owned(),
                addr_type: AddrType::Uri,
                ports: Vec::new(),
            }],
            aauth_pref: Some(AuthType::Digest),
            app_auth: vec![
                auth("ClientSide", AuthLevel::ClCred, client),
                auth("ServerSide", AuthLevel::SrvCred, server),
            ],
            dormant: false,
        }
    }

    /// The URI of the account named `name`.
    pub fn uri_of(name: &str) -> Result<NodeUri, MoError> {
        child_uri(&NodeUri::parse(DMACC_ROOT).unwrap_or_default(), name)
    }

    /// This account's URI.
    pub fn uri(&self) -> Result<NodeUri, MoError> {
        DmAcc::uri_of(&self.name)
    }

    /// Reads the account `./DMAcc/<name>`.
    pub fn read(tree: &DmTree, name: &str) -> Result<DmAcc, MoError> {
        let base = DmAcc::uri_of(name)?;
        let id = tree.find(&base).ok_or_else(|| MoError::Missing {
            uri: base.to_string(),
        })?;
        DmAcc::read_node(tree, name, id)
    }

    /// Reads the account held by the node `id`, named `name`. Leaves are looked up from their
    /// parents by name: no URI is built unless to report an error.
    fn read_node(tree: &DmTree, name: &str, id: NodeId) -> Result<DmAcc, MoError> {
        let invalid = |at: NodeId, value: &str, reason| invalid(&tree.uri_of(at), value, reason);
        if tree.is_leaf(id) {
            return Err(invalid(id, "", "an account is an interior node"));
        }
        let app_id = text_below(tree, id, "AppID").unwrap_or_else(|| "w7".to_owned());
        let server_id = required_below(tree, id, "ServerID")?;
        let mut to_con_ref = Vec::new();
        for (entry, entry_id) in entries_below(tree, id, "ToConRef") {
            let con_ref = required_below(tree, entry_id, "ConRef")?;
            to_con_ref.push((entry, con_ref));
        }
        let mut app_addr = Vec::new();
        for (entry, entry_id) in entries_below(tree, id, "AppAddr") {
            let addr = required_below(tree, entry_id, "Addr")?;
            let addr_type = match text_below(tree, entry_id, "AddrType") {
                None => AddrType::Uri,
                Some(t) => t
                    .parse()
                    .map_err(|_| invalid(entry_id, &t, "AddrType must be URI, IPv4 or IPv6"))?,
            };
            let mut ports = Vec::new();
            for (port, port_id) in entries_below(tree, entry_id, "Port") {
                let text = required_below(tree, port_id, "PortNbr")?;
                let nbr = text
                    .trim()
                    .parse::<u16>()
                    .map_err(|_| invalid(port_id, &text, "PortNbr must be a port number"))?;
                ports.push((port, nbr));
            }
            app_addr.push(AppAddr {
                name: entry,
                addr,
                addr_type,
                ports,
            });
        }
        let aauth_pref = match text_below(tree, id, "AAuthPref") {
            None => None,
            Some(t) if t.is_empty() => None,
            Some(t) => Some(
                t.parse()
                    .map_err(|_| invalid(id, &t, "AAuthPref must be an AAuthType"))?,
            ),
        };
        let mut app_auth = Vec::new();
        for (entry, entry_id) in entries_below(tree, id, "AppAuth") {
            let level_text = required_below(tree, entry_id, "AAuthLevel")?;
            let level = level_text.parse().map_err(|_| {
                invalid(
                    entry_id,
                    &level_text,
                    "AAuthLevel must be CLCRED, SRVCRED, OBEX or HTTP",
                )
            })?;
            let type_text = required_below(tree, entry_id, "AAuthType")?;
            let auth_type = type_text
                .parse()
                .map_err(|_| invalid(entry_id, &type_text, "AAuthType is not a known scheme"))?;
            let data = match tree.child(entry_id, "AAuthData") {
                None => None,
                Some(data_id) => {
                    let raw = tree.value(data_id).unwrap_or_default();
                    Some(if tree.props(data_id).format == Format::B64 {
                        raw.to_vec()
                    } else {
                        // Stored as base64 text (Android types AAuthData chr).
                        let text = String::from_utf8_lossy(raw);
                        base64::engine::general_purpose::STANDARD
                            .decode(text.trim())
                            .map_err(|_| invalid(data_id, "", "AAuthData must be base64"))?
                    })
                }
            };
            app_auth.push(AppAuth {
                name: entry,
                level,
                auth_type,
                auth_name: text_below(tree, entry_id, "AAuthName"),
                secret: text_below(tree, entry_id, "AAuthSecret").map(Secret),
                data,
            });
        }
        let dormant = match text_below(tree, id, DORMANT_LEAF) {
            None => false,
            Some(t) => match t.trim() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                _ => return Err(invalid(id, &t, "Dormant must be true or false")),
            },
        };
        Ok(DmAcc {
            name: name.to_owned(),
            app_id,
            server_id,
            display_name: text_below(tree, id, "Name"),
            pref_con_ref: text_below(tree, id, "PrefConRef"),
            to_con_ref,
            app_addr,
            aauth_pref,
            app_auth,
            dormant,
        })
    }

    /// The node `./DMAcc`, when the tree has one.
    fn root_node(tree: &DmTree) -> Option<NodeId> {
        tree.child(tree.root(), "DMAcc")
    }

    /// Every account under `./DMAcc`, in name order. Accounts that cannot be read are reported
    /// as errors next to the good ones.
    pub fn all(tree: &DmTree) -> Vec<Result<DmAcc, MoError>> {
        let Some(root) = DmAcc::root_node(tree) else {
            return Vec::new();
        };
        tree.children(root)
            .map(|(name, id)| DmAcc::read_node(tree, name, id))
            .collect()
    }

    /// The account whose ServerID is `server_id` (the first in name order that can be read).
    /// Only accounts whose `ServerID` leaf holds `server_id` are read in full.
    pub fn find_by_server_id(tree: &DmTree, server_id: &str) -> Option<DmAcc> {
        let root = DmAcc::root_node(tree)?;
        tree.children(root)
            .filter(|(_, id)| {
                tree.child(*id, "ServerID")
                    .and_then(|leaf| tree.value(leaf))
                    .is_some_and(|v| v == server_id.as_bytes())
            })
            .find_map(|(name, id)| {
                DmAcc::read_node(tree, name, id)
                    .ok()
                    .filter(|a| a.server_id == server_id)
            })
    }

    /// The credentials the client sends (CLCRED).
    pub fn client_cred(&self) -> Option<&AppAuth> {
        self.app_auth.iter().find(|a| a.level == AuthLevel::ClCred)
    }

    /// The credentials the server must present (SRVCRED).
    pub fn server_cred(&self) -> Option<&AppAuth> {
        self.app_auth.iter().find(|a| a.level == AuthLevel::SrvCred)
    }

    /// The first URI address: where the client opens sessions.
    pub fn server_uri(&self) -> Option<&str> {
        self.app_addr
            .iter()
            .find(|a| a.addr_type == AddrType::Uri)
            .map(|a| a.addr.as_str())
    }

    /// The account as a TNDS node, ready for an Add at `./DMAcc`. `acl`, when given, becomes
    /// the account node's ACL. Secrets are included: this is what a server sends.
    pub fn to_tnds_node(&self, acl: Option<Acl>) -> TndsNode {
        let mut kids = vec![
            text_leaf("AppID", &self.app_id),
            text_leaf("ServerID", &self.server_id),
        ];
        if let Some(n) = &self.display_name {
            kids.push(text_leaf("Name", n));
        }
        if let Some(p) = &self.pref_con_ref {
            kids.push(text_leaf("PrefConRef", p));
        }
        if !self.to_con_ref.is_empty() {
            let entries = self
                .to_con_ref
                .iter()
                .map(|(n, r)| interior(n, "", vec![text_leaf("ConRef", r)]))
                .collect();
            kids.push(interior("ToConRef", "", entries));
        }
        let addrs = self
            .app_addr
            .iter()
            .map(|a| {
                let mut e = vec![
                    text_leaf("Addr", &a.addr),
                    text_leaf("AddrType", a.addr_type.as_str()),
                ];
                if !a.ports.is_empty() {
                    let ports = a
                        .ports
                        .iter()
                        .map(|(n, p)| interior(n, "", vec![text_leaf("PortNbr", &p.to_string())]))
                        .collect();
                    e.push(interior("Port", "", ports));
                }
                interior(&a.name, "", e)
            })
            .collect();
        kids.push(interior("AppAddr", "", addrs));
        if let Some(p) = self.aauth_pref {
            kids.push(text_leaf("AAuthPref", p.as_str()));
        }
        let auths = self
            .app_auth
            .iter()
            .map(|a| {
                let mut e = vec![
                    text_leaf("AAuthLevel", a.level.as_str()),
                    text_leaf("AAuthType", a.auth_type.as_str()),
                ];
                if let Some(n) = &a.auth_name {
                    e.push(text_leaf("AAuthName", n));
                }
                if let Some(s) = &a.secret {
                    e.push(text_leaf("AAuthSecret", s.expose()));
                }
                if let Some(d) = &a.data {
                    e.push(typed_leaf(
                        "AAuthData",
                        Format::B64,
                        "application/octet-stream",
                        &base64::engine::general_purpose::STANDARD.encode(d),
                    ));
                }
                interior(&a.name, "", e)
            })
            .collect();
        kids.push(interior("AppAuth", "", auths));
        if self.dormant {
            kids.push(interior(
                "Ext",
                "",
                vec![interior(
                    "Delegation",
                    "",
                    vec![typed_leaf("Dormant", Format::Bool, "text/plain", "true")],
                )],
            ));
        }
        let mut node = interior(&self.name, DMACC_URN, kids);
        if let (Some(acl), Some(rt)) = (acl, node.rt.as_mut()) {
            rt.acl = Some(acl);
        }
        node
    }

    /// The account as a TNDS document for an Add whose target is `./DMAcc`.
    pub fn to_tnds(&self, acl: Option<Acl>) -> TndsDocument {
        TndsDocument {
            nodes: vec![self.to_tnds_node(acl)],
            ..TndsDocument::default()
        }
    }

    /// Writes the account into the tree as the device's own change (its bootstrap), with
    /// `acl` on the account node, replacing an account of the same name. Secrets and nonces are
    /// marked "No Get", as the DMAcc DDF requires.
    pub fn install(&self, tree: &mut DmTree, acl: Option<Acl>) -> Result<(), MoError> {
        let uri = self.uri()?;
        let mut work = tree.clone();
        if work.exists(&uri) {
            work.remove(&uri).map_err(|_| MoError::Missing {
                uri: uri.to_string(),
            })?;
        }
        let root = NodeUri::parse(DMACC_ROOT).unwrap_or_default();
        if !work.exists(&root) {
            work.ensure_interior(&root, crate::dm::tree::NodeProps::interior())
                .map_err(|e| OpError::BadRequest {
                    reason: e.to_string(),
                })?;
        }
        work.apply_tnds(
            Principal::Device,
            &root,
            &self.to_tnds(acl),
            TndsMode::Add,
            None,
        )?;
        DmAcc::protect_secrets(&mut work, &self.name);
        *tree = work;
        Ok(())
    }

    /// Marks every `AppAuth/<X>/AAuthSecret` and `AAuthData` of the account "No Get" (the
    /// DMAcc DDF's access type), so no server can read them back.
    pub fn protect_secrets(tree: &mut DmTree, name: &str) {
        if let Some(id) = DmAcc::uri_of(name).ok().and_then(|base| tree.find(&base)) {
            DmAcc::protect_secrets_at(tree, id);
        }
    }

    /// [`DmAcc::protect_secrets`] for the account held by node `id`.
    fn protect_secrets_at(tree: &mut DmTree, id: NodeId) {
        for (_, entry_id) in entries_below(tree, id, "AppAuth") {
            for leaf in ["AAuthSecret", "AAuthData"] {
                // Get goes; whatever else the node's description allowed or refused stays.
                if let Some(leaf_id) = tree.child(entry_id, leaf)
                    && tree.props(leaf_id).access.contains(AccessKind::Get)
                {
                    tree.update_props(leaf_id, |p| p.access = p.access.without(AccessKind::Get));
                }
            }
        }
    }

    /// [`DmAcc::protect_secrets`] for every account under `./DMAcc`: what a device's DM
    /// client does after a server's command wrote there, however the nodes came (a TNDS Add,
    /// leaf by leaf, a Copy). A DDF's access type belongs to the node's definition, not to
    /// the command that made it.
    pub fn protect_all_secrets(tree: &mut DmTree) {
        let Some(root) = NodeUri::parse(DMACC_ROOT).ok().and_then(|r| tree.find(&r)) else {
            return;
        };
        let accounts: Vec<NodeId> = tree.child_ids(root).collect();
        for id in accounts {
            DmAcc::protect_secrets_at(tree, id);
        }
    }

    /// Stores a new nonce in the account's AppAuth entry of `level` (the device's own change).
    pub fn store_nonce(
        tree: &mut DmTree,
        name: &str,
        level: AuthLevel,
        nonce: &[u8],
    ) -> Result<(), MoError> {
        DmAcc::store_nonces(tree, name, &[(level, nonce)])
    }

    /// Stores each nonce as [`DmAcc::store_nonce`] would, reading the account once (a message
    /// of a session may bring both sides' nonces). Every nonce is tried; the first error is
    /// returned.
    pub fn store_nonces(
        tree: &mut DmTree,
        name: &str,
        nonces: &[(AuthLevel, &[u8])],
    ) -> Result<(), MoError> {
        let base = DmAcc::uri_of(name)?;
        let id = tree.find(&base).ok_or_else(|| MoError::Missing {
            uri: base.to_string(),
        })?;
        let acc = DmAcc::read_node(tree, name, id)?;
        let mut result = Ok(());
        for (level, nonce) in nonces {
            let stored = acc.put_nonce(tree, id, *level, nonce);
            if result.is_ok() {
                result = stored;
            }
        }
        result
    }

    /// Writes `nonce` to `AppAuth/<entry of level>/AAuthData` of this account, held by the node
    /// `id`, as the device's own `put_leaf` of a b64 "No Get" leaf.
    fn put_nonce(
        &self,
        tree: &mut DmTree,
        id: NodeId,
        level: AuthLevel,
        nonce: &[u8],
    ) -> Result<(), MoError> {
        static PROPS: LazyLock<NodeProps> = LazyLock::new(|| {
            NodeProps::leaf(Format::B64, "application/octet-stream")
                .with_access(AccessSet::ALL.without(AccessKind::Get))
        });
        let entry = self
            .app_auth
            .iter()
            .find(|a| a.level == level)
            .ok_or_else(|| MoError::Missing {
                uri: format!("{DMACC_ROOT}/{}/AppAuth/<{level}>", self.name),
            })?;
        // The usual case, done in place: the leaf is there and `put_leaf` could not refuse.
        if nonce.len() <= tree.limits().max_value_len
            && let Some(entry_id) = tree.find_below(id, "AppAuth")
            && let Some(entry_id) = tree.child(entry_id, &entry.name)
            && let Some(leaf) = tree.child(entry_id, "AAuthData")
            && tree.is_leaf(leaf)
            && tree.child_uri_fits(entry_id, "AAuthData")
        {
            if *tree.props(leaf) != *PROPS {
                tree.set_props(leaf, PROPS.clone());
            }
            tree.set_value(leaf, nonce.to_vec());
            return Ok(());
        }
        let uri = child_uri(&self.uri()?, &format!("AppAuth/{}/AAuthData", entry.name))?;
        tree.put_leaf(&uri, nonce.to_vec(), PROPS.clone())
            .map_err(|e| OpError::BadRequest {
                reason: e.to_string(),
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::acl::AclCmd;
    use crate::dm::uri::Target;

    fn sample() -> DmAcc {
        let mut acc = DmAcc::new_digest(
            "DelegatedSrv",
            "srv.delegated.example",
            "https://127.0.0.1:8443/dm",
            ("device-0001", "clientSecret"),
            ("srv.delegated.example", "serverSecret"),
        );
        acc.app_auth[0].data = Some(vec![0, 0, 0, 0]);
        acc.app_addr[0].ports.push(("1".into(), 8443));
        acc.to_con_ref
            .push(("1".into(), "./ConnMO/Internet".into()));
        acc.display_name = Some("Delegated DM server".into());
        acc.dormant = true;
        acc
    }

    #[test]
    fn protecting_secrets_takes_get_away_and_keeps_the_rest_of_the_access_type() {
        let mut tree = DmTree::new();
        sample().install(&mut tree, None).unwrap();
        let uri = |s: &str| NodeUri::parse(s).unwrap();
        let secret = tree
            .find(&uri("./DMAcc/DelegatedSrv/AppAuth/ServerSide/AAuthSecret"))
            .unwrap();
        let nonce = tree
            .find(&uri("./DMAcc/DelegatedSrv/AppAuth/ClientSide/AAuthData"))
            .unwrap();
        assert_eq!(
            tree.props(secret).access,
            AccessSet::ALL.without(AccessKind::Get)
        );
        // A description that refuses Delete as well keeps refusing it.
        let strict = AccessSet::ALL
            .without(AccessKind::Get)
            .without(AccessKind::Delete);
        tree.update_props(nonce, |p| p.access = strict);
        tree.update_props(secret, |p| p.access = AccessSet::ALL);
        DmAcc::protect_all_secrets(&mut tree);
        assert_eq!(tree.props(nonce).access, strict);
        assert_eq!(
            tree.props(secret).access,
            AccessSet::ALL.without(AccessKind::Get)
        );
    }

    #[test]
    fn install_read_round_trip() {
        let acc = sample();
        let mut tree = DmTree::new();
        let acl = Acl::for_server(
            "srv.delegated.example",
            &[AclCmd::Get, AclCmd::Replace, AclCmd::Delete],
        )
        .unwrap();
        acc.install(&mut tree, Some(acl)).unwrap();
        let back = DmAcc::read(&tree, "DelegatedSrv").unwrap();
        assert_eq!(back, acc);
        assert_eq!(back.server_uri(), Some("https://127.0.0.1:8443/dm"));
        assert_eq!(
            back.server_cred()
                .unwrap()
                .secret
                .as_ref()
                .unwrap()
                .expose(),
            "serverSecret"
        );
        assert!(!format!("{back:?}").contains("serverSecret"));
        let found = DmAcc::find_by_server_id(&tree, "srv.delegated.example").unwrap();
        assert_eq!(found.name, "DelegatedSrv");
        // Secrets are "No Get" for every server, even one the ACL lets read the account.
        let secret = Target::parse("./DMAcc/DelegatedSrv/AppAuth/ServerSide/AAuthSecret").unwrap();
        assert_eq!(
            tree.get(Principal::Server("srv.delegated.example"), &secret)
                .unwrap_err()
                .status()
                .0,
            405
        );
        DmAcc::store_nonce(
            &mut tree,
            "DelegatedSrv",
            AuthLevel::SrvCred,
            b"nonce-bytes",
        )
        .unwrap();
        let again = DmAcc::read(&tree, "DelegatedSrv").unwrap();
        assert_eq!(
            again.server_cred().unwrap().data.as_deref(),
            Some(&b"nonce-bytes"[..])
        );
    }

    #[test]
    fn nonces_are_stored_as_put_leaf_would() {
        let mut tree = DmTree::new();
        sample().install(&mut tree, None).unwrap();
        let mut expect = tree.clone();
        // ClientSide has an AAuthData leaf (written in place), ServerSide none (created).
        DmAcc::store_nonces(
            &mut tree,
            "DelegatedSrv",
            &[(AuthLevel::ClCred, b"c1"), (AuthLevel::SrvCred, b"s1")],
        )
        .unwrap();
        for (entry, value) in [("ClientSide", b"c1"), ("ServerSide", b"s1")] {
            let u =
                NodeUri::parse(&format!("./DMAcc/DelegatedSrv/AppAuth/{entry}/AAuthData")).unwrap();
            let props = NodeProps::leaf(Format::B64, "application/octet-stream")
                .with_access(AccessSet::ALL.without(AccessKind::Get));
            expect.put_leaf(&u, value.to_vec(), props).unwrap();
        }
        assert!(tree.same_as(&expect), "{:?}", tree.diff(&expect));
        let acc = DmAcc::read(&tree, "DelegatedSrv").unwrap();
        assert_eq!(acc.client_cred().unwrap().data.as_deref(), Some(&b"c1"[..]));
        assert_eq!(acc.server_cred().unwrap().data.as_deref(), Some(&b"s1"[..]));
        assert!(matches!(
            DmAcc::store_nonce(&mut tree, "DelegatedSrv", AuthLevel::Http, b"x"),
            Err(MoError::Missing { .. })
        ));
        assert!(DmAcc::store_nonce(&mut tree, "Nobody", AuthLevel::ClCred, b"x").is_err());
        // Past the tree's URI limits, the nonce is refused as `put_leaf` refuses it.
        let mut limits = *tree.limits();
        limits.uri.max_tot_len = 40;
        tree.set_limits(limits);
        let before = tree.clone();
        assert!(DmAcc::store_nonce(&mut tree, "DelegatedSrv", AuthLevel::ClCred, b"c2").is_err());
        assert!(tree.same_as(&before));
    }

    #[test]
    fn the_facts_sheet_example_reads_as_an_account() {
        let xml = include_bytes!("../../../tests/data/tnds-dmacc-delegated.xml");
        let doc = TndsDocument::from_xml(xml).unwrap();
        let mut tree = DmTree::new();
        let root = NodeUri::parse(DMACC_ROOT).unwrap();
        tree.ensure_interior(&root, crate::dm::tree::NodeProps::interior())
            .unwrap();
        tree.apply_tnds(Principal::Device, &root, &doc, TndsMode::Add, None)
            .unwrap();
        let acc = DmAcc::read(&tree, "DelegatedSrv").unwrap();
        assert_eq!(acc.server_id, "srv.delegated.example");
        assert_eq!(
            acc.client_cred().unwrap().auth_name.as_deref(),
            Some("device-0001")
        );
        assert_eq!(
            acc.client_cred().unwrap().data.as_deref(),
            Some(&[0u8; 4][..])
        );
        assert_eq!(acc.aauth_pref, Some(AuthType::Digest));
        assert!(!acc.dormant);
    }

    #[test]
    fn the_shared_synthetic_vector_is_not_a_complete_account() {
        // It holds ./DMAcc with a ServerID leaf directly under it: not a DMAcc 1.2 account.
        let xml = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/vectors/spec-examples/synthetic-tnds-dmacc.xml"
        ))
        .unwrap();
        let doc = TndsDocument::from_xml(&xml).unwrap();
        let mut tree = DmTree::new();
        tree.apply_tnds(
            Principal::Device,
            &NodeUri::root(),
            &doc,
            TndsMode::Add,
            None,
        )
        .unwrap();
        assert_eq!(
            tree.value_str(&NodeUri::parse("./DMAcc/ServerID").unwrap()),
            Some("funambol")
        );
        let accounts = DmAcc::all(&tree);
        assert_eq!(accounts.len(), 1);
        let err = accounts[0].clone().unwrap_err();
        assert!(err.to_string().contains("interior"), "{err}");
    }

    #[test]
    fn bad_values_are_reported_with_their_node() {
        let mut tree = DmTree::new();
        sample().install(&mut tree, None).unwrap();
        let uri = NodeUri::parse("./DMAcc/DelegatedSrv/AppAuth/ClientSide/AAuthLevel").unwrap();
        tree.put_leaf(
            &uri,
            "NOPE",
            crate::dm::tree::NodeProps::leaf(Format::Chr, "text/plain"),
        )
        .unwrap();
        let err = DmAcc::read(&tree, "DelegatedSrv").unwrap_err();
        assert!(err.to_string().contains("AAuthLevel"), "{err}");
        assert!(matches!(
            DmAcc::read(&tree, "Nobody"),
            Err(MoError::Missing { .. })
        ));
    }
}
