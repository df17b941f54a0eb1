//! The latency histogram as inline SVG: a bar per 1-2-5 bucket with its count, and p50, p90
//! and p99 marked where they fall.

use crate::markup::n;
use crate::report::{Bucket, Latency};
use crate::time::seconds;
use std::fmt::Write;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 40.0;
const RIGHT_PAD: f64 = 10.0;
/// Bars start below the three percentile label rows.
const TOP: f64 = 56.0;
const BOTTOM: f64 = 200.0;

pub fn histogram(latency: &Latency) -> String {
    let buckets = &latency.histogram;
    let mut svg = format!(
        r#"<svg id="latency-histogram" class="histogram" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" role="img" aria-label="send to display latency histogram">"#
    );
    if buckets.is_empty() {
        svg += r#"<text class="tick" x="20" y="40">no message was displayed on another device</text></svg>"#;
        return svg;
    }
    let bar_width = (WIDTH - LEFT - RIGHT_PAD) / buckets.len() as f64;
    let _ = write!(
        svg,
        r#"<line class="axis-line" x1="{LEFT}" x2="{}" y1="{BOTTOM}" y2="{BOTTOM}"/>"#,
        n(WIDTH - RIGHT_PAD)
    );
    bars(&mut svg, buckets, bar_width);
    let _ = write!(
        svg,
        r#"<text class="axis-title" x="{}" y="{}">send→display latency in simulated time (bucket edges 1-2-5: a log scale)</text>"#,
        n(LEFT),
        n(HEIGHT - 6.0)
    );
    percentiles(&mut svg, latency, bar_width);
    svg += "</svg>";
    svg
}

/// A bar per bucket with its count above it and its lower edge below it.
fn bars(svg: &mut String, buckets: &[Bucket], bar_width: f64) {
    let tallest = buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1) as f64;
    for (i, bucket) in buckets.iter().enumerate() {
        let x = LEFT + i as f64 * bar_width;
        // A bucket with one sample in a thousand still shows.
        let height = match bucket.count {
            0 => 0.0,
            count => (count as f64 / tallest * (BOTTOM - TOP)).max(2.0),
        };
        let _ = write!(
            svg,
            r#"<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{} – {}: {} deliveries</title></rect>"#,
            n(x + 2.0),
            n(BOTTOM - height),
            n(bar_width - 4.0),
            n(height),
            seconds(bucket.from_ms),
            seconds(bucket.to_ms),
            bucket.count
        );
        if bucket.count > 0 {
            let _ = write!(
                svg,
                r#"<text class="bar-count" x="{}" y="{}">{}</text>"#,
                n(x + bar_width / 2.0),
                n(BOTTOM - height - 3.0),
                bucket.count
            );
        }
        tick(svg, x, bucket.from_ms);
    }
    let last = buckets.last().map_or(0, |b| b.to_ms);
    tick(svg, LEFT + buckets.len() as f64 * bar_width, last);
}

fn tick(svg: &mut String, x: f64, ms: u64) {
    let _ = write!(
        svg,
        r#"<text class="tick" x="{}" y="{}">{}</text>"#,
        n(x),
        n(BOTTOM + 14.0),
        seconds(ms)
    );
}

/// p50, p90 and p99 as dashed lines, each with a short label on its own row above the bars so
/// close percentiles never overprint (their values are in the table beside the chart); a label
/// near the right edge ends at its line.
fn percentiles(svg: &mut String, latency: &Latency, bar_width: f64) {
    let marks = [
        ("p50", latency.p50_ms),
        ("p90", latency.p90_ms),
        ("p99", latency.p99_ms),
    ];
    for (row, (name, value)) in marks.iter().enumerate() {
        let Some(value) = value else { continue };
        let x = percentile_x(&latency.histogram, *value, bar_width);
        let y = 12.0 + 13.0 * row as f64;
        let (anchor, label_x) = if x > WIDTH - 40.0 {
            ("end", x - 3.0)
        } else {
            ("start", x + 3.0)
        };
        let _ = write!(
            svg,
            r#"<line class="percentile {name}" x1="{x}" x2="{x}" y1="{}" y2="{BOTTOM}"/><text class="percentile-label {name}" text-anchor="{anchor}" x="{}" y="{}">{name}<title>{name} {}</title></text>"#,
            n(y - 9.0),
            n(label_x),
            n(y),
            seconds(*value),
            x = n(x)
        );
    }
}

/// Where a value falls on the bucketed axis: its bucket, then linearly within it.
fn percentile_x(buckets: &[Bucket], value: u64, bar_width: f64) -> f64 {
    let index = buckets
        .iter()
        .position(|b| value < b.to_ms)
        .unwrap_or(buckets.len() - 1);
    let bucket = &buckets[index];
    let within = (value.saturating_sub(bucket.from_ms)) as f64
        / (bucket.to_ms - bucket.from_ms).max(1) as f64;
    LEFT + (index as f64 + within.min(1.0)) * bar_width
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(from_ms: u64, to_ms: u64, count: u64) -> Bucket {
        Bucket {
            from_ms,
            to_ms,
            count,
        }
    }

    #[test]
    fn percentiles_fall_inside_their_bucket() {
        let buckets = [bucket(10, 20, 3), bucket(20, 50, 1)];
        assert_eq!(percentile_x(&buckets, 10, 100.0), LEFT);
        assert_eq!(percentile_x(&buckets, 15, 100.0), LEFT + 50.0);
        assert_eq!(percentile_x(&buckets, 35, 100.0), LEFT + 150.0);
    }

    #[test]
    fn every_bucket_is_a_bar_and_every_percentile_a_line() {
        let latency = Latency {
            p50_ms: Some(12),
            p90_ms: Some(30),
            p99_ms: Some(45),
            histogram: vec![bucket(10, 20, 900), bucket(20, 50, 1)],
            ..Latency::default()
        };
        let svg = histogram(&latency);
        assert_eq!(svg.matches(r#"<rect class="bar""#).count(), 2);
        assert_eq!(svg.matches(r#"<line class="percentile"#).count(), 3);
        // The bucket with one sample in 901 is still visible.
        assert!(svg.contains(r#"height="2"><title>20 ms – 50 ms: 1 deliveries"#));
        assert!(histogram(&Latency::default()).contains("no message was displayed"));
    }
}
