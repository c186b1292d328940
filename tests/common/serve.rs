//! Running `dmdeleg serve` as a real process in a test: its scratch directory, starting it
//! with its stderr read line by line, waiting for a line, and the device tree compared
//! without the nonces every session changes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use dmdeleg::dm::tree::DmTree;
use dmdeleg::lab::{DMS1, DMS2, EnginePorts};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dmdeleg");

/// An empty directory of this test process's own, named `dmdeleg-{kind}-{pid}-{name}`. It
/// stays after the test (a failure's databases and logs are there to read); the first call
/// in a process removes the `dmdeleg-{kind}-*` directories of processes that are gone, so
/// runs do not pile up in the temporary directory.
pub fn scratch(kind: &str, name: &str) -> PathBuf {
    static SWEPT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let tmp = std::env::temp_dir();
    if let Ok(mut swept) = SWEPT.lock()
        && !swept.iter().any(|k| k == kind)
    {
        swept.push(kind.to_owned());
        remove_stale(&tmp, kind);
    }
    let dir = tmp.join(format!("dmdeleg-{kind}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes `dmdeleg-{kind}-{pid}-*` directories in `tmp` whose process no longer runs.
fn remove_stale(tmp: &Path, kind: &str) {
    if !Path::new("/proc/self").exists() {
        // Without /proc there is no telling whether a process still runs.
        return;
    }
    let prefix = format!("dmdeleg-{kind}-");
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Starts `dmdeleg serve --config CONFIG`; with `pause`, it stops at that point of a
/// delegation (DMDELEG_TEST_PAUSE). The receiver hears its stderr, line by line.
pub fn start_serve(config: &Path, pause: Option<&str>) -> (Child, Receiver<String>) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = pause {
        cmd.env("DMDELEG_TEST_PAUSE", p);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The first line containing `needle` within `within`; panics with what was said instead.
pub fn wait_line(rx: &Receiver<String>, needle: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < end {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if line.contains(needle) {
                return line;
            }
            seen.push(line);
        }
    }
    panic!("no line with `{needle}` from dmdeleg serve; it said: {seen:#?}");
}

/// The tree without the nonces every session changes.
pub fn normalised(tree: &DmTree) -> DmTree {
    let mut t = tree.clone();
    for id in t.subtree(t.root()) {
        if t.name(id) == "AAuthData" && t.is_leaf(id) {
            let u = t.uri_of(id);
            t.remove(&u).unwrap();
        }
    }
    t
}

/// Writes `dir/dms1.toml`: DMS-1 on `p1` with its data in `dir/dms1`, the lab certificates in
/// `certs`, DMS-2 at `p2` as its one peer with `policy`, and `deadlines` (the lines of the
/// `[deadlines]` table).
pub fn dms1_config(
    dir: &Path,
    certs: &Path,
    p1: EnginePorts,
    p2: EnginePorts,
    policy: &str,
    deadlines: &str,
) -> PathBuf {
    let text = format!(
        r#"server_id = "{DMS1}"
data_dir = "{data}"

[devices]
listen = "{dev}"

[peer_endpoint]
listen = "{peer}"
cert = "{certs}/{DMS1}.pem"
key = "{certs}/{DMS1}.key"
ca = ["{certs}/ca.pem"]

[deadlines]
{deadlines}

[[peers]]
server_id = "{DMS2}"
url = "https://{peer2}"
policy = "{policy}"
"#,
        data = dir.join("dms1").display(),
        dev = p1.devices,
        peer = p1.peer,
        certs = certs.display(),
        peer2 = p2.peer,
    );
    let path = dir.join("dms1.toml");
    std::fs::write(&path, text).unwrap();
    path
}
