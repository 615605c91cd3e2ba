//! Latency histograms (HDR, microseconds), send-time bookkeeping for open-loop runs,
//! and the result table.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const SHARDS: usize = 16;

/// Latencies recorded from many tasks: sharded so tasks rarely meet on one lock.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()))
                .collect(),
        }
    }
}

impl Latencies {
    pub fn record(&self, shard: usize, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 120_000_000);
        self.shards[shard % SHARDS]
            .lock()
            .unwrap()
            .record(micros)
            .ok();
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, 120_000_000, 3).unwrap();
        for shard in &self.shards {
            all.add(&*shard.lock().unwrap()).ok();
        }
        all
    }
}

/// Messages received: how many, and how long after their send time each arrived.
#[derive(Default)]
pub struct Receipts {
    latencies: Latencies,
    count: AtomicU64,
}

impl Receipts {
    /// Message `seq` arrived at socket `shard` now; one that was never sent is ignored.
    pub fn record(&self, shard: usize, sent: &SendTimes, seq: u64) {
        if let Some(latency) = sent.since(seq, Instant::now()) {
            self.latencies.record(shard, latency);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn latencies(&self) -> Histogram<u64> {
        self.latencies.merged()
    }
}

/// When each numbered message was (meant to be) sent, so a receiver can compute its
/// latency from the number alone. Open-loop runs store the intended send time, so a
/// server that falls behind is charged for the wait (no coordinated omission).
pub struct SendTimes {
    start: Instant,
    nanos: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(capacity: usize) -> SendTimes {
        SendTimes {
            start: Instant::now(),
            nanos: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn set(&self, seq: u64, at: Instant) {
        if let Some(slot) = self.nanos.get(seq as usize) {
            let n = at.saturating_duration_since(self.start).as_nanos() as u64;
            slot.store(n.max(1), Ordering::Relaxed);
        }
    }

    /// Time since `seq` was sent, if it was.
    pub fn since(&self, seq: u64, now: Instant) -> Option<Duration> {
        let n = self.nanos.get(seq as usize)?.load(Ordering::Relaxed);
        if n == 0 {
            return None;
        }
        let sent = self.start + Duration::from_nanos(n);
        Some(now.saturating_duration_since(sent))
    }
}

pub fn ms(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        return "–".into();
    }
    format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// A markdown table, printed as the run goes and kept for the summary.
#[derive(Default)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        println!("  | {} |", row.join(" | "));
        self.rows.push(row);
    }

    pub fn render(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.header.join(" | "));
        for _ in &self.header {
            out.push_str("---|");
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str(&format!("{note}\n"));
            }
        }
        out
    }
}

/// Least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

/// A line plot as a standalone SVG: `points` are (x, y); the y axis starts at 0.
pub fn svg_plot(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 360.0, 70.0, 50.0, 40.0, 20.0);
    let x_max = points.iter().map(|p| p.0).fold(1e-9, f64::max);
    let y_max = points.iter().map(|p| p.1).fold(1e-9, f64::max) * 1.15;
    let px = |x: f64| left + x / x_max * (w - left - right);
    let py = |y: f64| h - bottom - y / y_max * (h - bottom - top);
    let line: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
        .collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n",
        w / 2.0
    );
    for i in 0..=4 {
        let (xv, yv) = (x_max * i as f64 / 4.0, y_max * i as f64 / 4.0);
        svg.push_str(&format!(
            "<line x1=\"{l}\" y1=\"{y:.1}\" x2=\"{r}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{yv:.0}</text>\n\
             <text x=\"{x:.1}\" y=\"{xb}\" text-anchor=\"middle\">{xv:.0}</text>\n",
            l = left,
            r = w - right,
            y = py(yv),
            tx = left - 6.0,
            ty = py(yv) + 4.0,
            x = px(xv),
            xb = h - bottom + 18.0,
        ));
    }
    svg.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{y_label}</text>\n\
         </svg>\n",
        line.join(" "),
        (left + w - right) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0,
    ));
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 2.0)]), 0.0);
    }

    #[test]
    fn the_plot_holds_every_point() {
        let svg = svg_plot("t", "x", "y", &[(0.0, 1.0), (5.0, 2.0), (10.0, 1.5)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 3);
    }
}
