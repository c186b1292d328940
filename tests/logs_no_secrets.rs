//! Runs full delegations (DMAcc approach, then the bootstrap approach) with the real binary,
//! logging to its data directory, and searches every log line for every secret the run
//! handled: device credentials both ways, the delegated server's fresh account secrets, the
//! nonces, the private keys and the bootstrap tokens. None may appear.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use dmdeleg::lab::DMS1;
use dmdeleg::sim::fleet::FleetConfig;

const BIN: &str = env!("CARGO_BIN_EXE_dmdeleg");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dmdeleg-logs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn demo(dir: &Path, extra: &[&str]) {
    let out = Command::new(BIN)
        .args(["demo", "--devices", "3", "--dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn logs(dir: &Path) -> String {
    let mut all = String::new();
    for entry in std::fs::read_dir(dir.join("logs")).unwrap() {
        all.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    all
}

/// Secrets kept in an engine's database: credentials and nonces of its devices, and the
/// bootstrap URLs' tokens of its delegations.
fn db_secrets(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut out = Vec::new();
    let mut q = conn
        .prepare("SELECT client_secret, server_secret, client_nonce, server_nonce FROM devices")
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (c, s, cn, sn) = row.unwrap();
        out.push(c);
        out.push(s);
        for n in [cn, sn] {
            if n.len() >= 8 {
                out.push(base64::engine::general_purpose::STANDARD.encode(&n));
                out.push(n.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    let mut q = conn.prepare("SELECT machine FROM delegations").unwrap();
    let rows = q.query_map([], |r| r.get::<_, String>(0)).unwrap();
    for m in rows {
        let m = m.unwrap();
        if let Some(i) = m.find("/bootstrap/") {
            let token: String = m[i + 11..].chars().take(64).collect();
            assert_eq!(token.len(), 64);
            out.push(token);
        }
    }
    out
}

fn key_lines(certs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(certs).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "key") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                if !line.starts_with("-----") && line.len() >= 16 {
                    out.push(line.to_owned());
                }
            }
        }
    }
    out
}

#[test]
fn no_secret_reaches_the_logs() {
    for (name, extra) in [
        ("dmacc", vec![]),
        (
            "bootstrap",
            vec!["--bootstrap", "--partial", "./Vendor/Enterprise"],
        ),
    ] {
        let dir = scratch(name);
        demo(&dir, &extra);
        let text = logs(&dir);
        assert!(
            text.contains("engine started"),
            "{name}: the logs are empty"
        );
        assert!(text.contains("Completed"), "{name}: no delegation logged");
        let mut secrets = Vec::new();
        for e in FleetConfig::new(DMS1, "http://127.0.0.1:1/dm", 3).enrolments(None) {
            secrets.push(e.client_secret);
            secrets.push(e.server_secret);
        }
        for db in ["dms1.example", "dms2.example"] {
            secrets.extend(db_secrets(&dir.join(db).join("dmdeleg.db")));
        }
        secrets.extend(key_lines(&dir.join("certs")));
        assert!(secrets.len() > 20, "{name}: too few secrets to look for");
        if name == "bootstrap" {
            assert!(secrets.iter().any(|s| s.len() == 64), "no token found");
        }
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{name}: a secret is in the logs: {s}"
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
