//! DevInfo (`./DevInfo`, sent in every Package 1) and DevDetail (`./DevDetail`, read on
//! demand): who the device is and what it can do, including the URI limits it enforces.

use super::{MoError, child_uri, interior, leaf_text, required_text, text_leaf, typed_leaf};
use crate::dm::acl::Acl;
use crate::dm::props::Format;
use crate::dm::tnds::TndsDocument;
use crate::dm::tree::{DmTree, Principal};
use crate::dm::tree_tnds::TndsMode;
use crate::dm::uri::{NodeUri, UriLimits};

/// The DevInfo MO identifier.
pub const DEVINFO_URN: &str = "urn:oma:mo:oma-dm-devinfo:1.0";
/// The DevDetail MO identifier.
pub const DEVDETAIL_URN: &str = "urn:oma:mo:oma-dm-devdetail:1.0";

/// `./DevInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevInfo {
    /// `DevId`: globally unique, e.g. `IMEI:493005100592800`.
    pub dev_id: String,
    /// `Man`: manufacturer.
    pub man: String,
    /// `Mod`: model.
    pub model: String,
    /// `DmV`: the client's DM version string.
    pub dmv: String,
    /// `Lang`: language tag, e.g. `en-US`.
    pub lang: String,
}

impl DevInfo {
    /// The leaf names in the order Package 1 lists them.
    pub const LEAVES: [&'static str; 5] = ["DevId", "Man", "Mod", "DmV", "Lang"];

    /// Reads `./DevInfo`.
    pub fn read(tree: &DmTree) -> Result<DevInfo, MoError> {
        let base = NodeUri::parse("./DevInfo").unwrap_or_default();
        Ok(DevInfo {
            dev_id: required_text(tree, &base, "DevId")?,
            man: required_text(tree, &base, "Man")?,
            model: required_text(tree, &base, "Mod")?,
            dmv: required_text(tree, &base, "DmV")?,
            lang: required_text(tree, &base, "Lang")?,
        })
    }

    /// The leaves as (name, value) pairs, in Package 1 order.
    pub fn leaves(&self) -> [(&'static str, &str); 5] {
        [
            ("DevId", &self.dev_id),
            ("Man", &self.man),
            ("Mod", &self.model),
            ("DmV", &self.dmv),
            ("Lang", &self.lang),
        ]
    }

    /// Builds DevInfo from the (name, value) pairs of a Package 1 Replace; unknown names are
    /// ignored, missing ones reported.
    pub fn from_leaves<'a>(
        items: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<DevInfo, MoError> {
        let mut vals: [Option<String>; 5] = Default::default();
        for (name, value) in items {
            let name = name.rsplit('/').next().unwrap_or(name);
            if let Some(i) = DevInfo::LEAVES.iter().position(|l| *l == name) {
                vals[i] = Some(value.to_owned());
            }
        }
        let mut take = |i: usize| {
            vals[i].take().ok_or_else(|| MoError::Missing {
                uri: format!("./DevInfo/{}", DevInfo::LEAVES[i]),
            })
        };
        Ok(DevInfo {
            dev_id: take(0)?,
            man: take(1)?,
            model: take(2)?,
            dmv: take(3)?,
            lang: take(4)?,
        })
    }

    /// Writes `./DevInfo` as permanent, read-only nodes (`Get=*`), as a device ships it.
    pub fn install(&self, tree: &mut DmTree) -> Result<(), MoError> {
        let kids = self.leaves().iter().map(|(n, v)| text_leaf(n, v)).collect();
        let mut node = interior("DevInfo", DEVINFO_URN, kids);
        if let Some(rt) = node.rt.as_mut() {
            rt.acl = Acl::parse("Get=*").ok();
        }
        install_permanent(tree, node)
    }
}

/// `./DevDetail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevDetail {
    /// `URI/MaxDepth`, `URI/MaxTotLen`, `URI/MaxSegLen`.
    pub uri_limits: UriLimits,
    /// `DevTyp`: device type, e.g. `smartphone`.
    pub dev_typ: String,
    /// `OEM`.
    pub oem: String,
    /// `FwV`: firmware version.
    pub fwv: String,
    /// `SwV`: software version.
    pub swv: String,
    /// `HwV`: hardware version.
    pub hwv: String,
    /// `LrgObj`: large objects supported.
    pub lrg_obj: bool,
}

impl DevDetail {
    /// Reads `./DevDetail`; missing URI limits read as 0 (unlimited).
    pub fn read(tree: &DmTree) -> Result<DevDetail, MoError> {
        let base = NodeUri::parse("./DevDetail").unwrap_or_default();
        let limit = |name: &str| -> Result<u16, MoError> {
            match leaf_text(tree, &base, &format!("URI/{name}")) {
                None => Ok(0),
                Some(t) => t.trim().parse().map_err(|_| MoError::Invalid {
                    uri: format!("./DevDetail/URI/{name}"),
                    value: t.chars().take(40).collect(),
                    reason: "a URI limit must be a number from 0 to 65535",
                }),
            }
        };
        let lrg = leaf_text(tree, &base, "LrgObj").unwrap_or_default();
        Ok(DevDetail {
            uri_limits: UriLimits {
                max_depth: limit("MaxDepth")?,
                max_tot_len: limit("MaxTotLen")?,
                max_seg_len: limit("MaxSegLen")?,
            },
            dev_typ: leaf_text(tree, &base, "DevTyp").unwrap_or_default(),
            oem: leaf_text(tree, &base, "OEM").unwrap_or_default(),
            fwv: leaf_text(tree, &base, "FwV").unwrap_or_default(),
            swv: leaf_text(tree, &base, "SwV").unwrap_or_default(),
            hwv: leaf_text(tree, &base, "HwV").unwrap_or_default(),
            lrg_obj: matches!(lrg.trim(), "true" | "1"),
        })
    }

    /// Writes `./DevDetail` as permanent, read-only nodes, and makes the tree enforce the URI
    /// limits it advertises.
    pub fn install(&self, tree: &mut DmTree) -> Result<(), MoError> {
        let l = self.uri_limits;
        let uri = interior(
            "URI",
            "",
            vec![
                typed_leaf(
                    "MaxDepth",
                    Format::Chr,
                    "text/plain",
                    &l.max_depth.to_string(),
                ),
                typed_leaf(
                    "MaxTotLen",
                    Format::Chr,
                    "text/plain",
                    &l.max_tot_len.to_string(),
                ),
                typed_leaf(
                    "MaxSegLen",
                    Format::Chr,
                    "text/plain",
                    &l.max_seg_len.to_string(),
                ),
            ],
        );
        let mut node = interior(
            "DevDetail",
            DEVDETAIL_URN,
            vec![
                uri,
                text_leaf("DevTyp", &self.dev_typ),
                text_leaf("OEM", &self.oem),
                text_leaf("FwV", &self.fwv),
                text_leaf("SwV", &self.swv),
                text_leaf("HwV", &self.hwv),
                typed_leaf(
                    "LrgObj",
                    Format::Bool,
                    "text/plain",
                    if self.lrg_obj { "true" } else { "false" },
                ),
            ],
        );
        if let Some(rt) = node.rt.as_mut() {
            rt.acl = Acl::parse("Get=*").ok();
        }
        install_permanent(tree, node)?;
        let mut limits = *tree.limits();
        limits.uri = l;
        tree.set_limits(limits);
        Ok(())
    }
}

/// Installs a device-owned subtree under the root and marks every node permanent.
fn install_permanent(tree: &mut DmTree, node: crate::dm::tnds::TndsNode) -> Result<(), MoError> {
    let name = node.name.clone();
    let uri = child_uri(&NodeUri::root(), &name)?;
    let mut work = tree.clone();
    if work.exists(&uri) {
        work.remove(&uri).map_err(|_| MoError::Missing {
            uri: uri.to_string(),
        })?;
    }
    let doc = TndsDocument {
        nodes: vec![node],
        ..TndsDocument::default()
    };
    work.apply_tnds(
        Principal::Device,
        &NodeUri::root(),
        &doc,
        TndsMode::Add,
        None,
    )?;
    if let Some(id) = work.find(&uri) {
        for n in work.subtree(id) {
            work.update_props(n, |p| p.scope = crate::dm::props::Scope::Permanent);
        }
    }
    *tree = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::uri::Target;

    #[test]
    fn devinfo_and_devdetail_round_trip() {
        let info = DevInfo {
            dev_id: "IMEI:493005100592800".into(),
            man: "Device Factory, Inc.".into(),
            model: "SmartPhone2000".into(),
            dmv: "1.2".into(),
            lang: "en-US".into(),
        };
        let detail = DevDetail {
            uri_limits: UriLimits::ANDROID,
            dev_typ: "smartphone".into(),
            oem: "Factory".into(),
            fwv: "1.0".into(),
            swv: "2.0".into(),
            hwv: "3.0".into(),
            lrg_obj: true,
        };
        let mut tree = DmTree::new();
        info.install(&mut tree).unwrap();
        detail.install(&mut tree).unwrap();
        assert_eq!(DevInfo::read(&tree).unwrap(), info);
        assert_eq!(DevDetail::read(&tree).unwrap(), detail);
        assert_eq!(tree.limits().uri, UriLimits::ANDROID);
        // Read-only and permanent for servers.
        let t = Target::parse("./DevInfo/Man").unwrap();
        assert!(tree.get(Principal::Server("s"), &t).is_ok());
        let err = tree
            .replace(
                Principal::Server("s"),
                &t,
                &crate::dm::ops::NodeData::text("x"),
                None,
            )
            .unwrap_err();
        assert_eq!(err.status().0, 425);
        let err = tree
            .delete(Principal::Device, &Target::parse("./DevInfo").unwrap())
            .unwrap_err();
        assert_eq!(err.status().0, 405);
        let pairs = info.leaves();
        let again = DevInfo::from_leaves(pairs.iter().map(|(n, v)| (*n, *v))).unwrap();
        assert_eq!(again, info);
        assert!(DevInfo::from_leaves([("./DevInfo/DevId", "x")]).is_err());
    }
}
