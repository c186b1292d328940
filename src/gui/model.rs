//! What the console shows, as plain immutable data: the backend builds a [`Snapshot`] off the
//! UI thread and swaps it in whole; views only read it. Also the commands views send and the
//! events the backend answers with (STYLE.md section 4, items 9 to 11).

use std::path::PathBuf;
use std::sync::Arc;

use crate::delegation::machine::{Role, State};
use crate::engine::driver::{DelegationSummary, StartRequest};
use crate::engine::peers::NewPeer;
use crate::store::delegations::{AuditFilter, AuditRow, DelegationRow, EventRow, JournalEntry};

use super::table::{DelegationTable, DeviceTable};
use super::tree::TreeModel;

/// Everything the views read, published as one `Arc` by the backend.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Grows with every publication.
    pub version: u64,
    /// Whether the engines run yet.
    pub phase: Phase,
    /// One entry per engine the console drives (DMS-1 and DMS-2 in the lab).
    pub servers: Vec<ServerView>,
    /// The bulk delegation in progress or last run.
    pub bulk: Option<BulkProgress>,
    /// True when the engines are the embedded lab.
    pub lab: bool,
}

/// Where the backend is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Phase {
    /// Starting, with what it is doing.
    #[default]
    Starting,
    /// Running.
    Ready,
    /// It could not start: why, in plain words.
    Failed(String),
}

/// One engine as the console shows it.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    /// Its ServerID.
    pub server_id: String,
    /// A short name for tabs ("DMS-1").
    pub label: String,
    /// Where its devices reach it.
    pub devices_url: String,
    /// Its peer endpoint, when it has one.
    pub peer_url: Option<String>,
    /// Its enrolled devices, in DevId order, with their sort orders and search texts.
    pub devices: Arc<DeviceTable>,
    /// Its delegations, newest change first, with their search texts.
    pub delegations: Arc<DelegationTable>,
    /// Its peers.
    pub peers: Arc<Vec<PeerView>>,
}

impl ServerView {
    /// The delegation with this id.
    pub fn delegation(&self, id: &str) -> Option<&DelegationItem> {
        self.delegations.iter().find(|d| d.id == id)
    }

    /// The ServerIDs of its peers.
    pub fn peer_ids(&self) -> Vec<String> {
        self.peers.iter().map(|p| p.server_id.clone()).collect()
    }
}

/// One enrolled device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRow {
    /// `./DevInfo/DevId`.
    pub dev_id: String,
    /// `./DevInfo/Man`.
    pub man: String,
    /// `./DevInfo/Mod`.
    pub model: String,
    /// Its last completed session, Unix milliseconds.
    pub last_seen_ms: Option<i64>,
    /// The ServerIDs of the DMAcc accounts in its cached tree ("(dormant)" marked).
    pub managers: String,
    /// Nodes in the cached tree (0: not inventoried yet).
    pub nodes: usize,
}

/// One delegation, from the engine's board or, for older ones, the store's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationItem {
    /// The DelegationID.
    pub id: String,
    /// This server's role.
    pub role: Role,
    /// The peer's ServerID.
    pub peer: String,
    /// The device.
    pub dev_id: String,
    /// Full or Partial.
    pub full: bool,
    /// Bootstrap Server URL approach.
    pub bootstrap: bool,
    /// Delegated subtrees (Partial).
    pub paths: Vec<String>,
    /// The state.
    pub state: State,
    /// The step, 1 to 8.
    pub step: u8,
    /// What it waits for, in plain words ("nothing" once over).
    pub waiting_for: String,
    /// The failure reason code and text.
    pub reason: Option<(u16, String)>,
    /// When it started, Unix milliseconds.
    pub created_ms: i64,
    /// Its last change.
    pub updated_ms: i64,
    /// Its next deadline.
    pub deadline: Option<i64>,
    /// The delegation it retries.
    pub retry_of: Option<String>,
    /// Messages the peer has not acknowledged yet.
    pub unsent: usize,
}

/// Parses a state name as the store writes it.
pub fn parse_state(s: &str) -> Option<State> {
    Some(match s {
        "Running" => State::Running,
        "AwaitingOperator" => State::AwaitingOperator,
        "RollingBack" => State::RollingBack,
        "Completed" => State::Completed,
        "Failed" => State::Failed,
        "Aborted" => State::Aborted,
        _ => return None,
    })
}

/// The state in words for people.
pub fn state_words(s: State) -> &'static str {
    match s {
        State::Running => "Running",
        State::AwaitingOperator => "Awaiting operator",
        State::RollingBack => "Rolling back",
        State::Completed => "Completed",
        State::Failed => "Failed",
        State::Aborted => "Aborted",
    }
}

/// Every state, in the order filters list them.
pub const STATES: [State; 6] = [
    State::Running,
    State::AwaitingOperator,
    State::RollingBack,
    State::Completed,
    State::Failed,
    State::Aborted,
];

impl From<&DelegationSummary> for DelegationItem {
    fn from(s: &DelegationSummary) -> Self {
        DelegationItem {
            id: s.id.clone(),
            role: s.role,
            peer: s.peer.clone(),
            dev_id: s.dev_id.clone(),
            full: s.full,
            bootstrap: s.bootstrap,
            paths: s.paths.clone(),
            state: s.state,
            step: s.step,
            waiting_for: s.waiting_for.clone(),
            reason: s.reason.clone(),
            created_ms: s.created_ms,
            updated_ms: s.updated_ms,
            deadline: s.deadline,
            retry_of: s.retry_of.clone(),
            unsent: s.unsent,
        }
    }
}

impl DelegationItem {
    /// From a stored row (a delegation from an earlier run); `None` for an unknown state.
    pub fn from_row(r: &DelegationRow) -> Option<DelegationItem> {
        let state = parse_state(&r.state)?;
        Some(DelegationItem {
            id: r.id.clone(),
            role: if r.role == "Delegated" {
                Role::Delegated
            } else {
                Role::Delegating
            },
            peer: r.peer.clone(),
            dev_id: r.dev_id.clone(),
            full: r.full,
            bootstrap: r.bootstrap,
            paths: r.paths.clone(),
            state,
            step: r.step,
            waiting_for: if state.is_terminal() {
                "nothing".into()
            } else {
                "the engine to resume it".into()
            },
            reason: r
                .reason_code
                .map(|c| (c, r.reason_text.clone().unwrap_or_default())),
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            deadline: None,
            retry_of: r.retry_of.clone(),
            unsent: 0,
        })
    }

    /// "Full" or "Partial (n)", with "+boot" for the bootstrap approach.
    pub fn kind(&self) -> String {
        let k = if self.full {
            "Full".to_owned()
        } else {
            format!("Partial ({})", self.paths.len())
        };
        if self.bootstrap {
            format!("{k} +boot")
        } else {
            k
        }
    }

    /// True while it waits for the device (not a failure: devices may be offline for a while).
    pub fn waits_for_device(&self) -> bool {
        !self.state.is_terminal() && self.waiting_for.starts_with("the device")
    }

    /// True while its messages to the peer are being retried.
    pub fn peer_retrying(&self) -> bool {
        !self.state.is_terminal() && self.unsent > 0
    }
}

/// How a peer answered the last reachability check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reach {
    /// Not checked yet.
    #[default]
    Unknown,
    /// Being checked.
    Checking,
    /// A TLS handshake completed in this many milliseconds.
    Up(u64),
    /// It could not be reached: why.
    Down(String),
}

/// A peer server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Its ServerID.
    pub server_id: String,
    /// Its peer endpoint.
    pub url: String,
    /// What happens to its requests: accept, decline or operator.
    pub policy: String,
    /// How its certificate is recognised, in words.
    pub auth: String,
    /// The SHA-256 fingerprint of its certificate (pinned, or as last presented).
    pub fingerprint: Option<String>,
    /// Its certificate's notAfter, as `YYYY-MM-DD HH:MM UTC`.
    pub expires: Option<String>,
    /// Its certificate's notAfter, Unix milliseconds.
    pub expires_ms: Option<i64>,
    /// Reachability.
    pub reach: Reach,
    /// Added from the console (or another operator) while the engine ran, so it can be
    /// removed here; configured peers are changed in their file.
    pub removable: bool,
}

/// A peer's certificate file as read before adding the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The certificate that will be pinned (the file's first): its SHA-256 fingerprint.
    pub fingerprint: String,
    /// Its notAfter, `YYYY-MM-DD HH:MM:SS` (UTC).
    pub expires: String,
    /// Its notAfter, Unix milliseconds.
    pub expires_ms: i64,
    /// Certificates in the file (a chain has more than one; only the first is pinned).
    pub in_file: usize,
}

/// A bulk delegation's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkProgress {
    /// The engine it runs on.
    pub server: usize,
    /// Devices in the batch.
    pub total: usize,
    /// Delegations started.
    pub started: usize,
    /// Delegations completed.
    pub completed: usize,
    /// Delegations that failed, were refused or did not end in time.
    pub failed: usize,
    /// The failures that stop the batch.
    pub max_failures: usize,
    /// At most this many at a time.
    pub concurrency: usize,
    /// Why it stopped early, if it did.
    pub stopped: Option<String>,
    /// True once every started delegation has ended.
    pub finished: bool,
    /// The first failures, one line each.
    pub errors: Vec<String>,
}

impl BulkProgress {
    /// Delegations that ended, either way.
    pub fn done(&self) -> usize {
        self.completed + self.failed
    }
}

/// How serious a notice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Something worked.
    Info,
    /// Something did not work.
    Error,
}

/// A message for the operator, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// How serious.
    pub severity: Severity,
    /// What happened.
    pub text: String,
    /// When, Unix milliseconds.
    pub at_ms: i64,
}

/// One step of a delegation's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineStep {
    /// 1 to 8.
    pub step: u8,
    /// Its name.
    pub name: &'static str,
    /// Who acts in it.
    pub who: String,
    /// Its first event, Unix milliseconds (`None`: not reached).
    pub started_ms: Option<i64>,
    /// Until the next step's first event (or the last event), milliseconds.
    pub duration_ms: Option<i64>,
    /// Its events.
    pub events: Vec<EventRow>,
}

/// A device command from the journal, with what the events say of its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// "change" or "undo".
    pub kind: &'static str,
    /// The command in words.
    pub text: String,
    /// Its status, as far as the timeline tells.
    pub status: String,
}

/// A message exchanged with the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    /// When.
    pub at_ms: i64,
    /// True when this server sent it.
    pub outgoing: bool,
    /// Its Seq.
    pub seq: u32,
    /// Its type.
    pub msg_type: String,
    /// Pretty-printed XML.
    pub xml: String,
}

/// Everything one delegation's timeline shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// The DelegationID.
    pub id: String,
    /// The eight steps.
    pub steps: Vec<TimelineStep>,
    /// Its messages.
    pub messages: Vec<MessageView>,
    /// Its device commands (change, then undo).
    pub commands: Vec<CommandLine>,
    /// Its audit lines (who decided what).
    pub audit: Vec<AuditRow>,
    /// The raw journal entries.
    pub journal: Vec<JournalEntry>,
    /// Its stored row's state.
    pub state: String,
}

/// What a delegation would change on a device, before it starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreviewView {
    /// Nodes added (subtree roots).
    pub added: Vec<String>,
    /// ACLs changed: node, before, after.
    pub acls: Vec<(String, String, String)>,
    /// The commands, in words.
    pub changes: Vec<String>,
    /// The undo, in words.
    pub undo: Vec<String>,
    /// What step 8 would do (Full only), in words.
    pub note: Option<String>,
}

/// What a preview is for (a preview answers one exact question).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreviewKey {
    /// The engine.
    pub server: usize,
    /// The device.
    pub dev_id: String,
    /// The peer.
    pub peer: String,
    /// Full or Partial.
    pub full: bool,
    /// The subtrees of a Partial delegation.
    pub paths: Vec<String>,
    /// Bootstrap approach.
    pub bootstrap: bool,
}

/// Points of the audit chart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChartData {
    /// Per outcome name, (bucket start in minutes since the first bucket, count).
    pub outcomes: Vec<(String, Vec<(f64, f64)>)>,
    /// Per step (1 to 8), (time in minutes since the first bucket, duration in ms).
    pub step_durations: Vec<(u8, Vec<(f64, f64)>)>,
    /// The first bucket's start, Unix milliseconds.
    pub origin_ms: i64,
    /// Bucket width, minutes.
    pub bucket_minutes: f64,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// CSV with a header row.
    Csv,
    /// A JSON array.
    Json,
}

/// What views ask of the backend.
#[derive(Debug)]
#[non_exhaustive]
pub enum UiCommand {
    /// Start one delegation.
    Delegate {
        /// The engine.
        server: usize,
        /// What to start.
        req: StartRequest,
    },
    /// Delegate many devices.
    Bulk {
        /// The engine.
        server: usize,
        /// The devices.
        dev_ids: Vec<String>,
        /// Peer, kind, approach and lease (its device is replaced for each).
        template: StartRequest,
        /// At most this many at a time.
        concurrency: usize,
        /// Stop starting new ones once this many failed.
        max_failures: usize,
    },
    /// Stop the bulk delegation (no new starts; running ones go on).
    StopBulk,
    /// Accept an incoming request.
    Accept {
        /// The engine.
        server: usize,
        /// The delegation.
        id: String,
    },
    /// Decline an incoming request.
    Decline {
        /// The engine.
        server: usize,
        /// The delegation.
        id: String,
        /// Why, for the peer.
        reason: String,
    },
    /// Abort a running delegation.
    Abort {
        /// The engine.
        server: usize,
        /// The delegation.
        id: String,
    },
    /// Retry a failed or aborted delegation.
    Retry {
        /// The engine.
        server: usize,
        /// The delegation.
        id: String,
    },
    /// Load a device's cached tree.
    LoadTree {
        /// The engine.
        server: usize,
        /// The device.
        dev_id: String,
    },
    /// Compute what a delegation would change.
    Preview(PreviewKey),
    /// Follow one delegation's timeline (`None`: none).
    Watch {
        /// The engine.
        server: usize,
        /// The delegation.
        id: Option<String>,
    },
    /// Read the audit log.
    Audit {
        /// The engine.
        server: usize,
        /// Which lines.
        filter: AuditFilter,
    },
    /// Write the audit lines of a filter to a file.
    Export {
        /// The engine.
        server: usize,
        /// Which lines.
        filter: AuditFilter,
        /// CSV or JSON.
        format: ExportFormat,
        /// Where.
        path: PathBuf,
    },
    /// Check that the peers answer.
    CheckPeers {
        /// The engine.
        server: usize,
    },
    /// Lab only: make a simulated device refuse commands under `fail_path` (`None`: behave).
    LabFault {
        /// The device.
        dev_id: String,
        /// Where it refuses (500), or nothing.
        fail_path: Option<String>,
    },
    /// Read a peer's certificate file, to show what would be pinned before adding the peer.
    ReadPeerCert {
        /// The engine.
        server: usize,
        /// The certificate file (PEM).
        path: PathBuf,
    },
    /// Add a peer, pinned to the certificate in its file; it takes part at once.
    AddPeer {
        /// The engine.
        server: usize,
        /// The peer.
        peer: NewPeer,
    },
    /// Un-enrol a device that is in no delegation.
    RemoveDevice {
        /// The engine.
        server: usize,
        /// The device.
        dev_id: String,
    },
    /// Remove a peer added at run time.
    RemovePeer {
        /// The engine.
        server: usize,
        /// Its ServerID.
        server_id: String,
    },
}

/// What the backend answers.
#[derive(Debug)]
#[non_exhaustive]
pub enum BackendEvent {
    /// A message for the operator.
    Notice(Notice),
    /// A delegation started.
    Started {
        /// The engine.
        server: usize,
        /// Its id.
        id: String,
        /// The device.
        dev_id: String,
    },
    /// A device's tree.
    Tree {
        /// The engine.
        server: usize,
        /// The device.
        dev_id: String,
        /// The tree, or why there is none.
        tree: Result<Arc<TreeModel>, String>,
    },
    /// A preview.
    Preview {
        /// Its question.
        key: PreviewKey,
        /// Its answer, or why the plan cannot be made.
        result: Result<PreviewView, String>,
    },
    /// A delegation's timeline.
    Detail {
        /// The engine.
        server: usize,
        /// The timeline.
        detail: Arc<Detail>,
    },
    /// Audit lines and the chart of the same filter.
    Audit {
        /// The engine.
        server: usize,
        /// The lines, oldest first.
        rows: Arc<Vec<AuditRow>>,
        /// The chart.
        chart: Arc<ChartData>,
    },
    /// A certificate file read for the Add peer form.
    PeerCert {
        /// The engine.
        server: usize,
        /// The file.
        path: PathBuf,
        /// What would be pinned, or why it cannot be.
        result: Result<CertSummary, String>,
    },
    /// The answer to [`UiCommand::AddPeer`].
    PeerAdded {
        /// The engine.
        server: usize,
        /// The ServerID added, or why not.
        result: Result<String, String>,
    },
    /// The answer to [`UiCommand::RemovePeer`].
    PeerRemoved {
        /// The engine.
        server: usize,
        /// The ServerID removed, or why not.
        result: Result<String, String>,
    },
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn time_text(ms: i64) -> String {
    let s = crate::store::delegations::rfc3339_utc(ms);
    // 2023-11-14T22:13:20.123Z
    s.get(..19).map(|t| t.replace('T', " ")).unwrap_or(s)
}

/// A duration in milliseconds for people: `850 ms`, `3.2 s`, `4 min 10 s`.
pub fn duration_text(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000)
    }
}

/// How long ago, in words.
pub fn ago_text(now_ms: i64, ms: i64) -> String {
    let d = (now_ms - ms).max(0) / 1000;
    if d < 60 {
        format!("{d} s ago")
    } else if d < 3600 {
        format!("{} min ago", d / 60)
    } else if d < 86_400 {
        format!("{} h ago", d / 3600)
    } else {
        format!("{} days ago", d / 86_400)
    }
}
