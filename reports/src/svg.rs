//! The inline SVG of the timeline: the swimlanes and the overview strip of the whole run. Everything is drawn here, positioned for the window shown first, so
//! the page reads without JavaScript; the page's script only moves elements when the user zooms
//! or pans, using each element's `data-t` (simulated ms) — see `page.js`.

use crate::extract::CATEGORIES;
use crate::markup::{escape, n};
use crate::report::{BandKind, LaneKind, Report, TimelineEvent};
use crate::time::seconds_precise;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// Width of every SVG's coordinate system; the page scales it to the window.
pub const WIDTH: f64 = 1200.0;
/// The lane labels' column on the left of the timeline and the overview.
pub const LABEL_WIDTH: f64 = 120.0;
const RIGHT_PAD: f64 = 14.0;
/// Above the lanes: the time axis, then a row for the labels of bands that span every lane.
const AXIS_HEIGHT: f64 = 34.0;
const BAND_LABEL_Y: f64 = 29.0;
const AXIS_LABEL_Y: f64 = 12.0;
const AXIS_GRID_TOP: f64 = 16.0;
/// One row per event category within a lane, so categories never hide each other.
const SLOT_HEIGHT: f64 = 7.0;
const LANE_PAD: f64 = 5.0;
const LANE_HEIGHT_MIN: f64 = 26.0;
/// Marks drawn at most: a run beyond this shows the events around the first window only (all
/// of them are in report.json), so the page stays a few MB.
pub const EVENTS_DRAWN_MAX: usize = 15_000;

/// Maps simulated time to x within the plot area.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub start_ms: f64,
    pub end_ms: f64,
    pub x0: f64,
    pub width: f64,
}

impl Scale {
    pub fn new(start_ms: u64, end_ms: u64) -> Scale {
        Scale {
            start_ms: start_ms as f64,
            end_ms: (end_ms.max(start_ms + 1)) as f64,
            x0: LABEL_WIDTH,
            width: WIDTH - LABEL_WIDTH - RIGHT_PAD,
        }
    }

    pub fn x(&self, t_ms: u64) -> f64 {
        self.x0 + (t_ms as f64 - self.start_ms) / (self.end_ms - self.start_ms) * self.width
    }
}

/// Where each lane sits and which category rows it has.
struct LaneLayout {
    top: f64,
    height: f64,
    slots: Vec<&'static str>,
}

fn layout(report: &Report) -> (Vec<LaneLayout>, f64) {
    let mut used: Vec<BTreeSet<&str>> = vec![BTreeSet::new(); report.lanes.len()];
    for event in &report.events {
        used[event.lane].insert(event.category.as_str());
    }
    let mut top = AXIS_HEIGHT;
    let mut lanes = Vec::new();
    for categories in used {
        let slots: Vec<&'static str> = CATEGORIES
            .iter()
            .copied()
            .filter(|c| categories.contains(c))
            .collect();
        let height = (slots.len() as f64 * SLOT_HEIGHT + 2.0 * LANE_PAD).max(LANE_HEIGHT_MIN);
        lanes.push(LaneLayout { top, height, slots });
        top += height;
    }
    (lanes, top)
}

/// The events drawn: all of them, or the `EVENTS_DRAWN_MAX` around the first window.
pub fn drawn_range(report: &Report) -> std::ops::Range<usize> {
    let total = report.events.len();
    if total <= EVENTS_DRAWN_MAX {
        return 0..total;
    }
    let first = report
        .events
        .partition_point(|e| e.t_ms < report.focus.start_ms);
    let start = first
        .saturating_sub(EVENTS_DRAWN_MAX / 4)
        .min(total - EVENTS_DRAWN_MAX);
    start..start + EVENTS_DRAWN_MAX
}

/// The swimlane timeline: lanes, bands, marks, witness highlights and the time axis.
pub fn timeline(report: &Report, witness: &BTreeSet<usize>) -> String {
    let (lanes, bottom) = layout(report);
    let height = bottom + if witness.is_empty() { 8.0 } else { 30.0 };
    let scale = Scale::new(report.focus.start_ms, report.focus.end_ms);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="timeline" class="timeline" viewBox="0 0 {w} {h}" width="100%" data-start="{s}" data-end="{e}" data-x0="{x0}" data-width="{pw}" role="img" aria-label="timeline">"#,
        w = n(WIDTH),
        h = n(height),
        s = report.focus.start_ms,
        e = report.focus.end_ms,
        x0 = n(scale.x0),
        pw = n(scale.width),
    );
    svg += r##"<defs><pattern id="hatch-partition" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#f6c86b" fill-opacity="0.45"/><rect width="2.5" height="6" fill="#e69f00" fill-opacity="0.8"/></pattern><pattern id="hatch-down" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)"><rect width="5" height="5" fill="#888" fill-opacity="0.25"/><rect width="2" height="5" fill="#333" fill-opacity="0.55"/></pattern>"##;
    let _ = write!(
        svg,
        r#"<clipPath id="plot-clip"><rect x="{}" y="0" width="{}" height="{}"/></clipPath></defs>"#,
        n(scale.x0),
        n(scale.width),
        n(height)
    );
    lane_backgrounds(&mut svg, report, &lanes);
    let _ = write!(
        svg,
        r#"<g id="timeline-axis" class="axis" data-label-y="{}" data-grid-top="{}" data-grid-bottom="{}">"#,
        n(AXIS_LABEL_Y),
        n(AXIS_GRID_TOP),
        n(bottom)
    );
    svg += &axis(&scale, AXIS_LABEL_Y, AXIS_GRID_TOP, bottom);
    svg += "</g>";
    svg += r#"<g clip-path="url(#plot-clip)"><g class="bands">"#;
    bands(&mut svg, report, &lanes, &scale, bottom);
    svg += r#"</g><g id="marks" class="marks">"#;
    let range = drawn_range(report);
    for event in &report.events[range] {
        mark(
            &mut svg,
            event,
            &lanes,
            &scale,
            witness.contains(&event.index),
        );
    }
    svg += "</g>";
    witness_overlay(&mut svg, report, witness, &lanes, &scale, bottom);
    svg += "</g></svg>";
    svg
}

fn lane_backgrounds(svg: &mut String, report: &Report, lanes: &[LaneLayout]) {
    for (index, (lane, layout)) in report.lanes.iter().zip(lanes).enumerate() {
        let _ = write!(
            svg,
            r#"<rect class="lane-bg{}" x="0" y="{}" width="{}" height="{}"/>"#,
            if index % 2 == 1 { " odd" } else { "" },
            n(layout.top),
            n(WIDTH),
            n(layout.height)
        );
        let role = match lane.kind {
            LaneKind::Server => "server",
            LaneKind::Device => "device",
            LaneKind::Harness => "harness",
        };
        let _ = write!(
            svg,
            r#"<text class="lane-label {role}" x="8" y="{}">{}</text>"#,
            n(layout.top + layout.height / 2.0 + 4.0),
            escape(&lane.label)
        );
    }
}

fn bands(svg: &mut String, report: &Report, lanes: &[LaneLayout], scale: &Scale, bottom: f64) {
    // Drawn back to front: the liveness tint, then sessions, then faults.
    let order = [
        BandKind::Liveness,
        BandKind::Offline,
        BandKind::Partition,
        BandKind::DeviceDown,
        BandKind::ServerDown,
    ];
    for kind in order {
        for band in report.bands.iter().filter(|b| b.kind == kind) {
            let (top, height) = match band.lane {
                Some(lane) => (lanes[lane].top + 1.0, lanes[lane].height - 2.0),
                None => (AXIS_HEIGHT, bottom - AXIS_HEIGHT),
            };
            let class = match kind {
                BandKind::Liveness => "band liveness",
                BandKind::Offline => "band offline",
                BandKind::Partition => "band partition",
                BandKind::DeviceDown => "band device-down",
                BandKind::ServerDown => "band server-down",
            };
            let (x1, x2) = (scale.x(band.start_ms), scale.x(band.end_ms));
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{}" y="{}" width="{}" height="{}" data-t="{}" data-t2="{}"><title>{} · {} – {}{}</title></rect>"#,
                n(x1),
                n(top),
                n((x2 - x1).max(1.0)),
                n(height),
                band.start_ms,
                band.end_ms,
                escape(&band.label),
                seconds_precise(band.start_ms),
                seconds_precise(band.end_ms),
                if band.open_ended {
                    " (never ended)"
                } else {
                    ""
                }
            );
            if band.lane.is_none() && kind != BandKind::Liveness {
                let _ = write!(
                    svg,
                    r#"<text class="band-label {}" {} y="{}" data-t="{}" data-t2="{}" data-dx="3">{}</text>"#,
                    class.trim_start_matches("band "),
                    label_position(scale, band.start_ms, band.end_ms, 3.0),
                    n(BAND_LABEL_Y),
                    band.start_ms,
                    band.end_ms,
                    escape(&band.label)
                );
            }
            if kind == BandKind::Liveness {
                let _ = write!(
                    svg,
                    r#"<line class="liveness-line" x1="{x}" x2="{x}" y1="{}" y2="{}" data-t="{}"/><text class="band-label liveness" {} y="{}" data-t="{}" data-t2="{}" data-dx="4">▸ {}</text>"#,
                    n(AXIS_HEIGHT),
                    n(bottom),
                    band.start_ms,
                    label_position(scale, band.start_ms, band.end_ms, 4.0),
                    n(BAND_LABEL_Y),
                    band.start_ms,
                    band.end_ms,
                    escape(&band.label),
                    x = n(x1),
                );
            }
        }
    }
}

/// Room a label needs to the right of its anchor before it is flipped to end there instead.
const LABEL_ROOM: f64 = 170.0;

/// A label's `x` and `text-anchor` attributes: at the band's start, or at the left edge of the
/// plot while the band began before the window but still shows; ending at that point when it
/// would run off the right edge. The page's script does the same on zoom.
fn label_position(scale: &Scale, start_ms: u64, end_ms: u64, dx: f64) -> String {
    let (start, end) = (scale.x(start_ms), scale.x(end_ms));
    let x = if end < scale.x0 {
        start
    } else {
        start.max(scale.x0)
    };
    if x + LABEL_ROOM > scale.x0 + scale.width {
        format!(r#"x="{}" text-anchor="end""#, n(x - dx))
    } else {
        format!(r#"x="{}" text-anchor="start""#, n(x + dx))
    }
}

/// The CSS class of an event's colour: its category, or its own type for an unknown category.
pub fn colour_class(event: &TimelineEvent) -> String {
    if event.category == "other" {
        format!("k-other t-{}", css_ident(&event.kind))
    } else {
        format!("k-{}", event.category)
    }
}

/// A type name as a CSS class: letters, digits, `-` and `_` kept, the rest replaced.
pub fn css_ident(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn slot_y(event: &TimelineEvent, lanes: &[LaneLayout]) -> f64 {
    let layout = &lanes[event.lane];
    let slot = layout
        .slots
        .iter()
        .position(|c| *c == event.category)
        .unwrap_or(0);
    layout.top + LANE_PAD + slot as f64 * SLOT_HEIGHT
}

fn mark(svg: &mut String, event: &TimelineEvent, lanes: &[LaneLayout], scale: &Scale, hit: bool) {
    let _ = write!(
        svg,
        r#"<rect class="m {}{}" x="{}" y="{}" data-t="{}"{}><title>[{}] {} {} {}</title></rect>"#,
        colour_class(event),
        if hit { " w" } else { "" },
        n(scale.x(event.t_ms) - 1.5),
        n(slot_y(event, lanes) + 0.5),
        event.t_ms,
        event.message.map_or_else(String::new, |m| format!(
            r#" data-msg="{}.{}""#,
            m.sender_device, m.client_msg_id
        )),
        event.index,
        seconds_precise(event.t_ms),
        event.kind,
        escape(&event.detail)
    );
}

/// Each witness record: a red line across the lanes at its time, a ring around its mark when it
/// has one, and its history index below the lanes.
fn witness_overlay(
    svg: &mut String,
    report: &Report,
    witness: &BTreeSet<usize>,
    lanes: &[LaneLayout],
    scale: &Scale,
    bottom: f64,
) {
    if witness.is_empty() {
        return;
    }
    let marks: BTreeMap<usize, &TimelineEvent> = report
        .events
        .iter()
        .filter(|e| witness.contains(&e.index))
        .map(|e| (e.index, e))
        .collect();
    svg.push_str(r#"<g id="witness" class="witness">"#);
    let witness_times = report
        .violations
        .iter()
        .flat_map(|v| &v.witness)
        .map(|w| (w.index, w.t_ms));
    let witness_times: BTreeMap<usize, u64> = witness_times.collect();
    for (label_row, (index, t_ms)) in witness_times.into_iter().enumerate() {
        let x = scale.x(t_ms);
        let _ = write!(
            svg,
            r#"<line class="witness-line" x1="{x}" x2="{x}" y1="{}" y2="{}" data-t="{t_ms}"/>"#,
            n(AXIS_HEIGHT),
            n(bottom),
            x = n(x)
        );
        if let Some(event) = marks.get(&index) {
            let _ = write!(
                svg,
                r#"<circle class="witness-ring" cx="{}" cy="{}" r="7" data-t="{t_ms}"/>"#,
                n(x),
                n(slot_y(event, lanes) + 3.0)
            );
        }
        // Below the lanes, alternating between two rows so neighbours do not overprint.
        let _ = write!(
            svg,
            r#"<text class="witness-label" x="{}" y="{}" data-t="{t_ms}" data-dx="2">[{index}]</text>"#,
            n(x + 2.0),
            n(bottom + 12.0 + if label_row % 2 == 0 { 0.0 } else { 10.0 })
        );
    }
    svg.push_str("</g>");
}

/// A step of 1, 2 or 5 × 10^k ms giving about `ticks_target` ticks over the span.
pub fn tick_step_ms(span_ms: f64, ticks_target: f64) -> u64 {
    let raw = (span_ms / ticks_target).max(1.0);
    let mut decade = 1u64;
    loop {
        for step in [1, 2, 5] {
            if (decade * step) as f64 >= raw {
                return decade * step;
            }
        }
        decade *= 10;
    }
}

/// A tick label: as many decimals of a second as the step needs.
pub fn tick_label(t_ms: u64, step_ms: u64) -> String {
    match step_ms {
        0..=9 => format!("{:.3} s", t_ms as f64 / 1000.0),
        10..=99 => format!("{:.2} s", t_ms as f64 / 1000.0),
        100..=999 => format!("{:.1} s", t_ms as f64 / 1000.0),
        _ => format!("{} s", t_ms / 1000),
    }
}

/// Ticks and grid lines for the window; the page's script redraws them the same way on zoom.
fn axis(scale: &Scale, label_y: f64, grid_top: f64, grid_bottom: f64) -> String {
    let mut out = String::new();
    let step = tick_step_ms(scale.end_ms - scale.start_ms, 10.0);
    let mut t = (scale.start_ms as u64).div_ceil(step) * step;
    while (t as f64) <= scale.end_ms {
        let x = n(scale.x(t));
        let _ = write!(
            out,
            r#"<line class="grid" x1="{x}" x2="{x}" y1="{}" y2="{}"/><text class="tick" x="{x}" y="{}">{}</text>"#,
            n(grid_top),
            n(grid_bottom),
            n(label_y),
            tick_label(t, step)
        );
        t += step;
    }
    out
}

/// The whole run in one strip: event density, fault bands, the liveness boundary, witness
/// ticks, and the brush that shows (and sets) the timeline's window.
pub fn overview(report: &Report) -> String {
    const HEIGHT: f64 = 58.0;
    const TOP: f64 = 4.0;
    const DENSITY_BOTTOM: f64 = 40.0;
    let end_ms = report.duration_ms.max(1);
    let scale = Scale::new(0, end_ms);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="overview" class="overview" viewBox="0 0 {} {HEIGHT}" width="100%" data-end="{end_ms}" data-x0="{}" data-width="{}" role="img" aria-label="overview of the whole run">"#,
        n(WIDTH),
        n(scale.x0),
        n(scale.width)
    );
    let _ = write!(
        svg,
        r#"<text class="lane-label" x="8" y="26">whole run</text><rect class="overview-bg" x="{}" y="{TOP}" width="{}" height="{}"/>"#,
        n(scale.x0),
        n(scale.width),
        n(DENSITY_BOTTOM - TOP)
    );
    for band in &report.bands {
        let class = match band.kind {
            BandKind::Liveness => "band liveness",
            BandKind::Partition => "band partition",
            BandKind::ServerDown => "band server-down",
            BandKind::DeviceDown => "band device-down",
            BandKind::Offline => continue,
        };
        let (x1, x2) = (scale.x(band.start_ms), scale.x(band.end_ms));
        let _ = write!(
            svg,
            r#"<rect class="{class}" x="{}" y="{TOP}" width="{}" height="{}"><title>{}</title></rect>"#,
            n(x1),
            n((x2 - x1).max(1.0)),
            n(DENSITY_BOTTOM - TOP),
            escape(&band.label)
        );
    }
    svg += &density_path(report, &scale, TOP + 2.0, DENSITY_BOTTOM);
    let witness_times: BTreeSet<u64> = report
        .violations
        .iter()
        .flat_map(|v| v.witness.iter().map(|w| w.t_ms))
        .collect();
    for t_ms in witness_times {
        let x = n(scale.x(t_ms));
        let _ = write!(
            svg,
            r#"<line class="witness-line" x1="{x}" x2="{x}" y1="{TOP}" y2="{DENSITY_BOTTOM}"/>"#
        );
    }
    svg += &axis(&scale, HEIGHT - 3.0, DENSITY_BOTTOM, DENSITY_BOTTOM + 4.0);
    let (x1, x2) = (
        scale.x(report.focus.start_ms),
        scale.x(report.focus.end_ms.min(end_ms)),
    );
    let _ = write!(
        svg,
        r#"<rect id="brush" class="brush" x="{}" y="1" width="{}" height="{}"/></svg>"#,
        n(x1),
        n((x2 - x1).max(2.0)),
        n(DENSITY_BOTTOM)
    );
    svg
}

/// Events per pixel column as a filled area, scaled to the busiest column.
fn density_path(report: &Report, scale: &Scale, top: f64, bottom: f64) -> String {
    let columns = (scale.width / 3.0) as usize;
    let mut counts = vec![0u64; columns.max(1)];
    let span = (scale.end_ms - scale.start_ms).max(1.0);
    for event in &report.events {
        let column = ((event.t_ms as f64 / span) * columns as f64) as usize;
        counts[column.min(columns - 1)] += 1;
    }
    let busiest = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut path = format!("M{} {}", n(scale.x0), n(bottom));
    for (column, count) in counts.iter().enumerate() {
        let x = scale.x0 + column as f64 * 3.0;
        let y = bottom - (*count as f64 / busiest).sqrt() * (bottom - top);
        let _ = write!(path, "L{} {}L{} {}", n(x), n(y), n(x + 3.0), n(y));
    }
    let _ = write!(
        path,
        "L{} {}Z",
        n(scale.x0 + columns as f64 * 3.0),
        n(bottom)
    );
    format!(
        r#"<path class="density" d="{path}"><title>events over time (square-root scale)</title></path>"#
    )
}
