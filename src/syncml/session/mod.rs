//! Sans-IO DM session logic for both ends: the server side ([`server::ServerSession`]) that
//! authenticates a device, sends it queued management commands and collects their statuses
//! and results, and the client side ([`client::ClientSession`]) that a device (our simulator)
//! runs against its own DM tree.
//!
//! Both take whole messages in and give whole messages out; the caller moves them over HTTP.
//! Packages larger than the peer's MaxMsgSize go out over several messages (Alert 1222), and
//! items larger than a message are chunked as large objects (MoreData, 213).

pub mod client;
pub mod packer;
pub mod server;

use crate::dm::ops::ResultItem;
use crate::dm::props::Format;
use crate::dm::tnds::TndsDocument;
use crate::dm::uri::{NodeUri, Target};
use crate::syncml::StatusCode;

/// How a session's messages are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// `application/vnd.syncml.dm+xml`.
    #[default]
    Xml,
    /// `application/vnd.syncml.dm+wbxml`, what most deployed clients send.
    Wbxml,
}

impl Encoding {
    /// The media type of messages in this encoding.
    pub fn mime(self) -> &'static str {
        match self {
            Encoding::Xml => crate::syncml::message::MIME_XML,
            Encoding::Wbxml => crate::syncml::message::MIME_WBXML,
        }
    }

    /// The encoding a Content-Type names (parameters ignored), if it is a SyncML DM one;
    /// the older `application/vnd.syncml+xml` and `+wbxml` that some clients send count too.
    pub fn from_content_type(ct: &str) -> Option<Encoding> {
        let base = ct.split(';').next()?.trim().to_ascii_lowercase();
        match base.as_str() {
            "application/vnd.syncml.dm+xml" | "application/vnd.syncml+xml" => Some(Encoding::Xml),
            "application/vnd.syncml.dm+wbxml" | "application/vnd.syncml+wbxml" => {
                Some(Encoding::Wbxml)
            }
            _ => None,
        }
    }

    /// Decodes a message.
    pub fn decode(self, bytes: &[u8]) -> Result<crate::syncml::message::SyncMl, SessionError> {
        match self {
            Encoding::Xml => {
                crate::syncml::xml::decode(bytes).map_err(|e| SessionError::Codec(e.to_string()))
            }
            Encoding::Wbxml => {
                crate::syncml::wbxml::decode(bytes).map_err(|e| SessionError::Codec(e.to_string()))
            }
        }
    }

    /// Encodes a message.
    pub fn encode(self, msg: &crate::syncml::message::SyncMl) -> Vec<u8> {
        match self {
            Encoding::Xml => crate::syncml::xml::encode(msg),
            Encoding::Wbxml => crate::syncml::wbxml::encode(msg),
        }
    }
}

/// The SyncHdr values of DM 1.2.
pub const VER_DTD: &str = "1.2";
/// VerProto of DM 1.2.
pub const VER_PROTO: &str = "DM/1.2";

/// A management command a server sends to a device, before it is given a CmdID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceCommand {
    /// Add a node with a value (Format `node` for an interior node).
    Add {
        /// Where.
        target: NodeUri,
        /// Meta Format.
        format: Format,
        /// Meta Type.
        ty: Option<String>,
        /// The value (raw bytes; base64 on the wire for `b64`).
        value: Vec<u8>,
    },
    /// Add a whole subtree given as TNDS, placed relative to `target`.
    AddTnds {
        /// The target URI the document's Paths are relative to.
        target: NodeUri,
        /// The subtree.
        doc: TndsDocument,
    },
    /// Replace a leaf value or a property (`?prop=ACL`).
    Replace {
        /// Where, possibly with `?prop=`.
        target: Target,
        /// Meta Format.
        format: Format,
        /// Meta Type.
        ty: Option<String>,
        /// The value.
        value: Vec<u8>,
    },
    /// Replace a whole subtree with TNDS.
    ReplaceTnds {
        /// The target URI the document's Paths are relative to.
        target: NodeUri,
        /// The subtree.
        doc: TndsDocument,
    },
    /// Delete a node and its subtree.
    Delete {
        /// Where.
        target: NodeUri,
    },
    /// Get a value, a property or a listing.
    Get {
        /// Where, possibly with `?prop=` or `?list=`.
        target: Target,
    },
    /// Execute a node.
    Exec {
        /// Where.
        target: NodeUri,
        /// Optional data for the execution.
        data: Option<String>,
        /// Optional correlator for a later Generic Alert.
        correlator: Option<String>,
    },
    /// Copy a node.
    Copy {
        /// From.
        source: NodeUri,
        /// To.
        target: NodeUri,
    },
    /// All of these or none.
    Atomic(Vec<DeviceCommand>),
    /// These in order, stopping at the first failure.
    Sequence(Vec<DeviceCommand>),
}

impl DeviceCommand {
    /// The SyncML element name of the command.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceCommand::Add { .. } | DeviceCommand::AddTnds { .. } => "Add",
            DeviceCommand::Replace { .. } | DeviceCommand::ReplaceTnds { .. } => "Replace",
            DeviceCommand::Delete { .. } => "Delete",
            DeviceCommand::Get { .. } => "Get",
            DeviceCommand::Exec { .. } => "Exec",
            DeviceCommand::Copy { .. } => "Copy",
            DeviceCommand::Atomic(_) => "Atomic",
            DeviceCommand::Sequence(_) => "Sequence",
        }
    }

    /// A Replace of a node's ACL.
    pub fn replace_acl(target: &NodeUri, acl: &crate::dm::acl::Acl) -> DeviceCommand {
        DeviceCommand::Replace {
            target: Target {
                uri: target.clone(),
                query: Some(crate::dm::uri::Query::Prop("ACL".to_owned())),
            },
            format: Format::Chr,
            ty: Some("text/plain".to_owned()),
            value: acl.to_string().into_bytes(),
        }
    }

    /// A text leaf Add.
    pub fn add_text(target: &NodeUri, value: &str) -> DeviceCommand {
        DeviceCommand::Add {
            target: target.clone(),
            format: Format::Chr,
            ty: Some("text/plain".to_owned()),
            value: value.as_bytes().to_vec(),
        }
    }

    /// A text leaf Replace.
    pub fn replace_text(target: &NodeUri, value: &str) -> DeviceCommand {
        DeviceCommand::Replace {
            target: Target::from(target.clone()),
            format: Format::Chr,
            ty: Some("text/plain".to_owned()),
            value: value.as_bytes().to_vec(),
        }
    }
}

/// What became of one queued command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The status the device answered (for Atomic and Sequence: the container's own).
    pub status: StatusCode,
    /// Results of a Get (empty otherwise).
    pub results: Vec<ResultItem>,
    /// Statuses of the children of an Atomic or Sequence, in order.
    pub children: Vec<StatusCode>,
}

/// Why a session could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The message could not be decoded.
    #[error("the message is not valid SyncML DM: {0}")]
    Codec(String),
    /// The message belongs to another session or repeats an old message.
    #[error("the message is out of sequence: {0}")]
    OutOfSequence(String),
    /// The peer failed authentication.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The session is over.
    #[error("the session has ended")]
    Ended,
}
pub mod creds;
