//! The eight server-to-server delegation messages and their TNDS encoding (DESIGN.md section 3,
//! docs/PROTOCOL.md sections 3 and 4).
//!
//! A message is one TNDS `MgmtTree` whose only top node is the interior node `Delegation`
//! (`Format` node, `Type`/`DDFName` [`DDF_NAME`]). Its leaves carry the common header
//! (`MsgType`, `DelegationID`, `Seq`, `DMServerID`, `DelType`, `Approach`, `Lease`) and the
//! body of the message type. Reading is lenient where the protocol allows it (unknown leaves
//! are ignored, surrounding whitespace around numbers and keywords is tolerated) and strict
//! everywhere else: a required leaf that is missing, a value that does not parse, a known leaf
//! given twice or a body that breaks a rule (overlapping paths, a foreign account) is a
//! [`MessageError`], which the peer endpoint answers with 400 and reason 3001.

use std::fmt;
use std::str::FromStr;

use super::reason::ReasonCode;
use crate::dm::acl::is_valid_server_id;
use crate::dm::mo::dmacc::DmAcc;
use crate::dm::mo::interior;
use crate::dm::props::NodeType;
use crate::dm::tnds::{TndsDocument, TndsError, TndsLimits, TndsNode};
use crate::dm::tree::{DmTree, TreeLimits};
use crate::dm::uri::NodeUri;

/// The media type of a delegation message body (registered with IANA for this protocol).
pub const MEDIA_TYPE: &str = "application/vnd.dm.delegation+xml";

/// The `DDFName` of the `Delegation` node: names this encoding and its version.
pub const DDF_NAME: &str = "urn:dmdeleg:delegation:1.0";

/// The name of the top node of every message.
pub const ROOT_NODE: &str = "Delegation";

/// The largest message body accepted from the network, in bytes (1 MiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// The TNDS limits [`Message::from_xml`] enforces on network input.
pub const WIRE_LIMITS: TndsLimits = TndsLimits {
    max_depth: 32,
    max_value_len: 64 << 10,
    max_nodes: 4096,
    max_input_len: MAX_MESSAGE_LEN,
};

/// Longest excerpt of a bad value quoted in an error.
const EXCERPT: usize = 64;

fn excerpt(value: &str) -> String {
    let mut s: String = value.chars().take(EXCERPT).collect();
    if value.chars().nth(EXCERPT).is_some() {
        s.push('…');
    }
    s
}

/// Trims XML whitespace (around keywords and numbers only; text values are kept exactly).
fn trim_ws(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

/// Why a delegation message was refused. Every variant is reason code 3001 (BadMessage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The body is not a well-formed TNDS document (or is over the size limits).
    #[error("not a TNDS document: {0}")]
    Tnds(#[from] TndsError),
    /// The document is TNDS but not a delegation message (wrong or several top nodes, wrong
    /// `DDFName`).
    #[error("not a delegation message: {reason}")]
    NotDelegation {
        /// Why.
        reason: String,
    },
    /// A required leaf (or interior node) is missing.
    #[error("missing required leaf Delegation/{leaf}")]
    Missing {
        /// The leaf's path below `Delegation`, e.g. `DelInfo/DevId`.
        leaf: String,
    },
    /// A leaf the message type knows appears more than once.
    #[error("leaf Delegation/{leaf} appears more than once")]
    Duplicate {
        /// The leaf's path below `Delegation`.
        leaf: String,
    },
    /// A leaf holds a value that is not valid.
    #[error("leaf Delegation/{leaf} holds `{value}`, which is not valid: {reason}")]
    BadValue {
        /// The leaf's path below `Delegation`.
        leaf: String,
        /// The value, shortened (never a secret).
        value: String,
        /// What is expected.
        reason: String,
    },
}

impl MessageError {
    /// The reason code to answer with: always 3001 (BadMessage).
    pub fn reason_code(&self) -> ReasonCode {
        ReasonCode::BAD_MESSAGE
    }

    /// The leaf the error is about (path below `Delegation`), when it is about one.
    pub fn leaf(&self) -> Option<&str> {
        match self {
            MessageError::Missing { leaf }
            | MessageError::Duplicate { leaf }
            | MessageError::BadValue { leaf, .. } => Some(leaf),
            MessageError::Tnds(_) | MessageError::NotDelegation { .. } => None,
        }
    }

    fn bad(leaf: impl Into<String>, value: &str, reason: impl Into<String>) -> MessageError {
        MessageError::BadValue {
            leaf: leaf.into(),
            value: excerpt(value),
            reason: reason.into(),
        }
    }

    fn missing(leaf: impl Into<String>) -> MessageError {
        MessageError::Missing { leaf: leaf.into() }
    }
}

// ---------------------------------------------------------------------------------------------
// Header types
// ---------------------------------------------------------------------------------------------

/// A delegation's identifier: a UUID in canonical form (8-4-4-4-12 lower-case hex digits),
/// chosen by the initiator and carried by every message of the delegation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DelegationId(String);

impl DelegationId {
    /// Reads a UUID in 8-4-4-4-12 form. Upper-case hex digits are accepted and lower-cased;
    /// any UUID version is accepted.
    pub fn parse(text: &str) -> Result<DelegationId, MessageError> {
        let t = trim_ws(text);
        let ok = t.len() == 36
            && t.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_hexdigit(),
            });
        if ok {
            Ok(DelegationId(t.to_ascii_lowercase()))
        } else {
            Err(MessageError::bad(
                L_ID,
                text,
                "a UUID in 8-4-4-4-12 hexadecimal form is expected",
            ))
        }
    }

    /// A version 4 (random) UUID made from 16 random bytes; the version and variant bits are
    /// set here, so any bytes will do.
    pub fn from_bytes(mut bytes: [u8; 16]) -> DelegationId {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        DelegationId::canonical(&bytes)
    }

    /// A version 7 UUID (RFC 9562): the Unix time in milliseconds, then random bits. IDs made
    /// close together sort close together, so a store's indexes on them stay local (a random
    /// UUID lands each new delegation on a different index page).
    pub fn time_ordered(unix_ms: u64, random: [u8; 10]) -> DelegationId {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        bytes[6] = (bytes[6] & 0x0f) | 0x70;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        DelegationId::canonical(&bytes)
    }

    fn canonical(bytes: &[u8; 16]) -> DelegationId {
        let mut s = String::with_capacity(36);
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s.push('-');
            }
            s.push_str(&format!("{b:02x}"));
        }
        DelegationId(s)
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DelegationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DelegationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DelegationId({})", self.0)
    }
}

impl FromStr for DelegationId {
    type Err = MessageError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DelegationId::parse(s)
    }
}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident, $leaf:expr, $expect:literal {
        $($(#[$vm:meta])* $v:ident => $t:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in protocol order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// The value as written on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $t),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = MessageError;
            /// Reads the wire name (exact case; surrounding XML whitespace allowed).
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match trim_ws(s) {
                    $($t => Ok($name::$v),)+
                    _ => Err(MessageError::bad($leaf, s, $expect)),
                }
            }
        }
    };
}

wire_enum!(
    /// The message type, leaf `MsgType`.
    MsgType, L_MSG_TYPE, "not a known message type" {
        /// `DELEGATION_NOTIF`: the initiator asks the peer to take part in a delegation.
        Notif => "DELEGATION_NOTIF",
        /// `DELEGATION_RESP`: the answer to a notification (accept or decline).
        Resp => "DELEGATION_RESP",
        /// `DELEGATION_START`: the delegated server's account, for the delegating server to
        /// install on the device (DMAcc approach).
        Start => "DELEGATION_START",
        /// `DELEGATION_PREPARED`: the device holds the dormant account and the ACLs.
        Prepared => "DELEGATION_PREPARED",
        /// `DELEGATION_FAILURE`: the delegation failed or was aborted; both sides roll back.
        Failure => "DELEGATION_FAILURE",
        /// `DELEGATION_CONFIRM`: the delegated server has managed the device.
        Confirm => "DELEGATION_CONFIRM",
        /// `BOOTSTRAP_SRV_URL_REQ`: the delegating server asks for a bootstrap server URL.
        BootstrapUrlReq => "BOOTSTRAP_SRV_URL_REQ",
        /// `BOOTSTRAP_SRV_URL_DELIVERY`: the delegated server's bootstrap server URL.
        BootstrapUrlDelivery => "BOOTSTRAP_SRV_URL_DELIVERY",
    }
);

wire_enum!(
    /// The delegation type, leaf `DelType`.
    DelType, L_DEL_TYPE, "Full or Partial is expected" {
        /// The whole device: the delegating server hands over every right it holds.
        Full => "Full",
        /// Listed subtrees only; the delegating server keeps the rest.
        Partial => "Partial",
    }
);

wire_enum!(
    /// How the device gets the delegated server's account, leaf `Approach`.
    Approach, L_APPROACH, "DMAcc or BootstrapURL is expected" {
        /// The delegating server installs the delegated server's DMAcc on the device.
        DmAcc => "DMAcc",
        /// The device bootstraps from the delegated server's bootstrap server URL.
        BootstrapUrl => "BootstrapURL",
    }
);

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// The device a delegation is about (the `DelInfo` node of DELEGATION_NOTIF).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceInfo {
    /// `DelInfo/DevId`: the device identifier (`./DevInfo/DevId`, e.g. `IMEI:350000000000001`).
    pub dev_id: String,
    /// `DelInfo/Man`: the manufacturer (`./DevInfo/Man`).
    pub man: String,
    /// `DelInfo/Mod`: the model (`./DevInfo/Mod`).
    pub model: String,
    /// `DelInfo/Notify`: the device's push address for Package #0, if the sender shares it.
    pub notify: Option<String>,
}

/// Hides the values of secret leaves in a subtree.
fn redact(node: &mut TndsNode) {
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        let lower = n.name.to_ascii_lowercase();
        if n.value.is_some()
            && (lower == "aauthsecret"
                || lower == "aauthdata"
                || lower.contains("passw")
                || lower.contains("secret"))
        {
            n.value = Some("********".to_owned());
        }
        stack.extend(n.children.iter_mut());
    }
}

/// The role of the server that sends DELEGATION_NOTIF (leaf `Sender`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sender {
    /// `Delegating`: DMS-1 offers the device.
    Delegating,
    /// `Delegated`: DMS-2 asks for it.
    Delegated,
}

impl Sender {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Delegating => "Delegating",
            Sender::Delegated => "Delegated",
        }
    }
}

/// The part of a message that depends on its type.
#[derive(Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a handful of messages per delegation; plain fields keep matching simple"
)]
pub enum Body {
    /// DELEGATION_NOTIF: the device and the delegated subtrees (`[.]` for Full).
    Notif {
        /// `Sender`: whether the initiator is the delegating or the delegated server, which
        /// tells the receiver its own role.
        sender: Sender,
        /// `DelInfo/DevId`, `Man`, `Mod`, `Notify`.
        device: DeviceInfo,
        /// `DelInfo/Paths/<n>`, in order of `n`.
        paths: Vec<NodeUri>,
    },
    /// DELEGATION_RESP: accept or decline.
    Resp {
        /// `Ack`: true to accept.
        ack: bool,
        /// `Reason`: free text, usually given with a decline.
        reason: Option<String>,
    },
    /// DELEGATION_START: the delegated server's account.
    Start {
        /// The `DMAcc/<name>` account node (its name is the account's name), with secrets.
        dmacc: TndsNode,
        /// The `ConnMO/<name>` node the account refers to, if any.
        conn: Option<TndsNode>,
    },
    /// DELEGATION_PREPARED: no body.
    Prepared,
    /// DELEGATION_FAILURE: why.
    Failure {
        /// `ReasonCode`.
        code: ReasonCode,
        /// `Description`: free text.
        description: String,
    },
    /// DELEGATION_CONFIRM: the delegated server's session with the device.
    Confirm {
        /// `SessionID`: the DM session in which the delegated server managed the device.
        session_id: String,
    },
    /// BOOTSTRAP_SRV_URL_REQ: no body.
    BootstrapUrlReq,
    /// BOOTSTRAP_SRV_URL_DELIVERY: where the device gets its bootstrap.
    BootstrapUrlDelivery {
        /// `BootstrapURL`: an absolute http or https URL carrying a one-time token.
        url: String,
    },
}

impl Body {
    /// The message type this body belongs to.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Body::Notif { .. } => MsgType::Notif,
            Body::Resp { .. } => MsgType::Resp,
            Body::Start { .. } => MsgType::Start,
            Body::Prepared => MsgType::Prepared,
            Body::Failure { .. } => MsgType::Failure,
            Body::Confirm { .. } => MsgType::Confirm,
            Body::BootstrapUrlReq => MsgType::BootstrapUrlReq,
            Body::BootstrapUrlDelivery { .. } => MsgType::BootstrapUrlDelivery,
        }
    }
}

impl fmt::Debug for Body {
    /// Like a derived `Debug`, except that the account and connectivity subtrees of START are
    /// summarised: they hold secrets, which must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Notif {
                sender,
                device,
                paths,
            } => f
                .debug_struct("Notif")
                .field("sender", sender)
                .field("device", device)
                .field("paths", paths)
                .finish(),
            Body::Resp { ack, reason } => f
                .debug_struct("Resp")
                .field("ack", ack)
                .field("reason", reason)
                .finish(),
            Body::Start { dmacc, conn } => {
                let summary = |prefix: &str, n: &TndsNode| {
                    format!(
                        "{prefix}/{} ({} nodes, values not shown)",
                        n.name,
                        n.node_count()
                    )
                };
                f.debug_struct("Start")
                    .field("dmacc", &summary(L_DMACC, dmacc))
                    .field("conn", &conn.as_ref().map(|c| summary(L_CONNMO, c)))
                    .finish()
            }
            Body::Prepared => f.write_str("Prepared"),
            Body::Failure { code, description } => f
                .debug_struct("Failure")
                .field("code", code)
                .field("description", description)
                .finish(),
            Body::Confirm { session_id } => f
                .debug_struct("Confirm")
                .field("session_id", session_id)
                .finish(),
            Body::BootstrapUrlReq => f.write_str("BootstrapUrlReq"),
            Body::BootstrapUrlDelivery { url } => f
                .debug_struct("BootstrapUrlDelivery")
                .field("url", url)
                .finish(),
        }
    }
}

/// One delegation message: the common header and the body of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `DelegationID`: chosen by the initiator, the same in every message of the delegation.
    pub id: DelegationId,
    /// `Seq`: the sender's message counter in this delegation, from 1. With the id it makes
    /// the message idempotent: a repeated (id, sender, seq) is acknowledged, not processed.
    pub seq: u32,
    /// `DMServerID`: the sender's ServerID; must be the authenticated peer's.
    pub server_id: String,
    /// `DelType`.
    pub del_type: DelType,
    /// `Approach`.
    pub approach: Approach,
    /// `Lease`: seconds a temporary delegation lasts after step 7; `None` for a permanent one.
    pub lease: Option<u64>,
    /// The type-specific part.
    pub body: Body,
}

// Leaf names (paths below `Delegation`).
const L_MSG_TYPE: &str = "MsgType";
const L_ID: &str = "DelegationID";
const L_SEQ: &str = "Seq";
const L_SERVER_ID: &str = "DMServerID";
const L_DEL_TYPE: &str = "DelType";
const L_APPROACH: &str = "Approach";
const L_LEASE: &str = "Lease";
const L_SENDER: &str = "Sender";
const L_DELINFO: &str = "DelInfo";
const L_DEV_ID: &str = "DevId";
const L_MAN: &str = "Man";
const L_MOD: &str = "Mod";
const L_NOTIFY: &str = "Notify";
const L_PATHS: &str = "Paths";
const L_ACK: &str = "Ack";
const L_REASON: &str = "Reason";
const L_DMACC: &str = "DMAcc";
const L_CONNMO: &str = "ConnMO";
const L_REASON_CODE: &str = "ReasonCode";
const L_DESCRIPTION: &str = "Description";
const L_SESSION_ID: &str = "SessionID";
const L_BOOTSTRAP_URL: &str = "BootstrapURL";

/// Largest `Lease`: the largest DM `int`.
const MAX_LEASE: u64 = i64::MAX as u64;

/// A leaf of the message: name and value, no properties (the leaf names fix the types).
fn leaf(name: &str, value: &str) -> TndsNode {
    TndsNode {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..TndsNode::default()
    }
}

/// An interior node of the message, without properties.
fn branch(name: &str, children: Vec<TndsNode>) -> TndsNode {
    TndsNode {
        name: name.to_owned(),
        children,
        ..TndsNode::default()
    }
}

impl Message {
    /// The message type, from the body.
    pub fn msg_type(&self) -> MsgType {
        self.body.msg_type()
    }

    /// The message as a TNDS document: one top node `Delegation`. The document is written as
    /// given; [`Message::validate`] says whether a peer will accept it.
    pub fn to_tnds(&self) -> TndsDocument {
        let mut kids = vec![
            leaf(L_MSG_TYPE, self.msg_type().as_str()),
            leaf(L_ID, self.id.as_str()),
            leaf(L_SEQ, &self.seq.to_string()),
            leaf(L_SERVER_ID, &self.server_id),
            leaf(L_DEL_TYPE, self.del_type.as_str()),
            leaf(L_APPROACH, self.approach.as_str()),
        ];
        if let Some(lease) = self.lease {
            kids.push(leaf(L_LEASE, &lease.to_string()));
        }
        match &self.body {
            Body::Notif {
                sender,
                device,
                paths,
            } => {
                kids.push(leaf(L_SENDER, sender.as_str()));
                let mut info = vec![
                    leaf(L_DEV_ID, &device.dev_id),
                    leaf(L_MAN, &device.man),
                    leaf(L_MOD, &device.model),
                ];
                if let Some(n) = &device.notify {
                    info.push(leaf(L_NOTIFY, n));
                }
                let paths = paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| leaf(&(i + 1).to_string(), &p.to_string()))
                    .collect();
                info.push(branch(L_PATHS, paths));
                kids.push(branch(L_DELINFO, info));
            }
            Body::Resp { ack, reason } => {
                kids.push(leaf(L_ACK, if *ack { "true" } else { "false" }));
                if let Some(r) = reason {
                    kids.push(leaf(L_REASON, r));
                }
            }
            Body::Start { dmacc, conn } => {
                kids.push(branch(L_DMACC, vec![dmacc.clone()]));
                if let Some(c) = conn {
                    kids.push(branch(L_CONNMO, vec![c.clone()]));
                }
            }
            Body::Failure { code, description } => {
                kids.push(leaf(L_REASON_CODE, &code.0.to_string()));
                kids.push(leaf(L_DESCRIPTION, description));
            }
            Body::Confirm { session_id } => kids.push(leaf(L_SESSION_ID, session_id)),
            Body::BootstrapUrlDelivery { url } => kids.push(leaf(L_BOOTSTRAP_URL, url)),
            Body::Prepared | Body::BootstrapUrlReq => {}
        }
        TndsDocument {
            nodes: vec![interior(ROOT_NODE, DDF_NAME, kids)],
            ..TndsDocument::default()
        }
    }

    /// The message as compact TNDS XML, ready to POST with [`MEDIA_TYPE`].
    pub fn to_xml(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.to_tnds().write_xml(&mut out);
        out
    }

    /// The message as indented TNDS XML, for humans; reads back like [`Message::to_xml`].
    pub fn to_xml_pretty(&self) -> String {
        self.to_tnds().to_xml_pretty()
    }

    /// Compact XML, as [`Message::to_xml`], with every secret of a START's account and
    /// connectivity subtrees (`AAuthSecret`, `AAuthData`, and any leaf named like a password)
    /// shown as `********`: the form the timeline and the audit keep (the console indents it
    /// for reading).
    pub fn to_xml_redacted(&self) -> String {
        let mut doc = self.to_tnds();
        if matches!(self.body, Body::Start { .. }) {
            // The document's own copies of the account and connectivity subtrees.
            for top in &mut doc.nodes {
                for branch in &mut top.children {
                    if branch.name == L_DMACC || branch.name == L_CONNMO {
                        branch.children.iter_mut().for_each(redact);
                    }
                }
            }
        }
        doc.to_xml()
    }

    /// Reads a message from network input: TNDS XML within [`WIRE_LIMITS`] (1 MiB).
    pub fn from_xml(bytes: &[u8]) -> Result<Message, MessageError> {
        let doc = TndsDocument::from_xml_with(bytes, &WIRE_LIMITS)?;
        Message::from_tnds(&doc)
    }

    /// Reads a message from a TNDS document and checks it with [`Message::validate`].
    pub fn from_tnds(doc: &TndsDocument) -> Result<Message, MessageError> {
        let root = match doc.nodes.as_slice() {
            [root] => root,
            nodes => {
                return Err(MessageError::NotDelegation {
                    reason: format!(
                        "the document must hold exactly one top node `{ROOT_NODE}`, it holds {}",
                        nodes.len()
                    ),
                });
            }
        };
        if root.name != ROOT_NODE {
            return Err(MessageError::NotDelegation {
                reason: format!(
                    "the top node is `{}`, not `{ROOT_NODE}`",
                    excerpt(&root.name)
                ),
            });
        }
        if root.value.is_some() {
            return Err(MessageError::NotDelegation {
                reason: format!("`{ROOT_NODE}` must be an interior node"),
            });
        }
        if let Some(ty) = root.rt.as_ref().and_then(|rt| rt.ty.as_ref()) {
            match ty {
                NodeType::DdfName(name) if trim_ws(name) == DDF_NAME || name.is_empty() => {}
                other => {
                    return Err(MessageError::NotDelegation {
                        reason: format!(
                            "`{ROOT_NODE}` has type `{}`, not `{DDF_NAME}`",
                            excerpt(other.as_str())
                        ),
                    });
                }
            }
        }

        let top = Node {
            node: root,
            path: String::new(),
        };
        let msg_type: MsgType = top.required_leaf(L_MSG_TYPE)?.parse()?;
        let id = DelegationId::parse(top.required_leaf(L_ID)?)?;
        let seq = parse_int(L_SEQ, top.required_leaf(L_SEQ)?, u64::from(u32::MAX))?;
        let seq = u32::try_from(seq).map_err(|_| MessageError::bad(L_SEQ, "", "out of range"))?;
        let server_id = top.required_leaf(L_SERVER_ID)?.to_owned();
        let del_type: DelType = top.required_leaf(L_DEL_TYPE)?.parse()?;
        let approach: Approach = top.required_leaf(L_APPROACH)?.parse()?;
        let lease = match top.leaf(L_LEASE)? {
            None => None,
            Some(v) => Some(parse_int(L_LEASE, v, MAX_LEASE)?),
        };

        let body = match msg_type {
            MsgType::Notif => {
                let info = top.required_interior(L_DELINFO)?;
                let device = DeviceInfo {
                    dev_id: info.required_leaf(L_DEV_ID)?.to_owned(),
                    man: info.required_leaf(L_MAN)?.to_owned(),
                    model: info.required_leaf(L_MOD)?.to_owned(),
                    notify: info.leaf(L_NOTIFY)?.map(str::to_owned),
                };
                let list = info.required_interior(L_PATHS)?;
                let mut numbered = Vec::with_capacity(list.node.children.len());
                for child in &list.node.children {
                    let leaf = list.child_path(&child.name);
                    let n = path_index(&child.name).ok_or_else(|| {
                        MessageError::bad(
                            leaf.clone(),
                            &child.name,
                            "entries of Paths are named 1, 2, 3 ...",
                        )
                    })?;
                    let text = leaf_value(child, &leaf)?;
                    let uri = NodeUri::parse(text)
                        .map_err(|e| MessageError::bad(leaf.clone(), text, e.to_string()))?;
                    numbered.push((n, uri));
                }
                numbered.sort_by_key(|(n, _)| *n);
                if let Some(w) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(MessageError::Duplicate {
                        leaf: list.child_path(&w[0].0.to_string()),
                    });
                }
                let paths = numbered.into_iter().map(|(_, uri)| uri).collect();
                let text = top.required_leaf(L_SENDER)?;
                let sender = match trim_ws(text) {
                    "Delegating" => Sender::Delegating,
                    "Delegated" => Sender::Delegated,
                    _ => {
                        return Err(MessageError::bad(
                            L_SENDER,
                            text,
                            "Delegating or Delegated is expected",
                        ));
                    }
                };
                Body::Notif {
                    sender,
                    device,
                    paths,
                }
            }
            MsgType::Resp => {
                let text = top.required_leaf(L_ACK)?;
                let ack = match trim_ws(text) {
                    "true" => true,
                    "false" => false,
                    _ => return Err(MessageError::bad(L_ACK, text, "true or false is expected")),
                };
                Body::Resp {
                    ack,
                    reason: top.leaf(L_REASON)?.map(str::to_owned),
                }
            }
            MsgType::Start => Body::Start {
                dmacc: top.required_interior(L_DMACC)?.single_child()?.clone(),
                conn: match top.interior(L_CONNMO)? {
                    None => None,
                    Some(c) => Some(c.single_child()?.clone()),
                },
            },
            MsgType::Prepared => Body::Prepared,
            MsgType::Failure => {
                let text = top.required_leaf(L_REASON_CODE)?;
                let code = text.parse::<ReasonCode>().map_err(|_| {
                    MessageError::bad(
                        L_REASON_CODE,
                        text,
                        "a reason code is a decimal number from 1 to 65535",
                    )
                })?;
                Body::Failure {
                    code,
                    description: top.required_leaf(L_DESCRIPTION)?.to_owned(),
                }
            }
            MsgType::Confirm => Body::Confirm {
                session_id: top.required_leaf(L_SESSION_ID)?.to_owned(),
            },
            MsgType::BootstrapUrlReq => Body::BootstrapUrlReq,
            MsgType::BootstrapUrlDelivery => Body::BootstrapUrlDelivery {
                url: top.required_leaf(L_BOOTSTRAP_URL)?.to_owned(),
            },
        };
        let msg = Message {
            id,
            seq,
            server_id,
            del_type,
            approach,
            lease,
            body,
        };
        msg.validate()?;
        Ok(msg)
    }

    /// Checks the rules a receiver enforces beyond the syntax: `Seq` ≥ 1, `Lease` ≥ 1,
    /// `DMServerID` a valid ACL server id, and per type: a non-empty `DevId`; a Full
    /// delegation's paths exactly `[.]`, a Partial one's at least one, none the root, none
    /// inside another; a START account that is a readable DMAcc 1.2 account whose `ServerID`
    /// is `DMServerID`; a non-empty `SessionID`; an absolute http(s) `BootstrapURL`.
    pub fn validate(&self) -> Result<(), MessageError> {
        if self.seq == 0 {
            return Err(MessageError::bad(L_SEQ, "0", "Seq starts at 1"));
        }
        if let Some(lease) = self.lease
            && (lease == 0 || lease > MAX_LEASE)
        {
            return Err(MessageError::bad(
                L_LEASE,
                &lease.to_string(),
                "a lease is from 1 to 9223372036854775807 seconds",
            ));
        }
        if !is_valid_server_id(&self.server_id) {
            return Err(MessageError::bad(
                L_SERVER_ID,
                &self.server_id,
                "a ServerID is non-empty, without whitespace, control characters, =, &, * or +",
            ));
        }
        match &self.body {
            Body::Notif { device, paths, .. } => {
                if trim_ws(&device.dev_id).is_empty() {
                    return Err(MessageError::bad(
                        format!("{L_DELINFO}/{L_DEV_ID}"),
                        &device.dev_id,
                        "the device identifier is empty",
                    ));
                }
                check_paths(self.del_type, paths)
            }
            Body::Start { dmacc, conn } => {
                check_account(dmacc, &self.server_id)?;
                if let Some(c) = conn {
                    check_subtree(L_CONNMO, c)?;
                }
                Ok(())
            }
            Body::Confirm { session_id } => {
                if trim_ws(session_id).is_empty() {
                    return Err(MessageError::bad(
                        L_SESSION_ID,
                        session_id,
                        "the session identifier is empty",
                    ));
                }
                Ok(())
            }
            Body::Failure { code, .. } => {
                if code.0 == 0 {
                    return Err(MessageError::bad(
                        L_REASON_CODE,
                        "0",
                        "a reason code is a decimal number from 1 to 65535",
                    ));
                }
                Ok(())
            }
            Body::BootstrapUrlDelivery { url } => check_url(url),
            Body::Resp { .. } | Body::Prepared | Body::BootstrapUrlReq => Ok(()),
        }
    }

    /// The account a DELEGATION_START carries, read as DMAcc 1.2 (secrets included); `None`
    /// for other message types.
    pub fn account(&self) -> Option<Result<DmAcc, MessageError>> {
        match &self.body {
            Body::Start { dmacc, .. } => Some(read_account(dmacc)),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading helpers
// ---------------------------------------------------------------------------------------------

/// A node of the message with its path below `Delegation` (empty for `Delegation`).
struct Node<'a> {
    node: &'a TndsNode,
    path: String,
}

impl<'a> Node<'a> {
    fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.path)
        }
    }

    /// The child named `name`, if any; a second one is an error.
    fn child(&self, name: &str) -> Result<Option<&'a TndsNode>, MessageError> {
        let mut found = None;
        for c in &self.node.children {
            if c.name == name {
                if found.is_some() {
                    return Err(MessageError::Duplicate {
                        leaf: self.child_path(name),
                    });
                }
                found = Some(c);
            }
        }
        Ok(found)
    }

    fn leaf(&self, name: &str) -> Result<Option<&'a str>, MessageError> {
        match self.child(name)? {
            None => Ok(None),
            Some(c) => leaf_value(c, &self.child_path(name)).map(Some),
        }
    }

    fn required_leaf(&self, name: &str) -> Result<&'a str, MessageError> {
        self.leaf(name)?
            .ok_or_else(|| MessageError::missing(self.child_path(name)))
    }

    fn interior(&self, name: &str) -> Result<Option<Node<'a>>, MessageError> {
        match self.child(name)? {
            None => Ok(None),
            Some(c) if c.value.is_some() => Err(MessageError::bad(
                self.child_path(name),
                "",
                "an interior node is expected, not a value",
            )),
            Some(c) => Ok(Some(Node {
                node: c,
                path: self.child_path(name),
            })),
        }
    }

    fn required_interior(&self, name: &str) -> Result<Node<'a>, MessageError> {
        self.interior(name)?
            .ok_or_else(|| MessageError::missing(self.child_path(name)))
    }

    /// The one child of `DMAcc` or `ConnMO`.
    fn single_child(&self) -> Result<&'a TndsNode, MessageError> {
        match self.node.children.as_slice() {
            [one] => Ok(one),
            [] => Err(MessageError::missing(format!("{}/<name>", self.path))),
            more => Err(MessageError::bad(
                self.path.clone(),
                &format!("{} nodes", more.len()),
                "exactly one subtree is expected",
            )),
        }
    }
}

/// The text of a leaf (an absent `Value` reads as empty).
fn leaf_value<'a>(node: &'a TndsNode, leaf: &str) -> Result<&'a str, MessageError> {
    if !node.children.is_empty() {
        return Err(MessageError::bad(
            leaf,
            "",
            "a leaf is expected, not an interior node",
        ));
    }
    Ok(node.value.as_deref().unwrap_or(""))
}

/// A decimal integer from 0 to `max` (surrounding whitespace allowed, no sign).
fn parse_int(leaf: &str, text: &str, max: u64) -> Result<u64, MessageError> {
    let t = trim_ws(text);
    match t.parse::<u64>() {
        Ok(n) if n <= max && t.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(MessageError::bad(
            leaf,
            text,
            format!("a decimal integer from 1 to {max} is expected"),
        )),
    }
}

/// `1`, `2`, ... (no sign, no leading zero).
fn path_index(name: &str) -> Option<u32> {
    if name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse::<u32>().ok().filter(|n| *n > 0)
}

fn paths_leaf() -> String {
    format!("{L_DELINFO}/{L_PATHS}")
}

fn check_paths(del_type: DelType, paths: &[NodeUri]) -> Result<(), MessageError> {
    match del_type {
        DelType::Full => {
            if paths.len() != 1 || !paths[0].is_root() {
                let shown: Vec<String> = paths.iter().map(NodeUri::to_string).collect();
                return Err(MessageError::bad(
                    paths_leaf(),
                    &shown.join(" "),
                    "a Full delegation's paths are exactly `.`",
                ));
            }
        }
        DelType::Partial => {
            if paths.is_empty() {
                return Err(MessageError::missing(format!("{}/1", paths_leaf())));
            }
            for (i, p) in paths.iter().enumerate() {
                let leaf = format!("{}/{}", paths_leaf(), i + 1);
                if p.is_root() {
                    return Err(MessageError::bad(
                        leaf,
                        ".",
                        "a Partial delegation cannot delegate the root; use Full",
                    ));
                }
                if let Some((j, q)) = paths
                    .iter()
                    .enumerate()
                    .find(|(j, q)| *j != i && q.contains(p))
                {
                    return Err(MessageError::bad(
                        leaf,
                        &p.to_string(),
                        format!(
                            "it lies inside path {} (`{q}`); delegated subtrees must not overlap",
                            j + 1
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A `DMAcc/<name>` or `ConnMO/<name>` subtree: a valid node name and an interior node.
fn check_subtree(prefix: &str, node: &TndsNode) -> Result<String, MessageError> {
    let leaf = format!("{prefix}/{}", node.name);
    if NodeUri::root().join(&node.name).is_err() {
        return Err(MessageError::bad(
            prefix,
            &node.name,
            "the subtree's name is not a valid node name",
        ));
    }
    if node.value.is_some() {
        return Err(MessageError::bad(
            leaf,
            "",
            "an interior node is expected, not a value",
        ));
    }
    if let Some(path) = &node.path {
        return Err(MessageError::bad(
            leaf,
            path,
            "a subtree in a message carries no Path",
        ));
    }
    Ok(leaf)
}

fn check_account(dmacc: &TndsNode, server_id: &str) -> Result<(), MessageError> {
    let leaf = check_subtree(L_DMACC, dmacc)?;
    let acc = Node {
        node: dmacc,
        path: leaf.clone(),
    };
    let id_leaf = acc.required_leaf("ServerID")?;
    if id_leaf != server_id {
        return Err(MessageError::bad(
            format!("{leaf}/ServerID"),
            id_leaf,
            format!("the account must be the sender's own (DMServerID `{server_id}`)"),
        ));
    }
    read_account(dmacc).map(|_| ())
}

/// Loads the account node as a device would and reads it back as DMAcc 1.2.
fn read_account(dmacc: &TndsNode) -> Result<DmAcc, MessageError> {
    let leaf = check_subtree(L_DMACC, dmacc)?;
    let doc = TndsDocument {
        nodes: vec![interior(L_DMACC, "", vec![dmacc.clone()])],
        ..TndsDocument::default()
    };
    let tree = DmTree::from_tnds(&doc, TreeLimits::default())
        .map_err(|e| MessageError::bad(leaf.clone(), "", e.to_string()))?;
    DmAcc::read(&tree, &dmacc.name).map_err(|e| MessageError::bad(leaf, "", e.to_string()))
}

fn check_url(url: &str) -> Result<(), MessageError> {
    let reason = match url::Url::parse(url) {
        Err(e) => format!("not an absolute URL: {e}"),
        Ok(u) if !matches!(u.scheme(), "https" | "http") => {
            "the scheme must be https or http".to_owned()
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => "the URL names no host".to_owned(),
        Ok(_) => return Ok(()),
    };
    Err(MessageError::bad(L_BOOTSTRAP_URL, url, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegation_id_from_bytes_sets_version_and_variant() {
        let id = DelegationId::from_bytes([0xff; 16]);
        assert_eq!(id.as_str(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = DelegationId::from_bytes([0; 16]);
        assert_eq!(id.as_str(), "00000000-0000-4000-8000-000000000000");
        assert_eq!(DelegationId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn time_ordered_ids_carry_the_time_and_sort_by_it() {
        // RFC 9562 appendix A.6: 2022-02-22 14:22:22.00 UTC is 0x017F22E279B0.
        let id = DelegationId::time_ordered(0x017F_22E2_79B0, [0xff; 10]);
        assert_eq!(id.as_str(), "017f22e2-79b0-7fff-bfff-ffffffffffff");
        let id = DelegationId::time_ordered(0x017F_22E2_79B0, [0; 10]);
        assert_eq!(id.as_str(), "017f22e2-79b0-7000-8000-000000000000");
        let later = DelegationId::time_ordered(0x017F_22E2_79B1, [0; 10]);
        assert!(id < later);
        assert!(DelegationId::time_ordered(0x017F_22E2_79B0, [0xff; 10]) < later);
        assert_eq!(DelegationId::parse(later.as_str()), Ok(later));
    }

    #[test]
    fn delegation_id_parse() {
        let id = DelegationId::parse("6F1C2A9E-0B4D-4E8A-9C3B-2D5E7F801234").unwrap();
        assert_eq!(id.as_str(), "6f1c2a9e-0b4d-4e8a-9c3b-2d5e7f801234");
        for bad in [
            "",
            "6f1c2a9e0b4d4e8a9c3b2d5e7f801234",
            "6f1c2a9e-0b4d-4e8a-9c3b-2d5e7f80123",
            "6f1c2a9e-0b4d-4e8a-9c3b-2d5e7f80123g",
            "{6f1c2a9e-0b4d-4e8a-9c3b-2d5e7f801234}",
            "6f1c2a9e-0b4d-4e8a-9c3b-2d5e7f8012é",
        ] {
            let err = DelegationId::parse(bad).unwrap_err();
            assert_eq!(err.leaf(), Some("DelegationID"), "{bad}");
        }
    }

    #[test]
    fn wire_names() {
        for t in MsgType::ALL {
            assert_eq!(t.as_str().parse::<MsgType>().unwrap(), *t);
        }
        assert_eq!(
            "BootstrapURL".parse::<Approach>().unwrap(),
            Approach::BootstrapUrl
        );
        assert!("full".parse::<DelType>().is_err());
        assert_eq!(path_index("1"), Some(1));
        assert_eq!(path_index("01"), None);
        assert_eq!(path_index("0"), None);
        assert_eq!(path_index("x"), None);
    }

    /// DMS-2's account with digest credentials whose secrets start `very-secret`.
    fn account_with_secrets() -> DmAcc {
        DmAcc::new_digest(
            "dms2",
            "dms2.example",
            "https://127.0.0.1:8443/dm",
            ("dev", "very-secret-1"),
            ("srv", "very-secret-2"),
        )
    }

    #[test]
    fn start_debug_hides_secrets() {
        let acc = account_with_secrets();
        let body = Body::Start {
            dmacc: acc.to_tnds_node(None),
            conn: None,
        };
        let text = format!("{body:?}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("DMAcc/dms2"), "{text}");
    }

    /// The redacted XML is the message's own with the secrets of its account and
    /// connectivity subtrees starred, and nothing else changed; other messages are as sent.
    #[test]
    fn redacted_xml_stars_the_start_secrets_and_keeps_the_rest() {
        let acc = account_with_secrets();
        let conn = branch(
            "Proxy",
            vec![leaf("Addr", "keep-me"), leaf("ProxyPassword", "pw-secret")],
        );
        let start = Message {
            id: DelegationId::from_bytes([7; 16]),
            seq: 2,
            server_id: "dms2.example".into(),
            del_type: DelType::Full,
            approach: Approach::DmAcc,
            lease: None,
            body: Body::Start {
                dmacc: acc.to_tnds_node(None),
                conn: Some(conn),
            },
        };
        let xml = start.to_xml_redacted();
        for secret in ["very-secret", "pw-secret"] {
            assert!(!xml.contains(secret), "{xml}");
        }
        assert_eq!(xml.matches("********").count(), 3, "{xml}");
        let mut expected = start.clone();
        if let Body::Start { dmacc, conn } = &mut expected.body {
            redact(dmacc);
            conn.iter_mut().for_each(redact);
        }
        assert_eq!(Message::from_xml(xml.as_bytes()), Ok(expected));

        let prepared = Message {
            body: Body::Prepared,
            ..start
        };
        assert_eq!(prepared.to_xml_redacted().into_bytes(), prepared.to_xml());
    }
}
