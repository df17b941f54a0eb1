//! Who takes part (the cast), and what happens when (the plan): the workload and the faults,
//! drawn from the seed alone with rand_chacha so a seed always means the same schedule.
//!
//! Fault classes are chosen (`--faults a,b`, or none) or swarm-drawn (`--faults swarm`: per
//! seed each class is on or off); then the events of the classes that are on are placed in
//! the safety phase. The times, targets and durations always come from the seed.

use imsim_history::blackbox::{ClientInfo, ConversationInfo, ConversationKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The one group conversation: a room on the server's MUC component.
pub const ROOM: &str = "room";

/// Fault events placed in one run at most.
pub const FAULT_EVENTS_MAX: u32 = 4;

/// The users, their devices (clients) and the conversations.
#[derive(Clone, Debug)]
pub struct Cast {
    pub clients: Vec<ClientInfo>,
    pub conversations: Vec<ConversationInfo>,
    pub domain: String,
    pub muc_domain: String,
    /// Archive reads ask only for entries since this time (XEP-0082 UTC), so a server used
    /// for earlier runs shows this run's messages only.
    pub archive_start: Option<String>,
}

impl Cast {
    /// The users `names`; the first has two devices (d1, d2: carbons), the others one each; a
    /// 1:1 chat between every pair and one room with everyone.
    pub fn standard(names: &[String], domain: &str, muc_domain: &str) -> Cast {
        let names = names.to_vec();
        let mut clients = Vec::new();
        for name in &names {
            let devices = if clients.is_empty() { 2 } else { 1 };
            for _ in 0..devices {
                clients.push(ClientInfo {
                    client: format!("d{}", clients.len() + 1),
                    user: name.clone(),
                });
            }
        }
        let mut conversations = Vec::new();
        for (index, first) in names.iter().enumerate() {
            for second in &names[index + 1..] {
                conversations.push(ConversationInfo {
                    conv: Cast::direct_conv(first, second),
                    kind: ConversationKind::Direct,
                    members: vec![first.clone(), second.clone()],
                });
            }
        }
        conversations.push(ConversationInfo {
            conv: ROOM.to_string(),
            kind: ConversationKind::Group,
            members: names,
        });
        Cast {
            clients,
            conversations,
            domain: domain.to_string(),
            muc_domain: muc_domain.to_string(),
            archive_start: None,
        }
    }

    /// The name of the 1:1 chat of two users, the same from either side.
    pub fn direct_conv(first: &str, second: &str) -> String {
        if first <= second {
            format!("{first}~{second}")
        } else {
            format!("{second}~{first}")
        }
    }

    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = Vec::new();
        for client in &self.clients {
            if !users.contains(&client.user) {
                users.push(client.user.clone());
            }
        }
        users
    }

    pub fn user_of(&self, client: &str) -> Option<&str> {
        self.clients
            .iter()
            .find(|info| info.client == client)
            .map(|info| info.user.as_str())
    }

    pub fn room_jid(&self) -> String {
        format!("{ROOM}@{}", self.muc_domain)
    }

    /// Where a message in `conv` from `user` goes, and whether it is a group message.
    pub fn address_of(&self, conv: &str, user: &str, domain: &str) -> (String, bool) {
        if conv == ROOM {
            return (self.room_jid(), true);
        }
        let peer = conv
            .split('~')
            .find(|member| *member != user)
            .unwrap_or(user);
        (format!("{peer}@{domain}"), false)
    }

    /// The conversations `user` is a member of.
    pub fn conversations_of(&self, user: &str) -> Vec<String> {
        self.conversations
            .iter()
            .filter(|conversation| conversation.members.iter().any(|member| member == user))
            .map(|conversation| conversation.conv.clone())
            .collect()
    }
}

/// A Unix time in seconds as an XEP-0082 UTC date-time (`1970-01-01T00:00:00Z`).
pub fn utc_date_time(unix_s: u64) -> String {
    // Days to a civil date: Howard Hinnant's days_from_civil, inverted.
    let days = (unix_s / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let seconds = unix_s % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// Which fault classes a run uses and their bounds (printed in the run header).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultProfile {
    pub reset: bool,
    pub stall: bool,
    pub blackhole: bool,
    pub delay: bool,
    pub refuse: bool,
    pub server_kill: bool,
    pub events: u32,
    pub duration_ms_max: u64,
    pub delay_ms_max: u64,
}

/// The fault class names `--faults` accepts.
pub const FAULT_CLASSES: [&str; 6] = [
    "reset",
    "stall",
    "blackhole",
    "delay",
    "refuse",
    "server_kill",
];

impl FaultProfile {
    /// The profile of a seed: each class on with probability 1/2, unless `chosen` names the
    /// classes (`none` for no faults).
    pub fn draw(seed: u64, chosen: Option<&[String]>) -> Result<FaultProfile, String> {
        let mut random = ChaCha8Rng::seed_from_u64(seed ^ 0xfa17);
        let mut on = [false; 6];
        for flag in &mut on {
            *flag = random.gen_bool(0.5);
        }
        if let Some(chosen) = chosen {
            on = [false; 6];
            for name in chosen.iter().filter(|name| name.as_str() != "none") {
                let index = FAULT_CLASSES
                    .iter()
                    .position(|class| class == name)
                    .ok_or_else(|| {
                        format!(
                            "--faults: unknown fault `{name}` (known: none, swarm, {})",
                            FAULT_CLASSES.join(", ")
                        )
                    })?;
                on[index] = true;
            }
        }
        let events = if on.iter().any(|flag| *flag) {
            random
                .gen_range(1..=FAULT_EVENTS_MAX)
                .max(on.iter().filter(|f| **f).count() as u32)
        } else {
            0
        };
        Ok(FaultProfile {
            reset: on[0],
            stall: on[1],
            blackhole: on[2],
            delay: on[3],
            refuse: on[4],
            server_kill: on[5],
            events,
            duration_ms_max: random.gen_range(1_000..=6_000),
            delay_ms_max: random.gen_range(20..=300),
        })
    }

    fn classes(&self) -> Vec<&'static str> {
        let flags = [
            self.reset,
            self.stall,
            self.blackhole,
            self.delay,
            self.refuse,
            self.server_kill,
        ];
        FAULT_CLASSES
            .iter()
            .zip(flags)
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// One thing the harness does at `at_ms` after the workload starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at_ms: u64,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Send {
        client: String,
        conv: String,
        msg: String,
        body: String,
    },
    MarkRead {
        client: String,
        conv: String,
    },
    /// `fault` is a class name; `target` a client or `server`; `detail` its direction.
    Fault {
        fault: String,
        target: String,
        detail: String,
        duration_ms: u64,
        delay_ms: u64,
    },
}

/// The whole schedule, in time order.
pub fn schedule(seed: u64, cast: &Cast, messages: u32, profile: &FaultProfile) -> Vec<Step> {
    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let words = [
        "hello",
        "lunch?",
        "on my way",
        "ok",
        "see below",
        "thanks",
        "ship it",
        "ping",
    ];
    let mut steps = Vec::new();
    let mut at_ms = 0;
    let mut sent = 0;
    let mut counters = vec![0u32; cast.clients.len()];
    while sent < messages {
        at_ms += random.gen_range(20..=120);
        let index = random.gen_range(0..cast.clients.len());
        let client = cast.clients[index].clone();
        let conversations = cast.conversations_of(&client.user);
        let conv = conversations[random.gen_range(0..conversations.len())].clone();
        if random.gen_bool(0.2) {
            steps.push(Step {
                at_ms,
                action: Action::MarkRead {
                    client: client.client,
                    conv,
                },
            });
            continue;
        }
        counters[index] += 1;
        let msg = format!("{}-{}", client.client, counters[index]);
        let body = format!("{msg}: {}", words[random.gen_range(0..words.len())]);
        steps.push(Step {
            at_ms,
            action: Action::Send {
                client: client.client,
                conv,
                msg,
                body,
            },
        });
        sent += 1;
    }
    let classes = profile.classes();
    for _ in 0..if classes.is_empty() {
        0
    } else {
        profile.events
    } {
        let fault = classes[random.gen_range(0..classes.len())];
        let target = if fault == "server_kill" {
            "server".to_string()
        } else {
            cast.clients[random.gen_range(0..cast.clients.len())]
                .client
                .clone()
        };
        let detail = match fault {
            "stall" | "blackhole" => ["to_server", "to_client", "both"][random.gen_range(0..3)],
            _ => "",
        };
        steps.push(Step {
            at_ms: random.gen_range(at_ms / 10..=at_ms * 8 / 10),
            action: Action::Fault {
                fault: fault.to_string(),
                target,
                detail: detail.to_string(),
                duration_ms: random.gen_range(300..=profile.duration_ms_max),
                delay_ms: random.gen_range(5..=profile.delay_ms_max),
            },
        });
    }
    steps.sort_by_key(|step| step.at_ms);
    without_overlaps(steps)
}

/// Drops a fault whose target is still under an earlier fault: overlapping faults on one
/// target would heal each other early (and a second server kill would hit a dead server).
fn without_overlaps(steps: Vec<Step>) -> Vec<Step> {
    let mut busy_until: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    steps
        .into_iter()
        .filter(|step| match &step.action {
            Action::Fault {
                target,
                duration_ms,
                ..
            } => {
                let free = busy_until
                    .get(target)
                    .is_none_or(|until| *until < step.at_ms);
                if free {
                    busy_until.insert(target.clone(), step.at_ms + duration_ms);
                }
                free
            }
            _ => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (1..=count).map(|index| format!("u{index}")).collect()
    }

    #[test]
    fn the_schedule_is_a_function_of_the_seed() {
        let cast = Cast::standard(&names(3), "localhost", "conference.localhost");
        let profile = FaultProfile::draw(7, None).unwrap();
        assert_eq!(profile, FaultProfile::draw(7, None).unwrap());
        let first = schedule(7, &cast, 20, &profile);
        assert_eq!(first, schedule(7, &cast, 20, &profile));
        let sends = first
            .iter()
            .filter(|step| matches!(step.action, Action::Send { .. }))
            .count();
        assert_eq!(sends, 20);
        assert!(first.windows(2).all(|pair| pair[0].at_ms <= pair[1].at_ms));
    }

    #[test]
    fn chosen_faults_replace_the_draw_and_bad_names_are_refused() {
        let chosen = vec!["server_kill".to_string()];
        let profile = FaultProfile::draw(3, Some(&chosen)).unwrap();
        assert_eq!(profile.classes(), vec!["server_kill"]);
        let none = FaultProfile::draw(3, Some(&["none".to_string()])).unwrap();
        assert_eq!(none.events, 0);
        let error = FaultProfile::draw(3, Some(&["flood".to_string()])).unwrap_err();
        assert!(error.contains("unknown fault `flood`"), "{error}");
    }

    #[test]
    fn utc_date_times_match_known_dates() {
        assert_eq!(utc_date_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_date_time(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn the_cast_has_a_second_device_and_every_pair() {
        let cast = Cast::standard(&names(3), "localhost", "conference.localhost");
        assert_eq!(cast.clients.len(), 4);
        assert_eq!(cast.user_of("d2"), Some("u1"));
        assert_eq!(cast.conversations.len(), 4);
        assert_eq!(Cast::direct_conv("u3", "u1"), "u1~u3");
        assert_eq!(
            cast.address_of("u1~u3", "u3", "localhost"),
            ("u1@localhost".to_string(), false)
        );
    }
}
