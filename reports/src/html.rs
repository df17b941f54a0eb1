//! `report.html`: one self-contained page. The CSS and the script are inlined (`page.css`,
//! `page.js`), the charts are inline SVG, fonts are the system's: the file opens from disk with
//! no network. Sections, top to bottom: verdict and replay command, violations (if any), the
//! timeline, latency, invariants, faults.

use crate::extract::CATEGORIES;
use crate::histogram;
use crate::markup::escape;
use crate::report::{Report, Status, ViolationReport};
use crate::svg::{self, css_ident};
use crate::time::{seconds, seconds_precise};
use std::collections::BTreeSet;
use std::fmt::Write;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

pub fn page(report: &Report) -> String {
    let witness: BTreeSet<usize> = report
        .violations
        .iter()
        .flat_map(|v| v.witness.iter().map(|w| w.index))
        .collect();
    let title = format!(
        "imsim report: {} seed {} — {}",
        report.scenario,
        report.seed,
        if report.ok { "ok" } else { "FAILED" }
    );
    let mut html = String::with_capacity(64 * 1024 + report.events.len() * 160);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}{}</style></head><body>",
        escape(&title),
        unknown_type_colours(report)
    );
    header(&mut html, report);
    if !report.violations.is_empty() {
        violations(&mut html, report);
    }
    timeline_section(&mut html, report, &witness);
    latency_section(&mut html, report);
    invariants(&mut html, report);
    coverage(&mut html, report);
    faults(&mut html, report);
    let _ = write!(
        html,
        "<footer>imsim report format {} · times are simulated, from the start of the run · \
         the same data is in report.json</footer>",
        report.format_version
    );
    let _ = writeln!(
        html,
        "<script id=\"report-data\" type=\"application/json\">{}</script><script>{SCRIPT}</script></body></html>",
        script_data(report)
    );
    html
}

/// Event types the report has no category for get a colour of their own, derived from the name
/// (so it is stable from run to run and new types need no code change).
fn unknown_type_colours(report: &Report) -> String {
    let kinds: BTreeSet<&str> = report
        .events
        .iter()
        .filter(|e| e.category == "other")
        .map(|e| e.kind.as_str())
        .collect();
    let mut css = String::new();
    for kind in kinds {
        let hue = kind
            .bytes()
            .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
            % 360;
        let _ = write!(
            css,
            ".t-{0}{{fill:hsl({hue},60%,42%)}}.legend .t-{0}{{background:hsl({hue},60%,42%)}}",
            css_ident(kind)
        );
    }
    css
}

fn header(html: &mut String, report: &Report) {
    let verdict = if report.ok {
        r#"<span class="verdict ok">ok · every invariant held</span>"#.to_string()
    } else {
        format!(
            r#"<span class="verdict failed">FAILED · {} violation{}</span>"#,
            report.violations.len(),
            if report.violations.len() == 1 {
                ""
            } else {
                "s"
            }
        )
    };
    let _ = write!(
        html,
        r#"<header><h1>{} <span class="seed">seed {}</span> {verdict}</h1><p class="sub">variant <b>{}</b> · {} simulated · {} history records{}</p><div class="replay"><span>replay</span><code id="replay-command">{}</code></div>"#,
        escape(&report.scenario),
        report.seed,
        escape(&report.variant),
        seconds(report.duration_ms),
        report.counts.records,
        if report.complete {
            ""
        } else {
            " · <b>incomplete history: liveness invariants not judged</b>"
        },
        escape(&report.replay)
    );
    let counts = &report.counts;
    let mut cells = vec![
        ("sends", counts.sends),
        ("committed", counts.committed),
        ("acked", counts.acked),
        ("displayed", counts.displayed),
        ("send failures", counts.send_failures),
        ("pulls", counts.pulls),
        ("server crashes", counts.server_crashes),
        ("device restarts", counts.device_restarts),
        ("partitions", counts.partitions),
    ];
    if let Some(packets) = &counts.packets {
        cells.push(("packets", packets.sent));
        cells.push(("dropped", packets.dropped));
        cells.push(("duplicated", packets.duplicated));
    }
    html.push_str(r#"<dl class="counts">"#);
    for (name, value) in cells {
        let _ = write!(html, "<div><dt>{name}</dt><dd>{value}</dd></div>");
    }
    html.push_str("</dl></header>");
}

fn violations(html: &mut String, report: &Report) {
    html.push_str(r#"<section id="violations"><h2>Violations</h2>"#);
    for (number, violation) in report.violations.iter().enumerate() {
        violation_block(html, report, number, violation);
    }
    html.push_str("</section>");
}

fn violation_block(html: &mut String, report: &Report, number: usize, v: &ViolationReport) {
    let (first, last) = (
        v.witness.iter().map(|w| w.t_ms).min().unwrap_or(0),
        v.witness.iter().map(|w| w.t_ms).max().unwrap_or(0),
    );
    let _ = write!(
        html,
        r#"<div class="violation" id="violation-{number}"><h3><span class="code">{}</span> {} <span class="class">{}</span></h3><p>{}</p><button class="zoom-to" data-from="{first}" data-to="{last}">show the witness on the timeline</button><table class="witness-table"><thead><tr><th>record</th><th>time</th><th>node</th><th>event</th><th>fields</th></tr></thead><tbody>"#,
        escape(&v.code),
        escape(&v.name),
        escape(&v.class),
        escape(&v.explanation)
    );
    for record in &v.witness {
        let _ = write!(
            html,
            r#"<tr class="zoom-to" data-from="{t}" data-to="{t}"><td>[{}]</td><td>{}</td><td>{}</td><td><span class="swatch {}"></span>{}</td><td class="detail">{}</td></tr>"#,
            record.index,
            seconds_precise(record.t_ms),
            escape(&record.node),
            format_args!("k-{}", record.category),
            escape(&record.kind),
            escape(&record.detail),
            t = record.t_ms
        );
    }
    let _ = write!(
        html,
        r#"</tbody></table><div class="replay"><span>replay</span><code>{}</code></div></div>"#,
        escape(&report.replay)
    );
}

fn timeline_section(html: &mut String, report: &Report, witness: &BTreeSet<usize>) {
    let range = svg::drawn_range(report);
    html.push_str(r#"<section id="timeline-section"><h2>Timeline</h2>"#);
    html.push_str(
        r#"<div class="controls"><button data-view="all">whole run</button><button data-view="focus">first view</button>"#,
    );
    if let Some(liveness_ms) = report.liveness_phase_ms {
        let _ = write!(
            html,
            r#"<button class="zoom-to" data-from="0" data-to="{liveness_ms}">safety phase</button><button class="zoom-to" data-from="{liveness_ms}" data-to="{}">liveness phase</button>"#,
            report.duration_ms
        );
    }
    html.push_str(
        r#"<button data-zoom="0.5">zoom in</button><button data-zoom="2">zoom out</button><span id="window-readout" class="readout"></span><span class="hint">drag to pan · Ctrl+wheel to zoom · click or drag on the strip to choose a window · hover a mark for its event</span></div>"#,
    );
    let packet_faults = packet_faults(&report.faults);
    if !packet_faults.is_empty() {
        let _ = write!(
            html,
            r#"<p class="packet-faults" id="packet-faults"><b>throughout the safety phase</b> (not drawn as bands): {}</p>"#,
            escape(&packet_faults.join(" · "))
        );
    }
    html.push_str(&svg::overview(report));
    html.push_str(r#"<div id="event-info" class="event-info">hover a mark to see its event</div><div class="timeline-frame">"#);
    html.push_str(&svg::timeline(report, witness));
    html.push_str("</div>");
    if range.len() < report.events.len() {
        let (from, to) = (
            report.events[range.start].t_ms,
            report.events[range.end - 1].t_ms,
        );
        let _ = write!(
            html,
            r#"<p class="note">{} of {} events are drawn ({} – {}) to keep this page small; report.json has all of them.</p>"#,
            range.len(),
            report.events.len(),
            seconds_precise(from),
            seconds_precise(to)
        );
    }
    legend(html, report);
    html.push_str("</section>");
}

fn legend(html: &mut String, report: &Report) {
    html.push_str(r#"<div class="legend" id="legend"><span class="legend-title">events (click to hide)</span>"#);
    for category in CATEGORIES {
        let kinds: BTreeSet<&str> = report
            .events
            .iter()
            .filter(|e| e.category == category)
            .map(|e| e.kind.as_str())
            .collect();
        if kinds.is_empty() {
            continue;
        }
        if category == "other" {
            for kind in kinds {
                let _ = write!(
                    html,
                    r#"<button class="legend-item" data-hide="t-{0}"><span class="swatch t-{0}"></span>{1}</button>"#,
                    css_ident(kind),
                    escape(kind)
                );
            }
            continue;
        }
        let kinds: Vec<&str> = kinds.into_iter().collect();
        let _ = write!(
            html,
            r#"<button class="legend-item" data-hide="k-{category}" title="{}"><span class="swatch k-{category}"></span>{category}</button>"#,
            kinds.join(", ")
        );
    }
    html.push_str(
        r#"</div><div class="legend"><span class="legend-title">shading</span><span class="legend-item"><span class="swatch band offline"></span>no session (offline)</span><span class="legend-item"><span class="swatch band partition"></span>partition</span><span class="legend-item"><span class="swatch band device-down"></span>app killed</span><span class="legend-item"><span class="swatch band server-down"></span>server down (all lanes)</span><span class="legend-item"><span class="swatch band liveness"></span>liveness phase</span><span class="legend-item"><span class="swatch witness"></span>violation witness</span></div>"#,
    );
}

fn latency_section(html: &mut String, report: &Report) {
    let latency = &report.latency;
    html.push_str(r#"<section id="latency"><h2>Send→display latency</h2><div class="latency">"#);
    html.push_str(&histogram::histogram(latency));
    let value = |v: Option<u64>| v.map_or_else(|| "–".to_string(), seconds);
    let _ = write!(
        html,
        r#"<table class="stats"><tr><th>deliveries</th><td>{}</td></tr><tr><th>p50</th><td>{}</td></tr><tr><th>p90</th><td>{}</td></tr><tr><th>p99</th><td>{}</td></tr><tr><th>max</th><td>{}</td></tr><tr><th>mean</th><td>{}</td></tr><tr><th>never displayed</th><td>{}</td></tr></table></div>"#,
        latency.samples,
        value(latency.p50_ms),
        value(latency.p90_ms),
        value(latency.p99_ms),
        value(latency.max_ms),
        latency
            .mean_ms
            .map_or_else(|| "–".to_string(), |m| seconds(m.round() as u64)),
        latency
            .not_displayed
            .map_or_else(|| "–".to_string(), |c| c.to_string()),
    );
    html.push_str(
        r#"<p class="note">From <code>send_requested</code> on the sending device to the first <code>displayed</code> on each other member device (matched by sender device and client_msg_id), in simulated time.</p>"#,
    );
    if !latency.paths.is_empty() {
        html.push_str(r#"<h3>Delivery paths</h3><table class="paths"><thead><tr><th>path</th><th>deliveries</th><th>share</th><th>p50</th><th>max</th></tr></thead><tbody>"#);
        let total: u64 = latency.paths.iter().map(|p| p.deliveries).sum();
        for path in &latency.paths {
            let _ = write!(
                html,
                r#"<tr><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td></tr>"#,
                escape(&path.path),
                path.deliveries,
                100.0 * path.deliveries as f64 / total.max(1) as f64,
                value(path.p50_ms),
                value(path.max_ms)
            );
        }
        html.push_str(r#"</tbody></table><p class="note">The packet that brought each delivery (<code>displayed.via</code>). Push (or, in a large group, the pull a notice started) is the primary path; gap pulls and resumes are repairs.</p>"#);
    }
    if !latency.slowest.is_empty() {
        html.push_str(r#"<h3>Slowest deliveries</h3><table class="slowest"><thead><tr><th>message</th><th>conv</th><th>to</th><th>sent</th><th>displayed</th><th>latency</th></tr></thead><tbody>"#);
        for sample in &latency.slowest {
            let _ = write!(
                html,
                r#"<tr class="zoom-to" data-from="{}" data-to="{}"><td>d{} m{}</td><td>c{}</td><td>d{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                sample.sent_ms,
                sample.displayed_ms,
                sample.sender_device,
                sample.client_msg_id,
                sample.conv,
                sample.display_device,
                seconds_precise(sample.sent_ms),
                seconds_precise(sample.displayed_ms),
                seconds(sample.latency_ms)
            );
        }
        html.push_str("</tbody></table>");
    }
    html.push_str("</section>");
}

fn invariants(html: &mut String, report: &Report) {
    html.push_str(r#"<section id="invariants-section"><h2>Invariants</h2><table id="invariants" class="invariants"><thead><tr><th>code</th><th>invariant</th><th>class</th><th>result</th></tr></thead><tbody>"#);
    for row in &report.invariants {
        let (class, result) = match row.status {
            Status::Held => ("held", "✓ held".to_string()),
            Status::Violated => (
                "violated",
                format!(
                    "✗ violated ({} time{})",
                    row.violations,
                    if row.violations == 1 { "" } else { "s" }
                ),
            ),
            Status::NotJudged => (
                "not-judged",
                "– not judged (incomplete history)".to_string(),
            ),
        };
        let _ = write!(
            html,
            r#"<tr id="inv-{0}" class="{class}"><td class="code">{0}</td><td>{1}</td><td>{2}</td><td class="result">{result}</td></tr>"#,
            escape(&row.code),
            escape(&row.name),
            escape(&row.class)
        );
    }
    html.push_str(r#"</tbody></table><p class="note"><b>always</b>: must hold at every point of the run (safety). <b>eventually</b>: must hold once faults are healed and the quiet period has passed (liveness).</p></section>"#);
}

/// Every coverage signal with its count; the ones this run did not hit are dimmed.
fn coverage(html: &mut String, report: &Report) {
    let hit = report.coverage.iter().filter(|row| row.count > 0).count();
    let _ = write!(
        html,
        r#"<section id="coverage-section"><h2>Coverage signals</h2><p class="note">{hit} of {} hit in this run. A sweep must hit each signal its scenario can reach at least once (<code>imsim run --require-coverage</code>); one run need not.</p><table id="coverage" class="coverage"><thead><tr><th>signal</th><th>count</th><th>what happened</th></tr></thead><tbody>"#,
        report.coverage.len()
    );
    for row in &report.coverage {
        let class = if row.count > 0 { "hit" } else { "not-hit" };
        let _ = write!(
            html,
            r#"<tr class="{class}"><td class="code">{}</td><td class="count">{}</td><td>{}</td></tr>"#,
            escape(&row.signal),
            row.count,
            escape(&row.description)
        );
    }
    html.push_str("</tbody></table></section>");
}

fn faults(html: &mut String, report: &Report) {
    html.push_str(r#"<section id="faults"><h2>Fault profile</h2><table class="faults">"#);
    let mut any = false;
    if let Some(profile) = report.faults.as_object() {
        for (class, value) in profile {
            let empty = value.is_null() || value.as_array().is_some_and(|a| a.is_empty());
            if empty {
                continue;
            }
            any = true;
            let _ = write!(
                html,
                "<tr><th>{}</th><td><code>{}</code></td></tr>",
                escape(class),
                escape(&value.to_string())
            );
        }
    }
    if !any {
        html.push_str("<tr><td>no faults in this run</td></tr>");
    }
    html.push_str("</table></section>");
}

/// Faults that act on packets at random for the whole safety phase rather than at a time (loss,
/// duplication, delay, hold, clock skew), one phrase each: `loss 30% (d1 d2)`,
/// `delay 50% ≤ 300 ms`. Read generically from the profile, so a new fault class still shows.
pub fn packet_faults(profile: &serde_json::Value) -> Vec<String> {
    /// Drawn as bands on the timeline instead.
    const TIMED: [&str; 3] = ["partitions", "server_crashes", "device_restarts"];
    let Some(profile) = profile.as_object() else {
        return Vec::new();
    };
    let mut phrases = Vec::new();
    for (class, value) in profile {
        if TIMED.contains(&class.as_str()) || value.is_null() {
            continue;
        }
        let name = class.replace('_', " ");
        match value {
            serde_json::Value::Object(fields) => {
                let mut phrase = name;
                if let Some(p) = fields.get("probability").and_then(|p| p.as_f64()) {
                    phrase += &format!(" {}%", (p * 1000.0).round() / 10.0);
                }
                if let Some(ms) = fields.get("delay_ms_max").and_then(|m| m.as_u64()) {
                    phrase += &format!(" ≤ {}", seconds(ms));
                }
                if let Some(devices) = fields.get("devices").and_then(|d| d.as_array()) {
                    let devices: Vec<String> = devices.iter().map(|d| format!("d{d}")).collect();
                    phrase += &format!(" ({})", devices.join(" "));
                }
                phrases.push(phrase);
            }
            serde_json::Value::Array(items) if items.is_empty() => {}
            serde_json::Value::Array(items) => {
                let parts: Vec<String> = items.iter().map(compact_item).collect();
                phrases.push(format!("{name}: {}", parts.join(", ")));
            }
            other => phrases.push(format!("{name} {other}")),
        }
    }
    phrases
}

/// `d2 −1.2 s` for a clock skew; the JSON of anything else.
fn compact_item(item: &serde_json::Value) -> String {
    match (
        item.get("device").and_then(|d| d.as_u64()),
        item.get("offset_ms").and_then(|o| o.as_i64()),
    ) {
        (Some(device), Some(offset_ms)) => format!(
            "d{device} {}{}",
            if offset_ms < 0 { "−" } else { "+" },
            seconds(offset_ms.unsigned_abs())
        ),
        _ => item.to_string(),
    }
}

/// What the script needs beyond the SVG: the run's length and the first window. `</` is
/// escaped so no string can close the script element.
fn script_data(report: &Report) -> String {
    let data = serde_json::json!({
        "duration_ms": report.duration_ms,
        "focus": report.focus,
    });
    data.to_string().replace("</", "<\\/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escape_makes_text_safe_in_content_and_attributes() {
        assert_eq!(
            escape(r#"<b a="1">'&'</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn packet_faults_read_as_phrases_and_timed_faults_are_left_to_the_bands() {
        let profile = json!({
            "loss": {"probability": 0.144, "devices": [1, 3]},
            "delay": {"probability": 0.5, "delay_ms_max": 300},
            "duplication": null,
            "partitions": [{"device": 2}],
            "clock_skew": [{"device": 2, "offset_ms": -1200}, {"device": 4, "offset_ms": 3000}],
            "jitter_storm": {"probability": 0.1},
        });
        assert_eq!(
            packet_faults(&profile),
            vec![
                "clock skew: d2 −1.2 s, d4 +3 s",
                "delay 50% ≤ 300 ms",
                "jitter storm 10%",
                "loss 14.4% (d1 d3)",
            ]
        );
        assert!(packet_faults(&json!(null)).is_empty());
    }
}
