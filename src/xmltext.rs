//! The XML text helpers both codecs share: the TNDS codec ([`crate::dm::tnds`]) and the SyncML
//! XML codec ([`crate::syncml::xml`]).
//!
//! Reading: XML whitespace, trimming, reader offsets, the quick-xml reader settings, entity
//! and character-reference resolution and short excerpts for error messages. Writing: the
//! [`Sink`] the writers append to, escaping for element content, decimal numbers and
//! [`XmlWriter`], the indenting element writer each codec extends with an `impl` block of its
//! own element methods.

use std::fmt;

use quick_xml::events::BytesRef;

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// XML whitespace (S production).
pub(crate) fn is_xml_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// XML whitespace (S production), as a `char`.
pub(crate) fn is_xml_ws_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// `s` without leading and trailing XML whitespace.
pub(crate) fn trim_xml(s: &str) -> &str {
    s.trim_matches(is_xml_ws_char)
}

/// The length in bytes of the leading XML whitespace of `s`.
pub(crate) fn leading_ws_len(s: &str) -> usize {
    s.len() - s.trim_start_matches(is_xml_ws_char).len()
}

/// `text` trimmed of XML whitespace, taking the buffer (and leaving it empty) when nothing is
/// trimmed.
pub(crate) fn take_trimmed(text: &mut String) -> String {
    let trimmed = trim_xml(text);
    if trimmed.len() == text.len() {
        std::mem::take(text)
    } else {
        trimmed.to_owned()
    }
}

/// `bytes` as text without a copy when they are UTF-8 (the usual case), with U+FFFD for
/// each bad sequence otherwise.
pub(crate) fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// At most 64 characters of `s`, with `…` when cut.
pub(crate) fn shorten(s: &str) -> String {
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

/// A reader offset as `usize` (saturating; offsets never exceed the input length in practice).
pub(crate) fn offset(pos: u64) -> usize {
    usize::try_from(pos).unwrap_or(usize::MAX)
}

/// The local part of an element's qualified name: what follows its first `:`, or all of it.
/// quick-xml's `QName::local_name` answers the same with `memchr`, whose setup costs more
/// than the search on names this short (a few per cent of a TNDS document's decoding).
pub(crate) fn local_name<'a>(qname: &quick_xml::name::QName<'a>) -> &'a str {
    let name = qname.into_inner();
    match name.bytes().position(|b| b == b':') {
        Some(colon) => name.get(colon + 1..).unwrap_or_default(),
        None => name,
    }
}

/// The reader settings of both decoders: end names checked, text untrimmed, empty elements
/// reported as such.
pub(crate) fn configure_reader(config: &mut quick_xml::reader::Config) {
    config.check_end_names = true;
    config.trim_text(false);
    config.expand_empty_elements = false;
}

/// The character a general reference stands for: a character reference or one of the five
/// predefined entities. Any other entity, or a bad character reference, gives the error
/// message.
pub(crate) fn resolve_reference(r: &BytesRef<'_>) -> Result<char, String> {
    let name: &str = r;
    match r.resolve_char_ref() {
        Ok(Some(ch)) => Ok(ch),
        Ok(None) => match name {
            "amp" => Ok('&'),
            "lt" => Ok('<'),
            "gt" => Ok('>'),
            "quot" => Ok('"'),
            "apos" => Ok('\''),
            _ => Err(format!("undefined entity `&{};`", shorten(name))),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// The message for an element `name`, opened at `opened`, still open at the end of the input.
pub(crate) fn unclosed_message(name: &str, opened: impl fmt::Display) -> String {
    format!("unexpected end of input: <{name}> opened at {opened} is not closed")
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Where the writer appends text.
pub(crate) trait Sink {
    /// Appends `s`.
    fn put(&mut self, s: &str);
}

impl Sink for String {
    #[inline]
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }
}

/// Whether byte `b` is written as an entity or a character reference by [`escape_into`]
/// (the tests' statement of it; [`may_need_escape`] finds every such byte).
#[cfg(test)]
fn needs_escape(b: u8) -> bool {
    (b == b'&') | (b == b'<') | (b == b'>') | ((b < 0x20) & (b != b'\t') & (b != b'\n'))
}

/// Whether some byte of `bytes` may need escaping: every one that does ([`needs_escape`]) is
/// found; tab and newline, which do not, may be reported too. Eight bytes are tested at once
/// (the last, partial, word padded with a byte that needs nothing), so the short names and
/// values of DM documents cost a few instructions, not a test per byte.
#[inline]
fn may_need_escape(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut found = 0u64;
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        found |= escape_candidates(u64::from_le_bytes(word));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut word = [b'A'; 8];
        if let Some(head) = word.get_mut(..rest.len()) {
            head.copy_from_slice(rest);
        }
        found |= escape_candidates(u64::from_le_bytes(word));
    }
    found != 0
}

/// Nonzero when a byte of `x` is below 0x20, `&`, `<` or `>` (the bit tricks of "Bit
/// Twiddling Hacks": a byte below `n`, a zero byte; exact in telling whether any byte
/// matches).
#[inline]
fn escape_candidates(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    let zero = |v: u64| below(v, 1);
    // `<` (0x3C) and `>` (0x3E) differ only in bit 1.
    below(x, 0x20)
        | zero(x ^ (ONES * u64::from(b'&')))
        | zero((x | (ONES * 2)) ^ (ONES * u64::from(b'>')))
}

/// Appends `s` escaped for element content: `&`, `<`, `>` as entities, `\r` and control
/// characters other than tab and newline as character references.
pub(crate) fn escape_into<O: Sink + ?Sized>(out: &mut O, s: &str) {
    /// Bytes checked at once: runs of plain text are skipped a block at a time.
    const BLOCK: usize = 16;
    let bytes = s.as_bytes();
    if !may_need_escape(bytes) {
        // The common case: nothing to escape.
        out.put(s);
        return;
    }
    let mut last = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if let Some(block) = bytes.get(i..i + BLOCK)
            && !may_need_escape(block)
        {
            i += BLOCK;
            continue;
        }
        let rep: &str = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\r' => "&#13;",
            b'\t' | b'\n' => {
                i += 1;
                continue;
            }
            0..=0x1F => {
                // Only ASCII bytes are matched, so `last..i` lies on character boundaries.
                out.put(s.get(last..i).unwrap_or_default());
                out.put("&#");
                let digits = [b'0' + b / 10, b'0' + b % 10];
                let digits = if b < 10 { &digits[1..] } else { &digits[..] };
                out.put(std::str::from_utf8(digits).unwrap_or("0"));
                out.put(";");
                i += 1;
                last = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.put(s.get(last..i).unwrap_or_default());
        out.put(rep);
        i += 1;
        last = i;
    }
    out.put(s.get(last..).unwrap_or_default());
}

/// Lets `Display` values be written escaped without a temporary string.
pub(crate) struct Escaper<'o, O: Sink>(pub(crate) &'o mut O);

impl<O: Sink> fmt::Write for Escaper<'_, O> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_into(self.0, s);
        Ok(())
    }
}

/// Appends the decimal digits of `n`.
pub(crate) fn put_number<O: Sink + ?Sized>(out: &mut O, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            // `n % 10` is a single digit.
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    out.put(
        buf.get(i..)
            .and_then(|d| std::str::from_utf8(d).ok())
            .unwrap_or("0"),
    );
}

const SPACES: &str = "                                                                ";

/// An element writer: compact, or indented by two spaces per level when `pretty`. Each codec
/// adds its document-specific methods in an `impl` block of its own.
pub(crate) struct XmlWriter<'o, O: Sink> {
    /// Where the text goes.
    pub(crate) out: &'o mut O,
    /// Whether to start each element on a new, indented line.
    pub(crate) pretty: bool,
}

impl<O: Sink> XmlWriter<'_, O> {
    /// A new line indented for `depth`, when pretty.
    #[inline]
    pub(crate) fn indent(&mut self, depth: usize) {
        if self.pretty {
            self.out.put("\n");
            let mut n = depth * 2;
            while n > 0 {
                let k = n.min(SPACES.len());
                self.out.put(SPACES.get(..k).unwrap_or_default());
                n -= k;
            }
        }
    }

    /// `<tag>` at `depth`.
    pub(crate) fn open(&mut self, depth: usize, tag: &str) {
        self.indent(depth);
        self.out.put("<");
        self.out.put(tag);
        self.out.put(">");
    }

    /// `</tag>` at `depth`.
    pub(crate) fn close(&mut self, depth: usize, tag: &str) {
        self.indent(depth);
        self.end_tag(tag);
    }

    /// `</tag>` where the writer is.
    pub(crate) fn end_tag(&mut self, tag: &str) {
        self.out.put("</");
        self.out.put(tag);
        self.out.put(">");
    }

    /// `<tag>text</tag>` on one line, `text` escaped.
    pub(crate) fn text_el(&mut self, depth: usize, tag: &str, text: &str) {
        self.open(depth, tag);
        escape_into(self.out, text);
        self.end_tag(tag);
    }

    /// [`XmlWriter::text_el`] when there is a text.
    pub(crate) fn opt_text_el(&mut self, depth: usize, tag: &str, text: &Option<String>) {
        if let Some(text) = text {
            self.text_el(depth, tag, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time test reports exactly the strings holding a byte below 0x20, `&`,
    /// `<` or `>`: each byte value at each place of strings of 0 to 19 bytes.
    #[test]
    fn may_need_escape_finds_exactly_the_candidate_bytes() {
        let candidate = |b: u8| b < 0x20 || matches!(b, b'&' | b'<' | b'>');
        assert!(!may_need_escape(b""));
        for len in 1..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut text = vec![b'x'; len];
                    if let Some(slot) = text.get_mut(at) {
                        *slot = b;
                    }
                    // Neighbours that need nothing, from both ends of the byte range.
                    if at > 0 {
                        text[at - 1] = 0xFF;
                    }
                    assert_eq!(
                        may_need_escape(&text),
                        candidate(b),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
        }
        for b in 0..=255u8 {
            if needs_escape(b) {
                assert!(candidate(b), "{b:#04x}");
            }
        }
        // And `needs_escape` says what the escape does: each ASCII byte, alone and amid text
        // long enough for the block skip, is rewritten exactly when it needs escaping.
        for b in 0..0x80u8 {
            let c = char::from(b);
            for text in [
                c.to_string(),
                format!("{}{c}{}", "x".repeat(20), "y".repeat(20)),
            ] {
                let mut out = String::new();
                escape_into(&mut out, &text);
                assert_eq!(out != text, needs_escape(b), "byte {b:#04x} in {text:?}");
            }
        }
    }

    #[test]
    fn local_names_are_quick_xmls() {
        for name in ["SyncML", "s:SyncML", "a:b:c", ":x", "x:", "", "é:ü", "Node"] {
            let q = quick_xml::name::QName(name);
            assert_eq!(local_name(&q), q.local_name().into_inner(), "{name}");
        }
        assert_eq!(local_name(&quick_xml::name::QName("a:b:c")), "b:c");
    }

    #[test]
    fn escaping_and_numbers() {
        let mut s = String::new();
        escape_into(&mut s, "a&b<c>d\r\t\n\u{1}\u{1f}é");
        assert_eq!(s, "a&amp;b&lt;c&gt;d&#13;\t\n&#1;&#31;é");
        // Long runs, specials at block edges, multi-byte characters across blocks.
        let long = format!(
            "{}&{}<é{}\u{1}",
            "x".repeat(15),
            "y".repeat(16),
            "€".repeat(9)
        );
        let mut s = String::new();
        escape_into(&mut s, &long);
        let expected = long
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('\u{1}', "&#1;");
        assert_eq!(s, expected);
        let mut v = Vec::new();
        for n in [0, 7, 10, 1234, u64::MAX] {
            put_number(&mut v, n);
            v.push(b' ');
        }
        assert_eq!(v, b"0 7 10 1234 18446744073709551615 ");
    }

    #[test]
    fn text_helpers() {
        assert_eq!(trim_xml(" \t\na b\r\n"), "a b");
        assert_eq!(trim_xml("\u{a0}x"), "\u{a0}x");
        assert_eq!(leading_ws_len("\n  x "), 3);
        let mut t = "abc".to_owned();
        assert_eq!(take_trimmed(&mut t), "abc");
        assert!(t.is_empty());
        let mut t = " abc ".to_owned();
        assert_eq!(take_trimmed(&mut t), "abc");
        assert_eq!(shorten(&"x".repeat(64)), "x".repeat(64));
        assert_eq!(shorten(&"é".repeat(65)), format!("{}…", "é".repeat(64)));
        assert_eq!(offset(12), 12);
    }

    #[test]
    fn writer_indents() {
        let mut s = String::new();
        let mut w = XmlWriter {
            out: &mut s,
            pretty: true,
        };
        w.open(0, "A");
        w.text_el(1, "B", "x<y");
        w.opt_text_el(1, "C", &None);
        w.close(0, "A");
        assert_eq!(s, "\n<A>\n  <B>x&lt;y</B>\n</A>");
    }
}
