//! The pull tokenizer the two decoders on the hot path read XML with: the SyncML DM message
//! decoder ([`crate::syncml::xml`]) and the TNDS decoder ([`crate::dm::tnds`]).
//!
//! It yields quick-xml's own event types and tokenizes as quick-xml's `Reader` does with the
//! settings of [`crate::xmltext::configure_reader`] (end names checked, text untrimmed, empty
//! elements reported as such, a leading BOM skipped), so the decoders' handlers and their
//! error messages are those they had over that reader; `tests::agrees_with_quick_xml` holds it
//! to that, event by event, on the vectors and on malformed input.
//!
//! Why not the reader itself: quick-xml 0.42's slice reader checks every token it returns as
//! UTF-8 on its own, about 100 instructions a token on the short names and values of DM
//! messages, and keeps the names of open elements in a buffer of its own. Here the input is
//! checked as UTF-8 once, at vector speed, after which every token is a slice of a `&str` cut
//! at ASCII delimiters; the open names are slices of the input. Measured with callgrind on
//! `demo --devices 300` (2.02 million tokens): quick-xml's reader took 827 million
//! instructions, 202 million of them in `from_utf8`; this tokenizer takes 393 million, and the
//! whole run fell from 4.42 to 4.00 billion (-9.5 %).
//!
//! The common tokens (tags, text, references, CDATA, comments) are read here. Processing
//! instructions, the XML declaration and `<!DOCTYPE` (at most one each, at the top of a
//! message from a real device) are handed to quick-xml's reader one token at a time, so their
//! grammar (quoted literals, an internal subset) is quick-xml's too.

use quick_xml::errors::{Error, IllFormedError, SyntaxError};
use quick_xml::events::{BytesCData, BytesEnd, BytesRef, BytesStart, BytesText, Event};
use quick_xml::reader::Reader;

use crate::xmltext::{configure_reader, is_xml_ws, offset};

/// A tokenizing error: where (a byte offset in the input, BOM included) and quick-xml's
/// message for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XmlError {
    /// Byte offset of the offending token or byte.
    pub at: usize,
    /// What is wrong, in quick-xml's words.
    pub message: String,
}

impl XmlError {
    fn new(at: usize, error: impl Into<Error>) -> XmlError {
        XmlError {
            at,
            message: error.into().to_string(),
        }
    }
}

/// Reads the tokens of one XML document, in order.
pub(crate) struct Tokenizer<'a> {
    src: &'a str,
    /// Offset of the next token.
    pos: usize,
    /// Names of the open elements, innermost last: an end tag must name the innermost.
    open: Vec<&'a str>,
}

impl<'a> Tokenizer<'a> {
    /// A tokenizer over `input`, which must be UTF-8 (a leading BOM is skipped).
    pub(crate) fn new(input: &'a [u8]) -> Result<Tokenizer<'a>, XmlError> {
        let src = std::str::from_utf8(input).map_err(|e| XmlError::new(e.valid_up_to(), e))?;
        let pos = if src.starts_with('\u{FEFF}') { 3 } else { 0 };
        Ok(Tokenizer {
            src,
            pos,
            open: Vec::with_capacity(16),
        })
    }

    /// The offset of the next token: after a token was read, the offset just past it.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The next token; [`Event::Eof`] at the end of the input (elements still open are the
    /// caller's to report, as with quick-xml).
    pub(crate) fn next_event(&mut self) -> Result<Event<'a>, XmlError> {
        let src = self.src;
        let bytes = src.as_bytes();
        let start = self.pos;
        match bytes.get(start) {
            None => Ok(Event::Eof),
            Some(b'<') => self.markup(start),
            Some(b'&') => self.reference(start),
            Some(_) => {
                let end = bytes
                    .get(start..)
                    .and_then(|rest| rest.iter().position(|&b| class(b) & TEXT_STOP != 0))
                    .map_or(bytes.len(), |i| start + i);
                self.pos = end;
                Ok(Event::Text(BytesText::from_escaped(slice(src, start, end))))
            }
        }
    }

    /// A general reference, `&name;`, at `start`.
    fn reference(&mut self, start: usize) -> Result<Event<'a>, XmlError> {
        let src = self.src;
        let bytes = src.as_bytes();
        let name_start = start + 1;
        let stop = bytes
            .get(name_start..)
            .and_then(|rest| rest.iter().position(|&b| matches!(b, b';' | b'&' | b'<')))
            .map(|i| name_start + i);
        match stop {
            Some(end) if bytes.get(end) == Some(&b';') => {
                self.pos = end + 1;
                Ok(Event::GeneralRef(BytesRef::new(slice(
                    src, name_start, end,
                ))))
            }
            other => {
                self.pos = other.unwrap_or(bytes.len());
                Err(XmlError::new(start, IllFormedError::UnclosedReference))
            }
        }
    }

    /// A tag, CDATA section, comment, declaration or processing instruction at `start`.
    fn markup(&mut self, start: usize) -> Result<Event<'a>, XmlError> {
        let src = self.src;
        let bytes = src.as_bytes();
        let rest = bytes.get(start..).unwrap_or_default();
        match rest.get(1) {
            None => {
                self.pos = bytes.len();
                Err(XmlError::new(start, SyntaxError::UnclosedTag))
            }
            Some(b'/') => {
                let close = match self.scan_tag(start + 2) {
                    Scan::Closed { at, .. } => at,
                    Scan::Quote => self.tag_end(start)?,
                };
                self.pos = close + 1;
                let content = slice(src, start + 2, close);
                // An end tag rarely has space before its `>`.
                let name = match content.as_bytes().last() {
                    Some(&b) if is_xml_ws(b) => {
                        content.trim_end_matches(|c: char| c.is_ascii() && is_xml_ws(c as u8))
                    }
                    _ => content,
                };
                match self.open.pop() {
                    Some(expected) if expected == name => Ok(Event::End(BytesEnd::new(name))),
                    Some(expected) => Err(XmlError::new(
                        start,
                        IllFormedError::MismatchedEndTag {
                            expected: expected.to_owned(),
                            found: name.to_owned(),
                        },
                    )),
                    None => Err(XmlError::new(
                        start,
                        IllFormedError::UnmatchedEndTag(name.to_owned()),
                    )),
                }
            }
            Some(b'!') if rest.starts_with(b"<![CDATA[") => {
                let content = self.section(start, 9, b"]]>", SyntaxError::UnclosedCData)?;
                Ok(Event::CData(BytesCData::new(content)))
            }
            Some(b'!') if rest.starts_with(b"<!--") => {
                let content = self.section(start, 4, b"-->", SyntaxError::UnclosedComment)?;
                Ok(Event::Comment(BytesText::from_escaped(content)))
            }
            Some(b'!' | b'?') => self.by_quick_xml(start),
            Some(_) => {
                // One pass finds both the `>` and the end of the name, unless a quote (an
                // attribute value, which may hold `>`) sends the tag to the full scan.
                let (close, ws) = match self.scan_tag(start + 1) {
                    Scan::Closed { at, ws } => (at, ws),
                    Scan::Quote => {
                        let at = self.tag_end(start)?;
                        let inner = slice(src, start + 1, at);
                        (at, name_len(inner))
                    }
                };
                self.pos = close + 1;
                let inner = slice(src, start + 1, close);
                // (A byte test: `str::strip_suffix` with a `char` costs tens of instructions.)
                match inner
                    .len()
                    .checked_sub(1)
                    .filter(|_| inner.as_bytes().last() == Some(&b'/'))
                {
                    Some(len) => Ok(Event::Empty(BytesStart::from_content(
                        slice(inner, 0, len),
                        ws.min(len),
                    ))),
                    None => {
                        let n = ws.min(inner.len());
                        self.open.push(slice(inner, 0, n));
                        Ok(Event::Start(BytesStart::from_content(inner, n)))
                    }
                }
            }
        }
    }

    /// The content of the section (CDATA or comment) that opens at `start` with `open` bytes
    /// and ends at the first `close` after them; `unclosed` when the input ends first.
    fn section(
        &mut self,
        start: usize,
        open: usize,
        close: &[u8],
        unclosed: SyntaxError,
    ) -> Result<&'a str, XmlError> {
        let src = self.src;
        let content = start + open;
        let rest = src.as_bytes().get(content..).unwrap_or_default();
        match memchr::memmem::find(rest, close) {
            Some(len) => {
                self.pos = content + len + close.len();
                Ok(slice(src, content, content + len))
            }
            None => {
                self.pos = src.len();
                Err(XmlError::new(start, unclosed))
            }
        }
    }

    /// The tag whose content starts at `from`, read up to its `>` if no quote, `<` or `&` comes
    /// first: where the `>` is, and the length of the content before its first XML whitespace
    /// (the whole content when it has none). Those bytes, and the end of the input, leave the
    /// tag to [`Tokenizer::tag_end`] and its errors.
    fn scan_tag(&self, from: usize) -> Scan {
        let rest = self.src.as_bytes().get(from..).unwrap_or_default();
        let mut ws = usize::MAX;
        for (i, &b) in rest.iter().enumerate() {
            let c = class(b);
            if c == 0 {
                continue;
            }
            if c & WS != 0 {
                ws = ws.min(i);
            } else if b == b'>' {
                return Scan::Closed {
                    at: from + i,
                    ws: ws.min(i),
                };
            } else {
                return Scan::Quote;
            }
        }
        Scan::Quote
    }

    /// The offset of the `>` that closes the tag opened at `start`: the first one outside
    /// quotes (a quoted attribute value may hold `>`).
    fn tag_end(&mut self, start: usize) -> Result<usize, XmlError> {
        let bytes = self.src.as_bytes();
        let mut from = start + 1;
        // Most tags hold no quote: one tight scan finds their `>`.
        let error = loop {
            let rest = bytes.get(from..).unwrap_or_default();
            let Some(i) = rest.iter().position(|&b| matches!(b, b'>' | b'"' | b'\'')) else {
                break SyntaxError::UnclosedTag;
            };
            let quote = rest.get(i).copied().unwrap_or(b'>');
            if quote == b'>' {
                return Ok(from + i);
            }
            let value = rest.get(i + 1..).unwrap_or_default();
            match memchr::memchr(quote, value) {
                Some(len) => from += i + 1 + len + 1,
                None if quote == b'\'' => break SyntaxError::UnclosedSingleQuotedAttributeValue,
                None => break SyntaxError::UnclosedDoubleQuotedAttributeValue,
            }
        };
        self.pos = bytes.len();
        Err(XmlError::new(start, error))
    }

    /// One token read by quick-xml's reader: a processing instruction, the XML declaration,
    /// a DOCTYPE, or malformed `<!` markup (its error).
    fn by_quick_xml(&mut self, start: usize) -> Result<Event<'a>, XmlError> {
        let rest = slice(self.src, start, self.src.len());
        let mut reader = Reader::from_str(rest);
        configure_reader(reader.config_mut());
        match reader.read_event() {
            Ok(event) => {
                self.pos = start + offset(reader.buffer_position());
                Ok(event)
            }
            Err(e) => {
                self.pos = self.src.len();
                Err(XmlError {
                    at: start + offset(reader.error_position()),
                    message: e.to_string(),
                })
            }
        }
    }
}

/// What [`Tokenizer::scan_tag`] found.
enum Scan {
    /// The tag's `>` at `at`, its name `ws` bytes long.
    Closed { at: usize, ws: usize },
    /// A quote, `<` or `&` (or the end of the input) before any `>`.
    Quote,
}

/// Byte classes: XML whitespace.
const WS: u8 = 1;
/// Bytes that end a tag's plain scan: `>` and the quotes.
const TAG_STOP: u8 = 2;
/// Bytes that end text: `<` and `&`.
const TEXT_STOP: u8 = 4;

/// The classes of every byte, so each scan step is one load and one test.
static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b' ' as usize] = WS;
    t[b'\t' as usize] = WS;
    t[b'\n' as usize] = WS;
    t[b'\r' as usize] = WS;
    t[b'>' as usize] = TAG_STOP;
    t[b'"' as usize] = TAG_STOP;
    t[b'\'' as usize] = TAG_STOP;
    t[b'<' as usize] = TEXT_STOP;
    t[b'&' as usize] = TEXT_STOP;
    t
};

#[inline]
fn class(b: u8) -> u8 {
    CLASSES[usize::from(b)]
}

/// `s[from..to]`, empty when the range is not one (never, for the offsets of ASCII
/// delimiters the tokenizer computes).
fn slice(s: &str, from: usize, to: usize) -> &str {
    s.get(from..to).unwrap_or_default()
}

/// The length of an element's name at the start of its tag content: up to the first XML
/// whitespace (quick-xml's rule).
fn name_len(content: &str) -> usize {
    content.bytes().position(is_xml_ws).unwrap_or(content.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of `input` as text, up to and including the first error, as `tokens`
    /// reads it and as quick-xml's reader reads it (with the decoders' settings).
    fn both(input: &[u8]) -> (Vec<String>, Vec<String>) {
        let mut ours = Vec::new();
        match Tokenizer::new(input) {
            Ok(mut t) => loop {
                let at = t.position();
                match t.next_event() {
                    Ok(Event::Eof) => break,
                    Ok(e) => ours.push(format!("{at}..{} {e:?}", t.position())),
                    Err(e) => {
                        ours.push(format!("error {}", e.message));
                        break;
                    }
                }
            },
            Err(e) => ours.push(format!("error {}", e.message)),
        }
        // quick-xml counts offsets from after the BOM; the tokenizer counts them in the input.
        let bom = if input.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let mut theirs = Vec::new();
        let mut reader = Reader::from_reader(input);
        configure_reader(reader.config_mut());
        loop {
            let at = reader.buffer_position() + bom;
            match reader.read_event() {
                Ok(Event::Eof) => break,
                Ok(e) => theirs.push(format!("{at}..{} {e:?}", reader.buffer_position() + bom)),
                Err(e) => {
                    theirs.push(format!("error {e}"));
                    break;
                }
            }
        }
        (ours, theirs)
    }

    fn check(input: &[u8]) {
        let (ours, theirs) = both(input);
        let utf8_error = std::str::from_utf8(input).is_err();
        if utf8_error {
            // Bad UTF-8 is found before the first token here, at its token there: both
            // refuse the input.
            assert!(
                ours.last().is_some_and(|e| e.starts_with("error")),
                "{ours:?}"
            );
            assert!(
                theirs.last().is_some_and(|e| e.starts_with("error")),
                "{theirs:?}"
            );
        } else {
            assert_eq!(ours, theirs, "input: {:?}", String::from_utf8_lossy(input));
        }
    }

    const CASES: &[&str] = &[
        "",
        "   ",
        "text only",
        "<a/>",
        "<a></a>",
        "<a>x</a>",
        "\u{FEFF}<a>x</a>",
        "<a b='1' c=\"2\">x &amp; y &#65;&#x42;</a>",
        "<a b='>' c=\"'>\"/>",
        "<a\n  b = '1'\t/>",
        "<a><b><c/></b></a>",
        "<a></b>",
        "</a>",
        "<a>",
        "<a",
        "<",
        "x <",
        "<a b='1",
        "<a b=\"1",
        "<a>&amp</a>",
        "<a>&amp<b/></a>",
        "<a>& </a>",
        "<a>&;</a>",
        "<a>&nbsp;</a>",
        "&",
        "a & b",
        "<a><![CDATA[<x> & ]] ]>]]></a>",
        "<a><![CDATA[]]></a>",
        "<a><![CDATA[x",
        "<a><![CDATA]]></a>",
        "<a><![cdata[x]]></a>",
        "<a><!-- c --></a>",
        "<a><!----></a>",
        "<a><!---></a>",
        "<a><!---->--></a>",
        "<a><!-- x",
        "<a><!-x--></a>",
        "<a><!x></a>",
        "<a><!></a>",
        "<?xml version='1.0' encoding='UTF-8'?>\n<a/>",
        "<?xml version=\"1.0\"?><a/>",
        "<?pi some data?><a/>",
        "<?pi",
        "<??><a/>",
        "<!DOCTYPE SyncML PUBLIC \"-//SYNCML//DTD SyncML 1.2//EN\" \"http://x/y.dtd\">\n<SyncML/>",
        "<!DOCTYPE a [<!ELEMENT a (#PCDATA)><!-- > --><!ATTLIST a b CDATA '>'>]><a/>",
        "<!doctype a><a/>",
        "<!DOCTYPE>",
        "<!DOCTYPE a",
        "<a>\r\n x \r y</a>",
        "<a>\r\n<![CDATA[\r\n]]></a>",
        "<></>",
        "<a >x</a >",
        "<a>x</a\n>",
        "<a>x</ a>",
        "<a:b xmlns:a='urn:x'><a:c/></a:b>",
        "<a>é ü 中文 😀</a>",
        "<a b='é'>ü</a>",
        "<a/><b/>",
        "<a/>trailing",
        "<a>x</a><!-- after -->",
        "<a>]]></a>",
        "<a>></a>",
        "<a>'\"</a>",
        "<a\tb='1'>x</a>",
        "<a/ >",
        "<a / >",
    ];

    #[test]
    fn agrees_with_quick_xml() {
        for case in CASES {
            check(case.as_bytes());
        }
        for bad in [
            &b"\xff<a/>"[..],
            b"<a>\xc3</a>",
            b"<a b='\xff'/>",
            b"\x00\xff\xfe garbage <<<",
        ] {
            check(bad);
        }
    }

    /// Every XML file under `../shared/vectors` (the real messages and trees the other tests
    /// read) and `tests/data`, whole and cut at a sweep of lengths (truncated input is the
    /// usual malformed input on a network).
    #[test]
    fn agrees_with_quick_xml_on_the_vectors_whole_and_cut() {
        let mut files = Vec::new();
        for root in [
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors"),
        ] {
            collect(std::path::Path::new(root), &mut files);
        }
        let mut xml = 0;
        for path in &files {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            if !bytes.contains(&b'<') {
                continue;
            }
            xml += 1;
            check(&bytes);
            let step = (bytes.len() / 97).max(1);
            for cut in (0..bytes.len()).step_by(step) {
                check(bytes.get(..cut).unwrap_or_default());
            }
        }
        assert!(xml >= 20, "only {xml} XML vectors were read");
    }

    fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, out);
            } else {
                out.push(path);
            }
        }
    }

    /// Mutations of a DM message: each byte in turn replaced by each markup character.
    #[test]
    fn agrees_with_quick_xml_on_mutated_markup() {
        let base = "<SyncML xmlns='SYNCML:SYNCML1.2'><SyncBody><Results><CmdID>3</CmdID>\
                    <Item><Data><![CDATA[<MgmtTree><Node/></MgmtTree>]]></Data></Item>\
                    <Item><Data>a &amp; b &#x3C;</Data></Item><!-- c --><Final/></Results>\
                    </SyncBody></SyncML>";
        for i in 0..base.len() {
            for c in [
                "<", ">", "&", ";", "/", "'", "\"", "!", "?", "[", "]", "-", " ",
            ] {
                let mut s = base.as_bytes().to_vec();
                s.splice(i..i + 1, c.bytes());
                check(&s);
            }
        }
    }

    #[test]
    fn positions_and_errors() {
        let mut t = Tokenizer::new(b"<a>x</b>").unwrap();
        assert!(matches!(t.next_event(), Ok(Event::Start(_))));
        assert!(matches!(t.next_event(), Ok(Event::Text(_))));
        assert_eq!(t.position(), 4);
        let e = t.next_event().unwrap_err();
        assert_eq!(e.at, 4);
        assert!(e.message.contains("`</a>`"), "{}", e.message);
        let e = Tokenizer::new(b"<a>\xff</a>").err().unwrap();
        assert_eq!(e.at, 3);
    }
}
