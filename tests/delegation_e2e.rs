//! End to end: two engines on loopback with mutual TLS between them, simulated devices that
//! speak SyncML DM over HTTP and enforce their ACLs, real SQLite files. Each test asserts the
//! device's whole DM tree afterwards.

use std::path::PathBuf;
use std::time::Duration;

use dmdeleg::delegation::machine::{Role, State};
use dmdeleg::dm::mo::DmAcc;
use dmdeleg::dm::tree::DmTree;
use dmdeleg::engine::driver::StartRequest;
use dmdeleg::lab::{DMS1, DMS2, Lab, LabOptions};

const LONG: Duration = Duration::from_secs(30);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dmdeleg-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn lab(name: &str, devices: usize) -> Lab {
    let lab = Lab::start(&LabOptions::new(&scratch(name), devices))
        .await
        .unwrap();
    assert_eq!(lab.inventory(8).await, 0, "every device's first session");
    lab
}

fn full(dev_id: &str) -> StartRequest {
    StartRequest {
        peer: DMS2.into(),
        dev_id: dev_id.into(),
        role: Role::Delegating,
        full: true,
        paths: Vec::new(),
        bootstrap: false,
        lease: None,
        device: None,
        retry_of: None,
    }
}

fn assert_full_outcome(tree: &DmTree) {
    assert!(
        DmAcc::find_by_server_id(tree, DMS1).is_none(),
        "DMS-1's account is gone"
    );
    let acc = DmAcc::find_by_server_id(tree, DMS2).expect("DMS-2's account");
    assert!(!acc.dormant, "DMS-2's account is active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_dmacc_initiated_by_the_delegating_server() {
    let lab = lab("full-dmacc", 1).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    let s1 = lab.dms1.wait_done(&id, LONG).await.unwrap();
    let s2 = lab.dms2.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s1.state, State::Completed, "{s1:?}");
    assert_eq!(s2.state, State::Completed, "{s2:?}");
    let tree = lab.fleet.tree(&dev).await.unwrap();
    assert_full_outcome(&tree);
}

use dmdeleg::delegation::messages::DeviceInfo;
use dmdeleg::dm::acl::AclCmd;
use dmdeleg::dm::uri::NodeUri;
use dmdeleg::engine::service::Engine;
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::session::DeviceCommand;

const PARTIAL: &str = "./Vendor/Enterprise";

fn uri(s: &str) -> NodeUri {
    NodeUri::parse(s).unwrap()
}

/// The tree without what every session changes (the nonces in the accounts).
fn normalised(tree: &DmTree) -> DmTree {
    let mut t = tree.clone();
    for id in t.subtree(t.root()) {
        if t.name(id) == "AAuthData" && t.is_leaf(id) {
            let u = t.uri_of(id);
            let props = t.props(id).clone();
            t.put_leaf(&u, "", props).unwrap();
        }
    }
    t
}

fn assert_same_tree(before: &DmTree, after: &DmTree, label: &str) {
    let (b, a) = (normalised(before), normalised(after));
    assert!(b.same_as(&a), "{label}: the tree differs: {:?}", b.diff(&a));
}

/// Runs commands on the device through `engine`'s queue and a Package #0; their statuses.
async fn run_on(engine: &Engine, dev: &str, cmds: Vec<DeviceCommand>) -> Vec<StatusCode> {
    let mut rxs = Vec::new();
    for c in cmds {
        rxs.push(engine.dm().enqueue(dev, c).unwrap());
    }
    engine.dm().notify(dev).await.unwrap();
    let mut out = Vec::new();
    for rx in rxs {
        let r = tokio::time::timeout(LONG, rx)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        out.push(r.status);
    }
    out
}

fn request(lab: &Lab, dev: &str, initiator: Role, full: bool, bootstrap: bool) -> StartRequest {
    let (peer, device) = match initiator {
        Role::Delegating => (DMS2, None),
        Role::Delegated => (
            DMS1,
            Some(DeviceInfo {
                dev_id: dev.into(),
                man: "dmdeleg".into(),
                model: "SimPhone".into(),
                notify: Some(format!("{}/push/{dev}", lab.fleet.push_base().unwrap())),
            }),
        ),
    };
    StartRequest {
        peer: peer.into(),
        dev_id: dev.into(),
        role: initiator,
        full,
        paths: if full {
            Vec::new()
        } else {
            vec![PARTIAL.into()]
        },
        bootstrap,
        lease: None,
        device,
        retry_of: None,
    }
}

fn initiator_engine(lab: &Lab, initiator: Role) -> &Engine {
    match initiator {
        Role::Delegating => &lab.dms1,
        Role::Delegated => &lab.dms2,
    }
}

/// The four flows of the spec's figures 5, 6, 8 and 9, each Full and Partial, on one lab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_flows_full_and_partial() {
    let lab = lab("four-flows", 8).await;
    let mut n = 0;
    for initiator in [Role::Delegating, Role::Delegated] {
        for bootstrap in [false, true] {
            for full in [true, false] {
                let dev = lab.fleet.dev_ids()[n].clone();
                n += 1;
                let label = format!("initiator {initiator:?}, bootstrap {bootstrap}, full {full}");
                let before = lab.fleet.tree(&dev).await.unwrap();
                let req = request(&lab, &dev, initiator, full, bootstrap);
                let id = initiator_engine(&lab, initiator)
                    .start_delegation(req)
                    .await
                    .unwrap();
                let s1 = lab.dms1.wait_done(&id, LONG).await;
                let s2 = lab.dms2.wait_done(&id, LONG).await;
                assert_eq!(
                    s1.as_ref().map(|s| s.state),
                    Some(State::Completed),
                    "{label}: DMS-1 {s1:?}"
                );
                assert_eq!(
                    s2.as_ref().map(|s| s.state),
                    Some(State::Completed),
                    "{label}: DMS-2 {s2:?}"
                );
                let tree = lab.fleet.tree(&dev).await.unwrap();
                if full {
                    assert_full_outcome(&tree);
                    // DMS-2 holds every right DMS-1 held, and DMS-1 is in no ACL.
                    for id in tree.subtree(tree.root()) {
                        assert!(!tree.props(id).acl.servers().contains(&DMS1), "{label}");
                    }
                    for id in before.subtree(before.root()) {
                        let u = before.uri_of(id);
                        if u.segments().first().is_some_and(|s| s == "DMAcc") {
                            continue;
                        }
                        for cmd in AclCmd::ALL {
                            if before.has_right(&u, DMS1, cmd) {
                                assert!(tree.has_right(&u, DMS2, cmd), "{label}: {u} lacks {cmd}");
                            }
                        }
                    }
                    // DMS-2 manages the device over the wire; DMS-1 cannot reach it.
                    let st = run_on(
                        &lab.dms2,
                        &dev,
                        vec![DeviceCommand::replace_text(
                            &uri("./Vendor/Operator/Connectivity/APN/Name"),
                            "dms2-apn",
                        )],
                    )
                    .await;
                    assert_eq!(st, vec![StatusCode::OK], "{label}");
                } else {
                    let acc = DmAcc::find_by_server_id(&tree, DMS2).expect("DMS-2's account");
                    assert!(!acc.dormant, "{label}");
                    assert!(DmAcc::find_by_server_id(&tree, DMS1).is_some(), "{label}");
                    // Inside: DMS-2 may Replace; outside: 425; DMS-1 keeps the rest.
                    let inside = uri("./Vendor/Enterprise/Policy");
                    let outside = uri("./Vendor/Operator/Connectivity/APN/Name");
                    let st = run_on(
                        &lab.dms2,
                        &dev,
                        vec![
                            DeviceCommand::replace_text(&inside, "relaxed"),
                            DeviceCommand::replace_text(&outside, "dms2-apn"),
                        ],
                    )
                    .await;
                    assert_eq!(
                        st,
                        vec![StatusCode::OK, StatusCode::PERMISSION_DENIED],
                        "{label}"
                    );
                    let st = run_on(
                        &lab.dms1,
                        &dev,
                        vec![DeviceCommand::replace_text(&outside, "dms1-apn")],
                    )
                    .await;
                    assert_eq!(st, vec![StatusCode::OK], "{label}");
                    let after = lab.fleet.tree(&dev).await.unwrap();
                    assert_eq!(after.value_str(&inside), Some("relaxed"));
                    assert_eq!(after.value_str(&outside), Some("dms1-apn"));
                    // Nothing else changed: the tree is the one before plus DMS-2's account
                    // and rights on the subtree (and the two values just written).
                    let mut expect = before.clone();
                    expect
                        .put_leaf(
                            &inside,
                            "relaxed",
                            expect.props(expect.find(&inside).unwrap()).clone(),
                        )
                        .unwrap();
                    expect
                        .put_leaf(
                            &outside,
                            "dms1-apn",
                            expect.props(expect.find(&outside).unwrap()).clone(),
                        )
                        .unwrap();
                    let mut got = after.clone();
                    // The two writes stamp their leaves (TStamp, VerNo); that is expected.
                    for u in [&inside, &outside] {
                        let id = got.find(u).unwrap();
                        *got.props_mut(id) = expect.props(expect.find(u).unwrap()).clone();
                    }
                    let acc_uri = uri(&format!("./DMAcc/{}", acc.name));
                    got.remove(&acc_uri).unwrap();
                    let sub = got.find(&uri(PARTIAL)).unwrap();
                    let acl = got.props(sub).acl.clone();
                    let mut stripped = acl.clone();
                    stripped.remove_server(DMS2, false);
                    let _ = acl;
                    got.set_acl(&uri(PARTIAL), stripped).unwrap();
                    let exp_sub = expect.find(&uri(PARTIAL)).unwrap();
                    let exp_acl = expect.effective_acl(exp_sub).0.clone();
                    let got_acl = got.props(got.find(&uri(PARTIAL)).unwrap()).acl.clone();
                    assert_eq!(
                        got_acl.to_string(),
                        exp_acl.to_string(),
                        "{label}: the subtree's ACL is the inherited one plus DMS-2"
                    );
                    got.set_acl(&uri(PARTIAL), expect.props(exp_sub).acl.clone())
                        .unwrap();
                    assert_same_tree(&expect, &got, &label);
                }
            }
        }
    }
}
