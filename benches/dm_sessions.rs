//! DM sessions per second (issue 3): 1,000 simulated devices against one engine over real
//! HTTP on 127.0.0.1, each measured session carrying one Get and one Replace; with the CPU
//! time and the bytes per session.
//!
//! Both the engine and the fleet run in this process on one tokio runtime (2 workers), so the
//! CPU time per session covers both ends of the session.
//!
//! `cargo bench --bench dm_sessions`

use std::sync::Arc;
use std::time::{Duration, Instant};

use dmdeleg::dm::uri::{NodeUri, Target};
use dmdeleg::engine::device_endpoint::DeviceEndpointConfig;
use dmdeleg::engine::devices::CommandResult;
use dmdeleg::engine::dm_server::{DmServer, DmServerConfig};
use dmdeleg::engine::notifier::HttpPush;
use dmdeleg::sim::fleet::{Fleet, FleetConfig};
use dmdeleg::syncml::StatusCode;
use dmdeleg::syncml::session::DeviceCommand;
use tokio::sync::oneshot;

const SRV: &str = "dms1.example";
const DEVICES: usize = 1_000;
const ROUNDS: usize = 3;
const WARMUP_CONCURRENCY: usize = 64;
/// The headline figure is the one at 64; the others show how it moves with concurrency.
const CONCURRENCIES: [usize; 3] = [16, 64, 256];
const HEADLINE: usize = 64;

/// Clock ticks per second for /proc/self/stat, from `getconf CLK_TCK` (100 if that fails).
fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Process user + system CPU time so far, in clock ticks (utime + stime of /proc/self/stat).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis
    // start at field 3 (state), so utime (14) and stime (15) are at indices 11 and 12.
    let rest = &stat[stat.rfind(')').expect("comm field") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

/// The figures of one timed `session_all` round.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    sessions: u64,
    failed: u64,
    wall: Duration,
    cpu_ticks: u64,
    bytes: u64,
    messages: u64,
}

impl Round {
    fn add(&mut self, o: &Round) {
        self.sessions += o.sessions;
        self.failed += o.failed;
        self.wall += o.wall;
        self.cpu_ticks += o.cpu_ticks;
        self.bytes += o.bytes;
        self.messages += o.messages;
    }

    fn per_sec(&self) -> f64 {
        self.sessions as f64 / self.wall.as_secs_f64()
    }

    fn cpu_us_per_session(&self, ticks_per_sec: u64) -> f64 {
        self.cpu_ticks as f64 * 1e6 / ticks_per_sec as f64 / self.sessions.max(1) as f64
    }

    fn bytes_per_session(&self) -> f64 {
        self.bytes as f64 / self.sessions.max(1) as f64
    }

    fn messages_per_session(&self) -> f64 {
        self.messages as f64 / self.sessions.max(1) as f64
    }
}

/// Every device opens one session, at most `concurrency` at a time; returns the figures.
async fn timed_round(fleet: &Fleet, concurrency: usize) -> Round {
    let before = fleet.counts();
    let cpu0 = cpu_ticks();
    let t0 = Instant::now();
    let reports = fleet.session_all(concurrency).await;
    let wall = t0.elapsed();
    let cpu1 = cpu_ticks();
    let after = fleet.counts();
    let mut round = Round {
        wall,
        cpu_ticks: cpu1 - cpu0,
        bytes: (after.bytes_sent - before.bytes_sent)
            + (after.bytes_received - before.bytes_received),
        ..Round::default()
    };
    let mut first_error = None;
    for r in &reports {
        match r {
            Ok(rep) if rep.completed && rep.rejected.is_none() => {
                round.sessions += 1;
                round.messages += rep.messages as u64;
            }
            Ok(rep) => {
                round.failed += 1;
                first_error.get_or_insert_with(|| format!("{rep:?}"));
            }
            Err(e) => {
                round.failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!(
            "warning: {} of {} sessions failed, e.g. {e}",
            round.failed,
            reports.len()
        );
    }
    round
}

fn row(label: &str, r: &Round, tps: u64) {
    println!(
        "{label:<16} {:>8} {:>6} {:>10.3} {:>12.0} {:>14.0} {:>14.0} {:>10.2}",
        r.sessions,
        r.failed,
        r.wall.as_secs_f64(),
        r.per_sec(),
        r.cpu_us_per_session(tps),
        r.bytes_per_session(),
        r.messages_per_session(),
    );
}

async fn run(tps: u64) {
    dmdeleg::tls::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = DmServer::start(
        DmServerConfig {
            server_id: SRV.into(),
            endpoint: DeviceEndpointConfig::default(),
        },
        listener,
        None,
        Arc::new(HttpPush::new(reqwest::Client::new())),
    )
    .await
    .unwrap();
    let cfg = FleetConfig::new(SRV, srv.url(), DEVICES);
    let fleet = Fleet::start(cfg.clone(), None).await.unwrap();
    for e in cfg.enrolments(None) {
        srv.enrol(e.to_record()).await.unwrap();
    }
    let ids = fleet.dev_ids().to_vec();
    let get = Target::parse("./DevInfo/Man").unwrap();
    let policy = NodeUri::parse("./Vendor/Enterprise/Policy").unwrap();

    println!(
        "dm_sessions: {DEVICES} devices, one engine, real HTTP on 127.0.0.1, \
         tokio multi-thread runtime with 2 workers"
    );
    println!(
        "CPU is process user+system time (/proc/self/stat, {tps} ticks/s) and covers BOTH \
         ends: the engine and the simulated fleet run in this process."
    );
    println!("bytes = device-sent + device-received HTTP bodies; msgs = messages the device sent");
    println!();
    println!(
        "{:<16} {:>8} {:>6} {:>10} {:>12} {:>14} {:>14} {:>10}",
        "round",
        "sessions",
        "failed",
        "wall s",
        "sessions/s",
        "CPU µs/sess",
        "bytes/sess",
        "msgs/sess"
    );

    // Warm-up: each device's first session, which also fetches its inventory.
    let warm = timed_round(&fleet, WARMUP_CONCURRENCY).await;
    row("warm-up (c=64)", &warm, tps);
    let completed_before = srv.stats().sessions_completed;

    let mut receivers: Vec<(String, &'static str, oneshot::Receiver<CommandResult>)> = Vec::new();
    let mut totals = Vec::new();
    let mut round_no = 0usize;
    for &concurrency in &CONCURRENCIES {
        let mut total = Round::default();
        for _ in 0..ROUNDS {
            round_no += 1;
            for dev in &ids {
                let rx = srv
                    .enqueue(
                        dev,
                        DeviceCommand::Get {
                            target: get.clone(),
                        },
                    )
                    .unwrap();
                receivers.push((dev.clone(), "Get", rx));
                let rx = srv
                    .enqueue(
                        dev,
                        DeviceCommand::replace_text(&policy, &format!("v{round_no}")),
                    )
                    .unwrap();
                receivers.push((dev.clone(), "Replace", rx));
            }
            let r = timed_round(&fleet, concurrency).await;
            row(&format!("c={concurrency} #{round_no}"), &r, tps);
            total.add(&r);
        }
        row(&format!("c={concurrency} all"), &total, tps);
        totals.push((concurrency, total));
    }
    println!();

    // Every queued command was answered with 200.
    let expected = receivers.len();
    let mut ok = 0usize;
    let mut bad = Vec::new();
    for (dev, what, rx) in receivers {
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(Ok(outcome))) if outcome.status == StatusCode::OK => ok += 1,
            Ok(Ok(Ok(outcome))) => bad.push(format!("{dev} {what}: status {:?}", outcome.status)),
            Ok(Ok(Err(e))) => bad.push(format!("{dev} {what}: {e}")),
            Ok(Err(_)) => bad.push(format!("{dev} {what}: dropped")),
            Err(_) => bad.push(format!("{dev} {what}: no outcome")),
        }
    }
    let stats = srv.stats();
    let measured: u64 = totals.iter().map(|(_, t)| t.sessions).sum();
    println!(
        "outcomes: {ok}/{expected} commands answered 200; engine: {} sessions completed in \
         the measured rounds ({measured} reported by devices), {} auth failures, {} bad \
         messages, {} unknown devices",
        stats.sessions_completed - completed_before,
        stats.auth_failures,
        stats.bad_messages,
        stats.unknown_devices,
    );
    if !bad.is_empty() {
        eprintln!(
            "warning: {} commands not answered 200, e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    let (_, head) = totals
        .iter()
        .find(|(c, _)| *c == HEADLINE)
        .expect("headline concurrency");
    println!(
        "dm_sessions: {DEVICES} devices, {:.0} sessions/s, {:.0} µs CPU/session (both ends), \
         {:.0} bytes/session, {:.2} messages/session (concurrency {HEADLINE}, 1 Get + 1 Replace)",
        head.per_sec(),
        head.cpu_us_per_session(tps),
        head.bytes_per_session(),
        head.messages_per_session(),
    );
    assert!(bad.is_empty(), "every command is answered 200");
    assert!(
        totals.iter().all(|(_, t)| t.failed == 0),
        "every session completes"
    );
}

fn main() {
    let tps = clock_ticks_per_sec();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(tps));
}
