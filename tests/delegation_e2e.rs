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

mod common;

fn scratch(name: &str) -> PathBuf {
    common::serve::scratch("e2e", name)
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
    let sessions_before = lab.dms1.dm().stats().sessions_completed;
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    let s1 = lab.dms1.wait_done(&id, LONG).await.unwrap();
    let s2 = lab.dms2.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s1.state, State::Completed, "{s1:?}");
    assert_eq!(s2.state, State::Completed, "{s2:?}");
    let tree = lab.fleet.tree(&dev).await.unwrap();
    assert_full_outcome(&tree);
    // Each tree listing and the changes computed from it share one session (the reply after
    // the listing is held for them): steps 4 and 8 take one session each, and every
    // Package #0 the device got was valid (the nonces stayed in step).
    assert_eq!(
        lab.dms1.dm().stats().sessions_completed - sessions_before,
        2,
        "DMS-1's sessions with the device"
    );
    assert_eq!(lab.fleet.counts().triggers_ignored, 0);
    // Both sides log every message; the account's secrets only as `********`, on the side
    // that sent DELEGATION_START as on the side that received it.
    for (engine, outgoing) in [(&lab.dms2, true), (&lab.dms1, false)] {
        let key = id.clone();
        let rows = engine
            .store()
            .call(move |c| dmdeleg::store::delegations::messages(c, &key))
            .await
            .unwrap();
        assert_eq!(rows.len(), 5, "{rows:?}");
        let start = rows
            .iter()
            .find(|r| r.msg_type == "DELEGATION_START")
            .unwrap();
        assert_eq!(start.outgoing, outgoing);
        assert!(
            start.xml.contains("<Value>********</Value>"),
            "{}",
            start.xml
        );
        let prepared = rows
            .iter()
            .find(|r| r.msg_type == "DELEGATION_PREPARED")
            .unwrap();
        assert!(prepared.xml.starts_with("<MgmtTree"), "{}", prepared.xml);
    }
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
            t.remove(&u).unwrap();
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

use dmdeleg::delegation::machine::Deadlines;
use dmdeleg::delegation::messages::{Approach, Body, DelType, MEDIA_TYPE, Message, Sender};
use dmdeleg::engine::driver::new_delegation_id;
use dmdeleg::engine::peer_client::MESSAGES_PATH;
use dmdeleg::engine::peers::Policy;
use dmdeleg::sim::device::DeviceFaults;

fn quick() -> Deadlines {
    Deadlines {
        peer_ms: 2_000,
        device_ms: 2_000,
        bootstrap_ms: 3_000,
        decision_ms: 60_000,
        undo_retry_ms: 500,
    }
}

async fn lab_with(name: &str, devices: usize, tweak: impl FnOnce(&mut LabOptions)) -> Lab {
    let mut opts = LabOptions::new(&scratch(name), devices);
    opts.deadlines = quick();
    tweak(&mut opts);
    let lab = Lab::start(&opts).await.unwrap();
    assert_eq!(lab.inventory(8).await, 0, "every device's first session");
    lab
}

/// Both servers end `state` with `code`, and the device is exactly as before.
async fn assert_rolled_back(
    lab: &Lab,
    id: &str,
    dev: &str,
    before: &DmTree,
    state: State,
    codes: &[u16],
    label: &str,
) {
    for (name, engine) in [("DMS-1", &lab.dms1), ("DMS-2", &lab.dms2)] {
        let s = engine.wait_done(id, LONG).await;
        let s = s.unwrap_or_else(|| panic!("{label}: {name} has no record of {id}"));
        assert_eq!(s.state, state, "{label}: {name} {s:?}");
        let code = s.reason.as_ref().map(|r| r.0);
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "{label}: {name} reason {:?}, expected one of {codes:?}",
            s.reason
        );
    }
    let after = lab.fleet.tree(dev).await.unwrap();
    assert_same_tree(before, &after, label);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_leaves_the_device_untouched() {
    let lab = lab_with("nack", 1, |o| o.dms2_policy = Policy::Decline).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let before = lab.fleet.tree(&dev).await.unwrap();
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    assert_rolled_back(&lab, &id, &dev, &before, State::Aborted, &[1001], "nack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_times_out() {
    let lab = lab_with("unreachable", 1, |o| o.dms2_unreachable = true).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let before = lab.fleet.tree(&dev).await.unwrap();
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    let s = lab.dms1.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s.state, State::Failed, "{s:?}");
    assert_eq!(s.reason.as_ref().map(|r| r.0), Some(1002), "{s:?}");
    // DMS-2 never heard of it.
    assert!(lab.dms2.summary(&id).is_none());
    assert_same_tree(&before, &lab.fleet.tree(&dev).await.unwrap(), "unreachable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_fails_the_delegation_at_its_deadline() {
    let lab = lab_with("offline", 1, |_| {}).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let before = lab.fleet.tree(&dev).await.unwrap();
    // The device drops every session before its first message.
    lab.fleet
        .set_faults(
            &dev,
            DeviceFaults {
                drop_after_messages: Some(0),
                ..DeviceFaults::default()
            },
        )
        .await;
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    assert_rolled_back(&lab, &id, &dev, &before, State::Failed, &[2001], "offline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refusing_the_acl_change_rolls_back() {
    let lab = lab_with("device-500", 1, |_| {}).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let before = lab.fleet.tree(&dev).await.unwrap();
    // Commands on ./Vendor fail with 500 (after the snapshot, which reads the root).
    lab.fleet
        .set_faults(
            &dev,
            DeviceFaults {
                fail_paths: vec![uri("./Vendor")],
                ..DeviceFaults::default()
            },
        )
        .await;
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    assert_rolled_back(
        &lab,
        &id,
        &dev,
        &before,
        State::Failed,
        &[2002],
        "device 500",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_bootstrap_server_ends_in_the_step_7_timeout() {
    // DMS-2's bootstrap URLs expire at once: the device is refused (403) and never calls.
    let lab = lab_with("bootstrap-refused", 1, |o| o.token_ttl_ms = 0).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let before = lab.fleet.tree(&dev).await.unwrap();
    let mut req = full(&dev);
    req.bootstrap = true;
    let id = lab.dms1.start_delegation(req).await.unwrap();
    assert_rolled_back(
        &lab,
        &id,
        &dev,
        &before,
        State::Failed,
        &[1002, 4001],
        "bootstrap refused",
    )
    .await;
    assert!(lab.fleet.counts().bootstraps_failed >= 1);
}

/// A delegation held at step 6: initiated by DMS-2 without the device's push address, so
/// DMS-2 cannot wake the device and DMS-1 waits for CONFIRM with the device changed.
async fn held_midway(lab: &Lab, dev: &str) -> String {
    let mut req = request(lab, dev, Role::Delegated, true, false);
    if let Some(d) = req.device.as_mut() {
        d.notify = None;
    }
    let id = lab.dms2.start_delegation(req).await.unwrap();
    let s = lab
        .dms1
        .wait_for(&id, LONG, |s| s.waiting_for == "the peer to confirm")
        .await;
    assert!(s.is_some_and(|s| s.waiting_for == "the peer to confirm"));
    let s = lab
        .dms2
        .wait_for(&id, LONG, |s| {
            s.waiting_for == "the device to activate the account"
        })
        .await;
    assert!(s.is_some_and(|s| s.waiting_for == "the device to activate the account"));
    let tree = lab.fleet.tree(dev).await.unwrap();
    let acc = DmAcc::find_by_server_id(&tree, DMS2).expect("the account is installed");
    assert!(acc.dormant);
    id
}

fn slow() -> Deadlines {
    Deadlines {
        device_ms: 20_000,
        ..quick()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_abort_midway_on_either_side_rolls_back() {
    let lab = lab_with("abort", 2, |o| o.deadlines = slow()).await;
    for (i, side) in ["DMS-1", "DMS-2"].into_iter().enumerate() {
        let dev = lab.fleet.dev_ids()[i].clone();
        let before = lab.fleet.tree(&dev).await.unwrap();
        let id = held_midway(&lab, &dev).await;
        let engine = if i == 0 { &lab.dms1 } else { &lab.dms2 };
        engine.abort(&id).await.unwrap();
        let label = format!("abort on {side}");
        assert_rolled_back(&lab, &id, &dev, &before, State::Aborted, &[1001], &label).await;
    }
}

/// A client with DMS-2's certificate (or another identity), speaking to DMS-1's peer endpoint.
fn peer_client(lab: &Lab, identity: Option<(&[u8], &[u8])>, ca: &[u8]) -> reqwest::Client {
    let _ = lab;
    let roots = dmdeleg::tls::load_certs(ca).unwrap();
    dmdeleg::tls::reqwest_client(&roots, identity).unwrap()
}

fn lab_file(lab: &Lab, name: &str) -> Vec<u8> {
    std::fs::read(lab.engines[0].certs.join(name)).unwrap()
}

fn notif_from_dms2(dev: &str) -> Message {
    Message {
        id: new_delegation_id(),
        seq: 1,
        server_id: DMS2.into(),
        del_type: DelType::Full,
        approach: Approach::DmAcc,
        lease: None,
        body: Body::Notif {
            sender: Sender::Delegated,
            device: DeviceInfo {
                dev_id: dev.into(),
                man: String::new(),
                model: String::new(),
                notify: None,
            },
            paths: vec![NodeUri::root()],
        },
    }
}

async fn post(client: &reqwest::Client, lab: &Lab, body: Vec<u8>) -> Result<(u16, String), String> {
    let url = format!("{}{MESSAGES_PATH}", lab.dms1.peer_url().unwrap());
    post_to(client, &url, body).await
}

/// POSTs a message to a peer endpoint's messages URL: (status, body).
async fn post_to(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    let resp = client
        .post(url)
        .header("content-type", MEDIA_TYPE)
        .body(body)
        .send()
        .await
        .map_err(|e| dmdeleg::sim::device::error_chain(&e))?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_delegation_of_a_busy_device_is_refused_with_1003() {
    let lab = lab_with("busy", 1, |o| o.dms2_policy = Policy::Operator).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let first = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    let s = lab
        .dms2
        .wait_for(&first, LONG, |s| s.state == State::AwaitingOperator)
        .await;
    assert!(s.is_some_and(|s| s.state == State::AwaitingOperator));
    // Locally, on either server: refused at once.
    let err = lab.dms1.start_delegation(full(&dev)).await.unwrap_err();
    assert!(err.to_string().contains("1003"), "{err}");
    let err = lab
        .dms2
        .start_delegation(request(&lab, &dev, Role::Delegated, true, false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1003"), "{err}");
    // From the peer: DMS-1 answers the NOTIF with DELEGATION_FAILURE 1003 and records it.
    let (cert, key) = (
        lab_file(&lab, "dms2.example.pem"),
        lab_file(&lab, "dms2.example.key"),
    );
    let client = peer_client(&lab, Some((&cert, &key)), &lab_file(&lab, "ca.pem"));
    let msg = notif_from_dms2(&dev);
    let id = msg.id.as_str().to_owned();
    let (status, _) = post(&client, &lab, msg.to_xml()).await.unwrap();
    assert_eq!(status, 202);
    let s = lab.dms1.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s.state, State::Failed);
    assert_eq!(s.reason.as_ref().map(|r| r.0), Some(1003), "{s:?}");
    // The first one goes on: DMS-2's operator accepts it.
    lab.dms2.accept(&first).await.unwrap();
    let s = lab.dms1.wait_done(&first, LONG).await.unwrap();
    assert_eq!(s.state, State::Completed, "{s:?}");
    assert_full_outcome(&lab.fleet.tree(&dev).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_endpoint_refuses_strangers_and_impostors_and_ignores_replays() {
    let lab = lab_with("mtls", 1, |o| o.dms1_policy = Policy::Operator).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let ca = lab_file(&lab, "ca.pem");
    let msg = notif_from_dms2(&dev);
    // No client certificate: the handshake fails, nothing reaches HTTP.
    let anonymous = peer_client(&lab, None, &ca);
    let failures = lab.dms1.peer_handshake_failures();
    assert!(post(&anonymous, &lab, msg.to_xml()).await.is_err());
    // A certificate from an unknown CA (with the right name): the handshake fails too.
    let rogue = dmdeleg::tls::LabPki::generate("rogue CA").unwrap();
    let fake = rogue.issue(DMS2, &[DMS2, "127.0.0.1"]).unwrap();
    let (c, k) = fake.identity_pem();
    let stranger = peer_client(&lab, Some((c, k)), &ca);
    assert!(post(&stranger, &lab, msg.to_xml()).await.is_err());
    // The server counts a failed handshake when it has given up on it.
    for _ in 0..100 {
        if lab.dms1.peer_handshake_failures() >= failures + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lab.dms1.peer_handshake_failures() >= failures + 2);
    // DMS-2's valid certificate, but the message claims another server: 403, empty.
    let (cert, key) = (
        lab_file(&lab, "dms2.example.pem"),
        lab_file(&lab, "dms2.example.key"),
    );
    let dms2 = peer_client(&lab, Some((&cert, &key)), &ca);
    let mut impostor = notif_from_dms2(&dev);
    impostor.server_id = "dms3.example".into();
    let (status, body) = post(&dms2, &lab, impostor.to_xml()).await.unwrap();
    assert_eq!((status, body.as_str()), (403, ""));
    // DMS-1's own certificate presented to itself is no configured peer's: 403.
    let (cert1, key1) = (
        lab_file(&lab, "dms1.example.pem"),
        lab_file(&lab, "dms1.example.key"),
    );
    let itself = peer_client(&lab, Some((&cert1, &key1)), &ca);
    let (status, _) = post(&itself, &lab, msg.to_xml()).await.unwrap();
    assert_eq!(status, 403);
    // Garbage is a 400 naming the problem.
    let (status, body) = post(&dms2, &lab, b"<MgmtTree>".to_vec()).await.unwrap();
    assert_eq!(status, 400);
    assert!(body.starts_with("3001 BadMessage: "), "{body}");
    // The genuine message is accepted once; its replay is acknowledged and not processed.
    let id = msg.id.as_str().to_owned();
    assert_eq!(post(&dms2, &lab, msg.to_xml()).await.unwrap().0, 202);
    assert_eq!(post(&dms2, &lab, msg.to_xml()).await.unwrap().0, 202);
    let s = lab
        .dms1
        .wait_for(&id, LONG, |s| s.state == State::AwaitingOperator)
        .await
        .unwrap();
    assert_eq!(s.state, State::AwaitingOperator);
    let key = id.clone();
    let rows = lab
        .dms1
        .store()
        .call(move |c| dmdeleg::store::delegations::messages(c, &key))
        .await
        .unwrap();
    assert_eq!(
        rows.iter().filter(|r| !r.outgoing).count(),
        1,
        "processed once"
    );
    // Another message under the Seq already taken is no replay: 409, and not processed.
    let mut reused = msg.clone();
    reused.body = Body::Prepared;
    let (status, body) = post(&dms2, &lab, reused.to_xml()).await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("Seq 1 was already used"), "{body}");
    // A message for an unknown delegation: 404.
    let mut stray = notif_from_dms2(&dev);
    stray.seq = 2;
    stray.body = Body::Prepared;
    assert_eq!(post(&dms2, &lab, stray.to_xml()).await.unwrap().0, 404);
    // Not valid in the state (CONFIRM while DMS-1 waits for an operator): 409, and the
    // delegation fails with 3001 on both sides; DMS-2 never knew it, so only DMS-1 records.
    let mut confirm = notif_from_dms2(&dev);
    confirm.id = msg.id.clone();
    confirm.seq = 2;
    confirm.body = Body::Confirm {
        session_id: "1".into(),
    };
    assert_eq!(post(&dms2, &lab, confirm.to_xml()).await.unwrap().0, 409);
    let s = lab.dms1.wait_done(&id, LONG).await.unwrap();
    assert_eq!(
        (s.state, s.reason.as_ref().map(|r| r.0)),
        (State::Failed, Some(3001))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_delegation_reverts_by_itself() {
    let lab = lab_with("lease", 1, |_| {}).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let before = lab.fleet.tree(&dev).await.unwrap();
    let mut req = full(&dev);
    req.lease = Some(2);
    let id = lab.dms1.start_delegation(req).await.unwrap();
    let s = lab
        .dms1
        .wait_for(&id, LONG, |s| s.waiting_for == "the lease to end")
        .await
        .unwrap();
    assert_eq!(s.state, State::Completed);
    // During the lease DMS-2 manages the device and DMS-1 keeps its account (no step 8).
    let during = lab.fleet.tree(&dev).await.unwrap();
    assert!(DmAcc::find_by_server_id(&during, DMS2).is_some_and(|a| !a.dormant));
    assert!(DmAcc::find_by_server_id(&during, DMS1).is_some());
    let s = lab.dms1.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s.state, State::Completed, "{s:?}");
    assert_same_tree(&before, &lab.fleet.tree(&dev).await.unwrap(), "lease ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delegation_is_retried_as_a_new_attempt() {
    let lab = lab_with("retry", 1, |_| {}).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    lab.fleet
        .set_faults(
            &dev,
            DeviceFaults {
                fail_paths: vec![uri("./Vendor")],
                ..DeviceFaults::default()
            },
        )
        .await;
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    let s = lab.dms1.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s.state, State::Failed);
    // A running one cannot be retried; the failed one can, once the device is fixed.
    lab.fleet.set_faults(&dev, DeviceFaults::default()).await;
    let again = lab.dms1.retry(&id).await.unwrap();
    assert_ne!(again, id);
    let s = lab.dms1.wait_done(&again, LONG).await.unwrap();
    assert_eq!(s.state, State::Completed, "{s:?}");
    assert_eq!(s.retry_of.as_deref(), Some(id.as_str()));
    assert!(
        lab.dms1.retry(&again).await.is_err(),
        "a completed one is not retried"
    );
    assert_full_outcome(&lab.fleet.tree(&dev).await.unwrap());
    // The audit trail has the start, the retry and both outcomes.
    let audit = lab
        .dms1
        .store()
        .call(|c| {
            dmdeleg::store::delegations::audit(
                c,
                &dmdeleg::store::delegations::AuditFilter::default(),
            )
        })
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.detail.contains(&format!("retry of {id}")))
    );
    assert_eq!(audit.iter().filter(|a| a.action == "finish").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_declines_a_request_with_a_reason() {
    let lab = lab_with("decline", 1, |o| o.dms2_policy = Policy::Operator).await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let before = lab.fleet.tree(&dev).await.unwrap();
    let id = lab.dms1.start_delegation(full(&dev)).await.unwrap();
    let s = lab
        .dms2
        .wait_for(&id, LONG, |s| s.state == State::AwaitingOperator)
        .await
        .unwrap();
    assert_eq!(s.state, State::AwaitingOperator);
    assert_eq!(lab.dms2.requests().len(), 1);
    lab.dms2.decline(&id, "not this week").await.unwrap();
    let s = lab.dms1.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s.state, State::Aborted);
    assert_eq!(s.reason, Some((1001, "not this week".into())));
    assert_same_tree(&before, &lab.fleet.tree(&dev).await.unwrap(), "declined");
}

/// A delegation that ended stays ended when the engine has restarted (and so forgotten what
/// it kept in memory) and the peer's DELEGATION_NOTIF comes again: acknowledged, not
/// processed, and the stored delegation is not overwritten by a new one with its ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notif_replayed_after_a_restart_does_not_reopen_a_finished_delegation() {
    let lab = lab_with("replay-after-restart", 1, |o| {
        o.dms1_policy = Policy::Decline
    })
    .await;
    let dev = lab.fleet.dev_ids()[0].clone();
    let ca = lab_file(&lab, "ca.pem");
    let (cert, key) = (
        lab_file(&lab, "dms2.example.pem"),
        lab_file(&lab, "dms2.example.key"),
    );
    let dms2 = peer_client(&lab, Some((&cert, &key)), &ca);
    let msg = notif_from_dms2(&dev);
    let id = msg.id.as_str().to_owned();
    assert_eq!(post(&dms2, &lab, msg.to_xml()).await.unwrap().0, 202);
    let s = lab.dms1.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s.state, State::Aborted, "{s:?}");
    // Over for the engine too: its answer (a nack) is delivered or given up.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let key = id.clone();
        let row = lab
            .dms1
            .store()
            .call(move |c| dmdeleg::store::delegations::load(c, &key))
            .await
            .unwrap()
            .unwrap();
        if !row.live {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still live: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("{}{MESSAGES_PATH}", lab.dms1.peer_url().unwrap());
    let Lab {
        dms1,
        dms2: _dms2,
        fleet: _fleet,
        engines,
    } = lab;
    dms1.stop().await;
    let dms1 = dmdeleg::engine::service::Engine::start(engines[0].config().unwrap())
        .await
        .unwrap();
    assert_eq!(post_to(&dms2, &url, msg.to_xml()).await.unwrap().0, 202);
    // A later message of the delegation is refused as over, as before the restart.
    let mut later = msg.clone();
    later.seq = 2;
    later.body = Body::Prepared;
    assert_eq!(post_to(&dms2, &url, later.to_xml()).await.unwrap().0, 409);
    let key = id.clone();
    let (row, incoming) = dms1
        .store()
        .call(move |c| {
            let row = dmdeleg::store::delegations::load(c, &key)?;
            let messages = dmdeleg::store::delegations::messages(c, &key)?;
            Ok((row, messages.iter().filter(|m| !m.outgoing).count()))
        })
        .await
        .unwrap();
    let row = row.unwrap();
    assert_eq!((row.state.as_str(), row.live), ("Aborted", false));
    assert_eq!(incoming, 1, "the NOTIF was processed once");
    assert!(dms1.summary(&id).is_none_or(|s| s.state == State::Aborted));
    dms1.stop().await;
}
