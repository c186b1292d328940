//! The device change plan of a delegation and its exact undo (DESIGN.md section 4).
//!
//! The delegating server computes the plan from a fresh copy of the device's tree (as it may
//! read it): every change is tried on a working copy first, as the device would apply it for
//! this server, so a change the device would refuse is found before anything is sent. Each
//! change comes with its undo, built from the before-image; undoing replays them backwards.
//!
//! - DMAcc approach: the delegated server's account is added dormant
//!   (`Ext/Delegation/Dormant = true`), with an ACL that lets the delegated server manage it
//!   and the delegating server delete it (for a rollback).
//! - Bootstrap approach: a bootstrap config entry points the device at the delegated server's
//!   bootstrap URL.
//! - Partial: the delegated server gets Get, Add, Replace, Delete and Exec on each delegated
//!   subtree. Full: it gets every right the delegating server holds, wherever it holds it.
//! - Step 8 of a Full delegation removes the delegating server from every ACL and deletes its
//!   account; that is not undone (the delegation stands once confirmed).

use serde::{Deserialize, Serialize};

use crate::dm::acl::{Acl, AclCmd};
use crate::dm::mo::{BootConfigEntry, DmAcc};
use crate::dm::props::Format;
use crate::dm::tnds::{TndsDocument, TndsNode};
use crate::dm::tree::{DmTree, NodeId, NodeProps, Principal};
use crate::dm::tree_tnds::TndsMode;
use crate::dm::uri::{NodeUri, Target, TndsSelection};
use crate::syncml::session::DeviceCommand;

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A path to delegate does not exist on the device.
    #[error("{0} does not exist on the device")]
    NoSuchPath(String),
    /// The delegating server may not make a change the plan needs.
    #[error("this server may not change {uri}: {reason}")]
    NotPermitted {
        /// Where.
        uri: String,
        /// Why, in plain words.
        reason: String,
    },
    /// The account to install is not usable.
    #[error("the delegated server's account is not usable: {0}")]
    BadAccount(String),
}

/// One ACL the plan changes, for the operator's preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclChange {
    /// The node.
    pub uri: String,
    /// Its ACL before (empty: inherited).
    pub before: String,
    /// Its ACL after.
    pub after: String,
}

/// Changes to make on the device and how to undo them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The commands, in order.
    pub changes: Vec<DeviceCommand>,
    /// The commands that undo them, in the order to send them.
    pub undo: Vec<DeviceCommand>,
    /// Nodes the plan adds (subtree roots).
    pub added: Vec<String>,
    /// ACLs it changes.
    pub acls: Vec<AclChange>,
}

/// What the delegating server reads of the device's tree to plan against (`?list=TNDS+ACL+Value`):
/// the whole tree's structure, its ACLs and the values of leaves (the accounts' ServerIDs, the
/// bootstrap entries).
///
/// Formats and types are left out (formats were 42 % of the listing's bytes). The listed
/// tree takes a node with a Value as a leaf and one without as interior ([`DmTree::from_tnds`]),
/// which is right for every node a plan adds under (`./DMAcc`, the bootstrap config root, empty
/// on most devices) and every value it reads (the accounts' ServerIDs). A leaf whose value this
/// server may not read (an `AAuthSecret`) is taken as interior; no plan reads a leaf's format,
/// so the plans are the ones the whole tree gives.
pub const LISTING: TndsSelection = TndsSelection {
    acl: true,
    value: true,
    ..TndsSelection::NONE
};

/// The tree a [`LISTING`] returned, as the plans read it; `None` when the text is not a TNDS
/// document or not a tree.
pub fn listed_tree(xml: &[u8]) -> Option<DmTree> {
    let doc = TndsDocument::from_xml(xml).ok()?;
    DmTree::from_tnds(&doc, Default::default()).ok()
}

fn not_permitted(uri: &NodeUri, reason: impl Into<String>) -> PlanError {
    PlanError::NotPermitted {
        uri: uri.to_string(),
        reason: reason.into(),
    }
}

/// The node name a delegated server's account gets on the device: its ServerID, with the
/// characters a node name cannot hold replaced.
pub fn account_name(server_id: &str) -> String {
    server_id.replace(['/', '?'], "_")
}

/// The commands delegated on a Partial delegation's subtrees.
pub const PARTIAL_RIGHTS: [AclCmd; 5] = [
    AclCmd::Get,
    AclCmd::Add,
    AclCmd::Replace,
    AclCmd::Delete,
    AclCmd::Exec,
];

/// Checks the paths of a Partial delegation against the tree: each must exist.
pub fn check_paths(tree: &DmTree, paths: &[NodeUri]) -> Result<(), PlanError> {
    for p in paths {
        if !tree.exists(p) {
            return Err(PlanError::NoSuchPath(p.to_string()));
        }
    }
    Ok(())
}

/// Grants on a working copy and records each change, checking that `me` may make it.
fn grant_acls(
    work: &mut DmTree,
    me: &str,
    peer: &str,
    full: bool,
    paths: &[NodeUri],
    plan: &mut Plan,
) -> Result<(), PlanError> {
    // (uri, before) of every ACL changed, in order.
    let mut changed: Vec<(NodeUri, Acl)> = Vec::new();
    if full {
        // Every node where `me` is named: the peer gets the same commands there.
        for id in work.subtree(work.root()) {
            let acl = work.props(id).acl.clone();
            let cmds: Vec<AclCmd> = AclCmd::ALL
                .into_iter()
                .filter(|c| acl.names(*c, me))
                .collect();
            if cmds.is_empty() {
                continue;
            }
            let uri = work.uri_of(id);
            let already = cmds.iter().all(|c| acl.allows(*c, peer));
            if already {
                continue;
            }
            if !work.may_replace_acl(Principal::Server(me), id) {
                return Err(not_permitted(
                    &uri,
                    "it holds no Replace right for this ACL",
                ));
            }
            let mut after = acl.clone();
            after
                .grant_all(&cmds, peer)
                .map_err(|e| PlanError::BadAccount(e.to_string()))?;
            if after == acl {
                continue;
            }
            changed.push((uri, acl));
            work.props_mut(id).acl = after;
        }
    } else {
        for path in paths {
            let id = work
                .find(path)
                .ok_or_else(|| PlanError::NoSuchPath(path.to_string()))?;
            // The subtree root and every descendant with its own ACL will change.
            for node in work.subtree(id) {
                if (node == id || !work.props(node).acl.is_empty())
                    && !work.may_replace_acl(Principal::Server(me), node)
                {
                    return Err(not_permitted(
                        &work.uri_of(node),
                        "it holds no Replace right for this ACL",
                    ));
                }
            }
            let before = work
                .grant_subtree(path, peer, &PARTIAL_RIGHTS)
                .map_err(|e| PlanError::BadAccount(e.to_string()))?;
            changed.extend(before);
        }
    }
    for (uri, before) in &changed {
        let after = work
            .find(uri)
            .map(|id| work.props(id).acl.clone())
            .unwrap_or_default();
        plan.changes.push(DeviceCommand::replace_acl(uri, &after));
        plan.acls.push(AclChange {
            uri: uri.to_string(),
            before: before.to_string(),
            after: after.to_string(),
        });
    }
    // Undo restores the before-images, last change first.
    for (uri, before) in changed.iter().rev() {
        plan.undo.push(DeviceCommand::replace_acl(uri, before));
    }
    Ok(())
}

/// The account node as the delegating server installs it: dormant, manageable by the peer,
/// deletable by the delegating server.
pub fn dormant_account(dmacc: &TndsNode, me: &str, peer: &str) -> Result<TndsNode, PlanError> {
    let mut node = dmacc.clone();
    if node.name.is_empty() {
        return Err(PlanError::BadAccount("the account has no name".into()));
    }
    let acl = Acl::parse(&format!(
        "Delete={me}+{peer}&Get={me}+{peer}&Replace={peer}"
    ))
    .map_err(|e| PlanError::BadAccount(e.to_string()))?;
    let rt = node.rt.get_or_insert_with(Default::default);
    rt.acl = Some(acl);
    // Ext/Delegation/Dormant = true, replacing any Ext/Delegation the account carried.
    let dormant = TndsNode {
        name: "Dormant".into(),
        path: None,
        rt: Some(crate::dm::tnds::RtProperties {
            format: Some(Format::Bool),
            ty: Some(crate::dm::props::NodeType::Mime("text/plain".into())),
            ..Default::default()
        }),
        df: None,
        children: Vec::new(),
        value: Some("true".into()),
    };
    let interior = |name: &str, children: Vec<TndsNode>| TndsNode {
        name: name.into(),
        path: None,
        rt: Some(crate::dm::tnds::RtProperties {
            format: Some(Format::Node),
            ty: Some(crate::dm::props::NodeType::DdfName(String::new())),
            ..Default::default()
        }),
        df: None,
        children,
        value: None,
    };
    let delegation = interior("Delegation", vec![dormant]);
    match node.children.iter_mut().find(|c| c.name == "Ext") {
        Some(ext) => {
            ext.children.retain(|c| c.name != "Delegation");
            ext.children.push(delegation);
        }
        None => node.children.push(interior("Ext", vec![delegation])),
    }
    Ok(node)
}

/// Step 4 of the DMAcc approach: install the peer's account dormant and grant the rights.
pub fn prepare_dmacc(
    tree: &DmTree,
    me: &str,
    peer: &str,
    full: bool,
    paths: &[NodeUri],
    dmacc: &TndsNode,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let mut work = tree.clone();
    if !full {
        check_paths(&work, paths)?;
    }
    let account = dormant_account(dmacc, me, peer)?;
    let root = NodeUri::parse("./DMAcc").unwrap_or_default();
    let account_uri = root
        .join(&account.name)
        .map_err(|e| PlanError::BadAccount(e.to_string()))?;
    if work.exists(&account_uri) {
        return Err(PlanError::BadAccount(format!(
            "{account_uri} already exists on the device"
        )));
    }
    let doc = TndsDocument {
        nodes: vec![account],
        ..TndsDocument::default()
    };
    if !work.exists(&root) {
        return Err(not_permitted(&root, "the device has no ./DMAcc"));
    }
    work.apply_tnds(Principal::Server(me), &root, &doc, TndsMode::Add, None)
        .map_err(|e| not_permitted(&account_uri, e.to_string()))?;
    plan.changes.push(DeviceCommand::AddTnds {
        target: root.clone(),
        doc,
    });
    plan.added.push(account_uri.to_string());
    grant_acls(&mut work, me, peer, full, paths, &mut plan)?;
    plan.undo.push(DeviceCommand::Delete {
        target: account_uri,
    });
    Ok(plan)
}

/// Step 4 of the bootstrap approach: grant the rights and write the bootstrap config entry.
pub fn prepare_bootstrap(
    tree: &DmTree,
    me: &str,
    peer: &str,
    full: bool,
    paths: &[NodeUri],
    entry: &BootConfigEntry,
    boot_root: &NodeUri,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let mut work = tree.clone();
    if !full {
        check_paths(&work, paths)?;
    }
    grant_acls(&mut work, me, peer, full, paths, &mut plan)?;
    let entry_uri = entry
        .uri(boot_root)
        .map_err(|e| PlanError::BadAccount(e.to_string()))?;
    if work.exists(&entry_uri) {
        return Err(PlanError::BadAccount(format!(
            "{entry_uri} already exists on the device"
        )));
    }
    if !work.exists(boot_root) {
        return Err(not_permitted(
            boot_root,
            "the device has no bootstrap config",
        ));
    }
    let doc = entry.to_tnds(None);
    work.apply_tnds(Principal::Server(me), boot_root, &doc, TndsMode::Add, None)
        .map_err(|e| not_permitted(&entry_uri, e.to_string()))?;
    plan.changes.push(DeviceCommand::AddTnds {
        target: boot_root.clone(),
        doc,
    });
    plan.added.push(entry_uri.to_string());
    // The entry goes first on undo; the ACLs follow.
    plan.undo
        .insert(0, DeviceCommand::Delete { target: entry_uri });
    Ok(plan)
}

/// What the delegated server does in its first session with the device: the account it was
/// given becomes active.
pub fn activate(account: &str) -> Vec<DeviceCommand> {
    let dormant =
        NodeUri::parse(&format!("./DMAcc/{account}/Ext/Delegation/Dormant")).unwrap_or_default();
    vec![DeviceCommand::Replace {
        target: Target::from(dormant),
        format: Format::Bool,
        ty: Some("text/plain".into()),
        value: b"false".to_vec(),
    }]
}

/// Step 8 of a Full delegation: the delegating server leaves every ACL and deletes its own
/// account. Computed on a working copy so the order respects the device's rules: ACLs first
/// (while this server may still change them), the account last.
pub fn full_cleanup(tree: &DmTree, me: &str) -> Result<Vec<DeviceCommand>, PlanError> {
    let mut work = tree.clone();
    let account = DmAcc::find_by_server_id(&work, me)
        .ok_or_else(|| PlanError::BadAccount(format!("no account for {me} on the device")))?;
    let account_uri = account
        .uri()
        .map_err(|e| PlanError::BadAccount(e.to_string()))?;
    let mut cmds = Vec::new();
    // Nodes inside our own account go with it; the rest change from the leaves upwards, so
    // our Replace on a parent is still there when a child's ACL changes. A node's URI is built
    // only for a change.
    let in_account: std::collections::HashSet<NodeId> = work
        .find(&account_uri)
        .map(|id| work.subtree(id).into_iter().collect())
        .unwrap_or_default();
    let mut ids = work.subtree(work.root());
    ids.reverse();
    for id in ids {
        if in_account.contains(&id) {
            continue;
        }
        let mut after = work.props(id).acl.clone();
        if !after.remove_server(me, id == work.root()) {
            continue;
        }
        cmds.push(DeviceCommand::replace_acl(&work.uri_of(id), &after));
        work.props_mut(id).acl = after;
    }
    cmds.push(DeviceCommand::Delete {
        target: account_uri,
    });
    Ok(cmds)
}

/// A tree a delegating server may plan against when it has none fetched: the device's
/// standard nodes only.
pub fn empty_device_tree() -> DmTree {
    let mut t = DmTree::new();
    // The tree is only a planning aid; a failure here leaves it without ./DMAcc, which the
    // plan then reports.
    let _ = t.ensure_interior(
        &NodeUri::parse("./DMAcc").unwrap_or_default(),
        NodeProps::interior(),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::device::{SimAccount, SimDevice};
    use crate::syncml::auth::AuthScheme;

    fn device() -> DmTree {
        SimDevice::new(
            "IMEI:1",
            &SimAccount {
                server_id: "dms1".into(),
                server_url: "http://127.0.0.1:1/dm".into(),
                scheme: AuthScheme::Md5,
                client: ("u".into(), "c".into()),
                server: ("dms1".into(), "s".into()),
            },
        )
        .unwrap()
        .tree
    }

    fn account() -> TndsNode {
        DmAcc::new_digest(
            "dms2",
            "dms2",
            "http://127.0.0.1:2/dm",
            ("u2", "c2"),
            ("dms2", "s2"),
        )
        .to_tnds_node(None)
    }

    /// Applies commands to a tree the way the device would, as `who`.
    fn run(tree: &mut DmTree, who: &str, cmds: &[DeviceCommand]) {
        for c in cmds {
            let r = match c {
                DeviceCommand::AddTnds { target, doc } => {
                    tree.apply_tnds(Principal::Server(who), target, doc, TndsMode::Add, None)
                }
                DeviceCommand::Replace {
                    target,
                    format,
                    ty,
                    value,
                } => tree.replace(
                    Principal::Server(who),
                    target,
                    &crate::dm::ops::NodeData {
                        format: Some(*format),
                        ty: ty.clone(),
                        value: value.clone(),
                    },
                    None,
                ),
                DeviceCommand::Delete { target } => {
                    tree.delete(Principal::Server(who), &Target::from(target.clone()))
                }
                other => panic!("unexpected {other:?}"),
            };
            r.unwrap_or_else(|e| panic!("{c:?}: {e}"));
        }
    }

    #[test]
    fn partial_dmacc_plan_applies_and_undoes_exactly() {
        let before = device();
        let paths = [NodeUri::parse("./Vendor/Enterprise").unwrap()];
        let plan = prepare_dmacc(&before, "dms1", "dms2", false, &paths, &account()).unwrap();
        let mut tree = before.clone();
        run(&mut tree, "dms1", &plan.changes);
        assert!(tree.has_right(&paths[0], "dms2", AclCmd::Replace));
        assert!(!tree.has_right(
            &NodeUri::parse("./Vendor/Operator").unwrap(),
            "dms2",
            AclCmd::Replace
        ));
        let acc = DmAcc::read(&tree, "dms2").unwrap();
        assert!(acc.dormant);
        run(&mut tree, "dms2", &activate("dms2"));
        assert!(!DmAcc::read(&tree, "dms2").unwrap().dormant);
        run(&mut tree, "dms1", &plan.undo);
        assert!(tree.same_as(&before), "{:?}", tree.diff(&before));
    }

    #[test]
    fn full_plan_then_cleanup_leaves_only_the_delegated_server() {
        let before = device();
        let plan = prepare_dmacc(&before, "dms1", "dms2", true, &[], &account()).unwrap();
        let mut tree = before.clone();
        run(&mut tree, "dms1", &plan.changes);
        let undo_tree = {
            let mut t = tree.clone();
            run(&mut t, "dms1", &plan.undo);
            t
        };
        assert!(undo_tree.same_as(&before), "{:?}", undo_tree.diff(&before));
        let cleanup = full_cleanup(&tree, "dms1").unwrap();
        run(&mut tree, "dms1", &cleanup);
        assert!(!tree.servers_in_acls().iter().any(|s| s == "dms1"));
        assert!(DmAcc::find_by_server_id(&tree, "dms1").is_none());
        for uri in ["./Vendor/Enterprise", "./Vendor/Operator", "./DMAcc"] {
            let u = NodeUri::parse(uri).unwrap();
            assert_eq!(
                tree.has_right(&u, "dms2", AclCmd::Replace),
                before.has_right(&u, "dms1", AclCmd::Replace),
                "{uri}"
            );
        }
    }

    /// The tree `who` lists with [`LISTING`], read back as the delegating server reads it.
    fn listed(tree: &DmTree, who: &str) -> DmTree {
        let root = NodeUri::root();
        let xml = tree
            .export_tnds_xml(Principal::Server(who), &root, &root, &LISTING)
            .unwrap();
        assert!(!xml.contains("<Format>"), "{xml}");
        listed_tree(xml.as_bytes()).unwrap()
    }

    #[test]
    fn a_listing_without_formats_plans_as_the_whole_tree_does() {
        let mut before = device();
        // An empty leaf beside the device's empty bootstrap config: one has a Value to list, the
        // other none.
        before
            .put_leaf(
                &NodeUri::parse("./Vendor/Enterprise/Note").unwrap(),
                "",
                NodeProps::leaf(Format::Chr, "text/plain"),
            )
            .unwrap();
        let seen = listed(&before, "dms1");
        // Shapes: a listed node with a value is a leaf on the device; an interior node of the
        // device is interior in the listing; the only leaves taken as interior are the ones
        // whose values dms1 may not read.
        let mut hidden = 0;
        for id in before.subtree(before.root()) {
            let uri = before.uri_of(id);
            let copy = seen
                .find(&uri)
                .unwrap_or_else(|| panic!("{uri} not listed"));
            assert_eq!(seen.props(copy).acl, before.props(id).acl, "{uri}");
            if before.is_leaf(id) && !seen.is_leaf(copy) {
                let secret = !before
                    .props(id)
                    .access
                    .contains(crate::dm::props::AccessKind::Get);
                assert!(secret, "{uri} is a readable leaf listed as interior");
                hidden += 1;
            } else {
                assert_eq!(seen.is_leaf(copy), before.is_leaf(id), "{uri}");
                assert_eq!(seen.value(copy), before.value(id), "{uri}");
            }
        }
        assert!(hidden > 0, "the device's secrets are hidden from servers");
        let boot_root = BootConfigEntry::default_root();
        assert!(!seen.is_leaf(seen.find(&boot_root).unwrap()));
        // Every plan made from the listing is the one made from the whole tree.
        let entry = BootConfigEntry {
            name: "dms2".into(),
            server_url: "https://127.0.0.1:9/bootstrap/t".into(),
            server_id: Some("dms2".into()),
        };
        let paths = [NodeUri::parse("./Vendor/Enterprise").unwrap()];
        for (full, paths) in [(true, &[][..]), (false, &paths[..])] {
            assert_eq!(
                prepare_dmacc(&seen, "dms1", "dms2", full, paths, &account()),
                prepare_dmacc(&before, "dms1", "dms2", full, paths, &account()),
            );
            assert_eq!(
                prepare_bootstrap(&seen, "dms1", "dms2", full, paths, &entry, &boot_root),
                prepare_bootstrap(&before, "dms1", "dms2", full, paths, &entry, &boot_root),
            );
        }
        // Step 8, planned from a listing of the delegated device.
        let plan = prepare_dmacc(&seen, "dms1", "dms2", true, &[], &account()).unwrap();
        let mut tree = before.clone();
        run(&mut tree, "dms1", &plan.changes);
        assert_eq!(
            full_cleanup(&listed(&tree, "dms1"), "dms1").unwrap(),
            full_cleanup(&tree, "dms1").unwrap()
        );
    }

    #[test]
    fn bootstrap_plan_and_refusals() {
        let before = device();
        let entry = BootConfigEntry {
            name: "dms2".into(),
            server_url: "https://127.0.0.1:9/bootstrap/t".into(),
            server_id: Some("dms2".into()),
        };
        let paths = [NodeUri::parse("./Vendor/Operator").unwrap()];
        let plan = prepare_bootstrap(
            &before,
            "dms1",
            "dms2",
            false,
            &paths,
            &entry,
            &BootConfigEntry::default_root(),
        )
        .unwrap();
        let mut tree = before.clone();
        run(&mut tree, "dms1", &plan.changes);
        assert_eq!(
            BootConfigEntry::read(&tree, &BootConfigEntry::default_root(), "dms2").unwrap(),
            entry
        );
        run(&mut tree, "dms1", &plan.undo);
        assert!(tree.same_as(&before));
        let nowhere = [NodeUri::parse("./Nowhere").unwrap()];
        assert!(matches!(
            prepare_dmacc(&before, "dms1", "dms2", false, &nowhere, &account()),
            Err(PlanError::NoSuchPath(_))
        ));
        // DevInfo is read-only for everyone: not delegable by dms1.
        let devinfo = [NodeUri::parse("./DevInfo").unwrap()];
        assert!(matches!(
            prepare_dmacc(&before, "dms1", "dms2", false, &devinfo, &account()),
            Err(PlanError::NotPermitted { .. })
        ));
    }
}
