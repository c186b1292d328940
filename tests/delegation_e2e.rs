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
