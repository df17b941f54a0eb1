//! `imsim xmpp`: drive a real XMPP server (a Prosody the command starts, or `--server`) through
//! fault proxies, record a black-box history, judge it, and print the result the way `imsim
//! run` prints a seed (text or one JSON object; exit 0 held, 1 violations, 2 bad input).

use crate::args::Format;
use crate::output::{say, ViolationJson};
use imsim_history::blackbox::{judge, report, BlackBoxHistory, Verdict};
use imsim_xmpp::{ExternalServer, XmppOptions};
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct XmppArgs {
    /// The seed: it draws the workload, the fault classes and their times.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Messages sent in the safety phase.
    #[arg(long, default_value_t = 40)]
    messages: u32,
    /// Users (2-6); the first has two devices.
    #[arg(long, default_value_t = 3)]
    users: usize,
    /// Fault classes, comma separated: none (the default), swarm (each class on or off by
    /// the seed), or any of reset, stall, blackhole, delay, refuse, server_kill. Times,
    /// targets and durations always come from the seed.
    #[arg(long, value_delimiter = ',', default_value = "none")]
    faults: Vec<String>,
    /// Use this running server instead of starting Prosody (needs --accounts).
    #[arg(long, value_name = "HOST:PORT", requires = "accounts")]
    server: Option<SocketAddr>,
    /// With --server: a file of `user password` lines, one account per line.
    #[arg(long, value_name = "FILE", requires = "server")]
    accounts: Option<PathBuf>,
    /// With --server: the XMPP domain of the accounts (the room is on conference.DOMAIN).
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// text for people; json: one JSON object for the run, with the judged invariants.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the black-box history (JSON lines) here, for `imsim check`.
    #[arg(long, value_name = "FILE")]
    history_out: Option<PathBuf>,
    /// Print every record as it happens (to stderr).
    #[arg(long)]
    verbose: bool,
    /// How long the started Prosody keeps a dropped session resumable (XEP-0198), seconds.
    #[arg(long, default_value_t = imsim_xmpp::server::HIBERNATION_S_DEFAULT)]
    hibernation_s: u64,
    /// Clients re-send unacknowledged messages after a failed resumption without first
    /// looking for them in the archive (a naive at-least-once client).
    #[arg(long)]
    naive_resend: bool,
}

pub fn command_xmpp(args: XmppArgs) -> Result<bool, String> {
    let server = match (&args.server, &args.accounts) {
        (Some(address), Some(file)) => Some(ExternalServer {
            address: *address,
            domain: args.domain.clone(),
            accounts: read_accounts(file)?,
        }),
        _ => None,
    };
    let options = XmppOptions {
        seed: args.seed,
        messages: args.messages,
        users: args.users,
        faults: (args.faults != ["swarm"]).then(|| args.faults.clone()),
        server,
        verbose: args.verbose,
        hibernation_s: args.hibernation_s,
        naive_resend: args.naive_resend,
    };
    let profile = imsim_xmpp::profile_of(&options)?;
    let faults = serde_json::to_string(&profile).unwrap_or_default();
    let plan = imsim_xmpp::fault_plan(&options)?;
    if args.format == Format::Text {
        say!("== xmpp seed {} faults {faults}", args.seed);
        for line in &plan {
            say!("   fault {line}");
        }
    }
    let outcome = imsim_xmpp::run(&options)?;
    if let Some(path) = &args.history_out {
        std::fs::write(path, outcome.history.to_jsonl())
            .map_err(|error| format!("{}: cannot write: {error}", path.display()))?;
    }
    let verdict = judge(&outcome.history);
    let replay = replay_command(&args);
    match args.format {
        Format::Text => {
            say!(
                "   {}: {} | {} | wall {:.1}s",
                if verdict.findings.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                },
                outcome.system,
                report::counts(&outcome.history),
                outcome.wall.as_secs_f64()
            );
            for line in report::verdict_text(&outcome.history, &verdict).lines() {
                say!("   {line}");
            }
            if !verdict.findings.is_empty() {
                say!("   replay: {replay}");
            }
            if let Some(path) = &args.history_out {
                say!("   history: {}", path.display());
            }
        }
        Format::Json => {
            let mut object = json_of(&outcome.history, &verdict);
            object["seed"] = json!(args.seed);
            object["scenario"] = json!("xmpp");
            object["system"] = json!(outcome.system);
            object["faults"] = serde_json::to_value(&profile).unwrap_or_default();
            object["fault_plan"] = json!(plan);
            object["replay"] = json!(replay);
            object["wall_ms"] = json!(outcome.wall.as_millis() as u64);
            object["history"] = json!(args
                .history_out
                .as_ref()
                .map(|path| path.display().to_string()));
            say!("{object}");
        }
    }
    Ok(verdict.findings.is_empty())
}

/// The command that runs the same seed, workload and faults again. A real server is not
/// deterministic: the same schedule, not the same interleaving.
fn replay_command(args: &XmppArgs) -> String {
    let mut command = format!(
        "imsim xmpp --seed {} --messages {} --users {}",
        args.seed, args.messages, args.users
    );
    command += &format!(" --faults {}", args.faults.join(","));
    if args.hibernation_s != imsim_xmpp::server::HIBERNATION_S_DEFAULT {
        command += &format!(" --hibernation-s {}", args.hibernation_s);
    }
    if args.naive_resend {
        command += " --naive-resend";
    }
    command
}

/// `user password` per line; blank lines and `#` comments are skipped.
fn read_accounts(path: &Path) -> Result<Vec<(String, String)>, String> {
    let name = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("{name}: cannot read: {error}"))?;
    let mut accounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(user), Some(password), None) => {
                accounts.push((user.to_string(), password.to_string()))
            }
            _ => {
                return Err(format!(
                    "{name}:{}: accounts: expected `user password`, found `{line}`",
                    index + 1
                ))
            }
        }
    }
    Ok(accounts)
}

/// `imsim check` on a black-box history (docs/history-format.md, "Black-box histories"):
/// which invariants were judged and which not (and why), then the violations.
pub fn check_blackbox(name: &str, text: &str, format: Format) -> Result<bool, String> {
    let history = BlackBoxHistory::from_jsonl(text)
        .map_err(|(line, message)| format!("{name}:{line}: {message}"))?;
    let verdict = judge(&history);
    match format {
        Format::Text => {
            say!(
                "== {name}: black-box history, {} records",
                history.records.len()
            );
            say!(
                "   {}: {}",
                if verdict.findings.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                },
                report::counts(&history)
            );
            for line in report::verdict_text(&history, &verdict).lines() {
                say!("   {line}");
            }
        }
        Format::Json => {
            let mut object = json_of(&history, &verdict);
            object["history"] = json!(name);
            object["profile"] = json!("blackbox");
            object["records"] = json!(history.records.len());
            say!("{object}");
        }
    }
    Ok(verdict.findings.is_empty())
}

/// `ok`, the judged and not judged invariants, and the violations in the JSON shape `imsim run`
/// and `imsim check` use for every violation.
fn json_of(history: &BlackBoxHistory, verdict: &Verdict) -> serde_json::Value {
    let mut object = report::judgement_json(verdict);
    let violations: Vec<ViolationJson> = verdict
        .findings
        .iter()
        .map(|violation| ViolationJson {
            invariant: violation.invariant.to_string(),
            code: violation.invariant.code().to_string(),
            name: violation.invariant.name().to_string(),
            class: format!("{:?}", violation.class()).to_lowercase(),
            explanation: violation.explanation.clone(),
            witness: violation
                .witness
                .iter()
                .filter_map(|index| history.records.get(*index))
                .filter_map(|record| serde_json::to_value(record).ok())
                .collect(),
            diverging_record: None,
        })
        .collect();
    object["ok"] = json!(verdict.findings.is_empty());
    object["violations"] = serde_json::to_value(violations).unwrap_or_default();
    object
}
