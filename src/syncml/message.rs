//! The SyncML DM message model: plain data for one `SyncML` message (header, body, commands,
//! items), with no I/O and no serialisation framework.
//!
//! The types follow the SyncML RepPro 1.2 content models as DM uses them (OMA DM 1.2 RepPro
//! §4.1). [`crate::syncml::xml`] reads and writes them as XML; a WBXML codec can map onto the
//! same values. Values are kept as carried on the wire (URIs, session ids and meta values are
//! strings) so a decoded message re-encodes to the same content; interpretation (alert
//! semantics, node URIs, authentication) belongs to the session layer.

use super::StatusCode;

/// Media type of clear-text SyncML DM messages.
pub const MIME_XML: &str = "application/vnd.syncml.dm+xml";

/// The SyncML DS media type, which some DM 1.1 clients also send for DM traffic.
pub const MIME_XML_LEGACY: &str = "application/vnd.syncml+xml";

/// Media type of WBXML-encoded SyncML DM messages.
pub const MIME_WBXML: &str = "application/vnd.syncml.dm+wbxml";

/// Namespace of the meta-information elements (`Type`, `Format`, `MaxMsgSize`, ...).
pub const NS_METINF: &str = "syncml:metinf";

/// Namespace of SyncML 1.2 messages (the root element's default namespace).
pub const NS_SYNCML_1_2: &str = "SYNCML:SYNCML1.2";

/// Namespace of SyncML 1.1 messages (DM 1.1.2).
pub const NS_SYNCML_1_1: &str = "SYNCML:SYNCML1.1";

/// DM alert codes: the `Data` of an `Alert` command (OMA DM 1.2 Alert Codes).
pub mod alert {
    /// User interaction: display a message.
    pub const DISPLAY: u16 = 1100;
    /// User interaction: confirm or reject.
    pub const CONFIRM_OR_REJECT: u16 = 1101;
    /// User interaction: text input.
    pub const TEXT_INPUT: u16 = 1102;
    /// User interaction: single choice.
    pub const SINGLE_CHOICE: u16 = 1103;
    /// User interaction: multiple choice.
    pub const MULTIPLE_CHOICE: u16 = 1104;
    /// Package #1 of a session answering a server trigger.
    pub const SERVER_INITIATED_MGMT: u16 = 1200;
    /// Package #1 of a session the client started on its own.
    pub const CLIENT_INITIATED_MGMT: u16 = 1201;
    /// Asks the peer for the next message of a multi-message package.
    pub const NEXT_MESSAGE: u16 = 1222;
    /// Aborts the session.
    pub const SESSION_ABORT: u16 = 1223;
    /// Client event data in the items.
    pub const CLIENT_EVENT: u16 = 1224;
    /// A chunked (large) object was not completed.
    pub const NO_END_OF_DATA: u16 = 1225;
    /// Generic Alert (client to server only).
    pub const GENERIC_ALERT: u16 = 1226;
}

/// One SyncML message: `<SyncML>` with its header and body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncMl {
    /// `SyncHdr`.
    pub hdr: SyncHdr,
    /// `SyncBody`.
    pub body: SyncBody,
}

impl SyncMl {
    /// The codes of the top-level `Alert` commands whose `Data` is a number, in order.
    pub fn alert_codes(&self) -> Vec<u16> {
        self.alerts().filter_map(Alert::code).collect()
    }

    /// The top-level `Alert` commands, in order.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.body.commands.iter().filter_map(|c| match c {
            Command::Alert(a) => Some(a),
            _ => None,
        })
    }

    /// The top-level `Status` commands, in order.
    pub fn statuses(&self) -> impl Iterator<Item = &Status> {
        self.body.commands.iter().filter_map(|c| match c {
            Command::Status(s) => Some(s),
            _ => None,
        })
    }

    /// The `Status` answering the peer's header (`Cmd` = `SyncHdr`), if any.
    pub fn hdr_status(&self) -> Option<&Status> {
        self.statuses().find(|s| s.cmd == "SyncHdr")
    }
}

/// The SyncML representation version, given by the root element's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SyncMlVersion {
    /// SyncML 1.1 (`SYNCML:SYNCML1.1`), used by DM 1.1.2 and by some DM 1.2 WBXML encoders.
    V1_1,
    /// SyncML 1.2 (`SYNCML:SYNCML1.2`), DM 1.2.
    #[default]
    V1_2,
}

impl SyncMlVersion {
    /// The root namespace written for this version.
    pub fn namespace(self) -> &'static str {
        match self {
            SyncMlVersion::V1_1 => NS_SYNCML_1_1,
            SyncMlVersion::V1_2 => NS_SYNCML_1_2,
        }
    }

    /// The `VerDTD` value of this version (`1.1` or `1.2`).
    pub fn ver_dtd(self) -> &'static str {
        match self {
            SyncMlVersion::V1_1 => "1.1",
            SyncMlVersion::V1_2 => "1.2",
        }
    }

    /// The version whose namespace is `ns` (compared case-insensitively).
    pub fn from_namespace(ns: &str) -> Option<SyncMlVersion> {
        if ns.eq_ignore_ascii_case(NS_SYNCML_1_2) {
            Some(SyncMlVersion::V1_2)
        } else if ns.eq_ignore_ascii_case(NS_SYNCML_1_1) {
            Some(SyncMlVersion::V1_1)
        } else {
            None
        }
    }

    /// The version whose `VerDTD` is `ver_dtd` (`1.1` or `1.2`).
    pub fn from_ver_dtd(ver_dtd: &str) -> Option<SyncMlVersion> {
        match ver_dtd {
            "1.1" => Some(SyncMlVersion::V1_1),
            "1.2" => Some(SyncMlVersion::V1_2),
            _ => None,
        }
    }
}

/// `SyncHdr`: `(VerDTD, VerProto, SessionID, MsgID, Target, Source, RespURI?, NoResp?, Cred?,
/// Meta?)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncHdr {
    /// The representation version, from the root namespace (not from `VerDTD`, which some
    /// encoders set inconsistently).
    pub version: SyncMlVersion,
    /// `VerDTD` as carried (`1.2` for DM 1.2).
    pub ver_dtd: String,
    /// `VerProto` as carried (`DM/1.2` for DM 1.2).
    pub ver_proto: String,
    /// `SessionID` as carried (upper-case hex for server-triggered sessions).
    pub session_id: String,
    /// `MsgID`.
    pub msg_id: u32,
    /// `Target`: the server URI (client to server) or the device id (server to client).
    pub target: LocRef,
    /// `Source`: the sender's URI or device id; `LocName` carries the user name for MD5 auth.
    pub source: LocRef,
    /// `RespURI`: where the next message should go.
    pub resp_uri: Option<String>,
    /// `NoResp`: the sender wants no Status for this message.
    pub no_resp: bool,
    /// `Cred`: the sender's credentials.
    pub cred: Option<Cred>,
    /// `Meta` (typically `MaxMsgSize` and `MaxObjSize`).
    pub meta: Option<Meta>,
}

impl Default for SyncHdr {
    /// A DM 1.2 header with empty session id, message 1 and empty locations.
    fn default() -> Self {
        SyncHdr {
            version: SyncMlVersion::V1_2,
            ver_dtd: "1.2".to_owned(),
            ver_proto: "DM/1.2".to_owned(),
            session_id: String::new(),
            msg_id: 1,
            target: LocRef::default(),
            source: LocRef::default(),
            resp_uri: None,
            no_resp: false,
            cred: None,
            meta: None,
        }
    }
}

/// A `Target` or `Source` element: `(LocURI, LocName?)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocRef {
    /// `LocURI`.
    pub loc_uri: String,
    /// `LocName`.
    pub loc_name: Option<String>,
}

impl LocRef {
    /// A location with only a `LocURI`.
    pub fn new(loc_uri: impl Into<String>) -> LocRef {
        LocRef {
            loc_uri: loc_uri.into(),
            loc_name: None,
        }
    }
}

/// `Cred`: `(Meta?, Data)`; the meta gives the scheme (`Type`) and encoding (`Format`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cred {
    /// `Meta` (empty when absent; an empty meta is not written).
    pub meta: Meta,
    /// `Data`, trimmed (base64 credentials or digest).
    pub data: String,
}

/// `Chal`: `(Meta)`, a challenge for credentials (scheme, format and `NextNonce`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chal {
    /// `Meta`.
    pub meta: Meta,
}

/// `Meta`: the meta-information elements DM uses (namespace `syncml:metinf`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// `Format` (`chr`, `b64`, `node`, `xml`, ...).
    pub format: Option<String>,
    /// `Type` (a MIME type, an auth scheme such as `syncml:auth-md5`, or a Generic Alert URN).
    pub ty: Option<String>,
    /// `Mark` (Generic Alert severity).
    pub mark: Option<String>,
    /// `Size` (total size of a chunked object, in the first chunk).
    pub size: Option<u64>,
    /// `NextNonce` (base64 text, as carried).
    pub next_nonce: Option<String>,
    /// `Version`.
    pub version: Option<String>,
    /// `MaxMsgSize`.
    pub max_msg_size: Option<u64>,
    /// `MaxObjSize`.
    pub max_obj_size: Option<u64>,
}

impl Meta {
    /// True when no element is set.
    pub fn is_empty(&self) -> bool {
        *self == Meta::default()
    }

    /// A meta with `Format` and `Type`.
    pub fn format_type(format: impl Into<String>, ty: impl Into<String>) -> Meta {
        Meta {
            format: Some(format.into()),
            ty: Some(ty.into()),
            ..Meta::default()
        }
    }
}

/// `SyncBody`: the commands, then `Final?`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncBody {
    /// The commands, in order.
    pub commands: Vec<Command>,
    /// `<Final/>`: this is the last message of the package.
    pub is_final: bool,
}

/// A SyncBody command (or a command nested in `Atomic` / `Sequence`).
// `Exec` holds its one `Item` inline, as the DTD does; messages hold few commands, so the
// size difference costs little and keeps matching on commands simple.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `Alert`.
    Alert(Alert),
    /// `Add`.
    Add(ItemCmd),
    /// `Replace`.
    Replace(ItemCmd),
    /// `Delete`.
    Delete(ItemCmd),
    /// `Get`.
    Get(ItemCmd),
    /// `Copy`.
    Copy(ItemCmd),
    /// `Exec`.
    Exec(Exec),
    /// `Atomic`.
    Atomic(Container),
    /// `Sequence`.
    Sequence(Container),
    /// `Results`.
    Results(Results),
    /// `Status`.
    Status(Status),
}

impl Command {
    /// The command's `CmdID`.
    pub fn cmd_id(&self) -> u32 {
        match self {
            Command::Alert(c) => c.cmd_id,
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Get(c)
            | Command::Copy(c) => c.cmd_id,
            Command::Exec(c) => c.cmd_id,
            Command::Atomic(c) | Command::Sequence(c) => c.cmd_id,
            Command::Results(c) => c.cmd_id,
            Command::Status(c) => c.cmd_id,
        }
    }

    /// The element name (`Alert`, `Replace`, ...), as used in `Status/Cmd`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Alert(_) => "Alert",
            Command::Add(_) => "Add",
            Command::Replace(_) => "Replace",
            Command::Delete(_) => "Delete",
            Command::Get(_) => "Get",
            Command::Copy(_) => "Copy",
            Command::Exec(_) => "Exec",
            Command::Atomic(_) => "Atomic",
            Command::Sequence(_) => "Sequence",
            Command::Results(_) => "Results",
            Command::Status(_) => "Status",
        }
    }

    /// The command's items (`Exec` has exactly one; containers have none of their own).
    pub fn items(&self) -> &[Item] {
        match self {
            Command::Alert(c) => &c.items,
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Get(c)
            | Command::Copy(c) => &c.items,
            Command::Exec(c) => std::slice::from_ref(&c.item),
            Command::Atomic(_) | Command::Sequence(_) => &[],
            Command::Results(c) => &c.items,
            Command::Status(c) => &c.items,
        }
    }

    /// Whether the sender asked for no Status (`NoResp`); `Results` and `Status` never carry it.
    pub fn no_resp(&self) -> bool {
        match self {
            Command::Alert(c) => c.no_resp,
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Get(c)
            | Command::Copy(c) => c.no_resp,
            Command::Exec(c) => c.no_resp,
            Command::Atomic(c) | Command::Sequence(c) => c.no_resp,
            Command::Results(_) | Command::Status(_) => false,
        }
    }
}

/// `Add`, `Replace`, `Delete`, `Get` or `Copy`: `(CmdID, NoResp?, Cred?, Meta?, Item+)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemCmd {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Cred` (DM forbids it at command level; some clients send it anyway).
    pub cred: Option<Cred>,
    /// `Meta`: defaults for the items.
    pub meta: Option<Meta>,
    /// `Item` elements, in order.
    pub items: Vec<Item>,
}

/// `Alert`: `(CmdID, NoResp?, Cred?, Data?, Correlator?, Item*)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alert {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Cred`.
    pub cred: Option<Cred>,
    /// `Data`: the alert code as carried (trimmed), see [`alert`].
    pub data: Option<String>,
    /// `Correlator` (DM 1.2): ties a Generic Alert to an earlier `Exec`.
    pub correlator: Option<String>,
    /// `Item` elements, in order.
    pub items: Vec<Item>,
}

impl Alert {
    /// The alert code, if `Data` is a number.
    pub fn code(&self) -> Option<u16> {
        self.data.as_deref().and_then(|d| d.parse().ok())
    }
}

/// `Exec`: `(CmdID, NoResp?, Cred?, Meta?, Correlator?, Item)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exec {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Cred`.
    pub cred: Option<Cred>,
    /// `Meta`.
    pub meta: Option<Meta>,
    /// `Correlator`.
    pub correlator: Option<String>,
    /// The one `Item`: the node to execute and its argument.
    pub item: Item,
}

/// `Atomic` or `Sequence`: `(CmdID, NoResp?, Meta?, commands)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `NoResp`.
    pub no_resp: bool,
    /// `Meta`.
    pub meta: Option<Meta>,
    /// The nested commands, in order.
    pub commands: Vec<Command>,
}

/// `Results`: `(CmdID, MsgRef?, CmdRef, Meta?, TargetRef?, SourceRef?, Item+)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Results {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `MsgRef`: the message of the `Get` answered.
    pub msg_ref: Option<u32>,
    /// `CmdRef`: the `CmdID` of the `Get` answered.
    pub cmd_ref: u32,
    /// `Meta`.
    pub meta: Option<Meta>,
    /// `TargetRef`.
    pub target_ref: Option<String>,
    /// `SourceRef`.
    pub source_ref: Option<String>,
    /// `Item` elements, in order.
    pub items: Vec<Item>,
}

/// `Status`: `(CmdID, MsgRef, CmdRef, Cmd, TargetRef*, SourceRef*, Cred?, Chal?, Data, Item*)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `CmdID`.
    pub cmd_id: u32,
    /// `MsgRef`: the message of the command answered.
    pub msg_ref: u32,
    /// `CmdRef`: the `CmdID` answered; 0 for the header.
    pub cmd_ref: u32,
    /// `Cmd`: the name of the command answered (`SyncHdr` for the header).
    pub cmd: String,
    /// `TargetRef` elements.
    pub target_refs: Vec<String>,
    /// `SourceRef` elements.
    pub source_refs: Vec<String>,
    /// `Cred`.
    pub cred: Option<Cred>,
    /// `Chal`: a challenge (with 401/407, or to set the next nonce).
    pub chal: Option<Chal>,
    /// `Data`: the status code.
    pub data: StatusCode,
    /// `Item` elements (e.g. the answers to a user-interaction alert).
    pub items: Vec<Item>,
}

impl Status {
    /// A status for command `cmd_ref` (named `cmd`) of message `msg_ref`, with code `data` and
    /// nothing else.
    pub fn new(
        cmd_id: u32,
        msg_ref: u32,
        cmd_ref: u32,
        cmd: impl Into<String>,
        data: StatusCode,
    ) -> Status {
        Status {
            cmd_id,
            msg_ref,
            cmd_ref,
            cmd: cmd.into(),
            target_refs: Vec::new(),
            source_refs: Vec::new(),
            cred: None,
            chal: None,
            data,
            items: Vec::new(),
        }
    }
}

/// `Item`: `(Target?, Source?, Meta?, Data?, MoreData?)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    /// `Target`.
    pub target: Option<LocRef>,
    /// `Source`.
    pub source: Option<LocRef>,
    /// `Meta`.
    pub meta: Option<Meta>,
    /// `Data`.
    pub data: Option<Data>,
    /// `MoreData`: more chunks of this object follow.
    pub more_data: bool,
}

impl Item {
    /// An item with only a `Target/LocURI`.
    pub fn with_target(uri: impl Into<String>) -> Item {
        Item {
            target: Some(LocRef::new(uri)),
            ..Item::default()
        }
    }

    /// An item with only a `Source/LocURI`.
    pub fn with_source(uri: impl Into<String>) -> Item {
        Item {
            source: Some(LocRef::new(uri)),
            ..Item::default()
        }
    }

    /// `Target/LocURI`, if present.
    pub fn target_uri(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.loc_uri.as_str())
    }

    /// `Source/LocURI`, if present.
    pub fn source_uri(&self) -> Option<&str> {
        self.source.as_ref().map(|s| s.loc_uri.as_str())
    }

    /// The `Data` as text (the markup for inline XML), if present.
    pub fn data_text(&self) -> Option<&str> {
        self.data.as_ref().map(Data::as_text)
    }
}

/// The content of an `Item/Data` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Character data, exactly as carried: entities resolved, CDATA taken literally, line
    /// ends normalised as XML requires, no trimming.
    Text(String),
    /// Child elements (inline XML such as a TNDS `MgmtTree`): the exact markup between
    /// `<Data>` and `</Data>` with surrounding whitespace trimmed. It is written back
    /// unescaped, so it must be well-formed XML content holding at least one element.
    Xml(String),
}

impl Data {
    /// The text, or the markup of inline XML.
    pub fn as_text(&self) -> &str {
        match self {
            Data::Text(s) | Data::Xml(s) => s,
        }
    }

    /// True for inline XML.
    pub fn is_xml(&self) -> bool {
        matches!(self, Data::Xml(_))
    }
}

impl Default for Data {
    /// Empty text.
    fn default() -> Self {
        Data::Text(String::new())
    }
}

impl From<&str> for Data {
    fn from(s: &str) -> Data {
        Data::Text(s.to_owned())
    }
}

impl From<String> for Data {
    fn from(s: String) -> Data {
        Data::Text(s)
    }
}
