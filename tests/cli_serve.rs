//! The binary itself: `dmdeleg demo` runs the two-server lab end to end and prints its figures,
//! `dmdeleg serve` refuses a configuration naming a missing file, starts with a good one and
//! stops cleanly on SIGTERM, and `dmdeleg delegations list` reads what a server stored.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_dmdeleg");

mod common;

fn scratch(name: &str) -> PathBuf {
    common::serve::scratch("cli", name)
}

fn dmdeleg(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run dmdeleg")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The demo's last line, checked against its fixed shape; returns (delegated, failed, rolled
/// back).
fn last_line_figures(stdout: &str) -> (usize, usize, usize) {
    let last = stdout.lines().last().expect("some output");
    let rest = last.strip_prefix("demo: ").expect(last);
    let (counts, rest) = rest.split_once("; ").expect(last);
    let (rate, rss) = rest.split_once("; ").expect(last);
    let n: Vec<usize> = counts
        .split(", ")
        .zip([" delegated", " failed", " rolled back"])
        .map(|(part, word)| part.strip_suffix(word).expect(last).parse().expect(last))
        .collect();
    assert_eq!(n.len(), 3, "{last}");
    let rate = rate.strip_suffix(" delegations/s").expect(last);
    let (_, decimals) = rate.split_once('.').expect(last);
    assert_eq!(decimals.len(), 1, "one decimal: {last}");
    rate.parse::<f64>().expect(last);
    let mb = rss
        .strip_prefix("peak RSS ")
        .and_then(|r| r.strip_suffix(" MB"))
        .expect(last);
    assert!(mb.parse::<u64>().expect(last) > 0, "{last}");
    (n[0], n[1], n[2])
}

#[test]
fn demo_delegates_three_devices_and_says_so_last() {
    let out = dmdeleg(&["demo", "--devices", "3"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(last_line_figures(&stdout), (3, 0, 0), "{stdout}");
    assert!(stdout.contains("1 notification"), "{stdout}");
    // A Full DMAcc delegation takes three DM sessions with the device, each after a push:
    // DMS-1 prepares it, DMS-2 takes over, DMS-1 removes itself.
    assert!(
        stdout.contains("devices, per delegation: 3.0 DM sessions, 3.0 pushes, "),
        "{stdout}"
    );
    let cpu = stdout
        .lines()
        .find_map(|l| l.strip_prefix("cpu, per delegation: "))
        .expect(&stdout);
    let ms: f64 = cpu
        .split(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect(cpu);
    assert!(ms > 0.0 && cpu.contains(" cores busy"), "{cpu}");
}

#[test]
fn demo_partial_bootstrap_then_the_store_lists_it() {
    let dir = scratch("demo-partial");
    let out = dmdeleg(&[
        "demo",
        "--devices",
        "2",
        "--bootstrap",
        "--partial",
        "./Vendor/Enterprise",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(last_line_figures(&stdout), (2, 0, 0), "{stdout}");

    let dms1 = dir.join("dms1.example");
    let out = dmdeleg(&[
        "delegations",
        "list",
        "--data-dir",
        dms1.to_str().unwrap(),
        "--state",
        "completed",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["state"], "Completed");
        assert_eq!(r["full"], false);
        assert_eq!(r["bootstrap"], true);
        assert_eq!(r["paths"][0], "./Vendor/Enterprise");
    }
    let out = dmdeleg(&[
        "delegations",
        "list",
        "--data-dir",
        dms1.to_str().unwrap(),
        "--state",
        "failed",
    ]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("0 delegations ("));

    // The audit trail: an operator started each, the engine recorded each end.
    let dev = rows[0]["dev_id"].as_str().unwrap();
    let out = dmdeleg(&[
        "audit",
        "--data-dir",
        dms1.to_str().unwrap(),
        "--device",
        dev,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let said: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["actor"].as_str().unwrap(), l["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [("operator", "start"), ("engine", "finish")],
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l["dev_id"] == dev));
    let out = dmdeleg(&[
        "audit",
        "--data-dir",
        dms1.to_str().unwrap(),
        "--until",
        "2000-01-01",
    ]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("0 lines ("),
        "{}",
        text(&out.stdout)
    );
    let out = dmdeleg(&[
        "audit",
        "--data-dir",
        dms1.to_str().unwrap(),
        "--since",
        "yesterday",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--since `yesterday`: write YYYY-MM-DD"),
        "{}",
        text(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration with every section, certificates from `pki` (relative to the file).
fn write_config(dir: &Path, peer_cert: &str) -> PathBuf {
    let file = dir.join("dms1.toml");
    let toml = format!(
        r#"server_id = "dms1.example"
data_dir = "data"

[devices]
listen = "127.0.0.1:{}"

[peer_endpoint]
listen = "127.0.0.1:{}"
cert = "pki/dms1.example.pem"
key = "pki/dms1.example.key"
ca = ["pki/ca.pem"]

[bootstrap]
listen = "127.0.0.1:{}"

[deadlines]
peer_secs = 30

[[peers]]
server_id = "dms2.example"
url = "https://127.0.0.1:{}"
cert = "{peer_cert}"
policy = "accept"
"#,
        free_port(),
        free_port(),
        free_port(),
        free_port()
    );
    std::fs::write(&file, toml).unwrap();
    file
}

fn make_certs(dir: &Path) {
    let pki = dir.join("pki");
    let out = dmdeleg(&[
        "certs",
        "init",
        pki.to_str().unwrap(),
        "--name",
        "dms1.example",
        "--name",
        "dms2.example",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn serve_refuses_a_missing_peer_certificate_and_names_the_key() {
    let dir = scratch("serve-missing");
    make_certs(&dir);
    let config = write_config(&dir, "pki/nowhere.pem");
    let out = dmdeleg(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("peers[0].cert") && stderr.contains("line 22"),
        "{stderr}"
    );
    assert!(stderr.contains("nowhere.pem"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_starts_prints_its_urls_and_stops_on_sigterm() {
    let dir = scratch("serve-good");
    make_certs(&dir);
    let config = write_config(&dir, "pki/dms2.example.pem");
    let mut child = Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Warnings may come first; the line that says it serves comes once everything listens.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let first = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(" serving ") => break line,
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("serve did not say it serves ({e}): {seen:?}");
            }
        }
    };
    assert!(
        first.contains("devices at http://127.0.0.1:")
            && first.contains("peers at https://127.0.0.1:")
            && first.contains("bootstrap at https://127.0.0.1:")
            && first.contains("0 delegations resumed"),
        "{first}"
    );
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    reader.join().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(exit.success(), "{exit:?}: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    let db = dir.join("data").join("dmdeleg.db");
    assert!(db.exists());
    // Stopped, the database file alone holds everything: a copy of it is a whole backup.
    let wal = std::fs::metadata(dir.join("data").join("dmdeleg.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the write-ahead log was folded into the file");
    let copy = dir.join("backup.db");
    std::fs::copy(&db, &copy).unwrap();
    let tables: i64 = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('delegations', 'devices', 'events')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 3, "the copy has the schema");
    let _ = std::fs::remove_dir_all(&dir);
}
