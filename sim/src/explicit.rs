//! The explicit form of a run: the topology, workload and faults that (scenario, seed) draws,
//! written out so that nothing is left to draw. Conversations become an explicit list, every user
//! action of the plan becomes a line of `workload.script`, the drawn fault profile becomes
//! `faults.profile` with `swarm = false`, and `[pinned]` names the seed. `Setup::new` seeds madsim
//! from the seed alone, so the explicit form runs exactly like the original: same history, same
//! trace hash. It is the form the shrinker edits and the regression corpus stores.

use crate::faults::FaultClass;
use crate::run::{RunOutcome, Setup};
use crate::scenario::{
    Action, Conversations, FaultSpec, GroupSpec, Pinned, Scenario, ScriptedAction, TopologySpec,
    WorkloadSpec,
};
use imsim_history::check::Invariant;
use imsim_history::ConversationSpec;
use imsim_model::{Command, MembershipChange, ProtocolConfig};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

/// The explicit form of `scenario` run with `seed`, pinned to that seed with no expectation yet.
pub fn explicit(scenario: &Scenario, seed: u64) -> Scenario {
    let setup = Setup::new(scenario, seed);
    // The drawn features (topology, workload and protocol) are the run's, not the file's.
    let scenario = &setup.scenario;
    let duration_ms = scenario.workload.duration_ms;
    let mut script = Vec::new();
    for (device, commands) in &setup.plan.commands {
        for (at_ms, command) in commands {
            // The liveness phase's go-online, at `duration_ms`: `Setup::new` adds it again.
            if *at_ms >= duration_ms {
                debug_assert_eq!(*command, Command::GoOnline);
                continue;
            }
            let (action, conv, user, body) = match command {
                Command::Send { conv, body } => {
                    (Action::Send, Some(conv.0), None, Some(body.clone()))
                }
                Command::GoOnline => (Action::GoOnline, None, None, None),
                Command::GoOffline => (Action::GoOffline, None, None, None),
                Command::ChangeMembership { conv, change } => match change {
                    MembershipChange::Add(user) => (Action::Add, Some(conv.0), Some(user.0), None),
                    MembershipChange::Remove(user) => {
                        (Action::Remove, Some(conv.0), Some(user.0), None)
                    }
                    MembershipChange::Leave => (Action::Leave, Some(conv.0), None, None),
                },
                Command::Read { conv } => (Action::Read, Some(conv.0), None, None),
            };
            script.push(ScriptedAction {
                at_ms: *at_ms,
                device: device.0,
                action,
                conv,
                user,
                body,
            });
        }
    }
    // Time order reads best; the sort is stable, so each device's same-time actions keep their
    // plan order (the plan of a script is sorted per device the same way).
    script.sort_by_key(|action| action.at_ms);
    // 1:1 conversations come first in a topology, then groups: the same numbering either way.
    let numbers = |conversation: &ConversationSpec| -> Vec<u32> {
        conversation.members.iter().map(|user| user.0).collect()
    };
    let conversations = setup
        .topology
        .conversations
        .iter()
        .filter(|c| !c.group)
        .map(numbers)
        .collect();
    let groups = setup
        .topology
        .conversations
        .iter()
        .filter(|c| c.group)
        .map(|c| GroupSpec {
            size: c.members.len() as u32,
            count: 1,
            members: numbers(c),
        })
        .collect();
    Scenario {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        topology: TopologySpec {
            users: scenario.topology.users,
            devices_per_user: scenario.topology.devices_per_user,
            conversations: Conversations::List(conversations),
            groups,
            gateways: scenario.topology.gateways,
            gateway_connections_max: scenario.topology.gateway_connections_max,
            logic: scenario.topology.logic,
            queue: scenario.topology.queue,
        },
        workload: WorkloadSpec {
            duration_ms,
            messages: 0,
            burst_max: 1,
            offline_periods_per_device: 0,
            offline_ms_max: scenario.workload.offline_ms_max,
            online_fraction: 1.0,
            membership_changes: 0,
            reads: 0,
            roaming_devices: 0,
            edge_requests: 0,
            script,
        },
        faults: FaultSpec {
            swarm: false,
            swarm_classes: FaultClass::all(),
            profile: setup.faults.clone(),
        },
        features: Default::default(),
        protocol: scenario.protocol.clone(),
        liveness: scenario.liveness.clone(),
        budget: scenario.budget.clone(),
        pinned: Some(Pinned {
            seed,
            expect: Vec::new(),
            note: String::new(),
        }),
    }
}

/// The invariants a run violated, each once, in invariant order.
pub fn failing(outcome: &RunOutcome) -> BTreeSet<Invariant> {
    outcome.violations.iter().map(|v| v.invariant).collect()
}

/// Their codes, as `[pinned] expect` lists them.
pub fn codes(invariants: &BTreeSet<Invariant>) -> Vec<String> {
    invariants.iter().map(|i| i.code().to_string()).collect()
}

/// How big a run is, on the axes a shrink reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Size {
    pub devices: u32,
    /// Sends in the workload plan.
    pub messages: usize,
    /// Fault entries: each packet fault class, partition, crash, restart and clock skew.
    pub faults: usize,
    /// Records in the history.
    pub events: usize,
}

impl Size {
    pub fn of(outcome: &RunOutcome) -> Size {
        let setup = &outcome.setup;
        Size {
            devices: setup.scenario.device_count(),
            messages: setup.plan.sends(),
            faults: setup.faults.count(),
            events: outcome.history.records.len(),
        }
    }

    /// Whether no axis of `self` is larger than `other`'s.
    pub fn within(&self, other: &Size) -> bool {
        self.devices <= other.devices
            && self.messages <= other.messages
            && self.faults <= other.faults
            && self.events <= other.events
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "devices {}, messages {}, faults {}, events {}",
            self.devices, self.messages, self.faults, self.events
        )
    }
}

/// The scenario as a file: `header` as comment lines, then the TOML, with the script written one
/// action per line (an array of tables would take five lines per action) and without the lines
/// that only repeat a default (the protocol settings left as they are, empty fault lists, the
/// swarm classes of a scenario without swarm). The file parses back to `scenario`; should the
/// shortened text not, the full serialisation is written instead.
pub fn render(scenario: &Scenario, header: &str) -> String {
    let comments: String = header.lines().map(|line| format!("# {line}\n")).collect();
    let short = short_toml(scenario);
    match toml::from_str::<Scenario>(&short) {
        Ok(parsed) if parsed == *scenario => comments + &short,
        _ => comments + &scenario.to_toml(),
    }
}

fn short_toml(scenario: &Scenario) -> String {
    let mut without_script = scenario.clone();
    let script = std::mem::take(&mut without_script.workload.script);
    // Serialising a default `ProtocolConfig` cannot fail: it is a table of plain numbers.
    let protocol_defaults = toml::to_string(&ProtocolConfig::default()).expect("serialises");
    let protocol_defaults: BTreeSet<&str> = protocol_defaults.lines().collect();
    let mut sections = vec![(String::new(), Vec::new())];
    for line in without_script.to_toml().lines() {
        if line.starts_with('[') {
            sections.push((line.to_string(), Vec::new()));
        } else if !line.trim().is_empty() {
            let (header, lines) = sections.last_mut().expect("one section at least");
            let default = match header.as_str() {
                "" => line == "description = \"\"",
                "[workload]" => line == "burst_max = 1" || line == "offline_periods_per_device = 0",
                "[faults]" => !scenario.faults.swarm && line.starts_with("swarm_classes = "),
                "[faults.profile]" => line.ends_with(" = []"),
                "[protocol]" => protocol_defaults.contains(line),
                _ => false,
            };
            if !default {
                lines.push(line.to_string());
            }
        }
    }
    let mut text = String::new();
    for (header, mut lines) in sections {
        if header == "[workload]" && !script.is_empty() {
            lines.push("script = [".to_string());
            lines.extend(
                script
                    .iter()
                    .map(|action| format!("    {},", inline(action))),
            );
            lines.push("]".to_string());
        }
        if header.is_empty() {
            text += &lines
                .iter()
                .map(|line| format!("{line}\n"))
                .collect::<String>();
        } else if !lines.is_empty() {
            text += &format!("\n{header}\n{}\n", lines.join("\n"));
        }
    }
    text
}

/// One action as a TOML inline table.
fn inline(action: &ScriptedAction) -> String {
    let name = match action.action {
        Action::Send => "send",
        Action::GoOnline => "go-online",
        Action::GoOffline => "go-offline",
        Action::Add => "add",
        Action::Remove => "remove",
        Action::Leave => "leave",
        Action::Read => "read",
    };
    let mut fields = format!(
        "{{ at_ms = {}, device = {}, action = \"{name}\"",
        action.at_ms, action.device
    );
    if let Some(conv) = action.conv {
        fields += &format!(", conv = {conv}");
    }
    if let Some(user) = action.user {
        fields += &format!(", user = {user}");
    }
    if let Some(body) = &action.body {
        fields += &format!(", body = {}", toml::Value::String(body.clone()));
    }
    fields + " }"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::run;

    #[test]
    fn rendered_explicit_form_parses_back_unchanged() {
        for (name, _) in crate::scenario::SHIPPED {
            let scenario = Scenario::load(name).unwrap();
            let mut form = explicit(&scenario, 4);
            form.pinned.as_mut().unwrap().note = "a \"quoted\" note\\".to_string();
            let text = render(&form, "made by a test\nsecond line");
            assert!(text.starts_with("# made by a test\n# second line\n"));
            let parsed = Scenario::parse("explicit.toml", &text)
                .unwrap_or_else(|error| panic!("{error}\n{text}"));
            assert_eq!(parsed, form, "{text}");
        }
    }

    #[test]
    fn explicit_form_has_the_same_setup() {
        let scenario = Scenario::load("offline-resume").unwrap();
        for seed in 0..20 {
            let original = Setup::new(&scenario, seed);
            let form = Setup::new(&explicit(&scenario, seed), seed);
            assert_eq!(form.topology, original.topology, "seed {seed}");
            assert_eq!(form.faults, original.faults, "seed {seed}");
            assert_eq!(form.plan, original.plan, "seed {seed}");
        }
    }

    #[test]
    fn size_counts_every_axis() {
        let outcome = run(&Scenario::load("server-crash").unwrap(), 1);
        let size = Size::of(&outcome);
        assert_eq!(size.devices, 4);
        assert_eq!(size.messages, 80);
        assert!(size.faults >= 3, "three scripted crashes: {size}");
        assert_eq!(size.events, outcome.history.records.len());
        assert!(size.within(&size));
    }
}
