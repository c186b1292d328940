//! Two delegation cores and a device tree, driven in memory on a virtual clock (sans-IO): the
//! four flows (DMAcc or bootstrap approach, initiated by either server), Full and Partial, and
//! failures at each step, each test asserting the device's whole tree afterwards.

use dmdeleg::delegation::machine::{
    Action, Deadlines, Delegation, DeviceResult, Input, OperatorAction, Role, Start, State, Wait,
};
use dmdeleg::delegation::messages::{Body, DeviceInfo, Message};
use dmdeleg::delegation::plan::account_name;
use dmdeleg::delegation::reason::ReasonCode;
use dmdeleg::dm::acl::{Acl, AclCmd};
use dmdeleg::dm::mo::{BootConfigEntry, DmAcc};
use dmdeleg::dm::ops::{NodeData, ResultItem};
use dmdeleg::dm::tree::{DmTree, Principal};
use dmdeleg::dm::tree_tnds::TndsMode;
use dmdeleg::dm::uri::{NodeUri, Target};
use dmdeleg::sim::device::{SimAccount, SimDevice};
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::auth::AuthScheme;
use dmdeleg::syncml::session::{CommandOutcome, DeviceCommand};

const DMS1: &str = "dms1.example";
const DMS2: &str = "dms2.example";
const ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn uri(s: &str) -> NodeUri {
    NodeUri::parse(s).unwrap()
}

fn device() -> DmTree {
    SimDevice::new(
        "IMEI:350000000000001",
        &SimAccount {
            server_id: DMS1.into(),
            server_url: "http://127.0.0.1:1/dm".into(),
            scheme: AuthScheme::Md5,
            client: ("dev".into(), "c1".into()),
            server: (DMS1.into(), "s1".into()),
        },
    )
    .unwrap()
    .tree
}

fn dms2_account() -> DmAcc {
    DmAcc::new_digest(
        &account_name(DMS2),
        DMS2,
        "http://127.0.0.1:2/dm",
        ("dev", "c2"),
        (DMS2, "s2"),
    )
}

/// Runs device commands as `who`, the way the device would; `fail_on` makes commands on a
/// path fail with 500 (an injected fault); `offline` answers nothing; `cramped_op` is the
/// operation (counting from 1) it cannot take, its MaxMsgSize leaving no room for it.
struct Device {
    tree: DmTree,
    fail_on: Option<NodeUri>,
    offline: bool,
    cramped_op: Option<u32>,
    ops: u32,
}

impl Device {
    fn run(&mut self, who: &str, cmds: &[DeviceCommand]) -> Vec<CommandOutcome> {
        let p = Principal::Server(who);
        cmds.iter()
            .map(|c| {
                if let DeviceCommand::Atomic(children) = c {
                    // All or nothing, as the device's Atomic is.
                    let saved = self.tree.clone();
                    let outs = self.run(who, children);
                    if outs.iter().all(|o| o.status.is_success()) {
                        return CommandOutcome {
                            status: StatusCode::OK,
                            results: Vec::new(),
                            children: outs.iter().map(|o| o.status).collect(),
                        };
                    }
                    self.tree = saved;
                    return CommandOutcome {
                        status: StatusCode::ATOMIC_FAILED,
                        results: Vec::new(),
                        children: outs.iter().map(|o| o.status).collect(),
                    };
                }
                let target_uri = match c {
                    DeviceCommand::Replace { target, .. } | DeviceCommand::Get { target } => {
                        Some(target.uri.clone())
                    }
                    DeviceCommand::AddTnds { target, .. } | DeviceCommand::Delete { target } => {
                        Some(target.clone())
                    }
                    _ => None,
                };
                if let (Some(f), Some(t)) = (&self.fail_on, &target_uri)
                    && f.contains(t)
                {
                    return outcome(StatusCode::COMMAND_FAILED, Vec::new());
                }
                let r: Result<Vec<ResultItem>, _> = match c {
                    DeviceCommand::AddTnds { target, doc } => self
                        .tree
                        .apply_tnds(p, target, doc, TndsMode::Add, None)
                        .map(|_| Vec::new()),
                    DeviceCommand::Replace {
                        target,
                        format,
                        ty,
                        value,
                    } => self
                        .tree
                        .replace(
                            p,
                            target,
                            &NodeData {
                                format: Some(*format),
                                ty: ty.clone(),
                                value: value.clone(),
                            },
                            None,
                        )
                        .map(|_| Vec::new()),
                    DeviceCommand::Delete { target } => self
                        .tree
                        .delete(p, &Target::from(target.clone()))
                        .map(|_| Vec::new()),
                    DeviceCommand::Get { target } => self.tree.get(p, target),
                    other => panic!("unexpected command {other:?}"),
                };
                match r {
                    Ok(results) => outcome(StatusCode::OK, results),
                    Err(e) => outcome(e.status(), Vec::new()),
                }
            })
            .collect()
    }
}

fn outcome(status: StatusCode, results: Vec<ResultItem>) -> CommandOutcome {
    CommandOutcome {
        status,
        results,
        children: Vec::new(),
    }
}

struct Lab {
    dms1: Delegation,
    dms2: Option<Delegation>,
    dev: Device,
    now: i64,
    /// Drop messages from this server (the peer unreachable).
    drop_from: Option<&'static str>,
    /// The device takes its bootstrap when it sees the config entry.
    device_bootstraps: bool,
    /// A NOTIF waits for an operator on the receiving side; otherwise it is accepted.
    auto_accept: bool,
    /// Hold back DELEGATION_PREPARED (the delegated server is slow to act).
    hold_prepared: bool,
}

fn start(role: Role, full: bool, bootstrap: bool, paths: &[&str]) -> Start {
    let (me, peer) = match role {
        Role::Delegating => (DMS1, DMS2),
        Role::Delegated => (DMS2, DMS1),
    };
    Start {
        id: ID.into(),
        role,
        me: me.into(),
        peer: peer.into(),
        device: DeviceInfo {
            dev_id: "IMEI:350000000000001".into(),
            man: "dmdeleg".into(),
            model: "SimPhone".into(),
            notify: None,
        },
        full,
        bootstrap,
        paths: paths.iter().map(|p| uri(p)).collect(),
        lease: None,
        deadlines: Deadlines::default(),
    }
}

impl Lab {
    /// DMS-1 or DMS-2 initiates.
    fn new(initiator: Role, full: bool, bootstrap: bool, paths: &[&str]) -> Lab {
        let acc = dms2_account().to_tnds_node(None);
        let s = start(initiator, full, bootstrap, paths);
        // The initiator's machine; the other side's is made from the NOTIF in drive().
        let first = Delegation::initiate(&s, (initiator == Role::Delegated).then_some(acc), 0);
        Lab {
            dms1: first,
            dms2: None,
            dev: Device {
                tree: device(),
                fail_on: None,
                offline: false,
                cramped_op: None,
                ops: 0,
            },
            now: 0,
            drop_from: None,
            device_bootstraps: true,
            auto_accept: true,
            hold_prepared: false,
        }
    }

    /// The initiator's machine (in `dms1`) and the other side's, once it exists.
    fn sides(&mut self) -> (&mut Delegation, Option<&mut Delegation>) {
        (&mut self.dms1, self.dms2.as_mut())
    }

    fn drive(&mut self) {
        for _ in 0..200 {
            let mut progressed = false;
            // Collect from both machines.
            let mut from: Vec<(Role, Action)> = Vec::new();
            {
                let (a, b) = self.sides();
                while let Some(x) = a.poll_action() {
                    from.push((a.role, x));
                }
                if let Some(b) = b {
                    while let Some(x) = b.poll_action() {
                        from.push((b.role, x));
                    }
                }
            }
            for (role, action) in from {
                progressed = true;
                self.perform(role, action);
            }
            if !progressed {
                break;
            }
        }
    }

    fn machine(&mut self, role: Role) -> Option<&mut Delegation> {
        if self.dms1.role == role {
            Some(&mut self.dms1)
        } else {
            self.dms2.as_mut().filter(|d| d.role == role)
        }
    }

    fn perform(&mut self, role: Role, action: Action) {
        let now = self.now;
        match action {
            Action::SendPeer(msg) => {
                let sender = if role == Role::Delegating { DMS1 } else { DMS2 };
                if self.drop_from == Some(sender)
                    || (self.hold_prepared && matches!(msg.body, Body::Prepared))
                {
                    return;
                }
                // Every message goes over the wire format.
                let wire = Message::from_xml(&msg.to_xml()).expect("our messages parse");
                let peer_role = match role {
                    Role::Delegating => Role::Delegated,
                    Role::Delegated => Role::Delegating,
                };
                if self.machine(peer_role).is_none() {
                    let (me, account) = match peer_role {
                        Role::Delegating => (DMS1, None),
                        Role::Delegated => (DMS2, Some(dms2_account().to_tnds_node(None))),
                    };
                    let mut d = Delegation::incoming(
                        &wire,
                        me,
                        peer_role,
                        account,
                        Deadlines::default(),
                        now,
                    )
                    .expect("the NOTIF starts a delegation");
                    if self.auto_accept {
                        d.handle(now, Input::Operator(OperatorAction::Accept))
                            .unwrap();
                    }
                    self.dms2 = Some(d);
                    return;
                }
                if let Some(m) = self.machine(peer_role) {
                    // Refusals (a message not valid now) are the receiver's answer.
                    let _ = m.handle(now, Input::Peer(wire));
                }
            }
            Action::Device { op, commands } => {
                if self.dev.offline {
                    return;
                }
                self.dev.ops += 1;
                if self.dev.cramped_op == Some(self.dev.ops) {
                    if let Some(m) = self.machine(role) {
                        let why =
                            "the device's MaxMsgSize of 1000 bytes leaves no room for a command";
                        m.handle(
                            now,
                            Input::Device {
                                op,
                                result: DeviceResult::Unusable(why.into()),
                            },
                        )
                        .unwrap();
                    }
                    return;
                }
                let who = if role == Role::Delegating { DMS1 } else { DMS2 };
                let outcomes = self.dev.run(who, &commands);
                let bootstrap_seen = role == Role::Delegating
                    && BootConfigEntry::all(&self.dev.tree, &BootConfigEntry::default_root())
                        .iter()
                        .any(|e| e.is_ok());
                if let Some(m) = self.machine(role) {
                    m.handle(
                        now,
                        Input::Device {
                            op,
                            result: DeviceResult::Done(outcomes),
                        },
                    )
                    .unwrap();
                }
                if bootstrap_seen && self.device_bootstraps {
                    self.device_bootstrap();
                }
            }
            Action::MakeBootstrapUrl => {
                if let Some(m) = self.machine(role) {
                    m.handle(
                        now,
                        Input::BootstrapUrl("https://127.0.0.1:9443/bootstrap/tok".into()),
                    )
                    .unwrap();
                }
            }
            Action::EnrolDevice | Action::Purge => {}
        }
    }

    /// The device follows its bootstrap config: installs DMS-2's account (with the ACL the
    /// bootstrap gives: DMS-2 manages it, DMS-1 may delete it) and calls DMS-2.
    fn device_bootstrap(&mut self) {
        if DmAcc::find_by_server_id(&self.dev.tree, DMS2).is_some() {
            return;
        }
        let Some(entry) = BootConfigEntry::all(&self.dev.tree, &BootConfigEntry::default_root())
            .into_iter()
            .flatten()
            .next()
        else {
            return;
        };
        assert!(
            entry
                .server_url
                .starts_with("https://127.0.0.1:9443/bootstrap/")
        );
        // The same ACL the DMAcc approach gives the account (docs/PROTOCOL.md section 7).
        let acl = Acl::parse(&format!(
            "Delete={DMS1}+{DMS2}&Get={DMS1}+{DMS2}&Replace={DMS2}"
        ))
        .unwrap();
        dms2_account()
            .install(&mut self.dev.tree, Some(acl))
            .unwrap();
        let now = self.now;
        if let Some(m) = self.machine(Role::Delegated) {
            m.handle(
                now,
                Input::DeviceCalled {
                    session_id: "1A2B".into(),
                },
            )
            .unwrap();
        }
    }

    fn advance(&mut self, ms: i64) {
        self.now += ms;
        let now = self.now;
        self.dms1.handle(now, Input::Timer).unwrap();
        if let Some(d) = self.dms2.as_mut() {
            d.handle(now, Input::Timer).unwrap();
        }
        self.drive();
    }

    fn delegating(&self) -> &Delegation {
        if self.dms1.role == Role::Delegating {
            &self.dms1
        } else {
            self.dms2.as_ref().unwrap()
        }
    }

    fn delegated(&self) -> &Delegation {
        if self.dms1.role == Role::Delegated {
            &self.dms1
        } else {
            self.dms2.as_ref().unwrap()
        }
    }
}

fn assert_partial_outcome(tree: &DmTree, path: &str) {
    let inside = uri(&format!("{path}/Probe"));
    let mut t = tree.clone();
    // DMS-2 can add and replace inside the delegated subtree...
    t.add(
        Principal::Server(DMS2),
        &Target::from(inside.clone()),
        &NodeData::text("x"),
        None,
    )
    .expect("DMS-2 may Add inside");
    t.replace(
        Principal::Server(DMS2),
        &Target::from(inside),
        &NodeData::text("y"),
        None,
    )
    .expect("DMS-2 may Replace inside");
    // ...gets 425 outside it...
    let outside = Target::parse("./Vendor/Operator/Connectivity/APN/Name").unwrap();
    let err = t
        .replace(
            Principal::Server(DMS2),
            &outside,
            &NodeData::text("z"),
            None,
        )
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::PERMISSION_DENIED);
    // ...and DMS-1 still manages the rest.
    t.replace(
        Principal::Server(DMS1),
        &outside,
        &NodeData::text("w"),
        None,
    )
    .expect("DMS-1 keeps the rest");
    let acc = DmAcc::find_by_server_id(tree, DMS2).expect("DMS-2's account");
    assert!(!acc.dormant, "the account was activated");
    assert!(DmAcc::find_by_server_id(tree, DMS1).is_some());
}

fn assert_full_outcome(before: &DmTree, tree: &DmTree) {
    assert!(
        DmAcc::find_by_server_id(tree, DMS1).is_none(),
        "DMS-1's account is gone"
    );
    for id in tree.subtree(tree.root()) {
        let acl = &tree.props(id).acl;
        assert!(
            !acl.servers().contains(&DMS1),
            "DMS-1 still in the ACL of {}: {acl}",
            tree.uri_of(id)
        );
    }
    for id in before.subtree(before.root()) {
        let u = before.uri_of(id);
        if u.segments().first().is_some_and(|s| s == "DMAcc") {
            continue;
        }
        for cmd in AclCmd::ALL {
            if before.has_right(&u, DMS1, cmd) {
                assert!(tree.has_right(&u, DMS2, cmd), "{u}: DMS-2 lacks {cmd}");
            }
        }
    }
}

#[test]
fn the_four_flows_full_and_partial() {
    for initiator in [Role::Delegating, Role::Delegated] {
        for bootstrap in [false, true] {
            for full in [false, true] {
                let label = format!("initiator {initiator:?}, bootstrap {bootstrap}, full {full}");
                let paths: &[&str] = if full { &[] } else { &["./Vendor/Enterprise"] };
                let mut lab = Lab::new(initiator, full, bootstrap, paths);
                let before = lab.dev.tree.clone();
                lab.drive();
                assert_eq!(
                    lab.delegating().state,
                    State::Completed,
                    "{label}: {:?}",
                    lab.delegating().events
                );
                assert_eq!(
                    lab.delegated().state,
                    State::Completed,
                    "{label}: {:?}",
                    lab.delegated().events
                );
                if full {
                    assert_full_outcome(&before, &lab.dev.tree);
                } else {
                    assert_partial_outcome(&lab.dev.tree, "./Vendor/Enterprise");
                }
                // Nothing secret is kept once done.
                assert!(lab.delegating().account_xml.is_none(), "{label}");
                assert!(lab.delegated().account_xml.is_none(), "{label}");
                if bootstrap {
                    assert!(
                        lab.delegating()
                            .events
                            .iter()
                            .any(|e| e.text.contains("bootstrap")),
                        "{label}"
                    );
                }
            }
        }
    }
}

/// Runs a flow with a fault and checks both sides end as expected and the device is back.
fn rolled_back(lab: &mut Lab, before: &DmTree, code: ReasonCode) {
    let expect = if code == ReasonCode::CANCELLED {
        State::Aborted
    } else {
        State::Failed
    };
    assert_eq!(
        lab.delegating().state,
        expect,
        "{:?}",
        lab.delegating().events
    );
    assert_eq!(
        lab.delegating().reason.as_ref().map(|r| r.0),
        Some(code.0),
        "{:?}",
        lab.delegating().events
    );
    if let Some(d2) = lab
        .dms2
        .as_ref()
        .filter(|d| d.role == Role::Delegated)
        .or((lab.dms1.role == Role::Delegated).then_some(&lab.dms1))
    {
        assert!(
            d2.state.is_terminal() && d2.state != State::Completed,
            "{:?}",
            d2.events
        );
    }
    assert!(
        lab.dev.tree.same_as(before),
        "{:?}",
        lab.dev.tree.diff(before)
    );
}

#[test]
fn a_nack_ends_both_sides_and_changes_nothing() {
    let mut lab = Lab::new(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    lab.auto_accept = false;
    let before = lab.dev.tree.clone();
    lab.drive();
    let d2 = lab.dms2.as_mut().unwrap();
    assert_eq!(d2.state, State::AwaitingOperator);
    d2.handle(
        0,
        Input::Operator(OperatorAction::Decline("not this week".into())),
    )
    .unwrap();
    lab.drive();
    rolled_back(&mut lab, &before, ReasonCode::CANCELLED);
}

#[test]
fn the_device_answering_500_to_the_acl_change_rolls_back() {
    let mut lab = Lab::new(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    lab.dev.fail_on = Some(uri("./Vendor/Enterprise"));
    let before = lab.dev.tree.clone();
    lab.drive();
    rolled_back(&mut lab, &before, ReasonCode::CLIENT_REJECTED);
}

#[test]
fn a_device_without_room_for_the_changes_fails_as_rejected_and_rolls_back() {
    let mut lab = Lab::new(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    // The tree listing goes through; the changes do not fit.
    lab.dev.cramped_op = Some(2);
    let before = lab.dev.tree.clone();
    lab.drive();
    rolled_back(&mut lab, &before, ReasonCode::CLIENT_REJECTED);
    let reason = &lab.delegating().reason.as_ref().unwrap().1;
    assert!(reason.contains("MaxMsgSize of 1000 bytes"), "{reason}");
}

#[test]
fn the_peer_unreachable_times_out() {
    let mut lab = Lab::new(Role::Delegating, true, false, &[]);
    lab.drop_from = Some(DMS2);
    let before = lab.dev.tree.clone();
    lab.drive();
    lab.advance(Deadlines::default().peer_ms + 1);
    assert_eq!(lab.delegating().state, State::Failed);
    assert_eq!(
        lab.delegating().reason.as_ref().unwrap().0,
        ReasonCode::TIMEOUT.0
    );
    assert!(lab.dev.tree.same_as(&before));
}

#[test]
fn the_device_offline_past_the_deadline_fails_as_unreachable() {
    let mut lab = Lab::new(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    let before = lab.dev.tree.clone();
    lab.dev.offline = true;
    lab.drive();
    assert_eq!(lab.delegating().wait, Wait::Snapshot);
    lab.advance(Deadlines::default().device_ms + 1);
    // Nothing was changed, so there is nothing to undo.
    rolled_back(&mut lab, &before, ReasonCode::CLIENT_UNREACHABLE);
}

#[test]
fn the_step7_timeout_of_the_bootstrap_approach_rolls_back() {
    let mut lab = Lab::new(Role::Delegating, false, true, &["./Vendor/Enterprise"]);
    lab.device_bootstraps = false;
    let before = lab.dev.tree.clone();
    lab.drive();
    assert_eq!(lab.delegating().wait, Wait::Confirm);
    lab.advance(Deadlines::default().bootstrap_ms + 1);
    rolled_back(&mut lab, &before, ReasonCode::TIMEOUT);
}

#[test]
fn delegation_failure_from_the_delegated_side_rolls_back() {
    let mut lab = Lab::new(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    let before = lab.dev.tree.clone();
    // Stop DMS-2 before it activates: make the device refuse its activation.
    lab.dev.fail_on = Some(uri(&format!("./DMAcc/{}/Ext", account_name(DMS2))));
    lab.drive();
    rolled_back(&mut lab, &before, ReasonCode::CLIENT_REJECTED);
}

#[test]
fn an_operator_abort_midway_rolls_back() {
    let mut lab = Lab::new(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    let before = lab.dev.tree.clone();
    // The device is prepared (account installed, rights granted) when the operator aborts.
    lab.hold_prepared = true;
    lab.drive();
    assert_eq!(lab.delegating().wait, Wait::Confirm);
    assert!(DmAcc::find_by_server_id(&lab.dev.tree, DMS2).is_some());
    lab.dms1
        .handle(0, Input::Operator(OperatorAction::Abort))
        .unwrap();
    lab.drive();
    rolled_back(&mut lab, &before, ReasonCode::CANCELLED);
    assert_eq!(lab.delegated().state, State::Aborted);
}

#[test]
fn an_undo_the_device_cannot_take_now_is_retried_until_it_does() {
    let mut lab = Lab::new(Role::Delegating, true, false, &[]);
    let before = lab.dev.tree.clone();
    lab.hold_prepared = true;
    lab.drive();
    assert_eq!(lab.delegating().wait, Wait::Confirm);
    // The device goes away; the confirm never comes; the delegation fails and must undo.
    lab.dev.offline = true;
    lab.advance(Deadlines::default().device_ms + Deadlines::default().peer_ms + 1);
    assert_eq!(lab.delegating().state, State::RollingBack);
    lab.advance(Deadlines::default().device_ms + 1);
    assert_eq!(lab.delegating().state, State::RollingBack, "still pending");
    // It comes back: the next retry takes.
    lab.dev.offline = false;
    lab.advance(Deadlines::default().device_ms + 1);
    rolled_back(&mut lab, &before, ReasonCode::TIMEOUT);
}

#[test]
fn a_message_not_valid_in_the_state_is_refused_with_409() {
    let mut d = Delegation::initiate(
        &start(Role::Delegating, false, false, &["./Vendor"]),
        None,
        0,
    );
    while d.poll_action().is_some() {}
    let bogus = Message {
        id: dmdeleg::delegation::messages::DelegationId::parse(ID).unwrap(),
        seq: 1,
        server_id: DMS2.into(),
        del_type: dmdeleg::delegation::messages::DelType::Partial,
        approach: dmdeleg::delegation::messages::Approach::DmAcc,
        lease: None,
        body: Body::Prepared,
    };
    let err = d.handle(1, Input::Peer(bogus.clone())).unwrap_err();
    assert_eq!(err.http_status(), 409);
    let mut other = bogus;
    other.server_id = "dms3.example".into();
    assert_eq!(
        d.handle(1, Input::Peer(other)).unwrap_err().http_status(),
        400
    );
}

#[test]
fn a_leased_delegation_reverts_by_itself() {
    let mut lab = Lab::new(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    let mut s = start(Role::Delegating, false, false, &["./Vendor/Enterprise"]);
    s.lease = Some(3600);
    lab.dms1 = Delegation::initiate(&s, None, 0);
    let before = lab.dev.tree.clone();
    lab.drive();
    assert_eq!(lab.delegating().state, State::Completed);
    assert!(DmAcc::find_by_server_id(&lab.dev.tree, DMS2).is_some());
    lab.advance(3_600_001);
    assert_eq!(lab.delegating().state, State::Completed);
    assert!(
        lab.dev.tree.same_as(&before),
        "{:?}",
        lab.dev.tree.diff(&before)
    );
}

#[test]
fn the_state_survives_serialisation_at_every_step() {
    let mut lab = Lab::new(Role::Delegating, true, false, &[]);
    lab.drive();
    let json = serde_json::to_string(lab.delegating()).unwrap();
    let back: Delegation = serde_json::from_str(&json).unwrap();
    assert_eq!(back.state, State::Completed);
    assert_eq!(back.events.len(), lab.delegating().events.len());
}

/// The account a machine keeps reads the same once the machine is restored from the store
/// (where only its XML is kept), and a changed `account_xml` is what is read, never the node
/// kept beside the earlier XML.
#[test]
fn the_account_reads_the_same_after_a_restore_and_follows_its_xml() {
    let acc = dms2_account().to_tnds_node(None);
    let s = start(Role::Delegated, true, false, &[]);
    let mut d = Delegation::initiate(&s, Some(acc.clone()), 0);
    assert_eq!(d.account().as_deref(), Some(&acc));
    let back: Delegation = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(back.account().as_deref(), Some(&acc));

    let other = DmAcc::new_digest(
        "other",
        "dms3.example",
        "http://127.0.0.1:3/dm",
        ("dev", "c3"),
        ("dms3.example", "s3"),
    )
    .to_tnds_node(None);
    let other_xml = serde_json::to_value(Delegation::initiate(&s, Some(other.clone()), 0)).unwrap()
        ["account_xml"]
        .as_str()
        .unwrap()
        .to_owned();
    d.account_xml = Some(other_xml);
    assert_eq!(d.account().as_deref(), Some(&other));
    d.account_xml = None;
    assert_eq!(d.account(), None);
}
