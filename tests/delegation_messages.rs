//! The delegation messages: TNDS round trips, the refusal rules (each a 3001 naming its leaf),
//! and the worked examples of docs/PROTOCOL.md, which must parse and match their headings.

use dmdeleg::delegation::messages::{
    Approach, Body, DelType, DelegationId, DeviceInfo, MEDIA_TYPE, Message, MessageError, MsgType,
    Sender,
};
use dmdeleg::delegation::reason::ReasonCode;
use dmdeleg::dm::mo::DmAcc;
use dmdeleg::dm::props::{Format, NodeType};
use dmdeleg::dm::tnds::{RtProperties, TndsDocument, TndsNode};
use dmdeleg::dm::uri::NodeUri;
use proptest::prelude::*;

const DMS1: &str = "dms1.example";
const DMS2: &str = "dms2.example";
const DEV: &str = "IMEI:350000000000001";

fn id() -> DelegationId {
    DelegationId::parse("6f1c2a9e-0b4d-4e8a-9c3b-2d5e7f801234").unwrap()
}

fn uri(s: &str) -> NodeUri {
    NodeUri::parse(s).unwrap()
}

fn device() -> DeviceInfo {
    DeviceInfo {
        dev_id: DEV.to_owned(),
        man: "dmdeleg".to_owned(),
        model: "SimPhone".to_owned(),
        notify: Some(format!("http://127.0.0.1:7001/push/{DEV}")),
    }
}

fn dms2_account() -> DmAcc {
    DmAcc::new_digest(
        "DMS2",
        DMS2,
        "https://127.0.0.1:8443/dm",
        (DEV, "example-client-secret"),
        (DMS2, "example-server-secret"),
    )
}

fn leaf(name: &str, value: &str) -> TndsNode {
    TndsNode {
        name: name.to_owned(),
        rt: Some(RtProperties {
            format: Some(Format::Chr),
            ty: Some(NodeType::Mime("text/plain".to_owned())),
            ..RtProperties::default()
        }),
        value: Some(value.to_owned()),
        ..TndsNode::default()
    }
}

fn node(name: &str, children: Vec<TndsNode>) -> TndsNode {
    TndsNode {
        name: name.to_owned(),
        rt: Some(RtProperties {
            format: Some(Format::Node),
            ty: Some(NodeType::DdfName(String::new())),
            ..RtProperties::default()
        }),
        children,
        ..TndsNode::default()
    }
}

fn conn_mo() -> TndsNode {
    node(
        "Lab",
        vec![
            leaf("ID", "lab-internet"),
            leaf("Name", "Lab loopback"),
            node(
                "NAP",
                vec![leaf("Addr", "127.0.0.1"), leaf("AddrType", "IPv4")],
            ),
        ],
    )
}

fn msg(seq: u32, server_id: &str, del_type: DelType, approach: Approach, body: Body) -> Message {
    Message {
        id: id(),
        seq,
        server_id: server_id.to_owned(),
        del_type,
        approach,
        lease: None,
        body,
    }
}

/// The worked examples of docs/PROTOCOL.md section 4, by message type.
fn examples() -> Vec<Message> {
    use Approach::*;
    use DelType::*;
    vec![
        msg(
            1,
            DMS1,
            Partial,
            DmAcc,
            Body::Notif {
                sender: Sender::Delegating,
                device: device(),
                paths: vec![uri("./Vendor/Enterprise")],
            },
        ),
        msg(
            1,
            DMS2,
            Partial,
            DmAcc,
            Body::Resp {
                ack: true,
                reason: None,
            },
        ),
        msg(
            2,
            DMS2,
            Partial,
            DmAcc,
            Body::Start {
                dmacc: dms2_account().to_tnds_node(None),
                conn: None,
            },
        ),
        msg(2, DMS1, Partial, DmAcc, Body::Prepared),
        msg(
            2,
            DMS1,
            Full,
            BootstrapUrl,
            Body::Failure {
                code: ReasonCode::CLIENT_REJECTED,
                description: "the device answered 500 to Replace ./Vendor/Enterprise?prop=ACL"
                    .to_owned(),
            },
        ),
        msg(
            3,
            DMS2,
            Partial,
            DmAcc,
            Body::Confirm {
                session_id: "3F2".to_owned(),
            },
        ),
        msg(2, DMS1, Full, BootstrapUrl, Body::BootstrapUrlReq),
        msg(
            2,
            DMS2,
            Full,
            BootstrapUrl,
            Body::BootstrapUrlDelivery {
                url: "https://127.0.0.1:9443/bootstrap/5f0c9a1e7d3b42c8a6e0f4b2d8c1e3a5".to_owned(),
            },
        ),
        Message {
            lease: Some(86_400),
            ..msg(
                1,
                DMS2,
                Full,
                BootstrapUrl,
                Body::Notif {
                    sender: Sender::Delegating,
                    device: DeviceInfo {
                        notify: None,
                        ..device()
                    },
                    paths: vec![NodeUri::root()],
                },
            )
        },
    ]
}

/// Prints the examples for docs/PROTOCOL.md: `cargo test --test delegation_messages -- --ignored`.
#[test]
#[ignore = "prints the worked examples for docs/PROTOCOL.md"]
fn print_examples() {
    for m in examples() {
        println!(
            "### {}\n\n```xml\n{}```\n",
            m.msg_type().as_str(),
            m.to_xml_pretty()
        );
    }
}

fn roundtrip(m: &Message) {
    m.validate().unwrap();
    let compact = m.to_xml();
    assert_eq!(&Message::from_xml(&compact).unwrap(), m);
    let pretty = m.to_xml_pretty();
    assert_eq!(&Message::from_xml(pretty.as_bytes()).unwrap(), m);
    assert_eq!(&Message::from_tnds(&m.to_tnds()).unwrap(), m);
}

#[test]
fn every_message_type_round_trips() {
    let all = examples();
    for t in MsgType::ALL {
        assert!(all.iter().any(|m| m.msg_type() == *t), "no example of {t}");
    }
    for m in &all {
        roundtrip(m);
    }
    // START with a ConnMO subtree, RESP with a reason.
    roundtrip(&msg(
        2,
        DMS2,
        DelType::Full,
        Approach::DmAcc,
        Body::Start {
            dmacc: dms2_account().to_tnds_node(None),
            conn: Some(conn_mo()),
        },
    ));
    roundtrip(&msg(
        1,
        DMS2,
        DelType::Full,
        Approach::DmAcc,
        Body::Resp {
            ack: false,
            reason: Some("  declined by policy\n".to_owned()),
        },
    ));
    assert_eq!(MEDIA_TYPE, "application/vnd.dm.delegation+xml");
}

#[test]
fn start_account_reads_back() {
    let m = &examples()[2];
    let acc = m.account().unwrap().unwrap();
    assert_eq!(acc.server_id, DMS2);
    assert_eq!(acc.server_uri(), Some("https://127.0.0.1:8443/dm"));
    assert_eq!(
        acc.client_cred()
            .and_then(|c| c.secret.as_ref())
            .map(|s| s.expose()),
        Some("example-client-secret")
    );
    assert!(examples()[0].account().is_none());
    assert!(!format!("{m:?}").contains("example-client-secret"));
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

fn doc_of(m: &Message) -> TndsDocument {
    m.to_tnds()
}

fn root_mut(doc: &mut TndsDocument) -> &mut TndsNode {
    &mut doc.nodes[0]
}

fn child_mut<'a>(n: &'a mut TndsNode, name: &str) -> &'a mut TndsNode {
    n.children.iter_mut().find(|c| c.name == name).unwrap()
}

fn set(doc: &mut TndsDocument, path: &str, value: &str) {
    let mut n = root_mut(doc);
    for seg in path.split('/') {
        n = child_mut(n, seg);
    }
    n.value = Some(value.to_owned());
}

fn remove(doc: &mut TndsDocument, path: &str) {
    let segs: Vec<&str> = path.split('/').collect();
    let mut n = root_mut(doc);
    for seg in &segs[..segs.len() - 1] {
        n = child_mut(n, seg);
    }
    let last = segs[segs.len() - 1];
    n.children.retain(|c| c.name != last);
}

/// Asserts a refusal: reason 3001, the error names `leaf`, and so does its message.
fn refused(doc: &TndsDocument, leaf: &str) -> MessageError {
    let err = Message::from_tnds(doc).expect_err("must be refused");
    assert_eq!(err.reason_code(), ReasonCode::BAD_MESSAGE);
    assert_eq!(err.leaf(), Some(leaf), "{err}");
    assert!(err.to_string().contains(leaf), "{err}");
    // The same through XML.
    let again = Message::from_xml(doc.to_xml().as_bytes()).expect_err("must be refused");
    assert_eq!(again.leaf(), Some(leaf));
    err
}

#[test]
fn missing_required_leaves_are_refused() {
    let ex = examples();
    let cases: &[(usize, &str)] = &[
        (0, "MsgType"),
        (0, "DelegationID"),
        (0, "Seq"),
        (0, "DMServerID"),
        (0, "DelType"),
        (0, "Approach"),
        (0, "DelInfo"),
        (0, "DelInfo/DevId"),
        (0, "DelInfo/Man"),
        (0, "DelInfo/Mod"),
        (0, "DelInfo/Paths"),
        (1, "Ack"),
        (2, "DMAcc"),
        (4, "ReasonCode"),
        (4, "Description"),
        (5, "SessionID"),
        (7, "BootstrapURL"),
    ];
    for (i, path) in cases {
        let mut doc = doc_of(&ex[*i]);
        remove(&mut doc, path);
        let err = refused(&doc, path);
        assert!(matches!(err, MessageError::Missing { .. }), "{err}");
    }
    // The account's ServerID.
    let mut doc = doc_of(&ex[2]);
    remove(&mut doc, "DMAcc/DMS2/ServerID");
    refused(&doc, "DMAcc/DMS2/ServerID");
    // An empty DMAcc node.
    let mut doc = doc_of(&ex[2]);
    remove(&mut doc, "DMAcc/DMS2");
    refused(&doc, "DMAcc/<name>");
    // A Partial NOTIF without paths.
    let mut doc = doc_of(&ex[0]);
    remove(&mut doc, "DelInfo/Paths/1");
    refused(&doc, "DelInfo/Paths/1");
}

#[test]
fn bad_values_are_refused() {
    let ex = examples();
    let cases: &[(usize, &str, &str)] = &[
        (0, "MsgType", "DELEGATION_HELLO"),
        (0, "MsgType", "delegation_notif"),
        (0, "DelegationID", "not-a-uuid"),
        (0, "Seq", "0"),
        (0, "Seq", "-1"),
        (0, "Seq", "4294967296"),
        (0, "Seq", "one"),
        (0, "DMServerID", "dms 1"),
        (0, "DMServerID", ""),
        (0, "DMServerID", "a+b"),
        (0, "DelType", "full"),
        (0, "Approach", "Bootstrap"),
        (0, "DelInfo/DevId", ""),
        (0, "DelInfo/Paths/1", "./Vendor//Enterprise"),
        (0, "DelInfo/Paths/1", "."),
        (0, "DelInfo/Paths/1", "./Vendor/../DMAcc"),
        (1, "Ack", "yes"),
        (4, "ReasonCode", "0"),
        (4, "ReasonCode", "Busy"),
        (4, "ReasonCode", "65536"),
        (5, "SessionID", " "),
        (7, "BootstrapURL", "ftp://127.0.0.1/bootstrap/x"),
        (7, "BootstrapURL", "/bootstrap/relative"),
        (7, "BootstrapURL", "https://"),
        (8, "Lease", "0"),
        (8, "Lease", "soon"),
        (8, "DelInfo/Paths/1", "./Vendor"),
    ];
    for (i, path, value) in cases {
        let mut doc = doc_of(&ex[*i]);
        set(&mut doc, path, value);
        let leaf = if path.starts_with("DelInfo/Paths") && *i == 8 {
            "DelInfo/Paths"
        } else {
            path
        };
        let err = refused(&doc, leaf);
        assert!(
            matches!(err, MessageError::BadValue { .. }),
            "{path}={value}: {err}"
        );
    }
}

#[test]
fn path_rules() {
    let base = &examples()[0];
    let notif = |del_type: DelType, paths: &[&str]| Message {
        del_type,
        body: Body::Notif {
            sender: Sender::Delegating,
            device: device(),
            paths: paths.iter().map(|p| uri(p)).collect(),
        },
        ..base.clone()
    };
    let leaf_of = |m: &Message| {
        let err = Message::from_tnds(&m.to_tnds()).unwrap_err();
        assert_eq!(err.reason_code(), ReasonCode::BAD_MESSAGE);
        err.leaf().map(str::to_owned)
    };
    // Full: exactly ["."].
    assert_eq!(
        leaf_of(&notif(DelType::Full, &[])).as_deref(),
        Some("DelInfo/Paths")
    );
    assert_eq!(
        leaf_of(&notif(DelType::Full, &[".", "./Vendor"])).as_deref(),
        Some("DelInfo/Paths")
    );
    roundtrip(&notif(DelType::Full, &["."]));
    // Partial: no overlap, no root, no duplicates.
    assert_eq!(
        leaf_of(&notif(
            DelType::Partial,
            &["./Vendor", "./Vendor/Enterprise"]
        ))
        .as_deref(),
        Some("DelInfo/Paths/2")
    );
    assert_eq!(
        leaf_of(&notif(
            DelType::Partial,
            &["./Vendor/Enterprise", "./Vendor"]
        ))
        .as_deref(),
        Some("DelInfo/Paths/1")
    );
    assert_eq!(
        leaf_of(&notif(DelType::Partial, &["./A", "./B", "./A"])).as_deref(),
        Some("DelInfo/Paths/1")
    );
    roundtrip(&notif(
        DelType::Partial,
        &["./Vendor/Enterprise", "./Vendor/Enterprises", "./A"],
    ));
    // Relative and `./` forms name the same node.
    let mut doc = base.to_tnds();
    set(&mut doc, "DelInfo/Paths/1", "Vendor/Enterprise");
    assert_eq!(&Message::from_tnds(&doc).unwrap(), base);

    // Entries are ordered by number, whatever the document order; names must be 1, 2, ...
    let m = notif(DelType::Partial, &["./A", "./B"]);
    let mut doc = m.to_tnds();
    child_mut(child_mut(root_mut(&mut doc), "DelInfo"), "Paths")
        .children
        .reverse();
    assert_eq!(Message::from_tnds(&doc).unwrap(), m);
    for bad in ["01", "0", "x", "-1"] {
        let mut doc = m.to_tnds();
        child_mut(child_mut(root_mut(&mut doc), "DelInfo"), "Paths").children[0].name =
            bad.to_owned();
        refused(&doc, &format!("DelInfo/Paths/{bad}"));
    }
    let mut doc = m.to_tnds();
    child_mut(child_mut(root_mut(&mut doc), "DelInfo"), "Paths").children[1].name = "1".to_owned();
    let err = refused(&doc, "DelInfo/Paths/1");
    assert!(matches!(err, MessageError::Duplicate { .. }));
}

#[test]
fn start_account_must_be_the_senders() {
    let start = &examples()[2];
    let mut doc = start.to_tnds();
    set(&mut doc, "DMAcc/DMS2/ServerID", DMS1);
    let err = refused(&doc, "DMAcc/DMS2/ServerID");
    assert!(err.to_string().contains("dms2.example"), "{err}");

    // A START whose DMServerID is another server than the account's.
    let other = Message {
        server_id: DMS1.to_owned(),
        ..start.clone()
    };
    refused(&other.to_tnds(), "DMAcc/DMS2/ServerID");

    // Two accounts, a value instead of a subtree, an account that is not DMAcc 1.2.
    let mut doc = start.to_tnds();
    let acc = child_mut(root_mut(&mut doc), "DMAcc").children[0].clone();
    let mut second = acc.clone();
    second.name = "DMS3".to_owned();
    child_mut(root_mut(&mut doc), "DMAcc").children.push(second);
    refused(&doc, "DMAcc");

    let mut doc = start.to_tnds();
    child_mut(root_mut(&mut doc), "DMAcc").children[0] = leaf("DMS2", "x");
    refused(&doc, "DMAcc/DMS2");

    let mut doc = start.to_tnds();
    set(
        &mut doc,
        "DMAcc/DMS2/AppAuth/ClientSide/AAuthLevel",
        "SOMETIMES",
    );
    refused(&doc, "DMAcc/DMS2");

    // ConnMO must hold exactly one subtree.
    let with_conn = Message {
        body: Body::Start {
            dmacc: dms2_account().to_tnds_node(None),
            conn: Some(conn_mo()),
        },
        ..start.clone()
    };
    let mut doc = with_conn.to_tnds();
    child_mut(root_mut(&mut doc), "ConnMO")
        .children
        .push(conn_mo());
    refused(&doc, "ConnMO");
}

#[test]
fn duplicates_and_shapes_are_refused() {
    let notif = &examples()[0];
    let mut doc = notif.to_tnds();
    root_mut(&mut doc).children.push(leaf("Seq", "2"));
    let err = refused(&doc, "Seq");
    assert!(matches!(err, MessageError::Duplicate { .. }));

    let mut doc = notif.to_tnds();
    let info = child_mut(root_mut(&mut doc), "DelInfo");
    info.children.clear();
    info.value = Some("x".to_owned());
    refused(&doc, "DelInfo");

    let mut doc = notif.to_tnds();
    child_mut(root_mut(&mut doc), "Seq")
        .children
        .push(leaf("X", "1"));
    child_mut(root_mut(&mut doc), "Seq").value = None;
    refused(&doc, "Seq");
}

#[test]
fn malformed_and_foreign_documents_are_refused() {
    for bad in [
        &b""[..],
        b"not xml",
        b"<MgmtTree><VerDTD>1.2</VerDTD><Node><NodeName>Delegation</NodeName>",
        b"<SyncML><SyncHdr/></SyncML>",
    ] {
        let err = Message::from_xml(bad).unwrap_err();
        assert!(matches!(err, MessageError::Tnds(_)), "{err}");
        assert_eq!(err.reason_code(), ReasonCode::BAD_MESSAGE);
    }
    // Wrong root node, two top nodes, a value on Delegation, a foreign DDFName.
    let m = &examples()[3];
    let mut doc = m.to_tnds();
    doc.nodes[0].name = "Delegations".to_owned();
    assert!(matches!(
        Message::from_tnds(&doc),
        Err(MessageError::NotDelegation { .. })
    ));
    let mut doc = m.to_tnds();
    doc.nodes.push(doc.nodes[0].clone());
    assert!(matches!(
        Message::from_tnds(&doc),
        Err(MessageError::NotDelegation { .. })
    ));
    let mut doc = m.to_tnds();
    if let Some(rt) = doc.nodes[0].rt.as_mut() {
        rt.ty = Some(NodeType::DdfName("urn:dmdeleg:delegation:2.0".to_owned()));
    }
    assert!(matches!(
        Message::from_tnds(&doc),
        Err(MessageError::NotDelegation { .. })
    ));
    let doc = TndsDocument::default();
    assert_eq!(
        Message::from_tnds(&doc).unwrap_err().reason_code(),
        ReasonCode::BAD_MESSAGE
    );
    // Over the 1 MiB wire limit.
    let mut big = m.to_xml();
    big.extend(std::iter::repeat_n(b' ', 1 << 20));
    assert!(matches!(
        Message::from_xml(&big),
        Err(MessageError::Tnds(_))
    ));
    // Unknown MsgType.
    let mut doc = m.to_tnds();
    set(&mut doc, "MsgType", "DELEGATION_PING");
    let err = refused(&doc, "MsgType");
    assert!(err.to_string().contains("DELEGATION_PING"));
}

#[test]
fn unknown_leaves_are_ignored() {
    for m in examples() {
        let mut doc = m.to_tnds();
        let root = root_mut(&mut doc);
        root.children.insert(0, leaf("Priority", "high"));
        root.children
            .push(node("Vendor", vec![leaf("Trace", "abc")]));
        if let Some(info) = root.children.iter_mut().find(|c| c.name == "DelInfo") {
            info.children.push(leaf("IMSI", "001010000000001"));
        }
        assert_eq!(Message::from_tnds(&doc).unwrap(), m);
        assert_eq!(Message::from_xml(doc.to_xml().as_bytes()).unwrap(), m);
    }
    // Leaves of another message type are ignored too.
    let mut doc = examples()[3].to_tnds();
    root_mut(&mut doc).children.push(leaf("SessionID", "1"));
    assert_eq!(Message::from_tnds(&doc).unwrap(), examples()[3]);
}

#[test]
fn whitespace_around_keywords_and_numbers_is_tolerated() {
    let m = &examples()[4];
    let mut doc = m.to_tnds();
    set(&mut doc, "Seq", " 2\n");
    set(&mut doc, "DelType", "\n  Full\n");
    set(&mut doc, "ReasonCode", " 2002 ");
    set(
        &mut doc,
        "DelegationID",
        " 6F1C2A9E-0B4D-4E8A-9C3B-2D5E7F801234 ",
    );
    assert_eq!(&Message::from_tnds(&doc).unwrap(), m);
}

#[test]
fn unknown_reason_codes_are_kept() {
    let m = Message {
        body: Body::Failure {
            code: ReasonCode(4242),
            description: String::new(),
        },
        ..examples()[4].clone()
    };
    roundtrip(&m);
}

// ---------------------------------------------------------------------------------------------
// Property: every valid message round trips
// ---------------------------------------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    // Any printable text, including XML specials and surrounding spaces.
    "[ -~\u{e9}\u{4e2d}<>&\"']{0,24}"
}

fn server_id() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9.-]{0,20}"
}

fn seg() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_ -]{1,8}"
}

fn body(del_type: DelType, server: String) -> BoxedStrategy<Body> {
    let paths: BoxedStrategy<Vec<NodeUri>> = match del_type {
        DelType::Full => Just(vec![NodeUri::root()]).boxed(),
        DelType::Partial => prop::collection::vec(prop::collection::vec(seg(), 0..3), 1..4)
            .prop_map(|tails| {
                // A distinct first segment per path keeps them from overlapping.
                tails
                    .into_iter()
                    .enumerate()
                    .map(|(i, tail)| {
                        let mut u = NodeUri::root().join(&format!("P{i}")).unwrap();
                        for s in tail {
                            u = u.join(&s).unwrap();
                        }
                        u
                    })
                    .collect()
            })
            .boxed(),
    };
    let device = (text(), text(), text(), prop::option::of(text())).prop_filter_map(
        "DevId must not be blank",
        |(dev_id, man, model, notify)| {
            (!dev_id.trim().is_empty()).then_some(DeviceInfo {
                dev_id,
                man,
                model,
                notify,
            })
        },
    );
    let account = ("[A-Za-z0-9]{1,10}", text(), text(), any::<bool>()).prop_map(
        move |(name, secret, addr_tail, conn)| Body::Start {
            dmacc: DmAcc::new_digest(
                &name,
                &server,
                &format!("https://127.0.0.1:8443/{addr_tail}"),
                ("dev", &secret),
                (&server, "s"),
            )
            .to_tnds_node(None),
            conn: conn.then(conn_mo),
        },
    );
    prop_oneof![
        (device, paths).prop_map(|(device, paths)| Body::Notif {
            sender: Sender::Delegated,
            device,
            paths,
        }),
        (any::<bool>(), prop::option::of(text()))
            .prop_map(|(ack, reason)| Body::Resp { ack, reason }),
        account,
        Just(Body::Prepared),
        (1u16.., text()).prop_map(|(c, description)| Body::Failure {
            code: ReasonCode(c),
            description
        }),
        "[0-9A-F]{1,4}".prop_map(|session_id| Body::Confirm { session_id }),
        Just(Body::BootstrapUrlReq),
        "[a-z0-9]{1,64}".prop_map(|t| Body::BootstrapUrlDelivery {
            url: format!("https://bootstrap.dms2.example:9443/bootstrap/{t}")
        }),
    ]
    .boxed()
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<[u8; 16]>(),
        1u32..,
        server_id(),
        prop_oneof![Just(DelType::Full), Just(DelType::Partial)],
        prop_oneof![Just(Approach::DmAcc), Just(Approach::BootstrapUrl)],
        prop::option::of(1u64..=i64::MAX as u64),
    )
        .prop_flat_map(|(bytes, seq, server_id, del_type, approach, lease)| {
            body(del_type, server_id.clone()).prop_map(move |body| Message {
                id: DelegationId::from_bytes(bytes),
                seq,
                server_id: server_id.clone(),
                del_type,
                approach,
                lease,
                body,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_valid_messages_round_trip(m in message()) {
        prop_assert_eq!(m.validate(), Ok(()));
        prop_assert_eq!(&Message::from_xml(&m.to_xml()).unwrap(), &m);
        prop_assert_eq!(&Message::from_xml(m.to_xml_pretty().as_bytes()).unwrap(), &m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Message::from_xml(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// docs/PROTOCOL.md
// ---------------------------------------------------------------------------------------------

/// Every ```xml block in the "Messages" section of docs/PROTOCOL.md parses, and its MsgType is
/// the one its `###` heading names; every message type has at least one example.
#[test]
fn protocol_doc_examples_parse_and_match_their_headings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md");
    let mut in_messages = false;
    let mut heading: Option<MsgType> = None;
    let mut block: Option<String> = None;
    let mut seen: Vec<MsgType> = Vec::new();
    let mut count = 0;
    for (n, line) in doc.lines().enumerate() {
        if let Some(b) = block.as_mut() {
            if line.trim_start() == "```" {
                let xml = block.take().unwrap_or_default();
                let expected = heading.unwrap_or_else(|| {
                    panic!("line {}: xml example under no message heading", n + 1)
                });
                let m = Message::from_xml(xml.as_bytes())
                    .unwrap_or_else(|e| panic!("example ending line {}: {e}", n + 1));
                assert_eq!(m.msg_type(), expected, "example ending line {}", n + 1);
                // The example is what the code writes.
                assert_eq!(
                    m.to_xml_pretty().trim_end(),
                    xml.trim_end(),
                    "line {}",
                    n + 1
                );
                seen.push(expected);
                count += 1;
            } else {
                b.push_str(line);
                b.push('\n');
            }
            continue;
        }
        if line.starts_with("## ") {
            in_messages = line.contains("Messages");
            heading = None;
            continue;
        }
        if !in_messages {
            continue;
        }
        if line.starts_with("### ") {
            heading = MsgType::ALL.iter().copied().find(|t| {
                line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == t.as_str())
            });
        } else if line.trim_start().starts_with("```xml") {
            block = Some(String::new());
        }
    }
    assert!(block.is_none(), "unclosed code block");
    for t in MsgType::ALL {
        assert!(seen.contains(t), "docs/PROTOCOL.md has no example of {t}");
    }
    assert!(count >= MsgType::ALL.len());
}
