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

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dmdeleg");

/// An empty directory of this test process's own, named `dmdeleg-{kind}-{pid}-{name}`.
pub fn scratch(kind: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dmdeleg-{kind}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
