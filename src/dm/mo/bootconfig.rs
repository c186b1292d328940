//! The bootstrap config entry (DESIGN.md section 3): `<root>/<x>/ServerURL` and an optional
//! `<root>/<x>/ServerID`, where `<root>` is `./BootConfig` unless configured otherwise. It tells
//! a device where to fetch a DM server's bootstrap; the Bootstrap Server URL approach of
//! delegation writes it. The DM 1.3 BootConfig MO's real node names are not public, so this
//! layout is ours and the root is configurable.

use super::{MoError, child_uri, interior, leaf_text, required_text, text_leaf};
use crate::dm::acl::Acl;
use crate::dm::tnds::{TndsDocument, TndsNode};
use crate::dm::tree::DmTree;
use crate::dm::uri::NodeUri;

/// The default root of bootstrap config entries.
pub const BOOTCONFIG_ROOT: &str = "./BootConfig";

/// One bootstrap config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfigEntry {
    /// The entry's node name.
    pub name: String,
    /// Where the device fetches the bootstrap.
    pub server_url: String,
    /// The DM server the bootstrap is for, when known.
    pub server_id: Option<String>,
}

impl BootConfigEntry {
    /// The default root, `./BootConfig`.
    pub fn default_root() -> NodeUri {
        NodeUri::parse(BOOTCONFIG_ROOT).unwrap_or_default()
    }

    /// The entry's URI under `root`.
    pub fn uri(&self, root: &NodeUri) -> Result<NodeUri, MoError> {
        child_uri(root, &self.name)
    }

    /// Reads the entry `name` under `root`.
    pub fn read(tree: &DmTree, root: &NodeUri, name: &str) -> Result<BootConfigEntry, MoError> {
        let base = child_uri(root, name)?;
        if !tree.exists(&base) {
            return Err(MoError::Missing {
                uri: base.to_string(),
            });
        }
        Ok(BootConfigEntry {
            name: name.to_owned(),
            server_url: required_text(tree, &base, "ServerURL")?,
            server_id: leaf_text(tree, &base, "ServerID"),
        })
    }

    /// Every entry under `root`.
    pub fn all(tree: &DmTree, root: &NodeUri) -> Vec<Result<BootConfigEntry, MoError>> {
        let Some(id) = tree.find(root) else {
            return Vec::new();
        };
        tree.child_names(id)
            .iter()
            .map(|n| BootConfigEntry::read(tree, root, n))
            .collect()
    }

    /// The entry as a TNDS node, for an Add whose target is `root`.
    pub fn to_tnds_node(&self, acl: Option<Acl>) -> TndsNode {
        let mut kids = vec![text_leaf("ServerURL", &self.server_url)];
        if let Some(id) = &self.server_id {
            kids.push(text_leaf("ServerID", id));
        }
        let mut node = interior(&self.name, "", kids);
        if let (Some(acl), Some(rt)) = (acl, node.rt.as_mut()) {
            rt.acl = Some(acl);
        }
        node
    }

    /// The entry as a TNDS document, for an Add whose target is the root of entries.
    pub fn to_tnds(&self, acl: Option<Acl>) -> TndsDocument {
        TndsDocument {
            nodes: vec![self.to_tnds_node(acl)],
            ..TndsDocument::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::tree::{NodeProps, Principal};
    use crate::dm::tree_tnds::TndsMode;

    #[test]
    fn entry_round_trip_under_a_configured_root() {
        let root = NodeUri::parse("./Vendor/Boot").unwrap();
        let mut tree = DmTree::new();
        tree.ensure_interior(&root, NodeProps::interior()).unwrap();
        let entry = BootConfigEntry {
            name: "dms2".into(),
            server_url: "https://127.0.0.1:9443/bootstrap/tok".into(),
            server_id: Some("dms2.example".into()),
        };
        tree.apply_tnds(
            Principal::Device,
            &root,
            &entry.to_tnds(None),
            TndsMode::Add,
            None,
        )
        .unwrap();
        assert_eq!(BootConfigEntry::read(&tree, &root, "dms2").unwrap(), entry);
        assert_eq!(BootConfigEntry::all(&tree, &root).len(), 1);
        assert!(BootConfigEntry::all(&tree, &BootConfigEntry::default_root()).is_empty());
    }
}
