//! The client side of a DM session, sans-IO: what a device does. It opens the session with
//! Package 1 (Alert 1200 or 1201 and its DevInfo), proves itself with its CLCRED credentials,
//! checks the server's credentials against its SRVCRED before acting on anything, executes the
//! server's commands on its own DM tree (ACLs enforced by [`crate::dm`]), and answers with
//! Status and Results, over several messages when the server's MaxMsgSize asks for it.

use std::collections::VecDeque;

use base64::Engine as _;

use super::creds::{Credentials, Verdict, chal_nonce};
use super::packer::{self, Chunked, Outgoing, Reassembler};
use super::{SessionError, VER_DTD, VER_PROTO};
use crate::dm::mo::dmacc::DMACC_ROOT;
use crate::dm::mo::{DevInfo, DmAcc};
use crate::dm::ops::{NodeData, OpError, ResultItem, status_of};
use crate::dm::props::Format;
use crate::dm::tnds::TndsDocument;
use crate::dm::tree::{DmTree, Principal};
use crate::dm::tree_tnds::{TNDS_XML_MIME, TndsMode};
use crate::dm::uri::{NodeUri, Target, UriLimits};
use crate::syncml::StatusCode;
use crate::syncml::auth::Nonce;
use crate::syncml::message::{
    Alert, Command, Data, Item, ItemCmd, LocRef, Meta, Results, Status, SyncBody, SyncHdr, SyncMl,
    SyncMlVersion, alert,
};

/// A device's settings for one server account.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `./DevInfo/DevId`.
    pub dev_id: String,
    /// The account's ServerID: the principal the server's commands run as.
    pub server_id: String,
    /// Where the session starts (the account's AppAddr).
    pub server_uri: String,
    /// What the device presents (CLCRED).
    pub client: Credentials,
    /// The nonce the server issued for the device's credentials (CLCRED AAuthData).
    pub client_nonce: Nonce,
    /// What the server must present (SRVCRED).
    pub server: Credentials,
    /// The nonce the device issued for the server (SRVCRED AAuthData).
    pub server_nonce: Nonce,
    /// The largest message the device accepts.
    pub max_msg_size: u64,
    /// The largest object the device accepts.
    pub max_obj_size: u64,
    /// Send credentials in the first message; when false the device waits for the server's
    /// challenge (407), as some clients do.
    pub cred_before_challenge: bool,
    /// Fault injection: commands on nodes under these URIs fail with 500 and change nothing.
    pub fail_paths: Vec<crate::dm::uri::NodeUri>,
    /// Whether the device understands TNDS (`?list=TNDS`, TNDS Add and Replace). Devices
    /// without it answer 406 to the listing and 415 to the data, as libdmclient does.
    pub tnds: bool,
    /// How the device encodes its messages.
    pub encoding: super::Encoding,
}

/// What happened, for the device to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server gave a nonce for the device's next credentials: store it in CLCRED.
    ClientNonce(Nonce),
    /// The device issued a nonce for the server: store it in SRVCRED.
    ServerNonce(Nonce),
    /// The server proved itself.
    ServerAuthenticated,
    /// The server's credentials were missing or wrong; nothing it sent was executed.
    ServerRejected(StatusCode),
    /// The server refused the device's credentials for good.
    ClientRejected(StatusCode),
    /// A command ran: (command name, target, status).
    Executed {
        /// Command name.
        cmd: &'static str,
        /// Target URI.
        target: String,
        /// The status answered.
        status: StatusCode,
    },
    /// The server asked the device to execute a node (after the ACL check passed).
    Exec {
        /// The node.
        target: String,
        /// Its data.
        data: Option<String>,
    },
    /// The server redirected the session (RespURI).
    Redirected(String),
    /// The session is over.
    Ended {
        /// True when it ended abnormally.
        aborted: bool,
    },
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to POST it.
    pub uri: String,
    /// The message.
    pub body: Vec<u8>,
    /// The `x-syncml-hmac` header value, for HMAC.
    pub hmac: Option<String>,
}

/// One session of a device with one server.
#[derive(Debug)]
pub struct ClientSession {
    cfg: ClientConfig,
    session_id: String,
    alert_code: u16,
    devinfo: DevInfo,
    msg_id: u32,
    next_cmd_id: u32,
    uri: String,
    /// What the device still has to send in its current package.
    outgoing: VecDeque<Outgoing<()>>,
    /// Status for the server's last SyncHdr, first in every message.
    hdr_status: Option<Status>,
    package_final: bool,
    to_send: Option<Transmit>,
    server_ok: bool,
    /// The server nonce in force before the one issued in `hdr_status`'s challenge: the new
    /// one counts only once a message carries it to the server.
    unsent_nonce_prev: Option<Nonce>,
    server_failures: u8,
    client_retries: u8,
    server_max_msg: usize,
    reassembler: Reassembler,
    done: bool,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    /// Opens a session: `session_id` is the trigger's for a server-initiated session (Alert
    /// 1200), any value otherwise (1201).
    pub fn new(
        cfg: ClientConfig,
        devinfo: DevInfo,
        session_id: u16,
        server_initiated: bool,
    ) -> ClientSession {
        let uri = cfg.server_uri.clone();
        let max_obj = usize::try_from(cfg.max_obj_size).unwrap_or(usize::MAX);
        let mut s = ClientSession {
            session_id: crate::syncml::pkg0::session_id_text(session_id),
            alert_code: if server_initiated {
                alert::SERVER_INITIATED_MGMT
            } else {
                alert::CLIENT_INITIATED_MGMT
            },
            cfg,
            devinfo,
            msg_id: 0,
            next_cmd_id: 1,
            uri,
            outgoing: VecDeque::new(),
            hdr_status: None,
            package_final: true,
            to_send: None,
            server_ok: false,
            unsent_nonce_prev: None,
            server_failures: 0,
            client_retries: 0,
            server_max_msg: 0,
            reassembler: Reassembler::new(max_obj),
            done: false,
            events: VecDeque::new(),
        };
        s.queue_package1();
        s.prepare();
        s
    }

    fn alloc(&mut self) -> u32 {
        let id = self.next_cmd_id;
        self.next_cmd_id += 1;
        id
    }

    fn queue_package1(&mut self) {
        let alert_id = self.alloc();
        let alert_cmd = Command::Alert(Alert {
            cmd_id: alert_id,
            data: Some(self.alert_code.to_string()),
            ..Alert::default()
        });
        let items = self
            .devinfo
            .leaves()
            .iter()
            .map(|(name, value)| Item {
                source: Some(LocRef::new(format!("./DevInfo/{name}"))),
                meta: Some(Meta::format_type("chr", "text/plain")),
                data: Some(Data::Text((*value).to_owned())),
                ..Item::default()
            })
            .collect();
        let replace_id = self.alloc();
        let replace = Command::Replace(ItemCmd {
            cmd_id: replace_id,
            items,
            ..ItemCmd::default()
        });
        for command in [alert_cmd, replace] {
            self.outgoing.push_back(Outgoing {
                command,
                tag: (),
                continuation: false,
            });
        }
    }

    /// The next message to send, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.to_send.take()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// True once the session is over.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The nonces as they now stand: (client nonce, server nonce).
    pub fn nonces(&self) -> (&Nonce, &Nonce) {
        (&self.cfg.client_nonce, &self.cfg.server_nonce)
    }

    /// The URI the next message goes to (the server's RespURI once it sent one).
    pub fn current_uri(&self) -> &str {
        &self.uri
    }

    fn end(&mut self, aborted: bool) {
        if !self.done {
            self.done = true;
            self.events.push_back(ClientEvent::Ended { aborted });
        }
    }

    /// Builds the next message from the status of the server's header and the pending
    /// package; nothing is sent when the message would hold only that status.
    fn prepare(&mut self) {
        if self.done {
            return;
        }
        if self.outgoing.is_empty() && self.hdr_status.is_some() && self.package_final {
            // Only the SyncHdr status is left: the session ends without another message. A
            // nonce issued in that status never reaches the server, which will sign its next
            // Package #0 and message with the one before: keep that one.
            if let Some(prev) = self.unsent_nonce_prev.take() {
                self.cfg.server_nonce = prev.clone();
                self.events.push_back(ClientEvent::ServerNonce(prev));
            }
            self.end(false);
            return;
        }
        // The message about to be built carries the status with its challenge.
        self.unsent_nonce_prev = None;
        self.msg_id += 1;
        let mut msg = SyncMl {
            hdr: SyncHdr {
                version: SyncMlVersion::V1_2,
                ver_dtd: VER_DTD.to_owned(),
                ver_proto: VER_PROTO.to_owned(),
                session_id: self.session_id.clone(),
                msg_id: self.msg_id,
                target: LocRef::new(self.cfg.server_uri.clone()),
                source: LocRef {
                    loc_uri: self.cfg.dev_id.clone(),
                    loc_name: Some(self.cfg.client.name.clone()),
                },
                resp_uri: None,
                no_resp: false,
                cred: if self.cfg.cred_before_challenge || self.client_retries > 0 {
                    self.cfg.client.cred(&self.cfg.client_nonce)
                } else {
                    None
                },
                meta: Some(Meta {
                    max_msg_size: Some(self.cfg.max_msg_size),
                    max_obj_size: Some(self.cfg.max_obj_size),
                    ..Meta::default()
                }),
            },
            body: SyncBody::default(),
        };
        if let Some(mut st) = self.hdr_status.clone() {
            st.cmd_id = self.alloc();
            msg.body.commands.push(Command::Status(st));
        }
        // Room is kept for what may follow: `<Final/>` or the Alert 1222 asking for more.
        let next_message = Command::Alert(Alert {
            cmd_id: u32::MAX,
            data: Some(alert::NEXT_MESSAGE.to_string()),
            ..Alert::default()
        });
        let trailer = packer::final_len().max(crate::syncml::xml::command_len(&next_message));
        let _ = packer::fill(
            &mut msg,
            &mut self.outgoing,
            packer::room(self.server_max_msg, trailer),
            &mut self.next_cmd_id,
        );
        let package_done = self.outgoing.is_empty();
        if !self.package_final && package_done {
            // The server's package continues: ask for its next message.
            let id = self.alloc();
            msg.body.commands.push(Command::Alert(Alert {
                cmd_id: id,
                data: Some(alert::NEXT_MESSAGE.to_string()),
                ..Alert::default()
            }));
        }
        msg.body.is_final = package_done && self.package_final;
        let body = self.cfg.encoding.encode(&msg);
        let hmac = self.cfg.client.hmac_header(&self.cfg.client_nonce, &body);
        self.to_send = Some(Transmit {
            uri: self.uri.clone(),
            body,
            hmac,
        });
    }

    /// Handles the server's reply to the last message, executing its commands on `tree`.
    /// `fresh` supplies 16 random bytes for any nonce the device issues; `now` (Unix seconds)
    /// stamps changed nodes.
    pub fn handle_response(
        &mut self,
        tree: &mut DmTree,
        body: &[u8],
        hmac: Option<&str>,
        fresh: [u8; 16],
        now: Option<i64>,
    ) -> Result<(), SessionError> {
        if self.done {
            return Err(SessionError::Ended);
        }
        let msg = match self.cfg.encoding.decode(body) {
            Ok(m) => m,
            Err(e) => {
                self.end(true);
                return Err(e);
            }
        };
        if msg.hdr.session_id != self.session_id {
            self.end(true);
            return Err(SessionError::OutOfSequence(format!(
                "the reply is for session `{}`, not `{}`",
                msg.hdr.session_id, self.session_id
            )));
        }
        if let Some(m) = msg.hdr.meta.as_ref().and_then(|m| m.max_msg_size) {
            self.server_max_msg = usize::try_from(m).unwrap_or(usize::MAX);
        }
        if let Some(r) = &msg.hdr.resp_uri
            && *r != self.uri
        {
            self.uri = r.clone();
            self.events.push_back(ClientEvent::Redirected(r.clone()));
        }

        // Check the server's credentials first: nothing it says counts until it is proven.
        let mut hdr_st = Status::new(0, msg.hdr.msg_id, 0, "SyncHdr", StatusCode::OK);
        hdr_st.target_refs.push(msg.hdr.target.loc_uri.clone());
        hdr_st.source_refs.push(msg.hdr.source.loc_uri.clone());
        let hmac_mode = self.cfg.server.scheme == crate::syncml::auth::AuthScheme::Hmac;
        if !self.server_ok || hmac_mode {
            match self
                .cfg
                .server
                .verify(&self.cfg.server_nonce, &msg.hdr, hmac, body)
            {
                Verdict::Accepted => {
                    if !self.server_ok {
                        self.events.push_back(ClientEvent::ServerAuthenticated);
                    }
                    self.server_ok = true;
                    hdr_st.data = if hmac_mode {
                        StatusCode::OK
                    } else {
                        StatusCode::AUTH_ACCEPTED
                    };
                    let (chal, nonce) = self.cfg.server.challenge(fresh);
                    hdr_st.chal = Some(chal);
                    let prev = std::mem::replace(&mut self.cfg.server_nonce, nonce.clone());
                    self.unsent_nonce_prev.get_or_insert(prev);
                    self.events.push_back(ClientEvent::ServerNonce(nonce));
                }
                verdict => {
                    self.server_failures += 1;
                    let code = if verdict == Verdict::Missing {
                        StatusCode::MISSING_CREDENTIALS
                    } else {
                        StatusCode::UNAUTHORIZED
                    };
                    self.events.push_back(ClientEvent::ServerRejected(code));
                    let (chal, nonce) = self.cfg.server.challenge(fresh);
                    hdr_st.data = code;
                    hdr_st.chal = Some(chal);
                    self.cfg.server_nonce = nonce.clone();
                    self.events.push_back(ClientEvent::ServerNonce(nonce));
                    if self.server_failures > 2 {
                        self.end(true);
                        return Ok(());
                    }
                    // Nothing the server asked is executed; the reply holds only this status.
                    self.hdr_status = Some(hdr_st);
                    self.package_final = true;
                    self.outgoing.clear();
                    self.prepare_forced();
                    return Ok(());
                }
            }
        }

        // Then the server's verdict on ours: a nonce is taken only from an authenticated
        // server.
        for cmd in &msg.body.commands {
            if let Command::Status(s) = cmd
                && s.cmd_ref == 0
            {
                if let Some(n) = chal_nonce(s.chal.as_ref()) {
                    self.cfg.client_nonce = n.clone();
                    self.events.push_back(ClientEvent::ClientNonce(n));
                }
                if !s.data.is_success() {
                    if self.client_retries < 2 && s.chal.is_some() {
                        // Resend Package 1 with credentials for the new nonce, with the status
                        // of the server's header: it carries the nonce the device just issued
                        // for the server, which the server must learn.
                        self.client_retries += 1;
                        self.outgoing.clear();
                        self.hdr_status = Some(hdr_st.clone());
                        self.package_final = true;
                        self.queue_package1();
                        self.prepare();
                        return Ok(());
                    }
                    self.events.push_back(ClientEvent::ClientRejected(s.data));
                    self.end(true);
                    return Ok(());
                }
            }
        }

        let mut replies: Vec<Command> = Vec::new();
        for cmd in msg.body.commands.iter().cloned() {
            if matches!(cmd, Command::Status(_)) {
                continue;
            }
            if let Command::Alert(a) = &cmd {
                match a.code() {
                    Some(alert::SESSION_ABORT) => {
                        self.end(true);
                        return Ok(());
                    }
                    Some(alert::NEXT_MESSAGE) => {
                        replies.push(status_for(&msg, &cmd, StatusCode::OK));
                        continue;
                    }
                    _ => {}
                }
            }
            let (interrupted, chunk) = self.reassembler.feed(cmd.clone());
            if interrupted {
                let id = self.alloc();
                replies.push(Command::Alert(Alert {
                    cmd_id: id,
                    data: Some(alert::NO_END_OF_DATA.to_string()),
                    ..Alert::default()
                }));
            }
            match chunk {
                Chunked::Buffered => {
                    replies.push(status_for(&msg, &cmd, StatusCode::CHUNK_ACCEPTED))
                }
                Chunked::SizeMismatch => {
                    replies.push(status_for(&msg, &cmd, StatusCode::SIZE_MISMATCH))
                }
                Chunked::Whole(c) | Chunked::Complete(c) => {
                    self.execute(tree, &msg, &c, now, &mut replies)
                }
            }
        }
        self.hdr_status = Some(hdr_st);
        self.package_final = msg.body.is_final;
        for command in replies {
            let command = renumber(command, &mut self.next_cmd_id);
            self.outgoing.push_back(Outgoing {
                command,
                tag: (),
                continuation: false,
            });
        }
        self.prepare();
        Ok(())
    }

    /// Like `prepare`, but always sends (a message holding only an authentication status).
    fn prepare_forced(&mut self) {
        let keep = self.package_final;
        self.package_final = false;
        self.prepare();
        self.package_final = keep;
        if let Some(t) = self.to_send.as_mut() {
            // Re-encode with Final: the failure report is a complete package.
            if let Ok(mut m) = self.cfg.encoding.decode(&t.body) {
                m.body.commands.retain(|c| !matches!(c, Command::Alert(_)));
                m.body.is_final = true;
                t.body = self.cfg.encoding.encode(&m);
                t.hmac = self.cfg.client.hmac_header(&self.cfg.client_nonce, &t.body);
            }
        }
    }

    fn execute(
        &mut self,
        tree: &mut DmTree,
        msg: &SyncMl,
        cmd: &Command,
        now: Option<i64>,
        out: &mut Vec<Command>,
    ) {
        let server_id = self.cfg.server_id.clone();
        let who = Principal::Server(&server_id);
        let limits = tree.limits().uri;
        match cmd {
            Command::Atomic(c) => {
                let mut work = tree.clone();
                let mut child_out = Vec::new();
                let mut failed = false;
                for child in &c.commands {
                    if matches!(child, Command::Get(_) | Command::Atomic(_)) {
                        child_out.push(status_for(msg, child, StatusCode::COMMAND_FAILED));
                        failed = true;
                        continue;
                    }
                    let before = child_out.len();
                    self.execute(&mut work, msg, child, now, &mut child_out);
                    if child_out[before..]
                        .iter()
                        .any(|c| matches!(c, Command::Status(s) if !s.data.is_success()))
                    {
                        failed = true;
                    }
                }
                if failed {
                    out.push(status_for(msg, cmd, StatusCode::ATOMIC_FAILED));
                    for c in child_out {
                        if let Command::Status(mut s) = c {
                            if s.data.is_success() {
                                s.data = StatusCode::ATOMIC_ROLLBACK_OK;
                            }
                            out.push(Command::Status(s));
                        }
                    }
                } else {
                    *tree = work;
                    out.push(status_for(msg, cmd, StatusCode::OK));
                    out.extend(child_out);
                }
            }
            Command::Sequence(c) => {
                out.push(status_for(msg, cmd, StatusCode::OK));
                let mut failed = false;
                for child in &c.commands {
                    if failed {
                        out.push(status_for(msg, child, StatusCode::NOT_EXECUTED));
                        continue;
                    }
                    let before = out.len();
                    self.execute(tree, msg, child, now, out);
                    failed = out[before..]
                        .iter()
                        .any(|c| matches!(c, Command::Status(s) if !s.data.is_success()));
                }
            }
            Command::Alert(a) => {
                // User-interaction alerts: display and confirm are accepted; the others need a
                // user this simulated device does not have.
                let code = match a.code() {
                    Some(1100) | Some(1101) => StatusCode::OK,
                    _ => StatusCode::OPTIONAL_FEATURE_NOT_SUPPORTED,
                };
                out.push(status_for(msg, cmd, code));
            }
            Command::Results(_) => {}
            Command::Status(_) => {}
            Command::Exec(e) => {
                let target = e.item.target_uri().unwrap_or_default().to_owned();
                let result = Target::parse_with(&target, &limits)
                    .map_err(|e| OpError::UriTooLong {
                        reason: e.to_string(),
                    })
                    .and_then(|t| tree.exec(who, &t));
                let status = status_of(&result);
                if result.is_ok() {
                    self.events.push_back(ClientEvent::Exec {
                        target: target.clone(),
                        data: e.item.data_text().map(str::to_owned),
                    });
                }
                self.executed("Exec", &target, status);
                out.push(status_for(msg, cmd, status));
            }
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Get(c)
            | Command::Copy(c) => {
                // One status per command: the first failing item decides it.
                let mut status = StatusCode::OK;
                let mut results = Vec::new();
                for item in &c.items {
                    let target = item.target_uri().unwrap_or_default().to_owned();
                    let injected = Target::parse(&target)
                        .is_ok_and(|t| self.cfg.fail_paths.iter().any(|p| p.contains(&t.uri)));
                    let r = if injected {
                        Err(OpError::CommandFailed {
                            reason: "injected fault".into(),
                        })
                    } else if !self.cfg.tnds && uses_tnds(item, c.meta.as_ref()) {
                        Err(if matches!(cmd, Command::Get(_)) {
                            OpError::NotSupported {
                                what: "TNDS listings".into(),
                            }
                        } else {
                            OpError::UnsupportedMedia {
                                what: TNDS_XML_MIME.into(),
                            }
                        })
                    } else {
                        run_item(tree, who, cmd, c.meta.as_ref(), item, &limits, now)
                    };
                    let st = match r {
                        Ok(items) => {
                            results.extend(items);
                            StatusCode::OK
                        }
                        Err(e) => e.status(),
                    };
                    self.executed(cmd.name(), &target, st);
                    if !st.is_success() && status.is_success() {
                        status = st;
                    }
                }
                out.push(status_for(msg, cmd, status));
                if matches!(cmd, Command::Get(_)) && status.is_success() {
                    let id = self.alloc();
                    out.push(Command::Results(Results {
                        cmd_id: id,
                        msg_ref: Some(msg.hdr.msg_id),
                        cmd_ref: c.cmd_id,
                        meta: None,
                        target_ref: None,
                        source_ref: None,
                        items: results.into_iter().map(result_item).collect(),
                    }));
                }
            }
        }
    }

    fn executed(&mut self, cmd: &'static str, target: &str, status: StatusCode) {
        self.events.push_back(ClientEvent::Executed {
            cmd,
            target: target.to_owned(),
            status,
        });
    }
}

/// True when an item asks for or carries TNDS.
fn uses_tnds(item: &Item, cmd_meta: Option<&Meta>) -> bool {
    let listing = item.target_uri().is_some_and(|t| t.contains("?list=TNDS"));
    let ty = item
        .meta
        .as_ref()
        .and_then(|m| m.ty.as_deref())
        .or_else(|| cmd_meta.and_then(|m| m.ty.as_deref()));
    listing || ty.is_some_and(|t| t.trim() == TNDS_XML_MIME)
}

fn renumber(mut cmd: Command, next: &mut u32) -> Command {
    let id = *next;
    *next += 1;
    match &mut cmd {
        Command::Status(s) => s.cmd_id = id,
        Command::Results(r) => r.cmd_id = id,
        Command::Alert(a) => a.cmd_id = id,
        _ => {}
    }
    cmd
}

fn status_for(msg: &SyncMl, cmd: &Command, code: StatusCode) -> Command {
    let mut st = Status::new(0, msg.hdr.msg_id, cmd.cmd_id(), cmd.name(), code);
    for item in cmd.items() {
        if let Some(t) = item.target_uri() {
            st.target_refs.push(t.to_owned());
        }
        if let Some(s) = item.source_uri() {
            st.source_refs.push(s.to_owned());
        }
    }
    Command::Status(st)
}

fn result_item(mut r: ResultItem) -> Item {
    let data = match r.format {
        Format::B64 | Format::Bin => {
            Data::Text(base64::engine::general_purpose::STANDARD.encode(&r.data))
        }
        _ => Data::Text(crate::xmltext::into_text(std::mem::take(&mut r.data))),
    };
    let format = if r.format == Format::Bin {
        Format::B64
    } else {
        r.format
    };
    Item {
        source: Some(LocRef::new(r.source)),
        meta: Some(Meta::format_type(format.as_str(), r.ty)),
        data: Some(data),
        ..Item::default()
    }
}

/// After nodes were made at `target`: the DMAcc DDF's access types apply to them, so no
/// server may Get an account's `AAuthSecret` or `AAuthData`, whoever added the account and
/// however (every account when `target` is `./DMAcc` or above it, the one account below it).
fn protect_account_secrets(tree: &mut DmTree, target: &NodeUri) {
    let Ok(root) = NodeUri::parse(DMACC_ROOT) else {
        return;
    };
    if target.contains(&root) {
        DmAcc::protect_all_secrets(tree);
    } else if let Some(rel) = target.strip_prefix(&root)
        && let Some(account) = rel.segments().first()
    {
        DmAcc::protect_secrets(tree, account);
    }
}

/// Runs one item of an Add, Replace, Delete, Get or Copy on the tree. The commands that make
/// nodes (a TNDS Add or Replace, an Add, a Copy) then protect the secrets of the accounts
/// they made nodes in ([`protect_account_secrets`]).
fn run_item(
    tree: &mut DmTree,
    who: Principal<'_>,
    cmd: &Command,
    cmd_meta: Option<&Meta>,
    item: &Item,
    limits: &UriLimits,
    now: Option<i64>,
) -> Result<Vec<ResultItem>, OpError> {
    let target_text = item.target_uri().ok_or_else(|| OpError::BadRequest {
        reason: "the item has no Target".into(),
    })?;
    let target = Target::parse_with(target_text, limits).map_err(|e| OpError::UriTooLong {
        reason: e.to_string(),
    })?;
    // Item Meta overrides the command's, field by field (a chunk's item Meta holds only Size).
    let pick = |f: fn(&Meta) -> Option<&String>| {
        item.meta
            .as_ref()
            .and_then(f)
            .or_else(|| cmd_meta.and_then(f))
            .cloned()
    };
    let format_text = pick(|m| m.format.as_ref());
    let ty = pick(|m| m.ty.as_ref());
    let format = match format_text.as_deref() {
        None => None,
        Some(f) => Some(f.parse::<Format>().map_err(|_| OpError::UnsupportedMedia {
            what: format!("Format {f}"),
        })?),
    };
    let is_tnds = ty.as_deref().is_some_and(|t| t.trim() == TNDS_XML_MIME);
    let text = item.data_text().unwrap_or_default();
    match cmd {
        Command::Add(_) | Command::Replace(_) if is_tnds => {
            let doc = TndsDocument::from_xml(text.as_bytes()).map_err(|e| OpError::BadRequest {
                reason: e.to_string(),
            })?;
            let mode = if matches!(cmd, Command::Add(_)) {
                TndsMode::Add
            } else {
                TndsMode::Replace
            };
            tree.apply_tnds(who, &target.uri, &doc, mode, now)?;
            protect_account_secrets(tree, &target.uri);
            Ok(Vec::new())
        }
        Command::Add(_) => {
            let value = if format == Some(Format::Node) {
                Vec::new()
            } else {
                DmTree::decode_data(format, text)?
            };
            let data = NodeData { format, ty, value };
            tree.add(who, &target, &data, now)?;
            protect_account_secrets(tree, &target.uri);
            Ok(Vec::new())
        }
        Command::Replace(_) => {
            let data = NodeData {
                format,
                ty,
                value: DmTree::decode_data(format, text)?,
            };
            tree.replace(who, &target, &data, now)?;
            Ok(Vec::new())
        }
        Command::Delete(_) => {
            tree.delete(who, &target)?;
            Ok(Vec::new())
        }
        Command::Get(_) => tree.get(who, &target),
        Command::Copy(_) => {
            let source_text = item.source_uri().ok_or_else(|| OpError::BadRequest {
                reason: "Copy needs a Source".into(),
            })?;
            let source =
                Target::parse_with(source_text, limits).map_err(|e| OpError::UriTooLong {
                    reason: e.to_string(),
                })?;
            tree.copy(who, &source, &target, now)?;
            protect_account_secrets(tree, &target.uri);
            Ok(Vec::new())
        }
        _ => Err(OpError::BadRequest {
            reason: format!("{} is not run item by item", cmd.name()),
        }),
    }
}
