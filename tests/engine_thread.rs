//! An engine started on a thread of its own (how the lab runs its two engines beside the
//! fleet): it serves from that thread while the caller's runtime is blocked; a start that
//! fails leaves no thread behind; `stop` ends the thread and frees the engine's ports and
//! store, so the same configuration starts again; an engine dropped without `stop` ends its
//! thread too.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dmdeleg::engine::service::Engine;
use dmdeleg::lab::{Lab, LabOptions};

mod common;

/// Linux keeps the first 15 bytes of a thread's name: `engine dms1.example`.
const THREAD: &str = "engine dms1.exa";

/// How many of this process's threads have `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

/// Waits until exactly `n` of this process's threads are named [`THREAD`]. The kernel drops
/// an exited thread from `/proc/self/task` a moment after a join has returned, so the count
/// is awaited, with a bound.
async fn until_threads(n: usize, what: &str) {
    let since = Instant::now();
    while threads_named(THREAD) != n {
        assert!(since.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One HTTP exchange with blocking I/O, so the calling runtime cannot run anything meanwhile:
/// the status line of the answer.
fn blocking_get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    // A timeout here means nobody served the request.
    s.read_to_end(&mut answer).expect("the engine answers");
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn an_engine_on_its_own_thread_serves_from_it_and_ends_it() {
    dmdeleg::tls::install_crypto_provider();
    let dir = common::serve::scratch("enginethread", "own");
    let [dms1, _] = Lab::plan(&LabOptions::new(&dir, 0)).unwrap();
    std::fs::create_dir_all(dms1.store_path.parent().unwrap()).unwrap();
    assert_eq!(threads_named(THREAD), 0);

    let engine = Engine::start_on_own_thread(dms1.config().unwrap())
        .await
        .unwrap();
    assert_eq!(threads_named(THREAD), 1);
    // This test's runtime has one thread, blocked in the call: only the engine's own thread
    // can answer.
    let status = blocking_get(engine.dm().url());
    assert!(status.starts_with("HTTP/1.1 "), "{status}");

    // A second engine on the same ports and store cannot start, and leaves no thread behind.
    assert!(
        Engine::start_on_own_thread(dms1.config().unwrap())
            .await
            .is_err()
    );
    until_threads(1, "the thread of a failed start still runs").await;

    // Stopped, its thread ends, and its ports and store are free for the same configuration.
    engine.stop().await;
    until_threads(0, "the thread of a stopped engine still runs").await;
    let again = Engine::start_on_own_thread(dms1.config().unwrap())
        .await
        .unwrap();
    assert_eq!(threads_named(THREAD), 1);
    assert!(blocking_get(again.dm().url()).starts_with("HTTP/1.1 "));

    // Dropped without a stop, its thread ends as well.
    drop(again);
    until_threads(0, "the thread of a dropped engine still runs").await;
    let _ = std::fs::remove_dir_all(&dir);
}
