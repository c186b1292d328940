//! Adding a peer at run time, end to end: the lab's DMS-1 and DMS-2 on loopback with mutual
//! TLS, and a third server, DMS-3, whose certificate is self-signed (no CA either side
//! knows). DMS-1 refuses DMS-3's handshake until DMS-1's operator adds DMS-3 from its
//! certificate file. From then on, with no restart, DMS-1 accepts DMS-3's connections and
//! trusts it when calling it, so a device is delegated from DMS-1 to DMS-3. The peer is still
//! there after a restart, and once removed it is refused again. Bad inputs are refused with
//! the matching error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dmdeleg::delegation::machine::{Deadlines, Role, State};
use dmdeleg::dm::mo::DmAcc;
use dmdeleg::engine::device_endpoint::DeviceEndpointConfig;
use dmdeleg::engine::driver::{CommandRefused, StartRequest};
use dmdeleg::engine::peer_client::MESSAGES_PATH;
use dmdeleg::engine::peers::{NewPeer, PeerAuth, PeerError, PeerOrigin, Policy};
use dmdeleg::engine::service::{Engine, EngineConfig, PeerSetup};
use dmdeleg::lab::{DMS1, DMS2, EnginePorts, Lab, LabOptions, free_port};
use dmdeleg::tls::{self, Issued, PeerTrust};

const DMS3: &str = "dms3.example";
const LONG: Duration = Duration::from_secs(30);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dmdeleg-peeradd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// DMS-3: its own store and ports, a self-signed certificate, trusting only a CA that signed
/// nothing here (so it trusts DMS-1 only once DMS-1 is pinned), and no peers yet.
async fn dms3(dir: &Path, me: &Issued) -> Engine {
    let nobody = tls::LabPki::generate("DMS-3's unused CA").unwrap();
    let trust = PeerTrust::new(&[nobody.ca_cert_der()]).unwrap();
    let server_tls =
        tls::mtls_server_config_with(me.chain(), me.key_der().unwrap(), &trust).unwrap();
    let (cert, key) = me.identity_pem();
    let client = tls::peer_client_builder(&trust, cert, key)
        .unwrap()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Engine::start(EngineConfig {
        server_id: DMS3.into(),
        store_path: dir.join("dms3.db"),
        devices_listen: free_port().unwrap(),
        device_endpoint: DeviceEndpointConfig::default(),
        device_tls: None,
        peer: Some(PeerSetup {
            listen: free_port().unwrap(),
            trust,
            server_tls,
            client,
            peers: Vec::new(),
        }),
        bootstrap: None,
        deadlines: Deadlines::default(),
        push_client: reqwest::Client::new(),
    })
    .await
    .unwrap()
}

/// POSTs `body` to `engine`'s peer endpoint as a client with `identity`, trusting `ca`.
async fn post(engine: &Engine, identity: &Issued, ca: &[u8], body: &[u8]) -> Result<u16, String> {
    let roots = tls::load_certs(ca).unwrap();
    let (cert, key) = identity.identity_pem();
    let client = tls::reqwest_client(&roots, Some((cert, key))).unwrap();
    let url = format!("{}{MESSAGES_PATH}", engine.peer_url().unwrap());
    client
        .post(url)
        .header("content-type", dmdeleg::delegation::messages::MEDIA_TYPE)
        .body(body.to_vec())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| dmdeleg::sim::device::error_chain(&e))
}

fn new_peer(id: &str, url: &str, cert: &Path, policy: Policy) -> NewPeer {
    NewPeer {
        server_id: id.into(),
        base_url: url.into(),
        cert_path: cert.to_owned(),
        policy,
    }
}

fn full_to(peer: &str, dev: &str) -> StartRequest {
    StartRequest {
        peer: peer.into(),
        dev_id: dev.into(),
        role: Role::Delegating,
        full: true,
        paths: Vec::new(),
        bootstrap: false,
        lease: None,
        device: None,
        retry_of: None,
    }
}

/// A certificate that expired in 2021.
fn expired_pem() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["old.example".to_owned()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    p.self_signed(&key).unwrap().pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_added_at_run_time_is_trusted_both_ways_at_once_and_after_a_restart() {
    tls::install_crypto_provider();
    let dir = scratch("live");
    let lab = Lab::start(&LabOptions::new(&dir, 1)).await.unwrap();
    assert_eq!(lab.inventory(4).await, 0);
    let dev = lab.fleet.dev_ids()[0].clone();
    let certs = lab.engines[0].certs.clone();
    let lab_ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let dms1_pem = certs.join(format!("{DMS1}.pem"));

    let me3 = tls::self_signed(DMS3, &[DMS3, "127.0.0.1"]).unwrap();
    let dms3_pem = write(&dir, "dms3.pem", &me3.cert_pem);
    let dms3 = dms3(&dir, &me3).await;
    let dms3_url = dms3.peer_url().unwrap().to_owned();

    // Before: DMS-1 does not know DMS-3. Its handshake is refused, and DMS-1 cannot delegate
    // to it.
    let failures = lab.dms1.peer_handshake_failures();
    let before = post(&lab.dms1, &me3, &lab_ca, b"<x/>").await;
    assert!(before.is_err(), "{before:?}");
    let err = lab.dms1.start_delegation(full_to(DMS3, &dev)).await;
    assert!(
        matches!(err, Err(CommandRefused::UnknownPeer(_))),
        "{err:?}"
    );
    for _ in 0..100 {
        if lab.dms1.peer_handshake_failures() > failures {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(lab.dms1.peer_handshake_failures() > failures);

    // Each adds the other from its certificate file.
    let added = lab
        .dms1
        .add_peer(new_peer(DMS3, &dms3_url, &dms3_pem, Policy::Operator))
        .await
        .unwrap();
    assert_eq!(
        added.info.auth,
        PeerAuth::Pinned(tls::cert_fingerprint_sha256(&me3.cert_der))
    );
    assert!(matches!(added.origin, PeerOrigin::Added { .. }));
    dms3.add_peer(new_peer(
        DMS1,
        lab.dms1.peer_url().unwrap(),
        &dms1_pem,
        Policy::Accept,
    ))
    .await
    .unwrap();

    // After, at once: the handshake passes and DMS-3 is recognised (a malformed message is a
    // 400 from the handler, not a refusal of the connection or a 403).
    assert_eq!(post(&lab.dms1, &me3, &lab_ca, b"<x/>").await, Ok(400));
    // DMS-2's certificate is still DMS-2's, and DMS-2 still works.
    assert!(lab.dms1.peers().iter().any(|p| p.info.server_id == DMS2));

    // A whole delegation to DMS-3: DMS-1 calls DMS-3 (pinned server certificate) and DMS-3
    // calls DMS-1 (pinned client certificate on DMS-1's side).
    let id = lab
        .dms1
        .start_delegation(full_to(DMS3, &dev))
        .await
        .unwrap();
    let s1 = lab.dms1.wait_done(&id, LONG).await.unwrap();
    let s3 = dms3.wait_done(&id, LONG).await.unwrap();
    assert_eq!(s1.state, State::Completed, "{s1:?}");
    assert_eq!(s3.state, State::Completed, "{s3:?}");
    let tree = lab.fleet.tree(&dev).await.unwrap();
    assert!(DmAcc::find_by_server_id(&tree, DMS1).is_none());
    let acc = DmAcc::find_by_server_id(&tree, DMS3).expect("DMS-3's account");
    assert!(!acc.dormant);

    // The operator's change is in the audit log.
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
            .any(|a| a.action == "add peer" && a.peer.as_deref() == Some(DMS3))
    );

    // After a restart (same store, new ports) DMS-3 is a peer again, pinned as before.
    let Lab {
        dms1,
        dms2,
        fleet,
        engines,
    } = lab;
    drop(fleet);
    dms2.stop().await;
    dms1.stop().await;
    let mut again = engines[0].clone();
    again.ports = EnginePorts::free().unwrap();
    let dms1 = Engine::start(again.config().unwrap()).await.unwrap();
    let back = dms1
        .peers()
        .into_iter()
        .find(|p| p.info.server_id == DMS3)
        .expect("DMS-3 after the restart");
    assert_eq!(back.info.auth, added.info.auth);
    assert_eq!(back.info.base_url, dms3_url);
    assert_eq!(back.info.policy, Policy::Operator);
    assert_eq!(post(&dms1, &me3, &lab_ca, b"<x/>").await, Ok(400));

    // Removed: refused again, at once. Configured peers are not removed here.
    assert!(matches!(
        dms1.remove_peer(DMS2).await,
        Err(PeerError::Configured(_))
    ));
    assert!(matches!(
        dms1.remove_peer("nobody.example").await,
        Err(PeerError::NotFound(_))
    ));
    dms1.remove_peer(DMS3).await.unwrap();
    assert!(post(&dms1, &me3, &lab_ca, b"<x/>").await.is_err());
    assert!(dms1.peers().iter().all(|p| p.info.server_id != DMS3));
    dms1.stop().await;
    dms3.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_with_the_reason_in_plain_words() {
    tls::install_crypto_provider();
    let dir = scratch("bad");
    let lab = Lab::start(&LabOptions::new(&dir, 0)).await.unwrap();
    let me3 = tls::self_signed(DMS3, &[DMS3, "127.0.0.1"]).unwrap();
    let good = write(&dir, "dms3.pem", &me3.cert_pem);
    let url = "https://127.0.0.1:7443";
    let add = |id: &str, url: &str, cert: &Path| {
        lab.dms1.add_peer(new_peer(id, url, cert, Policy::Accept))
    };

    let missing = dir.join("nowhere.pem");
    let err = add(DMS3, url, &missing).await.unwrap_err();
    assert!(matches!(err, PeerError::Unreadable { .. }), "{err:?}");
    assert!(err.to_string().contains("nowhere.pem"), "{err}");

    let key = write(&dir, "dms3.key", &me3.key_pem);
    let err = add(DMS3, url, &key).await.unwrap_err();
    assert!(matches!(err, PeerError::NotACertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("is not a certificate"), "{err}");

    let junk = write(
        &dir,
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let err = add(DMS3, url, &junk).await.unwrap_err();
    assert!(matches!(err, PeerError::NotACertificate { .. }), "{err:?}");

    let old = write(&dir, "old.pem", &expired_pem());
    let err = add(DMS3, url, &old).await.unwrap_err();
    assert!(matches!(err, PeerError::Expired { .. }), "{err:?}");
    assert!(
        err.to_string().contains("expired on 2021-01-01 00:00 UTC"),
        "{err}"
    );

    let err = add(DMS2, url, &good).await.unwrap_err();
    assert!(matches!(err, PeerError::Duplicate(_)), "{err:?}");
    let err = add(DMS1, url, &good).await.unwrap_err();
    assert!(matches!(err, PeerError::OwnServerId(_)), "{err:?}");
    let err = add("dms 3", url, &good).await.unwrap_err();
    assert!(matches!(err, PeerError::BadServerId(_)), "{err:?}");
    let err = add(DMS3, "http://127.0.0.1:7443", &good).await.unwrap_err();
    assert!(matches!(err, PeerError::NotHttps(_)), "{err:?}");
    assert!(err.to_string().contains("must be an https URL"), "{err}");
    let err = add(DMS3, "dms3.example:7443", &good).await.unwrap_err();
    assert!(
        matches!(err, PeerError::BadUrl { .. } | PeerError::NotHttps(_)),
        "{err:?}"
    );

    // DMS-2's own certificate under another name: one certificate, one peer.
    let dms2_pem = lab.engines[0].certs.join(format!("{DMS2}.pem"));
    let err = add(DMS3, url, &dms2_pem).await.unwrap_err();
    assert!(matches!(err, PeerError::CertificateInUse(_)), "{err:?}");

    // Nothing was added by any of these.
    assert_eq!(lab.dms1.peers().len(), 1);

    // A chain file: the first certificate is pinned.
    let other = tls::LabPki::generate("another CA").unwrap();
    let leaf = other.issue(DMS3, &[DMS3, "127.0.0.1"]).unwrap();
    let chain = write(
        &dir,
        "chain.pem",
        &format!("{}{}", leaf.cert_pem, other.ca_cert_pem),
    );
    let read = dmdeleg::engine::peers::read_certificate(&chain, dmdeleg::engine::driver::now_ms())
        .unwrap();
    assert_eq!(read.in_file, 2);
    assert_eq!(
        read.fingerprint,
        tls::cert_fingerprint_sha256(&leaf.cert_der)
    );
    let entry = add(DMS3, url, &chain).await.unwrap();
    assert_eq!(entry.info.auth, PeerAuth::Pinned(read.fingerprint.clone()));
    let err = add(DMS3, url, &chain).await.unwrap_err();
    assert!(matches!(err, PeerError::Duplicate(_)), "{err:?}");
    lab.dms2.stop().await;
    lab.dms1.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A delegation whose peer left the configuration while the engine was stopped: resumed at
/// the next start, it fails at once as 5001 saying so (its message to the peer can never go),
/// instead of retrying into the void until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegation_whose_peer_was_removed_fails_at_once_saying_so() {
    let dir = scratch("peer-gone");
    let certs = dir.join("certs");
    dmdeleg::lab::ensure_certs(&certs).unwrap();
    // DMS-2 never answers: the NOTIF stays unsent, retried.
    let nowhere = dmdeleg::lab::unreachable_port().unwrap();
    let lab_engine = dmdeleg::lab::LabEngine {
        server_id: DMS1.into(),
        ports: EnginePorts::free().unwrap(),
        peer: (DMS2.into(), format!("https://{nowhere}")),
        policy: Policy::Accept,
        store_path: dir.join("dms1.db"),
        certs,
        deadlines: Deadlines {
            peer_ms: 600_000,
            ..Deadlines::default()
        },
        token_ttl_ms: 60_000,
    };
    let dms1 = Engine::start(lab_engine.config().unwrap()).await.unwrap();
    let fc = dmdeleg::sim::fleet::FleetConfig::new(DMS1, dms1.dm().url(), 1);
    let dev = fc.dev_id(0);
    for e in fc.enrolments(None) {
        dms1.dm().enrol(e.to_record()).await.unwrap();
    }
    let id = dms1.start_delegation(full_to(DMS2, &dev)).await.unwrap();
    let s = dms1
        .wait_for(&id, LONG, |s| s.unsent > 0 && s.state == State::Running)
        .await
        .unwrap();
    assert_eq!(s.step, 1, "{s:?}");
    dms1.stop().await;

    // The operator takes DMS-2 out of the configuration and starts the engine again.
    let mut cfg = lab_engine.config().unwrap();
    cfg.peer.as_mut().unwrap().peers.clear();
    let dms1 = Engine::start(cfg).await.unwrap();
    assert_eq!(dms1.recovered(), 1);
    let s = dms1.wait_done(&id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(s.state, State::Failed, "{s:?}");
    let (code, text) = s.reason.clone().unwrap();
    assert_eq!(code, 5001, "{s:?}");
    assert!(
        text.contains("dms2.example is no longer one of this server's peers"),
        "{text}"
    );
    assert_eq!(s.unsent, 0, "nothing left to send to a peer that is gone");
    // The device is free for another delegation.
    let again = dms1.start_delegation(full_to(DMS2, &dev)).await;
    assert!(
        matches!(&again, Err(CommandRefused::UnknownPeer(p)) if p == DMS2),
        "{again:?}"
    );
    dms1.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
