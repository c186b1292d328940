//! The engine's device endpoint and simulated devices over real HTTP on 127.0.0.1.

use std::sync::{Arc, Mutex};

use dmdeleg::dm::acl::{Acl, AclCmd};
use dmdeleg::dm::mo::DmAcc;
use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::uri::{NodeUri, Target};
use dmdeleg::engine::device_endpoint::{self, DeviceEndpoint, DeviceEndpointConfig};
use dmdeleg::engine::devices::{DeviceRecord, Devices};
use dmdeleg::sim::device::{SimAccount, SimDevice, SimError, is_loopback_url};
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::auth::{AuthScheme, Password};
use dmdeleg::syncml::session::DeviceCommand;
use dmdeleg::syncml::session::creds::Credentials;

const SRV: &str = "dms1.example";

fn uri(s: &str) -> NodeUri {
    NodeUri::parse(s).unwrap()
}

async fn engine() -> (Arc<Mutex<Devices>>, DeviceEndpoint) {
    engine_with(DeviceEndpointConfig::default()).await
}

async fn engine_with(cfg: DeviceEndpointConfig) -> (Arc<Mutex<Devices>>, DeviceEndpoint) {
    dmdeleg::tls::install_crypto_provider();
    let devices = Arc::new(Mutex::new(Devices::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = device_endpoint::spawn(listener, cfg, devices.clone(), None).unwrap();
    (devices, ep)
}

/// The tree without the nonces (AAuthData), which every session may rotate.
fn without_nonces(tree: &dmdeleg::dm::tree::DmTree) -> dmdeleg::dm::tree::DmTree {
    let mut t = tree.clone();
    for acc in DmAcc::all(tree).into_iter().flatten() {
        for a in &acc.app_auth {
            let _ = t.remove(&uri(&format!(
                "./DMAcc/{}/AppAuth/{}/AAuthData",
                acc.name, a.name
            )));
        }
    }
    t
}

fn enrol(devices: &Arc<Mutex<Devices>>, dev_id: &str, scheme: AuthScheme) {
    enrol_as(devices, dev_id, &format!("{dev_id}-user"), scheme);
}

fn enrol_as(devices: &Arc<Mutex<Devices>>, dev_id: &str, user: &str, scheme: AuthScheme) {
    let c = |name: &str, secret: &str| Credentials {
        scheme,
        name: name.into(),
        secret: Password::new(secret),
    };
    devices.lock().unwrap().enrol(DeviceRecord::new(
        dev_id,
        c(user, "client-secret"),
        c(SRV, "server-secret"),
        None,
    ));
}

fn sim(dev_id: &str, url: &str, scheme: AuthScheme, client_secret: &str) -> SimDevice {
    SimDevice::new(
        dev_id,
        &SimAccount {
            server_id: SRV.into(),
            server_url: url.into(),
            scheme,
            client: (format!("{dev_id}-user"), client_secret.into()),
            server: (SRV.into(), "server-secret".into()),
        },
    )
    .unwrap()
}

#[tokio::test]
async fn a_device_enrols_and_the_server_runs_every_kind_of_command() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:1", AuthScheme::Md5);
    let mut dev = sim("IMEI:1", &ep.url, AuthScheme::Md5, "client-secret");
    let http = reqwest::Client::new();

    // The first session fetches the device's inventory.
    let report = dev.session(&http, SRV, None, 1).await.unwrap();
    assert!(
        report.completed && report.server_authenticated,
        "{report:?}"
    );
    {
        let d = devices.lock().unwrap();
        let rec = d.get("IMEI:1").unwrap();
        assert!(!rec.needs_inventory);
        let tree = rec.tree.as_ref().expect("the tree was fetched");
        assert!(tree.exists(&uri("./Vendor/Enterprise/Policy")));
        assert!(
            rec.devinfo
                .iter()
                .any(|(u, v)| u == "./DevInfo/DevId" && v == "IMEI:1")
        );
        assert!(rec.last_seen.is_some());
    }

    let doc = TndsDocument::from_xml(include_bytes!("data/tnds-dmacc-delegated.xml")).unwrap();
    let mut rx = Vec::new();
    {
        let mut d = devices.lock().unwrap();
        let mut q = |cmd| rx.push(d.enqueue("IMEI:1", cmd).unwrap());
        q(DeviceCommand::Get {
            target: Target::parse("./Vendor?list=Struct").unwrap(),
        });
        q(DeviceCommand::Get {
            target: Target::parse("./Vendor/Enterprise?list=TNDS").unwrap(),
        });
        q(DeviceCommand::AddTnds {
            target: uri("./DMAcc"),
            doc,
        });
        q(DeviceCommand::replace_acl(
            &uri("./Vendor/Enterprise"),
            &Acl::parse(&format!("Get={SRV}+dms2&Replace={SRV}+dms2")).unwrap(),
        ));
        q(DeviceCommand::Delete {
            target: uri("./Vendor/Operator/Connectivity"),
        });
        q(DeviceCommand::Exec {
            target: uri("./Vendor"),
            data: Some("reboot".into()),
            correlator: None,
        });
    }
    let report = dev.session(&http, SRV, None, 2).await.unwrap();
    assert!(report.completed, "{report:?}");
    let mut outcomes = Vec::new();
    for r in rx {
        outcomes.push(r.await.unwrap().unwrap());
    }
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.status, StatusCode::OK, "command {i}: {o:?}");
    }
    assert!(
        outcomes[0]
            .results
            .iter()
            .any(|r| r.source == "./Vendor/Enterprise/Policy")
    );
    let listed = TndsDocument::from_xml(&outcomes[1].results[0].data).unwrap();
    assert_eq!(listed.nodes[0].name, "Enterprise");
    // The device's tree really changed.
    assert_eq!(
        DmAcc::read(&dev.tree, "DelegatedSrv").unwrap().server_id,
        "srv.delegated.example"
    );
    assert!(
        dev.tree
            .has_right(&uri("./Vendor/Enterprise"), "dms2", AclCmd::Replace)
    );
    assert!(!dev.tree.exists(&uri("./Vendor/Operator/Connectivity")));
    assert_eq!(
        report.execs,
        vec![("./Vendor".to_owned(), Some("reboot".to_owned()))]
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_counted_and_nothing_runs() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:2", AuthScheme::Md5);
    let mut dev = sim("IMEI:2", &ep.url, AuthScheme::Md5, "wrong-secret");
    let before = dev.tree.clone();
    let rx = devices
        .lock()
        .unwrap()
        .enqueue(
            "IMEI:2",
            DeviceCommand::Delete {
                target: uri("./Vendor"),
            },
        )
        .unwrap();
    let http = reqwest::Client::new();
    let report = dev.session(&http, SRV, None, 1).await.unwrap();
    assert_eq!(
        report.rejected,
        Some(StatusCode::UNAUTHORIZED),
        "{report:?}"
    );
    assert!(report.executed.is_empty(), "{report:?}");
    let (now, then) = (without_nonces(&dev.tree), without_nonces(&before));
    assert!(now.same_as(&then), "{:?}", now.diff(&then));
    assert_eq!(devices.lock().unwrap().stats.auth_failures, 1);
    // The command waits for a session that authenticates.
    assert_eq!(devices.lock().unwrap().queued("IMEI:2"), 1);
    drop(rx);
}

#[tokio::test]
async fn hmac_and_a_tiny_max_msg_size_over_http() {
    let (devices, ep) = engine_with(DeviceEndpointConfig {
        max_msg_size: 1_500,
        ..DeviceEndpointConfig::default()
    })
    .await;
    enrol(&devices, "IMEI:3", AuthScheme::Hmac);
    let mut dev = sim("IMEI:3", &ep.url, AuthScheme::Hmac, "client-secret");
    dev.max_msg_size = 1_500;
    let http = reqwest::Client::new();
    let report = dev.session(&http, SRV, None, 1).await.unwrap();
    assert!(
        report.completed && report.server_authenticated,
        "{report:?}"
    );
    // The inventory (the whole tree as TNDS) needed several messages.
    assert!(report.messages > 3, "{report:?}");
    assert!(
        devices
            .lock()
            .unwrap()
            .get("IMEI:3")
            .unwrap()
            .tree
            .is_some()
    );
}

/// A device whose MaxMsgSize leaves no room for any command: its session ends, and whoever
/// waits for a command hears why (not merely that the session was lost).
#[tokio::test]
async fn a_max_msg_size_without_room_for_a_command_is_what_the_caller_hears() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:4", AuthScheme::Md5);
    let rx = devices
        .lock()
        .unwrap()
        .enqueue(
            "IMEI:4",
            DeviceCommand::Get {
                target: Target::parse("./DevInfo/Mod").unwrap(),
            },
        )
        .unwrap();
    let mut dev = sim("IMEI:4", &ep.url, AuthScheme::Md5, "client-secret");
    dev.max_msg_size = 900;
    let http = reqwest::Client::new();
    let report = dev.session(&http, SRV, None, 1).await.unwrap();
    assert!(report.messages <= 3, "{report:?}");
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
        .await
        .expect("the caller hears at once")
        .expect("an answer, not a dropped channel");
    match heard {
        Err(e @ dmdeleg::engine::devices::CommandError::NoRoom { max_msg_size: 900 }) => {
            assert!(e.to_string().contains("MaxMsgSize of 900 bytes"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unknown_devices_and_bad_media_types_are_refused() {
    let (devices, ep) = engine().await;
    let mut dev = sim("IMEI:404", &ep.url, AuthScheme::Md5, "client-secret");
    let http = reqwest::Client::new();
    let err = dev.session(&http, SRV, None, 1).await.unwrap_err();
    assert!(matches!(err, SimError::HttpStatus(403)), "{err}");
    assert_eq!(devices.lock().unwrap().stats.unknown_devices, 1);
    let resp = http
        .post(&ep.url)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    // The legacy media type is accepted (and a malformed body is a 400, not a crash).
    let resp = http
        .post(&ep.url)
        .header("content-type", "application/vnd.syncml+xml; charset=utf-8")
        .body("<SyncML>")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

#[test]
fn simulated_devices_only_follow_loopback_urls() {
    assert!(is_loopback_url("http://127.0.0.1:8080/dm"));
    assert!(is_loopback_url("http://localhost/dm"));
    assert!(is_loopback_url("http://[::1]:80/dm"));
    assert!(!is_loopback_url("http://10.0.0.1/dm"));
    assert!(!is_loopback_url("https://dm.example.com/dm"));
    assert!(!is_loopback_url("not a url"));
}

#[tokio::test]
async fn a_valid_package0_starts_a_session_and_a_bad_digest_is_ignored() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:5", AuthScheme::Md5);
    let mut dev = sim("IMEI:5", &ep.url, AuthScheme::Md5, "client-secret");
    let http = reqwest::Client::new();
    // A first session exchanges nonces, so the trigger below uses a fresh one.
    dev.session(&http, SRV, None, 1).await.unwrap();
    let trigger = devices
        .lock()
        .unwrap()
        .trigger("IMEI:5", SRV, 0x2A)
        .unwrap();
    let (server, session_id) = dev.verify_trigger(&trigger).unwrap();
    assert_eq!((server.as_str(), session_id), (SRV, 0x2A));
    let mut tampered = trigger.clone();
    tampered[0] ^= 0xFF;
    assert!(matches!(
        dev.verify_trigger(&tampered),
        Err(SimError::BadTrigger(_))
    ));
    let mut other = trigger.clone();
    let last = other.len() - 1;
    other[last] ^= 0x01;
    assert!(dev.verify_trigger(&other).is_err());
    assert!(dev.verify_trigger(&trigger[..10]).is_err());
    // The verified trigger opens the session with its session id (Alert 1200).
    let rx = devices
        .lock()
        .unwrap()
        .enqueue(
            "IMEI:5",
            DeviceCommand::replace_text(&uri("./Vendor/Enterprise/Policy"), "relaxed"),
        )
        .unwrap();
    let report = dev.session(&http, SRV, Some(session_id), 0).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!(rx.await.unwrap().unwrap().status, StatusCode::OK);
    assert_eq!(
        dev.tree.value_str(&uri("./Vendor/Enterprise/Policy")),
        Some("relaxed")
    );
}

#[tokio::test]
async fn a_dormant_account_is_never_called_on_the_devices_own_initiative() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:6", AuthScheme::Md5);
    let mut dev = sim("IMEI:6", &ep.url, AuthScheme::Md5, "client-secret");
    let mut acc = DmAcc::find_by_server_id(&dev.tree, SRV).unwrap();
    acc.dormant = true;
    acc.install(&mut dev.tree, None).unwrap();
    let http = reqwest::Client::new();
    let err = dev.session(&http, SRV, None, 1).await.unwrap_err();
    assert!(matches!(err, SimError::Dormant(_)), "{err}");
    assert_eq!(devices.lock().unwrap().stats.sessions_completed, 0);
    let trigger = devices.lock().unwrap().trigger("IMEI:6", SRV, 7).unwrap();
    let (_, sid) = dev.verify_trigger(&trigger).unwrap();
    let report = dev.session(&http, SRV, Some(sid), 0).await.unwrap();
    assert!(report.completed);
}

#[tokio::test]
async fn a_device_without_tnds_is_inventoried_with_struct_data() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:7", AuthScheme::Md5);
    let mut dev = sim("IMEI:7", &ep.url, AuthScheme::Md5, "client-secret");
    dev.tnds = false;
    let http = reqwest::Client::new();
    let report = dev.session(&http, SRV, None, 1).await.unwrap();
    assert!(report.completed, "{report:?}");
    assert!(
        report
            .executed
            .iter()
            .any(|(c, t, s)| c == "Get" && t.contains("TNDS") && *s == StatusCode(406))
    );
    let d = devices.lock().unwrap();
    let rec = d.get("IMEI:7").unwrap();
    assert!(!rec.needs_inventory);
    let tree = rec.tree.as_ref().unwrap();
    assert_eq!(
        tree.value_str(&uri("./Vendor/Enterprise/Policy")),
        Some("strict")
    );
    assert_eq!(tree.value_str(&uri("./DevInfo/DevId")), Some("IMEI:7"));
}

#[tokio::test]
async fn the_device_endpoint_serves_https_with_a_server_certificate() {
    dmdeleg::tls::install_crypto_provider();
    let pki = dmdeleg::tls::LabPki::generate("dmdeleg test CA").unwrap();
    let issued = pki
        .issue("dms1.example", &["127.0.0.1", "localhost"])
        .unwrap();
    let tls = dmdeleg::tls::server_config(issued.chain(), issued.key_der().unwrap()).unwrap();
    let devices = Arc::new(Mutex::new(Devices::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = device_endpoint::spawn_tls(
        listener,
        DeviceEndpointConfig::default(),
        devices.clone(),
        None,
        tls,
    )
    .await
    .unwrap();
    assert!(ep.url.starts_with("https://127.0.0.1:"));
    enrol(&devices, "IMEI:8", AuthScheme::Md5);
    let mut dev = sim("IMEI:8", &ep.url, AuthScheme::Md5, "client-secret");
    let http = dmdeleg::tls::reqwest_client(&[pki.ca_cert_der()], None).unwrap();
    let report = dev.session(&http, SRV, None, 1).await.unwrap();
    assert!(
        report.completed && report.server_authenticated,
        "{report:?}"
    );
    // A device that does not trust the server's CA cannot talk to it.
    let other = dmdeleg::tls::LabPki::generate("another CA").unwrap();
    let untrusting = dmdeleg::tls::reqwest_client(&[other.ca_cert_der()], None).unwrap();
    assert!(dev.session(&untrusting, SRV, None, 2).await.is_err());
    // The server notes the failed handshake once the client has hung up.
    for _ in 0..100 {
        if ep.tls_handshake_failures() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ep.tls_handshake_failures() >= 1);
}

#[tokio::test]
async fn outside_its_acl_the_server_gets_425_and_a_silent_device_gets_a_407_challenge() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:9", AuthScheme::Md5);
    let mut dev = sim("IMEI:9", &ep.url, AuthScheme::Md5, "client-secret");
    // The device first sends no credentials: the server challenges (407), then it succeeds.
    dev.cred_before_challenge = false;
    let http = reqwest::Client::new();
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        dev.session(&http, SRV, None, 1),
    )
    .await
    .expect("the first session ends")
    .unwrap();
    assert!(report.completed && report.rejected.is_none(), "{report:?}");
    assert!(
        report.messages >= 3,
        "challenge round trip expected: {report:?}"
    );
    // DevInfo is read-only for every server (Get=*): a Replace and a Delete there get 425.
    let before = dev.tree.clone();
    let (r1, r2) = {
        let mut d = devices.lock().unwrap();
        (
            d.enqueue(
                "IMEI:9",
                DeviceCommand::replace_text(&uri("./DevInfo/Man"), "x"),
            )
            .unwrap(),
            d.enqueue(
                "IMEI:9",
                DeviceCommand::Delete {
                    target: uri("./DevDetail"),
                },
            )
            .unwrap(),
        )
    };
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        dev.session(&http, SRV, None, 2),
    )
    .await
    .expect("the second session ends");
    assert!(r.as_ref().is_ok_and(|r| r.completed), "{r:?}");
    assert_eq!(
        r1.await.unwrap().unwrap().status,
        StatusCode::PERMISSION_DENIED
    );
    // DevDetail is permanent: 405 comes before the ACL for the device's own nodes.
    let st = r2.await.unwrap().unwrap().status;
    assert!(
        st == StatusCode::PERMISSION_DENIED || st == StatusCode::COMMAND_NOT_ALLOWED,
        "{st:?}"
    );
    let (now, then) = (without_nonces(&dev.tree), without_nonces(&before));
    assert!(now.same_as(&then), "{:?}", now.diff(&then));
}

#[tokio::test]
async fn a_wbxml_device_gets_wbxml_answers_over_http() {
    let (devices, ep) = engine().await;
    enrol(&devices, "IMEI:10", AuthScheme::Md5);
    let mut dev = sim("IMEI:10", &ep.url, AuthScheme::Md5, "client-secret");
    dev.encoding = dmdeleg::syncml::session::Encoding::Wbxml;
    let http = reqwest::Client::new();
    let report = dev.session(&http, SRV, None, 1).await.unwrap();
    assert!(
        report.completed && report.server_authenticated,
        "{report:?}"
    );
    let rx = devices
        .lock()
        .unwrap()
        .enqueue(
            "IMEI:10",
            DeviceCommand::replace_text(&uri("./Vendor/Enterprise/Policy"), "wb"),
        )
        .unwrap();
    dev.session(&http, SRV, None, 2).await.unwrap();
    assert_eq!(rx.await.unwrap().unwrap().status, StatusCode::OK);
    assert_eq!(
        dev.tree.value_str(&uri("./Vendor/Enterprise/Policy")),
        Some("wb")
    );
    // The legacy WBXML media type is accepted as well; the reply uses the DM one.
    let resp = http
        .post(&ep.url)
        .header("content-type", "application/vnd.syncml+wbxml")
        .body(vec![0x02, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
}

/// Sends a raw HTTP/1.1 request and returns the status code and body.
async fn raw_post(addr: std::net::SocketAddr, head: &str, body_chunks: &[&[u8]]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for c in body_chunks {
        s.write_all(format!("{:x}\r\n", c.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(c).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.as_bytes().to_vec())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn chunked_bodies_and_odd_content_encodings_are_accepted() {
    let (devices, ep) = engine().await;
    // Basic credentials cannot hold a `:` in the user name.
    enrol_as(&devices, "IMEI:11", "dev11", AuthScheme::Basic);
    // A Package 1 with basic credentials, sent chunked in three pieces with an identity
    // Content-Encoding and a legacy media type with parameters.
    let cred = dmdeleg::syncml::auth::basic_cred("dev11", &Password::new("client-secret"));
    let msg = format!(
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>\
         <SessionID>5</SessionID><MsgID>1</MsgID><Target><LocURI>{url}</LocURI></Target>\
         <Source><LocURI>IMEI:11</LocURI><LocName>dev11</LocName></Source>\
         <Cred><Meta><Type xmlns=\"syncml:metinf\">syncml:auth-basic</Type>\
         <Format xmlns=\"syncml:metinf\">b64</Format></Meta><Data>{cred}</Data></Cred></SyncHdr>\
         <SyncBody><Alert><CmdID>1</CmdID><Data>1201</Data></Alert><Final></Final></SyncBody></SyncML>",
        url = ep.url
    );
    let bytes = msg.as_bytes();
    let third = bytes.len() / 3;
    let head = format!(
        "POST /dm HTTP/1.1\r\nHost: {}\r\nContent-Type: application/vnd.syncml+xml; charset=UTF-8\r\n\
         Content-Encoding: identity\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        ep.addr
    );
    let (status, body) = raw_post(
        ep.addr,
        &head,
        &[
            &bytes[..third],
            &bytes[third..2 * third],
            &bytes[2 * third..],
        ],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let reply = dmdeleg::syncml::xml::decode(&body).unwrap();
    // The reply carries the server's own credentials and a RespURI, and accepts ours (212).
    assert!(reply.hdr.cred.is_some());
    assert!(
        reply
            .hdr
            .resp_uri
            .as_deref()
            .is_some_and(|u| u.starts_with(&ep.url))
    );
    assert_eq!(reply.hdr_status().unwrap().data, StatusCode::AUTH_ACCEPTED);
}

#[tokio::test]
async fn a_device_aborting_the_session_loses_nothing_queued() {
    let (devices, ep) = engine().await;
    enrol_as(&devices, "IMEI:12", "dev12", AuthScheme::Basic);
    let rx = devices
        .lock()
        .unwrap()
        .enqueue(
            "IMEI:12",
            DeviceCommand::Get {
                target: Target::parse("./DevInfo/Man").unwrap(),
            },
        )
        .unwrap();
    let cred = dmdeleg::syncml::auth::basic_cred("dev12", &Password::new("client-secret"));
    let abort = format!(
        "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>\
         <SessionID>9</SessionID><MsgID>1</MsgID><Target><LocURI>{url}</LocURI></Target>\
         <Source><LocURI>IMEI:12</LocURI></Source>\
         <Cred><Meta><Type xmlns=\"syncml:metinf\">syncml:auth-basic</Type>\
         <Format xmlns=\"syncml:metinf\">b64</Format></Meta><Data>{cred}</Data></Cred></SyncHdr>\
         <SyncBody><Alert><CmdID>1</CmdID><Data>1223</Data></Alert><Final/></SyncBody></SyncML>",
        url = ep.url
    );
    let http = reqwest::Client::new();
    let resp = http
        .post(&ep.url)
        .header("content-type", "application/vnd.syncml.dm+xml")
        .body(abort)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let reply = dmdeleg::syncml::xml::decode(&resp.bytes().await.unwrap()).unwrap();
    assert!(reply.body.is_final);
    // The Get either never left or was lost: it is queued again or reported lost, never
    // silently dropped.
    let queued = devices.lock().unwrap().queued("IMEI:12");
    if queued == 0 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("an outcome arrives")
            .unwrap();
        assert!(r.is_err(), "{r:?}");
    } else {
        assert_eq!(queued, 1);
    }
}
