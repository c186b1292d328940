//! Server and client DM sessions driven against each other in memory (sans-IO): the client is
//! a device with a real DM tree that enforces its ACLs; messages go through the XML codec.

use dmdeleg::dm::acl::{Acl, AclCmd};
use dmdeleg::dm::mo::{DevDetail, DevInfo, DmAcc};
use dmdeleg::dm::props::Format;
use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::tree::{DmTree, NodeProps, Principal};
use dmdeleg::dm::tree_tnds::TndsMode;
use dmdeleg::dm::uri::{NodeUri, Target, UriLimits};
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::auth::{AuthScheme, Nonce, Password};
use dmdeleg::syncml::message::{Command, SyncMl};
use dmdeleg::syncml::session::client::{ClientConfig, ClientEvent, ClientSession};
use dmdeleg::syncml::session::creds::Credentials;
use dmdeleg::syncml::session::server::{DeviceAuth, ServerConfig, ServerEvent, ServerSession};
use dmdeleg::syncml::session::{DeviceCommand, Encoding};
use dmdeleg::syncml::xml;

const DEV: &str = "IMEI:493005100592800";
const SRV: &str = "dms1.example";

fn uri(s: &str) -> NodeUri {
    NodeUri::parse(s).unwrap()
}

fn creds(scheme: AuthScheme, name: &str, secret: &str) -> Credentials {
    Credentials {
        scheme,
        name: name.to_owned(),
        secret: Password::new(secret),
    }
}

fn devinfo() -> DevInfo {
    DevInfo {
        dev_id: DEV.into(),
        man: "Device Factory, Inc.".into(),
        model: "SmartPhone2000".into(),
        dmv: "1.2".into(),
        lang: "en-US".into(),
    }
}

/// A device tree: DevInfo, DevDetail, dms1's account, and ./Vendor with an enterprise part
/// dms1 manages and an operator part it may only read.
fn device_tree() -> DmTree {
    let mut t = DmTree::new();
    devinfo().install(&mut t).unwrap();
    DevDetail {
        uri_limits: UriLimits::ANDROID,
        dev_typ: "smartphone".into(),
        oem: "Factory".into(),
        fwv: "1".into(),
        swv: "1".into(),
        hwv: "1".into(),
        lrg_obj: true,
    }
    .install(&mut t)
    .unwrap();
    let acc = DmAcc::new_digest(
        "dms1",
        SRV,
        "http://127.0.0.1:1/dm",
        ("device-user", "device-secret"),
        (SRV, "server-secret"),
    );
    acc.install(
        &mut t,
        Some(Acl::for_server(SRV, &[AclCmd::Get, AclCmd::Replace, AclCmd::Delete]).unwrap()),
    )
    .unwrap();
    t.set_acl(
        &uri("./DMAcc"),
        Acl::parse(&format!("Get={SRV}&Add={SRV}&Replace={SRV}")).unwrap(),
    )
    .unwrap();
    t.ensure_interior(
        &uri("./Vendor/Enterprise"),
        NodeProps::interior().with_acl(
            Acl::parse(&format!(
                "Get={SRV}&Add={SRV}&Replace={SRV}&Delete={SRV}&Exec={SRV}"
            ))
            .unwrap(),
        ),
    )
    .unwrap();
    t.put_leaf(
        &uri("./Vendor/Enterprise/Mail"),
        "imap.example",
        NodeProps::leaf(Format::Chr, "text/plain"),
    )
    .unwrap();
    t.ensure_interior(
        &uri("./Vendor/Operator"),
        NodeProps::interior().with_acl(Acl::parse(&format!("Get={SRV}")).unwrap()),
    )
    .unwrap();
    t.put_leaf(
        &uri("./Vendor/Operator/APN"),
        "internet",
        NodeProps::leaf(Format::Chr, "text/plain"),
    )
    .unwrap();
    t
}

struct Pair {
    tree: DmTree,
    server: ServerSession<u32>,
    client: ClientSession,
    server_events: Vec<ServerEvent<u32>>,
    client_events: Vec<ClientEvent>,
    messages: usize,
    counter: u8,
    /// Every message each side sent, decoded.
    device_sent: Vec<SyncMl>,
    server_sent: Vec<SyncMl>,
}

struct Setup {
    scheme: AuthScheme,
    client_secret_on_device: &'static str,
    cred_before_challenge: bool,
    device_max_msg: u64,
    server_max_msg: u64,
    encoding: Encoding,
    /// The server signs its first message with a nonce the device no longer holds.
    stale_server_nonce: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            scheme: AuthScheme::Md5,
            client_secret_on_device: "device-secret",
            cred_before_challenge: true,
            device_max_msg: 16_384,
            server_max_msg: 65_536,
            encoding: Encoding::Xml,
            stale_server_nonce: false,
        }
    }
}

impl Pair {
    fn new(setup: Setup) -> Pair {
        let initial = Nonce::resync();
        let mut server = ServerSession::new(
            ServerConfig {
                server_uri: "http://127.0.0.1:1/dm".into(),
                resp_uri: Some("http://127.0.0.1:1/dm/s/abc".into()),
                max_msg_size: setup.server_max_msg,
                max_obj_size: 1 << 20,
            },
            DeviceAuth {
                dev_id: DEV.into(),
                client: creds(setup.scheme, "device-user", "device-secret"),
                client_nonce: initial.clone(),
                server: creds(setup.scheme, SRV, "server-secret"),
                server_nonce: if setup.stale_server_nonce {
                    Nonce::from_bytes(b"an-old-nonce".to_vec())
                } else {
                    initial.clone()
                },
            },
        );
        server.set_encoding(setup.encoding);
        let client = ClientSession::new(
            ClientConfig {
                dev_id: DEV.into(),
                server_id: SRV.into(),
                server_uri: "http://127.0.0.1:1/dm".into(),
                client: creds(setup.scheme, "device-user", setup.client_secret_on_device),
                client_nonce: initial.clone(),
                server: creds(setup.scheme, SRV, "server-secret"),
                server_nonce: initial,
                max_msg_size: setup.device_max_msg,
                max_obj_size: 1 << 20,
                cred_before_challenge: setup.cred_before_challenge,
                fail_paths: Vec::new(),
                tnds: true,
                encoding: setup.encoding,
            },
            devinfo(),
            0x1A2B,
            true,
        );
        Pair {
            tree: device_tree(),
            server,
            client,
            server_events: Vec::new(),
            client_events: Vec::new(),
            messages: 0,
            counter: 0,
            device_sent: Vec::new(),
            server_sent: Vec::new(),
        }
    }

    fn fresh(&mut self) -> [u8; 16] {
        self.counter = self.counter.wrapping_add(1);
        [self.counter; 16]
    }

    /// Runs the session until neither side has anything to send.
    fn drive(&mut self) {
        for _ in 0..200 {
            let Some(tx) = self.client.poll_transmit() else {
                break;
            };
            self.messages += 1;
            let fresh = self.fresh();
            let reply = match self
                .server
                .handle_request(&tx.body, tx.hmac.as_deref(), fresh)
            {
                Ok(r) => r,
                Err(e) => panic!("server refused a message: {e}"),
            };
            self.device_sent.extend(xml::decode(&tx.body).ok());
            self.server_sent.extend(xml::decode(&reply.body).ok());
            let fresh = self.fresh();
            self.client
                .handle_response(
                    &mut self.tree,
                    &reply.body,
                    reply.hmac.as_deref(),
                    fresh,
                    Some(1_700_000_000),
                )
                .unwrap();
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
    }

    fn outcome(&self, tag: u32) -> (StatusCode, Vec<dmdeleg::dm::ops::ResultItem>) {
        for e in &self.server_events {
            if let ServerEvent::CommandDone { tag: t, outcome } = e
                && *t == tag
            {
                return (outcome.status, outcome.results.clone());
            }
        }
        panic!("no outcome for command {tag}: {:?}", self.server_events);
    }
}

fn dmacc_tnds() -> TndsDocument {
    TndsDocument::from_xml(include_bytes!("data/tnds-dmacc-delegated.xml")).unwrap()
}

/// The delegated server's account added under `./DMAcc` as TNDS (a large object at small
/// MaxMsgSize).
fn add_dmacc() -> DeviceCommand {
    DeviceCommand::AddTnds {
        target: uri("./DMAcc"),
        doc: dmacc_tnds(),
    }
}

#[test]
fn a_full_session_runs_every_command_and_reports_every_status() {
    let mut p = Pair::new(Setup::default());
    p.server.enqueue(
        1,
        DeviceCommand::Get {
            target: Target::parse("./Vendor?list=Struct").unwrap(),
        },
    );
    p.server.enqueue(
        2,
        DeviceCommand::Get {
            target: Target::parse("./Vendor/Enterprise?list=TNDS+ACL+Value").unwrap(),
        },
    );
    p.server.enqueue(3, add_dmacc());
    p.server.enqueue(
        4,
        DeviceCommand::replace_acl(
            &uri("./Vendor/Enterprise"),
            &Acl::parse(&format!(
                "Get={SRV}+dms2&Replace={SRV}+dms2&Add={SRV}&Delete={SRV}&Exec={SRV}"
            ))
            .unwrap(),
        ),
    );
    p.server.enqueue(
        5,
        DeviceCommand::Delete {
            target: uri("./Vendor/Enterprise/Mail"),
        },
    );
    p.server.enqueue(
        6,
        DeviceCommand::Exec {
            target: uri("./Vendor/Enterprise"),
            data: Some("wipe".into()),
            correlator: None,
        },
    );
    p.drive();
    assert!(p.server.is_done() && p.client.is_done());
    assert!(p.server_events.contains(&ServerEvent::Authenticated));
    assert!(p.client_events.contains(&ClientEvent::ServerAuthenticated));
    let (st, results) = p.outcome(1);
    assert_eq!(st, StatusCode::OK);
    let sources: Vec<&str> = results.iter().map(|r| r.source.as_str()).collect();
    assert!(sources.contains(&"./Vendor/Enterprise/Mail"), "{sources:?}");
    assert!(sources.contains(&"./Vendor/Operator/APN"), "{sources:?}");
    let (st, results) = p.outcome(2);
    assert_eq!(st, StatusCode::OK);
    let doc = TndsDocument::from_xml(&results[0].data).unwrap();
    assert_eq!(doc.nodes[0].name, "Enterprise");
    assert_eq!(p.outcome(3).0, StatusCode::OK);
    assert_eq!(p.outcome(4).0, StatusCode::OK);
    assert_eq!(p.outcome(5).0, StatusCode::OK);
    assert_eq!(p.outcome(6).0, StatusCode::OK);
    // The device really changed.
    assert_eq!(
        DmAcc::read(&p.tree, "DelegatedSrv").unwrap().server_id,
        "srv.delegated.example"
    );
    assert!(
        p.tree
            .has_right(&uri("./Vendor/Enterprise"), "dms2", AclCmd::Replace)
    );
    assert!(!p.tree.exists(&uri("./Vendor/Enterprise/Mail")));
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::Exec { data: Some(d), .. } if d == "wipe"))
    );
    // DevInfo arrived in Package 1.
    assert!(p.server_events.iter().any(
        |e| matches!(e, ServerEvent::DevInfo(l) if l.iter().any(|(u, v)| u == "./DevInfo/DevId" && v == DEV))
    ));
}

/// The DMAcc DDF gives `AAuthSecret` and `AAuthData` no Get: a device applies that to an
/// account a server added (as TNDS, or a secret written leaf by leaf), not only to one it
/// installed itself; the device itself still reads them.
#[test]
fn an_account_a_server_adds_keeps_its_secrets_from_every_get() {
    let secret = "./DMAcc/DelegatedSrv/AppAuth/ServerSide/AAuthSecret";
    let nonce = "./DMAcc/DelegatedSrv/AppAuth/ClientSide/AAuthData";
    let mut p = Pair::new(Setup::default());
    // The account's ACL lets this server read and replace it: only the DDF stands in the way.
    let xml = String::from_utf8(include_bytes!("data/tnds-dmacc-delegated.xml").to_vec())
        .unwrap()
        .replace(
            "Get=srv.delegated.example&amp;Replace=srv.delegated.example",
            &format!("Get=srv.delegated.example+{SRV}&amp;Replace=srv.delegated.example+{SRV}"),
        );
    p.server.enqueue(
        1,
        DeviceCommand::AddTnds {
            target: uri("./DMAcc"),
            doc: TndsDocument::from_xml(xml.as_bytes()).unwrap(),
        },
    );
    p.server.enqueue(
        2,
        DeviceCommand::Get {
            target: Target::parse(secret).unwrap(),
        },
    );
    p.server.enqueue(
        3,
        DeviceCommand::Get {
            target: Target::parse(nonce).unwrap(),
        },
    );
    p.server.enqueue(
        4,
        DeviceCommand::Get {
            target: Target::parse("./DMAcc?list=TNDS+Value").unwrap(),
        },
    );
    p.server.enqueue(
        5,
        DeviceCommand::Get {
            target: Target::parse("./DMAcc/DelegatedSrv?list=StructData").unwrap(),
        },
    );
    // A secret replaced leaf by leaf is no more readable than one added in a TNDS.
    p.server
        .enqueue(6, DeviceCommand::replace_text(&uri(secret), "newSecret"));
    p.server.enqueue(
        7,
        DeviceCommand::Get {
            target: Target::parse(secret).unwrap(),
        },
    );
    p.drive();
    assert!(p.server.is_done() && p.client.is_done());
    assert_eq!(p.outcome(1).0, StatusCode::OK);
    assert_eq!(p.outcome(2).0, StatusCode::COMMAND_NOT_ALLOWED);
    assert_eq!(p.outcome(3).0, StatusCode::COMMAND_NOT_ALLOWED);
    let (st, results) = p.outcome(4);
    assert_eq!(st, StatusCode::OK);
    let listing = String::from_utf8(results[0].data.clone()).unwrap();
    assert!(listing.contains("srv.delegated.example"), "{listing}");
    for hidden in ["serverSecret", "clientSecret", "AAAAAA=="] {
        assert!(!listing.contains(hidden), "{hidden} in {listing}");
    }
    let (st, results) = p.outcome(5);
    assert_eq!(st, StatusCode::OK);
    assert!(
        results
            .iter()
            .filter(|r| r.source.ends_with("/AAuthSecret") || r.source.ends_with("/AAuthData"))
            .all(|r| r.data.is_empty()),
        "{results:?}"
    );
    assert_eq!(p.outcome(6).0, StatusCode::OK);
    assert_eq!(p.outcome(7).0, StatusCode::COMMAND_NOT_ALLOWED);
    // The device still reads its account whole.
    let acc = DmAcc::read(&p.tree, "DelegatedSrv").unwrap();
    let server_side = acc
        .app_auth
        .iter()
        .find(|a| a.name == "ServerSide")
        .unwrap();
    assert_eq!(
        server_side.secret.as_ref().map(|s| s.expose().to_owned()),
        Some("newSecret".to_owned())
    );
}

#[test]
fn outside_its_acl_the_server_gets_425_and_the_tree_is_unchanged() {
    let mut p = Pair::new(Setup::default());
    let before = p.tree.clone();
    p.server.enqueue(
        1,
        DeviceCommand::replace_text(&uri("./Vendor/Operator/APN"), "evil"),
    );
    p.server.enqueue(
        2,
        DeviceCommand::Delete {
            target: uri("./Vendor/Operator"),
        },
    );
    p.server.enqueue(
        3,
        DeviceCommand::add_text(&uri("./Vendor/Operator/New"), "x"),
    );
    p.drive();
    for tag in 1..=3 {
        assert_eq!(
            p.outcome(tag).0,
            StatusCode::PERMISSION_DENIED,
            "command {tag}"
        );
    }
    assert!(p.tree.same_as(&before), "{:?}", p.tree.diff(&before));
}

#[test]
fn a_wrong_password_gets_401_and_nothing_runs() {
    let mut p = Pair::new(Setup {
        client_secret_on_device: "not-the-secret",
        ..Setup::default()
    });
    let before = p.tree.clone();
    p.server.enqueue(
        1,
        DeviceCommand::Delete {
            target: uri("./Vendor/Enterprise"),
        },
    );
    p.drive();
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::AuthFailed(c) if *c == StatusCode::UNAUTHORIZED)),
        "{:?}",
        p.server_events
    );
    assert!(p.server.is_done());
    assert!(!p.server_events.contains(&ServerEvent::Authenticated));
    assert!(p.tree.same_as(&before));
    assert!(
        p.client_events
            .iter()
            .any(|e| matches!(e, ClientEvent::ClientRejected(_)))
    );
}

#[test]
fn missing_credentials_get_a_407_challenge_then_success() {
    let mut p = Pair::new(Setup {
        cred_before_challenge: false,
        ..Setup::default()
    });
    p.server.enqueue(
        1,
        DeviceCommand::replace_text(&uri("./Vendor/Enterprise/Mail"), "new"),
    );
    p.drive();
    assert_eq!(p.outcome(1).0, StatusCode::OK);
    assert!(p.server_events.contains(&ServerEvent::Authenticated));
    assert_eq!(
        p.tree.value_str(&uri("./Vendor/Enterprise/Mail")),
        Some("new")
    );
}

#[test]
fn an_hmac_session_authenticates_every_message() {
    let mut p = Pair::new(Setup {
        scheme: AuthScheme::Hmac,
        ..Setup::default()
    });
    p.server.enqueue(
        1,
        DeviceCommand::replace_text(&uri("./Vendor/Enterprise/Mail"), "hmac"),
    );
    p.server.enqueue(
        2,
        DeviceCommand::Get {
            target: Target::parse("./Vendor/Enterprise/Mail").unwrap(),
        },
    );
    p.drive();
    assert_eq!(p.outcome(1).0, StatusCode::OK);
    let (st, results) = p.outcome(2);
    assert_eq!(st, StatusCode::OK);
    assert_eq!(results[0].data, b"hmac");
}

#[test]
fn a_tiny_max_msg_size_completes_over_several_messages_with_large_objects() {
    let mut p = Pair::new(Setup {
        device_max_msg: 1_400,
        server_max_msg: 1_400,
        ..Setup::default()
    });
    p.server.enqueue(1, add_dmacc());
    for i in 0..6 {
        p.server.enqueue(
            10 + i,
            DeviceCommand::add_text(&uri(&format!("./Vendor/Enterprise/K{i}")), "value"),
        );
    }
    p.server.enqueue(
        20,
        DeviceCommand::Get {
            target: Target::parse("./Vendor?list=TNDS").unwrap(),
        },
    );
    p.drive();
    assert!(p.messages > 4, "only {} messages", p.messages);
    assert_eq!(p.outcome(1).0, StatusCode::OK);
    for i in 0..6 {
        assert_eq!(p.outcome(10 + i).0, StatusCode::OK);
    }
    let (st, results) = p.outcome(20);
    assert_eq!(st, StatusCode::OK);
    assert_eq!(results[0].ty, "application/vnd.syncml.dmtnds+xml");
    let doc = TndsDocument::from_xml(&results[0].data).unwrap();
    assert_eq!(doc.nodes[0].name, "Vendor");
    assert!(DmAcc::read(&p.tree, "DelegatedSrv").is_ok());
}

/// The item data of the Adds to `./DMAcc` in `msg`, in order.
fn dmacc_data(msg: &SyncMl) -> String {
    let mut out = String::new();
    for cmd in &msg.body.commands {
        if let Command::Add(add) = cmd {
            for item in &add.items {
                if item.target_uri() == Some("./DMAcc") {
                    out.push_str(item.data.as_ref().map_or("", |d| d.as_text()));
                }
            }
        }
    }
    out
}

/// The device refuses the server's credentials on the message that carries the first chunk
/// of a large object; the server sends that message's commands again with fresh
/// credentials: the chunk it sent, not the whole object again.
#[test]
fn a_refused_server_cred_resends_the_chunk_it_sent_and_the_object_arrives_once() {
    let whole = {
        let mut p = Pair::new(Setup::default());
        p.server.enqueue(1, add_dmacc());
        p.drive();
        dmacc_data(&p.server_sent[0])
    };
    for max in [1_600, 2_000, 3_000] {
        let mut p = Pair::new(Setup {
            device_max_msg: max,
            server_max_msg: max,
            stale_server_nonce: true,
            ..Setup::default()
        });
        p.server.enqueue(1, add_dmacc());
        p.server.enqueue(
            2,
            DeviceCommand::add_text(&uri("./Vendor/Enterprise/K"), "v"),
        );
        p.drive();
        // The refused message carried the object's first chunk.
        let refused = dmacc_data(&p.server_sent[0]);
        assert!(
            !refused.is_empty() && refused.len() < whole.len(),
            "max {max}: the first message carried no chunk"
        );
        assert!(
            p.client_events
                .iter()
                .any(|e| matches!(e, ClientEvent::ServerRejected(_))),
            "max {max}: the device never refused the stale credentials"
        );
        // What the device took in afterwards is the object, once.
        let taken: String = p.server_sent[1..].iter().map(dmacc_data).collect();
        assert!(
            taken == whole,
            "max {max}: the device took in {} bytes of a {}-byte object",
            taken.len(),
            whole.len()
        );
        for msg in &p.device_sent {
            for cmd in &msg.body.commands {
                if let Command::Status(st) = cmd
                    && st.cmd_ref != 0
                {
                    assert!(
                        st.data.is_success(),
                        "max {max}: the device answered {st:?}"
                    );
                }
            }
        }
        assert_eq!(p.outcome(1).0, StatusCode::OK, "max {max}");
        assert_eq!(p.outcome(2).0, StatusCode::OK, "max {max}");
        let mut expected = device_tree();
        expected
            .apply_tnds(
                Principal::Device,
                &uri("./DMAcc"),
                &dmacc_tnds(),
                TndsMode::Add,
                None,
            )
            .unwrap();
        assert_eq!(
            DmAcc::read(&p.tree, "DelegatedSrv").unwrap(),
            DmAcc::read(&expected, "DelegatedSrv").unwrap(),
            "max {max}"
        );
    }
}

/// A MaxMsgSize with no room for even the smallest chunk beside the header: the server ends
/// the session, says why, and reports its commands lost, instead of sending empty messages
/// for ever.
#[test]
fn a_max_msg_size_too_small_for_any_command_ends_the_session() {
    for max in [900, 1_000, 1_200] {
        let mut p = Pair::new(Setup {
            device_max_msg: max,
            server_max_msg: max,
            ..Setup::default()
        });
        p.server.enqueue(1, add_dmacc());
        p.drive();
        assert!(p.messages <= 3, "max {max}: {} messages", p.messages);
        assert!(
            p.server_events
                .contains(&ServerEvent::NoRoom { max_msg_size: max }),
            "max {max}: {:?}",
            p.server_events
        );
        assert!(
            p.server_events
                .contains(&ServerEvent::CommandLost { tag: 1 })
        );
        assert_eq!(
            p.server_events.last(),
            Some(&ServerEvent::Ended { aborted: true })
        );
        assert!(DmAcc::read(&p.tree, "DelegatedSrv").is_err(), "max {max}");
    }
}

#[test]
fn atomic_is_all_or_nothing_and_sequence_stops_at_the_first_failure() {
    let mut p = Pair::new(Setup::default());
    let before = p.tree.clone();
    p.server.enqueue(
        1,
        DeviceCommand::Atomic(vec![
            DeviceCommand::add_text(&uri("./Vendor/Enterprise/A"), "1"),
            DeviceCommand::replace_text(&uri("./Vendor/Operator/APN"), "denied"),
        ]),
    );
    p.server.enqueue(
        2,
        DeviceCommand::Sequence(vec![
            DeviceCommand::add_text(&uri("./Vendor/Enterprise/B"), "1"),
            DeviceCommand::Delete {
                target: uri("./Vendor/Nope"),
            },
            DeviceCommand::add_text(&uri("./Vendor/Enterprise/C"), "1"),
        ]),
    );
    p.drive();
    let done: Vec<_> = p
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::CommandDone { tag, outcome } => Some((*tag, outcome.clone())),
            _ => None,
        })
        .collect();
    let atomic = &done.iter().find(|(t, _)| *t == 1).unwrap().1;
    assert_eq!(atomic.status, StatusCode::ATOMIC_FAILED);
    assert_eq!(
        atomic.children,
        vec![
            StatusCode::ATOMIC_ROLLBACK_OK,
            StatusCode::PERMISSION_DENIED
        ]
    );
    let seq = &done.iter().find(|(t, _)| *t == 2).unwrap().1;
    assert_eq!(seq.status, StatusCode::OK);
    assert_eq!(
        seq.children,
        vec![
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::NOT_EXECUTED
        ]
    );
    assert!(!p.tree.exists(&uri("./Vendor/Enterprise/A")));
    assert!(p.tree.exists(&uri("./Vendor/Enterprise/B")));
    assert!(!p.tree.exists(&uri("./Vendor/Enterprise/C")));
    assert!(!before.exists(&uri("./Vendor/Enterprise/B")));
}

#[test]
fn a_wbxml_session_with_tnds_and_large_objects() {
    let mut p = Pair::new(Setup {
        encoding: Encoding::Wbxml,
        device_max_msg: 1_400,
        server_max_msg: 1_400,
        ..Setup::default()
    });
    p.server.enqueue(1, add_dmacc());
    p.server.enqueue(
        2,
        DeviceCommand::Get {
            target: Target::parse("./Vendor?list=TNDS").unwrap(),
        },
    );
    p.drive();
    assert_eq!(p.outcome(1).0, StatusCode::OK);
    let (st, results) = p.outcome(2);
    assert_eq!(st, StatusCode::OK);
    assert!(TndsDocument::from_xml(&results[0].data).is_ok());
    assert!(DmAcc::read(&p.tree, "DelegatedSrv").is_ok());
}

#[test]
fn a_session_with_nothing_to_do_leaves_both_sides_with_the_same_nonces() {
    // The server has no command: its first reply ends the session, so the device never sends
    // the status that would carry a new server nonce. It must keep the one the server knows,
    // or the server's next Package #0 and credentials would be refused.
    for scheme in [AuthScheme::Md5, AuthScheme::Hmac] {
        let mut p = Pair::new(Setup {
            scheme,
            ..Setup::default()
        });
        p.drive();
        assert!(p.server.is_done());
        assert!(p.server_events.contains(&ServerEvent::Authenticated));
        let (client_nonce, server_nonce) = p.client.nonces();
        assert_eq!(
            server_nonce.as_bytes(),
            p.server.auth().server_nonce.as_bytes(),
            "{scheme:?}: the nonce the server will sign with"
        );
        assert_eq!(
            client_nonce.as_bytes(),
            p.server.auth().client_nonce.as_bytes(),
            "{scheme:?}: the nonce the device will sign with"
        );
    }
}
