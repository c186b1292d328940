//! The engine's record of enrolled devices: credentials both ways and their nonces, the
//! device's DevInfo and last fetched DM tree, its queue of management commands waiting for
//! a session, and the DM sessions in progress. Plain data behind one lock that is never held
//! across an `.await`; the sans-IO [`ServerSession`] does the protocol work.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use tokio::sync::oneshot;

use crate::dm::ops::ResultItem;
use crate::dm::tnds::TndsDocument;
use crate::dm::tree::{DmTree, TreeLimits};
use crate::dm::uri::Target;
use crate::syncml::StatusCode;
use crate::syncml::auth::Nonce;
use crate::syncml::session::creds::Credentials;
use crate::syncml::session::server::{DeviceAuth, ServerConfig, ServerEvent, ServerSession};
use crate::syncml::session::{CommandOutcome, DeviceCommand, SessionError};

/// What happened to a queued command.
pub type CommandResult = Result<CommandOutcome, CommandError>;

/// Why a queued command got no status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The session ended before the device answered it.
    #[error("the DM session ended before the device answered")]
    SessionLost,
    /// The device is not enrolled.
    #[error("device {0} is not enrolled")]
    UnknownDevice(String),
    /// The device's MaxMsgSize leaves no room for the command beside the message's header
    /// and statuses; the session ended without it.
    #[error("the device's MaxMsgSize of {max_msg_size} bytes leaves no room for a command")]
    NoRoom {
        /// What the device declared.
        max_msg_size: u64,
    },
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    Shutdown,
}

/// Why a Package #0 could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// The device is not enrolled.
    #[error("device {0} is not enrolled")]
    UnknownDevice(String),
    /// The trigger could not be encoded (a ServerID longer than 255 bytes).
    #[error("cannot build the trigger: {0}")]
    Encode(crate::syncml::pkg0::Pkg0Error),
}

/// An enrolled device.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    /// `./DevInfo/DevId`.
    pub dev_id: String,
    /// What the device presents (its CLCRED).
    pub client: Credentials,
    /// The nonce the device must use next.
    pub client_nonce: Nonce,
    /// What this server presents to the device (its SRVCRED).
    pub server: Credentials,
    /// The nonce the device issued for this server.
    pub server_nonce: Nonce,
    /// Where Package #0 reaches the device (an HTTP URL here; WAP Push in real networks).
    pub push: Option<String>,
    /// DevInfo leaves from the last Package 1.
    pub devinfo: Vec<(String, String)>,
    /// The device's tree as last fetched (what this server may read of it). With a store,
    /// the registry keeps it only until it is saved (then [`crate::engine::dm_server::DmServer::device_tree`]
    /// reads it back), so 100,000 devices do not hold 100,000 trees in memory.
    pub tree: Option<DmTree>,
    /// What the console lists of that tree, kept when the tree itself is not.
    pub summary: Option<TreeSummary>,
    /// When the device last completed a session.
    pub last_seen: Option<SystemTime>,
    /// True until the first session has fetched DevInfo and the tree.
    pub needs_inventory: bool,
}

impl DeviceRecord {
    /// A newly enrolled device; its first session fetches its tree.
    pub fn new(
        dev_id: &str,
        client: Credentials,
        server: Credentials,
        push: Option<String>,
    ) -> DeviceRecord {
        DeviceRecord {
            dev_id: dev_id.to_owned(),
            client,
            client_nonce: Nonce::resync(),
            server,
            server_nonce: Nonce::resync(),
            push,
            devinfo: Vec::new(),
            tree: None,
            summary: None,
            last_seen: None,
            needs_inventory: true,
        }
    }

    /// Sets the fetched tree and its summary.
    pub fn set_tree(&mut self, tree: Option<DmTree>) {
        self.summary = tree.as_ref().map(TreeSummary::of);
        self.tree = tree;
    }
}

/// What the device list shows of a device's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSummary {
    /// How many nodes this server could read.
    pub nodes: usize,
    /// The servers with an account on the device (ServerID, dormant), in tree order.
    pub accounts: Vec<(String, bool)>,
}

impl TreeSummary {
    /// The summary of `tree`.
    pub fn of(tree: &DmTree) -> TreeSummary {
        TreeSummary {
            nodes: tree.len(),
            accounts: crate::dm::mo::DmAcc::all(tree)
                .into_iter()
                .flatten()
                .map(|a| (a.server_id, a.dormant))
                .collect(),
        }
    }
}

/// One message from a device, as the endpoint received it.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    /// Source LocURI of the message.
    pub(crate) dev_id: &'a str,
    /// Its SessionID.
    pub(crate) session_id: &'a str,
    /// The raw body.
    pub(crate) body: &'a [u8],
    /// The body decoded (in `encoding`), once, by the endpoint that routed it.
    pub(crate) msg: crate::syncml::message::SyncMl,
    /// The `x-syncml-hmac` header.
    pub(crate) hmac: Option<&'a str>,
    /// 16 fresh random bytes for nonces.
    pub(crate) random: [u8; 16],
    /// The RespURI token for a new session.
    pub(crate) token: String,
    /// How the message is encoded (a new session answers in the same encoding).
    pub(crate) encoding: crate::syncml::session::Encoding,
}

/// What became of a device's message.
#[derive(Debug)]
pub(crate) enum Handled {
    /// The reply (or why there is none).
    Reply(Result<crate::syncml::session::server::Reply, SessionError>),
    /// Wait for follow-up commands (woken by this), then call `finish_message`.
    Hold(std::sync::Arc<tokio::sync::Notify>),
}

/// A batch of commands queued by [`Devices::enqueue_all`].
#[derive(Debug)]
pub struct Queued {
    /// Each command's tag, for [`Devices::cancel`].
    pub tags: Vec<u64>,
    /// Each command's outcome, in order.
    pub outcomes: Vec<oneshot::Receiver<CommandResult>>,
    /// False when the batch went into a reply held for it: no Package #0 is needed.
    pub needs_trigger: bool,
}

/// Who is waiting for a command's outcome.
#[derive(Debug)]
enum Waiter {
    /// Someone awaits the outcome; `follow_up` when they will send more commands in reply
    /// (the session is then held open for them a moment).
    Caller(oneshot::Sender<CommandResult>, bool),
    /// The engine's own inventory fetch (first session), as TNDS.
    Inventory,
    /// The inventory fetch for devices without TNDS: `?list=StructData`.
    InventoryStruct,
}

/// Counters of refusals, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages from devices that are not enrolled.
    pub unknown_devices: u64,
    /// Sessions ended because the device failed authentication.
    pub auth_failures: u64,
    /// Messages refused as malformed or out of sequence.
    pub bad_messages: u64,
    /// Sessions completed.
    pub sessions_completed: u64,
}

/// Something a device did that the rest of the engine may wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// The device completed an authenticated session.
    SessionCompleted {
        /// The device.
        dev_id: String,
        /// The session's SessionID.
        session_id: String,
    },
}

/// All device state of one engine.
#[derive(Debug, Default)]
pub struct Devices {
    /// Where [`DeviceEvent`]s go, when someone listens.
    observer: Option<tokio::sync::mpsc::UnboundedSender<DeviceEvent>>,
    /// Triggers sent to each device since its last completed session.
    unanswered: HashMap<String, u32>,
    /// Devices whose session is ending because their MaxMsgSize leaves no room for a
    /// command (what the commands it loses are told), until that session has ended.
    no_room: HashMap<String, u64>,
    /// Set while handling a message when a caller that will follow up got its outcome.
    follow_up_due: bool,
    /// The devices whose message is held unanswered right now, waiting for follow-up
    /// commands, with what wakes that one hold (a new one per hold, so a wake meant for an
    /// earlier hold never ends a later one early).
    held: HashMap<String, std::sync::Arc<tokio::sync::Notify>>,
    /// Fetched trees are saved to the store and not kept here.
    trees_in_store: bool,
    records: HashMap<String, DeviceRecord>,
    queues: HashMap<String, VecDeque<(u64, DeviceCommand)>>,
    waiters: HashMap<u64, Waiter>,
    sessions: HashMap<(String, String), ServerSession<u64>>,
    /// RespURI tokens of sessions in progress: token → (DevId, SessionID).
    tokens: HashMap<String, (String, String)>,
    next_tag: u64,
    /// Refusal and completion counters.
    pub stats: EndpointStats,
}

impl Devices {
    /// Enrols (or re-enrols) a device.
    pub fn enrol(&mut self, record: DeviceRecord) {
        self.records.insert(record.dev_id.clone(), record);
    }

    /// Forgets a device: its record (an enrolment that was not stored after all, or an
    /// un-enrolled device) and what was queued for it.
    pub fn forget(&mut self, dev_id: &str) -> Option<DeviceRecord> {
        if let Some(queue) = self.queues.remove(dev_id) {
            for (tag, _) in queue {
                // Dropping the waiter tells its caller the command is lost.
                self.waiters.remove(&tag);
            }
        }
        self.unanswered.remove(dev_id);
        self.no_room.remove(dev_id);
        self.held.remove(dev_id);
        self.records.remove(dev_id)
    }

    /// Asks for the device's DevInfo and tree in its next session.
    pub fn request_inventory(&mut self, dev_id: &str) -> bool {
        match self.records.get_mut(dev_id) {
            Some(r) => {
                r.needs_inventory = true;
                true
            }
            None => false,
        }
    }

    /// Sends every later [`DeviceEvent`] to `tx`.
    pub fn set_observer(&mut self, tx: tokio::sync::mpsc::UnboundedSender<DeviceEvent>) {
        self.observer = Some(tx);
    }

    /// A device's record.
    pub fn get(&self, dev_id: &str) -> Option<&DeviceRecord> {
        self.records.get(dev_id)
    }

    /// With `yes`, fetched trees live in the store, not here: [`Devices::record_to_save`]
    /// moves a device's tree out of the registry into the copy that is saved.
    pub fn set_trees_in_store(&mut self, yes: bool) {
        self.trees_in_store = yes;
    }

    /// A copy of the device's record to save. When trees live in the store, its fetched tree
    /// moves into the copy instead of being copied.
    pub fn record_to_save(&mut self, dev_id: &str) -> Option<DeviceRecord> {
        let in_store = self.trees_in_store;
        let record = self.records.get_mut(dev_id)?;
        if !in_store {
            return Some(record.clone());
        }
        let tree = record.tree.take();
        let mut copy = record.clone();
        copy.tree = tree;
        Some(copy)
    }

    /// Every device id, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.records.keys().cloned().collect();
        v.sort();
        v
    }

    /// Number of enrolled devices.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no device is enrolled.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Queues a command for the device's next session (or the running one's next package).
    pub fn enqueue(
        &mut self,
        dev_id: &str,
        cmd: DeviceCommand,
    ) -> Result<oneshot::Receiver<CommandResult>, CommandError> {
        self.enqueue_all(dev_id, vec![cmd], false)?
            .outcomes
            .pop()
            .ok_or(CommandError::SessionLost)
    }

    /// Queues `commands`, in order, as one batch: they go out together, in the held reply of
    /// the device's session when one waits (then [`Queued::needs_trigger`] is false), else in
    /// its running session or its next one. With `follow_up`, the caller will answer their
    /// outcome with more commands, and the reply after that outcome is held a moment for them.
    pub fn enqueue_all(
        &mut self,
        dev_id: &str,
        commands: Vec<DeviceCommand>,
        follow_up: bool,
    ) -> Result<Queued, CommandError> {
        if !self.records.contains_key(dev_id) {
            return Err(CommandError::UnknownDevice(dev_id.to_owned()));
        }
        let mut queued = Queued {
            tags: Vec::with_capacity(commands.len()),
            outcomes: Vec::with_capacity(commands.len()),
            needs_trigger: !self.held.contains_key(dev_id),
        };
        for cmd in commands {
            let (tx, rx) = oneshot::channel();
            let tag = self.alloc_tag();
            self.waiters.insert(tag, Waiter::Caller(tx, follow_up));
            self.push(dev_id, tag, cmd);
            queued.tags.push(tag);
            queued.outcomes.push(rx);
        }
        if let Some(w) = self.held.get(dev_id) {
            // The whole batch is in: the held reply may go. `notify_one` keeps the wake even
            // when the endpoint has not started waiting yet.
            w.notify_one();
        }
        Ok(queued)
    }

    /// Withdraws queued commands that no session has sent yet (an operation the caller moved
    /// past). Returns how many were withdrawn; commands already sent run their course, and
    /// nobody waits for their outcome.
    pub fn cancel(&mut self, dev_id: &str, tags: &[u64]) -> usize {
        let Some(queue) = self.queues.get_mut(dev_id) else {
            for t in tags {
                self.waiters.remove(t);
            }
            return 0;
        };
        let before = queue.len();
        queue.retain(|(t, _)| !tags.contains(t));
        let removed = before - queue.len();
        if queue.is_empty() {
            self.queues.remove(dev_id);
        }
        // Nobody waits for them any more, sent or not.
        for t in tags {
            self.waiters.remove(t);
        }
        removed
    }

    fn alloc_tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn push(&mut self, dev_id: &str, tag: u64, cmd: DeviceCommand) {
        if let Some(session) = self
            .sessions
            .iter_mut()
            .find(|((d, _), _)| d == dev_id)
            .map(|(_, s)| s)
        {
            session.enqueue(tag, cmd);
        } else {
            self.queues
                .entry(dev_id.to_owned())
                .or_default()
                .push_back((tag, cmd));
        }
    }

    /// Builds the Package #0 that asks the device to open a session with this server
    /// (`server_id`), with the digest the device checks: the SRVCRED secret and the nonce the
    /// device issued for the server. When an earlier trigger went unanswered (the device may
    /// hold a newer nonce than this server kept, e.g. after a crash mid-session), the digest
    /// uses the resync nonce instead, which devices accept to get back in step.
    pub fn trigger(
        &mut self,
        dev_id: &str,
        server_id: &str,
        session_id: u16,
    ) -> Result<Vec<u8>, TriggerError> {
        let record = self
            .records
            .get(dev_id)
            .ok_or_else(|| TriggerError::UnknownDevice(dev_id.to_owned()))?;
        let unanswered = self.unanswered.entry(dev_id.to_owned()).or_insert(0);
        let resync = Nonce::resync();
        let nonce = if *unanswered > 0 {
            &resync
        } else {
            &record.server_nonce
        };
        *unanswered += 1;
        crate::syncml::pkg0::Trigger::new(session_id, server_id)
            .encode(server_id, &record.server.secret, nonce.as_bytes())
            .map_err(TriggerError::Encode)
    }

    /// Number of commands waiting for the device's next session.
    pub fn queued(&self, dev_id: &str) -> usize {
        self.queues.get(dev_id).map_or(0, VecDeque::len)
    }

    /// The session a RespURI token names.
    pub fn session_for_token(&self, token: &str) -> Option<(String, String)> {
        self.tokens.get(token).cloned()
    }

    /// Handles one message of a device session. `None` when the device is not enrolled. With
    /// `hold`, a message whose results a caller will follow up on is not answered yet:
    /// [`Handled::Hold`] says to wait on the waker (a while) and then call
    /// [`Devices::finish_message`].
    pub(crate) fn handle_message(
        &mut self,
        cfg: &ServerConfig,
        incoming: Incoming<'_>,
        hold: bool,
    ) -> Option<Handled> {
        let Incoming {
            dev_id,
            session_id,
            body,
            msg,
            hmac,
            random,
            token,
            encoding,
        } = incoming;
        let key = (dev_id.to_owned(), session_id.to_owned());
        if !self.sessions.contains_key(&key) {
            self.records.get(dev_id)?;
            // A device runs one session at a time: one it left unfinished is over.
            let stale: Vec<(String, String)> = self
                .sessions
                .keys()
                .filter(|(d, _)| d == dev_id)
                .cloned()
                .collect();
            for old in stale {
                self.drop_session(&old);
            }
            let record = self.records.get_mut(dev_id)?;
            let auth = DeviceAuth {
                dev_id: record.dev_id.clone(),
                client: record.client.clone(),
                client_nonce: record.client_nonce.clone(),
                server: record.server.clone(),
                server_nonce: record.server_nonce.clone(),
            };
            let mut session_cfg = cfg.clone();
            if let Some(base) = &cfg.resp_uri {
                session_cfg.resp_uri = Some(format!("{base}/s/{token}"));
            }
            let needs_inventory = record.needs_inventory;
            let mut session = ServerSession::new(session_cfg, auth);
            session.set_encoding(encoding);
            if needs_inventory {
                let tag = self.next_tag + 1;
                self.next_tag = tag;
                self.waiters.insert(tag, Waiter::Inventory);
                session.enqueue(
                    tag,
                    DeviceCommand::Get {
                        target: Target::parse(".?list=TNDS+ACL+Format+Type+Value+Title")
                            .unwrap_or_else(|_| Target::from(crate::dm::uri::NodeUri::root())),
                    },
                );
            }
            for (tag, cmd) in self.queues.remove(dev_id).unwrap_or_default() {
                session.enqueue(tag, cmd);
            }
            self.tokens.insert(token, key.clone());
            self.sessions.insert(key.clone(), session);
        }
        let session = self.sessions.get_mut(&key)?;
        let received = if session.encoding() == encoding {
            session.receive_decoded(msg, body, hmac, random)
        } else {
            // Decoded as the request said, but not in the session's encoding: decode it as
            // the session would (which refuses it with the codec's own words).
            session.receive(body, hmac, random)
        };
        let mut events = Vec::new();
        while let Some(e) = session.poll_event() {
            events.push(e);
        }
        // Events may queue follow-up commands (the inventory fallback) before the reply.
        self.follow_up_due = false;
        for e in events {
            self.apply_event(dev_id, session_id, e);
        }
        let session = self.sessions.get_mut(&key)?;
        if hold && received.is_ok() && self.follow_up_due && !session.has_queued() {
            // Someone will answer these results with more commands: keep the session (the
            // device waits for this reply) instead of ending it and waking the device again.
            let waker = std::sync::Arc::new(tokio::sync::Notify::new());
            self.held.insert(dev_id.to_owned(), waker.clone());
            tracing::debug!(device = dev_id, "reply held for follow-up commands");
            return Some(Handled::Hold(waker));
        }
        Some(Handled::Reply(
            self.finish_message(dev_id, session_id, received)?,
        ))
    }

    /// Builds the reply to the message just received (after a hold, if any) and closes the
    /// session when that reply ends it.
    pub(crate) fn finish_message(
        &mut self,
        dev_id: &str,
        session_id: &str,
        received: Result<(), SessionError>,
    ) -> Option<Result<crate::syncml::session::server::Reply, SessionError>> {
        if self.held.remove(dev_id).is_some() {
            tracing::debug!(device = dev_id, "held reply released");
        }
        let key = (dev_id.to_owned(), session_id.to_owned());
        let session = self.sessions.get_mut(&key)?;
        let result = received.and_then(|()| session.poll_reply().ok_or(SessionError::Ended));
        let done = session.is_done();
        if result.is_err() {
            self.stats.bad_messages += 1;
        }
        if done {
            self.drop_session(&key);
        }
        Some(result)
    }

    /// Ends a session: its unsent commands go back to the device's queue (the inventory is
    /// asked afresh next time) and the sent ones without an answer are lost.
    fn drop_session(&mut self, key: &(String, String)) {
        let (dev_id, session_id) = (key.0.as_str(), key.1.as_str());
        if let Some(mut s) = self.sessions.remove(key) {
            tracing::debug!(device = dev_id, done = s.is_done(), "session over");
            self.tokens.retain(|_, v| v != key);
            for (tag, cmd) in s.abandon() {
                if matches!(
                    self.waiters.get(&tag),
                    Some(Waiter::Inventory | Waiter::InventoryStruct)
                ) {
                    // The next session asks for the inventory afresh.
                    self.waiters.remove(&tag);
                    continue;
                }
                self.queues
                    .entry(dev_id.to_owned())
                    .or_default()
                    .push_back((tag, cmd));
            }
            while let Some(e) = s.poll_event() {
                self.apply_event(dev_id, session_id, e);
            }
        }
    }

    fn apply_event(&mut self, dev_id: &str, session_id: &str, event: ServerEvent<u64>) {
        let Some(record) = self.records.get_mut(dev_id) else {
            return;
        };
        match event {
            ServerEvent::ClientNonce(n) => record.client_nonce = n,
            ServerEvent::ServerNonce(n) => record.server_nonce = n,
            ServerEvent::DevInfo(leaves) => record.devinfo = leaves,
            ServerEvent::AuthFailed(_) => self.stats.auth_failures += 1,
            ServerEvent::Ended { aborted } => {
                self.no_room.remove(dev_id);
                if !aborted {
                    self.unanswered.remove(dev_id);
                    record.last_seen = Some(SystemTime::now());
                    self.stats.sessions_completed += 1;
                    if let Some(tx) = &self.observer {
                        // A listener that went away needs no events.
                        let _ = tx.send(DeviceEvent::SessionCompleted {
                            dev_id: dev_id.to_owned(),
                            session_id: session_id.to_owned(),
                        });
                    }
                }
            }
            ServerEvent::CommandDone { tag, outcome } => match self.waiters.remove(&tag) {
                Some(Waiter::Caller(tx, follow_up)) => {
                    self.follow_up_due |= follow_up;
                    // The caller may have stopped waiting; the outcome is then not needed.
                    let _ = tx.send(Ok(outcome));
                }
                Some(Waiter::Inventory) => {
                    if outcome.status == StatusCode::OK
                        && let Some(item) = outcome.results.first()
                    {
                        record.needs_inventory = false;
                        record.set_tree(tree_from_results(item));
                    } else {
                        // No TNDS on this device: list the structure with the data instead.
                        let tag = self.next_tag + 1;
                        self.next_tag = tag;
                        self.waiters.insert(tag, Waiter::InventoryStruct);
                        let target = Target::parse(".?list=StructData")
                            .unwrap_or_else(|_| Target::from(crate::dm::uri::NodeUri::root()));
                        self.push(dev_id, tag, DeviceCommand::Get { target });
                    }
                }
                Some(Waiter::InventoryStruct) => {
                    record.needs_inventory = false;
                    if outcome.status == StatusCode::OK {
                        record.set_tree(Some(tree_from_struct(&outcome.results)));
                    }
                }
                None => {}
            },
            ServerEvent::CommandLost { tag } => {
                if let Some(Waiter::Caller(tx, _)) = self.waiters.remove(&tag) {
                    let why = match self.no_room.get(dev_id) {
                        Some(&max_msg_size) => CommandError::NoRoom { max_msg_size },
                        None => CommandError::SessionLost,
                    };
                    // As above: a caller that stopped waiting needs no answer.
                    let _ = tx.send(Err(why));
                }
            }
            ServerEvent::NoRoom { max_msg_size } => {
                tracing::warn!(
                    "device {dev_id}: its MaxMsgSize of {max_msg_size} bytes leaves no room \
                     for the next command; the session ended"
                );
                self.no_room.insert(dev_id.to_owned(), max_msg_size);
            }
            ServerEvent::Authenticated
            | ServerEvent::ServerRejected(_)
            | ServerEvent::GenericAlert(_) => {}
        }
    }
}

/// Rebuilds what a server may see of a tree from `?list=StructData` items.
fn tree_from_struct(items: &[ResultItem]) -> DmTree {
    use crate::dm::props::{Format, NodeType};
    use crate::dm::tree::NodeProps;
    let mut tree = DmTree::new();
    for item in items {
        let Ok(uri) = crate::dm::uri::NodeUri::parse(&item.source) else {
            continue;
        };
        if uri.is_root() {
            continue;
        }
        // A node that does not fit (a damaged listing) is skipped; the rest still helps.
        let _ = if item.format == Format::Node {
            tree.ensure_interior(
                &uri,
                NodeProps::interior().with_type(NodeType::DdfName(item.ty.clone())),
            )
            .map(|_| ())
        } else {
            tree.put_leaf(
                &uri,
                item.data.clone(),
                NodeProps::leaf(item.format, &item.ty),
            )
            .map(|_| ())
        };
    }
    tree
}

fn tree_from_results(item: &ResultItem) -> Option<DmTree> {
    let doc = TndsDocument::from_xml(&item.data).ok()?;
    DmTree::from_tnds(&doc, TreeLimits::default()).ok()
}
