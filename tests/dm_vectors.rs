//! The DDF and tree files written by others load as DM trees, or are refused with a reason
//! that says what is wrong and where.

use dmdeleg::dm::acl::AclCmd;
use dmdeleg::dm::props::{AccessKind, Format};
use dmdeleg::dm::tnds::{TndsDocument, TndsError};
use dmdeleg::dm::tree::{DmTree, Principal, TreeLimits};
use dmdeleg::dm::uri::{NodeUri, Target};

fn vector(rel: &str) -> Vec<u8> {
    let path = format!("{}/../shared/vectors/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_android_ddf_loads_as_a_tree() {
    let doc = TndsDocument::from_xml(&vector("aosp-omadm/dmt_data/syncmldm.ddf")).unwrap();
    assert_eq!(doc.node_count(), 292);
    let tree = DmTree::from_tnds(&doc, TreeLimits::default()).unwrap();
    // DDF placeholders (empty NodeName, the `<x>` of dynamic nodes) are descriptions, not
    // instances: they and their subtrees are not created.
    assert_eq!(tree.len(), 255);
    let uri = |s: &str| NodeUri::parse(s).unwrap();
    let id = tree
        .find(&uri("./CDMA/BC10"))
        .expect("./CDMA/BC10 from the DDF");
    assert_eq!(tree.props(id).format, Format::Int);
    // AccessType Get+Replace: no Delete, so a Delete is refused by the description (405)
    // even for the device's own principal.
    assert!(tree.props(id).access.contains(AccessKind::Replace));
    assert!(!tree.props(id).access.contains(AccessKind::Delete));
    let mut t2 = tree.clone();
    let err = t2
        .delete(Principal::Device, &Target::parse("./CDMA/BC10").unwrap())
        .unwrap_err();
    assert_eq!(err.status().0, 405);
    assert!(tree.same_as(&DmTree::from_tnds(&doc, TreeLimits::default()).unwrap()));
    // The root keeps the default ACL, so any server may read it.
    assert!(tree.has_right(&uri("./CDMA"), "any.server", AclCmd::Get));
}

#[test]
fn android_tree_snapshots_are_refused_as_not_tnds() {
    for file in [
        "root.xml",
        "devdetail_uri.xml",
        "devdetail_ext.xml",
        "managedobjects.xml",
    ] {
        let err = TndsDocument::from_xml(&vector(&format!("aosp-omadm/dmt_data/{file}")))
            .expect_err(file);
        assert!(
            matches!(err, TndsError::UnsupportedVersion { ref found, .. } if found == "1.1.2"),
            "{file}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("1.1.2") && text.contains("line 2"),
            "{file}: {text}"
        );
    }
    let err = TndsDocument::from_xml(&vector("aosp-omadm/dmt_data/acl.txt")).unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn tnds_examples_load_or_say_why_not() {
    let synthetic =
        TndsDocument::from_xml(&vector("spec-examples/synthetic-tnds-dmacc.xml")).unwrap();
    let tree = DmTree::from_tnds(&synthetic, TreeLimits::default()).unwrap();
    assert_eq!(
        tree.value_str(&NodeUri::parse("./DMAcc/ServerID").unwrap()),
        Some("funambol")
    );
    for file in ["92-01.xml", "92-02.xml"] {
        let err = TndsDocument::from_xml(&vector(&format!("spec-examples/{file}"))).unwrap_err();
        assert!(err.to_string().contains("VerDTD"), "{file}: {err}");
        assert!(err.position().is_some(), "{file}");
    }
    let err = TndsDocument::from_xml(&vector("spec-examples/91-01.xml")).unwrap_err();
    assert!(!err.to_string().is_empty());
}
