//! The stanzas the client builds and the facts it reads out of the ones it receives: message
//! bodies and ids (XEP-0359 origin-id / stanza-id), carbons (XEP-0280), archive results
//! (XEP-0313), delivery receipts (XEP-0184) and chat markers (XEP-0333).

use crate::xml::Element;
use imsim_history::blackbox::{MarkerKind, Via};

pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_MAM: &str = "urn:xmpp:mam:2";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_RECEIPTS: &str = "urn:xmpp:receipts";
pub const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";
pub const NS_DELAY: &str = "urn:xmpp:delay";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";
const NS_DATA: &str = "jabber:x:data";
const NS_MUC: &str = "http://jabber.org/protocol/muc";

/// Archive results per page of a query.
pub const ARCHIVE_PAGE_MAX: usize = 100;

/// A message as the client understood it, before it decides what to do with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The bare JID of the author, or the room JID plus nick for a group message.
    pub from: Jid,
    /// The addressee's bare JID (what a carbon of our own sent message was sent to).
    pub to: Jid,
    pub group: bool,
    pub msg: Option<String>,
    pub body: Option<String>,
    /// The server's id for the entry, and which archive named it (`by`).
    pub server_id: Option<(String, String)>,
    pub via: Via,
    pub marker: Option<(MarkerKind, String)>,
    pub wants_receipt: bool,
    pub error: Option<String>,
}

/// A JID cut into its parts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Jid {
    pub local: String,
    pub domain: String,
    pub resource: String,
}

impl Jid {
    pub fn parse(text: &str) -> Jid {
        let (bare, resource) = text.split_once('/').unwrap_or((text, ""));
        let (local, domain) = bare.split_once('@').unwrap_or(("", bare));
        Jid {
            local: local.to_string(),
            domain: domain.to_string(),
            resource: resource.to_string(),
        }
    }

    pub fn bare(&self) -> String {
        if self.local.is_empty() {
            self.domain.clone()
        } else {
            format!("{}@{}", self.local, self.domain)
        }
    }
}

/// Reads a `<message>` from the stream. A carbon is unwrapped (only when it comes from our own
/// bare JID, as XEP-0280 requires); an archive result is unwrapped by the caller.
pub fn read_message(element: &Element, own_bare: &str) -> Option<Incoming> {
    let from = element.attribute("from").unwrap_or_default();
    for kind in ["received", "sent"] {
        if let Some(carbon) = element.find(kind, NS_CARBONS) {
            if Jid::parse(from).bare() != own_bare {
                return None;
            }
            let inner = carbon
                .find("forwarded", NS_FORWARD)?
                .find_local("message")?;
            return Some(read_plain(inner, Via::Carbon));
        }
    }
    let via = if element.find("delay", NS_DELAY).is_some() {
        Via::Delayed
    } else {
        Via::Live
    };
    Some(read_plain(element, via))
}

/// An archive result: (its queryid, its archive id, the archived message).
pub fn archive_result(element: &Element) -> Option<(String, String, &Element)> {
    let result = element.find("result", NS_MAM)?;
    let message = result
        .find("forwarded", NS_FORWARD)?
        .find_local("message")?;
    Some((
        result.attribute("queryid")?.to_string(),
        result.attribute("id")?.to_string(),
        message,
    ))
}

/// Reads a message that is not wrapped (any more).
pub fn read_plain(element: &Element, via: Via) -> Incoming {
    let stanza_id = element.find("stanza-id", NS_SID).and_then(|id| {
        Some((
            id.attribute("id")?.to_string(),
            id.attribute("by")?.to_string(),
        ))
    });
    let origin = element
        .find("origin-id", NS_SID)
        .and_then(|id| id.attribute("id"))
        .or_else(|| element.attribute("id"))
        .map(str::to_string);
    let marker = element
        .find("received", NS_RECEIPTS)
        .map(|m| (MarkerKind::Received, m))
        .or_else(|| {
            element
                .find("displayed", NS_MARKERS)
                .map(|m| (MarkerKind::Displayed, m))
        })
        .and_then(|(kind, m)| Some((kind, m.attribute("id")?.to_string())));
    let error = (element.attribute("type") == Some("error")).then(|| {
        element
            .find_local("error")
            .and_then(|error| error.children.first())
            .map_or("error".to_string(), |condition| {
                condition.local_name().to_string()
            })
    });
    Incoming {
        from: Jid::parse(element.attribute("from").unwrap_or_default()),
        to: Jid::parse(element.attribute("to").unwrap_or_default()),
        group: element.attribute("type") == Some("groupchat"),
        msg: origin,
        body: element.find_local("body").map(|body| body.text.clone()),
        server_id: stanza_id,
        via,
        marker,
        wants_receipt: element.find("request", NS_RECEIPTS).is_some(),
        error,
    }
}

/// A chat or group message with its id as both `id` and origin-id, asking for a receipt and
/// a displayed marker.
pub fn message(to: &str, group: bool, msg: &str, body: &str) -> Element {
    let mut message = Element::new("message")
        .with("to", to)
        .with("type", if group { "groupchat" } else { "chat" })
        .with("id", msg)
        .child(Element::new("body").text(body))
        .child(
            Element::new("origin-id")
                .with("xmlns", NS_SID)
                .with("id", msg),
        );
    if !group {
        message = message
            .child(Element::new("request").with("xmlns", NS_RECEIPTS))
            .child(Element::new("markable").with("xmlns", NS_MARKERS));
    }
    message
}

/// A receipt (XEP-0184) or a displayed marker (XEP-0333) for message `msg` of `to`.
pub fn marker(to: &str, kind: MarkerKind, msg: &str, id: &str) -> Element {
    let payload = match kind {
        MarkerKind::Received => Element::new("received").with("xmlns", NS_RECEIPTS),
        MarkerKind::Displayed => Element::new("displayed").with("xmlns", NS_MARKERS),
    };
    Element::new("message")
        .with("to", to)
        .with("type", "chat")
        .with("id", id)
        .child(payload.with("id", msg))
        // Markers are not worth storing offline for a second time (XEP-0334 hint).
        .child(Element::new("no-store").with("xmlns", "urn:xmpp:hints"))
}

/// An archive query (XEP-0313): of the room `to` (or our own archive when `None`), with one
/// peer only when `with` is given, after the archive id `after`, stored since `start`.
pub fn archive_query(
    id: &str,
    to: Option<&str>,
    with: Option<&str>,
    after: Option<&str>,
    start: Option<&str>,
) -> Element {
    let mut form = Element::new("x")
        .with("xmlns", NS_DATA)
        .with("type", "submit")
        .child(
            Element::new("field")
                .with("var", "FORM_TYPE")
                .with("type", "hidden")
                .child(Element::new("value").text(NS_MAM)),
        );
    if let Some(with) = with {
        form = form.child(
            Element::new("field")
                .with("var", "with")
                .child(Element::new("value").text(with)),
        );
    }
    if let Some(start) = start {
        form = form.child(
            Element::new("field")
                .with("var", "start")
                .child(Element::new("value").text(start)),
        );
    }
    let mut set = Element::new("set")
        .with("xmlns", NS_RSM)
        .child(Element::new("max").text(&ARCHIVE_PAGE_MAX.to_string()));
    if let Some(after) = after {
        set = set.child(Element::new("after").text(after));
    }
    let mut iq = Element::new("iq").with("type", "set").with("id", id);
    if let Some(to) = to {
        iq = iq.with("to", to);
    }
    iq.child(
        Element::new("query")
            .with("xmlns", NS_MAM)
            .with("queryid", id)
            .child(form)
            .child(set),
    )
}

/// From an archive query's final answer: (complete, the last id of the page).
pub fn archive_fin(answer: &Element) -> (bool, Option<String>) {
    let Some(fin) = answer.find("fin", NS_MAM) else {
        return (true, None);
    };
    let last = fin
        .find("set", NS_RSM)
        .and_then(|set| set.find_local("last"))
        .map(|last| last.text.clone());
    (fin.attribute("complete") == Some("true"), last)
}

pub fn carbons_enable(id: &str) -> Element {
    Element::new("iq")
        .with("type", "set")
        .with("id", id)
        .child(Element::new("enable").with("xmlns", NS_CARBONS))
}

/// Joins a room asking for no history: what was missed comes from the archive instead.
pub fn room_join(room_and_nick: &str) -> Element {
    Element::new("presence").with("to", room_and_nick).child(
        Element::new("x")
            .with("xmlns", NS_MUC)
            .child(Element::new("history").with("maxstanzas", "0")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{StreamEvent, StreamParser};

    fn parse(text: &str) -> Element {
        let mut parser = StreamParser::default();
        parser.push(text.as_bytes());
        match parser.next_event().unwrap() {
            Some(StreamEvent::Element(element)) => element,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_carbon_is_unwrapped_only_from_our_own_account() {
        let text = "<message from='u1@localhost' to='u1@localhost/d2'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message from='u1@localhost/d1' to='u2@localhost' id='d1-1' type='chat'><body>hi</body></message></forwarded></sent></message>";
        let incoming = read_message(&parse(text), "u1@localhost").unwrap();
        assert_eq!(incoming.via, Via::Carbon);
        assert_eq!(incoming.to.bare(), "u2@localhost");
        assert_eq!(incoming.msg.as_deref(), Some("d1-1"));
        assert_eq!(read_message(&parse(text), "u3@localhost"), None);
    }

    #[test]
    fn markers_ids_and_archive_results_are_read() {
        let text = "<message from='u2@localhost/d3' type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='d1-4'/><stanza-id xmlns='urn:xmpp:sid:0' by='u1@localhost' id='A9'/></message>";
        let incoming = read_message(&parse(text), "u1@localhost").unwrap();
        assert_eq!(
            incoming.marker,
            Some((MarkerKind::Displayed, "d1-4".to_string()))
        );
        assert_eq!(
            incoming.server_id,
            Some(("A9".to_string(), "u1@localhost".to_string()))
        );
        let result = "<message><result xmlns='urn:xmpp:mam:2' queryid='q1' id='A1'><forwarded xmlns='urn:xmpp:forward:0'><message from='room@conference.localhost/d1' type='groupchat' id='d1-2'><body>x</body></message></forwarded></result></message>";
        let element = parse(result);
        let (query, id, inner) = archive_result(&element).unwrap();
        assert_eq!((query.as_str(), id.as_str()), ("q1", "A1"));
        assert!(read_plain(inner, Via::Catchup).group);
    }
}
