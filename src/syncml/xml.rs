//! The XML codec for SyncML DM messages (`application/vnd.syncml.dm+xml`): [`decode`] reads a
//! message into the [`crate::syncml::message`] model and [`encode`] / [`encode_pretty`] write
//! it back.
//!
//! Decoding is lenient where real traffic varies and strict where the model would lose
//! information:
//!
//! * The root must be `SyncML` in namespace `SYNCML:SYNCML1.2` or `SYNCML:SYNCML1.1`
//!   (compared case-insensitively) or in no namespace (then `VerDTD` gives the version). The
//!   meta-information elements (`Type`, `Format`, ...) may be in `syncml:metinf` or in the
//!   SyncML namespace; any other namespace on a SyncML element is refused. Namespace prefixes
//!   are resolved.
//! * Children of an element may come in any order; single-valued ones may appear once
//!   ([`CodecError::DuplicateElement`]) and required ones must be present
//!   ([`CodecError::MissingElement`]): `CmdID` in every command; `MsgRef`, `Cmd` and `Data` in
//!   `Status` (and `CmdRef`, which defaults to 0 for the `Status` of a `SyncHdr`); `CmdRef` in
//!   `Results`; the `Item` of `Exec`; `VerDTD`, `VerProto`, `SessionID`, `MsgID`, `Target` and
//!   `Source` in `SyncHdr`; `LocURI` in `Target`/`Source`; `Data` in `Cred`; `Meta` in `Chal`.
//! * Elements outside the DM subset (`Map`, `Sync`, `Put`, `TargetParent`, unknown meta
//!   elements, ...) are refused with [`CodecError::UnexpectedElement`].
//! * Text is trimmed of XML whitespace, except in `Item/Data`, which is kept exactly (entities
//!   resolved, CDATA literal). An `Item/Data` holding child elements (inline TNDS) becomes
//!   [`Data::Xml`] with the exact input markup between the tags, whitespace-trimmed.
//! * Numbers (`CmdID`, `MsgID`, `MsgRef`, `CmdRef`, `Size`, `MaxMsgSize`, `MaxObjSize`, the
//!   `Status` code) are unsigned decimal digits, else [`CodecError::BadValue`].
//!
//! The decoder is an iterative state machine over quick-xml events with an explicit stack:
//! nesting (including `Atomic`/`Sequence` and inline XML) is bounded by
//! [`DecodeLimits::max_depth`], never by the call stack, and input size, text size and command
//! count are bounded too. Every error says what and where (`line L, column C`).
//!
//! Encoding writes the DM element order of the RepPro DTD, `xmlns="syncml:metinf"` on each meta
//! element, escapes `&`, `<`, `>` and writes control characters as character references, so
//! `decode(&encode(m)) == m` for any message whose trimmed fields carry no surrounding
//! whitespace, whose text has no NUL, and whose [`Data::Xml`] values are trimmed well-formed
//! markup with at least one element.

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesCData, BytesRef, BytesStart, BytesText, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

pub use crate::dm::tnds::Position;
use crate::xmltext::{
    Sink, XmlWriter, configure_reader, escape_into, is_xml_ws, leading_ws_len, offset, put_number,
    resolve_reference, shorten, take_trimmed, trim_xml, unclosed_message,
};

use super::StatusCode;
use super::message::{
    Alert, Chal, Command, Container, Cred, Data, Exec, Item, ItemCmd, LocRef, Meta, NS_METINF,
    Results, Status, SyncBody, SyncHdr, SyncMl, SyncMlVersion,
};

/// Resource limits for decoding untrusted messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Maximum input length in bytes (default 16 MiB).
    pub max_input_len: usize,
    /// Maximum element nesting, the root included (default 64). Nested `Atomic`/`Sequence`
    /// and inline XML in `Item/Data` count too.
    pub max_depth: usize,
    /// Maximum number of commands in the message, nested ones included (default 10,000).
    pub max_commands: usize,
    /// Maximum bytes of one text value or inline-XML `Data` (default 8 MiB).
    pub max_text_len: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_input_len: 16 << 20,
            max_depth: 64,
            max_commands: 10_000,
            max_text_len: 8 << 20,
        }
    }
}

/// Why a message was refused by [`decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input is not well-formed XML (the message comes from the XML reader or names the
    /// structural problem, e.g. an unclosed element, a raw `&`, content after the root).
    #[error("malformed XML at {pos}: {message}")]
    Xml {
        /// Where the problem was found.
        pos: Position,
        /// What is wrong.
        message: String,
    },
    /// An element that is not allowed where it stands (including SyncML DS elements such as
    /// `Map` or `Sync`, which DM does not use).
    #[error("unexpected element <{element}> in <{parent}> at {pos}")]
    UnexpectedElement {
        /// Where the element starts.
        pos: Position,
        /// The element's local name (shortened).
        element: String,
        /// The enclosing element.
        parent: String,
    },
    /// A required element is missing.
    #[error("missing element <{element}> in <{parent}> at {pos}")]
    MissingElement {
        /// Where the enclosing element starts.
        pos: Position,
        /// The missing element.
        element: String,
        /// The enclosing element.
        parent: String,
    },
    /// An element that may appear once appears again.
    #[error("duplicate element <{element}> in <{parent}> at {pos}")]
    DuplicateElement {
        /// Where the second occurrence starts.
        pos: Position,
        /// The repeated element.
        element: String,
        /// The enclosing element.
        parent: String,
    },
    /// Non-whitespace text inside an element that may only hold elements (or nothing).
    #[error("unexpected text `{text}` in <{parent}> at {pos}")]
    UnexpectedText {
        /// Where the text starts.
        pos: Position,
        /// The enclosing element.
        parent: String,
        /// The text (shortened).
        text: String,
    },
    /// A value that does not parse (a number, a status code, an unknown `VerDTD`).
    #[error("invalid {what} `{value}` at {pos}")]
    BadValue {
        /// Where the value's element starts.
        pos: Position,
        /// Which kind of value.
        what: &'static str,
        /// The value found (shortened).
        value: String,
    },
    /// The input is not a SyncML message (another root element, or WBXML).
    #[error("not a SyncML message: {reason}")]
    NotSyncMl {
        /// Why.
        reason: String,
    },
    /// An element is in a namespace that is not allowed for it.
    #[error("namespace `{ns}` is not allowed on <{element}> at {pos}")]
    UnknownNamespace {
        /// Where the element starts.
        pos: Position,
        /// The namespace (shortened).
        ns: String,
        /// The element's local name.
        element: String,
    },
    /// Elements are nested deeper than the limit.
    #[error("elements nested deeper than {limit} levels at {pos}")]
    TooDeep {
        /// Where the first too-deep element starts.
        pos: Position,
        /// The limit.
        limit: usize,
    },
    /// The input is longer than the limit.
    #[error("the input is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// One text value (or inline-XML `Data`) is longer than the limit.
    #[error("the text of <{element}> at {pos} is at least {len} bytes, over the limit of {limit}")]
    TextTooLarge {
        /// Where the element holding the text starts.
        pos: Position,
        /// The element.
        element: String,
        /// Bytes seen when the limit was passed.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The message holds more items of a kind than the limit allows.
    #[error("the message has more than {limit} {what}")]
    TooMany {
        /// What was counted (`commands`).
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The input is empty or holds no element.
    #[error("the message is empty")]
    Empty,
}

impl CodecError {
    /// Where the error was found, when it has a place in the input.
    pub fn position(&self) -> Option<Position> {
        match self {
            CodecError::Xml { pos, .. }
            | CodecError::UnexpectedElement { pos, .. }
            | CodecError::MissingElement { pos, .. }
            | CodecError::DuplicateElement { pos, .. }
            | CodecError::UnexpectedText { pos, .. }
            | CodecError::BadValue { pos, .. }
            | CodecError::UnknownNamespace { pos, .. }
            | CodecError::TooDeep { pos, .. }
            | CodecError::TextTooLarge { pos, .. } => Some(*pos),
            CodecError::NotSyncMl { .. }
            | CodecError::TooLarge { .. }
            | CodecError::TooMany { .. }
            | CodecError::Empty => None,
        }
    }
}

/// Decodes an XML SyncML DM message with the default [`DecodeLimits`].
pub fn decode(input: &[u8]) -> Result<SyncMl, CodecError> {
    decode_with(input, &DecodeLimits::default())
}

/// Decodes an XML SyncML DM message, enforcing `limits`.
pub fn decode_with(input: &[u8], limits: &DecodeLimits) -> Result<SyncMl, CodecError> {
    if input.len() > limits.max_input_len {
        return Err(CodecError::TooLarge {
            len: input.len(),
            limit: limits.max_input_len,
        });
    }
    let body = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    if body.iter().all(|&b| is_xml_ws(b)) {
        return Err(CodecError::Empty);
    }
    if matches!(body.first(), Some(0..=3)) {
        return Err(CodecError::NotSyncMl {
            reason: "the input starts like a WBXML document; this decoder reads XML only"
                .to_owned(),
        });
    }
    Parser::new(input, limits).run()
}

/// Encodes a message as compact XML (no declaration, no indentation).
pub fn encode(msg: &SyncMl) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(msg, &mut out);
    out
}

/// Appends the compact XML of `msg` to `out`.
pub fn encode_into(msg: &SyncMl, out: &mut Vec<u8>) {
    out.reserve(size_hint(msg));
    XmlWriter { out, pretty: false }.message(msg);
}

/// Encodes a message as XML indented by two spaces per level, for people to read. Text
/// values stay on the line of their element, so the result decodes to the same message.
pub fn encode_pretty(msg: &SyncMl) -> String {
    let mut out = String::with_capacity(size_hint(msg).saturating_mul(2));
    XmlWriter {
        out: &mut out,
        pretty: true,
    }
    .message(msg);
    out
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// An unsigned decimal number: ASCII digits only (no sign, no spaces), without overflow.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// An error for a decoder state that cannot happen (reported rather than panicking).
fn internal_at(input: &[u8], at: usize) -> CodecError {
    CodecError::Xml {
        pos: Position::at(input, at),
        message: "internal decoder state error".to_owned(),
    }
}

/// The commands of DM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmdKind {
    Alert,
    Add,
    Replace,
    Delete,
    Get,
    Copy,
    Exec,
    Atomic,
    Sequence,
    Results,
    Status,
}

impl CmdKind {
    fn from_name(local: &str) -> Option<CmdKind> {
        Some(match local {
            "Alert" => CmdKind::Alert,
            "Add" => CmdKind::Add,
            "Replace" => CmdKind::Replace,
            "Delete" => CmdKind::Delete,
            "Get" => CmdKind::Get,
            "Copy" => CmdKind::Copy,
            "Exec" => CmdKind::Exec,
            "Atomic" => CmdKind::Atomic,
            "Sequence" => CmdKind::Sequence,
            "Results" => CmdKind::Results,
            "Status" => CmdKind::Status,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            CmdKind::Alert => "Alert",
            CmdKind::Add => "Add",
            CmdKind::Replace => "Replace",
            CmdKind::Delete => "Delete",
            CmdKind::Get => "Get",
            CmdKind::Copy => "Copy",
            CmdKind::Exec => "Exec",
            CmdKind::Atomic => "Atomic",
            CmdKind::Sequence => "Sequence",
            CmdKind::Results => "Results",
            CmdKind::Status => "Status",
        }
    }

    fn is_container(self) -> bool {
        matches!(self, CmdKind::Atomic | CmdKind::Sequence)
    }

    /// Commands allowed inside `Atomic` and `Sequence`.
    fn nestable(self) -> bool {
        !matches!(self, CmdKind::Results | CmdKind::Status)
    }
}

/// The meta-information elements DM uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetField {
    Format,
    Type,
    Mark,
    Size,
    NextNonce,
    Version,
    MaxMsgSize,
    MaxObjSize,
}

impl MetField {
    fn from_name(local: &str) -> Option<MetField> {
        Some(match local {
            "Format" => MetField::Format,
            "Type" => MetField::Type,
            "Mark" => MetField::Mark,
            "Size" => MetField::Size,
            "NextNonce" => MetField::NextNonce,
            "Version" => MetField::Version,
            "MaxMsgSize" => MetField::MaxMsgSize,
            "MaxObjSize" => MetField::MaxObjSize,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            MetField::Format => "Format",
            MetField::Type => "Type",
            MetField::Mark => "Mark",
            MetField::Size => "Size",
            MetField::NextNonce => "NextNonce",
            MetField::Version => "Version",
            MetField::MaxMsgSize => "MaxMsgSize",
            MetField::MaxObjSize => "MaxObjSize",
        }
    }
}

/// Elements of the DM subset of SyncML, by role (the same name can play several roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum El {
    SyncMl,
    SyncHdr,
    SyncBody,
    VerDtd,
    VerProto,
    SessionId,
    MsgId,
    RespUri,
    Target,
    Source,
    LocUri,
    LocName,
    NoResp,
    Final,
    MoreData,
    Cred,
    Chal,
    Meta,
    MetInf(MetField),
    Cmd(CmdKind),
    CmdId,
    MsgRef,
    CmdRef,
    /// `Status/Cmd`.
    CmdName,
    TargetRef,
    SourceRef,
    Correlator,
    /// `Data` of `Alert`, `Status` and `Cred` (trimmed text).
    Data,
    Item,
    /// `Item/Data` (exact text or inline XML).
    ItemData,
}

/// How an element's content is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// Only child elements (and whitespace).
    Elements,
    /// Text (collected into the text buffer).
    Text,
    /// Nothing but whitespace.
    Empty,
    /// `Item/Data`: text or arbitrary child elements.
    Raw,
}

impl El {
    fn name(self) -> &'static str {
        match self {
            El::SyncMl => "SyncML",
            El::SyncHdr => "SyncHdr",
            El::SyncBody => "SyncBody",
            El::VerDtd => "VerDTD",
            El::VerProto => "VerProto",
            El::SessionId => "SessionID",
            El::MsgId => "MsgID",
            El::RespUri => "RespURI",
            El::Target => "Target",
            El::Source => "Source",
            El::LocUri => "LocURI",
            El::LocName => "LocName",
            El::NoResp => "NoResp",
            El::Final => "Final",
            El::MoreData => "MoreData",
            El::Cred => "Cred",
            El::Chal => "Chal",
            El::Meta => "Meta",
            El::MetInf(f) => f.name(),
            El::Cmd(k) => k.name(),
            El::CmdId => "CmdID",
            El::MsgRef => "MsgRef",
            El::CmdRef => "CmdRef",
            El::CmdName => "Cmd",
            El::TargetRef => "TargetRef",
            El::SourceRef => "SourceRef",
            El::Correlator => "Correlator",
            El::Data | El::ItemData => "Data",
            El::Item => "Item",
        }
    }

    fn content(self) -> Content {
        match self {
            El::SyncMl
            | El::SyncHdr
            | El::SyncBody
            | El::Target
            | El::Source
            | El::Cred
            | El::Chal
            | El::Meta
            | El::Cmd(_)
            | El::Item => Content::Elements,
            El::NoResp | El::Final | El::MoreData => Content::Empty,
            El::ItemData => Content::Raw,
            El::VerDtd
            | El::VerProto
            | El::SessionId
            | El::MsgId
            | El::RespUri
            | El::LocUri
            | El::LocName
            | El::MetInf(_)
            | El::CmdId
            | El::MsgRef
            | El::CmdRef
            | El::CmdName
            | El::TargetRef
            | El::SourceRef
            | El::Correlator
            | El::Data => Content::Text,
        }
    }

    /// The bit recording that this element was seen in its parent.
    fn bit(self) -> u64 {
        let index = match self {
            El::SyncMl => 0,
            El::SyncHdr => 1,
            El::SyncBody => 2,
            El::VerDtd => 3,
            El::VerProto => 4,
            El::SessionId => 5,
            El::MsgId => 6,
            El::RespUri => 7,
            El::Target => 8,
            El::Source => 9,
            El::LocUri => 10,
            El::LocName => 11,
            El::NoResp => 12,
            El::Final => 13,
            El::MoreData => 14,
            El::Cred => 15,
            El::Chal => 16,
            El::Meta => 17,
            El::Cmd(_) => 18,
            El::CmdId => 19,
            El::MsgRef => 20,
            El::CmdRef => 21,
            El::CmdName => 22,
            El::TargetRef => 23,
            El::SourceRef => 24,
            El::Correlator => 25,
            El::Data => 26,
            El::Item => 27,
            El::ItemData => 28,
            El::MetInf(f) => 29 + f as u32,
        };
        1u64 << index
    }

    /// Whether this element may appear at most once in `parent`.
    fn single_in(self, parent: El) -> bool {
        match self {
            El::Cmd(_) => false,
            El::Item => parent == El::Cmd(CmdKind::Exec),
            El::TargetRef | El::SourceRef => parent != El::Cmd(CmdKind::Status),
            _ => true,
        }
    }
}

/// The element `local` in `parent`, if the DM subset allows it there.
fn child_of(parent: El, local: &str) -> Option<El> {
    Some(match parent {
        El::SyncMl => match local {
            "SyncHdr" => El::SyncHdr,
            "SyncBody" => El::SyncBody,
            _ => return None,
        },
        El::SyncHdr => match local {
            "VerDTD" => El::VerDtd,
            "VerProto" => El::VerProto,
            "SessionID" => El::SessionId,
            "MsgID" => El::MsgId,
            "Target" => El::Target,
            "Source" => El::Source,
            "RespURI" => El::RespUri,
            "NoResp" => El::NoResp,
            "Cred" => El::Cred,
            "Meta" => El::Meta,
            _ => return None,
        },
        El::SyncBody => match local {
            "Final" => El::Final,
            _ => El::Cmd(CmdKind::from_name(local)?),
        },
        El::Cmd(kind) => {
            let el = match local {
                "CmdID" => El::CmdId,
                "NoResp" => El::NoResp,
                "Cred" => El::Cred,
                "Meta" => El::Meta,
                "Item" => El::Item,
                "Data" => El::Data,
                "Correlator" => El::Correlator,
                "MsgRef" => El::MsgRef,
                "CmdRef" => El::CmdRef,
                "Cmd" => El::CmdName,
                "TargetRef" => El::TargetRef,
                "SourceRef" => El::SourceRef,
                "Chal" => El::Chal,
                _ => {
                    let nested = CmdKind::from_name(local)?;
                    return (kind.is_container() && nested.nestable()).then_some(El::Cmd(nested));
                }
            };
            let allowed = match kind {
                CmdKind::Add
                | CmdKind::Replace
                | CmdKind::Delete
                | CmdKind::Get
                | CmdKind::Copy => {
                    matches!(el, El::CmdId | El::NoResp | El::Cred | El::Meta | El::Item)
                }
                CmdKind::Alert => matches!(
                    el,
                    El::CmdId | El::NoResp | El::Cred | El::Data | El::Correlator | El::Item
                ),
                CmdKind::Exec => matches!(
                    el,
                    El::CmdId | El::NoResp | El::Cred | El::Meta | El::Correlator | El::Item
                ),
                CmdKind::Atomic | CmdKind::Sequence => {
                    matches!(el, El::CmdId | El::NoResp | El::Meta)
                }
                CmdKind::Results => matches!(
                    el,
                    El::CmdId
                        | El::MsgRef
                        | El::CmdRef
                        | El::Meta
                        | El::TargetRef
                        | El::SourceRef
                        | El::Item
                ),
                CmdKind::Status => matches!(
                    el,
                    El::CmdId
                        | El::MsgRef
                        | El::CmdRef
                        | El::CmdName
                        | El::TargetRef
                        | El::SourceRef
                        | El::Cred
                        | El::Chal
                        | El::Data
                        | El::Item
                ),
            };
            return allowed.then_some(el);
        }
        El::Item => match local {
            "Target" => El::Target,
            "Source" => El::Source,
            "Meta" => El::Meta,
            "Data" => El::ItemData,
            "MoreData" => El::MoreData,
            _ => return None,
        },
        El::Target | El::Source => match local {
            "LocURI" => El::LocUri,
            "LocName" => El::LocName,
            _ => return None,
        },
        El::Cred => match local {
            "Meta" => El::Meta,
            "Data" => El::Data,
            _ => return None,
        },
        El::Chal => match local {
            "Meta" => El::Meta,
            _ => return None,
        },
        El::Meta => El::MetInf(MetField::from_name(local)?),
        _ => return None,
    })
}

/// The namespace an element resolved to, reduced to what the checks need.
enum Ns {
    Unbound,
    SyncMl(SyncMlVersion),
    MetInf,
    Other(String),
    UnknownPrefix(String),
}

impl Ns {
    fn of(r: &ResolveResult<'_>) -> Ns {
        match r {
            ResolveResult::Unbound => Ns::Unbound,
            ResolveResult::Bound(ns) => {
                let ns: &str = ns.0;
                if ns.is_empty() {
                    Ns::Unbound
                } else if let Some(v) = SyncMlVersion::from_namespace(ns) {
                    Ns::SyncMl(v)
                } else if ns.eq_ignore_ascii_case(NS_METINF) {
                    Ns::MetInf
                } else {
                    Ns::Other(shorten(ns))
                }
            }
            ResolveResult::Unknown(p) => Ns::UnknownPrefix(shorten(p)),
        }
    }
}

/// A command being built: the union of all command fields.
#[derive(Default)]
struct CmdBuild {
    cmd_id: u32,
    no_resp: bool,
    cred: Option<Cred>,
    meta: Option<Meta>,
    data: Option<String>,
    correlator: Option<String>,
    msg_ref: Option<u32>,
    cmd_ref: Option<u32>,
    cmd: Option<String>,
    target_refs: Vec<String>,
    source_refs: Vec<String>,
    chal: Option<Chal>,
    code: Option<StatusCode>,
    items: Vec<Item>,
    commands: Vec<Command>,
}

/// A value under construction, one per open element that has fields.
enum Build {
    Hdr(Box<SyncHdr>),
    Body(SyncBody),
    Cmd(Box<CmdBuild>),
    Item(Box<Item>),
    Loc(LocRef),
    Meta(Meta),
    Cred(Cred),
    Chal(Chal),
}

/// An open element.
struct Open {
    el: El,
    /// Byte offset of the start tag.
    at: usize,
    /// Children seen so far ([`El::bit`]).
    seen: u64,
}

/// State of an open `Item/Data`.
struct Raw {
    /// Byte offset just after the `<Data>` start tag.
    content_start: usize,
    /// Open child elements.
    depth: usize,
    /// Whether a child element was seen.
    has_elements: bool,
}

struct Parser<'a> {
    input: &'a [u8],
    limits: &'a DecodeLimits,
    stack: Vec<Open>,
    builds: Vec<Build>,
    /// Text of the open text element.
    text: String,
    /// The version from the root namespace (`None`: no namespace).
    version: Option<SyncMlVersion>,
    hdr: Option<SyncHdr>,
    body: Option<SyncBody>,
    root_done: bool,
    commands: usize,
    raw: Option<Raw>,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], limits: &'a DecodeLimits) -> Parser<'a> {
        Parser {
            input,
            limits,
            stack: Vec::new(),
            builds: Vec::new(),
            text: String::new(),
            version: None,
            hdr: None,
            body: None,
            root_done: false,
            commands: 0,
            raw: None,
        }
    }

    fn pos(&self, byte: usize) -> Position {
        Position::at(self.input, byte)
    }

    fn xml_err(&self, byte: usize, message: impl Into<String>) -> CodecError {
        CodecError::Xml {
            pos: self.pos(byte),
            message: message.into(),
        }
    }

    fn internal(&self, at: usize) -> CodecError {
        internal_at(self.input, at)
    }

    fn run(mut self) -> Result<SyncMl, CodecError> {
        let mut reader = NsReader::from_reader(self.input);
        configure_reader(reader.config_mut());
        loop {
            let at = offset(reader.buffer_position());
            let step = match reader.read_resolved_event() {
                Ok((ns, event)) => {
                    let ns = match event {
                        Event::Start(_) | Event::Empty(_) => Ns::of(&ns),
                        _ => Ns::Unbound,
                    };
                    Ok((ns, event))
                }
                Err(e) => Err(e),
            };
            let (ns, event) = match step {
                Ok(v) => v,
                Err(e) => {
                    return Err(self.xml_err(offset(reader.error_position()), e.to_string()));
                }
            };
            let after = offset(reader.buffer_position());
            match event {
                Event::Start(e) => {
                    if let Some(raw) = self.raw.as_mut() {
                        raw.depth += 1;
                        raw.has_elements = true;
                        let depth = self.stack.len().saturating_add(raw.depth);
                        self.check_raw_child(&e, at, depth)?;
                    } else {
                        self.start(&e, ns, at, after)?;
                    }
                }
                Event::Empty(e) => {
                    if let Some(raw) = self.raw.as_mut() {
                        raw.has_elements = true;
                        let depth = self.stack.len().saturating_add(raw.depth).saturating_add(1);
                        self.check_raw_child(&e, at, depth)?;
                    } else {
                        self.start(&e, ns, at, after)?;
                        self.end(after)?;
                    }
                }
                Event::End(_) => match self.raw.as_mut() {
                    Some(raw) if raw.depth > 0 => raw.depth -= 1,
                    _ => self.end(at)?,
                },
                Event::Text(t) => self.text(&t, at)?,
                Event::CData(c) => self.cdata(&c, at)?,
                Event::GeneralRef(r) => self.reference(&r, at)?,
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = self.stack.last() {
            return Err(self.xml_err(
                self.input.len(),
                unclosed_message(open.el.name(), self.pos(open.at)),
            ));
        }
        if !self.root_done {
            return Err(CodecError::Empty);
        }
        match (self.hdr, self.body) {
            (Some(hdr), Some(body)) => Ok(SyncMl { hdr, body }),
            _ => Err(internal_at(self.input, self.input.len())),
        }
    }

    /// Checks an element inside `Item/Data` (inline XML): depth and attribute syntax only.
    fn check_raw_child(
        &self,
        e: &BytesStart<'_>,
        at: usize,
        depth: usize,
    ) -> Result<(), CodecError> {
        if depth > self.limits.max_depth {
            return Err(CodecError::TooDeep {
                pos: self.pos(at),
                limit: self.limits.max_depth,
            });
        }
        self.check_attributes(e, at)
    }

    fn check_attributes(&self, e: &BytesStart<'_>, at: usize) -> Result<(), CodecError> {
        for attr in e.attributes() {
            if let Err(err) = attr {
                return Err(self.attr_error(err, at));
            }
        }
        Ok(())
    }

    /// An attribute syntax error, placed at the offending character of the tag at `at`.
    fn attr_error(&self, err: AttrError, at: usize) -> CodecError {
        let (rel, message) = match err {
            AttrError::ExpectedEq(p) => (p, "an attribute name must be followed by `=`".to_owned()),
            AttrError::ExpectedValue(p) => {
                (p, "`=` must be followed by an attribute value".to_owned())
            }
            AttrError::UnquotedValue(p) => (
                p,
                "an attribute value must be enclosed in `\"` or `'`".to_owned(),
            ),
            AttrError::ExpectedQuote(p, q) => (
                p,
                format!(
                    "missing closing quote `{}` in an attribute value",
                    char::from(q)
                ),
            ),
            AttrError::Duplicated(p, _) => (p, "duplicated attribute".to_owned()),
        };
        // Positions are relative to the tag's content, which starts after `<`.
        self.xml_err(at.saturating_add(1).saturating_add(rel), message)
    }

    fn start(
        &mut self,
        e: &BytesStart<'_>,
        ns: Ns,
        at: usize,
        after: usize,
    ) -> Result<(), CodecError> {
        let qname = e.name();
        let local = qname.local_name().into_inner();
        let (el, parent) = match self.stack.last() {
            None => {
                if self.root_done {
                    return Err(self.xml_err(
                        at,
                        format!("element <{}> after the root element", shorten(local)),
                    ));
                }
                if local != "SyncML" {
                    return Err(CodecError::NotSyncMl {
                        reason: format!("the root element is <{}>, not <SyncML>", shorten(local)),
                    });
                }
                (El::SyncMl, None)
            }
            Some(parent) => match child_of(parent.el, local) {
                Some(el) => (el, Some(parent.el)),
                None => {
                    return Err(CodecError::UnexpectedElement {
                        pos: self.pos(at),
                        element: shorten(local),
                        parent: parent.el.name().to_owned(),
                    });
                }
            },
        };
        self.check_namespace(el, ns, at)?;
        self.check_attributes(e, at)?;
        if self.stack.len() >= self.limits.max_depth {
            return Err(CodecError::TooDeep {
                pos: self.pos(at),
                limit: self.limits.max_depth,
            });
        }
        if let (Some(parent), Some(open)) = (parent, self.stack.last_mut()) {
            let bit = el.bit();
            if open.seen & bit != 0 && el.single_in(parent) {
                return Err(CodecError::DuplicateElement {
                    pos: Position::at(self.input, at),
                    element: el.name().to_owned(),
                    parent: parent.name().to_owned(),
                });
            }
            open.seen |= bit;
        }
        self.open(el, at, after)?;
        self.stack.push(Open { el, at, seen: 0 });
        Ok(())
    }

    fn check_namespace(&mut self, el: El, ns: Ns, at: usize) -> Result<(), CodecError> {
        let bad = match ns {
            Ns::Unbound => {
                return Ok(());
            }
            Ns::SyncMl(v) => {
                if el == El::SyncMl {
                    self.version = Some(v);
                }
                return Ok(());
            }
            Ns::MetInf if matches!(el, El::MetInf(_) | El::Meta) => return Ok(()),
            Ns::MetInf => NS_METINF.to_owned(),
            Ns::Other(ns) => ns,
            Ns::UnknownPrefix(p) => {
                return Err(self.xml_err(
                    at,
                    format!(
                        "the namespace prefix `{p}` of <{}> is not declared",
                        el.name()
                    ),
                ));
            }
        };
        Err(CodecError::UnknownNamespace {
            pos: self.pos(at),
            ns: bad,
            element: el.name().to_owned(),
        })
    }

    /// Prepares the state of a newly opened element.
    fn open(&mut self, el: El, at: usize, after: usize) -> Result<(), CodecError> {
        match el {
            El::SyncMl => {}
            El::SyncHdr => self.builds.push(Build::Hdr(Box::new(SyncHdr {
                version: self.version.unwrap_or_default(),
                ver_dtd: String::new(),
                ver_proto: String::new(),
                session_id: String::new(),
                msg_id: 0,
                target: LocRef::default(),
                source: LocRef::default(),
                resp_uri: None,
                no_resp: false,
                cred: None,
                meta: None,
            }))),
            El::SyncBody => self.builds.push(Build::Body(SyncBody::default())),
            El::Cmd(_) => {
                self.commands += 1;
                if self.commands > self.limits.max_commands {
                    return Err(CodecError::TooMany {
                        what: "commands",
                        limit: self.limits.max_commands,
                    });
                }
                self.builds.push(Build::Cmd(Box::default()));
            }
            El::Item => self.builds.push(Build::Item(Box::default())),
            El::Target | El::Source => self.builds.push(Build::Loc(LocRef::default())),
            El::Meta => self.builds.push(Build::Meta(Meta::default())),
            El::Cred => self.builds.push(Build::Cred(Cred::default())),
            El::Chal => self.builds.push(Build::Chal(Chal::default())),
            El::NoResp => match self.builds.last_mut() {
                Some(Build::Hdr(h)) => h.no_resp = true,
                Some(Build::Cmd(c)) => c.no_resp = true,
                _ => return Err(self.internal(at)),
            },
            El::Final => match self.builds.last_mut() {
                Some(Build::Body(b)) => b.is_final = true,
                _ => return Err(self.internal(at)),
            },
            El::MoreData => match self.builds.last_mut() {
                Some(Build::Item(i)) => i.more_data = true,
                _ => return Err(self.internal(at)),
            },
            El::ItemData => {
                self.text.clear();
                self.raw = Some(Raw {
                    content_start: after,
                    depth: 0,
                    has_elements: false,
                });
            }
            El::VerDtd
            | El::VerProto
            | El::SessionId
            | El::MsgId
            | El::RespUri
            | El::LocUri
            | El::LocName
            | El::MetInf(_)
            | El::CmdId
            | El::MsgRef
            | El::CmdRef
            | El::CmdName
            | El::TargetRef
            | El::SourceRef
            | El::Correlator
            | El::Data => self.text.clear(),
        }
        Ok(())
    }

    fn missing(&self, element: &str, open: &Open) -> CodecError {
        CodecError::MissingElement {
            pos: self.pos(open.at),
            element: element.to_owned(),
            parent: open.el.name().to_owned(),
        }
    }

    /// Fails with [`CodecError::MissingElement`] for the first of `required` not seen in `open`.
    fn require(&self, open: &Open, required: &[El]) -> Result<(), CodecError> {
        match required.iter().find(|el| open.seen & el.bit() == 0) {
            Some(el) => Err(self.missing(el.name(), open)),
            None => Ok(()),
        }
    }

    fn bad_value(&self, what: &'static str, value: &str, at: usize) -> CodecError {
        CodecError::BadValue {
            pos: self.pos(at),
            what,
            value: shorten(value),
        }
    }

    fn take_trimmed(&mut self) -> String {
        take_trimmed(&mut self.text)
    }

    fn take_number<T: std::str::FromStr>(
        &mut self,
        what: &'static str,
        at: usize,
    ) -> Result<T, CodecError> {
        let text = trim_xml(&self.text);
        number(text).ok_or_else(|| self.bad_value(what, text, at))
    }

    fn top(&mut self, at: usize) -> Result<&mut Build, CodecError> {
        let input = self.input;
        self.builds.last_mut().ok_or_else(|| internal_at(input, at))
    }

    fn top_hdr(&mut self, at: usize) -> Result<&mut SyncHdr, CodecError> {
        let input = self.input;
        match self.builds.last_mut() {
            Some(Build::Hdr(h)) => Ok(h),
            _ => Err(internal_at(input, at)),
        }
    }

    fn top_cmd(&mut self, at: usize) -> Result<&mut CmdBuild, CodecError> {
        let input = self.input;
        match self.builds.last_mut() {
            Some(Build::Cmd(c)) => Ok(c),
            _ => Err(internal_at(input, at)),
        }
    }

    fn top_loc(&mut self, at: usize) -> Result<&mut LocRef, CodecError> {
        let input = self.input;
        match self.builds.last_mut() {
            Some(Build::Loc(l)) => Ok(l),
            _ => Err(internal_at(input, at)),
        }
    }

    fn top_meta(&mut self, at: usize) -> Result<&mut Meta, CodecError> {
        let input = self.input;
        match self.builds.last_mut() {
            Some(Build::Meta(m)) => Ok(m),
            _ => Err(internal_at(input, at)),
        }
    }

    /// Closes the innermost element.
    fn end(&mut self, at: usize) -> Result<(), CodecError> {
        let Some(open) = self.stack.pop() else {
            return Err(self.xml_err(at, "end tag without a start tag"));
        };
        let start = open.at;
        match open.el {
            El::SyncMl => {
                self.require(&open, &[El::SyncHdr, El::SyncBody])?;
                self.root_done = true;
            }
            El::SyncHdr => {
                self.require(
                    &open,
                    &[
                        El::VerDtd,
                        El::VerProto,
                        El::SessionId,
                        El::MsgId,
                        El::Target,
                        El::Source,
                    ],
                )?;
                let Some(Build::Hdr(mut hdr)) = self.builds.pop() else {
                    return Err(self.internal(at));
                };
                if self.version.is_none() {
                    hdr.version = SyncMlVersion::from_ver_dtd(&hdr.ver_dtd)
                        .ok_or_else(|| self.bad_value("VerDTD", &hdr.ver_dtd, start))?;
                }
                self.hdr = Some(*hdr);
            }
            El::SyncBody => {
                let Some(Build::Body(body)) = self.builds.pop() else {
                    return Err(self.internal(at));
                };
                self.body = Some(body);
            }
            El::Cmd(kind) => self.end_command(kind, &open, at)?,
            El::Item => {
                let Some(Build::Item(item)) = self.builds.pop() else {
                    return Err(self.internal(at));
                };
                self.top_cmd(at)?.items.push(*item);
            }
            El::Target | El::Source => {
                self.require(&open, &[El::LocUri])?;
                let Some(Build::Loc(loc)) = self.builds.pop() else {
                    return Err(self.internal(at));
                };
                let is_target = open.el == El::Target;
                match self.top(at)? {
                    Build::Hdr(h) if is_target => h.target = loc,
                    Build::Hdr(h) => h.source = loc,
                    Build::Item(i) if is_target => i.target = Some(loc),
                    Build::Item(i) => i.source = Some(loc),
                    _ => return Err(self.internal(at)),
                }
            }
            El::Meta => {
                let Some(Build::Meta(meta)) = self.builds.pop() else {
                    return Err(self.internal(at));
                };
                match self.top(at)? {
                    Build::Hdr(h) => h.meta = Some(meta),
                    Build::Cmd(c) => c.meta = Some(meta),
                    Build::Item(i) => i.meta = Some(meta),
                    Build::Cred(c) => c.meta = meta,
                    Build::Chal(c) => c.meta = meta,
                    _ => return Err(self.internal(at)),
                }
            }
            El::Cred => {
                self.require(&open, &[El::Data])?;
                let Some(Build::Cred(cred)) = self.builds.pop() else {
                    return Err(self.internal(at));
                };
                match self.top(at)? {
                    Build::Hdr(h) => h.cred = Some(cred),
                    Build::Cmd(c) => c.cred = Some(cred),
                    _ => return Err(self.internal(at)),
                }
            }
            El::Chal => {
                self.require(&open, &[El::Meta])?;
                let Some(Build::Chal(chal)) = self.builds.pop() else {
                    return Err(self.internal(at));
                };
                self.top_cmd(at)?.chal = Some(chal);
            }
            El::NoResp | El::Final | El::MoreData => {}
            El::VerDtd => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.ver_dtd = v;
            }
            El::VerProto => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.ver_proto = v;
            }
            El::SessionId => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.session_id = v;
            }
            El::MsgId => {
                let v = self.take_number("MsgID", start)?;
                self.top_hdr(at)?.msg_id = v;
            }
            El::RespUri => {
                let v = self.take_trimmed();
                self.top_hdr(at)?.resp_uri = Some(v);
            }
            El::LocUri => {
                let v = self.take_trimmed();
                self.top_loc(at)?.loc_uri = v;
            }
            El::LocName => {
                let v = self.take_trimmed();
                self.top_loc(at)?.loc_name = Some(v);
            }
            El::MetInf(field) => {
                let (text, num) = match field {
                    MetField::Size | MetField::MaxMsgSize | MetField::MaxObjSize => {
                        (None, Some(self.take_number::<u64>(field.name(), start)?))
                    }
                    _ => (Some(self.take_trimmed()), None),
                };
                let meta = self.top_meta(at)?;
                match field {
                    MetField::Format => meta.format = text,
                    MetField::Type => meta.ty = text,
                    MetField::Mark => meta.mark = text,
                    MetField::NextNonce => meta.next_nonce = text,
                    MetField::Version => meta.version = text,
                    MetField::Size => meta.size = num,
                    MetField::MaxMsgSize => meta.max_msg_size = num,
                    MetField::MaxObjSize => meta.max_obj_size = num,
                }
            }
            El::CmdId => {
                let v = self.take_number("CmdID", start)?;
                self.top_cmd(at)?.cmd_id = v;
            }
            El::MsgRef => {
                let v = self.take_number("MsgRef", start)?;
                self.top_cmd(at)?.msg_ref = Some(v);
            }
            El::CmdRef => {
                let v = self.take_number("CmdRef", start)?;
                self.top_cmd(at)?.cmd_ref = Some(v);
            }
            El::CmdName => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.cmd = Some(v);
            }
            El::TargetRef => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.target_refs.push(v);
            }
            El::SourceRef => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.source_refs.push(v);
            }
            El::Correlator => {
                let v = self.take_trimmed();
                self.top_cmd(at)?.correlator = Some(v);
            }
            El::Data => {
                let parent = self.stack.last().map(|o| o.el);
                if parent == Some(El::Cmd(CmdKind::Status)) {
                    let code = self.take_number::<u16>("status code", start)?;
                    self.top_cmd(at)?.code = Some(StatusCode(code));
                } else {
                    let v = self.take_trimmed();
                    match self.top(at)? {
                        Build::Cmd(c) => c.data = Some(v),
                        Build::Cred(c) => c.data = v,
                        _ => return Err(self.internal(at)),
                    }
                }
            }
            El::ItemData => {
                let Some(raw) = self.raw.take() else {
                    return Err(self.internal(at));
                };
                let data = if raw.has_elements {
                    let slice = self.input.get(raw.content_start..at).unwrap_or_default();
                    if slice.len() > self.limits.max_text_len {
                        return Err(CodecError::TextTooLarge {
                            pos: self.pos(start),
                            element: "Data".to_owned(),
                            len: slice.len(),
                            limit: self.limits.max_text_len,
                        });
                    }
                    let markup = std::str::from_utf8(slice)
                        .map_err(|e| self.xml_err(raw.content_start, e.to_string()))?;
                    Data::Xml(trim_xml(markup).to_owned())
                } else {
                    Data::Text(std::mem::take(&mut self.text))
                };
                match self.top(at)? {
                    Build::Item(i) => i.data = Some(data),
                    _ => return Err(self.internal(at)),
                }
            }
        }
        Ok(())
    }

    fn end_command(&mut self, kind: CmdKind, open: &Open, at: usize) -> Result<(), CodecError> {
        let Some(Build::Cmd(b)) = self.builds.pop() else {
            return Err(self.internal(at));
        };
        self.require(open, &[El::CmdId])?;
        let b = *b;
        let item_cmd = |b: CmdBuild| ItemCmd {
            cmd_id: b.cmd_id,
            no_resp: b.no_resp,
            cred: b.cred,
            meta: b.meta,
            items: b.items,
        };
        let container = |b: CmdBuild| Container {
            cmd_id: b.cmd_id,
            no_resp: b.no_resp,
            meta: b.meta,
            commands: b.commands,
        };
        let command = match kind {
            CmdKind::Add => Command::Add(item_cmd(b)),
            CmdKind::Replace => Command::Replace(item_cmd(b)),
            CmdKind::Delete => Command::Delete(item_cmd(b)),
            CmdKind::Get => Command::Get(item_cmd(b)),
            CmdKind::Copy => Command::Copy(item_cmd(b)),
            CmdKind::Atomic => Command::Atomic(container(b)),
            CmdKind::Sequence => Command::Sequence(container(b)),
            CmdKind::Alert => Command::Alert(Alert {
                cmd_id: b.cmd_id,
                no_resp: b.no_resp,
                cred: b.cred,
                data: b.data,
                correlator: b.correlator,
                items: b.items,
            }),
            CmdKind::Exec => {
                let mut items = b.items;
                let Some(item) = items.pop() else {
                    return Err(self.missing("Item", open));
                };
                Command::Exec(Exec {
                    cmd_id: b.cmd_id,
                    no_resp: b.no_resp,
                    cred: b.cred,
                    meta: b.meta,
                    correlator: b.correlator,
                    item,
                })
            }
            CmdKind::Results => {
                let Some(cmd_ref) = b.cmd_ref else {
                    return Err(self.missing("CmdRef", open));
                };
                let mut target_refs = b.target_refs;
                let mut source_refs = b.source_refs;
                Command::Results(Results {
                    cmd_id: b.cmd_id,
                    msg_ref: b.msg_ref,
                    cmd_ref,
                    meta: b.meta,
                    target_ref: target_refs.pop(),
                    source_ref: source_refs.pop(),
                    items: b.items,
                })
            }
            CmdKind::Status => {
                self.require(open, &[El::MsgRef, El::CmdName, El::Data])?;
                let (Some(msg_ref), Some(cmd), Some(data)) = (b.msg_ref, b.cmd, b.code) else {
                    return Err(self.internal(at));
                };
                // The Status of a SyncHdr refers to command 0; some senders omit it.
                let cmd_ref = match b.cmd_ref {
                    Some(r) => r,
                    None if cmd == "SyncHdr" => 0,
                    None => return Err(self.missing("CmdRef", open)),
                };
                Command::Status(Status {
                    cmd_id: b.cmd_id,
                    msg_ref,
                    cmd_ref,
                    cmd,
                    target_refs: b.target_refs,
                    source_refs: b.source_refs,
                    cred: b.cred,
                    chal: b.chal,
                    data,
                    items: b.items,
                })
            }
        };
        match self.top(at)? {
            Build::Body(body) => body.commands.push(command),
            Build::Cmd(parent) => parent.commands.push(command),
            _ => return Err(self.internal(at)),
        }
        Ok(())
    }

    /// The content kind of the innermost open element, with its name and start.
    fn current(&self) -> Option<(Content, El, usize)> {
        self.stack.last().map(|o| (o.el.content(), o.el, o.at))
    }

    /// Appends `piece` to the open text element (or `Item/Data`), or checks that it is
    /// whitespace where only elements are allowed. `raw` is the piece as it appears in the
    /// input, for the error message and the size check.
    fn push_text(&mut self, raw: &str, at: usize, piece: &str) -> Result<(), CodecError> {
        match self.current() {
            None => {
                if raw.bytes().all(is_xml_ws) {
                    Ok(())
                } else if self.root_done {
                    Err(self.xml_err(at, "text after the root element"))
                } else {
                    Err(self.xml_err(at, "text before the root element"))
                }
            }
            Some((Content::Text | Content::Raw, el, start)) => {
                if let Some(raw) = &self.raw
                    && raw.has_elements
                {
                    // Inline XML: the markup is taken from the input at the end.
                    return Ok(());
                }
                let len = self.text.len().saturating_add(piece.len());
                if len > self.limits.max_text_len {
                    return Err(CodecError::TextTooLarge {
                        pos: self.pos(start),
                        element: el.name().to_owned(),
                        len,
                        limit: self.limits.max_text_len,
                    });
                }
                self.text.push_str(piece);
                Ok(())
            }
            Some((Content::Elements | Content::Empty, el, _)) => {
                if raw.bytes().all(is_xml_ws) {
                    Ok(())
                } else {
                    Err(CodecError::UnexpectedText {
                        pos: self.pos(at.saturating_add(leading_ws_len(raw))),
                        parent: el.name().to_owned(),
                        text: shorten(trim_xml(raw)),
                    })
                }
            }
        }
    }

    fn text(&mut self, t: &BytesText<'_>, at: usize) -> Result<(), CodecError> {
        let raw: &str = t;
        if matches!(self.current(), Some((Content::Text | Content::Raw, ..))) {
            let content = t.xml10_content();
            self.push_text(raw, at, &content)
        } else {
            self.push_text(raw, at, "")
        }
    }

    fn cdata(&mut self, c: &BytesCData<'_>, at: usize) -> Result<(), CodecError> {
        let raw: &str = c;
        match self.current() {
            Some((Content::Text | Content::Raw, ..)) => {
                let content = c.xml10_content();
                self.push_text(raw, at, &content)
            }
            _ if raw.is_empty() => Ok(()),
            None => Err(self.xml_err(at, "CDATA outside the root element")),
            Some((_, el, _)) => Err(CodecError::UnexpectedText {
                pos: self.pos(at),
                parent: el.name().to_owned(),
                text: shorten(raw),
            }),
        }
    }

    fn reference(&mut self, r: &BytesRef<'_>, at: usize) -> Result<(), CodecError> {
        let name: &str = r;
        let ch = resolve_reference(r).map_err(|message| self.xml_err(at, message))?;
        let mut utf8 = [0u8; 4];
        let s: &str = ch.encode_utf8(&mut utf8);
        match self.current() {
            Some((Content::Text | Content::Raw, ..)) => self.push_text(s, at, s),
            None => Err(self.xml_err(at, "reference outside the root element")),
            Some((_, el, _)) => Err(CodecError::UnexpectedText {
                pos: self.pos(at),
                parent: el.name().to_owned(),
                text: format!("&{};", shorten(name)),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// A rough output size, to reserve once.
fn size_hint(msg: &SyncMl) -> usize {
    fn commands(cmds: &[Command]) -> usize {
        cmds.iter()
            .map(|c| match c {
                Command::Atomic(c) | Command::Sequence(c) => 96 + commands(&c.commands),
                c => {
                    160 + c
                        .items()
                        .iter()
                        .map(|i| 160 + i.data.as_ref().map_or(0, |d| d.as_text().len()))
                        .sum::<usize>()
                }
            })
            .sum()
    }
    512 + commands(&msg.body.commands)
}

/// The SyncML element methods of the shared writer.
impl<O: Sink> XmlWriter<'_, O> {
    fn flag(&mut self, depth: usize, tag: &str, on: bool) {
        if on {
            self.indent(depth);
            self.out.put("<");
            self.out.put(tag);
            self.out.put("/>");
        }
    }

    fn num_el(&mut self, depth: usize, tag: &str, n: u64) {
        self.open(depth, tag);
        put_number(self.out, n);
        self.end_tag(tag);
    }

    fn message(&mut self, msg: &SyncMl) {
        self.out.put("<SyncML xmlns=\"");
        self.out.put(msg.hdr.version.namespace());
        self.out.put("\">");
        self.hdr(1, &msg.hdr);
        self.open(1, "SyncBody");
        for cmd in &msg.body.commands {
            self.command(2, cmd);
        }
        self.flag(2, "Final", msg.body.is_final);
        self.close(1, "SyncBody");
        self.close(0, "SyncML");
        if self.pretty {
            self.out.put("\n");
        }
    }

    fn hdr(&mut self, depth: usize, h: &SyncHdr) {
        self.open(depth, "SyncHdr");
        let d = depth + 1;
        self.text_el(d, "VerDTD", &h.ver_dtd);
        self.text_el(d, "VerProto", &h.ver_proto);
        self.text_el(d, "SessionID", &h.session_id);
        self.num_el(d, "MsgID", u64::from(h.msg_id));
        self.loc(d, "Target", &h.target);
        self.loc(d, "Source", &h.source);
        self.opt_text_el(d, "RespURI", &h.resp_uri);
        self.flag(d, "NoResp", h.no_resp);
        if let Some(cred) = &h.cred {
            self.cred(d, cred);
        }
        if let Some(meta) = &h.meta {
            self.meta(d, meta);
        }
        self.close(depth, "SyncHdr");
    }

    fn loc(&mut self, depth: usize, tag: &str, loc: &LocRef) {
        self.open(depth, tag);
        self.text_el(depth + 1, "LocURI", &loc.loc_uri);
        self.opt_text_el(depth + 1, "LocName", &loc.loc_name);
        self.close(depth, tag);
    }

    fn cred(&mut self, depth: usize, cred: &Cred) {
        self.open(depth, "Cred");
        if !cred.meta.is_empty() {
            self.meta(depth + 1, &cred.meta);
        }
        self.text_el(depth + 1, "Data", &cred.data);
        self.close(depth, "Cred");
    }

    fn meta(&mut self, depth: usize, meta: &Meta) {
        if meta.is_empty() {
            self.flag(depth, "Meta", true);
            return;
        }
        self.open(depth, "Meta");
        let d = depth + 1;
        let texts = [
            ("Format", &meta.format),
            ("Type", &meta.ty),
            ("Mark", &meta.mark),
        ];
        for (tag, value) in texts {
            if let Some(v) = value {
                self.metinf(d, tag, |w| escape_into(w.out, v));
            }
        }
        if let Some(n) = meta.size {
            self.metinf(d, "Size", |w| put_number(w.out, n));
        }
        if let Some(v) = &meta.next_nonce {
            self.metinf(d, "NextNonce", |w| escape_into(w.out, v));
        }
        if let Some(v) = &meta.version {
            self.metinf(d, "Version", |w| escape_into(w.out, v));
        }
        if let Some(n) = meta.max_msg_size {
            self.metinf(d, "MaxMsgSize", |w| put_number(w.out, n));
        }
        if let Some(n) = meta.max_obj_size {
            self.metinf(d, "MaxObjSize", |w| put_number(w.out, n));
        }
        self.close(depth, "Meta");
    }

    fn metinf(&mut self, depth: usize, tag: &str, content: impl FnOnce(&mut Self)) {
        self.indent(depth);
        self.out.put("<");
        self.out.put(tag);
        self.out.put(" xmlns=\"");
        self.out.put(NS_METINF);
        self.out.put("\">");
        content(self);
        self.end_tag(tag);
    }

    fn item(&mut self, depth: usize, item: &Item) {
        if *item == Item::default() {
            self.flag(depth, "Item", true);
            return;
        }
        self.open(depth, "Item");
        let d = depth + 1;
        if let Some(t) = &item.target {
            self.loc(d, "Target", t);
        }
        if let Some(s) = &item.source {
            self.loc(d, "Source", s);
        }
        if let Some(m) = &item.meta {
            self.meta(d, m);
        }
        match &item.data {
            Some(Data::Text(t)) => self.text_el(d, "Data", t),
            Some(Data::Xml(x)) => {
                self.open(d, "Data");
                self.out.put(x);
                self.end_tag("Data");
            }
            None => {}
        }
        self.flag(d, "MoreData", item.more_data);
        self.close(depth, "Item");
    }

    fn items(&mut self, depth: usize, items: &[Item]) {
        for item in items {
            self.item(depth, item);
        }
    }

    fn command(&mut self, depth: usize, cmd: &Command) {
        let tag = cmd.name();
        self.open(depth, tag);
        let d = depth + 1;
        self.num_el(d, "CmdID", u64::from(cmd.cmd_id()));
        match cmd {
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Get(c)
            | Command::Copy(c) => {
                self.flag(d, "NoResp", c.no_resp);
                if let Some(cred) = &c.cred {
                    self.cred(d, cred);
                }
                if let Some(m) = &c.meta {
                    self.meta(d, m);
                }
                self.items(d, &c.items);
            }
            Command::Alert(c) => {
                self.flag(d, "NoResp", c.no_resp);
                if let Some(cred) = &c.cred {
                    self.cred(d, cred);
                }
                self.opt_text_el(d, "Data", &c.data);
                self.opt_text_el(d, "Correlator", &c.correlator);
                self.items(d, &c.items);
            }
            Command::Exec(c) => {
                self.flag(d, "NoResp", c.no_resp);
                if let Some(cred) = &c.cred {
                    self.cred(d, cred);
                }
                if let Some(m) = &c.meta {
                    self.meta(d, m);
                }
                self.opt_text_el(d, "Correlator", &c.correlator);
                self.item(d, &c.item);
            }
            Command::Atomic(c) | Command::Sequence(c) => {
                self.flag(d, "NoResp", c.no_resp);
                if let Some(m) = &c.meta {
                    self.meta(d, m);
                }
                for nested in &c.commands {
                    self.command(d, nested);
                }
            }
            Command::Results(c) => {
                if let Some(r) = c.msg_ref {
                    self.num_el(d, "MsgRef", u64::from(r));
                }
                self.num_el(d, "CmdRef", u64::from(c.cmd_ref));
                if let Some(m) = &c.meta {
                    self.meta(d, m);
                }
                self.opt_text_el(d, "TargetRef", &c.target_ref);
                self.opt_text_el(d, "SourceRef", &c.source_ref);
                self.items(d, &c.items);
            }
            Command::Status(c) => {
                self.num_el(d, "MsgRef", u64::from(c.msg_ref));
                self.num_el(d, "CmdRef", u64::from(c.cmd_ref));
                self.text_el(d, "Cmd", &c.cmd);
                for r in &c.target_refs {
                    self.text_el(d, "TargetRef", r);
                }
                for r in &c.source_refs {
                    self.text_el(d, "SourceRef", r);
                }
                if let Some(cred) = &c.cred {
                    self.cred(d, cred);
                }
                if let Some(chal) = &c.chal {
                    self.open(d, "Chal");
                    self.meta(d + 1, &chal.meta);
                    self.close(d, "Chal");
                }
                self.num_el(d, "Data", u64::from(c.data.0));
                self.items(d, &c.items);
            }
        }
        self.close(depth, tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: &str = "<SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>\
        <SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>t</LocURI></Target>\
        <Source><LocURI>s</LocURI></Source></SyncHdr>";

    fn with_body(body: &str) -> String {
        format!("<SyncML xmlns='SYNCML:SYNCML1.2'>{HDR}<SyncBody>{body}</SyncBody></SyncML>")
    }

    fn parse(s: &str) -> Result<SyncMl, CodecError> {
        decode(s.as_bytes())
    }

    fn round_trip(msg: &SyncMl) {
        assert_eq!(decode(&encode(msg)).as_ref(), Ok(msg));
        assert_eq!(decode(encode_pretty(msg).as_bytes()).as_ref(), Ok(msg));
    }

    fn line_col(e: &CodecError) -> (usize, usize) {
        let p = e.position().expect("position");
        (p.line, p.column)
    }

    fn sample() -> SyncMl {
        SyncMl {
            hdr: SyncHdr {
                session_id: "1F".into(),
                msg_id: 3,
                target: LocRef::new("IMEI:1"),
                source: LocRef {
                    loc_uri: "http://srv/dm".into(),
                    loc_name: Some("srv".into()),
                },
                cred: Some(Cred {
                    meta: Meta::format_type("b64", "syncml:auth-md5"),
                    data: "Zz6E==".into(),
                }),
                meta: Some(Meta {
                    max_msg_size: Some(16384),
                    ..Meta::default()
                }),
                ..SyncHdr::default()
            },
            body: SyncBody {
                commands: vec![
                    Command::Status(Status {
                        target_refs: vec!["IMEI:1".into()],
                        chal: Some(Chal {
                            meta: Meta {
                                next_nonce: Some("bm9uY2U=".into()),
                                ..Meta::format_type("b64", "syncml:auth-md5")
                            },
                        }),
                        ..Status::new(1, 2, 0, "SyncHdr", StatusCode::UNAUTHORIZED)
                    }),
                    Command::Replace(ItemCmd {
                        cmd_id: 2,
                        items: vec![Item {
                            target: Some(LocRef::new("./A&B")),
                            data: Some(Data::Text(" x<y>\r\n\u{1} ".into())),
                            more_data: true,
                            ..Item::default()
                        }],
                        ..ItemCmd::default()
                    }),
                ],
                is_final: true,
            },
        }
    }

    #[test]
    fn writer_output_shape() {
        let msg = sample();
        let compact = String::from_utf8(encode(&msg)).unwrap();
        assert_eq!(
            compact,
            "<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>\
             <SessionID>1F</SessionID><MsgID>3</MsgID><Target><LocURI>IMEI:1</LocURI></Target>\
             <Source><LocURI>http://srv/dm</LocURI><LocName>srv</LocName></Source>\
             <Cred><Meta><Format xmlns=\"syncml:metinf\">b64</Format><Type xmlns=\"syncml:metinf\">syncml:auth-md5</Type></Meta>\
             <Data>Zz6E==</Data></Cred><Meta><MaxMsgSize xmlns=\"syncml:metinf\">16384</MaxMsgSize></Meta></SyncHdr>\
             <SyncBody><Status><CmdID>1</CmdID><MsgRef>2</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd>\
             <TargetRef>IMEI:1</TargetRef><Chal><Meta><Format xmlns=\"syncml:metinf\">b64</Format>\
             <Type xmlns=\"syncml:metinf\">syncml:auth-md5</Type><NextNonce xmlns=\"syncml:metinf\">bm9uY2U=</NextNonce></Meta></Chal>\
             <Data>401</Data></Status><Replace><CmdID>2</CmdID><Item><Target><LocURI>./A&amp;B</LocURI></Target>\
             <Data> x&lt;y&gt;&#13;\n&#1; </Data><MoreData/></Item></Replace><Final/></SyncBody></SyncML>"
        );
        let pretty = encode_pretty(&msg);
        assert!(pretty.starts_with(
            "<SyncML xmlns=\"SYNCML:SYNCML1.2\">\n  <SyncHdr>\n    <VerDTD>1.2</VerDTD>\n"
        ));
        assert!(
            pretty
                .contains("\n        <Data> x&lt;y&gt;&#13;\n&#1; </Data>\n        <MoreData/>\n")
        );
        assert!(pretty.ends_with("    <Final/>\n  </SyncBody>\n</SyncML>\n"));
        round_trip(&msg);

        let mut v11 = msg;
        v11.hdr.version = SyncMlVersion::V1_1;
        assert!(encode_pretty(&v11).starts_with("<SyncML xmlns=\"SYNCML:SYNCML1.1\">"));
        round_trip(&v11);
    }

    #[test]
    fn namespaces() {
        // No namespace: VerDTD gives the version.
        let s = format!(
            "<SyncML>{}<SyncBody/></SyncML>",
            HDR.replace(">1.2<", ">1.1<")
        );
        assert_eq!(parse(&s).unwrap().hdr.version, SyncMlVersion::V1_1);
        let s = format!(
            "<SyncML>{}<SyncBody/></SyncML>",
            HDR.replace(">1.2<", ">3.0<")
        );
        assert!(matches!(
            parse(&s),
            Err(CodecError::BadValue { what: "VerDTD", .. })
        ));
        // Case-insensitive, prefixed, metinf by prefix or default, or in the SyncML namespace.
        let s = format!(
            "<s:SyncML xmlns:s='syncml:syncml1.2' xmlns:m='syncml:metinf'>{}<s:SyncBody>\
             <s:Get><s:CmdID>1</s:CmdID><s:Meta><m:Type>a</m:Type><s:Format>chr</s:Format>\
             <Size xmlns='SYNCML:METINF'>7</Size></s:Meta></s:Get></s:SyncBody></s:SyncML>",
            HDR.replace('<', "<s:").replace("<s:/", "</s:")
        );
        let m = parse(&s).unwrap();
        assert_eq!(m.hdr.version, SyncMlVersion::V1_2);
        let Command::Get(get) = &m.body.commands[0] else {
            panic!("Get")
        };
        assert_eq!(
            get.meta,
            Some(Meta {
                size: Some(7),
                ..Meta::format_type("chr", "a")
            })
        );
        // Wrong root namespace, metinf on a command, an unknown namespace, an undeclared prefix.
        let e = parse(&format!(
            "<SyncML xmlns='SYNCML:SYNCML2.0'>{HDR}<SyncBody/></SyncML>"
        ))
        .unwrap_err();
        assert!(
            matches!(&e, CodecError::UnknownNamespace { ns, element, .. } if ns == "SYNCML:SYNCML2.0" && element == "SyncML"),
            "{e}"
        );
        assert_eq!(line_col(&e), (1, 1));
        let e = parse(&with_body(
            "<Get xmlns='syncml:metinf'><CmdID>1</CmdID></Get>",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, CodecError::UnknownNamespace { ns, .. } if ns == "syncml:metinf"),
            "{e}"
        );
        let e = parse(&with_body("<Get><CmdID xmlns='urn:x'>1</CmdID></Get>")).unwrap_err();
        assert!(
            matches!(&e, CodecError::UnknownNamespace { ns, .. } if ns == "urn:x"),
            "{e}"
        );
        let e = parse(&with_body("<x:Get><CmdID>1</CmdID></x:Get>")).unwrap_err();
        assert!(
            matches!(&e, CodecError::Xml { message, .. } if message.contains("`x`")),
            "{e}"
        );
        // Other namespaces inside inline XML are not checked.
        let m = parse(&with_body(
            "<Add><CmdID>1</CmdID><Item><Data><x:a xmlns:x='urn:y'>1</x:a></Data></Item></Add>",
        ))
        .unwrap();
        assert_eq!(
            m.body.commands[0].items()[0].data,
            Some(Data::Xml("<x:a xmlns:x='urn:y'>1</x:a>".into()))
        );
    }

    #[test]
    fn lenient_forms() {
        let s = format!(
            "\u{FEFF}<?xml version='1.0' encoding='UTF-8'?>\n<!DOCTYPE SyncML PUBLIC '-//SYNCML//DTD SyncML 1.2//EN' 'x.dtd'>\n\
             <!-- c --><SyncML xmlns='SYNCML:SYNCML1.2'>{}<SyncBody>\
             <Get><Item><Target><LocURI> ./a </LocURI></Target></Item><CmdID> 7 </CmdID><NoResp></NoResp></Get>\
             <Status><Data>\n200\n</Data><Cmd>Get</Cmd><CmdRef>7</CmdRef><MsgRef>1</MsgRef><CmdID>8</CmdID>\
             <Item><Data><![CDATA[<raw>]]> &amp;&#x41;</Data></Item></Status>\
             <Final></Final></SyncBody></SyncML>\n<!-- after -->\n",
            HDR.replace(
                "</SyncHdr>",
                "<NoResp/><RespURI>http://x/?a=1&amp;b=2</RespURI></SyncHdr>"
            )
        );
        let m = parse(&s).unwrap();
        assert!(m.hdr.no_resp && m.body.is_final);
        assert_eq!(m.hdr.resp_uri.as_deref(), Some("http://x/?a=1&b=2"));
        let Command::Get(get) = &m.body.commands[0] else {
            panic!("Get")
        };
        assert!(get.no_resp);
        assert_eq!((get.cmd_id, get.items[0].target_uri()), (7, Some("./a")));
        let Command::Status(st) = &m.body.commands[1] else {
            panic!("Status")
        };
        assert_eq!(
            (st.cmd_id, st.msg_ref, st.cmd_ref, st.data),
            (8, 1, 7, StatusCode::OK)
        );
        assert_eq!(st.items[0].data_text(), Some("<raw> &A"));
        round_trip(&m);

        // Cred at command level, Correlator, Exec, Results.
        let m = parse(&with_body(
            "<Exec><CmdID>1</CmdID><Cred><Data>x</Data></Cred><Correlator> c1 </Correlator>\
             <Item><Target><LocURI>./FUMO/DownloadAndUpdate</LocURI></Target></Item></Exec>\
             <Results><CmdID>2</CmdID><CmdRef>4</CmdRef><SourceRef>./a</SourceRef><Item/></Results>",
        ))
        .unwrap();
        let Command::Exec(exec) = &m.body.commands[0] else {
            panic!("Exec")
        };
        assert_eq!(exec.cred.as_ref().map(|c| c.data.as_str()), Some("x"));
        assert_eq!(exec.correlator.as_deref(), Some("c1"));
        let Command::Results(r) = &m.body.commands[1] else {
            panic!("Results")
        };
        assert_eq!(
            (r.msg_ref, r.cmd_ref, r.source_ref.as_deref()),
            (None, 4, Some("./a"))
        );
        round_trip(&m);
    }

    #[test]
    fn grammar_errors() {
        let err = |body: &str| parse(&with_body(body)).unwrap_err();
        let e = err(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><Cmd>Get</Cmd><Data>200</Data></Status>",
        );
        assert!(
            matches!(&e, CodecError::MissingElement { element, parent, .. } if element == "CmdRef" && parent == "Status"),
            "{e}"
        );
        let e = err(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>OK</Data></Status>",
        );
        assert!(
            matches!(&e, CodecError::BadValue { what: "status code", value, .. } if value == "OK"),
            "{e}"
        );
        let e = err(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>70000</Data></Status>",
        );
        assert!(matches!(&e, CodecError::BadValue { .. }), "{e}");
        let e = err("<Exec><CmdID>1</CmdID></Exec>");
        assert!(
            matches!(&e, CodecError::MissingElement { element, .. } if element == "Item"),
            "{e}"
        );
        let e = err("<Exec><CmdID>1</CmdID><Item/><Item/></Exec>");
        assert!(
            matches!(&e, CodecError::DuplicateElement { element, .. } if element == "Item"),
            "{e}"
        );
        let e = err("<Results><CmdID>1</CmdID><Item/></Results>");
        assert!(
            matches!(&e, CodecError::MissingElement { element, .. } if element == "CmdRef"),
            "{e}"
        );
        let e = err("<Atomic><CmdID>1</CmdID><Status/></Atomic>");
        assert!(
            matches!(&e, CodecError::UnexpectedElement { element, parent, .. } if element == "Status" && parent == "Atomic"),
            "{e}"
        );
        let e = err("<Get><CmdID>1</CmdID><Data>x</Data></Get>");
        assert!(
            matches!(&e, CodecError::UnexpectedElement { element, parent, .. } if element == "Data" && parent == "Get"),
            "{e}"
        );
        let e = err("<Get><CmdID>1</CmdID><Meta><EMI>x</EMI></Meta></Get>");
        assert!(
            matches!(&e, CodecError::UnexpectedElement { element, parent, .. } if element == "EMI" && parent == "Meta"),
            "{e}"
        );
        let e = err("<Get><CmdID>1</CmdID><Meta><MaxObjSize>-1</MaxObjSize></Meta></Get>");
        assert!(
            matches!(
                &e,
                CodecError::BadValue {
                    what: "MaxObjSize",
                    ..
                }
            ),
            "{e}"
        );
        let e = err("<Get><CmdID>+1</CmdID></Get>");
        assert!(
            matches!(&e, CodecError::BadValue { what: "CmdID", .. }),
            "{e}"
        );
        let e = err("<Get><CmdID>4294967296</CmdID></Get>");
        assert!(
            matches!(&e, CodecError::BadValue { what: "CmdID", .. }),
            "{e}"
        );
        let e = err("<Alert><CmdID>1</CmdID><Data>1100<b/></Data></Alert>");
        assert!(
            matches!(&e, CodecError::UnexpectedElement { element, .. } if element == "b"),
            "{e}"
        );
        let e = err("<Get><CmdID>1</CmdID>\n  oops<Item/></Get>");
        assert!(
            matches!(&e, CodecError::UnexpectedText { parent, text, .. } if parent == "Get" && text == "oops"),
            "{e}"
        );
        assert_eq!(line_col(&e).0, 2);
        let e = err("<Get><CmdID>1</CmdID><![CDATA[x]]></Get>");
        assert!(matches!(&e, CodecError::UnexpectedText { .. }), "{e}");
        let e = err("<Final>yes</Final>");
        assert!(
            matches!(&e, CodecError::UnexpectedText { parent, .. } if parent == "Final"),
            "{e}"
        );
        let e = err("<Get><CmdID>1</CmdID><Item><Target/></Item></Get>");
        assert!(
            matches!(&e, CodecError::MissingElement { element, parent, .. } if element == "LocURI" && parent == "Target"),
            "{e}"
        );
        let e = err(
            "<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Chal/><Data>401</Data></Status>",
        );
        assert!(
            matches!(&e, CodecError::MissingElement { element, parent, .. } if element == "Meta" && parent == "Chal"),
            "{e}"
        );
        let e = err("<Alert><CmdID>1</CmdID><Data>&nbsp;</Data></Alert>");
        assert!(
            matches!(&e, CodecError::Xml { message, .. } if message.contains("nbsp")),
            "{e}"
        );
        let e = err("<Alert><CmdID>1</CmdID><Data>&#0;</Data></Alert>");
        assert!(matches!(&e, CodecError::Xml { .. }), "{e}");
        let e = err("<Get><CmdID>1</CmdID></Replace>");
        assert!(matches!(&e, CodecError::Xml { .. }), "{e}");

        // Header and root.
        let e = parse(&with_body("").replace("<MsgID>1</MsgID>", "")).unwrap_err();
        assert!(
            matches!(&e, CodecError::MissingElement { element, parent, .. } if element == "MsgID" && parent == "SyncHdr"),
            "{e}"
        );
        let e = parse("<SyncML><SyncBody/></SyncML>").unwrap_err();
        assert!(
            matches!(&e, CodecError::MissingElement { element, .. } if element == "SyncHdr"),
            "{e}"
        );
        let e = parse(&format!("{}<SyncML/>", with_body(""))).unwrap_err();
        assert!(
            matches!(&e, CodecError::Xml { message, .. } if message.contains("after the root")),
            "{e}"
        );
        let e = parse(&format!("{}x", with_body(""))).unwrap_err();
        assert!(matches!(&e, CodecError::Xml { .. }), "{e}");
        let e = parse("<MgmtTree/>").unwrap_err();
        assert!(
            matches!(&e, CodecError::NotSyncMl { reason } if reason.contains("MgmtTree")),
            "{e}"
        );
        let e = parse("<SyncML><SyncHdr>").unwrap_err();
        assert!(
            matches!(&e, CodecError::Xml { message, .. } if message.contains("not closed")),
            "{e}"
        );
        assert_eq!(
            decode(b"\x03\x01\x6a\x00"),
            Err(CodecError::NotSyncMl {
                reason: "the input starts like a WBXML document; this decoder reads XML only"
                    .into()
            })
        );
        let e = parse("<SyncML a=1/>").unwrap_err();
        assert_eq!(line_col(&e), (1, 11), "{e}");
    }

    #[test]
    fn error_positions_and_messages() {
        let s = with_body("\n<Get>\n  <CmdID>1</CmdID>\n  <CmdID>2</CmdID>\n</Get>");
        let e = parse(&s).unwrap_err();
        assert_eq!(line_col(&e), (4, 3));
        assert_eq!(
            e.to_string(),
            "duplicate element <CmdID> in <Get> at line 4, column 3"
        );
        let e = parse(&with_body("\n<Sync><CmdID>1</CmdID></Sync>")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unexpected element <Sync> in <SyncBody> at line 2, column 1"
        );
        assert_eq!(
            CodecError::TooLarge { len: 5, limit: 4 }.to_string(),
            "the input is 5 bytes, over the limit of 4"
        );
        assert_eq!(CodecError::Empty.position(), None);
    }

    #[test]
    fn inline_xml_data() {
        let m = parse(&with_body(
            "<Add><CmdID>1</CmdID><Item><Data>\n  <MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD>\
             <Node><NodeName>a</NodeName><Value>x &amp; y</Value></Node></MgmtTree>\n</Data></Item>\
             <Item><Data>  text  </Data></Item><Item><Data/></Item></Add>",
        ))
        .unwrap();
        let items = m.body.commands[0].items();
        assert_eq!(
            items[0].data,
            Some(Data::Xml(
                "<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD><Node><NodeName>a</NodeName>\
                 <Value>x &amp; y</Value></Node></MgmtTree>"
                    .into()
            ))
        );
        assert_eq!(items[1].data, Some(Data::Text("  text  ".into())));
        assert_eq!(items[2].data, Some(Data::Text(String::new())));
        round_trip(&m);
        let doc = crate::dm::tnds::TndsDocument::from_xml(
            items[0]
                .data
                .as_ref()
                .map(Data::as_text)
                .unwrap_or_default()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(doc.nodes[0].value.as_deref(), Some("x & y"));
    }

    #[test]
    fn message_helpers() {
        let m = sample();
        assert_eq!(
            m.hdr_status().map(|s| s.data),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(m.statuses().count(), 1);
        assert!(m.alert_codes().is_empty());
        let c = &m.body.commands[1];
        assert_eq!((c.name(), c.cmd_id(), c.no_resp()), ("Replace", 2, false));
        assert_eq!(c.items()[0].target_uri(), Some("./A&B"));
        assert_eq!(c.items()[0].source_uri(), None);
        assert_eq!(Data::Xml("<a/>".into()).as_text(), "<a/>");
        assert_eq!(
            SyncMlVersion::from_namespace("syncml:SYNCML1.1"),
            Some(SyncMlVersion::V1_1)
        );
        assert_eq!(SyncMlVersion::V1_2.ver_dtd(), "1.2");
        let exec = Command::Exec(Exec::default());
        assert_eq!(exec.items().len(), 1);
    }

    #[test]
    #[ignore]
    fn perf_probe() {
        let one = sample();
        let mut msg = one.clone();
        for i in 0..50_000 {
            msg.body.commands.push(Command::Replace(ItemCmd {
                cmd_id: i,
                meta: Some(Meta::format_type("chr", "text/plain")),
                items: vec![Item {
                    target: Some(LocRef::new(format!("./DevDetail/Ext/Node{i}"))),
                    data: Some(Data::Text("some value & more text for the leaf".into())),
                    ..Item::default()
                }],
                ..ItemCmd::default()
            }));
        }
        let t = std::time::Instant::now();
        let out = encode(&msg);
        let w = t.elapsed();
        let t = std::time::Instant::now();
        let pretty = encode_pretty(&msg);
        let p = t.elapsed();
        let t = std::time::Instant::now();
        let limits = DecodeLimits {
            max_commands: 100_000,
            ..DecodeLimits::default()
        };
        let back = decode_with(&out, &limits).unwrap();
        let r = t.elapsed();
        let mb = out.len() as f64 / 1e6;
        eprintln!(
            "{mb:.1} MB: encode {:.0} MB/s, pretty {:.0} MB/s, decode {:.0} MB/s",
            mb / w.as_secs_f64(),
            pretty.len() as f64 / 1e6 / p.as_secs_f64(),
            mb / r.as_secs_f64()
        );
        assert_eq!(back, msg);
    }
}
