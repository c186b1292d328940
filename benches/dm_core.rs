//! DM core figures: TNDS parse and write of a 10,000-node tree (MB/s), loading it into a tree
//! and exporting it back, cloning it and looking up its leaves, an ACL check at depth 10 (ns),
//! and what a simulated device does with its DM account on every message or trigger (finding
//! the account, storing a nonce, checking a Package #0) and to set itself up.
//!
//! `cargo bench --bench dm_core`
//!
//! The benches allocate through mimalloc, as the binary does: with glibc's allocator the
//! figures of the allocation-heavy benches (TNDS load and export) swing with its heap-trimming
//! thresholds rather than with the code.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use dmdeleg::dm::acl::{Acl, AclCmd};
use dmdeleg::dm::mo::{AuthLevel, DmAcc};
use dmdeleg::dm::props::Format;
use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::tree::{DmTree, NodeProps, Principal, TreeLimits};
use dmdeleg::dm::uri::{NodeUri, TndsSelection};
use dmdeleg::sim::device::SimDevice;
use dmdeleg::sim::fleet::FleetConfig;
use dmdeleg::syncml::auth::{Nonce, Password};
use dmdeleg::syncml::pkg0::Trigger;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    group.bench_function("export_from_tree", |b| {
        b.iter(|| {
            black_box(&tree)
                .export_tnds(
                    Principal::Device,
                    &NodeUri::parse("./Vendor").unwrap(),
                    &NodeUri::root(),
                    &TndsSelection::CONTENT,
                )
                .unwrap()
        })
    });
    group.finish();
}

fn tree_ops(c: &mut Criterion) {
    let tree = ten_thousand_node_tree();
    let leaves: Vec<NodeUri> = (0..100)
        .map(|i| NodeUri::parse(&format!("./Vendor/Sub{i:03}/Leaf{:02}", (i * 7) % 99)).unwrap())
        .collect();
    let mut group = c.benchmark_group("tree_10k_nodes");
    group.bench_function("clone", |b| b.iter(|| black_box(&tree).clone()));
    // 100 lookups of a leaf three levels down, each among 100 and then 99 siblings.
    group.bench_function("find_100_leaves", |b| {
        b.iter(|| {
            leaves
                .iter()
                .filter(|u| black_box(&tree).find(u).is_some())
                .count()
        })
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

fn device_account(c: &mut Criterion) {
    let cfg = FleetConfig::new("dms1.example", "http://127.0.0.1:1/dm", 1);
    let (dev_id, account) = (cfg.dev_id(0), cfg.account(0));
    let mut dev = SimDevice::new(&dev_id, &account).unwrap();
    DmAcc::store_nonce(
        &mut dev.tree,
        "dms",
        AuthLevel::SrvCred,
        b"0123456789abcdef",
    )
    .unwrap();
    let trigger = Trigger::new(7, "dms1.example")
        .encode(
            "dms1.example",
            &Password::new(&account.server.1),
            b"0123456789abcdef",
        )
        .unwrap();
    let mut group = c.benchmark_group("sim_device");
    group.bench_function("find_account", |b| {
        b.iter(|| DmAcc::find_by_server_id(black_box(&dev.tree), "dms1.example").unwrap())
    });
    // What the device does with the two nonces a message of a session gives it.
    let mut tree = dev.tree.clone();
    let nonce = Nonce::random_from([7; 16]);
    group.bench_function("store_two_nonces", |b| {
        b.iter(|| {
            for level in [AuthLevel::ClCred, AuthLevel::SrvCred] {
                DmAcc::store_nonce(&mut tree, "dms", level, black_box(nonce.as_bytes())).unwrap();
            }
        })
    });
    group.bench_function("verify_trigger", |b| {
        b.iter(|| dev.verify_trigger(black_box(&trigger)).unwrap())
    });
    group.bench_function("new_device", |b| {
        b.iter(|| SimDevice::new(black_box(&dev_id), &account).unwrap())
    });
    group.finish();
}

criterion_group!(benches, tnds, tree_ops, acl_check, device_account);
criterion_main!(benches);
