//! A DM server and fleets of simulated devices over real HTTP on 127.0.0.1: a thousand
//! devices, Package #0 through the fleet's push listener, injected faults, and the server's
//! state surviving a restart through its SQLite store.

use std::sync::Arc;
use std::time::Duration;

use dmdeleg::dm::uri::{NodeUri, Target};
use dmdeleg::engine::device_endpoint::DeviceEndpointConfig;
use dmdeleg::engine::dm_server::{DmServer, DmServerConfig};
use dmdeleg::engine::notifier::HttpPush;
use dmdeleg::sim::device::{DeviceFaults, SimError};
use dmdeleg::sim::fleet::{Fleet, FleetConfig};
use dmdeleg::store::Store;
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::session::DeviceCommand;

const SRV: &str = "dms1.example";

async fn server(store: Option<Store>) -> DmServer {
    server_on("127.0.0.1:0", store).await
}

async fn server_on(addr: &str, store: Option<Store>) -> DmServer {
    dmdeleg::tls::install_crypto_provider();
    // After a restart the previous server's socket closes when its aborted task is dropped,
    // which may take a moment.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    };
    DmServer::start(
        DmServerConfig {
            server_id: SRV.into(),
            endpoint: DeviceEndpointConfig::default(),
        },
        listener,
        store,
        Arc::new(HttpPush::new(reqwest::Client::new())),
    )
    .await
    .unwrap()
}

async fn fleet_for(srv: &DmServer, count: usize, push: bool) -> Fleet {
    let mut cfg = FleetConfig::new(SRV, srv.url(), count);
    // Half the devices speak WBXML, as most deployed clients do.
    cfg.mixed_encoding = true;
    let fleet = Fleet::start(cfg.clone(), push.then(|| "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    for e in cfg.enrolments(fleet.push_base().as_deref()) {
        srv.enrol(e.to_record()).await.unwrap();
    }
    fleet
}

fn uri(s: &str) -> NodeUri {
    NodeUri::parse(s).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_each_complete_a_session_against_one_engine() {
    let srv = server(None).await;
    let fleet = fleet_for(&srv, 1_000, false).await;
    let reports = fleet.session_all(64).await;
    let failed: Vec<_> = reports.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        reports
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.completed))
    );
    let stats = srv.stats();
    assert_eq!(stats.sessions_completed, 1_000);
    assert_eq!(stats.auth_failures, 0);
    // Every device's inventory arrived.
    for id in fleet.dev_ids() {
        assert!(srv.device(id).unwrap().tree.is_some(), "{id}");
    }
    assert_eq!(fleet.counts().sessions_ok, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package0_wakes_a_device_and_a_bad_digest_is_ignored() {
    let srv = server(None).await;
    let fleet = fleet_for(&srv, 3, true).await;
    let dev = fleet.dev_ids()[1].clone();
    // The first session exchanges nonces.
    fleet.session(&dev).await.unwrap();
    let rx = srv
        .enqueue(
            &dev,
            DeviceCommand::replace_text(&uri("./Vendor/Enterprise/Policy"), "from-trigger"),
        )
        .unwrap();
    // A forged trigger to the push listener is ignored.
    let push_url = srv.device(&dev).unwrap().push.unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(&push_url)
        .header("content-type", "application/vnd.syncml.notification")
        .body(vec![0u8; 40])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    // The real one runs a session that executes the queued command.
    srv.notify(&dev).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the triggered session ran")
        .unwrap()
        .unwrap();
    assert_eq!(outcome.status, StatusCode::OK);
    let tree = fleet.tree(&dev).await.unwrap();
    assert_eq!(
        tree.value_str(&uri("./Vendor/Enterprise/Policy")),
        Some("from-trigger")
    );
    let counts = fleet.counts();
    assert_eq!(counts.triggers_ok, 1);
    assert_eq!(counts.triggers_ignored, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_faults_show_as_the_server_sees_them() {
    let srv = server(None).await;
    let fleet = fleet_for(&srv, 3, false).await;
    let ids = fleet.dev_ids().to_vec();
    for id in &ids {
        fleet.session(id).await.unwrap();
    }
    // 500 on a path: the command fails with 500 and the node is unchanged.
    fleet
        .set_faults(
            &ids[0],
            DeviceFaults {
                fail_paths: vec![uri("./Vendor/Operator")],
                ..DeviceFaults::default()
            },
        )
        .await;
    let rx = srv
        .enqueue(
            &ids[0],
            DeviceCommand::replace_text(&uri("./Vendor/Operator/Connectivity/APN/Name"), "x"),
        )
        .unwrap();
    fleet.session(&ids[0]).await.unwrap();
    assert_eq!(
        rx.await.unwrap().unwrap().status,
        StatusCode::COMMAND_FAILED
    );
    let tree = fleet.tree(&ids[0]).await.unwrap();
    assert_eq!(
        tree.value_str(&uri("./Vendor/Operator/Connectivity/APN/Name")),
        Some("internet")
    );
    // A dropped session: the command is not answered and waits for the next session.
    fleet
        .set_faults(
            &ids[1],
            DeviceFaults {
                drop_after_messages: Some(1),
                ..DeviceFaults::default()
            },
        )
        .await;
    let mut rx = srv
        .enqueue(
            &ids[1],
            DeviceCommand::Get {
                target: Target::parse("./Vendor/Enterprise/Policy").unwrap(),
            },
        )
        .unwrap();
    assert!(matches!(
        fleet.session(&ids[1]).await,
        Err(SimError::Dropped)
    ));
    assert!(rx.try_recv().is_err(), "no outcome yet");
    // A slow device still completes.
    fleet
        .set_faults(
            &ids[2],
            DeviceFaults {
                delay: Some(Duration::from_millis(50)),
                ..DeviceFaults::default()
            },
        )
        .await;
    let report = fleet.session(&ids[2]).await.unwrap();
    assert!(report.completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_fleet_ignores_triggers_until_it_comes_back() {
    let srv = server(None).await;
    let mut cfg = FleetConfig::new(SRV, srv.url(), 1);
    cfg.offline_for = Some(Duration::from_secs(3600));
    let fleet = Fleet::start(cfg.clone(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    for e in cfg.enrolments(fleet.push_base().as_deref()) {
        srv.enrol(e.to_record()).await.unwrap();
    }
    let dev = fleet.dev_ids()[0].clone();
    srv.notify(&dev).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fleet.counts().triggers_ignored, 1);
    assert_eq!(srv.stats().sessions_completed, 0);
    assert!(fleet.session(&dev).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_and_the_devices_survive_restarts() {
    let dir = std::env::temp_dir().join(format!("dmdeleg-fleet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("devices")).unwrap();
    let db = dir.join("engine.db");
    let addr;
    {
        let srv = server(Some(Store::start(&db).unwrap())).await;
        addr = srv
            .url()
            .trim_start_matches("http://")
            .trim_end_matches("/dm")
            .to_owned();
        let mut cfg = FleetConfig::new(SRV, srv.url(), 2);
        cfg.state_dir = Some(dir.join("devices"));
        let fleet = Fleet::start(cfg.clone(), None).await.unwrap();
        for e in cfg.enrolments(None) {
            srv.enrol(e.to_record()).await.unwrap();
        }
        for id in fleet.dev_ids() {
            fleet.session(id).await.unwrap();
        }
        let rx = srv
            .enqueue(
                &fleet.dev_ids()[0],
                DeviceCommand::replace_text(&uri("./Vendor/Enterprise/Policy"), "kept"),
            )
            .unwrap();
        fleet.session(&fleet.dev_ids()[0]).await.unwrap();
        assert_eq!(rx.await.unwrap().unwrap().status, StatusCode::OK);
    }
    // Both sides start again from their files: the nonces rotated in the first run still
    // match, so the next sessions authenticate without a resync.
    let srv = server_on(&addr, Some(Store::start(&db).unwrap())).await;
    assert_eq!(srv.device_ids().len(), 2);
    let first = srv.device_ids()[0].clone();
    // The tree is saved, not held in memory: it is read back from the store, and the
    // record keeps its summary.
    assert!(srv.device(&first).unwrap().tree.is_none());
    let tree = srv
        .device_tree(&first)
        .await
        .unwrap()
        .expect("the saved tree");
    assert_eq!(
        srv.device(&first).unwrap().summary.map(|s| s.nodes),
        Some(tree.len())
    );
    let mut cfg = FleetConfig::new(SRV, srv.url(), 2);
    cfg.state_dir = Some(dir.join("devices"));
    let fleet = Fleet::start(cfg, None).await.unwrap();
    let tree = fleet.tree(&fleet.dev_ids()[0]).await.unwrap();
    assert_eq!(
        tree.value_str(&uri("./Vendor/Enterprise/Policy")),
        Some("kept")
    );
    for id in fleet.dev_ids() {
        let report = fleet.session(id).await.unwrap();
        assert!(report.completed && report.rejected.is_none(), "{report:?}");
    }
    assert_eq!(srv.stats().auth_failures, 0);
    let _ = std::fs::remove_dir_all(&dir);
}
