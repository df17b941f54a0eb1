//! What arrives: incoming messages (dedupe, display, receipts), markers the user sends, and
//! archive reads (XEP-0313 pages), for catch-up and for the final read.

use super::Client;
use crate::plan::{Cast, ROOM};
use crate::session::{Reader, Writer};
use crate::stanza::{self, Incoming};
use crate::xml::Element;
use imsim_history::blackbox::{ArchiveEntry, BlackBoxEvent, MarkerKind, Via};

/// Archive pages read in one catch-up or final read.
const ARCHIVE_PAGES_MAX: usize = 50;

impl Client {
    /// Sends a displayed marker (XEP-0333) for the newest message a peer sent that this
    /// device displayed, unless it was marked already.
    pub(super) async fn mark_read(
        &mut self,
        conv: &str,
        writer: &mut Writer,
    ) -> Result<(), String> {
        let Some((msg, sender)) = self.last_displayed.get(conv).cloned() else {
            return Ok(());
        };
        if self.last_marked.get(conv) == Some(&msg) || conv == ROOM {
            return Ok(());
        }
        self.last_marked.insert(conv.to_string(), msg.clone());
        let id = self.stanza_id("mark");
        let to = format!("{sender}@{}", self.account.domain);
        self.send_stanza(
            stanza::marker(&to, MarkerKind::Displayed, &msg, &id),
            None,
            writer,
        )
        .await?;
        self.record(BlackBoxEvent::MarkerSent {
            client: self.id.clone(),
            conv: conv.to_string(),
            msg,
            sender,
            kind: MarkerKind::Displayed,
        });
        Ok(())
    }

    /// Reads a conversation's whole archive as it stands now.
    pub(super) async fn final_read(
        &mut self,
        conv: &str,
        reader: &mut Reader,
        writer: &mut Writer,
    ) -> Result<Vec<ArchiveEntry>, String> {
        let room = self.cast.room_jid();
        let (to, with) = if conv == ROOM {
            (Some(room.clone()), None)
        } else {
            let (peer, _) = self
                .cast
                .address_of(conv, &self.account.user, &self.account.domain);
            (None, Some(peer))
        };
        let entries = self
            .read_archive(reader, writer, to.as_deref(), with.as_deref(), None)
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(server_id, message)| {
                let incoming = stanza::read_plain(&message, Via::Catchup);
                Some(ArchiveEntry {
                    server_id,
                    sender: self.sender_of(&incoming),
                    msg: incoming.msg,
                    body: incoming.body?,
                })
            })
            .collect())
    }

    /// Pages through an archive (XEP-0313 with RSM): every (archive id, message) in order.
    pub(super) async fn read_archive(
        &mut self,
        reader: &mut Reader,
        writer: &mut Writer,
        to: Option<&str>,
        with: Option<&str>,
        after: Option<&str>,
    ) -> Result<Vec<(String, Element)>, String> {
        let mut after = after.map(str::to_string);
        let mut entries = Vec::new();
        for _ in 0..ARCHIVE_PAGES_MAX {
            let id = self.stanza_id("mam");
            self.results.clear();
            let since = self.cast.archive_start.clone();
            let query = stanza::archive_query(&id, to, with, after.as_deref(), since.as_deref());
            let answer = self.request(reader, writer, query).await?;
            if answer.attribute("type") != Some("result") {
                return Err(format!("archive query refused: {}", answer.to_xml()));
            }
            entries.append(&mut self.results);
            let (complete, last) = stanza::archive_fin(&answer);
            if complete || last.is_none() {
                return Ok(entries);
            }
            after = last;
        }
        Err(format!("archive longer than {ARCHIVE_PAGES_MAX} pages"))
    }

    pub(super) async fn handle_message(
        &mut self,
        element: &Element,
        writer: &mut Writer,
    ) -> Result<(), String> {
        match stanza::read_message(element, &self.account.bare()) {
            Some(incoming) => self.handle_incoming(incoming, writer).await,
            None => Ok(()),
        }
    }

    /// Records a message, dedupes, displays, answers its receipt request.
    pub(super) async fn handle_incoming(
        &mut self,
        incoming: Incoming,
        writer: &mut Writer,
    ) -> Result<(), String> {
        if let Some((server_id, by)) = &incoming.server_id {
            self.cursor.insert(by.clone(), server_id.clone());
        }
        if let Some(condition) = &incoming.error {
            let conv = incoming
                .msg
                .as_ref()
                .and_then(|msg| self.conv_of_msg.get(msg));
            if let (Some(conv), Some(msg)) = (conv, &incoming.msg) {
                self.record(BlackBoxEvent::SendFailed {
                    client: self.id.clone(),
                    conv: conv.clone(),
                    msg: msg.clone(),
                    reason: format!("the server answered with an error: {condition}"),
                });
            }
            return Ok(());
        }
        let sender = self.sender_of(&incoming);
        let conv = self.conv_of(&incoming, &sender);
        let own_message = incoming
            .msg
            .as_deref()
            .is_some_and(|msg| msg.split('-').next() == Some(self.id.as_str()));
        if let Some((kind, msg)) = &incoming.marker {
            if sender != self.account.user {
                self.record(BlackBoxEvent::MarkerReceived {
                    client: self.id.clone(),
                    conv: conv.clone(),
                    msg: msg.clone(),
                    from: sender.clone(),
                    kind: *kind,
                });
            }
        }
        let (Some(body), Some(msg)) = (incoming.body.clone(), incoming.msg.clone()) else {
            return Ok(());
        };
        if own_message {
            if let Some((server_id, _)) = &incoming.server_id {
                self.stored_own.insert(msg, server_id.clone());
            }
            return Ok(());
        }
        self.record(BlackBoxEvent::Received {
            client: self.id.clone(),
            session: self.sm_id.clone().unwrap_or_default(),
            conv: conv.clone(),
            msg: Some(msg.clone()),
            sender: sender.clone(),
            body: body.clone(),
            server_id: incoming.server_id.as_ref().map(|(id, _)| id.clone()),
            order: None,
            via: incoming.via,
        });
        if !self
            .displayed
            .insert((conv.clone(), sender.clone(), msg.clone()))
        {
            return Ok(());
        }
        self.record(BlackBoxEvent::Displayed {
            client: self.id.clone(),
            conv: conv.clone(),
            msg: msg.clone(),
            sender: sender.clone(),
            body,
        });
        if sender == self.account.user || conv == ROOM {
            return Ok(());
        }
        self.last_displayed
            .insert(conv.clone(), (msg.clone(), sender.clone()));
        if incoming.wants_receipt && matches!(incoming.via, Via::Live | Via::Delayed) {
            let id = self.stanza_id("rcpt");
            let to = format!("{sender}@{}", self.account.domain);
            self.send_stanza(
                stanza::marker(&to, MarkerKind::Received, &msg, &id),
                None,
                writer,
            )
            .await?;
            self.record(BlackBoxEvent::MarkerSent {
                client: self.id.clone(),
                conv,
                msg,
                sender,
                kind: MarkerKind::Received,
            });
        }
        Ok(())
    }

    /// The user who wrote a message: the JID's local part, or in the room the user behind
    /// the nick (nicks are client ids).
    pub(super) fn sender_of(&self, incoming: &Incoming) -> String {
        if incoming.group || incoming.from.domain == self.cast.muc_domain {
            let nick = &incoming.from.resource;
            return self.cast.user_of(nick).unwrap_or(nick).to_string();
        }
        incoming.from.local.clone()
    }

    pub(super) fn conv_of(&self, incoming: &Incoming, sender: &str) -> String {
        if incoming.group || incoming.from.domain == self.cast.muc_domain {
            return ROOM.to_string();
        }
        let peer = if sender == self.account.user {
            incoming.to.local.as_str()
        } else {
            sender
        };
        Cast::direct_conv(&self.account.user, peer)
    }
}
