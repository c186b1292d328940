//! Pretty-printing of the XML messages a delegation exchanged, for people to read and copy.

use quick_xml::events::Event;
use quick_xml::{Reader, Writer};

/// `xml` indented by two spaces per level; the text as it was when it does not parse.
pub fn pretty(xml: &str) -> String {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(ev) => {
                if writer.write_event(ev).is_err() {
                    return xml.to_owned();
                }
            }
            Err(_) => return xml.to_owned(),
        }
    }
    String::from_utf8(writer.into_inner()).unwrap_or_else(|_| xml.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_nested_elements_and_keeps_bad_input() {
        let p = pretty("<a><b>x</b><c/></a>");
        assert_eq!(p, "<a>\n  <b>x</b>\n  <c/>\n</a>");
        assert_eq!(pretty("<a><b></a>"), "<a><b></a>");
    }
}
