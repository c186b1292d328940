//! Standard management objects as typed views over the DM tree: DMAcc 1.2 (the server
//! accounts, with their CLCRED and SRVCRED credentials), DevInfo, DevDetail, and the bootstrap
//! config entry DESIGN.md names (`./BootConfig/<x>/ServerURL`).
//!
//! Each view reads itself from a tree (`read`), writes itself as the device would (`install`),
//! and produces the TNDS form a server sends in an Add (`to_tnds`).

pub mod bootconfig;
pub mod devinfo;
pub mod dmacc;

use super::ops::OpError;
use super::props::{Format, NodeType};
use super::tnds::{RtProperties, TndsNode};
use super::tree::{DmTree, NodeId};
use super::uri::NodeUri;

pub use bootconfig::BootConfigEntry;
pub use devinfo::{DevDetail, DevInfo};
pub use dmacc::{AddrType, AppAddr, AppAuth, AuthLevel, AuthType, DmAcc, Secret};

/// Why a management object could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoError {
    /// A node the object requires is missing.
    #[error("{uri} is missing")]
    Missing {
        /// The missing node.
        uri: String,
    },
    /// A node holds a value the object does not allow.
    #[error("{uri} holds `{value}`, which is not valid: {reason}")]
    Invalid {
        /// The node.
        uri: String,
        /// Its value (never a secret).
        value: String,
        /// What is expected.
        reason: &'static str,
    },
    /// The tree refused the write.
    #[error("the device tree refused the change: {0}")]
    Tree(#[from] OpError),
    /// A name is not a valid node name.
    #[error("`{name}` is not a valid node name")]
    BadName {
        /// The name.
        name: String,
    },
}

/// Reads the text leaf at `base/rel`, if present.
pub(crate) fn leaf_text(tree: &DmTree, base: &NodeUri, rel: &str) -> Option<String> {
    text_below(tree, tree.find(base)?, rel)
}

/// Reads the text leaf at `rel` (names separated by `/`) below the node `id`, if present.
/// Views read their leaves this way, from their own node, so that reading one builds no URI.
pub(crate) fn text_below(tree: &DmTree, id: NodeId, rel: &str) -> Option<String> {
    if rel.is_empty() {
        return None;
    }
    let leaf = tree.find_below(id, rel)?;
    std::str::from_utf8(tree.value(leaf)?)
        .ok()
        .map(str::to_owned)
}

/// Reads a required text leaf below the node `id`.
pub(crate) fn required_below(tree: &DmTree, id: NodeId, rel: &str) -> Result<String, MoError> {
    text_below(tree, id, rel).ok_or_else(|| MoError::Missing {
        uri: format!("{}/{rel}", tree.uri_of(id)),
    })
}

/// The children of the node at `rel` below `id`: (name, id) pairs, empty when it is absent.
pub(crate) fn entries_below(tree: &DmTree, id: NodeId, rel: &str) -> Vec<(String, NodeId)> {
    tree.find_below(id, rel)
        .map(|node| {
            tree.children(node)
                .map(|(name, child)| (name.to_owned(), child))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a required text leaf.
pub(crate) fn required_text(tree: &DmTree, base: &NodeUri, rel: &str) -> Result<String, MoError> {
    leaf_text(tree, base, rel).ok_or_else(|| MoError::Missing {
        uri: format!("{base}/{rel}"),
    })
}

/// `base/rel` where `rel` may hold several segments.
pub(crate) fn child_uri(base: &NodeUri, rel: &str) -> Result<NodeUri, MoError> {
    let rel_uri = NodeUri::parse(rel).map_err(|_| MoError::BadName {
        name: rel.to_owned(),
    })?;
    Ok(base.concat(&rel_uri))
}

/// A TNDS interior node.
pub(crate) fn interior(name: &str, ddf: &str, children: Vec<TndsNode>) -> TndsNode {
    TndsNode {
        name: name.to_owned(),
        path: None,
        rt: Some(RtProperties {
            format: Some(Format::Node),
            ty: Some(NodeType::DdfName(ddf.to_owned())),
            ..RtProperties::default()
        }),
        df: None,
        children,
        value: None,
    }
}

/// A TNDS `chr` leaf of type `text/plain`.
pub(crate) fn text_leaf(name: &str, value: &str) -> TndsNode {
    typed_leaf(name, Format::Chr, "text/plain", value)
}

/// A TNDS leaf with an explicit format and type.
pub(crate) fn typed_leaf(name: &str, format: Format, mime: &str, value: &str) -> TndsNode {
    TndsNode {
        name: name.to_owned(),
        path: None,
        rt: Some(RtProperties {
            format: Some(format),
            ty: Some(NodeType::Mime(mime.to_owned())),
            ..RtProperties::default()
        }),
        df: None,
        children: Vec::new(),
        value: Some(value.to_owned()),
    }
}
