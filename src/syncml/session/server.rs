//! The server side of a DM session, sans-IO: one [`ServerSession`] per device session.
//!
//! The caller hands in each HTTP request body (with its `x-syncml-hmac` header, if any) and 16
//! fresh random bytes, and sends back the reply it gets. The session authenticates the device
//! (407 challenge when credentials are missing, 401 when wrong, 212 when right, 200 per
//! message for HMAC), proves the server to the device with the server's own credentials,
//! sends the queued commands in packages that fit the device's MaxMsgSize, and reports each
//! command's status and results through [`ServerSession::poll_event`].

use std::collections::{HashMap, VecDeque};

use base64::Engine as _;

use super::creds::{Credentials, Verdict, chal_nonce};
use super::packer::{self, Chunked, Outgoing, Reassembler};
use super::{CommandOutcome, DeviceCommand, Encoding, SessionError, VER_DTD, VER_PROTO};
use crate::dm::ops::ResultItem;
use crate::dm::props::Format;
use crate::dm::tree_tnds::TNDS_XML_MIME;
use crate::syncml::StatusCode;
use crate::syncml::auth::{AuthScheme, Nonce};
use crate::syncml::message::{
    Alert, Chal, Command, Container, Data, Exec, Item, ItemCmd, LocRef, Meta, Status, SyncBody,
    SyncHdr, SyncMl, SyncMlVersion, alert,
};

/// What the server knows about one device's credentials.
#[derive(Debug, Clone)]
pub struct DeviceAuth {
    /// `./DevInfo/DevId`, the Source LocURI of the device's messages.
    pub dev_id: String,
    /// What the device must present (its CLCRED).
    pub client: Credentials,
    /// The nonce the server issued for the device's next credentials.
    pub client_nonce: Nonce,
    /// What the server presents (the device's SRVCRED).
    pub server: Credentials,
    /// The nonce the device issued for the server's next credentials.
    pub server_nonce: Nonce,
}

/// Settings of the server end.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's URI: the Source LocURI of its messages.
    pub server_uri: String,
    /// Where the device sends its next message (RespURI), usually with a session token.
    pub resp_uri: Option<String>,
    /// The largest message the server accepts (advertised as MaxMsgSize).
    pub max_msg_size: u64,
    /// The largest object the server accepts (advertised as MaxObjSize).
    pub max_obj_size: u64,
}

/// What happened in a session, for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent<T> {
    /// The device authenticated.
    Authenticated,
    /// The device failed authentication with this status (401 or 407) and the session ended.
    AuthFailed(StatusCode),
    /// The device reported its DevInfo leaves in Package 1: (URI, value).
    DevInfo(Vec<(String, String)>),
    /// The server issued a nonce the device uses next: persist it as the device's client nonce.
    ClientNonce(Nonce),
    /// The device issued a nonce the server uses next: persist it as the server nonce.
    ServerNonce(Nonce),
    /// The device refused the server's credentials (the session ends unless a retry works).
    ServerRejected(StatusCode),
    /// A queued command is done.
    CommandDone {
        /// The caller's tag.
        tag: T,
        /// Its outcome.
        outcome: CommandOutcome,
    },
    /// A queued command was sent but the session ended before it was answered.
    CommandLost {
        /// The caller's tag.
        tag: T,
    },
    /// The device's MaxMsgSize leaves no room for the next command, nor for its smallest
    /// chunk, even in a message that carries nothing else: the session ends (then
    /// `CommandLost` and `Ended { aborted: true }`).
    NoRoom {
        /// The device's MaxMsgSize, in bytes.
        max_msg_size: u64,
    },
    /// A Generic Alert (1226) from the device: (type, data).
    GenericAlert(Vec<(String, String)>),
    /// The session ended; `aborted` when the device sent Alert 1223 or broke the protocol.
    Ended {
        /// True when it ended abnormally.
        aborted: bool,
    },
}

/// The reply to send back in the HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The SyncML message.
    pub body: Vec<u8>,
    /// The `x-syncml-hmac` header value, for HMAC.
    pub hmac: Option<String>,
    /// True when the session is over after this reply.
    pub end: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitPkg1,
    Running,
    Done,
}

#[derive(Debug, Clone)]
struct Inflight<T> {
    tag: T,
    name: &'static str,
    status: Option<StatusCode>,
    results: Vec<ResultItem>,
    children: Vec<u32>,
}

/// One device session on the server.
#[derive(Debug)]
pub struct ServerSession<T> {
    cfg: ServerConfig,
    auth: DeviceAuth,
    phase: Phase,
    session_id: Option<String>,
    last_client_msg: u32,
    msg_id: u32,
    next_cmd_id: u32,
    client_ok: bool,
    client_failures: u8,
    server_ok: bool,
    server_retries: u8,
    queue: VecDeque<(T, DeviceCommand)>,
    /// Commands of the package being sent, with CmdIDs, not yet placed in a message.
    outgoing: VecDeque<Outgoing<u32>>,
    /// Sent commands by CmdID (children of containers map to their parent's entry).
    inflight: HashMap<u32, Inflight<T>>,
    child_of: HashMap<u32, u32>,
    /// CmdIDs of later chunks of a large object, mapped to the command's first CmdID.
    alias: HashMap<u32, u32>,
    /// The commands of the last message as they went (a chunk, not its whole object), for a
    /// resend after the device refuses our Cred.
    last_sent: Vec<Outgoing<u32>>,
    device_max_msg: usize,
    /// The last message had no room for the next command, nor for its smallest chunk.
    stalled: bool,
    reassembler: Reassembler,
    events: VecDeque<ServerEvent<T>>,
    /// A reply already complete (authentication failure, abort, next-message request).
    ready: Option<Reply>,
    /// The message taken in and the statuses answering it, for the reply still to build.
    deferred: Option<(SyncMl, Vec<Status>)>,
    /// The device's encoding, which the replies use too.
    encoding: Encoding,
}

fn text_item_data(format: Format, value: &[u8]) -> Data {
    match format {
        Format::B64 | Format::Bin => {
            Data::Text(base64::engine::general_purpose::STANDARD.encode(value))
        }
        _ => Data::Text(String::from_utf8_lossy(value).into_owned()),
    }
}

fn wire_format(format: Format) -> Format {
    // Binary travels base64-encoded in XML.
    if format == Format::Bin {
        Format::B64
    } else {
        format
    }
}

impl<T: Clone> ServerSession<T> {
    /// A session for the device `auth.dev_id`.
    pub fn new(cfg: ServerConfig, auth: DeviceAuth) -> ServerSession<T> {
        ServerSession {
            cfg,
            auth,
            phase: Phase::AwaitPkg1,
            session_id: None,
            last_client_msg: 0,
            msg_id: 0,
            next_cmd_id: 1,
            client_ok: false,
            client_failures: 0,
            server_ok: false,
            server_retries: 0,
            queue: VecDeque::new(),
            outgoing: VecDeque::new(),
            inflight: HashMap::new(),
            child_of: HashMap::new(),
            alias: HashMap::new(),
            last_sent: Vec::new(),
            device_max_msg: 0,
            stalled: false,
            reassembler: Reassembler::new(0),
            events: VecDeque::new(),
            ready: None,
            deferred: None,
            encoding: Encoding::Xml,
        }
    }

    /// Sets the encoding the device uses (the first message's Content-Type); replies follow it.
    pub fn set_encoding(&mut self, encoding: Encoding) {
        self.encoding = encoding;
    }

    /// The encoding of this session's messages.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Queues a command; it goes out in the next package.
    pub fn enqueue(&mut self, tag: T, cmd: DeviceCommand) {
        self.queue.push_back((tag, cmd));
    }

    /// The session ID the device chose, once known.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Whether commands wait to be sent in a later package.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    /// True once the session is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The device's credentials record, with the nonces as they now stand.
    pub fn auth(&self) -> &DeviceAuth {
        &self.auth
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent<T>> {
        self.events.pop_front()
    }

    /// Ends the session from the server side (timeout, shutdown): every command not answered
    /// is reported lost, and queued ones are handed back.
    pub fn abandon(&mut self) -> Vec<(T, DeviceCommand)> {
        self.finish(true);
        std::mem::take(&mut self.queue).into_iter().collect()
    }

    fn finish(&mut self, aborted: bool) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        let mut ids: Vec<u32> = self.inflight.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(f) = self.inflight.remove(&id) {
                self.events
                    .push_back(ServerEvent::CommandLost { tag: f.tag });
            }
        }
        self.outgoing.clear();
        self.events.push_back(ServerEvent::Ended { aborted });
    }

    /// Handles one message from the device and returns the reply (`receive`, then
    /// `poll_reply`, for callers that need not react to the events in between).
    pub fn handle_request(
        &mut self,
        body: &[u8],
        hmac: Option<&str>,
        fresh: [u8; 16],
    ) -> Result<Reply, SessionError> {
        self.receive(body, hmac, fresh)?;
        self.poll_reply().ok_or(SessionError::Ended)
    }

    /// Takes in one message from the device. Its events (statuses, results, nonces) are then
    /// ready in [`ServerSession::poll_event`]; commands queued after them still go into the
    /// reply, which [`ServerSession::poll_reply`] builds.
    pub fn receive(
        &mut self,
        body: &[u8],
        hmac: Option<&str>,
        fresh: [u8; 16],
    ) -> Result<(), SessionError> {
        if self.phase == Phase::Done {
            return Err(SessionError::Ended);
        }
        let msg = self.encoding.decode(body)?;
        self.receive_decoded(msg, body, hmac, fresh)
    }

    /// As [`ServerSession::receive`], for a message the caller already decoded from `body`
    /// in this session's [`ServerSession::encoding`] (to route it, say); `body` is still
    /// needed for HMAC authentication.
    pub fn receive_decoded(
        &mut self,
        msg: SyncMl,
        body: &[u8],
        hmac: Option<&str>,
        fresh: [u8; 16],
    ) -> Result<(), SessionError> {
        if self.phase == Phase::Done {
            return Err(SessionError::Ended);
        }
        if msg.hdr.source.loc_uri != self.auth.dev_id {
            return Err(SessionError::OutOfSequence(format!(
                "message from `{}` in a session of `{}`",
                msg.hdr.source.loc_uri, self.auth.dev_id
            )));
        }
        match &self.session_id {
            Some(id) if *id != msg.hdr.session_id => {
                return Err(SessionError::OutOfSequence(format!(
                    "SessionID `{}` in session `{id}`",
                    msg.hdr.session_id
                )));
            }
            Some(_) if msg.hdr.msg_id <= self.last_client_msg => {
                return Err(SessionError::OutOfSequence(format!(
                    "MsgID {} repeats or goes back (last {})",
                    msg.hdr.msg_id, self.last_client_msg
                )));
            }
            _ => {}
        }
        self.session_id = Some(msg.hdr.session_id.clone());
        self.last_client_msg = msg.hdr.msg_id;
        if let Some(m) = msg.hdr.meta.as_ref().and_then(|m| m.max_msg_size) {
            self.device_max_msg = usize::try_from(m).unwrap_or(usize::MAX);
        }

        let mut statuses: Vec<Status> = Vec::new();
        // Authenticate the device: every message under HMAC, the first one otherwise.
        let hmac_mode = self.auth.client.scheme == AuthScheme::Hmac;
        let hdr_status;
        let mut hdr_chal: Option<Chal> = None;
        if !self.client_ok || hmac_mode {
            match self
                .auth
                .client
                .verify(&self.auth.client_nonce, &msg.hdr, hmac, body)
            {
                Verdict::Accepted => {
                    if !self.client_ok {
                        self.events.push_back(ServerEvent::Authenticated);
                    }
                    self.client_ok = true;
                    hdr_status = if hmac_mode {
                        StatusCode::OK
                    } else {
                        StatusCode::AUTH_ACCEPTED
                    };
                    // The next nonce: for the next message under HMAC, else the next session.
                    let (chal, nonce) = self.auth.client.challenge(fresh);
                    hdr_chal = Some(chal);
                    self.auth.client_nonce = nonce.clone();
                    self.events.push_back(ServerEvent::ClientNonce(nonce));
                }
                verdict => {
                    let code = if verdict == Verdict::Missing && self.client_failures == 0 {
                        StatusCode::MISSING_CREDENTIALS
                    } else {
                        StatusCode::UNAUTHORIZED
                    };
                    self.client_failures += 1;
                    let (chal, nonce) = self.auth.client.challenge(fresh);
                    self.auth.client_nonce = nonce.clone();
                    self.events.push_back(ServerEvent::ClientNonce(nonce));
                    let mut st = Status::new(0, msg.hdr.msg_id, 0, "SyncHdr", code);
                    st.chal = Some(chal);
                    st.target_refs.push(msg.hdr.target.loc_uri.clone());
                    st.source_refs.push(msg.hdr.source.loc_uri.clone());
                    let give_up = self.client_failures >= 3;
                    if give_up {
                        self.events.push_back(ServerEvent::AuthFailed(code));
                        self.finish(true);
                    }
                    // A message reporting an authentication failure holds only Status.
                    self.ready = Some(self.reply(&msg, vec![st], Vec::new(), true));
                    return Ok(());
                }
            }
        } else {
            hdr_status = StatusCode::OK;
        }
        let mut st = Status::new(0, msg.hdr.msg_id, 0, "SyncHdr", hdr_status);
        st.chal = hdr_chal;
        st.target_refs.push(msg.hdr.target.loc_uri.clone());
        st.source_refs.push(msg.hdr.source.loc_uri.clone());
        statuses.push(st);

        let mut next_requested = false;
        let mut aborted = false;
        let mut resend = false;
        for cmd in &msg.body.commands {
            match cmd {
                Command::Status(s) => {
                    if s.cmd_ref == 0 {
                        resend |= self.handle_hdr_status(s);
                    } else {
                        self.handle_status(s);
                    }
                }
                Command::Results(r) => {
                    let (_, chunk) = self.reassembler.feed(cmd.clone());
                    match chunk {
                        Chunked::Buffered => statuses.push(Status::new(
                            0,
                            msg.hdr.msg_id,
                            r.cmd_id,
                            "Results",
                            StatusCode::CHUNK_ACCEPTED,
                        )),
                        Chunked::SizeMismatch => statuses.push(Status::new(
                            0,
                            msg.hdr.msg_id,
                            r.cmd_id,
                            "Results",
                            StatusCode::SIZE_MISMATCH,
                        )),
                        Chunked::Whole(Command::Results(r))
                        | Chunked::Complete(Command::Results(r)) => self.handle_results(&r),
                        Chunked::Whole(_) | Chunked::Complete(_) => {}
                    }
                }
                Command::Alert(a) => {
                    let code = a.code();
                    match code {
                        Some(alert::NEXT_MESSAGE) => next_requested = true,
                        Some(alert::SESSION_ABORT) => aborted = true,
                        Some(alert::GENERIC_ALERT) => {
                            let items = a
                                .items
                                .iter()
                                .map(|i| {
                                    (
                                        i.meta
                                            .as_ref()
                                            .and_then(|m| m.ty.clone())
                                            .unwrap_or_default(),
                                        i.data_text().unwrap_or_default().to_owned(),
                                    )
                                })
                                .collect();
                            self.events.push_back(ServerEvent::GenericAlert(items));
                        }
                        _ => {}
                    }
                    if !aborted {
                        statuses.push(Status::new(
                            0,
                            msg.hdr.msg_id,
                            a.cmd_id,
                            "Alert",
                            StatusCode::OK,
                        ));
                    }
                }
                Command::Replace(r) if self.phase == Phase::AwaitPkg1 => {
                    let leaves = r
                        .items
                        .iter()
                        .filter_map(|i| {
                            Some((i.source_uri()?.to_owned(), i.data_text()?.trim().to_owned()))
                        })
                        .collect();
                    self.events.push_back(ServerEvent::DevInfo(leaves));
                    statuses.push(Status::new(
                        0,
                        msg.hdr.msg_id,
                        r.cmd_id,
                        "Replace",
                        StatusCode::OK,
                    ));
                }
                other => {
                    // A client sends only Alert, Replace (DevInfo), Status and Results.
                    statuses.push(Status::new(
                        0,
                        msg.hdr.msg_id,
                        other.cmd_id(),
                        other.name(),
                        StatusCode::COMMAND_NOT_ALLOWED,
                    ));
                }
            }
        }
        if self.phase == Phase::AwaitPkg1 {
            self.phase = Phase::Running;
        }
        if aborted {
            self.finish(true);
            self.ready = Some(self.reply(&msg, statuses, Vec::new(), true));
            return Ok(());
        }
        if self.phase == Phase::Done {
            self.ready = Some(self.reply(&msg, statuses, Vec::new(), true));
            return Ok(());
        }
        if resend {
            // The device refused our credentials and told us its nonce: send the last
            // message's commands again, once, with fresh credentials.
            for out in std::mem::take(&mut self.last_sent).into_iter().rev() {
                self.outgoing.push_front(out);
            }
        }
        let client_package_done = msg.body.is_final;
        if !client_package_done && !next_requested {
            // The device's package continues: ask for the rest.
            let request_more = Command::Alert(Alert {
                cmd_id: 0,
                data: Some(alert::NEXT_MESSAGE.to_string()),
                ..Alert::default()
            });
            self.ready = Some(self.reply(&msg, statuses, vec![request_more], false));
            return Ok(());
        }
        self.collect_finished();
        self.deferred = Some((msg, statuses));
        Ok(())
    }

    /// The reply to the last message taken in, once.
    #[must_use]
    pub fn poll_reply(&mut self) -> Option<Reply> {
        if let Some(r) = self.ready.take() {
            return Some(r);
        }
        let (msg, statuses) = self.deferred.take()?;
        if self.outgoing.is_empty() && self.inflight.is_empty() {
            self.start_package();
        }
        if self.outgoing.is_empty() && self.inflight.is_empty() && !self.reassembler.is_pending() {
            // Nothing left to ask: close the session with a message that has only Status.
            let reply = self.reply(&msg, statuses, Vec::new(), true);
            self.finish(false);
            return Some(Reply { end: true, ..reply });
        }
        Some(self.reply_with_package(&msg, statuses))
    }

    /// Turns the queue into the next package: CmdIDs assigned, containers flattened for
    /// status bookkeeping.
    fn start_package(&mut self) {
        while let Some((tag, cmd)) = self.queue.pop_front() {
            let command = self.build_command(&cmd);
            let id = command.cmd_id();
            let mut children = Vec::new();
            if let Command::Atomic(c) | Command::Sequence(c) = &command {
                for child in &c.commands {
                    children.push(child.cmd_id());
                    self.child_of.insert(child.cmd_id(), id);
                }
            }
            self.inflight.insert(
                id,
                Inflight {
                    tag,
                    name: cmd.name(),
                    status: None,
                    results: Vec::new(),
                    children,
                },
            );
            self.outgoing.push_back(Outgoing {
                command,
                tag: id,
                continuation: false,
            });
        }
    }

    fn alloc_cmd_id(&mut self) -> u32 {
        let id = self.next_cmd_id;
        self.next_cmd_id += 1;
        id
    }

    fn build_command(&mut self, cmd: &DeviceCommand) -> Command {
        let cmd_id = self.alloc_cmd_id();
        let item_cmd = |items: Vec<Item>, meta: Option<Meta>| ItemCmd {
            cmd_id,
            no_resp: false,
            cred: None,
            meta,
            items,
        };
        match cmd {
            DeviceCommand::Add {
                target,
                format,
                ty,
                value,
            } => {
                let mut item = Item::with_target(target.to_string());
                let f = wire_format(*format);
                item.meta = Some(Meta {
                    format: Some(f.as_str().to_owned()),
                    ty: ty.clone(),
                    ..Meta::default()
                });
                if f != Format::Node {
                    item.data = Some(text_item_data(f, value));
                }
                Command::Add(item_cmd(vec![item], None))
            }
            DeviceCommand::AddTnds { target, doc } | DeviceCommand::ReplaceTnds { target, doc } => {
                let mut item = Item::with_target(target.to_string());
                item.data = Some(Data::Xml(doc.to_xml()));
                let meta = Some(Meta::format_type("xml", TNDS_XML_MIME));
                if matches!(cmd, DeviceCommand::AddTnds { .. }) {
                    Command::Add(item_cmd(vec![item], meta))
                } else {
                    Command::Replace(item_cmd(vec![item], meta))
                }
            }
            DeviceCommand::Replace {
                target,
                format,
                ty,
                value,
            } => {
                let mut item = Item::with_target(target.to_string());
                let f = wire_format(*format);
                item.meta = Some(Meta {
                    format: Some(f.as_str().to_owned()),
                    ty: ty.clone(),
                    ..Meta::default()
                });
                item.data = Some(text_item_data(f, value));
                Command::Replace(item_cmd(vec![item], None))
            }
            DeviceCommand::Delete { target } => {
                Command::Delete(item_cmd(vec![Item::with_target(target.to_string())], None))
            }
            DeviceCommand::Get { target } => {
                Command::Get(item_cmd(vec![Item::with_target(target.to_string())], None))
            }
            DeviceCommand::Exec {
                target,
                data,
                correlator,
            } => {
                let mut item = Item::with_target(target.to_string());
                item.data = data.clone().map(Data::Text);
                Command::Exec(Exec {
                    cmd_id,
                    no_resp: false,
                    cred: None,
                    meta: None,
                    correlator: correlator.clone(),
                    item,
                })
            }
            DeviceCommand::Copy { source, target } => {
                let mut item = Item::with_target(target.to_string());
                item.source = Some(LocRef::new(source.to_string()));
                Command::Copy(item_cmd(vec![item], None))
            }
            DeviceCommand::Atomic(children) | DeviceCommand::Sequence(children) => {
                let commands = children.iter().map(|c| self.build_command(c)).collect();
                let c = Container {
                    cmd_id,
                    no_resp: false,
                    meta: None,
                    commands,
                };
                if matches!(cmd, DeviceCommand::Atomic(_)) {
                    Command::Atomic(c)
                } else {
                    Command::Sequence(c)
                }
            }
        }
    }

    /// The device's verdict on our credentials. Returns true when the last message must be
    /// sent again with fresh credentials.
    fn handle_hdr_status(&mut self, s: &Status) -> bool {
        if let Some(nonce) = chal_nonce(s.chal.as_ref()) {
            self.auth.server_nonce = nonce.clone();
            self.events.push_back(ServerEvent::ServerNonce(nonce));
        }
        if s.data.is_success() {
            self.server_ok = true;
            return false;
        }
        self.events.push_back(ServerEvent::ServerRejected(s.data));
        self.server_ok = false;
        if self.server_retries == 0 && s.chal.is_some() {
            self.server_retries += 1;
            // The commands sent were not executed: forget their (absent) statuses.
            for out in &self.last_sent {
                if let Some(f) = self.inflight.get_mut(&out.tag) {
                    f.status = None;
                }
            }
            return true;
        }
        self.finish(true);
        false
    }

    fn handle_status(&mut self, s: &Status) {
        let id = self.alias.remove(&s.cmd_ref).unwrap_or(s.cmd_ref);
        if s.data == StatusCode::CHUNK_ACCEPTED {
            return;
        }
        if let Some(parent) = self.child_of.get(&id).copied() {
            if let Some(f) = self.inflight.get_mut(&parent) {
                // Children statuses are kept in the parent's order.
                if let Some(pos) = f.children.iter().position(|c| *c == id) {
                    f.results.push(ResultItem {
                        source: format!("#child{pos}"),
                        format: Format::Null,
                        ty: String::new(),
                        data: s.data.0.to_string().into_bytes(),
                    });
                }
            }
            return;
        }
        if let Some(f) = self.inflight.get_mut(&id) {
            f.status = Some(s.data);
        }
    }

    fn handle_results(&mut self, r: &crate::syncml::message::Results) {
        let Some(f) = self.inflight.get_mut(&r.cmd_ref) else {
            return;
        };
        for item in &r.items {
            // Item Meta overrides the command's field by field (a chunk's holds only Size).
            let pick = |f: fn(&Meta) -> Option<&String>| {
                item.meta
                    .as_ref()
                    .and_then(f)
                    .or_else(|| r.meta.as_ref().and_then(f))
                    .cloned()
            };
            let format = pick(|m| m.format.as_ref())
                .and_then(|f| f.parse().ok())
                .unwrap_or(Format::Chr);
            let ty = pick(|m| m.ty.as_ref()).unwrap_or_default();
            let text = item.data_text().unwrap_or_default();
            let data = if format == Format::B64 {
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .unwrap_or_else(|_| text.as_bytes().to_vec())
            } else {
                text.as_bytes().to_vec()
            };
            f.results.push(ResultItem {
                source: item
                    .source_uri()
                    .or(r.source_ref.as_deref())
                    .unwrap_or_default()
                    .to_owned(),
                format,
                ty,
                data,
            });
        }
    }

    /// Reports every command that has its status (and, for a Get, its results).
    fn collect_finished(&mut self) {
        let mut done: Vec<u32> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.status.is_some())
            .map(|(id, _)| *id)
            .collect();
        done.sort_unstable();
        for id in done {
            let Some(f) = self.inflight.remove(&id) else {
                continue;
            };
            for c in &f.children {
                self.child_of.remove(c);
            }
            let (children, results): (Vec<ResultItem>, Vec<ResultItem>) = f
                .results
                .into_iter()
                .partition(|r| r.source.starts_with("#child"));
            let mut children: Vec<(usize, StatusCode)> = children
                .into_iter()
                .filter_map(|r| {
                    let pos = r.source.trim_start_matches("#child").parse().ok()?;
                    let code = std::str::from_utf8(&r.data).ok()?.parse().ok()?;
                    Some((pos, StatusCode(code)))
                })
                .collect();
            children.sort_unstable();
            let _ = f.name;
            self.events.push_back(ServerEvent::CommandDone {
                tag: f.tag,
                outcome: CommandOutcome {
                    status: f.status.unwrap_or(StatusCode::COMMAND_FAILED),
                    results,
                    children: children.into_iter().map(|(_, c)| c).collect(),
                },
            });
        }
    }

    fn header(&mut self, msg: &SyncMl) -> SyncHdr {
        self.msg_id += 1;
        SyncHdr {
            version: SyncMlVersion::V1_2,
            ver_dtd: VER_DTD.to_owned(),
            ver_proto: VER_PROTO.to_owned(),
            session_id: msg.hdr.session_id.clone(),
            msg_id: self.msg_id,
            target: LocRef::new(self.auth.dev_id.clone()),
            source: LocRef {
                loc_uri: self.cfg.server_uri.clone(),
                loc_name: Some(self.auth.server.name.clone()),
            },
            resp_uri: self.cfg.resp_uri.clone(),
            no_resp: false,
            cred: self.auth.server.cred(&self.auth.server_nonce),
            meta: Some(Meta {
                max_msg_size: Some(self.cfg.max_msg_size),
                max_obj_size: Some(self.cfg.max_obj_size),
                ..Meta::default()
            }),
        }
    }

    fn numbered(&mut self, statuses: Vec<Status>, extra: Vec<Command>) -> Vec<Command> {
        let mut out = Vec::with_capacity(statuses.len() + extra.len());
        for mut s in statuses {
            s.cmd_id = self.alloc_cmd_id();
            out.push(Command::Status(s));
        }
        for mut c in extra {
            if let Command::Alert(a) = &mut c {
                a.cmd_id = self.alloc_cmd_id();
            }
            out.push(c);
        }
        out
    }

    fn reply(
        &mut self,
        msg: &SyncMl,
        statuses: Vec<Status>,
        extra: Vec<Command>,
        is_final: bool,
    ) -> Reply {
        let hdr = self.header(msg);
        let commands = self.numbered(statuses, extra);
        let out = SyncMl {
            hdr,
            body: SyncBody { commands, is_final },
        };
        self.seal(out, self.phase == Phase::Done)
    }

    fn reply_with_package(&mut self, msg: &SyncMl, statuses: Vec<Status>) -> Reply {
        let hdr = self.header(msg);
        let commands = self.numbered(statuses, Vec::new());
        let mut out = SyncMl {
            hdr,
            body: SyncBody {
                commands,
                is_final: false,
            },
        };
        let statuses = out.body.commands.len();
        let placed = packer::fill(
            &mut out,
            &mut self.outgoing,
            packer::room(self.device_max_msg, packer::final_len()),
            &mut self.next_cmd_id,
        );
        let stalled = placed.is_empty() && !self.outgoing.is_empty();
        if stalled && std::mem::replace(&mut self.stalled, true) {
            // The message before had no room either; this one answers only a request for
            // more, so it is as small as a message gets and no later one has more room.
            self.events.push_back(ServerEvent::NoRoom {
                max_msg_size: self.device_max_msg as u64,
            });
            self.finish(true);
            out.body.is_final = true;
            return self.seal(out, true);
        }
        self.stalled = stalled;
        // Keep what this message carried, as it went (a large object's chunk, not the whole
        // object), for a resend if the device refuses our Cred. A chunk goes back as a
        // continuation: split again, it keeps the total Size it declares.
        self.last_sent = out.body.commands[statuses..]
            .iter()
            .zip(&placed)
            .map(|(command, (cmd_id, tag))| Outgoing {
                command: command.clone(),
                tag: *tag,
                continuation: *cmd_id != *tag || packer::is_chunk(Some(command)),
            })
            .collect();
        // Later chunks of a large object carry new CmdIDs; their statuses answer the command.
        for (cmd_id, tag) in placed {
            if cmd_id != tag {
                self.alias.insert(cmd_id, tag);
            }
        }
        out.body.is_final = self.outgoing.is_empty();
        self.seal(out, false)
    }

    fn seal(&self, msg: SyncMl, end: bool) -> Reply {
        let body = self.encoding.encode(&msg);
        let hmac = self.auth.server.hmac_header(&self.auth.server_nonce, &body);
        Reply { body, hmac, end }
    }
}
