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
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table {
            title: title.into(),
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
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
        out
    }
}
