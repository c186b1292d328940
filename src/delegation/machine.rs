//! One delegation as a sans-IO state machine, for either role and either initiator, with the
//! DMAcc and the Bootstrap Server URL approaches, Full and Partial, temporary (leased) or not.
//!
//! Inputs arrive through [`Delegation::handle`] (a peer message, the outcome of device
//! commands, a timer, an operator's decision); what must happen next comes out of
//! [`Delegation::poll_action`] (send a message to the peer, run commands on the device, make
//! a bootstrap URL, enrol the device) and [`Delegation::poll_timeout`] (the next deadline).
//! Nothing here reads a clock: time is an argument. The whole value is serialisable, and the
//! engine stores it with each transition before it performs the actions.
//!
//! The steps and states follow DESIGN.md section 4 and docs/PROTOCOL.md section 6.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::messages::{Approach, Body, DelType, DelegationId, DeviceInfo, Message};
use super::plan::{self, Plan, PlanError};
use super::reason::ReasonCode;
use crate::dm::acl::Acl;
use crate::dm::mo::BootConfigEntry;
use crate::dm::tnds::TndsDocument;
use crate::dm::tree::DmTree;
use crate::dm::uri::{NodeUri, Query, Target};
use crate::syncml::StatusCode;
use crate::syncml::session::{CommandOutcome, DeviceCommand};

/// Milliseconds since the Unix epoch.
pub type UnixMs = i64;

/// Which side of the delegation this server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// DMS-1: hands the device over.
    Delegating,
    /// DMS-2: receives it.
    Delegated,
}

/// The delegation's state, as the console shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// In progress.
    Running,
    /// An incoming request waits for an operator's decision.
    AwaitingOperator,
    /// Undoing the device changes after a failure.
    RollingBack,
    /// Done: the delegated server manages the device (or the lease ended and it was reverted).
    Completed,
    /// Failed; the device is back as it was.
    Failed,
    /// Aborted by an operator; the device is back as it was.
    Aborted,
}

impl State {
    /// True for Completed, Failed and Aborted.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Aborted)
    }
}

/// The eight steps of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Step {
    /// 1: DELEGATION_NOTIF and DELEGATION_RESP.
    Notification = 1,
    /// 2: the servers authenticate each other (mutual TLS).
    MutualAuth = 2,
    /// 3: the delegated server's account (DMAcc approach) or bootstrap URL travels.
    AccountTransfer = 3,
    /// 4: the delegating server changes the device.
    ClientPreparation = 4,
    /// 5: DELEGATION_PREPARED (DMAcc approach) or the device fetches its bootstrap.
    Prepared = 5,
    /// 6: the delegated server's first session with the device.
    DelegatedSession = 6,
    /// 7: DELEGATION_CONFIRM.
    Confirm = 7,
    /// 8: the delegating server deletes its own account (Full only).
    DeleteAccount = 8,
}

/// What the delegation waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wait {
    /// An operator's Accept or Decline of an incoming request.
    Decision,
    /// DELEGATION_RESP to our DELEGATION_NOTIF.
    Resp,
    /// DELEGATING: DELEGATION_START with the account.
    Start,
    /// DELEGATING: BOOTSTRAP_SRV_URL_DELIVERY.
    UrlDelivery,
    /// DELEGATING: the device's tree with ACLs (op in flight).
    Snapshot,
    /// DELEGATING: the device applying the plan (op in flight).
    Changes,
    /// DELEGATING: after a restart, the device's tree, to learn whether the changes in flight
    /// took (op in flight).
    Verify,
    /// DELEGATING: DELEGATION_CONFIRM.
    Confirm,
    /// DELEGATING: the device's tree, to compute step 8 (op in flight).
    CleanupSnapshot,
    /// DELEGATING: step 8 on the device (op in flight).
    Cleanup,
    /// DELEGATING: the undo on the device (op in flight, or retried).
    Undo,
    /// DELEGATING: a temporary delegation runs until its lease ends.
    Lease,
    /// DELEGATED: the operator or policy decided; DELEGATION_START or the URL request follows.
    UrlRequest,
    /// DELEGATED: the engine making a bootstrap URL.
    MakeUrl,
    /// DELEGATED: DELEGATION_PREPARED.
    Prepared,
    /// DELEGATED: the device activating the account (op in flight).
    Activation,
    /// DELEGATED: the device calling after its bootstrap.
    DeviceSession,
    /// Nothing: the delegation is over.
    Nothing,
}

/// A device command in a form that can be stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredCommand {
    /// Replace a node's ACL.
    ReplaceAcl {
        /// The node.
        uri: String,
        /// The ACL text.
        acl: String,
    },
    /// Delete a node.
    Delete {
        /// The node.
        uri: String,
    },
    /// Replace a leaf's text value.
    ReplaceText {
        /// The leaf.
        uri: String,
        /// Its value.
        value: String,
    },
    /// Add a TNDS document at a target.
    AddTnds {
        /// The target.
        target: String,
        /// The document (XML).
        xml: String,
    },
    /// Get a listing.
    Get {
        /// The target with its query.
        target: String,
    },
}

impl StoredCommand {
    /// From a device command (the kinds a plan uses).
    pub fn from_command(cmd: &DeviceCommand) -> Option<StoredCommand> {
        Some(match cmd {
            DeviceCommand::Replace { target, value, .. } => match &target.query {
                Some(Query::Prop(p)) if p == "ACL" => StoredCommand::ReplaceAcl {
                    uri: target.uri.to_string(),
                    acl: String::from_utf8_lossy(value).into_owned(),
                },
                None => StoredCommand::ReplaceText {
                    uri: target.uri.to_string(),
                    value: String::from_utf8_lossy(value).into_owned(),
                },
                _ => return None,
            },
            DeviceCommand::Delete { target } => StoredCommand::Delete {
                uri: target.to_string(),
            },
            DeviceCommand::AddTnds { target, doc } => StoredCommand::AddTnds {
                target: target.to_string(),
                xml: doc.to_xml(),
            },
            DeviceCommand::Get { target } => StoredCommand::Get {
                target: target.to_string(),
            },
            _ => return None,
        })
    }

    /// Back to a device command. Stored values were valid when stored.
    pub fn to_command(&self) -> Option<DeviceCommand> {
        Some(match self {
            StoredCommand::ReplaceAcl { uri, acl } => {
                DeviceCommand::replace_acl(&NodeUri::parse(uri).ok()?, &Acl::parse(acl).ok()?)
            }
            StoredCommand::Delete { uri } => DeviceCommand::Delete {
                target: NodeUri::parse(uri).ok()?,
            },
            StoredCommand::ReplaceText { uri, value } => {
                let mut c = DeviceCommand::replace_text(&NodeUri::parse(uri).ok()?, value);
                if uri.ends_with("/Dormant")
                    && let DeviceCommand::Replace { format, .. } = &mut c
                {
                    *format = crate::dm::props::Format::Bool;
                }
                c
            }
            StoredCommand::AddTnds { target, xml } => DeviceCommand::AddTnds {
                target: NodeUri::parse(target).ok()?,
                doc: TndsDocument::from_xml(xml.as_bytes()).ok()?,
            },
            StoredCommand::Get { target } => DeviceCommand::Get {
                target: Target::parse(target).ok()?,
            },
        })
    }
}

fn store_all(cmds: &[DeviceCommand]) -> Vec<StoredCommand> {
    cmds.iter()
        .filter_map(StoredCommand::from_command)
        .collect()
}

fn load_all(cmds: &[StoredCommand]) -> Vec<DeviceCommand> {
    cmds.iter().filter_map(StoredCommand::to_command).collect()
}

/// An operator's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorAction {
    /// Accept an incoming request.
    Accept,
    /// Decline it, with a reason.
    Decline(String),
    /// Abort a running delegation (it rolls back).
    Abort,
}

/// What became of commands sent to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceResult {
    /// The device answered each command, in order.
    Done(Vec<CommandOutcome>),
    /// The device could not be reached or the session broke before it answered.
    Unreachable,
    /// The device was reached but cannot take the commands (e.g. its MaxMsgSize leaves no
    /// room for them); the text says why.
    Unusable(String),
}

/// An input.
// A message is moved once from the endpoint into the machine; boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A message from the peer (already authenticated as the peer).
    Peer(Message),
    /// The outcome of device operation `op`.
    Device {
        /// The operation's number.
        op: u32,
        /// What happened.
        result: DeviceResult,
    },
    /// DELEGATED: the engine made the bootstrap URL asked for.
    BootstrapUrl(String),
    /// DELEGATED: the device opened an authenticated session after its bootstrap.
    DeviceCalled {
        /// That session's id.
        session_id: String,
    },
    /// Time passed (deadlines due at or before `now` fire).
    Timer,
    /// An operator's decision.
    Operator(OperatorAction),
    /// The peer refused our message `seq` for good (HTTP 400, 403, 404 or 409).
    PeerRefused {
        /// The refused message's Seq.
        seq: u32,
        /// The HTTP status.
        status: u16,
        /// The peer's explanation.
        reason: String,
    },
    /// The peer is no longer one of this server's peers (an operator removed it, or it left
    /// the configuration): nothing more can be sent to it, and what was unsent is dropped.
    PeerGone,
}

/// An action for the engine.
// As for `Input`: each action is moved out once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this message to the peer (retrying until it is acknowledged).
    SendPeer(Message),
    /// Run these commands on the device in a DM session (waking it with Package #0) and
    /// report the outcome as [`Input::Device`] with this `op`.
    Device {
        /// The operation's number.
        op: u32,
        /// The commands, in order.
        commands: Vec<DeviceCommand>,
    },
    /// DELEGATED: make a one-time bootstrap URL for the device and report it as
    /// [`Input::BootstrapUrl`].
    MakeBootstrapUrl,
    /// DELEGATED: enrol the device with the account's credentials (before it may call).
    EnrolDevice,
    /// The delegation is over: forget its working state (tokens, the peer's secrets).
    Purge,
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// The message is not valid in the current state (HTTP 409).
    #[error("{0} is not valid now: the delegation waits for {1}")]
    NotNow(String, String),
    /// The message repeats one already processed (answer 202, do nothing).
    #[error("duplicate message {0}")]
    Duplicate(u32),
    /// The message's fields contradict the delegation (HTTP 400).
    #[error("the message does not match the delegation: {0}")]
    Mismatch(String),
    /// The delegation is over.
    #[error("the delegation is over")]
    Over,
}

impl Reject {
    /// The HTTP status the peer endpoint answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Reject::NotNow(..) | Reject::Over => 409,
            Reject::Duplicate(_) => 202,
            Reject::Mismatch(_) => 400,
        }
    }
}

/// How long each step may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadlines {
    /// For the peer to answer a message (RESP, START, URL delivery, PREPARED, CONFIRM).
    pub peer_ms: i64,
    /// For the device to answer commands (it may be offline).
    pub device_ms: i64,
    /// Bootstrap approach: for the device to fetch its bootstrap and the delegated server to
    /// confirm (step 7).
    pub bootstrap_ms: i64,
    /// For an operator to decide on a request.
    pub decision_ms: i64,
    /// Between retries of an undo the device did not take.
    pub undo_retry_ms: i64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            peer_ms: 60_000,
            device_ms: 300_000,
            bootstrap_ms: 600_000,
            decision_ms: 86_400_000,
            undo_retry_ms: 30_000,
        }
    }
}

/// A record of what happened, for the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at: UnixMs,
    /// The step it belongs to.
    pub step: Step,
    /// Plain words.
    pub text: String,
}

/// One delegation, as one server sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delegation {
    /// The DelegationID.
    pub id: String,
    /// Our role.
    pub role: Role,
    /// Our ServerID.
    pub me: String,
    /// The peer's ServerID.
    pub peer: String,
    /// Who sent DELEGATION_NOTIF.
    pub initiator: Role,
    /// The device.
    pub dev_id: String,
    /// Its manufacturer.
    pub man: String,
    /// Its model.
    pub model: String,
    /// Its push address, if known.
    pub notify: Option<String>,
    /// Full or Partial.
    pub full: bool,
    /// DMAcc or bootstrap approach.
    pub bootstrap: bool,
    /// Delegated subtrees (`.` for Full).
    pub paths: Vec<String>,
    /// Lease in seconds, for a temporary delegation.
    pub lease: Option<u64>,
    /// The state.
    pub state: State,
    /// The current step.
    pub step: Step,
    /// What it waits for.
    pub wait: Wait,
    /// Our last message's Seq.
    pub seq_out: u32,
    /// The peer's last processed Seq.
    pub seq_in: u32,
    /// When the current wait times out.
    pub deadline: Option<UnixMs>,
    /// Deadlines per step.
    pub deadlines: Deadlines,
    /// The device operation in flight (its number).
    pub op: u32,
    /// DELEGATING: the delegated server's account (TNDS XML) until the device has it;
    /// DELEGATED: the account we gave. Purged at the end.
    pub account_xml: Option<String>,
    /// The account's node name.
    pub account_name: Option<String>,
    /// The bootstrap URL (bootstrap approach).
    pub bootstrap_url: Option<String>,
    /// DELEGATING: the commands applying the plan, until the device took them.
    pub changes: Vec<StoredCommand>,
    /// DELEGATING: the undo of every change made on the device, in order.
    pub undo: Vec<StoredCommand>,
    /// The failure reason code and description.
    pub reason: Option<(u16, String)>,
    /// The delegated server's session with the device (from CONFIRM).
    pub session_id: Option<String>,
    /// A leased delegation reverts at this time.
    pub lease_until: Option<UnixMs>,
    /// The timeline.
    pub events: Vec<Event>,
    /// The state to end in after a rollback.
    pub end_state: Option<State>,
    /// DELEGATING: the engine restarted while step 8's commands were out, so the device may
    /// have taken them, and with them this server's account: if it no longer answers this
    /// server, step 8 is taken to be done.
    #[serde(default)]
    pub cleanup_unsure: bool,
    #[serde(skip)]
    actions: VecDeque<Action>,
    #[serde(skip)]
    account_cache: AccountCache,
}

/// The account of `account_xml` already parsed, so that the step that uses it (DELEGATION_START,
/// the device plan) does not parse the XML this machine has just written. Not stored: after a
/// restart the account is parsed from `account_xml` again. It takes no part in comparisons.
/// Shared, so that handing the account on copies no node.
#[derive(Clone, Default)]
struct AccountCache(Option<(String, Arc<crate::dm::tnds::TndsNode>)>);

impl PartialEq for AccountCache {
    fn eq(&self, _: &AccountCache) -> bool {
        true
    }
}

impl std::fmt::Debug for AccountCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountCache")
    }
}

/// How a new delegation starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The DelegationID (a fresh UUID from the engine).
    pub id: String,
    /// Our role.
    pub role: Role,
    /// Our ServerID.
    pub me: String,
    /// The peer's ServerID.
    pub peer: String,
    /// The device.
    pub device: DeviceInfo,
    /// Full or Partial.
    pub full: bool,
    /// Bootstrap approach instead of DMAcc.
    pub bootstrap: bool,
    /// Partial: the subtrees.
    pub paths: Vec<NodeUri>,
    /// A lease in seconds.
    pub lease: Option<u64>,
    /// Deadlines.
    pub deadlines: Deadlines,
}

fn reason_text(code: ReasonCode, detail: &str) -> (u16, String) {
    (code.0, detail.to_owned())
}

impl Delegation {
    fn blank(s: &Start, initiator: Role, now: UnixMs) -> Delegation {
        Delegation {
            id: s.id.clone(),
            role: s.role,
            me: s.me.clone(),
            peer: s.peer.clone(),
            initiator,
            dev_id: s.device.dev_id.clone(),
            man: s.device.man.clone(),
            model: s.device.model.clone(),
            notify: s.device.notify.clone(),
            full: s.full,
            bootstrap: s.bootstrap,
            paths: if s.full {
                vec![".".into()]
            } else {
                s.paths.iter().map(|p| p.to_string()).collect()
            },
            lease: s.lease,
            state: State::Running,
            step: Step::Notification,
            wait: Wait::Resp,
            seq_out: 0,
            seq_in: 0,
            deadline: None,
            deadlines: s.deadlines,
            op: 0,
            account_xml: None,
            account_name: None,
            bootstrap_url: None,
            changes: Vec::new(),
            undo: Vec::new(),
            reason: None,
            session_id: None,
            lease_until: None,
            events: vec![Event {
                at: now,
                step: Step::Notification,
                text: String::new(),
            }],
            end_state: None,
            cleanup_unsure: false,
            actions: VecDeque::new(),
            account_cache: AccountCache::default(),
        }
    }

    /// Starts a delegation on this server's initiative: DELEGATION_NOTIF goes to the peer.
    /// `account` is our DMAcc when we are the delegated server (sent with START later).
    pub fn initiate(
        s: &Start,
        account: Option<crate::dm::tnds::TndsNode>,
        now: UnixMs,
    ) -> Delegation {
        let mut d = Delegation::blank(s, s.role, now);
        d.events.clear();
        d.record(
            now,
            Step::Notification,
            "this server asked the peer to take part (DELEGATION_NOTIF)",
        );
        if let Some(acc) = account {
            d.set_account(acc);
        }
        let body = Body::Notif {
            sender: match s.role {
                Role::Delegating => super::messages::Sender::Delegating,
                Role::Delegated => super::messages::Sender::Delegated,
            },
            device: s.device.clone(),
            paths: if s.full {
                vec![NodeUri::root()]
            } else {
                s.paths.clone()
            },
        };
        d.send(body);
        d.wait_for(Wait::Resp, now + d.deadlines.peer_ms);
        d
    }

    /// A delegation started by the peer's DELEGATION_NOTIF; `role` is ours (the opposite of
    /// the NOTIF's `Sender`, see [`Delegation::role_for`]). It waits for an operator's (or a policy's)
    /// decision. `account` is our DMAcc when we are the delegated server.
    pub fn incoming(
        msg: &Message,
        me: &str,
        role: Role,
        account: Option<crate::dm::tnds::TndsNode>,
        deadlines: Deadlines,
        now: UnixMs,
    ) -> Result<Delegation, Reject> {
        let Body::Notif { device, paths, .. } = &msg.body else {
            return Err(Reject::Mismatch(
                "a delegation starts with DELEGATION_NOTIF".into(),
            ));
        };
        if msg.server_id == me {
            return Err(Reject::Mismatch(
                "the request names this server as its sender".into(),
            ));
        }
        let s = Start {
            id: msg.id.as_str().to_owned(),
            role,
            me: me.to_owned(),
            peer: msg.server_id.clone(),
            device: device.clone(),
            full: msg.del_type == DelType::Full,
            bootstrap: msg.approach == Approach::BootstrapUrl,
            paths: paths.iter().filter(|p| !p.is_root()).cloned().collect(),
            lease: msg.lease,
            deadlines,
        };
        let initiator = match role {
            Role::Delegating => Role::Delegated,
            Role::Delegated => Role::Delegating,
        };
        let mut d = Delegation::blank(&s, initiator, now);
        d.events.clear();
        d.seq_in = msg.seq;
        d.state = State::AwaitingOperator;
        if let Some(acc) = account {
            d.set_account(acc);
        }
        d.record(
            now,
            Step::Notification,
            "the peer asked this server to take part (DELEGATION_NOTIF)",
        );
        d.record(
            now,
            Step::MutualAuth,
            "the peer authenticated with its certificate (mutual TLS)",
        );
        d.wait_for(Wait::Decision, now + deadlines.decision_ms);
        Ok(d)
    }

    /// Our role in the delegation a NOTIF opens: the other one than its sender's.
    pub fn role_for(msg: &Message) -> Option<Role> {
        match &msg.body {
            Body::Notif { sender, .. } => Some(match sender {
                super::messages::Sender::Delegating => Role::Delegated,
                super::messages::Sender::Delegated => Role::Delegating,
            }),
            _ => None,
        }
    }

    fn record(&mut self, now: UnixMs, step: Step, text: &str) {
        self.events.push(Event {
            at: now,
            step,
            text: text.to_owned(),
        });
    }

    fn wait_for(&mut self, wait: Wait, deadline: UnixMs) {
        self.wait = wait;
        self.deadline = Some(deadline);
    }

    fn send(&mut self, body: Body) {
        self.seq_out += 1;
        let msg = Message {
            id: DelegationId::parse(&self.id).unwrap_or_else(|_| DelegationId::from_bytes([0; 16])),
            seq: self.seq_out,
            server_id: self.me.clone(),
            del_type: if self.full {
                DelType::Full
            } else {
                DelType::Partial
            },
            approach: if self.bootstrap {
                Approach::BootstrapUrl
            } else {
                Approach::DmAcc
            },
            lease: self.lease,
            body,
        };
        self.actions.push_back(Action::SendPeer(msg));
    }

    fn device(&mut self, commands: Vec<DeviceCommand>, wait: Wait, now: UnixMs) {
        self.op += 1;
        self.actions.push_back(Action::Device {
            op: self.op,
            commands,
        });
        self.wait_for(wait, now + self.deadlines.device_ms);
    }

    /// The next action.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Input::Timer`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<UnixMs> {
        if self.state.is_terminal() && self.wait != Wait::Lease {
            return None;
        }
        self.deadline
    }

    fn paths(&self) -> Vec<NodeUri> {
        if self.full {
            Vec::new()
        } else {
            self.paths
                .iter()
                .filter_map(|p| NodeUri::parse(p).ok())
                .collect()
        }
    }

    /// Handles one input at time `now`.
    pub fn handle(&mut self, now: UnixMs, input: Input) -> Result<(), Reject> {
        match input {
            Input::Peer(msg) => self.handle_peer(now, msg),
            Input::Device { op, result } => {
                if op != self.op {
                    // An answer to an operation the delegation moved past (late outcome).
                    return Ok(());
                }
                self.handle_device(now, result);
                Ok(())
            }
            Input::BootstrapUrl(url) => {
                if self.wait != Wait::MakeUrl {
                    return Ok(());
                }
                self.bootstrap_url = Some(url.clone());
                self.record(
                    now,
                    Step::AccountTransfer,
                    "bootstrap URL sent (BOOTSTRAP_SRV_URL_DELIVERY)",
                );
                self.send(Body::BootstrapUrlDelivery { url });
                self.step = Step::Prepared;
                self.wait_for(Wait::DeviceSession, now + self.deadlines.bootstrap_ms);
                Ok(())
            }
            Input::DeviceCalled { session_id } => {
                if self.wait != Wait::DeviceSession {
                    return Ok(());
                }
                self.record(
                    now,
                    Step::DelegatedSession,
                    "the device fetched its bootstrap and called this server",
                );
                self.confirm(now, session_id);
                Ok(())
            }
            Input::Timer => {
                self.handle_timer(now);
                Ok(())
            }
            Input::Operator(a) => self.handle_operator(now, a),
            Input::PeerRefused {
                seq,
                status,
                reason,
            } => {
                let text = format!("the peer refused message {seq} (HTTP {status}): {reason}");
                if self.state.is_terminal() && self.wait != Wait::Lease {
                    self.record(now, self.step, &text);
                    return Ok(());
                }
                // After a 409 the peer knows the delegation and hears of the failure; after
                // 400, 403 or 404 it would refuse that too.
                self.fail(now, ReasonCode::BAD_MESSAGE, &text, status == 409);
                Ok(())
            }
            Input::PeerGone => {
                let text = format!("{} is no longer one of this server's peers", self.peer);
                if self.state.is_terminal() && self.wait != Wait::Lease {
                    self.record(
                        now,
                        self.step,
                        &format!("{text}; what was left to tell it is dropped"),
                    );
                    return Ok(());
                }
                self.fail(now, ReasonCode::INTERNAL, &text, false);
                Ok(())
            }
        }
    }

    /// Refuses an incoming request with a reason code (e.g. 1003 Busy): DELEGATION_FAILURE
    /// answers the NOTIF and the delegation ends Failed.
    pub fn refuse(&mut self, now: UnixMs, code: ReasonCode, text: &str) -> Result<(), Reject> {
        if self.wait != Wait::Decision {
            return Err(Reject::NotNow(
                "a refusal".into(),
                format!("{:?}", self.wait),
            ));
        }
        self.fail(now, code, text, true);
        Ok(())
    }

    /// The peer sent a message that is not valid in the current state (answered 409): the
    /// two servers disagree on where the delegation is, so it fails with 3001 and rolls back,
    /// and the peer hears why.
    pub fn reject_out_of_state(&mut self, now: UnixMs, text: &str) {
        if self.state.is_terminal() {
            return;
        }
        self.fail(now, ReasonCode::BAD_MESSAGE, text, true);
    }

    /// After a restart: asks again for what was in flight, since the engine's queues and
    /// connections did not survive. Device operations are repeated only where repeating is
    /// harmless; changes that may have reached the device are first checked on a fresh copy
    /// of its tree, so nothing is applied twice.
    pub fn resume(&mut self, now: UnixMs) {
        match self.wait {
            Wait::Snapshot => self.snapshot(now),
            Wait::Changes | Wait::Verify => {
                self.record(
                    now,
                    Step::ClientPreparation,
                    "resumed after a restart: checking whether the device took the changes",
                );
                self.device(vec![tree_listing()], Wait::Verify, now);
            }
            Wait::Activation => {
                let name = self.account_name.clone().unwrap_or_default();
                self.device(plan::activate(&name), Wait::Activation, now);
            }
            Wait::CleanupSnapshot => self.cleanup(now),
            Wait::Cleanup => {
                self.cleanup_unsure = self.full;
                self.cleanup(now);
            }
            Wait::Undo => self.retry_undo_now(now),
            _ => {}
        }
    }

    /// Step 8 after a restart, and the device no longer answers: it took step 8 (this
    /// server's account is gone, so it cannot call this server any more).
    fn cleanup_taken(&mut self, now: UnixMs) -> bool {
        if !self.cleanup_unsure {
            return false;
        }
        self.cleanup_unsure = false;
        self.record(
            now,
            Step::DeleteAccount,
            "the device no longer answers this server: it took step 8 before the restart",
        );
        self.finish(now, State::Completed);
        true
    }

    /// Whether the changes of this delegation are on the device tree `tree`: the Atomic is
    /// all or nothing, so its first node tells.
    fn changes_present(&self, tree: &DmTree) -> bool {
        let marker = if self.bootstrap {
            format!(
                "{}/{}",
                BootConfigEntry::default_root(),
                self.peer.replace(['/', '?'], "_")
            )
        } else {
            format!("./DMAcc/{}", self.account_name.clone().unwrap_or_default())
        };
        NodeUri::parse(&marker).is_ok_and(|u| tree.find(&u).is_some())
    }

    fn handle_operator(&mut self, now: UnixMs, a: OperatorAction) -> Result<(), Reject> {
        match a {
            OperatorAction::Accept => {
                if self.wait != Wait::Decision {
                    return Err(Reject::NotNow("Accept".into(), format!("{:?}", self.wait)));
                }
                self.state = State::Running;
                self.record(now, Step::Notification, "accepted (DELEGATION_RESP ack)");
                self.send(Body::Resp {
                    ack: true,
                    reason: None,
                });
                self.step = Step::AccountTransfer;
                self.after_ack(now);
                Ok(())
            }
            OperatorAction::Decline(reason) => {
                if self.wait != Wait::Decision {
                    return Err(Reject::NotNow("Decline".into(), format!("{:?}", self.wait)));
                }
                self.send(Body::Resp {
                    ack: false,
                    reason: Some(format!("{} {reason}", ReasonCode::CANCELLED.0)),
                });
                self.reason = Some(reason_text(ReasonCode::CANCELLED, &reason));
                self.record(now, Step::Notification, "declined (DELEGATION_RESP nack)");
                self.finish(now, State::Aborted);
                Ok(())
            }
            OperatorAction::Abort => {
                if self.state.is_terminal() && self.wait != Wait::Lease {
                    return Err(Reject::Over);
                }
                if self.state == State::RollingBack {
                    return Ok(());
                }
                if matches!(self.wait, Wait::Cleanup | Wait::CleanupSnapshot) {
                    return Err(Reject::NotNow(
                        "Abort".into(),
                        "the delegation stands once confirmed".into(),
                    ));
                }
                self.fail(
                    now,
                    ReasonCode::CANCELLED,
                    "an operator aborted the delegation",
                    true,
                );
                Ok(())
            }
        }
    }

    /// What follows an accepted request, by role and approach.
    fn after_ack(&mut self, now: UnixMs) {
        match (self.role, self.bootstrap) {
            (Role::Delegated, false) => self.send_start(now),
            (Role::Delegated, true) => {
                self.wait_for(Wait::UrlRequest, now + self.deadlines.peer_ms);
            }
            (Role::Delegating, false) => {
                self.wait_for(Wait::Start, now + self.deadlines.peer_ms);
            }
            (Role::Delegating, true) => {
                self.record(
                    now,
                    Step::AccountTransfer,
                    "asked for the bootstrap URL (BOOTSTRAP_SRV_URL_REQ)",
                );
                self.send(Body::BootstrapUrlReq);
                self.step = Step::AccountTransfer;
                self.wait_for(Wait::UrlDelivery, now + self.deadlines.peer_ms);
            }
        }
    }

    /// Keeps `node` as the account (its XML for the store, the node itself for this run).
    fn set_account(&mut self, node: crate::dm::tnds::TndsNode) {
        let xml = account_doc_xml(&node);
        self.account_name = Some(node.name.clone());
        self.account_cache = AccountCache(Some((xml.clone(), Arc::new(node))));
        self.account_xml = Some(xml);
    }

    /// The account as a node: the one kept by [`Delegation::set_account`] while it is still
    /// the one `account_xml` holds, otherwise parsed from `account_xml`.
    pub fn account(&self) -> Option<Arc<crate::dm::tnds::TndsNode>> {
        let xml = self.account_xml.as_deref()?;
        match &self.account_cache.0 {
            Some((kept, node)) if kept == xml => Some(node.clone()),
            _ => account_node(xml).map(Arc::new),
        }
    }

    fn send_start(&mut self, now: UnixMs) {
        if self.account_xml.is_none() {
            self.fail(now, ReasonCode::INTERNAL, "no account to send", false);
            return;
        }
        let Some(node) = self.account() else {
            self.fail(
                now,
                ReasonCode::INTERNAL,
                "the account cannot be read",
                false,
            );
            return;
        };
        self.actions.push_back(Action::EnrolDevice);
        self.step = Step::AccountTransfer;
        self.record(
            now,
            Step::AccountTransfer,
            "account sent (DELEGATION_START)",
        );
        self.send(Body::Start {
            dmacc: Arc::unwrap_or_clone(node),
            conn: None,
        });
        self.wait_for(
            Wait::Prepared,
            now + self.deadlines.device_ms + self.deadlines.peer_ms,
        );
    }

    fn handle_peer(&mut self, now: UnixMs, msg: Message) -> Result<(), Reject> {
        if msg.server_id != self.peer {
            return Err(Reject::Mismatch(format!(
                "the message is from {}, the delegation's peer is {}",
                msg.server_id, self.peer
            )));
        }
        if msg.seq <= self.seq_in {
            return Err(Reject::Duplicate(msg.seq));
        }
        if let Body::Failure { code, description } = &msg.body {
            self.seq_in = msg.seq;
            if self.state.is_terminal() && self.wait != Wait::Lease {
                return Ok(());
            }
            let text = format!("the peer reported failure {code}: {description}");
            self.record(now, self.step, &text);
            let code = *code;
            self.fail(now, code, description, false);
            return Ok(());
        }
        if self.state.is_terminal() {
            return Err(Reject::Over);
        }
        let kind = msg.msg_type();
        let expected = format!("{:?}", self.wait);
        let result = match (&self.wait, msg.body) {
            (Wait::Resp, Body::Resp { ack, reason }) => {
                if ack {
                    self.record(
                        now,
                        Step::Notification,
                        "the peer accepted (DELEGATION_RESP ack)",
                    );
                    self.record(
                        now,
                        Step::MutualAuth,
                        "the peer authenticated with its certificate (mutual TLS)",
                    );
                    self.step = Step::AccountTransfer;
                    self.after_ack(now);
                } else {
                    let reason = reason.unwrap_or_default();
                    let (code, text) = parse_reason(&reason);
                    self.reason = Some((code.0, text.clone()));
                    self.record(
                        now,
                        Step::Notification,
                        &format!("the peer declined: {text}"),
                    );
                    let end = if code == ReasonCode::CANCELLED {
                        State::Aborted
                    } else {
                        State::Failed
                    };
                    self.finish(now, end);
                }
                Ok(())
            }
            (Wait::Start, Body::Start { dmacc, .. }) if self.role == Role::Delegating => {
                if dmacc_server_id(&dmacc).as_deref() != Some(self.peer.as_str()) {
                    self.fail(
                        now,
                        ReasonCode::BAD_MESSAGE,
                        "the account is not the peer's",
                        true,
                    );
                    return Ok(());
                }
                self.set_account(dmacc);
                self.record(
                    now,
                    Step::AccountTransfer,
                    "received the peer's account (DELEGATION_START)",
                );
                self.snapshot(now);
                Ok(())
            }
            (Wait::UrlDelivery, Body::BootstrapUrlDelivery { url }) => {
                self.bootstrap_url = Some(url);
                self.record(
                    now,
                    Step::AccountTransfer,
                    "received the bootstrap URL (BOOTSTRAP_SRV_URL_DELIVERY)",
                );
                self.snapshot(now);
                Ok(())
            }
            (Wait::UrlRequest, Body::BootstrapUrlReq) => {
                self.record(
                    now,
                    Step::AccountTransfer,
                    "asked for a bootstrap URL (BOOTSTRAP_SRV_URL_REQ)",
                );
                self.actions.push_back(Action::EnrolDevice);
                self.actions.push_back(Action::MakeBootstrapUrl);
                self.wait_for(Wait::MakeUrl, now + self.deadlines.peer_ms);
                Ok(())
            }
            (Wait::Prepared, Body::Prepared) => {
                self.record(
                    now,
                    Step::Prepared,
                    "the device is prepared (DELEGATION_PREPARED)",
                );
                self.step = Step::DelegatedSession;
                let name = self.account_name.clone().unwrap_or_default();
                self.device(plan::activate(&name), Wait::Activation, now);
                Ok(())
            }
            (Wait::Changes, Body::Confirm { session_id })
                if self.bootstrap && self.role == Role::Delegating =>
            {
                // The device took the changes, fetched its bootstrap and called the peer
                // before the engine heard the device's own answer: the CONFIRM proves it.
                self.record(
                    now,
                    Step::ClientPreparation,
                    "the peer's confirmation shows the device took the changes",
                );
                self.changes_applied(now);
                self.confirmed(now, session_id);
                Ok(())
            }
            (Wait::Confirm, Body::Confirm { session_id }) => {
                self.confirmed(now, session_id);
                Ok(())
            }
            (_, _) => Err(Reject::NotNow(kind.as_str().to_owned(), expected)),
        };
        if result.is_ok() {
            self.seq_in = msg.seq;
        }
        result
    }

    /// DELEGATING: the peer's CONFIRM was taken: steps 6 and 7 are recorded, and step 8 (or
    /// the lease) follows.
    fn confirmed(&mut self, now: UnixMs, session_id: String) {
        self.record(
            now,
            Step::DelegatedSession,
            &format!("the peer had its session with the device ({session_id})"),
        );
        self.session_id = Some(session_id);
        self.record(
            now,
            Step::Confirm,
            "the peer manages the device (DELEGATION_CONFIRM)",
        );
        self.step = Step::Confirm;
        self.after_confirm(now);
    }

    /// DELEGATING: ask the device for its tree with ACLs, to plan against fresh data.
    fn snapshot(&mut self, now: UnixMs) {
        self.step = Step::ClientPreparation;
        self.device(vec![tree_listing()], Wait::Snapshot, now);
    }

    fn handle_device(&mut self, now: UnixMs, result: DeviceResult) {
        let outcomes = match result {
            DeviceResult::Done(o) => o,
            // Changes it cannot take now are refused changes; an undo or a step 8 is still
            // retried, as for a device out of reach (it may come back with more room).
            DeviceResult::Unusable(why)
                if !matches!(
                    self.wait,
                    Wait::Undo | Wait::Cleanup | Wait::CleanupSnapshot
                ) =>
            {
                let text = format!("the device cannot take the commands: {why}");
                self.fail(now, ReasonCode::CLIENT_REJECTED, &text, true);
                return;
            }
            DeviceResult::Unreachable | DeviceResult::Unusable(_) => {
                match self.wait {
                    Wait::Undo => self.retry_undo(now),
                    Wait::Cleanup | Wait::CleanupSnapshot => {
                        if self.cleanup_taken(now) {
                            return;
                        }
                        self.wait = Wait::Cleanup;
                        self.record(
                            now,
                            Step::DeleteAccount,
                            "the device is out of reach; step 8 is retried",
                        );
                        self.deadline = Some(now + self.deadlines.undo_retry_ms);
                    }
                    _ => self.fail(
                        now,
                        ReasonCode::CLIENT_UNREACHABLE,
                        "the device could not be reached",
                        true,
                    ),
                }
                return;
            }
        };
        let failed = outcomes.iter().find(|o| !o.status.is_success());
        match self.wait.clone() {
            Wait::CleanupSnapshot => match listed_tree(&outcomes).inspect(|_| {
                self.cleanup_unsure = false;
            }) {
                Some(tree) => match plan::full_cleanup(&tree, &self.me) {
                    Ok(mut cmds) => {
                        // The spent bootstrap entry goes first, while this server still
                        // holds its rights.
                        if let Some(entry) = self.bootstrap_entry_uri()
                            && tree.exists(&entry)
                        {
                            cmds.insert(0, DeviceCommand::Delete { target: entry });
                        }
                        self.device(cmds, Wait::Cleanup, now)
                    }
                    Err(e) => {
                        let text = format!("step 8 cannot be planned: {e}; retrying");
                        self.record(now, Step::DeleteAccount, &text);
                        self.wait = Wait::Cleanup;
                        self.deadline = Some(now + self.deadlines.undo_retry_ms);
                    }
                },
                None => {
                    self.record(
                        now,
                        Step::DeleteAccount,
                        "the device did not list its tree; retrying",
                    );
                    self.wait = Wait::Cleanup;
                    self.deadline = Some(now + self.deadlines.undo_retry_ms);
                }
            },
            Wait::Snapshot => {
                let tree = listed_tree(&outcomes);
                let Some(tree) = tree else {
                    self.fail(
                        now,
                        ReasonCode::CLIENT_REJECTED,
                        "the device did not list its tree",
                        true,
                    );
                    return;
                };
                self.record(
                    now,
                    Step::ClientPreparation,
                    "read the device's tree and ACLs",
                );
                match self.make_plan(&tree) {
                    Ok(plan) => {
                        // The undo is journalled before any change is sent.
                        self.undo = store_all(&plan.undo);
                        self.changes = store_all(&plan.changes);
                        // One Atomic: the device takes every change or none.
                        self.device(
                            vec![DeviceCommand::Atomic(plan.changes)],
                            Wait::Changes,
                            now,
                        );
                    }
                    Err(e) => {
                        let code = match e {
                            PlanError::BadAccount(_) => ReasonCode::BAD_MESSAGE,
                            _ => ReasonCode::PATH_NOT_DELEGABLE,
                        };
                        self.fail(now, code, &e.to_string(), true);
                    }
                }
            }
            Wait::Verify => match listed_tree(&outcomes) {
                Some(tree) if self.changes_present(&tree) => {
                    self.record(
                        now,
                        Step::ClientPreparation,
                        "the device had taken the changes",
                    );
                    self.changes_applied(now);
                }
                Some(_) => {
                    self.record(
                        now,
                        Step::ClientPreparation,
                        "the device had not taken the changes; sending them again",
                    );
                    let changes = load_all(&self.changes);
                    self.device(vec![DeviceCommand::Atomic(changes)], Wait::Changes, now);
                }
                None => self.fail(
                    now,
                    ReasonCode::CLIENT_REJECTED,
                    "the device did not list its tree",
                    true,
                ),
            },
            Wait::Changes => {
                if let Some(o) = failed {
                    let refused = o
                        .children
                        .iter()
                        .find(|c| !c.is_success() && **c != StatusCode::ATOMIC_ROLLBACK_OK)
                        .copied()
                        .unwrap_or(o.status);
                    let text = format!("the device refused a change with status {refused}");
                    if o.status == StatusCode::ATOMIC_FAILED {
                        // The device rolled the Atomic back itself: nothing to undo.
                        self.undo.clear();
                    }
                    self.fail(now, ReasonCode::CLIENT_REJECTED, &text, true);
                    return;
                }
                self.changes_applied(now);
            }
            Wait::Activation => {
                if let Some(o) = failed {
                    let text =
                        format!("the device refused the activation with status {}", o.status);
                    self.fail(now, ReasonCode::CLIENT_REJECTED, &text, true);
                    return;
                }
                self.record(
                    now,
                    Step::DelegatedSession,
                    "first session with the device: account active",
                );
                let sid = format!("{}", self.op);
                self.confirm(now, sid);
            }
            Wait::Cleanup => {
                if let Some(o) = failed.filter(|o| self.full || o.status != StatusCode::NOT_FOUND) {
                    // After CONFIRM the delegation stands: the clean-up is retried, not undone.
                    let text = format!(
                        "the device refused the clean-up with status {}; retrying",
                        o.status
                    );
                    self.record(now, self.step, &text);
                    self.deadline = Some(now + self.deadlines.undo_retry_ms);
                    return;
                }
                if self.full {
                    self.record(
                        now,
                        Step::DeleteAccount,
                        "this server's account and rights are gone from the device",
                    );
                } else {
                    self.record(
                        now,
                        Step::Confirm,
                        "the spent bootstrap config entry is gone from the device",
                    );
                }
                self.finish(now, State::Completed);
            }
            Wait::Undo => {
                if failed.is_some_and(|o| o.status != StatusCode::NOT_FOUND) {
                    self.retry_undo(now);
                    return;
                }
                self.record(now, self.step, "the device is back as it was");
                self.undo.clear();
                let end = self.end_state.unwrap_or(State::Failed);
                self.finish(now, end);
            }
            _ => {}
        }
    }

    /// DELEGATING: the device took the plan's changes.
    fn changes_applied(&mut self, now: UnixMs) {
        self.changes.clear();
        if self.bootstrap {
            self.record(
                now,
                Step::ClientPreparation,
                "rights granted and bootstrap config written on the device",
            );
            self.step = Step::Prepared;
            self.wait_for(Wait::Confirm, now + self.deadlines.bootstrap_ms);
        } else {
            // The peer's secrets are on the device now; we keep none.
            self.account_xml = None;
            self.record(
                now,
                Step::ClientPreparation,
                "account installed dormant and rights granted on the device",
            );
            self.record(now, Step::Prepared, "told the peer (DELEGATION_PREPARED)");
            self.send(Body::Prepared);
            self.step = Step::Prepared;
            self.wait_for(
                Wait::Confirm,
                now + self.deadlines.device_ms + self.deadlines.peer_ms,
            );
        }
    }

    fn make_plan(&self, tree: &DmTree) -> Result<Plan, PlanError> {
        let paths = self.paths();
        if self.bootstrap {
            let entry = BootConfigEntry {
                name: self.peer.replace(['/', '?'], "_"),
                server_url: self.bootstrap_url.clone().unwrap_or_default(),
                server_id: Some(self.peer.clone()),
            };
            plan::prepare_bootstrap(
                tree,
                &self.me,
                &self.peer,
                self.full,
                &paths,
                &entry,
                &BootConfigEntry::default_root(),
            )
        } else {
            let node = self
                .account()
                .ok_or_else(|| PlanError::BadAccount("no account received".into()))?;
            plan::prepare_dmacc(tree, &self.me, &self.peer, self.full, &paths, &node)
        }
    }

    /// DELEGATED: the device is ours; tell the peer.
    fn confirm(&mut self, now: UnixMs, session_id: String) {
        self.session_id = Some(session_id.clone());
        self.record(now, Step::Confirm, "told the peer (DELEGATION_CONFIRM)");
        self.send(Body::Confirm { session_id });
        self.step = Step::Confirm;
        self.account_xml = None;
        self.after_confirm_delegated(now);
    }

    fn after_confirm_delegated(&mut self, now: UnixMs) {
        match self.lease {
            Some(secs) => {
                self.lease_until = Some(now + secs as i64 * 1000);
                self.state = State::Completed;
                self.wait = Wait::Lease;
                self.deadline = self.lease_until;
                self.actions.push_back(Action::Purge);
            }
            None => self.finish(now, State::Completed),
        }
    }

    /// DELEGATING: after CONFIRM: step 8 for a Full delegation, else done (or leased).
    fn after_confirm(&mut self, now: UnixMs) {
        if let Some(secs) = self.lease {
            // A temporary delegation keeps our account (no step 8) and its undo journal.
            self.lease_until = Some(now + secs as i64 * 1000);
            self.state = State::Completed;
            self.wait = Wait::Lease;
            self.deadline = self.lease_until;
            self.record(
                now,
                Step::Confirm,
                "temporary delegation: it reverts when the lease ends",
            );
            return;
        }
        self.undo.clear();
        if self.full {
            self.step = Step::DeleteAccount;
            self.cleanup(now);
        } else if self.bootstrap {
            self.cleanup(now);
        } else {
            self.finish(now, State::Completed);
        }
    }

    /// Bootstrap approach: the spent bootstrap config entry this server wrote.
    fn bootstrap_entry_uri(&self) -> Option<NodeUri> {
        if !self.bootstrap {
            return None;
        }
        NodeUri::parse(&format!(
            "{}/{}",
            BootConfigEntry::default_root(),
            self.peer.replace(['/', '?'], "_")
        ))
        .ok()
    }

    /// Step 8 starts from a fresh copy of the device's tree.
    fn cleanup(&mut self, now: UnixMs) {
        if self.full {
            self.device(vec![tree_listing()], Wait::CleanupSnapshot, now);
        } else if let Some(entry) = self.bootstrap_entry_uri() {
            // Partial, bootstrap approach: only the spent bootstrap entry goes.
            self.device(
                vec![DeviceCommand::Delete { target: entry }],
                Wait::Cleanup,
                now,
            );
        }
    }

    fn handle_timer(&mut self, now: UnixMs) {
        let Some(due) = self.deadline else {
            return;
        };
        if due > now {
            return;
        }
        match self.wait {
            Wait::Lease => {
                self.record(now, self.step, "the lease ended");
                match self.role {
                    Role::Delegating => {
                        self.end_state = Some(State::Completed);
                        self.rollback(now);
                    }
                    Role::Delegated => self.finish(now, State::Completed),
                }
            }
            Wait::Undo => self.retry_undo_now(now),
            Wait::Cleanup | Wait::CleanupSnapshot => {
                // After CONFIRM the delegation stands: step 8 is retried, never failed.
                if !self.cleanup_taken(now) {
                    self.record(
                        now,
                        Step::DeleteAccount,
                        "the device did not answer; step 8 is retried",
                    );
                    self.cleanup(now);
                }
            }
            Wait::Decision => {
                self.send(Body::Resp {
                    ack: false,
                    reason: Some(format!("{} no decision in time", ReasonCode::TIMEOUT.0)),
                });
                self.reason = Some(reason_text(ReasonCode::TIMEOUT, "no decision in time"));
                self.finish(now, State::Failed);
            }
            Wait::Snapshot | Wait::Changes | Wait::Verify | Wait::Activation => self.fail(
                now,
                ReasonCode::CLIENT_UNREACHABLE,
                "the device did not answer in time",
                true,
            ),
            Wait::Confirm if self.bootstrap => self.fail(
                now,
                ReasonCode::TIMEOUT,
                "the delegated server did not confirm in time (step 7)",
                true,
            ),
            Wait::DeviceSession => self.fail(
                now,
                ReasonCode::BOOTSTRAP_FAILED,
                "the device did not fetch its bootstrap and call in time",
                true,
            ),
            _ => self.fail(
                now,
                ReasonCode::TIMEOUT,
                "the peer did not answer in time",
                true,
            ),
        }
    }

    /// Fails the delegation: tells the peer (unless it told us), and undoes the device changes.
    fn fail(&mut self, now: UnixMs, code: ReasonCode, text: &str, tell_peer: bool) {
        if self.state.is_terminal() && self.wait != Wait::Lease {
            return;
        }
        if self.state == State::RollingBack {
            // Already undoing: a second failure adds nothing to do.
            self.record(now, self.step, &format!("also: {code} {text}"));
            return;
        }
        self.reason = Some(reason_text(code, text));
        self.record(now, self.step, &format!("failed: {code} {text}"));
        if tell_peer && (self.seq_out > 0 || self.initiator != self.role) {
            self.send(Body::Failure {
                code,
                description: text.to_owned(),
            });
        }
        self.end_state = Some(if code == ReasonCode::CANCELLED {
            State::Aborted
        } else {
            State::Failed
        });
        self.rollback(now);
    }

    fn rollback(&mut self, now: UnixMs) {
        let mut undo = load_all(&self.undo);
        if self.role == Role::Delegating && self.bootstrap && self.wait != Wait::Lease {
            // The device may have installed the peer's account from its bootstrap already;
            // its name follows the peer's ServerID, and a 404 means it never came.
            self.undo.push(StoredCommand::Delete {
                uri: format!("./DMAcc/{}", plan::account_name(&self.peer)),
            });
            undo = load_all(&self.undo);
        }
        if undo.is_empty() {
            let end = self.end_state.unwrap_or(State::Failed);
            self.finish(now, end);
            return;
        }
        self.state = State::RollingBack;
        self.record(now, self.step, "undoing the changes on the device");
        self.device(undo, Wait::Undo, now);
    }

    fn retry_undo(&mut self, now: UnixMs) {
        self.record(
            now,
            self.step,
            "the device did not take the undo yet; it will be retried",
        );
        self.wait = Wait::Undo;
        self.deadline = Some(now + self.deadlines.undo_retry_ms);
    }

    fn retry_undo_now(&mut self, now: UnixMs) {
        let undo = load_all(&self.undo);
        self.device(undo, Wait::Undo, now);
    }

    fn finish(&mut self, now: UnixMs, state: State) {
        self.state = state;
        self.wait = Wait::Nothing;
        self.deadline = None;
        self.account_xml = None;
        self.changes.clear();
        self.record(now, self.step, &format!("{state:?}"));
        self.actions.push_back(Action::Purge);
    }
}

/// A Get of the whole tree with what planning needs ([`plan::LISTING`]).
fn tree_listing() -> DeviceCommand {
    DeviceCommand::Get {
        target: Target {
            uri: NodeUri::root(),
            query: Some(Query::List(crate::dm::uri::ListKind::Tnds(plan::LISTING))),
        },
    }
}

/// The tree the listing Get of `outcomes` returned, read as [`plan::listed_tree`] reads it.
fn listed_tree(outcomes: &[CommandOutcome]) -> Option<DmTree> {
    let item = outcomes
        .first()
        .filter(|o| o.status == StatusCode::OK)?
        .results
        .first()?;
    plan::listed_tree(&item.data)
}

fn parse_reason(text: &str) -> (ReasonCode, String) {
    let mut parts = text.splitn(2, ' ');
    match parts.next().and_then(|c| c.parse::<u16>().ok()) {
        Some(code) => (
            ReasonCode(code),
            parts.next().unwrap_or_default().to_owned(),
        ),
        None => (ReasonCode::CANCELLED, text.to_owned()),
    }
}

fn account_doc_xml(node: &crate::dm::tnds::TndsNode) -> String {
    TndsDocument {
        nodes: vec![node.clone()],
        ..TndsDocument::default()
    }
    .to_xml()
}

fn account_node(xml: &str) -> Option<crate::dm::tnds::TndsNode> {
    TndsDocument::from_xml(xml.as_bytes())
        .ok()?
        .nodes
        .into_iter()
        .next()
}

fn dmacc_server_id(node: &crate::dm::tnds::TndsNode) -> Option<String> {
    node.children
        .iter()
        .find(|c| c.name == "ServerID")
        .and_then(|c| c.value.clone())
}
