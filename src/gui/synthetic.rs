//! Large made-up data for the console's benchmark and view tests: many devices, many
//! delegations, a big DM tree. Nothing here talks to an engine.

use std::sync::Arc;

use crate::delegation::machine::{Role, State};
use crate::dm::acl::Acl;
use crate::dm::props::Format;
use crate::dm::tree::{DmTree, NodeProps};
use crate::dm::uri::NodeUri;

use super::model::*;
use super::tree::TreeModel;

/// `n` device rows.
pub fn devices(n: usize, now_ms: i64) -> Vec<DeviceRow> {
    (0..n)
        .map(|i| DeviceRow {
            dev_id: format!("IMEI:{:015}", 350_000_000_000_000u64 + i as u64),
            man: ["dmdeleg", "Acme", "Globex"][i % 3].to_owned(),
            model: format!("SimPhone {}", i % 17),
            last_seen_ms: Some(now_ms - (i as i64 % 86_400) * 1000),
            managers: if i % 4 == 0 {
                "dms1.example, dms2.example".into()
            } else {
                "dms1.example".into()
            },
            nodes: 60,
        })
        .collect()
}

/// `n` delegations in every state.
pub fn delegations(n: usize, now_ms: i64) -> Vec<DelegationItem> {
    (0..n)
        .map(|i| {
            let state = STATES[i % STATES.len()];
            DelegationItem {
                id: format!("{:08x}-0000-4000-8000-{:012x}", i, i),
                role: if i % 5 == 0 {
                    Role::Delegated
                } else {
                    Role::Delegating
                },
                peer: "dms2.example".into(),
                dev_id: format!("IMEI:{:015}", 350_000_000_000_000u64 + i as u64),
                full: i % 2 == 0,
                bootstrap: i % 3 == 0,
                paths: if i % 2 == 0 {
                    Vec::new()
                } else {
                    vec!["./Vendor/Enterprise".into()]
                },
                state,
                step: (i % 8) as u8 + 1,
                waiting_for: if state.is_terminal() {
                    "nothing".into()
                } else {
                    "the device to take the changes".into()
                },
                reason: (state == State::Failed)
                    .then(|| (3001, "the device refused a change with status 500".into())),
                created_ms: now_ms - i as i64 * 1000,
                updated_ms: now_ms - i as i64 * 1000 + 500,
                deadline: None,
                retry_of: None,
                unsent: 0,
            }
        })
        .collect()
}

/// A DM tree of about `n` nodes: 100 subtrees under `./Vendor/Data`, each with leaves, ACLs
/// naming three servers here and there.
pub fn tree(n: usize) -> DmTree {
    let mut t = DmTree::with_limits(crate::dm::tree::TreeLimits {
        max_nodes: n + 1000,
        ..Default::default()
    });
    let uri = |s: &str| NodeUri::parse(s).unwrap_or_default();
    let acls = [
        "Get=dms1.example&Replace=dms1.example",
        "Add=dms1.example+dms2.example&Get=*&Replace=dms2.example",
        "Get=dms1.example+dms3.example&Exec=dms3.example",
    ];
    let groups = 100;
    let per = (n / groups).max(2) - 1;
    for g in 0..groups {
        let base = format!("./Vendor/Data/G{g:03}");
        let acl = Acl::parse(acls[g % acls.len()]).unwrap_or_default();
        let _ = t.ensure_interior(&uri(&base), NodeProps::interior().with_acl(acl));
        for k in 0..per {
            let _ = t.put_leaf(
                &uri(&format!("{base}/L{k:04}")),
                format!("value {g}.{k}").into_bytes(),
                NodeProps::leaf(Format::Chr, "text/plain"),
            );
        }
    }
    t
}

/// A snapshot with one server holding `devices` devices and `delegations` delegations.
pub fn snapshot(devices_n: usize, delegations_n: usize) -> Snapshot {
    let now = crate::engine::driver::now_ms();
    Snapshot {
        version: 2,
        phase: Phase::Ready,
        servers: vec![ServerView {
            server_id: "dms1.example".into(),
            label: "DMS-1".into(),
            devices_url: "http://127.0.0.1:8080/dm".into(),
            peer_url: Some("https://127.0.0.1:7443".into()),
            devices: Arc::new(devices(devices_n, now).into()),
            delegations: Arc::new(delegations(delegations_n, now).into()),
            peers: Arc::new(vec![PeerView {
                server_id: "dms2.example".into(),
                url: "https://127.0.0.1:7444".into(),
                policy: "accept".into(),
                auth: "CA-issued certificate naming dms2.example".into(),
                ..PeerView::default()
            }]),
        }],
        bulk: None,
        lab: false,
    }
}

/// The big tree as the console shows it.
pub fn tree_model(n: usize) -> Arc<TreeModel> {
    Arc::new(TreeModel::build("IMEI:350000000000000", &tree(n), None))
}
