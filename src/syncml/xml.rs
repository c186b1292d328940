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
//!   are resolved. Names inside inline XML in `Item/Data` are not resolved (any namespace goes
//!   there), but its namespace declarations are checked as everywhere else.
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
//! The decoder is an iterative state machine over the events of the crate's tokenizer
//! (`xmlpull`) with an explicit stack: nesting (including `Atomic`/`Sequence` and inline XML)
//! is bounded by [`DecodeLimits::max_depth`], never by the call stack, and input size, text
//! size and command count are bounded too. Every error says what and where (`line L, column C`).
//!
//! Encoding writes the DM element order of the RepPro DTD, `xmlns="syncml:metinf"` on each meta
//! element, escapes `&`, `<`, `>` and writes control characters as character references, so
//! `decode(&encode(m)) == m` for any message whose trimmed fields carry no surrounding
//! whitespace, whose text has no NUL, and whose [`Data::Xml`] values are trimmed well-formed
//! markup with at least one element.

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesCData, BytesRef, BytesStart, BytesText, Event};
use quick_xml::name::{NamespaceError, NamespaceResolver, QName, ResolveResult};

pub use crate::dm::tnds::Position;
use crate::xmltext::{
    Sink, XmlWriter, escape_into, is_xml_ws, leading_ws_len, put_number, resolve_reference,
    shorten, trim_xml, unclosed_message,
};

use crate::xmlpull::Tokenizer;

use super::build::{BuildError, Builder, Content, El, child_of};
use super::message::{
    Command, Cred, Data, Item, LocRef, Meta, NS_METINF, SyncHdr, SyncMl, SyncMlVersion,
};
#[cfg(test)]
use super::{
    StatusCode,
    message::{Chal, Exec, ItemCmd, Status, SyncBody},
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

/// A sink that only counts the bytes written to it.
struct Counter(usize);

impl Sink for Counter {
    #[inline]
    fn put(&mut self, s: &str) {
        self.0 += s.len();
    }
}

/// The bytes `write` puts out as compact XML, counted without keeping them.
fn counted(write: impl FnOnce(&mut XmlWriter<'_, Counter>)) -> usize {
    let mut n = Counter(0);
    write(&mut XmlWriter {
        out: &mut n,
        pretty: false,
    });
    n.0
}

/// The length of [`encode`]`(msg)`, counted without writing it.
pub(crate) fn encoded_len(msg: &SyncMl) -> usize {
    counted(|w| w.message(msg))
}

/// The bytes `cmd` adds to the compact XML of a message when it is put in its body (at any
/// place: compact XML has no indentation, so a command's bytes do not depend on where it is).
pub(crate) fn command_len(cmd: &Command) -> usize {
    counted(|w| w.command(2, cmd))
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

/// The namespace an element resolved to, reduced to what the checks need.
#[derive(Clone)]
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
            ResolveResult::Bound(ns) => Ns::named(ns.0),
            ResolveResult::Unknown(p) => Ns::UnknownPrefix(shorten(p)),
        }
    }

    /// The namespace `ns` (a bound name: empty is none).
    fn named(ns: &str) -> Ns {
        if ns == NS_METINF {
            // The one every meta element declares, as written: named without the tests below.
            Ns::MetInf
        } else if ns.is_empty() {
            Ns::Unbound
        } else if let Some(v) = SyncMlVersion::from_namespace(ns) {
            Ns::SyncMl(v)
        } else if ns.eq_ignore_ascii_case(NS_METINF) {
            Ns::MetInf
        } else {
            Ns::Other(shorten(ns))
        }
    }
}

/// The namespace of a tag whose only attribute is a default namespace declaration written
/// plainly (`xmlns="syncml:metinf"`, as on every meta element of a message), when binding it
/// needs none of the resolver's checks: no reference to resolve, not a reserved namespace.
/// `None` for any other attribute list. The declaration as writers like ours put it out
/// ([`METINF_DECL`]) is taken at sight; any other is read by [`read_plain_default_ns`].
fn plain_default_ns(attrs: &str) -> Option<&str> {
    if attrs == METINF_DECL {
        return Some(NS_METINF);
    }
    read_plain_default_ns(attrs)
}

/// [`plain_default_ns`], read byte by byte.
fn read_plain_default_ns(attrs: &str) -> Option<&str> {
    let bytes = attrs.as_bytes();
    let skip_ws = |mut i: usize| {
        while bytes.get(i).is_some_and(|&b| is_xml_ws(b)) {
            i += 1;
        }
        i
    };
    let mut i = skip_ws(0);
    if !bytes.get(i..)?.starts_with(b"xmlns") {
        return None;
    }
    i = skip_ws(i + 5);
    if bytes.get(i) != Some(&b'=') {
        return None;
    }
    i = skip_ws(i + 1);
    let quote = *bytes.get(i).filter(|&&q| q == b'"' || q == b'\'')?;
    let start = i + 1;
    let len = bytes
        .get(start..)?
        .iter()
        .position(|&b| b == quote || b == b'&' || b == b'<')?;
    let end = start + len;
    if bytes.get(end) != Some(&quote) || skip_ws(end + 1) != bytes.len() {
        return None;
    }
    let value = attrs.get(start..end)?;
    (value != "http://www.w3.org/XML/1998/namespace" && value != "http://www.w3.org/2000/xmlns/")
        .then_some(value)
}

/// The attribute list of every meta element a writer like ours puts out, as the tokenizer
/// hands it over (with its leading space).
const METINF_DECL: &str = " xmlns=\"syncml:metinf\"";

/// State of an open `Item/Data`.
struct Raw {
    /// Byte offset just after the `<Data>` start tag.
    content_start: usize,
    /// Open child elements.
    depth: usize,
    /// Whether a child element was seen.
    has_elements: bool,
}

/// The namespace scopes of the open elements, kept as quick-xml's `NsReader` keeps them but
/// opened only by elements that declare a namespace (`xmlns` or `xmlns:p` attributes): the
/// other elements bind nothing, so their scope would only be pushed and popped. Elements are
/// resolved only outside inline XML, where the SyncML grammar applies; inside it the
/// declarations are still checked (reserved prefixes, the binding limit), as before.
#[derive(Default)]
struct Scopes {
    resolver: NamespaceResolver,
    /// The depths (the root is 1) of the open elements that opened a scope, innermost last,
    /// and whether the resolver holds that scope (a plain default declaration is kept in
    /// `defaults` only: it binds no prefix).
    opened: Vec<(usize, bool)>,
    /// What an element without a prefix resolves to in each opened scope, innermost last
    /// (nearly every element of a message: they are resolved without a lookup).
    defaults: Vec<Ns>,
}

impl Scopes {
    /// Opens the scope of `e`, the element at `depth`, when it declares a namespace. Fails as
    /// `NsReader` does: on a bad declaration, too many bindings, or nesting past `u16::MAX`.
    fn enter(&mut self, e: &BytesStart<'_>, depth: usize) -> Result<(), NamespaceError> {
        let max = usize::from(u16::MAX);
        if depth > max {
            return Err(NamespaceError::TooDeeplyNested(max));
        }
        let attrs = e.attributes_raw();
        if !attrs.is_empty() && attrs.contains("xmlns") {
            // The resolver's own limit on bindings in scope, counted for plain ones too.
            if let Some(ns) = plain_default_ns(attrs)
                && self.opened.len() < quick_xml::name::DEFAULT_MAX_NAMESPACE_BINDINGS
            {
                self.opened.push((depth, false));
                self.defaults.push(Ns::named(ns));
                return Ok(());
            }
            self.resolver.push(e)?;
            self.opened.push((depth, true));
            // The resolver knows the defaults it was given; one declared plainly further out
            // is in `defaults` only, and holds here unless this element declares its own.
            let declares_default = e
                .attributes()
                .with_checks(false)
                .map_while(Result::ok)
                .any(|a| a.key.into_inner() == "xmlns");
            let default = if declares_default {
                Ns::of(&self.resolver.resolve_element(QName("x")).0)
            } else {
                self.defaults.last().cloned().unwrap_or(Ns::Unbound)
            };
            self.defaults.push(default);
        }
        Ok(())
    }

    /// Closes the scope of the element at `depth`, if it opened one.
    fn leave(&mut self, depth: usize) {
        if let Some(&(open, in_resolver)) = self.opened.last()
            && open == depth
        {
            self.opened.pop();
            self.defaults.pop();
            if in_resolver {
                self.resolver.pop();
            }
        }
    }

    /// The namespace of element `e` (its scope entered).
    fn resolve(&self, e: &BytesStart<'_>) -> Ns {
        let name = e.name();
        if name.prefix().is_none() {
            return self.defaults.last().cloned().unwrap_or(Ns::Unbound);
        }
        Ns::of(&self.resolver.resolve_element(name).0)
    }
}

struct Parser<'a> {
    input: &'a [u8],
    limits: &'a DecodeLimits,
    /// The element grammar and the model under construction.
    b: Builder<'a>,
    raw: Option<Raw>,
    scopes: Scopes,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], limits: &'a DecodeLimits) -> Parser<'a> {
        Parser {
            input,
            limits,
            b: Builder::new(limits, None, |_| {}),
            raw: None,
            scopes: Scopes::default(),
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

    /// The [`CodecError`] of a builder error (positions are byte offsets).
    fn build_err(&self, e: BuildError) -> CodecError {
        match e {
            BuildError::Internal { at } => self.xml_err(at, "internal decoder state error"),
            BuildError::Unbalanced { at } => self.xml_err(at, "end tag without a start tag"),
            BuildError::Duplicate {
                at,
                element,
                parent,
            } => CodecError::DuplicateElement {
                pos: self.pos(at),
                element: element.to_owned(),
                parent: parent.to_owned(),
            },
            BuildError::Missing {
                at,
                element,
                parent,
            } => CodecError::MissingElement {
                pos: self.pos(at),
                element: element.to_owned(),
                parent: parent.to_owned(),
            },
            BuildError::BadValue { at, what, value } => CodecError::BadValue {
                pos: self.pos(at),
                what,
                value,
            },
            BuildError::TooDeep { at, limit } => CodecError::TooDeep {
                pos: self.pos(at),
                limit,
            },
            BuildError::TooMany { what, limit } => CodecError::TooMany { what, limit },
            BuildError::TextTooLarge {
                at,
                element,
                len,
                limit,
            } => CodecError::TextTooLarge {
                pos: self.pos(at),
                element: element.to_owned(),
                len,
                limit,
            },
        }
    }

    fn run(mut self) -> Result<SyncMl, CodecError> {
        let mut tokens = Tokenizer::new(self.input).map_err(|e| self.xml_err(e.at, e.message))?;
        loop {
            let at = tokens.position();
            let event = match tokens.next_event() {
                Ok(event) => event,
                Err(e) => return Err(self.xml_err(e.at, e.message)),
            };
            let after = tokens.position();
            match event {
                Event::Start(e) => {
                    let depth = self.open_depth().saturating_add(1);
                    self.enter_scope(&e, depth, at)?;
                    if let Some(raw) = self.raw.as_mut() {
                        raw.depth += 1;
                        raw.has_elements = true;
                        self.check_raw_child(&e, at, depth)?;
                    } else {
                        let ns = self.scopes.resolve(&e);
                        self.start(&e, ns, at, after)?;
                    }
                }
                Event::Empty(e) => {
                    let depth = self.open_depth().saturating_add(1);
                    self.enter_scope(&e, depth, at)?;
                    if let Some(raw) = self.raw.as_mut() {
                        raw.has_elements = true;
                        self.check_raw_child(&e, at, depth)?;
                    } else {
                        let ns = self.scopes.resolve(&e);
                        self.start(&e, ns, at, after)?;
                        self.end(after)?;
                    }
                    self.scopes.leave(depth);
                }
                Event::End(_) => {
                    self.scopes.leave(self.open_depth());
                    match self.raw.as_mut() {
                        Some(raw) if raw.depth > 0 => raw.depth -= 1,
                        _ => self.end(at)?,
                    }
                }
                Event::Text(t) => self.text(&t, at)?,
                Event::CData(c) => self.cdata(&c, at)?,
                Event::GeneralRef(r) => self.reference(&r, at)?,
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if let Some((_, el, start)) = self.b.current() {
            return Err(self.xml_err(
                self.input.len(),
                unclosed_message(el.name(), self.pos(start)),
            ));
        }
        if !self.b.root_done() {
            return Err(CodecError::Empty);
        }
        let len = self.input.len();
        self.b
            .finish()
            .ok_or_else(|| Parser::internal_at(self.input, len))
    }

    /// An error for a decoder state that cannot happen (reported rather than panicking).
    fn internal_at(input: &[u8], at: usize) -> CodecError {
        CodecError::Xml {
            pos: Position::at(input, at),
            message: "internal decoder state error".to_owned(),
        }
    }

    /// The number of open elements, those of inline XML in `Item/Data` included.
    fn open_depth(&self) -> usize {
        let raw = self.raw.as_ref().map_or(0, |r| r.depth);
        self.b.depth().saturating_add(raw)
    }

    /// Opens the namespace scope of `e`, the element at `depth` (the root is 1) whose tag
    /// starts at `at`. A namespace error has quick-xml's `NsReader`'s message, placed at the
    /// tag.
    fn enter_scope(
        &mut self,
        e: &BytesStart<'_>,
        depth: usize,
        at: usize,
    ) -> Result<(), CodecError> {
        self.scopes
            .enter(e, depth)
            .map_err(|err| self.xml_err(at, quick_xml::Error::Namespace(err).to_string()))
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
        let attrs = e.attributes_raw();
        if attrs.bytes().all(is_xml_ws) || plain_default_ns(attrs).is_some() {
            // No attribute at all (most elements), or one plain namespace declaration (the
            // meta elements): nothing to check.
            return Ok(());
        }
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
        let local = crate::xmltext::local_name(&qname);
        let el = match self.b.parent() {
            None => {
                if self.b.root_done() {
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
                El::SyncMl
            }
            Some(parent) => match child_of(parent, local) {
                Some(el) => el,
                None => {
                    return Err(CodecError::UnexpectedElement {
                        pos: self.pos(at),
                        element: shorten(local),
                        parent: parent.name().to_owned(),
                    });
                }
            },
        };
        self.check_namespace(el, ns, at)?;
        self.check_attributes(e, at)?;
        self.b.start(el, at).map_err(|e| self.build_err(e))?;
        if el == El::ItemData {
            self.raw = Some(Raw {
                content_start: after,
                depth: 0,
                has_elements: false,
            });
        }
        Ok(())
    }

    fn check_namespace(&mut self, el: El, ns: Ns, at: usize) -> Result<(), CodecError> {
        let bad = match ns {
            Ns::Unbound => {
                return Ok(());
            }
            Ns::SyncMl(v) => {
                if el == El::SyncMl {
                    self.b.set_version(v);
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

    /// Closes the innermost element; for `Item/Data`, computes its value first.
    fn end(&mut self, at: usize) -> Result<(), CodecError> {
        let item_data = match self.b.current() {
            Some((_, El::ItemData, start)) => Some((self.item_data(at, start)?, false)),
            _ => None,
        };
        self.b.end(at, item_data).map_err(|e| self.build_err(e))
    }

    /// The value of the `Item/Data` that started at `start` and ends at `at`.
    fn item_data(&mut self, at: usize, start: usize) -> Result<Data, CodecError> {
        let Some(raw) = self.raw.take() else {
            return Err(Parser::internal_at(self.input, at));
        };
        Ok(if raw.has_elements {
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
            Data::Text(std::mem::take(&mut self.b.text))
        })
    }

    /// Appends `piece` to the open text element (or `Item/Data`), or checks that it is
    /// whitespace where only elements are allowed. `raw` is the piece as it appears in the
    /// input, for the error message and the size check.
    fn push_text(&mut self, raw: &str, at: usize, piece: &str) -> Result<(), CodecError> {
        match self.b.current() {
            None => {
                if raw.bytes().all(is_xml_ws) {
                    Ok(())
                } else if self.b.root_done() {
                    Err(self.xml_err(at, "text after the root element"))
                } else {
                    Err(self.xml_err(at, "text before the root element"))
                }
            }
            Some((Content::Text | Content::Raw, _, _)) => {
                if let Some(raw) = &self.raw
                    && raw.has_elements
                {
                    // Inline XML: the markup is taken from the input at the end.
                    return Ok(());
                }
                let len = self.b.text.len().saturating_add(piece.len());
                self.b.check_len(len).map_err(|e| self.build_err(e))?;
                self.b.text.push_str(piece);
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

    /// Whether the reader is inside inline XML (an `Item/Data` holding elements), whose text is
    /// not collected: the markup is taken from the input at the end.
    fn in_inline_xml(&self) -> bool {
        self.raw.as_ref().is_some_and(|r| r.has_elements)
    }

    fn text(&mut self, t: &BytesText<'_>, at: usize) -> Result<(), CodecError> {
        if self.in_inline_xml() {
            return Ok(());
        }
        let raw: &str = t;
        if matches!(self.b.current(), Some((Content::Text | Content::Raw, ..))) {
            let content = t.xml10_content();
            self.push_text(raw, at, &content)
        } else {
            self.push_text(raw, at, "")
        }
    }

    fn cdata(&mut self, c: &BytesCData<'_>, at: usize) -> Result<(), CodecError> {
        if self.in_inline_xml() {
            return Ok(());
        }
        let raw: &str = c;
        match self.b.current() {
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
        if self.in_inline_xml() {
            return Ok(());
        }
        let mut utf8 = [0u8; 4];
        let s: &str = ch.encode_utf8(&mut utf8);
        match self.b.current() {
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

/// Whether `text` is better written as CDATA: long, with markup, and representable exactly
/// (no `]]>`, no carriage return, which readers normalise, no control characters).
fn cdata_fits(text: &str) -> bool {
    text.len() >= 256
        && text.contains('<')
        && !text.contains("]]>")
        && !has_control_but_tab_newline(text.as_bytes())
}

/// Whether `bytes` holds a control character other than tab and newline (`\r` included).
/// Branch-free over blocks of 64 bytes, so it runs at vector speed on long data.
fn has_control_but_tab_newline(bytes: &[u8]) -> bool {
    bytes.chunks(64).any(|block| {
        block.iter().fold(false, |bad, &b| {
            bad | ((b < 0x20) & (b != b'\n') & (b != b'\t'))
        })
    })
}

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
            Some(Data::Text(t)) if cdata_fits(t) => {
                // Markup-heavy data (a TNDS document) goes as one CDATA section: no escaping
                // here, one event for the reader instead of one per entity.
                self.open(d, "Data");
                self.out.put("<![CDATA[");
                self.out.put(t);
                self.out.put("]]>");
                self.end_tag("Data");
            }
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
    fn plain_default_declarations() {
        for (attrs, ns) in [
            (" xmlns=\"syncml:metinf\"", Some("syncml:metinf")),
            (" xmlns = 'a' \n", Some("a")),
            (" xmlns=''", Some("")),
            (" xmlns:m='a'", None),
            (" xmlnsx='a'", None),
            (" xmlns='a' b='c'", None),
            (" xmlns='a&amp;'", None),
            (" xmlns='a", None),
            (" xmlns=a", None),
            (" xmlns='a\"", None),
            (" xmlns='http://www.w3.org/2000/xmlns/'", None),
            (" xmlns='http://www.w3.org/XML/1998/namespace'", None),
            ("", None),
        ] {
            assert_eq!(plain_default_ns(attrs), ns, "{attrs:?}");
            assert_eq!(read_plain_default_ns(attrs), ns, "{attrs:?}");
        }
        // The declaration taken at sight is the one the general reading makes MetInf of.
        assert_eq!(
            plain_default_ns(METINF_DECL),
            read_plain_default_ns(METINF_DECL)
        );
        let ns = read_plain_default_ns(METINF_DECL).map(Ns::named);
        assert!(matches!(ns, Some(Ns::MetInf)));
        // And the namespace named at sight is the one the tests name it.
        assert!(SyncMlVersion::from_namespace(NS_METINF).is_none());
        assert!(matches!(Ns::named("SYNCML:METINF"), Ns::MetInf));
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
        // A default namespace declared on an element ends with it: the Item after the Meta
        // is in the SyncML namespace again.
        let m = parse(&with_body(
            "<Get><CmdID>1</CmdID><Meta><Type xmlns='syncml:metinf'>a</Type></Meta>\
             <Item><Target><LocURI>./x</LocURI></Target></Item></Get>",
        ))
        .unwrap();
        assert_eq!(m.body.commands.len(), 1);
        // A plain default declaration further out holds inside an element that binds only a
        // prefix; one declared beside another attribute is read by the resolver.
        let m = parse(&with_body(
            "<Get xmlns:m='syncml:metinf'><CmdID>1</CmdID><Meta><m:Type>a</m:Type>\
             <Format xmlns = \"syncml:metinf\" >chr</Format>\
             <Size xmlns='syncml:metinf' xmlns:q='urn:q'>7</Size></Meta></Get>",
        ))
        .unwrap();
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
        let e = parse(&with_body(
            "<Get><CmdID>1</CmdID><Meta><Type xmlns='syncml:metinf' a='1' a='2'>x</Type></Meta></Get>",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, CodecError::Xml { message, .. } if message.contains("duplicated")),
            "{e}"
        );
        let e = parse(&with_body(
            "<Get><CmdID>1</CmdID><Meta><Type xmlns='http://www.w3.org/2000/xmlns/'>x</Type></Meta></Get>",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, CodecError::UnknownNamespace { ns, .. } if ns.starts_with("http://www.w3.org/2000/xmlns")),
            "{e}"
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
        // Undeclared prefixes inside inline XML are not checked either; its declarations are
        // (reserved prefixes), and their scope ends with their element.
        let m = parse(&with_body(
            "<Add><CmdID>1</CmdID><Item><Data><a xmlns='urn:x'><y:b/></a></Data><MoreData/></Item></Add>",
        ))
        .unwrap();
        assert!(m.body.commands[0].items()[0].more_data);
        let e = parse(&with_body(
            "<Add><CmdID>1</CmdID><Item><Data><a xmlns:xml='urn:x'/></Data></Item></Add>",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, CodecError::Xml { message, .. } if message.contains("'xml' cannot be bound to 'urn:x'")),
            "{e}"
        );
        let e = parse(&with_body(
            "<Add><CmdID>1</CmdID><Item><Data><a xmlns:s='SYNCML:SYNCML1.2'/></Data></Item></Add><s:Final/>",
        ))
        .unwrap_err();
        assert!(
            matches!(&e, CodecError::Xml { message, .. } if message.contains("`s`")),
            "{e}"
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

    /// After a BOM, inline XML is still cut from the input at its own tags, and an error is
    /// placed where it is in the input (quick-xml's reader counted offsets from after the BOM).
    #[test]
    fn a_bom_does_not_shift_inline_xml_or_error_positions() {
        let body =
            "<Add><CmdID>1</CmdID><Item><Data><MgmtTree><Node/></MgmtTree></Data></Item></Add>";
        let m = parse(&format!("\u{FEFF}{}", with_body(body))).unwrap();
        assert_eq!(
            m.body.commands[0].items()[0].data,
            Some(Data::Xml("<MgmtTree><Node/></MgmtTree>".into()))
        );
        let e = parse("\u{FEFF}<SyncML><Get></SyncML>").unwrap_err();
        assert_eq!(
            e.position().map(|p| (p.line, p.column)),
            Some((1, 10)),
            "{e}"
        );
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
