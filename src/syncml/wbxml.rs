//! The WBXML codec for SyncML DM messages (`application/vnd.syncml.dm+wbxml`), the encoding
//! most deployed DM clients use: [`decode`] reads a WBXML message into the
//! [`crate::syncml::message`] model and [`encode`] writes one.
//!
//! # What is read
//!
//! * WBXML 1.0 to 1.3 headers (version byte `0x00`..`0x03`; 1.0 has no charset field).
//! * Public ids: `0x1201` (SyncML 1.2), `0x0FD3` (SyncML 1.1, which real DM 1.2 clients send
//!   while carrying `VerProto` `DM/1.2`), the same two as literal strings from the string
//!   table (`-//SYNCML//DTD SyncML 1.2//EN`, ...), and `0x01` (unknown: then `VerDTD` gives
//!   the version, as a missing namespace does in XML). Any other public id is refused.
//! * Charset UTF-8 (MIBenum 106), US-ASCII (3) or unspecified (0, read as UTF-8).
//! * Code page 0 (SyncML, `SYNCML:SYNCML1.2`) and code page 1 (MetInf, `syncml:metinf`), with
//!   the tag tokens of the SyncML Representation Protocol 1.2 WBXML appendix (the same as
//!   libwbxml's `sv_syncml_syncml12_tag_table`); `SWITCH_PAGE`, `END`, `STR_I`, `STR_T` (string
//!   table references, bounds-checked), `ENTITY`, `OPAQUE` and `LITERAL` tags (reported by name
//!   when they are not allowed where they stand). Attributes are parsed and ignored, as the XML
//!   decoder ignores non-namespace attributes. `EXT_*` and `PI` tokens are refused.
//!
//! The grammar is the XML decoder's ([`crate::syncml::xml`]): the same elements are allowed,
//! required, single-valued, trimmed and parsed as numbers, so a WBXML message and its XML
//! rendering decode to the same [`SyncMl`]. Text is taken as XML would take it: line ends in
//! strings and opaque data are normalised (`\r\n` and `\r` become `\n`), while an `ENTITY`
//! (a character reference) is taken literally.
//!
//! # `Item/Data`
//!
//! * Strings and entities give [`Data::Text`].
//! * A single `OPAQUE` value is looked at: an embedded WBXML TNDS document (public id
//!   `-//OMA//DTD-DM-DDF 1.2//EN`, code page 2 of OMA DM TNDS, as real devices and libwbxml
//!   send it) is transcoded to XML and gives [`Data::Xml`]; UTF-8 text that is well-formed XML
//!   markup holding at least one element (a TNDS `MgmtTree` sent as XML bytes, as [`encode`]
//!   writes it) gives [`Data::Xml`] with the trimmed markup; any other UTF-8 gives
//!   [`Data::Text`]. When embedded WBXML TNDS is transcoded, a `Type` of
//!   `application/vnd.syncml.dmtnds+wbxml` on its item (or its command) becomes
//!   `application/vnd.syncml.dmtnds+xml`, which now describes the data (libwbxml does the
//!   same in both directions). Opaque bytes that are not UTF-8 are refused ([`WbxmlError::NotUtf8`]): the
//!   model holds text only, and binary data in DM travels base64-encoded (`Format` `b64`).
//! * Child elements (inline TNDS on code page 2, or any tag) give [`Data::Xml`], written as XML
//!   markup with the namespace of the code page on the outermost element.
//!
//! # What is written
//!
//! [`encode`] writes WBXML 1.2, the public id of the message's version (`0x1201` or `0x0FD3`),
//! UTF-8, an empty string table, every element as a token on page 0 or 1, text as inline
//! strings (`STR_I`) with `\r` and other control characters but tab and newline written as
//! `ENTITY` (as the XML writer writes `&#13;`), numbers as decimal strings, empty text as an
//! element without content, and [`Data::Xml`] as `OPAQUE` holding the markup's UTF-8 bytes
//! (an XML TNDS document, with the item's `Type` left as it is, normally
//! `application/vnd.syncml.dmtnds+xml`). A SyncML 1.1 message carrying `Correlator` (a 1.2
//! tag missing from the 1.1 code page) names it as a `LITERAL` tag from the string table.
//! So `decode(&encode(m)) == m` for every message the XML codec round-trips (and text holding
//! NUL round-trips too).
//!
//! # Safety on hostile input
//!
//! The decoder never panics and never allocates more than the input and the limits allow:
//! every length (string table, opaque data, string-table index) is checked against the
//! remaining input before use, nesting is an explicit stack bounded by
//! [`DecodeLimits::max_depth`], and text, command count and input size are bounded by the
//! other [`DecodeLimits`]. Every error says at which byte and why.

use std::borrow::Cow;

use quick_xml::events::Event;

use super::build::{BuildError, Builder, Content, El, child_of};
use super::message::{
    Command, Cred, Data, Item, LocRef, Meta, NS_METINF, SyncHdr, SyncMl, SyncMlVersion,
};
use super::xml::{self, CodecError, DecodeLimits};
#[cfg(test)]
use super::{
    StatusCode,
    message::{Chal, ItemCmd, Status, SyncBody},
};
use crate::dm::tnds::{self, TndsDocument, TndsError};

/// Numeric public id of SyncML 1.2 (`-//SYNCML//DTD SyncML 1.2//EN`).
pub const PUBLIC_ID_SYNCML_1_2: u32 = 0x1201;
/// Numeric public id of SyncML 1.1 (`-//SYNCML//DTD SyncML 1.1//EN`).
pub const PUBLIC_ID_SYNCML_1_1: u32 = 0x0FD3;
/// The WBXML "unknown or missing public identifier" value.
pub const PUBLIC_ID_UNKNOWN: u32 = 0x01;
/// The formal public identifier of SyncML 1.2.
pub const FPI_SYNCML_1_2: &str = "-//SYNCML//DTD SyncML 1.2//EN";
/// The formal public identifier of SyncML 1.1.
pub const FPI_SYNCML_1_1: &str = "-//SYNCML//DTD SyncML 1.1//EN";
/// The formal public identifier of OMA DM TNDS / DDF 1.2 documents (no numeric id exists; it
/// travels as a string-table literal).
pub const FPI_DM_DDF_1_2: &str = "-//OMA//DTD-DM-DDF 1.2//EN";
/// The media type of WBXML TNDS documents.
pub const MIME_TNDS_WBXML: &str = "application/vnd.syncml.dmtnds+wbxml";
/// The WBXML version [`encode`] writes (1.2).
pub const WRITTEN_VERSION: u8 = 0x02;
/// IANA MIBenum of UTF-8.
pub const CHARSET_UTF8: u32 = 106;

// Global tokens (WBXML 1.3 §7.1).
const SWITCH_PAGE: u8 = 0x00;
const END: u8 = 0x01;
const ENTITY: u8 = 0x02;
const STR_I: u8 = 0x03;
const LITERAL: u8 = 0x04;
const PI: u8 = 0x43;
const STR_T: u8 = 0x83;
const OPAQUE: u8 = 0xC3;
const WITH_CONTENT: u8 = 0x40;
const WITH_ATTRS: u8 = 0x80;

/// Code page 0 (SyncML 1.2), tokens `0x05..=0x3C`; `0x30` is reserved.
const SYNCML_TAGS: [&str; 56] = [
    "Add",
    "Alert",
    "Archive",
    "Atomic",
    "Chal",
    "Cmd",
    "CmdID",
    "CmdRef",
    "Copy",
    "Cred",
    "Data",
    "Delete",
    "Exec",
    "Final",
    "Get",
    "Item",
    "Lang",
    "LocName",
    "LocURI",
    "Map",
    "MapItem",
    "Meta",
    "MsgID",
    "MsgRef",
    "NoResp",
    "NoResults",
    "Put",
    "Replace",
    "RespURI",
    "Results",
    "Search",
    "Sequence",
    "SessionID",
    "SftDel",
    "Source",
    "SourceRef",
    "Status",
    "Sync",
    "SyncBody",
    "SyncHdr",
    "SyncML",
    "Target",
    "TargetRef",
    "",
    "VerDTD",
    "VerProto",
    "NumberOfChanges",
    "MoreData",
    "Field",
    "Filter",
    "Record",
    "FilterType",
    "SourceParent",
    "TargetParent",
    "Move",
    "Correlator",
];

/// Code page 1 (MetInf 1.2), tokens `0x05..=0x16`.
const METINF_TAGS: [&str; 18] = [
    "Anchor",
    "EMI",
    "Format",
    "FreeID",
    "FreeMem",
    "Last",
    "Mark",
    "MaxMsgSize",
    "Mem",
    "MetInf",
    "Next",
    "NextNonce",
    "SharedMem",
    "Size",
    "Type",
    "Version",
    "MaxObjSize",
    "FieldLevel",
];

/// Code page 2 (OMA DM TNDS / DDF 1.2), tokens `0x05..=0x3C`.
const DDF_TAGS: [&str; 56] = [
    "AccessType",
    "ACL",
    "Add",
    "b64",
    "bin",
    "bool",
    "chr",
    "CaseSense",
    "CIS",
    "Copy",
    "CS",
    "date",
    "DDFName",
    "DefaultValue",
    "Delete",
    "Description",
    "DFFormat",
    "DFProperties",
    "DFTitle",
    "DFType",
    "Dynamic",
    "Exec",
    "float",
    "Format",
    "Get",
    "int",
    "Man",
    "MgmtTree",
    "MIME",
    "Mod",
    "Name",
    "Node",
    "node",
    "NodeName",
    "null",
    "Occurrence",
    "One",
    "OneOrMore",
    "OneOrN",
    "Path",
    "Permanent",
    "Replace",
    "RTProperties",
    "Scope",
    "Size",
    "time",
    "Title",
    "TStamp",
    "Type",
    "Value",
    "VerDTD",
    "VerNo",
    "xml",
    "ZeroOrMore",
    "ZeroOrN",
    "ZeroOrOne",
];

/// Code page of the SyncML elements.
const PAGE_SYNCML: u8 = 0;
/// Code page of the meta-information elements.
const PAGE_METINF: u8 = 1;
/// Code page of the TNDS elements.
const PAGE_DDF: u8 = 2;

/// The tag tokens [`encode`] writes (page 0 unless noted).
mod tok {
    pub(super) const ADD: u8 = 0x05;
    pub(super) const ALERT: u8 = 0x06;
    pub(super) const ATOMIC: u8 = 0x08;
    pub(super) const CHAL: u8 = 0x09;
    pub(super) const CMD: u8 = 0x0A;
    pub(super) const CMD_ID: u8 = 0x0B;
    pub(super) const CMD_REF: u8 = 0x0C;
    pub(super) const COPY: u8 = 0x0D;
    pub(super) const CRED: u8 = 0x0E;
    pub(super) const DATA: u8 = 0x0F;
    pub(super) const DELETE: u8 = 0x10;
    pub(super) const EXEC: u8 = 0x11;
    pub(super) const FINAL: u8 = 0x12;
    pub(super) const GET: u8 = 0x13;
    pub(super) const ITEM: u8 = 0x14;
    pub(super) const LOC_NAME: u8 = 0x16;
    pub(super) const LOC_URI: u8 = 0x17;
    pub(super) const META: u8 = 0x1A;
    pub(super) const MSG_ID: u8 = 0x1B;
    pub(super) const MSG_REF: u8 = 0x1C;
    pub(super) const NO_RESP: u8 = 0x1D;
    pub(super) const REPLACE: u8 = 0x20;
    pub(super) const RESP_URI: u8 = 0x21;
    pub(super) const RESULTS: u8 = 0x22;
    pub(super) const SEQUENCE: u8 = 0x24;
    pub(super) const SESSION_ID: u8 = 0x25;
    pub(super) const SOURCE: u8 = 0x27;
    pub(super) const SOURCE_REF: u8 = 0x28;
    pub(super) const STATUS: u8 = 0x29;
    pub(super) const SYNC_BODY: u8 = 0x2B;
    pub(super) const SYNC_HDR: u8 = 0x2C;
    pub(super) const SYNC_ML: u8 = 0x2D;
    pub(super) const TARGET: u8 = 0x2E;
    pub(super) const TARGET_REF: u8 = 0x2F;
    pub(super) const VER_DTD: u8 = 0x31;
    pub(super) const VER_PROTO: u8 = 0x32;
    pub(super) const MORE_DATA: u8 = 0x34;
    pub(super) const CORRELATOR: u8 = 0x3C;
    // Page 1 (MetInf).
    pub(super) const FORMAT: u8 = 0x07;
    pub(super) const MARK: u8 = 0x0B;
    pub(super) const MAX_MSG_SIZE: u8 = 0x0C;
    pub(super) const NEXT_NONCE: u8 = 0x10;
    pub(super) const SIZE: u8 = 0x12;
    pub(super) const TYPE: u8 = 0x13;
    pub(super) const VERSION: u8 = 0x14;
    pub(super) const MAX_OBJ_SIZE: u8 = 0x15;
    // Page 2 (DM DDF).
    pub(super) const MGMT_TREE: u8 = 0x20;
}

/// The element name of tag `token` on code page `page`, if the page defines it.
fn tag_name(page: u8, token: u8) -> Option<&'static str> {
    let index = usize::from(token).checked_sub(5)?;
    let name = match page {
        PAGE_SYNCML => SYNCML_TAGS.get(index),
        PAGE_METINF => METINF_TAGS.get(index),
        PAGE_DDF => DDF_TAGS.get(index),
        _ => None,
    }?;
    (!name.is_empty()).then_some(*name)
}

/// The token of element `name` on the DM DDF code page.
fn ddf_token(name: &str) -> Option<u8> {
    DDF_TAGS
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u8::try_from(i + 5).ok())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a WBXML document was refused. Every variant with a place names the byte offset (from
/// the start of the input) where the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WbxmlError {
    /// The input is empty.
    #[error("the message is empty")]
    Empty,
    /// The input does not start like a WBXML document (e.g. it is XML).
    #[error("not a WBXML document: {reason}")]
    NotWbxml {
        /// Why.
        reason: String,
    },
    /// The input ends in the middle of a token.
    #[error("truncated input at byte {at}: {what}")]
    Truncated {
        /// Where the incomplete item starts.
        at: usize,
        /// What was being read.
        what: String,
    },
    /// A multi-byte integer (`mb_u_int32`) longer than 5 bytes or above `u32::MAX`.
    #[error("invalid mb_u_int32 at byte {at}: {reason}")]
    BadInteger {
        /// Where the integer starts.
        at: usize,
        /// Why.
        reason: &'static str,
    },
    /// The WBXML version byte is not 1.0 to 1.3.
    #[error("unsupported WBXML version byte 0x{version:02X} at byte {at}")]
    UnsupportedVersion {
        /// Where the version byte is.
        at: usize,
        /// The version byte.
        version: u8,
    },
    /// The public id is not one this codec reads.
    #[error("unsupported public id {id} at byte {at}")]
    UnsupportedPublicId {
        /// Where the public id starts.
        at: usize,
        /// The id (`0x....` or the literal string, shortened).
        id: String,
    },
    /// The document's charset is not UTF-8 (or ASCII).
    #[error("unsupported charset (MIBenum {mib}) at byte {at}; only UTF-8 is read")]
    UnsupportedCharset {
        /// Where the charset starts.
        at: usize,
        /// The IANA MIBenum.
        mib: u32,
    },
    /// A string-table reference outside the table, or to a string without its terminating
    /// NUL.
    #[error("bad string table reference {index} at byte {at}: {reason}")]
    BadStringRef {
        /// Where the reference starts.
        at: usize,
        /// The offset into the table.
        index: u32,
        /// Why.
        reason: String,
    },
    /// A token this codec does not know or does not allow there (a tag missing from its code
    /// page, an attribute token, `EXT_*`, `PI`).
    #[error("unknown or unsupported token 0x{token:02X} at byte {at}: {reason}")]
    UnknownToken {
        /// Where the token is.
        at: usize,
        /// The token byte.
        token: u8,
        /// Why.
        reason: String,
    },
    /// An `END` with no open element.
    #[error("END token at byte {at} closes no element")]
    UnbalancedEnd {
        /// Where the `END` is.
        at: usize,
    },
    /// The input ends while elements are open.
    #[error(
        "unexpected end of input at byte {at}: <{element}> opened at byte {opened_at} is not closed"
    )]
    Unclosed {
        /// The input length.
        at: usize,
        /// The innermost open element.
        element: String,
        /// Where it was opened.
        opened_at: usize,
    },
    /// Tokens after the root element's `END`, or text outside the root element.
    #[error("unexpected content at byte {at}: {reason}")]
    Misplaced {
        /// Where the content is.
        at: usize,
        /// What it is.
        reason: String,
    },
    /// Text (a string or opaque data) that is not UTF-8.
    #[error("text at byte {at} is not valid UTF-8")]
    NotUtf8 {
        /// Where the invalid byte is.
        at: usize,
    },
    /// An `ENTITY` that is not a Unicode scalar value.
    #[error("ENTITY at byte {at} is not a character: {code}")]
    BadEntity {
        /// Where the entity token is.
        at: usize,
        /// The code.
        code: u32,
    },
    /// The input is not a SyncML message (another root element).
    #[error("not a SyncML message: {reason}")]
    NotSyncMl {
        /// Why.
        reason: String,
    },
    /// An element that is not allowed where it stands.
    #[error("unexpected element <{element}> in <{parent}> at byte {at}")]
    UnexpectedElement {
        /// Where the element's tag is.
        at: usize,
        /// The element's name (shortened).
        element: String,
        /// The enclosing element.
        parent: String,
    },
    /// A required element is missing.
    #[error("missing element <{element}> in <{parent}> at byte {at}")]
    MissingElement {
        /// Where the enclosing element starts.
        at: usize,
        /// The missing element.
        element: String,
        /// The enclosing element.
        parent: String,
    },
    /// An element that may appear once appears again.
    #[error("duplicate element <{element}> in <{parent}> at byte {at}")]
    DuplicateElement {
        /// Where the second occurrence starts.
        at: usize,
        /// The repeated element.
        element: String,
        /// The enclosing element.
        parent: String,
    },
    /// Non-whitespace text inside an element that may only hold elements (or nothing).
    #[error("unexpected text `{text}` in <{parent}> at byte {at}")]
    UnexpectedText {
        /// Where the text token is.
        at: usize,
        /// The enclosing element.
        parent: String,
        /// The text (shortened).
        text: String,
    },
    /// A value that does not parse (a number, a status code, an unknown `VerDTD`).
    #[error("invalid {what} `{value}` at byte {at}")]
    BadValue {
        /// Where the value's element starts.
        at: usize,
        /// Which kind of value.
        what: &'static str,
        /// The value found (shortened).
        value: String,
    },
    /// Elements are nested deeper than the limit.
    #[error("elements nested deeper than {limit} levels at byte {at}")]
    TooDeep {
        /// Where the first too-deep element starts.
        at: usize,
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
    /// One text value (or `Item/Data`) is longer than the limit.
    #[error(
        "the text of <{element}> at byte {at} is at least {len} bytes, over the limit of {limit}"
    )]
    TextTooLarge {
        /// Where the element holding the text starts.
        at: usize,
        /// The element.
        element: String,
        /// Bytes seen when the limit was passed.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The message holds more commands than the limit allows.
    #[error("the message has more than {limit} {what}")]
    TooMany {
        /// What was counted (`commands`).
        what: &'static str,
        /// The limit.
        limit: usize,
    },
}

impl WbxmlError {
    /// The byte offset where the error was found, when it has one.
    pub fn byte(&self) -> Option<usize> {
        match self {
            WbxmlError::Truncated { at, .. }
            | WbxmlError::BadInteger { at, .. }
            | WbxmlError::UnsupportedVersion { at, .. }
            | WbxmlError::UnsupportedPublicId { at, .. }
            | WbxmlError::UnsupportedCharset { at, .. }
            | WbxmlError::BadStringRef { at, .. }
            | WbxmlError::UnknownToken { at, .. }
            | WbxmlError::UnbalancedEnd { at }
            | WbxmlError::Unclosed { at, .. }
            | WbxmlError::Misplaced { at, .. }
            | WbxmlError::NotUtf8 { at }
            | WbxmlError::BadEntity { at, .. }
            | WbxmlError::UnexpectedElement { at, .. }
            | WbxmlError::MissingElement { at, .. }
            | WbxmlError::DuplicateElement { at, .. }
            | WbxmlError::UnexpectedText { at, .. }
            | WbxmlError::BadValue { at, .. }
            | WbxmlError::TooDeep { at, .. }
            | WbxmlError::TextTooLarge { at, .. } => Some(*at),
            WbxmlError::Empty
            | WbxmlError::NotWbxml { .. }
            | WbxmlError::NotSyncMl { .. }
            | WbxmlError::TooLarge { .. }
            | WbxmlError::TooMany { .. } => None,
        }
    }
}

type Result<T, E = WbxmlError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------------------------

fn is_xml_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_xml(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(&f), Some(&l)) if !is_xml_ws(f) && !is_xml_ws(l) => s,
        _ => s.trim_matches([' ', '\t', '\n', '\r']),
    }
}

/// The length of `bytes` up to its first NUL, if it has one.
fn nul_position(bytes: &[u8]) -> Option<usize> {
    std::ffi::CStr::from_bytes_until_nul(bytes)
        .ok()
        .map(|c| c.to_bytes().len())
}

/// At most 64 characters of `s`, with `…` when cut.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => {
            let mut out = s.get(..i).unwrap_or_default().to_owned();
            out.push('…');
            out
        }
        None => s.to_owned(),
    }
}

/// `bytes` as UTF-8, or [`WbxmlError::NotUtf8`] placed at the first bad byte (`at` is the
/// offset of `bytes[0]`).
fn utf8(bytes: &[u8], at: usize) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| WbxmlError::NotUtf8 {
        at: at.saturating_add(e.valid_up_to()),
    })
}

/// Appends `s` with XML line-end normalisation (`\r\n` and lone `\r` become `\n`).
fn push_normalized(out: &mut String, s: &str) {
    if !s.as_bytes().contains(&b'\r') {
        out.push_str(s);
        return;
    }
    let mut rest = s;
    while let Some(i) = rest.find('\r') {
        out.push_str(rest.get(..i).unwrap_or_default());
        out.push('\n');
        let after = rest.get(i + 1..).unwrap_or_default();
        rest = after.strip_prefix('\n').unwrap_or(after);
    }
    out.push_str(rest);
}

/// Appends `s` escaped for XML element content or a double-quoted attribute value: `&`, `<`,
/// `>`, `"` as entities and control characters other than tab and newline as character
/// references.
fn escape_into(out: &mut String, s: &str) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\t' | b'\n' => continue,
            0..=0x1F => {
                out.push_str(s.get(last..i).unwrap_or_default());
                out.push_str("&#");
                out.push_str(&b.to_string());
                out.push(';');
                last = i + 1;
                continue;
            }
            _ => continue,
        };
        out.push_str(s.get(last..i).unwrap_or_default());
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(s.get(last..).unwrap_or_default());
}

/// Appends character `c` escaped for XML content (see [`escape_into`]).
fn escape_char_into(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    escape_into(out, c.encode_utf8(&mut buf));
}

/// Whether `name` can be written as an XML element or attribute name (a conservative check
/// on literal names from the string table).
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

/// The public id of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PublicId<'a> {
    Numeric(u32),
    Literal(&'a str),
}

/// What a document's header says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocKind {
    SyncMl(SyncMlVersion),
    Tnds,
    /// Public id `0x01`: the root element tells.
    Unknown,
}

/// A tag: a token on a code page, or a literal name from the string table.
#[derive(Debug, Clone, Copy)]
enum Tag<'a> {
    Token { page: u8, token: u8 },
    Literal(&'a str),
}

impl Tag<'_> {
    /// The element name, if known.
    fn name(&self) -> Option<&str> {
        match *self {
            Tag::Token { page, token } => tag_name(page, token),
            Tag::Literal(name) => Some(name),
        }
    }
}

/// One parsed attribute (name and value).
type Attr<'a> = (&'a str, String);

/// One body token.
enum Tok<'a> {
    Start {
        tag: Tag<'a>,
        content: bool,
        attrs: Vec<Attr<'a>>,
        at: usize,
    },
    End {
        at: usize,
    },
    /// `STR_I` or `STR_T`.
    Str {
        bytes: &'a [u8],
        at: usize,
        /// Offset of `bytes[0]`.
        data_at: usize,
    },
    Opaque {
        bytes: &'a [u8],
        at: usize,
        /// Offset of `bytes[0]`.
        data_at: usize,
    },
    Entity {
        ch: char,
        at: usize,
    },
    Eof {
        at: usize,
    },
}

#[derive(Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    /// Offset of `buf[0]` in the outer input (for embedded documents).
    base: usize,
    pos: usize,
    strtbl: &'a [u8],
    /// Offset of the string table in `buf`.
    strtbl_at: usize,
    page: u8,
}

struct Header<'a> {
    public_id: PublicId<'a>,
    /// Where the public id starts.
    public_id_at: usize,
}

impl<'a> Header<'a> {
    fn kind(&self) -> Result<DocKind> {
        let unsupported = |id: String| WbxmlError::UnsupportedPublicId {
            at: self.public_id_at,
            id,
        };
        match self.public_id {
            PublicId::Numeric(PUBLIC_ID_SYNCML_1_2) => Ok(DocKind::SyncMl(SyncMlVersion::V1_2)),
            PublicId::Numeric(PUBLIC_ID_SYNCML_1_1) => Ok(DocKind::SyncMl(SyncMlVersion::V1_1)),
            PublicId::Numeric(PUBLIC_ID_UNKNOWN) => Ok(DocKind::Unknown),
            PublicId::Numeric(n) => Err(unsupported(format!("0x{n:04X}"))),
            PublicId::Literal(s) => {
                let s = s.trim();
                if s.eq_ignore_ascii_case(FPI_SYNCML_1_2) {
                    Ok(DocKind::SyncMl(SyncMlVersion::V1_2))
                } else if s.eq_ignore_ascii_case(FPI_SYNCML_1_1) {
                    Ok(DocKind::SyncMl(SyncMlVersion::V1_1))
                } else if s.eq_ignore_ascii_case(FPI_DM_DDF_1_2) {
                    Ok(DocKind::Tnds)
                } else {
                    Err(unsupported(format!("`{}`", shorten(s))))
                }
            }
        }
    }
}

impl<'a> Reader<'a> {
    /// Reads the header of the document `buf` (which starts at offset `base` of the input).
    fn new(buf: &'a [u8], base: usize) -> Result<(Reader<'a>, Header<'a>)> {
        let mut r = Reader {
            buf,
            base,
            pos: 0,
            strtbl: &[],
            strtbl_at: 0,
            page: 0,
        };
        let version = r.byte("the WBXML version")?;
        if version > 3 {
            return Err(WbxmlError::UnsupportedVersion { at: base, version });
        }
        let public_id_at = r.abs(r.pos);
        let id = r.mb_u32("the public id")?;
        let mut literal_index = None;
        if id == 0 {
            let at = r.abs(r.pos);
            literal_index = Some((r.mb_u32("the public id's string table index")?, at));
        }
        if version >= 1 {
            let at = r.abs(r.pos);
            let mib = r.mb_u32("the charset")?;
            if !matches!(mib, 0 | 3 | CHARSET_UTF8) {
                return Err(WbxmlError::UnsupportedCharset { at, mib });
            }
        }
        let len_at = r.pos;
        let len = r.mb_u32("the string table length")?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let start = r.pos;
        let table = start
            .checked_add(len)
            .and_then(|end| buf.get(start..end))
            .ok_or_else(|| WbxmlError::Truncated {
                at: r.abs(len_at),
                what: format!(
                    "the string table is {len} bytes but only {} remain",
                    buf.len().saturating_sub(start)
                ),
            })?;
        r.strtbl = table;
        r.strtbl_at = start;
        r.pos = start + len;
        let public_id = match literal_index {
            Some((index, at)) => PublicId::Literal(r.table_str(index, at)?),
            None => PublicId::Numeric(id),
        };
        Ok((
            r,
            Header {
                public_id,
                public_id_at,
            },
        ))
    }

    fn abs(&self, pos: usize) -> usize {
        self.base.saturating_add(pos)
    }

    fn truncated(&self, at: usize, what: &str) -> WbxmlError {
        WbxmlError::Truncated {
            at: self.abs(at),
            what: format!("the input ends inside {what}"),
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        let b = self
            .buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.truncated(self.pos, what))?;
        self.pos += 1;
        Ok(b)
    }

    /// A WBXML `mb_u_int32`: at most 5 bytes, at most `u32::MAX`.
    fn mb_u32(&mut self, what: &str) -> Result<u32> {
        let start = self.pos;
        let mut value: u32 = 0;
        for _ in 0..5 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.truncated(start, what));
            };
            self.pos += 1;
            if value >> 25 != 0 {
                return Err(WbxmlError::BadInteger {
                    at: self.abs(start),
                    reason: "the value exceeds 32 bits",
                });
            }
            value = (value << 7) | u32::from(b & 0x7F);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WbxmlError::BadInteger {
            at: self.abs(start),
            reason: "longer than 5 bytes",
        })
    }

    /// The NUL-terminated string at `index` of the string table (`at`: the reference).
    fn table_str(&self, index: u32, at: usize) -> Result<&'a str> {
        let bad = |reason: String| WbxmlError::BadStringRef { at, index, reason };
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        let rest = self
            .strtbl
            .get(i..)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad(format!("the string table has {} bytes", self.strtbl.len())))?;
        let end = nul_position(rest)
            .ok_or_else(|| bad("the string has no terminating NUL".to_owned()))?;
        let bytes = rest.get(..end).unwrap_or_default();
        utf8(bytes, self.abs(self.strtbl_at).saturating_add(i))
    }

    /// The bytes of the string-table string at `index` (for `STR_T`).
    fn table_bytes(&self, index: u32, at: usize) -> Result<(&'a [u8], usize)> {
        let bad = |reason: String| WbxmlError::BadStringRef { at, index, reason };
        let i = usize::try_from(index).unwrap_or(usize::MAX);
        let rest = self
            .strtbl
            .get(i..)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad(format!("the string table has {} bytes", self.strtbl.len())))?;
        let end = nul_position(rest)
            .ok_or_else(|| bad("the string has no terminating NUL".to_owned()))?;
        Ok((
            rest.get(..end).unwrap_or_default(),
            self.abs(self.strtbl_at).saturating_add(i),
        ))
    }

    /// An inline string after `STR_I` (the position is just after the token).
    fn inline_str(&mut self, at: usize) -> Result<(&'a [u8], usize)> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let end = nul_position(rest).ok_or_else(|| WbxmlError::Truncated {
            at: self.abs(at),
            what: "the inline string (STR_I) has no terminating NUL".to_owned(),
        })?;
        self.pos = start + end + 1;
        Ok((rest.get(..end).unwrap_or_default(), self.abs(start)))
    }

    /// Opaque data after `OPAQUE` (length-prefixed, checked against the input).
    fn opaque(&mut self, at: usize) -> Result<(&'a [u8], usize)> {
        let len = self.mb_u32("the OPAQUE length")?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let start = self.pos;
        let bytes = start
            .checked_add(len)
            .and_then(|end| self.buf.get(start..end))
            .ok_or_else(|| WbxmlError::Truncated {
                at: self.abs(at),
                what: format!(
                    "OPAQUE data of {len} bytes but only {} remain",
                    self.buf.len().saturating_sub(start)
                ),
            })?;
        self.pos = start + len;
        Ok((bytes, self.abs(start)))
    }

    fn entity(&mut self, at: usize) -> Result<char> {
        let code = self.mb_u32("the ENTITY code")?;
        char::from_u32(code).ok_or(WbxmlError::BadEntity {
            at: self.abs(at),
            code,
        })
    }

    fn unknown(&self, at: usize, token: u8, reason: impl Into<String>) -> WbxmlError {
        WbxmlError::UnknownToken {
            at: self.abs(at),
            token,
            reason: reason.into(),
        }
    }

    /// The attribute list after a tag with attributes, up to its `END`.
    fn attributes(&mut self) -> Result<Vec<Attr<'a>>> {
        let mut attrs: Vec<Attr<'a>> = Vec::new();
        loop {
            let at = self.pos;
            let b = self.byte("an attribute list")?;
            match b {
                END => return Ok(attrs),
                SWITCH_PAGE => {
                    self.byte("SWITCH_PAGE")?;
                }
                LITERAL => {
                    let index_at = self.abs(self.pos);
                    let index = self.mb_u32("a LITERAL attribute name")?;
                    let name = self.table_str(index, index_at)?;
                    attrs.push((name, String::new()));
                }
                STR_I | STR_T | ENTITY | OPAQUE => {
                    let Some((_, value)) = attrs.last_mut() else {
                        return Err(self.unknown(at, b, "an attribute value without a name"));
                    };
                    match b {
                        STR_I => {
                            let (bytes, data_at) = self.inline_str(at)?;
                            value.push_str(utf8(bytes, data_at)?);
                        }
                        STR_T => {
                            let index_at = self.abs(self.pos);
                            let index = self.mb_u32("a STR_T reference")?;
                            let (bytes, data_at) = self.table_bytes(index, index_at)?;
                            value.push_str(utf8(bytes, data_at)?);
                        }
                        ENTITY => value.push(self.entity(at)?),
                        _ => {
                            let (bytes, data_at) = self.opaque(at)?;
                            value.push_str(utf8(bytes, data_at)?);
                        }
                    }
                }
                _ => {
                    return Err(self.unknown(
                        at,
                        b,
                        format!(
                            "attribute token on attribute code page {} (SyncML defines no attribute tokens)",
                            self.page
                        ),
                    ));
                }
            }
        }
    }

    /// The next body token.
    fn next(&mut self) -> Result<Tok<'a>> {
        loop {
            let at = self.pos;
            let Some(&b) = self.buf.get(at) else {
                return Ok(Tok::Eof { at: self.abs(at) });
            };
            self.pos += 1;
            let abs = self.abs(at);
            return Ok(match b {
                SWITCH_PAGE => {
                    self.page = self.byte("SWITCH_PAGE")?;
                    continue;
                }
                END => Tok::End { at: abs },
                ENTITY => Tok::Entity {
                    ch: self.entity(at)?,
                    at: abs,
                },
                STR_I => {
                    let (bytes, data_at) = self.inline_str(at)?;
                    Tok::Str {
                        bytes,
                        at: abs,
                        data_at,
                    }
                }
                STR_T => {
                    let index_at = self.abs(self.pos);
                    let index = self.mb_u32("a STR_T reference")?;
                    let (bytes, data_at) = self.table_bytes(index, index_at)?;
                    Tok::Str {
                        bytes,
                        at: abs,
                        data_at,
                    }
                }
                OPAQUE => {
                    let (bytes, data_at) = self.opaque(at)?;
                    Tok::Opaque {
                        bytes,
                        at: abs,
                        data_at,
                    }
                }
                PI => return Err(self.unknown(at, b, "processing instructions are not supported")),
                0x40..=0x42 | 0x80..=0x82 | 0xC0..=0xC2 => {
                    return Err(self.unknown(at, b, "extension tokens are not used by SyncML"));
                }
                _ => {
                    let content = b & WITH_CONTENT != 0;
                    let tag = if b & 0x3F == LITERAL {
                        let index_at = self.abs(self.pos);
                        let index = self.mb_u32("a LITERAL tag name")?;
                        Tag::Literal(self.table_str(index, index_at)?)
                    } else {
                        Tag::Token {
                            page: self.page,
                            token: b & 0x3F,
                        }
                    };
                    let attrs = if b & WITH_ATTRS != 0 {
                        self.attributes()?
                    } else {
                        Vec::new()
                    };
                    Tok::Start {
                        tag,
                        content,
                        attrs,
                        at: abs,
                    }
                }
            });
        }
    }
}

/// Reads the header of `input`, refusing what is not WBXML.
fn open<'a>(input: &'a [u8], limits: &DecodeLimits) -> Result<(Reader<'a>, DocKind)> {
    if input.len() > limits.max_input_len {
        return Err(WbxmlError::TooLarge {
            len: input.len(),
            limit: limits.max_input_len,
        });
    }
    match input.first() {
        None => return Err(WbxmlError::Empty),
        Some(0..=3) => {}
        Some(_) if looks_like_xml(input) => {
            return Err(WbxmlError::NotWbxml {
                reason: "the input is XML text; WBXML starts with a version byte 0x00..0x03"
                    .to_owned(),
            });
        }
        Some(&b) => {
            return Err(WbxmlError::UnsupportedVersion { at: 0, version: b });
        }
    }
    let (reader, header) = Reader::new(input, 0)?;
    let kind = header.kind()?;
    Ok((reader, kind))
}

/// Whether `input` starts like XML text (after a BOM and whitespace, a `<`).
fn looks_like_xml(input: &[u8]) -> bool {
    let body = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    body.iter().find(|&&b| !is_xml_ws(b)) == Some(&b'<')
}

/// Whether `input` looks like a WBXML document rather than XML text: it starts with a WBXML
/// version byte (`0x00`..`0x03`), which XML text never does.
pub fn is_wbxml(input: &[u8]) -> bool {
    matches!(input.first(), Some(0..=3))
}

// ---------------------------------------------------------------------------------------------
// SyncML decoding
// ---------------------------------------------------------------------------------------------

/// Decodes a WBXML SyncML DM message with the default [`DecodeLimits`].
pub fn decode(input: &[u8]) -> Result<SyncMl> {
    decode_with(input, &DecodeLimits::default())
}

/// Decodes a WBXML SyncML DM message, enforcing `limits` (the XML codec's: input size,
/// nesting depth, command count, text size).
pub fn decode_with(input: &[u8], limits: &DecodeLimits) -> Result<SyncMl> {
    let (reader, kind) = open(input, limits)?;
    let version = match kind {
        DocKind::SyncMl(v) => Some(v),
        DocKind::Unknown => None,
        DocKind::Tnds => {
            return Err(WbxmlError::NotSyncMl {
                reason: format!(
                    "the public id is `{FPI_DM_DDF_1_2}` (a TNDS document, not a message)"
                ),
            });
        }
    };
    Parser::new(reader, limits, version).run()
}

/// Decodes a WBXML SyncML message and renders it as indented XML
/// ([`xml::encode_pretty`]), for people to read.
pub fn to_xml_pretty(input: &[u8]) -> Result<String> {
    decode(input).map(|m| xml::encode_pretty(&m))
}

/// An open inline element inside `Item/Data`.
struct RawOpen<'a> {
    name: Cow<'a, str>,
    /// Its code page (`None` for literal tags, which keep the parent's namespace).
    page: Option<u8>,
}

/// State of an open `Item/Data`.
struct Raw<'a> {
    /// Open inline elements.
    open: Vec<RawOpen<'a>>,
    /// The markup so far, once an element was seen.
    markup: Option<String>,
    /// The only piece of content so far, when it is `OPAQUE` (bytes and their offset).
    opaque: Option<(&'a [u8], usize)>,
    /// Pieces of text content seen.
    pieces: usize,
}

struct Parser<'a> {
    reader: Reader<'a>,
    limits: &'a DecodeLimits,
    /// The element grammar and the model under construction (items whose data was
    /// transcoded from embedded WBXML TNDS are marked; see [`TNDS_WBXML_TYPE`]).
    b: Builder<'a>,
    raw: Option<Raw<'a>>,
}

fn internal(at: usize) -> WbxmlError {
    WbxmlError::Misplaced {
        at,
        reason: "internal decoder state error".to_owned(),
    }
}

/// The [`WbxmlError`] of a builder error (positions are byte offsets).
fn build_err(e: BuildError) -> WbxmlError {
    match e {
        BuildError::Internal { at } => internal(at),
        BuildError::Unbalanced { at } => WbxmlError::UnbalancedEnd { at },
        BuildError::Duplicate {
            at,
            element,
            parent,
        } => WbxmlError::DuplicateElement {
            at,
            element: element.to_owned(),
            parent: parent.to_owned(),
        },
        BuildError::Missing {
            at,
            element,
            parent,
        } => WbxmlError::MissingElement {
            at,
            element: element.to_owned(),
            parent: parent.to_owned(),
        },
        BuildError::BadValue { at, what, value } => WbxmlError::BadValue { at, what, value },
        BuildError::TooDeep { at, limit } => WbxmlError::TooDeep { at, limit },
        BuildError::TooMany { what, limit } => WbxmlError::TooMany { what, limit },
        BuildError::TextTooLarge {
            at,
            element,
            len,
            limit,
        } => WbxmlError::TextTooLarge {
            at,
            element: element.to_owned(),
            len,
            limit,
        },
    }
}

impl<'a> Parser<'a> {
    fn new(
        reader: Reader<'a>,
        limits: &'a DecodeLimits,
        version: Option<SyncMlVersion>,
    ) -> Parser<'a> {
        Parser {
            reader,
            limits,
            b: Builder::new(limits, version, retype_tnds),
            raw: None,
        }
    }

    fn run(mut self) -> Result<SyncMl> {
        loop {
            match self.reader.next()? {
                Tok::Start {
                    tag,
                    content,
                    attrs,
                    at,
                } => {
                    if self.raw.is_some() {
                        self.raw_start(tag, content, &attrs, at)?;
                    } else {
                        self.start(tag, at)?;
                        if !content {
                            self.end(at)?;
                        }
                    }
                }
                Tok::End { at } => match self.raw.as_mut() {
                    Some(raw) if !raw.open.is_empty() => {
                        if let (Some(open), Some(markup)) = (raw.open.pop(), raw.markup.as_mut()) {
                            markup.push_str("</");
                            markup.push_str(&open.name);
                            markup.push('>');
                        }
                    }
                    _ => self.end(at)?,
                },
                Tok::Str { bytes, at, data_at } => {
                    self.text_piece(Piece::Str(bytes, data_at), at)?
                }
                Tok::Opaque { bytes, at, data_at } => {
                    self.text_piece(Piece::Opaque(bytes, data_at), at)?
                }
                Tok::Entity { ch, at } => self.text_piece(Piece::Entity(ch), at)?,
                Tok::Eof { at } => {
                    if let Some((_, el, opened_at)) = self.b.current() {
                        return Err(WbxmlError::Unclosed {
                            at,
                            element: el.name().to_owned(),
                            opened_at,
                        });
                    }
                    break;
                }
            }
        }
        if !self.b.root_done() {
            return Err(WbxmlError::Misplaced {
                at: self.reader.abs(self.reader.pos),
                reason: "the document has no root element".to_owned(),
            });
        }
        let at = self.reader.abs(self.reader.pos);
        self.b.finish().ok_or_else(|| internal(at))
    }

    fn start(&mut self, tag: Tag<'a>, at: usize) -> Result<()> {
        let name = match tag.name() {
            Some(n) => n,
            None => {
                let Tag::Token { page, token } = tag else {
                    return Err(internal(at));
                };
                let parent = self.b.parent().map_or("", |el| el.name());
                return Err(WbxmlError::UnknownToken {
                    at,
                    token,
                    reason: if page <= PAGE_DDF {
                        format!("no tag has this token on code page {page} (in <{parent}>)")
                    } else {
                        format!("code page {page} is not defined for SyncML (in <{parent}>)")
                    },
                });
            }
        };
        let el = match self.b.parent() {
            None => {
                if self.b.root_done() {
                    return Err(WbxmlError::Misplaced {
                        at,
                        reason: format!("element <{}> after the root element", shorten(name)),
                    });
                }
                let other_page = matches!(tag, Tag::Token { page, .. } if page != PAGE_SYNCML);
                if name != "SyncML" || other_page {
                    return Err(WbxmlError::NotSyncMl {
                        reason: format!("the root element is <{}>, not <SyncML>", shorten(name)),
                    });
                }
                El::SyncMl
            }
            Some(parent) => {
                // The meta-information elements live on page 1 only; nothing else does, and
                // the DM DDF page holds no SyncML elements.
                let found = match tag {
                    Tag::Token {
                        page: PAGE_SYNCML, ..
                    } if parent != El::Meta => child_of(parent, name),
                    Tag::Token {
                        page: PAGE_METINF, ..
                    } if parent == El::Meta => child_of(parent, name),
                    Tag::Literal(_) => child_of(parent, name),
                    _ => None,
                };
                match found {
                    Some(el) => el,
                    None => {
                        let element = match tag {
                            Tag::Token {
                                page: PAGE_METINF, ..
                            } => format!("metinf:{name}"),
                            Tag::Token { page: PAGE_DDF, .. } => format!("dmddf:{name}"),
                            _ => shorten(name),
                        };
                        return Err(WbxmlError::UnexpectedElement {
                            at,
                            element,
                            parent: parent.name().to_owned(),
                        });
                    }
                }
            }
        };
        self.b.start(el, at).map_err(build_err)?;
        if el == El::ItemData {
            self.raw = Some(Raw {
                open: Vec::new(),
                markup: None,
                opaque: None,
                pieces: 0,
            });
        }
        Ok(())
    }

    /// Closes the innermost element; for `Item/Data`, computes its value first.
    fn end(&mut self, at: usize) -> Result<()> {
        let item_data = match self.b.current() {
            Some((_, El::ItemData, start)) => Some(self.item_data(at, start)?),
            _ => None,
        };
        self.b.end(at, item_data).map_err(build_err)
    }

    /// The value of the `Item/Data` that started at `start`, and whether it was transcoded
    /// from embedded WBXML TNDS.
    fn item_data(&mut self, at: usize, start: usize) -> Result<(Data, bool)> {
        let Some(raw) = self.raw.take() else {
            return Err(internal(at));
        };
        Ok(if let Some(markup) = raw.markup {
            let trimmed = trim_xml(&markup);
            if trimmed.len() == markup.len() {
                (Data::Xml(markup), false)
            } else {
                (Data::Xml(trimmed.to_owned()), false)
            }
        } else if let (Some((bytes, data_at)), 1) = (raw.opaque, raw.pieces) {
            let depth = self.b.depth();
            opaque_data(bytes, data_at, start, self.limits, depth)?
        } else {
            (Data::Text(std::mem::take(&mut self.b.text)), false)
        })
    }

    /// Text outside any element, or in an element that holds only elements (or nothing):
    /// whitespace is ignored, anything else refused.
    fn stray_text(&self, piece: &Piece<'_>, at: usize) -> Result<()> {
        let shown = match *piece {
            Piece::Str(b, _) | Piece::Opaque(b, _) => {
                if b.iter().all(|&c| is_xml_ws(c)) {
                    return Ok(());
                }
                String::from_utf8_lossy(b).into_owned()
            }
            Piece::Entity(c) => format!("&#{};", u32::from(c)),
        };
        match self.b.parent() {
            None => Err(WbxmlError::Misplaced {
                at,
                reason: if self.b.root_done() {
                    "text after the root element".to_owned()
                } else {
                    "text before the root element".to_owned()
                },
            }),
            Some(el) => Err(WbxmlError::UnexpectedText {
                at,
                parent: el.name().to_owned(),
                text: shorten(trim_xml(&shown)),
            }),
        }
    }

    fn text_piece(&mut self, piece: Piece<'a>, at: usize) -> Result<()> {
        let Some((content, ..)) = self.b.current() else {
            return self.stray_text(&piece, at);
        };
        match content {
            Content::Elements | Content::Empty => self.stray_text(&piece, at),
            Content::Text => {
                append_piece(&mut self.b.text, &piece)?;
                self.check_text_len()
            }
            Content::Raw => {
                let Some(raw) = self.raw.as_mut() else {
                    return Err(internal(at));
                };
                if let Some(markup) = raw.markup.as_mut() {
                    match piece {
                        Piece::Str(b, data_at) | Piece::Opaque(b, data_at) => {
                            let s = utf8(b, data_at)?;
                            if s.as_bytes().contains(&b'\r') {
                                let mut n = String::with_capacity(s.len());
                                push_normalized(&mut n, s);
                                escape_into(markup, &n);
                            } else {
                                escape_into(markup, s);
                            }
                        }
                        Piece::Entity(c) => escape_char_into(markup, c),
                    }
                    let len = markup.len();
                    return self.check_len(len);
                }
                raw.pieces += 1;
                if let Piece::Opaque(b, data_at) = piece
                    && raw.pieces == 1
                {
                    raw.opaque = Some((b, data_at));
                    return self.check_len(b.len());
                }
                if let Some((b, data_at)) = raw.opaque.take() {
                    append_piece(&mut self.b.text, &Piece::Opaque(b, data_at))?;
                }
                append_piece(&mut self.b.text, &piece)?;
                self.check_text_len()
            }
        }
    }

    fn check_text_len(&self) -> Result<()> {
        self.check_len(self.b.text.len())
    }

    /// Fails with [`WbxmlError::TextTooLarge`] for the open element when `len` passes the
    /// text limit.
    fn check_len(&self, len: usize) -> Result<()> {
        self.b.check_len(len).map_err(build_err)
    }

    /// An element inside `Item/Data`: written as XML markup.
    fn raw_start(
        &mut self,
        tag: Tag<'a>,
        content: bool,
        attrs: &[Attr<'a>],
        at: usize,
    ) -> Result<()> {
        let depth = self.b.depth();
        let Some(raw) = self.raw.as_mut() else {
            return Err(internal(at));
        };
        let total = depth.saturating_add(raw.open.len()).saturating_add(1);
        if total > self.limits.max_depth {
            return Err(WbxmlError::TooDeep {
                at,
                limit: self.limits.max_depth,
            });
        }
        let (name, page): (Cow<'a, str>, Option<u8>) = match tag {
            Tag::Token { page, token } => match tag_name(page, token) {
                Some(n) => (Cow::Borrowed(n), Some(page)),
                None => {
                    return Err(WbxmlError::UnknownToken {
                        at,
                        token,
                        reason: format!("no tag has this token on code page {page} (in <Data>)"),
                    });
                }
            },
            Tag::Literal(n) if is_xml_name(n) => (Cow::Borrowed(n), None),
            Tag::Literal(n) => {
                return Err(WbxmlError::UnexpectedElement {
                    at,
                    element: shorten(n),
                    parent: "Data".to_owned(),
                });
            }
        };
        if raw.markup.is_none() {
            // The first element: the text so far becomes escaped markup.
            if let Some((b, data_at)) = raw.opaque.take() {
                append_piece(&mut self.b.text, &Piece::Opaque(b, data_at))?;
            }
            let mut markup = String::with_capacity(self.b.text.len() + 64);
            escape_into(&mut markup, &self.b.text);
            self.b.text.clear();
            raw.markup = Some(markup);
        }
        let parent_page = raw
            .open
            .iter()
            .rev()
            .find_map(|o| o.page)
            .unwrap_or(PAGE_SYNCML);
        let Some(markup) = raw.markup.as_mut() else {
            return Err(internal(at));
        };
        markup.push('<');
        markup.push_str(&name);
        if let Some(p) = page
            && p != parent_page
        {
            let ns = match p {
                PAGE_METINF => NS_METINF,
                PAGE_DDF => tnds::NAMESPACE,
                _ => self.b.version().unwrap_or_default().namespace(),
            };
            markup.push_str(" xmlns=\"");
            markup.push_str(ns);
            markup.push('"');
        }
        for (attr, value) in attrs {
            if !is_xml_name(attr) {
                return Err(WbxmlError::UnexpectedElement {
                    at,
                    element: format!("{name} @{}", shorten(attr)),
                    parent: "Data".to_owned(),
                });
            }
            markup.push(' ');
            markup.push_str(attr);
            markup.push_str("=\"");
            escape_into(markup, value);
            markup.push('"');
        }
        if content {
            markup.push('>');
            raw.open.push(RawOpen { name, page });
        } else {
            markup.push_str("/>");
        }
        let len = markup.len();
        self.check_len(len)
    }
}

/// A piece of character content.
enum Piece<'a> {
    Str(&'a [u8], usize),
    Opaque(&'a [u8], usize),
    Entity(char),
}

/// Appends the text of `piece` to `out`: strings and opaque data as UTF-8 with line ends
/// normalised, an entity literally.
fn append_piece(out: &mut String, piece: &Piece<'_>) -> Result<()> {
    match *piece {
        Piece::Str(b, at) | Piece::Opaque(b, at) => push_normalized(out, utf8(b, at)?),
        Piece::Entity(c) => out.push(c),
    }
    Ok(())
}

/// The `Item/Data` value of a single `OPAQUE` (see the module docs). `bytes` start at offset
/// `data_at`; the `Data` element at `data_el_at`; `depth` is the nesting of the `Data`.
fn opaque_data(
    bytes: &[u8],
    data_at: usize,
    data_el_at: usize,
    limits: &DecodeLimits,
    depth: usize,
) -> Result<(Data, bool)> {
    if is_embedded_tnds(bytes) {
        let budget = limits.max_depth.saturating_sub(depth);
        let xml = tnds_to_xml_at(bytes, data_at, limits, budget, data_el_at)?;
        return Ok((Data::Xml(xml), true));
    }
    let s = utf8(bytes, data_at)?;
    let mut text = String::with_capacity(s.len());
    push_normalized(&mut text, s);
    let trimmed = trim_xml(&text);
    if trimmed.starts_with('<') {
        let budget = limits.max_depth.saturating_sub(depth);
        match markup_check(trimmed, budget) {
            Markup::Elements => {
                return Ok((Data::Xml(trimmed.to_owned()), false));
            }
            Markup::TooDeep => {
                return Err(WbxmlError::TooDeep {
                    at: data_at,
                    limit: limits.max_depth,
                });
            }
            Markup::No => {}
        }
    }
    Ok((Data::Text(text), false))
}

/// The media type of WBXML TNDS, which an item (or its command) carrying embedded WBXML TNDS
/// declares; once the data is transcoded to XML it becomes [`tnds::MIME_TYPE`].
pub const TNDS_WBXML_TYPE: &str = MIME_TNDS_WBXML;

/// Sets a `Type` of `application/vnd.syncml.dmtnds+wbxml` to `application/vnd.syncml.dmtnds+xml`
/// (compared case-insensitively): the data it describes was transcoded to XML.
fn retype_tnds(meta: Option<&mut Meta>) {
    if let Some(ty) = meta.and_then(|m| m.ty.as_mut())
        && ty.trim().eq_ignore_ascii_case(MIME_TNDS_WBXML)
    {
        *ty = tnds::MIME_TYPE.to_owned();
    }
}

/// Whether opaque `bytes` hold an embedded WBXML TNDS document.
fn is_embedded_tnds(bytes: &[u8]) -> bool {
    if !matches!(bytes.first(), Some(0..=3)) {
        return false;
    }
    let Ok((mut r, header)) = Reader::new(bytes, 0) else {
        return false;
    };
    match header.kind() {
        Ok(DocKind::Tnds) => true,
        Ok(DocKind::Unknown) => matches!(
            r.next(),
            Ok(Tok::Start {
                tag: Tag::Token {
                    page: PAGE_DDF,
                    token: tok::MGMT_TREE
                },
                ..
            })
        ),
        _ => false,
    }
}

enum Markup {
    /// Well-formed content with at least one element.
    Elements,
    /// Well-formed so far but nested deeper than the budget.
    TooDeep,
    /// Not markup.
    No,
}

/// Whether `s` is well-formed XML content holding at least one element, nested at most
/// `budget` levels.
fn markup_check(s: &str, budget: usize) -> Markup {
    let mut reader = quick_xml::Reader::from_str(s);
    {
        let config = reader.config_mut();
        config.check_end_names = true;
        config.trim_text(false);
        config.expand_empty_elements = false;
    }
    let mut depth = 0usize;
    let mut elements = false;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(_) => return Markup::No,
        };
        match event {
            Event::Start(e) => {
                if e.attributes().any(|a| a.is_err()) {
                    return Markup::No;
                }
                elements = true;
                if depth >= budget {
                    return Markup::TooDeep;
                }
                depth += 1;
            }
            Event::Empty(e) => {
                if e.attributes().any(|a| a.is_err()) {
                    return Markup::No;
                }
                elements = true;
                if depth >= budget {
                    return Markup::TooDeep;
                }
            }
            Event::End(_) => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return Markup::No,
            },
            Event::GeneralRef(r) => {
                let name: &str = &r;
                let known = matches!(name, "amp" | "lt" | "gt" | "quot" | "apos")
                    || matches!(r.resolve_char_ref(), Ok(Some(_)));
                if !known {
                    return Markup::No;
                }
            }
            Event::Text(_) | Event::CData(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::Decl(_) | Event::DocType(_) => return Markup::No,
            Event::Eof => break,
        }
    }
    if depth == 0 && elements {
        Markup::Elements
    } else {
        Markup::No
    }
}

// ---------------------------------------------------------------------------------------------
// TNDS (DM DDF 1.2) documents
// ---------------------------------------------------------------------------------------------

/// Transcodes a WBXML TNDS document (public id `-//OMA//DTD-DM-DDF 1.2//EN`, or `0x01` with a
/// `MgmtTree` root on code page 2) to compact XML with `xmlns="syncml:dmddf1.2"` on the root.
/// The TNDS grammar itself is checked by [`TndsDocument::from_xml`], not here.
pub fn tnds_to_xml(input: &[u8]) -> Result<String> {
    let limits = DecodeLimits::default();
    if input.len() > limits.max_input_len {
        return Err(WbxmlError::TooLarge {
            len: input.len(),
            limit: limits.max_input_len,
        });
    }
    if input.is_empty() {
        return Err(WbxmlError::Empty);
    }
    tnds_to_xml_at(input, 0, &limits, limits.max_depth, 0)
}

/// [`tnds_to_xml`] for a document at offset `base` of the outer input, with `budget` levels of
/// nesting left; `el_at` is where the enclosing element starts (for size errors).
fn tnds_to_xml_at(
    doc: &[u8],
    base: usize,
    limits: &DecodeLimits,
    budget: usize,
    el_at: usize,
) -> Result<String> {
    let (mut r, header) = Reader::new(doc, base)?;
    match header.kind()? {
        DocKind::Tnds | DocKind::Unknown => {}
        DocKind::SyncMl(_) => {
            return Err(WbxmlError::UnsupportedPublicId {
                at: header.public_id_at,
                id: "SyncML (a message, not a TNDS document)".to_owned(),
            });
        }
    }
    let mut out = String::with_capacity(doc.len().saturating_mul(3).min(1 << 20));
    let mut open: Vec<(&'static str, usize)> = Vec::new();
    let mut root_done = false;
    loop {
        match r.next()? {
            Tok::Start {
                tag, content, at, ..
            } => {
                if root_done {
                    return Err(WbxmlError::Misplaced {
                        at,
                        reason: "an element after the root element".to_owned(),
                    });
                }
                let name = match tag {
                    Tag::Token {
                        page: PAGE_DDF,
                        token,
                    } => tag_name(PAGE_DDF, token).ok_or_else(|| WbxmlError::UnknownToken {
                        at,
                        token,
                        reason: "no tag has this token on the DM DDF code page (2)".to_owned(),
                    })?,
                    Tag::Token { page, token } => {
                        return Err(WbxmlError::UnknownToken {
                            at,
                            token,
                            reason: format!(
                                "TNDS elements are on code page 2, this tag is on page {page}"
                            ),
                        });
                    }
                    Tag::Literal(n) => {
                        return Err(WbxmlError::UnexpectedElement {
                            at,
                            element: shorten(n),
                            parent: open.last().map_or("MgmtTree", |o| o.0).to_owned(),
                        });
                    }
                };
                if open.is_empty() && name != "MgmtTree" {
                    return Err(WbxmlError::Misplaced {
                        at,
                        reason: format!("the root element is <{name}>, not <MgmtTree>"),
                    });
                }
                if open.len() >= budget {
                    return Err(WbxmlError::TooDeep {
                        at,
                        limit: limits.max_depth,
                    });
                }
                out.push('<');
                out.push_str(name);
                if open.is_empty() {
                    out.push_str(" xmlns=\"");
                    out.push_str(tnds::NAMESPACE);
                    out.push('"');
                }
                if content {
                    out.push('>');
                    open.push((name, at));
                } else {
                    out.push_str("/>");
                    root_done = open.is_empty();
                }
            }
            Tok::End { at } => {
                let Some((name, _)) = open.pop() else {
                    return Err(WbxmlError::UnbalancedEnd { at });
                };
                out.push_str("</");
                out.push_str(name);
                out.push('>');
                root_done = open.is_empty();
            }
            Tok::Str { bytes, at, data_at } | Tok::Opaque { bytes, at, data_at } => {
                let s = utf8(bytes, data_at)?;
                if open.is_empty() {
                    if s.bytes().all(is_xml_ws) {
                        continue;
                    }
                    return Err(WbxmlError::Misplaced {
                        at,
                        reason: "text outside the root element".to_owned(),
                    });
                }
                if s.as_bytes().contains(&b'\r') {
                    let mut n = String::with_capacity(s.len());
                    push_normalized(&mut n, s);
                    escape_into(&mut out, &n);
                } else {
                    escape_into(&mut out, s);
                }
            }
            Tok::Entity { ch, at } => {
                if open.is_empty() {
                    return Err(WbxmlError::Misplaced {
                        at,
                        reason: "text outside the root element".to_owned(),
                    });
                }
                escape_char_into(&mut out, ch);
            }
            Tok::Eof { at } => {
                if let Some((name, opened_at)) = open.last() {
                    return Err(WbxmlError::Unclosed {
                        at,
                        element: (*name).to_owned(),
                        opened_at: *opened_at,
                    });
                }
                if !root_done {
                    return Err(WbxmlError::Misplaced {
                        at,
                        reason: "the document has no root element".to_owned(),
                    });
                }
                return Ok(out);
            }
        }
        if out.len() > limits.max_text_len {
            return Err(WbxmlError::TextTooLarge {
                at: el_at,
                element: "MgmtTree".to_owned(),
                len: out.len(),
                limit: limits.max_text_len,
            });
        }
    }
}

/// Encodes a TNDS document as WBXML 1.2 (code page 2, public id
/// `-//OMA//DTD-DM-DDF 1.2//EN` as a string-table literal, as libwbxml writes it).
pub fn encode_tnds(doc: &TndsDocument) -> Vec<u8> {
    let xml = doc.to_xml();
    let mut out = Vec::with_capacity(xml.len() / 2 + 48);
    out.push(WRITTEN_VERSION);
    out.push(0); // public id: a string-table literal
    out.push(0); // at index 0
    put_mb_u32(&mut out, CHARSET_UTF8);
    let fpi_len = u32::try_from(FPI_DM_DDF_1_2.len() + 1).unwrap_or(0);
    put_mb_u32(&mut out, fpi_len);
    out.extend_from_slice(FPI_DM_DDF_1_2.as_bytes());
    out.push(0);
    out.push(SWITCH_PAGE);
    out.push(PAGE_DDF);
    // The XML comes from our own writer: well-formed, element names from the DDF vocabulary.
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                flush_text(&mut out, &mut text);
                let token = ddf_token(e.name().as_ref());
                out.push(token.unwrap_or(tok::MGMT_TREE) | WITH_CONTENT);
            }
            Ok(Event::Empty(e)) => {
                flush_text(&mut out, &mut text);
                let token = ddf_token(e.name().as_ref());
                out.push(token.unwrap_or(tok::MGMT_TREE));
            }
            Ok(Event::End(_)) => {
                flush_text(&mut out, &mut text);
                out.push(END);
            }
            Ok(Event::Text(t)) => {
                text.push_str(&t.xml10_content());
            }
            Ok(Event::CData(c)) => {
                text.push_str(&c.xml10_content());
            }
            Ok(Event::GeneralRef(r)) => {
                let name: &str = &r;
                match r.resolve_char_ref() {
                    Ok(Some(c)) => text.push(c),
                    _ => text.push(match name {
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => '&',
                    }),
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

fn flush_text(out: &mut Vec<u8>, text: &mut String) {
    if !text.is_empty() {
        put_text(out, text);
        text.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Any message, for the CLI
// ---------------------------------------------------------------------------------------------

/// Why [`decode_any`] or [`xml_to_wbxml`] refused a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnyError {
    /// A WBXML document was refused.
    #[error("WBXML: {0}")]
    Wbxml(WbxmlError),
    /// An XML SyncML message was refused.
    #[error("XML: {0}")]
    Xml(CodecError),
    /// A TNDS document was refused.
    #[error("TNDS: {0}")]
    Tnds(TndsError),
    /// The XML document is neither a SyncML message nor a TNDS `MgmtTree`.
    #[error("not a SyncML message or a TNDS document: {reason}")]
    Unknown {
        /// Why.
        reason: String,
    },
}

// The messages already include the inner error, so it is not also exposed as a `source`
// (an error chain would print it twice).
impl From<WbxmlError> for AnyError {
    fn from(e: WbxmlError) -> Self {
        AnyError::Wbxml(e)
    }
}

impl From<CodecError> for AnyError {
    fn from(e: CodecError) -> Self {
        AnyError::Xml(e)
    }
}

impl From<TndsError> for AnyError {
    fn from(e: TndsError) -> Self {
        AnyError::Tnds(e)
    }
}

/// What an XML document's root element is.
fn xml_root(input: &[u8]) -> std::result::Result<String, AnyError> {
    let mut reader = quick_xml::Reader::from_reader(input);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                let name = e.name();
                return Ok(name.local_name().as_ref().to_owned());
            }
            Ok(Event::Eof) => {
                return Err(AnyError::Unknown {
                    reason: "the document holds no element".to_owned(),
                });
            }
            Ok(Event::Text(t)) if t.bytes().all(is_xml_ws) => {}
            Ok(Event::Text(_)) => {
                return Err(AnyError::Unknown {
                    reason: format!(
                        "text before the root element at byte {}",
                        reader.buffer_position()
                    ),
                });
            }
            Ok(_) => {}
            Err(e) => {
                return Err(AnyError::Unknown {
                    reason: format!("malformed XML at byte {}: {e}", reader.error_position()),
                });
            }
        }
    }
}

/// Renders any SyncML DM message or TNDS document, XML or WBXML, as indented XML: the
/// library side of `dmdeleg msg decode`. WBXML is recognised by its first byte (a version
/// byte `0x00`..`0x03`), then by its public id (SyncML 1.1/1.2 or DM DDF 1.2) or, when that
/// is `0x01`, by its root tag; XML by its root element (`SyncML` or `MgmtTree`). Messages
/// go through the model ([`xml::encode_pretty`]), TNDS through [`TndsDocument`]
/// ([`TndsDocument::to_xml_pretty`]).
pub fn decode_any(input: &[u8]) -> std::result::Result<String, AnyError> {
    let limits = DecodeLimits::default();
    if is_wbxml(input) {
        let (reader, kind) = open(input, &limits)?;
        let kind = match kind {
            DocKind::Unknown => {
                let mut peek = reader.clone();
                match peek.next()? {
                    Tok::Start {
                        tag:
                            Tag::Token {
                                page: PAGE_DDF,
                                token: tok::MGMT_TREE,
                            },
                        ..
                    } => DocKind::Tnds,
                    _ => DocKind::Unknown,
                }
            }
            k => k,
        };
        if kind == DocKind::Tnds {
            let xml = tnds_to_xml(input)?;
            let doc = TndsDocument::from_xml(xml.as_bytes())?;
            return Ok(doc.to_xml_pretty());
        }
        let version = match kind {
            DocKind::SyncMl(v) => Some(v),
            _ => None,
        };
        let msg = Parser::new(reader, &limits, version).run()?;
        return Ok(xml::encode_pretty(&msg));
    }
    if input.iter().all(|&b| is_xml_ws(b)) {
        return Err(AnyError::Wbxml(WbxmlError::Empty));
    }
    match xml_root(input)?.as_str() {
        "MgmtTree" => Ok(TndsDocument::from_xml(input)?.to_xml_pretty()),
        "SyncML" => Ok(xml::encode_pretty(&xml::decode(input)?)),
        other => Err(AnyError::Unknown {
            reason: format!("the root element is <{}>", shorten(other)),
        }),
    }
}

/// Encodes an XML SyncML message (or TNDS document) as WBXML: the library side of
/// `dmdeleg msg encode --wbxml`. WBXML input is decoded and re-encoded.
pub fn xml_to_wbxml(input: &[u8]) -> std::result::Result<Vec<u8>, AnyError> {
    if is_wbxml(input) {
        if let Ok((_, DocKind::Tnds)) = open(input, &DecodeLimits::default()) {
            let xml = tnds_to_xml(input)?;
            return Ok(encode_tnds(&TndsDocument::from_xml(xml.as_bytes())?));
        }
        return Ok(encode(&decode(input)?));
    }
    if input.iter().all(|&b| is_xml_ws(b)) {
        return Err(AnyError::Xml(CodecError::Empty));
    }
    match xml_root(input)?.as_str() {
        "MgmtTree" => Ok(encode_tnds(&TndsDocument::from_xml(input)?)),
        _ => Ok(encode(&xml::decode(input)?)),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends `value` as a WBXML `mb_u_int32`.
fn put_mb_u32(out: &mut Vec<u8>, value: u32) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut v = value;
    let mut last = true;
    loop {
        i -= 1;
        let low = (v & 0x7F) as u8;
        if let Some(slot) = buf.get_mut(i) {
            *slot = if last { low } else { low | 0x80 };
        }
        last = false;
        v >>= 7;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

/// Appends text: inline strings, with `ENTITY` for control characters other than tab and
/// newline (so `\r` survives the decoder's line-end normalisation and no NUL ends a string).
fn put_text(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b < 0x20 && b != b'\t' && b != b'\n' {
            if i > start {
                out.push(STR_I);
                out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
                out.push(0);
            }
            out.push(ENTITY);
            out.push(b);
            start = i + 1;
        }
    }
    if start < bytes.len() {
        out.push(STR_I);
        out.extend_from_slice(bytes.get(start..).unwrap_or_default());
        out.push(0);
    }
}

/// Appends the decimal digits of `n` as an inline string.
fn put_number(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.push(STR_I);
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
    out.push(0);
}

/// Encodes a message as WBXML 1.2 (see the module docs for the exact form).
pub fn encode(msg: &SyncMl) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(msg, &mut out);
    out
}

/// Appends the WBXML of `msg` to `out`.
pub fn encode_into(msg: &SyncMl, out: &mut Vec<u8>) {
    out.reserve(size_hint(msg));
    out.push(WRITTEN_VERSION);
    put_mb_u32(
        out,
        match msg.hdr.version {
            SyncMlVersion::V1_1 => PUBLIC_ID_SYNCML_1_1,
            SyncMlVersion::V1_2 => PUBLIC_ID_SYNCML_1_2,
        },
    );
    put_mb_u32(out, CHARSET_UTF8);
    // SyncML 1.1's code page has no `Correlator` (0x3C is SyncML 1.2): a 1.1 message that
    // carries one names it as a literal tag from the string table, as libwbxml does.
    let literal_correlator =
        msg.hdr.version == SyncMlVersion::V1_1 && has_correlator(&msg.body.commands);
    if literal_correlator {
        put_mb_u32(out, CORRELATOR_LITERAL.len() as u32);
        out.extend_from_slice(CORRELATOR_LITERAL);
    } else {
        out.push(0); // empty string table
    }
    let mut w = Writer {
        out,
        page: 0,
        literal_correlator,
    };
    w.message(msg);
}

/// The string table entry naming `Correlator` in SyncML 1.1 messages.
const CORRELATOR_LITERAL: &[u8] = b"Correlator\0";

fn has_correlator(cmds: &[Command]) -> bool {
    cmds.iter().any(|c| match c {
        Command::Alert(a) => a.correlator.is_some(),
        Command::Exec(e) => e.correlator.is_some(),
        Command::Atomic(c) | Command::Sequence(c) => has_correlator(&c.commands),
        _ => false,
    })
}

/// A rough output size, to reserve once.
fn size_hint(msg: &SyncMl) -> usize {
    fn commands(cmds: &[Command]) -> usize {
        cmds.iter()
            .map(|c| match c {
                Command::Atomic(c) | Command::Sequence(c) => 16 + commands(&c.commands),
                c => {
                    48 + c
                        .items()
                        .iter()
                        .map(|i| 64 + i.data.as_ref().map_or(0, |d| d.as_text().len()))
                        .sum::<usize>()
                }
            })
            .sum()
    }
    256 + commands(&msg.body.commands)
}

struct Writer<'o> {
    out: &'o mut Vec<u8>,
    page: u8,
    /// Write `Correlator` as a literal tag (string table index 0), for SyncML 1.1.
    literal_correlator: bool,
}

impl Writer<'_> {
    #[inline]
    fn tag(&mut self, page: u8, token: u8, content: bool) {
        if self.page != page {
            self.out.push(SWITCH_PAGE);
            self.out.push(page);
            self.page = page;
        }
        self.out
            .push(if content { token | WITH_CONTENT } else { token });
    }

    #[inline]
    fn end(&mut self) {
        self.out.push(END);
    }

    fn correlator(&mut self, text: &Option<String>) {
        let Some(text) = text else {
            return;
        };
        if !self.literal_correlator {
            self.text_el(tok::CORRELATOR, text);
            return;
        }
        // Literal tags have no code page; index 0 of the string table.
        if text.is_empty() {
            self.out.extend_from_slice(&[LITERAL, 0]);
        } else {
            self.out.extend_from_slice(&[LITERAL | WITH_CONTENT, 0]);
            put_text(self.out, text);
            self.end();
        }
    }

    fn text_el_on(&mut self, page: u8, token: u8, text: &str) {
        if text.is_empty() {
            self.tag(page, token, false);
        } else {
            self.tag(page, token, true);
            put_text(self.out, text);
            self.end();
        }
    }

    fn text_el(&mut self, token: u8, text: &str) {
        self.text_el_on(PAGE_SYNCML, token, text);
    }

    fn opt_text_el(&mut self, token: u8, text: &Option<String>) {
        if let Some(text) = text {
            self.text_el(token, text);
        }
    }

    fn num_el_on(&mut self, page: u8, token: u8, n: u64) {
        self.tag(page, token, true);
        put_number(self.out, n);
        self.end();
    }

    fn num_el(&mut self, token: u8, n: u64) {
        self.num_el_on(PAGE_SYNCML, token, n);
    }

    fn flag(&mut self, token: u8, on: bool) {
        if on {
            self.tag(PAGE_SYNCML, token, false);
        }
    }

    fn message(&mut self, msg: &SyncMl) {
        self.tag(PAGE_SYNCML, tok::SYNC_ML, true);
        self.hdr(&msg.hdr);
        self.tag(PAGE_SYNCML, tok::SYNC_BODY, true);
        for cmd in &msg.body.commands {
            self.command(cmd);
        }
        self.flag(tok::FINAL, msg.body.is_final);
        self.end();
        self.end();
    }

    fn hdr(&mut self, h: &SyncHdr) {
        self.tag(PAGE_SYNCML, tok::SYNC_HDR, true);
        self.text_el(tok::VER_DTD, &h.ver_dtd);
        self.text_el(tok::VER_PROTO, &h.ver_proto);
        self.text_el(tok::SESSION_ID, &h.session_id);
        self.num_el(tok::MSG_ID, u64::from(h.msg_id));
        self.loc(tok::TARGET, &h.target);
        self.loc(tok::SOURCE, &h.source);
        self.opt_text_el(tok::RESP_URI, &h.resp_uri);
        self.flag(tok::NO_RESP, h.no_resp);
        if let Some(cred) = &h.cred {
            self.cred(cred);
        }
        if let Some(meta) = &h.meta {
            self.meta(meta);
        }
        self.end();
    }

    fn loc(&mut self, token: u8, loc: &LocRef) {
        self.tag(PAGE_SYNCML, token, true);
        self.text_el(tok::LOC_URI, &loc.loc_uri);
        self.opt_text_el(tok::LOC_NAME, &loc.loc_name);
        self.end();
    }

    fn cred(&mut self, cred: &Cred) {
        self.tag(PAGE_SYNCML, tok::CRED, true);
        if !cred.meta.is_empty() {
            self.meta(&cred.meta);
        }
        self.text_el(tok::DATA, &cred.data);
        self.end();
    }

    fn meta(&mut self, meta: &Meta) {
        if meta.is_empty() {
            self.tag(PAGE_SYNCML, tok::META, false);
            return;
        }
        self.tag(PAGE_SYNCML, tok::META, true);
        let texts = [
            (tok::FORMAT, &meta.format),
            (tok::TYPE, &meta.ty),
            (tok::MARK, &meta.mark),
        ];
        for (token, value) in texts {
            if let Some(v) = value {
                self.text_el_on(PAGE_METINF, token, v);
            }
        }
        if let Some(n) = meta.size {
            self.num_el_on(PAGE_METINF, tok::SIZE, n);
        }
        if let Some(v) = &meta.next_nonce {
            self.text_el_on(PAGE_METINF, tok::NEXT_NONCE, v);
        }
        if let Some(v) = &meta.version {
            self.text_el_on(PAGE_METINF, tok::VERSION, v);
        }
        if let Some(n) = meta.max_msg_size {
            self.num_el_on(PAGE_METINF, tok::MAX_MSG_SIZE, n);
        }
        if let Some(n) = meta.max_obj_size {
            self.num_el_on(PAGE_METINF, tok::MAX_OBJ_SIZE, n);
        }
        self.end();
    }

    fn item(&mut self, item: &Item) {
        if *item == Item::default() {
            self.tag(PAGE_SYNCML, tok::ITEM, false);
            return;
        }
        self.tag(PAGE_SYNCML, tok::ITEM, true);
        if let Some(t) = &item.target {
            self.loc(tok::TARGET, t);
        }
        if let Some(s) = &item.source {
            self.loc(tok::SOURCE, s);
        }
        if let Some(m) = &item.meta {
            self.meta(m);
        }
        match &item.data {
            Some(Data::Text(t)) => self.text_el(tok::DATA, t),
            Some(Data::Xml(x)) => {
                self.tag(PAGE_SYNCML, tok::DATA, true);
                self.out.push(OPAQUE);
                put_mb_u32(self.out, u32::try_from(x.len()).unwrap_or(u32::MAX));
                self.out.extend_from_slice(x.as_bytes());
                self.end();
            }
            None => {}
        }
        self.flag(tok::MORE_DATA, item.more_data);
        self.end();
    }

    fn items(&mut self, items: &[Item]) {
        for item in items {
            self.item(item);
        }
    }

    fn command(&mut self, cmd: &Command) {
        let token = match cmd {
            Command::Alert(_) => tok::ALERT,
            Command::Add(_) => tok::ADD,
            Command::Replace(_) => tok::REPLACE,
            Command::Delete(_) => tok::DELETE,
            Command::Get(_) => tok::GET,
            Command::Copy(_) => tok::COPY,
            Command::Exec(_) => tok::EXEC,
            Command::Atomic(_) => tok::ATOMIC,
            Command::Sequence(_) => tok::SEQUENCE,
            Command::Results(_) => tok::RESULTS,
            Command::Status(_) => tok::STATUS,
        };
        self.tag(PAGE_SYNCML, token, true);
        self.num_el(tok::CMD_ID, u64::from(cmd.cmd_id()));
        match cmd {
            Command::Add(c)
            | Command::Replace(c)
            | Command::Delete(c)
            | Command::Get(c)
            | Command::Copy(c) => {
                self.flag(tok::NO_RESP, c.no_resp);
                if let Some(cred) = &c.cred {
                    self.cred(cred);
                }
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                self.items(&c.items);
            }
            Command::Alert(c) => {
                self.flag(tok::NO_RESP, c.no_resp);
                if let Some(cred) = &c.cred {
                    self.cred(cred);
                }
                self.opt_text_el(tok::DATA, &c.data);
                self.correlator(&c.correlator);
                self.items(&c.items);
            }
            Command::Exec(c) => {
                self.flag(tok::NO_RESP, c.no_resp);
                if let Some(cred) = &c.cred {
                    self.cred(cred);
                }
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                self.correlator(&c.correlator);
                self.item(&c.item);
            }
            Command::Atomic(c) | Command::Sequence(c) => {
                self.flag(tok::NO_RESP, c.no_resp);
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                for nested in &c.commands {
                    self.command(nested);
                }
            }
            Command::Results(c) => {
                if let Some(r) = c.msg_ref {
                    self.num_el(tok::MSG_REF, u64::from(r));
                }
                self.num_el(tok::CMD_REF, u64::from(c.cmd_ref));
                if let Some(m) = &c.meta {
                    self.meta(m);
                }
                self.opt_text_el(tok::TARGET_REF, &c.target_ref);
                self.opt_text_el(tok::SOURCE_REF, &c.source_ref);
                self.items(&c.items);
            }
            Command::Status(c) => {
                self.num_el(tok::MSG_REF, u64::from(c.msg_ref));
                self.num_el(tok::CMD_REF, u64::from(c.cmd_ref));
                self.text_el(tok::CMD, &c.cmd);
                for r in &c.target_refs {
                    self.text_el(tok::TARGET_REF, r);
                }
                for r in &c.source_refs {
                    self.text_el(tok::SOURCE_REF, r);
                }
                if let Some(cred) = &c.cred {
                    self.cred(cred);
                }
                if let Some(chal) = &c.chal {
                    self.tag(PAGE_SYNCML, tok::CHAL, true);
                    self.meta(&chal.meta);
                    self.end();
                }
                self.num_el(tok::DATA, u64::from(c.data.0));
                self.items(&c.items);
            }
        }
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                        items: vec![
                            Item {
                                target: Some(LocRef::new("./A&B")),
                                data: Some(Data::Text(" x<y>\r\n\u{1}\0 ".into())),
                                more_data: true,
                                ..Item::default()
                            },
                            Item {
                                data: Some(Data::Xml(
                                    "<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD>\
                                     <Node><NodeName>a</NodeName></Node></MgmtTree>"
                                        .into(),
                                )),
                                ..Item::default()
                            },
                            Item::default(),
                        ],
                        ..ItemCmd::default()
                    }),
                ],
                is_final: true,
            },
        }
    }

    /// A minimal message body around `body` tokens (WBXML 1.3, SyncML 1.2, no string table).
    fn doc(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x03, 0xA4, 0x01, 0x6A, 0x00];
        v.extend_from_slice(body);
        v
    }

    const HDR: &[u8] = b"\x6D\x6C\x71\x031.2\x00\x01\x72\x03DM/1.2\x00\x01\x65\x031\x00\x01\
        \x5B\x031\x00\x01\x6E\x57\x03t\x00\x01\x01\x67\x57\x03s\x00\x01\x01\x01";

    fn with_body(body: &[u8]) -> Vec<u8> {
        let mut v = HDR.to_vec();
        v.push(0x6B);
        v.extend_from_slice(body);
        v.extend_from_slice(&[0x01, 0x01]);
        doc(&v)
    }

    #[test]
    fn tables_match_the_token_constants() {
        let page0 = [
            (tok::ADD, "Add"),
            (tok::ALERT, "Alert"),
            (tok::ATOMIC, "Atomic"),
            (tok::CHAL, "Chal"),
            (tok::CMD, "Cmd"),
            (tok::CMD_ID, "CmdID"),
            (tok::CMD_REF, "CmdRef"),
            (tok::COPY, "Copy"),
            (tok::CRED, "Cred"),
            (tok::DATA, "Data"),
            (tok::DELETE, "Delete"),
            (tok::EXEC, "Exec"),
            (tok::FINAL, "Final"),
            (tok::GET, "Get"),
            (tok::ITEM, "Item"),
            (tok::LOC_NAME, "LocName"),
            (tok::LOC_URI, "LocURI"),
            (tok::META, "Meta"),
            (tok::MSG_ID, "MsgID"),
            (tok::MSG_REF, "MsgRef"),
            (tok::NO_RESP, "NoResp"),
            (tok::REPLACE, "Replace"),
            (tok::RESP_URI, "RespURI"),
            (tok::RESULTS, "Results"),
            (tok::SEQUENCE, "Sequence"),
            (tok::SESSION_ID, "SessionID"),
            (tok::SOURCE, "Source"),
            (tok::SOURCE_REF, "SourceRef"),
            (tok::STATUS, "Status"),
            (tok::SYNC_BODY, "SyncBody"),
            (tok::SYNC_HDR, "SyncHdr"),
            (tok::SYNC_ML, "SyncML"),
            (tok::TARGET, "Target"),
            (tok::TARGET_REF, "TargetRef"),
            (tok::VER_DTD, "VerDTD"),
            (tok::VER_PROTO, "VerProto"),
            (tok::MORE_DATA, "MoreData"),
            (tok::CORRELATOR, "Correlator"),
        ];
        for (t, name) in page0 {
            assert_eq!(tag_name(0, t), Some(name), "0x{t:02X}");
        }
        let page1 = [
            (tok::FORMAT, "Format"),
            (tok::MARK, "Mark"),
            (tok::MAX_MSG_SIZE, "MaxMsgSize"),
            (tok::NEXT_NONCE, "NextNonce"),
            (tok::SIZE, "Size"),
            (tok::TYPE, "Type"),
            (tok::VERSION, "Version"),
            (tok::MAX_OBJ_SIZE, "MaxObjSize"),
        ];
        for (t, name) in page1 {
            assert_eq!(tag_name(1, t), Some(name), "0x{t:02X}");
        }
        assert_eq!(tag_name(0, 0x30), None);
        assert_eq!(tag_name(0, 0x3D), None);
        assert_eq!(tag_name(1, 0x16), Some("FieldLevel"));
        assert_eq!(tag_name(1, 0x17), None);
        assert_eq!(tag_name(2, tok::MGMT_TREE), Some("MgmtTree"));
        assert_eq!(tag_name(2, 0x3C), Some("ZeroOrOne"));
        assert_eq!(ddf_token("Node"), Some(0x24));
        assert_eq!(ddf_token("node"), Some(0x25));
        assert_eq!(tag_name(3, 0x05), None);
        assert_eq!(tag_name(0, 0x04), None);
    }

    #[test]
    fn mb_u_int32() {
        for v in [
            0u32,
            1,
            0x7F,
            0x80,
            0x1201,
            0x0FD3,
            0x3FFF,
            0x4000,
            u32::MAX,
        ] {
            let mut out = Vec::new();
            put_mb_u32(&mut out, v);
            let mut r = Reader {
                buf: &out,
                base: 0,
                pos: 0,
                strtbl: &[],
                strtbl_at: 0,
                page: 0,
            };
            assert_eq!(r.mb_u32("x"), Ok(v));
            assert_eq!(r.pos, out.len());
        }
        let mut out = Vec::new();
        put_mb_u32(&mut out, 0x1201);
        assert_eq!(out, [0xA4, 0x01]);
        out.clear();
        put_mb_u32(&mut out, 0x0FD3);
        assert_eq!(out, [0x9F, 0x53]);
        let reader = |b: &'static [u8]| Reader {
            buf: b,
            base: 10,
            pos: 0,
            strtbl: &[],
            strtbl_at: 0,
            page: 0,
        };
        assert!(matches!(
            reader(&[0x90, 0x80, 0x80, 0x80, 0x00]).mb_u32("x"),
            Err(WbxmlError::BadInteger { at: 10, .. })
        ));
        assert!(matches!(
            reader(&[0x81, 0x80, 0x80, 0x80, 0x80, 0x00]).mb_u32("x"),
            Err(WbxmlError::BadInteger { at: 10, .. })
        ));
        assert!(matches!(
            reader(&[0x8F, 0xFF, 0xFF, 0xFF, 0x7F]).mb_u32("x"),
            Ok(u32::MAX)
        ));
        assert!(matches!(
            reader(&[0x81, 0x80]).mb_u32("x"),
            Err(WbxmlError::Truncated { at: 10, .. })
        ));
    }

    #[test]
    fn encoding_is_byte_exact() {
        let msg = SyncMl {
            hdr: SyncHdr {
                session_id: "1".into(),
                target: LocRef::new("t"),
                source: LocRef::new("s"),
                ..SyncHdr::default()
            },
            body: SyncBody {
                commands: vec![Command::Get(ItemCmd {
                    cmd_id: 4,
                    meta: Some(Meta::format_type("chr", "")),
                    items: vec![Item {
                        data: Some(Data::Text("a\rb".into())),
                        ..Item::with_target("./x")
                    }],
                    ..ItemCmd::default()
                })],
                is_final: true,
            },
        };
        let mut expected = vec![0x02, 0xA4, 0x01, 0x6A, 0x00];
        expected.extend_from_slice(HDR);
        expected.extend_from_slice(
            b"\x6B\x53\x4B\x034\x00\x01\x5A\x00\x01\x47\x03chr\x00\x01\x13\x01\
              \x00\x00\x54\x6E\x57\x03./x\x00\x01\x01\x4F\x03a\x00\x02\x0D\x03b\x00\x01\x01\x01\
              \x12\x01\x01",
        );
        assert_eq!(encode(&msg), expected);
        assert_eq!(decode(&expected), Ok(msg));
    }

    #[test]
    fn round_trip_and_versions() {
        let msg = sample();
        let bytes = encode(&msg);
        assert_eq!(decode(&bytes), Ok(msg.clone()));
        let mut v11 = msg;
        v11.hdr.version = SyncMlVersion::V1_1;
        let bytes = encode(&v11);
        assert_eq!(&bytes[..4], &[0x02, 0x9F, 0x53, 0x6A]);
        assert_eq!(decode(&bytes), Ok(v11.clone()));
        // The same body under every header form.
        let body = bytes.get(5..).unwrap_or_default().to_vec();
        let with_header = |h: &[u8]| {
            let mut v = h.to_vec();
            v.extend_from_slice(&body);
            v
        };
        // WBXML 1.0: no charset.
        assert_eq!(
            decode(&with_header(&[0x00, 0x9F, 0x53, 0x00])),
            Ok(v11.clone())
        );
        for version in [0x01, 0x02, 0x03] {
            assert_eq!(
                decode(&with_header(&[version, 0x9F, 0x53, 0x6A, 0x00])),
                Ok(v11.clone())
            );
        }
        // Literal public id, from the string table.
        let mut h = vec![0x03, 0x00, 0x00, 0x6A, 0x1E];
        h.extend_from_slice(FPI_SYNCML_1_1.as_bytes());
        h.push(0);
        assert_eq!(decode(&with_header(&h)), Ok(v11.clone()));
        // Unknown public id: VerDTD (1.2) decides.
        let mut expected = v11.clone();
        expected.hdr.version = SyncMlVersion::V1_2;
        assert_eq!(
            decode(&with_header(&[0x03, 0x01, 0x6A, 0x00])),
            Ok(expected)
        );
        // Unsupported public id and charset.
        assert!(matches!(
            decode(&with_header(&[0x03, 0x9F, 0x51, 0x6A, 0x00])),
            Err(WbxmlError::UnsupportedPublicId { at: 1, .. })
        ));
        assert!(matches!(
            decode(&with_header(&[0x03, 0x9F, 0x53, 0x04, 0x00])),
            Err(WbxmlError::UnsupportedCharset { at: 3, mib: 4 })
        ));
    }

    #[test]
    fn libwbxml_forms_decode() {
        // From xml2wbxml: a string table, STR_T, OPAQUE item data with CRLF, content flags on
        // empty elements, SWITCH_PAGE.
        let mut v = vec![0x03, 0xA4, 0x01, 0x6A, 0x0B];
        v.extend_from_slice(b"text/plain\0");
        v.extend_from_slice(HDR);
        v.extend_from_slice(
            b"\x6B\x60\x4B\x033\x00\x01\x54\x67\x57\x03./DevInfo/DevId\x00\x01\x01\
              \x5A\x00\x01\x47\x03chr\x00\x01\x53\x83\x00\x01\x01\x00\x00\
              \x4F\xC3\x05a\r\nb\r\x01\x01\x01\x52\x01\x01\x01",
        );
        let m = decode(&v).unwrap();
        let Command::Replace(r) = &m.body.commands[0] else {
            panic!("Replace")
        };
        assert_eq!(
            r.items[0].meta,
            Some(Meta::format_type("chr", "text/plain"))
        );
        assert_eq!(r.items[0].data, Some(Data::Text("a\nb\n".into())));
        assert!(m.body.is_final);
    }

    #[test]
    fn opaque_item_data() {
        let data = |body: &[u8]| {
            let mut b = b"\x60\x4B\x031\x00\x01\x54\x4F".to_vec();
            b.extend_from_slice(body);
            b.extend_from_slice(b"\x01\x01\x01");
            decode(&with_body(&b)).map(|m| m.body.commands[0].items()[0].data.clone())
        };
        assert_eq!(data(b"\xC3\x06 <a/> "), Ok(Some(Data::Xml("<a/>".into()))));
        assert_eq!(data(b"\xC3\x04<a> "), Ok(Some(Data::Text("<a> ".into()))));
        let e = data(b"\xC3\x03a\xFFb").unwrap_err();
        let at = e.byte().unwrap();
        assert_eq!(e, WbxmlError::NotUtf8 { at });
        let mut probe = b"\x60\x4B\x031\x00\x01\x54\x4F\xC3\x03a\xFFb".to_vec();
        probe.extend_from_slice(b"\x01\x01\x01");
        assert_eq!(with_body(&probe).get(at), Some(&0xFF));
        // Several pieces are text.
        assert_eq!(
            data(b"\x03<a/>\x00\xC3\x01x\x02\x41"),
            Ok(Some(Data::Text("<a/>xA".into())))
        );
        // Inline elements (here TNDS on page 2, then a literal-free SyncML tag) become markup.
        assert_eq!(
            data(b"\x03 \x00\x00\x02\x60\x77\x031.2\x00\x01\x24\x01\x00\x00\x03 & \x00"),
            Ok(Some(Data::Xml(
                "<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD><Node/></MgmtTree> &amp;"
                    .into()
            )))
        );
        // Embedded WBXML TNDS, as libwbxml and devices write it.
        let mut tnds = vec![0x03, 0x00, 0x00, 0x6A, 0x1B];
        tnds.extend_from_slice(FPI_DM_DDF_1_2.as_bytes());
        tnds.extend_from_slice(
            b"\0\x00\x02\x60\x77\x031.2\x00\x01\x64\x66\x03a\x00\x01\x76\x03x & y\x00\x01\x01\x01",
        );
        let mut body = vec![0xC3, u8::try_from(tnds.len()).unwrap()];
        body.extend_from_slice(&tnds);
        assert_eq!(
            data(&body),
            Ok(Some(Data::Xml(
                "<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD><Node><NodeName>a</NodeName>\
                 <Value>x &amp; y</Value></Node></MgmtTree>"
                    .into()
            )))
        );
        let xml = tnds_to_xml(&tnds).unwrap();
        let doc = TndsDocument::from_xml(xml.as_bytes()).unwrap();
        assert_eq!(doc.nodes[0].value.as_deref(), Some("x & y"));
        let again = encode_tnds(&doc);
        assert_eq!(
            TndsDocument::from_xml(tnds_to_xml(&again).unwrap().as_bytes()),
            Ok(doc)
        );
        assert!(
            decode_any(&tnds)
                .unwrap()
                .contains("<Value>x &amp; y</Value>")
        );
    }

    #[test]
    fn errors_are_typed_and_placed() {
        let ok = encode(&sample());
        assert_eq!(decode(&[]), Err(WbxmlError::Empty));
        assert!(matches!(
            decode(b"  <SyncML/>"),
            Err(WbxmlError::NotWbxml { .. })
        ));
        assert_eq!(
            decode(b"\x04\x01"),
            Err(WbxmlError::UnsupportedVersion { at: 0, version: 4 })
        );
        // Every truncation is an error with a place, never a panic.
        for cut in 0..ok.len() {
            let e = decode(&ok[..cut]).unwrap_err();
            let _ = e.to_string();
            if cut > 0 {
                assert!(e.byte().is_some(), "{cut}: {e}");
            }
        }
        // A string table longer than the input.
        let e = decode(&[0x03, 0x01, 0x6A, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F]).unwrap_err();
        assert!(matches!(e, WbxmlError::Truncated { at: 3, .. }), "{e}");
        // OPAQUE longer than the input.
        let e = decode(&doc(b"\x6D\xC3\x8F\xFF\xFF\xFF\x7Fabc")).unwrap_err();
        assert!(matches!(e, WbxmlError::Truncated { at: 6, .. }), "{e}");
        // STR_T outside the table, and without NUL.
        let e = decode(&[0x03, 0x01, 0x6A, 0x02, b'a', b'b', 0x6D, 0x83, 0x05]).unwrap_err();
        assert!(
            matches!(
                e,
                WbxmlError::BadStringRef {
                    at: 8,
                    index: 5,
                    ..
                }
            ),
            "{e}"
        );
        let e = decode(&[0x03, 0x01, 0x6A, 0x02, b'a', b'b', 0x6D, 0x83, 0x00]).unwrap_err();
        assert!(
            matches!(
                e,
                WbxmlError::BadStringRef {
                    at: 8,
                    index: 0,
                    ..
                }
            ),
            "{e}"
        );
        // Unknown tokens, extensions, PI, unknown pages.
        let e = decode(&doc(b"\x6D\x70")).unwrap_err();
        assert!(
            matches!(
                e,
                WbxmlError::UnknownToken {
                    at: 6,
                    token: 0x30,
                    ..
                }
            ),
            "{e}"
        );
        let e = decode(&doc(b"\x6D\xC0")).unwrap_err();
        assert!(matches!(e, WbxmlError::UnknownToken { at: 6, .. }), "{e}");
        let e = decode(&doc(b"\x43")).unwrap_err();
        assert!(matches!(e, WbxmlError::UnknownToken { at: 5, .. }), "{e}");
        let e = decode(&doc(b"\x6D\x00\x07\x45")).unwrap_err();
        assert!(e.to_string().contains("code page 7"), "{e}");
        // Unbalanced END, trailing data, unclosed elements, wrong root.
        assert_eq!(
            decode(&doc(b"\x01")),
            Err(WbxmlError::UnbalancedEnd { at: 5 })
        );
        let mut trailing = ok.clone();
        trailing.push(0x6D);
        assert!(matches!(
            decode(&trailing),
            Err(WbxmlError::Misplaced { .. })
        ));
        let mut trailing = ok.clone();
        trailing.push(0x01);
        assert!(matches!(
            decode(&trailing),
            Err(WbxmlError::UnbalancedEnd { .. })
        ));
        assert!(matches!(
            decode(&doc(b"\x6D\x6C")),
            Err(WbxmlError::Unclosed {
                at: 7,
                opened_at: 6,
                ..
            })
        ));
        assert!(matches!(
            decode(&doc(b"\x6B\x01")),
            Err(WbxmlError::NotSyncMl { .. })
        ));
        assert!(matches!(
            decode(&doc(b"")),
            Err(WbxmlError::Misplaced { .. })
        ));
        // Grammar: a MetInf tag outside Meta, a SyncML tag inside Meta, a missing element,
        // text in an element-only parent, a bad number.
        let e = decode(&with_body(b"\x00\x01\x53\x03x\x00\x01")).unwrap_err();
        assert!(
            matches!(&e, WbxmlError::UnexpectedElement { element, parent, .. } if element == "metinf:Type" && parent == "SyncBody"),
            "{e}"
        );
        let e = decode(&with_body(b"\x53\x4B\x031\x00\x01\x5A\x53\x01\x01")).unwrap_err();
        assert!(
            matches!(&e, WbxmlError::UnexpectedElement { element, parent, .. } if element == "Get" && parent == "Meta"),
            "{e}"
        );
        let e = decode(&with_body(b"\x53\x01")).unwrap_err();
        assert!(
            matches!(&e, WbxmlError::MissingElement { element, .. } if element == "CmdID"),
            "{e}"
        );
        let e = decode(&with_body(b"\x53\x03 x \x00\x01")).unwrap_err();
        assert!(
            matches!(&e, WbxmlError::UnexpectedText { text, parent, .. } if text == "x" && parent == "Get"),
            "{e}"
        );
        let e = decode(&with_body(b"\x53\x4B\x03-1\x00\x01\x01")).unwrap_err();
        assert!(
            matches!(e, WbxmlError::BadValue { what: "CmdID", .. }),
            "{e}"
        );
        // Whitespace between elements (libwbxml -k) is fine.
        let m = decode(&with_body(
            b"\x03\n \x00\x53\x03 \x00\x4B\x031\x00\x01\x01\x12",
        ))
        .unwrap();
        assert!(m.body.is_final);
        // Bad entity.
        let e = decode(&with_body(b"\x46\x4B\x02\x84\xB0\x80\x00\x01\x01")).unwrap_err();
        assert!(matches!(e, WbxmlError::BadEntity { .. }), "{e}");
    }

    #[test]
    fn limits_and_depth() {
        let deep = {
            let mut b = b"\x64\x4B\x031\x00\x01".to_vec();
            for _ in 0..100_000 {
                b.extend_from_slice(b"\x64\x4B\x031\x00\x01");
            }
            with_body(&b)
        };
        let e = decode(&deep).unwrap_err();
        assert!(matches!(e, WbxmlError::TooDeep { limit: 64, .. }), "{e}");
        let limits = DecodeLimits {
            max_text_len: 4,
            ..DecodeLimits::default()
        };
        let e = decode_with(&with_body(b"\x46\x4B\x0312345\x00\x01\x01"), &limits).unwrap_err();
        assert!(matches!(e, WbxmlError::TextTooLarge { .. }), "{e}");
        let limits = DecodeLimits {
            max_commands: 1,
            ..DecodeLimits::default()
        };
        let e = decode_with(&encode(&sample()), &limits).unwrap_err();
        assert!(matches!(e, WbxmlError::TooMany { .. }), "{e}");
        let limits = DecodeLimits {
            max_input_len: 10,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_with(&encode(&sample()), &limits),
            Err(WbxmlError::TooLarge { .. })
        ));
    }

    #[test]
    fn any_document() {
        let mut msg = sample();
        if let Command::Replace(r) = &mut msg.body.commands[1] {
            r.items[0].data = Some(Data::Text("x\r\u{1}".into()));
        }
        let pretty = decode_any(&encode(&msg)).unwrap();
        assert_eq!(pretty, xml::encode_pretty(&msg));
        assert_eq!(decode_any(&xml::encode(&msg)).unwrap(), pretty);
        assert_eq!(xml_to_wbxml(&xml::encode(&msg)).unwrap(), encode(&msg));
        assert_eq!(xml_to_wbxml(&encode(&msg)).unwrap(), encode(&msg));
        let tnds = b"<MgmtTree xmlns='syncml:dmddf1.2'><VerDTD>1.2</VerDTD>\
            <Node><NodeName>a</NodeName><Value>1</Value></Node></MgmtTree>";
        let doc = TndsDocument::from_xml(tnds).unwrap();
        assert_eq!(decode_any(tnds).unwrap(), doc.to_xml_pretty());
        let wbxml = xml_to_wbxml(tnds).unwrap();
        assert_eq!(decode_any(&wbxml).unwrap(), doc.to_xml_pretty());
        assert!(matches!(
            decode_any(b"<html/>"),
            Err(AnyError::Unknown { .. })
        ));
        assert!(matches!(
            decode_any(&wbxml[..wbxml.len() - 1]),
            Err(AnyError::Wbxml(WbxmlError::Unclosed { .. }))
        ));
        assert!(matches!(decode(&wbxml), Err(WbxmlError::NotSyncMl { .. })));
    }
}
