//! The `dmdeleg` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use dmdeleg::config::{Config, DB_FILE, default_data_dir};
use dmdeleg::delegation::machine::Role;
use dmdeleg::demo::{DemoOptions, DemoReport};
use dmdeleg::dm::tnds::TndsDocument;
use dmdeleg::dm::tree::{DmTree, TreeLimits};
use dmdeleg::dm::uri::NodeUri;
use dmdeleg::engine::control::ControlListener;
use dmdeleg::engine::service::Engine;
use dmdeleg::sim::device::{DeviceFaults, is_loopback_url};
use dmdeleg::sim::fleet::{Fleet, FleetConfig};
use dmdeleg::store;

/// mimalloc instead of glibc's allocator: the engines allocate many small, short-lived
/// buffers from many threads, where glibc's arenas contend on their locks.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Run the engine headless: the device endpoint, the peer endpoint (mutual TLS), the
    /// bootstrap endpoint and the delegations, until SIGTERM or Ctrl-C.
    Serve {
        /// The configuration file (TOML; see the README).
        #[arg(long)]
        config: PathBuf,
    },
    /// Look at the delegations a server has stored (`list` and `show` read the database), and
    /// operate a running `dmdeleg serve` through its control socket: start, accept, decline,
    /// abort, retry.
    Delegations {
        #[command(subcommand)]
        action: DelegationsAction,
    },
    /// Run the two-server lab on this machine and delegate every simulated device from DMS-1
    /// to DMS-2; prints per-step timings, outcomes, throughput and peak memory. Exits non-zero
    /// when any delegation failed.
    Demo(DemoArgs),
    /// Open the console (what `dmdeleg` alone does): on the lab by default, or with --config
    /// on the engine of a real deployment.
    Console(ConsoleArgs),
    /// The peers of a running engine (`dmdeleg serve`): list them (also with no engine
    /// running, from the configuration and the database), add one pinned to its certificate,
    /// remove one that was added.
    Peers {
        #[command(subcommand)]
        action: PeersAction,
    },
    /// The audit trail: who did what, when (operators, policies, peers), oldest first; reads
    /// the database only.
    Audit(AuditArgs),
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
enum DelegationsAction {
    /// List stored delegations, newest first.
    List {
        /// The data directory holding the database.
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Take the data directory from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only delegations in this state (Running, AwaitingOperator, RollingBack, Completed,
        /// Failed, Aborted); repeat for several.
        #[arg(long = "state", value_name = "S")]
        states: Vec<String>,
        /// Only this device's.
        #[arg(long = "device", value_name = "D")]
        device: Option<String>,
        /// Only those with this peer.
        #[arg(long)]
        peer: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a delegation on the running engine: hand a device to a peer or, with --ask, ask
    /// a peer for one it manages.
    Start {
        #[command(flatten)]
        engine: EngineArg,
        /// The device's DevId (e.g. IMEI:350000000000001).
        #[arg(long)]
        device: String,
        /// The peer's ServerID.
        #[arg(long)]
        peer: String,
        /// Partial delegation of these subtrees (e.g. ./Vendor/Enterprise); Full without.
        #[arg(long, value_name = "PATH", num_args = 1..)]
        partial: Vec<String>,
        /// The Bootstrap Server URL approach instead of DMAcc.
        #[arg(long)]
        bootstrap: bool,
        /// A temporary delegation: it reverts by itself after this many seconds.
        #[arg(long, value_name = "SECS")]
        lease: Option<u64>,
        /// Ask the peer to hand the device to this server (the peer manages it).
        #[arg(long)]
        ask: bool,
        /// With --ask: the device's manufacturer.
        #[arg(long, requires = "ask")]
        man: Option<String>,
        /// With --ask: the device's model.
        #[arg(long, requires = "ask")]
        model: Option<String>,
        /// With --ask: the device's push address, to wake it for this server's session.
        #[arg(long, requires = "ask", value_name = "URL")]
        push: Option<String>,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Accept an incoming request that waits for an operator.
    Accept {
        #[command(flatten)]
        engine: EngineArg,
        /// The DelegationID.
        id: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Decline an incoming request that waits for an operator.
    Decline {
        #[command(flatten)]
        engine: EngineArg,
        /// The DelegationID.
        id: String,
        /// Told to the peer.
        #[arg(long, default_value = "declined by the operator")]
        reason: String,
    },
    /// Abort a running delegation: the peer is told (1001 Cancelled) and the device is
    /// rolled back.
    Abort {
        #[command(flatten)]
        engine: EngineArg,
        /// The DelegationID.
        id: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Start a failed or aborted delegation again, as a new attempt linked to the old one.
    Retry {
        #[command(flatten)]
        engine: EngineArg,
        /// The DelegationID of the failed attempt.
        id: String,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// One delegation from the store, running or long over: its state, its timeline and the
    /// messages exchanged with the peer (secrets shown as ********). With --wait, the running
    /// engine is asked to say when it has ended first.
    Show {
        /// The data directory holding the database.
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Take the data directory (and the control socket) from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The DelegationID.
        id: String,
        /// Print each message's XML under its line.
        #[arg(long)]
        xml: bool,
        #[command(flatten)]
        wait: WaitArg,
    },
}

#[derive(Subcommand)]
enum PeersAction {
    /// List the peers, configured and added.
    List {
        #[command(flatten)]
        engine: EngineArg,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Add a peer while the engine runs, pinned to its certificate (no CA needed); kept in
    /// the database, so it comes back at every start.
    Add {
        #[command(flatten)]
        engine: EngineArg,
        /// Its ServerID.
        #[arg(long)]
        server_id: String,
        /// Its peer endpoint, https://host:port.
        #[arg(long)]
        url: String,
        /// Its certificate (PEM; the first of a chain is pinned).
        #[arg(long)]
        cert: PathBuf,
        /// What happens to its requests.
        #[arg(long, value_enum, default_value_t = PolicyArg::Operator)]
        policy: PolicyArg,
    },
    /// Remove a peer that was added (configured ones are removed from the file), once none
    /// of its delegations is in flight.
    Remove {
        #[command(flatten)]
        engine: EngineArg,
        /// Its ServerID.
        server_id: String,
    },
}

#[derive(clap::Args)]
struct AuditArgs {
    /// The data directory holding the database.
    #[arg(long, conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// Take the data directory from this configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only lines about this device.
    #[arg(long)]
    device: Option<String>,
    /// Only lines about this peer.
    #[arg(long)]
    peer: Option<String>,
    /// Only lines with this outcome (Completed, Failed, Aborted, ...).
    #[arg(long)]
    outcome: Option<String>,
    /// From this time on: YYYY-MM-DD or "YYYY-MM-DD HH:MM" (UTC).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time: YYYY-MM-DD or "YYYY-MM-DD HH:MM" (UTC).
    #[arg(long)]
    until: Option<String>,
    /// At most this many, the newest.
    #[arg(long)]
    limit: Option<usize>,
    /// CSV (with a header row) instead of a table.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    /// JSON (an array) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Which running engine to talk to.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct EngineArg {
    /// The engine's configuration file (its control socket is found from it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The engine's control socket.
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl EngineArg {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        match (&self.socket, &self.config) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(c)) => Ok(Config::load(c)?.control_socket()),
            (None, None) => bail!("say which engine: --config FILE or --socket PATH"),
        }
    }
}

/// Waiting for the delegation to end.
#[derive(clap::Args)]
struct WaitArg {
    /// Wait until the delegation has ended; the exit status then says how it ended (0 when
    /// it ended as asked: completed, or aborted for `abort`).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600, requires = "wait")]
    timeout: u64,
    /// Print the answer as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum InitiatorArg {
    /// DMS-1 offers each device to DMS-2.
    Delegating,
    /// DMS-2 asks DMS-1 for each device.
    Delegated,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// How many simulated devices (each is delegated once).
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Partial delegation of these subtrees (e.g. ./Vendor/Enterprise); Full without.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    partial: Vec<String>,
    /// The Bootstrap Server URL approach instead of DMAcc.
    #[arg(long)]
    bootstrap: bool,
    /// Which server starts each delegation.
    #[arg(long, value_enum, default_value_t = InitiatorArg::Delegating)]
    initiator: InitiatorArg,
    /// The lab directory, kept and reused (certificates are made on the first run); default:
    /// a fresh temporary directory, removed afterwards unless something failed.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Most delegations in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// How long one delegation may take before it counts as failed.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

#[derive(clap::Args, Default)]
struct ConsoleArgs {
    /// A real deployment's configuration file (TOML; see the README). Without it the console
    /// runs the lab: DMS-1, DMS-2 and simulated devices on loopback.
    #[arg(long, conflicts_with_all = ["lab_dir", "devices", "dms2_policy"])]
    config: Option<PathBuf>,
    /// The lab's directory (certificates, databases); default: `lab` in the data directory.
    #[arg(long)]
    lab_dir: Option<PathBuf>,
    /// How many simulated devices the lab enrols to DMS-1 (default 20).
    #[arg(long)]
    devices: Option<usize>,
    /// What DMS-2 does with DMS-1's requests in the lab (default accept).
    #[arg(long, value_enum)]
    dms2_policy: Option<PolicyArg>,
    /// The view shown first.
    #[arg(long, value_enum, default_value_t = ViewArg::Devices)]
    view: ViewArg,
    /// The light theme (dark otherwise).
    #[arg(long)]
    light: bool,
}

/// What happens to a peer's requests.
#[derive(Clone, Copy, ValueEnum)]
enum PolicyArg {
    /// Accepted at once.
    Accept,
    /// Declined at once.
    Decline,
    /// Held for an operator's decision.
    Operator,
}

impl From<PolicyArg> for dmdeleg::engine::peers::Policy {
    fn from(p: PolicyArg) -> Self {
        use dmdeleg::engine::peers::Policy;
        match p {
            PolicyArg::Accept => Policy::Accept,
            PolicyArg::Decline => Policy::Decline,
            PolicyArg::Operator => Policy::Operator,
        }
    }
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum ViewArg {
    #[default]
    Devices,
    Delegations,
    Requests,
    Peers,
    Audit,
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
    /// server_secret, push. All or nothing. When the server runs, they go through its control
    /// socket, and it knows them at once; otherwise straight into its database.
    Import {
        /// The device list (.csv or .toml).
        file: PathBuf,
        /// The data directory holding the database (default: the platform's data directory).
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Take the data directory and the control socket from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Un-enrol a device (decommissioned, or handed over for good): its credentials and
    /// cached tree leave the database; its delegation history stays. Refused while it is in
    /// a delegation. Through the running engine when there is one.
    Remove {
        /// Its DevId.
        device: String,
        /// The data directory holding the database (default: the platform's data directory).
        #[arg(long, conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// Take the data directory and the control socket from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
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
    no_transparent_huge_pages();
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

/// Asks Linux not to back this process's memory with transparent huge pages. mimalloc's
/// arenas are huge-page aligned, so on a system where they are allowed each new 2 MiB of heap
/// was faulted in (and zeroed) whole, and counted whole in the RSS, however little of it was
/// in use: the lab measured 20-25 MB more at its peak, and 3% of its CPU time zeroing pages.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours; a kernel
    // without it returns EINVAL, which only leaves the default in place.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The demo's runtime: one thread for the fleet and the demo, while each engine runs on a
/// thread of its own ([`Engine::start_on_own_thread`]), as in a lab of three processes.
fn demo_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => console(ConsoleArgs::default()),
        Some(Command::Console(args)) => console(args),
        Some(Command::Serve { config }) => {
            let cfg = Config::load(&config)?;
            // Every certificate and key is read before anything listens.
            let engine_cfg = cfg.engine_config()?;
            for w in cfg.warnings() {
                eprintln!("dmdeleg: warning: {}: {w}", config.display());
            }
            let _logs = dmdeleg::logging::init(Some(&cfg.data_dir()), true);
            runtime()?.block_on(serve(&cfg, engine_cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Delegations { action }) => delegations(action),
        Some(Command::Audit(args)) => audit(args),
        Some(Command::Peers { action }) => peers(action),
        Some(Command::Demo(args)) => {
            let _logs = args
                .dir
                .as_deref()
                .and_then(|d| dmdeleg::logging::init(Some(d), false));
            demo_runtime()?.block_on(demo(args))
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

/// Opens the console window on the lab or on a configured engine.
fn console(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    use dmdeleg::gui::backend::Launch;
    let (launch, title, log_dir) = match &args.config {
        Some(path) => {
            let cfg = Config::load(path)?;
            let engine_cfg = cfg.engine_config()?;
            for w in cfg.warnings() {
                eprintln!("dmdeleg: warning: {}: {w}", path.display());
            }
            (
                Launch::Engine {
                    config: Box::new(engine_cfg),
                    control: Some(cfg.control_socket()),
                },
                format!("dmdeleg console: {}", cfg.server_id),
                cfg.data_dir(),
            )
        }
        None => {
            let dir = args
                .lab_dir
                .clone()
                .unwrap_or_else(|| default_data_dir().join("lab"));
            let mut opts = dmdeleg::lab::LabOptions::new(&dir, args.devices.unwrap_or(20));
            if let Some(p) = args.dms2_policy {
                opts.dms2_policy = p.into();
            }
            (
                Launch::Lab(opts),
                format!("dmdeleg console: lab in {}", dir.display()),
                dir,
            )
        }
    };
    // The console keeps the terminal quiet; its log goes to the data directory.
    let _logs = dmdeleg::logging::init(Some(&log_dir), false);
    let view = match args.view {
        ViewArg::Devices => dmdeleg::gui::View::Devices,
        ViewArg::Delegations => dmdeleg::gui::View::Delegations,
        ViewArg::Requests => dmdeleg::gui::View::Requests,
        ViewArg::Peers => dmdeleg::gui::View::Peers,
        ViewArg::Audit => dmdeleg::gui::View::Audit,
    };
    dmdeleg::gui::run(launch, &title, view, !args.light).map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
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
    Ok(dir.join(DB_FILE))
}

/// Where a server keeps its data, from its configuration file when given, else from the data
/// directory given (or the platform's).
struct ServerFiles {
    /// The data directory.
    dir: PathBuf,
    /// Its database.
    db: PathBuf,
    /// The running engine's control socket.
    socket: PathBuf,
}

impl ServerFiles {
    fn find(config: Option<&std::path::Path>, data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Ok(match config {
            Some(file) => {
                let cfg = Config::load(file)?;
                ServerFiles {
                    dir: cfg.data_dir(),
                    db: cfg.database(),
                    socket: cfg.control_socket(),
                }
            }
            None => {
                let dir = data_dir.unwrap_or_else(default_data_dir);
                ServerFiles {
                    db: dir.join(DB_FILE),
                    socket: dir.join(dmdeleg::engine::control::SOCKET_FILE),
                    dir,
                }
            }
        })
    }

    /// The database, which must exist (a reader never creates one).
    fn stored_db(&self) -> anyhow::Result<&std::path::Path> {
        if !self.db.exists() {
            bail!(
                "no database at {}: has `dmdeleg serve` run with this data directory?",
                self.db.display()
            );
        }
        Ok(&self.db)
    }
}

/// Sends `req` to the engine running on `socket`; `None` when none runs there (no engine can
/// listen on a path too long for a socket either), so the caller works on the database.
fn ask_running_engine(
    socket: &std::path::Path,
    req: &dmdeleg::engine::control::ControlRequest,
    wait: Duration,
) -> anyhow::Result<Option<dmdeleg::engine::control::ControlReply>> {
    use dmdeleg::engine::control::{ControlError, request};
    match request(socket, req, wait) {
        Ok(reply) => Ok(Some(reply)),
        Err(ControlError::NotRunning(_) | ControlError::PathTooLong(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn devices(action: DevicesAction) -> anyhow::Result<ExitCode> {
    match action {
        DevicesAction::Import {
            file,
            data_dir,
            config,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let is_toml = file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
            let entries = store::devices::parse_import(&text, is_toml)
                .with_context(|| format!("{} was not imported", file.display()))?;
            let files = ServerFiles::find(config.as_deref(), data_dir)?;
            // A running engine enrols them itself: it knows them at once, and none of its
            // later saves overwrites them.
            let req = dmdeleg::engine::control::ControlRequest::Import {
                devices: entries.clone(),
            };
            if let Some(reply) = ask_running_engine(&files.socket, &req, Duration::ZERO)? {
                if let Some(e) = reply.error {
                    bail!("{} was not imported: {e}", file.display());
                }
                let (added, updated) = reply.enrolled.unwrap_or_default();
                println!(
                    "enrolled {added} new devices, updated {updated} (through the running engine at {})",
                    files.socket.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let db = database(Some(files.dir))?;
            let mut conn = store::open(&db)?;
            let (added, updated) =
                store::devices::import(&mut conn, &entries, std::time::SystemTime::now())?;
            println!(
                "enrolled {added} new devices, updated {updated} ({})",
                db.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        DevicesAction::Remove {
            device,
            data_dir,
            config,
        } => {
            let files = ServerFiles::find(config.as_deref(), data_dir)?;
            let req = dmdeleg::engine::control::ControlRequest::RemoveDevice {
                device: device.clone(),
            };
            if let Some(reply) = ask_running_engine(&files.socket, &req, Duration::ZERO)? {
                if let Some(e) = reply.error {
                    bail!("{device} was not removed: {e}");
                }
                println!("removed {device} (through the running engine)");
                return Ok(ExitCode::SUCCESS);
            }
            let db = files.stored_db()?;
            let mut conn = store::open(db)?;
            let tx = conn.transaction()?;
            if let Some(id) = store::delegations::live_of_device(&tx, &device)? {
                bail!(
                    "{device} was not removed: it is in delegation {id}, which is not over (it resumes when the engine starts)"
                );
            }
            if !store::devices::remove(&tx, &device)? {
                bail!("{device} is not enrolled ({})", db.display());
            }
            store::delegations::append_audit(
                &tx,
                &[store::devices::removal_audit(
                    &device,
                    dmdeleg::engine::driver::now_ms(),
                )],
            )?;
            tx.commit()?;
            println!("removed {device} ({})", db.display());
            Ok(ExitCode::SUCCESS)
        }
        DevicesAction::List { data_dir } => {
            let db = database(data_dir)?;
            let conn = store::open(&db)?;
            let all = store::devices::load_all_summaries(&conn)?;
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

async fn serve(
    cfg: &Config,
    engine_cfg: dmdeleg::engine::service::EngineConfig,
) -> anyhow::Result<()> {
    let dir = cfg.data_dir();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    // Listen for the signals before saying we run, so none is lost in between.
    let mut stop = ShutdownSignal::install()?;
    let db = engine_cfg.store_path.clone();
    // Bound before the engine starts: a second engine on this data directory stops here.
    let control = ControlListener::bind(&cfg.control_socket()).await?;
    let engine = Arc::new(Engine::start(engine_cfg).await?);
    let control = control.serve(engine.clone());
    eprintln!(
        "dmdeleg: {} serving devices at {}, peers at {}, bootstrap at {}, operators at {}; {} devices enrolled, {} delegations resumed (data in {})",
        engine.server_id(),
        engine.dm().url(),
        engine.peer_url().unwrap_or("- (no [peer_endpoint])"),
        engine
            .bootstrap_endpoint()
            .map_or("- (no [bootstrap])", |b| b.url.as_str()),
        control.path().display(),
        engine.dm().device_ids().len(),
        engine.recovered(),
        db.display()
    );
    stop.wait().await;
    eprintln!("dmdeleg: stopping (the driver finishes its batch)");
    control.stop();
    engine.shutdown().await;
    eprintln!("dmdeleg: stopped");
    Ok(())
}

/// SIGTERM and Ctrl-C (SIGINT), listened for from the moment it is made.
struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<ShutdownSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignal {
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignal {})
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn shutdown_signal() {
    match ShutdownSignal::install() {
        Ok(mut s) => s.wait().await,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The canonical spelling of a state name given on the command line.
fn state_name(given: &str) -> anyhow::Result<&'static str> {
    const STATES: [&str; 6] = [
        "Running",
        "AwaitingOperator",
        "RollingBack",
        "Completed",
        "Failed",
        "Aborted",
    ];
    let squashed: String = given
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    STATES
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(&squashed))
        .with_context(|| format!("--state {given}: not one of {}", STATES.join(", ")))
}

fn delegations(action: DelegationsAction) -> anyhow::Result<ExitCode> {
    use dmdeleg::engine::control::{AskedDevice, ControlRequest};
    let (engine, request, wait, wanted) = match action {
        DelegationsAction::List {
            data_dir,
            config,
            states,
            device,
            peer,
            limit,
            json,
        } => return list_delegations(data_dir, config, states, device, peer, limit, json),
        DelegationsAction::Start {
            engine,
            device,
            peer,
            partial,
            bootstrap,
            lease,
            ask,
            man,
            model,
            push,
            wait,
        } => {
            let ask = ask.then(|| AskedDevice {
                man: man.unwrap_or_default(),
                model: model.unwrap_or_default(),
                push,
            });
            let req = ControlRequest::Start {
                device,
                peer,
                paths: partial,
                bootstrap,
                lease,
                ask,
            };
            (engine, req, Some(wait), "Completed")
        }
        DelegationsAction::Accept { engine, id, wait } => (
            engine,
            ControlRequest::Accept { id },
            Some(wait),
            "Completed",
        ),
        DelegationsAction::Decline { engine, id, reason } => (
            engine,
            ControlRequest::Decline { id, reason },
            None,
            "Aborted",
        ),
        DelegationsAction::Abort { engine, id, wait } => {
            (engine, ControlRequest::Abort { id }, Some(wait), "Aborted")
        }
        DelegationsAction::Retry { engine, id, wait } => (
            engine,
            ControlRequest::Retry { id },
            Some(wait),
            "Completed",
        ),
        DelegationsAction::Show {
            data_dir,
            config,
            id,
            xml,
            wait,
        } => return show_delegation(data_dir, config, &id, xml, &wait),
    };
    operate(&engine.socket()?, request, wait, wanted)
}

/// Sends one operator request to the running engine, then, with --wait, waits for the
/// delegation to end; prints where it stands.
fn operate(
    socket: &std::path::Path,
    request: dmdeleg::engine::control::ControlRequest,
    wait: Option<WaitArg>,
    wanted: &str,
) -> anyhow::Result<ExitCode> {
    use dmdeleg::engine::control::{ControlRequest, MAX_WAIT, request as ask};
    let json = wait.as_ref().is_some_and(|w| w.json);
    let mut reply = ask(socket, &request, Duration::ZERO)?;
    if let Some(e) = &reply.error {
        if json {
            println!("{}", serde_json::to_string(&reply)?);
        }
        bail!("{e}");
    }
    let waiting = wait.as_ref().filter(|w| w.wait);
    if let (Some(w), Some(id)) = (waiting, reply.id.clone()) {
        let secs = w.timeout.min(MAX_WAIT.as_secs());
        reply = ask(
            socket,
            &ControlRequest::Show {
                id,
                wait_secs: Some(secs),
            },
            Duration::from_secs(secs),
        )?;
    }
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    }
    let Some(d) = &reply.delegation else {
        if let Some(e) = &reply.error {
            bail!("{e}");
        }
        // Done, and already out of the engine's hands: the store has how it ended.
        if !json {
            println!(
                "delegation {} is over; `dmdeleg delegations list` shows how it ended",
                reply.id.as_deref().unwrap_or("-")
            );
        }
        return Ok(ExitCode::SUCCESS);
    };
    if !json {
        let mut line = format!(
            "delegation {} ({} device {} with {}): {}, step {}",
            d.id, d.role, d.device, d.peer, d.state, d.step
        );
        if !d.is_over() && !d.waiting_for.is_empty() {
            line.push_str(&format!(", waiting for {}", d.waiting_for));
        }
        if let Some(code) = d.reason_code {
            line.push_str(&format!(
                "; reason {code} {}",
                d.reason.as_deref().unwrap_or("")
            ));
        }
        println!("{line}");
    }
    if waiting.is_none() {
        return Ok(ExitCode::SUCCESS);
    }
    if !d.is_over() {
        eprintln!("dmdeleg: not over yet; it goes on in the engine");
        return Ok(ExitCode::from(2));
    }
    Ok(if d.state == wanted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `peers`: through the running engine's control socket.
fn peers(action: PeersAction) -> anyhow::Result<ExitCode> {
    use dmdeleg::engine::control::{ControlError, ControlRequest, request};
    let (engine, req, json) = match action {
        PeersAction::List { engine, json } => (engine, ControlRequest::Peers, json),
        PeersAction::Add {
            engine,
            server_id,
            url,
            cert,
            policy,
        } => {
            // Read here, as the operator: the engine's user may not be able to.
            let pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("cannot read the certificate {}", cert.display()))?;
            let req = ControlRequest::AddPeer {
                server_id,
                url,
                cert_file: cert,
                cert_pem: pem,
                policy: policy.into(),
            };
            (engine, req, false)
        }
        PeersAction::Remove { engine, server_id } => {
            (engine, ControlRequest::RemovePeer { server_id }, false)
        }
    };
    let list = match request(&engine.socket()?, &req, Duration::ZERO) {
        Ok(reply) => {
            if let Some(e) = reply.error {
                bail!("{e}");
            }
            reply.peers.unwrap_or_default()
        }
        // Listing needs no engine when the configuration is at hand: its peers, then those
        // added at run time and kept in the database.
        Err(ControlError::NotRunning(socket)) => match (&req, engine.config.as_deref()) {
            (ControlRequest::Peers, Some(file)) => {
                let cfg = Config::load(file)?;
                if !json {
                    eprintln!(
                        "dmdeleg: no engine is running; these are the peers it would start with"
                    );
                }
                offline_peers(&cfg)?
            }
            _ => return Err(ControlError::NotRunning(socket).into()),
        },
        Err(e) => return Err(e.into()),
    };
    if json {
        for p in &list {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<32} {:<9} {:<11} recognised by",
        "peer", "url", "policy", "origin"
    );
    for p in &list {
        let origin = match (p.added, p.expires_ms) {
            (true, Some(ms)) => format!("added (certificate until {} UTC)", utc(ms)),
            (true, None) => "added".to_owned(),
            (false, _) => "configured".to_owned(),
        };
        let auth = match &p.fingerprint {
            Some(fp) => format!("{} SHA-256 {fp}", p.auth),
            None => p.auth.clone(),
        };
        println!(
            "{:<20} {:<32} {:<9} {:<11} {auth}",
            p.server_id, p.url, p.policy, origin
        );
    }
    println!(
        "{} peer{}",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// The peers an engine would start with: the configured ones, then those added at run time
/// and kept in its database (a configured one wins).
fn offline_peers(cfg: &Config) -> anyhow::Result<Vec<dmdeleg::engine::control::PeerView>> {
    use dmdeleg::engine::control::PeerView;
    use dmdeleg::engine::peers::PeerAuth;
    let mut list: Vec<PeerView> =
        cfg.peers
            .iter()
            .map(|p| PeerView {
                server_id: p.server_id.clone(),
                url: p.url.clone(),
                policy: p.policy.as_str().to_owned(),
                auth: match &p.cert {
                    Some(c) => format!("the certificate in {}", c.display()),
                    None => PeerAuth::Name(p.name.clone().unwrap_or_else(|| p.server_id.clone()))
                        .describe(),
                },
                fingerprint: None,
                added: false,
                expires_ms: None,
            })
            .collect();
    let db = cfg.database();
    if db.exists() {
        let conn = store::open(&db)?;
        for row in store::peers::peers(&conn)? {
            if list.iter().any(|p| p.server_id == row.server_id) {
                continue;
            }
            list.push(PeerView {
                server_id: row.server_id,
                url: row.base_url,
                policy: row.policy,
                auth: PeerAuth::Pinned(row.cert_fingerprint.clone().unwrap_or_default()).describe(),
                fingerprint: row.cert_fingerprint,
                added: true,
                expires_ms: None,
            });
        }
    }
    list.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    Ok(list)
}

/// `audit`: the audit trail, filtered, as a table, CSV or JSON.
fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let files = ServerFiles::find(args.config.as_deref(), args.data_dir.clone())?;
    let db = files.stored_db()?;
    let when = |flag: &str, v: &Option<String>| -> anyhow::Result<Option<i64>> {
        match v {
            Some(t) => {
                dmdeleg::gui::common::parse_when(t).map_err(|e| anyhow::anyhow!("--{flag} {e}"))
            }
            None => Ok(None),
        }
    };
    let filter = store::delegations::AuditFilter {
        dev_id: args.device.clone(),
        peer: args.peer.clone(),
        outcome: args.outcome.clone(),
        from_ms: when("since", &args.since)?,
        // A day given alone means up to its end.
        to_ms: when("until", &args.until)?.map(|t| {
            if args
                .until
                .as_deref()
                .is_some_and(|u| !u.trim().contains([' ', 'T']))
            {
                t + 86_400_000 - 1
            } else {
                t + 60_000 - 1
            }
        }),
        limit: args.limit,
    };
    let conn = store::open(db)?;
    let rows = store::delegations::audit(&conn, &filter)?;
    if args.csv {
        print!("{}", store::delegations::audit_csv(&rows));
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        println!("{}", store::delegations::audit_json(&rows));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<19} {:<10} {:<18} {:<24} {:<16} {:<10} detail",
        "at (UTC)", "actor", "action", "device", "peer", "outcome"
    );
    for r in &rows {
        println!(
            "{:<19} {:<10} {:<18} {:<24} {:<16} {:<10} {}",
            utc(r.at_ms),
            r.actor,
            r.action,
            r.dev_id.as_deref().unwrap_or("-"),
            r.peer.as_deref().unwrap_or("-"),
            r.outcome.as_deref().unwrap_or("-"),
            r.detail
        );
    }
    println!(
        "{} line{} ({})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `delegations show`: the stored delegation, its timeline and its messages.
fn show_delegation(
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    id: &str,
    xml: bool,
    wait: &WaitArg,
) -> anyhow::Result<ExitCode> {
    use dmdeleg::engine::control::{ControlRequest, MAX_WAIT};
    let files = ServerFiles::find(config.as_deref(), data_dir)?;
    let db = files.stored_db()?;
    if wait.wait {
        let secs = wait.timeout.min(MAX_WAIT.as_secs());
        let asked = ControlRequest::Show {
            id: id.to_owned(),
            wait_secs: Some(secs),
        };
        // An answer without the delegation: over long ago, or never there; the store says
        // which.
        if ask_running_engine(&files.socket, &asked, Duration::from_secs(secs))?.is_none() {
            eprintln!("dmdeleg: no engine is running here; this is what the store holds now");
        }
    }
    let conn = store::open(db)?;
    let Some(mut row) = store::delegations::load(&conn, id)? else {
        bail!("no delegation {id} in {}", db.display());
    };
    // The machine may hold the peer's account secrets while it runs: never shown.
    row.machine.clear();
    row.account = None;
    row.outbox.clear();
    let events = store::delegations::events(&conn, id)?;
    let messages = store::delegations::messages(&conn, id)?;
    if wait.json {
        let out = serde_json::json!({
            "delegation": row,
            "events": events,
            "messages": messages,
        });
        println!("{out}");
    } else {
        let kind = if row.full {
            "Full".to_owned()
        } else {
            format!("Partial {}", row.paths.join(" "))
        };
        let approach = if row.bootstrap {
            "Bootstrap URL"
        } else {
            "DMAcc"
        };
        println!(
            "delegation {} ({} device {} with {}; {kind}, {approach}): {}, step {}",
            row.id, row.role, row.dev_id, row.peer, row.state, row.step
        );
        if let Some(code) = row.reason_code {
            println!(
                "reason: {code} {}",
                row.reason_text.as_deref().unwrap_or("")
            );
        }
        if let Some(first) = &row.retry_of {
            println!("retries: {first}");
        }
        println!(
            "started {} UTC, last change {} UTC",
            utc(row.created_ms),
            utc(row.updated_ms)
        );
        println!("timeline:");
        for e in &events {
            println!("  {}  {}  {}", utc_millis(e.at_ms), e.step, e.text);
        }
        println!("messages with {}:", row.peer);
        for m in &messages {
            let way = if m.outgoing { "sent    " } else { "received" };
            println!(
                "  {}  {way} {} (Seq {})",
                utc_millis(m.at_ms),
                m.msg_type,
                m.msg_seq
            );
            if xml {
                println!("    {}", m.xml);
            }
        }
    }
    if !wait.wait {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(match row.state.as_str() {
        "Completed" => ExitCode::SUCCESS,
        "Failed" | "Aborted" => ExitCode::FAILURE,
        _ => {
            eprintln!("dmdeleg: not over yet; it goes on in the engine");
            ExitCode::from(2)
        }
    })
}

fn list_delegations(
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    states: Vec<String>,
    device: Option<String>,
    peer: Option<String>,
    limit: Option<usize>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let files = ServerFiles::find(config.as_deref(), data_dir)?;
    let db = files.stored_db()?;
    let filter = store::delegations::HistoryFilter {
        dev_id: device,
        peer,
        states: states
            .iter()
            .map(|s| state_name(s).map(str::to_owned))
            .collect::<anyhow::Result<_>>()?,
        limit,
        ..Default::default()
    };
    let conn = store::open(db)?;
    let rows = store::delegations::history(&conn, &filter)?;
    if json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<36} {:<10} {:<16} {:<24} {:<16} {:<16} {:>4} {:<19} reason",
        "delegation", "role", "peer", "device", "kind", "state", "step", "updated (UTC)"
    );
    for r in &rows {
        let mut kind = if r.full {
            "Full".to_owned()
        } else {
            format!("Partial({})", r.paths.len())
        };
        if r.bootstrap {
            kind.push_str("+boot");
        }
        let reason = match (&r.reason_code, &r.reason_text) {
            (Some(c), Some(t)) => format!("{c} {t}"),
            (Some(c), None) => c.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "-".into(),
        };
        println!(
            "{:<36} {:<10} {:<16} {:<24} {:<16} {:<16} {:>4} {:<19} {}",
            r.id,
            r.role,
            r.peer,
            r.dev_id,
            kind,
            r.state,
            r.step,
            utc(r.updated_ms),
            reason
        );
    }
    println!(
        "{} delegation{} ({})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) of Unix milliseconds: a delegation's steps are often
/// milliseconds apart.
fn utc_millis(ms: i64) -> String {
    format!("{}.{:03}", utc(ms), ms.rem_euclid(1000))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix milliseconds.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let opts = DemoOptions {
        devices: args.devices,
        paths: args.partial,
        bootstrap: args.bootstrap,
        initiator: match args.initiator {
            InitiatorArg::Delegating => Role::Delegating,
            InitiatorArg::Delegated => Role::Delegated,
        },
        dir: args.dir,
        concurrency: args.concurrency,
        timeout: Duration::from_secs(args.timeout_secs),
    };
    let what = format!(
        "{} {}, initiated by the {} server",
        if opts.paths.is_empty() {
            "Full".to_owned()
        } else {
            format!("Partial ({})", opts.paths.join(", "))
        },
        if opts.bootstrap { "bootstrap" } else { "DMAcc" },
        match opts.initiator {
            Role::Delegating => "delegating",
            Role::Delegated => "delegated",
        }
    );
    let report = dmdeleg::demo::run(opts).await?;
    print_demo(&report, &what);
    Ok(if report.failed_total() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_demo(r: &DemoReport, what: &str) {
    let ms = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    println!(
        "demo: lab in {}{}; {}",
        r.dir.display(),
        if r.dir_removed { " (removed)" } else { "" },
        r.urls
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "demo: lab started in {:.2} s; {} devices inventoried in {:.2} s ({} failed); RSS then {} MB",
        r.lab_start.as_secs_f64(),
        r.devices,
        r.inventory.as_secs_f64(),
        r.inventory_failures,
        r.setup_rss_mb
    );
    println!(
        "demo: {} delegations, {what}, in {:.2} s",
        r.devices,
        r.wall.as_secs_f64()
    );
    println!(
        "{:<28} {:>8} {:>10} {:>10}",
        "step (DMS-1's timeline)", "passed", "p50", "p99"
    );
    for s in &r.steps {
        println!(
            "{:<28} {:>8} {:>10} {:>10}",
            format!("{} {}", s.step as u8, s.name),
            s.passed,
            ms(s.p50_ms),
            ms(s.p99_ms)
        );
    }
    println!(
        "outcomes: {} completed ({} not as promised on the device), {} failed, {} aborted, {} not over or refused; {} rolled back",
        r.completed, r.violations, r.failed, r.aborted, r.unfinished, r.rolled_back
    );
    println!("{}", r.traffic_line());
    println!("{}", r.cpu_line());
    for p in &r.problems {
        eprintln!(
            "demo: {} {}: {}",
            p.dev_id,
            p.id.as_deref().unwrap_or("(not started)"),
            p.what
        );
    }
    println!("{}", r.summary_line());
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
