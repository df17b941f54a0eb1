//! A minimal XML element tree and an incremental XMPP stream parser over quick-xml.
//!
//! An XMPP stream is one long XML document: `<stream:stream>` opens it, each child of the root
//! is a stanza, and bytes arrive in arbitrary TCP chunks. The parser buffers bytes and returns
//! one complete top-level element at a time; an element cut by a chunk boundary stays in the
//! buffer until the rest arrives. Namespaces are not resolved: XMPP payloads declare `xmlns`
//! on the element itself, so matching a local name and its own `xmlns` attribute is enough.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The most bytes buffered while waiting for the end of one stanza. A server that sends more
/// without closing an element is treated as broken (the connection is dropped).
pub const STANZA_BYTES_MAX: usize = 1 << 20;

/// One XML element: its qualified name, attributes, text and child elements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn new(name: &str) -> Element {
        Element {
            name: name.to_string(),
            ..Element::default()
        }
    }

    /// Builder: adds an attribute.
    pub fn with(mut self, name: &str, value: &str) -> Element {
        self.attributes.push((name.to_string(), value.to_string()));
        self
    }

    /// Builder: adds a child element.
    pub fn child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    /// Builder: sets the text content.
    pub fn text(mut self, text: &str) -> Element {
        self.text = text.to_string();
        self
    }

    /// The name without a namespace prefix (`stream:features` → `features`).
    pub fn local_name(&self) -> &str {
        self.name.rsplit(':').next().unwrap_or(&self.name)
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// True when the element has this local name and declares this namespace itself.
    pub fn is(&self, local_name: &str, namespace: &str) -> bool {
        self.local_name() == local_name && self.attribute("xmlns") == Some(namespace)
    }

    /// The first child with this local name and namespace.
    pub fn find(&self, local_name: &str, namespace: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|child| child.is(local_name, namespace))
    }

    /// The first child with this local name, whatever its namespace.
    pub fn find_local(&self, local_name: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|child| child.local_name() == local_name)
    }

    /// Serialises the element, escaping attribute values and text.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_into(&mut out);
        out
    }

    fn write_into(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (key, value) in &self.attributes {
            out.push_str(&format!(" {key}=\"{}\"", quick_xml::escape::escape(value)));
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        out.push_str(&quick_xml::escape::escape(&self.text));
        for child in &self.children {
            child.write_into(out);
        }
        out.push_str(&format!("</{}>", self.name));
    }
}

/// What the parser found at the top level of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// `<stream:stream …>`: the attributes of the stream header.
    Opened(Element),
    /// A complete stanza or nonza (a child of the stream root).
    Element(Element),
    /// `</stream:stream>`.
    Closed,
}

/// Buffers stream bytes and cuts them into top-level elements.
#[derive(Default)]
pub struct StreamParser {
    buffer: Vec<u8>,
}

impl StreamParser {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Forgets everything buffered: a restarted stream (after SASL) starts from nothing.
    pub fn reset(&mut self) {
        self.buffer.clear();
    }

    /// The next complete top-level event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, String> {
        let (event, consumed) = match parse_one(&self.buffer) {
            Some(found) => found,
            None if self.buffer.len() > STANZA_BYTES_MAX => {
                return Err(format!(
                    "more than {STANZA_BYTES_MAX} bytes without a complete stanza"
                ))
            }
            None => return Ok(None),
        };
        self.buffer.drain(..consumed);
        Ok(Some(event))
    }
}

/// Parses one top-level event from the front of `bytes`: the event and the bytes it used, or
/// `None` when the buffer ends (or breaks off) before the event is complete.
fn parse_one(bytes: &[u8]) -> Option<(StreamEvent, usize)> {
    let mut reader = Reader::from_reader(bytes);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    let mut stack: Vec<Element> = Vec::new();
    loop {
        // An error here is almost always an element cut by the end of the buffer; a really
        // malformed stream never completes and hits STANZA_BYTES_MAX or the client's timeout.
        let event = reader.read_event().ok()?;
        let position = usize::try_from(reader.buffer_position()).ok()?;
        match event {
            Event::Eof => return None,
            Event::Start(start) => {
                let element = element_from(&start)?;
                if stack.is_empty() && element.name == "stream:stream" {
                    return Some((StreamEvent::Opened(element), position));
                }
                stack.push(element);
            }
            Event::Empty(start) => {
                let element = element_from(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => return Some((StreamEvent::Element(element), position)),
                }
            }
            Event::Text(text) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text.unescape().ok()?);
                }
            }
            Event::CData(data) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::End(_) => match stack.pop() {
                None => return Some((StreamEvent::Closed, position)),
                Some(done) => match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Some((StreamEvent::Element(done), position)),
                },
            },
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

fn element_from(start: &BytesStart) -> Option<Element> {
    let mut element = Element::new(&String::from_utf8_lossy(start.name().as_ref()));
    for attribute in start.attributes() {
        let attribute = attribute.ok()?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).to_string();
        let value = attribute.unescape_value().ok()?.to_string();
        element.attributes.push((key, value));
    }
    Some(element)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stanza_split_across_chunks_comes_out_whole() {
        let mut parser = StreamParser::default();
        parser.push(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='s1'><mess");
        let Some(StreamEvent::Opened(header)) = parser.next_event().unwrap() else {
            panic!("expected the stream header");
        };
        assert_eq!(header.attribute("id"), Some("s1"));
        assert_eq!(parser.next_event().unwrap(), None);
        parser.push(b"age from='a@x' id='m&amp;1'><body>hi &lt;3</body></message> <r xmlns='urn:xmpp:sm:3'/>");
        let Some(StreamEvent::Element(message)) = parser.next_event().unwrap() else {
            panic!("expected the message");
        };
        assert_eq!(message.attribute("id"), Some("m&1"));
        assert_eq!(message.find_local("body").unwrap().text, "hi <3");
        let Some(StreamEvent::Element(request)) = parser.next_event().unwrap() else {
            panic!("expected <r/>");
        };
        assert!(request.is("r", "urn:xmpp:sm:3"));
        parser.push(b"</stream:stream>");
        assert_eq!(parser.next_event().unwrap(), Some(StreamEvent::Closed));
    }

    #[test]
    fn serialising_escapes_and_round_trips() {
        let element = Element::new("message")
            .with("to", "b@x")
            .child(Element::new("body").text("a<b & \"c\""));
        let mut parser = StreamParser::default();
        parser.push(element.to_xml().as_bytes());
        assert_eq!(
            parser.next_event().unwrap(),
            Some(StreamEvent::Element(element))
        );
    }
}
