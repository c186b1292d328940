//! The delegating engine is a real process (`dmdeleg serve`), killed with SIGKILL at each
//! point of a delegation and started again: the delegation completes, nothing is lost and
//! nothing is applied twice. DMS-2 runs in this process; the devices are a simulated fleet
//! speaking SyncML DM over HTTP to both.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use dmdeleg::delegation::machine::{Deadlines, Role, State};
use dmdeleg::delegation::messages::DeviceInfo;
use dmdeleg::dm::mo::DmAcc;
use dmdeleg::engine::driver::StartRequest;
use dmdeleg::engine::peers::Policy;
use dmdeleg::engine::service::Engine;
use dmdeleg::lab::{DMS1, DMS2, EnginePorts, LabEngine, ensure_certs};
use dmdeleg::sim::fleet::{Fleet, FleetConfig};

mod common;
use common::serve::{BIN, normalised, wait_line};

fn scratch(name: &str) -> PathBuf {
    common::serve::scratch("crash", name)
}

fn dms1_config(dir: &Path, certs: &Path, p1: EnginePorts, p2: EnginePorts) -> PathBuf {
    common::serve::dms1_config(
        dir,
        certs,
        p1,
        p2,
        "accept",
        "peer_secs = 20\ndevice_secs = 5\nundo_retry_secs = 1",
    )
}

/// Starts DMS-1; with `pause`, it stops at that point of the delegation.
fn start_dms1(config: &Path, pause: Option<&str>) -> (Child, std::sync::mpsc::Receiver<String>) {
    common::serve::start_serve(config, pause)
}

/// DMS-1's record of the delegation, read from its database by a separate connection.
fn dms1_row(db: &Path, id: &str) -> Option<dmdeleg::store::delegations::DelegationRow> {
    let conn = dmdeleg::store::open(db).ok()?;
    dmdeleg::store::delegations::load(&conn, id).ok().flatten()
}

fn dms1_events(db: &Path, id: &str) -> Vec<String> {
    let conn = dmdeleg::store::open(db).unwrap();
    dmdeleg::store::delegations::events(&conn, id)
        .unwrap()
        .into_iter()
        .map(|e| e.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delegating_engine_killed_at_each_point_completes_after_restart() {
    dmdeleg::tls::install_crypto_provider();
    let dir = scratch("points");
    let certs = dir.join("certs");
    ensure_certs(&certs).unwrap();
    let (p1, p2) = (EnginePorts::free().unwrap(), EnginePorts::free().unwrap());
    let config = dms1_config(&dir, &certs, p1, p2);
    let db = dir.join("dms1").join("dmdeleg.db");

    // The points where DMS-1 dies: right after storing a transition, before or after its
    // effects left the engine.
    let points = [
        "before:3",               // RESP stored, not sent
        "before:Snapshot",        // START taken, the tree not asked for
        "before:Changes",         // plan and undo journalled, the Atomic not sent
        "after:Changes",          // the Atomic sent: the device takes it while DMS-1 is dead
        "before:Confirm",         // PREPARED stored, not sent
        "after:Confirm",          // PREPARED sent: CONFIRM arrives while DMS-1 is dead
        "before:CleanupSnapshot", // step 8 begins
        "after:Cleanup",          // step 8's commands sent
    ];

    // The devices, enrolled to DMS-1 through its command line.
    let fc = FleetConfig::new(DMS1, &format!("http://{}/dm", p1.devices), points.len());
    let fleet = Fleet::start(fc.clone(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let push = fleet.push_base().unwrap();
    let csv = dir.join("devices.csv");
    std::fs::write(&csv, fc.enrolment_csv(Some(&push))).unwrap();
    let out = Command::new(BIN)
        .args(["devices", "import"])
        .arg(&csv)
        .arg("--data-dir")
        .arg(dir.join("dms1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // DMS-2 in this process; it initiates each delegation (DMS-1 accepts by policy).
    let dms2_cfg = LabEngine {
        server_id: DMS2.into(),
        ports: p2,
        peer: (DMS1.into(), format!("https://{}", p1.peer)),
        policy: Policy::Accept,
        store_path: dir.join("dms2.db"),
        certs: certs.clone(),
        deadlines: Deadlines {
            peer_ms: 60_000,
            device_ms: 20_000,
            ..Deadlines::default()
        },
        token_ttl_ms: 60_000,
    };
    let dms2 = Engine::start(dms2_cfg.config().unwrap()).await.unwrap();

    for (i, point) in points.iter().enumerate() {
        let dev = fleet.dev_ids()[i].clone();
        let (mut child, lines) = start_dms1(&config, Some(point));
        wait_line(&lines, "resumed", Duration::from_secs(20));
        let id = dms2
            .start_delegation(StartRequest {
                peer: DMS1.into(),
                dev_id: dev.clone(),
                role: Role::Delegated,
                full: true,
                paths: Vec::new(),
                bootstrap: false,
                lease: None,
                device: Some(DeviceInfo {
                    dev_id: dev.clone(),
                    man: "dmdeleg".into(),
                    model: "SimPhone".into(),
                    notify: Some(format!("{push}/push/{dev}")),
                }),
                retry_of: None,
            })
            .await
            .unwrap();
        wait_line(&lines, "paused", Duration::from_secs(30));
        if point.starts_with("after:") {
            // Let the effects act (the device runs the commands) while DMS-1 hangs.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let stored = dms1_row(&db, &id).unwrap_or_else(|| panic!("{point}: nothing stored"));
        assert!(stored.live, "{point}: stored as {}", stored.state);
        if point.ends_with(":Changes") {
            // The plan and its undo are stored once, in the journal; the restart reads them
            // from there.
            assert!(stored.machine.contains("\"changes\":[]"), "{point}");
            assert!(stored.machine.contains("\"undo\":[]"), "{point}");
            let conn = dmdeleg::store::open(&db).unwrap();
            let journal = dmdeleg::store::delegations::journal(&conn, &id).unwrap();
            assert!(journal.len() >= 2, "{point}: {journal:?}");
        }

        let (mut child, lines) = start_dms1(&config, None);
        wait_line(&lines, "resumed", Duration::from_secs(20));
        let s2 = dms2.wait_done(&id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(s2.state, State::Completed, "{point}: DMS-2 {s2:?}");
        let end = Instant::now() + Duration::from_secs(60);
        let row = loop {
            let row = dms1_row(&db, &id).unwrap();
            if !row.live || Instant::now() > end {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(row.state, "Completed", "{point}: DMS-1 {row:?}");
        // The device: DMS-2's one account, active; DMS-1 gone from it.
        let tree = fleet.tree(&dev).await.unwrap();
        let accounts: Vec<_> = DmAcc::all(&tree)
            .into_iter()
            .flatten()
            .filter(|a| a.server_id == DMS2)
            .collect();
        assert_eq!(accounts.len(), 1, "{point}");
        assert!(!accounts[0].dormant, "{point}");
        assert!(DmAcc::find_by_server_id(&tree, DMS1).is_none(), "{point}");
        for n in tree.subtree(tree.root()) {
            assert!(!tree.props(n).acl.servers().contains(&DMS1), "{point}");
        }
        // Nothing was applied twice: one installation in DMS-1's timeline.
        let events = dms1_events(&db, &id);
        let installs = events
            .iter()
            .filter(|e| e.contains("account installed dormant"))
            .count();
        assert_eq!(installs, 1, "{point}: {events:#?}");
        assert!(events.iter().any(|e| e.contains("restarted")), "{point}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delegating_engine_killed_while_rolling_back_finishes_the_undo() {
    dmdeleg::tls::install_crypto_provider();
    let dir = scratch("undo");
    let certs = dir.join("certs");
    ensure_certs(&certs).unwrap();
    let (p1, p2) = (EnginePorts::free().unwrap(), EnginePorts::free().unwrap());
    let config = dms1_config(&dir, &certs, p1, p2);
    let db = dir.join("dms1").join("dmdeleg.db");
    let points = ["before:Undo", "after:Undo"];
    let fc = FleetConfig::new(DMS1, &format!("http://{}/dm", p1.devices), points.len());
    let fleet = Fleet::start(fc.clone(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let push = fleet.push_base().unwrap();
    let csv = dir.join("devices.csv");
    std::fs::write(&csv, fc.enrolment_csv(Some(&push))).unwrap();
    let out = Command::new(BIN)
        .args(["devices", "import"])
        .arg(&csv)
        .arg("--data-dir")
        .arg(dir.join("dms1"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let dms2 = Engine::start(
        LabEngine {
            server_id: DMS2.into(),
            ports: p2,
            peer: (DMS1.into(), format!("https://{}", p1.peer)),
            policy: Policy::Accept,
            store_path: dir.join("dms2.db"),
            certs: certs.clone(),
            deadlines: Deadlines {
                peer_ms: 60_000,
                device_ms: 60_000,
                ..Deadlines::default()
            },
            token_ttl_ms: 60_000,
        }
        .config()
        .unwrap(),
    )
    .await
    .unwrap();
    for (i, point) in points.iter().enumerate() {
        let dev = fleet.dev_ids()[i].clone();
        // The device's own first session with DMS-1 happens in the delegation; its tree now
        // is the one to get back.
        let before = fleet.tree(&dev).await.unwrap();
        let (mut child, lines) = start_dms1(&config, Some(point));
        wait_line(&lines, "resumed", Duration::from_secs(20));
        // No push address for DMS-2: it cannot wake the device, so the delegation waits at
        // step 6 with the device changed, until DMS-2's operator aborts it.
        let id = dms2
            .start_delegation(StartRequest {
                peer: DMS1.into(),
                dev_id: dev.clone(),
                role: Role::Delegated,
                full: true,
                paths: Vec::new(),
                bootstrap: false,
                lease: None,
                device: Some(DeviceInfo {
                    dev_id: dev.clone(),
                    man: String::new(),
                    model: String::new(),
                    notify: None,
                }),
                retry_of: None,
            })
            .await
            .unwrap();
        let s = dms2
            .wait_for(&id, Duration::from_secs(30), |s| {
                s.waiting_for == "the device to activate the account"
            })
            .await
            .unwrap();
        assert_eq!(
            s.waiting_for, "the device to activate the account",
            "{point}"
        );
        dms2.abort(&id).await.unwrap();
        wait_line(&lines, "paused", Duration::from_secs(30));
        if point.starts_with("after:") {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let (mut child, lines) = start_dms1(&config, None);
        wait_line(&lines, "resumed", Duration::from_secs(20));
        let end = Instant::now() + Duration::from_secs(60);
        let row = loop {
            let row = dms1_row(&db, &id).unwrap();
            if !row.live || Instant::now() > end {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(row.state, "Aborted", "{point}: DMS-1 {row:?}");
        assert_eq!(row.reason_code, Some(1001), "{point}");
        let after = fleet.tree(&dev).await.unwrap();
        let (b, a) = (normalised(&before), normalised(&after));
        assert!(b.same_as(&a), "{point}: {:?}", b.diff(&a));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
