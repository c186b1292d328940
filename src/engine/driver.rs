//! The delegation driver: one tokio task that owns every live delegation's state machine
//! ([`crate::delegation::machine`]) and performs what they ask, in the order DESIGN.md
//! section 4 requires: it takes a batch of inputs (peer messages, device outcomes, send
//! outcomes, device sessions, operator commands, timers), feeds them to the machines, writes
//! every transition with its events, messages and journal in one store transaction (group
//! commit), and only after that commit answers the peers and releases the effects: messages
//! to peers (retried with backoff), commands to devices with a Package #0, enrolments and
//! bootstrap tokens. On start it resumes every live delegation from the store.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use super::bootstrap::{BootstrapTokens, Served};
use super::devices::{DeviceEvent, DeviceRecord};
use super::dm_server::DmServer;
use super::peer_client::{Attempt, PeerClient};
use super::peer_endpoint::{Inbound, PeerAnswer};
use super::peers::{PeerDirectory, Policy};
use crate::delegation::machine::{
    Action, Deadlines, Delegation, DeviceResult, Input, OperatorAction, Reject, Role, Start, State,
    StoredCommand, UnixMs, Wait,
};
use crate::delegation::messages::{DelegationId, DeviceInfo, Message};
use crate::delegation::plan::account_name;
use crate::delegation::reason::ReasonCode;
use crate::dm::acl::Acl;
use crate::dm::mo::DmAcc;
use crate::dm::tnds::{TndsDocument, TndsNode};
use crate::dm::uri::NodeUri;
use crate::store::delegations::{
    AuditRow, DelegationRow, EventRow, JournalEntry, JournalKind, MessageRow, Transition,
};
use crate::store::{Store, StoreError};
use crate::syncml::auth::{AuthScheme, Password};
use crate::syncml::session::creds::Credentials;

/// Most inputs one batch (one transaction) takes.
const MAX_BATCH: usize = 1024;

/// How many times the driver lets the runtime run its other ready tasks between the first
/// input of a batch and taking the batch. Their inputs then share the batch's commit: fewer,
/// larger transactions, each with one fsync and one copy of the pages they share (the tables'
/// last pages, the indexes' roots). `demo --devices 5000`, per delegation: 0 yields, 145
/// pwrites and 3.2 fsyncs; 1, 126 and 2.6; 2, 117 and 2.4; 4, 106 and 2.2, but from 4 on the
/// cores idled while the driver waited (1.75 of 2 busy against 1.90). At 8,000 devices, five
/// alternating pairs of non-LTO builds, 0 against 2 yields: 4.57 against 3.95 ms of CPU per
/// delegation, 418 against 468 delegations/s, 2 ahead in all five. At 10,000 devices, four
/// pairs of LTO builds: 4.12 against 3.92 ms (system 1.05 against 0.91), but 1.89 against
/// 1.82 cores busy, so 459 against 464/s: the same within the noise.
const YIELDS_BEFORE_BATCH: usize = 2;

/// Fault injection for the crash tests: with `DMDELEG_TEST_PAUSE=before:X` (or `after:X`) in
/// the environment, where X is a step number (1 to 8) or what a Delegating delegation waits
/// for (`Changes`, `Confirm`, ...), the driver stops for good right after committing the first
/// transition of the Delegating role that reaches X, before (or after) releasing its
/// effects, and says so on stderr. The test then kills the process with SIGKILL.
const PAUSE_ENV: &str = "DMDELEG_TEST_PAUSE";

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> UnixMs {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why an operator command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandRefused {
    /// The peer is not configured.
    #[error("{0} is not a configured peer")]
    UnknownPeer(String),
    /// The device is not enrolled here.
    #[error("device {0} is not enrolled on this server")]
    UnknownDevice(String),
    /// The device is already in a delegation.
    #[error("device {dev_id} is already in delegation {id} (1003 Busy)")]
    Busy {
        /// The device.
        dev_id: String,
        /// The delegation it is in.
        id: String,
    },
    /// A path is not a valid node URI.
    #[error("{0}")]
    BadRequest(String),
    /// No such delegation (or it is over).
    #[error("no running delegation {0}")]
    NotFound(String),
    /// The delegation refused the command in its state.
    #[error("{0}")]
    NotNow(String),
    /// The store failed; nothing was done.
    #[error("the store failed: {0}")]
    Store(String),
    /// The engine is stopping.
    #[error("the engine is stopping")]
    Stopped,
}

/// A new delegation, as an operator asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    /// The peer's ServerID.
    pub peer: String,
    /// The device.
    pub dev_id: String,
    /// This server's role: Delegating hands the device to the peer, Delegated asks for it.
    pub role: Role,
    /// Full, or Partial with `paths`.
    pub full: bool,
    /// The subtrees of a Partial delegation.
    pub paths: Vec<String>,
    /// The Bootstrap Server URL approach instead of DMAcc.
    pub bootstrap: bool,
    /// A lease in seconds (a temporary delegation).
    pub lease: Option<u64>,
    /// Delegated role only: the device's manufacturer, model and push address, which this
    /// server does not know from an enrolment.
    pub device: Option<DeviceInfo>,
    /// The failed delegation this one retries.
    pub retry_of: Option<String>,
}

/// Operator commands the driver takes.
#[derive(Debug)]
pub(crate) enum Command {
    Start(
        StartRequest,
        oneshot::Sender<Result<String, CommandRefused>>,
    ),
    Operator(
        String,
        OperatorAction,
        oneshot::Sender<Result<(), CommandRefused>>,
    ),
    /// Un-enrol a device that is in no delegation.
    RemoveDevice(String, oneshot::Sender<Result<(), CommandRefused>>),
    Stop(oneshot::Sender<()>),
}

/// Inputs from the engine's own tasks.
#[derive(Debug)]
pub(crate) enum Internal {
    DeviceDone {
        id: String,
        op: u32,
        result: DeviceResult,
    },
    Sent {
        id: String,
        seq: u32,
        attempt: Attempt,
    },
    SendRetry {
        id: String,
        seq: u32,
        attempt: u32,
        why: String,
    },
    /// The delegation's peer is not in the directory any more: its messages cannot go.
    PeerGone {
        id: String,
        seq: u32,
    },
    Device(DeviceEvent),
    Served(Served),
    Command(Command),
}

/// What the console and tests see of a delegation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DelegationSummary {
    /// The DelegationID.
    pub id: String,
    /// This server's role.
    pub role: Role,
    /// Who initiated.
    pub initiator: Role,
    /// The peer.
    pub peer: String,
    /// The device.
    pub dev_id: String,
    /// Full or Partial.
    pub full: bool,
    /// Bootstrap approach.
    pub bootstrap: bool,
    /// Delegated subtrees.
    pub paths: Vec<String>,
    /// The state.
    pub state: State,
    /// The step (1 to 8).
    pub step: u8,
    /// What it waits for, in plain words.
    pub waiting_for: String,
    /// The failure reason code and text.
    pub reason: Option<(u16, String)>,
    /// When it started.
    pub created_ms: UnixMs,
    /// Last change.
    pub updated_ms: UnixMs,
    /// The next deadline.
    pub deadline: Option<UnixMs>,
    /// The delegation this one retries.
    pub retry_of: Option<String>,
    /// Messages waiting to be acknowledged by the peer.
    pub unsent: usize,
}

#[cfg(test)]
impl DelegationSummary {
    /// A Full DMAcc delegation of `IMEI:<id>` to dms2.example, in `state`, started and last
    /// changed at `at_ms` (for tests).
    pub(crate) fn sample(id: &str, state: State, at_ms: UnixMs) -> DelegationSummary {
        DelegationSummary {
            id: id.to_owned(),
            role: Role::Delegating,
            initiator: Role::Delegating,
            peer: "dms2.example".into(),
            dev_id: format!("IMEI:{id}"),
            full: true,
            bootstrap: false,
            paths: vec![".".into()],
            state,
            step: 1,
            waiting_for: "nothing".into(),
            reason: None,
            created_ms: at_ms,
            updated_ms: at_ms,
            deadline: None,
            retry_of: None,
            unsent: 0,
        }
    }
}

impl DelegationSummary {
    /// Over for the engine: ended, waiting for nothing (no lease running) and with every
    /// message delivered or given up.
    pub fn is_over(&self) -> bool {
        self.state.is_terminal() && self.waiting_for == "nothing" && self.unsent == 0
    }
}

/// How many ended delegations the board keeps (the newest); older ones are read from the
/// store (the console's history), so a long-running engine's memory stays bounded.
pub const ENDED_ON_BOARD: usize = 10_000;

/// How many ended delegations the driver remembers in memory for late duplicates of their
/// messages (the newest); an older one is looked up in the store when a message names it.
pub const ENDED_IN_MEMORY: usize = 50_000;

/// The summaries of the delegations this engine runs and of the newest [`ENDED_ON_BOARD`]
/// that ended, shared with the console.
#[derive(Debug, Default)]
pub struct Board {
    /// By DelegationID.
    pub delegations: HashMap<String, DelegationSummary>,
    /// The ended delegations on the board, oldest first.
    ended: VecDeque<String>,
    /// Who waits for a delegation to end, by DelegationID.
    waiters: HashMap<String, Vec<oneshot::Sender<()>>>,
}

impl Board {
    /// Records that `id` no longer needs the engine and tells whoever waits for that; the
    /// oldest ended summaries beyond [`ENDED_ON_BOARD`] leave the board.
    pub fn ended(&mut self, id: &str) {
        for waiter in self.waiters.remove(id).unwrap_or_default() {
            // A waiter that gave up needs no word.
            let _ = waiter.send(());
        }
        self.ended.push_back(id.to_owned());
        while self.ended.len() > ENDED_ON_BOARD {
            if let Some(old) = self.ended.pop_front() {
                self.delegations.remove(&old);
            }
        }
    }
}

impl Board {
    /// A receiver told when `id` ends (see [`Board::ended`]).
    pub fn wait_ended(&mut self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters.entry(id.to_owned()).or_default().push(tx);
        rx
    }

    /// Forgets the waiters of `id` that gave up.
    pub fn forget_gone_waiters(&mut self, id: &str) {
        if let Some(waiters) = self.waiters.get_mut(id) {
            waiters.retain(|w| !w.is_closed());
            if waiters.is_empty() {
                self.waiters.remove(id);
            }
        }
    }
}

/// Plain words for what a delegation waits for.
pub fn waiting_words(wait: &Wait) -> &'static str {
    match wait {
        Wait::Decision => "an operator's decision",
        Wait::Resp => "the peer's answer",
        Wait::Start => "the peer's account",
        Wait::UrlDelivery => "the peer's bootstrap URL",
        Wait::Snapshot => "the device to list its tree",
        Wait::Changes => "the device to take the changes",
        Wait::Verify => "the device to list its tree (after a restart)",
        Wait::Confirm => "the peer to confirm",
        Wait::CleanupSnapshot | Wait::Cleanup => "the device, to remove this server's account",
        Wait::Undo => "the device to take the undo",
        Wait::Lease => "the lease to end",
        Wait::UrlRequest => "the peer to ask for a bootstrap URL",
        Wait::MakeUrl => "a bootstrap URL",
        Wait::Prepared => "the peer to prepare the device",
        Wait::Activation => "the device to activate the account",
        Wait::DeviceSession => "the device to fetch its bootstrap and call",
        Wait::Nothing => "nothing",
    }
}

/// A message waiting to go to the peer, with its XML: written once, it is the body sent
/// (each attempt), what the store keeps of the unsent message, and (but for
/// DELEGATION_START, whose secrets the log does not keep) the logged copy.
#[derive(Clone)]
struct Outgoing {
    msg: Message,
    xml: String,
}

impl Outgoing {
    fn new(msg: Message) -> Outgoing {
        let xml = crate::xmltext::into_text(msg.to_xml());
        Outgoing { msg, xml }
    }

    /// The message as the log keeps it.
    fn logged(&self) -> String {
        logged_copy(&self.msg, &self.xml)
    }
}

/// What the log keeps of a message whose XML is `xml`: the XML itself, but for
/// DELEGATION_START, the only message that carries secrets, which is written again redacted.
fn logged_copy(msg: &Message, xml: &str) -> String {
    match msg.body {
        crate::delegation::messages::Body::Start { .. } => msg.to_xml_redacted(),
        _ => xml.to_owned(),
    }
}

/// One live delegation in the driver.
struct Live {
    d: Delegation,
    outbox: VecDeque<Outgoing>,
    sending: Option<u32>,
    send_task: Option<tokio::task::JoinHandle<()>>,
    device_tags: Vec<u64>,
    retry_of: Option<String>,
    created_ms: UnixMs,
    extra_events: Vec<EventRow>,
    messages: Vec<MessageRow>,
    audit: Vec<AuditRow>,
    /// The device changes and their undo as the journal table holds them: the journal is
    /// rewritten whenever the machine's differ (whatever the machine did to them).
    journal_saved: JournalLists,
    /// The Seqs of the outbox's messages as last saved: the stored outbox is rewritten only
    /// when a message was queued or sent since (`None`: the stored one may differ).
    saved_outbox: Option<Vec<u32>>,
    /// The account as last saved in its own column (written when it changes, not with the
    /// machine's JSON at every transition).
    saved_account: Option<String>,
    /// The state and live flag as last saved (`None`: no row yet, or resumed after a restart,
    /// when the first save writes them): an update that changes neither leaves their indexes
    /// alone.
    saved_state: Option<(State, bool)>,
    drain_until: Option<UnixMs>,
    /// Digests of the peer's accepted messages by Seq, so a reused Seq with other content
    /// is told from a plain duplicate.
    seen: HashMap<u32, [u8; 32]>,
    /// Its start and its end are in the log (one line each at INFO; each step is at DEBUG).
    begin_logged: bool,
    end_logged: bool,
}

impl Live {
    fn new(d: Delegation, now: UnixMs, retry_of: Option<String>) -> Live {
        Live {
            d,
            outbox: VecDeque::new(),
            sending: None,
            send_task: None,
            device_tags: Vec::new(),
            retry_of,
            created_ms: now,
            extra_events: Vec::new(),
            messages: Vec::new(),
            audit: Vec::new(),
            journal_saved: JournalLists::default(),
            // What a new row starts with.
            saved_outbox: Some(Vec::new()),
            saved_account: None,
            saved_state: None,
            drain_until: None,
            seen: HashMap::new(),
            begin_logged: false,
            end_logged: false,
        }
    }

    /// Still needs the engine: not terminal, leased, or messages to deliver.
    fn needs_engine(&self) -> bool {
        !self.d.state.is_terminal() || self.d.wait == Wait::Lease || !self.outbox.is_empty()
    }

    fn timer(&self) -> Option<UnixMs> {
        match self.d.poll_timeout() {
            Some(t) => Some(t),
            None => self.drain_until.filter(|_| !self.outbox.is_empty()),
        }
    }

    fn summary(&self, now: UnixMs) -> DelegationSummary {
        let d = &self.d;
        DelegationSummary {
            id: d.id.clone(),
            role: d.role,
            initiator: d.initiator,
            peer: d.peer.clone(),
            dev_id: d.dev_id.clone(),
            full: d.full,
            bootstrap: d.bootstrap,
            paths: d.paths.clone(),
            state: d.state,
            step: d.step as u8,
            waiting_for: waiting_words(&d.wait).to_owned(),
            reason: d.reason.clone(),
            created_ms: self.created_ms,
            updated_ms: now,
            deadline: d.poll_timeout(),
            retry_of: self.retry_of.clone(),
            unsent: self.outbox.len(),
        }
    }
}

/// What a finished delegation leaves for late duplicates.
struct Finished {
    peer: String,
    seq_in: u32,
}

/// The newest [`ENDED_IN_MEMORY`] finished delegations, by DelegationID.
#[derive(Default)]
struct FinishedCache {
    by_id: HashMap<String, Finished>,
    /// Oldest first.
    order: VecDeque<String>,
}

impl FinishedCache {
    fn get(&self, id: &str) -> Option<&Finished> {
        self.by_id.get(id)
    }

    fn insert(&mut self, id: String, finished: Finished) {
        if self.by_id.insert(id.clone(), finished).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > ENDED_IN_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

/// An operator command's reply channel and its answer.
type Answer<T> = (
    oneshot::Sender<Result<T, CommandRefused>>,
    Result<T, CommandRefused>,
);

/// Effects released after a commit.
#[derive(Default)]
struct Effects {
    replies: Vec<(oneshot::Sender<PeerAnswer>, PeerAnswer)>,
    started: Vec<Answer<String>>,
    operator: Vec<Answer<()>>,
    device: Vec<(
        String,
        String,
        u32,
        Vec<crate::syncml::session::DeviceCommand>,
    )>,
    enrol: Vec<DeviceRecord>,
    /// Devices un-enrolled in this batch, with who asked; removed from the store with the
    /// batch's transitions, from the registry once that committed.
    remove: Vec<(String, oneshot::Sender<Result<(), CommandRefused>>)>,
    /// The audit lines of those removals.
    remove_audit: Vec<AuditRow>,
    purge: Vec<String>,
    /// The delegations this batch changed.
    touched: Vec<String>,
    /// Their summaries, for the board after the commit.
    summaries: Vec<DelegationSummary>,
}

/// The engine's parts the driver uses.
pub(crate) struct Parts {
    pub(crate) me: String,
    pub(crate) store: Store,
    pub(crate) dm: Arc<DmServer>,
    pub(crate) peers: Arc<PeerDirectory>,
    pub(crate) client: Option<PeerClient>,
    pub(crate) tokens: Arc<Mutex<BootstrapTokens>>,
    pub(crate) bootstrap_base: Option<String>,
    pub(crate) token_ttl_ms: i64,
    pub(crate) deadlines: Deadlines,
    pub(crate) board: Arc<Mutex<Board>>,
    pub(crate) version: watch::Sender<u64>,
}

/// The driver task's state.
pub(crate) struct Driver {
    parts: Parts,
    live: HashMap<String, Live>,
    finished: FinishedCache,
    busy: HashMap<String, String>,
    timers: BTreeSet<(UnixMs, String)>,
    timer_of: HashMap<String, UnixMs>,
    dirty: HashSet<String>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    pause_at: Option<(bool, String)>,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    // A failing OS generator is not survivable for secrets; fall back to the clock so the
    // engine keeps running, and the secrets are still unique.
    if crate::random::fill(&mut b).is_err() {
        let t = now_ms().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % 8] ^ (i as u8);
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh DelegationID: a time-ordered UUID (version 7), unique by its 74 random bits.
pub fn new_delegation_id() -> DelegationId {
    let mut b = [0u8; 10];
    let _ = crate::random::fill(&mut b);
    DelegationId::time_ordered(now_ms().max(0) as u64, b)
}

impl Driver {
    pub(crate) fn new(parts: Parts, internal_tx: mpsc::UnboundedSender<Internal>) -> Driver {
        Driver {
            parts,
            live: HashMap::new(),
            finished: FinishedCache::default(),
            busy: HashMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            dirty: HashSet::new(),
            internal_tx,
            pause_at: std::env::var(PAUSE_ENV).ok().and_then(|v| {
                let (when, what) = v.trim().split_once(':')?;
                Some((when == "after", what.to_owned()))
            }),
        }
    }

    /// Loads every live delegation from the store and resumes it.
    pub(crate) async fn recover(&mut self) -> Result<usize, StoreError> {
        let rows = self
            .parts
            .store
            .call(|conn| {
                let rows = crate::store::delegations::load_live(conn)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let journal = crate::store::delegations::journal(conn, &row.id)?;
                    out.push((row, journal));
                }
                Ok(out)
            })
            .await?;
        let now = now_ms();
        let n = rows.len();
        for (row, journal) in rows {
            let mut d: Delegation = serde_json::from_str(&row.machine)
                .map_err(|e| StoreError::Corrupt(format!("delegation {}: {e}", row.id)))?;
            let journal_saved = restore_journal(&mut d, &journal)
                .map_err(|e| StoreError::Corrupt(format!("delegation {}: journal: {e}", row.id)))?;
            let outbox: Vec<String> = serde_json::from_str(&row.outbox).unwrap_or_default();
            let mut live = Live::new(d.clone(), row.created_ms, row.retry_of.clone());
            live.begin_logged = true;
            let mut all_read = true;
            for xml in outbox {
                match Message::from_xml(xml.as_bytes()) {
                    Ok(msg) => live.outbox.push_back(Outgoing { msg, xml }),
                    Err(e) => {
                        all_read = false;
                        live.extra_events.push(EventRow {
                            delegation_id: row.id.clone(),
                            at_ms: now,
                            step: d.step as u8,
                            text: format!("a stored message could not be read again: {e}"),
                        });
                    }
                }
            }
            // A row written before the account had a column of its own keeps it in the
            // machine's JSON; then the next save moves it to the column.
            if row.account.is_some() {
                d.account_xml = row.account.clone();
            }
            d.resume(now);
            live.d = d;
            live.journal_saved = journal_saved;
            live.saved_outbox = all_read.then(|| live.outbox.iter().map(|o| o.msg.seq).collect());
            live.saved_account = row.account.clone();
            if live.d.role == Role::Delegated
                && live.d.wait == Wait::DeviceSession
                && let (Some(url), Some(xml)) = (&live.d.bootstrap_url, &live.d.account_xml)
            {
                // The tokens lived in memory: the one delivered is valid again until its
                // deadline.
                let token = url.rsplit('/').next().unwrap_or_default();
                if let Some(bytes) = hex32(token) {
                    let served = self.bootstrap_account(&live.d, xml);
                    let ttl = live.d.deadline.map_or(0, |t| t - now);
                    self.parts
                        .tokens_lock()
                        .issue(&live.d.dev_id, served, now, ttl, bytes);
                }
            }
            live.extra_events.push(EventRow {
                delegation_id: row.id.clone(),
                at_ms: now,
                step: live.d.step as u8,
                text: "the engine restarted; the delegation resumes".to_owned(),
            });
            if live.needs_engine() && !live.d.state.is_terminal() {
                self.busy.insert(live.d.dev_id.clone(), row.id.clone());
            }
            self.live.insert(row.id.clone(), live);
            self.dirty.insert(row.id);
        }
        Ok(n)
    }

    /// Runs until stopped.
    pub(crate) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Inbound>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        // Whatever recovery queued is released first.
        if !self.step(Vec::new(), Vec::new()).await {
            return;
        }
        loop {
            let wait = self
                .timers
                .first()
                .map(|(t, _)| Duration::from_millis((*t - now_ms()).clamp(0, 3_600_000) as u64))
                .unwrap_or(Duration::from_secs(3600));
            let mut peer_batch = Vec::new();
            let mut int_batch = Vec::new();
            tokio::select! {
                m = inbox.recv() => match m {
                    Some(m) => peer_batch.push(m),
                    None => return,
                },
                i = internal.recv() => match i {
                    Some(i) => int_batch.push(i),
                    None => return,
                },
                _ = tokio::time::sleep(wait) => {}
            }
            // Work that is ready now (a device's answer being decoded, a peer's request
            // being read) adds its inputs to this batch before it is taken.
            for _ in 0..YIELDS_BEFORE_BATCH {
                tokio::task::yield_now().await;
            }
            while peer_batch.len() + int_batch.len() < MAX_BATCH {
                if let Ok(m) = inbox.try_recv() {
                    peer_batch.push(m);
                } else if let Ok(i) = internal.try_recv() {
                    int_batch.push(i);
                } else {
                    break;
                }
            }
            // A Stop is taken after the batch it arrived in.
            let mut stop = None;
            let mut rest = Vec::with_capacity(int_batch.len());
            for i in int_batch {
                match i {
                    Internal::Command(Command::Stop(tx)) => stop = Some(tx),
                    other => rest.push(other),
                }
            }
            let int_batch = rest;
            if !self.step(peer_batch, int_batch).await {
                return;
            }
            if let Some(tx) = stop {
                let _ = tx.send(());
                return;
            }
        }
    }

    /// One batch: apply, fire timers, commit, release. False when the store failed (the
    /// engine stops acting; nothing uncommitted left the engine).
    async fn step(&mut self, peer: Vec<Inbound>, internal: Vec<Internal>) -> bool {
        let mut fx = Effects::default();
        let peer = self.recall_finished(peer, &mut fx).await;
        let now = now_ms();
        // What the engine itself learnt (a device's answers) goes first: a peer's message in
        // the same batch may follow from it (a device that took its bootstrap config calls
        // the peer, which confirms).
        for i in internal {
            self.on_internal(now, i, &mut fx);
        }
        for m in peer {
            self.on_peer(now, m, &mut fx);
        }
        self.fire_timers(now);
        let transitions = self.collect(now, &mut fx);
        let pause = self.pause_at.clone().filter(|(_, what)| {
            fx.touched.iter().any(|id| {
                self.live.get(id).is_some_and(|l| {
                    l.d.role == Role::Delegating
                        && !l.d.state.is_terminal()
                        && (what == &(l.d.step as u8).to_string()
                            || what == &format!("{:?}", l.d.wait))
                })
            })
        });
        if !transitions.is_empty() || !fx.enrol.is_empty() || !fx.remove.is_empty() {
            // The devices this batch enrols or un-enrols are saved in the same transaction.
            let enrol = fx.enrol.clone();
            let remove: Vec<String> = fx.remove.iter().map(|(d, _)| d.clone()).collect();
            let remove_audit = std::mem::take(&mut fx.remove_audit);
            let at = std::time::SystemTime::now();
            let saved = self
                .parts
                .store
                .call(move |conn| {
                    crate::store::delegations::save_transitions(conn, &transitions)?;
                    for rec in &enrol {
                        crate::store::devices::upsert(conn, rec, at)?;
                    }
                    for dev in &remove {
                        crate::store::devices::remove(conn, dev)?;
                    }
                    if remove_audit.is_empty() {
                        return Ok(());
                    }
                    crate::store::delegations::append_audit(conn, &remove_audit)
                })
                .await;
            if let Err(e) = saved {
                // Nothing is released: peers get no answer and retry, devices get nothing.
                tracing::error!("the store failed; the delegation driver stops: {e}");
                for (tx, _) in fx.started {
                    let _ = tx.send(Err(CommandRefused::Store(
                        "the delegation could not be stored".into(),
                    )));
                }
                for (_, tx) in fx.remove {
                    let _ = tx.send(Err(CommandRefused::Store(
                        "the removal could not be stored".into(),
                    )));
                }
                return false;
            }
        }
        if let Some((false, what)) = &pause {
            eprintln!("dmdeleg: paused before the effects of {what} (test fault injection)");
            std::future::pending::<()>().await;
        }
        self.release(now, fx).await;
        if let Some((true, what)) = &pause {
            eprintln!("dmdeleg: paused after the effects of {what} (test fault injection)");
            std::future::pending::<()>().await;
        }
        true
    }

    /// Messages naming a delegation that is neither running nor remembered as finished (the
    /// engine restarted, or it ended long ago) are checked against the store first: one that
    /// ended is remembered again, so its late duplicates are answered as such and never
    /// start a new delegation under its ID. When the store cannot say, those messages are
    /// answered 503 (the peer sends them again) and the rest go on.
    async fn recall_finished(&mut self, peer: Vec<Inbound>, fx: &mut Effects) -> Vec<Inbound> {
        let mut unknown: Vec<String> = peer
            .iter()
            .map(|m| m.msg.id.as_str())
            .filter(|id| !self.live.contains_key(*id) && self.finished.get(id).is_none())
            .map(str::to_owned)
            .collect();
        if unknown.is_empty() {
            return peer;
        }
        unknown.sort_unstable();
        unknown.dedup();
        let asked = unknown.clone();
        match self
            .parts
            .store
            .call(move |c| crate::store::delegations::ended(c, &asked))
            .await
        {
            Ok(rows) => {
                for row in rows {
                    let finished = Finished {
                        peer: row.peer,
                        seq_in: row.seq_in,
                    };
                    self.finished.insert(row.id, finished);
                }
                peer
            }
            Err(e) => {
                tracing::warn!("cannot read past delegations; their peers will try again: {e}");
                let (unsure, rest): (Vec<Inbound>, Vec<Inbound>) =
                    peer.into_iter().partition(|m| {
                        let id = m.msg.id.as_str();
                        unknown.binary_search_by(|u| u.as_str().cmp(id)).is_ok()
                    });
                for m in unsure {
                    let answer = PeerAnswer::unavailable("the server cannot read its records");
                    fx.replies.push((m.reply, answer));
                }
                rest
            }
        }
    }

    fn on_peer(&mut self, now: UnixMs, inbound: Inbound, fx: &mut Effects) {
        let Inbound { peer, msg, reply } = inbound;
        let id = msg.id.as_str().to_owned();
        if let Some(live) = self.live.get_mut(&id) {
            if live.d.peer != peer {
                fx.replies
                    .push((reply, PeerAnswer::refused(404, "unknown delegation")));
                return;
            }
            let (xml, digest) = logged_and_digest(&msg);
            let row = MessageRow {
                delegation_id: id.clone(),
                at_ms: now,
                outgoing: false,
                msg_seq: msg.seq,
                msg_type: msg.msg_type().as_str().to_owned(),
                xml,
            };
            let seq = msg.seq;
            let answer = match live.d.handle(now, Input::Peer(msg)) {
                Ok(()) => {
                    live.messages.push(row);
                    live.seen.insert(seq, digest);
                    self.dirty.insert(id);
                    PeerAnswer::accepted()
                }
                Err(Reject::Duplicate(_)) => match live.seen.get(&seq) {
                    Some(d) if *d != digest => PeerAnswer::refused(
                        409,
                        &format!("Seq {seq} was already used for another message"),
                    ),
                    _ => PeerAnswer::accepted(),
                },
                Err(e @ Reject::NotNow(..)) => {
                    let text = e.to_string();
                    live.messages.push(row);
                    live.d
                        .reject_out_of_state(now, &format!("the peer's message: {text}"));
                    self.dirty.insert(id);
                    PeerAnswer::refused(409, &text)
                }
                Err(e @ Reject::Mismatch(_)) => PeerAnswer::refused(409, &e.to_string()),
                Err(e) => PeerAnswer::refused(e.http_status(), &e.to_string()),
            };
            fx.replies.push((reply, answer));
            return;
        }
        if let Some(f) = self.finished.get(&id) {
            let answer = if f.peer != peer {
                PeerAnswer::refused(404, "unknown delegation")
            } else if msg.seq <= f.seq_in {
                PeerAnswer::accepted()
            } else if matches!(msg.body, crate::delegation::messages::Body::Failure { .. }) {
                // A failure reported for a delegation that is over changes nothing.
                PeerAnswer::accepted()
            } else {
                PeerAnswer::refused(409, "the delegation is over")
            };
            fx.replies.push((reply, answer));
            return;
        }
        let Some(role) = Delegation::role_for(&msg) else {
            fx.replies
                .push((reply, PeerAnswer::refused(404, "unknown delegation")));
            return;
        };
        let crate::delegation::messages::Body::Notif { device, .. } = &msg.body else {
            return;
        };
        let dev_id = device.dev_id.clone();
        let account = (role == Role::Delegated).then(|| self.make_account(&dev_id));
        let (xml, digest) = logged_and_digest(&msg);
        let row = MessageRow {
            delegation_id: id.clone(),
            at_ms: now,
            outgoing: false,
            msg_seq: msg.seq,
            msg_type: msg.msg_type().as_str().to_owned(),
            xml,
        };
        let mut d = match Delegation::incoming(
            &msg,
            &self.parts.me,
            role,
            account,
            self.parts.deadlines,
            now,
        ) {
            Ok(d) => d,
            Err(e) => {
                fx.replies
                    .push((reply, PeerAnswer::refused(400, &e.to_string())));
                return;
            }
        };
        let policy = self
            .parts
            .peers
            .get(&peer)
            .map_or(Policy::Operator, |p| p.policy);
        let mut audit = Vec::new();
        // A refusal is the request's answer; the machine cannot be in another state here.
        if let Some(other) = self.busy.get(&dev_id) {
            let text = format!("the device is already in delegation {other}");
            let _ = d.refuse(now, ReasonCode::BUSY, &text);
        } else if role == Role::Delegating && !self.parts.dm.has_device(&dev_id) {
            let text = format!("device {dev_id} is not managed by this server");
            let _ = d.refuse(now, ReasonCode::PATH_NOT_DELEGABLE, &text);
        } else {
            match policy {
                Policy::Accept => {
                    let _ = d.handle(now, Input::Operator(OperatorAction::Accept));
                    audit.push(self.audit_row(now, "policy", "accept", &d, "accepted by policy"));
                }
                Policy::Decline => {
                    let _ = d.handle(
                        now,
                        Input::Operator(OperatorAction::Decline("declined by policy".into())),
                    );
                    audit.push(self.audit_row(now, "policy", "decline", &d, "declined by policy"));
                }
                Policy::Operator => {}
            }
            if !d.state.is_terminal() {
                self.busy.insert(dev_id, id.clone());
            }
        }
        let mut live = Live::new(d, now, None);
        live.seen.insert(msg.seq, digest);
        live.messages.push(row);
        live.audit = audit;
        self.live.insert(id.clone(), live);
        self.dirty.insert(id);
        fx.replies.push((reply, PeerAnswer::accepted()));
    }

    fn audit_row(
        &self,
        now: UnixMs,
        actor: &str,
        action: &str,
        d: &Delegation,
        detail: &str,
    ) -> AuditRow {
        AuditRow {
            at_ms: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            delegation_id: Some(d.id.clone()),
            dev_id: Some(d.dev_id.clone()),
            peer: Some(d.peer.clone()),
            outcome: None,
            detail: detail.to_owned(),
        }
    }

    fn on_internal(&mut self, now: UnixMs, input: Internal, fx: &mut Effects) {
        match input {
            Internal::DeviceDone { id, op, result } => {
                if let Some(live) = self.live.get_mut(&id) {
                    let _ = live.d.handle(now, Input::Device { op, result });
                    self.dirty.insert(id);
                }
            }
            Internal::Sent { id, seq, attempt } => {
                let Some(live) = self.live.get_mut(&id) else {
                    return;
                };
                if live.sending != Some(seq) {
                    return;
                }
                live.sending = None;
                live.send_task = None;
                if live.outbox.front().is_some_and(|o| o.msg.seq == seq) {
                    live.outbox.pop_front();
                }
                if let Attempt::Refused { status, reason } = attempt {
                    let _ = live.d.handle(
                        now,
                        Input::PeerRefused {
                            seq,
                            status,
                            reason,
                        },
                    );
                }
                self.dirty.insert(id);
            }
            Internal::PeerGone { id, seq } => {
                let Some(live) = self.live.get_mut(&id) else {
                    return;
                };
                if live.sending != Some(seq) {
                    return;
                }
                live.sending = None;
                live.outbox.clear();
                let _ = live.d.handle(now, Input::PeerGone);
                self.dirty.insert(id);
            }
            Internal::SendRetry {
                id,
                seq,
                attempt,
                why,
            } => {
                if let Some(live) = self.live.get_mut(&id) {
                    // Recorded on the first and then every fifth failure, not each one.
                    if attempt == 1 || attempt % 5 == 0 {
                        live.extra_events.push(EventRow {
                            delegation_id: id.clone(),
                            at_ms: now,
                            step: live.d.step as u8,
                            text: format!(
                                "message {seq} not delivered yet (attempt {attempt}: {why}); retrying"
                            ),
                        });
                        self.dirty.insert(id);
                    }
                }
            }
            Internal::Device(DeviceEvent::SessionCompleted { dev_id, session_id }) => {
                let Some(id) = self.busy.get(&dev_id).cloned() else {
                    return;
                };
                if let Some(live) = self.live.get_mut(&id)
                    && live.d.role == Role::Delegated
                    && live.d.wait == Wait::DeviceSession
                {
                    let _ = live.d.handle(now, Input::DeviceCalled { session_id });
                    self.dirty.insert(id);
                }
            }
            Internal::Served(served) => {
                let Some(id) = self.busy.get(&served.dev_id).cloned() else {
                    return;
                };
                if let Some(live) = self.live.get_mut(&id) {
                    live.extra_events.push(EventRow {
                        delegation_id: id.clone(),
                        at_ms: now,
                        step: 5,
                        text: "the device fetched its bootstrap from this server".to_owned(),
                    });
                    self.dirty.insert(id);
                }
            }
            Internal::Command(cmd) => self.on_command(now, cmd, fx),
        }
    }

    fn on_command(&mut self, now: UnixMs, cmd: Command, fx: &mut Effects) {
        match cmd {
            Command::Start(req, reply) => {
                // A device un-enrolled earlier in this batch is gone already.
                let result = if fx.remove.iter().any(|(d, _)| d == &req.dev_id) {
                    Err(CommandRefused::UnknownDevice(req.dev_id))
                } else {
                    self.start(now, req)
                };
                fx.started.push((reply, result));
            }
            Command::RemoveDevice(dev_id, reply) => {
                if let Some(id) = self.busy.get(&dev_id) {
                    let _ = reply.send(Err(CommandRefused::Busy {
                        dev_id,
                        id: id.clone(),
                    }));
                    return;
                }
                if self.parts.dm.device(&dev_id).is_none()
                    || fx.remove.iter().any(|(d, _)| d == &dev_id)
                {
                    let _ = reply.send(Err(CommandRefused::UnknownDevice(dev_id)));
                    return;
                }
                fx.remove_audit
                    .push(crate::store::devices::removal_audit(&dev_id, now));
                fx.remove.push((dev_id, reply));
            }
            Command::Operator(id, action, reply) => {
                let Some(live) = self.live.get_mut(&id) else {
                    fx.operator
                        .push((reply, Err(CommandRefused::NotFound(id.clone()))));
                    return;
                };
                let what = match &action {
                    OperatorAction::Accept => "accept",
                    OperatorAction::Decline(_) => "decline",
                    OperatorAction::Abort => "abort",
                };
                let detail = match &action {
                    OperatorAction::Decline(r) => format!("declined: {r}"),
                    _ => format!("{what} by an operator"),
                };
                let result = live
                    .d
                    .handle(now, Input::Operator(action))
                    .map_err(|e| CommandRefused::NotNow(e.to_string()));
                if result.is_ok() {
                    let row = AuditRow {
                        at_ms: now,
                        actor: "operator".to_owned(),
                        action: what.to_owned(),
                        delegation_id: Some(id.clone()),
                        dev_id: Some(live.d.dev_id.clone()),
                        peer: Some(live.d.peer.clone()),
                        outcome: None,
                        detail,
                    };
                    live.audit.push(row);
                    self.dirty.insert(id);
                }
                fx.operator.push((reply, result));
            }
            Command::Stop(tx) => {
                let _ = tx.send(());
            }
        }
    }

    fn start(&mut self, now: UnixMs, req: StartRequest) -> Result<String, CommandRefused> {
        if self.parts.peers.get(&req.peer).is_none() || req.peer == self.parts.me {
            return Err(CommandRefused::UnknownPeer(req.peer));
        }
        if let Some(id) = self.busy.get(&req.dev_id) {
            return Err(CommandRefused::Busy {
                dev_id: req.dev_id,
                id: id.clone(),
            });
        }
        let mut paths = Vec::new();
        if !req.full {
            if req.paths.is_empty() {
                return Err(CommandRefused::BadRequest(
                    "a partial delegation needs at least one subtree".into(),
                ));
            }
            for p in &req.paths {
                let uri = NodeUri::parse(p).map_err(|e| {
                    CommandRefused::BadRequest(format!("`{p}` is not a node URI: {e}"))
                })?;
                if uri.is_root() {
                    return Err(CommandRefused::BadRequest(
                        "the root is a full delegation, not a partial one".into(),
                    ));
                }
                paths.push(uri);
            }
        }
        let device = match req.role {
            Role::Delegating => {
                let (devinfo, push) = self
                    .parts
                    .dm
                    .device_contact(&req.dev_id)
                    .ok_or_else(|| CommandRefused::UnknownDevice(req.dev_id.clone()))?;
                let leaf = |name: &str| {
                    devinfo
                        .iter()
                        .find(|(k, _)| k.ends_with(name))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                DeviceInfo {
                    dev_id: req.dev_id.clone(),
                    man: leaf("Man"),
                    model: leaf("Mod"),
                    notify: push.clone(),
                }
            }
            Role::Delegated => req.device.clone().unwrap_or(DeviceInfo {
                dev_id: req.dev_id.clone(),
                man: String::new(),
                model: String::new(),
                notify: None,
            }),
        };
        let id = new_delegation_id();
        let start = Start {
            id: id.as_str().to_owned(),
            role: req.role,
            me: self.parts.me.clone(),
            peer: req.peer.clone(),
            device,
            full: req.full,
            bootstrap: req.bootstrap,
            paths,
            lease: req.lease,
            deadlines: self.parts.deadlines,
        };
        let account = (req.role == Role::Delegated).then(|| self.make_account(&req.dev_id));
        let d = Delegation::initiate(&start, account, now);
        let mut live = Live::new(d, now, req.retry_of.clone());
        let detail = match &req.retry_of {
            Some(old) => format!("started (retry of {old})"),
            None => "started".to_owned(),
        };
        let row = self.audit_row(now, "operator", "start", &live.d, &detail);
        live.audit.push(row);
        self.busy.insert(req.dev_id, id.as_str().to_owned());
        self.live.insert(id.as_str().to_owned(), live);
        self.dirty.insert(id.as_str().to_owned());
        Ok(id.as_str().to_owned())
    }

    /// DELEGATED: a fresh account for the device: digest credentials both ways, random secrets.
    fn make_account(&self, dev_id: &str) -> TndsNode {
        let user: String = dev_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        DmAcc::new_digest(
            &account_name(&self.parts.me),
            &self.parts.me,
            self.parts.dm.url(),
            (&user.to_ascii_lowercase(), &random_hex(16)),
            (&self.parts.me, &random_hex(16)),
        )
        .to_tnds_node(None)
    }

    /// DELEGATED: the account document the bootstrap endpoint serves: the account as sent,
    /// with the ACL the DMAcc approach gives it (docs/PROTOCOL.md section 7).
    fn bootstrap_account(&self, d: &Delegation, account_xml: &str) -> String {
        let Ok(mut doc) = TndsDocument::from_xml(account_xml.as_bytes()) else {
            return String::new();
        };
        let acl = Acl::parse(&format!(
            "Delete={peer}+{me}&Get={peer}+{me}&Replace={me}",
            peer = d.peer,
            me = d.me
        ))
        .ok();
        if let Some(node) = doc.nodes.first_mut() {
            node.rt.get_or_insert_with(Default::default).acl = acl;
        }
        doc.to_xml()
    }

    /// DELEGATED: the device record the account's credentials make.
    fn record_from_account(&self, d: &Delegation) -> Option<DeviceRecord> {
        let doc = TndsDocument {
            nodes: vec![Arc::unwrap_or_clone(d.account()?)],
            ..TndsDocument::default()
        };
        let mut tree = crate::delegation::plan::empty_device_tree();
        let dmacc = NodeUri::parse("./DMAcc").ok()?;
        tree.apply_tnds(
            crate::dm::tree::Principal::Device,
            &dmacc,
            &doc,
            crate::dm::tree_tnds::TndsMode::Add,
            None,
        )
        .ok()?;
        let acc = DmAcc::read(&tree, &doc.nodes.first()?.name).ok()?;
        let cl = acc.client_cred()?;
        let sv = acc.server_cred()?;
        let cred = |a: &crate::dm::mo::dmacc::AppAuth| Credentials {
            scheme: AuthScheme::Md5,
            name: a.auth_name.clone().unwrap_or_default(),
            secret: Password::new(a.secret.as_ref().map(|s| s.expose()).unwrap_or("")),
        };
        let mut rec = DeviceRecord::new(&d.dev_id, cred(cl), cred(sv), d.notify.clone());
        // The delegation's sessions carry only its own commands; this server reads the
        // device's tree when someone asks for it, not in the middle of step 6.
        rec.needs_inventory = false;
        rec.devinfo = vec![
            ("./DevInfo/DevId".to_owned(), d.dev_id.clone()),
            ("./DevInfo/Man".to_owned(), d.man.clone()),
            ("./DevInfo/Mod".to_owned(), d.model.clone()),
        ];
        Some(rec)
    }

    fn fire_timers(&mut self, now: UnixMs) {
        while let Some((t, id)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, id.clone()));
            self.timer_of.remove(&id);
            let Some(live) = self.live.get_mut(&id) else {
                continue;
            };
            if live.d.state.is_terminal() && live.d.wait != Wait::Lease {
                // Messages of a finished delegation the peer never took: given up.
                if let Some(task) = live.send_task.take() {
                    task.abort();
                }
                let n = live.outbox.len();
                live.outbox.clear();
                live.sending = None;
                live.extra_events.push(EventRow {
                    delegation_id: id.clone(),
                    at_ms: now,
                    step: live.d.step as u8,
                    text: format!("gave up delivering {n} message(s) to the unreachable peer"),
                });
            } else {
                let _ = live.d.handle(now, Input::Timer);
            }
            self.dirty.insert(id);
        }
    }

    /// Polls the actions of every changed delegation and builds its transition.
    fn collect(&mut self, now: UnixMs, fx: &mut Effects) -> Vec<Transition> {
        let mut out = Vec::with_capacity(self.dirty.len());
        let dirty: Vec<String> = self.dirty.drain().collect();
        fx.touched.extend(dirty.iter().cloned());
        for id in dirty {
            let Some(mut live) = self.live.remove(&id) else {
                continue;
            };
            loop {
                let mut fed = false;
                while let Some(action) = live.d.poll_action() {
                    match action {
                        Action::SendPeer(msg) => {
                            let out = Outgoing::new(msg);
                            live.messages.push(MessageRow {
                                delegation_id: id.clone(),
                                at_ms: now,
                                outgoing: true,
                                msg_seq: out.msg.seq,
                                msg_type: out.msg.msg_type().as_str().to_owned(),
                                xml: out.logged(),
                            });
                            live.outbox.push_back(out);
                        }
                        Action::Device { op, commands } => {
                            fx.device
                                .push((id.clone(), live.d.dev_id.clone(), op, commands));
                        }
                        Action::MakeBootstrapUrl => {
                            let url = self.issue_token(&live.d, now);
                            match url {
                                Some(url) => {
                                    let _ = live.d.handle(now, Input::BootstrapUrl(url));
                                }
                                None => {
                                    let _ =
                                        live.d.handle(now, Input::Operator(OperatorAction::Abort));
                                    live.extra_events.push(EventRow {
                                        delegation_id: id.clone(),
                                        at_ms: now,
                                        step: 3,
                                        text: "this server has no bootstrap endpoint configured"
                                            .into(),
                                    });
                                }
                            }
                            fed = true;
                        }
                        Action::EnrolDevice => {
                            if let Some(rec) = self.record_from_account(&live.d) {
                                fx.enrol.push(rec);
                            }
                        }
                        Action::Purge => fx.purge.push(live.d.dev_id.clone()),
                    }
                }
                if !fed {
                    break;
                }
            }
            if live.d.state.is_terminal() && live.drain_until.is_none() {
                live.drain_until = Some(now + self.parts.deadlines.peer_ms);
                let outcome = format!("{:?}", live.d.state);
                let detail = match &live.d.reason {
                    Some((code, text)) => format!("{outcome}: {code} {text}"),
                    None => outcome.clone(),
                };
                let mut row = self.audit_row(now, "engine", "finish", &live.d, &detail);
                row.outcome = Some(outcome);
                live.audit.push(row);
            }
            // Timers.
            if let Some(old) = self.timer_of.remove(&id) {
                self.timers.remove(&(old, id.clone()));
            }
            if let Some(t) = live.timer() {
                self.timers.insert((t, id.clone()));
                self.timer_of.insert(id.clone(), t);
            }
            out.push(self.transition(now, &mut live));
            // The board shows it once it is stored (see release).
            fx.summaries.push(live.summary(now));
            self.live.insert(id, live);
        }
        out
    }

    fn issue_token(&self, d: &Delegation, now: UnixMs) -> Option<String> {
        let base = self.parts.bootstrap_base.as_ref()?;
        let xml = d.account_xml.as_deref()?;
        let served = self.bootstrap_account(d, xml);
        let mut random = [0u8; 32];
        crate::random::fill(&mut random).ok()?;
        let ttl = self
            .parts
            .token_ttl_ms
            .min(self.parts.deadlines.bootstrap_ms);
        let token = self
            .parts
            .tokens_lock()
            .issue(&d.dev_id, served, now, ttl, random);
        Some(format!("{}/bootstrap/{token}", base.trim_end_matches('/')))
    }

    fn transition(&self, now: UnixMs, live: &mut Live) -> Transition {
        let d = &mut live.d;
        let mut events: Vec<EventRow> = std::mem::take(&mut d.events)
            .into_iter()
            .filter(|e| !e.text.is_empty())
            .map(|e| EventRow {
                delegation_id: d.id.clone(),
                at_ms: e.at,
                step: e.step as u8,
                text: e.text,
            })
            .collect();
        events.append(&mut live.extra_events);
        // Event texts are plain words about steps and statuses: no secrets. Each step is in
        // the store's timeline already; the log has it at DEBUG, and the outcome at INFO.
        for e in &events {
            tracing::debug!(
                delegation = %e.delegation_id,
                role = ?d.role,
                peer = %d.peer,
                device = %d.dev_id,
                step = e.step,
                "{}",
                e.text
            );
        }
        if !live.begin_logged {
            live.begin_logged = true;
            tracing::info!(
                delegation = %d.id,
                role = ?d.role,
                peer = %d.peer,
                device = %d.dev_id,
                "delegation begun: {}, {} approach, initiated by the {:?} server",
                if d.full { "Full" } else { "Partial" },
                if d.bootstrap { "bootstrap" } else { "DMAcc" },
                d.initiator
            );
        }
        if d.state.is_terminal() && !live.end_logged {
            live.end_logged = true;
            let reason = d
                .reason
                .as_ref()
                .map(|(code, text)| format!(": {code} {text}"))
                .unwrap_or_default();
            tracing::info!(
                delegation = %d.id,
                role = ?d.role,
                peer = %d.peer,
                device = %d.dev_id,
                step = d.step as u8,
                "delegation {:?}{reason}",
                d.state
            );
        }
        let journal = journal_to_write(&mut live.journal_saved, d);
        let seqs: Vec<u32> = live.outbox.iter().map(|o| o.msg.seq).collect();
        let outbox_unchanged = live.saved_outbox.as_ref() == Some(&seqs);
        let outbox = if outbox_unchanged {
            String::new()
        } else {
            let xml: Vec<&str> = live.outbox.iter().map(|o| o.xml.as_str()).collect();
            serde_json::to_string(&xml).unwrap_or_default()
        };
        live.saved_outbox = Some(seqs);
        let account_unchanged = live.d.account_xml == live.saved_account;
        if !account_unchanged {
            live.saved_account.clone_from(&live.d.account_xml);
        }
        // The machine's JSON leaves out the account, which has a column of its own, and the
        // device changes and their undo, which the journal holds (written above whenever
        // they differ from what it holds).
        let account_xml = live.d.account_xml.take();
        let changes = std::mem::take(&mut live.d.changes);
        let undo = std::mem::take(&mut live.d.undo);
        let machine = serde_json::to_string(&live.d).unwrap_or_default();
        live.d.account_xml = account_xml;
        live.d.changes = changes;
        live.d.undo = undo;
        let live_flag = live.needs_engine();
        let state_unchanged = live.saved_state == Some((live.d.state, live_flag));
        live.saved_state = Some((live.d.state, live_flag));
        let d = &live.d;
        Transition {
            row: DelegationRow {
                id: d.id.clone(),
                role: format!("{:?}", d.role),
                initiator: format!("{:?}", d.initiator),
                peer: d.peer.clone(),
                dev_id: d.dev_id.clone(),
                full: d.full,
                bootstrap: d.bootstrap,
                paths: d.paths.clone(),
                state: format!("{:?}", d.state),
                step: d.step as u8,
                live: live_flag,
                created_ms: live.created_ms,
                updated_ms: now,
                reason_code: d.reason.as_ref().map(|r| r.0),
                reason_text: d.reason.as_ref().map(|r| r.1.clone()),
                retry_of: live.retry_of.clone(),
                machine,
                outbox,
                account: if account_unchanged {
                    None
                } else {
                    d.account_xml.clone()
                },
            },
            events,
            messages: std::mem::take(&mut live.messages),
            journal,
            audit: std::mem::take(&mut live.audit),
            outbox_unchanged,
            account_unchanged,
            state_unchanged,
        }
    }

    /// After the commit: answers, enrolments, device commands, sends; retires what is over.
    async fn release(&mut self, _now: UnixMs, fx: Effects) {
        if let Ok(mut board) = self.parts.board.lock() {
            for s in fx.summaries {
                board.delegations.insert(s.id.clone(), s);
            }
        }
        for (tx, answer) in fx.replies {
            let _ = tx.send(answer);
        }
        for (tx, r) in fx.started {
            let _ = tx.send(r);
        }
        for (tx, r) in fx.operator {
            let _ = tx.send(r);
        }
        // The enrolments and removals were saved with the batch's transitions.
        self.parts.dm.enrol_saved(fx.enrol);
        for (dev, tx) in fx.remove {
            self.parts.dm.forget(&dev);
            tracing::info!(device = %dev, "device un-enrolled");
            let _ = tx.send(Ok(()));
        }
        for dev in fx.purge {
            self.parts.tokens_lock().revoke_device(&dev);
        }
        for (id, dev_id, op, commands) in fx.device {
            self.run_device(id, dev_id, op, commands);
        }
        for id in fx.touched {
            self.kick_send(&id);
            self.retire(&id);
        }
        self.parts.version.send_modify(|v| *v += 1);
    }

    fn run_device(
        &mut self,
        id: String,
        dev_id: String,
        op: u32,
        commands: Vec<crate::syncml::session::DeviceCommand>,
    ) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        let old = std::mem::take(&mut live.device_tags);
        if !old.is_empty() {
            self.parts.dm.cancel(&dev_id, &old);
        }
        // The tree listings of steps 4 and 8 are answered with changes: the session that
        // carries one is held open for them, so they need no second session.
        let follow_up = matches!(live.d.wait, Wait::Snapshot | Wait::CleanupSnapshot);
        let queued = self.parts.dm.enqueue_all(&dev_id, commands, follow_up);
        let tx = self.internal_tx.clone();
        let dm = self.parts.dm.clone();
        let (rxs, needs_trigger) = match queued {
            Ok(q) => {
                live.device_tags = q.tags;
                (Some(q.outcomes), q.needs_trigger)
            }
            Err(_) => (None, false),
        };
        tokio::spawn(async move {
            let mut outs = Vec::new();
            let mut ok = rxs.is_some();
            let mut unusable = None;
            if let Some(rxs) = rxs {
                if needs_trigger {
                    let dev = dev_id.clone();
                    tokio::spawn(async move {
                        // An undelivered Package #0 leaves the commands queued for the
                        // device's next session; the step's deadline decides what that means.
                        let _ = dm.notify(&dev).await;
                    });
                }
                for rx in rxs {
                    match rx.await {
                        Ok(Ok(o)) => outs.push(o),
                        Ok(Err(e @ crate::engine::devices::CommandError::NoRoom { .. })) => {
                            unusable = Some(e.to_string());
                            break;
                        }
                        _ => {
                            ok = false;
                            break;
                        }
                    }
                }
            }
            let result = match unusable {
                Some(why) => DeviceResult::Unusable(why),
                None if ok => DeviceResult::Done(outs),
                None => DeviceResult::Unreachable,
            };
            let _ = tx.send(Internal::DeviceDone { id, op, result });
        });
    }

    fn kick_send(&mut self, id: &str) {
        let Some(live) = self.live.get_mut(id) else {
            return;
        };
        if live.sending.is_some() {
            return;
        }
        let Some(Outgoing { msg, xml }) = live.outbox.front().cloned() else {
            return;
        };
        let Some(client) = self.parts.client.clone() else {
            return;
        };
        let tx = self.internal_tx.clone();
        let Some(peer) = self.parts.peers.get(&live.d.peer) else {
            // Removed while the delegation ran (or gone from the configuration since it was
            // stored): the delegation hears so in the next batch, as an input that is stored
            // with what it causes. Until then nothing else is sent.
            live.sending = Some(msg.seq);
            let _ = tx.send(Internal::PeerGone {
                id: id.to_owned(),
                seq: msg.seq,
            });
            return;
        };
        let url = peer.base_url.clone();
        let id = id.to_owned();
        live.sending = Some(msg.seq);
        live.send_task = Some(tokio::spawn(async move {
            let seq = msg.seq;
            let retry_tx = tx.clone();
            let retry_id = id.clone();
            let attempt = client
                .deliver(&url, xml.into_bytes(), |n, why| {
                    let _ = retry_tx.send(Internal::SendRetry {
                        id: retry_id.clone(),
                        seq,
                        attempt: n,
                        why: why.to_owned(),
                    });
                })
                .await;
            let _ = tx.send(Internal::Sent { id, seq, attempt });
        }));
    }

    /// Moves a delegation that no longer needs the engine out of the live set.
    fn retire(&mut self, id: &str) {
        let done = self.live.get(id).is_some_and(|l| !l.needs_engine());
        if !done {
            return;
        }
        if let Some(live) = self.live.remove(id) {
            if self.busy.get(&live.d.dev_id).map(String::as_str) == Some(id) {
                self.busy.remove(&live.d.dev_id);
            }
            if let Some(t) = self.timer_of.remove(id) {
                self.timers.remove(&(t, id.to_owned()));
            }
            self.finished.insert(
                id.to_owned(),
                Finished {
                    peer: live.d.peer.clone(),
                    seq_in: live.d.seq_in,
                },
            );
            if let Ok(mut board) = self.parts.board.lock() {
                board.ended(id);
            }
        }
    }
}

impl Parts {
    fn tokens_lock(&self) -> std::sync::MutexGuard<'_, BootstrapTokens> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A received message as the log keeps it ([`logged_copy`]), and the digest of its whole XML
/// that tells a resent message from another one under the same Seq: the XML is written once
/// for both.
fn logged_and_digest(msg: &Message) -> (String, [u8; 32]) {
    let xml = crate::xmltext::into_text(msg.to_xml());
    let digest = sha256(xml.as_bytes());
    (logged_copy(msg, &xml), digest)
}

/// A delegation's device changes and their undo, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct JournalLists {
    changes: Vec<StoredCommand>,
    undo: Vec<StoredCommand>,
}

/// After a restart: gives the machine `d` the changes and undo the journal holds, and returns
/// them as stored. A row written before they left the machine's JSON keeps the ones in its
/// JSON, and an empty journal is returned for it, so the next save writes them to the journal
/// before its JSON drops them.
fn restore_journal(
    d: &mut Delegation,
    journal: &[JournalEntry],
) -> Result<JournalLists, serde_json::Error> {
    let mut stored = JournalLists::default();
    for entry in journal {
        let command = serde_json::from_str(&entry.command)?;
        match entry.kind {
            JournalKind::Change => stored.changes.push(command),
            JournalKind::Undo => stored.undo.push(command),
        }
    }
    if d.changes.is_empty() && d.undo.is_empty() {
        d.changes.clone_from(&stored.changes);
        d.undo.clone_from(&stored.undo);
    }
    Ok(stored)
}

/// The journal to write for `d`, when its changes or undo differ from `saved` (which then
/// becomes them): all of it, changes and undo by position.
fn journal_to_write(saved: &mut JournalLists, d: &Delegation) -> Option<Vec<JournalEntry>> {
    if saved.changes == d.changes && saved.undo == d.undo {
        return None;
    }
    saved.changes.clone_from(&d.changes);
    saved.undo.clone_from(&d.undo);
    let entry = |kind, (i, c): (usize, &StoredCommand)| JournalEntry {
        idx: i as u32,
        kind,
        command: serde_json::to_string(c).unwrap_or_default(),
    };
    Some(
        d.changes
            .iter()
            .enumerate()
            .map(|ic| entry(JournalKind::Change, ic))
            .chain(
                d.undo
                    .iter()
                    .enumerate()
                    .map(|ic| entry(JournalKind::Undo, ic)),
            )
            .collect(),
    )
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex32(token: &str) -> Option<[u8; 32]> {
    if token.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in token.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegation() -> Delegation {
        let start = Start {
            id: "01a2500b-0000-7000-8000-000000000001".into(),
            role: Role::Delegating,
            me: "dms1.example".into(),
            peer: "dms2.example".into(),
            device: DeviceInfo {
                dev_id: "IMEI:1".into(),
                man: "m".into(),
                model: "x".into(),
                notify: None,
            },
            full: true,
            bootstrap: false,
            paths: Vec::new(),
            lease: None,
            deadlines: Deadlines::default(),
        };
        Delegation::initiate(&start, None, 0)
    }

    fn delete(uri: &str) -> StoredCommand {
        StoredCommand::Delete { uri: uri.into() }
    }

    fn acl(uri: &str, acl: &str) -> StoredCommand {
        StoredCommand::ReplaceAcl {
            uri: uri.into(),
            acl: acl.into(),
        }
    }

    #[test]
    fn the_journal_is_rewritten_whenever_its_lists_differ_not_only_their_lengths() {
        let mut saved = JournalLists::default();
        let mut d = delegation();
        assert_eq!(journal_to_write(&mut saved, &d), None);
        d.changes = vec![acl("./A", "Get=dms1")];
        d.undo = vec![acl("./A", "")];
        let written = journal_to_write(&mut saved, &d).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(
            journal_to_write(&mut saved, &d),
            None,
            "nothing changed since"
        );
        // Other commands, same lengths.
        d.changes = vec![acl("./B", "Get=dms1")];
        d.undo = vec![acl("./B", "")];
        let written = journal_to_write(&mut saved, &d).unwrap();
        assert!(written[0].command.contains("./B"), "{written:?}");
        d.changes.clear();
        let written = journal_to_write(&mut saved, &d).unwrap();
        assert_eq!(
            written.iter().map(|e| (e.idx, e.kind)).collect::<Vec<_>>(),
            vec![(0, JournalKind::Undo)]
        );
    }

    #[test]
    fn a_restart_takes_the_journal_and_moves_a_legacy_rows_lists_into_it() {
        // A row of today: the lists are in the journal only.
        let mut d = delegation();
        let mut saved = JournalLists {
            changes: vec![acl("./A", "Get=dms1")],
            undo: vec![delete("./DMAcc/x"), acl("./A", "")],
        };
        let journal = journal_to_write(&mut JournalLists::default(), &{
            let mut full = d.clone();
            full.changes.clone_from(&saved.changes);
            full.undo.clone_from(&saved.undo);
            full
        })
        .unwrap();
        let stored = restore_journal(&mut d, &journal).unwrap();
        assert_eq!(stored, saved);
        assert_eq!((&d.changes, &d.undo), (&saved.changes, &saved.undo));
        assert_eq!(journal_to_write(&mut saved, &d), None);
        // A row written before the lists left the machine's JSON: they are in the JSON and
        // the journal is empty, so the next save writes them to the journal.
        let mut legacy = delegation();
        legacy.undo = vec![delete("./DMAcc/x")];
        let mut stored = restore_journal(&mut legacy, &[]).unwrap();
        assert_eq!(stored, JournalLists::default());
        assert_eq!(legacy.undo, vec![delete("./DMAcc/x")]);
        let written = journal_to_write(&mut stored, &legacy).unwrap();
        assert_eq!(written.len(), 1);
        assert_eq!(written[0].kind, JournalKind::Undo);
        // A journal entry that cannot be read is an error, not an empty undo.
        let bad = [JournalEntry {
            idx: 0,
            kind: JournalKind::Undo,
            command: "not json".into(),
        }];
        assert!(restore_journal(&mut delegation(), &bad).is_err());
    }

    fn summary(id: &str, state: State) -> DelegationSummary {
        DelegationSummary::sample(id, state, 0)
    }

    #[test]
    fn the_board_keeps_every_running_delegation_and_the_newest_ended_ones() {
        let mut board = Board::default();
        board
            .delegations
            .insert("running".into(), summary("running", State::Running));
        let ended = ENDED_ON_BOARD + 3;
        for i in 0..ended {
            let id = format!("ended-{i}");
            board
                .delegations
                .insert(id.clone(), summary(&id, State::Completed));
            board.ended(&id);
        }
        assert_eq!(board.delegations.len(), ENDED_ON_BOARD + 1);
        assert!(board.delegations.contains_key("running"));
        for i in 0..3 {
            assert!(!board.delegations.contains_key(&format!("ended-{i}")));
        }
        assert!(board.delegations.contains_key("ended-3"));
        assert!(
            board
                .delegations
                .contains_key(&format!("ended-{}", ended - 1))
        );
    }

    #[test]
    fn waiters_hear_when_their_delegation_ends_and_those_that_gave_up_are_forgotten() {
        let mut board = Board::default();
        let mut first = board.wait_ended("d1");
        let mut second = board.wait_ended("d1");
        let other = board.wait_ended("d2");
        drop(other);
        board.forget_gone_waiters("d2");
        assert!(!board.waiters.contains_key("d2"));
        board.forget_gone_waiters("d1");
        assert_eq!(board.waiters["d1"].len(), 2, "both still wait");
        assert!(first.try_recv().is_err(), "not ended yet");
        board.ended("d1");
        assert_eq!(first.try_recv(), Ok(()));
        assert_eq!(second.try_recv(), Ok(()));
        assert!(board.waiters.is_empty());
    }

    #[test]
    fn the_finished_cache_forgets_the_oldest_beyond_its_size() {
        let mut cache = FinishedCache::default();
        let finished = |seq_in| Finished {
            peer: "dms2.example".into(),
            seq_in,
        };
        for i in 0..ENDED_IN_MEMORY + 2 {
            cache.insert(format!("d{i}"), finished(1));
        }
        // Inserting again does not count twice.
        cache.insert(format!("d{}", ENDED_IN_MEMORY + 1), finished(2));
        assert_eq!(cache.by_id.len(), ENDED_IN_MEMORY);
        assert_eq!(cache.order.len(), ENDED_IN_MEMORY);
        assert!(cache.get("d0").is_none() && cache.get("d1").is_none());
        assert!(cache.get("d2").is_some());
        let newest = cache.get(&format!("d{}", ENDED_IN_MEMORY + 1)).unwrap();
        assert_eq!(newest.seq_in, 2);
    }
}
