//! The console driven headlessly with egui_kittest, on the real two-engine lab: the app's
//! own backend starts DMS-1, DMS-2 and simulated devices; the tests click and type as an
//! operator would and read what the views show.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dmdeleg::delegation::machine::{Role, State};
use dmdeleg::delegation::messages::DeviceInfo;
use dmdeleg::dm::mo::DmAcc;
use dmdeleg::dm::uri::NodeUri;
use dmdeleg::engine::driver::StartRequest;
use dmdeleg::engine::peers::Policy;
use dmdeleg::gui::backend::Launch;
use dmdeleg::gui::model::DelegationItem;
use dmdeleg::gui::{ConsoleApp, View};
use dmdeleg::lab::{DMS1, DMS2, Lab, LabOptions};
use dmdeleg::sim::device::DeviceFaults;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

const LONG: Duration = Duration::from_secs(60);

mod common;

fn scratch(name: &str) -> PathBuf {
    common::serve::scratch("gui", name)
}

fn console(opts: LabOptions) -> Harness<'static, ConsoleApp> {
    let mut h = Harness::builder()
        .with_size([1500.0, 940.0])
        .build_eframe(move |cc| ConsoleApp::start(cc, Launch::Lab(opts)));
    wait(&mut h, "the lab to start", |app| {
        app.snapshot().servers.len() == 2
            && !app.snapshot().servers[0].devices.is_empty()
            && app.snapshot().servers[0]
                .devices
                .iter()
                .all(|d| d.nodes > 0)
    });
    h
}

/// Steps the app until `pred` holds (the backend works in its own thread meanwhile).
fn wait(h: &mut Harness<'_, ConsoleApp>, what: &str, pred: impl Fn(&ConsoleApp) -> bool) {
    let end = Instant::now() + LONG;
    loop {
        h.step();
        if pred(h.state()) {
            h.step();
            return;
        }
        if Instant::now() > end {
            let app = h.state();
            let events: Vec<String> = app
                .delegations
                .detail()
                .map(|d| {
                    d.steps
                        .iter()
                        .flat_map(|s| s.events.iter().map(|e| format!("{} {}", e.step, e.text)))
                        .collect()
                })
                .unwrap_or_default();
            let items: Vec<String> = app
                .snapshot()
                .servers
                .iter()
                .flat_map(|s| {
                    s.delegations.iter().map(move |d| {
                        format!(
                            "{} {} {:?} {} {:?}",
                            s.server_id, d.id, d.state, d.waiting_for, d.reason
                        )
                    })
                })
                .collect();
            panic!(
                "timed out waiting for {what}; notices: {:#?}\ntimeline: {events:#?}\ndelegations: {items:#?}",
                app.notices()
            );
        }
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// Clicks the widget named `label` and lets the frame that handles it run.
fn click(h: &mut Harness<'_, ConsoleApp>, label: &str) {
    h.get_by_label(label).click();
    h.run_steps(3);
}

fn lab(
    h: &Harness<'_, ConsoleApp>,
) -> (
    std::sync::Arc<dmdeleg::gui::backend::Deployment>,
    tokio::runtime::Handle,
) {
    let b = h.state().backend();
    (b.deployment().unwrap(), b.runtime().unwrap())
}

fn with_lab<T>(h: &Harness<'_, ConsoleApp>, f: impl AsyncFnOnce(&Lab) -> T) -> T {
    let (dep, rt) = lab(h);
    rt.block_on(async { f(dep.lab().unwrap()).await })
}

fn item(app: &ConsoleApp, server: usize, id: &str) -> Option<DelegationItem> {
    app.snapshot().servers.get(server)?.delegation(id).cloned()
}

fn first_device(h: &Harness<'_, ConsoleApp>, i: usize) -> String {
    h.state().snapshot().servers[0].devices[i].dev_id.clone()
}

/// Selects a device in the Devices view and waits for its tree.
fn select_device(h: &mut Harness<'_, ConsoleApp>, dev: &str) {
    click(h, "Devices");
    click(h, dev);
    let d = dev.to_owned();
    wait(h, "the device's tree", move |app| {
        app.devices.tree().is_some_and(|t| t.dev_id == d)
    });
}

/// Ticks `path` (or chooses Full), waits for the preview, clicks Delegate; returns the
/// delegation's id once the console opened its timeline.
fn delegate(h: &mut Harness<'_, ConsoleApp>, path: Option<&str>) -> String {
    match path {
        Some(p) => click(h, &format!("Delegate {p}")),
        None => click(h, "Full: the whole device"),
    }
    wait(h, "the preview", |app| {
        matches!(app.devices.preview(), Some(Ok(_)))
    });
    if let Some(p) = path {
        let preview = h.state().devices.preview().unwrap().clone().unwrap();
        assert_eq!(preview.added, vec![format!("./DMAcc/{DMS2}")]);
        assert!(
            preview
                .acls
                .iter()
                .any(|(uri, _, after)| uri == p && after.contains(DMS2)),
            "{preview:?}"
        );
        assert!(!preview.undo.is_empty());
    }
    click(h, "Delegate");
    wait(h, "the delegation to start", |app| {
        app.view == View::Delegations && app.delegations.selected.is_some()
    });
    h.state().delegations.selected.clone().unwrap()
}

fn wait_state(h: &mut Harness<'_, ConsoleApp>, server: usize, id: &str, state: State) {
    let id2 = id.to_owned();
    wait(
        h,
        &format!("{id} to be {state:?} on server {server}"),
        move |app| {
            item(app, server, &id2).is_some_and(|d| d.state == state && d.waiting_for == "nothing")
        },
    );
}

fn timeline_has(app: &ConsoleApp, text: &str) -> bool {
    app.delegations.detail().is_some_and(|d| {
        d.steps
            .iter()
            .any(|s| s.events.iter().any(|e| e.text.contains(text)))
    })
}

#[test]
fn select_tick_delegate_and_watch_the_timeline_complete_then_retry_a_failed_one() {
    let mut h = console(LabOptions::new(&scratch("delegate"), 2));
    h.check_accessibility();
    let dev = first_device(&h, 0);
    select_device(&mut h, &dev);
    h.check_accessibility();
    let id = delegate(&mut h, Some("./Vendor/Enterprise"));
    wait_state(&mut h, 0, &id, State::Completed);
    let id2 = id.clone();
    wait(&mut h, "the timeline to show Completed", move |app| {
        app.delegations
            .detail()
            .is_some_and(|d| d.id == id2 && d.state == "Completed")
    });
    h.check_accessibility();
    let detail = h.state().delegations.detail().unwrap().clone();
    for s in [1, 2, 3, 4, 5, 7] {
        assert!(
            detail.steps[s - 1].started_ms.is_some(),
            "step {s} has a time: {:?}",
            detail.steps
        );
    }
    assert!(!detail.messages.is_empty(), "the messages exchanged");
    assert!(detail.messages[0].xml.contains("\n  "), "pretty-printed");
    // The commands are those the console saw in the engine's journal while it ran (the
    // engine empties it as the device takes it); whatever it saw was taken.
    assert!(
        detail
            .commands
            .iter()
            .filter(|c| c.kind == "change")
            .all(|c| c.status == "200 OK"),
        "{:?}",
        detail.commands
    );
    assert!(h.query_by_label("Abort…").is_some());
    // The device really is shared now.
    let tree = with_lab(&h, async |lab| lab.fleet.tree(&dev).await.unwrap());
    assert!(tree.has_right(
        &NodeUri::parse("./Vendor/Enterprise").unwrap(),
        DMS2,
        dmdeleg::dm::acl::AclCmd::Replace
    ));

    // A device that refuses changes under ./Vendor (the lab's fault switch): the delegation
    // fails and the device keeps its tree.
    let dev = first_device(&h, 1);
    let before = with_lab(&h, async |lab| lab.fleet.tree(&dev).await.unwrap());
    select_device(&mut h, &dev);
    click(
        &mut h,
        "Lab: this device refuses changes under ./Vendor (HTTP 500)",
    );
    wait(&mut h, "the fault to be set", |app| {
        app.notices().iter().any(|n| n.text.contains("now refuses"))
    });
    let failed = delegate(&mut h, Some("./Vendor/Enterprise"));
    wait_state(&mut h, 0, &failed, State::Failed);
    wait(&mut h, "the failure in the timeline", |app| {
        timeline_has(app, "the device refused a change with status 500")
    });
    // The device took none of it (its changes are atomic): nothing to undo.
    let after = with_lab(&h, async |lab| lab.fleet.tree(&dev).await.unwrap());
    assert!(DmAcc::find_by_server_id(&after, DMS2).is_none());
    let ent = NodeUri::parse("./Vendor/Enterprise").unwrap();
    let (b, a) = (before.find(&ent).unwrap(), after.find(&ent).unwrap());
    assert_eq!(before.props(b).acl, after.props(a).acl);
    let d = item(h.state(), 0, &failed).unwrap();
    assert!(d.reason.is_some(), "a failure says why: {d:?}");
    // Retry once the device behaves.
    with_lab(&h, async |lab| {
        lab.fleet.set_faults(&dev, DeviceFaults::default()).await
    });
    click(&mut h, "Retry");
    let f2 = failed.clone();
    wait(&mut h, "the new attempt to open", move |app| {
        app.delegations.selected.as_deref().is_some_and(|s| s != f2)
    });
    let retry = h.state().delegations.selected.clone().unwrap();
    wait_state(&mut h, 0, &retry, State::Completed);
    assert_eq!(
        item(h.state(), 0, &retry).unwrap().retry_of.as_deref(),
        Some(failed.as_str())
    );
}

#[test]
fn abort_a_delegation_held_midway_and_see_the_rollback() {
    let mut h = console(LabOptions::new(&scratch("abort"), 1));
    let dev = first_device(&h, 0);
    let before = with_lab(&h, async |lab| lab.fleet.tree(&dev).await.unwrap());
    // DMS-2 asks for the device without its push address: DMS-1 installs the account and
    // waits at step 6 for a session that never comes.
    let id = with_lab(&h, async |lab| {
        lab.dms2
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
                    notify: None,
                }),
                retry_of: None,
            })
            .await
            .unwrap()
    });
    let id2 = id.clone();
    wait(
        &mut h,
        "DMS-1 to wait for the peer's confirmation",
        move |app| item(app, 0, &id2).is_some_and(|d| d.waiting_for == "the peer to confirm"),
    );
    click(&mut h, "Delegations");
    click(&mut h, &format!("Open {id}"));
    wait(&mut h, "the timeline", |app| {
        app.delegations.detail().is_some()
    });
    // The account is on the device now.
    let mid = with_lab(&h, async |lab| lab.fleet.tree(&dev).await.unwrap());
    assert!(DmAcc::find_by_server_id(&mid, DMS2).is_some());
    click(&mut h, "Abort…");
    assert!(
        h.query_by_label("Abort this delegation?").is_some(),
        "asks first"
    );
    h.check_accessibility();
    click(&mut h, "Abort delegation");
    wait_state(&mut h, 0, &id, State::Aborted);
    wait(&mut h, "the rollback in the timeline", |app| {
        timeline_has(app, "the device is back as it was")
    });
    let d = item(h.state(), 0, &id).unwrap();
    assert_eq!(d.reason.as_ref().map(|r| r.0), Some(1001), "{d:?}");
    let after = with_lab(&h, async |lab| lab.fleet.tree(&dev).await.unwrap());
    assert!(
        DmAcc::find_by_server_id(&after, DMS2).is_none(),
        "the account is gone"
    );
    assert_eq!(
        DmAcc::find_by_server_id(&before, DMS1).map(|a| a.server_id),
        DmAcc::find_by_server_id(&after, DMS1).map(|a| a.server_id)
    );
    let detail = h.state().delegations.detail().unwrap().clone();
    assert!(
        detail
            .commands
            .iter()
            .any(|c| c.kind == "undo" && c.status.starts_with("200")),
        "{:?}",
        detail.commands
    );
}

#[test]
fn accept_an_incoming_request_then_filter_and_export_the_audit() {
    let mut opts = LabOptions::new(&scratch("accept"), 2);
    opts.dms2_policy = Policy::Operator;
    let mut h = console(opts);
    let dev = first_device(&h, 0);
    select_device(&mut h, &dev);
    let id = delegate(&mut h, Some("./Vendor/Enterprise"));
    // DMS-2 holds it for a decision.
    click(&mut h, "DMS-2 dms2.example");
    click(&mut h, "Requests");
    let id2 = id.clone();
    wait(&mut h, "the request on DMS-2", move |app| {
        item(app, 1, &id2).is_some_and(|d| d.state == State::AwaitingOperator)
    });
    h.run_steps(2);
    assert!(
        h.query_by_label(&format!("{DMS1} asks about {dev}"))
            .is_some()
    );
    h.check_accessibility();
    click(&mut h, "Accept");
    wait_state(&mut h, 1, &id, State::Completed);
    wait_state(&mut h, 0, &id, State::Completed);

    // A second device, declined with a reason.
    click(&mut h, "DMS-1 dms1.example");
    let other = first_device(&h, 1);
    select_device(&mut h, &other);
    let declined = delegate(&mut h, None);
    click(&mut h, "DMS-2 dms2.example");
    click(&mut h, "Requests");
    let d2 = declined.clone();
    wait(&mut h, "the second request", move |app| {
        item(app, 1, &d2).is_some_and(|d| d.state == State::AwaitingOperator)
    });
    h.run_steps(2);
    let reason = h.get_by_role_and_label(egui::Role::TextInput, "Reason");
    reason.focus();
    h.run_steps(1);
    h.get_by_role_and_label(egui::Role::TextInput, "Reason")
        .type_text("not this one");
    h.run_steps(2);
    click(&mut h, "Decline");
    wait_state(&mut h, 0, &declined, State::Aborted);
    let d = item(h.state(), 0, &declined).unwrap();
    assert!(
        d.reason
            .as_ref()
            .is_some_and(|r| r.1.contains("not this one")),
        "{d:?}"
    );

    // The audit of DMS-1, filtered by the first device, exported and read back.
    click(&mut h, "DMS-1 dms1.example");
    click(&mut h, "Audit");
    wait(&mut h, "the audit lines", |app| {
        app.audit.rows().is_some_and(|r| !r.is_empty())
    });
    let all = h.state().audit.rows().unwrap().len();
    let field = h.get_by_role_and_label(egui::Role::TextInput, "Device");
    field.focus();
    h.run_steps(1);
    h.get_by_role_and_label(egui::Role::TextInput, "Device")
        .type_text(&dev);
    h.run_steps(2);
    click(&mut h, "Apply filter");
    let dev2 = dev.clone();
    wait(&mut h, "the filtered lines", move |app| {
        app.audit.rows().is_some_and(|r| {
            r.len() < all && !r.is_empty() && r.iter().all(|a| a.dev_id.as_deref() == Some(&dev2))
        })
    });
    assert!(h.state().audit.chart().is_some());
    let out = scratch("accept-export");
    for (button, file) in [("Export CSV", "audit.csv"), ("Export JSON", "audit.json")] {
        let path = out.join(file);
        let field = h.get_by_role_and_label(egui::Role::TextInput, "Export to");
        field.set_text_value_accesskit(&path.display().to_string());
        h.run_steps(2);
        assert_eq!(h.state().audit.export_path, path.display().to_string());
        click(&mut h, button);
        let p = path.clone();
        wait(&mut h, "the export", move |_| p.exists());
        // The notice comes after the file is written.
        wait(&mut h, "the export notice", |app| {
            app.notices().iter().any(|n| n.text.starts_with("Exported"))
        });
    }
    let csv = std::fs::read_to_string(out.join("audit.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("at,at_ms,actor,action"));
    let body: Vec<&str> = lines.collect();
    assert!(!body.is_empty());
    assert!(body.iter().all(|l| l.contains(&dev)), "{csv}");
    assert!(body.iter().any(|l| l.contains(&id)));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("audit.json")).unwrap()).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), body.len());
    assert!(arr.iter().all(|a| a["dev_id"] == dev.as_str()));
    assert!(arr.iter().any(|a| a["actor"] == "operator"));
}

#[test]
fn peers_show_fingerprint_expiry_and_reachability_and_themes_switch() {
    let mut h = console(LabOptions::new(&scratch("peers"), 1));
    click(&mut h, "Peers");
    wait(&mut h, "the peer check", |app| {
        app.snapshot().servers[0].peers.iter().all(|p| {
            matches!(p.reach, dmdeleg::gui::model::Reach::Up(_)) && p.fingerprint.is_some()
        })
    });
    let p = h.state().snapshot().servers[0].peers[0].clone();
    assert_eq!(p.server_id, DMS2);
    assert!(p.expires_ms.unwrap() > dmdeleg::engine::driver::now_ms());
    h.check_accessibility();
    // Light and dark.
    click(&mut h, "Light");
    assert!(!h.state().dark);
    assert!(!h.state().snapshot().servers.is_empty());
    click(&mut h, "Dark");
    assert!(h.state().dark);
    // Keyboard: Ctrl+2 opens Delegations.
    h.key_press_modifiers(egui::Modifiers::CTRL, egui::Key::Num2);
    h.run_steps(2);
    assert_eq!(h.state().view, View::Delegations);
}

#[test]
fn peers_view_adds_a_peer_from_its_certificate_file_and_removes_it() {
    let dir = scratch("add-peer");
    let mut h = console(LabOptions::new(&dir, 1));
    click(&mut h, "Peers");
    let me3 = dmdeleg::tls::self_signed("dms3.example", &["dms3.example", "127.0.0.1"]).unwrap();
    let cert = dir.join("dms3.pem");
    std::fs::write(&cert, &me3.cert_pem).unwrap();
    let fingerprint = dmdeleg::tls::cert_fingerprint_sha256(&me3.cert_der);
    let type_in = |h: &mut Harness<'_, ConsoleApp>, label: &str, text: &str| {
        h.get_by_role_and_label(egui::Role::TextInput, label)
            .set_text_value_accesskit(text);
        h.run_steps(2);
    };
    type_in(&mut h, "Peer ServerID", "dms3.example");
    type_in(&mut h, "Peer URL", "http://127.0.0.1:7443");
    // A file that is not there: the reason, in words.
    type_in(
        &mut h,
        "Certificate file",
        &dir.join("nowhere.pem").display().to_string(),
    );
    click(&mut h, "Read the certificate");
    wait(&mut h, "the read to fail", |app| {
        matches!(&app.peers.cert, Some((_, Err(_))))
    });
    let why = h.state().peers.cert.clone().unwrap().1.unwrap_err();
    assert!(why.contains("cannot read the certificate file"), "{why}");
    assert!(h.query_by_label_contains("nowhere.pem").is_some());
    // The real file: its fingerprint and expiry show before anything is added.
    type_in(&mut h, "Certificate file", &cert.display().to_string());
    click(&mut h, "Read the certificate");
    wait(&mut h, "the certificate", |app| {
        matches!(&app.peers.cert, Some((_, Ok(_))))
    });
    assert!(
        h.query_by_label(&fingerprint).is_some(),
        "the fingerprint shows"
    );
    let c = h.state().peers.cert.clone().unwrap().1.unwrap();
    assert!(c.expires_ms > dmdeleg::engine::driver::now_ms());
    // (The lab's own certificates, made the same day, may show the same expiry.)
    assert!(h.query_all_by_label_contains(&c.expires).next().is_some());
    // An http URL is refused by the engine, in words.
    click(&mut h, "accept at once");
    click(&mut h, "Add peer");
    wait(&mut h, "the refusal", |app| app.peers.add_error.is_some());
    let e = h.state().peers.add_error.clone().unwrap();
    assert!(e.contains("must be an https URL"), "{e}");
    assert!(h.query_by_label_contains("Not added").is_some());
    // With an https URL it is added and listed, pinned to that certificate.
    type_in(&mut h, "Peer URL", "https://127.0.0.1:7443");
    click(&mut h, "Add peer");
    wait(&mut h, "the peer in the list", |app| {
        app.snapshot().servers[0]
            .peers
            .iter()
            .any(|p| p.server_id == "dms3.example")
    });
    let p = h.state().snapshot().servers[0]
        .peers
        .iter()
        .find(|p| p.server_id == "dms3.example")
        .cloned()
        .unwrap();
    assert_eq!(p.fingerprint.as_deref(), Some(fingerprint.as_str()));
    assert_eq!(p.policy, "accept");
    assert!(p.removable);
    assert_eq!(h.state().peers.added.as_deref(), Some("dms3.example"));
    assert!(h.state().peers.new_id.is_empty(), "the form is cleared");
    let engine_peers = with_lab(&h, async |lab| lab.dms1.peers());
    assert!(
        engine_peers
            .iter()
            .any(|p| p.info.server_id == "dms3.example")
    );
    h.check_accessibility();
    // Removed again, after a confirmation.
    click(&mut h, "Remove dms3.example");
    click(&mut h, "Yes, remove dms3.example");
    wait(&mut h, "the peer gone", |app| {
        app.snapshot().servers[0]
            .peers
            .iter()
            .all(|p| p.server_id != "dms3.example")
    });
    let engine_peers = with_lab(&h, async |lab| lab.dms1.peers());
    assert_eq!(engine_peers.len(), 1);
}

#[test]
fn bulk_delegation_shows_progress_and_stops_at_the_failure_threshold() {
    let mut h = console(LabOptions::new(&scratch("bulk"), 6));
    let devs: Vec<String> = (0..6).map(|i| first_device(&h, i)).collect();
    // The first two devices refuse any change under ./DMAcc.
    for d in &devs[..2] {
        with_lab(&h, async |lab| {
            lab.fleet
                .set_faults(
                    d,
                    DeviceFaults {
                        fail_paths: vec![NodeUri::parse("./DMAcc").unwrap()],
                        ..DeviceFaults::default()
                    },
                )
                .await
        });
    }
    select_device(&mut h, &devs[5]);
    click(&mut h, "Full: the whole device");
    click(&mut h, "Bulk delegation");
    click(&mut h, "Tick the 6 shown");
    assert_eq!(h.state().devices.bulk.len(), 6);
    h.get_by_label("At most at a time").set_value_accesskit(1.0);
    h.get_by_label("Stop after failures")
        .set_value_accesskit(2.0);
    h.run_steps(3);
    assert_eq!(
        (
            h.state().devices.bulk_concurrency,
            h.state().devices.bulk_max_failures
        ),
        (1, 2)
    );
    h.check_accessibility();
    click(&mut h, "Delegate 6 devices");
    wait(&mut h, "the batch to stop", |app| {
        app.snapshot().bulk.as_ref().is_some_and(|b| b.finished)
    });
    let b = h.state().snapshot().bulk.clone().unwrap();
    assert_eq!((b.started, b.failed, b.completed), (2, 2, 0), "{b:?}");
    assert!(
        b.stopped
            .as_deref()
            .is_some_and(|s| s.contains("limit of 2")),
        "{b:?}"
    );
    assert!(h.query_by_label_contains("2 of 6 done").is_some());
    // The four others, two at a time.
    for d in &devs[..2] {
        h.get_by_label(&format!("Bulk {d}")).click();
        h.run_steps(3);
    }
    assert_eq!(h.state().devices.bulk.len(), 4);
    h.get_by_label("At most at a time").set_value_accesskit(2.0);
    h.run_steps(3);
    click(&mut h, "Delegate 4 devices");
    wait(&mut h, "the second batch", |app| {
        app.snapshot()
            .bulk
            .as_ref()
            .is_some_and(|b| b.finished && b.total == 4)
    });
    let b = h.state().snapshot().bulk.clone().unwrap();
    assert_eq!(
        (b.completed, b.failed, b.stopped.clone()),
        (4, 0, None),
        "{b:?}"
    );
}

#[test]
fn a_configured_engine_opens_as_one_server_without_the_lab() {
    let dir = scratch("config");
    let port = dmdeleg::lab::free_port().unwrap();
    let text = format!(
        "server_id = \"dms9.example\"\ndata_dir = \"{}\"\n[devices]\nlisten = \"{port}\"\n",
        dir.display()
    );
    let path = dir.join("dms9.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = dmdeleg::config::Config::load(&path).unwrap();
    let engine = cfg.engine_config().unwrap();
    let socket = cfg.control_socket();
    let mut h = Harness::builder()
        .with_size([1500.0, 940.0])
        .build_eframe(move |cc| {
            ConsoleApp::start(
                cc,
                Launch::Engine {
                    config: Box::new(engine),
                    control: Some(socket),
                },
            )
        });
    wait(&mut h, "the engine to start", |app| {
        app.snapshot().servers.len() == 1
    });
    // The console's engine takes operator commands as `serve` does.
    assert!(cfg.control_socket().exists(), "the control socket");
    assert!(h.state().backend().deployment().unwrap().lab().is_none());
    assert!(h.query_by_label("dms9.example").is_some(), "the server tab");
    click(&mut h, "Peers");
    assert!(
        h.query_by_label_contains("takes part in no delegation")
            .is_some()
    );
    click(&mut h, "Devices");
    assert!(h.query_by_label("0 enrolled on dms9.example").is_some());
    h.check_accessibility();
    drop(h);
    assert!(
        !cfg.control_socket().exists(),
        "closing the console took its socket"
    );
}

/// Removing a device from the console: confirmed first, refused in plain words while the
/// device is in a delegation, then the device leaves the list and its history stays.
#[test]
fn a_device_is_removed_after_confirmation_and_refused_while_busy() {
    let dir = scratch("remove-device");
    let mut opts = LabOptions::new(&dir, 3);
    opts.dms2_policy = Policy::Operator;
    let mut h = console(opts);
    let dev = first_device(&h, 0);

    // Busy: DMS-2 holds the request for its operator, so the delegation stays live.
    select_device(&mut h, &dev);
    let id = delegate(&mut h, None);
    wait_state_running(&mut h, &id);
    select_device(&mut h, &dev);
    click(&mut h, "Remove from this server…");
    assert!(
        h.query_by_label_contains("Its credentials and cached tree leave this server")
            .is_some()
    );
    click(&mut h, &format!("Remove {dev}"));
    wait(&mut h, "the refusal", |app| {
        app.notices()
            .iter()
            .any(|n| n.text.contains("was not removed") && n.text.contains("1003 Busy"))
    });
    assert_eq!(h.state().snapshot().servers[0].devices.len(), 3);

    // Free again (DMS-2's operator declines), the removal goes through.
    with_lab(&h, async |lab| {
        lab.dms2.decline(&id, "not now").await.unwrap();
        lab.dms1.wait_done(&id, LONG).await.unwrap();
    });
    click(&mut h, "Remove from this server…");
    click(&mut h, "Cancel");
    assert_eq!(
        h.state().snapshot().servers[0].devices.len(),
        3,
        "cancelled"
    );
    click(&mut h, "Remove from this server…");
    click(&mut h, &format!("Remove {dev}"));
    wait(&mut h, "the device to leave the list", |app| {
        app.snapshot().servers[0].devices.len() == 2
    });
    assert!(
        h.query_by_label_contains("is no longer enrolled on this server")
            .is_some()
    );
    assert!(h.state().snapshot().servers[0].delegation(&id).is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until DMS-1 shows the delegation running (DMS-2's operator has it).
fn wait_state_running(h: &mut Harness<'_, ConsoleApp>, id: &str) {
    let id2 = id.to_owned();
    wait(h, "the request to wait at DMS-2", move |app| {
        item(app, 1, &id2).is_some_and(|d| d.state == State::AwaitingOperator)
    });
}

/// Closing the console stops both engines before it returns: each store's log is folded into
/// its file, so the files alone hold what the lab wrote (the enrolled devices).
#[test]
fn closing_the_console_stops_the_engines_and_leaves_complete_database_files() {
    let dir = scratch("close");
    let h = console(LabOptions::new(&dir, 3));
    drop(h);
    for (server, devices) in [("dms1.example", 3), ("dms2.example", 0)] {
        let db = dir.join(server).join("dmdeleg.db");
        let wal = std::fs::metadata(dir.join(server).join("dmdeleg.db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "{server}: the log was folded into the file");
        let copy = dir.join(format!("{server}-backup.db"));
        std::fs::copy(&db, &copy).unwrap();
        let n: i64 = rusqlite::Connection::open(&copy)
            .unwrap()
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, devices, "{server}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
