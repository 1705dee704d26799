//! Counters a job keeps while it runs, and the summary it prints at the end.
//!
//! Besides the plain totals, [`Metrics::prom`] holds the labelled Prometheus metrics
//! (per partition lag, per operator records, latency) that `--metrics-addr` serves; see
//! [`crate::exporter`] and `docs/guide.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Where one partition's reading stands, for progress and lag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionPosition {
    /// The first offset this run read (or `None` before the first message).
    pub start: Option<i64>,
    /// The offset after the last message read.
    pub next: Option<i64>,
    /// The partition's high watermark as of the last fetch response, if one came.
    pub high: Option<i64>,
    /// True once the partition was read to its end in bounded mode.
    pub done: bool,
}

/// The labelled metrics a Prometheus scrape sees, in their own registry (one per job).
pub struct PromMetrics {
    /// The registry the endpoint encodes.
    pub registry: Registry,
    /// `freshet_source_records_total{topic}`: records a source emitted.
    pub source_records: IntCounterVec,
    /// `freshet_sink_records_total{sink}`: records a sink wrote and had acknowledged.
    pub sink_records: IntCounterVec,
    /// `freshet_exactly_once_skipped_total{sink}`: records a restarted exactly-once sink
    /// found already written and did not write again.
    pub exactly_once_skipped: IntCounterVec,
    /// `freshet_exactly_once_anomalies_total{sink}`: records in an exactly-once sink's
    /// topic it cannot account for (written for a checkpoint newer than the one
    /// restored: the checkpoint store lost a manifest, or another run wrote them).
    pub exactly_once_anomalies: IntCounterVec,
    /// `freshet_dropped_behind_restore_total{operator}`: records (for pre-aggregated
    /// windows, partial aggregates) an operator without a late input dropped after a
    /// restore because they fell behind its restored state: late for the run before the
    /// crash.
    pub dropped_behind_restore: IntCounterVec,
    /// `freshet_malformed_records_total{topic}`.
    pub malformed: IntCounterVec,
    /// `freshet_late_records_total{topic}`: records behind the watermark.
    pub late: IntCounterVec,
    /// `freshet_consumer_lag{topic,partition}`: high watermark minus next offset.
    pub consumer_lag: IntGaugeVec,
    /// `freshet_watermark_lag_ms{topic,partition}`: wall clock minus partition watermark.
    pub watermark_lag_ms: IntGaugeVec,
    /// `freshet_committed_offset{topic,partition}`.
    pub committed_offset: IntGaugeVec,
    /// `freshet_committed_epoch`: the newest complete epoch (offsets committed up to it).
    pub committed_epoch: IntGauge,
    /// `freshet_end_to_end_latency_seconds`: from a record's event time to the
    /// acknowledgement of the output written at it.
    pub latency: Histogram,
    /// `freshet_checkpoint_epoch`: the epoch of the newest complete checkpoint.
    pub checkpoint_epoch: IntGauge,
    /// `freshet_checkpoint_failures_total`: checkpoint parts or manifests not written.
    pub checkpoint_failures: IntCounter,
    /// `freshet_checkpoint_bytes`: the size of the newest complete checkpoint.
    pub checkpoint_bytes: IntGauge,
    /// `freshet_checkpoint_manifest_seconds`: from seeing a checkpoint complete to its
    /// manifest being durable.
    pub checkpoint_manifest_seconds: Histogram,
}

impl PromMetrics {
    fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let source_records = counter(
            "freshet_source_records_total",
            "Records a source decoded and emitted.",
            &["topic"],
        )?;
        let sink_records = counter(
            "freshet_sink_records_total",
            "Records a sink wrote and had acknowledged.",
            &["sink"],
        )?;
        let exactly_once_skipped = counter(
            "freshet_exactly_once_skipped_total",
            "Records a restarted exactly-once sink found already in its topic and did not write again.",
            &["sink"],
        )?;
        let exactly_once_anomalies = counter(
            "freshet_exactly_once_anomalies_total",
            "Records in an exactly-once sink's topic written for a checkpoint newer than the one restored.",
            &["sink"],
        )?;
        let dropped_behind_restore = counter(
            "freshet_dropped_behind_restore_total",
            "Records an operator without a late input dropped after a restore: behind its restored state, so late for the run before the crash.",
            &["operator"],
        )?;
        let malformed = counter(
            "freshet_malformed_records_total",
            "Messages that could not be decoded or had an unusable timestamp.",
            &["topic"],
        )?;
        let late = counter(
            "freshet_late_records_total",
            "Records behind the source's watermark, sent to the late stream.",
            &["topic"],
        )?;
        let consumer_lag = gauge(
            "freshet_consumer_lag",
            "Messages between the next offset to read and the partition's high watermark (from fetch responses).",
            &["topic", "partition"],
        )?;
        let watermark_lag_ms = gauge(
            "freshet_watermark_lag_ms",
            "Wall clock minus the partition's event-time watermark, ms.",
            &["topic", "partition"],
        )?;
        let committed_offset = gauge(
            "freshet_committed_offset",
            "The last offset committed for the partition.",
            &["topic", "partition"],
        )?;
        let committed_epoch = IntGauge::new(
            "freshet_committed_epoch",
            "The newest complete epoch: every sink acknowledged the output of epochs up to it.",
        )?;
        registry.register(Box::new(committed_epoch.clone()))?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "freshet_end_to_end_latency_seconds",
                "From a record's event time to the acknowledgement of the output written at it.",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 22)?),
        )?;
        registry.register(Box::new(latency.clone()))?;
        let checkpoint_epoch = IntGauge::new(
            "freshet_checkpoint_epoch",
            "The epoch of the newest complete checkpoint (its manifest is written).",
        )?;
        registry.register(Box::new(checkpoint_epoch.clone()))?;
        let checkpoint_failures = IntCounter::new(
            "freshet_checkpoint_failures_total",
            "Checkpoint parts or manifests that could not be written (commits stop meanwhile).",
        )?;
        registry.register(Box::new(checkpoint_failures.clone()))?;
        let checkpoint_bytes = IntGauge::new(
            "freshet_checkpoint_bytes",
            "Bytes written for the newest complete checkpoint: its parts (changes since the previous parts, whole state for full ones).",
        )?;
        registry.register(Box::new(checkpoint_bytes.clone()))?;
        let checkpoint_manifest_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "freshet_checkpoint_manifest_seconds",
                "From seeing a checkpoint complete to its manifest being durable.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 18)?),
        )?;
        registry.register(Box::new(checkpoint_manifest_seconds.clone()))?;
        Ok(PromMetrics {
            registry,
            source_records,
            sink_records,
            exactly_once_skipped,
            exactly_once_anomalies,
            dropped_behind_restore,
            malformed,
            late,
            consumer_lag,
            watermark_lag_ms,
            committed_offset,
            committed_epoch,
            latency,
            checkpoint_epoch,
            checkpoint_failures,
            checkpoint_bytes,
            checkpoint_manifest_seconds,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Observes the latency of `n` records written at event time `event_ms`.
    pub fn observe_latency(&self, event_ms: u64, n: u64) {
        self.observe_latency_at(crate::clock::now_ms(), event_ms, n);
    }

    /// Observes the latency of `n` records written at event time `event_ms`, acknowledged
    /// at wall-clock `now_ms` (at most 64 samples per call).
    #[inline]
    pub fn observe_latency_at(&self, now_ms: u64, event_ms: u64, n: u64) {
        let secs = now_ms.saturating_sub(event_ms) as f64 / 1000.0;
        for _ in 0..n.min(64) {
            self.latency.observe(secs);
        }
    }
}

impl Default for PromMetrics {
    fn default() -> Self {
        PromMetrics::new().expect("metric names and labels are valid")
    }
}

impl fmt::Debug for PromMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PromMetrics")
    }
}

/// Process-wide counters, shared by every worker of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records decoded and emitted on a source's record stream.
    pub records_in: AtomicU64,
    /// Payload bytes read.
    pub bytes_in: AtomicU64,
    /// Messages that failed to decode or carried an unusable timestamp.
    pub errors: AtomicU64,
    /// Records behind the watermark, sent to the late stream.
    pub late: AtomicU64,
    /// Records written to the dead-letter topic (malformed, late or refused output).
    pub dead_letters: AtomicU64,
    /// Records written by sinks and acknowledged.
    pub records_out: AtomicU64,
    /// Offset commits the broker accepted.
    pub commits: AtomicU64,
    /// Offset commits the broker refused (sent again with the next commit).
    pub commit_failures: AtomicU64,
    /// Times a source paused its partitions for flow control.
    pub pauses: AtomicU64,
    /// The last offset committed per (topic, partition).
    pub committed: Mutex<BTreeMap<(String, i32), i64>>,
    /// Where each (topic, partition) read by this process stands (progress, lag).
    pub positions: Mutex<BTreeMap<(String, i32), PartitionPosition>>,
    /// Labelled metrics for the Prometheus endpoint.
    pub prom: PromMetrics,
}

impl Metrics {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Records that `offset` was committed for `topic`/`partition`.
    pub fn committed(&self, topic: &str, partition: i32, offset: i64) {
        let mut map = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry((topic.to_string(), partition)).or_insert(offset);
        *entry = (*entry).max(offset);
        self.prom
            .committed_offset
            .with_label_values(&[topic, &partition.to_string()])
            .set(*entry);
    }

    /// Records where a partition's reading stands (sources call this about once a second).
    pub fn position(
        &self,
        topic: &str,
        partition: i32,
        start: Option<i64>,
        next: Option<i64>,
        done: bool,
    ) {
        let mut map = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let pos = map.entry((topic.to_string(), partition)).or_default();
        pos.start = start;
        pos.next = next;
        pos.done = done;
        if let (Some(high), Some(next)) = (pos.high, next) {
            self.prom
                .consumer_lag
                .with_label_values(&[topic, &partition.to_string()])
                .set((high - next).max(0));
        }
    }

    /// Records a partition's high watermark from a fetch response (via the client's statistics).
    pub fn high_watermark(&self, topic: &str, partition: i32, high: i64) {
        let mut map = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let pos = map.entry((topic.to_string(), partition)).or_default();
        pos.high = Some(high);
    }

    /// Records read so far and the total to read, over every partition of this process
    /// that has read something: `(read, total)`, from the first offset each partition
    /// read this run to the high watermark of the latest fetch response (to what was
    /// read, until the first statistics report gives the high watermark).
    pub fn progress(&self) -> (u64, u64) {
        let map = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let mut read = 0u64;
        let mut total = 0u64;
        for pos in map.values() {
            let Some(start) = pos.start else { continue };
            let next = pos.next.unwrap_or(start);
            // Before the first statistics report the high watermark is unknown: count
            // what was read as the total so far.
            let high = pos.high.unwrap_or(next);
            let high = high.max(next);
            read += (next - start).max(0) as u64;
            total += (high - start).max(0) as u64;
        }
        (read, total)
    }

    /// A snapshot of the counters with the elapsed time, for printing.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Summary {
            records_in: self.records_in.load(Relaxed),
            errors: self.errors.load(Relaxed),
            late: self.late.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            commits: self.commits.load(Relaxed),
            pauses: self.pauses.load(Relaxed),
            committed,
            elapsed,
        }
    }
}

/// What a job did, printed when it ends.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Records read and emitted.
    pub records_in: u64,
    /// Malformed messages sent to the error stream.
    pub errors: u64,
    /// Late records sent to the late stream.
    pub late: u64,
    /// Records durably written by sinks.
    pub records_out: u64,
    /// Offset commits sent.
    pub commits: u64,
    /// Times a source paused its partitions because sinks were behind.
    pub pauses: u64,
    /// Last committed offset per (topic, partition).
    pub committed: BTreeMap<(String, i32), i64>,
    /// Wall-clock time the job ran.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.records_in as f64 / secs
        } else {
            0.0
        };
        writeln!(f, "records in:        {} ({rate:.0}/s)", self.records_in)?;
        writeln!(f, "records out:       {}", self.records_out)?;
        writeln!(f, "malformed:         {}", self.errors)?;
        writeln!(f, "late:              {}", self.late)?;
        writeln!(f, "flow-control pauses: {}", self.pauses)?;
        let parts: Vec<String> = self
            .committed
            .iter()
            .map(|((t, p), o)| format!("{t}[{p}]={o}"))
            .collect();
        writeln!(
            f,
            "offsets committed: {} commits; {}",
            self.commits,
            parts.join(" ")
        )?;
        write!(f, "elapsed:           {secs:.3} s")
    }
}
