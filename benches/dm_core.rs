//! DM core figures: TNDS parse and write of a 10,000-node tree (MB/s), loading it into a tree,
//! and an ACL check at depth 10 (ns).
//!
//! `cargo bench --bench dm_core`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use dmdeleg::dm::acl::{Acl, AclCmd};
use dmdeleg::dm::props::Format;
use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::tree::{DmTree, NodeProps, Principal, TreeLimits};
use dmdeleg::dm::uri::{NodeUri, TndsSelection};

/// 100 accounts-like subtrees of 99 leaves each, plus interior nodes: 10,001 nodes.
fn ten_thousand_node_tree() -> DmTree {
    let mut tree = DmTree::new();
    for i in 0..100 {
        let base = NodeUri::parse(&format!("./Vendor/Sub{i:03}")).unwrap();
        tree.ensure_interior(
            &base,
            NodeProps::interior().with_acl(Acl::parse("Get=dms1+dms2&Replace=dms1").unwrap()),
        )
        .unwrap();
        for j in 0..99 {
            let leaf = base.join(&format!("Leaf{j:02}")).unwrap();
            tree.put_leaf(
                &leaf,
                format!("value {i}/{j} with some text & <markup>"),
                NodeProps::leaf(Format::Chr, "text/plain"),
            )
            .unwrap();
        }
    }
    tree
}

fn tnds(c: &mut Criterion) {
    let tree = ten_thousand_node_tree();
    let doc = tree
        .export_tnds(
            Principal::Device,
            &NodeUri::parse("./Vendor").unwrap(),
            &NodeUri::root(),
            &TndsSelection::CONTENT,
        )
        .unwrap();
    let xml = doc.to_xml();
    println!(
        "TNDS document: {} nodes, {} bytes",
        doc.node_count(),
        xml.len()
    );
    let mut group = c.benchmark_group("tnds_10k_nodes");
    group.throughput(Throughput::Bytes(xml.len() as u64));
    group.bench_function("parse", |b| {
        b.iter(|| TndsDocument::from_xml(black_box(xml.as_bytes())).unwrap())
    });
    group.bench_function("write", |b| b.iter(|| black_box(&doc).to_xml()));
    group.bench_function("load_into_tree", |b| {
        b.iter(|| DmTree::from_tnds(black_box(&doc), TreeLimits::default()).unwrap())
    });
    group.finish();
}

fn acl_check(c: &mut Criterion) {
    let mut tree = DmTree::new();
    let deep = NodeUri::parse("./A/B/C/D/E/F/G/H/I/J").unwrap();
    tree.ensure_interior(
        &NodeUri::parse("./A").unwrap(),
        NodeProps::interior().with_acl(Acl::parse("Get=dms1+dms2&Replace=dms1").unwrap()),
    )
    .unwrap();
    tree.ensure_interior(&deep, NodeProps::interior()).unwrap();
    let id = tree.find(&deep).unwrap();
    let mut group = c.benchmark_group("acl_check_depth_10");
    // Lookup by URI from the root, then inherit the ACL nine levels up.
    group.bench_function("by_uri", |b| {
        b.iter(|| tree.has_right(black_box(&deep), black_box("dms2"), AclCmd::Get))
    });
    group.bench_function("by_node", |b| {
        b.iter(|| {
            tree.allowed(
                Principal::Server(black_box("dms2")),
                black_box(id),
                AclCmd::Get,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, tnds, acl_check);
criterion_main!(benches);
