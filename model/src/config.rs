//! Protocol settings: timeouts and the bound on every queue and buffer. A scenario may override
//! any of them; the defaults follow practice (heartbeat 15 s, dead after 30 s, MobileIMSDK and
//! Matrix Synapse) scaled where a simulation gains from it.

use crate::variant::Variant;
use serde::{Deserialize, Serialize};

/// How devices learn who is online.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PresenceMode {
    /// The server pushes each change to the subscribers: the user's 1:1 contacts.
    #[default]
    Push,
    /// Devices ask for the members of the conversation they have open.
    Pull,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// A device sends a heartbeat this often while its session is up.
    pub heartbeat_interval_ms: u64,
    /// When nothing was heard from the server for a heartbeat interval, probe this often.
    pub heartbeat_probe_ms: u64,
    /// A device that heard nothing from the server for this long drops its session.
    pub server_silence_timeout_ms: u64,
    /// The server expires a session it heard nothing from for this long.
    pub session_timeout_ms: u64,
    /// A login without an answer is retried after this long.
    pub login_timeout_ms: u64,
    /// Reconnect backoff: first delay, doubled per failed attempt up to the maximum.
    pub reconnect_backoff_initial_ms: u64,
    pub reconnect_backoff_max_ms: u64,
    /// Sender retransmission timeout: first value, doubled per unanswered try up to the maximum.
    pub retransmit_initial_ms: u64,
    pub retransmit_max_ms: u64,
    /// Unacknowledged sends in flight per conversation (sent in `client_seq` order).
    pub send_window_max: u32,
    /// Messages waiting for an ack on one device, over all conversations. A send beyond it is
    /// refused at once with `SendFailure::OutboxFull`.
    pub outbox_max: u32,
    /// Out-of-order messages a device keeps per conversation while a hole is open. Beyond it the
    /// highest is dropped (never displayed out of order) and fetched later by a pull.
    pub hold_back_max: u32,
    /// A hole in the hold-back buffer that is still open after this long is pulled.
    pub gap_timeout_ms: u64,
    /// Messages per pull page.
    pub pull_page_max: u32,
    /// A pull without an answer is sent again after this long.
    pub pull_timeout_ms: u64,
    /// Unacknowledged pushes the server keeps per session. Beyond it, messages are not pushed
    /// to that session; the device catches up by pull (sync key in the heartbeat, or a gap).
    pub push_window_max: u32,
    /// Push retransmission: first timeout, doubled per try up to the maximum, at most this many
    /// tries; then the push is abandoned and sync catches up.
    pub push_retry_initial_ms: u64,
    pub push_retry_max_ms: u64,
    pub push_attempts_max: u32,
    /// Server housekeeping (session expiry, push retries) runs this often.
    pub server_tick_ms: u64,
    /// Sessions the server holds at once; a login beyond it is refused with `ServerFull`.
    pub sessions_max: u32,
    /// Longest message body accepted, in bytes.
    pub body_bytes_max: u32,
    /// Groups with more members than this get notify-then-pull instead of a push per message.
    pub notify_threshold_members: u32,
    /// Notices for a large group go out at most once per this window (0: at every commit): the
    /// news of the window merges into one round, at the cost of up to this much latency.
    pub notify_merge_ms: u64,
    /// A device acks its cursor after this many newly displayed messages, or `ack_delay_ms` after
    /// the first unacknowledged one, whichever comes first (1 = ack every advance at once).
    pub ack_batch_max: u32,
    pub ack_delay_ms: u64,
    /// Fan-out write: copy every entry into each member's inbox (reads come from the inbox).
    /// Off: store once, one shared timeline per conversation, filtered by membership on read.
    pub fanout_write: bool,
    /// Presence: `push` sends every change to the user's 1:1 contacts; `pull` has a device ask
    /// for the members of the conversation it has open, when it opens it and every
    /// `presence_poll_ms` while it stays open.
    pub presence: PresenceMode,
    pub presence_poll_ms: u64,
    /// Read counts of a group above `notify_threshold_members` reach the senders at most once
    /// per this window (every read of the window merged); smaller groups get them at once.
    pub receipt_batch_ms: u64,
    /// The protocol itself: `correct`, or one of the deliberately broken variants of the
    /// known-bug catalogue (`model/src/variant.rs`).
    pub variant: Variant,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            heartbeat_interval_ms: 15_000,
            heartbeat_probe_ms: 2_000,
            server_silence_timeout_ms: 30_000,
            session_timeout_ms: 30_000,
            login_timeout_ms: 2_000,
            reconnect_backoff_initial_ms: 250,
            reconnect_backoff_max_ms: 8_000,
            retransmit_initial_ms: 500,
            retransmit_max_ms: 8_000,
            send_window_max: 8,
            outbox_max: 256,
            hold_back_max: 64,
            gap_timeout_ms: 300,
            pull_page_max: 50,
            pull_timeout_ms: 1_000,
            push_window_max: 64,
            push_retry_initial_ms: 1_000,
            push_retry_max_ms: 8_000,
            push_attempts_max: 6,
            server_tick_ms: 250,
            sessions_max: 1_000_000,
            body_bytes_max: 4_096,
            notify_threshold_members: 500,
            notify_merge_ms: 0,
            ack_batch_max: 1,
            ack_delay_ms: 200,
            fanout_write: false,
            presence: PresenceMode::Push,
            presence_poll_ms: 30_000,
            receipt_batch_ms: 1_000,
            variant: Variant::Correct,
        }
    }
}

impl ProtocolConfig {
    /// How long after the network heals and every node is up the protocol needs, at worst, to
    /// deliver everything: detect a dead session, back off, log in, resend and pull. The liveness
    /// phase waits this long before it requires convergence.
    pub fn convergence_bound_ms(&self) -> u64 {
        let detect = self.heartbeat_interval_ms + self.server_silence_timeout_ms;
        let reconnect = self.reconnect_backoff_max_ms + self.login_timeout_ms;
        let resend = self.retransmit_max_ms + self.push_retry_max_ms + self.pull_timeout_ms;
        2 * (detect + reconnect + resend)
    }

    /// The shortest a server may keep a push before giving it up: the first try's wait
    /// (`push_retry_initial_ms`), then a backoff after each of the `push_attempts_max - 1`
    /// retries, doubling from there and capped at `push_retry_max_ms`.
    pub fn push_schedule_ms(&self) -> u64 {
        (0..self.push_attempts_max)
            .map(|k| (self.push_retry_initial_ms << k.min(16)).min(self.push_retry_max_ms))
            .sum()
    }

    /// The shortest a device waits after its `failures`-th failed login in a row (1 or more)
    /// before the next: `reconnect_backoff_initial_ms`, doubling with each further failure,
    /// capped at `reconnect_backoff_max_ms`. (After a lost session the first wait is already
    /// the initial one, so the waits there are one step longer.)
    pub fn reconnect_backoff_ms(&self, failures: u32) -> u64 {
        let doublings = failures.saturating_sub(1).min(16);
        (self.reconnect_backoff_initial_ms << doublings).min(self.reconnect_backoff_max_ms)
    }

    /// The server's part of presence: a user whose devices all went silent is shown offline by
    /// the server at most this long after the server last heard from any of them (the session
    /// timeout, and one housekeeping tick to notice it).
    pub fn offline_detection_ms(&self) -> u64 {
        self.session_timeout_ms + self.server_tick_ms
    }

    /// How long a change the server made takes, at most, to reach an observer over a healthy
    /// link: at once when pushed; in pull mode at the next poll.
    pub fn presence_propagation_ms(&self) -> u64 {
        match self.presence {
            PresenceMode::Push => self.server_tick_ms,
            PresenceMode::Pull => self.presence_poll_ms + self.server_tick_ms,
        }
    }

    /// Checks the settings make sense together; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("heartbeat_probe_ms", self.heartbeat_probe_ms),
            ("server_silence_timeout_ms", self.server_silence_timeout_ms),
            ("session_timeout_ms", self.session_timeout_ms),
            ("login_timeout_ms", self.login_timeout_ms),
            (
                "reconnect_backoff_initial_ms",
                self.reconnect_backoff_initial_ms,
            ),
            ("retransmit_initial_ms", self.retransmit_initial_ms),
            ("gap_timeout_ms", self.gap_timeout_ms),
            ("pull_timeout_ms", self.pull_timeout_ms),
            ("push_retry_initial_ms", self.push_retry_initial_ms),
            ("server_tick_ms", self.server_tick_ms),
            ("send_window_max", self.send_window_max.into()),
            ("outbox_max", self.outbox_max.into()),
            ("hold_back_max", self.hold_back_max.into()),
            ("pull_page_max", self.pull_page_max.into()),
            ("push_window_max", self.push_window_max.into()),
            ("push_attempts_max", self.push_attempts_max.into()),
            ("sessions_max", self.sessions_max.into()),
            ("body_bytes_max", self.body_bytes_max.into()),
            ("ack_batch_max", self.ack_batch_max.into()),
            ("ack_delay_ms", self.ack_delay_ms),
            ("presence_poll_ms", self.presence_poll_ms),
            ("receipt_batch_ms", self.receipt_batch_ms),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(format!("protocol.{field} must be greater than 0"));
            }
        }
        let ordered = [
            (
                "reconnect_backoff",
                self.reconnect_backoff_initial_ms,
                self.reconnect_backoff_max_ms,
            ),
            (
                "retransmit",
                self.retransmit_initial_ms,
                self.retransmit_max_ms,
            ),
            (
                "push_retry",
                self.push_retry_initial_ms,
                self.push_retry_max_ms,
            ),
        ];
        for (name, initial, max) in ordered {
            if initial > max {
                return Err(format!(
                    "protocol.{name}_initial_ms ({initial}) must not exceed protocol.{name}_max_ms ({max})"
                ));
            }
        }
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(format!(
                "protocol.heartbeat_interval_ms ({}) must be below protocol.session_timeout_ms ({}), \
                 or every idle session expires",
                self.heartbeat_interval_ms, self.session_timeout_ms
            ));
        }
        if self.heartbeat_interval_ms >= self.server_silence_timeout_ms {
            return Err(format!(
                "protocol.heartbeat_interval_ms ({}) must be below protocol.server_silence_timeout_ms ({})",
                self.heartbeat_interval_ms, self.server_silence_timeout_ms
            ));
        }
        const HOUR_MS: u64 = 3_600_000;
        let timeouts = [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("server_silence_timeout_ms", self.server_silence_timeout_ms),
            ("session_timeout_ms", self.session_timeout_ms),
            ("reconnect_backoff_max_ms", self.reconnect_backoff_max_ms),
            ("retransmit_max_ms", self.retransmit_max_ms),
            ("push_retry_max_ms", self.push_retry_max_ms),
            ("presence_poll_ms", self.presence_poll_ms),
            ("receipt_batch_ms", self.receipt_batch_ms),
        ];
        for (field, value) in timeouts {
            if value > HOUR_MS {
                return Err(format!(
                    "protocol.{field} = {value} is over an hour; the limit is {HOUR_MS}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ProtocolConfig;

    #[test]
    fn a_backoff_may_be_constant_but_never_shrink() {
        let constant = ProtocolConfig {
            retransmit_initial_ms: 500,
            retransmit_max_ms: 500,
            ..ProtocolConfig::default()
        };
        assert_eq!(constant.validate(), Ok(()));
        let shrinking = ProtocolConfig {
            retransmit_max_ms: 499,
            ..constant
        };
        let error = shrinking.validate().unwrap_err();
        assert!(error.contains("retransmit_initial_ms (500)"), "{error}");
    }

    /// The two schedules only the checkers read (C3 `login-backs-off`, T5
    /// `push-kept-to-schedule`): a wrong one would make its invariant judge a wrong rule.
    #[test]
    fn the_login_backoff_and_the_push_schedule_double_up_to_their_cap() {
        let config = ProtocolConfig {
            reconnect_backoff_initial_ms: 250,
            reconnect_backoff_max_ms: 1_500,
            push_retry_initial_ms: 100,
            push_retry_max_ms: 500,
            push_attempts_max: 5,
            ..ProtocolConfig::default()
        };
        let waits: Vec<u64> = (1..=5).map(|n| config.reconnect_backoff_ms(n)).collect();
        assert_eq!(waits, [250, 500, 1_000, 1_500, 1_500]);
        assert_eq!(config.reconnect_backoff_ms(40), 1_500, "no overflow");
        assert_eq!(config.push_schedule_ms(), 100 + 200 + 400 + 500 + 500);
    }

    #[test]
    fn a_timeout_may_last_an_hour_and_no_longer() {
        let hour = ProtocolConfig {
            session_timeout_ms: 3_600_000,
            ..ProtocolConfig::default()
        };
        assert_eq!(hour.validate(), Ok(()));
        let longer = ProtocolConfig {
            session_timeout_ms: 3_600_001,
            ..hour
        };
        let error = longer.validate().unwrap_err();
        assert!(
            error.contains("protocol.session_timeout_ms = 3600001"),
            "{error}"
        );
    }
}
