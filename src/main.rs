//! The `dmdeleg` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use dmdeleg::config::{Config, default_data_dir};
use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::tree::{DmTree, TreeLimits};
use dmdeleg::dm::uri::NodeUri;
use dmdeleg::engine::device_endpoint::DeviceEndpointConfig;
use dmdeleg::engine::dm_server::{DmServer, DmServerConfig};
use dmdeleg::engine::notifier::HttpPush;
use dmdeleg::sim::device::{DeviceFaults, is_loopback_url};
use dmdeleg::sim::fleet::{Fleet, FleetConfig};
use dmdeleg::store::{self, Store};
use dmdeleg::syncml::auth::AuthScheme;

/// OMA DM server-to-server delegation: hand the management of devices from one DM server to
/// another, wholly or for some subtrees, and undo it exactly when anything fails.
#[derive(Parser)]
#[command(name = "dmdeleg", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a DM server headless: the device endpoint, its enrolled devices and their queues.
    Serve {
        /// The configuration file (TOML; see the README).
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage enrolled devices.
    Devices {
        #[command(subcommand)]
        action: DevicesAction,
    },
    /// Run a fleet of simulated DM devices against a DM server (loopback only).
    Sim(Box<SimArgs>),
    /// Make certificates for a lab or a first deployment.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Read and write SyncML DM and TNDS traffic, XML or WBXML.
    Msg {
        #[command(subcommand)]
        action: MsgAction,
    },
    /// Work with TNDS documents (DM tree serialisations) and DDF files.
    Tnds {
        #[command(subcommand)]
        action: TndsAction,
    },
}

#[derive(Subcommand)]
enum CertsAction {
    /// Write a CA (ca.pem, ca.key) and, for each NAME, a certificate and key usable as server
    /// and as client (NAME.pem, NAME.key) into DIR. ECDSA P-256, valid one year; private keys
    /// are written with mode 0600; existing files are never overwritten.
    Init {
        /// The directory (created if needed).
        dir: PathBuf,
        /// The names to issue certificates for (default: dms1 dms2).
        #[arg(long = "name", default_values_t = [String::from("dms1"), String::from("dms2")])]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum MsgAction {
    /// Print a SyncML DM or TNDS message, XML or WBXML, as indented XML (`-` reads stdin).
    Decode {
        /// The message file, or `-`.
        file: PathBuf,
    },
    /// Write the WBXML form of an XML SyncML DM or TNDS message (`-` reads stdin; the WBXML
    /// goes to stdout unless --out is given).
    Encode {
        /// Encode as WBXML (the only binary form).
        #[arg(long)]
        wbxml: bool,
        /// The XML message file, or `-`.
        file: PathBuf,
        /// Where to write the WBXML (default: stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Enrol the devices listed in FILE (CSV with a header row, or TOML `[[device]]` tables):
    /// dev_id, auth_type (BASIC, DIGEST, HMAC), client_name, client_secret, server_name,
    /// server_secret, push. All or nothing.
    Import {
        /// The device list (.csv or .toml).
        file: PathBuf,
        /// The data directory holding the database (default: the platform's data directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// List the enrolled devices.
    List {
        /// The data directory holding the database.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AuthArg {
    Basic,
    Digest,
    Hmac,
}

#[derive(clap::Args)]
struct SimArgs {
    /// The DM server's device endpoint URL (must be loopback).
    #[arg(long)]
    server: String,
    /// How many devices.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// The server's ServerID.
    #[arg(long, default_value = "dms1.example")]
    server_id: String,
    /// Authentication scheme both ways.
    #[arg(long, value_enum, default_value_t = AuthArg::Digest)]
    auth: AuthArg,
    /// Seed the devices' credentials derive from.
    #[arg(long, default_value = "dmdeleg-lab")]
    seed: String,
    /// Write the enrolment list (CSV) the server imports (`dmdeleg devices import`) and exit.
    #[arg(long)]
    enrol_out: Option<PathBuf>,
    /// Listen for Package #0 here (a loopback address), routed by device.
    #[arg(long)]
    push_listen: Option<SocketAddr>,
    /// Open a session every SECS seconds besides triggers.
    #[arg(long)]
    interval: Option<u64>,
    /// Keep device trees here so they survive restarts.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Largest message the devices accept.
    #[arg(long, default_value_t = 16_384)]
    max_msg_size: u64,
    /// Devices speak WBXML (as most deployed clients do) instead of XML.
    #[arg(long)]
    wbxml: bool,
    /// Half the devices speak XML and half WBXML.
    #[arg(long)]
    mixed_encoding: bool,
    /// Fault: drop every Nth session of each device.
    #[arg(long, default_value_t = 0)]
    drop_every: u32,
    /// Fault: answer 500 to commands under this node.
    #[arg(long)]
    fail_path: Vec<String>,
    /// Fault: wait this many milliseconds before each message.
    #[arg(long)]
    slow_ms: Option<u64>,
    /// Fault: stay offline for this many seconds after start.
    #[arg(long)]
    offline_secs: Option<u64>,
    /// Trust this CA (PEM) for an HTTPS server.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Every device opens one session, the fleet prints a summary and exits.
    #[arg(long)]
    once: bool,
    /// Sessions at once with --once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Subcommand)]
enum TndsAction {
    /// Check that FILE is a TNDS document or DDF and load it as a DM tree; prints the nodes
    /// it holds, or says what is wrong and where.
    Check {
        /// The TNDS or DDF file.
        file: PathBuf,
    },
    /// Print FILE as indented TNDS.
    Print {
        /// The TNDS or DDF file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    dmdeleg::tls::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dmdeleg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => {
            // The console and the lab arrive with the delegation engine; until then, say what
            // exists.
            use clap::CommandFactory as _;
            Cli::command().print_help()?;
            println!();
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve { config }) => {
            let cfg = Config::load(&config)?;
            runtime()?.block_on(serve(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Devices { action }) => devices(action),
        Some(Command::Sim(args)) => runtime()?.block_on(sim(*args)),
        Some(Command::Msg { action }) => msg(action),
        Some(Command::Certs {
            action: CertsAction::Init { dir, names },
        }) => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let files = dmdeleg::tls::init_dir(&dir, &refs)
                .with_context(|| format!("no certificates written to {}", dir.display()))?;
            for f in &files {
                println!("wrote {}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Tnds { action }) => {
            match action {
                TndsAction::Check { file } => {
                    let doc = read_tnds(&file)?;
                    let tree =
                        DmTree::from_tnds(&doc, TreeLimits::default()).with_context(|| {
                            format!("{} does not load as a DM tree", file.display())
                        })?;
                    println!(
                        "{}: TNDS {} with {} nodes; loads as a DM tree of {} nodes",
                        file.display(),
                        doc.ver_dtd,
                        doc.node_count(),
                        tree.len()
                    );
                }
                TndsAction::Print { file } => {
                    let doc = read_tnds(&file)?;
                    print!("{}", doc.to_xml_pretty());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_input(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        Ok(buf)
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
    }
}

fn msg(action: MsgAction) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    match action {
        MsgAction::Decode { file } => {
            let bytes = read_input(&file)?;
            let xml = dmdeleg::syncml::wbxml::decode_any(&bytes)
                .with_context(|| format!("{} cannot be decoded", file.display()))?;
            print!("{xml}");
            Ok(ExitCode::SUCCESS)
        }
        MsgAction::Encode { wbxml, file, out } => {
            if !wbxml {
                bail!("say which encoding: --wbxml (XML is what `msg decode` prints)");
            }
            let bytes = read_input(&file)?;
            let encoded = dmdeleg::syncml::wbxml::xml_to_wbxml(&bytes)
                .with_context(|| format!("{} cannot be encoded", file.display()))?;
            match out {
                Some(path) => std::fs::write(&path, encoded)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout()
                    .write_all(&encoded)
                    .context("cannot write standard output")?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_tnds(file: &PathBuf) -> anyhow::Result<TndsDocument> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    TndsDocument::from_xml(&bytes).with_context(|| format!("{} is not TNDS", file.display()))
}

fn database(data_dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(dir.join("engine.db"))
}

fn devices(action: DevicesAction) -> anyhow::Result<ExitCode> {
    match action {
        DevicesAction::Import { file, data_dir } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let is_toml = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
            let entries = store::devices::parse_import(&text, is_toml)
                .with_context(|| format!("{} was not imported", file.display()))?;
            let db = database(data_dir)?;
            let mut conn = store::open(&db)?;
            let (added, updated) =
                store::devices::import(&mut conn, &entries, std::time::SystemTime::now())?;
            println!(
                "enrolled {added} new devices, updated {updated} ({})",
                db.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        DevicesAction::List { data_dir } => {
            let db = database(data_dir)?;
            let conn = store::open(&db)?;
            let all = store::devices::load_all(&conn)?;
            println!("{:<24} {:<7} {:<10} push", "device", "auth", "last seen");
            for d in &all {
                let seen = d
                    .last_seen
                    .and_then(|t| t.elapsed().ok())
                    .map(|e| format!("{}s ago", e.as_secs()))
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<24} {:<7} {:<10} {}",
                    d.dev_id,
                    d.client.scheme.aauth_type(),
                    seen,
                    d.push.as_deref().unwrap_or("-")
                );
            }
            println!("{} devices", all.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let db = database(Some(cfg.data_dir()))?;
    let store = Store::start(&db)?;
    let listener = tokio::net::TcpListener::bind(cfg.devices.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.devices.listen))?;
    let endpoint = DeviceEndpointConfig {
        path: cfg.devices.path.clone(),
        max_msg_size: cfg.devices.max_msg_size,
        ..DeviceEndpointConfig::default()
    };
    let tls = match (&cfg.devices.tls_cert, &cfg.devices.tls_key) {
        (Some(cert), Some(key)) => Some(dmdeleg::tls::server_config(
            dmdeleg::tls::load_certs_file(cert)?,
            dmdeleg::tls::load_key_file(key)?,
        )?),
        _ => None,
    };
    let server = DmServer::start_with_tls(
        DmServerConfig {
            server_id: cfg.server_id.clone(),
            endpoint,
        },
        listener,
        Some(store),
        Arc::new(HttpPush::new(reqwest::Client::new())),
        tls,
    )
    .await?;
    println!(
        "dmdeleg: {} serving devices at {} ({} enrolled; data in {})",
        server.server_id(),
        server.url(),
        server.device_ids().len(),
        db.display()
    );
    shutdown_signal().await;
    println!("dmdeleg: stopping");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    if !is_loopback_url(&args.server) {
        bail!(
            "{} is not a loopback address: simulated devices only talk to this machine",
            args.server
        );
    }
    let mut cfg = FleetConfig::new(&args.server_id, &args.server, args.count);
    cfg.scheme = match args.auth {
        AuthArg::Basic => AuthScheme::Basic,
        AuthArg::Digest => AuthScheme::Md5,
        AuthArg::Hmac => AuthScheme::Hmac,
    };
    cfg.seed = args.seed.clone();
    cfg.interval = args.interval.map(Duration::from_secs);
    cfg.max_msg_size = args.max_msg_size;
    cfg.encoding = if args.wbxml {
        dmdeleg::syncml::session::Encoding::Wbxml
    } else {
        dmdeleg::syncml::session::Encoding::Xml
    };
    cfg.mixed_encoding = args.mixed_encoding;
    cfg.drop_every = args.drop_every;
    cfg.offline_for = args.offline_secs.map(Duration::from_secs);
    cfg.state_dir = args.state_dir.clone();
    if let Some(dir) = &cfg.state_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut faults = DeviceFaults {
        delay: args.slow_ms.map(Duration::from_millis),
        ..DeviceFaults::default()
    };
    for p in &args.fail_path {
        faults
            .fail_paths
            .push(NodeUri::parse(p).with_context(|| format!("--fail-path {p}"))?);
    }
    cfg.faults = faults;
    if let Some(out) = &args.enrol_out {
        let push_base = args.push_listen.map(|a| format!("http://{a}"));
        std::fs::write(out, cfg.enrolment_csv(push_base.as_deref()))
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!(
            "sim: wrote the enrolment list of {} devices to {} (import it with `dmdeleg devices import`)",
            args.count,
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let fleet = Fleet::start_with_client(cfg.clone(), args.push_listen, http_client(&args)?)
        .await
        .context("cannot start the fleet")?;
    if args.once {
        let started = Instant::now();
        let reports = fleet.session_all(args.concurrency).await;
        let elapsed = started.elapsed();
        let ok = reports
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|r| r.completed))
            .count();
        let failed = reports.len() - ok;
        let first_failure = reports.iter().find_map(|r| match r {
            Err(e) => Some(e.to_string()),
            Ok(r) if !r.completed => Some(match r.rejected {
                Some(code) => format!("the server refused the device's credentials ({code})"),
                None => "the session did not complete".to_owned(),
            }),
            Ok(_) => None,
        });
        if let Some(reason) = first_failure {
            eprintln!("sim: first failure: {reason}");
        }
        let c = fleet.counts();
        println!(
            "sim: {ok} sessions completed, {failed} failed in {:.2} s ({:.0} sessions/s, {} bytes/session)",
            elapsed.as_secs_f64(),
            ok as f64 / elapsed.as_secs_f64().max(1e-9),
            (c.bytes_sent + c.bytes_received) / (ok.max(1) as u64)
        );
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!(
        "sim: {} devices running{}; Ctrl-C to stop",
        args.count,
        fleet
            .push_base()
            .map(|b| format!(", push listener {b}/push/<DevId>"))
            .unwrap_or_default()
    );
    shutdown_signal().await;
    let c = fleet.counts();
    println!(
        "sim: {} sessions completed, {} failed, {} triggers accepted, {} ignored",
        c.sessions_ok, c.sessions_failed, c.triggers_ok, c.triggers_ignored
    );
    Ok(ExitCode::SUCCESS)
}

fn http_client(args: &SimArgs) -> anyhow::Result<reqwest::Client> {
    match &args.ca {
        Some(ca) => {
            let roots = dmdeleg::tls::load_certs_file(ca)?;
            Ok(dmdeleg::tls::reqwest_client(&roots, None)?)
        }
        None => Ok(reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?),
    }
}
