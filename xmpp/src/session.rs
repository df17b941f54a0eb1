//! One XMPP connection: TCP, stream header, SASL PLAIN, then either stream-management
//! resumption (XEP-0198 `<resume>`) or a fresh session (resource binding + `<enable
//! resume='true'>`).
//!
//! Everything after the handshake — carbons, archive catch-up, presence, the group room — is
//! ordinary stanzas that stream management must count, so the client sends them itself.

use crate::xml::{Element, StreamEvent, StreamParser};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub const NS_SM: &str = "urn:xmpp:sm:3";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";

/// Who logs in: `user@domain/resource` with a password.
#[derive(Clone, Debug)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub domain: String,
    pub resource: String,
}

impl Account {
    pub fn bare(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }
}

/// The reading half of a connection, cutting bytes into stanzas.
pub struct Reader {
    read: OwnedReadHalf,
    parser: StreamParser,
    /// When the last bytes arrived: silence is how a client notices a dead path.
    pub last_inbound: Instant,
}

impl Reader {
    /// The next top-level stream event. Cancel-safe: bytes read are kept in the parser.
    pub async fn next_event(&mut self) -> Result<StreamEvent, String> {
        let mut buffer = [0u8; 8192];
        loop {
            if let Some(event) = self.parser.next_event()? {
                return Ok(event);
            }
            let count = self
                .read
                .read(&mut buffer)
                .await
                .map_err(|error| format!("read: {error}"))?;
            if count == 0 {
                return Err("the server closed the connection".to_string());
            }
            self.last_inbound = Instant::now();
            self.parser.push(&buffer[..count]);
        }
    }

    /// The next element, treating the end of the stream as an error.
    pub async fn next_element(&mut self) -> Result<Element, String> {
        match self.next_event().await? {
            StreamEvent::Element(element) => Ok(element),
            StreamEvent::Opened(_) => Err("a second stream header".to_string()),
            StreamEvent::Closed => Err("the server closed the stream".to_string()),
        }
    }
}

/// The writing half of a connection.
pub struct Writer {
    write: OwnedWriteHalf,
}

impl Writer {
    pub async fn send(&mut self, text: &str) -> Result<(), String> {
        self.write
            .write_all(text.as_bytes())
            .await
            .map_err(|error| format!("write: {error}"))
    }
}

/// How the session came up.
#[derive(Debug)]
pub enum Outcome {
    /// The old session continues; the server had received `acked` of our stanzas.
    Resumed { acked: u64 },
    /// A new session `sm_id`; `previous_acked` is what the server says it received of the old
    /// session when it still knew it (XEP-0198 `<failed h>`), so fewer stanzas are re-sent.
    Fresh {
        sm_id: String,
        previous_acked: Option<u64>,
    },
}

/// Connects and logs in; `resume` is the previous session's id and our inbound count.
pub async fn open(
    address: SocketAddr,
    account: &Account,
    resume: Option<(&str, u64)>,
) -> Result<(Reader, Writer, Outcome), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = Reader {
        read,
        parser: StreamParser::default(),
        last_inbound: Instant::now(),
    };
    let mut writer = Writer { write };
    start_stream(&mut reader, &mut writer, &account.domain).await?;
    let credentials = format!("\0{}\0{}", account.user, account.password);
    let auth = Element::new("auth")
        .with("xmlns", NS_SASL)
        .with("mechanism", "PLAIN")
        .text(&base64(credentials.as_bytes()));
    writer.send(&auth.to_xml()).await?;
    let answer = reader.next_element().await?;
    if answer.local_name() != "success" {
        return Err(format!("authentication refused: {}", answer.to_xml()));
    }
    reader.parser.reset();
    start_stream(&mut reader, &mut writer, &account.domain).await?;
    let mut previous_acked = None;
    if let Some((sm_id, inbound)) = resume {
        let request = Element::new("resume")
            .with("xmlns", NS_SM)
            .with("h", &inbound.to_string())
            .with("previd", sm_id);
        writer.send(&request.to_xml()).await?;
        let answer = reader.next_element().await?;
        match answer.local_name() {
            "resumed" => {
                let acked = count_attribute(&answer)?;
                return Ok((reader, writer, Outcome::Resumed { acked }));
            }
            "failed" => previous_acked = count_attribute(&answer).ok(),
            _ => {
                return Err(format!(
                    "unexpected answer to <resume>: {}",
                    answer.to_xml()
                ))
            }
        }
    }
    let bind = Element::new("iq")
        .with("type", "set")
        .with("id", "bind")
        .child(
            Element::new("bind")
                .with("xmlns", NS_BIND)
                .child(Element::new("resource").text(&account.resource)),
        );
    writer.send(&bind.to_xml()).await?;
    let answer = reader.next_element().await?;
    if answer.attribute("type") != Some("result") {
        return Err(format!("resource binding refused: {}", answer.to_xml()));
    }
    let enable = Element::new("enable")
        .with("xmlns", NS_SM)
        .with("resume", "true");
    writer.send(&enable.to_xml()).await?;
    let answer = reader.next_element().await?;
    let sm_id = match (answer.local_name(), answer.attribute("id")) {
        ("enabled", Some(id)) => id.to_string(),
        _ => return Err(format!("stream management refused: {}", answer.to_xml())),
    };
    Ok((
        reader,
        writer,
        Outcome::Fresh {
            sm_id,
            previous_acked,
        },
    ))
}

/// Sends a stream header and reads the server's header and features.
async fn start_stream(
    reader: &mut Reader,
    writer: &mut Writer,
    domain: &str,
) -> Result<(), String> {
    writer
        .send(&format!(
            "<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ))
        .await?;
    match reader.next_event().await? {
        StreamEvent::Opened(_) => {}
        other => return Err(format!("expected a stream header, got {other:?}")),
    }
    let features = reader.next_element().await?;
    if features.local_name() != "features" {
        return Err(format!(
            "expected stream features, got {}",
            features.to_xml()
        ));
    }
    Ok(())
}

/// The `h` attribute of an XEP-0198 element.
pub fn count_attribute(element: &Element) -> Result<u64, String> {
    element
        .attribute("h")
        .and_then(|h| h.parse().ok())
        .ok_or_else(|| format!("no stanza count in {}", element.to_xml()))
}

/// Standard base64 with padding (RFC 4648), enough for a SASL PLAIN payload.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let value = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(
                    ALPHABET[((value >> (18 - 6 * index)) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
