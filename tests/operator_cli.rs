//! An operator runs a headless engine (`dmdeleg serve`, a real process) with the command
//! line: `dmdeleg delegations start | accept | decline` and `dmdeleg devices import` reach it
//! through its control socket, `dmdeleg delegations show` reads its store. DMS-2 runs in this
//! process; the devices are a simulated fleet speaking SyncML DM over HTTP to both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dmdeleg::delegation::machine::{Deadlines, Role, State};
use dmdeleg::delegation::messages::DeviceInfo;
use dmdeleg::dm::mo::DmAcc;
use dmdeleg::dm::tree::DmTree;
use dmdeleg::engine::driver::StartRequest;
use dmdeleg::engine::peers::Policy;
use dmdeleg::engine::service::Engine;
use dmdeleg::lab::{DMS1, DMS2, EnginePorts, LabEngine, ensure_certs};
use dmdeleg::sim::fleet::{Fleet, FleetConfig};

mod common;
use common::serve::{BIN, normalised, scratch, start_serve, wait_line};

/// DMS-1's configuration: requests from DMS-2 wait for an operator.
fn dms1_config(dir: &Path, certs: &Path, p1: EnginePorts, p2: EnginePorts) -> PathBuf {
    common::serve::dms1_config(
        dir,
        certs,
        p1,
        p2,
        "operator",
        "peer_secs = 30\ndevice_secs = 10",
    )
}

/// Runs `dmdeleg delegations ARGS --config CONFIG` off the async runtime's threads.
async fn operator(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("delegations")
        .args(args)
        .arg("--config")
        .arg(config);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Runs `dmdeleg devices ARGS --config CONFIG` off the async runtime's threads.
async fn devices(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("devices").args(args).arg("--config").arg(config);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// After a Full delegation: DMS-2's one account, active; DMS-1 in no account and no ACL.
fn assert_handed_over(tree: &DmTree, what: &str) {
    let accounts: Vec<_> = DmAcc::all(tree)
        .into_iter()
        .flatten()
        .filter(|a| a.server_id == DMS2)
        .collect();
    assert_eq!(accounts.len(), 1, "{what}");
    assert!(!accounts[0].dormant, "{what}");
    assert!(DmAcc::find_by_server_id(tree, DMS1).is_none(), "{what}");
    for n in tree.subtree(tree.root()) {
        assert!(!tree.props(n).acl.servers().contains(&DMS1), "{what}");
    }
}

fn asked(dev: &str, push: &str) -> StartRequest {
    StartRequest {
        peer: DMS1.into(),
        dev_id: dev.to_owned(),
        role: Role::Delegated,
        full: true,
        paths: Vec::new(),
        bootstrap: false,
        lease: None,
        device: Some(DeviceInfo {
            dev_id: dev.to_owned(),
            man: "dmdeleg".into(),
            model: "SimPhone".into(),
            notify: Some(format!("{push}/push/{dev}")),
        }),
        retry_of: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_a_headless_engine_from_the_command_line() {
    dmdeleg::tls::install_crypto_provider();
    let dir = scratch("op", "cli");
    let certs = dir.join("certs");
    ensure_certs(&certs).unwrap();
    let (p1, p2) = (EnginePorts::free().unwrap(), EnginePorts::free().unwrap());
    let config = dms1_config(&dir, &certs, p1, p2);

    let fc = FleetConfig::new(DMS1, &format!("http://{}/dm", p1.devices), 4);
    let fleet = Fleet::start(fc.clone(), Some("127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap();
    let push = fleet.push_base().unwrap();
    // Three devices enrolled before the engine runs, the fourth while it runs.
    let all = fc.enrolment_csv(Some(&push));
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four devices");
    let csv = dir.join("devices.csv");
    std::fs::write(&csv, lines[..4].join("\n") + "\n").unwrap();
    let later = dir.join("later.csv");
    std::fs::write(&later, format!("{}\n{}\n", lines[0], lines[4])).unwrap();
    let out = Command::new(BIN)
        .args(["devices", "import"])
        .arg(&csv)
        .arg("--data-dir")
        .arg(dir.join("dms1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dms2 = Engine::start(
        LabEngine {
            server_id: DMS2.into(),
            ports: p2,
            peer: (DMS1.into(), format!("https://{}", p1.peer)),
            policy: Policy::Accept,
            store_path: dir.join("dms2.db"),
            certs: certs.clone(),
            deadlines: Deadlines {
                peer_ms: 30_000,
                device_ms: 10_000,
                ..Deadlines::default()
            },
            token_ttl_ms: 60_000,
        }
        .config()
        .unwrap(),
    )
    .await
    .unwrap();

    // Before the engine runs, the command line says how to start it.
    let out = operator(&config, &["accept", "00000000-0000-0000-0000-000000000000"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no engine is running here"),
        "{}",
        text(&out.stderr)
    );

    let (mut child, lines) = start_serve(&config, None);
    let serving = wait_line(&lines, "delegations resumed", Duration::from_secs(20));
    let socket = dir.join("dms1").join("control.sock");
    assert!(
        serving.contains(&format!("operators at {}", socket.display())),
        "{serving}"
    );

    // A second engine on the same data directory is refused before it touches anything.
    let second = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("already running"),
        "{}",
        text(&second.stderr)
    );

    // 1. The operator hands device 0 over, Full, and waits for the end.
    let d0 = fleet.dev_ids()[0].clone();
    let out = operator(
        &config,
        &["start", "--device", &d0, "--peer", DMS2, "--wait", "--json"],
    )
    .await;
    let reply: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).unwrap_or_else(|e| {
            panic!("{e}: {} / {}", text(&out.stdout), text(&out.stderr));
        });
    assert!(out.status.success(), "{reply}: {}", text(&out.stderr));
    assert_eq!(reply["delegation"]["state"], "Completed", "{reply}");
    assert_eq!(reply["delegation"]["role"], "Delegating", "{reply}");
    assert_handed_over(&fleet.tree(&d0).await.unwrap(), "started by the operator");

    // Refusals are plain words and a failing exit status.
    let out = operator(
        &config,
        &["start", "--device", &d0, "--peer", "dms9.example"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("dms9.example is not a configured peer"),
        "{}",
        text(&out.stderr)
    );
    let out = operator(&config, &["accept", "no-such-delegation"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no-such-delegation"),
        "{}",
        text(&out.stderr)
    );

    // 2. DMS-2 asks for device 1; the request waits for DMS-1's operator, who accepts it.
    let d1 = fleet.dev_ids()[1].clone();
    let id = dms2.start_delegation(asked(&d1, &push)).await.unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let shown = loop {
        let out = operator(&config, &["show", &id]).await;
        let said = text(&out.stdout);
        if said.contains("AwaitingOperator") || Instant::now() > end {
            break said;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(shown.contains(&format!("delegation {id}")), "{shown}");
    assert!(shown.contains("AwaitingOperator"), "{shown}");
    let out = operator(&config, &["accept", &id, "--wait"]).await;
    assert!(
        out.status.success(),
        "{} / {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("Completed"),
        "{}",
        text(&out.stdout)
    );
    let s2 = dms2.wait_done(&id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(s2.state, State::Completed, "{s2:?}");
    assert_handed_over(&fleet.tree(&d1).await.unwrap(), "accepted by the operator");
    // Its record, from the store: the timeline and the messages, in order.
    let out = operator(&config, &["show", &id]).await;
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said} / {}", text(&out.stderr));
    assert!(said.contains("Completed, step 8"), "{said}");
    let notif = said.find("received DELEGATION_NOTIF (Seq 1)");
    let confirm = said.find("received DELEGATION_CONFIRM");
    assert!(
        notif.is_some() && confirm.is_some() && notif < confirm,
        "{said}"
    );
    assert!(said.contains("timeline:"), "{said}");
    let out = operator(&config, &["show", &id, "--json", "--xml"]).await;
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["delegation"]["state"], "Completed");
    assert_eq!(
        json["delegation"]["machine"], "",
        "the machine is never shown"
    );
    assert!(json["events"].as_array().unwrap().len() > 5, "{json}");
    let start = json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["msg_type"] == "DELEGATION_START")
        .expect("the account came in a START");
    let start_xml = start["xml"].as_str().unwrap();
    assert!(
        start_xml.contains("********"),
        "secrets redacted: {start_xml}"
    );

    // 3. DMS-2 asks for device 2; the operator declines: nothing changes on the device.
    let d2 = fleet.dev_ids()[2].clone();
    let before = normalised(&fleet.tree(&d2).await.unwrap());
    let id = dms2.start_delegation(asked(&d2, &push)).await.unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = operator(&config, &["decline", &id, "--reason", "not this one"]).await;
        if out.status.success() || Instant::now() > end {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s2 = dms2.wait_done(&id, Duration::from_secs(30)).await.unwrap();
    // An operator's refusal is a cancellation (1001), as the console's Decline is.
    assert_eq!(s2.state, State::Aborted, "{s2:?}");
    assert_eq!(s2.reason, Some((1001, "not this one".into())), "{s2:?}");
    let after = normalised(&fleet.tree(&d2).await.unwrap());
    assert!(before.same_as(&after), "{:?}", before.diff(&after));

    // 4. A device enrolled while the engine runs goes through its socket: the engine knows
    //    it at once (written behind its back, it would not until a restart).
    let out = Command::new(BIN)
        .args(["devices", "import"])
        .arg(&later)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("enrolled 1 new devices, updated 0 (through the running engine"),
        "{}",
        text(&out.stdout)
    );
    // A fleet's enrolment list in one go (all or nothing), through the engine too.
    let many = dir.join("many.csv");
    let mut csv = String::from(all.lines().next().unwrap());
    csv.push('\n');
    for i in 0..2_000 {
        csv.push_str(&format!(
            "IMEI:99{i:013},DIGEST,user{i},client-secret-{i},{DMS1},server-secret-{i},http://127.0.0.1:9/push/{i}\n"
        ));
    }
    std::fs::write(&many, csv).unwrap();
    let out = devices(&config, &["import", many.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("enrolled 2000 new devices, updated 0 (through the running engine"),
        "{}",
        text(&out.stdout)
    );
    let d3 = fleet.dev_ids()[3].clone();
    let out = operator(
        &config,
        &["start", "--device", &d3, "--peer", DMS2, "--wait"],
    )
    .await;
    assert!(
        out.status.success(),
        "{} / {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_handed_over(&fleet.tree(&d3).await.unwrap(), "enrolled while running");

    // 5. Un-enrolling: refused while the device is in a delegation, done through the engine
    //    otherwise, and the engine forgets it at once.
    let id = dms2.start_delegation(asked(&d2, &push)).await.unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = devices(&config, &["remove", &d2]).await;
        if text(&out.stderr).contains("1003 Busy") || Instant::now() > end {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("is already in delegation {id}")),
        "{}",
        text(&out.stderr)
    );
    let out = operator(&config, &["decline", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = devices(&config, &["remove", &d3]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("through the running engine"),
        "{}",
        text(&out.stdout)
    );
    let out = operator(&config, &["start", "--device", &d3, "--peer", DMS2]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not enrolled on this server"),
        "{}",
        text(&out.stderr)
    );

    // 6. Peers, changed while the engine runs.
    let peers = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("peers").args(args).arg("--config").arg(&config);
        cmd.output().unwrap()
    };
    let out = peers(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("configured"),
        "{}",
        text(&out.stdout)
    );
    let pki = dir.join("dms3-pki");
    let made = Command::new(BIN)
        .args(["certs", "init"])
        .arg(&pki)
        .args(["--name", "dms3.example"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let cert = pki.join("dms3.example.pem");
    let out = peers(&[
        "add",
        "--server-id",
        "dms3.example",
        "--url",
        "https://127.0.0.1:7443",
        "--cert",
        cert.to_str().unwrap(),
        "--policy",
        "decline",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = peers(&["list", "--json"]);
    let listed: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let three = listed
        .iter()
        .find(|p| p["server_id"] == "dms3.example")
        .expect("the added peer is listed");
    assert_eq!(three["added"], true);
    assert_eq!(three["policy"], "decline");
    assert_eq!(three["fingerprint"].as_str().unwrap().len(), 95, "{three}");
    let out = peers(&["remove", DMS2]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("comes from the configuration file"),
        "{}",
        text(&out.stderr)
    );
    let out = peers(&["remove", "dms3.example"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("dms3.example"),
        "{}",
        text(&out.stdout)
    );
    let out = peers(&[
        "add",
        "--server-id",
        "dms4.example",
        "--url",
        "https://127.0.0.1:7443",
        "--cert",
        "/nonexistent/dms4.pem",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot read the certificate /nonexistent/dms4.pem"),
        "{}",
        text(&out.stderr)
    );

    // Stopped, the engine takes its socket with it.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    assert!(!socket.exists(), "the socket file is removed");
    // With no engine running, the peers it would start with still list.
    let out = peers(&["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no engine is running"),
        "{}",
        text(&out.stderr)
    );
    let listed = text(&out.stdout);
    assert!(
        listed.contains(DMS2) && listed.contains("configured"),
        "{listed}"
    );
    assert!(!listed.contains("dms3.example"), "removed before: {listed}");
    // With no engine running, a removal goes to the database; the history stays.
    let out = devices(&config, &["remove", &d0]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let conn = dmdeleg::store::open(&dir.join("dms1").join("dmdeleg.db")).unwrap();
    let enrolled: Vec<String> = dmdeleg::store::devices::load_all_summaries(&conn)
        .unwrap()
        .into_iter()
        .map(|r| r.dev_id)
        .collect();
    assert!(
        !enrolled.contains(&d0) && !enrolled.contains(&d3),
        "{enrolled:?}"
    );
    assert_eq!(enrolled.len(), 2 + 2_000, "{}", enrolled.len());
    let history = dmdeleg::store::delegations::history(
        &conn,
        &dmdeleg::store::delegations::HistoryFilter {
            dev_id: Some(d0.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(history.len(), 1, "its delegation is still on record");
    let out = devices(&config, &["remove", &d0]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not enrolled"),
        "{}",
        text(&out.stderr)
    );
    dms2.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
