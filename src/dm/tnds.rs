//! TNDS documents (OMA DM Tree and Description Serialization, `application/vnd.syncml.dmtnds+xml`):
//! the XML `MgmtTree` that serialises a DM subtree with its run-time properties and, in DDF
//! files, description properties.
//!
//! This module is the document codec only: [`TndsDocument::from_xml`] reads a document into
//! plain data ([`TndsNode`], [`RtProperties`], [`DfProperties`]) and [`TndsDocument::to_xml`]
//! writes it back. Applying a document to the DM tree (paths relative to the command's target,
//! required `RTProperties`/`Type`, all-or-nothing semantics) is the tree layer's job.
//!
//! Grammar accepted (DDF/TNDS DTD 1.2, leniently ordered):
//!
//! * `MgmtTree (VerDTD, Man?, Mod?, Node+)`; `VerDTD` must be `1.2` and precede the first `Node`;
//!   `MgmtTree` may carry `xmlns="syncml:dmddf1.2"` (compared case-insensitively) and no other
//!   namespace.
//! * `Node (NodeName, Path?, RTProperties?, DFProperties?, (Node* | Value?))`, children in any
//!   order, each single element at most once, never both `Value` and `Node` children.
//! * `RTProperties (ACL?, Format?, Name?, Size?, Title?, TStamp?, Type?, VerNo?)`.
//! * `DFProperties (AccessType?, DefaultValue?, Description?, DFFormat?, Occurrence?, Scope?,
//!   DFTitle?, DFType?, CaseSense?)` (the DTD requires AccessType, DFFormat and DFType; real
//!   DDFs omit some, so they are optional here).
//!
//! Text is trimmed of XML whitespace except in `Value`, which is kept exactly (after entity and
//! character-reference resolution; CDATA is taken literally). The parser is a streaming,
//! iterative state machine over the events of the crate's tokenizer (`xmlpull`): nesting is
//! bounded by [`TndsLimits`], never by the call stack, and every text value is size-checked
//! before it is copied.
//!
//! The writer escapes `&`, `<`, `>` and writes `\r` and other control characters as character
//! references, so any value without NUL survives a write/read round trip unchanged.
#![warn(missing_docs)]

use std::fmt;

use crate::xmlpull::Tokenizer;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesCData, BytesRef, BytesStart, BytesText, Event};

use super::acl::{Acl, AclError};
use super::props::{AccessKind, AccessSet, CaseSense, Format, NodeType, Occurrence, Scope};
use super::uri::{NodeUri, UriError};
use crate::xmltext::{
    Escaper, Sink, XmlWriter, escape_into, is_xml_ws, leading_ws_len, put_number,
    resolve_reference, shorten, take_trimmed, trim_xml, unclosed_message,
};

/// The only `VerDTD` this codec reads and writes.
pub const VER_DTD: &str = "1.2";

/// The TNDS/DDF XML namespace written on `MgmtTree`.
pub const NAMESPACE: &str = "syncml:dmddf1.2";

/// The media type of XML TNDS documents.
pub const MIME_TYPE: &str = "application/vnd.syncml.dmtnds+xml";

/// A TNDS (or DDF) document: the `MgmtTree` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TndsDocument {
    /// `VerDTD`; always `1.2` for parsed documents.
    pub ver_dtd: String,
    /// `Man`: the device manufacturer, if given.
    pub man: Option<String>,
    /// `Mod`: the device model, if given.
    pub model: Option<String>,
    /// The top-level `Node` elements, in document order.
    pub nodes: Vec<TndsNode>,
}

impl Default for TndsDocument {
    fn default() -> Self {
        TndsDocument {
            ver_dtd: VER_DTD.to_owned(),
            man: None,
            model: None,
            nodes: Vec::new(),
        }
    }
}

/// One `Node` element with its properties and either child nodes or a value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TndsNode {
    /// `NodeName` text; may be empty (the name is assigned at creation).
    pub name: String,
    /// `Path` text as written (e.g. `Vendor/ISP`, `./CDMA`, `.`), `None` if absent.
    pub path: Option<String>,
    /// `RTProperties`, if present.
    pub rt: Option<RtProperties>,
    /// `DFProperties`, if present.
    pub df: Option<DfProperties>,
    /// Child `Node` elements, in document order.
    pub children: Vec<TndsNode>,
    /// `Value` text, exactly as carried (unescaped); `None` if absent.
    pub value: Option<String>,
}

impl TndsNode {
    /// A node with the given name and nothing else.
    pub fn new(name: impl Into<String>) -> TndsNode {
        TndsNode {
            name: name.into(),
            ..TndsNode::default()
        }
    }

    /// The `Path` parsed as a node URI: `None` without a `Path`, the root for an empty one.
    /// Paths are relative to the target URI of the command carrying the document.
    pub fn path_uri(&self) -> Option<Result<NodeUri, UriError>> {
        self.path.as_deref().map(|p| {
            if p.is_empty() {
                Ok(NodeUri::root())
            } else {
                NodeUri::parse(p)
            }
        })
    }

    /// Number of `Node` elements in this subtree, this node included.
    pub fn node_count(&self) -> usize {
        let mut count = 0;
        let mut stack: Vec<&TndsNode> = vec![self];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.iter());
        }
        count
    }
}

/// `RTProperties`: the run-time properties of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtProperties {
    /// `ACL`.
    pub acl: Option<Acl>,
    /// `Format`.
    pub format: Option<Format>,
    /// `Name`.
    pub name: Option<String>,
    /// `Size` (decimal text, not checked here).
    pub size: Option<String>,
    /// `Title`.
    pub title: Option<String>,
    /// `TStamp` (ISO 8601 text, not checked here).
    pub tstamp: Option<String>,
    /// `Type`: `MIME` or `DDFName`.
    pub ty: Option<NodeType>,
    /// `VerNo` (decimal text, not checked here).
    pub verno: Option<String>,
}

/// A number or a text, as `Size` and `VerNo` come: counted from a tree, or read from a
/// document (where they are not checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumText<'a> {
    /// Written in decimal.
    Num(u64),
    /// Written as it is (escaped).
    Text(&'a str),
}

/// `RTProperties`, borrowed: what the document writer and a tree's direct export
/// (`DmTree::export_tnds_xml`) write through the same code.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RtView<'a> {
    pub(crate) acl: Option<&'a Acl>,
    pub(crate) format: Option<Format>,
    pub(crate) name: Option<&'a str>,
    pub(crate) size: Option<NumText<'a>>,
    pub(crate) title: Option<&'a str>,
    pub(crate) tstamp: Option<&'a str>,
    pub(crate) ty: Option<&'a NodeType>,
    pub(crate) verno: Option<NumText<'a>>,
}

impl RtView<'_> {
    /// Whether no property is there (the node then has no `RTProperties` element).
    pub(crate) fn is_empty(&self) -> bool {
        self.acl.is_none()
            && self.format.is_none()
            && self.name.is_none()
            && self.size.is_none()
            && self.title.is_none()
            && self.tstamp.is_none()
            && self.ty.is_none()
            && self.verno.is_none()
    }
}

impl<'a> From<&'a RtProperties> for RtView<'a> {
    fn from(rt: &'a RtProperties) -> RtView<'a> {
        RtView {
            acl: rt.acl.as_ref(),
            format: rt.format,
            name: rt.name.as_deref(),
            size: rt.size.as_deref().map(NumText::Text),
            title: rt.title.as_deref(),
            tstamp: rt.tstamp.as_deref(),
            ty: rt.ty.as_ref(),
            verno: rt.verno.as_deref().map(NumText::Text),
        }
    }
}

/// `DFProperties`: the description-framework properties of a node (DDF documents).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DfProperties {
    /// `AccessType`: the commands the node supports (empty when absent).
    pub access_type: AccessSet,
    /// `DefaultValue`.
    pub default_value: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `DFFormat`.
    pub df_format: Option<Format>,
    /// `Occurrence`.
    pub occurrence: Option<Occurrence>,
    /// `Scope`.
    pub scope: Option<Scope>,
    /// `DFTitle`.
    pub df_title: Option<String>,
    /// `DFType`: `MIME` or `DDFName`.
    pub df_type: Option<NodeType>,
    /// `CaseSense`.
    pub case_sense: Option<CaseSense>,
}

/// Resource limits for parsing untrusted documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TndsLimits {
    /// Maximum nesting of `Node` elements (default 64). Dropping a [`TndsNode`] tree recurses
    /// once per level, so keep this modest.
    pub max_depth: usize,
    /// Maximum bytes of one text value (default 1 MiB).
    pub max_value_len: usize,
    /// Maximum number of `Node` elements in the document (default 1,000,000).
    pub max_nodes: usize,
    /// Maximum input length in bytes (default 64 MiB).
    pub max_input_len: usize,
}

impl Default for TndsLimits {
    fn default() -> Self {
        TndsLimits {
            max_depth: 64,
            max_value_len: 1 << 20,
            max_nodes: 1_000_000,
            max_input_len: 64 << 20,
        }
    }
}

/// A place in the input: 1-based line and column (in characters) and the 0-based byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
    /// Byte offset from the start of the input.
    pub byte: usize,
}

impl Position {
    /// Computes the line and column of byte offset `byte` in `input` (clamped to its length).
    pub fn at(input: &[u8], byte: usize) -> Position {
        let byte = byte.min(input.len());
        let before = input.get(..byte).unwrap_or_default();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + before
            .get(line_start..)
            .unwrap_or_default()
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        Position { line, column, byte }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a TNDS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TndsError {
    /// The input is not well-formed XML (the message comes from the XML reader or names the
    /// structural problem, e.g. an unclosed element or content after the root).
    #[error("malformed XML at {pos}: {message}")]
    Xml {
        /// Where the problem was found.
        pos: Position,
        /// What is wrong.
        message: String,
    },
    /// An element that is not allowed where it stands.
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
    #[error("missing element {element} in <{parent}> at {pos}")]
    MissingElement {
        /// Where the enclosing element starts (or where the element was expected).
        pos: Position,
        /// The missing element (or a description of the allowed choices).
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
    /// The document is not a TNDS `MgmtTree` (e.g. its root is `SyncML` or `Add`).
    #[error("not a TNDS document: {reason}")]
    NotTnds {
        /// Why.
        reason: String,
    },
    /// `VerDTD` is not `1.2` (e.g. the DM 1.1.2 `1.1.2` tree files).
    #[error("unsupported TNDS VerDTD `{found}` at {pos}: only 1.2 is supported")]
    UnsupportedVersion {
        /// Where the `VerDTD` element starts.
        pos: Position,
        /// The version found (shortened).
        found: String,
    },
    /// A namespace other than `syncml:dmddf1.2` is declared.
    #[error("unknown namespace `{ns}` at {pos}: only syncml:dmddf1.2 is accepted")]
    UnknownNamespace {
        /// Where the declaring element starts.
        pos: Position,
        /// The namespace declared (shortened).
        ns: String,
    },
    /// A property value that is not allowed (Format name, Occurrence, Scope, CaseSense,
    /// AccessType).
    #[error("invalid {what} `{value}` at {pos}")]
    BadValue {
        /// Where the value's element starts.
        pos: Position,
        /// Which kind of value.
        what: &'static str,
        /// The value found (shortened).
        value: String,
    },
    /// The `ACL` text does not follow the ACL grammar.
    #[error("invalid ACL at {pos}: {source}")]
    BadAcl {
        /// Where the `ACL` element starts.
        pos: Position,
        /// The ACL grammar error.
        source: AclError,
    },
    /// `Node` elements are nested deeper than the limit.
    #[error("Node elements nested deeper than {limit} levels at {pos}")]
    TooDeep {
        /// Where the first too-deep `Node` starts.
        pos: Position,
        /// The limit.
        limit: usize,
    },
    /// A text value is longer than the limit.
    #[error("text value at {pos} is at least {len} bytes, over the limit of {limit}")]
    ValueTooLarge {
        /// Where the element holding the text starts.
        pos: Position,
        /// Bytes seen when the limit was passed.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The document has more `Node` elements than the limit.
    #[error("the document has more than {limit} Node elements")]
    TooManyNodes {
        /// The limit.
        limit: usize,
    },
    /// The input is longer than the limit.
    #[error("the input is {len} bytes, over the limit of {limit}")]
    InputTooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The input is empty or holds no element.
    #[error("the TNDS document is empty")]
    Empty,
}

impl TndsError {
    /// Where the error was found, when it has a place in the input.
    pub fn position(&self) -> Option<Position> {
        match self {
            TndsError::Xml { pos, .. }
            | TndsError::UnexpectedElement { pos, .. }
            | TndsError::MissingElement { pos, .. }
            | TndsError::DuplicateElement { pos, .. }
            | TndsError::UnexpectedText { pos, .. }
            | TndsError::UnsupportedVersion { pos, .. }
            | TndsError::UnknownNamespace { pos, .. }
            | TndsError::BadValue { pos, .. }
            | TndsError::BadAcl { pos, .. }
            | TndsError::TooDeep { pos, .. }
            | TndsError::ValueTooLarge { pos, .. } => Some(*pos),
            TndsError::NotTnds { .. }
            | TndsError::TooManyNodes { .. }
            | TndsError::InputTooLarge { .. }
            | TndsError::Empty => None,
        }
    }
}

impl TndsDocument {
    /// Parses a TNDS document with the default [`TndsLimits`].
    pub fn from_xml(input: &[u8]) -> Result<TndsDocument, TndsError> {
        TndsDocument::from_xml_with(input, &TndsLimits::default())
    }

    /// Parses a TNDS document, enforcing `limits`.
    pub fn from_xml_with(input: &[u8], limits: &TndsLimits) -> Result<TndsDocument, TndsError> {
        if input.len() > limits.max_input_len {
            return Err(TndsError::InputTooLarge {
                len: input.len(),
                limit: limits.max_input_len,
            });
        }
        let body = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
        if body.iter().all(|&b| is_xml_ws(b)) {
            return Err(TndsError::Empty);
        }
        Parser::new(input, limits).run()
    }

    /// The document as compact XML, with `xmlns="syncml:dmddf1.2"` on `MgmtTree`.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(self.size_hint());
        XmlWriter {
            out: &mut out,
            pretty: false,
        }
        .document(self);
        out
    }

    /// The document as XML indented by two spaces per level, for humans. `Value` and other
    /// text is written inline, so it reads back exactly like [`TndsDocument::to_xml`].
    pub fn to_xml_pretty(&self) -> String {
        let mut out = String::with_capacity(self.size_hint() * 2);
        XmlWriter {
            out: &mut out,
            pretty: true,
        }
        .document(self);
        out
    }

    /// Appends the compact XML of the document to `out`.
    pub fn write_xml(&self, out: &mut Vec<u8>) {
        out.reserve(self.size_hint());
        XmlWriter { out, pretty: false }.document(self);
    }

    /// Number of `Node` elements in the document.
    pub fn node_count(&self) -> usize {
        self.nodes.iter().map(TndsNode::node_count).sum()
    }

    fn size_hint(&self) -> usize {
        128 + self.node_count().saturating_mul(96)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

const FORMAT_CHOICES: &str = "b64, bin, bool, chr, int, node, null, xml, date, time or float";

/// Elements of the TNDS/DDF grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum El {
    MgmtTree,
    VerDtd,
    Man,
    Mod,
    Node,
    NodeName,
    Path,
    RtProps,
    DfProps,
    Value,
    Acl,
    Format,
    Name,
    Size,
    Title,
    TStamp,
    Type,
    VerNo,
    AccessType,
    DefaultValue,
    Description,
    DfFormat,
    Occurrence,
    Scope,
    DfTitle,
    DfType,
    CaseSense,
    Mime,
    DdfName,
    FormatName(Format),
    Access(AccessKind),
    /// An Occurrence choice; the bool says it carries N as text.
    Occ(&'static str, bool),
    ScopeName(Scope),
    Case(CaseSense),
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
}

impl El {
    fn name(self) -> &'static str {
        match self {
            El::MgmtTree => "MgmtTree",
            El::VerDtd => "VerDTD",
            El::Man => "Man",
            El::Mod => "Mod",
            El::Node => "Node",
            El::NodeName => "NodeName",
            El::Path => "Path",
            El::RtProps => "RTProperties",
            El::DfProps => "DFProperties",
            El::Value => "Value",
            El::Acl => "ACL",
            El::Format => "Format",
            El::Name => "Name",
            El::Size => "Size",
            El::Title => "Title",
            El::TStamp => "TStamp",
            El::Type => "Type",
            El::VerNo => "VerNo",
            El::AccessType => "AccessType",
            El::DefaultValue => "DefaultValue",
            El::Description => "Description",
            El::DfFormat => "DFFormat",
            El::Occurrence => "Occurrence",
            El::Scope => "Scope",
            El::DfTitle => "DFTitle",
            El::DfType => "DFType",
            El::CaseSense => "CaseSense",
            El::Mime => "MIME",
            El::DdfName => "DDFName",
            El::FormatName(f) => f.as_str(),
            El::Access(k) => k.as_str(),
            El::Occ(name, _) => name,
            El::ScopeName(s) => s.as_str(),
            El::Case(c) => c.as_str(),
        }
    }

    fn content(self) -> Content {
        match self {
            El::MgmtTree
            | El::Node
            | El::RtProps
            | El::DfProps
            | El::Format
            | El::Type
            | El::AccessType
            | El::DfFormat
            | El::Occurrence
            | El::Scope
            | El::DfType
            | El::CaseSense => Content::Elements,
            El::FormatName(_)
            | El::Access(_)
            | El::ScopeName(_)
            | El::Case(_)
            | El::Occ(_, false) => Content::Empty,
            El::VerDtd
            | El::Man
            | El::Mod
            | El::NodeName
            | El::Path
            | El::Value
            | El::Acl
            | El::Name
            | El::Size
            | El::Title
            | El::TStamp
            | El::VerNo
            | El::DefaultValue
            | El::Description
            | El::DfTitle
            | El::Mime
            | El::DdfName
            | El::Occ(_, true) => Content::Text,
        }
    }
}

/// The child element `local` of `parent`: `Ok(None)` when it is unknown there, `Err(what)` when
/// `parent` is a choice of names and `local` is not one of them.
fn child_of(parent: El, local: &str) -> Result<Option<El>, &'static str> {
    Ok(Some(match parent {
        El::MgmtTree => match local {
            "VerDTD" => El::VerDtd,
            "Man" => El::Man,
            "Mod" => El::Mod,
            "Node" => El::Node,
            _ => return Ok(None),
        },
        El::Node => match local {
            "NodeName" => El::NodeName,
            "Path" => El::Path,
            "RTProperties" => El::RtProps,
            "DFProperties" => El::DfProps,
            "Node" => El::Node,
            "Value" => El::Value,
            _ => return Ok(None),
        },
        El::RtProps => match local {
            "ACL" => El::Acl,
            "Format" => El::Format,
            "Name" => El::Name,
            "Size" => El::Size,
            "Title" => El::Title,
            "TStamp" => El::TStamp,
            "Type" => El::Type,
            "VerNo" => El::VerNo,
            _ => return Ok(None),
        },
        El::DfProps => match local {
            "AccessType" => El::AccessType,
            "DefaultValue" => El::DefaultValue,
            "Description" => El::Description,
            "DFFormat" => El::DfFormat,
            "Occurrence" => El::Occurrence,
            "Scope" => El::Scope,
            "DFTitle" => El::DfTitle,
            "DFType" => El::DfType,
            "CaseSense" => El::CaseSense,
            _ => return Ok(None),
        },
        El::Format | El::DfFormat => match local.parse::<Format>() {
            Ok(f) => El::FormatName(f),
            Err(_) => return Err("Format"),
        },
        El::Type | El::DfType => match local {
            "MIME" => El::Mime,
            "DDFName" => El::DdfName,
            _ => return Ok(None),
        },
        El::AccessType => match local.parse::<AccessKind>() {
            Ok(k) => El::Access(k),
            Err(_) => return Err("AccessType"),
        },
        El::Occurrence => match local {
            "One" => El::Occ("One", false),
            "ZeroOrOne" => El::Occ("ZeroOrOne", false),
            "ZeroOrMore" => El::Occ("ZeroOrMore", false),
            "OneOrMore" => El::Occ("OneOrMore", false),
            "ZeroOrN" => El::Occ("ZeroOrN", true),
            "OneOrN" => El::Occ("OneOrN", true),
            _ => return Err("Occurrence"),
        },
        El::Scope => match local.parse::<Scope>() {
            Ok(s) => El::ScopeName(s),
            Err(_) => return Err("Scope"),
        },
        El::CaseSense => match local.parse::<CaseSense>() {
            Ok(c) => El::Case(c),
            Err(_) => return Err("CaseSense"),
        },
        _ => return Ok(None),
    }))
}

/// The value chosen inside a choice container (Format, Type, Occurrence, Scope, CaseSense).
#[derive(Debug)]
enum Pick {
    None,
    Format(Format),
    Type(NodeType),
    Occurrence(Occurrence),
    Scope(Scope),
    Case(CaseSense),
}

/// A `Node` being built.
struct NodeBuild {
    node: TndsNode,
    name_seen: bool,
    access_seen: bool,
    start: usize,
}

struct Parser<'a> {
    input: &'a [u8],
    limits: &'a TndsLimits,
    /// Open elements with the byte offset of their start tags.
    stack: Vec<(El, usize)>,
    /// Open `Node` elements, outermost first.
    nodes: Vec<NodeBuild>,
    doc: TndsDocument,
    ver_seen: bool,
    root_done: bool,
    node_count: usize,
    /// Text of the open text element.
    text: String,
    pick: Pick,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], limits: &'a TndsLimits) -> Parser<'a> {
        Parser {
            input,
            limits,
            stack: Vec::new(),
            nodes: Vec::new(),
            doc: TndsDocument::default(),
            ver_seen: false,
            root_done: false,
            node_count: 0,
            text: String::new(),
            pick: Pick::None,
        }
    }

    fn pos(&self, byte: usize) -> Position {
        Position::at(self.input, byte)
    }

    fn xml_err(&self, byte: usize, message: impl Into<String>) -> TndsError {
        TndsError::Xml {
            pos: self.pos(byte),
            message: message.into(),
        }
    }

    fn run(mut self) -> Result<TndsDocument, TndsError> {
        let mut tokens = Tokenizer::new(self.input).map_err(|e| self.xml_err(e.at, e.message))?;
        loop {
            let at = tokens.position();
            let event = match tokens.next_event() {
                Ok(event) => event,
                Err(e) => return Err(self.xml_err(e.at, e.message)),
            };
            match event {
                Event::Start(e) => self.start(&e, at)?,
                Event::Empty(e) => {
                    self.start(&e, at)?;
                    self.end(at)?;
                }
                Event::End(_) => self.end(at)?,
                Event::Text(t) => self.text(&t, at)?,
                Event::CData(c) => self.cdata(&c, at)?,
                Event::GeneralRef(r) => self.reference(&r, at)?,
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(&(el, start)) = self.stack.last() {
            return Err(self.xml_err(
                self.input.len(),
                unclosed_message(el.name(), self.pos(start)),
            ));
        }
        if !self.root_done {
            return Err(TndsError::Empty);
        }
        Ok(self.doc)
    }

    fn start(&mut self, e: &BytesStart<'_>, at: usize) -> Result<(), TndsError> {
        let qname = e.name();
        let local = crate::xmltext::local_name(&qname);
        let el = match self.stack.last() {
            None => {
                if self.root_done {
                    return Err(self.xml_err(
                        at,
                        format!("element <{}> after the root element", shorten(local)),
                    ));
                }
                if local != "MgmtTree" {
                    return Err(TndsError::NotTnds {
                        reason: format!("the root element is <{}>, not <MgmtTree>", shorten(local)),
                    });
                }
                El::MgmtTree
            }
            Some(&(parent, _)) => match child_of(parent, local) {
                Ok(Some(el)) => el,
                Ok(None) => {
                    return Err(TndsError::UnexpectedElement {
                        pos: self.pos(at),
                        element: shorten(local),
                        parent: parent.name().to_owned(),
                    });
                }
                Err(what) => {
                    return Err(TndsError::BadValue {
                        pos: self.pos(at),
                        what,
                        value: shorten(local),
                    });
                }
            },
        };
        self.check_attributes(e, at)?;
        self.open(el, at)?;
        self.stack.push((el, at));
        Ok(())
    }

    /// Refuses malformed attributes and namespace declarations other than the TNDS one.
    fn check_attributes(&self, e: &BytesStart<'_>, at: usize) -> Result<(), TndsError> {
        if e.attributes_raw().bytes().all(crate::xmltext::is_xml_ws) {
            // No attribute at all (every element but the root, as a rule): nothing to check.
            return Ok(());
        }
        for attr in e.attributes() {
            let attr = attr.map_err(|err| self.xml_err(at, err.to_string()))?;
            let key = attr.key.into_inner();
            if key == "xmlns" || key.starts_with("xmlns:") {
                let value = attr
                    .normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|err| self.xml_err(at, err.to_string()))?;
                if !trim_xml(&value).eq_ignore_ascii_case(NAMESPACE) {
                    return Err(TndsError::UnknownNamespace {
                        pos: self.pos(at),
                        ns: shorten(&value),
                    });
                }
            }
        }
        Ok(())
    }

    fn parent_name(&self) -> String {
        self.stack
            .last()
            .map_or("(document)", |&(el, _)| el.name())
            .to_owned()
    }

    fn duplicate(&self, el: El, at: usize) -> TndsError {
        TndsError::DuplicateElement {
            pos: self.pos(at),
            element: el.name().to_owned(),
            parent: self.parent_name(),
        }
    }

    fn unexpected(&self, el: El, at: usize) -> TndsError {
        TndsError::UnexpectedElement {
            pos: self.pos(at),
            element: el.name().to_owned(),
            parent: self.parent_name(),
        }
    }

    fn internal(&self, at: usize) -> TndsError {
        self.xml_err(at, "internal parser state error")
    }

    fn cur(&mut self, at: usize) -> Result<&mut NodeBuild, TndsError> {
        match self.nodes.last_mut() {
            Some(node) => Ok(node),
            None => Err(TndsError::Xml {
                pos: Position::at(self.input, at),
                message: "internal parser state error".to_owned(),
            }),
        }
    }

    fn rt(&mut self, at: usize) -> Result<&mut RtProperties, TndsError> {
        Ok(self.cur(at)?.node.rt.get_or_insert_with(Default::default))
    }

    fn df(&mut self, at: usize) -> Result<&mut DfProperties, TndsError> {
        Ok(self.cur(at)?.node.df.get_or_insert_with(Default::default))
    }

    /// Checks that `el` may open here and prepares its state.
    fn open(&mut self, el: El, at: usize) -> Result<(), TndsError> {
        let dup = match el {
            El::MgmtTree => false,
            El::VerDtd => self.ver_seen,
            El::Man => self.doc.man.is_some(),
            El::Mod => self.doc.model.is_some(),
            El::Node => {
                if self.stack.len() == 1 {
                    if !self.ver_seen {
                        return Err(TndsError::MissingElement {
                            pos: self.pos(at),
                            element: "VerDTD".to_owned(),
                            parent: "MgmtTree".to_owned(),
                        });
                    }
                } else if self.cur(at)?.node.value.is_some() {
                    return Err(self.unexpected(el, at));
                }
                if self.nodes.len() >= self.limits.max_depth {
                    return Err(TndsError::TooDeep {
                        pos: self.pos(at),
                        limit: self.limits.max_depth,
                    });
                }
                self.node_count += 1;
                if self.node_count > self.limits.max_nodes {
                    return Err(TndsError::TooManyNodes {
                        limit: self.limits.max_nodes,
                    });
                }
                self.nodes.push(NodeBuild {
                    node: TndsNode::default(),
                    name_seen: false,
                    access_seen: false,
                    start: at,
                });
                false
            }
            El::NodeName => self.cur(at)?.name_seen,
            El::Path => self.cur(at)?.node.path.is_some(),
            El::Value => {
                let cur = self.cur(at)?;
                let seen = cur.node.value.is_some();
                if !seen && !cur.node.children.is_empty() {
                    return Err(self.unexpected(el, at));
                }
                seen
            }
            El::RtProps => {
                let cur = self.cur(at)?;
                let seen = cur.node.rt.is_some();
                cur.node.rt.get_or_insert_with(Default::default);
                seen
            }
            El::DfProps => {
                let cur = self.cur(at)?;
                let seen = cur.node.df.is_some();
                cur.node.df.get_or_insert_with(Default::default);
                seen
            }
            El::Acl => self.rt(at)?.acl.is_some(),
            El::Format => self.rt(at)?.format.is_some(),
            El::Name => self.rt(at)?.name.is_some(),
            El::Size => self.rt(at)?.size.is_some(),
            El::Title => self.rt(at)?.title.is_some(),
            El::TStamp => self.rt(at)?.tstamp.is_some(),
            El::Type => self.rt(at)?.ty.is_some(),
            El::VerNo => self.rt(at)?.verno.is_some(),
            El::AccessType => {
                let cur = self.cur(at)?;
                let seen = cur.access_seen;
                cur.access_seen = true;
                seen
            }
            El::DefaultValue => self.df(at)?.default_value.is_some(),
            El::Description => self.df(at)?.description.is_some(),
            El::DfFormat => self.df(at)?.df_format.is_some(),
            El::Occurrence => self.df(at)?.occurrence.is_some(),
            El::Scope => self.df(at)?.scope.is_some(),
            El::DfTitle => self.df(at)?.df_title.is_some(),
            El::DfType => self.df(at)?.df_type.is_some(),
            El::CaseSense => self.df(at)?.case_sense.is_some(),
            El::Access(kind) => {
                let df = self.df(at)?;
                let seen = df.access_type.contains(kind);
                df.access_type.insert(kind);
                seen
            }
            El::Mime
            | El::DdfName
            | El::FormatName(_)
            | El::Occ(..)
            | El::ScopeName(_)
            | El::Case(_) => {
                if !matches!(self.pick, Pick::None) {
                    return Err(self.unexpected(el, at));
                }
                false
            }
        };
        if dup {
            return Err(self.duplicate(el, at));
        }
        match el.content() {
            Content::Text => self.text.clear(),
            Content::Elements if self.stack.len() > 1 && el != El::Node => self.pick = Pick::None,
            _ => {}
        }
        // Choice leaves without content are decided at the start tag.
        match el {
            El::FormatName(f) => self.pick = Pick::Format(f),
            El::ScopeName(s) => self.pick = Pick::Scope(s),
            El::Case(c) => self.pick = Pick::Case(c),
            El::Occ(name, false) => match Occurrence::from_parts(name, None) {
                Ok(o) => self.pick = Pick::Occurrence(o),
                Err(e) => {
                    return Err(TndsError::BadValue {
                        pos: self.pos(at),
                        what: e.what,
                        value: e.value,
                    });
                }
            },
            _ => {}
        }
        Ok(())
    }

    fn missing(&self, element: &str, parent: El, at: usize) -> TndsError {
        TndsError::MissingElement {
            pos: self.pos(at),
            element: element.to_owned(),
            parent: parent.name().to_owned(),
        }
    }

    /// Closes the innermost element.
    fn end(&mut self, at: usize) -> Result<(), TndsError> {
        let Some((el, start)) = self.stack.pop() else {
            return Err(self.xml_err(at, "end tag without a start tag"));
        };
        match el {
            El::MgmtTree => {
                if !self.ver_seen {
                    return Err(self.missing("VerDTD", el, start));
                }
                if self.doc.nodes.is_empty() {
                    return Err(self.missing("Node", el, start));
                }
                self.root_done = true;
            }
            El::VerDtd => {
                let found = trim_xml(&self.text);
                if found != VER_DTD {
                    return Err(TndsError::UnsupportedVersion {
                        pos: self.pos(start),
                        found: shorten(found),
                    });
                }
                self.ver_seen = true;
                self.doc.ver_dtd = VER_DTD.to_owned();
            }
            El::Man => self.doc.man = Some(self.take_trimmed()),
            El::Mod => self.doc.model = Some(self.take_trimmed()),
            El::Node => {
                let Some(done) = self.nodes.pop() else {
                    return Err(self.internal(at));
                };
                if !done.name_seen {
                    return Err(self.missing("NodeName", el, done.start));
                }
                match self.nodes.last_mut() {
                    Some(parent) => parent.node.children.push(done.node),
                    None => self.doc.nodes.push(done.node),
                }
            }
            El::NodeName => {
                let name = self.take_trimmed();
                let cur = self.cur(at)?;
                cur.node.name = name;
                cur.name_seen = true;
            }
            El::Path => {
                let path = self.take_trimmed();
                self.cur(at)?.node.path = Some(path);
            }
            El::Value => {
                let value = std::mem::take(&mut self.text);
                self.cur(at)?.node.value = Some(value);
            }
            El::RtProps | El::DfProps | El::AccessType | El::Access(_) => {}
            El::Acl => {
                let acl = Acl::parse(trim_xml(&self.text)).map_err(|source| TndsError::BadAcl {
                    pos: self.pos(start),
                    source,
                })?;
                self.rt(at)?.acl = Some(acl);
            }
            El::Name => {
                let v = self.take_trimmed();
                self.rt(at)?.name = Some(v);
            }
            El::Size => {
                let v = self.take_trimmed();
                self.rt(at)?.size = Some(v);
            }
            El::Title => {
                let v = self.take_trimmed();
                self.rt(at)?.title = Some(v);
            }
            El::TStamp => {
                let v = self.take_trimmed();
                self.rt(at)?.tstamp = Some(v);
            }
            El::VerNo => {
                let v = self.take_trimmed();
                self.rt(at)?.verno = Some(v);
            }
            El::DefaultValue => {
                let v = self.take_trimmed();
                self.df(at)?.default_value = Some(v);
            }
            El::Description => {
                let v = self.take_trimmed();
                self.df(at)?.description = Some(v);
            }
            El::DfTitle => {
                let v = self.take_trimmed();
                self.df(at)?.df_title = Some(v);
            }
            El::Format | El::DfFormat => {
                let Pick::Format(f) = std::mem::replace(&mut self.pick, Pick::None) else {
                    return Err(self.missing(FORMAT_CHOICES, el, start));
                };
                if el == El::Format {
                    self.rt(at)?.format = Some(f);
                } else {
                    self.df(at)?.df_format = Some(f);
                }
            }
            El::Type | El::DfType => {
                let Pick::Type(t) = std::mem::replace(&mut self.pick, Pick::None) else {
                    return Err(self.missing("MIME or DDFName", el, start));
                };
                if el == El::Type {
                    self.rt(at)?.ty = Some(t);
                } else {
                    self.df(at)?.df_type = Some(t);
                }
            }
            El::Occurrence => {
                let Pick::Occurrence(o) = std::mem::replace(&mut self.pick, Pick::None) else {
                    return Err(self.missing(
                        "One, ZeroOrOne, ZeroOrMore, OneOrMore, ZeroOrN or OneOrN",
                        el,
                        start,
                    ));
                };
                self.df(at)?.occurrence = Some(o);
            }
            El::Scope => {
                let Pick::Scope(s) = std::mem::replace(&mut self.pick, Pick::None) else {
                    return Err(self.missing("Permanent or Dynamic", el, start));
                };
                self.df(at)?.scope = Some(s);
            }
            El::CaseSense => {
                let Pick::Case(c) = std::mem::replace(&mut self.pick, Pick::None) else {
                    return Err(self.missing("CS or CIS", el, start));
                };
                self.df(at)?.case_sense = Some(c);
            }
            El::Mime => self.pick = Pick::Type(NodeType::Mime(self.take_trimmed())),
            El::DdfName => self.pick = Pick::Type(NodeType::DdfName(self.take_trimmed())),
            El::Occ(name, true) => {
                let o = Occurrence::from_parts(name, Some(trim_xml(&self.text))).map_err(|e| {
                    TndsError::BadValue {
                        pos: self.pos(start),
                        what: e.what,
                        value: e.value,
                    }
                })?;
                self.pick = Pick::Occurrence(o);
            }
            El::FormatName(_) | El::Occ(_, false) | El::ScopeName(_) | El::Case(_) => {}
        }
        Ok(())
    }

    fn take_trimmed(&mut self) -> String {
        take_trimmed(&mut self.text)
    }

    /// Appends `piece` (of raw length `raw_len`) to the open text element, or checks that it
    /// is whitespace where only elements are allowed.
    fn push_text(
        &mut self,
        raw: &str,
        at: usize,
        resolve: impl FnOnce(&mut String),
    ) -> Result<(), TndsError> {
        match self.stack.last() {
            None => {
                if raw.bytes().all(is_xml_ws) {
                    Ok(())
                } else {
                    Err(self.xml_err(at, "text outside the root element"))
                }
            }
            Some(&(el, start)) => match el.content() {
                Content::Text => {
                    let len = self.text.len().saturating_add(raw.len());
                    if len > self.limits.max_value_len {
                        return Err(TndsError::ValueTooLarge {
                            pos: self.pos(start),
                            len,
                            limit: self.limits.max_value_len,
                        });
                    }
                    resolve(&mut self.text);
                    Ok(())
                }
                Content::Elements | Content::Empty => {
                    if raw.bytes().all(is_xml_ws) {
                        Ok(())
                    } else {
                        Err(TndsError::UnexpectedText {
                            pos: self.pos(at.saturating_add(leading_ws_len(raw))),
                            parent: el.name().to_owned(),
                            text: shorten(trim_xml(raw)),
                        })
                    }
                }
            },
        }
    }

    fn text(&mut self, t: &BytesText<'_>, at: usize) -> Result<(), TndsError> {
        let raw: &str = t;
        self.push_text(raw, at, |buf| buf.push_str(&t.xml10_content()))
    }

    fn cdata(&mut self, c: &BytesCData<'_>, at: usize) -> Result<(), TndsError> {
        let raw: &str = c;
        if self.stack.is_empty() {
            return Err(self.xml_err(at, "CDATA outside the root element"));
        }
        // A CDATA section is never whitespace-only content for element-only parents.
        if !matches!(self.stack.last(), Some(&(el, _)) if el.content() == Content::Text)
            && !raw.is_empty()
        {
            let parent = self.parent_name();
            return Err(TndsError::UnexpectedText {
                pos: self.pos(at),
                parent,
                text: shorten(raw),
            });
        }
        self.push_text(raw, at, |buf| buf.push_str(&c.xml10_content()))
    }

    fn reference(&mut self, r: &BytesRef<'_>, at: usize) -> Result<(), TndsError> {
        let name: &str = r;
        let ch = resolve_reference(r).map_err(|message| self.xml_err(at, message))?;
        let mut utf8 = [0u8; 4];
        let s: &str = ch.encode_utf8(&mut utf8);
        if self.stack.is_empty() {
            return Err(self.xml_err(at, "reference outside the root element"));
        }
        if !matches!(self.stack.last(), Some(&(el, _)) if el.content() == Content::Text) {
            let parent = self.parent_name();
            return Err(TndsError::UnexpectedText {
                pos: self.pos(at),
                parent,
                text: format!("&{};", shorten(name)),
            });
        }
        self.push_text(s, at, |buf| buf.push(ch))
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// The TNDS element methods of the shared writer.
impl<O: Sink> XmlWriter<'_, O> {
    /// `<tag><name/></tag>` on one line.
    fn choice_el(&mut self, depth: usize, tag: &str, name: &str) {
        self.open(depth, tag);
        self.out.put("<");
        self.out.put(name);
        self.out.put("/></");
        self.out.put(tag);
        self.out.put(">");
    }

    fn type_el(&mut self, depth: usize, tag: &str, ty: &NodeType) {
        self.open(depth, tag);
        let (inner, text) = match ty {
            NodeType::Mime(s) => ("MIME", s),
            NodeType::DdfName(s) => ("DDFName", s),
        };
        self.out.put("<");
        self.out.put(inner);
        self.out.put(">");
        escape_into(self.out, text);
        self.out.put("</");
        self.out.put(inner);
        self.out.put("></");
        self.out.put(tag);
        self.out.put(">");
    }

    fn document(&mut self, doc: &TndsDocument) {
        self.document_start(&doc.ver_dtd, doc.man.as_deref(), doc.model.as_deref());
        for node in &doc.nodes {
            self.node(1, node);
        }
        self.document_end();
    }

    /// `<MgmtTree>` and the elements before the first `Node`.
    pub(crate) fn document_start(&mut self, ver_dtd: &str, man: Option<&str>, model: Option<&str>) {
        self.out.put("<MgmtTree xmlns=\"");
        self.out.put(NAMESPACE);
        self.out.put("\">");
        self.text_el(1, "VerDTD", ver_dtd);
        self.text_el_if(1, "Man", man);
        self.text_el_if(1, "Mod", model);
    }

    /// `</MgmtTree>`.
    pub(crate) fn document_end(&mut self) {
        self.close(0, "MgmtTree");
        if self.pretty {
            self.out.put("\n");
        }
    }

    fn node(&mut self, depth: usize, node: &TndsNode) {
        let rt = node.rt.as_ref().map(RtView::from);
        self.node_start(
            depth,
            &node.name,
            node.path.as_deref(),
            rt.as_ref(),
            node.df.as_ref(),
        );
        for child in &node.children {
            self.node(depth + 1, child);
        }
        self.node_end(depth, node.value.as_deref());
    }

    /// A `Node` up to its children: `NodeName`, `Path`, `RTProperties`, `DFProperties`.
    pub(crate) fn node_start(
        &mut self,
        depth: usize,
        name: &str,
        path: Option<&str>,
        rt: Option<&RtView<'_>>,
        df: Option<&DfProperties>,
    ) {
        self.open(depth, "Node");
        let d = depth + 1;
        self.text_el(d, "NodeName", name);
        self.text_el_if(d, "Path", path);
        if let Some(rt) = rt {
            self.rt(d, rt);
        }
        if let Some(df) = df {
            self.df(d, df);
        }
    }

    /// The rest of a `Node` after its children: its `Value` and `</Node>`.
    pub(crate) fn node_end(&mut self, depth: usize, value: Option<&str>) {
        self.text_el_if(depth + 1, "Value", value);
        self.close(depth, "Node");
    }

    fn text_el_if(&mut self, depth: usize, tag: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.text_el(depth, tag, text);
        }
    }

    fn num_text_el(&mut self, depth: usize, tag: &str, value: Option<NumText<'_>>) {
        match value {
            Some(NumText::Text(t)) => self.text_el(depth, tag, t),
            Some(NumText::Num(n)) => {
                self.open(depth, tag);
                put_number(self.out, n);
                self.end_tag(tag);
            }
            None => {}
        }
    }

    fn rt(&mut self, depth: usize, rt: &RtView<'_>) {
        self.open(depth, "RTProperties");
        let d = depth + 1;
        if let Some(acl) = rt.acl {
            self.open(d, "ACL");
            // Writing into an escaping sink cannot fail.
            let _ = fmt::write(&mut Escaper(&mut *self.out), format_args!("{acl}"));
            self.out.put("</ACL>");
        }
        if let Some(f) = rt.format {
            self.choice_el(d, "Format", f.as_str());
        }
        self.text_el_if(d, "Name", rt.name);
        self.num_text_el(d, "Size", rt.size);
        self.text_el_if(d, "Title", rt.title);
        self.text_el_if(d, "TStamp", rt.tstamp);
        if let Some(ty) = rt.ty {
            self.type_el(d, "Type", ty);
        }
        self.num_text_el(d, "VerNo", rt.verno);
        self.close(depth, "RTProperties");
    }

    fn df(&mut self, depth: usize, df: &DfProperties) {
        self.open(depth, "DFProperties");
        let d = depth + 1;
        self.open(d, "AccessType");
        for kind in df.access_type.iter() {
            self.out.put("<");
            self.out.put(kind.as_str());
            self.out.put("/>");
        }
        self.out.put("</AccessType>");
        self.opt_text_el(d, "DefaultValue", &df.default_value);
        self.opt_text_el(d, "Description", &df.description);
        if let Some(f) = df.df_format {
            self.choice_el(d, "DFFormat", f.as_str());
        }
        if let Some(o) = df.occurrence {
            match o.bound() {
                Some(n) => {
                    self.open(d, "Occurrence");
                    self.out.put("<");
                    self.out.put(o.element_name());
                    self.out.put(">");
                    self.out.put(&n.to_string());
                    self.out.put("</");
                    self.out.put(o.element_name());
                    self.out.put("></Occurrence>");
                }
                None => self.choice_el(d, "Occurrence", o.element_name()),
            }
        }
        if let Some(s) = df.scope {
            self.choice_el(d, "Scope", s.as_str());
        }
        self.opt_text_el(d, "DFTitle", &df.df_title);
        if let Some(ty) = &df.df_type {
            self.type_el(d, "DFType", ty);
        }
        if let Some(c) = df.case_sense {
            self.choice_el(d, "CaseSense", c.as_str());
        }
        self.close(depth, "DFProperties");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors");

    fn vector(rel: &str) -> Vec<u8> {
        let path = format!("{VECTORS}/{rel}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    }

    fn parse(s: &str) -> Result<TndsDocument, TndsError> {
        TndsDocument::from_xml(s.as_bytes())
    }

    fn doc_with(node_xml: &str) -> String {
        format!("<MgmtTree><VerDTD>1.2</VerDTD>{node_xml}</MgmtTree>")
    }

    fn round_trip(doc: &TndsDocument) {
        assert_eq!(
            TndsDocument::from_xml(doc.to_xml().as_bytes()).as_ref(),
            Ok(doc)
        );
        assert_eq!(
            TndsDocument::from_xml(doc.to_xml_pretty().as_bytes()).as_ref(),
            Ok(doc)
        );
        let mut bytes = b"prefix".to_vec();
        doc.write_xml(&mut bytes);
        assert_eq!(&bytes[..6], b"prefix");
        assert_eq!(&bytes[6..], doc.to_xml().as_bytes());
    }

    /// The DelegatedSrv TNDS example of oma-dm-facts.md section 5.
    const DELEGATED_SRV: &str = r#"<MgmtTree xmlns="syncml:dmddf1.2">
  <VerDTD>1.2</VerDTD>
  <Node>
    <NodeName>DelegatedSrv</NodeName>
    <RTProperties>
      <ACL>Get=srv.delegated.example&amp;Replace=srv.delegated.example&amp;Delete=srv.delegated.example</ACL>
      <Format><node/></Format>
      <Type><DDFName>urn:oma:mo:oma-dm-dmacc:1.0</DDFName></Type>
    </RTProperties>
    <Node><NodeName>AppID</NodeName>
      <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
      <Value>w7</Value></Node>
    <Node><NodeName>ServerID</NodeName>
      <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
      <Value>srv.delegated.example</Value></Node>
    <Node><NodeName>Name</NodeName>
      <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
      <Value>Delegated DM server</Value></Node>
    <Node><NodeName>PrefConRef</NodeName>
      <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
      <Value>./Inbox/Internet</Value></Node>  <!-- only if a ConnMO "Internet" is in the same TNDS -->
    <Node><NodeName>AppAddr</NodeName>
      <RTProperties><Format><node/></Format><Type><DDFName></DDFName></Type></RTProperties>
      <Node><NodeName>1</NodeName>
        <RTProperties><Format><node/></Format><Type><DDFName></DDFName></Type></RTProperties>
        <Node><NodeName>Addr</NodeName>
          <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
          <Value>https://dm.delegated.example/dm</Value></Node>
        <Node><NodeName>AddrType</NodeName>
          <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
          <Value>URI</Value></Node>
      </Node>
    </Node>
    <Node><NodeName>AAuthPref</NodeName>
      <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
      <Value>DIGEST</Value></Node>
    <Node><NodeName>AppAuth</NodeName>
      <RTProperties><Format><node/></Format><Type><DDFName></DDFName></Type></RTProperties>
      <Node><NodeName>ClientSide</NodeName>
        <RTProperties><Format><node/></Format><Type><DDFName></DDFName></Type></RTProperties>
        <Node><NodeName>AAuthLevel</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>CLCRED</Value></Node>
        <Node><NodeName>AAuthType</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>DIGEST</Value></Node>
        <Node><NodeName>AAuthName</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>device-0001</Value></Node>
        <Node><NodeName>AAuthSecret</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>clientSecret</Value></Node>
        <Node><NodeName>AAuthData</NodeName><RTProperties><Format><b64/></Format><Type><MIME>application/octet-stream</MIME></Type></RTProperties><Value>AAAAAA==</Value></Node>
      </Node>
      <Node><NodeName>ServerSide</NodeName>
        <RTProperties><Format><node/></Format><Type><DDFName></DDFName></Type></RTProperties>
        <Node><NodeName>AAuthLevel</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>SRVCRED</Value></Node>
        <Node><NodeName>AAuthType</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>DIGEST</Value></Node>
        <Node><NodeName>AAuthName</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>srv.delegated.example</Value></Node>
        <Node><NodeName>AAuthSecret</NodeName><RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties><Value>serverSecret</Value></Node>
        <Node><NodeName>AAuthData</NodeName><RTProperties><Format><b64/></Format><Type><MIME>application/octet-stream</MIME></Type></RTProperties><Value>AAAAAA==</Value></Node>
      </Node>
    </Node>
  </Node>
</MgmtTree>"#;

    #[test]
    fn synthetic_dmacc_vector_parses_and_round_trips() {
        let doc =
            TndsDocument::from_xml(&vector("spec-examples/synthetic-tnds-dmacc.xml")).unwrap();
        assert_eq!(doc.ver_dtd, "1.2");
        assert_eq!(doc.nodes.len(), 1);
        let top = &doc.nodes[0];
        assert_eq!(top.name, "DMAcc");
        assert_eq!(top.path.as_deref(), Some("."));
        let rt = top.rt.as_ref().unwrap();
        assert_eq!(rt.format, Some(Format::Node));
        assert_eq!(
            rt.ty,
            Some(NodeType::DdfName("urn:oma:mo:oma-dm-dmacc:1.0".into()))
        );
        assert_eq!(top.children.len(), 1);
        assert_eq!(top.children[0].name, "ServerID");
        assert_eq!(top.children[0].value.as_deref(), Some("funambol"));
        assert_eq!(doc.node_count(), 2);
        round_trip(&doc);
    }

    #[test]
    fn delegated_srv_example_parses_and_round_trips() {
        let doc = parse(DELEGATED_SRV).unwrap();
        assert_eq!(doc.ver_dtd, "1.2");
        assert_eq!(doc.nodes.len(), 1);
        let top = &doc.nodes[0];
        assert_eq!(top.name, "DelegatedSrv");
        let rt = top.rt.as_ref().unwrap();
        let acl = rt.acl.as_ref().unwrap();
        assert_eq!(
            acl.to_string(),
            "Delete=srv.delegated.example&Get=srv.delegated.example&Replace=srv.delegated.example"
        );
        assert_eq!(rt.format, Some(Format::Node));
        assert_eq!(
            rt.ty,
            Some(NodeType::DdfName("urn:oma:mo:oma-dm-dmacc:1.0".into()))
        );
        assert!(top.children.len() >= 7);
        let app_id = &top.children[0];
        assert_eq!(app_id.name, "AppID");
        assert_eq!(app_id.value.as_deref(), Some("w7"));
        assert_eq!(app_id.rt.as_ref().unwrap().ty, Some(NodeType::text_plain()));
        let app_addr = top.children.iter().find(|n| n.name == "AppAddr").unwrap();
        assert_eq!(
            app_addr.rt.as_ref().unwrap().ty,
            Some(NodeType::DdfName(String::new()))
        );
        assert_eq!(app_addr.children[0].children.len(), 2);
        assert_eq!(doc.node_count(), DELEGATED_SRV.matches("<Node>").count());
        round_trip(&doc);
    }

    #[test]
    fn aosp_ddf_parses() {
        let bytes = vector("aosp-omadm/dmt_data/syncmldm.ddf");
        let doc = TndsDocument::from_xml(&bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(doc.node_count(), text.matches("<Node>").count());
        assert_eq!(doc.node_count(), 292);
        assert_eq!(doc.man.as_deref(), Some("Motorola"));
        assert_eq!(doc.model.as_deref(), Some("Nexus"));
        let root = &doc.nodes[0];
        assert_eq!(root.name, ".");
        assert_eq!(root.path.as_deref(), Some(""));
        assert!(root.rt.is_none());
        let df = root.df.as_ref().unwrap();
        assert_eq!(df.df_format, Some(Format::Node));
        assert_eq!(df.case_sense, Some(CaseSense::Cs));
        assert!(df.access_type.contains(AccessKind::Exec));
        assert!(!df.access_type.contains(AccessKind::Copy));
        let cdma = &root.children[0];
        assert_eq!(cdma.name, "CDMA");
        assert_eq!(cdma.path.as_deref(), Some("."));
        assert_eq!(cdma.children[0].path.as_deref(), Some("./CDMA"));
        assert_eq!(cdma.children[0].path_uri(), Some(NodeUri::parse("./CDMA")));
        assert_eq!(root.path_uri(), Some(Ok(NodeUri::root())));
        round_trip(&doc);
    }

    #[test]
    fn dm_1_1_2_trees_are_refused() {
        for f in [
            "root.xml",
            "devdetail_uri.xml",
            "devdetail_ext.xml",
            "managedobjects.xml",
        ] {
            let err =
                TndsDocument::from_xml(&vector(&format!("aosp-omadm/dmt_data/{f}"))).unwrap_err();
            match &err {
                TndsError::UnsupportedVersion { found, pos } => {
                    assert_eq!(found, "1.1.2", "{f}");
                    assert_eq!(pos.line, 2, "{f}");
                }
                other => panic!("{f}: {other:?}"),
            }
            assert!(err.to_string().contains("1.1.2"));
        }
    }

    #[test]
    fn spec_skeletons_are_refused() {
        let e = TndsDocument::from_xml(&vector("spec-examples/92-01.xml")).unwrap_err();
        assert!(
            matches!(e, TndsError::MissingElement { ref element, .. } if element == "VerDTD"),
            "{e:?}"
        );
        assert!(e.position().is_some());
        let e = TndsDocument::from_xml(&vector("spec-examples/92-02.xml")).unwrap_err();
        assert!(matches!(e, TndsError::MissingElement { .. }), "{e:?}");
        let e = TndsDocument::from_xml(&vector("spec-examples/91-01.xml")).unwrap_err();
        assert!(matches!(e, TndsError::NotTnds { .. }), "{e:?}");
        assert!(e.to_string().contains("Add"));
        // With a VerDTD the `...` placeholders are refused as text.
        let skeleton = String::from_utf8(vector("spec-examples/92-01.xml")).unwrap();
        let with_ver = skeleton.replacen("<MgmtTree>", "<MgmtTree><VerDTD>1.2</VerDTD>", 1);
        match parse(&with_ver).unwrap_err() {
            TndsError::UnexpectedText { parent, text, pos } => {
                assert_eq!(parent, "RTProperties");
                assert_eq!(text, "...");
                assert_eq!(pos.line, 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let n = 100_000;
        let mut s = String::from("<MgmtTree><VerDTD>1.2</VerDTD>");
        for _ in 0..n {
            s.push_str("<Node><NodeName>a</NodeName>");
        }
        for _ in 0..n {
            s.push_str("</Node>");
        }
        s.push_str("</MgmtTree>");
        match parse(&s).unwrap_err() {
            TndsError::TooDeep { limit, pos } => {
                assert_eq!(limit, 64);
                assert_eq!(pos.byte, 30 + 64 * 28);
            }
            other => panic!("{other:?}"),
        }
        // Exactly at the limit is fine.
        let mut ok = String::from("<MgmtTree><VerDTD>1.2</VerDTD>");
        ok.push_str(&"<Node><NodeName>a</NodeName>".repeat(64));
        ok.push_str(&"</Node>".repeat(64));
        ok.push_str("</MgmtTree>");
        assert_eq!(parse(&ok).unwrap().node_count(), 64);
    }

    #[test]
    fn huge_values_are_refused_before_copying() {
        let big = "x".repeat(50 << 20);
        let s = doc_with(&format!(
            "<Node><NodeName>a</NodeName><Value>{big}</Value></Node>"
        ));
        match parse(&s).unwrap_err() {
            TndsError::ValueTooLarge { limit, len, pos } => {
                assert_eq!(limit, 1 << 20);
                assert!(len > limit);
                assert_eq!(pos.line, 1);
            }
            other => panic!("{other:?}"),
        }
        drop(s);
        let mid = "y".repeat(8 << 20);
        let s = doc_with(&format!(
            "<Node><NodeName>a</NodeName><Value>{mid}</Value></Node>"
        ));
        assert!(matches!(parse(&s), Err(TndsError::ValueTooLarge { .. })));
        let limits = TndsLimits {
            max_value_len: 64 << 20,
            ..TndsLimits::default()
        };
        let doc = TndsDocument::from_xml_with(s.as_bytes(), &limits).unwrap();
        assert_eq!(doc.nodes[0].value.as_ref().map(String::len), Some(8 << 20));
        // Entity-expanded text counts too.
        let small = TndsLimits {
            max_value_len: 4,
            ..TndsLimits::default()
        };
        let s =
            doc_with("<Node><NodeName>a</NodeName><Value>&amp;&amp;&amp;&amp;&amp;</Value></Node>");
        assert!(matches!(
            TndsDocument::from_xml_with(s.as_bytes(), &small),
            Err(TndsError::ValueTooLarge { len: 5, .. })
        ));
    }

    #[test]
    fn input_and_node_limits() {
        let s = doc_with("<Node><NodeName>a</NodeName></Node><Node><NodeName>b</NodeName></Node>");
        let tight = TndsLimits {
            max_nodes: 1,
            ..TndsLimits::default()
        };
        assert_eq!(
            TndsDocument::from_xml_with(s.as_bytes(), &tight),
            Err(TndsError::TooManyNodes { limit: 1 })
        );
        let tiny = TndsLimits {
            max_input_len: 10,
            ..TndsLimits::default()
        };
        assert_eq!(
            TndsDocument::from_xml_with(s.as_bytes(), &tiny),
            Err(TndsError::InputTooLarge {
                len: s.len(),
                limit: 10
            })
        );
        assert_eq!(parse(""), Err(TndsError::Empty));
        assert_eq!(parse(" \r\n\t "), Err(TndsError::Empty));
        assert_eq!(
            parse("<?xml version=\"1.0\"?><!-- c -->"),
            Err(TndsError::Empty)
        );
    }

    fn line_col(e: &TndsError) -> (usize, usize) {
        let p = e
            .position()
            .unwrap_or_else(|| panic!("no position in {e:?}"));
        (p.line, p.column)
    }

    #[test]
    fn errors_have_the_right_variant_and_place() {
        // Unknown element.
        let e = parse("<MgmtTree>\n<VerDTD>1.2</VerDTD>\n<Node><NodeName>a</NodeName>\n  <Bogus/></Node></MgmtTree>")
            .unwrap_err();
        assert!(
            matches!(&e, TndsError::UnexpectedElement { element, parent, .. } if element == "Bogus" && parent == "Node"),
            "{e:?}"
        );
        assert_eq!(line_col(&e), (4, 3));
        let msg = e.to_string();
        assert!(msg.contains("Bogus") && msg.contains("line 4"), "{msg}");

        // Duplicate NodeName.
        let e = parse(&doc_with(
            "<Node><NodeName>a</NodeName><NodeName>b</NodeName></Node>",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, TndsError::DuplicateElement { element, parent, .. } if element == "NodeName" && parent == "Node"),
            "{e:?}"
        );
        assert_eq!(line_col(&e), (1, 59));
        assert!(e.to_string().contains("NodeName") && e.to_string().contains("line 1"));

        // Bad Format.
        let e = parse(&doc_with(
            "<Node><NodeName>a</NodeName><RTProperties><Format><chrx/></Format></RTProperties></Node>",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, TndsError::BadValue { what: "Format", value, .. } if value == "chrx"),
            "{e:?}"
        );
        assert!(e.position().is_some());

        // Bad ACL.
        let e = parse(&doc_with(
            "<Node><NodeName>a</NodeName><RTProperties>\n<ACL>Get=</ACL></RTProperties></Node>",
        ))
        .unwrap_err();
        assert!(
            matches!(
                &e,
                TndsError::BadAcl {
                    source: AclError::NoIds { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(line_col(&e), (2, 1));
        assert!(e.to_string().contains("line 2"));

        // Wrong namespace; the right one in any case is fine.
        let e =
            parse("<MgmtTree xmlns=\"syncml:metinf\"><VerDTD>1.2</VerDTD></MgmtTree>").unwrap_err();
        assert!(
            matches!(&e, TndsError::UnknownNamespace { ns, .. } if ns == "syncml:metinf"),
            "{e:?}"
        );
        assert_eq!(line_col(&e), (1, 1));
        let ok = "<MgmtTree xmlns='SyncML:DMDDF1.2'><VerDTD>1.2</VerDTD><Node><NodeName>a</NodeName></Node></MgmtTree>";
        assert!(parse(ok).is_ok());
        let prefixed = "<t:MgmtTree xmlns:t=\"syncml:dmddf1.2\"><t:VerDTD>1.2</t:VerDTD><t:Node><t:NodeName>a</t:NodeName></t:Node></t:MgmtTree>";
        assert_eq!(parse(prefixed).unwrap().nodes[0].name, "a");

        // Garbage bytes.
        let e = TndsDocument::from_xml(b"\x00\xff\xfe garbage <<<").unwrap_err();
        assert!(matches!(e, TndsError::Xml { .. }), "{e:?}");
        assert!(e.position().is_some());
        let e =
            TndsDocument::from_xml(b"<MgmtTree><VerDTD>1.\xff2</VerDTD></MgmtTree>").unwrap_err();
        assert!(matches!(e, TndsError::Xml { .. }), "{e:?}");

        // Truncated document.
        let full = parse(DELEGATED_SRV).unwrap().to_xml_pretty();
        for cut in [full.len() / 3, full.len() / 2, full.len() - 3] {
            let e = parse(&full[..cut]).unwrap_err();
            assert!(matches!(e, TndsError::Xml { .. }), "{cut}: {e:?}");
            assert!(e.position().unwrap().line > 1);
        }

        // Root is not MgmtTree.
        let e = parse("<SyncML><SyncHdr/></SyncML>").unwrap_err();
        assert!(matches!(e, TndsError::NotTnds { .. }), "{e:?}");
        assert!(e.to_string().contains("SyncML"));
    }

    #[test]
    fn grammar_rules() {
        let n = |inner: &str| {
            parse(&doc_with(&format!(
                "<Node><NodeName>a</NodeName>{inner}</Node>"
            )))
        };
        // Value and Node children together.
        assert!(matches!(
            n("<Value>1</Value><Node><NodeName>b</NodeName></Node>"),
            Err(TndsError::UnexpectedElement { ref element, .. }) if element == "Node"
        ));
        assert!(matches!(
            n("<Node><NodeName>b</NodeName></Node><Value>1</Value>"),
            Err(TndsError::UnexpectedElement { ref element, .. }) if element == "Value"
        ));
        // Missing NodeName.
        assert!(matches!(
            parse(&doc_with("<Node><Value>1</Value></Node>")),
            Err(TndsError::MissingElement { ref element, .. }) if element == "NodeName"
        ));
        // Empty Type.
        assert!(matches!(
            n("<RTProperties><Type/></RTProperties>"),
            Err(TndsError::MissingElement { ref parent, .. }) if parent == "Type"
        ));
        // Two formats.
        assert!(matches!(
            n("<RTProperties><Format><chr/><int/></Format></RTProperties>"),
            Err(TndsError::UnexpectedElement { .. })
        ));
        // Text in an empty choice.
        assert!(matches!(
            n("<RTProperties><Format><chr>x</chr></Format></RTProperties>"),
            Err(TndsError::UnexpectedText { .. })
        ));
        // Bad occurrence, scope, case sense, access type.
        for (df, what) in [
            (
                "<Occurrence><ZeroOrN>1</ZeroOrN></Occurrence>",
                "Occurrence",
            ),
            ("<Occurrence><Many/></Occurrence>", "Occurrence"),
            ("<Scope><Forever/></Scope>", "Scope"),
            ("<CaseSense><CX/></CaseSense>", "CaseSense"),
            ("<AccessType><Fly/></AccessType>", "AccessType"),
        ] {
            let r = n(&format!("<DFProperties>{df}</DFProperties>"));
            assert!(
                matches!(r, Err(TndsError::BadValue { what: w, .. }) if w == what),
                "{df}: {r:?}"
            );
        }
        // VerDTD, Node+.
        assert!(matches!(
            parse("<MgmtTree><VerDTD>1.2</VerDTD></MgmtTree>"),
            Err(TndsError::MissingElement { ref element, .. }) if element == "Node"
        ));
        assert!(matches!(
            parse("<MgmtTree><VerDTD>1.2</VerDTD><VerDTD>1.2</VerDTD></MgmtTree>"),
            Err(TndsError::DuplicateElement { .. })
        ));
        // Trailing content.
        let good = doc_with("<Node><NodeName>a</NodeName></Node>");
        assert!(parse(&format!("{good}\n<!-- end -->\n")).is_ok());
        assert!(matches!(
            parse(&format!("{good}x")),
            Err(TndsError::Xml { .. })
        ));
        assert!(matches!(
            parse(&format!("{good}<MgmtTree/>")),
            Err(TndsError::Xml { .. })
        ));
        // Undefined entity.
        assert!(matches!(
            n("<Value>&nbsp;</Value>"),
            Err(TndsError::Xml { .. })
        ));
    }

    #[test]
    fn dfproperties_and_text_details() {
        let s = "<?xml version=\"1.0\"?>\n<!DOCTYPE MgmtTree SYSTEM \"x.dtd\">\n<MgmtTree>\
            <VerDTD> 1.2 </VerDTD><Mod>M</Mod><Man>X</Man>\
            <Node><DFProperties><CaseSense><CIS/></CaseSense><AccessType><Get/><Copy/></AccessType>\
            <Occurrence><OneOrN> 7 </OneOrN></Occurrence><Scope><Dynamic/></Scope>\
            <DFType><DDFName>urn:x</DDFName></DFType><DFTitle> T </DFTitle><DefaultValue>0</DefaultValue>\
            <Description>d</Description><DFFormat><int/></DFFormat></DFProperties>\
            <NodeName>\n n \n</NodeName><Value> a &lt;&#x41;&#66;<![CDATA[ <&> ]]>\r\n</Value></Node></MgmtTree>";
        let doc = parse(s).unwrap();
        assert_eq!(
            (doc.man.as_deref(), doc.model.as_deref()),
            (Some("X"), Some("M"))
        );
        let node = &doc.nodes[0];
        assert_eq!(node.name, "n");
        assert_eq!(node.value.as_deref(), Some(" a <AB <&> \n"));
        let df = node.df.as_ref().unwrap();
        assert_eq!(
            df.access_type,
            AccessSet::EMPTY
                .with(AccessKind::Get)
                .with(AccessKind::Copy)
        );
        assert_eq!(df.occurrence, Some(Occurrence::OneOrN(7)));
        assert_eq!(df.scope, Some(Scope::Dynamic));
        assert_eq!(df.case_sense, Some(CaseSense::Cis));
        assert_eq!(df.df_type, Some(NodeType::DdfName("urn:x".into())));
        assert_eq!(df.df_title.as_deref(), Some("T"));
        assert_eq!(df.df_format, Some(Format::Int));
        round_trip(&doc);

        // <Value/> is an empty value; \r survives as a character reference.
        let mut doc = parse(&doc_with("<Node><NodeName/><Value/></Node>")).unwrap();
        assert_eq!(doc.nodes[0].name, "");
        assert_eq!(doc.nodes[0].value.as_deref(), Some(""));
        doc.nodes[0].value = Some("\r\n x\u{1}y \t".into());
        round_trip(&doc);
    }

    #[test]
    fn writer_output_shape() {
        let mut node = TndsNode::new("A&B");
        node.rt = Some(RtProperties {
            acl: Some(Acl::parse("Get=*&Replace=s1").unwrap()),
            format: Some(Format::Chr),
            ty: Some(NodeType::text_plain()),
            ..RtProperties::default()
        });
        node.value = Some("<x>".into());
        let doc = TndsDocument {
            nodes: vec![node],
            ..TndsDocument::default()
        };
        assert_eq!(
            doc.to_xml(),
            "<MgmtTree xmlns=\"syncml:dmddf1.2\"><VerDTD>1.2</VerDTD><Node><NodeName>A&amp;B</NodeName>\
             <RTProperties><ACL>Get=*&amp;Replace=s1</ACL><Format><chr/></Format>\
             <Type><MIME>text/plain</MIME></Type></RTProperties><Value>&lt;x&gt;</Value></Node></MgmtTree>"
        );
        let pretty = doc.to_xml_pretty();
        assert!(pretty.contains(
            "\n  <Node>\n    <NodeName>A&amp;B</NodeName>\n    <RTProperties>\n      <ACL>"
        ));
        assert!(pretty.ends_with("</Node>\n</MgmtTree>\n"));
        round_trip(&doc);
    }

    // ---- property test ----

    fn tight_text() -> impl Strategy<Value = String> {
        // No leading/trailing whitespace; may be empty.
        "([!-~àé€]([ -~àé€]{0,10}[!-~àé€])?)?"
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(tight_text())
    }

    fn node_type() -> impl Strategy<Value = NodeType> {
        prop_oneof![
            tight_text().prop_map(NodeType::Mime),
            tight_text().prop_map(NodeType::DdfName),
        ]
    }

    fn rt_props() -> impl Strategy<Value = RtProperties> {
        let acl = proptest::option::of(
            prop::sample::select(vec![
                "",
                "Get=*",
                "Add=*&Get=*",
                "Get=a+b&Replace=a&Delete=c.d",
                "Exec=x&Get=*&Replace=y",
            ])
            .prop_map(|t| Acl::parse(t).unwrap()),
        );
        (
            acl,
            proptest::option::of(prop::sample::select(Format::ALL.to_vec())),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            proptest::option::of(node_type()),
            opt_text(),
        )
            .prop_map(
                |(acl, format, name, size, title, tstamp, ty, verno)| RtProperties {
                    acl,
                    format,
                    name,
                    size,
                    title,
                    tstamp,
                    ty,
                    verno,
                },
            )
    }

    fn occurrence() -> impl Strategy<Value = Occurrence> {
        prop_oneof![
            Just(Occurrence::One),
            Just(Occurrence::ZeroOrOne),
            Just(Occurrence::ZeroOrMore),
            Just(Occurrence::OneOrMore),
            (2u32..=65536).prop_map(Occurrence::ZeroOrN),
            (2u32..=65536).prop_map(Occurrence::OneOrN),
        ]
    }

    fn df_props() -> impl Strategy<Value = DfProperties> {
        (
            prop::collection::vec(prop::sample::select(AccessKind::ALL.to_vec()), 0..4),
            opt_text(),
            opt_text(),
            proptest::option::of(prop::sample::select(Format::ALL.to_vec())),
            proptest::option::of(occurrence()),
            proptest::option::of(prop::sample::select(Scope::ALL.to_vec())),
            opt_text(),
            proptest::option::of(node_type()),
            proptest::option::of(prop::sample::select(CaseSense::ALL.to_vec())),
        )
            .prop_map(
                |(
                    access,
                    default_value,
                    description,
                    df_format,
                    occurrence,
                    scope,
                    df_title,
                    df_type,
                    case_sense,
                )| {
                    DfProperties {
                        access_type: access.into_iter().collect(),
                        default_value,
                        description,
                        df_format,
                        occurrence,
                        scope,
                        df_title,
                        df_type,
                        case_sense,
                    }
                },
            )
    }

    fn node_base() -> impl Strategy<Value = TndsNode> {
        (
            "[A-Za-z0-9_.é-]{1,8}",
            opt_text(),
            proptest::option::of(rt_props()),
            proptest::option::of(df_props()),
        )
            .prop_map(|(name, path, rt, df)| TndsNode {
                name,
                path,
                rt,
                df,
                children: Vec::new(),
                value: None,
            })
    }

    fn leaf() -> impl Strategy<Value = TndsNode> {
        (
            node_base(),
            proptest::option::of("[ -~\t\nàé€&<>\"']{0,16}"),
        )
            .prop_map(|(mut n, value)| {
                n.value = value;
                n
            })
    }

    fn tree() -> impl Strategy<Value = TndsNode> {
        leaf().prop_recursive(3, 40, 5, |inner| {
            (node_base(), prop::collection::vec(inner, 0..=5)).prop_map(|(mut n, children)| {
                n.children = children;
                n
            })
        })
    }

    fn document() -> impl Strategy<Value = TndsDocument> {
        (opt_text(), opt_text(), prop::collection::vec(tree(), 1..=3)).prop_map(
            |(man, model, nodes)| TndsDocument {
                ver_dtd: VER_DTD.to_owned(),
                man,
                model,
                nodes,
            },
        )
    }

    #[test]
    #[ignore]
    fn perf_probe() {
        let one = parse(DELEGATED_SRV).unwrap();
        let mut doc = TndsDocument::default();
        for _ in 0..10000 {
            doc.nodes.push(one.nodes[0].clone());
        }
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        doc.write_xml(&mut out);
        let w = t.elapsed();
        let t = std::time::Instant::now();
        let back = TndsDocument::from_xml_with(&out, &TndsLimits::default()).unwrap();
        let r = t.elapsed();
        let mb = out.len() as f64 / 1e6;
        eprintln!(
            "{mb:.1} MB write {:.0} MB/s parse {:.0} MB/s",
            mb / w.as_secs_f64(),
            mb / r.as_secs_f64()
        );
        assert_eq!(back.nodes.len(), 10000);
    }

    proptest! {
        #[test]
        fn documents_round_trip(doc in document()) {
            let compact = doc.to_xml();
            prop_assert_eq!(TndsDocument::from_xml(compact.as_bytes()), Ok(doc.clone()));
            let pretty = doc.to_xml_pretty();
            prop_assert_eq!(TndsDocument::from_xml(pretty.as_bytes()), Ok(doc));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = TndsDocument::from_xml(&bytes);
        }
    }
}
