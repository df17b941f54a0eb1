//! The connection: login with backoff, heartbeats and probes, losing and regaining a session,
//! and the heartbeat's sync key.

use super::*;

impl Client {
    /// Waits `backoff_ms` before the next login, after `attempt` failed ones (0: a fresh start).
    pub(super) fn waiting(&self, now: Time, backoff_ms: u64, attempt: u32) -> Link {
        let next_backoff_ms = (backoff_ms * 2).clamp(
            self.config.reconnect_backoff_initial_ms,
            self.config.reconnect_backoff_max_ms,
        );
        Link::Waiting {
            retry_at: now.plus_ms(backoff_ms),
            backoff_ms: next_backoff_ms,
            attempt,
        }
    }

    /// Login number `attempt` went unanswered, or was `refused`: the next one waits the backoff,
    /// which doubles with each failure up to `reconnect_backoff_max_ms`.
    fn login_failed(&mut self, now: Time, backoff_ms: u64, attempt: u32, refused: bool) {
        self.emit(Event::LoginFailed { refused });
        self.link = self.waiting(now, backoff_ms, attempt.saturating_add(1));
    }

    pub(super) fn link_timeouts(&mut self, now: Time) {
        match self.link {
            Link::Offline => {}
            Link::Waiting {
                retry_at,
                backoff_ms,
                attempt,
            } if now >= retry_at => {
                let DeviceIdentity {
                    user,
                    device,
                    token,
                    ..
                } = self.identity;
                let connection = self.store.connection;
                self.transmit(Packet::Login {
                    user,
                    device,
                    token,
                    connection,
                });
                self.emit(Event::LoginSent { attempt });
                let deadline = now.plus_ms(self.config.login_timeout_ms);
                self.link = Link::LoggingIn {
                    deadline,
                    backoff_ms,
                    attempt,
                };
            }
            Link::LoggingIn {
                deadline,
                backoff_ms,
                attempt,
            } if now >= deadline => self.login_failed(now, backoff_ms, attempt, false),
            Link::Online {
                last_heard,
                next_heartbeat,
                ..
            } => {
                if now.since_ms(last_heard) >= self.config.server_silence_timeout_ms {
                    self.lose_session(now, SessionEnd::Timeout);
                } else if now >= next_heartbeat {
                    self.transmit(Packet::Heartbeat);
                    // Until an answer comes, probe; an answer moves this back to the interval.
                    let probe_at = now.plus_ms(self.config.heartbeat_probe_ms);
                    if let Link::Online {
                        last_heartbeat,
                        next_heartbeat,
                        ..
                    } = &mut self.link
                    {
                        *last_heartbeat = now;
                        *next_heartbeat = probe_at;
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn handle_login_ok(&mut self, now: Time, session: SessionId, heads: Vec<Head>) {
        // A late answer to a login we gave up on is still a session, and taking it is what lets a
        // device log in at all when the round trip outlasts `login_timeout_ms`. Once online, or
        // logged out, an extra answer is ignored.
        if !matches!(self.link, Link::LoggingIn { .. } | Link::Waiting { .. }) {
            return;
        }
        let next_heartbeat = now.plus_ms(self.config.heartbeat_interval_ms);
        self.link = Link::Online {
            session,
            last_heard: now,
            last_heartbeat: now,
            next_heartbeat,
        };
        self.emit(Event::LoggedIn { session });
        self.pull_behind(now, &heads);
        let convs: Vec<ConvId> = self.store.conversations.keys().copied().collect();
        for conv in convs {
            self.send_window(now, conv);
        }
        self.send_reads(now);
        self.poll_presence(now);
    }

    pub(super) fn handle_error(&mut self, now: Time, reason: Rejection, refused: &str) {
        match (reason, self.link) {
            (Rejection::NotLoggedIn, Link::Online { .. }) => {
                self.lose_session(now, SessionEnd::ServerForgot)
            }
            (
                _,
                Link::LoggingIn {
                    backoff_ms,
                    attempt,
                    ..
                },
            ) if refused == "login" => self.login_failed(now, backoff_ms, attempt, true),
            // A refused read is not sent again before the next login: resending it every
            // timeout would be refused every time.
            (_, Link::Online { .. }) if refused == "read" => self.read_deadline.clear(),
            // Other refusals concern one request (a pull of a conversation we left, say); the
            // request's own timeout deals with it.
            _ => {}
        }
    }

    pub(super) fn lose_session(&mut self, now: Time, reason: SessionEnd) {
        self.emit(Event::SessionLost { reason });
        self.store.connection += 1;
        self.pull_deadline.clear();
        self.retransmit.clear();
        self.read_deadline.clear();
        self.presence_poll_at = None;
        for conversation in self.store.conversations.values_mut() {
            conversation
                .outbox
                .iter_mut()
                .for_each(|outgoing| outgoing.sent = false);
        }
        self.link = if self.store.online_wanted && reason != SessionEnd::Logout {
            self.waiting(now, self.config.reconnect_backoff_initial_ms, 0)
        } else {
            Link::Offline
        };
    }

    /// The heartbeat's sync key is the sum of the server's heads; ours is the sum of our cursors.
    pub(super) fn handle_sync_key(&mut self, sync_key: u64) {
        let ours: u64 = self.store.conversations.values().map(|c| c.cursor.0).sum();
        if sync_key > ours && self.pull_deadline.is_empty() {
            self.transmit(Packet::SyncRequest);
        }
    }
}
